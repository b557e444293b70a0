/* The raw booking transaction: calendard's own store_read_calendar and
 * store_book called straight from client threads, one transaction per
 * booking (no HTTP, JSON, pool, group commit or cache invalidation). It is
 * DESIGN's per-statement transaction (seven round trips with the read);
 * calendard books with one compound statement instead (store_book_one, or
 * book_block for a batch), so calendard / raw is the daemon's cost plus
 * what its fewer round trips and its group commit gain
 * (docs/benchmarks.md). */
#include "tests/bench/raw_booking.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/booking.h"
#include "calendard/store.h"
#include "common/db.h"
#include "common/util.h"

enum outcome { BOOKED, UNAVAILABLE, CONFLICT, FAILED };

struct shared {
    const struct raw_booking_conf *conf;
    double t_start, t_end;
    atomic_uint_fast64_t started;
    atomic_uint_fast64_t next_id;
    uint64_t tag;
    /* Every worker connected (ready), then the window set (go): 128 MariaDB
     * logins at c=64 must not eat into the measured window. */
    pthread_barrier_t ready, go;
};

struct worker {
    struct shared *sh;
    unsigned index;
    pthread_t thread;
    struct db *db[TESTENV_MAX_SHARDS];
    struct bench_rng rng;
    struct raw_booking_result res;
    cal_status rc;
    char err[256];
};

struct stay {
    uint64_t listing_id;
    uint32_t vbucket;
    int32_t check_in, check_out;
    char key[64];
    char hash[17];
};

/* One try: calendard's read, plan and fenced transaction. */
static enum outcome
book_once(struct shared *sh, struct db *db, const struct stay *s, char *err, size_t errlen)
{
    struct calendar_read read = {0};
    struct booking_plan plan;
    enum outcome out = FAILED;
    cal_status rc = store_read_calendar(db, s->vbucket, s->listing_id, s->check_in, s->check_out,
                                        &read, err, errlen);
    if (rc != CAL_OK)
        goto out;
    booking_plan_make(&read.listing, read.rows, read.nrows, s->check_in, s->check_out, &plan);
    if (plan.nunavailable > 0) {
        out = UNAVAILABLE;
        goto out;
    }
    struct reservation res = {.reservation_id = atomic_fetch_add(&sh->next_id, 1),
                              .listing_id = s->listing_id,
                              .check_in = s->check_in,
                              .check_out = s->check_out,
                              .guest_id = 7,
                              .total_price = plan.total_price};
    memcpy(res.currency, read.listing.currency, sizeof(res.currency));
    memcpy(res.request_hash, s->hash, sizeof(res.request_hash));
    rc = store_book(db, &read.listing, &plan, &res, s->key, strlen(s->key), err, errlen);
    out = rc == CAL_OK ? BOOKED : rc == CAL_ECONFLICT ? CONFLICT : FAILED;
out:
    calendar_read_clear(&read);
    return out;
}

