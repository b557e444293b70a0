/* Planning vbucket moves. */
#include "sharding/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void
plan_compute(const struct plan_shard *shards, size_t nshards, const uint32_t *owner,
             const bool *pinned, const uint64_t *listings, uint32_t num_vbuckets,
             struct plan_move **moves, size_t *nmoves)
{
    uint32_t *where = cal_malloc(num_vbuckets * sizeof(*where));
    int64_t *load = cal_calloc(nshards, sizeof(*load));
    bool *stuck = cal_calloc(nshards, sizeof(*stuck)); /* a donor with nothing that fits */
    /* Placed by this plan: never picked again (its moves run side by side). */
    bool *moved = cal_calloc(num_vbuckets, sizeof(*moved));
    size_t nactive = 0, n = 0, cap = 0;
    int64_t total = 0;
    memcpy(where, owner, num_vbuckets * sizeof(*where));
    if (pinned != NULL)
        memcpy(moved, pinned, num_vbuckets * sizeof(*moved));
    *moves = NULL;
    for (size_t s = 0; s < nshards; s++)
        nactive += !shards[s].draining;
    for (uint32_t v = 0; v < num_vbuckets; v++) {
        for (size_t s = 0; s < nshards; s++) {
            if (shards[s].shard_id == where[v]) {
                load[s] += 1 + (int64_t)listings[v];
                total += 1 + (int64_t)listings[v];
            }
        }
    }
    for (size_t iter = 0; nactive > 0 && iter < num_vbuckets; iter++) {
        /* Excess over the fair share: a draining shard's share is 0, and a
         * draining shard with vbuckets left gives first, whatever the others'
         * excess, so that it always ends empty. */
        size_t donor = SIZE_MAX, recv = SIZE_MAX;
        int64_t fair = total / (int64_t)nactive, best_excess = 0, low = INT64_MAX;
        bool donor_drains = false;
        for (size_t s = 0; s < nshards; s++) {
            int64_t excess = load[s] - (shards[s].draining ? 0 : fair);
            bool drains = shards[s].draining && load[s] > 0;
            if (!stuck[s] &&
                (drains > donor_drains ||
                 (drains == donor_drains && excess > best_excess && (drains || load[s] > 0)))) {
                best_excess = excess;
                donor = s;
                donor_drains = drains;
            }
            if (!shards[s].draining && load[s] < low) {
                low = load[s];
                recv = s;
            }
        }
        if (donor == SIZE_MAX || recv == SIZE_MAX || donor == recv)
            break;
        int64_t gap = shards[donor].draining ? load[donor] : (load[donor] - load[recv]) / 2;
        uint32_t pick = UINT32_MAX;
        int64_t pick_w = 0;
        for (uint32_t v = 0; v < num_vbuckets; v++) {
            if (where[v] != shards[donor].shard_id || moved[v])
                continue;
            int64_t w = 1 + (int64_t)listings[v];
            /* Largest vbucket that does not overshoot; any one when draining. */
            if ((w <= gap || shards[donor].draining) && w > pick_w) {
                pick = v;
                pick_w = w;
            }
        }
        if (pick == UINT32_MAX) {
            stuck[donor] = true; /* every vbucket of it would overshoot: try the next */
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            *moves = cal_realloc(*moves, cap * sizeof(**moves));
        }
        (*moves)[n++] =
            (struct plan_move){pick, shards[donor].shard_id, shards[recv].shard_id, listings[pick]};
        where[pick] = shards[recv].shard_id;
        moved[pick] = true;
        load[donor] -= pick_w;
        load[recv] += pick_w;
        memset(stuck, 0, nshards * sizeof(*stuck)); /* the loads changed */
    }
    *nmoves = n;
    free(moved);
    free(stuck);
    free(where);
    free(load);
}

/* Moves the journal has not finished: resume ends each on its target. */
static const char SQL_UNFINISHED[] = "SELECT vbucket, target_shard FROM moves"
                                     " WHERE phase NOT IN ('done', 'abandoned')";

static const char SQL_LOADS[] =
    "SELECT l.vbucket, COUNT(*) FROM listings l JOIN vbucket_owner o ON o.vbucket = l.vbucket"
    " GROUP BY l.vbucket";

cal_status
plan_load(struct cluster *c, struct plan_move **moves, size_t *nmoves, char *err, size_t errlen)
{
    const struct shardmap *map = c->map;
    uint64_t *listings = cal_calloc(map->num_vbuckets, sizeof(*listings));
    struct plan_shard *shards = cal_calloc(map->nshards, sizeof(*shards));
    uint32_t *owner = cal_malloc(map->num_vbuckets * sizeof(*owner));
    bool *pinned = cal_calloc(map->num_vbuckets, sizeof(*pinned));
    memcpy(owner, map->owner, map->num_vbuckets * sizeof(*owner));
    struct db_stmt *mst;
    struct db_val mcol[2];
    cal_status rc = db_query(c->catalog, SQL_UNFINISHED, NULL, 0, &mst, err, errlen);
    if (rc == CAL_OK) {
        int r;
        while ((r = db_fetch(mst, mcol, 2, err, errlen)) > 0)
            if (mcol[0].i >= 0 && mcol[0].i < map->num_vbuckets) {
                pinned[mcol[0].i] = true;
                owner[mcol[0].i] = (uint32_t)mcol[1].i;
            }
        if (r < 0)
            rc = CAL_ERR;
    }
    for (size_t s = 0; s < map->nshards && rc == CAL_OK; s++) {
        shards[s].shard_id = map->shards[s].shard_id;
        shards[s].draining = strcmp(map->shards[s].state, "draining") == 0;
        /* A shard that owns no vbucket has no listings to count: a drained
         * one may be down for maintenance, and must not stop the plan. */
        uint32_t owned = 0;
        for (uint32_t v = 0; v < map->num_vbuckets && owned == 0; v++)
            owned += map->owner[v] == shards[s].shard_id;
        if (owned == 0)
            continue;
        struct db *db = cluster_shard(c, shards[s].shard_id, err, errlen);
        struct db_stmt *st;
        struct db_val col[2];
        if (db == NULL) {
            rc = CAL_EUNAVAIL;
            break;
        }
        if ((rc = db_query(db, SQL_LOADS, NULL, 0, &st, err, errlen)) != CAL_OK)
            break;
        int r;
        while ((r = db_fetch(st, col, 2, err, errlen)) > 0)
            if (col[0].i >= 0 && col[0].i < map->num_vbuckets)
                listings[col[0].i] = (uint64_t)col[1].i;
        if (r < 0)
            rc = CAL_ERR;
    }
    if (rc == CAL_OK)
        plan_compute(shards, map->nshards, owner, pinned, listings, map->num_vbuckets, moves,
                     nmoves);
    free(owner);
    free(pinned);
    free(listings);
    free(shards);
    return rc;
}
