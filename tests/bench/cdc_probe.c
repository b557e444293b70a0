/* The end-to-end CDC probe and the invalidator histogram reader. */
#include "tests/bench/cdc_probe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cache.h"
#include "common/cachekey.h"
#include "common/db.h"
#include "common/util.h"
#include "tests/lib/http.h"

#define POLL_US 200 /* memcached polls this often: 0.2 ms resolution, negligible load */
#define HIST_MAX 32
#define HIST_NAME "calendar_invalidator_produce_to_invalidation_seconds_bucket{"

static const char SQL_WRITE_NIGHT[] =
    "INSERT INTO nights (listing_id, night, status, version, vbucket)"
    " VALUES (?, FROM_DAYS(?), 'blocked', 1, ?)"
    " ON DUPLICATE KEY UPDATE version = version + 1";

/* Cumulative bucket counts by upper bound (seconds; +Inf as a huge number). */
struct hist {
    size_t n;
    double le[HIST_MAX];
    double count[HIST_MAX];
};

#define LAUNCHERS 16 /* probes being written at once, at most */

struct pending;
struct cdc_probe;

/* A launcher writes probes k, k + LAUNCHERS, ... each when it falls due,
 * through its own connections: a write waits for its shard's commit (tens
 * of ms under load), and one launcher would start fewer probes than the
 * schedule exactly when the shards are busy. */
struct launcher {
    struct cdc_probe *probe;
    unsigned k;
    pthread_t thread;
    bool started;
    struct db *db[TESTENV_MAX_SHARDS];
    struct cache *cache;
};

/* Once started: the launchers write a probe every interval_ms and hand
 * each to the poller, which watches every pending key. Apart, so that a
 * write slow to commit never delays the detection of the probes before
 * it. */
struct cdc_probe {
    struct cdc_probe_conf conf;
    struct db *db[TESTENV_MAX_SHARDS]; /* the first probe's */
    struct cache *cache;               /* the poller's (and the first probe's) */
    struct launcher launchers[LAUNCHERS];
    pthread_t poller;
    bool poller_started;
    atomic_bool stop, launched_all;
    atomic_uint_fast64_t unlaunched; /* probes no launcher has taken yet */
    uint64_t start_us;               /* probe i (from 1) falls due at start_us + i * interval */
    pthread_mutex_t lock;            /* guards inbox and res.probes */
    struct pending *inbox;
    size_t ninbox, cap;
    struct cdc_probe_result res;
    struct hist before;
    bool have_before;
};

/* Fetches the invalidator's histogram; false when unreachable or absent. */
static bool
hist_fetch(const char *url, struct hist *h)
{
    struct http_client *client = http_client_create();
    struct http_response resp;
    char err[256];
    bool ok = false;
    memset(h, 0, sizeof(*h));
    http_response_init(&resp);
    if (client != NULL &&
        http_request(client, "GET", url, NULL, NULL, 0, 2000, &resp, err, sizeof(err)) == CAL_OK &&
        resp.status == 200) {
        for (const char *line = resp.body; line != NULL && *line != '\0';) {
            const char *le =
                strncmp(line, HIST_NAME, strlen(HIST_NAME)) == 0 ? strstr(line, "le=\"") : NULL;
            const char *close = le ? strchr(le, '}') : NULL;
            if (close != NULL && h->n < HIST_MAX) {
                double bound = strncmp(le + 4, "+Inf", 4) == 0 ? 1e30 : strtod(le + 4, NULL);
                double count = strtod(close + 1, NULL);
                size_t i = 0;
                while (i < h->n && h->le[i] != bound)
                    i++;
                if (i == h->n) {
                    h->le[h->n] = bound;
                    h->count[h->n++] = 0;
                }
                h->count[i] += count; /* summed over any other labels */
                ok = true;
            }
            line = strchr(line, '\n');
            line = line ? line + 1 : NULL;
        }
    }
    http_response_deinit(&resp);
    http_client_destroy(client);
    return ok;
}

/* histogram_quantile() of Prometheus: linear within the bucket; ms. */
static double
hist_quantile(const struct hist *a, const struct hist *b, double q, double *total)
{
    double prev_le = 0, prev_c = 0;
    *total = 0;
    if (b->n == 0)
        return -1;
    for (size_t i = 0; i < b->n; i++)
        if (b->le[i] >= 1e30)
            *total = b->count[i] - (i < a->n ? a->count[i] : 0);
    if (*total <= 0)
        return -1;
    double rank = q * *total;
    for (size_t i = 0; i < b->n; i++) {
        double c = b->count[i] - (i < a->n && a->le[i] == b->le[i] ? a->count[i] : 0);
        if (c >= rank) {
            if (b->le[i] >= 1e30)
                return prev_le * 1000; /* beyond the last bound: report it */
            double frac = c > prev_c ? (rank - prev_c) / (c - prev_c) : 1;
            return (prev_le + (b->le[i] - prev_le) * frac) * 1000;
        }
        prev_le = b->le[i];
        prev_c = c;
    }
    return -1;
}

