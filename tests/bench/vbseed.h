/* A vbucket full of listings with history, for measuring a vbucket move's
 * write pause (calendar-rebalance move) at the size the issue names. */
#ifndef CAL_BENCH_VBSEED_H
#define CAL_BENCH_VBSEED_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tests/bench/bench.h"

/* Writes count listings whose vbucket is `vbucket` (ids from first_id up,
 * chosen by the routing hash) into the owning shard, each with 12 nights of
 * history: two 3-night reservations (one confirmed, one cancelled, its
 * nights freed), 3 blocked nights and 3 price overrides. Returns the first
 * and last id used in *lo, *hi. */
cal_status vbseed_run(const struct testenv *env, const struct bench_routes *routes,
                      uint32_t vbucket, uint64_t first_id, uint64_t count, int32_t day0,
                      uint64_t *lo, uint64_t *hi, char *err, size_t errlen);

#endif
