/* Raw memcached multi-gets of calendard's availability keys. */
#include "tests/bench/raw_reads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cache.h"
#include "common/date.h"
#include "common/util.h"

#define MAX_MONTHS 14 /* a range of at most 366 nights touches 13 months */
#define MAX_BATCH 1000

/* The window's edges, crossed once each. */
enum { EDGE_NONE, EDGE_OPENING, EDGE_OPEN, EDGE_CLOSED };

struct shared {
    const struct raw_reads_conf *conf;
    double t_start, t_end;
    atomic_uint_fast64_t started;
    atomic_int edge;
};

struct worker {
    struct shared *sh;
    pthread_t thread;
    struct bench_rng rng;
    struct raw_reads_result res;
    cal_status rc;
    char err[256];
};

size_t
raw_reads_keys(uint64_t listing_id, int32_t from, int32_t to, char (*keys)[CACHEKEY_MAX],
               size_t *lens, size_t max)
{
    size_t n = 0;
    int y;
    unsigned m, d;
    if (max == 0)
        return 0;
    lens[n] = cachekey_listing(listing_id, keys[n]);
    n++;
    /* One key per month the range touches, as calendard's months_of(). */
    date_to_ymd(from, &y, &m, &d);
    for (int32_t first = date_from_ymd(y, m, 1); first < to && n < max;) {
        lens[n] = cachekey_month_of(listing_id, first, keys[n]);
        n++;
        date_to_ymd(first, &y, &m, &d);
        first = m == 12 ? date_from_ymd(y + 1, 1, 1) : date_from_ymd(y, m + 1, 1);
    }
    return n;
}

/* Opens the window (conf->window, true) once now is past its start and
 * closes it once past its end, whichever worker gets there first: the
 * workers run all along, where a main thread sleeping until the edges was
 * woken up to the whole window late by 64 busy threads on 2 cores (its CPU
 * samples then spanned a few milliseconds). */
static void
cross_edges(struct shared *sh, double now)
{
    if (sh->conf->window == NULL)
        return;
    int e = EDGE_NONE;
    if (now >= sh->t_start && atomic_compare_exchange_strong(&sh->edge, &e, EDGE_OPENING)) {
        sh->conf->window(sh->conf->ctx, true);
        atomic_store(&sh->edge, EDGE_OPEN);
    }
    e = EDGE_OPEN;
    if (now >= sh->t_end && atomic_compare_exchange_strong(&sh->edge, &e, EDGE_CLOSED))
        sh->conf->window(sh->conf->ctx, false);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    const struct raw_reads_conf *conf = sh->conf;
    struct cache_conf cc = {.timeout_ms = 1000};
    size_t per = MAX_MONTHS + 1, cap = conf->batch * per;
    char(*keys)[CACHEKEY_MAX] = cal_malloc(cap * CACHEKEY_MAX);
    size_t *lens = cal_malloc(cap * sizeof(*lens));
    struct cache_item *items = cal_calloc(cap, sizeof(*items));
    uint64_t *ids = cal_malloc(conf->batch * sizeof(*ids));
    char err[256];
    cal_strlcpy(cc.servers, conf->memcached_servers, sizeof(cc.servers));
    struct cache *cache = cache_create(&cc, w->err, sizeof(w->err));
    w->rc = cache ? CAL_OK : CAL_EINVAL;
    double gap = conf->rate > 0 ? conf->conc / conf->rate : 0;
    double due = bench_now() + (gap > 0 ? bench_rng_exp(&w->rng, gap) : 0);
    /* Closed loop: until the window closes. Open loop: every multi-get due
     * before it closes, however late it ends (dropping the late ones would
     * drop the slowest). */
    while (cache != NULL && (gap > 0 ? due < sh->t_end : bench_now() < sh->t_end)) {
        if (gap > 0)
            bench_sleep_until(due);
        cross_edges(sh, bench_now());
        if (atomic_fetch_add(&sh->started, 1) >= conf->max_requests)
            break;
        size_t n = 0;
        bench_pick_distinct(&w->rng, conf->first_id, conf->nlistings, conf->batch, ids);
        for (unsigned b = 0; b < conf->batch; b++)
            n += raw_reads_keys(ids[b], conf->from, conf->to, keys + n, lens + n, cap - n);
        for (size_t i = 0; i < n; i++) {
            items[i].key = keys[i];
            items[i].keylen = lens[i];
        }
        double t0 = bench_now();
        cal_status rc = cache_get_multi(cache, items, n, err, sizeof(err));
        double t1 = bench_now();
        if (gap > 0) {
            t0 = due; /* a multi-get that waited for the last one waited in the system */
            due += bench_rng_exp(&w->rng, gap);
        }
        size_t found = 0;
        for (size_t i = 0; i < n; i++)
            found += items[i].found;
        cache_results_free(items, n);
        /* As http_load's count_answer(): closed loop by answer, open by due time. */
        double at = gap > 0 ? t0 : t1;
        if (at < sh->t_start || at >= sh->t_end)
            continue;
        if (rc != CAL_OK) {
            w->res.errors++;
            cal_strlcpy(w->err, err, sizeof(w->err));
            continue;
        }
        w->res.answered++;
        w->res.keys += n;
        w->res.misses += n - found;
        w->res.complete += found == n;
        bench_lat_add(&w->res.lat, (uint64_t)((t1 - t0) * 1e6));
    }
    cross_edges(sh, bench_now());
    cache_destroy(cache);
    free(keys);
    free(lens);
    free(items);
    free(ids);
    return NULL;
}

