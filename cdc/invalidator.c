/* The invalidator's consume loop (see invalidator.h). */
#include "cdc/invalidator.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/event.h"
#include "cdc/invalidate.h"
#include "cdc/redelete.h"
#include "common/log.h"
#include "common/util.h"

#define MAX_LAG_PARTITIONS 1024
#define LOG_LAG_PARTITIONS 16 /* listed in the progress line; the rest only counted */
#define UNASSIGNED_WARN_MIN_S 10
#define POLL_MS 100
#define BATCH_MAX 256                                /* messages acted on together */
#define BATCH_KEYS (BATCH_MAX * INVALIDATE_MAX_KEYS) /* distinct keys of a batch, at most */
#define KEYSET_SLOTS (4 * BATCH_KEYS)                /* power of two, load <= 1/4 */
#define REDELETE_ROUND_MAX 4096 /* second deletes in one round trip; >= BATCH_KEYS */
/* A second delete due waits up to this long for a batch to ride along with
 * before it takes a round trip of its own: at most 1000 / REDELETE_SLACK_MS
 * such round trips a second, whatever the rate of batches. */
#define REDELETE_SLACK_MS 50
/* A batch's keys always fit: in one take, and in the smallest queue. */
_Static_assert(REDELETE_ROUND_MAX >= BATCH_KEYS, "a batch's keys must fit in a take");
_Static_assert(INVALIDATOR_REDELETE_MIN >= BATCH_KEYS, "a batch's keys must fit in the queue");

struct invalidator {
    struct invalidator_conf conf;
    struct kconsumer *kc;
    struct cache *cache;
    struct invstats *stats;
    unsigned failures;                    /* consecutive failed invalidations */
    uint64_t failing_since_us;            /* monotonic; 0 when memcached answers */
    bool seen[INVALIDATE_TABLE_COUNT][6]; /* event types already logged at info */
    struct kconsumer_lag *lags;
    struct kconsumer_msg *batch;  /* BATCH_MAX */
    struct invalidate_event *evs; /* BATCH_MAX, decoded from batch */
    bool *decoded;                /* BATCH_MAX */
    const char **keyset;          /* KEYSET_SLOTS: distinct keys of a batch */
    /* BATCH_KEYS + REDELETE_ROUND_MAX: the same keys, in first-seen order,
     * then the second deletes that go in the same pipeline; done: which
     * ones memcached confirmed. */
    const char **keys;
    size_t *keylens;
    bool *done;
    struct redelete *redeletes; /* keys waiting for their second delete; NULL: none */
    const char **rkeys;         /* REDELETE_ROUND_MAX: a round of second deletes alone */
    size_t *rkeylens;
    bool *rdone;
    bool redelete_failing;   /* the last round of second deletes failed (warned) */
    uint64_t hinted, parsed; /* events decoded from the relay's hint / from JSON, this window */
    uint64_t unassigned_since_us; /* monotonic: since when no partition is ours; 0 while some are */
    uint64_t unassigned_warned_us;   /* when that was last warned of */
    uint64_t undecodable_logged_us;  /* monotonic: the last undecodable event logged */
    uint64_t undecodable_suppressed; /* not logged since */
};

