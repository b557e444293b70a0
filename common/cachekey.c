/* Cache keys of the availability cache (see cachekey.h for the scheme). */
#include "common/cachekey.h"

#include <stdio.h>

#include "common/date.h"

size_t
cachekey_listing(uint64_t listing_id, char *buf)
{
    return (size_t)snprintf(buf, CACHEKEY_MAX, "cal:v1:L:%llu", (unsigned long long)listing_id);
}

size_t
cachekey_month(uint64_t listing_id, int year, unsigned month, char *buf)
{
    return (size_t)snprintf(buf, CACHEKEY_MAX, "cal:v1:M:%llu:%04d%02u",
                            (unsigned long long)listing_id, year % 10000, month % 100);
}

size_t
cachekey_month_of(uint64_t listing_id, int32_t night, char *buf)
{
    int y;
    unsigned m, d;
    date_to_ymd(night, &y, &m, &d);
    return cachekey_month(listing_id, y, m, buf);
}
