/* Verification of vbuckets across shards. */
#include "sharding/verify.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct vtable {
    const char *name;
    const char *select; /* pk text, row text, version for one vbucket, ordered by pk */
    /* A table whose primary key does not start with listing_id: listing_id
     * and vbucket of the row with a key (a number), wherever it belongs. A
     * key missing from a vbucket can be another listing's on that shard
     * (colliding reservation ids). NULL: the key names one listing. */
    const char *holder;
};

static const struct vtable VTABLES[] = {
    {"listings",
     "SELECT CAST(listing_id AS CHAR), CONCAT_WS('|', version, rules_version, default_price,"
     " currency, min_nights, max_nights), version FROM listings WHERE vbucket = ? ORDER BY "
     "listing_id",
     NULL},
    {"nights",
     "SELECT CONCAT(listing_id, '/', night), CONCAT_WS('|', status, IFNULL(reservation_id, '-'),"
     " IFNULL(price, '-'), version), version FROM nights WHERE vbucket = ?"
     " ORDER BY listing_id, night",
     NULL},
    {"reservations",
     "SELECT CAST(reservation_id AS CHAR), CONCAT_WS('|', listing_id, check_in, check_out,"
     " guest_id, status, total_price, currency, idempotency_key, request_hash, version)"
     ", version FROM reservations WHERE vbucket = ?"
     " ORDER BY reservation_id",
     "SELECT listing_id, vbucket FROM reservations WHERE reservation_id = ?"},
    {"listing_refusals",
     "SELECT CAST(listing_id AS CHAR), CAST(version AS CHAR), version FROM listing_refusals"
     " WHERE vbucket = ? ORDER BY listing_id",
     NULL},
};

struct kv {
    size_t n, cap;
    char **pk, **row;
    uint64_t *version;
};

static void
kv_free(struct kv *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->pk[i]);
        free(t->row[i]);
    }
    free(t->pk);
    free(t->row);
    free(t->version);
    memset(t, 0, sizeof(*t));
}

static cal_status
load(struct db *db, const char *sql, uint32_t vbucket, struct kv *t, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(vbucket)}, c[3];
    cal_status rc = db_query(db, sql, p, 1, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r;
    while ((r = db_fetch(st, c, 3, err, errlen)) > 0) {
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 256;
            t->pk = cal_realloc(t->pk, t->cap * sizeof(*t->pk));
            t->row = cal_realloc(t->row, t->cap * sizeof(*t->row));
            t->version = cal_realloc(t->version, t->cap * sizeof(*t->version));
        }
        t->version[t->n] = (uint64_t)c[2].i;
        t->pk[t->n] = cal_strndup(c[0].s ? c[0].s : "", c[0].len);
        t->row[t->n++] = cal_strndup(c[1].s ? c[1].s : "", c[1].len);
    }
    return r < 0 ? CAL_ERR : CAL_OK;
}

/* Primary keys sort as text here only within one listing; compare numerically
 * where it matters by comparing length first (ids are decimal, no leading 0). */
static int
pk_cmp(const char *a, const char *b)
{
    size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(a, b);
}

/* A row of vbucket with key pk that db (db_name in the report) lacks: when
 * db holds the key for another listing (t->holder), says so and counts a
 * collision. */
static cal_status
explain_absent(struct db *db, const char *db_name, const struct vtable *t, const char *pk,
               uint32_t vbucket, struct verify_report *rep, FILE *out, char *err, size_t errlen)
{
    if (t->holder == NULL)
        return CAL_OK;
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(strtoull(pk, NULL, 10))}, c[2];
    cal_status rc = db_query(db, t->holder, p, 1, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, c, 2, err, errlen);
    if (r > 0) {
        rep->collisions++;
        fprintf(out,
                "vbucket %u %s %s: %s holds this key for listing %llu (vbucket %lld): ids"
                " collide (docs/operations.md, \"Colliding reservation ids\")\n",
                vbucket, t->name, pk, db_name, (unsigned long long)c[0].i, (long long)c[1].i);
        while (db_fetch(st, c, 2, err, errlen) > 0)
            ;
    }
    return r < 0 ? CAL_ERR : CAL_OK;
}

