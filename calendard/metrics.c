/* Prometheus text metrics with lock-free counters. */
#include "calendard/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static const char *const endpoint_names[EP_COUNT] = {"put_listing",
                                                     "get_listing",
                                                     "create_reservation",
                                                     "get_reservation",
                                                     "cancel_reservation",
                                                     "calendar",
                                                     "availability",
                                                     "search",
                                                     "healthz",
                                                     "readyz",
                                                     "metrics",
                                                     "other"};
static const char *const shard_event_names[SHARD_EVENT_COUNT] = {"ops", "conflicts", "moved",
                                                                 "retries", "errors"};
/* Upper bounds in microseconds; the last bucket is +Inf. */
static const uint64_t buckets_us[] = {250,   500,   1000,   2500,   5000,    10000,
                                      25000, 50000, 100000, 250000, 1000000, 5000000};
#define NBUCKETS (sizeof(buckets_us) / sizeof(buckets_us[0]))
static const int codes[] = {200, 201, 400, 404, 405, 409, 412, 413, 422, 500, 503};
#define NCODES (sizeof(codes) / sizeof(codes[0]))

static atomic_ullong requests[EP_COUNT][NCODES + 1]; /* last: other codes */
static atomic_ullong latency_buckets[EP_COUNT][NBUCKETS + 1];
static atomic_ullong latency_sum_us[EP_COUNT];
static atomic_ullong shard_events[METRICS_MAX_SHARDS][SHARD_EVENT_COUNT];
static atomic_ullong overloads;
static atomic_llong in_flight;
static atomic_ullong spin_takes, spin_misses;
static atomic_ullong group_commits, group_commit_bookings;
static atomic_ullong booking_reads, booking_read_bookings;
static atomic_ullong cache_events[CACHE_EVENT_COUNT];
static const char *const cache_event_names[CACHE_EVENT_COUNT] = {
    "hits", "misses", "fills", "stale_fills_rejected", "errors", "invalidations"};

const char *
metrics_endpoint_name(enum endpoint ep)
{
    return endpoint_names[ep];
}

