/* calendar-devbroker: librdkafka's in-memory mock Kafka cluster as a process,
 * the local stack's Kafka. Prints its bootstrap address and runs until
 * SIGINT/SIGTERM. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define MAX_TOPICS 256

static void
usage(FILE *out)
{
    fprintf(out, "usage: calendar-devbroker [--brokers N] [--topics T1,T2,...] [--partitions P]\n"
                 "                          [--bootstrap-file FILE] [--log-level LEVEL]\n"
                 "\n"
                 "Runs librdkafka's mock Kafka cluster (rdkafka_mock.h) as a process: a local,\n"
                 "development-only broker that speaks the real Kafka protocol (producers,\n"
                 "idempotence, consumer groups: kcat -b ADDR -G group topic works). It keeps\n"
                 "all data IN MEMORY ONLY: everything is lost when it stops. Production points\n"
                 "the same bootstrap.servers setting at a real Kafka cluster; nothing else\n"
                 "changes.\n"
                 "\n"
                 "Every broker listens on 127.0.0.1 on a port the system picks (librdkafka\n"
                 "2.0 offers no fixed port). The bootstrap address (host:port[,...]) is printed\n"
                 "on stdout once the cluster and its topics exist; topics not created up front\n"
                 "are auto-created on first use. Runs until SIGINT or SIGTERM.\n"
                 "\n"
                 "Options:\n"
                 "  --brokers N            number of brokers, 1-16 (default 1)\n"
                 "  --topics LIST          comma-separated topics to create at start\n"
                 "  --partitions P         partitions of each created topic, 1-1024 (default 8)\n"
                 "  --bootstrap-file FILE  also write the bootstrap address to FILE\n"
                 "                         (atomically: temp file + rename)\n"
                 "  --log-level LEVEL      debug|info|warn|error (default info)\n"
                 "  -h, --help             this text\n");
}

static int
parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int
write_file_atomic(const char *path, const char *text, char *err, size_t errlen)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %.400s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int rc = 0;
    if (w != (ssize_t)len || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %.400s: %s", tmp, strerror(errno));
        rc = -1;
    }
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %.200s -> %.200s: %s", tmp, path, strerror(errno));
        rc = -1;
    }
    if (rc != 0)
        unlink(tmp);
    return rc;
}

static void
on_kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (strcmp(fac, "CONFWARN") == 0)
        return; /* "no bootstrap.servers": expected, this handle only hosts the cluster */
    enum log_level lv = log_level_from_syslog(level);
    log_write(lv, "kafka mock", "facility=%s detail=\"%s\"", fac, buf);
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {{"brokers", required_argument, NULL, 'b'},
                                         {"topics", required_argument, NULL, 't'},
                                         {"partitions", required_argument, NULL, 'p'},
                                         {"bootstrap-file", required_argument, NULL, 'f'},
                                         {"log-level", required_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int brokers = 1, partitions = 8, c;
    const char *topics = NULL, *bootstrap_file = NULL;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (parse_int(optarg, 1, 16, &brokers) != 0) {
                fprintf(stderr, "calendar-devbroker: --brokers must be 1-16\n");
                return 2;
            }
            break;
        case 'p':
            if (parse_int(optarg, 1, 1024, &partitions) != 0) {
                fprintf(stderr, "calendar-devbroker: --partitions must be 1-1024\n");
                return 2;
            }
            break;
        case 't':
            topics = optarg;
            break;
        case 'f':
            bootstrap_file = optarg;
            break;
        case 'l': {
            int level = log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr, "calendar-devbroker: unknown --log-level %s\n", optarg);
                return 2;
            }
            log_set_level((enum log_level)level);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    /* Block the stop signals before librdkafka starts its threads, so only
     * sigwait below receives them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, on_kafka_log);
    /* The mock brokers' sockets take their options from this handle's
     * configuration: without TCP_NODELAY a response written while the one
     * before it is unacknowledged waits for the client's next request or
     * its delayed ACK, which made a relay's produce round trip 10 ms at the
     * median (0.3 ms with it; docs/benchmarks.md). */
    if (rd_kafka_conf_set(conf, "client.id", "calendar-devbroker", err, sizeof(err)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "socket.nagle.disable", "true", err, sizeof(err)) !=
            RD_KAFKA_CONF_OK) {
        log_error("devbroker not started", "error=\"%s\"", err);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (rk == NULL) {
        log_error("devbroker not started", "error=\"%s\"", err);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        log_error("devbroker not started", "error=\"mock cluster could not be created\"");
        rd_kafka_destroy(rk);
        return 1;
    }
    int rc = 1, ntopics = 0;
    if (topics != NULL) {
        char *copy = cal_strndup(topics, strlen(topics)), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
            if (t[0] == '\0')
                continue;
            if (++ntopics > MAX_TOPICS) {
                log_error("devbroker not started", "error=\"more than %d topics\"", MAX_TOPICS);
                free(copy);
                goto out;
            }
            rd_kafka_resp_err_t e =
                rd_kafka_mock_topic_create(mc, t, partitions, brokers < 3 ? brokers : 3);
            if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
                log_error("topic not created", "topic=%s error=\"%s\"", t, rd_kafka_err2str(e));
                free(copy);
                goto out;
            }
            log_info("topic created", "topic=%s partitions=%d", t, partitions);
        }
        free(copy);
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (bootstrap_file != NULL) {
        char line[1024];
        snprintf(line, sizeof(line), "%s\n", bootstraps);
        if (write_file_atomic(bootstrap_file, line, err, sizeof(err)) != 0) {
            log_error("devbroker not started", "error=\"%s\"", err);
            goto out;
        }
    }
    printf("%s\n", bootstraps);
    fflush(stdout);
    log_info("listening", "bootstrap=%s brokers=%d topics=%d partitions=%d storage=memory-only",
             bootstraps, brokers, ntopics, partitions);

    for (;;) {
        int sig;
        if (sigwait(&set, &sig) == 0)
            break;
    }
    log_info("stopping", "bootstrap=%s", bootstraps);
    rc = 0;
out:
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return rc;
}
