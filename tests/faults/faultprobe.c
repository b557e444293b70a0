/* calendar-faultprobe: the loopback HTTP client of the fault-injection suite
 * (tests/faults/run.sh). It times single requests through a fault (probe),
 * holds idle and byte-by-byte connections while healthy clients measure
 * latency (flood), and sends one oversized header or body (oversize).
 * Plain sockets on purpose: it must see refused connections, early closes
 * and server timeouts exactly as they happen. 127.0.0.1 only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_IDLE 2000
#define MAX_SLOW 200
#define MAX_HEALTHY 64
#define MAX_SAMPLES 400000
#define RESP_MAX 65536

static int port;
static volatile sig_atomic_t stopping;

static void
on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static int64_t
mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* A blocking loopback connection to the port, or -1 (errno set). */
static int
connect_loopback(int timeout_ms)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0) {
        return -1;
    }
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int saved = errno;

        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int
send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

struct answer {
    int status;    /* 0: no HTTP answer (connect/send/read failed) */
    char code[48]; /* "code" of a JSON error body, or "-" */
    char retry_after[16];
    char err[64];
};

/* Reads one response (Connection: close, so until EOF or a complete
 * Content-Length body) and fills ans. */
static void
read_answer(int fd, struct answer *ans)
{
    static _Thread_local char buf[RESP_MAX + 1];
    size_t len = 0;
    char *hdr_end = NULL, *p;
    long clen = -1;

    for (;;) {
        ssize_t n = recv(fd, buf + len, RESP_MAX - len, 0);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            snprintf(ans->err, sizeof(ans->err), "recv: %s", strerror(errno));
            break;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (hdr_end == NULL && (hdr_end = strstr(buf, "\r\n\r\n")) != NULL) {
            p = strcasestr(buf, "\r\nContent-Length:");
            if (p != NULL && p < hdr_end) {
                clen = strtol(p + 17, NULL, 10);
            }
        }
        if (hdr_end != NULL && clen >= 0 && (size_t)(hdr_end + 4 - buf) + (size_t)clen <= len) {
            break;
        }
        if (len == RESP_MAX) {
            break;
        }
    }
    buf[len] = '\0';
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0) {
        if (ans->err[0] == '\0') {
            snprintf(ans->err, sizeof(ans->err), len == 0 ? "closed without answer" : "not HTTP");
        }
        return;
    }
    ans->status = atoi(buf + 9);
    if ((p = strcasestr(buf, "\r\nRetry-After:")) != NULL) {
        snprintf(ans->retry_after, sizeof(ans->retry_after), "%ld", strtol(p + 14, NULL, 10));
    }
    if ((p = strstr(buf, "\"code\":\"")) != NULL || (p = strstr(buf, "\"code\": \"")) != NULL) {
        char *q = strchr(p, ':') + 1;

        while (*q == ' ' || *q == '"') {
            q++;
        }
        size_t n = strcspn(q, "\"");
        snprintf(ans->code, sizeof(ans->code), "%.*s", (int)(n < 40 ? n : 40), q);
    }
}

/* One request on a new connection. */
static void
request_once(const char *method, const char *path, const char *body, int timeout_ms,
             struct answer *ans)
{
    char req[4096];
    int fd, n;

    memset(ans, 0, sizeof(*ans));
    snprintf(ans->code, sizeof(ans->code), "-");
    snprintf(ans->retry_after, sizeof(ans->retry_after), "-");
    fd = connect_loopback(timeout_ms);
    if (fd < 0) {
        snprintf(ans->err, sizeof(ans->err), "connect: %s", strerror(errno));
        return;
    }
    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 method, path, body != NULL ? strlen(body) : 0, body != NULL ? body : "");
    if (n < 0 || (size_t)n >= sizeof(req) || send_all(fd, req, (size_t)n) != 0) {
        snprintf(ans->err, sizeof(ans->err), "send: %s", strerror(errno));
    } else {
        read_answer(fd, ans);
    }
    close(fd);
}

/* ---- probe ------------------------------------------------------------- */

