/* calendar-stress: drives calendard with concurrent bookings, cancels, host
 * blocks, replays and dropped replies, then verifies every shard with SQL.
 * Exit 0 clean, 1 when an invariant broke, 2 on usage or setup errors. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/lib/http.h"
#include "tests/lib/testenv.h"
#include "tests/stress/stress_cache.h"
#include "tests/stress/stress_load.h"
#include "tests/stress/stress_verify.h"

#define EXIT_BROKEN 1
#define EXIT_USAGE 2
#define EXIT_UNTESTED 3
#define MAX_RECORDS 400000         /* keys remembered per run, over all clients */
#define WINDOW_OFFSET 30           /* the booking window starts this many days from today */
#define SETUP_MIN_S 30             /* creating the listings may take --duration, at least this */
#define CACHE_WAIT_MS 10000        /* the cache check, reads through calendard included */
#define CACHE_INJECT_WAIT_MS 20000 /* --inject stale_cache: waiting for the lag, planting */
#define SETTLE_DEFAULT_S 30        /* waiting for calendard's requests in flight to end */
#define SETTLE_POLL_MS 20
#define SETTLE_QUIET_MS 100 /* none in flight for this long: the load's last requests were read */
#define IN_FLIGHT_METRIC "calendard_requests_in_flight"

