/* The HTTP front on libmicrohttpd: event-loop threads, each running its own
 * MHD daemon on the shared port (SO_REUSEPORT), answer cache-hit availability
 * reads themselves, looking up all the reads that arrived together in one
 * memcached multi-get; every other request (and a read that missed) is
 * suspended and runs on a worker thread, which may block on a shard, then
 * resumes its connection. */
#include "calendard/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "calendard/metrics.h"
#include "common/log.h"
#include "common/util.h"

#define LOOP_WAIT_MS 100    /* the loop checks for a stop at least this often */
#define STOP_DRAIN_MS 10000 /* what a stop waits for requests being processed */
/* A lookup that takes 4/5 of the cache timeout (memcached stalled, or
 * timing out: 40 ms with the default [cache] timeout_ms of 50) stalls every
 * connection of the loop, so the loop hands reads to the workers for a
 * while. Not lower: on a saturated machine a lookup waits 10-30 ms for a
 * core now and then, and sending every read to the workers then only floods
 * the run queue (memcached itself times out, the reads fall back to the
 * shards). */
#define LOOKUP_SLOW_DEFAULT_MS 50
#define LOOKUP_BYPASS_US 1000000

/* Per-request state, freed when MHD reports the request completed. */
struct http_request {
    uint64_t start_us;
    char *body;
    size_t len;
    bool too_large;
    bool answered;  /* the response is queued */
    bool suspended; /* waiting for a lookup or a worker */
    bool miss;      /* a read the cache did not answer: the worker reads the shard */
    bool counted;   /* in the server's in-flight count until completed */
    struct MHD_Connection *conn;
    struct api_request req;   /* points into the connection's memory and body */
    struct api_response resp; /* filled by the loop or a worker before the resume */
    struct service_read read;
    atomic_bool ready; /* resp is filled: the next call of the handler sends it */
    struct loop *loop; /* whose MHD daemon has the connection */
    struct http_request *next;
};

/* One event loop: its own MHD daemon on the shared port (SO_REUSEPORT: the
 * kernel spreads connections over the loops) and its own thread. */
struct loop {
    struct http_server *srv;
    struct MHD_Daemon *daemon;
    pthread_t thread;
    int epfd, wakefd; /* the loop waits on MHD's epoll fd and wakefd */
    /* reads waiting for the loop's next multi-get (loop thread only) */
    struct http_request **reads;
    size_t nreads, capreads;
    /* Requests begun (the handler has their http_request) and not yet
     * completed: MHD reports a request completed once its answer is sent
     * whole, or its connection is gone. Loop thread only. */
    unsigned nopen;
    uint64_t bypass_until; /* loop thread only: reads go to the workers until then */
};

struct http_server {
    struct http_conf conf;
    struct service *svc;
    atomic_int inflight;
    atomic_bool stopping;
    struct loop *loops;
    unsigned nloops;
    /* the workers and their queue (shared by the loops) */
    pthread_mutex_t lock;
    struct http_request *qhead, *qtail;
    struct worker *workers;
    struct worker *idle;        /* waiting for work, the latest to finish on top (lock) */
    unsigned nworkers, running; /* running: workers not yet exited (lock) */
    unsigned busy;              /* workers handling a request (lock) */
    bool spinning;        /* a worker polls (or is to poll) the queue before it sleeps (lock) */
    unsigned spin_misses; /* polls in a row that found nothing (lock) */
    unsigned spin_skips;  /* finishes left to go without a poll (lock) */
    atomic_uint queued;   /* requests in the queue: what the polling worker reads */
};

/* A worker thread. Idle ones wait on their own condition, and a request
 * wakes the one that went idle last: at low load one warm thread serves
 * request after request instead of each going to the coldest. */
struct worker {
    struct http_server *srv;
    pthread_t thread;
    pthread_cond_t wake;
    bool waiting;        /* on the idle stack (lock) */
    struct worker *next; /* below it on the idle stack */
};

/* closing: the daemon is stopping, so the client is told to take its next
 * request elsewhere rather than find this keep-alive connection gone. */
