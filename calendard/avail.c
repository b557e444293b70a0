/* The availability read cache with lease-guarded fills. */
#include "calendard/avail.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/cacheval.h"
#include "calendard/metrics.h"
#include "common/cachekey.h"
#include "common/date.h"
#include "common/log.h"
#include "common/util.h"

#define POOL_MAX 256

#define PENDING_MAX 65536
#define PENDING_BUCKETS 4096 /* a power of two */
#define PENDING_RETRY_MS 50
#define PENDING_SEND_BATCH 256 /* deletes in one round trip, or between two takes of the lock */

/* A key a write changed whose delete has not been confirmed yet: queued for
 * the deleter thread, in flight, or failed (memcached down or slow) and
 * retried. Until its delete succeeds, reads of it bypass the cache and fills
 * of it are dropped, so this daemon reads its own writes without waiting
 * for memcached before it answers. Only the deleter frees one. */
struct pending {
    struct pending *next;  /* in its bucket */
    struct pending *qnext; /* in the queue, while queued */
    uint64_t gen;          /* bumped by every write of the key */
    bool queued;           /* waiting in the queue for its first send */
    size_t len;
    char key[CACHEKEY_MAX];
};

struct avail {
    struct avail_conf conf;
    bool enabled;
    pthread_mutex_t lock; /* guards pool */
    size_t npool;
    struct cache *pool[POOL_MAX];
    pthread_mutex_t pending_lock; /* guards everything below but npending */
    struct pending *pending[PENDING_BUCKETS];
    size_t npending_list;
    struct pending *qhead, **qtail; /* keys whose delete is still to be sent */
    size_t nqueued;                 /* keys in the queue */
    uint64_t qsince_us;             /* when the oldest of them came (mono us) */
    bool overflow;                  /* too many pending keys: every read bypasses the cache */
    uint64_t overflows;             /* times it overflowed: a flush clears only those before it */
    atomic_size_t npending;         /* fast path: 0 means nothing to check */
    pthread_cond_t work;            /* the deleter waits on it */
    pthread_t deleter;
    bool deleter_started;
    bool failed;              /* a delete failed since the last whole retry pass */
    uint64_t fails;           /* failed sends so far */
    uint64_t pass_fails;      /* fails when the retry pass under way began */
    size_t retry_next;        /* the bucket the retry pass under way goes on from */
    bool held;                /* avail_hold_deletes(): the queue is not sent */
    void (*on_flush)(void *); /* avail_on_flush() */
    void *on_flush_arg;
    bool stopping;
    uint64_t warn_us, warn_skipped; /* deleter thread only, unlocked: its log, once a second */
};

static struct cache *cache_borrow(struct avail *avail);
static void cache_return(struct avail *avail, struct cache *c);

size_t
avail_pending_bucket(const char *key, size_t len)
{
    return (size_t)cal_fnv1a(key, len) & (PENDING_BUCKETS - 1);
}

static struct pending **
pending_bucket(struct avail *avail, const char *key, size_t len)
{
    return &avail->pending[avail_pending_bucket(key, len)];
}

/* The entry of key (needs pending_lock), or NULL. */
static struct pending *
pending_find(struct avail *avail, const char *key, size_t len)
{
    for (struct pending *p = *pending_bucket(avail, key, len); p != NULL; p = p->next)
        if (p->len == len && memcmp(p->key, key, len) == 0)
            return p;
    return NULL;
}

static void
pending_count(struct avail *avail)
{
    atomic_store(&avail->npending, avail->npending_list + (avail->overflow ? 1 : 0));
}

/* Queues p's delete (needs pending_lock). */
static void
pending_enqueue(struct avail *avail, struct pending *p)
{
    if (p->queued)
        return;
    p->queued = true;
    p->qnext = NULL;
    if (avail->qhead == NULL)
        avail->qsince_us = cal_mono_us();
    avail->nqueued++;
    *avail->qtail = p;
    avail->qtail = &p->qnext;
}

/* Marks every key as written and queues its delete, under one take of the
 * lock; the deleter sends them. */
static void
pending_add_many(struct avail *avail, char (*keys)[CACHEKEY_MAX], const size_t *lens, size_t n)
{
    pthread_mutex_lock(&avail->pending_lock);
    bool was_empty = avail->qhead == NULL;
    for (size_t k = 0; k < n; k++) {
        struct pending *p = pending_find(avail, keys[k], lens[k]);
        if (p != NULL) {
            p->gen++; /* a delete already in flight predates this write */
        } else if (avail->npending_list >= PENDING_MAX) {
            /* Counted per key lost, not once: a flush already under way
             * may have run before this key's write, and must not clear it. */
            avail->overflows++;
            avail->overflow = true;
            continue;
        } else {
            struct pending **b = pending_bucket(avail, keys[k], lens[k]);
            p = cal_calloc(1, sizeof(*p));
            p->len = lens[k];
            memcpy(p->key, keys[k], lens[k]);
            p->next = *b;
            *b = p;
            avail->npending_list++;
        }
        pending_enqueue(avail, p);
    }
    pending_count(avail);
    /* A deleter lingering over a queue wakes when its time comes: only a
     * first key, or a full round, needs it now. */
    if (was_empty || avail->conf.delete_linger_ms == 0 || avail->nqueued >= PENDING_SEND_BATCH)
        pthread_cond_signal(&avail->work);
    pthread_mutex_unlock(&avail->pending_lock);
}

