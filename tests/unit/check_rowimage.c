/* Unit tests of cdc/rowimage: binlog TABLE_MAP and ROWS bodies built byte by
 * byte (as MariaDB 10.11 writes them with binlog_row_metadata=FULL) decode
 * into the right typed values; malformed and unsupported input is refused. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/rowimage.h"
#include "common/date.h"
#include "tests/lib/unit.h"

struct buf {
    uint8_t b[2048];
    size_t n;
};

static void
put(struct buf *b, const void *p, size_t n)
{
    ck_assert_uint_le(b->n + n, sizeof(b->b));
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void
put_le(struct buf *b, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        put(b, &c, 1);
    }
}

static void
put_be(struct buf *b, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(v >> (8 * (n - 1 - i)));
        put(b, &c, 1);
    }
}

static void
put_u8(struct buf *b, unsigned v)
{
    put_le(b, v, 1);
}

static void
put_lstr(struct buf *b, const char *s) /* length byte + bytes */
{
    put_u8(b, (unsigned)strlen(s));
    put(b, s, strlen(s));
}

/* The COLUMN_NAME optional metadata field. */
static void
put_column_names(struct buf *b, const char *const *cols, int n)
{
    struct buf nm = {.n = 0};
    for (int i = 0; i < n; i++)
        put_lstr(&nm, cols[i]);
    put_u8(b, 4);
    put_u8(b, (unsigned)nm.n);
    put(b, nm.b, nm.n);
}

/* Columns: id BIGINT UNSIGNED PK, night DATE PK, status VARCHAR(16) utf8mb4,
 * price BIGINT NULL, vb INT UNSIGNED, at TIMESTAMP(6), n INT, note VARCHAR(300). */
#define NCOLS 8
static const char *const names[NCOLS] = {"id", "night", "status", "price", "vb", "at", "n", "note"};

/* A TABLE_MAP body up to its column count (a one-byte length-encoded
 * integer: up to 250). */
static void
map_header(struct buf *b, uint64_t table_id, const char *db, const char *table, unsigned ncols)
{
    b->n = 0;
    put_le(b, table_id, 6);
    put_le(b, 1, 2);
    put_lstr(b, db);
    put_u8(b, 0);
    put_lstr(b, table);
    put_u8(b, 0);
    put_u8(b, ncols);
}

static void
table_map(struct buf *b, uint64_t table_id, const char *table, bool full_metadata)
{
    map_header(b, table_id, "calendar_shard0", table, NCOLS);
    const uint8_t types[NCOLS] = {8, 10, 15, 8, 3, 17, 3, 15};
    put(b, types, NCOLS);
    struct buf meta = {.n = 0};
    put_le(&meta, 64, 2);   /* status: 16 chars * 4 bytes */
    put_u8(&meta, 6);       /* at: precision */
    put_le(&meta, 1200, 2); /* note: 300 * 4 */
    put_u8(b, (unsigned)meta.n);
    put(b, meta.b, meta.n);
    put_u8(b, 0x08); /* nullable: price */
    if (!full_metadata)
        return;
    /* SIGNEDNESS over numeric columns id, price, vb, n: 1 0 1 0 */
    put_u8(b, 1);
    put_u8(b, 1);
    put_u8(b, 0xa0);
    put_column_names(b, names, NCOLS);
    /* an unknown field type is skipped */
    put_u8(b, 200);
    put_u8(b, 2);
    put_le(b, 0xffff, 2);
    /* SIMPLE_PRIMARY_KEY: columns 0 and 1 */
    put_u8(b, 8);
    put_u8(b, 2);
    put_u8(b, 0);
    put_u8(b, 1);
}

static uint32_t
packed_date(int y, unsigned m, unsigned d)
{
    return d | (m << 5) | ((uint32_t)y << 9);
}

/* One full image: NULL bitmap then values. */
static void
image(struct buf *b, uint64_t id, uint32_t date, const char *status, bool price_null, int64_t price,
      uint32_t vb, uint32_t secs, uint32_t usec, int32_t n, const char *note)
{
    put_u8(b, price_null ? 0x08 : 0x00);
    put_le(b, id, 8);
    put_le(b, date, 3);
    put_lstr(b, status);
    if (!price_null)
        put_le(b, (uint64_t)price, 8);
    put_le(b, vb, 4);
    put_be(b, secs, 4);
    put_be(b, usec, 3);
    put_le(b, (uint32_t)n, 4);
    put_le(b, strlen(note), 2); /* max length 1200 > 255: two length bytes */
    put(b, note, strlen(note));
}

static void
rows_header(struct buf *b, uint64_t table_id, bool update)
{
    b->n = 0;
    put_le(b, table_id, 6);
    put_le(b, 1, 2); /* STMT_END_F */
    put_u8(b, NCOLS);
    put_u8(b, 0xff);
    if (update)
        put_u8(b, 0xff);
}

static void
parse_table(struct rowimage_table *t)
{
    struct buf b;
    char err[256];
    table_map(&b, 77, "nights", true);
    ck_assert_msg(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)) == CAL_OK, "%s", err);
}

