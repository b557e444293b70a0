/* Decoding of MariaDB binlog TABLE_MAP and ROWS event bodies into typed
 * column values (cdc/event.h). Pure byte parsing, no library: the binlog
 * module hands over the event body (after the 19-byte header, without the
 * checksum). Needs binlog_row_metadata=FULL for column names and keys. */
#ifndef CAL_ROWIMAGE_H
#define CAL_ROWIMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdc/event.h"
#include "common/status.h"

#define ROWIMAGE_MAX_COLS 128
/* Database, table and column names: MariaDB allows 64 characters, and the
 * binlog writes them in utf8mb3, up to 3 bytes each: 192 bytes and a NUL. */
#define ROWIMAGE_NAME_BYTES 192
#define ROWIMAGE_NAME_MAX (ROWIMAGE_NAME_BYTES + 1)
/* The most a COMPRESSED column's value may inflate to (its column may
 * allow more): a larger one is refused rather than allocated. */
#define ROWIMAGE_INFLATED_MAX ((size_t)64 << 20)

/* Binlog event type codes (protocol constants). */
enum rowimage_event_type {
    ROWIMAGE_WRITE_V1 = 23,
    ROWIMAGE_UPDATE_V1 = 24,
    ROWIMAGE_DELETE_V1 = 25,
    ROWIMAGE_WRITE_V2 = 30,
    ROWIMAGE_UPDATE_V2 = 31,
    ROWIMAGE_DELETE_V2 = 32,
};

struct rowimage_column {
    char name[ROWIMAGE_NAME_MAX];
    uint8_t type;  /* binlog column type (MYSQL_TYPE_* number) */
    uint16_t meta; /* type metadata from the table map */
    bool is_unsigned;
    bool pk;
};

/* A parsed table map. ev points into the struct itself: do not copy it. */
struct rowimage_table {
    uint64_t table_id;
    char db[ROWIMAGE_NAME_MAX];
    char table[ROWIMAGE_NAME_MAX];
    size_t ncols;
    bool has_names; /* COLUMN_NAME metadata present (else names are "col<i>") */
    bool has_pk;    /* primary key metadata present */
    struct rowimage_column cols[ROWIMAGE_MAX_COLS];
    struct event_column evcols[ROWIMAGE_MAX_COLS];
    struct event_table ev;
};

/* Only the table id and names of a TABLE_MAP body: cheap, to decide whether
 * the table matters before parsing the rest. db and table hold
 * ROWIMAGE_NAME_MAX bytes. CAL_ENOTFOUND (*table_id set, names empty) when a
 * name is longer than MariaDB allows: whatever wrote it, that table is no
 * table of the relay's. CAL_EINVAL for a malformed body. */
cal_status rowimage_table_peek(const uint8_t *body, size_t len, uint64_t *table_id, char *db,
                               char *table, char *err, size_t errlen);

/* Parses a whole TABLE_MAP body into *t (caller storage). CAL_EINVAL for a
 * malformed body or a column type MariaDB does not write (the size of its
 * metadata unknown, the columns after it could not be read). */
cal_status rowimage_table_parse(const uint8_t *body, size_t len, struct rowimage_table *t,
                                char *err, size_t errlen);

/* Cursor over the rows of one ROWS event body. */
struct rowimage_rows {
    uint64_t table_id;
    uint16_t flags;
    enum event_op op;
    size_t ncols;
    const uint8_t *present;       /* columns in the (before) image */
    const uint8_t *present_after; /* UPDATE: columns in the after image */
    const uint8_t *data;
    size_t len;
    size_t off;
    /* The values of COMPRESSED columns of the row decoded last, inflated:
     * owned here until the next row or rowimage_rows_deinit(). */
    void *inflated[2 * ROWIMAGE_MAX_COLS];
    size_t ninflated;
};

/* true for the six ROWS event types above. */
bool rowimage_is_rows_event(uint8_t event_type);

/* The table id of a ROWS event body, without decoding the rest: a rows event
 * of a table the caller does not want is never parsed (it may have more
 * columns than ROWIMAGE_MAX_COLS). CAL_EINVAL when the body is too short. */
cal_status rowimage_rows_table_id(const uint8_t *body, size_t len, uint64_t *table_id, char *err,
                                  size_t errlen);

/* Starts rows (caller storage) on a ROWS event body; once it returned
 * CAL_OK, the caller ends it with rowimage_rows_deinit(). */
cal_status rowimage_rows_begin(const uint8_t *body, size_t len, uint8_t event_type,
                               struct rowimage_rows *rows, char *err, size_t errlen);

/* Decodes the next row of rows for table t into before/after (t->ncols values
 * each; the one an op does not have is left untouched). Strings point into
 * the event body, or into rows for an inflated COMPRESSED value: valid
 * until the next call or rowimage_rows_deinit(). Every column type MariaDB
 * writes is decoded (only the pre-5.0 DECIMAL is not): integers, YEAR,
 * FLOAT/DOUBLE; DATE, TIMESTAMP, DATETIME, TIME (the MySQL 5.6 formats with
 * fractions, and the older ones without: see below); DECIMAL as exact text;
 * BIT as an unsigned number; ENUM as its 1-based index and SET as its bit
 * mask (unsigned numbers); strings, BLOB, JSON and GEOMETRY as bytes, and
 * VARCHAR, VARBINARY, BLOB and TEXT ... COMPRESSED as the bytes written
 * (inflated, up to ROWIMAGE_INFLATED_MAX).
 * Not decodable from the binlog at all: TIME, DATETIME and TIMESTAMP with a
 * fraction in MariaDB's 5.3 format (made with mysql56_temporal_format=OFF;
 * SHOW CREATE TABLE marks them "mariadb-5.3"): they travel as the old types,
 * without metadata, in another number of bytes, so their size is unknown.
 * Returns 1 for a row, 0 at the end, -1 on a malformed or unsupported image
 * (err filled). */
int rowimage_rows_next(struct rowimage_rows *rows, const struct rowimage_table *t,
                       struct event_value *before, struct event_value *after, char *err,
                       size_t errlen);

/* Frees what rows holds (inflated values). */
void rowimage_rows_deinit(struct rowimage_rows *rows);

#endif
