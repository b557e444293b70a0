/* Debezium-style JSON encoding of row changes (jansson), keys, topics and
 * partitions. Pure: the relay feeds it decoded row images. */
#include "cdc/event.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
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

/* A JSON string of (s, len); bytes that are not valid UTF-8 become '?' so
 * one bad value cannot stop the stream. */
static json_t *
string_value(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j != NULL)
        return j;
    char *copy = cal_malloc(len + 1);
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq_len((const unsigned char *)s + i, len - i);
        if (n == 0) {
            copy[i] = '?';
            i++;
            continue;
        }
        memcpy(copy + i, s + i, n);
        i += n;
    }
    j = json_stringn(copy, len);
    free(copy);
    return j;
}

static json_t *
timestamp_value(const struct event_value *v)
{
    if (v->i == 0 && v->usec == 0)
        return json_null(); /* MariaDB's zero timestamp "0000-00-00 00:00:00" */
    time_t t = (time_t)v->i;
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return json_null();
    char buf[48];
    int n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    unsigned prec = v->precision > 6 ? 6 : v->precision;
    if (prec > 0) {
        char frac[8];
        snprintf(frac, sizeof(frac), "%06u", v->usec % 1000000u);
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ".%.*s", (int)prec, frac);
    }
    snprintf(buf + n, sizeof(buf) - (size_t)n, "Z");
    return json_string(buf);
}

/* NULL for EVENT_ABSENT (the caller omits the key). */
static json_t *
value_json(const struct event_value *v)
{
    char num[24];
    switch (v->type) {
    case EVENT_ABSENT:
        return NULL;
    case EVENT_NULL:
        return json_null();
    case EVENT_INT:
        return json_integer((json_int_t)v->i);
    case EVENT_UINT:
        if (v->u <= (uint64_t)INT64_MAX)
            return json_integer((json_int_t)v->u);
        /* jansson integers are signed 64-bit: keep the exact digits. */
        snprintf(num, sizeof(num), "%" PRIu64, v->u);
        return json_string(num);
    case EVENT_REAL:
        return json_real(v->d);
    case EVENT_STR:
        return string_value(v->s != NULL ? v->s : "", v->s != NULL ? v->len : 0);
    case EVENT_DATE:
        if (v->invalid)
            return json_null();
        return json_integer((json_int_t)v->i);
    case EVENT_TIMESTAMP:
        return timestamp_value(v);
    }
    return json_null();
}

static json_t *
row_json(const struct event_table *table, const struct event_value *row)
{
    if (row == NULL)
        return json_null();
    json_t *obj = json_object();
    for (size_t i = 0; i < table->ncols; i++) {
        json_t *j = value_json(&row[i]);
        if (j != NULL)
            json_object_set_new(obj, table->cols[i].name, j);
    }
    return obj;
}

static cal_status
dump(json_t *root, char **out, size_t *outlen, char *err, size_t errlen)
{
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL) {
        snprintf(err, errlen, "JSON encoding failed");
        return CAL_ERR;
    }
    *out = text;
    *outlen = strlen(text);
    return CAL_OK;
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
    char gtid[64];
    snprintf(gtid, sizeof(gtid), "%" PRIu32 "-%" PRIu32 "-%" PRIu64, src->domain_id, src->server_id,
             src->seq);
    json_t *source = json_object();
    json_object_set_new(source, "version", json_string(EVENT_VERSION));
    json_object_set_new(source, "connector", json_string(EVENT_CONNECTOR));
    json_object_set_new(source, "name", json_string(src->name));
    json_object_set_new(source, "ts_ms", json_integer((json_int_t)src->ts_ms));
    json_object_set_new(source, "db", string_value(table->db, strlen(table->db)));
    json_object_set_new(source, "table", string_value(table->table, strlen(table->table)));
    json_object_set_new(source, "server_id", json_integer((json_int_t)src->server_id));
    json_object_set_new(source, "gtid", json_string(gtid));
    json_object_set_new(source, "file", string_value(src->file, strlen(src->file)));
    json_object_set_new(source, "pos", json_integer((json_int_t)src->pos));
    json_object_set_new(source, "row", json_integer((json_int_t)src->row));
    json_object_set_new(source, "snapshot", json_string("false"));

    json_t *root = json_object();
    json_object_set_new(root, "before", row_json(table, before));
    json_object_set_new(root, "after", row_json(table, after));
    json_object_set_new(root, "source", source);
    json_object_set_new(root, "op", json_string(event_op_name(op)));
    json_object_set_new(root, "ts_ms", json_integer((json_int_t)relay_ts_ms));
    return dump(root, out, outlen, err, errlen);
}

cal_status
event_encode_key(const struct event_table *table, const struct event_value *row, char **out,
                 size_t *outlen, char *err, size_t errlen)
{
    json_t *key = json_object();
    size_t nkey = 0;
    for (size_t i = 0; i < table->ncols; i++) {
        if (!table->cols[i].pk)
            continue;
        if (row[i].type == EVENT_ABSENT || row[i].type == EVENT_NULL) {
            snprintf(err, errlen, "%s.%s: key column %s is missing from the row image", table->db,
                     table->table, table->cols[i].name);
            json_decref(key);
            return CAL_EINVAL;
        }
        json_object_set_new(key, table->cols[i].name, value_json(&row[i]));
        nkey++;
    }
    if (nkey == 0) {
        snprintf(err, errlen, "%s.%s has no primary key", table->db, table->table);
        json_decref(key);
        return CAL_EINVAL;
    }
    return dump(key, out, outlen, err, errlen);
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
