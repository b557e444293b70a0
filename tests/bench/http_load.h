/* An HTTP/1.1 load generator on epoll: conc keep-alive connections to
 * 127.0.0.1 spread over a few threads, one request in flight on each. Closed
 * loop by default (a connection sends its next request as soon as the
 * previous answer arrived); open loop with a rate (each connection's requests
 * are due at the arrivals of a Poisson process, so the total is that rate, and
 * latency counts from the moment a request was due: a request that waited for
 * its connection to be free waited in the system). Cheap per request
 * (no HTTP library, no JSON parsing) so that on a 2-core machine the client is
 * not what limits the daemon. */
#ifndef CAL_BENCH_HTTP_LOAD_H
#define CAL_BENCH_HTTP_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tests/bench/bench.h"

#define HTTP_LOAD_MAX_REQUEST 16384

/* Writes one complete request (request line, headers, body) into buf[size]
 * and returns its length, 0 when it does not fit. Called from the load
 * threads: ctx must be read-only or thread-safe; rng is the thread's own. */
typedef size_t (*http_load_build_fn)(void *ctx, struct bench_rng *rng, unsigned conn, uint64_t seq,
                                     char *buf, size_t size);

/* Called by the coordinating thread when the measured window opens (start
 * true) and closes, while the connections keep running. */
typedef void (*http_load_window_fn)(void *ctx, bool start);

struct http_load_conf {
    unsigned port;
    unsigned conc;
    unsigned threads;      /* load threads; 0 = 1 */
    double warmup_s;       /* answers before the window are not counted */
    double secs;           /* the measured window */
    uint64_t max_requests; /* bound on requests sent in the whole run */
    uint64_t seed;
    double rate; /* requests/s offered over all connections; 0 = closed loop */
    http_load_build_fn build;
    void *ctx; /* of build */
    http_load_window_fn window;
    void *window_ctx;
};

struct http_load_result {
    uint64_t answered;                   /* answers that arrived inside the window */
    uint64_t st2xx, st409, st503, other; /* of those, by status */
    uint64_t errors;                     /* transport errors and malformed answers, whole run */
    uint64_t sent;                       /* requests sent, whole run */
    bool capped;                         /* max_requests was reached before the window closed */
    double secs;                         /* window length */
    struct bench_lat lat;                /* latencies of the 2xx answers in the window */
};

/* Runs the load; res->lat is initialised here, the caller frees it with
 * bench_lat_deinit(). Fails only when no connection could be made. */
cal_status http_load_run(const struct http_load_conf *conf, struct http_load_result *res, char *err,
                         size_t errlen);

#endif
