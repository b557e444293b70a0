/* Invalidator metrics (see invstats.h). One mutex: events arrive at most at
 * memcached speed and a render takes microseconds. */
#include "cdc/invstats.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* Upper bounds of the latency histogram in ms; the last bucket is +Inf. */
static const uint64_t bucket_ms[] = {1,   2,    5,    10,   25,    50,    100,  250,
                                     500, 1000, 2500, 5000, 10000, 30000, 60000};
#define NBUCKETS CAL_ARRAY_LEN(bucket_ms)
#define WINDOW_CAP 8192 /* samples kept per window; beyond, a uniform reservoir */

static const char *const error_names[INVSTATS_ERR_COUNT] = {"undecodable", "cache", "kafka",
                                                            "store", "gap"};
static const char *const redelete_names[INVSTATS_REDELETE_COUNT] = {"deleted", "early", "failed"};

/* A latency histogram, in bucket_ms buckets. */
struct hist {
    uint64_t buckets[NBUCKETS + 1];
    uint64_t sum_ms;
    uint64_t count;
};

struct invstats {
    pthread_mutex_t lock;
    uint64_t events[INVALIDATE_TABLE_COUNT];
    uint64_t invalidations;
    uint64_t flushes;
    uint64_t errors[INVSTATS_ERR_COUNT];
    uint64_t redeletes[INVSTATS_REDELETE_COUNT];
    size_t redelete_queue;
    struct hist commit;  /* from source.ts_ms (whole seconds in MariaDB's binlog) */
    struct hist produce; /* from the Kafka message's timestamp (ms) */
    struct kconsumer_lag *lags;
    size_t nlags;
    /* the current window */
    uint64_t win_events, win_invalidations, win_errors, win_seen;
    uint64_t win_redeletes, win_redeletes_failed;
    uint64_t *win;
    size_t nwin;
};

struct invstats *
invstats_create(void)
{
    struct invstats *stats = cal_calloc(1, sizeof(*stats));
    pthread_mutex_init(&stats->lock, NULL);
    stats->win = cal_malloc(WINDOW_CAP * sizeof(*stats->win));
    return stats;
}

void
invstats_destroy(struct invstats *stats)
{
    if (stats == NULL)
        return;
    pthread_mutex_destroy(&stats->lock);
    free(stats->lags);
    free(stats->win);
    free(stats);
}

void
invstats_event(struct invstats *stats, enum invalidate_table table)
{
    pthread_mutex_lock(&stats->lock);
    stats->events[table < INVALIDATE_TABLE_COUNT ? table : INVALIDATE_TABLE_OTHER]++;
    stats->win_events++;
    pthread_mutex_unlock(&stats->lock);
}

void
invstats_invalidations(struct invstats *stats, size_t nkeys)
{
    pthread_mutex_lock(&stats->lock);
    stats->invalidations += nkeys;
    stats->win_invalidations += nkeys;
    pthread_mutex_unlock(&stats->lock);
}

void
invstats_flush(struct invstats *stats)
{
    pthread_mutex_lock(&stats->lock);
    stats->flushes++;
    pthread_mutex_unlock(&stats->lock);
}

void
invstats_error(struct invstats *stats, enum invstats_error kind)
{
    pthread_mutex_lock(&stats->lock);
    stats->errors[kind < INVSTATS_ERR_COUNT ? kind : INVSTATS_ERR_KAFKA]++;
    stats->win_errors++;
    pthread_mutex_unlock(&stats->lock);
}

void
invstats_redeletes(struct invstats *stats, enum invstats_redelete outcome, size_t nkeys)
{
    if (nkeys == 0)
        return;
    pthread_mutex_lock(&stats->lock);
    stats->redeletes[outcome < INVSTATS_REDELETE_COUNT ? outcome : INVSTATS_REDELETE_FAILED] +=
        nkeys;
    if (outcome == INVSTATS_REDELETE_FAILED)
        stats->win_redeletes_failed += nkeys;
    else
        stats->win_redeletes += nkeys;
    pthread_mutex_unlock(&stats->lock);
}

