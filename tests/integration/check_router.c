/* Integration tests of calendard's router against the stack's catalog: a
 * shard whose address changes in the catalog (a replica promoted) is
 * followed by the next map load, and the old pool lets its connections go;
 * a busy shard is ready, one whose breaker opened is not; an unreachable
 * one is named to clients without its connect error. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "calendard/idblock.h"
#include "calendard/router.h"
#include "calendard/service.h"
#include "common/db.h"
#include "common/util.h"
#include "sharding/shardmap.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

static struct testenv env;
static struct shard_row {
    uint32_t id;
    unsigned port;
    char db_name[65];
} rows[2]; /* the catalog's first two shards, as they were */

/* The first two rows of the catalog's shards table. */
static void
two_shards(struct db *cat, struct shard_row *out)
{
    char err[256];
    struct db_stmt *st;
    struct db_val c[3];
    ck_assert_msg(db_query(cat, "SELECT shard_id, port, db_name FROM shards ORDER BY shard_id",
                           NULL, 0, &st, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    int n = 0;
    while (db_fetch(st, c, 3, err, sizeof(err)) > 0) {
        if (n < 2) {
            out[n].id = (uint32_t)c[0].i;
            out[n].port = (unsigned)c[1].i;
            cal_strlcpy(out[n].db_name, c[2].s, sizeof(out[n].db_name));
        }
        n++;
    }
    ck_assert_int_ge(n, 2);
}

static void
set_address(struct db *cat, uint32_t shard_id, const struct shard_row *to)
{
    char err[256];
    struct db_val p[3] = {DB_INT_V(to->port), DB_CSTR_V(to->db_name), DB_INT_V(shard_id)};
    ck_assert_msg(db_query(cat, "UPDATE shards SET port = ?, db_name = ? WHERE shard_id = ?", p, 3,
                           NULL, err, sizeof(err)) == CAL_OK,
                  "%s", err);
}

/* The database a connection of the pool is connected to, or "" on error. */
static void
database_of(struct pool *pool, char *out, size_t size)
{
    char err[256];
    struct db *db;
    struct db_stmt *st;
    struct db_val c[1];
    out[0] = '\0';
    if (pool_get(pool, &db, err, sizeof(err)) != CAL_OK)
        return;
    if (db_query(db, "SELECT DATABASE()", NULL, 0, &st, err, sizeof(err)) == CAL_OK) {
        if (db_fetch(st, c, 1, err, sizeof(err)) == 1 && c[0].type == DB_STR)
            cal_strlcpy(out, c[0].s, size);
        while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
            ;
    }
    pool_put(pool, db);
}

/* A route to the shard with this id. */
static struct route
route_to(struct router *r, uint32_t shard_id)
{
    char err[256];
    struct route rt;
    for (int i = 0; i < 100000; i++) {
        ck_assert_msg(router_route(r, testenv_random48(), &rt, err, sizeof(err)) == CAL_OK, "%s",
                      err);
        if (rt.shard_id == shard_id)
            return rt;
    }
    ck_abort_msg("no listing routes to shard %u", shard_id);
    return rt;
}

/* The id of the shard row that a_removed_shard_closes_its_connections
 * adds, and restore_shards takes out (with its vbucket) if it crashed. */
#define ADDED_SHARD 900

/* Unchecked fixture, in this process: the shards as they were, and put
 * back even when the test crashed or timed out. */
static void
remember_shards(void)
{
    char err[256];
    ck_assert_msg(testenv_load(&env, NULL, err, sizeof(err)) == CAL_OK, "%s", err);
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    two_shards(cat, rows);
    db_close(cat);
}

static void
restore_shards(void)
{
    char err[256] = "";
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    struct db_val p[3] = {DB_INT_V(rows[0].port), DB_CSTR_V(rows[0].db_name), DB_INT_V(rows[0].id)};
    struct db_val added[2] = {DB_INT_V(rows[1].id), DB_INT_V(ADDED_SHARD)};
    if (cat == NULL ||
        db_query(cat, "UPDATE shards SET port = ?, db_name = ? WHERE shard_id = ?", p, 3, NULL, err,
                 sizeof(err)) != CAL_OK ||
        db_query(cat, "UPDATE vbuckets SET shard_id = ? WHERE shard_id = ?", added, 2, NULL, err,
                 sizeof(err)) != CAL_OK ||
        db_query(cat, "DELETE FROM shards WHERE shard_id = ?", added + 1, 1, NULL, err,
                 sizeof(err)) != CAL_OK)
        fprintf(stderr, "check_router: could not restore the shards: %s\n", err);
    db_close(cat);
}

/* A caller waiting for a connection of a full pool. */
struct pool_waiter {
    struct pool *pool;
    cal_status rc;
    struct db *db;
    bool put_back; /* returns the connection at once */
};

static void *
wait_for_connection(void *arg)
{
    struct pool_waiter *w = arg;
    char err[256];
    w->rc = pool_get(w->pool, &w->db, err, sizeof(err));
    if (w->rc == CAL_OK && w->put_back)
        pool_put(w->pool, w->db);
    return NULL;
}

/* A connection put back inside a transaction (a caller's bug) is rolled
 * back there: the next borrower does not inherit the transaction, and its
 * locks (here a fence row, which would hold up a move's cutover) go. */
START_TEST(a_connection_put_back_inside_a_transaction_is_rolled_back)
{
    char err[256];
    struct db_conf dc = {.connect_timeout_ms = 3000, .read_timeout_ms = 30000};
    ck_assert(db_conf_parse_dsn(&dc, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    struct pool *pool = pool_create(&dc, 1, 5000);
    struct db *db, *again;
    ck_assert_msg(pool_get(pool, &db, err, sizeof(err)) == CAL_OK, "%s", err);
    static const char lock_sql[] = "SELECT epoch FROM vbucket_owner WHERE vbucket ="
                                   " (SELECT MIN(vbucket) FROM vbucket_owner) FOR UPDATE";
    struct db_stmt *st;
    struct db_val c[1];
    ck_assert_msg(db_begin(db, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_msg(db_query(db, lock_sql, NULL, 0, &st, err, sizeof(err)) == CAL_OK, "%s", err);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    ck_assert(db_in_txn(db));
    pool_put(pool, db);

    struct db *other = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(other != NULL, "%s", err);
    ck_assert(db_exec(other, "SET SESSION innodb_lock_wait_timeout = 1", err, sizeof(err)) ==
              CAL_OK);
    ck_assert_msg(db_begin(other, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_msg(db_query(other, lock_sql, NULL, 0, &st, err, sizeof(err)) == CAL_OK,
                  "the fence row is still locked: %s", err);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    db_rollback(other);
    db_close(other);
    ck_assert_msg(pool_get(pool, &again, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_ptr_eq(again, db);
    ck_assert(!db_in_txn(again));
    pool_put(pool, again);
    pool_destroy(pool);
}
END_TEST

/* A connection put back wakes one waiter, which gets it; when that one puts
 * it back, the next waiter gets it: each put is handed on, none lost. */
START_TEST(a_connection_put_back_goes_to_each_waiter_in_turn)
{
    char err[256];
    struct db_conf dc = {.connect_timeout_ms = 3000, .read_timeout_ms = 30000};
    ck_assert(db_conf_parse_dsn(&dc, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    struct pool *pool = pool_create(&dc, 1, 5000);
    struct db *held;
    ck_assert_msg(pool_get(pool, &held, err, sizeof(err)) == CAL_OK, "%s", err);
    /* The pool is full: a caller that cannot wait gets CAL_EAGAIN. */
    struct pool *quick = pool_create(&dc, 1, 50);
    struct db *q1, *q2;
    ck_assert_msg(pool_get(quick, &q1, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(pool_get(quick, &q2, err, sizeof(err)), CAL_EAGAIN);
    pool_put(quick, q1);
    pool_destroy(quick);

    struct pool_waiter w[2] = {{.pool = pool, .put_back = true}, {.pool = pool, .put_back = true}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, wait_for_connection, &w[i]);
    cal_sleep_ms(200); /* both waiting, most likely; the outcome is the same if not */
    pool_put(pool, held);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(w[i].rc == CAL_OK, "waiter %d: %s", i, cal_status_name(w[i].rc));
        ck_assert_ptr_eq(w[i].db, held); /* the one connection, handed on */
    }
    ck_assert_uint_eq(pool_size(pool), 1);
    pool_destroy(pool);
}
END_TEST

START_TEST(a_shard_address_change_in_the_catalog_is_followed)
{
    char err[256];
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    struct router_conf conf = {.pool_size = 4,
                               .pool_wait_ms = 1000,
                               .refresh_interval_ms = 3600000, /* reloads only when asked */
                               .breaker_threshold = 5,
                               .breaker_cooldown_ms = 2000};
    ck_assert(db_conf_parse_dsn(&conf.catalog, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    ck_assert(db_conf_parse_dsn(&conf.shard, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    struct router *r = router_create(&conf);

    struct route before = route_to(r, rows[0].id);
    char db_before[65], db_moved[65], db_back[65];
    database_of(before.pool, db_before, sizeof(db_before));
    struct db *held;
    ck_assert(pool_get(before.pool, &held, err, sizeof(err)) == CAL_OK);

    /* Shard 0's row now names shard 1's server and database. Everything is
     * measured first and asserted after the row is put back (restore_shards
     * puts it back too if this crashes). */
    set_address(cat, rows[0].id, &rows[1]);
    cal_status reload = router_refresh(r, err, sizeof(err));
    struct route moved = route_to(r, rows[0].id);
    database_of(moved.pool, db_moved, sizeof(db_moved));
    struct db *db;
    cal_status old_get = pool_get(before.pool, &db, err, sizeof(err));
    pool_put(before.pool, held); /* in use during the change: closed as it comes back */
    unsigned old_open = pool_size(before.pool);

    set_address(cat, rows[0].id, &rows[0]);
    cal_status reload_back = router_refresh(r, err, sizeof(err));
    struct route back = route_to(r, rows[0].id);
    database_of(back.pool, db_back, sizeof(db_back));

    ck_assert_str_eq(db_before, rows[0].db_name);
    ck_assert_int_eq(reload, CAL_OK);
    ck_assert_ptr_ne(moved.pool, before.pool);
    ck_assert_str_eq(db_moved, rows[1].db_name);
    ck_assert_int_eq(old_get, CAL_EMOVED); /* route again */
    ck_assert_uint_eq(old_open, 0);
    ck_assert_int_eq(reload_back, CAL_OK);
    ck_assert_str_eq(db_back, rows[0].db_name);
    /* An unchanged address keeps its pool. Each refresh reads the catalog
     * again (each asks after the last read began), 5 ms apart at least. */
    uint64_t t0 = cal_mono_us();
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(router_refresh(r, err, sizeof(err)), CAL_OK);
    ck_assert_uint_ge(cal_mono_us() - t0, 9 * 5000);
    ck_assert_ptr_eq(route_to(r, rows[0].id).pool, back.pool);
    router_destroy(r);
    db_close(cat);
}
END_TEST

/* A router on the stack for readiness checks: one connection per shard,
 * a 50 ms pool wait, a breaker that opens at the first failure, and the map
 * reloaded only when asked. connect_timeout_ms: 0 for the default. */
static struct router *
readiness_router(unsigned connect_timeout_ms)
{
    char err[256];
    struct router_conf conf = {.pool_size = 1,
                               .pool_wait_ms = 50,
                               .refresh_interval_ms = 3600000,
                               .breaker_threshold = 1,
                               .breaker_cooldown_ms = 60000};
    ck_assert(db_conf_parse_dsn(&conf.catalog, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    ck_assert(db_conf_parse_dsn(&conf.shard, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    if (connect_timeout_ms > 0)
        conf.shard.connect_timeout_ms = connect_timeout_ms;
    return router_create(&conf);
}

/* Readiness under load: a shard whose every connection is busy is at work,
 * and the instance stays in the load balancer; only when the shard's
 * breaker opened (its requests fail or time out) is it not ready. */
START_TEST(a_busy_shard_is_ready_a_failing_one_is_not)
{
    char err[256];
    struct router *r = readiness_router(0);
    char why[128];
    ck_assert_msg(router_check_ready(r, why, sizeof(why), err, sizeof(err)) == CAL_OK, "%s", err);

    /* Hold the one connection of every shard that owns vbuckets (one that
     * owns none, added by an earlier suite, is reachable and idle). */
    uint32_t ids[ROUTER_MAX_SHARDS];
    enum breaker_state states[ROUTER_MAX_SHARDS];
    size_t nshards = router_shard_ids(r, ids, states, ROUTER_MAX_SHARDS), n = 0;
    struct route rt[ROUTER_MAX_SHARDS];
    struct db *held[ROUTER_MAX_SHARDS];
    for (size_t i = 0; i < nshards; i++) {
        for (int k = 0; k < 20000; k++) {
            ck_assert(router_route(r, testenv_random48(), &rt[n], err, sizeof(err)) == CAL_OK);
            if (rt[n].shard_id == ids[i]) {
                ck_assert_msg(pool_get(rt[n].pool, &held[n], err, sizeof(err)) == CAL_OK, "%s",
                              err);
                n++;
                break;
            }
        }
    }
    ck_assert_uint_ge(n, 2);
    cal_status busy = router_check_ready(r, why, sizeof(why), err, sizeof(err));
    breaker_record(rt[1].breaker, false, cal_mono_us()); /* threshold 1: open */
    cal_status failing = router_check_ready(r, why, sizeof(why), err, sizeof(err));
    char failing_err[256];
    cal_strlcpy(failing_err, err, sizeof(failing_err));
    for (size_t i = 0; i < n; i++)
        pool_put(rt[i].pool, held[i]);

    ck_assert_msg(busy == CAL_OK, "all connections busy: %s (%s)", cal_status_name(busy), err);
    ck_assert_int_eq(failing, CAL_EUNAVAIL);
    ck_assert_msg(strstr(failing_err, "breaker is open") != NULL, "%s", failing_err);
    char named[64];
    snprintf(named, sizeof(named), "shard %u is busy and its circuit breaker is open",
             rt[1].shard_id);
    ck_assert_str_eq(why, named);
    router_destroy(r);
}
END_TEST

/* A shard that owns no vbucket (drained for maintenance, its server
 * stopped: here a catalog row naming a port nobody listens on) serves no
 * request, and readiness does not ask it; the instance stays in the load
 * balancer. */
START_TEST(a_shard_owning_no_vbucket_is_not_asked_for_readiness)
{
    char err[256], sql[256];
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    uint32_t gone = 800 + (uint32_t)(testenv_random48() % 99);
    snprintf(sql, sizeof(sql),
             "INSERT INTO shards (shard_id, host, port, db_name, state)"
             " VALUES (%u, '127.0.0.1', 1, 'calendar_gone', 'draining')",
             gone);
    ck_assert_msg(db_exec(cat, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    struct router *r = readiness_router(200);
    char why[256], ready_err[512] = "";
    cal_status ready = router_check_ready(r, why, sizeof(why), ready_err, sizeof(ready_err));
    uint32_t ids[ROUTER_MAX_SHARDS];
    enum breaker_state states[ROUTER_MAX_SHARDS];
    size_t nshards = router_shard_ids(r, ids, states, ROUTER_MAX_SHARDS);
    bool loaded = false;
    for (size_t i = 0; i < nshards; i++)
        loaded |= ids[i] == gone;
    snprintf(sql, sizeof(sql), "DELETE FROM shards WHERE shard_id = %u", gone);
    ck_assert_msg(db_exec(cat, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    router_destroy(r);
    db_close(cat);
    ck_assert(loaded);
    ck_assert_msg(ready == CAL_OK, "not ready: %s", ready_err);
}
END_TEST

/* A catalog server that takes connections and never answers (hung): counts
 * the connections it took, and holds them open until stopped. */
struct silent_server {
    int fd;
    unsigned port;
    atomic_int taken;
    atomic_bool stop;
    int held[128];
    pthread_t thread;
};

static void *
silent_accept(void *arg)
{
    struct silent_server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            continue;
        int n = atomic_fetch_add(&s->taken, 1);
        if (n < (int)CAL_ARRAY_LEN(s->held))
            s->held[n] = c;
        else
            close(c);
    }
    return NULL;
}

static void
silent_start(struct silent_server *s)
{
    memset(s, 0, sizeof(*s));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(s->fd, 0);
    ck_assert_int_eq(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(s->fd, 128), 0);
    ck_assert_int_eq(getsockname(s->fd, (struct sockaddr *)&a, &len), 0);
    s->port = ntohs(a.sin_port);
    pthread_create(&s->thread, NULL, silent_accept, s);
}

static void
silent_stop(struct silent_server *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->thread, NULL);
    int n = atomic_load(&s->taken);
    for (int i = 0; i < n && i < (int)CAL_ARRAY_LEN(s->held); i++)
        close(s->held[i]);
    close(s->fd);
}

struct refresh_call {
    struct router *router;
    cal_status rc;
    uint64_t took_us;
    pthread_t thread;
};

static void *
call_refresh(void *arg)
{
    struct refresh_call *c = arg;
    char err[256];
    uint64_t t0 = cal_mono_us();
    c->rc = router_refresh(c->router, err, sizeof(err));
    c->took_us = cal_mono_us() - t0;
    return NULL;
}

/* A burst of "moved" answers while the catalog hangs: the requests share
 * the reloads under way, failed ones included. Each waiting for a reload of
 * its own, one after another (each a 1 s connect timeout), made the last
 * of 16 wait 16 s and tied up a worker thread each meanwhile. */
START_TEST(a_burst_of_refreshes_shares_a_failing_reload)
{
    enum { CALLERS = 16 };
    char err[256];
    struct silent_server hung;
    silent_start(&hung);
    struct router_conf conf = {.pool_size = 1,
                               .pool_wait_ms = 50,
                               .refresh_interval_ms = 3600000,
                               .breaker_threshold = 5,
                               .breaker_cooldown_ms = 2000};
    ck_assert(db_conf_parse_dsn(&conf.catalog, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    ck_assert(db_conf_parse_dsn(&conf.shard, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    snprintf(conf.catalog.host, sizeof(conf.catalog.host), "127.0.0.1");
    conf.catalog.port = hung.port;
    conf.catalog.connect_timeout_ms = conf.catalog.read_timeout_ms = 1000;
    struct router *r = router_create(&conf); /* its first load times out */
    int before = atomic_load(&hung.taken);
    struct refresh_call calls[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        calls[i] = (struct refresh_call){.router = r};
        pthread_create(&calls[i].thread, NULL, call_refresh, &calls[i]);
    }
    uint64_t longest = 0;
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(calls[i].thread, NULL);
        longest = calls[i].took_us > longest ? calls[i].took_us : longest;
    }
    int attempts = atomic_load(&hung.taken) - before;
    router_destroy(r);
    silent_stop(&hung);
    ck_assert_int_ge(before, 1);
    for (int i = 0; i < CALLERS; i++)
        ck_assert_msg(calls[i].rc != CAL_OK, "refresh %d succeeded against a hung catalog", i);
    /* The reload under way, one begun after every caller asked, and the
     * background refresher's (every 500 ms while no map is loaded). */
    ck_assert_msg(attempts <= 6, "%d callers made %d catalog connections (longest wait %llu ms)",
                  CALLERS, attempts, (unsigned long long)(longest / 1000));
}
END_TEST

/* A shard removed from the catalog (remove-shard, after its vbuckets left)
 * closes its pool's connections, and a route still held to it is told to
 * route again; they used to stay open for the daemon's life. The shard
 * here is a second catalog row naming shard 1's server and database, given
 * one vbucket of shard 1 and then taken out. */
START_TEST(a_removed_shard_closes_its_connections)
{
    char err[256], sql[512];
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    snprintf(sql, sizeof(sql),
             "INSERT INTO shards (shard_id, host, port, db_name, state)"
             " SELECT %u, host, port, db_name, 'active' FROM shards WHERE shard_id = %u",
             ADDED_SHARD, rows[1].id);
    ck_assert_msg(db_exec(cat, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    snprintf(sql, sizeof(sql),
             "UPDATE vbuckets SET shard_id = %u WHERE shard_id = %u ORDER BY vbucket LIMIT 1",
             ADDED_SHARD, rows[1].id);
    ck_assert_msg(db_exec(cat, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    struct router *r = readiness_router(0);
    struct route added = route_to(r, ADDED_SHARD);
    struct db *db;
    ck_assert(pool_get(added.pool, &db, err, sizeof(err)) == CAL_OK);
    pool_put(added.pool, db);
    unsigned open_before = pool_size(added.pool);

    restore_shards(); /* the vbucket back to shard 1, the row out */
    cal_status reload = router_refresh(r, err, sizeof(err));
    unsigned open_after = pool_size(added.pool);
    cal_status get_after = pool_get(added.pool, &db, err, sizeof(err));
    struct route back = route_to(r, rows[1].id);
    router_destroy(r);
    db_close(cat);
    ck_assert_uint_eq(open_before, 1);
    ck_assert_int_eq(reload, CAL_OK);
    ck_assert_uint_eq(open_after, 0);
    ck_assert_int_eq(get_after, CAL_EMOVED); /* route again */
    ck_assert_uint_eq(back.shard_id, rows[1].id);
}
END_TEST

/* Two daemons taking blocks from the catalog at once get disjoint ones,
 * every id below 2^53. */
START_TEST(reservation_id_blocks_of_two_daemons_are_disjoint)
{
    char err[256];
    struct db_conf conf = {0};
    ck_assert(db_conf_parse_dsn(&conf, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    struct idblock_catalog cat[2] = {{.conf = &conf}, {.conf = &conf}};
    struct idblock *ids[2] = {idblock_create(100, 0, idblock_fetch_catalog, &cat[0]),
                              idblock_create(100, 0, idblock_fetch_catalog, &cat[1])};
    enum { N = 1000 };
    static uint64_t got[2][N];
    for (size_t i = 0; i < N; i++)
        for (int d = 0; d < 2; d++)
            ck_assert_msg(idblock_next(ids[d], &got[d][i], err, sizeof(err)) == CAL_OK, "%s", err);
    for (size_t i = 0; i < N; i++) {
        ck_assert_uint_ge(got[0][i], 7250000000000000ULL);
        ck_assert_uint_le(got[1][i], IDBLOCK_MAX);
        /* Each daemon's ids rise (its blocks come later and later), so a
         * walk through both finds any id the two share. */
        if (i > 0)
            ck_assert(got[0][i] > got[0][i - 1] && got[1][i] > got[1][i - 1]);
    }
    for (size_t a = 0, b = 0; a < N && b < N;) {
        ck_assert_msg(got[0][a] != got[1][b], "id %llu made twice", (unsigned long long)got[0][a]);
        if (got[0][a] < got[1][b])
            a++;
        else
            b++;
    }
    for (int d = 0; d < 2; d++) {
        idblock_destroy(ids[d]);
        db_close(cat[d].db);
    }
}
END_TEST

/* Near 2^53 the catalog refuses a block that would pass it, with a message
 * that says so. A temporary id_blocks on the fetch's own session stands in
 * for the real one, which other daemons use. */
START_TEST(no_block_goes_past_two_to_the_53)
{
    char err[256];
    struct db_conf conf = {0};
    ck_assert(db_conf_parse_dsn(&conf, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    struct idblock_catalog cat = {.conf = &conf, .db = db_connect(&conf, err, sizeof(err))};
    ck_assert_msg(cat.db != NULL, "%s", err);
    struct db_val p[1] = {DB_INT_V((int64_t)(IDBLOCK_MAX - 5))};
    ck_assert(db_exec(cat.db,
                      "CREATE TEMPORARY TABLE id_blocks (name VARCHAR(32) PRIMARY KEY,"
                      " next_id BIGINT UNSIGNED NOT NULL)",
                      err, sizeof(err)) == CAL_OK);
    ck_assert_msg(db_query(cat.db, "INSERT INTO id_blocks VALUES ('reservation', ?)", p, 1, NULL,
                           err, sizeof(err)) == CAL_OK,
                  "%s", err);
    uint64_t first = 0;
    ck_assert_int_eq(idblock_fetch_catalog(&cat, 7, &first, err, sizeof(err)), CAL_ERR);
    ck_assert_msg(strstr(err, "no 'reservation' row left with 7 ids") != NULL, "%s", err);
    ck_assert(idblock_fetch_catalog(&cat, 6, &first, err, sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(first, IDBLOCK_MAX - 5); /* ..IDBLOCK_MAX */
    ck_assert_int_eq(idblock_fetch_catalog(&cat, 1, &first, err, sizeof(err)), CAL_ERR);
    db_close(cat.db);
}
END_TEST

/* A calendard in this process, on the stack's catalog and shards, with
 * sc's retries and deadline; its reservation ids come from sc->catalog. */
static struct service *
service_on_stack_retrying(const struct service_conf *sc, struct router **r, struct avail **a)
{
    char err[256];
    struct router_conf rc = {.pool_size = 4,
                             .pool_wait_ms = 1000,
                             .refresh_interval_ms = 3600000,
                             .breaker_threshold = 5,
                             .breaker_cooldown_ms = 2000};
    ck_assert(db_conf_parse_dsn(&rc.catalog, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    ck_assert(db_conf_parse_dsn(&rc.shard, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    struct avail_conf ac = {.ttl_s = 60, .lease_ttl_s = 1}; /* no cache servers: no cache */
    *r = router_create(&rc);
    *a = avail_create(&ac, err, sizeof(err));
    ck_assert_msg(*a != NULL, "%s", err);
    return service_create(sc, *r, *a);
}

/* The same with 3 tries 1-10 ms apart, in 5 s at most. */
static struct service *
service_on_stack(const struct db_conf *catalog_for_ids, struct router **r, struct avail **a)
{
    struct service_conf sc = {.max_attempts = 3,
                              .backoff_base_ms = 1,
                              .backoff_max_ms = 10,
                              .max_search_listings = 100,
                              .deadline_ms = 5000,
                              .batch_max = 32,
                              .batch_lanes = 4,
                              .catalog = *catalog_for_ids};
    return service_on_stack_retrying(&sc, r, a);
}

/* One request; returns the status, the body in body[size]. */
static int
call_service(struct service *svc, const char *method, const char *path, const char *key,
             const char *json, char *body, size_t size)
{
    struct api_request req = {.method = method,
                              .path = path,
                              .body = json,
                              .body_len = json ? strlen(json) : 0,
                              .idempotency_key = key};
    struct api_response resp = {0};
    service_handle(svc, &req, &resp);
    snprintf(body, size, "%.*s", (int)resp.body_len, resp.body ? resp.body : "");
    free(resp.body);
    return resp.status;
}

/* Listing id (1-30 nights at 100.00 USD), made through svc; returns id. */
static uint64_t
put_listing(struct service *svc, uint64_t id)
{
    char path[128], body[2048];
    snprintf(path, sizeof(path), "/v1/listings/%llu", (unsigned long long)id);
    int st = call_service(
        svc, "PUT", path, NULL,
        "{\"default_price\":10000,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}", body,
        sizeof(body));
    ck_assert_msg(st == 201, "%d %s", st, body);
    return id;
}

/* A loopback port nothing listens on (bound, then closed: free unless
 * taken in the meantime). */
static unsigned
dead_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* A listing id the router sends to the shard with this id. */
static uint64_t
listing_on(struct router *r, uint32_t shard_id)
{
    char err[256];
    struct route rt;
    for (int i = 0; i < 100000; i++) {
        uint64_t id = testenv_random48();
        ck_assert_msg(router_route(r, id, &rt, err, sizeof(err)) == CAL_OK, "%s", err);
        if (rt.shard_id == shard_id)
            return id;
    }
    ck_abort_msg("no listing routes to shard %u", shard_id);
    return 0;
}

/* Asserts that an answer names the shard and none of what the database's
 * connect error holds: the server's address and port, the database, the
 * user. */
static void
expect_named_not_described(const char *what, int status, const char *body, const char *code,
                           uint32_t shard_id, const struct db_conf *dc, unsigned port)
{
    char shard[32], portstr[16];
    snprintf(shard, sizeof(shard), "shard %u ", shard_id);
    snprintf(portstr, sizeof(portstr), "%u", port);
    ck_assert_msg(status == 503 && strstr(body, code) != NULL, "%s: %d %s", what, status, body);
    ck_assert_msg(strstr(body, shard) != NULL, "%s does not name %s: %s", what, shard, body);
    const char *leaks[] = {"connect to", dc->user,     portstr,
                           dc->host,     dc->database, rows[0].db_name};
    for (size_t i = 0; i < CAL_ARRAY_LEN(leaks); i++)
        ck_assert_msg(strstr(body, leaks[i]) == NULL, "%s shows '%s': %s", what, leaks[i], body);
}

/* A shard that cannot be reached (its catalog row names a port nothing
 * listens on): a search that misses the cache and /readyz answer 503
 * naming the shard and the kind of failure, never the connect error
 * (address, database, user), which goes to the log. */
START_TEST(an_unreachable_shard_is_named_not_described)
{
    char err[256], body[2048], json[256], in[16], out[16];
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    struct db_conf ids = {0}, shard_conf = {0};
    ck_assert(db_conf_parse_dsn(&ids, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    ck_assert(db_conf_parse_dsn(&shard_conf, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    struct shard_row dead = rows[0];
    dead.port = dead_port();
    set_address(cat, rows[0].id, &dead);
    struct router *r;
    struct avail *a; /* no cache servers: every search misses */
    struct service *svc = service_on_stack(&ids, &r, &a);
    uint64_t listing = listing_on(r, rows[0].id);

    /* The log, to see that the detail goes there. */
    char logpath[] = "/tmp/check_router_log_XXXXXX";
    int logfd = mkstemp(logpath), saved = dup(STDERR_FILENO);
    ck_assert(logfd >= 0 && saved >= 0);
    dup2(logfd, STDERR_FILENO);
    testenv_format_date(testenv_today() + 10, in, sizeof(in));
    testenv_format_date(testenv_today() + 12, out, sizeof(out));
    snprintf(json, sizeof(json),
             "{\"listing_ids\":[%llu],\"check_in\":\"%s\",\"check_out\":\"%s\"}",
             (unsigned long long)listing, in, out);
    int search =
        call_service(svc, "POST", "/v1/availability/search", NULL, json, body, sizeof(body));
    char search_body[2048];
    cal_strlcpy(search_body, body, sizeof(search_body));
    int ready = call_service(svc, "GET", "/readyz", NULL, NULL, body, sizeof(body));
    dup2(saved, STDERR_FILENO);
    close(saved);
    set_address(cat, rows[0].id, &rows[0]);
    db_close(cat);

    char log[8192] = "";
    ssize_t n = pread(logfd, log, sizeof(log) - 1, 0);
    close(logfd);
    unlink(logpath);
    log[n > 0 ? n : 0] = '\0';
    expect_named_not_described("search", search, search_body, "shard_unavailable", rows[0].id,
                               &shard_conf, dead.port);
    expect_named_not_described("readyz", ready, body, "not_ready", rows[0].id, &shard_conf,
                               dead.port);
    ck_assert_msg(strstr(body, "unreachable") != NULL, "readyz names no kind of failure: %s", body);
    char portstr[16];
    snprintf(portstr, sizeof(portstr), ":%u", dead.port);
    ck_assert_msg(strstr(log, "msg=\"shard unavailable\"") != NULL &&
                      strstr(log, "msg=\"not ready\"") != NULL && strstr(log, portstr) != NULL,
                  "the detail is not logged: %s", log);
    service_destroy(svc);
    router_destroy(r);
    avail_destroy(a);
}
END_TEST

/* A daemon whose block of reservation ids is used up while the catalog
 * cannot be reached: a new booking, or a new refusal (kept under an id),
 * answers 503 shard_unavailable, but a replay still gets its reservation
 * and a kept refusal its 409. */
START_TEST(without_a_reservation_id_only_a_new_booking_fails)
{
    struct db_conf good = {0}, down = {0};
    char err[256], body[2048], path[128], json[256], in[16], out[16];
    ck_assert(db_conf_parse_dsn(&good, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    cal_strlcpy(down.host, "127.0.0.1", sizeof(down.host));
    down.port = 1; /* nothing listens: refused at once */
    down.connect_timeout_ms = 100;
    struct router *r1, *r2;
    struct avail *a1, *a2;
    struct service *ok = service_on_stack(&good, &r1, &a1);
    struct service *no_ids = service_on_stack(&down, &r2, &a2);

    uint64_t listing = put_listing(ok, testenv_random48());
    int st;
    testenv_format_date(testenv_today() + 10, in, sizeof(in));
    testenv_format_date(testenv_today() + 12, out, sizeof(out));
    snprintf(json, sizeof(json), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":7}", in,
             out);
    snprintf(path, sizeof(path), "/v1/listings/%llu/reservations", (unsigned long long)listing);
    st = call_service(ok, "POST", path, "ids-1", json, body, sizeof(body));
    ck_assert_msg(st == 201, "%d %s", st, body);
    char booked[2048];
    cal_strlcpy(booked, body, sizeof(booked));

    st = call_service(no_ids, "POST", path, "ids-1", json, body, sizeof(body));
    ck_assert_msg(st == 200 && strcmp(body, booked) == 0, "replay: %d %s", st, body);
    /* A refusal kept by a daemon with ids replays as refused; a new
     * refusal has no id to be kept under, and is not answered yet. */
    st = call_service(ok, "POST", path, "ids-2", json, body, sizeof(body));
    ck_assert_msg(st == 409 && strstr(body, "nights_unavailable") != NULL, "refusal: %d %s", st,
                  body);
    st = call_service(no_ids, "POST", path, "ids-2", json, body, sizeof(body));
    ck_assert_msg(st == 409 && strstr(body, "nights_unavailable") != NULL &&
                      strstr(body, "refused before") != NULL,
                  "replayed refusal: %d %s", st, body);
    st = call_service(no_ids, "POST", path, "ids-4", json, body, sizeof(body));
    ck_assert_msg(st == 503 && strstr(body, "reservation id") != NULL, "new refusal: %d %s", st,
                  body);
    testenv_format_date(testenv_today() + 20, in, sizeof(in));
    testenv_format_date(testenv_today() + 22, out, sizeof(out));
    snprintf(json, sizeof(json), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":7}", in,
             out);
    st = call_service(no_ids, "POST", path, "ids-3", json, body, sizeof(body));
    ck_assert_msg(st == 503 && strstr(body, "shard_unavailable") != NULL &&
                      strstr(body, "reservation id") != NULL,
                  "new booking: %d %s", st, body);
    /* The same request on a daemon with ids books it. */
    st = call_service(ok, "POST", path, "ids-3", json, body, sizeof(body));
    ck_assert_msg(st == 201, "%d %s", st, body);

    service_destroy(ok);
    service_destroy(no_ids);
    router_destroy(r1);
    router_destroy(r2);
    avail_destroy(a1);
    avail_destroy(a2);
}
END_TEST

/* The listing whose vbucket's fence row the deadline test takes away, and
 * where that row is: found by the fixture before the test's fork, so that
 * the teardown (in this process) puts the row back whatever the test did. */
static struct {
    uint64_t listing;
    uint32_t vbucket;
    long long epoch;
    size_t shard; /* index in env.shard_dsns */
} fenced;

static void
find_a_fence_row(void)
{
    char err[256];
    remember_shards();
    /* Its vbucket as the router computes it (shardmap_vbucket), with the
     * catalog's count. */
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    struct db_stmt *q;
    struct db_val col[1];
    long long nvb = 0;
    bool asked =
        db_query(cat, "SELECT CAST(value AS SIGNED) FROM cluster WHERE name = 'num_vbuckets'", NULL,
                 0, &q, err, sizeof(err)) == CAL_OK;
    while (asked && db_fetch(q, col, 1, err, sizeof(err)) > 0)
        nvb = col[0].i;
    db_close(cat);
    ck_assert_msg(nvb > 0, "no num_vbuckets in the catalog: %s", err);
    fenced.listing = testenv_random48();
    fenced.vbucket = shardmap_vbucket(fenced.listing, (uint32_t)nvb);
    fenced.epoch = -1;
    struct db_val v[1] = {DB_INT_V(fenced.vbucket)};
    for (size_t i = 0; i < env.nshards && fenced.epoch < 0; i++) {
        struct db *db = testenv_connect_shard(&env, i, err, sizeof(err));
        ck_assert_msg(db != NULL, "%s", err);
        asked = db_query(db, "SELECT epoch FROM vbucket_owner WHERE vbucket = ?", v, 1, &q, err,
                         sizeof(err)) == CAL_OK;
        while (asked && db_fetch(q, col, 1, err, sizeof(err)) > 0) {
            fenced.epoch = col[0].i;
            fenced.shard = i;
        }
        db_close(db);
        ck_assert_msg(asked, "%s", err);
    }
    ck_assert_msg(fenced.epoch >= 0, "no shard holds vbucket %u's fence row", fenced.vbucket);
}

static void
put_the_fence_row_back(void)
{
    char err[256] = "";
    struct db *db = testenv_connect_shard(&env, fenced.shard, err, sizeof(err));
    struct db_val back[2] = {DB_INT_V(fenced.vbucket), DB_INT_V(fenced.epoch)};
    if (db == NULL ||
        db_query(db, "INSERT IGNORE INTO vbucket_owner (vbucket, epoch) VALUES (?, ?)", back, 2,
                 NULL, err, sizeof(err)) != CAL_OK)
        fprintf(stderr, "check_router: vbucket %u's fence row not put back: %s\n", fenced.vbucket,
                err);
    db_close(db);
}

/* The request deadline bounds retries: no try starts after it, and a
 * backoff is cut short to end by it. Here every try is fenced off
 * ("moved": the owner's fence row is gone while the catalog still names
 * it), the deadline is 10 ms and a backoff up to 2 s: each booking gives
 * up within a try of the deadline (1 s allowed: a try reloads the shard
 * map, slow under the sanitizers on a busy VM). Before, the first backoff
 * was slept whole (drawn from 0..2 s: past 1 s for one booking in two,
 * for at least one of six in 63 runs of 64). */
START_TEST(no_backoff_outlasts_the_request_deadline)
{
    enum { DEADLINE_MS = 10, BACKOFF_MS = 2000, TRIES = 6 };
    char err[256], body[2048], path[128], json[256], in[16], out[16], key[32];
    struct db_conf ids = {0};
    ck_assert(db_conf_parse_dsn(&ids, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    struct service_conf sc = {.max_attempts = 50,
                              .backoff_base_ms = BACKOFF_MS,
                              .backoff_max_ms = BACKOFF_MS,
                              .max_search_listings = 100,
                              .deadline_ms = DEADLINE_MS,
                              .batch_max = 32,
                              .batch_lanes = 4,
                              .catalog = ids};
    struct router *r, *r_ok;
    struct avail *a, *a_ok;
    struct service *svc = service_on_stack_retrying(&sc, &r, &a);
    struct service *ok = service_on_stack(&ids, &r_ok, &a_ok); /* the usual retries */
    put_listing(ok, fenced.listing);
    /* svc's connections and shard map made before the clock runs. */
    snprintf(path, sizeof(path), "/v1/listings/%llu", (unsigned long long)fenced.listing);
    int st = call_service(svc, "GET", path, NULL, NULL, body, sizeof(body));
    ck_assert_msg(st == 200, "%d %s", st, body);

    struct db *owner = testenv_connect_shard(&env, fenced.shard, err, sizeof(err));
    ck_assert_msg(owner != NULL, "%s", err);
    struct db_val v[1] = {DB_INT_V(fenced.vbucket)};
    ck_assert_msg(db_query(owner, "DELETE FROM vbucket_owner WHERE vbucket = ?", v, 1, NULL, err,
                           sizeof(err)) == CAL_OK,
                  "%s", err);
    testenv_format_date(testenv_today() + 10, in, sizeof(in));
    testenv_format_date(testenv_today() + 12, out, sizeof(out));
    snprintf(json, sizeof(json), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":7}", in,
             out);
    snprintf(path, sizeof(path), "/v1/listings/%llu/reservations",
             (unsigned long long)fenced.listing);
    for (int i = 0; i < TRIES; i++) {
        snprintf(key, sizeof(key), "deadline-%d", i);
        uint64_t t0 = cal_mono_us();
        st = call_service(svc, "POST", path, key, json, body, sizeof(body));
        uint64_t took_us = cal_mono_us() - t0;
        ck_assert_msg(st == 503 && strstr(body, "vbucket_moving") != NULL, "booking %d: %d %s", i,
                      st, body);
        ck_assert_msg(took_us < 1000 * 1000,
                      "booking %d gave up after %llu us: a backoff outlasted the %d ms deadline", i,
                      (unsigned long long)took_us, DEADLINE_MS);
    }
    db_close(owner);
    put_the_fence_row_back();
    st = call_service(ok, "POST", path, "deadline-ok", json, body, sizeof(body));
    ck_assert_msg(st == 201, "with the fence row back: %d %s", st, body);
    service_destroy(svc);
    service_destroy(ok);
    router_destroy(r);
    router_destroy(r_ok);
    avail_destroy(a);
    avail_destroy(a_ok);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("router");
    TCase *tc = tcase_create("catalog");
    tcase_set_timeout(tc, 30);
    tcase_add_unchecked_fixture(tc, remember_shards, restore_shards);
    tcase_add_test(tc, a_shard_address_change_in_the_catalog_is_followed);
    tcase_add_test(tc, a_connection_put_back_goes_to_each_waiter_in_turn);
    tcase_add_test(tc, a_connection_put_back_inside_a_transaction_is_rolled_back);
    tcase_add_test(tc, a_busy_shard_is_ready_a_failing_one_is_not);
    tcase_add_test(tc, a_shard_owning_no_vbucket_is_not_asked_for_readiness);
    tcase_add_test(tc, an_unreachable_shard_is_named_not_described);
    tcase_add_test(tc, a_removed_shard_closes_its_connections);
    tcase_add_test(tc, a_burst_of_refreshes_shares_a_failing_reload);
    suite_add_tcase(s, tc);
    tc = tcase_create("reservation_ids");
    tcase_set_timeout(tc, 30);
    tcase_add_unchecked_fixture(tc, remember_shards, NULL);
    tcase_add_test(tc, reservation_id_blocks_of_two_daemons_are_disjoint);
    tcase_add_test(tc, no_block_goes_past_two_to_the_53);
    tcase_add_test(tc, without_a_reservation_id_only_a_new_booking_fails);
    suite_add_tcase(s, tc);
    tc = tcase_create("deadline");
    tcase_set_timeout(tc, 30);
    tcase_add_unchecked_fixture(tc, find_a_fence_row, put_the_fence_row_back);
    tcase_add_test(tc, no_backoff_outlasts_the_request_deadline);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