/* One booking with calendard's retry policy: bounded tries, full jitter. */
static void
book_one(struct worker *w, uint64_t seq)
{
    struct shared *sh = w->sh;
    const struct raw_booking_conf *conf = sh->conf;
    struct stay s;
    char err[512];
    enum outcome out = FAILED;
    unsigned retries = 0, conflicts = 0;
    bench_stay_next(&conf->stays, &w->rng, &s.listing_id, &s.check_in, &s.check_out);
    s.vbucket = testenv_vbucket(s.listing_id);
    snprintf(s.key, sizeof(s.key), "raw-%llx-%u-%llu", (unsigned long long)sh->tag, w->index,
             (unsigned long long)seq);
    booking_request_hash(s.check_in, s.check_out, 7, s.hash);
    struct db *db = w->db[bench_routes_shard(conf->routes, s.listing_id)];
    double t0 = bench_now();
    for (unsigned attempt = 0; attempt < conf->max_attempts; attempt++) {
        if (attempt > 0) {
            retries++;
            cal_sleep_ms(booking_backoff_ms(attempt - 1, conf->backoff_base_ms,
                                            conf->backoff_max_ms, bench_rng_next(&w->rng)));
        }
        out = book_once(sh, db, &s, err, sizeof(err));
        if (out != CONFLICT)
            break;
        conflicts++;
    }
    double t1 = bench_now();
    if (out == FAILED && w->res.errors == 0)
        cal_strlcpy(w->err, err, sizeof(w->err));
    if (t1 < sh->t_start || t1 >= sh->t_end)
        return; /* warm-up and drain are not measured: answers in the window count */
    struct raw_booking_result *res = &w->res;
    res->attempts++;
    res->retries += retries;
    res->conflicts += conflicts;
    switch (out) {
    case BOOKED:
        res->booked++;
        bench_lat_add(&res->lat, (uint64_t)((t1 - t0) * 1e6));
        break;
    case UNAVAILABLE:
        res->unavailable++;
        break;
    case CONFLICT:
        res->gave_up++;
        break;
    case FAILED:
        res->errors++;
        break;
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    const struct raw_booking_conf *conf = sh->conf;
    w->rc = CAL_OK;
    for (size_t i = 0; i < conf->env->nshards && w->rc == CAL_OK; i++) {
        w->db[i] = testenv_connect_shard(conf->env, i, w->err, sizeof(w->err));
        if (w->db[i] == NULL)
            w->rc = CAL_EUNAVAIL;
    }
    pthread_barrier_wait(&sh->ready);
    pthread_barrier_wait(&sh->go);
    if (w->rc != CAL_OK)
        return NULL;
    for (uint64_t seq = 0; bench_now() < sh->t_end; seq++) {
        if (atomic_fetch_add(&sh->started, 1) >= conf->max_bookings)
            break;
        book_one(w, seq);
    }
    return NULL;
}

cal_status
raw_booking_run(const struct raw_booking_conf *conf, struct raw_booking_result *res, char *err,
                size_t errlen)
{
    struct shared sh = {.conf = conf};
    struct worker *ws = cal_calloc(conf->conc, sizeof(*ws));
    size_t cap = (size_t)(conf->max_bookings < 4000000 ? conf->max_bookings : 4000000);
    cal_status rc = CAL_OK;
    memset(res, 0, sizeof(*res));
    bench_lat_init(&res->lat, cap);
    atomic_init(&sh.started, 0);
    /* Above 2^60: never the id of a calendard reservation (53 bits). */
    atomic_init(&sh.next_id, (1ULL << 60) | (cal_now_ms() << 16));
    sh.tag = testenv_random48();
    pthread_barrier_init(&sh.ready, NULL, conf->conc + 1);
    pthread_barrier_init(&sh.go, NULL, conf->conc + 1);
    for (unsigned t = 0; t < conf->conc; t++) {
        struct worker *w = &ws[t];
        w->sh = &sh;
        w->index = t;
        bench_rng_init(&w->rng, conf->seed * 0x9e3779b97f4a7c15ULL + t + 1);
        bench_lat_init(&w->res.lat, cap / conf->conc + 1024);
        /* Every worker or none: the barriers wait for all of them. */
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            fprintf(stderr, "calendar-bench: cannot start raw client thread %u of %u\n", t + 1,
                    conf->conc);
            exit(1);
        }
    }
    /* The window starts once every worker is connected, as calendard's
     * pools are before its runs. */
    pthread_barrier_wait(&sh.ready);
    sh.t_start = bench_now() + conf->warmup_s;
    sh.t_end = sh.t_start + conf->secs;
    pthread_barrier_wait(&sh.go);
    bench_sleep_until(sh.t_start);
    if (conf->window)
        conf->window(conf->ctx, true);
    bench_sleep_until(sh.t_end);
    if (conf->window)
        conf->window(conf->ctx, false);
    for (unsigned t = 0; t < conf->conc; t++) {
        struct worker *w = &ws[t];
        pthread_join(w->thread, NULL);
        for (size_t i = 0; i < conf->env->nshards; i++)
            db_close(w->db[i]);
        if (rc == CAL_OK && (w->rc != CAL_OK || (w->res.errors > 0 && w->res.booked == 0))) {
            rc = w->rc != CAL_OK ? w->rc : CAL_ERR;
            cal_strlcpy(err, w->err, errlen);
        }
        res->booked += w->res.booked;
        res->attempts += w->res.attempts;
        res->unavailable += w->res.unavailable;
        res->gave_up += w->res.gave_up;
        res->errors += w->res.errors;
        res->retries += w->res.retries;
        res->conflicts += w->res.conflicts;
        bench_lat_merge(&res->lat, &w->res.lat);
        bench_lat_deinit(&w->res.lat);
    }
    res->secs = conf->secs;
    /* A worker that found the count past max_bookings stopped early. */
    res->capped = atomic_load(&sh.started) > conf->max_bookings;
    pthread_barrier_destroy(&sh.ready);
    pthread_barrier_destroy(&sh.go);
    free(ws);
    return rc;
}
