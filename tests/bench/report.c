/* The benchmark report: medians of interleaved runs, ratios, targets. */
#include "tests/bench/report.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

#define MAX_CONC 16
#define MAX_REPS 64

/* A figure over the runs of one configuration. */
struct fig {
    size_t n;
    double med, min, max;
};

/* A metric of a run: a JSON field, optionally divided by the run's secs. */
struct metric {
    const char *name; /* as printed in the final JSON */
    const char *field;
    bool per_s;
};

static const struct metric book_metrics[] = {
    {"ok_per_s", "ok_per_s", false},
    {"attempts_per_s", "attempts_per_s", false},
    {"p50_ms", "p50_ms", false},
    {"p99_ms", "p99_ms", false},
    {"unavailable_per_s", "unavailable", true},
    {"gave_up_per_s", "gave_up", true},
    {"retries_per_s", "retries", true},
    {"conflicts_per_s", "conflicts", true},
    {"bookings_per_txn", "bookings_per_txn", false},
    {"bookings_per_read", "bookings_per_read", false},
    {"errors", "errors", false},
    {"cpu_calendard", "cpu.calendard", false},
    {"cpu_mariadbd", "cpu.mariadbd", false},
    {"cpu_memcached", "cpu.memcached", false},
    {"cpu_client", "cpu.client", false},
    {"cpu_machine", "cpu.machine", false},
    {"cpu_steal", "cpu.steal", false},
    {"slow_share", "cpu_slow.below_half", false},
    {"steady_p99_ms", "steady_p99_ms", false},
};

static const struct metric read_metrics[] = {
    {"ok_per_s", "ok_per_s", false},
    {"p50_ms", "p50_ms", false},
    {"p99_ms", "p99_ms", false},
    {"steady_p99_ms", "steady_p99_ms", false},
    {"errors", "errors", false},
    {"cache_hit_ratio", "cache_hit_ratio", false},
    {"cpu_calendard", "cpu.calendard", false},
    {"cpu_mariadbd", "cpu.mariadbd", false},
    {"cpu_memcached", "cpu.memcached", false},
    {"cpu_client", "cpu.client", false},
    {"cpu_machine", "cpu.machine", false},
    {"cpu_steal", "cpu.steal", false},
    {"slow_share", "cpu_slow.below_half", false},
};

static const char *const book_workloads[] = {"low", "high"};
static const char *const read_workloads[] = {"single", "search50"};
static const char *const targets[] = {"calendard", "raw"};

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median, min and max of v[0..n); sorts v. */
static struct fig
fig_of(double *v, size_t n)
{
    struct fig f = {.n = n};
    if (n == 0)
        return f;
    qsort(v, n, sizeof(*v), cmp_double);
    f.min = v[0];
    f.max = v[n - 1];
    f.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    return f;
}

