/* End-to-end tests of the CDC path on the real stack: a change made with SQL
 * directly on a shard (not through calendard) must reach the cache through
 * relay, Kafka and invalidator; killing the relay and the invalidator with
 * SIGKILL mid-stream loses no invalidation; a stalled memcached leaves
 * reads correct. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "calendard/cacheval.h"
#include "common/cache.h"
#include "common/cachekey.h"
#include "common/util.h"
#include "tests/lib/http.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

static struct testenv env;
static struct http_client *h;

static void
setup(void)
{
    char err[256];
    ck_assert_msg(testenv_load(&env, NULL, err, sizeof(err)) == CAL_OK, "%s", err);
    http_global_init();
    h = http_client_create();
}

static long api(struct http_response *r, const char *method, const char *body, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static long
api(struct http_response *r, const char *method, const char *body, const char *fmt, ...)
{
    char path[512], url[800], err[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    snprintf(url, sizeof(url), "%s%s", env.calendard_url, path);
    http_response_init(r);
    ck_assert_msg(http_request(h, method, url, NULL, body, body ? strlen(body) : 0, 15000, r, err,
                               sizeof(err)) == CAL_OK,
                  "%s %s: %s", method, url, err);
    return r->status;
}

static uint64_t
new_listing(void)
{
    struct http_response r;
    uint64_t id = testenv_random48();
    ck_assert_int_eq(api(&r, "PUT",
                         "{\"default_price\":1000,\"currency\":\"USD\",\"min_nights\":1,"
                         "\"max_nights\":9}",
                         "/v1/listings/%llu", (unsigned long long)id),
                     201);
    http_response_deinit(&r);
    return id;
}

/* Status of the night `day` in a read of [from, from + 5) through calendard. */
static void
night_status(uint64_t id, int64_t from, int64_t day, char *out, size_t outlen)
{
    struct http_response r;
    char d1[11], d2[11];
    testenv_format_date(from, d1, sizeof(d1));
    testenv_format_date(from + 5, d2, sizeof(d2));
    ck_assert_int_eq(api(&r, "GET", NULL, "/v1/listings/%llu/availability?from=%s&to=%s",
                         (unsigned long long)id, d1, d2),
                     200);
    json_t *doc = http_response_json(&r);
    json_t *n = json_array_get(json_object_get(doc, "nights"), (size_t)(day - from));
    snprintf(out, outlen, "%s", json_string_value(json_object_get(n, "status")));
    json_decref(doc);
    http_response_deinit(&r);
}

/* One memcached connection for the test's process. */
static struct cache *
test_cache(void)
{
    static struct cache *c;
    char err[256];
    if (c == NULL) {
        struct cache_conf conf = {.timeout_ms = 1000};
        cal_strlcpy(conf.servers, env.memcached_servers, sizeof(conf.servers));
        c = cache_create(&conf, err, sizeof(err));
        ck_assert_msg(c != NULL, "%s", err);
    }
    return c;
}

/* The cached value of key: len 0 when absent or a lease (a fill in
 * progress), else the value, truncated to size. */
static size_t
cached_key(const char *key, char *out, size_t size)
{
    char err[256];
    struct cache_item it = {.key = key, .keylen = strlen(key)};
    ck_assert_msg(cache_get_multi(test_cache(), &it, 1, err, sizeof(err)) == CAL_OK, "get %s: %s",
                  key, err);
    size_t n = 0;
    if (it.found && !cacheval_is_lease(it.value, it.len)) {
        n = it.len < size ? it.len : size;
        memcpy(out, it.value, n);
    }
    cache_results_free(&it, 1);
    return n;
}

/* The cached value of the month key of (id, day), as cached_key(). */
static size_t
cached_month(uint64_t id, int64_t day, char *out, size_t size)
{
    char key[CACHEKEY_MAX];
    cachekey_month_of(id, (int32_t)day, key);
    return cached_key(key, out, size);
}

/* Reads [from, from + 5) through calendard until the month of day is
 * cached (a read right after a write does not fill what the write is still
 * invalidating). */
