/* Unit tests of cdc/kconsumer: its configuration (every session timeout the
 * invalidator's config allows creates a consumer: librdkafka wants
 * max.poll.interval.ms >= session.timeout.ms; values librdkafka would refuse
 * at start are refused by the check; no broker), and its gap detection
 * when the group coordinator fails to answer and when a partition's offsets
 * go back, against librdkafka's mock cluster in this process (no stack
 * needed). */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/kconsumer.h"
#include "common/util.h"
#include "tests/lib/kafka_produce.h"
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

/* A consumer of c, which must be valid. */
static struct kconsumer *
create_ok(const struct kconsumer_conf *c)
{
    char err[256];
    ck_assert_msg(kconsumer_conf_check(c, err, sizeof(err)) == CAL_OK, "%s", err);
    struct kconsumer *kc = kconsumer_create(c, err, sizeof(err));
    ck_assert_msg(kc != NULL, "%s", err);
    return kc;
}

START_TEST(long_session_timeout_creates_a_consumer)
{
    struct kconsumer_conf c = valid_conf();
    c.session_timeout_ms = 3600000; /* the top of the config range */
    kconsumer_destroy(create_ok(&c));
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
    c = valid_conf();
    c.max_poll_interval_ms = c.session_timeout_ms - 1;
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "max_poll_interval_ms"));
    c.max_poll_interval_ms = c.session_timeout_ms;
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_OK);
    c.session_timeout_ms = 0; /* librdkafka's 45 s: rd_kafka_new would refuse */
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_EINVAL);
    c.max_poll_interval_ms = 45000;
    ck_assert_int_eq(kconsumer_conf_check(&c, err, sizeof(err)), CAL_OK);
}
END_TEST

/* A third of the session timeout, at most librdkafka's default 3 s; and
 * librdkafka takes the shortest one the config allows. */
START_TEST(heartbeat_is_a_third_of_the_session_timeout)
{
    ck_assert_uint_eq(kconsumer_heartbeat_ms(0), 0);
    ck_assert_uint_eq(kconsumer_heartbeat_ms(1000), 333);
    ck_assert_uint_eq(kconsumer_heartbeat_ms(6000), 2000);
    ck_assert_uint_eq(kconsumer_heartbeat_ms(9000), 3000);
    ck_assert_uint_eq(kconsumer_heartbeat_ms(10000), 3000);
    ck_assert_uint_eq(kconsumer_heartbeat_ms(3600000), 3000);
    struct kconsumer_conf c = valid_conf();
    c.session_timeout_ms = 1000; /* the bottom of the config range */
    kconsumer_destroy(create_ok(&c));
}
END_TEST

#define TOPIC "kc.gap"
#define GROUP "check-kconsumer-gap"

struct mock {
    rd_kafka_t *rk; /* the mock cluster's host handle */
    rd_kafka_mock_cluster_t *mc;
    char bootstrap[256];
};

