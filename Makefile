# calendar reservation store: plain Makefile.
#   make            build every program into bin/ (calendar-bench and calendar-faultprobe:
#                   by make bench / make faults)
#   make run        install missing packages, build, run the local stack (Ctrl-C stops it)
#   make test       install missing packages, build, unit + integration tests on a private stack
#   make SANITIZER=address,undefined test   the same under sanitizers

CC        ?= cc
PKGS      := libmariadb libmicrohttpd jansson inih libcurl check libmemcached rdkafka zlib
WARN      ?= -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Werror
OPT       ?= -O2 -g
CFLAGS    ?= $(OPT)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -MMD -MP -I. \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

ifneq ($(SANITIZER),)
ALL_CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS    += -fsanitize=$(SANITIZER)
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

BUILD := build

is_main = $(filter %/main.c %_main.c,$(1))
lib_srcs = $(filter-out $(call is_main,$(1)),$(1))

COMMON_SRC    := $(wildcard common/*.c)
SHARDING_SRC  := $(call lib_srcs,$(wildcard sharding/*.c))
CALENDARD_SRC := $(call lib_srcs,$(wildcard calendard/*.c))
CDC_SRC       := $(call lib_srcs,$(wildcard cdc/*.c))
TESTLIB_SRC   := $(wildcard tests/lib/*.c)
STRESS_SRC    := $(wildcard tests/stress/*.c)
UNIT_SRC      := $(wildcard tests/unit/check_*.c)
INTEG_SRC     := $(wildcard tests/integration/check_*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

LIBCOMMON    := $(BUILD)/libcommon.a
LIBSHARDING  := $(BUILD)/libsharding.a
LIBCALENDARD := $(BUILD)/libcalendard.a
LIBCDC       := $(BUILD)/libcdc.a
LIBTEST      := $(BUILD)/libtest.a
# Link order: dependents before what they depend on.
PROJECT_LIBS := $(LIBTEST) $(LIBCALENDARD) $(LIBCDC) $(LIBSHARDING) $(LIBCOMMON)

PROGRAMS := bin/calendard bin/calendar-admin bin/calendar-stress
PROGRAMS += $(if $(wildcard cdc/devbroker_main.c),bin/calendar-devbroker)
PROGRAMS += $(if $(wildcard cdc/relay_main.c),bin/calendar-cdc-relay)
PROGRAMS += $(if $(wildcard cdc/invalidator_main.c),bin/calendar-cdc-invalidator)
PROGRAMS += $(if $(wildcard sharding/rebalance_main.c),bin/calendar-rebalance)
UNIT_BINS  := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
INTEG_BINS := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRC))

# A build needs the libraries `make deps` installs (make test and make run
# install them first): name the missing ones instead of failing on headers.
NO_LIB_GOALS := deps test run clean format format-check stack-down
ifneq ($(filter-out $(NO_LIB_GOALS),$(or $(MAKECMDGOALS),all)),)
ifneq ($(shell pkg-config --exists $(PKGS) 2>/dev/null && echo ok),ok)
$(error missing libraries: $(foreach p,$(PKGS),$(if $(shell pkg-config --exists $(p) 2>/dev/null && echo ok),,$(p))); run 'make deps' (or make test / make run, which install them))
endif
endif

.PHONY: all deps run test unit integration stack-up stack-down \
        format format-check clean tests-build fuzz fuzz-build
all: $(PROGRAMS) tests-build

tests-build: $(UNIT_BINS) $(INTEG_BINS)

# Objects depend on the flags they were built with: switching SANITIZER (or
# CFLAGS) rebuilds everything instead of linking stale objects.
FLAGS_STAMP := $(BUILD)/.flags-$(shell echo '$(CC) $(ALL_CFLAGS) $(LDFLAGS)' | md5sum | cut -c1-12)
$(FLAGS_STAMP):
	@mkdir -p $(BUILD)
	@rm -f $(BUILD)/.flags-*
	@touch $@

$(BUILD)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

define make_lib
$(1): $(call obj,$(2))
	@mkdir -p $$(dir $$@)
	$(Q)rm -f $$@ && ar rcs $$@ $$^
endef
$(eval $(call make_lib,$(LIBCOMMON),$(COMMON_SRC)))
$(eval $(call make_lib,$(LIBSHARDING),$(SHARDING_SRC)))
$(eval $(call make_lib,$(LIBCALENDARD),$(CALENDARD_SRC)))
$(eval $(call make_lib,$(LIBCDC),$(CDC_SRC)))
$(eval $(call make_lib,$(LIBTEST),$(TESTLIB_SRC)))

LINK = @mkdir -p $(dir $@); $(if $(Q),echo "  LD      $@";) \
       $(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(PROJECT_LIBS) $(LDLIBS)

bin/calendard: $(call obj,calendard/main.c) $(PROJECT_LIBS)
	$(Q)$(LINK)
bin/calendar-admin: $(call obj,sharding/admin_main.c) $(PROJECT_LIBS)
	$(Q)$(LINK)
bin/calendar-rebalance: $(call obj,sharding/rebalance_main.c) $(PROJECT_LIBS)
	$(Q)$(LINK)
bin/calendar-stress: $(call obj,$(STRESS_SRC)) $(PROJECT_LIBS)
	$(Q)$(LINK)
# The local broker is librdkafka's own mock cluster, a test fixture rather
# than code under test: it is always built without sanitizers (ThreadSanitizer
# crashes inside librdkafka's uninstrumented mock threads).
DEVBROKER_SRC := cdc/devbroker_main.c common/log.c common/util.c
bin/calendar-devbroker: $(DEVBROKER_SRC) $(FLAGS_STAMP)
	@mkdir -p bin
	$(Q)$(if $(Q),echo "  LD      $@";) $(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(OPT) -I. \
	    $(shell pkg-config --cflags rdkafka) -o $@ $(DEVBROKER_SRC) \
	    $(shell pkg-config --libs rdkafka) -lpthread
ifeq ($(findstring thread,$(SANITIZER)),)
bin/calendar-cdc-relay: $(call obj,cdc/relay_main.c) $(PROJECT_LIBS)
	$(Q)$(LINK)
bin/calendar-cdc-invalidator: $(call obj,cdc/invalidator_main.c) $(PROJECT_LIBS)
	$(Q)$(LINK)
else
# librdkafka is not instrumented, and ThreadSanitizer crashes in the threads
# it starts: under SANITIZER=thread the two Kafka programs and the tests
# that create Kafka clients are built plain (in build/plain); calendard, the
# tools and every other test get ThreadSanitizer.
.PHONY: kafka-programs-plain
KAFKA_TESTS := $(BUILD)/tests/integration/check_cdc_relay \
               $(BUILD)/tests/integration/check_invalidator \
               $(BUILD)/tests/unit/check_kconsumer \
               $(BUILD)/tests/unit/check_kproducer
kafka-programs-plain:
	$(Q)$(MAKE) --no-print-directory SANITIZER= BUILD=build/plain \
	    bin/calendar-cdc-relay bin/calendar-cdc-invalidator \
	    $(patsubst $(BUILD)/%,build/plain/%,$(KAFKA_TESTS))
bin/calendar-cdc-relay bin/calendar-cdc-invalidator: kafka-programs-plain
$(KAFKA_TESTS): kafka-programs-plain
	@mkdir -p $(dir $@)
	$(Q)cp $(patsubst $(BUILD)/%,build/plain/%,$@) $@
endif
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(PROJECT_LIBS)
	$(Q)$(LINK)

# libFuzzer targets (clang): every library rebuilt with the fuzzer's coverage
# and ASan+UBSan under build/fuzz, each run for FUZZ_SECONDS on a copy of its
# seed corpus in tests/fuzz/corpus/<target>/.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -O1 -g -fsanitize=fuzzer-no-link -Wno-format-nonliteral
$(BUILD)/tests/fuzz/%: $(BUILD)/tests/fuzz/%.o $(PROJECT_LIBS)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $< $(PROJECT_LIBS) $(LDLIBS)

fuzz-build:
	$(Q)$(MAKE) --no-print-directory BUILD=build/fuzz CC=clang SANITIZER=address,undefined \
	    CFLAGS="$(FUZZ_CFLAGS)" $(FUZZ_TARGETS:%=build/fuzz/tests/fuzz/%)

fuzz: fuzz-build
	$(Q)for t in $(FUZZ_TARGETS); do \
	    rm -rf build/fuzz/corpus/$$t && mkdir -p build/fuzz/corpus/$$t && \
	    cp tests/fuzz/corpus/$$t/* build/fuzz/corpus/$$t/ && \
	    echo "fuzz: $$t for $(FUZZ_SECONDS)s" && \
	    build/fuzz/tests/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	        -print_final_stats=1 build/fuzz/corpus/$$t > build/fuzz/$$t.log 2>&1 || \
	        { tail -40 build/fuzz/$$t.log; exit 1; }; \
	    grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units)" build/fuzz/$$t.log | tail -2; \
	done

# Installs only what is missing (dpkg -s), with sudo when not root.
deps:
	$(Q)tests/stack/install-deps.sh

unit: $(UNIT_BINS) $(PROGRAMS)
	$(Q)tests/run-tests.sh unit

integration: all
	$(Q)tests/run-tests.sh integration

test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)tests/run-tests.sh all

stack-up: all
	$(Q)tests/stack/stack.sh up --dir var

stack-down:
	$(Q)tests/stack/stack.sh down --dir var

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)tests/stack/stack.sh run --dir var

FORMAT_FILES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null)
# The C files of the checkout, tracked or new (not ignored): without a
# checkout there are none, and clang-format with no files would read
# standard input.
format:
	$(if $(FORMAT_FILES),,$(error format needs a git checkout: no tracked C files))
	$(Q)clang-format -i $(FORMAT_FILES)
format-check:
	$(if $(FORMAT_FILES),,$(error format-check needs a git checkout: no tracked C files))
	$(Q)clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD) bin

include tests/bench/bench.mk
include tests/faults/faults.mk

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
