/* librdkafka producer behind the project's status values. */
#include "cdc/kproducer.h"

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

struct kproducer {
    rd_kafka_t *rk;
    kproducer_delivery_fn fn;
    void *arg;
};

static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    struct kproducer *kp = opaque;
    if (kp->fn == NULL)
        return; /* being destroyed */
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        kp->fn(msg->_private, CAL_OK, NULL, kp->arg);
    else
        kp->fn(msg->_private, CAL_ERR, rd_kafka_err2str(msg->err), kp->arg);
}

static void
on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    enum log_level lv = log_level_from_syslog(level);
    log_write(lv, "kafka client", "facility=%s detail=\"%s\"", fac, buf);
}

static void
on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)opaque;
    /* Transport errors are retried by librdkafka; they are worth a line. */
    log_warn("kafka error", "code=%s detail=\"%s\"", rd_kafka_err2name((rd_kafka_resp_err_t)err),
             reason);
}

static bool
set(rd_kafka_conf_t *conf, const char *key, const char *val, char *err, size_t errlen)
{
    char kerr[256];
    if (rd_kafka_conf_set(conf, key, val, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka config %s=%s: %s", key, val, kerr);
        return false;
    }
    return true;
}

/* The codecs compression.codec takes (librdkafka may lack some: it says so
 * when the configuration is built). */
static const char *const codecs[] = {"none", "gzip", "snappy", "lz4", "zstd", NULL};

/* The librdkafka configuration of c, every value checked; NULL and err
 * filled when one is refused. Caller destroys it or hands it to rd_kafka_new. */
static rd_kafka_conf_t *
build_conf(const struct kproducer_conf *c, char *err, size_t errlen)
{
    bool known = false;
    for (size_t i = 0; codecs[i] != NULL; i++)
        known = known || strcmp(c->compression, codecs[i]) == 0;
    if (!known) {
        snprintf(err, errlen, "compression '%s' is not one of none, gzip, snappy, lz4, zstd",
                 c->compression);
        return NULL;
    }
    /* librdkafka refuses it only when the producer is created. */
    if (c->linger_ms >= c->message_timeout_ms) {
        snprintf(err, errlen, "linger_ms (%d) must be below message_timeout_ms (%d)", c->linger_ms,
                 c->message_timeout_ms);
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char num[32];
    bool ok = set(conf, "bootstrap.servers", c->bootstrap_servers, err, errlen) &&
              set(conf, "client.id", c->client_id, err, errlen) &&
              set(conf, "enable.idempotence", "true", err, errlen) &&
              set(conf, "acks", "all", err, errlen) &&
              /* Small latency-bound batches: Nagle plus delayed ACKs would
               * add tens of milliseconds to every one. */
              set(conf, "socket.nagle.disable", "true", err, errlen) &&
              set(conf, "compression.codec", c->compression, err, errlen);
    snprintf(num, sizeof(num), "%d", c->linger_ms);
    ok = ok && set(conf, "linger.ms", num, err, errlen);
    snprintf(num, sizeof(num), "%d", c->message_timeout_ms);
    ok = ok && set(conf, "message.timeout.ms", num, err, errlen);
    snprintf(num, sizeof(num), "%d", c->queue_max_messages);
    ok = ok && set(conf, "queue.buffering.max.messages", num, err, errlen);
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

cal_status
kproducer_conf_check(const struct kproducer_conf *c, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = build_conf(c, err, errlen);
    if (conf == NULL)
        return CAL_EINVAL;
    rd_kafka_conf_destroy(conf);
    return CAL_OK;
}

struct kproducer *
kproducer_create(const struct kproducer_conf *c, kproducer_delivery_fn fn, void *arg, char *err,
                 size_t errlen)
{
    rd_kafka_conf_t *conf = build_conf(c, err, errlen);
    if (conf == NULL)
        return NULL;
    struct kproducer *kp = cal_calloc(1, sizeof(*kp));
    kp->fn = fn;
    kp->arg = arg;
    rd_kafka_conf_set_opaque(conf, kp);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    char kerr[512];
    kp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (kp->rk == NULL) {
        snprintf(err, errlen, "kafka producer: %s", kerr);
        rd_kafka_conf_destroy(conf);
        free(kp);
        return NULL;
    }
    return kp;
}

void
kproducer_destroy(struct kproducer *kp)
{
    if (kp == NULL)
        return;
    /* Undelivered messages are dropped on purpose: the caller rewinds to its
     * checkpoint and sends them again. Purged messages still get delivery
     * reports; they are discarded by not polling again. */
    rd_kafka_purge(kp->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    kp->fn = NULL;
    rd_kafka_destroy(kp->rk);
    free(kp);
}

cal_status
kproducer_partition_count(struct kproducer *kp, const char *topic, int timeout_ms, int32_t *count,
                          char *err, size_t errlen)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(kp->rk, topic, NULL);
    if (rkt == NULL) {
        snprintf(err, errlen, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return CAL_EINVAL;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(kp->rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "metadata of topic %s: %s", topic, rd_kafka_err2str(e));
        return CAL_EUNAVAIL;
    }
    cal_status rc = CAL_EAGAIN;
    snprintf(err, errlen, "topic %s not in metadata", topic);
    for (int i = 0; i < md->topic_cnt; i++) {
        const rd_kafka_metadata_topic_t *t = &md->topics[i];
        if (strcmp(t->topic, topic) != 0)
            continue;
        if (t->err != RD_KAFKA_RESP_ERR_NO_ERROR || t->partition_cnt <= 0) {
            snprintf(err, errlen, "topic %s: %s (%d partitions)", topic, rd_kafka_err2str(t->err),
                     t->partition_cnt);
            break;
        }
        *count = t->partition_cnt;
        rc = CAL_OK;
        break;
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

cal_status
kproducer_send(struct kproducer *kp, const char *topic, int32_t partition, const void *key,
               size_t keylen, const void *value, size_t valuelen,
               const struct kproducer_header *hdr, void *msg_opaque, char *err, size_t errlen)
{
    rd_kafka_resp_err_t e;
    if (hdr != NULL)
        e = rd_kafka_producev(kp->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_KEY((void *)key, keylen),
                              RD_KAFKA_V_VALUE((void *)value, valuelen),
                              RD_KAFKA_V_HEADER(hdr->name, hdr->value, (ssize_t)hdr->len),
                              RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    else
        e = rd_kafka_producev(kp->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_KEY((void *)key, keylen),
                              RD_KAFKA_V_VALUE((void *)value, valuelen),
                              RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return CAL_OK;
    snprintf(err, errlen, "produce to %s [%d]: %s", topic, (int)partition, rd_kafka_err2str(e));
    return e == RD_KAFKA_RESP_ERR__QUEUE_FULL ? CAL_EAGAIN : CAL_ERR;
}

int
kproducer_poll(struct kproducer *kp, int timeout_ms)
{
    return rd_kafka_poll(kp->rk, timeout_ms);
}

cal_status
kproducer_flush(struct kproducer *kp, int timeout_ms, char *err, size_t errlen)
{
    rd_kafka_resp_err_t e = rd_kafka_flush(kp->rk, timeout_ms);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return CAL_OK;
    snprintf(err, errlen, "flush: %s (%d messages left)", rd_kafka_err2str(e),
             rd_kafka_outq_len(kp->rk));
    return CAL_ETIMEDOUT;
}

cal_status
kproducer_flush_interruptible(struct kproducer *kp, unsigned timeout_ms,
                              const volatile sig_atomic_t *stop, char *err, size_t errlen)
{
    uint64_t deadline = cal_mono_us() + (uint64_t)timeout_ms * 1000;
    for (;;) {
        uint64_t now = cal_mono_us();
        unsigned left = now >= deadline ? 0 : (unsigned)((deadline - now + 999) / 1000);
        cal_status st = kproducer_flush(kp, left < 100 ? (int)left : 100, err, errlen);
        if (st == CAL_OK || left <= 100)
            return st;
        if (*stop != 0) {
            snprintf(err, errlen, "flush interrupted by stop (%d messages left)",
                     kproducer_outq_len(kp));
            return CAL_EAGAIN;
        }
    }
}

int
kproducer_outq_len(struct kproducer *kp)
{
    return rd_kafka_outq_len(kp->rk);
}

cal_status
kproducer_fatal(struct kproducer *kp, char *err, size_t errlen)
{
    char buf[256];
    rd_kafka_resp_err_t e = rd_kafka_fatal_error(kp->rk, buf, sizeof(buf));
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return CAL_OK;
    snprintf(err, errlen, "fatal producer error %s: %s", rd_kafka_err2name(e), buf);
    return CAL_ERR;
}
