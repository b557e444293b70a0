/* Catalog writes done by operators: shard registry and initial vbucket map. */
#include "sharding/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/idblock.h"

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
/* This layout's rows the shard has, and their highest epoch: a bootstrap
 * writes them in one statement at epoch 1, so fewer, or a higher epoch,
 * means vbuckets moved since. */
static const char SQL_OWN_ROWS[] = "SELECT COUNT(*), COALESCE(MAX(epoch), 0) FROM vbucket_owner "
                                   "WHERE vbucket < ? AND vbucket % ? = ?";
static const char SQL_ANY_OWNER_ROW[] =
    "SELECT COUNT(*) FROM (SELECT 1 FROM vbucket_owner LIMIT 1) o";
static const char SQL_SHARD_TABLES[] =
    "SELECT COUNT(CASE TABLE_NAME WHEN 'vbucket_owner' THEN 1 END),"
    " COUNT(CASE TABLE_NAME WHEN 'listings' THEN 1 END) FROM information_schema.TABLES"
    " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('vbucket_owner', 'listings')";
static const char SQL_ANY_LISTING[] = "SELECT COUNT(*) FROM (SELECT 1 FROM listings LIMIT 1) l";
static const char SQL_OWNER_ROWS[] =
    "INSERT IGNORE INTO vbucket_owner (vbucket, epoch) "
    "SELECT seq, 1 FROM seq_0_to_65535 WHERE seq < ? AND seq % ? = ?";
/* The highest reservation id a shard holds that calendard could have made
 * (ids past IDBLOCK_MAX are none of its). */
static const char SQL_MAX_ID[] =
    "SELECT COALESCE(MAX(reservation_id), 0) FROM reservations WHERE reservation_id <= ?";
static const char SQL_IDS_ABOVE[] =
    "UPDATE id_blocks SET next_id = ? WHERE name = 'reservation' AND next_id < ?";
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
catalog_shard_known(struct db *catalog, uint32_t shard_id, const char *host, unsigned port,
                    const char *db_name, bool *known, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val c[3];
    struct db_val p[1] = {DB_INT_V(shard_id)};
    cal_status rc = db_query(catalog, SQL_GET_SHARD, p, 1, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, c, 3, err, errlen);
    if (r < 0)
        return CAL_ERR;
    *known = r > 0;
    if (r == 0)
        return CAL_OK;
    bool same = c[0].type == DB_STR && strcmp(c[0].s, host) == 0 && c[1].i == (int64_t)port &&
                c[2].type == DB_STR && strcmp(c[2].s, db_name) == 0;
    drain(st);
    if (!same) {
        snprintf(err, errlen, "shard %u is already registered with another address", shard_id);
        return CAL_EINVAL;
    }
    return CAL_OK;
}

cal_status
catalog_register_shard(struct db *catalog, uint32_t shard_id, const char *host, unsigned port,
                       const char *db_name, char *err, size_t errlen)
{
    bool known = false;
    cal_status rc =
        catalog_shard_known(catalog, shard_id, host, port, db_name, &known, err, errlen);
    if (rc != CAL_OK || known)
        return rc;
    struct db_val p[4] = {DB_INT_V(shard_id), DB_CSTR_V(host), DB_INT_V(port), DB_CSTR_V(db_name)};
    return db_query(catalog, SQL_ADD_SHARD, p, 4, NULL, err, errlen);
}

/* One row of two integers from sql (params p), into a and b (b may be NULL). */
static cal_status
query_ints(struct db *db, const char *sql, const struct db_val *p, size_t np, int64_t *a,
           int64_t *b, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val c[2];
    cal_status rc = db_query(db, sql, p, np, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, c, 2, err, errlen);
    if (r < 0)
        return CAL_ERR;
    *a = r > 0 && c[0].type == DB_INT ? c[0].i : 0;
    if (b != NULL)
        *b = r > 0 && c[1].type == DB_INT ? c[1].i : 0;
    drain(st);
    return CAL_OK;
}

cal_status
catalog_shard_is_empty(struct db *shard_db, char *err, size_t errlen)
{
    int64_t owners = 0, listings = 0, has_owners = 0, has_listings = 0;
    /* A table not there yet (the schema is still to be applied, or was
     * half applied) holds nothing. */
    cal_status rc =
        query_ints(shard_db, SQL_SHARD_TABLES, NULL, 0, &has_owners, &has_listings, err, errlen);
    if (rc == CAL_OK && has_owners)
        rc = query_ints(shard_db, SQL_ANY_OWNER_ROW, NULL, 0, &owners, NULL, err, errlen);
    if (rc == CAL_OK && has_listings)
        rc = query_ints(shard_db, SQL_ANY_LISTING, NULL, 0, &listings, NULL, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (owners > 0 || listings > 0) {
        snprintf(err, errlen,
                 "the shard is not empty (it %s): a shard of another cluster, or one left by an"
                 " earlier bootstrap; a shard joins empty",
                 owners > 0 ? "owns vbuckets" : "holds listings");
        return CAL_EINVAL;
    }
    return CAL_OK;
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
    struct db_val p[3] = {DB_INT_V(num_vbuckets), DB_INT_V(nshards), DB_INT_V(shard_index)};
    int64_t others = 0, own = 0, epoch = 0;
    cal_status rc = query_ints(shard_db, SQL_OTHER_OWNER_ROWS, p, 3, &others, NULL, err, errlen);
    if (rc == CAL_OK)
        rc = query_ints(shard_db, SQL_OWN_ROWS, p, 3, &own, &epoch, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int64_t layout =
        shard_index < num_vbuckets ? (int64_t)((num_vbuckets - 1 - shard_index) / nshards) + 1 : 0;
    if (own == 0 && others == 0)
        return catalog_shard_is_empty(shard_db, err, errlen) != CAL_OK
                   ? CAL_EINVAL
                   : db_query(shard_db, SQL_OWNER_ROWS, p, 3, NULL, err, errlen);
    if (others == 0 && (own != layout || epoch != 1)) {
        /* Given back the vbuckets it gave away (at epoch 1), it would own
         * them beside the shard that owns them now. */
        snprintf(err, errlen,
                 "shard %u owns %lld of the %lld vbuckets of vbucket %% %u = %u (epochs up to"
                 " %lld): vbuckets moved since the bootstrap; restore the catalog instead of"
                 " bootstrapping again",
                 shard_index, (long long)own, (long long)layout, nshards, shard_index,
                 (long long)epoch);
        return CAL_EINVAL;
    }
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

cal_status
catalog_shard_max_id(struct db *shard_db, uint64_t *max_id, char *err, size_t errlen)
{
    struct db_val p[1] = {DB_INT_V((int64_t)IDBLOCK_MAX)};
    int64_t v = 0;
    cal_status rc = query_ints(shard_db, SQL_MAX_ID, p, 1, &v, NULL, err, errlen);
    *max_id = rc == CAL_OK && v > 0 ? (uint64_t)v : 0;
    return rc;
}

cal_status
catalog_ids_above(struct db *catalog, uint64_t max_id, bool *moved, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[2] = {DB_INT_V((int64_t)(max_id + 1)), DB_INT_V((int64_t)(max_id + 1))};
    *moved = false;
    cal_status rc = db_query(catalog, SQL_IDS_ABOVE, p, 2, &st, err, errlen);
    if (rc == CAL_OK)
        *moved = db_affected_rows(st) > 0;
    return rc;
}
