/* librdkafka consumer for the integration tests. */
#include "tests/lib/kafka_test.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct kafka_test_consumer {
    rd_kafka_t *rk;
};

cal_status
kafka_test_env_get(const char *path, const char *key, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return CAL_ERR;
    char line[4096];
    size_t klen = strlen(key);
    cal_status rc = CAL_ENOTFOUND;
    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = line;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        if (strncmp(p, key, klen) != 0 || p[klen] != '=')
            continue;
        p += klen + 1;
        size_t n = strcspn(p, "\r\n");
        p[n] = '\0';
        if (n >= 2 && (p[0] == '"' || p[0] == '\'') && p[n - 1] == p[0]) {
            p[n - 1] = '\0';
            p++;
        }
        cal_strlcpy(buf, p, size);
        rc = CAL_OK;
    }
    fclose(f);
    return rc;
}

struct kafka_test_consumer *
kafka_test_consumer_create(const char *bootstrap, const char *const *topics, char *err,
                           size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char kerr[512];
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, kerr, sizeof(kerr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", "calendar-tests", kerr, sizeof(kerr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", kerr, sizeof(kerr)) !=
            RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "consumer config: %s", kerr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (rk == NULL) {
        snprintf(err, errlen, "consumer: %s", kerr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(64);
    for (size_t i = 0; topics[i] != NULL; i++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[i], NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
        rd_kafka_topic_destroy(rkt);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 ||
            md->topics[0].partition_cnt <= 0) {
            snprintf(err, errlen, "metadata of %s: %s", topics[i],
                     e ? rd_kafka_err2str(e) : "no partitions");
            if (md != NULL)
                rd_kafka_metadata_destroy(md);
            rd_kafka_topic_partition_list_destroy(parts);
            rd_kafka_destroy(rk);
            return NULL;
        }
        for (int p = 0; p < md->topics[0].partition_cnt; p++)
            rd_kafka_topic_partition_list_add(parts, topics[i], p)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "assign: %s", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    struct kafka_test_consumer *c = cal_calloc(1, sizeof(*c));
    c->rk = rk;
    return c;
}

int
kafka_test_consume(struct kafka_test_consumer *c, int timeout_ms, struct kafka_test_msg *msg,
                   char *err, size_t errlen)
{
    memset(msg, 0, sizeof(*msg));
    uint64_t deadline = cal_mono_us() + (uint64_t)timeout_ms * 1000;
    for (;;) {
        uint64_t now = cal_mono_us();
        if (now >= deadline)
            return 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, (int)((deadline - now) / 1000) + 1);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, errlen, "consume: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            return -1;
        }
        cal_strlcpy(msg->topic, rd_kafka_topic_name(m->rkt), sizeof(msg->topic));
        msg->partition = m->partition;
        msg->offset = m->offset;
        if (m->key != NULL) {
            msg->key = cal_strndup(m->key, m->key_len);
            msg->keylen = m->key_len;
        }
        if (m->payload != NULL) {
            msg->value = cal_strndup(m->payload, m->len);
            msg->valuelen = m->len;
        }
        rd_kafka_headers_t *hdrs = NULL;
        const void *hint;
        size_t hintlen;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL &&
            rd_kafka_header_get_last(hdrs, "calendar-invalidate", &hint, &hintlen) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            hint != NULL)
            msg->hint = cal_strndup(hint, hintlen);
        rd_kafka_message_destroy(m);
        return 1;
    }
}

void
kafka_test_msg_free(struct kafka_test_msg *msg)
{
    free(msg->key);
    free(msg->value);
    free(msg->hint);
    msg->key = msg->value = msg->hint = NULL;
}

void
kafka_test_consumer_destroy(struct kafka_test_consumer *c)
{
    if (c == NULL)
        return;
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    free(c);
}
