/* Group commit of bookings per shard: request threads hand their planned
 * booking to the shard's batcher and wait (unless it is the shard's only one); the batcher thread
 * commits whatever has gathered (bookings of one listing only if they do not overlap) in one
 * transaction on its own connection, and wakes each request with its own
 * outcome after the shared COMMIT. While one batch commits, the next one
 * gathers, so a busy shard commits many bookings per durable flush. */
#ifndef CAL_BATCH_H
#define CAL_BATCH_H

#include <stddef.h>

#include "calendard/store.h"
#include "common/db.h"

struct batcher;

/* conf: the shard's connection settings (a dedicated connection, outside the
 * request pool, so waiting requests can never starve the batcher). */
struct batcher *batcher_create(const struct db_conf *conf, unsigned max_batch);
void batcher_destroy(struct batcher *b); /* NULL is a no-op; fails what is queued */

/* Commits one booking through the batcher; returns what store_book() would.
 * When the shard has no other booking being committed, the booking commits
 * at once on the caller's db (store_book) instead: a lone booking gains
 * nothing from the hand-off to the batcher thread and back. */
cal_status batcher_book(struct batcher *b, struct db *db, const struct listing *listing,
                        const struct booking_plan *plan, struct reservation *res, const char *key,
                        size_t keylen, char *err, size_t errlen);

#endif
