/* Binlog row-image decoding: TABLE_MAP (types, metadata, optional metadata
 * with names, signedness and primary key) and ROWS events, written against
 * the MariaDB/MySQL replication protocol. Every read is bounds-checked: the
 * input is a network message. */
#include "cdc/rowimage.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/colcomp.h"
#include "common/date.h"
#include "common/util.h"

/* Column types (MYSQL_TYPE_* numbers of the protocol). */
enum {
    T_DECIMAL = 0,
    T_TINY = 1,
    T_SHORT = 2,
    T_LONG = 3,
    T_FLOAT = 4,
    T_DOUBLE = 5,
    T_NULL = 6,
    T_TIMESTAMP = 7,
    T_LONGLONG = 8,
    T_INT24 = 9,
    T_DATE = 10,
    T_TIME = 11,
    T_DATETIME = 12,
    T_YEAR = 13,
    T_NEWDATE = 14,
    T_VARCHAR = 15,
    T_BIT = 16,
    T_TIMESTAMP2 = 17,
    T_DATETIME2 = 18,
    T_TIME2 = 19,
    T_BLOB_COMPRESSED = 140,    /* MariaDB: BLOB/TEXT ... COMPRESSED */
    T_VARCHAR_COMPRESSED = 141, /* MariaDB: VARCHAR/VARBINARY ... COMPRESSED */
    T_JSON = 245,
    T_NEWDECIMAL = 246,
    T_ENUM = 247,
    T_SET = 248,
    T_TINY_BLOB = 249,
    T_MEDIUM_BLOB = 250,
    T_LONG_BLOB = 251,
    T_BLOB = 252,
    T_VAR_STRING = 253,
    T_STRING = 254,
    T_GEOMETRY = 255,
};

/* Optional metadata field types of the table map. */
enum {
    OPT_SIGNEDNESS = 1,
    OPT_COLUMN_NAME = 4,
    OPT_SIMPLE_PRIMARY_KEY = 8,
    OPT_PRIMARY_KEY_WITH_PREFIX = 9,
};

struct reader {
    const uint8_t *p;
    size_t len;
    size_t off;
    bool bad;
};

static bool
need(struct reader *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint64_t
read_le(struct reader *r, size_t n)
{
    if (!need(r, n))
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)r->p[r->off + i] << (8 * i);
    r->off += n;
    return v;
}

static uint64_t
read_be(struct reader *r, size_t n)
{
    if (!need(r, n))
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | r->p[r->off + i];
    r->off += n;
    return v;
}

static const uint8_t *
read_bytes(struct reader *r, size_t n)
{
    if (!need(r, n))
        return NULL;
    const uint8_t *b = r->p + r->off;
    r->off += n;
    return b;
}

/* Length-encoded integer; 251 (NULL) is malformed here. */
static uint64_t
read_lenenc(struct reader *r)
{
    uint64_t first = read_le(r, 1);
    if (r->bad)
        return 0;
    if (first < 251)
        return first;
    if (first == 252)
        return read_le(r, 2);
    if (first == 253)
        return read_le(r, 3);
    if (first == 254)
        return read_le(r, 8);
    r->bad = true;
    return 0;
}

static bool
bit_set(const uint8_t *bitmap, size_t i)
{
    return (bitmap[i / 8] >> (i % 8)) & 1;
}

/* Bytes of type metadata a column type carries in the table map, as
 * MariaDB writes them; -1 for a type it does not write (its size unknown, a
 * guess would misread the metadata of every later column). */
static int
meta_size(uint8_t type)
{
    switch (type) {
    case T_DECIMAL:
    case T_TINY:
    case T_SHORT:
    case T_LONG:
    case T_NULL:
    case T_TIMESTAMP:
    case T_LONGLONG:
    case T_INT24:
    case T_DATE:
    case T_TIME:
    case T_DATETIME:
    case T_YEAR:
    case T_NEWDATE:
        return 0;
    case T_FLOAT:
    case T_DOUBLE:
    case T_BLOB:
    case T_TINY_BLOB:
    case T_MEDIUM_BLOB:
    case T_LONG_BLOB:
    case T_BLOB_COMPRESSED:
    case T_GEOMETRY:
    case T_JSON:
    case T_TIMESTAMP2:
    case T_DATETIME2:
    case T_TIME2:
        return 1;
    case T_VARCHAR:
    case T_VARCHAR_COMPRESSED:
    case T_VAR_STRING:
    case T_STRING:
    case T_NEWDECIMAL:
    case T_BIT:
    case T_ENUM:
    case T_SET:
        return 2;
    default:
        return -1;
    }
}

