/* Commit-to-invalidation latency of the CDC pipeline, measured end to end:
 * set a listing-month cache key, write a night of that month straight into
 * the owning shard with SQL (bypassing calendard, which would delete the key
 * itself), and poll memcached until the key is gone. Also reads the
 * invalidator's own histogram when its metrics URL is known. */
#ifndef CAL_BENCH_CDC_PROBE_H
#define CAL_BENCH_CDC_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tests/bench/bench.h"

struct cdc_probe_conf {
    const struct testenv *env;
    const struct bench_routes *routes;
    uint64_t first_id; /* probe listings [first_id, first_id + count), seeded, one per probe */
    uint64_t count;
    int32_t night;           /* the night written on each, days since epoch */
    unsigned timeout_ms;     /* a key still there after this long: a lost invalidation */
    unsigned interval_ms;    /* a probe starts every interval_ms, on a fixed schedule */
    const char *metrics_url; /* the invalidator's /metrics, or NULL */
};

struct cdc_probe_result {
    bool running; /* a probe of the run saw its key deleted */
    uint64_t probes, timeouts;
    uint64_t failed;      /* launches whose memcached set or SQL write failed: no sample */
    uint64_t late;        /* started a whole interval behind the schedule (launchers busy) */
    struct bench_lat lat; /* commit returned -> key gone */
    /* From the invalidator's histogram delta over the probe's life; -1 = unknown. */
    double hist_count, hist_p50_ms, hist_p99_ms;
};

struct cdc_probe;

/* Runs one probe synchronously first, then the others on launcher threads
 * until cdc_probe_stop(), one starting every interval_ms however many are
 * still pending, and a poller thread that watches them all. A probe whose key is not deleted within
 * timeout_ms is lost (timeouts), the first one too; running says whether any probe of the run saw
 * its key deleted (false: the pipeline is not there, and the bench stops probing). Caller ends with
 * cdc_probe_stop(). */
struct cdc_probe *cdc_probe_start(const struct cdc_probe_conf *conf, char *err, size_t errlen);

/* Stops the probe thread and fills res (caller frees res->lat with
 * bench_lat_deinit()); frees probe. */
void cdc_probe_stop(struct cdc_probe *probe, struct cdc_probe_result *res);

#endif
