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
    size_t len;
    char key[];
};

struct inflight {
    pthread_mutex_t lock;
    pthread_cond_t released;
    struct entry *buckets[NBUCKETS];
};

struct inflight *
inflight_create(void)
{
    struct inflight *set = cal_calloc(1, sizeof(*set));
    pthread_mutex_init(&set->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&set->released, &ca);
    pthread_condattr_destroy(&ca);
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
            free(e);
            e = next;
        }
    }
    pthread_cond_destroy(&set->released);
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
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&set->lock);
    while (*find_locked(set, listing_id, key, len) != NULL) {
        if (pthread_cond_timedwait(&set->released, &set->lock, &deadline) == ETIMEDOUT &&
            *find_locked(set, listing_id, key, len) != NULL) {
            pthread_mutex_unlock(&set->lock);
            return false;
        }
    }
    struct entry *e = cal_malloc(sizeof(*e) + len);
    e->listing_id = listing_id;
    e->len = len;
    memcpy(e->key, key, len);
    struct entry **head = &set->buckets[bucket(listing_id, key, len)];
    e->next = *head;
    *head = e;
    pthread_mutex_unlock(&set->lock);
    return true;
}

void
inflight_release(struct inflight *set, uint64_t listing_id, const char *key, size_t len)
{
    pthread_mutex_lock(&set->lock);
    struct entry **pp = find_locked(set, listing_id, key, len);
    struct entry *e = *pp;
    if (e != NULL) {
        *pp = e->next;
        free(e);
    }
    pthread_cond_broadcast(&set->released);
    pthread_mutex_unlock(&set->lock);
}
