/* The cache check of calendar-stress: once the CDC pipeline has caught up,
 * every availability value cached in memcached for the run's listings must
 * equal what the shards hold. */
#ifndef CAL_STRESS_CACHE_H
#define CAL_STRESS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "tests/lib/testenv.h"
#include "tests/stress/stress_load.h"

/* Reads the window of the run's first 256 listings through calendard once,
 * so memcached holds values of the run even when the load's last writes
 * invalidated all it had cached (a read fills only missing keys: a stale
 * value stays). Then compares memcached with SQL for the run's listings and
 * window, again every 200 ms while anything differs or could not be read
 * (the CDC lag draining, memcached back from a stall). wait_ms bounds it
 * all, the reads through calendard included (the pass under way at the
 * deadline finishes); a deadline hit is said on stderr and the last pass
 * decides. *mismatches gets the count of the last pass; *checked the
 * values it compared (a key memcached lacks is not compared). Returns 0;
 * -1 with err when the last pass could not read memcached or SQL; -2 with
 * err when a stop signal (stress_load_stop()) came after it began and
 * before a pass found memcached equal to SQL: nothing was verified. */
int stress_cache_check(const struct testenv *env, const struct stress_conf *conf, unsigned wait_ms,
                       int64_t *mismatches, uint64_t *checked, char *err, size_t errlen);

/* The --inject fault that stress_cache_inject() plants. */
#define STRESS_CACHE_FAULT "stale_cache"

/* Testing the cache check: once a pass finds memcached equal to SQL (the
 * CDC lag drained), writes an older version into one cached listing value
 * of the run, as a lost invalidation would leave it; it expires after two
 * minutes. wait_ms bounds it all, as for stress_cache_check(). Returns 0,
 * or -1 with err (memcached or SQL unreadable, no listing value of the run
 * cached, the deadline hit, a stop signal). */
int stress_cache_inject(const struct testenv *env, const struct stress_conf *conf, unsigned wait_ms,
                        char *err, size_t errlen);

#endif
