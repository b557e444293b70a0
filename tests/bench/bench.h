/* Shared pieces of the benchmark driver (calendar-bench): a per-thread
 * random generator, latency samples, the stay workload, the listing -> shard
 * routes read from the catalog, CPU sampling of the stack's processes, and
 * the one JSON line every measured run prints. */
#ifndef CAL_BENCH_H
#define CAL_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"
#include "tests/lib/testenv.h"

#define BENCH_MAX_PROCS 8

/* xorshift64*: cheap enough that the load generator never waits on it. */
struct bench_rng {
    uint64_t s;
};

void bench_rng_init(struct bench_rng *rng, uint64_t seed);
uint64_t bench_rng_next(struct bench_rng *rng);
/* Uniform in [0, n); n > 0. */
uint64_t bench_rng_below(struct bench_rng *rng, uint64_t n);
/* Exponentially distributed with the given mean: the gaps between the
 * arrivals of a Poisson process. */
double bench_rng_exp(struct bench_rng *rng, double mean);

/* n distinct ids drawn uniformly from [first, first + count) into out;
 * n <= count. A real search never names a listing twice. */
void bench_pick_distinct(struct bench_rng *rng, uint64_t first, uint64_t count, size_t n,
                         uint64_t *out);

/* Latency samples in microseconds, each with the moment it ended, bounded:
 * past cap they are counted but not stored (the count of every run is
 * bounded long before that). */
struct bench_lat {
    uint32_t *us;
    double *end; /* bench_now() when each sample was added; NULL once sorted */
    size_t n, cap;
    uint64_t dropped;
};

void bench_lat_init(struct bench_lat *lat, size_t cap);
void bench_lat_deinit(struct bench_lat *lat);
void bench_lat_add(struct bench_lat *lat, uint64_t us);
/* Appends src's samples to dst. */
void bench_lat_merge(struct bench_lat *dst, const struct bench_lat *src);
/* Sorts in place (the end times go), then answers the q-quantile (0..1) in
 * milliseconds; 0 when empty. */
double bench_lat_quantile_ms(struct bench_lat *lat, double q);

/* Stays: listings [first_id, first_id + nlistings), check-in uniform over
 * [today + first_day, today + first_day + horizon), 1..max_nights nights. */
struct bench_stays {
    uint64_t first_id;
    uint64_t nlistings;
    int32_t first_day; /* days since epoch, already offset from today */
    int32_t horizon;
    int max_nights;
};

void bench_stay_next(const struct bench_stays *stays, struct bench_rng *rng, uint64_t *listing_id,
                     int32_t *check_in, int32_t *check_out);

/* The shard of every vbucket, from the catalog, as indexes into env->shard_dsns. */
struct bench_routes {
    int16_t shard_of[TESTENV_NUM_VBUCKETS];
    size_t nshards;
};

cal_status bench_routes_load(const struct testenv *env, struct bench_routes *routes, char *err,
                             size_t errlen);
size_t bench_routes_shard(const struct bench_routes *routes, uint64_t listing_id);

/* CPU of named processes of the stack ("calendard=PID,mariadbd=PID,...";
 * several pids may share a name and are summed) and of this process. */
struct bench_cpu {
    size_t nprocs;
    char name[BENCH_MAX_PROCS][16];
    int pid[BENCH_MAX_PROCS];
    uint64_t ticks[BENCH_MAX_PROCS]; /* utime + stime at the last sample */
    double self_s;                   /* user + system seconds of this process */
    uint64_t mono_us;
    uint64_t busy, steal; /* /proc/stat, all CPUs: ticks busy, stolen by the hypervisor */
};

cal_status bench_cpu_parse(struct bench_cpu *cpu, const char *spec, char *err, size_t errlen);
void bench_cpu_sample(struct bench_cpu *cpu);
/* {"calendard":0.93,"mariadbd":0.61,...,"client":0.12,"machine":1.81,
 * "steal":0.05}: cores used between the samples a and b (same spec) by each
 * process, by the whole machine, and taken by the hypervisor, written to out. */
void bench_cpu_print(FILE *out, const struct bench_cpu *a, const struct bench_cpu *b);

/* The machine's own speed while a run measures: a thread times a fixed
 * computation of about 10 us every 2 ms in its own CPU time (so waiting for
 * a core does not count, only how fast the core ran while it had one).
 * This VM's cores sometimes run several times slower for ~100 ms with no
 * steal reported; the shares below say how much of a run that was. */
struct bench_speed {
    pthread_t thread;
    atomic_bool stop;
    bool started;
    size_t n, cap;
    uint32_t *ns; /* CPU time of each probe */
    double *at;   /* bench_now() when each probe started */
    /* after bench_speed_stop, against the run's own fast probes (p10): */
    double below_half, below_third; /* shares of probes at < 1/2, < 1/3 of that speed */
    size_t nspells;                 /* slow spells: from the probe before a slow */
    double *spell_from, *spell_to;  /* one to the probe after it, merged, in order */
};

void bench_speed_start(struct bench_speed *sp);
void bench_speed_stop(struct bench_speed *sp);
/* The shares and spells of the n probes in ns[] and at[] (done by stop). */
void bench_speed_summarize(struct bench_speed *sp);
void bench_speed_deinit(struct bench_speed *sp);
/* ,"cpu_slow":{"probes":N,"below_half":S,"below_third":T,"spells":K} */
void bench_speed_print(FILE *out, const struct bench_speed *sp);
/* Did [from, to] overlap a slow spell? (after bench_speed_stop) */
bool bench_speed_slow_between(const struct bench_speed *sp, double from, double to);
/* The q-quantile in ms of the samples that overlapped no slow spell (call
 * before bench_lat_quantile_ms, which drops the end times); *kept: their
 * share of all samples. NAN when none is left, the end times are gone, or
 * the probe took no sample. */
double bench_lat_steady_quantile_ms(const struct bench_lat *lat, const struct bench_speed *sp,
                                    double q, double *kept);

/* Monotonic seconds, and a sleep until such a moment. */
double bench_now(void);
void bench_sleep_until(double t);

/* The common part of a run's JSON line, without the closing brace. */
struct bench_run {
    const char *phase;    /* "book" | "read" */
    const char *workload; /* "low" | "high" | "single" | "search50" */
    const char *target;   /* "calendard" | "raw" */
    unsigned conc;
    double secs;
    uint64_t ok;          /* successful bookings / answered reads */
    uint64_t attempts;    /* requests or transactions answered in the window */
    uint64_t unavailable; /* 409 nights_unavailable */
    uint64_t errors;      /* transport errors and unexpected answers */
    uint64_t gave_up;     /* 503 answers (contention, overloaded) */
    uint64_t retries;     /* conflict retries: calendard /metrics delta or raw's own */
    uint64_t conflicts;
    /* calendard's bookings per transaction and per calendar read statement
     * over the window (/metrics deltas); 0: not known (raw runs, reads). */
    double per_txn, per_read;
    struct bench_lat *lat; /* of the successful operations */
    /* p99 of those that overlapped none of the machine's slow spells, and
     * their share (bench_lat_steady_quantile_ms); kept 0: not known. */
    double steady_p99_ms, steady_kept;
};

void bench_run_print(FILE *out, struct bench_run *run);

#endif