static void
read_until_cached(uint64_t id, int64_t from, int64_t day)
{
    char st[32], v[8];
    for (int tries = 1;; tries++) {
        night_status(id, from, day, st, sizeof(st));
        if (cached_month(id, day, v, sizeof(v)) > 0)
            return;
        ck_assert_msg(tries < 50, "listing %llu: its month never cached after %d reads",
                      (unsigned long long)id, tries);
        usleep(100000);
    }
}

/* Waits until key no longer holds old (oldlen bytes; absent counts): ms
 * waited, or -1 after limit_ms. */
static long
wait_key_changed(const char *key, const char *old, size_t oldlen, long limit_ms)
{
    char v[4096];
    uint64_t start = cal_mono_us();
    for (;;) {
        size_t n = cached_key(key, v, sizeof(v));
        long ms = (long)((cal_mono_us() - start) / 1000);
        if (n != oldlen || memcmp(v, old, n) != 0)
            return ms;
        if (ms > limit_ms)
            return -1;
        usleep(5000);
    }
}

/* wait_key_changed() of the month key of (id, day). */
static long
wait_month_changed(uint64_t id, int64_t day, const char *old, size_t oldlen, long limit_ms)
{
    char key[CACHEKEY_MAX];
    cachekey_month_of(id, (int32_t)day, key);
    return wait_key_changed(key, old, oldlen, limit_ms);
}

/* Index into SHARD_DSNS of the shard that owns the listing now. */
static size_t
owner_index(uint64_t id)
{
    char err[256];
    unsigned vb = testenv_vbucket(id);
    for (size_t s = 0; s < env.nshards; s++) {
        struct db *db = testenv_connect_shard(&env, s, err, sizeof(err));
        ck_assert_msg(db != NULL, "%s", err);
        struct db_stmt *st;
        struct db_val p[1] = {DB_INT_V(vb)}, c[1];
        ck_assert(db_query(db, "SELECT epoch FROM vbucket_owner WHERE vbucket = ?", p, 1, &st, err,
                           sizeof(err)) == CAL_OK);
        int found = db_fetch(st, c, 1, err, sizeof(err));
        while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
            ;
        db_close(db);
        if (found == 1)
            return s;
    }
    ck_abort_msg("no shard owns listing %llu", (unsigned long long)id);
    return 0;
}

