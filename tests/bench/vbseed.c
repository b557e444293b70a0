/* A vbucket full of listings with history, for the move benchmark. */
#include "tests/bench/vbseed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "sharding/shardmap.h"

#define CHUNK 200 /* listings per multi-row statement */
#define E DB_TO_DAYS_EPOCH

static cal_status
insert_rows(struct db *db, const char *head, const char *row, size_t nrows, size_t ncols,
            const struct db_val *p, char *err, size_t errlen)
{
    size_t rowlen = strlen(row), cap = strlen(head) + nrows * (rowlen + 1) + 1;
    char *sql = cal_malloc(cap);
    size_t off = (size_t)snprintf(sql, cap, "%s", head);
    for (size_t i = 0; i < nrows; i++)
        off += (size_t)snprintf(sql + off, cap - off, "%s%s", i ? "," : "", row);
    cal_status rc = db_query(db, sql, p, nrows * ncols, NULL, err, errlen);
    free(sql);
    return rc;
}

cal_status
vbseed_run(const struct testenv *env, const struct bench_routes *routes, uint32_t vbucket,
           uint64_t first_id, uint64_t count, int32_t day0, uint64_t *lo, uint64_t *hi, char *err,
           size_t errlen)
{
    uint64_t *ids = cal_malloc(CHUNK * sizeof(*ids));
    struct db_val *p = cal_malloc(CHUNK * 12 * 8 * sizeof(*p));
    uint64_t id = first_id, done = 0;
    size_t shard = (size_t)routes->shard_of[vbucket];
    struct db *db = testenv_connect_shard(env, shard, err, errlen);
    cal_status rc = db == NULL ? CAL_EUNAVAIL : CAL_OK;
    *lo = 0;
    while (rc == CAL_OK && done < count) {
        size_t n = 0;
        while (n < CHUNK && done + n < count) {
            if (shardmap_vbucket(id, TESTENV_NUM_VBUCKETS) == vbucket)
                ids[n++] = id;
            id++;
        }
        if (*lo == 0)
            *lo = ids[0];
        *hi = ids[n - 1];
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            p[k++] = DB_INT_V(ids[i]);
            p[k++] = DB_INT_V(vbucket);
        }
        rc = insert_rows(db,
                         "INSERT IGNORE INTO listings (listing_id, vbucket, version, rules_version,"
                         " default_price, currency, min_nights, max_nights) VALUES ",
                         "(?, ?, 5, 1, 10000, 'USD', 1, 30)", n, 2, p, err, errlen);
        /* 12 night rows per listing: 3 booked (reservation 1), 3 freed by the
         * cancelled reservation 2, 3 blocked, 3 with a price override. */
        static const char *const status[4] = {"booked", "available", "blocked", "available"};
        for (int g = 0; g < 4 && rc == CAL_OK; g++) {
            k = 0;
            for (size_t i = 0; i < n; i++) {
                for (int d = 0; d < 3; d++) {
                    p[k++] = DB_INT_V(ids[i]);
                    p[k++] = DB_INT_V(day0 + g * 5 + d + E);
                    p[k++] = DB_CSTR_V(status[g]);
                    p[k++] = g == 0 ? DB_INT_V(ids[i] * 2) : DB_NULL_V;
                    p[k++] = g == 3 ? DB_INT_V(15000) : DB_NULL_V;
                    p[k++] = DB_INT_V(vbucket);
                }
            }
            rc = insert_rows(db,
                             "INSERT IGNORE INTO nights (listing_id, night, status, reservation_id,"
                             " price, vbucket) VALUES ",
                             "(?, FROM_DAYS(?), ?, ?, ?, ?)", n * 3, 6, p, err, errlen);
        }
        for (int r = 0; r < 2 && rc == CAL_OK; r++) {
            k = 0;
            for (size_t i = 0; i < n; i++) {
                char key[32];
                snprintf(key, sizeof(key), "vbseed-%d", r);
                p[k++] = DB_INT_V(ids[i] * 2 + (uint64_t)r);
                p[k++] = DB_INT_V(ids[i]);
                p[k++] = DB_INT_V(vbucket);
                p[k++] = DB_INT_V(day0 + r * 5 + E);
                p[k++] = DB_INT_V(day0 + r * 5 + 3 + E);
                p[k++] = DB_CSTR_V(r == 0 ? "confirmed" : "cancelled");
                p[k++] = DB_CSTR_V(r == 0 ? "vbseed-0" : "vbseed-1");
            }
            rc = insert_rows(db,
                             "INSERT IGNORE INTO reservations (reservation_id, listing_id, vbucket,"
                             " check_in, check_out, guest_id, status, total_price, currency,"
                             " idempotency_key, request_hash, version) VALUES ",
                             "(?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), 1, ?, 30000, 'USD', ?,"
                             " '0000000000000000', 3)",
                             n, 7, p, err, errlen);
        }
        done += n;
    }
    db_close(db);
    free(ids);
    free(p);
    return rc;
}
