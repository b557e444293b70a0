/* Unit tests of cdc/invalidate: change event JSON -> the cache keys it makes
 * stale, compared with what cachekey_* computes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/event.h"
#include "cdc/invalidate.h"
#include "common/cachekey.h"
#include "common/date.h"
#include "tests/lib/unit.h"

static struct invalidate_event ev;
static char err[256];

static cal_status
decode(const char *topic, const char *json)
{
    err[0] = '\0';
    return invalidate_decode(topic, json, json != NULL ? strlen(json) : 0, &ev, err, sizeof(err));
}

static bool
has_key(const char *key)
{
    for (size_t i = 0; i < ev.nkeys; i++)
        if (ev.keylens[i] == strlen(key) && strcmp(ev.keys[i], key) == 0)
            return true;
    return false;
}

static void
assert_listing_key(uint64_t id)
{
    char key[CACHEKEY_MAX];
    cachekey_listing(id, key);
    ck_assert_msg(has_key(key), "missing %s", key);
}

static void
assert_month_key(uint64_t id, int32_t night)
{
    char key[CACHEKEY_MAX];
    cachekey_month_of(id, night, key);
    ck_assert_msg(has_key(key), "missing %s", key);
}

/* Relay format: plain envelope, DATE as days since epoch. */
START_TEST(relay_nights_insert)
{
    int32_t night = date_from_ymd(2030, 3, 31);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"before\":null,\"after\":{\"listing_id\":42,\"night\":%d,\"status\":\"booked\","
             "\"reservation_id\":7,\"price\":null,\"version\":1,\"vbucket\":9},"
             "\"source\":{\"db\":\"calendar_shard0\",\"table\":\"nights\",\"ts_ms\":1900000000000},"
             "\"op\":\"c\",\"ts_ms\":1900000000005}",
             (int)night);
    ck_assert_int_eq(decode("calendar.shard0.nights", json), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_NIGHTS);
    ck_assert_int_eq(ev.op, 'c');
    ck_assert_int_eq(ev.source_ts_ms, 1900000000000LL);
    ck_assert(!ev.flush_all);
    ck_assert_uint_eq(ev.nkeys, 2);
    ck_assert_str_eq(ev.keys[0], "cal:v1:M:42:203003");
    ck_assert_str_eq(ev.keys[1], "cal:v1:L:42");
    ck_assert_uint_eq(ev.keylens[0], strlen("cal:v1:M:42:203003"));
    assert_month_key(42, night);
    assert_listing_key(42);
}
END_TEST

/* An update moving a row across a month boundary invalidates both months. */
START_TEST(relay_nights_update_both_images)
{
    int32_t a = date_from_ymd(2030, 1, 31), b = date_from_ymd(2030, 2, 1);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"before\":{\"listing_id\":5,\"night\":%d,\"status\":\"available\"},"
             "\"after\":{\"listing_id\":5,\"night\":%d,\"status\":\"booked\"},"
             "\"source\":{\"table\":\"nights\",\"ts_ms\":1},\"op\":\"u\",\"ts_ms\":2}",
             (int)a, (int)b);
    ck_assert_int_eq(decode("t", json), CAL_OK);
    ck_assert_int_eq(ev.op, 'u');
    ck_assert_uint_eq(ev.nkeys, 3);
    assert_month_key(5, a);
    assert_month_key(5, b);
    assert_listing_key(5);
}
END_TEST

/* The same month in both images gives each key once. */
START_TEST(relay_nights_update_same_month_dedup)
{
    char json[] = "{\"before\":{\"listing_id\":5,\"night\":20000,\"status\":\"available\"},"
                  "\"after\":{\"listing_id\":5,\"night\":20000,\"status\":\"booked\"},"
                  "\"source\":{\"table\":\"nights\"},\"op\":\"u\"}";
    ck_assert_int_eq(decode(NULL, json), CAL_OK);
    ck_assert_uint_eq(ev.nkeys, 2);
    assert_month_key(5, 20000);
    assert_listing_key(5);
    ck_assert_int_eq(ev.source_ts_ms, -1);
}
END_TEST

