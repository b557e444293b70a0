/* Integration suite for calendard's HTTP API against a running stack ($STACK_ENV):
 * every endpoint and error code, booking races, idempotent replays under
 * concurrency, and the ownership fence during a simulated vbucket move,
 * each checked on the answers and on the shards' SQL state. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "calendard/booking.h"
#include "common/db.h"
#include "common/util.h"
#include "tests/lib/http.h"
#include "tests/lib/testd.h"
#include "tests/lib/testenv.h"

#define RACE_THREADS 16
#define FIRST_DAY 30 /* every stay starts at least this many days from today */

static struct testenv env;
static int64_t today; /* fixed at start: a run across midnight UTC keeps its dates */

/* ---- HTTP helpers (one client per forked test process) ---- */

static struct http_client *
cli(void)
{
    static struct http_client *client;

    if (client == NULL) {
        client = http_client_create();
        ck_assert_ptr_nonnull(client);
    }
    return client;
}

static void call(struct http_response *resp, const char *method, const char *const *headers,
                 const char *body, const char *pathfmt, ...) __attribute__((format(printf, 5, 6)));

/* Sends one request to calendard; a transport failure fails the test. */
static void
call(struct http_response *resp, const char *method, const char *const *headers, const char *body,
     const char *pathfmt, ...)
{
    char path[1024], url[1400], err[512];
    va_list ap;
    cal_status st;

    va_start(ap, pathfmt);
    vsnprintf(path, sizeof(path), pathfmt, ap);
    va_end(ap);
    snprintf(url, sizeof(url), "%s%s", env.calendard_url, path);
    st = http_request(cli(), method, url, headers, body, body != NULL ? strlen(body) : 0, 0, resp,
                      err, sizeof(err));
    ck_assert_msg(st == CAL_OK, "%s %s: %s", method, path, err);
}

/* Asserts the status and returns the parsed JSON body (caller decrefs). */
static json_t *
expect_json(const struct http_response *resp, long status)
{
    json_t *root;

    ck_assert_msg(resp->status == status, "status %ld, want %ld; body: %s", resp->status, status,
                  resp->body);
    root = http_response_json(resp);
    ck_assert_msg(root != NULL && json_is_object(root), "body is not a JSON object: %s",
                  resp->body);
    ck_assert_msg(strstr(resp->content_type, "application/json") != NULL,
                  "content-type %s, want application/json", resp->content_type);
    return root;
}

/* Asserts {"error":{"code":code,"message":"..."}} with the given status;
 * returns the error object's parent (caller decrefs). */
static json_t *
expect_error_json(const struct http_response *resp, long status, const char *code)
{
    json_t *root = expect_json(resp, status);
    json_t *error = json_object_get(root, "error");
    const char *got = json_string_value(json_object_get(error, "code"));
    const char *msg = json_string_value(json_object_get(error, "message"));

    ck_assert_msg(got != NULL && strcmp(got, code) == 0, "error code %s, want %s; body: %s",
                  got ? got : "(none)", code, resp->body);
    ck_assert_msg(msg != NULL && msg[0] != '\0', "error without message: %s", resp->body);
    return root;
}

static void
expect_error(const struct http_response *resp, long status, const char *code)
{
    json_decref(expect_error_json(resp, status, code));
}

static int64_t
jint(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    ck_assert_msg(json_is_integer(v), "field %s is not an integer", key);
    return (int64_t)json_integer_value(v);
}

static const char *
jstr(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    ck_assert_msg(s != NULL, "field %s is not a string", key);
    return s;
}

/* "YYYY-MM-DD" of today + offset days; rotating static buffers. */
static const char *
day(int64_t offset)
{
    static char bufs[32][11];
    static unsigned next;
    char *buf = bufs[next++ % 32];

    testenv_format_date(today + offset, buf, 11);
    return buf;
}

static uint64_t
create_listing_with(int64_t price, int min_nights, int max_nights)
{
    struct http_response resp;
    uint64_t id = testenv_random48();
    char body[256];
    json_t *root;

    snprintf(body, sizeof(body),
             "{\"default_price\":%" PRId64
             ",\"currency\":\"USD\",\"min_nights\":%d,\"max_nights\":%d}",
             price, min_nights, max_nights);
    call(&resp, "PUT", NULL, body, "/v1/listings/%" PRIu64, id);
    root = expect_json(&resp, 201);
    ck_assert_int_eq(jint(root, "listing_id"), (int64_t)id);
    json_decref(root);
    http_response_deinit(&resp);
    return id;
}

static uint64_t
create_listing(void)
{
    return create_listing_with(10000, 1, 30);
}

/* POST a booking of [today+ci, today+co) and return the response. */
static void
book_raw(struct http_response *resp, uint64_t id, const char *key, int64_t ci, int64_t co,
         int64_t guest)
{
    char body[256], hdr[400];
    const char *headers[] = {hdr, NULL};

    snprintf(body, sizeof(body),
             "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":%" PRId64 "}", day(ci),
             day(co), guest);
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", key);
    call(resp, "POST", headers, body, "/v1/listings/%" PRIu64 "/reservations", id);
}

/* Books and asserts 201 with a well-formed reservation; returns it. */
static json_t *
book_ok(uint64_t id, const char *key, int64_t ci, int64_t co, int64_t guest, int64_t total)
{
    struct http_response resp;
    json_t *r;

    book_raw(&resp, id, key, ci, co, guest);
    r = expect_json(&resp, 201);
    ck_assert_int_gt(jint(r, "reservation_id"), 0);
    ck_assert_int_eq(jint(r, "listing_id"), (int64_t)id);
    ck_assert_str_eq(jstr(r, "check_in"), day(ci));
    ck_assert_str_eq(jstr(r, "check_out"), day(co));
    ck_assert_int_eq(jint(r, "guest_id"), guest);
    ck_assert_int_eq(jint(r, "total_price"), total);
    ck_assert_str_eq(jstr(r, "currency"), "USD");
    ck_assert_str_eq(jstr(r, "status"), "confirmed");
    ck_assert_int_gt(jint(r, "version"), 0);
    http_response_deinit(&resp);
    return r;
}

/* GET availability [today+from, today+to); asserts 200 and ETag == version. */
static json_t *
availability(uint64_t id, int64_t from, int64_t to)
{
    struct http_response resp;
    char etag[64];
    json_t *root;
    int64_t version;

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=%s&to=%s", id,
         day(from), day(to));
    root = expect_json(&resp, 200);
    ck_assert_int_eq(jint(root, "listing_id"), (int64_t)id);
    version = jint(root, "version");
    snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", version);
    ck_assert_msg(strcmp(resp.etag, etag) == 0, "ETag %s, want %s", resp.etag, etag);
    ck_assert_int_eq((int64_t)json_array_size(json_object_get(root, "nights")), to - from);
    http_response_deinit(&resp);
    return root;
}

/* Asserts night today+offset of an availability answer starting at from. */
static void
expect_night(const json_t *avail, int64_t from, int64_t offset, const char *status, int64_t price)
{
    json_t *night = json_array_get(json_object_get(avail, "nights"), (size_t)(offset - from));

    ck_assert_ptr_nonnull(night);
    ck_assert_str_eq(jstr(night, "date"), day(offset));
    ck_assert_msg(strcmp(jstr(night, "status"), status) == 0, "night %s is %s, want %s",
                  day(offset), jstr(night, "status"), status);
    ck_assert_int_eq(jint(night, "price"), price);
}

/* Asserts a 409 nights_unavailable naming exactly nights today+[first, last]. */
static void
expect_unavailable(const struct http_response *resp, int64_t first, int64_t last)
{
    json_t *root = expect_error_json(resp, 409, "nights_unavailable");
    json_t *nights = json_object_get(json_object_get(root, "error"), "nights");

    ck_assert_msg(json_is_array(nights), "409 without error.nights: %s", resp->body);
    ck_assert_int_eq((int64_t)json_array_size(nights), last - first + 1);
    for (int64_t d = first; d <= last; d++) {
        const char *s = json_string_value(json_array_get(nights, (size_t)(d - first)));

        ck_assert_msg(s != NULL && strcmp(s, day(d)) == 0, "nights[%" PRId64 "] = %s, want %s",
                      d - first, s ? s : "(null)", day(d));
    }
    json_decref(root);
}

/* Table-driven tests note every mismatching case and fail once at the end,
 * so one deviation does not hide the others. */
static char failures[8192];

static void note_failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
note_failure(const char *fmt, ...)
{
    size_t len = strlen(failures);
    va_list ap;

    if (len + 2 >= sizeof(failures)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(failures + len, sizeof(failures) - len - 1, fmt, ap);
    va_end(ap);
    strcat(failures, "\n");
}

static void
expect_no_failures(void)
{
    ck_assert_msg(failures[0] == '\0', "mismatching cases:\n%s", failures);
}

static void
unique_key(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "%s-%" PRIx64, tag, testenv_random48());
}

/* ---- SQL helpers ---- */

static struct db *
shard(size_t idx)
{
    static struct db *dbs[TESTENV_MAX_SHARDS];
    char err[512];

    ck_assert_uint_lt(idx, env.nshards);
    if (dbs[idx] == NULL) {
        dbs[idx] = testenv_connect_shard(&env, idx, err, sizeof(err));
        ck_assert_msg(dbs[idx] != NULL, "shard %zu: %s", idx, err);
    }
    return dbs[idx];
}

static struct db *
catalog(void)
{
    static struct db *db;
    char err[512];

    if (db == NULL) {
        db = testenv_connect_catalog(&env, err, sizeof(err));
        ck_assert_msg(db != NULL, "catalog: %s", err);
    }
    return db;
}

/* One integer from a one-row query. */
static int64_t
sql_int(struct db *db, const char *sql, const struct db_val *params, size_t nparams)
{
    struct db_stmt *stmt = NULL;
    struct db_val col;
    char err[512];
    int rc;
    cal_status st = db_query(db, sql, params, nparams, &stmt, err, sizeof(err));

    ck_assert_msg(st == CAL_OK, "%s: %s", sql, err);
    rc = db_fetch(stmt, &col, 1, err, sizeof(err));
    ck_assert_msg(rc == 1, "%s: no row (%s)", sql, rc < 0 ? err : "empty");
    ck_assert_msg(col.type == DB_INT, "%s: not an integer", sql);
    while (db_fetch(stmt, &col, 1, err, sizeof(err)) == 1) {
    }
    return col.i;
}

/* Runs a query and returns its statement, ready for db_fetch(). */
static struct db_stmt *
sql_select(struct db *db, const char *sql, const struct db_val *params, size_t nparams)
{
    struct db_stmt *stmt = NULL;
    char err[512];
    cal_status st = db_query(db, sql, params, nparams, &stmt, err, sizeof(err));

    ck_assert_msg(st == CAL_OK, "%s: %s", sql, err);
    return stmt;
}

static void
sql_exec(struct db *db, const char *sql, const struct db_val *params, size_t nparams)
{
    char err[512];
    cal_status st = db_query(db, sql, params, nparams, NULL, err, sizeof(err));

    ck_assert_msg(st == CAL_OK, "%s: %s", sql, err);
}

/* Sum of a COUNT(*) query over every shard. */
static int64_t
count_all_shards(const char *sql, const struct db_val *params, size_t nparams)
{
    int64_t n = 0;

    for (size_t i = 0; i < env.nshards; i++) {
        n += sql_int(shard(i), sql, params, nparams);
    }
    return n;
}

/* The shard index (into env.shard_dsns) the catalog maps listing_id to. */
static int
owner_shard(uint64_t listing_id, int64_t *epoch)
{
    struct db_stmt *stmt = NULL;
    struct db_val cols[3];
    struct db_val params[] = {DB_INT_V(testenv_vbucket(listing_id))};
    char err[512], dbname[80];
    int idx;

    stmt = sql_select(catalog(),
                      "SELECT v.epoch, s.port, s.db_name FROM vbuckets v "
                      "JOIN shards s ON s.shard_id = v.shard_id WHERE v.vbucket = ?",
                      params, 1);
    ck_assert_msg(db_fetch(stmt, cols, 3, err, sizeof(err)) == 1, "vbucket %u not in catalog",
                  testenv_vbucket(listing_id));
    *epoch = cols[0].i;
    snprintf(dbname, sizeof(dbname), "%s", cols[2].s);
    idx = testenv_find_shard(&env, (unsigned)cols[1].i, dbname);
    ck_assert_msg(idx >= 0, "catalog shard port %" PRId64 " db %s not in SHARD_DSNS", cols[1].i,
                  dbname);
    while (db_fetch(stmt, cols, 3, err, sizeof(err)) == 1) {
    }
    return idx;
}

/* Asserts SQL: reservation rid is confirmed on exactly one shard with
 * nights today+[ci, co) booked by it, and no other booked nights. */
static void
expect_sql_booking(uint64_t id, int64_t rid, int64_t ci, int64_t co)
{
    struct db_val p2[] = {DB_INT_V(id), DB_INT_V(rid)};
    struct db_val p1[] = {DB_INT_V(id)};

    ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? AND "
                                      "reservation_id = ? AND status = 'confirmed'",
                                      p2, 2),
                     1);
    ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM nights WHERE listing_id = ? AND "
                                      "reservation_id = ? AND status = 'booked'",
                                      p2, 2),
                     co - ci);
    ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM nights WHERE listing_id = ? AND "
                                      "status = 'booked'",
                                      p1, 1),
                     co - ci);
}

/* ---- health, routing, metrics ---- */

START_TEST(test_health_endpoints)
{
    struct http_response resp;

    call(&resp, "GET", NULL, NULL, "/healthz");
    ck_assert_int_eq(resp.status, 200);
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/readyz");
    ck_assert_msg(resp.status == 200, "readyz %ld: %s", resp.status, resp.body);
    http_response_deinit(&resp);
}
END_TEST

START_TEST(test_metrics)
{
    struct http_response resp;

    /* At least one request before, so the counter has a sample. */
    call(&resp, "GET", NULL, NULL, "/healthz");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/metrics");
    ck_assert_int_eq(resp.status, 200);
    ck_assert_msg(strstr(resp.body, "calendard_requests_total") != NULL,
                  "no calendard_requests_total in /metrics");
    ck_assert_msg(strstr(resp.content_type, "text/plain") != NULL, "metrics content-type %s",
                  resp.content_type);
    http_response_deinit(&resp);
}
END_TEST

/* A counter's value in a /metrics body, or -1. */
static long long
metric_value(const char *body, const char *name)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\n%s ", name);
    const char *at = strstr(body, pat);
    return at == NULL ? -1 : atoll(at + strlen(pat));
}

/* The booking counters of /metrics: transactions and their bookings,
 * calendar reads and their bookings. */
static const char *const booking_counters[4] = {
    "calendard_booking_transactions_total", "calendard_booking_transaction_bookings_total",
    "calendard_booking_reads_total", "calendard_booking_read_bookings_total"};

static void
read_booking_counters(long long v[4])
{
    struct http_response resp;
    call(&resp, "GET", NULL, NULL, "/metrics");
    for (int i = 0; i < 4; i++)
        v[i] = metric_value(resp.body, booking_counters[i]);
    http_response_deinit(&resp);
}

/* Every booking goes through a calendar read and a booking transaction,
 * alone or in a group. */
START_TEST(test_booking_transaction_metrics)
{
    char key[64];
    long long before[4], after[4];
    read_booking_counters(before);
    ck_assert(before[0] >= 0 && before[1] >= before[0]);
    ck_assert(before[2] >= 0 && before[3] >= before[2]);
    uint64_t id = create_listing();
    unique_key(key, sizeof(key), "m");
    json_decref(book_ok(id, key, 20, 22, 5, 20000));
    read_booking_counters(after);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(after[i] >= before[i] + 1, "%s: %lld then %lld", booking_counters[i],
                      before[i], after[i]);
}
END_TEST

START_TEST(test_unknown_path)
{
    struct http_response resp;
    uint64_t id = create_listing();

    call(&resp, "GET", NULL, NULL, "/v1/nothing");
    expect_error(&resp, 404, "not_found");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/");
    expect_error(&resp, 404, "not_found");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/nothing", id);
    expect_error(&resp, 404, "not_found");
    http_response_deinit(&resp);
}
END_TEST

/* A path whose id segment is empty names nothing: 404 not_found, as
 * /v1/listings/42/ does, not a malformed id. */
START_TEST(test_empty_id_segment_is_not_found)
{
    struct http_response resp;
    uint64_t id = create_listing();
    const char *headers[] = {"Idempotency-Key: empty-segment", NULL};
    char body[200], paths[6][200];
    static const char *const methods[6] = {"POST", "GET", "POST", "GET", "PUT", "GET"};

    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}",
             day(FIRST_DAY), day(FIRST_DAY + 1));
    snprintf(paths[0], sizeof(paths[0]), "/v1/listings/%" PRIu64 "/reservations/", id);
    snprintf(paths[1], sizeof(paths[1]), "/v1/listings/%" PRIu64 "/reservations/", id);
    snprintf(paths[2], sizeof(paths[2]), "/v1/listings/%" PRIu64 "/reservations//cancel", id);
    snprintf(paths[3], sizeof(paths[3]), "/v1/listings/");
    snprintf(paths[4], sizeof(paths[4]), "/v1/listings/");
    snprintf(paths[5], sizeof(paths[5]), "/v1/listings//availability?from=%s&to=%s", day(FIRST_DAY),
             day(FIRST_DAY + 1));
    for (size_t i = 0; i < 6; i++) {
        bool has_body = strcmp(methods[i], "GET") != 0;
        call(&resp, methods[i], headers, has_body ? body : NULL, "%s", paths[i]);
        if (resp.status != 404 || strstr(resp.body, "\"not_found\"") == NULL)
            note_failure("%s %s: %ld %s, want 404 not_found", methods[i], paths[i], resp.status,
                         resp.body);
        http_response_deinit(&resp);
    }
    expect_no_failures();
}
END_TEST

/* HEAD is answered wherever GET is, with GET's status and headers and no
 * body (libmicrohttpd leaves it out); a path without GET names HEAD nowhere. */
