/* Integration tests of calendar-cdc-invalidator running in the stack: change
 * events produced to Kafka (relay format, Debezium with schemas.enable via
 * kcat) delete exactly their cache keys in the stack's memcached, and no
 * invalidation is lost while the invalidator is killed and restarted.
 * Needs STACK_ENV with MEMCACHED_SERVERS, KAFKA_BOOTSTRAP and STACK_DIR, and
 * the invalidator's PID in STACK_DIR/run/invalidator.pid. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cache.h"
#include "common/cachekey.h"
#include "common/date.h"
#include "common/util.h"
#include "cdc/invalidator.h"
#include "cdc/invstats.h"
#include "cdc/kconsumer.h"
#include "tests/lib/http.h"
#include "tests/lib/kafka_produce.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

/* Match the invalidator's default subscription ^calendar\..*\.(listings|nights)$
 * without touching the relays' own topics. */
#define TOPIC_NIGHTS "calendar.invtest.nights"
#define TOPIC_LISTINGS "calendar.invtest.listings"
/* A new topic is found within [kafka] metadata_refresh_ms (5 s); a restarted
 * member may wait for the group to drop its dead predecessor (session
 * timeout). Both fit well inside these bounds. */
#define DELETE_TIMEOUT_MS 30000
#define RESTART_DELETE_TIMEOUT_MS 90000

struct stack {
    char memcached[256];
    char kafka[512];
    char dir[512];
    char stack_sh[512];
};

static struct stack stack;

/* Value of KEY in a sourceable KEY=VALUE file (quotes and "export " allowed). */
static bool
env_value(const char *path, const char *key, char *out, size_t outlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[2048];
    bool found = false;
    size_t klen = strlen(key);
    for (int n = 0; n < 10000 && fgets(line, sizeof(line), f) != NULL; n++) {
        char *p = line;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        if (strncmp(p, key, klen) != 0 || p[klen] != '=')
            continue;
        p += klen + 1;
        p[strcspn(p, "\r\n")] = '\0';
        size_t len = strlen(p);
        if (len >= 2 && (p[0] == '"' || p[0] == '\'') && p[len - 1] == p[0]) {
            p[len - 1] = '\0';
            p++;
        }
        cal_strlcpy(out, p, outlen);
        found = true;
    }
    fclose(f);
    return found;
}

static void
load_stack(void)
{
    const char *path = getenv("STACK_ENV");
    if (path == NULL || path[0] == '\0')
        path = "var/stack.env";
    ck_assert_msg(access(path, R_OK) == 0, "cannot read the stack env file %s (set STACK_ENV)",
                  path);
    ck_assert_msg(env_value(path, "MEMCACHED_SERVERS", stack.memcached, sizeof(stack.memcached)) &&
                      stack.memcached[0] != '\0',
                  "%s has no MEMCACHED_SERVERS", path);
    ck_assert_msg(env_value(path, "KAFKA_BOOTSTRAP", stack.kafka, sizeof(stack.kafka)) &&
                      stack.kafka[0] != '\0',
                  "%s has no KAFKA_BOOTSTRAP: the stack runs no Kafka broker, so the "
                  "invalidator cannot be tested (this test fails rather than pass vacuously)",
                  path);
    ck_assert_msg(env_value(path, "STACK_DIR", stack.dir, sizeof(stack.dir)) &&
                      stack.dir[0] != '\0',
                  "%s has no STACK_DIR", path);
    if (!env_value(path, "STACK_SH", stack.stack_sh, sizeof(stack.stack_sh)) ||
        stack.stack_sh[0] == '\0')
        cal_strlcpy(stack.stack_sh, "tests/stack/stack.sh", sizeof(stack.stack_sh));
}

static pid_t
invalidator_pid(void)
{
    char path[600], buf[32] = "";
    snprintf(path, sizeof(path), "%s/run/invalidator.pid", stack.dir);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s missing: the stack does not run calendar-cdc-invalidator", path);
    char *line = fgets(buf, sizeof(buf), f);
    fclose(f);
    long pid = line != NULL ? strtol(buf, NULL, 10) : 0;
    ck_assert_msg(pid > 1, "%s holds no PID", path);
    return (pid_t)pid;
}

static bool
pid_alive(pid_t pid)
{
    char state = proc_state(pid);
    return state != 0 && state != 'Z'; /* a zombie is gone */
}

static void
assert_invalidator_running(void)
{
    pid_t pid = invalidator_pid();
    ck_assert_msg(pid_alive(pid), "calendar-cdc-invalidator (pid %d) is not running", (int)pid);
}

static struct cache *
make_cache(void)
{
    struct cache_conf conf = {.timeout_ms = 500};
    char err[256];
    cal_strlcpy(conf.servers, stack.memcached, sizeof(conf.servers));
    struct cache *c = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

static struct kafka_produce *
make_producer(void)
{
    char err[512];
    struct kafka_produce *kp = kafka_produce_create(stack.kafka, err, sizeof(err));
    ck_assert_msg(kp != NULL, "%s", err);
    return kp;
}

static void
set_key(struct cache *c, const char *key)
{
    char err[256];
    ck_assert_msg(cache_set(c, key, strlen(key), "v", 1, 600, err, sizeof(err)) == CAL_OK,
                  "set %s: %s", key, err);
}

static bool
key_present(struct cache *c, const char *key)
{
    struct cache_item it = {.key = key, .keylen = strlen(key)};
    char err[256];
    ck_assert_msg(cache_get_multi(c, &it, 1, err, sizeof(err)) == CAL_OK, "get %s: %s", key, err);
    bool found = it.found;
    cache_results_free(&it, 1);
    return found;
}

/* Waits until none of keys is present; returns the ms it took, -1 on timeout. */
static long
wait_deleted(struct cache *c, char (*keys)[CACHEKEY_MAX], size_t n, unsigned timeout_ms)
{
    uint64_t start = cal_mono_us(), deadline = start + (uint64_t)timeout_ms * 1000;
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++)
            if (key_present(c, keys[i]))
                left++;
        if (left == 0)
            return (long)((cal_mono_us() - start) / 1000);
        if (cal_mono_us() >= deadline)
            return -1;
        cal_sleep_ms(20);
    }
}

static void
produce(struct kafka_produce *kp, const char *topic, uint64_t listing_id, const char *json)
{
    char key[32], err[512];
    snprintf(key, sizeof(key), "{\"listing_id\":%llu}", (unsigned long long)listing_id);
    ck_assert_msg(kafka_produce_send(kp, topic, key, json, strlen(json), 15000, err, sizeof(err)) ==
                      CAL_OK,
                  "%s", err);
}

/* The relay's format: plain envelope, DATE as days since 1970-01-01. */
static void
relay_nights_event(char *buf, size_t size, uint64_t id, int32_t before, int32_t after)
{
    snprintf(buf, size,
             "{\"before\":{\"listing_id\":%llu,\"night\":%d,\"status\":\"available\","
             "\"reservation_id\":null,\"price\":null,\"version\":1,\"vbucket\":1},"
             "\"after\":{\"listing_id\":%llu,\"night\":%d,\"status\":\"booked\","
             "\"reservation_id\":5,\"price\":null,\"version\":2,\"vbucket\":1},"
             "\"source\":{\"db\":\"calendar_shard0\",\"table\":\"nights\",\"ts_ms\":%llu},"
             "\"op\":\"u\",\"ts_ms\":%llu}",
             (unsigned long long)id, (int)before, (unsigned long long)id, (int)after,
             (unsigned long long)cal_now_ms(), (unsigned long long)cal_now_ms());
}

