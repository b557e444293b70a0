/* Routing through the catalog's vbucket map, one pool per shard. */
#include "calendard/router.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "sharding/shardmap.h"

#define REFRESH_MIN_GAP_US 5000 /* catalog reads begin at most every 5 ms */

struct router {
    struct router_conf conf;
    pthread_rwlock_t map_lock; /* guards map */
    struct shardmap *map;
    pthread_mutex_t refresh_lock; /* one reload at a time; guards catalog, map_read_us, pools */
    struct db *catalog;
    uint64_t map_read_us; /* when the catalog query of the current map began */
    uint64_t tried_us;    /* when the last reload began (its connect, if any, included) */
    cal_status tried_rc;  /* how it ended */
    char tried_err[256];
    size_t nshards;
    uint32_t shard_ids[ROUTER_MAX_SHARDS];
    struct pool *pools[ROUTER_MAX_SHARDS]; /* atomic; never freed before router_destroy */
    struct pool **retired; /* replaced after an address change, kept for the routes held */
    size_t nretired;
    struct breaker breakers[ROUTER_MAX_SHARDS];
    /* vbuckets each slot's shard owns in map (refresh_lock): readiness
     * checks only the shards that serve some */
    uint32_t owned[ROUTER_MAX_SHARDS];
    pthread_t thread;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stopping;
};

/* Needs refresh_lock held. */
static struct pool *
pool_for_locked(struct router *router, const struct shard_info *s, unsigned *index)
{
    struct db_conf conf = router->conf.shard;
    cal_strlcpy(conf.host, s->host, sizeof(conf.host));
    conf.port = s->port;
    cal_strlcpy(conf.database, s->db_name, sizeof(conf.database));
    for (size_t i = 0; i < router->nshards; i++) {
        if (router->shard_ids[i] != s->shard_id)
            continue;
        *index = (unsigned)i;
        struct pool *old = router->pools[i];
        const struct db_conf *was = pool_conf(old);
        bool same = strcmp(was->host, conf.host) == 0 && was->port == conf.port &&
                    strcmp(was->database, conf.database) == 0;
        if (same && !pool_retired(old))
            return old;
        /* The shard moved (a replica promoted, say): new connections go to
         * the catalog's address; the old pool closes its connections as
         * they come back. Whoever moved it fences the old server
         * (read-only): its writes are then refused and retried here. A
         * shard back in the catalog after it left gets a fresh pool too. */
        if (!same)
            log_warn("shard address changed", "shard=%u from=%s:%u/%s to=%s:%u/%s", s->shard_id,
                     was->host, was->port, was->database, conf.host, conf.port, conf.database);
        struct pool *pool = pool_create(&conf, router->conf.pool_size, router->conf.pool_wait_ms);
        __atomic_store_n(&router->pools[i], pool, __ATOMIC_RELEASE);
        pool_retire(old);
        breaker_record(&router->breakers[i], true, cal_mono_us()); /* a fresh start */
        router->retired = cal_realloc(router->retired, (router->nretired + 1) * sizeof(old));
        router->retired[router->nretired++] = old;
        return pool;
    }
    if (router->nshards == ROUTER_MAX_SHARDS)
        return NULL;
    size_t i = router->nshards;
    router->pools[i] = pool_create(&conf, router->conf.pool_size, router->conf.pool_wait_ms);
    breaker_init(&router->breakers[i], router->conf.breaker_threshold,
                 router->conf.breaker_cooldown_ms);
    router->shard_ids[i] = s->shard_id;
    *index = (unsigned)i;
    /* Publish the slot after it is filled: readers scan up to nshards. */
    __atomic_store_n(&router->nshards, i + 1, __ATOMIC_RELEASE);
    log_info("shard added", "shard=%u host=%s port=%u db=%s", s->shard_id, s->host, s->port,
             s->db_name);
    return router->pools[i];
}