START_TEST(test_head_answers_like_get)
{
    struct http_response resp, get;
    uint64_t id = create_listing();
    char paths[4][200];

    snprintf(paths[0], sizeof(paths[0]), "/healthz");
    snprintf(paths[1], sizeof(paths[1]), "/metrics");
    snprintf(paths[2], sizeof(paths[2]), "/v1/listings/%" PRIu64, id);
    snprintf(paths[3], sizeof(paths[3]), "/v1/listings/%" PRIu64 "/availability?from=%s&to=%s", id,
             day(FIRST_DAY), day(FIRST_DAY + 3));
    for (size_t i = 0; i < 4; i++) {
        call(&get, "GET", NULL, NULL, "%s", paths[i]);
        ck_assert_msg(get.status == 200, "GET %s: %ld", paths[i], get.status);
        /* twice: an availability read misses the cache, then hits it */
        for (int k = 0; k < 2; k++) {
            call(&resp, "HEAD", NULL, NULL, "%s", paths[i]);
            if (resp.status != 200 || resp.len != 0 || strcmp(resp.etag, get.etag) != 0 ||
                strcmp(resp.content_type, get.content_type) != 0)
                note_failure("HEAD %s: %ld body '%s' ETag '%s' type '%s', want 200 none '%s' '%s'",
                             paths[i], resp.status, resp.body, resp.etag, resp.content_type,
                             get.etag, get.content_type);
            http_response_deinit(&resp);
        }
        http_response_deinit(&get);
    }
    call(&resp, "HEAD", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=%s&to=%s",
         testenv_random48(), day(FIRST_DAY), day(FIRST_DAY + 3));
    if (resp.status != 404 || resp.len != 0)
        note_failure("HEAD of an unknown listing's availability: %ld '%s', want 404 and no body",
                     resp.status, resp.body);
    http_response_deinit(&resp);
    expect_no_failures();
}
END_TEST

/* A 405 names every method the path takes, in its Allow header (RFC 9110
 * 15.5.6) and in its message. */
START_TEST(test_method_not_allowed_names_the_allowed_ones)
{
    struct http_response resp;
    uint64_t id = create_listing();
    char listing[64], path[160];
    static const struct {
        const char *method, *suffix, *allow, *message;
    } cases[] = {
        {"DELETE", "", "GET, HEAD, PUT", "use GET, HEAD or PUT on this path"},
        {"POST", "", "GET, HEAD, PUT", "use GET, HEAD or PUT on this path"},
        {"GET", "/reservations", "POST", "use POST on this path"},
        {"HEAD", "/reservations", "POST", NULL},
        {"PUT", "/availability", "GET, HEAD", "use GET or HEAD on this path"},
        {"GET", "/calendar", "POST", "use POST on this path"},
        {"DELETE", "/reservations/1", "GET, HEAD", "use GET or HEAD on this path"},
        {"GET", "/reservations/1/cancel", "POST", "use POST on this path"},
    };

    snprintf(listing, sizeof(listing), "/v1/listings/%" PRIu64, id);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root;
        const char *msg;

        snprintf(path, sizeof(path), "%s%s", listing, cases[i].suffix);
        call(&resp, cases[i].method, NULL, NULL, "%s", path);
        if (cases[i].message == NULL) { /* HEAD: the status and the header, no body */
            if (resp.status != 405 || strcmp(resp.allow, cases[i].allow) != 0 || resp.len != 0)
                note_failure("%s %s: %ld Allow '%s' body '%s', want 405 '%s' and none",
                             cases[i].method, path, resp.status, resp.allow, resp.body,
                             cases[i].allow);
            http_response_deinit(&resp);
            continue;
        }
        root = expect_error_json(&resp, 405, "method_not_allowed");
        msg = json_string_value(json_object_get(json_object_get(root, "error"), "message"));
        if (strcmp(resp.allow, cases[i].allow) != 0 || strcmp(msg, cases[i].message) != 0) {
            note_failure("%s %s: Allow '%s' message '%s', want '%s' '%s'", cases[i].method, path,
                         resp.allow, msg, cases[i].allow, cases[i].message);
        }
        json_decref(root);
        http_response_deinit(&resp);
    }
    static const struct {
        const char *method, *path, *allow;
    } others[] = {
        {"POST", "/healthz", "GET, HEAD"},
        {"DELETE", "/readyz", "GET, HEAD"},
        {"PUT", "/metrics", "GET, HEAD"},
        {"GET", "/v1/availability/search", "POST"},
        /* the method before the ids: a 405 whatever they are */
        {"DELETE", "/v1/listings/abc", "GET, HEAD, PUT"},
        {"GET", "/v1/listings/abc/calendar", "POST"},
        {"PUT", "/v1/listings/42/reservations/x", "GET, HEAD"},
        {"GET", "/v1/listings/0/reservations/x/cancel", "POST"},
    };
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        call(&resp, others[i].method, NULL, NULL, "%s", others[i].path);
        expect_error(&resp, 405, "method_not_allowed");
        if (strcmp(resp.allow, others[i].allow) != 0) {
            note_failure("%s %s: Allow '%s', want '%s'", others[i].method, others[i].path,
                         resp.allow, others[i].allow);
        }
        http_response_deinit(&resp);
    }
    /* No such path, no methods to name. */
    call(&resp, "DELETE", NULL, NULL, "/v1/nothing");
    expect_error(&resp, 404, "not_found");
    ck_assert_str_eq(resp.allow, "");
    http_response_deinit(&resp);
    expect_no_failures();
}
END_TEST

/* ---- listings ---- */

START_TEST(test_listing_create_update_get)
{
    struct http_response resp;
    uint64_t id = testenv_random48();
    json_t *root;
    int64_t v1, v2;

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64, id);
    expect_error(&resp, 404, "listing_not_found");
    http_response_deinit(&resp);

    call(&resp, "PUT", NULL,
         "{\"default_price\":12500,\"currency\":\"EUR\",\"min_nights\":2,\"max_nights\":14}",
         "/v1/listings/%" PRIu64, id);
    root = expect_json(&resp, 201);
    ck_assert_int_eq(jint(root, "listing_id"), (int64_t)id);
    ck_assert_int_eq(jint(root, "default_price"), 12500);
    ck_assert_str_eq(jstr(root, "currency"), "EUR");
    ck_assert_int_eq(jint(root, "min_nights"), 2);
    ck_assert_int_eq(jint(root, "max_nights"), 14);
    v1 = jint(root, "version");
    ck_assert_int_gt(v1, 0);
    json_decref(root);
    http_response_deinit(&resp);

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64, id);
    root = expect_json(&resp, 200);
    ck_assert_int_eq(jint(root, "listing_id"), (int64_t)id);
    ck_assert_int_eq(jint(root, "default_price"), 12500);
    ck_assert_str_eq(jstr(root, "currency"), "EUR");
    ck_assert_int_eq(jint(root, "min_nights"), 2);
    ck_assert_int_eq(jint(root, "max_nights"), 14);
    ck_assert_int_eq(jint(root, "version"), v1);
    json_decref(root);
    http_response_deinit(&resp);

    /* Update: 200, new settings visible, calendar version moves (ETag changes). */
    call(&resp, "PUT", NULL,
         "{\"default_price\":9900,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}",
         "/v1/listings/%" PRIu64, id);
    root = expect_json(&resp, 200);
    ck_assert_int_eq(jint(root, "default_price"), 9900);
    ck_assert_str_eq(jstr(root, "currency"), "USD");
    v2 = jint(root, "version");
    ck_assert_int_gt(v2, v1);
    json_decref(root);
    http_response_deinit(&resp);

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64, id);
    root = expect_json(&resp, 200);
    ck_assert_int_eq(jint(root, "default_price"), 9900);
    ck_assert_int_eq(jint(root, "min_nights"), 1);
    ck_assert_int_eq(jint(root, "max_nights"), 30);
    ck_assert_int_eq(jint(root, "version"), v2);
    json_decref(root);
    http_response_deinit(&resp);

    /* The new default price shows in availability. */
    root = availability(id, FIRST_DAY, FIRST_DAY + 2);
    expect_night(root, FIRST_DAY, FIRST_DAY, "available", 9900);
    json_decref(root);

    /* SQL: one listings row on the shard the catalog names, with the routed vbucket. */
    {
        struct db_val p[] = {DB_INT_V(id)};
        int64_t epoch;
        int idx = owner_shard(id, &epoch);

        ck_assert_int_eq(
            count_all_shards("SELECT COUNT(*) FROM listings WHERE listing_id = ?", p, 1), 1);
        ck_assert_int_eq(
            sql_int(shard((size_t)idx), "SELECT vbucket FROM listings WHERE listing_id = ?", p, 1),
            testenv_vbucket(id));
    }
}
END_TEST

struct bad_case {
    const char *body;
    const char *code;
};

START_TEST(test_listing_validation)
{
    static const struct bad_case cases[] = {
        {"{\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}", "missing_field"},
        {"{\"default_price\":1,\"min_nights\":1,\"max_nights\":30}", "missing_field"},
        {"{\"default_price\":1,\"currency\":\"USD\",\"max_nights\":30}", "missing_field"},
        {"{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":1}", "missing_field"},
        {"{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30,"
         "\"color\":\"red\"}",
         "unknown_field"},
        {"{\"default_price\":-1,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}",
         "invalid_field"},
        {"{\"default_price\":\"100\",\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}",
         "invalid_field"},
        {"{\"default_price\":1.5,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}",
         "invalid_field"},
        {"{\"default_price\":1,\"currency\":\"usd\",\"min_nights\":1,\"max_nights\":30}",
         "invalid_field"},
        {"{\"default_price\":1,\"currency\":\"USDX\",\"min_nights\":1,\"max_nights\":30}",
         "invalid_field"},
        {"{\"default_price\":1,\"currency\":7,\"min_nights\":1,\"max_nights\":30}",
         "invalid_field"},
        {"{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":0,\"max_nights\":30}",
         "invalid_field"},
        {"{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":366}",
         "invalid_field"},
        {"{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":5,\"max_nights\":4}",
         "invalid_field"},
        {"{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":true,\"max_nights\":4}",
         "invalid_field"},
        {"{\"default_price\":1,", "invalid_json"},
        {"", "invalid_json"},
        {"{\"default_price\":1,\"currency\":\"\xff\xfe\",\"min_nights\":1,\"max_nights\":3}",
         "invalid_json"},
    };
    struct http_response resp;
    uint64_t id = testenv_random48();

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char code[64];

        call(&resp, "PUT", NULL, cases[i].body, "/v1/listings/%" PRIu64, id);
        http_response_error_code(&resp, code, sizeof(code));
        if (resp.status == 400 && strcmp(code, cases[i].code) == 0) {
            expect_error(&resp, 400, cases[i].code);
        } else {
            note_failure("case %zu %s: got %ld %s, want 400 %s", i, cases[i].body, resp.status,
                         code, cases[i].code);
        }
        http_response_deinit(&resp);
    }
    /* Nothing was created by the rejected requests. */
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64, id);
    expect_error(&resp, 404, "listing_not_found");
    http_response_deinit(&resp);
    expect_no_failures();
}
END_TEST

/* PUT /v1/listings/{id} with settings of this price, and an If-Match
 * header unless if_match is NULL. */
static void
put_listing(struct http_response *resp, uint64_t id, const char *if_match, int64_t price)
{
    char body[200], hdr[128];
    const char *headers[] = {hdr, NULL};

    snprintf(body, sizeof(body),
             "{\"default_price\":%" PRId64
             ",\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}",
             price);
    if (if_match != NULL) {
        snprintf(hdr, sizeof(hdr), "If-Match: %s", if_match);
    }
    call(resp, "PUT", if_match != NULL ? headers : NULL, body, "/v1/listings/%" PRIu64, id);
}

/* GET /v1/listings/{id}: asserts 200, the price, and an ETag of the
 * version; returns the version. */
static int64_t
listing_version(uint64_t id, int64_t price)
{
    struct http_response resp;
    char etag[64];
    json_t *root;
    int64_t version;

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64, id);
    root = expect_json(&resp, 200);
    ck_assert_int_eq(jint(root, "default_price"), price);
    version = jint(root, "version");
    snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", version);
    ck_assert_msg(strcmp(resp.etag, etag) == 0, "ETag %s, want %s", resp.etag, etag);
    json_decref(root);
    http_response_deinit(&resp);
    return version;
}

/* A PUT with If-Match replaces the settings only at that version (quoted
 * or not; * any), else 412 and nothing changes; with If-Match it never
 * creates a listing (RFC 9110 13.1.1: no current representation, no match). */
START_TEST(test_put_listing_if_match)
{
    struct http_response resp;
    uint64_t id = create_listing_with(10000, 1, 30);
    char tag[64], stale[64];
    json_t *root;
    int64_t v1 = listing_version(id, 10000), v2;

    snprintf(tag, sizeof(tag), "\"%" PRId64 "\"", v1);
    put_listing(&resp, id, tag, 11000);
    root = expect_json(&resp, 200);
    v2 = jint(root, "version");
    ck_assert_int_eq(v2, v1 + 1);
    snprintf(tag, sizeof(tag), "\"%" PRId64 "\"", v2);
    ck_assert_str_eq(resp.etag, tag);
    json_decref(root);
    http_response_deinit(&resp);

    /* v1 is stale now: refused, and the listing is as the last PUT left it. */
    snprintf(stale, sizeof(stale), "\"%" PRId64 "\"", v1);
    put_listing(&resp, id, stale, 12000);
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    snprintf(stale, sizeof(stale), "%" PRId64, v2 + 1);
    put_listing(&resp, id, stale, 12000);
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    ck_assert_int_eq(listing_version(id, 11000), v2);

    /* The current version, unquoted, applies; so does *. */
    snprintf(tag, sizeof(tag), "%" PRId64, v2);
    put_listing(&resp, id, tag, 12000);
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
    ck_assert_int_eq(listing_version(id, 12000), v2 + 1);
    put_listing(&resp, id, "*", 13000);
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
    ck_assert_int_eq(listing_version(id, 13000), v2 + 2);

    put_listing(&resp, id, "W/\"1\"", 14000);
    expect_error(&resp, 400, "invalid_if_match");
    http_response_deinit(&resp);
    ck_assert_int_eq(listing_version(id, 13000), v2 + 2);
    /* Numbers no version can be are versions still: they match none. */
    put_listing(&resp, id, "\"0\"", 14000);
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    put_listing(&resp, id, "99999999999999999999", 14000);
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    ck_assert_int_eq(listing_version(id, 13000), v2 + 2);

    /* A listing that does not exist matches no If-Match, * included. */
    uint64_t absent = testenv_random48();
    put_listing(&resp, absent, "\"1\"", 10000);
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    put_listing(&resp, absent, "*", 10000);
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64, absent);
    expect_error(&resp, 404, "listing_not_found");
    http_response_deinit(&resp);
    {
        struct db_val p[] = {DB_INT_V(absent)};

        ck_assert_int_eq(
            count_all_shards("SELECT COUNT(*) FROM listings WHERE listing_id = ?", p, 1), 0);
    }
}
END_TEST

/* Every endpoint but the two that evaluate If-Match (PUT a listing, POST
 * its calendar) refuses it rather than ignore a condition the client set;
 * the booking it came with is not made. */
START_TEST(test_if_match_refused_where_not_evaluated)
{
    struct http_response resp;
    uint64_t id = create_listing();
    int64_t v;
    char tag[64], key_hdr[64], path[3][160], body[200];
    const char *with_tag[] = {tag, NULL};
    const char *booking_headers[] = {tag, key_hdr, NULL};
    json_t *r = book_ok(id, "if-match-first", FIRST_DAY, FIRST_DAY + 2, 1, 20000);
    int64_t rid = jint(r, "reservation_id");

    json_decref(r);
    v = listing_version(id, 10000);
    snprintf(tag, sizeof(tag), "If-Match: \"%" PRId64 "\"", v);
    snprintf(path[0], sizeof(path[0]), "/v1/listings/%" PRIu64, id);
    snprintf(path[1], sizeof(path[1]), "/v1/listings/%" PRIu64 "/availability?from=%s&to=%s", id,
             day(FIRST_DAY), day(FIRST_DAY + 4));
    snprintf(path[2], sizeof(path[2]), "/v1/listings/%" PRIu64 "/reservations/%" PRId64, id, rid);
    const struct {
        const char *method, *path, *body;
    } cases[] = {
        {"GET", path[0], NULL},    {"GET", path[1], NULL},   {"GET", path[2], NULL},
        {"GET", "/healthz", NULL}, {"GET", "/readyz", NULL}, {"GET", "/metrics", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char code[64];

        call(&resp, cases[i].method, with_tag, cases[i].body, "%s", cases[i].path);
        http_response_error_code(&resp, code, sizeof(code));
        if (resp.status != 400 || strcmp(code, "if_match_not_supported") != 0) {
            note_failure("%s %s: %ld %s, want 400 if_match_not_supported", cases[i].method,
                         cases[i].path, resp.status, code);
        }
        http_response_deinit(&resp);
    }

    /* A search, a booking and a cancel with If-Match change nothing. */
    snprintf(body, sizeof(body),
             "{\"listing_ids\":[%" PRIu64 "],\"check_in\":\"%s\",\"check_out\":\"%s\"}", id,
             day(FIRST_DAY + 2), day(FIRST_DAY + 4));
    call(&resp, "POST", with_tag, body, "/v1/availability/search");
    expect_error(&resp, 400, "if_match_not_supported");
    http_response_deinit(&resp);
    snprintf(key_hdr, sizeof(key_hdr), "Idempotency-Key: if-match-second");
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":2}",
             day(FIRST_DAY + 2), day(FIRST_DAY + 4));
    call(&resp, "POST", booking_headers, body, "/v1/listings/%" PRIu64 "/reservations", id);
    expect_error(&resp, 400, "if_match_not_supported");
    http_response_deinit(&resp);
    call(&resp, "POST", with_tag, NULL, "%s/cancel", path[2]);
    expect_error(&resp, 400, "if_match_not_supported");
    http_response_deinit(&resp);
    ck_assert_int_eq(listing_version(id, 10000), v);
    {
        json_t *av = availability(id, FIRST_DAY, FIRST_DAY + 4);

        expect_night(av, FIRST_DAY, FIRST_DAY, "booked", 10000);
        expect_night(av, FIRST_DAY, FIRST_DAY + 2, "available", 10000);
        expect_night(av, FIRST_DAY, FIRST_DAY + 3, "available", 10000);
        json_decref(av);
    }
    expect_no_failures();
}
END_TEST

