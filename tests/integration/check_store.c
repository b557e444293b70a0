/* Integration tests of calendard's shard SQL against a real shard of the
 * stack: the plain booking transaction and the one-round-trip batch block
 * (versions, every failure status, one failure never failing another), the
 * calendar read touching only the nights of its range, the bounded
 * prepared-statement cache (and the server's limit on statements), and the
 * group commit's lanes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/batch.h"
#include "calendard/booking.h"
#include "calendard/store.h"
#include "common/db.h"
#include "common/util.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

static struct testenv env;
static struct db *db; /* shard 0 */
static int32_t today;

static void
setup(void)
{
    char err[256];
    ck_assert_msg(testenv_load(&env, NULL, err, sizeof(err)) == CAL_OK, "%s", err);
    db = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    today = (int32_t)testenv_today();
}

static void
teardown(void)
{
    db_close(db);
    db = NULL;
}

static int64_t
query_int_with(struct db *on, const char *sql, const struct db_val *p, size_t np)
{
    char err[256];
    struct db_stmt *st;
    struct db_val c[1];
    ck_assert_msg(db_query(on, sql, p, np, &st, err, sizeof(err)) == CAL_OK, "%s: %s", sql, err);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    int64_t v = c[0].type == DB_INT ? c[0].i : c[0].type == DB_STR ? atoll(c[0].s) : -1;
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    return v;
}

static int64_t
query_int(const char *sql, const struct db_val *p, size_t np)
{
    return query_int_with(db, sql, p, np);
}

/* A counter of SHOW <scope> STATUS (SESSION: the test's connection's own;
 * GLOBAL: shard 0's). */
static int64_t
status_of(const char *scope, const char *name)
{
    char err[256], sql[128];
    struct db_stmt *st;
    struct db_val c[2];
    snprintf(sql, sizeof(sql), "SHOW %s STATUS LIKE '%s'", scope, name);
    ck_assert_msg(db_query(db, sql, NULL, 0, &st, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(db_fetch(st, c, 2, err, sizeof(err)), 1);
    int64_t v = atoll(c[1].s);
    while (db_fetch(st, c, 2, err, sizeof(err)) > 0)
        ;
    return v;
}

static int64_t
session_status(const char *name)
{
    return status_of("SESSION", name);
}

static int64_t
global_status(const char *name)
{
    return status_of("GLOBAL", name);
}

/* A vbucket that shard 0 does not own. */
static uint32_t
foreign_vbucket(void)
{
    for (uint32_t vb = 0;; vb++) {
        struct db_val q[1] = {DB_INT_V(vb)};
        if (query_int("SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", q, 1) == 0)
            return vb;
    }
}

/* A fresh listing whose vbucket shard 0 owns, priced 100 a night; its id
 * has the bits of high set besides 48 random ones. */
static struct listing
new_listing_with(uint64_t high)
{
    char err[256];
    for (;;) {
        uint64_t id = high | testenv_random48();
        uint32_t vb = testenv_vbucket(id);
        struct db_val p[1] = {DB_INT_V(vb)};
        if (query_int("SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", p, 1) == 0)
            continue;
        struct listing_settings set = {.default_price = 100, .min_nights = 1, .max_nights = 30};
        memcpy(set.currency, "EUR", 4);
        struct listing l;
        int created;
        ck_assert_msg(store_put_listing(db, vb, id, &set, &created, &l, err, sizeof(err)) == CAL_OK,
                      "%s", err);
        ck_assert_int_eq(created, 1);
        return l;
    }
}

static struct listing
new_listing(void)
{
    return new_listing_with(0);
}

/* A planned booking of [in, out), as calendard plans it: read, then plan. */
struct planned {
    struct calendar_read read;
    struct booking_plan plan;
    struct reservation res;
    char key[32];
};

/* Plans pl's booking of [in, out) of l on pl->read, as calendard does:
 * false if a night is unavailable. */
static bool
plan_read(struct planned *pl, const struct listing *l, int32_t in, int32_t out)
{
    static uint64_t next_id;
    booking_plan_make(&pl->read.listing, pl->read.rows, pl->read.nrows, in, out, &pl->plan);
    if (pl->plan.nunavailable > 0)
        return false;
    uint64_t unset = 0;
    __atomic_compare_exchange_n(&next_id, &unset, testenv_random48() << 4, false, __ATOMIC_RELAXED,
                                __ATOMIC_RELAXED);
    pl->res =
        (struct reservation){.reservation_id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED),
                             .listing_id = l->listing_id,
                             .check_in = in,
                             .check_out = out,
                             .guest_id = 9,
                             .total_price = pl->plan.total_price};
    memcpy(pl->res.currency, "EUR", 4);
    memcpy(pl->res.request_hash, "00112233aabbccdd", 17);
    snprintf(pl->key, sizeof(pl->key), "k-%llu", (unsigned long long)pl->res.reservation_id);
    return true;
}

static void
plan(struct planned *pl, const struct listing *l, int32_t in, int32_t out)
{
    char err[256];
    memset(pl, 0, sizeof(*pl));
    ck_assert_msg(store_read_calendar(db, l->vbucket, l->listing_id, in, out, &pl->read, err,
                                      sizeof(err)) == CAL_OK,
                  "%s", err);
    ck_assert(pl->read.found);
    ck_assert(plan_read(pl, l, in, out));
}

static struct store_booking
booking_of(struct planned *pl)
{
    return (struct store_booking){.listing = &pl->read.listing,
                                  .plan = &pl->plan,
                                  .res = &pl->res,
                                  .key = pl->key,
                                  .keylen = strlen(pl->key)};
}

/* Which form book_alone() uses: the plain statements or the one-round-trip block. */
static bool alone_as_block;

static cal_status
book_alone(struct planned *pl)
{
    char err[256];
    if (alone_as_block)
        return store_book_one(db, &pl->read.listing, &pl->plan, &pl->res, pl->key, strlen(pl->key),
                              err, sizeof(err));
    return store_book(db, &pl->read.listing, &pl->plan, &pl->res, pl->key, strlen(pl->key), err,
                      sizeof(err));
}

static int64_t
booked_nights(uint64_t reservation_id)
{
    struct db_val p[1] = {DB_INT_V(reservation_id)};
    return query_int("SELECT COUNT(*) FROM nights WHERE reservation_id = ? AND status = 'booked'",
                     p, 1);
}

static int64_t
reservation_version(uint64_t reservation_id)
{
    struct db_val p[1] = {DB_INT_V(reservation_id)};
    return query_int("SELECT IFNULL(MAX(version), -1) FROM reservations WHERE reservation_id = ?",
                     p, 1);
}

static void
plan_clear(struct planned *pl)
{
    calendar_read_clear(&pl->read);
}

START_TEST(a_batch_commits_every_booking_with_its_own_version)
{
    char err[256];
    struct listing a = new_listing(), b = new_listing();
    /* b's night has a row (a price): the block version-checks it. */
    struct db_val p3[3] = {DB_INT_V(b.listing_id), DB_INT_V(today + 10 + DB_TO_DAYS_EPOCH),
                           DB_INT_V(b.vbucket)};
    ck_assert(db_query(db,
                       "INSERT INTO nights (listing_id, night, status, price, version, vbucket)"
                       " VALUES (?, FROM_DAYS(?), 'available', 120, 4, ?)",
                       p3, 3, NULL, err, sizeof(err)) == CAL_OK);
    struct planned pl[3];
    plan(&pl[0], &a, today + 10, today + 12);
    plan(&pl[1], &a, today + 12, today + 15); /* same listing, adjacent */
    plan(&pl[2], &b, today + 10, today + 11);
    ck_assert_uint_eq(pl[2].plan.nexisting, 1);
    struct store_booking sb[3] = {booking_of(&pl[0]), booking_of(&pl[1]), booking_of(&pl[2])};
    int64_t executed = session_status("Com_stmt_execute");
    store_book_many(db, sb, 3);
    /* One execution for the whole batch (the other is the SHOW). */
    ck_assert_int_eq(session_status("Com_stmt_execute") - executed, 2);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(sb[i].rc == CAL_OK, "booking %d: %s %s", i, cal_status_name(sb[i].rc),
                      sb[i].err);
    /* Each booking of a listing takes the next calendar version, in stay order. */
    ck_assert_uint_eq(pl[0].res.version, a.version + 1);
    ck_assert_uint_eq(pl[1].res.version, a.version + 2);
    ck_assert_uint_eq(pl[2].res.version, b.version + 1);
    struct db_val p[1] = {DB_INT_V(a.listing_id)};
    ck_assert_int_eq(query_int("SELECT version FROM listings WHERE listing_id = ?", p, 1),
                     (int64_t)a.version + 2);
    ck_assert_int_eq(booked_nights(pl[0].res.reservation_id), 2);
    ck_assert_int_eq(booked_nights(pl[1].res.reservation_id), 3);
    ck_assert_int_eq(booked_nights(pl[2].res.reservation_id), 1);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(reservation_version(pl[i].res.reservation_id), (int64_t)pl[i].res.version);
        plan_clear(&pl[i]);
    }
}
END_TEST

/* One side of opposite_batches_never_deadlock. */
struct batch_side {
    struct db *db;
    pthread_barrier_t *start;
    struct store_booking sb[2];
};

static void *
book_side(void *arg)
{
    struct batch_side *bs = arg;
    pthread_barrier_wait(bs->start);
    store_book_many(bs->db, bs->sb, 2);
    return NULL;
}

/* Two batches booking the same two listings (other nights) at once, one
 * listing first in one and second in the other: each locks the listings'
 * rows in id order, so neither waits for the other in a cycle (before,
 * batch order: InnoDB killed one as a deadlock, and its bookings went
 * again one savepoint each). */
START_TEST(opposite_batches_never_deadlock)
{
    char err[256];
    struct listing a = new_listing(), b = new_listing();
    struct db *dbs[2];
    for (int k = 0; k < 2; k++) {
        dbs[k] = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(dbs[k] != NULL, "%s", err);
    }
    int64_t deadlocks = global_status("Innodb_deadlocks");
    pthread_barrier_t start;
    for (int round = 0; round < 100; round++) {
        int32_t d = today + 20 + 2 * round;
        struct planned pl[4];
        plan(&pl[0], &a, d, d + 1);
        plan(&pl[1], &b, d, d + 1);
        plan(&pl[2], &b, d + 1, d + 2);
        plan(&pl[3], &a, d + 1, d + 2);
        struct batch_side side[2] = {
            {.db = dbs[0], .start = &start, .sb = {booking_of(&pl[0]), booking_of(&pl[1])}},
            {.db = dbs[1], .start = &start, .sb = {booking_of(&pl[2]), booking_of(&pl[3])}}};
        pthread_barrier_init(&start, NULL, 2);
        pthread_t t[2];
        for (int k = 0; k < 2; k++)
            pthread_create(&t[k], NULL, book_side, &side[k]);
        for (int k = 0; k < 2; k++)
            pthread_join(t[k], NULL);
        pthread_barrier_destroy(&start);
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < 2; i++)
                ck_assert_msg(side[k].sb[i].rc == CAL_OK, "round %d, side %d, booking %d: %s %s",
                              round, k, i, cal_status_name(side[k].sb[i].rc), side[k].sb[i].err);
        for (int i = 0; i < 4; i++) {
            ck_assert_int_eq(booked_nights(pl[i].res.reservation_id), 1);
            plan_clear(&pl[i]);
        }
    }
    ck_assert_int_eq(global_status("Innodb_deadlocks") - deadlocks, 0);
    for (int k = 0; k < 2; k++)
        db_close(dbs[k]);
}
END_TEST

