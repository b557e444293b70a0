/* Integration suite of calendar-cdc-relay against a running stack
 * ($STACK_ENV): row changes written with SQL into shard 0 arrive on
 * <prefix>.<db>.<table> as the exact Debezium-style JSON (c/u/d, before and
 * after, DATE as days, TIMESTAMP(6) as UTC ISO-8601, NULLs, unsigned
 * numbers), keyed by primary key and partitioned by listing; COMPRESSED
 * columns added to nights are inflated; an Incident event flushes every
 * relayed table; tables of other databases (long UTF-8 names, many columns)
 * never stop it; and after a SIGKILL of the relay mid-stream and a restart,
 * no change is missing. */
#include <check.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdc/binlog.h"
#include "cdc/event.h"
#include "common/db.h"
#include "common/util.h"
#include "tests/lib/http.h"
#include "tests/lib/kafka_test.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"

#define SHARD 0
#define SHARD_DB "calendar_shard0"
#define RELAY_NAME "cdc-relay-shard0"

static struct testenv env;
static char bootstrap[256];
static char prefix[64];
static char stack_sh[512];
static char admin_config[512];
static int32_t partitions = 8;

static struct db *
shard(void)
{
    char err[256];
    struct db *db = testenv_connect_shard(&env, SHARD, err, sizeof(err));
    ck_assert_msg(db != NULL, "shard connect: %s", err);
    return db;
}

static void sql(struct db *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
sql(struct db *db, const char *fmt, ...)
{
    char text[2048], err[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    ck_assert_msg(db_exec(db, text, err, sizeof(err)) == CAL_OK, "%s: %s", text, err);
}

/* One text value of a query. */
static void
sql_text(struct db *db, char *out, size_t size, const char *q)
{
    char err[256];
    struct db_stmt *st;
    ck_assert_msg(db_query(db, q, NULL, 0, &st, err, sizeof(err)) == CAL_OK, "%s: %s", q, err);
    struct db_val v;
    ck_assert_int_eq(db_fetch(st, &v, 1, err, sizeof(err)), 1);
    if (v.type == DB_STR)
        cal_strlcpy(out, v.s, size);
    else
        snprintf(out, size, "%" PRId64, v.i);
    while (db_fetch(st, &v, 1, err, sizeof(err)) == 1)
        ;
}

/* A fresh listing id whose vbucket shard 0 owns (its vbucket_owner row), so
 * the rows written here are legitimate for every other suite's checks. */
static uint64_t
owned_listing(struct db *db)
{
    char err[256];
    for (int tries = 0; tries < 100000; tries++) {
        uint64_t id = testenv_random48();
        struct db_val p[] = {DB_INT_V(testenv_vbucket(id))};
        struct db_stmt *st;
        ck_assert_msg(db_query(db, "SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", p, 1,
                               &st, err, sizeof(err)) == CAL_OK,
                      "%s", err);
        struct db_val v;
        ck_assert_int_eq(db_fetch(st, &v, 1, err, sizeof(err)), 1);
        while (db_fetch(st, &v, 1, err, sizeof(err)) == 1)
            ;
        if (v.type == DB_INT && v.i == 1)
            return id;
    }
    ck_abort_msg("shard 0 owns no vbucket");
    return 0;
}

/* A new listing row (100 EUR, 1 to 30 nights) in a vbucket shard 0 owns. */
static uint64_t
new_listing(struct db *db)
{
    uint64_t id = owned_listing(db);
    sql(db,
        "INSERT INTO listings (listing_id, vbucket, default_price, currency, min_nights, "
        "max_nights) VALUES (%" PRIu64 ", %u, 100, 'EUR', 1, 30)",
        id, testenv_vbucket(id));
    return id;
}

/* Removes what a test wrote (the deletes are relayed too; harmless). */
static void
cleanup(uint64_t listing_id)
{
    struct db *db = shard();
    const char *tables[] = {"nights", "reservations", "listings"};
    for (size_t i = 0; i < CAL_ARRAY_LEN(tables); i++)
        sql(db, "DELETE FROM %s WHERE listing_id = %" PRIu64, tables[i], listing_id);
    db_close(db);
}

static void
topic(char *buf, size_t size, const char *table)
{
    ck_assert_int_eq(event_topic(buf, size, prefix, SHARD_DB, table), CAL_OK);
}

/* Collects messages of the given topics whose key mentions listing_id
 * (every table's key or value carries it), until want messages matched or
 * the timeout. */
struct collected {
    size_t n;
    struct kafka_test_msg msgs[4096];
    json_t *values[4096];
};

/* Keeps message m and its parsed value in msgs/values[*n] (cap slots). */
static void
keep_event(struct kafka_test_msg *msgs, json_t **values, size_t *n, size_t cap,
           struct kafka_test_msg *m, json_t *value)
{
    ck_assert_msg(*n < cap, "more than %zu events kept", cap);
    msgs[*n] = *m;
    values[*n] = value;
    (*n)++;
}

static void
kept_free(struct kafka_test_msg *msgs, json_t **values, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        kafka_test_msg_free(&msgs[i]);
        json_decref(values[i]);
    }
    *n = 0;
}

static bool
mentions_listing(const struct kafka_test_msg *m, json_t *value, uint64_t listing_id)
{
    json_t *row = json_object_get(value, "after");
    if (!json_is_object(row))
        row = json_object_get(value, "before");
    json_t *id = json_object_get(row, "listing_id");
    (void)m;
    return json_is_integer(id) && (uint64_t)json_integer_value(id) == listing_id;
}

static void
collect(struct collected *c, const char *const *topics, uint64_t listing_id, size_t want,
        int timeout_ms)
{
    char err[256];
    struct kafka_test_consumer *kc =
        kafka_test_consumer_create(bootstrap, topics, err, sizeof(err));
    ck_assert_msg(kc != NULL, "%s", err);
    uint64_t deadline = cal_mono_us() + (uint64_t)timeout_ms * 1000;
    c->n = 0;
    while (c->n < want && cal_mono_us() < deadline) {
        struct kafka_test_msg m;
        int rc = kafka_test_consume(kc, 200, &m, err, sizeof(err));
        ck_assert_msg(rc >= 0, "%s", err);
        if (rc == 0)
            continue;
        json_error_t jerr;
        json_t *value = json_loads(m.value, 0, &jerr);
        ck_assert_msg(value != NULL, "value is not JSON: %s", m.value);
        if (!mentions_listing(&m, value, listing_id) || c->n == CAL_ARRAY_LEN(c->msgs)) {
            json_decref(value);
            kafka_test_msg_free(&m);
            continue;
        }
        keep_event(c->msgs, c->values, &c->n, CAL_ARRAY_LEN(c->msgs), &m, value);
    }
    kafka_test_consumer_destroy(kc);
}

static void
collected_free(struct collected *c)
{
    kept_free(c->msgs, c->values, &c->n);
}

/* The events of table that name listing L: want of them within 30 s, or
 * abort saying what was awaited (when they never come, the relay is stuck).
 * Caller frees with collected_free() and free(). */
static struct collected *
collect_table(const char *table, uint64_t L, size_t want, const char *what)
{
    char t[256];
    topic(t, sizeof(t), table);
    const char *topics[] = {t, NULL};
    struct collected *c = cal_calloc(1, sizeof(*c));
    collect(c, topics, L, want, 30000);
    ck_assert_msg(c->n == want,
                  "got %zu of %zu %s events of listing %" PRIu64 " %s: relay stuck (see its log)",
                  c->n, want, table, L, what);
    return c;
}

/* The message of table with op and the given key, or abort. */
static size_t
find(const struct collected *c, const char *table, const char *op, const char *key)
{
    char t[256];
    topic(t, sizeof(t), table);
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->msgs[i].topic, t) == 0 &&
            strcmp(json_string_value(json_object_get(c->values[i], "op")), op) == 0 &&
            strcmp(c->msgs[i].key, key) == 0)
            return i;
    }
    ck_abort_msg("no %s event on %s with key %s among %zu messages", op, t, key, c->n);
    return 0;
}

static void
assert_row(json_t *value, const char *field, const char *expected_json)
{
    json_error_t jerr;
    json_t *want = json_loads(expected_json, JSON_DECODE_ANY, &jerr);
    ck_assert_msg(want != NULL, "bad expectation %s", expected_json);
    json_t *got = json_object_get(value, field);
    char *got_text = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    char *want_text = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    ck_assert_msg(json_equal(got, want), "%s: got %s, want %s", field, got_text, want_text);
    free(got_text);
    free(want_text);
    json_decref(want);
}

static void
assert_source(const struct kafka_test_msg *m, json_t *value, const char *table, uint64_t listing)
{
    json_t *src = json_object_get(value, "source");
    ck_assert_str_eq(json_string_value(json_object_get(src, "version")), "calendar-cdc-1");
    ck_assert_str_eq(json_string_value(json_object_get(src, "connector")), "mariadb");
    ck_assert_str_eq(json_string_value(json_object_get(src, "name")), prefix);
    ck_assert_str_eq(json_string_value(json_object_get(src, "db")), SHARD_DB);
    ck_assert_str_eq(json_string_value(json_object_get(src, "table")), table);
    ck_assert_str_eq(json_string_value(json_object_get(src, "snapshot")), "false");
    ck_assert_int_eq(json_integer_value(json_object_get(src, "server_id")), SHARD + 1);
    const char *gtid = json_string_value(json_object_get(src, "gtid"));
    unsigned d, s;
    unsigned long long q;
    ck_assert_msg(gtid != NULL && sscanf(gtid, "%u-%u-%llu", &d, &s, &q) == 3, "gtid %s", gtid);
    ck_assert_str_ne(json_string_value(json_object_get(src, "file")), "");
    ck_assert_int_gt(json_integer_value(json_object_get(src, "pos")), 0);
    uint64_t now = cal_now_ms();
    int64_t ts = json_integer_value(json_object_get(src, "ts_ms"));
    ck_assert_msg(ts > 0 && (uint64_t)ts <= now && now - (uint64_t)ts < 600000, "ts_ms %" PRId64,
                  ts);
    ck_assert_int_ge(json_integer_value(json_object_get(value, "ts_ms")), ts);
    ck_assert_int_eq(m->partition, event_partition(listing, partitions));
    const char *keys[] = {"before", "after", "source", "op", "ts_ms"};
    ck_assert_int_eq(json_object_size(value), CAL_ARRAY_LEN(keys));
    for (size_t i = 0; i < CAL_ARRAY_LEN(keys); i++)
        ck_assert_ptr_nonnull(json_object_get(value, keys[i]));
}

