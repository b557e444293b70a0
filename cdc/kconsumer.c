/* The Kafka consumer adapter on librdkafka (see kconsumer.h). */
#include "cdc/kconsumer.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

/* The messages of one partition that the caller could not act on yet, in
 * offset order; the partition is paused while any is held. Only the first is
 * handed out again (when due); the others wait behind it. */
struct held {
    rd_kafka_message_t **q;
    size_t n, cap;
    uint64_t due_ms;  /* when q[0] is handed out again; monotonic */
    bool redelivered; /* q[0] handed back to the caller, awaiting store or retry */
};

/* Where an assigned partition's next message should be: a message further
 * on means the broker no longer had the ones between (retention ran ahead
 * of us), and one further back that the log we read is gone (see
 * track_delivered); either way the caller must act as if anything had
 * changed. */
struct track {
    char topic[256];
    int32_t partition;
    int64_t next;     /* offset expected next: the committed one at assignment; -1 unknown */
    int64_t gap_at;   /* the first message after a gap, until it is stored; -1: none */
    int64_t gap_from; /* the first offset that never came; above gap_at: offsets went back */
};

struct kconsumer {
    rd_kafka_t *rk;
    struct track *tracks;
    size_t ntracks, captracks;
    struct held *held;
    size_t nheld, capheld;
    /* Redelivered held messages whose partition was revoked while the caller
     * still had them: freed when the caller stores, retries or releases. */
    rd_kafka_message_t **orphans;
    size_t norphans, caporphans;
    atomic_size_t assigned;
    atomic_bool joined;
    /* kconsumer_fail_lookups(): the next lookups' answers (polling thread). */
    rd_kafka_resp_err_t fail_lookups[KCONSUMER_FAIL_LOOKUPS_MAX];
    size_t nfail_lookups;
};

static struct track *
track_find(struct kconsumer *kc, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < kc->ntracks; i++)
        if (kc->tracks[i].partition == partition && strcmp(kc->tracks[i].topic, topic) == 0)
            return &kc->tracks[i];
    return NULL;
}

/* A committed-offset lookup is one round trip to the group coordinator,
 * made from the polling thread. */
#define COMMITTED_TIMEOUT_MS 10000

/* rd_kafka_committed() of list, or the next failure kconsumer_fail_lookups()
 * set. */
static rd_kafka_resp_err_t
lookup_committed(struct kconsumer *kc, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list)
{
    if (kc->nfail_lookups > 0) {
        rd_kafka_resp_err_t e = kc->fail_lookups[0];
        memmove(kc->fail_lookups, kc->fail_lookups + 1,
                --kc->nfail_lookups * sizeof(kc->fail_lookups[0]));
        return e;
    }
    return rd_kafka_committed(rk, list, COMMITTED_TIMEOUT_MS);
}

void
kconsumer_fail_lookups(struct kconsumer *kc, const int *errs, size_t n)
{
    kc->nfail_lookups = n < KCONSUMER_FAIL_LOOKUPS_MAX ? n : KCONSUMER_FAIL_LOOKUPS_MAX;
    for (size_t i = 0; i < kc->nfail_lookups; i++)
        kc->fail_lookups[i] = (rd_kafka_resp_err_t)errs[i];
}

/* The offset a partition's next message should have, from a lookup of its
 * committed offset (rerr: the lookup's own result): that offset, 0 when none
 * was ever committed (consumption starts at the beginning of the log), -1
 * when the lookup failed. */
static int64_t
committed_next(rd_kafka_resp_err_t rerr, const rd_kafka_topic_partition_t *p)
{
    if (rerr == RD_KAFKA_RESP_ERR_NO_ERROR)
        rerr = p->err;
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("committed offset unknown", "topic=%s partition=%d error=\"%s\"", p->topic,
                 (int)p->partition, rd_kafka_err2str(rerr));
        return -1;
    }
    return p->offset >= 0 ? p->offset : 0;
}

/* Tracks parts from their committed offsets. A partition whose lookup fails
 * is looked up again at its first message (track_delivered). */