START_TEST(a_conflict_fails_only_its_own_booking_of_the_batch)
{
    struct listing a = new_listing(), b = new_listing();
    struct planned stale, other, thief;
    plan(&stale, &a, today + 20, today + 23);
    plan(&other, &b, today + 20, today + 23);
    /* Someone books a night of the stale plan after it was read. */
    plan(&thief, &a, today + 22, today + 24);
    ck_assert_int_eq(book_alone(&thief), CAL_OK);
    struct store_booking sb[2] = {booking_of(&stale), booking_of(&other)};
    store_book_many(db, sb, 2);
    ck_assert_msg(sb[0].rc == CAL_ECONFLICT, "stale: %s", cal_status_name(sb[0].rc));
    ck_assert_msg(sb[1].rc == CAL_OK, "other: %s %s", cal_status_name(sb[1].rc), sb[1].err);
    ck_assert_int_eq(booked_nights(stale.res.reservation_id), 0);
    ck_assert_int_eq(reservation_version(stale.res.reservation_id), -1);
    ck_assert_int_eq(booked_nights(other.res.reservation_id), 3);
    ck_assert_int_eq(reservation_version(other.res.reservation_id), (int64_t)b.version + 1);
    plan_clear(&stale);
    plan_clear(&other);
    plan_clear(&thief);
}
END_TEST

/* The host sets l's default price: its rules version moves on. */
static struct listing
change_rules(const struct listing *l, int64_t price)
{
    char err[256];
    struct listing_settings set = {.default_price = price, .min_nights = 1, .max_nights = 30};
    memcpy(set.currency, "EUR", 4);
    struct listing out;
    int created;
    ck_assert_msg(store_put_listing(db, l->vbucket, l->listing_id, &set, &created, &out, err,
                                    sizeof(err)) == CAL_OK,
                  "%s", err);
    return out;
}

/* The block checks one rules version per listing: a booking planned
 * before the host changed the listing's settings must not commit beside
 * one planned after, whichever comes first in the batch. */
START_TEST(bookings_of_a_listing_planned_on_other_rules_fail_alone)
{
    struct listing a = new_listing();
    struct planned old_rules, new_rules;
    plan(&old_rules, &a, today + 30, today + 32);
    struct listing changed = change_rules(&a, 120);
    ck_assert_uint_ne(changed.rules_version, old_rules.read.listing.rules_version);
    plan(&new_rules, &a, today + 40, today + 42);
    struct store_booking sb[2] = {booking_of(&new_rules), booking_of(&old_rules)};
    store_book_many(db, sb, 2);
    ck_assert_msg(sb[0].rc == CAL_OK, "new rules: %s %s", cal_status_name(sb[0].rc), sb[0].err);
    ck_assert_msg(sb[1].rc == CAL_ECONFLICT, "old rules: %s", cal_status_name(sb[1].rc));
    ck_assert_int_eq(booked_nights(new_rules.res.reservation_id), 2);
    ck_assert_int_eq(booked_nights(old_rules.res.reservation_id), 0);
    plan_clear(&old_rules);
    plan_clear(&new_rules);
}
END_TEST

START_TEST(a_moved_or_replayed_booking_fails_alone_in_its_batch)
{
    struct listing a = new_listing(), b = new_listing(), c = new_listing();
    struct planned ok, moved, replay, first;
    plan(&first, &c, today + 70, today + 71);
    ck_assert_int_eq(book_alone(&first), CAL_OK);
    plan(&ok, &a, today + 70, today + 72);
    plan(&moved, &b, today + 70, today + 72);
    moved.read.listing.vbucket = foreign_vbucket();
    plan(&replay, &c, today + 80, today + 81);
    snprintf(replay.key, sizeof(replay.key), "%s", first.key);
    struct store_booking sb[3] = {booking_of(&ok), booking_of(&moved), booking_of(&replay)};
    store_book_many(db, sb, 3);
    ck_assert_msg(sb[0].rc == CAL_OK, "ok: %s %s", cal_status_name(sb[0].rc), sb[0].err);
    ck_assert_msg(sb[1].rc == CAL_EMOVED, "moved: %s", cal_status_name(sb[1].rc));
    ck_assert_msg(sb[2].rc == CAL_EDUP, "replay: %s", cal_status_name(sb[2].rc));
    ck_assert_int_eq(booked_nights(ok.res.reservation_id), 2);
    ck_assert_int_eq(booked_nights(moved.res.reservation_id), 0);
    ck_assert_int_eq(booked_nights(replay.res.reservation_id), 0);
    ck_assert_int_eq(reservation_version(ok.res.reservation_id), (int64_t)a.version + 1);
    plan_clear(&ok);
    plan_clear(&moved);
    plan_clear(&replay);
    plan_clear(&first);
}
END_TEST

START_TEST(a_rules_change_fails_only_the_bookings_planned_on_the_old_rules)
{
    struct listing a = new_listing(), b = new_listing();
    struct planned stale, fine;
    plan(&stale, &a, today + 90, today + 92);
    plan(&fine, &b, today + 90, today + 92);
    change_rules(&a, 90);
    struct store_booking sb[2] = {booking_of(&stale), booking_of(&fine)};
    store_book_many(db, sb, 2);
    ck_assert_msg(sb[0].rc == CAL_ECONFLICT, "stale: %s", cal_status_name(sb[0].rc));
    ck_assert_msg(sb[1].rc == CAL_OK, "fine: %s %s", cal_status_name(sb[1].rc), sb[1].err);
    ck_assert_int_eq(booked_nights(stale.res.reservation_id), 0);
    ck_assert_int_eq(booked_nights(fine.res.reservation_id), 2);
    plan_clear(&stale);
    plan_clear(&fine);
}
END_TEST

