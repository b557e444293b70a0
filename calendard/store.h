/* Calendar operations on one shard connection: the SQL of the read and
 * write paths. Every write transaction first reads its vbucket's fence row
 * in share mode (docs/design.md, invariant 4) and answers CAL_EMOVED without it. */
#ifndef CAL_STORE_H
#define CAL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "calendard/booking.h"
#include "calendard/request.h"
#include "common/db.h"

/* Rows of one calendar read: the listing and its night rows in a range.
 * rows grows as needed; free with calendar_read_clear(). */
struct calendar_read {
    struct listing listing;
    bool found;
    bool moved; /* store_read_many: its vbucket is not owned by the shard read */
    /* The server read was read-only (@@global.read_only: fenced for a
     * move to another server, and perhaps already replaced), or calendard
     * found it replaced once it had answered: what it answered may be
     * older than the shard. Answered, never cached. */
    bool maybe_stale;
    size_t nrows, cap;
    struct night_row *rows;
};

void calendar_read_clear(struct calendar_read *read);
struct night_row *calendar_read_add(struct calendar_read *read);

/* One calendar read of a batch: the listing and its rows in [from, to) into
 * *out; rc is what store_read_calendar() would have answered. */
struct store_read {
    uint32_t vbucket;
    uint64_t listing_id;
    int32_t from, to;
    struct calendar_read *out;
    cal_status rc;
};

/* Listing settings and versions. CAL_ENOTFOUND, CAL_EMOVED. */
cal_status store_get_listing(struct db *db, uint32_t vbucket, uint64_t listing_id,
                             struct listing *out, char *err, size_t errlen);

/* Creates or replaces settings; *created tells which. out gets the result. */
cal_status store_put_listing(struct db *db, uint32_t vbucket, uint64_t listing_id,
                             const struct listing_settings *set, int *created, struct listing *out,
                             char *err, size_t errlen);

/* Replaces the settings of an existing listing only at calendar version
 * if_match (0: any version), checked and written in one statement (If-Match
 * of a PUT). CAL_EINVAL when the listing is at another version,
 * CAL_ENOTFOUND when there is none, CAL_EMOVED; out gets the result. */
cal_status store_replace_listing(struct db *db, uint32_t vbucket, uint64_t listing_id,
                                 const struct listing_settings *set, uint64_t if_match,
                                 struct listing *out, char *err, size_t errlen);

/* The listing and its rows in [from, to), in one statement (one snapshot). */
cal_status store_read_calendar(struct db *db, uint32_t vbucket, uint64_t listing_id, int32_t from,
                               int32_t to, struct calendar_read *out, char *err, size_t errlen);

/* The reads of n bookings of one shard in one statement (one snapshot),
 * each night of each stay a key lookup. Returns CAL_OK with every r[i].rc
 * set, or the statement's failure (no rc set). */
cal_status store_read_each(struct db *db, struct store_read *r, size_t n, char *err, size_t errlen);

/* Commits a booking planned on a read at listing->rules_version, one
 * statement per step: BEGIN, the fence row in share mode, the nights
 * (version-checked updates, inserts), the listing's version bump under its
 * rules_version, the reservation, COMMIT (seven round trips with the read).
 * CAL_ECONFLICT when anything the plan depended on changed (retry from a new
 * read), CAL_EDUP when the idempotency key or the id exists already,
 * CAL_EMOVED without the fence row, CAL_EUNKNOWN when the connection broke
 * during COMMIT, CAL_OK with res->version set after COMMIT returned. */
cal_status store_book(struct db *db, const struct listing *listing, const struct booking_plan *plan,
                      struct reservation *res, const char *key, size_t keylen, char *err,
                      size_t errlen);

/* The same transaction as store_book(), same statuses, in one round trip:
 * its statements inside one compound statement with plain parameters (one
 * prepared text per shape of the stay: nights with and without rows), each
 * check rolling back inside. Cheaper for the server than the batch form
 * below; CAL_EUNKNOWN when the connection broke while it ran. */
cal_status store_book_one(struct db *db, const struct listing *listing,
                          const struct booking_plan *plan, struct reservation *res, const char *key,
                          size_t keylen, char *err, size_t errlen);

/* One booking of a batch: inputs as for store_book(), rc/err the outcome. */
struct store_booking {
    const struct listing *listing;
    const struct booking_plan *plan;
    struct reservation *res;
    const char *key;
    size_t keylen;
    cal_status rc;
    char err[256];
};

/* Commits bookings of one shard in one transaction, so they share one
 * COMMIT (one durable flush). First all together in one round trip (a
 * compound statement, see store.c); if anything fails, again with one
 * savepoint per booking, so a conflict fails only its own booking. Either
 * way in listing order, whatever the order of b: two transactions lock the
 * rows of the listings they share in the same order and never deadlock
 * over them. A batch
 * of one is store_book_one(). Each b[i].rc is what store_book() would
 * have answered (CAL_EUNKNOWN for all when the connection broke while the
 * block ran); CAL_OK only after the shared COMMIT returned. */
void store_book_many(struct db *db, struct store_booking *b, size_t n);

/* The reservation recorded under an idempotency key. CAL_ENOTFOUND;
 * CAL_EMOVED without the vbucket's fence row (after a move, the old shard's
 * copy may be stale or gone). */
cal_status store_find_by_key(struct db *db, uint32_t vbucket, uint64_t listing_id, const char *key,
                             size_t keylen, struct reservation *out, char *err, size_t errlen);

/* Keeps res (its id, stay, guest and request hash) refused under key:
 * status 'refused', no nights. CAL_EDUP when the key (or the id) has a row
 * already, CAL_EMOVED without the fence row; committed on CAL_OK. */
cal_status store_refuse(struct db *db, const struct listing *listing, const struct reservation *res,
                        const char *key, size_t keylen, char *err, size_t errlen);

cal_status store_get_reservation(struct db *db, uint32_t vbucket, uint64_t listing_id,
                                 uint64_t reservation_id, struct reservation *out, char *err,
                                 size_t errlen);

/* Cancels and frees the nights; cancelling a cancelled reservation is CAL_OK. */
cal_status store_cancel(struct db *db, uint32_t vbucket, uint64_t listing_id,
                        uint64_t reservation_id, struct reservation *out, char *err, size_t errlen);

/* Host change over [from, to). if_match 0 = unconditional. CAL_EINVAL when
 * refused: with the booked nights in booked[] (*nbooked > 0, at most
 * BOOKING_MAX_NIGHTS) when blocking a booked night, with *nbooked 0 when
 * if_match differs (precondition failed; evaluated first, so a stale
 * if_match over booked nights is the latter). */
cal_status store_calendar(struct db *db, uint32_t vbucket, uint64_t listing_id,
                          const struct calendar_request *req, uint64_t if_match, uint64_t *version,
                          int32_t *booked, size_t *nbooked, char *err, size_t errlen);

/* Many listings of one shard and one range in one statement. reads[i]
 * belongs to ids[i] (routed to vbuckets[i]; an id may repeat): found false
 * when the listing does not exist here; moved when this shard does not own
 * its vbucket (its rows may be gone already), counted in *not_owned. */
cal_status store_read_many(struct db *db, const uint64_t *ids, const uint32_t *vbuckets, size_t n,
                           int32_t from, int32_t to, struct calendar_read *reads, size_t *not_owned,
                           char *err, size_t errlen);

/* SELECT 1: readiness probe. */
cal_status store_ping(struct db *db, char *err, size_t errlen);

#endif
