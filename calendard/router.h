/* Routing: listing -> vbucket -> shard through the catalog's map, with one
 * connection pool per shard. The map is refreshed periodically and at once
 * when a shard answers "not owner" (CAL_EMOVED); a shard whose address
 * changed in the catalog gets a new pool there. */
#ifndef CAL_ROUTER_H
#define CAL_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calendard/breaker.h"
#include "calendard/pool.h"
#include "common/db.h"

#define ROUTER_MAX_SHARDS 256

struct router_conf {
    struct db_conf catalog;
    struct db_conf shard; /* credentials and timeouts; address comes from the catalog */
    unsigned pool_size;
    unsigned pool_wait_ms;
    unsigned refresh_interval_ms;
    unsigned breaker_threshold;   /* consecutive shard failures that open its breaker */
    unsigned breaker_cooldown_ms; /* how long an open breaker fails fast */
};

struct route {
    uint32_t vbucket;
    uint32_t shard_id;
    uint64_t epoch;
    unsigned shard_index; /* 0..ROUTER_MAX_SHARDS-1, stable for a shard: metrics */
    struct pool *pool;
    struct breaker *breaker;
};

/* Loads the map once; when the catalog is unreachable the router still
 * starts, answers CAL_EUNAVAIL and keeps retrying in the background.
 * Caller frees with router_destroy(). */
struct router *router_create(const struct router_conf *conf);
void router_destroy(struct router *router);

cal_status router_route(struct router *router, uint64_t listing_id, struct route *out, char *err,
                        size_t errlen);

/* Reloads the map unless another thread began a reload after this call
 * began, so a caller never keeps a map read before the answer that made it
 * ask; that reload's status is then this call's. Reloads begin at most
 * every 5 ms: a call may wait that long, and a burst of "moved" answers
 * shares one reload, failed or not (a catalog that does not answer costs
 * the burst one connect timeout, not one each in turn). Returns the
 * reload's status. */
cal_status router_refresh(struct router *router, char *err, size_t errlen);

/* The catalog and every shard that owns a vbucket answer a query (a shard
 * busy to its last connection counts as up unless its breaker is open).
 * When one does not: why names it (the catalog, or shard N) and the kind of
 * failure, and nothing more (no address, database or user: clients may read
 * it); err has the detail, for the log. */
cal_status router_check_ready(struct router *router, char *why, size_t whylen, char *err,
                              size_t errlen);

/* Shard ids and breaker states by index for metrics; returns how many. */
size_t router_shard_ids(struct router *router, uint32_t *ids, enum breaker_state *states,
                        size_t max);

#endif
