/* MariaDB replication stream via Connector/C: mariadb_rpl.h starts the
 * binlog dump, the event packets are read and decoded here (and the rows in
 * cdc/rowimage.c). Not with mariadb_rpl_fetch(): it refuses an event type it
 * does not parse, an Incident among them, without handing out its bytes,
 * and mariadb_rpl_extract_rows refuses tables without column metadata and
 * mis-decodes some types. */
#include "cdc/binlog.h"

#include <mysql.h>
#include <errmsg.h>
#include <mariadb_rpl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define HEADER_LEN 19
/* A Format_description event's body: binlog version (2), server version
 * (50), creation time (4), header length (1), one post-header length per
 * event type, then the checksum algorithm (1) and a 4-byte checksum slot. */
#define FDE_FIXED_LEN 57
#define CHECKSUM_ALG_OFF 0
#define CHECKSUM_ALG_UNDEF 255 /* a server from before checksums */

struct binlog {
    MYSQL *mysql;
    MARIADB_RPL *rpl;
    struct binlog_decoder dec;
    bool names_fold_case;
};

/* A packet of the dump: an OK byte and an event, or the EOF packet (0xFE,
 * shorter than 9 bytes) when the server ends the stream. */
#define PACKET_OK 0x00
#define PACKET_EOF 0xFE

static uint64_t
le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Runs a statement whose result (if any) is one value, copied to out. */
static bool
query_value(MYSQL *mysql, const char *sql, char *out, size_t size, char *err, size_t errlen)
{
    if (mysql_query(mysql, sql) != 0) {
        snprintf(err, errlen, "%s: %s", sql, mysql_error(mysql));
        return false;
    }
    MYSQL_RES *res = mysql_store_result(mysql);
    if (res == NULL) {
        if (mysql_field_count(mysql) != 0) {
            snprintf(err, errlen, "%s: %s", sql, mysql_error(mysql));
            return false;
        }
        if (out != NULL && size > 0)
            out[0] = '\0';
        return true;
    }
    MYSQL_ROW row = mysql_fetch_row(res);
    if (out != NULL && size > 0)
        cal_strlcpy(out, row != NULL && row[0] != NULL ? row[0] : "", size);
    mysql_free_result(res);
    return true;
}

/* The database to relay must exist under the name its binlog events carry:
 * a name that matches none (a typo, or another case on a server that keeps
 * names case-sensitive) would pass every change as another database's and
 * publish nothing. On a server with lower_case_table_names set, names are
 * compared without case (*fold). */
static bool
check_database(MYSQL *mysql, const struct db_conf *dc, bool *fold, char *err, size_t errlen)
{
    char lctn[16], count[32];
    char esc[2 * sizeof(dc->database) + 1];
    char sql[sizeof(esc) + 128];
    if (!query_value(mysql, "SELECT @@GLOBAL.lower_case_table_names", lctn, sizeof(lctn), err,
                     errlen))
        return false;
    *fold = strcmp(lctn, "0") != 0;
    mysql_real_escape_string(mysql, esc, dc->database, (unsigned long)strlen(dc->database));
    /* information_schema compares names without case; BINARY keeps it. */
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE %sSCHEMA_NAME = '%s'",
             *fold ? "" : "BINARY ", esc);
    if (!query_value(mysql, sql, count, sizeof(count), err, errlen))
        return false;
    if (strcmp(count, "0") == 0) {
        snprintf(err, errlen,
                 "database %s does not exist on %s:%u%s, or %s cannot see it (it needs SELECT on "
                 "it): nothing of it could be relayed",
                 dc->database, dc->host, dc->port, *fold ? "" : " (names are case-sensitive there)",
                 dc->user);
        return false;
    }
    return true;
}

static unsigned
secs(unsigned ms, unsigned dflt_ms)
{
    return ((ms ? ms : dflt_ms) + 999) / 1000;
}