static void
track_assigned(struct kconsumer *kc, rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t rerr = lookup_committed(kc, rk, committed);
    for (int i = 0; i < committed->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &committed->elems[i];
        struct track *t = track_find(kc, p->topic, p->partition);
        if (t == NULL) {
            if (kc->ntracks == kc->captracks) {
                kc->captracks = kc->captracks ? 2 * kc->captracks : 16;
                kc->tracks = cal_realloc(kc->tracks, kc->captracks * sizeof(*kc->tracks));
            }
            t = &kc->tracks[kc->ntracks++];
            cal_strlcpy(t->topic, p->topic, sizeof(t->topic));
            t->partition = p->partition;
        }
        t->next = committed_next(rerr, p);
        t->gap_at = -1;
        t->gap_from = -1;
    }
    rd_kafka_topic_partition_list_destroy(committed);
}

static void
track_revoked(struct kconsumer *kc, const rd_kafka_topic_partition_list_t *parts)
{
    for (int i = 0; i < parts->cnt; i++) {
        struct track *t = track_find(kc, parts->elems[i].topic, parts->elems[i].partition);
        if (t != NULL)
            *t = kc->tracks[--kc->ntracks];
    }
}

/* A message fresh from the broker: is it further on, or further back, than
 * expected? Returns its partition's track (NULL: not assigned). */
static struct track *
track_delivered(struct kconsumer *kc, const rd_kafka_message_t *rkm)
{
    struct track *t = track_find(kc, rd_kafka_topic_name(rkm->rkt), rkm->partition);
    if (t == NULL)
        return NULL;
    if (t->next < 0) {
        /* The lookup at assignment failed: once more. Nothing of this
         * partition was stored since, so the answer is still where we
         * started. */
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, t->topic, t->partition);
        rd_kafka_resp_err_t rerr = lookup_committed(kc, kc->rk, list);
        t->next = committed_next(rerr, &list->elems[0]);
        rd_kafka_topic_partition_list_destroy(list);
    }
    /* Still unknown: any message before this one may have been dropped
     * unread, so that counts as a gap from the start of the log (the caller
     * flushes; assuming none could keep stale entries forever). */
    int64_t expected = t->next >= 0 ? t->next : 0;
    if (rkm->offset > expected) {
        t->gap_at = rkm->offset;
        t->gap_from = expected;
        log_warn(t->next >= 0 ? "messages the broker no longer has"
                              : "messages before this one may be lost: committed offset unknown",
                 "topic=%s partition=%d offsets=%lld-%lld", t->topic, (int)t->partition,
                 (long long)expected, (long long)rkm->offset - 1);
    } else if (t->next >= 0 && rkm->offset < t->next) {
        /* Offsets went back (librdkafka found ours out of range and reset to
         * the earliest): the log we had read is gone, the topic recreated,
         * a broker back without its log or an unclean leader election that
         * truncated it, and with it events the relay had counted as
         * delivered. A gap, once: from here the new log is followed. */
        t->gap_at = rkm->offset;
        t->gap_from = t->next;
        log_warn("partition offsets went back: events may be lost",
                 "topic=%s partition=%d expected_offset=%lld offset=%lld", t->topic,
                 (int)t->partition, (long long)t->next, (long long)rkm->offset);
    }
    t->next = rkm->offset + 1;
    return t;
}

static uint64_t
mono_ms(void)
{
    return cal_mono_us() / 1000;
}

static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    enum log_level lvl = log_level_from_syslog(level);
    log_write(lvl, "kafka", "facility=%s detail=\"%s\"", fac, buf);
}

static void
on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    log_warn("kafka error", "code=%s detail=\"%s\"", rd_kafka_err2name((rd_kafka_resp_err_t)err),
             reason);
}

static bool
same_partition(const rd_kafka_message_t *rkm, const char *topic, int32_t partition)
{
    return rkm->partition == partition && strcmp(rd_kafka_topic_name(rkm->rkt), topic) == 0;
}