START_TEST(row_changes_arrive_as_exact_events)
{
    struct db *db = shard();
    uint64_t L = owned_listing(db);
    uint64_t R = 18446744073709551000ULL - (L % 1000); /* above INT64_MAX on purpose */
    sql(db,
        "INSERT INTO listings (listing_id, vbucket, default_price, currency, min_nights, "
        "max_nights) VALUES (%" PRIu64 ", %u, -500, 'EUR', 1, 30)",
        L, testenv_vbucket(L));
    sql(db,
        "INSERT INTO nights (listing_id, night, status, reservation_id, price, vbucket) VALUES "
        "(%" PRIu64 ", '2030-01-01', 'booked', %" PRIu64 ", NULL, %u), "
        "(%" PRIu64 ", '2030-01-02', 'blocked', NULL, 15000, %u)",
        L, R, testenv_vbucket(L), L, testenv_vbucket(L));
    sql(db,
        "UPDATE nights SET status = 'available', reservation_id = NULL, version = version + 1 "
        "WHERE listing_id = %" PRIu64 " AND night = '2030-01-01'",
        L);
    sql(db, "DELETE FROM nights WHERE listing_id = %" PRIu64 " AND night = '2030-01-02'", L);
    sql(db,
        "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out, "
        "guest_id, status, total_price, currency, idempotency_key, request_hash, version) "
        "VALUES (%" PRIu64 ", %" PRIu64 ", %u, '2030-01-01', '2030-01-03', 4294967295, "
        "'confirmed', 24000, 'EUR', 'key-1', 'h\xc3\xa9sh', 2)",
        R, L, testenv_vbucket(L));

    char listing_ts[64], created[64], updated[64], q[512];
    snprintf(q, sizeof(q),
             "SELECT DATE_FORMAT(updated_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ') FROM listings "
             "WHERE listing_id = %" PRIu64,
             L);
    sql_text(db, listing_ts, sizeof(listing_ts), q);
    snprintf(q, sizeof(q),
             "SELECT DATE_FORMAT(created_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ') FROM reservations "
             "WHERE reservation_id = %" PRIu64,
             R);
    sql_text(db, created, sizeof(created), q);
    snprintf(q, sizeof(q),
             "SELECT DATE_FORMAT(updated_at, '%%Y-%%m-%%dT%%H:%%i:%%s.%%fZ') FROM reservations "
             "WHERE reservation_id = %" PRIu64,
             R);
    sql_text(db, updated, sizeof(updated), q);
    char d1[16], d2[16], d3[16];
    sql_text(db, d1, sizeof(d1), "SELECT TO_DAYS('2030-01-01') - 719528");
    sql_text(db, d2, sizeof(d2), "SELECT TO_DAYS('2030-01-02') - 719528");
    sql_text(db, d3, sizeof(d3), "SELECT TO_DAYS('2030-01-03') - 719528");
    db_close(db);

    char tl[256], tn[256], tr[256];
    topic(tl, sizeof(tl), "listings");
    topic(tn, sizeof(tn), "nights");
    topic(tr, sizeof(tr), "reservations");
    const char *topics[] = {tl, tn, tr, NULL};
    struct collected *c = cal_calloc(1, sizeof(*c));
    collect(c, topics, L, 6, 30000);
    ck_assert_msg(c->n == 6, "got %zu of 6 events for listing %" PRIu64, c->n, L);

    char key[128], want[1024];
    uint32_t vb = testenv_vbucket(L);

    /* listings: c, with a negative BIGINT, INT UNSIGNED and TIMESTAMP(6). */
    snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 "}", L);
    size_t i = find(c, "listings", "c", key);
    assert_row(c->values[i], "before", "null");
    snprintf(want, sizeof(want),
             "{\"listing_id\":%" PRIu64 ",\"vbucket\":%u,\"version\":1,\"rules_version\":1,"
             "\"default_price\":-500,\"currency\":\"EUR\",\"min_nights\":1,\"max_nights\":30,"
             "\"updated_at\":\"%s\"}",
             L, vb, listing_ts);
    assert_row(c->values[i], "after", want);
    assert_source(&c->msgs[i], c->values[i], "listings", L);

    /* nights: c (two rows of one event), u, d; DATE as days, NULLs. */
    snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, d1);
    i = find(c, "nights", "c", key);
    snprintf(want, sizeof(want),
             "{\"listing_id\":%" PRIu64 ",\"night\":%s,\"status\":\"booked\","
             "\"reservation_id\":\"%" PRIu64 "\",\"price\":null,\"version\":1,\"vbucket\":%u}",
             L, d1, R, vb);
    assert_row(c->values[i], "after", want);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(c->values[i], "source"), "row")), 0);
    assert_source(&c->msgs[i], c->values[i], "nights", L);
    size_t upd = find(c, "nights", "u", key);
    assert_row(c->values[upd], "before", want);
    snprintf(want, sizeof(want),
             "{\"listing_id\":%" PRIu64 ",\"night\":%s,\"status\":\"available\","
             "\"reservation_id\":null,\"price\":null,\"version\":2,\"vbucket\":%u}",
             L, d1, vb);
    assert_row(c->values[upd], "after", want);
    assert_source(&c->msgs[upd], c->values[upd], "nights", L);

    snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, d2);
    i = find(c, "nights", "c", key);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(c->values[i], "source"), "row")), 1);
    snprintf(want, sizeof(want),
             "{\"listing_id\":%" PRIu64 ",\"night\":%s,\"status\":\"blocked\","
             "\"reservation_id\":null,\"price\":15000,\"version\":1,\"vbucket\":%u}",
             L, d2, vb);
    assert_row(c->values[i], "after", want);
    size_t del = find(c, "nights", "d", key);
    assert_row(c->values[del], "before", want);
    assert_row(c->values[del], "after", "null");
    assert_source(&c->msgs[del], c->values[del], "nights", L);

    /* reservations: BIGINT UNSIGNED above INT64_MAX (string), INT-range
     * unsigned, DATEs, non-ASCII VARCHAR, two TIMESTAMP(6). */
    snprintf(key, sizeof(key), "{\"reservation_id\":\"%" PRIu64 "\"}", R);
    i = find(c, "reservations", "c", key);
    snprintf(want, sizeof(want),
             "{\"reservation_id\":\"%" PRIu64 "\",\"listing_id\":%" PRIu64 ",\"vbucket\":%u,"
             "\"check_in\":%s,\"check_out\":%s,\"guest_id\":4294967295,\"status\":\"confirmed\","
             "\"total_price\":24000,\"currency\":\"EUR\",\"idempotency_key\":\"key-1\","
             "\"request_hash\":\"h\xc3\xa9sh\",\"version\":2,\"created_at\":\"%s\",\"updated_at\":"
             "\"%s\"}",
             R, L, vb, d1, d3, created, updated);
    assert_row(c->values[i], "after", want);
    assert_source(&c->msgs[i], c->values[i], "reservations", L);

    /* One partition per listing: its nights changes keep commit order. */
    snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, d1);
    size_t create1 = find(c, "nights", "c", key);
    ck_assert_int_eq(c->msgs[create1].partition, c->msgs[upd].partition);
    ck_assert_int_lt(c->msgs[create1].offset, c->msgs[upd].offset);
    ck_assert_int_lt(c->msgs[upd].offset, c->msgs[del].offset);
    collected_free(c);
    free(c);
    cleanup(L);
}
END_TEST

/* Tables of another database of the shard's server, as its other users
 * (the catalog on shard 0's) may have them: a name of 33 Cyrillic letters
 * (66 bytes in the binlog) with a column of 64 (128 bytes), and 130 columns,
 * more than the relay's decoder takes. Neither may stop the relay: a change
 * of ours written after them must arrive. */
START_TEST(other_tables_never_stop_the_relay)
{
    char name33[80] = "", col64[140] = "", sqltext[4096];
    for (int i = 0; i < 33; i++)
        strcat(name33, "\xd0\x96");
    for (int i = 0; i < 64; i++)
        strcat(col64, "\xd0\xaf");
    int n =
        snprintf(sqltext, sizeof(sqltext),
                 "SET NAMES utf8mb4; DROP DATABASE IF EXISTS cdc_probe; CREATE DATABASE cdc_probe;"
                 "CREATE TABLE cdc_probe.`%s` (`%s` INT PRIMARY KEY) ENGINE=InnoDB;"
                 "INSERT INTO cdc_probe.`%s` VALUES (1);"
                 "CREATE TABLE cdc_probe.wide (c0 INT PRIMARY KEY",
                 name33, col64, name33);
    for (int c = 1; c < 130; c++)
        n += snprintf(sqltext + n, sizeof(sqltext) - (size_t)n, ", c%d INT", c);
    snprintf(sqltext + n, sizeof(sqltext) - (size_t)n,
             ") ENGINE=InnoDB; INSERT INTO cdc_probe.wide (c0, c129) VALUES (1, 2);");
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, sqltext), 0);

    struct db *db = shard();
    uint64_t L = new_listing(db);
    db_close(db);
    struct collected *c = collect_table("listings", L, 1, "after the other database's tables");
    collected_free(c);
    free(c);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, "DROP DATABASE cdc_probe;"), 0);
    cleanup(L);
}
END_TEST

