/* The Kafka consumer adapter (librdkafka): the only module of the invalidator
 * that includes librdkafka. A consumer group member that never stores an
 * offset on its own: the caller stores one after it acted on the message, or
 * asks for the message again later (kconsumer_retry), so nothing is skipped.
 * Single-threaded: every call from the thread that polls. */
#ifndef CAL_KCONSUMER_H
#define CAL_KCONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct kconsumer_conf {
    char bootstrap_servers[512];
    char group_id[128];
    char topics[1024];            /* comma list; an entry starting with '^' is a regex */
    unsigned fetch_wait_max_ms;   /* broker waits this long for data to fill a fetch */
    unsigned metadata_refresh_ms; /* how soon a new topic matching a regex is found */
    unsigned session_timeout_ms;  /* 0: librdkafka's default */
    /* Also the rebalance timeout, and how long a JoinGroup may go unanswered
     * (plus 3 s) before librdkafka asks again. 0: librdkafka's 5 min, or the
     * session timeout if longer. Not below the session timeout. */
    unsigned max_poll_interval_ms;
    char debug[128]; /* librdkafka debug contexts ("cgrp,fetch"); empty: none */
};

/* One message; valid until kconsumer_release(), kconsumer_store() or
 * kconsumer_retry(). kconsumer_release() is always safe to call afterwards
 * (those calls clear handle). value NULL for a tombstone. */
struct kconsumer_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const char *key;
    size_t keylen;
    const char *value;
    size_t len;
    int64_t timestamp_ms; /* the message's timestamp, -1 if none */
    /* >= 0: the partition's offsets [gap_from, offset) never came (the broker
     * dropped them before this consumer read them: retention); set on every
     * delivery of this message until it is stored. -1: none. Also set, to 0,
     * on the first message (if not offset 0) of a partition whose committed
     * offset could not be looked up, neither at assignment nor at that message:
     * a gap cannot be ruled out then. Above offset: the partition's offsets
     * went back, gap_from was the one expected (committed, or after the last
     * message read): the log read so far is gone (topic recreated, broker
     * back without its log, unclean leader election), and whatever it held
     * after what this consumer read is lost. */
    int64_t gap_from;
    void *handle; /* private */
};

/* Consumer lag of one assigned partition. lag -1: not known yet. */
struct kconsumer_lag {
    char topic[256];
    int32_t partition;
    int64_t position;       /* first offset not acted on (held for a retry, or the next
                             * the application gets), -1 if none yet */
    int64_t high_watermark; /* -1 if not fetched yet */
    int64_t lag;
};

struct kconsumer;

/* CAL_EINVAL and err filled when conf would be refused (no topic, a value
 * librdkafka does not take, e.g. an unknown debug context). Pure: no
 * thread, no connection. */
cal_status kconsumer_conf_check(const struct kconsumer_conf *conf, char *err, size_t errlen);

/* The heartbeat interval for a session timeout (0: librdkafka's defaults).
 * The coordinator expels a member it has not heard from for a session
 * timeout, and librdkafka heartbeats every 3 s whatever that is: a third of
 * it at most, as Kafka advises, so that two late heartbeats cost nothing. */
unsigned kconsumer_heartbeat_ms(unsigned session_timeout_ms);

/* Creates the consumer and subscribes. NULL and err filled on a bad config. */
struct kconsumer *kconsumer_create(const struct kconsumer_conf *conf, char *err, size_t errlen);

/* Waits up to timeout_ms for a message. CAL_OK: msg filled, release it with
 * kconsumer_release(). CAL_EAGAIN: nothing this time. CAL_ERR: a consumer
 * error to log (err filled; the consumer keeps trying on its own). Resumes
 * partitions whose retry delay has passed. */
cal_status kconsumer_poll(struct kconsumer *kc, int timeout_ms, struct kconsumer_msg *msg,
                          char *err, size_t errlen);
void kconsumer_release(struct kconsumer *kc, struct kconsumer_msg *msg);

/* The last header called name of msg: true and *value, *len (not
 * NUL-terminated, valid as long as msg) when it has one. */
bool kconsumer_header(const struct kconsumer_msg *msg, const char *name, const void **value,
                      size_t *len);

/* The caller acted on msg: stores offset+1 (committed in the background and
 * on close). CAL_ENOTFOUND when the partition was revoked meanwhile (its new
 * owner will see the message again). */
cal_status kconsumer_store(struct kconsumer *kc, struct kconsumer_msg *msg, char *err,
                           size_t errlen);

/* The caller could not act on msg: takes ownership of msg (do not release it),
 * pauses its partition and delivers the same msg again from kconsumer_poll
 * after delay_ms. Later messages of the partition wait behind it (the
 * partition resumes when the last held message is stored); other partitions
 * go on. A msg behind an already held one (kconsumer_behind_held) joins the
 * queue instead, in order, and comes right after the ones before it are
 * stored. If the partition is revoked meanwhile, its held messages are dropped
 * unstored: its new owner reads them from the committed offset. Never fails
 * today; CAL_OK. */
cal_status kconsumer_retry(struct kconsumer *kc, struct kconsumer_msg *msg, unsigned delay_ms,
                           char *err, size_t errlen);

/* True when an earlier message of msg's partition is held for retry: msg must
 * not be acted on (or stored) before it, so hand it to kconsumer_retry. */
bool kconsumer_behind_held(struct kconsumer *kc, const struct kconsumer_msg *msg);

/* Fills up to max entries, one per assigned partition; returns how many.
 * Messages held for a retry count in the lag: a partition whose deletes
 * fail (memcached down) shows them as not consumed. */
size_t kconsumer_lag(struct kconsumer *kc, struct kconsumer_lag *lags, size_t max);

/* Partitions assigned now, and whether the group assigned us anything yet
 * (an empty assignment counts). */
size_t kconsumer_assigned(const struct kconsumer *kc);
bool kconsumer_joined(const struct kconsumer *kc);

/* Commits the stored offsets and leaves the group (revoking our partitions).
 * Then destroy. */
cal_status kconsumer_close(struct kconsumer *kc, char *err, size_t errlen);
void kconsumer_destroy(struct kconsumer *kc); /* kconsumer_destroy(NULL) is a no-op */

/* For tests: the next n committed-offset lookups of kc (at an assignment,
 * and again at a partition's first message when that one failed) answer
 * errs[0], errs[1], ... (librdkafka error codes) without asking the
 * coordinator. librdkafka's own lookups, where to start fetching, are not
 * affected. */
#define KCONSUMER_FAIL_LOOKUPS_MAX 4
void kconsumer_fail_lookups(struct kconsumer *kc, const int *errs, size_t n);

/* Messages still out with the caller after a revoke took their hold; each
 * is freed by the caller's kconsumer_store, kconsumer_retry or
 * kconsumer_release (tests: a stored message must not stay counted). */
size_t kconsumer_orphans(const struct kconsumer *kc);

#endif
