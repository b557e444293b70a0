/* Synchronous test producer on librdkafka (see kafka_produce.h). */
#include "tests/lib/kafka_produce.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct kafka_produce {
    rd_kafka_t *rk;
};

/* The delivery report writes the outcome into the int the message carries. */
static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    (void)rk;
    (void)opaque;
    int *result = rkm->_private;
    if (result != NULL)
        *result = (int)rkm->err;
}

struct kafka_produce *
kafka_produce_create(const char *bootstrap, char *err, size_t errlen)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, why, sizeof(why)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "acks", "all", why, sizeof(why)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "linger.ms", "0", why, sizeof(why)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "message.timeout.ms", "30000", why, sizeof(why)) !=
            RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "kafka producer config: %s", why);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (rk == NULL) {
        snprintf(err, errlen, "kafka producer: %s", why);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    struct kafka_produce *kp = cal_calloc(1, sizeof(*kp));
    kp->rk = rk;
    return kp;
}

void
kafka_produce_destroy(struct kafka_produce *kp)
{
    if (kp == NULL)
        return;
    rd_kafka_flush(kp->rk, 5000);
    rd_kafka_destroy(kp->rk);
    free(kp);
}

cal_status
kafka_produce_send(struct kafka_produce *kp, const char *topic, const char *key, const char *value,
                   size_t len, int timeout_ms, char *err, size_t errlen)
{
    /* On the heap: after a timeout the report may still come, so the int is
     * then left to it (a few bytes in a test process). */
    int *result = cal_malloc(sizeof(*result));
    *result = -1; /* still in flight */
    size_t keylen = key != NULL ? strlen(key) : 0;
    size_t vlen = value != NULL ? len : 0;
    rd_kafka_resp_err_t rerr = rd_kafka_producev(
        kp->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
        RD_KAFKA_V_VALUE((void *)value, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(result), RD_KAFKA_V_END);
    if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "produce to %s: %s", topic, rd_kafka_err2str(rerr));
        free(result);
        return CAL_ERR;
    }
    uint64_t deadline = cal_mono_us() + (uint64_t)timeout_ms * 1000;
    while (*result == -1 && cal_mono_us() < deadline)
        rd_kafka_poll(kp->rk, 50);
    int outcome = *result;
    if (outcome == -1) {
        snprintf(err, errlen, "produce to %s: no acknowledgement within %d ms", topic, timeout_ms);
        return CAL_ETIMEDOUT;
    }
    free(result);
    if (outcome != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "produce to %s: %s", topic,
                 rd_kafka_err2str((rd_kafka_resp_err_t)outcome));
        return CAL_ERR;
    }
    return CAL_OK;
}
