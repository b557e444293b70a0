/* Unit tests of calendard/http.c: when an event loop's cache lookup sends
 * its reads to the workers; which escapes of a path it decodes. */
#include <stdio.h>
#include <string.h>

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

/* %XX decoded in place, but %00 and %2F (either case) kept: a NUL would
 * cut the path short, a slash add a segment. */
START_TEST(unescape_keeps_nul_and_slash_escaped)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"/v1/listings/42", "/v1/listings/42"},
        {"/v1/listings/%34%32", "/v1/listings/42"},
        {"/v1/listings/42%2Fcalendar", "/v1/listings/42%2Fcalendar"},
        {"/v1/listings/42%2fcalendar", "/v1/listings/42%2fcalendar"},
        {"/v1/listings/42%00/refunds", "/v1/listings/42%00/refunds"},
        {"a%20b%", "a b%"},
        {"%2", "%2"},
        {"%zz%4", "%zz%4"},
        {"2027-01-0%31", "2027-01-01"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%s", cases[i].in);
        size_t n = http_unescape(buf);
        ck_assert_str_eq(buf, cases[i].out);
        ck_assert_uint_eq(n, strlen(cases[i].out));
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("http");
    UNIT_CASE(s, only_a_slow_lookup_that_missed_diverts);
    UNIT_CASE(s, unescape_keeps_nul_and_slash_escaped);
    return unit_run(s);
}