/* Is key (or everything, after an overflow) waiting for its delete? */
static bool
pending_has(struct avail *avail, const char *key, size_t len)
{
    if (atomic_load(&avail->npending) == 0)
        return false;
    pthread_mutex_lock(&avail->pending_lock);
    bool found = avail->overflow || pending_find(avail, key, len) != NULL;
    pthread_mutex_unlock(&avail->pending_lock);
    return found;
}

/* Marks in *out (allocated on first need, n entries) every item i (of nk
 * keys in ci) with a key waiting for its delete, under one take of the
 * lock. Nothing pending, the usual case: no lock, no allocation. */
static void
pending_items(struct avail *avail, const struct cache_item *ci, size_t n, size_t nk, bool **out)
{
    if (atomic_load(&avail->npending) == 0)
        return;
    if (*out == NULL)
        *out = cal_calloc(n, sizeof(**out));
    bool *o = *out;
    pthread_mutex_lock(&avail->pending_lock);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < nk && !o[i]; k++)
            o[i] = avail->overflow ||
                   pending_find(avail, ci[i * nk + k].key, ci[i * nk + k].keylen) != NULL;
    pthread_mutex_unlock(&avail->pending_lock);
}

/* Drops p (needs pending_lock) unless it was written again since gen. */
static void
pending_done(struct avail *avail, struct pending *p, uint64_t gen)
{
    if (p->gen != gen || p->queued)
        return;
    for (struct pending **pp = pending_bucket(avail, p->key, p->len); *pp != NULL;
         pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            free(p);
            avail->npending_list--;
            return;
        }
    }
}

/* Keys taken for one round of deletes, copied so no lock is held over the
 * network. */
struct send_batch {
    size_t n;
    struct pending *p[PENDING_SEND_BATCH];
    uint64_t gen[PENDING_SEND_BATCH];
    size_t len[PENDING_SEND_BATCH];
    const char *name[PENDING_SEND_BATCH];
    bool done[PENDING_SEND_BATCH]; /* its delete was confirmed */
    size_t ndone;
    char key[PENDING_SEND_BATCH][CACHEKEY_MAX];
};

static void
batch_take(struct send_batch *b, struct pending *p)
{
    b->p[b->n] = p;
    b->gen[b->n] = p->gen;
    b->len[b->n] = p->len;
    memcpy(b->key[b->n], p->key, p->len);
    b->name[b->n] = b->key[b->n];
    b->n++;
}

/* Counts a failure of the deleter's; true at most once a second, with
 * *failures the count since the last true. Deleter thread only. */
static bool
warn_due(struct avail *avail, uint64_t *failures)
{
    uint64_t now = cal_mono_us();
    avail->warn_skipped++;
    if (now - avail->warn_us < 1000000)
        return false;
    *failures = avail->warn_skipped;
    avail->warn_us = now;
    avail->warn_skipped = 0;
    return true;
}

/* Deletes b's keys in one pipelined round trip, b->done telling those
 * confirmed; true if all were (with several servers, one that fails costs
 * only its own keys). A failure is logged at most once a second. */
static bool
send_batch(struct avail *avail, struct send_batch *b)
{
    char err[256] = "no cache handle";
    struct cache *c = cache_borrow(avail);
    bool ok = false;
    if (c != NULL) {
        ok = cache_delete_many(c, b->name, b->len, b->n, b->done, err, sizeof(err)) == CAL_OK;
        cache_return(avail, c);
    } else {
        memset(b->done, 0, b->n * sizeof(*b->done));
    }
    b->ndone = 0;
    for (size_t i = 0; i < b->n; i++)
        b->ndone += b->done[i];
    if (b->ndone > 0)
        metrics_cache(CACHE_INVALIDATION, (unsigned)b->ndone);
    if (ok)
        return true;
    /* Retried every PENDING_RETRY_MS (and deleted by the CDC invalidator
     * too); until then this daemon reads the keys from the shard. */
    metrics_cache(CACHE_ERROR, 1);
    uint64_t failures;
    size_t first = 0;
    while (first + 1 < b->n && b->done[first])
        first++;
    if (warn_due(avail, &failures))
        log_warn("cache invalidation failed, retrying",
                 "keys=%zu confirmed=%zu key=%.*s failures=%llu error=\"%s\"", b->n - b->ndone,
                 b->ndone, (int)b->len[first], b->name[first], (unsigned long long)failures, err);
    return false;
}

