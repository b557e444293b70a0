/* Cache keys of the availability cache (see cachekey.h for the scheme). */
#include "common/cachekey.h"

#include <string.h>

#include "common/date.h"
#include "common/util.h"

/* Keys are made for every listing of every search: written by hand, not
 * through snprintf's format parser. */
static char *
put_prefix(char *p, char kind, uint64_t listing_id)
{
    memcpy(p, "cal:v1:", 7);
    p[7] = kind;
    p[8] = ':';
    return p + 9 + cal_put_u64(p + 9, listing_id);
}

size_t
cachekey_listing(uint64_t listing_id, char *buf)
{
    char *p = put_prefix(buf, 'L', listing_id);
    *p = '\0';
    return (size_t)(p - buf);
}

size_t
cachekey_month(uint64_t listing_id, int year, unsigned month, char *buf)
{
    /* YYYYMM: four digits of the year, two of the month (dates are years
     * 0000-9999; a negative year, which no date has, becomes 0000) */
    unsigned y = year < 0 ? 0 : (unsigned)year % 10000, m = month % 100;
    char *p = put_prefix(buf, 'M', listing_id);
    *p++ = ':';
    const unsigned digits[6] = {y / 1000, y / 100 % 10, y / 10 % 10, y % 10, m / 10, m % 10};
    for (size_t i = 0; i < 6; i++)
        *p++ = (char)('0' + digits[i]);
    *p = '\0';
    return (size_t)(p - buf);
}

size_t
cachekey_month_of(uint64_t listing_id, int32_t night, char *buf)
{
    int y;
    unsigned m, d;
    date_to_ymd(night, &y, &m, &d);
    return cachekey_month(listing_id, y, m, buf);
}