static struct held *
find_held(struct kconsumer *kc, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < kc->nheld; i++)
        if (same_partition(kc->held[i].q[0], topic, partition))
            return &kc->held[i];
    return NULL;
}

static void
set_partition_paused(struct kconsumer *kc, const char *topic, int32_t partition, bool pause)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition);
    rd_kafka_resp_err_t rerr =
        pause ? rd_kafka_pause_partitions(kc->rk, list) : rd_kafka_resume_partitions(kc->rk, list);
    if (rerr == RD_KAFKA_RESP_ERR_NO_ERROR)
        rerr = list->elems[0].err;
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_warn(pause ? "pause failed" : "resume failed", "topic=%s partition=%d error=\"%s\"",
                 topic, (int)partition, rd_kafka_err2str(rerr));
    rd_kafka_topic_partition_list_destroy(list);
}

/* Queues rkm behind the messages h holds (its partition's order). */
static void
held_push(struct held *h, rd_kafka_message_t *rkm)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 4;
        h->q = cal_realloc(h->q, h->cap * sizeof(*h->q));
    }
    h->q[h->n++] = rkm;
}

/* Starts holding rkm, the first held message of its partition: pauses it. */
static struct held *
held_new(struct kconsumer *kc, rd_kafka_message_t *rkm)
{
    if (kc->nheld == kc->capheld) {
        kc->capheld = kc->capheld ? 2 * kc->capheld : 8;
        kc->held = cal_realloc(kc->held, kc->capheld * sizeof(*kc->held));
    }
    struct held *h = &kc->held[kc->nheld++];
    *h = (struct held){0};
    held_push(h, rkm);
    set_partition_paused(kc, rd_kafka_topic_name(rkm->rkt), rkm->partition, true);
    return h;
}

/* If msg is an orphan: frees it, clears msg->handle and returns true. */
static bool
orphan_free(struct kconsumer *kc, struct kconsumer_msg *msg)
{
    for (size_t i = 0; msg->handle != NULL && i < kc->norphans; i++)
        if (kc->orphans[i] == msg->handle) {
            kc->orphans[i] = kc->orphans[--kc->norphans];
            rd_kafka_message_destroy(msg->handle);
            msg->handle = NULL;
            return true;
        }
    return false;
}

/* Drops every held message of h's partition, resuming it if asked. A
 * message handed back to the caller (redelivered) is the caller's to free
 * from now on: it becomes an orphan. */
static void
release_held(struct kconsumer *kc, struct held *h, bool resume)
{
    if (resume)
        set_partition_paused(kc, rd_kafka_topic_name(h->q[0]->rkt), h->q[0]->partition, false);
    size_t first = 0;
    if (h->redelivered) {
        if (kc->norphans == kc->caporphans) {
            kc->caporphans = kc->caporphans ? 2 * kc->caporphans : 4;
            kc->orphans = cal_realloc(kc->orphans, kc->caporphans * sizeof(*kc->orphans));
        }
        kc->orphans[kc->norphans++] = h->q[0];
        first = 1;
    }
    for (size_t i = first; i < h->n; i++)
        rd_kafka_message_destroy(h->q[i]);
    free(h->q);
    *h = kc->held[--kc->nheld];
}

static void
count_assignment(struct kconsumer *kc)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    size_t n = 0;
    if (rd_kafka_assignment(kc->rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts != NULL)
        n = (size_t)parts->cnt;
    if (parts != NULL)
        rd_kafka_topic_partition_list_destroy(parts);
    atomic_store(&kc->assigned, n);
}

/* Eager (assign/unassign everything) or cooperative (incremental) protocol,
 * whichever partition.assignment.strategy negotiated. When partitions go,
 * their stored offsets are committed (by librdkafka, at the unassign) so the
 * next owner starts after what we invalidated, and messages held for retry
 * are dropped unstored. */
