/* Unit tests of cdc/event: Debezium-style JSON of every column type, op
 * mapping, keys, topic names, partitions. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/event.h"
#include "sharding/shardmap.h"
#include "tests/lib/unit.h"

static const struct event_column night_cols[] = {
    {"listing_id", true},      {"night", true},  {"status", false},
    {"reservation_id", false}, {"price", false}, {"updated_at", false},
};
static const struct event_table nights = {"calendar_shard0", "nights", 6, night_cols};

static const struct event_source src = {
    .name = "calendar",
    .ts_ms = 1700000000000ULL,
    .server_id = 1,
    .domain_id = 0,
    .seq = 42,
    .file = "binlog.000003",
    .pos = 1234,
    .row = 2,
};

static void
night_row(struct event_value *v, const char *status, int64_t price)
{
    memset(v, 0, 6 * sizeof(*v));
    v[0] = (struct event_value){.type = EVENT_UINT, .u = 42};
    v[1] = (struct event_value){.type = EVENT_DATE, .i = 20819};
    v[2] = (struct event_value){.type = EVENT_STR, .s = status, .len = strlen(status)};
    v[3] = (struct event_value){.type = EVENT_NULL};
    v[4] = (struct event_value){.type = EVENT_INT, .i = price};
    v[5] = (struct event_value){
        .type = EVENT_TIMESTAMP, .i = 1700000000, .usec = 123456, .precision = 6};
}

static char *
encode(enum event_op op, const struct event_value *before, const struct event_value *after)
{
    char *out = NULL, err[128];
    size_t len;
    ck_assert_int_eq(event_encode_value(&nights, op, before, after, &src, 1700000000500ULL, &out,
                                        &len, err, sizeof(err)),
                     CAL_OK);
    ck_assert_uint_eq(len, strlen(out));
    return out;
}

START_TEST(create_event_is_exact)
{
    struct event_value after[6];
    night_row(after, "booked", -5);
    char *out = encode(EVENT_OP_CREATE, NULL, after);
    ck_assert_str_eq(
        out,
        "{\"before\":null,\"after\":{\"listing_id\":42,\"night\":20819,\"status\":\"booked\","
        "\"reservation_id\":null,\"price\":-5,\"updated_at\":\"2023-11-14T22:13:20.123456Z\"},"
        "\"source\":{\"version\":\"calendar-cdc-1\",\"connector\":\"mariadb\",\"name\":"
        "\"calendar\",\"ts_ms\":1700000000000,\"db\":\"calendar_shard0\",\"table\":\"nights\","
        "\"server_id\":1,\"gtid\":\"0-1-42\",\"file\":\"binlog.000003\",\"pos\":1234,\"row\":2,"
        "\"snapshot\":\"false\"},\"op\":\"c\",\"ts_ms\":1700000000500}");
    free(out);
}
END_TEST

START_TEST(update_and_delete_carry_before)
{
    struct event_value before[6], after[6];
    night_row(before, "booked", 1);
    night_row(after, "available", 2);
    char *out = encode(EVENT_OP_UPDATE, before, after);
    ck_assert_ptr_nonnull(strstr(out, "\"before\":{\"listing_id\":42,\"night\":20819,\"status\":"
                                      "\"booked\""));
    ck_assert_ptr_nonnull(strstr(out, "\"after\":{\"listing_id\":42,\"night\":20819,\"status\":"
                                      "\"available\""));
    ck_assert_ptr_nonnull(strstr(out, "\"op\":\"u\""));
    free(out);
    out = encode(EVENT_OP_DELETE, before, NULL);
    ck_assert_ptr_nonnull(strstr(out, "\"before\":{\"listing_id\":42,\"night\":20819,\"status\":"
                                      "\"booked\""));
    ck_assert_ptr_nonnull(strstr(out, "\"after\":null"));
    ck_assert_ptr_nonnull(strstr(out, "\"op\":\"d\""));
    free(out);
}
END_TEST

/* A truncate event names its table and nothing of a row, as Debezium's. */
START_TEST(truncate_event_is_exact)
{
    char *out = encode(EVENT_OP_TRUNCATE, NULL, NULL);
    ck_assert_str_eq(
        out, "{\"before\":null,\"after\":null,\"source\":{\"version\":\"calendar-cdc-1\","
             "\"connector\":\"mariadb\",\"name\":\"calendar\",\"ts_ms\":1700000000000,\"db\":"
             "\"calendar_shard0\",\"table\":\"nights\",\"server_id\":1,\"gtid\":\"0-1-42\","
             "\"file\":\"binlog.000003\",\"pos\":1234,\"row\":2,\"snapshot\":\"false\"},"
             "\"op\":\"t\",\"ts_ms\":1700000000500}");
    free(out);
    /* Of a table whose columns the relay never saw. */
    static const struct event_table bare = {"calendar_shard0", "listings", 0, NULL};
    size_t len;
    char err[128], hint[64];
    ck_assert_int_eq(event_encode_value(&bare, EVENT_OP_TRUNCATE, NULL, NULL, &src, 1, &out, &len,
                                        err, sizeof(err)),
                     CAL_OK);
    ck_assert_ptr_nonnull(strstr(out, "\"table\":\"listings\""));
    free(out);
    ck_assert_uint_gt(event_hint(&bare, EVENT_OP_TRUNCATE, NULL, NULL, &src, hint, sizeof(hint)),
                      0);
    ck_assert_str_eq(hint, "listings t 1700000000000 - -");
}
END_TEST

