/* An operator's view of the cluster: a catalog connection, the shard map,
 * and lazily opened admin connections to every shard. For tools, not the
 * daemon (which has its own pools). */
#ifndef CAL_CLUSTER_H
#define CAL_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "common/db.h"
#include "sharding/shardmap.h"

struct cluster {
    struct db_conf catalog_conf;
    struct db_conf shard_conf; /* credentials; address from the catalog */
    struct db *catalog;
    struct shardmap *map;
    struct db *shard_db[256]; /* by index into map->shards */
};

/* Connects to the catalog and loads the map. Caller frees with cluster_close(). */
cal_status cluster_open(struct cluster *c, const struct db_conf *catalog_conf,
                        const struct db_conf *shard_conf, char *err, size_t errlen);
void cluster_close(struct cluster *c);

/* A new catalog session in place of the current one (its named locks go
 * with it); the current one stays when the catalog cannot be reached. */
cal_status cluster_reconnect_catalog(struct cluster *c, char *err, size_t errlen);

/* Reloads the map (after a move changed it). */
cal_status cluster_reload(struct cluster *c, char *err, size_t errlen);

/* Admin connection to a shard by id; NULL and err when unknown or down. */
struct db *cluster_shard(struct cluster *c, uint32_t shard_id, char *err, size_t errlen);

/* Drains the rest of a result set. */
void cluster_drain(struct db_stmt *st);

/* The first row sql answers on db, into cols (the rest drained); *found
 * says whether there was one. */
cal_status cluster_query_row(struct db *db, const char *sql, const struct db_val *p, size_t np,
                             struct db_val *cols, size_t ncols, bool *found, char *err,
                             size_t errlen);

#endif
