/* The cache check of calendar-stress: memcached against the shards. */
#include "tests/stress/stress_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "calendard/cacheval.h"
#include "common/cache.h"
#include "common/cachekey.h"
#include "common/date.h"
#include "common/util.h"
#include "tests/lib/http.h"

#define MAX_MONTHS 16
#define STALE_TTL_S 120   /* an injected stale value expires on its own */
#define WARM_LISTINGS 256 /* listings read through calendard before comparing */
#define WARM_READ_MS 2000 /* one of those reads: a stop signal waits for it at most */

/* What the owning shards hold for one listing of the run. */
struct truth {
    bool found;
    struct listing listing;
    size_t nrows, cap;
    struct night_row *rows;
};

static const char SQL_LISTINGS[] =
    "SELECT l.listing_id, l.version, l.rules_version, l.default_price, l.currency,"
    " l.min_nights, l.max_nights FROM listings l JOIN vbucket_owner o ON o.vbucket = l.vbucket"
    " WHERE l.listing_id BETWEEN ? AND ?";
static const char SQL_NIGHTS[] =
    "SELECT n.listing_id, TO_DAYS(n.night) - 719528, n.status, n.price FROM nights n"
    " JOIN vbucket_owner o ON o.vbucket = n.vbucket WHERE n.listing_id BETWEEN ? AND ?";

static int
read_truth(const struct testenv *env, const struct stress_conf *conf, struct truth *t, char *err,
           size_t errlen)
{
    for (size_t s = 0; s < env->nshards; s++) {
        struct db *db = testenv_connect_shard(env, s, err, errlen);
        struct db_stmt *st;
        struct db_val p[2] = {DB_INT_V(conf->listing_base),
                              DB_INT_V(conf->listing_base + conf->nlistings - 1)},
                      c[7];
        int r;
        if (db == NULL)
            return -1;
        if (db_query(db, SQL_LISTINGS, p, 2, &st, err, errlen) != CAL_OK) {
            db_close(db);
            return -1;
        }
        while ((r = db_fetch(st, c, 7, err, errlen)) > 0) {
            struct truth *x = &t[(uint64_t)c[0].i - conf->listing_base];
            x->found = true;
            x->listing.version = (uint64_t)c[1].i;
            x->listing.rules_version = (uint64_t)c[2].i;
            x->listing.default_price = c[3].i;
            cal_strlcpy(x->listing.currency, c[4].type == DB_STR ? c[4].s : "", 4);
            x->listing.min_nights = (int)c[5].i;
            x->listing.max_nights = (int)c[6].i;
        }
        if (r == 0 && db_query(db, SQL_NIGHTS, p, 2, &st, err, errlen) != CAL_OK)
            r = -1; /* a shard's nights unread must not pass for none */
        if (r == 0) {
            while ((r = db_fetch(st, c, 4, err, errlen)) > 0) {
                struct truth *x = &t[(uint64_t)c[0].i - conf->listing_base];
                if (x->nrows == x->cap) {
                    x->cap = x->cap ? x->cap * 2 : 32;
                    x->rows = cal_realloc(x->rows, x->cap * sizeof(*x->rows));
                }
                struct night_row *row = &x->rows[x->nrows++];
                memset(row, 0, sizeof(*row));
                row->night = (int32_t)c[1].i;
                if (c[2].type != DB_STR || !booking_night_status_parse(c[2].s, &row->status))
                    row->status = NIGHT_BLOCKED;
                row->has_price = c[3].type == DB_INT;
                row->price = c[3].i;
            }
        }
        db_close(db);
        if (r < 0)
            return -1;
    }
    return 0;
}

/* Does a cached month equal the shard's rows of that month? */
static bool
month_matches(const struct truth *t, const struct cache_item *ci, int32_t first)
{
    struct night_row cached[31];
    size_t n = 0;
    int32_t next = date_next_month(first);
    if (!cacheval_decode_month(ci->value, ci->len, first, cached, &n, 31, NULL))
        return false;
    size_t expect = 0;
    for (size_t i = 0; i < t->nrows; i++) {
        const struct night_row *r = &t->rows[i];
        if (r->night < first || r->night >= next)
            continue;
        expect++;
        bool same = false;
        for (size_t j = 0; j < n && !same; j++)
            same = cached[j].night == r->night && cached[j].status == r->status &&
                   cached[j].has_price == r->has_price &&
                   (!r->has_price || cached[j].price == r->price);
        if (!same)
            return false;
    }
    return expect == n;
}

