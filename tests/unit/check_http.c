/* Unit tests of calendard/http.c: when an event loop's cache lookup sends
 * its reads to the workers. */
#include "calendard/http.h"
#include "tests/lib/unit.h"

/* A hung cache: the lookup ran into the timeout and answered nothing (or,
 * one server of a pool hung, not everything). A lookup that answered every
 * read was slow only because the cores were busy: the loop keeps its reads. */
START_TEST(only_a_slow_lookup_that_missed_diverts)
{
    ck_assert(http_lookup_stalled(50000, 50, 16));
    ck_assert(http_lookup_stalled(41000, 50, 1));
    ck_assert(!http_lookup_stalled(60000, 50, 0));  /* slow, everything answered */
    ck_assert(!http_lookup_stalled(39000, 50, 16)); /* misses, but quick */
    /* The threshold follows [cache] timeout_ms; 0 means the default 50. */
    ck_assert(http_lookup_stalled(17000, 20, 3));
    ck_assert(!http_lookup_stalled(15000, 20, 3));
    ck_assert(http_lookup_stalled(41000, 0, 3));
    ck_assert(!http_lookup_stalled(39000, 0, 3));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("http");
    UNIT_CASE(s, only_a_slow_lookup_that_missed_diverts);
    return unit_run(s);
}