/* One line per request: wall_ms status latency_us code retry_after. */
static int
cmd_probe(const char *method, const char *path, const char *body, long interval_ms,
          double duration_s, int timeout_ms)
{
    int64_t end = mono_us() + (int64_t)(duration_s * 1e6);

    while (!stopping && mono_us() < end) {
        struct answer ans;
        int64_t t0 = mono_us(), at = wall_ms();

        request_once(method, path, body, timeout_ms, &ans);
        printf("%" PRId64 " %d %" PRId64 " %s %s\n", at, ans.status, mono_us() - t0, ans.code,
               ans.retry_after);
        if (fflush(stdout) != 0) {
            return 1; /* the reader went away */
        }
        int64_t spent_ms = (mono_us() - t0) / 1000;
        if (spent_ms < interval_ms) {
            sleep_ms(interval_ms - (long)spent_ms);
        }
    }
    return 0;
}

/* ---- burst ------------------------------------------------------------- */

#define MAX_BURST 256

struct burst {
    const char *method, *body;
    char *paths[MAX_BURST];
    int n;
    pthread_barrier_t start;
    atomic_int ok;
};

struct burst_arg {
    struct burst *b;
    int i;
};

static void *
burst_run(void *arg)
{
    struct burst_arg *a = arg;
    struct answer ans;

    pthread_barrier_wait(&a->b->start);
    request_once(a->b->method, a->b->paths[a->i], a->b->body, 10000, &ans);
    if (ans.status >= 200 && ans.status < 300) {
        atomic_fetch_add(&a->b->ok, 1);
    }
    return NULL;
}

/* Every path of stdin at the same moment, one thread each, rounds times:
 * fills a connection pool as far as the server lets concurrency reach. */
static int
cmd_burst(const char *method, const char *body, int rounds)
{
    static struct burst b;
    static struct burst_arg args[MAX_BURST];
    pthread_t th[MAX_BURST];
    char line[2048];
    int total = 0;

    b.method = method;
    b.body = body;
    while (b.n < MAX_BURST && fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '/' && (b.paths[b.n] = strdup(line)) != NULL) {
            b.n++;
        }
    }
    for (int r = 0; r < rounds && b.n > 0; r++) {
        int started = 0;

        pthread_barrier_init(&b.start, NULL, (unsigned)b.n);
        for (; started < b.n; started++) {
            args[started].b = &b;
            args[started].i = started;
            if (pthread_create(&th[started], NULL, burst_run, &args[started]) != 0) {
                fprintf(stderr, "calendar-faultprobe: cannot start a thread\n");
                exit(2); /* the barrier would never open */
            }
        }
        for (int i = 0; i < started; i++) {
            pthread_join(th[i], NULL);
        }
        pthread_barrier_destroy(&b.start);
        total += b.n;
    }
    printf("%d %d\n", atomic_load(&b.ok), total);
    for (int i = 0; i < b.n; i++) {
        free(b.paths[i]);
    }
    return 0;
}

/* ---- flood ------------------------------------------------------------- */

struct flood {
    int nidle, nslow, nhealthy;
    long slow_interval_ms;
    double duration_s;
    const char *path;
    int64_t start_us, end_us;
    /* results */
    atomic_int idle_opened, idle_refused, idle_closed;
    atomic_llong idle_first_close_ms, idle_last_close_ms;
    atomic_int slow_opened, slow_closed, slow_answered, slow_max_bytes;
    atomic_llong slow_first_close_ms;
    pthread_mutex_t lock;
    int64_t *lat_us;
    size_t nlat;
    atomic_long healthy_failed;
    char first_failure[160];
};

static void
note_min(atomic_llong *v, long long x)
{
    long long cur = atomic_load(v);

    while ((cur == 0 || x < cur) && !atomic_compare_exchange_weak(v, &cur, x)) {
    }
}

static void
note_max(atomic_llong *v, long long x)
{
    long long cur = atomic_load(v);

    while (x > cur && !atomic_compare_exchange_weak(v, &cur, x)) {
    }
}

