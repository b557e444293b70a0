/* Integration tests of calendar-rebalance on the real stack: single moves
 * under bookings, a crash after every phase finished by resume, stress
 * traffic while vbuckets move back and forth, and adding then draining a
 * spare shard. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "sharding/cluster.h"
#include "sharding/migrate.h"
#include "sharding/move.h"
#include "sharding/verify.h"
#include "tests/lib/http.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

static struct testenv env;
static char admin_ini[600];
static char tool[600];

static void
setup(void)
{
    char err[256];
    ck_assert_msg(testenv_load(&env, NULL, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_msg(env.stack_dir[0] != '\0', "stack.env has no STACK_DIR");
    snprintf(admin_ini, sizeof(admin_ini), "%s/admin.ini", env.stack_dir);
    snprintf(tool, sizeof(tool), "bin/calendar-rebalance");
    ck_assert_msg(access(tool, X_OK) == 0, "run from the repository root after make");
}

/* setup() plus an HTTP client for calendard; caller destroys it. */
static struct http_client *
setup_http(void)
{
    setup();
    http_global_init();
    return http_client_create();
}

/* Value of KEY in the stack env file, "" when absent. */
static void
env_value(const char *key, char *out, size_t outlen)
{
    FILE *f = fopen(env.path, "r");
    char line[1024];
    size_t klen = strlen(key);
    out[0] = '\0';
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) != 0 || line[klen] != '=')
            continue;
        char *v = line + klen + 1;
        v[strcspn(v, "\r\n")] = '\0';
        if (*v == '"' && v[strlen(v) - 1] == '"') {
            v[strlen(v) - 1] = '\0';
            v++;
        }
        size_t n = strlen(v) < outlen - 1 ? strlen(v) : outlen - 1;
        memcpy(out, v, n);
        out[n] = '\0';
    }
    fclose(f);
}

static int
rebalance(char *out, size_t outlen, const char *a1, const char *a2, const char *a3, const char *a4,
          const char *a5, const char *a6)
{
    char *argv[12] = {tool,       "--config", admin_ini,  (char *)a1, (char *)a2,
                      (char *)a3, (char *)a4, (char *)a5, (char *)a6, NULL};
    return proc_run(argv, out, outlen, 300);
}

static long api(struct http_client *h, const char *method, const char *key, const char *body,
                struct http_response *r, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static long
api(struct http_client *h, const char *method, const char *key, const char *body,
    struct http_response *r, const char *fmt, ...)
{
    char url[512], path[256], hdr[300], err[256];
    const char *headers[2] = {NULL, NULL};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    snprintf(url, sizeof(url), "%s%s", env.calendard_url, path);
    if (key != NULL) {
        snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", key);
        headers[0] = hdr;
    }
    http_response_init(r);
    ck_assert_msg(http_request(h, method, url, headers, body, body ? strlen(body) : 0, 15000, r,
                               err, sizeof(err)) == CAL_OK,
                  "%s %s: %s", method, url, err);
    return r->status;
}

/* Status of GET reservation rid of listing id. */
static long
get_reservation(struct http_client *h, uint64_t id, uint64_t rid)
{
    struct http_response r;
    long status = api(h, "GET", NULL, NULL, &r, "/v1/listings/%llu/reservations/%llu",
                      (unsigned long long)id, (unsigned long long)rid);
    http_response_deinit(&r);
    return status;
}

/* The shard id currently owning vbucket v, from the catalog. */
static long
owner_of(unsigned v)
{
    char err[256];
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(v)}, c[1];
    ck_assert(db_query(cat, "SELECT shard_id FROM vbuckets WHERE vbucket = ?", p, 1, &st, err,
                       sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    long id = (long)c[0].i;
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    db_close(cat);
    return id;
}

/* Rows of table for a listing on shard index idx of SHARD_DSNS. */
static long
rows_on(size_t idx, const char *table, uint64_t listing_id)
{
    char err[256], sql[128];
    struct db *db = testenv_connect_shard(&env, idx, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM %s WHERE listing_id = ?", table);
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(listing_id)}, c[1];
    ck_assert(db_query(db, sql, p, 1, &st, err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    long n = (long)c[0].i;
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    db_close(db);
    return n;
}

static void
put_listing(struct http_client *h, uint64_t id)
{
    struct http_response r;
    ck_assert_int_eq(api(h, "PUT", NULL,
                         "{\"default_price\":700,\"currency\":\"USD\",\"min_nights\":1,"
                         "\"max_nights\":9}",
                         &r, "/v1/listings/%llu", (unsigned long long)id),
                     201);
    http_response_deinit(&r);
}

/* The body of a booking of nights [today + from, today + to). */
static void
stay_body(char *body, size_t size, int from, int to, int guest)
{
    char d1[11], d2[11];
    testenv_format_date(testenv_today() + from, d1, sizeof(d1));
    testenv_format_date(testenv_today() + to, d2, sizeof(d2));
    snprintf(body, size, "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":%d}", d1, d2,
             guest);
}

/* Asks for nights [today + from, today + to) of listing id under key;
 * the HTTP status (the caller frees r). */
static long
post_stay(struct http_client *h, uint64_t id, const char *key, int from, int to, int guest,
          struct http_response *r)
{
    char body[256];
    stay_body(body, sizeof(body), from, to, guest);
    return api(h, "POST", key, body, r, "/v1/listings/%llu/reservations", (unsigned long long)id);
}

/* Books nights [today + from, today + to) of listing id; returns the
 * reservation id. */
static uint64_t
book(struct http_client *h, uint64_t id, const char *key, int from, int to)
{
    struct http_response r;
    ck_assert_int_eq(post_stay(h, id, key, from, to, 3, &r), 201);
    json_t *doc = http_response_json(&r);
    uint64_t rid = (uint64_t)json_integer_value(json_object_get(doc, "reservation_id"));
    json_decref(doc);
    http_response_deinit(&r);
    return rid;
}

/* A listing with one booking; returns its id and the reservation id. */
static uint64_t
booked_listing(struct http_client *h, const char *key, uint64_t *rid)
{
    uint64_t id = testenv_random48();
    put_listing(h, id);
    *rid = book(h, id, key, 90, 93);
    return id;
}

/* After a move: the reservation reads back, a replay answers the original,
 * a new booking succeeds, and every row lives on the new owner only. */
static void
check_after_move(struct http_client *h, uint64_t id, uint64_t rid, const char *key, long to)
{
    struct http_response r;
    ck_assert_int_eq(api(h, "GET", NULL, NULL, &r, "/v1/listings/%llu/reservations/%llu",
                         (unsigned long long)id, (unsigned long long)rid),
                     200);
    http_response_deinit(&r);
    ck_assert_int_eq(post_stay(h, id, key, 90, 93, 3, &r), 200);
    json_t *doc = http_response_json(&r);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(doc, "reservation_id")), rid);
    json_decref(doc);
    http_response_deinit(&r);
    char key2[300];
    snprintf(key2, sizeof(key2), "%s-after", key);
    ck_assert_int_eq(post_stay(h, id, key2, 95, 96, 4, &r), 201);
    http_response_deinit(&r);
    ck_assert_int_eq(owner_of(testenv_vbucket(id)), to);
    size_t from_idx = to == 0 ? 1 : 0, to_idx = (size_t)to;
    ck_assert_int_eq(rows_on(to_idx, "reservations", id), 2);
    ck_assert_int_eq(rows_on(to_idx, "listings", id), 1);
    ck_assert_int_eq(rows_on(from_idx, "reservations", id), 0);
    ck_assert_int_eq(rows_on(from_idx, "nights", id), 0);
    ck_assert_int_eq(rows_on(from_idx, "listings", id), 0);
}

static void
expect_verify_clean(void)
{
    char out[8192];
    int rc = rebalance(out, sizeof(out), "verify", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "verify exit %d:\n%.2000s", rc, out);
    ck_assert_ptr_nonnull(
        strstr(out, "missing=0 extra=0 different=0 fence_errors=0 collisions=0 stray=0"));
}

/* The end of a case that moved a vbucket with its own connections
 * (open_case): closes them, and the cluster must verify clean. */
static void
end_case(struct db *src, struct db *dst, struct db *cat, struct http_client *h)
{
    db_close(src);
    db_close(dst);
    db_close(cat);
    expect_verify_clean();
    http_client_destroy(h);
}

/* The one integer a query with one parameter id answers. */
static long long
scalar(struct db *db, const char *sql, uint64_t id)
{
    char err[256];
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(id)}, c[1];
    ck_assert_msg(db_query(db, sql, p, 1, &st, err, sizeof(err)) == CAL_OK, "%s: %s", sql, err);
    ck_assert_msg(db_fetch(st, c, 1, err, sizeof(err)) == 1, "%s: no row", sql);
    long long v = c[0].type == DB_INT ? (long long)c[0].i : -1;
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    return v;
}

static void
exec_sql(struct db *db, const char *sql, uint64_t id)
{
    char err[256];
    struct db_val p[1] = {DB_INT_V(id)};
    ck_assert_msg(db_query(db, sql, p, 1, NULL, err, sizeof(err)) == CAL_OK, "%s: %s", sql, err);
}

/* A booked listing about to move: its vbucket, owner and the other shard. */
struct moving {
    uint64_t id, rid;
    unsigned v;
    long from, target;
    char key[64], vb[16], to[16];
};

static void
moving_listing(struct http_client *h, const char *prefix, struct moving *m)
{
    snprintf(m->key, sizeof(m->key), "%s-%llu", prefix, (unsigned long long)testenv_random48());
    m->id = booked_listing(h, m->key, &m->rid);
    m->v = testenv_vbucket(m->id);
    m->from = owner_of(m->v);
    m->target = m->from == 0 ? 1 : 0;
    snprintf(m->vb, sizeof(m->vb), "%u", m->v);
    snprintf(m->to, sizeof(m->to), "%ld", m->target);
}

/* The connections of a case that moves m's vbucket with its own: the
 * catalog, its source and its target (end_case closes them). */
static void
open_case(const struct moving *m, struct db **cat, struct db **src, struct db **dst)
{
    char err[256];
    *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(*cat != NULL, "%s", err);
    *src = testenv_connect_shard(&env, (size_t)m->from, err, sizeof(err));
    ck_assert_msg(*src != NULL, "%s", err);
    *dst = testenv_connect_shard(&env, (size_t)m->target, err, sizeof(err));
    ck_assert_msg(*dst != NULL, "%s", err);
}

/* Moves m's vbucket with a crash (SIGKILL) right after its copy phase. */
static void
crash_after_copy(struct moving *m)
{
    char out[8192];
    char *argv[] = {tool,        "--config", admin_ini, "--crash-after", "copy", "move",
                    "--vbucket", m->vb,      "--to",    m->to,           NULL};
    int rc = proc_run(argv, out, sizeof(out), 120);
    ck_assert_msg(rc == 128 + 9, "copy: exit %d, want SIGKILL:\n%.2000s", rc, out);
}

START_TEST(move_one_vbucket_under_bookings)
{
    setup();
    http_global_init();
    struct http_client *h = http_client_create();
    struct moving m;
    char out[8192];
    moving_listing(h, "rb-one", &m);
    int rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 0, "move exit %d:\n%.2000s", rc, out);
    ck_assert_ptr_nonnull(strstr(out, "phase=done"));
    ck_assert_ptr_nonnull(strstr(out, "write_pause_ms="));
    check_after_move(h, m.id, m.rid, m.key, m.target);
    /* Moving it where it is now (a move run twice) does nothing, and
     * says so. */
    rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 0, "move to its owner: exit %d:\n%.2000s", rc, out);
    ck_assert_ptr_nonnull(strstr(out, "already: nothing to move"));
    ck_assert_ptr_null(strstr(out, "phase="));
    expect_verify_clean();
    http_client_destroy(h);
}
END_TEST

/* One run at a time per vbucket: while another session holds the vbucket's
 * move lock (as a running calendar-rebalance does), a move of it is refused
 * and changes nothing; once the lock is free, the move goes through. */
START_TEST(a_vbucket_moves_in_one_run_at_a_time)
{
    setup();
    http_global_init();
    struct http_client *h = http_client_create();
    struct moving m;
    char out[8192], err[256];
    moving_listing(h, "rb-lock", &m);
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(m.v)}, c[1];
    ck_assert(db_query(cat, "SELECT GET_LOCK(CONCAT('calendar_move_', ?), 0)", p, 1, &st, err,
                       sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    ck_assert_int_eq(c[0].i, 1);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    long long session =
        scalar(cat, "SELECT CAST(CONNECTION_ID() AS SIGNED) FROM DUAL WHERE 0 = ?", 0);
    char want[160];
    int rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 4, "move under another run's lock: exit %d:\n%.2000s", rc, out);
    ck_assert_ptr_nonnull(strstr(out, "being moved by another calendar-rebalance"));
    /* It names the session that holds the lock, for an operator whose run
     * died with its machine (the session lives on until the server drops
     * it). */
    snprintf(want, sizeof(want), "; session %lld of the catalog, from ", session);
    ck_assert_msg(strstr(out, want) != NULL, "want '%s' in:\n%.2000s", want, out);
    snprintf(want, sizeof(want),
             "if no calendar-rebalance runs there any more, KILL %lld on the catalog", session);
    ck_assert_msg(strstr(out, want) != NULL, "want '%s' in:\n%.2000s", want, out);
    /* To where it is: the run holding the lock may be moving it away, so
     * this is no "nothing to move" either. */
    char from[16];
    snprintf(from, sizeof(from), "%ld", m.from);
    rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", from, NULL);
    ck_assert_msg(rc == 4 && strstr(out, "nothing to move") == NULL,
                  "move to its owner under another run's lock: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(owner_of(m.v), m.from);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(strstr(out, "0 unfinished moves") != NULL, "%.2000s", out);
    db_close(cat); /* the lock goes with the session */
    rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 0, "move exit %d:\n%.2000s", rc, out);
    check_after_move(h, m.id, m.rid, m.key, m.target);
    http_client_destroy(h);
}
END_TEST

/* A crash inside the cutover's last copy, after a chunk's first write, then
 * resume: the rows written to the source between the copy and the cutover
 * (a second booking) must all reach the new owner. A listings row written
 * before its nights and reservations would claim them, and the resumed
 * catch-up would skip them, then cleanup would delete the only copy. */
