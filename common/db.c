/* The MySQL/MariaDB adapter: connections, prepared statements, error mapping.
 * The only module that includes mysql.h (the binlog relay has its own). */
#include "common/db.h"

#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define DB_MAX_COLS 32
#define DB_TEXT_MAX 1024

struct db_stmt {
    struct db_stmt *next;
    struct db *db;
    char *sql; /* key of the statement cache */
    MYSQL_STMT *stmt;
    unsigned ncols;
    MYSQL_BIND result[DB_MAX_COLS];
    long long ints[DB_MAX_COLS];
    char *texts[DB_MAX_COLS];
    unsigned long lengths[DB_MAX_COLS];
    my_bool nulls[DB_MAX_COLS];
    my_bool errors[DB_MAX_COLS];
    bool has_result;
    uint64_t affected;
    uint64_t insert_id;
};

/* Prepared statements kept per connection, most recently used first: SQL
 * built for n items (IN lists, multi-row inserts) must not pile up towards
 * the server's max_prepared_stmt_count. */
#define DB_STMT_CACHE_MAX 64

struct db {
    MYSQL *mysql;
    struct db_stmt *stmts;
    unsigned nstmts;
    bool broken;
    bool in_txn;
    unsigned last_errno;
    unsigned lock_wait_s; /* the session's innodb_lock_wait_timeout, as connected */
};

static bool
errno_is_connection(unsigned e)
{
    switch (e) {
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_CONN_HOST_ERROR:
    case CR_CONNECTION_ERROR:
    case CR_SERVER_LOST_EXTENDED:
    case CR_COMMANDS_OUT_OF_SYNC:
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_QUERY_INTERRUPTED:
    /* max_statement_time (an operator's global or per-user limit, which the
     * session setting below should rule out): the statement was cut short
     * at any point, a compound statement's after its COMMIT too, so its
     * outcome is unknown like a lost connection's. */
    case ER_STATEMENT_TIMEOUT:
        return true;
    default:
        return e >= 2000 && e < 3000; /* any other client-side error */
    }
}

/* Maps a server or client error number to a status and marks the
 * connection broken when it can no longer be trusted. */
static cal_status
map_error(struct db *db, unsigned e)
{
    db->last_errno = e;
    switch (e) {
    case ER_DUP_ENTRY:
        return CAL_EDUP;
    case ER_LOCK_DEADLOCK:
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_CHECKREAD: /* record changed since last read */
        return CAL_ECONFLICT;
    case ER_OPTION_PREVENTS_STATEMENT: /* --read-only */
        return CAL_EREADONLY;
    default:
        break;
    }
    if (errno_is_connection(e)) {
        db->broken = true;
        return CAL_EUNAVAIL;
    }
    return CAL_ERR;
}

cal_status
db_conf_parse_dsn(struct db_conf *conf, const char *dsn, char *err, size_t errlen)
{
    const char *p = dsn;
    if (strncmp(p, "mysql://", 8) != 0 && strncmp(p, "mariadb://", 10) != 0) {
        snprintf(err, errlen, "DSN must start with mysql://");
        return CAL_EINVAL;
    }
    p = strstr(p, "://") + 3;
    const char *at = strrchr(p, '@');
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = (size_t)((colon ? colon : at) - p);
        if (ulen == 0 || ulen >= sizeof(conf->user)) {
            snprintf(err, errlen, "DSN user is empty or too long");
            return CAL_EINVAL;
        }
        memcpy(conf->user, p, ulen);
        conf->user[ulen] = '\0';
        if (colon != NULL) {
            size_t plen = (size_t)(at - colon - 1);
            if (plen >= sizeof(conf->password)) {
                snprintf(err, errlen, "DSN password too long");
                return CAL_EINVAL;
            }
            memcpy(conf->password, colon + 1, plen);
            conf->password[plen] = '\0';
        }
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(end - p));
    size_t hlen = (size_t)((colon ? colon : end) - p);
    if (hlen == 0 || hlen >= sizeof(conf->host)) {
        snprintf(err, errlen, "DSN host is empty or too long");
        return CAL_EINVAL;
    }
    memcpy(conf->host, p, hlen);
    conf->host[hlen] = '\0';
    conf->port = 3306;
    if (colon != NULL) {
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (e != end || port <= 0 || port > 65535) {
            snprintf(err, errlen, "DSN port is not a number in 1..65535");
            return CAL_EINVAL;
        }
        conf->port = (unsigned)port;
    }
    conf->database[0] = '\0';
    if (slash != NULL) {
        if (strlen(slash + 1) >= sizeof(conf->database)) {
            snprintf(err, errlen, "DSN database name too long");
            return CAL_EINVAL;
        }
        cal_strlcpy(conf->database, slash + 1, sizeof(conf->database));
    }
    return CAL_OK;
}

