/* Unit tests of cdc/redelete: keys come due in order and not before their
 * time, a take that must make room takes the oldest early (and says how
 * many), and the queue never holds more than its size. */
#include <stdio.h>
#include <string.h>

#include "cdc/redelete.h"
#include "tests/lib/unit.h"

/* Pushes "k<first>".."k<first+n-1>" due at due_us; returns how many fit. */
static size_t
push_keys(struct redelete *rq, int first, size_t n, uint64_t due_us)
{
    char bufs[16][16];
    const char *keys[16];
    size_t lens[16];
    ck_assert_uint_le(n, 16);
    for (size_t i = 0; i < n; i++) {
        lens[i] = (size_t)snprintf(bufs[i], sizeof(bufs[i]), "k%d", first + (int)i);
        keys[i] = bufs[i];
    }
    return redelete_push(rq, keys, lens, n, due_us);
}

/* Takes from rq at now_us with reserve and max; the take must give n keys,
 * "k<first>", "k<first+1>", ..., of which early were not due. */
static void
take_expect(struct redelete *rq, uint64_t now_us, size_t reserve, size_t max, size_t n, int first,
            size_t early)
{
    const char *keys[16];
    size_t lens[16], got_early = 99;
    ck_assert_uint_le(max, 16);
    size_t got = redelete_take(rq, now_us, reserve, keys, lens, max, &got_early);
    ck_assert_uint_eq(got, n);
    ck_assert_uint_eq(got_early, early);
    for (size_t i = 0; i < n; i++) {
        char want[16];
        size_t len = (size_t)snprintf(want, sizeof(want), "k%d", first + (int)i);
        ck_assert_uint_eq(lens[i], len);
        ck_assert_msg(memcmp(keys[i], want, len) == 0 && keys[i][len] == '\0',
                      "key %zu is %.*s, not %s", i, (int)lens[i], keys[i], want);
    }
}

START_TEST(keys_come_due_in_order_not_before)
{
    struct redelete *rq = redelete_create(8);
    ck_assert_uint_eq(redelete_next_due(rq), UINT64_MAX);
    take_expect(rq, 1000, 0, 8, 0, 0, 0);
    ck_assert_uint_eq(push_keys(rq, 0, 3, 100), 3);
    ck_assert_uint_eq(push_keys(rq, 3, 2, 200), 2);
    ck_assert_uint_eq(redelete_len(rq), 5);
    ck_assert_uint_eq(redelete_next_due(rq), 100);
    take_expect(rq, 99, 0, 8, 0, 0, 0); /* none due */
    take_expect(rq, 150, 0, 8, 3, 0, 0);
    ck_assert_uint_eq(redelete_next_due(rq), 200);
    take_expect(rq, 200, 0, 8, 2, 3, 0);
    ck_assert_uint_eq(redelete_len(rq), 0);
    ck_assert_uint_eq(redelete_next_due(rq), UINT64_MAX);
    redelete_destroy(rq);
    redelete_destroy(NULL);
}
END_TEST

/* A take bounded by max leaves the rest, still due, for the next one. */
START_TEST(a_take_is_bounded_by_max)
{
    struct redelete *rq = redelete_create(8);
    ck_assert_uint_eq(push_keys(rq, 0, 5, 100), 5);
    take_expect(rq, 100, 0, 2, 2, 0, 0);
    take_expect(rq, 100, 0, 8, 3, 2, 0);
    redelete_destroy(rq);
}
END_TEST

/* Full: a push queues what fits; a take with a reserve takes the oldest
 * early until the reserve fits, and counts them early. */
START_TEST(room_is_made_by_taking_the_oldest_early)
{
    struct redelete *rq = redelete_create(6);
    ck_assert_uint_eq(push_keys(rq, 0, 2, 100), 2);
    ck_assert_uint_eq(push_keys(rq, 2, 3, 200), 3);
    ck_assert_uint_eq(redelete_room(rq), 1);
    ck_assert_uint_eq(push_keys(rq, 5, 3, 300), 1); /* k5 fits, k6 and k7 do not */
    ck_assert_uint_eq(redelete_room(rq), 0);
    /* At 150: k0 and k1 are due; room for 4 takes k2 and k3 early too. */
    take_expect(rq, 150, 4, 8, 4, 0, 2);
    ck_assert_uint_eq(redelete_room(rq), 4);
    ck_assert_uint_eq(push_keys(rq, 6, 4, 400), 4);
    /* Room enough already: only what is due goes. */
    take_expect(rq, 250, 0, 8, 1, 4, 0);
    redelete_destroy(rq);
}
END_TEST

/* Many more keys than slots through the ring: each comes out once, whole,
 * in order. */
START_TEST(the_ring_wraps)
{
    struct redelete *rq = redelete_create(5);
    for (int round = 0; round < 40; round++) {
        size_t n = 1 + (size_t)(round % 3);
        ck_assert_uint_eq(push_keys(rq, round * 3, n, (uint64_t)round), n);
        take_expect(rq, (uint64_t)round, 0, 8, n, round * 3, 0);
    }
    ck_assert_uint_eq(redelete_len(rq), 0);
    redelete_destroy(rq);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("redelete");
    UNIT_CASE(s, keys_come_due_in_order_not_before);
    UNIT_CASE(s, a_take_is_bounded_by_max);
    UNIT_CASE(s, room_is_made_by_taking_the_oldest_early);
    UNIT_CASE(s, the_ring_wraps);
    return unit_run(s);
}
