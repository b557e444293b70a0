/* Group commit of bookings per shard, without a thread of its own: a
 * request with a planned booking queues it; if fewer than `lanes`
 * transactions of the shard are in flight, it becomes a leader and commits,
 * on its own connection and in one transaction, its booking and whatever
 * else has queued (bookings of one listing only if they do not overlap);
 * otherwise it waits, and a later leader takes it. Each request gets its
 * own outcome after the shared COMMIT. At low load every booking commits at
 * once on its own connection, as without batching; under load the bookings
 * that queue behind busy lanes share one durable flush. */
#ifndef CAL_BATCH_H
#define CAL_BATCH_H

#include <stddef.h>

#include "calendard/store.h"
#include "common/db.h"

struct batcher;

/* max_batch: bookings per transaction at most; lanes: transactions in flight
 * at most. */
struct batcher *batcher_create(unsigned max_batch, unsigned lanes);
void batcher_destroy(struct batcher *b); /* NULL is a no-op; nothing may be queued */

/* Commits one booking of db's shard through the batcher; returns what
 * store_book() would. db is the caller's connection, used if it leads. */
cal_status batcher_book(struct batcher *b, struct db *db, const struct listing *listing,
                        const struct booking_plan *plan, struct reservation *res, const char *key,
                        size_t keylen, char *err, size_t errlen);

#endif
