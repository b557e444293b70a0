/* The invalidator's counters, per-partition consumer lag and
 * commit-to-invalidation latency (a histogram for Prometheus, a window of
 * samples for the periodic log line's p50/p99), and produce-to-invalidation
 * latency (a histogram, and the window when known). Thread-safe: the consumer
 * loop records, the metrics endpoint renders. */
#ifndef CAL_INVSTATS_H
#define CAL_INVSTATS_H

#include <stddef.h>
#include <stdint.h>

#include "cdc/invalidate.h"
#include "cdc/kconsumer.h"

enum invstats_error {
    INVSTATS_ERR_UNDECODABLE = 0, /* poison message: logged, counted, offset stored */
    INVSTATS_ERR_CACHE,           /* memcached failed; the event is retried */
    INVSTATS_ERR_KAFKA,           /* consumer error (broker down, ...) */
    INVSTATS_ERR_STORE,           /* offset store failed */
    INVSTATS_ERR_GAP,             /* events lost or dropped unread: the cache was flushed */
    INVSTATS_ERR_COUNT
};

/* What became of a key's second delete (see invalidator.h). */
enum invstats_redelete {
    INVSTATS_REDELETE_DELETED = 0, /* deleted again at its time */
    INVSTATS_REDELETE_EARLY,       /* deleted again before its time: the queue was full */
    INVSTATS_REDELETE_FAILED,      /* memcached did not confirm it: dropped, not retried */
    INVSTATS_REDELETE_COUNT
};

struct invstats;

struct invstats *invstats_create(void);
void invstats_destroy(struct invstats *stats); /* invstats_destroy(NULL) is a no-op */

void invstats_event(struct invstats *stats, enum invalidate_table table);
void invstats_invalidations(struct invstats *stats, size_t nkeys);
void invstats_flush(struct invstats *stats);
void invstats_error(struct invstats *stats, enum invstats_error kind);
void invstats_redeletes(struct invstats *stats, enum invstats_redelete outcome, size_t nkeys);
/* Keys waiting for their second delete now (a gauge). */
void invstats_set_redelete_queue(struct invstats *stats, size_t nkeys);
/* An event whose keys were deleted: now - its source.ts_ms (whole seconds
 * in MariaDB's binlog) and now - its Kafka timestamp (ms; the relay sets it
 * as it produces), each -1 when the event has none. Each goes to its
 * histogram; the window takes the Kafka one when there is one. */
void invstats_latency(struct invstats *stats, int64_t commit_ms, int64_t produce_ms);
/* Replaces the lag table with the current assignment. */
void invstats_set_lag(struct invstats *stats, const struct kconsumer_lag *lags, size_t n);

/* A summary of the window since the last call (which starts a new one). */
struct invstats_window {
    uint64_t events, invalidations, errors;
    uint64_t redeletes, redeletes_failed; /* keys deleted again (early included), failed */
    size_t samples;
    uint64_t p50_ms, p99_ms, max_ms; /* 0 when samples == 0 */
};
void invstats_take_window(struct invstats *stats, struct invstats_window *win);

/* Prometheus text exposition; caller frees the string. */
char *invstats_render(struct invstats *stats, size_t *len);

#endif