static int
one_pass(const struct testenv *env, const struct stress_conf *conf, struct cache *cache,
         int64_t *mismatches, uint64_t *checked, char *err, size_t errlen)
{
    int32_t firsts[MAX_MONTHS];
    size_t nmonths = 0;
    for (int32_t f = date_month_first((int32_t)conf->first_day);
         f < conf->first_day + conf->window && nmonths < MAX_MONTHS; f = date_next_month(f))
        firsts[nmonths++] = f;
    size_t nk = nmonths + 1, n = conf->nlistings * nk;
    struct truth *t = cal_calloc(conf->nlistings, sizeof(*t));
    struct cache_item *ci = cal_calloc(n, sizeof(*ci));
    char(*keys)[CACHEKEY_MAX] = cal_malloc(n * CACHEKEY_MAX);
    int rc = -1;
    /* Cache first, then SQL: a value that was right when read and changed
     * since is then still compared with a newer truth only if the
     * invalidation has not landed yet, which the retry loop absorbs. */
    for (size_t i = 0; i < conf->nlistings; i++) {
        uint64_t id = conf->listing_base + i;
        ci[i * nk].keylen = cachekey_listing(id, keys[i * nk]);
        ci[i * nk].key = keys[i * nk];
        for (size_t k = 0; k < nmonths; k++) {
            ci[i * nk + 1 + k].keylen = cachekey_month_of(id, firsts[k], keys[i * nk + 1 + k]);
            ci[i * nk + 1 + k].key = keys[i * nk + 1 + k];
        }
    }
    if (cache_get_multi(cache, ci, n, err, errlen) != CAL_OK ||
        read_truth(env, conf, t, err, errlen) != 0)
        goto out;
    *mismatches = 0;
    *checked = 0;
    for (size_t i = 0; i < conf->nlistings; i++) {
        for (size_t k = 0; k < nk; k++) {
            const struct cache_item *it = &ci[i * nk + k];
            if (!it->found || cacheval_is_lease(it->value, it->len))
                continue;
            (*checked)++;
            bool ok;
            if (k == 0) {
                struct listing l;
                ok = t[i].found && cacheval_decode_listing(it->value, it->len, &l) &&
                     l.version == t[i].listing.version &&
                     l.default_price == t[i].listing.default_price &&
                     strcmp(l.currency, t[i].listing.currency) == 0 &&
                     l.min_nights == t[i].listing.min_nights &&
                     l.max_nights == t[i].listing.max_nights;
            } else {
                ok = t[i].found && month_matches(&t[i], it, firsts[k - 1]);
            }
            if (!ok) {
                (*mismatches)++;
                if (*mismatches <= 5)
                    fprintf(stderr, "calendar-stress: cache_mismatch %.*s = %.*s\n",
                            (int)it->keylen, it->key, (int)(it->len > 200 ? 200 : it->len),
                            it->value);
            }
        }
    }
    rc = 0;
out:
    cache_results_free(ci, n);
    for (size_t i = 0; i < conf->nlistings; i++)
        free(t[i].rows);
    free(t);
    free(ci);
    free(keys);
    return rc;
}

/* The bound of one phase: its deadline, and the stop signals counted when
 * it began (a later one ends it). */
struct bound {
    uint64_t until_us;
    unsigned stops;
    unsigned wait_ms;
};

static struct bound
bound_start(unsigned wait_ms)
{
    return (struct bound){.until_us = cal_mono_us() + (uint64_t)wait_ms * 1000,
                          .stops = stress_load_stops(),
                          .wait_ms = wait_ms};
}

static bool
stopped(const struct bound *b)
{
    return stress_load_stops() != b->stops;
}

/* Milliseconds left, 0 when the deadline passed or a stop signal came. */
static long
left_ms(const struct bound *b)
{
    uint64_t now = cal_mono_us();
    return stopped(b) || now >= b->until_us ? 0 : (long)((b->until_us - now + 999) / 1000);
}

/* Reads the whole window of the run's first WARM_LISTINGS listings once
 * through calendard, within b (a slow calendard cannot hold the phase up:
 * no read outlives the deadline, nor a stop signal by more than
 * WARM_READ_MS). The load's last writes may have
 * invalidated all it had cached (a short run, memcached restarted late by a
 * fault test), which would leave nothing to compare; a read fills only keys
 * memcached lacks, so a stale value stays as it is. A read that fails fills
 * nothing, which the comparison then shows. */
