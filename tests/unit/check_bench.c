/* Unit tests of the benchmark's own arithmetic (tests/bench/bench.c): the
 * machine's slow spells from the speed probe, the p99 of the samples that
 * overlapped none of them, and the Poisson gaps of the open-loop load. */
#include <math.h>
#include <stdlib.h>

#include "common/util.h"
#include "tests/bench/bench.h"
#include "tests/lib/unit.h"

#define PROBES 100
#define GAP 0.002 /* s between probes, as the probe thread */

/* 100 probes 2 ms apart at 10 us, but for a spell of five at 50 us (5x
 * slower), one at 25 us (2.5x) and one at 15 us (1.5x: not slow). */
static void
probes(struct bench_speed *sp)
{
    *sp = (struct bench_speed){.n = PROBES, .cap = PROBES};
    sp->ns = cal_malloc(PROBES * sizeof(*sp->ns));
    sp->at = cal_malloc(PROBES * sizeof(*sp->at));
    for (size_t i = 0; i < PROBES; i++) {
        sp->at[i] = 100.0 + (double)i * GAP;
        sp->ns[i] = i >= 40 && i < 45 ? 50000 : i == 80 ? 25000 : i == 60 ? 15000 : 10000;
    }
    bench_speed_summarize(sp);
}

START_TEST(slow_probes_make_spells_between_their_neighbours)
{
    struct bench_speed sp;
    probes(&sp);
    ck_assert_double_eq_tol(sp.below_half, 0.06, 1e-9);
    ck_assert_double_eq_tol(sp.below_third, 0.05, 1e-9);
    /* Probes 40-44 merge into one spell from probe 39 to probe 45. */
    ck_assert_uint_eq(sp.nspells, 2);
    ck_assert_double_eq_tol(sp.spell_from[0], sp.at[39], 1e-12);
    ck_assert_double_eq_tol(sp.spell_to[0], sp.at[45], 1e-12);
    ck_assert_double_eq_tol(sp.spell_from[1], sp.at[79], 1e-12);
    ck_assert_double_eq_tol(sp.spell_to[1], sp.at[81], 1e-12);
    ck_assert(bench_speed_slow_between(&sp, sp.at[41], sp.at[42]));  /* inside */
    ck_assert(bench_speed_slow_between(&sp, sp.at[30], sp.at[39]));  /* ends at its start */
    ck_assert(bench_speed_slow_between(&sp, sp.at[20], sp.at[90]));  /* spans both */
    ck_assert(!bench_speed_slow_between(&sp, sp.at[46], sp.at[78])); /* between them */
    ck_assert(!bench_speed_slow_between(&sp, sp.at[0], sp.at[38]));  /* before */
    ck_assert(!bench_speed_slow_between(&sp, sp.at[82], sp.at[99])); /* after */
    ck_assert(!bench_speed_slow_between(&sp, sp.at[59], sp.at[61])); /* 1.5x is not slow */
    bench_speed_deinit(&sp);
}
END_TEST

START_TEST(a_machine_at_one_speed_has_no_spell)
{
    struct bench_speed sp = {.n = PROBES, .cap = PROBES};
    sp.ns = cal_malloc(PROBES * sizeof(*sp.ns));
    sp.at = cal_malloc(PROBES * sizeof(*sp.at));
    for (size_t i = 0; i < PROBES; i++) {
        sp.at[i] = (double)i * GAP;
        sp.ns[i] = 10000 + (uint32_t)(i % 7) * 100; /* jitter well under 2x */
    }
    bench_speed_summarize(&sp);
    ck_assert_uint_eq(sp.nspells, 0);
    ck_assert_double_eq(sp.below_half, 0);
    ck_assert(!bench_speed_slow_between(&sp, 0, 1));
    bench_speed_deinit(&sp);
}
END_TEST

START_TEST(steady_p99_leaves_out_the_samples_that_met_a_spell)
{
    struct bench_speed sp;
    probes(&sp);
    struct bench_lat lat;
    bench_lat_init(&lat, 200);
    /* 90 samples of 1..90 ms that ended between the spells, 10 us apart... */
    for (unsigned i = 0; i < 90; i++) {
        lat.us[lat.n] = 1000 * (i + 1);
        lat.end[lat.n++] = sp.at[50] + (double)i * 1e-5;
    }
    /* ...and 10 of 500 ms that ended inside the first spell. */
    for (unsigned i = 0; i < 10; i++) {
        lat.us[lat.n] = 500000;
        lat.end[lat.n++] = sp.at[42];
    }
    double kept;
    /* The spell ends at at[45], 10 ms before at[50]: of the 1..90 ms
     * samples only those of 1..10 ms began after it. */
    double p = bench_lat_steady_quantile_ms(&lat, &sp, 1.0, &kept);
    ck_assert_double_eq_tol(p, 10, 1e-9);
    ck_assert_double_eq_tol(kept, 0.10, 1e-9);
    /* All of them, the slow ones included, in the plain p99. */
    ck_assert_double_eq_tol(bench_lat_quantile_ms(&lat, 0.99), 500, 1e-9);
    /* Sorting drops the end times: the steady figure is then unknown. */
    ck_assert(isnan(bench_lat_steady_quantile_ms(&lat, &sp, 0.99, &kept)));
    ck_assert_double_eq(kept, 0);
    bench_lat_deinit(&lat);
    bench_speed_deinit(&sp);
}
END_TEST

