/* Unit tests of cdc/kproducer's configuration check: what librdkafka would
 * refuse only when the relay creates its producer (and the relay would then
 * retry forever) is refused by --check-config and at start. */
#include <string.h>

#include "cdc/kproducer.h"
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

int
main(void)
{
    Suite *s = suite_create("kproducer");
    UNIT_CASE(s, compression_is_one_of_the_codecs);
    UNIT_CASE(s, linger_below_message_timeout);
    return unit_run(s);
}