/* Debezium's JSON converter with schemas.enable=true; listing_id as a
 * string, as BIGINT UNSIGNED comes in some modes. One line (kcat -P splits
 * messages on newlines). */
static void
debezium_listing_event(char *buf, size_t size, uint64_t id)
{
    snprintf(
        buf, size,
        "{\"schema\":{\"type\":\"struct\",\"fields\":[{\"type\":\"struct\",\"fields\":["
        "{\"type\":\"string\",\"optional\":false,\"field\":\"listing_id\"},"
        "{\"type\":\"int64\",\"optional\":false,\"field\":\"version\"}],"
        "\"optional\":true,\"name\":\"calendar.invtest.listings.Value\",\"field\":\"after\"}],"
        "\"optional\":false,\"name\":\"calendar.invtest.listings.Envelope\"},"
        "\"payload\":{\"before\":null,\"after\":{\"listing_id\":\"%llu\",\"version\":8},"
        "\"source\":{\"version\":\"2.5.0.Final\",\"connector\":\"mysql\",\"name\":\"calendar\","
        "\"ts_ms\":%llu,\"db\":\"calendar_shard0\",\"table\":\"listings\",\"server_id\":1,"
        "\"file\":\"mysql-bin.000001\",\"pos\":4,\"row\":0},\"op\":\"u\",\"ts_ms\":%llu,"
        "\"transaction\":null}}",
        (unsigned long long)id, (unsigned long long)cal_now_ms(), (unsigned long long)cal_now_ms());
}

/* Runs `kcat -P -b BOOTSTRAP -t TOPIC -k KEY` with line on stdin; returns
 * its exit status (-1: could not run or timed out, then killed). */