/* Types the SIGNEDNESS bitmap has a bit for. */
static bool
is_numeric(uint8_t type)
{
    switch (type) {
    case T_TINY:
    case T_SHORT:
    case T_INT24:
    case T_LONG:
    case T_LONGLONG:
    case T_FLOAT:
    case T_DOUBLE:
    case T_NEWDECIMAL:
        return true;
    default:
        return false;
    }
}

/* A length byte, the name, a NUL. NAME_OK, NAME_LONG (well-formed, but over
 * ROWIMAGE_NAME_BYTES: skipped, out empty) or NAME_BAD. */
enum { NAME_OK, NAME_LONG, NAME_BAD };

static int
read_name(struct reader *r, char *out)
{
    uint64_t n = read_le(r, 1);
    const uint8_t *s = read_bytes(r, (size_t)n);
    if (s == NULL || read_le(r, 1) != 0 || r->bad) /* NUL terminator */
        return NAME_BAD;
    if (n > ROWIMAGE_NAME_BYTES) {
        out[0] = '\0';
        return NAME_LONG;
    }
    memcpy(out, s, (size_t)n);
    out[n] = '\0';
    return NAME_OK;
}

cal_status
rowimage_table_peek(const uint8_t *body, size_t len, uint64_t *table_id, char *db, char *table,
                    char *err, size_t errlen)
{
    struct reader r = {.p = body, .len = len};
    *table_id = read_le(&r, 6);
    read_le(&r, 2);
    int dbst = read_name(&r, db);
    int tablest = dbst == NAME_BAD ? NAME_BAD : read_name(&r, table);
    if (dbst == NAME_BAD || tablest == NAME_BAD) {
        snprintf(err, errlen, "malformed table map event (names)");
        return CAL_EINVAL;
    }
    if (dbst == NAME_LONG || tablest == NAME_LONG) {
        db[0] = table[0] = '\0';
        snprintf(err, errlen, "table map of table id %llu: a name over %d bytes",
                 (unsigned long long)*table_id, ROWIMAGE_NAME_BYTES);
        return CAL_ENOTFOUND;
    }
    return CAL_OK;
}

static cal_status
parse_optional_metadata(struct reader *r, struct rowimage_table *t, char *err, size_t errlen)
{
    while (r->off < r->len) {
        uint8_t kind = (uint8_t)read_le(r, 1);
        uint64_t flen = read_lenenc(r);
        const uint8_t *field = read_bytes(r, (size_t)flen);
        if (field == NULL)
            break;
        struct reader f = {.p = field, .len = (size_t)flen};
        switch (kind) {
        case OPT_SIGNEDNESS: {
            /* One bit per numeric column, most significant bit first. */
            size_t bit = 0;
            for (size_t i = 0; i < t->ncols; i++) {
                if (!is_numeric(t->cols[i].type))
                    continue;
                if (bit / 8 >= flen) {
                    f.bad = true;
                    break;
                }
                t->cols[i].is_unsigned = (field[bit / 8] >> (7 - bit % 8)) & 1;
                bit++;
            }
            break;
        }
        case OPT_COLUMN_NAME:
            for (size_t i = 0; i < t->ncols && !f.bad; i++) {
                uint64_t n = read_lenenc(&f);
                const uint8_t *s = read_bytes(&f, (size_t)n);
                if (s == NULL || n > ROWIMAGE_NAME_BYTES) {
                    f.bad = true;
                    break;
                }
                memcpy(t->cols[i].name, s, (size_t)n);
                t->cols[i].name[n] = '\0';
            }
            if (!f.bad)
                t->has_names = true;
            break;
        case OPT_SIMPLE_PRIMARY_KEY:
        case OPT_PRIMARY_KEY_WITH_PREFIX:
            while (f.off < f.len && !f.bad) {
                uint64_t idx = read_lenenc(&f);
                if (kind == OPT_PRIMARY_KEY_WITH_PREFIX)
                    read_lenenc(&f);
                if (f.bad || idx >= t->ncols) {
                    f.bad = true;
                    break;
                }
                t->cols[idx].pk = true;
                t->has_pk = true;
            }
            break;
        default:
            break; /* charsets, enum/set values, geometry: not needed */
        }
        if (f.bad) {
            snprintf(err, errlen, "%s.%s: malformed optional metadata field %u", t->db, t->table,
                     kind);
            return CAL_EINVAL;
        }
    }
    if (r->bad) {
        snprintf(err, errlen, "%s.%s: truncated optional metadata", t->db, t->table);
        return CAL_EINVAL;
    }
    return CAL_OK;
}

