/* A small JSON writer for hot paths (see jsonout.h). */
#include "common/jsonout.h"

#include <stdbool.h>
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

/* The digits of u, and a '-' first if negative. */
static void
put_decimal(struct jsonout *j, uint64_t u, bool negative)
{
    reserve(j, 21);
    if (negative)
        j->p[j->len++] = '-';
    j->len += cal_put_u64(j->p + j->len, u);
}

void
jsonout_int(struct jsonout *j, int64_t v)
{
    put_decimal(j, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0);
}

void
jsonout_u64(struct jsonout *j, uint64_t v)
{
    put_decimal(j, v, false);
}

/* Length of the valid UTF-8 sequence at s[0..len), or 0 when invalid. */
static size_t
utf8_seq_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

void
jsonout_str(struct jsonout *j, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    jsonout_raw(j, "\"", 1);
    size_t i = 0;
    while (i < len) {
        size_t run = i; /* printable ASCII other than '"' and '\\': as is */
        while (run < len && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) {
            jsonout_raw(j, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);
            jsonout_raw(j, n == 0 ? "?" : s + i, n == 0 ? 1 : n);
            i += n == 0 ? 1 : n;
            continue;
        }
        char esc[6] = {'\\', 0};
        size_t elen = 2;
        switch (c) {
        case '"':
        case '\\':
            esc[1] = (char)c;
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            if (c >= 0x20) { /* DEL */
                esc[0] = (char)c;
                elen = 1;
                break;
            }
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        jsonout_raw(j, esc, elen);
        i++;
    }
    jsonout_raw(j, "\"", 1);
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
