/* Prometheus text metrics: requests and latency histograms per endpoint,
 * conflicts, retries, moves and errors per shard. Lock-free counters. */
#ifndef CAL_METRICS_H
#define CAL_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum endpoint {
    EP_PUT_LISTING = 0,
    EP_GET_LISTING,
    EP_CREATE_RESERVATION,
    EP_GET_RESERVATION,
    EP_CANCEL_RESERVATION,
    EP_CALENDAR,
    EP_AVAILABILITY,
    EP_SEARCH,
    EP_HEALTHZ,
    EP_READYZ,
    EP_METRICS,
    EP_OTHER,
    EP_COUNT
};

enum shard_event {
    SHARD_OPS = 0,  /* operations run on the shard */
    SHARD_CONFLICT, /* optimistic check failed, deadlock or lock wait */
    SHARD_MOVED,    /* "not owner" answers */
    SHARD_RETRY,    /* operations run again */
    SHARD_ERROR,    /* failures other than the above */
    SHARD_EVENT_COUNT
};

enum cache_event {
    CACHE_HIT = 0,      /* keys found */
    CACHE_MISS,         /* keys missing (or leased by another reader) */
    CACHE_FILL,         /* keys stored after a shard read */
    CACHE_STALE_FILL,   /* fills refused because the key changed (invalidated) meanwhile */
    CACHE_ERROR,        /* memcached calls that failed (reads fell back to the shards) */
    CACHE_INVALIDATION, /* keys deleted after a write */
    CACHE_EVENT_COUNT
};

#define METRICS_MAX_SHARDS 256

const char *metrics_endpoint_name(enum endpoint ep);
void metrics_request(enum endpoint ep, int http_status, uint64_t latency_us);
void metrics_shard(unsigned shard_index, enum shard_event ev);
/* A request answered 503 overloaded: the in-flight limit, or no shard
 * connection free in pool_wait_ms. */
void metrics_overload(void);
/* A request admitted (+1), or answered or ended (-1). */
void metrics_in_flight(int delta);
/* A worker's poll of the queue before it slept: took a request (no
 * wakeup), or found none. */
void metrics_worker_spin(bool took);
void metrics_cache(enum cache_event ev, unsigned count);
void metrics_group_commit(unsigned bookings); /* one booking transaction of that many */
void metrics_booking_read(unsigned bookings); /* one calendar read of that many bookings */

/* Renders everything; shard_ids[i] labels shard index i, breaker_open[i]
 * is 1 while its circuit breaker is open or half-open. Caller frees. */
char *metrics_render(const uint32_t *shard_ids, const int *breaker_open, size_t nshards,
                     size_t *len);

#endif