START_TEST(relay_nights_delete_uses_before)
{
    char json[] = "{\"before\":{\"listing_id\":77,\"night\":19000},\"after\":null,"
                  "\"source\":{\"table\":\"nights\",\"ts_ms\":5},\"op\":\"d\"}";
    ck_assert_int_eq(decode(NULL, json), CAL_OK);
    ck_assert_int_eq(ev.op, 'd');
    ck_assert_uint_eq(ev.nkeys, 2);
    assert_month_key(77, 19000);
    assert_listing_key(77);
}
END_TEST

/* An update that moves a night to another listing and month names all
 * four keys (the most one event can), from the JSON and from the hint. */
START_TEST(an_update_across_listings_and_months_names_four_keys)
{
    char json[512], hint[128];
    snprintf(json, sizeof(json),
             "{\"before\":{\"listing_id\":1,\"night\":21945},"
             "\"after\":{\"listing_id\":2,\"night\":21946},"
             "\"source\":{\"table\":\"nights\"},\"op\":\"u\"}");
    snprintf(hint, sizeof(hint), "nights u 1 1:21945 2:21946");
    for (int form = 0; form < 2; form++) {
        if (form == 0)
            ck_assert_int_eq(decode(NULL, json), CAL_OK);
        else
            ck_assert_int_eq(invalidate_decode_hint(hint, strlen(hint), &ev, err, sizeof(err)),
                             CAL_OK);
        ck_assert_uint_eq(ev.nkeys, 4);
        ck_assert(has_key("cal:v1:M:1:203001")); /* 21945: 2030-01-31 */
        ck_assert(has_key("cal:v1:L:1"));
        ck_assert(has_key("cal:v1:M:2:203002"));
        ck_assert(has_key("cal:v1:L:2"));
    }
}
END_TEST

/* The last night a date can hold, 9999-12-31 (day 2932896), and not one
 * after it, from the JSON and from the hint. */
START_TEST(nights_up_to_the_last_date)
{
    char json[256], hint[64];
    for (int past = 0; past < 2; past++) {
        int night = 2932896 + past;
        snprintf(json, sizeof(json),
                 "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{"
                 "\"listing_id\":42,\"night\":%d}}",
                 night);
        snprintf(hint, sizeof(hint), "nights c 1 - 42:%d", night);
        cal_status want = past ? CAL_EINVAL : CAL_OK;
        ck_assert_int_eq(decode(NULL, json), want);
        if (!past)
            ck_assert(has_key("cal:v1:M:42:999912"));
        ck_assert_int_eq(invalidate_decode_hint(hint, strlen(hint), &ev, err, sizeof(err)), want);
        if (!past)
            ck_assert(has_key("cal:v1:M:42:999912"));
    }
}
END_TEST

START_TEST(relay_listings_ops)
{
    const char *ops[] = {"c", "u", "d", "r"};
    for (size_t i = 0; i < 4; i++) {
        char json[512];
        const char *before = ops[i][0] == 'c' || ops[i][0] == 'r'
                                 ? "null"
                                 : "{\"listing_id\":9,\"version\":3,\"default_price\":100}";
        const char *after =
            ops[i][0] == 'd' ? "null" : "{\"listing_id\":9,\"version\":4,\"default_price\":100}";
        snprintf(json, sizeof(json),
                 "{\"before\":%s,\"after\":%s,\"source\":{\"table\":\"listings\",\"ts_ms\":1},"
                 "\"op\":\"%s\",\"ts_ms\":2}",
                 before, after, ops[i]);
        ck_assert_int_eq(decode("calendar.shard1.listings", json), CAL_OK);
        ck_assert_int_eq(ev.table, INVALIDATE_TABLE_LISTINGS);
        ck_assert_int_eq(ev.op, ops[i][0]);
        ck_assert_uint_eq(ev.nkeys, 1);
        ck_assert_str_eq(ev.keys[0], "cal:v1:L:9");
    }
}
END_TEST