void
invstats_set_redelete_queue(struct invstats *stats, size_t nkeys)
{
    pthread_mutex_lock(&stats->lock);
    stats->redelete_queue = nkeys;
    pthread_mutex_unlock(&stats->lock);
}

/* Counts latency_ms in h (needs the lock). */
static void
hist_add(struct hist *h, uint64_t latency_ms)
{
    size_t b = NBUCKETS;
    for (size_t i = 0; i < NBUCKETS; i++) {
        if (latency_ms <= bucket_ms[i]) {
            b = i;
            break;
        }
    }
    h->buckets[b]++;
    h->sum_ms += latency_ms;
    h->count++;
}

void
invstats_latency(struct invstats *stats, int64_t commit_ms, int64_t produce_ms)
{
    pthread_mutex_lock(&stats->lock);
    if (commit_ms >= 0)
        hist_add(&stats->commit, (uint64_t)commit_ms);
    if (produce_ms >= 0)
        hist_add(&stats->produce, (uint64_t)produce_ms);
    /* The window (the progress line's p50/p99): the finer of the two. */
    int64_t ms = produce_ms >= 0 ? produce_ms : commit_ms;
    if (ms >= 0) {
        stats->win_seen++;
        if (stats->nwin < WINDOW_CAP) {
            stats->win[stats->nwin++] = (uint64_t)ms;
        } else {
            uint64_t j = cal_rand64() % stats->win_seen;
            if (j < WINDOW_CAP)
                stats->win[j] = (uint64_t)ms;
        }
    }
    pthread_mutex_unlock(&stats->lock);
}

void
invstats_set_lag(struct invstats *stats, const struct kconsumer_lag *lags, size_t n)
{
    struct kconsumer_lag *copy = n > 0 ? cal_malloc(n * sizeof(*copy)) : NULL;
    if (n > 0)
        memcpy(copy, lags, n * sizeof(*copy));
    pthread_mutex_lock(&stats->lock);
    struct kconsumer_lag *old = stats->lags;
    stats->lags = copy;
    stats->nlags = n;
    pthread_mutex_unlock(&stats->lock);
    free(old);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t
percentile(const uint64_t *v, size_t n, unsigned pct)
{
    size_t rank = (n * pct + 99) / 100;
    return v[rank > 0 ? rank - 1 : 0];
}

void
invstats_take_window(struct invstats *stats, struct invstats_window *win)
{
    uint64_t *samples = cal_malloc(WINDOW_CAP * sizeof(*samples));
    pthread_mutex_lock(&stats->lock);
    win->events = stats->win_events;
    win->invalidations = stats->win_invalidations;
    win->errors = stats->win_errors;
    win->redeletes = stats->win_redeletes;
    win->redeletes_failed = stats->win_redeletes_failed;
    win->samples = stats->nwin;
    memcpy(samples, stats->win, stats->nwin * sizeof(*samples));
    stats->win_events = stats->win_invalidations = stats->win_errors = stats->win_seen = 0;
    stats->win_redeletes = stats->win_redeletes_failed = 0;
    stats->nwin = 0;
    pthread_mutex_unlock(&stats->lock);
    win->p50_ms = win->p99_ms = win->max_ms = 0;
    if (win->samples > 0) {
        qsort(samples, win->samples, sizeof(*samples), cmp_u64);
        win->p50_ms = percentile(samples, win->samples, 50);
        win->p99_ms = percentile(samples, win->samples, 99);
        win->max_ms = samples[win->samples - 1];
    }
    free(samples);
}

/* Topic names come from the broker: keep label values printable and escaped. */
static void
put_label(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        fputc((unsigned char)*s >= 0x20 ? *s : '?', f);
    }
}

/* One histogram in the Prometheus text format. */
static void
put_hist(FILE *f, const char *name, const char *help, const struct hist *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += h->buckets[i];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bucket_ms[i] / 1000.0,
                (unsigned long long)cum);
    }
    cum += h->buckets[NBUCKETS];
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", name,
            (unsigned long long)cum, name, (double)h->sum_ms / 1000.0, name,
            (unsigned long long)h->count);
}

