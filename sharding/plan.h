/* Planning vbucket moves: even out listings across active shards, and empty
 * draining ones. Pure over the loads; plan_load reads them from the shards. */
#ifndef CAL_PLAN_H
#define CAL_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sharding/cluster.h"

struct plan_move {
    uint32_t vbucket;
    uint32_t source;
    uint32_t target;
    uint64_t weight; /* listings moved */
};

/* Per-shard input of the planner. */
struct plan_shard {
    uint32_t shard_id;
    bool draining;
};

/* Greedy: repeatedly moves from the most loaded shard (a draining shard's
 * fair share is zero, and a draining shard with vbuckets left always gives
 * first) to the least loaded active shard the vbucket that best halves
 * their difference; a donor none of whose vbuckets fits is passed over
 * until the loads change; a vbucket moves at most once per plan (the moves
 * run side by side). Weight of a vbucket = 1 + its listings, so empty
 * vbuckets spread too. A vbucket pinned (pinned NULL: none) is never moved:
 * its load stays with owner. A draining shard always ends empty, but for
 * its pinned vbuckets. Caller frees *moves. */
void plan_compute(const struct plan_shard *shards, size_t nshards, const uint32_t *owner,
                  const bool *pinned, const uint64_t *listings, uint32_t num_vbuckets,
                  struct plan_move **moves, size_t *nmoves);

/* Reads the loads from the cluster and plans. A vbucket whose move is
 * unfinished in the journal is left out, its load counted at the move's
 * target (where resume ends it). Caller frees *moves. */
cal_status plan_load(struct cluster *c, struct plan_move **moves, size_t *nmoves, char *err,
                     size_t errlen);

#endif
