/* Unit tests of calendard/inflight.c: one request per idempotency key. */
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "calendard/inflight.h"
#include "tests/lib/unit.h"

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}

START_TEST(second_claim_of_a_key_times_out)
{
    struct inflight *set = inflight_create();
    ck_assert(inflight_acquire(set, 1, "k", 1, 0));
    double t0 = now_ms();
    ck_assert(!inflight_acquire(set, 1, "k", 1, 50));
    ck_assert(now_ms() - t0 >= 45);
    /* Other keys and other listings are independent. */
    ck_assert(inflight_acquire(set, 1, "k2", 2, 0));
    ck_assert(inflight_acquire(set, 2, "k", 1, 0));
    inflight_release(set, 1, "k", 1);
    ck_assert(inflight_acquire(set, 1, "k", 1, 0));
    inflight_destroy(set);
}
END_TEST

struct holder {
    struct inflight *set;
    unsigned hold_ms;
};

static void *
hold_then_release(void *arg)
{
    struct holder *h = arg;
    usleep(h->hold_ms * 1000);
    inflight_release(h->set, 7, "replay-me", 9);
    return NULL;
}

START_TEST(replay_waits_for_the_original)
{
    struct inflight *set = inflight_create();
    ck_assert(inflight_acquire(set, 7, "replay-me", 9, 0));
    struct holder h = {set, 100};
    pthread_t t;
    pthread_create(&t, NULL, hold_then_release, &h);
    double t0 = now_ms();
    ck_assert(inflight_acquire(set, 7, "replay-me", 9, 5000));
    double waited = now_ms() - t0;
    ck_assert_msg(waited >= 90 && waited < 4000, "waited %.0f ms", waited);
    pthread_join(t, NULL);
    inflight_release(set, 7, "replay-me", 9);
    inflight_destroy(set);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("inflight");
    UNIT_CASE(s, second_claim_of_a_key_times_out);
    UNIT_CASE(s, replay_waits_for_the_original);
    return unit_run(s);
}