/* A probe written, its key not seen gone yet. */
struct pending {
    uint64_t t0, deadline;
    size_t keylen;
    char key[CACHEKEY_MAX];
};

/* Sets the month key of listing_id, then writes one of its nights on the
 * owning shard. false when either failed (counted in res.failed, neither a
 * sample nor a loss). */
static bool
launch(struct cdc_probe *probe, struct db *const *dbs, struct cache *cache, uint64_t listing_id,
       struct pending *pend)
{
    const struct cdc_probe_conf *conf = &probe->conf;
    char err[256];
    pend->keylen = cachekey_month_of(listing_id, conf->night, pend->key);
    struct db *db = dbs[bench_routes_shard(conf->routes, listing_id)];
    struct db_val p[3] = {DB_INT_V(listing_id), DB_INT_V(conf->night + DB_TO_DAYS_EPOCH),
                          DB_INT_V(testenv_vbucket(listing_id))};
    if (cache_set(cache, pend->key, pend->keylen, "M1 1", 4, 600, err, sizeof(err)) != CAL_OK)
        return false;
    if (db_query(db, SQL_WRITE_NIGHT, p, 3, NULL, err, sizeof(err)) != CAL_OK)
        return false;
    /* The commit is durable and in the binlog once the autocommit INSERT returned. */
    pend->t0 = cal_mono_us();
    pend->deadline = pend->t0 + (uint64_t)conf->timeout_ms * 1000;
    return true;
}

/* One multi-get of the pending keys: a key gone is a sample, one past its
 * deadline a loss; both leave ps. Returns how many are still pending. */
static size_t
poll_pending(struct cdc_probe *probe, struct pending *ps, size_t n)
{
    struct cache_item items[n];
    char err[256];
    for (size_t i = 0; i < n; i++)
        items[i] = (struct cache_item){.key = ps[i].key, .keylen = ps[i].keylen};
    cal_status rc = cache_get_multi(probe->cache, items, n, err, sizeof(err));
    uint64_t now = cal_mono_us();
    size_t left = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == CAL_OK && !items[i].found) {
            bench_lat_add(&probe->res.lat, now - ps[i].t0);
            probe->res.running = true;
        } else if (now >= ps[i].deadline) {
            probe->res.timeouts++;
        } else {
            ps[left++] = ps[i];
        }
    }
    if (rc == CAL_OK)
        cache_results_free(items, n);
    return left;
}

static void
poll_pause(void)
{
    struct timespec ts = {.tv_nsec = POLL_US * 1000};
    nanosleep(&ts, NULL);
}

/* The first probe, alone and to its end. */
static void
probe_once(struct cdc_probe *probe, uint64_t listing_id)
{
    struct pending pend;
    if (!launch(probe, probe->db, probe->cache, listing_id, &pend)) {
        probe->res.failed++;
        return;
    }
    probe->res.probes++;
    while (poll_pending(probe, &pend, 1) > 0)
        poll_pause();
}

/* A launcher: probes start on a fixed schedule, one every interval_ms
 * over all launchers, whether or not earlier ones are still pending
 * (waiting for each before the next would sample a slow spell once however
 * long it lasts: coordinated omission). */
static void *
launch_main(void *arg)
{
    struct launcher *l = arg;
    struct cdc_probe *probe = l->probe;
    const struct cdc_probe_conf *conf = &probe->conf;
    uint64_t every = (uint64_t)(conf->interval_ms ? conf->interval_ms : 1) * 1000;
    /* Probe 0 ran alone at the start. */
    for (uint64_t i = 1 + l->k; i < conf->count && !atomic_load(&probe->stop); i += LAUNCHERS) {
        uint64_t due = probe->start_us + i * every, now = cal_mono_us();
        if (now < due) {
            cal_sleep_ms((unsigned)((due - now + 999) / 1000));
            if (atomic_load(&probe->stop))
                break;
        }
        /* Started a whole interval behind its time: the writes before it on
         * this launcher waited for their commits (counted, not hidden). */
        bool late = cal_mono_us() >= due + every;
        struct pending pend;
        bool ok = launch(probe, l->db, l->cache, conf->first_id + i, &pend);
        /* The poller may stop once the last probe is handed over. */
        bool last = atomic_fetch_sub(&probe->unlaunched, 1) == 1;
        if (!ok) {
            pthread_mutex_lock(&probe->lock);
            probe->res.failed++;
            pthread_mutex_unlock(&probe->lock);
            if (last)
                atomic_store(&probe->launched_all, true);
            continue;
        }
        pthread_mutex_lock(&probe->lock);
        probe->res.late += late;
        if (probe->ninbox == probe->cap) {
            probe->cap = probe->cap ? 2 * probe->cap : 64;
            probe->inbox = cal_realloc(probe->inbox, probe->cap * sizeof(*probe->inbox));
        }
        probe->inbox[probe->ninbox++] = pend;
        probe->res.probes++;
        pthread_mutex_unlock(&probe->lock);
        if (last)
            atomic_store(&probe->launched_all, true);
    }
    return NULL;
}