/* Shards gone from the catalog (calendar-rebalance remove-shard): their
 * pools close the idle connections now and the others as they come back,
 * and a request still holding a route there is told to route again. The
 * slot stays (routes held elsewhere point at its pool). Needs
 * refresh_lock held. */
static void
retire_removed_locked(struct router *router, const struct shardmap *map)
{
    for (size_t i = 0; i < router->nshards; i++) {
        bool listed = false;
        for (size_t j = 0; j < map->nshards && !listed; j++)
            listed = map->shards[j].shard_id == router->shard_ids[i];
        if (listed || pool_retired(router->pools[i]))
            continue;
        log_info("shard removed", "shard=%u", router->shard_ids[i]);
        pool_retire(router->pools[i]);
    }
}

static cal_status
reload_once(struct router *router, char *err, size_t errlen)
{
    if (router->catalog == NULL || db_broken(router->catalog)) {
        db_close(router->catalog);
        router->catalog = db_connect(&router->conf.catalog, err, errlen);
        if (router->catalog == NULL)
            return CAL_EUNAVAIL;
    }
    struct shardmap *map;
    uint64_t read_us = cal_mono_us();
    cal_status rc = shardmap_load(router->catalog, &map, err, errlen);
    if (rc != CAL_OK)
        return rc;
    unsigned slot[ROUTER_MAX_SHARDS];
    for (size_t i = 0; i < map->nshards; i++) {
        if (i == ROUTER_MAX_SHARDS || pool_for_locked(router, &map->shards[i], &slot[i]) == NULL) {
            snprintf(err, errlen, "more than %d shards", ROUTER_MAX_SHARDS);
            shardmap_destroy(map);
            return CAL_ERR;
        }
    }
    retire_removed_locked(router, map);
    memset(router->owned, 0, sizeof(router->owned));
    for (uint32_t v = 0; v < map->num_vbuckets; v++)
        for (size_t i = 0; i < map->nshards; i++)
            if (map->shards[i].shard_id == map->owner[v]) {
                router->owned[slot[i]]++;
                break;
            }
    pthread_rwlock_wrlock(&router->map_lock);
    struct shardmap *old = router->map;
    router->map = map;
    pthread_rwlock_unlock(&router->map_lock);
    shardmap_destroy(old);
    router->map_read_us = read_us;
    return CAL_OK;
}

/* One reload, its start and outcome kept for the requests that waited on
 * it (needs refresh_lock). */
static cal_status
reload_locked(struct router *router, char *err, size_t errlen)
{
    router->tried_us = cal_mono_us();
    err[0] = '\0';
    cal_status rc = reload_once(router, err, errlen);
    router->tried_rc = rc;
    snprintf(router->tried_err, sizeof(router->tried_err), "%s", err);
    return rc;
}

cal_status
router_refresh(struct router *router, char *err, size_t errlen)
{
    uint64_t asked = cal_mono_us();
    pthread_mutex_lock(&router->refresh_lock);
    cal_status rc = CAL_OK;
    /* A reload begun after we asked ran while we waited for the lock: its
     * map is at least as new as the "moved" answer that made us ask, and
     * its failure is ours too. So a burst of requests shares one reload
     * even when the catalog does not answer, instead of each waiting for
     * its own connect timeout in turn. A reload begun earlier may predate
     * the move's catalog commit, so we read again, but no sooner than 5 ms
     * after the last reload began: a storm of "moved" answers (a failover)
     * costs the catalog 200 reads a second at most, and whoever asks
     * meanwhile waits here for this read. */
    if (router->tried_us > asked) {
        rc = router->tried_rc;
        if (rc != CAL_OK)
            snprintf(err, errlen, "%s", router->tried_err);
    } else {
        uint64_t now = cal_mono_us(), next = router->tried_us + REFRESH_MIN_GAP_US;
        if (now < next)
            cal_sleep_ms((unsigned)((next - now + 999) / 1000));
        rc = reload_locked(router, err, errlen);
    }
    pthread_mutex_unlock(&router->refresh_lock);
    return rc;
}

