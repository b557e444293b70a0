/* The binlog adapter: connects to a MariaDB primary as a replica (MariaDB
 * Connector/C's mariadb_rpl.h), GTID-based, and hands out raw events with
 * their header decoded. The only module besides common/db.c that includes
 * mysql.h, and the only one that includes mariadb_rpl.h. */
#ifndef CAL_BINLOG_H
#define CAL_BINLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/gtid.h"
#include "common/db.h"
#include "common/status.h"

struct binlog_conf {
    struct db_conf db;     /* host, port, user, password; database: must exist there */
    uint32_t server_id;    /* the replica id this connection presents; unique per relay */
    unsigned heartbeat_ms; /* the primary sends a heartbeat when idle this long */
};

enum binlog_kind {
    BINLOG_OTHER = 0,
    BINLOG_HEARTBEAT,
    BINLOG_ROTATE,
    BINLOG_GTID, /* starts a transaction (event group) */
    BINLOG_TABLE_MAP,
    BINLOG_ROWS,
    BINLOG_XID,        /* commits a transaction */
    BINLOG_XA_PREPARE, /* ends an XA transaction's group at its PREPARE */
    BINLOG_QUERY,      /* a statement logged as text (also LOAD DATA's Execute_load_query) */
    BINLOG_INCIDENT,   /* the primary's binlog may lack changes (LOST_EVENTS) */
};

struct binlog_event {
    enum binlog_kind kind;
    uint8_t type;       /* binlog event type code */
    uint32_t timestamp; /* seconds since epoch, 0 for artificial events */
    uint32_t server_id;
    uint32_t length;   /* whole event including header and checksum */
    uint32_t next_pos; /* position after this event in the current file; 0 if artificial */
    uint16_t flags;
    const uint8_t *body; /* after the 19-byte header, checksum removed */
    size_t body_len;
    /* BINLOG_GTID */
    struct gtid gtid;
    bool standalone;  /* no terminating XID/COMMIT: the group is one statement */
    bool xa_prepared; /* an XA transaction's group up to its PREPARE (FL_PREPARED_XA) */
    /* BINLOG_ROTATE */
    char file[256];
    uint64_t file_pos;
    /* BINLOG_QUERY: the statement and its session's default database
     * (db_len 0: none); neither NUL-terminated */
    const char *query;
    size_t query_len;
    const char *db;
    size_t db_len;
    /* BINLOG_INCIDENT: its number (1: LOST_EVENTS; 0 when the event is too
     * short to say) and message (empty when it has none or a malformed one;
     * not NUL-terminated) */
    uint16_t incident;
    const char *incident_msg;
    size_t incident_msg_len;
};

/* What decoding carries from one event to the next of a stream. */
struct binlog_decoder {
    /* Events end with a 4-byte CRC32: what the Format_description event of
     * the current file says (binlog_checksum may have changed between
     * files); until the first one, @@binlog_checksum at connect. */
    bool checksum;
    char file[256]; /* the current binlog file, "" until the first rotate event */
};

struct binlog;

/* Connects and starts a GTID-based binlog dump after position start (the
 * GTID position of the last transaction already processed). start NULL means
 * "from now": the server's @@gtid_binlog_pos, which is copied to
 * start_out. Needs the REPLICATION SLAVE privilege, and SELECT on conf->db's
 * database when it is set: a database the server does not show is refused.
 * Returns NULL and fills err on failure; caller frees with binlog_close(). */
struct binlog *binlog_open(const struct binlog_conf *conf, const struct gtid_pos *start,
                           struct gtid_pos *start_out, char *err, size_t errlen);

/* Blocks for the next event (heartbeats included, so at least once per
 * heartbeat period). ev stays valid until the next call or binlog_close().
 * CAL_EUNAVAIL when the connection is lost or the server ended the stream,
 * CAL_ERR for a malformed event or a server-side replication error. */
cal_status binlog_next(struct binlog *b, struct binlog_event *ev, char *err, size_t errlen);

/* Decodes one raw event (header, body, checksum if any: len bytes at data)
 * into ev, which points into data; a rotate event names d's next file, a
 * Format_description event says whether the events of its file carry a
 * checksum. CAL_ERR and err filled for a malformed event, and for an event
 * of a type not known here that the primary does not mark ignorable
 * (LOG_EVENT_IGNORABLE_F). Pure. */
cal_status binlog_decode(struct binlog_decoder *d, const uint8_t *data, size_t len,
                         struct binlog_event *ev, char *err, size_t errlen);

/* Database and table names compare without case on this server
 * (lower_case_table_names is not 0). */
bool binlog_names_fold_case(const struct binlog *b);

/* Current binlog file name ("" until the first rotate event). */
const char *binlog_file(const struct binlog *b);

void binlog_close(struct binlog *b); /* binlog_close(NULL) is a no-op */

#endif
