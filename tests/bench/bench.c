/* Shared pieces of the benchmark driver: random numbers, latency samples,
 * stays, routes from the catalog, CPU sampling and the run's JSON line. */
#include "tests/bench/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/db.h"
#include "common/util.h"
#include "tests/lib/proc.h"

void
bench_rng_init(struct bench_rng *rng, uint64_t seed)
{
    /* splitmix64 of the seed: xorshift streams from nearby seeds (thread
     * 1, 2, 3...) would otherwise start correlated and book the same stays. */
    uint64_t z = seed + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    rng->s = z ? z : 0x9e3779b97f4a7c15ULL; /* xorshift is stuck at 0 */
}

uint64_t
bench_rng_next(struct bench_rng *rng)
{
    uint64_t x = rng->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng->s = x;
    return x * 0x2545f4914f6cdd1dULL;
}

uint64_t
bench_rng_below(struct bench_rng *rng, uint64_t n)
{
    return (bench_rng_next(rng) >> 11) % n;
}

double
bench_rng_exp(struct bench_rng *rng, double mean)
{
    double u = (double)(bench_rng_next(rng) >> 11) / 9007199254740992.0; /* [0, 1) */
    return -mean * log1p(-u);
}

void
bench_pick_distinct(struct bench_rng *rng, uint64_t first, uint64_t count, size_t n, uint64_t *out)
{
    for (size_t i = 0; i < n; i++) {
        bool dup;
        do {
            out[i] = first + bench_rng_below(rng, count);
            dup = false;
            for (size_t j = 0; j < i && !dup; j++)
                dup = out[j] == out[i];
        } while (dup);
    }
}

void
bench_lat_init(struct bench_lat *lat, size_t cap)
{
    memset(lat, 0, sizeof(*lat));
    lat->cap = cap;
    lat->us = cal_malloc((cap ? cap : 1) * sizeof(*lat->us));
    lat->end = cal_malloc((cap ? cap : 1) * sizeof(*lat->end));
}

void
bench_lat_deinit(struct bench_lat *lat)
{
    free(lat->us);
    free(lat->end);
    memset(lat, 0, sizeof(*lat));
}