/* Sends one round of queued deletes, up to PENDING_SEND_BATCH (needs
 * pending_lock, drops it over the network). A key whose delete failed
 * stays pending for the retries. Returns false if the send failed. */
static bool
send_queued(struct avail *avail, struct send_batch *b)
{
    b->n = 0;
    while (avail->qhead != NULL && b->n < PENDING_SEND_BATCH) {
        struct pending *p = avail->qhead;
        avail->qhead = p->qnext;
        p->queued = false;
        avail->nqueued--;
        batch_take(b, p);
    }
    if (avail->qhead == NULL)
        avail->qtail = &avail->qhead;
    pthread_mutex_unlock(&avail->pending_lock);
    bool ok = send_batch(avail, b);
    pthread_mutex_lock(&avail->pending_lock);
    for (size_t i = 0; i < b->n; i++)
        if (b->done[i])
            pending_done(avail, b->p[i], b->gen[i]);
    if (!ok) {
        avail->failed = true;
        avail->fails++;
    }
    pending_count(avail);
    return ok;
}

/* After an overflow the lost keys are unknown: flushes the whole cache
 * (needs pending_lock, drops it over the network). overflow is cleared
 * only if no key was lost since the flush began. False if the flush
 * failed. */
static bool
flush_after_overflow(struct avail *avail)
{
    uint64_t overflows = avail->overflows;
    void (*on_flush)(void *) = avail->on_flush;
    void *on_flush_arg = avail->on_flush_arg;
    pthread_mutex_unlock(&avail->pending_lock);
    if (on_flush != NULL)
        on_flush(on_flush_arg);
    char err[256] = "no cache handle";
    struct cache *c = cache_borrow(avail);
    bool flushed = c != NULL && cache_flush(c, err, sizeof(err)) == CAL_OK;
    if (c != NULL)
        cache_return(avail, c);
    uint64_t failures;
    if (flushed)
        log_info("cache flushed after too many failed invalidations", "%s", "");
    else if (warn_due(avail, &failures))
        log_warn("cache flush after too many failed invalidations failed, retrying",
                 "failures=%llu error=\"%s\"", (unsigned long long)failures, err);
    pthread_mutex_lock(&avail->pending_lock);
    if (flushed && avail->overflows == overflows)
        avail->overflow = false;
    pending_count(avail);
    /* Keys lost meanwhile (writes go on while the set is full): overflow
     * stays, and the next pass flushes again. This one still retries, so
     * the set drains and a later flush can lose nothing. */
    return flushed;
}

/* Counts the keys of bucket k still to retry (not queued: their send is
 * still to come), and with take puts them into b while it has room
 * (needs pending_lock). */
static size_t
retry_take(struct avail *avail, size_t k, struct send_batch *b, bool take)
{
    size_t m = 0;
    for (struct pending *p = avail->pending[k]; p != NULL; p = p->next) {
        if (p->queued)
            continue;
        if (take && b->n < PENDING_SEND_BATCH)
            batch_take(b, p);
        m++;
    }
    return m;
}

/* Retries the failed invalidations, a pipelined round trip per batch of
 * whole buckets, with no lock held over a network call: readers on the
 * event loops check the set meanwhile. A key written again since stays,
 * queued. A pass begins with the flush after an overflow, then goes over
 * every bucket; batches span buckets, so with a server of several down its
 * keys share round trips with the others' instead of costing one each. A
 * call returns (needs pending_lock, drops it meanwhile) after a batch that
 * confirmed none of its keys (memcached down, or the one server of them
 * that is), or after a batch when deletes are queued or the daemon stops;
 * the next call goes on from where it stopped. failed is cleared by a whole
 * pass with no failure since it began. Returns false, and the deleter waits
 * before the next call, after a batch that confirmed nothing, and at the end
 * of a pass that had a failure or left the overflow set. */