/* Exponential gaps: mean m, and a share e^-1 of them longer than m (a
 * uniform draw of the same mean would give 1/2). */
START_TEST(poisson_gaps_are_exponential)
{
    struct bench_rng rng;
    bench_rng_init(&rng, 42);
    double sum = 0;
    unsigned longer = 0, n = 200000;
    for (unsigned i = 0; i < n; i++) {
        double g = bench_rng_exp(&rng, 0.025);
        sum += g;
        longer += g > 0.025;
    }
    ck_assert_double_eq_tol(sum / n, 0.025, 0.025 * 0.01);
    ck_assert_double_eq_tol((double)longer / n, exp(-1), 0.005);
}
END_TEST

/* Each sample keeps the moment it ended, through a merge too; the spells
 * of the steady figure are matched against those moments. */
START_TEST(samples_keep_their_end_times_through_a_merge)
{
    struct bench_lat a, b;
    bench_lat_init(&a, 8);
    bench_lat_init(&b, 8);
    double t0 = bench_now();
    bench_lat_add(&a, 100);
    bench_lat_add(&b, 200);
    bench_lat_add(&b, 300);
    double t1 = bench_now();
    bench_lat_merge(&a, &b);
    ck_assert_uint_eq(a.n, 3);
    ck_assert_ptr_nonnull(a.end);
    ck_assert_uint_eq(a.us[1], 200);
    ck_assert_uint_eq(a.us[2], 300);
    for (size_t i = 0; i < a.n; i++) {
        ck_assert_double_ge(a.end[i], t0);
        ck_assert_double_le(a.end[i], t1);
    }
    ck_assert_double_le(b.end[0], b.end[1]);
    ck_assert_double_eq(a.end[1], b.end[0]);
    ck_assert_double_eq(a.end[2], b.end[1]);
    /* A probe that took no sample cannot tell spells: no steady figure. */
    struct bench_speed none = {0};
    double kept;
    ck_assert(isnan(bench_lat_steady_quantile_ms(&a, &none, 0.99, &kept)));
    bench_lat_deinit(&a);
    bench_lat_deinit(&b);
}
END_TEST

/* A merge into a full buffer keeps what fits and counts the rest as
 * dropped; a source without end times leaves none in the merge. */
START_TEST(a_merge_past_the_capacity_counts_what_it_drops)
{
    struct bench_lat a, b;
    bench_lat_init(&a, 2);
    bench_lat_init(&b, 8);
    bench_lat_add(&a, 100);
    for (int i = 1; i <= 3; i++)
        bench_lat_add(&b, 100 + (uint64_t)i);
    bench_lat_merge(&a, &b);
    ck_assert_uint_eq(a.n, 2);
    ck_assert_uint_eq(a.us[1], 101);
    ck_assert_uint_eq(a.dropped, 2);
    ck_assert_ptr_nonnull(a.end);
    (void)bench_lat_quantile_ms(&b, 0.5); /* sorting drops b's end times */
    ck_assert_ptr_null(b.end);
    struct bench_lat c;
    bench_lat_init(&c, 8);
    bench_lat_merge(&c, &b);
    ck_assert_uint_eq(c.n, 3);
    ck_assert_ptr_null(c.end);
    bench_lat_deinit(&a);
    bench_lat_deinit(&b);
    bench_lat_deinit(&c);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("bench");
    UNIT_CASE(s, slow_probes_make_spells_between_their_neighbours);
    UNIT_CASE(s, a_machine_at_one_speed_has_no_spell);
    UNIT_CASE(s, steady_p99_leaves_out_the_samples_that_met_a_spell);
    UNIT_CASE(s, poisson_gaps_are_exponential);
    UNIT_CASE(s, samples_keep_their_end_times_through_a_merge);
    UNIT_CASE(s, a_merge_past_the_capacity_counts_what_it_drops);
    return unit_run(s);
}
