/* Unit tests of cdc/invstats: window percentiles, Prometheus rendering of
 * counters, lag and the commit-to-invalidation histogram. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/invstats.h"
#include "tests/lib/unit.h"

/* text has line (a whole exposition line, with its newline). */
static void
assert_has(const char *text, const char *line)
{
    ck_assert_msg(strstr(text, line) != NULL, "missing from the exposition: %s", line);
}

START_TEST(window_percentiles_and_reset)
{
    struct invstats *stats = invstats_create();
    for (uint64_t ms = 1; ms <= 100; ms++)
        invstats_latency(stats, ms, -1);
    invstats_event(stats, INVALIDATE_TABLE_NIGHTS);
    invstats_invalidations(stats, 3);
    invstats_error(stats, INVSTATS_ERR_CACHE);
    struct invstats_window win;
    invstats_take_window(stats, &win);
    ck_assert_uint_eq(win.samples, 100);
    ck_assert_uint_eq(win.p50_ms, 50);
    ck_assert_uint_eq(win.p99_ms, 99);
    ck_assert_uint_eq(win.max_ms, 100);
    ck_assert_uint_eq(win.events, 1);
    ck_assert_uint_eq(win.invalidations, 3);
    ck_assert_uint_eq(win.errors, 1);
    invstats_take_window(stats, &win); /* a new, empty window */
    ck_assert_uint_eq(win.samples, 0);
    ck_assert_uint_eq(win.p99_ms, 0);
    ck_assert_uint_eq(win.events, 0);
    invstats_destroy(stats);
}
END_TEST

/* More samples than the window keeps: percentiles stay within range. */
START_TEST(window_reservoir_bounded)
{
    struct invstats *stats = invstats_create();
    for (int i = 0; i < 50000; i++)
        invstats_latency(stats, (uint64_t)(i % 1000), -1);
    struct invstats_window win;
    invstats_take_window(stats, &win);
    ck_assert_uint_eq(win.samples, 8192); /* the reservoir, full */
    ck_assert_uint_ge(win.p50_ms, 400);
    ck_assert_uint_le(win.p50_ms, 600);
    ck_assert_uint_ge(win.p99_ms, 950);
    invstats_destroy(stats);
}
END_TEST

START_TEST(render_prometheus)
{
    struct invstats *stats = invstats_create();
    invstats_event(stats, INVALIDATE_TABLE_LISTINGS);
    invstats_event(stats, INVALIDATE_TABLE_NIGHTS);
    invstats_event(stats, INVALIDATE_TABLE_NIGHTS);
    invstats_invalidations(stats, 5);
    invstats_error(stats, INVSTATS_ERR_UNDECODABLE);
    invstats_flush(stats);
    invstats_latency(stats, 3, -1);     /* <= 5 ms */
    invstats_latency(stats, 1500, -1);  /* <= 2.5 s */
    invstats_latency(stats, 99999, -1); /* +Inf */
    struct kconsumer_lag lags[2] = {{.topic = "calendar.s0.nights", .partition = 3, .lag = 42},
                                    {.topic = "bad\"topic", .partition = 0, .lag = -1}};
    invstats_set_lag(stats, lags, 2);
    size_t len = 0;
    char *text = invstats_render(stats, &len);
    ck_assert_uint_eq(len, strlen(text));
    assert_has(text, "calendar_invalidator_events_total{table=\"nights\"} 2\n");
    assert_has(text, "calendar_invalidator_events_total{table=\"listings\"} 1\n");
    assert_has(text, "calendar_invalidator_invalidations_total 5\n");
    assert_has(text, "calendar_invalidator_errors_total{kind=\"undecodable\"} 1\n");
    assert_has(text, "calendar_invalidator_flushes_total 1\n");
    assert_has(
        text,
        "calendar_invalidator_lag_messages{topic=\"calendar.s0.nights\",partition=\"3\"} 42\n");
    ck_assert_ptr_null(strstr(text, "bad")); /* unknown lag is not exported */
    assert_has(text,
               "calendar_invalidator_commit_to_invalidation_seconds_bucket{le=\"0.002\"} 0\n");
    assert_has(text,
               "calendar_invalidator_commit_to_invalidation_seconds_bucket{le=\"0.005\"} 1\n");
    assert_has(text, "calendar_invalidator_commit_to_invalidation_seconds_bucket{le=\"2.5\"} 2\n");
    assert_has(text, "calendar_invalidator_commit_to_invalidation_seconds_bucket{le=\"60\"} 2\n");
    assert_has(text, "calendar_invalidator_commit_to_invalidation_seconds_bucket{le=\"+Inf\"} 3\n");
    assert_has(text, "calendar_invalidator_commit_to_invalidation_seconds_count 3\n");
    assert_has(text, "calendar_invalidator_commit_to_invalidation_seconds_sum 101.502\n");
    free(text);
    /* The produce histogram counts apart from the commit one; the window
     * takes it rather than the commit latency. */
    struct invstats_window win;
    invstats_take_window(stats, &win);
    invstats_latency(stats, 1000, 7); /* <= 10 ms */
    invstats_latency(stats, 1000, 5); /* <= 5 ms: a bucket's edge is in it */
    text = invstats_render(stats, &len);
    assert_has(text,
               "calendar_invalidator_produce_to_invalidation_seconds_bucket{le=\"0.005\"} 1\n");
    assert_has(text,
               "calendar_invalidator_produce_to_invalidation_seconds_bucket{le=\"0.01\"} 2\n");
    assert_has(text, "calendar_invalidator_produce_to_invalidation_seconds_count 2\n");
    assert_has(text, "calendar_invalidator_commit_to_invalidation_seconds_count 5\n");
    invstats_take_window(stats, &win);
    ck_assert_uint_eq(win.samples, 2);
    ck_assert_uint_eq(win.max_ms, 7);
    free(text);
    invstats_destroy(stats);
}
END_TEST