static enum MHD_Result
send_answer(struct MHD_Connection *conn, struct api_response *resp, uint64_t start_us, bool closing)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(resp->body_len, resp->body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(resp->body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    if (resp->etag[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, resp->etag);
    if (resp->allow != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (resp->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", resp->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (closing)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    metrics_request(resp->endpoint, resp->status, cal_mono_us() - start_us);
    return ret;
}

static enum MHD_Result
refuse(struct MHD_Connection *conn, struct http_request *hr, int status, const char *code,
       const char *message)
{
    struct api_response resp = {.endpoint = EP_OTHER};
    service_error(&resp, status, code, message);
    hr->answered = true;
    return send_answer(conn, &resp, hr->start_us, atomic_load(&hr->loop->srv->stopping));
}

static void
enqueue(struct http_server *srv, struct http_request *hr)
{
    pthread_mutex_lock(&srv->lock);
    /* A worker polling an empty queue (or to poll it) takes the first
     * request: no wakeup. */
    bool polled = srv->spinning && srv->qhead == NULL;
    hr->next = NULL;
    if (srv->qtail != NULL)
        srv->qtail->next = hr;
    else
        srv->qhead = hr;
    srv->qtail = hr;
    atomic_fetch_add_explicit(&srv->queued, 1, memory_order_release);
    struct worker *w = polled ? NULL : srv->idle;
    if (w != NULL) {
        srv->idle = w->next;
        w->waiting = false;
    }
    pthread_mutex_unlock(&srv->lock);
    /* After the unlock: the worker woken does not find the lock still held. */
    if (w != NULL)
        pthread_cond_signal(&w->wake);
}

/* Wakes every idle worker (needs lock). */
static void
wake_idle_workers(struct http_server *srv)
{
    for (struct worker *w = srv->idle; w != NULL; w = w->next) {
        w->waiting = false;
        pthread_cond_signal(&w->wake);
    }
    srv->idle = NULL;
}

/* Hands a request to the loop's next lookup or to a worker, suspended until
 * its answer is ready. */
static enum MHD_Result
park(struct loop *lp, struct http_request *hr, bool lookup)
{
    MHD_suspend_connection(hr->conn);
    hr->suspended = true;
    if (!lookup) {
        enqueue(lp->srv, hr);
        return MHD_YES;
    }
    if (lp->nreads == lp->capreads) {
        lp->capreads = lp->capreads ? 2 * lp->capreads : 64;
        lp->reads = cal_realloc(lp->reads, lp->capreads * sizeof(*lp->reads));
    }
    lp->reads[lp->nreads++] = hr;
    return MHD_YES;
}

/* Its answer is ready: the handler sends it when MHD calls it again. */
static void
finish(struct http_request *hr)
{
    atomic_store(&hr->ready, true);
    MHD_resume_connection(hr->conn); /* hr may be gone after this */
}

/* A worker resumed a connection: MHD takes it up only in the loop's next
 * MHD_run, and with an external event loop it does not wake the loop itself. */
static void
wake_loop(struct loop *lp)
{
    uint64_t one = 1;
    if (write(lp->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("http", "detail=\"wake write: %s\"", strerror(errno));
}

/* Runs on the loop thread after MHD_run: one multi-get for every read that
 * arrived; hits are answered here, misses go to a worker. */
static void
lookup_reads(struct loop *lp)
{
    size_t n = lp->nreads;
    if (n == 0)
        return;
    struct service_read **rs = cal_malloc(n * sizeof(*rs));
    for (size_t i = 0; i < n; i++)
        rs[i] = &lp->reads[i]->read;
    uint64_t t0 = cal_mono_us();
    service_read_lookup(lp->srv->svc, rs, n);
    uint64_t took = cal_mono_us() - t0;
    free(rs);
    lp->nreads = 0;
    size_t unanswered = 0;
    for (size_t i = 0; i < n; i++) {
        struct http_request *hr = lp->reads[i];
        if (service_read_hit(&hr->read)) {
            service_read_finish(lp->srv->svc, &hr->read, &hr->resp);
            finish(hr);
        } else {
            hr->miss = true;
            enqueue(lp->srv, hr);
            unanswered++;
        }
    }
    if (http_lookup_stalled(took, lp->srv->conf.cache_timeout_ms, unanswered)) {
        if (lp->bypass_until < t0)
            log_warn("slow cache lookup: reads go to the workers for a while",
                     "took_ms=%llu reads=%zu missed=%zu bypass_ms=%d",
                     (unsigned long long)(took / 1000), n, unanswered, LOOKUP_BYPASS_US / 1000);
        lp->bypass_until = cal_mono_us() + LOOKUP_BYPASS_US;
    }
}

bool
http_lookup_stalled(uint64_t took_us, unsigned cache_timeout_ms, size_t unanswered)
{
    unsigned timeout_ms = cache_timeout_ms ? cache_timeout_ms : LOOKUP_SLOW_DEFAULT_MS;
    return took_us > (uint64_t)timeout_ms * 800 && unanswered > 0;
}

/* The worker that finishes while no other is busy polls the queue for
 * worker_spin_us before it sleeps: at low load the next request comes
 * within a few hundred microseconds, and taken by a running thread it skips
 * a wakeup, about a tenth of a booking's time at one in flight on a 2-core
 * VM. Only one polls, none starts while others are busy (the cores are
 * better left to the shards then), and polls that find nothing back off:
 * after n > 2 in a row, the next 2^(n-2) - 1 finishes (at most 63) go to
 * sleep at once, so sparse requests cost little CPU. Not after one or two:
 * at one booking in flight on a 2-core VM a third of the polls miss (the
 * next request came later), and backing off after each miss lost most of
 * the takes.
 *
 * The poll is claimed (spinning) before the answer goes out: the loop
 * thread woken by it can run first, and the client's next request can be
 * queued before the worker is back; claimed, that request waits for this
 * worker instead of waking another. Returns whether this worker polls
 * (needs lock). */
static bool
spin_claim(struct http_server *srv)
{
    if (srv->busy > 1 || srv->spinning || srv->qhead != NULL || atomic_load(&srv->stopping))
        return false;
    if (srv->spin_skips > 0) {
        srv->spin_skips--;
        return false;
    }
    srv->spinning = true;
    return true;
}

/* The poll claimed by spin_claim (needs lock, dropped meanwhile). */
static void
spin_for_work(struct http_server *srv)
{
    pthread_mutex_unlock(&srv->lock);
    uint64_t end = cal_mono_us() + (uint64_t)srv->conf.worker_spin_us;
    while (atomic_load_explicit(&srv->queued, memory_order_acquire) == 0 && cal_mono_us() < end)
        for (int i = 0; i < 32; i++)
            cal_cpu_relax();
    pthread_mutex_lock(&srv->lock);
    srv->spinning = false;
    /* A request there now was queued while this one polled: no worker was
     * woken for it, this one takes it. */
    if (srv->qhead != NULL) {
        srv->spin_misses = 0;
        metrics_worker_spin(true);
    } else {
        if (srv->spin_misses < 8)
            srv->spin_misses++;
        srv->spin_skips = srv->spin_misses > 2 ? (1u << (srv->spin_misses - 2)) - 1 : 0;
        metrics_worker_spin(false);
    }
}

static void *
worker_main(void *arg)
{
    struct worker *self = arg;
    struct http_server *srv = self->srv;
    pthread_mutex_lock(&srv->lock);
    for (;;) {
        while (srv->qhead == NULL && !atomic_load(&srv->stopping)) {
            self->waiting = true;
            self->next = srv->idle;
            srv->idle = self;
            while (self->waiting)
                pthread_cond_wait(&self->wake, &srv->lock);
        }
        struct http_request *hr = srv->qhead;
        if (hr == NULL)
            break; /* stopping and nothing left */
        srv->qhead = hr->next;
        if (srv->qhead == NULL)
            srv->qtail = NULL;
        atomic_fetch_sub_explicit(&srv->queued, 1, memory_order_relaxed);
        srv->busy++;
        pthread_mutex_unlock(&srv->lock);
        if (hr->miss)
            service_read_finish(srv->svc, &hr->read, &hr->resp);
        else
            service_handle(srv->svc, &hr->req, &hr->resp);
        struct loop *lp = hr->loop;
        bool spin = false;
        if (srv->conf.worker_spin_us > 0) {
            pthread_mutex_lock(&srv->lock);
            spin = spin_claim(srv);
            pthread_mutex_unlock(&srv->lock);
        }
        finish(hr); /* hr may be gone after this */
        wake_loop(lp);
        pthread_mutex_lock(&srv->lock);
        srv->busy--;
        if (spin)
            spin_for_work(srv);
    }
    srv->running--;
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct loop *lp = cls;
    struct http_server *srv = lp->srv;
    struct http_request *hr = *con_cls;
    (void)version;
    if (hr == NULL) {
        hr = cal_calloc(1, sizeof(*hr));
        hr->start_us = cal_mono_us();
        hr->conn = conn;
        hr->loop = lp;
        lp->nopen++;
        *con_cls = hr;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)srv->conf.max_body_bytes)
            return refuse(conn, hr, 413, "body_too_large", "request body over the limit");
        return MHD_YES;
    }
    if (hr->answered)
        return MHD_YES;
    if (hr->suspended) {
        if (!atomic_load(&hr->ready))
            return MHD_YES; /* cannot happen: resumed only once ready */
        hr->suspended = false;
        hr->answered = true;
        return send_answer(conn, &hr->resp, hr->start_us, atomic_load(&lp->srv->stopping));
    }
    if (*upload_data_size > 0) {
        if (hr->too_large) {
            /* Read on (a 413 needs the upload's end) only so far: a body
             * without Content-Length could keep the connection forever. */
            hr->len += *upload_data_size;
            if (hr->len > 2 * (size_t)srv->conf.max_body_bytes)
                return MHD_NO;
        } else {
            if (hr->len + *upload_data_size > (size_t)srv->conf.max_body_bytes) {
                hr->too_large = true;
                free(hr->body);
                hr->body = NULL;
                hr->len += *upload_data_size;
            } else {
                hr->body = cal_realloc(hr->body, hr->len + *upload_data_size + 1);
                memcpy(hr->body + hr->len, upload_data, *upload_data_size);
                hr->len += *upload_data_size;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (hr->too_large)
        return refuse(conn, hr, 413, "body_too_large", "request body over the limit");
    if (atomic_load(&srv->stopping))
        return refuse(conn, hr, 503, "shutting_down", "the server is stopping");
    if (atomic_fetch_add(&srv->inflight, 1) >= srv->conf.max_inflight) {
        atomic_fetch_sub(&srv->inflight, 1);
        metrics_overload();
        return refuse(conn, hr, 503, "overloaded", "too many requests in flight");
    }
    hr->counted = true;
    metrics_in_flight(1);
    hr->req = (struct api_request){
        .method = method,
        .path = url,
        .body = hr->body ? hr->body : "",
        .body_len = hr->len,
        .idempotency_key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key"),
        .if_match = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MATCH),
        .if_none_match =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH),
        .query_from = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "from"),
        .query_to = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "to"),
    };
    bool answered = false;
    if (cal_mono_us() >= lp->bypass_until &&
        service_read_begin(srv->svc, &hr->req, &hr->read, &hr->resp, &answered)) {
        if (!answered)
            return park(lp, hr, true);
        hr->answered = true;
        return send_answer(conn, &hr->resp, hr->start_us, atomic_load(&lp->srv->stopping));
    }
    return park(lp, hr, false);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct loop *lp = cls;
    struct http_request *hr = *con_cls;
    (void)conn;
    (void)toe;
    if (hr != NULL) {
        lp->nopen--;
        if (hr->counted) {
            atomic_fetch_sub(&lp->srv->inflight, 1);
            metrics_in_flight(-1);
        }
        if (!hr->answered && atomic_load(&hr->ready))
            free(hr->resp.body);
        free(hr->body);
        free(hr);
        *con_cls = NULL;
    }
}

/* MHD's own log lines; the format comes from the library. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    /* A connection flood makes MHD log one line per refused connection:
     * at most one line a second, with how many were suppressed. */
    static atomic_ullong last_s, suppressed;
    (void)cls;
    unsigned long long now = cal_mono_us() / 1000000;
    unsigned long long prev = atomic_load(&last_s);
    if (prev == now || !atomic_compare_exchange_strong(&last_s, &prev, now)) {
        atomic_fetch_add(&suppressed, 1);
        return;
    }
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '"')
            *p = '\'';
    log_warn("http", "detail=\"%s\" suppressed_since_last=%llu", msg,
             atomic_exchange(&suppressed, 0));
}

static int
wait_ms(struct loop *lp)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(lp->daemon, &t) == MHD_YES && t < LOOP_WAIT_MS)
        return (int)t;
    return LOOP_WAIT_MS;
}