#define ROW_METADATA_FULL "SET GLOBAL binlog_row_metadata = FULL;"

static void
row_metadata_full(void)
{
    if (testenv_sql_admin(&env, SHARD, ROW_METADATA_FULL) != 0)
        fprintf(stderr, "check_cdc_relay: %s failed\n", ROW_METADATA_FULL);
}

/* A shard that logs rows without their column names and primary key
 * (binlog_row_metadata not FULL) is refused when the relay connects, before
 * it saves a start position past which the binlog holds events it cannot
 * decode. The check runs before anything replicates, so the shard's SQL
 * user serves; the unchecked fixture sets FULL again whatever happens. */
START_TEST(a_shard_without_row_metadata_is_refused)
{
    struct binlog_conf bc = {.server_id = 4242, .heartbeat_ms = 1000};
    char err[512] = "";
    ck_assert(db_conf_parse_dsn(&bc.db, env.shard_dsns[SHARD], err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, "SET GLOBAL binlog_row_metadata = NO_LOG;"), 0);
    struct gtid_pos start;
    struct binlog *b = binlog_open(&bc, NULL, &start, err, sizeof(err));
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, ROW_METADATA_FULL), 0);
    binlog_close(b);
    ck_assert_msg(b == NULL, "a shard with binlog_row_metadata=NO_LOG was taken");
    ck_assert_msg(strstr(err, "binlog_row_metadata=NO_LOG") != NULL, "%s", err);
}
END_TEST

/* A [source] database the shard does not have (a typo, or another case
 * on a server whose names are case-sensitive, as the stack's are) is
 * refused at connect: the relay took every change for another database's
 * and published nothing, without a word. The shard's own name is taken. */
START_TEST(a_database_the_shard_lacks_is_refused)
{
    static const char *const wrong[] = {"calendar_shard0_typo", "CALENDAR_SHARD0"};
    struct binlog_conf bc = {.server_id = 4243, .heartbeat_ms = 1000};
    char err[512] = "";
    struct gtid_pos start;
    ck_assert(db_conf_parse_dsn(&bc.db, env.shard_dsns[SHARD], err, sizeof(err)) == CAL_OK);
    ck_assert_str_eq(bc.db.database, SHARD_DB);
    struct binlog *b = binlog_open(&bc, NULL, &start, err, sizeof(err));
    ck_assert_msg(b != NULL, "%s", err);
    ck_assert(!binlog_names_fold_case(b));
    binlog_close(b);
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        cal_strlcpy(bc.db.database, wrong[i], sizeof(bc.db.database));
        err[0] = '\0';
        b = binlog_open(&bc, NULL, &start, err, sizeof(err));
        binlog_close(b);
        ck_assert_msg(b == NULL, "database %s was taken", wrong[i]);
        ck_assert_msg(strstr(err, "does not exist") != NULL && strstr(err, wrong[i]) != NULL, "%s",
                      err);
    }
}
END_TEST

/* The columns compressed_columns_are_decoded and
 * an_oversized_change_is_sent_cut_to_its_key add to nights. The unchecked
 * fixture drops them before and after those tests, in this process, so that
 * a failed or killed run leaves every other test the schema it expects. */
#define DROP_TEST_COLUMNS                                                                          \
    "USE " SHARD_DB "; ALTER TABLE nights DROP COLUMN IF EXISTS cdc_note, "                        \
    "DROP COLUMN IF EXISTS cdc_memo, DROP COLUMN IF EXISTS cdc_big;"

static void
drop_test_columns(void)
{
    if (testenv_sql_admin(&env, SHARD, DROP_TEST_COLUMNS) != 0)
        fprintf(stderr, "check_cdc_relay: %s failed\n", DROP_TEST_COLUMNS);
}

/* A column an operator added holds a value whose event would be over the
 * Kafka message size (1 MB of text): the event goes out with its images
 * cut to the key and listing_id, and the changes after it follow. Refused
 * by librdkafka, it stopped the shard's relay at that event for good. */
START_TEST(an_oversized_change_is_sent_cut_to_its_key)
{
    struct db *db = shard();
    uint64_t L = new_listing(db);
    unsigned vb = testenv_vbucket(L);
    char text[1024], d1[16], d2[16], key[128], want[512];
    sql_text(db, d1, sizeof(d1), "SELECT TO_DAYS('2030-07-01') - 719528");
    sql_text(db, d2, sizeof(d2), "SELECT TO_DAYS('2030-07-02') - 719528");
    db_close(db);
    snprintf(text, sizeof(text),
             "USE " SHARD_DB "; ALTER TABLE nights ADD COLUMN cdc_big LONGTEXT NULL;"
             "INSERT INTO nights (listing_id, night, status, vbucket, cdc_big) "
             "VALUES (%" PRIu64 ", '2030-07-01', 'blocked', %u, REPEAT('x', 1000000));"
             "INSERT INTO nights (listing_id, night, status, vbucket) "
             "VALUES (%" PRIu64 ", '2030-07-02', 'blocked', %u);",
             L, vb, L, vb);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, text), 0);

    struct collected *c = collect_table("nights", L, 2, "after an oversized change");
    snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, d1);
    size_t i = find(c, "nights", "c", key);
    snprintf(want, sizeof(want), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, d1);
    assert_row(c->values[i], "after", want);
    assert_source(&c->msgs[i], c->values[i], "nights", L);
    snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, d2);
    i = find(c, "nights", "c", key);
    snprintf(want, sizeof(want),
             "{\"listing_id\":%" PRIu64 ",\"night\":%s,\"status\":\"blocked\","
             "\"reservation_id\":null,\"price\":null,\"version\":1,\"vbucket\":%u,"
             "\"cdc_big\":null}",
             L, d2, vb);
    assert_row(c->values[i], "after", want);
    collected_free(c);
    free(c);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, DROP_TEST_COLUMNS), 0);
    cleanup(L);
}
END_TEST

/* A VARCHAR COMPRESSED and a BLOB COMPRESSED column added to nights between
 * night and status (binlog types 141 and 140), rows written with raw deflate
 * (MariaDB's default), with a zlib stream (column_compression_zlib_wrap=ON),
 * stored as is (under column_compression_threshold) and NULL: the events
 * carry the values as they were written, and every column after them right. */
START_TEST(compressed_columns_are_decoded)
{
    struct db *db = shard();
    uint64_t L = new_listing(db);
    unsigned vb = testenv_vbucket(L);
    char text[2048], d1[16], d2[16], d3[16];
    sql_text(db, d1, sizeof(d1), "SELECT TO_DAYS('2030-06-01') - 719528");
    sql_text(db, d2, sizeof(d2), "SELECT TO_DAYS('2030-06-02') - 719528");
    sql_text(db, d3, sizeof(d3), "SELECT TO_DAYS('2030-06-03') - 719528");
    db_close(db);
    snprintf(text, sizeof(text),
             "USE " SHARD_DB "; ALTER TABLE nights ADD COLUMN cdc_note VARCHAR(200) COMPRESSED "
             "NULL AFTER night, ADD COLUMN cdc_memo BLOB COMPRESSED NULL AFTER cdc_note;"
             "INSERT INTO nights (listing_id, night, cdc_note, cdc_memo, status, price, vbucket) "
             "VALUES (%" PRIu64 ", '2030-06-01', REPEAT('note ', 40), REPEAT('memo', 100), "
             "'blocked', 12345, %u);"
             "SET SESSION column_compression_zlib_wrap = ON;"
             "INSERT INTO nights (listing_id, night, cdc_note, cdc_memo, status, price, vbucket) "
             "VALUES (%" PRIu64 ", '2030-06-02', 'short', NULL, 'available', NULL, %u),"
             "(%" PRIu64 ", '2030-06-03', CONCAT(REPEAT('x', 150), '\xc3\xa9'), '', 'booked', "
             "-1, %u);",
             L, vb, L, vb, L, vb);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, text), 0);

    struct collected *c = collect_table("nights", L, 3, "with COMPRESSED columns");
    /* The values as JSON: 200 and 400 bytes deflated, 152 stored. */
    char note[256] = "\"", memo[512] = "\"", wide[256] = "\"", key[128], want[2048];
    for (int i = 0; i < 40; i++)
        strcat(note, "note ");
    for (int i = 0; i < 100; i++)
        strcat(memo, "memo");
    memset(wide + 1, 'x', 150);
    strcat(wide, "\xc3\xa9");
    strcat(note, "\"");
    strcat(memo, "\"");
    strcat(wide, "\"");
    const struct {
        const char *night, *note, *memo, *status, *price;
    } rows[] = {
        {d1, note, memo, "blocked", "12345"},
        {d2, "\"short\"", "null", "available", "null"},
        {d3, wide, "\"\"", "booked", "-1"},
    };
    for (size_t k = 0; k < CAL_ARRAY_LEN(rows); k++) {
        snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, rows[k].night);
        size_t i = find(c, "nights", "c", key);
        snprintf(want, sizeof(want),
                 "{\"listing_id\":%" PRIu64 ",\"night\":%s,\"cdc_note\":%s,\"cdc_memo\":%s,"
                 "\"status\":\"%s\",\"reservation_id\":null,\"price\":%s,\"version\":1,"
                 "\"vbucket\":%u}",
                 L, rows[k].night, rows[k].note, rows[k].memo, rows[k].status, rows[k].price, vb);
        assert_row(c->values[i], "after", want);
        assert_source(&c->msgs[i], c->values[i], "nights", L);
    }
    collected_free(c);
    free(c);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, DROP_TEST_COLUMNS), 0);
    cleanup(L);
}
END_TEST

/* ------------------------------------------------ events of a GTID range */

static const char *const relayed[] = {"listings", "nights", "reservations"};

/* The sequence number of the last GTID in shard idx's binlog (domain 0, the
 * only one of the stack). */