START_TEST(reservations_accepted_no_keys)
{
    char json[] = "{\"before\":null,\"after\":{\"reservation_id\":1,\"listing_id\":2,"
                  "\"check_in\":20000,\"check_out\":20003,\"status\":\"confirmed\"},"
                  "\"source\":{\"table\":\"reservations\",\"ts_ms\":10},\"op\":\"c\"}";
    ck_assert_int_eq(decode("calendar.shard0.reservations", json), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_RESERVATIONS);
    ck_assert_uint_eq(ev.nkeys, 0);
    ck_assert_int_eq(ev.source_ts_ms, 10);
}
END_TEST

START_TEST(other_table_ignored)
{
    char json[] = "{\"before\":null,\"after\":{\"vbucket\":3,\"epoch\":2},"
                  "\"source\":{\"table\":\"vbucket_owner\"},\"op\":\"c\"}";
    ck_assert_int_eq(decode(NULL, json), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_OTHER);
    ck_assert_uint_eq(ev.nkeys, 0);
}
END_TEST

/* Debezium's JSON converter with schemas.enable=true; BIGINT UNSIGNED as a
 * string, io.debezium.time.Date as days. */
START_TEST(debezium_schemas_enabled)
{
    char json[] = "{\"schema\":{\"type\":\"struct\",\"fields\":[{\"type\":\"struct\",\"fields\":["
                  "{\"type\":\"int64\",\"optional\":false,\"field\":\"listing_id\"},"
                  "{\"type\":\"int32\",\"optional\":false,\"name\":\"io.debezium.time.Date\","
                  "\"version\":1,\"field\":\"night\"}],\"optional\":true,\"field\":\"before\"}],"
                  "\"optional\":false,\"name\":\"calendar.shard0.nights.Envelope\"},"
                  "\"payload\":{\"before\":null,\"after\":{\"listing_id\":\"18446744073709551615\","
                  "\"night\":20454,\"status\":\"booked\"},\"source\":{\"version\":\"2.5.0.Final\","
                  "\"connector\":\"mysql\",\"name\":\"calendar\",\"ts_ms\":1767225600000,"
                  "\"snapshot\":\"false\",\"db\":\"calendar_shard0\",\"table\":\"nights\","
                  "\"server_id\":1,\"file\":\"mysql-bin.000003\",\"pos\":154,\"row\":0},"
                  "\"op\":\"c\",\"ts_ms\":1767225600123,\"transaction\":null}}";
    ck_assert_int_eq(decode("calendar.shard0.nights", json), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_NIGHTS);
    ck_assert_int_eq(ev.source_ts_ms, 1767225600000LL);
    ck_assert_uint_eq(ev.nkeys, 2);
    assert_month_key(UINT64_MAX, 20454);
    assert_listing_key(UINT64_MAX);
    ck_assert_str_eq(ev.keys[1], "cal:v1:L:18446744073709551615");
}
END_TEST

START_TEST(debezium_without_schemas)
{
    char json[] = "{\"before\":{\"listing_id\":\"123\",\"night\":\"2031-12-31\"},"
                  "\"after\":null,\"source\":{\"connector\":\"mysql\",\"db\":\"d\","
                  "\"table\":\"nights\",\"ts_ms\":7},\"op\":\"d\",\"ts_ms\":8}";
    ck_assert_int_eq(decode(NULL, json), CAL_OK);
    ck_assert_uint_eq(ev.nkeys, 2);
    ck_assert_str_eq(ev.keys[0], "cal:v1:M:123:203112");
    ck_assert_str_eq(ev.keys[1], "cal:v1:L:123");
}
END_TEST