static void
lone_booking_statuses(void)
{
    char err[256];
    struct listing a = new_listing();
    struct db_val p[3];

    /* A night that had a row changed version since it was read. */
    p[0] = DB_INT_V(a.listing_id);
    p[1] = DB_INT_V(today + 30 + DB_TO_DAYS_EPOCH);
    p[2] = DB_INT_V(a.vbucket);
    ck_assert(db_query(db,
                       "INSERT INTO nights (listing_id, night, status, price, version, vbucket)"
                       " VALUES (?, FROM_DAYS(?), 'available', 120, 1, ?)",
                       p, 3, NULL, err, sizeof(err)) == CAL_OK);
    struct planned pl;
    plan(&pl, &a, today + 30, today + 32);
    ck_assert_uint_eq(pl.plan.nexisting, 1);
    ck_assert_uint_eq(pl.plan.nmissing, 1);
    ck_assert(db_query(db, "UPDATE nights SET version = version + 1 WHERE listing_id = ?", p, 1,
                       NULL, err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(book_alone(&pl), CAL_ECONFLICT);
    ck_assert_int_eq(reservation_version(pl.res.reservation_id), -1);
    plan_clear(&pl);

    /* Read again: the existing night's new version books (price kept). */
    plan(&pl, &a, today + 30, today + 32);
    ck_assert_int_eq(pl.plan.total_price, 220);
    ck_assert_int_eq(book_alone(&pl), CAL_OK);
    ck_assert_int_eq(booked_nights(pl.res.reservation_id), 2);

    /* The same idempotency key again, on other nights. */
    struct planned again;
    plan(&again, &a, today + 40, today + 41);
    snprintf(again.key, sizeof(again.key), "%s", pl.key);
    ck_assert_int_eq(book_alone(&again), CAL_EDUP);
    ck_assert_int_eq(booked_nights(again.res.reservation_id), 0);
    plan_clear(&again);

    /* The rules changed since the read. */
    plan(&again, &a, today + 50, today + 51);
    change_rules(&a, 90);
    ck_assert_int_eq(book_alone(&again), CAL_ECONFLICT);
    ck_assert_int_eq(booked_nights(again.res.reservation_id), 0);
    plan_clear(&again);

    /* A vbucket this shard does not own: no fence row. */
    plan(&again, &a, today + 60, today + 61);
    again.read.listing.vbucket = foreign_vbucket();
    ck_assert_int_eq(book_alone(&again), CAL_EMOVED);
    ck_assert_int_eq(booked_nights(again.res.reservation_id), 0);
    plan_clear(&again);
    plan_clear(&pl);
}

START_TEST(a_lone_booking_answers_every_failure_status)
{
    alone_as_block = false;
    lone_booking_statuses();
}
END_TEST

START_TEST(a_lone_booking_block_answers_every_failure_status)
{
    alone_as_block = true;
    char err[256];
    struct listing a = new_listing();
    struct planned pl;
    plan(&pl, &a, today + 3, today + 5);
    int64_t executed = session_status("Com_stmt_execute");
    ck_assert_int_eq(store_book_one(db, &pl.read.listing, &pl.plan, &pl.res, pl.key, strlen(pl.key),
                                    err, sizeof(err)),
                     CAL_OK);
    /* One execution for the whole transaction (the other is the SHOW). */
    ck_assert_int_eq(session_status("Com_stmt_execute") - executed, 2);
    ck_assert_uint_eq(pl.res.version, a.version + 1);
    ck_assert_int_eq(reservation_version(pl.res.reservation_id), (int64_t)a.version + 1);
    ck_assert_int_eq(booked_nights(pl.res.reservation_id), 2);
    plan_clear(&pl);
    lone_booking_statuses();
}
END_TEST

START_TEST(keys_with_quotes_and_backslashes_are_stored_as_sent)
{
    struct listing a = new_listing();
    struct planned pl;
    plan(&pl, &a, today + 5, today + 6);
    snprintf(pl.key, sizeof(pl.key), "a\"b\\c'd");
    ck_assert_int_eq(book_alone(&pl), CAL_OK);
    struct reservation r;
    char err[256];
    ck_assert(store_find_by_key(db, a.vbucket, a.listing_id, "a\"b\\c'd", 7, &r, err,
                                sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(r.reservation_id, pl.res.reservation_id);
    plan_clear(&pl);

    /* A group commit carries its keys inside a JSON document that the
     * shard takes apart (JSON_TABLE): stored unescaped too. */
    struct listing b = new_listing(), c = new_listing();
    static const char *const keys[] = {"x\"y\\z", "\\\"\\"};
    struct planned two[2];
    plan(&two[0], &b, today + 5, today + 6);
    plan(&two[1], &c, today + 5, today + 6);
    for (int i = 0; i < 2; i++)
        snprintf(two[i].key, sizeof(two[i].key), "%s", keys[i]);
    struct store_booking sb[2] = {booking_of(&two[0]), booking_of(&two[1])};
    int64_t executed = session_status("Com_stmt_execute");
    store_book_many(db, sb, 2);
    ck_assert_int_eq(session_status("Com_stmt_execute") - executed, 2); /* the block and the SHOW */
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(sb[i].rc == CAL_OK, "booking %d: %s %s", i, cal_status_name(sb[i].rc),
                      sb[i].err);
        const struct listing *l = i == 0 ? &b : &c;
        ck_assert_msg(store_find_by_key(db, l->vbucket, l->listing_id, keys[i], strlen(keys[i]), &r,
                                        err, sizeof(err)) == CAL_OK,
                      "key %s not found as sent: %s", keys[i], err);
        ck_assert_uint_eq(r.reservation_id, two[i].res.reservation_id);
        plan_clear(&two[i]);
    }
}
END_TEST

/* A replay's lookup is fenced: on a shard that does not own the vbucket
 * (after a move, its copy may be stale or gone) it answers moved, even for
 * a key it still holds, and not found only on the owner. */
START_TEST(the_key_lookup_is_fenced)
{
    struct listing a = new_listing();
    struct planned pl;
    plan(&pl, &a, today + 7, today + 8);
    ck_assert_int_eq(book_alone(&pl), CAL_OK);
    struct reservation r;
    char err[256];
    size_t klen = strlen(pl.key);
    ck_assert_int_eq(
        store_find_by_key(db, a.vbucket, a.listing_id, pl.key, klen, &r, err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(r.reservation_id, pl.res.reservation_id);
    ck_assert_int_eq(
        store_find_by_key(db, foreign_vbucket(), a.listing_id, pl.key, klen, &r, err, sizeof(err)),
        CAL_EMOVED);
    ck_assert_int_eq(
        store_find_by_key(db, a.vbucket, a.listing_id, "no-such-key", 11, &r, err, sizeof(err)),
        CAL_ENOTFOUND);
    plan_clear(&pl);
}
END_TEST

START_TEST(the_calendar_read_touches_only_its_range)
{
    char err[256];
    struct listing a = new_listing();
    struct db_val p[3] = {DB_INT_V(a.listing_id), DB_INT_V(today + DB_TO_DAYS_EPOCH),
                          DB_INT_V(a.vbucket)};
    ck_assert_msg(db_query(db,
                           "INSERT INTO nights (listing_id, night, status, price, version, vbucket)"
                           " SELECT ?, FROM_DAYS(? + seq), 'available', 80, 1, ?"
                           " FROM seq_0_to_366",
                           p, 3, NULL, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    int64_t before = session_status("Handler_read_next");
    struct calendar_read read = {0};
    ck_assert(store_read_calendar(db, a.vbucket, a.listing_id, today + 100, today + 103, &read, err,
                                  sizeof(err)) == CAL_OK);
    ck_assert_uint_eq(read.nrows, 3);
    int64_t after = session_status("Handler_read_next");
    /* A scan of the listing's 367 rows would read ~367. */
    ck_assert_msg(after - before <= 10, "the read walked %lld rows", (long long)(after - before));
    calendar_read_clear(&read);
}
END_TEST

/* An unblock run on its own connection (run_unblock()). */
struct unblock_run {
    struct db *db;
    const struct listing *l;
    struct calendar_request req;
    cal_status rc;
    uint64_t version;
    char err[256];
};

static void *
run_unblock(void *arg)
{
    struct unblock_run *u = arg;
    int32_t booked[BOOKING_MAX_NIGHTS];
    size_t nbooked;
    u->rc = store_calendar(u->db, u->l->vbucket, u->l->listing_id, &u->req, 0, &u->version, booked,
                           &nbooked, u->err, sizeof(u->err));
    return NULL;
}

/* Has connection id been in one statement for 200 ms or more? A statement
 * of the tests' takes a millisecond unless it waits for a lock. (The lock
 * tables of information_schema need the PROCESS privilege; the process list
 * shows the user's own connections without it.) */
static bool
stuck_in_statement(int64_t id)
{
    struct db_val p[1] = {DB_INT_V(id)};
    return query_int("SELECT COUNT(*) FROM information_schema.PROCESSLIST"
                     " WHERE ID = ? AND COMMAND <> 'Sleep' AND TIME_MS >= 200",
                     p, 1) > 0;
}

/* Versions order a listing's changes: an unblock that commits after a block
 * of its nights (at a later calendar version) must free what the block
 * blocked. The block here is caught between its statements and its commit,
 * with its night a new row (round 0) or an available one (round 1); under
 * READ COMMITTED an UPDATE ... WHERE status = 'blocked' skipped that row,
 * whose last committed state was not blocked, and still committed after the
 * block, leaving the night blocked behind a 200 at the later version. In
 * round 2 the block rolls back (as a 409 does): the unblock makes the
 * night's row itself. */
START_TEST(an_unblock_after_a_block_frees_its_nights)
{
    char err[256];
    for (int round = 0; round < 3; round++) {
        struct listing l = new_listing();
        int32_t night = today + 10;
        struct db_val p[3] = {DB_INT_V(l.listing_id), DB_INT_V(night + DB_TO_DAYS_EPOCH),
                              DB_INT_V(l.vbucket)};
        if (round == 1)
            ck_assert_msg(
                db_query(db,
                         "INSERT INTO nights (listing_id, night, status, version, vbucket)"
                         " VALUES (?, FROM_DAYS(?), 'available', 1, ?)",
                         p, 3, NULL, err, sizeof(err)) == CAL_OK,
                "%s", err);
        struct db *blocker = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(blocker != NULL, "%s", err);
        struct db_stmt *st;
        ck_assert_msg(db_begin(blocker, err, sizeof(err)) == CAL_OK, "%s", err);
        ck_assert_msg(db_query(blocker,
                               "INSERT INTO nights (listing_id, night, status, version, vbucket)"
                               " VALUES (?, FROM_DAYS(?), 'blocked', 1, ?)"
                               " ON DUPLICATE KEY UPDATE status = 'blocked', version = version + 1",
                               p, 3, NULL, err, sizeof(err)) == CAL_OK,
                      "%s", err);
        ck_assert_msg(db_query(blocker,
                               "UPDATE listings SET version = LAST_INSERT_ID(version + 1)"
                               " WHERE listing_id = ?",
                               p, 1, &st, err, sizeof(err)) == CAL_OK,
                      "%s", err);
        uint64_t blocked_at = db_insert_id(st);

        struct unblock_run u = {
            .l = &l, .req = {.from = night - 1, .to = night + 2, .action = CALENDAR_UNBLOCK}};
        u.db = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(u.db != NULL, "%s", err);
        int64_t unblocker = query_int_with(u.db, "SELECT CONNECTION_ID()", NULL, 0);
        pthread_t t;
        pthread_create(&t, NULL, run_unblock, &u);
        /* The unblock waits for a lock the block holds (bounded: 10 s). */
        bool waited = false;
        for (int i = 0; i < 500 && !(waited = stuck_in_statement(unblocker)); i++)
            cal_sleep_ms(20);
        ck_assert_msg(waited, "round %d: the unblock never waited for the block", round);
        if (round < 2)
            ck_assert_msg(db_commit(blocker, err, sizeof(err)) == CAL_OK, "%s", err);
        else
            db_rollback(blocker);
        pthread_join(t, NULL);

        ck_assert_msg(u.rc == CAL_OK, "round %d: %s %s", round, cal_status_name(u.rc), u.err);
        /* After the block's version, or at it when the block rolled back. */
        ck_assert_uint_eq(u.version, blocked_at + (round < 2));
        struct db_val q[2] = {DB_INT_V(l.listing_id), DB_INT_V(night + DB_TO_DAYS_EPOCH)};
        ck_assert_msg(query_int("SELECT COUNT(*) FROM nights WHERE listing_id = ?"
                                " AND night = FROM_DAYS(?) AND status = 'blocked'",
                                q, 2) == 0,
                      "round %d: the night stayed blocked after the unblock at version %llu "
                      "(the block's: %llu)",
                      round, (unsigned long long)u.version, (unsigned long long)blocked_at);
        /* Its night version moved on too (a booking planned on it conflicts):
         * 1 when made, + 1 for the block (round 1), + 1 for the unblock; the
         * row the unblock made in round 2 is at 1. */
        ck_assert_int_eq(query_int("SELECT version FROM nights WHERE listing_id = ?"
                                   " AND night = FROM_DAYS(?)",
                                   q, 2),
                         round < 2 ? 2 + round : 1);
        db_close(u.db);
        db_close(blocker);
    }
}
END_TEST

/* A random id without a listing, whose vbucket shard 0 owns or not. */
static uint64_t
id_without_listing(bool owned)
{
    for (;;) {
        uint64_t id = testenv_random48();
        struct db_val p[1] = {DB_INT_V(testenv_vbucket(id))};
        if ((query_int("SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", p, 1) > 0) == owned)
            return id;
    }
}

/* A search's shard read: an id asked twice is answered twice, a listing
 * that does not exist is not found, and one whose vbucket the shard does not
 * own (its rows gone after a move) is moved, not "not found". */
START_TEST(the_search_read_answers_repeats_and_tells_moved_from_missing)
{
    char err[256];
    struct listing l = new_listing();
    struct planned pl;
    plan(&pl, &l, today + 10, today + 12);
    ck_assert_msg(store_book(db, &pl.read.listing, &pl.plan, &pl.res, pl.key, strlen(pl.key), err,
                             sizeof(err)) == CAL_OK,
                  "%s", err);
    uint64_t missing = id_without_listing(true), moved = id_without_listing(false);
    uint64_t ids[4] = {l.listing_id, missing, l.listing_id, moved};
    uint32_t vbs[4] = {l.vbucket, testenv_vbucket(missing), l.vbucket, testenv_vbucket(moved)};
    struct calendar_read reads[4] = {0};
    size_t not_owned = 99;
    ck_assert_msg(store_read_many(db, ids, vbs, 4, today + 5, today + 20, reads, &not_owned, err,
                                  sizeof(err)) == CAL_OK,
                  "%s", err);
    for (size_t i = 0; i < 4; i += 2) {
        ck_assert_msg(reads[i].found && !reads[i].moved, "slot %zu of the listing", i);
        ck_assert_uint_eq(reads[i].listing.listing_id, l.listing_id);
        ck_assert_uint_eq(reads[i].nrows, 2);
        /* the booked nights, in any order */
        int32_t a = reads[i].rows[0].night, b = reads[i].rows[1].night;
        ck_assert_int_eq(a < b ? a : b, today + 10);
        ck_assert_int_eq(a < b ? b : a, today + 11);
        ck_assert_int_eq(reads[i].rows[0].status, NIGHT_BOOKED);
        ck_assert_int_eq(reads[i].rows[1].status, NIGHT_BOOKED);
    }
    ck_assert_msg(!reads[1].found && !reads[1].moved, "a missing listing of an owned vbucket");
    ck_assert_msg(!reads[3].found && reads[3].moved, "a listing of a vbucket owned elsewhere");
    ck_assert_uint_eq(not_owned, 1);
    for (size_t i = 0; i < 4; i++)
        calendar_read_clear(&reads[i]);
    plan_clear(&pl);
}
END_TEST

static int
cmp_night(const void *a, const void *b)
{
    const struct night_row *x = a, *y = b;
    return (x->night > y->night) - (x->night < y->night);
}

/* A booking's batched read answers each stay what the plain read answers:
 * the listing and the rows of its own nights, "not found" for a missing
 * listing and "moved" for a vbucket owned elsewhere, in key lookups. */
START_TEST(the_batch_read_answers_each_stay_as_the_plain_read_does)
{
    char err[256];
    /* b's id is exact only as an integer, not as a double. */
    struct listing a = new_listing(), b = new_listing_with(1ULL << 62);
    struct db_val p[3] = {DB_INT_V(a.listing_id), DB_INT_V(today + DB_TO_DAYS_EPOCH),
                          DB_INT_V(a.vbucket)};
    ck_assert_msg(db_query(db,
                           "INSERT INTO nights (listing_id, night, status, price, version, vbucket)"
                           " SELECT ?, FROM_DAYS(? + seq), 'available', 80 + seq % 7, 1, ?"
                           " FROM seq_0_to_366",
                           p, 3, NULL, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    struct planned pl;
    plan(&pl, &a, today + 10, today + 12);
    ck_assert(book_alone(&pl) == CAL_OK);
    uint64_t missing = id_without_listing(true), moved = id_without_listing(false);
    struct {
        uint64_t id;
        int32_t from, to;
        cal_status want;
    } stays[] = {
        {a.listing_id, today + 9, today + 13, CAL_OK},
        {b.listing_id, today + 1, today + 4, CAL_OK},
        {missing, today + 1, today + 3, CAL_ENOTFOUND},
        {a.listing_id, today + 100, today + 101, CAL_OK},
        {moved, today + 1, today + 3, CAL_EMOVED},
        {a.listing_id, today + 360, today + 370, CAL_OK},
    };
    enum { N = CAL_ARRAY_LEN(stays) };
    struct calendar_read reads[N];
    memset(reads, 0, sizeof(reads));
    struct store_read r[N];
    for (size_t i = 0; i < N; i++)
        r[i] = (struct store_read){.vbucket = testenv_vbucket(stays[i].id),
                                   .listing_id = stays[i].id,
                                   .from = stays[i].from,
                                   .to = stays[i].to,
                                   .out = &reads[i],
                                   .rc = CAL_ERR};
    int64_t before = session_status("Handler_read_next");
    ck_assert_msg(store_read_each(db, r, N, err, sizeof(err)) == CAL_OK, "%s", err);
    int64_t after = session_status("Handler_read_next");
    /* A walk of a's 367 rows for each of its stays would read ~1100. */
    ck_assert_msg(after - before <= 10, "the read walked %lld rows", (long long)(after - before));
    /* a's first stay: 4 nights, the middle 2 booked; its last ends past a's rows. */
    ck_assert_uint_eq(reads[0].nrows, 4);
    unsigned booked = 0;
    for (size_t k = 0; k < reads[0].nrows; k++)
        booked += reads[0].rows[k].status == NIGHT_BOOKED &&
                  reads[0].rows[k].reservation_id == pl.res.reservation_id;
    ck_assert_uint_eq(booked, 2);
    ck_assert_uint_eq(reads[1].nrows, 0);
    ck_assert_uint_eq(reads[3].nrows, 1);
    ck_assert_uint_eq(reads[5].nrows, 7);
    for (size_t i = 0; i < N; i++) {
        struct calendar_read plain = {0};
        cal_status prc = store_read_calendar(db, r[i].vbucket, stays[i].id, stays[i].from,
                                             stays[i].to, &plain, err, sizeof(err));
        ck_assert_int_eq(prc, stays[i].want);
        ck_assert_msg(r[i].rc == prc, "stay %zu: %s, the plain read %s", i,
                      cal_status_name(r[i].rc), cal_status_name(prc));
        ck_assert_int_eq(reads[i].found, prc == CAL_OK);
        if (prc == CAL_OK) {
            const struct listing *x = &reads[i].listing, *y = &plain.listing;
            ck_assert_uint_eq(x->listing_id, y->listing_id);
            ck_assert_uint_eq(x->vbucket, y->vbucket);
            ck_assert_uint_eq(x->version, y->version);
            ck_assert_uint_eq(x->rules_version, y->rules_version);
            ck_assert_int_eq(x->default_price, y->default_price);
            ck_assert_str_eq(x->currency, y->currency);
            ck_assert_int_eq(x->min_nights, y->min_nights);
            ck_assert_int_eq(x->max_nights, y->max_nights);
            ck_assert_uint_eq(reads[i].nrows, plain.nrows);
            if (plain.nrows > 0) { /* rows stays NULL without any */
                qsort(reads[i].rows, reads[i].nrows, sizeof(*reads[i].rows), cmp_night);
                qsort(plain.rows, plain.nrows, sizeof(*plain.rows), cmp_night);
            }
            for (size_t k = 0; k < plain.nrows; k++) {
                const struct night_row *m = &reads[i].rows[k], *n = &plain.rows[k];
                ck_assert_int_eq(m->night, n->night);
                ck_assert_int_eq(m->status, n->status);
                ck_assert_uint_eq(m->reservation_id, n->reservation_id);
                ck_assert_int_eq(m->has_price, n->has_price);
                ck_assert_int_eq(m->price, n->price);
                ck_assert_uint_eq(m->version, n->version);
            }
        }
        calendar_read_clear(&plain);
        calendar_read_clear(&reads[i]);
    }
    plan_clear(&pl);
}
END_TEST

/* Statements this session prepared on the server so far. */
static int64_t
server_prepares(void)
{
    char err[256];
    struct db_stmt *st;
    struct db_val c[1];
    ck_assert_msg(db_query(db,
                           "SELECT CAST(VARIABLE_VALUE AS SIGNED) FROM"
                           " information_schema.SESSION_STATUS"
                           " WHERE VARIABLE_NAME = 'COM_STMT_PREPARE'",
                           NULL, 0, &st, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    int64_t n = c[0].i;
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    return n;
}

static void
select_int(int i)
{
    char err[256], sql[64];
    struct db_stmt *st;
    struct db_val c[1];
    snprintf(sql, sizeof(sql), "SELECT %d", i);
    ck_assert_msg(db_query(db, sql, NULL, 0, &st, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    ck_assert_int_eq(c[0].i, i);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
}

START_TEST(the_statement_cache_keeps_the_most_recent_64)
{
    for (int i = 0; i < 100; i++)
        select_int(i);
    ck_assert_uint_eq(db_cached_statements(db), 64);
    /* Each count is read by a statement of its own, cached (and counted)
     * by the first call: SELECT 36, the least recent, makes room for it. */
    int64_t before = server_prepares();
    select_int(99); /* recent: cached, not prepared again */
    ck_assert_int_eq(server_prepares(), before);
    select_int(0); /* evicted: prepared again */
    ck_assert_int_eq(server_prepares(), before + 1);
    ck_assert_uint_eq(db_cached_statements(db), 64);
}
END_TEST

/* A statement whose rows a caller is still reading is never evicted, even
 * when 64 others are prepared meanwhile. */
START_TEST(a_statement_being_read_stays_cached)
{
    char err[256], sql[64];
    struct db_stmt *held, *st;
    struct db_val c[1];
    ck_assert(db_query(db, "SELECT 1 UNION ALL SELECT 2", NULL, 0, &held, err, sizeof(err)) ==
              CAL_OK);
    ck_assert_int_eq(db_fetch(held, c, 1, err, sizeof(err)), 1);
    ck_assert_int_eq(c[0].i, 1);
    for (int i = 0; i < 70; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d", 500 + i);
        ck_assert(db_query(db, sql, NULL, 0, &st, err, sizeof(err)) == CAL_OK);
        while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
            ;
    }
    ck_assert_uint_le(db_cached_statements(db), 64);
    ck_assert_int_eq(db_fetch(held, c, 1, err, sizeof(err)), 1);
    ck_assert_int_eq(c[0].i, 2);
    ck_assert_int_eq(db_fetch(held, c, 1, err, sizeof(err)), 0);
}
END_TEST

/* SET GLOBAL on shard 0's server, as the stack's administrator. */
static void
set_shard0_global(const char *name, int64_t value)
{
    ck_assert_msg(testenv_set_global(&env, 0, name, value) == 0, "SET GLOBAL %s", name);
}

/* max_prepared_stmt_count of shard 0's server as it was (this process). */
static int64_t stmt_limit;

/* A global variable of shard 0's server, on a connection of its own (for
 * the unchecked fixtures, which run before setup). */
static int64_t
shard0_global(const char *name)
{
    char err[256];
    long long v = 0;
    ck_assert_msg(testenv_load(&env, NULL, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_msg(testenv_get_global(&env, 0, name, &v, err, sizeof(err)) == 0, "%s: %s", name,
                  err);
    return v;
}

/* Unchecked fixture, in this process: the limit is put back even when the
 * test crashed or timed out, or every later test would fail to prepare. */
static void
remember_stmt_limit(void)
{
    stmt_limit = shard0_global("max_prepared_stmt_count");
}

static void
restore_stmt_limit(void)
{
    if (testenv_set_global(&env, 0, "max_prepared_stmt_count", stmt_limit) != 0)
        fprintf(stderr, "check_store: could not restore max_prepared_stmt_count\n");
}

static int64_t
prepared_on_server(void)
{
    char err[256];
    struct db_stmt *st;
    struct db_val c[2];
    ck_assert(db_query(db, "SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'", NULL, 0, &st, err,
                       sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(st, c, 2, err, sizeof(err)), 1);
    int64_t v = atoll(c[1].s);
    while (db_fetch(st, c, 2, err, sizeof(err)) > 0)
        ;
    return v;
}

static cal_status
select_number(struct db *d, int n)
{
    char err[256], sql[64];
    struct db_stmt *st;
    struct db_val c[1];
    snprintf(sql, sizeof(sql), "SELECT %d", n);
    cal_status rc = db_query(d, sql, NULL, 0, &st, err, sizeof(err));
    if (rc == CAL_OK && (db_fetch(st, c, 1, err, sizeof(err)) != 1 || c[0].i != n))
        rc = CAL_ERR;
    while (rc == CAL_OK && db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    return rc;
}

/* The server's max_prepared_stmt_count is shared by every connection of
 * every calendard: when it is reached, a connection gives back its older
 * statements and goes on; one with none to give back answers "try again",
 * never an internal error. */
START_TEST(a_full_statement_count_gives_back_statements)
{
    char err[256];
    struct db *d = testenv_connect_shard(&env, 0, err, sizeof(err));
    struct db *fresh = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert(d != NULL && fresh != NULL);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(select_number(d, 1000 + i), CAL_OK);
    prepared_on_server(); /* its own statement is prepared from now on */
    cal_status rc[10], fresh_rc;
    set_shard0_global("max_prepared_stmt_count", prepared_on_server());
    for (int i = 0; i < 10; i++)
        rc[i] = select_number(d, 2000 + i);
    set_shard0_global("max_prepared_stmt_count", prepared_on_server());
    fresh_rc = select_number(fresh, 3000);
    set_shard0_global("max_prepared_stmt_count", stmt_limit);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(rc[i] == CAL_OK, "statement %d: %s", i, cal_status_name(rc[i]));
    ck_assert_uint_lt(db_cached_statements(d), 16); /* it gave some back */
    ck_assert_msg(fresh_rc == CAL_EAGAIN, "fresh: %s", cal_status_name(fresh_rc));
    /* With room again, the fresh connection prepares. */
    ck_assert_int_eq(select_number(fresh, 3000), CAL_OK);
    db_close(d);
    db_close(fresh);
}
END_TEST

/* One booking through a batcher, on its own connection and thread. */
struct lane_booking {
    struct batcher *b;
    struct planned *pl;
    struct db *db;
    const void *group; /* the pool its connection came from, as calendard passes it */
    cal_status rc;
    char err[256];
    bool done; /* atomic */
};

static void *
lane_book(void *arg)
{
    struct lane_booking *lb = arg;
    lb->rc = batcher_book(lb->b, lb->db, lb->group, &lb->pl->read.listing, &lb->pl->plan,
                          &lb->pl->res, lb->pl->key, strlen(lb->pl->key), lb->err, sizeof(lb->err));
    __atomic_store_n(&lb->done, true, __ATOMIC_RELEASE);
    return NULL;
}

/* Is *flag (set by another thread) set, or set within ms? */
static bool
set_within(bool *flag, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited += 10) {
        if (__atomic_load_n(flag, __ATOMIC_ACQUIRE))
            return true;
        cal_sleep_ms(10);
    }
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

static bool
done_within(struct lane_booking *lb, unsigned ms)
{
    return set_within(&lb->done, ms);
}

/* Waits until connection `id` has been executing one statement for 200 ms:
 * a booking block takes about a millisecond, unless it waits for a lock. */
static void
await_stuck(int64_t id)
{
    struct db_val p[1] = {DB_INT_V(id)};
    for (int i = 0; i < 500; i++) {
        if (query_int("SELECT COUNT(*) FROM information_schema.processlist"
                      " WHERE id = ? AND command = 'Execute' AND time_ms > 200",
                      p, 1) == 1)
            return;
        cal_sleep_ms(10);
    }
    ck_abort_msg("connection %lld never waited for the lock", (long long)id);
}

/* Booking first, whose transaction waits for a lock held elsewhere, and
 * then second, with `extra` more bookings of the shard in progress. Answers
 * whether second committed while first's transaction was still in flight. */
static bool
second_commits_beside_a_stuck_first(unsigned extra, unsigned leave_after_start)
{
    char err[256];
    struct listing a = new_listing(), b = new_listing();
    struct planned first, second;
    plan(&first, &a, today + 40, today + 42);
    plan(&second, &b, today + 40, today + 42);
    struct batcher *bt = batcher_create(32, 2, NULL, NULL);
    struct db *holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    struct db *d1 = testenv_connect_shard(&env, 0, err, sizeof(err));
    struct db *d2 = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert(holder != NULL && d1 != NULL && d2 != NULL);
    /* The holder locks first's listing row: first's transaction waits on it. */
    struct db_val p[1] = {DB_INT_V(a.listing_id)};
    struct db_stmt *st;
    ck_assert(db_begin(holder, err, sizeof(err)) == CAL_OK);
    ck_assert_msg(db_query(holder, "SELECT version FROM listings WHERE listing_id = ? FOR UPDATE",
                           p, 1, &st, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    struct db_val c[1];
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    struct db_stmt *idst;
    ck_assert(db_query(d1, "SELECT CONNECTION_ID()", NULL, 0, &idst, err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(idst, c, 1, err, sizeof(err)), 1);
    int64_t d1_id = c[0].i;
    while (db_fetch(idst, c, 1, err, sizeof(err)) > 0)
        ;
    struct lane_booking l1 = {.b = bt, .pl = &first, .db = d1};
    struct lane_booking l2 = {.b = bt, .pl = &second, .db = d2};
    pthread_t t1, t2;
    for (unsigned i = 0; i < extra + 2; i++)
        batcher_enter(bt);
    pthread_create(&t1, NULL, lane_book, &l1);
    await_stuck(d1_id);
    pthread_create(&t2, NULL, lane_book, &l2);
    if (leave_after_start > 0) {
        ck_assert(!done_within(&l2, 200));
        for (unsigned i = 0; i < leave_after_start; i++)
            batcher_leave(bt);
    }
    /* Ample for a lone commit, even on a loaded machine; the holder keeps
     * first waiting meanwhile (well within its 10 s lock wait). */
    bool beside = done_within(&l2, 3000);
    db_rollback(holder);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    for (unsigned i = leave_after_start; i < extra + 2; i++)
        batcher_leave(bt);
    ck_assert_msg(l1.rc == CAL_OK, "first: %s %s", cal_status_name(l1.rc), l1.err);
    ck_assert_msg(l2.rc == CAL_OK, "second: %s %s", cal_status_name(l2.rc), l2.err);
    ck_assert_int_eq(booked_nights(first.res.reservation_id), 2);
    ck_assert_int_eq(booked_nights(second.res.reservation_id), 2);
    batcher_destroy(bt);
    db_close(holder);
    db_close(d1);
    db_close(d2);
    plan_clear(&first);
    plan_clear(&second);
    return beside;
}

/* A connection in an open transaction holding l's listing row: a booking
 * of l waits on it. */
static struct db *
hold_listing(const struct listing *l)
{
    char err[256];
    struct db *holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(holder != NULL, "%s", err);
    struct db_val p[1] = {DB_INT_V(l->listing_id)};
    struct db_stmt *st;
    struct db_val c[1];
    ck_assert(db_begin(holder, err, sizeof(err)) == CAL_OK);
    ck_assert_msg(db_query(holder, "SELECT version FROM listings WHERE listing_id = ? FOR UPDATE",
                           p, 1, &st, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    return holder;
}

static int64_t
connection_int(struct db *d, const char *sql, int col)
{
    char err[256];
    struct db_stmt *st;
    struct db_val c[2];
    ck_assert_msg(db_query(d, sql, NULL, 0, &st, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(db_fetch(st, c, 2, err, sizeof(err)), 1);
    int64_t v = c[col].type == DB_INT ? c[col].i : atoll(c[col].s);
    while (db_fetch(st, c, 2, err, sizeof(err)) > 0)
        ;
    return v;
}

/* After a shard moved to another server, bookings read on the new one must
 * never be committed by a leader connected to the old one, nor wait for
 * one stuck there: bookings of two pools (groups) queue in one batcher,
 * each group with lanes of its own. */
START_TEST(bookings_from_two_pools_never_share_a_transaction)
{
    char err[256];
    static const char old_pool = 'o', new_pool = 'n'; /* groups, as calendard's pools */
    struct listing ls[4] = {new_listing(), new_listing(), new_listing(), new_listing()};
    struct planned pl[4];
    for (int i = 0; i < 4; i++)
        plan(&pl[i], &ls[i], today + 50, today + 52);
    struct batcher *bt = batcher_create(32, 2, NULL, NULL);
    struct db *hold_old = hold_listing(&ls[0]), *hold_new = hold_listing(&ls[1]);
    struct db *d[4];
    int64_t before[4], id[4];
    struct lane_booking l[4];
    for (int i = 0; i < 4; i++) {
        d[i] = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(d[i] != NULL, "%s", err);
        id[i] = connection_int(d[i], "SELECT CONNECTION_ID(), 0", 0);
        before[i] = connection_int(d[i], "SHOW SESSION STATUS LIKE 'Com_stmt_execute'", 1);
        l[i] = (struct lane_booking){
            .b = bt, .pl = &pl[i], .db = d[i], .group = i % 2 ? &new_pool : &old_pool};
    }
    pthread_t t[4];
    for (int i = 0; i < 6; i++) /* more in progress than lanes: one lane a group */
        batcher_enter(bt);
    /* 0 (old) leads and sticks; 1 (new) is not held up by it and sticks too. */
    pthread_create(&t[0], NULL, lane_book, &l[0]);
    await_stuck(id[0]);
    pthread_create(&t[1], NULL, lane_book, &l[1]);
    await_stuck(id[1]);
    /* 2 (old) and 3 (new) wait, each for its group's lane. */
    pthread_create(&t[2], NULL, lane_book, &l[2]);
    bool waited2 = !done_within(&l[2], 100);
    pthread_create(&t[3], NULL, lane_book, &l[3]);
    bool waited3 = !done_within(&l[3], 100);
    /* The old group's lane frees: 2 commits, and 3 stays behind its own. */
    db_rollback(hold_old);
    bool done2 = done_within(&l[2], 3000);
    bool waited3_more = !done_within(&l[3], 100);
    db_rollback(hold_new);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 6; i++)
        batcher_leave(bt);
    ck_assert(waited2 && waited3);
    ck_assert_msg(done2, "a booking waited for a lane of another group");
    ck_assert_msg(waited3_more, "a booking was committed by a leader of another group");
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(l[i].rc == CAL_OK, "booking %d: %s %s", i, cal_status_name(l[i].rc),
                      l[i].err);
        /* Each led a transaction of its own on its connection (besides the
         * SHOW itself). */
        ck_assert_int_ge(
            connection_int(d[i], "SHOW SESSION STATUS LIKE 'Com_stmt_execute'", 1) - before[i], 2);
        db_close(d[i]);
        plan_clear(&pl[i]);
    }
    batcher_destroy(bt);
    db_close(hold_old);
    db_close(hold_new);
}
END_TEST

/* One booking through a batcher from its read on, on its own connection
 * and thread: read, planned and committed by batcher_read_book(). */
struct lane_read {
    struct batcher *b;
    struct db *db;
    const void *group;
    struct listing l;
    struct planned pl;
    cal_status rc;
    char err[256];
    bool done; /* atomic */
};

/* The stay every lane_read books. */
#define LANE_IN (today + 5)
#define LANE_OUT (today + 8)

static cal_status
plan_lane(void *arg, struct store_booking *sb)
{
    struct lane_read *lr = arg;
    if (!plan_read(&lr->pl, &lr->l, LANE_IN, LANE_OUT))
        return CAL_EINVAL;
    *sb = booking_of(&lr->pl);
    return CAL_OK;
}

static void *
lane_read(void *arg)
{
    struct lane_read *lr = arg;
    lr->rc = batcher_read_book(lr->b, lr->db, lr->group, lr->l.vbucket, lr->l.listing_id, LANE_IN,
                               LANE_OUT, &lr->pl.read, plan_lane, lr, lr->err, sizeof(lr->err));
    __atomic_store_n(&lr->done, true, __ATOMIC_RELEASE);
    return NULL;
}

/* n connections to shard 0, and their server-side ids. */
static void
connect_with_ids(struct db **d, int64_t *id, size_t n)
{
    char err[256];
    for (size_t i = 0; i < n; i++) {
        d[i] = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(d[i] != NULL, "%s", err);
        id[i] = connection_int(d[i], "SELECT CONNECTION_ID(), 0", 0);
    }
}

/* Statements connection d executed since `before` (minus the SHOW itself). */
static int64_t
executed_since(struct db *d, int64_t before)
{
    return connection_int(d, "SHOW SESSION STATUS LIKE 'Com_stmt_execute'", 1) - before - 1;
}

/* Waits until n bookings wait in bt's queue. */
static void
await_bookings_waiting(struct batcher *bt, size_t n)
{
    for (int i = 0; i < 500 && batcher_bookings_waiting(bt) != n; i++)
        cal_sleep_ms(10);
    ck_assert_uint_eq(batcher_bookings_waiting(bt), n);
}

/* Starts fn(args[0]), waits until its statement on connection id0 is stuck,
 * then starts fn(args[i]) for i = 1..n-1, each queued in bt behind it in
 * that order. */
static void
start_behind_a_stuck_leader(pthread_t *th, void *(*fn)(void *), void *const *args, size_t n,
                            struct batcher *bt, int64_t id0)
{
    pthread_create(&th[0], NULL, fn, args[0]);
    await_stuck(id0);
    for (size_t i = 1; i < n; i++) {
        pthread_create(&th[i], NULL, fn, args[i]);
        await_bookings_waiting(bt, i);
    }
}

/* Four bookings of group A (0 to 2) and B (3) while a table lock held
 * elsewhere keeps booking 0's read waiting, with 4 lanes and 5 bookings in
 * progress (under load) or 2. Booking 2's nights are taken: its plan
 * refuses it. Answers the statements each booking's connection ran. */
static void
bookings_beside_a_stuck_read(bool under_load, int64_t executed[4])
{
    char err[256];
    static const char group_a = 'a', group_b = 'b';
    struct batcher *bt = batcher_create(32, 4, NULL, NULL);
    struct lane_read lr[4];
    struct db *d[4];
    int64_t before[4], id[4];
    for (int i = 0; i < 4; i++) {
        d[i] = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(d[i] != NULL, "%s", err);
        id[i] = connection_int(d[i], "SELECT CONNECTION_ID(), 0", 0);
        lr[i] = (struct lane_read){
            .b = bt, .db = d[i], .group = i == 3 ? &group_b : &group_a, .l = new_listing()};
    }
    struct planned taken;
    plan(&taken, &lr[2].l, LANE_IN + 1, LANE_IN + 2);
    ck_assert_int_eq(book_alone(&taken), CAL_OK);
    plan_clear(&taken);
    unsigned load = under_load ? 5 : 2;
    for (unsigned i = 0; i < load; i++)
        batcher_enter(bt);
    struct db *holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(holder != NULL, "%s", err);
    ck_assert_msg(db_exec(holder, "LOCK TABLES nights WRITE", err, sizeof(err)) == CAL_OK, "%s",
                  err);
    for (int i = 0; i < 4; i++)
        before[i] = connection_int(d[i], "SHOW SESSION STATUS LIKE 'Com_stmt_execute'", 1);
    pthread_t t[4];
    pthread_create(&t[0], NULL, lane_read, &lr[0]);
    await_stuck(id[0]);
    /* Under load 1 and 2 queue behind 0, in that order, unread; otherwise
     * each reads at once, held by the lock too. */
    for (int i = 1; i <= 2; i++) {
        pthread_create(&t[i], NULL, lane_read, &lr[i]);
        if (under_load)
            await_bookings_waiting(bt, (size_t)i);
        else
            await_stuck(id[i]);
    }
    /* Another group's booking is not held up by group A's. */
    pthread_create(&t[3], NULL, lane_read, &lr[3]);
    await_stuck(id[3]);
    ck_assert(db_exec(holder, "UNLOCK TABLES", err, sizeof(err)) == CAL_OK);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (unsigned i = 0; i < load; i++)
        batcher_leave(bt);
    for (int i = 0; i < 4; i++) {
        struct calendar_read *r = &lr[i].pl.read;
        ck_assert(r->found);
        ck_assert_uint_eq(r->listing.listing_id, lr[i].l.listing_id);
        ck_assert_int_eq(r->listing.default_price, 100);
        if (i == 2) {
            ck_assert_msg(lr[i].rc == CAL_EINVAL, "2: %s", cal_status_name(lr[i].rc));
            ck_assert_uint_eq(lr[i].pl.plan.nunavailable, 1);
        } else {
            ck_assert_msg(lr[i].rc == CAL_OK, "booking %d: %s %s", i, cal_status_name(lr[i].rc),
                          lr[i].err);
            ck_assert_int_eq(booked_nights(lr[i].pl.res.reservation_id), 3);
        }
        executed[i] = executed_since(d[i], before[i]);
        plan_clear(&lr[i].pl);
        db_close(d[i]);
    }
    db_close(holder);
    batcher_destroy(bt);
}

START_TEST(under_load_a_leader_reads_its_batch_together)
{
    int64_t n[4];
    bookings_beside_a_stuck_read(true, n);
    /* 0 read and booked alone; 1 read 1 and 2 in one statement and booked
     * 1 (2's plan refused it); 3 alone, on its group's lane. */
    ck_assert_int_eq(n[0], 2);
    ck_assert_int_eq(n[1], 2);
    ck_assert_int_eq(n[2], 0);
    ck_assert_int_eq(n[3], 2);
}
END_TEST

START_TEST(at_low_load_each_booking_reads_at_once)
{
    int64_t n[4];
    bookings_beside_a_stuck_read(false, n);
    /* Each read on its own; 2 had nothing to book. */
    ck_assert_int_eq(n[0], 2);
    ck_assert_int_eq(n[1], 2);
    ck_assert_int_eq(n[2], 1);
    ck_assert_int_eq(n[3], 2);
}
END_TEST

/* Bookings 0, 1 and 2 of one group on connections of their own, with more
 * bookings in progress than lanes, the nights locked by holder. */
struct group_reads {
    struct batcher *bt;
    struct lane_read lr[3];
    struct db *d[3], *holder;
    int64_t id[3];
    pthread_t t[3];
};

/* Booking 0 leads, and its read waits for the lock; 1 and 2 queue behind
 * it, in that order, unread. before_1 runs while 0 waits, before 1 is started. d[2] has the
 * plain read prepared; d[1] has run no statement. */
static void
group_reads_start(struct group_reads *g, void (*before_1)(struct group_reads *))
{
    char err[256];
    static const char group = 'g';
    g->bt = batcher_create(32, 2, NULL, NULL);
    for (int i = 0; i < 3; i++) {
        g->d[i] = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(g->d[i] != NULL, "%s", err);
        g->lr[i] =
            (struct lane_read){.b = g->bt, .db = g->d[i], .group = &group, .l = new_listing()};
    }
    g->id[0] = connection_int(g->d[0], "SELECT CONNECTION_ID(), 0", 0);
    struct calendar_read warm = {0};
    ck_assert_msg(store_read_calendar(g->d[2], g->lr[2].l.vbucket, g->lr[2].l.listing_id, LANE_IN,
                                      LANE_OUT, &warm, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    calendar_read_clear(&warm);
    /* ... and the booking statement of such a stay: with the statement
     * slots full it needs none of them. */
    struct listing other = new_listing();
    struct planned pl;
    plan(&pl, &other, LANE_IN, LANE_OUT);
    ck_assert_msg(store_book_one(g->d[2], &pl.read.listing, &pl.plan, &pl.res, pl.key,
                                 strlen(pl.key), err, sizeof(err)) == CAL_OK,
                  "%s", err);
    plan_clear(&pl);
    for (int i = 0; i < 3; i++)
        batcher_enter(g->bt);
    g->holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(g->holder != NULL, "%s", err);
    ck_assert(db_exec(g->holder, "LOCK TABLES nights WRITE", err, sizeof(err)) == CAL_OK);
    pthread_create(&g->t[0], NULL, lane_read, &g->lr[0]);
    await_stuck(g->id[0]);
    if (before_1 != NULL)
        before_1(g);
    for (int i = 1; i < 3; i++) {
        pthread_create(&g->t[i], NULL, lane_read, &g->lr[i]);
        await_bookings_waiting(g->bt, (size_t)i);
    }
}

/* Unlocks the nights, joins the bookings still running and checks 2: it
 * read its own listing, alone, and booked. */
static void
group_reads_finish(struct group_reads *g, bool joined_1)
{
    char err[256];
    ck_assert(db_exec(g->holder, "UNLOCK TABLES", err, sizeof(err)) == CAL_OK);
    for (int i = 0; i < 3; i++)
        if (i != 1 || !joined_1)
            pthread_join(g->t[i], NULL);
    for (int i = 0; i < 3; i++)
        batcher_leave(g->bt);
    ck_assert_msg(g->lr[2].rc == CAL_OK, "2: %s %s", cal_status_name(g->lr[2].rc), g->lr[2].err);
    ck_assert(g->lr[2].pl.read.found);
    ck_assert_uint_eq(g->lr[2].pl.read.listing.listing_id, g->lr[2].l.listing_id);
    ck_assert_int_eq(booked_nights(g->lr[2].pl.res.reservation_id), 3);
    for (int i = 0; i < 3; i++) {
        plan_clear(&g->lr[i].pl);
        db_close(g->d[i]);
    }
    db_close(g->holder);
    batcher_destroy(g->bt);
}

static void
kill_connection(struct db *holder, int64_t id)
{
    char err[256], sql[64];
    snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", (long long)id);
    ck_assert_msg(db_exec(holder, sql, err, sizeof(err)) == CAL_OK, "%s", err);
}

static void
remember_id_1(struct group_reads *g)
{
    g->id[1] = connection_int(g->d[1], "SELECT CONNECTION_ID(), 0", 0);
}

/* The leader of a grouped read loses its connection (the server killed
 * it): the others read alone on their own connections and answer. */
START_TEST(a_group_read_losing_its_connection_fails_only_the_leader)
{
    struct group_reads g;
    group_reads_start(&g, remember_id_1);
    /* 0 loses its connection; 1 leads the read of 1 and 2, and loses its own. */
    kill_connection(g.holder, g.id[0]);
    await_stuck(g.id[1]);
    kill_connection(g.holder, g.id[1]);
    pthread_join(g.t[1], NULL);
    group_reads_finish(&g, true);
    ck_assert_msg(g.lr[0].rc == CAL_EUNAVAIL, "0: %s", cal_status_name(g.lr[0].rc));
    ck_assert_msg(g.lr[1].rc == CAL_EUNAVAIL, "1: %s", cal_status_name(g.lr[1].rc));
}
END_TEST

/* A leader whose connection breaks while it reads its batch commits
 * nothing on it: a booking planned already, which it took along, goes
 * again on its own connection and commits. */
START_TEST(a_leader_losing_its_connection_sends_planned_bookings_back)
{
    char err[256];
    static const char group = 'g';
    struct batcher *bt = batcher_create(32, 2, NULL, NULL);
    struct db *d[3];
    int64_t id[3];
    connect_with_ids(d, id, 3);
    struct lane_read r0 = {.b = bt, .db = d[0], .group = &group, .l = new_listing()};
    struct lane_read r1 = {.b = bt, .db = d[1], .group = &group, .l = new_listing()};
    struct listing c = new_listing();
    struct planned pl;
    plan(&pl, &c, today + 60, today + 62);
    struct lane_booking p2 = {.b = bt, .pl = &pl, .db = d[2], .group = &group};
    for (int i = 0; i < 3; i++) /* under load: one lane */
        batcher_enter(bt);
    struct db *holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(holder != NULL, "%s", err);
    ck_assert(db_exec(holder, "LOCK TABLES nights WRITE", err, sizeof(err)) == CAL_OK);
    pthread_t t0, t1, t2;
    pthread_create(&t0, NULL, lane_read, &r0);
    await_stuck(id[0]);
    pthread_create(&t1, NULL, lane_read, &r1);
    await_bookings_waiting(bt, 1);
    pthread_create(&t2, NULL, lane_book, &p2);
    await_bookings_waiting(bt, 2);
    /* 0 loses its connection; 1 leads, reads its own booking with 2 taken
     * along, and loses its connection too. */
    kill_connection(holder, id[0]);
    await_stuck(id[1]);
    kill_connection(holder, id[1]);
    pthread_join(t0, NULL);
    pthread_join(t1, NULL);
    ck_assert(db_exec(holder, "UNLOCK TABLES", err, sizeof(err)) == CAL_OK);
    pthread_join(t2, NULL);
    for (int i = 0; i < 3; i++)
        batcher_leave(bt);
    ck_assert_msg(r0.rc == CAL_EUNAVAIL, "0: %s", cal_status_name(r0.rc));
    ck_assert_msg(r1.rc == CAL_EUNAVAIL, "1: %s", cal_status_name(r1.rc));
    ck_assert_msg(p2.rc == CAL_OK, "2: %s %s", cal_status_name(p2.rc), p2.err);
    ck_assert_int_eq(booked_nights(pl.res.reservation_id), 2);
    plan_clear(&r0.pl);
    plan_clear(&r1.pl);
    plan_clear(&pl);
    for (int i = 0; i < 3; i++)
        db_close(d[i]);
    db_close(holder);
    batcher_destroy(bt);
}
END_TEST

/* A booking whose own connection broke meanwhile is handed the free lane,
 * fails alone, and hands the lane on: the booking queued behind it commits
 * (it used to wait until some other booking of the shard came along). */
START_TEST(a_booking_failing_on_its_broken_connection_hands_the_lane_on)
{
    char err[256];
    static const char group = 'g';
    struct batcher *bt = batcher_create(32, 1, NULL, NULL);
    struct db *d[3];
    int64_t id[3];
    connect_with_ids(d, id, 3);
    struct listing l[3] = {new_listing(), new_listing(), new_listing()};
    struct planned pl[3];
    struct lane_booking lb[3];
    for (int i = 0; i < 3; i++) {
        plan(&pl[i], &l[i], today + 70, today + 72);
        lb[i] = (struct lane_booking){.b = bt, .pl = &pl[i], .db = d[i], .group = &group};
        batcher_enter(bt);
    }
    struct db *holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(holder != NULL, "%s", err);
    /* 1's connection is lost before it queues, as in a shard restart. */
    kill_connection(holder, id[1]);
    ck_assert(db_exec(d[1], "SELECT 1", err, sizeof(err)) == CAL_EUNAVAIL);
    ck_assert(db_broken(d[1]));
    ck_assert(db_exec(holder, "LOCK TABLES nights WRITE", err, sizeof(err)) == CAL_OK);
    pthread_t t[3];
    void *args[3] = {&lb[0], &lb[1], &lb[2]};
    start_behind_a_stuck_leader(t, lane_book, args, 3, bt, id[0]);
    ck_assert(db_exec(holder, "UNLOCK TABLES", err, sizeof(err)) == CAL_OK);
    ck_assert_msg(done_within(&lb[2], 10000), "the booking behind the broken one never went");
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        batcher_leave(bt);
    }
    ck_assert_msg(lb[0].rc == CAL_OK, "0: %s %s", cal_status_name(lb[0].rc), lb[0].err);
    ck_assert_msg(lb[1].rc == CAL_EUNAVAIL, "1: %s", cal_status_name(lb[1].rc));
    ck_assert_msg(lb[2].rc == CAL_OK, "2: %s %s", cal_status_name(lb[2].rc), lb[2].err);
    ck_assert_int_eq(booked_nights(pl[0].res.reservation_id), 2);
    ck_assert_int_eq(booked_nights(pl[2].res.reservation_id), 2);
    ck_assert_uint_eq(batcher_bookings_waiting(bt), 0);
    for (int i = 0; i < 3; i++) {
        plan_clear(&pl[i]);
        db_close(d[i]);
    }
    db_close(holder);
    batcher_destroy(bt);
}
END_TEST

/* Shard 0's binlog group commit wait as it was (this process). */
static int64_t commit_wait_count, commit_wait_usec;

/* Unchecked fixture: the wait is put back even when the test crashed, or
 * every later commit of the shard would wait for it. */
static void
remember_commit_wait(void)
{
    commit_wait_count = shard0_global("binlog_commit_wait_count");
    commit_wait_usec = shard0_global("binlog_commit_wait_usec");
}

static void
restore_commit_wait(void)
{
    if (testenv_set_global(&env, 0, "binlog_commit_wait_count", commit_wait_count) != 0 ||
        testenv_set_global(&env, 0, "binlog_commit_wait_usec", commit_wait_usec) != 0)
        fprintf(stderr, "check_store: could not restore the binlog commit wait\n");
}

/* A booking whose connection is lost while its COMMIT runs answers
 * CAL_EUNKNOWN (the API's 503 outcome_unknown), never success or failure:
 * the server may have committed it. Whatever it did, it did all or nothing. */
START_TEST(a_connection_lost_in_the_commit_leaves_the_outcome_unknown)
{
    char err[256];
    static const char group = 'g';
    struct batcher *bt = batcher_create(32, 1, NULL, NULL);
    struct db *d[1];
    int64_t id[1];
    connect_with_ids(d, id, 1);
    struct listing l = new_listing();
    struct planned pl;
    plan(&pl, &l, today + 80, today + 83);
    struct lane_booking lb = {.b = bt, .pl = &pl, .db = d[0], .group = &group};
    struct db *holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(holder != NULL, "%s", err);
    /* Each commit of the shard now waits 5 s for others to group with. */
    set_shard0_global("binlog_commit_wait_count", 1000);
    set_shard0_global("binlog_commit_wait_usec", 5000000);
    batcher_enter(bt);
    pthread_t t;
    pthread_create(&t, NULL, lane_book, &lb);
    await_stuck(id[0]);
    kill_connection(holder, id[0]);
    pthread_join(t, NULL);
    batcher_leave(bt);
    restore_commit_wait();
    ck_assert_msg(lb.rc == CAL_EUNKNOWN, "%s %s", cal_status_name(lb.rc), lb.err);
    int64_t nights = booked_nights(pl.res.reservation_id);
    int64_t version = reservation_version(pl.res.reservation_id);
    ck_assert_msg((nights == 0 && version == -1) || (nights == 3 && version >= 1),
                  "half a booking: %lld nights, reservation version %lld", (long long)nights,
                  (long long)version);
    plan_clear(&pl);
    db_close(d[0]);
    db_close(holder);
    batcher_destroy(bt);
}
END_TEST

/* Unchecked teardown: no limit on statements again, even when the test
 * crashed, or every later session of the shard would inherit it. */
static void
no_statement_time_limit(void)
{
    if (testenv_sql_admin(&env, 0, "SET GLOBAL max_statement_time = 0") != 0)
        fprintf(stderr, "check_store: could not reset max_statement_time\n");
}

/* An operator's global max_statement_time would cut a booking's compound
 * statement short anywhere, after its COMMIT too: calendard's sessions
 * take none, and a statement cut short that way reads as an unknown
 * outcome (a lost connection), not as an internal error. */
START_TEST(a_global_statement_time_limit_does_not_reach_our_sessions)
{
    char err[256];
    ck_assert_int_eq(testenv_sql_admin(&env, 0, "SET GLOBAL max_statement_time = 0.3"), 0);
    struct db *d = testenv_connect_shard(&env, 0, err, sizeof(err));
    no_statement_time_limit();
    ck_assert_msg(d != NULL, "%s", err);
    struct db_stmt *st;
    struct db_val c[1];
    ck_assert(db_query(d, "SELECT @@SESSION.max_statement_time * 1000", NULL, 0, &st, err,
                       sizeof(err)) == CAL_OK);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    long long ms = c[0].type == DB_INT ? c[0].i : atoll(c[0].s);
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    ck_assert_msg(ms == 0, "a session of ours has max_statement_time %lld ms", ms);
    /* Cut short on purpose: an unknown outcome, the connection dropped. */
    ck_assert(db_exec(d, "SET SESSION max_statement_time = 0.1", err, sizeof(err)) == CAL_OK);
    cal_status rc = db_exec(d,
                            "SELECT COUNT(*) FROM seq_1_to_100000 a, seq_1_to_100000 b"
                            " WHERE a.seq + b.seq = 3",
                            err, sizeof(err));
    ck_assert_msg(rc == CAL_EUNAVAIL && db_broken(d), "%s: %s", cal_status_name(rc), err);
    db_close(d);
}
END_TEST

static void
fill_statement_slots(struct group_reads *g)
{
    (void)g;
    prepared_on_server(); /* its own statement is prepared from now on */
    set_shard0_global("max_prepared_stmt_count", prepared_on_server());
}

/* A grouped read that fails on its leader's connection alone (no room for
 * one more prepared statement there, and none to give back) fails only the
 * leader: the others read alone on their own connections. */
START_TEST(a_group_read_failing_on_its_leaders_connection_fails_only_the_leader)
{
    struct group_reads g;
    group_reads_start(&g, fill_statement_slots);
    /* 1 leads the next read, of 1 and 2, on its own connection. */
    group_reads_finish(&g, false);
    set_shard0_global("max_prepared_stmt_count", stmt_limit);
    ck_assert_msg(g.lr[0].rc == CAL_OK, "0: %s %s", cal_status_name(g.lr[0].rc), g.lr[0].err);
    ck_assert_msg(g.lr[1].rc == CAL_EAGAIN, "1: %s %s", cal_status_name(g.lr[1].rc), g.lr[1].err);
}
END_TEST

START_TEST(at_low_load_a_booking_takes_a_lane_of_its_own)
{
    /* 2 bookings in progress, 2 lanes: second does not wait for first. */
    ck_assert_msg(second_commits_beside_a_stuck_first(0, 0),
                  "a booking waited for a busy lane while another lane was free");
}
END_TEST

START_TEST(a_booking_waiting_for_a_lane_goes_when_the_load_falls)
{
    /* 3 in progress: second waits; one leaves, so 2 lanes open again. */
    ck_assert_msg(second_commits_beside_a_stuck_first(1, 1),
                  "a booking kept waiting after the lanes opened");
}
END_TEST

/* What a batcher's committed callback was told, call by call. */
struct told {
    pthread_mutex_t lock;
    struct lane_booking *lb; /* the bookings of the test, [nlb] */
    size_t nlb;
    unsigned calls;
    size_t n[4];
    uint64_t id[4][4];
    cal_status rc[4][4];
    bool answered_first; /* a booking it was told of had been answered */
};

static void
record_committed(void *arg, const struct store_booking *sb, size_t n)
{
    struct told *t = arg;
    pthread_mutex_lock(&t->lock);
    unsigned c = t->calls++;
    for (size_t i = 0; c < 4 && i < n && i < 4; i++) {
        t->id[c][i] = sb[i].res->reservation_id;
        t->rc[c][i] = sb[i].rc;
    }
    if (c < 4)
        t->n[c] = n;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < t->nlb; k++)
            if (&t->lb[k].pl->res == sb[i].res && __atomic_load_n(&t->lb[k].done, __ATOMIC_ACQUIRE))
                t->answered_first = true;
    pthread_mutex_unlock(&t->lock);
}

/* A leader tells the committed callback (calendard's cache invalidation)
 * of its transaction's bookings and their outcomes, once per transaction
 * and before any of them is answered: the booking that commits alone, then
 * the two that gathered behind it, one of which conflicts. */
START_TEST(a_leader_tells_its_outcomes_once_before_answering_any)
{
    char err[256];
    struct listing a = new_listing(), b = new_listing(), c = new_listing();
    struct planned pl[3], rival;
    plan(&pl[0], &a, today + 40, today + 42);
    plan(&pl[1], &b, today + 40, today + 42);
    plan(&pl[2], &c, today + 40, today + 42);
    plan(&rival, &c, today + 41, today + 43);
    /* Booked after pl[2] was planned: pl[2] conflicts at its commit. */
    ck_assert_int_eq(book_alone(&rival), CAL_OK);
    struct told t = {.nlb = 3};
    pthread_mutex_init(&t.lock, NULL);
    struct lane_booking lb[3];
    t.lb = lb;
    struct batcher *bt = batcher_create(32, 2, record_committed, &t);
    struct db *holder = hold_listing(&a);
    struct db *d[3];
    for (int i = 0; i < 3; i++) {
        d[i] = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(d[i] != NULL, "%s", err);
        lb[i] = (struct lane_booking){.b = bt, .pl = &pl[i], .db = d[i]};
    }
    int64_t id0 = connection_int(d[0], "SELECT CONNECTION_ID(), 0", 0);
    for (int i = 0; i < 3; i++) /* under load: one lane */
        batcher_enter(bt);
    pthread_t th[3];
    void *args[3] = {&lb[0], &lb[1], &lb[2]};
    start_behind_a_stuck_leader(th, lane_book, args, 3, bt, id0);
    db_rollback(holder);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++)
        batcher_leave(bt);
    ck_assert_msg(lb[0].rc == CAL_OK, "0: %s %s", cal_status_name(lb[0].rc), lb[0].err);
    ck_assert_msg(lb[1].rc == CAL_OK, "1: %s %s", cal_status_name(lb[1].rc), lb[1].err);
    ck_assert_int_eq(lb[2].rc, CAL_ECONFLICT);
    ck_assert_uint_eq(t.calls, 2);
    ck_assert_uint_eq(t.n[0], 1);
    ck_assert_uint_eq(t.id[0][0], pl[0].res.reservation_id);
    ck_assert_int_eq(t.rc[0][0], CAL_OK);
    ck_assert_uint_eq(t.n[1], 2);
    for (int i = 0; i < 2; i++) {
        int k = t.id[1][i] == pl[1].res.reservation_id ? 1 : 2;
        ck_assert_uint_eq(t.id[1][i], pl[k].res.reservation_id);
        ck_assert_int_eq(t.rc[1][i], lb[k].rc);
    }
    ck_assert_uint_ne(t.id[1][0], t.id[1][1]);
    ck_assert_msg(!t.answered_first, "a booking was answered before the callback was told of it");
    batcher_destroy(bt);
    pthread_mutex_destroy(&t.lock);
    db_close(holder);
    for (int i = 0; i < 3; i++) {
        db_close(d[i]);
        plan_clear(&pl[i]);
    }
    plan_clear(&rival);
}
END_TEST

/* A leader all of whose bookings its plans refuse commits nothing and
 * tells the committed callback nothing; each of them is answered. */
START_TEST(a_batch_whose_plans_all_refuse_commits_nothing)
{
    char err[256];
    static const char group = 'g';
    struct told t = {0};
    pthread_mutex_init(&t.lock, NULL);
    struct batcher *bt = batcher_create(32, 2, record_committed, &t);
    struct lane_read lr[3];
    struct db *d[3];
    for (int i = 0; i < 3; i++) {
        d[i] = testenv_connect_shard(&env, 0, err, sizeof(err));
        ck_assert_msg(d[i] != NULL, "%s", err);
        lr[i] = (struct lane_read){.b = bt, .db = d[i], .group = &group, .l = new_listing()};
    }
    int64_t id0 = connection_int(d[0], "SELECT CONNECTION_ID(), 0", 0);
    for (int i = 1; i < 3; i++) { /* 1's and 2's stays are taken already */
        struct planned taken;
        plan(&taken, &lr[i].l, LANE_IN, LANE_IN + 1);
        ck_assert_int_eq(book_alone(&taken), CAL_OK);
        plan_clear(&taken);
    }
    int64_t before1 = connection_int(d[1], "SHOW SESSION STATUS LIKE 'Com_stmt_execute'", 1);
    for (int i = 0; i < 3; i++) /* under load: one lane */
        batcher_enter(bt);
    struct db *holder = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(holder != NULL, "%s", err);
    ck_assert(db_exec(holder, "LOCK TABLES nights WRITE", err, sizeof(err)) == CAL_OK);
    pthread_t th[3];
    void *args[3] = {&lr[0], &lr[1], &lr[2]};
    start_behind_a_stuck_leader(th, lane_read, args, 3, bt, id0);
    ck_assert(db_exec(holder, "UNLOCK TABLES", err, sizeof(err)) == CAL_OK);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 3; i++)
        batcher_leave(bt);
    ck_assert_msg(lr[0].rc == CAL_OK, "0: %s %s", cal_status_name(lr[0].rc), lr[0].err);
    ck_assert_int_eq(booked_nights(lr[0].pl.res.reservation_id), 3);
    ck_assert_msg(lr[1].rc == CAL_EINVAL, "1: %s", cal_status_name(lr[1].rc));
    ck_assert_msg(lr[2].rc == CAL_EINVAL, "2: %s", cal_status_name(lr[2].rc));
    /* 1 read both in one statement and committed nothing. */
    ck_assert_int_eq(executed_since(d[1], before1), 1);
    ck_assert_uint_eq(t.calls, 1);
    ck_assert_uint_eq(t.n[0], 1);
    ck_assert_uint_eq(t.id[0][0], lr[0].pl.res.reservation_id);
    for (int i = 0; i < 3; i++) {
        plan_clear(&lr[i].pl);
        db_close(d[i]);
    }
    db_close(holder);
    batcher_destroy(bt);
    pthread_mutex_destroy(&t.lock);
}
END_TEST

START_TEST(under_load_bookings_queue_behind_one_transaction)
{
    /* 3 bookings in progress, 2 lanes: one lane, second waits and commits next. */
    ck_assert_msg(!second_commits_beside_a_stuck_first(1, 0),
                  "a second lane opened with more bookings in progress than lanes");
}
END_TEST

/* A case that changes a server setting: remember and restore run in this
 * process (unchecked), so the setting is put back even when test crashed. */
static void
server_setting_case(Suite *s, const char *name, SFun remember, SFun restore, const TTest *test)
{
    TCase *tc = tcase_create(name);
    tcase_add_unchecked_fixture(tc, remember, restore);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

int
main(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("shard");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, a_batch_commits_every_booking_with_its_own_version);
    tcase_add_test(tc, opposite_batches_never_deadlock);
    tcase_add_test(tc, a_conflict_fails_only_its_own_booking_of_the_batch);
    tcase_add_test(tc, a_moved_or_replayed_booking_fails_alone_in_its_batch);
    tcase_add_test(tc, bookings_of_a_listing_planned_on_other_rules_fail_alone);
    tcase_add_test(tc, a_rules_change_fails_only_the_bookings_planned_on_the_old_rules);
    tcase_add_test(tc, a_lone_booking_answers_every_failure_status);
    tcase_add_test(tc, a_lone_booking_block_answers_every_failure_status);
    tcase_add_test(tc, keys_with_quotes_and_backslashes_are_stored_as_sent);
    tcase_add_test(tc, the_key_lookup_is_fenced);
    tcase_add_test(tc, the_calendar_read_touches_only_its_range);
    tcase_add_test(tc, an_unblock_after_a_block_frees_its_nights);
    tcase_add_test(tc, the_search_read_answers_repeats_and_tells_moved_from_missing);
    tcase_add_test(tc, the_batch_read_answers_each_stay_as_the_plain_read_does);
    tcase_add_test(tc, the_statement_cache_keeps_the_most_recent_64);
    tcase_add_test(tc, a_statement_being_read_stays_cached);
    tcase_add_test(tc, at_low_load_a_booking_takes_a_lane_of_its_own);
    tcase_add_test(tc, under_load_bookings_queue_behind_one_transaction);
    tcase_add_test(tc, a_booking_waiting_for_a_lane_goes_when_the_load_falls);
    tcase_add_test(tc, a_leader_tells_its_outcomes_once_before_answering_any);
    tcase_add_test(tc, a_batch_whose_plans_all_refuse_commits_nothing);
    tcase_add_test(tc, bookings_from_two_pools_never_share_a_transaction);
    tcase_add_test(tc, under_load_a_leader_reads_its_batch_together);
    tcase_add_test(tc, at_low_load_each_booking_reads_at_once);
    tcase_add_test(tc, a_group_read_losing_its_connection_fails_only_the_leader);
    tcase_add_test(tc, a_leader_losing_its_connection_sends_planned_bookings_back);
    tcase_add_test(tc, a_booking_failing_on_its_broken_connection_hands_the_lane_on);
    suite_add_tcase(s, tc);
    TCase *limit = tcase_create("statement_limit");
    tcase_add_unchecked_fixture(limit, remember_stmt_limit, restore_stmt_limit);
    tcase_add_checked_fixture(limit, setup, teardown);
    tcase_set_timeout(limit, 30);
    tcase_add_test(limit, a_full_statement_count_gives_back_statements);
    tcase_add_test(limit, a_group_read_failing_on_its_leaders_connection_fails_only_the_leader);
    suite_add_tcase(s, limit);
    server_setting_case(s, "commit_wait", remember_commit_wait, restore_commit_wait,
                        a_connection_lost_in_the_commit_leaves_the_outcome_unknown);
    server_setting_case(s, "statement_time", NULL, no_statement_time_limit,
                        a_global_statement_time_limit_does_not_reach_our_sessions);
    return unit_run(s);
}