struct invalidator *
invalidator_create(const struct invalidator_conf *conf, struct invstats *stats, char *err,
                   size_t errlen)
{
    struct cache *cache = cache_create(&conf->cache, err, errlen);
    if (cache == NULL)
        return NULL;
    struct kconsumer *kc = kconsumer_create(&conf->kafka, err, errlen);
    if (kc == NULL) {
        cache_destroy(cache);
        return NULL;
    }
    struct invalidator *inv = cal_calloc(1, sizeof(*inv));
    inv->conf = *conf;
    inv->kc = kc;
    inv->cache = cache;
    inv->stats = stats;
    inv->lags = cal_malloc(MAX_LAG_PARTITIONS * sizeof(*inv->lags));
    inv->batch = cal_calloc(BATCH_MAX, sizeof(*inv->batch));
    inv->evs = cal_malloc(BATCH_MAX * sizeof(*inv->evs));
    inv->decoded = cal_malloc(BATCH_MAX * sizeof(*inv->decoded));
    inv->keyset = cal_calloc(KEYSET_SLOTS, sizeof(*inv->keyset));
    inv->keys = cal_malloc((BATCH_KEYS + REDELETE_ROUND_MAX) * sizeof(*inv->keys));
    inv->keylens = cal_malloc((BATCH_KEYS + REDELETE_ROUND_MAX) * sizeof(*inv->keylens));
    inv->done = cal_malloc((BATCH_KEYS + REDELETE_ROUND_MAX) * sizeof(*inv->done));
    if (conf->redelete_ms > 0) {
        assert(conf->redelete_max_keys >= INVALIDATOR_REDELETE_MIN);
        inv->redeletes = redelete_create(conf->redelete_max_keys);
        inv->rkeys = cal_malloc(REDELETE_ROUND_MAX * sizeof(*inv->rkeys));
        inv->rkeylens = cal_malloc(REDELETE_ROUND_MAX * sizeof(*inv->rkeylens));
        inv->rdone = cal_malloc(REDELETE_ROUND_MAX * sizeof(*inv->rdone));
    }
    inv->unassigned_since_us = cal_mono_us();
    return inv;
}

static void drain_redeletes(struct invalidator *inv);

void
invalidator_destroy(struct invalidator *inv)
{
    if (inv == NULL)
        return;
    char err[256];
    if (kconsumer_close(inv->kc, err, sizeof(err)) != CAL_OK)
        log_warn("consumer close", "error=\"%s\"", err);
    else
        log_info("consumer closed", "%s", "offsets=committed");
    kconsumer_destroy(inv->kc);
    drain_redeletes(inv);
    cache_destroy(inv->cache);
    free(inv->lags);
    free(inv->batch);
    free(inv->evs);
    free(inv->decoded);
    free(inv->keyset);
    free(inv->keys);
    free(inv->keylens);
    free(inv->done);
    redelete_destroy(inv->redeletes);
    free(inv->rkeys);
    free(inv->rkeylens);
    free(inv->rdone);
    free(inv);
}

bool
invalidator_ready(const struct invalidator *inv)
{
    return kconsumer_joined(inv->kc);
}

/* Full jitter in [d/2, d], d doubling from retry_base_ms up to retry_max_ms. */
static unsigned
backoff_ms(const struct invalidator *inv)
{
    uint64_t d = inv->conf.retry_base_ms;
    for (unsigned i = 1; i < inv->failures && d < inv->conf.retry_max_ms; i++)
        d *= 2;
    if (d > inv->conf.retry_max_ms)
        d = inv->conf.retry_max_ms;
    if (d < 2)
        return (unsigned)d;
    return (unsigned)(d / 2 + cal_rand64() % (d / 2 + 1));
}

static int
op_index(char op)
{
    const char *ops = "cudrt";
    const char *p = op != 0 ? strchr(ops, op) : NULL;
    return p != NULL ? (int)(p - ops) : 5;
}

/* Deletes every key of ev (flushes first if asked). */
static cal_status
apply(struct invalidator *inv, const struct invalidate_event *ev, char *err, size_t errlen)
{
    if (ev->flush_all) {
        cal_status st = cache_flush(inv->cache, err, errlen);
        if (st != CAL_OK)
            return st;
        invstats_flush(inv->stats);
    }
    for (size_t i = 0; i < ev->nkeys; i++) {
        cal_status st = cache_delete(inv->cache, ev->keys[i], ev->keylens[i], err, errlen);
        if (st != CAL_OK)
            return st;
    }
    return CAL_OK;
}

/* The relay's hint header when it has one (no JSON to parse), else the
 * value. */
