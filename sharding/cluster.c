/* An operator's view of the cluster: catalog, map, shard connections. */
#include "sharding/cluster.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

cal_status
cluster_open(struct cluster *c, const struct db_conf *catalog_conf,
             const struct db_conf *shard_conf, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->catalog_conf = *catalog_conf;
    c->shard_conf = *shard_conf;
    c->catalog = db_connect(catalog_conf, err, errlen);
    if (c->catalog == NULL)
        return CAL_EUNAVAIL;
    return cluster_reload(c, err, errlen);
}

void
cluster_close(struct cluster *c)
{
    for (size_t i = 0; i < CAL_ARRAY_LEN(c->shard_db); i++)
        db_close(c->shard_db[i]);
    db_close(c->catalog);
    shardmap_destroy(c->map);
    memset(c, 0, sizeof(*c));
}

cal_status
cluster_reconnect_catalog(struct cluster *c, char *err, size_t errlen)
{
    struct db *db = db_connect(&c->catalog_conf, err, errlen);
    if (db == NULL)
        return CAL_EUNAVAIL;
    db_close(c->catalog);
    c->catalog = db;
    return CAL_OK;
}

cal_status
cluster_reload(struct cluster *c, char *err, size_t errlen)
{
    struct shardmap *map;
    cal_status rc = shardmap_load(c->catalog, &map, err, errlen);
    if (rc != CAL_OK)
        return rc;
    /* A connection stays with its slot only while the slot names the same
     * shard at the same address: shards added or removed shift the slots,
     * and a shard's server may have been replaced (a replica promoted);
     * the others reconnect lazily. */
    for (size_t i = 0; c->map != NULL && i < CAL_ARRAY_LEN(c->shard_db); i++) {
        const struct shard_info *was = i < c->map->nshards ? &c->map->shards[i] : NULL;
        const struct shard_info *now = i < map->nshards ? &map->shards[i] : NULL;
        if (was != NULL && now != NULL && was->shard_id == now->shard_id &&
            strcmp(was->host, now->host) == 0 && was->port == now->port &&
            strcmp(was->db_name, now->db_name) == 0)
            continue;
        db_close(c->shard_db[i]);
        c->shard_db[i] = NULL;
    }
    shardmap_destroy(c->map);
    c->map = map;
    return CAL_OK;
}

struct db *
cluster_shard(struct cluster *c, uint32_t shard_id, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->map->nshards && i < CAL_ARRAY_LEN(c->shard_db); i++) {
        const struct shard_info *s = &c->map->shards[i];
        if (s->shard_id != shard_id)
            continue;
        if (c->shard_db[i] != NULL && db_broken(c->shard_db[i])) {
            db_close(c->shard_db[i]);
            c->shard_db[i] = NULL;
        }
        if (c->shard_db[i] == NULL) {
            struct db_conf conf = c->shard_conf;
            cal_strlcpy(conf.host, s->host, sizeof(conf.host));
            conf.port = s->port;
            cal_strlcpy(conf.database, s->db_name, sizeof(conf.database));
            c->shard_db[i] = db_connect(&conf, err, errlen);
        }
        return c->shard_db[i];
    }
    snprintf(err, errlen, "no shard %u in the catalog", shard_id);
    return NULL;
}

void
cluster_drain(struct db_stmt *st)
{
    struct db_val v[1];
    char e[64];
    while (db_fetch(st, v, 1, e, sizeof(e)) > 0)
        ;
}

cal_status
cluster_query_row(struct db *db, const char *sql, const struct db_val *p, size_t np,
                  struct db_val *cols, size_t ncols, bool *found, char *err, size_t errlen)
{
    struct db_stmt *st;
    cal_status rc = db_query(db, sql, p, np, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, cols, ncols, err, errlen);
    cluster_drain(st);
    *found = r > 0;
    return r < 0 ? CAL_ERR : CAL_OK;
}