/* If-None-Match on a write ("*": create only) would be ignored: refused,
 * and the write not made. On a read it is ignored and the full answer
 * sent. */
START_TEST(test_if_none_match_refused_on_writes)
{
    struct http_response resp;
    uint64_t id = create_listing();
    int64_t v = listing_version(id, 10000);
    char etag[64], body[200];
    const char *star[] = {"If-None-Match: *", NULL};
    const char *booking_headers[] = {"If-None-Match: *", "Idempotency-Key: inm-1", NULL};
    const char *with_etag[] = {etag, NULL};

    call(&resp, "PUT", star,
         "{\"default_price\":5,\"currency\":\"USD\",\"min_nights\":1,"
         "\"max_nights\":3}",
         "/v1/listings/%" PRIu64, id);
    expect_error(&resp, 400, "if_none_match_not_supported");
    http_response_deinit(&resp);
    snprintf(body, sizeof(body), "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY), day(FIRST_DAY + 2));
    call(&resp, "POST", star, body, "/v1/listings/%" PRIu64 "/calendar", id);
    expect_error(&resp, 400, "if_none_match_not_supported");
    http_response_deinit(&resp);
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":2}",
             day(FIRST_DAY), day(FIRST_DAY + 2));
    call(&resp, "POST", booking_headers, body, "/v1/listings/%" PRIu64 "/reservations", id);
    expect_error(&resp, 400, "if_none_match_not_supported");
    http_response_deinit(&resp);
    ck_assert_int_eq(listing_version(id, 10000), v);
    {
        json_t *av = availability(id, FIRST_DAY, FIRST_DAY + 2);

        expect_night(av, FIRST_DAY, FIRST_DAY, "available", 10000);
        expect_night(av, FIRST_DAY, FIRST_DAY + 1, "available", 10000);
        json_decref(av);
    }
    snprintf(etag, sizeof(etag), "If-None-Match: \"%" PRId64 "\"", v);
    call(&resp, "GET", with_etag, NULL, "/v1/listings/%" PRIu64, id);
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
    /* The search is a read, its POST too: answered in full, whether the
     * event loop answers it or (a body over 8 KiB, here of spaces) a worker. */
    snprintf(body, sizeof(body),
             "{\"listing_ids\":[%" PRIu64 "],\"check_in\":\"%s\",\"check_out\":\"%s\"}", id,
             day(FIRST_DAY), day(FIRST_DAY + 2));
    static char padded[10000];
    snprintf(padded, sizeof(padded), "%-9000s", body);
    const char *const searches[] = {body, padded};
    for (size_t i = 0; i < 2; i++) {
        call(&resp, "POST", star, searches[i], "/v1/availability/search");
        json_decref(expect_json(&resp, 200));
        http_response_deinit(&resp);
    }
}
END_TEST

START_TEST(test_invalid_listing_id)
{
    static const char *const ids[] = {
        "abc", "0", "-5", "12abc", "18446744073709551616", "99999999999999999999999", "007", "00"};
    static const char body[] =
        "{\"default_price\":1,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":3}";
    struct http_response resp;

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        call(&resp, "GET", NULL, NULL, "/v1/listings/%s", ids[i]);
        expect_error(&resp, 400, "invalid_listing_id");
        http_response_deinit(&resp);
        call(&resp, "PUT", NULL, body, "/v1/listings/%s", ids[i]);
        expect_error(&resp, 400, "invalid_listing_id");
        http_response_deinit(&resp);
        call(&resp, "GET", NULL, NULL, "/v1/listings/%s/availability?from=%s&to=%s", ids[i],
             day(FIRST_DAY), day(FIRST_DAY + 1));
        expect_error(&resp, 400, "invalid_listing_id");
        http_response_deinit(&resp);
    }
    {
        const char *headers[] = {"Idempotency-Key: bad-id", NULL};
        char b[200];

        snprintf(b, sizeof(b), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}",
                 day(FIRST_DAY), day(FIRST_DAY + 1));
        call(&resp, "POST", headers, b, "/v1/listings/0/reservations");
        expect_error(&resp, 400, "invalid_listing_id");
        http_response_deinit(&resp);
    }
    /* A path that names no endpoint is one, whatever its ids. */
    static const char *const unknown[] = {"/v1/listings/abc/bogus", "/v1/listings/0/x/y",
                                          "/v1/listings/abc/reservations/1/refund",
                                          "/v1/listings/abc/calendar/1"};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        call(&resp, "GET", NULL, NULL, "%s", unknown[i]);
        expect_error(&resp, 404, "not_found");
        http_response_deinit(&resp);
    }
}
END_TEST

/* ---- bookings ---- */

START_TEST(test_booking_create_and_get)
{
    struct http_response resp;
    uint64_t id = create_listing_with(10000, 1, 30), other = create_listing();
    json_t *r, *g;
    int64_t rid, v;

    r = book_ok(id, "create-1", FIRST_DAY, FIRST_DAY + 3, 42, 30000);
    rid = jint(r, "reservation_id");
    v = jint(r, "version");

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64, id, rid);
    g = expect_json(&resp, 200);
    ck_assert_int_eq(jint(g, "reservation_id"), rid);
    ck_assert_int_eq(jint(g, "listing_id"), (int64_t)id);
    ck_assert_str_eq(jstr(g, "check_in"), day(FIRST_DAY));
    ck_assert_str_eq(jstr(g, "check_out"), day(FIRST_DAY + 3));
    ck_assert_int_eq(jint(g, "guest_id"), 42);
    ck_assert_int_eq(jint(g, "total_price"), 30000);
    ck_assert_str_eq(jstr(g, "currency"), "USD");
    ck_assert_str_eq(jstr(g, "status"), "confirmed");
    ck_assert_int_eq(jint(g, "version"), v);
    json_decref(g);
    http_response_deinit(&resp);

    /* A reservation id is only found under its own listing. */
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64, other, rid);
    expect_error(&resp, 404, "reservation_not_found");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64, id,
         rid + 1000003);
    expect_error(&resp, 404, "reservation_not_found");
    http_response_deinit(&resp);

    /* A malformed reservation id is refused, read or cancel; the id with a
     * leading zero is no other name for it, nor the listing's. */
    {
        char bad[4][32];
        snprintf(bad[0], sizeof(bad[0]), "0%" PRId64, rid);
        snprintf(bad[1], sizeof(bad[1]), "0");
        snprintf(bad[2], sizeof(bad[2]), "-%" PRId64, rid);
        snprintf(bad[3], sizeof(bad[3]), "%" PRId64 "x", rid);
        for (size_t i = 0; i < 4; i++) {
            call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%s", id, bad[i]);
            expect_error(&resp, 400, "invalid_reservation_id");
            http_response_deinit(&resp);
            call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%s/cancel", id,
                 bad[i]);
            expect_error(&resp, 400, "invalid_reservation_id");
            http_response_deinit(&resp);
        }
        call(&resp, "GET", NULL, NULL, "/v1/listings/0%" PRIu64 "/reservations/%" PRId64, id, rid);
        expect_error(&resp, 400, "invalid_listing_id");
        http_response_deinit(&resp);
        call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64, id, rid);
        g = expect_json(&resp, 200);
        ck_assert_str_eq(jstr(g, "status"), "confirmed");
        json_decref(g);
        http_response_deinit(&resp);
    }

    /* Checkout night stays free: the adjacent stay books. */
    json_decref(book_ok(id, "create-2", FIRST_DAY + 3, FIRST_DAY + 5, 43, 20000));

    /* SQL: the contract columns hold what the API said. */
    {
        struct db_val p[] = {DB_INT_V(rid)};
        int64_t epoch;
        struct db *db = shard((size_t)owner_shard(id, &epoch));

        ck_assert_int_eq(sql_int(db,
                                 "SELECT TO_DAYS(check_in) - 719528 FROM reservations "
                                 "WHERE reservation_id = ?",
                                 p, 1),
                         today + FIRST_DAY);
        ck_assert_int_eq(sql_int(db,
                                 "SELECT TO_DAYS(check_out) - 719528 FROM reservations "
                                 "WHERE reservation_id = ?",
                                 p, 1),
                         today + FIRST_DAY + 3);
        ck_assert_int_eq(sql_int(db,
                                 "SELECT COUNT(*) FROM reservations WHERE reservation_id = ? "
                                 "AND status = 'confirmed' AND total_price = 30000",
                                 p, 1),
                         1);
    }
    {
        struct db_val p[] = {DB_INT_V(id), DB_INT_V(rid)};

        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM nights WHERE listing_id = ? AND "
                                          "reservation_id = ? AND status = 'booked'",
                                          p, 2),
                         3);
    }
    json_decref(r);
}
END_TEST

START_TEST(test_booking_unknown_listing)
{
    struct http_response resp;

    book_raw(&resp, testenv_random48(), "nolisting", FIRST_DAY, FIRST_DAY + 2, 1);
    expect_error(&resp, 404, "listing_not_found");
    http_response_deinit(&resp);
}
END_TEST

struct booking_case {
    const char *key; /* header line, or NULL for none */
    const char *body;
    long status;
    const char *code;
};

START_TEST(test_booking_validation)
{
    uint64_t id = create_listing_with(10000, 2, 5);
    char d0[11], d1[11], d2[11], d3[11], d6[11], past[11], d1p[11], y2[5];
    char bodies[24][256], longkey[300];
    struct booking_case cases[32];
    size_t n = 0;
    struct http_response resp;

    snprintf(d0, sizeof(d0), "%s", day(FIRST_DAY));
    snprintf(d1, sizeof(d1), "%s", day(FIRST_DAY + 1));
    snprintf(d2, sizeof(d2), "%s", day(FIRST_DAY + 2));
    snprintf(d3, sizeof(d3), "%s", day(FIRST_DAY + 3));
    snprintf(d6, sizeof(d6), "%s", day(FIRST_DAY + 6));
    snprintf(past, sizeof(past), "%s", day(-1));
    snprintf(d1p, sizeof(d1p), "%s", day(1));
    snprintf(y2, sizeof(y2), "%.4s", day(800)); /* a year surely in the future */

#define BODY(...) (snprintf(bodies[n], sizeof(bodies[n]), __VA_ARGS__), bodies[n])
#define CASE(k, st, c, ...)                                                                        \
    do {                                                                                           \
        cases[n].key = (k);                                                                        \
        cases[n].body = BODY(__VA_ARGS__);                                                         \
        cases[n].status = (st);                                                                    \
        cases[n].code = (c);                                                                       \
        n++;                                                                                       \
    } while (0)
    static const char *const key = "Idempotency-Key: valid-key";

    CASE(NULL, 400, "missing_idempotency_key",
         "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}", d0, d2);
    snprintf(longkey, sizeof(longkey), "Idempotency-Key: %0256d", 7);
    CASE(longkey, 400, "invalid_idempotency_key",
         "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}", d0, d2);
    CASE("Idempotency-Key: cl\xc3\xa9", 400, "invalid_idempotency_key",
         "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}", d0, d2);
    CASE(key, 400, "invalid_json", "{\"check_in\":\"%s\",", d0);
    CASE(key, 400, "invalid_json", "%s", "not json");
    CASE(key, 400, "invalid_json",
         "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1,"
         "\"note\":\"\xc3\x28\"}",
         d0, d2);
    CASE(key, 400, "unknown_field",
         "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1,\"pets\":2}", d0, d2);
    CASE(key, 400, "missing_field", "{\"check_out\":\"%s\",\"guest_id\":1}", d2);
    CASE(key, 400, "missing_field", "{\"check_in\":\"%s\",\"guest_id\":1}", d0);
    CASE(key, 400, "missing_field", "{\"check_in\":\"%s\",\"check_out\":\"%s\"}", d0, d2);
    CASE(key, 400, "invalid_field", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":\"7\"}",
         d0, d2);
    CASE(key, 400, "invalid_field", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":-1}",
         d0, d2);
    CASE(key, 400, "invalid_field", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1.5}",
         d0, d2);
    CASE(key, 400, "invalid_field", "{\"check_in\":20270101,\"check_out\":\"%s\",\"guest_id\":1}",
         d2);
    CASE(key, 400, "invalid_date",
         "{\"check_in\":\"%s-02-30\",\"check_out\":\"%s-03-02\",\"guest_id\":1}", y2, y2);
    CASE(key, 400, "invalid_date",
         "{\"check_in\":\"%s-13-01\",\"check_out\":\"%s-12-03\",\"guest_id\":1}", y2, y2);
    CASE(key, 400, "invalid_date",
         "{\"check_in\":\"%s-1-05\",\"check_out\":\"%s-01-08\",\"guest_id\":1}", y2, y2);
    CASE(key, 400, "invalid_date", "{\"check_in\":\"%s\",\"check_out\":\"soon\",\"guest_id\":1}",
         d0);
    CASE(key, 400, "past_date", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}", past,
         d1p);
    CASE(key, 400, "invalid_range", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}", d2,
         d2);
    CASE(key, 400, "invalid_range", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}", d3,
         d0);
    CASE(key, 400, "stay_too_short", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}",
         d0, d1);
    CASE(key, 400, "stay_too_long", "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}", d0,
         d6);
#undef CASE
#undef BODY

    for (size_t i = 0; i < n; i++) {
        const char *headers[] = {cases[i].key, NULL};
        char code[64];

        call(&resp, "POST", headers, cases[i].body, "/v1/listings/%" PRIu64 "/reservations", id);
        http_response_error_code(&resp, code, sizeof(code));
        if (resp.status == cases[i].status && strcmp(code, cases[i].code) == 0) {
            expect_error(&resp, cases[i].status, cases[i].code);
        } else {
            note_failure("case %zu (%.40s) %s: got %ld %s, want %ld %s", i,
                         cases[i].key ? cases[i].key : "no key", cases[i].body, resp.status, code,
                         cases[i].status, cases[i].code);
        }
        http_response_deinit(&resp);
    }

    /* Nothing was booked by the rejected requests, and the key is still free. */
    {
        struct db_val p[] = {DB_INT_V(id)};

        ck_assert_int_eq(
            count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ?", p, 1), 0);
    }
    json_decref(book_ok(id, "valid-key", FIRST_DAY, FIRST_DAY + 2, 1, 20000));
    json_decref(book_ok(id, "max-stay", FIRST_DAY + 10, FIRST_DAY + 15, 1, 50000));
    {
        char key255[256];

        /* 255 printable characters is the longest valid key. */
        memset(key255, '~', 255);
        key255[0] = '!';
        key255[255] = '\0';
        json_decref(book_ok(id, key255, FIRST_DAY + 20, FIRST_DAY + 22, 1, 20000));
    }
    expect_no_failures();
}
END_TEST

