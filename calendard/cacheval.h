/* Compact, versioned cache values of the availability cache (pure codec):
 *   listing: "L1 <version> <rules_version> <default_price> <currency> <min> <max>"
 *   month:   "M1 <version>" then " <day><a|b|k>[<price>]" per night row
 *   lease:   "LEASE <token>" (a fill in progress; a read treats it as a miss) */
#ifndef CAL_CACHEVAL_H
#define CAL_CACHEVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calendard/booking.h"

#define CACHEVAL_MAX 1024 /* enough for 31 rows with prices */

/* The encoders answer the value's length, or 0 when it does not fit or the
 * decoder would refuse it (a listing written by SQL outside the API's
 * ranges, say): such a value is not cached, rather than filled and then
 * deleted as undecodable by every read. */
size_t cacheval_encode_listing(const struct listing *l, char *buf, size_t size);
/* Fills every field but listing_id and vbucket; false on a malformed value
 * (a currency not of three letters A-Z, a number out of range, min_nights
 * above max_nights). */
bool cacheval_decode_listing(const char *v, size_t len, struct listing *l);

/* rows: the rows of one month (others are skipped); first_day: its 1st. */
size_t cacheval_encode_month(uint64_t version, int32_t first_day, const struct night_row *rows,
                             size_t nrows, char *buf, size_t size);
/* Appends the month's rows to rows[*n..max) and sets *version (if not
 * NULL); false on a malformed value (a day outside the month or out of
 * order, a number out of range). */
bool cacheval_decode_month(const char *v, size_t len, int32_t first_day, struct night_row *rows,
                           size_t *n, size_t max, uint64_t *version);

size_t cacheval_lease(uint64_t token, char *buf, size_t size);
bool cacheval_is_lease(const char *v, size_t len);

#endif