cal_status
rowimage_table_parse(const uint8_t *body, size_t len, struct rowimage_table *t, char *err,
                     size_t errlen)
{
    memset(t, 0, sizeof(*t));
    struct reader r = {.p = body, .len = len};
    t->table_id = read_le(&r, 6);
    read_le(&r, 2);
    if (read_name(&r, t->db) != NAME_OK || read_name(&r, t->table) != NAME_OK)
        goto malformed;
    uint64_t ncols = read_lenenc(&r);
    if (r.bad)
        goto malformed;
    if (ncols == 0 || ncols > ROWIMAGE_MAX_COLS) {
        snprintf(err, errlen, "%s.%s: %llu columns (supported: 1..%d)", t->db, t->table,
                 (unsigned long long)ncols, ROWIMAGE_MAX_COLS);
        return CAL_EINVAL;
    }
    t->ncols = (size_t)ncols;
    const uint8_t *types = read_bytes(&r, t->ncols);
    uint64_t meta_len = read_lenenc(&r);
    const uint8_t *meta = read_bytes(&r, (size_t)meta_len);
    if (types == NULL || meta == NULL)
        goto malformed;
    struct reader m = {.p = meta, .len = (size_t)meta_len};
    size_t unknown = t->ncols; /* the first column of a type not known here */
    for (size_t i = 0; i < t->ncols; i++) {
        struct rowimage_column *c = &t->cols[i];
        c->type = types[i];
        snprintf(c->name, sizeof(c->name), "col%zu", i);
        if (unknown < t->ncols)
            continue; /* its metadata, and so that of every later column, is not known */
        switch (meta_size(c->type)) {
        case 0:
            break;
        case 1:
            c->meta = (uint16_t)read_le(&m, 1);
            break;
        case 2:
            if (c->type == T_VARCHAR || c->type == T_VARCHAR_COMPRESSED || c->type == T_VAR_STRING)
                c->meta = (uint16_t)read_le(&m, 2);
            else
                c->meta = (uint16_t)read_be(&m, 2); /* (real type or precision, length) */
            break;
        default:
            unknown = i;
            break;
        }
    }
    /* Metadata left over: some column's size was misjudged. */
    if (m.bad || (unknown == t->ncols && m.off != m.len))
        goto malformed;
    read_bytes(&r, (t->ncols + 7) / 8); /* nullable columns: not needed */
    if (r.bad)
        goto malformed;
    if (parse_optional_metadata(&r, t, err, errlen) != CAL_OK)
        return CAL_EINVAL;
    if (unknown < t->ncols) {
        snprintf(err, errlen, "%s.%s: column %s: binlog type %u is not supported by the relay",
                 t->db, t->table, t->cols[unknown].name, t->cols[unknown].type);
        return CAL_EINVAL;
    }
    for (size_t i = 0; i < t->ncols; i++) {
        t->evcols[i].name = t->cols[i].name;
        t->evcols[i].pk = t->cols[i].pk;
    }
    t->ev.db = t->db;
    t->ev.table = t->table;
    t->ev.ncols = t->ncols;
    t->ev.cols = t->evcols;
    return CAL_OK;
malformed:
    snprintf(err, errlen, "malformed table map event%s%s", t->table[0] ? " for " : "", t->table);
    return CAL_EINVAL;
}

bool
rowimage_is_rows_event(uint8_t event_type)
{
    return (event_type >= ROWIMAGE_WRITE_V1 && event_type <= ROWIMAGE_DELETE_V1) ||
           (event_type >= ROWIMAGE_WRITE_V2 && event_type <= ROWIMAGE_DELETE_V2);
}

