/* Online move of one vbucket between shards (docs/design.md, "Rebalancing"):
 *   copy     copy the vbucket's rows to the target while writes go on, then
 *            catch up by listing version (every calendar change bumps it)
 *            and count of kept refusals (listing_refusals: a refusal bumps no
 *            version)
 *   cutover  on the source, take the fence row FOR UPDATE (in-flight writes
 *            finish, new ones wait), copy the last delta, delete the fence
 *            row, COMMIT: from here no shard owns the vbucket
 *   target   give the fence row to the target at epoch + 1
 *   catalog  point the catalog at the target (same epoch), journal it
 *   cleanup  check that the target holds every source row (the same, or
 *            newer), then delete the vbucket's rows from the source
 * Each phase is journaled in the catalog's moves table first, and every
 * phase is safe to run again, so a crash anywhere is finished by resume and
 * two shards never own a vbucket at once. */
#ifndef CAL_MOVE_H
#define CAL_MOVE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "sharding/cluster.h"

struct move_progress {
    uint64_t move_id;
    uint32_t vbucket;
    uint32_t source;
    uint32_t target;
    const char *phase;
    uint64_t rows_copied;
    /* Of the source's rows, by the cleanup's check of the copy (0: none yet). */
    uint64_t rows_checked;
    double elapsed_s;
    double freeze_ms; /* write pause of the vbucket; < 0 until cutover */
};

#define MOVE_PROGRESS_EVERY_US 5000000u

struct move_opts {
    unsigned max_freeze_ms;  /* a cutover whose last delta would take longer catches up first */
    const char *crash_after; /* tests: SIGKILL ourselves after this phase is durable */
    void (*progress)(const struct move_progress *p);
    /* Between the chunks of a copy pass or delete, progress is called
     * (and rows_copied journaled) once this long passed since its last
     * call (microseconds); 0: MOVE_PROGRESS_EVERY_US. */
    unsigned progress_every_us;
    /* Tests: called just before the run checks that it still holds the
     * vbucket's move lock, as it does before each write of the vbucket's
     * rows or fence, so that a test can take the lock away there. step names
     * the check: "copy-clear" (of the target's leftovers), "copy-pass",
     * "cutover", "cutover-catch-up", "cutover-commit", "target" (its fence
     * row), "cleanup-verify", "cleanup-delete"; and "resume-lock", just
     * before resume takes the lock of a move it listed. NULL in production. */
    void (*before_lock_check)(const char *step, uint32_t vbucket);
    /* Tests: called by each catch-up pass between reading the listings'
     * versions and reading their rows. NULL in production. */
    void (*after_versions)(uint32_t vbucket);
};

/* Moves vbucket to shard target. CAL_OK with out->phase "none" when it is
 * there already (nothing done); CAL_EINVAL when a move of it is unfinished
 * (run move_resume). CAL_EDUP when the target
 * holds a reservation id of the vbucket for another listing: the copy never
 * overwrites that row, and the move stops before its cutover (nothing
 * changed owner; err names the id and both listings). out gets the final
 * figures. */
cal_status move_vbucket(struct cluster *c, uint32_t vbucket, uint32_t target,
                        const struct move_opts *opts, struct move_progress *out, char *err,
                        size_t errlen);

/* One catch-up pass of vbucket from src to dst, as a move runs them but
 * outside any move (no journal, no move lock, no fence): copies every
 * listing whose version or count of kept refusals differs, with its
 * nights and reservations (of its kept refusals, those dst lacks); a row
 * reaches dst only when its version there is older, and never over another
 * listing's row with its key (CAL_EDUP). *copied grows by the rows sent.
 * opts: its test hooks (NULL: none). For tests of the copy. */
cal_status move_copy_pass(struct db *src, struct db *dst, uint32_t vbucket,
                          const struct move_opts *opts, uint64_t *copied, char *err, size_t errlen);

/* A failure that goes away by itself (another run holds the vbucket,
 * writes kept a cutover busy, a shard did not answer or lost its answer):
 * running the same again later is the remedy. */
bool move_status_retry(cal_status st);

/* Finishes every unfinished move of the journal; *resumed counts them. A
 * move that fails does not stop the others: err names the first failure
 * and says how many more failed, each is logged; the status is the first
 * failure's that move_status_retry refuses, else the first failure's. */
cal_status move_resume(struct cluster *c, const struct move_opts *opts, unsigned *resumed,
                       char *err, size_t errlen);

/* What move_abandon gave up. */
struct move_abandoned {
    uint64_t move_id;
    uint32_t source, target;
    char phase[17];         /* the phase it was in */
    bool target_cleared;    /* the target's copied rows are deleted */
    char target_error[512]; /* else why not: unreachable, or the delete failed */
};

/* Gives up vbucket's unfinished move while its source still owns the
 * vbucket (phase copy, or cutover before the source's fence row went): the
 * catalog's state goes back to active, the journal says 'abandoned', and
 * the target's copied rows are deleted if it answers (else a later copy to
 * it deletes them first). For a move whose target is gone for good, which
 * would otherwise block every move of the vbucket. CAL_ENOTFOUND without
 * an unfinished move; CAL_EINVAL past that point (only resume can finish
 * it); CAL_EAGAIN when another run holds the vbucket's move lock;
 * CAL_EUNAVAIL when the source does not answer (it must say it still owns
 * the vbucket). */
cal_status move_abandon(struct cluster *c, uint32_t vbucket, struct move_abandoned *out, char *err,
                        size_t errlen);

#endif
