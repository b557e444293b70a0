/* Requests in flight per (listing, Idempotency-Key) in this daemon. A replay
 * that arrives while the original request is still running (its reply was
 * lost, but the daemon keeps retrying it) waits for the original to finish;
 * otherwise the replay could answer 409 and the original succeed a moment
 * later, and the key would have two different answers. At most
 * INFLIGHT_MAX_WAITERS replays of one key wait (each holds a worker while
 * it does): a client replaying faster than the original runs would
 * otherwise take every worker. Further ones are refused at once. */
#ifndef CAL_INFLIGHT_H
#define CAL_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct inflight;

#define INFLIGHT_MAX_WAITERS 16 /* replays of one key waiting at a time */

struct inflight *inflight_create(void);
void inflight_destroy(struct inflight *set); /* NULL is a no-op */

/* Claims the key, waiting at most timeout_ms for another request holding it;
 * false when it is still held then, or at once when INFLIGHT_MAX_WAITERS
 * requests wait for it already. */
bool inflight_acquire(struct inflight *set, uint64_t listing_id, const char *key, size_t len,
                      unsigned timeout_ms);
void inflight_release(struct inflight *set, uint64_t listing_id, const char *key, size_t len);

#endif