START_TEST(crash_inside_the_cutover_copy_then_resume)
{
    setup();
    http_global_init();
    struct http_client *h = http_client_create();
    struct moving m;
    char key2[80], out[8192];
    moving_listing(h, "rb-chunk", &m);
    uint64_t id = m.id;
    long from = m.from, target = m.target;
    int rc;
    crash_after_copy(&m);
    /* Between the copy and the cutover: a booking on the source. */
    struct http_response r;
    snprintf(key2, sizeof(key2), "%s-mid", m.key);
    ck_assert_int_eq(post_stay(h, id, key2, 100, 102, 5, &r), 201);
    json_t *doc = http_response_json(&r);
    uint64_t rid2 = (uint64_t)json_integer_value(json_object_get(doc, "reservation_id"));
    json_decref(doc);
    http_response_deinit(&r);
    long nights = rows_on((size_t)from, "nights", id);
    ck_assert_int_eq(nights, 5);
    char *chunk_argv[] = {tool,     "--config", admin_ini, "--crash-after", "cutover-chunk",
                          "resume", NULL};
    rc = proc_run(chunk_argv, out, sizeof(out), 120);
    ck_assert_msg(rc == 128 + 9, "cutover-chunk: exit %d, want SIGKILL:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(owner_of(m.v), target);
    ck_assert_int_eq(rows_on((size_t)target, "reservations", id), 2);
    ck_assert_int_eq(rows_on((size_t)target, "nights", id), nights);
    ck_assert_int_eq(api(h, "GET", NULL, NULL, &r, "/v1/listings/%llu/reservations/%llu",
                         (unsigned long long)id, (unsigned long long)rid2),
                     200);
    http_response_deinit(&r);
    ck_assert_int_eq(api(h, "GET", NULL, NULL, &r, "/v1/listings/%llu/reservations/%llu",
                         (unsigned long long)id, (unsigned long long)m.rid),
                     200);
    http_response_deinit(&r);
    ck_assert_int_eq(rows_on((size_t)from, "reservations", id), 0);
    ck_assert_int_eq(rows_on((size_t)from, "nights", id), 0);
    ck_assert_int_eq(rows_on((size_t)from, "listings", id), 0);
    expect_verify_clean();
    http_client_destroy(h);
}
END_TEST

/* A refusal kept after the copy changes no listing version: the cutover
 * must find it all the same (by the listing's count of refusals), or the
 * new owner would let a replay of the refused key book. */
START_TEST(a_refusal_kept_after_the_copy_moves)
{
    setup();
    http_global_init();
    struct http_client *h = http_client_create();
    struct moving m;
    char key2[80], out[8192];
    moving_listing(h, "rb-refusal", &m);
    int rc;
    crash_after_copy(&m);
    /* On the source, between the copy and the cutover: nights 91-92 are
     * m's, so the stay is refused and the refusal kept. */
    struct http_response r;
    snprintf(key2, sizeof(key2), "%s-refused", m.key);
    ck_assert_int_eq(post_stay(h, m.id, key2, 91, 95, 6, &r), 409);
    http_response_deinit(&r);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 2);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(owner_of(m.v), m.target);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 2);
    ck_assert_int_eq(rows_on((size_t)m.target, "listing_refusals", m.id), 1);
    ck_assert_int_eq(rows_on((size_t)m.from, "listing_refusals", m.id), 0);
    /* Freed on the new owner, the refused key is refused again. */
    char path[160];
    snprintf(path, sizeof(path), "/v1/listings/%llu/reservations/%llu/cancel",
             (unsigned long long)m.id, (unsigned long long)m.rid);
    ck_assert_int_eq(api(h, "POST", NULL, NULL, &r, "%s", path), 200);
    http_response_deinit(&r);
    ck_assert_int_eq(post_stay(h, m.id, key2, 91, 95, 6, &r), 409);
    ck_assert_msg(strstr(r.body, "refused before") != NULL, "%s", r.body);
    http_response_deinit(&r);
    expect_verify_clean();
    http_client_destroy(h);
}
END_TEST

START_TEST(crash_after_each_phase_then_resume)
{
    static const char *const phases[] = {"copy", "cutover", "target", "catalog", "cleanup"};
    setup();
    http_global_init();
    struct http_client *h = http_client_create();
    for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
        uint64_t rid;
        char key[64], vb[16], to[16], out[8192];
        snprintf(key, sizeof(key), "rb-crash-%s-%llu", phases[i],
                 (unsigned long long)testenv_random48());
        uint64_t id = booked_listing(h, key, &rid);
        unsigned v = testenv_vbucket(id);
        long from = owner_of(v), target = from == 0 ? 1 : 0;
        snprintf(vb, sizeof(vb), "%u", v);
        snprintf(to, sizeof(to), "%ld", target);
        char *argv[] = {tool,   "--config",  admin_ini, "--crash-after", (char *)phases[i],
                        "move", "--vbucket", vb,        "--to",          to,
                        NULL};
        int rc = proc_run(argv, out, sizeof(out), 120);
        ck_assert_msg(rc == 128 + 9, "phase %s: exit %d, want SIGKILL:\n%.2000s", phases[i], rc,
                      out);
        rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
        ck_assert_int_eq(rc, 0);
        if (strcmp(phases[i], "cleanup") != 0)
            ck_assert_msg(strstr(out, "1 unfinished move") != NULL, "phase %s:\n%.2000s", phases[i],
                          out);
        rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
        ck_assert_msg(rc == 0, "resume after %s: exit %d:\n%.2000s", phases[i], rc, out);
        rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
        ck_assert_msg(strstr(out, "0 unfinished moves") != NULL, "after resume:\n%.2000s", out);
        check_after_move(h, id, rid, key, target);
        expect_verify_clean();
    }
    http_client_destroy(h);
}
END_TEST

/* A move stopped after its catalog flip (phase cleanup) whose target lacks
 * what the source holds, or holds it older: the source's rows are the only
 * copy left, so cleanup refuses to delete them until the target has them. */
START_TEST(cleanup_keeps_the_source_until_the_target_holds_its_rows)
{
    setup();
    http_global_init();
    struct http_client *h = http_client_create();
    struct moving m;
    char out[8192], err[256];
    moving_listing(h, "rb-cleanup", &m);
    char *argv[] = {tool,      "--config", admin_ini,   "--crash-after",
                    "catalog", "move",     "--vbucket", m.vb,
                    "--to",    m.to,       NULL};
    int rc = proc_run(argv, out, sizeof(out), 120);
    ck_assert_msg(rc == 128 + 9, "exit %d, want SIGKILL:\n%.2000s", rc, out);
    struct db *dst = testenv_connect_shard(&env, (size_t)m.target, err, sizeof(err));
    ck_assert_msg(dst != NULL, "%s", err);
    /* A write on the new owner since the flip: verify compares the frozen
     * source covering, not exactly, while the move waits in cleanup. */
    exec_sql(dst,
             "UPDATE listings SET version = version + 1, default_price = 800 WHERE listing_id = ?",
             m.id);
    expect_verify_clean();
    /* A booked night of the copy turned available, its version unchanged. */
    exec_sql(dst,
             "UPDATE nights SET status = 'available', reservation_id = NULL"
             " WHERE listing_id = ? AND status = 'booked' LIMIT 1",
             m.id);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 1, "resume over a bad copy: exit %d:\n%.2000s", rc, out);
    ck_assert_msg(strstr(out, "source's rows are kept") != NULL, "%.2000s", out);
    ck_assert_int_eq(rows_on((size_t)m.from, "nights", m.id), 3);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 1);
    /* Its vbucket is on the target now, but the move is not done: a move
     * there again is no "nothing to move". */
    rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "unfinished move") != NULL,
                  "move to the owner over a move in cleanup: exit %d:\n%.2000s", rc, out);
    /* A move stuck there does not keep resume from finishing the others:
     * one stopped after its cutover, its vbucket owned by no shard. */
    struct moving m2;
    do
        moving_listing(h, "rb-cleanup-2", &m2);
    while (m2.v == m.v);
    char *argv2[] = {tool,        "--config", admin_ini, "--crash-after", "cutover", "move",
                     "--vbucket", m2.vb,      "--to",    m2.to,           NULL};
    rc = proc_run(argv2, out, sizeof(out), 120);
    ck_assert_msg(rc == 128 + 9, "exit %d, want SIGKILL:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 1, "resume with one move stuck: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(owner_of(m2.v), m2.target);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(strstr(out, "1 unfinished move") != NULL, "%.2000s", out);
    check_after_move(h, m2.id, m2.rid, m2.key, m2.target);
    /* A reservation missing on the target is refused too. */
    exec_sql(dst,
             "UPDATE nights SET status = 'booked', reservation_id = (SELECT reservation_id FROM"
             " reservations WHERE listing_id = nights.listing_id) WHERE listing_id = ?"
             " AND reservation_id IS NULL",
             m.id);
    exec_sql(dst, "DELETE FROM reservations WHERE listing_id = ?", m.id);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "missing on its new owner") != NULL,
                  "resume without the reservation: exit %d:\n%.2000s", rc, out);
    /* Put back (as an operator would from the source), resume finishes. */
    struct db *src = testenv_connect_shard(&env, (size_t)m.from, err, sizeof(err));
    ck_assert_msg(src != NULL, "%s", err);
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(m.id)}, c[14];
    ck_assert(db_query(src,
                       "SELECT reservation_id, listing_id, vbucket, check_in, check_out, guest_id,"
                       " status, total_price, currency, idempotency_key, request_hash, version,"
                       " created_at, updated_at FROM reservations WHERE listing_id = ?",
                       p, 1, &st, err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(st, c, 14, err, sizeof(err)), 1);
    ck_assert_msg(db_query(dst,
                           "INSERT INTO reservations (reservation_id, listing_id, vbucket,"
                           " check_in, check_out, guest_id, status, total_price, currency,"
                           " idempotency_key, request_hash, version, created_at, updated_at)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           c, 14, NULL, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    while (db_fetch(st, c, 14, err, sizeof(err)) > 0)
        ;
    db_close(src);
    db_close(dst);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume after the repair: exit %d:\n%.2000s", rc, out);
    check_after_move(h, m.id, m.rid, m.key, m.target);
    expect_verify_clean();
    http_client_destroy(h);
}
END_TEST

/* Bad options are refused with exit 2 and a message naming the option,
 * before anything changes: no number is truncated or read as 0, and no
 * command ignores an option (move --dry-run once did a real move). */
START_TEST(bad_options_are_refused_and_change_nothing)
{
    struct http_client *h = setup_http();
    struct moving m;
    char out[8192], before[8192], wrapped[32], failures[4096] = "";
    moving_listing(h, "rb-opts", &m);
    /* The same vbucket once the tool cuts it to 32 bits. */
    snprintf(wrapped, sizeof(wrapped), "%llu", (unsigned long long)m.v + 4294967296ULL);
    struct {
        const char *option;
        char *argv[8];
    } cases[] = {
        {"--vbucket", {"move", "--vbucket", "abc", "--to", m.to}},
        {"--vbucket", {"move", "--vbucket", wrapped, "--to", m.to}},
        {"--vbucket", {"move", "--vbucket", "-1", "--to", m.to}},
        {"--to", {"move", "--vbucket", m.vb, "--to", "1x"}},
        {"--max-freeze-ms", {"move", "--vbucket", m.vb, "--to", m.to, "--max-freeze-ms", "abc"}},
        {"--dry-run", {"move", "--dry-run", "--vbucket", m.vb, "--to", m.to}},
        {"--vbucket", {"rebalance", "--dry-run", "--vbucket", m.vb}},
        {"--parallel", {"rebalance", "--dry-run", "--parallel", "abc"}},
        {"--parallel", {"rebalance", "--dry-run", "--parallel", "0"}},
        {"--shard", {"drain-shard", "--shard", ""}},
        {"--crash-after", {"resume", "--crash-after", "copie"}},
        /* A secret on the command line is refused; the parser's reason is kept. */
        {"without a user or password", {"add-shard", "--shard", "u:pw@127.0.0.1:1/db"}},
        {"1..65535", {"add-shard", "--shard", "127.0.0.1:99999/db"}},
        {"no database name", {"add-shard", "--shard", "127.0.0.1:3306"}},
    };
    ck_assert_int_eq(rebalance(before, sizeof(before), "status", NULL, NULL, NULL, NULL, NULL), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[12] = {tool, "--config", admin_ini};
        memcpy(argv + 3, cases[i].argv, sizeof(cases[i].argv));
        int rc = proc_run(argv, out, sizeof(out), 120);
        if (rc != 2 || strstr(out, cases[i].option) == NULL) {
            size_t n = strlen(failures);
            snprintf(failures + n, sizeof(failures) - n, "%s %s %s: exit %d: %.200s\n",
                     cases[i].argv[0], cases[i].argv[1], cases[i].argv[2], rc, out);
        }
    }
    ck_assert_msg(failures[0] == '\0', "not refused:\n%s", failures);
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL), 0);
    ck_assert_str_eq(out, before);
    http_client_destroy(h);
}
END_TEST

/* A move that cannot start is not journaled: an open journal row would block
 * every later move of the vbucket, and its resume would fail the same way
 * for ever. Here the target holds a fence row of the vbucket already. */
START_TEST(a_move_that_cannot_start_leaves_no_journal)
{
    struct http_client *h = setup_http();
    struct moving m;
    char out[8192], err[256];
    moving_listing(h, "rb-owned", &m);
    struct db *dst = testenv_connect_shard(&env, (size_t)m.target, err, sizeof(err));
    ck_assert_msg(dst != NULL, "%s", err);
    exec_sql(dst, "INSERT INTO vbucket_owner (vbucket, epoch) VALUES (?, 1)", m.v);
    int rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    exec_sql(dst, "DELETE FROM vbucket_owner WHERE vbucket = ?", m.v);
    db_close(dst);
    ck_assert_msg(rc == 1, "move to an owner: exit %d:\n%.2000s", rc, out);
    ck_assert_ptr_nonnull(strstr(out, "already owns"));
    ck_assert_int_eq(owner_of(m.v), m.from);
    rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(strstr(out, "0 unfinished moves") != NULL, "%.2000s", out);
    /* Nothing is left in the way of the next move. */
    rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 0, "move exit %d:\n%.2000s", rc, out);
    check_after_move(h, m.id, m.rid, m.key, m.target);
    http_client_destroy(h);
}
END_TEST

/* The log of a process so far, or "" (at most size - 1 bytes). */
static void
read_log(const char *path, char *out, size_t size)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    out[fread(out, 1, size - 1, f)] = '\0';
    fclose(f);
}

/* A write that holds the fence row longer than the cutover's lock wait
 * (lock_wait_timeout_s, 10 s in the tool): the timed-out wait is one of the
 * cutover's tries, not the end of the move, which goes through once the
 * write is gone. */
