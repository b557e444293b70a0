/* The availability read cache: memcached first (one multi-get for every key
 * of a request), fills guarded by leases so a reader that read the shard
 * before an invalidation can never store its stale copy afterwards:
 *   miss -> add(key, LEASE token) -> read the shard -> gets(key) -> cas only
 *   if the key still holds our token. An invalidation is a plain delete, which
 *   removes a value or a lease alike. (libmemcached 1.1: no meta protocol.) */
#ifndef CAL_AVAIL_H
#define CAL_AVAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calendard/store.h"
#include "common/cache.h"

#define AVAIL_MAX_MONTHS 14 /* 366 nights touch at most 14 months */

struct avail_conf {
    struct cache_conf cache; /* servers empty: no cache, every read goes to the shards */
    unsigned ttl_s;          /* lifetime of a cached value (a safety net; deletes do the work) */
    unsigned lease_ttl_s;    /* lifetime of a lease whose owner died */
    /* How long a write's cache deletes wait for others to share their
     * round trip (its reads bypass the keys meanwhile); 0: sent at once. */
    unsigned delete_linger_ms;
};

/* One listing of a lookup. */
struct avail_item {
    uint64_t listing_id;
    bool hit;                  /* read filled from the cache */
    struct calendar_read read; /* hit: from the cache; miss: the caller fills it */
    uint64_t token;            /* our lease token */
    uint32_t owned;            /* leases we hold: bit 0 listing key, bit 1+i month i */
    uint32_t absent;           /* keys to lease (same bits): found in no form, or stale */
    /* Of absent: months found with a value older than their listing key's,
     * leased by cas over that value (stale_cas, from the lookup) */
    uint32_t stale;
    uint64_t stale_cas[AVAIL_MAX_MONTHS + 1];
};

struct avail;

struct avail *avail_create(const struct avail_conf *conf, char *err, size_t errlen);
void avail_destroy(struct avail *avail); /* avail_destroy(NULL) is a no-op */

/* The whole months covering [from, to): what a miss must read to fill. */
void avail_span(int32_t from, int32_t to, int32_t *span_from, int32_t *span_to);

/* Looks every item up over [from, to) in one multi-get, and nothing else:
 * it runs on the event loop. */
void avail_lookup(struct avail *avail, struct avail_item *items, size_t n, int32_t from,
                  int32_t to);

/* For the misses, before they are read from the shards (on a worker): takes
 * the leases it can on the keys the lookup found absent. */
void avail_lease(struct avail *avail, struct avail_item *items, size_t n, int32_t from, int32_t to);

/* After the caller read the misses from the shards over avail_span(), stores
 * the keys whose leases are still ours. Items whose read is not found only
 * give their leases up to expiry. */
void avail_fill(struct avail *avail, struct avail_item *items, size_t n, int32_t from, int32_t to);

/* Invalidates the listing key and the month keys of [from, to) (none when
 * from == to), after a write committed: marks them pending, which makes this
 * daemon's reads of them bypass the cache from now on (read-your-writes for
 * this daemon), and queues their deletes for the delete thread, which sends
 * them at once and retries failed ones. It does not wait for memcached. CDC
 * covers other daemons and other writers. */
void avail_invalidate(struct avail *avail, uint64_t listing_id, int32_t from, int32_t to);

/* One stay whose nights changed: its listing, nights [from, to). */
struct avail_stay {
    uint64_t listing_id;
    int32_t from, to;
};

/* avail_invalidate() of n stays at once (a group commit's bookings, after
 * its COMMIT); the delete thread sends queued keys in pipelined rounds. */
void avail_invalidate_many(struct avail *avail, const struct avail_stay *stays, size_t n);

/* Waits until every invalidation so far has been confirmed by memcached;
 * false after timeout_ms. For tests. */
bool avail_settle(struct avail *avail, unsigned timeout_ms);

/* For tests: the keys whose delete is not confirmed yet (one more while an
 * overflow's flush is due). */
size_t avail_pending_keys(struct avail *avail);

/* For tests: the bucket of the pending set that key falls in. */
size_t avail_pending_bucket(const char *key, size_t len);

/* For tests: fn(arg) runs on the delete thread in every flush after an
 * overflow, just before the flush is sent (a write racing with it); NULL
 * for none. */
void avail_on_flush(struct avail *avail, void (*fn)(void *), void *arg);

/* For tests: while held, queued deletes are not sent (reads still bypass
 * their keys). avail_destroy() sends them regardless. */
void avail_hold_deletes(struct avail *avail, bool hold);

#endif