static bool
pending_retry(struct avail *avail, struct send_batch *b)
{
    if (avail->retry_next == 0) {
        if (avail->overflow && !flush_after_overflow(avail)) {
            avail->failed = true;
            return false;
        }
        avail->pass_fails = avail->fails;
    }
    for (size_t k = avail->retry_next; k < PENDING_BUCKETS;) {
        /* Whole buckets from k while they fit; a bucket alone over the
         * batch (crowded) goes in part, and again until it is empty. */
        b->n = 0;
        size_t next = k;
        bool crowded = false;
        for (; next < PENDING_BUCKETS; next++) {
            size_t m = retry_take(avail, next, b, false);
            if (m == 0)
                continue;
            if (b->n + m > PENDING_SEND_BATCH) {
                crowded = b->n == 0;
                if (crowded)
                    retry_take(avail, next, b, true);
                break;
            }
            retry_take(avail, next, b, true);
        }
        if (b->n == 0)
            break;
        pthread_mutex_unlock(&avail->pending_lock);
        bool ok = send_batch(avail, b);
        pthread_mutex_lock(&avail->pending_lock);
        for (size_t i = 0; i < b->n; i++)
            if (b->done[i])
                pending_done(avail, b->p[i], b->gen[i]);
        pending_count(avail);
        /* After a crowded bucket's part: the same bucket again if it went
         * (what was sent is gone, or queued again and skipped), the next
         * one if it failed (its failed keys would come first again). */
        k = crowded && !ok ? next + 1 : next;
        if (!ok) {
            avail->failed = true;
            avail->fails++;
            if (b->ndone == 0) { /* maybe nothing reachable: wait, then on from here */
                avail->retry_next = k;
                return false;
            }
        }
        if (avail->stopping || (avail->qhead != NULL && !avail->held)) {
            avail->retry_next = k;
            return true; /* the queue first, then on from here */
        }
    }
    avail->retry_next = 0;
    bool clean = avail->fails == avail->pass_fails;
    if (clean)
        avail->failed = false;
    return clean && !avail->overflow; /* overflow: the next pass flushes again */
}

/* Waits (needs pending_lock, dropped meanwhile) while the queue's oldest
 * key is younger than delete_linger_ms and the queue holds less than a
 * round: the writes of the next few milliseconds share its round trip (at
 * one booking in flight, a round trip and two thread wakeups per booking
 * cost about a tenth of its time). True if it waited. */
static bool
lingering(struct avail *avail)
{
    uint64_t due = avail->qsince_us + (uint64_t)avail->conf.delete_linger_ms * 1000;
    uint64_t now = cal_mono_us();
    if (now >= due || avail->nqueued >= PENDING_SEND_BATCH)
        return false;
    struct timespec ts = cal_mono_after_us(due - now);
    pthread_cond_timedwait(&avail->work, &avail->pending_lock, &ts);
    return true;
}

/* The deleter: sends queued deletes once the oldest has lingered
 * delete_linger_ms (at once when a round is full), a round at a
 * time, and between rounds goes on with the retry of failed ones, which
 * after a failure waits PENDING_RETRY_MS. At a stop it sends what is queued
 * until a send fails (the CDC invalidator covers the rest). */
static void *
deleter(void *arg)
{
    struct avail *avail = arg;
    struct send_batch *b = cal_malloc(sizeof(*b));
    uint64_t retry_at = 0; /* no retry before (mono us): memcached failed */
    pthread_mutex_lock(&avail->pending_lock);
    for (;;) {
        bool queued = avail->qhead != NULL && !avail->held;
        if (avail->stopping) {
            if (!queued || !send_queued(avail, b))
                break;
            continue;
        }
        /* During a retry pass the queue goes between its rounds as it
         * comes: a linger there would delay every round of the pass. */
        bool retry_due = (avail->failed || avail->overflow) && cal_mono_us() >= retry_at;
        if (queued && !retry_due && lingering(avail))
            continue;
        /* The first failure schedules the retry; later ones do not move
         * it, or a stream of writes to a server that is down would keep it
         * from ever running for the keys of the others. */
        bool was_failed = avail->failed;
        if (queued && !send_queued(avail, b) && !was_failed)
            retry_at = cal_mono_us() + PENDING_RETRY_MS * 1000;
        bool retry = avail->failed || avail->overflow;
        if (retry && cal_mono_us() >= retry_at) {
            if (!pending_retry(avail, b))
                retry_at = cal_mono_us() + PENDING_RETRY_MS * 1000;
            continue;
        }
        if (avail->stopping || (avail->qhead != NULL && !avail->held))
            continue;
        if (!retry) {
            pthread_cond_wait(&avail->work, &avail->pending_lock);
        } else {
            uint64_t now = cal_mono_us();
            unsigned ms = now < retry_at ? (unsigned)((retry_at - now + 999) / 1000) : 0;
            struct timespec ts = cal_mono_after_ms(ms);
            pthread_cond_timedwait(&avail->work, &avail->pending_lock, &ts);
        }
    }
    pthread_mutex_unlock(&avail->pending_lock);
    free(b);
    return NULL;
}

