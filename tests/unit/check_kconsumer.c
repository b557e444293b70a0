/* Unit tests of cdc/kconsumer's configuration: every session timeout the
 * invalidator's config allows creates a consumer (librdkafka wants
 * max.poll.interval.ms >= session.timeout.ms), and values librdkafka would
 * refuse at start are refused by the check. No broker is needed. */
#include <string.h>

#include "cdc/kconsumer.h"
#include "tests/lib/unit.h"

static struct kconsumer_conf
valid_conf(void)
{
    struct kconsumer_conf c = {
        .bootstrap_servers = "127.0.0.1:1",
        .group_id = "check-kconsumer",
        .topics = "calendar.calendar_shard0.nights",
        .fetch_wait_max_ms = 5,
        .metadata_refresh_ms = 5000,
        .session_timeout_ms = 10000,
    };
    return c;
}

START_TEST(long_session_timeout_creates_a_consumer)
{
    char err[256];
    struct kconsumer_conf c = valid_conf();
    c.session_timeout_ms = 3600000; /* the top of the config range */
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_OK);
    struct kconsumer *kc = kconsumer_create(&c, err, sizeof(err));
    ck_assert_msg(kc != NULL, "%s", err);
    kconsumer_destroy(kc);
}
END_TEST

START_TEST(refused_values_fail_the_check)
{
    char err[256];
    struct kconsumer_conf c = valid_conf();
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_OK);
    strcpy(c.debug, "cgrp,nosuchcontext");
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "debug"));
    c = valid_conf();
    strcpy(c.topics, " , ");
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    c = valid_conf();
    c.bootstrap_servers[0] = '\0';
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("kconsumer");
    UNIT_CASE(s, long_session_timeout_creates_a_consumer);
    UNIT_CASE(s, refused_values_fail_the_check);
    return unit_run(s);
}