static void
on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
             void *opaque)
{
    struct kconsumer *kc = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            rerr = rd_kafka_assign(rk, parts);
        if (error != NULL) {
            log_error("assign failed", "error=\"%s\"", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        } else if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            log_error("assign failed", "error=\"%s\"", rd_kafka_err2str(rerr));
        }
        /* A partition paused by an earlier owner-ship of ours starts fresh,
         * from its committed offset: a hold left from then goes. */
        for (int i = 0; i < parts->cnt; i++) {
            struct held *h = find_held(kc, parts->elems[i].topic, parts->elems[i].partition);
            if (h != NULL)
                release_held(kc, h, false);
        }
        rd_kafka_resume_partitions(rk, parts);
        if (!cooperative)
            kc->ntracks = 0;
        track_assigned(kc, rk, parts);
        atomic_store(&kc->joined, true);
        count_assignment(kc);
        log_info("partitions assigned", "count=%d protocol=%s total=%zu", parts->cnt,
                 cooperative ? "cooperative" : "eager", atomic_load(&kc->assigned));
        return;
    }
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        log_error("rebalance error", "error=\"%s\"", rd_kafka_err2str(err));
    bool lost = rd_kafka_assignment_lost(rk) != 0;
    for (int i = 0; i < parts->cnt; i++) {
        struct held *h = find_held(kc, parts->elems[i].topic, parts->elems[i].partition);
        if (h != NULL)
            release_held(kc, h, true);
    }
    if (cooperative)
        track_revoked(kc, parts);
    else
        kc->ntracks = 0;
    /* No commit here: with enable.auto.commit librdkafka commits the stored
     * offsets of the partitions being unassigned itself (unless they were
     * lost), and parts holds only invalid offsets in a revoke. */
    if (cooperative) {
        rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, parts);
        if (error != NULL) {
            log_error("unassign failed", "error=\"%s\"", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
    } else {
        rd_kafka_assign(rk, NULL);
    }
    count_assignment(kc);
    log_info("partitions revoked", "count=%d lost=%d total=%zu", parts->cnt, (int)lost,
             atomic_load(&kc->assigned));
}

static bool
set_conf(rd_kafka_conf_t *rconf, const char *name, const char *value, char *err, size_t errlen)
{
    char why[256];
    if (rd_kafka_conf_set(rconf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka %s=%s: %s", name, value, why);
        return false;
    }
    return true;
}

/* Splits the comma list into a subscription; empty entries are ignored. */
static rd_kafka_topic_partition_list_t *
parse_topics(const char *topics, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
    const char *p = topics;
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            char *name = cal_strndup(a, (size_t)(b - a));
            rd_kafka_topic_partition_list_add(list, name, RD_KAFKA_PARTITION_UA);
            free(name);
        }
        p = *end == ',' ? end + 1 : end;
    }
    if (list->cnt == 0) {
        snprintf(err, errlen, "no topics to subscribe to");
        rd_kafka_topic_partition_list_destroy(list);
        return NULL;
    }
    return list;
}

/* librdkafka refuses a session.timeout.ms above max.poll.interval.ms,
 * whose default this is. */
#define DEFAULT_MAX_POLL_INTERVAL_MS 300000u
/* librdkafka's default session.timeout.ms. */
#define DEFAULT_SESSION_MS 45000u
/* librdkafka's default heartbeat.interval.ms. */
#define DEFAULT_HEARTBEAT_MS 3000u

unsigned
kconsumer_heartbeat_ms(unsigned session_timeout_ms)
{
    if (session_timeout_ms == 0)
        return 0;
    return session_timeout_ms / 3 < DEFAULT_HEARTBEAT_MS ? session_timeout_ms / 3
                                                         : DEFAULT_HEARTBEAT_MS;
}

/* The librdkafka configuration of conf, every value checked; NULL and err
 * filled when one is refused. Caller destroys it or hands it to rd_kafka_new. */