static cal_status
decode(struct invalidator *inv, const struct kconsumer_msg *msg, struct invalidate_event *ev,
       char *err, size_t errlen)
{
    const void *hint;
    size_t len;
    if (kconsumer_header(msg, EVENT_HINT_HEADER, &hint, &len) &&
        invalidate_decode_hint(hint, len, ev, err, errlen) == CAL_OK) {
        inv->hinted++;
        return CAL_OK;
    }
    inv->parsed++;
    return invalidate_decode(msg->topic, msg->value, msg->len, ev, err, errlen);
}

static void
store(struct invalidator *inv, struct kconsumer_msg *msg)
{
    char err[256];
    /* Never past a message still held for its retry. */
    if (kconsumer_behind_held(inv->kc, msg)) {
        kconsumer_retry(inv->kc, msg, 0, err, sizeof(err));
        return;
    }
    if (msg->gap_from >= 0) {
        /* Events of this partition were dropped by the broker before we read
         * them (or may have been: its committed offset was unknown, or its
         * offsets went back): what they changed is unknown, so everything
         * goes, before any offset passes them. */
        if (cache_flush(inv->cache, err, sizeof(err)) != CAL_OK) {
            invstats_error(inv->stats, INVSTATS_ERR_CACHE);
            inv->failures++;
            kconsumer_retry(inv->kc, msg, backoff_ms(inv), err, sizeof(err));
            return;
        }
        invstats_flush(inv->stats);
        invstats_error(inv->stats, INVSTATS_ERR_GAP);
        if (msg->gap_from > msg->offset)
            log_warn("cache flushed: the partition's offsets went back, events may be lost",
                     "topic=%s partition=%d expected_offset=%lld offset=%lld", msg->topic,
                     (int)msg->partition, (long long)msg->gap_from, (long long)msg->offset);
        else
            log_warn("cache flushed: events were lost before this one",
                     "topic=%s partition=%d lost_offsets=%lld-%lld", msg->topic,
                     (int)msg->partition, (long long)msg->gap_from, (long long)msg->offset - 1);
    }
    cal_status st = kconsumer_store(inv->kc, msg, err, sizeof(err));
    if (st == CAL_ENOTFOUND) {
        log_debug("offset not stored", "reason=\"%s\"", err); /* revoked meanwhile */
    } else if (st != CAL_OK) {
        invstats_error(inv->stats, INVSTATS_ERR_STORE);
        log_warn("offset store failed", "error=\"%s\"", err);
    }
}

/* memcached answered again after failures: log how long it failed. */
static void
cache_recovered(struct invalidator *inv)
{
    if (inv->failing_since_us != 0) {
        log_info("invalidations resumed", "failed_for_ms=%llu attempts=%u",
                 (unsigned long long)((cal_mono_us() - inv->failing_since_us) / 1000),
                 inv->failures);
        inv->failing_since_us = 0;
    }
    inv->failures = 0;
}

/* Undecodable events are logged a line a second at most: a topic of events
 * this invalidator cannot read (another converter's, say) must not flood
 * the log. Each is counted all the same. True when one is due, with
 * *suppressed the events not logged since the last. */
static bool
undecodable_log_due(struct invalidator *inv, unsigned long long *suppressed)
{
    uint64_t now = cal_mono_us();
    if (inv->undecodable_logged_us != 0 && now - inv->undecodable_logged_us < 1000000) {
        inv->undecodable_suppressed++;
        return false;
    }
    *suppressed = inv->undecodable_suppressed;
    inv->undecodable_suppressed = 0;
    inv->undecodable_logged_us = now;
    return true;
}

/* ev's keys are gone: counts it, logs it, stores msg's offset. A partial
 * event (one image undecodable, the other's keys deleted) is also counted
 * and logged as undecodable: what its bad image named may still be cached. */