START_TEST(a_lock_wait_timeout_in_the_cutover_is_retried)
{
    struct http_client *h = setup_http();
    struct moving m;
    char err[256], log[] = "/tmp/calendar-rebalance-wait-XXXXXX";
    moving_listing(h, "rb-wait", &m);
    int fd = mkstemp(log);
    ck_assert_int_ge(fd, 0);
    close(fd);
    struct db *src = testenv_connect_shard(&env, (size_t)m.from, err, sizeof(err));
    ck_assert_msg(src != NULL, "%s", err);
    ck_assert_msg(db_begin(src, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_ge(
        scalar(src, "SELECT epoch FROM vbucket_owner WHERE vbucket = ? LOCK IN SHARE MODE", m.v),
        0);
    char *argv[] = {tool, "--config", admin_ini, "move", "--vbucket", m.vb, "--to", m.to, NULL};
    pid_t pid = proc_start(argv, log);
    ck_assert_int_gt(pid, 0);
    /* Held until a cutover try timed out on it (a lock wait of 10 s), then
     * let go: the next try goes through. */
    static char out[65536];
    bool timed_out = false;
    for (int s = 0; s < 60 && !timed_out; s++) {
        sleep(1);
        read_log(log, out, sizeof(out));
        timed_out = strstr(out, "cutover lock wait timed out, retrying") != NULL;
    }
    db_rollback(src);
    db_close(src);
    int rc = proc_wait(pid, 60);
    read_log(log, out, sizeof(out));
    unlink(log);
    ck_assert_msg(timed_out, "no cutover try timed out on the held fence row in 60 s:\n%.2000s",
                  out);
    ck_assert_msg(rc == 0, "move exit %d:\n%.2000s", rc, out);
    ck_assert_ptr_nonnull(strstr(out, "phase=done"));
    check_after_move(h, m.id, m.rid, m.key, m.target);
    http_client_destroy(h);
}
END_TEST

/* A booking sent from its own thread, so the test can watch it wait. */
struct waiting_booking {
    uint64_t id;
    char key[96];
    struct http_response r;
    cal_status rc;
    char err[256];
    atomic_bool answered;
};

/* Thread body: books nights [today + 95, today + 97). No ck_assert here: a
 * failure would end the case before it put the fence row back. */
static void *
book_in_background(void *arg)
{
    struct waiting_booking *b = arg;
    char url[512], hdr[160], body[256];
    const char *headers[2] = {hdr, NULL};
    snprintf(url, sizeof(url), "%s/v1/listings/%llu/reservations", env.calendard_url,
             (unsigned long long)b->id);
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", b->key);
    stay_body(body, sizeof(body), 95, 97, 5);
    struct http_client *h = http_client_create();
    b->rc = h != NULL ? http_request(h, "POST", url, headers, body, strlen(body), 15000, &b->r,
                                     b->err, sizeof(b->err))
                      : CAL_ENOMEM;
    http_client_destroy(h);
    atomic_store(&b->answered, true);
    return NULL;
}

/* Invariant 4 in calendard itself: a booking holds its vbucket's fence row
 * in share mode until COMMIT. While another session holds the row FOR
 * UPDATE (a cutover), the booking waits; once that session deletes the row
 * and commits, the booking finds the vbucket gone from the shard, writes
 * nothing there, and, the catalog still naming that shard, answers 503
 * vbucket_moving. calendard's lock wait is 2 s (lock_wait_timeout_s): the
 * row is let go after 1 s, well before its wait would time out. */
START_TEST(a_booking_waits_for_the_fence_row_and_writes_nothing_once_it_moved)
{
    struct http_client *h = setup_http();
    struct moving m;
    char err[256], code[64];
    moving_listing(h, "rb-fence", &m);
    struct db *src = testenv_connect_shard(&env, (size_t)m.from, err, sizeof(err));
    ck_assert_msg(src != NULL, "%s", err);
    ck_assert_msg(db_begin(src, err, sizeof(err)) == CAL_OK, "%s", err);
    long long epoch =
        scalar(src, "SELECT epoch FROM vbucket_owner WHERE vbucket = ? FOR UPDATE", m.v);
    ck_assert_int_gt(epoch, 0);

    struct waiting_booking b = {.id = m.id};
    snprintf(b.key, sizeof(b.key), "%s-waits", m.key);
    http_response_init(&b.r);
    atomic_init(&b.answered, false);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, book_in_background, &b), 0);
    cal_sleep_ms(1000);
    bool early = atomic_load(&b.answered);
    if (early) {
        db_rollback(src);
    } else {
        /* The cutover's end on the source: the vbucket is no longer here. */
        exec_sql(src, "DELETE FROM vbucket_owner WHERE vbucket = ?", m.v);
        ck_assert_msg(db_commit(src, err, sizeof(err)) == CAL_OK, "%s", err);
    }
    pthread_join(th, NULL);
    /* The fence row back before any check can fail: later cases need it. */
    struct db_val p[2] = {DB_INT_V(m.v), DB_INT_V(epoch)};
    if (!early)
        ck_assert_msg(db_query(src, "INSERT INTO vbucket_owner (vbucket, epoch) VALUES (?, ?)", p,
                               2, NULL, err, sizeof(err)) == CAL_OK,
                      "%s", err);
    db_close(src);

    ck_assert_msg(!early,
                  "the booking was answered (%ld %s) while another session held vbucket %u's"
                  " fence row FOR UPDATE: it does not lock the row in share mode",
                  b.r.status, b.r.body ? b.r.body : "", m.v);
    ck_assert_msg(b.rc == CAL_OK, "booking: %s", b.err);
    http_response_error_code(&b.r, code, sizeof(code));
    ck_assert_msg(b.r.status == 503 && strcmp(code, "vbucket_moving") == 0,
                  "booking of a vbucket the shard lost: %ld %s", b.r.status, b.r.body);
    ck_assert_msg(b.r.retry_after[0] != '\0', "503 without Retry-After");
    http_response_deinit(&b.r);
    /* Only the first booking's rows, on the source; none on the other shard. */
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 1);
    ck_assert_int_eq(rows_on((size_t)m.from, "nights", m.id), 3);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 0);
    ck_assert_int_eq(rows_on((size_t)m.target, "nights", m.id), 0);
    /* The key took no effect: with the fence row back it books anew (201),
     * where a committed booking would be replayed (200). */
    struct http_response r;
    ck_assert_int_eq(post_stay(h, m.id, b.key, 95, 97, 5, &r), 201);
    http_response_deinit(&r);
    ck_assert_int_eq(rows_on((size_t)m.from, "nights", m.id), 5);
    expect_verify_clean();
    http_client_destroy(h);
}
END_TEST

/* A listing of a vbucket, booked, and one catch-up pass of the vbucket to
 * the other shard (move_copy_pass, outside any move); the rows it sent. */