static rd_kafka_conf_t *
build_conf(const struct kconsumer_conf *conf, char *err, size_t errlen)
{
    char num[32];
    if (conf->bootstrap_servers[0] == '\0') {
        snprintf(err, errlen, "kafka bootstrap_servers is empty");
        return NULL;
    }
    rd_kafka_conf_t *rconf = rd_kafka_conf_new();
    bool ok = set_conf(rconf, "bootstrap.servers", conf->bootstrap_servers, err, errlen) &&
              set_conf(rconf, "group.id", conf->group_id, err, errlen) &&
              set_conf(rconf, "client.id", "calendar-cdc-invalidator", err, errlen) &&
              /* Offsets are stored by the caller after memcached acted. */
              set_conf(rconf, "enable.auto.offset.store", "false", err, errlen) &&
              set_conf(rconf, "enable.auto.commit", "true", err, errlen) &&
              set_conf(rconf, "auto.commit.interval.ms", "1000", err, errlen) &&
              /* A new group or a lost offset replays from the start: extra
               * deletes are harmless. Messages the broker dropped before we
               * read them are told to the caller (gap_from), which flushes. */
              set_conf(rconf, "auto.offset.reset", "earliest", err, errlen) &&
              set_conf(rconf, "enable.partition.eof", "false", err, errlen) &&
              set_conf(rconf, "socket.nagle.disable", "true", err, errlen);
    snprintf(num, sizeof(num), "%u", conf->fetch_wait_max_ms);
    ok = ok && set_conf(rconf, "fetch.wait.max.ms", num, err, errlen);
    if (ok && conf->metadata_refresh_ms > 0) {
        snprintf(num, sizeof(num), "%u", conf->metadata_refresh_ms);
        ok = set_conf(rconf, "topic.metadata.refresh.interval.ms", num, err, errlen);
    }
    if (ok && conf->session_timeout_ms > 0) {
        snprintf(num, sizeof(num), "%u", conf->session_timeout_ms);
        ok = set_conf(rconf, "session.timeout.ms", num, err, errlen);
    }
    unsigned heartbeat = kconsumer_heartbeat_ms(conf->session_timeout_ms);
    if (ok && heartbeat > 0) {
        snprintf(num, sizeof(num), "%u", heartbeat);
        ok = set_conf(rconf, "heartbeat.interval.ms", num, err, errlen);
    }
    /* The consume loop polls at least every 100 ms, so the poll interval
     * limit itself hardly matters. It is also the rebalance timeout: how
     * long librdkafka waits for a JoinGroup answer (plus 3 s). librdkafka
     * wants it at least the session timeout; unset, it is raised to that. */
    unsigned max_poll = conf->max_poll_interval_ms;
    unsigned session = conf->session_timeout_ms ? conf->session_timeout_ms : DEFAULT_SESSION_MS;
    if (ok && max_poll > 0 && max_poll < session) {
        snprintf(err, errlen, "kafka max_poll_interval_ms=%u is below session_timeout_ms=%u%s",
                 max_poll, session, conf->session_timeout_ms ? "" : " (librdkafka's default)");
        ok = false;
    }
    if (max_poll == 0 && conf->session_timeout_ms > DEFAULT_MAX_POLL_INTERVAL_MS)
        max_poll = conf->session_timeout_ms;
    if (ok && max_poll > 0) {
        snprintf(num, sizeof(num), "%u", max_poll);
        ok = set_conf(rconf, "max.poll.interval.ms", num, err, errlen);
    }
    if (ok && conf->debug[0] != '\0')
        ok = set_conf(rconf, "debug", conf->debug, err, errlen);
    if (!ok) {
        rd_kafka_conf_destroy(rconf);
        return NULL;
    }
    return rconf;
}

cal_status
kconsumer_conf_check(const struct kconsumer_conf *conf, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *topics = parse_topics(conf->topics, err, errlen);
    if (topics == NULL)
        return CAL_EINVAL;
    rd_kafka_topic_partition_list_destroy(topics);
    rd_kafka_conf_t *rconf = build_conf(conf, err, errlen);
    if (rconf == NULL)
        return CAL_EINVAL;
    rd_kafka_conf_destroy(rconf);
    return CAL_OK;
}

