/* Loads the stack description written by tests/stack/stack.sh and offers the
 * small shared facts (routing, dates, SQL connections) tests check against. */
#include "tests/lib/testenv.h"

#include "sharding/shardmap.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TESTENV_DEFAULT_PATH "var/stack.env"

static void
copy_str(char *dst, size_t dstlen, const char *src)
{
    snprintf(dst, dstlen, "%s", src);
}

/* Strips surrounding blanks and one level of matching quotes in place. */
static char *
unquote(char *s)
{
    size_t len;

    while (isspace((unsigned char)*s)) {
        s++;
    }
    len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1])) {
        s[--len] = '\0';
    }
    if (len >= 2 && (s[0] == '"' || s[0] == '\'') && s[len - 1] == s[0]) {
        s[len - 1] = '\0';
        s++;
    }
    return s;
}

static cal_status
split_dsns(struct testenv *env, const char *value, char *err, size_t errlen)
{
    const char *p = value;

    env->nshards = 0;
    while (*p != '\0') {
        size_t n;

        while (isspace((unsigned char)*p)) {
            p++;
        }
        n = strcspn(p, " \t\r\n");
        if (n == 0) {
            break;
        }
        if (env->nshards == TESTENV_MAX_SHARDS) {
            snprintf(err, errlen, "SHARD_DSNS: more than %d shards", TESTENV_MAX_SHARDS);
            return CAL_EINVAL;
        }
        if (n >= sizeof(env->shard_dsns[0])) {
            snprintf(err, errlen, "SHARD_DSNS: DSN too long");
            return CAL_EINVAL;
        }
        memcpy(env->shard_dsns[env->nshards], p, n);
        env->shard_dsns[env->nshards][n] = '\0';
        env->nshards++;
        p += n;
    }
    return CAL_OK;
}

int
testenv_url_is_loopback(const char *url)
{
    static const char prefix[] = "http://127.0.0.1";
    size_t n = sizeof(prefix) - 1;

    if (strncmp(url, prefix, n) != 0) {
        return 0;
    }
    return url[n] == '\0' || url[n] == ':' || url[n] == '/';
}

cal_status
testenv_load(struct testenv *env, const char *path, char *err, size_t errlen)
{
    FILE *fp = NULL;
    char line[4096];
    cal_status st = CAL_OK;
    size_t len;

    memset(env, 0, sizeof(*env));
    if (path == NULL || path[0] == '\0') {
        path = getenv("STACK_ENV");
    }
    if (path == NULL || path[0] == '\0') {
        path = TESTENV_DEFAULT_PATH;
    }
    copy_str(env->path, sizeof(env->path), path);
    fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(err, errlen, "cannot open stack env %s: %s (set STACK_ENV or run make stack-up)",
                 path, strerror(errno));
        return CAL_ENOTFOUND;
    }
    while (fgets(line, sizeof(line), fp) != NULL) {
        char *key = line, *eq, *value;

        while (isspace((unsigned char)*key)) {
            key++;
        }
        if (*key == '#' || *key == '\0') {
            continue;
        }
        if (strncmp(key, "export ", 7) == 0) {
            key += 7;
        }
        eq = strchr(key, '=');
        if (eq == NULL) {
            continue;
        }
        *eq = '\0';
        value = unquote(eq + 1);
        key = unquote(key);
        if (strcmp(key, "CALENDARD_URL") == 0) {
            copy_str(env->calendard_url, sizeof(env->calendard_url), value);
        } else if (strcmp(key, "CATALOG_DSN") == 0) {
            copy_str(env->catalog_dsn, sizeof(env->catalog_dsn), value);
        } else if (strcmp(key, "SHARD_DSNS") == 0) {
            st = split_dsns(env, value, err, errlen);
            if (st != CAL_OK) {
                goto out;
            }
        } else if (strcmp(key, "MEMCACHED_SERVERS") == 0) {
            copy_str(env->memcached_servers, sizeof(env->memcached_servers), value);
        } else if (strcmp(key, "STACK_DIR") == 0) {
            copy_str(env->stack_dir, sizeof(env->stack_dir), value);
        }
    }
    len = strlen(env->calendard_url);
    while (len > 0 && env->calendard_url[len - 1] == '/') {
        env->calendard_url[--len] = '\0';
    }
    if (env->calendard_url[0] == '\0' || env->catalog_dsn[0] == '\0' || env->nshards == 0) {
        snprintf(err, errlen, "%s: CALENDARD_URL, CATALOG_DSN and SHARD_DSNS are required", path);
        st = CAL_EINVAL;
        goto out;
    }
    if (!testenv_url_is_loopback(env->calendard_url)) {
        snprintf(err, errlen, "%s: CALENDARD_URL %s is not http://127.0.0.1", path,
                 env->calendard_url);
        st = CAL_EINVAL;
        goto out;
    }
out:
    fclose(fp);
    return st;
}

struct db *
testenv_connect_dsn(const char *dsn, char *err, size_t errlen)
{
    struct db_conf conf;

    memset(&conf, 0, sizeof(conf));
    if (db_conf_parse_dsn(&conf, dsn, err, errlen) != CAL_OK) {
        return NULL;
    }
    conf.connect_timeout_ms = 3000;
    conf.read_timeout_ms = 30000;
    conf.write_timeout_ms = 30000;
    conf.lock_wait_timeout_s = 10;
    return db_connect(&conf, err, errlen);
}

struct db *
testenv_connect_catalog(const struct testenv *env, char *err, size_t errlen)
{
    return testenv_connect_dsn(env->catalog_dsn, err, errlen);
}