cal_status
rowimage_rows_table_id(const uint8_t *body, size_t len, uint64_t *table_id, char *err,
                       size_t errlen)
{
    struct reader r = {.p = body, .len = len};
    *table_id = read_le(&r, 6);
    if (r.bad) {
        snprintf(err, errlen, "malformed rows event");
        return CAL_EINVAL;
    }
    return CAL_OK;
}

cal_status
rowimage_rows_begin(const uint8_t *body, size_t len, uint8_t event_type, struct rowimage_rows *rows,
                    char *err, size_t errlen)
{
    memset(rows, 0, sizeof(*rows));
    if (!rowimage_is_rows_event(event_type)) {
        snprintf(err, errlen, "event type %u is not a rows event", event_type);
        return CAL_EINVAL;
    }
    bool v2 = event_type >= ROWIMAGE_WRITE_V2;
    unsigned kind = (unsigned)(event_type - (v2 ? ROWIMAGE_WRITE_V2 : ROWIMAGE_WRITE_V1));
    rows->op = kind == 0 ? EVENT_OP_CREATE : kind == 1 ? EVENT_OP_UPDATE : EVENT_OP_DELETE;
    struct reader r = {.p = body, .len = len};
    rows->table_id = read_le(&r, 6);
    rows->flags = (uint16_t)read_le(&r, 2);
    if (v2) {
        uint64_t extra = read_le(&r, 2);
        if (extra < 2)
            r.bad = true;
        else
            read_bytes(&r, (size_t)extra - 2);
    }
    uint64_t ncols = read_lenenc(&r);
    if (r.bad || ncols == 0 || ncols > ROWIMAGE_MAX_COLS)
        goto malformed;
    rows->ncols = (size_t)ncols;
    rows->present = read_bytes(&r, (rows->ncols + 7) / 8);
    if (rows->op == EVENT_OP_UPDATE)
        rows->present_after = read_bytes(&r, (rows->ncols + 7) / 8);
    if (r.bad)
        goto malformed;
    rows->data = body + r.off;
    rows->len = len - r.off;
    rows->off = 0;
    return CAL_OK;
malformed:
    snprintf(err, errlen, "malformed rows event");
    return CAL_EINVAL;
}

static int64_t
sign_extend(uint64_t v, unsigned bytes)
{
    unsigned shift = 64 - 8 * bytes;
    return (int64_t)(v << shift) >> shift;
}

/* The fraction of TIMESTAMP2, DATETIME2 and TIME2: (prec + 1) / 2 big-endian
 * bytes holding hundredths, ten-thousandths or microseconds. Returns the
 * byte count; *units is what one step of the stored number is worth in us. */
static unsigned
frac_bytes(unsigned prec, uint32_t *units)
{
    unsigned n = (prec + 1) / 2;
    *units = n == 1 ? 10000 : n == 2 ? 100 : 1;
    return n;
}

/* A DATETIME's fields as seconds since the epoch read as UTC; a zero or
 * impossible date or time, or a year past MariaDB's 9999, is invalid (null
 * in the event). */
static void
set_datetime(struct event_value *v, uint64_t year, unsigned month, unsigned day, unsigned hour,
             unsigned minute, unsigned second, uint32_t usec, unsigned prec)
{
    v->type = EVENT_DATETIME;
    v->precision = (uint8_t)prec;
    v->usec = usec;
    if (year == 0 || year > 9999 || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 ||
        minute > 59 || second > 59 || usec > 999999) {
        v->invalid = true;
        return;
    }
    int32_t days = date_from_ymd((int)year, month, day);
    int y2;
    unsigned m2, d2;
    date_to_ymd(days, &y2, &m2, &d2);
    v->invalid = y2 != (int)year || m2 != month || d2 != day; /* e.g. 2030-02-31 */
    v->i = (int64_t)days * 86400 + hour * 3600 + minute * 60 + second;
}

static void
set_time(struct event_value *v, bool negative, unsigned hour, unsigned minute, unsigned second,
         uint32_t usec, unsigned prec)
{
    v->type = EVENT_TIME;
    v->precision = (uint8_t)prec;
    v->negative = negative && (hour | minute | second | usec) != 0;
    v->i = (int64_t)hour * 3600 + minute * 60 + second;
    v->usec = usec;
}

/* DATETIME2: 40 big-endian bits (sign, year*13+month, day, hour, minute,
 * second) offset by 2^39, then the fraction. */
