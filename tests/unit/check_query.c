/* Unit tests of cdc/query: the statements MariaDB writes as Query events,
 * as they appear in a shard's binlog (calendard's savepoints, the schema
 * migrations, the stack's grants, TRUNCATE, statement-logged DML, XA), and
 * what the relay makes of them. */
#include <string.h>

#include "cdc/query.h"
#include "tests/lib/unit.h"

static const char *const tables[] = {"listings", "nights", "reservations", NULL};
static const struct query_target target = {"calendar_shard0", tables};
enum { LISTINGS = 1, NIGHTS = 2, RESERVATIONS = 4 };

static enum query_kind
classify(const char *sql, const char *db, uint32_t *named)
{
    return query_classify(sql, strlen(sql), db, db != NULL ? strlen(db) : 0, &target, named);
}

#define KIND(sql, db, want)                                                                        \
    do {                                                                                           \
        uint32_t named_;                                                                           \
        ck_assert_msg(classify(sql, db, &named_) == (want), "%s (db %s): got %d, want %d", sql,    \
                      db ? db : "-", (int)classify(sql, db, &named_), (int)(want));                \
    } while (0)

#define FLUSH(sql, db, want_named)                                                                 \
    do {                                                                                           \
        uint32_t named_ = 99;                                                                      \
        ck_assert_msg(classify(sql, db, &named_) == QUERY_FLUSH, "%s (db %s): no flush", sql,      \
                      db ? db : "-");                                                              \
        ck_assert_msg(named_ == (want_named), "%s: named %u, want %u", sql, named_,                \
                      (unsigned)(want_named));                                                     \
    } while (0)

/* The frame of a transaction, as the binlog writes it: calendard's group
 * commits use SAVEPOINT b / ROLLBACK TO SAVEPOINT b, written "SAVEPOINT `b`"
 * and "ROLLBACK TO `b`"; only COMMIT and ROLLBACK end a group. */
START_TEST(transaction_frame)
{
    const char *db = "calendar_shard0";
    KIND("COMMIT", db, QUERY_COMMIT);
    KIND("commit work", db, QUERY_COMMIT);
    KIND("ROLLBACK", db, QUERY_COMMIT);
    KIND("ROLLBACK WORK", db, QUERY_COMMIT);
    KIND("BEGIN", db, QUERY_TXN);
    KIND("START TRANSACTION", db, QUERY_TXN);
    KIND("SAVEPOINT `b`", db, QUERY_TXN);
    KIND("SAVEPOINT b", db, QUERY_TXN);
    KIND("ROLLBACK TO `b`", db, QUERY_TXN);
    KIND("ROLLBACK TO SAVEPOINT b", db, QUERY_TXN);
    KIND("rollback work to savepoint b", db, QUERY_TXN);
    KIND("RELEASE SAVEPOINT b", db, QUERY_TXN);
    KIND("XA START X'7831',X'',1", db, QUERY_XA_START);
    KIND("XA BEGIN 'x'", db, QUERY_XA_START);
    KIND("XA END X'7831',X'',1", db, QUERY_TXN);
    KIND("XA PREPARE X'7831',X'',1", db, QUERY_TXN);
    KIND("XA COMMIT X'7831',X'',1", db, QUERY_COMMIT);
    KIND("XA ROLLBACK X'7831',X'',1", db, QUERY_COMMIT);
    KIND("", db, QUERY_NONE);
    KIND("  /* nothing */ ", db, QUERY_NONE);
}
END_TEST

/* What reaches a shard's binlog besides calendard's transactions: the
 * stack's users and grants, calendar-admin migrate (CREATE TABLE IF NOT
 * EXISTS of every table, schema_migrations on every run), maintenance. None
 * may flush the cache: a migration or a vbucket move must not empty it. */