static void
account(struct invalidator *inv, struct kconsumer_msg *msg, const struct invalidate_event *ev)
{
    unsigned long long suppressed;
    if (ev->partial) {
        invstats_error(inv->stats, INVSTATS_ERR_UNDECODABLE);
        if (undecodable_log_due(inv, &suppressed)) {
            /* decoded again for the reason: rare, and keeps evs small */
            struct invalidate_event again;
            char why[256] = "";
            (void)invalidate_decode(msg->topic, msg->value, msg->len, &again, why, sizeof(why));
            log_warn("event partly undecodable: the other image's keys deleted",
                     "topic=%s partition=%d offset=%lld keys=%zu reason=\"%s\" "
                     "undecodable_not_logged=%llu",
                     msg->topic, (int)msg->partition, (long long)msg->offset, ev->nkeys, why,
                     suppressed);
        } else {
            log_debug("event partly undecodable: the other image's keys deleted",
                      "topic=%s partition=%d offset=%lld keys=%zu", msg->topic, (int)msg->partition,
                      (long long)msg->offset, ev->nkeys);
        }
    }
    invstats_event(inv->stats, ev->table);
    int64_t now = (int64_t)cal_now_ms(), commit_ms = -1, produce_ms = -1;
    if (ev->source_ts_ms >= 0)
        commit_ms = now > ev->source_ts_ms ? now - ev->source_ts_ms : 0;
    if (msg->timestamp_ms > 0)
        produce_ms = now > msg->timestamp_ms ? now - msg->timestamp_ms : 0;
    if (ev->nkeys > 0 || ev->flush_all)
        invstats_latency(inv->stats, commit_ms, produce_ms);
    long long latency_ms = produce_ms >= 0 ? produce_ms : commit_ms;
    int oi = op_index(ev->op);
    if (!inv->seen[ev->table][oi]) {
        inv->seen[ev->table][oi] = true;
        log_info("first event of this type",
                 "table=%s op=%c keys=%zu topic=%s partition=%d "
                 "offset=%lld",
                 invalidate_table_name(ev->table), ev->op != 0 ? ev->op : '-', ev->nkeys,
                 msg->topic, (int)msg->partition, (long long)msg->offset);
    }
    log_debug("event", "table=%s op=%c keys=%zu topic=%s partition=%d offset=%lld latency_ms=%lld",
              invalidate_table_name(ev->table), ev->op != 0 ? ev->op : '-', ev->nkeys, msg->topic,
              (int)msg->partition, (long long)msg->offset, latency_ms);
    store(inv, msg);
}

/* A message that cannot be decoded is skipped, not retried: no later attempt
 * can decode it, and retrying would stall every event behind it on its
 * partition. It is logged with its coordinates for a manual replay: at warn
 * a line a second at most, the others at debug. why NULL: the reason is not
 * at hand, and is found again only for a line that is written. */
static void
skip_undecodable(struct invalidator *inv, struct kconsumer_msg *msg, const char *why)
{
    invstats_error(inv->stats, INVSTATS_ERR_UNDECODABLE);
    unsigned long long suppressed;
    bool due = undecodable_log_due(inv, &suppressed);
    char again[256] = "";
    if (why == NULL && (due || log_enabled(LOG_DEBUG))) {
        /* decoded again for the reason, only for a line that is written:
         * a topic full of unreadable events costs one parse a message */
        struct invalidate_event ev;
        (void)invalidate_decode(msg->topic, msg->value, msg->len, &ev, again, sizeof(again));
    }
    if (why == NULL)
        why = again;
    if (due)
        log_warn("undecodable event skipped",
                 "topic=%s partition=%d offset=%lld reason=\"%s\" undecodable_not_logged=%llu",
                 msg->topic, (int)msg->partition, (long long)msg->offset, why, suppressed);
    else
        log_debug("undecodable event skipped", "topic=%s partition=%d offset=%lld reason=\"%s\"",
                  msg->topic, (int)msg->partition, (long long)msg->offset, why);
    store(inv, msg);
}

/* Takes the second deletes due now into keys (at most REDELETE_ROUND_MAX),
 * and the oldest ones early when reserve more keys must fit in the queue;
 * *early: how many (the last ones) were not due yet. */
