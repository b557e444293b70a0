/* Group commit of bookings per shard, without a thread of its own: a
 * request with a booking queues it; if a lane is free, it becomes a
 * leader and commits, on its own connection and in one transaction, its
 * booking and whatever else has queued (bookings of one listing only if they
 * do not overlap); otherwise it waits, and a later leader takes it. Each
 * request gets its own outcome after the shared COMMIT. `lanes`
 * transactions may be in flight while the shard has at most that many
 * bookings in progress (from batcher_enter to batcher_leave): at low load
 * every booking commits at once on its own connection, as without batching.
 * Under load one transaction is in flight, and the bookings that queue
 * behind it share the next one and its durable flush. Lanes are counted
 * per group (the pool a booking's connection came from): after a shard
 * moved to another server, old and new bookings never share a transaction
 * and never wait for each other's. Under load a booking queues before its
 * calendar is read, and its leader reads the batch's calendars in one
 * statement before the commit (batcher_read_book). */
#ifndef CAL_BATCH_H
#define CAL_BATCH_H

#include <stddef.h>

#include "calendard/store.h"
#include "common/db.h"

struct batcher;

/* Called by a leader after its transaction with each booking it tried to
 * commit and its outcome (sb[i].rc; CAL_OK: committed), before any of them
 * is answered: work due once per transaction, not once per booking
 * (calendard deletes the committed ones' cache keys in one round trip).
 * The leader's lane is handed on first. Not called when the leader had
 * nothing to commit (every booking it read was refused). */
typedef void (*batcher_committed_fn)(void *arg, const struct store_booking *sb, size_t n);

/* max_batch: bookings per transaction at most; lanes: transactions in flight
 * at most, at low load; committed (NULL for none) is called with arg. */
struct batcher *batcher_create(unsigned max_batch, unsigned lanes, batcher_committed_fn committed,
                               void *arg);
void batcher_destroy(struct batcher *b); /* NULL is a no-op; nothing may be queued */

/* Commits one booking of db's shard through the batcher; returns what
 * store_book() would. db is the caller's connection, used if it leads;
 * group is the pool it came from: only bookings of one group share a
 * transaction. If another booking's connection, leading, broke before the
 * commit, it queues again (up to 3 times in all). */
cal_status batcher_book(struct batcher *b, struct db *db, const void *group,
                        const struct listing *listing, const struct booking_plan *plan,
                        struct reservation *res, const char *key, size_t keylen, char *err,
                        size_t errlen);

/* Plans a booking on its calendar read: CAL_OK with sb's listing, plan,
 * res, key and keylen filled (pointing at the caller's), or the status to
 * answer without booking. Called on the thread of whichever request leads
 * the booking's transaction, while the booking's own request waits: it must
 * not use a connection. */
typedef cal_status (*batcher_prepare_fn)(void *arg, struct store_booking *sb);

/* Reads a booking's calendar ([check_in, check_out) of listing_id, as
 * store_read_calendar() does, into *out), plans it (prepare) and commits
 * it: returns the read's status if it failed, prepare's if it refused,
 * else batcher_book()'s. At low load it reads at once on db and takes a
 * lane of its own. Under load the leader of its transaction reads it with
 * the batch's other unread bookings in one statement (store_read_each())
 * before the commit, so a booking waits once, not for a read and then
 * for a transaction. If that statement fails, each booking whose own
 * connection is not broken reads alone on it. */
cal_status batcher_read_book(struct batcher *b, struct db *db, const void *group, uint32_t vbucket,
                             uint64_t listing_id, int32_t check_in, int32_t check_out,
                             struct calendar_read *out, batcher_prepare_fn prepare, void *arg,
                             char *err, size_t errlen);

/* Bookings waiting in the queue, not yet taken by a leader: for tests. */
size_t batcher_bookings_waiting(struct batcher *b);

/* A booking of the shard is in progress (reading, planning, committing)
 * between these two calls: the load that decides how many lanes are open. */
void batcher_enter(struct batcher *b);
void batcher_leave(struct batcher *b);

#endif
