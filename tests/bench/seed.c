/* Bulk creation of benchmark listings with prepared multi-row INSERTs. */
#include "tests/bench/seed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "common/util.h"

#define ROWS_PER_INSERT 500

/* "INSERT IGNORE INTO listings ... VALUES (?, ?, 1, 1, price, 'USD', min, max), ..." */
static void
sql_listings(char *buf, size_t size, size_t n, const struct seed_conf *conf)
{
    size_t off = (size_t)snprintf(buf, size,
                                  "INSERT IGNORE INTO listings (listing_id, vbucket, version,"
                                  " rules_version, default_price, currency, min_nights,"
                                  " max_nights) VALUES ");
    for (size_t i = 0; i < n && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s(?, ?, 1, 1, %lld, 'USD', %d, %d)",
                                i ? "," : "", (long long)conf->default_price, conf->min_nights,
                                conf->max_nights);
}

static void
sql_nights(char *buf, size_t size, size_t n)
{
    size_t off = (size_t)snprintf(buf, size,
                                  "INSERT IGNORE INTO nights (listing_id, night, status, version,"
                                  " vbucket) VALUES ");
    for (size_t i = 0; i < n && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s(?, FROM_DAYS(?), 'blocked', 1, ?)",
                                i ? "," : "");
}

/* Inserts ids[0..n) of one shard in batches inside one transaction per batch. */
static cal_status
seed_shard(struct db *db, const uint64_t *ids, size_t n, const struct seed_conf *conf, char *err,
           size_t errlen)
{
    size_t sqlsize = 64 + ROWS_PER_INSERT * 96;
    char *sql = cal_malloc(sqlsize);
    struct db_val *p = cal_malloc(ROWS_PER_INSERT * 3 * sizeof(*p));
    cal_status rc = CAL_OK;
    for (size_t at = 0; at < n && rc == CAL_OK; at += ROWS_PER_INSERT) {
        size_t rows = n - at < ROWS_PER_INSERT ? n - at : ROWS_PER_INSERT, np = 0;
        sql_listings(sql, sqlsize, rows, conf);
        for (size_t i = 0; i < rows; i++) {
            p[np++] = DB_INT_V(ids[at + i]);
            p[np++] = DB_INT_V(testenv_vbucket(ids[at + i]));
        }
        rc = db_query(db, sql, p, np, NULL, err, errlen);
    }
    /* Blocked nights: listing i gets nights at a fixed stride from its own offset. */
    size_t per = conf->blocked_nights, span = (size_t)(conf->to - conf->from);
    size_t batch = per ? ROWS_PER_INSERT / per : 0;
    for (size_t at = 0; per > 0 && span > 0 && at < n && rc == CAL_OK; at += batch) {
        size_t rows = n - at < batch ? n - at : batch, np = 0;
        sql_nights(sql, sqlsize, rows * per);
        for (size_t i = 0; i < rows; i++) {
            uint64_t id = ids[at + i];
            for (size_t k = 0; k < per; k++) {
                size_t day = ((size_t)(id % 7) + k * (span / per)) % span;
                p[np++] = DB_INT_V(id);
                p[np++] = DB_INT_V(conf->from + (int32_t)day + DB_TO_DAYS_EPOCH);
                p[np++] = DB_INT_V(testenv_vbucket(id));
            }
        }
        rc = db_query(db, sql, p, np, NULL, err, errlen);
    }
    free(sql);
    free(p);
    return rc;
}

cal_status
seed_listings(const struct testenv *env, const struct bench_routes *routes,
              const struct seed_conf *conf, char *err, size_t errlen)
{
    uint64_t *ids = cal_malloc((conf->count ? conf->count : 1) * sizeof(*ids));
    cal_status rc = CAL_OK;
    if (conf->blocked_nights * 3 > ROWS_PER_INSERT) {
        snprintf(err, errlen, "at most %d blocked nights per listing", ROWS_PER_INSERT / 3);
        free(ids);
        return CAL_EINVAL;
    }
    for (size_t s = 0; s < env->nshards && rc == CAL_OK; s++) {
        size_t n = 0;
        for (uint64_t i = 0; i < conf->count; i++)
            if (bench_routes_shard(routes, conf->first_id + i) == s)
                ids[n++] = conf->first_id + i;
        if (n == 0)
            continue;
        struct db *db = testenv_connect_shard(env, s, err, errlen);
        if (db == NULL) {
            rc = CAL_EUNAVAIL;
            break;
        }
        rc = seed_shard(db, ids, n, conf, err, errlen);
        db_close(db);
    }
    free(ids);
    return rc;
}