/* A number at "a" or "a.b" in obj; NAN when absent or null. */
static double
num_at(const json_t *obj, const char *path)
{
    char head[64];
    const char *dot = strchr(path, '.');
    if (dot != NULL) {
        size_t n =
            (size_t)(dot - path) < sizeof(head) - 1 ? (size_t)(dot - path) : sizeof(head) - 1;
        memcpy(head, path, n);
        head[n] = '\0';
        return num_at(json_object_get(obj, head), dot + 1);
    }
    const json_t *v = json_object_get(obj, path);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static bool
run_is(const json_t *run, const char *phase, const char *workload, const char *target, double conc)
{
    return strcmp(json_string_value(json_object_get(run, "phase")) ?: "", phase) == 0 &&
           strcmp(json_string_value(json_object_get(run, "workload")) ?: "", workload) == 0 &&
           strcmp(json_string_value(json_object_get(run, "target")) ?: "", target) == 0 &&
           num_at(run, "conc") == conc;
}

/* Values of a metric over the matching runs, in the order they ran. */
static size_t
collect(const json_t *runs, const char *phase, const char *workload, const char *target,
        double conc, const struct metric *m, double *out)
{
    size_t i, n = 0;
    const json_t *run;
    json_array_foreach(runs, i, run)
    {
        if (n == MAX_REPS || !run_is(run, phase, workload, target, conc))
            continue;
        double v = num_at(run, m->field);
        if (m->per_s && !isnan(v))
            v /= num_at(run, "secs");
        if (!isnan(v))
            out[n++] = v;
    }
    return n;
}

static struct fig
fig_for(const json_t *runs, const char *phase, const char *workload, const char *target,
        double conc, const struct metric *m)
{
    double v[MAX_REPS];
    return fig_of(v, collect(runs, phase, workload, target, conc, m, v));
}

/* ok_per_s of (workload a, target a) over (workload b, target b), pairing the
 * k-th runs of each (run.sh runs them next to each other). */
static struct fig
paired_ratio(const json_t *runs, const char *phase, const char *wa, const char *ta, const char *wb,
             const char *tb, double conc)
{
    double a[MAX_REPS], b[MAX_REPS], r[MAX_REPS];
    size_t na = collect(runs, phase, wa, ta, conc, &book_metrics[0], a);
    size_t nb = collect(runs, phase, wb, tb, conc, &book_metrics[0], b);
    size_t n = na < nb ? na : nb, k = 0;
    for (size_t i = 0; i < n; i++)
        if (b[i] > 0)
            r[k++] = a[i] / b[i];
    return fig_of(r, k);
}

/* calendard / raw of one workload. */
static struct fig
ratio_for(const json_t *runs, const char *phase, const char *workload, double conc)
{
    return paired_ratio(runs, phase, workload, "calendard", workload, "raw", conc);
}

/* calendard's successful bookings, high contention / low. */
static struct fig
high_low_for(const json_t *runs, double conc)
{
    return paired_ratio(runs, "book", "high", "calendard", "low", "calendard", conc);
}

/* Sorted distinct values of a field over the runs of a phase (at most
 * MAX_CONC): its concurrencies, or the rates of the open-loop runs. */
static size_t
distinct_values(const json_t *runs, const char *phase, const char *field, double *out)
{
    size_t i, n = 0;
    const json_t *run;
    json_array_foreach(runs, i, run)
    {
        if (strcmp(json_string_value(json_object_get(run, "phase")) ?: "", phase) != 0)
            continue;
        double c = num_at(run, field);
        bool seen = false;
        for (size_t j = 0; j < n; j++)
            seen = seen || out[j] == c;
        if (!seen && n < MAX_CONC && !isnan(c))
            out[n++] = c;
    }
    qsort(out, n, sizeof(*out), cmp_double);
    return n;
}

static json_t *
fig_json(struct fig f)
{
    if (f.n == 0)
        return json_null();
    return json_pack("[f,f,f]", round(f.med * 1000) / 1000, round(f.min * 1000) / 1000,
                     round(f.max * 1000) / 1000);
}

static void
print_fig(FILE *out, struct fig f, int width, int prec, bool range)
{
    char buf[96];
    if (f.n == 0)
        snprintf(buf, sizeof(buf), "-");
    else if (range)
        snprintf(buf, sizeof(buf), "%.*f [%.*f..%.*f]", prec, f.med, prec, f.min, prec, f.max);
    else
        snprintf(buf, sizeof(buf), "%.*f", prec, f.med);
    fprintf(out, " %*s", width, buf);
}

static json_t *
target_json(const json_t *runs, const char *phase, const char *workload, const char *target,
            double conc, const struct metric *metrics, size_t nmetrics)
{
    json_t *obj = json_object();
    json_object_set_new(
        obj, "runs",
        json_integer((json_int_t)fig_for(runs, phase, workload, target, conc, &metrics[0]).n));
    for (size_t m = 0; m < nmetrics; m++)
        json_object_set_new(obj, metrics[m].name,
                            fig_json(fig_for(runs, phase, workload, target, conc, &metrics[m])));
    return obj;
}

/* One table (bookings or reads), its gnuplot data files and JSON rows. */
static void
report_phase(const json_t *runs, const char *phase, const char *const *workloads, size_t nworkloads,
             const struct metric *metrics, size_t nmetrics, const char *out_dir, FILE *out,
             json_t *rows)
{
    double conc[MAX_CONC];
    size_t nconc = distinct_values(runs, phase, "conc", conc);
    bool book = strcmp(phase, "book") == 0;
    /* Indexes into metrics of the printed columns. */
    const struct metric *ok = &metrics[0], *p50 = NULL, *p99 = NULL, *steady = NULL;
    for (size_t m = 0; m < nmetrics; m++) {
        if (strcmp(metrics[m].name, "p50_ms") == 0)
            p50 = &metrics[m];
        if (strcmp(metrics[m].name, "p99_ms") == 0)
            p99 = &metrics[m];
        if (strcmp(metrics[m].name, "steady_p99_ms") == 0 && !book)
            steady = &metrics[m];
    }
    fprintf(out, "\n%s: median [min..max] of the runs; latency of successful %s%s\n",
            book ? "bookings" : "availability reads (warm cache)", book ? "bookings" : "reads",
            book ? "; bk/tx, bk/rd: calendard's bookings per transaction and per calendar read "
                   "statement"
                 : "; stdy99: p99 of the reads that overlapped none of the machine's slow "
                   "spells (noise:)");
    if (book)
        fprintf(out, "%-8s %4s %-9s %24s %10s %7s %7s %8s %8s %8s %8s %6s %6s  %s\n", "workload",
                "conc", "target", "booked/s", "attempt/s", "p50ms", "p99ms", "409/s", "503/s",
                "retry/s", "confl/s", "bk/tx", "bk/rd", "cpu cal/db/mc/cli/all/steal");
    else
        fprintf(out, "%-8s %4s %-9s %24s %7s %7s %7s %6s  %s\n", "workload", "conc", "target",
                "requests/s", "p50ms", "p99ms", "stdy99", "hit%", "cpu cal/db/mc/cli/all/steal");
    for (size_t w = 0; w < nworkloads; w++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s-%s.dat", out_dir, phase, workloads[w]);
        FILE *dat = fopen(path, "w");
        if (dat != NULL)
            fprintf(dat, "# conc, then per target (calendard, raw): ok/s med min max, p99 ms med "
                         "min max\n");
        for (size_t c = 0; c < nconc; c++) {
            if (fig_for(runs, phase, workloads[w], "calendard", conc[c], ok).n == 0 &&
                fig_for(runs, phase, workloads[w], "raw", conc[c], ok).n == 0)
                continue;
            json_t *row = json_pack("{s:s,s:s,s:i}", "phase", phase, "workload", workloads[w],
                                    "conc", (int)conc[c]);
            if (dat != NULL)
                fprintf(dat, "%g", conc[c]);
            for (size_t t = 0; t < CAL_ARRAY_LEN(targets); t++) {
                const char *tg = targets[t];
                struct fig fok = fig_for(runs, phase, workloads[w], tg, conc[c], ok);
                struct fig f99 = fig_for(runs, phase, workloads[w], tg, conc[c], p99);
                if (dat != NULL)
                    fprintf(dat, " %.3f %.3f %.3f %.3f %.3f %.3f", fok.med, fok.min, fok.max,
                            f99.med, f99.min, f99.max);
                json_object_set_new(
                    row, tg,
                    target_json(runs, phase, workloads[w], tg, conc[c], metrics, nmetrics));
                fprintf(out, "%-8s %4g %-9s", workloads[w], conc[c], tg);
                print_fig(out, fok, 24, 0, true);
                for (size_t m = 1; m < nmetrics; m++) {
                    const struct metric *mt = &metrics[m];
                    /* In the JSON only: the bookings table is wide enough. */
                    if (strncmp(mt->name, "cpu_", 4) == 0 || strcmp(mt->name, "errors") == 0 ||
                        strcmp(mt->name, "slow_share") == 0 ||
                        (strcmp(mt->name, "steady_p99_ms") == 0 && mt != steady))
                        continue;
                    bool ms = mt == p50 || mt == p99 || mt == steady;
                    bool hit = strcmp(mt->name, "cache_hit_ratio") == 0;
                    bool per = strncmp(mt->name, "bookings_per_", 13) == 0;
                    struct fig f = fig_for(runs, phase, workloads[w], tg, conc[c], mt);
                    if (hit || per) {
                        if (hit)
                            f.med *= 100;
                        print_fig(out, f, 6, 1, false);
                    } else {
                        print_fig(out, f,
                                  strcmp(mt->name, "attempts_per_s") == 0 ? 10
                                  : ms                                    ? 7
                                                                          : 8,
                                  ms ? 2 : 0, false);
                    }
                }
                const char *sep = "  ";
                for (size_t m = 1; m < nmetrics; m++) {
                    if (strncmp(metrics[m].name, "cpu_", 4) != 0)
                        continue;
                    fprintf(out, "%s%.2f", sep,
                            fig_for(runs, phase, workloads[w], tg, conc[c], &metrics[m]).med);
                    sep = "/";
                }
                fprintf(out, "\n");
            }
            struct fig ratio = ratio_for(runs, phase, workloads[w], conc[c]);
            json_object_set_new(row, "ratio", fig_json(ratio));
            fprintf(out, "%-8s %4g %-9s", workloads[w], conc[c], "ratio");
            print_fig(out, ratio, 24, 2, true);
            fprintf(out, "   (calendard / raw, paired runs)\n");
            if (dat != NULL)
                fprintf(dat, "\n");
            json_array_append_new(rows, row);
        }
        if (dat != NULL)
            fclose(dat);
    }
}

#define CDC_LOST_MS 2000.0 /* the probe's timeout (run.sh) */

static double
quantile_of(double *v, size_t n, double q)
{
    qsort(v, n, sizeof(*v), cmp_double);
    size_t rank = (size_t)ceil(q * (double)n);
    return v[(rank < 1 ? 1 : rank > n ? n : rank) - 1];
}

/* The CDC probe samples of the booking runs at one concurrency, pooled. */
struct cdc_pool {
    size_t runs, n, nh50, nh99;
    double *v, h50[MAX_REPS], h99[MAX_REPS], lost, late;
};

static void
cdc_pool_at(const json_t *runs, double conc, struct cdc_pool *pl)
{
    size_t i, cap = 1024;
    const json_t *run;
    *pl = (struct cdc_pool){.v = cal_malloc(cap * sizeof(double))};
    json_array_foreach(runs, i, run)
    {
        const json_t *cdc = json_object_get(run, "cdc"), *s;
        size_t k;
        /* A run whose probes all timed out counts them as lost too. */
        if (cdc == NULL || num_at(run, "conc") != conc)
            continue;
        pl->runs++;
        double lost = num_at(cdc, "timeouts"), late = num_at(cdc, "late");
        pl->lost += lost;
        pl->late += isnan(late) ? 0 : late;
        /* A lost probe took at least the probe's timeout: it counts as that
         * in the quantiles, not as nothing (which would flatter the p99). */
        for (double l = 0; l < lost; l++) {
            if (pl->n == cap)
                pl->v = cal_realloc(pl->v, (cap *= 2) * sizeof(double));
            pl->v[pl->n++] = CDC_LOST_MS;
        }
        json_array_foreach(json_object_get(cdc, "samples_ms"), k, s)
        {
            if (pl->n == cap)
                pl->v = cal_realloc(pl->v, (cap *= 2) * sizeof(double));
            pl->v[pl->n++] = json_number_value(s);
        }
        double h;
        if (pl->nh50 < MAX_REPS && !isnan(h = num_at(cdc, "hist_p50_ms")))
            pl->h50[pl->nh50++] = h;
        if (pl->nh99 < MAX_REPS && !isnan(h = num_at(cdc, "hist_p99_ms")))
            pl->h99[pl->nh99++] = h;
    }
}

/* Did any run's probe see an invalidation? */
static bool
cdc_ran(const json_t *runs)
{
    size_t i;
    const json_t *run;
    json_array_foreach(runs, i, run)
    {
        if (json_is_true(json_object_get(json_object_get(run, "cdc"), "running")))
            return true;
    }
    return false;
}

/* The CDC figures: per concurrency, every probe sample of its booking runs
 * pooled; the headline (top-level p50/p99/max) is the highest concurrency,
 * and not measured when that one has no probe (never a lower one's). */
static json_t *
report_cdc(const json_t *runs, FILE *out)
{
    double conc[MAX_CONC];
    size_t nconc = cdc_ran(runs) ? distinct_values(runs, "book", "conc", conc) : 0, shown = 0;
    json_t *obj = json_object(), *by_conc = json_object();
    struct cdc_pool pl = {0};
    fprintf(out, "\n");
    for (size_t c = 0; c < nconc; c++) {
        free(pl.v);
        cdc_pool_at(runs, conc[c], &pl);
        if (pl.n == 0)
            continue;
        double p50 = quantile_of(pl.v, pl.n, 0.5), p99 = quantile_of(pl.v, pl.n, 0.99);
        double max = pl.v[pl.n - 1];
        fprintf(out,
                "cdc c=%-3g commit-to-invalidation (end-to-end probe while bookings run): %4zu "
                "samples over %zu runs, p50 %6.2f ms, p99 %7.2f ms, max %7.2f ms, %.0f lost "
                "(>2 s, counted as 2 s), %.0f started late%s\n",
                conc[c], pl.n, pl.runs, p50, p99, max, pl.lost, pl.late,
                p99 < 50 ? "" : "  p99 >= 50 ms");
        char key[16];
        snprintf(key, sizeof(key), "%g", conc[c]);
        json_object_set_new(by_conc, key,
                            json_pack("{s:i,s:f,s:f,s:f,s:i,s:i}", "samples", (json_int_t)pl.n,
                                      "p50_ms", round(p50 * 1000) / 1000, "p99_ms",
                                      round(p99 * 1000) / 1000, "max_ms", round(max * 1000) / 1000,
                                      "lost", (json_int_t)pl.lost, "late", (json_int_t)pl.late));
        shown++;
        if (c + 1 < nconc)
            continue;
        /* the highest concurrency is the headline */
        json_object_set_new(obj, "conc", json_real(conc[c]));
        json_object_set_new(obj, "samples", json_integer((json_int_t)pl.n));
        json_object_set_new(obj, "lost", json_integer((json_int_t)pl.lost));
        json_object_set_new(obj, "p50_ms", json_real(round(p50 * 1000) / 1000));
        json_object_set_new(obj, "p99_ms", json_real(round(p99 * 1000) / 1000));
        json_object_set_new(obj, "max_ms", json_real(round(max * 1000) / 1000));
        struct fig g50 = fig_of(pl.h50, pl.nh50), g99 = fig_of(pl.h99, pl.nh99);
        json_object_set_new(obj, "invalidator_hist_p50_ms", fig_json(g50));
        json_object_set_new(obj, "invalidator_hist_p99_ms", fig_json(g99));
        if (c + 1 == nconc && pl.nh50 > 0)
            fprintf(out,
                    "cdc c=%-3g invalidator's own histogram: p50 %.1f ms, p99 %.1f ms (from "
                    "the relay's produce to the delete: the pipeline after the binlog read)\n",
                    conc[c], g50.med, g99.med);
    }
    free(pl.v);
    json_object_set_new(obj, "running", json_boolean(shown > 0));
    if (shown > 0 && json_object_get(obj, "p99_ms") == NULL) {
        fprintf(out, "cdc c=%g: not measured (no probe at the highest concurrency)\n",
                conc[nconc - 1]);
        json_object_set_new(obj, "conc", json_real(conc[nconc - 1]));
        json_object_set_new(obj, "samples", json_integer(0));
        json_object_set_new(obj, "p50_ms", json_null());
        json_object_set_new(obj, "p99_ms", json_null());
        json_object_set_new(obj, "max_ms", json_null());
    }
    if (shown == 0) {
        fprintf(out, "cdc: not running\n");
        json_object_set_new(obj, "samples", json_integer(0));
        json_object_set_new(obj, "p50_ms", json_null());
        json_object_set_new(obj, "p99_ms", json_null());
        json_object_set_new(obj, "max_ms", json_null());
    }
    json_object_set_new(obj, "by_conc", by_conc);
    return obj;
}

/* Open-loop searches (phase "paced"): per offered rate and target, the
 * runs' medians; rows in the order of the rates. */
static json_t *
report_paced(const json_t *runs, FILE *out)
{
    double rates[MAX_CONC];
    size_t nrates = distinct_values(runs, "paced", "offered_per_s", rates), i;
    const json_t *run;
    json_t *rows = json_array();
    if (nrates == 0)
        return rows;
    fprintf(out, "\nsearch-50, open loop: requests due at a fixed rate (Poisson arrivals over the "
                 "connections), latency from when each was due; median [min..max] of the runs\n");
    fprintf(out, "%9s %-9s %4s %22s %7s %7s %7s %6s %6s\n", "offered/s", "target", "conc", "ok/s",
            "p50ms", "p99ms", "stdy99", "kept%", "slow%");
    static const struct metric m_ok = {"ok_per_s", "ok_per_s", false},
                               m_p50 = {"p50_ms", "p50_ms", false},
                               m_p99 = {"p99_ms", "p99_ms", false},
                               m_st = {"steady_p99_ms", "steady_p99_ms", false},
                               m_kept = {"steady_share", "steady_share", false},
                               m_slow = {"slow_share", "cpu_slow.below_half", false};
    for (size_t k = 0; k < nrates; k++) {
        json_t *row = json_pack("{s:f}", "offered_per_s", rates[k]);
        for (size_t t = 0; t < CAL_ARRAY_LEN(targets); t++) {
            double conc = NAN;
            json_t *obj = json_object();
            struct fig f[6];
            const struct metric *ms[6] = {&m_ok, &m_p50, &m_p99, &m_st, &m_kept, &m_slow};
            for (size_t m = 0; m < 6; m++) {
                double v[MAX_REPS];
                size_t n = 0;
                json_array_foreach(runs, i, run)
                {
                    double x = num_at(run, ms[m]->field);
                    if (n == MAX_REPS || isnan(x) || num_at(run, "offered_per_s") != rates[k] ||
                        !run_is(run, "paced", "search50", targets[t], num_at(run, "conc")))
                        continue;
                    conc = num_at(run, "conc");
                    v[n++] = x;
                }
                f[m] = fig_of(v, n);
                json_object_set_new(obj, ms[m]->name, fig_json(f[m]));
            }
            json_object_set_new(obj, "runs", json_integer((json_int_t)f[0].n));
            json_object_set_new(row, targets[t], obj);
            if (f[0].n == 0)
                continue;
            fprintf(out, "%9.0f %-9s %4g", rates[k], targets[t], conc);
            print_fig(out, f[0], 22, 0, true);
            print_fig(out, f[1], 7, 2, false);
            print_fig(out, f[2], 7, 2, false);
            print_fig(out, f[3], 7, 2, false);
            f[4].med *= 100; /* shares, printed as percentages */
            f[5].med *= 100;
            print_fig(out, f[4], 6, 0, false);
            print_fig(out, f[5], 6, 1, false);
            fputc('\n', out);
        }
        json_array_append_new(rows, row);
    }
    return rows;
}

/* The median at c = 64 (or the highest concurrency measured). */
static double
headline(const json_t *runs, const char *phase, const char *workload, const char *target,
         const struct metric *m, double *conc_used)
{
    double conc[MAX_CONC];
    size_t n = distinct_values(runs, phase, "conc", conc);
    double c = n ? conc[n - 1] : 64;
    for (size_t i = 0; i < n; i++)
        if (conc[i] == 64)
            c = 64;
    *conc_used = c;
    if (target == NULL)
        return ratio_for(runs, phase, workload, c).med;
    struct fig f = fig_for(runs, phase, workload, target, c, m);
    return f.n ? f.med : NAN;
}

static json_t *
num_or_null(double v)
{
    return isnan(v) ? json_null() : json_real(round(v * 1000) / 1000);
}

/* A per-concurrency figure's mark: " (met)", " (MISSED)", or "" unmeasured. */
static const char *
verdict(bool measured, bool met)
{
    return !measured ? "" : met ? " (met)" : " (MISSED)";
}

static void
print_target(FILE *out, const char *what, double v, const char *cmp, double goal)
{
    bool met = !isnan(v) && (strcmp(cmp, ">=") == 0  ? v >= goal
                             : strcmp(cmp, ">") == 0 ? v > goal
                                                     : v < goal);
    if (isnan(v))
        fprintf(out, "  %-44s       n/a  (target %s %g)  NOT MEASURED\n", what, cmp, goal);
    else
        fprintf(out, "  %-44s %9.3f  (target %s %g)  %s\n", what, v, cmp, goal,
                met ? "met" : "MISSED");
}

/* Median, min and max of a field over every run that has it; n = 0 when none. */
static struct fig
fig_over_runs(const json_t *runs, const char *field)
{
    size_t n = 0, i;
    double *v = cal_malloc((json_array_size(runs) + 1) * sizeof(*v));
    const json_t *run;
    json_array_foreach(runs, i, run)
    {
        double x = num_at(run, field);
        if (!isnan(x))
            v[n++] = x;
    }
    struct fig f = fig_of(v, n);
    free(v);
    return f;
}

/* How much of the machine the hypervisor took during the measured runs
 * (steal), and how much of the time its cores ran slow without any steal
 * (the speed probe): the noise the figures carry. Sets *steal and *slow to
 * [median, min, max] per run, or null when no run measured it. */
static void
report_noise(const json_t *runs, FILE *out, json_t **steal, json_t **slow)
{
    struct fig st = fig_over_runs(runs, "cpu.steal"),
               sl = fig_over_runs(runs, "cpu_slow.below_half");
    struct fig sl3 = fig_over_runs(runs, "cpu_slow.below_third");
    *steal = st.n ? fig_json(st) : json_null();
    *slow = sl.n ? fig_json(sl) : json_null();
    if (st.n > 0)
        fprintf(out,
                "noise: CPU taken by the hypervisor (steal) during the %zu runs: median %.2f, "
                "min %.2f, max %.2f cores\n",
                st.n, st.med, st.min, st.max);
    if (sl.n > 0)
        fprintf(out,
                "noise: slow spells (a fixed computation, timed every 2 ms in thread CPU time, "
                "took over 2x its fast time): %.1f %% of each run's probes (median; %.1f..%.1f), "
                "over 3x: %.1f %%\n",
                sl.med * 100, sl.min * 100, sl.max * 100, sl3.med * 100);
}

/* Runs that got errors (5xx other than 503, transport failures, unexpected
 * answers): their figures are printed like the others, so they are named
 * here. Returns the total. */
static json_int_t
report_errors(const json_t *runs, FILE *out)
{
    json_int_t total = 0;
    size_t i;
    const json_t *run;
    json_array_foreach(runs, i, run)
    {
        double e = num_at(run, "errors");
        /* A CDC probe that could not write: no sample, so not hidden either. */
        double f = num_at(json_object_get(run, "cdc"), "failed");
        if (!isnan(f) && f > 0) {
            total += (json_int_t)f;
            fprintf(out, "errors: %s %s %s c=%g: %.0f cdc probes failed to write\n",
                    json_string_value(json_object_get(run, "phase")),
                    json_string_value(json_object_get(run, "workload")),
                    json_string_value(json_object_get(run, "target")), num_at(run, "conc"), f);
        }
        if (isnan(e) || e <= 0)
            continue;
        total += (json_int_t)e;
        fprintf(out, "errors: %s %s %s c=%g: %.0f\n",
                json_string_value(json_object_get(run, "phase")),
                json_string_value(json_object_get(run, "workload")),
                json_string_value(json_object_get(run, "target")), num_at(run, "conc"), e);
    }
    if (total == 0)
        fprintf(out, "errors: none in any run\n");
    return total;
}

/* Read runs whose cache was not warm (under 100 % of keys found, or a
 * failed cache operation during the window, or unknown): a read figure
 * means "cache hits" only when every lookup found every key. */
static void
report_cold(const json_t *runs, FILE *out)
{
    size_t i, cold = 0;
    const json_t *run;
    json_array_foreach(runs, i, run)
    {
        const char *phase = json_string_value(json_object_get(run, "phase"));
        if (phase == NULL || (strcmp(phase, "read") != 0 && strcmp(phase, "paced") != 0))
            continue;
        double h = num_at(run, "cache_hit_ratio"), e = num_at(run, "cache_errors");
        if (!isnan(h) && h >= 0.9995 && !(e > 0))
            continue;
        cold++;
        fprintf(out, "cache: %s %s %s c=%g: ", phase,
                json_string_value(json_object_get(run, "workload")),
                json_string_value(json_object_get(run, "target")), num_at(run, "conc"));
        if (isnan(h))
            fprintf(out, "hit ratio unknown (/metrics did not answer)\n");
        else
            fprintf(out, "%.2f %% hits, %.0f failed cache operations: not a warm cache\n", h * 100,
                    e > 0 ? e : 0);
    }
    if (cold == 0)
        fprintf(out, "cache: every read run at 100 %% hits\n");
}

static void
machine(char *buf, size_t size)
{
    char line[256], model[128] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            cal_strlcpy(model, colon + 2, sizeof(model));
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    snprintf(buf, size, "%ld cores, %s", sysconf(_SC_NPROCESSORS_ONLN), model);
}

cal_status
report_run(const char *runs_path, const char *out_dir, FILE *out)
{
    json_t *runs = json_array();
    char line[65536], mach[256];
    FILE *f = fopen(runs_path, "r");
    if (f == NULL) {
        fprintf(stderr, "report: cannot open %s\n", runs_path);
        json_decref(runs);
        return CAL_EINVAL;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        json_t *run = json_loads(line, 0, NULL);
        if (json_is_object(run) && json_object_get(run, "target") != NULL)
            json_array_append(runs, run);
        json_decref(run);
    }
    fclose(f);
    machine(mach, sizeof(mach));
    json_t *rows = json_array();
    fprintf(out, "machine: %s\n", mach);
    json_t *noise, *slow;
    report_noise(runs, out, &noise, &slow);
    report_phase(runs, "book", book_workloads, CAL_ARRAY_LEN(book_workloads), book_metrics,
                 CAL_ARRAY_LEN(book_metrics), out_dir, out, rows);
    report_phase(runs, "read", read_workloads, CAL_ARRAY_LEN(read_workloads), read_metrics,
                 CAL_ARRAY_LEN(read_metrics), out_dir, out, rows);
    json_t *paced = report_paced(runs, out);
    json_t *cdc = report_cdc(runs, out);
    json_int_t errors = report_errors(runs, out);
    report_cold(runs, out);

    double c1, c3, c4, c5;
    double booking_ratio = headline(runs, "book", "low", NULL, NULL, &c1);
    struct fig high_low_fig = high_low_for(runs, c1);
    double read_ratio = headline(runs, "read", "single", NULL, NULL, &c3);
    double search_ratio = headline(runs, "read", "search50", NULL, NULL, &c4);
    double search_p99 = headline(runs, "read", "search50", "calendard", &read_metrics[2], &c5);
    double cdc_p99 = NAN;
    const json_t *p99 = json_object_get(cdc, "p99_ms");
    if (json_is_number(p99))
        cdc_p99 = json_number_value(p99);
    double high_low = high_low_fig.n ? high_low_fig.med : NAN;
    /* The booking_ratio target holds at every concurrency: its verdict is
     * the lowest median, and each concurrency's is printed below. */
    double bconc[MAX_CONC];
    size_t nbconc = distinct_values(runs, "book", "conc", bconc);
    double lowest_ratio = NAN;
    json_t *ratio_by_conc = json_object();
    for (size_t i = 0; i < nbconc; i++) {
        struct fig rf = ratio_for(runs, "book", "low", bconc[i]);
        char key[16];
        snprintf(key, sizeof(key), "%g", bconc[i]);
        json_object_set_new(ratio_by_conc, key, fig_json(rf));
        if (rf.n && (isnan(lowest_ratio) || rf.med < lowest_ratio))
            lowest_ratio = rf.med;
    }
    fprintf(out, "\ntargets (at concurrency %g):\n", c1);
    print_target(out, "booking_ratio (low contention, calendard/raw)", booking_ratio, ">=", 0.9);
    print_target(out, "booking_ratio, lowest over the concurrencies", lowest_ratio, ">=", 0.9);
    print_target(out, "booking_ratio goal (past the raw ceiling)", booking_ratio, ">", 2);
    print_target(out, "high / low contention successful bookings", high_low, ">=", 0.8);
    print_target(out, "read_ratio (single reads, calendard/raw)", read_ratio, ">=", 0.5);
    print_target(out, "search_read_ratio (search-50, calendard/raw)", search_ratio, ">=", 0.5);
    print_target(out, "search-50 p99 ms (calendard)", search_p99, "<", 5);
    /* Beside the search p99: the raw gets' own p99 at that concurrency, and
     * the mean wait of a closed loop of c clients at calendard's X/s. */
    struct fig raw_search_p99 = fig_for(runs, "read", "search50", "raw", c5, &read_metrics[2]);
    struct fig cal_search_rate =
        fig_for(runs, "read", "search50", "calendard", c5, &read_metrics[0]);
    double raw_p99 = raw_search_p99.n ? raw_search_p99.med : NAN;
    double mean_wait =
        cal_search_rate.n && cal_search_rate.med > 0 ? c5 / cal_search_rate.med * 1000 : NAN;
    if (!isnan(raw_p99) && !isnan(mean_wait))
        fprintf(out,
                "  search-50 at c=%g beside its bounds: raw gets' p99 %.2f ms; closed-loop mean "
                "%g / %.0f per s = %.2f ms (Little's law)\n",
                c5, raw_p99, c5, cal_search_rate.med, mean_wait);
    print_target(out, "cdc commit-to-invalidation p99 ms", cdc_p99, "<", 50);
    /* A closed loop of c clients at X requests/s waits c / X on average
     * (Little's law): the p99 target only means something per concurrency. */
    double conc[MAX_CONC];
    size_t nconc = distinct_values(runs, "read", "conc", conc);
    json_t *by_conc = json_object();
    fprintf(out, "  booking_ratio (low contention) by concurrency (target >= 0.9):");
    for (size_t i = 0; i < nbconc; i++) {
        struct fig rf = ratio_for(runs, "book", "low", bconc[i]);
        fprintf(out, " c=%g %.2f [%.2f..%.2f]%s", bconc[i], rf.med, rf.min, rf.max,
                verdict(rf.n, rf.med >= 0.9));
    }
    fprintf(out, "\n");
    /* The issue judges the read ratios at the highest concurrency; the
     * others are shown with the same bar. */
    json_t *read_by_conc[2] = {json_object(), json_object()};
    static const char *const read_names[2] = {"single", "search50"};
    for (size_t w = 0; w < 2; w++) {
        fprintf(out, "  %s by concurrency (judged at c=%g; >= 0.5 marked at each):",
                w == 0 ? "read_ratio" : "search_read_ratio", c1);
        for (size_t i = 0; i < nconc; i++) {
            struct fig rf = ratio_for(runs, "read", read_names[w], conc[i]);
            char key[16];
            snprintf(key, sizeof(key), "%g", conc[i]);
            json_object_set_new(read_by_conc[w], key, fig_json(rf));
            fprintf(out, " c=%g %.2f%s", conc[i], rf.med, verdict(rf.n, rf.med >= 0.5));
        }
        fprintf(out, "\n");
    }
    fprintf(out,
            "  high / low contention (calendard, paired runs) by concurrency (target >= 0.8):");
    json_t *high_low_by_conc = json_object();
    for (size_t i = 0; i < nbconc; i++) {
        struct fig hf = high_low_for(runs, bconc[i]);
        char key[16];
        snprintf(key, sizeof(key), "%g", bconc[i]);
        if (hf.n == 0) {
            fprintf(out, " c=%g n/a", bconc[i]);
            json_object_set_new(high_low_by_conc, key, json_null());
        } else {
            fprintf(out, " c=%g %.2f [%.2f..%.2f]%s", bconc[i], hf.med, hf.min, hf.max,
                    verdict(1, hf.med >= 0.8));
            json_object_set_new(high_low_by_conc, key,
                                json_pack("[f,f,f]", round(hf.med * 1000) / 1000,
                                          round(hf.min * 1000) / 1000,
                                          round(hf.max * 1000) / 1000));
        }
    }
    fprintf(out, "\n");
    fprintf(out, "  search-50 p99 ms (calendard) by concurrency:");
    for (size_t i = 0; i < nconc; i++) {
        struct fig sf = fig_for(runs, "read", "search50", "calendard", conc[i], &read_metrics[2]);
        char key[16];
        snprintf(key, sizeof(key), "%g", conc[i]);
        fprintf(out, " c=%g %.2f%s", conc[i], sf.med, verdict(sf.n, sf.med < 5));
        json_object_set_new(by_conc, key,
                            sf.n ? json_real(round(sf.med * 1000) / 1000) : json_null());
    }
    fprintf(out, "\n");
    size_t pk;
    const json_t *prow;
    if (json_array_size(paced) > 0) {
        fprintf(out, "  search-50 p99 ms (calendard), open loop, outside the slow spells in ():");
        json_array_foreach(paced, pk, prow)
        {
            const json_t *cal = json_object_get(prow, "calendard");
            const json_t *p = json_array_get(json_object_get(cal, "p99_ms"), 0);
            const json_t *st = json_array_get(json_object_get(cal, "steady_p99_ms"), 0);
            fprintf(out, " %.0f/s ", num_at(prow, "offered_per_s"));
            if (json_is_number(p))
                fprintf(out, "%.2f", json_number_value(p));
            else
                fprintf(out, "n/a");
            if (json_is_number(st))
                fprintf(out, " (%.2f)", json_number_value(st));
            else
                fprintf(out, " (n/a)");
            fprintf(out, "%s", verdict(json_is_number(p), json_number_value(p) < 5));
        }
        fprintf(out, "\n");
    }
    const char *ckey;
    const json_t *cfig;
    fprintf(out, "  cdc commit-to-invalidation p99 ms by concurrency:");
    json_object_foreach(json_object_get(cdc, "by_conc"), ckey, cfig)
    {
        double v = num_at(cfig, "p99_ms");
        fprintf(out, " c=%s %.2f%s", ckey, v, verdict(!isnan(v), v < 50));
    }
    fprintf(out, "\n");

    json_t *all =
        json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:i,s:o}", "machine", mach, "booking_ratio",
                  num_or_null(booking_ratio), "read_ratio", num_or_null(read_ratio),
                  "search_read_ratio", num_or_null(search_ratio), "high_low_booking_ratio",
                  num_or_null(high_low), "search50_p99_ms", num_or_null(search_p99), "cdc_p99_ms",
                  num_or_null(cdc_p99), "rows", rows, "cdc", cdc, "headline_conc", (int)c1,
                  "figures", json_string("[median, min, max] over the runs of a row"));
    json_object_set_new(all, "booking_ratio_min_over_conc", num_or_null(lowest_ratio));
    json_object_set_new(all, "booking_ratio_by_conc", ratio_by_conc);
    json_object_set_new(all, "read_ratio_by_conc", read_by_conc[0]);
    json_object_set_new(all, "search_read_ratio_by_conc", read_by_conc[1]);
    json_object_set_new(all, "search50_p99_ms_by_conc", by_conc);
    json_object_set_new(all, "search50_raw_p99_ms", num_or_null(raw_p99));
    json_object_set_new(all, "search50_closed_loop_mean_ms", num_or_null(mean_wait));
    json_object_set_new(all, "high_low_booking_ratio_by_conc", high_low_by_conc);
    json_object_set_new(all, "search50_paced", paced);
    json_object_set_new(all, "errors", json_integer(errors));
    json_object_set_new(all, "steal_cores", noise);
    json_object_set_new(all, "slow_spell_share", slow);
    char *text = json_dumps(all, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    fprintf(out, "\n%s\n", text);
    free(text);
    json_decref(all);
    json_decref(runs);
    return CAL_OK;
}