/* Second deletes: counted by outcome, the queue as a gauge, and the window
 * has the keys deleted again (early ones too) and the failed ones apart. */
START_TEST(redeletes_by_outcome)
{
    struct invstats *stats = invstats_create();
    size_t len;
    char *text = invstats_render(stats, &len);
    assert_has(text, "calendar_invalidator_redeletes_total{outcome=\"deleted\"} 0\n");
    assert_has(text, "calendar_invalidator_redelete_queue_keys 0\n");
    free(text);
    invstats_redeletes(stats, INVSTATS_REDELETE_DELETED, 5);
    invstats_redeletes(stats, INVSTATS_REDELETE_DELETED, 2);
    invstats_redeletes(stats, INVSTATS_REDELETE_EARLY, 3);
    invstats_redeletes(stats, INVSTATS_REDELETE_FAILED, 4);
    invstats_set_redelete_queue(stats, 11);
    text = invstats_render(stats, &len);
    assert_has(text, "# TYPE calendar_invalidator_redeletes_total counter\n");
    assert_has(text, "calendar_invalidator_redeletes_total{outcome=\"deleted\"} 7\n");
    assert_has(text, "calendar_invalidator_redeletes_total{outcome=\"early\"} 3\n");
    assert_has(text, "calendar_invalidator_redeletes_total{outcome=\"failed\"} 4\n");
    assert_has(text, "# TYPE calendar_invalidator_redelete_queue_keys gauge\n");
    assert_has(text, "calendar_invalidator_redelete_queue_keys 11\n");
    free(text);
    struct invstats_window win;
    invstats_take_window(stats, &win);
    ck_assert_uint_eq(win.redeletes, 10);
    ck_assert_uint_eq(win.redeletes_failed, 4);
    ck_assert_uint_eq(win.errors, 0);
    invstats_take_window(stats, &win);
    ck_assert_uint_eq(win.redeletes, 0);
    ck_assert_uint_eq(win.redeletes_failed, 0);
    invstats_destroy(stats);
}
END_TEST

START_TEST(label_values_escaped)
{
    struct invstats *stats = invstats_create();
    struct kconsumer_lag lag = {.topic = "a\"b\\c", .partition = 1, .lag = 0};
    invstats_set_lag(stats, &lag, 1);
    size_t len;
    char *text = invstats_render(stats, &len);
    assert_has(text, "{topic=\"a\\\"b\\\\c\",partition=\"1\"} 0\n");
    free(text);
    invstats_destroy(stats);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("invstats");
    UNIT_CASE(s, window_percentiles_and_reset);
    UNIT_CASE(s, window_reservoir_bounded);
    UNIT_CASE(s, render_prometheus);
    UNIT_CASE(s, redeletes_by_outcome);
    UNIT_CASE(s, label_values_escaped);
    return unit_run(s);
}