struct options {
    unsigned clients;
    size_t listings;
    unsigned duration_s; /* 0 = not given */
    uint64_t requests;   /* 0 = not given */
    uint64_t seed;
    int window;
    const char *url;
    const char *stack_env;
    const char *inject;
    unsigned settle_s;
};

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: calendar-stress [options]\n"
            "  --clients N      concurrent client threads (default 16, 1..1024)\n"
            "  --listings M     listings to create and book (default 50, 1..100000)\n"
            "  --duration S     run for S seconds (default 20; 300 as a cap with --requests)\n"
            "  --requests R     stop after R operations in total\n"
            "  --seed N         random seed of the operation mix (default: time)\n"
            "  --window D       nights in the booking window (default 14, 2..300)\n"
            "  --url URL        calendard base url (default CALENDARD_URL of the stack env)\n"
            "  --settle S       after the load, wait up to S seconds (default 30, 0..600; 0:\n"
            "                   no wait) until calendard has had no request in flight, from\n"
            "                   any client, for 100 ms (its /metrics gauge\n"
            "                   " IN_FLIGHT_METRIC "): a request the clients gave up\n"
            "                   on keeps running there and may still commit; the verify must\n"
            "                   see it. Still some after S seconds, or /metrics unanswered\n"
            "                   (a timeout, a 5xx), or a signal meanwhile: the run is\n"
            "                   verified as it stands and exits 3 if nothing broke (not\n"
            "                   verified). A calendard that is down (connection refused) or\n"
            "                   has no such gauge: verified at once\n"
            "  --stack-env FILE stack description (default $STACK_ENV, then var/stack.env)\n"
            "  --inject FAULT   testing the verifier only: corrupt one key of this run (in SQL,\n"
            "                   memcached or the claims) before verifying; the run must\n"
            "                   then exit 1 with the counter of the check the fault aims\n"
            "                   at above zero:\n"
            "                     double_bookings       double_booking, sold_while_held (SQL and\n"
            "                                           what the client saw: a second stay of a\n"
            "                                           cancelled booking's nights, booked and\n"
            "                                           cancelled while it held them)\n"
            "                     lost_acknowledged     lost_ack, delete_ack, shift_dates,\n"
            "                                           lost_refusal, cancel_undone, other_id\n"
            "                     phantom_bookings      phantom, shift_refusal\n"
            "                     night_mismatches      night_mismatch\n"
            "                     duplicate_idempotent  duplicate_key (also routing_mismatches)\n"
            "                     routing_mismatches    wrong_vbucket\n"
            "                     unowned_rows          stray_row\n"
            "                     owner_mismatches      second_owner, owner_elsewhere\n"
            "                     id_collisions         shared_id\n"
            "                     lost_blocks           lost_block, booked_over_block (also\n"
            "                                           night_mismatches)\n"
            "                     phantom_blocks        phantom_block\n"
            "                     price_mismatches      repriced\n"
            "                     lost_blocks           cancelled_sale (in what the client saw,\n"
            "                                           not SQL: a block held under a cancelled\n"
            "                                           booking's night just before its 201)\n"
            "                     price_mismatches      stale_price (in what the client saw: a\n"
            "                                           set_price of a booked night to 1\n"
            "                                           answered 200 just before its 201)\n"
            "                     cache_mismatches      stale_cache\n"
            "                   A row planted outside its listing's shard or vbucket or for\n"
            "                   another listing, and a planted or moved vbucket_owner row, is\n"
            "                   taken back after verifying (tests/stress/selftest.sh runs them)\n"
            "  --help           this text\n"
            "Creating the listings may take --duration (at least 30 s); past that, or on\n"
            "SIGINT or SIGTERM meanwhile, the run stops there and exits 2 (nothing run).\n"
            "SIGINT or SIGTERM ends the load early; the run still verifies and answers.\n"
            "The cache check after it (reads through calendard included) takes at most 10 s\n"
            "(the pass under way finishes); a signal during it, before it decided, ends\n"
            "it, and the run exits 1 if it found a violation, else 3: the cache was not\n"
            "verified.\n"
            "Prints progress to stderr every second and one JSON line on stdout.\n"
            "After the run every shard is read with SQL, and the catalog (CATALOG_DSN): a\n"
            "shard of the catalog missing from SHARD_DSNS (its rows would go unread) exits 2.\n"
            "double_bookings counts pairs of overlapping confirmed reservations, and pairs\n"
            "where one was booked while the other held a night of it, by calendar version\n"
            "(a reservation holds its nights from its booking's version, a cancelled one's\n"
            "from its 201, to its cancel's): a cancel frees only its own nights, so the end\n"
            "state alone does not show a night sold twice once either was cancelled.\n"
            "Exit 1 when any of double_bookings, lost_acknowledged, phantom_bookings,\n"
            "duplicate_idempotent, night_mismatches, routing_mismatches, unowned_rows (rows\n"
            "on a shard that does not own their vbucket), owner_mismatches (vbuckets without\n"
            "exactly one vbucket_owner row across the shards, or owned by another shard than\n"
            "the catalog's map names; run no move meanwhile for these two), id_collisions (a\n"
            "reservation_id of the run held by another listing too, on any shard),\n"
            "lost_blocks (a night a block answered 200 held that is not blocked at the end,\n"
            "with no unblock of it that may have come after the block and, if booked, before\n"
            "the booking, by calendar version (a booking since cancelled: the version of its\n"
            "201): sold over the host's block or freed; or\n"
            "booked before a block of it answered 200), phantom_blocks (a blocked night that\n"
            "no block that may have applied covers, or only ones an unblock answered 200\n"
            "undid), price_mismatches (an acknowledged booking whose total_price SQL does\n"
            "not hold, or that is not the sum of its nights' prices at its 201's version by\n"
            "the set_price answers: a set_price answered 200 at a lower version is paid,\n"
            "one at a higher version is not, one not answered, or answered 500 or 503\n"
            "outcome_unknown, may be; a booking acknowledged only by a replay is held to\n"
            "its SQL row's version),\n"
            "protocol_errors (an answer calendard never gives: a 200/201 booking without\n"
            "reservation_id, a known status or a positive total_price (the run's prices\n"
            "are all positive), a booking answered below 500 with neither 200, 201 nor\n"
            "409, a cancel answered below 500 with anything but 200 \"cancelled\") or\n"
            "cache_mismatches (an availability read right after an own booking not showing\n"
            "it, or a cached value that still differs from the shards after 10 s of passes) is\n"
            "above zero (also when a later read failed: what was found stands); 2 on usage\n"
            "or setup errors; 3 when the run was not verified (the cache could not be read\n"
            "after the SQL checks passed, or calendard still had requests in flight: see\n"
            "--settle) or tested nothing: no booking was confirmed\n"
            "(calendard refused or failed them all), none was refused for a night another\n"
            "booking held (no kept 409 in SQL that another booking overlaps, a host's block\n"
            "does not count: no two bookings competed),\n"
            "cancels were sent and none was acknowledged, blocks (or set_prices) were sent\n"
            "and none was answered 200,\n"
            "or the stack env names memcached (MEMCACHED_SERVERS) and the cache check found\n"
            "no value of the run's listings to compare, even after reading the window of each\n"
            "(of the first 256) through calendard, again before each pass that found nothing,\n"
            "for up to 10 s; else 0.\n");
}

static int
parse_u64(const char *name, const char *arg, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || arg[0] == '-' || v < min || v > max) {
        fprintf(stderr,
                "calendar-stress: --%s wants an integer in [%" PRIu64 ", %" PRIu64 "], got '%s'\n",
                name, min, max, arg);
        return -1;
    }
    *out = v;
    return 0;
}