START_TEST(tools_statements_flush_nothing)
{
    const char *db = "calendar_shard0";
    KIND("CREATE TABLE IF NOT EXISTS schema_migrations ( version INT UNSIGNED NOT NULL PRIMARY "
         "KEY, name VARCHAR(255) NOT NULL) ENGINE=InnoDB",
         db, QUERY_NONE);
    KIND("CREATE TABLE IF NOT EXISTS nights (\n  listing_id BIGINT UNSIGNED NOT NULL,\n  night "
         "DATE NOT NULL, PRIMARY KEY (listing_id, night)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
         db, QUERY_NONE);
    KIND("CREATE DATABASE IF NOT EXISTS `calendar_shard0`", NULL, QUERY_NONE);
    KIND("CREATE USER IF NOT EXISTS 'cal_app'@'localhost' IDENTIFIED BY 'x'", NULL, QUERY_NONE);
    KIND("ALTER USER 'cal_app'@'localhost' IDENTIFIED BY 'x'", NULL, QUERY_NONE);
    KIND("GRANT SELECT, INSERT, UPDATE, DELETE ON `calendar\\_shard0`.* TO 'cal_app'@'localhost'",
         NULL, QUERY_NONE);
    KIND("GRANT SELECT ON calendar_shard0.nights TO 'x'@'%'", db, QUERY_NONE);
    KIND("REVOKE ALL ON calendar_shard0.* FROM 'x'@'%'", db, QUERY_NONE);
    KIND("FLUSH PRIVILEGES", NULL, QUERY_NONE);
    KIND("ANALYZE TABLE nights", db, QUERY_NONE);
    KIND("OPTIMIZE TABLE listings", db, QUERY_NONE);
    KIND("SET PASSWORD FOR 'x'@'%' = PASSWORD('y')", db, QUERY_NONE);
    KIND("CREATE INDEX nights_status ON nights (status)", db, QUERY_NONE);
    KIND("CREATE TABLE nights_copy AS SELECT * FROM nights", db, QUERY_NONE);
    KIND("CREATE TRIGGER t AFTER UPDATE ON nights FOR EACH ROW SET @x = 1", db, QUERY_NONE);
    KIND("ALTER DATABASE calendar_shard0 CHARACTER SET utf8mb4", db, QUERY_NONE);
    KIND("ALTER TABLE listing_refusals ADD COLUMN note INT", db, QUERY_NONE);
    KIND("DROP TABLE IF EXISTS `schema_migrations` /* generated by server */", db, QUERY_NONE);
    /* The same definitions in another database (the catalog on shard 0's
     * server), unqualified or qualified. */
    KIND("TRUNCATE TABLE nights", "calendar_catalog", QUERY_NONE);
    KIND("DROP TABLE calendar_catalog.listings", db, QUERY_NONE);
    KIND("ALTER TABLE `calendar_catalog`.`nights` ADD x INT", db, QUERY_NONE);
    KIND("DROP DATABASE cdc_probe", NULL, QUERY_NONE);
    /* Data changes of another database. */
    KIND("UPDATE moves SET phase = 'done' WHERE move_id = 1", "calendar_catalog", QUERY_NONE);
    KIND("UPDATE t SET v = 'calendar_shard0.nights'", "other", QUERY_NONE);
    KIND("INSERT INTO t VALUES (1)", NULL, QUERY_NONE);
}
END_TEST

/* Definitions that change a relayed table's rows, or replace it, flush it:
 * named in the relayed database, unqualified (the default database) or
 * qualified, in any case, quoted, commented. */
START_TEST(definitions_of_relayed_tables_flush_them)
{
    const char *db = "calendar_shard0";
    FLUSH("TRUNCATE TABLE nights", db, NIGHTS);
    FLUSH("truncate listings", db, LISTINGS);
    FLUSH("TRUNCATE `calendar_shard0`.`nights`", NULL, NIGHTS);
    FLUSH("TRUNCATE calendar_shard0.nights", "mysql", NIGHTS);
    FLUSH("TRUNCATE TABLE reservations", db, RESERVATIONS);
    FLUSH("DROP TABLE IF EXISTS `nights` /* generated by server */", db, NIGHTS);
    FLUSH("DROP TABLE listings, reservations", db, LISTINGS | RESERVATIONS);
    FLUSH("DROP TEMPORARY TABLE IF EXISTS nights", db, NIGHTS);
    FLUSH("ALTER TABLE nights ADD COLUMN note VARCHAR(10)", db, NIGHTS);
    FLUSH("ALTER TABLE NIGHTS MODIFY price INT", db, NIGHTS);
    FLUSH("ALTER ONLINE IGNORE TABLE /* x */ Calendar_Shard0 . nights FORCE", NULL, NIGHTS);
    FLUSH("RENAME TABLE nights TO nights_old, nights_new TO nights", db, NIGHTS);
    FLUSH("RENAME TABLE other.x TO calendar_shard0.listings", "other", LISTINGS);
    FLUSH("CREATE OR REPLACE TABLE nights (listing_id INT)", db, NIGHTS);
    FLUSH("REPAIR TABLE listings", db, LISTINGS);
    FLUSH("/*!40000 TRUNCATE nights */", db, NIGHTS);
    FLUSH("/*M!100500 ALTER TABLE `nights` ENGINE=InnoDB*/", db, NIGHTS);
    FLUSH("DROP DATABASE calendar_shard0", NULL, 0);
    FLUSH("DROP SCHEMA IF EXISTS `calendar_shard0`", "calendar_shard0", 0);
    /* A name in a string or a comment is not a name. */
    KIND("ALTER TABLE listing_refusals COMMENT 'see nights' /* nights */", db, QUERY_NONE);
    KIND("ALTER TABLE listing_refusals COMMENT 'it''s \\' nights' -- nights\n", db, QUERY_NONE);
    KIND("ALTER TABLE listing_refusals COMMENT 'nights' # nights", db, QUERY_NONE);
}
END_TEST

/* DML logged as a statement (a session with binlog_format=STATEMENT), in
 * the relayed database or naming it: triggers or views may reach any table,
 * so every relayed table counts as changed. */
