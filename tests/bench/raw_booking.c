/* The raw booking transaction, statement for statement what calendard's
 * store_read_calendar + store_book send (minus HTTP, JSON, the pool and the
 * cache invalidation), so calendard / raw is the daemon's own cost. */
#include "tests/bench/raw_booking.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/booking.h"
#include "common/db.h"
#include "common/util.h"

#define E DB_TO_DAYS_EPOCH
#define MAX_STAY 8 /* the workload books 1..3 nights */

/* The same texts as calendard/store.c, so the server runs the same plans. */
static const char SQL_READ_CALENDAR[] =
    "SELECT o.epoch, l.version, l.rules_version, l.default_price, l.currency, l.min_nights,"
    " l.max_nights, TO_DAYS(n.night) - 719528, n.status, n.reservation_id, n.price, n.version"
    " FROM vbucket_owner o LEFT JOIN listings l ON l.listing_id = ?"
    " LEFT JOIN nights n ON n.listing_id = l.listing_id"
    "  AND n.night >= FROM_DAYS(?) AND n.night < FROM_DAYS(?)"
    " WHERE o.vbucket = ?";
static const char SQL_OWNER_LOCK[] =
    "SELECT epoch FROM vbucket_owner WHERE vbucket = ? LOCK IN SHARE MODE";
static const char SQL_BUMP_IF_RULES[] = "UPDATE listings SET version = LAST_INSERT_ID(version + 1)"
                                        " WHERE listing_id = ? AND rules_version = ?";
static const char SQL_INSERT_RESERVATION[] =
    "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out,"
    " guest_id, status, total_price, currency, idempotency_key, request_hash, version)"
    " VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), ?, 'confirmed', ?, ?, ?, ?, ?)";

enum outcome { BOOKED, UNAVAILABLE, CONFLICT, FAILED };

struct shared {
    const struct raw_booking_conf *conf;
    double t_start, t_end;
    atomic_uint_fast64_t started;
    atomic_uint_fast64_t next_id;
    uint64_t tag;
};

struct worker {
    struct shared *sh;
    unsigned index;
    pthread_t thread;
    struct db *db[TESTENV_MAX_SHARDS];
    struct bench_rng rng;
    struct raw_booking_result res;
    cal_status rc;
    char err[256];
};

struct stay {
    uint64_t listing_id;
    uint32_t vbucket;
    int32_t check_in, check_out;
    char key[64];
    char hash[17];
};

static void
drain(struct db_stmt *st)
{
    struct db_val c[1];
    char e[64];
    while (db_fetch(st, c, 1, e, sizeof(e)) > 0)
        ;
}

/* The read phase: listing rules and the nights of the stay, no locks. */
static enum outcome
read_phase(struct db *db, const struct stay *s, uint64_t *rules_version, int64_t *price,
           char *currency, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val c[12];
    struct db_val p[4] = {DB_INT_V(s->listing_id), DB_INT_V(s->check_in + E),
                          DB_INT_V(s->check_out + E), DB_INT_V(s->vbucket)};
    int r, rows = 0;
    bool found = false, taken = false;
    if (db_query(db, SQL_READ_CALENDAR, p, 4, &st, err, errlen) != CAL_OK)
        return FAILED;
    while ((r = db_fetch(st, c, 12, err, errlen)) > 0) {
        if (rows++ == 0 && c[1].type == DB_INT) {
            found = true;
            *rules_version = (uint64_t)c[2].i;
            *price = c[3].i;
            cal_strlcpy(currency, c[4].type == DB_STR ? c[4].s : "USD", 4);
        }
        /* The workload never cancels: any night row is a taken night. */
        if (c[7].type != DB_NULL)
            taken = true;
    }
    if (r < 0)
        return FAILED;
    if (!found) {
        snprintf(err, errlen, "listing %llu not found on its shard",
                 (unsigned long long)s->listing_id);
        return FAILED;
    }
    return taken ? UNAVAILABLE : BOOKED;
}

static cal_status
lock_owner(struct db *db, uint32_t vbucket, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(vbucket)}, c[1];
    cal_status rc = db_query(db, SQL_OWNER_LOCK, p, 1, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, c, 1, err, errlen);
    drain(st);
    if (r <= 0) {
        if (r == 0)
            snprintf(err, errlen, "vbucket %u not owned by this shard", vbucket);
        return r == 0 ? CAL_EMOVED : CAL_ERR;
    }
    return CAL_OK;
}

