/* Change event -> stale cache keys (see invalidate.h). */
#include "cdc/invalidate.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/date.h"

static const char *const table_names[INVALIDATE_TABLE_COUNT] = {"none", "listings", "nights",
                                                                "reservations", "other"};

const char *
invalidate_table_name(enum invalidate_table table)
{
    return (unsigned)table < INVALIDATE_TABLE_COUNT ? table_names[table] : "?";
}

static enum invalidate_table
table_from_name(const char *name, size_t len)
{
    for (int t = INVALIDATE_TABLE_LISTINGS; t <= INVALIDATE_TABLE_RESERVATIONS; t++)
        if (strlen(table_names[t]) == len && memcmp(table_names[t], name, len) == 0)
            return (enum invalidate_table)t;
    return INVALIDATE_TABLE_OTHER;
}

/* No table, no keys, source time unknown. */
static void
ev_reset(struct invalidate_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->source_ts_ms = -1;
}

static void
add_key(struct invalidate_event *ev, const char *key, size_t len)
{
    for (size_t i = 0; i < ev->nkeys; i++)
        if (ev->keylens[i] == len && memcmp(ev->keys[i], key, len) == 0)
            return;
    /* INVALIDATE_MAX_KEYS is the most two images can produce. */
    if (ev->nkeys < INVALIDATE_MAX_KEYS) {
        memcpy(ev->keys[ev->nkeys], key, len + 1);
        ev->keylens[ev->nkeys++] = len;
    }
}

/* listing_id: a JSON integer, or a string of decimal digits (BIGINT UNSIGNED
 * beyond 2^63 comes as a string from converters that cannot hold it). */
static bool
get_listing_id(const json_t *row, uint64_t *id, char *err, size_t errlen)
{
    const json_t *v = json_object_get(row, "listing_id");
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0) {
            snprintf(err, errlen, "listing_id %lld is negative", (long long)n);
            return false;
        }
        *id = (uint64_t)n;
        return true;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (len == 0 || len > 20 || strspn(s, "0123456789") != len) {
            snprintf(err, errlen, "listing_id \"%.24s\" is not a decimal number", s);
            return false;
        }
        errno = 0;
        unsigned long long n = strtoull(s, NULL, 10);
        if (errno == ERANGE) {
            snprintf(err, errlen, "listing_id \"%s\" is out of range", s);
            return false;
        }
        *id = (uint64_t)n;
        return true;
    }
    snprintf(err, errlen, "%s", v == NULL ? "row has no listing_id" : "listing_id is not a number");
    return false;
}

/* night: days since 1970-01-01 (io.debezium.time.Date, what the relay emits)
 * or "YYYY-MM-DD". */
static bool
get_night(const json_t *row, int32_t *night, char *err, size_t errlen)
{
    const int32_t max_day = date_from_ymd(9999, 12, 31);
    const json_t *v = json_object_get(row, "night");
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0 || n > max_day) {
            snprintf(err, errlen, "night %lld is outside 1970-01-01..9999-12-31", (long long)n);
            return false;
        }
        *night = (int32_t)n;
        return true;
    }
    if (json_is_string(v)) {
        if (!date_parse(json_string_value(v), json_string_length(v), night)) {
            snprintf(err, errlen, "night \"%.16s\" is not a YYYY-MM-DD date", json_string_value(v));
            return false;
        }
        return true;
    }
    snprintf(err, errlen, "%s", v == NULL ? "nights row has no night" : "night is not a date");
    return false;
}

/* The keys of one image: a nights row makes its month and its listing
 * stale, a listings row its listing. */
static void
add_keys(struct invalidate_event *ev, uint64_t id, int32_t night)
{
    char key[CACHEKEY_MAX];
    if (ev->table == INVALIDATE_TABLE_NIGHTS)
        add_key(ev, key, cachekey_month_of(id, night, key));
    add_key(ev, key, cachekey_listing(id, key));
}

/* Adds the keys one row image makes stale. */
static bool
add_image_keys(struct invalidate_event *ev, const json_t *row, const char *which, char *err,
               size_t errlen)
{
    char why[160];
    uint64_t id;
    int32_t night = 0;
    if (!get_listing_id(row, &id, why, sizeof(why)) ||
        (ev->table == INVALIDATE_TABLE_NIGHTS && !get_night(row, &night, why, sizeof(why)))) {
        snprintf(err, errlen, "%s image: %s", which, why);
        return false;
    }
    add_keys(ev, id, night);
    return true;
}

