/* Online move of one vbucket between shards; see move.h for the phases. */
#include "sharding/move.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "sharding/verify.h"

#define LISTING_CHUNK 200    /* listings read per statement */
#define INSERT_CHUNK 400     /* rows written per statement */
#define CATCHUP_PASSES 8     /* delta passes before a cutover at most */
#define CUTOVER_DELTA_MAX 64 /* listings the locked cutover may still copy */
#define CUTOVER_TRIES 5
#define RELOCK_TRIES 3     /* takes of a lost move lock in one run */
#define RELOCK_WAIT_S 2    /* for a dead session's lock to go */
#define ROWS_LOCK_WAIT_S 5 /* for a stopping run to let go of a shard's rows */

struct table_spec {
    const char *name;
    const char *cols;
    size_t ncols;
    /* NULL when the primary key starts with listing_id. Else the key column,
     * first of cols, followed by listing_id and vbucket: such a key can be
     * another listing's on the target (reservation ids were once unique per
     * calendard process only), see upsert_clause and check_keys. */
    const char *key;
    const char *where; /* the table's rows this spec copies */
    /* Its rows are never changed once written: a row the target has is not
     * read again, only the keys are compared (read_rows). */
    bool immutable;
    /* Read only for the listings whose count of refusals differs. */
    bool refusals_only;
};

/* Copy order matters only for readers of the target, which have none until
 * the cutover; listings is read first (see copy_listings). */
static const struct table_spec TABLES[] = {
    {"listings",
     "listing_id, vbucket, version, rules_version, default_price, currency, min_nights,"
     " max_nights, updated_at",
     9, NULL, "TRUE", false, false},
    /* Written after the refusals it counts (writes go in reverse order),
     * and only with them (refusals_only: read for the same listings, before
     * them), so a count on the target never claims a refusal that is not
     * there: the next pass sees the difference. */
    {"listing_refusals", "listing_id, vbucket, version", 3, NULL, "TRUE", false, true},
    {"nights", "listing_id, night, status, reservation_id, price, version, vbucket", 7, NULL,
     "TRUE", false, false},
#define RESERVATION_COLS                                                                           \
    "reservation_id, listing_id, vbucket, check_in, check_out, guest_id, status, total_price,"     \
    " currency, idempotency_key, request_hash, version, created_at, updated_at"
    {"reservations", RESERVATION_COLS, 14, "reservation_id", "status <> 'refused'", false, false},
    /* Kept refusals (calendard/store.c, store_refuse): a listing many
     * bookings were refused on holds many, and each of its changes would
     * copy them all again, the cutover's too. */
    {"reservations", RESERVATION_COLS, 14, "reservation_id", "status = 'refused'", true, true},
};
#define NTABLES (sizeof(TABLES) / sizeof(TABLES[0]))

struct move_rec {
    uint64_t move_id;
    uint32_t vbucket, source, target;
    uint64_t old_epoch;
    char phase[17];
    uint64_t rows_copied;
    double freeze_ms;
    uint64_t start_us;
    uint64_t reported_us;  /* the last progress line (report_due) */
    uint64_t rows_checked; /* of the source's rows, by the cleanup's check of the copy */
    uint64_t frozen_at_us; /* when this process took the fence; 0 after a crash */
    bool lost_lock;        /* stopped because its move lock could not be confirmed */
    uint64_t lock_session; /* CONNECTION_ID() of the catalog session that took the lock */
    uint64_t run_token;    /* names the run's own lock, held beside the move lock */
};

/* Rows of one table held between a read on the source and a write on the target. */
struct rows {
    size_t n, cap, ncols;
    struct db_val *v;
};

static void
rows_clear(struct rows *r)
{
    for (size_t i = 0; i < r->n * r->ncols; i++)
        if (r->v[i].type == DB_STR)
            free((char *)r->v[i].s);
    r->n = 0;
}

static void
rows_free(struct rows *r)
{
    rows_clear(r);
    free(r->v);
    memset(r, 0, sizeof(*r));
}

static void
report(const struct move_opts *o, struct move_rec *m)
{
    m->reported_us = cal_mono_us();
    if (o->progress == NULL)
        return;
    struct move_progress p = {.move_id = m->move_id,
                              .vbucket = m->vbucket,
                              .source = m->source,
                              .target = m->target,
                              .phase = m->phase,
                              .rows_copied = m->rows_copied,
                              .rows_checked = m->rows_checked,
                              .elapsed_s = (double)(cal_mono_us() - m->start_us) / 1e6,
                              .freeze_ms = m->freeze_ms};
    o->progress(&p);
}

static void
crash_point(const struct move_opts *o, const char *phase)
{
    if (o->crash_after != NULL && strcmp(o->crash_after, phase) == 0) {
        log_warn("crashing on purpose", "after=%s", phase);
        raise(SIGKILL);
    }
}

static const char SQL_JOURNAL_PHASE[] =
    "UPDATE moves SET phase = ?, rows_copied = ?, freeze_ms = ? WHERE move_id = ?";
/* Only while the phase is the run's: never over another run's abandon. */
static const char SQL_JOURNAL_ROWS[] =
    "UPDATE moves SET rows_copied = ? WHERE move_id = ? AND phase = ?";

static cal_status
journal(struct cluster *c, struct move_rec *m, const char *phase, char *err, size_t errlen)
{
    cal_strlcpy(m->phase, phase, sizeof(m->phase));
    struct db_val p[4] = {DB_CSTR_V(phase), DB_INT_V(m->rows_copied),
                          m->freeze_ms >= 0 ? DB_INT_V((int64_t)m->freeze_ms) : DB_NULL_V,
                          DB_INT_V(m->move_id)};
    return db_query(c->catalog, SQL_JOURNAL_PHASE, p, 4, NULL, err, errlen);
}

/* Between the chunks of a long copy or delete: a progress line, and the
 * journal's rows_copied (which status shows), once the last line is older
 * than the interval. m NULL: no move to report (a test's copy pass, an
 * abandon). A journal write that fails is left to the next step's lock
 * check. */
static void
report_due(struct cluster *c, const struct move_opts *o, struct move_rec *m)
{
    if (m == NULL)
        return;
    uint64_t every_us = o->progress_every_us ? o->progress_every_us : MOVE_PROGRESS_EVERY_US;
    if (cal_mono_us() - m->reported_us < every_us)
        return;
    char err[256];
    struct db_val p[3] = {DB_INT_V(m->rows_copied), DB_INT_V(m->move_id), DB_CSTR_V(m->phase)};
    if (db_query(c->catalog, SQL_JOURNAL_ROWS, p, 3, NULL, err, sizeof(err)) != CAL_OK)
        log_warn("progress not journaled", "move=%llu vbucket=%u error=\"%s\"",
                 (unsigned long long)m->move_id, m->vbucket, err);
    report(o, m);
}

/* The vbucket's move lock (lock_vbucket) belongs to the catalog session,
 * which can die while shards are being copied; another run may then take
 * the lock and finish the move. Checked before every step that writes the
 * vbucket's rows or fence, so a run that lost it stops there. */
static const char SQL_MOVE_LOCK_HELD[] =
    "SELECT IS_USED_LOCK(CONCAT('calendar_move_', ?)) = CONNECTION_ID()";

static cal_status
check_move_lock(struct cluster *c, const struct move_opts *o, struct move_rec *m, const char *step,
                char *err, size_t errlen)
{
    uint32_t vbucket = m->vbucket;
    if (o->before_lock_check != NULL)
        o->before_lock_check(step, vbucket);
    struct db_val p[1] = {DB_INT_V(vbucket)}, col[1];
    char why[256];
    bool found = false;
    cal_status rc =
        cluster_query_row(c->catalog, SQL_MOVE_LOCK_HELD, p, 1, col, 1, &found, why, sizeof(why));
    if (rc == CAL_OK && found && col[0].type == DB_INT && col[0].i == 1)
        return CAL_OK;
    snprintf(err, errlen,
             "vbucket %u: this run no longer holds its move lock (%s): stopped before %s", vbucket,
             rc != CAL_OK ? why : "the catalog session changed", step);
    m->lost_lock = true;
    return CAL_ECONFLICT;
}

/* listing_id, version and refusals kept of every listing of the vbucket,
 * by listing_id. A kept refusal (calendard/store.c, store_refuse) adds a
 * reservations row without bumping the version: listing_refusals counts
 * them, one row per listing. */
struct versions {
    size_t n, cap;
    uint64_t *id, *version, *refusals;
};

static const char SQL_VERSIONS[] =
    "SELECT l.listing_id, l.version, COALESCE(r.version, 0) FROM listings l"
    " LEFT JOIN listing_refusals r ON r.listing_id = l.listing_id"
    " WHERE l.vbucket = ? ORDER BY l.listing_id";