static struct db *
owner_db(uint64_t id)
{
    char err[256];
    struct db *db = testenv_connect_shard(&env, owner_index(id), err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    return db;
}

/* A host-side change made behind calendard's back, the way another writer
 * (a batch job, an operator) would. */
static void
block_with_sql(struct db *db, uint64_t id, int64_t day)
{
    char err[256];
    struct db_val p[3] = {DB_INT_V(id), DB_INT_V(day + DB_TO_DAYS_EPOCH),
                          DB_INT_V(testenv_vbucket(id))};
    ck_assert_msg(db_query(db,
                           "INSERT INTO nights (listing_id, night, status, version, vbucket)"
                           " VALUES (?, FROM_DAYS(?), 'blocked', 1, ?)",
                           p, 3, NULL, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    struct db_val q[1] = {DB_INT_V(id)};
    ck_assert(db_query(db, "UPDATE listings SET version = version + 1 WHERE listing_id = ?", q, 1,
                       NULL, err, sizeof(err)) == CAL_OK);
}

/* Polls reads through calendard until the night shows `want`; ms waited or -1. */
static long
wait_status(uint64_t id, int64_t from, int64_t day, const char *want, long limit_ms)
{
    char got[32];
    struct timespec t0, t1, tick = {0, 5 * 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        night_status(id, from, day, got, sizeof(got));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (strcmp(got, want) == 0)
            return ms;
        if (ms > limit_ms)
            return -1;
        nanosleep(&tick, NULL);
    }
}

START_TEST(direct_sql_change_reaches_the_cache)
{
    setup();
    ck_assert_msg(getenv("STACK_ENV") != NULL, "STACK_ENV is not set");
    uint64_t id = new_listing();
    int64_t from = testenv_today() + 70;
    char st[32], old[4096];
    read_until_cached(id, from, from + 2);
    size_t oldlen = cached_month(id, from + 2, old, sizeof(old));
    night_status(id, from, from + 2, st, sizeof(st)); /* served from it */
    ck_assert_str_eq(st, "available");
    struct db *db = owner_db(id);
    block_with_sql(db, id, from + 2);
    db_close(db);
    /* calendard made no write: only CDC can change the cached month. */
    long ms = wait_month_changed(id, from + 2, old, oldlen, 30000);
    ck_assert_msg(ms >= 0, "the month cached before a direct SQL change was never invalidated");
    ck_assert_msg(wait_status(id, from, from + 2, "blocked", 30000) >= 0,
                  "a direct SQL change never reached the availability read through calendard");
    fprintf(stderr, "cdc e2e: SQL commit to the cached month's invalidation in %ld ms\n", ms);
    http_client_destroy(h);
}
END_TEST

/* MariaDB signals the binlog (and so the relay) before the commit is visible
 * to readers on the shard: a read that missed right after the invalidator's
 * delete can still see the old row and cache it. The invalidator deletes
 * every key again [invalidator] redelete_ms after its first delete (the
 * stack's default, 2000). Here the stale fill is the month's old value set
 * back once the first delete came (the month key, since only the nights
 * change names it: the listings change deletes the listing key after it). */
START_TEST(a_stale_fill_after_an_sql_change_is_deleted_again)
{
    setup();
    uint64_t id = new_listing();
    int64_t from = testenv_today() + 85;
    char key[CACHEKEY_MAX], err[256];
    static char old[4096];
    read_until_cached(id, from, from + 2);
    cachekey_month_of(id, (int32_t)(from + 2), key);
    size_t oldlen = cached_key(key, old, sizeof(old));
    ck_assert_uint_gt(oldlen, 0);
    struct db *db = owner_db(id);
    block_with_sql(db, id, from + 2);
    db_close(db);
    ck_assert_msg(wait_key_changed(key, old, oldlen, 30000) >= 0,
                  "%s was never invalidated after a direct SQL change", key);
    ck_assert_msg(cache_set(test_cache(), key, strlen(key), old, oldlen, 3600, err, sizeof(err)) ==
                      CAL_OK,
                  "set %s: %s", key, err);
    /* The second delete comes redelete_ms after the first: 30 s is ample. */
    long ms = wait_key_changed(key, old, oldlen, 30000);
    ck_assert_msg(ms >= 0,
                  "%s, filled with its value from before the change after the invalidator's "
                  "delete, is still cached 30 s later: nothing deletes it before its TTL",
                  key);
    fprintf(stderr, "cdc e2e: a stale fill after the first delete was deleted again %ld ms later\n",
            ms);
    ck_assert_msg(wait_status(id, from, from + 2, "blocked", 30000) >= 0,
                  "reads through calendard never showed the SQL change");
    http_client_destroy(h);
}
END_TEST

static void
stack_restart(const char *name)
{
    char out[4096];
    char *argv[] = {"tests/stack/stack.sh", "restart", (char *)name, "--dir", env.stack_dir, NULL};
    int rc = proc_run(argv, out, sizeof(out), 120);
    ck_assert_msg(rc == 0, "stack.sh restart %s: exit %d\n%s", name, rc, out);
}

static pid_t
pid_of(const char *name)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/run/%s.pid", env.stack_dir, name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no PID file %s", path);
    long pid = 0;
    ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    return (pid_t)pid;
}

/* SIGKILL every relay and the invalidator while direct SQL changes stream,
 * keep changing while they are dead, restart them: every change must still
 * reach the cache (relay checkpoints only what Kafka acknowledged; the
 * invalidator stores only offsets memcached acted on). */
START_TEST(sigkill_relay_and_invalidator_loses_nothing)
{
    setup();
    enum { N = 16 };
    uint64_t ids[N];
    int64_t from = testenv_today() + 75;
    char st[32], name[48];
    static char old[N][4096];
    size_t oldlen[N];
    for (int i = 0; i < N; i++) {
        ids[i] = new_listing();
        read_until_cached(ids[i], from, from + 1);
        oldlen[i] = cached_month(ids[i], from + 1, old[i], sizeof(old[i]));
        night_status(ids[i], from, from + 1, st, sizeof(st));
        ck_assert_str_eq(st, "available");
    }
    for (int i = 0; i < N / 2; i++) {
        struct db *db = owner_db(ids[i]);
        block_with_sql(db, ids[i], from + 1);
        db_close(db);
    }
    /* Mid-stream: the first half may or may not have been relayed yet. */
    for (size_t s = 0; s < env.nshards; s++) {
        snprintf(name, sizeof(name), "cdc-relay-shard%zu", s);
        ck_assert_int_eq(kill(pid_of(name), SIGKILL), 0);
    }
    ck_assert_int_eq(kill(pid_of("invalidator"), SIGKILL), 0);
    for (int i = N / 2; i < N; i++) {
        struct db *db = owner_db(ids[i]);
        block_with_sql(db, ids[i], from + 1);
        db_close(db);
    }
    for (size_t s = 0; s < env.nshards; s++) {
        snprintf(name, sizeof(name), "cdc-relay-shard%zu", s);
        stack_restart(name);
    }
    stack_restart("invalidator");
    for (int i = 0; i < N; i++) {
        /* Changed by SQL behind calendard: only CDC deletes the month. */
        ck_assert_msg(wait_month_changed(ids[i], from + 1, old[i], oldlen[i], 30000) >= 0,
                      "listing %d: the month cached before the change was never invalidated", i);
        long ms = wait_status(ids[i], from, from + 1, "blocked", 30000);
        ck_assert_msg(ms >= 0,
                      "listing %d: the change made around the kill never reached the "
                      "cache",
                      i);
    }
    http_client_destroy(h);
}
END_TEST

/* memcached stalled (SIGSTOP): reads and writes go on against the shards and
 * stay correct; once it is back, nothing stale survives. */
START_TEST(stalled_memcached_keeps_reads_correct)
{
    setup();
    uint64_t id = new_listing();
    int64_t from = testenv_today() + 80;
    char st[32], body[256], d1[11], d2[11];
    char old[4096];
    read_until_cached(id, from, from + 3);
    size_t oldlen = cached_month(id, from + 3, old, sizeof(old));
    night_status(id, from, from + 3, st, sizeof(st)); /* cached: available */
    ck_assert_str_eq(st, "available");
    pid_t mc = pid_of("memcached");
    ck_assert(proc_stop(mc)); /* SIGCONT when this test ends, whatever happens */
    struct http_response r;
    testenv_format_date(from + 3, d1, sizeof(d1));
    testenv_format_date(from + 4, d2, sizeof(d2));
    snprintf(body, sizeof(body), "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}", d1, d2);
    long code = api(&r, "POST", body, "/v1/listings/%llu/calendar", (unsigned long long)id);
    http_response_deinit(&r);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    night_status(id, from, from + 3, st, sizeof(st));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    kill(mc, SIGCONT);
    ck_assert_int_eq(code, 200);
    ck_assert_str_eq(st, "blocked"); /* read from the shard, not the stale cache */
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    /* Normally ~200 ms; the bound only tells "not stuck on the cache" from
     * a slow machine. */
    ck_assert_msg(ms < 5000, "a read with memcached stalled took %ld ms", ms);
    /* Back: the entry calendard could not delete goes (its delete, retried,
     * or CDC's), and reads stay fresh. */
    ck_assert_msg(wait_month_changed(id, from + 3, old, oldlen, 10000) >= 0,
                  "the month cached before the block is still there after memcached came back");
    ck_assert_msg(wait_status(id, from, from + 3, "blocked", 10000) >= 0, "stale after recovery");
    for (int i = 0; i < 20; i++) {
        night_status(id, from, from + 3, st, sizeof(st));
        ck_assert_str_eq(st, "blocked");
    }
    http_client_destroy(h);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("cdc_e2e");
    TCase *tc = tcase_create("cdc_e2e");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, direct_sql_change_reaches_the_cache);
    tcase_add_test(tc, sigkill_relay_and_invalidator_loses_nothing);
    tcase_add_test(tc, stalled_memcached_keeps_reads_correct);
    suite_add_tcase(s, tc);
    tc = tcase_create("a_stale_fill_after_an_sql_change_is_deleted_again");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_stale_fill_after_an_sql_change_is_deleted_again);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