/* DATE as days and as "YYYY-MM-DD" give the same keys. */
START_TEST(date_days_and_string_agree)
{
    int32_t day = date_from_ymd(2029, 2, 28);
    char a[256], b[256], keys_a[2][CACHEKEY_MAX];
    snprintf(a, sizeof(a),
             "{\"after\":{\"listing_id\":1,\"night\":%d},\"source\":{\"table\":\"nights\"},"
             "\"op\":\"r\"}",
             (int)day);
    snprintf(b, sizeof(b),
             "{\"after\":{\"listing_id\":1,\"night\":\"2029-02-28\"},"
             "\"source\":{\"table\":\"nights\"},\"op\":\"r\"}");
    ck_assert_int_eq(decode(NULL, a), CAL_OK);
    ck_assert_uint_eq(ev.nkeys, 2);
    memcpy(keys_a, ev.keys, sizeof(keys_a));
    ck_assert_int_eq(decode(NULL, b), CAL_OK);
    ck_assert_uint_eq(ev.nkeys, 2);
    ck_assert_str_eq(ev.keys[0], keys_a[0]);
    ck_assert_str_eq(ev.keys[1], keys_a[1]);
    ck_assert_str_eq(ev.keys[0], "cal:v1:M:1:202902");
}
END_TEST

START_TEST(table_from_topic_when_no_source)
{
    char json[] = "{\"after\":{\"listing_id\":3},\"op\":\"c\"}";
    ck_assert_int_eq(decode("calendar.shard0.listings", json), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_LISTINGS);
    ck_assert_uint_eq(ev.nkeys, 1);
    assert_listing_key(3);
    /* source.table wins over the topic */
    char json2[] = "{\"after\":{\"listing_id\":3,\"night\":0},\"source\":{\"table\":\"nights\"},"
                   "\"op\":\"c\"}";
    ck_assert_int_eq(decode("calendar.shard0.listings", json2), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_NIGHTS);
    ck_assert_str_eq(ev.keys[0], "cal:v1:M:3:197001");
    /* neither: undecodable */
    ck_assert_int_eq(decode(NULL, json), CAL_EINVAL);
    ck_assert_str_ne(err, "");
}
END_TEST

