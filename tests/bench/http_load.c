/* The epoll HTTP load generator: keep-alive connections, one request in
 * flight on each, answers framed by Content-Length. */
#include "tests/bench/http_load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/util.h"

#define IN_MAX (256u * 1024) /* the largest answer the benchmark expects */
#define DRAIN_S 10.0         /* wait this long for answers after the window */
#define CONNECT_TIMEOUT_S 5
#define MAX_RECONNECTS 100 /* per connection: a daemon that keeps closing is an error */

struct conn {
    int fd;
    unsigned index;
    bool busy; /* a request is in flight */
    unsigned reconnects;
    uint64_t seq;
    double sent_at; /* closed loop: when sent; open loop: when it was due */
    double due;     /* open loop: when the next request is due */
    size_t out_len, out_off;
    size_t in_len;
    char *out;
    char *in;
};

struct shared {
    const struct http_load_conf *conf;
    double t_start, t_end, t_hard_end; /* window, and the last moment to wait */
    double gap;                        /* open loop: mean gap of a connection's requests */
    atomic_uint_fast64_t sent;
    atomic_bool capped;
};

struct worker {
    struct shared *sh;
    unsigned first, nconns; /* connection indexes [first, first + nconns) */
    pthread_t thread;
    struct bench_rng rng;
    struct http_load_result res;
    cal_status rc;
    char err[256];
};

static int
conn_open(unsigned port, char *err, size_t errlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S}, zero = {0};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* A blocking connect bounded by the send timeout; then non-blocking. */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(err, errlen, "connect 127.0.0.1:%u: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof(zero));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static bool
conn_attach(int ep, struct conn *c, unsigned port, char *err, size_t errlen)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    c->fd = conn_open(port, err, errlen);
    if (c->fd < 0)
        return false;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
        close(c->fd);
        c->fd = -1;
        return false;
    }
    c->in_len = 0;
    return true;
}

static void
conn_detach(int ep, struct conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->busy = false;
}

static void
want_write(int ep, struct conn *c, bool on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes what is left of the request; false on a broken connection. */
static bool
conn_flush(int ep, struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            want_write(ep, c, true);
            return true;
        }
        return false;
    }
    return true;
}

/* Starts the next request unless the window closed or the bound is reached. */
static bool
conn_send_next(struct worker *w, int ep, struct conn *c, double now)
{
    struct shared *sh = w->sh;
    const struct http_load_conf *conf = sh->conf;
    double sent_at = now;
    if (sh->gap > 0) {
        /* Open loop: every request due before the window closes is sent,
         * however late (dropping the late ones would drop the slowest). */
        if (c->due >= sh->t_end || c->due > now)
            return true; /* the worker sends it when it is due */
        sent_at = c->due;
        c->due += bench_rng_exp(&w->rng, sh->gap);
    } else if (now >= sh->t_end) {
        return true; /* stay idle */
    }
    if (atomic_fetch_add(&sh->sent, 1) >= conf->max_requests) {
        atomic_store(&sh->capped, true);
        return true;
    }
    c->out_len = conf->build(conf->ctx, &w->rng, c->index, c->seq++, c->out, HTTP_LOAD_MAX_REQUEST);
    if (c->out_len == 0) {
        w->res.errors++;
        return true;
    }
    c->out_off = 0;
    c->busy = true;
    c->sent_at = sent_at;
    w->res.sent++;
    return conn_flush(ep, c);
}

/* Case-insensitive search for a header name at a line start within [p, end). */
static const char *
find_header(const char *p, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (; p + n < end; p++) {
        if (p[0] == '\n' && strncasecmp(p + 1, name, n) == 0)
            return p + 1 + n;
    }
    return NULL;
}

/* 1 when a whole answer is buffered (status and whether the server closes
 * set), 0 when more bytes are needed, -1 when malformed. */