/* Table from source.table, else the last dot-part of the topic. */
static bool
find_table(const json_t *payload, const char *topic, enum invalidate_table *table, char *err,
           size_t errlen)
{
    const json_t *source = json_object_get(payload, "source");
    const json_t *name = json_object_get(source, "table");
    if (json_is_string(name) && json_string_length(name) > 0) {
        *table = table_from_name(json_string_value(name), json_string_length(name));
        return true;
    }
    if (topic != NULL && topic[0] != '\0') {
        const char *dot = strrchr(topic, '.');
        const char *last = dot != NULL ? dot + 1 : topic;
        if (*last != '\0') {
            *table = table_from_name(last, strlen(last));
            return true;
        }
    }
    snprintf(err, errlen, "no source.table and no topic to name the table");
    return false;
}

static cal_status
decode_payload(const json_t *payload, const char *topic, struct invalidate_event *ev, char *err,
               size_t errlen)
{
    const json_t *op = json_object_get(payload, "op");
    if (!json_is_string(op) || json_string_length(op) != 1 ||
        strchr("cudrt", json_string_value(op)[0]) == NULL) {
        snprintf(err, errlen, "op is missing or not one of c, u, d, r, t");
        return CAL_EINVAL;
    }
    ev->op = json_string_value(op)[0];
    if (!find_table(payload, topic, &ev->table, err, errlen))
        return CAL_EINVAL;
    const json_t *source = json_object_get(payload, "source");
    const json_t *ts = json_object_get(source, "ts_ms");
    if (json_is_integer(ts) && json_integer_value(ts) > 0) /* 0: unknown */
        ev->source_ts_ms = json_integer_value(ts);

    if (ev->table != INVALIDATE_TABLE_LISTINGS && ev->table != INVALIDATE_TABLE_NIGHTS)
        return CAL_OK;
    if (ev->op == 't') {
        ev->flush_all = true;
        return CAL_OK;
    }
    const json_t *before = json_object_get(payload, "before");
    const json_t *after = json_object_get(payload, "after");
    if ((before != NULL && !json_is_null(before) && !json_is_object(before)) ||
        (after != NULL && !json_is_null(after) && !json_is_object(after))) {
        snprintf(err, errlen, "before/after is not an object or null");
        return CAL_EINVAL;
    }
    if (!json_is_object(before) && !json_is_object(after)) {
        snprintf(err, errlen, "%s event op '%c' has neither a before nor an after image",
                 invalidate_table_name(ev->table), ev->op);
        return CAL_EINVAL;
    }
    /* An update whose one image cannot be decoded still names the keys of
     * the other: those are deleted, and the event is reported partial. */
    char why[2][256];
    bool bad_before =
        json_is_object(before) && !add_image_keys(ev, before, "before", why[0], sizeof(why[0]));
    bool bad_after =
        json_is_object(after) && !add_image_keys(ev, after, "after", why[1], sizeof(why[1]));
    if (bad_before || bad_after)
        snprintf(err, errlen, "%s", bad_before ? why[0] : why[1]);
    if (ev->nkeys == 0 && (bad_before || bad_after))
        return CAL_EINVAL;
    ev->partial = bad_before || bad_after;
    return CAL_OK;
}