START_TEST(op_must_match_images)
{
    struct event_value row[6];
    night_row(row, "x", 0);
    char *out = NULL, err[128];
    size_t len;
    ck_assert_int_eq(event_encode_value(&nights, EVENT_OP_CREATE, row, row, &src, 0, &out, &len,
                                        err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_int_eq(event_encode_value(&nights, EVENT_OP_UPDATE, NULL, row, &src, 0, &out, &len,
                                        err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_int_eq(event_encode_value(&nights, EVENT_OP_DELETE, NULL, row, &src, 0, &out, &len,
                                        err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_int_eq(event_encode_value(&nights, EVENT_OP_TRUNCATE, row, NULL, &src, 0, &out, &len,
                                        err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_int_eq(event_encode_value(&nights, EVENT_OP_TRUNCATE, NULL, row, &src, 0, &out, &len,
                                        err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(event_op_name(EVENT_OP_TRUNCATE), "t");
    ck_assert_str_eq(event_op_name(EVENT_OP_CREATE), "c");
    ck_assert_str_eq(event_op_name(EVENT_OP_UPDATE), "u");
    ck_assert_str_eq(event_op_name(EVENT_OP_DELETE), "d");
}
END_TEST

/* Every value type, encoded alone as the after image of a 1-column table. */
static char *
one(struct event_value v)
{
    static const struct event_column col[] = {{"v", true}};
    static const struct event_table t = {"db", "t", 1, col};
    char *out = NULL, err[128];
    size_t len;
    ck_assert_int_eq(
        event_encode_value(&t, EVENT_OP_CREATE, NULL, &v, &src, 0, &out, &len, err, sizeof(err)),
        CAL_OK);
    char *a = strstr(out, "\"after\":");
    ck_assert_ptr_nonnull(a);
    char *end = strstr(a, ",\"source\"");
    ck_assert_ptr_nonnull(end);
    *end = '\0';
    char *res = strdup(a + 8);
    free(out);
    return res;
}

#define ONE_EQ(value, expected)                                                                    \
    do {                                                                                           \
        char *got_ = one(value);                                                                   \
        ck_assert_str_eq(got_, expected);                                                          \
        free(got_);                                                                                \
    } while (0)

START_TEST(value_types)
{
    ONE_EQ(((struct event_value){.type = EVENT_NULL}), "{\"v\":null}");
    ONE_EQ(((struct event_value){.type = EVENT_ABSENT}), "{}");
    ONE_EQ(((struct event_value){.type = EVENT_INT, .i = INT64_MIN}),
           "{\"v\":-9223372036854775808}");
    ONE_EQ(((struct event_value){.type = EVENT_UINT, .u = (uint64_t)INT64_MAX}),
           "{\"v\":9223372036854775807}");
    ONE_EQ(((struct event_value){.type = EVENT_UINT, .u = UINT64_MAX}),
           "{\"v\":\"18446744073709551615\"}");
    ONE_EQ(((struct event_value){.type = EVENT_UINT, .u = 4294967295u}), "{\"v\":4294967295}");
    ONE_EQ(((struct event_value){.type = EVENT_REAL, .d = 1.5}), "{\"v\":1.5}");
    ONE_EQ(((struct event_value){.type = EVENT_STR, .s = "a\"b\\c\xc3\xa9", .len = 7}),
           "{\"v\":\"a\\\"b\\\\c\xc3\xa9\"}");
    ONE_EQ(((struct event_value){.type = EVENT_STR, .s = "ab", .len = 1}), "{\"v\":\"a\"}");
    ONE_EQ(((struct event_value){.type = EVENT_STR,
                                 .s = "a\xff"
                                      "b",
                                 .len = 3}),
           "{\"v\":\"a?b\"}");
    ONE_EQ(((struct event_value){.type = EVENT_STR, .s = "", .len = 0}), "{\"v\":\"\"}");
    ONE_EQ(((struct event_value){.type = EVENT_DATE, .i = 0}), "{\"v\":0}");
    ONE_EQ(((struct event_value){.type = EVENT_DATE, .i = -1}), "{\"v\":-1}");
    ONE_EQ(((struct event_value){.type = EVENT_DATE, .invalid = true}), "{\"v\":null}");
    ONE_EQ(((struct event_value){.type = EVENT_TIMESTAMP, .i = 1, .precision = 0}),
           "{\"v\":\"1970-01-01T00:00:01Z\"}");
    ONE_EQ(((struct event_value){
               .type = EVENT_TIMESTAMP, .i = 1700000000, .usec = 5000, .precision = 3}),
           "{\"v\":\"2023-11-14T22:13:20.005Z\"}");
    ONE_EQ(((struct event_value){
               .type = EVENT_TIMESTAMP, .i = 2147483647, .usec = 999999, .precision = 6}),
           "{\"v\":\"2038-01-19T03:14:07.999999Z\"}");
    ONE_EQ(((struct event_value){.type = EVENT_TIMESTAMP, .i = 0, .precision = 6}), "{\"v\":null}");
    /* DATETIME has no zone (no Z) and its epoch is a real value */
    ONE_EQ(((struct event_value){.type = EVENT_DATETIME, .i = 0}),
           "{\"v\":\"1970-01-01T00:00:00\"}");
    ONE_EQ(((struct event_value){
               .type = EVENT_DATETIME, .i = -30610224000, .usec = 120000, .precision = 2}),
           "{\"v\":\"1000-01-01T00:00:00.12\"}");
    ONE_EQ(((struct event_value){.type = EVENT_DATETIME, .invalid = true}), "{\"v\":null}");
    ONE_EQ(((struct event_value){
               .type = EVENT_TIME, .negative = true, .usec = 500000, .precision = 1}),
           "{\"v\":\"-00:00:00.5\"}");
    ONE_EQ(((struct event_value){.type = EVENT_TIME, .i = 838 * 3600 + 59 * 60 + 59}),
           "{\"v\":\"838:59:59\"}");
    ONE_EQ(((struct event_value){.type = EVENT_DECIMAL, .dec = "-12.50"}), "{\"v\":\"-12.50\"}");
    /* control characters escaped, DEL and UTF-8 as they are */
    ONE_EQ(((struct event_value){.type = EVENT_STR, .s = "\n\t\r\b\f\x01\x1f\x7f", .len = 8}),
           "{\"v\":\"\\n\\t\\r\\b\\f\\u0001\\u001f\x7f\"}");
    ONE_EQ(((struct event_value){.type = EVENT_STR, .s = "a\0b", .len = 3}),
           "{\"v\":\"a\\u0000b\"}");
    ONE_EQ(((struct event_value){.type = EVENT_STR, .s = "\xe2\x82\xac\xc3", .len = 4}),
           "{\"v\":\"\xe2\x82\xac?\"}"); /* a cut sequence at the end */
    ONE_EQ(((struct event_value){.type = EVENT_REAL, .d = 2}), "{\"v\":2.0}");
    ONE_EQ(((struct event_value){.type = EVENT_REAL, .d = 0.1}), "{\"v\":0.10000000000000001}");
    ONE_EQ(((struct event_value){.type = EVENT_REAL, .d = -1e300}),
           "{\"v\":-1.0000000000000001e+300}");
    ONE_EQ(((struct event_value){.type = EVENT_REAL, .d = NAN}), "{\"v\":null}");
    ONE_EQ(((struct event_value){.type = EVENT_REAL, .d = -INFINITY}), "{\"v\":null}");
    ONE_EQ(((struct event_value){.type = EVENT_INT, .i = -7}), "{\"v\":-7}");
    ONE_EQ(((struct event_value){.type = EVENT_UINT, .u = 0}), "{\"v\":0}");
}
END_TEST

START_TEST(keys_are_primary_key_columns_in_order)
{
    struct event_value row[6];
    night_row(row, "booked", 1);
    char *out = NULL, err[128];
    size_t len;
    ck_assert_int_eq(event_encode_key(&nights, row, &out, &len, err, sizeof(err)), CAL_OK);
    ck_assert_str_eq(out, "{\"listing_id\":42,\"night\":20819}");
    free(out);

    static const struct event_column rcols[] = {{"reservation_id", true}, {"listing_id", false}};
    static const struct event_table res = {"db", "reservations", 2, rcols};
    struct event_value r[2] = {{.type = EVENT_UINT, .u = 7}, {.type = EVENT_UINT, .u = 42}};
    ck_assert_int_eq(event_encode_key(&res, r, &out, &len, err, sizeof(err)), CAL_OK);
    ck_assert_str_eq(out, "{\"reservation_id\":7}");
    free(out);

    r[0].type = EVENT_NULL;
    out = NULL;
    ck_assert_int_eq(event_encode_key(&res, r, &out, &len, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "reservation_id"));
    static const struct event_column nokey[] = {{"a", false}};
    static const struct event_table t = {"db", "t", 1, nokey};
    ck_assert_int_eq(event_encode_key(&t, r, &out, &len, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_null(out);
}
END_TEST

START_TEST(topic_names)
{
    char buf[256];
    ck_assert_int_eq(event_topic(buf, sizeof(buf), "calendar", "calendar_shard3", "nights"),
                     CAL_OK);
    ck_assert_str_eq(buf, "calendar.calendar_shard3.nights");
    ck_assert_int_eq(event_topic(buf, 10, "calendar", "calendar_shard3", "nights"), CAL_EINVAL);
    ck_assert_int_eq(event_topic(buf, sizeof(buf), "", "db", "t"), CAL_EINVAL);
    ck_assert_int_eq(event_topic(buf, sizeof(buf), "cal endar", "db", "t"), CAL_EINVAL);
    ck_assert_int_eq(event_topic(buf, sizeof(buf), "p", "d/b", "t"), CAL_EINVAL);
    ck_assert_int_eq(event_topic(buf, sizeof(buf), "p-1", "d_b", "T.2"), CAL_OK);
    char longp[300];
    memset(longp, 'a', 250);
    longp[250] = '\0';
    ck_assert_int_eq(event_topic(buf, sizeof(buf), longp, "d", "t"), CAL_EINVAL);
}
END_TEST

START_TEST(partition_follows_listing)
{
    ck_assert_int_eq(event_partition(42, 8), (int32_t)((shardmap_fmix64(42) >> 32) % 8));
    ck_assert_int_eq(event_partition(42, 8), 1); /* stable across releases */
    /* The listings of one shard (here: even vbuckets, as with two shards)
     * reach every partition, about evenly. */
    int per_partition[8] = {0};
    int listed = 0;
    for (uint64_t id = 1; listed < 8000; id++) {
        if (shardmap_fmix64(id) % 4096 % 2 != 0)
            continue;
        per_partition[event_partition(id, 8)]++;
        listed++;
    }
    for (int p = 0; p < 8; p++)
        ck_assert_msg(per_partition[p] > 800 && per_partition[p] < 1200,
                      "partition %d got %d of 8000 listings of one shard", p, per_partition[p]);
    /* The high half of the routing hash, not its low bits (the vbucket's):
     * every relay and consumer version must agree on it. */
    for (uint64_t id = 1; id < 2000; id += 7) {
        int32_t p = event_partition(id, 12);
        ck_assert(p >= 0 && p < 12);
        ck_assert_int_eq(p, (int32_t)((shardmap_fmix64(id) >> 32) % 12));
    }
    /* Computed apart from the code: ids 2, 3, 4 and 5 of 12 partitions
     * (the low bits would give 10, 9, 0 and 4). */
    ck_assert_int_eq(event_partition(2, 12), 7);
    ck_assert_int_eq(event_partition(3, 12), 7);
    ck_assert_int_eq(event_partition(4, 12), 3);
    ck_assert_int_eq(event_partition(5, 12), 8);
    ck_assert_int_eq(event_partition(UINT64_MAX, 1), 0);

    struct event_value row[6];
    night_row(row, "x", 0);
    uint64_t id = 0;
    ck_assert_int_eq(event_listing_id(&nights, row, &id), CAL_OK);
    ck_assert_uint_eq(id, 42);
    row[0] = (struct event_value){.type = EVENT_INT, .i = 9};
    ck_assert_int_eq(event_listing_id(&nights, row, &id), CAL_OK);
    ck_assert_uint_eq(id, 9);
    row[0] = (struct event_value){.type = EVENT_INT, .i = -9};
    ck_assert_int_eq(event_listing_id(&nights, row, &id), CAL_EINVAL);
    row[0] = (struct event_value){.type = EVENT_NULL};
    ck_assert_int_eq(event_listing_id(&nights, row, &id), CAL_EINVAL);
    static const struct event_column other[] = {{"x", true}};
    static const struct event_table t = {"db", "t", 1, other};
    ck_assert_int_eq(event_listing_id(&t, row, &id), CAL_ENOTFOUND);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("event");
    UNIT_CASE(s, create_event_is_exact);
    UNIT_CASE(s, update_and_delete_carry_before);
    UNIT_CASE(s, truncate_event_is_exact);
    UNIT_CASE(s, op_must_match_images);
    UNIT_CASE(s, value_types);
    UNIT_CASE(s, keys_are_primary_key_columns_in_order);
    UNIT_CASE(s, topic_names);
    UNIT_CASE(s, partition_follows_listing);
    return unit_run(s);
}