static bool
decode_datetime2(struct reader *r, unsigned prec, struct event_value *v)
{
    uint32_t units;
    unsigned fb = frac_bytes(prec, &units);
    uint64_t raw = read_be(r, 5);
    uint64_t frac = read_be(r, fb);
    if (r->bad)
        return false;
    uint64_t packed = raw >= 0x8000000000ULL ? raw - 0x8000000000ULL : 0;
    uint64_t ymd = packed >> 17, hms = packed & 0x1ffff;
    uint64_t ym = ymd >> 5;
    set_datetime(v, ym / 13, (unsigned)(ym % 13), (unsigned)(ymd & 31), (unsigned)(hms >> 12),
                 (unsigned)((hms >> 6) & 63), (unsigned)(hms & 63), (uint32_t)frac * units, prec);
    return true;
}

/* TIME2: 24 big-endian bits (sign, unused, 10 bits hour, minute, second)
 * and the fraction, together one number offset by 2^23 << fraction bits, so
 * a negative time is the two's complement of its magnitude. */
static bool
decode_time2(struct reader *r, unsigned prec, struct event_value *v)
{
    uint32_t units;
    unsigned fb = frac_bytes(prec, &units);
    uint64_t raw = read_be(r, 3 + fb);
    if (r->bad)
        return false;
    int64_t packed = (int64_t)raw - (int64_t)(0x800000ULL << (8 * fb));
    bool negative = packed < 0;
    uint64_t mag = negative ? (uint64_t)-packed : (uint64_t)packed;
    uint64_t hms = mag >> (8 * fb), frac = mag & ((1ULL << (8 * fb)) - 1);
    set_time(v, negative, (unsigned)((hms >> 12) & 0x3ff), (unsigned)((hms >> 6) & 63),
             (unsigned)(hms & 63), (uint32_t)frac * units, prec);
    return true;
}

/* Bytes of a group of 0..9 decimal digits in a binary DECIMAL. */
static const unsigned dig2bytes[10] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};

static size_t
decimal_size(unsigned precision, unsigned scale)
{
    unsigned intg = precision - scale;
    return intg / 9 * 4 + dig2bytes[intg % 9] + scale / 9 * 4 + dig2bytes[scale % 9];
}

/* Appends group, a number of `digits` decimal digits, to buf at *n; leading
 * zeros of the integer part are left out. false when it has more digits. */
static bool
decimal_group(char *buf, size_t *n, uint32_t group, unsigned digits, bool integer)
{
    char tmp[12];
    snprintf(tmp, sizeof(tmp), "%0*u", (int)digits, (unsigned)group);
    if (strlen(tmp) != digits)
        return false;
    for (unsigned i = 0; i < digits; i++) {
        if (integer && *n == 0 && tmp[i] == '0')
            continue;
        buf[(*n)++] = tmp[i];
    }
    return true;
}

/* NEWDECIMAL: the integer digits, then the fraction digits, each side in
 * groups of nine digits per 4 big-endian bytes, the odd group (dig2bytes)
 * leftmost in the integer part and rightmost in the fraction. The first bit
 * is flipped; a negative number has every byte inverted. */
static bool
decode_decimal(struct reader *r, unsigned precision, unsigned scale, struct event_value *v)
{
    size_t size = decimal_size(precision, scale);
    const uint8_t *p = read_bytes(r, size);
    if (p == NULL)
        return false;
    uint8_t b[40]; /* 65 digits: at most 32 bytes */
    memcpy(b, p, size);
    b[0] ^= 0x80;
    bool negative = (b[0] & 0x80) != 0;
    if (negative)
        for (size_t i = 0; i < size; i++)
            b[i] = (uint8_t)~b[i];
    struct reader g = {.p = b, .len = size};
    char digits[EVENT_DECIMAL_MAX];
    size_t n = 0;
    unsigned intg = precision - scale;
    bool ok = true;
    if (intg % 9)
        ok = decimal_group(digits, &n, (uint32_t)read_be(&g, dig2bytes[intg % 9]), intg % 9, true);
    for (unsigned i = 0; i < intg / 9 && ok; i++)
        ok = decimal_group(digits, &n, (uint32_t)read_be(&g, 4), 9, true);
    if (n == 0)
        digits[n++] = '0';
    size_t int_len = n;
    for (unsigned i = 0; i < scale / 9 && ok; i++)
        ok = decimal_group(digits, &n, (uint32_t)read_be(&g, 4), 9, false);
    if (scale % 9 && ok)
        ok = decimal_group(digits, &n, (uint32_t)read_be(&g, dig2bytes[scale % 9]), scale % 9,
                           false);
    if (!ok)
        return false;
    bool zero = true;
    for (size_t i = 0; i < n; i++)
        zero = zero && digits[i] == '0';
    v->type = EVENT_DECIMAL;
    snprintf(v->dec, sizeof(v->dec), "%s%.*s%s%.*s", negative && !zero ? "-" : "", (int)int_len,
             digits, scale ? "." : "", (int)(n - int_len), digits + int_len);
    return true;
}

