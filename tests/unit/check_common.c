/* Unit tests of common/: dates, config tables, DSNs, routing hash, cache keys,
 * memcached server lists. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cache.h"
#include "common/cachekey.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/date.h"
#include "common/db.h"
#include "common/dbconf.h"
#include "common/util.h"
#include "sharding/shardmap.h"
#include "tests/lib/proc.h"
#include "tests/lib/unit.h"

START_TEST(dates_round_trip)
{
    char buf[11];
    ck_assert_int_eq(date_from_ymd(1970, 1, 1), 0);
    ck_assert_int_eq(date_from_ymd(2000, 3, 1), 11017);
    for (int32_t d = 0; d < 200000; d += 13) {
        int32_t back;
        date_format(d, buf);
        ck_assert(date_parse(buf, 10, &back));
        ck_assert_int_eq(back, d);
    }
    int32_t d;
    ck_assert(date_parse("2028-02-29", 10, &d));
    ck_assert(!date_parse("2027-02-29", 10, &d));
    ck_assert(!date_parse("2100-02-29", 10, &d));
    ck_assert(date_parse("2000-02-29", 10, &d));
    ck_assert(!date_parse("2030-04-31", 10, &d));
    ck_assert(date_parse("9998-12-31", 10, &d));
    ck_assert(!date_parse("9999-01-01", 10, &d));
    ck_assert(!date_parse("2030-04-3", 9, &d));
    ck_assert(!date_parse("2030/04/03", 10, &d));
    ck_assert(!date_parse("1969-12-31", 10, &d));
    ck_assert(!date_parse("+030-04-03", 10, &d));
}
END_TEST

struct sample_conf {
    char name[8];
    int port;
    int64_t big;
    bool on;
    char level[8];
};

static const struct conf_item items[] = {
    CONF_STR_ITEM("a", "name", struct sample_conf, name, "x", "a name"),
    CONF_INT_ITEM("a", "port", struct sample_conf, port, 1, 65535, "80", "a port"),
    CONF_INT_ITEM("b", "big", struct sample_conf, big, 0, 10000000000LL, "5", "a big number"),
    CONF_BOOL_ITEM("b", "on", struct sample_conf, on, "false", "a switch"),
    CONF_STR_CHECK_ITEM("b", "level", struct sample_conf, level, "info", log_level_check,
                        "a checked value"),
};

static cal_status
load_text(const char *text, struct sample_conf *conf, char *err, size_t errlen)
{
    char path[] = "/tmp/check_conf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    memset(conf, 0, sizeof(*conf));
    conf_defaults(items, CAL_ARRAY_LEN(items), conf);
    cal_status st = conf_load(items, CAL_ARRAY_LEN(items), conf, path, err, errlen);
    unlink(path);
    return st;
}

/* Waits on a monotonic condition end at their deadline, whatever part of
 * a second the clock is at (the nanoseconds carry into seconds). */
START_TEST(monotonic_deadlines)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond;
    cal_cond_init_monotonic(&cond);
    for (unsigned ms = 0; ms < 2000; ms += 137) {
        uint64_t before = cal_mono_us();
        struct timespec ts = cal_mono_after_ms(ms);
        ck_assert(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
        ck_assert_uint_ge(at, before + ms * 1000u);
        ck_assert_uint_le(at, cal_mono_us() + ms * 1000u);
    }
    for (uint64_t us = 0; us < 3000000; us += 199999) { /* sub-millisecond deadlines too */
        uint64_t before = cal_mono_us();
        struct timespec ts = cal_mono_after_us(us);
        ck_assert(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
        ck_assert_uint_ge(at, before + us);
        ck_assert_uint_le(at, cal_mono_us() + us);
    }
    struct timespec ts = cal_mono_after_ms(30);
    uint64_t t0 = cal_mono_us();
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&cond, &mu, &ts);
    pthread_mutex_unlock(&mu);
    ck_assert_uint_ge(cal_mono_us() - t0, 25000);
    pthread_cond_destroy(&cond);
}
END_TEST

