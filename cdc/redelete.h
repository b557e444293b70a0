/* The invalidator's queue of second deletes: cache keys already deleted once,
 * each to be deleted again at a due time (its first delete + the grace
 * delay). Bounded: when room is needed the oldest keys are taken early. Pure:
 * no sockets, no clock of its own (the caller passes monotonic times), so a
 * unit test drives it. Single-threaded. */
#ifndef CAL_REDELETE_H
#define CAL_REDELETE_H

#include <stddef.h>
#include <stdint.h>

struct redelete;

/* A queue of at most max_keys keys (max_keys > 0); free with
 * redelete_destroy(). */
struct redelete *redelete_create(size_t max_keys);
void redelete_destroy(struct redelete *rq); /* redelete_destroy(NULL) is a no-op */

/* Keys queued now, and how many more fit. */
size_t redelete_len(const struct redelete *rq);
size_t redelete_room(const struct redelete *rq);

/* Queues copies of keys[0..n) (each shorter than CACHEKEY_MAX), due at
 * due_us, which is not before the due time of any key already queued (the
 * grace delay is fixed). Queues as many as fit, oldest first, and returns
 * how many: all of them once redelete_take() made room for n. */
size_t redelete_push(struct redelete *rq, const char *const *keys, const size_t *keylens, size_t n,
                     uint64_t due_us);

/* Takes keys off the queue, oldest first, at most max: every key due at
 * now_us, then more (before their time) until at least reserve keys fit
 * (reserve <= max and reserve <= the queue's size). keys[i] and keylens[i]
 * point into the queue: valid until the next redelete_push(). *early (may be
 * NULL) is set to how many of them were not due yet; they are the last
 * ones. Returns how many were taken. */
size_t redelete_take(struct redelete *rq, uint64_t now_us, size_t reserve, const char **keys,
                     size_t *keylens, size_t max, size_t *early);

/* The due time of the oldest key; UINT64_MAX when the queue is empty. */
uint64_t redelete_next_due(const struct redelete *rq);

#endif