/* Opens the idle connections, then watches them for the server's close. */
static void *
idle_run(void *arg)
{
    struct flood *f = arg;
    static struct pollfd pfd[MAX_IDLE];
    int n = 0;

    for (int i = 0; i < f->nidle && !stopping; i++) {
        int fd = connect_loopback(2000);

        if (fd < 0) {
            atomic_fetch_add(&f->idle_refused, 1);
            continue;
        }
        pfd[n].fd = fd;
        pfd[n].events = POLLIN;
        n++;
        atomic_fetch_add(&f->idle_opened, 1);
    }
    while (!stopping && mono_us() < f->end_us) {
        if (poll(pfd, (nfds_t)n, 200) <= 0) {
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (pfd[i].fd >= 0 && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                long long ms = (mono_us() - f->start_us) / 1000;

                close(pfd[i].fd);
                pfd[i].fd = -1;
                atomic_fetch_add(&f->idle_closed, 1);
                note_min(&f->idle_first_close_ms, ms);
                note_max(&f->idle_last_close_ms, ms);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (pfd[i].fd >= 0) {
            close(pfd[i].fd);
        }
    }
    return NULL;
}

/* A client that sends its request headers one byte at a time, forever
 * (a header that never ends), until the server closes or the run ends. */
static void *
slow_run(void *arg)
{
    struct flood *f = arg;
    static const char head[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    int fd = connect_loopback(2000), sent = 0;

    if (fd < 0) {
        return NULL;
    }
    atomic_fetch_add(&f->slow_opened, 1);
    while (!stopping && mono_us() < f->end_us) {
        char c = sent < (int)sizeof(head) - 1 ? head[sent] : 'a';
        struct pollfd p = {.fd = fd, .events = POLLIN};

        if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
            break;
        }
        sent++;
        if (poll(&p, 1, (int)f->slow_interval_ms) > 0) {
            char buf[512];
            ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);

            if (n > 0) {
                atomic_fetch_add(&f->slow_answered, 1); /* e.g. 431 once over the limit */
            }
            break;
        }
    }
    if (!stopping && mono_us() < f->end_us) {
        atomic_fetch_add(&f->slow_closed, 1);
        note_min(&f->slow_first_close_ms, (mono_us() - f->start_us) / 1000);
    }
    int cur = atomic_load(&f->slow_max_bytes);
    while (sent > cur && !atomic_compare_exchange_weak(&f->slow_max_bytes, &cur, sent)) {
    }
    close(fd);
    return NULL;
}

static void *
healthy_run(void *arg)
{
    struct flood *f = arg;

    while (!stopping && mono_us() < f->end_us) {
        struct answer ans;
        int64_t t0 = mono_us();

        request_once("GET", f->path, NULL, 10000, &ans);
        int64_t lat = mono_us() - t0;
        pthread_mutex_lock(&f->lock);
        if (ans.status == 200) {
            if (f->nlat < MAX_SAMPLES) {
                f->lat_us[f->nlat++] = lat;
            }
        } else {
            atomic_fetch_add(&f->healthy_failed, 1);
            if (f->first_failure[0] == '\0') {
                snprintf(f->first_failure, sizeof(f->first_failure), "status %d %s %s", ans.status,
                         ans.code, ans.err);
            }
        }
        pthread_mutex_unlock(&f->lock);
        sleep_ms(10);
    }
    return NULL;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static double
pct_ms(const int64_t *v, size_t n, double p)
{
    if (n == 0) {
        return -1;
    }
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);

    return (double)v[i] / 1000.0;
}

static int
cmd_flood(struct flood *f)
{
    pthread_t idle, slow[MAX_SLOW], healthy[MAX_HEALTHY];
    int nslow = 0, nhealthy = 0;

    pthread_mutex_init(&f->lock, NULL);
    f->lat_us = calloc(MAX_SAMPLES, sizeof(*f->lat_us));
    if (f->lat_us == NULL) {
        return 2;
    }
    f->start_us = mono_us();
    f->end_us = f->start_us + (int64_t)(f->duration_s * 1e6);
    if (pthread_create(&idle, NULL, idle_run, f) != 0) {
        return 2;
    }
    for (; nslow < f->nslow; nslow++) {
        if (pthread_create(&slow[nslow], NULL, slow_run, f) != 0) {
            break;
        }
    }
    for (; nhealthy < f->nhealthy; nhealthy++) {
        if (pthread_create(&healthy[nhealthy], NULL, healthy_run, f) != 0) {
            break;
        }
    }
    pthread_join(idle, NULL);
    for (int i = 0; i < nslow; i++) {
        pthread_join(slow[i], NULL);
    }
    for (int i = 0; i < nhealthy; i++) {
        pthread_join(healthy[i], NULL);
    }
    qsort(f->lat_us, f->nlat, sizeof(*f->lat_us), cmp_i64);
    printf("{\"duration_s\":%.1f,\"idle_requested\":%d,\"idle_opened\":%d,\"idle_refused\":%d,"
           "\"idle_closed_by_server\":%d,\"idle_first_close_ms\":%lld,\"idle_last_close_ms\":%lld,"
           "\"slow_opened\":%d,\"slow_closed_by_server\":%d,\"slow_answered\":%d,"
           "\"slow_max_bytes_sent\":%d,\"slow_first_close_ms\":%lld,"
           "\"healthy_ok\":%zu,\"healthy_failed\":%ld,\"healthy_p50_ms\":%.2f,"
           "\"healthy_p99_ms\":%.2f,\"healthy_max_ms\":%.2f,\"first_failure\":\"%s\"}\n",
           f->duration_s, f->nidle, atomic_load(&f->idle_opened), atomic_load(&f->idle_refused),
           atomic_load(&f->idle_closed), (long long)atomic_load(&f->idle_first_close_ms),
           (long long)atomic_load(&f->idle_last_close_ms), atomic_load(&f->slow_opened),
           atomic_load(&f->slow_closed), atomic_load(&f->slow_answered),
           atomic_load(&f->slow_max_bytes), (long long)atomic_load(&f->slow_first_close_ms),
           f->nlat, atomic_load(&f->healthy_failed), pct_ms(f->lat_us, f->nlat, 0.50),
           pct_ms(f->lat_us, f->nlat, 0.99), pct_ms(f->lat_us, f->nlat, 1.0), f->first_failure);
    free(f->lat_us);
    return 0;
}

/* ---- oversize ---------------------------------------------------------- */

/* kind: header (one header of nbytes), body (Content-Length body of nbytes),
 * chunked (the same body chunked, no Content-Length). Prints the status. */
static int
cmd_oversize(const char *kind, const char *path, size_t nbytes)
{
    struct answer ans;
    char head[512];
    int fd, n;
    char *blob = malloc(nbytes + 1);
    int rc = 0;

    memset(&ans, 0, sizeof(ans));
    snprintf(ans.code, sizeof(ans.code), "-");
    snprintf(ans.retry_after, sizeof(ans.retry_after), "-");
    if (blob == NULL || (fd = connect_loopback(10000)) < 0) {
        printf("0 - connect failed\n");
        free(blob);
        return 2;
    }
    memset(blob, 'a', nbytes);
    blob[nbytes] = '\0';
    if (strcmp(kind, "header") == 0) {
        n = snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ", path);
        rc |= send_all(fd, head, (size_t)n);
        rc |= send_all(fd, blob, nbytes);
        rc |= send_all(fd, "\r\nConnection: close\r\n\r\n", 23);
    } else if (strcmp(kind, "body") == 0) {
        memcpy(blob, "{\"x\":\"", 6);
        blob[nbytes - 2] = '"';
        blob[nbytes - 1] = '}';
        n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     path, nbytes);
        rc |= send_all(fd, head, (size_t)n);
        rc |= send_all(fd, blob, nbytes);
    } else {
        n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                     path);
        rc |= send_all(fd, head, (size_t)n);
        for (size_t off = 0; off < nbytes && rc == 0; off += 4096) {
            size_t len = nbytes - off < 4096 ? nbytes - off : 4096;
            char sz[32];
            int m = snprintf(sz, sizeof(sz), "%zx\r\n", len);

            rc |= send_all(fd, sz, (size_t)m);
            rc |= send_all(fd, blob + off, len);
            rc |= send_all(fd, "\r\n", 2);
        }
        rc |= send_all(fd, "0\r\n\r\n", 5);
    }
    /* The server may answer and close before reading everything: a failed
     * send is fine as long as an answer arrived. */
    read_answer(fd, &ans);
    close(fd);
    printf("%d %s %s\n", ans.status, ans.code, ans.err[0] ? "error" : "ok");
    free(blob);
    return 0;
}