static cal_status
read_versions(struct db *db, uint32_t vbucket, struct versions *v, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(vbucket)}, c[3];
    v->n = 0;
    cal_status rc = db_query(db, SQL_VERSIONS, p, 1, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r;
    while ((r = db_fetch(st, c, 3, err, errlen)) > 0) {
        if (v->n == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 1024;
            v->id = cal_realloc(v->id, v->cap * sizeof(*v->id));
            v->version = cal_realloc(v->version, v->cap * sizeof(*v->version));
            v->refusals = cal_realloc(v->refusals, v->cap * sizeof(*v->refusals));
        }
        v->id[v->n] = (uint64_t)c[0].i;
        v->version[v->n] = (uint64_t)c[1].i;
        v->refusals[v->n++] = (uint64_t)c[2].i;
    }
    return r < 0 ? CAL_ERR : CAL_OK;
}

/* Listings whose source version or count of refusals the target does not
 * have (new or changed); (*refused)[k] says whether the k-th one's count
 * differs. */
static size_t
changed_listings(const struct versions *src, const struct versions *dst, uint64_t **out,
                 bool **refused)
{
    size_t n = 0, j = 0;
    *out = cal_malloc((src->n + 1) * sizeof(**out));
    *refused = cal_malloc((src->n + 1) * sizeof(**refused));
    for (size_t i = 0; i < src->n; i++) {
        while (j < dst->n && dst->id[j] < src->id[i])
            j++;
        bool there = j < dst->n && dst->id[j] == src->id[i];
        /* a listing new to the target compares its refused keys once, even
         * uncounted ones */
        bool more = !there || src->refusals[i] != dst->refusals[j];
        if (!there || dst->version[j] != src->version[i] || more) {
            (*refused)[n] = more;
            (*out)[n++] = src->id[i];
        }
    }
    return n;
}

/* Appends n comma-separated parameter marks and ")" to sql, which has room. */
static void
append_marks(char *sql, size_t off, size_t cap, size_t n)
{
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(sql + off, cap - off, "%s?", i ? "," : "");
    snprintf(sql + off, cap - off, ")");
}

/* Appends to out the rows of t whose column col is one of vals[0..n),
 * n <= LISTING_CHUNK. */
static cal_status
read_rows_by(struct db *db, const struct table_spec *t, const char *col, const uint64_t *vals,
             size_t n, struct rows *out, char *err, size_t errlen)
{
    char sql[768 + LISTING_CHUNK * 2];
    size_t off = (size_t)snprintf(sql, sizeof(sql), "SELECT %s FROM %s WHERE %s AND %s IN (",
                                  t->cols, t->name, t->where, col);
    struct db_val p[LISTING_CHUNK], c[16];
    for (size_t i = 0; i < n; i++)
        p[i] = DB_INT_V(vals[i]);
    append_marks(sql, off, sizeof(sql), n);
    struct db_stmt *st;
    cal_status rc = db_query(db, sql, p, n, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    out->ncols = t->ncols;
    int r;
    while ((r = db_fetch(st, c, t->ncols, err, errlen)) > 0) {
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 256;
            out->v = cal_realloc(out->v, out->cap * t->ncols * sizeof(*out->v));
        }
        struct db_val *row = out->v + out->n++ * t->ncols;
        for (size_t k = 0; k < t->ncols; k++) {
            row[k] = c[k];
            if (c[k].type == DB_STR)
                row[k].s = cal_strndup(c[k].s, c[k].len);
        }
    }
    return r < 0 ? CAL_ERR : CAL_OK;
}

struct keys {
    size_t n, cap;
    uint64_t *v;
};

/* The keys (t->key) of t's rows of the listings ids[0..n), ascending. */
static cal_status
read_keys(struct db *db, const struct table_spec *t, const uint64_t *ids, size_t n,
          struct keys *out, char *err, size_t errlen)
{
    char sql[512 + LISTING_CHUNK * 2];
    size_t off =
        (size_t)snprintf(sql, sizeof(sql), "SELECT %s FROM %s WHERE %s AND listing_id IN (", t->key,
                         t->name, t->where);
    struct db_val p[LISTING_CHUNK], c[1];
    for (size_t i = 0; i < n; i++)
        p[i] = DB_INT_V(ids[i]);
    append_marks(sql, off, sizeof(sql) - 16, n);
    strcat(sql, " ORDER BY 1");
    struct db_stmt *st;
    out->n = 0;
    cal_status rc = db_query(db, sql, p, n, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r;
    while ((r = db_fetch(st, c, 1, err, errlen)) > 0) {
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 256;
            out->v = cal_realloc(out->v, out->cap * sizeof(*out->v));
        }
        out->v[out->n++] = (uint64_t)c[0].i;
    }
    return r < 0 ? CAL_ERR : CAL_OK;
}

/* The rows of t of the listings all[0..nall) (nall <= LISTING_CHUNK), for
 * a refusals_only table of those whose refused[] is set (NULL: all): all
 * of them, or for an immutable table those whose key the target lacks. */
static cal_status
read_rows(struct db *src, struct db *dst, const struct table_spec *t, const uint64_t *all,
          const bool *refused, size_t nall, struct rows *out, char *err, size_t errlen)
{
    uint64_t ids[LISTING_CHUNK];
    size_t n = 0;
    for (size_t i = 0; i < nall; i++)
        if (!t->refusals_only || refused == NULL || refused[i])
            ids[n++] = all[i];
    if (n == 0)
        return CAL_OK;
    if (!t->immutable)
        return read_rows_by(src, t, "listing_id", ids, n, out, err, errlen);
    struct keys sk = {0}, dk = {0};
    cal_status rc = read_keys(src, t, ids, n, &sk, err, errlen);
    if (rc == CAL_OK)
        rc = read_keys(dst, t, ids, n, &dk, err, errlen);
    /* The source's keys the target lacks, in place in sk. */
    size_t nmissing = 0;
    for (size_t i = 0, j = 0; rc == CAL_OK && i < sk.n; i++) {
        while (j < dk.n && dk.v[j] < sk.v[i])
            j++;
        if (j == dk.n || dk.v[j] != sk.v[i])
            sk.v[nmissing++] = sk.v[i];
    }
    for (size_t start = 0; rc == CAL_OK && start < nmissing; start += LISTING_CHUNK) {
        size_t k = nmissing - start < LISTING_CHUNK ? nmissing - start : LISTING_CHUNK;
        rc = read_rows_by(src, t, t->key, sk.v + start, k, out, err, errlen);
    }
    free(sk.v);
    free(dk.v);
    return rc;
}

/* A key row of the target is the copied row's only when it is the same
 * listing's (see struct table_spec). */
#define SAME_OWNER "listing_id = VALUES(listing_id) AND vbucket = VALUES(vbucket)"

/* The ON DUPLICATE KEY UPDATE clause of table t: version-monotonic, a row
 * takes the source's values only when the source's version is newer. So a
 * copier that lost its move lock while another run finished the move
 * (invariant 4) cannot overwrite the new owner's rows with stale ones: every
 * table's version only grows (calendard/store.c). version is assigned last,
 * since MariaDB evaluates the assignments left to right and the ones before
 * must compare with the target's old version. A table keyed apart from
 * listing_id also requires the same owner: versions of two listings do not
 * compare, and another listing's row under the same key is never touched
 * (check_keys reports it). listing_id and vbucket keep their values
 * whichever way the test goes, so it reads the same for every column. Caller
 * frees. */
static char *
upsert_clause(const struct table_spec *t)
{
    const char *newer =
        t->key != NULL ? SAME_OWNER " AND VALUES(version) > version" : "VALUES(version) > version";
    size_t cap = 256 + t->ncols * (32 + strlen(newer)) + strlen(t->cols) * 3, off = 0;
    char *sql = cal_malloc(cap);
    off += (size_t)snprintf(sql, cap, " ON DUPLICATE KEY UPDATE ");
    for (const char *p = t->cols; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        int len = (int)(e - p);
        if (!(len == 7 && strncmp(p, "version", 7) == 0))
            off += (size_t)snprintf(sql + off, cap - off, "%.*s = IF(%s, VALUES(%.*s), %.*s), ",
                                    len, p, newer, len, p, len, p);
        p = e;
    }
    if (t->key != NULL)
        snprintf(sql + off, cap - off,
                 "version = IF(" SAME_OWNER ", GREATEST(version, VALUES(version)), version)");
    else
        snprintf(sql + off, cap - off, "version = GREATEST(version, VALUES(version))");
    return sql;
}