START_TEST(table_map_names_signedness_keys)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    parse_table(t);
    ck_assert_uint_eq(t->table_id, 77);
    ck_assert_str_eq(t->db, "calendar_shard0");
    ck_assert_str_eq(t->table, "nights");
    ck_assert_uint_eq(t->ncols, NCOLS);
    ck_assert(t->has_names && t->has_pk);
    for (int i = 0; i < NCOLS; i++)
        ck_assert_str_eq(t->cols[i].name, names[i]);
    ck_assert(t->cols[0].is_unsigned && !t->cols[3].is_unsigned && t->cols[4].is_unsigned &&
              !t->cols[6].is_unsigned);
    ck_assert(t->cols[0].pk && t->cols[1].pk && !t->cols[2].pk);
    ck_assert_str_eq(t->ev.cols[1].name, "night");
    ck_assert(t->ev.cols[1].pk);

    uint64_t id;
    char db[ROWIMAGE_NAME_MAX], table[ROWIMAGE_NAME_MAX], err[256];
    struct buf b;
    table_map(&b, 78, "vbucket_owner", false);
    ck_assert_int_eq(rowimage_table_peek(b.b, b.n, &id, db, table, err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(id, 78);
    ck_assert_str_eq(table, "vbucket_owner");
    /* Without optional metadata: parse works, names are placeholders. */
    ck_assert_int_eq(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)), CAL_OK);
    ck_assert(!t->has_names && !t->has_pk);
    ck_assert_str_eq(t->cols[2].name, "col2");
    /* Every truncation of the body is refused or parses a prefix safely. */
    table_map(&b, 77, "nights", false);
    for (size_t n = 0; n < b.n; n++)
        ck_assert_int_eq(rowimage_table_parse(b.b, n, t, err, sizeof(err)), CAL_EINVAL);
    free(t);
}
END_TEST

START_TEST(write_rows_decode_every_type)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    parse_table(t);
    struct buf b;
    rows_header(&b, 77, false);
    image(&b, UINT64_MAX, packed_date(2027, 1, 1), "booked", true, 0, 4294967295u, 1700000000,
          123456, -7, "n\xc3\xa9");
    image(&b, 42, packed_date(1970, 1, 1), "", false, INT64_MIN, 0, 1, 0, 2147483647, "");
    struct rowimage_rows rows;
    char err[256];
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_uint_eq(rows.table_id, 77);
    ck_assert_int_eq(rows.op, EVENT_OP_CREATE);
    struct event_value before[NCOLS], after[NCOLS];
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
    ck_assert_int_eq(after[0].type, EVENT_UINT);
    ck_assert_uint_eq(after[0].u, UINT64_MAX);
    ck_assert_int_eq(after[1].type, EVENT_DATE);
    ck_assert(!after[1].invalid);
    ck_assert_int_eq(after[1].i, date_from_ymd(2027, 1, 1));
    ck_assert_int_eq(after[1].i, 20819);
    ck_assert_int_eq(after[2].type, EVENT_STR);
    ck_assert_uint_eq(after[2].len, 6);
    ck_assert(memcmp(after[2].s, "booked", 6) == 0);
    ck_assert_int_eq(after[3].type, EVENT_NULL);
    ck_assert_int_eq(after[4].type, EVENT_UINT);
    ck_assert_uint_eq(after[4].u, 4294967295u);
    ck_assert_int_eq(after[5].type, EVENT_TIMESTAMP);
    ck_assert_int_eq(after[5].i, 1700000000);
    ck_assert_uint_eq(after[5].usec, 123456);
    ck_assert_uint_eq(after[5].precision, 6);
    ck_assert_int_eq(after[6].type, EVENT_INT);
    ck_assert_int_eq(after[6].i, -7);
    ck_assert_int_eq(after[7].type, EVENT_STR);
    ck_assert_uint_eq(after[7].len, 3);
    ck_assert(memcmp(after[7].s, "n\xc3\xa9", 3) == 0);

    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
    ck_assert_uint_eq(after[0].u, 42);
    ck_assert_int_eq(after[1].i, 0);
    ck_assert_uint_eq(after[2].len, 0);
    ck_assert_int_eq(after[3].type, EVENT_INT);
    ck_assert_int_eq(after[3].i, INT64_MIN);
    ck_assert_int_eq(after[6].i, 2147483647);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 0);
    free(t);
}
END_TEST

