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
    ck_assert(breaker_allow(&b, 10));
    breaker_record(&b, false, 10);
    ck_assert_int_eq(breaker_state(&b), BREAKER_OPEN);
    ck_assert(!breaker_allow(&b, 20));
    breaker_deinit(&b);
}
END_TEST

START_TEST(half_open_lets_one_probe_through)
{
    struct breaker b;
    breaker_init(&b, 1, 100);
    breaker_record(&b, false, 1000);
    ck_assert(!breaker_allow(&b, 1000 + 99999));
    ck_assert(breaker_allow(&b, 1000 + 100000)); /* the probe */
    ck_assert_int_eq(breaker_state(&b), BREAKER_HALF_OPEN);
    ck_assert(!breaker_allow(&b, 1000 + 100001)); /* others still fail fast */
    breaker_record(&b, true, 1000 + 100002);
    ck_assert_int_eq(breaker_state(&b), BREAKER_CLOSED);
    ck_assert(breaker_allow(&b, 1000 + 100003));
    breaker_deinit(&b);
}
END_TEST

START_TEST(failed_probe_opens_again)
{
    struct breaker b;
    breaker_init(&b, 5, 100);
    for (int i = 0; i < 5; i++)
        breaker_record(&b, false, 0);
    ck_assert(breaker_allow(&b, 200000));
    breaker_record(&b, false, 200000);
    ck_assert_int_eq(breaker_state(&b), BREAKER_OPEN);
    ck_assert(!breaker_allow(&b, 250000));
    ck_assert(breaker_allow(&b, 300000));
    breaker_deinit(&b);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("breaker");
    UNIT_CASE(s, opens_after_threshold_consecutive_failures);
    UNIT_CASE(s, half_open_lets_one_probe_through);
    UNIT_CASE(s, failed_probe_opens_again);
    return unit_run(s);
}