/* A socket connected to 127.0.0.1:port. */
static int
connect_loopback(unsigned port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_msg(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

/* A chunked body has no Content-Length to refuse early: one that never
 * ends must still lose its connection once it is well over the limit. */
START_TEST(test_endless_chunked_body_is_cut_off)
{
    unsigned port = 0;
    ck_assert_int_eq(sscanf(env.calendard_url, "http://127.0.0.1:%u", &port), 1);
    int fd = connect_loopback(port);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    static const char head[] = "POST /v1/listings/1/reservations HTTP/1.1\r\nHost: t\r\n"
                               "Idempotency-Key: endless\r\nTransfer-Encoding: chunked\r\n\r\n";
    ck_assert_int_eq(send(fd, head, sizeof(head) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(head) - 1);
    /* 64 KiB is the limit; 64 MiB would never be cut off without the fix. */
    static char chunk[16384 + 16];
    int k = snprintf(chunk, sizeof(chunk), "4000\r\n");
    memset(chunk + k, 'a', 16384);
    memcpy(chunk + k + 16384, "\r\n", 2);
    size_t len = (size_t)k + 16384 + 2, sent = 0;
    int why = 0;
    while (sent < 64u << 20) {
        ssize_t w = send(fd, chunk, len, MSG_NOSIGNAL);
        if (w < 0) {
            why = errno;
            break;
        }
        sent += (size_t)w;
    }
    close(fd);
    ck_assert_msg(why == EPIPE || why == ECONNRESET,
                  "sent %zu bytes without the connection being closed (errno %d)", sent, why);
}
END_TEST

START_TEST(test_body_too_large)
{
    size_t size = 70 * 1024;
    char *body = malloc(size + 1);
    const char *headers[] = {"Idempotency-Key: big-body", NULL};
    struct http_response resp;
    uint64_t id = create_listing();
    int k;

    ck_assert_ptr_nonnull(body);
    k = snprintf(body, size, "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1,\"x\":\"",
                 day(FIRST_DAY), day(FIRST_DAY + 1));
    memset(body + k, 'a', size - (size_t)k - 2);
    body[size - 2] = '"';
    body[size - 1] = '}';
    body[size] = '\0';
    call(&resp, "POST", headers, body, "/v1/listings/%" PRIu64 "/reservations", id);
    expect_error(&resp, 413, "body_too_large");
    http_response_deinit(&resp);
    free(body);
}
END_TEST

START_TEST(test_booking_conflict)
{
    struct http_response resp;
    uint64_t id = create_listing();
    json_t *a = book_ok(id, "conf-a", FIRST_DAY + 2, FIRST_DAY + 5, 1, 30000);

    /* Overlap on [d+2, d+4): 409 names exactly those nights. */
    book_raw(&resp, id, "conf-b", FIRST_DAY, FIRST_DAY + 4, 2);
    expect_unavailable(&resp, FIRST_DAY + 2, FIRST_DAY + 3);
    http_response_deinit(&resp);
    book_raw(&resp, id, "conf-c", FIRST_DAY + 4, FIRST_DAY + 7, 3);
    expect_unavailable(&resp, FIRST_DAY + 4, FIRST_DAY + 4);
    http_response_deinit(&resp);
    expect_sql_booking(id, jint(a, "reservation_id"), FIRST_DAY + 2, FIRST_DAY + 5);
    json_decref(a);
}
END_TEST

/* Another session holds the listing's row for 6 s, longer than the lock
 * wait (2 s by default) and than a read timeout of 5 s: the booking's
 * statement must give up as a lock wait, a conflict that is retried, and the
 * booking commits once the lock goes. Not 503 outcome_unknown (a lock wait
 * outlived by the client's read timeout looks like a lost connection), and
 * the shard's breaker stays closed. */
static void *
commit_after_6s(void *arg)
{
    char err[512];

    sleep(6);
    ck_assert_msg(db_commit(arg, err, sizeof(err)) == CAL_OK, "%s", err);
    return NULL;
}

/* The conflicts calendard met on shard idx (calendard_shard_conflicts_total). */
static long long
shard_conflicts(int idx)
{
    struct http_response resp;
    char name[96];
    call(&resp, "GET", NULL, NULL, "/metrics");
    ck_assert_int_eq(resp.status, 200);
    snprintf(name, sizeof(name), "calendard_shard_conflicts_total{shard=\"%d\"}", idx);
    long long n = metric_value(resp.body, name);
    http_response_deinit(&resp);
    ck_assert_msg(n >= 0, "/metrics has no %s", name);
    return n;
}

/* A session of the test's own that holds listing id's row (SELECT ... FOR
 * UPDATE in an open transaction): every booking of the listing waits for it
 * until db_commit(). *idx: the listing's shard. Caller closes it. */
static struct db *
lock_listing(uint64_t id, int *idx)
{
    int64_t epoch;
    char err[512];
    struct db_val p[] = {DB_INT_V(id)};

    *idx = owner_shard(id, &epoch);
    struct db *locker = testenv_connect_shard(&env, (size_t)*idx, err, sizeof(err));
    ck_assert_msg(locker != NULL, "%s", err);
    ck_assert_msg(db_begin(locker, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(
        sql_int(locker, "SELECT COUNT(*) FROM listings WHERE listing_id = ? FOR UPDATE", p, 1), 1);
    return locker;
}

START_TEST(test_lock_wait_is_a_conflict)
{
    struct http_response resp;
    uint64_t id = create_listing();
    int idx;
    struct db *locker = lock_listing(id, &idx);
    long long conflicts = shard_conflicts(idx);
    pthread_t th;

    uint64_t t0 = cal_mono_us();
    ck_assert_int_eq(pthread_create(&th, NULL, commit_after_6s, locker), 0);
    json_decref(book_ok(id, "lockwait", FIRST_DAY + 1, FIRST_DAY + 3, 1, 20000));
    /* It waited for the lock (a booking that took no lock would be done at
     * once) and gave up waiting at least once. */
    ck_assert_uint_ge(cal_mono_us() - t0, 5500000);
    ck_assert_int_ge(shard_conflicts(idx), conflicts + 1);
    pthread_join(th, NULL);
    db_close(locker);
    call(&resp, "GET", NULL, NULL, "/metrics");
    ck_assert_int_eq(resp.status, 200);
    int breakers = 0;
    for (const char *l = strstr(resp.body, "\ncalendard_shard_breaker_open{"); l != NULL;
         l = strstr(l + 1, "\ncalendard_shard_breaker_open{")) {
        const char *sp = strchr(l, ' ');
        ck_assert_ptr_nonnull(sp);
        ck_assert_msg(sp[1] == '0', "a breaker opened: %.60s", l + 1);
        breakers++;
    }
    ck_assert_int_eq(breakers, (int)env.nshards);
    http_response_deinit(&resp);
}
END_TEST

/* ---- a calendard of the test's own: back-pressure and stopping ---- */

#define HELD 8 /* bookings held in flight by a row lock */

/* One booking of its own nights, sent on its own connection. */
struct held_booking {
    const char *url; /* the test's calendard */
    char path[128], body[256], key[64];
    struct http_response resp;
    cal_status st;
    char err[256];
    uint64_t done_us; /* cal_mono_us() when it was answered */
};

static void *
held_booking_run(void *arg)
{
    struct held_booking *b = arg;
    struct http_client *client = http_client_create();
    char url[256], hdr[96];
    const char *headers[] = {hdr, NULL};

    snprintf(url, sizeof(url), "%s%s", b->url, b->path);
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", b->key);
    b->st = CAL_ENOMEM;
    /* The test's probes for the limit take a slot for a moment: a booking
     * that meets one is refused, and sent again. */
    for (int i = 0; client != NULL && i < 500; i++) {
        char code[32];
        b->st = http_request(client, "POST", url, headers, b->body, strlen(b->body), 30000,
                             &b->resp, b->err, sizeof(b->err));
        if (b->st != CAL_OK || b->resp.status != 503 ||
            strcmp(http_response_error_code(&b->resp, code, sizeof(code)), "overloaded") != 0)
            break;
        http_response_deinit(&b->resp);
        cal_sleep_ms(10);
    }
    b->done_us = cal_mono_us();
    http_client_destroy(client);
    return NULL;
}

/* GET /healthz on d until it answers 503 code, with Retry-After (at most
 * 10 s: the requests that get in meanwhile are answered at once). */
static void
expect_refusal(const struct testd *d, const char *code)
{
    struct http_client *client = http_client_create();
    struct http_response resp;
    char err[512], got[64] = "";

    ck_assert_ptr_nonnull(client);
    for (int i = 0; i < 200; i++) {
        cal_status st =
            http_requestf(client, "GET", NULL, NULL, &resp, err, sizeof(err), "%s/healthz", d->url);
        ck_assert_msg(st == CAL_OK, "%s", err);
        http_response_error_code(&resp, got, sizeof(got));
        if (resp.status == 503 && strcmp(got, code) == 0) {
            ck_assert_msg(atoi(resp.retry_after) > 0, "503 %s without Retry-After", code);
            /* A stopping daemon tells keep-alive clients to go elsewhere. */
            if (strcmp(code, "shutting_down") == 0)
                ck_assert_str_eq(resp.connection, "close");
            http_response_deinit(&resp);
            http_client_destroy(client);
            return;
        }
        ck_assert_msg(resp.status == 200 || resp.status == 503, "healthz %ld: %s", resp.status,
                      resp.body);
        http_response_deinit(&resp);
        cal_sleep_ms(50);
    }
    ck_abort_msg("no 503 %s in 10 s (last: %s)", code, got);
}

/* A calendard of the test's own that takes max_inflight requests at once.
 * Its request deadline is past the test's bounds (held bookings wait as long
 * as the test holds their lock, on a slow machine too); it takes searches of
 * SLOW_IDS listings. */
static void
start_own_calendard(struct testd *d, int max_inflight)
{
    char err[512], limit[16];
    const struct testd_set sets[] = {{"server", "max_inflight", limit},
                                     {"routing", "request_deadline_ms", "40000"},
                                     {"server", "max_search_listings", "10000"},
                                     {"server", "max_body_bytes", "1048576"}};

    snprintf(limit, sizeof(limit), "%d", max_inflight);
    ck_assert_msg(testd_start(d, &env, sets, 4, err, sizeof(err)), "%s", err);
}

/* Starts booking i of listing id (night FIRST_DAY + 2i, its key
 * "<prefix>-i") on d, on a thread of its own. */
static void
held_booking_start(struct held_booking *b, pthread_t *thread, const struct testd *d, uint64_t id,
                   int i, const char *prefix)
{
    b->url = d->url;
    snprintf(b->path, sizeof(b->path), "/v1/listings/%" PRIu64 "/reservations", id);
    snprintf(b->body, sizeof(b->body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":%d}",
             day(FIRST_DAY + 2 * i), day(FIRST_DAY + 2 * i + 1), i + 1);
    snprintf(b->key, sizeof(b->key), "%s-%d", prefix, i);
    ck_assert_int_eq(pthread_create(thread, NULL, held_booking_run, b), 0);
}

/* HELD bookings of a new listing held in flight on d by a lock on the
 * listing's row, and the proof that all arrived: with d's max_inflight
 * reached by them (and the requests the test holds besides), the next
 * request is refused as overloaded. db_commit(*locker) lets them through. */
static uint64_t
hold_bookings(struct testd *d, struct held_booking *held, pthread_t *threads, struct db **locker)
{
    uint64_t id = create_listing();
    int idx;

    *locker = lock_listing(id, &idx);
    for (int i = 0; i < HELD; i++)
        held_booking_start(&held[i], &threads[i], d, id, i, "held");
    expect_refusal(d, "overloaded");
    return id;
}

#define SLOW_IDS 10000 /* unknown listings: an answer of some 500 KB */

static void
write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        ck_assert_msg(n > 0, "write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* A client that sends a search of SLOW_IDS listings and reads nothing until
 * the test says: with its receive buffer and segment size small the sockets
 * take some 100 KB of the answer, and the rest waits in the daemon. Returns
 * the socket once the answer has begun. */
static int
slow_search_send(const struct testd *d)
{
    size_t cap = SLOW_IDS * 24 + 256, n = 0;
    char *body = cal_malloc(cap), head[256];
    uint64_t base = testenv_random48();
    int fd = socket(AF_INET, SOCK_STREAM, 0), rcvbuf = 4096, mss = 536;
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)d->port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    n += (size_t)snprintf(body, cap, "{\"listing_ids\":[");
    for (int i = 0; i < SLOW_IDS; i++)
        n +=
            (size_t)snprintf(body + n, cap - n, "%s%" PRIu64, i > 0 ? "," : "", base + (uint64_t)i);
    n += (size_t)snprintf(body + n, cap - n, "],\"check_in\":\"%s\",\"check_out\":\"%s\"}",
                          day(FIRST_DAY), day(FIRST_DAY + 1));
    ck_assert_uint_lt(n, cap);
    int hlen = snprintf(head, sizeof(head),
                        "POST /v1/availability/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n",
                        n);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss)), 0);
    ck_assert_msg(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "connect: %s",
                  strerror(errno));
    write_all(fd, head, (size_t)hlen);
    write_all(fd, body, n);
    free(body);
    ck_assert_msg(poll(&pfd, 1, 10000) == 1, "no answer to the slow search in 10 s");
    return fd;
}

/* Reads the slow search's answer to its end (the daemon closes after it;
 * at most 20 s) and asserts it whole: 200, and a body of its Content-Length
 * with a result for every id. */
static void
expect_slow_search_whole(int fd)
{
    size_t cap = 4u << 20, n = 0;
    char *buf = cal_malloc(cap + 1);
    uint64_t until = cal_mono_us() + 20000000;

    while (n < cap && cal_mono_us() < until) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        ssize_t r = read(fd, buf + n, cap - n);
        if (r <= 0)
            break; /* closed, or reset */
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    const char *end = strstr(buf, "\r\n\r\n");
    const char *cl = strstr(buf, "\r\nContent-Length: ");
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0 && end != NULL && cl != NULL && cl < end,
                  "slow search: %zu bytes, not a 200 with Content-Length: %.200s", n, buf);
    size_t want = strtoull(cl + 18, NULL, 10), got = n - (size_t)(end + 4 - buf);
    ck_assert_msg(got == want, "slow search: %zu of its %zu body bytes arrived", got, want);
    json_t *root = json_loadb(end + 4, got, 0, NULL);
    ck_assert_uint_eq(json_array_size(json_object_get(root, "results")), SLOW_IDS);
    json_decref(root);
    free(buf);
}

/* Joins the held bookings: each answered in full with 201, and confirmed in
 * SQL under the reservation id its client got; with Connection: close when
 * the daemon was stopping (closing). */
static void
expect_held_booked(uint64_t id, struct held_booking *held, pthread_t *threads, bool closing)
{
    for (int i = 0; i < HELD; i++) {
        struct held_booking *b = &held[i];
        pthread_join(threads[i], NULL);
        if (b->st != CAL_OK || b->resp.status != 201) {
            note_failure("booking %d: %s %ld %s", i, b->st != CAL_OK ? b->err : "", b->resp.status,
                         b->resp.body ? b->resp.body : "");
        } else {
            json_t *r = expect_json(&b->resp, 201);
            struct db_val p[] = {DB_INT_V(id), DB_INT_V(jint(r, "reservation_id"))};
            if (count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? AND "
                                 "reservation_id = ? AND status = 'confirmed'",
                                 p, 2) != 1)
                note_failure("booking %d: answered 201, not confirmed in SQL", i);
            if (strcmp(b->resp.connection, closing ? "close" : "") != 0)
                note_failure("booking %d: Connection \"%s\"", i, b->resp.connection);
            json_decref(r);
        }
        http_response_deinit(&b->resp);
    }
    expect_no_failures();
}

/* The polls of the request queue ([server] worker_spin_us = spin) on a
 * calendard of the test's own over ten reads of a reservation (each runs on
 * a worker, and so does /metrics) sent one after another, gap_ms apart:
 * takes[0] the polls that took the next request, takes[1] those that found
 * none. */
static void
spins_over_sequential_reads(const char *spin, unsigned gap_ms, uint64_t id, long long out[2])
{
    const struct testd_set sets[] = {{"server", "worker_spin_us", spin}};
    static const char *const names[2] = {"calendard_worker_spin_takes_total",
                                         "calendard_worker_spin_misses_total"};
    struct testd d;
    char err[512];
    ck_assert_msg(testd_start(&d, &env, sets, CAL_ARRAY_LEN(sets), err, sizeof(err)), "%s", err);
    struct http_client *client = http_client_create();
    struct http_response resp;
    long long v[2][2];
    for (int i = 0; i < 12; i++) {
        bool metrics = i == 0 || i == 11;
        if (i > 0 && gap_ms > 0)
            cal_sleep_ms(gap_ms);
        cal_status st = metrics
                            ? http_requestf(client, "GET", NULL, NULL, &resp, err, sizeof(err),
                                            "%s/metrics", d.url)
                            : http_requestf(client, "GET", NULL, NULL, &resp, err, sizeof(err),
                                            "%s/v1/listings/%" PRIu64 "/reservations/1", d.url, id);
        ck_assert_msg(st == CAL_OK, "%s", err);
        if (metrics)
            for (int m = 0; m < 2; m++)
                v[i > 0][m] = metric_value(resp.body, names[m]);
        else
            expect_error(&resp, 404, "reservation_not_found");
        http_response_deinit(&resp);
    }
    http_client_destroy(client);
    ck_assert_int_eq(testd_stop(&d, 30), 0);
    testd_cleanup(&d);
    for (int m = 0; m < 2; m++) {
        ck_assert_msg(v[0][m] >= 0 && v[1][m] >= v[0][m], "%s %lld then %lld", names[m], v[0][m],
                      v[1][m]);
        out[m] = v[1][m] - v[0][m];
    }
}

/* [server] worker_spin_us: the worker that finished with no other busy
 * polls the queue that long before it sleeps, and takes the next request
 * itself when it comes meanwhile (no thread wakeup); 0 never polls. With
 * 100 ms, the client's next request comes well within the poll, and even
 * when it is queued before the worker is back from answering (the poll is
 * claimed before the answer goes out: without, 2 to 10 of 11 were taken on
 * a 2-core VM with both cores busy, and the test failed in CI). Requests
 * further apart than the poll find nothing, and the polls back off: of
 * eleven finishes 150 ms apart, five poll (the first three, then after
 * skipping 1, then 3, then 7 ...). */
START_TEST(test_an_idle_worker_polls_for_the_next_request)
{
    uint64_t id = create_listing();
    long long polled[2], never[2], sparse[2];
    spins_over_sequential_reads("100000", 0, id, polled);
    spins_over_sequential_reads("0", 0, id, never);
    spins_over_sequential_reads("20000", 150, id, sparse);
    printf("worker polls: 100 ms back to back %lld takes %lld misses; 0: %lld %lld; 20 ms, 150 ms "
           "apart: %lld %lld\n",
           polled[0], polled[1], never[0], never[1], sparse[0], sparse[1]);
    ck_assert_msg(polled[0] >= 8, "%lld of 11 requests taken by a polling worker (%lld misses)",
                  polled[0], polled[1]);
    ck_assert_msg(never[0] == 0 && never[1] == 0,
                  "worker_spin_us 0 polled: %lld takes, %lld misses", never[0], never[1]);
    ck_assert_msg(sparse[0] == 0, "a 20 ms poll took a request sent 150 ms later");
    ck_assert_msg(sparse[1] >= 3 && sparse[1] <= 6,
                  "%lld polls found nothing over 11 requests 150 ms apart (back-off: 3..6)",
                  sparse[1]);
}
END_TEST

/* Over [server] max_inflight calendard refuses at once with 503 overloaded
 * and Retry-After, and still answers the requests it holds. */
START_TEST(test_overload_is_refused_with_retry_after)
{
    struct testd d;
    struct held_booking held[HELD] = {0};
    pthread_t threads[HELD];
    struct db *locker;
    char err[512];

    start_own_calendard(&d, HELD);
    uint64_t id = hold_bookings(&d, held, threads, &locker);
    ck_assert_msg(db_commit(locker, err, sizeof(err)) == CAL_OK, "%s", err);
    expect_held_booked(id, held, threads, false);
    db_close(locker);
    ck_assert_int_eq(testd_stop(&d, 30), 0);
    testd_cleanup(&d);
}
END_TEST

/* The value of name on d's /metrics; fails the test when it has none. */
static long long
own_metric(const struct testd *d, const char *name)
{
    struct http_client *client = http_client_create();
    struct http_response resp;
    char err[512];
    ck_assert_msg(http_requestf(client, "GET", NULL, NULL, &resp, err, sizeof(err), "%s/metrics",
                                d->url) == CAL_OK,
                  "%s", err);
    ck_assert_int_eq(resp.status, 200);
    long long v = metric_value(resp.body, name);
    http_response_deinit(&resp);
    http_client_destroy(client);
    ck_assert_msg(v >= 0, "/metrics has no %s", name);
    return v;
}

/* calendard_requests_in_flight on d's /metrics (this scrape included). */
static long long
in_flight(const struct testd *d)
{
    return own_metric(d, "calendard_requests_in_flight");
}

/* Polls d's gauge until it reads want, for at most 10 s. */
static void
await_in_flight(const struct testd *d, long long want)
{
    long long v = -1;
    for (int i = 0; i < 500; i++) {
        v = in_flight(d);
        if (v == want)
            return;
        cal_sleep_ms(20);
    }
    ck_abort_msg("calendard_requests_in_flight %lld after 10 s, want %lld", v, want);
}

/* Sends booking i of listing id (night FIRST_DAY + 2i) to d on a socket of
 * its own; returns the socket, its answer unread. */
static int
booking_send_raw(const struct testd *d, uint64_t id, int i)
{
    char body[256], head[512];
    int fd = connect_loopback(d->port);
    int n =
        snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":1}",
                 day(FIRST_DAY + 2 * i), day(FIRST_DAY + 2 * i + 1));
    int h = snprintf(head, sizeof(head),
                     "POST /v1/listings/%" PRIu64 "/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Idempotency-Key: gauge-raw-%d\r\nContent-Length: %d\r\n\r\n",
                     id, i, n);
    write_all(fd, head, (size_t)h);
    write_all(fd, body, (size_t)n);
    return fd;
}

