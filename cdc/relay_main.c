/* calendar-cdc-relay: streams one shard's binlog to Kafka (see cdc/relay.h).
 * Parses arguments, loads the config table, wires signals, runs. */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/event.h"
#include "cdc/kproducer.h"
#include "cdc/relay.h"
#include "common/cli.h"
#include "common/conf.h"
#include "common/dbconf.h"
#include "common/log.h"
#include "common/util.h"

struct relay_main_conf {
    struct relay_conf relay;
    char log_level[16];
};

#define T struct relay_main_conf
static const struct conf_item conf_items[] = {
    CONF_STR_ITEM("source", "host", T, relay.source.db.host, "127.0.0.1",
                  "shard primary to read the binlog from"),
    CONF_INT_ITEM("source", "port", T, relay.source.db.port, 1, 65535, "3307", "shard port"),
    CONF_STR_ITEM("source", "database", T, relay.source.db.database, "calendar_shard0",
                  "the shard database whose listings, nights and reservations are relayed"),
    CONF_STR_ITEM("source", "user", T, relay.source.db.user, "cal_repl",
                  "replication user (needs REPLICATION SLAVE)"),
    CONF_STR_CHECK_ITEM("source", "password_file", T, relay.source.db.password_file, "",
                        conf_check_secret_file,
                        "file holding the password (mode 0600); never put it on a command line"),
    CONF_INT_ITEM("source", "server_id", T, relay.source.server_id, 1, 4294967295LL, "1000",
                  "replica server id this relay presents; unique among all replicas of the "
                  "shard (e.g. 1000 + shard number)"),
    CONF_INT_ITEM("source", "heartbeat_ms", T, relay.source.heartbeat_ms, 100, 60000, "1000",
                  "the shard sends a heartbeat after this much idle time"),
    CONF_INT_ITEM("source", "connect_timeout_ms", T, relay.source.db.connect_timeout_ms, 100, 60000,
                  "2000", "connect timeout (whole seconds, rounded up)"),
    CONF_INT_ITEM("source", "read_timeout_ms", T, relay.source.db.read_timeout_ms, 1000, 600000,
                  "5000",
                  "a stream silent this long (no event, no heartbeat) is reconnected; whole "
                  "seconds, rounded up, and at least 3 x heartbeat_ms"),
    CONF_INT_ITEM("source", "write_timeout_ms", T, relay.source.db.write_timeout_ms, 1000, 600000,
                  "5000", "timeout of every write to the server (whole seconds, rounded up)"),
    CONF_BOOL_ITEM("source", "tls", T, relay.source.db.tls, "false", "require TLS to the shard"),
    CONF_BOOL_ITEM("source", "tls_verify", T, relay.source.db.tls_verify, "true",
                   "verify the server certificate against tls_ca when tls is on"),
    CONF_STR_CHECK_ITEM("source", "tls_ca", T, relay.source.db.tls_ca, "", conf_check_readable_file,
                        "CA bundle that signed the server certificate; when set, a file readable"
                        " at load"),

    CONF_STR_ITEM("kafka", "bootstrap_servers", T, relay.kafka.bootstrap_servers, "127.0.0.1:9092",
                  "Kafka bootstrap.servers (the local calendar-devbroker prints its address)"),
    CONF_STR_ITEM("kafka", "topic_prefix", T, relay.topic_prefix, "calendar",
                  "topics are <prefix>.<database>.<table>; also source.name in every event"),
    CONF_STR_ITEM("kafka", "client_id", T, relay.kafka.client_id, "calendar-cdc-relay",
                  "Kafka client.id"),
    CONF_INT_ITEM("kafka", "linger_ms", T, relay.kafka.linger_ms, 0, 1000, "5",
                  "batching delay of the producer (linger.ms); below message_timeout_ms"),
    CONF_INT_ITEM("kafka", "message_timeout_ms", T, relay.kafka.message_timeout_ms, 1000, 3600000,
                  "60000",
                  "a message not acknowledged after this long fails; the relay then rewinds "
                  "to its checkpoint and sends again"),
    CONF_INT_ITEM("kafka", "queue_max_messages", T, relay.kafka.queue_max_messages, 1000, 10000000,
                  "100000", "local producer queue bound (back-pressure on the reader)"),
    CONF_STR_ITEM("kafka", "compression", T, relay.kafka.compression, "none",
                  "compression.codec: none|gzip|snappy|lz4|zstd"),

    CONF_STR_ITEM("relay", "state_dir", T, relay.state_dir, "var/cdc",
                  "directory of the checkpoint file, one per relay (created with its parents,"
                  " mode 0700; relative to the working directory)"),
    CONF_INT_ITEM("relay", "checkpoint_interval_ms", T, relay.checkpoint_interval_ms, 10, 60000,
                  "100", "write the checkpoint (fsync'd) at most this often ..."),
    CONF_INT_ITEM("relay", "checkpoint_events", T, relay.checkpoint_events, 1, 10000000, "1000",
                  "... or as soon as this many more transactions were acknowledged"),
    CONF_INT_ITEM("relay", "progress_interval_s", T, relay.progress_interval_s, 1, 3600, "10",
                  "interval of the progress/lag log line"),
    CONF_INT_ITEM("relay", "reconnect_max_ms", T, relay.reconnect_max_ms, 100, 600000, "5000",
                  "cap of the reconnect backoff (it retries forever)"),
    CONF_INT_ITEM("relay", "metadata_timeout_ms", T, relay.metadata_timeout_ms, 100, 600000, "5000",
                  "timeout of a topic metadata request"),
    CONF_INT_ITEM("relay", "max_pending_txns", T, relay.max_pending_txns, 10, 10000000, "100000",
                  "transactions read but not yet acknowledged (read-ahead bound)"),

    CONF_STR_CHECK_ITEM("log", "level", T, log_level, "info", log_level_check,
                        "debug|info|warn|error"),
};
#undef T

