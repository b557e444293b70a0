/* Unit tests of cdc/kproducer: its configuration check (what librdkafka
 * would refuse only when the relay creates its producer, and the relay would
 * then retry forever, is refused by --check-config and at start), and the
 * relay's rewind flush giving way to a stop. No broker is needed. */
#include <signal.h>
#include <string.h>

#include "cdc/kproducer.h"
#include "common/util.h"
#include "tests/lib/unit.h"

static struct kproducer_conf
valid_conf(void)
{
    struct kproducer_conf c = {
        .bootstrap_servers = "127.0.0.1:9092",
        .client_id = "calendar-cdc-relay",
        .linger_ms = 5,
        .message_timeout_ms = 60000,
        .queue_max_messages = 100000,
        .compression = "none",
    };
    return c;
}

START_TEST(compression_is_one_of_the_codecs)
{
    char err[256];
    struct kproducer_conf c = valid_conf();
    ck_assert_int_eq(kproducer_conf_check(&c, err, sizeof(err)), CAL_OK);
    strcpy(c.compression, "gzip");
    ck_assert_int_eq(kproducer_conf_check(&c, err, sizeof(err)), CAL_OK);
    strcpy(c.compression, "brotli");
    ck_assert_int_eq(kproducer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "brotli"));
    /* librdkafka takes "inherit" and "" (its own defaults) but they are not
     * documented values of the relay. */
    strcpy(c.compression, "inherit");
    ck_assert_int_eq(kproducer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    c.compression[0] = '\0';
    ck_assert_int_eq(kproducer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    /* A bad value fails the producer too, not only the check. */
    strcpy(c.compression, "brotli");
    ck_assert_ptr_null(kproducer_create(&c, NULL, NULL, err, sizeof(err)));
}
END_TEST

START_TEST(linger_below_message_timeout)
{
    char err[256];
    struct kproducer_conf c = valid_conf();
    c.linger_ms = 1000;
    c.message_timeout_ms = 1000;
    ck_assert_int_eq(kproducer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "linger_ms"));
    c.message_timeout_ms = 1001;
    ck_assert_int_eq(kproducer_conf_check(&c, err, sizeof(err)), CAL_OK);
}
END_TEST

/* A stop request ends the relay's rewind flush within a slice, however long
 * the flush may take (message_timeout_ms + 1 s, 61 s by default): a SIGTERM
 * during a Kafka outage does not wait for it. The stop is requested before
 * the flush starts, which the flush sees the same way, after its first
 * slice; without a stop, the timeout still ends it. Nothing listens on the
 * bootstrap port, so the message is never delivered. */
START_TEST(stop_ends_a_long_flush)
{
    char err[256];
    struct kproducer_conf c = valid_conf();
    strcpy(c.bootstrap_servers, "127.0.0.1:1");
    struct kproducer *kp = kproducer_create(&c, NULL, NULL, err, sizeof(err));
    ck_assert_msg(kp != NULL, "%s", err);
    ck_assert_int_eq(kproducer_send(kp, "t", 0, "k", 1, "v", 1, NULL, NULL, err, sizeof(err)),
                     CAL_OK);
    volatile sig_atomic_t stop = 0;
    ck_assert_int_eq(kproducer_flush_interruptible(kp, 300, &stop, err, sizeof(err)),
                     CAL_ETIMEDOUT);
    stop = 1;
    uint64_t t0 = cal_mono_us();
    ck_assert_int_eq(kproducer_flush_interruptible(kp, 61000, &stop, err, sizeof(err)), CAL_EAGAIN);
    uint64_t ms = (cal_mono_us() - t0) / 1000;
    ck_assert_msg(ms < 5000, "the flush went on for %llu ms after the stop",
                  (unsigned long long)ms);
    ck_assert_msg(strstr(err, "1 messages left") != NULL, "%s", err);
    kproducer_destroy(kp);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("kproducer");
    UNIT_CASE(s, compression_is_one_of_the_codecs);
    UNIT_CASE(s, linger_below_message_timeout);
    UNIT_CASE(s, stop_ends_a_long_flush);
    return unit_run(s);
}
