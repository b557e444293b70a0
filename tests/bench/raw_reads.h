/* The raw ceiling of an availability read: the memcached multi-get of the
 * very keys calendard reads for it (cachekey_listing and cachekey_month_of of
 * every month of the range), by conc client threads with one memcached
 * connection each, and nothing else. Closed loop, or open loop with a rate
 * (as http_load: Poisson arrivals per thread, latency from when it was due). */
#ifndef CAL_BENCH_RAW_READS_H
#define CAL_BENCH_RAW_READS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/cachekey.h"
#include "tests/bench/bench.h"

struct raw_reads_conf {
    const char *memcached_servers;
    uint64_t first_id; /* listings [first_id, first_id + nlistings) */
    uint64_t nlistings;
    int32_t from, to; /* the range read, days since epoch */
    unsigned batch;   /* listings per multi-get: 1 = a single read, 50 = a search */
    unsigned conc;
    double warmup_s;
    double secs;
    uint64_t max_requests;
    uint64_t seed;
    double rate; /* multi-gets/s offered over all threads; 0 = closed loop */
    void (*window)(void *ctx, bool start);
    void *ctx;
};

struct raw_reads_result {
    uint64_t answered; /* multi-gets completed in the window */
    uint64_t complete; /* ... that found every key */
    uint64_t errors;
    uint64_t keys, misses; /* keys asked and not found, in the window */
    double secs;
    bool capped; /* max_requests stopped the load before the window closed */
    struct bench_lat lat;
};

/* The cache keys of one listing over [from, to): the listing key first,
 * then one per month. Returns how many were written to keys[max][CACHEKEY_MAX]. */
size_t raw_reads_keys(uint64_t listing_id, int32_t from, int32_t to, char (*keys)[CACHEKEY_MAX],
                      size_t *lens, size_t max);

/* Runs the load; the caller frees res->lat with bench_lat_deinit(). */
cal_status raw_reads_run(const struct raw_reads_conf *conf, struct raw_reads_result *res, char *err,
                         size_t errlen);

#endif
