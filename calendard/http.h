/* The HTTP front (libmicrohttpd): event-loop threads (SO_REUSEPORT spreads
 * the connections over them) that answer cache-hit availability reads itself (one memcached
 * multi-get for all the reads that arrived together), worker threads for every request that may
 * block on a shard; body and header limits, idle timeouts, an in-flight limit answered with 503. */
#ifndef CAL_HTTP_H
#define CAL_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calendard/service.h"

struct http_conf {
    char listen[64];
    int port;
    int max_connections;
    int max_inflight;
    int max_body_bytes;
    int max_header_bytes;
    int idle_timeout_s;
    int worker_threads;        /* requests that may block on a shard run on these */
    int event_loops;           /* event-loop threads, each with its own listening socket */
    int worker_spin_us;        /* how long the last busy worker polls the queue before sleeping */
    unsigned cache_timeout_ms; /* [cache] timeout_ms: a lookup near it diverts reads */
};

struct http_server;

/* Borrows svc. NULL and err filled when the port cannot be bound. */
struct http_server *http_start(const struct http_conf *conf, struct service *svc, char *err,
                               size_t errlen);
void http_stop(struct http_server *srv); /* http_stop(NULL) is a no-op */

/* Does an event loop's lookup say the cache is stalled, so its reads go to
 * the workers for a while? Only a lookup that took 4/5 of the cache timeout
 * (50 ms if 0) and left some read unanswered: one that answered every read
 * was slow because the cores were busy, and the workers would be slower. */
bool http_lookup_stalled(uint64_t took_us, unsigned cache_timeout_ms, size_t unanswered);

/* Decodes the %XX escapes of s in place, but for %00 and %2F (a NUL would
 * cut a path short, a slash add a segment): they stay as they are. What
 * MHD calls on the path and the query. Returns the new length. */
size_t http_unescape(char *s);

#endif