/* The poller: every pending key, one multi-get every 0.2 ms, until the
 * launcher is done and every probe it made is seen to its end. */
static void *
poll_main(void *arg)
{
    struct cdc_probe *probe = arg;
    struct pending *ps = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        bool last = atomic_load(&probe->launched_all);
        pthread_mutex_lock(&probe->lock);
        if (n + probe->ninbox > cap) {
            cap = 2 * (n + probe->ninbox);
            ps = cal_realloc(ps, cap * sizeof(*ps));
        }
        memcpy(ps + n, probe->inbox, probe->ninbox * sizeof(*ps));
        n += probe->ninbox;
        probe->ninbox = 0;
        pthread_mutex_unlock(&probe->lock);
        if (n > 0)
            n = poll_pending(probe, ps, n);
        else if (last)
            break; /* read after launched_all: nothing more comes */
        poll_pause();
    }
    free(ps);
    return NULL;
}

struct cdc_probe *
cdc_probe_start(const struct cdc_probe_conf *conf, char *err, size_t errlen)
{
    struct cdc_probe *probe = cal_calloc(1, sizeof(*probe));
    struct cache_conf cc = {.timeout_ms = 1000};
    probe->conf = *conf;
    atomic_init(&probe->stop, false);
    atomic_init(&probe->launched_all, false);
    atomic_init(&probe->unlaunched, conf->count > 1 ? conf->count - 1 : 0);
    bench_lat_init(&probe->res.lat, conf->count);
    probe->res.hist_count = probe->res.hist_p50_ms = probe->res.hist_p99_ms = -1;
    cal_strlcpy(cc.servers, conf->env->memcached_servers, sizeof(cc.servers));
    pthread_mutex_init(&probe->lock, NULL);
    if ((probe->cache = cache_create(&cc, err, errlen)) == NULL)
        goto fail;
    for (size_t i = 0; i < conf->env->nshards; i++)
        if ((probe->db[i] = testenv_connect_shard(conf->env, i, err, errlen)) == NULL)
            goto fail;
    for (unsigned k = 0; k < LAUNCHERS && conf->count > 1; k++) {
        struct launcher *l = &probe->launchers[k];
        l->probe = probe;
        l->k = k;
        if ((l->cache = cache_create(&cc, err, errlen)) == NULL)
            goto fail;
        for (size_t i = 0; i < conf->env->nshards; i++)
            if ((l->db[i] = testenv_connect_shard(conf->env, i, err, errlen)) == NULL)
                goto fail;
    }
    if (conf->metrics_url != NULL && conf->metrics_url[0] != '\0')
        probe->have_before = hist_fetch(conf->metrics_url, &probe->before);
    if (conf->count == 0)
        return probe;
    /* The first one synchronously: the run's bookings start with the
     * pipeline's state known. One that took too long is lost, like any
     * other, and probing goes on (a slow spell must not end the
     * measurement); without any deletion in the run, running stays false. */
    probe_once(probe, conf->first_id);
    probe->start_us = cal_mono_us();
    if (conf->count > 1 && pthread_create(&probe->poller, NULL, poll_main, probe) == 0) {
        probe->poller_started = true;
        for (unsigned k = 0; k < LAUNCHERS; k++) {
            struct launcher *l = &probe->launchers[k];
            l->started = pthread_create(&l->thread, NULL, launch_main, l) == 0;
        }
    }
    return probe;
fail:
    cdc_probe_stop(probe, NULL);
    return NULL;
}

void
cdc_probe_stop(struct cdc_probe *probe, struct cdc_probe_result *res)
{
    if (probe == NULL)
        return;
    atomic_store(&probe->stop, true);
    for (unsigned k = 0; k < LAUNCHERS; k++)
        if (probe->launchers[k].started)
            pthread_join(probe->launchers[k].thread, NULL);
    atomic_store(&probe->launched_all, true);
    if (probe->poller_started)
        pthread_join(probe->poller, NULL);
    if (probe->have_before) {
        struct hist after;
        if (hist_fetch(probe->conf.metrics_url, &after)) {
            double total = 0;
            probe->res.hist_p50_ms = hist_quantile(&probe->before, &after, 0.50, &total);
            probe->res.hist_p99_ms = hist_quantile(&probe->before, &after, 0.99, &total);
            probe->res.hist_count = total;
        }
    }
    for (size_t i = 0; i < TESTENV_MAX_SHARDS; i++)
        db_close(probe->db[i]);
    cache_destroy(probe->cache);
    for (unsigned k = 0; k < LAUNCHERS; k++) {
        for (size_t i = 0; i < TESTENV_MAX_SHARDS; i++)
            db_close(probe->launchers[k].db[i]);
        cache_destroy(probe->launchers[k].cache);
    }
    pthread_mutex_destroy(&probe->lock);
    free(probe->inbox);
    if (res != NULL)
        *res = probe->res; /* the samples move to the caller */
    else
        bench_lat_deinit(&probe->res.lat);
    free(probe);
}
