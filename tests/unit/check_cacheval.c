/* The availability cache's value codec: what it writes it reads back, and
 * it refuses what it would never write (memcached is not trusted to hold
 * only this daemon's values). */
#include <check.h>
#include <string.h>

#include "calendard/cacheval.h"
#include "common/date.h"
#include "tests/lib/unit.h"

static bool
listing_ok(const char *v)
{
    struct listing l;
    return cacheval_decode_listing(v, strlen(v), &l);
}

static bool
month_ok(const char *v, int32_t first)
{
    struct night_row rows[31];
    size_t n = 0;
    return cacheval_decode_month(v, strlen(v), first, rows, &n, 31, NULL);
}

START_TEST(listing_round_trip)
{
    struct listing l = {.version = 12,
                        .rules_version = 3,
                        .default_price = 25000,
                        .currency = "EUR",
                        .min_nights = 2,
                        .max_nights = 30};
    char buf[CACHEVAL_MAX];
    size_t len = cacheval_encode_listing(&l, buf, sizeof(buf));
    ck_assert_uint_gt(len, 0);
    struct listing back;
    memset(&back, 0, sizeof(back));
    ck_assert(cacheval_decode_listing(buf, len, &back));
    ck_assert_uint_eq(back.version, 12);
    ck_assert_uint_eq(back.rules_version, 3);
    ck_assert_int_eq(back.default_price, 25000);
    ck_assert_str_eq(back.currency, "EUR");
    ck_assert_int_eq(back.min_nights, 2);
    ck_assert_int_eq(back.max_nights, 30);
}
END_TEST

START_TEST(malformed_listings_are_refused)
{
    ck_assert(listing_ok("L1 5 1 100 USD 1 9"));
    ck_assert(!listing_ok("L1 5 1 100 a\"b 1 9")); /* a currency that would break JSON */
    ck_assert(!listing_ok("L1 5 1 100 usd 1 9"));
    ck_assert(!listing_ok("L1 -1 1 100 USD 1 9")); /* read as UINT64_MAX by scanf */
    ck_assert(!listing_ok("L1 5 1 -100 USD 1 9"));
    ck_assert(!listing_ok("L1 5 1 100 USD 9 1")); /* min above max */
    ck_assert(!listing_ok("L1 5 1 100 USD 0 9"));
    ck_assert(!listing_ok("L1 5 1 100 USD 1 99999999999")); /* int overflow */
    ck_assert(!listing_ok("L1 99999999999999999999 1 100 USD 1 9"));
    ck_assert(!listing_ok("L1 5 1 100 USD 1 9 "));
    ck_assert(!listing_ok("L1 5 1 100 USD 1"));
    ck_assert(!listing_ok("L1 5 1 100 USD  1 9"));
    ck_assert(!listing_ok("L1 5 1 100 USDX 1 9"));
}
END_TEST

START_TEST(month_round_trip_and_version)
{
    int32_t feb = date_from_ymd(2027, 2, 1);
    struct night_row rows[2] = {
        {.night = feb + 2, .status = NIGHT_BOOKED},
        {.night = feb + 27, .status = NIGHT_AVAILABLE, .has_price = true, .price = 9900},
    };
    char buf[CACHEVAL_MAX];
    size_t len = cacheval_encode_month(7, feb, rows, 2, buf, sizeof(buf));
    ck_assert_uint_gt(len, 0);
    struct night_row back[31];
    size_t n = 0;
    uint64_t version = 0;
    ck_assert(cacheval_decode_month(buf, len, feb, back, &n, 31, &version));
    ck_assert_uint_eq(version, 7);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(back[0].night, feb + 2);
    ck_assert_int_eq(back[0].status, NIGHT_BOOKED);
    ck_assert_int_eq(back[1].night, feb + 27);
    ck_assert(back[1].has_price);
    ck_assert_int_eq(back[1].price, 9900);
}
END_TEST

START_TEST(malformed_months_are_refused)
{
    int32_t feb = date_from_ymd(2027, 2, 1), mar = date_from_ymd(2027, 3, 1);
    ck_assert(month_ok("M1 5 3k 28a", feb));
    ck_assert(!month_ok("M1 5 30k", feb)); /* no February 30th: it would be March 2nd */
    ck_assert(month_ok("M1 5 30k 31b", mar));
    ck_assert(!month_ok("M1 5 3k 3a", feb)); /* the same night twice */
    ck_assert(!month_ok("M1 5 9k 3a", feb)); /* out of order */
    ck_assert(!month_ok("M1 5 0k", feb));
    ck_assert(!month_ok("M1 99999999999999999999", feb));
    ck_assert(!month_ok("M1 5 3x", feb));
    ck_assert(!month_ok("M1 5 3k ", feb));
    /* Prices up to the API's limit, 10^12, and not one more. */
    ck_assert(month_ok("M1 5 3a1000000000000", feb));
    ck_assert(!month_ok("M1 5 3a1000000000001", feb));
    ck_assert(!month_ok("M1 5 3a9999999999999", feb));
    ck_assert(!month_ok("M1 5 3a99999999999999999999", feb));
}
END_TEST

/* What the decoder would refuse is never written: a listing or night that
 * SQL put outside the API's ranges is read from the shard each time rather
 * than cached and deleted again by every read. */
START_TEST(values_the_decoder_refuses_are_not_encoded)
{
    struct listing l = {.version = 2,
                        .rules_version = 1,
                        .default_price = 100,
                        .currency = "USD",
                        .min_nights = 1,
                        .max_nights = BOOKING_MAX_NIGHTS};
    char buf[CACHEVAL_MAX];
    ck_assert_uint_eq(cacheval_encode_listing(&l, buf, sizeof(buf)), 0);
    l.max_nights = BOOKING_MAX_NIGHTS - 1;
    ck_assert_uint_gt(cacheval_encode_listing(&l, buf, sizeof(buf)), 0);
    l.default_price = -1;
    ck_assert_uint_eq(cacheval_encode_listing(&l, buf, sizeof(buf)), 0);
    l.default_price = 100;
    memcpy(l.currency, "usd", 4);
    ck_assert_uint_eq(cacheval_encode_listing(&l, buf, sizeof(buf)), 0);
    int32_t feb = date_from_ymd(2027, 2, 1);
    struct night_row row = {.night = feb + 2, .status = NIGHT_AVAILABLE, .has_price = true};
    row.price = BOOKING_MAX_PRICE;
    ck_assert_uint_gt(cacheval_encode_month(3, feb, &row, 1, buf, sizeof(buf)), 0);
    row.price = -5;
    ck_assert_uint_eq(cacheval_encode_month(3, feb, &row, 1, buf, sizeof(buf)), 0);
    row.price = BOOKING_MAX_PRICE + 1;
    ck_assert_uint_eq(cacheval_encode_month(3, feb, &row, 1, buf, sizeof(buf)), 0);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("cacheval");
    UNIT_CASE(s, listing_round_trip);
    UNIT_CASE(s, malformed_listings_are_refused);
    UNIT_CASE(s, month_round_trip_and_version);
    UNIT_CASE(s, malformed_months_are_refused);
    UNIT_CASE(s, values_the_decoder_refuses_are_not_encoded);
    return unit_run(s);
}