struct avail *
avail_create(const struct avail_conf *conf, char *err, size_t errlen)
{
    struct avail *avail = cal_calloc(1, sizeof(*avail));
    avail->conf = *conf;
    avail->enabled = conf->cache.servers[0] != '\0';
    avail->qtail = &avail->qhead;
    pthread_mutex_init(&avail->lock, NULL);
    pthread_mutex_init(&avail->pending_lock, NULL);
    cal_cond_init_monotonic(&avail->work);
    if (avail->enabled) {
        /* Validate the server list now, so a typo fails at start. */
        struct cache *c = cache_create(&conf->cache, err, errlen);
        if (c == NULL) {
            avail_destroy(avail);
            return NULL;
        }
        avail->pool[avail->npool++] = c;
        if (pthread_create(&avail->deleter, NULL, deleter, avail) != 0) {
            snprintf(err, errlen, "cannot start the cache's delete thread");
            avail_destroy(avail);
            return NULL;
        }
        avail->deleter_started = true;
    }
    return avail;
}

void
avail_destroy(struct avail *avail)
{
    if (avail == NULL)
        return;
    /* Whatever handle the deleter may hold: it is joined before they go. */
    if (avail->deleter_started) {
        pthread_mutex_lock(&avail->pending_lock);
        avail->stopping = true;
        avail->held = false; /* what is queued goes out before the end */
        pthread_cond_signal(&avail->work);
        pthread_mutex_unlock(&avail->pending_lock);
        pthread_join(avail->deleter, NULL);
    }
    for (size_t i = 0; i < avail->npool; i++)
        cache_destroy(avail->pool[i]);
    for (size_t b = 0; b < PENDING_BUCKETS; b++) {
        while (avail->pending[b] != NULL) {
            struct pending *p = avail->pending[b];
            avail->pending[b] = p->next;
            free(p);
        }
    }
    pthread_cond_destroy(&avail->work);
    pthread_mutex_destroy(&avail->pending_lock);
    pthread_mutex_destroy(&avail->lock);
    free(avail);
}

bool
avail_settle(struct avail *avail, unsigned timeout_ms)
{
    uint64_t end = cal_mono_us() + (uint64_t)timeout_ms * 1000;
    while (atomic_load(&avail->npending) != 0) {
        if (cal_mono_us() >= end)
            return false;
        cal_sleep_ms(1);
    }
    return true;
}

size_t
avail_pending_keys(struct avail *avail)
{
    return atomic_load(&avail->npending);
}

void
avail_on_flush(struct avail *avail, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&avail->pending_lock);
    avail->on_flush = fn;
    avail->on_flush_arg = arg;
    pthread_mutex_unlock(&avail->pending_lock);
}

void
avail_hold_deletes(struct avail *avail, bool hold)
{
    pthread_mutex_lock(&avail->pending_lock);
    avail->held = hold;
    pthread_cond_signal(&avail->work);
    pthread_mutex_unlock(&avail->pending_lock);
}

/* libmemcached handles are not thread-safe: each caller borrows one. */
static struct cache *
cache_borrow(struct avail *avail)
{
    char err[256];
    struct cache *c = NULL;
    pthread_mutex_lock(&avail->lock);
    if (avail->npool > 0)
        c = avail->pool[--avail->npool];
    pthread_mutex_unlock(&avail->lock);
    if (c == NULL)
        c = cache_create(&avail->conf.cache, err, sizeof(err));
    return c;
}

