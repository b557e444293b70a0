/* Reservation ids that never repeat, across every calendard and every
 * shard. A vbucket move brings one shard's reservations onto another, where
 * reservation_id is the primary key, so an id made by one daemon must never
 * be made by another. Each daemon takes a block of ids from the catalog's
 * id_blocks row with one UPDATE and hands them out from memory, one per
 * booking request; the next block is taken once half of the current one is
 * used, so the catalog is on a booking's path once per IDBLOCK_SIZE
 * requests. Ids are not time-ordered: each daemon has its own block. */
#ifndef CAL_IDBLOCK_H
#define CAL_IDBLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "common/db.h"
#include "common/util.h"

#define IDBLOCK_SIZE (1u << 20)
#define IDBLOCK_RETRY_MS 1000
/* The highest id: every reservation id stays exact in a JSON double. */
#define IDBLOCK_MAX ((1ULL << 53) - 1)

/* Takes n ids from wherever they live: *first..*first + n - 1 are this
 * caller's for good, whatever happens later. */
typedef cal_status (*idblock_fetch_fn)(void *arg, uint64_t n, uint64_t *first, char *err,
                                       size_t errlen);

struct idblock;

/* Blocks of size ids; after a failed fetch the next one waits retry_ms.
 * Caller frees with idblock_destroy(). */
struct idblock *idblock_create(uint64_t size, unsigned retry_ms, idblock_fetch_fn fetch, void *arg);
void idblock_destroy(struct idblock *ids); /* NULL is a no-op */

/* The next id. Fails (the fetch's status and message) only when the block
 * is used up and taking a new one failed: callers that waited for that same
 * attempt, or came within retry_ms of it, get its answer rather than trying
 * again each in turn. A failed fetch is logged. */
cal_status idblock_next(struct idblock *ids, uint64_t *id, char *err, size_t errlen);

/* The catalog's fetch: arg is a struct idblock_catalog. */
struct idblock_catalog {
    const struct db_conf *conf;
    struct db *db; /* connected on first use, again after it broke */
};
cal_status idblock_fetch_catalog(void *arg, uint64_t n, uint64_t *first, char *err, size_t errlen);

#endif