static size_t
take_redeletes(struct invalidator *inv, size_t reserve, const char **keys, size_t *keylens,
               size_t *early)
{
    *early = 0;
    if (inv->redeletes == NULL)
        return 0;
    return redelete_take(inv->redeletes, cal_mono_us(), reserve, keys, keylens, REDELETE_ROUND_MAX,
                         early);
}

/* Counts n second deletes sent (done[i]: confirmed), of which the last
 * early went before their time. An unconfirmed one is dropped: the second
 * delete is best-effort, and memcached failing fails the fills too. */
static void
count_redeletes(struct invalidator *inv, const bool *done, size_t n, size_t early, cal_status st,
                const char *err)
{
    if (n == 0)
        return;
    size_t deleted = 0, ahead = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!done[i])
            failed++;
        else if (i >= n - early)
            ahead++;
        else
            deleted++;
    }
    invstats_redeletes(inv->stats, INVSTATS_REDELETE_DELETED, deleted);
    invstats_redeletes(inv->stats, INVSTATS_REDELETE_EARLY, ahead);
    invstats_redeletes(inv->stats, INVSTATS_REDELETE_FAILED, failed);
    if (failed > 0 && !inv->redelete_failing)
        log_warn("second deletes failed, dropped", "keys=%zu of=%zu error=\"%s\"", failed, n,
                 st != CAL_OK ? err : "");
    else if (failed > 0)
        log_debug("second deletes failed, dropped", "keys=%zu of=%zu error=\"%s\"", failed, n,
                  st != CAL_OK ? err : "");
    inv->redelete_failing = failed > 0;
}

/* A round trip of second deletes alone: those due now, and the oldest early
 * when reserve more keys must fit. False when memcached failed some. */
static bool
redelete_round(struct invalidator *inv, size_t reserve)
{
    size_t early, n = take_redeletes(inv, reserve, inv->rkeys, inv->rkeylens, &early);
    if (n == 0)
        return true;
    char err[256] = "";
    cal_status st =
        cache_delete_many(inv->cache, inv->rkeys, inv->rkeylens, n, inv->rdone, err, sizeof(err));
    count_redeletes(inv, inv->rdone, n, early, st, err);
    return st == CAL_OK;
}

/* Queues keys (deleted once just now) for their second delete, making room
 * first with a round of the oldest early if the queue is full. */
static void
queue_redeletes(struct invalidator *inv, const char *const *keys, const size_t *keylens, size_t n)
{
    if (inv->redeletes == NULL || n == 0)
        return;
    if (redelete_room(inv->redeletes) < n)
        (void)redelete_round(inv, n);
    size_t queued = redelete_push(inv->redeletes, keys, keylens, n,
                                  cal_mono_us() + (uint64_t)inv->conf.redelete_ms * 1000);
    assert(queued == n);
    (void)queued;
}

/* Stopping: the keys still queued get their second delete at its time (a
 * restart must not reopen the window it closes), at most redelete_ms from
 * now; if memcached fails meanwhile, the rest is dropped (counted failed). */
static void
drain_redeletes(struct invalidator *inv)
{
    if (inv->redeletes == NULL || redelete_len(inv->redeletes) == 0)
        return;
    size_t queued = redelete_len(inv->redeletes);
    uint64_t start = cal_mono_us();
    bool ok = true;
    while (ok && redelete_len(inv->redeletes) > 0) {
        uint64_t now = cal_mono_us(), due = redelete_next_due(inv->redeletes);
        if (due > now)
            cal_sleep_ms((unsigned)((due - now + 999) / 1000));
        ok = redelete_round(inv, 0);
    }
    size_t dropped = 0, n, early;
    while ((n = redelete_take(inv->redeletes, UINT64_MAX, 0, inv->rkeys, inv->rkeylens,
                              REDELETE_ROUND_MAX, &early)) > 0)
        dropped += n;
    invstats_redeletes(inv->stats, INVSTATS_REDELETE_FAILED, dropped);
    log_info("second deletes done before stopping", "keys=%zu dropped=%zu waited_ms=%llu", queued,
             dropped, (unsigned long long)((cal_mono_us() - start) / 1000));
}

