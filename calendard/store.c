/* Calendar operations on one shard connection: the SQL of the read and write
 * paths. Dates cross SQL as day numbers: TO_DAYS(d) - 719528 out, FROM_DAYS(n) in. */
#include "calendard/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonout.h"
#include "common/util.h"

#define E DB_TO_DAYS_EPOCH

static const char SQL_OWNER_LOCK[] =
    "SELECT epoch FROM vbucket_owner WHERE vbucket = ? LOCK IN SHARE MODE";
static const char SQL_GET_LISTING[] =
    "SELECT o.epoch, l.version, l.rules_version, l.default_price, l.currency, l.min_nights,"
    " l.max_nights FROM vbucket_owner o LEFT JOIN listings l ON l.listing_id = ?"
    " WHERE o.vbucket = ?";
static const char SQL_READ_CALENDAR[] =
    "SELECT o.epoch, l.version, l.rules_version, l.default_price, l.currency, l.min_nights,"
    " l.max_nights, TO_DAYS(n.night) - 719528, n.status, n.reservation_id, n.price, n.version,"
    " @@global.read_only"
    " FROM vbucket_owner o LEFT JOIN listings l ON l.listing_id = ?"
    " LEFT JOIN nights n ON n.listing_id = ? AND l.listing_id IS NOT NULL"
    "  AND n.night >= FROM_DAYS(?) AND n.night < FROM_DAYS(?)"
    " WHERE o.vbucket = ? ORDER BY n.night"; /* cached months list their nights in order */
static const char SQL_PUT_LISTING[] =
    "INSERT INTO listings (listing_id, vbucket, version, rules_version, default_price, currency,"
    " min_nights, max_nights) VALUES (?, ?, 1, 1, ?, ?, ?, ?)"
    " ON DUPLICATE KEY UPDATE version = LAST_INSERT_ID(version + 1),"
    " rules_version = rules_version + 1, default_price = VALUES(default_price),"
    " currency = VALUES(currency), min_nights = VALUES(min_nights),"
    " max_nights = VALUES(max_nights)";
/* A PUT with If-Match: the version check and the write in one statement,
 * so no other write lands between them. */
static const char SQL_REPLACE_LISTING[] =
    "UPDATE listings SET version = LAST_INSERT_ID(version + 1), rules_version = rules_version + 1,"
    " default_price = ?, currency = ?, min_nights = ?, max_nights = ?"
    " WHERE listing_id = ? AND (? = 0 OR version = ?)";
static const char SQL_BUMP_IF_RULES[] = "UPDATE listings SET version = LAST_INSERT_ID(version + 1)"
                                        " WHERE listing_id = ? AND rules_version = ?";
static const char SQL_BUMP_IF_VERSION[] =
    "UPDATE listings SET version = LAST_INSERT_ID(version + 1)"
    " WHERE listing_id = ? AND (? = 0 OR version = ?)";
static const char SQL_LISTING_VERSION[] = "SELECT version FROM listings WHERE listing_id = ?";
static const char SQL_INSERT_RESERVATION[] =
    "INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out,"
    " guest_id, status, total_price, currency, idempotency_key, request_hash, version)"
    " VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), ?, 'confirmed', ?, ?, ?, ?, ?)";
#define RES_COLS                                                                                   \
    "r.reservation_id, r.listing_id, TO_DAYS(r.check_in) - 719528,"                                \
    " TO_DAYS(r.check_out) - 719528, r.guest_id, r.status, r.total_price, r.currency,"             \
    " r.version, r.request_hash"
static const char SQL_FIND_BY_KEY[] =
    "SELECT o.epoch, " RES_COLS " FROM vbucket_owner o LEFT JOIN reservations r"
    " ON r.listing_id = ? AND r.idempotency_key = ? WHERE o.vbucket = ?";
/* A refused reservation's id was never answered: it is nobody's. */
static const char SQL_GET_RESERVATION[] =
    "SELECT o.epoch, " RES_COLS " FROM vbucket_owner o LEFT JOIN reservations r"
    " ON r.reservation_id = ? AND r.listing_id = ? AND r.status <> 'refused' WHERE o.vbucket = ?";
/* A refusal kept under its key, fenced and committed in one round trip,
 * counted in listing_refusals (a vbucket move finds it by the count: it
 * bumps no calendar version). Answers 0 (committed), 1 (the vbucket is not
 * owned) or 2 (the key, or the id, has a row already). */
static const char SQL_REFUSE[] =
    "BEGIN NOT ATOMIC DECLARE e BIGINT DEFAULT NULL;"
    " DECLARE EXIT HANDLER FOR 1062 BEGIN ROLLBACK; SELECT 2, 0; END;"
    " START TRANSACTION;"
    " SELECT epoch INTO e FROM vbucket_owner WHERE vbucket = ? LOCK IN SHARE MODE;"
    " IF e IS NULL THEN ROLLBACK; SELECT 1, 0; ELSE"
    " INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out,"
    " guest_id, status, total_price, currency, idempotency_key, request_hash, version)"
    " VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), ?, 'refused', 0, ?, ?, ?, ?);"
    " INSERT INTO listing_refusals (listing_id, vbucket, version) VALUES (?, ?, 1)"
    " ON DUPLICATE KEY UPDATE version = version + 1;"
    " COMMIT; SELECT 0, 0; END IF; END";
static const char SQL_CANCEL_RESERVATION[] =
    "UPDATE reservations SET status = 'cancelled'"
    " WHERE reservation_id = ? AND listing_id = ? AND status = 'confirmed'";
static const char SQL_RESERVATION_VERSION[] =
    "UPDATE reservations SET version = ? WHERE reservation_id = ?";
static const char SQL_FREE_NIGHTS[] =
    "UPDATE nights SET status = 'available', reservation_id = NULL, version = version + 1"
    " WHERE listing_id = ? AND reservation_id = ?";
static const char SQL_BLOCK[] =
    "INSERT INTO nights (listing_id, night, status, version, vbucket)"
    " SELECT ?, FROM_DAYS(? + seq), 'blocked', 1, ? FROM seq_0_to_366 WHERE seq < ?"
    " ON DUPLICATE KEY UPDATE status = IF(status = 'booked', 'booked', 'blocked'),"
    " version = version + 1";
static const char SQL_BOOKED_IN_RANGE[] =
    "SELECT TO_DAYS(night) - 719528 FROM nights WHERE listing_id = ?"
    " AND night >= FROM_DAYS(?) AND night < FROM_DAYS(?) AND status = 'booked' ORDER BY night";
/* An upsert, as SQL_BLOCK, not an UPDATE ... WHERE status = 'blocked': under
 * READ COMMITTED an UPDATE skips a row whose last committed state does not
 * match (a semi-consistent read) without waiting for the transaction that
 * holds it, so a block committing meanwhile stayed blocked behind the
 * unblock's later version. The upsert locks every night of the range, rows
 * not yet committed included (it makes available ones of missing nights).
 * Like SQL_BLOCK it can deadlock with a booking that updates a later night
 * before inserting an earlier one: InnoDB rolls one back, and either is
 * retried (CAL_ECONFLICT). */
static const char SQL_UNBLOCK[] =
    "INSERT INTO nights (listing_id, night, status, version, vbucket)"
    " SELECT ?, FROM_DAYS(? + seq), 'available', 1, ? FROM seq_0_to_366 WHERE seq < ?"
    " ON DUPLICATE KEY UPDATE version = IF(status = 'blocked', version + 1, version),"
    " status = IF(status = 'blocked', 'available', status)";
static const char SQL_SET_PRICE[] =
    "INSERT INTO nights (listing_id, night, status, price, version, vbucket)"
    " SELECT ?, FROM_DAYS(? + seq), 'available', ?, 1, ? FROM seq_0_to_366 WHERE seq < ?"
    " ON DUPLICATE KEY UPDATE price = VALUES(price), version = version + 1";

void
calendar_read_clear(struct calendar_read *read)
{
    free(read->rows);
    memset(read, 0, sizeof(*read));
}

