/* calendar-bench: one measured run per invocation against a running local
 * stack (seed, book, warm, read), or the report over the runs' JSON lines.
 * tests/bench/run.sh drives it; see docs/benchmarks.md.
 * Exit 0 on success, 1 when a run failed, 2 on usage errors. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cache.h"
#include "common/cachekey.h"
#include "common/date.h"
#include "common/util.h"
#include "tests/bench/bench.h"
#include "tests/bench/cdc_probe.h"
#include "tests/bench/http_load.h"
#include "tests/bench/raw_booking.h"
#include "tests/bench/raw_reads.h"
#include "tests/bench/report.h"
#include "tests/bench/seed.h"
#include "tests/bench/vbseed.h"
#include "tests/lib/http.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define MAX_SEARCH 1000

struct options {
    const char *mode;
    const char *stack_env;
    const char *target;   /* calendard | raw */
    const char *workload; /* low | high (book); single | search50 (read) */
    const char *pids;
    const char *metrics_url; /* the CDC invalidator's /metrics */
    const char *runs;        /* report: JSONL of the runs */
    const char *out_dir;     /* report: where the gnuplot data goes */
    unsigned conc, threads, batch, max_nights, blocked;
    double secs, warmup, rate;
    uint64_t first, count, seed, max_requests;
    int day, horizon; /* offsets from today */
    uint64_t cdc_first, cdc_count;
    int cdc_day;
};

/* What the window callbacks sample, on the coordinating thread. */
struct sampler {
    struct bench_cpu cpu[2];
    const char *metrics_url; /* calendard's /metrics, or NULL for raw runs */
    struct http_client *client;
    double retries[2], conflicts[2], hits[2], misses[2], cache_errors[2];
    bool sampled[2]; /* /metrics answered at the window's start and end */
    double txns[2], txn_bookings[2], reads[2], read_bookings[2];
    struct bench_speed speed; /* the machine's speed over the window */
};

struct book_ctx {
    struct bench_stays stays;
    uint64_t tag;
    unsigned port;
};

struct read_ctx {
    uint64_t first, count;
    unsigned batch, port;
    char from[11], to[11];
};

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: calendar-bench MODE [options]  (modes: seed, book, warm, read, report,\n"
            "                                        seed-vbucket)\n"
            "  seed   --first ID --count N [--blocked K --day D --horizon H]\n"
            "         listings straight into the shards (K blocked nights in [today+D, +H))\n"
            "  book   --target calendard|raw --workload NAME --first ID --count N\n"
            "         --day D --horizon H [--max-nights 3] --conc C --secs S [--warmup W]\n"
            "         [--cdc-first ID --cdc-count N --cdc-day D --invalidator-metrics URL]\n"
            "  warm   --first ID --count N --day D --horizon H   (fill the cache via search)\n"
            "  read   --target calendard|raw --workload single|search50 --first ID --count N\n"
            "         --day D --horizon H --conc C --secs S [--batch 50] [--rate R]\n"
            "         (--rate: open loop, R requests/s offered over the C connections,\n"
            "         latency from when each was due; the run's phase is \"paced\")\n"
            "  report --runs FILE --out DIR   table, data files and the final JSON line\n"
            "  seed-vbucket --target calendard --first VBUCKET --seed FIRST_ID --count N --day D\n"
            "         N listings with nights and reservations in one vbucket, to time a move\n"
            "common:  --stack-env FILE (default $STACK_ENV, var/stack.env), --pids\n"
            "         name=pid,... (CPU of the stack's processes), --seed N, --threads T\n"
            "         (HTTP load threads, default 1), --max-requests N (bound, default 5e6)\n"
            "Each measured run prints one JSON line on stdout.\n");
}