struct kconsumer *
kconsumer_create(const struct kconsumer_conf *conf, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *topics = parse_topics(conf->topics, err, errlen);
    if (topics == NULL)
        return NULL;
    struct kconsumer *kc = cal_calloc(1, sizeof(*kc));
    rd_kafka_conf_t *rconf = build_conf(conf, err, errlen);
    if (rconf == NULL)
        goto fail;
    rd_kafka_conf_set_opaque(rconf, kc);
    rd_kafka_conf_set_log_cb(rconf, on_log);
    rd_kafka_conf_set_error_cb(rconf, on_error);
    rd_kafka_conf_set_rebalance_cb(rconf, on_rebalance);

    char why[512];
    kc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rconf, why, sizeof(why));
    if (kc->rk == NULL) {
        snprintf(err, errlen, "kafka consumer: %s", why);
        rd_kafka_conf_destroy(rconf);
        goto fail;
    }
    rd_kafka_poll_set_consumer(kc->rk); /* one queue: messages, rebalances, errors, logs */
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(kc->rk, topics);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "kafka subscribe to '%s': %s", conf->topics, rd_kafka_err2str(rerr));
        rd_kafka_destroy(kc->rk);
        kc->rk = NULL;
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(topics);
    return kc;
fail:
    rd_kafka_topic_partition_list_destroy(topics);
    free(kc);
    return NULL;
}

/* t: rkm's partition track, or NULL. */
static void
fill_msg(const struct track *t, struct kconsumer_msg *msg, rd_kafka_message_t *rkm)
{
    msg->gap_from = t != NULL && t->gap_at == rkm->offset ? t->gap_from : -1;
    msg->topic = rd_kafka_topic_name(rkm->rkt);
    msg->partition = rkm->partition;
    msg->offset = rkm->offset;
    msg->key = rkm->key;
    msg->keylen = rkm->key_len;
    msg->value = rkm->payload;
    msg->len = rkm->payload != NULL ? rkm->len : 0;
    rd_kafka_timestamp_type_t tstype;
    msg->timestamp_ms = rd_kafka_message_timestamp(rkm, &tstype);
    msg->handle = rkm;
}

cal_status
kconsumer_poll(struct kconsumer *kc, int timeout_ms, struct kconsumer_msg *msg, char *err,
               size_t errlen)
{
    uint64_t now = mono_ms();
    for (size_t i = 0; i < kc->nheld; i++) {
        struct held *h = &kc->held[i];
        if (!h->redelivered && h->due_ms <= now) {
            h->redelivered = true;
            fill_msg(track_find(kc, rd_kafka_topic_name(h->q[0]->rkt), h->q[0]->partition), msg,
                     h->q[0]);
            return CAL_OK;
        }
        if (!h->redelivered && h->due_ms - now < (uint64_t)timeout_ms)
            timeout_ms = (int)(h->due_ms - now);
    }
    /* Bounded: each pass either returns or drops one stray message. */
    for (int pass = 0; pass < 64; pass++) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(kc->rk, pass == 0 ? timeout_ms : 0);
        if (rkm == NULL)
            return CAL_EAGAIN;
        if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, errlen, "%s%s%s [%d]: %s", rd_kafka_err2name(rkm->err),
                     rkm->rkt != NULL ? " topic " : "",
                     rkm->rkt != NULL ? rd_kafka_topic_name(rkm->rkt) : "", (int)rkm->partition,
                     rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            return CAL_ERR;
        }
        struct held *h = find_held(kc, rd_kafka_topic_name(rkm->rkt), rkm->partition);
        if (h != NULL) {
            /* Pausing purges what was prefetched, so this should not happen;
             * if it does, the message waits behind the held ones, in order. */
            log_debug("message of a paused partition queued", "topic=%s partition=%d offset=%lld",
                      rd_kafka_topic_name(rkm->rkt), (int)rkm->partition, (long long)rkm->offset);
            held_push(h, rkm);
            continue;
        }
        fill_msg(track_delivered(kc, rkm), msg, rkm);
        return CAL_OK;
    }
    return CAL_EAGAIN;
}

