/* Catalog writes done by operators: shard registry and initial vbucket map. */
#include "sharding/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SQL_GET_NVB[] = "SELECT value FROM cluster WHERE name = 'num_vbuckets'";
static const char SQL_SET_NVB[] = "INSERT INTO cluster (name, value) VALUES ('num_vbuckets', ?)";
static const char SQL_GET_SHARD[] = "SELECT host, port, db_name FROM shards WHERE shard_id = ?";
static const char SQL_ADD_SHARD[] =
    "INSERT INTO shards (shard_id, host, port, db_name) VALUES (?, ?, ?, ?)";
static const char SQL_COUNT_VB[] = "SELECT COUNT(*) FROM vbuckets";
/* seq_0_to_65535 is MariaDB's built-in Sequence engine. */
/* Fence rows outside the layout asked for: left by a bootstrap with another
 * shard list, or the shard belongs to another cluster. */
static const char SQL_OTHER_OWNER_ROWS[] =
    "SELECT COUNT(*) FROM vbucket_owner WHERE NOT (vbucket < ? AND vbucket % ? = ?)";
static const char SQL_OWNER_ROWS[] =
    "INSERT IGNORE INTO vbucket_owner (vbucket, epoch) "
    "SELECT seq, 1 FROM seq_0_to_65535 WHERE seq < ? AND seq % ? = ?";
static const char SQL_VB_ROWS[] = "INSERT IGNORE INTO vbuckets (vbucket, shard_id, epoch) "
                                  "SELECT seq, seq % ?, 1 FROM seq_0_to_65535 WHERE seq < ?";

static void
drain(struct db_stmt *st)
{
    struct db_val c[4];
    char e[64];
    while (db_fetch(st, c, 4, e, sizeof(e)) > 0)
        ;
}

cal_status
catalog_set_num_vbuckets(struct db *catalog, uint32_t num_vbuckets, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val c[1];
    cal_status rc = db_query(catalog, SQL_GET_NVB, NULL, 0, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (db_fetch(st, c, 1, err, errlen) > 0 && c[0].type == DB_STR) {
        long have = strtol(c[0].s, NULL, 10);
        drain(st);
        if (have != (long)num_vbuckets) {
            snprintf(err, errlen, "catalog already has num_vbuckets=%ld; it can never change",
                     have);
            return CAL_EINVAL;
        }
        return CAL_OK;
    }
    char v[16];
    snprintf(v, sizeof(v), "%u", num_vbuckets);
    struct db_val p[1] = {DB_CSTR_V(v)};
    return db_query(catalog, SQL_SET_NVB, p, 1, NULL, err, errlen);
}

cal_status
catalog_register_shard(struct db *catalog, uint32_t shard_id, const char *host, unsigned port,
                       const char *db_name, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val c[3];
    struct db_val p[4] = {DB_INT_V(shard_id), DB_CSTR_V(host), DB_INT_V(port), DB_CSTR_V(db_name)};
    cal_status rc = db_query(catalog, SQL_GET_SHARD, p, 1, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (db_fetch(st, c, 3, err, errlen) > 0) {
        bool same = c[0].type == DB_STR && strcmp(c[0].s, host) == 0 && c[1].i == (int64_t)port &&
                    c[2].type == DB_STR && strcmp(c[2].s, db_name) == 0;
        drain(st);
        if (!same) {
            snprintf(err, errlen, "shard %u is already registered with another address", shard_id);
            return CAL_EINVAL;
        }
        return CAL_OK;
    }
    return db_query(catalog, SQL_ADD_SHARD, p, 4, NULL, err, errlen);
}

cal_status
catalog_count_vbuckets(struct db *catalog, uint64_t *count, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val c[1];
    cal_status rc = db_query(catalog, SQL_COUNT_VB, NULL, 0, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    *count = db_fetch(st, c, 1, err, errlen) > 0 ? (uint64_t)c[0].i : 0;
    drain(st);
    return CAL_OK;
}

cal_status
catalog_assign_owner_rows(struct db *shard_db, uint32_t num_vbuckets, uint32_t nshards,
                          uint32_t shard_index, char *err, size_t errlen)
{
    struct db_val p[3] = {DB_INT_V(num_vbuckets), DB_INT_V(nshards), DB_INT_V(shard_index)}, c[1];
    struct db_stmt *st;
    cal_status rc = db_query(shard_db, SQL_OTHER_OWNER_ROWS, p, 3, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, c, 1, err, errlen);
    int64_t others = r > 0 && c[0].type == DB_INT ? c[0].i : 0;
    drain(st);
    if (r < 0)
        return CAL_ERR;
    if (others > 0) {
        /* Adding this layout's rows would make two shards own a vbucket. */
        snprintf(err, errlen,
                 "shard %u already owns %lld vbuckets outside vbucket %% %u = %u of %u: an"
                 " earlier bootstrap with another shard list, or another cluster's shard",
                 shard_index, (long long)others, nshards, shard_index, num_vbuckets);
        return CAL_EINVAL;
    }
    return db_query(shard_db, SQL_OWNER_ROWS, p, 3, NULL, err, errlen);
}

cal_status
catalog_assign_vbuckets(struct db *catalog, uint32_t num_vbuckets, uint32_t nshards, char *err,
                        size_t errlen)
{
    struct db_val p[2] = {DB_INT_V(nshards), DB_INT_V(num_vbuckets)};
    return db_query(catalog, SQL_VB_ROWS, p, 2, NULL, err, errlen);
}