static void
sql_insert_nights(char *buf, size_t size, size_t n)
{
    size_t off = (size_t)snprintf(
        buf, size,
        "INSERT INTO nights (listing_id, night, status, reservation_id, version, vbucket) VALUES ");
    for (size_t i = 0; i < n && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s(?, FROM_DAYS(?), 'booked', ?, 1, ?)",
                                i ? "," : "");
}

/* One try: read, then the fenced transaction. */
static enum outcome
book_once(struct shared *sh, struct db *db, const struct stay *s, char *err, size_t errlen)
{
    uint64_t rules_version = 0;
    int64_t price = 0;
    char currency[4] = "", sql[512];
    struct db_val p[MAX_STAY * 4 + 12];
    struct db_stmt *st;
    size_t n = 0, nights = (size_t)(s->check_out - s->check_in);
    enum outcome out = read_phase(db, s, &rules_version, &price, currency, err, errlen);
    cal_status rc;
    if (out != BOOKED)
        return out;
    uint64_t reservation_id = atomic_fetch_add(&sh->next_id, 1);
    if ((rc = db_begin(db, err, errlen)) != CAL_OK)
        return FAILED;
    if ((rc = lock_owner(db, s->vbucket, err, errlen)) != CAL_OK)
        goto fail;
    sql_insert_nights(sql, sizeof(sql), nights);
    for (size_t i = 0; i < nights; i++) {
        p[n++] = DB_INT_V(s->listing_id);
        p[n++] = DB_INT_V(s->check_in + (int32_t)i + E);
        p[n++] = DB_INT_V(reservation_id);
        p[n++] = DB_INT_V(s->vbucket);
    }
    if ((rc = db_query(db, sql, p, n, NULL, err, errlen)) != CAL_OK) {
        if (rc == CAL_EDUP)
            rc = CAL_ECONFLICT; /* a concurrent booking inserted the night first */
        goto fail;
    }
    p[0] = DB_INT_V(s->listing_id);
    p[1] = DB_INT_V(rules_version);
    if ((rc = db_query(db, SQL_BUMP_IF_RULES, p, 2, &st, err, errlen)) != CAL_OK)
        goto fail;
    if (db_affected_rows(st) != 1) {
        rc = CAL_ECONFLICT;
        goto fail;
    }
    uint64_t version = db_insert_id(st);
    n = 0;
    p[n++] = DB_INT_V(reservation_id);
    p[n++] = DB_INT_V(s->listing_id);
    p[n++] = DB_INT_V(s->vbucket);
    p[n++] = DB_INT_V(s->check_in + E);
    p[n++] = DB_INT_V(s->check_out + E);
    p[n++] = DB_INT_V(7);
    p[n++] = DB_INT_V(price * (int64_t)nights);
    p[n++] = DB_CSTR_V(currency);
    p[n++] = DB_CSTR_V(s->key);
    p[n++] = DB_CSTR_V(s->hash);
    p[n++] = DB_INT_V(version);
    if ((rc = db_query(db, SQL_INSERT_RESERVATION, p, n, NULL, err, errlen)) != CAL_OK)
        goto fail;
    if ((rc = db_commit(db, err, errlen)) != CAL_OK)
        return rc == CAL_ECONFLICT ? CONFLICT : FAILED;
    return BOOKED;
fail:
    db_rollback(db);
    return rc == CAL_ECONFLICT ? CONFLICT : FAILED;
}

