/* Change events: one decoded row change -> Debezium-style JSON value, the
 * JSON key of its primary key, its topic and its partition. Pure functions
 * (jansson only): no sockets, no binlog, no Kafka. */
#ifndef CAL_EVENT_H
#define CAL_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define EVENT_VERSION "calendar-cdc-1"
#define EVENT_CONNECTOR "mariadb"

/* TRUNCATE: rows of the table changed in a way no row image shows (a
 * TRUNCATE, a statement-logged change): no before, no after, no key, as
 * Debezium's truncate event. */
enum event_op { EVENT_OP_CREATE = 0, EVENT_OP_UPDATE, EVENT_OP_DELETE, EVENT_OP_TRUNCATE };

/* How one column value of a row image is encoded:
 *   EVENT_ABSENT     not in the image (partial row image): key omitted
 *   EVENT_NULL       SQL NULL: null
 *   EVENT_INT/UINT   JSON number (a UINT above INT64_MAX: decimal string)
 *   EVENT_REAL       JSON number
 *   EVENT_STR        JSON string (invalid UTF-8 bytes become '?')
 *   EVENT_DATE       days since 1970-01-01 (io.debezium.time.Date); a
 *                    zero or invalid date ("0000-00-00") is null
 *   EVENT_TIMESTAMP  "YYYY-MM-DDTHH:MM:SS[.ffffff]Z", UTC, exactly
 *                    `precision` fraction digits; the zero timestamp is null
 *   EVENT_DATETIME   "YYYY-MM-DDTHH:MM:SS[.ffffff]": DATETIME has no time
 *                    zone, so no "Z"; `precision` fraction digits; a zero or
 *                    invalid datetime is null
 *   EVENT_TIME       "[-]HH:MM:SS[.ffffff]" (hours up to 838), `precision`
 *                    fraction digits
 *   EVENT_DECIMAL    JSON string of the exact decimal ("-12.50"), so that no
 *                    digit is lost to a binary double */
enum event_type {
    EVENT_ABSENT = 0,
    EVENT_NULL,
    EVENT_INT,
    EVENT_UINT,
    EVENT_REAL,
    EVENT_STR,
    EVENT_DATE,
    EVENT_TIMESTAMP,
    EVENT_DATETIME,
    EVENT_TIME,
    EVENT_DECIMAL,
};

/* DECIMAL(65,38) at most: sign, 65 digits, point, NUL. */
#define EVENT_DECIMAL_MAX 68

struct event_value {
    enum event_type type;
    int64_t i;         /* INT; DATE: days since epoch; TIMESTAMP: seconds since epoch;
                          DATETIME: seconds since epoch read as UTC; TIME: seconds of
                          its magnitude (sign in negative) */
    uint64_t u;        /* UINT */
    double d;          /* REAL */
    uint32_t usec;     /* TIMESTAMP, DATETIME, TIME: microseconds 0..999999 */
    uint8_t precision; /* TIMESTAMP, DATETIME, TIME: fraction digits 0..6 */
    bool invalid;      /* DATE, DATETIME: zero or impossible date */
    bool negative;     /* TIME: below zero */
    const char *s;     /* STR: not NUL-terminated, borrowed */
    size_t len;
    char dec[EVENT_DECIMAL_MAX]; /* DECIMAL: NUL-terminated text */
};

struct event_column {
    const char *name;
    bool pk; /* part of the primary key */
};

struct event_table {
    const char *db;
    const char *table;
    size_t ncols;
    const struct event_column *cols;
};

/* Where the change came from: the "source" block of the value. */
struct event_source {
    const char *name;   /* the topic prefix, Debezium's logical server name */
    uint64_t ts_ms;     /* event timestamp (binlog header, whole seconds) in ms */
    uint32_t server_id; /* server id of the event */
    uint32_t domain_id; /* GTID of the transaction: domain-server-seq */
    uint64_t seq;
    const char *file; /* binlog file name */
    uint64_t pos;     /* position of the rows event in that file */
    uint32_t row;     /* index of the row in the rows event */
};

/* The invalidation hint of a change, sent beside the value as the Kafka
 * header EVENT_HINT_HEADER so that the invalidator need not parse the JSON:
 * "<table> <op> <source ts_ms> <before> <after>", an image written
 * "<listing_id>:<night>" for nights (days since 1970-01-01),
 * "<listing_id>" for listings, "-" when absent (and for other tables).
 * Returns its length, or 0 when the change has no usable hint (a missing
 * listing_id or an invalid night: the invalidator decodes the value and
 * reports it). invalidate_decode_hint() reads it. */
#define EVENT_HINT_HEADER "calendar-invalidate"
size_t event_hint(const struct event_table *table, enum event_op op,
                  const struct event_value *before, const struct event_value *after,
                  const struct event_source *src, char *buf, size_t size);

/* "c", "u", "d" or "t". */
const char *event_op_name(enum event_op op);

/* Encodes the value {"before":..,"after":..,"source":{..},"op":..,"ts_ms":..}.
 * before is NULL for a create, after is NULL for a delete, both for a
 * truncate (table->ncols may be 0 then); each is an array of table->ncols
 * values in column order. On success *out is a
 * NUL-terminated compact JSON text of *outlen bytes; caller frees with free(). */
cal_status event_encode_value(const struct event_table *table, enum event_op op,
                              const struct event_value *before, const struct event_value *after,
                              const struct event_source *src, uint64_t relay_ts_ms, char **out,
                              size_t *outlen, char *err, size_t errlen);

/* Encodes the key: a JSON object of the primary-key columns of row, in column
 * order ({"listing_id":42,"night":20819}). Fails when the table has no
 * primary key or a key column is absent or NULL. Caller frees with free(). */
cal_status event_encode_key(const struct event_table *table, const struct event_value *row,
                            char **out, size_t *outlen, char *err, size_t errlen);

/* Writes "<prefix>.<db>.<table>" into buf. CAL_EINVAL when it does not fit
 * or a part is empty or holds a character Kafka refuses in topic names. */
cal_status event_topic(char *buf, size_t size, const char *prefix, const char *db,
                       const char *table);

/* The listing_id column of row as an unsigned number. CAL_ENOTFOUND when the
 * table has no such column, CAL_EINVAL when it is absent, NULL or negative. */
cal_status event_listing_id(const struct event_table *table, const struct event_value *row,
                            uint64_t *listing_id);

/* The partition of a listing's changes: (fmix64(listing_id) >> 32) %
 * partition_cnt, so one listing's changes stay ordered in one partition, and
 * a shard's listings (a set of vbuckets, fmix64 % 4096) still spread over all
 * the partitions. partition_cnt > 0. */
int32_t event_partition(uint64_t listing_id, int32_t partition_cnt);

#endif