/* One image of a hint, at *p: "-", "<id>" or "<id>:<night>". */
static bool
hint_image(const char **p, const char *end, bool nights, bool *present, uint64_t *id,
           int32_t *night)
{
    const char *s = *p;
    const char *stop = memchr(s, ' ', (size_t)(end - s));
    if (stop == NULL)
        stop = end;
    *p = stop < end ? stop + 1 : end;
    *present = !(stop - s == 1 && *s == '-');
    if (!*present)
        return true;
    char tok[48];
    if (stop - s <= 0 || (size_t)(stop - s) >= sizeof(tok) || memchr(s, '\0', (size_t)(stop - s)))
        return false;
    memcpy(tok, s, (size_t)(stop - s));
    tok[stop - s] = '\0';
    char *colon = strchr(tok, ':');
    if ((colon != NULL) != nights)
        return false;
    if (colon != NULL)
        *colon = '\0';
    size_t idlen = strlen(tok);
    if (idlen == 0 || idlen > 20 || strspn(tok, "0123456789") != idlen)
        return false;
    errno = 0;
    *id = strtoull(tok, NULL, 10);
    if (errno == ERANGE)
        return false;
    if (!nights)
        return true;
    const char *d = colon + 1;
    size_t dlen = strlen(d);
    if (dlen == 0 || dlen > 7 || strspn(d, "0123456789") != dlen)
        return false;
    long v = strtol(d, NULL, 10);
    if (v > date_from_ymd(9999, 12, 31))
        return false;
    *night = (int32_t)v;
    return true;
}

cal_status
invalidate_decode_hint(const char *hint, size_t len, struct invalidate_event *ev, char *err,
                       size_t errlen)
{
    ev_reset(ev);
    const char *p = hint, *end = hint + len;
    /* table */
    const char *sp = hint != NULL ? memchr(p, ' ', len) : NULL;
    if (sp == NULL || sp == p)
        goto bad;
    ev->table = table_from_name(p, (size_t)(sp - p));
    p = sp + 1;
    /* op and source ts_ms */
    if (end - p < 3 || strchr("cudrt", *p) == NULL || *p == '\0' || p[1] != ' ')
        goto bad;
    ev->op = *p;
    p += 2;
    sp = memchr(p, ' ', (size_t)(end - p));
    if (sp == NULL || sp == p || sp - p > 19 || strspn(p, "0123456789") < (size_t)(sp - p))
        goto bad;
    long long ts = strtoll(p, NULL, 10);
    if (ts > 0)
        ev->source_ts_ms = ts;
    p = sp + 1;
    bool keyed = ev->table == INVALIDATE_TABLE_LISTINGS || ev->table == INVALIDATE_TABLE_NIGHTS;
    bool nights = ev->table == INVALIDATE_TABLE_NIGHTS;
    bool present[2];
    uint64_t id[2] = {0, 0};
    int32_t night[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        if (p > end || !hint_image(&p, end, nights && keyed, &present[i], &id[i], &night[i]) ||
            (!keyed && present[i]))
            goto bad;
    if (p != end)
        goto bad;
    if (!keyed)
        return CAL_OK;
    if (ev->op == 't') {
        ev->flush_all = true;
        return CAL_OK;
    }
    if (!present[0] && !present[1])
        goto bad;
    for (int i = 0; i < 2; i++)
        if (present[i])
            add_keys(ev, id[i], night[i]);
    return CAL_OK;
bad:
    snprintf(err, errlen, "malformed invalidation hint \"%.*s\"", (int)(len < 80 ? len : 80),
             hint != NULL ? hint : "");
    ev_reset(ev);
    return CAL_EINVAL;
}

cal_status
invalidate_decode(const char *topic, const char *value, size_t len, struct invalidate_event *ev,
                  char *err, size_t errlen)
{
    ev_reset(ev);
    if (value == NULL || len == 0)
        return CAL_OK; /* tombstone (log compaction marker after a delete) */

    json_error_t jerr;
    json_t *root = json_loadb(value, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "not JSON: %s at byte %d", jerr.text, jerr.position);
        return CAL_EINVAL;
    }
    cal_status st = CAL_EINVAL;
    if (!json_is_object(root)) {
        snprintf(err, errlen, "value is not a JSON object");
        goto out;
    }
    /* JSON converter with schemas.enable=true: {"schema":{...},"payload":{...}}.
     * A null payload is that converter's tombstone. */
    const json_t *payload = root;
    const json_t *inner = json_object_get(root, "payload");
    if (inner != NULL && json_object_get(root, "schema") != NULL) {
        if (json_is_null(inner)) {
            st = CAL_OK;
            goto out;
        }
        if (!json_is_object(inner)) {
            snprintf(err, errlen, "payload is not a JSON object");
            goto out;
        }
        payload = inner;
    }
    st = decode_payload(payload, topic, ev, err, errlen);
out:
    json_decref(root);
    if (st != CAL_OK) {
        ev_reset(ev);
    }
    return st;
}
