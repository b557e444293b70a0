/* The move planner: a draining shard always ends empty, and the active
 * shards end within one vbucket of each other. */
#include <check.h>
#include <stdlib.h>

#include "sharding/plan.h"
#include "tests/lib/unit.h"

/* Applies the plan to owner[] and returns each shard's weight (1 + listings
 * per vbucket) after it. */
static void
apply(const struct plan_move *moves, size_t n, uint32_t *owner, const uint64_t *listings,
      uint32_t nvb, int64_t *load, size_t nshards)
{
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(owner[moves[i].vbucket], moves[i].source);
        owner[moves[i].vbucket] = moves[i].target;
    }
    for (size_t s = 0; s < nshards; s++)
        load[s] = 0;
    for (uint32_t v = 0; v < nvb; v++)
        load[owner[v]] += 1 + (int64_t)listings[v];
}

/* Shard 0 drains with a big and an empty vbucket, shard 1 is new, shard 2
 * holds 5 listings: after the big one lands on shard 1, shard 1 has the most
 * excess but nothing that fits; the planner must still empty shard 0. */
START_TEST(a_draining_shard_ends_empty)
{
    struct plan_shard shards[] = {{0, true}, {1, false}, {2, false}};
    uint32_t owner[] = {0, 0, 2};
    uint64_t listings[] = {9, 0, 5};
    struct plan_move *moves;
    size_t n;
    int64_t load[3];
    plan_compute(shards, 3, owner, NULL, listings, 3, &moves, &n);
    apply(moves, n, owner, listings, 3, load, 3);
    /* Weights 10, 1 and 6: the big vbucket to the new shard 1, the empty
     * one to shard 2, the closest the two can get (10 against 7). */
    ck_assert_int_eq(load[0], 0);
    ck_assert_uint_eq(owner[0], 1);
    ck_assert_uint_eq(owner[1], 2);
    ck_assert_int_eq(load[1], 10);
    ck_assert_int_eq(load[2], 7);
    free(moves);
}
END_TEST

/* A vbucket whose move is unfinished is pinned: never planned again (its
 * move would refuse a second one), its load counted where that move ends.
 * Here shard 1 drains; its pinned vbucket stays, the other leaves. Shard 2
 * holds a pinned heavy vbucket: the planner counts it and sends the
 * draining shard's free one to shard 0. */
START_TEST(a_pinned_vbucket_is_never_planned)
{
    struct plan_shard shards[] = {{0, false}, {1, true}, {2, false}};
    uint32_t owner[] = {1, 1, 2};
    bool pinned[] = {true, false, true};
    uint64_t listings[] = {4, 3, 50};
    struct plan_move *moves;
    size_t n;
    plan_compute(shards, 3, owner, pinned, listings, 3, &moves, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(moves[0].vbucket, 1);
    ck_assert_uint_eq(moves[0].source, 1);
    ck_assert_uint_eq(moves[0].target, 0);
    free(moves);
}
END_TEST

/* Many vbuckets of mixed sizes: every draining shard ends empty, and the
 * active ones end within the largest vbucket's weight of each other. */
START_TEST(spreads_and_drains)
{
    enum { NVB = 512, NS = 4 };
    struct plan_shard shards[NS] = {{0, false}, {1, true}, {2, false}, {3, false}};
    uint32_t owner[NVB];
    uint64_t listings[NVB];
    int64_t load[NS], biggest = 0;
    srand(7);
    for (uint32_t v = 0; v < NVB; v++) {
        owner[v] = v % 3 == 2 ? 1 : v % 2; /* shard 3 starts empty */
        listings[v] = (uint64_t)(rand() % 50) * (v % 7 == 0 ? 10 : 1);
        if (1 + (int64_t)listings[v] > biggest)
            biggest = 1 + (int64_t)listings[v];
    }
    struct plan_move *moves;
    size_t n;
    plan_compute(shards, NS, owner, NULL, listings, NVB, &moves, &n);
    apply(moves, n, owner, listings, NVB, load, NS);
    ck_assert_int_eq(load[1], 0);
    int64_t lo = load[0], hi = load[0];
    for (size_t s = 2; s < NS; s++) {
        lo = load[s] < lo ? load[s] : lo;
        hi = load[s] > hi ? load[s] : hi;
    }
    ck_assert_msg(hi - lo <= biggest, "active loads %lld..%lld, largest vbucket %lld",
                  (long long)lo, (long long)hi, (long long)biggest);
    free(moves);
}
END_TEST

/* A plan moves each vbucket at most once: rebalance --parallel runs a
 * plan's moves side by side, and a second move of one vbucket would race the
 * first (refused on its move lock) or copy it twice. Random layouts with a
 * fixed seed; the greedy once re-picked a vbucket it had just placed in
 * about 1 plan in 15 of these. */
START_TEST(a_plan_moves_each_vbucket_once)
{
    enum { MAXVB = 64 };
    srand(11);
    for (int trial = 0; trial < 2000; trial++) {
        uint32_t nvb = 16 + (uint32_t)(rand() % 48);
        size_t ns = 2 + (size_t)(rand() % 4);
        struct plan_shard shards[6];
        for (size_t s = 0; s < ns; s++)
            shards[s] = (struct plan_shard){(uint32_t)s, rand() % 5 == 0};
        uint32_t owner[MAXVB];
        uint64_t listings[MAXVB];
        for (uint32_t v = 0; v < nvb; v++) {
            owner[v] = (uint32_t)(rand() % (1 + rand() % (int)ns));
            listings[v] = (uint64_t)(rand() % 4 == 0 ? rand() % 1000 : rand() % 20);
        }
        struct plan_move *moves;
        size_t n;
        plan_compute(shards, ns, owner, NULL, listings, nvb, &moves, &n);
        unsigned seen[MAXVB] = {0};
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(seen[moves[i].vbucket]++ == 0, "trial %d: vbucket %u moved twice", trial,
                          moves[i].vbucket);
        int64_t load[6];
        apply(moves, n, owner, listings, nvb, load, ns);
        for (size_t s = 0; s < ns; s++)
            if (shards[s].draining && ns > 1) {
                bool any_active = false;
                for (size_t t = 0; t < ns; t++)
                    any_active = any_active || !shards[t].draining;
                if (any_active)
                    ck_assert_int_eq(load[s], 0);
            }
        free(moves);
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("plan");
    UNIT_CASE(s, a_draining_shard_ends_empty);
    UNIT_CASE(s, a_pinned_vbucket_is_never_planned);
    UNIT_CASE(s, spreads_and_drains);
    UNIT_CASE(s, a_plan_moves_each_vbucket_once);
    return unit_run(s);
}