static void
warm(const struct stress_conf *conf, const struct bound *b)
{
    struct http_client *http = http_client_create();
    size_t n = conf->nlistings < WARM_LISTINGS ? conf->nlistings : WARM_LISTINGS, i;
    char url[512], from[11], to[11], err[256];
    if (http == NULL)
        return;
    testenv_format_date(conf->first_day, from, sizeof(from));
    testenv_format_date(conf->first_day + conf->window, to, sizeof(to));
    for (i = 0; i < n; i++) {
        struct http_response resp;
        long left = left_ms(b);
        if (left == 0)
            break;
        snprintf(url, sizeof(url), "%s/v1/listings/%llu/availability?from=%s&to=%s", conf->url,
                 (unsigned long long)(conf->listing_base + i), from, to);
        (void)http_request(http, "GET", url, NULL, NULL, 0,
                           left < WARM_READ_MS ? left : WARM_READ_MS, &resp, err, sizeof(err));
        http_response_deinit(&resp);
    }
    if (i < n)
        fprintf(stderr,
                "calendar-stress: cache check: %s after reading %zu of %zu listings through "
                "calendard\n",
                stopped(b) ? "stopped by a signal" : "deadline hit", i, n);
    http_client_destroy(http);
}

static struct cache *
open_cache(const struct testenv *env, char *err, size_t errlen)
{
    struct cache_conf cc = {.timeout_ms = 500};
    cal_strlcpy(cc.servers, env->memcached_servers, sizeof(cc.servers));
    return cache_create(&cc, err, errlen);
}

/* Passes every 200 ms until one reads all, compares something and finds
 * nothing stale, within b (the pass under way when it ends finishes: a
 * pass is bounded by memcached's and the shards' own timeouts). Returns the
 * last pass's result, or -2 with err when a stop signal came before a pass
 * found memcached equal to SQL: then nothing was verified. */
static int
settle(const struct testenv *env, const struct stress_conf *conf, struct cache *cache,
       const struct bound *b, int64_t *mismatches, uint64_t *checked, char *err, size_t errlen)
{
    int rc;
    bool clean;
    struct timespec tick = {0, 200 * 1000000L};
    for (;;) {
        rc = one_pass(env, conf, cache, mismatches, checked, err, errlen);
        clean = rc == 0 && *mismatches == 0 && *checked > 0;
        /* A pass that could not read (memcached stalled or restarting by a
         * fault test, a shard connection lost) goes again in the same bound. */
        if (clean || left_ms(b) == 0)
            break;
        nanosleep(&tick, NULL);
        /* Nothing cached to compare: calendard's reads did not fill (its
         * memcached connection still failed after a fault test, say), or
         * CDC deleted what they did. Read through calendard again. */
        if (rc == 0 && *checked == 0)
            warm(conf, b);
    }
    if (!clean && stopped(b)) {
        snprintf(err, errlen,
                 "stopped by a signal before memcached was found equal to SQL (last pass: %s)",
                 rc != 0         ? "unread"
                 : *checked == 0 ? "nothing to compare"
                                 : "stale values");
        return -2;
    }
    if (!clean)
        fprintf(stderr,
                "calendar-stress: cache check: deadline of %u ms hit; the last pass decides: %s\n",
                b->wait_ms,
                rc != 0        ? "memcached or SQL unread"
                : *checked > 0 ? "stale values"
                               : "nothing cached to compare");
    return rc;
}

int
stress_cache_check(const struct testenv *env, const struct stress_conf *conf, unsigned wait_ms,
                   int64_t *mismatches, uint64_t *checked, char *err, size_t errlen)
{
    struct bound b = bound_start(wait_ms);
    struct cache *cache = open_cache(env, err, errlen);
    if (cache == NULL)
        return -1;
    warm(conf, &b);
    int rc = settle(env, conf, cache, &b, mismatches, checked, err, errlen);
    cache_destroy(cache);
    return rc;
}

/* Writes an older version of the first cached listing value of the run
 * that still holds what it held when read (CAS). Returns 1 when planted, 0
 * when nothing could be, -1 on a memcached error. */
