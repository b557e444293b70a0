/* Pure decoding of one CDC change event (Debezium-style JSON, with or without
 * the JSON converter's schemas.enable envelope) into the cache keys it makes
 * stale. No sockets: the invalidator deletes the keys, the tests compare them
 * with cachekey_*. */
#ifndef CAL_INVALIDATE_H
#define CAL_INVALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/cachekey.h"
#include "common/status.h"

/* A nights event touches at most: the month of the before image, the month of
 * the after image and the listing key of each image (the listing_id of the two
 * images differs only if a row was re-keyed, which the calendar never does). */
#define INVALIDATE_MAX_KEYS 4

enum invalidate_table {
    INVALIDATE_TABLE_NONE = 0,     /* tombstone: no row, nothing to delete */
    INVALIDATE_TABLE_LISTINGS,     /* listing key */
    INVALIDATE_TABLE_NIGHTS,       /* month keys of both images + listing key */
    INVALIDATE_TABLE_RESERVATIONS, /* nothing cached per reservation */
    INVALIDATE_TABLE_OTHER,        /* a table the cache does not depend on */
    INVALIDATE_TABLE_COUNT
};

struct invalidate_event {
    enum invalidate_table table;
    char op;              /* 'c', 'u', 'd', 'r', 't' (truncate); 0 for a tombstone */
    int64_t source_ts_ms; /* source.ts_ms (commit time on the database); -1 if absent or 0 */
    bool flush_all;       /* truncate of a cached table: every key may be stale */
    bool partial;         /* one image of an update could not be decoded: keys are the other's */
    size_t nkeys;         /* distinct keys, in the order listed above */
    char keys[INVALIDATE_MAX_KEYS][CACHEKEY_MAX];
    size_t keylens[INVALIDATE_MAX_KEYS];
};

/* Decodes one Kafka message value. value NULL or len 0 is a tombstone
 * (CAL_OK, table NONE, no keys). topic (may be NULL) names the table when the
 * event has no source.table: its last dot-separated part.
 *
 * CAL_OK: ev filled; delete ev->keys (and flush everything if flush_all).
 * With ev->partial, one image of the event could not be decoded (err says
 * why): the keys are the other image's, and the caller reports the event.
 * CAL_EINVAL: the value cannot be decoded (not JSON, no op, a cached table's
 * row without a usable listing_id or night, ...); err says why. The caller
 * logs and counts it and moves on: a poison message must not stall its
 * partition forever, and nothing the invalidator could do later would make it
 * decodable. */
cal_status invalidate_decode(const char *topic, const char *value, size_t len,
                             struct invalidate_event *ev, char *err, size_t errlen);

/* Decodes the relay's hint (see event_hint(), header "calendar-invalidate")
 * into what invalidate_decode() finds in the value it came with, without
 * parsing JSON. CAL_EINVAL when the hint is malformed: decode the value. */
cal_status invalidate_decode_hint(const char *hint, size_t len, struct invalidate_event *ev,
                                  char *err, size_t errlen);

/* "listings", "nights", "reservations", "other", "none". */
const char *invalidate_table_name(enum invalidate_table table);

#endif
