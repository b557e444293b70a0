/* Debezium-style JSON encoding of row changes (written with jsonout, no
 * tree), keys, topics and partitions. Pure: the relay feeds it decoded row
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
#include "common/jsonout.h"
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
    case EVENT_OP_TRUNCATE:
        return "t";
    }
    return "?";
}

/* ".ffffff" cut to the value's precision (nothing for 0) into buf; returns
 * its length. */
static int
out_fraction(char *buf, size_t size, const struct event_value *v)
{
    unsigned prec = v->precision > 6 ? 6 : v->precision;
    if (prec == 0)
        return 0;
    char frac[8];
    snprintf(frac, sizeof(frac), "%06u", v->usec % 1000000u);
    int n = snprintf(buf, size, ".%.*s", (int)prec, frac);
    return n < 0 ? 0 : n;
}

/* TIMESTAMP (utc: "Z" suffix, the zero timestamp is null) or DATETIME. */
static void
out_timestamp(struct jsonout *o, const struct event_value *v, bool utc)
{
    time_t t = (time_t)v->i;
    struct tm tm;
    if ((utc && v->i == 0 && v->usec == 0) || (!utc && v->invalid) || gmtime_r(&t, &tm) == NULL) {
        jsonout_lit(o, "null"); /* MariaDB's zero timestamp "0000-00-00 00:00:00" */
        return;
    }
    char buf[48];
    int n = snprintf(buf, sizeof(buf), "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    n += out_fraction(buf + n, sizeof(buf) - (size_t)n, v);
    snprintf(buf + n, sizeof(buf) - (size_t)n, "%s\"", utc ? "Z" : "");
    jsonout_lit(o, buf);
}

static void
out_time(struct jsonout *o, const struct event_value *v)
{
    char buf[48];
    uint64_t secs = v->i < 0 ? 0 : (uint64_t)v->i;
    int n = snprintf(buf, sizeof(buf), "\"%s%02" PRIu64 ":%02u:%02u", v->negative ? "-" : "",
                     secs / 3600, (unsigned)(secs / 60 % 60), (unsigned)(secs % 60));
    n += out_fraction(buf + n, sizeof(buf) - (size_t)n, v);
    snprintf(buf + n, sizeof(buf) - (size_t)n, "\"");
    jsonout_lit(o, buf);
}

static void
out_real(struct jsonout *o, double d)
{
    if (!isfinite(d)) {
        jsonout_lit(o, "null"); /* JSON has no NaN or infinity */
        return;
    }
    char buf[40];
    int n = snprintf(buf, sizeof(buf), "%.17g", d);
    /* A real stays a real when read back: 2 is written 2.0. */
    if (strpbrk(buf, ".eEn") == NULL && n > 0 && (size_t)n + 2 < sizeof(buf))
        memcpy(buf + n, ".0", 3);
    jsonout_lit(o, buf);
}

/* One value; the caller leaves EVENT_ABSENT out. */
static void
out_value(struct jsonout *o, const struct event_value *v)
{
    switch (v->type) {
    case EVENT_ABSENT:
    case EVENT_NULL:
        jsonout_lit(o, "null");
        return;
    case EVENT_INT:
        jsonout_int(o, v->i);
        return;
    case EVENT_UINT:
        if (v->u <= (uint64_t)INT64_MAX) {
            jsonout_u64(o, v->u);
        } else {
            /* Beyond signed 64 bits many JSON readers lose digits: a string. */
            jsonout_raw(o, "\"", 1);
            jsonout_u64(o, v->u);
            jsonout_raw(o, "\"", 1);
        }
        return;
    case EVENT_REAL:
        out_real(o, v->d);
        return;
    case EVENT_STR:
        jsonout_str(o, v->s != NULL ? v->s : "", v->s != NULL ? v->len : 0);
        return;
    case EVENT_DATE:
        if (v->invalid)
            jsonout_lit(o, "null");
        else
            jsonout_int(o, v->i);
        return;
    case EVENT_TIMESTAMP:
        out_timestamp(o, v, true);
        return;
    case EVENT_DATETIME:
        out_timestamp(o, v, false);
        return;
    case EVENT_TIME:
        out_time(o, v);
        return;
    case EVENT_DECIMAL:
        jsonout_str(o, v->dec, strnlen(v->dec, sizeof(v->dec)));
        return;
    }
    jsonout_lit(o, "null");
}

/* "name": as a key, then ':'. Column, table and source names are
 * identifiers, but go through the same escaping. */
static void
out_key(struct jsonout *o, const char *name)
{
    jsonout_str(o, name, strlen(name));
    jsonout_raw(o, ":", 1);
}

/* {"col":value,...} of the columns present, or null for no image. */
static void
out_row(struct jsonout *o, const struct event_table *table, const struct event_value *row,
        bool key_only)
{
    if (row == NULL) {
        jsonout_lit(o, "null");
        return;
    }
    jsonout_raw(o, "{", 1);
    bool first = true;
    for (size_t i = 0; i < table->ncols; i++) {
        if (row[i].type == EVENT_ABSENT || (key_only && !table->cols[i].pk))
            continue;
        if (!first)
            jsonout_raw(o, ",", 1);
        first = false;
        out_key(o, table->cols[i].name);
        out_value(o, &row[i]);
    }
    jsonout_raw(o, "}", 1);
}

cal_status
event_encode_value(const struct event_table *table, enum event_op op,
                   const struct event_value *before, const struct event_value *after,
                   const struct event_source *src, uint64_t relay_ts_ms, char **out, size_t *outlen,
                   char *err, size_t errlen)
{
    if ((op == EVENT_OP_CREATE && (before != NULL || after == NULL)) ||
        (op == EVENT_OP_UPDATE && (before == NULL || after == NULL)) ||
        (op == EVENT_OP_DELETE && (before == NULL || after != NULL)) ||
        (op == EVENT_OP_TRUNCATE && (before != NULL || after != NULL))) {
        snprintf(err, errlen, "op %s does not match the row images", event_op_name(op));
        return CAL_EINVAL;
    }
    struct jsonout o;
    jsonout_init(&o, 640);
    jsonout_lit(&o, "{\"before\":");
    out_row(&o, table, before, false);
    jsonout_lit(&o, ",\"after\":");
    out_row(&o, table, after, false);
    jsonout_lit(&o, ",\"source\":{\"version\":");
    jsonout_str(&o, EVENT_VERSION, strlen(EVENT_VERSION));
    jsonout_lit(&o, ",\"connector\":");
    jsonout_str(&o, EVENT_CONNECTOR, strlen(EVENT_CONNECTOR));
    jsonout_lit(&o, ",\"name\":");
    jsonout_str(&o, src->name, strlen(src->name));
    jsonout_lit(&o, ",\"ts_ms\":");
    jsonout_u64(&o, src->ts_ms);
    jsonout_lit(&o, ",\"db\":");
    jsonout_str(&o, table->db, strlen(table->db));
    jsonout_lit(&o, ",\"table\":");
    jsonout_str(&o, table->table, strlen(table->table));
    jsonout_lit(&o, ",\"server_id\":");
    jsonout_u64(&o, src->server_id);
    char gtid[80];
    snprintf(gtid, sizeof(gtid),
             ",\"gtid\":\"%" PRIu32 "-%" PRIu32 "-%" PRIu64 "\",\"file\":", src->domain_id,
             src->server_id, src->seq);
    jsonout_lit(&o, gtid);
    jsonout_str(&o, src->file, strlen(src->file));
    jsonout_lit(&o, ",\"pos\":");
    jsonout_u64(&o, src->pos);
    jsonout_lit(&o, ",\"row\":");
    jsonout_u64(&o, src->row);
    jsonout_lit(&o, ",\"snapshot\":\"false\"},\"op\":\"");
    jsonout_lit(&o, event_op_name(op));
    jsonout_lit(&o, "\",\"ts_ms\":");
    jsonout_u64(&o, relay_ts_ms);
    jsonout_raw(&o, "}", 1);
    *out = jsonout_finish(&o, outlen);
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
    struct jsonout o;
    jsonout_init(&o, 64);
    out_row(&o, table, row, true);
    *out = jsonout_finish(&o, outlen);
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