static uint64_t
first_copy(struct http_client *h, const char *prefix, struct moving *m, struct db **src,
           struct db **dst)
{
    char err[256];
    uint64_t copied = 0;
    moving_listing(h, prefix, m);
    *src = testenv_connect_shard(&env, (size_t)m->from, err, sizeof(err));
    ck_assert_msg(*src != NULL, "%s", err);
    *dst = testenv_connect_shard(&env, (size_t)m->target, err, sizeof(err));
    ck_assert_msg(*dst != NULL, "%s", err);
    ck_assert_msg(move_copy_pass(*src, *dst, m->v, NULL, &copied, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    return copied;
}

/* The other shard does not own the vbucket: leave it holding none of it. */
static void
forget_copy(const struct moving *m, struct db *src, struct db *dst)
{
    exec_sql(dst, "DELETE FROM nights WHERE vbucket = ?", m->v);
    exec_sql(dst, "DELETE FROM reservations WHERE vbucket = ?", m->v);
    exec_sql(dst, "DELETE FROM listing_refusals WHERE vbucket = ?", m->v);
    exec_sql(dst, "DELETE FROM listings WHERE vbucket = ?", m->v);
    db_close(src);
    db_close(dst);
    expect_verify_clean();
}

/* What refuse_now() needs: set by the test before the pass. */
static struct {
    struct http_client *h;
    uint64_t id;
    char key[80];
    int calls;
} refusal_hook;

/* The hook: a refusal kept on the source once the pass has read the
 * listings' versions and counts, before it reads their rows. */
static void
refuse_now(uint32_t vbucket)
{
    struct http_response r;
    (void)vbucket;
    if (refusal_hook.calls++ > 0)
        return;
    ck_assert_int_eq(post_stay(refusal_hook.h, refusal_hook.id, refusal_hook.key, 91, 94, 8, &r),
                     409);
    http_response_deinit(&r);
}

/* A refusal kept while a catch-up pass copies its listing for another
 * change: the pass read the listing's count of refusals before it, so it
 * must not copy the newer count without the refusal, or no later pass, the
 * cutover's included, would see the listing as changed. */
START_TEST(a_refusal_kept_during_a_copy_pass_is_copied_by_the_next)
{
    struct http_client *h = setup_http();
    struct moving m;
    struct db *src, *dst;
    char err[256];
    uint64_t copied = first_copy(h, "rb-midpass", &m, &src, &dst);
    /* Another booking: the listing's version changes, its count does not. */
    char key2[80];
    snprintf(key2, sizeof(key2), "%s-later", m.key);
    book(h, m.id, key2, 100, 102);
    refusal_hook.h = h;
    refusal_hook.id = m.id;
    refusal_hook.calls = 0;
    snprintf(refusal_hook.key, sizeof(refusal_hook.key), "%s-midpass", m.key);
    struct move_opts hooked = {.after_versions = refuse_now};
    ck_assert_msg(move_copy_pass(src, dst, m.v, &hooked, &copied, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_int_eq(refusal_hook.calls, 1);
    ck_assert_int_eq(scalar(src, "SELECT version FROM listing_refusals WHERE listing_id = ?", m.id),
                     1);
    /* The pass that saw the refusal's count change copies it. */
    ck_assert_msg(move_copy_pass(src, dst, m.v, NULL, &copied, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_int_eq(scalar(dst,
                            "SELECT COUNT(*) FROM reservations WHERE listing_id = ?"
                            " AND status = 'refused'",
                            m.id),
                     1);
    ck_assert_int_eq(scalar(dst, "SELECT version FROM listing_refusals WHERE listing_id = ?", m.id),
                     1);
    forget_copy(&m, src, dst);
    http_client_destroy(h);
}
END_TEST

/* A copier that lost its move lock while another run finished the move
 * (invariant 4) runs one more catch-up pass from the old source. Here the
 * new owner's rows are the other shard's copy, changed since with version
 * bumps: the stale pass must leave every one of them as it is. */
START_TEST(a_stale_copy_pass_keeps_newer_rows)
{
    struct http_client *h = setup_http();
    struct moving m;
    struct db *src, *dst;
    char err[256];
    uint64_t copied = first_copy(h, "rb-stale", &m, &src, &dst);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 1);
    long long nights = scalar(dst, "SELECT COUNT(*) FROM nights WHERE listing_id = ?", m.id);
    ck_assert_int_gt(nights, 0);
    /* The new owner's changes: every row newer than the source's. */
    exec_sql(dst,
             "UPDATE listings SET version = version + 10, default_price = 999, min_nights = 2"
             " WHERE listing_id = ?",
             m.id);
    exec_sql(dst,
             "UPDATE nights SET status = 'available', reservation_id = NULL, price = 1,"
             " version = version + 10 WHERE listing_id = ?",
             m.id);
    exec_sql(dst,
             "UPDATE reservations SET status = 'cancelled', version = version + 10"
             " WHERE listing_id = ?",
             m.id);
    long long version = scalar(dst, "SELECT version FROM listings WHERE listing_id = ?", m.id);
    /* The stale pass: the listing's versions differ, so it is sent again. */
    copied = 0;
    ck_assert_msg(move_copy_pass(src, dst, m.v, NULL, &copied, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_uint_gt(copied, 0);
    ck_assert_int_eq(scalar(dst, "SELECT version FROM listings WHERE listing_id = ?", m.id),
                     version);
    ck_assert_int_eq(
        scalar(dst, "SELECT default_price + 1000 * min_nights FROM listings WHERE listing_id = ?",
               m.id),
        2999);
    ck_assert_int_eq(scalar(dst, "SELECT COUNT(*) FROM nights WHERE listing_id = ?", m.id), nights);
    ck_assert_int_eq(scalar(dst,
                            "SELECT COUNT(*) FROM nights WHERE listing_id = ? AND (status <>"
                            " 'available' OR reservation_id IS NOT NULL OR price <> 1)",
                            m.id),
                     0);
    ck_assert_int_eq(scalar(dst,
                            "SELECT COUNT(*) FROM reservations WHERE listing_id = ?"
                            " AND status <> 'cancelled'",
                            m.id),
                     0);
    /* And a source row newer than the target's lands, every column of it:
     * version is assigned after the columns that compare with it. */
    exec_sql(src,
             "UPDATE listings SET version = version + 20, default_price = 555 WHERE listing_id = ?",
             m.id);
    long long newer = scalar(src, "SELECT version FROM listings WHERE listing_id = ?", m.id);
    ck_assert_int_gt(newer, version);
    ck_assert_msg(move_copy_pass(src, dst, m.v, NULL, &copied, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_int_eq(scalar(dst, "SELECT version FROM listings WHERE listing_id = ?", m.id), newer);
    ck_assert_int_eq(scalar(dst, "SELECT default_price FROM listings WHERE listing_id = ?", m.id),
                     555);
    forget_copy(&m, src, dst);
    http_client_destroy(h);
}
END_TEST

/* The move's own view of the cluster, opened here so that a test can hook
 * the move; caller frees with cluster_close(). */
static void
open_cluster(struct cluster *c)
{
    struct db_conf catalog, shard;
    char err[256];
    memset(&catalog, 0, sizeof(catalog));
    memset(&shard, 0, sizeof(shard));
    ck_assert_msg(db_conf_parse_dsn(&catalog, env.catalog_dsn, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_msg(db_conf_parse_dsn(&shard, env.shard_dsns[0], err, sizeof(err)) == CAL_OK, "%s",
                  err);
    catalog.read_timeout_ms = shard.read_timeout_ms = 30000;
    catalog.write_timeout_ms = shard.write_timeout_ms = 30000;
    shard.lock_wait_timeout_s = 10; /* as calendar-rebalance has it */
    ck_assert_msg(cluster_open(c, &catalog, &shard, err, sizeof(err)) == CAL_OK, "%s", err);
}

/* The database a session is in. */
static void
database_in(struct db *db, char *out, size_t size)
{
    char err[256];
    struct db_stmt *st;
    struct db_val c[1];
    ck_assert_msg(db != NULL, "no connection");
    ck_assert_msg(db_query(db, "SELECT DATABASE()", NULL, 0, &st, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    cal_strlcpy(out, c[0].type == DB_STR ? c[0].s : "", size);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
}

/* A shard's server replaced (a replica promoted: the catalog row names
 * another address) while the tool runs: after its next map load, the tool
 * talks to the new server, not on through its old connection. Shard 0's
 * row names shard 1's server for the test, and is put back. */
START_TEST(the_tool_follows_a_shard_address_change)
{
    setup();
    struct cluster c;
    open_cluster(&c);
    char err[256], before[65], after[65], back[65], sql[512];
    const struct shard_info *s0 = shardmap_shard(c.map, 0), *s1 = shardmap_shard(c.map, 1);
    ck_assert(s0 != NULL && s1 != NULL);
    struct shard_info was = *s0, other = *s1;
    database_in(cluster_shard(&c, 0, err, sizeof(err)), before, sizeof(before));
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    snprintf(sql, sizeof(sql),
             "UPDATE shards SET host = '%s', port = %u, db_name = '%s'"
             " WHERE shard_id = 0",
             other.host, other.port, other.db_name);
    ck_assert_msg(db_exec(cat, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    cal_status reload = cluster_reload(&c, err, sizeof(err));
    database_in(cluster_shard(&c, 0, err, sizeof(err)), after, sizeof(after));
    snprintf(sql, sizeof(sql),
             "UPDATE shards SET host = '%s', port = %u, db_name = '%s'"
             " WHERE shard_id = 0",
             was.host, was.port, was.db_name);
    ck_assert_msg(db_exec(cat, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(cluster_reload(&c, err, sizeof(err)), CAL_OK);
    database_in(cluster_shard(&c, 0, err, sizeof(err)), back, sizeof(back));
    db_close(cat);
    cluster_close(&c);
    ck_assert_int_eq(reload, CAL_OK);
    ck_assert_str_eq(before, was.db_name);
    ck_assert_str_eq(after, other.db_name);
    ck_assert_str_eq(back, was.db_name);
}
END_TEST

/* A run that loses its move lock partway (its catalog session killed, or
 * the lock gone from a live session) while another session takes it, as a
 * second run would: it must stop before its next write, leave the vbucket
 * served by the owner it has, and resume finishes the move once the lock is
 * free. When nobody takes the lock of a killed session, the run takes it
 * again on a new session and finishes the move itself. The move's test
 * hook (before_lock_check) loses the lock at one step, deterministically. */
/* KILL: the catalog ends the session. RELEASE: the session lives, its
 * lock is gone. ORPHAN: the client drops the session, which the catalog
 * keeps, lock and all (a partition, a read timeout). ABANDON: killed, and
 * another run abandons the move before this one takes the lock again. */
enum lose_how { LOSE_BY_KILL, LOSE_BY_RELEASE, LOSE_BY_ORPHAN, LOSE_TO_ABANDON };

static const struct lost_lock_case {
    const char *step;
    int nth; /* lost at the nth check of step */
    enum lose_how how;
    bool second_pass;  /* a vbucket that needs two copy passes; a booking lands in between */
    const char *phase; /* the journal's after the stop */
    bool cut_over;     /* the source's fence row is gone already (committed before) */
    bool flipped;      /* the catalog and the target's fence row name the target */
    bool retaken;      /* nobody takes the lock: the run takes it again and finishes */
} LOST_LOCK_CASES[] = {
    {"copy-pass", 2, LOSE_BY_KILL, true, "copy", false, false, false},
    {"cutover-commit", 1, LOSE_BY_KILL, false, "cutover", false, false, false},
    {"cutover-commit", 1, LOSE_BY_RELEASE, false, "cutover", false, false, false},
    {"target", 1, LOSE_BY_KILL, false, "cutover", true, false, false},
    {"cleanup-delete", 1, LOSE_BY_KILL, false, "cleanup", true, true, false},
    {"copy-pass", 2, LOSE_BY_KILL, true, "done", false, false, true},
    {"target", 1, LOSE_BY_KILL, false, "done", false, false, true},
    {"target", 1, LOSE_BY_ORPHAN, false, "done", false, false, true},
    {"copy-pass", 1, LOSE_TO_ABANDON, false, "abandoned", false, false, false},
};

/* What the hook needs: set by the test before the move. */
static struct {
    const struct lost_lock_case *lc;
    struct cluster *c;
    struct db *thief;  /* the other session, which takes the lock */
    struct db *orphan; /* LOSE_BY_ORPHAN: the mover's dropped catalog session */
    struct http_client *h;
    const struct moving *m;
    int seen;         /* checks of lc->step so far */
    uint64_t mid_rid; /* second_pass: booked on the source before the loss */
} lost;

static const char SQL_LOCK_HOLDER[] = "SELECT IS_USED_LOCK(CONCAT('calendar_move_', ?))";

static void
lose_lock(const char *step, uint32_t vbucket)
{
    char sql[64], err[256], key[96];
    if (strcmp(step, lost.lc->step) != 0 || ++lost.seen != lost.lc->nth)
        return;
    ck_assert_uint_eq(vbucket, lost.m->v);
    if (lost.lc->second_pass) {
        /* A change the next pass would copy: it must not reach the target. */
        snprintf(key, sizeof(key), "%s-mid", lost.m->key);
        lost.mid_rid = book(lost.h, lost.m->id, key, 100, 102);
    }
    long long holder = scalar(lost.thief, SQL_LOCK_HOLDER, vbucket);
    ck_assert_int_gt(holder, 0);
    if (lost.lc->how == LOSE_BY_ORPHAN) {
        lost.orphan = lost.c->catalog;
        lost.c->catalog = db_connect(&lost.c->catalog_conf, err, sizeof(err));
        ck_assert_msg(lost.c->catalog != NULL, "%s", err);
        return;
    }
    if (lost.lc->how == LOSE_BY_KILL || lost.lc->how == LOSE_TO_ABANDON) {
        snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", holder);
        ck_assert_msg(db_exec(lost.thief, sql, err, sizeof(err)) == CAL_OK, "%s: %s", sql, err);
    } else {
        ck_assert_int_eq(
            scalar(lost.c->catalog, "SELECT RELEASE_LOCK(CONCAT('calendar_move_', ?))", vbucket),
            1);
    }
    /* Waits for a killed session to end and let its lock go. */
    ck_assert_int_eq(
        scalar(lost.thief, "SELECT GET_LOCK(CONCAT('calendar_move_', ?), 10)", vbucket), 1);
    if (lost.lc->retaken || lost.lc->how == LOSE_TO_ABANDON)
        ck_assert_int_eq(
            scalar(lost.thief, "SELECT RELEASE_LOCK(CONCAT('calendar_move_', ?))", vbucket), 1);
    if (lost.lc->how == LOSE_TO_ABANDON) {
        struct cluster other;
        struct move_abandoned a;
        open_cluster(&other);
        ck_assert_msg(move_abandon(&other, vbucket, &a, err, sizeof(err)) == CAL_OK, "%s", err);
        cluster_close(&other);
    }
}

static const char SQL_FENCE[] =
    "SELECT COALESCE((SELECT epoch FROM vbucket_owner WHERE vbucket = ?), -1)";
static const char SQL_EPOCH[] = "SELECT epoch FROM vbuckets WHERE vbucket = ?";

/* The move finished: the target owns the vbucket at the next epoch and
 * holds every row, the source none, and each reservation answers. */
static void
expect_moved(const struct moving *m, struct db *cat, struct db *src, struct db *dst,
             long long epoch, long booked, struct http_client *h, const uint64_t *rids, size_t n)
{
    ck_assert_int_eq(owner_of(m->v), m->target);
    ck_assert_int_eq(scalar(cat, SQL_EPOCH, m->v), epoch + 1);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m->v), -1);
    ck_assert_int_eq(scalar(dst, SQL_FENCE, m->v), epoch + 1);
    ck_assert_int_eq(rows_on((size_t)m->target, "reservations", m->id), booked);
    ck_assert_int_eq(rows_on((size_t)m->from, "reservations", m->id), 0);
    ck_assert_int_eq(rows_on((size_t)m->from, "nights", m->id), 0);
    ck_assert_int_eq(rows_on((size_t)m->from, "listings", m->id), 0);
    for (size_t i = 0; i < n; i++)
        if (rids[i] != 0)
            ck_assert_int_eq(get_reservation(h, m->id, rids[i]), 200);
}

static void
expect_phase(struct db *cat, uint64_t move_id, const char *phase)
{
    char err[256];
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(move_id)}, c[1];
    ck_assert(db_query(cat, "SELECT phase FROM moves WHERE move_id = ?", p, 1, &st, err,
                       sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    ck_assert_int_eq(c[0].type, DB_STR);
    ck_assert_str_eq(c[0].s, phase);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
}

/* verify while a move runs: a vbucket whose move changes it during the
 * scan is counted as moving (exit 4), not as a broken one; the same
 * vbucket with its move stopped is compared as before. A tool that opened
 * its map before a move verifies that move's vbucket clean. */
START_TEST(verify_tells_a_vbucket_being_moved_from_a_broken_one)
{
    struct http_client *h = setup_http();
    struct moving m;
    char out[8192], err[512], key[96];
    moving_listing(h, "rb-verify", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    crash_after_copy(&m);
    /* Written since the copy: the target lacks it until the cutover. */
    snprintf(key, sizeof(key), "%s-late", m.key);
    book(h, m.id, key, 110, 112);
    int rc = rebalance(out, sizeof(out), "verify", "--vbucket", m.vb, NULL, NULL, NULL);
    ck_assert_msg(rc == 3 && strstr(out, "missing on shard") != NULL &&
                      strstr(out, " moving=0") != NULL,
                  "verify of a stopped move: exit %d:\n%.2000s", rc, out);
    /* A run holds the move's lock: the copy is under way. */
    struct db *runner = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(runner != NULL, "%s", err);
    ck_assert_int_eq(scalar(runner, "SELECT GET_LOCK(CONCAT('calendar_move_', ?), 0)", m.v), 1);
    rc = rebalance(out, sizeof(out), "verify", "--vbucket", m.vb, NULL, NULL, NULL);
    db_close(runner);
    ck_assert_msg(rc == 4 && strstr(out, "moved while verified, not checked") != NULL &&
                      strstr(out, "missing=0 extra=0 different=0 fence_errors=0 collisions=0"
                                  " stray=0 misrouted=0 moving=1") != NULL,
                  "verify of a running move: exit %d:\n%.2000s", rc, out);

    /* A map loaded before the move ends. */
    struct cluster c;
    open_cluster(&c);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume: exit %d:\n%.2000s", rc, out);
    struct verify_report rep;
    FILE *devnull = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(devnull);
    cal_status vrc = verify_run(&c, m.v, &rep, devnull, err, sizeof(err));
    fclose(devnull);
    cluster_close(&c);
    ck_assert_msg(vrc == CAL_OK, "%s", err);
    ck_assert_uint_eq(rep.fence_errors, 0);
    ck_assert_uint_eq(rep.stray, 0);
    ck_assert_uint_eq(rep.missing, 0);
    ck_assert_uint_eq(rep.moving, 0);
    ck_assert_int_eq(owner_of(m.v), m.target);
    end_case(src, dst, cat, h);
}
END_TEST

/* drain-shard, then activate-shard, of m's target: both must succeed; out
 * holds what they printed. */
static void
drain_and_activate(const struct moving *m, char *out, size_t size)
{
    int rc = rebalance(out, size, "drain-shard", "--shard", m->to, NULL, NULL, NULL);
    size_t n = strlen(out);
    int rc2 = rebalance(out + n, size - n, "activate-shard", "--shard", m->to, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && rc2 == 0, "drain: exit %d, activate: exit %d:\n%.2000s", rc, rc2, out);
}

/* drain-shard while a journaled move still brings a vbucket to the shard:
 * the drain goes through and says so (the move finishes there; the next
 * rebalance moves the vbucket away again). */
START_TEST(a_drain_tells_of_moves_still_coming_in)
{
    struct http_client *h = setup_http();
    struct moving m;
    char out[8192];
    moving_listing(h, "rb-drain-in", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    crash_after_copy(&m);
    drain_and_activate(&m, out, sizeof(out));
    ck_assert_msg(strstr(out, "1 unfinished moves still bring vbuckets to it") != NULL, "%.2000s",
                  out);
    int rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume: exit %d:\n%.2000s", rc, out);
    drain_and_activate(&m, out, sizeof(out));
    ck_assert_msg(strstr(out, "unfinished moves still") == NULL, "%.2000s", out);
    ck_assert_int_eq(owner_of(m.v), m.target);
    end_case(src, dst, cat, h);
}
END_TEST

static const char SQL_MOVES_OF[] = "SELECT COUNT(*) FROM moves WHERE vbucket = ?";

/* A target drained after the tool loaded its map (a rebalance planned
 * before drain-shard, or remove-shard racing a move's start): the move is
 * not journaled, so nothing flips the vbucket to a shard on its way out. */
START_TEST(a_move_to_a_shard_drained_meanwhile_is_not_journaled)
{
    struct http_client *h = setup_http();
    struct moving m;
    char err[512];
    moving_listing(h, "rb-drained", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    struct cluster c;
    open_cluster(&c);
    long long journaled = scalar(cat, SQL_MOVES_OF, m.v);
    exec_sql(cat, "UPDATE shards SET state = 'draining' WHERE shard_id = ?", (uint64_t)m.target);
    struct move_opts mo = {0};
    struct move_progress res;
    cal_status rc = move_vbucket(&c, m.v, (uint32_t)m.target, &mo, &res, err, sizeof(err));
    exec_sql(cat, "UPDATE shards SET state = 'active' WHERE shard_id = ?", (uint64_t)m.target);
    cluster_close(&c);
    ck_assert_msg(rc == CAL_EINVAL, "move to a draining shard: %s (%s)", cal_status_name(rc), err);
    ck_assert_ptr_nonnull(strstr(err, "not active"));
    ck_assert_int_eq(scalar(cat, SQL_MOVES_OF, m.v), journaled);
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), scalar(cat, SQL_EPOCH, m.v));
    db_close(src);
    db_close(dst);
    db_close(cat);
    check_after_move(h, m.id, m.rid, m.key, m.from);
    http_client_destroy(h);
}
END_TEST

/* Progress of a long copy: reported between its chunks (here after every
 * chunk: the interval is 1 us), with rows_copied growing and journaled,
 * so status shows a running copy; and of the cleanup's check of the copy,
 * after each table with the source's rows checked so far. The vbucket gets
 * 450 more listings on its source, three chunks of the copy's first pass. */
#define PROGRESS_MAX 64
static struct {
    struct db *cat;
    size_t n;
    char phase[PROGRESS_MAX][17];
    uint64_t rows[PROGRESS_MAX];
    uint64_t checked[PROGRESS_MAX];
    long long journaled[PROGRESS_MAX];
} seen_progress;

static void
note_progress(const struct move_progress *p)
{
    size_t i = seen_progress.n;
    if (i == PROGRESS_MAX)
        return;
    cal_strlcpy(seen_progress.phase[i], p->phase, sizeof(seen_progress.phase[i]));
    seen_progress.rows[i] = p->rows_copied;
    seen_progress.checked[i] = p->rows_checked;
    /* Read without asserting: a failure here would leave the move open. */
    char err[256];
    struct db_stmt *st;
    struct db_val q[1] = {DB_INT_V(p->move_id)}, col[1];
    seen_progress.journaled[i] = -1;
    if (db_query(seen_progress.cat, "SELECT rows_copied FROM moves WHERE move_id = ?", q, 1, &st,
                 err, sizeof(err)) == CAL_OK) {
        if (db_fetch(st, col, 1, err, sizeof(err)) > 0 && col[0].type == DB_INT)
            seen_progress.journaled[i] = (long long)col[0].i;
        while (db_fetch(st, col, 1, err, sizeof(err)) > 0)
            ;
    }
    seen_progress.n++;
}

START_TEST(a_long_copy_reports_its_progress)
{
    struct http_client *h = setup_http();
    struct moving m;
    char err[512];
    moving_listing(h, "rb-progress", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    char sql[64 + 450 * 48];
    size_t off = (size_t)snprintf(sql, sizeof(sql),
                                  "INSERT INTO listings (listing_id, vbucket, default_price,"
                                  " currency, min_nights, max_nights) VALUES ");
    for (int k = 0; k < 450;) {
        uint64_t id = testenv_random48();
        if (testenv_vbucket(id) != m.v)
            continue;
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, "%s(%llu, %u, 100, 'EUR', 1, 30)",
                                k++ ? "," : "", (unsigned long long)id, m.v);
    }
    ck_assert_msg(off < sizeof(sql) && db_exec(src, sql, err, sizeof(err)) == CAL_OK, "%s", err);

    memset(&seen_progress, 0, sizeof(seen_progress));
    seen_progress.cat = cat;
    struct cluster c;
    open_cluster(&c);
    struct move_opts mo = {.progress = note_progress, .progress_every_us = 1};
    struct move_progress res;
    cal_status rc = move_vbucket(&c, m.v, (uint32_t)m.target, &mo, &res, err, sizeof(err));
    cluster_close(&c);
    ck_assert_msg(rc == CAL_OK, "move: %s (%s)", cal_status_name(rc), err);

    /* The first pass's chunks each reported before the pass ended: lines
     * between the copy's start (0 rows) and its last (all of them). */
    char lines[512];
    size_t loff = 0, copies = 0, mid = 0;
    for (size_t i = 0; i < seen_progress.n && loff < sizeof(lines); i++)
        loff += (size_t)snprintf(lines + loff, sizeof(lines) - loff, " %s:%llu",
                                 seen_progress.phase[i], (unsigned long long)seen_progress.rows[i]);
    while (copies < seen_progress.n && strcmp(seen_progress.phase[copies], "copy") == 0)
        copies++;
    ck_assert_msg(copies > 0, "no copy line:%s", lines);
    uint64_t all = seen_progress.rows[copies - 1];
    ck_assert_msg(all >= 450, "progress:%s", lines);
    for (size_t i = 0; i < copies; i++) {
        ck_assert_msg(i == 0 || seen_progress.rows[i] >= seen_progress.rows[i - 1], "progress:%s",
                      lines);
        if (seen_progress.rows[i] == 0 || seen_progress.rows[i] == all)
            continue;
        mid++;
        ck_assert_msg(seen_progress.journaled[i] == (long long)seen_progress.rows[i],
                      "line %zu journaled %lld:%s", i, seen_progress.journaled[i], lines);
    }
    ck_assert_msg(mid >= 2, "%zu lines within the copy:%s", mid, lines);
    /* The check of the copy in cleanup: a line after each table, the rows
     * checked growing to the source's whole vbucket (listings, then its
     * listing's nights, then its reservation: counts that differ; the
     * delete's lines after the check carry its total). */
    size_t counts = 0;
    uint64_t checked = 0;
    for (size_t i = 0; i < seen_progress.n; i++) {
        if (strcmp(seen_progress.phase[i], "cleanup") != 0 || seen_progress.checked[i] == 0)
            continue;
        ck_assert_msg(seen_progress.checked[i] >= checked, "rows checked went down");
        counts += seen_progress.checked[i] > checked;
        checked = seen_progress.checked[i];
    }
    ck_assert_msg(counts >= 3 && checked >= 450,
                  "%zu counts of rows checked within the check, the last %llu", counts,
                  (unsigned long long)checked);
    ck_assert_str_eq(seen_progress.phase[seen_progress.n - 1], "done");
    check_after_move(h, m.id, m.rid, m.key, m.target);

    /* Moved back at the default interval (5 s), a copy this short reports
     * once per pass only: no line within it, nor within the check. */
    memset(&seen_progress, 0, sizeof(seen_progress));
    seen_progress.cat = cat;
    open_cluster(&c);
    mo.progress_every_us = 0;
    rc = move_vbucket(&c, m.v, (uint32_t)m.from, &mo, &res, err, sizeof(err));
    cluster_close(&c);
    ck_assert_msg(rc == CAL_OK, "move back: %s (%s)", cal_status_name(rc), err);
    for (copies = 0; copies < seen_progress.n && strcmp(seen_progress.phase[copies], "copy") == 0;
         copies++)
        ck_assert_msg(seen_progress.rows[copies] == 0 ||
                          seen_progress.rows[copies] == seen_progress.rows[seen_progress.n - 1],
                      "a line within a short copy at the default interval");
    for (size_t i = 0; i < seen_progress.n; i++)
        ck_assert_msg(strcmp(seen_progress.phase[i], "cleanup") != 0 ||
                          seen_progress.checked[i] == 0,
                      "a line within a short check at the default interval");
    ck_assert_str_eq(seen_progress.phase[seen_progress.n - 1], "done");
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(get_reservation(h, m.id, m.rid), 200);
    end_case(src, dst, cat, h);
}
END_TEST

START_TEST(a_run_that_loses_its_move_lock_stops)
{
    const struct lost_lock_case *lc = &LOST_LOCK_CASES[_i];
    struct http_client *h = setup_http();
    struct moving m;
    char err[512], out[8192], prefix[64], key[96];
    snprintf(prefix, sizeof(prefix), "rb-lost-%s", lc->step);
    moving_listing(h, prefix, &m);
    if (lc->second_pass) {
        /* More changed listings than a cutover takes (CUTOVER_DELTA_MAX / 2
         * after a pass): the copy makes a second pass. */
        uint64_t id = testenv_random48();
        for (int made = 0; made < 40; id++)
            if (testenv_vbucket(id) == m.v) {
                put_listing(h, id);
                made++;
            }
    }
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    long long epoch = scalar(cat, SQL_EPOCH, m.v);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), epoch);

    struct cluster c;
    open_cluster(&c);
    memset(&lost, 0, sizeof(lost));
    lost.lc = lc;
    lost.c = &c;
    lost.h = h;
    lost.m = &m;
    lost.thief = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(lost.thief != NULL, "%s", err);
    /* No freeze bound: no postponed cutover, the same checks on every run. */
    struct move_opts mo = {.before_lock_check = lose_lock};
    struct move_progress res;
    uint64_t t0 = cal_mono_us();
    cal_status rc = move_vbucket(&c, m.v, (uint32_t)m.target, &mo, &res, err, sizeof(err));
    cluster_close(&c);
    fprintf(stderr, "lost lock at %s #%d: stopped in %.0f ms: %s\n", lc->step, lc->nth,
            (double)(cal_mono_us() - t0) / 1000.0, err);
    if (lc->retaken) {
        /* The next step's check found the session dead; the run took the
         * lock again and went on: every step ran, the booking made at the
         * loss was copied. */
        ck_assert_msg(rc == CAL_OK, "the run did not take its lock again: %s", err);
        ck_assert_int_gt(lost.seen, lc->nth); /* the step was checked again */
        expect_phase(cat, res.move_id, "done");
        uint64_t rids[2] = {m.rid, lost.mid_rid};
        expect_moved(&m, cat, src, dst, epoch, lc->second_pass ? 2 : 1, h, rids, 2);
        db_close(lost.thief);
        db_close(lost.orphan); /* killed by the run */
        end_case(src, dst, cat, h);
        return;
    }
    if (lc->how == LOSE_TO_ABANDON) {
        /* The run took the lock again and found the move abandoned: it
         * stops, and nothing moved. */
        ck_assert_msg(rc == CAL_ECONFLICT && strstr(err, "abandoned in the journal") != NULL,
                      "move: status %d: %s", rc, err);
        expect_phase(cat, res.move_id, "abandoned");
        ck_assert_int_eq(owner_of(m.v), m.from);
        ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), epoch);
        ck_assert_int_eq(scalar(dst, SQL_FENCE, m.v), -1);
        ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 0);
        ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 1);
        db_close(lost.thief);
        end_case(src, dst, cat, h);
        return;
    }
    ck_assert_int_eq(lost.seen, lc->nth);
    ck_assert_msg(rc != CAL_OK, "the move went on after losing its lock");

    /* Nothing written after the loss: the mapping, both fence rows and the
     * journal are where the step before left them, and the source still
     * holds every row. */
    long owner = lc->flipped ? m.target : m.from;
    long long now = lc->flipped ? epoch + 1 : epoch;
    ck_assert_int_eq(owner_of(m.v), owner);
    ck_assert_int_eq(scalar(cat, SQL_EPOCH, m.v), now);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), lc->cut_over ? -1 : epoch);
    ck_assert_int_eq(scalar(dst, SQL_FENCE, m.v), lc->flipped ? epoch + 1 : -1);
    expect_phase(cat, res.move_id, lc->phase);
    long booked = lc->second_pass ? 2 : 1;
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), booked);
    ck_assert_int_eq(rows_on((size_t)m.from, "nights", m.id), lc->second_pass ? 3 + 2 : 3);
    /* The first pass copied the first booking; the second never ran. */
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 1);
    /* Another run holds the lock now: try again later (exit 4). */
    ck_assert_msg(rc == CAL_EAGAIN && strstr(err, "no longer holds its move lock") != NULL &&
                      strstr(err, lc->step) != NULL &&
                      strstr(err, "; taking the lock again: vbucket") != NULL,
                  "move: status %d: %s", rc, err);

    /* Served by its owner, and booked on while that is the source. Between
     * the cutover's COMMIT and the target's fence row no shard owns it, as
     * after a crash there: reads and writes wait for resume (503). */
    struct http_response r;
    ck_assert_int_eq(api(h, "GET", NULL, NULL, &r, "/v1/listings/%llu/reservations/%llu",
                         (unsigned long long)m.id, (unsigned long long)m.rid),
                     lc->cut_over && !lc->flipped ? 503 : 200);
    http_response_deinit(&r);
    uint64_t late_rid = 0;
    if (!lc->cut_over) {
        snprintf(key, sizeof(key), "%s-late", m.key);
        late_rid = book(h, m.id, key, 105, 106);
        booked++;
        ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), booked);
    }

    /* The lock is the other session's: resume leaves the move to it. */
    int xrc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(xrc == 4 && strstr(out, "being moved by another calendar-rebalance") != NULL,
                  "resume under the other session's lock: exit %d:\n%.2000s", xrc, out);
    expect_phase(cat, res.move_id, lc->phase);
    db_close(lost.thief); /* its lock goes with it */
    xrc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(xrc == 0, "resume: exit %d:\n%.2000s", xrc, out);
    expect_phase(cat, res.move_id, "done");
    uint64_t rids[3] = {m.rid, lost.mid_rid, late_rid};
    expect_moved(&m, cat, src, dst, epoch, booked, h, rids, 3);
    end_case(src, dst, cat, h);
}
END_TEST

/* Reservation ids were once unique per calendard process only, so a legacy
 * id R can be on shard X for listing A and on shard Y for listing B. Moving
 * B's vbucket to X must neither overwrite A's row (versions of two listings
 * do not compare) nor cut over without B's: it stops before the cutover,
 * naming R and both listings, with nothing changed owner. Once an operator
 * gives one of them a new id, resume finishes the move. */
static const struct collide_case {
    bool moved_newer; /* B's row has the higher version (else A's) */
    bool re_id_moved; /* the repair re-ids B's reservation on Y (else A's on X) */
    bool after_copy; /* R is B's booking made after the copy: the cutover's locked delta meets it */
} COLLIDE_CASES[] = {{true, true, false}, {false, false, false}, {true, false, true}};

/* The repair of docs/operations.md: reservation rid of listing id on db gets
 * the id new_rid, with its nights, and the listing a new version. */
static void
re_id_reservation(struct db *db, uint64_t id, uint64_t rid, uint64_t new_rid)
{
    static const char *const sql[] = {
        "UPDATE reservations SET reservation_id = ? WHERE reservation_id = ? AND listing_id = ?",
        "UPDATE nights SET reservation_id = ? WHERE reservation_id = ? AND listing_id = ?",
    };
    char err[256];
    struct db_val p[3] = {DB_INT_V(new_rid), DB_INT_V(rid), DB_INT_V(id)};
    ck_assert_msg(db_begin(db, err, sizeof(err)) == CAL_OK, "%s", err);
    for (size_t i = 0; i < 2; i++) {
        struct db_stmt *st;
        ck_assert_msg(db_query(db, sql[i], p, 3, &st, err, sizeof(err)) == CAL_OK, "%s: %s", sql[i],
                      err);
        ck_assert_int_ge(db_affected_rows(st), 1);
    }
    exec_sql(db, "UPDATE listings SET version = version + 1 WHERE listing_id = ?", id);
    ck_assert_msg(db_commit(db, err, sizeof(err)) == CAL_OK, "%s", err);
}

/* Every column of reservation rid on db, as text ("" when there is none). */
static void
reservation_text(struct db *db, uint64_t rid, char *out, size_t outlen)
{
    char err[256];
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(rid)}, c[1];
    ck_assert(db_query(db,
                       "SELECT CONCAT_WS('|', reservation_id, listing_id, vbucket, check_in,"
                       " check_out, guest_id, status, total_price, currency, idempotency_key,"
                       " request_hash, version, created_at, updated_at) FROM reservations"
                       " WHERE reservation_id = ?",
                       p, 1, &st, err, sizeof(err)) == CAL_OK);
    out[0] = '\0';
    if (db_fetch(st, c, 1, err, sizeof(err)) == 1 && c[0].type == DB_STR)
        snprintf(out, outlen, "%s", c[0].s);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
}

/* Nights of listing id on db booked for reservation rid. */
static long long
nights_of(struct db *db, uint64_t id, uint64_t rid)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM nights WHERE listing_id = %llu AND reservation_id = ?",
             (unsigned long long)id);
    return scalar(db, sql, rid);
}

START_TEST(colliding_reservation_ids_stop_the_move_before_its_cutover)
{
    const struct collide_case *cc = &COLLIDE_CASES[_i];
    struct http_client *h = setup_http();
    struct moving m; /* listing B, vbucket vB, on shard Y = m.from */
    char out[8192], key[96], want[192], a_before[1024], b_before[1024], now[1024];
    moving_listing(h, "rb-collide", &m);
    if (cc->after_copy) {
        char *argv[] = {tool,   "--config", admin_ini,   "--crash-after",
                        "copy", "move",     "--vbucket", m.vb,
                        "--to", m.to,       NULL};
        int rc = proc_run(argv, out, sizeof(out), 120);
        ck_assert_msg(rc == 128 + 9, "copy: exit %d, want SIGKILL:\n%.2000s", rc, out);
    }
    /* A second booking of B: the colliding one after the copy, else one that
     * the stopped copy leaves on X. */
    snprintf(key, sizeof(key), "%s-2", m.key);
    uint64_t b_rid2 = book(h, m.id, key, 100, 102);
    /* Listing A, of another vbucket that X owns. */
    uint64_t a, a_rid;
    do
        a = testenv_random48();
    while (testenv_vbucket(a) == m.v || owner_of(testenv_vbucket(a)) != m.target);
    put_listing(h, a);
    snprintf(key, sizeof(key), "%s-a", m.key);
    a_rid = book(h, a, key, 90, 93);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    /* A's reservation on X takes B's id R, older or newer than B's. */
    uint64_t r = cc->after_copy ? b_rid2 : m.rid, b_other = cc->after_copy ? m.rid : b_rid2;
    long long r_nights = cc->after_copy ? 2 : 3;
    re_id_reservation(dst, a, a_rid, r);
    long long b_version =
        scalar(src, "SELECT version FROM reservations WHERE reservation_id = ?", r);
    ck_assert_int_ge(b_version, 2);
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE reservations SET version = %lld WHERE reservation_id = ?",
             cc->moved_newer ? b_version - 1 : b_version + 100);
    exec_sql(dst, sql, r);
    reservation_text(dst, r, a_before, sizeof(a_before));
    reservation_text(src, r, b_before, sizeof(b_before));
    long long epoch = scalar(cat, SQL_EPOCH, m.v);