void
metrics_request(enum endpoint ep, int http_status, uint64_t latency_us)
{
    size_t c = NCODES;
    for (size_t i = 0; i < NCODES; i++)
        if (codes[i] == http_status)
            c = i;
    atomic_fetch_add_explicit(&requests[ep][c], 1, memory_order_relaxed);
    size_t b = NBUCKETS;
    for (size_t i = 0; i < NBUCKETS; i++) {
        if (latency_us <= buckets_us[i]) {
            b = i;
            break;
        }
    }
    atomic_fetch_add_explicit(&latency_buckets[ep][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&latency_sum_us[ep], latency_us, memory_order_relaxed);
}

void
metrics_shard(unsigned shard_index, enum shard_event ev)
{
    if (shard_index < METRICS_MAX_SHARDS)
        atomic_fetch_add_explicit(&shard_events[shard_index][ev], 1, memory_order_relaxed);
}

void
metrics_overload(void)
{
    atomic_fetch_add_explicit(&overloads, 1, memory_order_relaxed);
}

void
metrics_in_flight(int delta)
{
    atomic_fetch_add_explicit(&in_flight, delta, memory_order_relaxed);
}

void
metrics_worker_spin(bool took)
{
    atomic_fetch_add_explicit(took ? &spin_takes : &spin_misses, 1, memory_order_relaxed);
}

void
metrics_group_commit(unsigned bookings)
{
    atomic_fetch_add_explicit(&group_commits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&group_commit_bookings, bookings, memory_order_relaxed);
}

void
metrics_booking_read(unsigned bookings)
{
    atomic_fetch_add_explicit(&booking_reads, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&booking_read_bookings, bookings, memory_order_relaxed);
}

void
metrics_cache(enum cache_event ev, unsigned count)
{
    atomic_fetch_add_explicit(&cache_events[ev], count, memory_order_relaxed);
}

struct buf {
    char *p;
    size_t len, cap;
};

static void emit(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
emit(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap *= 2;
        b->p = cal_realloc(b->p, b->cap);
    }
}

static unsigned long long
load(atomic_ullong *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

char *
metrics_render(const uint32_t *shard_ids, const int *breaker_open, size_t nshards, size_t *len)
{
    struct buf b = {cal_malloc(16384), 0, 16384};
    emit(&b, "# HELP calendard_requests_total HTTP requests by endpoint and status.\n"
             "# TYPE calendard_requests_total counter\n");
    for (int ep = 0; ep < EP_COUNT; ep++) {
        for (size_t c = 0; c <= NCODES; c++) {
            unsigned long long v = load(&requests[ep][c]);
            if (v == 0)
                continue;
            if (c < NCODES)
                emit(&b, "calendard_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                     endpoint_names[ep], codes[c], v);
            else
                emit(&b, "calendard_requests_total{endpoint=\"%s\",code=\"other\"} %llu\n",
                     endpoint_names[ep], v);
        }
    }
    emit(&b, "# HELP calendard_request_duration_seconds Request latency by endpoint.\n"
             "# TYPE calendard_request_duration_seconds histogram\n");
    for (int ep = 0; ep < EP_COUNT; ep++) {
        unsigned long long cum = 0;
        for (size_t i = 0; i <= NBUCKETS; i++) {
            cum += load(&latency_buckets[ep][i]);
            if (i < NBUCKETS)
                emit(&b,
                     "calendard_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%g\"} %llu\n",
                     endpoint_names[ep], (double)buckets_us[i] / 1e6, cum);
            else
                emit(
                    &b,
                    "calendard_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} %llu\n",
                    endpoint_names[ep], cum);
        }
        emit(&b, "calendard_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n",
             endpoint_names[ep], (double)load(&latency_sum_us[ep]) / 1e6);
        emit(&b, "calendard_request_duration_seconds_count{endpoint=\"%s\"} %llu\n",
             endpoint_names[ep], cum);
    }
    for (int ev = 0; ev < SHARD_EVENT_COUNT; ev++) {
        emit(&b, "# TYPE calendard_shard_%s_total counter\n", shard_event_names[ev]);
        for (size_t s = 0; s < nshards && s < METRICS_MAX_SHARDS; s++)
            emit(&b, "calendard_shard_%s_total{shard=\"%u\"} %llu\n", shard_event_names[ev],
                 shard_ids[s], load(&shard_events[s][ev]));
    }
    emit(&b, "# HELP calendard_shard_breaker_open 1 while the shard's circuit breaker is open or "
             "half-open.\n"
             "# TYPE calendard_shard_breaker_open gauge\n");
    for (size_t s = 0; s < nshards && s < METRICS_MAX_SHARDS; s++)
        emit(&b, "calendard_shard_breaker_open{shard=\"%u\"} %d\n", shard_ids[s], breaker_open[s]);
    emit(&b,
         "# HELP calendard_overload_total Requests answered 503 overloaded: over the in-flight "
         "limit, or no shard connection free in pool_wait_ms.\n"
         "# TYPE calendard_overload_total counter\ncalendard_overload_total %llu\n",
         load(&overloads));
    emit(&b,
         "# HELP calendard_requests_in_flight Requests admitted whose answer is not yet sent,"
         " this scrape included (a request whose client went away counts until it ends).\n"
         "# TYPE calendard_requests_in_flight gauge\ncalendard_requests_in_flight %lld\n",
         (long long)atomic_load_explicit(&in_flight, memory_order_relaxed));
    emit(&b,
         "# HELP calendard_worker_spin_takes_total Requests taken by a worker still polling the"
         " queue after its last one ([server] worker_spin_us), without a thread wakeup.\n"
         "# TYPE calendard_worker_spin_takes_total counter\ncalendard_worker_spin_takes_total"
         " %llu\n"
         "# HELP calendard_worker_spin_misses_total Polls of the queue that found no request"
         " (each cost up to worker_spin_us of CPU).\n"
         "# TYPE calendard_worker_spin_misses_total counter\ncalendard_worker_spin_misses_total"
         " %llu\n",
         load(&spin_takes), load(&spin_misses));
    emit(&b,
         "# HELP calendard_booking_transactions_total Booking transactions (group commits).\n"
         "# TYPE calendard_booking_transactions_total counter\n"
         "calendard_booking_transactions_total %llu\n"
         "# HELP calendard_booking_transaction_bookings_total Bookings those transactions"
         " committed or tried; divided by the above, the average group size.\n"
         "# TYPE calendard_booking_transaction_bookings_total counter\n"
         "calendard_booking_transaction_bookings_total %llu\n",
         load(&group_commits), load(&group_commit_bookings));
    emit(&b,
         "# HELP calendard_booking_reads_total Statements reading bookings' calendars.\n"
         "# TYPE calendard_booking_reads_total counter\n"
         "calendard_booking_reads_total %llu\n"
         "# HELP calendard_booking_read_bookings_total Bookings those statements read for;"
         " divided by the above, the average read group.\n"
         "# TYPE calendard_booking_read_bookings_total counter\n"
         "calendard_booking_read_bookings_total %llu\n",
         load(&booking_reads), load(&booking_read_bookings));
    for (int ev = 0; ev < CACHE_EVENT_COUNT; ev++)
        emit(&b, "# TYPE calendard_cache_%s_total counter\ncalendard_cache_%s_total %llu\n",
             cache_event_names[ev], cache_event_names[ev], load(&cache_events[ev]));
    *len = b.len;
    return b.p;
}
