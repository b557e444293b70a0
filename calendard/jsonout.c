/* A small JSON writer for the hot read answers. */
#include "calendard/jsonout.h"

#include <string.h>

#include "common/date.h"
#include "common/util.h"

void
jsonout_init(struct jsonout *j, size_t cap)
{
    j->cap = cap < 64 ? 64 : cap;
    j->p = cal_malloc(j->cap);
    j->len = 0;
}

static void
reserve(struct jsonout *j, size_t more)
{
    if (j->len + more + 1 > j->cap) {
        while (j->len + more + 1 > j->cap)
            j->cap *= 2;
        j->p = cal_realloc(j->p, j->cap);
    }
}

void
jsonout_raw(struct jsonout *j, const char *s, size_t len)
{
    reserve(j, len);
    memcpy(j->p + j->len, s, len);
    j->len += len;
}

void
jsonout_lit(struct jsonout *j, const char *s)
{
    jsonout_raw(j, s, strlen(s));
}

void
jsonout_int(struct jsonout *j, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    reserve(j, n + 1);
    if (v < 0)
        j->p[j->len++] = '-';
    while (n > 0)
        j->p[j->len++] = tmp[--n];
}

void
jsonout_date(struct jsonout *j, int32_t days)
{
    reserve(j, 12);
    j->p[j->len++] = '"';
    date_format(days, j->p + j->len);
    j->len += 10;
    j->p[j->len++] = '"';
}

char *
jsonout_finish(struct jsonout *j, size_t *len)
{
    reserve(j, 0);
    j->p[j->len] = '\0';
    *len = j->len;
    return j->p;
}