/* The gauge counts the requests admitted whose answer is not yet sent, its
 * own scrape included: a request refused before admission (413) never; HELD
 * bookings waiting for a lock, and one whose client went away meanwhile,
 * until each has run (that one commits all the same); then none is left. */
START_TEST(test_in_flight_gauge_counts_unanswered_requests)
{
    struct testd d;
    struct held_booking held[HELD] = {0};
    pthread_t threads[HELD];
    char err[512];
    int idx;

    start_own_calendard(&d, 2 * HELD);
    await_in_flight(&d, 1);
    {
        /* Refused on its Content-Length, before admission. */
        static const char head[] =
            "POST /v1/listings/1/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Length: 2000000\r\n\r\n";
        char got[64] = "";
        int fd = connect_loopback(d.port);
        write_all(fd, head, strlen(head));
        ck_assert_int_gt(read(fd, got, sizeof(got) - 1), 12);
        ck_assert_msg(strncmp(got, "HTTP/1.1 413", 12) == 0, "%s", got);
        close(fd);
    }
    await_in_flight(&d, 1);
    uint64_t id = create_listing();
    struct db *locker = lock_listing(id, &idx);
    for (int i = 0; i < HELD; i++)
        held_booking_start(&held[i], &threads[i], &d, id, i, "gauge");
    await_in_flight(&d, HELD + 1);
    int fd = booking_send_raw(&d, id, HELD);
    await_in_flight(&d, HELD + 2);
    close(fd); /* its client is gone; it still waits for the lock */
    cal_sleep_ms(300);
    ck_assert_int_eq(in_flight(&d), HELD + 2);
    ck_assert_msg(db_commit(locker, err, sizeof(err)) == CAL_OK, "%s", err);
    expect_held_booked(id, held, threads, false);
    await_in_flight(&d, 1);
    struct db_val p[] = {DB_INT_V(id)};
    ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? AND "
                                      "status = 'confirmed'",
                                      p, 1),
                     HELD + 1);
    db_close(locker);
    ck_assert_int_eq(testd_stop(&d, 30), 0);
    testd_cleanup(&d);
}
END_TEST

/* SIGTERM while requests run (docs/api.md: "requests already running are
 * answered"): a request that arrives meanwhile gets 503 shutting_down with
 * Retry-After; every held booking is answered in full once its lock goes,
 * 201 and committed; and an answer still being sent to a client that reads
 * slowly arrives whole. The daemon exits only then: it stops once the
 * answers are sent, not once they are queued. */
START_TEST(test_sigterm_answers_the_requests_running)
{
    struct testd d;
    struct held_booking held[HELD] = {0};
    pthread_t threads[HELD];
    struct db *locker;
    char err[512];

    start_own_calendard(&d, HELD + 1);
    int slow = slow_search_send(&d);
    uint64_t id = hold_bookings(&d, held, threads, &locker);
    ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
    /* The stop waits for the held bookings, its listener still open. */
    expect_refusal(&d, "shutting_down");
    ck_assert_msg(db_commit(locker, err, sizeof(err)) == CAL_OK, "%s", err);
    expect_held_booked(id, held, threads, true);
    /* Long enough for a daemon that does not wait for the slow reader to
     * have closed its connection. */
    cal_sleep_ms(500);
    expect_slow_search_whole(slow);
    db_close(locker);
    ck_assert_int_eq(testd_wait(&d, 30), 0);
    testd_cleanup(&d);
}
END_TEST

/* The id of a session of calendard's (cal_app) on shard idx whose
 * statement has run for more than 300 ms, i.e. a booking (alone, or a
 * group's compound statement) waiting for the test's lock; 0 for none. Read as the server's
 * administrator: the test's SQL user does not see other users' sessions. */
static long long
waiting_block(int idx)
{
    char out[64];
    ck_assert_int_eq(testenv_sql_admin_value(&env, (size_t)idx,
                                             "SELECT ID FROM information_schema.PROCESSLIST"
                                             " WHERE USER = 'cal_app'"
                                             " AND COMMAND NOT IN ('Sleep', 'Killed')"
                                             " AND TIME_MS > 300"
                                             " ORDER BY ID LIMIT 1",
                                             out, sizeof(out)),
                     0);
    return atoll(out);
}

/* The value of d's calendard_shard_breaker_open for shard idx. */
static long long
breaker_open(const struct testd *d, int idx)
{
    char name[96];
    snprintf(name, sizeof(name), "calendard_shard_breaker_open{shard=\"%d\"}", idx);
    return own_metric(d, name);
}

/* A group commit whose leader's connection is lost fails each of its
 * bookings (503 outcome_unknown: the COMMIT was in the statement), but the
 * shard's breaker counts one lost connection, not one per booking: one KILL
 * of a batch of seven counted seven failures in a row, opened the breaker
 * (five), and the whole shard answered 503 for its cooldown. One lane, and
 * a lock wait longer than the test, so that the bookings queue behind the
 * first while it waits for the test's lock. */
START_TEST(test_a_lost_group_commit_counts_once_against_the_breaker)
{
    const struct testd_set sets[] = {{"shards", "batch_lanes", "1"},
                                     {"shards", "lock_wait_timeout_s", "25"},
                                     {"shards", "read_timeout_ms", "30000"},
                                     {"routing", "request_deadline_ms", "40000"}};
    struct testd d;
    struct held_booking held[HELD] = {0};
    pthread_t threads[HELD];
    char err[512];
    int idx, kills = 0;
    ck_assert_msg(testd_start(&d, &env, sets, CAL_ARRAY_LEN(sets), err, sizeof(err)), "%s", err);
    uint64_t id = create_listing();
    struct db *locker = lock_listing(id, &idx);
    for (int i = 0; i < HELD; i++) {
        held_booking_start(&held[i], &threads[i], &d, id, i, "lostgroup");
        /* The first leads alone and waits for the lock; the rest queue. */
        for (int w = 0; i == 0 && w < 200 && waiting_block(idx) == 0; w++)
            cal_sleep_ms(50);
    }
    cal_sleep_ms(500);
    /* Each batch is killed while it waits, until none has waited for 3 s. */
    for (int idle = 0; idle < 60 && kills < HELD;) {
        long long victim = waiting_block(idx);
        if (victim != 0) {
            char kill_sql[64];
            snprintf(kill_sql, sizeof(kill_sql), "KILL CONNECTION %lld;", victim);
            /* Counted when it was still there to kill. */
            kills += testenv_sql_admin(&env, (size_t)idx, kill_sql) == 0;
            idle = 0;
            cal_sleep_ms(400); /* past TIME_MS of the next batch's wait */
        } else {
            idle++;
            cal_sleep_ms(50);
        }
    }
    for (int i = 0; i < HELD; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_msg(held[i].st == CAL_OK && held[i].resp.status == 503, "booking %d: %ld %s", i,
                      held[i].resp.status, held[i].resp.body ? held[i].resp.body : held[i].err);
        http_response_deinit(&held[i].resp);
    }
    /* Batched: fewer losses than the breaker's threshold (5), which the
     * bookings' failures, counted one each, pass. */
    fprintf(stderr, "lost group commit: %d connections killed for %d bookings\n", kills, HELD);
    ck_assert_msg(kills >= 1 && kills < 5, "%d batches for %d bookings", kills, HELD);
    ck_assert_int_eq(breaker_open(&d, idx), 0);
    ck_assert_msg(db_commit(locker, err, sizeof(err)) == CAL_OK, "%s", err);
    db_close(locker);
    struct http_response resp;
    struct http_client *client = http_client_create();
    const char *headers[] = {"Idempotency-Key: lostgroup-after", NULL};
    char body[256];
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":9}",
             day(FIRST_DAY + 40), day(FIRST_DAY + 41));
    ck_assert_msg(http_requestf(client, "POST", headers, body, &resp, err, sizeof(err),
                                "%s/v1/listings/%" PRIu64 "/reservations", d.url, id) == CAL_OK,
                  "%s", err);
    ck_assert_msg(resp.status == 201, "%ld %s", resp.status, resp.body);
    http_response_deinit(&resp);
    http_client_destroy(client);
    ck_assert_int_eq(testd_stop(&d, 30), 0);
    testd_cleanup(&d);
}
END_TEST

static int
cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* A group commit that meets a lock falls back to one savepoint per booking
 * (in listing order); once one of them has waited out the lock wait (2 s),
 * the rest wait for no lock: one that meets a held lock fails at once (a
 * conflict, retried by its request), the others commit. Tried in turn, each
 * waited a lock wait of its own while the transaction held the others'
 * locks, and a free booking committed only after all of them: here 2 s + 2 s,
 * not 2 s + 5 x 2 s. The test locks six listings for 11 s and books them
 * with two free ones, the first and the last in listing order: both are
 * answered before the locks go; the others commit after. */
START_TEST(test_a_group_commit_waits_out_one_lock_at_most)
{
    const struct testd_set sets[] = {{"shards", "batch_lanes", "1"},
                                     {"routing", "request_deadline_ms", "40000"}};
    struct testd d;
    struct held_booking held[HELD] = {0};
    pthread_t threads[HELD];
    uint64_t ids[HELD];
    char err[512];
    int idx = -1;
    ck_assert_msg(testd_start(&d, &env, sets, CAL_ARRAY_LEN(sets), err, sizeof(err)), "%s", err);
    for (int n = 0; n < HELD;) {
        int64_t epoch;
        uint64_t id = create_listing();
        int shard = owner_shard(id, &epoch);
        if (idx < 0)
            idx = shard;
        if (shard == idx)
            ids[n++] = id;
    }
    qsort(ids, HELD, sizeof(ids[0]), cmp_id); /* ids[0] and ids[HELD - 1] are free */
    struct db *locker = testenv_connect_shard(&env, (size_t)idx, err, sizeof(err));
    ck_assert_msg(locker != NULL, "%s", err);
    ck_assert_msg(db_begin(locker, err, sizeof(err)) == CAL_OK, "%s", err);
    /* One row each, by its key: an IN list over a table of a few rows may
     * be read whole, and lock the free listings too. */
    for (int i = 1; i < HELD - 1; i++) {
        struct db_val p[] = {DB_INT_V(ids[i])};
        ck_assert_int_eq(
            sql_int(locker, "SELECT COUNT(*) FROM listings WHERE listing_id = ? FOR UPDATE", p, 1),
            1);
    }
    uint64_t locked_us = cal_mono_us();
    /* A locked listing's booking leads alone and waits; the rest queue
     * behind it and make the next group commit. */
    held_booking_start(&held[1], &threads[1], &d, ids[1], 1, "lockgroup");
    for (int w = 0; w < 200 && waiting_block(idx) == 0; w++)
        cal_sleep_ms(50);
    for (int i = 0; i < HELD; i++)
        if (i != 1)
            held_booking_start(&held[i], &threads[i], &d, ids[i], i, "lockgroup");
    uint64_t until = locked_us + 11000000;
    while (cal_mono_us() < until)
        cal_sleep_ms(50);
    uint64_t released_us = cal_mono_us();
    ck_assert_msg(db_commit(locker, err, sizeof(err)) == CAL_OK, "%s", err);
    db_close(locker);
    for (int i = 0; i < HELD; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_msg(held[i].st == CAL_OK && held[i].resp.status == 201, "booking %d: %ld %s", i,
                      held[i].resp.status, held[i].resp.body ? held[i].resp.body : held[i].err);
        http_response_deinit(&held[i].resp);
    }
    for (int i = 0; i < HELD; i += HELD - 1) {
        double after = (double)(held[i].done_us - locked_us) / 1e6;
        fprintf(stderr,
                "group commit with locks: free booking %d answered %.1f s after the lock (shard "
                "%d)\n",
                i, after, idx);
        ck_assert_msg(held[i].done_us < released_us,
                      "free booking %d was answered %.1f s after the locks were taken, once they "
                      "were gone",
                      i, after);
    }
    ck_assert_int_eq(testd_stop(&d, 30), 0);
    testd_cleanup(&d);
}
END_TEST

/* A booking made yesterday for a stay from yesterday, whose answer the
 * client lost: a replay today (same key, same body) gets the original
 * reservation, not 400 past_date. The reservation is written with SQL, as
 * calendard would have written it yesterday. */
START_TEST(test_replay_after_check_in_passed)
{
    struct http_response resp;
    uint64_t id = create_listing();
    int64_t epoch, rid = (int64_t)testenv_random48();
    int idx = owner_shard(id, &epoch);
    char hash[17], body[256], hdr[128];
    const char *headers[] = {hdr, NULL};

    booking_request_hash((int32_t)(today - 1), (int32_t)(today + 1), 9, hash);
    {
        struct db_val p[] = {DB_INT_V(rid),
                             DB_INT_V(id),
                             DB_INT_V(testenv_vbucket(id)),
                             DB_INT_V(today - 1 + 719528),
                             DB_INT_V(today + 1 + 719528),
                             DB_CSTR_V("late-replay"),
                             DB_CSTR_V(hash)};
        sql_exec(shard((size_t)idx),
                 "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in,"
                 " check_out, guest_id, status, total_price, currency, idempotency_key,"
                 " request_hash, version) VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), 9,"
                 " 'confirmed', 20000, 'USD', ?, ?, 2)",
                 p, 7);
    }
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":9}",
             day(-1), day(1));
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: late-replay");
    call(&resp, "POST", headers, body, "/v1/listings/%" PRIu64 "/reservations", id);
    json_t *r = expect_json(&resp, 200);
    ck_assert_int_eq(jint(r, "reservation_id"), rid);
    ck_assert_str_eq(jstr(r, "check_in"), day(-1));
    json_decref(r);
    http_response_deinit(&resp);
    /* A new key for the same past stay is still refused. */
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: late-new");
    call(&resp, "POST", headers, body, "/v1/listings/%" PRIu64 "/reservations", id);
    ck_assert_int_eq(resp.status, 400);
    ck_assert_ptr_nonnull(strstr(resp.body, "past_date"));
    http_response_deinit(&resp);
}
END_TEST

