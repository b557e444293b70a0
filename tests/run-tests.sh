#!/usr/bin/env bash
# Test orchestrator behind `make test`: runs the Check unit test binaries, and
# the integration test binaries plus a stress smoke against a private stack of
# real servers that is always torn down. Last line: "N passed, M failed".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STACK_SH=$ROOT/tests/stack/stack.sh
TEST_STACK_DIR=${TEST_STACK_DIR:-var/test-stack}
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
INTEGRATION_TIMEOUT=${INTEGRATION_TIMEOUT:-900}
STRESS_TIMEOUT=${STRESS_TIMEOUT:-120}
# 26 short runs, one per planted fault, two bounds and one with a shard left out of the
# stack env: about 2 min here, several times that under the thread sanitizer.
SELFTEST_TIMEOUT=${SELFTEST_TIMEOUT:-600}
# Each step's output is kept in STEP_LOG_DIR; the last FAILED_TAIL_LINES
# lines of every failed step end the run's output.
STEP_LOG_DIR=${STEP_LOG_DIR:-var/test-logs}
FAILED_TAIL_LINES=${FAILED_TAIL_LINES:-12}

usage() {
    cat <<EOF
Usage: ${0##*/} [unit|integration|all]   (default: all)

unit         run every build/tests/unit/check_* binary (Check, fork mode), then
             tests/check_example_configs.sh and tests/check_config_files.sh
integration  start a private stack with '$STACK_SH up --dir $TEST_STACK_DIR
             --free-ports' (wiped first), export STACK_ENV, run every
             build/tests/integration/check_* binary, then a 10 s smoke of
             bin/calendar-stress and its verifier's self-test; the stack is
             stopped at the end, on failure and on SIGINT/SIGTERM/SIGHUP
all          unit, then integration

Each binary (and the stack start and the stress smoke) is one step; the last
line is "N passed, M failed" and the exit status is non-zero if any failed.
No test binaries, or no bin/calendar-stress, counts as a failed step.
Environment: TEST_STACK_DIR (default var/test-stack), UNIT_TIMEOUT,
INTEGRATION_TIMEOUT, STRESS_TIMEOUT, SELFTEST_TIMEOUT (seconds per step).
Each step's output is also kept in STEP_LOG_DIR (default var/test-logs, wiped
first); the last FAILED_TAIL_LINES (12) lines of every failed step are printed
again at the end, before the summary.
EOF
}

PASSED=0
FAILED=0
FAILED_STEPS=()

# step NAME TIMEOUT CMD...: runs one step with its output shown as it comes.
# timeout runs CMD in a process group of its own: Check's runner answers a
# TERM by signalling its whole group, which must not be ours (a step that ran
# out of time would end the run). A signal to this script stops the step's
# group (on_signal). -k escalates to KILL after a TERM. Steps do not inherit
# the lock fd, so servers never hold the lock.
STEP=
step() {
    local name=$1 limit=$2 start rc=0
    shift 2
    printf '=== %s\n' "$name"
    start=$SECONDS
    # The step's output also goes to its log, for the summary of a failure.
    timeout -k 10 "$limit" "$@" 9>&- </dev/null > >(tee "$(step_log "$name")") 2>&1 &
    STEP=$!
    wait "$STEP" || rc=$?
    STEP=
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        printf -- '--- PASS %s (%ds)\n' "$name" $((SECONDS - start))
    else
        FAILED=$((FAILED + 1))
        FAILED_STEPS+=("$name")
        [ "$rc" -eq 124 ] && printf 'timed out after %ss\n' "$limit"
        printf -- '--- FAIL %s (exit %d, %ds)\n' "$name" "$rc" $((SECONDS - start))
    fi
    return 0
}

# step_log NAME: the file that keeps the output of step NAME.
step_log() {
    printf '%s/%s.log' "$STEP_LOG_DIR" "${1//[^A-Za-z0-9_.-]/-}"
}

# missing NAME WHY: a step that could not run at all counts as failed (a run
# that found nothing to test must not pass).
missing() {
    printf '=== %s\n%s\n--- FAIL %s\n' "$1" "$2" "$1"
    FAILED=$((FAILED + 1))
    FAILED_STEPS+=("$1")
}