/* ENUM (1-based index of the value, 0 for the invalid '') and SET (bit
 * mask of the members) travel as MYSQL_TYPE_STRING, the real type and the
 * size in bytes in the metadata: little-endian numbers. */
static bool
decode_enum_set(struct reader *r, unsigned real, unsigned size, struct event_value *v)
{
    if ((real == T_ENUM && size != 1 && size != 2) || (real == T_SET && (size < 1 || size > 8)) ||
        (real != T_ENUM && real != T_SET))
        return false;
    v->type = EVENT_UINT;
    v->u = read_le(r, size);
    return !r->bad;
}

/* A COMPRESSED column's value: its length prefix of lenbytes, then the
 * value (colcomp.h) of at most max bytes once inflated. An inflated value is
 * kept in rows until its next row. */
static bool
decode_compressed(struct reader *r, struct rowimage_rows *rows, const struct rowimage_column *c,
                  unsigned lenbytes, size_t max, struct event_value *v, char *err, size_t errlen)
{
    uint64_t n = read_le(r, lenbytes);
    const uint8_t *p = read_bytes(r, (size_t)n);
    if (p == NULL)
        return false;
    const uint8_t *out;
    size_t outlen;
    void *owned;
    char why[160];
    if (max > ROWIMAGE_INFLATED_MAX)
        max = ROWIMAGE_INFLATED_MAX;
    if (colcomp_decode(p, (size_t)n, max, &out, &outlen, &owned, why, sizeof(why)) != CAL_OK) {
        snprintf(err, errlen, "column %s: %s", c->name, why);
        return false;
    }
    assert(rows->ninflated < CAL_ARRAY_LEN(rows->inflated)); /* one per column and image */
    if (owned != NULL)
        rows->inflated[rows->ninflated++] = owned;
    v->type = EVENT_STR;
    v->s = (const char *)out;
    v->len = outlen;
    return true;
}

/* Decodes one non-NULL value of column c at r (an inflated one kept in
 * rows). */
