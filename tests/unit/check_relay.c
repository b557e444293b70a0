/* Unit tests of the relay's count of stream interruptions: a position that
 * fails again and again is "stuck"; a healthy stream that ended (an idle
 * shard's, hours long) or one that got further is not. */
#include <stdint.h>

#include "cdc/relay.h"
#include "tests/lib/unit.h"

static struct gtid_pos
pos(const char *text)
{
    struct gtid_pos p;
    char err[128];
    ck_assert_msg(gtid_pos_parse(&p, text, err, sizeof(err)) == CAL_OK, "%s", err);
    return p;
}

/* Short streams that end at one acknowledged position count up to stuck. */
START_TEST(short_streams_at_one_position_count_up)
{
    struct gtid_pos at = {0}, p = pos("0-1-100");
    unsigned stuck = 0;
    ck_assert_uint_eq(relay_count_interruption(&p, 1000, &at, &stuck), 1);
    ck_assert_uint_eq(relay_count_interruption(&p, 2000, &at, &stuck), 2);
    ck_assert_uint_eq(relay_count_interruption(&p, 0, &at, &stuck), RELAY_STUCK_ATTEMPTS);
    ck_assert(gtid_pos_equal(&at, &p));
}
END_TEST

/* A stream that got further starts the count again, at its position. */
START_TEST(a_stream_that_got_further_starts_again)
{
    struct gtid_pos at = {0}, p = pos("0-1-100"), q = pos("0-1-101");
    unsigned stuck = 0;
    relay_count_interruption(&p, 1000, &at, &stuck);
    relay_count_interruption(&p, 1000, &at, &stuck);
    ck_assert_uint_eq(relay_count_interruption(&q, 1000, &at, &stuck), 1);
    ck_assert(gtid_pos_equal(&at, &q));
}
END_TEST

/* An idle shard: every stream runs for hours and ends (a server restart, a
 * network blip) with no change relayed. None is a sign of a stuck
 * position, however many in a row. */
START_TEST(healthy_streams_at_one_position_are_not_stuck)
{
    struct gtid_pos at = {0}, p = pos("0-1-100");
    unsigned stuck = 0;
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(relay_count_interruption(&p, RELAY_STREAM_HEALTHY_US, &at, &stuck), 1);
    /* and short ones after a healthy one count from there */
    ck_assert_uint_eq(relay_count_interruption(&p, 10, &at, &stuck), 2);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("relay");
    UNIT_CASE(s, short_streams_at_one_position_count_up);
    UNIT_CASE(s, a_stream_that_got_further_starts_again);
    UNIT_CASE(s, healthy_streams_at_one_position_are_not_stuck);
    return unit_run(s);
}
