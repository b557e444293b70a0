/* calendar-rebalance: the operator's tool that moves vbuckets between shards
 * online (status, add-shard, drain-shard, activate-shard, remove-shard, plan,
 * move, rebalance, verify, resume, abandon). The move protocol itself is in
 * move.c. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/dbconf.h"
#include "common/log.h"
#include "common/util.h"
#include "sharding/catalog.h"
#include "sharding/cluster.h"
#include "sharding/migrate.h"
#include "sharding/move.h"
#include "sharding/plan.h"
#include "sharding/verify.h"

struct tool_conf {
    struct db_conf catalog;
    struct db_conf shard;
};

static const struct conf_item items[] = {
    DBCONF_ADDRESS_ITEMS("catalog", struct tool_conf, catalog),
    DBCONF_SESSION_ITEMS("catalog", struct tool_conf, catalog, "cal_admin"),
    DBCONF_SESSION_ITEMS("shards", struct tool_conf, shard, "cal_admin"),
};

/* The options a command may take (struct command's opts). */
enum {
    OPT_VBUCKET = 1 << 0,
    OPT_TO = 1 << 1,
    OPT_SHARD = 1 << 2,
    OPT_PARALLEL = 1 << 3,
    OPT_MAX_FREEZE = 1 << 4,
    OPT_DRY_RUN = 1 << 5,
    OPT_CRASH_AFTER = 1 << 6,
    OPT_SCHEMA_DIR = 1 << 7,
};

#define PARALLEL_MAX 16
#define MAX_FREEZE_MS_MAX 60000 /* the shards' lock wait timeout is 10 s */

struct opts {
    const char *config;
    char schema[PATH_MAX];
    int64_t vbucket;
    int64_t to;
    const char *shard;
    int64_t shard_id; /* drain-shard's --shard */
    int parallel;
    unsigned max_freeze_ms;
    bool dry_run;
    const char *crash_after;
    unsigned given; /* OPT_* bits of the options on the command line */
};

static struct tool_conf conf;
static struct opts opt = {.vbucket = -1, .to = -1, .parallel = 1, .max_freeze_ms = 100};
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: calendar-rebalance --config FILE COMMAND [OPTIONS]\n"
            "\n"
            "Moves vbuckets between MariaDB shards while calendard keeps serving.\n"
            "\n"
            "Commands:\n"
            "  status                         shards, vbuckets, listings and rows per shard,\n"
            "                                 unfinished moves\n"
            "  add-shard --shard HOST:PORT/DB [--schema-dir DIR]\n"
            "                                 register a new, empty shard (schema applied)\n"
            "  drain-shard --shard ID         mark a shard to be emptied by the next rebalance\n"
            "                                 (refused for the only active shard)\n"
            "  activate-shard --shard ID      take a draining shard back: the next rebalance\n"
            "                                 may move vbuckets to it\n"
            "  remove-shard --shard ID        take a drained shard (draining, no vbuckets, in no\n"
            "                                 unfinished move) out of the catalog, before its\n"
            "                                 server is stopped for good\n"
            "  plan                           print the moves that would even the listings\n"
            "                                 across active shards and empty draining ones\n"
            "  move --vbucket N --to ID [--max-freeze-ms N]\n"
            "                                 move one vbucket now (on shard ID already:\n"
            "                                 nothing to do, exit 0; exit 1 while a move of\n"
            "                                 it is unfinished: resume)\n"
            "  rebalance [--dry-run] [--parallel N] [--max-freeze-ms N]\n"
            "                                 plan, then execute the moves (--dry-run: plan only)\n"
            "  verify [--vbucket N]           check the fence and compare every row of a vbucket\n"
            "                                 (default: all) on its owner with a shard holding\n"
            "                                 it for its move; rows on any other shard are\n"
            "                                 counted as stray\n"
            "  resume [--max-freeze-ms N]     finish moves interrupted by a crash, or stopped\n"
            "                                 in cleanup because the target lacked rows of the\n"
            "                                 source (checked again)\n"
            "  abandon --vbucket N            give up the vbucket's unfinished move while its\n"
            "                                 source still owns it (before the cutover), e.g.\n"
            "                                 when its target is gone for good; deletes the\n"
            "                                 target's copied rows if it answers\n"
            "A command refuses the options it does not take (exit 2).\n"
            "\n"
            "Options:\n"
            "  --config FILE        INI with [catalog] and [shards] of an admin user; moves\n"
            "                       wait behind in-flight writes, so [shards]\n"
            "                       lock_wait_timeout_s is 10 here and read_timeout_ms at\n"
            "                       least 12000, whatever the file says\n"
            "  --vbucket N          0 to the number of vbuckets - 1\n"
            "  --to ID              an active shard id of the catalog (status lists them)\n"
            "  --shard ID           drain-shard, activate-shard, remove-shard: a shard id;\n"
            "                       add-shard: HOST:PORT/DB (no user:password@: the\n"
            "                       config's [shards] user and password_file are used)\n"
            "  --parallel N         moves at once for rebalance, 1-16 (default 1)\n"
            "  --max-freeze-ms N    a cutover whose locked final copy took longer than this\n"
            "                       (from the lock's grant) rolls back, catches up and tries\n"
            "                       again, 5 tries at most; a wait for the lock that times\n"
            "                       out (lock_wait_timeout_s) is one of the tries too;\n"
            "                       0-60000, 0: no limit (default 100)\n"
            "  --schema-dir DIR     schema folder for add-shard (default: beside bin/)\n"
            "  --crash-after PHASE  testing only (move, rebalance, resume): SIGKILL the tool\n"
            "                       once PHASE (copy, cutover, target, catalog, cleanup) is\n"
            "                       durable, or (cutover-chunk) within the cutover's last\n"
            "                       copy, after a chunk's first write that sent rows\n"
            "  -h, --help           this text\n"
            "\n"
            "Exit status: 0 done, 1 failure (see the message), 2 usage, 3 verify found\n"
            "differences, 4 try again later (a vbucket held by another run, a cutover kept\n"
            "busy by writes, a shard that did not answer or the catalog during a move,\n"
            "planned moves a rebalance did not start, or verify saw vbuckets move: run the\n"
            "command again, or resume a move that started).\n");
}

