/* Relay engine. Two threads: the reader (caller of relay_run) follows the
 * binlog and produces; the poller serves Kafka delivery reports, advances
 * the acknowledged position in binlog order and writes the checkpoint.
 *
 * Invariant: `acked` is the GTID position after the longest prefix of read
 * transactions that are complete (commit event seen) and whose every message
 * was acknowledged. Only `acked` is ever written to the checkpoint, and every
 * rewind (reconnect, delivery failure) restarts the binlog from `acked`. */
#include "cdc/relay.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cdc/checkpoint.h"
#include "cdc/event.h"
#include "cdc/gtid.h"
#include "cdc/query.h"
#include "cdc/rowimage.h"
#include "common/log.h"
#include "common/util.h"

const char *const relay_tables[] = {"listings", "nights", "reservations", NULL};

#define MAX_TOPICS 8
/* A change event's value above this is sent with its images cut to their
 * key and listing_id: librdkafka refuses a message over message.max.bytes
 * (1,000,000 by default, and Kafka's brokers take about as much), and a
 * refused one would stop the shard's relay for good. The invalidator needs
 * no more (the hint header names the keys). */
#define EVENT_VALUE_MAX 900000

struct txn {
    struct txn *next;
    struct gtid gtid;
    char file[128];
    uint64_t end_pos;
    uint32_t outstanding;     /* messages sent, not yet reported */
    struct query_group group; /* where the group ends (standalone, XA) */
    bool closed;              /* commit seen */
    bool failed;              /* a message was not delivered */
    bool outside_group;       /* an incident between groups: no GTID of its own */
    uint64_t first_send_us;
};

struct table_slot {
    uint64_t table_id;
    bool wanted;
    struct rowimage_table *t; /* wanted only */
};

struct topic_slot {
    char table[ROWIMAGE_NAME_MAX];
    char name[256];
    int32_t partitions;
};

struct relay {
    const struct relay_conf *conf;
    volatile sig_atomic_t *stop;

    pthread_mutex_t mu; /* guards everything down to the stats */
    pthread_cond_t cv;  /* signalled when a transaction leaves the queue */
    struct txn *head, *tail;
    size_t ntxns;
    struct gtid_pos acked;
    char acked_file[128];
    uint64_t acked_pos;
    uint64_t acked_txns_total;
    bool delivery_failed;
    char fail_msg[256];
    uint64_t rows_sent, rows_acked, events_read;
    uint64_t stream_errors; /* interruptions of the stream (each one a rewind) */
    uint32_t last_event_ts;
    bool caught_up;
    struct gtid last_read;
    bool names_fold_case; /* the shard's lower_case_table_names; the reader's own */
    uint64_t lat_sum_us, lat_max_us, lat_count;

    struct kproducer *kp;
    pthread_t poller;
    bool poller_running;
    atomic_bool poller_stop;

    pthread_mutex_t cp_mu; /* one checkpoint writer at a time (poller, or reader on rewind) */
    char cp_path[1024];
    struct gtid_pos written; /* guarded by cp_mu */
    bool written_valid;
    /* acked is a real position: loaded from the checkpoint, or the shard's
     * own at the first connect. Until then nothing is written: an empty
     * position would read back as "from the shard's first GTID" (or fail
     * once its binlogs were purged) instead of "from now". Guarded by cp_mu
     * once the poller runs. */
    bool start_known;
    uint64_t written_ms;
    uint64_t written_txns;
    uint64_t progress_ms;
    uint64_t progress_rows;

    struct table_slot *maps; /* the table maps of the current event group */
    size_t nmaps, capmaps;
    struct topic_slot topics[MAX_TOPICS];
    size_t ntopics;
};

static bool
stopping(const struct relay *r)
{
    return *r->stop != 0;
}

static void
sleep_interruptible(struct relay *r, unsigned ms)
{
    for (unsigned waited = 0; waited < ms && !stopping(r); waited += 50)
        cal_sleep_ms(ms - waited < 50 ? ms - waited : 50);
}

/* ------------------------------------------------------------ acked state */

static void
advance_locked(struct relay *r)
{
    uint64_t now = cal_mono_us();
    while (r->head != NULL && r->head->closed && r->head->outstanding == 0 && !r->head->failed) {
        struct txn *t = r->head;
        /* Cannot fail: stream() refused a domain past the checkpoint's room. */
        if (!t->outside_group)
            (void)gtid_pos_update(&r->acked, &t->gtid);
        cal_strlcpy(r->acked_file, t->file, sizeof(r->acked_file));
        r->acked_pos = t->end_pos;
        r->acked_txns_total++;
        if (t->first_send_us != 0) {
            uint64_t lat = now - t->first_send_us;
            r->lat_sum_us += lat;
            r->lat_count++;
            if (lat > r->lat_max_us)
                r->lat_max_us = lat;
        }
        r->head = t->next;
        if (r->head == NULL)
            r->tail = NULL;
        r->ntxns--;
        free(t);
        pthread_cond_broadcast(&r->cv);
    }
}