bool
kconsumer_header(const struct kconsumer_msg *msg, const char *name, const void **value, size_t *len)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (msg->handle == NULL || rd_kafka_message_headers(msg->handle, &hdrs) != 0 || hdrs == NULL)
        return false;
    return rd_kafka_header_get_last(hdrs, name, value, len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           *value != NULL;
}

void
kconsumer_release(struct kconsumer *kc, struct kconsumer_msg *msg)
{
    if (msg->handle == NULL)
        return;
    if (orphan_free(kc, msg))
        return;
    rd_kafka_message_t *rkm = msg->handle;
    /* A redelivered held message stays owned by its hold until stored. */
    for (size_t i = 0; i < kc->nheld; i++)
        if (kc->held[i].q[0] == rkm) {
            msg->handle = NULL;
            return;
        }
    rd_kafka_message_destroy(rkm);
    msg->handle = NULL;
}

cal_status
kconsumer_store(struct kconsumer *kc, struct kconsumer_msg *msg, char *err, size_t errlen)
{
    cal_status st = CAL_OK;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, msg->topic, msg->partition)->offset = msg->offset + 1;
    rd_kafka_resp_err_t rerr = rd_kafka_offsets_store(kc->rk, list);
    if (rerr == RD_KAFKA_RESP_ERR_NO_ERROR)
        rerr = list->elems[0].err;
    rd_kafka_topic_partition_list_destroy(list);
    if (rerr == RD_KAFKA_RESP_ERR__STATE || rerr == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
        snprintf(err, errlen, "partition %s [%d] is no longer assigned", msg->topic,
                 (int)msg->partition);
        st = CAL_ENOTFOUND;
    } else if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "offset store %s [%d] %lld: %s", msg->topic, (int)msg->partition,
                 (long long)msg->offset, rd_kafka_err2str(rerr));
        st = CAL_ERR;
    }
    struct track *t = track_find(kc, msg->topic, msg->partition);
    if (st == CAL_OK && t != NULL && t->gap_at >= 0 && msg->offset >= t->gap_at)
        t->gap_at = -1; /* acted on */
    if (orphan_free(kc, msg))
        return st;
    struct held *h = find_held(kc, msg->topic, msg->partition);
    if (h != NULL && h->q[0] == msg->handle) {
        msg->handle = NULL;
        if (h->n == 1) {
            /* Stored, so no longer the caller's: freed here, not an orphan. */
            h->redelivered = false;
            release_held(kc, h, true); /* acted on: the partition goes on */
        } else {
            rd_kafka_message_destroy(h->q[0]); /* the next held one is due now */
            memmove(h->q, h->q + 1, (h->n - 1) * sizeof(*h->q));
            h->n--;
            h->due_ms = 0;
            h->redelivered = false;
        }
    }
    return st;
}

cal_status
kconsumer_retry(struct kconsumer *kc, struct kconsumer_msg *msg, unsigned delay_ms, char *err,
                size_t errlen)
{
    (void)err;
    (void)errlen;
    if (orphan_free(kc, msg))
        return CAL_OK; /* its partition was revoked: the next owner delivers it again */
    rd_kafka_message_t *rkm = msg->handle;
    msg->handle = NULL; /* owned by the hold now */
    if (track_find(kc, msg->topic, msg->partition) == NULL) {
        /* Revoked while the caller had it (a rebalance inside a batch's
         * polls): no hold on a partition that is not ours; the next owner
         * reads it again from the committed offset. */
        rd_kafka_message_destroy(rkm);
        return CAL_OK;
    }
    struct held *h = find_held(kc, msg->topic, msg->partition);
    if (h == NULL) {
        h = held_new(kc, rkm);
    } else if (h->q[0] != rkm) {
        held_push(h, rkm); /* behind the held ones; their retry timing stands */
        return CAL_OK;
    }
    h->due_ms = mono_ms() + delay_ms;
    h->redelivered = false;
    return CAL_OK;
}