static bool
decode_value(struct reader *r, struct rowimage_rows *rows, const struct rowimage_column *c,
             struct event_value *v, char *err, size_t errlen)
{
    memset(v, 0, sizeof(*v));
    switch (c->type) {
    case T_TINY:
    case T_SHORT:
    case T_INT24:
    case T_LONG:
    case T_LONGLONG: {
        unsigned n = c->type == T_TINY    ? 1
                     : c->type == T_SHORT ? 2
                     : c->type == T_INT24 ? 3
                     : c->type == T_LONG  ? 4
                                          : 8;
        uint64_t raw = read_le(r, n);
        if (c->is_unsigned) {
            v->type = EVENT_UINT;
            v->u = raw;
        } else {
            v->type = EVENT_INT;
            v->i = sign_extend(raw, n);
        }
        return !r->bad;
    }
    case T_FLOAT: {
        uint32_t raw = (uint32_t)read_le(r, 4);
        float f;
        memcpy(&f, &raw, sizeof(f));
        v->type = EVENT_REAL;
        v->d = f;
        return !r->bad;
    }
    case T_DOUBLE: {
        uint64_t raw = read_le(r, 8);
        memcpy(&v->d, &raw, sizeof(v->d));
        v->type = EVENT_REAL;
        return !r->bad;
    }
    case T_YEAR: {
        uint64_t y = read_le(r, 1);
        v->type = EVENT_INT;
        v->i = y == 0 ? 0 : (int64_t)y + 1900;
        return !r->bad;
    }
    case T_DATE:
    case T_NEWDATE: {
        uint32_t raw = (uint32_t)read_le(r, 3);
        unsigned day = raw & 31, month = (raw >> 5) & 15;
        int year = (int)(raw >> 9);
        v->type = EVENT_DATE;
        if (year == 0 || year > 9999 || month < 1 || month > 12 || day < 1 || day > 31) {
            v->invalid = true;
        } else {
            int32_t days = date_from_ymd(year, month, day);
            int y2;
            unsigned m2, d2;
            date_to_ymd(days, &y2, &m2, &d2);
            v->invalid = y2 != year || m2 != month || d2 != day; /* e.g. 2030-02-31 */
            v->i = days;
        }
        return !r->bad;
    }
    case T_TIMESTAMP:
        v->type = EVENT_TIMESTAMP;
        v->i = (int64_t)read_le(r, 4);
        return !r->bad;
    case T_TIMESTAMP2: {
        unsigned prec = c->meta > 6 ? 6 : c->meta;
        uint32_t units;
        unsigned fb = frac_bytes(prec, &units);
        v->type = EVENT_TIMESTAMP;
        v->precision = (uint8_t)prec;
        v->i = (int64_t)read_be(r, 4);
        v->usec = (uint32_t)read_be(r, fb) * units;
        return !r->bad;
    }
    case T_DATETIME2:
        return decode_datetime2(r, c->meta > 6 ? 6 : c->meta, v);
    case T_TIME2:
        return decode_time2(r, c->meta > 6 ? 6 : c->meta, v);
    case T_DATETIME: {
        /* Before MySQL 5.6 / MariaDB 10.1: YYYYMMDDhhmmss as a number. */
        uint64_t raw = read_le(r, 8);
        uint64_t d = raw / 1000000, t = raw % 1000000;
        set_datetime(v, d / 10000, (unsigned)(d / 100 % 100), (unsigned)(d % 100),
                     (unsigned)(t / 10000), (unsigned)(t / 100 % 100), (unsigned)(t % 100), 0, 0);
        return !r->bad;
    }
    case T_TIME: {
        /* Old TIME: [-]HHMMSS as a signed 3-byte number. */
        int64_t raw = sign_extend(read_le(r, 3), 3);
        uint64_t mag = raw < 0 ? (uint64_t)-raw : (uint64_t)raw;
        set_time(v, raw < 0, (unsigned)(mag / 10000), (unsigned)(mag / 100 % 100),
                 (unsigned)(mag % 100), 0, 0);
        return !r->bad;
    }
    case T_NEWDECIMAL: {
        unsigned precision = c->meta >> 8, scale = c->meta & 0xff;
        if (precision < 1 || precision > 65 || scale > 38 || scale > precision)
            break;
        if (decode_decimal(r, precision, scale, v))
            return true;
        if (!r->bad)
            snprintf(err, errlen, "column %s: malformed DECIMAL(%u,%u) value", c->name, precision,
                     scale);
        return false;
    }
    case T_BIT: {
        /* Metadata: bits % 8, then whole bytes; the value is big-endian. */
        unsigned bytes = (c->meta & 0xff) + ((c->meta >> 8) != 0);
        if (bytes < 1 || bytes > 8)
            break;
        v->type = EVENT_UINT;
        v->u = read_be(r, bytes);
        return !r->bad;
    }
    case T_NULL:
        v->type = EVENT_NULL;
        return true;
    case T_ENUM:
    case T_SET:
        if (decode_enum_set(r, c->meta >> 8, c->meta & 0xff, v))
            return true;
        if (r->bad)
            return false;
        break;
    case T_VARCHAR:
    case T_VAR_STRING: {
        uint64_t n = read_le(r, c->meta < 256 ? 1 : 2);
        v->type = EVENT_STR;
        v->s = (const char *)read_bytes(r, (size_t)n);
        v->len = (size_t)n;
        return !r->bad;
    }
    case T_STRING: {
        unsigned byte0 = c->meta >> 8, byte1 = c->meta & 0xff, real = byte0, maxlen = byte1;
        if ((byte0 & 0x30) != 0x30) {
            maxlen = byte1 | (((byte0 & 0x30) ^ 0x30) << 4);
            real = byte0 | 0x30;
        }
        if (real == T_ENUM || real == T_SET) {
            if (decode_enum_set(r, real, maxlen, v))
                return true;
            if (r->bad)
                return false;
            break;
        }
        uint64_t n = read_le(r, maxlen < 256 ? 1 : 2);
        v->type = EVENT_STR;
        v->s = (const char *)read_bytes(r, (size_t)n);
        v->len = (size_t)n;
        return !r->bad;
    }
    case T_BLOB:
    case T_TINY_BLOB:
    case T_MEDIUM_BLOB:
    case T_LONG_BLOB:
    case T_GEOMETRY:
    case T_JSON: {
        if (c->meta < 1 || c->meta > 4)
            break;
        uint64_t n = read_le(r, c->meta);
        v->type = EVENT_STR;
        v->s = (const char *)read_bytes(r, (size_t)n);
        v->len = (size_t)n;
        return !r->bad;
    }
    case T_VARCHAR_COMPRESSED:
        /* The metadata counts the header byte too, as the length does. */
        return decode_compressed(r, rows, c, c->meta < 256 ? 1 : 2, c->meta, v, err, errlen);
    case T_BLOB_COMPRESSED:
        if (c->meta < 1 || c->meta > 4)
            break;
        return decode_compressed(r, rows, c, c->meta, (size_t)((1ULL << (8 * c->meta)) - 1), v, err,
                                 errlen);
    default:
        break;
    }
    snprintf(err, errlen, "column %s: binlog type %u is not supported by the relay", c->name,
             c->type);
    return false;
}

