/* The cache check of calendar-stress: once the CDC pipeline has caught up,
 * every availability value cached in memcached for the run's listings must
 * equal what the shards hold. */
#ifndef CAL_STRESS_CACHE_H
#define CAL_STRESS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "tests/lib/testenv.h"
#include "tests/stress/stress_load.h"

/* Compares memcached with SQL for the run's listings and window, again every
 * 200 ms while anything differs or could not be read, at most wait_ms (the
 * CDC lag draining, memcached back from a stall). *mismatches gets the count
 * of the last pass; *checked the values compared. Returns 0, or -1 with err
 * when the last pass could not read memcached or SQL. */
int stress_cache_check(const struct testenv *env, const struct stress_conf *conf, unsigned wait_ms,
                       int64_t *mismatches, uint64_t *checked, char *err, size_t errlen);

#endif