/* Acts on one message: deletes its keys, or holds it for a retry. False
 * when memcached failed it (it is held then). */
static bool
handle(struct invalidator *inv, struct kconsumer_msg *msg)
{
    char err[256];
    struct invalidate_event ev;
    if (decode(inv, msg, &ev, err, sizeof(err)) != CAL_OK) {
        skip_undecodable(inv, msg, err);
        return true;
    }
    cal_status st = apply(inv, &ev, err, sizeof(err));
    if (st != CAL_OK) {
        invstats_error(inv->stats, INVSTATS_ERR_CACHE);
        inv->failures++;
        unsigned delay = backoff_ms(inv);
        if (inv->failing_since_us == 0) {
            inv->failing_since_us = cal_mono_us();
            log_warn("invalidation failed, retrying",
                     "topic=%s partition=%d offset=%lld error=\"%s\"", msg->topic,
                     (int)msg->partition, (long long)msg->offset, err);
        } else {
            log_debug("invalidation retry failed",
                      "offset=%lld attempt=%u delay_ms=%u error=\"%s\"", (long long)msg->offset,
                      inv->failures, delay, err);
        }
        kconsumer_retry(inv->kc, msg, delay, err, sizeof(err));
        return false;
    }
    cache_recovered(inv);
    invstats_invalidations(inv->stats, ev.nkeys);
    const char *keys[INVALIDATE_MAX_KEYS];
    for (size_t i = 0; i < ev.nkeys; i++)
        keys[i] = ev.keys[i];
    queue_redeletes(inv, keys, ev.keylens, ev.nkeys);
    account(inv, msg, &ev);
    return true;
}

/* Adds ev's keys to the batch's distinct keys; returns how many there are. */
static size_t
collect_keys(struct invalidator *inv, const struct invalidate_event *ev, size_t nkeys)
{
    for (size_t k = 0; k < ev->nkeys; k++) {
        const char *key = ev->keys[k];
        size_t len = ev->keylens[k];
        size_t slot = (size_t)cal_fnv1a(key, len) & (KEYSET_SLOTS - 1);
        while (inv->keyset[slot] != NULL &&
               !(strlen(inv->keyset[slot]) == len && memcmp(inv->keyset[slot], key, len) == 0))
            slot = (slot + 1) & (KEYSET_SLOTS - 1);
        if (inv->keyset[slot] == NULL) {
            inv->keyset[slot] = key;
            inv->keys[nkeys] = key;
            inv->keylens[nkeys++] = len;
        }
    }
    return nkeys;
}

/* Acts on a batch of messages together: one delete per distinct key (a
 * booking's listing, nights and reservation events share their keys), then
 * every offset is stored, and the keys are queued for their second delete.
 * The second deletes due now go in the same pipeline (with the oldest early
 * when the queue lacks room for this batch's keys). If memcached fails,
 * nothing of the batch is stored and each message goes the one-at-a-time
 * way of handle(), with its retries and backoff; the messages of a
 * partition behind a held one wait behind it. */