static int
parse_options(int argc, char **argv, struct options *opt)
{
    static const struct option longopts[] = {
        {"clients", required_argument, NULL, 'c'},  {"listings", required_argument, NULL, 'l'},
        {"duration", required_argument, NULL, 'd'}, {"requests", required_argument, NULL, 'r'},
        {"seed", required_argument, NULL, 's'},     {"window", required_argument, NULL, 'w'},
        {"url", required_argument, NULL, 'u'},      {"stack-env", required_argument, NULL, 'e'},
        {"inject", required_argument, NULL, 'i'},   {"settle", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    uint64_t v;
    int ch;

    memset(opt, 0, sizeof(*opt));
    opt->clients = 16;
    opt->listings = 50;
    opt->window = 14;
    opt->settle_s = SETTLE_DEFAULT_S;
    opt->seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (parse_u64("clients", optarg, 1, 1024, &v) != 0) {
                return -1;
            }
            opt->clients = (unsigned)v;
            break;
        case 'l':
            if (parse_u64("listings", optarg, 1, 100000, &v) != 0) {
                return -1;
            }
            opt->listings = (size_t)v;
            break;
        case 'd':
            if (parse_u64("duration", optarg, 1, 3600, &v) != 0) {
                return -1;
            }
            opt->duration_s = (unsigned)v;
            break;
        case 'r':
            if (parse_u64("requests", optarg, 1, 100000000, &v) != 0) {
                return -1;
            }
            opt->requests = v;
            break;
        case 's':
            if (parse_u64("seed", optarg, 0, UINT64_MAX, &v) != 0) {
                return -1;
            }
            opt->seed = v;
            break;
        case 'w':
            if (parse_u64("window", optarg, 2, 300, &v) != 0) {
                return -1;
            }
            opt->window = (int)v;
            break;
        case 'u':
            opt->url = optarg;
            break;
        case 'S':
            if (parse_u64("settle", optarg, 0, 600, &v) != 0) {
                return -1;
            }
            opt->settle_s = (unsigned)v;
            break;
        case 'e':
            opt->stack_env = optarg;
            break;
        case 'i':
            if (strcmp(optarg, STRESS_CACHE_FAULT) != 0 && !stress_verify_has_fault(optarg)) {
                fprintf(stderr, "calendar-stress: unknown --inject fault '%s' (see --help)\n",
                        optarg);
                return -1;
            }
            opt->inject = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "calendar-stress: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (opt->duration_s == 0) {
        opt->duration_s = opt->requests != 0 ? 300 : 20;
    }
    return 0;
}

static void
progress(const struct stress_stats *stats, double t)
{
    fprintf(stderr,
            "t=%.0fs attempts=%" PRIu64 " confirmed=%" PRIu64 " conflicts=%" PRIu64
            " cancelled=%" PRIu64 " replays=%" PRIu64 " drops=%" PRIu64 " errors=%" PRIu64 "\n",
            t, (uint64_t)atomic_load(&stats->attempts), (uint64_t)atomic_load(&stats->confirmed),
            (uint64_t)atomic_load(&stats->conflicts), (uint64_t)atomic_load(&stats->cancelled),
            (uint64_t)atomic_load(&stats->replays), (uint64_t)atomic_load(&stats->drops),
            (uint64_t)atomic_load(&stats->errors));
}

/* What requests_in_flight() may answer besides a count. */
#define IN_FLIGHT_UNKNOWN (-1)    /* calendard is down, or has no such gauge: it cannot tell */
#define IN_FLIGHT_UNANSWERED (-2) /* the scrape timed out or got a 5xx: calendard is busy */

/* calendard's requests in flight besides this scrape, from its /metrics;
 * else IN_FLIGHT_UNKNOWN or IN_FLIGHT_UNANSWERED, with err set. */
static long long
requests_in_flight(struct http_client *http, const char *base, char *err, size_t errlen)
{
    static const char pat[] = "\n" IN_FLIGHT_METRIC " ";
    struct http_response resp;
    char url[512];
    long long n;

    snprintf(url, sizeof(url), "%s/metrics", base);
    cal_status st = http_request(http, "GET", url, NULL, NULL, 0, 2000, &resp, err, errlen);
    const char *at =
        st == CAL_OK && resp.status == 200 && resp.body != NULL ? strstr(resp.body, pat) : NULL;
    if (st != CAL_OK) {
        n = st == CAL_EUNAVAIL ? IN_FLIGHT_UNKNOWN : IN_FLIGHT_UNANSWERED;
    } else if (at != NULL) {
        n = atoll(at + strlen(pat)) - 1;
        n = n > 0 ? n : 0; /* the scrape is one; a calendard that counts it not, none */
    } else {
        snprintf(err, errlen, "/metrics answered %ld%s", resp.status,
                 resp.status == 200 ? " without " IN_FLIGHT_METRIC : "");
        n = resp.status >= 500 ? IN_FLIGHT_UNANSWERED : IN_FLIGHT_UNKNOWN;
    }
    http_response_deinit(&resp);
    return n;
}

/* Waits up to settle_s until calendard has had no request in flight for
 * SETTLE_QUIET_MS: one the clients gave up on (a dropped reply, a timeout)
 * keeps running there and may still commit, after a verify that would then
 * not have seen it; one they sent just before may not have been read yet.
 * Returns 0 when none is left; IN_FLIGHT_UNKNOWN when calendard cannot tell
 * (said on stderr), or settle_s is 0 (not looked at); else, after settle_s
 * or a stop signal, how many still ran, or IN_FLIGHT_UNANSWERED when
 * calendard did not answer then. */
static long long
settle(const char *base, unsigned settle_s)
{
    struct http_client *http;
    double start = stress_load_now(), next = start + 1.0, quiet_since = -1;
    unsigned stops = stress_load_stops();
    char err[256] = "";
    long long n;

    if (settle_s == 0 || (http = http_client_create()) == NULL) {
        return IN_FLIGHT_UNKNOWN;
    }
    for (;;) {
        n = requests_in_flight(http, base, err, sizeof(err));
        double now = stress_load_now();
        if (n == IN_FLIGHT_UNKNOWN) {
            fprintf(stderr,
                    "calendar-stress: cannot tell calendard's requests in flight (%s): "
                    "verifying at once\n",
                    err);
            break;
        }
        quiet_since = n != 0 ? -1 : quiet_since >= 0 ? quiet_since : now;
        if (quiet_since >= 0 && now - quiet_since >= SETTLE_QUIET_MS / 1000.0) {
            if (now - start >= 0.5) {
                fprintf(stderr,
                        "calendar-stress: calendard's requests in flight ended after %.1f s\n",
                        now - start);
            }
            break;
        }
        bool stopped = stress_load_stops() != stops;
        if (now - start >= settle_s || stopped) {
            if (n == 0) {
                break; /* none now, if not for long */
            }
            if (n > 0) {
                fprintf(stderr,
                        "calendar-stress: %lld requests still in flight at calendard after %.1f "
                        "s (%s): one may commit after the verify\n",
                        n, now - start, stopped ? "stopped by a signal" : "--settle");
            } else {
                fprintf(stderr,
                        "calendar-stress: calendard did not answer its /metrics after %.1f s "
                        "(%s; %s): requests may still be in flight\n",
                        now - start, err, stopped ? "stopped by a signal" : "--settle");
            }
            break;
        }
        if (now >= next) {
            if (n > 0) {
                fprintf(stderr,
                        "calendar-stress: waiting for calendard's %lld requests in flight (a "
                        "request the clients gave up on may still commit)\n",
                        n);
            } else if (n == IN_FLIGHT_UNANSWERED) {
                fprintf(stderr, "calendar-stress: waiting for calendard's /metrics (%s)\n", err);
            }
            next += 1.0;
        }
        struct timespec ts = {0, SETTLE_POLL_MS * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    http_client_destroy(http);
    return n;
}

/* Runs fn on every client thread and waits; returns -1 if a thread failed to start. */
static int
run_threads(struct stress_client *clients, unsigned n, void *(*fn)(void *), int with_progress,
            const struct stress_stats *stats, double start)
{
    pthread_t *threads = calloc(n, sizeof(*threads));
    unsigned started = 0;
    int rc = 0;

    if (threads == NULL) {
        return -1;
    }
    for (; started < n; started++) {
        if (pthread_create(&threads[started], NULL, fn, &clients[started]) != 0) {
            rc = -1;
            break;
        }
    }
    if (with_progress && rc == 0) {
        double next = start + 1.0;

        /* Bounded: clients stop at the deadline plus their retry grace. */
        while (atomic_load(&stats->clients_done) < n) {
            struct timespec ts = {0, 50 * 1000 * 1000};

            nanosleep(&ts, NULL);
            if (stress_load_now() >= next) {
                progress(stats, next - start);
                next += 1.0;
            }
        }
    }
    for (unsigned i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    free(threads);
    return rc;
}

/* Did creating the listings fail or stop early? Says so (nothing was run
 * or verified then). */
static int
setup_failed(const struct stress_client *clients, unsigned n, const struct stress_conf *conf,
             unsigned duration_s)
{
    size_t created = 0;
    int failed = 0, cut = 0;

    for (unsigned i = 0; i < n; i++) {
        created += clients[i].created;
        failed |= clients[i].setup_failed;
        cut |= clients[i].setup_cut;
    }
    if (cut & STRESS_SETUP_STOPPED) {
        fprintf(stderr,
                "calendar-stress: creating listings stopped by a signal after %zu of %zu: "
                "nothing was run or verified\n",
                created, conf->nlistings);
    } else if (cut & STRESS_SETUP_DEADLINE) {
        fprintf(stderr,
                "calendar-stress: creating listings hit its deadline (%u s: --duration, at "
                "least %d) after %zu of %zu: nothing was run or verified\n",
                duration_s > SETUP_MIN_S ? duration_s : SETUP_MIN_S, SETUP_MIN_S, created,
                conf->nlistings);
    } else if (failed) {
        fprintf(stderr, "calendar-stress: creating listings failed after %zu of %zu\n", created,
                conf->nlistings);
    }
    return failed;
}

/* Were cancels sent and none acknowledged? Then the checks of acknowledged
 * cancels had nothing to check. */
static int
cancels_untested(const struct stress_stats *stats)
{
    return atomic_load(&stats->cancels_sent) > 0 && atomic_load(&stats->cancelled) == 0;
}

/* Were blocks sent and none answered 200? Then lost_blocks had nothing to check. */
static int
blocks_untested(const struct stress_verdict *verdict)
{
    return verdict->blocks_sent > 0 && verdict->blocks_held == 0;
}

/* Were set_prices sent and none answered 200? Then every booking paid the
 * default, and price_mismatches checked totals against no price change. */
static int
prices_untested(const struct stress_verdict *verdict)
{
    return verdict->prices_sent > 0 && verdict->prices_held == 0;
}

/* Did no two bookings ever compete for a night? A refusal kept in SQL (409
 * nights_unavailable) whose stay another booking overlaps is one that lost a
 * night to it (one over a host's block alone is not); without one,
 * double_bookings = 0 says nothing (a window too wide, too few clients). */
static int
competition_untested(const struct stress_stats *stats, const struct stress_verdict *verdict)
{
    return atomic_load(&stats->confirmed) > 0 && verdict->sql_refused_competing == 0;
}

/* Did the run test anything? It confirmed a booking, refused one that
 * competed for a night, acknowledged a cancel and held a block if it sent
 * any, and found a cached value to compare when the stack has memcached. */
static int
tested(const struct stress_stats *stats, const struct stress_verdict *verdict)
{
    return atomic_load(&stats->confirmed) > 0 && !competition_untested(stats, verdict) &&
           !cancels_untested(stats) && !blocks_untested(verdict) && !prices_untested(verdict) &&
           verdict->cache_compared != 0;
}

/* unverified: the cache check was stopped before it could decide, or a
 * check could not read, or requests were still in flight when the verify
 * began (in_flight of them, < 0 when calendard could not tell). */
static void
print_result(const struct stress_conf *conf, const struct stress_stats *stats,
             const struct stress_verdict *verdict, double duration, int unverified,
             long long in_flight)
{
    json_t *out = json_object();
    uint64_t confirmed = atomic_load(&stats->confirmed);
    uint64_t attempts = atomic_load(&stats->attempts);
    char *line;

#define SET_U(name, v) json_object_set_new(out, name, json_integer((json_int_t)(v)))
    SET_U("attempts", attempts);
    SET_U("requests", atomic_load(&stats->requests));
    SET_U("confirmed", confirmed);
    SET_U("conflicts", atomic_load(&stats->conflicts));
    SET_U("cancelled", atomic_load(&stats->cancelled));
    SET_U("errors", atomic_load(&stats->errors));
    SET_U("overloaded", atomic_load(&stats->overloaded));
    SET_U("cancels_sent", atomic_load(&stats->cancels_sent));
    SET_U("replays", atomic_load(&stats->replays));
    SET_U("drops", atomic_load(&stats->drops));
    SET_U("drops_processed", atomic_load(&stats->drops_processed));
    SET_U("host_ops", atomic_load(&stats->host_ops));
    SET_U("reads", atomic_load(&stats->reads));
    SET_U("unresolved", atomic_load(&stats->unresolved));
    json_object_set_new(out, "in_flight_at_verify",
                        in_flight >= 0 ? json_integer(in_flight) : json_null());
    SET_U("double_bookings", verdict->double_bookings);
    SET_U("lost_acknowledged", verdict->lost_acknowledged);
    SET_U("phantom_bookings", verdict->phantom_bookings);
    SET_U("duplicate_idempotent", verdict->duplicate_idempotent);
    SET_U("replay_mismatches", atomic_load(&stats->replay_mismatches)); /* included above */
    SET_U("night_mismatches", verdict->night_mismatches);
    SET_U("routing_mismatches", verdict->routing_mismatches);
    SET_U("unowned_rows", verdict->unowned_rows);
    SET_U("owner_mismatches", verdict->owner_mismatches);
    SET_U("id_collisions", verdict->id_collisions);
    SET_U("protocol_errors", verdict->protocol_errors);
    SET_U("lost_blocks", verdict->lost_blocks);
    SET_U("phantom_blocks", verdict->phantom_blocks);
    SET_U("blocks_sent", verdict->blocks_sent);
    SET_U("blocks_held", verdict->blocks_held);
    SET_U("price_mismatches", verdict->price_mismatches);
    SET_U("prices_sent", verdict->prices_sent);
    SET_U("prices_held", verdict->prices_held);
    SET_U("prices_checked", verdict->prices_checked);
    SET_U("sql_reservations", verdict->sql_reservations);
    SET_U("sql_refused", verdict->sql_refused);
    SET_U("sql_refused_competing", verdict->sql_refused_competing);
    SET_U("sql_confirmed", verdict->sql_confirmed);
    SET_U("sql_booked_nights", verdict->sql_booked_nights);
    SET_U("sql_blocked_nights", verdict->sql_blocked_nights);
    SET_U("cache_checks", atomic_load(&stats->cache_checks));
    json_object_set_new(out, "cache_mismatches",
                        verdict->cache_mismatches < 0 ? json_null()
                                                      : json_integer(verdict->cache_mismatches));
    json_object_set_new(out, "cache_compared",
                        verdict->cache_compared < 0 ? json_null()
                                                    : json_integer(verdict->cache_compared));
    json_object_set_new(out, "duration_s", json_real(duration));
    json_object_set_new(out, "bookings_per_s",
                        json_real(duration > 0 ? (double)confirmed / duration : 0));
    json_object_set_new(out, "attempts_per_s",
                        json_real(duration > 0 ? (double)attempts / duration : 0));
    SET_U("clients", conf->clients);
    SET_U("listings", conf->nlistings);
    SET_U("listing_base", conf->listing_base);
    json_object_set_new(out, "seed", json_integer((json_int_t)(conf->seed & INT64_MAX)));
    json_object_set_new(
        out, "ok",
        json_boolean(!stress_verify_failed(verdict) && tested(stats, verdict) && !unverified));
#undef SET_U
    line = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (line != NULL) {
        printf("%s\n", line);
        fflush(stdout);
        free(line);
    }
    json_decref(out);
}

static void
on_stop_signal(int sig)
{
    (void)sig;
    stress_load_stop();
}

int
main(int argc, char **argv)
{
    struct options opt;
    struct testenv env;
    struct stress_conf conf;
    static struct stress_stats stats;
    struct stress_client *clients = NULL;
    struct stress_record *all = NULL;
    struct stress_hostop *hostops = NULL;
    size_t nhostops = 0;
    struct stress_claims claims;
    struct stress_verdict verdict;
    struct stress_injected injected = {.shard = -1};
    size_t cap, total = 0;
    double duration;
    int cache_unverified = 0;
    int unverified = 0;      /* the verifier or the cache check could not read all it needed */
    long long in_flight = 0; /* calendard's, when the verify began: settle() */
    int unsettled = 0;       /* some, or calendard did not answer then */
    char err[2048];
    int rc = EXIT_USAGE;

    if (parse_options(argc, argv, &opt) != 0) {
        return EXIT_USAGE;
    }
    /* From here on a stop signal ends the load, which may not have begun. */
    struct sigaction stop = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&stop.sa_mask);
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    if (testenv_load(&env, opt.stack_env, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-stress: %s\n", err);
        return EXIT_USAGE;
    }
    if (opt.inject != NULL && strcmp(opt.inject, STRESS_CACHE_FAULT) == 0 &&
        env.memcached_servers[0] == '\0') {
        fprintf(stderr, "calendar-stress: --inject %s needs MEMCACHED_SERVERS in %s\n", opt.inject,
                env.path);
        return EXIT_USAGE;
    }
    memset(&conf, 0, sizeof(conf));
    snprintf(conf.url, sizeof(conf.url), "%s", opt.url != NULL ? opt.url : env.calendard_url);
    if (!testenv_url_is_loopback(conf.url)) {
        fprintf(stderr, "calendar-stress: --url must be http://127.0.0.1[:port], got %s\n",
                conf.url);
        return EXIT_USAGE;
    }
    for (size_t n = strlen(conf.url); n > 0 && conf.url[n - 1] == '/'; n--) {
        conf.url[n - 1] = '\0';
    }
    http_global_init();
    /* Listing ids from a random base so concurrent and later runs never share. */
    conf.listing_base = testenv_random48() & ~0xfffffULL;
    if (conf.listing_base == 0) {
        conf.listing_base = 1ULL << 20;
    }
    conf.nlistings = opt.listings;
    conf.first_day = testenv_today() + WINDOW_OFFSET;
    conf.window = opt.window;
    conf.clients = opt.clients;
    conf.max_ops = opt.requests;
    conf.seed = opt.seed;
    snprintf(conf.tag, sizeof(conf.tag), "st%" PRIx64, conf.listing_base >> 20);

    cap = (opt.requests != 0 && opt.requests < MAX_RECORDS ? opt.requests : MAX_RECORDS) /
              opt.clients +
          1;
    clients = calloc(opt.clients, sizeof(*clients));
    if (clients == NULL) {
        fprintf(stderr, "calendar-stress: out of memory\n");
        return EXIT_USAGE;
    }
    for (unsigned i = 0; i < opt.clients; i++) {
        if (stress_load_client_init(&clients[i], &conf, &stats, i, cap) != 0) {
            fprintf(stderr, "calendar-stress: out of memory\n");
            goto out;
        }
    }
    fprintf(stderr,
            "calendar-stress: url=%s clients=%u listings=%zu [%" PRIu64 "..] duration=%us "
            "requests=%" PRIu64 " seed=%" PRIu64 " window=%d\n",
            conf.url, conf.clients, conf.nlistings, conf.listing_base, opt.duration_s, opt.requests,
            conf.seed, conf.window);

    conf.setup_deadline =
        stress_load_now() + (opt.duration_s > SETUP_MIN_S ? opt.duration_s : SETUP_MIN_S);
    if (run_threads(clients, opt.clients, stress_load_create_listings, 0, &stats, 0) != 0) {
        fprintf(stderr, "calendar-stress: cannot start threads\n");
        goto out;
    }
    if (setup_failed(clients, opt.clients, &conf, opt.duration_s)) {
        goto out;
    }

    conf.start = stress_load_now();
    conf.deadline = conf.start + opt.duration_s;
    if (run_threads(clients, opt.clients, stress_load_client_run, 1, &stats, conf.start) != 0) {
        fprintf(stderr, "calendar-stress: cannot start threads\n");
        goto out;
    }
    duration = stress_load_now() - conf.start;
    progress(&stats, duration);
    in_flight = settle(conf.url, opt.settle_s);
    unsettled = in_flight > 0 || in_flight == IN_FLIGHT_UNANSWERED;

    for (unsigned i = 0; i < opt.clients; i++) {
        total += clients[i].nrecords;
        nhostops += clients[i].nhostops;
    }
    all = calloc(total + 1, sizeof(*all));
    hostops = calloc(nhostops + 1, sizeof(*hostops));
    if (all == NULL || hostops == NULL) {
        fprintf(stderr, "calendar-stress: out of memory\n");
        goto out;
    }
    total = nhostops = 0;
    for (unsigned i = 0; i < opt.clients; i++) {
        memcpy(all + total, clients[i].records, clients[i].nrecords * sizeof(*all));
        total += clients[i].nrecords;
        if (clients[i].nhostops > 0) { /* hostops is NULL when none was sent */
            memcpy(hostops + nhostops, clients[i].hostops, clients[i].nhostops * sizeof(*hostops));
            nhostops += clients[i].nhostops;
        }
    }
    claims = (struct stress_claims){.records = all,
                                    .nrecords = total,
                                    .caprecords = total + 1,
                                    .hostops = hostops,
                                    .nhostops = nhostops,
                                    .caphostops = nhostops + 1,
                                    .replay_mismatches = atomic_load(&stats.replay_mismatches)};
    if (opt.inject != NULL && stress_verify_has_fault(opt.inject) &&
        stress_verify_inject(&env, opt.inject, &claims, &injected, err, sizeof(err)) != 0) {
        fprintf(stderr, "calendar-stress: --inject: %s\n", err);
        goto out;
    }
    if (stress_verify_run(&env, &conf, &claims, &verdict, err, sizeof(err)) != 0) {
        fprintf(stderr, "calendar-stress: cannot verify: %s\n", err);
        if (!stress_verify_failed(&verdict)) {
            goto out;
        }
        /* The checks that ran had every shard's rows: what they found stands. */
        unverified = 1;
    }
    verdict.protocol_errors = atomic_load(&stats.protocol_errors);
    if (atomic_load(&stats.cache_checks) > 0) {
        verdict.cache_mismatches = (int64_t)atomic_load(&stats.cache_mismatches);
    }
    /* memcached must agree with SQL once CDC caught up: passes until one is
     * clean, for at most CACHE_WAIT_MS (the lag itself is not looked at). */
    if (env.memcached_servers[0] != '\0') {
        int64_t stale = 0;
        uint64_t compared = 0;
        unsigned wait_ms = CACHE_WAIT_MS;
        int crc;
        if (opt.inject != NULL && strcmp(opt.inject, STRESS_CACHE_FAULT) == 0) {
            if (stress_cache_inject(&env, &conf, CACHE_INJECT_WAIT_MS, err, sizeof(err)) != 0) {
                fprintf(stderr, "calendar-stress: --inject: %s\n", err);
                goto out;
            }
            wait_ms = 1000; /* the injection waited for the lag to drain already */
        }
        crc = stress_cache_check(&env, &conf, wait_ms, &stale, &compared, err, sizeof(err));
        if (crc == -2) {
            fprintf(stderr, "calendar-stress: cache check: %s: the cache was not verified\n", err);
            cache_unverified = 1;
        } else if (crc != 0) {
            /* Not a setup error: a violation found above must still fail the run. */
            fprintf(stderr,
                    "calendar-stress: cache check could not read: %s: the cache was not "
                    "verified\n",
                    err);
            unverified = 1;
        } else {
            fprintf(stderr,
                    "calendar-stress: cache check: %llu cached values compared, %lld stale\n",
                    (unsigned long long)compared, (long long)stale);
            verdict.cache_mismatches =
                (verdict.cache_mismatches > 0 ? verdict.cache_mismatches : 0) + stale;
            verdict.cache_compared = (int64_t)compared;
        }
    }
    print_result(&conf, &stats, &verdict, duration, cache_unverified || unverified || unsettled,
                 in_flight);
    rc = stress_verify_failed(&verdict) ? EXIT_BROKEN : 0;
    if (rc == 0 && in_flight > 0) {
        fprintf(stderr,
                "calendar-stress: %lld requests were still in flight at calendard when the "
                "verify began: the run is not verified\n",
                in_flight);
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && unsettled) {
        fprintf(stderr, "calendar-stress: calendard did not answer its /metrics when the verify "
                        "began: the run is not verified\n");
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && (cache_unverified || unverified)) {
        fprintf(stderr, "calendar-stress: %s: the run is not verified\n",
                unverified ? "the cache could not be read" : "the cache check was stopped");
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && competition_untested(&stats, &verdict)) {
        fprintf(stderr, "calendar-stress: no booking was refused for a night another held (no kept "
                        "409 in SQL that another booking overlaps): no two bookings competed, "
                        "double_bookings tested nothing; use fewer listings, a shorter --window "
                        "or more clients\n");
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && atomic_load(&stats.confirmed) == 0) {
        fprintf(stderr, "calendar-stress: no booking was confirmed: the run tested nothing\n");
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && cancels_untested(&stats)) {
        fprintf(stderr,
                "calendar-stress: %llu cancels sent and none acknowledged: the checks of "
                "acknowledged cancels tested nothing\n",
                (unsigned long long)atomic_load(&stats.cancels_sent));
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && blocks_untested(&verdict)) {
        fprintf(stderr,
                "calendar-stress: %llu blocks sent and none answered 200: lost_blocks tested "
                "nothing\n",
                (unsigned long long)verdict.blocks_sent);
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && prices_untested(&verdict)) {
        fprintf(stderr,
                "calendar-stress: %llu set_prices sent and none answered 200: price_mismatches "
                "checked no price change\n",
                (unsigned long long)verdict.prices_sent);
        rc = EXIT_UNTESTED;
    } else if (rc == 0 && verdict.cache_compared == 0) {
        fprintf(stderr,
                "calendar-stress: the cache check found no value of the run's listings in "
                "memcached (%s), even after reading them through calendard: it tested "
                "nothing; is calendard's cache on and pointed at that memcached?\n",
                env.memcached_servers);
        rc = EXIT_UNTESTED;
    }
out:
    if (stress_verify_restore(&env, &injected, err, sizeof(err)) != 0) {
        fprintf(stderr,
                "calendar-stress: --inject: could not take back the row planted on shard "
                "%d: %s\n",
                injected.shard, err);
    }
    for (unsigned i = 0; i < opt.clients; i++) {
        stress_load_client_deinit(&clients[i]);
    }
    free(clients);
    free(all);
    free(hostops);
    return rc;
}