/* Exit status of a failure that goes away by itself: another run holds the
 * vbucket, writes kept a cutover from finishing, a shard did not answer,
 * or verify saw a vbucket move. Running the command again later (resume,
 * for a move that started) is the remedy; nothing needs repair. */
#define EXIT_RETRY 4

static int
exit_of(cal_status rc)
{
    return move_status_retry(rc) ? EXIT_RETRY : 1;
}

static void
progress(const struct move_progress *p)
{
    pthread_mutex_lock(&out_lock);
    printf("vbucket %u: shard %u -> %u phase=%s rows_copied=%llu elapsed=%.2fs", p->vbucket,
           p->source, p->target, p->phase, (unsigned long long)p->rows_copied, p->elapsed_s);
    if (p->rows_checked > 0)
        printf(" rows_checked=%llu", (unsigned long long)p->rows_checked);
    if (p->freeze_ms >= 0)
        printf(" write_pause_ms=%.1f", p->freeze_ms);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

/* Says so when move_vbucket found the vbucket on its target already. */
static void
nothing_moved(const struct move_progress *p)
{
    if (strcmp(p->phase, "none") != 0)
        return;
    pthread_mutex_lock(&out_lock);
    printf("vbucket %u is on shard %u already: nothing to move\n", p->vbucket, p->target);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

static int
open_cluster(struct cluster *c)
{
    char err[1024];
    if (cluster_open(c, &conf.catalog, &conf.shard, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: %s\n", err);
        return -1;
    }
    return 0;
}

static const char SQL_COUNTS[] =
    "SELECT (SELECT COUNT(*) FROM vbucket_owner), (SELECT COUNT(*) FROM listings),"
    " (SELECT COUNT(*) FROM nights), (SELECT COUNT(*) FROM reservations)";
static const char SQL_MOVES_OPEN[] =
    "SELECT move_id, vbucket, source_shard, target_shard, phase, rows_copied FROM moves"
    " WHERE phase NOT IN ('done', 'abandoned') ORDER BY move_id";

static int
cmd_status(struct cluster *c)
{
    char err[1024];
    printf("%-6s %-9s %-28s %9s %9s %9s %13s\n", "shard", "state", "address", "vbuckets", "owned",
           "listings", "nights+resv");
    for (size_t s = 0; s < c->map->nshards; s++) {
        const struct shard_info *si = &c->map->shards[s];
        unsigned mapped = 0;
        for (uint32_t v = 0; v < c->map->num_vbuckets; v++)
            mapped += c->map->owner[v] == si->shard_id;
        char addr[340];
        snprintf(addr, sizeof(addr), "%s:%u/%s", si->host, si->port, si->db_name);
        struct db *db = cluster_shard(c, si->shard_id, err, sizeof(err));
        struct db_stmt *st;
        struct db_val col[4];
        if (db == NULL || db_query(db, SQL_COUNTS, NULL, 0, &st, err, sizeof(err)) != CAL_OK ||
            db_fetch(st, col, 4, err, sizeof(err)) <= 0) {
            printf("%-6u %-9s %-28s %9u  unreachable: %s\n", si->shard_id, si->state, addr, mapped,
                   err);
            continue;
        }
        cluster_drain(st);
        printf("%-6u %-9s %-28s %9u %9lld %9lld %13lld\n", si->shard_id, si->state, addr, mapped,
               (long long)col[0].i, (long long)col[1].i, (long long)(col[2].i + col[3].i));
    }
    struct db_stmt *st;
    struct db_val col[6];
    int open = 0, r = -1;
    if (db_query(c->catalog, SQL_MOVES_OPEN, NULL, 0, &st, err, sizeof(err)) == CAL_OK) {
        while ((r = db_fetch(st, col, 6, err, sizeof(err))) > 0) {
            printf("move %lld: vbucket %lld shard %lld -> %lld phase=%s rows_copied=%lld\n",
                   (long long)col[0].i, (long long)col[1].i, (long long)col[2].i,
                   (long long)col[3].i, col[4].s ? col[4].s : "?", (long long)col[5].i);
            open++;
        }
    }
    /* "0 unfinished moves" is what an operator reads after a crash to
     * know nothing is left to resume: never print it unread. */
    if (r < 0) {
        fprintf(stderr, "calendar-rebalance: status: the journal of moves could not be read: %s\n",
                err);
        return 1;
    }
    printf("%d unfinished move%s%s\n", open, open == 1 ? "" : "s",
           open ? " (run: calendar-rebalance resume)" : "");
    return 0;
}

/* The first column of sql's first row, as an integer; -1 on an error. */
static long long
catalog_count(struct db *db, const char *sql, const struct db_val *p, size_t np, char *err,
              size_t errlen)
{
    struct db_stmt *st;
    struct db_val col[1];
    long long n = -1;
    if (db_query(db, sql, p, np, &st, err, errlen) != CAL_OK)
        return -1;
    if (db_fetch(st, col, 1, err, errlen) > 0 && col[0].type == DB_INT)
        n = col[0].i;
    cluster_drain(st);
    return n;
}

/* Runs sql on the catalog's open transaction and commits it: true when
 * both went through (err says why not; the caller rolls back). */
static bool
catalog_write_commit(struct db *db, const char *sql, const struct db_val *p, size_t np, char *err,
                     size_t errlen)
{
    return db_query(db, sql, p, np, NULL, err, errlen) == CAL_OK &&
           db_commit(db, err, errlen) == CAL_OK;
}

static const char SQL_NEXT_SHARD_ID[] =
    "SELECT GREATEST(COALESCE((SELECT MAX(shard_id) FROM shards), -1),"
    " COALESCE((SELECT MAX(GREATEST(source_shard, target_shard)) FROM moves), -1)) + 1";

static int
cmd_add_shard(struct cluster *c)
{
    char err[512], dir[PATH_MAX + 16];
    struct db_conf sc = conf.shard;
    if (db_conf_parse_hostport(&sc, opt.shard, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: --shard: %s\n", err);
        return 2;
    }
    for (size_t s = 0; s < c->map->nshards; s++) {
        const struct shard_info *si = &c->map->shards[s];
        if (strcmp(si->host, sc.host) == 0 && si->port == sc.port &&
            strcmp(si->db_name, sc.database) == 0) {
            printf("shard %u is %s already\n", si->shard_id, opt.shard);
            return 0;
        }
    }
    struct db *db = db_connect(&sc, err, sizeof(err));
    int applied = 0;
    snprintf(dir, sizeof(dir), "%s/shard", opt.schema);
    /* Fence rows left on it (another cluster's shard, a failed bootstrap)
     * would make it a second owner of those vbuckets once registered.
     * Checked before the schema is touched: a mistyped address of another
     * cluster's shard is refused as it was found, not migrated first; the
     * migration then only creates what was not there (empty tables). */
    if (db != NULL && catalog_shard_is_empty(db, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: add-shard %s: %s\n", opt.shard, err);
        db_close(db);
        return 1;
    }
    if (db == NULL || migrate_apply(db, dir, &applied, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: %s\n", err);
        db_close(db);
        return 1;
    }
    db_close(db);
    /* Never the id of a removed shard that the journal, the metrics or the
     * logs still name. */
    long long next = catalog_count(c->catalog, SQL_NEXT_SHARD_ID, NULL, 0, err, sizeof(err));
    if (next < 0 || next > UINT32_MAX) {
        fprintf(stderr, "calendar-rebalance: add-shard: no shard id: %s\n", err);
        return 1;
    }
    uint32_t id = (uint32_t)next;
    if (catalog_register_shard(c->catalog, id, sc.host, sc.port, sc.database, err, sizeof(err)) !=
        CAL_OK) {
        fprintf(stderr, "calendar-rebalance: %s\n", err);
        return 1;
    }
    printf("shard %u added: %s (no vbuckets yet; run plan / rebalance)\n", id, opt.shard);
    return 0;
}

/* The catalog's row of --shard, or NULL and a message (exit 2). */
static const struct shard_info *
named_shard(const struct cluster *c)
{
    const struct shard_info *s = shardmap_shard(c->map, (uint32_t)opt.shard_id);
    if (s == NULL)
        fprintf(stderr, "calendar-rebalance: --shard %lld: no such shard (see status)\n",
                (long long)opt.shard_id);
    return s;
}

static const char SQL_MOVES_TO[] =
    "SELECT COUNT(*) FROM moves WHERE target_shard = ? AND phase NOT IN ('done', 'abandoned')";

/* --shard's state in the catalog, and a line saying what follows. Under
 * every shard row, locked in id order: two drains at once cannot both see
 * the other's shard still active. */
static int
set_shard_state(struct cluster *c, const char *state, const char *then)
{
    char err[1024] = "";
    struct db_stmt *st;
    struct db_val col[2];
    size_t found = 0, others_active = 0;
    int ret = 1, r;
    if (db_begin(c->catalog, err, sizeof(err)) != CAL_OK ||
        db_query(c->catalog, "SELECT shard_id, state FROM shards ORDER BY shard_id FOR UPDATE",
                 NULL, 0, &st, err, sizeof(err)) != CAL_OK)
        goto out;
    while ((r = db_fetch(st, col, 2, err, sizeof(err))) > 0) {
        bool self = col[0].type == DB_INT && col[0].i == opt.shard_id;
        found += self;
        others_active += !self && col[1].type == DB_STR && strcmp(col[1].s, "active") == 0;
    }
    if (r < 0)
        goto out;
    if (found == 0) {
        snprintf(err, sizeof(err), "--shard %lld: no such shard (see status)",
                 (long long)opt.shard_id);
        goto out;
    }
    if (strcmp(state, "draining") == 0 && others_active == 0) {
        snprintf(err, sizeof(err),
                 "shard %lld is the only active shard; its vbuckets would have nowhere to go"
                 " (add-shard another first)",
                 (long long)opt.shard_id);
        goto out;
    }
    /* Under the lock a new move to the shard waits for (SQL_NEW_MOVE): the
     * moves counted here are all that will still bring vbuckets to it. */
    struct db_val q[1] = {DB_INT_V(opt.shard_id)};
    long long incoming = 0;
    if (strcmp(state, "draining") == 0 &&
        (incoming = catalog_count(c->catalog, SQL_MOVES_TO, q, 1, err, sizeof(err))) < 0)
        goto out;
    struct db_val p[2] = {DB_CSTR_V(state), DB_INT_V(opt.shard_id)};
    if (catalog_write_commit(c->catalog, "UPDATE shards SET state = ? WHERE shard_id = ?", p, 2,
                             err, sizeof(err)))
        ret = 0;
    if (ret == 0 && incoming > 0)
        printf("shard %lld: %lld unfinished moves still bring vbuckets to it: they finish there,"
               " and the next rebalance moves those away too\n",
               (long long)opt.shard_id, incoming);
out:
    if (ret != 0) {
        db_rollback(c->catalog);
        fprintf(stderr, "calendar-rebalance: %s: %s\n",
                strcmp(state, "draining") == 0 ? "drain-shard" : "activate-shard", err);
        return 1;
    }
    printf("shard %lld %s: %s\n", (long long)opt.shard_id, state, then);
    return 0;
}

static int
cmd_drain_shard(struct cluster *c)
{
    if (named_shard(c) == NULL)
        return 2;
    return set_shard_state(c, "draining", "the next rebalance moves all its vbuckets away");
}

static int
cmd_activate_shard(struct cluster *c)
{
    if (named_shard(c) == NULL)
        return 2;
    return set_shard_state(c, "active", "the next rebalance may move vbuckets to it");
}

/* Under the shard's catalog row, locked: a drained shard, owning no
 * vbucket and in no unfinished move, leaves the catalog. */
static const char SQL_SHARD_STATE_LOCK[] = "SELECT state FROM shards WHERE shard_id = ? FOR UPDATE";
static const char SQL_SHARD_VBUCKETS[] = "SELECT COUNT(*) FROM vbuckets WHERE shard_id = ?";
static const char SQL_SHARD_MOVES[] =
    "SELECT COUNT(*) FROM moves WHERE (source_shard = ? OR target_shard = ?)"
    " AND phase NOT IN ('done', 'abandoned')";

static int
cmd_remove_shard(struct cluster *c)
{
    char err[1024] = "", state[17] = "";
    if (named_shard(c) == NULL)
        return 2;
    struct db_val p[2] = {DB_INT_V(opt.shard_id), DB_INT_V(opt.shard_id)}, col[1];
    struct db_stmt *st;
    long long vbuckets = -1, moves = -1;
    int ret = 1;
    if (db_begin(c->catalog, err, sizeof(err)) != CAL_OK)
        goto out;
    if (db_query(c->catalog, SQL_SHARD_STATE_LOCK, p, 1, &st, err, sizeof(err)) != CAL_OK)
        goto out;
    if (db_fetch(st, col, 1, err, sizeof(err)) > 0 && col[0].type == DB_STR)
        cal_strlcpy(state, col[0].s, sizeof(state));
    cluster_drain(st);
    if ((vbuckets = catalog_count(c->catalog, SQL_SHARD_VBUCKETS, p, 1, err, sizeof(err))) < 0 ||
        (moves = catalog_count(c->catalog, SQL_SHARD_MOVES, p, 2, err, sizeof(err))) < 0)
        goto out;
    if (strcmp(state, "draining") != 0)
        snprintf(err, sizeof(err), "shard %lld is %s: drain-shard and rebalance it first",
                 (long long)opt.shard_id, state[0] ? state : "gone");
    else if (vbuckets > 0)
        snprintf(err, sizeof(err), "shard %lld still owns %lld vbuckets: rebalance first",
                 (long long)opt.shard_id, vbuckets);
    else if (moves > 0)
        snprintf(err, sizeof(err),
                 "shard %lld is in %lld unfinished moves: resume or abandon them first",
                 (long long)opt.shard_id, moves);
    else if (catalog_write_commit(c->catalog, "DELETE FROM shards WHERE shard_id = ?", p, 1, err,
                                  sizeof(err)))
        ret = 0;
out:
    if (ret != 0) {
        db_rollback(c->catalog);
        fprintf(stderr, "calendar-rebalance: remove-shard: %s\n", err);
        return 1;
    }
    /* Its server may hold more than this shard: the catalog (on the first
     * shard's server, as the stack sets it up), or another shard. */
    const struct shard_info *gone = named_shard(c), *other = NULL;
    for (size_t i = 0; gone != NULL && i < c->map->nshards && other == NULL; i++)
        if (c->map->shards[i].shard_id != gone->shard_id &&
            strcmp(c->map->shards[i].host, gone->host) == 0 && c->map->shards[i].port == gone->port)
            other = &c->map->shards[i];
    bool catalog = gone != NULL && strcmp(c->catalog_conf.host, gone->host) == 0 &&
                   c->catalog_conf.port == gone->port;
    if (gone != NULL && (catalog || other != NULL)) {
        printf("shard %lld removed from the catalog: no calendard or tool uses it now; its server"
               " %s:%u also holds %s%s%s: keep the server, drop database %s there\n",
               (long long)opt.shard_id, gone->host, gone->port, catalog ? "the catalog" : "",
               catalog && other != NULL ? " and " : "", other != NULL ? "another shard" : "",
               gone->db_name);
        return 0;
    }
    printf("shard %lld removed from the catalog: no calendard or tool uses it now; its server"
           " can be stopped\n",
           (long long)opt.shard_id);
    return 0;
}

/* 0 when --vbucket (if given) names a vbucket of the map, else 2 and a message. */
static int
check_vbucket(const struct cluster *c)
{
    if (opt.vbucket >= (int64_t)c->map->num_vbuckets) {
        fprintf(stderr, "calendar-rebalance: --vbucket %lld: the catalog has vbuckets 0-%u\n",
                (long long)opt.vbucket, c->map->num_vbuckets - 1);
        return 2;
    }
    return 0;
}

static int
cmd_move(struct cluster *c)
{
    char err[1024];
    if (check_vbucket(c) != 0)
        return 2;
    const struct shard_info *to = shardmap_shard(c->map, (uint32_t)opt.to);
    if (to == NULL) {
        fprintf(stderr, "calendar-rebalance: --to %lld: no such shard (see status)\n",
                (long long)opt.to);
        return 2;
    }
    if (strcmp(to->state, "active") != 0) {
        fprintf(stderr,
                "calendar-rebalance: --to %lld: the shard is %s, not active (activate-shard it"
                " first)\n",
                (long long)opt.to, to->state);
        return 2;
    }
    struct move_opts mo = {
        .max_freeze_ms = opt.max_freeze_ms, .crash_after = opt.crash_after, .progress = progress};
    struct move_progress res;
    cal_status rc =
        move_vbucket(c, (uint32_t)opt.vbucket, (uint32_t)opt.to, &mo, &res, err, sizeof(err));
    if (rc != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: move: %s\n", err);
        return exit_of(rc);
    }
    nothing_moved(&res);
    return 0;
}

struct worker {
    struct plan_move *moves;
    size_t n;
    size_t *next;
    int failed, failed_for_good; /* failed_for_good: not to be retried (exit_of 1) */
    double max_pause_ms, sum_pause_ms;
    unsigned done, paused; /* paused: moves whose write pause this run measured */
};

static void *
run_worker(void *arg)
{
    struct worker *w = arg;
    struct cluster c;
    char err[1024];
    if (open_cluster(&c) != 0) {
        w->failed++;
        w->failed_for_good++;
        return NULL;
    }
    struct move_opts mo = {
        .max_freeze_ms = opt.max_freeze_ms, .crash_after = opt.crash_after, .progress = progress};
    for (;;) {
        pthread_mutex_lock(&out_lock);
        size_t i = (*w->next)++;
        pthread_mutex_unlock(&out_lock);
        if (i >= w->n)
            break;
        struct move_progress res;
        cal_status rc =
            move_vbucket(&c, w->moves[i].vbucket, w->moves[i].target, &mo, &res, err, sizeof(err));
        if (rc != CAL_OK) {
            fprintf(stderr, "calendar-rebalance: vbucket %u: %s\n", w->moves[i].vbucket, err);
            w->failed++;
            w->failed_for_good += exit_of(rc) != EXIT_RETRY;
            /* The plan's other moves are independent; a lost catalog
             * session would fail them all. */
            if (db_broken(c.catalog))
                break;
            continue;
        }
        w->done++;
        nothing_moved(&res);
        if (res.freeze_ms < 0)
            continue; /* not measured: another run made the cutover */
        w->paused++;
        w->sum_pause_ms += res.freeze_ms;
        if (res.freeze_ms > w->max_pause_ms)
            w->max_pause_ms = res.freeze_ms;
    }
    cluster_close(&c);
    return NULL;
}

static int
cmd_plan(struct cluster *c, bool execute)
{
    char err[1024];
    struct plan_move *moves;
    size_t n;
    cal_status rc = plan_load(c, &moves, &n, err, sizeof(err));
    if (rc != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: plan: %s\n", err);
        return exit_of(rc); /* 4 when a shard did not answer */
    }
    uint64_t listings = 0;
    for (size_t i = 0; i < n; i++) {
        listings += moves[i].weight;
        if (!execute)
            printf("move vbucket %u: shard %u -> %u (%llu listings)\n", moves[i].vbucket,
                   moves[i].source, moves[i].target, (unsigned long long)moves[i].weight);
    }
    printf("plan: %zu moves, %llu listings\n", n, (unsigned long long)listings);
    if (!execute || n == 0) {
        free(moves);
        return 0;
    }
    int nthreads = opt.parallel;
    pthread_t th[PARALLEL_MAX];
    struct worker w[PARALLEL_MAX];
    size_t next = 0;
    uint64_t t0 = cal_mono_us();
    for (int i = 0; i < nthreads; i++) {
        w[i] = (struct worker){.moves = moves, .n = n, .next = &next};
        pthread_create(&th[i], NULL, run_worker, &w[i]);
    }
    int failed = 0, failed_for_good = 0;
    unsigned done = 0, paused = 0;
    double max_pause = 0, sum_pause = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        failed += w[i].failed;
        failed_for_good += w[i].failed_for_good;
        done += w[i].done;
        paused += w[i].paused;
        sum_pause += w[i].sum_pause_ms;
        if (w[i].max_pause_ms > max_pause)
            max_pause = w[i].max_pause_ms;
    }
    /* A worker whose catalog session broke takes no more moves: those it
     * never started are not journaled, and only another rebalance (not
     * resume) plans them again. */
    size_t untried = n - (next < n ? next : n); /* next: the moves the workers took */
    const char *hint = failed && untried ? " (failures above; run resume, then rebalance again)"
                       : failed          ? " (failures above; run resume)"
                       : untried         ? " (run rebalance again)"
                                         : "";
    printf("rebalance: %u of %zu moves done in %.1fs, write pause per vbucket avg %.1f ms max "
           "%.1f ms%s\n",
           done, n, (double)(cal_mono_us() - t0) / 1e6, paused ? sum_pause / paused : 0.0,
           max_pause, hint);
    if (untried)
        printf("rebalance: %zu planned moves not started\n", untried);
    free(moves);
    return failed_for_good ? 1 : failed || untried ? EXIT_RETRY : 0;
}

static int
cmd_verify(struct cluster *c)
{
    char err[1024];
    struct verify_report rep;
    if (check_vbucket(c) != 0)
        return 2;
    cal_status rc = verify_run(c, opt.vbucket, &rep, stdout, err, sizeof(err));
    if (rc != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: verify: %s\n", err);
        return exit_of(rc);
    }
    printf("verify: vbuckets=%llu compared=%llu missing=%llu extra=%llu different=%llu "
           "fence_errors=%llu collisions=%llu stray=%llu misrouted=%llu moving=%llu\n",
           (unsigned long long)rep.vbuckets, (unsigned long long)rep.compared,
           (unsigned long long)rep.missing, (unsigned long long)rep.extra,
           (unsigned long long)rep.different, (unsigned long long)rep.fence_errors,
           (unsigned long long)rep.collisions, (unsigned long long)rep.stray,
           (unsigned long long)rep.misrouted, (unsigned long long)rep.moving);
    if (rep.missing || rep.extra || rep.different || rep.fence_errors || rep.stray || rep.misrouted)
        return 3;
    return rep.moving ? EXIT_RETRY : 0;
}

static int
cmd_resume(struct cluster *c)
{
    char err[1024];
    unsigned resumed;
    struct move_opts mo = {
        .max_freeze_ms = opt.max_freeze_ms, .crash_after = opt.crash_after, .progress = progress};
    cal_status rc = move_resume(c, &mo, &resumed, err, sizeof(err));
    if (rc != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: resume: %s\n", err);
        return exit_of(rc);
    }
    printf("resume: %u move%s finished\n", resumed, resumed == 1 ? "" : "s");
    return 0;
}

static int
cmd_abandon(struct cluster *c)
{
    char err[1024];
    struct move_abandoned a;
    if (check_vbucket(c) != 0)
        return 2;
    if (move_abandon(c, (uint32_t)opt.vbucket, &a, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: abandon: %s\n", err);
        return 1;
    }
    printf("abandon: move %llu of vbucket %lld (shard %u -> %u, phase %s) abandoned; ",
           (unsigned long long)a.move_id, (long long)opt.vbucket, a.source, a.target, a.phase);
    if (a.target_cleared)
        printf("the target's copied rows are deleted\n");
    else
        printf("the target's copied rows stay until a later move to it deletes them first (%s)\n",
               a.target_error);
    return 0;
}

static int
cmd_plan_only(struct cluster *c)
{
    return cmd_plan(c, false);
}

static int
cmd_rebalance(struct cluster *c)
{
    return cmd_plan(c, !opt.dry_run);
}

static const struct command {
    const char *name;
    unsigned takes; /* OPT_* */
    unsigned needs; /* OPT_* it cannot run without */
    int (*run)(struct cluster *c);
} COMMANDS[] = {
    {"status", 0, 0, cmd_status},
    {"add-shard", OPT_SHARD | OPT_SCHEMA_DIR, OPT_SHARD, cmd_add_shard},
    {"drain-shard", OPT_SHARD, OPT_SHARD, cmd_drain_shard},
    {"activate-shard", OPT_SHARD, OPT_SHARD, cmd_activate_shard},
    {"remove-shard", OPT_SHARD, OPT_SHARD, cmd_remove_shard},
    {"plan", 0, 0, cmd_plan_only},
    {"move", OPT_VBUCKET | OPT_TO | OPT_MAX_FREEZE | OPT_CRASH_AFTER, OPT_VBUCKET | OPT_TO,
     cmd_move},
    {"rebalance", OPT_DRY_RUN | OPT_PARALLEL | OPT_MAX_FREEZE | OPT_CRASH_AFTER, 0, cmd_rebalance},
    {"verify", OPT_VBUCKET, 0, cmd_verify},
    {"resume", OPT_MAX_FREEZE | OPT_CRASH_AFTER, 0, cmd_resume},
    {"abandon", OPT_VBUCKET, OPT_VBUCKET, cmd_abandon},
};

/* By bit number of OPT_*. */
static const char *const OPT_NAMES[] = {
    "--vbucket",       "--to",      "--shard",       "--parallel",
    "--max-freeze-ms", "--dry-run", "--crash-after", "--schema-dir"};

static const char *const CRASH_PHASES[] = {"copy",   "cutover", "cutover-chunk",
                                           "target", "catalog", "cleanup"};

/* 0 and *out when s is a decimal integer in [min, max] (digits only: no
 * sign, no blanks; min >= 0), else -1 and a message naming the option. */
static int
parse_num(const char *name, const char *s, long long min, long long max, long long *out)
{
    char *end = NULL;
    long long v = -1;
    if (s[0] >= '0' && s[0] <= '9') {
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno == ERANGE || *end != '\0')
            v = -1;
    }
    if (v < min || v > max) {
        fprintf(stderr, "calendar-rebalance: %s '%s': want an integer from %lld to %lld\n", name, s,
                min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* 0 when the options fit cmd, else 2 and a message. */
static int
check_options(const struct command *cmd)
{
    unsigned extra = opt.given & ~cmd->takes, missing = cmd->needs & ~opt.given;
    for (size_t i = 0; i < CAL_ARRAY_LEN(OPT_NAMES); i++) {
        if (extra & (1u << i)) {
            fprintf(stderr, "calendar-rebalance: %s does not take %s (see --help)\n", cmd->name,
                    OPT_NAMES[i]);
            return 2;
        }
        if (missing & (1u << i)) {
            fprintf(stderr, "calendar-rebalance: %s needs %s (see --help)\n", cmd->name,
                    OPT_NAMES[i]);
            return 2;
        }
    }
    long long id;
    if (strcmp(cmd->name, "drain-shard") == 0 || strcmp(cmd->name, "activate-shard") == 0 ||
        strcmp(cmd->name, "remove-shard") == 0) {
        if (parse_num("--shard", opt.shard, 0, UINT32_MAX, &id) != 0)
            return 2;
        opt.shard_id = id;
    }
    if (opt.crash_after != NULL) {
        size_t i = 0;
        while (i < CAL_ARRAY_LEN(CRASH_PHASES) && strcmp(CRASH_PHASES[i], opt.crash_after) != 0)
            i++;
        if (i == CAL_ARRAY_LEN(CRASH_PHASES)) {
            fprintf(stderr, "calendar-rebalance: --crash-after '%s': no such phase\n",
                    opt.crash_after);
            return 2;
        }
    }
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option lopts[] = {{"config", required_argument, NULL, 'c'},
                                          {"schema-dir", required_argument, NULL, 'S'},
                                          {"vbucket", required_argument, NULL, 'v'},
                                          {"to", required_argument, NULL, 't'},
                                          {"shard", required_argument, NULL, 's'},
                                          {"parallel", required_argument, NULL, 'p'},
                                          {"max-freeze-ms", required_argument, NULL, 'f'},
                                          {"dry-run", no_argument, NULL, 'n'},
                                          {"crash-after", required_argument, NULL, 'K'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    char err[1024];
    int ch;
    long long v;
    migrate_default_dir(opt.schema, sizeof(opt.schema));
    while ((ch = getopt_long(argc, argv, "hc:", lopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            opt.config = optarg;
            break;
        case 'S':
            cal_strlcpy(opt.schema, optarg, sizeof(opt.schema));
            opt.given |= OPT_SCHEMA_DIR;
            break;
        case 'v':
            if (parse_num("--vbucket", optarg, 0, UINT32_MAX, &v) != 0)
                return 2;
            opt.vbucket = v;
            opt.given |= OPT_VBUCKET;
            break;
        case 't':
            if (parse_num("--to", optarg, 0, UINT32_MAX, &v) != 0)
                return 2;
            opt.to = v;
            opt.given |= OPT_TO;
            break;
        case 's':
            opt.shard = optarg; /* an id or HOST:PORT/DB: checked with the command */
            opt.given |= OPT_SHARD;
            break;
        case 'p':
            if (parse_num("--parallel", optarg, 1, PARALLEL_MAX, &v) != 0)
                return 2;
            opt.parallel = (int)v;
            opt.given |= OPT_PARALLEL;
            break;
        case 'f':
            if (parse_num("--max-freeze-ms", optarg, 0, MAX_FREEZE_MS_MAX, &v) != 0)
                return 2;
            opt.max_freeze_ms = (unsigned)v;
            opt.given |= OPT_MAX_FREEZE;
            break;
        case 'n':
            opt.dry_run = true;
            opt.given |= OPT_DRY_RUN;
            break;
        case 'K':
            opt.crash_after = optarg;
            opt.given |= OPT_CRASH_AFTER;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || opt.config == NULL) {
        usage(stderr);
        return 2;
    }
    const struct command *cmd = NULL;
    for (size_t i = 0; i < CAL_ARRAY_LEN(COMMANDS) && cmd == NULL; i++)
        if (strcmp(argv[optind], COMMANDS[i].name) == 0)
            cmd = &COMMANDS[i];
    if (cmd == NULL) {
        fprintf(stderr, "calendar-rebalance: unknown command '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (check_options(cmd) != 0)
        return 2;
    conf_defaults(items, CAL_ARRAY_LEN(items), &conf);
    if (conf_load(items, CAL_ARRAY_LEN(items), &conf, opt.config, err, sizeof(err)) != CAL_OK ||
        db_conf_check_timeouts(&conf.catalog, opt.config, "catalog", err, sizeof(err)) != CAL_OK ||
        db_conf_read_password(&conf.catalog, err, sizeof(err)) != CAL_OK ||
        db_conf_read_password(&conf.shard, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-rebalance: %s\n", err);
        return 2;
    }
    /* Moves wait on the fence row behind in-flight writes: allow them time,
     * and the client longer still (db_conf_check_timeouts). */
    conf.shard.lock_wait_timeout_s = 10;
    if (conf.shard.read_timeout_ms < (10 + DB_LOCK_WAIT_MARGIN_S) * 1000)
        conf.shard.read_timeout_ms = (10 + DB_LOCK_WAIT_MARGIN_S) * 1000;
    struct cluster c;
    if (open_cluster(&c) != 0)
        return 1;
    int rc = cmd->run(&c);
    cluster_close(&c);
    return rc;
}
