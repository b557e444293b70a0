/* Requests in flight per (listing, Idempotency-Key) in this daemon. */
#include "calendard/inflight.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

#define NBUCKETS 1024

struct entry {
    struct entry *next;
    uint64_t listing_id;
    bool held;            /* a request has the key; when not, a waiter is taking it */
    unsigned waiters;     /* at most INFLIGHT_MAX_WAITERS */
    pthread_cond_t freed; /* signalled when the holder releases to a waiter: one
                             key's release wakes no waiter of another */
    size_t len;
    char key[];
};

struct inflight {
    pthread_mutex_t lock;
    struct entry *buckets[NBUCKETS];
};

struct inflight *
inflight_create(void)
{
    struct inflight *set = cal_calloc(1, sizeof(*set));
    pthread_mutex_init(&set->lock, NULL);
    return set;
}

void
inflight_destroy(struct inflight *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < NBUCKETS; i++) {
        struct entry *e = set->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            pthread_cond_destroy(&e->freed);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&set->lock);
    free(set);
}

static size_t
bucket(uint64_t listing_id, const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ listing_id;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return (size_t)(h % NBUCKETS);
}

static struct entry **
find_locked(struct inflight *set, uint64_t listing_id, const char *key, size_t len)
{
    struct entry **pp = &set->buckets[bucket(listing_id, key, len)];
    while (*pp != NULL && !((*pp)->listing_id == listing_id && (*pp)->len == len &&
                            memcmp((*pp)->key, key, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

bool
inflight_acquire(struct inflight *set, uint64_t listing_id, const char *key, size_t len,
                 unsigned timeout_ms)
{
    struct timespec deadline = cal_mono_after_ms(timeout_ms);
    pthread_mutex_lock(&set->lock);
    struct entry **pp = find_locked(set, listing_id, key, len);
    struct entry *e = *pp;
    if (e == NULL) {
        e = cal_calloc(1, sizeof(*e) + len);
        e->listing_id = listing_id;
        e->held = true;
        e->len = len;
        memcpy(e->key, key, len);
        cal_cond_init_monotonic(&e->freed);
        *pp = e;
        pthread_mutex_unlock(&set->lock);
        return true;
    }
    if (e->waiters >= INFLIGHT_MAX_WAITERS) {
        pthread_mutex_unlock(&set->lock);
        return false;
    }
    /* The entry stays while it has a waiter: release hands it over. */
    e->waiters++;
    bool taken = true;
    while (e->held) {
        if (pthread_cond_timedwait(&e->freed, &set->lock, &deadline) == ETIMEDOUT && e->held) {
            taken = false;
            break;
        }
    }
    e->waiters--;
    if (taken)
        e->held = true;
    pthread_mutex_unlock(&set->lock);
    return taken;
}

void
inflight_release(struct inflight *set, uint64_t listing_id, const char *key, size_t len)
{
    pthread_mutex_lock(&set->lock);
    struct entry **pp = find_locked(set, listing_id, key, len);
    struct entry *e = *pp;
    if (e != NULL && e->waiters > 0) {
        e->held = false;
        pthread_cond_signal(&e->freed);
    } else if (e != NULL) {
        *pp = e->next;
        pthread_cond_destroy(&e->freed);
        free(e);
    }
    pthread_mutex_unlock(&set->lock);
}