struct night_row *
calendar_read_add(struct calendar_read *read)
{
    if (read->nrows == read->cap) {
        read->cap = read->cap ? read->cap * 2 : 32;
        read->rows = cal_realloc(read->rows, read->cap * sizeof(*read->rows));
    }
    return &read->rows[read->nrows++];
}

/* Columns: TO_DAYS(night) - 719528, status, reservation_id, price, version. */
static void
night_from_row(struct night_row *row, const struct db_val *c)
{
    row->night = (int32_t)c[0].i;
    if (c[1].type != DB_STR || !booking_night_status_parse(c[1].s, &row->status))
        row->status = NIGHT_BLOCKED; /* unknown status: never sell it */
    row->reservation_id = c[2].type == DB_INT ? (uint64_t)c[2].i : 0;
    row->has_price = c[3].type == DB_INT;
    row->price = c[3].i;
    row->version = (uint64_t)c[4].i;
}

/* Reads the remaining rows so the statement can run again. */
static void
drain(struct db_stmt *st)
{
    struct db_val c[1];
    char e[64];
    while (db_fetch(st, c, 1, e, sizeof(e)) > 0)
        ;
}

static void
copy_text(char *dst, size_t size, const struct db_val *v)
{
    cal_strlcpy(dst, v->type == DB_STR ? v->s : "", size);
}

/* Columns 1..6 of SQL_GET_LISTING / SQL_READ_CALENDAR. */
static void
listing_from_row(struct listing *l, const struct db_val *c, uint64_t listing_id, uint32_t vbucket)
{
    l->listing_id = listing_id;
    l->vbucket = vbucket;
    l->version = (uint64_t)c[0].i;
    l->rules_version = (uint64_t)c[1].i;
    l->default_price = c[2].i;
    copy_text(l->currency, sizeof(l->currency), &c[3]);
    l->min_nights = (int)c[4].i;
    l->max_nights = (int)c[5].i;
}

/* False for a status this daemon does not know (a newer one's): read as
 * confirmed it could answer a refusal as a booking. */
static bool
reservation_from_row(struct reservation *r, const struct db_val *c)
{
    r->reservation_id = (uint64_t)c[0].i;
    r->listing_id = (uint64_t)c[1].i;
    r->check_in = (int32_t)c[2].i;
    r->check_out = (int32_t)c[3].i;
    r->guest_id = (uint64_t)c[4].i;
    r->total_price = c[6].i;
    copy_text(r->currency, sizeof(r->currency), &c[7]);
    r->version = (uint64_t)c[8].i;
    copy_text(r->request_hash, sizeof(r->request_hash), &c[9]);
    return c[5].type == DB_STR && booking_reservation_status_parse(c[5].s, &r->status);
}

/* Runs sql on id and reads the first column of its first row into *out;
 * *found says whether there was one. */
static cal_status
query_first(struct db *db, const char *sql, uint64_t id, struct db_val *out, bool *found, char *err,
            size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(id)};
    cal_status rc = db_query(db, sql, p, 1, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, out, 1, err, errlen);
    drain(st);
    if (r < 0)
        return db_fetch_status(st);
    *found = r > 0;
    return CAL_OK;
}

/* CAL_OK when the listing is at version (0: none is), CAL_EINVAL when it
 * is not (err: "<what> version differs from If-Match"), CAL_ENOTFOUND when
 * there is no listing. */