static int
plant_stale(const struct stress_conf *conf, struct cache *cache, char *planted, size_t plantedlen,
            char *err, size_t errlen)
{
    struct cache_item *ci = cal_calloc(conf->nlistings, sizeof(*ci));
    char(*keys)[CACHEKEY_MAX] = cal_malloc(conf->nlistings * CACHEKEY_MAX);
    int rc = 0;
    for (size_t i = 0; i < conf->nlistings; i++) {
        ci[i].keylen = cachekey_listing(conf->listing_base + i, keys[i]);
        ci[i].key = keys[i];
    }
    if (cache_get_multi(cache, ci, conf->nlistings, err, errlen) != CAL_OK)
        rc = -1;
    for (size_t i = 0; i < conf->nlistings && rc == 0; i++) {
        struct listing l;
        char val[CACHEVAL_MAX];
        if (!ci[i].found || cacheval_is_lease(ci[i].value, ci[i].len) ||
            !cacheval_decode_listing(ci[i].value, ci[i].len, &l))
            continue;
        /* The value before the listing's last change (or a version it never had). */
        l.version = l.version > 1 ? l.version - 1 : l.version + 1;
        size_t len = cacheval_encode_listing(&l, val, sizeof(val));
        cal_status st = cache_cas(cache, ci[i].key, ci[i].keylen, val, len, STALE_TTL_S, ci[i].cas,
                                  err, errlen);
        if (st == CAL_OK) {
            snprintf(planted, plantedlen, "%.*s = %.*s", (int)ci[i].keylen, ci[i].key, (int)len,
                     val);
            rc = 1;
        } else if (st != CAL_ECONFLICT) {
            rc = -1;
        }
    }
    cache_results_free(ci, conf->nlistings);
    free(ci);
    free(keys);
    return rc;
}

/* Is key = value (as plant_stale wrote it into planted) still in memcached? */
static int
still_planted(struct cache *cache, const char *planted, char *err, size_t errlen)
{
    const char *eq = strstr(planted, " = ");
    struct cache_item it = {.key = planted, .keylen = (size_t)(eq - planted)};
    if (cache_get_multi(cache, &it, 1, err, errlen) != CAL_OK)
        return -1;
    int rc = it.found && strcmp(it.value, eq + 3) == 0;
    cache_results_free(&it, 1);
    return rc;
}

int
stress_cache_inject(const struct testenv *env, const struct stress_conf *conf, unsigned wait_ms,
                    char *err, size_t errlen)
{
    struct bound b = bound_start(wait_ms);
    struct cache *cache = open_cache(env, err, errlen);
    /* Past the invalidator's second delete (redelete_ms, 2 s by default)
     * of a change made just before the plant: a plant that outlives it
     * stays for the check. */
    struct timespec settle_time = {3, 0};
    char planted[CACHEKEY_MAX + CACHEVAL_MAX + 8];
    int64_t mismatches = 0;
    uint64_t checked = 0;
    int rc = -1, got = 0;
    if (cache == NULL)
        return -1;
    warm(conf, &b);
    if (settle(env, conf, cache, &b, &mismatches, &checked, err, errlen) != 0)
        goto out;
    if (mismatches != 0) {
        snprintf(err, errlen, "memcached still differs from SQL after %u ms: nothing to plant on",
                 wait_ms);
        goto out;
    }
    /* The pass found no stale value, but an invalidation of a change made
     * just before the load ended may still be on its way and delete the
     * planted value, and so may the invalidator's second delete of each key
     * (redelete_ms, 2 s by default, after the first): read through calendard
     * again and plant again (bounded) when one did. */
    for (int tries = 0; tries < 8 && got != 1 && left_ms(&b) > 0; tries++) {
        if (tries > 0)
            warm(conf, &b);
        got = plant_stale(conf, cache, planted, sizeof(planted), err, errlen);
        if (got == 1) {
            nanosleep(&settle_time, NULL);
            got = still_planted(cache, planted, err, errlen);
        }
        if (got < 0)
            goto out;
    }
    if (got != 1) {
        snprintf(err, errlen, "no cached listing value of the run kept a stale value%s",
                 stopped(&b)                    ? " (stopped by a signal)"
                 : got == 0 && left_ms(&b) == 0 ? " within the deadline"
                                                : "");
        goto out;
    }
    fprintf(stderr, "calendar-stress: injected stale_cache: %s\n", planted);
    rc = 0;
out:
    cache_destroy(cache);
    return rc;
}
