/* The raw ceiling of a booking: calendard's booking transaction issued
 * straight to the shards with prepared statements, no daemon, no HTTP. One
 * thread per unit of concurrency, each with its own connection to every
 * shard, routing by listing id itself. */
#ifndef CAL_BENCH_RAW_BOOKING_H
#define CAL_BENCH_RAW_BOOKING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tests/bench/bench.h"

struct raw_booking_conf {
    const struct testenv *env;
    const struct bench_routes *routes;
    struct bench_stays stays;
    unsigned conc;
    double warmup_s;
    double secs;
    uint64_t max_bookings; /* bound on attempts in the whole run */
    uint64_t seed;
    unsigned max_attempts; /* per booking, as calendard's [routing] max_attempts */
    unsigned backoff_base_ms, backoff_max_ms;
    void (*window)(void *ctx, bool start); /* the window opens and closes */
    void *ctx;
};

struct raw_booking_result {
    uint64_t booked;      /* committed in the window */
    uint64_t attempts;    /* bookings decided in the window (any outcome) */
    uint64_t unavailable; /* a night was taken when read: 409 */
    uint64_t gave_up;     /* still conflicting after max_attempts: 503 */
    uint64_t errors;
    uint64_t retries;   /* conflict retries, whole window */
    uint64_t conflicts; /* transactions that hit a conflict */
    double secs;
    bool capped;          /* max_bookings stopped the load before the window closed */
    struct bench_lat lat; /* latencies of committed bookings, retries included */
};

/* Runs the load; the caller frees res->lat with bench_lat_deinit(). */
cal_status raw_booking_run(const struct raw_booking_conf *conf, struct raw_booking_result *res,
                           char *err, size_t errlen);

#endif
