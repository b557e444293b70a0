/* Unit tests of calendard/request.c: every refusal has its stable code. */
#include <stdlib.h>
#include <string.h>

#include "calendard/request.h"
#include "common/date.h"
#include "tests/lib/unit.h"

#define BODY(s) s, strlen(s)

START_TEST(listing_ok)
{
    struct listing_settings set;
    struct api_error e = {0};
    ck_assert(request_parse_listing(
        BODY("{\"default_price\":10000,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}"),
        &set, &e));
    ck_assert_int_eq(set.default_price, 10000);
    ck_assert_str_eq(set.currency, "USD");
    ck_assert_int_eq(set.min_nights, 1);
    ck_assert_int_eq(set.max_nights, 30);
}
END_TEST

static void
expect_listing_error(const char *body, const char *code)
{
    struct listing_settings set;
    struct api_error e = {0};
    ck_assert_msg(!request_parse_listing(body, strlen(body), &set, &e), "accepted %s", body);
    ck_assert_int_eq(e.http, 400);
    ck_assert_msg(strcmp(e.code, code) == 0, "%s: %s, not %s", body, e.code, code);
}

START_TEST(listing_refusals)
{
    expect_listing_error("", "invalid_json");
    expect_listing_error("[1]", "invalid_json");
    expect_listing_error("{\"default_price\":1", "invalid_json");
    expect_listing_error("{\"default_price\":1,\"default_price\":2}", "invalid_json");
    expect_listing_error("{\"currency\":\"\xff\xfe\"}", "invalid_json");
    /* Past 64 bits: JSON, but no field's value. */
    expect_listing_error("{\"default_price\":99999999999999999999,\"currency\":\"USD\","
                         "\"min_nights\":1,\"max_nights\":3}",
                         "invalid_field");
    expect_listing_error("{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":1}",
                         "missing_field");
    expect_listing_error("{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":1,"
                         "\"max_nights\":3,\"colour\":1}",
                         "unknown_field");
    expect_listing_error("{\"default_price\":\"1\",\"currency\":\"USD\",\"min_nights\":1,"
                         "\"max_nights\":3}",
                         "invalid_field");
    expect_listing_error("{\"default_price\":1.5,\"currency\":\"USD\",\"min_nights\":1,"
                         "\"max_nights\":3}",
                         "invalid_field");
    expect_listing_error("{\"default_price\":-1,\"currency\":\"USD\",\"min_nights\":1,"
                         "\"max_nights\":3}",
                         "invalid_field");
    expect_listing_error("{\"default_price\":1,\"currency\":\"usd\",\"min_nights\":1,"
                         "\"max_nights\":3}",
                         "invalid_field");
    expect_listing_error("{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":4,"
                         "\"max_nights\":3}",
                         "invalid_field");
    expect_listing_error("{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":0,"
                         "\"max_nights\":3}",
                         "invalid_field");
}
END_TEST

/* jansson stops at a number it cannot hold (past 64 bits, past the double
 * range) before it has seen the rest of the body: the code is still the
 * body's own, and invalid_field only for a known field of a well-formed
 * object. */