static void
cache_return(struct avail *avail, struct cache *c)
{
    pthread_mutex_lock(&avail->lock);
    if (avail->npool < POOL_MAX) {
        avail->pool[avail->npool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&avail->lock);
    cache_destroy(c);
}

/* First days of the months covering [from, to); returns how many. */
static size_t
months_of(int32_t from, int32_t to, int32_t *firsts)
{
    size_t n = 0;
    for (int32_t f = date_month_first(from); f < to && n < AVAIL_MAX_MONTHS; f = date_next_month(f))
        firsts[n++] = f;
    return n;
}

void
avail_span(int32_t from, int32_t to, int32_t *span_from, int32_t *span_to)
{
    int32_t firsts[AVAIL_MAX_MONTHS];
    size_t n = months_of(from, to, firsts);
    *span_from = firsts[0];
    *span_to = date_next_month(firsts[n - 1]);
}

/* Keys of one item: [0] listing, [1..] months. Returns how many. */
static size_t
item_keys(uint64_t listing_id, const int32_t *firsts, size_t nmonths, char keys[][CACHEKEY_MAX],
          size_t *lens)
{
    lens[0] = cachekey_listing(listing_id, keys[0]);
    for (size_t m = 0; m < nmonths; m++)
        lens[m + 1] = cachekey_month_of(listing_id, firsts[m], keys[m + 1]);
    return nmonths + 1;
}

/* The row as an answer: the listing key's settings and version, the
 * months' nights. Every month must carry the listing key's version: one
 * newer was filled after a change whose listing key is not deleted yet
 * (*newer), one older (bit k of *older) may predate a change that deleted
 * the listing key but not it yet (the invalidator takes a change's listing
 * row and nights rows from two topics, in either order; a month read with
 * the newer listing key would show the old nights at the new version).
 * Either is no hit, nor is a row with a value that does not decode. */
static bool
decode_hit(struct avail_item *item, struct cache_item *ci, const int32_t *firsts, size_t nk,
           unsigned *older, bool *newer)
{
    struct calendar_read *read = &item->read;
    *older = 0;
    *newer = false;
    if (!cacheval_decode_listing(ci[0].value, ci[0].len, &read->listing))
        return false;
    read->listing.listing_id = item->listing_id;
    read->nrows = 0;
    bool undecodable = false;
    for (size_t k = 1; k < nk; k++) {
        struct night_row tmp[31];
        size_t n = 0;
        uint64_t version;
        if (!cacheval_decode_month(ci[k].value, ci[k].len, firsts[k - 1], tmp, &n, 31, &version)) {
            undecodable = true; /* the others still tell older from newer */
            continue;
        }
        if (version > read->listing.version)
            *newer = true;
        else if (version < read->listing.version)
            *older |= 1u << k;
        for (size_t i = 0; i < n; i++)
            *calendar_read_add(read) = tmp[i];
    }
    if (undecodable || *newer || *older != 0)
        return false;
    read->found = true;
    return true;
}

/* Values of a row that do not decode (another release's format, a write
 * from outside the project) would keep every read of the listing on the
 * shard until they expire, since a lease is only taken for an absent key.
 * Deletes them and marks them absent, so this read leases and fills them. */
static void
drop_undecodable(struct cache *c, struct cache_item *row, const int32_t *firsts, size_t nk)
{
    const char *names[AVAIL_MAX_MONTHS + 1];
    size_t lens[AVAIL_MAX_MONTHS + 1], bad[AVAIL_MAX_MONTHS + 1], nbad = 0;
    for (size_t k = 0; k < nk; k++) {
        if (!row[k].found || cacheval_is_lease(row[k].value, row[k].len))
            continue;
        struct listing l;
        struct night_row tmp[31];
        size_t nrows = 0;
        uint64_t version;
        bool ok = k == 0 ? cacheval_decode_listing(row[0].value, row[0].len, &l)
                         : cacheval_decode_month(row[k].value, row[k].len, firsts[k - 1], tmp,
                                                 &nrows, 31, &version);
        if (!ok) {
            names[nbad] = row[k].key;
            lens[nbad] = row[k].keylen;
            bad[nbad++] = k;
        }
    }
    if (nbad == 0)
        return;
    char err[256];
    if (cache_delete_many(c, names, lens, nbad, NULL, err, sizeof(err)) != CAL_OK) {
        metrics_cache(CACHE_ERROR, 1);
        return;
    }
    for (size_t i = 0; i < nbad; i++)
        row[bad[i]].found = false;
    /* Two releases of different formats side by side (a rolling upgrade)
     * delete each other's values until it ends: one line per 10 s. */
    static atomic_ullong dropped, logged_ms;
    atomic_fetch_add_explicit(&dropped, nbad, memory_order_relaxed);
    unsigned long long now = cal_now_ms(), last = atomic_load(&logged_ms);
    if (now - last >= 10000 && atomic_compare_exchange_strong(&logged_ms, &last, now))
        log_warn("undecodable cache values deleted", "keys=%llu first=\"%.*s\"",
                 atomic_exchange(&dropped, 0), (int)lens[0], names[0]);
}

/* Is every key of the row there with a value (not a lease)? */
static bool
row_present(const struct cache_item *row, size_t nk)
{
    for (size_t k = 0; k < nk; k++)
        if (!row[k].found || cacheval_is_lease(row[k].value, row[k].len))
            return false;
    return true;
}

void
avail_lookup(struct avail *avail, struct avail_item *items, size_t n, int32_t from, int32_t to)
{
    int32_t firsts[AVAIL_MAX_MONTHS];
    size_t nmonths = months_of(from, to, firsts), nk = nmonths + 1;
    for (size_t i = 0; i < n; i++) {
        items[i].hit = false;
        items[i].owned = 0;
        items[i].absent = 0;
        items[i].stale = 0;
        items[i].token = 0;
    }
    if (!avail->enabled || n == 0)
        return;
    struct cache *c = cache_borrow(avail);
    if (c == NULL) {
        metrics_cache(CACHE_ERROR, 1);
        return;
    }
    char(*keys)[CACHEKEY_MAX] = cal_malloc(n * nk * CACHEKEY_MAX);
    size_t *lens = cal_malloc(n * nk * sizeof(*lens));
    struct cache_item *ci = cal_calloc(n * nk, sizeof(*ci));
    char err[256];
    for (size_t i = 0; i < n; i++) {
        item_keys(items[i].listing_id, firsts, nmonths, keys + i * nk, lens + i * nk);
        for (size_t k = 0; k < nk; k++) {
            ci[i * nk + k].key = keys[i * nk + k];
            ci[i * nk + k].keylen = lens[i * nk + k];
        }
    }
    /* A key whose invalidation is still pending may hold a value older
     * than this daemon's own write: read the shard, fill nothing. Asked
     * before the get as well as after: a retried delete that lands between
     * the get and the question would otherwise pass the old value. */
    bool *bypass = NULL;
    pending_items(avail, ci, n, nk, &bypass);
    if (cache_get_multi(c, ci, n * nk, err, sizeof(err)) != CAL_OK) {
        metrics_cache(CACHE_ERROR, 1);
        goto out; /* every item is a miss without leases: the shards answer */
    }
    pending_items(avail, ci, n, nk, &bypass);
    unsigned hits = 0, misses = 0;
    for (size_t i = 0; i < n; i++) {
        struct cache_item *row = ci + i * nk;
        if (bypass != NULL && bypass[i]) {
            misses += (unsigned)nk;
            continue;
        }
        bool complete = row_present(row, nk), newer = false;
        unsigned older = 0;
        if (complete && decode_hit(&items[i], row, firsts, nk, &older, &newer)) {
            items[i].hit = true;
            hits += (unsigned)nk;
            continue;
        }
        drop_undecodable(c, row, firsts, nk);
        /* Months older than their listing key are leased by the lease step
         * over the value the lookup saw (cas: never over a newer fill) and
         * filled from this read; with a month newer than the listing key,
         * the listing key's own delete is on the way and nothing is. */
        for (size_t k = 1; k < nk && !newer; k++) {
            if ((older & (1u << k)) && row[k].found) {
                items[i].stale |= 1u << k;
                items[i].stale_cas[k] = row[k].cas;
            }
        }
        /* Every value there and decodable, and still no answer: a month
         * newer than its listing key. The shard answers, nothing is filled:
         * misses, every key of it. */
        if (complete && row_present(row, nk) && items[i].stale == 0) {
            misses += (unsigned)nk;
            continue;
        }
        for (size_t k = 0; k < nk; k++) {
            if (items[i].stale & (1u << k)) {
                misses++;
                items[i].absent |= 1u << k;
                continue;
            }
            if (row[k].found && !cacheval_is_lease(row[k].value, row[k].len)) {
                hits++;
                continue; /* present and valid: nothing to fill */
            }
            misses++;
            /* Someone else's lease: read the shard without filling. */
            if (!row[k].found)
                items[i].absent |= 1u << k;
        }
    }
    metrics_cache(CACHE_HIT, hits);
    metrics_cache(CACHE_MISS, misses);
out:
    free(bypass);
    cache_results_free(ci, n * nk);
    free(ci);
    free(keys);
    free(lens);
    cache_return(avail, c);
}

void
avail_lease(struct avail *avail, struct avail_item *items, size_t n, int32_t from, int32_t to)
{
    int32_t firsts[AVAIL_MAX_MONTHS];
    size_t nmonths = months_of(from, to, firsts);
    bool any = false;
    for (size_t i = 0; i < n && !any; i++)
        any = !items[i].hit && items[i].absent != 0;
    if (!avail->enabled || !any)
        return;
    struct cache *c = cache_borrow(avail);
    if (c == NULL) {
        metrics_cache(CACHE_ERROR, 1);
        return;
    }
    char err[256], lease[32];
    for (size_t i = 0; i < n; i++) {
        struct avail_item *it = &items[i];
        if (it->hit || it->absent == 0)
            continue;
        char keys[AVAIL_MAX_MONTHS + 1][CACHEKEY_MAX];
        size_t lens[AVAIL_MAX_MONTHS + 1];
        size_t nk = item_keys(it->listing_id, firsts, nmonths, keys, lens);
        it->token = cal_rand64() | 1;
        size_t llen = cacheval_lease(it->token, lease, sizeof(lease));
        for (size_t k = 0; k < nk; k++) {
            if (!(it->absent & (1u << k)))
                continue;
            /* A stale month deleted since the lookup (its invalidation
             * landed) is absent now: leased as any absent key. */
            cal_status st = CAL_ECONFLICT;
            if (it->stale & (1u << k))
                st = cache_cas(c, keys[k], lens[k], lease, llen, avail->conf.lease_ttl_s,
                               it->stale_cas[k], err, sizeof(err));
            if (st == CAL_ECONFLICT)
                st = cache_add(c, keys[k], lens[k], lease, llen, avail->conf.lease_ttl_s, err,
                               sizeof(err));
            if (st == CAL_OK)
                it->owned |= 1u << k;
            else if (st != CAL_EDUP && st != CAL_ECONFLICT)
                metrics_cache(CACHE_ERROR, 1);
        }
    }
    cache_return(avail, c);
}

void
avail_fill(struct avail *avail, struct avail_item *items, size_t n, int32_t from, int32_t to)
{
    int32_t firsts[AVAIL_MAX_MONTHS];
    size_t nmonths = months_of(from, to, firsts), nk = nmonths + 1;
    size_t nowned = 0;
    /* What a fenced or replaced server answered may be older than the
     * shard (maybe_stale, struct calendar_read): answered, never cached. */
    for (size_t i = 0; i < n; i++)
        if (items[i].owned != 0 && items[i].read.found && !items[i].read.maybe_stale)
            nowned += (size_t)__builtin_popcount(items[i].owned);
    if (!avail->enabled || nowned == 0)
        return;
    struct cache *c = cache_borrow(avail);
    if (c == NULL)
        return;
    struct cache_item *ci = cal_calloc(nowned, sizeof(*ci));
    char(*keys)[CACHEKEY_MAX] = cal_malloc(nowned * CACHEKEY_MAX);
    size_t *owner = cal_malloc(nowned * sizeof(*owner)), *slot = cal_malloc(nowned * sizeof(*slot));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].owned == 0 || !items[i].read.found || items[i].read.maybe_stale)
            continue;
        char ikeys[AVAIL_MAX_MONTHS + 1][CACHEKEY_MAX];
        size_t ilens[AVAIL_MAX_MONTHS + 1];
        item_keys(items[i].listing_id, firsts, nmonths, ikeys, ilens);
        for (size_t k = 0; k < nk; k++) {
            if (!(items[i].owned & (1u << k)))
                continue;
            memcpy(keys[m], ikeys[k], CACHEKEY_MAX);
            ci[m].key = keys[m];
            ci[m].keylen = ilens[k];
            owner[m] = i;
            slot[m] = k;
            m++;
        }
    }
    char err[256], lease[32], val[CACHEVAL_MAX];
    unsigned fills = 0, stale = 0;
    if (cache_get_multi(c, ci, m, err, sizeof(err)) != CAL_OK) {
        metrics_cache(CACHE_ERROR, 1);
        goto out;
    }
    for (size_t j = 0; j < m; j++) {
        struct avail_item *it = &items[owner[j]];
        size_t llen = cacheval_lease(it->token, lease, sizeof(lease));
        /* Gone (deleted by an invalidation) or replaced, or its
         * invalidation still pending: our read may be stale. */
        if (!ci[j].found || ci[j].len != llen || memcmp(ci[j].value, lease, llen) != 0 ||
            pending_has(avail, ci[j].key, ci[j].keylen)) {
            stale++;
            continue;
        }
        size_t vlen = slot[j] == 0
                          ? cacheval_encode_listing(&it->read.listing, val, sizeof(val))
                          : cacheval_encode_month(it->read.listing.version, firsts[slot[j] - 1],
                                                  it->read.rows, it->read.nrows, val, sizeof(val));
        if (vlen == 0)
            continue;
        cal_status st = cache_cas(c, ci[j].key, ci[j].keylen, val, vlen, avail->conf.ttl_s,
                                  ci[j].cas, err, sizeof(err));
        if (st == CAL_OK)
            fills++;
        else if (st == CAL_ECONFLICT)
            stale++;
        else
            metrics_cache(CACHE_ERROR, 1);
    }
    metrics_cache(CACHE_FILL, fills);
    metrics_cache(CACHE_STALE_FILL, stale);
out:
    cache_results_free(ci, m);
    free(ci);
    free(keys);
    free(owner);
    free(slot);
    cache_return(avail, c);
}

void
avail_invalidate(struct avail *avail, uint64_t listing_id, int32_t from, int32_t to)
{
    struct avail_stay stay = {.listing_id = listing_id, .from = from, .to = to};
    avail_invalidate_many(avail, &stay, 1);
}

void
avail_invalidate_many(struct avail *avail, const struct avail_stay *stays, size_t n)
{
    if (!avail->enabled || n == 0)
        return;
    enum { PER_STAY = AVAIL_MAX_MONTHS + 1 };
    char(*keys)[CACHEKEY_MAX] = cal_malloc(n * PER_STAY * sizeof(*keys));
    size_t *lens = cal_malloc(n * PER_STAY * sizeof(*lens));
    size_t nk = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t firsts[AVAIL_MAX_MONTHS];
        size_t nmonths =
            stays[i].from < stays[i].to ? months_of(stays[i].from, stays[i].to, firsts) : 0;
        nk += item_keys(stays[i].listing_id, firsts, nmonths, keys + nk, lens + nk);
    }
    pending_add_many(avail, keys, lens, nk);
    free(keys);
    free(lens);
}