/* A one-broker mock cluster with TOPIC (one partition). */
static void
mock_start(struct mock *m)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Quiet: it warns that it has no bootstrap.servers of its own. */
    ck_assert(rd_kafka_conf_set(conf, "log_level", "3", why, sizeof(why)) == RD_KAFKA_CONF_OK);
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    ck_assert_msg(m->rk != NULL, "%s", why);
    m->mc = rd_kafka_mock_cluster_new(m->rk, 1);
    ck_assert_ptr_nonnull(m->mc);
    cal_strlcpy(m->bootstrap, rd_kafka_mock_cluster_bootstraps(m->mc), sizeof(m->bootstrap));
    ck_assert_int_eq(rd_kafka_mock_topic_create(m->mc, TOPIC, 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void
mock_stop(struct mock *m)
{
    rd_kafka_mock_cluster_destroy(m->mc);
    rd_kafka_destroy(m->rk);
}

/* n messages of len bytes each on TOPIC. */
static void
produce_n(const struct mock *m, int n, size_t len)
{
    char err[512];
    struct kafka_produce *kp = kafka_produce_create(m->bootstrap, err, sizeof(err));
    ck_assert_msg(kp != NULL, "%s", err);
    char *value = cal_malloc(len);
    memset(value, 'x', len);
    for (int i = 0; i < n; i++)
        ck_assert_msg(kafka_produce_send(kp, TOPIC, "k", value, len, 10000, err, sizeof(err)) ==
                          CAL_OK,
                      "%s", err);
    free(value);
    kafka_produce_destroy(kp);
}

/* A consumer of GROUP on TOPIC at m's broker. */
static struct kconsumer_conf
mock_conf(const struct mock *m)
{
    struct kconsumer_conf c = valid_conf();
    cal_strlcpy(c.bootstrap_servers, m->bootstrap, sizeof(c.bootstrap_servers));
    cal_strlcpy(c.group_id, GROUP, sizeof(c.group_id));
    cal_strlcpy(c.topics, TOPIC, sizeof(c.topics));
    /* The mock answers a first JoinGroup after 3 s, and drops a waiting
     * member whose session ran out first: librdkafka then waits out its
     * rebalance timeout (5 min) for the answer. 6 s leaves 3 s for a stall. */
    c.session_timeout_ms = 6000;
    /* A join the mock dropped anyway is sent again after 13 s, not 5 min. */
    c.max_poll_interval_ms = 10000;
    return c;
}

static struct kconsumer *
consumer(const struct mock *m)
{
    struct kconsumer_conf c = mock_conf(m);
    return create_ok(&c);
}

static void
next_msg(struct kconsumer *kc, struct kconsumer_msg *msg)
{
    char err[512] = "";
    uint64_t deadline = cal_mono_us() + 30000000;
    while (kconsumer_poll(kc, 100, msg, err, sizeof(err)) != CAL_OK)
        ck_assert_msg(cal_mono_us() < deadline,
                      "no message within 30 s (joined %d, %zu partitions assigned, last poll: %s)",
                      (int)kconsumer_joined(kc), kconsumer_assigned(kc), err);
}

/* The group's committed offset is set to offset, as if it had read that far
 * (a consumer outside the group's membership may commit). */
static void
commit_offset(const struct mock *m, int64_t offset)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert(rd_kafka_conf_set(conf, "bootstrap.servers", m->bootstrap, why, sizeof(why)) ==
              RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "group.id", GROUP, why, sizeof(why)) == RD_KAFKA_CONF_OK);
    ck_assert(rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof(why)) ==
              RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    ck_assert_msg(rk != NULL, "%s", why);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, TOPIC, 0)->offset = offset;
    rd_kafka_resp_err_t rerr = rd_kafka_commit(rk, list, 0);
    ck_assert_msg(rerr == RD_KAFKA_RESP_ERR_NO_ERROR, "commit: %s", rd_kafka_err2str(rerr));
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

/* The group had read up to offset 50 of a log that is gone (the topic
 * recreated, or its broker back without its log): the new log's first
 * message, offset 0, comes after events the relay had counted as delivered
 * that no one will read. A gap, once: the message after it is none. */
START_TEST(committed_offset_past_the_log_is_a_gap)
{
    struct mock m;
    mock_start(&m);
    produce_n(&m, 3, 10);
    commit_offset(&m, 50);
    struct kconsumer *kc = consumer(&m);
    struct kconsumer_msg msg = {0}, next = {0};
    next_msg(kc, &msg);
    ck_assert_int_eq(msg.offset, 0);
    ck_assert_int_eq(msg.gap_from, 50);
    char err[256];
    ck_assert_int_eq(kconsumer_store(kc, &msg, err, sizeof(err)), CAL_OK);
    kconsumer_release(kc, &msg);
    next_msg(kc, &next);
    ck_assert_int_eq(next.offset, 1);
    ck_assert_int_eq(next.gap_from, -1);
    kconsumer_release(kc, &next);
    kconsumer_destroy(kc);
    mock_stop(&m);
}
END_TEST