void
bench_lat_add(struct bench_lat *lat, uint64_t us)
{
    if (lat->n == lat->cap) {
        lat->dropped++;
        return;
    }
    if (lat->end != NULL)
        lat->end[lat->n] = bench_now();
    lat->us[lat->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

void
bench_lat_merge(struct bench_lat *dst, const struct bench_lat *src)
{
    size_t room = dst->cap - dst->n, n = src->n < room ? src->n : room;
    memcpy(dst->us + dst->n, src->us, n * sizeof(*src->us));
    if (dst->end != NULL && src->end != NULL)
        memcpy(dst->end + dst->n, src->end, n * sizeof(*src->end));
    else {
        free(dst->end); /* the pairs can no longer be told */
        dst->end = NULL;
    }
    dst->n += n;
    dst->dropped += src->dropped + (src->n - n);
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

double
bench_lat_quantile_ms(struct bench_lat *lat, double q)
{
    if (lat->n == 0)
        return 0;
    free(lat->end); /* sorting separates each sample from its end time */
    lat->end = NULL;
    qsort(lat->us, lat->n, sizeof(*lat->us), cmp_u32);
    /* Nearest rank: the p99 of 100 samples is the 99th, not an interpolation. */
    size_t rank = (size_t)(q * (double)lat->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > lat->n)
        rank = lat->n;
    return lat->us[rank - 1] / 1000.0;
}

void
bench_stay_next(const struct bench_stays *stays, struct bench_rng *rng, uint64_t *listing_id,
                int32_t *check_in, int32_t *check_out)
{
    *listing_id = stays->first_id + bench_rng_below(rng, stays->nlistings);
    *check_in = stays->first_day + (int32_t)bench_rng_below(rng, (uint64_t)stays->horizon);
    *check_out = *check_in + 1 + (int32_t)bench_rng_below(rng, (uint64_t)stays->max_nights);
}

cal_status
bench_routes_load(const struct testenv *env, struct bench_routes *routes, char *err, size_t errlen)
{
    static const char sql[] = "SELECT v.vbucket, s.port, s.db_name FROM vbuckets v"
                              " JOIN shards s ON s.shard_id = v.shard_id";
    struct db_stmt *st;
    struct db_val c[3];
    size_t seen = 0;
    int r;
    cal_status rc;
    struct db *db = testenv_connect_catalog(env, err, errlen);
    if (db == NULL)
        return CAL_EUNAVAIL;
    for (size_t v = 0; v < TESTENV_NUM_VBUCKETS; v++)
        routes->shard_of[v] = -1;
    routes->nshards = env->nshards;
    if ((rc = db_query(db, sql, NULL, 0, &st, err, errlen)) != CAL_OK)
        goto out;
    while ((r = db_fetch(st, c, 3, err, errlen)) > 0) {
        int idx = testenv_find_shard(env, (unsigned)c[1].i, c[2].type == DB_STR ? c[2].s : "");
        if (c[0].i < 0 || c[0].i >= TESTENV_NUM_VBUCKETS || idx < 0) {
            snprintf(err, errlen, "catalog names a shard %s:%lld the stack env does not know",
                     c[2].type == DB_STR ? c[2].s : "?", (long long)c[1].i);
            rc = CAL_EINVAL;
            goto out;
        }
        routes->shard_of[c[0].i] = (int16_t)idx;
        seen++;
    }
    if (r < 0) {
        rc = CAL_ERR;
        goto out;
    }
    if (seen != TESTENV_NUM_VBUCKETS) {
        snprintf(err, errlen, "catalog maps %zu vbuckets, expected %d", seen, TESTENV_NUM_VBUCKETS);
        rc = CAL_EINVAL;
    }
out:
    db_close(db);
    return rc;
}

size_t
bench_routes_shard(const struct bench_routes *routes, uint64_t listing_id)
{
    return (size_t)routes->shard_of[testenv_vbucket(listing_id)];
}

cal_status
bench_cpu_parse(struct bench_cpu *cpu, const char *spec, char *err, size_t errlen)
{
    memset(cpu, 0, sizeof(*cpu));
    while (spec != NULL && *spec != '\0') {
        const char *eq = strchr(spec, '='), *end = strchr(spec, ',');
        if (end == NULL)
            end = spec + strlen(spec);
        if (eq == NULL || eq > end || eq == spec || (size_t)(eq - spec) >= sizeof(cpu->name[0]) ||
            cpu->nprocs == BENCH_MAX_PROCS) {
            snprintf(err, errlen, "--pids: expected name=pid[,name=pid...] (at most %d)",
                     BENCH_MAX_PROCS);
            return CAL_EINVAL;
        }
        memcpy(cpu->name[cpu->nprocs], spec, (size_t)(eq - spec));
        cpu->name[cpu->nprocs][eq - spec] = '\0';
        cpu->pid[cpu->nprocs++] = atoi(eq + 1);
        spec = *end ? end + 1 : end;
    }
    return CAL_OK;
}

/* utime + stime of every thread of pid, in clock ticks; 0 when gone. */
static uint64_t
proc_ticks(int pid)
{
    char buf[1024];
    const char *fields = proc_stat_fields(pid, buf, sizeof(buf));
    if (fields == NULL)
        return 0;
    unsigned long ut = 0, stt = 0;
    if (sscanf(fields, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2)
        return 0;
    return (uint64_t)ut + stt;
}

/* The machine's busy and stolen ticks, from the first line of /proc/stat. */
static void
machine_ticks(uint64_t *busy, uint64_t *steal)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    *busy = *steal = 0;
    if (f == NULL)
        return;
    /* cpu user nice system idle iowait irq softirq steal */
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return;
    *busy = v[0] + v[1] + v[2] + v[5] + v[6];
    *steal = v[7];
}

void
bench_cpu_sample(struct bench_cpu *cpu)
{
    struct rusage ru;
    machine_ticks(&cpu->busy, &cpu->steal);
    for (size_t i = 0; i < cpu->nprocs; i++)
        cpu->ticks[i] = proc_ticks(cpu->pid[i]);
    getrusage(RUSAGE_SELF, &ru);
    cpu->self_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    cpu->mono_us = cal_mono_us();
}

void
bench_cpu_print(FILE *out, const struct bench_cpu *a, const struct bench_cpu *b)
{
    double wall = (double)(b->mono_us - a->mono_us) / 1e6, hz = (double)sysconf(_SC_CLK_TCK);
    if (wall <= 0)
        wall = 1e-9;
    fputc('{', out);
    for (size_t i = 0; i < a->nprocs; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++)
            first = first && strcmp(a->name[j], a->name[i]) != 0;
        if (!first)
            continue; /* summed with the first of its name */
        double ticks = 0;
        for (size_t j = i; j < a->nprocs; j++)
            if (strcmp(a->name[j], a->name[i]) == 0 && b->ticks[j] >= a->ticks[j])
                ticks += (double)(b->ticks[j] - a->ticks[j]);
        fprintf(out, "\"%s\":%.2f,", a->name[i], ticks / hz / wall);
    }
    fprintf(out, "\"client\":%.2f,\"machine\":%.2f,\"steal\":%.2f}", (b->self_s - a->self_s) / wall,
            (double)(b->busy - a->busy) / hz / wall, (double)(b->steal - a->steal) / hz / wall);
}

#define SPEED_PERIOD_NS 2000000L
#define SPEED_WORK 10000 /* iterations: about 10 us on this machine */
#define SPEED_CAP 400000 /* 800 s of probes */

static uint64_t
thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *
speed_main(void *arg)
{
    struct bench_speed *sp = arg;
    volatile uint64_t x = 1;
    struct timespec period = {.tv_nsec = SPEED_PERIOD_NS};
    while (!atomic_load(&sp->stop) && sp->n < sp->cap) {
        sp->at[sp->n] = bench_now();
        uint64_t t0 = thread_cpu_ns();
        for (int i = 0; i < SPEED_WORK; i++)
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t d = thread_cpu_ns() - t0;
        sp->ns[sp->n++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        nanosleep(&period, NULL);
    }
    return NULL;
}

void
bench_speed_deinit(struct bench_speed *sp)
{
    free(sp->ns);
    free(sp->at);
    free(sp->spell_from);
    free(sp->spell_to);
    sp->ns = NULL;
    sp->at = sp->spell_from = sp->spell_to = NULL;
    sp->n = sp->nspells = 0;
}

void
bench_speed_start(struct bench_speed *sp)
{
    bench_speed_deinit(sp);
    sp->cap = SPEED_CAP;
    sp->ns = cal_malloc(sp->cap * sizeof(*sp->ns));
    sp->at = cal_malloc(sp->cap * sizeof(*sp->at));
    sp->below_half = sp->below_third = 0;
    atomic_init(&sp->stop, false);
    sp->started = pthread_create(&sp->thread, NULL, speed_main, sp) == 0;
}

void
bench_speed_stop(struct bench_speed *sp)
{
    if (!sp->started)
        return;
    atomic_store(&sp->stop, true);
    pthread_join(sp->thread, NULL);
    sp->started = false;
    bench_speed_summarize(sp);
}

void
bench_speed_summarize(struct bench_speed *sp)
{
    free(sp->spell_from);
    free(sp->spell_to);
    sp->spell_from = sp->spell_to = NULL;
    sp->nspells = 0;
    sp->below_half = sp->below_third = 0;
    if (sp->n == 0)
        return;
    uint32_t *sorted = cal_malloc(sp->n * sizeof(*sorted));
    memcpy(sorted, sp->ns, sp->n * sizeof(*sorted));
    qsort(sorted, sp->n, sizeof(*sorted), cmp_u32);
    /* Full speed is what the fast probes saw: the slow spells are a minority. */
    double fast = sorted[sp->n / 10];
    size_t half = 0, third = 0;
    for (size_t i = 0; i < sp->n; i++) {
        half += sp->ns[i] > 2 * fast;
        third += sp->ns[i] > 3 * fast;
    }
    sp->below_half = (double)half / (double)sp->n;
    sp->below_third = (double)third / (double)sp->n;
    free(sorted);
    /* A slow probe says the machine was slow at some point between the
     * probes either side of it (2 ms apart): that whole span is a spell. */
    sp->spell_from = cal_malloc((half + 1) * sizeof(double));
    sp->spell_to = cal_malloc((half + 1) * sizeof(double));
    for (size_t i = 0; i < sp->n; i++) {
        if (sp->ns[i] <= 2 * fast)
            continue;
        double from = i > 0 ? sp->at[i - 1] : sp->at[i] - SPEED_PERIOD_NS / 1e9;
        double to = i + 1 < sp->n ? sp->at[i + 1] : sp->at[i] + SPEED_PERIOD_NS / 1e9;
        if (sp->nspells > 0 && from <= sp->spell_to[sp->nspells - 1]) {
            sp->spell_to[sp->nspells - 1] = to;
        } else {
            sp->spell_from[sp->nspells] = from;
            sp->spell_to[sp->nspells++] = to;
        }
    }
}

bool
bench_speed_slow_between(const struct bench_speed *sp, double from, double to)
{
    /* The first spell that ends at or after from, by bisection. */
    size_t lo = 0, hi = sp->nspells;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sp->spell_to[mid] < from)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sp->nspells && sp->spell_from[lo] <= to;
}

double
bench_lat_steady_quantile_ms(const struct bench_lat *lat, const struct bench_speed *sp, double q,
                             double *kept)
{
    *kept = 0;
    if (lat->n == 0 || lat->end == NULL || sp->n == 0)
        return NAN; /* no samples, no end times, or no probe to tell spells */
    struct bench_lat steady = {.us = cal_malloc(lat->n * sizeof(*lat->us)), .cap = lat->n};
    for (size_t i = 0; i < lat->n; i++)
        if (!bench_speed_slow_between(sp, lat->end[i] - lat->us[i] / 1e6, lat->end[i]))
            steady.us[steady.n++] = lat->us[i];
    *kept = (double)steady.n / (double)lat->n;
    double v = steady.n > 0 ? bench_lat_quantile_ms(&steady, q) : NAN;
    free(steady.us);
    return v;
}

void
bench_speed_print(FILE *out, const struct bench_speed *sp)
{
    fprintf(out,
            ",\"cpu_slow\":{\"probes\":%zu,\"below_half\":%.4f,\"below_third\":%.4f,"
            "\"spells\":%zu}",
            sp->n, sp->below_half, sp->below_third, sp->nspells);
}

double
bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void
bench_sleep_until(double t)
{
    for (double now = bench_now(); now < t; now = bench_now()) {
        double d = t - now;
        struct timespec ts = {.tv_sec = (time_t)d,
                              .tv_nsec = (long)((d - (double)(time_t)d) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

void
bench_run_print(FILE *out, struct bench_run *run)
{
    double secs = run->secs > 0 ? run->secs : 1e-9;
    double p50 = bench_lat_quantile_ms(run->lat, 0.50), p99 = bench_lat_quantile_ms(run->lat, 0.99);
    double max = bench_lat_quantile_ms(run->lat, 1.0);
    fprintf(out,
            "{\"phase\":\"%s\",\"workload\":\"%s\",\"target\":\"%s\",\"conc\":%u,"
            "\"secs\":%.3f,\"ok\":%llu,\"attempts\":%llu,\"ok_per_s\":%.1f,"
            "\"attempts_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
            "\"unavailable\":%llu,\"gave_up\":%llu,\"errors\":%llu,\"retries\":%llu,"
            "\"conflicts\":%llu",
            run->phase, run->workload, run->target, run->conc, run->secs,
            (unsigned long long)run->ok, (unsigned long long)run->attempts, (double)run->ok / secs,
            (double)run->attempts / secs, p50, p99, max, (unsigned long long)run->unavailable,
            (unsigned long long)run->gave_up, (unsigned long long)run->errors,
            (unsigned long long)run->retries, (unsigned long long)run->conflicts);
    if (run->per_txn > 0)
        fprintf(out, ",\"bookings_per_txn\":%.2f", run->per_txn);
    if (run->per_read > 0)
        fprintf(out, ",\"bookings_per_read\":%.2f", run->per_read);
    if (run->steady_kept > 0)
        fprintf(out, ",\"steady_p99_ms\":%.3f,\"steady_share\":%.4f", run->steady_p99_ms,
                run->steady_kept);
}