/* Compares the rows of one vbucket in one table. Exact: the other shard
 * must hold the owner's rows, no more, no other values. Covering (the owner
 * is a move's target, the other its frozen source): every source row must be
 * on the target, the same or at a newer version; rows the target has beyond
 * them were written there since. */
static cal_status
compare_table(struct db *owner, struct db *other, const struct vtable *t, uint32_t vbucket,
              uint32_t other_id, bool covering, struct verify_report *rep, FILE *out, char *err,
              size_t errlen)
{
    struct kv a = {0}, b = {0};
    cal_status rc = load(owner, t->select, vbucket, &a, err, errlen);
    if (rc == CAL_OK)
        rc = load(other, t->select, vbucket, &b, err, errlen);
    if (rc == CAL_OK) {
        /* Both sides come ordered by primary key; pk_cmp follows that order. */
        size_t i = 0, j = 0;
        rep->checked += b.n;
        char other_name[32];
        while (rc == CAL_OK && (i < a.n || j < b.n)) {
            int cmp = i == a.n ? 1 : j == b.n ? -1 : pk_cmp(a.pk[i], b.pk[j]);
            if (cmp == 0) {
                bool newer_on_owner = covering && a.version[i] > b.version[j];
                if (!newer_on_owner && strcmp(a.row[i], b.row[j]) != 0) {
                    rep->different++;
                    fprintf(out, "vbucket %u %s %s: owner has %s, shard %u has %s\n", vbucket,
                            t->name, a.pk[i], a.row[i], other_id, b.row[j]);
                }
                i++;
                j++;
            } else if (cmp < 0 && covering) {
                i++; /* written on the target since the cutover */
            } else if (cmp < 0) {
                rep->missing++;
                fprintf(out, "vbucket %u %s %s: missing on shard %u\n", vbucket, t->name, a.pk[i],
                        other_id);
                snprintf(other_name, sizeof(other_name), "shard %u", other_id);
                rc =
                    explain_absent(other, other_name, t, a.pk[i++], vbucket, rep, out, err, errlen);
            } else if (covering) {
                rep->missing++;
                fprintf(out, "vbucket %u %s %s: on source shard %u, missing on its new owner\n",
                        vbucket, t->name, b.pk[j], other_id);
                rc = explain_absent(owner, "its new owner", t, b.pk[j++], vbucket, rep, out, err,
                                    errlen);
            } else {
                rep->extra++;
                fprintf(out, "vbucket %u %s %s: extra on shard %u\n", vbucket, t->name, b.pk[j],
                        other_id);
                rc = explain_absent(owner, "its owner", t, b.pk[j++], vbucket, rep, out, err,
                                    errlen);
            }
        }
    }
    kv_free(&a);
    kv_free(&b);
    return rc;
}

static const char SQL_OWNER_ROWS[] = "SELECT vbucket, epoch FROM vbucket_owner";
/* Moves past their catalog flip, not cleaned up: the source's rows are a
 * frozen copy, and the owner has written since (compared covering). */
static const char SQL_IN_CLEANUP[] =
    "SELECT vbucket, source_shard FROM moves WHERE phase = 'cleanup'";
static const char SQL_COPYING[] =
    "SELECT vbucket, target_shard FROM moves WHERE phase IN ('copy', 'cutover')";
static const char SQL_ROWS_OF[] = "SELECT (SELECT COUNT(*) FROM listings WHERE vbucket = ?)"
                                  " + (SELECT COUNT(*) FROM nights WHERE vbucket = ?)"
                                  " + (SELECT COUNT(*) FROM reservations WHERE vbucket = ?)"
                                  " + (SELECT COUNT(*) FROM listing_refusals WHERE vbucket = ?)";
static const char SQL_HOLDS[] = "SELECT vbucket FROM listings UNION SELECT vbucket FROM nights"
                                " UNION SELECT vbucket FROM reservations"
                                " UNION SELECT vbucket FROM listing_refusals";

/* Every (listing, vbucket) pair a shard's rows name. */
static const char SQL_ROUTES[] = "SELECT listing_id, vbucket FROM listings"
                                 " UNION SELECT DISTINCT listing_id, vbucket FROM nights"
                                 " UNION SELECT DISTINCT listing_id, vbucket FROM reservations"
                                 " UNION SELECT listing_id, vbucket FROM listing_refusals";