bool
kconsumer_behind_held(struct kconsumer *kc, const struct kconsumer_msg *msg)
{
    const struct held *h = find_held(kc, msg->topic, msg->partition);
    return h != NULL && h->q[0] != msg->handle;
}

size_t
kconsumer_lag(struct kconsumer *kc, struct kconsumer_lag *lags, size_t max)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(kc->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || parts == NULL)
        return 0;
    rd_kafka_position(kc->rk, parts);
    /* Nothing consumed since the assignment: the committed offset is where
     * we stand (one bounded round trip, only for those partitions). */
    rd_kafka_topic_partition_list_t *unknown = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].offset < 0)
            rd_kafka_topic_partition_list_add(unknown, parts->elems[i].topic,
                                              parts->elems[i].partition);
    if (unknown->cnt > 0)
        rd_kafka_committed(kc->rk, unknown, 500);
    size_t n = 0;
    for (int i = 0; i < parts->cnt && n < max; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        struct kconsumer_lag *l = &lags[n++];
        cal_strlcpy(l->topic, tp->topic, sizeof(l->topic));
        l->partition = tp->partition;
        l->position = tp->offset >= 0 ? tp->offset : -1;
        if (l->position < 0) {
            rd_kafka_topic_partition_t *c =
                rd_kafka_topic_partition_list_find(unknown, tp->topic, tp->partition);
            if (c != NULL && c->err == RD_KAFKA_RESP_ERR_NO_ERROR && c->offset >= 0)
                l->position = c->offset;
        }
        /* Messages held for a retry (memcached failing) were polled but not
         * acted on: they count in the lag, from the first of them. */
        const struct held *h = find_held(kc, tp->topic, tp->partition);
        if (h != NULL && h->n > 0 && (l->position < 0 || h->q[0]->offset < l->position))
            l->position = h->q[0]->offset;
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(kc->rk, tp->topic, tp->partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            hi = -1;
        l->high_watermark = hi >= 0 ? hi : -1;
        if (l->high_watermark >= 0 && l->position < 0 && lo >= 0 && lo == hi)
            l->position = hi; /* empty partition */
        l->lag = l->high_watermark >= 0 && l->position >= 0
                     ? (l->high_watermark > l->position ? l->high_watermark - l->position : 0)
                     : -1;
    }
    rd_kafka_topic_partition_list_destroy(unknown);
    rd_kafka_topic_partition_list_destroy(parts);
    return n;
}

size_t
kconsumer_assigned(const struct kconsumer *kc)
{
    return atomic_load(&((struct kconsumer *)kc)->assigned);
}

bool
kconsumer_joined(const struct kconsumer *kc)
{
    return atomic_load(&((struct kconsumer *)kc)->joined);
}

cal_status
kconsumer_close(struct kconsumer *kc, char *err, size_t errlen)
{
    cal_status st = CAL_OK;
    while (kc->nheld > 0)
        release_held(kc, &kc->held[0], false);
    rd_kafka_resp_err_t rerr = rd_kafka_commit(kc->rk, NULL, 0);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR && rerr != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        snprintf(err, errlen, "final commit: %s", rd_kafka_err2str(rerr));
        st = CAL_ERR;
    }
    rerr = rd_kafka_consumer_close(kc->rk);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR && st == CAL_OK) {
        snprintf(err, errlen, "close: %s", rd_kafka_err2str(rerr));
        st = CAL_ERR;
    }
    return st;
}

size_t
kconsumer_orphans(const struct kconsumer *kc)
{
    return kc->norphans;
}

void
kconsumer_destroy(struct kconsumer *kc)
{
    if (kc == NULL)
        return;
    while (kc->nheld > 0)
        release_held(kc, &kc->held[0], false);
    for (size_t i = 0; i < kc->norphans; i++)
        rd_kafka_message_destroy(kc->orphans[i]);
    free(kc->orphans);
    free(kc->held);
    free(kc->tracks);
    if (kc->rk != NULL)
        rd_kafka_destroy(kc->rk);
    free(kc);
}