START_TEST(config_table)
{
    struct sample_conf c;
    char err[256];
    ck_assert_int_eq(
        load_text("[a]\nport = 8080\n[b]\nbig = 9000000000\non = yes\n", &c, err, sizeof(err)),
        CAL_OK);
    ck_assert_str_eq(c.name, "x");
    ck_assert_int_eq(c.port, 8080);
    ck_assert_int_eq(c.big, 9000000000LL);
    ck_assert(c.on);
    ck_assert_int_eq(load_text("[a]\nport = 0\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, ":2: [a] port: 0 is outside 1..65535"));
    ck_assert_int_eq(load_text("[a]\nport = 80x\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_int_eq(load_text("[a]\nnmae = y\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "unknown key 'nmae'"));
    ck_assert_int_eq(load_text("[z]\nname = y\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "unknown section [z]"));
    ck_assert_int_eq(load_text("[a]\nname = toolongvalue\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_int_eq(load_text("[b]\non = maybe\n", &c, err, sizeof(err)), CAL_EINVAL);
    /* The last of two values used to win without a word. */
    ck_assert_int_eq(load_text("[a]\nport = 80\nport = 81\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, ":3: [a] port is set twice"));
    /* inih reads an indented line as more of the key above: name = "x port = 81". */
    ck_assert_int_eq(load_text("[a]\n  name = x\n  port = 81\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "[a] name is set twice"));
    /* A value its check refuses is named with its line, like a bad number. */
    ck_assert_int_eq(load_text("[b]\non = no\nlevel = warn\n", &c, err, sizeof(err)), CAL_OK);
    ck_assert_str_eq(c.level, "warn");
    ck_assert_int_eq(load_text("[b]\non = no\nlevel = loud\n", &c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, ":3: [b] level: 'loud' is not debug, info, warn or error"));
}
END_TEST

START_TEST(ipv4_values)
{
    char why[128];
    ck_assert_int_eq(conf_check_ipv4("127.0.0.1", why, sizeof(why)), CAL_OK);
    ck_assert_int_eq(conf_check_ipv4("0.0.0.0", why, sizeof(why)), CAL_OK);
    const char *bad[] = {"localhost", "1.2.3", "127.0.0.256", "::1", "", " 127.0.0.1"};
    for (size_t i = 0; i < CAL_ARRAY_LEN(bad); i++) {
        ck_assert_int_eq(conf_check_ipv4(bad[i], why, sizeof(why)), CAL_EINVAL);
        ck_assert_ptr_nonnull(strstr(why, "is not an IPv4 address"));
    }
}
END_TEST

/* A sample config is a file the parser reads back, however long the help
 * texts: libinih fails on a line over 200 bytes, comment or not (the
 * example config of calendard did once). */
START_TEST(sample_config_reads_back)
{
    char help[400];
    memset(help, 0, sizeof(help));
    for (size_t i = 0; i + 6 < sizeof(help) - 1; i += 6)
        memcpy(help + i, "words ", 6);
    const struct conf_item long_items[] = {
        CONF_INT_ITEM("a", "port", struct sample_conf, port, 1, 65535, "80", help),
        CONF_STR_ITEM("a", "name", struct sample_conf, name, "x",
                      "averyveryverylongwordwithoutanyspacesthatgoesonandonandonpastthewidthofaline"
                      "ofthesampleconfigbyfarsoitgetsalineofitsown then more"),
    };
    char path[] = "/tmp/check_sample_XXXXXX", line[512], err[256];
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w+");
    conf_print_sample(long_items, 2, f);
    rewind(f);
    size_t lines = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lines++;
        ck_assert_msg(strlen(line) < 200, "line %zu is %zu bytes", lines, strlen(line));
    }
    fclose(f);
    ck_assert_uint_ge(lines, 8); /* the help went over several lines */
    struct sample_conf c;
    memset(&c, 0, sizeof(c));
    conf_defaults(long_items, 2, &c);
    cal_status st = conf_load(long_items, 2, &c, path, err, sizeof(err));
    unlink(path);
    ck_assert_msg(st == CAL_OK, "%s", err);
    ck_assert_int_eq(c.port, 80);
}
END_TEST

START_TEST(dsn_parsing)
{
    struct db_conf c;
    char err[128];
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(db_conf_parse_dsn(&c, "mysql://app:s3cret@127.0.0.1:3307/calendar_shard0", err,
                                       sizeof(err)),
                     CAL_OK);
    ck_assert_str_eq(c.user, "app");
    ck_assert_str_eq(c.password, "s3cret");
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_uint_eq(c.port, 3307);
    ck_assert_str_eq(c.database, "calendar_shard0");
    memset(&c, 0, sizeof(c));
    ck_assert_int_eq(db_conf_parse_dsn(&c, "mysql://app@db.example/x", err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(c.port, 3306);
    ck_assert_str_eq(c.password, "");
    ck_assert_int_eq(db_conf_parse_dsn(&c, "postgres://a@b/c", err, sizeof(err)), CAL_EINVAL);
    ck_assert_int_eq(db_conf_parse_dsn(&c, "mysql://a@b:99999/c", err, sizeof(err)), CAL_EINVAL);
    ck_assert_int_eq(db_conf_parse_dsn(&c, "mysql://a@:1/c", err, sizeof(err)), CAL_EINVAL);
}
END_TEST

START_TEST(password_file_mode)
{
    struct db_conf c;
    char err[256];
    char path[] = "/tmp/check_pw_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "hunter2\n", 8), 8);
    close(fd);
    memset(&c, 0, sizeof(c));
    snprintf(c.password_file, sizeof(c.password_file), "%s", path);
    chmod(path, 0600);
    ck_assert_int_eq(db_conf_read_password(&c, err, sizeof(err)), CAL_OK);
    ck_assert_str_eq(c.password, "hunter2");
    chmod(path, 0644);
    ck_assert_int_eq(db_conf_read_password(&c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "chmod 600"));
    unlink(path);
}
END_TEST

/* A password that does not fit is refused, not cut (which would fail
 * later as a misleading "Access denied"). */
START_TEST(password_file_too_long)
{
    struct db_conf c;
    char err[256], pw[200];
    char path[] = "/tmp/check_pw_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fchmod(fd, 0600);
    memset(pw, 'x', sizeof(pw));
    /* 127 bytes and a CRLF still fit. */
    ck_assert_int_eq(write(fd, pw, 127), 127);
    ck_assert_int_eq(write(fd, "\r\n", 2), 2);
    memset(&c, 0, sizeof(c));
    snprintf(c.password_file, sizeof(c.password_file), "%s", path);
    ck_assert_int_eq(db_conf_read_password(&c, err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(strlen(c.password), 127);
    ck_assert_int_eq(ftruncate(fd, 0), 0);
    ck_assert_int_eq(pwrite(fd, pw, sizeof(pw), 0), (ssize_t)sizeof(pw));
    close(fd);
    ck_assert_int_eq(db_conf_read_password(&c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "longer than 127 bytes"));
    unlink(path);
}
END_TEST

/* The client's read timeout must outlast the lock wait by 2 s. */
START_TEST(lock_wait_below_read_timeout)
{
    char err[256];
    struct db_conf c = {.read_timeout_ms = 5000, .lock_wait_timeout_s = 5};
    ck_assert_int_eq(db_conf_check_timeouts(&c, "x.ini", "shards", err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "x.ini: [shards] read_timeout_ms"));
    c.lock_wait_timeout_s = 4;
    ck_assert_int_eq(db_conf_check_timeouts(&c, "x.ini", "shards", err, sizeof(err)), CAL_EINVAL);
    c.lock_wait_timeout_s = 3;
    ck_assert_int_eq(db_conf_check_timeouts(&c, "x.ini", "shards", err, sizeof(err)), CAL_OK);
    c = (struct db_conf){.read_timeout_ms = 4001, .lock_wait_timeout_s = 3}; /* 5 s, rounded up */
    ck_assert_int_eq(db_conf_check_timeouts(&c, "x.ini", "shards", err, sizeof(err)), CAL_OK);
    c = (struct db_conf){0}; /* the defaults: 5 s and 2 s */
    ck_assert_int_eq(db_conf_check_timeouts(&c, "x.ini", "shards", err, sizeof(err)), CAL_OK);
}
END_TEST

START_TEST(routing_hash_is_stable)
{
    /* Published values (computed apart from the code, with the README's
     * constants): changing the hash would strand every listing. */
    ck_assert_uint_eq(shardmap_fmix64(0), 0);
    ck_assert_uint_eq(shardmap_fmix64(1), 0x48a926f357cfb187ULL);
    ck_assert_uint_eq(shardmap_vbucket(42, 4096), 740);
    ck_assert_uint_eq(shardmap_vbucket(42, 4096), (uint32_t)(shardmap_fmix64(42) % 4096));
    /* Spread: 4096 vbuckets over 100k sequential ids, none empty or hot. */
    static unsigned counts[4096];
    memset(counts, 0, sizeof(counts));
    for (uint64_t id = 1; id <= 409600; id++)
        counts[shardmap_vbucket(id, 4096)]++;
    for (int v = 0; v < 4096; v++) {
        ck_assert_uint_gt(counts[v], 50);
        ck_assert_uint_lt(counts[v], 170);
    }
}
END_TEST

START_TEST(cache_keys)
{
    char buf[CACHEKEY_MAX];
    ck_assert_uint_eq(cachekey_listing(42, buf), strlen("cal:v1:L:42"));
    ck_assert_str_eq(buf, "cal:v1:L:42");
    cachekey_month(42, 2031, 2, buf);
    ck_assert_str_eq(buf, "cal:v1:M:42:203102");
    cachekey_month_of(9223372036854775807ULL, date_from_ymd(2031, 12, 31), buf);
    ck_assert_str_eq(buf, "cal:v1:M:9223372036854775807:203112");
    /* Written digit by digit: the same keys as the printf format they
     * replaced, zero padding and the largest id included. */
    const uint64_t ids[] = {0, 7, 10, 99, 1000000, 4294967296ULL, UINT64_MAX};
    const int years[] = {0, 7, 99, 987, 1970, 2031, 9999};
    char want[CACHEKEY_MAX];
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        snprintf(want, sizeof(want), "cal:v1:L:%llu", (unsigned long long)ids[i]);
        ck_assert_uint_eq(cachekey_listing(ids[i], buf), strlen(want));
        ck_assert_str_eq(buf, want);
        for (size_t y = 0; y < sizeof(years) / sizeof(years[0]); y++)
            for (unsigned m = 1; m <= 12; m++) {
                snprintf(want, sizeof(want), "cal:v1:M:%llu:%04d%02u", (unsigned long long)ids[i],
                         years[y], m);
                ck_assert_uint_eq(cachekey_month(ids[i], years[y], m, buf), strlen(want));
                ck_assert_str_eq(buf, want);
            }
    }
}
END_TEST

/* A file path the program opens later is checked at load: set, it must
 * name a regular file that can be read. */
START_TEST(readable_file_values)
{
    char why[640], path[] = "/tmp/check_ca_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(conf_check_readable_file("", why, sizeof(why)), CAL_OK);
    ck_assert_int_eq(conf_check_readable_file(path, why, sizeof(why)), CAL_OK);
    ck_assert_int_eq(conf_check_readable_file("/nonexistent/ca.pem", why, sizeof(why)), CAL_EINVAL);
    ck_assert_str_eq(why, "cannot read /nonexistent/ca.pem: No such file or directory");
    ck_assert_int_eq(conf_check_readable_file("/tmp", why, sizeof(why)), CAL_EINVAL);
    ck_assert_str_eq(why, "/tmp is not a regular file");
    /* A FIFO without a writer is refused at once, not waited on. */
    char fifo[64];
    snprintf(fifo, sizeof(fifo), "%s.fifo", path);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert_int_eq(conf_check_readable_file(fifo, why, sizeof(why)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(why, "is not a regular file"));
    unlink(fifo);
    if (geteuid() != 0) { /* root reads it anyway */
        chmod(path, 0);
        ck_assert_int_eq(conf_check_readable_file(path, why, sizeof(why)), CAL_EINVAL);
        ck_assert_ptr_nonnull(strstr(why, "Permission denied"));
    }
    unlink(path);
}
END_TEST

/* The database sections of calendard, calendar-admin and calendar-rebalance
 * (common/dbconf.h) refuse a tls_ca that cannot be read, naming the file's
 * line, the key and the path: the daemon would fail every connection. */
struct db_section_conf {
    struct db_conf shard;
};

static const struct conf_item db_items[] = {
    DBCONF_SESSION_ITEMS("shards", struct db_section_conf, shard, "cal_app"),
};

static cal_status
load_db_text(const char *text, struct db_section_conf *conf, char *err, size_t errlen)
{
    char path[] = "/tmp/check_dbconf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    memset(conf, 0, sizeof(*conf));
    conf_defaults(db_items, CAL_ARRAY_LEN(db_items), conf);
    cal_status st = conf_load(db_items, CAL_ARRAY_LEN(db_items), conf, path, err, errlen);
    unlink(path);
    return st;
}

START_TEST(tls_ca_is_read_at_load)
{
    struct db_section_conf c;
    char err[768], text[256], ca[] = "/tmp/check_ca_XXXXXX";
    int fd = mkstemp(ca);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(load_db_text("[shards]\ntls = true\n", &c, err, sizeof(err)), CAL_OK);
    ck_assert_str_eq(c.shard.tls_ca, "");
    snprintf(text, sizeof(text), "[shards]\ntls = true\ntls_ca = %s\n", ca);
    ck_assert_msg(load_db_text(text, &c, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_str_eq(c.shard.tls_ca, ca);
    unlink(ca);
    ck_assert_int_eq(load_db_text(text, &c, err, sizeof(err)), CAL_EINVAL);
    snprintf(text, sizeof(text), ":3: [shards] tls_ca: cannot read %s: No such file or directory",
             ca);
    ck_assert_msg(strstr(err, text) != NULL, "%s", err);
}
END_TEST

/* libmemcached's parser takes "host:abc" as a server on some port; the
 * configuration must refuse it, naming the entry. */
START_TEST(cache_server_lists)
{
    char err[256];
    static const char *const good[] = {"127.0.0.1:11211", "cache-1.internal:11211",
                                       "10.0.0.1:1,10.0.0.2:65535", "mc_a:11212,mc_b:11213"};
    static const char *const bad[] = {"",
                                      "127.0.0.1",
                                      "127.0.0.1:",
                                      "127.0.0.1:abc",
                                      "127.0.0.1:0",
                                      "127.0.0.1:65536",
                                      "127.0.0.1:11211,",
                                      ",127.0.0.1:11211",
                                      "127.0.0.1:11211 127.0.0.2:11211",
                                      "127.0.0.1:11211:5",
                                      ":11211",
                                      "127.0.0.1:0000011211"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(cache_servers_check(good[i], err, sizeof(err)) == CAL_OK, "%s: %s", good[i],
                      err);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(cache_servers_check(bad[i], err, sizeof(err)) == CAL_EINVAL, "accepted '%s'",
                      bad[i]);
    cache_servers_check("127.0.0.1:11211,127.0.0.1:x", err, sizeof(err));
    ck_assert_msg(strstr(err, "'127.0.0.1:x'") != NULL, "%s", err);
}
END_TEST

/* A test that fails or times out while a server is stopped ends before
 * its own SIGCONT: on a timeout Check kills the test's whole process group
 * (SIGKILL) while the test still runs. The server must run again anyway. */
START_TEST(a_process_stopped_by_a_test_that_dies_runs_again)
{
    char *argv[] = {"sleep", "30", NULL};
    pid_t target = proc_start_tied(argv, "/dev/null");
    ck_assert_int_gt(target, 0);
    int sync[2];
    ck_assert_int_eq(pipe(sync), 0);
    pid_t test = fork();
    ck_assert_int_ge(test, 0);
    if (test == 0) {
        setpgid(0, 0); /* a group of its own, as Check's fork mode gives each test */
        char ok = proc_stop(target) && proc_state(target) == 'T' ? 'T' : '?';
        if (write(sync[1], &ok, 1) != 1)
            _exit(2);
        pause(); /* a test hung until its timeout */
        _exit(0);
    }
    close(sync[1]);
    char ok = 0;
    ck_assert_int_eq(read(sync[0], &ok, 1), 1);
    close(sync[0]);
    ck_assert_msg(ok == 'T', "the stop did not take");
    killpg(test, SIGKILL); /* what Check does to a test's group at its timeout */
    int status = 0;
    ck_assert_int_eq(waitpid(test, &status, 0), test);
    char state = 'T';
    for (int i = 0; i < 2000 && (state = proc_state(target)) == 'T'; i++)
        usleep(10000);
    kill(target, SIGKILL);
    ck_assert_msg(state != 'T', "still stopped 20 s after the test that stopped it was killed");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("common");
    UNIT_CASE(s, dates_round_trip);
    UNIT_CASE(s, monotonic_deadlines);
    UNIT_CASE(s, config_table);
    UNIT_CASE(s, sample_config_reads_back);
    UNIT_CASE(s, ipv4_values);
    UNIT_CASE(s, readable_file_values);
    UNIT_CASE(s, tls_ca_is_read_at_load);
    UNIT_CASE(s, dsn_parsing);
    UNIT_CASE(s, password_file_mode);
    UNIT_CASE(s, password_file_too_long);
    UNIT_CASE(s, lock_wait_below_read_timeout);
    UNIT_CASE(s, routing_hash_is_stable);
    UNIT_CASE(s, cache_keys);
    UNIT_CASE(s, cache_server_lists);
    UNIT_CASE(s, a_process_stopped_by_a_test_that_dies_runs_again);
    return unit_run(s);
}
