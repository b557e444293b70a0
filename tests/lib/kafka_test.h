/* Kafka helpers of the integration tests: a plain consumer (manual
 * assignment of every partition from the beginning, no group) and lookups of
 * extra KEY=VALUE entries of the stack.env file. */
#ifndef CAL_KAFKA_TEST_H
#define CAL_KAFKA_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct kafka_test_msg {
    char topic[256];
    int32_t partition;
    int64_t offset;
    char *key; /* NUL-terminated copies; NULL when absent */
    size_t keylen;
    char *value;
    size_t valuelen;
    char *hint; /* the relay's calendar-invalidate header, NUL-terminated; NULL when absent */
};

struct kafka_test_consumer;

/* Reads KEY's value from the sourceable env file at path (quotes stripped).
 * CAL_ENOTFOUND when the key is missing. */
cal_status kafka_test_env_get(const char *path, const char *key, char *buf, size_t size);

/* Assigns every partition of each topic (NULL-terminated list) from the
 * first offset. Caller frees with kafka_test_consumer_destroy(). */
struct kafka_test_consumer *kafka_test_consumer_create(const char *bootstrap,
                                                       const char *const *topics, char *err,
                                                       size_t errlen);

/* 1 and *msg filled (free with kafka_test_msg_free), 0 when nothing came
 * within timeout_ms, -1 on a consumer error (err filled). */
int kafka_test_consume(struct kafka_test_consumer *c, int timeout_ms, struct kafka_test_msg *msg,
                       char *err, size_t errlen);

void kafka_test_msg_free(struct kafka_test_msg *msg);
void kafka_test_consumer_destroy(struct kafka_test_consumer *c);

#endif