/* ---- main -------------------------------------------------------------- */

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: calendar-faultprobe --port P COMMAND [options]   (127.0.0.1 only)\n"
            "  probe --path PATH [--method M] [--body JSON] [--interval-ms 50]\n"
            "        [--duration-s S] [--timeout-ms 5000]\n"
            "      one request per interval on a new connection; one line each:\n"
            "      wall_ms status latency_us code retry_after (status 0: no answer)\n"
            "  burst [--method M] [--body JSON] [--rounds 3]\n"
            "      every path read from stdin at once (one thread each, at most %d), rounds\n"
            "      times; prints: ok total\n"
            "  flood --path PATH [--idle 300] [--slow 20] [--slow-interval-ms 100]\n"
            "        [--healthy 4] [--duration-s 40]\n"
            "      idle connections, clients sending headers one byte per interval, and\n"
            "      healthy GET clients; one JSON line with closes and latency percentiles\n"
            "  oversize --kind header|body|chunked --bytes N [--path PATH]\n"
            "      one oversized request; prints: status code ok|error\n"
            "Durations are capped at 600 s, counts at %d idle / %d slow / %d healthy.\n",
            MAX_BURST, MAX_IDLE, MAX_SLOW, MAX_HEALTHY);
}

static long
arg_long(const char *name, const char *v, long min, long max)
{
    char *end;
    long x = strtol(v, &end, 10);

    if (*v == '\0' || *end != '\0' || x < min || x > max) {
        fprintf(stderr, "calendar-faultprobe: %s wants an integer in [%ld, %ld], got '%s'\n", name,
                min, max, v);
        exit(2);
    }
    return x;
}

