/* The MySQL/MariaDB adapter: the only module that includes mysql.h.
 * Connections with timeouts and optional TLS, prepared statements bound
 * from small value arrays, and error mapping to cal_status. */
#ifndef CAL_DB_H
#define CAL_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct db_conf {
    char host[256];
    unsigned port;
    char user[64];
    char password[128]; /* filled from password_file by db_conf_read_password() */
    char password_file[512];
    char database[65];
    unsigned connect_timeout_ms;  /* 0 = 2000 */
    unsigned read_timeout_ms;     /* 0 = 5000 */
    unsigned write_timeout_ms;    /* 0 = 5000 */
    unsigned lock_wait_timeout_s; /* innodb_lock_wait_timeout of the session; 0 = 2 */
    bool tls;                     /* require TLS to the server */
    bool tls_verify;              /* verify the server certificate against tls_ca */
    char tls_ca[512];
};

/* Parses "mysql://user[:password]@host:port/db" into conf (other fields
 * untouched). A DSN given on a command line should carry no password. */
cal_status db_conf_parse_dsn(struct db_conf *conf, const char *dsn, char *err, size_t errlen);

/* A shard named on a command line, HOST[:PORT]/DB, into conf's address
 * (its user and password stay): refuses a user or password in it (the
 * command line is for no secret; ps and shell histories show it) and a
 * missing database, err saying why. */
cal_status db_conf_parse_hostport(struct db_conf *conf, const char *arg, char *err, size_t errlen);

/* Reads conf->password_file into conf->password. Refuses a file that group or
 * others can read. No-op when password_file is empty. */
cal_status db_conf_read_password(struct db_conf *conf, char *err, size_t errlen);

/* The lock wait must end well before the client's read timeout: a statement
 * waiting on a row lock then fails as a lock wait (a conflict, retried), not
 * as a lost connection (an unknown outcome, a breaker failure). That holds
 * for one wait: a statement that waits for several rows in turn (a booking's
 * compound block: the fence row, nights, the listing row) can outlast the
 * read timeout on waits that each end in time, and is answered
 * outcome_unknown (honestly: it may commit). Refuses a
 * read_timeout_ms (in whole seconds, rounded up) that is not at least
 * lock_wait_timeout_s + DB_LOCK_WAIT_MARGIN_S; path and section name the
 * config file and its section in err. */
#define DB_LOCK_WAIT_MARGIN_S 2
#define DB_LOCK_WAIT_DEFAULT_S 2
cal_status db_conf_check_timeouts(const struct db_conf *conf, const char *path, const char *section,
                                  char *err, size_t errlen);

struct db;

/* Connects with autocommit on, READ COMMITTED, utf8mb4 and the conf's
 * timeouts. Returns NULL and fills err on failure. Caller frees with db_close(). */
struct db *db_connect(const struct db_conf *conf, char *err, size_t errlen);
void db_close(struct db *db); /* db_close(NULL) is a no-op */

/* Runs one or more ';'-separated statements of text SQL (schema files,
 * BEGIN/COMMIT). Result sets are discarded. Not for user data: use
 * prepared statements for anything with values. */
cal_status db_exec(struct db *db, const char *sql, char *err, size_t errlen);

enum db_type { DB_NULL = 0, DB_INT, DB_STR };

struct db_val {
    enum db_type type;
    int64_t i;
    const char *s; /* DB_STR: not NUL-terminated in params; NUL-terminated in rows */
    size_t len;
};

#define DB_INT_V(x) ((struct db_val){.type = DB_INT, .i = (int64_t)(x)})
#define DB_STR_V(p, n) ((struct db_val){.type = DB_STR, .s = (p), .len = (n)})
#define DB_CSTR_V(p) ((struct db_val){.type = DB_STR, .s = (p), .len = strlen(p)})
#define DB_NULL_V ((struct db_val){.type = DB_NULL})

