/* The shard map: listing -> vbucket -> shard, loaded from the catalog. */
#include "sharding/shardmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

uint64_t
shardmap_fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb93e185a9fe5ULL;
    k ^= k >> 33;
    return k;
}

uint32_t
shardmap_vbucket(uint64_t listing_id, uint32_t num_vbuckets)
{
    return (uint32_t)(shardmap_fmix64(listing_id) % num_vbuckets);
}

void
shardmap_destroy(struct shardmap *map)
{
    if (map == NULL)
        return;
    free(map->owner);
    free(map->epoch);
    free(map->shards);
    free(map);
}

const struct shard_info *
shardmap_shard(const struct shardmap *map, uint32_t shard_id)
{
    for (size_t i = 0; i < map->nshards; i++)
        if (map->shards[i].shard_id == shard_id)
            return &map->shards[i];
    return NULL;
}

static const char SQL_NUM_VBUCKETS[] = "SELECT value FROM cluster WHERE name = 'num_vbuckets'";
static const char SQL_SHARDS[] =
    "SELECT shard_id, host, port, db_name, state FROM shards ORDER BY shard_id";
static const char SQL_VBUCKETS[] = "SELECT vbucket, shard_id, epoch FROM vbuckets";

cal_status
shardmap_load(struct db *catalog, struct shardmap **out, char *err, size_t errlen)
{
    struct shardmap *map = cal_calloc(1, sizeof(*map));
    struct db_stmt *st;
    struct db_val c[5];
    cal_status rc;
    int r;
    size_t cap = 0, seen = 0;
    bool txn = false;

    /* One snapshot, so a map never mixes two states of a move: sessions are
     * READ COMMITTED (where every statement reads anew), so this one
     * transaction is REPEATABLE READ. */
    rc = db_exec(catalog, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", err, errlen);
    if (rc != CAL_OK)
        goto out;
    rc = db_exec(catalog, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", err, errlen);
    if (rc != CAL_OK)
        goto out;
    txn = true;
    if ((rc = db_query(catalog, SQL_NUM_VBUCKETS, NULL, 0, &st, err, errlen)) != CAL_OK)
        goto out;
    if ((r = db_fetch(st, c, 1, err, errlen)) <= 0) {
        if (r == 0)
            snprintf(err, errlen, "catalog has no num_vbuckets: run calendar-admin bootstrap");
        rc = CAL_ERR;
        goto out;
    }
    long nvb = c[0].type == DB_STR ? strtol(c[0].s, NULL, 10) : 0;
    while (db_fetch(st, c, 1, err, errlen) > 0)
        ;
    if (nvb <= 0 || nvb > SHARDMAP_MAX_VBUCKETS) {
        snprintf(err, errlen, "catalog num_vbuckets is invalid");
        rc = CAL_ERR;
        goto out;
    }
    map->num_vbuckets = (uint32_t)nvb;
    map->owner = cal_malloc(sizeof(*map->owner) * (size_t)nvb);
    map->epoch = cal_calloc((size_t)nvb, sizeof(*map->epoch));
    if ((rc = db_query(catalog, SQL_SHARDS, NULL, 0, &st, err, errlen)) != CAL_OK)
        goto out;
    while ((r = db_fetch(st, c, 5, err, errlen)) > 0) {
        if (map->nshards == cap) {
            cap = cap ? cap * 2 : 8;
            map->shards = cal_realloc(map->shards, cap * sizeof(*map->shards));
        }
        struct shard_info *s = &map->shards[map->nshards++];
        memset(s, 0, sizeof(*s));
        s->shard_id = (uint32_t)c[0].i;
        cal_strlcpy(s->host, c[1].s ? c[1].s : "", sizeof(s->host));
        s->port = (unsigned)c[2].i;
        cal_strlcpy(s->db_name, c[3].s ? c[3].s : "", sizeof(s->db_name));
        cal_strlcpy(s->state, c[4].s ? c[4].s : "", sizeof(s->state));
    }
    if (r < 0) {
        rc = CAL_ERR;
        goto out;
    }
    unsigned char *have = cal_calloc((size_t)nvb, 1);
    if ((rc = db_query(catalog, SQL_VBUCKETS, NULL, 0, &st, err, errlen)) != CAL_OK) {
        free(have);
        goto out;
    }
    while ((r = db_fetch(st, c, 3, err, errlen)) > 0) {
        if (c[0].i < 0 || c[0].i >= nvb || shardmap_shard(map, (uint32_t)c[1].i) == NULL)
            continue;
        map->owner[c[0].i] = (uint32_t)c[1].i;
        map->epoch[c[0].i] = (uint64_t)c[2].i;
        if (!have[c[0].i]) {
            have[c[0].i] = 1;
            seen++;
        }
    }
    free(have);
    if (r < 0) {
        rc = CAL_ERR;
        goto out;
    }
    if (seen != (size_t)nvb) {
        snprintf(err, errlen, "catalog maps %zu of %ld vbuckets to a known shard", seen, nvb);
        rc = CAL_ERR;
        goto out;
    }
    rc = CAL_OK;
out:
    if (txn)
        db_rollback(catalog);
    if (rc != CAL_OK) {
        shardmap_destroy(map);
        map = NULL;
    }
    *out = map;
    return rc;
}