/* Upserts rows into the target, INSERT_CHUNK rows per statement. */
static cal_status
write_rows(struct db *db, const struct table_spec *t, const struct rows *rows, char *err,
           size_t errlen)
{
    size_t cols = t->ncols;
    char *upsert = upsert_clause(t);
    char *sql = cal_malloc(64 + strlen(t->name) + strlen(t->cols) + INSERT_CHUNK * (cols * 2 + 4) +
                           strlen(upsert));
    cal_status rc = CAL_OK;
    for (size_t start = 0; start < rows->n && rc == CAL_OK; start += INSERT_CHUNK) {
        size_t n = rows->n - start < INSERT_CHUNK ? rows->n - start : INSERT_CHUNK;
        size_t off = (size_t)sprintf(sql, "INSERT INTO %s (%s) VALUES ", t->name, t->cols);
        for (size_t i = 0; i < n; i++) {
            sql[off++] = i ? ',' : ' ';
            sql[off++] = '(';
            for (size_t k = 0; k < cols; k++) {
                if (k)
                    sql[off++] = ',';
                sql[off++] = '?';
            }
            sql[off++] = ')';
        }
        strcpy(sql + off, upsert);
        rc = db_query(db, sql, rows->v + start * cols, n * cols, NULL, err, errlen);
    }
    free(upsert);
    free(sql);
    return rc;
}

/* After the upsert of rows of a table keyed apart from listing_id: the rows
 * whose key the target holds for another listing. The upsert left those
 * alone (upsert_clause), so the target lacks them, and a cutover would
 * serve their listing without them. CAL_EDUP when there is one: each is
 * logged, err names the first. */
static cal_status
check_keys(struct db *dst, const struct table_spec *t, const struct rows *rows, char *err,
           size_t errlen)
{
    char sql[256 + INSERT_CHUNK * 2];
    struct db_val p[INSERT_CHUNK], c[3];
    size_t collisions = 0;
    int64_t first[5] = {0}; /* key, listing, vbucket; the target's listing, vbucket */
    cal_status rc = CAL_OK;
    for (size_t start = 0; start < rows->n && rc == CAL_OK; start += INSERT_CHUNK) {
        size_t n = rows->n - start < INSERT_CHUNK ? rows->n - start : INSERT_CHUNK;
        const struct db_val *chunk = rows->v + start * rows->ncols;
        size_t off = (size_t)snprintf(sql, sizeof(sql),
                                      "SELECT %s, listing_id, vbucket FROM %s WHERE %s IN (",
                                      t->key, t->name, t->key);
        for (size_t i = 0; i < n; i++)
            p[i] = chunk[i * rows->ncols];
        append_marks(sql, off, sizeof(sql), n);
        struct db_stmt *st;
        if ((rc = db_query(dst, sql, p, n, &st, err, errlen)) != CAL_OK)
            break;
        int r;
        while ((r = db_fetch(st, c, 3, err, errlen)) > 0) {
            const struct db_val *row = chunk;
            while (row < chunk + n * rows->ncols && row[0].i != c[0].i)
                row += rows->ncols;
            if (row == chunk + n * rows->ncols || (row[1].i == c[1].i && row[2].i == c[2].i))
                continue;
            log_error("key of another listing on the target: not copied",
                      "table=%s %s=%llu listing=%llu vbucket=%llu target_listing=%llu"
                      " target_vbucket=%llu",
                      t->name, t->key, (unsigned long long)row[0].i, (unsigned long long)row[1].i,
                      (unsigned long long)row[2].i, (unsigned long long)c[1].i,
                      (unsigned long long)c[2].i);
            if (collisions++ == 0) {
                int64_t seen[5] = {row[0].i, row[1].i, row[2].i, c[1].i, c[2].i};
                memcpy(first, seen, sizeof(first));
            }
        }
        if (r < 0)
            rc = CAL_ERR;
    }
    if (rc == CAL_OK && collisions > 0) {
        snprintf(err, errlen,
                 "vbucket %llu: %s %llu of listing %llu is taken on the target by listing %llu"
                 " (vbucket %llu): ids collide (%s rows not copied: %zu, each logged); stopped"
                 " before the cutover, the source still owns the vbucket: give one of the two a"
                 " new id (docs/operations.md, \"Colliding reservation ids\"), then resume",
                 (unsigned long long)first[2], t->key, (unsigned long long)first[0],
                 (unsigned long long)first[1], (unsigned long long)first[3],
                 (unsigned long long)first[4], t->name, collisions);
        rc = CAL_EDUP;
    }
    return rc;
}

/* Copies the listed listings with all their rows. Listings rows are read
 * first and written last, each table's write committing on its own: a
 * version on the target then never claims more than the nights and
 * reservations already there, so a change made meanwhile, or a chunk cut
 * short by a crash or an error, shows up as a version difference in the
 * next pass. A key of another listing on the target (check_keys) stops the
 * copy before the chunk's listings rows, so no version claims the rows left
 * out. refused[k] (NULL: all): whether ids[k]'s refused rows and count
 * are read (see read_rows). crash_name: testing only, a crash point after
 * a chunk's first write that sent rows (NULL: none). */
static cal_status
copy_listings(struct cluster *c, struct move_rec *m, struct db *src, struct db *dst,
              const uint64_t *ids, const bool *refused, size_t n, uint64_t *copied,
              const struct move_opts *o, const char *crash_name, char *err, size_t errlen)
{
    struct rows rows[NTABLES];
    cal_status rc = CAL_OK;
    memset(rows, 0, sizeof(rows));
    for (size_t start = 0; start < n && rc == CAL_OK; start += LISTING_CHUNK) {
        size_t k = n - start < LISTING_CHUNK ? n - start : LISTING_CHUNK;
        for (size_t t = 0; t < NTABLES && rc == CAL_OK; t++)
            rc = read_rows(src, dst, &TABLES[t], ids + start, refused ? refused + start : NULL, k,
                           &rows[t], err, errlen);
        for (size_t t = NTABLES; t-- > 0 && rc == CAL_OK;) {
            rc = write_rows(dst, &TABLES[t], &rows[t], err, errlen);
            if (rc == CAL_OK && TABLES[t].key != NULL)
                rc = check_keys(dst, &TABLES[t], &rows[t], err, errlen);
            *copied += rows[t].n;
            /* after the chunk's first write that sent rows */
            if (rc == CAL_OK && rows[t].n > 0 && crash_name != NULL)
                crash_point(o, crash_name);
        }
        for (size_t t = 0; t < NTABLES; t++)
            rows_clear(&rows[t]);
        if (rc == CAL_OK)
            report_due(c, o, m);
    }
    for (size_t t = 0; t < NTABLES; t++)
        rows_free(&rows[t]);
    return rc;
}

/* One catch-up pass: copies what changed; *nchanged says how much. m (and
 * c) get progress lines in a long pass; NULL for none. */
static cal_status
catch_up(struct cluster *c, struct move_rec *m, struct db *src, struct db *dst, uint32_t vbucket,
         uint64_t *copied, size_t *nchanged, size_t limit, const struct move_opts *o,
         const char *crash_name, char *err, size_t errlen)
{
    struct versions sv = {0}, dv = {0};
    uint64_t *ids = NULL;
    bool *refused = NULL;
    cal_status rc = read_versions(src, vbucket, &sv, err, errlen);
    if (rc == CAL_OK)
        rc = read_versions(dst, vbucket, &dv, err, errlen);
    if (rc == CAL_OK && o->after_versions != NULL)
        o->after_versions(vbucket);
    if (rc == CAL_OK) {
        *nchanged = changed_listings(&sv, &dv, &ids, &refused);
        if (*nchanged <= limit)
            rc = copy_listings(c, m, src, dst, ids, refused, *nchanged, copied, o, crash_name, err,
                               errlen);
    }
    free(ids);
    free(refused);
    free(sv.id);
    free(sv.version);
    free(sv.refusals);
    free(dv.id);
    free(dv.version);
    free(dv.refusals);
    return rc;
}

cal_status
move_copy_pass(struct db *src, struct db *dst, uint32_t vbucket, const struct move_opts *opts,
               uint64_t *copied, char *err, size_t errlen)
{
    static const struct move_opts none = {0};
    size_t nchanged;
    return catch_up(NULL, NULL, src, dst, vbucket, copied, &nchanged, SIZE_MAX, opts ? opts : &none,
                    NULL, err, errlen);
}

