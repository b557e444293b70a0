/* Post-run verification from SQL only: the answers the clients got are the
 * claims, the shards' rows are the truth. Rows on a shard that does not own
 * their vbucket are not live data (a move's leftovers) and are left out, so
 * a write that slipped past the fence shows up as a lost acknowledgement.
 * Which shard owns a vbucket is itself checked: each vbucket has exactly
 * one vbucket_owner row, on the shard the catalog's map names. */
#include "tests/stress/stress_verify.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/idblock.h"
#include "common/db.h"

#define MAX_REPORTED 10 /* anomaly lines per category */

struct sql_reservation {
    int64_t reservation_id;
    uint64_t listing_id;
    int32_t check_in;
    int32_t check_out;
    int confirmed;
    int refused;     /* a kept refusal: holds no nights */
    int64_t version; /* the listing's calendar version the booking committed at */
    int64_t total_price;
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
    struct sql_night *nights; /* booked */
    size_t nnights, capnights;
    struct sql_night *blocked; /* reservation_id 0 */
    size_t nblocked, capblocked;
};

#define CATALOG_MAX_SHARDS 256 /* calendard's ROUTER_MAX_SHARDS */

/* Each vbucket's owner by the catalog's map and by the shards' fence rows. */
struct owners {
    int mapped[TESTENV_NUM_VBUCKETS];       /* env index of the catalog's shard; -1: the vbucket has
                                             * no catalog row; -2: its shard_id is not in shards */
    int64_t shard_id[TESTENV_NUM_VBUCKETS]; /* the catalog's, for messages */
    uint32_t rows[TESTENV_NUM_VBUCKETS];    /* bit i: env shard i has a vbucket_owner row */
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

/* Appends to out[*off..size), which stays NUL-terminated when it fills. */
static void append(char *out, size_t size, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
append(char *out, size_t size, size_t *off, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*off >= size - 1) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(out + *off, size - *off, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *off) {
        *off = size - 1;
    } else {
        *off += (size_t)n;
    }
}

/* The catalog's shards and vbucket map into o. Every shard the catalog names
 * (active or draining: a removed shard leaves the table) can hold rows, so
 * each must be one of env's SHARD_DSNS; -1 with err naming those that are
 * not, or saying why the catalog could not be read. */
static int
read_catalog(const struct testenv *env, struct owners *o, char *err, size_t errlen)
{
    struct db *db = testenv_connect_catalog(env, err, errlen);
    struct db_stmt *stmt = NULL;
    struct db_val c[5];
    int64_t ids[CATALOG_MAX_SHARDS];
    int idx[CATALOG_MAX_SHARDS];
    size_t nids = 0, missing = 0, off = 0;
    char names[1024] = "";
    int rc = -1, n;

    if (db == NULL) {
        return -1;
    }
    if (db_query(db, "SELECT shard_id, host, port, db_name, state FROM shards ORDER BY shard_id",
                 NULL, 0, &stmt, err, errlen) != CAL_OK) {
        goto out;
    }
    while ((n = db_fetch(stmt, c, 5, err, errlen)) == 1) {
        if (nids == CATALOG_MAX_SHARDS) {
            snprintf(err, errlen, "the catalog has more than %d shards", CATALOG_MAX_SHARDS);
            goto out;
        }
        ids[nids] = c[0].i;
        idx[nids] = testenv_find_shard(env, (unsigned)c[2].i, c[3].type == DB_STR ? c[3].s : "");
        if (idx[nids] < 0) {
            append(names, sizeof(names), &off, "%sshard_id %" PRId64 " (%s:%" PRId64 "/%s, %s)",
                   missing++ ? ", " : "", c[0].i, c[1].type == DB_STR ? c[1].s : "?", c[2].i,
                   c[3].type == DB_STR ? c[3].s : "?", c[4].type == DB_STR ? c[4].s : "?");
        }
        nids++;
    }
    if (n < 0) {
        goto out;
    }
    if (missing > 0) {
        snprintf(err, errlen,
                 "%zu shard%s of the catalog %s not in SHARD_DSNS of %s, so the rows there would "
                 "go unread: %s",
                 missing, missing == 1 ? "" : "s", missing == 1 ? "is" : "are", env->path, names);
        goto out;
    }
    for (size_t v = 0; v < TESTENV_NUM_VBUCKETS; v++) {
        o->mapped[v] = -1;
    }
    if (db_query(db, "SELECT vbucket, shard_id FROM vbuckets", NULL, 0, &stmt, err, errlen) !=
        CAL_OK) {
        goto out;
    }
    while ((n = db_fetch(stmt, c, 2, err, errlen)) == 1) {
        if (c[0].i < 0 || c[0].i >= TESTENV_NUM_VBUCKETS) {
            snprintf(err, errlen, "the catalog maps vbucket %" PRId64 ", beyond the %d vbuckets",
                     c[0].i, TESTENV_NUM_VBUCKETS);
            goto out;
        }
        o->mapped[c[0].i] = -2;
        o->shard_id[c[0].i] = c[1].i;
        for (size_t i = 0; i < nids; i++) {
            if (ids[i] == c[1].i) {
                o->mapped[c[0].i] = idx[i];
            }
        }
    }
    rc = n < 0 ? -1 : 0;
out:
    db_close(db);
    return rc;
}

/* shard's vbucket_owner rows into o. */
static int
read_owners(struct db *db, size_t shard, struct owners *o, char *err, size_t errlen)
{
    struct db_stmt *stmt = NULL;
    struct db_val c[1];
    int n;

    if (db_query(db, "SELECT vbucket FROM vbucket_owner", NULL, 0, &stmt, err, errlen) != CAL_OK) {
        return -1;
    }
    while ((n = db_fetch(stmt, c, 1, err, errlen)) == 1) {
        if (c[0].i < 0 || c[0].i >= TESTENV_NUM_VBUCKETS) {
            snprintf(err, errlen, "an owner row of vbucket %" PRId64 ", beyond the %d vbuckets",
                     c[0].i, TESTENV_NUM_VBUCKETS);
            return -1;
        }
        o->rows[c[0].i] |= 1u << shard;
    }
    return n < 0 ? -1 : 0;
}

/* Messages name a shard by its index in the stack env: its DSN carries a password. */
static int
read_shard(const struct testenv *env, size_t shard, const struct stress_conf *conf,
           struct rows *rows, struct owners *owners, struct stress_verdict *verdict, char *err,
           size_t errlen)
{
    struct db_val params[] = {DB_INT_V(conf->listing_base),
                              DB_INT_V(conf->listing_base + conf->nlistings)};
    struct db *db = testenv_connect_shard(env, shard, err, errlen);
    struct db_stmt *stmt = NULL;
    struct db_val c[10];
    int rc = -1, n;

    if (db == NULL) {
        return -1;
    }
    if (read_owners(db, shard, owners, err, errlen) != 0) {
        goto out;
    }
    if (db_query(db,
                 "SELECT r.reservation_id, r.listing_id, r.vbucket, "
                 "TO_DAYS(r.check_in) - 719528, TO_DAYS(r.check_out) - 719528, r.status, "
                 "r.idempotency_key, o.vbucket IS NOT NULL, r.version, r.total_price "
                 "FROM reservations r LEFT JOIN vbucket_owner o ON o.vbucket = r.vbucket "
                 "WHERE r.listing_id >= ? AND r.listing_id < ?",
                 params, 2, &stmt, err, errlen) != CAL_OK) {
        goto out;
    }
    while ((n = db_fetch(stmt, c, 10, err, errlen)) == 1) {
        struct sql_reservation *r;
        uint64_t listing = (uint64_t)c[1].i;

        if (c[2].i != testenv_vbucket(listing)) {
            verdict->routing_mismatches++;
            report(verdict->routing_mismatches, "routing_mismatches",
                   "reservation %" PRId64 " of listing %" PRIu64 " in vbucket %" PRId64
                   ", want %u (shard %zu)",
                   c[0].i, listing, c[2].i, testenv_vbucket(listing), shard);
        }
        if (c[7].i == 0) {
            verdict->unowned_rows++;
            report(verdict->unowned_rows, "unowned_rows",
                   "reservation %" PRId64 " of listing %" PRIu64 " in vbucket %" PRId64
                   " on shard %zu, which does not own it",
                   c[0].i, listing, c[2].i, shard);
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
        r->version = c[8].i;
        r->total_price = c[9].type == DB_INT ? c[9].i : -1;
    }
    if (n < 0) {
        goto out;
    }
    if (db_query(db,
                 "SELECT n.listing_id, n.vbucket, TO_DAYS(n.night) - 719528, n.reservation_id, "
                 "o.vbucket IS NOT NULL, n.status = 'blocked' FROM nights n "
                 "LEFT JOIN vbucket_owner o ON o.vbucket = n.vbucket "
                 "WHERE n.listing_id >= ? AND n.listing_id < ? "
                 "AND n.status IN ('booked', 'blocked')",
                 params, 2, &stmt, err, errlen) != CAL_OK) {
        goto out;
    }
    while ((n = db_fetch(stmt, c, 6, err, errlen)) == 1) {
        struct sql_night *night;
        uint64_t listing = (uint64_t)c[0].i;

        if (c[1].i != testenv_vbucket(listing)) {
            verdict->routing_mismatches++;
            report(verdict->routing_mismatches, "routing_mismatches",
                   "night of listing %" PRIu64 " in vbucket %" PRId64 " (shard %zu)", listing,
                   c[1].i, shard);
        }
        if (c[4].i == 0) {
            verdict->unowned_rows++;
            report(verdict->unowned_rows, "unowned_rows",
                   "night %" PRId64 " of listing %" PRIu64 " in vbucket %" PRId64
                   " on shard %zu, which does not own it",
                   c[2].i, listing, c[1].i, shard);
            continue;
        }
        if (c[5].i != 0) {
            if (rows->nblocked == rows->capblocked) {
                rows->blocked = grow(rows->blocked, &rows->capblocked, sizeof(*rows->blocked));
            }
            rows->blocked[rows->nblocked++] =
                (struct sql_night){.listing_id = listing, .night = (int32_t)c[2].i};
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

/* Kept refusals whose stay a booking of the listing overlaps (confirmed or
 * cancelled since): proof that bookings competed for nights, where a
 * refusal over a host's block alone would not be. rows->res is sorted by
 * (listing, check_in). */
static void
count_competing_refusals(const struct rows *rows, struct stress_verdict *verdict)
{
    for (size_t i = 0, first = 0; i < rows->nres; i++) {
        const struct sql_reservation *r = &rows->res[i];

        if (i == 0 || r->listing_id != rows->res[i - 1].listing_id) {
            first = i;
        }
        if (!r->refused) {
            continue;
        }
        for (size_t j = first; j < rows->nres; j++) {
            const struct sql_reservation *o = &rows->res[j];

            if (o->listing_id != r->listing_id || o->check_in >= r->check_out) {
                break;
            }
            if (!o->refused && o->check_out > r->check_in) {
                verdict->sql_refused_competing++;
                break;
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

/* One reservation's hold on one night over calendar versions: from the
 * version its booking committed at to the version of its cancel (to is
 * INT64_MAX while it is confirmed). A listing's versions order its changes,
 * so the holds of one night must follow each other without overlapping. */
struct hold {
    uint64_t listing_id;
    int32_t night;
    int64_t from, to;
    const struct sql_reservation *res;
};

/* Two reservations of a listing that held a night at the same versions. */
struct held_pair {
    const struct sql_reservation *held, *sold;
};

static int
cmp_hold(const void *a, const void *b)
{
    const struct hold *x = a, *y = b;
    int c = cmp_u64(x->listing_id, y->listing_id);

    if (c != 0 || (c = x->night - y->night) != 0) {
        return c;
    }
    return x->from < y->from ? -1 : x->from > y->from;
}

static int
cmp_held_pair(const void *a, const void *b)
{
    const struct held_pair *x = a, *y = b;

    if (x->held != y->held) {
        return x->held < y->held ? -1 : 1;
    }
    return x->sold < y->sold ? -1 : x->sold > y->sold;
}

/* The calendar version a reservation SQL holds was booked at: a confirmed
 * row's own (only a cancel rewrites it), a cancelled row's from its key's
 * 201; 0 when unknown (its 201 lost, acknowledged by a replay's 200).
 * records sorted by cmp_record_by_key. */
static int64_t
booked_at(const struct sql_reservation *r, const struct stress_record *records, size_t nrecords)
{
    struct stress_record probe;
    const struct stress_record *rec;

    if (r->confirmed) {
        return r->version;
    }
    if (strlen(r->key) >= sizeof(probe.key)) {
        return 0;
    }
    memcpy(probe.key, r->key, strlen(r->key) + 1);
    rec = bsearch(&probe, records, nrecords, sizeof(*records), cmp_record_by_key);
    return rec != NULL && rec->listing_id == r->listing_id && rec->acked ? rec->version : 0;
}

/* double_bookings, sold while held: a night sold to one guest while another
 * guest's reservation held it, one of the two cancelled since (two still
 * confirmed are check_double_bookings'). The end state alone cannot show
 * it: a cancel frees only the nights its own reservation holds, so after
 * either cancel every row agrees again. By calendar version, a reservation
 * holds its nights from its booking to its cancel; a booking that committed
 * inside another's hold of a night is counted, once per pair. Cancelled
 * reservations whose booking version is unknown are left out. */
static void
check_held_nights(const struct rows *rows, const struct stress_record *records, size_t nrecords,
                  struct stress_verdict *verdict)
{
    struct hold *holds = NULL;
    struct held_pair *pairs = NULL;
    size_t nholds = 0, capholds = 0, npairs = 0, cappairs = 0;

    for (size_t i = 0; i < rows->nres; i++) {
        const struct sql_reservation *r = &rows->res[i];
        int64_t from = r->refused ? 0 : booked_at(r, records, nrecords);
        int64_t to = r->confirmed ? INT64_MAX : r->version;

        if (from <= 0 || from >= to) {
            continue;
        }
        for (int32_t d = r->check_in; d < r->check_out; d++) {
            if (nholds == capholds) {
                holds = grow(holds, &capholds, sizeof(*holds));
            }
            holds[nholds++] = (struct hold){r->listing_id, d, from, to, r};
        }
    }
    if (nholds > 0) {
        qsort(holds, nholds, sizeof(*holds), cmp_hold);
    }
    for (size_t i = 0, first = 0; i < nholds; i++) {
        const struct hold *h = &holds[i];

        if (i == 0 || h->listing_id != holds[i - 1].listing_id || h->night != holds[i - 1].night) {
            first = i; /* the hold of the night that ends last, so far */
            continue;
        }
        if (h->from < holds[first].to && !(holds[first].res->confirmed && h->res->confirmed)) {
            if (npairs == cappairs) {
                pairs = grow(pairs, &cappairs, sizeof(*pairs));
            }
            pairs[npairs++] = (struct held_pair){holds[first].res, h->res};
        }
        if (h->to > holds[first].to) {
            first = i;
        }
    }
    if (npairs > 0) {
        qsort(pairs, npairs, sizeof(*pairs), cmp_held_pair);
    }
    for (size_t i = 0; i < npairs; i++) {
        const struct sql_reservation *a = pairs[i].held, *b = pairs[i].sold;

        if (i > 0 && cmp_held_pair(&pairs[i - 1], &pairs[i]) == 0) {
            continue;
        }
        verdict->double_bookings++;
        report(verdict->double_bookings, "double_bookings",
               "listing %" PRIu64 ": reservation %" PRId64 " [%d,%d) booked at version %" PRId64
               " while reservation %" PRId64
               " [%d,%d) held a night of it (booked at version %" PRId64 ", %s)",
               b->listing_id, b->reservation_id, b->check_in, b->check_out,
               booked_at(b, records, nrecords), a->reservation_id, a->check_in, a->check_out,
               booked_at(a, records, nrecords),
               a->confirmed ? "still confirmed" : "cancelled since");
    }
    free(holds);
    free(pairs);
}

/* Host blocks and unblocks, by listing and then by when they were sent. */
static int
cmp_hostop(const void *a, const void *b)
{
    const struct stress_hostop *x = a, *y = b;
    int c = cmp_u64(x->listing_id, y->listing_id);

    return c != 0 ? c : (x->sent > y->sent) - (x->sent < y->sent);
}

/* The first of ops[0..n) (sorted by cmp_hostop) of listing, or ops + n. */
static const struct stress_hostop *
hostops_of(const struct stress_hostop *ops, size_t n, uint64_t listing)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (ops[mid].listing_id < listing) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return ops + lo;
}

static int
covers(const struct stress_hostop *op, int32_t night)
{
    return night >= op->from && night < op->to;
}

/* A block answered 200, with the calendar version it committed at. */
static int
held(const struct stress_hostop *op)
{
    return op->kind == STRESS_OP_BLOCK && op->status == 200 && op->version > 0;
}

/* May an unblock of night among ops..end have taken effect after block b
 * and, with before (a version; 0: no bound), before it? One answered 200 has
 * its version; one that may have applied otherwise could be anywhere after
 * b unless it was answered before b was sent. */
static int
unblocked_between(const struct stress_hostop *ops, const struct stress_hostop *end, int32_t night,
                  const struct stress_hostop *b, int64_t before)
{
    for (const struct stress_hostop *u = ops; u < end; u++) {
        if (u->kind != STRESS_OP_UNBLOCK || !covers(u, night) || !u->maybe ||
            (u->answered != 0 && u->answered < b->sent)) {
            continue;
        }
        if (u->status != 200 || (u->version > b->version && (before == 0 || u->version < before))) {
            return 1;
        }
    }
    return 0;
}

/* Did an unblock of night answered 200 come after calendar version v? */
static int
undone(const struct stress_hostop *ops, const struct stress_hostop *end, int32_t night, int64_t v)
{
    for (const struct stress_hostop *u = ops; u < end; u++) {
        if (u->kind == STRESS_OP_UNBLOCK && u->status == 200 && covers(u, night) &&
            u->version > v) {
            return 1;
        }
    }
    return 0;
}

/* The booked night's reservation's version, or 0 when it is not found. */
static int64_t
booked_version(const struct sql_night *booked, struct sql_reservation **by_id, size_t nres)
{
    struct sql_reservation key = {.reservation_id = booked->reservation_id,
                                  .listing_id = booked->listing_id},
                           *kp = &key, **found;

    found = bsearch(&kp, by_id, nres, sizeof(*by_id), cmp_resp_by_id);
    return found != NULL && (*found)->confirmed ? (*found)->version : 0;
}

/* Has a night of listing that a block held (held(b)), not blocked at the
 * end, been freed or sold in breach of it? Versions order a listing's
 * changes: a booking at version vr over the night came after block b at
 * vb < vr, which is a breach unless an unblock of it may lie between; a
 * booking before b (vr < vb) still holding the night means b answered 200
 * over a booked night; a free night needs an unblock after b. Reports and
 * returns 1 for the first block breached. */
static int
block_breached(const struct stress_hostop *ops, const struct stress_hostop *end, uint64_t listing,
               int32_t night, const struct sql_night *booked, int64_t vr,
               struct stress_verdict *verdict)
{
    if (booked != NULL && vr == 0) {
        return 0; /* booked by a reservation SQL lacks or not confirmed: night_mismatches */
    }
    for (const struct stress_hostop *b = ops; b < end; b++) {
        if (!held(b) || !covers(b, night)) {
            continue;
        }
        if (booked == NULL) {
            if (unblocked_between(ops, end, night, b, 0)) {
                continue;
            }
            report(verdict->lost_blocks + 1, "lost_blocks",
                   "listing %" PRIu64 " night %d blocked (answered 200, version %" PRId64
                   "), no unblock after it, but not blocked",
                   listing, night, b->version);
            return 1;
        }
        if (vr > b->version && unblocked_between(ops, end, night, b, vr)) {
            continue;
        }
        report(verdict->lost_blocks + 1, "lost_blocks",
               "listing %" PRIu64 " night %d blocked (answered 200, version %" PRId64
               ") but booked by reservation %" PRId64 " (version %" PRId64 ")%s",
               listing, night, b->version, booked->reservation_id, vr,
               vr > b->version ? " with no unblock between" : " before the block");
        return 1;
    }
    return 0;
}

/* lost_blocks: every night a block held (answered 200) that is not blocked
 * at the end must have been freed by an unblock after it, and booked only
 * after that (block_breached()); counted once per night. phantom_blocks: a
 * blocked night must be covered by a block that may have applied and that
 * no unblock answered 200 undid after it. ops sorted by cmp_hostop,
 * rows->blocked and rows->nights by cmp_night, by_id by cmp_resp_by_id. */
/* A booking acknowledged with 201 at version vr (rec->version) and then
 * cancelled (a cancel was sent) no longer shows in SQL's nights: was any
 * of its nights sold while a block held it, with no unblock that may lie
 * between? Counted per night as in check_blocks. */
static void
check_cancelled_sales(const struct stress_record *rec, const struct stress_hostop *ops, size_t nops,
                      struct stress_verdict *verdict)
{
    const struct stress_hostop *first = hostops_of(ops, nops, rec->listing_id);
    const struct stress_hostop *end = hostops_of(ops, nops, rec->listing_id + 1);

    for (int32_t d = rec->check_in; d < rec->check_out; d++) {
        for (const struct stress_hostop *b = first; b < end; b++) {
            if (!held(b) || !covers(b, d) || b->version >= rec->version ||
                unblocked_between(first, end, d, b, rec->version)) {
                continue;
            }
            verdict->lost_blocks++;
            report(verdict->lost_blocks, "lost_blocks",
                   "listing %" PRIu64 " night %d blocked (answered 200, version %" PRId64
                   ") but sold to key %s (reservation %" PRId64 ", version %" PRId64
                   ", since cancelled) with no unblock between",
                   rec->listing_id, d, b->version, rec->key, rec->reservation_id, rec->version);
            break;
        }
    }
}

static void
check_blocks(const struct rows *rows, struct sql_reservation **by_id,
             const struct stress_claims *claims, struct stress_verdict *verdict)
{
    const struct stress_hostop *ops = claims->hostops;
    size_t nops = claims->nhostops;

    /* Bookings still confirmed are held against the nights they hold at
     * the end, below; those since cancelled, here. */
    for (size_t i = 0; i < claims->nrecords; i++) {
        const struct stress_record *rec = &claims->records[i];

        if (rec->acked && rec->cancel_sent && rec->version > 0) {
            check_cancelled_sales(rec, ops, nops, verdict);
        }
    }
    for (size_t i = 0; i < nops; i++) {
        const struct stress_hostop *b = &ops[i], *first, *end;

        verdict->blocks_sent += b->kind == STRESS_OP_BLOCK;
        verdict->prices_sent += b->kind == STRESS_OP_PRICE;
        verdict->prices_held += b->kind == STRESS_OP_PRICE && b->status == 200 && b->version > 0;
        verdict->blocks_held += (uint64_t)held(b);
        if (!held(b)) {
            continue;
        }
        first = hostops_of(ops, nops, b->listing_id);
        end = hostops_of(ops, nops, b->listing_id + 1);
        for (int32_t d = b->from; d < b->to; d++) {
            struct sql_night key = {.listing_id = b->listing_id, .night = d};
            const struct sql_night *booked;
            int seen = 0;

            /* Each night once: at the first block of the listing holding it. */
            for (const struct stress_hostop *o = first; o < b && !seen; o++) {
                seen = held(o) && covers(o, d);
            }
            if (seen ||
                bsearch(&key, rows->blocked, rows->nblocked, sizeof(key), cmp_night) != NULL) {
                continue;
            }
            booked = bsearch(&key, rows->nights, rows->nnights, sizeof(key), cmp_night);
            if (block_breached(first, end, b->listing_id, d, booked,
                               booked != NULL ? booked_version(booked, by_id, rows->nres) : 0,
                               verdict)) {
                verdict->lost_blocks++;
            }
        }
    }
    for (size_t i = 0; i < rows->nblocked; i++) {
        const struct sql_night *n = &rows->blocked[i];
        const struct stress_hostop *op = hostops_of(ops, nops, n->listing_id);
        const struct stress_hostop *end = hostops_of(ops, nops, n->listing_id + 1);
        const struct stress_hostop *first = op;

        while (op < end && !(op->kind == STRESS_OP_BLOCK && covers(op, n->night) && op->maybe &&
                             (!held(op) || !undone(first, end, n->night, op->version)))) {
            op++;
        }
        if (op == end) {
            verdict->phantom_blocks++;
            report(verdict->phantom_blocks, "phantom_blocks",
                   "listing %" PRIu64 " night %d is blocked and no block that may have applied "
                   "covers it, or an unblock answered 200 came after each",
                   n->listing_id, n->night);
        }
    }
}

/* Is op a set_price answered 200 with the version it committed at? */
static int
price_held(const struct stress_hostop *op)
{
    return op->kind == STRESS_OP_PRICE && op->status == 200 && op->version > 0;
}

/* The nightly price a booking that committed at calendar version v may
 * have paid for night (ops..end: its listing's host operations), into
 * [*lo, *hi]: the price of the last set_price of it answered 200 before v,
 * else the listing's default, or that of any set_price that may have
 * applied without telling at which version. */
static void
night_price_range(const struct stress_hostop *ops, const struct stress_hostop *end, int32_t night,
                  int64_t v, int64_t *lo, int64_t *hi)
{
    const struct stress_hostop *last = NULL;

    for (const struct stress_hostop *op = ops; op < end; op++) {
        if (price_held(op) && covers(op, night) && op->version < v &&
            (last == NULL || op->version > last->version)) {
            last = op;
        }
    }
    *lo = *hi = last != NULL ? last->price : STRESS_DEFAULT_PRICE;
    for (const struct stress_hostop *op = ops; op < end; op++) {
        /* One answered before the last held one was sent came before it. */
        if (op->kind == STRESS_OP_PRICE && op->maybe && !price_held(op) && covers(op, night) &&
            !(last != NULL && op->answered != 0 && op->answered < last->sent)) {
            *lo = op->price < *lo ? op->price : *lo;
            *hi = op->price > *hi ? op->price : *hi;
        }
    }
}

/* The calendar version rec's booking committed at: its 201's, else (its
 * 201 lost, acknowledged by a replay's 200) that of its SQL row while still
 * confirmed (only a cancel rewrites it); 0 when neither is known. by_key
 * sorted by cmp_resp_by_key. */
static int64_t
commit_version(const struct stress_record *rec, struct sql_reservation **by_key, size_t nres)
{
    struct sql_reservation key = {.listing_id = rec->listing_id}, *kp = &key, **found;

    if (rec->version > 0) {
        return rec->version;
    }
    snprintf(key.key, sizeof(key.key), "%s", rec->key);
    found = bsearch(&kp, by_key, nres, sizeof(*by_key), cmp_resp_by_key);
    return found != NULL && (*found)->confirmed ? (*found)->version : 0;
}

/* price_mismatches: an acknowledged booking's total_price is the sum of
 * its nights' prices at the calendar version it committed at: a set_price
 * of a night commits before the booking (a lower version) and is paid, or
 * after it and is not. Only the sum is compared (two nights wrong in
 * opposite directions would cancel out). ops sorted by cmp_hostop. */
static void
check_quoted_prices(const struct stress_claims *claims, struct sql_reservation **by_key,
                    size_t nres, struct stress_verdict *verdict)
{
    const struct stress_hostop *ops = claims->hostops;
    size_t nops = claims->nhostops;

    for (size_t i = 0; i < claims->nrecords; i++) {
        const struct stress_record *rec = &claims->records[i];
        const struct stress_hostop *first, *end;
        int64_t lo = 0, hi = 0, v;

        if (!rec->acked || rec->total_price <= 0 || (v = commit_version(rec, by_key, nres)) <= 0) {
            continue;
        }
        verdict->prices_checked++;
        first = hostops_of(ops, nops, rec->listing_id);
        end = hostops_of(ops, nops, rec->listing_id + 1);
        for (int32_t d = rec->check_in; d < rec->check_out; d++) {
            int64_t l, h;

            night_price_range(first, end, d, v, &l, &h);
            lo += l;
            hi += h;
        }
        if (rec->total_price < lo || rec->total_price > hi) {
            verdict->price_mismatches++;
            report(verdict->price_mismatches, "price_mismatches",
                   "key %s: total_price %" PRId64 " at version %" PRId64
                   ", its nights were priced %" PRId64 " (at most %" PRId64 ") then",
                   rec->key, rec->total_price, v, lo, hi);
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
        /* What the guest was told to pay is what is kept, whatever the
         * host priced since (a cancel keeps it too). */
        if (rec->acked && !r->refused && rec->total_price > 0 &&
            r->total_price != rec->total_price) {
            verdict->price_mismatches++;
            report(verdict->price_mismatches, "price_mismatches",
                   "key %s: acknowledged at total_price %" PRId64 ", reservation %" PRId64
                   " holds %" PRId64,
                   rec->key, rec->total_price, r->reservation_id, r->total_price);
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

/* Every vbucket: one owner row across the shards, on the shard the
 * catalog's map names. A move in flight breaks both for a moment, which
 * is why no move may run while the verifier reads. */
static void
check_owners(const struct testenv *env, const struct owners *o, struct stress_verdict *verdict)
{
    for (unsigned v = 0; v < TESTENV_NUM_VBUCKETS; v++) {
        uint32_t rows = o->rows[v];
        unsigned nrows = (unsigned)__builtin_popcount(rows);
        char where[64] = "";
        size_t off = 0;

        if (o->mapped[v] >= 0 && rows == 1u << o->mapped[v]) {
            continue;
        }
        if (o->mapped[v] == -1) {
            append(where, sizeof(where), &off, "no shard");
        } else {
            append(where, sizeof(where), &off, "shard_id %" PRId64, o->shard_id[v]);
            if (o->mapped[v] == -2) {
                append(where, sizeof(where), &off, ", which is not in its shards");
            } else {
                append(where, sizeof(where), &off, " (shard %d)", o->mapped[v]);
            }
        }
        verdict->owner_mismatches++;
        if (nrows == 1) {
            report(verdict->owner_mismatches, "owner_mismatches",
                   "vbucket %u: owned by shard %d, the catalog maps it to %s", v,
                   __builtin_ctz(rows), where);
            continue;
        }
        char shards[128] = "";
        off = 0;
        for (size_t i = 0; i < env->nshards; i++) {
            if (rows & 1u << i) {
                append(shards, sizeof(shards), &off, "%s%zu", off > 0 ? ", " : "", i);
            }
        }
        report(verdict->owner_mismatches, "owner_mismatches",
               "vbucket %u: %u owner rows (shards: %s), the catalog maps it to %s", v, nrows,
               nrows > 0 ? shards : "none", where);
    }
}

#define ID_BATCH 256 /* reservation ids per lookup statement */

/* One reservations row holding an id of the run, on any shard. */
struct id_row {
    int64_t reservation_id;
    uint64_t listing_id;
    size_t shard;
};

static int
cmp_id_row(const void *a, const void *b)
{
    const struct id_row *x = a, *y = b;
    int c;

    if (x->reservation_id != y->reservation_id) {
        return x->reservation_id < y->reservation_id ? -1 : 1;
    }
    c = cmp_u64(x->listing_id, y->listing_id);
    return c != 0 ? c : cmp_u64(x->shard, y->shard);
}

/* Appends shard's reservations rows whose id is one of ids[0..nids) to
 * *out, whatever their listing or vbucket. */
static int
read_id_rows(const struct testenv *env, size_t shard, const int64_t *ids, size_t nids,
             struct id_row **out, size_t *nout, size_t *cap, char *err, size_t errlen)
{
    struct db *db = testenv_connect_shard(env, shard, err, errlen);
    char sql[64 + ID_BATCH * 3];
    size_t off = 0;
    int rc = -1, n = 0;

    if (db == NULL) {
        return -1;
    }
    /* One statement text for every batch: the last one repeats its last id. */
    append(sql, sizeof(sql), &off,
           "SELECT reservation_id, listing_id FROM reservations "
           "WHERE reservation_id IN (?");
    for (size_t i = 1; i < ID_BATCH; i++) {
        append(sql, sizeof(sql), &off, ",?");
    }
    append(sql, sizeof(sql), &off, ")");
    for (size_t first = 0; first < nids; first += ID_BATCH) {
        struct db_val params[ID_BATCH], c[2];
        struct db_stmt *stmt = NULL;

        for (size_t i = 0; i < ID_BATCH; i++) {
            params[i] = DB_INT_V(ids[first + i < nids ? first + i : nids - 1]);
        }
        if (db_query(db, sql, params, ID_BATCH, &stmt, err, errlen) != CAL_OK) {
            goto out;
        }
        while ((n = db_fetch(stmt, c, 2, err, errlen)) == 1) {
            if (*nout == *cap) {
                *out = grow(*out, cap, sizeof(**out));
            }
            (*out)[(*nout)++] = (struct id_row){
                .reservation_id = c[0].i, .listing_id = (uint64_t)c[1].i, .shard = shard};
        }
        if (n < 0) {
            goto out;
        }
    }
    rc = 0;
out:
    db_close(db);
    return rc;
}

/* reservation_id is unique across every shard (docs/api.md): each
 * calendard takes its id blocks from the catalog. by_id keys the run's rows
 * by (id, listing), so an id-block bug handing one id to two listings, on
 * one shard or two, would pass every other check; here every shard is asked
 * for the run's ids, and an id that any two listings hold is counted once
 * per listing past the first. Rows of one listing and id on two shards (a
 * move's copy, a misrouted duplicate) are the ownership checks' business. */
static int
check_ids(const struct testenv *env, struct sql_reservation **by_id, size_t nres,
          struct stress_verdict *verdict, char *err, size_t errlen)
{
    int64_t *ids = calloc(nres + 1, sizeof(*ids));
    struct id_row *found = NULL;
    size_t nids = 0, nfound = 0, cap = 0;
    char e[512];
    int rc = -1;

    if (ids == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < nres; i++) {
        if (nids == 0 || ids[nids - 1] != by_id[i]->reservation_id) {
            ids[nids++] = by_id[i]->reservation_id;
        }
    }
    for (size_t s = 0; s < env->nshards && nids > 0; s++) {
        if (read_id_rows(env, s, ids, nids, &found, &nfound, &cap, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "shard %zu: reservation ids: %s", s, e);
            goto out;
        }
    }
    if (nfound > 1) {
        qsort(found, nfound, sizeof(*found), cmp_id_row);
    }
    for (size_t i = 1; i < nfound; i++) {
        const struct id_row *a = &found[i - 1], *b = &found[i];

        if (a->reservation_id != b->reservation_id || a->listing_id == b->listing_id) {
            continue;
        }
        verdict->id_collisions++;
        report(verdict->id_collisions, "id_collisions",
               "reservation %" PRId64 " held by listing %" PRIu64
               " (shard %zu) and listing %" PRIu64 " (shard %zu)",
               a->reservation_id, a->listing_id, a->shard, b->listing_id, b->shard);
    }
    rc = 0;
out:
    free(ids);
    free(found);
    return rc;
}

int
stress_verify_run(const struct testenv *env, const struct stress_conf *conf,
                  struct stress_claims *claims, struct stress_verdict *verdict, char *err,
                  size_t errlen)
{
    struct stress_record *records = claims->records;
    size_t nrecords = claims->nrecords;
    struct rows rows;
    struct owners *owners = calloc(1, sizeof(*owners));
    struct sql_reservation **by_id = NULL, **by_key = NULL;
    unsigned char *seen = NULL;
    char e[1536];
    int rc = -1;

    memset(verdict, 0, sizeof(*verdict));
    memset(&rows, 0, sizeof(rows));
    /* Never NULL, even when a shard holds no row of the run: qsort and
     * bsearch must not be given a NULL array, empty or not. */
    rows.res = grow(NULL, &rows.capres, sizeof(*rows.res));
    rows.nights = grow(NULL, &rows.capnights, sizeof(*rows.nights));
    rows.blocked = grow(NULL, &rows.capblocked, sizeof(*rows.blocked));
    verdict->cache_mismatches = -1;
    verdict->cache_compared = -1;
    if (owners == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (read_catalog(env, owners, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "catalog: %s", e);
        goto out;
    }
    for (size_t i = 0; i < env->nshards; i++) {
        if (read_shard(env, i, conf, &rows, owners, verdict, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "shard %zu: %s", i, e);
            goto out;
        }
    }
    check_owners(env, owners, verdict);
    by_id = calloc(rows.nres + 1, sizeof(*by_id));
    by_key = calloc(rows.nres + 1, sizeof(*by_key));
    seen = calloc(nrecords + 1, 1);
    if (by_id == NULL || by_key == NULL || seen == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    qsort(rows.res, rows.nres, sizeof(*rows.res), cmp_res_by_stay);
    qsort(rows.nights, rows.nnights, sizeof(*rows.nights), cmp_night);
    qsort(rows.blocked, rows.nblocked, sizeof(*rows.blocked), cmp_night);
    qsort(claims->hostops, claims->nhostops, sizeof(*claims->hostops), cmp_hostop);
    for (size_t i = 0; i < rows.nres; i++) {
        by_id[i] = by_key[i] = &rows.res[i];
        verdict->sql_confirmed += (uint64_t)rows.res[i].confirmed;
        verdict->sql_refused += (uint64_t)rows.res[i].refused;
    }
    verdict->sql_reservations = rows.nres;
    verdict->sql_booked_nights = rows.nnights;
    verdict->sql_blocked_nights = rows.nblocked;
    qsort(by_id, rows.nres, sizeof(*by_id), cmp_resp_by_id);
    qsort(by_key, rows.nres, sizeof(*by_key), cmp_resp_by_key);
    qsort(records, nrecords, sizeof(*records), cmp_record_by_key);

    check_double_bookings(&rows, verdict);
    check_held_nights(&rows, records, nrecords, verdict);
    count_competing_refusals(&rows, verdict);
    check_nights(&rows, by_id, verdict);
    check_keys(&rows, by_key, records, nrecords, seen, verdict);
    check_blocks(&rows, by_id, claims, verdict);
    check_quoted_prices(claims, by_key, rows.nres, verdict);
    if (check_ids(env, by_id, rows.nres, verdict, err, errlen) != 0) {
        goto out;
    }
    verdict->duplicate_idempotent += claims->replay_mismatches;
    /* cache_mismatches stays -1 here: the caller fills it from the run's
     * read-your-writes checks; a memcached-against-SQL verifier belongs here. */
    rc = 0;
out:
    free(owners);
    free(by_id);
    free(by_key);
    free(seen);
    free(rows.res);
    free(rows.nights);
    free(rows.blocked);
    return rc;
}

int
stress_verify_failed(const struct stress_verdict *verdict)
{
    return verdict->double_bookings > 0 || verdict->lost_acknowledged > 0 ||
           verdict->phantom_bookings > 0 || verdict->duplicate_idempotent > 0 ||
           verdict->night_mismatches > 0 || verdict->routing_mismatches > 0 ||
           verdict->unowned_rows > 0 || verdict->owner_mismatches > 0 ||
           verdict->id_collisions > 0 || verdict->protocol_errors > 0 || verdict->lost_blocks > 0 ||
           verdict->phantom_blocks > 0 || verdict->price_mismatches > 0 ||
           verdict->cache_mismatches > 0;
}

/* Testing the verifier (--inject): each fault corrupts one key of the run
 * in SQL the way a bug would, aimed at one check. */

/* The id of a row a fault plants, the victim's own id moved into range n
 * above every id calendard makes (IDBLOCK_MAX): no booking and no other
 * planted row, of this run or another, can collide with it. */
#define PLANTED_ID(id, n) ((id) + (int64_t)(n) * ((int64_t)IDBLOCK_MAX + 1))

/* Which key of the run a fault corrupts. */
enum victim {
    VICTIM_BOOKED,    /* acknowledged, no cancel sent: a confirmed row holding its nights */
    VICTIM_CANCELLED, /* its cancel acknowledged: a cancelled row */
    VICTIM_REFUSED,   /* refused (409 nights_unavailable), never acknowledged: a kept refusal */
    VICTIM_BLOCKED,   /* a night of a block answered 200 that no unblock may have undone */
    VICTIM_BLOCKED_BOOKED, /* such a night, of a listing with an acknowledged booking (rec) */
    VICTIM_CANCELLED_SALE, /* acknowledged with a 201 version, then a cancel sent */
    VICTIM_PRICED,         /* acknowledged with a 201 version and total_price */
    VICTIM_HELD,           /* acknowledged with a 201 version, its cancel acknowledged */
};

/* Where a fault plants: dbs[owner] owns the vbucket of rec's listing. */
struct site {
    const struct testenv *env;
    struct db **dbs;
    int owner;
    const struct stress_record *rec;    /* NULL for VICTIM_BLOCKED */
    struct stress_claims *claims;       /* what a fault adds to what the clients saw goes here */
    const struct stress_hostop *hostop; /* VICTIM_BLOCKED: the block, and its night */
    int32_t night;
    struct stress_injected *injected;
};

typedef cal_status (*plant_fn)(const struct site *site, char *err, size_t errlen);

/* Runs a statement that must change exactly want rows. */
static cal_status
exec_n(struct db *db, const char *sql, const struct db_val *params, size_t nparams, uint64_t want,
       char *err, size_t errlen)
{
    struct db_stmt *stmt = NULL;
    cal_status st = db_query(db, sql, params, nparams, &stmt, err, errlen);

    if (st == CAL_OK && db_affected_rows(stmt) != want) {
        snprintf(err, errlen, "changed %" PRIu64 " rows, want %" PRIu64 ": %.60s",
                 db_affected_rows(stmt), want, sql);
        st = CAL_ERR;
    }
    return st;
}

/* The integer of a one-row, one-column query: CAL_OK with *out (-1 for
 * NULL), CAL_ENOTFOUND without a row. */
static cal_status
query_int(struct db *db, const char *sql, const struct db_val *params, size_t nparams, int64_t *out,
          char *err, size_t errlen)
{
    struct db_stmt *stmt = NULL;
    struct db_val c;
    cal_status st = db_query(db, sql, params, nparams, &stmt, err, errlen);
    int n;

    if (st != CAL_OK) {
        return st;
    }
    n = db_fetch(stmt, &c, 1, err, errlen);
    if (n == 1) {
        *out = c.type == DB_INT ? c.i : -1;
        while ((n = db_fetch(stmt, &c, 1, err, errlen)) == 1) {
        }
        return n < 0 ? CAL_ERR : CAL_OK;
    }
    if (n == 0) {
        snprintf(err, errlen, "no row: %.60s", sql);
        return CAL_ENOTFOUND;
    }
    return CAL_ERR;
}

/* The shard index owning listing_id's vbucket (per vbucket_owner), or -1. */
static int
owner_index(const struct testenv *env, struct db **dbs, uint64_t listing_id, char *err,
            size_t errlen)
{
    struct db_val p[] = {DB_INT_V(testenv_vbucket(listing_id))};

    for (size_t i = 0; i < env->nshards; i++) {
        int64_t owns = 0;

        if (query_int(dbs[i], "SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", p, 1, &owns,
                      err, errlen) != CAL_OK) {
            return -1;
        }
        if (owns > 0) {
            return (int)i;
        }
    }
    snprintf(err, errlen, "no shard owns listing %" PRIu64, listing_id);
    return -1;
}

/* A shard other than the victim's owner, or -1 (err says why). With
 * owning, one that owns a vbucket, the lowest of which goes to *vbucket. */
static int
other_shard(const struct site *s, int owning, int64_t *vbucket, char *err, size_t errlen)
{
    for (size_t i = 0; i < s->env->nshards; i++) {
        if ((int)i == s->owner) {
            continue;
        }
        if (!owning) {
            return (int)i;
        }
        if (query_int(s->dbs[i], "SELECT MIN(vbucket) FROM vbucket_owner", NULL, 0, vbucket, err,
                      errlen) != CAL_OK) {
            return -1;
        }
        if (*vbucket >= 0) {
            return (int)i;
        }
    }
    snprintf(err, errlen, "no other shard%s in the stack env", owning ? " owning a vbucket" : "");
    return -1;
}

/* Copies the victim's reservation row from its owner to dbs[to], in
 * vbucket, reservation id included; the copy is taken back afterwards. */
static cal_status
copy_row(const struct site *s, int to, int64_t vbucket, char *err, size_t errlen)
{
    const struct stress_record *rec = s->rec;
    struct db_val p[] = {DB_INT_V(rec->listing_id), DB_CSTR_V(rec->key)}, c[9];
    struct db_stmt *stmt = NULL;
    char status[16], currency[4], hash[17];
    cal_status st;
    int n;

    st = db_query(s->dbs[s->owner],
                  "SELECT reservation_id, TO_DAYS(check_in), TO_DAYS(check_out), guest_id, status,"
                  " total_price, currency, request_hash, version FROM reservations"
                  " WHERE listing_id = ? AND idempotency_key = ?",
                  p, 2, &stmt, err, errlen);
    if (st != CAL_OK) {
        return st;
    }
    n = db_fetch(stmt, c, 9, err, errlen);
    if (n != 1) {
        if (n == 0) {
            snprintf(err, errlen, "no row of key %s on shard %d", rec->key, s->owner);
        }
        return CAL_ERR;
    }
    snprintf(status, sizeof(status), "%s", c[4].type == DB_STR ? c[4].s : "");
    snprintf(currency, sizeof(currency), "%s", c[6].type == DB_STR ? c[6].s : "");
    snprintf(hash, sizeof(hash), "%s", c[7].type == DB_STR ? c[7].s : "");
    struct db_val row[] = {c[0],
                           DB_INT_V(rec->listing_id),
                           DB_INT_V(vbucket),
                           c[1],
                           c[2],
                           c[3],
                           DB_CSTR_V(status),
                           c[5],
                           DB_CSTR_V(currency),
                           DB_CSTR_V(rec->key),
                           DB_CSTR_V(hash),
                           c[8]};
    while ((n = db_fetch(stmt, c, 9, err, errlen)) == 1) {
    }
    if (n < 0) {
        return CAL_ERR;
    }
    st =
        exec_n(s->dbs[to],
               "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out,"
               " guest_id, status, total_price, currency, idempotency_key, request_hash, version)"
               " VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), ?, ?, ?, ?, ?, ?, ?)",
               row, sizeof(row) / sizeof(row[0]), 1, err, errlen);
    if (st == CAL_OK) {
        s->injected->shard = to;
        s->injected->reservation_id = row[0].i;
        s->injected->vbucket = vbucket;
        s->injected->home_vbucket = -1;
    }
    return st;
}

static uint64_t
nights_of(const struct stress_record *rec)
{
    return (uint64_t)(rec->check_out - rec->check_in);
}

/* Runs sql, whose one parameter is the victim's reservation id, on its
 * owner: it must change exactly want rows. */
static cal_status
on_id(const struct site *s, const char *sql, uint64_t want, char *err, size_t errlen)
{
    struct db_val p[] = {DB_INT_V(s->rec->reservation_id)};

    return exec_n(s->dbs[s->owner], sql, p, 1, want, err, errlen);
}

/* Runs sql, whose parameters are the victim's listing and key, on its
 * owner: it must change exactly one row. */
static cal_status
on_key(const struct site *s, const char *sql, char *err, size_t errlen)
{
    struct db_val p[] = {DB_INT_V(s->rec->listing_id), DB_CSTR_V(s->rec->key)};

    return exec_n(s->dbs[s->owner], sql, p, 2, 1, err, errlen);
}

/* double_bookings: a second confirmed stay over the victim's nights, under
 * a key no client sent (so phantom_bookings and night_mismatches see it too). */
static cal_status
plant_double_booking(const struct site *s, char *err, size_t errlen)
{
    const struct stress_record *rec = s->rec;
    struct db_val p[] = {DB_INT_V(PLANTED_ID(rec->reservation_id, 2)), DB_INT_V(rec->listing_id),
                         DB_INT_V(testenv_vbucket(rec->listing_id)),
                         DB_INT_V(rec->check_in + DB_TO_DAYS_EPOCH),
                         DB_INT_V(rec->check_out + DB_TO_DAYS_EPOCH)};

    return exec_n(s->dbs[s->owner],
                  "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, "
                  "check_out, guest_id, status, total_price, currency, idempotency_key, "
                  "request_hash, version) VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), 1, "
                  "'confirmed', 0, 'USD', 'injected-double', '0', 1)",
                  p, 5, 1, err, errlen);
}

/* double_bookings ("while reservation ... held a night of it"): a second
 * guest's stay of the victim's nights, acknowledged (201) at the victim's
 * booking version and cancelled (acknowledged) one version after the
 * victim's cancel, in SQL and in the claims. Both rows end cancelled and no
 * night booked, so the end state agrees with itself: only the versions show
 * the two holds overlapping. The claim has no price (no price check takes it). */
static cal_status
plant_sold_while_held(const struct site *s, char *err, size_t errlen)
{
    const struct stress_record *rec = s->rec;
    struct stress_claims *claims = s->claims;
    int64_t id = PLANTED_ID(rec->reservation_id, 3);
    char key[sizeof(rec->key)];
    snprintf(key, sizeof(key), "held-%" PRId64, id);
    struct db_val p[] = {DB_INT_V(id), DB_CSTR_V(key), DB_INT_V(rec->reservation_id),
                         DB_INT_V(rec->listing_id)};
    cal_status st;

    if (claims->nrecords == claims->caprecords) {
        snprintf(err, errlen, "no room for one more key in the claims");
        return CAL_ERR;
    }
    st = exec_n(s->dbs[s->owner],
                "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, "
                "check_out, guest_id, status, total_price, currency, idempotency_key, "
                "request_hash, version) SELECT ?, listing_id, vbucket, check_in, check_out, "
                "guest_id + 1, 'cancelled', 0, currency, ?, '0', version + 1 FROM reservations "
                "WHERE reservation_id = ? AND listing_id = ? AND status = 'cancelled'",
                p, 4, 1, err, errlen);
    if (st != CAL_OK) {
        return st;
    }
    claims->records[claims->nrecords] = (struct stress_record){.listing_id = rec->listing_id,
                                                               .reservation_id = id,
                                                               .version = rec->version,
                                                               .check_in = rec->check_in,
                                                               .check_out = rec->check_out,
                                                               .guest_id = rec->guest_id + 1,
                                                               .final_status = 200,
                                                               .acked = 1,
                                                               .cancel_sent = 1,
                                                               .cancel_acked = 1};
    memcpy(claims->records[claims->nrecords].key, key, sizeof(key));
    claims->nrecords++;
    return CAL_OK;
}

/* lost_acknowledged ("cancelled but no cancel was sent"): an acknowledged
 * booking cancelled behind the client's back; its nights stay booked. */
static cal_status
plant_lost_ack(const struct site *s, char *err, size_t errlen)
{
    return on_id(s, "UPDATE reservations SET status = 'cancelled' WHERE reservation_id = ?", 1, err,
                 errlen);
}

/* lost_acknowledged ("acknowledged, not in SQL"): the acknowledged
 * reservation gone with its nights; nothing in SQL contradicts itself. */
static cal_status
plant_delete_ack(const struct site *s, char *err, size_t errlen)
{
    cal_status st =
        on_id(s, "DELETE FROM nights WHERE reservation_id = ?", nights_of(s->rec), err, errlen);

    return st != CAL_OK
               ? st
               : on_id(s, "DELETE FROM reservations WHERE reservation_id = ?", 1, err, errlen);
}

/* phantom_bookings ("answered 409 but ... is confirmed"): the kept refusal
 * turned into a booking of the same nights, so only that rule can count it
 * as a phantom (its nights, held by others, trip night_mismatches and may
 * trip double_bookings). */
static cal_status
plant_phantom(const struct site *s, char *err, size_t errlen)
{
    return on_key(s,
                  "UPDATE reservations SET status = 'confirmed' WHERE listing_id = ? AND "
                  "idempotency_key = ? AND status = 'refused'",
                  err, errlen);
}

/* phantom_bookings ("asked days"): the kept refusal 400 days on, still a
 * refusal: a key never acknowledged whose row holds another stay. */
static cal_status
plant_shift_refusal(const struct site *s, char *err, size_t errlen)
{
    return on_key(s,
                  "UPDATE reservations SET check_in = check_in + INTERVAL 400 DAY, check_out = "
                  "check_out + INTERVAL 400 DAY WHERE listing_id = ? AND idempotency_key = ? AND "
                  "status = 'refused'",
                  err, errlen);
}

/* night_mismatches ("is not booked"): the first night of an acknowledged
 * booking freed under it. */
static cal_status
plant_night_mismatch(const struct site *s, char *err, size_t errlen)
{
    const struct stress_record *rec = s->rec;
    struct db_val p[] = {DB_INT_V(rec->listing_id), DB_INT_V(rec->check_in + DB_TO_DAYS_EPOCH),
                         DB_INT_V(rec->reservation_id)};

    return exec_n(s->dbs[s->owner],
                  "UPDATE nights SET status = 'available', reservation_id = NULL "
                  "WHERE listing_id = ? AND night = FROM_DAYS(?) AND reservation_id = ?",
                  p, 3, 1, err, errlen);
}

/* lost_acknowledged ("asked days"): the acknowledged stay and its nights,
 * 400 days on: consistent in SQL (nothing overlaps there), but not the
 * stay the client was told. */
static cal_status
plant_shift_dates(const struct site *s, char *err, size_t errlen)
{
    cal_status st = on_id(s,
                          "UPDATE nights SET night = night + INTERVAL 400 DAY "
                          "WHERE reservation_id = ? ORDER BY night DESC",
                          nights_of(s->rec), err, errlen);

    return st != CAL_OK ? st
                        : on_id(s,
                                "UPDATE reservations SET check_in = check_in + INTERVAL 400 DAY,"
                                " check_out = check_out + INTERVAL 400 DAY"
                                " WHERE reservation_id = ?",
                                1, err, errlen);
}

/* lost_acknowledged ("no refusal in SQL"): a 409 nights_unavailable whose
 * kept refusal is gone, so a replay could book the key. */
static cal_status
plant_lost_refusal(const struct site *s, char *err, size_t errlen)
{
    return on_key(s,
                  "DELETE FROM reservations WHERE listing_id = ? AND idempotency_key = ?"
                  " AND status = 'refused'",
                  err, errlen);
}

/* lost_acknowledged ("acknowledged, still confirmed"): a reservation whose
 * cancel was answered 200 confirmed again (its nights, since freed or
 * booked by others, trip night_mismatches and may trip double_bookings). */
static cal_status
plant_cancel_undone(const struct site *s, char *err, size_t errlen)
{
    return on_id(s,
                 "UPDATE reservations SET status = 'confirmed' WHERE reservation_id = ? AND "
                 "status = 'cancelled'",
                 1, err, errlen);
}

/* lost_acknowledged ("SQL has"): the acknowledged booking, nights and all,
 * under an id other than the one the client was told. */
static cal_status
plant_other_id(const struct site *s, char *err, size_t errlen)
{
    int64_t id = s->rec->reservation_id;
    struct db_val p[] = {DB_INT_V(PLANTED_ID(id, 1)), DB_INT_V(id)};
    cal_status st =
        exec_n(s->dbs[s->owner], "UPDATE nights SET reservation_id = ? WHERE reservation_id = ?", p,
               2, nights_of(s->rec), err, errlen);

    return st != CAL_OK ? st
                        : exec_n(s->dbs[s->owner],
                                 "UPDATE reservations SET reservation_id = ?"
                                 " WHERE reservation_id = ?",
                                 p, 2, 1, err, errlen);
}

/* duplicate_idempotent: the kept refusal of a key applied again on another
 * shard. The unique key (listing_id, idempotency_key) rules out a second row
 * on one shard, and a row on a shard counts only in a vbucket that shard
 * owns, so the copy is misrouted too: routing_mismatches counts it as well. */
static cal_status
plant_duplicate_key(const struct site *s, char *err, size_t errlen)
{
    int64_t vbucket = -1;
    int to = other_shard(s, 1, &vbucket, err, errlen);

    return to < 0 ? CAL_ERR : copy_row(s, to, vbucket, err, errlen);
}

/* routing_mismatches: an acknowledged booking's row in another vbucket of
 * the same shard, so it is still owned and every other check still sees
 * it. Moved back afterwards. */
static cal_status
plant_wrong_vbucket(const struct site *s, char *err, size_t errlen)
{
    int64_t home = testenv_vbucket(s->rec->listing_id), vbucket = -1;
    struct db_val q[] = {DB_INT_V(home)};
    cal_status st =
        query_int(s->dbs[s->owner], "SELECT MIN(vbucket) FROM vbucket_owner WHERE vbucket <> ?", q,
                  1, &vbucket, err, errlen);

    if (st == CAL_OK && vbucket < 0) {
        snprintf(err, errlen, "shard %d owns no vbucket but %" PRId64, s->owner, home);
        st = CAL_ERR;
    }
    if (st == CAL_OK) {
        struct db_val p[] = {DB_INT_V(vbucket), DB_INT_V(s->rec->reservation_id), DB_INT_V(home)};

        st = exec_n(s->dbs[s->owner],
                    "UPDATE reservations SET vbucket = ? WHERE reservation_id = ? AND vbucket = ?",
                    p, 3, 1, err, errlen);
    }
    if (st == CAL_OK) {
        s->injected->shard = s->owner;
        s->injected->reservation_id = s->rec->reservation_id;
        s->injected->vbucket = vbucket;
        s->injected->home_vbucket = home;
    }
    return st;
}

/* unowned_rows: a copy of an acknowledged booking's row on a shard that
 * does not own its vbucket, as a write past the fence or a move's leftover
 * would be. Deleted afterwards. */
static cal_status
plant_stray_row(const struct site *s, char *err, size_t errlen)
{
    int64_t unused = -1;
    int to = other_shard(s, 0, &unused, err, errlen);

    return to < 0 ? CAL_ERR : copy_row(s, to, testenv_vbucket(s->rec->listing_id), err, errlen);
}

/* Plants vbucket's owner row, at its owner's epoch, on dbs[to]: a second
 * owner. Deleted afterwards. */
static cal_status
add_owner(const struct site *s, int to, int64_t vbucket, char *err, size_t errlen)
{
    struct db_val q[] = {DB_INT_V(vbucket)};
    int64_t epoch = -1;
    cal_status st = query_int(s->dbs[s->owner], "SELECT epoch FROM vbucket_owner WHERE vbucket = ?",
                              q, 1, &epoch, err, errlen);

    if (st == CAL_OK) {
        struct db_val p[] = {DB_INT_V(vbucket), DB_INT_V(epoch)};

        st = exec_n(s->dbs[to], "INSERT INTO vbucket_owner (vbucket, epoch) VALUES (?, ?)", p, 2, 1,
                    err, errlen);
    }
    if (st == CAL_OK) {
        s->injected->shard = to;
        s->injected->vbucket = vbucket;
        s->injected->owner_row = 1;
        s->injected->epoch = epoch;
        s->injected->home_shard = -1;
    }
    return st;
}

/* owner_mismatches ("2 owner rows"): the victim's vbucket owned by a
 * second shard too, as after a move that gave the target its fence row and
 * left the source's. No row of the run changes. Deleted afterwards. */
static cal_status
plant_second_owner(const struct site *s, char *err, size_t errlen)
{
    int64_t unused = -1;
    int to = other_shard(s, 0, &unused, err, errlen);

    return to < 0 ? CAL_ERR : add_owner(s, to, testenv_vbucket(s->rec->listing_id), err, errlen);
}

/* owner_mismatches ("owned by shard"): one fence row, on a shard the
 * catalog does not name, as after a move whose catalog update never came
 * (or one that updated the catalog and left the source's row alone). The
 * vbucket moved is one of the victim's shard that holds no row at all, so
 * no row of the run (or of anyone) loses its owner. Moved back afterwards. */
static cal_status
plant_owner_elsewhere(const struct site *s, char *err, size_t errlen)
{
    int64_t unused = -1, vbucket = -1;
    int to = other_shard(s, 0, &unused, err, errlen);
    cal_status st;

    if (to < 0) {
        return CAL_ERR;
    }
    st = query_int(s->dbs[s->owner],
                   "SELECT MIN(o.vbucket) FROM vbucket_owner o"
                   " WHERE NOT EXISTS (SELECT 1 FROM listings l WHERE l.vbucket = o.vbucket)"
                   " AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.vbucket = o.vbucket)"
                   " AND NOT EXISTS (SELECT 1 FROM nights n WHERE n.vbucket = o.vbucket)",
                   NULL, 0, &vbucket, err, errlen);
    if (st == CAL_OK && vbucket < 0) {
        snprintf(err, errlen, "shard %d owns no vbucket without rows", s->owner);
        st = CAL_ERR;
    }
    /* The second owner first: a failure between the two leaves a row that
     * restore deletes, never a vbucket without an owner. */
    if (st == CAL_OK) {
        st = add_owner(s, to, vbucket, err, errlen);
    }
    if (st == CAL_OK) {
        struct db_val p[] = {DB_INT_V(vbucket)};

        st = exec_n(s->dbs[s->owner], "DELETE FROM vbucket_owner WHERE vbucket = ?", p, 1, 1, err,
                    errlen);
    }
    if (st == CAL_OK) {
        s->injected->home_shard = s->owner;
    }
    return st;
}

#define LISTING_BLOCK 0xfffffULL /* a run's listings start at a multiple of 2^20 */

/* id_collisions: the victim's reservation id given to a listing of another
 * shard too, as an id-block bug handing one block to two daemons would.
 * The listing is of the run's own block of 2^20 ids but past any run's
 * --listings, in a vbucket the other shard owns: no other check reads it.
 * Deleted afterwards. */
static cal_status
plant_shared_id(const struct site *s, char *err, size_t errlen)
{
    const struct stress_record *rec = s->rec;
    int64_t unused = -1, vbucket = -1;
    uint64_t listing = 0;
    int to = other_shard(s, 1, &unused, err, errlen);
    cal_status st = CAL_OK;

    if (to < 0) {
        return CAL_ERR;
    }
    for (uint64_t k = 0; k < 4096 && vbucket < 0 && st == CAL_OK; k++) {
        struct db_val q[1];
        int64_t owns = 0;

        listing = (rec->listing_id | LISTING_BLOCK) - k;
        q[0] = DB_INT_V(testenv_vbucket(listing));
        st = query_int(s->dbs[to], "SELECT COUNT(*) FROM vbucket_owner WHERE vbucket = ?", q, 1,
                       &owns, err, errlen);
        if (st == CAL_OK && owns > 0) {
            vbucket = q[0].i;
        }
    }
    if (st == CAL_OK && vbucket < 0) {
        snprintf(err, errlen, "shard %d owns none of the vbuckets tried", to);
        st = CAL_ERR;
    }
    if (st == CAL_OK) {
        struct db_val p[] = {DB_INT_V(rec->reservation_id), DB_INT_V(listing), DB_INT_V(vbucket),
                             DB_INT_V(rec->check_in + DB_TO_DAYS_EPOCH),
                             DB_INT_V(rec->check_out + DB_TO_DAYS_EPOCH)};

        st = exec_n(s->dbs[to],
                    "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, "
                    "check_out, guest_id, status, total_price, currency, idempotency_key, "
                    "request_hash, version) VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), 1, "
                    "'confirmed', 0, 'USD', 'injected-shared-id', '0', 1)",
                    p, 5, 1, err, errlen);
    }
    if (st == CAL_OK) {
        s->injected->shard = to;
        s->injected->reservation_id = rec->reservation_id;
        s->injected->vbucket = vbucket;
        s->injected->home_vbucket = -1;
        fprintf(stderr,
                "verify: reservation %" PRId64 " planted for listing %" PRIu64
                " in vbucket %" PRId64 " on shard %d\n",
                rec->reservation_id, listing, vbucket, to);
    }
    return st;
}

/* lost_blocks: a night the host blocked (answered 200, no unblock of it
 * after) freed under it. */
static cal_status
plant_lost_block(const struct site *s, char *err, size_t errlen)
{
    struct db_val p[] = {DB_INT_V(s->hostop->listing_id), DB_INT_V(s->night + DB_TO_DAYS_EPOCH)};

    return exec_n(s->dbs[s->owner],
                  "UPDATE nights SET status = 'available', version = version + 1 "
                  "WHERE listing_id = ? AND night = FROM_DAYS(?) AND status = 'blocked'",
                  p, 2, 1, err, errlen);
}

/* lost_blocks ("booked by reservation"): a night the host blocked (answered
 * 200, no unblock of it after) sold to an acknowledged booking of the
 * listing (night_mismatches too: the night lies outside that stay). */
static cal_status
plant_booked_over_block(const struct site *s, char *err, size_t errlen)
{
    struct db_val p[] = {DB_INT_V(s->rec->reservation_id), DB_INT_V(s->hostop->listing_id),
                         DB_INT_V(s->night + DB_TO_DAYS_EPOCH)};

    return exec_n(s->dbs[s->owner],
                  "UPDATE nights SET status = 'booked', reservation_id = ?, version = version + 1 "
                  "WHERE listing_id = ? AND night = FROM_DAYS(?) AND status = 'blocked'",
                  p, 3, 1, err, errlen);
}

/* phantom_blocks: a night 400 days after an acknowledged stay blocked,
 * past the window of any run: no block of the run covers it. */
static cal_status
plant_phantom_block(const struct site *s, char *err, size_t errlen)
{
    const struct stress_record *rec = s->rec;
    struct db_val p[] = {DB_INT_V(rec->listing_id),
                         DB_INT_V(rec->check_in + 400 + DB_TO_DAYS_EPOCH),
                         DB_INT_V(testenv_vbucket(rec->listing_id))};

    return exec_n(s->dbs[s->owner],
                  "INSERT INTO nights (listing_id, night, status, version, vbucket) "
                  "VALUES (?, FROM_DAYS(?), 'blocked', 1, ?)",
                  p, 3, 1, err, errlen);
}

/* price_mismatches (SQL): the acknowledged booking's total_price changed. */
static cal_status
plant_repriced(const struct site *s, char *err, size_t errlen)
{
    return on_key(s,
                  "UPDATE reservations SET total_price = total_price + 1"
                  " WHERE listing_id = ? AND idempotency_key = ?",
                  err, errlen);
}

static const struct fault {
    const char *name;
    enum victim victim;
    plant_fn plant;
} FAULTS[] = {
    {"double_booking", VICTIM_BOOKED, plant_double_booking},
    {"lost_ack", VICTIM_BOOKED, plant_lost_ack},
    {"delete_ack", VICTIM_BOOKED, plant_delete_ack},
    {"phantom", VICTIM_REFUSED, plant_phantom},
    {"shift_refusal", VICTIM_REFUSED, plant_shift_refusal},
    {"night_mismatch", VICTIM_BOOKED, plant_night_mismatch},
    {"shift_dates", VICTIM_BOOKED, plant_shift_dates},
    {"lost_refusal", VICTIM_REFUSED, plant_lost_refusal},
    {"cancel_undone", VICTIM_CANCELLED, plant_cancel_undone},
    {"sold_while_held", VICTIM_HELD, plant_sold_while_held},
    {"other_id", VICTIM_BOOKED, plant_other_id},
    {"duplicate_key", VICTIM_REFUSED, plant_duplicate_key},
    {"wrong_vbucket", VICTIM_BOOKED, plant_wrong_vbucket},
    {"stray_row", VICTIM_BOOKED, plant_stray_row},
    {"second_owner", VICTIM_BOOKED, plant_second_owner},
    {"owner_elsewhere", VICTIM_BOOKED, plant_owner_elsewhere},
    {"shared_id", VICTIM_BOOKED, plant_shared_id},
    {"lost_block", VICTIM_BLOCKED, plant_lost_block},
    {"booked_over_block", VICTIM_BLOCKED_BOOKED, plant_booked_over_block},
    {"cancelled_sale", VICTIM_CANCELLED_SALE, NULL}, /* claim_before() */
    {"phantom_block", VICTIM_BOOKED, plant_phantom_block},
    {"repriced", VICTIM_BOOKED, plant_repriced},
    {"stale_price", VICTIM_PRICED, NULL}, /* claim_before() */
};

static const struct fault *
find_fault(const char *name)
{
    for (size_t i = 0; i < sizeof(FAULTS) / sizeof(FAULTS[0]); i++) {
        if (strcmp(FAULTS[i].name, name) == 0) {
            return &FAULTS[i];
        }
    }
    return NULL;
}

static int
is_victim(const struct stress_record *rec, enum victim want)
{
    switch (want) {
    case VICTIM_BOOKED:
        return rec->acked && !rec->cancel_sent;
    case VICTIM_CANCELLED:
        return rec->acked && rec->cancel_acked;
    case VICTIM_REFUSED:
        return rec->refusal_kept && !rec->acked;
    case VICTIM_CANCELLED_SALE:
        return rec->acked && rec->cancel_sent && rec->version > 1;
    case VICTIM_PRICED:
        return rec->acked && rec->version > 1 && rec->total_price > 0;
    case VICTIM_HELD:
        return rec->acked && rec->cancel_acked && rec->version > 0;
    case VICTIM_BLOCKED:
    case VICTIM_BLOCKED_BOOKED:
        return 0; /* chosen among the blocks: held_block() */
    }
    return 0;
}

/* An acknowledged booking of listing with no cancel sent, or NULL. */
static const struct stress_record *
booked_key(const struct stress_claims *claims, uint64_t listing)
{
    for (size_t i = 0; i < claims->nrecords; i++) {
        const struct stress_record *rec = &claims->records[i];

        if (rec->listing_id == listing && is_victim(rec, VICTIM_BOOKED)) {
            return rec;
        }
    }
    return NULL;
}

/* A block answered 200 and one of its nights that no unblock may have
 * freed after it (so it must still be blocked), into s; with booked, only
 * of a listing with an acknowledged booking (into s->rec). 0 when the run
 * has none. claims->hostops sorted by cmp_hostop. */
static int
held_block(const struct stress_claims *claims, int booked, struct site *s)
{
    const struct stress_hostop *ops = claims->hostops;
    size_t nops = claims->nhostops;

    for (size_t i = 0; i < nops; i++) {
        const struct stress_hostop *b = &ops[i];

        if (!held(b) || (booked && (s->rec = booked_key(claims, b->listing_id)) == NULL)) {
            continue;
        }
        for (int32_t d = b->from; d < b->to; d++) {
            if (!unblocked_between(hostops_of(ops, nops, b->listing_id),
                                   hostops_of(ops, nops, b->listing_id + 1), d, b, 0)) {
                s->hostop = b;
                s->night = d;
                return 1;
            }
        }
    }
    return 0;
}

int
stress_verify_has_fault(const char *fault)
{
    return find_fault(fault) != NULL;
}

/* The claims-side faults: what the client saw gets a host operation of
 * rec's first night of this kind (a set_price to price 1) answered 200 at
 * the version just before rec's 201. cancelled_sale (lost_blocks, "since
 * cancelled"): a block, as if calendard had sold the night over it, the
 * booking's cancel since having left nothing of it in SQL's nights.
 * stale_price (price_mismatches, quoted): a set_price, as if calendard had
 * booked at a stale price; rec is one whose first night no set_price of
 * unknown outcome covers (its price could hide the fault). */
static int
claim_before(struct stress_claims *claims, const struct stress_record *rec, const char *fault,
             enum stress_hostop_kind kind, char *err, size_t errlen)
{
    if (claims->nhostops == claims->caphostops) {
        snprintf(err, errlen, "no room for one more host operation in the claims");
        return -1;
    }
    claims->hostops[claims->nhostops++] =
        (struct stress_hostop){.listing_id = rec->listing_id,
                               .from = rec->check_in,
                               .to = rec->check_in + 1,
                               .kind = (uint8_t)kind,
                               .price = kind == STRESS_OP_PRICE ? 1 : 0,
                               .status = 200,
                               .maybe = 1,
                               .version = rec->version - 1};
    fprintf(stderr,
            "verify: injected %s on key %s (listing %" PRIu64 "): a %s of night %d answered 200"
            " at version %" PRId64 " added to the claims\n",
            fault, rec->key, rec->listing_id, kind == STRESS_OP_PRICE ? "set_price to 1" : "block",
            rec->check_in, rec->version - 1);
    return 0;
}

/* May a set_price of unknown outcome have priced rec's first night? */
static int
price_unknown(const struct stress_claims *claims, const struct stress_record *rec)
{
    for (size_t i = 0; i < claims->nhostops; i++) {
        const struct stress_hostop *op = &claims->hostops[i];

        if (op->listing_id == rec->listing_id && op->kind == STRESS_OP_PRICE && op->maybe &&
            !price_held(op) && covers(op, rec->check_in)) {
            return 1;
        }
    }
    return 0;
}

int
stress_verify_inject(const struct testenv *env, const char *name, struct stress_claims *claims,
                     struct stress_injected *injected, char *err, size_t errlen)
{
    struct db *dbs[TESTENV_MAX_SHARDS] = {NULL};
    const struct fault *fault = find_fault(name);
    struct site site = {.env = env, .dbs = dbs, .claims = claims, .injected = injected};
    uint64_t listing;
    char e[512], what[128];
    int rc = -1;

    *injected = (struct stress_injected){.shard = -1, .home_shard = -1};
    if (fault == NULL) {
        snprintf(err, errlen, "unknown fault '%s'", name);
        return -1;
    }
    if (fault->victim == VICTIM_BLOCKED || fault->victim == VICTIM_BLOCKED_BOOKED) {
        qsort(claims->hostops, claims->nhostops, sizeof(*claims->hostops), cmp_hostop);
        if (!held_block(claims, fault->victim == VICTIM_BLOCKED_BOOKED, &site)) {
            snprintf(err, errlen, "no key suitable for fault %s (no block held)", name);
            return -1;
        }
        listing = site.hostop->listing_id;
        snprintf(what, sizeof(what), "night %d of a block", site.night);
    } else {
        for (size_t i = 0; i < claims->nrecords && site.rec == NULL; i++) {
            if (is_victim(&claims->records[i], fault->victim) &&
                (fault->victim != VICTIM_PRICED || !price_unknown(claims, &claims->records[i]))) {
                site.rec = &claims->records[i];
            }
        }
        if (site.rec == NULL) {
            snprintf(err, errlen, "no key suitable for fault %s", name);
            return -1;
        }
        if (fault->victim == VICTIM_CANCELLED_SALE || fault->victim == VICTIM_PRICED) {
            return claim_before(claims, site.rec, name,
                                fault->victim == VICTIM_PRICED ? STRESS_OP_PRICE : STRESS_OP_BLOCK,
                                err, errlen);
        }
        listing = site.rec->listing_id;
        snprintf(what, sizeof(what), "key %s", site.rec->key);
    }
    for (size_t i = 0; i < env->nshards; i++) {
        dbs[i] = testenv_connect_shard(env, i, err, errlen);
        if (dbs[i] == NULL) {
            goto out;
        }
    }
    site.owner = owner_index(env, dbs, listing, err, errlen);
    if (site.owner < 0) {
        goto out;
    }
    if (fault->plant(&site, e, sizeof(e)) != CAL_OK) {
        snprintf(err, errlen, "fault %s on %s: %s", name, what, e);
        goto out;
    }
    fprintf(stderr, "verify: injected %s on %s (listing %" PRIu64 ", shard %d)\n", name, what,
            listing, site.owner);
    if (injected->owner_row) {
        fprintf(stderr, "verify: vbucket %" PRId64 "'s owner row planted on shard %d%s\n",
                injected->vbucket, injected->shard,
                injected->home_shard >= 0 ? ", taken from its owner" : "");
    }
    rc = 0;
out:
    for (size_t i = 0; i < env->nshards; i++) {
        db_close(dbs[i]);
    }
    return rc;
}

/* Takes back a planted or moved fence row: home first, so the vbucket is
 * never without an owner. */
static int
restore_owner(const struct testenv *env, const struct stress_injected *injected, char *err,
              size_t errlen)
{
    struct db_val p[] = {DB_INT_V(injected->vbucket), DB_INT_V(injected->epoch)};
    int shards[] = {injected->home_shard, injected->shard};
    const char *sql[] = {"INSERT INTO vbucket_owner (vbucket, epoch) VALUES (?, ?)",
                         "DELETE FROM vbucket_owner WHERE vbucket = ? AND epoch = ?"};

    for (size_t i = 0; i < 2; i++) {
        struct db *db;
        cal_status st;

        if (shards[i] < 0) {
            continue;
        }
        db = testenv_connect_shard(env, (size_t)shards[i], err, errlen);
        if (db == NULL) {
            return -1;
        }
        st = exec_n(db, sql[i], p, 2, 1, err, errlen);
        db_close(db);
        if (st != CAL_OK) {
            return -1;
        }
    }
    return 0;
}

int
stress_verify_restore(const struct testenv *env, const struct stress_injected *injected, char *err,
                      size_t errlen)
{
    struct db *db;
    cal_status st;

    if (injected->shard < 0) {
        return 0;
    }
    if (injected->owner_row) {
        return restore_owner(env, injected, err, errlen);
    }
    db = testenv_connect_shard(env, (size_t)injected->shard, err, errlen);
    if (db == NULL) {
        return -1;
    }
    if (injected->home_vbucket >= 0) {
        struct db_val p[] = {DB_INT_V(injected->home_vbucket), DB_INT_V(injected->reservation_id),
                             DB_INT_V(injected->vbucket)};

        st = exec_n(db,
                    "UPDATE reservations SET vbucket = ? WHERE reservation_id = ? AND vbucket = ?",
                    p, 3, 1, err, errlen);
    } else {
        struct db_val p[] = {DB_INT_V(injected->reservation_id), DB_INT_V(injected->vbucket)};

        st = exec_n(db, "DELETE FROM reservations WHERE reservation_id = ? AND vbucket = ?", p, 2,
                    1, err, errlen);
    }
    db_close(db);
    return st == CAL_OK ? 0 : -1;
}