/* Mid-stream, the broker answers a fetch "offset out of range" (its log was
 * truncated below what we had read: an unclean leader election) and the
 * consumer starts over from the earliest offset: the first message further
 * back than the one expected counts as a gap, once, and the ones after it
 * do not. */
START_TEST(offsets_going_back_mid_stream_are_a_gap)
{
    struct mock m;
    mock_start(&m);
    produce_n(&m, 5, 10);
    struct kconsumer *kc = consumer(&m);
    char err[256];
    for (int i = 0; i < 5; i++) {
        struct kconsumer_msg msg = {0};
        next_msg(kc, &msg);
        ck_assert_int_eq(msg.offset, i);
        ck_assert_int_eq(msg.gap_from, -1);
        ck_assert_int_eq(kconsumer_store(kc, &msg, err, sizeof(err)), CAL_OK);
        kconsumer_release(kc, &msg);
    }
    /* The broker answers one Fetch (ApiKey 1) "offset out of range". About
     * every other run, librdkafka 2.0 takes the first such answer of its mock
     * without a reset: the error is given again, only once the broker used
     * the last one (a second reset would come after the messages checked). */
    struct kconsumer_msg msg = {0}, next = {0};
    bool got = false;
    uint64_t give_up = cal_mono_us() + 40000000;
    for (int attempt = 0; attempt < 10 && !got; attempt++) {
        ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                             m.mc, 1, 1, 1, RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE, 0),
                         RD_KAFKA_RESP_ERR_NO_ERROR);
        size_t left = 1;
        uint64_t deadline = cal_mono_us() + 3000000;
        while (!got && (left > 0 || cal_mono_us() < deadline)) {
            ck_assert_msg(cal_mono_us() < give_up, "the fetch error was never used");
            got = kconsumer_poll(kc, 100, &msg, err, sizeof(err)) == CAL_OK;
            ck_assert_int_eq(rd_kafka_mock_broker_error_stack_cnt(m.mc, 1, 1, &left),
                             RD_KAFKA_RESP_ERR_NO_ERROR);
        }
    }
    ck_assert_msg(got, "no message after 10 fetches answered 'offset out of range'");
    ck_assert_int_eq(msg.offset, 0);
    ck_assert_int_eq(msg.gap_from, 5);
    ck_assert_int_eq(kconsumer_store(kc, &msg, err, sizeof(err)), CAL_OK);
    kconsumer_release(kc, &msg);
    next_msg(kc, &next);
    ck_assert_int_eq(next.offset, 1);
    ck_assert_int_eq(next.gap_from, -1);
    kconsumer_release(kc, &next);
    kconsumer_destroy(kc);
    mock_stop(&m);
}
END_TEST

/* The lookup at assignment fails but the one at the first message works:
 * the gap (retention dropped offsets 3.. before the group read them) is
 * told exactly, as if the first lookup had worked. */
START_TEST(failed_lookup_at_assignment_is_retried)
{
    struct mock m;
    mock_start(&m);
    produce_n(&m, 5, 10);
    commit_offset(&m, 3);
    produce_n(&m, 400, 16000); /* about 6.4 MB: the mock keeps about 5 */
    struct kconsumer *kc = consumer(&m);
    const int errs[] = {RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED};
    kconsumer_fail_lookups(kc, errs, 1);
    struct kconsumer_msg msg = {0}, next = {0};
    next_msg(kc, &msg);
    ck_assert_msg(msg.offset > 5, "offset %lld: the broker kept everything", (long long)msg.offset);
    ck_assert_int_eq(msg.gap_from, 3);
    char err[256];
    ck_assert_int_eq(kconsumer_store(kc, &msg, err, sizeof(err)), CAL_OK);
    kconsumer_release(kc, &msg);
    next_msg(kc, &next);
    ck_assert_int_eq(next.gap_from, -1);
    kconsumer_release(kc, &next);
    kconsumer_destroy(kc);
    mock_stop(&m);
}
END_TEST