START_TEST(test_idempotent_replay)
{
    struct http_response resp;
    uint64_t id = create_listing();
    json_t *a = book_ok(id, "idem-1", FIRST_DAY, FIRST_DAY + 2, 9, 20000), *b;
    int64_t rid = jint(a, "reservation_id");
    struct db_val p[] = {DB_INT_V(id)};

    /* Same key, same body: 200 with the same reservation. */
    book_raw(&resp, id, "idem-1", FIRST_DAY, FIRST_DAY + 2, 9);
    b = expect_json(&resp, 200);
    ck_assert_int_eq(jint(b, "reservation_id"), rid);
    ck_assert_str_eq(jstr(b, "status"), "confirmed");
    ck_assert_int_eq(jint(b, "total_price"), 20000);
    ck_assert_str_eq(jstr(b, "check_in"), day(FIRST_DAY));
    json_decref(b);
    http_response_deinit(&resp);

    /* Same key, different body: 422, nothing booked. */
    book_raw(&resp, id, "idem-1", FIRST_DAY + 5, FIRST_DAY + 7, 9);
    expect_error(&resp, 422, "idempotency_key_reused");
    http_response_deinit(&resp);
    book_raw(&resp, id, "idem-1", FIRST_DAY, FIRST_DAY + 2, 10);
    expect_error(&resp, 422, "idempotency_key_reused");
    http_response_deinit(&resp);
    ck_assert_int_eq(
        count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ?", p, 1), 1);

    /* Keys are per listing: the same key books on another listing. */
    {
        uint64_t other = create_listing();

        json_decref(book_ok(other, "idem-1", FIRST_DAY, FIRST_DAY + 2, 9, 20000));
    }

    /* After a cancel the replay answers the current status. */
    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel", id,
         rid);
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
    book_raw(&resp, id, "idem-1", FIRST_DAY, FIRST_DAY + 2, 9);
    b = expect_json(&resp, 200);
    ck_assert_int_eq(jint(b, "reservation_id"), rid);
    ck_assert_str_eq(jstr(b, "status"), "cancelled");
    json_decref(b);
    http_response_deinit(&resp);
    ck_assert_int_eq(
        count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ?", p, 1), 1);
    json_decref(a);
}
END_TEST

/* A booking refused because its nights were taken is kept under its key:
 * a replay is refused again, even once the nights are free, and the
 * refusal's row holds no nights and is nobody's reservation. */
START_TEST(test_refusal_is_kept_for_replays)
{
    struct http_response resp;
    uint64_t id = create_listing();
    json_t *a = book_ok(id, "kept-a", FIRST_DAY + 1, FIRST_DAY + 3, 1, 20000), *root, *nights;
    struct db_val p[] = {DB_INT_V(id)};
    int64_t refused_id;

    book_raw(&resp, id, "kept-b", FIRST_DAY, FIRST_DAY + 2, 2);
    expect_unavailable(&resp, FIRST_DAY + 1, FIRST_DAY + 1);
    http_response_deinit(&resp);
    {
        const char *ci = day(FIRST_DAY), *co = day(FIRST_DAY + 2);
        struct db_val q[] = {DB_INT_V(id), DB_CSTR_V(ci), DB_CSTR_V(co)};

        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ?"
                                          " AND idempotency_key = 'kept-b' AND status = 'refused'"
                                          " AND check_in = ? AND check_out = ? AND guest_id = 2",
                                          q, 3),
                         1);
    }
    refused_id = count_all_shards("SELECT COALESCE(CAST(MAX(reservation_id) AS SIGNED), 0)"
                                  " FROM reservations"
                                  " WHERE listing_id = ? AND status = 'refused'",
                                  p, 1);
    ck_assert_int_gt(refused_id, 0);

    /* Still taken: the replay names the nights taken now. */
    book_raw(&resp, id, "kept-b", FIRST_DAY, FIRST_DAY + 2, 2);
    expect_unavailable(&resp, FIRST_DAY + 1, FIRST_DAY + 1);
    http_response_deinit(&resp);

    /* Freed: the replay is refused all the same, naming no night. */
    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel", id,
         jint(a, "reservation_id"));
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
    book_raw(&resp, id, "kept-b", FIRST_DAY, FIRST_DAY + 2, 2);
    root = expect_error_json(&resp, 409, "nights_unavailable");
    nights = json_object_get(json_object_get(root, "error"), "nights");
    ck_assert_msg(json_is_array(nights) && json_array_size(nights) == 0, "%s", resp.body);
    ck_assert_msg(strstr(resp.body, "refused before") != NULL, "%s", resp.body);
    json_decref(root);
    http_response_deinit(&resp);

    /* Another body under the key: 422, as for a booked key. */
    book_raw(&resp, id, "kept-b", FIRST_DAY, FIRST_DAY + 3, 2);
    expect_error(&resp, 422, "idempotency_key_reused");
    http_response_deinit(&resp);

    /* The refusal's id is no reservation: not found, not cancellable. */
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64, id,
         refused_id);
    expect_error(&resp, 404, "reservation_not_found");
    http_response_deinit(&resp);
    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel", id,
         refused_id);
    expect_error(&resp, 404, "reservation_not_found");
    http_response_deinit(&resp);

    /* The freed nights book under a new key; the refusal holds none. */
    json_decref(book_ok(id, "kept-c", FIRST_DAY, FIRST_DAY + 2, 3, 20000));
    ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM nights n JOIN reservations r"
                                      " ON r.reservation_id = n.reservation_id"
                                      " WHERE r.listing_id = ? AND r.status = 'refused'",
                                      p, 1),
                     0);
    ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ?"
                                      " AND status = 'refused'",
                                      p, 1),
                     1);
    /* Counted once, for a vbucket move, however often it was replayed. */
    ck_assert_int_eq(
        count_all_shards("SELECT CAST(COALESCE(SUM(version), 0) AS SIGNED) FROM listing_refusals"
                         " WHERE listing_id = ?",
                         p, 1),
        1);

    /* A status this daemon does not know (a newer one's) is never read as
     * a booking: the replay fails rather than answer 200. */
    {
        struct db_val q[] = {DB_INT_V(refused_id)};

        for (size_t i = 0; i < env.nshards; i++)
            sql_exec(shard(i),
                     "UPDATE reservations SET status = 'on_hold' WHERE reservation_id = ?", q, 1);
    }
    book_raw(&resp, id, "kept-b", FIRST_DAY, FIRST_DAY + 2, 2);
    expect_error(&resp, 500, "internal_error");
    http_response_deinit(&resp);
    json_decref(a);
}
END_TEST

START_TEST(test_cancel_frees_nights)
{
    struct http_response resp;
    uint64_t id = create_listing(), other = create_listing();
    json_t *a = book_ok(id, "cancel-1", FIRST_DAY, FIRST_DAY + 3, 5, 30000), *c, *av;
    int64_t rid = jint(a, "reservation_id"), v_booked;

    av = availability(id, FIRST_DAY, FIRST_DAY + 4);
    for (int64_t d = FIRST_DAY; d < FIRST_DAY + 3; d++) {
        expect_night(av, FIRST_DAY, d, "booked", 10000);
    }
    expect_night(av, FIRST_DAY, FIRST_DAY + 3, "available", 10000);
    v_booked = jint(av, "version");
    json_decref(av);

    /* Cancel under the wrong listing or an unknown id: 404, nothing changes. */
    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel",
         other, rid);
    expect_error(&resp, 404, "reservation_not_found");
    http_response_deinit(&resp);
    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel", id,
         rid + 1000003);
    expect_error(&resp, 404, "reservation_not_found");
    http_response_deinit(&resp);
    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel",
         testenv_random48(), rid);
    ck_assert_msg(resp.status == 404, "cancel on unknown listing: %ld %s", resp.status, resp.body);
    http_response_deinit(&resp);

    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel", id,
         rid);
    c = expect_json(&resp, 200);
    ck_assert_int_eq(jint(c, "reservation_id"), rid);
    ck_assert_str_eq(jstr(c, "status"), "cancelled");
    ck_assert_str_eq(jstr(c, "check_in"), day(FIRST_DAY));
    json_decref(c);
    http_response_deinit(&resp);

    /* Again: still 200 cancelled. */
    call(&resp, "POST", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel", id,
         rid);
    c = expect_json(&resp, 200);
    ck_assert_str_eq(jstr(c, "status"), "cancelled");
    json_decref(c);
    http_response_deinit(&resp);

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64, id, rid);
    c = expect_json(&resp, 200);
    ck_assert_str_eq(jstr(c, "status"), "cancelled");
    json_decref(c);
    http_response_deinit(&resp);

    av = availability(id, FIRST_DAY, FIRST_DAY + 4);
    for (int64_t d = FIRST_DAY; d < FIRST_DAY + 4; d++) {
        expect_night(av, FIRST_DAY, d, "available", 10000);
    }
    ck_assert_int_gt(jint(av, "version"), v_booked);
    json_decref(av);

    {
        struct db_val p[] = {DB_INT_V(id), DB_INT_V(rid)};

        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? "
                                          "AND reservation_id = ? AND status = 'cancelled'",
                                          p, 2),
                         1);
        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM nights WHERE listing_id = ? AND "
                                          "status = 'booked' AND reservation_id = ?",
                                          p, 2),
                         0);
    }

    /* Rebooking the freed nights works and makes a new reservation. */
    c = book_ok(id, "cancel-2", FIRST_DAY + 1, FIRST_DAY + 3, 6, 20000);
    ck_assert_int_ne(jint(c, "reservation_id"), rid);
    expect_sql_booking(id, jint(c, "reservation_id"), FIRST_DAY + 1, FIRST_DAY + 3);
    json_decref(c);
    json_decref(a);
}
END_TEST

/* ---- host calendar ---- */

static void calendar(struct http_response *resp, uint64_t id, const char *if_match,
                     const char *bodyfmt, ...) __attribute__((format(printf, 4, 5)));

static void
calendar(struct http_response *resp, uint64_t id, const char *if_match, const char *bodyfmt, ...)
{
    char body[512], hdr[128];
    const char *headers[] = {hdr, NULL};
    va_list ap;

    va_start(ap, bodyfmt);
    vsnprintf(body, sizeof(body), bodyfmt, ap);
    va_end(ap);
    if (if_match != NULL) {
        snprintf(hdr, sizeof(hdr), "If-Match: %s", if_match);
    }
    call(resp, "POST", if_match != NULL ? headers : NULL, body, "/v1/listings/%" PRIu64 "/calendar",
         id);
}

START_TEST(test_block_then_book)
{
    struct http_response resp;
    uint64_t id = create_listing();
    json_t *root, *av;
    int64_t v0, v1;

    av = availability(id, FIRST_DAY, FIRST_DAY + 5);
    v0 = jint(av, "version");
    json_decref(av);

    calendar(&resp, id, NULL, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY + 1), day(FIRST_DAY + 3));
    root = expect_json(&resp, 200);
    ck_assert_int_eq(jint(root, "listing_id"), (int64_t)id);
    v1 = jint(root, "version");
    ck_assert_int_gt(v1, v0);
    json_decref(root);
    http_response_deinit(&resp);

    av = availability(id, FIRST_DAY, FIRST_DAY + 5);
    ck_assert_int_eq(jint(av, "version"), v1);
    expect_night(av, FIRST_DAY, FIRST_DAY, "available", 10000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 1, "blocked", 10000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 2, "blocked", 10000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 3, "available", 10000);
    json_decref(av);

    book_raw(&resp, id, "blocked-1", FIRST_DAY, FIRST_DAY + 4, 1);
    expect_unavailable(&resp, FIRST_DAY + 1, FIRST_DAY + 2);
    http_response_deinit(&resp);
    {
        struct db_val p[] = {DB_INT_V(id)};

        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ?"
                                          " AND status <> 'refused'",
                                          p, 1),
                         0);
        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM nights WHERE listing_id = ? AND "
                                          "status = 'blocked'",
                                          p, 1),
                         2);
    }

    /* Unblock one night: a stay over it books, the other stays blocked. */
    calendar(&resp, id, NULL, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"unblock\"}",
             day(FIRST_DAY + 1), day(FIRST_DAY + 2));
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
    json_decref(book_ok(id, "blocked-2", FIRST_DAY, FIRST_DAY + 2, 1, 20000));
    book_raw(&resp, id, "blocked-3", FIRST_DAY + 2, FIRST_DAY + 4, 1);
    expect_unavailable(&resp, FIRST_DAY + 2, FIRST_DAY + 2);
    http_response_deinit(&resp);

    /* Blocking booked nights is refused, naming them; nothing changes. */
    calendar(&resp, id, NULL, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY - 1), day(FIRST_DAY + 2));
    expect_unavailable(&resp, FIRST_DAY, FIRST_DAY + 1);
    http_response_deinit(&resp);
    av = availability(id, FIRST_DAY - 1, FIRST_DAY + 3);
    expect_night(av, FIRST_DAY - 1, FIRST_DAY - 1, "available", 10000);
    expect_night(av, FIRST_DAY - 1, FIRST_DAY, "booked", 10000);
    expect_night(av, FIRST_DAY - 1, FIRST_DAY + 2, "blocked", 10000);
    json_decref(av);
}
END_TEST

START_TEST(test_set_price)
{
    struct http_response resp;
    uint64_t id = create_listing();
    json_t *av, *r;

    calendar(&resp, id, NULL,
             "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"set_price\",\"price\":15000}",
             day(FIRST_DAY), day(FIRST_DAY + 3));
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);

    av = availability(id, FIRST_DAY, FIRST_DAY + 4);
    expect_night(av, FIRST_DAY, FIRST_DAY, "available", 15000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 2, "available", 15000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 3, "available", 10000);
    json_decref(av);

    /* The booking's total sums the nightly prices. */
    r = book_ok(id, "price-1", FIRST_DAY + 2, FIRST_DAY + 4, 1, 25000);
    json_decref(r);
    av = availability(id, FIRST_DAY + 2, FIRST_DAY + 4);
    expect_night(av, FIRST_DAY + 2, FIRST_DAY + 2, "booked", 15000);
    expect_night(av, FIRST_DAY + 2, FIRST_DAY + 3, "booked", 10000);
    json_decref(av);
}
END_TEST

START_TEST(test_calendar_validation)
{
    struct http_response resp;
    uint64_t id = create_listing();
    char d0[11], d2[11], y2[5];
    char body[20][256];
    const char *codes[20];
    size_t n = 0;

    snprintf(d0, sizeof(d0), "%s", day(FIRST_DAY));
    snprintf(d2, sizeof(d2), "%s", day(FIRST_DAY + 2));
    snprintf(y2, sizeof(y2), "%.4s", day(800));
#define BAD(c, ...) (snprintf(body[n], sizeof(body[n]), __VA_ARGS__), codes[n++] = (c))
    BAD("invalid_field", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"paint\"}", d0, d2);
    BAD("invalid_field", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\",\"price\":5}", d0,
        d2);
    BAD("invalid_field", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"unblock\",\"price\":5}", d0,
        d2);
    BAD("invalid_field", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"set_price\",\"price\":-5}",
        d0, d2);
    BAD("invalid_field", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"set_price\",\"price\":\"5\"}",
        d0, d2);
    BAD("missing_field", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"set_price\"}", d0, d2);
    BAD("missing_field", "{\"from\":\"%s\",\"to\":\"%s\"}", d0, d2);
    BAD("missing_field", "{\"to\":\"%s\",\"action\":\"block\"}", d2);
    BAD("unknown_field", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\",\"why\":1}", d0, d2);
    BAD("invalid_date", "{\"from\":\"%s-02-30\",\"to\":\"%s-03-03\",\"action\":\"block\"}", y2, y2);
    BAD("invalid_range", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}", d2, d0);
    BAD("invalid_range", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}", d0, d0);
    BAD("invalid_json", "{\"from\":\"%s\",", d0);
#undef BAD
    for (size_t i = 0; i < n; i++) {
        char code[64];

        calendar(&resp, id, NULL, "%s", body[i]);
        http_response_error_code(&resp, code, sizeof(code));
        if (resp.status == 400 && strcmp(code, codes[i]) == 0) {
            expect_error(&resp, 400, codes[i]);
        } else {
            note_failure("case %zu %s: got %ld %s, want 400 %s", i, body[i], resp.status, code,
                         codes[i]);
        }
        http_response_deinit(&resp);
    }
    calendar(&resp, testenv_random48(), NULL,
             "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}", d0, d2);
    expect_error(&resp, 404, "listing_not_found");
    http_response_deinit(&resp);

    /* Nothing changed: the first nights are still bookable. */
    json_decref(book_ok(id, "after-bad-calendar", FIRST_DAY, FIRST_DAY + 2, 1, 20000));
    expect_no_failures();
}
END_TEST

START_TEST(test_if_match)
{
    struct http_response resp;
    uint64_t id = create_listing();
    json_t *av, *root;
    char etag[64], stale[64];
    int64_t v0, v1;

    av = availability(id, FIRST_DAY, FIRST_DAY + 3);
    v0 = jint(av, "version");
    json_decref(av);
    snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", v0);

    calendar(&resp, id, etag, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY), day(FIRST_DAY + 1));
    root = expect_json(&resp, 200);
    v1 = jint(root, "version");
    ck_assert_int_gt(v1, v0);
    json_decref(root);
    http_response_deinit(&resp);

    /* The old ETag is now stale: 412 and no change. */
    snprintf(stale, sizeof(stale), "%s", etag);
    calendar(&resp, id, stale, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY + 1), day(FIRST_DAY + 2));
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    calendar(&resp, id, "\"999999999\"", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"unblock\"}",
             day(FIRST_DAY), day(FIRST_DAY + 1));
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    calendar(&resp, id, "\"0\"", "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"unblock\"}",
             day(FIRST_DAY), day(FIRST_DAY + 1));
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);

    av = availability(id, FIRST_DAY, FIRST_DAY + 3);
    ck_assert_int_eq(jint(av, "version"), v1);
    expect_night(av, FIRST_DAY, FIRST_DAY, "blocked", 10000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 1, "available", 10000);
    json_decref(av);

    /* The current ETag passes. */
    snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", v1);
    calendar(&resp, id, etag, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"unblock\"}",
             day(FIRST_DAY), day(FIRST_DAY + 1));
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);

    /* Over a booked night the precondition is evaluated first: a stale
     * ETag answers 412, the current one 409 naming the night. */
    json_decref(book_ok(id, "if-match-booked", FIRST_DAY + 2, FIRST_DAY + 3, 7, 10000));
    calendar(&resp, id, etag, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY + 1), day(FIRST_DAY + 3));
    expect_error(&resp, 412, "version_mismatch");
    http_response_deinit(&resp);
    av = availability(id, FIRST_DAY, FIRST_DAY + 3);
    snprintf(etag, sizeof(etag), "\"%" PRId64 "\"", jint(av, "version"));
    json_decref(av);
    calendar(&resp, id, etag, "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY + 1), day(FIRST_DAY + 3));
    expect_unavailable(&resp, FIRST_DAY + 2, FIRST_DAY + 2);
    http_response_deinit(&resp);
    av = availability(id, FIRST_DAY, FIRST_DAY + 3);
    expect_night(av, FIRST_DAY, FIRST_DAY + 1, "available", 10000);
    json_decref(av);
}
END_TEST

/* ---- availability ---- */

START_TEST(test_availability)
{
    struct http_response resp;
    uint64_t id = create_listing_with(7000, 1, 30);
    json_t *av, *r;
    int64_t v0, v1;

    av = availability(id, FIRST_DAY, FIRST_DAY + 10);
    v0 = jint(av, "version");
    for (int64_t d = FIRST_DAY; d < FIRST_DAY + 10; d++) {
        expect_night(av, FIRST_DAY, d, "available", 7000);
    }
    json_decref(av);

    r = book_ok(id, "avail-1", FIRST_DAY + 4, FIRST_DAY + 6, 1, 14000);
    v1 = jint(r, "version");
    json_decref(r);
    av = availability(id, FIRST_DAY, FIRST_DAY + 10);
    ck_assert_int_gt(jint(av, "version"), v0);
    ck_assert_int_eq(jint(av, "version"), v1);
    expect_night(av, FIRST_DAY, FIRST_DAY + 3, "available", 7000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 4, "booked", 7000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 5, "booked", 7000);
    expect_night(av, FIRST_DAY, FIRST_DAY + 6, "available", 7000);
    json_decref(av);

    /* 366 nights is the maximum range. */
    json_decref(availability(id, FIRST_DAY, FIRST_DAY + 366));
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=%s&to=%s", id,
         day(FIRST_DAY), day(FIRST_DAY + 367));
    expect_error(&resp, 400, "invalid_range");
    http_response_deinit(&resp);

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=%s", id,
         day(FIRST_DAY));
    expect_error(&resp, 400, "invalid_query");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?to=%s", id,
         day(FIRST_DAY));
    expect_error(&resp, 400, "invalid_query");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability", id);
    expect_error(&resp, 400, "invalid_query");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=yesterday&to=%s", id,
         day(FIRST_DAY));
    expect_error(&resp, 400, "invalid_query");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=%s&to=2027-02-30",
         id, day(FIRST_DAY));
    expect_error(&resp, 400, "invalid_query");
    http_response_deinit(&resp);

    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=%s&to=%s",
         testenv_random48(), day(FIRST_DAY), day(FIRST_DAY + 2));
    expect_error(&resp, 404, "listing_not_found");
    http_response_deinit(&resp);
}
END_TEST