static void *
loop_main(void *arg)
{
    struct loop *lp = arg;
    struct http_server *srv = lp->srv;
    uint64_t stop_deadline = 0;
    for (;;) {
        struct epoll_event ev[2];
        int n = epoll_wait(lp->epfd, ev, 2, lp->nreads > 0 ? 0 : wait_ms(lp));
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd == lp->wakefd) {
                uint64_t v;
                if (read(lp->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    log_warn("http loop", "detail=\"wake read: %s\"", strerror(errno));
            }
        MHD_run(lp->daemon);
        if (lp->nreads > 0) {
            lookup_reads(lp);
            MHD_run(lp->daemon); /* sends the answers just made */
        }
        if (atomic_load(&srv->stopping)) {
            /* Stop once every request begun was answered and its answer
             * sent whole, or the drain took too long. An answer is queued
             * when its handler runs, and MHD writes it in this or a later
             * MHD_run, as far as the client reads: MHD_stop_daemon would
             * close the connection with the rest unsent (and it refuses
             * suspended connections). */
            if (stop_deadline == 0)
                stop_deadline = cal_mono_us() + STOP_DRAIN_MS * 1000ULL;
            pthread_mutex_lock(&srv->lock);
            bool workers_done = srv->running == 0;
            struct http_request *left = workers_done ? srv->qhead : NULL;
            if (workers_done) {
                srv->qhead = srv->qtail = NULL;
                atomic_store(&srv->queued, 0);
            }
            pthread_mutex_unlock(&srv->lock);
            while (left != NULL) { /* parked after the workers had gone */
                struct http_request *next = left->next;
                struct loop *owner = left->loop;
                if (left->miss)
                    service_read_discard(&left->read);
                service_error(&left->resp, 503, "shutting_down", "the server is stopping");
                finish(left);
                wake_loop(owner);
                left = next;
            }
            /* nopen covers the suspended requests and the reads parked for
             * a lookup */
            if ((workers_done && lp->nopen == 0) || cal_mono_us() > stop_deadline)
                break;
        }
    }
    return NULL;
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* MHD's unescaping of the path and the query (%XX, in place), but for %00
 * and %2F, which stay as they are: decoded, a NUL would cut the path short
 * and a slash add a segment, so /v1/listings/42%2Fcalendar would reach
 * another endpoint than the one a proxy in front saw. Left alone, they
 * make an id or a value malformed (400). Returns the new length. */
size_t
http_unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r != '\0';) {
        int hi = r[0] == '%' ? hex_digit(r[1]) : -1, lo = hi >= 0 ? hex_digit(r[2]) : -1;
        int v = hi * 16 + lo;
        if (hi >= 0 && lo >= 0 && v != 0 && v != '/') {
            *w++ = (char)v;
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static size_t
on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return http_unescape(s);
}

/* Starts loop i's daemon, epoll set and thread. false and err filled. */
static bool
loop_start(struct http_server *srv, struct loop *lp, const struct sockaddr_in *addr, char *err,
           size_t errlen)
{
    const struct http_conf *conf = &srv->conf;
    unsigned limit = ((unsigned)conf->max_connections + srv->nloops - 1) / srv->nloops;
    lp->srv = srv;
    lp->epfd = lp->wakefd = -1;
    lp->daemon = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, (uint16_t)conf->port, NULL,
        NULL, on_request, lp, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv, MHD_OPTION_SOCK_ADDR,
        addr, MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)conf->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)conf->max_header_bytes, MHD_OPTION_NOTIFY_COMPLETED, on_completed, lp,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, NULL,
        MHD_OPTION_END);
    if (lp->daemon == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not permitted)", conf->listen,
                 conf->port);
        return false;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(lp->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    lp->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event mhd_ev = {.events = EPOLLIN, .data.fd = info != NULL ? info->epoll_fd : -1};
    struct epoll_event wake_ev = {.events = EPOLLIN, .data.fd = lp->wakefd};
    if (info == NULL || lp->epfd < 0 || lp->wakefd < 0 ||
        epoll_ctl(lp->epfd, EPOLL_CTL_ADD, info->epoll_fd, &mhd_ev) != 0 ||
        epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->wakefd, &wake_ev) != 0) {
        snprintf(err, errlen, "http event loop: %s", strerror(errno));
        return false;
    }
    return true;
}

