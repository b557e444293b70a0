/* The invalidator's consume loop (see invalidator.h). */
#include "cdc/invalidator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/invalidate.h"
#include "common/log.h"
#include "common/util.h"

#define MAX_LAG_PARTITIONS 1024
#define LOG_LAG_PARTITIONS 16 /* listed in the progress line; the rest only counted */
#define POLL_MS 100

struct invalidator {
    struct invalidator_conf conf;
    struct kconsumer *kc;
    struct cache *cache;
    struct invstats *stats;
    unsigned failures;                    /* consecutive failed invalidations */
    uint64_t failing_since_us;            /* monotonic; 0 when memcached answers */
    bool seen[INVALIDATE_TABLE_COUNT][6]; /* event types already logged at info */
    struct kconsumer_lag *lags;
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
    return inv;
}

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
    cache_destroy(inv->cache);
    free(inv->lags);
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

static void
store(struct invalidator *inv, struct kconsumer_msg *msg)
{
    char err[256];
    cal_status st = kconsumer_store(inv->kc, msg, err, sizeof(err));
    if (st == CAL_ENOTFOUND) {
        log_debug("offset not stored", "reason=\"%s\"", err); /* revoked meanwhile */
    } else if (st != CAL_OK) {
        invstats_error(inv->stats, INVSTATS_ERR_STORE);
        log_warn("offset store failed", "error=\"%s\"", err);
    }
}

static void
handle(struct invalidator *inv, struct kconsumer_msg *msg)
{
    char err[256];
    struct invalidate_event ev;
    if (invalidate_decode(msg->topic, msg->value, msg->len, &ev, err, sizeof(err)) != CAL_OK) {
        /* A poison message is skipped, not retried: no later attempt can
         * decode it, and retrying would stall every event behind it on its
         * partition. It is logged with its coordinates for a manual replay. */
        invstats_error(inv->stats, INVSTATS_ERR_UNDECODABLE);
        log_warn("undecodable event skipped", "topic=%s partition=%d offset=%lld reason=\"%s\"",
                 msg->topic, (int)msg->partition, (long long)msg->offset, err);
        store(inv, msg);
        return;
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
        return;
    }
    if (inv->failing_since_us != 0) {
        log_info("invalidations resumed", "failed_for_ms=%llu attempts=%u",
                 (unsigned long long)((cal_mono_us() - inv->failing_since_us) / 1000),
                 inv->failures);
        inv->failing_since_us = 0;
    }
    inv->failures = 0;
    invstats_event(inv->stats, ev.table);
    invstats_invalidations(inv->stats, ev.nkeys);
    uint64_t latency_ms = 0;
    if (ev.source_ts_ms >= 0) {
        uint64_t now = cal_now_ms();
        latency_ms = now > (uint64_t)ev.source_ts_ms ? now - (uint64_t)ev.source_ts_ms : 0;
        if (ev.nkeys > 0 || ev.flush_all)
            invstats_latency(inv->stats, latency_ms);
    }
    int oi = op_index(ev.op);
    if (!inv->seen[ev.table][oi]) {
        inv->seen[ev.table][oi] = true;
        log_info("first event of this type",
                 "table=%s op=%c keys=%zu topic=%s partition=%d "
                 "offset=%lld",
                 invalidate_table_name(ev.table), ev.op != 0 ? ev.op : '-', ev.nkeys, msg->topic,
                 (int)msg->partition, (long long)msg->offset);
    }
    log_debug("event", "table=%s op=%c keys=%zu topic=%s partition=%d offset=%lld latency_ms=%llu",
              invalidate_table_name(ev.table), ev.op != 0 ? ev.op : '-', ev.nkeys, msg->topic,
              (int)msg->partition, (long long)msg->offset, (unsigned long long)latency_ms);
    store(inv, msg);
}

/* The periodic progress line: window counters, latency percentiles, lag. */
static void
report(struct invalidator *inv)
{
    size_t n = kconsumer_lag(inv->kc, inv->lags, MAX_LAG_PARTITIONS);
    invstats_set_lag(inv->stats, inv->lags, n);
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
             "p99_ms=%llu max_ms=%llu partitions=%zu lag_total=%lld lag_max=%lld lag=\"%s%s\"%s",
             (unsigned long long)win.events, (unsigned long long)win.invalidations,
             (unsigned long long)win.errors, win.samples, (unsigned long long)win.p50_ms,
             (unsigned long long)win.p99_ms, (unsigned long long)win.max_ms, n, total, max, list,
             n > LOG_LAG_PARTITIONS ? ",..." : "",
             inv->failing_since_us != 0 ? " cache=failing" : "");
}

void
invalidator_run(struct invalidator *inv, const volatile sig_atomic_t *stop)
{
    uint64_t next_report = cal_mono_us() + (uint64_t)inv->conf.report_interval_ms * 1000;
    char err[512];
    while (!*stop) {
        struct kconsumer_msg msg = {0};
        cal_status st = kconsumer_poll(inv->kc, POLL_MS, &msg, err, sizeof(err));
        if (st == CAL_OK) {
            handle(inv, &msg);
            kconsumer_release(inv->kc, &msg);
        } else if (st == CAL_ERR) {
            invstats_error(inv->stats, INVSTATS_ERR_KAFKA);
            log_warn("consumer error", "error=\"%s\"", err);
        }
        uint64_t now = cal_mono_us();
        if (now >= next_report) {
            report(inv);
            next_report = now + (uint64_t)inv->conf.report_interval_ms * 1000;
        }
    }
}
