/* Post-run verification from SQL only: the answers the clients got are the
 * claims, the shards' rows are the truth. Rows on a shard that does not own
 * their vbucket are not live data (a move's leftovers) and are left out, so
 * a write that slipped past the fence shows up as a lost acknowledgement. */
#include "tests/stress/stress_verify.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"

#define MAX_REPORTED 10 /* anomaly lines per category */

struct sql_reservation {
    int64_t reservation_id;
    uint64_t listing_id;
    int32_t check_in;
    int32_t check_out;
    int confirmed;
    int refused; /* a kept refusal: holds no nights */
    char key[64];
};

struct sql_night {
    uint64_t listing_id;
    int32_t night;
    int64_t reservation_id;
};

struct rows {
    struct sql_reservation *res;
    size_t nres, capres;
    struct sql_night *nights;
    size_t nnights, capnights;
};

static void report(uint64_t count, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prints the first MAX_REPORTED anomalies of a category (count is the new total). */
static void
report(uint64_t count, const char *what, const char *fmt, ...)
{
    va_list ap;

    if (count > MAX_REPORTED) {
        return;
    }
    fprintf(stderr, "verify: %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void *
grow(void *p, size_t *cap, size_t size)
{
    size_t ncap = *cap == 0 ? 1024 : *cap * 2;
    void *np = realloc(p, ncap * size);

    if (np == NULL) {
        fprintf(stderr, "verify: out of memory\n");
        abort();
    }
    *cap = ncap;
    return np;
}

static int
read_shard(const char *dsn, const struct stress_conf *conf, struct rows *rows,
           struct stress_verdict *verdict, char *err, size_t errlen)
{
    struct db_val params[] = {DB_INT_V(conf->listing_base),
                              DB_INT_V(conf->listing_base + conf->nlistings)};
    struct db *db = testenv_connect_dsn(dsn, err, errlen);
    struct db_stmt *stmt = NULL;
    struct db_val c[8];
    int rc = -1, n;

    if (db == NULL) {
        return -1;
    }
    if (db_query(db,
                 "SELECT r.reservation_id, r.listing_id, r.vbucket, "
                 "TO_DAYS(r.check_in) - 719528, TO_DAYS(r.check_out) - 719528, r.status, "
                 "r.idempotency_key, o.vbucket IS NOT NULL FROM reservations r "
                 "LEFT JOIN vbucket_owner o ON o.vbucket = r.vbucket "
                 "WHERE r.listing_id >= ? AND r.listing_id < ?",
                 params, 2, &stmt, err, errlen) != CAL_OK) {
        goto out;
    }
    while ((n = db_fetch(stmt, c, 8, err, errlen)) == 1) {
        struct sql_reservation *r;
        uint64_t listing = (uint64_t)c[1].i;

        if (c[2].i != testenv_vbucket(listing)) {
            verdict->routing_mismatches++;
            report(verdict->routing_mismatches, "routing_mismatches",
                   "reservation %" PRId64 " of listing %" PRIu64 " in vbucket %" PRId64
                   ", want %u (%s)",
                   c[0].i, listing, c[2].i, testenv_vbucket(listing), dsn);
        }
        if (c[7].i == 0) {
            verdict->unowned_rows++;
            continue;
        }
        if (rows->nres == rows->capres) {
            rows->res = grow(rows->res, &rows->capres, sizeof(*rows->res));
        }
        r = &rows->res[rows->nres++];
        r->reservation_id = c[0].i;
        r->listing_id = listing;
        r->check_in = (int32_t)c[3].i;
        r->check_out = (int32_t)c[4].i;
        r->confirmed = c[5].type == DB_STR && strcmp(c[5].s, "confirmed") == 0;
        r->refused = c[5].type == DB_STR && strcmp(c[5].s, "refused") == 0;
        snprintf(r->key, sizeof(r->key), "%s", c[6].type == DB_STR ? c[6].s : "");
    }
    if (n < 0) {
        goto out;
    }
    if (db_query(db,
                 "SELECT n.listing_id, n.vbucket, TO_DAYS(n.night) - 719528, n.reservation_id, "
                 "o.vbucket IS NOT NULL FROM nights n "
                 "LEFT JOIN vbucket_owner o ON o.vbucket = n.vbucket "
                 "WHERE n.listing_id >= ? AND n.listing_id < ? AND n.status = 'booked'",
                 params, 2, &stmt, err, errlen) != CAL_OK) {
        goto out;
    }
    while ((n = db_fetch(stmt, c, 5, err, errlen)) == 1) {
        struct sql_night *night;
        uint64_t listing = (uint64_t)c[0].i;

        if (c[1].i != testenv_vbucket(listing)) {
            verdict->routing_mismatches++;
            report(verdict->routing_mismatches, "routing_mismatches",
                   "night of listing %" PRIu64 " in vbucket %" PRId64 " (%s)", listing, c[1].i,
                   dsn);
        }
        if (c[4].i == 0) {
            verdict->unowned_rows++;
            continue;
        }
        if (rows->nnights == rows->capnights) {
            rows->nights = grow(rows->nights, &rows->capnights, sizeof(*rows->nights));
        }
        night = &rows->nights[rows->nnights++];
        night->listing_id = listing;
        night->night = (int32_t)c[2].i;
        night->reservation_id = c[3].type == DB_INT ? c[3].i : 0;
    }
    rc = n < 0 ? -1 : 0;
out:
    db_close(db);
    return rc;
}

static int
cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int
cmp_res_by_stay(const void *a, const void *b)
{
    const struct sql_reservation *x = a, *y = b;
    int c = cmp_u64(x->listing_id, y->listing_id);

    return c != 0 ? c : x->check_in - y->check_in;
}

static int
cmp_resp_by_id(const void *a, const void *b)
{
    const struct sql_reservation *x = *(const struct sql_reservation *const *)a;
    const struct sql_reservation *y = *(const struct sql_reservation *const *)b;

    if (x->reservation_id != y->reservation_id) {
        return x->reservation_id < y->reservation_id ? -1 : 1;
    }
    return cmp_u64(x->listing_id, y->listing_id);
}

static int
cmp_resp_by_key(const void *a, const void *b)
{
    const struct sql_reservation *x = *(const struct sql_reservation *const *)a;
    const struct sql_reservation *y = *(const struct sql_reservation *const *)b;
    int c = cmp_u64(x->listing_id, y->listing_id);

    return c != 0 ? c : strcmp(x->key, y->key);
}

static int
cmp_night(const void *a, const void *b)
{
    const struct sql_night *x = a, *y = b;
    int c = cmp_u64(x->listing_id, y->listing_id);

    return c != 0 ? c : x->night - y->night;
}

static int
cmp_record_by_key(const void *a, const void *b)
{
    const struct stress_record *x = a, *y = b;

    return strcmp(x->key, y->key);
}

static void
check_double_bookings(const struct rows *rows, struct stress_verdict *verdict)
{
    /* rows->res is sorted by (listing, check_in): overlaps are neighbours. */
    for (size_t i = 0; i < rows->nres; i++) {
        const struct sql_reservation *a = &rows->res[i];

        if (!a->confirmed) {
            continue;
        }
        for (size_t j = i + 1; j < rows->nres; j++) {
            const struct sql_reservation *b = &rows->res[j];

            if (b->listing_id != a->listing_id || b->check_in >= a->check_out) {
                break;
            }
            if (b->confirmed) {
                verdict->double_bookings++;
                report(verdict->double_bookings, "double_bookings",
                       "listing %" PRIu64 ": reservations %" PRId64 " [%d,%d) and %" PRId64
                       " [%d,%d)",
                       a->listing_id, a->reservation_id, a->check_in, a->check_out,
                       b->reservation_id, b->check_in, b->check_out);
            }
        }
    }
}

static void
check_nights(const struct rows *rows, struct sql_reservation **by_id,
             struct stress_verdict *verdict)
{
    for (size_t i = 0; i < rows->nnights; i++) {
        const struct sql_night *n = &rows->nights[i];
        struct sql_reservation key = {.reservation_id = n->reservation_id,
                                      .listing_id = n->listing_id},
                               *kp = &key, **found;

        if (i > 0 && cmp_night(n, &rows->nights[i - 1]) == 0) {
            verdict->night_mismatches++;
            report(verdict->night_mismatches, "night_mismatches",
                   "listing %" PRIu64 " night %d has two rows", n->listing_id, n->night);
        }
        found = bsearch(&kp, by_id, rows->nres, sizeof(*by_id), cmp_resp_by_id);
        if (found == NULL || !(*found)->confirmed || (*found)->listing_id != n->listing_id ||
            n->night < (*found)->check_in || n->night >= (*found)->check_out) {
            verdict->night_mismatches++;
            report(verdict->night_mismatches, "night_mismatches",
                   "listing %" PRIu64 " night %d booked by reservation %" PRId64 " which is %s",
                   n->listing_id, n->night, n->reservation_id,
                   found == NULL          ? "missing"
                   : (*found)->refused    ? "refused"
                   : !(*found)->confirmed ? "cancelled"
                                          : "elsewhere");
        }
    }
    for (size_t i = 0; i < rows->nres; i++) {
        const struct sql_reservation *r = &rows->res[i];

        if (!r->confirmed) {
            continue;
        }
        for (int32_t d = r->check_in; d < r->check_out; d++) {
            struct sql_night key = {.listing_id = r->listing_id, .night = d};
            const struct sql_night *n =
                bsearch(&key, rows->nights, rows->nnights, sizeof(key), cmp_night);

            if (n == NULL || n->reservation_id != r->reservation_id) {
                verdict->night_mismatches++;
                report(verdict->night_mismatches, "night_mismatches",
                       "reservation %" PRId64 " of listing %" PRIu64 ": night %d is %s",
                       r->reservation_id, r->listing_id, d,
                       n == NULL ? "not booked" : "booked by another reservation");
            }
        }
    }
}

static void
check_keys(const struct rows *rows, struct sql_reservation **by_key, struct stress_record *records,
           size_t nrecords, unsigned char *seen, struct stress_verdict *verdict)
{
    for (size_t i = 0; i < rows->nres; i++) {
        const struct sql_reservation *r = by_key[i];
        struct stress_record probe, *rec;

        if (i > 0 && cmp_resp_by_key(&by_key[i - 1], &by_key[i]) == 0) {
            verdict->duplicate_idempotent++;
            report(verdict->duplicate_idempotent, "duplicate_idempotent",
                   "key %s of listing %" PRIu64 ": reservations %" PRId64 " and %" PRId64, r->key,
                   r->listing_id, by_key[i - 1]->reservation_id, r->reservation_id);
        }
        rec = NULL;
        if (strlen(r->key) < sizeof(probe.key)) {
            memcpy(probe.key, r->key, strlen(r->key) + 1);
            rec = bsearch(&probe, records, nrecords, sizeof(*records), cmp_record_by_key);
        }
        if (rec == NULL || rec->listing_id != r->listing_id) {
            verdict->phantom_bookings++;
            report(verdict->phantom_bookings, "phantom_bookings",
                   "reservation %" PRId64 " of listing %" PRIu64 " has key %s never sent there",
                   r->reservation_id, r->listing_id, r->key);
            continue;
        }
        seen[rec - records] = 1;
        if (r->check_in != rec->check_in || r->check_out != rec->check_out) {
            /* Right key and id, other nights: told one stay, sold another. */
            uint64_t *count = rec->acked ? &verdict->lost_acknowledged : &verdict->phantom_bookings;
            (*count)++;
            report(*count, rec->acked ? "lost_acknowledged" : "phantom_bookings",
                   "key %s asked days %d..%d, reservation %" PRId64 " holds days %d..%d", rec->key,
                   rec->check_in, rec->check_out, r->reservation_id, r->check_in, r->check_out);
        }
        /* Not when a request of the key may have reached the server after
         * the refusal (its sender gave up waiting): it may have booked then. */
        if (r->confirmed && !rec->acked &&
            (rec->refusal_kept ||
             (rec->final_status >= 400 && !rec->unknown_after_refusal && !rec->may_arrive_late))) {
            verdict->phantom_bookings++;
            report(verdict->phantom_bookings, "phantom_bookings",
                   "key %s answered %d but reservation %" PRId64 " is confirmed", rec->key,
                   rec->final_status, r->reservation_id);
        }
        if (r->refused && rec->acked) {
            verdict->lost_acknowledged++;
            report(verdict->lost_acknowledged, "lost_acknowledged",
                   "key %s: acknowledged as booked, SQL holds its refusal %" PRId64, rec->key,
                   r->reservation_id);
        }
        if (!r->refused && rec->refusal_kept && !r->confirmed) {
            verdict->lost_acknowledged++;
            report(verdict->lost_acknowledged, "lost_acknowledged",
                   "key %s: refused, SQL holds reservation %" PRId64 " as cancelled", rec->key,
                   r->reservation_id);
        }
        if (!r->confirmed && !r->refused && !rec->cancel_sent) {
            verdict->lost_acknowledged++;
            report(verdict->lost_acknowledged, "lost_acknowledged",
                   "key %s: reservation %" PRId64 " cancelled but no cancel was sent", rec->key,
                   r->reservation_id);
        }
        if (rec->acked && rec->reservation_id != r->reservation_id) {
            verdict->lost_acknowledged++;
            report(verdict->lost_acknowledged, "lost_acknowledged",
                   "key %s: acknowledged reservation %" PRId64 ", SQL has %" PRId64, rec->key,
                   rec->reservation_id, r->reservation_id);
        }
        if (rec->cancel_acked && r->confirmed) {
            verdict->lost_acknowledged++;
            report(verdict->lost_acknowledged, "lost_acknowledged",
                   "key %s: cancel of reservation %" PRId64 " acknowledged, still confirmed",
                   rec->key, r->reservation_id);
        }
    }
    for (size_t i = 0; i < nrecords; i++) {
        if (records[i].acked && !seen[i]) {
            verdict->lost_acknowledged++;
            report(verdict->lost_acknowledged, "lost_acknowledged",
                   "key %s: reservation %" PRId64 " acknowledged, not in SQL", records[i].key,
                   records[i].reservation_id);
        } else if (records[i].refusal_kept && !seen[i]) {
            verdict->lost_acknowledged++;
            report(verdict->lost_acknowledged, "lost_acknowledged",
                   "key %s: refused (409 nights_unavailable), no refusal in SQL", records[i].key);
        }
    }
}

int
stress_verify_run(const struct testenv *env, const struct stress_conf *conf,
                  struct stress_record *records, size_t nrecords, uint64_t replay_mismatches,
                  struct stress_verdict *verdict, char *err, size_t errlen)
{
    struct rows rows;
    struct sql_reservation **by_id = NULL, **by_key = NULL;
    unsigned char *seen = NULL;
    int rc = -1;

    memset(verdict, 0, sizeof(*verdict));
    memset(&rows, 0, sizeof(rows));
    verdict->cache_mismatches = -1;
    for (size_t i = 0; i < env->nshards; i++) {
        char e[512];

        if (read_shard(env->shard_dsns[i], conf, &rows, verdict, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "shard %zu: %s", i, e);
            goto out;
        }
    }
    by_id = calloc(rows.nres + 1, sizeof(*by_id));
    by_key = calloc(rows.nres + 1, sizeof(*by_key));
    seen = calloc(nrecords + 1, 1);
    if (by_id == NULL || by_key == NULL || seen == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    qsort(rows.res, rows.nres, sizeof(*rows.res), cmp_res_by_stay);
    qsort(rows.nights, rows.nnights, sizeof(*rows.nights), cmp_night);
    for (size_t i = 0; i < rows.nres; i++) {
        by_id[i] = by_key[i] = &rows.res[i];
        verdict->sql_confirmed += (uint64_t)rows.res[i].confirmed;
        verdict->sql_refused += (uint64_t)rows.res[i].refused;
    }
    verdict->sql_reservations = rows.nres;
    verdict->sql_booked_nights = rows.nnights;
    qsort(by_id, rows.nres, sizeof(*by_id), cmp_resp_by_id);
    qsort(by_key, rows.nres, sizeof(*by_key), cmp_resp_by_key);
    qsort(records, nrecords, sizeof(*records), cmp_record_by_key);

    check_double_bookings(&rows, verdict);
    check_nights(&rows, by_id, verdict);
    check_keys(&rows, by_key, records, nrecords, seen, verdict);
    verdict->duplicate_idempotent += replay_mismatches;
    /* cache_mismatches stays -1 here: the caller fills it from the run's
     * read-your-writes checks; a memcached-against-SQL verifier belongs here. */
    rc = 0;
out:
    free(by_id);
    free(by_key);
    free(seen);
    free(rows.res);
    free(rows.nights);
    return rc;
}

int
stress_verify_failed(const struct stress_verdict *verdict)
{
    return verdict->double_bookings > 0 || verdict->lost_acknowledged > 0 ||
           verdict->phantom_bookings > 0 || verdict->duplicate_idempotent > 0 ||
           verdict->night_mismatches > 0 || verdict->routing_mismatches > 0 ||
           verdict->unowned_rows > 0 || verdict->cache_mismatches > 0;
}

/* The shard index owning listing_id's vbucket (per vbucket_owner), or -1. */
static int
owner_index(const struct testenv *env, struct db **dbs, uint64_t listing_id)
{
    struct db_val p[] = {DB_INT_V(testenv_vbucket(listing_id))};

    for (size_t i = 0; i < env->nshards; i++) {
        struct db_stmt *stmt = NULL;
        struct db_val c;
        char e[256];

        if (db_query(dbs[i], "SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", p, 1, &stmt, e,
                     sizeof(e)) == CAL_OK &&
            db_fetch(stmt, &c, 1, e, sizeof(e)) == 1 && c.i > 0) {
            while (db_fetch(stmt, &c, 1, e, sizeof(e)) == 1) {
            }
            return (int)i;
        }
    }
    return -1;
}

int
stress_verify_inject(const struct testenv *env, const char *fault,
                     const struct stress_record *records, size_t nrecords, char *err, size_t errlen)
{
    struct db *dbs[TESTENV_MAX_SHARDS] = {NULL};
    const struct stress_record *victim = NULL;
    int want_refused = strcmp(fault, "phantom") == 0 || strcmp(fault, "lost_refusal") == 0, idx,
        rc = -1;
    cal_status st = CAL_ERR;
    struct db_stmt *stmt = NULL;

    if (strcmp(fault, "double_booking") != 0 && strcmp(fault, "lost_ack") != 0 &&
        strcmp(fault, "delete_ack") != 0 && strcmp(fault, "phantom") != 0 &&
        strcmp(fault, "night_mismatch") != 0 && strcmp(fault, "shift_dates") != 0 &&
        strcmp(fault, "lost_refusal") != 0) {
        snprintf(err, errlen, "unknown fault '%s'", fault);
        return -1;
    }
    for (size_t i = 0; i < nrecords && victim == NULL; i++) {
        const struct stress_record *rec = &records[i];

        if (want_refused ? (rec->refusal_kept && !rec->acked) : (rec->acked && !rec->cancel_sent)) {
            victim = rec;
        }
    }
    if (victim == NULL) {
        snprintf(err, errlen, "no key suitable for fault %s", fault);
        return -1;
    }
    for (size_t i = 0; i < env->nshards; i++) {
        dbs[i] = testenv_connect_dsn(env->shard_dsns[i], err, errlen);
        if (dbs[i] == NULL) {
            goto out;
        }
    }
    idx = owner_index(env, dbs, victim->listing_id);
    if (idx < 0) {
        snprintf(err, errlen, "no shard owns listing %" PRIu64, victim->listing_id);
        goto out;
    }
    if (strcmp(fault, "double_booking") == 0 || strcmp(fault, "phantom") == 0) {
        /* A phantom goes far beyond the window so it overlaps nothing; it
         * turns the key's kept refusal into a booking. */
        int64_t shift = want_refused ? 400 : 0;
        struct db_val p[] = {DB_INT_V(victim->listing_id),
                             DB_INT_V(testenv_vbucket(victim->listing_id)),
                             DB_INT_V(victim->check_in + shift + DB_TO_DAYS_EPOCH),
                             DB_INT_V(victim->check_out + shift + DB_TO_DAYS_EPOCH),
                             DB_CSTR_V(want_refused ? victim->key : "injected-double")};

        st = db_query(dbs[idx],
                      "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, "
                      "check_out, guest_id, status, total_price, currency, idempotency_key, "
                      "request_hash, version) SELECT MAX(reservation_id) + 1, ?, ?, FROM_DAYS(?), "
                      "FROM_DAYS(?), 1, 'confirmed', 0, 'USD', ?, '0', 1 FROM reservations "
                      "ON DUPLICATE KEY UPDATE status = 'confirmed', check_in = VALUES(check_in), "
                      "check_out = VALUES(check_out)",
                      p, 5, &stmt, err, errlen);
    } else if (strcmp(fault, "lost_refusal") == 0) {
        struct db_val p[] = {DB_INT_V(victim->listing_id), DB_CSTR_V(victim->key)};

        st = db_query(dbs[idx],
                      "DELETE FROM reservations WHERE listing_id = ? AND idempotency_key = ?"
                      " AND status = 'refused'",
                      p, 2, &stmt, err, errlen);
    } else if (strcmp(fault, "shift_dates") == 0) {
        /* The acknowledged stay and its nights, 400 days on: consistent in
         * SQL (nothing overlaps there), but not the stay the client was told. */
        struct db_val p[] = {DB_INT_V(victim->reservation_id)};

        st = db_query(dbs[idx],
                      "UPDATE nights SET night = night + INTERVAL 400 DAY WHERE reservation_id = ?"
                      " ORDER BY night DESC",
                      p, 1, NULL, err, errlen);
        if (st == CAL_OK) {
            st = db_query(dbs[idx],
                          "UPDATE reservations SET check_in = check_in + INTERVAL 400 DAY,"
                          " check_out = check_out + INTERVAL 400 DAY WHERE reservation_id = ?",
                          p, 1, &stmt, err, errlen);
        }
    } else if (strcmp(fault, "delete_ack") == 0) {
        /* The acknowledged reservation gone altogether, its nights with it:
         * nothing in SQL contradicts itself, only the 201 the client got. */
        struct db_val p[] = {DB_INT_V(victim->reservation_id)};

        st = db_query(dbs[idx], "DELETE FROM nights WHERE reservation_id = ?", p, 1, NULL, err,
                      errlen);
        if (st == CAL_OK)
            st = db_query(dbs[idx], "DELETE FROM reservations WHERE reservation_id = ?", p, 1,
                          &stmt, err, errlen);
    } else if (strcmp(fault, "lost_ack") == 0) {
        struct db_val p[] = {DB_INT_V(victim->reservation_id)};

        st = db_query(dbs[idx],
                      "UPDATE reservations SET status = 'cancelled' WHERE "
                      "reservation_id = ?",
                      p, 1, &stmt, err, errlen);
    } else {
        struct db_val p[] = {DB_INT_V(victim->listing_id),
                             DB_INT_V(victim->check_in + DB_TO_DAYS_EPOCH)};

        st = db_query(dbs[idx],
                      "UPDATE nights SET status = 'available', reservation_id = NULL "
                      "WHERE listing_id = ? AND night = FROM_DAYS(?)",
                      p, 2, &stmt, err, errlen);
    }
    /* An upsert that updates counts its row twice. */
    if (st == CAL_OK && db_affected_rows(stmt) != 1 &&
        !(want_refused && db_affected_rows(stmt) == 2)) {
        snprintf(err, errlen, "fault %s changed %" PRIu64 " rows", fault, db_affected_rows(stmt));
        st = CAL_ERR;
    }
    if (st == CAL_OK) {
        fprintf(stderr, "verify: injected %s on key %s (listing %" PRIu64 ", shard %d)\n", fault,
                victim->key, victim->listing_id, idx);
        rc = 0;
    }
out:
    for (size_t i = 0; i < env->nshards; i++) {
        db_close(dbs[i]);
    }
    return rc;
}