START_TEST(update_and_delete_images)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    parse_table(t);
    struct buf b;
    char err[256];
    struct rowimage_rows rows;
    struct event_value before[NCOLS], after[NCOLS];

    rows_header(&b, 77, true);
    image(&b, 1, packed_date(2030, 2, 28), "booked", false, 5, 1, 10, 0, 1, "a");
    image(&b, 1, packed_date(2030, 2, 28), "available", true, 0, 1, 11, 500000, 2, "b");
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_UPDATE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rows.op, EVENT_OP_UPDATE);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
    ck_assert(memcmp(before[2].s, "booked", 6) == 0);
    ck_assert_int_eq(before[3].i, 5);
    ck_assert(memcmp(after[2].s, "available", 9) == 0);
    ck_assert_int_eq(after[3].type, EVENT_NULL);
    ck_assert_uint_eq(after[5].usec, 500000);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 0);

    rows_header(&b, 77, false);
    image(&b, 1, packed_date(2030, 2, 28), "x", true, 0, 1, 10, 0, 1, "");
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_DELETE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rows.op, EVENT_OP_DELETE);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
    ck_assert_uint_eq(before[0].u, 1);

    /* MySQL-style v2 event with extra data. */
    struct buf v2 = {.n = 0};
    put_le(&v2, 77, 6);
    put_le(&v2, 1, 2);
    put_le(&v2, 4, 2);
    put_le(&v2, 0xabcd, 2);
    put_u8(&v2, NCOLS);
    put_u8(&v2, 0xff);
    image(&v2, 9, packed_date(2030, 1, 1), "x", true, 0, 1, 10, 0, 1, "");
    ck_assert_int_eq(rowimage_rows_begin(v2.b, v2.n, ROWIMAGE_WRITE_V2, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
    ck_assert_uint_eq(after[0].u, 9);
    free(t);
}
END_TEST

START_TEST(partial_images_and_bad_dates)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    parse_table(t);
    struct buf b = {.n = 0};
    char err[256];
    put_le(&b, 77, 6);
    put_le(&b, 1, 2);
    put_u8(&b, NCOLS);
    put_u8(&b, 0x03); /* only id and night present (binlog_row_image=MINIMAL) */
    put_u8(&b, 0x00);
    put_le(&b, 5, 8);
    put_le(&b, packed_date(2030, 2, 31), 3);
    struct rowimage_rows rows;
    struct event_value before[NCOLS], after[NCOLS];
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_DELETE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
    ck_assert_uint_eq(before[0].u, 5);
    ck_assert_int_eq(before[1].type, EVENT_DATE);
    ck_assert(before[1].invalid); /* 2030-02-31 */
    for (int i = 2; i < NCOLS; i++)
        ck_assert_int_eq(before[i].type, EVENT_ABSENT);
    free(t);
}
END_TEST

START_TEST(malformed_and_unsupported_refused)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    parse_table(t);
    struct buf b;
    char err[256];
    struct rowimage_rows rows;
    struct event_value before[NCOLS], after[NCOLS];
    rows_header(&b, 77, false);
    size_t header = b.n;
    image(&b, 1, packed_date(2030, 1, 1), "booked", false, 5, 1, 10, 0, 1, "note");
    /* Every truncation inside the row is an error, never an overread. */
    for (size_t n = header + 1; n < b.n; n++) {
        ck_assert_int_eq(rowimage_rows_begin(b.b, n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                         CAL_OK);
        ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), -1);
    }
    ck_assert_int_eq(rowimage_rows_begin(b.b, 3, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, 19, &rows, err, sizeof(err)), CAL_EINVAL);
    ck_assert(!rowimage_is_rows_event(19) && rowimage_is_rows_event(ROWIMAGE_DELETE_V2));
    /* A rows event of another table id does not decode against this map. */
    rows_header(&b, 78, false);
    image(&b, 1, packed_date(2030, 1, 1), "booked", false, 5, 1, 10, 0, 1, "");
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), -1);
    /* The pre-5.0 DECIMAL (no length known) is not supported: a clear error
     * naming the column. */
    t->cols[3].type = 0;
    rows_header(&b, 77, false);
    image(&b, 1, packed_date(2030, 1, 1), "booked", false, 5, 1, 10, 0, 1, "");
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "price"));
    free(t);
}
END_TEST

/* A TABLE_MAP body of ncols columns of one type and one metadata length
 * (meta: that many bytes of value m each), none nullable; opt is appended
 * as its optional metadata. */
static void
small_map(struct buf *b, unsigned ncols, uint8_t type, size_t metalen, unsigned m,
          const struct buf *opt)
{
    map_header(b, 5, "d", "t", ncols);
    for (unsigned i = 0; i < ncols; i++)
        put_u8(b, type);
    put_u8(b, (unsigned)(metalen * ncols));
    for (unsigned i = 0; i < ncols; i++)
        put_le(b, m, metalen);
    for (unsigned i = 0; i < (ncols + 7) / 8; i++)
        put_u8(b, 0);
    if (opt != NULL)
        put(b, opt->b, opt->n);
}

/* The TABLE_MAP limits: 1 to 128 columns, column names of up to 192 bytes
 * (64 characters of up to 3 bytes in utf8mb3), key columns that exist (an
 * index past the last would be written past the column array). */
START_TEST(table_map_limits)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    struct buf b, opt;
    char err[256], name[ROWIMAGE_NAME_BYTES + 2];
    small_map(&b, 128, 8, 0, 0, NULL);
    ck_assert_msg(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_uint_eq(t->ncols, 128);
    small_map(&b, 129, 8, 0, 0, NULL);
    ck_assert_int_eq(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "129 columns"));
    small_map(&b, 0, 8, 0, 0, NULL);
    ck_assert_int_eq(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)), CAL_EINVAL);

    for (size_t len = ROWIMAGE_NAME_BYTES; len <= ROWIMAGE_NAME_BYTES + 1; len++) {
        memset(name, 'c', len);
        name[len] = '\0';
        const char *names1[1] = {name};
        opt.n = 0;
        put_column_names(&opt, names1, 1);
        small_map(&b, 1, 8, 0, 0, &opt);
        cal_status want = len == ROWIMAGE_NAME_BYTES ? CAL_OK : CAL_EINVAL;
        ck_assert_int_eq(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)), want);
        if (want == CAL_OK)
            ck_assert_str_eq(t->cols[0].name, name);
    }

    for (unsigned idx = 1; idx <= 2; idx++) { /* columns 0 and 1: 1 is the last */
        opt.n = 0;
        put_u8(&opt, 8); /* SIMPLE_PRIMARY_KEY */
        put_u8(&opt, 1);
        put_u8(&opt, idx);
        small_map(&b, 2, 8, 0, 0, &opt);
        cal_status want = idx < 2 ? CAL_OK : CAL_EINVAL;
        ck_assert_int_eq(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)), want);
        if (want == CAL_OK)
            ck_assert(t->cols[1].pk && !t->cols[0].pk);
    }
    free(t);
}
END_TEST