/* Both lookups fail: whether messages before the first one read were lost
 * cannot be told, so it counts as a gap from offset 0 (the invalidator
 * flushes), even though none was lost here. */
START_TEST(unknown_committed_offset_counts_as_a_gap)
{
    struct mock m;
    mock_start(&m);
    produce_n(&m, 5, 10);
    commit_offset(&m, 3);
    struct kconsumer *kc = consumer(&m);
    const int errs[] = {RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED, RD_KAFKA_RESP_ERR__TIMED_OUT};
    kconsumer_fail_lookups(kc, errs, 2);
    struct kconsumer_msg msg = {0}, next = {0};
    next_msg(kc, &msg);
    ck_assert_int_eq(msg.offset, 3);
    ck_assert_int_eq(msg.gap_from, 0);
    char err[256];
    ck_assert_int_eq(kconsumer_store(kc, &msg, err, sizeof(err)), CAL_OK);
    kconsumer_release(kc, &msg);
    next_msg(kc, &next);
    ck_assert_int_eq(next.offset, 4);
    ck_assert_int_eq(next.gap_from, -1);
    kconsumer_release(kc, &next);
    kconsumer_destroy(kc);
    mock_stop(&m);
}
END_TEST

/* The coordinator never answers the first JoinGroup (the mock drops a
 * waiting member whose session ran out during a stall): librdkafka gives it
 * up after max_poll_interval_ms and 3 s, and joins again. */
START_TEST(unanswered_join_is_given_up)
{
    struct mock m;
    mock_start(&m);
    /* JoinGroup (ApiKey 11): answered after 120 s, with an error. */
    ck_assert_int_eq(rd_kafka_mock_broker_push_request_error_rtts(
                         m.mc, 1, 11, 1, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, 120000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    struct kconsumer_conf c = mock_conf(&m);
    c.max_poll_interval_ms = c.session_timeout_ms; /* given up after 6 + 3 s */
    struct kconsumer *kc = create_ok(&c);
    char err[256];
    struct kconsumer_msg msg = {0};
    uint64_t t0 = cal_mono_us();
    while (kconsumer_assigned(kc) == 0) {
        ck_assert_msg(cal_mono_us() - t0 < 40000000, "not assigned within 40 s");
        if (kconsumer_poll(kc, 100, &msg, err, sizeof(err)) == CAL_OK)
            kconsumer_release(kc, &msg);
    }
    /* Through the give-up: the delayed answer was the first JoinGroup's. */
    size_t left = 1;
    ck_assert_int_eq(rd_kafka_mock_broker_error_stack_cnt(m.mc, 1, 11, &left),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_uint_eq(left, 0);
    ck_assert_msg(cal_mono_us() - t0 >= 9000000, "assigned after %.1f s, before the give-up",
                  (double)(cal_mono_us() - t0) / 1e6);
    kconsumer_destroy(kc);
    mock_stop(&m);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("kconsumer");
    UNIT_CASE(s, long_session_timeout_creates_a_consumer);
    UNIT_CASE(s, refused_values_fail_the_check);
    UNIT_CASE(s, heartbeat_is_a_third_of_the_session_timeout);
    /* Against the mock cluster: a group's first join takes it 3 s. */
    TCase *tc = tcase_create("failed_lookup_at_assignment_is_retried");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, failed_lookup_at_assignment_is_retried);
    suite_add_tcase(s, tc);
    tc = tcase_create("unknown_committed_offset_counts_as_a_gap");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, unknown_committed_offset_counts_as_a_gap);
    suite_add_tcase(s, tc);
    tc = tcase_create("committed_offset_past_the_log_is_a_gap");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, committed_offset_past_the_log_is_a_gap);
    suite_add_tcase(s, tc);
    tc = tcase_create("unanswered_join_is_given_up");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, unanswered_join_is_given_up);
    suite_add_tcase(s, tc);
    tc = tcase_create("offsets_going_back_mid_stream_are_a_gap");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, offsets_going_back_mid_stream_are_a_gap);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