static void
loop_close(struct loop *lp)
{
    if (lp->daemon != NULL)
        MHD_stop_daemon(lp->daemon);
    if (lp->epfd >= 0)
        close(lp->epfd);
    if (lp->wakefd >= 0)
        close(lp->wakefd);
    free(lp->reads);
}

struct http_server *
http_start(const struct http_conf *conf, struct service *svc, char *err, size_t errlen)
{
    struct http_server *srv = cal_calloc(1, sizeof(*srv));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)conf->port)};
    srv->conf = *conf;
    srv->svc = svc;
    if (inet_pton(AF_INET, conf->listen, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "listen address '%s' is not an IPv4 address", conf->listen);
        free(srv);
        return NULL;
    }
    srv->nloops = (unsigned)conf->event_loops;
    srv->loops = cal_calloc(srv->nloops, sizeof(*srv->loops));
    for (unsigned i = 0; i < srv->nloops; i++) {
        if (!loop_start(srv, &srv->loops[i], &addr, err, errlen)) {
            for (unsigned k = 0; k <= i; k++)
                loop_close(&srv->loops[k]);
            free(srv->loops);
            free(srv);
            return NULL;
        }
    }
    pthread_mutex_init(&srv->lock, NULL);
    srv->nworkers = (unsigned)conf->worker_threads;
    srv->workers = cal_calloc(srv->nworkers, sizeof(*srv->workers));
    srv->running = srv->nworkers;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        w->srv = srv;
        pthread_cond_init(&w->wake, NULL);
        pthread_create(&w->thread, NULL, worker_main, w);
    }
    for (unsigned i = 0; i < srv->nloops; i++)
        pthread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i]);
    return srv;
}

void
http_stop(struct http_server *srv)
{
    if (srv == NULL)
        return;
    /* New requests get 503; queued and running ones are answered first. */
    atomic_store(&srv->stopping, true);
    pthread_mutex_lock(&srv->lock);
    wake_idle_workers(srv);
    pthread_mutex_unlock(&srv->lock);
    for (unsigned i = 0; i < srv->nloops; i++)
        wake_loop(&srv->loops[i]);
    for (unsigned i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i].thread, NULL);
    for (unsigned i = 0; i < srv->nloops; i++) {
        wake_loop(&srv->loops[i]);
        pthread_join(srv->loops[i].thread, NULL);
    }
    for (unsigned i = 0; i < srv->nloops; i++)
        loop_close(&srv->loops[i]);
    /* After the loops: a loop may still be signalling a worker that woke
     * and exited (enqueue signals after its unlock). */
    for (unsigned i = 0; i < srv->nworkers; i++)
        pthread_cond_destroy(&srv->workers[i].wake);
    pthread_mutex_destroy(&srv->lock);
    free(srv->workers);
    free(srv->loops);
    free(srv);
}