/* n copies of the UTF-8 character c into buf (NUL-terminated). */
static void
repeat(char *buf, const char *c, size_t n)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        strcat(buf, c);
}

/* Names as MariaDB writes them: up to 64 characters in utf8mb3, so 33
 * Cyrillic letters (66 bytes) and 64 three-byte characters (192 bytes) are
 * names like any other, in a table map of any database of the server, and a
 * column name of 64 Cyrillic letters too. A longer name (the length byte
 * allows 255) cannot be a table of the relay's: told apart from a malformed
 * event, with the table id, so that the relay maps it as unwanted. */
START_TEST(long_utf8_names)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    struct buf b;
    char err[256], db[ROWIMAGE_NAME_MAX], table[ROWIMAGE_NAME_MAX];
    char cyr33[80], cjk64[200], cyr64[140], over[260];
    uint64_t id;
    repeat(cyr33, "\xd0\x96", 33);     /* Ж */
    repeat(cjk64, "\xe6\x97\xa5", 64); /* 日 */
    repeat(cyr64, "\xd0\x96", 64);
    ck_assert_uint_eq(strlen(cyr33), 66);
    ck_assert_uint_eq(strlen(cjk64), ROWIMAGE_NAME_BYTES);

    map_header(&b, 9, "calendar_catalog", cyr33, 1);
    put_u8(&b, 8);
    put_u8(&b, 0);
    put_u8(&b, 0);
    ck_assert_msg(rowimage_table_peek(b.b, b.n, &id, db, table, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_uint_eq(id, 9);
    ck_assert_str_eq(table, cyr33);

    map_header(&b, 10, cjk64, cjk64, 1);
    put_u8(&b, 8);
    put_u8(&b, 0);
    put_u8(&b, 0);
    const char *cols[1] = {cyr64};
    put_column_names(&b, cols, 1);
    ck_assert_msg(rowimage_table_peek(b.b, b.n, &id, db, table, err, sizeof(err)) == CAL_OK, "%s",
                  err);
    ck_assert_str_eq(db, cjk64);
    ck_assert_str_eq(table, cjk64);
    ck_assert_msg(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_str_eq(t->table, cjk64);
    ck_assert_str_eq(t->cols[0].name, cyr64);

    /* 193 and 255 bytes, as the database or the table name. */
    const size_t lens[] = {ROWIMAGE_NAME_BYTES + 1, 255};
    for (size_t k = 0; k < 2; k++) {
        size_t len = lens[k];
        memset(over, 'x', len);
        over[len] = '\0';
        for (int which = 0; which < 2; which++) {
            map_header(&b, 11, which == 0 ? over : "d", which == 0 ? "t" : over, 1);
            put_u8(&b, 8);
            put_u8(&b, 0);
            put_u8(&b, 0);
            id = 0;
            ck_assert_int_eq(rowimage_table_peek(b.b, b.n, &id, db, table, err, sizeof(err)),
                             CAL_ENOTFOUND);
            ck_assert_uint_eq(id, 11);
            ck_assert_str_eq(db, "");
            ck_assert_str_eq(table, "");
            /* Cut inside the long name: malformed, not merely long. */
            ck_assert_int_eq(
                rowimage_table_peek(b.b, 8 + 2 + len / 2, &id, db, table, err, sizeof(err)),
                CAL_EINVAL);
        }
    }
    free(t);
}
END_TEST

/* The table id of a rows event is read without decoding the rest: a table
 * of more columns than the decoder takes (MariaDB allows 4096) must not stop
 * the relay when it is not one of the relay's. */
START_TEST(rows_table_id_of_a_wide_table)
{
    struct buf b = {.n = 0};
    struct rowimage_rows rows;
    char err[256];
    uint64_t id = 0;
    put_le(&b, 0x123456789aULL, 6);
    put_le(&b, 1, 2);
    put_u8(&b, 252); /* 300 columns: a two-byte length-encoded count */
    put_le(&b, 300, 2);
    for (int i = 0; i < 38; i++)
        put_u8(&b, 0xff);
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_msg(rowimage_rows_table_id(b.b, b.n, &id, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_uint_eq(id, 0x123456789aULL);
    ck_assert_int_eq(rowimage_rows_table_id(b.b, 5, &id, err, sizeof(err)), CAL_EINVAL);
}
END_TEST

/* A VARCHAR's length takes one byte up to a maximum of 255 bytes and two
 * from 256 (an ascii VARCHAR(255), like reservations.idempotency_key, has
 * one); a rows event of another column count than its map is refused. */
START_TEST(varchar_length_bytes_and_column_count)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    struct rowimage_rows rows;
    struct event_value before[2], after[2];
    struct buf b;
    char err[256];
    for (unsigned max = 255; max <= 256; max++) {
        small_map(&b, 1, 15, 2, max, NULL);
        ck_assert_msg(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)) == CAL_OK, "%s", err);
        b.n = 0;
        put_le(&b, 5, 6);
        put_le(&b, 1, 2);
        put_u8(&b, 1);
        put_u8(&b, 0x01);
        put_u8(&b, 0x00); /* no NULL */
        put_le(&b, 3, max < 256 ? 1 : 2);
        put(&b, "key", 3);
        ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                         CAL_OK);
        ck_assert_msg(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)) == 1, "%s",
                      err);
        ck_assert_int_eq(after[0].type, EVENT_STR);
        ck_assert_uint_eq(after[0].len, 3);
        ck_assert(memcmp(after[0].s, "key", 3) == 0);
        ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 0);
    }
    /* Seven columns against the eight of the nights map. */
    struct rowimage_table *nights = calloc(1, sizeof(*nights));
    struct event_value b8[NCOLS], a8[NCOLS];
    parse_table(nights);
    rows_header(&b, 77, false);
    b.b[8] = NCOLS - 1;
    image(&b, 1, packed_date(2030, 1, 1), "booked", false, 5, 1, 10, 0, 1, "");
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, nights, b8, a8, err, sizeof(err)), -1);
    free(nights);
    free(t);
}
END_TEST