START_TEST(tombstones)
{
    ck_assert_int_eq(decode("calendar.shard0.nights", NULL), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_NONE);
    ck_assert_uint_eq(ev.nkeys, 0);
    ck_assert_int_eq(invalidate_decode("x", "", 0, &ev, err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(ev.nkeys, 0);
    ck_assert_int_eq(decode("x", "{\"schema\":{\"type\":\"struct\"},\"payload\":null}"), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_NONE);
    ck_assert_uint_eq(ev.nkeys, 0);
}
END_TEST

START_TEST(truncate_flushes)
{
    ck_assert_int_eq(decode(NULL, "{\"source\":{\"table\":\"nights\"},\"op\":\"t\"}"), CAL_OK);
    ck_assert(ev.flush_all);
    ck_assert_uint_eq(ev.nkeys, 0);
    ck_assert_int_eq(decode(NULL, "{\"source\":{\"table\":\"reservations\"},\"op\":\"t\"}"),
                     CAL_OK);
    ck_assert(!ev.flush_all);
}
END_TEST

/* Every bad input is an error with a reason, never a crash or stray keys. */
START_TEST(garbage_is_an_error)
{
    static const char *const bad[] = {
        "not json",
        "[1,2,3]",
        "\"string\"",
        "{",
        "{\"op\":\"x\",\"source\":{\"table\":\"nights\"}}",
        "{\"op\":\"cu\",\"source\":{\"table\":\"nights\"}}",
        "{\"op\":5,\"source\":{\"table\":\"nights\"}}",
        "{\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1,\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":null,\"before\":null}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":[1]}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":-1,"
        "\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":\"12a\","
        "\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":\"\","
        "\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":"
        "\"18446744073709551616\",\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1.5,"
        "\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1,"
        "\"night\":-1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1,"
        "\"night\":99999999}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1,"
        "\"night\":\"2030-02-30\"}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1,"
        "\"night\":true}}",
        "{\"op\":\"u\",\"source\":{\"table\":\"nights\"},\"after\":{\"listing_id\":1},"
        "\"before\":{\"night\":1}}",
        "{\"op\":\"c\",\"source\":{\"table\":\"listings\"},\"after\":{\"version\":1}}",
        "{\"schema\":{},\"payload\":[1]}",
        "{\"schema\":{},\"payload\":{\"op\":\"c\",\"source\":{\"table\":\"listings\"}}}",
        "{\"op\":\"c\",\"op\":\"d\",\"source\":{\"table\":\"listings\"},"
        "\"after\":{\"listing_id\":1}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(decode(NULL, bad[i]) == CAL_EINVAL, "accepted: %s", bad[i]);
        ck_assert_msg(err[0] != '\0', "no reason for: %s", bad[i]);
        ck_assert_uint_eq(ev.nkeys, 0);
    }
    /* truncated and binary input */
    const char *good = "{\"op\":\"c\",\"source\":{\"table\":\"listings\"},"
                       "\"after\":{\"listing_id\":1}}";
    for (size_t n = 1; n < strlen(good); n++)
        ck_assert_int_eq(invalidate_decode(NULL, good, n, &ev, err, sizeof(err)), CAL_EINVAL);
    char bin[64];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (char)(i * 37 + 1);
    ck_assert_int_eq(invalidate_decode("t", bin, sizeof(bin), &ev, err, sizeof(err)), CAL_EINVAL);
    ck_assert_int_eq(invalidate_decode("t", "{\"op\":\"c\"\0}", 11, &ev, err, sizeof(err)),
                     CAL_EINVAL);
}
END_TEST

/* json, a nights update whose `which` image cannot be decoded, gives the
 * other image's keys (listing id, night), marked partial with the reason. */
static void
assert_partial(const char *json, const char *which, uint64_t id, int32_t night)
{
    ck_assert_int_eq(decode(NULL, json), CAL_OK);
    ck_assert(ev.partial);
    ck_assert_msg(strstr(err, which) != NULL, "reason: %s", err);
    ck_assert_uint_eq(ev.nkeys, 2);
    assert_month_key(id, night);
    assert_listing_key(id);
}

/* An update whose one image cannot be decoded still gives the other's keys;
 * with neither decodable it is an error (garbage_is_an_error). */
START_TEST(one_undecodable_image_keeps_the_others_keys)
{
    int32_t night = date_from_ymd(2030, 7, 14);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"before\":{\"night\":%d},\"after\":{\"listing_id\":9,\"night\":%d},"
             "\"source\":{\"table\":\"nights\"},\"op\":\"u\"}",
             (int)night, (int)night);
    assert_partial(json, "before image", 9, night);
    snprintf(json, sizeof(json),
             "{\"before\":{\"listing_id\":8,\"night\":%d},\"after\":{\"listing_id\":\"x\","
             "\"night\":%d},\"source\":{\"table\":\"nights\"},\"op\":\"u\"}",
             (int)night, (int)night);
    assert_partial(json, "after image", 8, night);
    ck_assert_int_eq(decode(NULL, "{\"before\":{\"listing_id\":7},\"after\":{\"listing_id\":7,"
                                  "\"night\":1},\"source\":{\"table\":\"listings\"},"
                                  "\"op\":\"u\"}"),
                     CAL_OK);
    ck_assert(!ev.partial); /* a listings row has no night */
    ck_assert_uint_eq(ev.nkeys, 1);
}
END_TEST

START_TEST(table_names)
{
    ck_assert_str_eq(invalidate_table_name(INVALIDATE_TABLE_LISTINGS), "listings");
    ck_assert_str_eq(invalidate_table_name(INVALIDATE_TABLE_NIGHTS), "nights");
    ck_assert_str_eq(invalidate_table_name(INVALIDATE_TABLE_RESERVATIONS), "reservations");
    ck_assert_str_eq(invalidate_table_name(INVALIDATE_TABLE_NONE), "none");
}
END_TEST

/* ---- the relay's hint header ---------------------------------------- */

static const struct event_column hint_night_cols[] = {
    {"listing_id", true}, {"night", true}, {"status", false}, {"version", false}};
static const struct event_column hint_listing_cols[] = {{"listing_id", true}, {"version", false}};
static const struct event_column hint_res_cols[] = {{"reservation_id", true},
                                                    {"listing_id", false}};
