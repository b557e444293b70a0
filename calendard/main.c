/* calendard: parses arguments, loads the config, wires router, service and
 * HTTP front, and runs until SIGINT or SIGTERM. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calendard/http.h"
#include "calendard/router.h"
#include "calendard/service.h"
#include "common/conf.h"
#include "common/dbconf.h"
#include "common/log.h"
#include "common/util.h"

struct calendard_conf {
    struct http_conf http;
    struct db_conf catalog;
    struct db_conf shard;
    int pool_size;
    int pool_wait_ms;
    int refresh_interval_ms;
    int max_attempts;
    int backoff_base_ms;
    int backoff_max_ms;
    int deadline_ms;
    int breaker_threshold;
    int breaker_cooldown_ms;
    int max_search_listings;
    struct avail_conf avail;
    char log_level[16];
};

#define C struct calendard_conf
static const struct conf_item conf_items[] = {
    CONF_STR_ITEM("server", "listen", C, http.listen, "127.0.0.1", "IPv4 address to listen on"),
    CONF_INT_ITEM("server", "port", C, http.port, 1, 65535, "8080", "HTTP port"),
    CONF_INT_ITEM("server", "max_connections", C, http.max_connections, 1, 100000, "1024",
                  "open client connections at most (one thread each)"),
    CONF_INT_ITEM("server", "max_inflight", C, http.max_inflight, 1, 100000, "512",
                  "requests being processed at most; more get 503 overloaded"),
    CONF_INT_ITEM("server", "max_body_bytes", C, http.max_body_bytes, 256, 16777216, "65536",
                  "largest request body; larger gets 413"),
    CONF_INT_ITEM("server", "max_header_bytes", C, http.max_header_bytes, 4096, 1048576, "32768",
                  "memory for one connection's request line and headers"),
    CONF_INT_ITEM("server", "idle_timeout_s", C, http.idle_timeout_s, 1, 3600, "30",
                  "close a connection idle this long"),
    CONF_INT_ITEM("server", "max_search_listings", C, max_search_listings, 1, 100000, "1000",
                  "listing_ids of one availability search at most"),
    DBCONF_ADDRESS_ITEMS("catalog", C, catalog),
    DBCONF_SESSION_ITEMS("catalog", C, catalog),
    DBCONF_SESSION_ITEMS("shards", C, shard),
    CONF_INT_ITEM("shards", "pool_size", C, pool_size, 1, 1024, "32",
                  "connections per shard at most"),
    CONF_INT_ITEM("shards", "pool_wait_ms", C, pool_wait_ms, 0, 60000, "1000",
                  "wait this long for a free connection, then answer 503 overloaded"),
    CONF_INT_ITEM("shards", "breaker_threshold", C, breaker_threshold, 1, 1000, "5",
                  "consecutive connection failures or timeouts that open a shard's breaker"),
    CONF_INT_ITEM("shards", "breaker_cooldown_ms", C, breaker_cooldown_ms, 10, 600000, "2000",
                  "an open breaker answers 503 at once this long, then lets one probe through"),
    CONF_INT_ITEM("routing", "refresh_interval_ms", C, refresh_interval_ms, 100, 3600000, "5000",
                  "reload the shard map this often (and at once on a 'moved' answer)"),
    CONF_INT_ITEM("routing", "max_attempts", C, max_attempts, 1, 100, "10",
                  "tries of one operation across conflicts and moves"),
    CONF_INT_ITEM("routing", "backoff_base_ms", C, backoff_base_ms, 0, 10000, "1",
                  "first retry waits up to this long (full jitter, doubling)"),
    CONF_INT_ITEM("routing", "backoff_max_ms", C, backoff_max_ms, 0, 60000, "50",
                  "longest wait between two tries"),
    CONF_INT_ITEM("routing", "request_deadline_ms", C, deadline_ms, 100, 600000, "8000",
                  "start no new attempt of a request after this long"),
    CONF_STR_ITEM("cache", "servers", C, avail.cache.servers, "",
                  "memcached servers host:port[,host:port]; empty = no cache"),
    CONF_INT_ITEM("cache", "timeout_ms", C, avail.cache.timeout_ms, 1, 10000, "50",
                  "connect/send/receive timeout; a slow cache falls back to the shards"),
    CONF_INT_ITEM("cache", "ttl_s", C, avail.ttl_s, 1, 2592000, "3600",
                  "lifetime of a cached value (invalidations delete sooner)"),
    CONF_INT_ITEM("cache", "lease_ttl_s", C, avail.lease_ttl_s, 1, 60, "2",
                  "lifetime of a fill lease whose reader died"),
    CONF_STR_ITEM("log", "level", C, log_level, "info", "debug, info, warn or error"),
};
#undef C

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: calendard --config FILE [--check-config]\n"
            "       calendard --sample-config\n"
            "\n"
            "The calendar reservation store daemon: HTTP/JSON API on [server] listen:port,\n"
            "bookings on the MariaDB shards named by the [catalog] database.\n"
            "\n"
            "  -c, --config FILE   INI configuration (see --sample-config)\n"
            "      --check-config  validate the configuration and the password files, then exit\n"
            "      --sample-config print an annotated configuration with every default\n"
            "  -h, --help          this text\n");
}

static int
load_config(const char *path, struct calendard_conf *conf)
{
    char err[512];
    memset(conf, 0, sizeof(*conf));
    conf_defaults(conf_items, CAL_ARRAY_LEN(conf_items), conf);
    conf->shard.password_file[0] = '\0';
    if (conf_load(conf_items, CAL_ARRAY_LEN(conf_items), conf, path, err, sizeof(err)) != CAL_OK ||
        db_conf_read_password(&conf->catalog, err, sizeof(err)) != CAL_OK ||
        db_conf_read_password(&conf->shard, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendard: %s\n", err);
        return -1;
    }
    int level = log_level_parse(conf->log_level);
    if (level < 0) {
        fprintf(stderr, "calendard: [log] level must be debug, info, warn or error\n");
        return -1;
    }
    log_set_level((enum log_level)level);
    if (conf->backoff_max_ms < conf->backoff_base_ms) {
        fprintf(stderr, "calendard: [routing] backoff_max_ms is below backoff_base_ms\n");
        return -1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const char *config = NULL;
    bool check_only = false;
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", no_argument, NULL, 'k'},
                                         {"sample-config", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            check_only = true;
            break;
        case 's':
            conf_print_sample(conf_items, CAL_ARRAY_LEN(conf_items), stdout);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (config == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct calendard_conf conf;
    if (load_config(config, &conf) != 0)
        return 2;
    if (check_only) {
        printf("calendard: %s is valid\n", config);
        return 0;
    }

    /* Every thread inherits the blocked set; only sigwait() below sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct router_conf rconf = {
        .catalog = conf.catalog,
        .shard = conf.shard,
        .pool_size = (unsigned)conf.pool_size,
        .pool_wait_ms = (unsigned)conf.pool_wait_ms,
        .refresh_interval_ms = (unsigned)conf.refresh_interval_ms,
        .breaker_threshold = (unsigned)conf.breaker_threshold,
        .breaker_cooldown_ms = (unsigned)conf.breaker_cooldown_ms,
    };
    struct service_conf sconf = {
        .max_attempts = (unsigned)conf.max_attempts,
        .backoff_base_ms = (unsigned)conf.backoff_base_ms,
        .backoff_max_ms = (unsigned)conf.backoff_max_ms,
        .max_search_listings = (unsigned)conf.max_search_listings,
        .deadline_ms = (unsigned)conf.deadline_ms,
    };
    char err[512];
    struct avail *avail = avail_create(&conf.avail, err, sizeof(err));
    if (avail == NULL) {
        log_error("cannot start", "error=\"%s\"", err);
        return 2;
    }
    struct router *router = router_create(&rconf);
    struct service *svc = service_create(&sconf, router, avail);
    struct http_server *srv = http_start(&conf.http, svc, err, sizeof(err));
    if (srv == NULL) {
        log_error("cannot start", "error=\"%s\"", err);
        service_destroy(svc);
        router_destroy(router);
        avail_destroy(avail);
        return 1;
    }
    log_info("listening", "addr=%s port=%d pid=%d", conf.http.listen, conf.http.port,
             (int)getpid());
    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("stopping", "signal=%d", sig);
    http_stop(srv);
    service_destroy(svc);
    router_destroy(router);
    avail_destroy(avail);
    explicit_bzero(&conf, sizeof(conf));
    log_info("stopped", "%s", "");
    return 0;
}
