/* Unit tests of calendard/breaker.c: closed, open, half-open transitions. */
#include "calendard/breaker.h"
#include "tests/lib/unit.h"

START_TEST(opens_after_threshold_consecutive_failures)
{
    struct breaker b;
    breaker_init(&b, 3, 1000);
    breaker_record(&b, false, 0);
    breaker_record(&b, false, 0);
    breaker_record(&b, true, 0); /* a success resets the count */
    breaker_record(&b, false, 0);
    breaker_record(&b, false, 0);
    ck_assert_int_eq(breaker_state(&b), BREAKER_CLOSED);
    ck_assert(breaker_allow(&b, 10, NULL));
    breaker_record(&b, false, 10);
    ck_assert_int_eq(breaker_state(&b), BREAKER_OPEN);
    ck_assert(!breaker_allow(&b, 20, NULL));
    breaker_deinit(&b);
}
END_TEST

START_TEST(half_open_lets_one_probe_through)
{
    struct breaker b;
    breaker_init(&b, 1, 100);
    breaker_record(&b, false, 1000);
    ck_assert(!breaker_allow(&b, 1000 + 99999, NULL));
    ck_assert(breaker_allow(&b, 1000 + 100000, NULL)); /* the probe */
    ck_assert_int_eq(breaker_state(&b), BREAKER_HALF_OPEN);
    ck_assert(!breaker_allow(&b, 1000 + 100001, NULL)); /* others still fail fast */
    breaker_record(&b, true, 1000 + 100002);
    ck_assert_int_eq(breaker_state(&b), BREAKER_CLOSED);
    ck_assert(breaker_allow(&b, 1000 + 100003, NULL));
    breaker_deinit(&b);
}
END_TEST

START_TEST(a_clock_read_before_the_opening_stays_open)
{
    /* A caller reads the clock, then waits for the lock while another
     * records the failure that opens the breaker a little later. */
    struct breaker b;
    breaker_init(&b, 1, 1000);
    breaker_record(&b, false, 5000);
    ck_assert(!breaker_allow(&b, 4999, NULL));
    ck_assert_int_eq(breaker_state(&b), BREAKER_OPEN);
    breaker_deinit(&b);
}
END_TEST

START_TEST(failed_probe_opens_again)
{
    struct breaker b;
    breaker_init(&b, 5, 100);
    for (int i = 0; i < 5; i++)
        breaker_record(&b, false, 0);
    ck_assert(breaker_allow(&b, 200000, NULL));
    breaker_record(&b, false, 200000);
    ck_assert_int_eq(breaker_state(&b), BREAKER_OPEN);
    ck_assert(!breaker_allow(&b, 250000, NULL));
    ck_assert(breaker_allow(&b, 300000, NULL));
    breaker_deinit(&b);
}
END_TEST

/* A call admitted while closed whose failure to get a connection comes
 * back after the breaker went half-open must not free the probe's slot:
 * one probe at a time, whoever cancels. */
START_TEST(only_the_probe_gives_its_slot_back)
{
    struct breaker b;
    bool probe = true;
    breaker_init(&b, 1, 100);
    ck_assert(breaker_allow(&b, 0, &probe)); /* closed: an ordinary call */
    ck_assert(!probe);
    breaker_record(&b, false, 1000); /* another call fails: open */
    ck_assert(breaker_allow(&b, 1000 + 100000, &probe));
    ck_assert(probe);
    breaker_cancel(&b, false); /* the ordinary call gives up late */
    ck_assert(!breaker_allow(&b, 1000 + 100001, &probe));
    breaker_cancel(&b, true); /* the probe never reached the shard */
    ck_assert(breaker_allow(&b, 1000 + 100002, &probe));
    ck_assert(probe);
    breaker_deinit(&b);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("breaker");
    UNIT_CASE(s, opens_after_threshold_consecutive_failures);
    UNIT_CASE(s, half_open_lets_one_probe_through);
    UNIT_CASE(s, a_clock_read_before_the_opening_stays_open);
    UNIT_CASE(s, failed_probe_opens_again);
    UNIT_CASE(s, only_the_probe_gives_its_slot_back);
    return unit_run(s);
}
