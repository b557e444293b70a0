/* Verification of vbuckets across shards: the fence (exactly one shard owns
 * each vbucket, the catalog's owner, at the catalog's epoch) and, for every
 * shard other than the owner that holds rows of a vbucket, a row-by-row
 * comparison with the owner: exact when that shard is the target of the
 * vbucket's unfinished move (copy or cutover), covering (verify_copy's
 * rule) when it is the source of its move waiting in cleanup. Any other
 * shard has no business holding rows of the vbucket: they are counted as
 * stray, not compared. */
#ifndef CAL_VERIFY_H
#define CAL_VERIFY_H

#include <stdint.h>
#include <stdio.h>

#include "sharding/cluster.h"

struct verify_report {
    uint64_t vbuckets;     /* vbuckets checked */
    uint64_t compared;     /* (vbucket, other shard) pairs compared row by row */
    uint64_t missing;      /* rows the owner has and the other shard lacks */
    uint64_t extra;        /* rows the other shard has and the owner lacks */
    uint64_t different;    /* same primary key, different values */
    uint64_t fence_errors; /* vbuckets with no owner row, two, or a wrong one */
    uint64_t collisions;   /* of those missing or extra: the key is another listing's there */
    uint64_t stray;        /* rows on a shard that neither owns their vbucket nor takes part in
                            * its move (an abandoned move's copy the target could not delete) */
    uint64_t moving;       /* vbuckets whose check found something while a move changed them
                            * (a rebalance running): not checked, their findings dropped */
    uint64_t misrouted;    /* (listing, vbucket) pairs of rows whose vbucket column is not the
                            * listing's (fmix64(id) % N), or is past N: written by hand or by a
                            * loader that computed it otherwise (moves copy the column as is) */
    uint64_t checked;      /* rows of the other shard (a move's source) compared row by row */
};

/* vbucket < 0: every vbucket. Details of each problem go to out. The map
 * is loaded again first. A vbucket that shows a problem is checked against
 * the journal, the catalog and its move lock once the scan is done: if a
 * move changed it meanwhile, its findings are dropped and it is counted in
 * rep->moving instead. */
cal_status verify_run(struct cluster *c, int64_t vbucket, struct verify_report *rep, FILE *out,
                      char *err, size_t errlen);

/* A move's copy before its source's rows are deleted: every row of vbucket
 * on source (frozen since the cutover) must be on target (its owner now)
 * with the same values, or at a newer version (written since). Fills
 * rep->missing, rep->different and rep->collisions; rep->extra stays 0 (rows new on the
 * target are expected). Details of each problem go to out. after_table
 * (NULL: none) is called with arg once each table is compared, rep->checked
 * counting the source's rows so far: a large vbucket's check takes a while. */
cal_status verify_copy(struct db *target, struct db *source, uint32_t vbucket, uint32_t source_id,
                       void (*after_table)(void *arg, const struct verify_report *rep), void *arg,
                       struct verify_report *rep, FILE *out, char *err, size_t errlen);

#endif