struct db *
testenv_connect_shard(const struct testenv *env, size_t idx, char *err, size_t errlen)
{
    if (idx >= env->nshards) {
        snprintf(err, errlen, "no shard %zu (have %zu)", idx, env->nshards);
        return NULL;
    }
    return testenv_connect_dsn(env->shard_dsns[idx], err, errlen);
}

int
testenv_get_global(const struct testenv *env, size_t idx, const char *name, long long *value,
                   char *err, size_t errlen)
{
    char sql[128];
    struct db_stmt *st;
    struct db_val c[1];
    struct db *d = testenv_connect_shard(env, idx, err, errlen);
    if (d == NULL)
        return -1;
    snprintf(sql, sizeof(sql), "SELECT @@GLOBAL.%s", name);
    int rc = -1;
    if (db_query(d, sql, NULL, 0, &st, err, errlen) == CAL_OK &&
        db_fetch(st, c, 1, err, errlen) == 1) {
        *value = c[0].type == DB_INT ? c[0].i : atoll(c[0].s);
        rc = 0;
        while (db_fetch(st, c, 1, err, errlen) > 0)
            ;
    }
    db_close(d);
    return rc;
}

int
testenv_set_global(const struct testenv *env, size_t idx, const char *name, long long value)
{
    char cmd[1024];
    struct passwd *pw = getpwuid(getuid());
    if (pw == NULL || idx >= env->nshards)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "mariadb --no-defaults --socket='%s/shard%zu/mysqld.sock' -u'%s'"
             " -e 'SET GLOBAL %s = %lld'",
             env->stack_dir, idx, pw->pw_name, name, value);
    return system(cmd);
}

FILE *
testenv_sql_admin_open(const struct testenv *env, size_t idx)
{
    char cmd[1024];
    struct passwd *pw = getpwuid(getuid());
    if (pw == NULL || idx >= env->nshards)
        return NULL;
    snprintf(cmd, sizeof(cmd),
             "mariadb --no-defaults --batch --socket='%s/shard%zu/mysqld.sock' -u'%s' >/dev/null",
             env->stack_dir, idx, pw->pw_name);
    return popen(cmd, "w");
}

int
testenv_sql_admin_close(FILE *session)
{
    int rc = pclose(session);
    return rc == 0 ? 0 : rc == -1 ? -1 : 1;
}

int
testenv_sql_admin(const struct testenv *env, size_t idx, const char *sql)
{
    FILE *p = testenv_sql_admin_open(env, idx);
    if (p == NULL)
        return -1;
    fputs(sql, p);
    return testenv_sql_admin_close(p);
}

int
testenv_sql_admin_value(const struct testenv *env, size_t idx, const char *sql, char *out,
                        size_t outlen)
{
    char cmd[1024];
    struct passwd *pw = getpwuid(getuid());
    if (pw == NULL || idx >= env->nshards || outlen == 0 || strpbrk(sql, "\"\\$`") != NULL)
        return -1;
    int n = snprintf(cmd, sizeof(cmd),
                     "mariadb --no-defaults --batch --skip-column-names "
                     "--socket='%s/shard%zu/mysqld.sock' -u'%s' -e \"%s\"",
                     env->stack_dir, idx, pw->pw_name, sql);
    if (n < 0 || (size_t)n >= sizeof(cmd))
        return -1;
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    out[0] = '\0';
    if (fgets(out, (int)outlen, p) != NULL)
        out[strcspn(out, "\n")] = '\0';
    char rest[256];
    while (fgets(rest, sizeof(rest), p) != NULL)
        ;
    return pclose(p) == 0 ? 0 : -1;
}

int
testenv_find_shard(const struct testenv *env, unsigned port, const char *db_name)
{
    for (size_t i = 0; i < env->nshards; i++) {
        struct db_conf conf;
        char err[256];

        memset(&conf, 0, sizeof(conf));
        if (db_conf_parse_dsn(&conf, env->shard_dsns[i], err, sizeof(err)) != CAL_OK) {
            continue;
        }
        if (conf.port == port && strcmp(conf.database, db_name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

uint64_t
testenv_fmix64(uint64_t k)
{
    return shardmap_fmix64(k);
}

unsigned
testenv_vbucket(uint64_t listing_id)
{
    return (unsigned)(testenv_fmix64(listing_id) % TESTENV_NUM_VBUCKETS);
}

int64_t
testenv_today(void)
{
    return (int64_t)(time(NULL) / 86400);
}

void
testenv_format_date(int64_t days, char *buf, size_t buflen)
{
    time_t t = (time_t)(days * 86400);
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(buf, buflen, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

int
testenv_parse_date(const char *s, int64_t *days)
{
    struct tm tm;
    int y, m, d, n = 0;
    time_t t;

    if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || n != 10) {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    t = timegm(&tm);
    /* timegm normalises 02-30 to 03-02: reject dates that moved. */
    if (tm.tm_year != y - 1900 || tm.tm_mon != m - 1 || tm.tm_mday != d) {
        return -1;
    }
    *days = (int64_t)(t / 86400);
    return 0;
}

uint64_t
testenv_random48(void)
{
    uint64_t r = 0;
    struct timespec ts;

    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        clock_gettime(CLOCK_REALTIME, &ts);
        r = testenv_fmix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                           ((uint64_t)getpid() << 40));
    }
    r &= (1ULL << 48) - 1;
    return r == 0 ? 1 : r;
}

unsigned
testenv_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    unsigned port = 0;
    if (fd < 0)
        return 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}