/* A table with every type ALTER TABLE ... ADD COLUMN may bring, and an INT
 * after them: the decoder must step over each to read the INT right.
 * Columns: id BIGINT UNSIGNED PK, dt DATETIME(6), dt0 DATETIME, tm TIME(3),
 * d DECIMAL(14,4), d2 DECIMAL(40,35) (MariaDB's scale goes to 38), b BIT(10), e ENUM, s SET (9..16
 * members), odt old DATETIME, otm old TIME, t0 TIME, tail INT. */
#define WIDE_NCOLS 13
static const char *const wide_names[WIDE_NCOLS] = {"id", "dt", "dt0", "tm",  "d",  "d2",  "b",
                                                   "e",  "s",  "odt", "otm", "t0", "tail"};

static void
wide_table_map(struct buf *b)
{
    map_header(b, 90, "calendar_shard0", "nights", WIDE_NCOLS);
    const uint8_t types[WIDE_NCOLS] = {8, 18, 18, 19, 246, 246, 16, 254, 254, 12, 11, 19, 3};
    put(b, types, WIDE_NCOLS);
    struct buf meta = {.n = 0};
    put_u8(&meta, 6);  /* dt: fsp */
    put_u8(&meta, 0);  /* dt0 */
    put_u8(&meta, 3);  /* tm */
    put_u8(&meta, 14); /* d: precision, scale */
    put_u8(&meta, 4);
    put_u8(&meta, 40); /* d2 */
    put_u8(&meta, 35);
    put_u8(&meta, 2); /* b: 10 bits = 1 byte + 2 bits */
    put_u8(&meta, 1);
    put_u8(&meta, 247); /* e: real type ENUM, 1 byte */
    put_u8(&meta, 1);
    put_u8(&meta, 248); /* s: real type SET, 2 bytes */
    put_u8(&meta, 2);
    put_u8(&meta, 0); /* t0: fsp */
    put_u8(b, (unsigned)meta.n);
    put(b, meta.b, meta.n);
    put_le(b, 0, 2); /* nullable bitmap */
    put_u8(b, 1);    /* SIGNEDNESS: id, d, d2, tail -> id unsigned */
    put_u8(b, 1);
    put_u8(b, 0x80);
    put_column_names(b, wide_names, WIDE_NCOLS);
    put_u8(b, 8); /* SIMPLE_PRIMARY_KEY: id */
    put_u8(b, 1);
    put_u8(b, 0);
}

/* DATETIME2 as MariaDB writes it: 1 sign bit (set), 17 bits year * 13 +
 * month, 5 day, 5 hour, 6 minute, 6 second, big-endian. */
static void
put_datetime2(struct buf *b, unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi,
              unsigned s)
{
    uint64_t ymd = ((uint64_t)(y * 13 + mo) << 5) | d;
    uint64_t hms = (h << 12) | (mi << 6) | s;
    put_be(b, (1ULL << 39) | (ymd << 17) | hms, 5);
}

/* A WRITE_ROWS body of the wide table up to the images. */
static void
wide_rows_header(struct buf *b, unsigned present)
{
    b->n = 0;
    put_le(b, 90, 6);
    put_le(b, 1, 2);
    put_u8(b, WIDE_NCOLS);
    put_le(b, present, 2);
}

