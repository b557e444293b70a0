/* Cache keys of the availability cache, shared by calendard (fills) and the
 * CDC invalidator (deletes), so one change invalidates exactly what it
 * affects:
 *   cal:v1:L:<listing_id>          listing settings and calendar version;
 *                                  any change of the listings row deletes it
 *   cal:v1:M:<listing_id>:<YYYYMM> the night rows of one month; a change of a
 *                                  nights row deletes its month (before and
 *                                  after images) */
#ifndef CAL_CACHEKEY_H
#define CAL_CACHEKEY_H

#include <stddef.h>
#include <stdint.h>

#define CACHEKEY_MAX 48

/* Both write a NUL-terminated key into buf[CACHEKEY_MAX] and return its length. */
size_t cachekey_listing(uint64_t listing_id, char *buf);
size_t cachekey_month(uint64_t listing_id, int year, unsigned month, char *buf);

/* The month key of the month containing `night` (days since 1970-01-01). */
size_t cachekey_month_of(uint64_t listing_id, int32_t night, char *buf);

#endif