static void
on_delivery(void *msg_opaque, cal_status st, const char *errstr, void *arg)
{
    struct relay *r = arg;
    struct txn *t = msg_opaque;
    pthread_mutex_lock(&r->mu);
    t->outstanding--;
    if (st == CAL_OK) {
        r->rows_acked++;
    } else {
        t->failed = true;
        if (!r->delivery_failed)
            snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", errstr ? errstr : "unknown");
        r->delivery_failed = true;
        pthread_cond_broadcast(&r->cv); /* a reader waiting for room rewinds now */
    }
    advance_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* Drops every queued transaction: after a rewind they are read again. */
static void
drop_queue(struct relay *r)
{
    pthread_mutex_lock(&r->mu);
    while (r->head != NULL) {
        struct txn *t = r->head;
        r->head = t->next;
        free(t);
    }
    r->tail = NULL;
    r->ntxns = 0;
    r->delivery_failed = false;
    r->fail_msg[0] = '\0';
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------ checkpoint */

static void write_checkpoint_locked(struct relay *r, bool force);

static void
write_checkpoint(struct relay *r, bool force)
{
    pthread_mutex_lock(&r->cp_mu);
    write_checkpoint_locked(r, force);
    pthread_mutex_unlock(&r->cp_mu);
}

static void
write_checkpoint_locked(struct relay *r, bool force)
{
    struct checkpoint cp = {0};
    struct gtid_pos acked;
    uint64_t now = cal_now_ms();
    pthread_mutex_lock(&r->mu);
    acked = r->acked;
    uint64_t txns = r->acked_txns_total;
    cal_strlcpy(cp.file, r->acked_file, sizeof(cp.file));
    cp.pos = r->acked_pos;
    pthread_mutex_unlock(&r->mu);
    if (!r->start_known || (r->written_valid && gtid_pos_equal(&acked, &r->written)))
        return;
    if (!force && now - r->written_ms < (uint64_t)r->conf->checkpoint_interval_ms &&
        txns - r->written_txns < (uint64_t)r->conf->checkpoint_events)
        return;
    char err[256];
    if (gtid_pos_format(&acked, cp.gtid, sizeof(cp.gtid)) != CAL_OK) {
        log_error("checkpoint not written", "error=\"GTID position too long\"");
        return;
    }
    cp.updated_ms = now;
    if (checkpoint_store(r->cp_path, &cp, err, sizeof(err)) != CAL_OK) {
        log_error("checkpoint not written", "path=%s error=\"%s\"", r->cp_path, err);
        r->written_ms = now; /* retry at the next interval, not in a tight loop */
        return;
    }
    r->written = acked;
    r->written_valid = true;
    r->written_ms = now;
    r->written_txns = txns;
    log_debug("checkpoint written", "gtid=%s", cp.gtid);
}

/* ------------------------------------------------------------ progress */

static void
log_progress(struct relay *r)
{
    uint64_t now = cal_now_ms();
    if (r->progress_ms == 0) {
        r->progress_ms = now;
        return;
    }
    if (now - r->progress_ms < (uint64_t)r->conf->progress_interval_s * 1000)
        return;
    char acked[GTID_POS_TEXT_MAX];
    pthread_mutex_lock(&r->mu);
    gtid_pos_format(&r->acked, acked, sizeof(acked));
    uint64_t rows = r->rows_sent, rows_acked = r->rows_acked, events = r->events_read;
    uint64_t stream_errors = r->stream_errors;
    size_t pending = r->ntxns;
    struct gtid last = r->last_read;
    uint32_t last_ts = r->last_event_ts;
    bool caught_up = r->caught_up;
    uint64_t lat_avg = r->lat_count ? r->lat_sum_us / r->lat_count : 0, lat_max = r->lat_max_us;
    r->lat_sum_us = r->lat_count = r->lat_max_us = 0;
    pthread_mutex_unlock(&r->mu);
    double secs = (double)(now - r->progress_ms) / 1000.0;
    long behind = caught_up || last_ts == 0 ? 0 : (long)(now / 1000) - (long)last_ts;
    if (behind < 0)
        behind = 0;
    log_info("progress",
             "db=%s events=%" PRIu64 " rows_sent=%" PRIu64 " rows_acked=%" PRIu64
             " rows_per_s=%.1f last_gtid=%" PRIu32 "-%" PRIu32 "-%" PRIu64
             " acked_gtid=%s seconds_behind=%ld pending_txns=%zu ack_latency_avg_ms=%.2f"
             " ack_latency_max_ms=%.2f stream_errors=%" PRIu64,
             r->conf->source.db.database, events, rows, rows_acked,
             (double)(rows - r->progress_rows) / secs, last.domain_id, last.server_id, last.seq,
             acked[0] ? acked : "-", behind, pending, (double)lat_avg / 1000.0,
             (double)lat_max / 1000.0, stream_errors);
    r->progress_ms = now;
    r->progress_rows = rows;
}

static void *
poller_main(void *arg)
{
    struct relay *r = arg;
    while (!atomic_load(&r->poller_stop)) {
        kproducer_poll(r->kp, 50);
        char err[256];
        if (kproducer_fatal(r->kp, err, sizeof(err)) != CAL_OK) {
            pthread_mutex_lock(&r->mu);
            if (!r->delivery_failed)
                snprintf(r->fail_msg, sizeof(r->fail_msg), "%s", err);
            r->delivery_failed = true;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
        }
        write_checkpoint(r, false);
        log_progress(r);
    }
    return NULL;
}

static bool
producer_start(struct relay *r)
{
    char err[256];
    r->kp = kproducer_create(&r->conf->kafka, on_delivery, r, err, sizeof(err));
    if (r->kp == NULL) {
        log_error("kafka producer not created", "error=\"%s\"", err);
        return false;
    }
    atomic_store(&r->poller_stop, false);
    if (pthread_create(&r->poller, NULL, poller_main, r) != 0) {
        log_error("poller thread not started", "error=\"%s\"", strerror(errno));
        kproducer_destroy(r->kp);
        r->kp = NULL;
        return false;
    }
    r->poller_running = true;
    return true;
}

static void
producer_stop(struct relay *r)
{
    if (r->poller_running) {
        atomic_store(&r->poller_stop, true);
        pthread_join(r->poller, NULL);
        r->poller_running = false;
    }
    kproducer_destroy(r->kp);
    r->kp = NULL;
}

/* ------------------------------------------------------------ reading */

static struct table_slot *
find_map(struct relay *r, uint64_t table_id)
{
    for (size_t i = 0; i < r->nmaps; i++)
        if (r->maps[i].table_id == table_id)
            return &r->maps[i];
    return NULL;
}

/* At each event group: a group maps every table its rows events use. */
static void
clear_maps(struct relay *r)
{
    for (size_t i = 0; i < r->nmaps; i++)
        free(r->maps[i].t);
    r->nmaps = 0;
}

static bool
wanted_table(const struct relay *r, const char *db, const char *table)
{
    int (*cmp)(const char *, const char *) = r->names_fold_case ? strcasecmp : strcmp;
    if (cmp(db, r->conf->source.db.database) != 0)
        return false;
    for (size_t i = 0; relay_tables[i] != NULL; i++)
        if (cmp(table, relay_tables[i]) == 0)
            return true;
    return false;
}

static cal_status
on_table_map(struct relay *r, const struct binlog_event *ev, char *err, size_t errlen)
{
    uint64_t id;
    char db[ROWIMAGE_NAME_MAX], table[ROWIMAGE_NAME_MAX];
    /* A name longer than MariaDB allows (CAL_ENOTFOUND) is no table of
     * ours: mapped as unwanted, so that its rows events pass. */
    cal_status st = rowimage_table_peek(ev->body, ev->body_len, &id, db, table, err, errlen);
    if (st != CAL_OK && st != CAL_ENOTFOUND)
        return CAL_ERR;
    struct table_slot *slot = find_map(r, id);
    if (slot == NULL) {
        if (r->nmaps == r->capmaps) {
            r->capmaps = r->capmaps ? 2 * r->capmaps : 16;
            r->maps = cal_realloc(r->maps, r->capmaps * sizeof(*r->maps));
        }
        slot = &r->maps[r->nmaps++];
        slot->t = NULL;
    }
    free(slot->t);
    memset(slot, 0, sizeof(*slot));
    slot->table_id = id;
    if (st == CAL_ENOTFOUND || !wanted_table(r, db, table))
        return CAL_OK;
    struct rowimage_table *t = cal_malloc(sizeof(*t));
    if (rowimage_table_parse(ev->body, ev->body_len, t, err, errlen) != CAL_OK) {
        free(t);
        return CAL_ERR;
    }
    if (!t->has_names || !t->has_pk) {
        snprintf(err, errlen,
                 "%s.%s: table map carries no column names or primary key; the shard must run "
                 "with binlog_row_metadata=FULL",
                 db, table);
        free(t);
        return CAL_ERR;
    }
    slot->wanted = true;
    slot->t = t;
    return CAL_OK;
}

static struct topic_slot *
topic_for(struct relay *r, const char *table, char *err, size_t errlen)
{
    for (size_t i = 0; i < r->ntopics; i++)
        if (strcmp(r->topics[i].table, table) == 0)
            return &r->topics[i];
    if (r->ntopics == MAX_TOPICS) {
        snprintf(err, errlen, "too many topics");
        return NULL;
    }
    struct topic_slot *ts = &r->topics[r->ntopics];
    if (event_topic(ts->name, sizeof(ts->name), r->conf->topic_prefix, r->conf->source.db.database,
                    table) != CAL_OK) {
        snprintf(err, errlen, "invalid topic name %s.%s.%s", r->conf->topic_prefix,
                 r->conf->source.db.database, table);
        return NULL;
    }
    if (kproducer_partition_count(r->kp, ts->name, r->conf->metadata_timeout_ms, &ts->partitions,
                                  err, errlen) != CAL_OK)
        return NULL;
    cal_strlcpy(ts->table, table, sizeof(ts->table));
    log_info("topic ready", "topic=%s partitions=%d", ts->name, (int)ts->partitions);
    r->ntopics++;
    return ts;
}

/* Sends one message of txn t, waiting (bounded by stop and delivery
 * failure) while the local queue is full. */
static cal_status
send_message(struct relay *r, struct txn *t, const char *topic, int32_t partition, const char *key,
             size_t keylen, const char *value, size_t valuelen, const struct kproducer_header *hdr,
             char *err, size_t errlen)
{
    for (;;) {
        pthread_mutex_lock(&r->mu);
        t->outstanding++;
        if (t->first_send_us == 0)
            t->first_send_us = cal_mono_us();
        pthread_mutex_unlock(&r->mu);
        cal_status st = kproducer_send(r->kp, topic, partition, key, keylen, value, valuelen, hdr,
                                       t, err, errlen);
        if (st == CAL_OK) {
            pthread_mutex_lock(&r->mu);
            r->rows_sent++;
            pthread_mutex_unlock(&r->mu);
            return CAL_OK;
        }
        pthread_mutex_lock(&r->mu);
        t->outstanding--;
        bool failed = r->delivery_failed;
        pthread_mutex_unlock(&r->mu);
        if (st != CAL_EAGAIN)
            return st;
        if (stopping(r) || failed)
            return CAL_EAGAIN;
        cal_sleep_ms(5); /* the poller thread drains the queue meanwhile */
    }
}

/* One truncate event (no images, no key) of table, for a change of its rows
 * the binlog shows no row images of: consumers drop what they derived from
 * the table (the invalidator flushes the cache). Debezium sends one per
 * table, keyless: partition 0, no order with the table's other events. */
/* The event's source block: the relay's name, the binlog position of ev
 * and the GTID of its transaction t. */
static struct event_source
source_of(const struct relay *r, struct binlog *b, const struct binlog_event *ev,
          const struct txn *t)
{
    return (struct event_source){
        .name = r->conf->topic_prefix,
        .ts_ms = (uint64_t)ev->timestamp * 1000,
        .server_id = ev->server_id,
        .domain_id = t->gtid.domain_id,
        .seq = t->gtid.seq,
        .file = binlog_file(b),
        .pos = ev->next_pos >= ev->length ? ev->next_pos - ev->length : 0,
    };
}

static cal_status
send_truncate(struct relay *r, struct binlog *b, const struct binlog_event *ev, struct txn *t,
              const char *table, char *err, size_t errlen)
{
    struct topic_slot *ts = topic_for(r, table, err, errlen);
    if (ts == NULL)
        return CAL_EUNAVAIL;
    const struct event_table et = {.db = r->conf->source.db.database, .table = table};
    struct event_source src = source_of(r, b, ev, t);
    char *value = NULL;
    size_t valuelen;
    cal_status st = event_encode_value(&et, EVENT_OP_TRUNCATE, NULL, NULL, &src, cal_now_ms(),
                                       &value, &valuelen, err, errlen);
    char hint[160];
    struct kproducer_header hdr = {.name = EVENT_HINT_HEADER, .value = hint};
    hdr.len = event_hint(&et, EVENT_OP_TRUNCATE, NULL, NULL, &src, hint, sizeof(hint));
    if (st == CAL_OK)
        st = send_message(r, t, ts->name, 0, NULL, 0, value, valuelen, hdr.len > 0 ? &hdr : NULL,
                          err, errlen);
    free(value);
    if (st != CAL_OK)
        return st == CAL_EAGAIN ? CAL_EAGAIN : CAL_ERR;
    return CAL_OK;
}

/* The value of a change whose full images are over EVENT_VALUE_MAX (a
 * large column an operator added): the images cut to their key and
 * listing_id columns, the rest left out as under binlog_row_image=MINIMAL. */
static cal_status
encode_cut_value(const struct rowimage_table *tm, enum event_op op, const struct event_value *bv,
                 const struct event_value *av, const struct event_source *src, size_t full_len,
                 char **value, size_t *valuelen, char *err, size_t errlen)
{
    struct event_value cb[ROWIMAGE_MAX_COLS], ca[ROWIMAGE_MAX_COLS];
    for (size_t i = 0; i < tm->ncols; i++) {
        bool keep = tm->ev.cols[i].pk || strcmp(tm->ev.cols[i].name, "listing_id") == 0;
        if (bv != NULL)
            cb[i] = keep ? bv[i] : (struct event_value){.type = EVENT_ABSENT};
        if (av != NULL)
            ca[i] = keep ? av[i] : (struct event_value){.type = EVENT_ABSENT};
    }
    cal_status st = event_encode_value(&tm->ev, op, bv != NULL ? cb : NULL, av != NULL ? ca : NULL,
                                       src, cal_now_ms(), value, valuelen, err, errlen);
    if (st == CAL_OK)
        log_warn("change event over the message size: sent with its images cut to the key",
                 "db=%s table=%s bytes=%zu max=%d file=%s pos=%" PRIu64 " row=%" PRIu32, tm->db,
                 tm->table, full_len, EVENT_VALUE_MAX, src->file, src->pos, src->row);
    return st;
}

static cal_status
on_rows(struct relay *r, struct binlog *b, const struct binlog_event *ev, struct txn *t, char *err,
        size_t errlen)
{
    uint64_t table_id;
    if (rowimage_rows_table_id(ev->body, ev->body_len, &table_id, err, errlen) != CAL_OK)
        return CAL_ERR;
    struct table_slot *slot = find_map(r, table_id);
    if (slot == NULL) {
        /* Never skipped: it might be one of ours. */
        snprintf(err, errlen, "rows event of table id %llu without its table map",
                 (unsigned long long)table_id);
        return CAL_ERR;
    }
    /* Before any decoding: a table of another database may have more
     * columns than the decoder takes, and must not stop the relay. */
    if (!slot->wanted)
        return CAL_OK;
    struct rowimage_rows rows;
    if (rowimage_rows_begin(ev->body, ev->body_len, ev->type, &rows, err, errlen) != CAL_OK)
        return CAL_ERR;
    cal_status st = CAL_OK;
    const struct rowimage_table *tm = slot->t;
    struct topic_slot *ts = NULL;
    if (t == NULL) {
        snprintf(err, errlen, "rows event outside a GTID event group");
        st = CAL_ERR;
        goto out;
    }
    ts = topic_for(r, tm->table, err, errlen);
    if (ts == NULL) {
        st = CAL_EUNAVAIL;
        goto out;
    }
    struct event_value before[ROWIMAGE_MAX_COLS], after[ROWIMAGE_MAX_COLS];
    struct event_source src = source_of(r, b, ev, t);
    uint32_t unkeyed = 0; /* rows whose listing or key neither image holds */
    for (uint32_t row = 0;; row++) {
        int n = rowimage_rows_next(&rows, tm, before, after, err, errlen);
        if (n < 0) {
            st = CAL_ERR;
            goto out;
        }
        if (n == 0)
            break;
        src.row = row;
        const struct event_value *bv = rows.op == EVENT_OP_CREATE ? NULL : before;
        const struct event_value *av = rows.op == EVENT_OP_DELETE ? NULL : after;
        /* Under binlog_row_image=MINIMAL (a session may set it) an update's
         * after image holds only the columns it changed, its before image
         * only the primary key: a key column the after image lacks did not
         * change, so it is the before image's. The after image then names
         * its row, for the key, the hint and any reader of the value. */
        if (bv != NULL && av != NULL)
            for (size_t i = 0; i < tm->ncols; i++)
                if (tm->cols[i].pk && after[i].type == EVENT_ABSENT)
                    after[i] = before[i];
        const struct event_value *keyrow = av != NULL ? av : bv;
        uint64_t listing_id;
        char *key = NULL, *value = NULL;
        size_t keylen, valuelen;
        if ((event_listing_id(&tm->ev, keyrow, &listing_id) != CAL_OK &&
             (bv == NULL || event_listing_id(&tm->ev, bv, &listing_id) != CAL_OK)) ||
            event_encode_key(&tm->ev, keyrow, &key, &keylen, err, errlen) != CAL_OK) {
            /* A listing_id outside the key (reservations) is in neither
             * image under MINIMAL: no partition, perhaps no key. Stopping
             * would stall the shard for good: a truncate event of the table
             * stands for these rows (below). */
            unkeyed++;
            continue;
        }
        st = event_encode_value(&tm->ev, rows.op, bv, av, &src, cal_now_ms(), &value, &valuelen,
                                err, errlen);
        if (st == CAL_OK && valuelen > EVENT_VALUE_MAX) {
            size_t full_len = valuelen;
            free(value);
            value = NULL;
            st = encode_cut_value(tm, rows.op, bv, av, &src, full_len, &value, &valuelen, err,
                                  errlen);
        }
        /* The invalidator's hint: the keys without parsing the value. */
        char hint[160];
        struct kproducer_header hdr = {.name = EVENT_HINT_HEADER, .value = hint};
        hdr.len = event_hint(&tm->ev, rows.op, bv, av, &src, hint, sizeof(hint));
        if (st == CAL_OK)
            st = send_message(r, t, ts->name, event_partition(listing_id, ts->partitions), key,
                              keylen, value, valuelen, hdr.len > 0 ? &hdr : NULL, err, errlen);
        free(key);
        free(value);
        if (st != CAL_OK) {
            st = st == CAL_EAGAIN ? CAL_EAGAIN : CAL_ERR;
            goto out;
        }
    }
    if (unkeyed > 0) {
        st = send_truncate(r, b, ev, t, tm->table, err, errlen);
        if (st != CAL_OK)
            goto out;
        log_warn("rows without their listing_id in either image: truncate event sent",
                 "db=%s table=%s rows=%" PRIu32 " gtid=%" PRIu32 "-%" PRIu32 "-%" PRIu64
                 " file=%s pos=%" PRIu64,
                 tm->db, tm->table, unkeyed, t->gtid.domain_id, t->gtid.server_id, t->gtid.seq,
                 src.file, src.pos);
    }
out:
    rowimage_rows_deinit(&rows);
    return st;
}

/* A truncate event for each relayed table named (bits of relay_tables; 0:
 * every one), part of transaction t, so acknowledged before the checkpoint
 * passes it; their names, comma-separated, in tables. */
static cal_status
send_truncates(struct relay *r, struct binlog *b, const struct binlog_event *ev, struct txn *t,
               uint32_t named, char *tables, size_t tables_size, char *err, size_t errlen)
{
    tables[0] = '\0';
    for (uint32_t i = 0; relay_tables[i] != NULL; i++) {
        if (named != 0 && !(named & (1u << i)))
            continue;
        cal_status st = send_truncate(r, b, ev, t, relay_tables[i], err, errlen);
        if (st != CAL_OK)
            return st;
        size_t n = strlen(tables);
        snprintf(tables + n, tables_size - n, "%s%s", n ? "," : "", relay_tables[i]);
    }
    return CAL_OK;
}

/* A statement that may have changed rows of the relayed tables without row
 * images (TRUNCATE, DROP, ALTER, statement-logged DML, query.h): a truncate
 * event for each relayed table it changed (named: bits of relay_tables;
 * 0: every one), part of its transaction. */
static cal_status
on_flush_statement(struct relay *r, struct binlog *b, const struct binlog_event *ev, struct txn *t,
                   uint32_t named, char *err, size_t errlen)
{
    if (t == NULL) {
        snprintf(err, errlen, "statement outside a GTID event group");
        return CAL_ERR;
    }
    char tables[128];
    cal_status st = send_truncates(r, b, ev, t, named, tables, sizeof(tables), err, errlen);
    if (st != CAL_OK)
        return st;
    /* The statement itself is not logged: it may carry data. */
    log_warn("statement changed relayed tables without row images: truncate events sent",
             "db=%s tables=%s gtid=%" PRIu32 "-%" PRIu32 "-%" PRIu64 " file=%s pos=%" PRIu32,
             r->conf->source.db.database, tables, t->gtid.domain_id, t->gtid.server_id, t->gtid.seq,
             binlog_file(b), ev->next_pos >= ev->length ? ev->next_pos - ev->length : 0);
    return CAL_OK;
}

static void
close_txn(struct relay *r, struct binlog *b, struct txn *t, const struct binlog_event *ev)
{
    pthread_mutex_lock(&r->mu);
    t->closed = true;
    cal_strlcpy(t->file, binlog_file(b), sizeof(t->file));
    t->end_pos = ev->next_pos;
    advance_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* Queues a new open transaction, waiting while too many are pending: the
 * group a GTID event starts, or an incident between groups, which has no
 * GTID of its own (it carries the last one read, for its events' source,
 * and leaves the checkpoint's as it is). */
static struct txn *
open_txn(struct relay *r, const struct binlog_event *ev)
{
    pthread_mutex_lock(&r->mu);
    while (r->ntxns >= (size_t)r->conf->max_pending_txns && !stopping(r) && !r->delivery_failed) {
        /* Woken when a transaction leaves the queue or a delivery fails;
         * the timeout notices a stop (set by a signal handler). Monotonic:
         * a wall clock stepped back would keep the reader here that long. */
        struct timespec ts = cal_mono_after_ms(100);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    struct txn *t = cal_calloc(1, sizeof(*t));
    if (ev->kind == BINLOG_GTID) {
        t->gtid = ev->gtid;
        t->group.standalone = ev->standalone;
        t->group.xa = ev->xa_prepared;
        r->last_read = ev->gtid;
    } else {
        t->gtid = r->last_read;
        t->outside_group = true;
    }
    if (r->tail != NULL)
        r->tail->next = t;
    else
        r->head = t;
    r->tail = t;
    r->ntxns++;
    pthread_mutex_unlock(&r->mu);
    return t;
}

/* An Incident event: the primary made a change it could not log
 * (LOST_EVENTS, e.g. a statement on a non-transactional table whose binlog
 * cache overflowed). No event says which rows, so, as for a statement
 * without row images, every relayed table gets a truncate event. MariaDB
 * writes it after a group's commit event: outside a group (cur NULL) it is
 * queued as a transaction of its own, so that the checkpoint passes it only
 * once Kafka acknowledged its events, and a restart reads it again. */
static cal_status
on_incident(struct relay *r, struct binlog *b, const struct binlog_event *ev, struct txn *cur,
            char *err, size_t errlen)
{
    struct txn *t = cur != NULL ? cur : open_txn(r, ev);
    char tables[128], msg[256];
    cal_status st = send_truncates(r, b, ev, t, 0, tables, sizeof(tables), err, errlen);
    if (st != CAL_OK)
        return st; /* t stays open: the rewind drops it */
    /* Once closed, t is freed as soon as Kafka acknowledged it. */
    const struct gtid gtid = t->gtid;
    if (cur == NULL)
        close_txn(r, b, t, ev);
    snprintf(msg, sizeof(msg), "%.*s", (int)ev->incident_msg_len,
             ev->incident_msg != NULL ? ev->incident_msg : "");
    cal_printable_ascii(msg);
    for (char *c = msg; *c != '\0'; c++)
        if (*c == '"' || *c == '\\')
            *c = '?';
    char after[64] = "-"; /* none read since this stream (re)connected */
    if (gtid.server_id != 0 || gtid.seq != 0)
        snprintf(after, sizeof(after), "%" PRIu32 "-%" PRIu32 "-%" PRIu64, gtid.domain_id,
                 gtid.server_id, gtid.seq);
    log_warn("incident event: the shard's binlog may lack changes, truncate events sent",
             "db=%s tables=%s incident=%u message=\"%s\" after_gtid=%s file=%s pos=%" PRIu32,
             r->conf->source.db.database, tables, (unsigned)ev->incident, msg, after,
             binlog_file(b), ev->next_pos >= ev->length ? ev->next_pos - ev->length : 0);
    return CAL_OK;
}

/* Follows the stream until an error, a delivery failure or stop. */
static cal_status
stream(struct relay *r, struct binlog *b, char *err, size_t errlen)
{
    struct txn *cur = NULL;
    struct binlog_event ev;
    cal_status st = CAL_OK;
    /* The domains of the checkpoint and of every transaction read since
     * (checkpoint_admit). */
    pthread_mutex_lock(&r->mu);
    struct gtid_pos seen = r->acked;
    /* The shard sends the events between transactions of the checkpoint's
     * file again (an Incident): they follow nothing read on this stream. */
    r->last_read = (struct gtid){0};
    pthread_mutex_unlock(&r->mu);
    clear_maps(r);
    while (!stopping(r)) {
        pthread_mutex_lock(&r->mu);
        bool failed = r->delivery_failed;
        if (failed)
            snprintf(err, errlen, "delivery failed: %s", r->fail_msg);
        pthread_mutex_unlock(&r->mu);
        if (failed) {
            st = CAL_ERR;
            break;
        }
        st = binlog_next(b, &ev, err, errlen);
        if (st != CAL_OK)
            break;
        pthread_mutex_lock(&r->mu);
        r->events_read++;
        if (ev.kind == BINLOG_HEARTBEAT) {
            r->caught_up = true;
        } else if (ev.timestamp != 0) {
            r->last_event_ts = ev.timestamp;
            r->caught_up = false;
        }
        pthread_mutex_unlock(&r->mu);
        switch (ev.kind) {
        case BINLOG_GTID:
            if (checkpoint_admit(&seen, &ev.gtid, err, errlen) != CAL_OK) {
                st = CAL_ERR;
                break;
            }
            if (cur != NULL) /* group without a commit event: treat as ended */
                close_txn(r, b, cur, &ev);
            clear_maps(r);
            cur = open_txn(r, &ev);
            break;
        case BINLOG_TABLE_MAP:
            st = on_table_map(r, &ev, err, errlen);
            break;
        case BINLOG_ROWS:
            st = on_rows(r, b, &ev, cur, err, errlen);
            break;
        case BINLOG_XID:
        case BINLOG_XA_PREPARE:
            /* An XA transaction's group ends at its PREPARE, so its events
             * are published then, before its COMMIT makes the change
             * visible: a read in between can fill the cache with the old
             * value again, which stays until the row changes again or the
             * entry's TTL (calendard does not use XA); after XA ROLLBACK they
             * were extra deletes. Holding them for the XA COMMIT group (hours
             * later perhaps, from another session) would keep them in memory
             * and the checkpoint, which advances in binlog order, behind the
             * PREPARE until then. */
            if (cur != NULL)
                close_txn(r, b, cur, &ev);
            cur = NULL;
            break;
        case BINLOG_INCIDENT:
            st = on_incident(r, b, &ev, cur, err, errlen);
            break;
        case BINLOG_QUERY: {
            const struct query_target target = {r->conf->source.db.database, relay_tables};
            uint32_t named;
            enum query_kind kind =
                query_classify(ev.query, ev.query_len, ev.db, ev.db_len, &target, &named);
            if (kind == QUERY_FLUSH)
                st = on_flush_statement(r, b, &ev, cur, named, err, errlen);
            if (st == CAL_OK && cur != NULL && query_group_step(&cur->group, kind)) {
                close_txn(r, b, cur, &ev);
                cur = NULL;
            }
            break;
        }
        default:
            break;
        }
        if (st != CAL_OK)
            break;
    }
    clear_maps(r);
    return st;
}

/* ------------------------------------------------------------ run */

/* After RELAY_STUCK_ATTEMPTS interruptions in a row without the
 * acknowledged position moving, each after a short stream, the relay is
 * stuck (an event it cannot relay, a Kafka cluster that refuses it): logged
 * at error level so that someone looks. A stream that ran
 * RELAY_STREAM_HEALTHY_US was healthy, whether or not it carried a change:
 * the wait before the next connect starts short again. */
#define RETRY_MIN_MS 100 /* the first wait before connecting again */

unsigned
relay_count_interruption(const struct gtid_pos *acked, uint64_t ran_us, struct gtid_pos *stuck_at,
                         unsigned *stuck)
{
    if (*stuck > 0 && gtid_pos_equal(acked, stuck_at) && ran_us < RELAY_STREAM_HEALTHY_US) {
        (*stuck)++;
    } else {
        *stuck = 1;
        *stuck_at = *acked;
    }
    return *stuck;
}

/* Logs one interruption of the stream; *stuck counts the interruptions in a
 * row at the acknowledged position *stuck_at. The wait before the next
 * connect (*retry_ms) starts again at its shortest after a stream that got
 * further or ran RELAY_STREAM_HEALTHY_US, and keeps growing otherwise: a position
 * that fails at once (an event the relay refuses, a purged binlog) is tried
 * again, and logged, at most every reconnect_max_ms. */
static void
log_interruption(struct relay *r, cal_status st, const char *err, uint64_t ran_us,
                 unsigned *retry_ms, struct gtid_pos *stuck_at, unsigned *stuck)
{
    pthread_mutex_lock(&r->mu);
    r->stream_errors++;
    struct gtid_pos acked = r->acked;
    pthread_mutex_unlock(&r->mu);
    if (relay_count_interruption(&acked, ran_us, stuck_at, stuck) == 1)
        *retry_ms = RETRY_MIN_MS;
    if (*stuck < RELAY_STUCK_ATTEMPTS) {
        log_warn("stream interrupted", "status=%s error=\"%s\" retry_ms=%u", cal_status_name(st),
                 err, *retry_ms);
        return;
    }
    char text[GTID_POS_TEXT_MAX];
    gtid_pos_format(&acked, text, sizeof(text));
    log_error("stream stuck: the same position fails again",
              "status=%s error=\"%s\" attempts=%u acked_gtid=%s retry_ms=%u", cal_status_name(st),
              err, *stuck, text[0] ? text : "-", *retry_ms);
}

static cal_status
persist_start(struct relay *r, const struct gtid_pos *pos)
{
    pthread_mutex_lock(&r->mu);
    r->acked = *pos;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&r->cp_mu);
    r->start_known = true;
    write_checkpoint_locked(r, true);
    bool ok = r->written_valid && gtid_pos_equal(&r->written, pos);
    pthread_mutex_unlock(&r->cp_mu);
    return ok ? CAL_OK : CAL_ERR;
}

int
relay_run(const struct relay_conf *conf, volatile sig_atomic_t *stop)
{
    struct relay *r = cal_calloc(1, sizeof(*r));
    r->conf = conf;
    r->stop = stop;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->cp_mu, NULL);
    cal_cond_init_monotonic(&r->cv);
    char err[512];
    int rc = 2;
    int lock_fd = -1;
    /* A configuration Kafka refuses stays refused: fatal, not retried. */
    if (kproducer_conf_check(&conf->kafka, err, sizeof(err)) != CAL_OK) {
        log_error("relay not started", "error=\"[kafka] %s\"", err);
        goto out;
    }
    rc = 1;
    lock_fd = checkpoint_lock_dir(conf->state_dir, err, sizeof(err));
    if (lock_fd < 0) {
        log_error("relay not started", "error=\"%s\"", err);
        goto out;
    }
    snprintf(r->cp_path, sizeof(r->cp_path), "%s/checkpoint", conf->state_dir);
    struct checkpoint cp;
    bool have_start = false;
    struct gtid_pos start;
    cal_status st = checkpoint_load(r->cp_path, &cp, err, sizeof(err));
    if (st == CAL_OK) {
        if (gtid_pos_parse(&start, cp.gtid, err, sizeof(err)) != CAL_OK) {
            log_error("relay not started", "error=\"%s\"", err);
            goto out;
        }
        have_start = true;
        r->acked = start;
        r->written = start;
        r->written_valid = true;
        r->start_known = true;
        log_info("checkpoint loaded", "path=%s gtid=%s file=%s pos=%" PRIu64, r->cp_path,
                 cp.gtid[0] ? cp.gtid : "-", cp.file, cp.pos);
    } else if (st == CAL_ENOTFOUND) {
        log_info("no checkpoint", "path=%s start=\"current @@gtid_binlog_pos of the shard\"",
                 r->cp_path);
    } else {
        log_error("relay not started", "error=\"%s\"", err);
        goto out;
    }

    unsigned backoff = RETRY_MIN_MS, stuck = 0;
    struct gtid_pos stuck_at;
    memset(&stuck_at, 0, sizeof(stuck_at));
    while (!stopping(r)) {
        if (r->kp == NULL && !producer_start(r)) {
            sleep_interruptible(r, backoff);
            backoff = backoff * 2 > (unsigned)conf->reconnect_max_ms
                          ? (unsigned)conf->reconnect_max_ms
                          : backoff * 2;
            continue;
        }
        struct gtid_pos actual;
        struct binlog *b =
            binlog_open(&conf->source, have_start ? &start : NULL, &actual, err, sizeof(err));
        if (b == NULL) {
            log_warn("binlog connect failed", "host=%s port=%u retry_ms=%u error=\"%s\"",
                     conf->source.db.host, conf->source.db.port, backoff, err);
            sleep_interruptible(r, backoff);
            backoff = backoff * 2 > (unsigned)conf->reconnect_max_ms
                          ? (unsigned)conf->reconnect_max_ms
                          : backoff * 2;
            continue;
        }
        r->names_fold_case = binlog_names_fold_case(b);
        if (!have_start) {
            /* The "from now" position must be durable before anything is
             * read, or a crash would restart "from now" again and skip. */
            if (persist_start(r, &actual) != CAL_OK) {
                binlog_close(b);
                sleep_interruptible(r, backoff);
                continue;
            }
            start = actual;
            have_start = true;
        }
        char text[GTID_POS_TEXT_MAX];
        gtid_pos_format(&start, text, sizeof(text));
        log_info("streaming", "db=%s source=%s:%u server_id=%u from_gtid=%s topic_prefix=%s",
                 conf->source.db.database, conf->source.db.host, conf->source.db.port,
                 conf->source.server_id, text[0] ? text : "-", conf->topic_prefix);
        uint64_t t0 = cal_mono_us();
        st = stream(r, b, err, sizeof(err));
        binlog_close(b);
        if (stopping(r))
            break;
        log_interruption(r, st, err, cal_mono_us() - t0, &backoff, &stuck_at, &stuck);

        /* Rewind to the acknowledged position: let what was sent finish,
         * then drop the rest (it is read again). */
        pthread_mutex_lock(&r->mu);
        bool failed = r->delivery_failed;
        pthread_mutex_unlock(&r->mu);
        if (!failed) {
            st = kproducer_flush_interruptible(
                r->kp, (unsigned)conf->kafka.message_timeout_ms + 1000, r->stop, err, sizeof(err));
            if (st == CAL_EAGAIN)
                break; /* stopping: the clean stop below flushes (bounded) */
            failed = st != CAL_OK;
        }
        char why[sizeof(r->fail_msg)];
        pthread_mutex_lock(&r->mu);
        failed = failed || r->delivery_failed;
        start = r->acked;
        cal_strlcpy(why, r->fail_msg[0] ? r->fail_msg : err, sizeof(why));
        pthread_mutex_unlock(&r->mu);
        if (failed) {
            log_warn("kafka delivery failed; recreating the producer", "error=\"%s\"", why);
            producer_stop(r);
        }
        drop_queue(r);
        r->ntopics = 0; /* partition counts are read again */
        write_checkpoint(r, true);
        sleep_interruptible(r, backoff);
        backoff = backoff * 2 > (unsigned)conf->reconnect_max_ms ? (unsigned)conf->reconnect_max_ms
                                                                 : backoff * 2;
    }

    /* Clean stop: deliver what was sent, then record how far it got. */
    if (r->kp != NULL) {
        if (kproducer_flush(r->kp, 10000, err, sizeof(err)) != CAL_OK)
            log_warn("flush at shutdown incomplete", "error=\"%s\"", err);
        producer_stop(r);
    }
    write_checkpoint(r, true);
    {
        char text[GTID_POS_TEXT_MAX];
        pthread_mutex_lock(&r->mu);
        gtid_pos_format(&r->acked, text, sizeof(text));
        pthread_mutex_unlock(&r->mu);
        log_info("stopped", "db=%s checkpoint_gtid=%s", conf->source.db.database,
                 text[0] ? text : "-");
    }
    drop_queue(r);
    rc = 0;
out:
    if (lock_fd >= 0)
        close(lock_fd);
    clear_maps(r);
    free(r->maps);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->cp_mu);
    free(r);
    return rc;
}