static const struct event_table hint_tables[] = {
    {"calendar_shard0", "nights", 4, hint_night_cols},
    {"calendar_shard0", "listings", 2, hint_listing_cols},
    {"calendar_shard0", "reservations", 2, hint_res_cols},
};

static void
hint_row(struct event_value *v, size_t table, uint64_t id, int32_t night)
{
    memset(v, 0, 4 * sizeof(*v));
    if (table == 2) {
        v[0] = (struct event_value){.type = EVENT_UINT, .u = 77};
        v[1] = (struct event_value){.type = EVENT_UINT, .u = id};
        return;
    }
    v[0] = (struct event_value){.type = EVENT_UINT, .u = id};
    if (table == 0) {
        v[1] = (struct event_value){.type = EVENT_DATE, .i = night};
        v[2] = (struct event_value){.type = EVENT_STR, .s = "booked", .len = 6};
        v[3] = (struct event_value){.type = EVENT_UINT, .u = 3};
    } else {
        v[1] = (struct event_value){.type = EVENT_UINT, .u = 9};
    }
}

/* For every table and op the relay sends, the hint decodes to exactly what
 * the JSON value does: same table, op, source time and keys in order. */
START_TEST(the_relays_hint_decodes_as_its_value)
{
    const struct event_source src = {.name = "calendar",
                                     .ts_ms = 1700000001000ULL,
                                     .server_id = 1,
                                     .seq = 5,
                                     .file = "binlog.000001",
                                     .pos = 4,
                                     .row = 0};
    int32_t jan31 = date_from_ymd(2031, 1, 31), feb1 = date_from_ymd(2031, 2, 1);
    enum event_op ops[] = {EVENT_OP_CREATE, EVENT_OP_UPDATE, EVENT_OP_DELETE, EVENT_OP_TRUNCATE};
    for (size_t t = 0; t < 3; t++) {
        for (size_t o = 0; o < 4; o++) {
            struct event_value before[4], after[4];
            hint_row(before, t, 1000 + t, jan31);
            hint_row(after, t, 1000 + t, feb1);
            bool trunc = ops[o] == EVENT_OP_TRUNCATE;
            const struct event_value *b = ops[o] == EVENT_OP_CREATE || trunc ? NULL : before;
            const struct event_value *a = ops[o] == EVENT_OP_DELETE || trunc ? NULL : after;
            char *value, hint[160];
            size_t vlen;
            ck_assert_int_eq(event_encode_value(&hint_tables[t], ops[o], b, a, &src, 1, &value,
                                                &vlen, err, sizeof(err)),
                             CAL_OK);
            size_t hlen = event_hint(&hint_tables[t], ops[o], b, a, &src, hint, sizeof(hint));
            ck_assert_uint_gt(hlen, 0);
            struct invalidate_event fromjson, fromhint;
            ck_assert_int_eq(invalidate_decode("calendar.calendar_shard0.x", value, vlen, &fromjson,
                                               err, sizeof(err)),
                             CAL_OK);
            ck_assert_msg(invalidate_decode_hint(hint, hlen, &fromhint, err, sizeof(err)) == CAL_OK,
                          "%s", err);
            ck_assert_int_eq(fromhint.table, fromjson.table);
            ck_assert_int_eq(fromhint.op, fromjson.op);
            ck_assert_int_eq(fromhint.source_ts_ms, fromjson.source_ts_ms);
            ck_assert_int_eq(fromhint.flush_all, fromjson.flush_all);
            /* A truncate of a cached table flushes everything. */
            ck_assert_int_eq(fromjson.flush_all, trunc && hint_tables[t].table[0] != 'r');
            ck_assert_uint_eq(fromhint.nkeys, fromjson.nkeys);
            for (size_t k = 0; k < fromjson.nkeys; k++)
                ck_assert_str_eq(fromhint.keys[k], fromjson.keys[k]);
            free(value);
        }
    }
    /* an update across a month boundary: both months and the listing */
    char hint[160];
    struct event_value before[4], after[4];
    hint_row(before, 0, 42, jan31);
    hint_row(after, 0, 42, feb1);
    size_t hlen =
        event_hint(&hint_tables[0], EVENT_OP_UPDATE, before, after, &src, hint, sizeof(hint));
    ck_assert_str_eq(hint, "nights u 1700000001000 42:22310 42:22311");
    ck_assert_int_eq(invalidate_decode_hint(hint, hlen, &ev, err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(ev.nkeys, 3);
    /* no hint for a night the value cannot carry either */
    after[1].invalid = true;
    ck_assert_uint_eq(
        event_hint(&hint_tables[0], EVENT_OP_UPDATE, before, after, &src, hint, sizeof(hint)), 0);
}
END_TEST

START_TEST(malformed_hints_are_refused)
{
    static const char *const bad[] = {
        "",
        "nights",
        "nights u",
        "nights u 1",
        "nights u 1 42:1",
        "nights x 1 42:1 -",
        "nights u 1 42 -",     /* a nights image without its night */
        "listings u 1 42:1 -", /* a listings image with one */
        "nights u 1 - -",      /* no image at all */
        "nights u 1 42:1 - extra",
        "nights u 1x 42:1 -",
        "nights u 1 4a:1 -",
        "nights u 1 42:99999999 -",
        "nights u 1 123456789012345678901:1 -",
        "reservations c 1 7 -", /* other tables carry no image */
        "nights u 1 42:1  -",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(invalidate_decode_hint(bad[i], strlen(bad[i]), &ev, err, sizeof(err)) ==
                          CAL_EINVAL,
                      "accepted \"%s\"", bad[i]);
        ck_assert_uint_eq(ev.nkeys, 0);
    }
    /* A header's bytes are taken as they are: a NUL inside an image. */
    static const char nul_id[] = "listings u 1 7\0junk -";
    static const char nul_night[] = "nights u 1 42:1\0 -";
    ck_assert_int_eq(invalidate_decode_hint(nul_id, sizeof(nul_id) - 1, &ev, err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_int_eq(
        invalidate_decode_hint(nul_night, sizeof(nul_night) - 1, &ev, err, sizeof(err)),
        CAL_EINVAL);
    ck_assert_uint_eq(ev.nkeys, 0);
    const char *ok = "reservations c 0 - -";
    ck_assert_int_eq(invalidate_decode_hint(ok, strlen(ok), &ev, err, sizeof(err)), CAL_OK);
    ck_assert_int_eq(ev.table, INVALIDATE_TABLE_RESERVATIONS);
    ck_assert_int_eq(ev.source_ts_ms, -1);
    ck_assert_uint_eq(ev.nkeys, 0);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("invalidate");
    UNIT_CASE(s, relay_nights_insert);
    UNIT_CASE(s, relay_nights_update_both_images);
    UNIT_CASE(s, relay_nights_update_same_month_dedup);
    UNIT_CASE(s, relay_nights_delete_uses_before);
    UNIT_CASE(s, an_update_across_listings_and_months_names_four_keys);
    UNIT_CASE(s, nights_up_to_the_last_date);
    UNIT_CASE(s, relay_listings_ops);
    UNIT_CASE(s, reservations_accepted_no_keys);
    UNIT_CASE(s, other_table_ignored);
    UNIT_CASE(s, debezium_schemas_enabled);
    UNIT_CASE(s, debezium_without_schemas);
    UNIT_CASE(s, date_days_and_string_agree);
    UNIT_CASE(s, table_from_topic_when_no_source);
    UNIT_CASE(s, tombstones);
    UNIT_CASE(s, truncate_flushes);
    UNIT_CASE(s, garbage_is_an_error);
    UNIT_CASE(s, one_undecodable_image_keeps_the_others_keys);
    UNIT_CASE(s, table_names);
    UNIT_CASE(s, the_relays_hint_decodes_as_its_value);
    UNIT_CASE(s, malformed_hints_are_refused);
    return unit_run(s);
}