static void *
refresher(void *arg)
{
    struct router *router = arg;
    char err[512];
    bool failing = false;
    pthread_mutex_lock(&router->stop_lock);
    while (!router->stopping) {
        pthread_rwlock_rdlock(&router->map_lock);
        unsigned ms = router->map ? router->conf.refresh_interval_ms : 500;
        pthread_rwlock_unlock(&router->map_lock);
        struct timespec ts = cal_mono_after_ms(ms);
        pthread_cond_timedwait(&router->stop_cond, &router->stop_lock, &ts);
        if (router->stopping)
            break;
        pthread_mutex_unlock(&router->stop_lock);
        pthread_mutex_lock(&router->refresh_lock);
        cal_status rc = reload_locked(router, err, sizeof(err));
        pthread_mutex_unlock(&router->refresh_lock);
        if (rc != CAL_OK && !failing)
            log_warn("shard map refresh failed", "error=\"%s\"", err);
        else if (rc == CAL_OK && failing)
            log_info("shard map refresh recovered", "%s", "");
        failing = rc != CAL_OK;
        pthread_mutex_lock(&router->stop_lock);
    }
    pthread_mutex_unlock(&router->stop_lock);
    return NULL;
}

struct router *
router_create(const struct router_conf *conf)
{
    struct router *router = cal_calloc(1, sizeof(*router));
    char err[512];
    router->conf = *conf;
    pthread_rwlock_init(&router->map_lock, NULL);
    pthread_mutex_init(&router->refresh_lock, NULL);
    pthread_mutex_init(&router->stop_lock, NULL);
    cal_cond_init_monotonic(&router->stop_cond);
    pthread_mutex_lock(&router->refresh_lock);
    if (reload_locked(router, err, sizeof(err)) != CAL_OK)
        log_warn("shard map not loaded; retrying in the background", "error=\"%s\"", err);
    else
        log_info("shard map loaded", "vbuckets=%u shards=%zu", router->map->num_vbuckets,
                 router->map->nshards);
    pthread_mutex_unlock(&router->refresh_lock);
    pthread_create(&router->thread, NULL, refresher, router);
    return router;
}

void
router_destroy(struct router *router)
{
    if (router == NULL)
        return;
    pthread_mutex_lock(&router->stop_lock);
    router->stopping = true;
    pthread_cond_signal(&router->stop_cond);
    pthread_mutex_unlock(&router->stop_lock);
    pthread_join(router->thread, NULL);
    for (size_t i = 0; i < router->nshards; i++) {
        pool_destroy(router->pools[i]);
        breaker_deinit(&router->breakers[i]);
    }
    for (size_t i = 0; i < router->nretired; i++)
        pool_destroy(router->retired[i]);
    free(router->retired);
    shardmap_destroy(router->map);
    db_close(router->catalog);
    pthread_cond_destroy(&router->stop_cond);
    pthread_mutex_destroy(&router->stop_lock);
    pthread_mutex_destroy(&router->refresh_lock);
    pthread_rwlock_destroy(&router->map_lock);
    free(router);
}

cal_status
router_route(struct router *router, uint64_t listing_id, struct route *out, char *err,
             size_t errlen)
{
    pthread_rwlock_rdlock(&router->map_lock);
    const struct shardmap *map = router->map;
    if (map == NULL) {
        pthread_rwlock_unlock(&router->map_lock);
        snprintf(err, errlen, "no shard map yet: catalog unreachable");
        return CAL_EUNAVAIL;
    }
    out->vbucket = shardmap_vbucket(listing_id, map->num_vbuckets);
    out->shard_id = map->owner[out->vbucket];
    out->epoch = map->epoch[out->vbucket];
    pthread_rwlock_unlock(&router->map_lock);
    size_t n = __atomic_load_n(&router->nshards, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++) {
        if (router->shard_ids[i] == out->shard_id) {
            out->shard_index = (unsigned)i;
            out->pool = __atomic_load_n(&router->pools[i], __ATOMIC_ACQUIRE);
            out->breaker = &router->breakers[i];
            return CAL_OK;
        }
    }
    snprintf(err, errlen, "shard %u has no pool", out->shard_id);
    return CAL_ERR;
}