static const char SQL_OWNS[] = "SELECT epoch FROM vbucket_owner WHERE vbucket = ?";
static const char SQL_OWNS_LOCK[] = "SELECT epoch FROM vbucket_owner WHERE vbucket = ? FOR UPDATE";
static const char SQL_DISOWN[] = "DELETE FROM vbucket_owner WHERE vbucket = ?";
static const char SQL_OWN[] = "INSERT INTO vbucket_owner (vbucket, epoch) VALUES (?, ?)"
                              " ON DUPLICATE KEY UPDATE epoch = VALUES(epoch)";
/* Only from the mapping the move started from: a move of the same vbucket by
 * another run (which the move lock should have kept out) is not undone. */
static const char SQL_CATALOG_FLIP[] =
    "UPDATE vbuckets SET shard_id = ?, epoch = ?, state = 'active'"
    " WHERE vbucket = ? AND shard_id = ? AND epoch = ?";
static const char SQL_VB_STATE[] = "UPDATE vbuckets SET state = ? WHERE vbucket = ?";

static cal_status
owns(struct db *db, const char *sql, uint32_t vbucket, bool *owned, char *err, size_t errlen)
{
    struct db_val p[1] = {DB_INT_V(vbucket)}, c[1];
    return cluster_query_row(db, sql, p, 1, c, 1, owned, err, errlen);
}

/* m (and c, o) get progress lines in a long delete; NULL for none. */
static cal_status
delete_vbucket_rows(struct cluster *c, const struct move_opts *o, struct move_rec *m, struct db *db,
                    uint32_t vbucket, char *err, size_t errlen)
{
    static const char *const sql[] = {
        "DELETE FROM nights WHERE vbucket = ? LIMIT 2000",
        "DELETE FROM reservations WHERE vbucket = ? LIMIT 2000",
        "DELETE FROM listing_refusals WHERE vbucket = ? LIMIT 2000",
        "DELETE FROM listings WHERE vbucket = ? LIMIT 2000",
    };
    struct db_val p[1] = {DB_INT_V(vbucket)};
    for (size_t t = 0; t < CAL_ARRAY_LEN(sql); t++) {
        for (;;) {
            struct db_stmt *st;
            cal_status rc = db_query(db, sql[t], p, 1, &st, err, errlen);
            if (rc != CAL_OK)
                return rc;
            if (db_affected_rows(st) == 0)
                break;
            report_due(c, o, m);
        }
    }
    return CAL_OK;
}

/* Who holds a named lock (sql: a LOCK_HOLDER_SQL of the lock's name, of
 * one parameter, vbucket): its session id, where the session comes from,
 * and how long it has been idle or busy. A run whose machine died or lost
 * its network keeps its sessions, and their locks, until the server drops
 * them (wait_timeout, 8 hours by default): the operator who knows that run
 * is gone can KILL the session. Fills buf with "" when the lock is free by
 * now, the server does not say, or the text does not fit whole. */
static void
lock_holder(struct db *db, const char *sql, uint32_t vbucket, const char *server, char *buf,
            size_t size)
{
    struct db_val p[1] = {DB_INT_V(vbucket)}, col[4];
    bool found = false;
    char why[256];
    buf[0] = '\0';
    if (cluster_query_row(db, sql, p, 1, col, 4, &found, why, sizeof(why)) != CAL_OK || !found ||
        col[0].type != DB_INT)
        return;
    long long id = (long long)col[0].i;
    char from[128] = "";
    if (col[1].type == DB_STR && col[2].type == DB_INT)
        snprintf(from, sizeof(from), ", from %.64s, %s for %lld s", col[1].s,
                 col[3].type == DB_STR && strcmp(col[3].s, "Sleep") == 0 ? "idle" : "busy",
                 (long long)col[2].i);
    /* Whole or not at all: a KILL whose id was cut would name another
     * session. */
    int n = snprintf(buf, size,
                     "; session %lld of %s%s, holds it: if no calendar-rebalance runs there any"
                     " more, KILL %lld on %s",
                     id, server, from, id, server);
    if (n < 0 || (size_t)n >= size)
        buf[0] = '\0';
}

#define LOCK_HOLDER_SQL(name)                                                                      \
    "SELECT l.id, p.HOST, p.TIME, p.COMMAND FROM (SELECT IS_USED_LOCK(" name ") AS id) l"          \
    " LEFT JOIN information_schema.PROCESSLIST p ON p.ID = l.id"

/* A vbucket's rows on one shard are written (copied, cleared) by one run at
 * a time: a named lock of the shard session the run writes them through.
 * The move lock alone does not do it: it is the catalog session's, and a
 * run whose catalog session died writes on until its next check, which
 * can be a whole copy pass later. Beside another run's clearing of the
 * target, its listings row (written last) could outlive the nights the
 * other run deleted, and no later pass would copy them again (their
 * versions match). While the stale run's shard session lives it holds the
 * lock, and once that session is gone the run cannot write. */
/* Named after the database too: a server may hold several shards. */
static const char SQL_ROWS_LOCK[] =
    "SELECT GET_LOCK(CONCAT('calendar_rows_', CRC32(DATABASE()), '_', ?), ?)";
static const char SQL_ROWS_UNLOCK[] =
    "SELECT RELEASE_LOCK(CONCAT('calendar_rows_', CRC32(DATABASE()), '_', ?))";
static const char SQL_ROWS_LOCK_HOLDER[] =
    LOCK_HOLDER_SQL("CONCAT('calendar_rows_', CRC32(DATABASE()), '_', ?)");

static cal_status
lock_rows(struct db *db, uint32_t vbucket, uint32_t shard_id, char *err, size_t errlen)
{
    struct db_val p[2] = {DB_INT_V(vbucket), DB_INT_V(ROWS_LOCK_WAIT_S)}, col[1];
    bool found = false;
    cal_status rc = cluster_query_row(db, SQL_ROWS_LOCK, p, 2, col, 1, &found, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (!found || col[0].type != DB_INT || col[0].i != 1) {
        char server[32], who[384];
        snprintf(server, sizeof(server), "shard %u's server", shard_id);
        lock_holder(db, SQL_ROWS_LOCK_HOLDER, vbucket, server, who, sizeof(who));
        snprintf(err, errlen,
                 "vbucket %u: another run still writes its rows on shard %u (a run that lost"
                 " its move lock stops before its next step%s); try again",
                 vbucket, shard_id, who);
        return CAL_EAGAIN;
    }
    return CAL_OK;
}

static void
unlock_rows(struct db *db, uint32_t vbucket)
{
    char err[256];
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(vbucket)};
    if (db_query(db, SQL_ROWS_UNLOCK, p, 1, &st, err, sizeof(err)) == CAL_OK)
        cluster_drain(st);
}

