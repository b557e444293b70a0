/* The invalidator's consume loop: Kafka change events -> memcached deletes.
 * An offset is stored only after memcached acted on its event; a failed
 * delete is retried with bounded backoff, forever, never skipped. Events that
 * cannot be decoded are logged, counted and stored (see invalidate.h).
 *
 * Every key is deleted a second time, redelete_ms after its first delete:
 * MariaDB signals the binlog (and so the relay) before the commit is visible
 * to readers on the shard, so a read that missed just after the first delete
 * can still load the old row and cache it. The second delete is best-effort:
 * it never holds back an offset (the first one decides), a failed one is
 * counted and dropped, and when the bounded queue of keys waiting for it is
 * full the oldest are deleted again at once (early, counted). Due second
 * deletes ride in the same pipelined round trip as a batch's first deletes,
 * or go in one of their own when no batch comes. */
#ifndef CAL_INVALIDATOR_H
#define CAL_INVALIDATOR_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "cdc/invstats.h"
#include "cdc/kconsumer.h"
#include "common/cache.h"
#include "common/status.h"

struct invalidator_conf {
    struct kconsumer_conf kafka;
    struct cache_conf cache;
    unsigned retry_base_ms;      /* first retry of a failed invalidation after up to this */
    unsigned retry_max_ms;       /* longest wait between two tries */
    unsigned report_interval_ms; /* progress/lag log line and lag metrics refresh */
    unsigned redelete_ms;        /* second delete this long after the first; 0 = none */
    size_t redelete_max_keys;    /* keys waiting for it at most; >= INVALIDATOR_REDELETE_MIN */
};

/* The least redelete_max_keys: a batch's keys must fit. */
#define INVALIDATOR_REDELETE_MIN 1024

struct invalidator;

/* stats is borrowed (the metrics endpoint reads it too). NULL and err filled
 * when the cache servers or the Kafka settings are invalid. */
struct invalidator *invalidator_create(const struct invalidator_conf *conf, struct invstats *stats,
                                       char *err, size_t errlen);

/* Consumes until *stop becomes nonzero (checked at least every 100 ms). */
void invalidator_run(struct invalidator *inv, const volatile sig_atomic_t *stop);

/* Commits stored offsets and leaves the group; then deletes the keys still
 * waiting for their second delete, each at its time (so at most
 * redelete_ms from now; what is left is dropped if memcached fails); then
 * frees. */
void invalidator_destroy(struct invalidator *inv); /* invalidator_destroy(NULL) is a no-op */

/* True once the consumer group gave us an assignment (possibly empty). */
bool invalidator_ready(const struct invalidator *inv);

#endif