static int
kcat_produce(const char *topic, const char *key, const char *line)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[0], 0);
        close(fds[0]);
        close(fds[1]);
        execlp("kcat", "kcat", "-P", "-b", stack.kafka, "-t", topic, "-k", key, "-X",
               "message.timeout.ms=15000", (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    signal(SIGPIPE, SIG_IGN);
    size_t len = strlen(line);
    bool ok = write(fds[1], line, len) == (ssize_t)len && write(fds[1], "\n", 1) == 1;
    close(fds[1]);
    int status = 0;
    for (int i = 0; i < 300; i++) { /* 30 s */
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return ok && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        cal_sleep_ms(100);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Runs the stack script's restart of the invalidator; returns its status. */
static int
restart_invalidator(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execl(stack.stack_sh, stack.stack_sh, "restart", "invalidator", "--dir", stack.dir,
              (char *)NULL);
        _exit(127);
    }
    int status = 0;
    for (int i = 0; i < 1200; i++) { /* 120 s */
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        cal_sleep_ms(100);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static struct kconsumer *
make_consumer(const char *group, const char *topic)
{
    /* The devbroker drops a joining member whose session ran out during a
     * stall; its JoinGroup is asked again after 13 s, not 5 min. */
    struct kconsumer_conf conf = {.fetch_wait_max_ms = 10,
                                  .metadata_refresh_ms = 1000,
                                  .session_timeout_ms = 6000,
                                  .max_poll_interval_ms = 10000};
    cal_strlcpy(conf.bootstrap_servers, stack.kafka, sizeof(conf.bootstrap_servers));
    cal_strlcpy(conf.group_id, group, sizeof(conf.group_id));
    cal_strlcpy(conf.topics, topic, sizeof(conf.topics));
    char err[512];
    struct kconsumer *kc = kconsumer_create(&conf, err, sizeof(err));
    ck_assert_msg(kc != NULL, "%s", err);
    return kc;
}

static atomic_bool closed;

static void *
close_consumer(void *arg)
{
    char err[512];
    kconsumer_close(arg, err, sizeof(err));
    atomic_store(&closed, true);
    return NULL;
}

/* A topic of the test's own (outside the invalidator's subscription) with
 * n copies of payload, and a consumer group name for it. */
static void
own_topic(const char *prefix, char topic[96], char group[128], int n, const char *payload)
{
    snprintf(topic, 96, "%s.%d.%llu", prefix, (int)getpid(),
             (unsigned long long)testenv_random48());
    snprintf(group, 128, "%s-%s", prefix, topic);
    struct kafka_produce *kp = make_producer();
    for (int i = 0; i < n; i++)
        produce(kp, topic, (uint64_t)i, payload);
    kafka_produce_destroy(kp);
}

/* Polls kc until a message comes; past deadline the test fails with the
 * printf-style message. */
static void poll_until(struct kconsumer *kc, struct kconsumer_msg *m, uint64_t deadline,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
poll_until(struct kconsumer *kc, struct kconsumer_msg *m, uint64_t deadline, const char *fmt, ...)
{
    char err[512], why[256];
    while (kconsumer_poll(kc, 100, m, err, sizeof(err)) != CAL_OK) {
        if (cal_mono_us() >= deadline) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(why, sizeof(why), fmt, ap);
            va_end(ap);
            ck_abort_msg("%s (last poll: %s)", why, err);
        }
    }
}

/* Hands m back for an immediate retry and polls until it comes again (into
 * again): a held message is redelivered before anything behind it. */
static void
retry_and_take_back(struct kconsumer *kc, struct kconsumer_msg *m, struct kconsumer_msg *again,
                    uint64_t deadline)
{
    char err[512];
    int64_t offset = m->offset;
    ck_assert_int_eq(kconsumer_retry(kc, m, 0, err, sizeof(err)), CAL_OK);
    poll_until(kc, again, deadline, "the held message was not handed back");
    ck_assert_int_eq(again->offset, offset);
}

/* A held message handed back for its retry stays the caller's while a
 * rebalance revokes its partition: its bytes stay readable, and storing and
 * releasing it frees it once (AddressSanitizer in CI sees a use after free
 * or a double free). The test's own consumers and topic, outside the
 * invalidator's subscription. */
START_TEST(revoke_while_retry_handed_out)
{
    load_stack();
    char topic[96], group[128], err[512];
    const char *payload = "{\"held\":\"for a retry while its partition is revoked\"}";
    own_topic("kctest", topic, group, 4, payload);

    struct kconsumer *a = make_consumer(group, topic);
    struct kconsumer_msg m = {0};
    uint64_t deadline = cal_mono_us() + 30000000;
    poll_until(a, &m, deadline, "no message of %s within 30 s", topic);
    ck_assert_uint_eq(m.len, strlen(payload));
    struct kconsumer_msg again = {0};
    retry_and_take_back(a, &m, &again, deadline);

    /* A second member joins: the group rebalances, and a's next polls
     * revoke its partitions while `again` is still out. */
    struct kconsumer *b = make_consumer(group, topic);
    deadline = cal_mono_us() + 60000000;
    while (!kconsumer_joined(b)) {
        ck_assert_msg(cal_mono_us() < deadline, "the second member did not join within 60 s");
        struct kconsumer_msg other = {0};
        if (kconsumer_poll(a, 20, &other, err, sizeof(err)) == CAL_OK)
            kconsumer_release(a, &other);
        if (kconsumer_poll(b, 20, &other, err, sizeof(err)) == CAL_OK)
            kconsumer_release(b, &other);
    }
    /* Freed under the caller, the bytes may still read the same in a plain
     * build: the AddressSanitizer build (.ci/run) fails on the read itself. */
    ck_assert_msg(again.len == strlen(payload) && memcmp(again.value, payload, again.len) == 0,
                  "the handed-out message changed under the caller");
    kconsumer_store(a, &again, err, sizeof(err)); /* CAL_ENOTFOUND if its partition went to b */
    kconsumer_release(a, &again);
    ck_assert_ptr_null(again.handle);
    /* b leaves while a keeps polling: the group's rebalance needs both. */
    pthread_t closer;
    ck_assert_int_eq(pthread_create(&closer, NULL, close_consumer, b), 0);
    deadline = cal_mono_us() + 60000000;
    while (!atomic_load(&closed) && cal_mono_us() < deadline) {
        struct kconsumer_msg other = {0};
        if (kconsumer_poll(a, 20, &other, err, sizeof(err)) == CAL_OK)
            kconsumer_release(a, &other);
    }
    ck_assert_msg(atomic_load(&closed), "the second member did not leave within 60 s");
    pthread_join(closer, NULL);
    kconsumer_destroy(b);
    kconsumer_close(a, err, sizeof(err));
    kconsumer_destroy(a);
}
END_TEST

struct run_arg {
    struct invalidator *inv;
    volatile sig_atomic_t stop;
};

static void *
run_invalidator(void *arg)
{
    struct run_arg *r = arg;
    invalidator_run(r->inv, &r->stop);
    return NULL;
}

/* The settings of an invalidator of the test's own, in this process: its
 * own group, on topics, deleting from the stack's memcached; no second
 * deletes. */
static void
own_conf(struct invalidator_conf *conf, const char *group, const char *topics)
{
    *conf = (struct invalidator_conf){
        .retry_base_ms = 10, .retry_max_ms = 100, .report_interval_ms = 1000};
    conf->kafka.fetch_wait_max_ms = 10;
    conf->kafka.metadata_refresh_ms = 1000;
    conf->kafka.session_timeout_ms = 6000;
    conf->kafka.max_poll_interval_ms = 10000; /* as make_consumer's */
    cal_strlcpy(conf->kafka.bootstrap_servers, stack.kafka, sizeof(conf->kafka.bootstrap_servers));
    cal_strlcpy(conf->kafka.group_id, group, sizeof(conf->kafka.group_id));
    cal_strlcpy(conf->kafka.topics, topics, sizeof(conf->kafka.topics));
    cal_strlcpy(conf->cache.servers, stack.memcached, sizeof(conf->cache.servers));
}

/* An invalidator whose topics match no topic (the relays on another
 * topic_prefix) invalidates nothing and otherwise looks healthy: with no
 * partition for 10 s (and three progress lines) it must warn, once, then
 * again every six lines. Its log goes to a file. */
START_TEST(no_partitions_is_warned)
{
    load_stack();
    struct invalidator_conf conf;
    char group[64];
    snprintf(group, sizeof(group), "nopart.%llu", (unsigned long long)testenv_random48());
    own_conf(&conf, group, "^calendar-matches-nothing\\..*$");
    char path[] = "/tmp/check_invalidator.XXXXXX", err[512] = "";
    int fd = mkstemp(path), saved = dup(2);
    bool redirected = fd >= 0 && saved >= 0 && dup2(fd, 2) == 2;
    struct invstats *stats = invstats_create();
    struct run_arg r = {.inv =
                            redirected ? invalidator_create(&conf, stats, err, sizeof(err)) : NULL};
    /* The first warning is due about 11 s in (a report line, then 10 s
     * without partitions); from it, 9 s more: the next one is due 6 lines
     * (6 s) after it, the one after that 12 s after it. 45 s at most. */
    char log[65536] = "";
    int warnings = 0;
    uint64_t first_us = 0;
    pthread_t t;
    if (r.inv != NULL && pthread_create(&t, NULL, run_invalidator, &r) == 0) {
        uint64_t start = cal_mono_us();
        while (cal_mono_us() - start < 45000000 &&
               (first_us == 0 || cal_mono_us() - first_us < 9000000)) {
            cal_sleep_ms(100);
            ssize_t n = pread(fd, log, sizeof(log) - 1, 0);
            log[n > 0 ? n : 0] = '\0';
            warnings = 0;
            for (const char *p = log; (p = strstr(p, "msg=\"no partitions assigned\"")) != NULL;
                 p++)
                warnings++;
            if (warnings > 0 && first_us == 0)
                first_us = cal_mono_us();
        }
        r.stop = 1;
        pthread_join(t, NULL);
    }
    invalidator_destroy(r.inv);
    invstats_destroy(stats);
    if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
    }
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    ck_assert_msg(redirected, "cannot send stderr to a file");
    ck_assert_msg(r.inv != NULL, "%s", err);
    ck_assert_msg(warnings == 2,
                  "%d warnings in the invalidator's log in the 9 s after the first (two expected:"
                  " one, then one 6 report lines later):\n%s",
                  warnings, log);
}
END_TEST

/* An invalidator of the test's own running in a thread, and its metrics. */
struct own_inv {
    struct invstats *stats;
    struct run_arg r;
    pthread_t thread;
};

/* Starts one on topic (a topic of the test's own, outside the stack
 * invalidator's subscription, so no one else deletes its keys), with
 * redelete_ms. */
static void
own_inv_start(struct own_inv *o, const char *topic, unsigned redelete_ms)
{
    struct invalidator_conf conf;
    char group[128], err[512];
    snprintf(group, sizeof(group), "own-%s", topic);
    own_conf(&conf, group, topic);
    conf.redelete_ms = redelete_ms;
    conf.redelete_max_keys = INVALIDATOR_REDELETE_MIN;
    o->stats = invstats_create();
    o->r.stop = 0;
    o->r.inv = invalidator_create(&conf, o->stats, err, sizeof(err));
    ck_assert_msg(o->r.inv != NULL, "%s", err);
    ck_assert_int_eq(pthread_create(&o->thread, NULL, run_invalidator, &o->r), 0);
}

/* Stops its loop, then invalidator_destroy() leaves the group and sends
 * the second deletes still waiting. Its stats stay for the caller. */
static void
own_inv_stop(struct own_inv *o)
{
    o->r.stop = 1;
    pthread_join(o->thread, NULL);
    invalidator_destroy(o->r.inv);
    o->r.inv = NULL;
}

/* calendar_invalidator_redeletes_total{outcome=...} of stats. */
static long long
redeletes(struct invstats *stats, const char *outcome)
{
    size_t len;
    char *text = invstats_render(stats, &len), line[128];
    snprintf(line, sizeof(line), "calendar_invalidator_redeletes_total{outcome=\"%s\"} ", outcome);
    const char *at = strstr(text, line);
    ck_assert_msg(at != NULL, "no %s in the metrics", line);
    long long n = strtoll(at + strlen(line), NULL, 10);
    free(text);
    return n;
}

/* Caches the listing key of a new listing (into key) and produces a
 * listings event naming it to topic. */
static void
cache_and_change(struct cache *c, struct kafka_produce *kp, const char *topic,
                 char key[CACHEKEY_MAX])
{
    uint64_t id = testenv_random48();
    char json[512];
    cachekey_listing(id, key);
    set_key(c, key);
    snprintf(json, sizeof(json),
             "{\"before\":null,\"after\":{\"listing_id\":%llu},\"source\":{\"table\":"
             "\"listings\",\"ts_ms\":%llu},\"op\":\"c\"}",
             (unsigned long long)id, (unsigned long long)cal_now_ms());
    produce(kp, topic, id, json);
}

/* A new topic with a first change in it (an invalidator subscribes by name
 * to a topic that exists), and an invalidator of its own on it that acted
 * on that change. */
static void
own_inv_ready(struct own_inv *o, struct cache *c, struct kafka_produce *kp, char topic[96],
              unsigned redelete_ms)
{
    char group[128], first[1][CACHEKEY_MAX];
    own_topic("redel", topic, group, 0, "");
    cache_and_change(c, kp, topic, first[0]);
    own_inv_start(o, topic, redelete_ms);
    ck_assert_msg(wait_deleted(c, first, 1, DELETE_TIMEOUT_MS) >= 0,
                  "the test's own invalidator never acted on %s", topic);
}

/* Caches a key, has the invalidator delete it, then caches it again at
 * once: a reader that missed just after the delete but read the row from
 * before the change (MariaDB signals the binlog before the commit is
 * visible). */
static void
stale_fill_after_delete(struct cache *c, struct kafka_produce *kp, const char *topic,
                        char (*key)[CACHEKEY_MAX])
{
    cache_and_change(c, kp, topic, key[0]);
    ck_assert_msg(wait_deleted(c, key, 1, DELETE_TIMEOUT_MS) >= 0, "%s never deleted", key[0]);
    set_key(c, key[0]);
}

#define REDELETE_MS 3000 /* the stop below must come before it, on a slow machine too */

/* The key set again after its delete goes again redelete_ms later, and is
 * counted; stopping the invalidator sends the second deletes still
 * waiting rather than dropping them. */
START_TEST(a_key_set_again_after_its_delete_is_deleted_again)
{
    load_stack();
    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();
    struct own_inv o;
    char topic[96], key[1][CACHEKEY_MAX];
    own_inv_ready(&o, c, kp, topic, REDELETE_MS);

    stale_fill_after_delete(c, kp, topic, key);
    long ms = wait_deleted(c, key, 1, REDELETE_MS + 5000);
    ck_assert_msg(ms >= 0, "%s, set again after its delete, still cached %d ms later", key[0],
                  REDELETE_MS + 5000);
    printf("invalidator: a key set again after its delete went again %ld ms later "
           "(redelete_ms %d)\n",
           ms, REDELETE_MS);
    /* counted just after the delete: give it a moment */
    for (int i = 0; i < 50 && redeletes(o.stats, "deleted") < 2; i++)
        cal_sleep_ms(20);
    ck_assert_int_eq(redeletes(o.stats, "deleted"), 2); /* the first change's key, and this one */
    ck_assert_int_eq(redeletes(o.stats, "early"), 0);
    ck_assert_int_eq(redeletes(o.stats, "failed"), 0);

    /* Stopped while the second delete waits: it is sent before the end. */
    stale_fill_after_delete(c, kp, topic, key);
    ck_assert_msg(key_present(c, key[0]), "%s gone before its second delete was due", key[0]);
    own_inv_stop(&o);
    ck_assert_msg(!key_present(c, key[0]),
                  "%s still cached after the invalidator stopped: its second delete was dropped",
                  key[0]);
    ck_assert_int_eq(redeletes(o.stats, "deleted"), 3);
    invstats_destroy(o.stats);
    kafka_produce_destroy(kp);
    cache_destroy(c);
}
END_TEST

/* redelete_ms = 0: each key is deleted once, a key set again after it
 * stays (longer than the REDELETE_MS of the test above), nothing is
 * counted. */
START_TEST(redelete_ms_0_deletes_once)
{
    load_stack();
    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();
    struct own_inv o;
    char topic[96], key[1][CACHEKEY_MAX];
    own_inv_ready(&o, c, kp, topic, 0);
    stale_fill_after_delete(c, kp, topic, key);
    cal_sleep_ms(REDELETE_MS + 200);
    ck_assert_msg(key_present(c, key[0]), "%s deleted again with redelete_ms = 0", key[0]);
    own_inv_stop(&o);
    ck_assert_msg(key_present(c, key[0]), "%s deleted again at the stop, redelete_ms = 0", key[0]);
    ck_assert_int_eq(redeletes(o.stats, "deleted") + redeletes(o.stats, "early") +
                         redeletes(o.stats, "failed"),
                     0);
    invstats_destroy(o.stats);
    kafka_produce_destroy(kp);
    cache_destroy(c);
}
END_TEST

/* A message retried, handed back, then stored is freed by the store: it was
 * acted on, so it must not stay behind as an orphan of a revoke (which would
 * keep it, and librdkafka's fetch buffer under it, until the consumer is
 * destroyed: one per memcached outage per partition). */
START_TEST(stored_retry_is_freed)
{
    load_stack();
    char topic[96], group[128], err[512];
    own_topic("kcfree", topic, group, 2, "{\"retried\":\"then stored\"}");
    struct kconsumer *a = make_consumer(group, topic);
    uint64_t deadline = cal_mono_us() + 30000000;
    for (int round = 0; round < 2; round++) {
        struct kconsumer_msg m = {0}, again = {0};
        poll_until(a, &m, deadline, "no message of %s within 30 s", topic);
        retry_and_take_back(a, &m, &again, deadline);
        ck_assert_int_eq(kconsumer_store(a, &again, err, sizeof(err)), CAL_OK);
        kconsumer_release(a, &again);
        ck_assert_ptr_null(again.handle);
        ck_assert_uint_eq(kconsumer_orphans(a), 0);
    }
    kconsumer_close(a, err, sizeof(err));
    kconsumer_destroy(a);
}
END_TEST

/* The broker drops a partition's oldest messages once it holds more than it
 * keeps (librdkafka's mock cluster: about 5 MB a partition; real Kafka: its
 * retention). A consumer whose committed offset fell behind them must hear
 * of the gap: the first message after it carries gap_from, on every
 * delivery until it is stored (the invalidator flushes the cache before it
 * stores that offset). A fresh group, or one that lost nothing, sees none. */
START_TEST(a_gap_in_the_partition_is_told)
{
    load_stack();
    char topic[96], group[128], err[512];
    own_topic("kcgap", topic, group, 0, "");
    struct kafka_produce *kp = make_producer();
    for (int i = 0; i < 3; i++)
        produce(kp, topic, 7, "{\"small\":1}");
    struct kconsumer *a = make_consumer(group, topic);
    uint64_t deadline = cal_mono_us() + 30000000;
    for (int got = 0; got < 3;) {
        struct kconsumer_msg m = {0};
        if (kconsumer_poll(a, 100, &m, err, sizeof(err)) != CAL_OK) {
            ck_assert_msg(cal_mono_us() < deadline, "3 messages of %s not read in 30 s", topic);
            continue;
        }
        ck_assert_int_eq(m.gap_from, -1);
        ck_assert_int_eq(kconsumer_store(a, &m, err, sizeof(err)), CAL_OK);
        kconsumer_release(a, &m);
        got++;
    }
    ck_assert_int_eq(kconsumer_close(a, err, sizeof(err)), CAL_OK); /* commits offset 3 */
    kconsumer_destroy(a);
    /* About 6.4 MB more on the same partition (same key): the first ones go. */
    enum { PAD = 16000 };
    char *big = cal_malloc(PAD + 32);
    int off = snprintf(big, PAD + 32, "{\"pad\":\"");
    memset(big + off, 'x', PAD);
    snprintf(big + off + PAD, 32, "\"}");
    for (int i = 0; i < 400; i++)
        produce(kp, topic, 7, big);
    free(big);
    kafka_produce_destroy(kp);

    struct kconsumer *b = make_consumer(group, topic);
    struct kconsumer_msg m = {0}, again = {0}, next = {0};
    deadline = cal_mono_us() + 60000000;
    poll_until(b, &m, deadline, "nothing read again from %s in 60 s", topic);
    ck_assert_msg(m.offset > 3, "offset %lld: the broker kept everything", (long long)m.offset);
    ck_assert_int_eq(m.gap_from, 3);
    retry_and_take_back(b, &m, &again, deadline);
    ck_assert_int_eq(again.gap_from, 3);
    ck_assert_int_eq(kconsumer_store(b, &again, err, sizeof(err)), CAL_OK);
    kconsumer_release(b, &again);
    poll_until(b, &next, deadline, "no message after the gap");
    ck_assert_int_eq(next.offset, m.offset + 1);
    ck_assert_int_eq(next.gap_from, -1);
    kconsumer_release(b, &next);
    kconsumer_close(b, err, sizeof(err));
    kconsumer_destroy(b);
}
END_TEST

START_TEST(stack_has_kafka_and_invalidator)
{
    load_stack();
    assert_invalidator_running();
}
END_TEST

/* A value of the invalidator's /metrics (INVALIDATOR_METRICS_URL of the
 * stack env): the sample whose line starts with name (and a space). */
static long long
metric_value(const char *name)
{
    const char *path = getenv("STACK_ENV");
    char url[256];
    ck_assert_msg(env_value(path && path[0] ? path : "var/stack.env", "INVALIDATOR_METRICS_URL",
                            url, sizeof(url)) &&
                      url[0] != '\0',
                  "the stack env has no INVALIDATOR_METRICS_URL");
    struct http_client *h = http_client_create();
    struct http_response r;
    char err[256], line[256];
    ck_assert_msg(http_request(h, "GET", url, NULL, NULL, 0, 5000, &r, err, sizeof(err)) == CAL_OK,
                  "%s: %s", url, err);
    snprintf(line, sizeof(line), "\n%s ", name);
    const char *at = r.body != NULL ? strstr(r.body, line) : NULL;
    ck_assert_msg(at != NULL, "%s has no %s", url, name);
    long long n = strtoll(at + strlen(line), NULL, 10);
    http_response_deinit(&r);
    http_client_destroy(h);
    return n;
}

/* The count of the invalidator's produce-to-invalidation histogram. */
static long long
produce_latency_count(void)
{
    return metric_value("calendar_invalidator_produce_to_invalidation_seconds_count");
}

/* A relay-format nights update across a month boundary deletes both month
 * keys and the listing key, and nothing else of that listing. */
START_TEST(relay_event_deletes_its_keys)
{
    load_stack();
    assert_invalidator_running();
    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();
    long long counted = produce_latency_count();
    uint64_t id = testenv_random48();
    int32_t before = date_from_ymd(2031, 1, 31), after = date_from_ymd(2031, 2, 1);
    int32_t other = date_from_ymd(2031, 5, 10);
    char keys[3][CACHEKEY_MAX], untouched[CACHEKEY_MAX];
    cachekey_listing(id, keys[0]);
    cachekey_month_of(id, before, keys[1]);
    cachekey_month_of(id, after, keys[2]);
    cachekey_month_of(id, other, untouched);
    for (size_t i = 0; i < 3; i++)
        set_key(c, keys[i]);
    set_key(c, untouched);

    char json[1024];
    relay_nights_event(json, sizeof(json), id, before, after);
    produce(kp, TOPIC_NIGHTS, id, json);
    long ms = wait_deleted(c, keys, 3, DELETE_TIMEOUT_MS);
    ck_assert_msg(ms >= 0, "keys of listing %llu still cached %d ms after the event",
                  (unsigned long long)id, DELETE_TIMEOUT_MS);
    ck_assert_msg(key_present(c, untouched), "%s was deleted but no event touched it", untouched);

    /* Once the topic is known: time from acknowledged produce to delete. */
    uint64_t id2 = testenv_random48();
    char keys2[2][CACHEKEY_MAX];
    cachekey_listing(id2, keys2[0]);
    cachekey_month_of(id2, before, keys2[1]);
    set_key(c, keys2[0]);
    set_key(c, keys2[1]);
    relay_nights_event(json, sizeof(json), id2, before, before);
    uint64_t t0 = cal_mono_us();
    produce(kp, TOPIC_NIGHTS, id2, json);
    ms = wait_deleted(c, keys2, 2, DELETE_TIMEOUT_MS);
    ck_assert_msg(ms >= 0, "second event not applied");
    printf("invalidator: first event applied after topic discovery; produce-to-delete of the "
           "next one %.1f ms (incl. ack)\n",
           (double)(cal_mono_us() - t0) / 1000.0);
    /* Both events had a Kafka timestamp: the histogram counted them (it is
     * counted just after the deletes, so give it a moment). */
    for (int i = 0; i < 50 && produce_latency_count() < counted + 2; i++)
        cal_sleep_ms(20);
    ck_assert_int_ge(produce_latency_count(), counted + 2);
    kafka_produce_destroy(kp);
    cache_destroy(c);
}
END_TEST

/* An update whose before image has no listing_id (an outside writer's
 * row): the after image's keys are deleted all the same, and the event is
 * counted undecodable. */
START_TEST(partly_undecodable_event_deletes_the_other_images_keys)
{
    load_stack();
    assert_invalidator_running();
    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();
    const char *undecodable = "calendar_invalidator_errors_total{kind=\"undecodable\"}";
    long long errors = metric_value(undecodable);
    uint64_t id = testenv_random48();
    int32_t night = date_from_ymd(2031, 3, 3);
    char keys[2][CACHEKEY_MAX];
    cachekey_listing(id, keys[0]);
    cachekey_month_of(id, night, keys[1]);
    set_key(c, keys[0]);
    set_key(c, keys[1]);
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"before\":{\"night\":%d,\"status\":\"available\"},"
             "\"after\":{\"listing_id\":%llu,\"night\":%d,\"status\":\"booked\"},"
             "\"source\":{\"table\":\"nights\",\"ts_ms\":%llu},\"op\":\"u\"}",
             (int)night, (unsigned long long)id, (int)night, (unsigned long long)cal_now_ms());
    produce(kp, TOPIC_NIGHTS, id, json);
    ck_assert_msg(wait_deleted(c, keys, 2, DELETE_TIMEOUT_MS) >= 0,
                  "the after image's keys still cached %d ms after the event", DELETE_TIMEOUT_MS);
    /* counted as it is acted on, just after the deletes */
    for (int i = 0; i < 50 && metric_value(undecodable) < errors + 1; i++)
        cal_sleep_ms(20);
    ck_assert_int_eq(metric_value(undecodable), errors + 1);
    kafka_produce_destroy(kp);
    cache_destroy(c);
}
END_TEST

/* How many lines of the stack's invalidator log contain text. */
static int
invalidator_log_count(const char *text)
{
    const char *path = getenv("STACK_ENV");
    char dir[512], log[700], line[4096];
    ck_assert(env_value(path && path[0] ? path : "var/stack.env", "STACK_DIR", dir, sizeof(dir)));
    snprintf(log, sizeof(log), "%s/logs/invalidator.log", dir);
    FILE *f = fopen(log, "r");
    ck_assert_msg(f != NULL, "cannot open %s", log);
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, text) != NULL;
    fclose(f);
    return n;
}

/* A burst of events the invalidator cannot read (another converter's, say)
 * is counted one by one but logged a line a second at most. */
START_TEST(undecodable_events_are_counted_not_flooding_the_log)
{
    load_stack();
    assert_invalidator_running();
    struct kafka_produce *kp = make_producer();
    const char *undecodable = "calendar_invalidator_errors_total{kind=\"undecodable\"}";
    const char *line = "undecodable event skipped";
    enum { N = 40 };
    long long errors = metric_value(undecodable);
    int lines = invalidator_log_count(line), blank = invalidator_log_count("reason=\"\"");
    cal_sleep_ms(1100); /* past any earlier line's second: the burst's first is logged */
    uint64_t t0 = cal_mono_us();
    for (int i = 0; i < N; i++)
        produce(kp, TOPIC_NIGHTS, testenv_random48(), "\x01not json");
    /* DELETE_TIMEOUT_MS: the topic may be new to the invalidator */
    for (int ms = 0; ms < DELETE_TIMEOUT_MS && metric_value(undecodable) < errors + N; ms += 20)
        cal_sleep_ms(20);
    ck_assert_int_eq(metric_value(undecodable), errors + N);
    /* a line when the burst began, one per second of it after */
    int most = 1 + (int)((cal_mono_us() - t0) / 1000000);
    int logged = invalidator_log_count(line) - lines;
    ck_assert_msg(logged >= 1 && logged <= most, "%d lines for %d undecodable events (at most %d)",
                  logged, N, most);
    /* each line says why, though the batch decoded the event only once */
    ck_assert_int_eq(invalidator_log_count("reason=\"\""), blank);
    kafka_produce_destroy(kp);
}
END_TEST

START_TEST(debezium_schemas_event_via_kcat)
{
    load_stack();
    assert_invalidator_running();
    struct cache *c = make_cache();
    uint64_t id = testenv_random48();
    char keys[1][CACHEKEY_MAX], month[CACHEKEY_MAX];
    cachekey_listing(id, keys[0]);
    cachekey_month_of(id, date_from_ymd(2031, 3, 1), month);
    set_key(c, keys[0]);
    set_key(c, month);
    char json[2048], key[64];
    debezium_listing_event(json, sizeof(json), id);
    snprintf(key, sizeof(key), "{\"listing_id\":\"%llu\"}", (unsigned long long)id);
    int rc = kcat_produce(TOPIC_LISTINGS, key, json);
    ck_assert_msg(rc == 0, "kcat -P -b %s -t %s exited %d", stack.kafka, TOPIC_LISTINGS, rc);
    ck_assert_msg(wait_deleted(c, keys, 1, DELETE_TIMEOUT_MS) >= 0,
                  "%s still cached after a Debezium schemas.enable event", keys[0]);
    /* a listings row says nothing about nights: month keys stay */
    ck_assert_msg(key_present(c, month), "%s deleted by a listings event", month);
    cache_destroy(c);
}
END_TEST

#define DOWN_EVENTS 40

/* SIGKILLs the invalidator (no clean commit of its offsets). */
static pid_t
kill_invalidator(void)
{
    pid_t pid = invalidator_pid();
    ck_assert_msg(pid_alive(pid), "calendar-cdc-invalidator (pid %d) is not running", (int)pid);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    for (int i = 0; i < 100 && pid_alive(pid); i++)
        cal_sleep_ms(50);
    ck_assert_msg(!pid_alive(pid), "invalidator (pid %d) survived SIGKILL", (int)pid);
    return pid;
}

/* Starts the invalidator killed as old, and waits until no key of keys is
 * cached. */
static void
restart_and_wait_deleted(pid_t old, struct cache *c, char (*keys)[CACHEKEY_MAX], size_t nkeys)
{
    int rc = restart_invalidator();
    ck_assert_msg(rc == 0, "'%s restart invalidator --dir %s' exited %d", stack.stack_sh, stack.dir,
                  rc);
    pid_t pid = invalidator_pid();
    ck_assert_msg(pid != old && pid_alive(pid), "no new invalidator after the restart");
    uint64_t t0 = cal_mono_us();
    if (wait_deleted(c, keys, nkeys, RESTART_DELETE_TIMEOUT_MS) < 0) {
        size_t left = 0;
        for (size_t i = 0; i < nkeys; i++)
            left += key_present(c, keys[i]);
        ck_abort_msg("%zu of %zu keys still cached %d ms after the restart (lost invalidations)",
                     left, nkeys, RESTART_DELETE_TIMEOUT_MS);
    }
    printf("invalidator: events produced while down applied %.1f s after the restart\n",
           (double)(cal_mono_us() - t0) / 1e6);
}

/* A key no event names: only a flush of the whole cache deletes it. */
static void
set_bystander(struct cache *c, char *key)
{
    cachekey_listing(testenv_random48(), key);
    set_key(c, key);
}

#define FLUSHES "calendar_invalidator_flushes_total"

/* SIGKILL the invalidator, produce while it is down, restart it: every key
 * of those events ends up deleted, each by its own event (a key no event
 * names stays, and the new invalidator flushed nothing). */
START_TEST(no_lost_invalidation_across_kill)
{
    load_stack();
    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();
    pid_t pid = kill_invalidator();

    static char keys[2 * DOWN_EVENTS][CACHEKEY_MAX];
    size_t nkeys = 0;
    char json[2048], bystander[CACHEKEY_MAX];
    set_bystander(c, bystander);
    int32_t night = date_from_ymd(2032, 7, 14);
    for (int i = 0; i < DOWN_EVENTS; i++) {
        uint64_t id = testenv_random48();
        char *lkey = keys[nkeys++];
        cachekey_listing(id, lkey);
        set_key(c, lkey);
        if (i % 2 == 0) {
            char *mkey = keys[nkeys++];
            cachekey_month_of(id, night + i, mkey);
            set_key(c, mkey);
            relay_nights_event(json, sizeof(json), id, night + i, night + i);
            produce(kp, TOPIC_NIGHTS, id, json);
        } else {
            debezium_listing_event(json, sizeof(json), id);
            produce(kp, TOPIC_LISTINGS, id, json);
        }
    }
    /* Nobody else deletes these keys: they are all still there. */
    for (size_t i = 0; i < nkeys; i++)
        ck_assert_msg(key_present(c, keys[i]), "%s gone while the invalidator was down", keys[i]);

    restart_and_wait_deleted(pid, c, keys, nkeys);
    ck_assert_msg(key_present(c, bystander),
                  "%s, named by no event, was deleted: the cache was "
                  "flushed, so the test cannot tell whether the events were applied",
                  bystander);
    ck_assert_int_eq(metric_value(FLUSHES), 0);
    kafka_produce_destroy(kp);
    cache_destroy(c);
}
END_TEST

/* The same, but the broker dropped a listing's event before the restarted
 * invalidator read it (about 6.4 MB more on its partition, events of other
 * listings; the broker keeps about 5 MB a partition): told of the gap, the
 * invalidator flushes the whole cache, so that listing's keys go too. */
START_TEST(an_event_dropped_while_down_flushes_the_cache)
{
    load_stack();
    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();
    pid_t pid = kill_invalidator();

    static char keys[2][CACHEKEY_MAX];
    char json[2048];
    int32_t night = date_from_ymd(2032, 8, 14);
    uint64_t id = testenv_random48();
    cachekey_month_of(id, night, keys[0]);
    set_key(c, keys[0]);
    set_bystander(c, keys[1]);
    relay_nights_event(json, sizeof(json), id, night, night);
    produce(kp, TOPIC_NIGHTS, id, json);
    enum { PAD = 16000, FILLERS = 400 };
    char *filler = cal_malloc(PAD + sizeof(json) + 32);
    for (int i = 0; i < FILLERS; i++) {
        relay_nights_event(json, sizeof(json), testenv_random48(), night, night);
        int off = snprintf(filler, PAD + 32, "{\"pad\":\"");
        memset(filler + off, 'x', PAD);
        snprintf(filler + off + PAD, sizeof(json) + 32, "\",%s", json + 1);
        produce(kp, TOPIC_NIGHTS, id, filler);
    }
    free(filler);
    ck_assert_msg(key_present(c, keys[0]), "%s gone while the invalidator was down", keys[0]);

    restart_and_wait_deleted(pid, c, keys, 2);
    ck_assert_int_ge(metric_value(FLUSHES), 1);
    kafka_produce_destroy(kp);
    cache_destroy(c);
}
END_TEST

/* ---- memcached outage: a private memcached and invalidator (own group and
 * topic) next to the stack's broker; both die with this test process. */

static void
stop_child(pid_t pid)
{
    int status;
    kill(pid, SIGCONT);
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return;
        cal_sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

/* A memcached of the test's own on a free port (it dies with this test
 * process), its log in dir; stack.memcached names it from now on, for
 * make_cache() and own_conf(). Returns its pid once it answers. */
static pid_t
start_private_memcached(const char *dir, char servers[64], char mc_log[600])
{
    char port_s[16], err[256];
    unsigned port = testenv_free_port();
    ck_assert_uint_ne(port, 0);
    snprintf(port_s, sizeof(port_s), "%u", port);
    snprintf(servers, 64, "127.0.0.1:%u", port);
    snprintf(mc_log, 600, "%s/memcached.log", dir);
    char *mc_argv[] = {"memcached", "-l", "127.0.0.1", "-p", port_s,
                       "-U",        "0",  "-m",        "16", getuid() == 0 ? "-u" : NULL,
                       "root",      NULL};
    pid_t mc = proc_start_tied(mc_argv, mc_log);
    ck_assert_int_gt(mc, 0);
    strcpy(stack.memcached, servers);
    struct cache *c = make_cache();
    bool up = false;
    for (int i = 0; i < 100 && !up; i++) {
        up = cache_set(c, "probe", 5, "v", 1, 60, err, sizeof(err)) == CAL_OK;
        if (!up)
            cal_sleep_ms(50);
    }
    cache_destroy(c);
    ck_assert_msg(up, "private memcached on %s did not start: %s", servers, err);
    return mc;
}

/* calendar_invalidator_lag_messages of topic in stats, summed over its
 * partitions; -1 while not reported. */
static long long
lag_of(struct invstats *stats, const char *topic)
{
    size_t len;
    char *text = invstats_render(stats, &len), line[192];
    snprintf(line, sizeof(line), "calendar_invalidator_lag_messages{topic=\"%s\",partition=\"",
             topic);
    long long sum = -1;
    for (const char *at = strstr(text, line); at != NULL; at = strstr(at + 1, line)) {
        const char *v = strstr(at, "} ");
        if (v != NULL)
            sum = (sum < 0 ? 0 : sum) + strtoll(v + 2, NULL, 10);
    }
    free(text);
    return sum;
}

/* memcached stops answering: the events polled meanwhile are held for a
 * retry, not acted on, and the lag says so (it counted them consumed, 0
 * on a quiet topic, while none of their keys was deleted); once memcached
 * answers again they are applied and the lag goes back to 0. */
START_TEST(held_events_count_in_the_lag)
{
    enum { EVENTS = 20 };
    load_stack();
    char dir[] = "/tmp/check_invalidator.XXXXXX", servers[64], mc_log[600];
    ck_assert(mkdtemp(dir) != NULL);
    pid_t mc = start_private_memcached(dir, servers, mc_log);
    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();
    struct own_inv o;
    char topic[96], json[512];
    own_inv_ready(&o, c, kp, topic, 0);

    bool stopped = proc_stop(mc);
    for (int i = 0; i < EVENTS; i++) {
        uint64_t id = testenv_random48();
        snprintf(json, sizeof(json),
                 "{\"before\":null,\"after\":{\"listing_id\":%llu},\"source\":{\"table\":"
                 "\"listings\",\"ts_ms\":%llu},\"op\":\"c\"}",
                 (unsigned long long)id, (unsigned long long)cal_now_ms());
        produce(kp, topic, id, json);
    }
    /* In each partition every one is held behind the first, which fails
     * again and again: the lag counts from it (the topic's offsets past
     * the first change are these events). */
    long long held = -1;
    for (int ms = 0; ms < 30000 && held < EVENTS; ms += 100) {
        cal_sleep_ms(100);
        held = lag_of(o.stats, topic);
    }
    ck_assert_int_eq(kill(mc, SIGCONT), 0);
    long long after = -1;
    for (int ms = 0; ms < 30000 && after != 0; ms += 100) {
        cal_sleep_ms(100);
        after = lag_of(o.stats, topic);
    }
    own_inv_stop(&o);
    invstats_destroy(o.stats);
    stop_child(mc);
    kafka_produce_destroy(kp);
    cache_destroy(c);
    unlink(mc_log);
    rmdir(dir);
    ck_assert_msg(stopped, "memcached (pid %ld) did not stop in 10 s", (long)mc);
    ck_assert_msg(held == EVENTS, "lag %lld with %d events held while memcached was stopped", held,
                  EVENTS);
    ck_assert_msg(after == 0, "lag %lld 30 s after memcached answered again", after);
}
END_TEST

#define OUTAGE_EVENTS 60

START_TEST(memcached_outage_retried_not_skipped)
{
    load_stack();
    char dir[] = "/tmp/check_invalidator.XXXXXX";
    ck_assert(mkdtemp(dir) != NULL);
    char topic[64], group[64], ini[600], mc_log[600], inv_log[600], servers[64];
    uint64_t tag = testenv_random48();
    snprintf(topic, sizeof(topic), "calendar.invoutage%llu.listings", (unsigned long long)tag);
    snprintf(group, sizeof(group), "invoutage-%llu", (unsigned long long)tag);
    pid_t mc = start_private_memcached(dir, servers, mc_log);
    snprintf(inv_log, sizeof(inv_log), "%s/invalidator.log", dir);
    snprintf(ini, sizeof(ini), "%s/invalidator.ini", dir);
    FILE *f = fopen(ini, "w");
    ck_assert(f != NULL);
    fprintf(f,
            "[kafka]\nbootstrap_servers = %s\ngroup_id = %s\ntopics = %s\n"
            "session_timeout_ms = 6000\nmax_poll_interval_ms = 10000\n[cache]\nservers = "
            "%s\ntimeout_ms = 100\n"
            "[invalidator]\nretry_base_ms = 20\nretry_max_ms = 300\n[log]\nlevel = info\n",
            stack.kafka, group, topic, servers);
    fclose(f);

    struct cache *c = make_cache();
    struct kafka_produce *kp = make_producer();

    /* The topic exists before the invalidator subscribes to it by name. */
    char json[1024];
    uint64_t probe = testenv_random48();
    char probe_key[1][CACHEKEY_MAX];
    cachekey_listing(probe, probe_key[0]);
    set_key(c, probe_key[0]);
    snprintf(json, sizeof(json),
             "{\"before\":null,\"after\":{\"listing_id\":%llu},\"source\":{\"table\":\"listings\","
             "\"ts_ms\":%llu},\"op\":\"c\"}",
             (unsigned long long)probe, (unsigned long long)cal_now_ms());
    produce(kp, topic, probe, json);
    char *inv_argv[] = {"bin/calendar-cdc-invalidator", "--config", ini, NULL};
    pid_t inv = proc_start_tied(inv_argv, inv_log);
    ck_assert_int_gt(inv, 0);
    ck_assert_msg(wait_deleted(c, probe_key, 1, DELETE_TIMEOUT_MS) >= 0,
                  "private invalidator never applied the probe event (log: %s)", inv_log);

    static char keys[OUTAGE_EVENTS][CACHEKEY_MAX];
    uint64_t base = testenv_random48();
    for (int i = 0; i < OUTAGE_EVENTS; i++) {
        cachekey_listing(base + (uint64_t)i, keys[i]);
        set_key(c, keys[i]);
    }
    ck_assert(proc_stop(mc)); /* requests now time out; data is kept */
    for (int i = 0; i < OUTAGE_EVENTS; i++) {
        uint64_t id = base + (uint64_t)i;
        snprintf(json, sizeof(json),
                 "{\"before\":{\"listing_id\":%llu},\"after\":{\"listing_id\":%llu},"
                 "\"source\":{\"table\":\"listings\",\"ts_ms\":%llu},\"op\":\"u\"}",
                 (unsigned long long)id, (unsigned long long)id, (unsigned long long)cal_now_ms());
        produce(kp, topic, id, json);
    }
    /* The invalidator fails and backs off meanwhile (seen in its log, not
     * assumed after a fixed wait: its fetch is slow under the sanitizers). */
    ck_assert_msg(proc_log_has_within(inv_log, "invalidation failed, retrying", 30000),
                  "the invalidator never failed a delete (log: %s)", inv_log);
    ck_assert_int_eq(kill(mc, SIGCONT), 0);
    long ms = wait_deleted(c, keys, OUTAGE_EVENTS, DELETE_TIMEOUT_MS);
    if (ms < 0) {
        size_t left = 0;
        for (int i = 0; i < OUTAGE_EVENTS; i++)
            left += key_present(c, keys[i]);
        ck_abort_msg("%zu of %d keys still cached after memcached came back (log: %s)", left,
                     OUTAGE_EVENTS, inv_log);
    }
    ck_assert_msg(pid_alive(inv), "private invalidator died (log: %s)", inv_log);
    /* The outage really was one: deletes failed, were retried, then went on. */
    static char logbuf[1 << 16];
    f = fopen(inv_log, "r");
    ck_assert(f != NULL);
    size_t n = fread(logbuf, 1, sizeof(logbuf) - 1, f);
    fclose(f);
    logbuf[n] = '\0';
    ck_assert_msg(strstr(logbuf, "invalidation failed, retrying") != NULL &&
                      strstr(logbuf, "invalidations resumed") != NULL,
                  "no failed-then-resumed invalidation in %s", inv_log);
    stop_child(inv);
    stop_child(mc);
    kafka_produce_destroy(kp);
    cache_destroy(c);
    unlink(ini);
    unlink(mc_log);
    unlink(inv_log);
    rmdir(dir);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("invalidator");
    TCase *tc = tcase_create("stack_has_kafka_and_invalidator");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, stack_has_kafka_and_invalidator);
    suite_add_tcase(s, tc);
    tc = tcase_create("relay_event_deletes_its_keys");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, relay_event_deletes_its_keys);
    suite_add_tcase(s, tc);
    tc = tcase_create("debezium_schemas_event_via_kcat");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, debezium_schemas_event_via_kcat);
    suite_add_tcase(s, tc);
    tc = tcase_create("partly_undecodable_event_deletes_the_other_images_keys");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, partly_undecodable_event_deletes_the_other_images_keys);
    suite_add_tcase(s, tc);
    tc = tcase_create("undecodable_events_are_counted_not_flooding_the_log");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, undecodable_events_are_counted_not_flooding_the_log);
    suite_add_tcase(s, tc);
    tc = tcase_create("memcached_outage_retried_not_skipped");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, memcached_outage_retried_not_skipped);
    suite_add_tcase(s, tc);
    tc = tcase_create("held_events_count_in_the_lag");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, held_events_count_in_the_lag);
    suite_add_tcase(s, tc);
    tc = tcase_create("a_gap_in_the_partition_is_told");
    tcase_set_timeout(tc, 150);
    tcase_add_test(tc, a_gap_in_the_partition_is_told);
    suite_add_tcase(s, tc);
    tc = tcase_create("no_partitions_is_warned");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, no_partitions_is_warned);
    suite_add_tcase(s, tc);
    tc = tcase_create("a_key_set_again_after_its_delete_is_deleted_again");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, a_key_set_again_after_its_delete_is_deleted_again);
    suite_add_tcase(s, tc);
    tc = tcase_create("redelete_ms_0_deletes_once");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, redelete_ms_0_deletes_once);
    suite_add_tcase(s, tc);
    tc = tcase_create("stored_retry_is_freed");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stored_retry_is_freed);
    suite_add_tcase(s, tc);
    tc = tcase_create("revoke_while_retry_handed_out");
    tcase_set_timeout(tc, 150);
    tcase_add_test(tc, revoke_while_retry_handed_out);
    suite_add_tcase(s, tc);
    /* Last: they restart the invalidator. */
    tc = tcase_create("no_lost_invalidation_across_kill");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, no_lost_invalidation_across_kill);
    suite_add_tcase(s, tc);
    tc = tcase_create("an_event_dropped_while_down_flushes_the_cache");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, an_event_dropped_while_down_flushes_the_cache);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