    uint64_t t0 = cal_mono_us();
    int rc = cc->after_copy
                 ? rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL)
                 : rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    fprintf(stderr, "colliding ids (%s newer%s): move refused in %.0f ms\n",
            cc->moved_newer ? "moved row" : "target's row",
            cc->after_copy ? ", met in the cutover" : "", (double)(cal_mono_us() - t0) / 1000.0);
    ck_assert_msg(rc == 1, "move over a colliding id: exit %d:\n%.3000s", rc, out);
    snprintf(want, sizeof(want),
             "reservation_id %llu of listing %llu is taken on the target by"
             " listing %llu",
             (unsigned long long)r, (unsigned long long)m.id, (unsigned long long)a);
    ck_assert_msg(strstr(out, want) != NULL && strstr(out, "stopped before the cutover") != NULL,
                  "want \"%s\":\n%.3000s", want, out);
    /* Nothing changed owner, and both reservations are as they were. */
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(scalar(cat, SQL_EPOCH, m.v), epoch);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), epoch);
    ck_assert_int_eq(scalar(dst, SQL_FENCE, m.v), -1);
    reservation_text(dst, r, now, sizeof(now));
    ck_assert_str_eq(now, a_before);
    reservation_text(src, r, now, sizeof(now));
    ck_assert_str_eq(now, b_before);
    ck_assert_int_eq(nights_of(dst, a, r), 3);
    ck_assert_int_eq(nights_of(src, m.id, r), r_nights);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 2);
    ck_assert_int_eq(rows_on((size_t)m.from, "listings", m.id), 1);
    /* The target's version of B never claims the row it lacks. */
    snprintf(sql, sizeof(sql),
             "SELECT COALESCE(MAX(version), 0) FROM listings WHERE listing_id = ?");
    ck_assert_int_lt(scalar(dst, sql, m.id), scalar(src, sql, m.id));
    ck_assert_int_eq(get_reservation(h, m.id, r), 200);
    ck_assert_int_eq(get_reservation(h, a, r), 200);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(strstr(out, "1 unfinished move") != NULL, "%.2000s", out);
    /* verify names the collision: the stopped copy left B's other booking
     * on X, so it compares vB there. */
    rc = rebalance(out, sizeof(out), "verify", NULL, NULL, NULL, NULL, NULL);
    snprintf(want, sizeof(want), "reservations %llu: shard %ld holds this key for listing %llu",
             (unsigned long long)r, m.target, (unsigned long long)a);
    ck_assert_msg(rc == 3 && strstr(out, want) != NULL && strstr(out, "collisions=1") != NULL,
                  "verify: exit %d, want \"%s\":\n%.3000s", rc, want, out);

    /* The repair: one of the two gets a fresh id. Then resume. */
    uint64_t fresh = testenv_random48(), a_final = r, b_final = r;
    if (cc->re_id_moved) {
        re_id_reservation(src, m.id, r, fresh);
        b_final = fresh;
    } else {
        re_id_reservation(dst, a, r, fresh);
        a_final = fresh;
    }
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume after the repair: exit %d:\n%.3000s", rc, out);
    ck_assert_int_eq(owner_of(m.v), m.target);
    ck_assert_int_eq(scalar(cat, SQL_EPOCH, m.v), epoch + 1);
    ck_assert_int_eq(
        scalar(dst, "SELECT listing_id FROM reservations WHERE reservation_id = ?", a_final),
        (long long)a);
    ck_assert_int_eq(
        scalar(dst, "SELECT listing_id FROM reservations WHERE reservation_id = ?", b_final),
        (long long)m.id);
    ck_assert_int_eq(nights_of(dst, a, a_final), 3);
    ck_assert_int_eq(nights_of(dst, m.id, b_final), r_nights);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 2);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 0);
    ck_assert_int_eq(get_reservation(h, m.id, b_final), 200);
    ck_assert_int_eq(get_reservation(h, m.id, b_other), 200);
    ck_assert_int_eq(get_reservation(h, a, a_final), 200);
    end_case(src, dst, cat, h);
}
END_TEST