static uint64_t
binlog_seq(size_t idx)
{
    char err[256], pos[256];
    struct db *db = testenv_connect_shard(&env, idx, err, sizeof(err));
    ck_assert_msg(db != NULL, "shard %zu: %s", idx, err);
    sql_text(db, pos, sizeof(pos), "SELECT @@gtid_binlog_pos");
    db_close(db);
    unsigned d, srv;
    unsigned long long seq;
    ck_assert_msg(sscanf(pos, "%u-%u-%llu", &d, &srv, &seq) == 3, "gtid_binlog_pos '%s'", pos);
    return seq;
}

/* source.gtid of an event value: its server and sequence number. */
static void
event_gtid(json_t *value, unsigned *server, uint64_t *seq)
{
    const char *gtid = json_string_value(json_object_get(json_object_get(value, "source"), "gtid"));
    unsigned d;
    unsigned long long q;
    ck_assert_msg(gtid != NULL && sscanf(gtid, "%u-%u-%llu", &d, server, &q) == 3, "gtid %s",
                  gtid ? gtid : "(none)");
    *seq = q;
}

static uint64_t
row_listing(json_t *value)
{
    json_t *row = json_object_get(value, "after");
    if (!json_is_object(row))
        row = json_object_get(value, "before");
    json_t *id = json_object_get(row, "listing_id");
    return json_is_integer(id) ? (uint64_t)json_integer_value(id) : 0;
}

/* The events shard idx's relay published for the transactions (from, to] of
 * its binlog: the truncate events and those of one listing (other tests'
 * rows may be in the range too, thousands of them). */
struct range {
    size_t n;
    struct kafka_test_msg msgs[512];
    json_t *values[512];
    size_t truncates[3]; /* op "t" per relayed table */
};

/* What a reader of a shard's topics does with each event (see): it says
 * whether the event is the marker (one written after what the test waits
 * for) and whether it kept the message and its value (else they are freed). */
enum { SEEN_MARKER = 1, SEEN_KEPT = 2 };
typedef int (*see_fn)(struct kafka_test_msg *m, json_t *value, size_t table, void *arg);

/* Reads the relayed topics of shard idx, each event through see, until the
 * marker arrived and then 3 s passed without a message (the relay sends in
 * binlog order; other partitions may lag a little); what names the marker
 * when it never comes within 60 s. */
static void
read_shard(size_t idx, const char *what, see_fn see, void *arg)
{
    char db[64], topics_buf[3][256], err[256];
    snprintf(db, sizeof(db), "calendar_shard%zu", idx);
    const char *topics[4];
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(event_topic(topics_buf[i], sizeof(topics_buf[i]), prefix, db, relayed[i]),
                         CAL_OK);
        topics[i] = topics_buf[i];
    }
    topics[3] = NULL;
    struct kafka_test_consumer *kc =
        kafka_test_consumer_create(bootstrap, topics, err, sizeof(err));
    ck_assert_msg(kc != NULL, "%s", err);
    bool marker = false;
    uint64_t deadline = cal_mono_us() + 60 * 1000000ULL;
    for (;;) {
        ck_assert_msg(cal_mono_us() < deadline,
                      "shard %zu: no %s within 60 s: relay stuck (see its log)", idx, what);
        struct kafka_test_msg m;
        /* After the marker, the other topics' last events: 3 s of silence
         * ends the read (a 1 s stall of the machine must not). */
        int rc = kafka_test_consume(kc, marker ? 3000 : 200, &m, err, sizeof(err));
        ck_assert_msg(rc >= 0, "%s", err);
        if (rc == 0) {
            if (marker)
                break;
            continue;
        }
        json_t *value = json_loads(m.value, 0, NULL);
        ck_assert_msg(value != NULL, "value is not JSON: %s", m.value);
        size_t table = 0;
        while (table < 3 && strcmp(m.topic, topics[table]) != 0)
            table++;
        int seen = see(&m, value, table, arg);
        marker = marker || (seen & SEEN_MARKER);
        if (!(seen & SEEN_KEPT)) {
            json_decref(value);
            kafka_test_msg_free(&m);
        }
    }
    kafka_test_consumer_destroy(kc);
}

struct range_reader {
    struct range *rg;
    unsigned server;
    uint64_t from, to, marker_listing, keep;
};

static int
see_range(struct kafka_test_msg *m, json_t *value, size_t table, void *arg)
{
    struct range_reader *rr = arg;
    unsigned server;
    uint64_t seq;
    event_gtid(value, &server, &seq);
    int seen = server == rr->server && seq > rr->to && row_listing(value) == rr->marker_listing
                   ? SEEN_MARKER
                   : 0;
    bool truncate = strcmp(json_string_value(json_object_get(value, "op")), "t") == 0;
    bool in_range = server == rr->server && seq > rr->from && seq <= rr->to;
    if (in_range && truncate && table < 3)
        rr->rg->truncates[table]++;
    if (!in_range || (!truncate && row_listing(value) != rr->keep))
        return seen;
    keep_event(rr->rg->msgs, rr->rg->values, &rr->rg->n, CAL_ARRAY_LEN(rr->rg->msgs), m, value);
    return seen | SEEN_KEPT;
}

/* Reads the topics of shard idx until an event of marker_listing from after
 * `to` arrived (written once the range was complete), keeping the truncate
 * events of (from, to] and those of listing keep. */
static void
read_range(struct range *rg, size_t idx, uint64_t from, uint64_t to, uint64_t marker_listing,
           uint64_t keep)
{
    memset(rg, 0, sizeof(*rg));
    struct range_reader rr = {rg, (unsigned)idx + 1, from, to, marker_listing, keep};
    char what[128];
    snprintf(what, sizeof(what), "event of listing %" PRIu64 " after GTID seq %" PRIu64,
             marker_listing, to);
    read_shard(idx, what, see_range, &rr);
}

static void
range_free(struct range *rg)
{
    kept_free(rg->msgs, rg->values, &rg->n);
}

/* A truncate event of shard 0's table, as Debezium's: no key, no images,
 * the table in its source, partition 0, and a hint that flushes. */
static void
assert_truncate(const struct kafka_test_msg *m, json_t *value, const char *table)
{
    char t[256], hint[128];
    topic(t, sizeof(t), table);
    ck_assert_str_eq(m->topic, t);
    ck_assert_ptr_null(m->key);
    ck_assert_int_eq(m->partition, 0);
    assert_row(value, "before", "null");
    assert_row(value, "after", "null");
    ck_assert_str_eq(json_string_value(json_object_get(value, "op")), "t");
    json_t *src = json_object_get(value, "source");
    ck_assert_str_eq(json_string_value(json_object_get(src, "db")), SHARD_DB);
    ck_assert_str_eq(json_string_value(json_object_get(src, "table")), table);
    snprintf(hint, sizeof(hint), "%s t %" PRId64 " - -", table,
             (int64_t)json_integer_value(json_object_get(src, "ts_ms")));
    ck_assert_ptr_nonnull(m->hint);
    ck_assert_str_eq(m->hint, hint);
}

/* TRUNCATE TABLE nights (its rows saved and put back with INSERT ... SELECT,
 * for the other tests): no row image shows what it removed, so the relay
 * publishes a truncate event of nights, and of nights alone; the rows put
 * back after it are relayed as ever. */
START_TEST(truncate_of_a_relayed_table_is_a_truncate_event)
{
    struct db *db = shard();
    uint64_t L = new_listing(db);
    sql(db,
        "INSERT INTO nights (listing_id, night, status, vbucket) VALUES (%" PRIu64
        ", '2030-02-01', 'blocked', %u)",
        L, testenv_vbucket(L));
    uint64_t from = binlog_seq(SHARD);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD,
                                       "USE " SHARD_DB "; DROP TABLE IF EXISTS cdc_nights_save;"
                                       "CREATE TABLE cdc_nights_save AS SELECT * FROM nights;"
                                       "TRUNCATE TABLE nights;"
                                       "INSERT INTO nights SELECT * FROM cdc_nights_save;"
                                       "DROP TABLE cdc_nights_save;"),
                     0);
    uint64_t to = binlog_seq(SHARD);
    sql(db, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
    db_close(db);

    struct range *rg = cal_calloc(1, sizeof(*rg));
    read_range(rg, SHARD, from, to, L, L);
    ck_assert_int_eq(rg->truncates[0], 0);
    ck_assert_int_eq(rg->truncates[1], 1);
    ck_assert_int_eq(rg->truncates[2], 0);
    uint64_t truncate_seq = 0, back_seq = 0;
    for (size_t i = 0; i < rg->n; i++) {
        unsigned server;
        uint64_t seq;
        event_gtid(rg->values[i], &server, &seq);
        const char *op = json_string_value(json_object_get(rg->values[i], "op"));
        if (strcmp(op, "t") == 0) {
            assert_truncate(&rg->msgs[i], rg->values[i], "nights");
            truncate_seq = seq;
        } else if (strcmp(op, "c") == 0 && row_listing(rg->values[i]) == L) {
            back_seq = seq;
        }
    }
    ck_assert_msg(back_seq > truncate_seq && truncate_seq > from,
                  "truncate at seq %" PRIu64 ", the night put back at %" PRIu64, truncate_seq,
                  back_seq);
    range_free(rg);
    free(rg);
    cleanup(L);
}
END_TEST

/* A session with binlog_format=STATEMENT changes nights and listings: the
 * binlog holds the statements, not rows. Each transaction gives a truncate
 * event of every relayed table (a trigger could have reached any), whether
 * it ran in the relayed database or named it from another; the relay goes
 * on after them. */
