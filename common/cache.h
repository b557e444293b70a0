/* The memcached adapter (libmemcached 1.1): the only module that includes
 * libmemcached. Tight timeouts, no auto-eject; every failure becomes a
 * cal_status so callers fall back to the database. Not thread-safe: one
 * struct cache per thread (cache_create is cheap) or a pool of them. */
#ifndef CAL_CACHE_H
#define CAL_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct cache_conf {
    char servers[512];   /* "host:port[,host:port...]" */
    unsigned timeout_ms; /* connect, send and receive timeouts; 0 = 50 */
};

struct cache;

/* NULL and err filled when servers cannot be parsed. Connects lazily. */
struct cache *cache_create(const struct cache_conf *conf, char *err, size_t errlen);

/* Is servers a non-empty "host:port[,host:port...]" list (host of letters,
 * digits, '.', '-' and '_'; port 1..65535)? libmemcached's own parser
 * accepts anything, a bad port included. CAL_EINVAL and err naming the
 * first bad entry otherwise. */
cal_status cache_servers_check(const char *servers, char *err, size_t errlen);
void cache_destroy(struct cache *cache); /* cache_destroy(NULL) is a no-op */

/* One value of a multi-get: found is false on a miss. value is
 * NUL-terminated; the values of one call share one allocation, which the
 * caller frees with cache_results_free on the same items. cas is the CAS id. */
struct cache_item {
    const char *key; /* the caller's key */
    size_t keylen;
    bool found;
    bool owns; /* value is the start of the call's allocation */
    char *value;
    size_t len;
    uint64_t cas;
};

/* Fetches every key in one round trip; items[i].key/keylen set by the caller.
 * A server of the pool that fails while another answers only leaves its own
 * keys not found (CAL_OK); a failure with no key found is an error. */
cal_status cache_get_multi(struct cache *cache, struct cache_item *items, size_t n, char *err,
                           size_t errlen);
void cache_results_free(struct cache_item *items, size_t n);

/* add: CAL_OK when stored, CAL_EDUP when the key exists. */
cal_status cache_add(struct cache *cache, const char *key, size_t keylen, const char *value,
                     size_t len, unsigned ttl_s, char *err, size_t errlen);
/* cas: CAL_OK when stored, CAL_ECONFLICT when the key changed or vanished. */
cal_status cache_cas(struct cache *cache, const char *key, size_t keylen, const char *value,
                     size_t len, unsigned ttl_s, uint64_t cas, char *err, size_t errlen);
/* set: unconditional store (tests and tools). */
cal_status cache_set(struct cache *cache, const char *key, size_t keylen, const char *value,
                     size_t len, unsigned ttl_s, char *err, size_t errlen);
/* delete: CAL_OK when deleted or absent (an invalidation either way). */
cal_status cache_delete(struct cache *cache, const char *key, size_t keylen, char *err,
                        size_t errlen);
/* The deletes of n keys in one pipeline: CAL_OK once every server executed
 * them all (one round trip per server instead of one per key: the last
 * delete of each server waits for its answer, which comes after the others').
 * On an error, done (n flags, may be NULL) tells the keys whose server
 * confirmed them from the others (those of a failed server: some may have
 * been executed, none is known to be; retry them). */
cal_status cache_delete_many(struct cache *cache, const char *const *keys, const size_t *keylens,
                             size_t n, bool *done, char *err, size_t errlen);
/* flush_all: empties every server (the invalidator after lost offsets). */
cal_status cache_flush(struct cache *cache, char *err, size_t errlen);

#endif