/* The headline: calendar-stress books, cancels, blocks and replays while its
 * listings' vbuckets move back and forth between the shards; then every
 * invariant it checks with SQL must be zero and verify must be clean. */
START_TEST(stress_while_vbuckets_move)
{
    setup();
    char log[] = "/tmp/calendar-stress-rebalance-XXXXXX";
    int fd = mkstemp(log);
    ck_assert_int_ge(fd, 0);
    close(fd);
    /* Its load runs until the moves are over (SIGTERM); 200 s is only a cap. */
    char *sargv[] = {"bin/calendar-stress", "--stack-env", env.path,     "--clients", "8",
                     "--listings",          "24",          "--duration", "200",       NULL};
    pid_t stress = proc_start(sargv, log);
    ck_assert_int_gt(stress, 0);
    uint64_t stress_started = cal_mono_us();
    char err[256];
    /* Up to 24 vbuckets: each moves once, then again while 15 s have not
     * passed (a move is 2-3x slower under the sanitizers). Those of the
     * listings the stress has made and is writing to: asked again until
     * more than 5 show (its start and setup take seconds under TSan). */
    unsigned vbs[24];
    size_t nvb = 0;
    uint64_t setup_deadline = cal_mono_us() + 60 * 1000000ULL;
    while (nvb <= 5 && cal_mono_us() < setup_deadline) {
        cal_sleep_ms(500);
        nvb = 0;
        for (size_t s = 0; s < env.nshards && s < 2; s++) {
            struct db *db = testenv_connect_shard(&env, s, err, sizeof(err));
            ck_assert_msg(db != NULL, "%s", err);
            struct db_stmt *st;
            struct db_val c[1];
            ck_assert(db_query(db,
                               "SELECT DISTINCT vbucket FROM listings"
                               " WHERE updated_at > NOW(6) - INTERVAL 5 SECOND",
                               NULL, 0, &st, err, sizeof(err)) == CAL_OK);
            while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
                if (nvb < CAL_ARRAY_LEN(vbs))
                    vbs[nvb++] = (unsigned)c[0].i;
            db_close(db);
        }
    }
    ck_assert_msg(nvb > 5, "the stress wrote to %zu vbuckets in 60 s", nvb);
    unsigned moves = 0;
    char out[8192];
    uint64_t again_until = cal_mono_us() + 15 * 1000000ULL;
    /* No move starts after 90 s: the stress must verify with no move
     * running, so its load has to outlast the last one (checked below). */
    uint64_t last_start = stress_started + 90 * 1000000ULL;
    for (int round = 0; round < 3 && (round == 0 || cal_mono_us() < again_until); round++) {
        for (size_t i = 0;
             i < nvb && (round == 0 || cal_mono_us() < again_until) && cal_mono_us() < last_start;
             i++) {
            char vb[16], to[16];
            long target = owner_of(vbs[i]) == 0 ? 1 : 0;
            snprintf(vb, sizeof(vb), "%u", vbs[i]);
            snprintf(to, sizeof(to), "%ld", target);
            /* The pause is not what this case checks: no bound on it, so
             * a slow locked catch-up under the sanitizers never fails a move. */
            int rc = rebalance(out, sizeof(out), "move", "--vbucket", vb, "--to", to,
                               "--max-freeze-ms=0");
            ck_assert_msg(rc == 0, "move exit %d:\n%.2000s", rc, out);
            moves++;
        }
    }
    /* The stress verifies with SQL once its load ends: no move is running
     * then, so no rows are in flight between the shards. */
    ck_assert_msg(moves >= 6, "only %u moves ran under the stress's load", moves);
    ck_assert_msg(cal_mono_us() - stress_started < 190 * 1000000ULL,
                  "the last of %u moves ended near the stress's 200 s cap", moves);
    ck_assert_int_eq(kill(stress, SIGTERM), 0);
    int rc = proc_wait(stress, 120);
    FILE *f = fopen(log, "r");
    char line[4096], last[4096] = "";
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (line[0] == '{')
            snprintf(last, sizeof(last), "%s", line);
    if (f != NULL)
        fclose(f);
    unlink(log);
    fprintf(stderr, "stress during %u moves: %s", moves, last);
    ck_assert_msg(rc == 0, "calendar-stress exit %d: %s", rc, last);
    json_error_t jerr;
    json_t *doc = json_loads(last, 0, &jerr);
    ck_assert_msg(doc != NULL, "no JSON line from calendar-stress");
    static const char *const zero[] = {"double_bookings", "lost_acknowledged", "phantom_bookings",
                                       "duplicate_idempotent"};
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(doc, zero[i]);
        ck_assert_msg(json_is_integer(v) && json_integer_value(v) == 0, "%s: %s", zero[i], last);
    }
    ck_assert_int_gt(json_integer_value(json_object_get(doc, "confirmed")), 0);
    json_decref(doc);
    expect_verify_clean();
}
END_TEST

/* A listing's rows in another vbucket than its own (a loader that computed
 * it otherwise; the wrong one owned by the same shard, so reads still find
 * them): verify counts them misrouted, exit 3, and is clean once fixed. */