cal_status
db_conf_parse_hostport(struct db_conf *conf, const char *arg, char *err, size_t errlen)
{
    char dsn[600];
    if (strchr(arg, '@') != NULL) {
        snprintf(err, errlen,
                 "want HOST:PORT/DB without a user or password (the [shards] user and"
                 " password_file of --config are used)");
        return CAL_EINVAL;
    }
    if ((size_t)snprintf(dsn, sizeof(dsn), "mysql://%s", arg) >= sizeof(dsn)) {
        snprintf(err, errlen, "want HOST:PORT/DB: too long");
        return CAL_EINVAL;
    }
    char why[256] = "no database name";
    if (db_conf_parse_dsn(conf, dsn, why, sizeof(why)) != CAL_OK || conf->database[0] == '\0') {
        snprintf(err, errlen, "want HOST:PORT/DB (%s)", why);
        return CAL_EINVAL;
    }
    return CAL_OK;
}

static unsigned ms_to_s(unsigned ms, unsigned dflt_ms);

cal_status
db_conf_check_timeouts(const struct db_conf *conf, const char *path, const char *section, char *err,
                       size_t errlen)
{
    unsigned rt = ms_to_s(conf->read_timeout_ms, 5000);
    unsigned lw = conf->lock_wait_timeout_s ? conf->lock_wait_timeout_s : DB_LOCK_WAIT_DEFAULT_S;
    if (rt >= lw + DB_LOCK_WAIT_MARGIN_S)
        return CAL_OK;
    snprintf(err, errlen,
             "%s: [%s] read_timeout_ms (%u s) must be at least lock_wait_timeout_s (%u s) + %d s:"
             " a statement waiting on a row lock would time out as a lost connection",
             path, section, rt, lw, DB_LOCK_WAIT_MARGIN_S);
    return CAL_EINVAL;
}

cal_status
db_conf_read_password(struct db_conf *conf, char *err, size_t errlen)
{
    if (conf->password_file[0] == '\0')
        return CAL_OK;
    int fd = open(conf->password_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open password_file %s: %s", conf->password_file,
                 strerror(errno));
        return CAL_EINVAL;
    }
    struct stat st;
    cal_status rc = CAL_OK;
    if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
        snprintf(err, errlen,
                 "password_file %s must have no group or other permission bits (chmod 600)",
                 conf->password_file);
        rc = CAL_EINVAL;
        goto out;
    }
    /* Room for the longest password, a CRLF, and one byte more to tell a
     * password that does not fit. */
    char buf[sizeof(conf->password) + 2];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
        snprintf(err, errlen, "cannot read password_file %s: %s", conf->password_file,
                 strerror(errno));
        rc = CAL_EINVAL;
        goto out;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if ((size_t)n >= sizeof(conf->password)) {
        snprintf(err, errlen, "password_file %s: the password is longer than %zu bytes",
                 conf->password_file, sizeof(conf->password) - 1);
        rc = CAL_EINVAL;
        goto out;
    }
    memcpy(conf->password, buf, (size_t)n);
    conf->password[n] = '\0';
out:
    close(fd);
    return rc;
}

static unsigned
ms_to_s(unsigned ms, unsigned dflt_ms)
{
    if (ms == 0)
        ms = dflt_ms;
    return (ms + 999) / 1000;
}

