/* calendar-cdc-invalidator: parses arguments, loads the config, wires the
 * Kafka consumer, memcached and the metrics endpoint, runs until SIGINT or
 * SIGTERM, then commits stored offsets and leaves the consumer group. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdc/invalidator.h"
#include "cdc/invstats.h"
#include "cdc/promhttp.h"
#include "common/cache.h"
#include "common/cli.h"
#include "common/conf.h"
#include "common/log.h"
#include "common/util.h"

struct invalidator_main_conf {
    struct invalidator_conf inv;
    int fetch_wait_max_ms;
    int metadata_refresh_ms;
    int session_timeout_ms;
    int max_poll_interval_ms;
    int cache_timeout_ms;
    int retry_base_ms;
    int retry_max_ms;
    int report_interval_s;
    int redelete_ms;
    int redelete_max_keys;
    int metrics_port;
    char metrics_listen[64];
    char log_level[16];
};

#define C struct invalidator_main_conf
static const struct conf_item conf_items[] = {
    CONF_STR_ITEM("kafka", "bootstrap_servers", C, inv.kafka.bootstrap_servers, "127.0.0.1:9092",
                  "Kafka brokers host:port[,host:port] (not empty)"),
    CONF_STR_ITEM("kafka", "group_id", C, inv.kafka.group_id, "calendar-invalidator",
                  "consumer group; every invalidator of one cache shares it"),
    CONF_STR_ITEM("kafka", "topics", C, inv.kafka.topics, "^calendar\\..*\\.(listings|nights)$",
                  "comma list of topics; an entry starting with ^ is a regex"),
    CONF_INT_ITEM("kafka", "fetch_wait_max_ms", C, fetch_wait_max_ms, 0, 10000, "5",
                  "broker waits at most this long to fill a fetch (latency vs. requests)"),
    CONF_INT_ITEM("kafka", "metadata_refresh_ms", C, metadata_refresh_ms, 1000, 3600000, "5000",
                  "how soon a new topic matching a regex is picked up"),
    CONF_INT_ITEM("kafka", "session_timeout_ms", C, session_timeout_ms, 1000, 3600000, "10000",
                  "a dead member's partitions move after this long (invalidations wait); "
                  "heartbeats go every third of it, 3 s at most; "
                  "the brokers' group.max.session.timeout.ms must allow it"),
    CONF_INT_ITEM("kafka", "max_poll_interval_ms", C, max_poll_interval_ms, 0, 86400000, "0",
                  "the rebalance timeout: a JoinGroup left unanswered this long and 3 s is "
                  "sent again (a member that stops polling this long leaves); 0: 5 min, or "
                  "session_timeout_ms if longer; else at least session_timeout_ms"),
    CONF_STR_ITEM("kafka", "debug", C, inv.kafka.debug, "",
                  "librdkafka debug contexts, e.g. cgrp,consumer,fetch (logged at debug level)"),
    CONF_STR_CHECK_ITEM(
        "cache", "servers", C, inv.cache.servers, "127.0.0.1:11211", cache_servers_check,
        "memcached servers host:port[,host:port] (not empty; the same list as calendard's)"),
    CONF_INT_ITEM("cache", "timeout_ms", C, cache_timeout_ms, 1, 10000, "200",
                  "connect/send/receive timeout of one delete"),
    CONF_INT_ITEM("invalidator", "retry_base_ms", C, retry_base_ms, 1, 60000, "50",
                  "first retry of a failed invalidation after up to this (doubling, jitter)"),
    CONF_INT_ITEM("invalidator", "retry_max_ms", C, retry_max_ms, 1, 600000, "5000",
                  "longest wait between two tries; a failed event is retried forever"),
    CONF_INT_ITEM("invalidator", "report_interval_s", C, report_interval_s, 1, 3600, "10",
                  "progress/lag log line and lag metrics refresh interval"),
    CONF_INT_ITEM(
        "invalidator", "redelete_ms", C, redelete_ms, 0, 60000, "2000",
        "delete every key again this long after its first delete: MariaDB signals the "
        "binlog before a commit is visible, so a read that missed just after the first "
        "may cache the old row; keep it at or above calendard's lease_ttl_s in ms; 0 = off"),
    CONF_INT_ITEM("invalidator", "redelete_max_keys", C, redelete_max_keys,
                  INVALIDATOR_REDELETE_MIN, 16777216, "65536",
                  "keys waiting for their second delete at most (64 bytes each); when full, the "
                  "oldest are deleted again at once, early"),
    CONF_INT_ITEM("invalidator", "metrics_port", C, metrics_port, 0, 65535, "0",
                  "HTTP port of /metrics, /healthz, /readyz; 0 = off"),
    CONF_STR_CHECK_ITEM("invalidator", "metrics_listen", C, metrics_listen, "127.0.0.1",
                        conf_check_ipv4, "IPv4 address of the metrics endpoint"),
    CONF_STR_CHECK_ITEM("log", "level", C, log_level, "info", log_level_check,
                        "debug, info, warn or error"),
};
#undef C

static void
usage(FILE *out)
{
    fprintf(
        out,
        "usage: calendar-cdc-invalidator --config FILE [--check-config]\n"
        "       calendar-cdc-invalidator --sample-config\n"
        "\n"
        "Consumes the calendar's change events (Debezium-style JSON, with or without the\n"
        "schemas.enable envelope) from Kafka as a consumer group member and deletes the\n"
        "memcached keys each change makes stale: the listing key for a listings row; the\n"
        "month keys of the before and after images and the listing key for a nights row.\n"
        "An offset is stored only after memcached acted on its event; while memcached\n"
        "fails, the event is retried with bounded backoff, never skipped. Undecodable\n"
        "events are logged and skipped. Every key is deleted again [invalidator]\n"
        "redelete_ms after its first delete (best-effort, never holding back an offset):\n"
        "MariaDB signals the binlog before a commit is visible, so a read that missed\n"
        "just after the first delete may have cached the old row. SIGINT/SIGTERM commit\n"
        "offsets and leave the group, then send the second deletes still waiting, each\n"
        "at its time (at most redelete_ms later).\n"
        "\n"
        "  -c, --config FILE   INI configuration (see --sample-config)\n"
        "      --check-config  validate the configuration, then exit\n"
        "      --sample-config print an annotated configuration with every default\n"
        "  -h, --help          this text\n"
        "\n"
        "Exit status: 0 after a signal, 1 when it cannot start, 2 on usage or config errors.\n");
}

static int
load_config(const char *path, struct invalidator_main_conf *conf)
{
    char err[512];
    memset(conf, 0, sizeof(*conf));
    conf_defaults(conf_items, CAL_ARRAY_LEN(conf_items), conf);
    if (conf_load(conf_items, CAL_ARRAY_LEN(conf_items), conf, path, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-cdc-invalidator: %s\n", err);
        return -1;
    }
    const char *bad = NULL;
    char why[300], detail[256];                   /* a module check's message */
    int level = log_level_parse(conf->log_level); /* checked by conf_load */
    if (conf->inv.kafka.bootstrap_servers[0] == '\0')
        bad = "[kafka] bootstrap_servers must not be empty";
    else if (conf->inv.kafka.group_id[0] == '\0')
        bad = "[kafka] group_id must not be empty";
    else if (strspn(conf->inv.kafka.topics, " ,\t") == strlen(conf->inv.kafka.topics))
        bad = "[kafka] topics must name at least one topic or ^regex";
    else if (conf->retry_max_ms < conf->retry_base_ms)
        bad = "[invalidator] retry_max_ms is below retry_base_ms";
    if (bad == NULL) {
        conf->inv.kafka.fetch_wait_max_ms = (unsigned)conf->fetch_wait_max_ms;
        conf->inv.kafka.metadata_refresh_ms = (unsigned)conf->metadata_refresh_ms;
        conf->inv.kafka.session_timeout_ms = (unsigned)conf->session_timeout_ms;
        conf->inv.kafka.max_poll_interval_ms = (unsigned)conf->max_poll_interval_ms;
        if (kconsumer_conf_check(&conf->inv.kafka, detail, sizeof(detail)) != CAL_OK)
            bad = (snprintf(why, sizeof(why), "[kafka] %s", detail), why);
    }
    if (bad != NULL) {
        fprintf(stderr, "calendar-cdc-invalidator: %s: %s\n", path, bad);
        return -1;
    }
    log_set_level((enum log_level)level);
    conf->inv.cache.timeout_ms = (unsigned)conf->cache_timeout_ms;
    conf->inv.retry_base_ms = (unsigned)conf->retry_base_ms;
    conf->inv.retry_max_ms = (unsigned)conf->retry_max_ms;
    conf->inv.report_interval_ms = (unsigned)conf->report_interval_s * 1000;
    conf->inv.redelete_ms = (unsigned)conf->redelete_ms;
    conf->inv.redelete_max_keys = (size_t)conf->redelete_max_keys;
    return 0;
}

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
    stop_signal = sig;
}