START_TEST(rows_in_another_vbucket_than_their_listings_are_misrouted)
{
    struct http_client *h = setup_http();
    char err[256], out[8192], vb[16];
    uint64_t id = testenv_random48();
    put_listing(h, id);
    unsigned v = testenv_vbucket(id), w = v;
    long owner = owner_of(v);
    do
        w = (w + 1) % TESTENV_NUM_VBUCKETS;
    while (owner_of(w) != owner);
    size_t idx = 0;
    while (idx < env.nshards && rows_on(idx, "listings", id) != 1)
        idx++;
    ck_assert_uint_lt(idx, env.nshards);
    struct db *db = testenv_connect_shard(&env, idx, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    char sql[128];
    snprintf(sql, sizeof(sql), "UPDATE listings SET vbucket = %u WHERE listing_id = ?", w);
    exec_sql(db, sql, id);
    snprintf(vb, sizeof(vb), "%u", w);
    int rc = rebalance(out, sizeof(out), "verify", "--vbucket", vb, NULL, NULL, NULL);
    snprintf(sql, sizeof(sql), "UPDATE listings SET vbucket = %u WHERE listing_id = ?", v);
    exec_sql(db, sql, id);
    db_close(db);
    char want[96];
    snprintf(want, sizeof(want), "listing %llu: shard %ld holds rows of it in vbucket %u",
             (unsigned long long)id, owner, w);
    ck_assert_msg(rc == 3 && strstr(out, want) != NULL && strstr(out, " misrouted=1 ") != NULL,
                  "verify exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "verify", "--vbucket", vb, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, " misrouted=0 ") != NULL, "verify exit %d:\n%.2000s", rc,
                  out);
    http_client_destroy(h);
}
END_TEST

/* The spare shard, as the catalog's administrator (the stack's DSNs' user). */
static struct db *
connect_spare(const char *spare)
{
    char err[512];
    struct db_conf conf;
    memset(&conf, 0, sizeof(conf));
    ck_assert_msg(db_conf_parse_dsn(&conf, env.catalog_dsn, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_msg(db_conf_parse_hostport(&conf, spare, err, sizeof(err)) == CAL_OK, "%s", err);
    struct db *db = db_connect(&conf, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    return db;
}

/* A shard that owns a vbucket already (left by a failed bootstrap, or of
 * another cluster) would become its second owner once registered: add-shard
 * refuses it and registers nothing. */
START_TEST(a_shard_owning_vbuckets_is_not_added)
{
    setup();
    char spare[256], out[16384], err[512];
    env_value("SPARE_SHARD", spare, sizeof(spare));
    ck_assert_msg(spare[0] != '\0', "stack.env has no SPARE_SHARD: start the stack with a spare");
    struct db *db = connect_spare(spare);
    int applied = 0;
    ck_assert_msg(migrate_apply(db, "schema/shard", &applied, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert(db_exec(db, "INSERT INTO vbucket_owner (vbucket, epoch) VALUES (4095, 1)", err,
                      sizeof(err)) == CAL_OK);
    /* Its last migration unrecorded: refused before the schema is touched,
     * the tool leaves it so. */
    ck_assert(db_exec(db, "DELETE FROM schema_migrations WHERE version = 2", err, sizeof(err)) ==
              CAL_OK);
    int rc = rebalance(out, sizeof(out), "add-shard", "--shard", spare, NULL, NULL, NULL);
    /* Read without asserting: the spare is put back first, whatever. */
    struct db_stmt *st;
    struct db_val col[1] = {{0}};
    int got = db_query(db, "SELECT COUNT(*) FROM schema_migrations WHERE version = 2", NULL, 0, &st,
                       err, sizeof(err)) == CAL_OK
                  ? db_fetch(st, col, 1, err, sizeof(err))
                  : -1;
    while (got > 0 && db_fetch(st, col + 0, 1, err, sizeof(err)) > 0)
        ;
    cal_status put_back =
        db_exec(db, "DELETE FROM vbucket_owner WHERE vbucket = 4095", err, sizeof(err));
    if (put_back == CAL_OK)
        put_back = migrate_apply(db, "schema/shard", &applied, err, sizeof(err));
    db_close(db);
    ck_assert_msg(put_back == CAL_OK, "putting the spare back: %s", err);
    long long migrated = got == 1 && col[0].type == DB_INT ? (long long)col[0].i : -1;
    ck_assert_msg(rc == 1 && strstr(out, "the shard is not empty (it owns vbuckets)") != NULL,
                  "add-shard exit %d:\n%.2000s", rc, out);
    ck_assert_msg(migrated == 0, "add-shard migrated a shard it refused");
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, spare) == NULL, "the shard was registered:\n%.2000s", out);
}
END_TEST

START_TEST(add_then_drain_spare_shard)
{
    setup();
    char spare[256], out[16384];
    env_value("SPARE_SHARD", spare, sizeof(spare));
    ck_assert_msg(spare[0] != '\0', "stack.env has no SPARE_SHARD: start the stack with a spare");
    int rc = rebalance(out, sizeof(out), "add-shard", "--shard", spare, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "add-shard exit %d:\n%.2000s", rc, out);
    const char *p = strstr(out, "shard ");
    ck_assert_ptr_nonnull(p);
    long spare_id = strtol(p + 6, NULL, 10);
    ck_assert_int_ge(spare_id, 2);
    /* Again, and shard 0 (which owns vbuckets): registered already. */
    rc = rebalance(out, sizeof(out), "add-shard", "--shard", spare, NULL, NULL, NULL);
    char again[700], first[600], err[256];
    snprintf(again, sizeof(again), "shard %ld is %s already", spare_id, spare);
    ck_assert_msg(rc == 0 && strstr(out, again) != NULL, "add-shard again: exit %d:\n%.2000s", rc,
                  out);
    struct db_conf sc = {0};
    ck_assert(db_conf_parse_dsn(&sc, env.shard_dsns[0], err, sizeof(err)) == CAL_OK);
    snprintf(first, sizeof(first), "%s:%u/%s", sc.host, sc.port, sc.database);
    rc = rebalance(out, sizeof(out), "add-shard", "--shard", first, NULL, NULL, NULL);
    snprintf(again, sizeof(again), "shard 0 is %s already", first);
    ck_assert_msg(rc == 0 && strstr(out, again) != NULL, "add-shard of shard 0: exit %d:\n%.2000s",
                  rc, out);
    rc = rebalance(out, sizeof(out), "plan", NULL, NULL, NULL, NULL, NULL);
    ck_assert_int_eq(rc, 0);
    char want[64];
    snprintf(want, sizeof(want), "-> %ld (", spare_id);
    ck_assert_msg(strstr(out, want) != NULL, "plan moves nothing to the new shard:\n%.2000s", out);
    /* Put a few vbuckets on the spare, then drain it with one rebalance. */
    char to[24];
    snprintf(to, sizeof(to), "%ld", spare_id);
    for (unsigned v = 100; v < 112; v++) {
        char vb[16];
        snprintf(vb, sizeof(vb), "%u", v);
        rc = rebalance(out, sizeof(out), "move", "--vbucket", vb, "--to", to, NULL);
        ck_assert_msg(rc == 0, "move exit %d:\n%.2000s", rc, out);
    }
    rc = rebalance(out, sizeof(out), "drain-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_int_eq(rc, 0);
    /* A shard still owning vbuckets stays in the catalog. */
    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "still owns 12 vbuckets") != NULL,
                  "remove-shard before the rebalance: exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "rebalance", "--parallel", "3", NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "rebalance exit %d:\n%.2000s", rc, out);
    /* The plan empties the spare (12 vbuckets) and may also even out the
     * two active shards after the earlier tests' moves. */
    const char *sum = strstr(out, "rebalance: ");
    unsigned done = 0, total = 0;
    ck_assert_msg(sum != NULL && sscanf(sum, "rebalance: %u of %u moves done", &done, &total) == 2,
                  "%.2000s", out);
    ck_assert_uint_eq(done, total);
    ck_assert_uint_ge(total, 12);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    char line[64];
    snprintf(line, sizeof(line), "\n%-6ld draining", spare_id);
    p = strstr(out, line);
    ck_assert_msg(p != NULL, "%.2000s", out);
    long mapped = -1;
    ck_assert_int_eq(sscanf(p + 1, "%*s %*s %*s %ld", &mapped), 1);
    ck_assert_int_eq(mapped, 0);
    expect_verify_clean();

    /* Drained: taken back (active again), or removed; an active shard is
     * never removed. */
    rc = rebalance(out, sizeof(out), "activate-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "activate-shard exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "is active: drain-shard and rebalance it first") != NULL,
                  "remove-shard of an active shard: exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "plan", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, want) != NULL, "plan after activate-shard:\n%.2000s", out);
    rc = rebalance(out, sizeof(out), "drain-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_int_eq(rc, 0);
    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "remove-shard exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(strstr(out, line) == NULL, "removed, still listed:\n%.2000s", out);
    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_msg(rc == 2 && strstr(out, "no such shard") != NULL, "exit %d:\n%.2000s", rc, out);
    /* Added again: a new id, never the removed one the journal names. */
    rc = rebalance(out, sizeof(out), "add-shard", "--shard", spare, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "add-shard again: exit %d:\n%.2000s", rc, out);
    p = strstr(out, "shard ");
    ck_assert_ptr_nonnull(p);
    long again_id = strtol(p + 6, NULL, 10);
    ck_assert_int_gt(again_id, spare_id);
    snprintf(to, sizeof(to), "%ld", again_id);
    rc = rebalance(out, sizeof(out), "drain-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_int_eq(rc, 0);
    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", to, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "can be stopped") != NULL, "exit %d:\n%.2000s", rc, out);
    expect_verify_clean();
}
END_TEST

/* A drained shard whose server is down (here: a catalog row naming a port
 * nobody listens on) stops nothing: plan works, status says unreachable,
 * remove-shard takes it out. drain-shard refuses the last active shard,
 * and remove-shard a shard an unfinished move names. */
START_TEST(a_stopped_drained_shard_stops_nothing)
{
    setup();
    char out[8192], err[256], id[16];
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    uint32_t gone = 900 + (uint32_t)(testenv_random48() % 99);
    snprintf(id, sizeof(id), "%u", gone);
    exec_sql(cat,
             "INSERT INTO shards (shard_id, host, port, db_name, state)"
             " VALUES (?, '127.0.0.1', 1, 'calendar_gone', 'draining')",
             gone);
    int rc = rebalance(out, sizeof(out), "plan", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "plan with a stopped drained shard: exit %d:\n%.2000s", rc, out);
    /* One that owns a vbucket stops the plan, for now: try again (4). The
     * highest vbucket is mapped to it for the check, and put back. */
    long long vb = scalar(cat, "SELECT MAX(vbucket) FROM vbuckets WHERE shard_id < ?", gone);
    uint32_t vb_owner =
        (uint32_t)scalar(cat, "SELECT shard_id FROM vbuckets WHERE vbucket = ?", (uint64_t)vb);
    struct db_val mp[2] = {DB_INT_V(gone), DB_INT_V(vb)};
    ck_assert(db_query(cat, "UPDATE vbuckets SET shard_id = ? WHERE vbucket = ?", mp, 2, NULL, err,
                       sizeof(err)) == CAL_OK);
    rc = rebalance(out, sizeof(out), "plan", NULL, NULL, NULL, NULL, NULL);
    mp[0] = (struct db_val)DB_INT_V(vb_owner);
    ck_assert(db_query(cat, "UPDATE vbuckets SET shard_id = ? WHERE vbucket = ?", mp, 2, NULL, err,
                       sizeof(err)) == CAL_OK);
    ck_assert_msg(rc == 4 && strstr(out, "calendar-rebalance: plan: ") != NULL &&
                      strstr(out, "calendar_gone") != NULL,
                  "plan with a stopped shard that owns a vbucket: exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "unreachable") != NULL, "%.2000s", out);
    rc = rebalance(out, sizeof(out), "move", "--vbucket", "0", "--to", id, NULL);
    ck_assert_msg(rc == 2 && strstr(out, "the shard is draining, not active") != NULL,
                  "move to a draining shard: exit %d:\n%.2000s", rc, out);

    /* Named by an unfinished move: kept. */
    exec_sql(cat,
             "INSERT INTO moves (vbucket, source_shard, target_shard, old_epoch, phase)"
             " VALUES (0, 0, ?, 1, 'copy')",
             gone);
    long long move_id = scalar(cat, "SELECT MAX(move_id) FROM moves WHERE target_shard = ?", gone);
    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", id, NULL, NULL, NULL);
    exec_sql(cat, "UPDATE moves SET phase = 'abandoned' WHERE move_id = ?", (uint64_t)move_id);
    ck_assert_msg(rc == 1 && strstr(out, "is in 1 unfinished moves") != NULL,
                  "remove-shard of a shard in a move: exit %d:\n%.2000s", rc, out);

    /* The only active shard is not drained: the other one is marked
     * draining for the check, and put back. */
    uint32_t other = (uint32_t)scalar(cat,
                                      "SELECT MAX(shard_id) FROM shards WHERE shard_id < ?"
                                      " AND state = 'active'",
                                      gone);
    uint32_t last = (uint32_t)scalar(cat,
                                     "SELECT MIN(shard_id) FROM shards WHERE shard_id < ?"
                                     " AND state = 'active'",
                                     gone);
    ck_assert_uint_ne(other, last);
    exec_sql(cat, "UPDATE shards SET state = 'draining' WHERE shard_id = ?", other);
    char last_id[16];
    snprintf(last_id, sizeof(last_id), "%u", last);
    rc = rebalance(out, sizeof(out), "drain-shard", "--shard", last_id, NULL, NULL, NULL);
    exec_sql(cat, "UPDATE shards SET state = 'active' WHERE shard_id = ?", other);
    ck_assert_msg(rc == 1 && strstr(out, "is the only active shard") != NULL,
                  "drain-shard of the last active shard: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(scalar(cat, "SELECT state = 'active' FROM shards WHERE shard_id = ?", last),
                     1);

    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", id, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "can be stopped") != NULL,
                  "remove-shard exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(scalar(cat, "SELECT COUNT(*) FROM shards WHERE shard_id = ?", gone), 0);

    /* A drained shard on the catalog's server: removed, but that server
     * must keep running. */
    struct db_conf cc = {0};
    ck_assert(db_conf_parse_dsn(&cc, env.catalog_dsn, err, sizeof(err)) == CAL_OK);
    char sql[512];
    snprintf(sql, sizeof(sql),
             "INSERT INTO shards (shard_id, host, port, db_name, state)"
             " VALUES (%u, '%s', %u, 'calendar_gone', 'draining')",
             gone, cc.host, cc.port);
    ck_assert_msg(db_exec(cat, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    rc = rebalance(out, sizeof(out), "remove-shard", "--shard", id, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "also holds the catalog") != NULL &&
                      strstr(out, "keep the server, drop database calendar_gone there") != NULL,
                  "remove-shard on the catalog's server: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(scalar(cat, "SELECT COUNT(*) FROM shards WHERE shard_id = ?", gone), 0);
    db_close(cat);
    expect_verify_clean();
}
END_TEST

/* A move whose target is gone for good blocks every move of its vbucket:
 * abandon gives it up while the source still owns the vbucket (the target's
 * copied rows deleted, the vbucket moves again), and refuses past the
 * cutover, where only resume can finish it. */
START_TEST(abandon_before_the_cutover_only)
{
    struct http_client *h = setup_http();
    struct moving m;
    char out[8192];
    moving_listing(h, "rb-abandon", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    int rc = rebalance(out, sizeof(out), "abandon", "--vbucket", m.vb, NULL, NULL, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "has no unfinished move") != NULL,
                  "abandon without a move: exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "abandon", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 2 && strstr(out, "needs --vbucket") != NULL, "exit %d:\n%.2000s", rc, out);

    crash_after_copy(&m);
    long long move_id = scalar(cat, "SELECT MAX(move_id) FROM moves WHERE vbucket = ?", m.v);
    expect_phase(cat, (uint64_t)move_id, "cutover");
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 1);
    rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "unfinished move") != NULL, "exit %d:\n%.2000s", rc, out);

    rc = rebalance(out, sizeof(out), "abandon", "--vbucket", m.vb, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "abandoned; the target's copied rows are deleted") != NULL,
                  "abandon: exit %d:\n%.2000s", rc, out);
    expect_phase(cat, (uint64_t)move_id, "abandoned");
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(scalar(cat, "SELECT state = 'active' FROM vbuckets WHERE vbucket = ?", m.v),
                     1);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), scalar(cat, SQL_EPOCH, m.v));
    ck_assert_int_eq(scalar(dst, SQL_FENCE, m.v), -1);
    const char *tables[] = {"listings", "nights", "reservations"};
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(rows_on((size_t)m.target, tables[i], m.id), 0);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 1);
    ck_assert_int_eq(get_reservation(h, m.id, m.rid), 200);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "\n0 unfinished moves") != NULL, "%.2000s", out);

    /* Past the cutover (the source's fence row gone, the target's not
     * written yet: no shard owns the vbucket): refused, and resume
     * finishes the move. */
    char *cutover_argv[] = {tool,      "--config", admin_ini,   "--crash-after",
                            "cutover", "move",     "--vbucket", m.vb,
                            "--to",    m.to,       NULL};
    rc = proc_run(cutover_argv, out, sizeof(out), 120);
    ck_assert_msg(rc == 128 + 9, "cutover: exit %d, want SIGKILL:\n%.2000s", rc, out);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), -1);
    ck_assert_int_eq(scalar(dst, SQL_FENCE, m.v), -1);
    rc = rebalance(out, sizeof(out), "abandon", "--vbucket", m.vb, NULL, NULL, NULL);
    ck_assert_msg(rc == 1 && strstr(out, "only resume can finish it") != NULL,
                  "abandon past the cutover: exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(owner_of(m.v), m.target);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 1);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 0);
    ck_assert_int_eq(get_reservation(h, m.id, m.rid), 200);
    end_case(src, dst, cat, h);
}
END_TEST

/* status is what an operator reads after a crash to know whether anything
 * is left to resume: a journal it cannot read is an error, never "0
 * unfinished moves". The journal is renamed away for the check, and back. */
START_TEST(status_never_reports_an_unread_journal_as_empty)
{
    setup();
    char out[8192], err[256];
    struct db *cat = testenv_connect_catalog(&env, err, sizeof(err));
    ck_assert_msg(cat != NULL, "%s", err);
    ck_assert(db_exec(cat, "RENAME TABLE moves TO moves_hidden_by_test", err, sizeof(err)) ==
              CAL_OK);
    int rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert(db_exec(cat, "RENAME TABLE moves_hidden_by_test TO moves", err, sizeof(err)) ==
              CAL_OK);
    ck_assert_msg(rc == 1 && strstr(out, "the journal of moves could not be read") != NULL &&
                      strstr(out, "unfinished move") == NULL,
                  "status without its journal: exit %d:\n%.2000s", rc, out);
    rc = rebalance(out, sizeof(out), "status", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, " unfinished move") != NULL, "status: exit %d:\n%.2000s",
                  rc, out);
    db_close(cat);
}
END_TEST

/* A resume lists the unfinished moves, then takes each one's lock: one
 * abandoned in between (by another run) is skipped, not counted a failure. */
static struct {
    uint32_t vbucket;
    int seen;
} resuming;

static void
abandon_before_resume_locks(const char *step, uint32_t vbucket)
{
    if (strcmp(step, "resume-lock") != 0 || vbucket != resuming.vbucket || resuming.seen++ > 0)
        return;
    struct cluster other;
    struct move_abandoned a;
    char err[512];
    open_cluster(&other);
    ck_assert_msg(move_abandon(&other, vbucket, &a, err, sizeof(err)) == CAL_OK, "%s", err);
    cluster_close(&other);
}