START_TEST(every_fixed_size_type_is_stepped_over)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    struct buf b;
    char err[256];
    wide_table_map(&b);
    ck_assert_msg(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)) == CAL_OK, "%s", err);

    wide_rows_header(&b, 0xffff);
    put_le(&b, 0, 2); /* no NULLs */
    put_le(&b, 7, 8);
    put_datetime2(&b, 2024, 2, 29, 13, 45, 56);
    put_be(&b, 123456, 3); /* fsp 6: 3 bytes of microseconds */
    put_datetime2(&b, 1970, 1, 1, 0, 0, 0);
    /* TIME2(3) -12:34:56.789: the magnitude (hms << 16 | 7890) negated,
     * offset by 0x800000 << 16, 5 bytes big-endian. */
    uint64_t mag = ((uint64_t)((12 << 12) | (34 << 6) | 56) << 16) | 7890;
    put_be(&b, (0x800000ULL << 16) - mag, 5);
    /* DECIMAL(14,4) 1234567890.1234 (the example of MySQL's decimal.c) */
    const uint8_t dec[] = {0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2};
    put(&b, dec, sizeof(dec));
    /* DECIMAL(40,35) -0.0000000005: 3 + 4 * 3 + 4 bytes, inverted */
    const uint8_t dec2[] = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xe2, 0x32, 0x9a,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    put(&b, dec2, sizeof(dec2));
    put_be(&b, 0x2a5, 2);                                 /* BIT(10) */
    put_u8(&b, 3);                                        /* ENUM: third value */
    put_le(&b, 0x0105, 2);                                /* SET: members 1, 3, 9 */
    put_le(&b, 20240229134556ULL, 8);                     /* old DATETIME */
    put_le(&b, (uint32_t)-8385959, 3);                    /* old TIME -838:59:59 */
    put_be(&b, 0x800000 + ((1 << 12) | (2 << 6) | 3), 3); /* TIME2(0) 01:02:03 */
    put_le(&b, 12345, 4);

    struct rowimage_rows rows;
    struct event_value before[WIDE_NCOLS], after[WIDE_NCOLS];
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_msg(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)) == 1, "%s", err);
    ck_assert_int_eq(after[12].type, EVENT_INT);
    ck_assert_int_eq(after[12].i, 12345);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 0);

    ck_assert_int_eq(after[1].type, EVENT_DATETIME);
    ck_assert(!after[1].invalid);
    ck_assert_int_eq(after[1].i, 1709214356); /* 2024-02-29 13:45:56 read as UTC */
    ck_assert_uint_eq(after[1].usec, 123456);
    ck_assert_int_eq(after[2].i, 0);
    ck_assert(!after[2].invalid);
    ck_assert_int_eq(after[3].type, EVENT_TIME);
    ck_assert(after[3].negative);
    ck_assert_int_eq(after[3].i, 12 * 3600 + 34 * 60 + 56);
    ck_assert_uint_eq(after[3].usec, 789000);
    ck_assert_int_eq(after[4].type, EVENT_DECIMAL);
    ck_assert_str_eq(after[4].dec, "1234567890.1234");
    ck_assert_str_eq(after[5].dec, "-0.00000000050000000000000000000000000");
    ck_assert_int_eq(after[6].type, EVENT_UINT);
    ck_assert_uint_eq(after[6].u, 0x2a5);
    ck_assert_uint_eq(after[7].u, 3);
    ck_assert_uint_eq(after[8].u, 0x0105);
    ck_assert_int_eq(after[9].type, EVENT_DATETIME);
    ck_assert_int_eq(after[9].i, 1709214356);
    ck_assert_int_eq(after[10].type, EVENT_TIME);
    ck_assert(after[10].negative);
    ck_assert_int_eq(after[10].i, 838 * 3600 + 59 * 60 + 59);
    ck_assert(!after[11].negative);
    ck_assert_int_eq(after[11].i, 3723);

    /* The event carries them in their documented forms. */
    struct event_source src = {.name = "calendar", .file = "mariadb-bin.000001"};
    char *value;
    size_t len;
    ck_assert_int_eq(event_encode_value(&t->ev, EVENT_OP_CREATE, NULL, after, &src, 0, &value, &len,
                                        err, sizeof(err)),
                     CAL_OK);
    ck_assert_ptr_nonnull(
        strstr(value, "\"dt\":\"2024-02-29T13:45:56.123456\",\"dt0\":"
                      "\"1970-01-01T00:00:00\",\"tm\":\"-12:34:56.789\","
                      "\"d\":\"1234567890.1234\",\"d2\":\"-0.00000000050000000000000000000000000\","
                      "\"b\":677,\"e\":3,\"s\":261,\"odt\":\"2024-02-29T13:45:56\","
                      "\"otm\":\"-838:59:59\",\"t0\":\"01:02:03\",\"tail\":12345}"));
    free(value);

    /* A zero DATETIME is null. */
    wide_rows_header(&b, 0x0003); /* id, dt */
    put_u8(&b, 0);
    put_le(&b, 7, 8);
    put_be(&b, 1ULL << 39, 5);
    put_be(&b, 0, 3);
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
    ck_assert_int_eq(after[1].type, EVENT_DATETIME);
    ck_assert(after[1].invalid);
    /* So is an old DATETIME past the year 9999 (its 8 bytes hold years up
     * to 1.8 billion: found by fuzz_binlog, an int overflow in the date
     * arithmetic before). */
    const uint64_t far[] = {UINT64_MAX, 100000101000000ULL};
    for (size_t i = 0; i < sizeof(far) / sizeof(far[0]); i++) {
        wide_rows_header(&b, 0x0201); /* id, odt */
        put_u8(&b, 0);
        put_le(&b, 7, 8);
        put_le(&b, far[i], 8);
        ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                         CAL_OK);
        ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 1);
        ck_assert_int_eq(after[9].type, EVENT_DATETIME);
        ck_assert_msg(after[9].invalid, "old DATETIME %llu read as valid",
                      (unsigned long long)far[i]);
    }
    /* A DECIMAL group above its digits is refused. */
    wide_rows_header(&b, 0x0011); /* id, d */
    put_u8(&b, 0);
    put_le(&b, 7, 8);
    const uint8_t bad_dec[] = {0x81, 0xff, 0xff, 0xff, 0xff, 0x04, 0xd2};
    put(&b, bad_dec, sizeof(bad_dec));
    ck_assert_int_eq(rowimage_rows_begin(b.b, b.n, ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)),
                     CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "malformed DECIMAL(14,4)"));
    free(t);
}
END_TEST

