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

cal_status
cache_servers_check(const char *servers, char *err, size_t errlen)
{
    const char *p = servers;
    do {
        const char *entry = p, *end = p + strcspn(p, ",");
        size_t host = strspn(entry, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789.-_");
        const char *port = entry + host + 1;
        size_t digits = host > 0 && entry[host] == ':' ? strspn(port, "0123456789") : 0;
        unsigned long n = digits > 0 && digits <= 5 ? strtoul(port, NULL, 10) : 0;
        if (n < 1 || n > 65535 || port + digits != end) {
            snprintf(err, errlen, "'%.*s' is not host:port (port 1..65535)", (int)(end - entry),
                     entry);
            return CAL_EINVAL;
        }
        p = *end == ',' ? end + 1 : end;
    } while (*p != '\0' || p[-1] == ',');
    return CAL_OK;
}

struct cache *
cache_create(const struct cache_conf *conf, char *err, size_t errlen)
{
    if (cache_servers_check(conf->servers, err, errlen) != CAL_OK)
        return NULL;
    memcached_server_list_st servers = memcached_servers_parse(conf->servers);
    if (servers == NULL) {
        snprintf(err, errlen, "cache servers '%s' are not host:port[,host:port]", conf->servers);
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

/* The multi-get matches each returned key to the items asking for it
 * through an open-addressing table, in time linear in the keys. Keys are
 * hashed 8 bytes at a time (multiply and fold); the table is per call, so
 * the hash needs no stability across processes or byte orders. */
static uint64_t
key_hash(const char *key, size_t len)
{
    uint64_t h = len * 0x9e3779b97f4a7c15ULL, w;
    for (; len >= 8; key += 8, len -= 8) {
        memcpy(&w, key, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, key, len);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 29);
}

static bool
same_key(const struct cache_item *it, const char *key, size_t len)
{
    return it->keylen == len && memcmp(it->key, key, len) == 0;
}

/* slots[] holds 1 + the index of an item of each distinct key (0: empty);
 * next[] chains the other items asking for the same key. */
struct key_index {
    size_t mask;
    uint32_t *slots, *next;
};

static void
key_index_build(struct key_index *ix, const struct cache_item *items, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    ix->mask = cap - 1;
    ix->slots = cal_calloc(cap, sizeof(*ix->slots));
    ix->next = cal_calloc(n, sizeof(*ix->next));
    for (size_t i = 0; i < n; i++) {
        size_t s = key_hash(items[i].key, items[i].keylen) & ix->mask;
        while (ix->slots[s] != 0 &&
               !same_key(&items[ix->slots[s] - 1], items[i].key, items[i].keylen))
            s = (s + 1) & ix->mask;
        ix->next[i] = ix->slots[s]; /* 0, or the items that asked for it before */
        ix->slots[s] = (uint32_t)i + 1;
    }
}

/* 1 + the index of the first item asking for key, 0 if none does. */
static uint32_t
key_index_find(const struct key_index *ix, const struct cache_item *items, const char *key,
               size_t len)
{
    size_t s = key_hash(key, len) & ix->mask;
    while (ix->slots[s] != 0 && !same_key(&items[ix->slots[s] - 1], key, len))
        s = (s + 1) & ix->mask;
    return ix->slots[s];
}

cal_status
cache_get_multi(struct cache *cache, struct cache_item *items, size_t n, char *err, size_t errlen)
{
    if (n == 0)
        return CAL_OK;
    const char **keys = cal_malloc(n * sizeof(*keys));
    size_t *lens = cal_malloc(n * sizeof(*lens));
    size_t *offs = cal_malloc(n * sizeof(*offs));
    for (size_t i = 0; i < n; i++) {
        keys[i] = items[i].key;
        lens[i] = items[i].keylen;
        items[i].found = false;
        items[i].owns = false;
        items[i].value = NULL;
    }
    /* Every value goes into one block (each NUL-terminated), not one
     * allocation per value: a search's 150 mallocs and frees were a tenth
     * of its CPU. Offsets until the block stops moving. */
    size_t cap = n * 64, used = 0;
    char *block = cal_malloc(cap);
    struct key_index ix;
    key_index_build(&ix, items, n);
    cal_status st = CAL_OK;
    size_t nfound = 0;
    /* One result for every value (not allocated, so libmemcached keeps it
     * when the fetch ends), not one allocated and freed per value. */
    memcached_result_st res_buf, *res = NULL;
    memcached_return_t rc = memcached_mget(cache->mc, keys, lens, n);
    /* SOME_ERRORS: a server of the pool failed; the others still answer. */
    if (rc != MEMCACHED_SUCCESS && rc != MEMCACHED_SOME_ERRORS) {
        st = fail(cache, rc, err, errlen);
        goto out;
    }
    res = memcached_result_create(cache->mc, &res_buf);
    while (memcached_fetch_result(cache->mc, res, &rc) != NULL) {
        uint32_t i = key_index_find(&ix, items, memcached_result_key_value(res),
                                    memcached_result_key_length(res));
        size_t len = memcached_result_length(res), off = used;
        bool stored = false;
        for (; i != 0; i = ix.next[i - 1]) {
            struct cache_item *it = &items[i - 1];
            if (it->found)
                continue;
            if (!stored) { /* once, however many items asked for the key */
                if (cap - used < len + 1) {
                    while (cap - used < len + 1)
                        cap *= 2;
                    block = cal_realloc(block, cap);
                }
                memcpy(block + used, memcached_result_value(res), len);
                block[used + len] = '\0';
                used += len + 1;
                stored = true;
            }
            it->found = true;
            it->len = len;
            offs[i - 1] = off;
            it->cas = memcached_result_cas(res);
            nfound++;
        }
    }
    bool owner = false;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].found)
            continue;
        items[i].value = block + offs[i];
        if (offs[i] == 0 && !owner)
            owner = items[i].owns = true;
    }
    /* A server that failed or timed out while others answered costs only its
     * own keys (misses); a failure with nothing found is the cache's. */
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND && nfound == 0)
        st = fail(cache, rc, err, errlen);