START_TEST(statement_logged_changes_are_truncate_events)
{
    struct db *db = shard();
    uint64_t L = new_listing(db);
    sql(db,
        "INSERT INTO nights (listing_id, night, status, vbucket) VALUES (%" PRIu64
        ", '2030-03-01', 'available', %u)",
        L, testenv_vbucket(L));
    uint64_t from = binlog_seq(SHARD);
    char text[1024];
    snprintf(text, sizeof(text),
             "SET SESSION binlog_format = STATEMENT; USE " SHARD_DB ";"
             "UPDATE nights SET status = 'blocked' WHERE listing_id = %" PRIu64 ";"
             "USE mysql; UPDATE " SHARD_DB ".listings SET default_price = 200 "
             "WHERE listing_id = %" PRIu64 ";",
             L, L);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, text), 0);
    uint64_t to = binlog_seq(SHARD);
    ck_assert_uint_eq(to, from + 2);
    char status[32];
    snprintf(text, sizeof(text), "SELECT status FROM nights WHERE listing_id = %" PRIu64, L);
    sql_text(db, status, sizeof(status), text);
    ck_assert_str_eq(status, "blocked");
    sql(db, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
    db_close(db);

    struct range *rg = cal_calloc(1, sizeof(*rg));
    read_range(rg, SHARD, from, to, L, L);
    for (size_t t = 0; t < 3; t++)
        ck_assert_msg(rg->truncates[t] == 2, "%zu truncate events of %s, want 2", rg->truncates[t],
                      relayed[t]);
    ck_assert_uint_eq(rg->n, 6);
    for (size_t i = 0; i < rg->n; i++) {
        const char *table = strrchr(rg->msgs[i].topic, '.') + 1;
        assert_truncate(&rg->msgs[i], rg->values[i], table);
    }
    range_free(rg);
    free(rg);
    cleanup(L);
}
END_TEST

/* A session with binlog_row_image=MINIMAL: an update's before image holds
 * only the primary key and its after image only what changed; a delete's
 * before image only the key. The events of a night still name its listing
 * and night (key, images, hint), in the listing's partition. A reservation
 * updated so has its listing_id in neither image: a truncate event of
 * reservations stands for it. The relay goes on after them. */
START_TEST(minimal_row_images_name_their_listing)
{
    struct db *db = shard();
    uint64_t L = owned_listing(db);
    uint64_t R = 4000000000000ULL + L % 1000000;
    unsigned vb = testenv_vbucket(L);
    sql(db,
        "INSERT INTO listings (listing_id, vbucket, default_price, currency, min_nights, "
        "max_nights) VALUES (%" PRIu64 ", %u, 100, 'EUR', 1, 30)",
        L, vb);
    sql(db,
        "INSERT INTO nights (listing_id, night, status, vbucket) VALUES (%" PRIu64
        ", '2030-04-01', 'available', %u)",
        L, vb);
    sql(db,
        "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out, "
        "guest_id, status, total_price, currency, idempotency_key, request_hash, version) "
        "VALUES (%" PRIu64 ", %" PRIu64 ", %u, '2030-04-01', '2030-04-02', 7, 'confirmed', 100, "
        "'EUR', 'k', 'h', 1)",
        R, L, vb);
    uint64_t from = binlog_seq(SHARD);
    char text[1024], d[16];
    snprintf(text, sizeof(text),
             "SET SESSION binlog_row_image = MINIMAL; USE " SHARD_DB ";"
             "UPDATE nights SET status = 'blocked' WHERE listing_id = %" PRIu64 ";"
             "DELETE FROM nights WHERE listing_id = %" PRIu64 ";"
             "UPDATE reservations SET status = 'cancelled' WHERE reservation_id = %" PRIu64 ";",
             L, L, R);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, text), 0);
    uint64_t to = binlog_seq(SHARD);
    ck_assert_uint_eq(to, from + 3);
    sql_text(db, d, sizeof(d), "SELECT TO_DAYS('2030-04-01') - 719528");
    sql(db, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
    db_close(db);

    struct range *rg = cal_calloc(1, sizeof(*rg));
    read_range(rg, SHARD, from, to, L, L);
    ck_assert_msg(rg->n == 3, "%zu events, want 3", rg->n);
    char key[128], image[64], hint[192];
    snprintf(key, sizeof(key), "{\"listing_id\":%" PRIu64 ",\"night\":%s}", L, d);
    snprintf(image, sizeof(image), "%" PRIu64 ":%s", L, d);
    size_t seen = 0;
    for (size_t i = 0; i < rg->n; i++) {
        const struct kafka_test_msg *m = &rg->msgs[i];
        json_t *v = rg->values[i];
        const char *op = json_string_value(json_object_get(v, "op"));
        int64_t ts = json_integer_value(json_object_get(json_object_get(v, "source"), "ts_ms"));
        if (strcmp(op, "t") == 0) {
            assert_truncate(m, v, "reservations");
            seen |= 1;
            continue;
        }
        char t[256];
        topic(t, sizeof(t), "nights");
        ck_assert_str_eq(m->topic, t);
        ck_assert_str_eq(m->key, key);
        ck_assert_int_eq(m->partition, event_partition(L, partitions));
        assert_row(v, "before", key);
        ck_assert_ptr_nonnull(m->hint);
        if (strcmp(op, "u") == 0) {
            snprintf(text, sizeof(text),
                     "{\"listing_id\":%" PRIu64 ",\"night\":%s,\"status\":\"blocked\"}", L, d);
            assert_row(v, "after", text);
            snprintf(hint, sizeof(hint), "nights u %" PRId64 " %s %s", ts, image, image);
            seen |= 2;
        } else {
            ck_assert_str_eq(op, "d");
            assert_row(v, "after", "null");
            snprintf(hint, sizeof(hint), "nights d %" PRId64 " %s -", ts, image);
            seen |= 4;
        }
        ck_assert_str_eq(m->hint, hint);
    }
    ck_assert_uint_eq(seen, 7);
    range_free(rg);
    free(rg);
    cleanup(L);
}
END_TEST

/* Runs sqltext (no double quotes in it) as the stack's administrator on
 * shard idx, its result rows in out. */
static void
admin_query(size_t idx, const char *sqltext, char *out, size_t outlen)
{
    char cmd[2048];
    struct passwd *pw = getpwuid(getuid());
    ck_assert_ptr_nonnull(pw);
    ck_assert_ptr_null(strchr(sqltext, '"'));
    snprintf(cmd, sizeof(cmd),
             "mariadb --no-defaults --batch --skip-column-names --socket='%s/shard%zu/mysqld.sock' "
             "-u'%s' -e \"%s\"",
             env.stack_dir, idx, pw->pw_name, sqltext);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    ck_assert_msg(pclose(p) == 0, "%s: %s", sqltext, out);
}

/* The GTID the relay's checkpoint of shard 0 holds ("" when none yet). */
static void
checkpoint_gtid(char *out, size_t size)
{
    char path[1024], line[256];
    snprintf(path, sizeof(path), "%s/cdc/shard%d/checkpoint", env.stack_dir, SHARD);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "gtid=", 5) == 0) {
            line[strcspn(line, "\n")] = '\0';
            cal_strlcpy(out, line + 5, size);
        }
    fclose(f);
}

/* XA START, UPDATE of a night, XA END, XA PREPARE in one session, and XA
 * COMMIT later in it. MariaDB 10.5+ writes the PREPARE as a group of its own
 * (its GTID event carries the XID; XA END a query; an XA_prepare event ends
 * it) and XA COMMIT as another group of one statement: checked here against
 * the server. The relay publishes the night's event with the PREPARE group
 * and has it acknowledged before the COMMIT, with no later transaction to
 * close the group; the change is named once, and later changes arrive. */