struct db_stmt;

/* Prepares sql once per connection: the statement is cached on db keyed by
 * the sql text, the 64 most recently used ones (the least recently used is
 * closed). The db owns the stmt; a pointer to it stays valid until 64 other
 * statements have been used on db. */
struct db_stmt *db_prepare(struct db *db, const char *sql, char *err, size_t errlen);

/* Binds params and executes; a statement with a result set is ready for
 * db_fetch(). Any unread rows of a previous execution are discarded. */
cal_status db_stmt_exec(struct db_stmt *stmt, const struct db_val *params, size_t nparams,
                        char *err, size_t errlen);

/* Prepare + exec in one call. */
cal_status db_query(struct db *db, const char *sql, const struct db_val *params, size_t nparams,
                    struct db_stmt **out, char *err, size_t errlen);

/* Next row into cols[0..ncols). Integer and DATE-as-TO_DAYS columns come as
 * DB_INT, text as DB_STR (valid until the next fetch; long text truncated at
 * 1023 bytes), SQL NULL as DB_NULL. Returns 1 for a row, 0 at the end,
 * -1 on error (err filled). */
int db_fetch(struct db_stmt *stmt, struct db_val *cols, size_t ncols, char *err, size_t errlen);

/* What a failed db_fetch() (-1) means for the caller: CAL_EUNAVAIL when the
 * connection broke (retry on another), else CAL_ERR. */
cal_status db_fetch_status(const struct db_stmt *st);

/* A compound statement (BEGIN NOT ATOMIC ... END), prepared once per
 * connection like any other, that runs a whole transaction in one round
 * trip and reports through result sets of integer columns (at most
 * DB_BLOCK_MAX_COLS): fn gets every row of every result set, in order.
 * CAL_OK only when the server finished the block. A server error leaves the
 * transaction as the block left it: the caller rolls back. A connection lost
 * after the block was sent is CAL_EUNKNOWN: it may have committed. */
#define DB_BLOCK_MAX_COLS 8
typedef void (*db_row_fn)(void *ctx, const int64_t *cols, size_t ncols);
cal_status db_block(struct db *db, const char *sql, const struct db_val *params, size_t nparams,
                    db_row_fn fn, void *ctx, char *err, size_t errlen);

uint64_t db_affected_rows(const struct db_stmt *stmt);
uint64_t db_insert_id(const struct db_stmt *stmt); /* LAST_INSERT_ID() of the last exec */

/* Transactions on a connection; rollback never fails from the caller's view
 * (a broken connection is marked and reconnected by its pool). */
cal_status db_begin(struct db *db, char *err, size_t errlen);
cal_status db_commit(struct db *db, char *err, size_t errlen);
void db_rollback(struct db *db);

/* True once a connection-level error was seen: the caller must not reuse it. */
bool db_broken(const struct db *db);

/* A transaction is open: begun (db_begin, db_block) and neither committed
 * nor rolled back since. */
bool db_in_txn(const struct db *db);

/* Prepared statements cached on db now; for tests. */
unsigned db_cached_statements(const struct db *db);

/* Server error number of the last statement's failure (0 if none). */
unsigned db_last_errno(const struct db *db);

/* The last statement failed waiting for a row lock
 * (innodb_lock_wait_timeout). */
bool db_lock_wait_timed_out(const struct db *db);

/* The session's row lock waits: wait false, a statement that meets a held
 * row lock fails at once (innodb_lock_wait_timeout 0: CAL_ECONFLICT, and
 * db_lock_wait_timed_out()); true, the lock wait it connected with again.
 * A connection whose lock wait cannot be set back is marked broken. */
cal_status db_lock_waits(struct db *db, bool wait, char *err, size_t errlen);

/* Days since 1970-01-01 <-> MariaDB TO_DAYS()/FROM_DAYS() day numbers. */
#define DB_TO_DAYS_EPOCH 719528

#endif