cal_status
raw_reads_run(const struct raw_reads_conf *conf, struct raw_reads_result *res, char *err,
              size_t errlen)
{
    struct shared sh = {.conf = conf};
    struct worker *ws = cal_calloc(conf->conc, sizeof(*ws));
    size_t cap = (size_t)(conf->max_requests < 8000000 ? conf->max_requests : 8000000);
    cal_status rc = CAL_OK;
    memset(res, 0, sizeof(*res));
    if (conf->batch == 0 || conf->batch > MAX_BATCH || conf->batch > conf->nlistings) {
        snprintf(err, errlen, "batch must be 1..%d and at most the listings", MAX_BATCH);
        free(ws);
        return CAL_EINVAL;
    }
    bench_lat_init(&res->lat, cap);
    atomic_init(&sh.started, 0);
    atomic_init(&sh.edge, EDGE_NONE);
    sh.t_start = bench_now() + conf->warmup_s;
    sh.t_end = sh.t_start + conf->secs;
    for (unsigned t = 0; t < conf->conc; t++) {
        struct worker *w = &ws[t];
        w->sh = &sh;
        bench_rng_init(&w->rng, conf->seed * 0x9e3779b97f4a7c15ULL + t + 1);
        bench_lat_init(&w->res.lat, cap / conf->conc + 1024);
        pthread_create(&w->thread, NULL, worker_main, w);
    }
    for (unsigned t = 0; t < conf->conc; t++)
        pthread_join(ws[t].thread, NULL);
    /* Every worker stopped before an edge (a failed start, max_requests):
     * the window still opens and closes once. */
    bench_sleep_until(sh.t_end);
    cross_edges(&sh, bench_now());
    for (unsigned t = 0; t < conf->conc; t++) {
        struct worker *w = &ws[t];
        if (rc == CAL_OK && (w->rc != CAL_OK || (w->res.errors > 0 && w->res.answered == 0))) {
            rc = w->rc != CAL_OK ? w->rc : CAL_ERR;
            cal_strlcpy(err, w->err, errlen);
        }
        res->answered += w->res.answered;
        res->complete += w->res.complete;
        res->errors += w->res.errors;
        res->keys += w->res.keys;
        res->misses += w->res.misses;
        bench_lat_merge(&res->lat, &w->res.lat);
        bench_lat_deinit(&w->res.lat);
    }
    res->secs = conf->secs;
    /* A worker that found the count past max_requests stopped early. */
    res->capped = atomic_load(&sh.started) > conf->max_requests;
    free(ws);
    return rc;
}