static void
handle_batch(struct invalidator *inv, struct kconsumer_msg *msgs, size_t n)
{
    char err[256];
    size_t nkeys = 0;
    bool flush = false;
    for (size_t i = 0; i < n; i++) {
        inv->decoded[i] = decode(inv, &msgs[i], &inv->evs[i], err, sizeof(err)) == CAL_OK;
        if (inv->decoded[i]) {
            flush = flush || inv->evs[i].flush_all;
            nkeys = collect_keys(inv, &inv->evs[i], nkeys);
        }
    }
    memset(inv->keyset, 0, KEYSET_SLOTS * sizeof(*inv->keyset));
    size_t early, nre = take_redeletes(inv, nkeys, &inv->keys[nkeys], &inv->keylens[nkeys], &early);
    memset(inv->done, 0, (nkeys + nre) * sizeof(*inv->done));
    cal_status st = flush ? cache_flush(inv->cache, err, sizeof(err)) : CAL_OK;
    if (st == CAL_OK && flush)
        invstats_flush(inv->stats);
    if (st == CAL_OK)
        st = cache_delete_many(inv->cache, inv->keys, inv->keylens, nkeys + nre, inv->done, err,
                               sizeof(err));
    count_redeletes(inv, &inv->done[nkeys], nre, early, st, err);
    if (st != CAL_OK) {
        /* One by one, until one fails: memcached is still failing then, and
         * the rest wait for the same retry rather than each paying its own
         * timeout and raising the backoff once more. */
        log_debug("batch invalidation failed, one by one now", "messages=%zu error=\"%s\"", n, err);
        bool down = false;
        unsigned delay = 0;
        for (size_t i = 0; i < n; i++) {
            if (kconsumer_behind_held(inv->kc, &msgs[i])) {
                kconsumer_retry(inv->kc, &msgs[i], 0, err, sizeof(err));
            } else if (down && inv->decoded[i]) {
                invstats_error(inv->stats, INVSTATS_ERR_CACHE);
                kconsumer_retry(inv->kc, &msgs[i], delay, err, sizeof(err));
            } else if (!handle(inv, &msgs[i])) {
                /* Its own outcome: a success before it reset the count. An
                 * undecodable one is skipped (and counted so) whatever the
                 * cache does. */
                down = true;
                delay = backoff_ms(inv);
            }
        }
        return;
    }
    cache_recovered(inv);
    invstats_invalidations(inv->stats, nkeys);
    queue_redeletes(inv, inv->keys, inv->keylens, nkeys);
    for (size_t i = 0; i < n; i++) {
        if (!inv->decoded[i])
            skip_undecodable(inv, &msgs[i], NULL);
        else
            account(inv, &msgs[i], &inv->evs[i]);
    }
}

/* No partition ours for three progress lines, and at least
 * UNASSIGNED_WARN_MIN_S (a group's first join can take seconds): [kafka]
 * topics matches no topic (another topic_prefix on the relays, say), or the
 * group has more members than partitions. Warned of then, and every 6
 * lines while it lasts: an invalidator that invalidates nothing looks
 * healthy otherwise. */
static void
warn_unassigned(struct invalidator *inv, size_t npartitions)
{
    uint64_t now = cal_mono_us(), interval = (uint64_t)inv->conf.report_interval_ms * 1000;
    if (npartitions > 0) {
        inv->unassigned_since_us = inv->unassigned_warned_us = 0;
        return;
    }
    if (inv->unassigned_since_us == 0)
        inv->unassigned_since_us = now;
    uint64_t quiet = 3 * interval > UNASSIGNED_WARN_MIN_S * 1000000ULL
                         ? 3 * interval
                         : UNASSIGNED_WARN_MIN_S * 1000000ULL;
    if (now - inv->unassigned_since_us < quiet ||
        (inv->unassigned_warned_us != 0 && now - inv->unassigned_warned_us < 6 * interval))
        return;
    inv->unassigned_warned_us = now;
    log_warn("no partitions assigned",
             "for_s=%llu joined=%d topics=\"%s\" group=%s hint=\"no topic matches [kafka] topics "
             "(the relays' topic_prefix?), or other members of the group hold every partition\"",
             (unsigned long long)((now - inv->unassigned_since_us) / 1000000),
             kconsumer_joined(inv->kc) ? 1 : 0, inv->conf.kafka.topics, inv->conf.kafka.group_id);
}

