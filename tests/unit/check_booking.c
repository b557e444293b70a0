/* Unit tests of calendard/booking.c: stay rules, plans, expansion, ids, backoff. */
#include <stdlib.h>
#include <string.h>

#include "calendard/booking.h"
#include "common/date.h"
#include "tests/lib/unit.h"

static struct listing
make_listing(void)
{
    struct listing l = {.listing_id = 42,
                        .default_price = 10000,
                        .min_nights = 2,
                        .max_nights = 5,
                        .rules_version = 3,
                        .version = 9};
    memcpy(l.currency, "USD", 4);
    return l;
}

START_TEST(stay_rules)
{
    struct listing l = make_listing();
    int32_t today = date_from_ymd(2030, 1, 10);
    ck_assert_int_eq(booking_check_stay(&l, today, today + 2, today), STAY_OK);
    ck_assert_int_eq(booking_check_stay(&l, today - 1, today + 2, today), STAY_PAST);
    ck_assert_int_eq(booking_check_stay(&l, today + 3, today + 3, today), STAY_RANGE);
    ck_assert_int_eq(booking_check_stay(&l, today + 3, today + 2, today), STAY_RANGE);
    ck_assert_int_eq(booking_check_stay(&l, today, today + 1, today), STAY_TOO_SHORT);
    ck_assert_int_eq(booking_check_stay(&l, today, today + 5, today), STAY_OK);
    ck_assert_int_eq(booking_check_stay(&l, today, today + 6, today), STAY_TOO_LONG);
}
END_TEST

START_TEST(plan_sorts_nights_into_missing_existing_unavailable)
{
    struct listing l = make_listing();
    int32_t d = date_from_ymd(2030, 3, 1);
    struct night_row rows[] = {
        {.night = d + 1, .status = NIGHT_AVAILABLE, .has_price = true, .price = 500, .version = 4},
        {.night = d + 3, .status = NIGHT_BOOKED, .reservation_id = 77, .version = 2},
        {.night = d + 4, .status = NIGHT_BLOCKED, .version = 1},
        {.night = d + 9, .status = NIGHT_BLOCKED, .version = 1}, /* outside the stay */
    };
    struct booking_plan *plan = malloc(sizeof(*plan));
    booking_plan_make(&l, rows, 4, d, d + 5, plan);
    ck_assert_uint_eq(plan->nmissing, 2);
    ck_assert_int_eq(plan->missing[0], d);
    ck_assert_int_eq(plan->missing[1], d + 2);
    ck_assert_uint_eq(plan->nexisting, 1);
    ck_assert_int_eq(plan->existing_night[0], d + 1);
    ck_assert_uint_eq(plan->existing_version[0], 4);
    ck_assert_uint_eq(plan->nunavailable, 2);
    ck_assert_int_eq(plan->unavailable[0], d + 3);
    ck_assert_int_eq(plan->unavailable[1], d + 4);
    /* 4 nights at the default price and one override. */
    ck_assert_int_eq(plan->total_price, 4 * 10000 + 500);
    free(plan);
}
END_TEST

START_TEST(expand_fills_defaults)
{
    struct listing l = make_listing();
    int32_t d = date_from_ymd(2030, 3, 1);
    struct night_row rows[] = {
        {.night = d + 1, .status = NIGHT_BLOCKED, .has_price = true, .price = 7, .version = 1},
        {.night = d + 5, .status = NIGHT_BOOKED, .has_price = true, .price = 9, .version = 1},
    };
    struct night_state out[3];
    booking_expand(&l, rows, 2, d, d + 3, out); /* the row past the range is left out */
    ck_assert_int_eq(out[0].night, d);
    ck_assert_int_eq(out[0].status, NIGHT_AVAILABLE);
    ck_assert_int_eq(out[0].price, 10000);
    ck_assert_int_eq(out[1].night, d + 1);
    ck_assert_int_eq(out[1].status, NIGHT_BLOCKED);
    ck_assert_int_eq(out[1].price, 7);
    ck_assert_int_eq(out[2].night, d + 2);
    ck_assert_int_eq(out[2].status, NIGHT_AVAILABLE);
    ck_assert_int_eq(out[2].price, 10000);
}
END_TEST

/* Prices no request can set, written by SQL from outside: such a night is
 * never sold, and a stay's total never overflows. */
START_TEST(a_price_out_of_range_is_never_sold)
{
    struct listing l = make_listing();
    l.default_price = 900000000000000000LL; /* 9e17: 20 nights of it overflow */
    int32_t d = date_from_ymd(2030, 3, 1);
    struct night_row rows[] = {
        {.night = d + 1, .status = NIGHT_AVAILABLE, .has_price = true, .price = 500, .version = 4},
        {.night = d + 2, .status = NIGHT_AVAILABLE, .has_price = true, .price = -5, .version = 4},
    };
    struct booking_plan *plan = malloc(sizeof(*plan));
    booking_plan_make(&l, rows, 2, d, d + 20, plan);
    ck_assert_uint_eq(plan->nunavailable, 19); /* every night but the one priced 500 */
    ck_assert_uint_eq(plan->nexisting, 1);
    ck_assert_int_eq(plan->total_price, 500);
    free(plan);
    struct night_state out[3];
    booking_expand(&l, rows, 2, d, d + 3, out);
    ck_assert_int_eq(out[0].status, NIGHT_BLOCKED);
    ck_assert_int_eq(out[0].price, 0);
    ck_assert_int_eq(out[1].status, NIGHT_AVAILABLE);
    ck_assert_int_eq(out[1].price, 500);
    ck_assert_int_eq(out[2].status, NIGHT_BLOCKED);
    ck_assert_int_eq(out[2].price, 0);
}
END_TEST