/* One booking with calendard's retry policy: bounded tries, full jitter. */
static void
book_one(struct worker *w, uint64_t seq)
{
    struct shared *sh = w->sh;
    const struct raw_booking_conf *conf = sh->conf;
    struct stay s;
    char err[512];
    enum outcome out = FAILED;
    unsigned retries = 0, conflicts = 0;
    bench_stay_next(&conf->stays, &w->rng, &s.listing_id, &s.check_in, &s.check_out);
    s.vbucket = testenv_vbucket(s.listing_id);
    snprintf(s.key, sizeof(s.key), "raw-%llx-%u-%llu", (unsigned long long)sh->tag, w->index,
             (unsigned long long)seq);
    booking_request_hash(s.check_in, s.check_out, 7, s.hash);
    struct db *db = w->db[bench_routes_shard(conf->routes, s.listing_id)];
    double t0 = bench_now();
    for (unsigned attempt = 0; attempt < conf->max_attempts; attempt++) {
        if (attempt > 0) {
            retries++;
            cal_sleep_ms(booking_backoff_ms(attempt - 1, conf->backoff_base_ms,
                                            conf->backoff_max_ms, bench_rng_next(&w->rng)));
        }
        out = book_once(sh, db, &s, err, sizeof(err));
        if (out != CONFLICT)
            break;
        conflicts++;
    }
    double t1 = bench_now();
    if (out == FAILED && w->res.errors == 0)
        cal_strlcpy(w->err, err, sizeof(w->err));
    if (t0 < sh->t_start || t1 >= sh->t_end)
        return; /* warm-up and drain are not measured */
    struct raw_booking_result *res = &w->res;
    res->attempts++;
    res->retries += retries;
    res->conflicts += conflicts;
    switch (out) {
    case BOOKED:
        res->booked++;
        bench_lat_add(&res->lat, (uint64_t)((t1 - t0) * 1e6));
        break;
    case UNAVAILABLE:
        res->unavailable++;
        break;
    case CONFLICT:
        res->gave_up++;
        break;
    case FAILED:
        res->errors++;
        break;
    }
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    const struct raw_booking_conf *conf = sh->conf;
    w->rc = CAL_OK;
    for (size_t i = 0; i < conf->env->nshards; i++) {
        w->db[i] = testenv_connect_shard(conf->env, i, w->err, sizeof(w->err));
        if (w->db[i] == NULL) {
            w->rc = CAL_EUNAVAIL;
            return NULL;
        }
    }
    for (uint64_t seq = 0; bench_now() < sh->t_end; seq++) {
        if (atomic_fetch_add(&sh->started, 1) >= conf->max_bookings)
            break;
        book_one(w, seq);
    }
    return NULL;
}

cal_status
raw_booking_run(const struct raw_booking_conf *conf, struct raw_booking_result *res, char *err,
                size_t errlen)
{
    struct shared sh = {.conf = conf};
    struct worker *ws = cal_calloc(conf->conc, sizeof(*ws));
    size_t cap = (size_t)(conf->max_bookings < 4000000 ? conf->max_bookings : 4000000);
    cal_status rc = CAL_OK;
    memset(res, 0, sizeof(*res));
    bench_lat_init(&res->lat, cap);
    atomic_init(&sh.started, 0);
    /* Above 2^60: never the id of a calendard reservation (53 bits). */
    atomic_init(&sh.next_id, (1ULL << 60) | (cal_now_ms() << 16));
    sh.tag = testenv_random48();
    /* Connections are made before the window; the warm-up covers them. */
    sh.t_start = bench_now() + conf->warmup_s;
    sh.t_end = sh.t_start + conf->secs;
    for (unsigned t = 0; t < conf->conc; t++) {
        struct worker *w = &ws[t];
        w->sh = &sh;
        w->index = t;
        bench_rng_init(&w->rng, conf->seed * 0x9e3779b97f4a7c15ULL + t + 1);
        bench_lat_init(&w->res.lat, cap / conf->conc + 1024);
        pthread_create(&w->thread, NULL, worker_main, w);
    }
    bench_sleep_until(sh.t_start);
    if (conf->window)
        conf->window(conf->ctx, true);
    bench_sleep_until(sh.t_end);
    if (conf->window)
        conf->window(conf->ctx, false);
    for (unsigned t = 0; t < conf->conc; t++) {
        struct worker *w = &ws[t];
        pthread_join(w->thread, NULL);
        for (size_t i = 0; i < conf->env->nshards; i++)
            db_close(w->db[i]);
        if (rc == CAL_OK && (w->rc != CAL_OK || (w->res.errors > 0 && w->res.booked == 0))) {
            rc = w->rc != CAL_OK ? w->rc : CAL_ERR;
            cal_strlcpy(err, w->err, errlen);
        }
        res->booked += w->res.booked;
        res->attempts += w->res.attempts;
        res->unavailable += w->res.unavailable;
        res->gave_up += w->res.gave_up;
        res->errors += w->res.errors;
        res->retries += w->res.retries;
        res->conflicts += w->res.conflicts;
        bench_lat_merge(&res->lat, &w->res.lat);
        bench_lat_deinit(&w->res.lat);
    }
    res->secs = conf->secs;
    free(ws);
    return rc;
}
