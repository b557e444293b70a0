/* Compact, versioned cache values (see cacheval.h for the formats). */
#include "calendard/cacheval.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/date.h"

static const char status_char[] = {'a', 'b', 'k'}; /* available, blocked, booked */

size_t
cacheval_encode_listing(const struct listing *l, char *buf, size_t size)
{
    int n = snprintf(buf, size, "L1 %" PRIu64 " %" PRIu64 " %" PRId64 " %s %d %d", l->version,
                     l->rules_version, l->default_price, l->currency, l->min_nights, l->max_nights);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

bool
cacheval_decode_listing(const char *v, size_t len, struct listing *l)
{
    char tmp[128], cur[8];
    int consumed = 0;
    if (len >= sizeof(tmp) || len < 3 || memcmp(v, "L1 ", 3) != 0)
        return false;
    memcpy(tmp, v, len);
    tmp[len] = '\0';
    if (sscanf(tmp, "L1 %" SCNu64 " %" SCNu64 " %" SCNd64 " %3s %d %d%n", &l->version,
               &l->rules_version, &l->default_price, cur, &l->min_nights, &l->max_nights,
               &consumed) != 6 ||
        (size_t)consumed != len || strlen(cur) != 3)
        return false;
    memcpy(l->currency, cur, 4);
    return true;
}

size_t
cacheval_encode_month(uint64_t version, int32_t first_day, const struct night_row *rows,
                      size_t nrows, char *buf, size_t size)
{
    int32_t next = date_next_month(first_day);
    int n = snprintf(buf, size, "M1 %" PRIu64, version);
    size_t off = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; i < nrows && off < size; i++) {
        const struct night_row *r = &rows[i];
        if (r->night < first_day || r->night >= next)
            continue;
        if (r->has_price)
            n = snprintf(buf + off, size - off, " %d%c%" PRId64, r->night - first_day + 1,
                         status_char[r->status], r->price);
        else
            n = snprintf(buf + off, size - off, " %d%c", r->night - first_day + 1,
                         status_char[r->status]);
        off += n > 0 ? (size_t)n : 0;
    }
    return off < size ? off : 0;
}

bool
cacheval_decode_month(const char *v, size_t len, int32_t first_day, struct night_row *rows,
                      size_t *n, size_t max)
{
    const char *p = v, *end = v + len;
    if (len < 4 || memcmp(v, "M1 ", 3) != 0)
        return false;
    p += 3;
    uint64_t version = 0;
    if (p == end || *p < '0' || *p > '9')
        return false;
    while (p < end && *p >= '0' && *p <= '9')
        version = version * 10 + (uint64_t)(*p++ - '0');
    while (p < end) {
        if (*p++ != ' ' || p == end)
            return false;
        unsigned day = 0;
        while (p < end && *p >= '0' && *p <= '9' && day < 100)
            day = day * 10 + (unsigned)(*p++ - '0');
        if (day < 1 || day > 31 || p == end)
            return false;
        enum night_status st;
        if (*p == 'a')
            st = NIGHT_AVAILABLE;
        else if (*p == 'b')
            st = NIGHT_BLOCKED;
        else if (*p == 'k')
            st = NIGHT_BOOKED;
        else
            return false;
        p++;
        bool has_price = p < end && *p >= '0' && *p <= '9';
        int64_t price = 0;
        while (p < end && *p >= '0' && *p <= '9' && price < BOOKING_MAX_PRICE)
            price = price * 10 + (*p++ - '0');
        if (*n == max)
            return false;
        struct night_row *r = &rows[(*n)++];
        memset(r, 0, sizeof(*r));
        r->night = first_day + (int32_t)day - 1;
        r->status = st;
        r->has_price = has_price;
        r->price = price;
        r->version = version;
    }
    return true;
}

size_t
cacheval_lease(uint64_t token, char *buf, size_t size)
{
    int n = snprintf(buf, size, "LEASE %016" PRIx64, token);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

bool
cacheval_is_lease(const char *v, size_t len)
{
    return len >= 6 && memcmp(v, "LEASE ", 6) == 0;
}