struct db *
db_connect(const struct db_conf *conf, char *err, size_t errlen)
{
    MYSQL *mysql = mysql_init(NULL);
    if (mysql == NULL) {
        snprintf(err, errlen, "mysql_init failed");
        return NULL;
    }
    unsigned ct = ms_to_s(conf->connect_timeout_ms, 2000);
    unsigned rt = ms_to_s(conf->read_timeout_ms, 5000);
    unsigned wt = ms_to_s(conf->write_timeout_ms, 5000);
    mysql_options(mysql, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    mysql_options(mysql, MYSQL_OPT_READ_TIMEOUT, &rt);
    mysql_options(mysql, MYSQL_OPT_WRITE_TIMEOUT, &wt);
    mysql_options(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    char init[256];
    unsigned lock_wait_s =
        conf->lock_wait_timeout_s ? conf->lock_wait_timeout_s : DB_LOCK_WAIT_DEFAULT_S;
    /* No statement time limit: one would cut a booking's compound statement
     * short anywhere, even after its COMMIT; the read timeout and the lock
     * wait bound a statement instead. */
    snprintf(init, sizeof(init),
             "SET SESSION tx_isolation='READ-COMMITTED', "
             "SESSION innodb_lock_wait_timeout=%u, SESSION time_zone='+00:00', "
             "SESSION max_statement_time=0",
             lock_wait_s);
    mysql_options(mysql, MYSQL_INIT_COMMAND, init);
    if (conf->tls) {
        my_bool on = 1;
        mysql_options(mysql, MYSQL_OPT_SSL_ENFORCE, &on);
        my_bool verify = conf->tls_verify ? 1 : 0;
        mysql_options(mysql, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
        if (conf->tls_ca[0] != '\0')
            mysql_options(mysql, MYSQL_OPT_SSL_CA, conf->tls_ca);
    }
    if (mysql_real_connect(mysql, conf->host, conf->user, conf->password,
                           conf->database[0] ? conf->database : NULL, conf->port, NULL,
                           CLIENT_MULTI_STATEMENTS) == NULL) {
        snprintf(err, errlen, "connect to %s:%u/%s as %s: %s", conf->host, conf->port,
                 conf->database, conf->user, mysql_error(mysql));
        mysql_close(mysql);
        return NULL;
    }
    struct db *db = cal_calloc(1, sizeof(*db));
    db->mysql = mysql;
    db->lock_wait_s = lock_wait_s;
    return db;
}

static void
stmt_destroy(struct db_stmt *st)
{
    mysql_stmt_close(st->stmt);
    for (unsigned i = 0; i < st->ncols; i++)
        free(st->texts[i]);
    free(st->sql);
    free(st);
}

void
db_close(struct db *db)
{
    if (db == NULL)
        return;
    struct db_stmt *st = db->stmts;
    while (st != NULL) {
        struct db_stmt *next = st->next;
        stmt_destroy(st);
        st = next;
    }
    mysql_close(db->mysql);
    free(db);
}

cal_status
db_exec(struct db *db, const char *sql, char *err, size_t errlen)
{
    if (mysql_real_query(db->mysql, sql, strlen(sql)) != 0)
        goto fail;
    for (;;) {
        MYSQL_RES *res = mysql_store_result(db->mysql);
        if (res != NULL)
            mysql_free_result(res);
        else if (mysql_field_count(db->mysql) != 0)
            goto fail;
        int more = mysql_next_result(db->mysql);
        if (more == -1)
            break;
        if (more > 0)
            goto fail;
    }
    return CAL_OK;
fail:
    snprintf(err, errlen, "%s", mysql_error(db->mysql));
    return map_error(db, mysql_errno(db->mysql));
}

static cal_status
stmt_error(struct db_stmt *st, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s", mysql_stmt_error(st->stmt));
    return map_error(st->db, mysql_stmt_errno(st->stmt));
}

/* Closes the n least recently used statements of db's cache, but none
 * whose rows a caller has not read to the end yet. */
static void
evict_oldest(struct db *db, unsigned n)
{
    for (; n > 0; n--) {
        struct db_stmt **victim = NULL;
        for (struct db_stmt **pp = &db->stmts; *pp != NULL; pp = &(*pp)->next)
            if (!(*pp)->has_result)
                victim = pp;
        if (victim == NULL)
            return;
        struct db_stmt *st = *victim;
        *victim = st->next;
        stmt_destroy(st);
        db->nstmts--;
    }
}

/* What a failed db_prepare means for the caller. */
static cal_status
prepare_failed(const struct db *db)
{
    if (db->broken)
        return CAL_EUNAVAIL;
    /* Every statement slot of the server is taken: try again later. */
    if (db->last_errno == ER_MAX_PREPARED_STMT_COUNT_REACHED)
        return CAL_EAGAIN;
    return CAL_ERR;
}

struct db_stmt *
db_prepare(struct db *db, const char *sql, char *err, size_t errlen)
{
    /* Keyed by text, not pointer: callers may build SQL in reused buffers. */
    for (struct db_stmt **pp = &db->stmts; *pp != NULL; pp = &(*pp)->next) {
        struct db_stmt *st = *pp;
        if (strcmp(st->sql, sql) == 0) {
            *pp = st->next;
            st->next = db->stmts;
            db->stmts = st;
            return st;
        }
    }
    db->last_errno = 0;
    if (db->nstmts >= DB_STMT_CACHE_MAX)
        evict_oldest(db, 1);
    struct db_stmt *st = cal_calloc(1, sizeof(*st));
    st->db = db;
    st->sql = cal_strndup(sql, strlen(sql));
    st->stmt = mysql_stmt_init(db->mysql);
    if (st->stmt == NULL) {
        snprintf(err, errlen, "mysql_stmt_init: %s", mysql_error(db->mysql));
        map_error(db, mysql_errno(db->mysql));
        free(st->sql);
        free(st);
        return NULL;
    }
    int failed = mysql_stmt_prepare(st->stmt, sql, strlen(sql));
    if (failed && mysql_stmt_errno(st->stmt) == ER_MAX_PREPARED_STMT_COUNT_REACHED &&
        db->nstmts > 0) {
        /* The server's max_prepared_stmt_count is shared by every
         * connection of every instance: give back the older half of this
         * connection's statements and try once more. */
        static uint64_t warned_us; /* atomic: one warning per 10 s at most */
        uint64_t now = cal_mono_us(), last = __atomic_load_n(&warned_us, __ATOMIC_RELAXED);
        if ((last == 0 || now - last >= 10000000) &&
            __atomic_compare_exchange_n(&warned_us, &last, now, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            log_warn("max_prepared_stmt_count reached; raise it on the server",
                     "server=\"%s\" cached=%u", mysql_get_host_info(db->mysql), db->nstmts);
        evict_oldest(db, (db->nstmts + 1) / 2);
        failed = mysql_stmt_prepare(st->stmt, sql, strlen(sql));
    }
    if (failed) {
        stmt_error(st, err, errlen);
        mysql_stmt_close(st->stmt);
        free(st->sql);
        free(st);
        return NULL;
    }
    MYSQL_RES *meta = mysql_stmt_result_metadata(st->stmt);
    if (meta != NULL) {
        st->ncols = mysql_num_fields(meta);
        if (st->ncols > DB_MAX_COLS) {
            snprintf(err, errlen, "statement returns %u columns, max %d", st->ncols, DB_MAX_COLS);
            mysql_free_result(meta);
            st->ncols = 0;
            mysql_stmt_close(st->stmt);
            free(st->sql);
            free(st);
            return NULL;
        }
        MYSQL_FIELD *fields = mysql_fetch_fields(meta);
        for (unsigned i = 0; i < st->ncols; i++) {
            MYSQL_BIND *b = &st->result[i];
            switch (fields[i].type) {
            case MYSQL_TYPE_TINY:
            case MYSQL_TYPE_SHORT:
            case MYSQL_TYPE_LONG:
            case MYSQL_TYPE_INT24:
            case MYSQL_TYPE_LONGLONG:
            case MYSQL_TYPE_YEAR:
            case MYSQL_TYPE_NEWDECIMAL:
            case MYSQL_TYPE_DECIMAL:
                b->buffer_type = MYSQL_TYPE_LONGLONG;
                b->buffer = &st->ints[i];
                break;
            default:
                st->texts[i] = cal_malloc(DB_TEXT_MAX);
                b->buffer_type = MYSQL_TYPE_STRING;
                b->buffer = st->texts[i];
                b->buffer_length = DB_TEXT_MAX - 1;
                break;
            }
            b->length = &st->lengths[i];
            b->is_null = &st->nulls[i];
            b->error = &st->errors[i];
        }
        mysql_free_result(meta);
    }
    st->next = db->stmts;
    db->stmts = st;
    db->nstmts++;
    return st;
}

cal_status
db_stmt_exec(struct db_stmt *st, const struct db_val *params, size_t nparams, char *err,
             size_t errlen)
{
    MYSQL_BIND small_bind[16];
    unsigned long small_lens[16];
    MYSQL_BIND *bind = small_bind;
    unsigned long *lens = small_lens;
    cal_status rc = CAL_OK;
    st->db->last_errno = 0;
    if (nparams != mysql_stmt_param_count(st->stmt)) {
        snprintf(err, errlen, "statement takes %lu parameters, %zu given",
                 mysql_stmt_param_count(st->stmt), nparams);
        return CAL_ERR;
    }
    if (nparams > CAL_ARRAY_LEN(small_bind)) {
        bind = cal_malloc(sizeof(*bind) * nparams);
        lens = cal_malloc(sizeof(*lens) * nparams);
    }
    if (st->has_result) {
        mysql_stmt_free_result(st->stmt);
        st->has_result = false;
    }
    memset(bind, 0, sizeof(bind[0]) * nparams);
    for (size_t i = 0; i < nparams; i++) {
        switch (params[i].type) {
        case DB_INT:
            bind[i].buffer_type = MYSQL_TYPE_LONGLONG;
            bind[i].buffer = (void *)&params[i].i;
            break;
        case DB_STR:
            lens[i] = (unsigned long)params[i].len;
            bind[i].buffer_type = MYSQL_TYPE_STRING;
            bind[i].buffer = (void *)params[i].s;
            bind[i].buffer_length = lens[i];
            bind[i].length = &lens[i];
            break;
        case DB_NULL:
            bind[i].buffer_type = MYSQL_TYPE_NULL;
            break;
        }
    }
    if ((nparams > 0 && mysql_stmt_bind_param(st->stmt, bind) != 0) ||
        mysql_stmt_execute(st->stmt) != 0) {
        rc = stmt_error(st, err, errlen);
        goto out;
    }
    st->affected = (uint64_t)mysql_stmt_affected_rows(st->stmt);
    st->insert_id = (uint64_t)mysql_stmt_insert_id(st->stmt);
    if (st->ncols > 0) {
        /* Buffer the whole result so statements can interleave on one connection. */
        if (mysql_stmt_bind_result(st->stmt, st->result) != 0 ||
            mysql_stmt_store_result(st->stmt) != 0) {
            rc = stmt_error(st, err, errlen);
            goto out;
        }
        st->has_result = true;
    }
out:
    if (bind != small_bind) {
        free(bind);
        free(lens);
    }
    return rc;
}

cal_status
db_query(struct db *db, const char *sql, const struct db_val *params, size_t nparams,
         struct db_stmt **out, char *err, size_t errlen)
{
    struct db_stmt *st = db_prepare(db, sql, err, errlen);
    if (st == NULL)
        return prepare_failed(db);
    if (out != NULL)
        *out = st;
    return db_stmt_exec(st, params, nparams, err, errlen);
}

/* The rows of the result set the block just produced, if any. */
static cal_status
block_rows(struct db_stmt *st, db_row_fn fn, void *ctx, char *err, size_t errlen)
{
    unsigned nf = mysql_stmt_field_count(st->stmt);
    if (nf == 0)
        return CAL_OK;
    if (nf > DB_BLOCK_MAX_COLS) {
        snprintf(err, errlen, "block returns %u columns, max %d", nf, DB_BLOCK_MAX_COLS);
        return CAL_ERR;
    }
    MYSQL_BIND bind[DB_BLOCK_MAX_COLS];
    int64_t vals[DB_BLOCK_MAX_COLS];
    my_bool nulls[DB_BLOCK_MAX_COLS];
    memset(bind, 0, sizeof(bind));
    for (unsigned i = 0; i < nf; i++) {
        bind[i].buffer_type = MYSQL_TYPE_LONGLONG;
        bind[i].buffer = &vals[i];
        bind[i].is_null = &nulls[i];
    }
    if (mysql_stmt_bind_result(st->stmt, bind) != 0 || mysql_stmt_store_result(st->stmt) != 0)
        return stmt_error(st, err, errlen);
    int r;
    while ((r = mysql_stmt_fetch(st->stmt)) == 0 || r == MYSQL_DATA_TRUNCATED) {
        for (unsigned i = 0; i < nf; i++)
            if (nulls[i])
                vals[i] = 0;
        if (fn != NULL)
            fn(ctx, vals, nf);
    }
    cal_status rc = r == MYSQL_NO_DATA ? CAL_OK : stmt_error(st, err, errlen);
    mysql_stmt_free_result(st->stmt);
    return rc;
}

cal_status
db_block(struct db *db, const char *sql, const struct db_val *params, size_t nparams, db_row_fn fn,
         void *ctx, char *err, size_t errlen)
{
    struct db_stmt *st = db_prepare(db, sql, err, errlen);
    if (st == NULL)
        return prepare_failed(db);
    db->in_txn = true;
    cal_status rc = db_stmt_exec(st, params, nparams, err, errlen);
    for (;;) {
        if (rc == CAL_OK)
            rc = block_rows(st, fn, ctx, err, errlen);
        /* Read every result, even after an error, so the connection stays usable. */
        int more = mysql_stmt_next_result(st->stmt);
        if (more == -1)
            break;
        if (more > 0) {
            if (rc == CAL_OK)
                rc = stmt_error(st, err, errlen);
            break;
        }
    }
    if (rc == CAL_OK)
        db->in_txn = false;
    return rc == CAL_EUNAVAIL ? CAL_EUNKNOWN : rc;
}

cal_status
db_fetch_status(const struct db_stmt *st)
{
    return st->db->broken ? CAL_EUNAVAIL : CAL_ERR;
}

int
db_fetch(struct db_stmt *st, struct db_val *cols, size_t ncols, char *err, size_t errlen)
{
    if (!st->has_result)
        return 0;
    int rc = mysql_stmt_fetch(st->stmt);
    if (rc == MYSQL_NO_DATA) {
        mysql_stmt_free_result(st->stmt);
        st->has_result = false;
        return 0;
    }
    if (rc == 1) {
        stmt_error(st, err, errlen);
        return -1;
    }
    /* MYSQL_DATA_TRUNCATED: long text is cut at DB_TEXT_MAX, by contract. */
    for (size_t i = 0; i < ncols && i < st->ncols; i++) {
        if (st->nulls[i]) {
            cols[i] = DB_NULL_V;
        } else if (st->result[i].buffer_type == MYSQL_TYPE_LONGLONG) {
            cols[i] = DB_INT_V(st->ints[i]);
        } else {
            size_t len = st->lengths[i] < DB_TEXT_MAX - 1 ? st->lengths[i] : DB_TEXT_MAX - 1;
            st->texts[i][len] = '\0';
            cols[i] = DB_STR_V(st->texts[i], len);
        }
    }
    for (size_t i = st->ncols; i < ncols; i++)
        cols[i] = DB_NULL_V;
    return 1;
}

uint64_t
db_affected_rows(const struct db_stmt *st)
{
    return st->affected;
}

uint64_t
db_insert_id(const struct db_stmt *st)
{
    return st->insert_id;
}

cal_status
db_begin(struct db *db, char *err, size_t errlen)
{
    if (mysql_real_query(db->mysql, "BEGIN", 5) != 0) {
        snprintf(err, errlen, "BEGIN: %s", mysql_error(db->mysql));
        return map_error(db, mysql_errno(db->mysql));
    }
    db->in_txn = true;
    return CAL_OK;
}

cal_status
db_commit(struct db *db, char *err, size_t errlen)
{
    db->in_txn = false;
    if (mysql_commit(db->mysql) != 0) {
        snprintf(err, errlen, "COMMIT: %s", mysql_error(db->mysql));
        cal_status st = map_error(db, mysql_errno(db->mysql));
        /* A lost connection during COMMIT leaves the outcome unknown: the
         * caller must not claim success or failure (idempotent replays can). */
        return st == CAL_EUNAVAIL ? CAL_EUNKNOWN : st;
    }
    return CAL_OK;
}

void
db_rollback(struct db *db)
{
    db->in_txn = false;
    if (db->broken)
        return;
    if (mysql_rollback(db->mysql) != 0)
        map_error(db, mysql_errno(db->mysql));
}

bool
db_broken(const struct db *db)
{
    return db->broken;
}

bool
db_in_txn(const struct db *db)
{
    return db->in_txn;
}

unsigned
db_cached_statements(const struct db *db)
{
    return db->nstmts;
}

unsigned
db_last_errno(const struct db *db)
{
    return db->last_errno;
}

bool
db_lock_wait_timed_out(const struct db *db)
{
    return db->last_errno == ER_LOCK_WAIT_TIMEOUT;
}

cal_status
db_lock_waits(struct db *db, bool wait, char *err, size_t errlen)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "SET SESSION innodb_lock_wait_timeout = %u",
             wait ? db->lock_wait_s : 0);
    cal_status rc = db_exec(db, sql, err, errlen);
    /* Never back in a pool without its lock wait. */
    if (rc != CAL_OK && wait)
        db->broken = true;
    return rc;
}