static volatile sig_atomic_t stop_flag;

static void
on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: calendar-cdc-relay --config FILE [--check-config]\n"
            "       calendar-cdc-relay --sample-config\n"
            "\n"
            "Streams ONE shard's binlog to Kafka (run one relay per shard). Reads the\n"
            "binlog as a replica (GTID-based) and publishes every row change of the\n"
            "tables listings, nights and reservations of [source] database as a\n"
            "Debezium-style JSON event to the topic <topic_prefix>.<database>.<table>,\n"
            "keyed by the primary key, partition (fmix64(listing_id) >> 32) %% partitions.\n"
            "\n"
            "Delivery is at-least-once: the checkpoint ([relay] state_dir/checkpoint,\n"
            "written atomically and fsync'd) holds the GTID position of the last\n"
            "transaction whose every event Kafka acknowledged; after a crash the relay\n"
            "resumes there (duplicates possible, gaps never). Without a checkpoint it\n"
            "starts at the shard's current @@gtid_binlog_pos (no initial snapshot).\n"
            "SIGTERM/SIGINT: flush the producer, write the checkpoint, exit 0.\n"
            "\n"
            "The shard must run with binlog_format=ROW, binlog_row_image=FULL and\n"
            "binlog_row_metadata=FULL.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE   INI configuration (see --sample-config)\n"
            "      --check-config  validate the configuration and the password file, then exit\n"
            "      --sample-config print an annotated configuration with every default\n"
            "  -h, --help          this text\n"
            "\n"
            "Exit status: 0 after a signal, 1 when it cannot start (state_dir, checkpoint),\n"
            "2 on usage or configuration errors (also one the Kafka client refuses).\n");
}

int
main(int argc, char **argv)
{
    const char *path;
    enum cli_action action =
        cli_parse(argc, argv, usage, conf_items, CAL_ARRAY_LEN(conf_items), &path);
    if (action == CLI_EXIT_OK)
        return 0;
    if (action == CLI_EXIT_USAGE)
        return 2;
    int check = action == CLI_CHECK;
    /* Static: lives until exit, whichever return ends main (LeakSanitizer). */
    static struct relay_main_conf conf_storage;
    struct relay_main_conf *conf = &conf_storage;
    char err[512];
    conf_defaults(conf_items, CAL_ARRAY_LEN(conf_items), conf);
    if (conf_load(conf_items, CAL_ARRAY_LEN(conf_items), conf, path, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-cdc-relay: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)log_level_parse(conf->log_level)); /* checked by conf_load */
    struct relay_conf *rc = &conf->relay;
    if (rc->source.db.database[0] == '\0' || rc->state_dir[0] == '\0' ||
        rc->kafka.bootstrap_servers[0] == '\0') {
        fprintf(stderr, "calendar-cdc-relay: [source] database, [relay] state_dir and [kafka] "
                        "bootstrap_servers must not be empty\n");
        return 2;
    }
    char topic[256];
    for (size_t i = 0; relay_tables[i] != NULL; i++) {
        if (event_topic(topic, sizeof(topic), rc->topic_prefix, rc->source.db.database,
                        relay_tables[i]) != CAL_OK) {
            fprintf(stderr,
                    "calendar-cdc-relay: topic '%s.%s.%s' is not a valid Kafka topic name "
                    "([kafka] topic_prefix, [source] database: [a-zA-Z0-9._-])\n",
                    rc->topic_prefix, rc->source.db.database, relay_tables[i]);
            return 2;
        }
    }
    if (kproducer_conf_check(&rc->kafka, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-cdc-relay: [kafka] %s\n", err);
        return 2;
    }
    if (db_conf_read_password(&rc->source.db, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-cdc-relay: [source] %s\n", err);
        return 2;
    }
    if (check) {
        printf("calendar-cdc-relay: configuration %s is valid\n", path);
        return 0;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    log_info("starting", "config=%s db=%s source=%s:%u kafka=%s", path, rc->source.db.database,
             rc->source.db.host, rc->source.db.port, rc->kafka.bootstrap_servers);
    return relay_run(rc, &stop_flag);
}