START_TEST(status_names_round_trip)
{
    enum night_status ns;
    enum reservation_status rs;
    for (int i = 0; i < 3; i++) {
        ck_assert(booking_night_status_parse(booking_night_status_name(i), &ns));
        ck_assert_int_eq(ns, i);
    }
    /* The names the schema's ENUMs hold. */
    ck_assert_str_eq(booking_night_status_name(NIGHT_AVAILABLE), "available");
    ck_assert_str_eq(booking_night_status_name(NIGHT_BLOCKED), "blocked");
    ck_assert_str_eq(booking_night_status_name(NIGHT_BOOKED), "booked");
    ck_assert_str_eq(booking_reservation_status_name(RESERVATION_CONFIRMED), "confirmed");
    ck_assert_str_eq(booking_reservation_status_name(RESERVATION_CANCELLED), "cancelled");
    ck_assert_str_eq(booking_reservation_status_name(RESERVATION_REFUSED), "refused");
    ck_assert(booking_reservation_status_parse("refused", &rs));
    ck_assert_int_eq(rs, RESERVATION_REFUSED);
    ck_assert(!booking_night_status_parse("Booked", &ns));
    ck_assert(booking_reservation_status_parse("cancelled", &rs));
    ck_assert_int_eq(rs, RESERVATION_CANCELLED);
    ck_assert(!booking_reservation_status_parse("", &rs));
}
END_TEST

START_TEST(request_hash_depends_on_every_field)
{
    char a[17], b[17], c[17], d[17], again[17];
    booking_request_hash(100, 103, 7, a);
    booking_request_hash(100, 103, 7, again);
    booking_request_hash(101, 103, 7, b);
    booking_request_hash(100, 104, 7, c);
    booking_request_hash(100, 103, 8, d);
    ck_assert_str_eq(a, again);
    ck_assert_int_eq(strlen(a), 16);
    /* Stored with every reservation and compared on each replay: it must
     * not change between versions. FNV-1a 64 of the three values as 8-byte
     * little-endian words, computed apart from the code. */
    ck_assert_str_eq(a, "0cf12113b8a5b3e1");
    ck_assert_str_ne(a, b);
    ck_assert_str_ne(a, c);
    ck_assert_str_ne(a, d);
}
END_TEST

START_TEST(keys)
{
    ck_assert(booking_key_valid("abc-123_X", 9));
    ck_assert(!booking_key_valid("", 0));
    ck_assert(booking_key_valid("a b", 3));
    ck_assert(!booking_key_valid(" ab", 3));
    ck_assert(!booking_key_valid("a\tb", 3));
    ck_assert(!booking_key_valid("a\x80", 2));
    char big[257];
    memset(big, 'k', sizeof(big));
    ck_assert(booking_key_valid(big, 255));
    ck_assert(!booking_key_valid(big, 256));
}
END_TEST

START_TEST(backoff_is_bounded_full_jitter)
{
    ck_assert_uint_eq(booking_backoff_ms(0, 2, 100, 0), 0);
    for (uint64_t r = 0; r < 1000; r += 7) {
        ck_assert_uint_le(booking_backoff_ms(0, 2, 100, r), 2);
        ck_assert_uint_le(booking_backoff_ms(3, 2, 100, r), 16);
        ck_assert_uint_le(booking_backoff_ms(30, 2, 100, r), 100);
    }
    /* The ceiling is reached: some draw lands on it exactly. */
    ck_assert_uint_eq(booking_backoff_ms(30, 2, 100, 100), 100);
    /* It doubles per attempt: 2 * 2^3 = 16 at the fourth, a draw of 16
     * lands on it and 17 wraps to 0. */
    ck_assert_uint_eq(booking_backoff_ms(3, 2, 100, 16), 16);
    ck_assert_uint_eq(booking_backoff_ms(3, 2, 100, 17), 0);
    ck_assert_uint_eq(booking_backoff_ms(2, 2, 100, 8), 8);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("booking");
    UNIT_CASE(s, stay_rules);
    UNIT_CASE(s, plan_sorts_nights_into_missing_existing_unavailable);
    UNIT_CASE(s, expand_fills_defaults);
    UNIT_CASE(s, a_price_out_of_range_is_never_sold);
    UNIT_CASE(s, status_names_round_trip);
    UNIT_CASE(s, request_hash_depends_on_every_field);
    UNIT_CASE(s, keys);
    UNIT_CASE(s, backoff_is_bounded_full_jitter);
    return unit_run(s);
}
