/* The Kafka producer adapter: the only module of the relay that includes
 * librdkafka. Idempotent (enable.idempotence=true, acks=all), explicit
 * partitions, delivery reports through a callback served by
 * kproducer_poll(). librdkafka error codes do not leave this module. */
#ifndef CAL_KPRODUCER_H
#define CAL_KPRODUCER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct kproducer_conf {
    char bootstrap_servers[512];
    char client_id[128];
    int linger_ms;
    int message_timeout_ms; /* delivery gives up after this long: the relay then rewinds */
    int queue_max_messages;
    char compression[16]; /* none|gzip|snappy|lz4|zstd */
};

struct kproducer;

/* Called from kproducer_poll()/kproducer_flush() once per message with the
 * msg_opaque given to kproducer_send(); st is CAL_OK when Kafka acknowledged
 * it, else errstr says why. */
typedef void (*kproducer_delivery_fn)(void *msg_opaque, cal_status st, const char *errstr,
                                      void *arg);

/* CAL_EINVAL and err filled when conf would be refused: a compression
 * codec other than none|gzip|snappy|lz4|zstd (or one librdkafka was built
 * without), linger_ms not below message_timeout_ms, a value librdkafka does
 * not take. Pure: no thread, no connection. */
cal_status kproducer_conf_check(const struct kproducer_conf *conf, char *err, size_t errlen);

/* Returns NULL and fills err on a bad configuration (kproducer_conf_check)
 * or when librdkafka cannot start a client. Caller frees with
 * kproducer_destroy(). */
struct kproducer *kproducer_create(const struct kproducer_conf *conf, kproducer_delivery_fn fn,
                                   void *arg, char *err, size_t errlen);

/* Purges anything not yet delivered (no delivery callbacks) and frees.
 * kproducer_destroy(NULL) is a no-op. */
void kproducer_destroy(struct kproducer *kp);

/* Number of partitions of topic from cluster metadata (the request lets the
 * cluster auto-create the topic). CAL_EAGAIN when the topic is unknown or has
 * no partitions yet, CAL_EUNAVAIL when the cluster did not answer in time. */
cal_status kproducer_partition_count(struct kproducer *kp, const char *topic, int timeout_ms,
                                     int32_t *count, char *err, size_t errlen);

/* One Kafka header of a message. */
struct kproducer_header {
    const char *name;
    const void *value;
    size_t len;
};

/* Queues one message (key, value and the header, if hdr is not NULL, are
 * copied). CAL_EAGAIN when the local queue is full: serve delivery reports
 * and retry. */
cal_status kproducer_send(struct kproducer *kp, const char *topic, int32_t partition,
                          const void *key, size_t keylen, const void *value, size_t valuelen,
                          const struct kproducer_header *hdr, void *msg_opaque, char *err,
                          size_t errlen);

/* Serves delivery reports for up to timeout_ms; returns how many were served. */
int kproducer_poll(struct kproducer *kp, int timeout_ms);

/* Waits up to timeout_ms for every queued message to be delivered or to fail. */
cal_status kproducer_flush(struct kproducer *kp, int timeout_ms, char *err, size_t errlen);

/* kproducer_flush for up to timeout_ms, in 100 ms slices so that a stop
 * request (*stop nonzero, e.g. set by a signal handler) is seen at once:
 * CAL_EAGAIN when it came first, err filled. */
cal_status kproducer_flush_interruptible(struct kproducer *kp, unsigned timeout_ms,
                                         const volatile sig_atomic_t *stop, char *err,
                                         size_t errlen);

/* Messages queued or in flight. */
int kproducer_outq_len(struct kproducer *kp);

/* CAL_OK, or CAL_ERR with the text of a fatal producer error (idempotence
 * broken): the producer must be recreated. */
cal_status kproducer_fatal(struct kproducer *kp, char *err, size_t errlen);

#endif
