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
    struct listing back;
    if (n <= 0 || (size_t)n >= size || !cacheval_decode_listing(buf, (size_t)n, &back))
        return 0;
    return (size_t)n;
}

/* Digits at *p, at most max, then a space (taken) or the end: memcached is
 * not trusted to hold only what this daemon wrote. */
static bool
take_uint(const char **p, const char *end, uint64_t max, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (s == end || *s < '0' || *s > '9')
        return false;
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s++ - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (s < end && *s++ != ' ')
        return false;
    *p = s;
    *out = v;
    return true;
}

bool
cacheval_decode_listing(const char *v, size_t len, struct listing *l)
{
    const char *p = v + 3, *end = v + len;
    uint64_t version, rules, price, min, max;
    if (len < 3 || memcmp(v, "L1 ", 3) != 0 || !take_uint(&p, end, INT64_MAX, &version) ||
        !take_uint(&p, end, INT64_MAX, &rules) ||
        !take_uint(&p, end, (uint64_t)BOOKING_MAX_PRICE, &price) || end - p < 4)
        return false;
    for (int i = 0; i < 3; i++)
        if (p[i] < 'A' || p[i] > 'Z')
            return false;
    if (p[3] != ' ')
        return false;
    memcpy(l->currency, p, 3);
    l->currency[3] = '\0';
    p += 4;
    if (!take_uint(&p, end, BOOKING_MAX_NIGHTS - 1, &min) || min < 1 || p == end || p[-1] != ' ' ||
        !take_uint(&p, end, BOOKING_MAX_NIGHTS - 1, &max) || max < min || p != end ||
        end[-1] == ' ')
        return false;
    l->version = version;
    l->rules_version = rules;
    l->default_price = (int64_t)price;
    l->min_nights = (int)min;
    l->max_nights = (int)max;
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
    struct night_row back[31];
    size_t nback = 0;
    if (off >= size || !cacheval_decode_month(buf, off, first_day, back, &nback, 31, NULL))
        return 0;
    return off;
}

bool
cacheval_decode_month(const char *v, size_t len, int32_t first_day, struct night_row *rows,
                      size_t *n, size_t max, uint64_t *version_out)
{
    const char *p = v, *end = v + len;
    if (len < 4 || memcmp(v, "M1 ", 3) != 0)
        return false;
    p += 3;
    uint64_t version = 0;
    if (p == end || *p < '0' || *p > '9')
        return false;
    while (p < end && *p >= '0' && *p <= '9') {
        if (version > (INT64_MAX - 9) / 10)
            return false;
        version = version * 10 + (uint64_t)(*p++ - '0');
    }
    unsigned days = (unsigned)(date_next_month(first_day) - first_day), last = 0;
    while (p < end) {
        if (*p++ != ' ' || p == end)
            return false;
        unsigned day = 0;
        while (p < end && *p >= '0' && *p <= '9' && day < 100)
            day = day * 10 + (unsigned)(*p++ - '0');
        /* A day of this month, after the previous row's. */
        if (day <= last || day > days || p == end)
            return false;
        last = day;
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
        while (p < end && *p >= '0' && *p <= '9' && price <= BOOKING_MAX_PRICE)
            price = price * 10 + (*p++ - '0');
        if (price > BOOKING_MAX_PRICE || *n == max)
            return false;
        struct night_row *r = &rows[(*n)++];
        memset(r, 0, sizeof(*r));
        r->night = first_day + (int32_t)day - 1;
        r->status = st;
        r->has_price = has_price;
        r->price = price;
        r->version = version;
    }
    if (version_out != NULL)
        *version_out = version;
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