/* ---- concurrency ---- */

struct racer {
    pthread_barrier_t *barrier;
    const char *method;
    char url[512];
    char hdr[320]; /* one request header, or "" */
    char key[64];
    char body[256];
    long status;
    int64_t reservation_id;
    int64_t version;
    char code[64];
    char err[256];
};

static void *
racer_run(void *arg)
{
    struct racer *r = arg;
    struct http_client *client = http_client_create();
    struct http_response resp;
    const char *headers[] = {r->hdr[0] != '\0' ? r->hdr : NULL, NULL};
    json_t *root;

    pthread_barrier_wait(r->barrier);
    if (client == NULL || http_request(client, r->method, r->url, headers, r->body, strlen(r->body),
                                       30000, &resp, r->err, sizeof(r->err)) != CAL_OK) {
        r->status = -1;
        http_client_destroy(client);
        return NULL;
    }
    r->status = resp.status;
    root = http_response_json(&resp);
    if (root != NULL) {
        r->reservation_id = (int64_t)json_integer_value(json_object_get(root, "reservation_id"));
        r->version = (int64_t)json_integer_value(json_object_get(root, "version"));
        json_decref(root);
    }
    http_response_error_code(&resp, r->code, sizeof(r->code));
    http_response_deinit(&resp);
    http_client_destroy(client);
    return NULL;
}

/* Starts every prepared racer at once (a barrier) and waits for all. */
static void
race_run(struct racer *racers)
{
    pthread_t threads[RACE_THREADS];
    pthread_barrier_t barrier;

    pthread_barrier_init(&barrier, NULL, RACE_THREADS);
    for (int i = 0; i < RACE_THREADS; i++) {
        racers[i].barrier = &barrier;
        ck_assert_int_eq(pthread_create(&threads[i], NULL, racer_run, &racers[i]), 0);
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < RACE_THREADS; i++) {
        ck_assert_msg(racers[i].status > 0, "racer %d: %s", i, racers[i].err);
    }
}

/* Runs RACE_THREADS concurrent bookings of [ci, co); same key for all when
 * same_key, else one key each. shift: racer i books [ci + i, co + i). */
static void
race(struct racer *racers, uint64_t id, int same_key, int shift, int64_t ci, int64_t co)
{
    char base[32];

    unique_key(base, sizeof(base), "race");
    for (int i = 0; i < RACE_THREADS; i++) {
        struct racer *r = &racers[i];

        memset(r, 0, sizeof(*r));
        r->method = "POST";
        snprintf(r->url, sizeof(r->url), "%s/v1/listings/%" PRIu64 "/reservations",
                 env.calendard_url, id);
        if (same_key) {
            snprintf(r->key, sizeof(r->key), "%s", base);
        } else {
            snprintf(r->key, sizeof(r->key), "%s-%d", base, i);
        }
        snprintf(r->hdr, sizeof(r->hdr), "Idempotency-Key: %s", r->key);
        snprintf(r->body, sizeof(r->body),
                 "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":77}",
                 day(ci + (shift ? i : 0)), day(co + (shift ? i : 0)));
    }
    race_run(racers);
}

START_TEST(test_booking_race)
{
    struct racer racers[RACE_THREADS];
    uint64_t id = create_listing();
    int created = 0, conflicts = 0;
    int64_t rid = 0;

    race(racers, id, 0, 0, FIRST_DAY + 1, FIRST_DAY + 4);
    for (int i = 0; i < RACE_THREADS; i++) {
        if (racers[i].status == 201) {
            created++;
            rid = racers[i].reservation_id;
        } else if (racers[i].status == 409 && strcmp(racers[i].code, "nights_unavailable") == 0) {
            conflicts++;
        } else {
            ck_abort_msg("racer %d: status %ld code %s", i, racers[i].status, racers[i].code);
        }
    }
    ck_assert_int_eq(created, 1);
    ck_assert_int_eq(conflicts, RACE_THREADS - 1);
    ck_assert_int_gt(rid, 0);
    {
        struct db_val p[] = {DB_INT_V(id)};

        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? "
                                          "AND status = 'confirmed'",
                                          p, 1),
                         1);
        /* Each loser's refusal is kept under its own key. */
        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? "
                                          "AND status = 'refused'",
                                          p, 1),
                         RACE_THREADS - 1);
    }
    expect_sql_booking(id, rid, FIRST_DAY + 1, FIRST_DAY + 4);
}
END_TEST

START_TEST(test_idempotent_race)
{
    struct racer racers[RACE_THREADS];
    uint64_t id = create_listing();
    int created = 0;
    int64_t rid = 0;

    race(racers, id, 1, 0, FIRST_DAY, FIRST_DAY + 2);
    for (int i = 0; i < RACE_THREADS; i++) {
        ck_assert_msg(racers[i].status == 201 || racers[i].status == 200,
                      "racer %d: status %ld code %s", i, racers[i].status, racers[i].code);
        created += racers[i].status == 201;
        if (rid == 0) {
            rid = racers[i].reservation_id;
        }
        ck_assert_msg(racers[i].reservation_id == rid,
                      "racer %d got reservation %" PRId64 ", racer 0 got %" PRId64, i,
                      racers[i].reservation_id, rid);
    }
    ck_assert_int_eq(created, 1);
    ck_assert_int_gt(rid, 0);
    {
        struct db_val p[] = {DB_INT_V(id), DB_STR_V(racers[0].key, strlen(racers[0].key))};

        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? "
                                          "AND idempotency_key = ?",
                                          p, 2),
                         1);
    }
    expect_sql_booking(id, rid, FIRST_DAY, FIRST_DAY + 2);
}
END_TEST

START_TEST(test_key_reuse_race)
{
    struct racer racers[RACE_THREADS];
    uint64_t id = create_listing();
    int created = 0, reused = 0, winner = -1;

    /* One key, sixteen different stays at once: one takes effect, the rest 422. */
    race(racers, id, 1, 1, FIRST_DAY, FIRST_DAY + 1);
    for (int i = 0; i < RACE_THREADS; i++) {
        if (racers[i].status == 201) {
            created++;
            winner = i;
        } else if (racers[i].status == 422 &&
                   strcmp(racers[i].code, "idempotency_key_reused") == 0) {
            reused++;
        } else {
            ck_abort_msg("racer %d: status %ld code %s", i, racers[i].status, racers[i].code);
        }
    }
    ck_assert_int_eq(created, 1);
    ck_assert_int_eq(reused, RACE_THREADS - 1);
    {
        struct db_val p[] = {DB_INT_V(id)};

        ck_assert_int_eq(
            count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ?", p, 1), 1);
    }
    expect_sql_booking(id, racers[winner].reservation_id, FIRST_DAY + winner,
                       FIRST_DAY + winner + 1);
}
END_TEST

START_TEST(test_if_match_race)
{
    struct racer racers[RACE_THREADS];
    uint64_t id = create_listing();
    json_t *av = availability(id, FIRST_DAY, FIRST_DAY + RACE_THREADS);
    int64_t v0 = jint(av, "version");
    int ok = 0, stale = 0, winner = -1;

    json_decref(av);
    /* Sixteen hosts edit different nights from the same calendar version:
     * the version is the lock, so exactly one edit lands. */
    for (int i = 0; i < RACE_THREADS; i++) {
        struct racer *r = &racers[i];

        memset(r, 0, sizeof(*r));
        r->method = "POST";
        snprintf(r->url, sizeof(r->url), "%s/v1/listings/%" PRIu64 "/calendar", env.calendard_url,
                 id);
        snprintf(r->hdr, sizeof(r->hdr), "If-Match: \"%" PRId64 "\"", v0);
        snprintf(r->body, sizeof(r->body), "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
                 day(FIRST_DAY + i), day(FIRST_DAY + i + 1));
    }
    race_run(racers);
    for (int i = 0; i < RACE_THREADS; i++) {
        if (racers[i].status == 200) {
            ok++;
            winner = i;
        } else if (racers[i].status == 412 && strcmp(racers[i].code, "version_mismatch") == 0) {
            stale++;
        } else {
            ck_abort_msg("racer %d: status %ld code %s", i, racers[i].status, racers[i].code);
        }
    }
    ck_assert_int_eq(ok, 1);
    ck_assert_int_eq(stale, RACE_THREADS - 1);
    av = availability(id, FIRST_DAY, FIRST_DAY + RACE_THREADS);
    ck_assert_int_eq(jint(av, "version"), racers[winner].version);
    for (int i = 0; i < RACE_THREADS; i++) {
        expect_night(av, FIRST_DAY, FIRST_DAY + i, i == winner ? "blocked" : "available", 10000);
    }
    json_decref(av);
}
END_TEST

START_TEST(test_listing_create_race)
{
    struct racer racers[RACE_THREADS];
    uint64_t id = testenv_random48();
    int created = 0, updated = 0;

    for (int i = 0; i < RACE_THREADS; i++) {
        struct racer *r = &racers[i];

        memset(r, 0, sizeof(*r));
        r->method = "PUT";
        snprintf(r->url, sizeof(r->url), "%s/v1/listings/%" PRIu64, env.calendard_url, id);
        snprintf(r->body, sizeof(r->body),
                 "{\"default_price\":%d,\"currency\":\"USD\",\"min_nights\":1,"
                 "\"max_nights\":30}",
                 1000 + i);
    }
    race_run(racers);
    for (int i = 0; i < RACE_THREADS; i++) {
        ck_assert_msg(racers[i].status == 201 || racers[i].status == 200,
                      "racer %d: status %ld code %s", i, racers[i].status, racers[i].code);
        created += racers[i].status == 201;
        updated += racers[i].status == 200;
    }
    ck_assert_int_eq(created, 1);
    ck_assert_int_eq(updated, RACE_THREADS - 1);
    {
        struct db_val p[] = {DB_INT_V(id)};

        ck_assert_int_eq(
            count_all_shards("SELECT COUNT(*) FROM listings WHERE listing_id = ?", p, 1), 1);
    }
}
END_TEST

/* Sixteen PUTs of one listing with the same If-Match: the version check
 * and the write are one statement, so exactly one lands. */
START_TEST(test_put_listing_if_match_race)
{
    struct racer racers[RACE_THREADS];
    uint64_t id = create_listing();
    int64_t v0 = listing_version(id, 10000);
    int ok = 0, stale = 0, winner = -1;

    for (int i = 0; i < RACE_THREADS; i++) {
        struct racer *r = &racers[i];

        memset(r, 0, sizeof(*r));
        r->method = "PUT";
        snprintf(r->url, sizeof(r->url), "%s/v1/listings/%" PRIu64, env.calendard_url, id);
        snprintf(r->hdr, sizeof(r->hdr), "If-Match: \"%" PRId64 "\"", v0);
        snprintf(r->body, sizeof(r->body),
                 "{\"default_price\":%d,\"currency\":\"USD\",\"min_nights\":1,"
                 "\"max_nights\":30}",
                 20000 + i);
    }
    race_run(racers);
    for (int i = 0; i < RACE_THREADS; i++) {
        if (racers[i].status == 200) {
            ok++;
            winner = i;
        } else if (racers[i].status == 412 && strcmp(racers[i].code, "version_mismatch") == 0) {
            stale++;
        } else {
            ck_abort_msg("racer %d: status %ld code %s", i, racers[i].status, racers[i].code);
        }
    }
    ck_assert_int_eq(ok, 1);
    ck_assert_int_eq(stale, RACE_THREADS - 1);
    ck_assert_int_eq(racers[winner].version, v0 + 1);
    ck_assert_int_eq(listing_version(id, 20000 + winner), v0 + 1);
}
END_TEST

/* ---- fencing ---- */

/* Copies every row of vbucket vb from shard src to dst, as a move would
 * before its cutover. Returns the number of listings copied. */
static int64_t
copy_vbucket_rows(struct db *src, struct db *dst, unsigned vb)
{
    struct db_val p[] = {DB_INT_V(vb)};
    struct db_stmt *stmt = NULL;
    struct db_val c[12];
    char err[512];
    int64_t listings = 0;

    stmt = sql_select(src,
                      "SELECT listing_id, vbucket, version, rules_version, default_price, "
                      "currency, min_nights, max_nights FROM listings WHERE vbucket = ?",
                      p, 1);
    while (db_fetch(stmt, c, 8, err, sizeof(err)) == 1) {
        sql_exec(dst,
                 "INSERT INTO listings (listing_id, vbucket, version, rules_version, "
                 "default_price, currency, min_nights, max_nights) VALUES (?,?,?,?,?,?,?,?)",
                 c, 8);
        listings++;
    }
    stmt = sql_select(src,
                      "SELECT listing_id, TO_DAYS(night), status, reservation_id, price, "
                      "version, vbucket FROM nights WHERE vbucket = ?",
                      p, 1);
    while (db_fetch(stmt, c, 7, err, sizeof(err)) == 1) {
        sql_exec(dst,
                 "INSERT INTO nights (listing_id, night, status, reservation_id, price, version, "
                 "vbucket) VALUES (?, FROM_DAYS(?), ?, ?, ?, ?, ?)",
                 c, 7);
    }
    stmt = sql_select(src,
                      "SELECT reservation_id, listing_id, vbucket, TO_DAYS(check_in), "
                      "TO_DAYS(check_out), guest_id, status, total_price, currency, "
                      "idempotency_key, request_hash, version FROM reservations "
                      "WHERE vbucket = ?",
                      p, 1);
    while (db_fetch(stmt, c, 12, err, sizeof(err)) == 1) {
        sql_exec(dst,
                 "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, "
                 "check_out, guest_id, status, total_price, currency, idempotency_key, "
                 "request_hash, version) VALUES (?,?,?,FROM_DAYS(?),FROM_DAYS(?),?,?,?,?,?,?,?)",
                 c, 12);
    }
    stmt = sql_select(
        src, "SELECT listing_id, vbucket, version FROM listing_refusals WHERE vbucket = ?", p, 1);
    while (db_fetch(stmt, c, 3, err, sizeof(err)) == 1)
        sql_exec(dst, "INSERT INTO listing_refusals (listing_id, vbucket, version) VALUES (?,?,?)",
                 c, 3);
    return listings;
}

START_TEST(test_fencing_moved_vbucket)
{
    struct http_response resp;
    uint64_t id = create_listing();
    unsigned vb = testenv_vbucket(id);
    int64_t epoch, epoch2, rid1, rid2, new_shard_id;
    int old_idx, new_idx;
    struct db *src, *dst;
    json_t *r;
    char err[512];

    ck_assert_msg(env.nshards >= 2, "the fencing test needs two shards, stack has %zu",
                  env.nshards);
    old_idx = owner_shard(id, &epoch);
    new_idx = (old_idx + 1) % (int)env.nshards;
    src = shard((size_t)old_idx);
    dst = shard((size_t)new_idx);
    {
        struct db_val p[] = {DB_INT_V(vb)};

        ck_assert_int_eq(sql_int(src, "SELECT epoch FROM vbucket_owner WHERE vbucket = ?", p, 1),
                         epoch);
        ck_assert_int_eq(sql_int(dst, "SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", p, 1),
                         0);
    }

    /* Warm the daemon's shard map on the old owner with a real write. */
    r = book_ok(id, "fence-1", FIRST_DAY, FIRST_DAY + 2, 1, 20000);
    rid1 = jint(r, "reservation_id");
    json_decref(r);

    /* The move: the source's owner row is held exclusively while rows are
     * copied and ownership passes to the target with epoch + 1. */
    ck_assert_msg(db_begin(src, err, sizeof(err)) == CAL_OK, "BEGIN: %s", err);
    {
        struct db_val p[] = {DB_INT_V(vb)};

        ck_assert_int_eq(
            sql_int(src, "SELECT epoch FROM vbucket_owner WHERE vbucket = ? FOR UPDATE", p, 1),
            epoch);
        ck_assert_int_ge(copy_vbucket_rows(src, dst, vb), 1);
        sql_exec(src, "DELETE FROM vbucket_owner WHERE vbucket = ?", p, 1);
    }
    {
        struct db_val p[] = {DB_INT_V(vb), DB_INT_V(epoch + 1)};

        sql_exec(dst, "INSERT INTO vbucket_owner (vbucket, epoch) VALUES (?, ?)", p, 2);
    }
    ck_assert_msg(db_commit(src, err, sizeof(err)) == CAL_OK, "commit: %s", err);

    /* Mid-move: the shards moved ownership, the catalog still names the old
     * shard. The daemon is fenced off on the old shard and cannot find a
     * new owner: it must refuse (503, retry later) and write nowhere. */
    book_raw(&resp, id, "fence-2", FIRST_DAY + 3, FIRST_DAY + 5, 1);
    {
        char code[64];

        /* The contract names shard_unavailable; calendard says vbucket_moving. */
        http_response_error_code(&resp, code, sizeof(code));
        ck_assert_msg(strcmp(code, "shard_unavailable") == 0 || strcmp(code, "vbucket_moving") == 0,
                      "mid-move booking: %ld %s", resp.status, resp.body);
        expect_error(&resp, 503, code);
        ck_assert_msg(resp.retry_after[0] != '\0', "503 without Retry-After");
    }
    http_response_deinit(&resp);
    {
        struct db_val p[] = {DB_INT_V(id), DB_CSTR_V("fence-2")};

        ck_assert_int_eq(count_all_shards("SELECT COUNT(*) FROM reservations WHERE listing_id = ? "
                                          "AND idempotency_key = ?",
                                          p, 2),
                         0);
    }
    {
        struct db_conf conf;
        struct db_val q[2];

        /* The target's shard_id in the catalog, by its port and database. */
        memset(&conf, 0, sizeof(conf));
        ck_assert_msg(db_conf_parse_dsn(&conf, env.shard_dsns[new_idx], err, sizeof(err)) == CAL_OK,
                      "%s", err);
        q[0] = DB_INT_V(conf.port);
        q[1] = DB_CSTR_V(conf.database);
        new_shard_id =
            sql_int(catalog(), "SELECT shard_id FROM shards WHERE port = ? AND db_name = ?", q, 2);
    }
    {
        struct db_val p[] = {DB_INT_V(new_shard_id), DB_INT_V(epoch + 1), DB_INT_V(vb),
                             DB_INT_V(epoch)};
        struct db_stmt *stmt = NULL;

        stmt = sql_select(catalog(),
                          "UPDATE vbuckets SET shard_id = ?, epoch = ? WHERE vbucket = ? AND "
                          "epoch = ?",
                          p, 4);
        ck_assert_int_eq((int64_t)db_affected_rows(stmt), 1);
    }
    ck_assert_int_eq(owner_shard(id, &epoch2), new_idx);
    ck_assert_int_eq(epoch2, epoch + 1);

    /* A search that misses the cache, before anything reloads the daemon's
     * map, reads the old shard first: it no longer owns the vbucket, and the
     * listing is read again on the new owner after one reload instead of
     * answered vbucket_moving. The other listing is answered beside it. The
     * mid-move booking above reloaded the map a moment ago (still the old
     * one): the search's own reload must not be skipped for it. */
    {
        uint64_t other = create_listing();
        char body[256];
        json_t *doc, *res, *moved;

        snprintf(body, sizeof(body),
                 "{\"listing_ids\":[%" PRIu64 ",%" PRIu64 "],\"check_in\":\"%s\","
                 "\"check_out\":\"%s\"}",
                 id, other, day(FIRST_DAY), day(FIRST_DAY + 2));
        call(&resp, "POST", NULL, body, "/v1/availability/search");
        doc = expect_json(&resp, 200);
        http_response_deinit(&resp);
        res = json_object_get(doc, "results");
        ck_assert_uint_eq(json_array_size(res), 2);
        moved = json_array_get(res, 0);
        ck_assert_int_eq(jint(moved, "listing_id"), (int64_t)id);
        ck_assert_msg(json_object_get(moved, "error") == NULL, "moved listing answered %s",
                      json_string_value(json_object_get(moved, "error")));
        ck_assert(json_is_false(json_object_get(moved, "available"))); /* fence-1's nights */
        ck_assert_int_eq(jint(json_array_get(res, 1), "listing_id"), (int64_t)other);
        ck_assert(json_is_true(json_object_get(json_array_get(res, 1), "available")));
        json_decref(doc);
    }

    /* The daemon may still route to the old shard: fenced off, it refreshes
     * its map and retries on the new owner. The refused key is still free. */
    r = book_ok(id, "fence-2", FIRST_DAY + 3, FIRST_DAY + 5, 1, 20000);
    rid2 = jint(r, "reservation_id");
    json_decref(r);
    {
        struct db_val p[] = {DB_INT_V(id), DB_INT_V(rid2)};

        ck_assert_int_eq(sql_int(dst,
                                 "SELECT COUNT(*) FROM reservations WHERE listing_id = ? AND "
                                 "reservation_id = ? AND status = 'confirmed'",
                                 p, 2),
                         1);
        ck_assert_int_eq(sql_int(src,
                                 "SELECT COUNT(*) FROM reservations WHERE listing_id = ? AND "
                                 "reservation_id = ?",
                                 p, 2),
                         0);
        ck_assert_int_eq(sql_int(dst,
                                 "SELECT COUNT(*) FROM nights WHERE listing_id = ? AND "
                                 "reservation_id = ? AND status = 'booked'",
                                 p, 2),
                         2);
        ck_assert_int_eq(sql_int(src,
                                 "SELECT COUNT(*) FROM nights WHERE listing_id = ? AND "
                                 "reservation_id = ?",
                                 p, 2),
                         0);
    }
    {
        struct db_val p[] = {DB_INT_V(id)};

        /* The old shard kept only what it had before the move. */
        ck_assert_int_eq(
            sql_int(src, "SELECT COUNT(*) FROM reservations WHERE listing_id = ?", p, 1), 1);
    }

    /* Reads and the earlier booking follow the move too. */
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/reservations/%" PRId64, id, rid1);
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
    r = availability(id, FIRST_DAY, FIRST_DAY + 5);
    expect_night(r, FIRST_DAY, FIRST_DAY, "booked", 10000);
    expect_night(r, FIRST_DAY, FIRST_DAY + 4, "booked", 10000);
    expect_night(r, FIRST_DAY, FIRST_DAY + 2, "available", 10000);
    json_decref(r);
    /* A conflicting booking is judged on the new owner. */
    book_raw(&resp, id, "fence-3", FIRST_DAY + 1, FIRST_DAY + 3, 1);
    expect_unavailable(&resp, FIRST_DAY + 1, FIRST_DAY + 1);
    http_response_deinit(&resp);
    /* Finish the move as calendar-rebalance does: the old shard forgets the
     * vbucket, so a later verify of the stack finds no stale copy. */
    {
        struct db_val p[] = {DB_INT_V(vb)};

        sql_exec(src, "DELETE FROM nights WHERE vbucket = ?", p, 1);
        sql_exec(src, "DELETE FROM reservations WHERE vbucket = ?", p, 1);
        sql_exec(src, "DELETE FROM listing_refusals WHERE vbucket = ?", p, 1);
        sql_exec(src, "DELETE FROM listings WHERE vbucket = ?", p, 1);
    }
}
END_TEST

/* Unchecked teardown: runs in this process even when the test crashed. */
static void
all_writable(void)
{
    for (size_t i = 0; i < env.nshards; i++)
        testenv_set_global(&env, i, "read_only", 0);
}

/* A shard's server fenced read-only (an old primary whose replacement the
 * catalog does not name yet) refuses writes: 503 shard_unavailable after
 * the retries, never a 500; writable again, the same key books. */
START_TEST(test_read_only_shard_is_unavailable)
{
    struct http_response resp;
    char key[64];
    int64_t epoch;
    uint64_t id;
    do
        id = create_listing();
    while (owner_shard(id, &epoch) != 1);
    unique_key(key, sizeof(key), "ro");
    ck_assert_int_eq(testenv_set_global(&env, 1, "read_only", 1), 0);
    book_raw(&resp, id, key, 10, 12, 7);
    ck_assert_int_eq(testenv_set_global(&env, 1, "read_only", 0), 0);
    expect_error(&resp, 503, "shard_unavailable");
    ck_assert_msg(strstr(resp.body, "read-only") != NULL, "%s", resp.body);
    http_response_deinit(&resp);
    book_raw(&resp, id, key, 10, 12, 7);
    json_decref(expect_json(&resp, 201));
    http_response_deinit(&resp);
}
END_TEST

/* Every reservation id comes from a block the daemon took from the
 * catalog's id_blocks (as cal_app, whose only catalog write that is), so
 * no daemon makes one twice, on any shard. */
START_TEST(test_reservation_ids_come_from_the_catalog)
{
    char key[64];
    int64_t ids[4];
    for (int i = 0; i < 4; i++) {
        uint64_t listing = create_listing();
        unique_key(key, sizeof(key), "ids");
        json_t *r = book_ok(listing, key, 10, 12, 7, 20000);
        ids[i] = jint(r, "reservation_id");
        json_decref(r);
    }
    int64_t next =
        sql_int(catalog(), "SELECT next_id FROM id_blocks WHERE name = 'reservation'", NULL, 0);
    for (int i = 0; i < 4; i++) {
        /* schema/catalog/003_id_blocks.sql's first id */
        ck_assert_int_ge(ids[i], 7250000000000000LL);
        ck_assert_int_lt(ids[i], next);
        for (int k = 0; k < i; k++)
            ck_assert_int_ne(ids[i], ids[k]);
    }
}
END_TEST

/* An escaped slash or NUL in a path is not decoded into one: decoded, a
 * slash would add a segment (a calendar write behind a path a proxy saw as
 * a listing's) and a NUL cut the path short. They make the id malformed. */
START_TEST(test_escaped_slash_and_nul_are_not_path_syntax)
{
    struct http_response resp;
    uint64_t id = create_listing();
    char body[128];
    snprintf(body, sizeof(body), "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}",
             day(FIRST_DAY), day(FIRST_DAY + 1));
    call(&resp, "POST", NULL, body, "/v1/listings/%" PRIu64 "%%2Fcalendar", id);
    expect_error(&resp, 405, "method_not_allowed"); /* the listing's path: no POST */
    http_response_deinit(&resp);
    call(&resp, "PUT", NULL, "{}", "/v1/listings/%" PRIu64 "%%2Fcalendar", id);
    expect_error(&resp, 400, "invalid_listing_id");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "%%00/refunds", id);
    expect_error(&resp, 404, "not_found");
    http_response_deinit(&resp);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "%%00", id);
    expect_error(&resp, 400, "invalid_listing_id");
    http_response_deinit(&resp);
    /* Other escapes are decoded: %34%32... is the id's digits. */
    char escaped[64] = "", digits[24];
    snprintf(digits, sizeof(digits), "%" PRIu64, id);
    for (size_t i = 0; digits[i] != '\0'; i++)
        snprintf(escaped + strlen(escaped), sizeof(escaped) - strlen(escaped), "%%%02X",
                 (unsigned)digits[i]);
    call(&resp, "GET", NULL, NULL, "/v1/listings/%s", escaped);
    json_decref(expect_json(&resp, 200));
    http_response_deinit(&resp);
}
END_TEST