/* The kind of a readiness failure, as clients may read it. */
static const char *
failure_kind(cal_status rc)
{
    switch (rc) {
    case CAL_EUNAVAIL:
        return "is unreachable";
    case CAL_ETIMEDOUT:
        return "timed out";
    case CAL_EMOVED:
        return "is moving to another server";
    default:
        return "fails queries";
    }
}

cal_status
router_check_ready(struct router *router, char *why, size_t whylen, char *err, size_t errlen)
{
    cal_status rc;
    pthread_mutex_lock(&router->refresh_lock);
    rc = router->map == NULL ? reload_locked(router, err, errlen) : CAL_OK;
    if (rc == CAL_OK) {
        struct db_stmt *st;
        struct db_val c[1];
        if (router->catalog == NULL || db_broken(router->catalog))
            rc = reload_locked(router, err, errlen);
        if (rc == CAL_OK &&
            (rc = db_query(router->catalog, "SELECT 1", NULL, 0, &st, err, errlen)) == CAL_OK)
            while (db_fetch(st, c, 1, err, errlen) > 0)
                ;
    }
    size_t n = router->nshards;
    uint32_t owned[ROUTER_MAX_SHARDS];
    memcpy(owned, router->owned, sizeof(owned));
    pthread_mutex_unlock(&router->refresh_lock);
    if (rc != CAL_OK) {
        snprintf(why, whylen, "the catalog %s", failure_kind(rc));
        return rc;
    }
    for (size_t i = 0; rc == CAL_OK && i < n; i++) {
        /* A shard that serves no vbucket (drained, or removed from the
         * catalog) may be down for maintenance: no request goes to it. */
        if (owned[i] == 0)
            continue;
        struct db *db;
        char e2[256];
        struct pool *pool = __atomic_load_n(&router->pools[i], __ATOMIC_ACQUIRE);
        rc = pool_get(pool, &db, e2, sizeof(e2));
        /* Every connection busy for pool_wait_ms is a shard at work, not a
         * shard down: an instance under load must not leave the load
         * balancer for it. Its breaker, which requests that fail or time
         * out open, tells a hung shard from a busy one. */
        if (rc == CAL_EAGAIN) {
            bool open = breaker_state(&router->breakers[i]) == BREAKER_OPEN;
            rc = open ? CAL_EUNAVAIL : CAL_OK;
            if (open) {
                snprintf(why, whylen, "shard %u is busy and its circuit breaker is open",
                         router->shard_ids[i]);
                snprintf(err, errlen, "shard %u: %s, and its breaker is open", router->shard_ids[i],
                         e2);
            }
            continue;
        }
        if (rc == CAL_OK) {
            struct db_stmt *st;
            struct db_val c[1];
            rc = db_query(db, "SELECT 1", NULL, 0, &st, e2, sizeof(e2));
            if (rc == CAL_OK)
                while (db_fetch(st, c, 1, e2, sizeof(e2)) > 0)
                    ;
            pool_put(pool, db);
        }
        if (rc != CAL_OK) {
            snprintf(why, whylen, "shard %u %s", router->shard_ids[i], failure_kind(rc));
            snprintf(err, errlen, "shard %u: %s", router->shard_ids[i], e2);
        }
    }
    return rc;
}

size_t
router_shard_ids(struct router *router, uint32_t *ids, enum breaker_state *states, size_t max)
{
    size_t n = __atomic_load_n(&router->nshards, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n && i < max; i++) {
        ids[i] = router->shard_ids[i];
        states[i] = breaker_state(&router->breakers[i]);
    }
    return n < max ? n : max;
}
