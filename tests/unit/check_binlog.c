/* Unit tests of cdc/binlog's event decoding on hand-made raw events: whether
 * an event ends with a checksum follows the Format_description event of its
 * binlog file, not the server's setting when the relay connected; a GTID
 * event's position; events the relay cannot read are refused. */
#include <stdint.h>
#include <string.h>

#include "cdc/binlog.h"
#include "tests/lib/unit.h"

enum { HEADER = 19, CRC = 4 };
/* Binlog event type codes (MariaDB's): */
enum {
    FDE_TYPE = 15,
    QUERY_TYPE = 2,
    ROTATE_TYPE = 4,
    GTID_TYPE = 162,
    WRITE_ROWS_COMPRESSED = 169,
    EXECUTE_LOAD_QUERY_TYPE = 18,
    QUERY_COMPRESSED_TYPE = 165,
    XA_PREPARE_TYPE = 38,
    INCIDENT_TYPE = 26,
};

struct raw {
    uint8_t b[512];
    size_t len;
};

static void
put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A raw event of type with body, and a checksum after it when crc. */
static struct raw
event(uint8_t type, const uint8_t *body, size_t len, bool crc)
{
    struct raw r = {.len = HEADER + len + (crc ? CRC : 0)};
    ck_assert_uint_le(r.len, sizeof(r.b));
    put_le(r.b, 1700000000, 4);
    r.b[4] = type;
    put_le(r.b + 5, 1, 4);
    put_le(r.b + 9, r.len, 4);
    put_le(r.b + 13, 1000, 4);
    memcpy(r.b + HEADER, body, len);
    memset(r.b + HEADER + len, 0xcc, crc ? CRC : 0);
    return r;
}

/* A Format_description event of a file written with the checksum algorithm
 * alg (0 none, 1 CRC32): it always has the 4-byte checksum slot. */
static struct raw
fde(uint8_t alg)
{
    uint8_t body[57 + 40 + 1] = {4, 0};
    memcpy(body + 2, "10.11.6-MariaDB-log", 19);
    body[56] = HEADER;
    memset(body + 57, 8, 40);
    body[sizeof(body) - 1] = alg;
    return event(FDE_TYPE, body, sizeof(body), true);
}

static struct raw
commit(bool crc)
{
    /* thread id, exec time, db length 0, error code, status length 0, db "" */
    uint8_t body[14 + 6] = {0};
    memcpy(body + 14, "COMMIT", 6);
    return event(QUERY_TYPE, body, sizeof(body), crc);
}

static void
assert_commit(struct binlog_decoder *d, const struct raw *r)
{
    struct binlog_event ev;
    char err[256] = "";
    ck_assert_msg(binlog_decode(d, r->b, r->len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_QUERY);
    ck_assert_uint_eq(ev.query_len, 6);
    ck_assert(memcmp(ev.query, "COMMIT", 6) == 0);
}

/* The relay connected while binlog_checksum was CRC32, and reads an older
 * file written without checksums, then rotates into one written with them
 * again: each file's events are cut as its Format_description event says. */
START_TEST(checksum_follows_each_files_format_description)
{
    struct binlog_decoder d = {.checksum = true};
    struct binlog_event ev;
    char err[256] = "";
    struct raw r = fde(0);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_OTHER);
    ck_assert(!d.checksum);
    r = commit(false);
    assert_commit(&d, &r);

    uint8_t rot[8 + 18];
    put_le(rot, 4, 8);
    memcpy(rot + 8, "mariadb-bin.000002", 18);
    r = event(ROTATE_TYPE, rot, sizeof(rot), false);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_str_eq(d.file, "mariadb-bin.000002");

    r = fde(1);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert(d.checksum);
    r = commit(true);
    assert_commit(&d, &r);
}
END_TEST

/* A Format_description event too short to hold its checksum algorithm is
 * refused, and leaves the decoder as it was. */
START_TEST(short_format_description_is_refused)
{
    struct binlog_decoder d = {.checksum = true};
    struct binlog_event ev;
    char err[256] = "";
    uint8_t body[40] = {4, 0};
    struct raw r = event(FDE_TYPE, body, sizeof(body), true);
    ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
    ck_assert_ptr_nonnull(strstr(err, "format description"));
    ck_assert(d.checksum);
    ck_assert_int_eq(binlog_decode(&d, r.b, 10, &ev, err, sizeof(err)), CAL_ERR);
}
END_TEST

/* A GTID event starts a transaction: its sequence number and domain from
 * the body, its server from the header, and whether it stands alone (no
 * XID or COMMIT ends it). The relay's checkpoint is built from these. */