static char *
render_metrics(void *opaque, size_t *len)
{
    return invstats_render(opaque, len);
}

static struct invalidator *ready_inv; /* set before the endpoint starts, cleared after it stops */

static bool
is_ready(void *opaque)
{
    (void)opaque;
    return ready_inv != NULL && invalidator_ready(ready_inv);
}

int
main(int argc, char **argv)
{
    const char *config;
    enum cli_action action =
        cli_parse(argc, argv, usage, conf_items, CAL_ARRAY_LEN(conf_items), &config);
    if (action == CLI_EXIT_OK)
        return 0;
    if (action == CLI_EXIT_USAGE)
        return 2;
    bool check_only = action == CLI_CHECK;
    struct invalidator_main_conf conf;
    if (load_config(config, &conf) != 0)
        return 2;
    if (check_only) {
        printf("calendar-cdc-invalidator: %s is valid\n", config);
        return 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: the consume loop polls in 100 ms steps */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    struct invstats *stats = invstats_create();
    struct invalidator *inv = invalidator_create(&conf.inv, stats, err, sizeof(err));
    if (inv == NULL) {
        log_error("cannot start", "error=\"%s\"", err);
        invstats_destroy(stats);
        return 1;
    }
    ready_inv = inv;
    struct promhttp *http = NULL;
    if (conf.metrics_port > 0) {
        http = promhttp_start(conf.metrics_listen, (unsigned)conf.metrics_port, render_metrics,
                              is_ready, stats, err, sizeof(err));
        if (http == NULL) {
            log_error("cannot start", "error=\"%s\"", err);
            invalidator_destroy(inv);
            invstats_destroy(stats);
            return 1;
        }
    }
    log_info("started",
             "pid=%d bootstrap=%s group=%s topics=\"%s\" cache=%s metrics=%s:%d redelete_ms=%d",
             (int)getpid(), conf.inv.kafka.bootstrap_servers, conf.inv.kafka.group_id,
             conf.inv.kafka.topics, conf.inv.cache.servers, conf.metrics_listen, conf.metrics_port,
             conf.redelete_ms);
    invalidator_run(inv, &stop_signal);
    log_info("stopping", "signal=%d", (int)stop_signal);
    promhttp_stop(http);
    ready_inv = NULL;
    invalidator_destroy(inv);
    invstats_destroy(stats);
    log_info("stopped", "%s", "");
    return 0;
}