static bool
parse_args(int argc, char **argv, struct options *o)
{
    enum {
        O_STACK = 256,
        O_TARGET,
        O_WORKLOAD,
        O_PIDS,
        O_METRICS,
        O_RUNS,
        O_OUT,
        O_CONC,
        O_THREADS,
        O_BATCH,
        O_MAXN,
        O_BLOCKED,
        O_SECS,
        O_WARMUP,
        O_FIRST,
        O_COUNT,
        O_SEED,
        O_MAXREQ,
        O_DAY,
        O_HORIZON,
        O_CDC_FIRST,
        O_CDC_COUNT,
        O_CDC_DAY,
        O_RATE,
        O_HELP
    };
    static const struct option longopts[] = {
        {"stack-env", required_argument, NULL, O_STACK},
        {"target", required_argument, NULL, O_TARGET},
        {"workload", required_argument, NULL, O_WORKLOAD},
        {"pids", required_argument, NULL, O_PIDS},
        {"invalidator-metrics", required_argument, NULL, O_METRICS},
        {"runs", required_argument, NULL, O_RUNS},
        {"out", required_argument, NULL, O_OUT},
        {"conc", required_argument, NULL, O_CONC},
        {"threads", required_argument, NULL, O_THREADS},
        {"batch", required_argument, NULL, O_BATCH},
        {"max-nights", required_argument, NULL, O_MAXN},
        {"blocked", required_argument, NULL, O_BLOCKED},
        {"secs", required_argument, NULL, O_SECS},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"first", required_argument, NULL, O_FIRST},
        {"count", required_argument, NULL, O_COUNT},
        {"seed", required_argument, NULL, O_SEED},
        {"max-requests", required_argument, NULL, O_MAXREQ},
        {"day", required_argument, NULL, O_DAY},
        {"horizon", required_argument, NULL, O_HORIZON},
        {"cdc-first", required_argument, NULL, O_CDC_FIRST},
        {"cdc-count", required_argument, NULL, O_CDC_COUNT},
        {"cdc-day", required_argument, NULL, O_CDC_DAY},
        {"rate", required_argument, NULL, O_RATE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int ch;
    memset(o, 0, sizeof(*o));
    o->target = "calendard";
    o->workload = "low";
    o->conc = 1;
    o->threads = 1;
    o->batch = 50;
    o->max_nights = 3;
    o->secs = 3;
    o->warmup = 0.5;
    o->seed = 0; /* 0 = random */
    o->max_requests = 5000000;
    o->day = 1;
    o->horizon = 365;
    o->cdc_day = 600;
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        return false;
    }
    o->mode = argv[1];
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case O_STACK:
            o->stack_env = optarg;
            break;
        case O_TARGET:
            o->target = optarg;
            break;
        case O_WORKLOAD:
            o->workload = optarg;
            break;
        case O_PIDS:
            o->pids = optarg;
            break;
        case O_METRICS:
            o->metrics_url = optarg;
            break;
        case O_RUNS:
            o->runs = optarg;
            break;
        case O_OUT:
            o->out_dir = optarg;
            break;
        case O_CONC:
            o->conc = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_THREADS:
            o->threads = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_BATCH:
            o->batch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_MAXN:
            o->max_nights = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_BLOCKED:
            o->blocked = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case O_SECS:
            o->secs = strtod(optarg, NULL);
            break;
        case O_WARMUP:
            o->warmup = strtod(optarg, NULL);
            break;
        case O_FIRST:
            o->first = strtoull(optarg, NULL, 10);
            break;
        case O_COUNT:
            o->count = strtoull(optarg, NULL, 10);
            break;
        case O_SEED:
            o->seed = strtoull(optarg, NULL, 10);
            break;
        case O_MAXREQ:
            o->max_requests = strtoull(optarg, NULL, 10);
            break;
        case O_DAY:
            o->day = atoi(optarg);
            break;
        case O_HORIZON:
            o->horizon = atoi(optarg);
            break;
        case O_CDC_FIRST:
            o->cdc_first = strtoull(optarg, NULL, 10);
            break;
        case O_CDC_COUNT:
            o->cdc_count = strtoull(optarg, NULL, 10);
            break;
        case O_CDC_DAY:
            o->cdc_day = atoi(optarg);
            break;
        case O_RATE:
            o->rate = strtod(optarg, NULL);
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            return false;
        }
    }
    /* Every load loop is bounded in time and count. */
    if (o->conc < 1 || o->conc > 1024 || o->threads < 1 || o->threads > 64 || o->secs <= 0 ||
        o->secs > 600 || o->warmup < 0 || o->warmup > 60 || o->max_requests == 0 ||
        o->max_nights < 1 || o->max_nights > 8 || o->horizon < 1 || o->horizon > 100000 ||
        o->day < 1 || o->batch < 1 || o->batch > MAX_SEARCH || !(o->rate >= 0) || o->rate > 1e6 ||
        (o->rate > 0 && strcmp(o->mode, "read") != 0) ||
        (o->count > 0 && o->batch > o->count && strcmp(o->mode, "read") == 0)) {
        fprintf(stderr, "calendar-bench: an option is out of range\n");
        return false;
    }
    return true;
}