struct binlog *
binlog_open(const struct binlog_conf *conf, const struct gtid_pos *start,
            struct gtid_pos *start_out, char *err, size_t errlen)
{
    const struct db_conf *dc = &conf->db;
    struct binlog *b = cal_calloc(1, sizeof(*b));
    b->mysql = mysql_init(NULL);
    if (b->mysql == NULL) {
        snprintf(err, errlen, "mysql_init failed");
        goto fail;
    }
    unsigned ct = secs(dc->connect_timeout_ms, 2000);
    /* The stream is idle between transactions; heartbeats keep it alive,
     * so the read timeout must exceed a few heartbeat periods. */
    unsigned rt = secs(dc->read_timeout_ms, 5000);
    unsigned hb = secs(conf->heartbeat_ms, 1000);
    if (rt < 3 * hb)
        rt = 3 * hb;
    unsigned wt = secs(dc->write_timeout_ms, 5000);
    mysql_options(b->mysql, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
    mysql_options(b->mysql, MYSQL_OPT_READ_TIMEOUT, &rt);
    mysql_options(b->mysql, MYSQL_OPT_WRITE_TIMEOUT, &wt);
    if (dc->tls) {
        my_bool on = 1, verify = dc->tls_verify ? 1 : 0;
        mysql_options(b->mysql, MYSQL_OPT_SSL_ENFORCE, &on);
        mysql_options(b->mysql, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
        if (dc->tls_ca[0] != '\0')
            mysql_options(b->mysql, MYSQL_OPT_SSL_CA, dc->tls_ca);
    }
    if (mysql_real_connect(b->mysql, dc->host, dc->user, dc->password, NULL, dc->port, NULL, 0) ==
        NULL) {
        snprintf(err, errlen, "connect to %s:%u as %s: %s", dc->host, dc->port, dc->user,
                 mysql_error(b->mysql));
        goto fail;
    }

    /* A change logged as a statement would pass as a transaction without
     * rows, and its invalidations be lost without a word. Row events logged
     * without column names and primary keys (binlog_row_metadata) cannot be
     * relayed: refused here, before a start position is saved past which
     * the binlog holds them. */
    char format[32], image[32], metadata[32];
    if (!query_value(b->mysql, "SELECT @@GLOBAL.binlog_format", format, sizeof(format), err,
                     errlen) ||
        !query_value(b->mysql, "SELECT @@GLOBAL.binlog_row_image", image, sizeof(image), err,
                     errlen) ||
        !query_value(b->mysql, "SELECT @@GLOBAL.binlog_row_metadata", metadata, sizeof(metadata),
                     err, errlen))
        goto fail;
    if (strcmp(format, "ROW") != 0 || strcmp(image, "FULL") != 0 || strcmp(metadata, "FULL") != 0) {
        snprintf(err, errlen,
                 "%s:%u logs binlog_format=%s binlog_row_image=%s binlog_row_metadata=%s: the "
                 "relay needs ROW, FULL and FULL",
                 dc->host, dc->port, format, image, metadata);
        goto fail;
    }
    if (dc->database[0] != '\0' && !check_database(b->mysql, dc, &b->names_fold_case, err, errlen))
        goto fail;

    char text[GTID_POS_TEXT_MAX];
    struct gtid_pos pos;
    if (start == NULL) {
        if (!query_value(b->mysql, "SELECT @@GLOBAL.gtid_binlog_pos", text, sizeof(text), err,
                         errlen))
            goto fail;
        if (gtid_pos_parse(&pos, text, err, errlen) != CAL_OK)
            goto fail;
    } else {
        pos = *start;
    }
    if (gtid_pos_format(&pos, text, sizeof(text)) != CAL_OK) {
        snprintf(err, errlen, "GTID position too long");
        goto fail;
    }
    if (start_out != NULL)
        *start_out = pos;

    char checksum[32];
    if (!query_value(b->mysql, "SELECT @@GLOBAL.binlog_checksum", checksum, sizeof(checksum), err,
                     errlen))
        goto fail;
    b->dec.checksum = strcmp(checksum, "NONE") != 0;

    /* Session variables the primary reads to serve a MariaDB replica:
     * checksum awareness, GTID capability (4), where to start, heartbeats.
     * text holds only digits, '-' and ',' (it went through gtid_pos_format). */
    char sql[GTID_POS_TEXT_MAX + 64];
    const char *setup[] = {
        "SET @master_binlog_checksum = @@GLOBAL.binlog_checksum",
        "SET @mariadb_slave_capability = 4",
        "SET @slave_gtid_strict_mode = 0",
        "SET @slave_gtid_ignore_duplicates = 0",
    };
    for (size_t i = 0; i < CAL_ARRAY_LEN(setup); i++)
        if (!query_value(b->mysql, setup[i], NULL, 0, err, errlen))
            goto fail;
    snprintf(sql, sizeof(sql), "SET @slave_connect_state = '%s'", text);
    if (!query_value(b->mysql, sql, NULL, 0, err, errlen))
        goto fail;
    snprintf(sql, sizeof(sql), "SET @master_heartbeat_period = %llu",
             (unsigned long long)(conf->heartbeat_ms ? conf->heartbeat_ms : 1000) * 1000000ULL);
    if (!query_value(b->mysql, sql, NULL, 0, err, errlen))
        goto fail;

    b->rpl = mariadb_rpl_init(b->mysql);
    if (b->rpl == NULL) {
        snprintf(err, errlen, "mariadb_rpl_init: %s", mysql_error(b->mysql));
        goto fail;
    }
    unsigned int server_id = conf->server_id;
    mariadb_rpl_optionsv(b->rpl, MARIADB_RPL_SERVER_ID, server_id);
    mariadb_rpl_optionsv(b->rpl, MARIADB_RPL_START, (unsigned long)4);
    mariadb_rpl_optionsv(b->rpl, MARIADB_RPL_FILENAME, "", (size_t)0);
    mariadb_rpl_optionsv(b->rpl, MARIADB_RPL_FLAGS, (unsigned int)0);
    if (mariadb_rpl_open(b->rpl) != 0) {
        snprintf(err, errlen, "binlog dump from %s: %s", text,
                 mysql_errno(b->mysql) ? mysql_error(b->mysql) : mariadb_rpl_error(b->rpl));
        goto fail;
    }
    return b;
fail:
    binlog_close(b);
    return NULL;
}

static cal_status
read_error(struct binlog *b, char *err, size_t errlen)
{
    unsigned e = mysql_errno(b->mysql);
    snprintf(err, errlen, "binlog read: %s (%u)", e ? mysql_error(b->mysql) : "connection lost", e);
    if (e == 0 || (e >= CR_MIN_ERROR && e <= CR_MAX_ERROR && e != CR_BINLOG_ERROR))
        return CAL_EUNAVAIL; /* client side: connection lost, timeout */
    return CAL_ERR;          /* the server's: a replication error */
}

cal_status
binlog_next(struct binlog *b, struct binlog_event *ev, char *err, size_t errlen)
{
    unsigned long len = mysql_net_read_packet(b->mysql);
    if (len == packet_error)
        return read_error(b, err, errlen);
    const uint8_t *p = b->mysql->net.read_pos;
    if (len < 9 && len > 0 && p[0] == PACKET_EOF) {
        snprintf(err, errlen, "the server ended the binlog stream");
        return CAL_EUNAVAIL;
    }
    if (len < 1 + HEADER_LEN || p[0] != PACKET_OK) {
        snprintf(err, errlen, "binlog packet of %lu bytes is no event", len);
        return CAL_ERR;
    }
    return binlog_decode(&b->dec, p + 1, len - 1, ev, err, errlen);
}

cal_status
binlog_decode(struct binlog_decoder *d, const uint8_t *data, size_t len, struct binlog_event *ev,
              char *err, size_t errlen)
{
    if (len < HEADER_LEN) {
        snprintf(err, errlen, "binlog event of %zu bytes: shorter than its header", len);
        return CAL_ERR;
    }
    memset(ev, 0, sizeof(*ev));
    ev->timestamp = (uint32_t)le(data, 4);
    ev->type = data[4];
    ev->server_id = (uint32_t)le(data + 5, 4);
    ev->length = (uint32_t)le(data + 9, 4);
    ev->next_pos = (uint32_t)le(data + 13, 4);
    ev->flags = (uint16_t)le(data + 17, 2);
    if (ev->length < HEADER_LEN || ev->length > len) {
        snprintf(err, errlen, "binlog event type %u: length %u outside packet of %zu bytes",
                 ev->type, ev->length, len);
        return CAL_ERR;
    }
    size_t body_len = ev->length - HEADER_LEN;
    /* The format description event always carries a checksum slot. */
    if (d->checksum || ev->type == FORMAT_DESCRIPTION_EVENT) {
        if (body_len < 4) {
            snprintf(err, errlen, "binlog event type %u too short for its checksum", ev->type);
            return CAL_ERR;
        }
        body_len -= 4;
    }
    ev->body = data + HEADER_LEN;
    ev->body_len = body_len;

    switch (ev->type) {
    case HEARTBEAT_LOG_EVENT:
        ev->kind = BINLOG_HEARTBEAT;
        break;
    case ROTATE_EVENT:
        ev->kind = BINLOG_ROTATE;
        if (body_len < 8 || body_len - 8 >= sizeof(ev->file)) {
            snprintf(err, errlen, "malformed rotate event");
            return CAL_ERR;
        }
        ev->file_pos = le(ev->body, 8);
        memcpy(ev->file, ev->body + 8, body_len - 8);
        ev->file[body_len - 8] = '\0';
        cal_strlcpy(d->file, ev->file, sizeof(d->file));
        break;
    case FORMAT_DESCRIPTION_EVENT:
        /* The first event of every file, and sent again when the stream
         * starts: the events after it carry a checksum as it says. */
        ev->kind = BINLOG_OTHER;
        if (body_len < FDE_FIXED_LEN + 1) {
            snprintf(err, errlen, "malformed format description event");
            return CAL_ERR;
        }
        d->checksum = ev->body[body_len - 1] != CHECKSUM_ALG_OFF &&
                      ev->body[body_len - 1] != CHECKSUM_ALG_UNDEF;
        break;
    case GTID_EVENT:
        ev->kind = BINLOG_GTID;
        if (body_len < 13) {
            snprintf(err, errlen, "malformed GTID event");
            return CAL_ERR;
        }
        ev->gtid.seq = le(ev->body, 8);
        ev->gtid.domain_id = (uint32_t)le(ev->body + 8, 4);
        ev->gtid.server_id = ev->server_id;
        ev->standalone = (ev->body[12] & FL_STANDALONE) != 0;
        ev->xa_prepared = (ev->body[12] & FL_PREPARED_XA) != 0;
        break;
    case TABLE_MAP_EVENT:
        ev->kind = BINLOG_TABLE_MAP;
        break;
    case WRITE_ROWS_EVENT_V1:
    case UPDATE_ROWS_EVENT_V1:
    case DELETE_ROWS_EVENT_V1:
    case WRITE_ROWS_EVENT:
    case UPDATE_ROWS_EVENT:
    case DELETE_ROWS_EVENT:
        ev->kind = BINLOG_ROWS;
        break;
    case WRITE_ROWS_COMPRESSED_EVENT_V1:
    case UPDATE_ROWS_COMPRESSED_EVENT_V1:
    case DELETE_ROWS_COMPRESSED_EVENT_V1:
    case WRITE_ROWS_COMPRESSED_EVENT:
    case UPDATE_ROWS_COMPRESSED_EVENT:
    case DELETE_ROWS_COMPRESSED_EVENT:
        snprintf(err, errlen,
                 "compressed row events are not supported "
                 "(set log_bin_compress=OFF on the shard)");
        return CAL_ERR;
    case XID_EVENT:
        ev->kind = BINLOG_XID;
        break;
    case XA_PREPARE_LOG_EVENT:
        /* MariaDB 10.5+: XA START ... XA END; XA PREPARE is a group of its
         * own, ended by this event (its GTID event carries the XID and
         * FL_PREPARED_XA); XA COMMIT or XA ROLLBACK comes later as a group
         * of one statement. */
        ev->kind = BINLOG_XA_PREPARE;
        break;
    case QUERY_EVENT:
    case EXECUTE_LOAD_QUERY_EVENT: {
        /* Execute_load_query (LOAD DATA logged as a statement) is a Query
         * event with 13 more bytes of post-header (file id, start and end
         * of the file name in the statement, duplicate handling). */
        size_t post = ev->type == QUERY_EVENT ? 13 : 26;
        ev->kind = BINLOG_QUERY;
        if (body_len < post) {
            snprintf(err, errlen, "malformed query event");
            return CAL_ERR;
        }
        size_t db_len = ev->body[8];
        size_t status_len = (size_t)le(ev->body + 11, 2);
        size_t off = post + status_len + db_len + 1;
        if (off > body_len) {
            snprintf(err, errlen, "malformed query event");
            return CAL_ERR;
        }
        ev->db = (const char *)ev->body + post + status_len;
        ev->db_len = db_len;
        ev->query = (const char *)ev->body + off;
        ev->query_len = body_len - off;
        break;
    }
    case INCIDENT_EVENT:
        /* Written after a transaction whose changes the primary could not
         * log (LOST_EVENTS): a replica stops at it. Whatever its body
         * holds, it stays an incident: the relay must act on every one. */
        ev->kind = BINLOG_INCIDENT;
        if (body_len >= 2)
            ev->incident = (uint16_t)le(ev->body, 2);
        if (body_len >= 3 && (size_t)ev->body[2] <= body_len - 3) {
            ev->incident_msg = (const char *)ev->body + 3;
            ev->incident_msg_len = ev->body[2];
        }
        break;
    case QUERY_COMPRESSED_EVENT:
        /* Unread, a TRUNCATE or a statement-logged change would pass
         * unnoticed. */
        snprintf(err, errlen,
                 "compressed query events are not supported "
                 "(set log_bin_compress=OFF on the shard)");
        return CAL_ERR;
    case STOP_EVENT:
    case INTVAR_EVENT:
    case RAND_EVENT:
    case USER_VAR_EVENT:
    case BEGIN_LOAD_QUERY_EVENT:
    case APPEND_BLOCK_EVENT: /* a statement-logged LOAD DATA's file, block by block */
    case DELETE_FILE_EVENT:  /* ... given up: its Execute_load_query never comes */
    case GTID_LOG_EVENT:
    case ANONYMOUS_GTID_LOG_EVENT:
    case PREVIOUS_GTIDS_LOG_EVENT:
    case ANNOTATE_ROWS_EVENT:
    case BINLOG_CHECKPOINT_EVENT:
    case GTID_LIST_EVENT:
    case START_ENCRYPTION_EVENT:
        /* Known, and nothing for the relay (statement context, markers,
         * comments): the types Connector/C's own reader passes too. */
        ev->kind = BINLOG_OTHER;
        break;
    default:
        /* A type not known here could carry changes: passed over only when
         * the primary marks it as one a replica may ignore (as
         * Connector/C's reader does). */
        if (!(ev->flags & LOG_EVENT_IGNORABLE_F)) {
            snprintf(err, errlen, "binlog event type %u is unknown to the relay and not ignorable",
                     ev->type);
            return CAL_ERR;
        }
        ev->kind = BINLOG_OTHER;
        break;
    }
    return CAL_OK;
}

bool
binlog_names_fold_case(const struct binlog *b)
{
    return b->names_fold_case;
}

const char *
binlog_file(const struct binlog *b)
{
    return b->dec.file;
}

void
binlog_close(struct binlog *b)
{
    if (b == NULL)
        return;
    if (b->rpl != NULL)
        mariadb_rpl_close(b->rpl);
    if (b->mysql != NULL)
        mysql_close(b->mysql);
    free(b);
}
