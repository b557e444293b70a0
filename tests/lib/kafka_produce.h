/* A synchronous Kafka producer for the tests (librdkafka): each send waits
 * for the broker's acknowledgement, so a test knows the event is in the log
 * before it starts waiting for its effect. */
#ifndef CAL_TEST_KAFKA_PRODUCE_H
#define CAL_TEST_KAFKA_PRODUCE_H

#include <stddef.h>

#include "common/status.h"

struct kafka_produce;

/* NULL and err filled when the producer cannot be created. */
struct kafka_produce *kafka_produce_create(const char *bootstrap, char *err, size_t errlen);
void kafka_produce_destroy(struct kafka_produce *kp); /* kafka_produce_destroy(NULL) is a no-op */

/* Produces one message (key may be NULL; value NULL is a tombstone) and waits
 * up to timeout_ms for its acknowledgement (acks=all). */
cal_status kafka_produce_send(struct kafka_produce *kp, const char *topic, const char *key,
                              const char *value, size_t len, int timeout_ms, char *err,
                              size_t errlen);

#endif