/* The temporal types before MySQL 5.6's formats, as MariaDB 10.11 writes
 * them for columns without a fraction made with mysql56_temporal_format=OFF
 * (bytes taken from a real binlog): TIMESTAMP (7) 4 bytes little-endian,
 * DATETIME (12) YYYYMMDDhhmmss in 8, TIME (11) [-]hhmmss in 3, none with
 * metadata; the INT after them reads right. (With a fraction MariaDB's 5.3
 * formats travel under the same types, without metadata, in other sizes:
 * not decodable, see rowimage.h.) */
START_TEST(old_temporal_types_are_sized)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    struct buf b;
    char err[256];
    map_header(&b, 31, "probe_ri", "o", 5);
    const uint8_t types[] = {3, 7, 12, 11, 3};
    put(&b, types, sizeof(types));
    put_u8(&b, 0);    /* no metadata */
    put_u8(&b, 0x1e); /* nullable */
    ck_assert_msg(rowimage_table_parse(b.b, b.n, t, err, sizeof(err)) == CAL_OK, "%s", err);
    const uint8_t row[] = {0x1f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x05, 0x1f, 0x00, 0x01,
                           0x00, 0x00, 0x00, 0x94, 0x8a, 0xe0, 0x65, 0xdc, 0xf0, 0xaa, 0x8b, 0x68,
                           0x12, 0x00, 0x00, 0xc0, 0x1d, 0xfe, 0x07, 0x00, 0x00, 0x00};
    struct rowimage_rows rows;
    struct event_value before[5], after[5];
    ck_assert_int_eq(
        rowimage_rows_begin(row, sizeof(row), ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)), CAL_OK);
    ck_assert_msg(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)) == 1, "%s", err);
    ck_assert_int_eq(after[1].type, EVENT_TIMESTAMP);
    ck_assert_int_eq(after[1].i, 1709214356); /* 2024-02-29 13:45:56 UTC */
    ck_assert_int_eq(after[2].type, EVENT_DATETIME);
    ck_assert_int_eq(after[2].i, 1709214356);
    ck_assert_int_eq(after[3].type, EVENT_TIME);
    ck_assert(after[3].negative);
    ck_assert_int_eq(after[3].i, 12 * 3600 + 34 * 60 + 56);
    ck_assert_int_eq(after[4].type, EVENT_INT);
    ck_assert_int_eq(after[4].i, 7);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 0);
    rowimage_rows_deinit(&rows);
    free(t);
}
END_TEST

/* COMPRESSED columns as MariaDB 10.11 wrote them (bytes taken from a real
 * binlog): VARCHAR(200) COMPRESSED utf8mb4 is type 141 (VARCHAR_COMPRESSED)
 * with the byte length plus one (the header byte) as its metadata, 801: two
 * length bytes; BLOB COMPRESSED is type 140 (BLOB_COMPRESSED) with its
 * length bytes (2); VARCHAR(50) COMPRESSED latin1 is 141 with 51: one
 * length byte. A value is empty, or a header byte and the data: 0x00 stored
 * as is; 0x8N deflated, N bytes of big-endian original length, bit 3 set for
 * raw deflate (column_compression_zlib_wrap=OFF), clear for a zlib stream.
 * Every column decodes, the VARCHAR and the INT after them too. */
#define COMP_NCOLS 5
static const char *const comp_names[COMP_NCOLS] = {"v", "b", "s", "tail", "n"};

static const uint8_t comp_map[] = {
    0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08, 'p',  'r',  'o',  'b',  'e',  '_',
    'r',  'i',  0x00, 0x01, 'u',  0x00, 0x05, 0x8d, 0x8c, 0x8d, 0x0f, 0x03, 0x07, 0x21, 0x03,
    0x02, 0x33, 0x00, 0x28, 0x00, 0x1f, 0x01, 0x01, 0x00, 0x03, 0x04, 0x2d, 0x3f, 0x08, 0x2d,
    0x04, 0x0d, 0x01, 'v',  0x01, 'b',  0x01, 's',  0x04, 't',  'a',  'i',  'l',  0x01, 'n'};

/* INSERT ('short', REPEAT('abc',100), REPEAT('q',50), 'z', 42) with
 * column_compression_threshold=20: v stored, b and s raw deflate. */
static const uint8_t comp_row1[] = {
    0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x05, 0x1f, 0xe0, 0x06, 0x00, 0x00, 's',  'h',
    'o',  'r',  't',  0x0c, 0x00, 0x8a, 0x01, 0x2c, 0x4b, 0x4c, 0x4a, 0x4e, 0x1c, 0x45, 0xc4, 0x21,
    0x00, 0x08, 0x89, 0x32, 0x2b, 0x2c, 0x24, 0x15, 0x00, 0x00, 0x01, 'z',  0x2a, 0x00, 0x00, 0x00};

/* INSERT (REPEAT('hello ',30), '', NULL, 'w', -1) with
 * column_compression_zlib_wrap=ON: v a zlib stream, b empty, s NULL. */
static const uint8_t comp_row2[] = {0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x05, 0x1f,
                                    0xe4, 0x13, 0x00, 0x81, 0xb4, 0x78, 0x9c, 0xcb, 0x48, 0xcd,
                                    0xc9, 0xc9, 0x57, 0xc8, 0x18, 0x52, 0x24, 0x00, 0x72, 0xdf,
                                    0x42, 0x19, 0x00, 0x00, 0x01, 'w',  0xff, 0xff, 0xff, 0xff};