/* Sum of every sample of a metric family (all label sets) in a /metrics text. */
static double
metric_sum(const char *text, const char *name)
{
    double sum = 0;
    size_t n = strlen(name);
    for (const char *line = text; line != NULL && *line != '\0';) {
        if (strncmp(line, name, n) == 0 && (line[n] == '{' || line[n] == ' ')) {
            const char *v = line[n] == '{' ? strchr(line, '}') : line + n;
            if (v != NULL)
                sum += strtod(v + 1, NULL);
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return sum;
}

static void
sample_metrics(struct sampler *s, int i)
{
    struct http_response resp;
    char err[256];
    http_response_init(&resp);
    if (s->metrics_url != NULL && s->client != NULL &&
        http_request(s->client, "GET", s->metrics_url, NULL, NULL, 0, 2000, &resp, err,
                     sizeof(err)) == CAL_OK &&
        resp.status == 200) {
        s->retries[i] = metric_sum(resp.body, "calendard_shard_retries_total");
        s->conflicts[i] = metric_sum(resp.body, "calendard_shard_conflicts_total");
        s->hits[i] = metric_sum(resp.body, "calendard_cache_hits_total");
        s->misses[i] = metric_sum(resp.body, "calendard_cache_misses_total");
        s->cache_errors[i] = metric_sum(resp.body, "calendard_cache_errors_total");
        s->sampled[i] = true;
        s->txns[i] = metric_sum(resp.body, "calendard_booking_transactions_total");
        s->txn_bookings[i] = metric_sum(resp.body, "calendard_booking_transaction_bookings_total");
        s->reads[i] = metric_sum(resp.body, "calendard_booking_reads_total");
        s->read_bookings[i] = metric_sum(resp.body, "calendard_booking_read_bookings_total");
    }
    http_response_deinit(&resp);
}

/* The growth of counter a per unit of growth of b over the window; 0 when b did not grow. */
static double
per_delta(const double a[2], const double b[2])
{
    return b[1] > b[0] ? (a[1] - a[0]) / (b[1] - b[0]) : 0;
}

/* Window edges: CPU first at the opening and last at the close, so the
 * metrics fetch costs fall outside the CPU window as far as possible. */
static void
on_window(void *ctx, bool start)
{
    struct sampler *s = ctx;
    /* The speed probe covers the whole window, the /metrics fetches too. */
    if (start) {
        bench_speed_start(&s->speed);
        sample_metrics(s, 0);
        bench_cpu_sample(&s->cpu[0]);
    } else {
        bench_cpu_sample(&s->cpu[1]);
        sample_metrics(s, 1);
        bench_speed_stop(&s->speed);
    }
}

static size_t
build_booking(void *ctx, struct bench_rng *rng, unsigned conn, uint64_t seq, char *buf, size_t size)
{
    const struct book_ctx *b = ctx;
    uint64_t id;
    int32_t in, out;
    char din[11], dout[11], body[128];
    bench_stay_next(&b->stays, rng, &id, &in, &out);
    date_format(in, din);
    date_format(out, dout);
    int blen =
        snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":%u}",
                 din, dout, conn + 1);
    int n = snprintf(buf, size,
                     "POST /v1/listings/%" PRIu64 "/reservations HTTP/1.1\r\n"
                     "Host: 127.0.0.1:%u\r\nContent-Type: application/json\r\n"
                     "Idempotency-Key: bk-%" PRIx64 "-%u-%" PRIu64 "\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     id, b->port, b->tag, conn, seq, blen, body);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

static size_t
build_single(void *ctx, struct bench_rng *rng, unsigned conn, uint64_t seq, char *buf, size_t size)
{
    const struct read_ctx *r = ctx;
    (void)conn;
    (void)seq;
    uint64_t id = r->first + bench_rng_below(rng, r->count);
    int n = snprintf(buf, size,
                     "GET /v1/listings/%" PRIu64 "/availability?from=%s&to=%s HTTP/1.1\r\n"
                     "Host: 127.0.0.1:%u\r\n\r\n",
                     id, r->from, r->to, r->port);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* The body of a search for r->batch listings drawn at random, or ids[] when
 * given (warming reads every listing once). Returns its length. */
static size_t
search_body(const struct read_ctx *r, struct bench_rng *rng, const uint64_t *ids, char *body,
            size_t size)
{
    uint64_t drawn[MAX_SEARCH];
    size_t off = (size_t)snprintf(body, size, "{\"listing_ids\":[");
    if (ids == NULL) {
        bench_pick_distinct(rng, r->first, r->count, r->batch, drawn);
        ids = drawn;
    }
    for (unsigned i = 0; i < r->batch && off < size; i++)
        off += (size_t)snprintf(body + off, size - off, "%s%" PRIu64, i ? "," : "", ids[i]);
    if (off < size)
        off += (size_t)snprintf(body + off, size - off,
                                "],\"check_in\":\"%s\",\"check_out\":\"%s\"}", r->from, r->to);
    return off < size ? off : 0;
}

static size_t
build_search(void *ctx, struct bench_rng *rng, unsigned conn, uint64_t seq, char *buf, size_t size)
{
    const struct read_ctx *r = ctx;
    char body[MAX_SEARCH * 22 + 128];
    (void)conn;
    (void)seq;
    size_t blen = search_body(r, rng, NULL, body, sizeof(body));
    int n = snprintf(buf, size,
                     "POST /v1/availability/search HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     r->port, blen, body);
    return blen > 0 && n > 0 && (size_t)n < size ? (size_t)n : 0;
}

static unsigned
url_port(const char *url)
{
    const char *colon = strrchr(url, ':');
    return colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
}

/* One human line per run on stderr, for run.sh's progress output. */
static void
print_progress(struct bench_run *run, const struct bench_speed *sp)
{
    fprintf(stderr, "    %s %s c=%u %s: %.0f ok/s, %.0f attempts/s, p50 %.2f ms, p99 %.2f ms",
            run->phase, run->workload, run->conc, run->target, (double)run->ok / run->secs,
            (double)run->attempts / run->secs, bench_lat_quantile_ms(run->lat, 0.5),
            bench_lat_quantile_ms(run->lat, 0.99));
    if (strcmp(run->phase, "book") == 0)
        fprintf(stderr, ", 409 %llu, 503 %llu, retries %llu", (unsigned long long)run->unavailable,
                (unsigned long long)run->gave_up, (unsigned long long)run->retries);
    if (run->per_txn > 0)
        fprintf(stderr, ", %.1f bookings/transaction, %.1f/read", run->per_txn, run->per_read);
    if (run->errors > 0)
        fprintf(stderr, ", ERRORS %llu", (unsigned long long)run->errors);
    fprintf(stderr, ", CPU slow (< 1/2 speed) %.1f %% of the window", sp->below_half * 100);
    if (run->steady_kept > 0)
        fprintf(stderr, ", p99 outside its slow spells %.2f ms (%.0f %% of answers)",
                run->steady_p99_ms, run->steady_kept * 100);
    fputc('\n', stderr);
}

static void
print_cpu(const struct sampler *s)
{
    fputs(",\"cpu\":", stdout);
    bench_cpu_print(stdout, &s->cpu[0], &s->cpu[1]);
    bench_speed_print(stdout, &s->speed);
}

static void
print_ms_or_null(const char *name, bool have, double ms)
{
    if (have)
        printf(",\"%s\":%.3f", name, ms);
    else
        printf(",\"%s\":null", name);
}

/* A window cut short by --max-requests: its rate divides by the whole
 * window, so the run counts an error instead of passing for a slow one. */
static uint64_t
capped_error(bool capped)
{
    if (capped)
        fprintf(stderr, "calendar-bench: --max-requests reached before the window closed: the"
                        " run's rates are not measured\n");
    return capped ? 1 : 0;
}

static void
print_cdc(struct cdc_probe_result *cdc)
{
    bool have = cdc->running && cdc->lat.n > 0;
    printf(",\"cdc\":{\"running\":%s,\"probes\":%llu,\"timeouts\":%llu,\"late\":%llu,"
           "\"failed\":%llu",
           cdc->running ? "true" : "false", (unsigned long long)cdc->probes,
           (unsigned long long)cdc->timeouts, (unsigned long long)cdc->late,
           (unsigned long long)cdc->failed);
    print_ms_or_null("p50_ms", have, bench_lat_quantile_ms(&cdc->lat, 0.5));
    print_ms_or_null("p99_ms", have, bench_lat_quantile_ms(&cdc->lat, 0.99));
    print_ms_or_null("max_ms", have, bench_lat_quantile_ms(&cdc->lat, 1.0));
    print_ms_or_null("hist_p50_ms", cdc->hist_p50_ms >= 0, cdc->hist_p50_ms);
    print_ms_or_null("hist_p99_ms", cdc->hist_p99_ms >= 0, cdc->hist_p99_ms);
    printf(",\"hist_count\":%.0f,\"samples_ms\":[", cdc->hist_count > 0 ? cdc->hist_count : 0);
    /* Every sample, so the report can pool the runs instead of taking a
     * median of per-run p99s that rest on a few dozen probes each. */
    for (size_t i = 0; i < cdc->lat.n; i++)
        printf("%s%.3f", i ? "," : "", cdc->lat.us[i] / 1000.0);
    printf("]}");
    if (!cdc->running)
        fprintf(stderr,
                "    cdc: not running (no night written with SQL was invalidated in 2 s;"
                " %llu probes)\n",
                (unsigned long long)cdc->probes);
    else
        fprintf(stderr,
                "    cdc: %llu probes, commit-to-invalidation p50 %.2f ms, p99 %.2f ms, "
                "max %.2f ms, %llu timeouts\n",
                (unsigned long long)cdc->probes, bench_lat_quantile_ms(&cdc->lat, 0.5),
                bench_lat_quantile_ms(&cdc->lat, 0.99), bench_lat_quantile_ms(&cdc->lat, 1.0),
                (unsigned long long)cdc->timeouts);
}

static struct cdc_probe *
cdc_start(const struct options *o, const struct testenv *env, const struct bench_routes *routes)
{
    char err[512];
    struct cdc_probe_conf pc = {.env = env,
                                .routes = routes,
                                .first_id = o->cdc_first,
                                .count = o->cdc_count,
                                .night = date_today() + o->cdc_day,
                                .timeout_ms = 2000,
                                .interval_ms = 10,
                                .metrics_url = o->metrics_url};
    struct cdc_probe *probe = cdc_probe_start(&pc, err, sizeof(err));
    if (probe == NULL)
        fprintf(stderr, "calendar-bench: cdc probe: %s\n", err);
    return probe;
}

static int
run_book(const struct options *o, const struct testenv *env, const struct bench_routes *routes,
         struct sampler *s)
{
    char err[512] = "", murl[300];
    struct bench_stays stays = {.first_id = o->first,
                                .nlistings = o->count,
                                .first_day = date_today() + o->day,
                                .horizon = o->horizon,
                                .max_nights = (int)o->max_nights};
    struct bench_lat lat = {0};
    struct bench_run run = {.phase = "book",
                            .workload = o->workload,
                            .target = o->target,
                            .conc = o->conc,
                            .secs = o->secs,
                            .lat = &lat};
    struct cdc_probe *probe = NULL;
    cal_status st;
    if (o->cdc_count > 0 && (probe = cdc_start(o, env, routes)) == NULL)
        return EXIT_FAILED;
    if (strcmp(o->target, "raw") == 0) {
        struct raw_booking_conf rc = {.env = env,
                                      .routes = routes,
                                      .stays = stays,
                                      .conc = o->conc,
                                      .warmup_s = o->warmup,
                                      .secs = o->secs,
                                      .max_bookings = o->max_requests,
                                      .seed = o->seed,
                                      .max_attempts = 10, /* calendard's defaults */
                                      .backoff_base_ms = 1,
                                      .backoff_max_ms = 50,
                                      .window = on_window,
                                      .ctx = s};
        struct raw_booking_result res;
        st = raw_booking_run(&rc, &res, err, sizeof(err));
        lat = res.lat;
        run.ok = res.booked;
        run.attempts = res.attempts;
        run.unavailable = res.unavailable;
        run.gave_up = res.gave_up;
        run.errors = res.errors + capped_error(res.capped);
        run.retries = res.retries;
        run.conflicts = res.conflicts;
    } else {
        struct book_ctx b = {
            .stays = stays, .tag = testenv_random48(), .port = url_port(env->calendard_url)};
        snprintf(murl, sizeof(murl), "%s/metrics", env->calendard_url);
        s->metrics_url = murl;
        struct http_load_conf hc = {.port = b.port,
                                    .conc = o->conc,
                                    .threads = o->threads,
                                    .warmup_s = o->warmup,
                                    .secs = o->secs,
                                    .max_requests = o->max_requests,
                                    .seed = o->seed,
                                    .build = build_booking,
                                    .ctx = &b,
                                    .window = on_window,
                                    .window_ctx = s};
        struct http_load_result res;
        st = http_load_run(&hc, &res, err, sizeof(err));
        lat = res.lat;
        run.ok = res.st2xx;
        run.attempts = res.answered;
        run.unavailable = res.st409;
        run.gave_up = res.st503;
        run.errors = res.errors + res.other + capped_error(res.capped);
        if (s->sampled[0] && s->sampled[1]) { /* else unknown: 0, not a wrapped delta */
            run.retries = (uint64_t)(s->retries[1] - s->retries[0]);
            run.conflicts = (uint64_t)(s->conflicts[1] - s->conflicts[0]);
        }
        run.per_txn = per_delta(s->txn_bookings, s->txns);
        run.per_read = per_delta(s->read_bookings, s->reads);
    }
    struct cdc_probe_result cdc = {0};
    if (probe != NULL)
        cdc_probe_stop(probe, &cdc);
    if (st != CAL_OK) {
        fprintf(stderr, "calendar-bench: book %s: %s\n", o->target, err);
        bench_lat_deinit(&lat);
        bench_lat_deinit(&cdc.lat);
        return EXIT_FAILED;
    }
    run.steady_p99_ms = bench_lat_steady_quantile_ms(&lat, &s->speed, 0.99, &run.steady_kept);
    bench_run_print(stdout, &run);
    print_cpu(s);
    print_progress(&run, &s->speed);
    if (o->cdc_count > 0)
        print_cdc(&cdc);
    printf("}\n");
    fflush(stdout);
    bench_lat_deinit(&lat);
    bench_lat_deinit(&cdc.lat);
    return 0;
}

static void
read_ctx_init(const struct options *o, const struct testenv *env, struct read_ctx *r)
{
    int32_t from = date_today() + o->day;
    memset(r, 0, sizeof(*r));
    r->first = o->first;
    r->count = o->count;
    r->batch = o->batch;
    r->port = url_port(env->calendard_url);
    date_format(from, r->from);
    date_format(from + o->horizon, r->to);
}

static int
run_read(const struct options *o, const struct testenv *env, struct sampler *s)
{
    char err[512] = "", murl[300];
    bool search = strncmp(o->workload, "search", 6) == 0;
    struct bench_lat lat = {0};
    struct bench_run run = {.phase = o->rate > 0 ? "paced" : "read",
                            .workload = o->workload,
                            .target = o->target,
                            .conc = o->conc,
                            .secs = o->secs,
                            .lat = &lat};
    double hit_ratio = 0, cache_errors = -1; /* -1: not calendard's, or unknown */
    cal_status st;
    if (strcmp(o->target, "raw") == 0) {
        struct raw_reads_conf rc = {.memcached_servers = env->memcached_servers,
                                    .first_id = o->first,
                                    .nlistings = o->count,
                                    .from = date_today() + o->day,
                                    .to = date_today() + o->day + o->horizon,
                                    .batch = search ? o->batch : 1,
                                    .conc = o->conc,
                                    .warmup_s = o->warmup,
                                    .secs = o->secs,
                                    .max_requests = o->max_requests,
                                    .seed = o->seed,
                                    .rate = o->rate,
                                    .window = on_window,
                                    .ctx = s};
        struct raw_reads_result res;
        st = raw_reads_run(&rc, &res, err, sizeof(err));
        lat = res.lat;
        run.ok = res.answered;
        run.attempts = res.answered;
        run.errors = res.errors + capped_error(res.capped);
        hit_ratio = res.keys ? 1.0 - (double)res.misses / (double)res.keys : 0;
    } else {
        struct read_ctx r;
        read_ctx_init(o, env, &r);
        if (!search)
            r.batch = 1;
        snprintf(murl, sizeof(murl), "%s/metrics", env->calendard_url);
        s->metrics_url = murl;
        struct http_load_conf hc = {.port = r.port,
                                    .conc = o->conc,
                                    .threads = o->threads,
                                    .warmup_s = o->warmup,
                                    .secs = o->secs,
                                    .max_requests = o->max_requests,
                                    .seed = o->seed,
                                    .rate = o->rate,
                                    .build = search ? build_search : build_single,
                                    .ctx = &r,
                                    .window = on_window,
                                    .window_ctx = s};
        struct http_load_result res;
        st = http_load_run(&hc, &res, err, sizeof(err));
        lat = res.lat;
        run.ok = res.st2xx;
        run.attempts = res.answered;
        run.gave_up = res.st503;
        run.errors = res.errors + res.other + res.st409 + capped_error(res.capped);
        /* Keys found over keys looked up. A failed lookup counts neither
         * (its reads go to the shards), and cache errors count operations,
         * not keys: they are reported apart. Unknown without both samples. */
        double hits = s->hits[1] - s->hits[0], misses = s->misses[1] - s->misses[0];
        hit_ratio = !s->sampled[0] || !s->sampled[1] ? -1
                    : hits + misses > 0              ? hits / (hits + misses)
                                                     : 0;
        cache_errors =
            !s->sampled[0] || !s->sampled[1] ? -1 : s->cache_errors[1] - s->cache_errors[0];
    }
    if (st != CAL_OK) {
        fprintf(stderr, "calendar-bench: read %s: %s\n", o->target, err);
        bench_lat_deinit(&lat);
        return EXIT_FAILED;
    }
    run.steady_p99_ms = bench_lat_steady_quantile_ms(&lat, &s->speed, 0.99, &run.steady_kept);
    bench_run_print(stdout, &run);
    print_cpu(s);
    print_progress(&run, &s->speed);
    if (o->rate > 0)
        printf(",\"offered_per_s\":%.1f", o->rate);
    if (cache_errors >= 0)
        printf(",\"cache_errors\":%.0f", cache_errors);
    if (hit_ratio < 0)
        printf(",\"cache_hit_ratio\":null}\n");
    else
        printf(",\"cache_hit_ratio\":%.4f}\n", hit_ratio);
    fflush(stdout);
    bench_lat_deinit(&lat);
    return 0;
}

/* Reads every listing of the read set through calendard's search (which
 * fills the cache), then checks with a raw multi-get that every key is there. */
static int
run_warm(const struct options *o, const struct testenv *env)
{
    struct read_ctx r;
    struct http_client *client = http_client_create();
    struct http_response resp;
    char err[512], url[300], body[MAX_SEARCH * 22 + 128];
    uint64_t ids[MAX_SEARCH], failed = 0;
    double t0 = bench_now();
    read_ctx_init(o, env, &r);
    snprintf(url, sizeof(url), "%s/v1/availability/search", env->calendard_url);
    for (uint64_t at = 0; at < o->count; at += r.batch) {
        r.batch = (unsigned)(o->count - at < o->batch ? o->count - at : o->batch);
        for (unsigned i = 0; i < r.batch; i++)
            ids[i] = o->first + at + i;
        size_t blen = search_body(&r, NULL, ids, body, sizeof(body));
        http_response_init(&resp);
        if (http_request(client, "POST", url, NULL, body, blen, 10000, &resp, err, sizeof(err)) !=
                CAL_OK ||
            resp.status != 200)
            failed++;
        http_response_deinit(&resp);
    }
    http_client_destroy(client);
    /* Check: one raw multi-get per listing's keys. */
    struct raw_reads_conf rc = {.memcached_servers = env->memcached_servers,
                                .from = date_today() + o->day,
                                .to = date_today() + o->day + o->horizon};
    struct cache_conf cc = {.timeout_ms = 1000};
    cal_strlcpy(cc.servers, env->memcached_servers, sizeof(cc.servers));
    struct cache *cache = cache_create(&cc, err, sizeof(err));
    uint64_t keys = 0, missing = 0;
    for (uint64_t i = 0; cache != NULL && i < o->count; i++) {
        char k[16][CACHEKEY_MAX];
        size_t lens[16];
        struct cache_item items[16];
        size_t n = raw_reads_keys(o->first + i, rc.from, rc.to, k, lens, 16);
        for (size_t j = 0; j < n; j++)
            items[j] = (struct cache_item){.key = k[j], .keylen = lens[j]};
        if (cache_get_multi(cache, items, n, err, sizeof(err)) != CAL_OK) {
            missing += n;
        } else {
            for (size_t j = 0; j < n; j++)
                missing += !items[j].found;
        }
        keys += n;
        cache_results_free(items, n);
    }
    cache_destroy(cache);
    printf("{\"phase\":\"warm\",\"listings\":%llu,\"failed_requests\":%llu,\"keys\":%llu,"
           "\"missing\":%llu,\"secs\":%.2f}\n",
           (unsigned long long)o->count, (unsigned long long)failed, (unsigned long long)keys,
           (unsigned long long)missing, bench_now() - t0);
    return failed == 0 && missing == 0 ? 0 : EXIT_FAILED;
}

static int
run_seed(const struct options *o, const struct testenv *env, const struct bench_routes *routes)
{
    char err[512];
    double t0 = bench_now();
    struct seed_conf sc = {.first_id = o->first,
                           .count = o->count,
                           .default_price = 10000,
                           .min_nights = 1,
                           .max_nights = 30,
                           .blocked_nights = o->blocked,
                           .from = date_today() + o->day,
                           .to = date_today() + o->day + o->horizon};
    if (seed_listings(env, routes, &sc, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-bench: seed: %s\n", err);
        return EXIT_FAILED;
    }
    printf("{\"phase\":\"seed\",\"first\":%llu,\"listings\":%llu,\"secs\":%.2f}\n",
           (unsigned long long)o->first, (unsigned long long)o->count, bench_now() - t0);
    return 0;
}

/* seed-vbucket: --count listings with history into vbucket --first
 * (listing ids from --seed up), for timing a move of that vbucket. */
static int
run_seed_vbucket(const struct options *o, const struct testenv *env,
                 const struct bench_routes *routes)
{
    char err[512];
    uint64_t lo, hi;
    uint64_t t0 = cal_mono_us();
    if (o->first >= TESTENV_NUM_VBUCKETS) {
        fprintf(stderr, "calendar-bench: seed-vbucket: --first is the vbucket, 0..4095\n");
        return EXIT_USAGE;
    }
    if (vbseed_run(env, routes, (uint32_t)o->first, o->seed, o->count,
                   (int32_t)(testenv_today() + o->day), &lo, &hi, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-bench: seed-vbucket: %s\n", err);
        return EXIT_FAILED;
    }
    printf("seed-vbucket: %llu listings (ids %llu..%llu) with 12 nights and 2 reservations each"
           " in vbucket %llu, %.1fs\n",
           (unsigned long long)o->count, (unsigned long long)lo, (unsigned long long)hi,
           (unsigned long long)o->first, (double)(cal_mono_us() - t0) / 1e6);
    return 0;
}

int
main(int argc, char **argv)
{
    struct options o;
    struct testenv env;
    struct bench_routes *routes = NULL;
    struct sampler s = {0};
    char err[512];
    int rc = EXIT_FAILED;
    if (!parse_args(argc, argv, &o)) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(o.mode, "report") == 0) {
        if (o.runs == NULL || o.out_dir == NULL) {
            usage(stderr);
            return EXIT_USAGE;
        }
        return report_run(o.runs, o.out_dir, stdout) == CAL_OK ? 0 : EXIT_FAILED;
    }
    if (o.count == 0 || (strcmp(o.target, "calendard") != 0 && strcmp(o.target, "raw") != 0)) {
        fprintf(stderr, "calendar-bench: --count and a --target of calendard or raw are needed\n");
        return EXIT_USAGE;
    }
    if (o.seed == 0)
        o.seed = testenv_random48();
    http_global_init();
    if (testenv_load(&env, o.stack_env, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-bench: %s\n", err);
        return EXIT_USAGE;
    }
    if (bench_cpu_parse(&s.cpu[0], o.pids, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-bench: %s\n", err);
        return EXIT_USAGE;
    }
    s.cpu[1] = s.cpu[0];
    s.client = http_client_create();
    routes = cal_malloc(sizeof(*routes));
    if (bench_routes_load(&env, routes, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-bench: routes: %s\n", err);
        goto out;
    }
    if (strcmp(o.mode, "seed") == 0)
        rc = run_seed(&o, &env, routes);
    else if (strcmp(o.mode, "book") == 0)
        rc = run_book(&o, &env, routes, &s);
    else if (strcmp(o.mode, "warm") == 0)
        rc = run_warm(&o, &env);
    else if (strcmp(o.mode, "read") == 0)
        rc = run_read(&o, &env, &s);
    else if (strcmp(o.mode, "seed-vbucket") == 0)
        rc = run_seed_vbucket(&o, &env, routes);
    else {
        usage(stderr);
        rc = EXIT_USAGE;
    }
out:
    http_client_destroy(s.client);
    bench_speed_deinit(&s.speed);
    free(routes);
    return rc;
}
