/* Catalog writes done by operators: registering shards and the initial
 * vbucket assignment. Reads of the map are in shardmap.c. */
#ifndef CAL_CATALOG_H
#define CAL_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/db.h"

/* Sets cluster.num_vbuckets, or checks that it already has this value. */
cal_status catalog_set_num_vbuckets(struct db *catalog, uint32_t num_vbuckets, char *err,
                                    size_t errlen);

/* Is shard_id registered (*known)? CAL_EINVAL when it is, at another
 * address than host:port/db_name. */
cal_status catalog_shard_known(struct db *catalog, uint32_t shard_id, const char *host,
                               unsigned port, const char *db_name, bool *known, char *err,
                               size_t errlen);

/* Registers shard_id at host:port/db_name; a no-op when registered with the
 * same address, an error when registered with another. */
cal_status catalog_register_shard(struct db *catalog, uint32_t shard_id, const char *host,
                                  unsigned port, const char *db_name, char *err, size_t errlen);

/* CAL_EINVAL (err says which) when the shard owns a vbucket (a
 * vbucket_owner row) or holds a listing: one joining a cluster must not.
 * A database without those tables (not migrated yet) is empty. */
cal_status catalog_shard_is_empty(struct db *shard_db, char *err, size_t errlen);

/* Number of vbuckets rows in the catalog. */
cal_status catalog_count_vbuckets(struct db *catalog, uint64_t *count, char *err, size_t errlen);

/* Initial assignment, vbucket v to shard (v mod nshards) at epoch 1: first the
 * fence rows on shard i (shard_db), then the catalog rows. Both idempotent.
 * The fence rows are refused (CAL_EINVAL) when the shard owns a vbucket
 * outside this layout (a rerun with another shard list), owns part of it or
 * some at a later epoch (vbuckets moved since: a rerun against a lost
 * catalog would give them back), or owns none and holds listings. */
cal_status catalog_assign_owner_rows(struct db *shard_db, uint32_t num_vbuckets, uint32_t nshards,
                                     uint32_t shard_index, char *err, size_t errlen);
/* The highest reservation id on a shard that calendard could have made
 * (up to IDBLOCK_MAX), 0 when none. */
cal_status catalog_shard_max_id(struct db *shard_db, uint64_t *max_id, char *err, size_t errlen);

/* Moves the catalog's next reservation id past max_id (*moved: it was not
 * past already): ids an older release made from the clock, or a catalog
 * restored from an old backup, are never handed out again. */
cal_status catalog_ids_above(struct db *catalog, uint64_t max_id, bool *moved, char *err,
                             size_t errlen);

cal_status catalog_assign_vbuckets(struct db *catalog, uint32_t num_vbuckets, uint32_t nshards,
                                   char *err, size_t errlen);

#endif