out:
    if (nfound == 0)
        free(block); /* nothing points into it */
    memcached_result_free(res);
    free(keys);
    free(lens);
    free(offs);
    free(ix.slots);
    free(ix.next);
    return st;
}

void
cache_results_free(struct cache_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (items[i].owns)
            free(items[i].value);
        items[i].owns = false;
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

/* The index of key's server in mc, or nservers if it has none. */
static uint32_t
server_of(memcached_st *mc, uint32_t nservers, const char *key, size_t len)
{
    uint32_t s = memcached_generate_hash(mc, key, len);
    return s < nservers ? s : nservers;
}

cal_status
cache_delete_many(struct cache *cache, const char *const *keys, const size_t *keylens, size_t n,
                  bool *done, char *err, size_t errlen)
{
    if (done != NULL)
        memset(done, 0, n * sizeof(*done));
    if (n == 0)
        return CAL_OK;
    if (n == 1) {
        cal_status st = cache_delete(cache, keys[0], keylens[0], err, errlen);
        if (done != NULL)
            done[0] = st == CAL_OK;
        return st;
    }
    /* The deletes are buffered, without replies; then one get per server
     * that has some (of its last key) writes them all and waits for its
     * answer. A server answers a connection's requests in order, so that
     * answer means it executed every delete written before it. A server
     * that fails costs only its own keys: the others' are still confirmed. */
    memcached_st *mc = cache->bulk;
    uint32_t nservers = memcached_server_count(mc);
    /* Per server (and a last slot for a key with none): its last key, and
     * its failure. */
    uint32_t stack_last[9], *last = nservers < 9 ? stack_last : cal_malloc((nservers + 1) * 4);
    memcached_return_t stack_failed[9],
        *failed = nservers < 9 ? stack_failed : cal_malloc((nservers + 1) * sizeof(*failed));
    for (uint32_t s = 0; s <= nservers; s++) {
        last[s] = UINT32_MAX;
        failed[s] = MEMCACHED_SUCCESS;
    }
    memcached_return_t first_error = MEMCACHED_SUCCESS;
    uint32_t nfailed = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = server_of(mc, nservers, keys[i], keylens[i]);
        if (failed[s] != MEMCACHED_SUCCESS)
            continue;
        memcached_return_t rc =
            s < nservers ? memcached_delete(mc, keys[i], keylens[i], 0) : MEMCACHED_NO_SERVERS;
        if (rc == MEMCACHED_BUFFERED || rc == MEMCACHED_SUCCESS) {
            last[s] = (uint32_t)i;
            continue;
        }
        failed[s] = rc;
        nfailed++;
        if (first_error == MEMCACHED_SUCCESS)
            first_error = rc;
    }
    for (uint32_t s = 0; s < nservers; s++) {
        if (last[s] == UINT32_MAX || failed[s] != MEMCACHED_SUCCESS)
            continue;
        size_t vlen;
        uint32_t flags;
        memcached_return_t rc;
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
        if (rc != MEMCACHED_SUCCESS) {
            failed[s] = rc;
            nfailed++;
            if (first_error == MEMCACHED_SUCCESS)
                first_error = rc;
        }
    }
    for (size_t i = 0; done != NULL && i < n; i++) {
        uint32_t s = nfailed == 0 ? 0 : server_of(mc, nservers, keys[i], keylens[i]);
        done[i] = failed[s] == MEMCACHED_SUCCESS;
    }
    if (last != stack_last)
        free(last);
    if (failed != stack_failed)
        free(failed);
    if (nfailed == 0)
        return CAL_OK;
    /* Whatever was left buffered for a failed server goes with the
     * connections (every other server's was confirmed). */
    memcached_quit(mc);
    if (nservers > 1)
        snprintf(err, errlen, "memcached: %s (%u of %u servers)",
                 memcached_strerror(mc, first_error), nfailed, nservers);
    else
        snprintf(err, errlen, "memcached: %s", memcached_strerror(mc, first_error));
    return CAL_EUNAVAIL;
}

cal_status
cache_flush(struct cache *cache, char *err, size_t errlen)
{
    memcached_return_t rc = memcached_flush(cache->mc, 0);
    return rc == MEMCACHED_SUCCESS ? CAL_OK : fail(cache, rc, err, errlen);
}