static cal_status
if_match_check(struct db *db, uint64_t listing_id, uint64_t version, const char *what, char *err,
               size_t errlen)
{
    struct db_val c[1];
    bool found;
    cal_status rc = query_first(db, SQL_LISTING_VERSION, listing_id, c, &found, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (!found) {
        snprintf(err, errlen, "no listing");
        return CAL_ENOTFOUND;
    }
    if (version != 0 && (uint64_t)c[0].i == version)
        return CAL_OK;
    snprintf(err, errlen, "%s version differs from If-Match", what);
    return CAL_EINVAL;
}

/* Takes the fence row in share mode: a move's exclusive lock waits for us,
 * and without the row this shard no longer owns the vbucket. */
static cal_status
lock_owner(struct db *db, uint32_t vbucket, char *err, size_t errlen)
{
    struct db_val c[1];
    bool found;
    cal_status rc = query_first(db, SQL_OWNER_LOCK, vbucket, c, &found, err, errlen);
    if (rc == CAL_OK && !found) {
        snprintf(err, errlen, "vbucket %u is not owned by this shard", vbucket);
        return CAL_EMOVED;
    }
    return rc;
}

static cal_status
begin_fenced(struct db *db, uint32_t vbucket, char *err, size_t errlen)
{
    cal_status rc = db_begin(db, err, errlen);
    if (rc == CAL_OK && (rc = lock_owner(db, vbucket, err, errlen)) != CAL_OK)
        db_rollback(db);
    return rc;
}

cal_status
store_get_listing(struct db *db, uint32_t vbucket, uint64_t listing_id, struct listing *out,
                  char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[2] = {DB_INT_V(listing_id), DB_INT_V(vbucket)}, c[7];
    cal_status rc = db_query(db, SQL_GET_LISTING, p, 2, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, c, 7, err, errlen);
    drain(st);
    if (r < 0)
        return db_fetch_status(st);
    if (r == 0)
        return CAL_EMOVED;
    if (c[1].type == DB_NULL)
        return CAL_ENOTFOUND;
    listing_from_row(out, c + 1, listing_id, vbucket);
    return CAL_OK;
}

/* out: the listing as settings set at version left it. */
static void
listing_set(struct listing *out, uint64_t listing_id, uint32_t vbucket, uint64_t version,
            const struct listing_settings *set)
{
    memset(out, 0, sizeof(*out));
    out->listing_id = listing_id;
    out->vbucket = vbucket;
    out->version = version;
    out->default_price = set->default_price;
    memcpy(out->currency, set->currency, sizeof(out->currency));
    out->min_nights = set->min_nights;
    out->max_nights = set->max_nights;
}

cal_status
store_put_listing(struct db *db, uint32_t vbucket, uint64_t listing_id,
                  const struct listing_settings *set, int *created, struct listing *out, char *err,
                  size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[6] = {DB_INT_V(listing_id),         DB_INT_V(vbucket),
                          DB_INT_V(set->default_price), DB_CSTR_V(set->currency),
                          DB_INT_V(set->min_nights),    DB_INT_V(set->max_nights)};
    cal_status rc = begin_fenced(db, vbucket, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if ((rc = db_query(db, SQL_PUT_LISTING, p, 6, &st, err, errlen)) != CAL_OK)
        goto fail;
    *created = db_affected_rows(st) == 1;
    listing_set(out, listing_id, vbucket, *created ? 1 : db_insert_id(st), set);
    return db_commit(db, err, errlen);
fail:
    db_rollback(db);
    return rc;
}

cal_status
store_replace_listing(struct db *db, uint32_t vbucket, uint64_t listing_id,
                      const struct listing_settings *set, uint64_t if_match, struct listing *out,
                      char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[7] = {DB_INT_V(set->default_price),
                          DB_CSTR_V(set->currency),
                          DB_INT_V(set->min_nights),
                          DB_INT_V(set->max_nights),
                          DB_INT_V(listing_id),
                          DB_INT_V(if_match),
                          DB_INT_V(if_match)};
    cal_status rc = begin_fenced(db, vbucket, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if ((rc = db_query(db, SQL_REPLACE_LISTING, p, 7, &st, err, errlen)) != CAL_OK)
        goto fail;
    /* The version always moves: a matched row is a changed row. */
    if (db_affected_rows(st) != 1) {
        rc = if_match_check(db, listing_id, 0, "listing", err, errlen);
        goto fail;
    }
    listing_set(out, listing_id, vbucket, db_insert_id(st), set);
    return db_commit(db, err, errlen);
fail:
    db_rollback(db);
    return rc;
}

/* A 0/1 column (a system variable's value may come as text). */
static bool
flag_set(const struct db_val *v)
{
    return (v->type == DB_INT && v->i != 0) || (v->type == DB_STR && v->s[0] == '1');
}

cal_status
store_read_calendar(struct db *db, uint32_t vbucket, uint64_t listing_id, int32_t from, int32_t to,
                    struct calendar_read *out, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[] = {DB_INT_V(listing_id), DB_INT_V(listing_id), DB_INT_V(from + E),
                         DB_INT_V(to + E), DB_INT_V(vbucket)};
    struct db_val c[13];
    out->nrows = 0;
    out->found = false;
    out->maybe_stale = false;
    cal_status rc = db_query(db, SQL_READ_CALENDAR, p, CAL_ARRAY_LEN(p), &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r, rows = 0;
    while ((r = db_fetch(st, c, 13, err, errlen)) > 0) {
        if (rows++ == 0) {
            out->maybe_stale = flag_set(&c[12]);
            if (c[1].type == DB_NULL) {
                rc = CAL_ENOTFOUND;
                continue;
            }
            listing_from_row(&out->listing, c + 1, listing_id, vbucket);
            out->found = true;
        }
        if (c[7].type != DB_NULL)
            night_from_row(calendar_read_add(out), c + 7);
    }
    if (r < 0)
        return db_fetch_status(st);
    if (rows == 0)
        return CAL_EMOVED;
    return rc;
}

/* Appends n comma-separated copies of item at *off. */
static void
sql_list(char *buf, size_t size, size_t *off, size_t n, const char *item)
{
    for (size_t i = 0; i < n && *off < size; i++)
        *off += (size_t)snprintf(buf + *off, size - *off, "%s%s", i ? "," : "", item);
}

#define SQL_NIGHTS_INSERT                                                                          \
    "INSERT INTO nights (listing_id, night, status, reservation_id, version, vbucket) VALUES "
#define SQL_NIGHTS_INSERT_ROW "(?, FROM_DAYS(?), 'booked', ?, 1, ?)"

/* "UPDATE ... AND (night, version) IN ((FROM_DAYS(?), ?), ...)" for n rows. */
static void
sql_update_nights(char *buf, size_t size, size_t n)
{
    size_t off = (size_t)snprintf(
        buf, size,
        "UPDATE nights SET status = 'booked', reservation_id = ?, version = version + 1"
        " WHERE listing_id = ? AND night >= FROM_DAYS(?) AND night < FROM_DAYS(?)"
        " AND status = 'available' AND (night, version) IN (");
    sql_list(buf, size, &off, n, "(FROM_DAYS(?), ?)");
    if (off < size)
        snprintf(buf + off, size - off, ")");
}

static void
sql_insert_nights(char *buf, size_t size, size_t n)
{
    size_t off = (size_t)snprintf(buf, size, "%s", SQL_NIGHTS_INSERT);
    sql_list(buf, size, &off, n, SQL_NIGHTS_INSERT_ROW);
}

/* The statements of one booking inside an open transaction that holds the
 * fence row of its vbucket. See store_book() for the statuses. */
static cal_status
book_statements(struct db *db, const struct listing *listing, const struct booking_plan *plan,
                struct reservation *res, const char *key, size_t keylen, char *err, size_t errlen)
{
    char sql[BOOKING_MAX_NIGHTS * 44 + 512];
    struct db_val p[BOOKING_MAX_NIGHTS * 4 + 8];
    struct db_stmt *st;
    size_t n;
    cal_status rc;
    /* Nights that had rows: still available, at the version that was read. */
    if (plan->nexisting > 0) {
        sql_update_nights(sql, sizeof(sql), plan->nexisting);
        n = 0;
        p[n++] = DB_INT_V(res->reservation_id);
        p[n++] = DB_INT_V(listing->listing_id);
        p[n++] = DB_INT_V(res->check_in + E);
        p[n++] = DB_INT_V(res->check_out + E);
        for (size_t i = 0; i < plan->nexisting; i++) {
            p[n++] = DB_INT_V(plan->existing_night[i] + E);
            p[n++] = DB_INT_V(plan->existing_version[i]);
        }
        if ((rc = db_query(db, sql, p, n, &st, err, errlen)) != CAL_OK)
            return rc;
        if (db_affected_rows(st) != plan->nexisting) {
            snprintf(err, errlen, "a night changed since it was read");
            return CAL_ECONFLICT;
        }
    }
    /* Nights without rows: the primary key makes a concurrent insert lose. */
    if (plan->nmissing > 0) {
        sql_insert_nights(sql, sizeof(sql), plan->nmissing);
        n = 0;
        for (size_t i = 0; i < plan->nmissing; i++) {
            p[n++] = DB_INT_V(listing->listing_id);
            p[n++] = DB_INT_V(plan->missing[i] + E);
            p[n++] = DB_INT_V(res->reservation_id);
            p[n++] = DB_INT_V(listing->vbucket);
        }
        rc = db_query(db, sql, p, n, NULL, err, errlen);
        if (rc != CAL_OK)
            return rc == CAL_EDUP ? CAL_ECONFLICT : rc;
    }
    /* The rules the price and stay length were checked against; bumping the
     * calendar version here also serializes bookings of one listing. */
    p[0] = DB_INT_V(listing->listing_id);
    p[1] = DB_INT_V(listing->rules_version);
    if ((rc = db_query(db, SQL_BUMP_IF_RULES, p, 2, &st, err, errlen)) != CAL_OK)
        return rc;
    if (db_affected_rows(st) != 1) {
        snprintf(err, errlen, "listing settings changed since they were read");
        return CAL_ECONFLICT;
    }
    res->version = db_insert_id(st);
    n = 0;
    p[n++] = DB_INT_V(res->reservation_id);
    p[n++] = DB_INT_V(listing->listing_id);
    p[n++] = DB_INT_V(listing->vbucket);
    p[n++] = DB_INT_V(res->check_in + E);
    p[n++] = DB_INT_V(res->check_out + E);
    p[n++] = DB_INT_V(res->guest_id);
    p[n++] = DB_INT_V(res->total_price);
    p[n++] = DB_CSTR_V(res->currency);
    p[n++] = DB_STR_V(key, keylen);
    p[n++] = DB_CSTR_V(res->request_hash);
    p[n++] = DB_INT_V(res->version);
    return db_query(db, SQL_INSERT_RESERVATION, p, n, NULL, err, errlen);
}

/* The answer of a one-booking block: the failed step, or 0 and the version. */
struct one_answer {
    int64_t step, version;
};

static void
one_row(void *ctx, const int64_t *cols, size_t ncols)
{
    struct one_answer *a = ctx;
    if (ncols >= 2) {
        a->step = cols[0];
        a->version = cols[1];
    }
}

cal_status
store_book_one(struct db *db, const struct listing *listing, const struct booking_plan *plan,
               struct reservation *res, const char *key, size_t keylen, char *err, size_t errlen)
{
    char sql[BOOKING_MAX_NIGHTS * 88 + 2048], part[BOOKING_MAX_NIGHTS * 44 + 512];
    struct db_val p[BOOKING_MAX_NIGHTS * 6 + 24];
    size_t n = 0, off = 0;
    off +=
        (size_t)snprintf(sql + off, sizeof(sql) - off, "%s",
                         "BEGIN NOT ATOMIC DECLARE s INT DEFAULT 1; DECLARE e BIGINT DEFAULT NULL;"
                         " DECLARE v BIGINT DEFAULT 0;"
                         " DECLARE EXIT HANDLER FOR 1062 BEGIN ROLLBACK; SELECT s, 0; END;"
                         " START TRANSACTION; b: BEGIN SELECT epoch INTO e FROM vbucket_owner"
                         " WHERE vbucket = ? LOCK IN SHARE MODE; IF e IS NULL THEN LEAVE b; END IF;"
                         " SET s = 2;");
    p[n++] = DB_INT_V(listing->vbucket);
    if (plan->nexisting > 0) {
        sql_update_nights(part, sizeof(part), plan->nexisting);
        off += (size_t)snprintf(sql + off, sizeof(sql) - off,
                                " %s; IF ROW_COUNT() <> %zu THEN LEAVE b; END IF;", part,
                                plan->nexisting);
        p[n++] = DB_INT_V(res->reservation_id);
        p[n++] = DB_INT_V(listing->listing_id);
        p[n++] = DB_INT_V(res->check_in + E);
        p[n++] = DB_INT_V(res->check_out + E);
        for (size_t i = 0; i < plan->nexisting; i++) {
            p[n++] = DB_INT_V(plan->existing_night[i] + E);
            p[n++] = DB_INT_V(plan->existing_version[i]);
        }
    }
    off += (size_t)snprintf(sql + off, sizeof(sql) - off, " SET s = 3;");
    if (plan->nmissing > 0) {
        sql_insert_nights(part, sizeof(part), plan->nmissing);
        off += (size_t)snprintf(sql + off, sizeof(sql) - off, " %s;", part);
        for (size_t i = 0; i < plan->nmissing; i++) {
            p[n++] = DB_INT_V(listing->listing_id);
            p[n++] = DB_INT_V(plan->missing[i] + E);
            p[n++] = DB_INT_V(res->reservation_id);
            p[n++] = DB_INT_V(listing->vbucket);
        }
    }
    off += (size_t)snprintf(
        sql + off, sizeof(sql) - off,
        " SET s = 4; %s; IF ROW_COUNT() <> 1 THEN LEAVE b; END IF; SET v = LAST_INSERT_ID();"
        " SET s = 5; INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in,"
        " check_out, guest_id, status, total_price, currency, idempotency_key, request_hash,"
        " version) VALUES (?, ?, ?, FROM_DAYS(?), FROM_DAYS(?), ?, 'confirmed', ?, ?, ?, ?, v);"
        " SET s = 0; END b;"
        " IF s <> 0 THEN ROLLBACK; SELECT s, 0; ELSE COMMIT; SELECT 0, v; END IF; END",
        SQL_BUMP_IF_RULES);
    p[n++] = DB_INT_V(listing->listing_id);
    p[n++] = DB_INT_V(listing->rules_version);
    p[n++] = DB_INT_V(res->reservation_id);
    p[n++] = DB_INT_V(listing->listing_id);
    p[n++] = DB_INT_V(listing->vbucket);
    p[n++] = DB_INT_V(res->check_in + E);
    p[n++] = DB_INT_V(res->check_out + E);
    p[n++] = DB_INT_V(res->guest_id);
    p[n++] = DB_INT_V(res->total_price);
    p[n++] = DB_CSTR_V(res->currency);
    p[n++] = DB_STR_V(key, keylen);
    p[n++] = DB_CSTR_V(res->request_hash);
    struct one_answer a = {.step = -1};
    cal_status rc = db_block(db, sql, p, n, one_row, &a, err, errlen);
    if (rc != CAL_OK) {
        db_rollback(db);
        return rc;
    }
    switch (a.step) {
    case 0:
        res->version = (uint64_t)a.version;
        return CAL_OK;
    case 1:
        snprintf(err, errlen, "vbucket %u is not owned by this shard", listing->vbucket);
        return CAL_EMOVED;
    case 2:
    case 3:
        snprintf(err, errlen, "a night changed since it was read");
        return CAL_ECONFLICT;
    case 4:
        snprintf(err, errlen, "listing settings changed since they were read");
        return CAL_ECONFLICT;
    case 5:
        snprintf(err, errlen, "the idempotency key or the reservation id exists");
        return CAL_EDUP;
    default:
        snprintf(err, errlen, "booking block answered step %" PRId64, a.step);
        return CAL_ERR;
    }
}

cal_status
store_book(struct db *db, const struct listing *listing, const struct booking_plan *plan,
           struct reservation *res, const char *key, size_t keylen, char *err, size_t errlen)
{
    cal_status rc = begin_fenced(db, listing->vbucket, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if ((rc = book_statements(db, listing, plan, res, key, keylen, err, errlen)) != CAL_OK) {
        db_rollback(db);
        return rc;
    }
    return db_commit(db, err, errlen);
}

/* ---- many bookings of one shard in one transaction ----------------------- */

/* The whole booking transaction of many bookings in one round trip:
 * a compound statement with the batch as JSON arrays (JSON_TABLE), so its
 * text, and the statement prepared from it, are the same for any batch.
 * It takes the fence rows in share mode, checks the versions of the nights
 * that have rows, inserts the others (a duplicate key is a conflict),
 * bumps each listing's version once per booking if its rules are still
 * those the bookings were planned on, inserts the reservations, and
 * commits. Every check that fails rolls back inside the block, which then
 * answers the step that failed (BOOK_*); on success it answers each
 * listing's new version, read under its row lock, and then commits. */
enum {
    BOOK_OK = 0,
    BOOK_MOVED = 1,     /* a fence row is missing */
    BOOK_NIGHTS = 2,    /* a night changed since it was read */
    BOOK_NIGHT_DUP = 3, /* a night was inserted since it was read */
    BOOK_RULES = 4,     /* the listing's rules changed */
    BOOK_RES_DUP = 5,   /* the idempotency key or the reservation id exists */
};
static const char SQL_BOOK_BLOCK[] =
    "BEGIN NOT ATOMIC"
    " DECLARE s INT DEFAULT 1;"
    " DECLARE n BIGINT DEFAULT 0;"
    " DECLARE jv LONGTEXT DEFAULT ?;"
    " DECLARE nv INT DEFAULT ?;"
    " DECLARE je LONGTEXT DEFAULT ?;"
    " DECLARE ne INT DEFAULT ?;"
    " DECLARE jm LONGTEXT DEFAULT ?;"
    " DECLARE nm INT DEFAULT ?;"
    " DECLARE jl LONGTEXT DEFAULT ?;"
    " DECLARE nl INT DEFAULT ?;"
    " DECLARE jr LONGTEXT DEFAULT ?;"
    " DECLARE EXIT HANDLER FOR 1062 BEGIN ROLLBACK; SELECT s, 0, 0; END;"
    " START TRANSACTION;"
    " b: BEGIN"
    "  SELECT COUNT(*) INTO n FROM JSON_TABLE(jv, '$[*]' COLUMNS (vb INT UNSIGNED PATH '$')) j"
    "   JOIN vbucket_owner o ON o.vbucket = j.vb LOCK IN SHARE MODE;"
    "  IF n <> nv THEN LEAVE b; END IF;"
    "  SET s = 2;"
    "  IF ne > 0 THEN"
    "   UPDATE nights t JOIN JSON_TABLE(je, '$[*]' COLUMNS (l BIGINT UNSIGNED PATH '$[0]',"
    "     d INT PATH '$[1]', v BIGINT UNSIGNED PATH '$[2]', r BIGINT UNSIGNED PATH '$[3]')) j"
    "    ON t.listing_id = j.l AND t.night = FROM_DAYS(j.d) AND t.version = j.v"
    "    SET t.status = 'booked', t.reservation_id = j.r, t.version = t.version + 1"
    "    WHERE t.status = 'available';"
    "   IF ROW_COUNT() <> ne THEN LEAVE b; END IF;"
    "  END IF;"
    "  SET s = 3;"
    "  IF nm > 0 THEN"
    "   INSERT INTO nights (listing_id, night, status, reservation_id, version, vbucket)"
    "    SELECT j.l, FROM_DAYS(j.d), 'booked', j.r, 1, j.vb FROM JSON_TABLE(jm, '$[*]' COLUMNS ("
    "     l BIGINT UNSIGNED PATH '$[0]', d INT PATH '$[1]', r BIGINT UNSIGNED PATH '$[2]',"
    "     vb INT UNSIGNED PATH '$[3]')) j;"
    "  END IF;"
    "  SET s = 4;"
    "  UPDATE listings t JOIN JSON_TABLE(jl, '$[*]' COLUMNS (l BIGINT UNSIGNED PATH '$[0]',"
    "    rv BIGINT UNSIGNED PATH '$[1]', c INT PATH '$[2]')) j"
    "   ON t.listing_id = j.l AND t.rules_version = j.rv SET t.version = t.version + j.c;"
    "  IF ROW_COUNT() <> nl THEN LEAVE b; END IF;"
    "  SET s = 5;"
    "  INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out,"
    "    guest_id, status, total_price, currency, idempotency_key, request_hash, version)"
    "   SELECT j.r, j.l, t.vbucket, FROM_DAYS(j.ci), FROM_DAYS(j.co), j.g, 'confirmed', j.p,"
    "    j.cur, j.k, j.h, t.version - j.c + j.o FROM JSON_TABLE(jr, '$[*]' COLUMNS ("
    "     r BIGINT UNSIGNED PATH '$[0]', l BIGINT UNSIGNED PATH '$[1]', ci INT PATH '$[2]',"
    "     co INT PATH '$[3]', g BIGINT UNSIGNED PATH '$[4]', p BIGINT PATH '$[5]',"
    "     cur VARCHAR(3) PATH '$[6]', k VARCHAR(255) PATH '$[7]', h VARCHAR(16) PATH '$[8]',"
    "     c INT PATH '$[9]', o INT PATH '$[10]')) j"
    "   JOIN listings t ON t.listing_id = j.l;"
    "  SET s = 0;"
    " END b;"
    " IF s <> 0 THEN ROLLBACK; SELECT s, 0, 0;"
    " ELSE"
    "  SELECT 0, t.listing_id, t.version FROM JSON_TABLE(jl, '$[*]' COLUMNS ("
    "   l BIGINT UNSIGNED PATH '$[0]')) j JOIN listings t ON t.listing_id = j.l;"
    "  COMMIT;"
    " END IF;"
    "END";

/* Each listing's version after the batch, as the block answered it. */
struct block_answer {
    int64_t step;
    size_t nl;
    const uint64_t *lid;
    uint64_t *version; /* [nl] */
};

static void
block_row(void *ctx, const int64_t *cols, size_t ncols)
{
    struct block_answer *a = ctx;
    if (ncols < 3)
        return;
    a->step = cols[0];
    for (size_t x = 0; x < a->nl; x++)
        if (a->lid[x] == (uint64_t)cols[1])
            a->version[x] = (uint64_t)cols[2];
}

/* Runs the block for b[0..n). Returns CAL_OK with every res->version set
 * after COMMIT; otherwise the transaction is rolled back and the status
 * says why (for a batch of one exactly what store_book() answers). */
static cal_status
book_block(struct db *db, struct store_booking *b, size_t n, char *err, size_t errlen)
{
    struct jsonout jv, je, jm, jl, jr;
    size_t nv = 0, ne = 0, nm = 0, nl = 0;
    uint32_t *vbs = cal_malloc(n * sizeof(*vbs));
    uint64_t *lid = cal_malloc(n * sizeof(*lid)), *lrules = cal_malloc(n * sizeof(*lrules));
    uint64_t *lversion = cal_calloc(n, sizeof(*lversion));
    unsigned *lcount = cal_calloc(n, sizeof(*lcount));
    unsigned *ord = cal_malloc(n * sizeof(*ord)); /* 1-based rank in its listing */
    size_t *lof = cal_malloc(n * sizeof(*lof));   /* b[i]'s listing index */
    cal_status rc;

    for (size_t i = 0; i < n; i++) {
        const struct listing *l = b[i].listing;
        size_t x = 0;
        while (x < nv && vbs[x] != l->vbucket)
            x++;
        if (x == nv)
            vbs[nv++] = l->vbucket;
        for (x = 0; x < nl && lid[x] != l->listing_id; x++)
            ;
        if (x == nl) {
            lid[nl] = l->listing_id;
            lrules[nl++] = l->rules_version;
        }
        ord[i] = ++lcount[x];
        lof[i] = x;
    }
    /* The block checks one rules version per listing: bookings of a
     * listing planned on different rules go one savepoint each instead. */
    for (size_t i = 0; i < n; i++) {
        if (b[i].listing->rules_version != lrules[lof[i]]) {
            snprintf(err, errlen, "bookings of listing %" PRIu64 " were planned on other rules",
                     b[i].listing->listing_id);
            rc = CAL_ECONFLICT;
            goto out_arrays;
        }
    }
    jsonout_init(&jv, 16 + nv * 8);
    jsonout_init(&je, 256);
    jsonout_init(&jm, 256);
    jsonout_init(&jl, 16 + nl * 48);
    jsonout_init(&jr, 16 + n * 160);
    jsonout_lit(&jv, "[");
    for (size_t x = 0; x < nv; x++) {
        jsonout_lit(&jv, x ? "," : "");
        jsonout_u64(&jv, vbs[x]);
    }
    jsonout_lit(&jv, "]");
    jsonout_lit(&je, "[");
    jsonout_lit(&jm, "[");
    jsonout_lit(&jr, "[");
    for (size_t i = 0; i < n; i++) {
        const struct listing *l = b[i].listing;
        const struct booking_plan *plan = b[i].plan;
        const struct reservation *r = b[i].res;
        for (size_t k = 0; k < plan->nexisting; k++) {
            jsonout_lit(&je, ne++ ? ",[" : "[");
            jsonout_u64(&je, l->listing_id);
            jsonout_lit(&je, ",");
            jsonout_int(&je, plan->existing_night[k] + E);
            jsonout_lit(&je, ",");
            jsonout_u64(&je, plan->existing_version[k]);
            jsonout_lit(&je, ",");
            jsonout_u64(&je, r->reservation_id);
            jsonout_lit(&je, "]");
        }
        for (size_t k = 0; k < plan->nmissing; k++) {
            jsonout_lit(&jm, nm++ ? ",[" : "[");
            jsonout_u64(&jm, l->listing_id);
            jsonout_lit(&jm, ",");
            jsonout_int(&jm, plan->missing[k] + E);
            jsonout_lit(&jm, ",");
            jsonout_u64(&jm, r->reservation_id);
            jsonout_lit(&jm, ",");
            jsonout_u64(&jm, l->vbucket);
            jsonout_lit(&jm, "]");
        }
        jsonout_lit(&jr, i ? ",[" : "[");
        jsonout_u64(&jr, r->reservation_id);
        jsonout_lit(&jr, ",");
        jsonout_u64(&jr, l->listing_id);
        jsonout_lit(&jr, ",");
        jsonout_int(&jr, r->check_in + E);
        jsonout_lit(&jr, ",");
        jsonout_int(&jr, r->check_out + E);
        jsonout_lit(&jr, ",");
        jsonout_u64(&jr, r->guest_id);
        jsonout_lit(&jr, ",");
        jsonout_int(&jr, r->total_price);
        jsonout_lit(&jr, ",");
        /* Printable ASCII all three (validated): escaped as JSON anyway. */
        jsonout_str(&jr, r->currency, strlen(r->currency));
        jsonout_lit(&jr, ",");
        jsonout_str(&jr, b[i].key, b[i].keylen);
        jsonout_lit(&jr, ",");
        jsonout_str(&jr, r->request_hash, strlen(r->request_hash));
        jsonout_lit(&jr, ",");
        jsonout_u64(&jr, lcount[lof[i]]);
        jsonout_lit(&jr, ",");
        jsonout_u64(&jr, ord[i]);
        jsonout_lit(&jr, "]");
    }
    jsonout_lit(&je, "]");
    jsonout_lit(&jm, "]");
    jsonout_lit(&jr, "]");
    jsonout_lit(&jl, "[");
    for (size_t x = 0; x < nl; x++) {
        jsonout_lit(&jl, x ? ",[" : "[");
        jsonout_u64(&jl, lid[x]);
        jsonout_lit(&jl, ",");
        jsonout_u64(&jl, lrules[x]);
        jsonout_lit(&jl, ",");
        jsonout_u64(&jl, lcount[x]);
        jsonout_lit(&jl, "]");
    }
    jsonout_lit(&jl, "]");

    struct db_val p[] = {
        DB_STR_V(jv.p, jv.len), DB_INT_V(nv),           DB_STR_V(je.p, je.len),
        DB_INT_V(ne),           DB_STR_V(jm.p, jm.len), DB_INT_V(nm),
        DB_STR_V(jl.p, jl.len), DB_INT_V(nl),           DB_STR_V(jr.p, jr.len),
    };
    struct block_answer a = {.step = -1, .nl = nl, .lid = lid, .version = lversion};
    rc = db_block(db, SQL_BOOK_BLOCK, p, CAL_ARRAY_LEN(p), block_row, &a, err, errlen);
    if (rc != CAL_OK) {
        db_rollback(db);
        goto out;
    }
    switch (a.step) {
    case BOOK_OK:
        for (size_t i = 0; i < n; i++)
            b[i].res->version = lversion[lof[i]] - lcount[lof[i]] + ord[i];
        break;
    case BOOK_MOVED:
        if (n == 1)
            snprintf(err, errlen, "vbucket %u is not owned by this shard", b[0].listing->vbucket);
        else
            snprintf(err, errlen, "a vbucket of the batch is not owned by this shard");
        rc = CAL_EMOVED;
        break;
    case BOOK_NIGHTS:
    case BOOK_NIGHT_DUP:
        snprintf(err, errlen, "a night changed since it was read");
        rc = CAL_ECONFLICT;
        break;
    case BOOK_RULES:
        snprintf(err, errlen, "listing settings changed since they were read");
        rc = CAL_ECONFLICT;
        break;
    case BOOK_RES_DUP:
        snprintf(err, errlen, "the idempotency key or the reservation id exists");
        rc = CAL_EDUP;
        break;
    default:
        snprintf(err, errlen, "booking block answered step %" PRId64, a.step);
        rc = CAL_ERR;
        break;
    }
out:
    free(jv.p);
    free(je.p);
    free(jm.p);
    free(jl.p);
    free(jr.p);
out_arrays:
    free(vbs);
    free(lid);
    free(lrules);
    free(lversion);
    free(lcount);
    free(ord);
    free(lof);
    return rc;
}

/* Every night of every stay is a row of the JSON argument: the nights are
 * key lookups. (A range per stay, with bounds from the argument, makes the
 * optimizer walk the listing's every night.) */
static const char SQL_READ_EACH[] =
    "SELECT j.i, o.epoch, l.version, l.rules_version, l.default_price, l.currency, l.min_nights,"
    " l.max_nights, TO_DAYS(n.night) - 719528, n.status, n.reservation_id, n.price, n.version"
    " FROM JSON_TABLE(?, '$[*]' COLUMNS (i INT PATH '$[0]', lid BIGINT UNSIGNED PATH '$[1]',"
    "  vb INT UNSIGNED PATH '$[2]', NESTED PATH '$[3][*]' COLUMNS (d INT PATH '$'))) j"
    " LEFT JOIN vbucket_owner o ON o.vbucket = j.vb"
    " LEFT JOIN listings l ON l.listing_id = j.lid AND o.vbucket IS NOT NULL"
    " LEFT JOIN nights n ON n.listing_id = l.listing_id AND n.night = FROM_DAYS(j.d)";

cal_status
store_read_each(struct db *db, struct store_read *r, size_t n, char *err, size_t errlen)
{
    struct jsonout j;
    jsonout_init(&j, 64 + n * 64);
    bool *seen = cal_calloc(n, sizeof(*seen));
    jsonout_lit(&j, "[");
    for (size_t i = 0; i < n; i++) {
        jsonout_lit(&j, i ? ",[" : "[");
        jsonout_u64(&j, i);
        jsonout_lit(&j, ",");
        jsonout_u64(&j, r[i].listing_id);
        jsonout_lit(&j, ",");
        jsonout_u64(&j, r[i].vbucket);
        jsonout_lit(&j, ",[");
        for (int32_t d = r[i].from; d < r[i].to; d++) {
            jsonout_lit(&j, d > r[i].from ? "," : "");
            jsonout_int(&j, d + E);
        }
        jsonout_lit(&j, "]]");
        r[i].out->nrows = 0;
        r[i].out->found = false;
    }
    jsonout_lit(&j, "]");
    struct db_val p[] = {DB_STR_V(j.p, j.len)};
    struct db_stmt *st;
    struct db_val c[13];
    int rows = 0;
    cal_status rc = db_query(db, SQL_READ_EACH, p, CAL_ARRAY_LEN(p), &st, err, errlen);
    while (rc == CAL_OK && (rows = db_fetch(st, c, 13, err, errlen)) > 0) {
        size_t i = (size_t)c[0].i;
        if (c[0].type != DB_INT || i >= n)
            continue;
        struct store_read *ri = &r[i];
        if (!seen[i]) {
            seen[i] = true;
            ri->rc = c[1].type == DB_NULL   ? CAL_EMOVED
                     : c[2].type == DB_NULL ? CAL_ENOTFOUND
                                            : CAL_OK;
            if (ri->rc == CAL_OK) {
                listing_from_row(&ri->out->listing, c + 2, ri->listing_id, ri->vbucket);
                ri->out->found = true;
            }
        }
        if (ri->rc == CAL_OK && c[8].type != DB_NULL)
            night_from_row(calendar_read_add(ri->out), c + 8);
    }
    if (rc == CAL_OK && rows < 0)
        rc = CAL_ERR;
    for (size_t i = 0; rc == CAL_OK && i < n; i++) {
        if (!seen[i]) {
            snprintf(err, errlen, "the batch read answered nothing for stay %zu", i);
            rc = CAL_ERR;
        }
    }
    free(seen);
    free(j.p);
    return rc;
}

/* store_book_many() for n > 1, in the order given. */
static void
book_many(struct db *db, struct store_booking *b, size_t n)
{
    char err[256] = "";
    cal_status rc = book_block(db, b, n, err, sizeof(err));
    if (rc == CAL_OK || db_broken(db) || rc == CAL_EUNKNOWN || rc == CAL_EREADONLY) {
        for (size_t i = 0; i < n; i++) {
            b[i].rc = rc;
            snprintf(b[i].err, sizeof(b[i].err), "%s", err);
        }
        return;
    }
    /* Something in the batch failed: one savepoint per booking, so one
     * booking's conflict never fails another; the COMMIT is still shared.
     * Once one of them waited out a lock, the rest wait for none (each
     * could wait as long, one after the other, while the transaction
     * holds the others' locks and fence rows): one that meets a held lock
     * fails at once, a conflict its request retries. */
    bool nowait = false;
    if ((rc = db_begin(db, err, sizeof(err))) != CAL_OK)
        goto all_failed;
    for (size_t i = 0; i < n; i++) {
        if ((rc = db_exec(db, "SAVEPOINT b", err, sizeof(err))) != CAL_OK)
            goto all_failed;
        b[i].rc = lock_owner(db, b[i].listing->vbucket, b[i].err, sizeof(b[i].err));
        if (b[i].rc == CAL_OK)
            b[i].rc = book_statements(db, b[i].listing, b[i].plan, b[i].res, b[i].key, b[i].keylen,
                                      b[i].err, sizeof(b[i].err));
        bool waited = b[i].rc != CAL_OK && db_lock_wait_timed_out(db);
        if (b[i].rc != CAL_OK &&
            (db_broken(db) || db_exec(db, "ROLLBACK TO SAVEPOINT b", err, sizeof(err)) != CAL_OK)) {
            /* A deadlock rolls the whole transaction back, savepoints and
             * all: every booking of the batch retries, none is lost. */
            rc = db_broken(db) ? CAL_EUNAVAIL : CAL_ECONFLICT;
            goto all_failed;
        }
        if (waited && !nowait && i + 1 < n) {
            /* Best effort: without it the rest wait as before. */
            if (db_lock_waits(db, false, err, sizeof(err)) == CAL_OK) {
                nowait = true;
            } else if (db_broken(db)) {
                rc = CAL_EUNAVAIL;
                goto all_failed;
            }
        }
    }
    if (nowait && (rc = db_lock_waits(db, true, err, sizeof(err))) != CAL_OK)
        goto all_failed;
    rc = db_commit(db, err, sizeof(err));
    for (size_t i = 0; i < n; i++)
        if (b[i].rc == CAL_OK)
            b[i].rc = rc;
    return;
all_failed:
    db_rollback(db);
    char e2[256];
    if (nowait && !db_broken(db))
        db_lock_waits(db, true, e2, sizeof(e2));
    for (size_t i = 0; i < n; i++) {
        b[i].rc = rc == CAL_OK ? CAL_ERR : rc;
        snprintf(b[i].err, sizeof(b[i].err), "%s", err);
    }
}

static bool
booked_before(const struct store_booking *a, const struct store_booking *b)
{
    if (a->listing->listing_id != b->listing->listing_id)
        return a->listing->listing_id < b->listing->listing_id;
    return a->res->check_in < b->res->check_in;
}

void
store_book_many(struct db *db, struct store_booking *b, size_t n)
{
    if (n == 1) {
        b[0].rc = store_book_one(db, b[0].listing, b[0].plan, b[0].res, b[0].key, b[0].keylen,
                                 b[0].err, sizeof(b[0].err));
        return;
    }
    /* Booked in listing order (then stay): every transaction locks the rows
     * of the listings it shares with another in the same order, so two
     * batches (two lanes, two daemons) never deadlock over them. Sorted by
     * insertion: a batch is small (batch_max). */
    size_t *order = cal_malloc(n * sizeof(*order));
    for (size_t i = 0; i < n; i++) {
        size_t k = i;
        while (k > 0 && booked_before(&b[i], &b[order[k - 1]])) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    struct store_booking *sorted = cal_malloc(n * sizeof(*sorted));
    for (size_t k = 0; k < n; k++)
        sorted[k] = b[order[k]];
    book_many(db, sorted, n);
    for (size_t k = 0; k < n; k++) {
        b[order[k]].rc = sorted[k].rc;
        memcpy(b[order[k]].err, sorted[k].err, sizeof(b[order[k]].err));
    }
    free(sorted);
    free(order);
}

static cal_status
fetch_reservation(struct db_stmt *st, int skip, struct reservation *out, char *err, size_t errlen)
{
    struct db_val c[11];
    int r = db_fetch(st, c, 11, err, errlen);
    drain(st);
    if (r < 0)
        return db_fetch_status(st);
    if (r == 0)
        return skip ? CAL_EMOVED : CAL_ENOTFOUND;
    if (c[skip].type == DB_NULL)
        return CAL_ENOTFOUND;
    if (!reservation_from_row(out, c + skip)) {
        snprintf(err, errlen, "reservation %" PRIu64 " has a status this calendard does not know",
                 out->reservation_id);
        return CAL_ERR;
    }
    return CAL_OK;
}

cal_status
store_find_by_key(struct db *db, uint32_t vbucket, uint64_t listing_id, const char *key,
                  size_t keylen, struct reservation *out, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[3] = {DB_INT_V(listing_id), DB_STR_V(key, keylen), DB_INT_V(vbucket)};
    cal_status rc = db_query(db, SQL_FIND_BY_KEY, p, 3, &st, err, errlen);
    return rc != CAL_OK ? rc : fetch_reservation(st, 1, out, err, errlen);
}

cal_status
store_refuse(struct db *db, const struct listing *listing, const struct reservation *res,
             const char *key, size_t keylen, char *err, size_t errlen)
{
    struct db_val p[] = {
        DB_INT_V(listing->vbucket),   DB_INT_V(res->reservation_id), DB_INT_V(listing->listing_id),
        DB_INT_V(listing->vbucket),   DB_INT_V(res->check_in + E),   DB_INT_V(res->check_out + E),
        DB_INT_V(res->guest_id),      DB_CSTR_V(listing->currency),  DB_STR_V(key, keylen),
        DB_CSTR_V(res->request_hash), DB_INT_V(listing->version),    DB_INT_V(listing->listing_id),
        DB_INT_V(listing->vbucket)};
    struct one_answer a = {.step = -1};
    cal_status rc = db_block(db, SQL_REFUSE, p, CAL_ARRAY_LEN(p), one_row, &a, err, errlen);
    if (rc != CAL_OK) {
        db_rollback(db);
        return rc;
    }
    switch (a.step) {
    case 0:
        return CAL_OK;
    case 1:
        snprintf(err, errlen, "vbucket %u is not owned by this shard", listing->vbucket);
        return CAL_EMOVED;
    case 2:
        snprintf(err, errlen, "the idempotency key or the reservation id exists");
        return CAL_EDUP;
    default:
        snprintf(err, errlen, "refusal block answered step %" PRId64, a.step);
        return CAL_ERR;
    }
}

cal_status
store_get_reservation(struct db *db, uint32_t vbucket, uint64_t listing_id, uint64_t reservation_id,
                      struct reservation *out, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[3] = {DB_INT_V(reservation_id), DB_INT_V(listing_id), DB_INT_V(vbucket)};
    cal_status rc = db_query(db, SQL_GET_RESERVATION, p, 3, &st, err, errlen);
    return rc != CAL_OK ? rc : fetch_reservation(st, 1, out, err, errlen);
}

cal_status
store_cancel(struct db *db, uint32_t vbucket, uint64_t listing_id, uint64_t reservation_id,
             struct reservation *out, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[3] = {DB_INT_V(reservation_id), DB_INT_V(listing_id), DB_INT_V(0)};
    cal_status rc = begin_fenced(db, vbucket, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if ((rc = db_query(db, SQL_CANCEL_RESERVATION, p, 2, &st, err, errlen)) != CAL_OK)
        goto fail;
    if (db_affected_rows(st) == 0) {
        /* Unknown, or cancelled already: cancelling is idempotent. */
        db_rollback(db);
        return store_get_reservation(db, vbucket, listing_id, reservation_id, out, err, errlen);
    }
    p[0] = DB_INT_V(listing_id);
    p[1] = DB_INT_V(reservation_id);
    if ((rc = db_query(db, SQL_FREE_NIGHTS, p, 2, NULL, err, errlen)) != CAL_OK)
        goto fail;
    p[1] = DB_INT_V(0);
    p[2] = DB_INT_V(0);
    if ((rc = db_query(db, SQL_BUMP_IF_VERSION, p, 3, &st, err, errlen)) != CAL_OK)
        goto fail;
    /* The reservation's version is the calendar version of its last change. */
    p[0] = DB_INT_V(db_insert_id(st));
    p[1] = DB_INT_V(reservation_id);
    if ((rc = db_query(db, SQL_RESERVATION_VERSION, p, 2, NULL, err, errlen)) != CAL_OK)
        goto fail;
    /* The answer is read before the COMMIT: once it committed, only the
     * COMMIT's own failure (outcome_unknown) can keep it from the client. */
    if ((rc = store_get_reservation(db, vbucket, listing_id, reservation_id, out, err, errlen)) !=
        CAL_OK)
        goto fail;
    return db_commit(db, err, errlen);
fail:
    db_rollback(db);
    return rc;
}

cal_status
store_calendar(struct db *db, uint32_t vbucket, uint64_t listing_id,
               const struct calendar_request *req, uint64_t if_match, uint64_t *version,
               int32_t *booked, size_t *nbooked, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[5], c[1];
    int64_t nights = req->to - req->from;
    *nbooked = 0;
    cal_status rc = begin_fenced(db, vbucket, err, errlen);
    if (rc != CAL_OK)
        return rc;
    switch (req->action) {
    case CALENDAR_BLOCK:
        p[0] = DB_INT_V(listing_id);
        p[1] = DB_INT_V(req->from + E);
        p[2] = DB_INT_V(vbucket);
        p[3] = DB_INT_V(nights);
        if ((rc = db_query(db, SQL_BLOCK, p, 4, NULL, err, errlen)) != CAL_OK)
            goto fail;
        /* Our upsert holds every row of the range now: the check is final. */
        p[1] = DB_INT_V(req->from + E);
        p[2] = DB_INT_V(req->to + E);
        if ((rc = db_query(db, SQL_BOOKED_IN_RANGE, p, 3, &st, err, errlen)) != CAL_OK)
            goto fail;
        int r;
        while ((r = db_fetch(st, c, 1, err, errlen)) > 0)
            if (*nbooked < BOOKING_MAX_NIGHTS)
                booked[(*nbooked)++] = (int32_t)c[0].i;
        if (r < 0) {
            rc = db_fetch_status(st);
            goto fail;
        }
        if (*nbooked > 0) {
            /* The precondition first (RFC 9110 13.2.2): a stale If-Match
             * answers 412, whatever the block would have met. */
            if (if_match != 0 && (rc = if_match_check(db, listing_id, if_match, "calendar", err,
                                                      errlen)) != CAL_OK) {
                *nbooked = 0;
                goto fail;
            }
            snprintf(err, errlen, "%zu nights of the range are booked", *nbooked);
            rc = CAL_EINVAL;
            goto fail;
        }
        break;
    case CALENDAR_UNBLOCK:
        p[0] = DB_INT_V(listing_id);
        p[1] = DB_INT_V(req->from + E);
        p[2] = DB_INT_V(vbucket);
        p[3] = DB_INT_V(nights);
        if ((rc = db_query(db, SQL_UNBLOCK, p, 4, NULL, err, errlen)) != CAL_OK)
            goto fail;
        break;
    case CALENDAR_SET_PRICE:
        p[0] = DB_INT_V(listing_id);
        p[1] = DB_INT_V(req->from + E);
        p[2] = DB_INT_V(req->price);
        p[3] = DB_INT_V(vbucket);
        p[4] = DB_INT_V(nights);
        if ((rc = db_query(db, SQL_SET_PRICE, p, 5, NULL, err, errlen)) != CAL_OK)
            goto fail;
        break;
    }
    p[0] = DB_INT_V(listing_id);
    p[1] = DB_INT_V(if_match);
    p[2] = DB_INT_V(if_match);
    if ((rc = db_query(db, SQL_BUMP_IF_VERSION, p, 3, &st, err, errlen)) != CAL_OK)
        goto fail;
    if (db_affected_rows(st) != 1) {
        rc = if_match_check(db, listing_id, 0, "calendar", err, errlen);
        goto fail;
    }
    *version = db_insert_id(st);
    return db_commit(db, err, errlen);
fail:
    db_rollback(db);
    return rc;
}

/* "... WHERE l.listing_id IN (?, ...)" for n ids. */
static void
sql_read_many(char *buf, size_t size, size_t n)
{
    size_t off = (size_t)snprintf(
        buf, size,
        "SELECT l.listing_id, o.epoch, l.vbucket, l.version, l.rules_version, l.default_price,"
        " l.currency, l.min_nights, l.max_nights, TO_DAYS(n.night) - 719528, n.status,"
        " n.reservation_id, n.price, n.version, @@global.read_only"
        " FROM listings l LEFT JOIN vbucket_owner o ON o.vbucket = l.vbucket"
        " LEFT JOIN nights n ON n.listing_id = l.listing_id"
        "  AND n.night >= FROM_DAYS(?) AND n.night < FROM_DAYS(?) AND n.listing_id IN (");
    sql_list(buf, size, &off, n, "?");
    off += (size_t)snprintf(buf + off, size - off, ") WHERE l.listing_id IN (");
    sql_list(buf, size, &off, n, "?");
    if (off < size)
        snprintf(buf + off, size - off, ") ORDER BY l.listing_id, n.night");
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = **(const uint64_t *const *)a, y = **(const uint64_t *const *)b;
    return (x > y) - (x < y);
}

/* Of the listings no row answered for, those whose routed vbucket has no
 * fence row here moved away (their rows may be gone already): marks them. */
static cal_status
mark_moved(struct db *db, const uint32_t *vbuckets, struct calendar_read *reads, size_t n,
           size_t *not_owned, char *err, size_t errlen)
{
    size_t k = 0;
    uint32_t *vbs = cal_malloc(n * sizeof(*vbs));
    for (size_t i = 0; i < n; i++)
        if (!reads[i].found && !reads[i].moved)
            vbs[k++] = vbuckets[i];
    if (k == 0) {
        free(vbs);
        return CAL_OK;
    }
    size_t sqlsize = 80 + k * 3, off;
    char *sql = cal_malloc(sqlsize);
    struct db_val *p = cal_malloc(k * sizeof(*p));
    off = (size_t)snprintf(sql, sqlsize, "SELECT vbucket FROM vbucket_owner WHERE vbucket IN (");
    sql_list(sql, sqlsize, &off, k, "?");
    if (off < sqlsize)
        snprintf(sql + off, sqlsize - off, ")");
    for (size_t i = 0; i < k; i++)
        p[i] = DB_INT_V(vbs[i]);
    size_t nowned = 0;
    struct db_stmt *st;
    struct db_val c[1];
    int r = 0;
    cal_status rc = db_query(db, sql, p, k, &st, err, errlen);
    if (rc == CAL_OK) {
        while ((r = db_fetch(st, c, 1, err, errlen)) > 0)
            vbs[nowned++] = (uint32_t)c[0].i; /* at most k distinct rows */
        rc = r < 0 ? db_fetch_status(st) : CAL_OK;
    }
    for (size_t i = 0; rc == CAL_OK && i < n; i++) {
        if (reads[i].found || reads[i].moved)
            continue;
        bool owned = false;
        for (size_t x = 0; x < nowned && !owned; x++)
            owned = vbs[x] == vbuckets[i];
        if (!owned) {
            reads[i].moved = true;
            (*not_owned)++;
        }
    }
    free(sql);
    free(p);
    free(vbs);
    return rc;
}

cal_status
store_read_many(struct db *db, const uint64_t *ids, const uint32_t *vbuckets, size_t n,
                int32_t from, int32_t to, struct calendar_read *reads, size_t *not_owned, char *err,
                size_t errlen)
{
    size_t sqlsize = 600 + n * 4;
    char *sql = cal_malloc(sqlsize);
    struct db_val *p = cal_malloc((2 * n + 2) * sizeof(*p));
    const uint64_t **order = cal_malloc(n * sizeof(*order));
    struct db_stmt *st;
    struct db_val c[15];
    cal_status rc;
    int r;
    *not_owned = 0;
    sql_read_many(sql, sqlsize, n);
    p[0] = DB_INT_V(from + E);
    p[1] = DB_INT_V(to + E);
    for (size_t i = 0; i < n; i++) {
        p[i + 2] = DB_INT_V(ids[i]);
        p[n + i + 2] = DB_INT_V(ids[i]);
        order[i] = &ids[i];
        reads[i].found = false;
        reads[i].moved = false;
        reads[i].maybe_stale = false;
        reads[i].nrows = 0;
    }
    /* Rows come ordered by listing_id: find each listing's slots (an id
     * may be asked more than once) by bsearch. */
    qsort(order, n, sizeof(*order), cmp_u64);
    if ((rc = db_query(db, sql, p, 2 * n + 2, &st, err, errlen)) != CAL_OK)
        goto out;
    uint64_t current = 0;
    size_t lo = 0, hi = 0; /* order[lo..hi) are the current listing's slots */
    bool have = false;
    while ((r = db_fetch(st, c, 15, err, errlen)) > 0) {
        uint64_t id = (uint64_t)c[0].i;
        if (id != current || !have) {
            current = id;
            have = true;
            uint64_t key = id;
            const uint64_t *kp = &key;
            const uint64_t **hit = bsearch(&kp, order, n, sizeof(*order), cmp_u64);
            lo = hi = 0;
            if (hit == NULL)
                continue;
            lo = hi = (size_t)(hit - order);
            while (lo > 0 && *order[lo - 1] == id)
                lo--;
            while (hi < n && *order[hi] == id)
                hi++;
            bool owned = c[1].type != DB_NULL;
            for (size_t x = lo; x < hi; x++) {
                struct calendar_read *read = &reads[order[x] - ids];
                if (!owned) {
                    read->moved = true;
                    (*not_owned)++;
                    continue;
                }
                listing_from_row(&read->listing, c + 3, id, (uint32_t)c[2].i);
                read->found = true;
                read->maybe_stale = flag_set(&c[14]);
            }
            if (!owned)
                lo = hi = 0;
        }
        if (c[9].type == DB_NULL)
            continue;
        for (size_t x = lo; x < hi; x++)
            night_from_row(calendar_read_add(&reads[order[x] - ids]), c + 9);
    }
    rc = r < 0 ? db_fetch_status(st) : CAL_OK;
    if (rc == CAL_OK)
        rc = mark_moved(db, vbuckets, reads, n, not_owned, err, errlen);
out:
    free(sql);
    free(p);
    free(order);
    return rc;
}

cal_status
store_ping(struct db *db, char *err, size_t errlen)
{
    struct db_stmt *st;
    cal_status rc = db_query(db, "SELECT 1", NULL, 0, &st, err, errlen);
    if (rc == CAL_OK)
        drain(st);
    return rc;
}