# Test binaries in DIR: executables named check_* without an extension (the
# .o and .d files of the build live next to them).
test_bins() {
    local f
    for f in "$1"/check_*; do
        [ -f "$f" ] && [ -x "$f" ] && [[ ${f##*/} != *.* ]] && printf '%s\n' "$f"
    done
    return 0
}

run_unit() {
    local bin found=0
    while IFS= read -r bin; do
        found=1
        step "unit ${bin##*/}" "$UNIT_TIMEOUT" "$bin"
    done < <(test_bins build/tests/unit)
    [ "$found" -eq 1 ] || missing "unit tests" "no unit test binaries in build/tests/unit"
    step "unit example configs" "$UNIT_TIMEOUT" tests/check_example_configs.sh
    step "unit config files" "$UNIT_TIMEOUT" tests/check_config_files.sh
}

STACK_STARTED=0
print_stack_logs() {
    local f
    for f in "$TEST_STACK_DIR"/logs/*; do
        [ -f "$f" ] || continue
        printf -- '----- tail of %s\n' "$f"
        tail -n 40 "$f"
    done
}

teardown_stack() {
    [ "$STACK_STARTED" -eq 1 ] || return 0
    STACK_STARTED=0
    "$STACK_SH" down --dir "$TEST_STACK_DIR" || true
}

# Stops the running step's process group (timeout's), and waits for it.
stop_step() {
    [ -n "$STEP" ] || return 0
    kill -TERM -- "-$STEP" 2>/dev/null || kill -TERM "$STEP" 2>/dev/null || true
    wait "$STEP" 2>/dev/null || true
    STEP=
}

on_signal() {
    # The stack comes down whatever stdout became (a pipe whose reader died
    # with the same Ctrl-C, a terminal hung up): no write may end this.
    trap '' PIPE
    set +e
    echo "interrupted; stopping the running step and the test stack" 2>/dev/null
    stop_step
    teardown_stack
    echo "$PASSED passed, $((FAILED + 1)) failed"
    exit 130
}

run_integration() {
    local bin failed_before=$FAILED
    case "$TEST_STACK_DIR" in
    "" | / | . | ..) echo "refusing TEST_STACK_DIR='$TEST_STACK_DIR'" >&2 && exit 2 ;;
    esac
    # Two runs in one checkout would share the stack directory: the second
    # waits (bounded) for the first instead of stopping its servers.
    mkdir -p "$(dirname "$TEST_STACK_DIR")"
    exec 9>"$TEST_STACK_DIR.lock"
    if ! flock -n 9; then
        echo "waiting for another test run that holds $TEST_STACK_DIR.lock"
        flock -w 1800 9 || { echo "gave up waiting for $TEST_STACK_DIR.lock" >&2; exit 2; }
    fi
    # A stack left by a run that was killed hard would keep its ports and
    # files; stop it by its PID files, then start from an empty directory.
    if [ -d "$TEST_STACK_DIR" ]; then
        "$STACK_SH" down --dir "$TEST_STACK_DIR" >/dev/null 2>&1 || true
        rm -rf "$TEST_STACK_DIR"
    fi

    STACK_STARTED=1
    trap teardown_stack EXIT
    # Several partitions per topic, so the tests see listings routed to them.
    step "stack up" 300 env CDC_PARTITIONS=4 "$STACK_SH" up --dir "$TEST_STACK_DIR" --free-ports \
        --spare-shards 1
    if [ "$FAILED" -eq "$failed_before" ]; then
        STACK_ENV=$(cd "$TEST_STACK_DIR" && pwd)/stack.env
        export STACK_ENV
        local found=0
        while IFS= read -r bin; do
            found=1
            step "integration ${bin##*/}" "$INTEGRATION_TIMEOUT" "$bin"
        done < <(test_bins build/tests/integration)
        [ "$found" -eq 1 ] ||
            missing "integration tests" "no integration test binaries in build/tests/integration"
        if [ -x bin/calendar-stress ]; then
            step "stress smoke" "$STRESS_TIMEOUT" bin/calendar-stress \
                --stack-env "$STACK_ENV" --clients 16 --listings 20 --duration 10
            # Each check of the verifier must be able to fail.
            step "stress verifier self-test" "$SELFTEST_TIMEOUT" tests/stress/selftest.sh "$STACK_ENV"
        else
            missing "stress smoke" "bin/calendar-stress is not built"
        fi
    fi
    if [ "$FAILED" -ne "$failed_before" ]; then
        print_stack_logs
    fi
    teardown_stack
    trap - EXIT
}

trap on_signal INT TERM HUP

mode=${1:-all}
case "$mode" in
-h | --help)
    usage
    exit 0
    ;;
unit | integration | all)
    rm -rf "$STEP_LOG_DIR"
    mkdir -p "$STEP_LOG_DIR"
    ;;&
unit) run_unit ;;
integration) run_integration ;;
all)
    run_unit
    run_integration
    ;;
*)
    usage >&2
    exit 2
    ;;
esac

# The end of each failed step's own output comes last, after the servers'
# logs: a CI page that shows only the tail of the run still shows why.
if [ "$FAILED" -gt 0 ]; then
    for name in "${FAILED_STEPS[@]}"; do
        log=$(step_log "$name")
        [ -s "$log" ] || continue
        printf -- '----- last lines of %s (all of it in %s)\n' "$name" "$log"
        tail -n "$FAILED_TAIL_LINES" "$log"
    done
    echo "failed: ${FAILED_STEPS[*]}"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