int
main(int argc, char **argv)
{
    const char *cmd = NULL, *path = "/healthz", *method = "GET", *body = NULL, *kind = "header";
    long interval_ms = 50, timeout_ms = 5000, bytes = 40000, rounds = 3;
    double duration_s = 10;
    struct flood f;

    memset(&f, 0, sizeof(f));
    f.nidle = 300;
    f.nslow = 20;
    f.nhealthy = 4;
    f.slow_interval_ms = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (cmd != NULL) {
                usage(stderr);
                return 2;
            }
            cmd = a;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "calendar-faultprobe: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--port") == 0) {
            port = (int)arg_long(a, v, 1, 65535);
        } else if (strcmp(a, "--path") == 0) {
            path = v;
        } else if (strcmp(a, "--method") == 0) {
            method = v;
        } else if (strcmp(a, "--body") == 0) {
            body = v;
        } else if (strcmp(a, "--interval-ms") == 0) {
            interval_ms = arg_long(a, v, 1, 60000);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            timeout_ms = arg_long(a, v, 1, 60000);
        } else if (strcmp(a, "--duration-s") == 0) {
            duration_s = (double)arg_long(a, v, 1, 600);
        } else if (strcmp(a, "--idle") == 0) {
            f.nidle = (int)arg_long(a, v, 0, MAX_IDLE);
        } else if (strcmp(a, "--slow") == 0) {
            f.nslow = (int)arg_long(a, v, 0, MAX_SLOW);
        } else if (strcmp(a, "--slow-interval-ms") == 0) {
            f.slow_interval_ms = arg_long(a, v, 1, 60000);
        } else if (strcmp(a, "--healthy") == 0) {
            f.nhealthy = (int)arg_long(a, v, 0, MAX_HEALTHY);
        } else if (strcmp(a, "--rounds") == 0) {
            rounds = arg_long(a, v, 1, 100);
        } else if (strcmp(a, "--kind") == 0) {
            kind = v;
        } else if (strcmp(a, "--bytes") == 0) {
            bytes = arg_long(a, v, 16, 16 * 1024 * 1024);
        } else {
            fprintf(stderr, "calendar-faultprobe: unknown option %s\n", a);
            return 2;
        }
    }
    if (cmd == NULL || port == 0 || strlen(path) > 2000 || (body != NULL && strlen(body) > 2000)) {
        usage(stderr);
        return 2;
    }
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(cmd, "probe") == 0) {
        return cmd_probe(method, path, body, interval_ms, duration_s, (int)timeout_ms);
    }
    if (strcmp(cmd, "burst") == 0) {
        return cmd_burst(method, body, (int)rounds);
    }
    if (strcmp(cmd, "flood") == 0) {
        f.duration_s = duration_s;
        f.path = path;
        return cmd_flood(&f);
    }
    if (strcmp(cmd, "oversize") == 0) {
        if (strcmp(kind, "header") != 0 && strcmp(kind, "body") != 0 &&
            strcmp(kind, "chunked") != 0) {
            usage(stderr);
            return 2;
        }
        return cmd_oversize(kind, path, (size_t)bytes);
    }
    usage(stderr);
    return 2;
}
