/* Unit tests of calendard/idblock.c: ids from blocks, the next block taken
 * ahead, and what callers see when a block cannot be taken. The catalog's
 * own fetch is tested against a real catalog in check_router. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calendard/idblock.h"
#include "common/log.h"
#include "tests/lib/unit.h"

/* A block source: blocks of n ids from `next` on, in order, unless told to
 * fail; counts its calls, and can be slowed down. */
struct source {
    pthread_mutex_t lock;
    uint64_t next;
    unsigned calls;
    bool fail;
    unsigned delay_ms;
};

static cal_status
fetch(void *arg, uint64_t n, uint64_t *first, char *err, size_t errlen)
{
    struct source *s = arg;
    pthread_mutex_lock(&s->lock);
    s->calls++;
    unsigned delay = s->delay_ms;
    bool fail = s->fail;
    if (!fail) {
        *first = s->next;
        s->next += n;
    }
    pthread_mutex_unlock(&s->lock);
    if (delay)
        usleep(delay * 1000);
    if (fail) {
        snprintf(err, errlen, "catalog down");
        return CAL_EUNAVAIL;
    }
    return CAL_OK;
}

static struct source *
source_new(uint64_t first)
{
    struct source *s = calloc(1, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->next = first;
    return s;
}

START_TEST(ids_run_through_blocks_and_the_next_is_taken_at_half)
{
    struct source *s = source_new(1000);
    struct idblock *ids = idblock_create(10, 0, fetch, s);
    char err[128];
    uint64_t id;
    for (uint64_t i = 0; i < 5; i++) {
        ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
        ck_assert_uint_eq(id, 1000 + i);
    }
    /* The first call took block one; the sixth leaves 4 of 10, under half. */
    ck_assert_uint_eq(s->calls, 1);
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(id, 1005);
    ck_assert_uint_eq(s->calls, 2);
    /* The rest of block one, then block two, which was taken already. */
    for (uint64_t i = 6; i < 15; i++) {
        ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
        ck_assert_uint_eq(id, 1000 + i);
    }
    ck_assert_uint_eq(s->calls, 2);
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(id, 1015);    /* block two, taken at the fifth id of block one */
    ck_assert_uint_eq(s->calls, 3); /* half of block two used */
    idblock_destroy(ids);
    free(s);
}
END_TEST

START_TEST(a_failed_fetch_fails_only_when_the_block_is_used_up)
{
    struct source *s = source_new(1);
    struct idblock *ids = idblock_create(4, 0, fetch, s);
    char err[128] = "";
    uint64_t id;
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK); /* 1; block 1..4 */
    s->fail = true;
    /* Taking ahead fails, and the block goes on. */
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(id, 4);
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_EUNAVAIL);
    ck_assert_str_eq(err, "catalog down");
    /* Back up: the next call takes a block (5..8, the source never gave
     * those out) and goes on. */
    s->fail = false;
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(id, 5);
    idblock_destroy(ids);
    free(s);
}
END_TEST

#define THREADS 8
#define PER_THREAD 5000

struct taker {
    struct idblock *ids;
    size_t want;
    uint64_t got[PER_THREAD];
    size_t n;
    unsigned failed;
};

static void *
take_many(void *arg)
{
    struct taker *t = arg;
    char err[128];
    for (size_t i = 0; i < t->want; i++) {
        if (idblock_next(t->ids, &t->got[t->n], err, sizeof(err)) == CAL_OK)
            t->n++;
        else
            t->failed++;
    }
    return NULL;
}

/* THREADS takers of want ids each, at once; returns when all are done. */
static void
run_takers(struct idblock *ids, size_t want, struct taker *t)
{
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        t[i] = (struct taker){.ids = ids, .want = want};
        pthread_create(&th[i], NULL, take_many, &t[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(concurrent_callers_never_get_the_same_id)
{
    struct source *s = source_new(1ULL << 40);
    s->delay_ms = 1; /* fetches overlap with callers using up the block */
    struct idblock *ids = idblock_create(64, 0, fetch, s);
    static struct taker t[THREADS];
    run_takers(ids, PER_THREAD, t);
    uint64_t *all = malloc(sizeof(*all) * THREADS * PER_THREAD);
    size_t n = 0;
    for (int i = 0; i < THREADS; i++) {
        ck_assert_uint_eq(t[i].failed, 0);
        memcpy(all + n, t[i].got, t[i].n * sizeof(*all));
        n += t[i].n;
    }
    ck_assert_uint_eq(n, THREADS * PER_THREAD);
    qsort(all, n, sizeof(*all), cmp_u64);
    for (size_t i = 1; i < n; i++)
        ck_assert_msg(all[i] != all[i - 1], "id %llu given twice", (unsigned long long)all[i]);
    /* Every id came from a block the source gave out. */
    ck_assert_uint_ge(all[0], 1ULL << 40);
    ck_assert_uint_lt(all[n - 1], s->next);
    free(all);
    idblock_destroy(ids);
    free(s);
}
END_TEST

/* While the catalog is down, callers that waited for one failed fetch get
 * its answer: they do not each try again in turn. */
START_TEST(waiters_share_the_answer_of_the_fetch_they_waited_for)
{
    struct source *s = source_new(1);
    s->fail = true;
    s->delay_ms = 20;
    struct idblock *ids = idblock_create(4, 0, fetch, s); /* no retry window */
    static struct taker t[THREADS];
    run_takers(ids, 10, t);
    unsigned failed = 0;
    for (int i = 0; i < THREADS; i++) {
        ck_assert_uint_eq(t[i].n, 0);
        failed += t[i].failed;
    }
    ck_assert_uint_eq(failed, THREADS * 10);
    /* Each fetch answers the caller that made it and everyone who waited
     * for it, so there are far fewer fetches than failed calls. */
    ck_assert_msg(s->calls < failed / 2, "%u fetches for %u failed calls", s->calls, failed);
    idblock_destroy(ids);
    free(s);
}
END_TEST

/* After a failed fetch, callers within retry_ms get its answer at once;
 * the first after it tries the catalog again. */
START_TEST(a_failed_fetch_is_not_tried_again_within_retry_ms)
{
    struct source *s = source_new(1);
    s->fail = true;
    /* retry_ms 2000: the 11 calls below must all come within it, even on
     * a slow machine. */
    struct idblock *ids = idblock_create(4, 2000, fetch, s);
    char err[128] = "";
    uint64_t id;
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_EUNAVAIL);
    s->fail = false;
    for (int i = 0; i < 10; i++) {
        err[0] = '\0';
        ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_EUNAVAIL);
        ck_assert_str_eq(err, "catalog down");
    }
    ck_assert_uint_eq(s->calls, 1);
    usleep(2100 * 1000);
    ck_assert(idblock_next(ids, &id, err, sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(id, 1);
    ck_assert_uint_eq(s->calls, 2);
    idblock_destroy(ids);
    free(s);
}
END_TEST

int
main(void)
{
    log_set_level(LOG_ERROR); /* each failed fetch logs a warning */
    Suite *s = suite_create("idblock");
    UNIT_CASE(s, ids_run_through_blocks_and_the_next_is_taken_at_half);
    UNIT_CASE(s, a_failed_fetch_fails_only_when_the_block_is_used_up);
    UNIT_CASE(s, concurrent_callers_never_get_the_same_id);
    UNIT_CASE(s, waiters_share_the_answer_of_the_fetch_they_waited_for);
    UNIT_CASE(s, a_failed_fetch_is_not_tried_again_within_retry_ms);
    return unit_run(s);
}
