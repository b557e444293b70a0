/* What a binlog Query event, a statement MariaDB logged as text, means to the
 * relay: part of a transaction's frame (BEGIN, SAVEPOINT, COMMIT, XA ...), a
 * change of relayed rows that no rows event shows (TRUNCATE, DROP,
 * statement-logged DML, ...), or nothing to it. Pure: no SQL parser, a
 * tokenizer that errs on the side of "may have changed rows". */
#ifndef CAL_QUERY_H
#define CAL_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum query_kind {
    QUERY_NONE = 0, /* changes no row of a relayed table (GRANT, CREATE TABLE, DDL elsewhere) */
    QUERY_COMMIT,   /* COMMIT or ROLLBACK: ends its transaction's event group */
    QUERY_TXN,      /* BEGIN, SAVEPOINT, ROLLBACK TO, RELEASE SAVEPOINT, XA END/COMMIT/... */
    QUERY_XA_START, /* XA START/BEGIN: its group runs to the XA_PREPARE event */
    QUERY_FLUSH,    /* may have changed rows of the relayed tables: flush their cache */
};

/* The relay's database and tables (NULL-terminated, at most 32). */
struct query_target {
    const char *db;
    const char *const *tables;
};

/* Classifies the statement sql (len bytes, not NUL-terminated) that ran with
 * the default database default_db (dblen bytes; 0: none). Names compare
 * without regard to case.
 *
 * QUERY_FLUSH for:
 * - data-changing or unknown statements (INSERT, UPDATE, DELETE, REPLACE,
 *   LOAD DATA, CALL, ...) run in the relayed database or naming it: a
 *   trigger or a view may reach the relayed tables without naming them;
 * - TRUNCATE, DROP, ALTER, RENAME, REPAIR, CREATE OR REPLACE naming a
 *   relayed table of the relayed database (unqualified names are the
 *   default database's), and DROP DATABASE of the relayed one.
 * Not for CREATE (without OR REPLACE: it cannot change existing rows),
 * GRANT, REVOKE, FLUSH, ANALYZE, OPTIMIZE, CHECK, SET PASSWORD, nor anything
 * of another database alone. For the definitions (TRUNCATE, DROP, ...),
 * *named gets bit i set for each tables[i] they name in the relayed
 * database; it is 0 otherwise, meaning every relayed table (DROP DATABASE;
 * data-changing statements, since a trigger may reach any table). */
enum query_kind query_classify(const char *sql, size_t len, const char *default_db, size_t dblen,
                               const struct query_target *target, uint32_t *named);

/* An event group, as far as its Query events decide where it ends. */
struct query_group {
    bool standalone; /* its GTID event says no COMMIT or XID ends it */
    bool xa;         /* an XA transaction: its XA_PREPARE event ends it */
};

/* Feeds the kind of one Query event of group g: true when the group ends
 * with it. COMMIT and ROLLBACK end any group, a standalone one ends at its
 * statement; but an XA transaction (XA START, or g->xa from its GTID event)
 * ends only at its XA_PREPARE event, even in a group flagged standalone. */
bool query_group_step(struct query_group *g, enum query_kind kind);

#endif
