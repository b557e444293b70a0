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

struct cdc_probe {
    struct cdc_probe_conf conf;
    struct db *db[TESTENV_MAX_SHARDS];
    struct cache *cache;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    uint64_t next; /* index of the next probe listing */
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

/* One probe: a sample when the key disappeared within the timeout, else a
 * timeout (a write that failed counts as neither). */
static void
probe_once(struct cdc_probe *probe, uint64_t listing_id)
{
    const struct cdc_probe_conf *conf = &probe->conf;
    char key[CACHEKEY_MAX], err[256];
    size_t keylen = cachekey_month_of(listing_id, conf->night, key);
    struct db *db = probe->db[bench_routes_shard(conf->routes, listing_id)];
    struct db_val p[3] = {DB_INT_V(listing_id), DB_INT_V(conf->night + DB_TO_DAYS_EPOCH),
                          DB_INT_V(testenv_vbucket(listing_id))};
    if (cache_set(probe->cache, key, keylen, "M1 1", 4, 600, err, sizeof(err)) != CAL_OK)
        return;
    if (db_query(db, SQL_WRITE_NIGHT, p, 3, NULL, err, sizeof(err)) != CAL_OK)
        return;
    /* The commit is durable and in the binlog once the autocommit INSERT returned. */
    uint64_t t0 = cal_mono_us(), deadline = t0 + (uint64_t)conf->timeout_ms * 1000;
    probe->res.probes++;
    for (;;) {
        struct cache_item item = {.key = key, .keylen = keylen};
        cal_status rc = cache_get_multi(probe->cache, &item, 1, err, sizeof(err));
        uint64_t now = cal_mono_us();
        bool gone = rc == CAL_OK && !item.found;
        cache_results_free(&item, 1);
        if (gone) {
            bench_lat_add(&probe->res.lat, now - t0);
            probe->res.running = true;
            return;
        }
        if (now >= deadline) {
            probe->res.timeouts++;
            return;
        }
        struct timespec ts = {.tv_nsec = POLL_US * 1000};
        nanosleep(&ts, NULL);
    }
}

static void *
probe_main(void *arg)
{
    struct cdc_probe *probe = arg;
    while (!atomic_load(&probe->stop) && probe->next < probe->conf.count) {
        probe_once(probe, probe->conf.first_id + probe->next++);
        cal_sleep_ms(probe->conf.interval_ms);
    }
    return NULL;
}

struct cdc_probe *
cdc_probe_start(const struct cdc_probe_conf *conf, char *err, size_t errlen)
{
    struct cdc_probe *probe = cal_calloc(1, sizeof(*probe));
    struct cache_conf cc = {.timeout_ms = 1000};
    probe->conf = *conf;
    atomic_init(&probe->stop, false);
    bench_lat_init(&probe->res.lat, conf->count);
    probe->res.hist_count = probe->res.hist_p50_ms = probe->res.hist_p99_ms = -1;
    cal_strlcpy(cc.servers, conf->env->memcached_servers, sizeof(cc.servers));
    if ((probe->cache = cache_create(&cc, err, errlen)) == NULL)
        goto fail;
    for (size_t i = 0; i < conf->env->nshards; i++)
        if ((probe->db[i] = testenv_connect_shard(conf->env, i, err, errlen)) == NULL)
            goto fail;
    if (conf->metrics_url != NULL && conf->metrics_url[0] != '\0')
        probe->have_before = hist_fetch(conf->metrics_url, &probe->before);
    if (conf->count == 0)
        return probe;
    /* The first one synchronously: the run's bookings start with the
     * pipeline's state known. One that took too long is lost, like any
     * other, and probing goes on (a slow spell must not end the
     * measurement); without any deletion in the run, running stays false. */
    probe_once(probe, conf->first_id + probe->next++);
    if (pthread_create(&probe->thread, NULL, probe_main, probe) == 0)
        probe->thread_started = true;
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
    if (probe->thread_started)
        pthread_join(probe->thread, NULL);
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
    if (res != NULL)
        *res = probe->res; /* the samples move to the caller */
    else
        bench_lat_deinit(&probe->res.lat);
    free(probe);
}
