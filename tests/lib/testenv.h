/* What the integration tests and the stress tool know about a running stack:
 * the KEY=VALUE file named by $STACK_ENV, SQL connections to it, and the
 * listing -> vbucket routing rule that the tests check the daemon against. */
#ifndef CAL_TESTENV_H
#define CAL_TESTENV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/db.h"
#include "common/status.h"

#define TESTENV_MAX_SHARDS 16
#define TESTENV_NUM_VBUCKETS 4096

struct testenv {
    char path[512];
    char calendard_url[256]; /* "http://127.0.0.1:PORT", no trailing slash */
    char catalog_dsn[512];
    char shard_dsns[TESTENV_MAX_SHARDS][512];
    size_t nshards;
    char memcached_servers[256];
    char stack_dir[512];
};

/* Loads a sourceable KEY=VALUE file (values may be double- or single-quoted,
 * "export " prefixes and # comments are allowed). path NULL or "" means
 * $STACK_ENV, then "var/stack.env". Fails when CALENDARD_URL, CATALOG_DSN or
 * SHARD_DSNS is missing, or the URL does not point at 127.0.0.1. */
cal_status testenv_load(struct testenv *env, const char *path, char *err, size_t errlen);

/* True when url is plain http on 127.0.0.1: the only targets the tests and
 * the stress tool ever talk to. */
int testenv_url_is_loopback(const char *url);

/* Connects to a DSN of the env file. Caller frees with db_close(). */
struct db *testenv_connect_dsn(const char *dsn, char *err, size_t errlen);
struct db *testenv_connect_catalog(const struct testenv *env, char *err, size_t errlen);
struct db *testenv_connect_shard(const struct testenv *env, size_t idx, char *err, size_t errlen);

/* SET GLOBAL name = value on the server of shard idx (env->shard_dsns
 * order), through its socket under STACK_DIR as the OS user's unix_socket
 * account, the stack's administrator (the SQL users may not). Returns 0 on
 * success; never aborts, so unchecked fixtures can use it. */
int testenv_set_global(const struct testenv *env, size_t idx, const char *name, long long value);

/* The value of the numeric global variable name on the server of shard idx,
 * on a connection of its own, into *value. Returns 0, or -1 with err filled;
 * never aborts, so unchecked fixtures can use it. */
int testenv_get_global(const struct testenv *env, size_t idx, const char *name, long long *value,
                       char *err, size_t errlen);

/* Runs sql (statements separated by ';', one session, no default database)
 * on the server of shard idx as testenv_set_global() does: for what the SQL
 * users may not do (SET SESSION binlog_format, other databases). Results are
 * discarded, errors go to stderr. Returns 0 when every statement succeeded. */
int testenv_sql_admin(const struct testenv *env, size_t idx, const char *sql);

/* The session of testenv_sql_admin() kept open: write statements to the
 * stream it returns (fflush runs what was written), then end the session
 * with testenv_sql_admin_close(), 0 when every statement succeeded. NULL
 * when the client cannot start. */
FILE *testenv_sql_admin_open(const struct testenv *env, size_t idx);
int testenv_sql_admin_close(FILE *session);

/* Runs one query as testenv_sql_admin() does and copies the first column of
 * its first row into out ("" when it has none). sql must hold no double
 * quote, backslash, '$' or backquote (it goes through the shell). Returns 0,
 * or -1 when the query or the client failed. */
int testenv_sql_admin_value(const struct testenv *env, size_t idx, const char *sql, char *out,
                            size_t outlen);

/* Index into env->shard_dsns of the DSN naming port and database db_name,
 * or -1. Used to turn a catalog shards row into a connection. */
int testenv_find_shard(const struct testenv *env, unsigned port, const char *db_name);

/* A loopback TCP port nobody listens on now (bound, read, closed), for a
 * server a test starts of its own; 0 when none could be bound. */
unsigned testenv_free_port(void);

/* MurmurHash3 fmix64 and the routing rule vbucket = fmix64(id) % 4096. */
uint64_t testenv_fmix64(uint64_t k);
unsigned testenv_vbucket(uint64_t listing_id);

/* Days since 1970-01-01 of today in UTC, and conversions to and from
 * "YYYY-MM-DD" (buf needs 11 bytes). testenv_parse_date returns -1 on error. */
int64_t testenv_today(void);
void testenv_format_date(int64_t days, char *buf, size_t buflen);
int testenv_parse_date(const char *s, int64_t *days);

/* A random nonzero 48-bit number from getrandom(), falling back to time and
 * pid: listing ids unique per run. */
uint64_t testenv_random48(void);

#endif
