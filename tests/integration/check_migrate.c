/* Integration tests of the schema migrations against a shard of the stack:
 * every file can run again over what it already created, so a migration
 * cut short (a lost connection, a killed tool) is finished by running the
 * tool again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/db.h"
#include "sharding/catalog.h"
#include "sharding/migrate.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

static struct testenv env;

/* Runs sql, whose one parameter is v. */
static void
exec_int(struct db *db, const char *sql, int64_t v)
{
    char err[256];
    struct db_val p[1] = {DB_INT_V(v)};
    ck_assert_msg(db_query(db, sql, p, 1, NULL, err, sizeof(err)) == CAL_OK, "%s", err);
}

static int64_t
count(struct db *db, const char *sql, int64_t version)
{
    char err[256];
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(version)}, c[1];
    ck_assert_msg(db_query(db, sql, p, 1, &st, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
    int64_t n = c[0].i;
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        ;
    return n;
}

/* Unchecked teardown, in this process: version 1 is recorded again even
 * when the test crashed between forgetting and re-applying it. */
static void
record_version_1(void)
{
    char err[256];
    struct db *db = testenv_connect_shard(&env, 0, err, sizeof(err));
    if (db == NULL || db_exec(db,
                              "INSERT IGNORE INTO schema_migrations (version, name)"
                              " VALUES (1, '001_init.sql')",
                              err, sizeof(err)) != CAL_OK)
        fprintf(stderr, "check_migrate: could not record version 1: %s\n", err);
    db_close(db);
}

START_TEST(a_migration_whose_record_was_lost_runs_again)
{
    char err[256];
    struct db *db = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    int version = 0, applied = -1;
    ck_assert(migrate_version(db, &version, err, sizeof(err)) == CAL_OK);
    ck_assert_int_ge(version, 1);
    /* The file ran (its tables hold the stack's data) but its record never
     * landed: the next run applies it again over what is there. */
    ck_assert(db_exec(db, "DELETE FROM schema_migrations WHERE version = 1", err, sizeof(err)) ==
              CAL_OK);
    cal_status rc = migrate_apply(db, "schema/shard", &applied, err, sizeof(err));
    ck_assert_msg(rc == CAL_OK, "%s", err);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(count(db, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", 1), 1);
    /* Nothing else to apply the next time. */
    ck_assert(migrate_apply(db, "schema/shard", &applied, err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(applied, 0);
    db_close(db);
}
END_TEST

/* A session on shard 0 whose vbucket_owner and listings are temporary
 * tables, empty, which hide the stack's own in it. */
static struct db *
shadowed_shard(void)
{
    char err[256];
    struct db *db = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    ck_assert_msg(db_exec(db,
                          "CREATE TEMPORARY TABLE vbucket_owner (vbucket INT UNSIGNED NOT NULL"
                          " PRIMARY KEY, epoch BIGINT UNSIGNED NOT NULL)",
                          err, sizeof(err)) == CAL_OK,
                  "%s", err);
    ck_assert_msg(db_exec(db, "CREATE TEMPORARY TABLE listings (listing_id BIGINT PRIMARY KEY)",
                          err, sizeof(err)) == CAL_OK,
                  "%s", err);
    return db;
}

/* A bootstrap cut short and run again with another shard list must not
 * leave a shard owning vbuckets of both layouts (two owners of one vbucket). */
START_TEST(a_bootstrap_rerun_with_other_shards_is_refused)
{
    char err[256];
    struct db *db = shadowed_shard();
    const char *owned = "SELECT COUNT(*) FROM vbucket_owner WHERE ? >= 0";
    ck_assert_msg(catalog_assign_owner_rows(db, 16, 3, 0, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(count(db, owned, 0), 6); /* 0, 3, 6, 9, 12, 15 */
    ck_assert_int_eq(catalog_assign_owner_rows(db, 16, 2, 0, err, sizeof(err)), CAL_EINVAL);
    ck_assert_msg(strstr(err, "another shard list") != NULL, "%s", err);
    ck_assert_int_eq(count(db, owned, 0), 6);
    /* The same layout again is a no-op. */
    ck_assert_msg(catalog_assign_owner_rows(db, 16, 3, 0, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(count(db, owned, 0), 6);
    db_close(db);
}
END_TEST

/* A bootstrap run again against a lost catalog must not give a shard back
 * the vbuckets it moved away since (their new owner would have a twin), nor
 * fence a shard that holds listings but owns nothing. */
START_TEST(a_bootstrap_rerun_after_moves_is_refused)
{
    char err[256];
    struct db *db = shadowed_shard();
    const char *owned = "SELECT COUNT(*) FROM vbucket_owner WHERE ? >= 0";
    ck_assert_msg(catalog_assign_owner_rows(db, 16, 3, 0, err, sizeof(err)) == CAL_OK, "%s", err);
    /* Vbucket 3 moved away. */
    ck_assert(db_exec(db, "DELETE FROM vbucket_owner WHERE vbucket = 3", err, sizeof(err)) ==
              CAL_OK);
    ck_assert_int_eq(catalog_assign_owner_rows(db, 16, 3, 0, err, sizeof(err)), CAL_EINVAL);
    ck_assert_msg(strstr(err, "owns 5 of the 6 vbuckets") != NULL, "%s", err);
    ck_assert_int_eq(count(db, owned, 0), 5);
    /* Moved away and back: all six, one at a later epoch. */
    ck_assert(db_exec(db, "INSERT INTO vbucket_owner VALUES (3, 3)", err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(catalog_assign_owner_rows(db, 16, 3, 0, err, sizeof(err)), CAL_EINVAL);
    ck_assert_msg(strstr(err, "epochs up to 3") != NULL, "%s", err);
    /* Every vbucket moved away, the listings of some left. */
    ck_assert(db_exec(db, "DELETE FROM vbucket_owner", err, sizeof(err)) == CAL_OK);
    ck_assert(db_exec(db, "INSERT INTO listings VALUES (42)", err, sizeof(err)) == CAL_OK);
    ck_assert_int_eq(catalog_assign_owner_rows(db, 16, 3, 0, err, sizeof(err)), CAL_EINVAL);
    ck_assert_msg(strstr(err, "holds listings") != NULL, "%s", err);
    ck_assert_int_eq(count(db, owned, 0), 0);
    ck_assert_int_eq(catalog_shard_is_empty(db, err, sizeof(err)), CAL_EINVAL);
    db_close(db);
}
END_TEST

/* Scratch databases on shard 0's server for a bootstrap of a cluster of
 * its own: [0] its catalog, [1..3] shards A, B, C. */
static char scratch[4][48];

/* Unchecked fixture, in this process (a test's own process ends with it):
 * the names, and the databases dropped even when the test failed. */
static void
name_scratch(void)
{
    uint64_t tag = testenv_random48();
    static const char *const what[] = {"cat", "a", "b", "c"};
    for (int i = 0; i < 4; i++)
        snprintf(scratch[i], sizeof(scratch[i]), "calendar_t%llu_%s", (unsigned long long)tag,
                 what[i]);
}

static void
drop_scratch(void)
{
    char sql[512];
    if (scratch[0][0] == '\0')
        return;
    snprintf(sql, sizeof(sql),
             "DROP DATABASE IF EXISTS `%s`; DROP DATABASE IF EXISTS `%s`;"
             " DROP DATABASE IF EXISTS `%s`; DROP DATABASE IF EXISTS `%s`",
             scratch[0], scratch[1], scratch[2], scratch[3]);
    if (testenv_sql_admin(&env, 0, sql) != 0)
        fprintf(stderr, "check_migrate: could not drop the scratch databases\n");
}

/* calendar-admin --config conf bootstrap --vbuckets 16 with shards a and b
 * (indexes into scratch), on shard 0's server. */
static int
bootstrap(const char *conf, unsigned port, int a, int b, char *out, size_t outlen)
{
    char sa[96], sb[96];
    snprintf(sa, sizeof(sa), "127.0.0.1:%u/%s", port, scratch[a]);
    snprintf(sb, sizeof(sb), "127.0.0.1:%u/%s", port, scratch[b]);
    char *argv[] = {"bin/calendar-admin",
                    "--config",
                    (char *)conf,
                    "bootstrap",
                    "--vbuckets",
                    "16",
                    "--shard",
                    sa,
                    "--shard",
                    sb,
                    NULL};
    return proc_run(argv, out, outlen, 60);
}

/* Shard 1 is registered at B's address; a bootstrap run again (its map
 * lost) with C as shard 1 must stop before C gets a fence row: a shard
 * unregistered that owns vbuckets becomes their second owner the day it
 * is added. */
/* Creates the scratch databases, and an admin config for a cluster of them
 * into conf (a mkstemp template; the caller unlinks it). Returns the port
 * of shard 0's server, where they are. */
static unsigned
scratch_cluster(char *conf)
{
    char err[512], sql[2048];
    size_t off = 0;
    for (int i = 0; i < 4; i++)
        off += (size_t)snprintf(sql + off, sizeof(sql) - off,
                                "CREATE DATABASE `%s`; GRANT ALL PRIVILEGES ON `%s`.* TO"
                                " 'cal_admin'@'127.0.0.1'; GRANT ALL PRIVILEGES ON `%s`.* TO"
                                " 'cal_admin'@'localhost'; ",
                                scratch[i], scratch[i], scratch[i]);
    ck_assert_int_eq(testenv_sql_admin(&env, 0, sql), 0);
    struct db_conf dc;
    memset(&dc, 0, sizeof(dc));
    ck_assert_msg(db_conf_parse_dsn(&dc, env.shard_dsns[0], err, sizeof(err)) == CAL_OK, "%s", err);
    int fd = mkstemp(conf);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f,
            "[catalog]\nhost = 127.0.0.1\nport = %u\ndatabase = %s\nuser = cal_admin\n"
            "password_file = %s/secrets/admin.password\n[shards]\nuser = cal_admin\n"
            "password_file = %s/secrets/admin.password\n",
            dc.port, scratch[0], env.stack_dir, env.stack_dir);
    fclose(f);
    return dc.port;
}

/* scratch_cluster() bootstrapped with shards A and B (16 vbuckets); a
 * session on their server. */
static struct db *
bootstrapped_scratch(char *conf, unsigned *port)
{
    char err[512], out[4096];
    *port = scratch_cluster(conf);
    int rc = bootstrap(conf, *port, 1, 2, out, sizeof(out));
    ck_assert_msg(rc == 0, "bootstrap A B: exit %d: %s", rc, out);
    struct db *db = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    return db;
}

START_TEST(a_bootstrap_checks_the_registry_before_fencing)
{
    char err[512], sql[512], conf[] = "/tmp/check_migrate_admin.XXXXXX", out[4096];
    unsigned port;
    struct db *db = bootstrapped_scratch(conf, &port);
    snprintf(sql, sizeof(sql), "DELETE FROM `%s`.vbuckets", scratch[0]);
    ck_assert_msg(db_exec(db, sql, err, sizeof(err)) == CAL_OK, "%s", err);
    int rc = bootstrap(conf, port, 1, 3, out, sizeof(out));
    unlink(conf);
    ck_assert_msg(rc == 1 && strstr(out, "shard 1 is already registered with another address"),
                  "bootstrap A C: exit %d: %s", rc, out);
    snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM `%s`.vbucket_owner WHERE ? >= 0", scratch[3]);
    ck_assert_int_eq(count(db, sql, 0), 0);
    db_close(db);
}
END_TEST

/* A shard holding a reservation id past the catalog's next one (made from
 * the clock by an older release: 7.25e15 and up from 2027-01-04): migrate
 * moves the next id past it, so no block hands it out again. */
START_TEST(migrate_moves_the_next_id_past_every_shard)
{
    char sql[1024], conf[] = "/tmp/check_migrate_admin.XXXXXX", out[4096];
    unsigned port;
    struct db *db = bootstrapped_scratch(conf, &port);
    snprintf(sql, sizeof(sql),
             "INSERT INTO `%s`.reservations (reservation_id, listing_id, vbucket, check_in,"
             " check_out, guest_id, status, total_price, currency, idempotency_key, request_hash,"
             " version) VALUES (7250000000000005 + ?, 1, 1, '2027-01-05', '2027-01-06', 1,"
             " 'confirmed', 100, 'USD', 'old-release', '0', 1)",
             scratch[2]);
    exec_int(db, sql, 0);
    char *argv[] = {"bin/calendar-admin", "--config", conf, "migrate", NULL};
    int rc = proc_run(argv, out, sizeof(out), 60);
    unlink(conf);
    ck_assert_msg(rc == 0 && strstr(out, "the next block starts after 7250000000000005"),
                  "migrate: exit %d: %s", rc, out);
    snprintf(sql, sizeof(sql), "SELECT next_id FROM `%s`.id_blocks WHERE ? >= 0", scratch[0]);
    ck_assert_int_eq(count(db, sql, 0), 7250000000000006);
    db_close(db);
}
END_TEST

/* A migration file whose name is off would never run, and the tool would
 * say the schema is up to date: the directory is refused instead. */
START_TEST(a_misnamed_migration_is_refused)
{
    char err[512], dir[] = "/tmp/check_migrate.XXXXXX", path[600];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    const char *names[] = {"001_a.sql", "002-b.sql"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("SELECT 1;\n", f);
        fclose(f);
    }
    struct db *db = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    int applied = -1;
    cal_status rc = migrate_apply(db, dir, &applied, err, sizeof(err));
    db_close(db);
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    ck_assert_int_eq(rc, CAL_EINVAL);
    ck_assert_msg(strstr(err, "002-b.sql is not a migration's name") != NULL, "%s", err);
}
END_TEST

int
main(void)
{
    char err[256];
    if (testenv_load(&env, NULL, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "check_migrate: %s\n", err);
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("migrate");
    TCase *tc = tcase_create("shard");
    tcase_set_timeout(tc, 30);
    tcase_add_unchecked_fixture(tc, NULL, record_version_1);
    tcase_add_test(tc, a_migration_whose_record_was_lost_runs_again);
    tcase_add_test(tc, a_bootstrap_rerun_with_other_shards_is_refused);
    tcase_add_test(tc, a_bootstrap_rerun_after_moves_is_refused);
    tcase_add_test(tc, a_misnamed_migration_is_refused);
    suite_add_tcase(s, tc);
    tc = tcase_create("bootstrap");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, name_scratch, drop_scratch);
    tcase_add_test(tc, a_bootstrap_checks_the_registry_before_fencing);
    suite_add_tcase(s, tc);
    tc = tcase_create("old_ids");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, name_scratch, drop_scratch);
    tcase_add_test(tc, migrate_moves_the_next_id_past_every_shard);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