START_TEST(xa_transaction_is_published_at_prepare)
{
    struct db *db = shard();
    uint64_t L = new_listing(db);
    sql(db,
        "INSERT INTO nights (listing_id, night, status, vbucket) VALUES (%" PRIu64
        ", '2030-05-01', 'available', %u)",
        L, testenv_vbucket(L));
    uint64_t from = binlog_seq(SHARD);
    char out[16384], file[128];
    unsigned long pos;
    admin_query(SHARD, "SHOW MASTER STATUS", out, sizeof(out));
    ck_assert_msg(sscanf(out, "%127s %lu", file, &pos) == 2, "SHOW MASTER STATUS: %s", out);

    FILE *xa = testenv_sql_admin_open(&env, SHARD);
    ck_assert_ptr_nonnull(xa);
    fprintf(xa,
            "USE " SHARD_DB "; XA START 'cdc-xa';"
            "UPDATE nights SET status = 'blocked' WHERE listing_id = %" PRIu64 ";"
            "XA END 'cdc-xa'; XA PREPARE 'cdc-xa';\n",
            L);
    fflush(xa);
    uint64_t deadline = cal_mono_us() + 15 * 1000000ULL;
    while (binlog_seq(SHARD) < from + 1) {
        ck_assert_msg(cal_mono_us() < deadline, "XA PREPARE not in the binlog within 15 s");
        cal_sleep_ms(50);
    }
    char want[64], got[256] = "";
    snprintf(want, sizeof(want), "0-%d-%" PRIu64, SHARD + 1, from + 1);
    deadline = cal_mono_us() + 15 * 1000000ULL;
    for (;;) {
        checkpoint_gtid(got, sizeof(got));
        if (strcmp(got, want) == 0)
            break;
        if (cal_mono_us() >= deadline) {
            fputs("XA COMMIT 'cdc-xa';\n", xa);
            testenv_sql_admin_close(xa);
            ck_abort_msg("checkpoint %s, not the XA PREPARE group %s: the group was not ended "
                         "by its XA_prepare event",
                         got, want);
        }
        cal_sleep_ms(50);
    }
    fputs("XA COMMIT 'cdc-xa';\n", xa);
    ck_assert_int_eq(testenv_sql_admin_close(xa), 0);
    uint64_t to = binlog_seq(SHARD);
    ck_assert_uint_eq(to, from + 2);

    /* The binlog's shape: Gtid (XA START ...), ..., Query XA END, XA_prepare,
     * then Gtid, Query XA COMMIT. */
    char q[256];
    snprintf(q, sizeof(q), "SHOW BINLOG EVENTS IN '%s' FROM %lu", file, pos);
    admin_query(SHARD, q, out, sizeof(out));
    char types[16][32], infos[16][64];
    size_t n = 0;
    for (char *line = strtok(out, "\n"); line != NULL && n < 16; line = strtok(NULL, "\n")) {
        char name[128], info[256] = "";
        unsigned long p, srv, end;
        if (sscanf(line, "%127s %lu %31s %lu %lu %255[^\n]", name, &p, types[n], &srv, &end, info) <
            5)
            continue;
        cal_strlcpy(infos[n], info, sizeof(infos[n]));
        n++;
    }
    ck_assert_uint_ge(n, 4);
    ck_assert_str_eq(types[0], "Gtid");
    ck_assert_msg(strncmp(infos[0], "XA START", 8) == 0, "first event: %s %s", types[0], infos[0]);
    size_t prep = 0;
    while (prep < n && strcmp(types[prep], "XA_prepare") != 0)
        prep++;
    ck_assert_msg(prep + 2 < n, "no XA_prepare event followed by a group");
    ck_assert_str_eq(types[prep - 1], "Query");
    ck_assert_msg(strncmp(infos[prep - 1], "XA END", 6) == 0, "%s", infos[prep - 1]);
    ck_assert_str_eq(types[prep + 1], "Gtid");
    ck_assert_str_eq(types[prep + 2], "Query");
    ck_assert_msg(strncmp(infos[prep + 2], "XA COMMIT", 9) == 0, "%s", infos[prep + 2]);

    sql(db, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
    db_close(db);
    struct range *rg = cal_calloc(1, sizeof(*rg));
    read_range(rg, SHARD, from, to, L, L);
    ck_assert_msg(rg->n == 1, "%zu events, want 1", rg->n);
    unsigned server;
    uint64_t seq;
    event_gtid(rg->values[0], &server, &seq);
    ck_assert_uint_eq(seq, from + 1);
    ck_assert_str_eq(json_string_value(json_object_get(rg->values[0], "op")), "u");
    ck_assert_str_eq(
        json_string_value(json_object_get(json_object_get(rg->values[0], "after"), "status")),
        "blocked");
    range_free(rg);
    free(rg);
    cleanup(L);
}
END_TEST

/* Shard 0's max_binlog_stmt_cache_size, which the incident test lowers.
 * Its unchecked fixture, in this process, puts it back before and after the
 * test (even a failed one), drops the scratch database and starts a new
 * binlog file: a relay that reconnects reads the file of its checkpoint
 * from the start, and would meet the incident again. */
static char stmt_cache_size[32];

static void
restore_after_incident(void)
{
    char sqltext[256];
    if (stmt_cache_size[0] == '\0') {
        admin_query(SHARD, "SELECT @@GLOBAL.max_binlog_stmt_cache_size", stmt_cache_size,
                    sizeof(stmt_cache_size));
        stmt_cache_size[strcspn(stmt_cache_size, "\n")] = '\0';
    }
    snprintf(sqltext, sizeof(sqltext),
             "SET GLOBAL max_binlog_stmt_cache_size = %s; DROP DATABASE IF EXISTS cdc_incident;"
             "FLUSH BINARY LOGS;",
             stmt_cache_size);
    if (testenv_sql_admin(&env, SHARD, sqltext) != 0)
        fprintf(stderr, "check_cdc_relay: %s failed\n", sqltext);
}

/* The truncate events at an incident's position (its file and pos in their
 * source), per relayed table; the marker is an event of marker_listing. */
struct incident_reader {
    const char *file;
    unsigned long pos;
    uint64_t marker_listing;
    size_t truncates[3];
};

static int
see_incident(struct kafka_test_msg *m, json_t *value, size_t table, void *arg)
{
    struct incident_reader *ir = arg;
    json_t *src = json_object_get(value, "source");
    const char *file = json_string_value(json_object_get(src, "file"));
    if (strcmp(json_string_value(json_object_get(value, "op")), "t") == 0 && table < 3 &&
        file != NULL && strcmp(file, ir->file) == 0 &&
        (unsigned long)json_integer_value(json_object_get(src, "pos")) == ir->pos) {
        assert_truncate(m, value, relayed[table]);
        ir->truncates[table]++;
    }
    return row_listing(value) == ir->marker_listing ? SEEN_MARKER : 0;
}

/* An Incident event (LOST_EVENTS), as a release build of MariaDB writes it:
 * a MyISAM row whose binlog image overflows max_binlog_stmt_cache_size is
 * stored (nothing to roll back) but not logged. No event says what changed:
 * the relay publishes a truncate event of every relayed table, at the
 * incident's position, and goes on (a transaction after it arrives). */
START_TEST(incident_event_flushes_every_relayed_table)
{
    char out[16384], file[128], q[256], sqltext[256];
    unsigned long pos;
    admin_query(SHARD, "SHOW MASTER STATUS", out, sizeof(out));
    ck_assert_msg(sscanf(out, "%127s %lu", file, &pos) == 2, "SHOW MASTER STATUS: %s", out);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD,
                                       "CREATE DATABASE cdc_incident; CREATE TABLE cdc_incident.m "
                                       "(id INT PRIMARY KEY, b LONGBLOB) ENGINE=MyISAM;"
                                       "SET GLOBAL max_binlog_stmt_cache_size = 4096;"),
                     0);
    /* Fails with ER_STMT_CACHE_FULL, the row stored all the same. */
    ck_assert_int_ne(
        testenv_sql_admin(&env, SHARD,
                          "INSERT INTO cdc_incident.m VALUES (1, REPEAT('a', 100000));"),
        0);
    snprintf(sqltext, sizeof(sqltext), "SET GLOBAL max_binlog_stmt_cache_size = %s;",
             stmt_cache_size);
    ck_assert_int_eq(testenv_sql_admin(&env, SHARD, sqltext), 0);

    /* The incident's place in the binlog. */
    snprintf(q, sizeof(q), "SHOW BINLOG EVENTS IN '%s' FROM %lu", file, pos);
    admin_query(SHARD, q, out, sizeof(out));
    char ifile[128] = "";
    unsigned long ipos = 0;
    for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char name[128], type[32];
        unsigned long p;
        if (sscanf(line, "%127s %lu %31s", name, &p, type) == 3 && strcmp(type, "Incident") == 0) {
            cal_strlcpy(ifile, name, sizeof(ifile));
            ipos = p;
        }
    }
    ck_assert_msg(ifile[0] != '\0', "no Incident event in %s from %lu", file, pos);

    /* A transaction after it; then every event up to it. */
    struct db *db = shard();
    uint64_t L = new_listing(db);
    db_close(db);
    struct incident_reader ir = {.file = ifile, .pos = ipos, .marker_listing = L};
    char what[128];
    snprintf(what, sizeof(what), "event of listing %" PRIu64 " after the incident", L);
    read_shard(SHARD, what, see_incident, &ir);
    for (size_t i = 0; i < 3; i++)
        ck_assert_msg(ir.truncates[i] >= 1, "no truncate event of %s at the incident (%s:%lu)",
                      relayed[i], ifile, ipos);
    cleanup(L);
}
END_TEST

/* What writes a shard in normal operation publishes no truncate event, so
 * never flushes the cache: calendard's bookings and cancellations, its group
 * commit's savepoints (SAVEPOINT b / ROLLBACK TO SAVEPOINT b, as it writes
 * them when a booking of the group fails), calendar-admin migrate (CREATE
 * TABLE IF NOT EXISTS ...), and an online move of a vbucket to the other
 * shard and back with calendar-rebalance. */