/* true when v is the string of n copies of unit. */
static bool
repeats(const struct event_value *v, const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    if (v->type != EVENT_STR || v->len != ul * n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (memcmp(v->s + i * ul, unit, ul) != 0)
            return false;
    return true;
}

START_TEST(compressed_columns_and_the_columns_after_them)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    char err[256];
    ck_assert_msg(rowimage_table_parse(comp_map, sizeof(comp_map), t, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    ck_assert_uint_eq(t->ncols, COMP_NCOLS);
    for (int i = 0; i < COMP_NCOLS; i++)
        ck_assert_str_eq(t->cols[i].name, comp_names[i]);
    ck_assert_uint_eq(t->cols[0].meta, 801);
    ck_assert_uint_eq(t->cols[1].meta, 2);
    ck_assert_uint_eq(t->cols[2].meta, 51);
    ck_assert_uint_eq(t->cols[3].meta, 40);
    ck_assert(!t->cols[4].is_unsigned);

    struct rowimage_rows rows;
    struct event_value before[COMP_NCOLS], after[COMP_NCOLS];
    ck_assert_int_eq(rowimage_rows_begin(comp_row1, sizeof(comp_row1), ROWIMAGE_WRITE_V1, &rows,
                                         err, sizeof(err)),
                     CAL_OK);
    ck_assert_msg(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)) == 1, "%s", err);
    ck_assert_int_eq(after[0].type, EVENT_STR);
    ck_assert_uint_eq(after[0].len, 5);
    ck_assert(memcmp(after[0].s, "short", 5) == 0);
    ck_assert(repeats(&after[1], "abc", 100));
    ck_assert(repeats(&after[2], "q", 50));
    ck_assert_int_eq(after[3].type, EVENT_STR);
    ck_assert_uint_eq(after[3].len, 1);
    ck_assert(after[3].s[0] == 'z');
    ck_assert_int_eq(after[4].type, EVENT_INT);
    ck_assert_int_eq(after[4].i, 42);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 0);
    rowimage_rows_deinit(&rows);

    ck_assert_int_eq(rowimage_rows_begin(comp_row2, sizeof(comp_row2), ROWIMAGE_WRITE_V1, &rows,
                                         err, sizeof(err)),
                     CAL_OK);
    ck_assert_msg(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)) == 1, "%s", err);
    ck_assert(repeats(&after[0], "hello ", 30));
    ck_assert_int_eq(after[1].type, EVENT_STR);
    ck_assert_uint_eq(after[1].len, 0);
    ck_assert_int_eq(after[2].type, EVENT_NULL);
    ck_assert(after[3].len == 1 && after[3].s[0] == 'w');
    ck_assert_int_eq(after[4].i, -1);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), 0);
    rowimage_rows_deinit(&rows);

    /* A value of an unknown method (header 0x9a) is refused, naming its
     * column. */
    uint8_t bad[sizeof(comp_row1)];
    memcpy(bad, comp_row1, sizeof(bad));
    ck_assert_uint_eq(bad[21], 0x8a);
    bad[21] = 0x9a;
    ck_assert_int_eq(
        rowimage_rows_begin(bad, sizeof(bad), ROWIMAGE_WRITE_V1, &rows, err, sizeof(err)), CAL_OK);
    ck_assert_int_eq(rowimage_rows_next(&rows, t, before, after, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "column b") != NULL && strstr(err, "method") != NULL, "%s", err);
    rowimage_rows_deinit(&rows);
    free(t);
}
END_TEST

/* A table map whose metadata the decoder cannot size is refused rather than
 * misread: a column type MariaDB does not write (its name in the error), or
 * metadata left over after the last column. */
START_TEST(table_map_of_unknown_metadata_refused)
{
    struct rowimage_table *t = calloc(1, sizeof(*t));
    uint8_t map[sizeof(comp_map)];
    char err[256];
    memcpy(map, comp_map, sizeof(map));
    ck_assert_uint_eq(map[22], 0x8d);
    map[22] = 142;
    ck_assert_int_eq(rowimage_table_parse(map, sizeof(map), t, err, sizeof(err)), CAL_EINVAL);
    ck_assert_msg(strstr(err, "column v: binlog type 142") != NULL, "%s", err);
    memcpy(map, comp_map, sizeof(map));
    ck_assert_uint_eq(map[25], 0x0f);
    map[25] = 0x03; /* tail read as an INT: its two metadata bytes left over */
    ck_assert_int_eq(rowimage_table_parse(map, sizeof(map), t, err, sizeof(err)), CAL_EINVAL);
    free(t);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("rowimage");
    UNIT_CASE(s, table_map_names_signedness_keys);
    UNIT_CASE(s, write_rows_decode_every_type);
    UNIT_CASE(s, update_and_delete_images);
    UNIT_CASE(s, partial_images_and_bad_dates);
    UNIT_CASE(s, malformed_and_unsupported_refused);
    UNIT_CASE(s, table_map_limits);
    UNIT_CASE(s, long_utf8_names);
    UNIT_CASE(s, rows_table_id_of_a_wide_table);
    UNIT_CASE(s, varchar_length_bytes_and_column_count);
    UNIT_CASE(s, every_fixed_size_type_is_stepped_over);
    UNIT_CASE(s, old_temporal_types_are_sized);
    UNIT_CASE(s, compressed_columns_and_the_columns_after_them);
    UNIT_CASE(s, table_map_of_unknown_metadata_refused);
    return unit_run(s);
}
