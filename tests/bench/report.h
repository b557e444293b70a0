/* The report over a benchmark's runs: reads the JSON lines the measured runs
 * printed, takes the median (with min and max) of every figure per
 * configuration, pairs the calendard and raw runs of a configuration in the
 * order they ran (they were interleaved) for the ratios, prints the table and
 * last one JSON line with every figure, and writes the gnuplot data files. */
#ifndef CAL_BENCH_REPORT_H
#define CAL_BENCH_REPORT_H

#include <stdio.h>

#include "common/status.h"

/* runs: the JSONL file; out_dir: where <phase>-<workload>.dat files go. */
cal_status report_run(const char *runs, const char *out_dir, FILE *out);

#endif