START_TEST(normal_operation_publishes_no_truncate)
{
    char err[256], out[4096];
    struct db *db0 = shard();
    struct db *db1 = testenv_connect_shard(&env, 1, err, sizeof(err));
    ck_assert_msg(db1 != NULL, "%s", err);
    uint64_t L = owned_listing(db0), M = owned_listing(db1);
    uint64_t from0 = binlog_seq(0), from1 = binlog_seq(1);

    struct http_client *h = http_client_create();
    struct http_response r;
    http_response_init(&r);
    ck_assert_int_eq(http_requestf(h, "PUT", NULL,
                                   "{\"default_price\":1000,\"currency\":\"USD\","
                                   "\"min_nights\":1,\"max_nights\":9}",
                                   &r, err, sizeof(err), "%s/v1/listings/%" PRIu64,
                                   env.calendard_url, L),
                     CAL_OK);
    ck_assert_int_eq(r.status, 201);
    http_response_deinit(&r);
    char d1[11], d2[11], body[256], key[64];
    testenv_format_date(testenv_today() + 40, d1, sizeof(d1));
    testenv_format_date(testenv_today() + 42, d2, sizeof(d2));
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":7}", d1,
             d2);
    snprintf(key, sizeof(key), "Idempotency-Key: cdc-%" PRIu64, L);
    const char *headers[] = {key, NULL};
    http_response_init(&r);
    ck_assert_int_eq(http_requestf(h, "POST", headers, body, &r, err, sizeof(err),
                                   "%s/v1/listings/%" PRIu64 "/reservations", env.calendard_url, L),
                     CAL_OK);
    ck_assert_msg(r.status == 201, "booking: %ld %s", r.status, r.body);
    json_t *res = http_response_json(&r);
    json_int_t rid = json_integer_value(json_object_get(res, "reservation_id"));
    json_decref(res);
    http_response_deinit(&r);
    http_response_init(&r);
    ck_assert_int_eq(http_requestf(h, "POST", NULL, "{}", &r, err, sizeof(err),
                                   "%s/v1/listings/%" PRIu64 "/reservations/%lld/cancel",
                                   env.calendard_url, L, (long long)rid),
                     CAL_OK);
    ck_assert_msg(r.status == 200, "cancel: %ld %s", r.status, r.body);
    http_response_deinit(&r);
    http_client_destroy(h);

    /* Three "bookings", the second rolled back: the binlog gets "SAVEPOINT
     * `b`" (one taken after a change). */
    sql(db0, "BEGIN");
    for (int i = 0; i < 3; i++) {
        sql(db0, "SAVEPOINT b");
        sql(db0, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
        if (i == 1)
            sql(db0, "ROLLBACK TO SAVEPOINT b");
    }
    sql(db0, "COMMIT");
    db_close(db0);

    char *migrate[] = {"bin/calendar-admin", "--config", admin_config, "migrate", NULL};
    ck_assert_msg(proc_run(migrate, out, sizeof(out), 60) == 0, "migrate: %s", out);
    char vb[16];
    snprintf(vb, sizeof(vb), "%u", testenv_vbucket(L));
    for (int to_shard = 1; to_shard >= 0; to_shard--) {
        char *move[] = {
            "bin/calendar-rebalance", "--config", admin_config, "move", "--vbucket", vb, "--to",
            to_shard ? "1" : "0",     NULL};
        ck_assert_msg(proc_run(move, out, sizeof(out), 120) == 0, "move to %d: %s", to_shard, out);
    }
    uint64_t to0 = binlog_seq(0), to1 = binlog_seq(1);
    db0 = shard();
    sql(db0, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
    db_close(db0);
    sql(db1,
        "INSERT INTO listings (listing_id, vbucket, default_price, currency, min_nights, "
        "max_nights) VALUES (%" PRIu64 ", %u, 100, 'EUR', 1, 30)",
        M, testenv_vbucket(M));

    struct range *rg = cal_calloc(1, sizeof(*rg));
    for (size_t idx = 0; idx < 2; idx++) {
        read_range(rg, idx, idx == 0 ? from0 : from1, idx == 0 ? to0 : to1, idx == 0 ? L : M, L);
        for (size_t t = 0; t < 3; t++)
            ck_assert_msg(rg->truncates[t] == 0, "shard %zu: %zu truncate events of %s", idx,
                          rg->truncates[t], relayed[t]);
        /* The range was read: the booking on shard 0, the move's copy on 1. */
        bool of_l = false;
        for (size_t i = 0; i < rg->n; i++)
            of_l = of_l || row_listing(rg->values[i]) == L;
        ck_assert_msg(of_l, "shard %zu: no event of listing %" PRIu64 " among %zu", idx, L, rg->n);
        range_free(rg);
    }
    free(rg);
    sql(db1, "DELETE FROM listings WHERE listing_id = %" PRIu64, M);
    db_close(db1);
    cleanup(L);
}
END_TEST

static pid_t
relay_pid(void)
{
    char path[1024], buf[32] = {0};
    snprintf(path, sizeof(path), "%s/run/%s.pid", env.stack_dir, RELAY_NAME);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no PID file %s", path);
    ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
    fclose(f);
    pid_t pid = (pid_t)atol(buf);
    ck_assert_int_gt(pid, 1);
    return pid;
}

/* A first start (no checkpoint) whose shard does not answer yet, then a
 * stop: no checkpoint may be written, since the relay does not know the
 * shard's position. An empty one would make the next start read the
 * binlogs from the shard's first GTID (or fail once they were purged)
 * instead of from its position then. */
/* A relay of shard 0's database of the test's own, in dir (made from a
 * mkdtemp template, or made already when dir has no XXXXXX: config, log,
 * checkpoint): source port, Kafka bootstrap, topic prefix and server_id as
 * given, and extra lines for its [kafka] and [relay] sections. */
static pid_t
start_own_relay(char *dir, unsigned port, const char *servers, const char *topic_prefix,
                unsigned server_id, const char *kafka_extra, const char *relay_extra)
{
    char path[600], text[2048], pw[512], log[600];
    if (strstr(dir, "XXXXXX") != NULL)
        ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(kafka_test_env_get(env.path, "REPL_PASSWORD_FILE", pw, sizeof(pw)), CAL_OK);
    snprintf(text, sizeof(text),
             "[source]\nhost = 127.0.0.1\nport = %u\ndatabase = %s\nuser = cal_repl\n"
             "password_file = %s\nserver_id = %u\n[kafka]\nbootstrap_servers = %s\n"
             "topic_prefix = %s\n%s[relay]\nstate_dir = %s\n%s[log]\nlevel = info\n",
             port, SHARD_DB, pw, server_id, servers, topic_prefix, kafka_extra, dir, relay_extra);
    snprintf(path, sizeof(path), "%s/relay.ini", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    snprintf(log, sizeof(log), "%s/relay.log", dir);
    char *argv[] = {"bin/calendar-cdc-relay", "--config", path, NULL};
    pid_t pid = proc_start(argv, log);
    ck_assert_int_gt(pid, 0);
    return pid;
}

START_TEST(no_checkpoint_before_the_shard_answered)
{
    char dir[] = "/tmp/check_relay_XXXXXX", path[600], text[2048];
    /* Port 1: nothing listens there, the connect is refused at once. */
    pid_t pid = start_own_relay(dir, 1, bootstrap, prefix, 4242, "", "");
    char log[600], checkpoint[600];
    snprintf(path, sizeof(path), "%s/relay.ini", dir);
    snprintf(log, sizeof(log), "%s/relay.log", dir);
    snprintf(checkpoint, sizeof(checkpoint), "%s/checkpoint", dir);
    /* Once the relay has tried the shard (its start is slow under the
     * sanitizers), several checkpoint rounds of the producer's poller
     * (every 50 ms) and connect retries. */
    ck_assert_msg(proc_log_has_within(log, "binlog connect failed", 30000),
                  "the relay never tried the shard (see %s)", log);
    cal_sleep_ms(500);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_int_eq(proc_wait(pid, 30), 0);
    ck_assert_msg(access(checkpoint, F_OK) != 0, "a checkpoint was written before the shard"
                                                 " answered");
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    ck_assert_msg(strstr(text, "binlog connect failed") != NULL, "relay log:\n%s", text);
    unlink(log);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* Lines of the file at path holding needle. */
static int
count_lines_with(const char *path, const char *needle)
{
    char line[4096];
    int n = 0;
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* A position the shard refuses at once (here a checkpoint past its binlog:
 * error 1236) is tried again with a growing wait, as a refused connect is,
 * not every 100 ms: in 8 s from the first refusal with reconnect_max_ms
 * 5000, 100 + 200 + ... ms apart, at most 8 tries and as many log lines. */
START_TEST(a_position_that_fails_at_once_is_retried_with_a_growing_wait)
{
    char dir[] = "/tmp/check_relay_XXXXXX", path[600], log[600];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/checkpoint", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("gtid=0-1-999999999\nfile=binlog.000001\npos=4\nupdated_ms=1\n", f);
    fclose(f);
    struct db_conf sc;
    char err[256];
    memset(&sc, 0, sizeof(sc));
    ck_assert(db_conf_parse_dsn(&sc, env.shard_dsns[SHARD], err, sizeof(err)) == CAL_OK);
    pid_t pid = start_own_relay(dir, sc.port, bootstrap, prefix, 4244, "", "");
    snprintf(log, sizeof(log), "%s/relay.log", dir);
    /* The 8 s from the first refusal: a relay under a sanitizer on a
     * loaded machine takes seconds to start. */
    ck_assert_msg(proc_log_has_within(log, "not in the master's binlog", 30000), "no 1236 in %s",
                  log);
    cal_sleep_ms(8000);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    ck_assert_int_eq(proc_wait(pid, 30), 0);
    int tries = count_lines_with(log, "msg=\"streaming\""),
        logged = count_lines_with(log, "msg=\"stream ");
    ck_assert_msg(count_lines_with(log, "not in the master's binlog") > 0, "no 1236 in %s", log);
    /* The TERM may come between a try's start and its interruption. */
    ck_assert_msg(tries >= 3 && tries <= 8 && (logged == tries || logged == tries - 1),
                  "%d tries and %d interruption lines in 8 s (want 3 to 8, one each)", tries,
                  logged);
    unlink(log);
    unlink(path);
    snprintf(path, sizeof(path), "%s/relay.ini", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* What arrived of a listing's versions 1..max. */
struct versions {
    size_t distinct, total, regressions;
};

/* Consumes topic t at servers (nparts partitions) until every version
 * 1..max of listing L arrived (asserted, within 60 s). Within a delivery
 * run versions come in order; a resend after a restart or a rewind starts
 * over (counted in regressions). */
static void
collect_versions(const char *servers, const char *t, int32_t nparts, uint64_t L, int max,
                 struct versions *out)
{
    const char *topics[] = {t, NULL};
    char err[256];
    struct kafka_test_consumer *kc = kafka_test_consumer_create(servers, topics, err, sizeof(err));
    ck_assert_msg(kc != NULL, "%s", err);
    bool *seen = cal_calloc((size_t)max + 1, sizeof(*seen));
    *out = (struct versions){0};
    int64_t last_version = 0;
    uint64_t deadline = cal_mono_us() + 60 * 1000000ULL;
    while (out->distinct < (size_t)max && cal_mono_us() < deadline) {
        struct kafka_test_msg m;
        int rc = kafka_test_consume(kc, 200, &m, err, sizeof(err));
        ck_assert_msg(rc >= 0, "%s", err);
        if (rc == 0)
            continue;
        json_t *value = json_loads(m.value, 0, NULL);
        ck_assert_ptr_nonnull(value);
        json_t *after = json_object_get(value, "after");
        if (json_is_object(after) &&
            (uint64_t)json_integer_value(json_object_get(after, "listing_id")) == L) {
            ck_assert_int_eq(m.partition, event_partition(L, nparts));
            int64_t v = json_integer_value(json_object_get(after, "version"));
            ck_assert_msg(v >= 1 && v <= max, "version %" PRId64, v);
            if (v < last_version)
                out->regressions++;
            else
                ck_assert_msg(v == last_version || v == last_version + 1,
                              "gap: version %" PRId64 " after %" PRId64, v, last_version);
            last_version = v;
            out->total++;
            if (!seen[v]) {
                seen[v] = true;
                out->distinct++;
            }
        }
        json_decref(value);
        kafka_test_msg_free(&m);
    }
    kafka_test_consumer_destroy(kc);
    for (int v = 1; v <= max; v++)
        ck_assert_msg(seen[v], "version %d never arrived (%zu of %d distinct)", v, out->distinct,
                      max);
    free(seen);
}

/* SIGKILL mid-stream, more writes, restart: every version of the listing
 * must arrive (duplicates allowed), in order within each delivery run. */
START_TEST(kill_9_mid_stream_loses_nothing)
{
    enum { UPDATES = 1500, KILL_AT = 400 };
    struct db *db = shard();
    uint64_t L = new_listing(db);
    pid_t killed = 0;
    uint64_t t0 = cal_mono_us();
    for (int k = 0; k < UPDATES; k++) {
        sql(db, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
        if (k == KILL_AT) {
            killed = relay_pid();
            ck_assert_int_eq(kill(killed, SIGKILL), 0);
        }
    }
    uint64_t write_us = cal_mono_us() - t0;
    db_close(db);

    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s restart %s --dir %s >/dev/null", stack_sh, RELAY_NAME,
             env.stack_dir);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
    pid_t restarted = relay_pid();
    ck_assert_int_ne(restarted, killed);
    ck_assert_msg(kill(restarted, 0) == 0, "the restarted relay (pid %d) is not running",
                  (int)restarted);

    char tl[256];
    topic(tl, sizeof(tl), "listings");
    uint64_t t1 = cal_mono_us();
    struct versions got;
    collect_versions(bootstrap, tl, partitions, L, UPDATES + 1, &got);
    ck_assert_int_le(got.regressions, 1);
    cleanup(L);
    fprintf(stderr,
            "kill -9 test: %d single-row transactions written in %.2f s (%.0f/s), %zu events "
            "consumed (%zu duplicates) %.2f s after the restart\n",
            UPDATES + 1, (double)write_us / 1e6, (UPDATES + 1) / ((double)write_us / 1e6),
            got.total, got.total - got.distinct, (double)(cal_mono_us() - t1) / 1e6);
}
END_TEST

/* Read-ahead bounded (max_pending_txns 10) by a broker that answers every
 * request 50 ms late, so the binlog reader waits for room again and again;
 * then the broker goes away for 3 s while the queue is full (deliveries
 * fail after message_timeout_ms, 1 s), and comes back. Every version of
 * the listing arrives, in order within each delivery run, and some
 * delivery failed on the way. */
START_TEST(a_full_queue_waits_and_a_lost_broker_loses_nothing)
{
    enum { UPDATES = 300, DOWN_AT = 100, UP_AT = 200 };
    char kerr[512], err[256], pfx[64], tl[256];
    rd_kafka_conf_t *kconf = rd_kafka_conf_new();
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, kerr, sizeof(kerr));
    ck_assert_msg(rk != NULL, "%s", kerr);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
    ck_assert_ptr_nonnull(mc);
    const char *servers = rd_kafka_mock_cluster_bootstraps(mc);
    snprintf(pfx, sizeof(pfx), "bp%llu", (unsigned long long)(testenv_random48() % 1000000));
    ck_assert_int_eq(event_topic(tl, sizeof(tl), pfx, SHARD_DB, "listings"), CAL_OK);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, tl, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rd_kafka_mock_broker_set_rtt(mc, 1, 50), RD_KAFKA_RESP_ERR_NO_ERROR);

    struct db_conf sc;
    memset(&sc, 0, sizeof(sc));
    ck_assert(db_conf_parse_dsn(&sc, env.shard_dsns[SHARD], err, sizeof(err)) == CAL_OK);
    char dir[] = "/tmp/check_relay_XXXXXX", log[600];
    pid_t pid = start_own_relay(dir, sc.port, servers, pfx, 4243,
                                "linger_ms = 1\nmessage_timeout_ms = 1000\n",
                                "max_pending_txns = 10\nreconnect_max_ms = 500\n");
    snprintf(log, sizeof(log), "%s/relay.log", dir);
    ck_assert_msg(proc_log_has_within(log, "msg=\"streaming\"", 20000), "the relay never streamed");

    struct db *db = shard();
    uint64_t L = new_listing(db);
    for (int k = 0; k < UPDATES; k++) {
        if (k == DOWN_AT)
            ck_assert_int_eq(rd_kafka_mock_broker_set_down(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
        if (k == UP_AT) {
            cal_sleep_ms(3000);
            ck_assert_int_eq(rd_kafka_mock_broker_set_up(mc, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        sql(db, "UPDATE listings SET version = version + 1 WHERE listing_id = %" PRIu64, L);
        /* The relay asks for the topic's partitions at its first event and
         * holds every event until the answer: a broker gone before that
         * would find nothing queued to fail. */
        if (k == 0)
            ck_assert_msg(proc_log_has_within(log, "msg=\"topic ready\"", 20000),
                          "the relay never got the topic's partitions (see %s)", log);
    }
    db_close(db);
    struct versions got;
    collect_versions(servers, tl, 1, L, UPDATES + 1, &got);
    bool failed_seen = proc_log_has_within(log, "kafka delivery failed", 0);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    int rc = proc_wait(pid, 30);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    cleanup(L);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(failed_seen, "the broker's absence failed no delivery (see %s)", log);
    fprintf(stderr, "backpressure test: %zu events of %d versions (%zu duplicates)\n", got.total,
            UPDATES + 1, got.total - got.distinct);
}
END_TEST

static Suite *
suite(void)
{
    Suite *s = suite_create("cdc_relay");
    TCase *tc = tcase_create("row_changes_arrive_as_exact_events");
    tcase_add_test(tc, row_changes_arrive_as_exact_events);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("other_tables_never_stop_the_relay");
    tcase_add_test(tc, other_tables_never_stop_the_relay);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("compressed_columns_are_decoded");
    tcase_add_unchecked_fixture(tc, drop_test_columns, drop_test_columns);
    tcase_add_test(tc, compressed_columns_are_decoded);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    tc = tcase_create("a_shard_without_row_metadata_is_refused");
    tcase_add_unchecked_fixture(tc, row_metadata_full, row_metadata_full);
    tcase_add_test(tc, a_shard_without_row_metadata_is_refused);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("a_database_the_shard_lacks_is_refused");
    tcase_add_test(tc, a_database_the_shard_lacks_is_refused);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("an_oversized_change_is_sent_cut_to_its_key");
    tcase_add_unchecked_fixture(tc, drop_test_columns, drop_test_columns);
    tcase_add_test(tc, an_oversized_change_is_sent_cut_to_its_key);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    tc = tcase_create("truncate_of_a_relayed_table_is_a_truncate_event");
    tcase_add_test(tc, truncate_of_a_relayed_table_is_a_truncate_event);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    tc = tcase_create("statement_logged_changes_are_truncate_events");
    tcase_add_test(tc, statement_logged_changes_are_truncate_events);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    tc = tcase_create("minimal_row_images_name_their_listing");
    tcase_add_test(tc, minimal_row_images_name_their_listing);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    tc = tcase_create("xa_transaction_is_published_at_prepare");
    tcase_add_test(tc, xa_transaction_is_published_at_prepare);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    tc = tcase_create("incident_event_flushes_every_relayed_table");
    tcase_add_unchecked_fixture(tc, restore_after_incident, restore_after_incident);
    tcase_add_test(tc, incident_event_flushes_every_relayed_table);
    tcase_set_timeout(tc, 90);
    suite_add_tcase(s, tc);
    tc = tcase_create("normal_operation_publishes_no_truncate");
    tcase_add_test(tc, normal_operation_publishes_no_truncate);
    tcase_set_timeout(tc, 300);
    suite_add_tcase(s, tc);
    tc = tcase_create("no_checkpoint_before_the_shard_answered");
    tcase_add_test(tc, no_checkpoint_before_the_shard_answered);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("a_position_that_fails_at_once_is_retried_with_a_growing_wait");
    tcase_add_test(tc, a_position_that_fails_at_once_is_retried_with_a_growing_wait);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("a_full_queue_waits_and_a_lost_broker_loses_nothing");
    tcase_add_test(tc, a_full_queue_waits_and_a_lost_broker_loses_nothing);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    tc = tcase_create("kill_9_mid_stream_loses_nothing");
    tcase_add_test(tc, kill_9_mid_stream_loses_nothing);
    tcase_set_timeout(tc, 180);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    char err[512];
    if (testenv_load(&env, NULL, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "check_cdc_relay: %s\n", err);
        return EXIT_FAILURE;
    }
    char buf[64];
    if (kafka_test_env_get(env.path, "KAFKA_BOOTSTRAP", bootstrap, sizeof(bootstrap)) != CAL_OK ||
        bootstrap[0] == '\0' ||
        kafka_test_env_get(env.path, "CDC_TOPIC_PREFIX", prefix, sizeof(prefix)) != CAL_OK ||
        kafka_test_env_get(env.path, "STACK_SH", stack_sh, sizeof(stack_sh)) != CAL_OK ||
        kafka_test_env_get(env.path, "ADMIN_CONFIG", admin_config, sizeof(admin_config)) !=
            CAL_OK) {
        fprintf(stderr,
                "check_cdc_relay: %s lacks KAFKA_BOOTSTRAP, CDC_TOPIC_PREFIX, STACK_SH or "
                "ADMIN_CONFIG "
                "(stack started without the CDC processes?)\n",
                env.path);
        return EXIT_FAILURE;
    }
    if (strncmp(bootstrap, "127.0.0.1:", 10) != 0) {
        fprintf(stderr, "check_cdc_relay: KAFKA_BOOTSTRAP %s is not on 127.0.0.1\n", bootstrap);
        return EXIT_FAILURE;
    }
    if (kafka_test_env_get(env.path, "CDC_PARTITIONS", buf, sizeof(buf)) == CAL_OK)
        partitions = (int32_t)atoi(buf);
    if (partitions <= 0)
        partitions = 8;
    http_global_init();
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
