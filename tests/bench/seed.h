/* Creates the benchmark's listings fast: multi-row INSERTs straight into the
 * listings table of each owning shard (vbucket = fmix64(id) % 4096, shard from
 * the catalog map), since 100,000 PUTs through the API would dominate a
 * two-minute run. calendard reads listings from SQL, so it sees them at once. */
#ifndef CAL_BENCH_SEED_H
#define CAL_BENCH_SEED_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tests/bench/bench.h"

struct seed_conf {
    uint64_t first_id; /* listings [first_id, first_id + count) */
    uint64_t count;
    int64_t default_price;
    int min_nights, max_nights;
    /* Optional blocked nights per listing (0 = none), spread over [from, to):
     * read-set listings carry a few night rows like a real calendar. */
    unsigned blocked_nights;
    int32_t from, to;
};

/* Idempotent (INSERT IGNORE). */
cal_status seed_listings(const struct testenv *env, const struct bench_routes *routes,
                         const struct seed_conf *conf, char *err, size_t errlen);

#endif