START_TEST(huge_numbers_keep_the_code_of_the_body)
{
    static const struct {
        const char *body, *code;
    } cases[] = {
        {"[99999999999999999999]", "invalid_json"},
        {"[1e400]", "invalid_json"},
        {"99999999999999999999", "invalid_json"},
        {"{\"default_price\":99999999999999999999", "invalid_json"},
        {"{\"default_price\":99999999999999999999,\"default_price\":1,\"currency\":\"USD\","
         "\"min_nights\":1,\"max_nights\":3}",
         "invalid_json"},
        {"{\"default_price\":1e400 1,\"currency\":\"USD\"}", "invalid_json"},
        {"{\"bogus\":1e400,\"default_price\":1,\"currency\":\"USD\",\"min_nights\":1,"
         "\"max_nights\":3}",
         "unknown_field"},
        {"{\"bogus\":-99999999999999999999}", "unknown_field"},
        /* an escaped quote does not end the key: the number is a value */
        {"{\"a\\\"\":1e400}", "unknown_field"},
        {"{\"default_price\":1e400,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":3}",
         "invalid_field"},
        {"{\"default_price\":-99999999999999999999,\"currency\":\"USD\",\"min_nights\":1,"
         "\"max_nights\":3}",
         "invalid_field"},
        {"{\"currency\":\"USD\",\"default_price\":[99999999999999999999]}", "invalid_field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_listing_error(cases[i].body, cases[i].code);
    struct search_request r;
    struct api_error e = {0};
    const char *ids = "{\"listing_ids\":[1,99999999999999999999],\"check_in\":\"2030-02-01\","
                      "\"check_out\":\"2030-02-02\"}";
    ck_assert(!request_parse_search(ids, strlen(ids), 3, date_from_ymd(2030, 1, 1), &r, &e));
    ck_assert_str_eq(e.code, "invalid_field");
}
END_TEST

START_TEST(booking_dates)
{
    struct booking_request r;
    struct api_error e = {0};
    ck_assert(request_parse_booking(
        BODY("{\"check_in\":\"2030-02-28\",\"check_out\":\"2030-03-02\",\"guest_id\":7}"), &r, &e));
    ck_assert_int_eq(r.check_out - r.check_in, 2);
    ck_assert_uint_eq(r.guest_id, 7);
    const char *bad[] = {
        "{\"check_in\":\"2030-02-30\",\"check_out\":\"2030-03-02\",\"guest_id\":7}",
        "{\"check_in\":\"2030-2-28\",\"check_out\":\"2030-03-02\",\"guest_id\":7}",
        "{\"check_in\":\"2030-13-01\",\"check_out\":\"2030-03-02\",\"guest_id\":7}",
        /* The year 9999: its last month's range would end past MariaDB's dates. */
        "{\"check_in\":\"9999-12-01\",\"check_out\":\"9999-12-10\",\"guest_id\":7}",
        "{\"check_in\":\"1969-12-31\",\"check_out\":\"1970-01-02\",\"guest_id\":7}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert(!request_parse_booking(bad[i], strlen(bad[i]), &r, &e));
        ck_assert_str_eq(e.code, "invalid_date");
    }
    ck_assert(!request_parse_booking(
        BODY("{\"check_in\":20300228,\"check_out\":\"2030-03-02\",\"guest_id\":7}"), &r, &e));
    ck_assert_str_eq(e.code, "invalid_field");
    ck_assert(!request_parse_booking(
        BODY("{\"check_in\":\"2030-02-28\",\"check_out\":\"2030-03-02\",\"guest_id\":0}"), &r, &e));
    ck_assert_str_eq(e.code, "invalid_field");
    ck_assert(!request_parse_booking(BODY("{\"check_in\":\"2030-02-28\",\"guest_id\":1}"), &r, &e));
    ck_assert_str_eq(e.code, "missing_field");
}
END_TEST

START_TEST(calendar_actions)
{
    struct calendar_request c;
    struct api_error e = {0};
    int32_t today = date_from_ymd(2030, 1, 1);
    ck_assert(request_parse_calendar(
        BODY("{\"from\":\"2030-02-01\",\"to\":\"2030-02-03\",\"action\":\"set_price\","
             "\"price\":900}"),
        today, &c, &e));
    ck_assert_int_eq(c.action, CALENDAR_SET_PRICE);
    ck_assert_int_eq(c.price, 900);
    ck_assert(!request_parse_calendar(
        BODY("{\"from\":\"2030-02-01\",\"to\":\"2030-02-03\",\"action\":\"set_price\"}"), today, &c,
        &e));
    ck_assert_str_eq(e.code, "missing_field");
    ck_assert(!request_parse_calendar(
        BODY("{\"from\":\"2030-02-01\",\"to\":\"2030-02-03\",\"action\":\"block\",\"price\":1}"),
        today, &c, &e));
    ck_assert_str_eq(e.code, "invalid_field");
    ck_assert(!request_parse_calendar(
        BODY("{\"from\":\"2030-02-01\",\"to\":\"2030-02-03\",\"action\":\"paint\"}"), today, &c,
        &e));
    ck_assert_str_eq(e.code, "invalid_field");
    ck_assert(!request_parse_calendar(
        BODY("{\"from\":\"2030-02-03\",\"to\":\"2030-02-03\",\"action\":\"block\"}"), today, &c,
        &e));
    ck_assert_str_eq(e.code, "invalid_range");
    ck_assert(!request_parse_calendar(
        BODY("{\"from\":\"2029-12-31\",\"to\":\"2030-01-03\",\"action\":\"block\"}"), today, &c,
        &e));
    ck_assert_str_eq(e.code, "past_date");
    ck_assert(!request_parse_calendar(
        BODY("{\"from\":\"2030-01-01\",\"to\":\"2031-06-01\",\"action\":\"block\"}"), today, &c,
        &e));
    ck_assert_str_eq(e.code, "invalid_range");
}
END_TEST

/* Block and unblock parse to their action and range; 366 nights at once is
 * the most. */
START_TEST(calendar_blocks_and_the_longest_range)
{
    struct calendar_request c;
    struct api_error e = {0};
    int32_t today = date_from_ymd(2030, 1, 1);
    ck_assert(request_parse_calendar(
        BODY("{\"from\":\"2030-02-01\",\"to\":\"2030-02-03\",\"action\":\"unblock\"}"), today, &c,
        &e));
    ck_assert_int_eq(c.action, CALENDAR_UNBLOCK);
    ck_assert_int_eq(c.from, date_from_ymd(2030, 2, 1));
    ck_assert_int_eq(c.to, date_from_ymd(2030, 2, 3));
    ck_assert(request_parse_calendar(
        BODY("{\"from\":\"2030-01-01\",\"to\":\"2031-01-02\",\"action\":\"block\"}"), today, &c,
        &e));
    ck_assert_int_eq(c.action, CALENDAR_BLOCK);
    ck_assert_int_eq(c.to - c.from, 366);
    ck_assert(!request_parse_calendar(
        BODY("{\"from\":\"2030-01-01\",\"to\":\"2031-01-03\",\"action\":\"block\"}"), today, &c,
        &e));
    ck_assert_str_eq(e.code, "invalid_range");
}
END_TEST

static bool
search(const char *body, size_t max, struct search_request *out, struct api_error *e)
{
    return request_parse_search(body, strlen(body), max, date_from_ymd(2030, 1, 1), out, e);
}

/* A search takes 1 to max positive ids and a stay of 1 to 366 nights from
 * today on; each refusal has its code. */
START_TEST(search_requests)
{
    struct search_request r;
    struct api_error e = {0};
    ck_assert(search("{\"listing_ids\":[7,9223372036854775807,7],\"check_in\":\"2030-01-01\","
                     "\"check_out\":\"2031-01-02\"}",
                     3, &r, &e));
    ck_assert_uint_eq(r.n, 3);
    ck_assert_uint_eq(r.listing_ids[0], 7);
    ck_assert_uint_eq(r.listing_ids[1], 9223372036854775807ULL);
    ck_assert_uint_eq(r.listing_ids[2], 7);
    ck_assert_int_eq(r.check_in, date_from_ymd(2030, 1, 1));
    ck_assert_int_eq(r.check_out - r.check_in, 366);
    free(r.listing_ids);
    const struct {
        const char *body, *code;
    } bad[] = {
        {"{\"listing_ids\":[1,2,3,4],\"check_in\":\"2030-02-01\",\"check_out\":\"2030-02-02\"}",
         "invalid_field"}, /* more than max */
        {"{\"listing_ids\":[],\"check_in\":\"2030-02-01\",\"check_out\":\"2030-02-02\"}",
         "invalid_field"},
        {"{\"listing_ids\":[0],\"check_in\":\"2030-02-01\",\"check_out\":\"2030-02-02\"}",
         "invalid_field"},
        {"{\"listing_ids\":[-1],\"check_in\":\"2030-02-01\",\"check_out\":\"2030-02-02\"}",
         "invalid_field"},
        {"{\"listing_ids\":[\"1\"],\"check_in\":\"2030-02-01\",\"check_out\":\"2030-02-02\"}",
         "invalid_field"},
        {"{\"listing_ids\":[1],\"check_in\":\"2030-02-02\",\"check_out\":\"2030-02-02\"}",
         "invalid_range"},
        {"{\"listing_ids\":[1],\"check_in\":\"2030-01-01\",\"check_out\":\"2031-01-03\"}",
         "invalid_range"},
        {"{\"listing_ids\":[1],\"check_in\":\"2029-12-31\",\"check_out\":\"2030-01-02\"}",
         "past_date"},
        {"{\"listing_ids\":[1],\"check_in\":\"2030-02-01\"}", "missing_field"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&e, 0, sizeof(e));
        ck_assert_msg(!search(bad[i].body, 3, &r, &e), "accepted %s", bad[i].body);
        ck_assert_msg(strcmp(e.code, bad[i].code) == 0, "%s: %s, not %s", bad[i].body, e.code,
                      bad[i].code);
        ck_assert_ptr_null(r.listing_ids);
    }
}
END_TEST

START_TEST(ids_and_headers)
{
    uint64_t id, v;
    ck_assert(request_parse_id("42", 2, &id));
    ck_assert_uint_eq(id, 42);
    ck_assert(request_parse_id("9223372036854775807", 19, &id));
    ck_assert_uint_eq(id, 9223372036854775807ULL);
    ck_assert(!request_parse_id("9223372036854775808", 19, &id));
    ck_assert(!request_parse_id("0", 1, &id));
    ck_assert(!request_parse_id("007", 3, &id)); /* not 7: one spelling per id */
    ck_assert(!request_parse_id("00", 2, &id));
    ck_assert(request_parse_id("700", 3, &id));
    ck_assert_uint_eq(id, 700);
    ck_assert(!request_parse_id("-1", 2, &id));
    ck_assert(!request_parse_id("4 2", 3, &id));
    ck_assert(!request_parse_id("", 0, &id));
    ck_assert(request_parse_if_match("\"17\"", &v));
    ck_assert_uint_eq(v, 17);
    ck_assert(request_parse_if_match("17", &v));
    ck_assert(!request_parse_if_match("W/\"17\"", &v));
    ck_assert(request_parse_if_match("*", &v));
    ck_assert_uint_eq(v, 0);
    ck_assert(!request_parse_if_match("\"\"", &v));
    /* Numbers no version can be are versions that match nothing. */
    ck_assert(request_parse_if_match("\"0\"", &v));
    ck_assert_uint_eq(v, REQUEST_VERSION_NONE);
    ck_assert(request_parse_if_match("123456789012345678901234567890", &v));
    ck_assert_uint_eq(v, REQUEST_VERSION_NONE);
    ck_assert(request_parse_if_match("\"00000000000000000000005\"", &v));
    ck_assert_uint_eq(v, 5);
    ck_assert(!request_parse_if_match("\"-1\"", &v));
    ck_assert(!request_parse_if_match("1.5", &v));
}
END_TEST

START_TEST(ranges)
{
    int32_t f, t;
    struct api_error e = {0};
    ck_assert(request_parse_range("2030-01-01", "2030-01-31", &f, &t, &e));
    ck_assert_int_eq(t - f, 30);
    ck_assert(!request_parse_range(NULL, "2030-01-31", &f, &t, &e));
    ck_assert_str_eq(e.code, "invalid_query");
    ck_assert(!request_parse_range("2030-01-01", "tomorrow", &f, &t, &e));
    ck_assert_str_eq(e.code, "invalid_query");
    ck_assert(!request_parse_range("2030-01-02", "2030-01-01", &f, &t, &e));
    ck_assert_str_eq(e.code, "invalid_range");
    ck_assert(!request_parse_range("2030-01-01", "2031-01-03", &f, &t, &e));
    ck_assert_str_eq(e.code, "invalid_range");
}
END_TEST

/* A refusal may quote the client's bytes (jansson's error text, a key cut
 * at 64 bytes); the message stays printable ASCII, so the daemon can always
 * put it in a JSON answer (found by fuzz_api: json_pack refused it, and the
 * answer was a NULL body). */
START_TEST(refusal_messages_are_printable_ascii)
{
    static const char *const bodies[] = {
        "{\"de\\\xd3\xb3\",\"min_nights\":1,\"max_nights\"ggg:30}",
        "{\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9x\":1}", /* an unknown key cut inside a character */
        "{\"currency\":\"\xff\"}",
    };
    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        struct listing_settings out;
        struct api_error e = {0};
        ck_assert(!request_parse_listing(bodies[b], strlen(bodies[b]), &out, &e));
        ck_assert_uint_gt(strlen(e.message), 0);
        for (const char *c = e.message; *c != '\0'; c++)
            ck_assert_msg((unsigned char)*c >= 0x20 && (unsigned char)*c <= 0x7e,
                          "body %zu: byte 0x%02x in \"%s\"", b, (unsigned char)*c, e.message);
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("request");
    UNIT_CASE(s, listing_ok);
    UNIT_CASE(s, listing_refusals);
    UNIT_CASE(s, huge_numbers_keep_the_code_of_the_body);
    UNIT_CASE(s, refusal_messages_are_printable_ascii);
    UNIT_CASE(s, booking_dates);
    UNIT_CASE(s, calendar_actions);
    UNIT_CASE(s, calendar_blocks_and_the_longest_range);
    UNIT_CASE(s, search_requests);
    UNIT_CASE(s, ids_and_headers);
    UNIT_CASE(s, ranges);
    return unit_run(s);
}
