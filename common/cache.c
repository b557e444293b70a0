/* The memcached adapter on libmemcached 1.1. */
#include "common/cache.h"

#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct cache {
    memcached_st *mc;
    /* For cache_delete_many(): the same servers with requests buffered and
     * no replies asked, so a batch of deletes leaves in one write per
     * server. Set at creation: changing either behaviour later makes
     * libmemcached close the connections. */
    memcached_st *bulk;
};

struct cache *
cache_create(const struct cache_conf *conf, char *err, size_t errlen)
{
    memcached_server_list_st servers = memcached_servers_parse(conf->servers);
    if (servers == NULL || conf->servers[0] == '\0') {
        snprintf(err, errlen, "cache servers '%s' are not host:port[,host:port]", conf->servers);
        memcached_server_list_free(servers);
        return NULL;
    }
    memcached_st *mc = memcached_create(NULL);
    memcached_server_push(mc, servers);
    memcached_server_list_free(servers);
    uint64_t ms = conf->timeout_ms ? conf->timeout_ms : 50;
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NO_BLOCK, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms * 1000);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms * 1000);
    /* A dead server is retried after 1 s; keys are never moved to another
     * server (no auto-eject), so a flapping server cannot serve stale copies. */
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS, 0);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT);
    memcached_st *bulk = memcached_clone(NULL, mc);
    if (bulk == NULL) {
        snprintf(err, errlen, "cache: out of memory for a second memcached handle");
        memcached_free(mc);
        return NULL;
    }
    struct cache *cache = cal_calloc(1, sizeof(*cache));
    cache->mc = mc;
    cache->bulk = bulk;
    memcached_behavior_set(cache->bulk, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1);
    memcached_behavior_set(cache->bulk, MEMCACHED_BEHAVIOR_NOREPLY, 1);
    return cache;
}

void
cache_destroy(struct cache *cache)
{
    if (cache == NULL)
        return;
    memcached_free(cache->mc);
    memcached_free(cache->bulk);
    free(cache);
}

static cal_status
fail(struct cache *cache, memcached_return_t rc, char *err, size_t errlen)
{
    snprintf(err, errlen, "memcached: %s", memcached_strerror(cache->mc, rc));
    return CAL_EUNAVAIL;
}

static int
cmp_item_key(const void *a, const void *b)
{
    const struct cache_item *x = *(const struct cache_item *const *)a;
    const struct cache_item *y = *(const struct cache_item *const *)b;
    size_t n = x->keylen < y->keylen ? x->keylen : y->keylen;
    int c = memcmp(x->key, y->key, n);
    return c != 0 ? c : (x->keylen > y->keylen) - (x->keylen < y->keylen);
}

cal_status
cache_get_multi(struct cache *cache, struct cache_item *items, size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return CAL_OK;
    const char **keys = cal_malloc(n * sizeof(*keys));
    size_t *lens = cal_malloc(n * sizeof(*lens));
    struct cache_item **sorted = cal_malloc(n * sizeof(*sorted));
    for (size_t i = 0; i < n; i++) {
        keys[i] = items[i].key;
        lens[i] = items[i].keylen;
        items[i].found = false;
        items[i].value = NULL;
        sorted[i] = &items[i];
    }
    qsort(sorted, n, sizeof(*sorted), cmp_item_key);
    cal_status st = CAL_OK;
    size_t nfound = 0;
    memcached_return_t rc = memcached_mget(cache->mc, keys, lens, n);
    /* SOME_ERRORS: a server of the pool failed; the others still answer. */
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_SOME_ERRORS) {
        st = fail(cache, rc, err, errlen);
        goto out;
    }
    memcached_result_st *res;
    while ((res = memcached_fetch_result(cache->mc, NULL, &rc)) != NULL) {
        struct cache_item probe = {.key = memcached_result_key_value(res),
                                   .keylen = memcached_result_key_length(res)};
        struct cache_item *pp = &probe;
        struct cache_item **hit = bsearch(&pp, sorted, n, sizeof(*sorted), cmp_item_key);
        /* A key asked twice: bsearch lands on any copy; every copy gets the value. */
        while (hit != NULL && hit > sorted && cmp_item_key(hit - 1, &pp) == 0)
            hit--;
        for (; hit != NULL && hit < sorted + n && cmp_item_key(hit, &pp) == 0; hit++) {
            struct cache_item *it = *hit;
            if (it->found)
                continue;
            it->found = true;
            it->len = memcached_result_length(res);
            it->value = cal_strndup(memcached_result_value(res), it->len);
            it->cas = memcached_result_cas(res);
            nfound++;
        }
        memcached_result_free(res);
    }
    /* A server that failed or timed out while others answered costs only its
     * own keys (misses); a failure with nothing found is the cache's. */
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND && nfound == 0)
        st = fail(cache, rc, err, errlen);