/* One row image: NULL bitmap over the present columns, then their values. */
static bool
decode_image(struct reader *r, struct rowimage_rows *rows, const struct rowimage_table *t,
             const uint8_t *present, struct event_value *out, char *err, size_t errlen)
{
    size_t npresent = 0;
    for (size_t i = 0; i < t->ncols; i++)
        npresent += bit_set(present, i);
    const uint8_t *nulls = read_bytes(r, (npresent + 7) / 8);
    if (nulls == NULL) {
        snprintf(err, errlen, "%s.%s: truncated row image", t->db, t->table);
        return false;
    }
    size_t k = 0;
    for (size_t i = 0; i < t->ncols; i++) {
        if (!bit_set(present, i)) {
            memset(&out[i], 0, sizeof(out[i]));
            out[i].type = EVENT_ABSENT;
            continue;
        }
        if (bit_set(nulls, k++)) {
            memset(&out[i], 0, sizeof(out[i]));
            out[i].type = EVENT_NULL;
            continue;
        }
        if (!decode_value(r, rows, &t->cols[i], &out[i], err, errlen)) {
            if (r->bad)
                snprintf(err, errlen, "%s.%s: truncated value of column %s", t->db, t->table,
                         t->cols[i].name);
            return false;
        }
    }
    return true;
}

static void
free_inflated(struct rowimage_rows *rows)
{
    for (size_t i = 0; i < rows->ninflated; i++)
        free(rows->inflated[i]);
    rows->ninflated = 0;
}

void
rowimage_rows_deinit(struct rowimage_rows *rows)
{
    free_inflated(rows);
}

int
rowimage_rows_next(struct rowimage_rows *rows, const struct rowimage_table *t,
                   struct event_value *before, struct event_value *after, char *err, size_t errlen)
{
    if (rows->off >= rows->len)
        return 0;
    if (rows->ncols != t->ncols || rows->table_id != t->table_id) {
        snprintf(err, errlen, "%s.%s: rows event does not match its table map (%zu vs %zu columns)",
                 t->db, t->table, rows->ncols, t->ncols);
        return -1;
    }
    free_inflated(rows); /* the previous row's values are no longer used */
    struct reader r = {.p = rows->data, .len = rows->len, .off = rows->off};
    bool ok;
    switch (rows->op) {
    case EVENT_OP_CREATE:
        ok = decode_image(&r, rows, t, rows->present, after, err, errlen);
        break;
    case EVENT_OP_DELETE:
        ok = decode_image(&r, rows, t, rows->present, before, err, errlen);
        break;
    default:
        ok = decode_image(&r, rows, t, rows->present, before, err, errlen) &&
             decode_image(&r, rows, t, rows->present_after, after, err, errlen);
        break;
    }
    if (!ok)
        return -1;
    rows->off = r.off;
    return 1;
}
