/* Integration tests of the schema migrations against a shard of the stack:
 * every file can run again over what it already created, so a migration
 * cut short (a lost connection, a killed tool) is finished by running the
 * tool again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "sharding/catalog.h"
#include "sharding/migrate.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

static struct testenv env;

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

/* A bootstrap cut short and run again with another shard list must not
 * leave a shard owning vbuckets of both layouts (two owners of one vbucket).
 * On a temporary vbucket_owner, which hides the stack's own in this session. */
START_TEST(a_bootstrap_rerun_with_other_shards_is_refused)
{
    char err[256];
    struct db *db = testenv_connect_shard(&env, 0, err, sizeof(err));
    ck_assert_msg(db != NULL, "%s", err);
    ck_assert_msg(db_exec(db,
                          "CREATE TEMPORARY TABLE vbucket_owner (vbucket INT UNSIGNED NOT NULL"
                          " PRIMARY KEY, epoch BIGINT UNSIGNED NOT NULL)",
                          err, sizeof(err)) == CAL_OK,
                  "%s", err);
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
    suite_add_tcase(s, tc);
    return unit_run(s);
}