out:
    free(keys);
    free(lens);
    free(sorted);
    return st;
}

void
cache_results_free(struct cache_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].value);
        items[i].value = NULL;
    }
}

cal_status
cache_add(struct cache *cache, const char *key, size_t keylen, const char *value, size_t len,
          unsigned ttl_s, char *err, size_t errlen)
{
    memcached_return_t rc = memcached_add(cache->mc, key, keylen, value, len, (time_t)ttl_s, 0);
    if (rc == MEMCACHED_SUCCESS)
        return CAL_OK;
    if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS)
        return CAL_EDUP;
    return fail(cache, rc, err, errlen);
}

cal_status
cache_cas(struct cache *cache, const char *key, size_t keylen, const char *value, size_t len,
          unsigned ttl_s, uint64_t cas, char *err, size_t errlen)
{
    memcached_return_t rc =
        memcached_cas(cache->mc, key, keylen, value, len, (time_t)ttl_s, 0, cas);
    if (rc == MEMCACHED_SUCCESS)
        return CAL_OK;
    if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND || rc == MEMCACHED_NOTSTORED)
        return CAL_ECONFLICT;
    return fail(cache, rc, err, errlen);
}

cal_status
cache_set(struct cache *cache, const char *key, size_t keylen, const char *value, size_t len,
          unsigned ttl_s, char *err, size_t errlen)
{
    memcached_return_t rc = memcached_set(cache->mc, key, keylen, value, len, (time_t)ttl_s, 0);
    return rc == MEMCACHED_SUCCESS ? CAL_OK : fail(cache, rc, err, errlen);
}

cal_status
cache_delete(struct cache *cache, const char *key, size_t keylen, char *err, size_t errlen)
{
    memcached_return_t rc = memcached_delete(cache->mc, key, keylen, 0);
    if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTFOUND)
        return CAL_OK;
    return fail(cache, rc, err, errlen);
}

cal_status
cache_delete_many(struct cache *cache, const char *const *keys, const size_t *keylens, size_t n,
                  char *err, size_t errlen)
{
    if (n == 0)
        return CAL_OK;
    if (n == 1)
        return cache_delete(cache, keys[0], keylens[0], err, errlen);
    /* The deletes are buffered, without replies; then one get per server
     * that has some (of its last key) writes them all and waits for its
     * answer. A server answers a connection's requests in order, so that
     * answer means it executed every delete written before it. */
    memcached_st *mc = cache->bulk;
    uint32_t nservers = memcached_server_count(mc);
    uint32_t stack_last[8], *last = nservers <= 8 ? stack_last : cal_malloc(nservers * 4);
    for (uint32_t s = 0; s < nservers; s++)
        last[s] = UINT32_MAX;
    memcached_return_t rc = MEMCACHED_SUCCESS;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = memcached_generate_hash(mc, keys[i], keylens[i]);
        if (s < nservers)
            last[s] = (uint32_t)i;
        rc = memcached_delete(mc, keys[i], keylens[i], 0);
        if (rc != MEMCACHED_BUFFERED && rc != MEMCACHED_SUCCESS)
            break;
        rc = MEMCACHED_SUCCESS;
    }
    for (uint32_t s = 0; s < nservers && rc == MEMCACHED_SUCCESS; s++) {
        if (last[s] == UINT32_MAX)
            continue;
        size_t vlen;
        uint32_t flags;
        char *v = memcached_get(mc, keys[last[s]], keylens[last[s]], &vlen, &flags, &rc);
        free(v);
        if (rc == MEMCACHED_NOTFOUND) {
            /* libmemcached 1.1 also answers NOTFOUND when reading the reply
             * failed (a connection reset): the error it recorded for this
             * call tells the two apart. */
            memcached_return_t last_rc = memcached_last_error(mc);
            rc = last_rc == MEMCACHED_SUCCESS || last_rc == MEMCACHED_NOTFOUND ? MEMCACHED_SUCCESS
                                                                               : last_rc;
        }
    }
    if (last != stack_last)
        free(last);
    if (rc == MEMCACHED_SUCCESS)
        return CAL_OK;
    /* Whatever was left buffered goes with the connections. */
    memcached_quit(mc);
    snprintf(err, errlen, "memcached: %s", memcached_strerror(mc, rc));
    return CAL_EUNAVAIL;
}

cal_status
cache_flush(struct cache *cache, char *err, size_t errlen)
{
    memcached_return_t rc = memcached_flush(cache->mc, 0);
    return rc == MEMCACHED_SUCCESS ? CAL_OK : fail(cache, rc, err, errlen);
}