START_TEST(resume_skips_a_move_abandoned_since_it_listed_it)
{
    struct http_client *h = setup_http();
    struct moving m;
    char err[512];
    moving_listing(h, "rb-resume-abandoned", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    crash_after_copy(&m);
    long long move_id = scalar(cat, "SELECT MAX(move_id) FROM moves WHERE vbucket = ?", m.v);
    expect_phase(cat, (uint64_t)move_id, "cutover");
    struct cluster c;
    open_cluster(&c);
    resuming.vbucket = m.v;
    resuming.seen = 0;
    struct move_opts mo = {.before_lock_check = abandon_before_resume_locks};
    unsigned resumed = 0;
    cal_status rc = move_resume(&c, &mo, &resumed, err, sizeof(err));
    cluster_close(&c);
    ck_assert_int_eq(resuming.seen, 1);
    ck_assert_msg(rc == CAL_OK, "resume: status %d: %s", rc, err);
    ck_assert_uint_eq(resumed, 0);
    expect_phase(cat, (uint64_t)move_id, "abandoned");
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), scalar(cat, SQL_EPOCH, m.v));
    ck_assert_int_eq(get_reservation(h, m.id, m.rid), 200);
    end_case(src, dst, cat, h);
}
END_TEST

/* The source's connection drops in the cutover's COMMIT (here: killed just
 * before it): the run cannot tell whether the vbucket left the source, and
 * it may now be nobody's. The run goes on from the journal (it cuts over
 * again, or finds the source's fence row gone) instead of stopping and
 * leaving the vbucket to an operator's resume. */
static struct {
    struct cluster *c;
    uint32_t source;
    struct db *killer; /* the test's own session on the source shard */
    int seen;          /* checks of "cutover-commit" so far */
} cut;

static void
kill_source_before_commit(const char *step, uint32_t vbucket)
{
    (void)vbucket;
    if (strcmp(step, "cutover-commit") != 0 || cut.seen++ > 0)
        return;
    char err[256], sql[64];
    struct db *mover = cluster_shard(cut.c, cut.source, err, sizeof(err));
    ck_assert_msg(mover != NULL, "%s", err);
    long long id = scalar(mover, "SELECT CAST(CONNECTION_ID() + ? AS SIGNED)", 0);
    snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", id);
    ck_assert_msg(db_exec(cut.killer, sql, err, sizeof(err)) == CAL_OK, "%s: %s", sql, err);
}

START_TEST(a_source_connection_lost_in_the_cutover_commit_is_taken_up)
{
    struct http_client *h = setup_http();
    struct moving m;
    char err[512];
    moving_listing(h, "rb-lost-source", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    long long epoch = scalar(cat, SQL_EPOCH, m.v);
    struct cluster c;
    open_cluster(&c);
    memset(&cut, 0, sizeof(cut));
    cut.c = &c;
    cut.source = (uint32_t)m.from;
    cut.killer = src;
    struct move_opts mo = {.before_lock_check = kill_source_before_commit};
    struct move_progress res;
    cal_status rc = move_vbucket(&c, m.v, (uint32_t)m.target, &mo, &res, err, sizeof(err));
    cluster_close(&c);
    ck_assert_int_eq(cut.seen, 2); /* the cutover ran again */
    ck_assert_msg(rc == CAL_OK, "move: status %d: %s", rc, err);
    expect_phase(cat, res.move_id, "done");
    uint64_t rids[1] = {m.rid};
    expect_moved(&m, cat, src, dst, epoch, 1, h, rids, 1);
    end_case(src, dst, cat, h);
}
END_TEST

/* Abandon when the target cannot delete its copied rows (here: a session
 * holds one of them locked past the lock wait): the move is abandoned all
 * the same and says why the rows stay; verify lists them; the next move to
 * that target deletes them before its copy and finishes. */
START_TEST(abandon_leaves_rows_the_target_cannot_delete)
{
    struct http_client *h = setup_http();
    struct moving m;
    char out[8192], err[256];
    moving_listing(h, "rb-abandon-held", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    int rc;
    crash_after_copy(&m);
    long long move_id = scalar(cat, "SELECT MAX(move_id) FROM moves WHERE vbucket = ?", m.v);
    long nights = rows_on((size_t)m.target, "nights", m.id);
    ck_assert_int_gt(nights, 0);

    ck_assert_msg(db_begin(dst, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_ge(scalar(dst, "SELECT COUNT(*) FROM nights WHERE vbucket = ? FOR UPDATE", m.v),
                     nights);
    rc = rebalance(out, sizeof(out), "abandon", "--vbucket", m.vb, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "copied rows stay until a later move") != NULL &&
                      strstr(out, "Lock wait timeout") != NULL,
                  "abandon: exit %d:\n%.2000s", rc, out);
    db_rollback(dst);
    expect_phase(cat, (uint64_t)move_id, "abandoned");
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), scalar(cat, SQL_EPOCH, m.v));
    ck_assert_int_eq(scalar(dst, SQL_FENCE, m.v), -1);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 1);
    ck_assert_int_eq(get_reservation(h, m.id, m.rid), 200);
    rc = rebalance(out, sizeof(out), "verify", NULL, NULL, NULL, NULL, NULL);
    char want[160];
    long long held = scalar(dst, "SELECT COUNT(*) FROM listings WHERE vbucket = ?", m.v) +
                     scalar(dst, "SELECT COUNT(*) FROM nights WHERE vbucket = ?", m.v) +
                     scalar(dst, "SELECT COUNT(*) FROM reservations WHERE vbucket = ?", m.v) +
                     scalar(dst, "SELECT COUNT(*) FROM listing_refusals WHERE vbucket = ?", m.v);
    ck_assert_int_ge(held, nights + 2);
    snprintf(want, sizeof(want), "vbucket %u: shard %ld holds %lld rows of it without owning it",
             m.v, m.target, held);
    ck_assert_msg(rc == 3 && strstr(out, want) != NULL && strstr(out, "stray=0") == NULL,
                  "verify with the leftovers: exit %d, want \"%s\":\n%.3000s", rc, want, out);

    rc = rebalance(out, sizeof(out), "move", "--vbucket", m.vb, "--to", m.to, NULL);
    ck_assert_msg(rc == 0, "move again: exit %d:\n%.2000s", rc, out);
    ck_assert_int_eq(owner_of(m.v), m.target);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 1);
    ck_assert_int_eq(rows_on((size_t)m.target, "nights", m.id), nights);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 0);
    ck_assert_int_eq(get_reservation(h, m.id, m.rid), 200);
    end_case(src, dst, cat, h);
}
END_TEST

/* Holds vbucket v's rows lock on db, as the shard session of a run that
 * lost its move lock but still writes does (released with the session). */
static void
hold_rows_lock(struct db *db, unsigned v)
{
    char err[256];
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(v)}, c[1];
    ck_assert_msg(
        db_query(db, "SELECT GET_LOCK(CONCAT('calendar_rows_', CRC32(DATABASE()), '_', ?), 0)", p,
                 1, &st, err, sizeof(err)) == CAL_OK,
        "%s", err);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    ck_assert_int_eq(c[0].i, 1);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
}

/* A run whose catalog session died writes on until its next lock check; a
 * resume (or an abandon) meanwhile must not write or clear the same rows
 * beside it: a listings row it writes last would outlive the nights the
 * other run clears, and no later pass copies them again. The shard session
 * a run writes through holds the vbucket's rows lock there: while another
 * session holds it (here, the test's), resume and cleanup are refused and
 * change nothing, abandon leaves the target's rows, and once it is free
 * the move finishes. */
START_TEST(rows_a_stale_run_still_writes_are_left_to_it)
{
    struct http_client *h = setup_http();
    struct moving m;
    char out[8192], want[160];
    moving_listing(h, "rb-rows-lock", &m);
    struct db *cat, *src, *dst;
    open_case(&m, &cat, &src, &dst);
    crash_after_copy(&m);
    long long move_id = scalar(cat, "SELECT MAX(move_id) FROM moves WHERE vbucket = ?", m.v);
    long nights = rows_on((size_t)m.target, "nights", m.id);
    ck_assert_int_gt(nights, 0);

    hold_rows_lock(dst, m.v);
    snprintf(want, sizeof(want), "vbucket %u: another run still writes its rows on shard %ld", m.v,
             m.target);
    int rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 4 && strstr(out, want) != NULL, "resume: exit %d:\n%.2000s", rc, out);
    snprintf(want, sizeof(want), "KILL %lld on shard %ld's server",
             scalar(dst, "SELECT CAST(CONNECTION_ID() AS SIGNED) FROM DUAL WHERE 0 = ?", 0),
             m.target);
    ck_assert_msg(strstr(out, want) != NULL, "want '%s' in:\n%.2000s", want, out);
    snprintf(want, sizeof(want), "vbucket %u: another run still writes its rows on shard %ld", m.v,
             m.target);
    expect_phase(cat, (uint64_t)move_id, "cutover");
    ck_assert_int_eq(owner_of(m.v), m.from);
    ck_assert_int_eq(scalar(src, SQL_FENCE, m.v), scalar(cat, SQL_EPOCH, m.v));
    ck_assert_int_eq(rows_on((size_t)m.target, "nights", m.id), nights);
    rc = rebalance(out, sizeof(out), "abandon", "--vbucket", m.vb, NULL, NULL, NULL);
    ck_assert_msg(rc == 0 && strstr(out, "copied rows stay until a later move") != NULL &&
                      strstr(out, want) != NULL,
                  "abandon: exit %d:\n%.2000s", rc, out);
    expect_phase(cat, (uint64_t)move_id, "abandoned");
    ck_assert_int_eq(rows_on((size_t)m.target, "nights", m.id), nights);
    db_close(dst); /* the lock goes with the session */
    char err[256];
    dst = testenv_connect_shard(&env, (size_t)m.target, err, sizeof(err));
    ck_assert_msg(dst != NULL, "%s", err);

    /* The cleanup deletes the source's rows: the source's rows lock. */
    char *argv[] = {tool,      "--config", admin_ini,   "--crash-after",
                    "catalog", "move",     "--vbucket", m.vb,
                    "--to",    m.to,       NULL};
    rc = proc_run(argv, out, sizeof(out), 120);
    ck_assert_msg(rc == 128 + 9, "move: exit %d, want SIGKILL:\n%.2000s", rc, out);
    move_id = scalar(cat, "SELECT MAX(move_id) FROM moves WHERE vbucket = ?", m.v);
    expect_phase(cat, (uint64_t)move_id, "cleanup");
    ck_assert_int_eq(owner_of(m.v), m.target);
    hold_rows_lock(src, m.v);
    snprintf(want, sizeof(want), "vbucket %u: another run still writes its rows on shard %ld", m.v,
             m.from);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 4 && strstr(out, want) != NULL, "cleanup: exit %d:\n%.2000s", rc, out);
    expect_phase(cat, (uint64_t)move_id, "cleanup");
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 1);
    db_close(src);
    src = testenv_connect_shard(&env, (size_t)m.from, err, sizeof(err));
    ck_assert_msg(src != NULL, "%s", err);
    rc = rebalance(out, sizeof(out), "resume", NULL, NULL, NULL, NULL, NULL);
    ck_assert_msg(rc == 0, "resume: exit %d:\n%.2000s", rc, out);
    expect_phase(cat, (uint64_t)move_id, "done");
    ck_assert_int_eq(rows_on((size_t)m.target, "nights", m.id), nights);
    ck_assert_int_eq(rows_on((size_t)m.target, "reservations", m.id), 1);
    ck_assert_int_eq(rows_on((size_t)m.from, "reservations", m.id), 0);
    ck_assert_int_eq(get_reservation(h, m.id, m.rid), 200);
    end_case(src, dst, cat, h);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("rebalance");
    TCase *tc = tcase_create("rebalance");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, move_one_vbucket_under_bookings);
    tcase_add_test(tc, crash_after_each_phase_then_resume);
    suite_add_tcase(s, tc);
    /* Apart, so that CK_RUN_CASE can run the others without the load. */
    tc = tcase_create("stress");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, stress_while_vbuckets_move);
    suite_add_tcase(s, tc);
    tc = tcase_create("spare_shard");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_shard_owning_vbuckets_is_not_added);
    tcase_add_test(tc, add_then_drain_spare_shard);
    tcase_add_test(tc, a_stopped_drained_shard_stops_nothing);
    tcase_add_test(tc, the_tool_follows_a_shard_address_change);
    suite_add_tcase(s, tc);
    tc = tcase_create("cutover_chunk");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, crash_inside_the_cutover_copy_then_resume);
    tcase_add_test(tc, a_refusal_kept_after_the_copy_moves);
    tcase_add_test(tc, a_vbucket_moves_in_one_run_at_a_time);
    suite_add_tcase(s, tc);
    tc = tcase_create("options");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, bad_options_are_refused_and_change_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("journal");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_move_that_cannot_start_leaves_no_journal);
    tcase_add_test(tc, a_move_to_a_shard_drained_meanwhile_is_not_journaled);
    tcase_add_test(tc, verify_tells_a_vbucket_being_moved_from_a_broken_one);
    tcase_add_test(tc, a_drain_tells_of_moves_still_coming_in);
    tcase_add_test(tc, abandon_before_the_cutover_only);
    tcase_add_test(tc, abandon_leaves_rows_the_target_cannot_delete);
    tcase_add_test(tc, rows_a_stale_run_still_writes_are_left_to_it);
    tcase_add_test(tc, resume_skips_a_move_abandoned_since_it_listed_it);
    tcase_add_test(tc, status_never_reports_an_unread_journal_as_empty);
    tcase_add_test(tc, a_long_copy_reports_its_progress);
    tcase_add_test(tc, a_source_connection_lost_in_the_cutover_commit_is_taken_up);
    suite_add_tcase(s, tc);
    tc = tcase_create("cutover_wait");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_lock_wait_timeout_in_the_cutover_is_retried);
    suite_add_tcase(s, tc);
    tc = tcase_create("fence");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_booking_waits_for_the_fence_row_and_writes_nothing_once_it_moved);
    tcase_add_test(tc, rows_in_another_vbucket_than_their_listings_are_misrouted);
    suite_add_tcase(s, tc);
    tc = tcase_create("stale_copy");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, a_stale_copy_pass_keeps_newer_rows);
    tcase_add_test(tc, a_refusal_kept_during_a_copy_pass_is_copied_by_the_next);
    suite_add_tcase(s, tc);
    tc = tcase_create("cleanup_check");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, cleanup_keeps_the_source_until_the_target_holds_its_rows);
    suite_add_tcase(s, tc);
    tc = tcase_create("colliding_ids");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, colliding_reservation_ids_stop_the_move_before_its_cutover, 0,
                        (int)CAL_ARRAY_LEN(COLLIDE_CASES));
    suite_add_tcase(s, tc);
    tc = tcase_create("lost_lock");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, a_run_that_loses_its_move_lock_stops, 0,
                        (int)CAL_ARRAY_LEN(LOST_LOCK_CASES));
    suite_add_tcase(s, tc);
    return unit_run(s);
}