/* A counter family with one label, a sample per value of it. */
static void
put_counters(FILE *f, const char *name, const char *help, const char *label,
             const char *const *values, const uint64_t *counts, size_t n)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s{%s=\"%s\"} %llu\n", name, label, values[i], (unsigned long long)counts[i]);
}

char *
invstats_render(struct invstats *stats, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (f == NULL)
        abort(); /* out of memory */
    pthread_mutex_lock(&stats->lock);
    fputs("# HELP calendar_invalidator_events_total Change events consumed, by table "
          "(none = tombstone).\n# TYPE calendar_invalidator_events_total counter\n",
          f);
    for (int t = 0; t < INVALIDATE_TABLE_COUNT; t++)
        fprintf(f, "calendar_invalidator_events_total{table=\"%s\"} %llu\n",
                invalidate_table_name((enum invalidate_table)t),
                (unsigned long long)stats->events[t]);
    fprintf(f,
            "# HELP calendar_invalidator_invalidations_total Cache keys deleted.\n"
            "# TYPE calendar_invalidator_invalidations_total counter\n"
            "calendar_invalidator_invalidations_total %llu\n"
            "# HELP calendar_invalidator_flushes_total Whole-cache flushes: truncate events, and "
            "gaps (events dropped before they were read, offsets that went back, or an offset "
            "unknown).\n"
            "# TYPE calendar_invalidator_flushes_total counter\n"
            "calendar_invalidator_flushes_total %llu\n",
            (unsigned long long)stats->invalidations, (unsigned long long)stats->flushes);
    put_counters(f, "calendar_invalidator_errors_total",
                 "Errors by kind: undecodable events (skipped, or only one image's keys deleted), "
                 "cache failures (retried), kafka and offset store errors, gaps (the cache "
                 "flushed).",
                 "kind", error_names, stats->errors, INVSTATS_ERR_COUNT);
    put_counters(f, "calendar_invalidator_redeletes_total",
                 "Cache keys deleted a second time, [invalidator] redelete_ms after their first "
                 "delete (a fill of a row read before its change was visible goes too), by "
                 "outcome: deleted at their time, early (the queue was full), failed (not "
                 "confirmed by memcached; not retried).",
                 "outcome", redelete_names, stats->redeletes, INVSTATS_REDELETE_COUNT);
    fprintf(f,
            "# HELP calendar_invalidator_redelete_queue_keys Cache keys waiting for their second "
            "delete (refreshed with the progress line).\n"
            "# TYPE calendar_invalidator_redelete_queue_keys gauge\n"
            "calendar_invalidator_redelete_queue_keys %zu\n",
            stats->redelete_queue);
    fputs("# HELP calendar_invalidator_lag_messages Consumer lag per assigned partition "
          "(high watermark - the first offset not acted on; events held for a retry count).\n"
          "# TYPE calendar_invalidator_lag_messages gauge\n",
          f);
    for (size_t i = 0; i < stats->nlags; i++) {
        if (stats->lags[i].lag < 0)
            continue;
        fputs("calendar_invalidator_lag_messages{topic=\"", f);
        put_label(f, stats->lags[i].topic);
        fprintf(f, "\",partition=\"%d\"} %lld\n", (int)stats->lags[i].partition,
                (long long)stats->lags[i].lag);
    }
    put_hist(f, "calendar_invalidator_commit_to_invalidation_seconds",
             "Time from the change's statement (source.ts_ms: the binlog's time of the statement, "
             "in whole seconds, so up to 1 s early, and earlier still by a transaction's lock "
             "waits) to the cache keys being deleted.",
             &stats->commit);
    put_hist(f, "calendar_invalidator_produce_to_invalidation_seconds",
             "Time from the change's Kafka timestamp (when the relay produced it, milliseconds "
             "after the commit) to the cache keys being deleted.",
             &stats->produce);
    pthread_mutex_unlock(&stats->lock);
    fclose(f);
    *len = size;
    return buf;
}
