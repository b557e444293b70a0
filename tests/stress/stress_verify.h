/* After a stress run: reads every shard with SQL and holds the rows of the
 * run's listings against each other and against what the clients were told. */
#ifndef CAL_STRESS_VERIFY_H
#define CAL_STRESS_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "tests/lib/testenv.h"
#include "tests/stress/stress_load.h"

struct stress_verdict {
    uint64_t double_bookings;      /* pairs of overlapping confirmed reservations of one listing,
                                    * and pairs where one was booked while the other, cancelled
                                    * since or not, held a night of it (by calendar version) */
    uint64_t night_mismatches;     /* booked nights rows disagreeing with confirmed reservations */
    uint64_t lost_acknowledged;    /* acknowledged effects missing or undone in SQL */
    uint64_t phantom_bookings;     /* rows for keys finally refused or never sent */
    uint64_t duplicate_idempotent; /* keys with more than one row, plus replay mismatches */
    uint64_t routing_mismatches;   /* rows whose vbucket is not fmix64(listing_id) % 4096 */
    uint64_t unowned_rows;         /* rows on a shard that does not own their vbucket: a write past
                                    * the fence, or a move's copy left behind (run no move meanwhile) */
    uint64_t owner_mismatches;     /* vbuckets without exactly one vbucket_owner row across the
                                    * shards, or owned by another shard than the catalog's map
                                    * names (run no move meanwhile) */
    uint64_t id_collisions;        /* reservation ids of the run that another listing holds too,
                                    * on any shard (one per listing past the first) */
    uint64_t protocol_errors;      /* answers calendard never gives (stress_stats says which),
                                    * filled by the caller from the load's count */
    uint64_t lost_blocks;          /* nights a block answered 200 held that are not blocked in SQL,
                                    * with no unblock of them that may have come after it (and, when
                                    * booked, before the booking, by calendar version), or booked
                                    * before it: sold over the host's block, freed, or blocked over a
                                    * booking */
    uint64_t phantom_blocks;   /* nights blocked in SQL that no block that may have applied covers
                                * (or each was undone by an unblock answered 200 after it) */
    uint64_t price_mismatches; /* acknowledged bookings whose total_price SQL does not hold, or
                                * that is not the sum of their nights' prices at the version
                                * they committed at (by the set_price answers) */
    uint64_t blocks_sent;      /* for the report, and "tested nothing" when none was held */
    uint64_t blocks_held;      /* blocks answered 200 with a version */
    uint64_t prices_sent;      /* set_price requests, for the report */
    uint64_t prices_held;      /* ... answered 200 with a version */
    uint64_t prices_checked;   /* acknowledged bookings whose total_price was held to them */
    uint64_t sql_reservations; /* rows read, for the report */
    uint64_t sql_confirmed;
    uint64_t sql_refused;           /* kept refusals */
    uint64_t sql_refused_competing; /* ... whose stay another reservation (not a host block)
                                     * of the listing overlaps: bookings that competed */
    uint64_t sql_booked_nights;
    uint64_t sql_blocked_nights;
    int64_t cache_mismatches; /* stale availability reads; -1: not checked */
    int64_t cache_compared;   /* cached values compared with SQL; -1: no memcached */
};

/* What the clients were told: the final answer of every key, every block
 * and unblock sent, and how often a replay was answered otherwise than the
 * key's first answer. The verifier sorts records and hostops in place. */
struct stress_claims {
    struct stress_record *records;
    size_t nrecords;
    size_t caprecords; /* room in records: --inject sold_while_held adds one */
    struct stress_hostop *hostops;
    size_t nhostops;
    size_t caphostops; /* room in hostops: --inject cancelled_sale or stale_price adds one */
    uint64_t replay_mismatches;
};

/* Verifies the listings [conf->listing_base, + conf->nlistings) on every
 * shard of env against the claims, and every shard's vbucket_owner rows
 * against the catalog's map. Returns 0, or -1 when SQL could not be read or
 * the catalog names a shard that env's SHARD_DSNS lacks, whose rows it would
 * never read (err says why): then nothing was verified. */
int stress_verify_run(const struct testenv *env, const struct stress_conf *conf,
                      struct stress_claims *claims, struct stress_verdict *verdict, char *err,
                      size_t errlen);

/* A row stress_verify_inject() planted in a vbucket other than its
 * listing's, or on a shard that does not own its vbucket, or for a listing
 * outside the run under a reservation id of the run, or a
 * vbucket_owner row it planted or moved. A vbucket move would carry a row
 * along or report it as stray, and a fence row decides where calendard may
 * write, so stress_verify_restore() takes it back once the run is verified
 * (the other faults stay in the run's own rows). */
struct stress_injected {
    int shard; /* index into env->shard_dsns; -1: nothing to take back */
    int64_t reservation_id;
    int64_t vbucket;      /* where the planted row is */
    int64_t home_vbucket; /* >= 0: move the row back there; -1: delete it */
    int owner_row;        /* the planted row is vbucket's vbucket_owner row, at epoch */
    int64_t epoch;
    int home_shard; /* owner_row: >= 0, the shard it was moved from (moved back); -1: deleted */
};

/* Is fault one that stress_verify_inject() plants? */
int stress_verify_has_fault(const char *fault);

/* Testing the verifier: corrupts this run's own rows in SQL the way a bug
 * would, so the following stress_verify_run() must count it; each fault
 * aims at one check (tests/stress/selftest.sh says which). fault is one of
 * "double_booking", "lost_ack", "delete_ack", "phantom", "shift_refusal",
 * "night_mismatch", "shift_dates", "lost_refusal", "cancel_undone",
 * "other_id", "duplicate_key", "wrong_vbucket", "stray_row", "second_owner",
 * "owner_elsewhere", "shared_id", "lost_block", "booked_over_block",
 * "sold_while_held" (SQL and claims: a second stay of an acknowledged and
 * cancelled booking's nights, held at the same versions),
 * "phantom_block", "repriced", "cancelled_sale" and "stale_price" (the
 * two faults added to the claims, not SQL: a held block under a cancelled
 * booking's night; a held set_price of a booked night just before the
 * booking). *injected
 * says what to take back afterwards (shard -1: nothing). Returns 0, or -1
 * with err filled (no suitable key, SQL error, unknown fault). */
int stress_verify_inject(const struct testenv *env, const char *fault, struct stress_claims *claims,
                         struct stress_injected *injected, char *err, size_t errlen);

/* Takes back what stress_verify_inject() planted outside the run's own
 * rows (nothing when injected->shard is -1). Returns 0, or -1 with err. */
int stress_verify_restore(const struct testenv *env, const struct stress_injected *injected,
                          char *err, size_t errlen);

/* True when the verdict shows an invariant broken. */
int stress_verify_failed(const struct stress_verdict *verdict);

#endif
