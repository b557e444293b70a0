/* Debezium-style JSON encoding of row changes, keys, topics and partitions,
 * written straight into a buffer. Pure: the relay feeds it decoded row
 * images. */
#include "cdc/event.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/date.h"
#include "common/util.h"
#include "sharding/shardmap.h"

const char *
event_op_name(enum event_op op)
{
    switch (op) {
    case EVENT_OP_CREATE:
        return "c";
    case EVENT_OP_UPDATE:
        return "u";
    case EVENT_OP_DELETE:
        return "d";
    }
    return "?";
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

/* The JSON text being written: values go straight into one buffer (no
 * tree per event: the relay encodes every row change it reads). */
struct out {
    char *p;
    size_t len, cap;
};

static void
out_reserve(struct out *o, size_t n)
{
    if (o->len + n + 1 <= o->cap)
        return;
    while (o->len + n + 1 > o->cap)
        o->cap = o->cap ? 2 * o->cap : 512;
    o->p = cal_realloc(o->p, o->cap);
}

static void
out_raw(struct out *o, const char *s, size_t n)
{
    out_reserve(o, n);
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void
out_lit(struct out *o, const char *s)
{
    out_raw(o, s, strlen(s));
}

static void
out_u64(struct out *o, uint64_t v)
{
    char buf[24];
    size_t n = sizeof(buf);
    do {
        buf[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    out_raw(o, buf + n, sizeof(buf) - n);
}

static void
out_i64(struct out *o, int64_t v)
{
    if (v < 0) {
        out_raw(o, "-", 1);
        out_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        out_u64(o, (uint64_t)v);
    }
}

/* A JSON string of (s, len): quotes, backslashes and control characters
 * escaped, UTF-8 kept; bytes that are not valid UTF-8 become '?' so one bad
 * value cannot stop the stream. */
static void
out_str(struct out *o, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    out_reserve(o, len + 2);
    o->p[o->len++] = '"';
    size_t i = 0;
    while (i < len) {
        size_t run = i; /* printable ASCII other than '"' and '\\': as is */
        while (run < len && s[run] >= 0x20 && s[run] < 0x7f && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) {
            out_raw(o, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);
            if (n == 0) {
                out_raw(o, "?", 1);
                i++;
            } else {
                out_raw(o, s + i, n);
                i += n;
            }
            continue;
        }
        char esc[7] = {'\\', 0};
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
            if (c >= 0x20) {
                out_raw(o, (const char *)&s[i], 1);
                i++;
                continue;
            }
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        out_raw(o, esc, elen);
        i++;
    }
    out_raw(o, "\"", 1);
}

static void
out_timestamp(struct out *o, const struct event_value *v)
{
    time_t t = (time_t)v->i;
    struct tm tm;
    if ((v->i == 0 && v->usec == 0) || gmtime_r(&t, &tm) == NULL) {
        out_lit(o, "null"); /* MariaDB's zero timestamp "0000-00-00 00:00:00" */
        return;
    }
    char buf[48];
    int n = snprintf(buf, sizeof(buf), "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    unsigned prec = v->precision > 6 ? 6 : v->precision;
    if (prec > 0) {
        char frac[8];
        snprintf(frac, sizeof(frac), "%06u", v->usec % 1000000u);
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ".%.*s", (int)prec, frac);
    }
    snprintf(buf + n, sizeof(buf) - (size_t)n, "Z\"");
    out_lit(o, buf);
}

static void
out_real(struct out *o, double d)
{
    if (!isfinite(d)) {
        out_lit(o, "null"); /* JSON has no NaN or infinity */
        return;
    }
    char buf[40];
    int n = snprintf(buf, sizeof(buf), "%.17g", d);
    /* A real stays a real when read back: 2 is written 2.0. */
    if (strpbrk(buf, ".eEn") == NULL && n > 0 && (size_t)n + 2 < sizeof(buf))
        memcpy(buf + n, ".0", 3);
    out_lit(o, buf);
}

/* One value; the caller leaves EVENT_ABSENT out. */
static void
out_value(struct out *o, const struct event_value *v)
{
    switch (v->type) {
    case EVENT_ABSENT:
    case EVENT_NULL:
        out_lit(o, "null");
        return;
    case EVENT_INT:
        out_i64(o, v->i);
        return;
    case EVENT_UINT:
        if (v->u <= (uint64_t)INT64_MAX) {
            out_u64(o, v->u);
        } else {
            /* Beyond signed 64 bits many JSON readers lose digits: a string. */
            out_raw(o, "\"", 1);
            out_u64(o, v->u);
            out_raw(o, "\"", 1);
        }
        return;
    case EVENT_REAL:
        out_real(o, v->d);
        return;
    case EVENT_STR:
        out_str(o, v->s != NULL ? v->s : "", v->s != NULL ? v->len : 0);
        return;
    case EVENT_DATE:
        if (v->invalid)
            out_lit(o, "null");
        else
            out_i64(o, v->i);
        return;
    case EVENT_TIMESTAMP:
        out_timestamp(o, v);
        return;
    }
    out_lit(o, "null");
}

/* "name": as a key, then ':'. Column, table and source names are
 * identifiers, but go through the same escaping. */
static void
out_key(struct out *o, const char *name)
{
    out_str(o, name, strlen(name));
    out_raw(o, ":", 1);
}

/* {"col":value,...} of the columns present, or null for no image. */
static void
out_row(struct out *o, const struct event_table *table, const struct event_value *row,
        bool key_only)
{
    if (row == NULL) {
        out_lit(o, "null");
        return;
    }
    out_raw(o, "{", 1);
    bool first = true;
    for (size_t i = 0; i < table->ncols; i++) {
        if (row[i].type == EVENT_ABSENT || (key_only && !table->cols[i].pk))
            continue;
        if (!first)
            out_raw(o, ",", 1);
        first = false;
        out_key(o, table->cols[i].name);
        out_value(o, &row[i]);
    }
    out_raw(o, "}", 1);
}

cal_status
event_encode_value(const struct event_table *table, enum event_op op,
                   const struct event_value *before, const struct event_value *after,
                   const struct event_source *src, uint64_t relay_ts_ms, char **out, size_t *outlen,
                   char *err, size_t errlen)
{
    if ((op == EVENT_OP_CREATE && (before != NULL || after == NULL)) ||
        (op == EVENT_OP_UPDATE && (before == NULL || after == NULL)) ||
        (op == EVENT_OP_DELETE && (before == NULL || after != NULL))) {
        snprintf(err, errlen, "op %s does not match the row images", event_op_name(op));
        return CAL_EINVAL;
    }
    struct out o = {0};
    out_reserve(&o, 640);
    out_lit(&o, "{\"before\":");
    out_row(&o, table, before, false);
    out_lit(&o, ",\"after\":");
    out_row(&o, table, after, false);
    out_lit(&o, ",\"source\":{\"version\":");
    out_str(&o, EVENT_VERSION, strlen(EVENT_VERSION));
    out_lit(&o, ",\"connector\":");
    out_str(&o, EVENT_CONNECTOR, strlen(EVENT_CONNECTOR));
    out_lit(&o, ",\"name\":");
    out_str(&o, src->name, strlen(src->name));
    out_lit(&o, ",\"ts_ms\":");
    out_u64(&o, src->ts_ms);
    out_lit(&o, ",\"db\":");
    out_str(&o, table->db, strlen(table->db));
    out_lit(&o, ",\"table\":");
    out_str(&o, table->table, strlen(table->table));
    out_lit(&o, ",\"server_id\":");
    out_u64(&o, src->server_id);
    char gtid[80];
    snprintf(gtid, sizeof(gtid),
             ",\"gtid\":\"%" PRIu32 "-%" PRIu32 "-%" PRIu64 "\",\"file\":", src->domain_id,
             src->server_id, src->seq);
    out_lit(&o, gtid);
    out_str(&o, src->file, strlen(src->file));
    out_lit(&o, ",\"pos\":");
    out_u64(&o, src->pos);
    out_lit(&o, ",\"row\":");
    out_u64(&o, src->row);
    out_lit(&o, ",\"snapshot\":\"false\"},\"op\":\"");
    out_lit(&o, event_op_name(op));
    out_lit(&o, "\",\"ts_ms\":");
    out_u64(&o, relay_ts_ms);
    out_raw(&o, "}", 1);
    *out = o.p;
    *outlen = o.len;
    return CAL_OK;
}

cal_status
event_encode_key(const struct event_table *table, const struct event_value *row, char **out,
                 size_t *outlen, char *err, size_t errlen)
{
    size_t nkey = 0;
    for (size_t i = 0; i < table->ncols; i++) {
        if (!table->cols[i].pk)
            continue;
        if (row[i].type == EVENT_ABSENT || row[i].type == EVENT_NULL) {
            snprintf(err, errlen, "%s.%s: key column %s is missing from the row image", table->db,
                     table->table, table->cols[i].name);
            return CAL_EINVAL;
        }
        nkey++;
    }
    if (nkey == 0) {
        snprintf(err, errlen, "%s.%s has no primary key", table->db, table->table);
        return CAL_EINVAL;
    }
    struct out o = {0};
    out_row(&o, table, row, true);
    *out = o.p;
    *outlen = o.len;
    return CAL_OK;
}

/* One image of a hint: false when it cannot be written. */
static bool
hint_image(const struct event_table *table, bool nights, const struct event_value *row, char *buf,
           size_t size)
{
    if (row == NULL)
        return snprintf(buf, size, "-") > 0;
    uint64_t id;
    if (event_listing_id(table, row, &id) != CAL_OK)
        return false;
    if (!nights)
        return snprintf(buf, size, "%" PRIu64, id) > 0;
    for (size_t i = 0; i < table->ncols; i++) {
        if (strcmp(table->cols[i].name, "night") != 0)
            continue;
        if (row[i].type != EVENT_DATE || row[i].invalid)
            return false;
        return snprintf(buf, size, "%" PRIu64 ":%" PRId64, id, row[i].i) > 0;
    }
    return false;
}

size_t
event_hint(const struct event_table *table, enum event_op op, const struct event_value *before,
           const struct event_value *after, const struct event_source *src, char *buf, size_t size)
{
    bool nights = strcmp(table->table, "nights") == 0;
    bool keyed = nights || strcmp(table->table, "listings") == 0;
    char b[48] = "-", a[48] = "-";
    if (keyed && (!hint_image(table, nights, before, b, sizeof(b)) ||
                  !hint_image(table, nights, after, a, sizeof(a))))
        return 0;
    int n = snprintf(buf, size, "%s %s %" PRIu64 " %s %s", table->table, event_op_name(op),
                     src->ts_ms, b, a);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* Kafka topic names: [a-zA-Z0-9._-], at most 249 characters. */
static bool
topic_part_ok(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

cal_status
event_topic(char *buf, size_t size, const char *prefix, const char *db, const char *table)
{
    if (!topic_part_ok(prefix) || !topic_part_ok(db) || !topic_part_ok(table))
        return CAL_EINVAL;
    int n = snprintf(buf, size, "%s.%s.%s", prefix, db, table);
    if (n < 0 || (size_t)n >= size || n > 249)
        return CAL_EINVAL;
    return CAL_OK;
}

cal_status
event_listing_id(const struct event_table *table, const struct event_value *row,
                 uint64_t *listing_id)
{
    for (size_t i = 0; i < table->ncols; i++) {
        if (strcmp(table->cols[i].name, "listing_id") != 0)
            continue;
        if (row[i].type == EVENT_UINT) {
            *listing_id = row[i].u;
            return CAL_OK;
        }
        if (row[i].type == EVENT_INT && row[i].i >= 0) {
            *listing_id = (uint64_t)row[i].i;
            return CAL_OK;
        }
        return CAL_EINVAL;
    }
    return CAL_ENOTFOUND;
}

int32_t
event_partition(uint64_t listing_id, int32_t partition_cnt)
{
    assert(partition_cnt > 0);
    /* The high half: the vbucket is the low bits of the same hash, and a
     * shard owns vbuckets by those bits, so the low bits would leave most
     * partitions of a shard's topics empty (8 partitions, 2 shards: 4). */
    return (int32_t)((shardmap_fmix64(listing_id) >> 32) % (uint64_t)partition_cnt);
}
