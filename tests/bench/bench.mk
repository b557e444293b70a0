# Benchmarks (issue 5), included from the top-level Makefile after the
# project libraries, LINK and obj are defined:
#   make bench        full run, < 10 min: table, JSON line, docs/bench-*.png
# (They build the programs, not the test binaries: a benchmark needs only the daemons.)
#   make bench-quick  the same output in < 2 min (fewer and shorter runs)
BENCH_SRC := $(wildcard tests/bench/*.c)

bin/calendar-bench: $(call obj,$(BENCH_SRC)) $(PROJECT_LIBS)
	$(Q)$(LINK)

.PHONY: bench bench-quick
bench: $(PROGRAMS) bin/calendar-bench
	$(Q)tests/bench/run.sh

bench-quick: $(PROGRAMS) bin/calendar-bench
	$(Q)tests/bench/run.sh --quick

# The unit test of the benchmark's arithmetic links its shared pieces.
$(BUILD)/tests/unit/check_bench: $(call obj,tests/bench/bench.c)
