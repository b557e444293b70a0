/* The shard map: listing -> vbucket -> shard, loaded from the catalog. */
#ifndef CAL_SHARDMAP_H
#define CAL_SHARDMAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/db.h"

#define SHARDMAP_MAX_VBUCKETS 65536

struct shard_info {
    uint32_t shard_id;
    char host[256];
    unsigned port;
    char db_name[65];
    char state[17];
};

struct shardmap {
    uint32_t num_vbuckets;
    uint32_t *owner; /* [num_vbuckets] shard_id */
    uint64_t *epoch; /* [num_vbuckets] */
    size_t nshards;
    struct shard_info *shards;
};

/* MurmurHash3's 64-bit finalizer in shape, with 0xc4ceb93e185a9fe5 as its
 * second multiplier where MurmurHash3 has 0xc4ceb9fe1a85ec53: a stable,
 * documented (README), well-mixing hash. Never change it: every listing of
 * every cluster would move to another vbucket. */
uint64_t shardmap_fmix64(uint64_t k);

/* vbucket = fmix64(listing_id) mod num_vbuckets. Never changes for a cluster. */
uint32_t shardmap_vbucket(uint64_t listing_id, uint32_t num_vbuckets);

/* Reads cluster.num_vbuckets, shards and vbuckets from the catalog in one
 * consistent snapshot. Caller frees *out with shardmap_destroy(). A vbucket
 * without an owner row is an error (the catalog is incomplete). */
cal_status shardmap_load(struct db *catalog, struct shardmap **out, char *err, size_t errlen);

void shardmap_destroy(struct shardmap *map);

/* The shard with this id, or NULL. */
const struct shard_info *shardmap_shard(const struct shardmap *map, uint32_t shard_id);

#endif