START_TEST(gtid_event_gives_the_transactions_position)
{
    struct binlog_decoder d = {.checksum = true};
    struct binlog_event ev;
    char err[256] = "";
    uint8_t body[13 + 6] = {0};
    put_le(body, 0x0102030405060708ULL, 8);
    put_le(body + 8, 7, 4);
    body[12] = 1; /* FL_STANDALONE */
    struct raw r = event(GTID_TYPE, body, sizeof(body), true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_GTID);
    ck_assert_uint_eq(ev.gtid.seq, 0x0102030405060708ULL);
    ck_assert_uint_eq(ev.gtid.domain_id, 7);
    ck_assert_uint_eq(ev.gtid.server_id, 1);
    ck_assert(ev.standalone);
    body[12] = 0;
    r = event(GTID_TYPE, body, sizeof(body), true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert(!ev.standalone);
    ck_assert(!ev.xa_prepared);
    r = event(GTID_TYPE, body, 12, true);
    ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
    ck_assert_ptr_nonnull(strstr(err, "GTID"));
}
END_TEST

/* An XA transaction's PREPARE group, as MariaDB 10.11 writes it: a GTID
 * event flagged FL_PREPARED_XA (0x40) with the XID after the flags, not
 * standalone; the XA_prepare event (type 38) ends the group. */
START_TEST(xa_prepare_group_is_told)
{
    struct binlog_decoder d = {.checksum = true};
    struct binlog_event ev;
    char err[256] = "";
    uint8_t gtid[13 + 6 + 2] = {0};
    put_le(gtid, 215, 8);
    gtid[12] = 0x4c;         /* FL_PREPARED_XA | FL_ALLOW_PARALLEL | FL_TRANSACTIONAL */
    put_le(gtid + 13, 1, 4); /* format id, gtrid length 2, bqual length 0, "p1" */
    gtid[17] = 2;
    memcpy(gtid + 19, "p1", 2);
    struct raw r = event(GTID_TYPE, gtid, sizeof(gtid), true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_GTID);
    ck_assert_uint_eq(ev.gtid.seq, 215);
    ck_assert(ev.xa_prepared);
    ck_assert(!ev.standalone);
    /* one phase (0), format id, gtrid and bqual lengths, the XID */
    uint8_t prep[1 + 4 + 4 + 4 + 2] = {0};
    put_le(prep + 1, 1, 4);
    put_le(prep + 5, 2, 4);
    memcpy(prep + 13, "p1", 2);
    r = event(XA_PREPARE_TYPE, prep, sizeof(prep), true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_XA_PREPARE);
}
END_TEST

/* A Query event gives its statement and the default database it ran in
 * (the relay tells a TRUNCATE of its tables from one elsewhere by it), past
 * a status block; so does LOAD DATA's Execute_load_query event, whose
 * post-header is 13 bytes longer. */
START_TEST(query_event_gives_statement_and_database)
{
    struct binlog_decoder d = {.checksum = true};
    struct binlog_event ev;
    char err[256] = "";
    /* thread id, exec time, db length, error code, status length 5, status,
     * db, NUL, statement */
    uint8_t q[13 + 5 + 15 + 1 + 21] = {0};
    q[8] = 15;
    put_le(q + 11, 5, 2);
    memset(q + 13, 0xee, 5);
    memcpy(q + 18, "calendar_shard0", 15);
    memcpy(q + 34, "TRUNCATE TABLE nights", 21);
    struct raw r = event(QUERY_TYPE, q, sizeof(q), true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_QUERY);
    ck_assert_uint_eq(ev.db_len, 15);
    ck_assert(memcmp(ev.db, "calendar_shard0", 15) == 0);
    ck_assert_uint_eq(ev.query_len, 21);
    ck_assert(memcmp(ev.query, "TRUNCATE TABLE nights", 21) == 0);

    uint8_t l[26 + 0 + 1 + 38] = {0};
    memcpy(l + 27, "LOAD DATA INFILE 'x' INTO TABLE nights", 38);
    r = event(EXECUTE_LOAD_QUERY_TYPE, l, sizeof(l), true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_QUERY);
    ck_assert_uint_eq(ev.db_len, 0);
    ck_assert_uint_eq(ev.query_len, 38);
    ck_assert(memcmp(ev.query, "LOAD DATA INFILE 'x' INTO TABLE nights", 38) == 0);
    r = event(EXECUTE_LOAD_QUERY_TYPE, l, 25, true);
    ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
}
END_TEST

/* Events the relay cannot read are refused with a reason, not misread: a
 * rotate to a name longer than a file name can be, compressed rows or
 * statements, a query event whose status block runs past its end. */
START_TEST(unreadable_events_are_refused)
{
    struct binlog_decoder d = {.checksum = false};
    struct binlog_event ev;
    char err[256] = "";
    uint8_t rot[8 + 256];
    put_le(rot, 4, 8);
    memset(rot + 8, 'f', 256);
    struct raw r = event(ROTATE_TYPE, rot, sizeof(rot), false);
    ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
    ck_assert_str_eq(d.file, "");                        /* not taken */
    r = event(ROTATE_TYPE, rot, sizeof(rot) - 1, false); /* 255 characters: a name */
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_uint_eq(strlen(d.file), 255);

    uint8_t rows[16] = {0};
    r = event(WRITE_ROWS_COMPRESSED, rows, sizeof(rows), false);
    ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
    ck_assert_ptr_nonnull(strstr(err, "log_bin_compress"));
    r = event(QUERY_COMPRESSED_TYPE, rows, sizeof(rows), false);
    ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
    ck_assert_ptr_nonnull(strstr(err, "log_bin_compress"));

    uint8_t q[14 + 6] = {0};
    put_le(q + 11, 40, 2); /* a 40-byte status block in a 20-byte body */
    memcpy(q + 14, "COMMIT", 6);
    r = event(QUERY_TYPE, q, sizeof(q), false);
    ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
    ck_assert_ptr_nonnull(strstr(err, "query event"));
}
END_TEST

/* An Incident event (type 26): the primary says its binlog may lack changes
 * (LOST_EVENTS, 1). It has a kind of its own, so that the relay acts on it
 * instead of passing it as an event of no interest; its number and message
 * are read. */
START_TEST(incident_event_is_told)
{
    struct binlog_decoder d = {.checksum = true};
    struct binlog_event ev;
    char err[256] = "";
    /* incident number (2), message length (1), message */
    static const char msg[] = "error writing to the binary log";
    uint8_t body[3 + sizeof(msg) - 1];
    put_le(body, 1, 2);
    body[2] = (uint8_t)(sizeof(msg) - 1);
    memcpy(body + 3, msg, sizeof(msg) - 1);
    struct raw r = event(INCIDENT_TYPE, body, sizeof(body), true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_INCIDENT);
    ck_assert_uint_eq(ev.incident, 1);
    ck_assert_uint_eq(ev.incident_msg_len, sizeof(msg) - 1);
    ck_assert(memcmp(ev.incident_msg, msg, sizeof(msg) - 1) == 0);
    /* Without a message, and with a message running past the body: still
     * an incident (the relay must act on it either way), message empty. */
    r = event(INCIDENT_TYPE, body, 2, true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_INCIDENT);
    ck_assert_uint_eq(ev.incident_msg_len, 0);
    r = event(INCIDENT_TYPE, body, 10, true);
    ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_int_eq(ev.kind, BINLOG_INCIDENT);
    ck_assert_uint_eq(ev.incident, 1);
    ck_assert_uint_eq(ev.incident_msg_len, 0);
}
END_TEST

/* The relay reads the packets itself, so it refuses what Connector/C's
 * reader refused: an event type it does not know could carry changes, and
 * is passed over only when the primary flags it ignorable
 * (LOG_EVENT_IGNORABLE_F, 0x80). Types known to carry nothing for it (a
 * Gtid_list, an Annotate_rows, a Binlog_checkpoint) pass. */
START_TEST(unknown_event_types_refused_unless_ignorable)
{
    struct binlog_decoder d = {.checksum = true};
    struct binlog_event ev;
    char err[256] = "";
    uint8_t body[8] = {0};
    const uint8_t unknown[] = {39, 100, 172, 255};
    for (size_t i = 0; i < sizeof(unknown); i++) {
        struct raw r = event(unknown[i], body, sizeof(body), true);
        ck_assert_int_eq(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)), CAL_ERR);
        ck_assert_ptr_nonnull(strstr(err, "not ignorable"));
        r.b[17] = 0x80;
        ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
        ck_assert_int_eq(ev.kind, BINLOG_OTHER);
    }
    /* Among them a statement-logged LOAD DATA's Append_block (9) and
     * Delete_file (11), which MariaDB writes without the ignorable flag. */
    const uint8_t known[] = {163, 160, 161, 5, 13, 14, 9, 11};
    for (size_t i = 0; i < sizeof(known); i++) {
        struct raw r = event(known[i], body, sizeof(body), true);
        ck_assert_msg(binlog_decode(&d, r.b, r.len, &ev, err, sizeof(err)) == CAL_OK, "%s", err);
        ck_assert_int_eq(ev.kind, BINLOG_OTHER);
    }
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("binlog");
    UNIT_CASE(s, checksum_follows_each_files_format_description);
    UNIT_CASE(s, short_format_description_is_refused);
    UNIT_CASE(s, gtid_event_gives_the_transactions_position);
    UNIT_CASE(s, query_event_gives_statement_and_database);
    UNIT_CASE(s, xa_prepare_group_is_told);
    UNIT_CASE(s, unreadable_events_are_refused);
    UNIT_CASE(s, incident_event_is_told);
    UNIT_CASE(s, unknown_event_types_refused_unless_ignorable);
    return unit_run(s);
}