/* The periodic progress line: window counters, latency percentiles, lag. */
static void
report(struct invalidator *inv)
{
    size_t n = kconsumer_lag(inv->kc, inv->lags, MAX_LAG_PARTITIONS);
    warn_unassigned(inv, n);
    invstats_set_lag(inv->stats, inv->lags, n);
    size_t queued = inv->redeletes != NULL ? redelete_len(inv->redeletes) : 0;
    invstats_set_redelete_queue(inv->stats, queued);
    struct invstats_window win;
    invstats_take_window(inv->stats, &win);
    char list[1024];
    size_t used = 0;
    long long total = 0, max = 0;
    list[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        long long lag = inv->lags[i].lag;
        if (lag > 0)
            total += lag;
        if (lag > max)
            max = lag;
        if (i < LOG_LAG_PARTITIONS && used < sizeof(list)) {
            int w = snprintf(list + used, sizeof(list) - used, "%s%s/%d:%lld", i ? "," : "",
                             inv->lags[i].topic, (int)inv->lags[i].partition, lag);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    if (used >= sizeof(list))
        list[sizeof(list) - 1] = '\0';
    log_info("progress",
             "events=%llu invalidations=%llu errors=%llu latency_samples=%zu p50_ms=%llu "
             "p99_ms=%llu max_ms=%llu partitions=%zu lag_total=%lld lag_max=%lld lag=\"%s%s\" "
             "decoded_hint=%llu decoded_json=%llu redeletes=%llu redeletes_failed=%llu "
             "redelete_queue=%zu%s",
             (unsigned long long)win.events, (unsigned long long)win.invalidations,
             (unsigned long long)win.errors, win.samples, (unsigned long long)win.p50_ms,
             (unsigned long long)win.p99_ms, (unsigned long long)win.max_ms, n, total, max, list,
             n > LOG_LAG_PARTITIONS ? ",..." : "", (unsigned long long)inv->hinted,
             (unsigned long long)inv->parsed, (unsigned long long)win.redeletes,
             (unsigned long long)win.redeletes_failed, queued,
             inv->failing_since_us != 0 ? " cache=failing" : "");
    inv->hinted = inv->parsed = 0;
}

/* When the oldest second delete goes in a round trip of its own if no batch
 * took it: REDELETE_SLACK_MS after it is due. UINT64_MAX: none waits. */
static uint64_t
redelete_round_at(const struct invalidator *inv)
{
    uint64_t due = inv->redeletes != NULL ? redelete_next_due(inv->redeletes) : UINT64_MAX;
    return due != UINT64_MAX ? due + REDELETE_SLACK_MS * 1000 : UINT64_MAX;
}

/* How long the loop may wait for a message: POLL_MS, or less when a round
 * of second deletes comes sooner. */
static int
poll_wait_ms(const struct invalidator *inv)
{
    uint64_t at = redelete_round_at(inv), now = cal_mono_us();
    if (at <= now)
        return 0;
    uint64_t ms = (at - now + 999) / 1000;
    return ms < POLL_MS ? (int)ms : POLL_MS;
}

void
invalidator_run(struct invalidator *inv, const volatile sig_atomic_t *stop)
{
    uint64_t next_report = cal_mono_us() + (uint64_t)inv->conf.report_interval_ms * 1000;
    char err[512];
    while (!*stop) {
        /* Whatever is ready, up to BATCH_MAX messages, is acted on together. */
        size_t n = 0;
        cal_status st = CAL_OK;
        while (n < BATCH_MAX && st == CAL_OK) {
            inv->batch[n] = (struct kconsumer_msg){0};
            st = kconsumer_poll(inv->kc, n == 0 ? poll_wait_ms(inv) : 0, &inv->batch[n], err,
                                sizeof(err));
            if (st == CAL_OK)
                n++;
        }
        if (st == CAL_ERR) {
            invstats_error(inv->stats, INVSTATS_ERR_KAFKA);
            log_warn("consumer error", "error=\"%s\"", err);
        }
        if (n > 0)
            handle_batch(inv, inv->batch, n);
        for (size_t i = 0; i < n; i++)
            kconsumer_release(inv->kc, &inv->batch[i]);
        /* No batch took the second deletes due for REDELETE_SLACK_MS: a
         * round trip of their own, for every one due by now. */
        if (redelete_round_at(inv) <= cal_mono_us())
            (void)redelete_round(inv, 0);
        uint64_t now = cal_mono_us();
        if (now >= next_report) {
            report(inv);
            next_report = now + (uint64_t)inv->conf.report_interval_ms * 1000;
        }
    }
}