static int
parse_answer(const struct conn *c, int *status, size_t *total, bool *closes)
{
    const char *buf = c->in, *end = c->in + c->in_len;
    const char *hdr_end = memmem(buf, c->in_len, "\r\n\r\n", 4);
    if (hdr_end == NULL)
        return c->in_len >= IN_MAX ? -1 : 0;
    if (c->in_len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(buf + 9);
    const char *cl = find_header(buf, hdr_end + 2, "content-length:");
    if (cl == NULL)
        return -1; /* calendard always frames with Content-Length */
    size_t body = strtoul(cl, NULL, 10);
    const char *conn = find_header(buf, hdr_end + 2, "connection:");
    *closes = conn != NULL && strncasecmp(conn + strspn(conn, " "), "close", 5) == 0;
    *total = (size_t)(hdr_end + 4 - buf) + body;
    if (*total > IN_MAX)
        return -1;
    return (size_t)(end - buf) >= *total ? 1 : 0;
}

static void
count_answer(struct worker *w, struct conn *c, int status, double now)
{
    struct shared *sh = w->sh;
    /* Warm-up and drain are not measured. In closed loop an answer belongs
     * to the window it came in, whenever it was sent (counting only those
     * sent in it too would drop the requests in flight at its start: a bias
     * of -latency/window, worse for the slower side of a ratio); in open
     * loop a request belongs to the window it was due in. */
    double at = sh->gap > 0 ? c->sent_at : now;
    if (at < sh->t_start || at >= sh->t_end)
        return;
    struct http_load_result *res = &w->res;
    res->answered++;
    if (status >= 200 && status < 300) {
        res->st2xx++;
        bench_lat_add(&res->lat, (uint64_t)((now - c->sent_at) * 1e6));
    } else if (status == 409) {
        res->st409++;
    } else if (status == 503) {
        res->st503++;
    } else {
        res->other++;
    }
}

/* Reconnects a connection the server closed or broke, and resends. */
static void
conn_restart(struct worker *w, int ep, struct conn *c, double now)
{
    char err[256];
    conn_detach(ep, c);
    if (now >= w->sh->t_end || ++c->reconnects > MAX_RECONNECTS)
        return;
    if (!conn_attach(ep, c, w->sh->conf->port, err, sizeof(err))) {
        w->res.errors++;
        return;
    }
    if (!conn_send_next(w, ep, c, now)) {
        w->res.errors++;
        conn_detach(ep, c);
    }
}

static void
conn_readable(struct worker *w, int ep, struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, c->in + c->in_len, IN_MAX - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            /* The server closed: an error only when an answer was owed. */
            if (c->busy)
                w->res.errors++;
            conn_restart(w, ep, c, bench_now());
            return;
        }
        c->in_len += (size_t)n;
        int status = 0;
        size_t total = 0;
        bool closes = false;
        int r = parse_answer(c, &status, &total, &closes);
        if (r == 0)
            continue;
        double now = bench_now();
        if (r < 0 || !c->busy) {
            w->res.errors++;
            conn_restart(w, ep, c, now);
            return;
        }
        count_answer(w, c, status, now);
        c->busy = false;
        /* One request in flight: nothing may follow the answer. */
        c->in_len = 0;
        if (closes) {
            conn_restart(w, ep, c, now);
            return;
        }
        if (!conn_send_next(w, ep, c, now)) {
            w->res.errors++;
            conn_restart(w, ep, c, now);
        }
        return;
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    struct conn *conns = cal_calloc(w->nconns, sizeof(*conns));
    struct epoll_event evs[64];
    int ep = epoll_create1(EPOLL_CLOEXEC), timer = -1;
    w->rc = CAL_OK;
    for (unsigned i = 0; i < w->nconns; i++) {
        conns[i].fd = -1;
        conns[i].index = w->first + i;
        conns[i].out = cal_malloc(HTTP_LOAD_MAX_REQUEST);
        conns[i].in = cal_malloc(IN_MAX);
    }
    for (unsigned i = 0; i < w->nconns; i++) {
        if (!conn_attach(ep, &conns[i], sh->conf->port, w->err, sizeof(w->err))) {
            w->rc = CAL_EUNAVAIL;
            goto out;
        }
    }
    /* Every connection is open before the first request: the warm-up then
     * measures requests, not connection setup. */
    double now = bench_now();
    if (sh->gap > 0) {
        /* Open loop: a timer wakes the thread when the next request is due. */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (timer < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev) != 0) {
            snprintf(w->err, sizeof(w->err), "timerfd: %s", strerror(errno));
            w->rc = CAL_EUNAVAIL;
            goto out;
        }
        for (unsigned i = 0; i < w->nconns; i++)
            conns[i].due = now + bench_rng_exp(&w->rng, sh->gap);
    }
    for (unsigned i = 0; i < w->nconns; i++)
        if (!conn_send_next(w, ep, &conns[i], now))
            conn_restart(w, ep, &conns[i], now);
    for (;;) {
        now = bench_now();
        unsigned busy = 0, open = 0;
        double next_due = sh->t_end;
        for (unsigned i = 0; i < w->nconns; i++) {
            struct conn *c = &conns[i];
            if (c->fd >= 0 && !c->busy && sh->gap > 0 && c->due <= now &&
                !conn_send_next(w, ep, c, now)) {
                w->res.errors++;
                conn_restart(w, ep, c, now);
            }
            busy += c->busy;
            open += c->fd >= 0;
            if (c->fd >= 0 && !c->busy && sh->gap > 0 && c->due < next_due)
                next_due = c->due;
        }
        if (busy == 0 && (now >= sh->t_end || atomic_load(&sh->capped)))
            break;
        if (now >= sh->t_hard_end) {
            w->res.errors += busy; /* answers that never came */
            break;
        }
        if (timer >= 0 && next_due < sh->t_end && next_due > now) {
            double whole = (double)(time_t)next_due;
            struct itimerspec its = {.it_value = {.tv_sec = (time_t)next_due,
                                                  .tv_nsec = (long)((next_due - whole) * 1e9)}};
            if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
                its.it_value.tv_nsec = 1; /* zero would disarm it */
            timerfd_settime(timer, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int n = epoll_wait(ep, evs, (int)CAL_ARRAY_LEN(evs), 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                uint64_t expirations;
                ssize_t r = read(timer, &expirations, sizeof(expirations));
                (void)r; /* EAGAIN when it was re-armed after it fired */
                continue;
            }
            if (c->fd < 0)
                continue;
            if (evs[i].events & EPOLLOUT) {
                want_write(ep, c, false);
                if (!conn_flush(ep, c)) {
                    w->res.errors++;
                    conn_restart(w, ep, c, bench_now());
                    continue;
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_readable(w, ep, c);
        }
        if (open == 0 && now < sh->t_end && !atomic_load(&sh->capped)) {
            /* Every connection died and could not be reopened. */
            snprintf(w->err, sizeof(w->err), "all connections lost");
            w->rc = CAL_EUNAVAIL;
            break;
        }
    }
out:
    for (unsigned i = 0; i < w->nconns; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        free(conns[i].out);
        free(conns[i].in);
    }
    free(conns);
    if (timer >= 0)
        close(timer);
    close(ep);
    return NULL;
}

cal_status
http_load_run(const struct http_load_conf *conf, struct http_load_result *res, char *err,
              size_t errlen)
{
    unsigned nthreads = conf->threads ? conf->threads : 1;
    if (nthreads > conf->conc)
        nthreads = conf->conc;
    struct shared sh = {.conf = conf};
    struct worker *ws = cal_calloc(nthreads, sizeof(*ws));
    size_t cap = (size_t)(conf->max_requests < 8000000 ? conf->max_requests : 8000000);
    cal_status rc = CAL_OK;
    memset(res, 0, sizeof(*res));
    bench_lat_init(&res->lat, cap);
    double now = bench_now();
    /* Connecting 64 sockets takes well under the warm-up. */
    sh.t_start = now + conf->warmup_s;
    sh.t_end = sh.t_start + conf->secs;
    sh.t_hard_end = sh.t_end + DRAIN_S;
    sh.gap = conf->rate > 0 ? conf->conc / conf->rate : 0;
    atomic_init(&sh.sent, 0);
    atomic_init(&sh.capped, false);
    for (unsigned t = 0, first = 0; t < nthreads; t++) {
        struct worker *w = &ws[t];
        w->sh = &sh;
        w->first = first;
        w->nconns = conf->conc / nthreads + (t < conf->conc % nthreads);
        first += w->nconns;
        bench_rng_init(&w->rng, conf->seed * 0x9e3779b97f4a7c15ULL + t + 1);
        bench_lat_init(&w->res.lat, cap);
        pthread_create(&w->thread, NULL, worker_main, w);
    }
    bench_sleep_until(sh.t_start);
    if (conf->window)
        conf->window(conf->window_ctx, true);
    bench_sleep_until(sh.t_end);
    if (conf->window)
        conf->window(conf->window_ctx, false);
    for (unsigned t = 0; t < nthreads; t++) {
        struct worker *w = &ws[t];
        pthread_join(w->thread, NULL);
        if (w->rc != CAL_OK && rc == CAL_OK) {
            rc = w->rc;
            cal_strlcpy(err, w->err, errlen);
        }
        res->answered += w->res.answered;
        res->st2xx += w->res.st2xx;
        res->st409 += w->res.st409;
        res->st503 += w->res.st503;
        res->other += w->res.other;
        res->errors += w->res.errors;
        res->sent += w->res.sent;
        bench_lat_merge(&res->lat, &w->res.lat);
        bench_lat_deinit(&w->res.lat);
    }
    res->capped = atomic_load(&sh.capped);
    res->secs = conf->secs;
    free(ws);
    return rc;
}
