/* Unit tests of calendard/inflight.c: one request per idempotency key. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
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

/* Thousands of keys share the buckets: each is held on its own, and a
 * release unlinks its key from anywhere in a bucket's chain. */
START_TEST(many_keys_share_buckets)
{
    enum { N = 3000 };
    struct inflight *set = inflight_create();
    char key[16];
    for (int i = 0; i < N; i++) {
        int len = snprintf(key, sizeof(key), "k%d", i);
        ck_assert(inflight_acquire(set, (uint64_t)(i % 7), key, (size_t)len, 0));
    }
    for (int i = 0; i < N; i += 2) {
        int len = snprintf(key, sizeof(key), "k%d", i);
        inflight_release(set, (uint64_t)(i % 7), key, (size_t)len);
    }
    for (int i = 0; i < N; i++) {
        int len = snprintf(key, sizeof(key), "k%d", i);
        bool released = i % 2 == 0;
        ck_assert_msg(inflight_acquire(set, (uint64_t)(i % 7), key, (size_t)len, 0) == released,
                      "key %d: %s", i, released ? "released, still held" : "held, taken again");
    }
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
    double t0 = now_ms(); /* before the holder's sleep can start */
    pthread_create(&t, NULL, hold_then_release, &h);
    ck_assert(inflight_acquire(set, 7, "replay-me", 9, 5000));
    double waited = now_ms() - t0;
    ck_assert_msg(waited >= 90 && waited < 4000, "waited %.0f ms", waited);
    pthread_join(t, NULL);
    inflight_release(set, 7, "replay-me", 9);
    inflight_destroy(set);
}
END_TEST

struct replayer {
    struct inflight *set;
    bool got;
    bool held; /* a claim by another failed while this one had the key */
};

static void *
replay_and_hold(void *arg)
{
    struct replayer *r = arg;
    /* Refused at once while the waiters' places are full. */
    double t0 = now_ms();
    while (!(r->got = inflight_acquire(r->set, 7, "replay-me", 9, 10000)) && now_ms() - t0 < 9000)
        usleep(1000);
    if (r->got) {
        r->held = !inflight_acquire(r->set, 7, "replay-me", 9, 0);
        inflight_release(r->set, 7, "replay-me", 9);
    }
    return NULL;
}

START_TEST(replays_past_the_waiters_bound_are_refused_at_once)
{
    struct inflight *set = inflight_create();
    ck_assert(inflight_acquire(set, 7, "replay-me", 9, 0));
    struct replayer r[INFLIGHT_MAX_WAITERS];
    pthread_t t[INFLIGHT_MAX_WAITERS];
    for (size_t i = 0; i < INFLIGHT_MAX_WAITERS; i++) {
        r[i] = (struct replayer){.set = set};
        pthread_create(&t[i], NULL, replay_and_hold, &r[i]);
    }
    /* Once all of them wait, one more replay is refused at once instead of
     * waiting out its 200 ms. Until then it may be one of the waiters and
     * time out: pause (so a replayer takes the place) and try again. */
    bool refused_at_once = false;
    for (int i = 0; i < 100 && !refused_at_once; i++) {
        double t0 = now_ms();
        ck_assert(!inflight_acquire(set, 7, "replay-me", 9, 200));
        refused_at_once = now_ms() - t0 < 100;
        if (!refused_at_once)
            usleep(20000);
    }
    ck_assert_msg(refused_at_once, "a replay past the bound waited instead of being refused");
    /* Other keys are not affected. */
    ck_assert(inflight_acquire(set, 7, "other", 5, 0));
    /* The release hands the key to one waiter, and each in turn. */
    inflight_release(set, 7, "replay-me", 9);
    for (size_t i = 0; i < INFLIGHT_MAX_WAITERS; i++) {
        pthread_join(t[i], NULL);
        ck_assert_msg(r[i].got && r[i].held, "replayer %zu: got %d held %d", i, r[i].got,
                      r[i].held);
    }
    /* Released without waiters, the key is free again. */
    ck_assert(inflight_acquire(set, 7, "replay-me", 9, 0));
    inflight_release(set, 7, "replay-me", 9);
    inflight_release(set, 7, "other", 5);
    inflight_destroy(set);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("inflight");
    UNIT_CASE(s, second_claim_of_a_key_times_out);
    UNIT_CASE(s, many_keys_share_buckets);
    UNIT_CASE(s, replay_waits_for_the_original);
    UNIT_CASE(s, replays_past_the_waiters_bound_are_refused_at_once);
    return unit_run(s);
}