/* A search tells why a stay cannot be booked in the order a booking of it
 * is refused: too short for the listing's rules before nights taken. */
/* A search of one listing over [today + from, today + to): its result, an
 * object (*root holds the answer; the caller frees it). */
static json_t *
search_one(uint64_t id, int from, int to, json_t **root)
{
    struct http_response resp;
    char body[256];
    snprintf(body, sizeof(body),
             "{\"listing_ids\":[%" PRIu64 "],\"check_in\":\"%s\",\"check_out\":\"%s\"}", id,
             day(from), day(to));
    call(&resp, "POST", NULL, body, "/v1/availability/search");
    *root = expect_json(&resp, 200);
    json_t *r = json_array_get(json_object_get(*root, "results"), 0);
    ck_assert_msg(json_is_object(r), "%s", resp.body);
    http_response_deinit(&resp);
    return r;
}

START_TEST(test_search_reason_is_the_bookings)
{
    struct http_response resp;
    uint64_t id = create_listing_with(10000, 3, 30);
    json_decref(book_ok(id, "reason-first", FIRST_DAY, FIRST_DAY + 3, 1, 30000));
    json_t *root;
    json_t *r = search_one(id, FIRST_DAY + 1, FIRST_DAY + 3, &root);
    ck_assert(json_is_false(json_object_get(r, "available")));
    ck_assert_str_eq(jstr(r, "reason"), "stay_too_short");
    json_decref(root);
    book_raw(&resp, id, "reason-second", FIRST_DAY + 1, FIRST_DAY + 3, 2);
    expect_error(&resp, 400, "stay_too_short");
    http_response_deinit(&resp);
}
END_TEST

/* Text and prices no request can set, written by SQL from outside (the
 * schema has no CHECK): a currency with a quote and a backslash, a night
 * price of 9e17. Reads and searches stay valid JSON with the currency as
 * stored, the night is not sold, and no total overflows. */
START_TEST(test_values_written_from_outside_stay_valid_json)
{
    struct http_response resp;
    uint64_t id = create_listing_with(10000, 1, 30);
    int64_t epoch;
    struct db *db = shard((size_t)owner_shard(id, &epoch));
    char err[256];
    struct db_val p[] = {DB_INT_V((int64_t)id), DB_INT_V(today + FIRST_DAY + 2 + DB_TO_DAYS_EPOCH)};
    ck_assert_msg(db_query(db, "UPDATE listings SET currency = 'U\"\\\\' WHERE listing_id = ?", p,
                           1, NULL, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    ck_assert_msg(db_query(db,
                           "INSERT INTO nights (listing_id, night, status, price, version, vbucket)"
                           " SELECT listing_id, FROM_DAYS(?), 'available',"
                           " 900000000000000000, 1, vbucket FROM listings WHERE listing_id = ?",
                           (struct db_val[]){p[1], p[0]}, 2, NULL, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    for (int round = 0; round < 2; round++) { /* from the shard, then the cache if it took it */
        call(&resp, "GET", NULL, NULL, "/v1/listings/%" PRIu64 "/availability?from=%s&to=%s", id,
             day(FIRST_DAY), day(FIRST_DAY + 25));
        json_t *root = expect_json(&resp, 200);
        ck_assert_str_eq(jstr(root, "currency"), "U\"\\");
        json_t *night = json_array_get(json_object_get(root, "nights"), 2);
        ck_assert_str_eq(jstr(night, "status"), "blocked");
        json_decref(root);
        http_response_deinit(&resp);
        json_t *r = search_one(id, FIRST_DAY, FIRST_DAY + 25, &root);
        ck_assert_str_eq(jstr(r, "currency"), "U\"\\");
        ck_assert(json_is_false(json_object_get(r, "available")));
        ck_assert_int_ge(jint(r, "total_price"), 0);
        json_decref(root);
    }
    book_raw(&resp, id, "outside-price", FIRST_DAY + 2, FIRST_DAY + 3, 1);
    expect_error(&resp, 409, "nights_unavailable");
    http_response_deinit(&resp);
}
END_TEST

static Suite *
api_suite(void)
{
    Suite *s = suite_create("api");
    struct {
        const char *name;
        const TTest *test;
        int timeout;
    } cases[] = {
        {"health", test_health_endpoints, 30},
        {"metrics", test_metrics, 30},
        {"booking_transaction_metrics", test_booking_transaction_metrics, 30},
        {"unknown_path", test_unknown_path, 30},
        {"empty_id_segment_is_not_found", test_empty_id_segment_is_not_found, 30},
        {"head_answers_like_get", test_head_answers_like_get, 30},
        {"method_not_allowed_names_the_allowed_ones",
         test_method_not_allowed_names_the_allowed_ones, 30},
        {"listing_create_update_get", test_listing_create_update_get, 30},
        {"listing_validation", test_listing_validation, 30},
        {"put_listing_if_match", test_put_listing_if_match, 30},
        {"if_match_refused_where_not_evaluated", test_if_match_refused_where_not_evaluated, 30},
        {"if_none_match_refused_on_writes", test_if_none_match_refused_on_writes, 30},
        {"invalid_listing_id", test_invalid_listing_id, 30},
        {"escaped_slash_and_nul_are_not_path_syntax",
         test_escaped_slash_and_nul_are_not_path_syntax, 30},
        {"search_reason_is_the_bookings", test_search_reason_is_the_bookings, 30},
        {"values_written_from_outside_stay_valid_json",
         test_values_written_from_outside_stay_valid_json, 30},
        {"booking_create_and_get", test_booking_create_and_get, 30},
        {"reservation_ids_come_from_the_catalog", test_reservation_ids_come_from_the_catalog, 30},
        {"booking_unknown_listing", test_booking_unknown_listing, 30},
        {"booking_validation", test_booking_validation, 30},
        {"body_too_large", test_body_too_large, 30},
        {"endless_chunked_body_is_cut_off", test_endless_chunked_body_is_cut_off, 30},
        {"booking_conflict", test_booking_conflict, 30},
        {"lock_wait_is_a_conflict", test_lock_wait_is_a_conflict, 60},
        {"an_idle_worker_polls_for_the_next_request",
         test_an_idle_worker_polls_for_the_next_request, 60},
        {"overload_is_refused_with_retry_after", test_overload_is_refused_with_retry_after, 60},
        {"in_flight_gauge_counts_unanswered_requests",
         test_in_flight_gauge_counts_unanswered_requests, 60},
        {"sigterm_answers_the_requests_running", test_sigterm_answers_the_requests_running, 60},
        {"a_lost_group_commit_counts_once_against_the_breaker",
         test_a_lost_group_commit_counts_once_against_the_breaker, 90},
        {"a_group_commit_waits_out_one_lock_at_most",
         test_a_group_commit_waits_out_one_lock_at_most, 90},
        {"idempotent_replay", test_idempotent_replay, 30},
        {"refusal_is_kept_for_replays", test_refusal_is_kept_for_replays, 30},
        {"replay_after_check_in_passed", test_replay_after_check_in_passed, 30},
        {"cancel_frees_nights", test_cancel_frees_nights, 30},
        {"block_then_book", test_block_then_book, 30},
        {"set_price", test_set_price, 30},
        {"calendar_validation", test_calendar_validation, 30},
        {"if_match", test_if_match, 30},
        {"availability", test_availability, 30},
        {"booking_race", test_booking_race, 60},
        {"idempotent_race", test_idempotent_race, 60},
        {"key_reuse_race", test_key_reuse_race, 60},
        {"if_match_race", test_if_match_race, 60},
        {"listing_create_race", test_listing_create_race, 60},
        {"put_listing_if_match_race", test_put_listing_if_match_race, 60},
        {"fencing_moved_vbucket", test_fencing_moved_vbucket, 60},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);

        tcase_set_timeout(tc, cases[i].timeout);
        tcase_add_test(tc, cases[i].test);
        suite_add_tcase(s, tc);
    }
    TCase *tc = tcase_create("read_only_shard_is_unavailable");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, NULL, all_writable);
    tcase_add_test(tc, test_read_only_shard_is_unavailable);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    char err[512];
    SRunner *sr;
    int failed;

    if (testenv_load(&env, NULL, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "check_api: %s\n", err);
        return EXIT_FAILURE;
    }
    today = testenv_today();
    http_global_init();
    sr = srunner_create(api_suite());
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
