/* calendard: parses arguments, loads the config, wires router, service and
 * HTTP front, and runs until SIGINT or SIGTERM. */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "calendard/config.h"
#include "common/cli.h"
#include "calendard/http.h"
#include "calendard/router.h"
#include "calendard/service.h"
#include "common/log.h"
#include "common/util.h"

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

int
main(int argc, char **argv)
{
    const char *config;
    enum cli_action action = cli_parse(argc, argv, usage, config_items, config_nitems, &config);
    if (action == CLI_EXIT_OK)
        return 0;
    if (action == CLI_EXIT_USAGE)
        return 2;
    bool check_only = action == CLI_CHECK;
    struct calendard_conf conf;
    char err[512];
    if (config_load(config, &conf, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendard: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)log_level_parse(conf.log_level));
    if (check_only) {
        printf("calendard: %s is valid\n", config);
        return 0;
    }

    /* A batch of searches allocates and frees a few hundred KiB of calendar
     * rows; with glibc's default thresholds each free trimmed the loop's
     * heap and the next batch page-faulted it back in. Set both: fixing one
     * stops glibc from raising the other by itself. */
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);

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
        .batch_max = (unsigned)conf.batch_max,
        .batch_lanes = (unsigned)conf.batch_lanes,
        .catalog = conf.catalog,
    };
    struct avail *avail = avail_create(&conf.avail, err, sizeof(err));
    if (avail == NULL) {
        log_error("cannot start", "error=\"%s\"", err);
        return 2;
    }
    struct router *router = router_create(&rconf);
    struct service *svc = service_create(&sconf, router, avail);
    conf.http.cache_timeout_ms = conf.avail.cache.timeout_ms;
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