static cal_status
phase_copy(struct cluster *c, struct move_rec *m, struct db *src, struct db *dst,
           const struct move_opts *o, char *err, size_t errlen)
{
    bool owned;
    cal_status rc = owns(dst, SQL_OWNS, m->vbucket, &owned, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (owned) {
        snprintf(err, errlen, "target shard %u already owns vbucket %u", m->target, m->vbucket);
        return CAL_EINVAL;
    }
    /* Leftovers of an earlier, abandoned copy would never be overwritten.
     * The copy starts again from an empty target, and so does its count
     * (a resumed copy read a partial one from the journal). */
    m->rows_copied = 0;
    if ((rc = check_move_lock(c, o, m, "copy-clear", err, errlen)) != CAL_OK ||
        (rc = delete_vbucket_rows(c, o, m, dst, m->vbucket, err, errlen)) != CAL_OK)
        return rc;
    struct db_val p[2] = {DB_CSTR_V("moving"), DB_INT_V(m->vbucket)};
    if ((rc = db_query(c->catalog, SQL_VB_STATE, p, 2, NULL, err, errlen)) != CAL_OK)
        return rc;
    size_t nchanged = SIZE_MAX;
    for (int pass = 0; pass < CATCHUP_PASSES && nchanged > CUTOVER_DELTA_MAX / 2; pass++) {
        if ((rc = check_move_lock(c, o, m, "copy-pass", err, errlen)) != CAL_OK)
            return rc;
        rc = catch_up(c, m, src, dst, m->vbucket, &m->rows_copied, &nchanged, SIZE_MAX, o, NULL,
                      err, errlen);
        if (rc != CAL_OK)
            return rc;
        report(o, m);
    }
    return journal(c, m, "cutover", err, errlen);
}

/* The fenced cutover on the source; see move.h. */
static cal_status
phase_cutover(struct cluster *c, struct move_rec *m, struct db *src, struct db *dst,
              const struct move_opts *o, char *err, size_t errlen)
{
    bool owned;
    char last[256] = ""; /* why the last try did not cut over */
    cal_status rc = owns(src, SQL_OWNS, m->vbucket, &owned, err, errlen);
    if (rc != CAL_OK || !owned)
        return rc; /* done before a crash: the source let go already */
    for (int attempt = 0; attempt < CUTOVER_TRIES; attempt++) {
        size_t nchanged = 0;
        if ((rc = check_move_lock(c, o, m, "cutover", err, errlen)) != CAL_OK)
            return rc;
        if ((rc = db_begin(src, err, errlen)) != CAL_OK)
            return rc;
        /* Waits for in-flight writes (they hold the row in share mode) and
         * holds every new write of the vbucket until COMMIT. New writes
         * queue behind the lock from the moment it is asked for: the write
         * pause reported starts there. The freeze bound counts from the
         * grant, since a longer wait is the in-flight writes', not ours. */
        uint64_t frozen_at = cal_mono_us();
        rc = owns(src, SQL_OWNS_LOCK, m->vbucket, &owned, err, errlen);
        if (rc == CAL_ECONFLICT) {
            /* Lock wait timeout (or deadlock): a long write holds the
             * fence row. One of the tries; the queued writes go on. */
            db_rollback(src);
            log_info("cutover lock wait timed out, retrying", "vbucket=%u try=%d error=\"%s\"",
                     m->vbucket, attempt + 1, err);
            cal_strlcpy(last, err, sizeof(last));
            continue;
        }
        if (rc != CAL_OK)
            goto fail;
        uint64_t granted_at = cal_mono_us();
        rc = catch_up(NULL, NULL, src, dst, m->vbucket, &m->rows_copied, &nchanged,
                      CUTOVER_DELTA_MAX, o, "cutover-chunk", err, errlen);
        if (rc != CAL_OK)
            goto fail;
        /* Postponing helps only when there was something to copy: too much
         * (not copied), or a copy that took longer than the bound. */
        if (nchanged > CUTOVER_DELTA_MAX ||
            (nchanged > 0 && o->max_freeze_ms > 0 &&
             cal_mono_us() - granted_at > o->max_freeze_ms * 1000ULL)) {
            /* Too much to copy under the lock: release, catch up, try again. */
            db_rollback(src);
            log_info("cutover postponed", "vbucket=%u changed_listings=%zu", m->vbucket, nchanged);
            if ((rc = check_move_lock(c, o, m, "cutover-catch-up", err, errlen)) != CAL_OK)
                return rc;
            rc = catch_up(c, m, src, dst, m->vbucket, &m->rows_copied, &nchanged, SIZE_MAX, o, NULL,
                          err, errlen);
            if (rc != CAL_OK)
                return rc;
            cal_strlcpy(last,
                        nchanged > CUTOVER_DELTA_MAX ? "too many listings changed"
                                                     : "the locked copy exceeded max_freeze_ms",
                        sizeof(last));
            continue;
        }
        struct db_val p[1] = {DB_INT_V(m->vbucket)};
        if ((rc = db_query(src, SQL_DISOWN, p, 1, NULL, err, errlen)) != CAL_OK)
            goto fail;
        if ((rc = check_move_lock(c, o, m, "cutover-commit", err, errlen)) != CAL_OK)
            goto fail;
        if ((rc = db_commit(src, err, errlen)) != CAL_OK)
            return rc;
        m->frozen_at_us = frozen_at;
        crash_point(o, "cutover");
        return CAL_OK;
    fail:
        db_rollback(src);
        return rc;
    }
    snprintf(err, errlen,
             "vbucket %u kept changing or its fence row stayed locked: no cutover after %d tries"
             " (last: %s)",
             m->vbucket, CUTOVER_TRIES, last);
    return CAL_EAGAIN;
}

static cal_status
phase_target_and_catalog(struct cluster *c, struct move_rec *m, struct db *dst,
                         const struct move_opts *o, char *err, size_t errlen)
{
    uint64_t epoch = m->old_epoch + 1;
    struct db_val p[5] = {DB_INT_V(m->vbucket), DB_INT_V(epoch)};
    cal_status rc = check_move_lock(c, o, m, "target", err, errlen);
    if (rc != CAL_OK)
        return rc;
    if ((rc = db_query(dst, SQL_OWN, p, 2, NULL, err, errlen)) != CAL_OK)
        return rc;
    crash_point(o, "target");
    /* The catalog flip and the journal in one transaction. */
    if ((rc = db_begin(c->catalog, err, errlen)) != CAL_OK)
        return rc;
    p[0] = DB_INT_V(m->target);
    p[1] = DB_INT_V(epoch);
    p[2] = DB_INT_V(m->vbucket);
    p[3] = DB_INT_V(m->source);
    p[4] = DB_INT_V(m->old_epoch);
    struct db_stmt *st;
    if ((rc = db_query(c->catalog, SQL_CATALOG_FLIP, p, 5, &st, err, errlen)) != CAL_OK)
        goto fail;
    if (db_affected_rows(st) != 1) {
        snprintf(err, errlen,
                 "the catalog no longer maps vbucket %u to shard %u at epoch %llu: moved by"
                 " another run",
                 m->vbucket, m->source, (unsigned long long)m->old_epoch);
        rc = CAL_ECONFLICT;
        goto fail;
    }
    /* The write pause ends here: the catalog names an owner again. After a
     * crash it lasted until this resume and is not measured. */
    m->freeze_ms = m->frozen_at_us ? (double)(cal_mono_us() - m->frozen_at_us) / 1000.0 : -1;
    if ((rc = journal(c, m, "cleanup", err, errlen)) != CAL_OK)
        goto fail;
    rc = db_commit(c->catalog, err, errlen);
    crash_point(o, "catalog");
    return rc;
fail:
    db_rollback(c->catalog);
    return rc;
}

/* The copy and the cutover, the target's rows locked (lock_rows). */
static cal_status
copy_and_cutover(struct cluster *c, struct move_rec *m, struct db *src, struct db *dst,
                 const struct move_opts *o, char *err, size_t errlen)
{
    cal_status rc;
    if (strcmp(m->phase, "copy") == 0) {
        report(o, m);
        if ((rc = phase_copy(c, m, src, dst, o, err, errlen)) != CAL_OK)
            return rc;
        crash_point(o, "copy");
    }
    report(o, m);
    if ((rc = phase_cutover(c, m, src, dst, o, err, errlen)) != CAL_OK)
        return rc;
    return phase_target_and_catalog(c, m, dst, o, err, errlen);
}

struct check_progress {
    struct cluster *c;
    const struct move_opts *o;
    struct move_rec *m;
};

/* verify_copy's after_table: a progress line when one is due. */
static void
copy_checked(void *arg, const struct verify_report *rep)
{
    struct check_progress *cp = arg;
    cp->m->rows_checked = rep->checked;
    report_due(cp->c, cp->o, cp->m);
}

/* The cleanup, the source's rows locked (lock_rows). */
static cal_status
phase_cleanup(struct cluster *c, struct move_rec *m, struct db *src, struct db *dst,
              const struct move_opts *o, char *err, size_t errlen)
{
    cal_status rc;
    m->rows_checked = 0; /* a cleanup run again checks again */
    report(o, m);
    /* The source's copy is the last evidence of what was moved: deleted
     * only once the target holds all of it (or newer). Refused, the
     * move stays in cleanup, and resume checks again. */
    struct verify_report vr;
    if ((rc = check_move_lock(c, o, m, "cleanup-verify", err, errlen)) != CAL_OK)
        return rc;
    struct check_progress cp = {.c = c, .o = o, .m = m};
    if ((rc = verify_copy(dst, src, m->vbucket, m->source, copy_checked, &cp, &vr, stderr, err,
                          errlen)) != CAL_OK)
        return rc;
    if (vr.missing > 0 || vr.different > 0) {
        snprintf(err, errlen,
                 "vbucket %u: %llu rows of the source are missing on the target (%llu of"
                 " them because another listing holds their key there: ids collide) and"
                 " %llu differ (listed above): the source's rows are kept; compare them,"
                 " then resume",
                 m->vbucket, (unsigned long long)vr.missing, (unsigned long long)vr.collisions,
                 (unsigned long long)vr.different);
        return CAL_ERR;
    }
    /* Again: the check reads the whole vbucket twice, a while. */
    if ((rc = check_move_lock(c, o, m, "cleanup-delete", err, errlen)) != CAL_OK)
        return rc;
    if ((rc = delete_vbucket_rows(c, o, m, src, m->vbucket, err, errlen)) != CAL_OK)
        return rc;
    if ((rc = journal(c, m, "done", err, errlen)) != CAL_OK)
        return rc;
    crash_point(o, "cleanup");
    report(o, m);
    return CAL_OK;
}

static cal_status
run_move(struct cluster *c, struct move_rec *m, const struct move_opts *o, char *err, size_t errlen)
{
    static const char *const phases[] = {"copy", "cutover", "cleanup", "done"};
    size_t known = 0;
    while (known < CAL_ARRAY_LEN(phases) && strcmp(m->phase, phases[known]) != 0)
        known++;
    if (known == CAL_ARRAY_LEN(phases)) {
        /* 'abandoned' by another run, which took the lock meanwhile. */
        snprintf(err, errlen, "move %llu of vbucket %u is %s in the journal: not moved",
                 (unsigned long long)m->move_id, m->vbucket, m->phase);
        return CAL_ECONFLICT;
    }
    struct db *src = cluster_shard(c, m->source, err, errlen);
    struct db *dst = src ? cluster_shard(c, m->target, err, errlen) : NULL;
    cal_status rc = CAL_OK;
    if (src == NULL || dst == NULL)
        return CAL_EUNAVAIL;
    if (strcmp(m->phase, "copy") == 0 || strcmp(m->phase, "cutover") == 0) {
        if ((rc = lock_rows(dst, m->vbucket, m->target, err, errlen)) != CAL_OK)
            return rc;
        rc = copy_and_cutover(c, m, src, dst, o, err, errlen);
        unlock_rows(dst, m->vbucket);
        if (rc != CAL_OK)
            return rc;
    }
    if (strcmp(m->phase, "cleanup") == 0) {
        if ((rc = lock_rows(src, m->vbucket, m->source, err, errlen)) != CAL_OK)
            return rc;
        rc = phase_cleanup(c, m, src, dst, o, err, errlen);
        unlock_rows(src, m->vbucket);
        if (rc != CAL_OK)
            return rc;
    }
    return cluster_reload(c, err, errlen);
}

/* The journal's columns of a move, as move_rec_from_row() reads them. */
#define MOVE_REC_COLS "move_id, vbucket, source_shard, target_shard, old_epoch, phase, rows_copied"
#define MOVE_REC_NCOLS 7
static const char SQL_OPEN_MOVES[] =
    "SELECT " MOVE_REC_COLS " FROM moves WHERE phase NOT IN ('done', 'abandoned')"
    " ORDER BY move_id";
/* m's journal fields from a row of MOVE_REC_COLS. */
static void
move_rec_from_row(struct move_rec *m, const struct db_val *col)
{
    m->move_id = (uint64_t)col[0].i;
    m->vbucket = (uint32_t)col[1].i;
    m->source = (uint32_t)col[2].i;
    m->target = (uint32_t)col[3].i;
    m->old_epoch = (uint64_t)col[4].i;
    cal_strlcpy(m->phase, col[5].type == DB_STR ? col[5].s : "", sizeof(m->phase));
    m->rows_copied = (uint64_t)col[6].i;
}

static const char SQL_OPEN_MOVE_OF[] =
    "SELECT move_id FROM moves WHERE phase NOT IN ('done', 'abandoned') AND vbucket = ?";
/* CAL_EINVAL, "run resume", when a move of vbucket is journaled and not
 * finished (call it holding the vbucket's move lock: then no run is
 * finishing it). */
static cal_status
refuse_open_move(struct cluster *c, uint32_t vbucket, char *err, size_t errlen)
{
    struct db_val p[1] = {DB_INT_V(vbucket)}, col[1];
    bool open;
    cal_status rc =
        cluster_query_row(c->catalog, SQL_OPEN_MOVE_OF, p, 1, col, 1, &open, err, errlen);
    if (rc == CAL_OK && open) {
        snprintf(err, errlen, "vbucket %u has an unfinished move: run resume", vbucket);
        rc = CAL_EINVAL;
    }
    return rc;
}

/* Journaled only while the target is active, its catalog row share-locked
 * until the insert commits: drain-shard and remove-shard (which lock the row
 * for update) either come first and the move is refused, or come after and
 * see it (remove-shard refuses, drain-shard tells of it). */
static const char SQL_NEW_MOVE[] =
    "INSERT INTO moves (vbucket, source_shard, target_shard, old_epoch, phase)"
    " SELECT ?, ?, ?, ?, 'copy' FROM shards WHERE shard_id = ? AND state = 'active'"
    " LOCK IN SHARE MODE";
static const char SQL_MOVE_PHASE[] = "SELECT phase, rows_copied FROM moves WHERE move_id = ?";
/* One run at a time per vbucket, across processes: a named lock of the
 * catalog session, held from before the open-move check to the end of the
 * move (a lost session lets it go, like a crash). */
static const char SQL_MOVE_LOCK[] =
    "SELECT GET_LOCK(CONCAT('calendar_move_', ?), ?), CONNECTION_ID()";
static const char SQL_MOVE_LOCK_HOLDER[] =
    "SELECT IS_USED_LOCK(CONCAT('calendar_move_', ?)), CONNECTION_ID()";
static const char SQL_MOVE_UNLOCK[] = "SELECT RELEASE_LOCK(CONCAT('calendar_move_', ?))";
static const char SQL_MOVE_LOCK_WHO[] = LOCK_HOLDER_SQL("CONCAT('calendar_move_', ?)");
/* Beside the move lock, a session holds a lock named after its run: after a
 * catalog restart connection ids start again, and an id alone could name
 * another run's session. */
static const char SQL_RUN_LOCK[] = "SELECT GET_LOCK(CONCAT('calendar_run_', ?), 0)";
static const char SQL_RUN_UNLOCK[] = "SELECT RELEASE_LOCK(CONCAT('calendar_run_', ?))";
static const char SQL_RUN_HOLDER[] = "SELECT IS_USED_LOCK(CONCAT('calendar_run_', ?))";

/* Takes m's move lock, waiting at most wait_s for its holder. */
static cal_status
lock_vbucket(struct cluster *c, struct move_rec *m, unsigned wait_s, char *err, size_t errlen)
{
    struct db_val p[2] = {DB_INT_V(m->vbucket), DB_INT_V(wait_s)}, col[2];
    bool found;
    cal_status rc = cluster_query_row(c->catalog, SQL_MOVE_LOCK, p, 2, col, 2, &found, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (!found || col[0].type != DB_INT || col[0].i != 1) {
        char who[384];
        lock_holder(c->catalog, SQL_MOVE_LOCK_WHO, m->vbucket, "the catalog", who, sizeof(who));
        snprintf(err, errlen, "vbucket %u is being moved by another calendar-rebalance%s",
                 m->vbucket, who);
        return CAL_EAGAIN;
    }
    m->lock_session = col[1].type == DB_INT ? (uint64_t)col[1].i : 0;
    /* Without it, only an old session of this run is never killed. */
    if (m->run_token == 0)
        m->run_token = cal_rand64() >> 1;
    struct db_val t[1] = {DB_INT_V((int64_t)m->run_token)};
    (void)cluster_query_row(c->catalog, SQL_RUN_LOCK, t, 1, col, 1, &found, err, errlen);
    return CAL_OK;
}

static void
unlock_vbucket(struct cluster *c, const struct move_rec *m)
{
    char err[256];
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(m->vbucket)}, t[1] = {DB_INT_V((int64_t)m->run_token)};
    if (db_query(c->catalog, SQL_MOVE_UNLOCK, p, 1, &st, err, sizeof(err)) == CAL_OK)
        cluster_drain(st);
    if (m->run_token != 0 &&
        db_query(c->catalog, SQL_RUN_UNLOCK, t, 1, &st, err, sizeof(err)) == CAL_OK)
        cluster_drain(st);
}

/* m's journaled phase, read again under its move lock: another run may
 * have gone on meanwhile. */
static cal_status
reread_phase(struct cluster *c, struct move_rec *m, char *err, size_t errlen)
{
    struct db_val p[1] = {DB_INT_V(m->move_id)}, col[2];
    bool found;
    cal_status rc =
        cluster_query_row(c->catalog, SQL_MOVE_PHASE, p, 1, col, 2, &found, err, errlen);
    if (rc == CAL_OK && found && col[0].type == DB_STR)
        cal_strlcpy(m->phase, col[0].s, sizeof(m->phase));
    if (rc == CAL_OK && found && col[1].type == DB_INT)
        m->rows_copied = (uint64_t)col[1].i;
    return rc;
}

/* The session holding m's run lock, 0 when none does. */
static int64_t
run_lock_holder(struct cluster *c, const struct move_rec *m)
{
    char err[256];
    struct db_val p[1] = {DB_INT_V((int64_t)m->run_token)}, col[1];
    bool found;
    if (m->run_token == 0 || cluster_query_row(c->catalog, SQL_RUN_HOLDER, p, 1, col, 1, &found,
                                               err, sizeof(err)) != CAL_OK)
        return 0;
    return found && col[0].type == DB_INT ? col[0].i : 0;
}

/* Takes m's move lock again after the run lost it, on a new catalog
 * session if the old one broke. The old session can outlive the client's
 * side of it (a network partition, a read timeout: the catalog keeps it
 * until wait_timeout) and still hold the lock: when it holds the run's own
 * lock too, it is this run's, and it is killed first. A lock this session
 * still holds (only its check failed) is not taken twice: named locks
 * count. */
static cal_status
retake_lock(struct cluster *c, struct move_rec *m, char *err, size_t errlen)
{
    cal_status rc = CAL_OK;
    if (db_broken(c->catalog) && (rc = cluster_reconnect_catalog(c, err, errlen)) != CAL_OK)
        return rc;
    struct db_val p[1] = {DB_INT_V(m->vbucket)}, col[2];
    bool found;
    if ((rc = cluster_query_row(c->catalog, SQL_MOVE_LOCK_HOLDER, p, 1, col, 2, &found, err,
                                errlen)) != CAL_OK)
        return rc;
    if (!found) {
        snprintf(err, errlen, "the catalog answered no row for the lock's holder");
        return CAL_ERR;
    }
    int64_t holder = col[0].type == DB_INT ? col[0].i : 0;
    if (holder != 0 && col[1].type == DB_INT && holder == col[1].i)
        return CAL_OK;
    if (holder != 0 && (uint64_t)holder == m->lock_session && run_lock_holder(c, m) == holder) {
        char sql[64], why[256];
        snprintf(sql, sizeof(sql), "KILL CONNECTION %lld", (long long)holder);
        if (db_exec(c->catalog, sql, why, sizeof(why)) == CAL_OK)
            log_warn("killed this run's old catalog session, which held the move lock",
                     "move=%llu vbucket=%u session=%lld", (unsigned long long)m->move_id,
                     m->vbucket, (long long)holder);
        else if (db_broken(c->catalog)) {
            snprintf(err, errlen, "%s", why);
            return CAL_EUNAVAIL;
        } /* else gone by itself meanwhile: the lock is free */
    }
    return lock_vbucket(c, m, RELOCK_WAIT_S, err, errlen);
}

/* run_move, which stops when it cannot confirm its move lock. Most often
 * its catalog session died (a network blip, a catalog restart); then no
 * other run holds the lock, and between the cutover and the catalog flip
 * no shard owns the vbucket: instead of leaving that to an operator's
 * resume, the run takes the lock again on a new session and goes on from
 * the journaled phase, as resume would. The same when a shard's answer was
 * lost (CAL_EUNKNOWN: the source's connection dropped in the cutover's
 * COMMIT, which may have landed and left the vbucket to nobody): the phase
 * run again finds the source's fence row gone, or cuts over again. It stops
 * for good when another run holds the lock, or the catalog cannot be
 * reached. */
static cal_status
run_move_relocking(struct cluster *c, struct move_rec *m, const struct move_opts *o, char *err,
                   size_t errlen)
{
    cal_status rc = run_move(c, m, o, err, errlen);
    for (int tries = 0; rc != CAL_OK && tries < RELOCK_TRIES; tries++) {
        bool lost = m->lost_lock || db_broken(c->catalog);
        if (!lost && rc != CAL_EUNKNOWN)
            break;
        char why[512];
        bool lost_lock = m->lost_lock;
        m->lost_lock = false;
        log_warn(lost ? "move lock lost, taking it again"
                      : "a shard's answer was lost, going on from the journal",
                 "move=%llu vbucket=%u phase=%s error=\"%s\"", (unsigned long long)m->move_id,
                 m->vbucket, m->phase, err);
        cal_status lrc = retake_lock(c, m, why, sizeof(why));
        if (lrc == CAL_OK)
            lrc = reread_phase(c, m, why, sizeof(why));
        if (lrc != CAL_OK) {
            size_t len = strlen(err);
            snprintf(err + len, errlen - len, "; taking the lock again: %s", why);
            /* Another run holds the lock, or the catalog is down: try
             * again later (exit 4), as for a lock held at the start. */
            if (move_status_retry(lrc) && (lost_lock || move_status_retry(rc)))
                rc = lrc;
            break;
        }
        log_info(lost ? "move lock taken again" : "move going on", "move=%llu vbucket=%u phase=%s",
                 (unsigned long long)m->move_id, m->vbucket, m->phase);
        rc = strcmp(m->phase, "done") == 0 ? cluster_reload(c, err, errlen)
                                           : run_move(c, m, o, err, errlen);
    }
    return rc;
}

/* Journals and runs a new move (the vbucket's move lock held). */
static cal_status
start_move(struct cluster *c, struct move_rec *m, const struct move_opts *o, char *err,
           size_t errlen)
{
    /* The map as of now, under the lock: an earlier run may have moved it. */
    cal_status rc = cluster_reload(c, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (c->map->owner[m->vbucket] != m->source || c->map->epoch[m->vbucket] != m->old_epoch) {
        snprintf(err, errlen, "vbucket %u moved meanwhile (now on shard %u)", m->vbucket,
                 c->map->owner[m->vbucket]);
        return CAL_EINVAL;
    }
    struct db_stmt *st;
    struct db_val p[5] = {DB_INT_V(m->vbucket), DB_INT_V(m->source), DB_INT_V(m->target),
                          DB_INT_V(m->old_epoch), DB_INT_V(m->target)};
    if ((rc = refuse_open_move(c, m->vbucket, err, errlen)) != CAL_OK)
        return rc;
    /* A journaled move blocks every other move of the vbucket until it is
     * finished: journal only one that can start, with both shards reachable
     * and the target not owning the vbucket (phase_copy checks that again
     * for a resume). */
    struct db *src = cluster_shard(c, m->source, err, errlen);
    struct db *dst = src ? cluster_shard(c, m->target, err, errlen) : NULL;
    bool owned;
    if (src == NULL || dst == NULL)
        return CAL_EUNAVAIL;
    if ((rc = owns(dst, SQL_OWNS, m->vbucket, &owned, err, errlen)) != CAL_OK)
        return rc;
    if (owned) {
        snprintf(err, errlen, "target shard %u already owns vbucket %u (fence row): not moved",
                 m->target, m->vbucket);
        return CAL_EINVAL;
    }
    if ((rc = db_query(c->catalog, SQL_NEW_MOVE, p, 5, &st, err, errlen)) != CAL_OK)
        return rc;
    if (db_affected_rows(st) != 1) {
        snprintf(err, errlen, "target shard %u is not active (draining or removed): not moved",
                 m->target);
        return CAL_EINVAL;
    }
    m->move_id = db_insert_id(st);
    cal_strlcpy(m->phase, "copy", sizeof(m->phase));
    return run_move_relocking(c, m, o, err, errlen);
}

cal_status
move_vbucket(struct cluster *c, uint32_t vbucket, uint32_t target, const struct move_opts *o,
             struct move_progress *out, char *err, size_t errlen)
{
    cal_status rc = cluster_reload(c, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (vbucket >= c->map->num_vbuckets || shardmap_shard(c->map, target) == NULL) {
        snprintf(err, errlen, "no vbucket %u or no shard %u", vbucket, target);
        return CAL_EINVAL;
    }
    struct move_rec m = {.vbucket = vbucket,
                         .source = c->map->owner[vbucket],
                         .target = target,
                         .old_epoch = c->map->epoch[vbucket],
                         .freeze_ms = -1,
                         .start_us = cal_mono_us()};
    if ((rc = lock_vbucket(c, &m, 0, err, errlen)) != CAL_OK)
        return rc;
    if (m.source == target) {
        /* Asked twice, or moved by another run since a plan: done, unless
         * a move of it is still to finish (under the lock: no other run's). */
        rc = refuse_open_move(c, vbucket, err, errlen);
        unlock_vbucket(c, &m);
        if (rc == CAL_OK && out != NULL)
            *out = (struct move_progress){.vbucket = vbucket,
                                          .source = target,
                                          .target = target,
                                          .phase = "none",
                                          .freeze_ms = -1};
        return rc;
    }
    rc = start_move(c, &m, o, err, errlen);
    unlock_vbucket(c, &m);
    if (out != NULL) {
        out->move_id = m.move_id;
        out->vbucket = vbucket;
        out->source = m.source;
        out->target = target;
        out->phase = rc == CAL_OK ? "done" : "failed";
        out->rows_copied = m.rows_copied;
        out->rows_checked = m.rows_checked;
        out->elapsed_s = (double)(cal_mono_us() - m.start_us) / 1e6;
        out->freeze_ms = m.freeze_ms;
    }
    return rc;
}

bool
move_status_retry(cal_status st)
{
    return st == CAL_EAGAIN || st == CAL_EUNAVAIL || st == CAL_EUNKNOWN;
}

cal_status
move_resume(struct cluster *c, const struct move_opts *o, unsigned *resumed, char *err,
            size_t errlen)
{
    struct db_stmt *st;
    struct db_val col[MOVE_REC_NCOLS];
    struct move_rec *recs = NULL;
    size_t n = 0, cap = 0;
    *resumed = 0;
    cal_status rc = db_query(c->catalog, SQL_OPEN_MOVES, NULL, 0, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r;
    while ((r = db_fetch(st, col, MOVE_REC_NCOLS, err, errlen)) > 0) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            recs = cal_realloc(recs, cap * sizeof(*recs));
        }
        struct move_rec *m = &recs[n++];
        memset(m, 0, sizeof(*m));
        move_rec_from_row(m, col);
        m->freeze_ms = -1;
        m->start_us = cal_mono_us();
    }
    /* One move that cannot finish (its cleanup refused, its shard down)
     * must not keep the others unfinished: each is tried, the first
     * failure is named, and the status is the first one that is not a
     * try-again one (move_status_retry), if any. */
    cal_status worst = CAL_OK;
    unsigned failed = 0;
    for (size_t i = 0; r >= 0 && i < n; i++) {
        char e[1024] = "";
        recs[i].start_us = cal_mono_us(); /* its elapsed_s is its own, not the moves' before */
        if (o->before_lock_check != NULL)
            o->before_lock_check("resume-lock", recs[i].vbucket);
        cal_status mrc = lock_vbucket(c, &recs[i], 0, e, sizeof(e));
        if (mrc == CAL_OK) {
            mrc = reread_phase(c, &recs[i], e, sizeof(e));
            /* Finished or abandoned by another run since the listing. */
            if (mrc == CAL_OK && strcmp(recs[i].phase, "done") != 0 &&
                strcmp(recs[i].phase, "abandoned") != 0) {
                log_info("resuming move", "move=%llu vbucket=%u phase=%s",
                         (unsigned long long)recs[i].move_id, recs[i].vbucket, recs[i].phase);
                mrc = run_move_relocking(c, &recs[i], o, e, sizeof(e));
                if (mrc == CAL_OK)
                    (*resumed)++;
            }
            unlock_vbucket(c, &recs[i]);
        }
        if (mrc != CAL_OK) {
            log_error("move not finished", "move=%llu vbucket=%u phase=%s error=\"%s\"",
                      (unsigned long long)recs[i].move_id, recs[i].vbucket, recs[i].phase, e);
            if (worst == CAL_OK || (move_status_retry(worst) && !move_status_retry(mrc)))
                worst = mrc;
            if (failed++ == 0) {
                snprintf(err, errlen, "move %llu (vbucket %u): %s",
                         (unsigned long long)recs[i].move_id, recs[i].vbucket, e);
            }
            if (db_broken(c->catalog))
                break; /* the others would fail the same way */
        }
    }
    if (failed > 1) {
        size_t len = strlen(err);
        snprintf(err + len, errlen - len, "; %u more moves not finished (see the log)", failed - 1);
    }
    rc = worst;
    free(recs);
    return r < 0 ? CAL_ERR : rc;
}

static const char SQL_OPEN_MOVE_REC[] =
    "SELECT " MOVE_REC_COLS " FROM moves WHERE phase NOT IN ('done', 'abandoned') AND vbucket = ?";

static cal_status
past_cutover(const struct move_rec *m, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "move %llu of vbucket %u (phase %s) is past its cutover: the source gave the vbucket"
             " up; only resume can finish it",
             (unsigned long long)m->move_id, m->vbucket, m->phase);
    return CAL_EINVAL;
}

/* The catalog's side of an abandon: state back to active, journal. */
static cal_status
journal_abandoned(struct cluster *c, struct move_rec *m, char *err, size_t errlen)
{
    struct db_val p[2] = {DB_CSTR_V("active"), DB_INT_V(m->vbucket)};
    cal_status rc = db_begin(c->catalog, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if ((rc = db_query(c->catalog, SQL_VB_STATE, p, 2, NULL, err, errlen)) != CAL_OK ||
        (rc = journal(c, m, "abandoned", err, errlen)) != CAL_OK) {
        db_rollback(c->catalog);
        return rc;
    }
    return db_commit(c->catalog, err, errlen);
}

/* move_abandon with the vbucket's move lock held. */
static cal_status
abandon_locked(struct cluster *c, struct move_rec *m, struct move_abandoned *out, char *err,
               size_t errlen)
{
    struct db_val p[1] = {DB_INT_V(m->vbucket)}, col[MOVE_REC_NCOLS];
    bool found;
    cal_status rc = cluster_query_row(c->catalog, SQL_OPEN_MOVE_REC, p, 1, col, MOVE_REC_NCOLS,
                                      &found, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (!found) {
        snprintf(err, errlen, "vbucket %u has no unfinished move", m->vbucket);
        return CAL_ENOTFOUND;
    }
    move_rec_from_row(m, col);
    *out = (struct move_abandoned){.move_id = m->move_id, .source = m->source, .target = m->target};
    cal_strlcpy(out->phase, m->phase, sizeof(out->phase));
    if (strcmp(m->phase, "copy") != 0 && strcmp(m->phase, "cutover") != 0)
        return past_cutover(m, err, errlen);
    /* The source's fence row, locked until the journal says abandoned: the
     * cutover of a run that lost its lock, if already past its last check,
     * either committed before (no row: refused) or cannot commit after. */
    char why[256];
    struct db *src = cluster_shard(c, m->source, why, sizeof(why));
    bool owned = false;
    if (src == NULL || db_begin(src, why, sizeof(why)) != CAL_OK ||
        owns(src, SQL_OWNS_LOCK, m->vbucket, &owned, why, sizeof(why)) != CAL_OK) {
        if (src != NULL)
            db_rollback(src);
        snprintf(err, errlen,
                 "move %llu: the source shard %u must show its fence row of vbucket %u: %s",
                 (unsigned long long)m->move_id, m->source, m->vbucket, why);
        return CAL_EUNAVAIL;
    }
    struct db *dst = cluster_shard(c, m->target, out->target_error, sizeof(out->target_error));
    bool target_owns = false;
    if (!owned)
        rc = past_cutover(m, err, errlen);
    else if (dst != NULL)
        rc = owns(dst, SQL_OWNS, m->vbucket, &target_owns, err, errlen);
    if (rc == CAL_OK && target_owns) {
        snprintf(err, errlen, "target shard %u holds a fence row of vbucket %u: not abandoned",
                 m->target, m->vbucket);
        rc = CAL_EINVAL;
    }
    if (rc == CAL_OK)
        rc = journal_abandoned(c, m, err, errlen);
    db_rollback(src); /* nothing written there: only the lock goes */
    if (rc != CAL_OK || dst == NULL)
        return rc;
    /* Abandoned: the target's copy is garbage now, deleted outside the
     * fence row's lock (writes of the vbucket wait for that lock), and
     * under the target's rows lock (a run that lost its move lock may still
     * be copying: its rows would outlive the delete; they stay instead, and
     * the next move to this target clears them first). */
    if (lock_rows(dst, m->vbucket, m->target, out->target_error, sizeof(out->target_error)) ==
        CAL_OK) {
        if (delete_vbucket_rows(NULL, NULL, NULL, dst, m->vbucket, out->target_error,
                                sizeof(out->target_error)) == CAL_OK)
            out->target_cleared = true;
        unlock_rows(dst, m->vbucket);
    }
    if (!out->target_cleared)
        log_warn("abandoned move: the target's copied rows stay",
                 "move=%llu vbucket=%u error=\"%s\"", (unsigned long long)m->move_id, m->vbucket,
                 out->target_error);
    return CAL_OK;
}

cal_status
move_abandon(struct cluster *c, uint32_t vbucket, struct move_abandoned *out, char *err,
             size_t errlen)
{
    cal_status rc = cluster_reload(c, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (vbucket >= c->map->num_vbuckets) {
        snprintf(err, errlen, "no vbucket %u", vbucket);
        return CAL_EINVAL;
    }
    struct move_rec m = {.vbucket = vbucket, .freeze_ms = -1};
    if ((rc = lock_vbucket(c, &m, 0, err, errlen)) != CAL_OK)
        return rc;
    rc = abandon_locked(c, &m, out, err, errlen);
    unlock_vbucket(c, &m);
    if (rc == CAL_OK)
        rc = cluster_reload(c, err, errlen);
    return rc;
}