START_TEST(statement_logged_dml_flushes_everything)
{
    const char *db = "calendar_shard0";
    FLUSH("UPDATE nights SET status = 'blocked' WHERE listing_id = 1", db, 0);
    FLUSH("update vbucket_owner set epoch = epoch + 1", db, 0);
    FLUSH("DELETE FROM listings WHERE listing_id = 7", db, 0);
    FLUSH("INSERT INTO nights (listing_id, night) VALUES (1, '2030-01-01')", db, 0);
    FLUSH("REPLACE INTO nights VALUES (1)", db, 0);
    FLUSH("LOAD DATA INFILE '/tmp/n.csv' INTO TABLE nights", db, 0);
    FLUSH("CALL cleanup()", db, 0);
    FLUSH("SET STATEMENT max_statement_time = 1 FOR UPDATE nights SET price = 1", db, 0);
    FLUSH("WITH x AS (SELECT 1) UPDATE nights SET price = 1", db, 0);
    FLUSH("UPDATE calendar_shard0.nights SET price = 1", "mysql", 0);
    FLUSH("UPDATE `calendar_shard0`.nights SET price = 1", NULL, 0);
    FLUSH("INSERT INTO other.t SELECT * FROM calendar_shard0.reservations", "other", 0);
    FLUSH("/*!50001 UPDATE nights SET price = 1 */", db, 0);
    FLUSH("(SELECT f())", db, 0);
}
END_TEST

/* Where a group ends, Query event by Query event. A standalone group (DDL,
 * XA COMMIT) ends at its statement, any group at COMMIT or ROLLBACK, but an
 * XA transaction only at its XA_prepare event: MariaDB 10.11 marks it in
 * its GTID event (FL_PREPARED_XA) and writes XA END as a query; a server
 * that flagged the group standalone and wrote XA START as a query must not
 * have it ended there, before its rows. */
START_TEST(xa_group_ends_only_at_prepare)
{
    const char *db = "calendar_shard0";
    uint32_t named;
#define STEP(g, sql) query_group_step(&(g), classify(sql, db, &named))
    struct query_group ddl = {.standalone = true};
    ck_assert(STEP(ddl, "TRUNCATE TABLE nights"));
    struct query_group commit = {.standalone = true};
    ck_assert(STEP(commit, "XA COMMIT X'7831',X'',1"));
    struct query_group trx = {.standalone = false};
    ck_assert(!STEP(trx, "SAVEPOINT `b`"));
    ck_assert(!STEP(trx, "ROLLBACK TO `b`"));
    ck_assert(STEP(trx, "COMMIT"));
    /* 10.11: the GTID event says XA, the group is not standalone. */
    struct query_group xa = {.standalone = false, .xa = true};
    ck_assert(!STEP(xa, "UPDATE nights SET price = 1")); /* statement-logged, in the XA */
    ck_assert(!STEP(xa, "XA END X'7831',X'',1"));
    /* A standalone group opened by an XA START query. */
    struct query_group xa2 = {.standalone = true};
    ck_assert(!STEP(xa2, "XA START X'7831',X'',1"));
    ck_assert(xa2.xa);
    ck_assert(!STEP(xa2, "XA END X'7831',X'',1"));
    /* ... or flagged XA by its GTID event. */
    struct query_group xa3 = {.standalone = true, .xa = true};
    ck_assert(!STEP(xa3, "XA END X'7831',X'',1"));
#undef STEP
}
END_TEST

/* Nothing malformed reads past the statement or stalls: unterminated
 * quotes and comments, a lone executable comment. */
START_TEST(malformed_text_is_bounded)
{
    const char *db = "calendar_shard0";
    const char *texts[] = {"TRUNCATE `nights",
                           "TRUNCATE 'nights",
                           "TRUNCATE /* nights",
                           "/*!",
                           "/*M!1",
                           "`",
                           "'",
                           "\"",
                           "-",
                           "--",
                           "#",
                           ".",
                           "a.",
                           ".nights"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        uint32_t named;
        (void)classify(texts[i], db, &named);
        (void)classify(texts[i], NULL, &named);
    }
    /* Only len bytes are read: the rest of the buffer is not the statement. */
    uint32_t named;
    ck_assert_int_eq(query_classify("COMMITTED", 6, db, strlen(db), &target, &named), QUERY_COMMIT);
    ck_assert_int_eq(query_classify("TRUNCATE nightsX", 15, db, strlen(db), &target, &named),
                     QUERY_FLUSH);
    ck_assert_int_eq(query_classify("UPDATE t", 8, "calendar_shard0X", 15, &target, &named),
                     QUERY_FLUSH);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("query");
    UNIT_CASE(s, transaction_frame);
    UNIT_CASE(s, tools_statements_flush_nothing);
    UNIT_CASE(s, definitions_of_relayed_tables_flush_them);
    UNIT_CASE(s, statement_logged_dml_flushes_everything);
    UNIT_CASE(s, xa_group_ends_only_at_prepare);
    UNIT_CASE(s, malformed_text_is_bounded);
    return unit_run(s);
}