#define MISROUTED_SHOWN 10 /* lines of detail per verify; the count has them all */

/* Rows whose vbucket column is not their listing's (fmix64(id) % N): a move
 * takes rows by that column, so such a listing's rows would go where its
 * reads and writes never look. vbucket >= 0: only pairs naming it. */
static cal_status
count_misrouted(struct db *db, uint32_t shard_id, uint32_t nvb, int64_t vbucket,
                struct verify_report *rep, FILE *out, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val col[2];
    int r;
    cal_status rc = db_query(db, SQL_ROUTES, NULL, 0, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    while ((r = db_fetch(st, col, 2, err, errlen)) > 0) {
        uint64_t id = (uint64_t)col[0].i;
        uint32_t want = shardmap_vbucket(id, nvb);
        if (col[1].i == (int64_t)want ||
            (vbucket >= 0 && col[1].i != vbucket && (int64_t)want != vbucket))
            continue;
        if (rep->misrouted++ < MISROUTED_SHOWN)
            fprintf(out,
                    "listing %llu: shard %u holds rows of it in vbucket %lld, its vbucket is %u"
                    " (a move of either takes them where the listing is not looked for)\n",
                    (unsigned long long)id, shard_id, (long long)col[1].i, want);
    }
    return r < 0 ? CAL_ERR : CAL_OK;
}

/* Reads a (vbucket, shard) pair per row of sql from the catalog into
 * by_vb[vbucket] = 1 + shard. */
static cal_status
load_pairs(struct db *catalog, const char *sql, uint32_t nvb, uint64_t *by_vb, char *err,
           size_t errlen)
{
    struct db_stmt *st;
    struct db_val col[2];
    int r;
    cal_status rc = db_query(catalog, sql, NULL, 0, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    while ((r = db_fetch(st, col, 2, err, errlen)) > 0)
        if (col[0].i >= 0 && col[0].i < nvb)
            by_vb[col[0].i] = (uint64_t)col[1].i + 1;
    return r < 0 ? CAL_ERR : CAL_OK;
}

/* The rows of vbucket on db that it should not hold at all. */
static cal_status
count_stray(struct db *db, uint32_t vbucket, uint32_t shard_id, struct verify_report *rep,
            FILE *out, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[4] = {DB_INT_V(vbucket), DB_INT_V(vbucket), DB_INT_V(vbucket),
                          DB_INT_V(vbucket)},
                  c[1];
    cal_status rc = db_query(db, SQL_ROWS_OF, p, 4, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    int r = db_fetch(st, c, 1, err, errlen);
    while (r > 0 && db_fetch(st, c, 1, err, errlen) > 0)
        ;
    if (r < 0)
        return CAL_ERR;
    if (r > 0 && c[0].i > 0) {
        rep->stray += (uint64_t)c[0].i;
        fprintf(out,
                "vbucket %u: shard %u holds %lld rows of it without owning it or taking part in"
                " its move (an abandoned move's copy: the next move to shard %u deletes them)\n",
                vbucket, shard_id, (long long)c[0].i, shard_id);
    }
    return CAL_OK;
}

/* The journal's state of each vbucket's unfinished move, and the last
 * move journaled: read before and after the scan, so a vbucket that a
 * running move changed meanwhile is told apart from a broken one. */
static const char SQL_LAST_MOVE[] = "SELECT IFNULL(MAX(move_id), 0) FROM moves";
static const char SQL_MOVES_SINCE[] = "SELECT vbucket, move_id, phase, rows_copied FROM moves"
                                      " WHERE phase NOT IN ('done', 'abandoned') OR move_id > ?";
static const char SQL_CATALOG_ROWS[] = "SELECT vbucket, shard_id, epoch FROM vbuckets";
static const char SQL_LOCK_USED[] = "SELECT IS_USED_LOCK(CONCAT('calendar_move_', ?)) IS NOT NULL";

/* A move's journal state as one number: its id, phase and rows copied. */
static uint64_t
move_sig(const struct db_val *col)
{
    uint64_t h = (uint64_t)col[1].i * 1000003u ^ (uint64_t)col[3].i * 31u;
    for (size_t i = 0; col[2].type == DB_STR && i < col[2].len; i++)
        h = h * 131u + (unsigned char)col[2].s[i];
    return h | 1; /* 0: no unfinished move */
}

/* by_vb[v]: move_sig of v's unfinished move, 0 = none; *last: the last move id. */
static cal_status
load_journal(struct db *catalog, uint32_t nvb, uint64_t *by_vb, int64_t *last, char *err,
             size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(INT64_MAX)}, col[4];
    int r;
    bool found;
    cal_status rc = cluster_query_row(catalog, SQL_LAST_MOVE, NULL, 0, col, 1, &found, err, errlen);
    if (rc != CAL_OK)
        return rc;
    *last = found && col[0].type == DB_INT ? col[0].i : 0;
    if ((rc = db_query(catalog, SQL_MOVES_SINCE, p, 1, &st, err, errlen)) != CAL_OK)
        return rc;
    while ((r = db_fetch(st, col, 4, err, errlen)) > 0)
        if (col[0].i >= 0 && col[0].i < nvb)
            by_vb[col[0].i] = move_sig(col);
    return r < 0 ? CAL_ERR : CAL_OK;
}

static bool
phase_is(const struct db_val *v, const char *phase)
{
    return v->len == strlen(phase) && memcmp(v->s, phase, v->len) == 0;
}

/* Marks moved[v] for each vbucket a move changed since the scan began: a
 * move journaled since (id past last), an unfinished one whose journal
 * moved on or ended (sig), one whose run still holds its lock, or a
 * catalog row that is not the map's any more. */
static cal_status
mark_moved(struct cluster *c, const struct shardmap *map, int64_t last, const uint64_t *sig,
           unsigned char *moved, char *err, size_t errlen)
{
    uint32_t nvb = map->num_vbuckets;
    unsigned char *seen = cal_calloc(nvb, 1);
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(last)}, col[4];
    int r;
    cal_status rc = db_query(c->catalog, SQL_MOVES_SINCE, p, 1, &st, err, errlen);
    while (rc == CAL_OK && (r = db_fetch(st, col, 4, err, errlen)) > 0) {
        if (col[0].i < 0 || col[0].i >= nvb)
            continue;
        uint32_t v = (uint32_t)col[0].i;
        bool open =
            col[2].type == DB_STR && !phase_is(&col[2], "done") && !phase_is(&col[2], "abandoned");
        seen[v] |= open;
        if (col[1].i > last || (open && move_sig(col) != sig[v]))
            moved[v] = 1;
    }
    if (rc == CAL_OK && r < 0)
        rc = CAL_ERR;
    for (uint32_t v = 0; v < nvb && rc == CAL_OK; v++) {
        if (sig[v] != 0 && !seen[v])
            moved[v] = 1; /* finished or abandoned meanwhile */
        if (!seen[v] || moved[v])
            continue;
        struct db_val q[1] = {DB_INT_V(v)}, used[1];
        bool found;
        rc = cluster_query_row(c->catalog, SQL_LOCK_USED, q, 1, used, 1, &found, err, errlen);
        if (rc == CAL_OK && found && used[0].type == DB_INT && used[0].i == 1)
            moved[v] = 1;
    }
    free(seen);
    if (rc == CAL_OK)
        rc = db_query(c->catalog, SQL_CATALOG_ROWS, NULL, 0, &st, err, errlen);
    while (rc == CAL_OK && (r = db_fetch(st, col, 3, err, errlen)) > 0)
        if (col[0].i >= 0 && col[0].i < nvb &&
            ((uint64_t)col[1].i != map->owner[col[0].i] ||
             (uint64_t)col[2].i != map->epoch[col[0].i]))
            moved[col[0].i] = 1;
    if (rc == CAL_OK && r < 0)
        rc = CAL_ERR;
    return rc;
}

/* What the scan read of every shard, by vbucket. */
struct scan {
    const struct shardmap *map;
    size_t ns;
    /* Per shard: which vbuckets it owns (epoch+1, 0 = not) and holds rows of. */
    uint64_t *owned;
    unsigned char *holds;
    /* Per vbucket: 1 + the source shard of its move in cleanup, and 1 + the
     * target of its move before the cleanup; 0 = none. */
    uint64_t *cleanup_src, *copy_dst;
};

/* Checks vbucket v against the scan: its fence, then every other shard
 * holding rows of it. */
static cal_status
check_one(struct cluster *c, const struct scan *sc, uint32_t v, struct verify_report *rep,
          FILE *out, char *err, size_t errlen)
{
    const struct shardmap *map = sc->map;
    size_t ns = sc->ns, owners = 0, owner_idx = SIZE_MAX;
    cal_status rc = CAL_OK;
    rep->vbuckets++;
    for (size_t s = 0; s < ns; s++) {
        if (sc->owned[(size_t)v * ns + s] == 0)
            continue;
        owners++;
        if (map->shards[s].shard_id == map->owner[v])
            owner_idx = s;
    }
    if (owners != 1 || owner_idx == SIZE_MAX ||
        sc->owned[(size_t)v * ns + owner_idx] - 1 != map->epoch[v]) {
        rep->fence_errors++;
        fprintf(out, "vbucket %u: %zu owner rows; catalog says shard %u epoch %llu\n", v, owners,
                map->owner[v], (unsigned long long)map->epoch[v]);
    }
    struct db *owner_db = cluster_shard(c, map->owner[v], err, errlen);
    for (size_t s = 0; s < ns && rc == CAL_OK; s++) {
        uint32_t sid = map->shards[s].shard_id;
        if (sid == map->owner[v] || !sc->holds[(size_t)v * ns + s])
            continue;
        struct db *other = cluster_shard(c, sid, err, errlen);
        if (owner_db == NULL || other == NULL)
            return CAL_EUNAVAIL;
        bool covering = sc->cleanup_src[v] == (uint64_t)sid + 1;
        if (!covering && sc->copy_dst[v] != (uint64_t)sid + 1) {
            rc = count_stray(other, v, sid, rep, out, err, errlen);
            continue;
        }
        rep->compared++;
        for (size_t t = 0; t < sizeof(VTABLES) / sizeof(VTABLES[0]) && rc == CAL_OK; t++)
            rc = compare_table(owner_db, other, &VTABLES[t], v, sid, covering, rep, out, err,
                               errlen);
    }
    return rc;
}

static bool
has_problems(const struct verify_report *r)
{
    return r->missing || r->extra || r->different || r->fence_errors || r->stray;
}

static void
report_add(struct verify_report *to, const struct verify_report *r)
{
    to->vbuckets += r->vbuckets;
    to->compared += r->compared;
    to->missing += r->missing;
    to->extra += r->extra;
    to->different += r->different;
    to->fence_errors += r->fence_errors;
    to->collisions += r->collisions;
    to->stray += r->stray;
}

/* A vbucket whose check found problems, held back until the end shows
 * whether a move changed it during the scan. */
struct held {
    uint32_t v;
    struct verify_report rep;
    char *text;
};

cal_status
verify_run(struct cluster *c, int64_t vbucket, struct verify_report *rep, FILE *out, char *err,
           size_t errlen)
{
    memset(rep, 0, sizeof(*rep));
    int64_t last = 0;
    uint64_t *sig = NULL;
    cal_status rc = CAL_OK;
    const struct shardmap *map = c->map;
    uint32_t nvb = map->num_vbuckets;
    sig = cal_calloc(nvb, sizeof(*sig));
    /* The journal first, then the map: a move after this is seen at the end. */
    if ((rc = load_journal(c->catalog, nvb, sig, &last, err, errlen)) == CAL_OK &&
        (rc = cluster_reload(c, err, errlen)) == CAL_OK)
        map = c->map;
    if (rc != CAL_OK || map->num_vbuckets != nvb) {
        free(sig);
        if (rc == CAL_OK) {
            snprintf(err, errlen, "the catalog's vbucket count changed");
            rc = CAL_ERR;
        }
        return rc;
    }
    size_t ns = map->nshards;
    struct scan sc = {.map = map,
                      .ns = ns,
                      .owned = cal_calloc((size_t)nvb * ns, sizeof(uint64_t)),
                      .holds = cal_calloc((size_t)nvb * ns, 1),
                      .cleanup_src = cal_calloc(nvb, sizeof(uint64_t)),
                      .copy_dst = cal_calloc(nvb, sizeof(uint64_t))};
    rc = load_pairs(c->catalog, SQL_IN_CLEANUP, nvb, sc.cleanup_src, err, errlen);
    if (rc == CAL_OK)
        rc = load_pairs(c->catalog, SQL_COPYING, nvb, sc.copy_dst, err, errlen);
    for (size_t s = 0; s < ns && rc == CAL_OK; s++) {
        struct db *db = cluster_shard(c, map->shards[s].shard_id, err, errlen);
        struct db_stmt *st;
        struct db_val col[2];
        int r;
        if (db == NULL) {
            rc = CAL_EUNAVAIL;
            break;
        }
        if ((rc = db_query(db, SQL_OWNER_ROWS, NULL, 0, &st, err, errlen)) != CAL_OK)
            break;
        while ((r = db_fetch(st, col, 2, err, errlen)) > 0)
            if (col[0].i >= 0 && col[0].i < nvb)
                sc.owned[(size_t)col[0].i * ns + s] = (uint64_t)col[1].i + 1;
        /* A read cut short must not pass for a clean shard. */
        if (r < 0) {
            rc = CAL_ERR;
            break;
        }
        if ((rc = db_query(db, SQL_HOLDS, NULL, 0, &st, err, errlen)) != CAL_OK)
            break;
        while ((r = db_fetch(st, col, 1, err, errlen)) > 0)
            if (col[0].i >= 0 && col[0].i < nvb)
                sc.holds[(size_t)col[0].i * ns + s] = 1;
        if (r < 0) {
            rc = CAL_ERR;
            break;
        }
        rc = count_misrouted(db, map->shards[s].shard_id, nvb, vbucket, rep, out, err, errlen);
    }
    struct held *held = NULL;
    size_t nheld = 0, cap = 0;
    for (uint32_t v = 0; v < nvb && rc == CAL_OK; v++) {
        if (vbucket >= 0 && v != (uint32_t)vbucket)
            continue;
        struct verify_report one = {0};
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        rc = check_one(c, &sc, v, &one, mem != NULL ? mem : out, err, errlen);
        if (mem != NULL)
            fclose(mem);
        if (rc != CAL_OK || !has_problems(&one) || mem == NULL) {
            if (mem == NULL || rc != CAL_OK)
                fputs(text != NULL ? text : "", out);
            report_add(rep, &one);
            free(text);
            continue;
        }
        if (nheld == cap) {
            cap = cap ? cap * 2 : 16;
            held = cal_realloc(held, cap * sizeof(*held));
        }
        held[nheld++] = (struct held){.v = v, .rep = one, .text = text};
    }
    unsigned char *moved = cal_calloc(nvb, 1);
    if (rc == CAL_OK && nheld > 0)
        rc = mark_moved(c, map, last, sig, moved, err, errlen);
    for (size_t i = 0; i < nheld; i++) {
        if (rc == CAL_OK && moved[held[i].v]) {
            rep->vbuckets++;
            rep->moving++;
            fprintf(out,
                    "vbucket %u: moved while verified, not checked (verify it again once its"
                    " move is done)\n",
                    held[i].v);
        } else if (rc == CAL_OK) {
            report_add(rep, &held[i].rep);
            fputs(held[i].text, out);
        }
        free(held[i].text);
    }
    free(held);
    free(moved);
    free(sig);
    free(sc.owned);
    free(sc.holds);
    free(sc.cleanup_src);
    free(sc.copy_dst);
    return rc;
}

cal_status
verify_copy(struct db *target, struct db *source, uint32_t vbucket, uint32_t source_id,
            void (*after_table)(void *arg, const struct verify_report *rep), void *arg,
            struct verify_report *rep, FILE *out, char *err, size_t errlen)
{
    cal_status rc = CAL_OK;
    memset(rep, 0, sizeof(*rep));
    rep->vbuckets = rep->compared = 1;
    for (size_t t = 0; t < sizeof(VTABLES) / sizeof(VTABLES[0]) && rc == CAL_OK; t++) {
        rc = compare_table(target, source, &VTABLES[t], vbucket, source_id, true, rep, out, err,
                           errlen);
        if (rc == CAL_OK && after_table != NULL)
            after_table(arg, rep);
    }
    return rc;
}
