#!/usr/bin/env bash
# Fault-injection suite behind `make faults` (issue 6): one private stack,
# calendar-stress under each fault, zero invariant violations required, and
# every recovery timed. Last lines: a table and one JSON line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

STACK_SH=$ROOT/tests/stack/stack.sh
DIR=${FAULTS_STACK_DIR:-var/faults-stack}
STRESS=$ROOT/bin/calendar-stress
PROBE_SRC=$ROOT/tests/faults/faultprobe.c
ALL_SCENARIOS=(calendard-kill shard-restart memcached cdc-kill slow-clients)

# Bounds (milliseconds), overridable from the environment.
BOUND_CALENDARD_MS=${FAULTS_BOUND_CALENDARD_MS:-15000}  # restart issued -> first 200
BOUND_BREAKER_OPEN_MS=${FAULTS_BOUND_BREAKER_OPEN_MS:-10000} # shard killed -> breaker open
BOUND_SHARD_MS=${FAULTS_BOUND_SHARD_MS:-10000}          # shard back -> breaker closed, 200
BOUND_RELAY_MS=${FAULTS_BOUND_RELAY_MS:-30000}          # shard back -> relay streaming
BOUND_FAILFAST_P99_MS=${FAULTS_BOUND_FAILFAST_P99_MS:-1000} # 503s of the dead shard (deadline 8 s)
BOUND_CACHE_MS=${FAULTS_BOUND_CACHE_MS:-30000}          # fault over -> CDC marker visible
# cdc-kill: a marker's SQL change (made once the restarts are over) -> the
# marker visible in the cache, after the new invalidator replays its backlog
# from the broker (4.9-8.8 s measured, CPU-bound)
BOUND_CDC_REPLAY_MS=${FAULTS_BOUND_CDC_REPLAY_MS:-60000}
BOUND_HEALTHY_P99_MS=${FAULTS_BOUND_HEALTHY_P99_MS:-1000} # healthy clients under a flood
IDLE_GRACE_MS=5000 # idle connections closed by idle_timeout_s + this

usage() {
    cat <<EOF
Usage: ${0##*/} [--quick] [--only SCENARIO[,SCENARIO...]] [--keep]

Starts a private stack ('stack.sh up --dir $DIR --free-ports', wiped first,
always stopped at the end), then for each scenario runs bin/calendar-stress
(8 clients, 40 listings; its load lasts until the scenario's faults are over,
at least 20 s, 10 s with --quick) while it injects a fault,
and requires double_bookings, lost_acknowledged, phantom_bookings,
duplicate_idempotent and cache_mismatches to be 0 and the service to
recover by itself within a bound:

  calendard-kill  SIGKILL calendard every few seconds, 'stack.sh restart
                  calendard'; clients replay with the same Idempotency-Key
  shard-restart   SIGKILL shard1's mariadbd, restart it: shard 0 keeps
                  serving, shard 1 answers 503 shard_unavailable fast, its
                  breaker opens and closes, its CDC relay reconnects
  memcached       SIGKILL + restart memcached, then a SIGSTOP/SIGCONT stall:
                  reads keep working; the cache is correct afterwards
  cdc-kill        SIGKILL the CDC relays and the invalidator repeatedly;
                  a direct SQL change still reaches the cache afterwards
  slow-clients    300 idle connections, 20 clients sending headers one byte
                  per 100 ms, oversized header and bodies; healthy clients'
                  p99 stays bounded, idle connections close after
                  [server] idle_timeout_s, the 32 KiB / 64 KiB limits hold

Options:
  --quick        shorter runs (fewer faults, 10 s stress, idle timeout not
                 waited for)
  --only LIST    run only these scenarios (comma-separated)
  --keep         leave the stack running at the end (stop it with
                 'tests/stack/stack.sh down --dir $DIR')
  -h, --help     this text

Prints a table (scenario, operations, faults, recovery ms, invariants) and
one JSON line; exit 1 if an invariant is non-zero or a recovery missed its
bound, 2 on setup errors. The devbroker is never restarted: the stack does
not support it (in-memory broker, new port). Only processes of the stack's
PID files and this script's own children are signalled; 127.0.0.1 only.
Environment: FAULTS_STACK_DIR (default var/faults-stack), FAULTS_CLIENTS (stress clients,
default 8), and the bounds in milliseconds:
  FAULTS_BOUND_CALENDARD_MS      15000  calendard restart issued -> first 200 (also the
                                        memcached scenario's restart/SIGCONT -> first 200)
  FAULTS_BOUND_BREAKER_OPEN_MS   10000  shard killed -> its breaker open
  FAULTS_BOUND_SHARD_MS          10000  shard back -> breaker closed, first 200
  FAULTS_BOUND_RELAY_MS          30000  shard back -> its relay streaming again
  FAULTS_BOUND_FAILFAST_P99_MS    1000  p99 of the dead shard's 503s
  FAULTS_BOUND_CACHE_MS          30000  fault over -> a CDC marker visible in the cache
  FAULTS_BOUND_CDC_REPLAY_MS     60000  cdc-kill: a marker's SQL change (after the
                                        restarts) -> the marker visible in the cache
  FAULTS_BOUND_HEALTHY_P99_MS     1000  p99 of healthy clients under a flood (also the
                                        memcached scenario's read p99 during the stall)
EOF
}

QUICK=0
KEEP=0
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --only)
        [ $# -ge 2 ] || { echo "--only needs a value" >&2; exit 2; }
        ONLY=$2
        shift
        ;;
    --only=*) ONLY=${1#--only=} ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

SCENARIOS=()
if [ -n "$ONLY" ]; then
    IFS=, read -r -a wanted <<<"$ONLY"
    for w in "${wanted[@]}"; do
        ok=0
        for s in "${ALL_SCENARIOS[@]}"; do [ "$s" = "$w" ] && ok=1; done
        [ "$ok" = 1 ] || { echo "unknown scenario '$w' (${ALL_SCENARIOS[*]})" >&2; exit 2; }
        SCENARIOS+=("$w")
    done
else
    SCENARIOS=("${ALL_SCENARIOS[@]}")
fi

if [ "$QUICK" = 1 ]; then
    STRESS_S=10 CAL_KILLS=2 CAL_GAP_S=2 SHARD_DOWN_S=4 CDC_ROUNDS=1 STALL_S=2 MC_DOWN_S=2
else
    STRESS_S=20 CAL_KILLS=4 CAL_GAP_S=3 SHARD_DOWN_S=6 CDC_ROUNDS=3 STALL_S=3 MC_DOWN_S=3
fi
CLIENTS=${FAULTS_CLIENTS:-8}
LISTINGS=40

case "$DIR" in
"" | / | . | ..) echo "refusing FAULTS_STACK_DIR='$DIR'" >&2; exit 2 ;;
esac
WORK=$DIR/faults # probe logs, stress output, the harness log

log() { printf '[faults %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 2; }

# Wall clock in ms (the probe's timestamps are wall clock too).
now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((10#$t / 1000))
}

# ---------------------------------------------------------------- processes

BG_PIDS=()  # this script's own children (stress runs, probes)

proc_start_time() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split the fields on purpose
    set -- $stat
    printf '%s\n' "${20}"
}

# PID of the stack's process NAME if it is still the one the stack started.
stack_pid() {
    local pid start
    pid=$(cat "$DIR/run/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    start=$(cat "$DIR/run/$1.start" 2>/dev/null) || return 1
    [ "$(proc_start_time "$pid" 2>/dev/null)" = "$start" ] || return 1
    local st
    st=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ] || return 1
    printf '%s\n' "$pid"
}

# signal_stack NAME SIG: signals the stack's NAME (by its PID file only); for
# KILL, waits (bounded) until it is gone.
signal_stack() {
    local name=$1 sig=$2 pid i
    pid=$(stack_pid "$name") || { log "$name is not running"; return 1; }
    kill -s "$sig" "$pid"
    if [ "$sig" = KILL ]; then
        for ((i = 0; i < 100; i++)); do
            stack_pid "$name" >/dev/null || return 0
            sleep 0.05
        done
        log "$name (pid $pid) still there 5 s after SIGKILL"
        return 1
    fi
}

# restart NAME: stack.sh restart, bounded; its output goes to the harness log.
restart() {
    timeout -k 5 120 "$STACK_SH" restart "$1" --dir "$DIR" >>"$WORK/harness.log" 2>&1 9>&-
}

bg_stop() {
    local pid
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        wait "$pid" 2>/dev/null || true
    done
}

STACK_STARTED=0
teardown() {
    local rc=$?
    if [ "${#BG_PIDS[@]}" -gt 0 ]; then
        bg_stop "${BG_PIDS[@]}"
    fi
    if [ "$STACK_STARTED" = 1 ]; then
        STACK_STARTED=0
        # A process left stopped by a stall scenario must get CONT to stop.
        signal_stack memcached CONT 2>/dev/null || true
        if [ "$KEEP" = 1 ]; then
            log "--keep: the stack stays up in $DIR"
        else
            "$STACK_SH" down --dir "$DIR" >>"$WORK/harness.log" 2>&1 9>&- || true
        fi
    fi
    exit "$rc"
}

# ---------------------------------------------------------------- HTTP, SQL

CAL_PORT=""
SHARD_PORTS=()
MC_PORT=""
INV_METRICS_URL=""

http_get() { curl -s --max-time 5 "http://127.0.0.1:$CAL_PORT$1"; }

# mc_has KEY: the stack's memcached holds KEY (one get, bounded).
mc_has() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "get %s\r\n" "$2" >&3 &&
        IFS= read -r line <&3 && [[ $line == VALUE* ]]' _ "$MC_PORT" "$1" 2>/dev/null
}

breaker_open() {
    http_get /metrics | sed -n "s/^calendard_shard_breaker_open{shard=\"$1\"} \([0-9]*\)$/\1/p"
}

sql() {
    local shard=$1
    shift
    mariadb --defaults-extra-file="$DIR/secrets/admin.cnf" -h 127.0.0.1 \
        -P "${SHARD_PORTS[$shard]}" -N -B -e "$*"
}

# json_num JSON KEY: a number (or null) field of a one-line JSON object.
json_num() {
    sed -n "s/.*\"$2\":\(null\|-\{0,1\}[0-9][0-9.e+-]*\).*/\1/p" <<<"$1" | head -n1
}

# ---------------------------------------------------------------- probe logs
# Lines of calendar-faultprobe probe: wall_ms status latency_us code retry_after

# first_ok_ms LOG T: ms from T to the answer of the first 200 sent at/after T.
first_ok_ms() {
    awk -v t="$2" '$1 >= t && ($2 == 200 || $2 == 201) { print $1 + int($3 / 1000) - t; f = 1; exit }
        END { if (!f) print -1 }' "$1"
}

# window LOG A B: "total ok" of the requests sent in [A, B).
window() {
    awk -v a="$2" -v b="$3" '$1 >= a && $1 < b { n++; if ($2 >= 200 && $2 < 300) ok++ }
        END { printf "%d %d\n", n, ok }' "$1"
}

# latency_pct LOG A B STATUS P: P-th percentile (ms) of the latencies of the
# answers with STATUS sent in [A, B); -1 if none.
latency_pct() {
    awk -v a="$2" -v b="$3" -v s="$4" '$1 >= a && $1 < b && $2 == s { print $3 / 1000 }' "$1" |
        sort -n | awk -v p="$5" '{ v[NR] = $1 } END {
            if (NR == 0) { print -1; exit }
            i = int(p / 100 * (NR - 1) + 0.5) + 1; printf "%.1f\n", v[i] }'
}

# ---------------------------------------------------------------- fixtures

LISTING_ON=()   # a probe listing on shard 0 and one on shard 1
MARKER_ON=()    # CDC marker listings, one per shard
FAR_FROM=$(date -u -d '+90 days' +%F)
FAR_TO=$(date -u -d '+92 days' +%F)
MARK_FROM=$(date -u -d '+60 days' +%F)
MARK_TO=$(date -u -d '+61 days' +%F)

# Creates 128 listings below 2^20 (calendar-stress never uses those): per
# shard a probe listing and a CDC marker; the rest of shard 1's fill its pool.
POOL_IDS=()
make_fixtures() {
    local base=$((100000 + (RANDOM % 4000) * 200)) i id s body ids
    body='{"default_price":10000,"currency":"USD","min_nights":1,"max_nights":30}'
    for ((i = 0; i < 128; i++)); do
        curl -sf --max-time 5 -o /dev/null -X PUT "http://127.0.0.1:$CAL_PORT/v1/listings/$((base + i))" \
            -d "$body" || die "creating listing $((base + i)) failed"
    done
    for s in 0 1; do
        ids=$(sql "$s" "SELECT listing_id FROM calendar_shard$s.listings
                        WHERE listing_id BETWEEN $base AND $((base + 127)) ORDER BY listing_id")
        read -r -d '' -a ids <<<"$ids" || true
        [ "${#ids[@]}" -ge 2 ] || die "could not place fixture listings on both shards"
        LISTING_ON[s]=${ids[0]}
        MARKER_ON[s]=${ids[1]}
        if [ "$s" = 1 ]; then POOL_IDS=("${ids[@]:2}"); fi
    done
    return 0
}

avail_path() { echo "/v1/listings/$1/availability?from=$2&to=$3"; }

# marker_ms SHARD [BOUND_MS]: changes the marker listing's default price with
# SQL on the shard, behind calendard's back, after its availability is cached;
# prints the ms until a read through calendard shows the new price (only the
# CDC relay and the invalidator can make that happen), or -1 after BOUND_MS
# (default BOUND_CACHE_MS).
marker_ms() {
    local s=$1 id=${MARKER_ON[$1]} bound=${2:-$BOUND_CACHE_MS} path price t0 deadline body
    path=$(avail_path "$id" "$MARK_FROM" "$MARK_TO")
    # Cached before the change, or a read that finds the new price proves
    # nothing of CDC (up to 10 s: a cache just back is retried after 1 s).
    deadline=$(($(now_ms) + 10000))
    until http_get "$path" >/dev/null && mc_has "cal:v1:L:$id"; do
        if [ "$(now_ms)" -ge "$deadline" ]; then
            log "marker listing $id of shard $s: its availability was never cached"
            echo -1
            return
        fi
        sleep 0.1
    done
    price=$((20000 + RANDOM))
    t0=$(now_ms)
    sql "$s" "UPDATE calendar_shard$s.listings SET default_price=$price, version=version+1,
              rules_version=rules_version+1 WHERE listing_id=$id" || { echo -1; return; }
    deadline=$((t0 + bound))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        body=$(http_get "$path" || true)
        if [[ $body == *"\"price\":$price"* ]]; then
            echo $(($(now_ms) - t0))
            return
        fi
        sleep 0.05
    done
    echo -1
}

# ---------------------------------------------------------------- stress

STRESS_PID=""
# The load runs until the scenario's faults are over (restarts ready, CDC
# markers seen), and at least STRESS_S: stress_wait ends it with SIGINT, and
# calendar-stress then verifies, against every shard and the cache. A fixed
# duration could end the load in the middle of a fault (a shard down when
# the verify connects), on a slow machine. STRESS_MAX_S bounds it.
STRESS_MAX_S=300
stress_start() {
    local name=$1
    STRESS_T0=""
    timeout -k 5 $((STRESS_MAX_S + 150)) "$STRESS" --stack-env "$DIR/stack.env" \
        --clients "$CLIENTS" --listings "$LISTINGS" --duration "$STRESS_MAX_S" \
        >"$WORK/$name.stress.json" 2>"$WORK/$name.stress.log" &
    STRESS_PID=$!
    BG_PIDS+=("$STRESS_PID")
}

# stress_loading NAME: waits (up to 60 s) until calendar-stress is past its
# listing setup, which retries each PUT only 5 times, and into its load (its
# first progress line), so a fault injected next hits the load.
stress_loading() {
    local i
    for ((i = 0; i < 600; i++)); do
        if grep -q '^t=1s ' "$WORK/$1.stress.log" 2>/dev/null; then
            STRESS_T0=$(($(now_ms) - 1000))
            return 0
        fi
        kill -0 "$STRESS_PID" 2>/dev/null || {
            fail "$1: calendar-stress ended before its load"
            STRESS_T0=0
            return 0
        }
        sleep 0.1
    done
    fail "$1: calendar-stress not into its load after 60 s"
    STRESS_T0=0
}

# stress_wait NAME: ends the load (SIGINT to calendar-stress itself: timeout
# would pass it on, then KILL it 5 s later) once it ran STRESS_S, waits for
# the verdict; sets STRESS_JSON (the last stdout line) and STRESS_RC.
stress_wait() {
    local cpid left
    [ -n "$STRESS_T0" ] || stress_loading "$1"
    if [ -n "$STRESS_T0" ]; then
        left=$((STRESS_T0 + STRESS_S * 1000 - $(now_ms)))
        [ "$left" -le 0 ] || sleep "$((left / 1000)).$(printf '%03d' $((left % 1000)))"
    fi
    # timeout's one child; none once calendar-stress has exited.
    cpid=$(ps -o pid= --ppid "$STRESS_PID" 2>/dev/null | head -n 1 | tr -d ' ' || true)
    if [ -n "$cpid" ] && [ "$(cat "/proc/$cpid/comm" 2>/dev/null)" = calendar-stress ]; then
        kill -INT "$cpid" 2>/dev/null || true
    elif [ "$STRESS_T0" != 0 ]; then # else stress_loading told why
        fail "$1: calendar-stress's load ended before the scenario's faults were over"
    fi
    STRESS_RC=0
    wait "$STRESS_PID" || STRESS_RC=$?
    STRESS_JSON=$(tail -n 1 "$WORK/$1.stress.json" 2>/dev/null || true)
    [ -n "$STRESS_JSON" ] || STRESS_JSON='{}'
}

PROBE_PIDS=()
probe_start() {
    local out=$1
    shift
    "$PROBE" --port "$CAL_PORT" probe "$@" >"$out" 2>&1 &
    PROBE_PIDS+=("$!")
    BG_PIDS+=("$!")
}

probes_stop() {
    if [ "${#PROBE_PIDS[@]}" -gt 0 ]; then
        bg_stop "${PROBE_PIDS[@]}"
    fi
    PROBE_PIDS=()
}

# ---------------------------------------------------------------- results

R_NAME=() R_OPS=() R_FAULTS=() R_REC=() R_INV=() R_OK=() R_JSON=()
FAILS=()  # reasons of the current scenario

fail() {
    FAILS+=("$*")
    log "FAIL: $*"
}

# require_le NAME VALUE BOUND: VALUE must be a number >= 0 and <= BOUND (an
# empty or -1 value, a measurement that never came, fails).
require_le() {
    if ! [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] || [ "${2%.*}" -gt "$3" ]; then
        fail "$1 = $2 (bound $3)"
    fi
}

# record NAME FAULTS RECOVERY_MS EXTRA_JSON: checks the stress verdict and
# stores the scenario's row.
record() {
    local name=$1 faults=$2 rec=$3 extra=$4 k v inv="" ok=true reasons=""
    local attempts
    ensure_healthy
    attempts=$(json_num "$STRESS_JSON" attempts)
    for k in double_bookings lost_acknowledged phantom_bookings duplicate_idempotent cache_mismatches; do
        v=$(json_num "$STRESS_JSON" "$k")
        [ -n "$v" ] || v=missing
        inv+="${inv:+/}$v"
        if [ "$v" != 0 ]; then
            fail "$k = $v"
        fi
    done
    if [ "$STRESS_RC" -ne 0 ]; then
        fail "calendar-stress exited $STRESS_RC (see $WORK/$name.stress.log)"
    fi
    [ "${#FAILS[@]}" -eq 0 ] || ok=false
    for k in "${FAILS[@]}"; do
        reasons+="${reasons:+, }\"${k//\"/\'}\""
    done
    R_NAME+=("$name")
    R_OPS+=("${attempts:-0}")
    R_FAULTS+=("$faults")
    R_REC+=("$rec")
    R_INV+=("$inv")
    R_OK+=("$ok")
    v="{\"scenario\":\"$name\",\"ok\":$ok,\"operations\":${attempts:-0},\"faults\":$faults,"
    v+="\"recovery_ms\":$([ "$rec" = - ] && echo null || echo "$rec"),"
    for k in double_bookings lost_acknowledged phantom_bookings duplicate_idempotent cache_mismatches \
        errors unresolved overloaded confirmed; do
        v+="\"$k\":$(json_num "$STRESS_JSON" "$k" | sed 's/^$/null/'),"
    done
    v+="$extra,\"failures\":[$reasons]}"
    R_JSON+=("$v")
    FAILS=()
}

# Between scenarios: every stack process alive, calendard ready, breakers
# closed. Something this harness did not bring back is a failure.
ensure_healthy() {
    local name i f
    for f in "$DIR"/run/*.pid; do
        name=$(basename "$f" .pid)
        [ "$name" = devbroker ] && { stack_pid devbroker >/dev/null || fail "the devbroker died"; continue; }
        if ! stack_pid "$name" >/dev/null; then
            fail "$name was not running after the scenario; restarting it"
            restart "$name" || die "cannot restart $name"
        fi
    done
    for ((i = 0; i < 150; i++)); do
        if http_get /readyz >/dev/null && [ "$(breaker_open 0)" = 0 ] && [ "$(breaker_open 1)" = 0 ]; then
            return 0
        fi
        sleep 0.2
    done
    fail "calendard not ready with closed breakers 30 s after the scenario"
}

# ================================================================ scenarios

# 1. SIGKILL calendard every few seconds; the harness restarts it.
scenario_calendard_kill() {
    local probe=$WORK/calendard-kill.probe i ms worst=0 sum=0 list="" t_restart=()
    stress_start calendard-kill
    probe_start "$probe" --path "$(avail_path "${LISTING_ON[0]}" "$FAR_FROM" "$FAR_TO")" \
        --interval-ms 20 --duration-s $((STRESS_S + 60)) --timeout-ms 2000
    stress_loading calendard-kill
    for ((i = 0; i < CAL_KILLS; i++)); do
        signal_stack calendard KILL || fail "kill $i: calendard was not running"
        sleep 1 # clients see refused connections meanwhile
        t_restart+=("$(now_ms)")
        restart calendard || fail "stack.sh restart calendard failed (kill $i)"
        sleep "$CAL_GAP_S"
    done
    stress_wait calendard-kill
    probes_stop
    # Every booking whose connection broke was replayed with its key until
    # it got a definitive answer.
    [ "$(json_num "$STRESS_JSON" unresolved)" = 0 ] ||
        fail "calendar-stress left $(json_num "$STRESS_JSON" unresolved) operations unresolved"
    for ((i = 0; i < CAL_KILLS; i++)); do
        ms=$(first_ok_ms "$probe" "${t_restart[i]}")
        log "calendard kill $((i + 1))/$CAL_KILLS: first 200 ${ms} ms after the restart was issued"
        require_le "calendard restart $((i + 1)) -> first 200 (ms)" "$ms" "$BOUND_CALENDARD_MS"
        [ "$ms" -gt "$worst" ] && worst=$ms
        sum=$((sum + (ms > 0 ? ms : 0)))
        list+="${list:+,}$ms"
    done
    record calendard-kill "$CAL_KILLS" "$worst" \
        "\"recovery_ms_each\":[$list],\"recovery_ms_avg\":$((sum / CAL_KILLS))"
}

# 2. SIGKILL shard1's mariadbd, keep it down, restart it.
scenario_shard_restart() {
    local p0=$WORK/shard-restart.s0.probe p1=$WORK/shard-restart.s1.probe
    local body t_kill t_gone t_open=-1 t_restart t_up t_closed=-1 relay_ms=-1 size i
    local s0 s0ok s1 ff_p99 ff_max ff_other first_ok open_ms closed_ms rec marker codes cal_size stale v
    body="{\"from\":\"$FAR_FROM\",\"to\":\"$FAR_TO\",\"action\":\"set_price\",\"price\":12345}"
    stress_start shard-restart
    # Writes always reach the shard (reads could come from the cache).
    probe_start "$p0" --method POST --path "/v1/listings/${LISTING_ON[0]}/calendar" --body "$body" \
        --interval-ms 50 --duration-s $((STRESS_S + 200)) --timeout-ms 10000
    probe_start "$p1" --method POST --path "/v1/listings/${LISTING_ON[1]}/calendar" --body "$body" \
        --interval-ms 50 --duration-s $((STRESS_S + 200)) --timeout-ms 10000
    stress_loading shard-restart
    size=$(stat -c %s "$DIR/logs/cdc-relay-shard1.log")
    t_kill=$(now_ms)
    cal_size=-1
    signal_stack shard1 KILL || fail "shard1 was not running"
    # A killed mariadbd can take a while to go (its memory unmapped): what is
    # sent before then may still be answered.
    t_gone=$(now_ms)
    for ((i = 0; i < SHARD_DOWN_S * 10; i++)); do
        if [ "$t_open" = -1 ] && [ "$(breaker_open 1)" = 1 ]; then
            t_open=$(now_ms)
            log "breaker of shard 1 open $((t_open - t_kill)) ms after the kill"
        fi
        sleep 0.1
    done
    t_restart=$(now_ms)
    cal_size=$(stat -c %s "$DIR/logs/calendard.log")
    restart shard1 || fail "stack.sh restart shard1 failed"
    t_up=$(now_ms)
    log "shard1 restarted in $((t_up - t_restart)) ms (mariadbd crash recovery included)"
    # Polled together: the breaker closing and the relay streaming again.
    for ((i = 0; i < BOUND_RELAY_MS / 100; i++)); do
        if [ "$t_closed" = -1 ] && [ "$(breaker_open 1)" = 0 ]; then
            t_closed=$(now_ms)
        fi
        if [ "$relay_ms" = -1 ] &&
            tail -c +"$((size + 1))" "$DIR/logs/cdc-relay-shard1.log" | grep -q 'msg="streaming"'; then
            relay_ms=$(($(now_ms) - t_up))
        fi
        [ "$t_closed" != -1 ] && [ "$relay_ms" != -1 ] && break
        sleep 0.1
    done
    stale=$(tail -c +"$((cal_size + 1))" "$DIR/logs/calendard.log" |
        grep -c 'msg="shard connection lost" shard=1 .*Lost connection' || true)
    sleep 1
    marker=$(marker_ms 1)

    # Phase 2: the same kill right after shard 1's connection pool was filled
    # ([shards] pool_size concurrent writes). Every pooled connection is then
    # stale; the breaker must still close within the bound.
    local pool_size burst t_up2 t_closed2=-1 first_ok2 closed2 stale2
    pool_size=$(sed -n 's/^[[:space:]]*pool_size[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' \
        "$DIR/calendard.ini" | tail -n1)
    pool_size=${pool_size:-32}
    burst=$(for id in "${POOL_IDS[@]:0:$pool_size}"; do echo "/v1/listings/$id/calendar"; done |
        "$PROBE" --port "$CAL_PORT" burst --method POST --body "$body" --rounds 3)
    signal_stack shard1 KILL || fail "shard1 was not running (phase 2)"
    cal_size=$(stat -c %s "$DIR/logs/calendard.log")
    restart shard1 || fail "stack.sh restart shard1 failed (phase 2)"
    t_up2=$(now_ms)
    # Wait until it closes even past the bound (at most 120 s), so that the
    # next scenario starts clean and the figure is real.
    for ((i = 0; i < 1200; i++)); do
        if [ "$(breaker_open 1)" = 0 ]; then
            t_closed2=$(now_ms)
            break
        fi
        sleep 0.1
    done
    sleep 0.5
    stale2=$(tail -c +"$((cal_size + 1))" "$DIR/logs/calendard.log" |
        grep -c 'msg="shard connection lost" shard=1 .*Lost connection' || true)
    stress_wait shard-restart
    probes_stop
    first_ok2=$(first_ok_ms "$p1" "$t_up2")
    closed2=$([ "$t_closed2" = -1 ] && echo -1 || echo $((t_closed2 - t_up2)))
    log "phase 2 (pool filled first: ${burst/ //} writes ok): breaker closed ${closed2} ms and first 200 ${first_ok2} ms after shard1 was back; stale pooled connections used: $stale2"
    require_le "pool filled: shard back -> breaker closed (ms)" "$closed2" "$BOUND_SHARD_MS"
    require_le "pool filled: shard back -> first 200 (ms)" "$first_ok2" "$BOUND_SHARD_MS"

    # Shard 0 during the whole outage; shard 1 while its breaker was open.
    read -r s0 s0ok <<<"$(window "$p0" "$t_kill" "$t_up")"
    open_ms=$([ "$t_open" = -1 ] && echo -1 || echo $((t_open - t_kill)))
    closed_ms=$([ "$t_closed" = -1 ] && echo -1 || echo $((t_closed - t_up)))
    first_ok=$(first_ok_ms "$p1" "$t_up")
    read -r s1 _ <<<"$(window "$p1" "$t_gone" "$t_restart")"
    ff_p99=$(latency_pct "$p1" "$t_gone" "$t_restart" 503 99)
    ff_max=$(latency_pct "$p1" "$t_gone" "$t_restart" 503 100)
    codes=$(awk -v a="$t_gone" -v b="$t_restart" '$1 >= a && $1 < b { c[$2 " " $4 " ra=" $5]++ }
        END { for (k in c) printf "%s%s x%d", (n++ ? "; " : ""), k, c[k] }' "$p1")
    ff_other=$(awk -v a="$t_gone" -v b="$t_restart" '$1 >= a && $1 < b &&
        !($2 == 503 && $4 == "shard_unavailable" && $5 != "-") { n++ } END { print n + 0 }' "$p1")
    log "shard 0 during the outage: $s0ok/$s0 writes succeeded"
    log "shard 1 while down: $s1 writes answered: $codes; 503 latency p99 ${ff_p99} ms, max ${ff_max} ms"
    log "after the restart: breaker closed in ${closed_ms} ms, first 200 in ${first_ok} ms, relay streaming in ${relay_ms} ms, CDC marker visible in ${marker} ms"
    log "stale pooled connections that calendard used after the restart (each reopens the breaker): $stale"
    [ "$s0" -gt 0 ] && [ "$s0ok" = "$s0" ] || fail "shard 0 writes during the outage: $s0ok/$s0 succeeded"
    require_le "kill -> breaker open (ms)" "$open_ms" "$BOUND_BREAKER_OPEN_MS"
    [ "$s1" -gt 0 ] && [ "$ff_other" = 0 ] ||
        fail "shard 1 answers while down were not all 503 shard_unavailable with Retry-After: $codes"
    require_le "503 latency p99 (ms)" "$ff_p99" "$BOUND_FAILFAST_P99_MS"
    require_le "shard back -> breaker closed (ms)" "$closed_ms" "$BOUND_SHARD_MS"
    require_le "shard back -> first 200 (ms)" "$first_ok" "$BOUND_SHARD_MS"
    require_le "shard back -> relay streaming (ms)" "$relay_ms" "$BOUND_RELAY_MS"
    require_le "shard back -> CDC marker visible (ms)" "$marker" "$BOUND_CACHE_MS"
    rec=$first_ok
    for v in "$closed_ms" "$closed2" "$first_ok2"; do
        [ "$v" -gt "$rec" ] && rec=$v
    done
    record shard-restart 2 "$rec" \
        "\"outage_ms\":$((t_up - t_kill)),\"shard_restart_ms\":$((t_up - t_restart)),\"breaker_open_after_kill_ms\":$open_ms,\"breaker_closed_after_up_ms\":$closed_ms,\"first_ok_after_up_ms\":$first_ok,\"relay_streaming_after_up_ms\":$relay_ms,\"cdc_marker_ms\":$marker,\"stale_connections_after_up\":$stale,\"shard0_writes_during_outage\":$s0,\"shard0_ok_during_outage\":$s0ok,\"shard1_answers_while_down\":$s1,\"shard1_503_p99_ms\":$ff_p99,\"shard1_503_max_ms\":$ff_max,\"pool_filled_breaker_closed_after_up_ms\":$closed2,\"pool_filled_first_ok_after_up_ms\":$first_ok2,\"pool_filled_stale_connections\":$stale2"
}

# 3. memcached: SIGKILL + restart, then a SIGSTOP/SIGCONT stall.
scenario_memcached() {
    local probe=$WORK/memcached.probe t_kill t_up t_stop t_cont n ok stall_p99 stall_max
    local rec_kill rec_cont marker rec
    stress_start memcached
    probe_start "$probe" --path "$(avail_path "${LISTING_ON[1]}" "$FAR_FROM" "$FAR_TO")" \
        --interval-ms 20 --duration-s $((STRESS_S + 60)) --timeout-ms 5000
    stress_loading memcached
    t_kill=$(now_ms)
    signal_stack memcached KILL || fail "memcached was not running"
    sleep "$MC_DOWN_S"
    restart memcached || fail "stack.sh restart memcached failed"
    t_up=$(now_ms)
    sleep 2
    t_stop=$(now_ms)
    signal_stack memcached STOP || fail "memcached was not running"
    sleep "$STALL_S"
    signal_stack memcached CONT || fail "memcached was not running"
    t_cont=$(now_ms)
    sleep 1
    marker=$(marker_ms 1)
    stress_wait memcached
    probes_stop

    read -r n ok <<<"$(window "$probe" "$t_kill" "$t_cont")"
    stall_p99=$(latency_pct "$probe" "$t_stop" "$t_cont" 200 99)
    stall_max=$(latency_pct "$probe" "$t_stop" "$t_cont" 200 100)
    rec_kill=$(first_ok_ms "$probe" "$t_up")
    rec_cont=$(first_ok_ms "$probe" "$t_cont")
    log "reads while memcached was down or stopped: $ok/$n answered 200; during the stall p99 ${stall_p99} ms, max ${stall_max} ms"
    log "first read after the restart ${rec_kill} ms, after SIGCONT ${rec_cont} ms; CDC marker visible ${marker} ms after SIGCONT+1 s"
    [ "$n" -gt 0 ] && [ "$ok" = "$n" ] || fail "reads during the cache outage: $ok/$n succeeded"
    require_le "memcached restarted -> first 200 (ms)" "$rec_kill" "$BOUND_CALENDARD_MS"
    require_le "SIGCONT -> first 200 (ms)" "$rec_cont" "$BOUND_CALENDARD_MS"
    require_le "CDC marker visible (ms)" "$marker" "$BOUND_CACHE_MS"
    require_le "read p99 during the stall (ms)" "$stall_p99" "$BOUND_HEALTHY_P99_MS"
    rec=$marker
    record memcached 2 "$rec" \
        "\"reads_during_outage\":$n,\"reads_ok_during_outage\":$ok,\"stall_read_p99_ms\":$stall_p99,\"stall_read_max_ms\":$stall_max,\"first_ok_after_restart_ms\":$rec_kill,\"first_ok_after_cont_ms\":$rec_cont,\"cdc_marker_ms\":$marker"
}

# 4. SIGKILL the CDC relays and the invalidator repeatedly.
scenario_cdc_kill() {
    local r name kills=0 t0 t_last restart_ms=0 m0 m1 rec lag
    stress_start cdc-kill
    stress_loading cdc-kill
    for ((r = 0; r < CDC_ROUNDS; r++)); do
        for name in cdc-relay-shard0 invalidator cdc-relay-shard1; do
            signal_stack "$name" KILL || fail "$name was not running"
            kills=$((kills + 1))
            sleep 0.5
            t0=$(now_ms)
            restart "$name" || fail "stack.sh restart $name failed"
            t_last=$(now_ms)
            log "killed $name; restarted and ready in $((t_last - t0)) ms"
            [ $((t_last - t0)) -gt "$restart_ms" ] && restart_ms=$((t_last - t0))
        done
        # Both relays and the invalidator at once.
        if [ "$r" = $((CDC_ROUNDS - 1)) ]; then
            for name in cdc-relay-shard0 cdc-relay-shard1 invalidator; do
                signal_stack "$name" KILL || fail "$name was not running"
                kills=$((kills + 1))
            done
            sleep 1
            for name in cdc-relay-shard0 cdc-relay-shard1 invalidator; do
                restart "$name" || fail "stack.sh restart $name failed"
            done
            t_last=$(now_ms)
        fi
    done
    m0=$(marker_ms 0 "$BOUND_CDC_REPLAY_MS")
    m1=$(marker_ms 1 "$BOUND_CDC_REPLAY_MS")
    log "after the last restart: CDC marker of shard 0 visible in ${m0} ms, of shard 1 in ${m1} ms"
    stress_wait cdc-kill
    # Reported, not judged: an unreachable endpoint must not end the run.
    lag=$(curl -s --max-time 5 "$INV_METRICS_URL" |
        awk '/^calendar_invalidator_lag_messages/ { s += $NF } END { print s + 0 }') || lag=-1
    require_le "CDC marker shard 0 (ms)" "$m0" "$BOUND_CDC_REPLAY_MS"
    require_le "CDC marker shard 1 (ms)" "$m1" "$BOUND_CDC_REPLAY_MS"
    rec=$m0
    [ "$m1" -gt "$rec" ] && rec=$m1
    record cdc-kill "$kills" "$rec" \
        "\"slowest_restart_ms\":$restart_ms,\"cdc_marker_shard0_ms\":$m0,\"cdc_marker_shard1_ms\":$m1,\"invalidator_lag_after\":$lag,\"devbroker_restarted\":false"
}

# 5. Idle connections, byte-by-byte headers, oversized requests.
scenario_slow_clients() {
    local idle_s flood_s out=$WORK/slow-clients.flood.json flood_pid j hdr big body chunked
    local idle_opened idle_closed first_close last_close slow_closed p99 p50 hmax failed healthy_ok
    idle_s=$(sed -n 's/^[[:space:]]*idle_timeout_s[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p' \
        "$DIR/calendard.ini" | tail -n1)
    idle_s=${idle_s:-30}
    if [ "$QUICK" = 1 ]; then flood_s=12; else flood_s=$((idle_s + 8)); fi
    stress_start slow-clients
    "$PROBE" --port "$CAL_PORT" flood \
        --path "$(avail_path "${LISTING_ON[0]}" "$FAR_FROM" "$FAR_TO")" \
        --idle 300 --slow 20 --slow-interval-ms 100 --healthy 4 --duration-s "$flood_s" \
        >"$out" 2>&1 &
    flood_pid=$!
    BG_PIDS+=("$flood_pid")
    sleep 2
    # A probe that fails (exit 2: no connection) is a wrong answer below,
    # not the end of the run (set -e).
    big=$("$PROBE" --port "$CAL_PORT" oversize --kind header --bytes 40000 --path /healthz) || true
    hdr=$("$PROBE" --port "$CAL_PORT" oversize --kind header --bytes 30000 --path /healthz) || true
    body=$("$PROBE" --port "$CAL_PORT" oversize --kind body --bytes 70000 \
        --path "/v1/listings/${LISTING_ON[0]}/calendar") || true
    chunked=$("$PROBE" --port "$CAL_PORT" oversize --kind chunked --bytes 70000 \
        --path "/v1/listings/${LISTING_ON[0]}/calendar") || true
    log "40000-byte header: $big; 30000-byte header: $hdr; 70000-byte body: $body; chunked: $chunked"
    [[ $big == 431\ * ]] || fail "a 40000-byte header was answered '$big', not 431"
    [[ $hdr == 200\ * ]] || fail "a 30000-byte header (under the 32 KiB limit) was answered '$hdr'"
    [[ $body == "413 body_too_large"* ]] || fail "a 70000-byte body was answered '$body', not 413"
    [[ $chunked == "413 body_too_large"* ]] || fail "a 70000-byte chunked body was answered '$chunked', not 413"
    stress_wait slow-clients
    wait "$flood_pid" || fail "calendar-faultprobe flood failed"
    j=$(tail -n 1 "$out")
    idle_opened=$(json_num "$j" idle_opened)
    idle_closed=$(json_num "$j" idle_closed_by_server)
    first_close=$(json_num "$j" idle_first_close_ms)
    last_close=$(json_num "$j" idle_last_close_ms)
    slow_closed=$(json_num "$j" slow_closed_by_server)
    healthy_ok=$(json_num "$j" healthy_ok)
    failed=$(json_num "$j" healthy_failed)
    p50=$(json_num "$j" healthy_p50_ms)
    p99=$(json_num "$j" healthy_p99_ms)
    hmax=$(json_num "$j" healthy_max_ms)
    log "flood: $idle_opened idle connections, $idle_closed closed by calendard (first at ${first_close} ms, last at ${last_close} ms; idle_timeout_s=$idle_s); $slow_closed/20 byte-by-byte clients closed in ${flood_s} s"
    log "healthy clients: $healthy_ok ok, $failed failed, p50 ${p50} ms, p99 ${p99} ms, max ${hmax} ms"
    [ "${idle_opened:-0}" = 300 ] || fail "only ${idle_opened:-0}/300 idle connections were accepted"
    [ "${failed:-1}" = 0 ] || fail "healthy requests failed during the flood: $failed"
    require_le "healthy p99 during the flood (ms)" "${p99:--1}" "$BOUND_HEALTHY_P99_MS"
    if [ "$QUICK" = 0 ]; then
        [ "$idle_closed" = "$idle_opened" ] ||
            fail "$idle_closed/$idle_opened idle connections closed within $flood_s s"
        require_le "last idle close (ms)" "${last_close:--1}" $((idle_s * 1000 + IDLE_GRACE_MS))
    fi
    record slow-clients "$((300 + 20 + 4))" - \
        "\"idle_timeout_s\":$idle_s,\"flood_s\":$flood_s,\"idle_opened\":$idle_opened,\"idle_closed\":$idle_closed,\"idle_first_close_ms\":$first_close,\"idle_last_close_ms\":$last_close,\"slow_clients_closed\":$slow_closed,\"healthy_ok\":$healthy_ok,\"healthy_failed\":$failed,\"healthy_p50_ms\":$p50,\"healthy_p99_ms\":$p99,\"healthy_max_ms\":$hmax,\"header_40000\":\"${big%% *}\",\"header_30000\":\"${hdr%% *}\",\"body_70000\":\"${body%% *}\",\"chunked_70000\":\"${chunked%% *}\""
}

# ================================================================ main

[ -x "$STRESS" ] || die "$STRESS is not built (run make)"
for p in calendard calendar-cdc-relay calendar-cdc-invalidator calendar-devbroker calendar-admin; do
    [ -x "bin/$p" ] || die "bin/$p is not built (run make)"
done

# The probe: bin/calendar-faultprobe from the Makefile when it is current,
# else built here (it needs nothing but libc and pthreads).
PROBE=$ROOT/bin/calendar-faultprobe
if [ ! -x "$PROBE" ] || [ "$PROBE_SRC" -nt "$PROBE" ]; then
    PROBE=$ROOT/build/tests/faults/faultprobe
    if [ ! -x "$PROBE" ] || [ "$PROBE_SRC" -nt "$PROBE" ]; then
        mkdir -p "$(dirname "$PROBE")"
        ${CC:-cc} -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2 -Werror -O2 -g -o "$PROBE" "$PROBE_SRC" -lpthread ||
            die "building $PROBE_SRC failed"
    fi
fi

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock -n 9 || { log "waiting for another fault run that holds $DIR.lock"; flock -w 900 9 || die "gave up waiting"; }
if [ -d "$DIR" ]; then
    "$STACK_SH" down --dir "$DIR" >/dev/null 2>&1 9>&- || true
    rm -rf "$DIR"
fi
mkdir -p "$WORK"
trap teardown EXIT
trap 'log interrupted; exit 130' INT TERM
SUITE_START=$(now_ms)
log "starting the stack in $DIR"
STACK_STARTED=1
# A start can fail for a reason that passes (another program took a port
# between the check and the bind, a server slower than its readiness wait):
# 'up' then stops what it started; try again from an empty directory (the
# shards were bootstrapped with the failed attempt's ports), at most 3 times.
for attempt in 1 2 3; do
    if timeout -k 10 300 "$STACK_SH" up --dir "$DIR" --free-ports >"$WORK/stack-up.log" 2>&1 9>&-; then
        break
    fi
    tail -n 8 "$WORK/stack-up.log" >&2
    [ "$attempt" -lt 3 ] || die "stack up failed 3 times (logs in $DIR/logs, $WORK/stack-logs.*)"
    log "stack up failed (attempt $attempt); starting again in an empty $DIR"
    # Not wiped with a server left running: its pid file would go with it.
    "$STACK_SH" down --dir "$DIR" >/dev/null 2>&1 9>&- ||
        die "stack down failed after a failed start: $DIR kept (logs in $DIR/logs)"
    kept=$(mktemp -d)
    cp "$WORK/stack-up.log" "$kept/stack-up.$attempt.log"
    cp -a "$DIR/logs" "$kept/stack-logs.$attempt" 2>/dev/null || true
    cp -a "$WORK/." "$kept/"
    rm -rf "$DIR"
    mkdir -p "$WORK"
    cp -a "$kept/." "$WORK/"
    rm -rf "$kept"
done
CAL_PORT=$(sed -n 's/^calendard=//p' "$DIR/ports")
MC_PORT=$(sed -n 's/^memcached=//p' "$DIR/ports")
read -r -a SHARD_PORTS <<<"$(sed -n 's/^SHARD_PORTS="\(.*\)"$/\1/p' "$DIR/stack.env")"
INV_METRICS_URL=$(sed -n 's/^INVALIDATOR_METRICS_URL=//p' "$DIR/stack.env")
[ -n "$CAL_PORT" ] && [ -n "$MC_PORT" ] && [ "${#SHARD_PORTS[@]}" = 2 ] || die "cannot read the stack's ports"
make_fixtures
log "fixtures: probe listings ${LISTING_ON[0]} (shard 0), ${LISTING_ON[1]} (shard 1); CDC markers ${MARKER_ON[0]}, ${MARKER_ON[1]}"

for s in "${SCENARIOS[@]}"; do
    log "=== $s"
    t0=$(now_ms)
    "scenario_${s//-/_}"
    log "--- $s: $([ "${R_OK[-1]}" = true ] && echo PASS || echo FAIL) ($(( ($(now_ms) - t0) / 1000 )) s)"
done

# ---------------------------------------------------------------- report
echo
printf '%-15s %10s %7s %12s  %-40s %s\n' scenario operations faults recovery_ms \
    "invariants dbl/lost/phantom/dup/cache" result
failed=0
for i in "${!R_NAME[@]}"; do
    printf '%-15s %10s %7s %12s  %-40s %s\n' "${R_NAME[i]}" "${R_OPS[i]}" "${R_FAULTS[i]}" \
        "${R_REC[i]}" "${R_INV[i]}" "$([ "${R_OK[i]}" = true ] && echo PASS || echo FAIL)"
    [ "${R_OK[i]}" = true ] || failed=$((failed + 1))
done
json="{\"suite\":\"faults\",\"quick\":$([ "$QUICK" = 1 ] && echo true || echo false),"
json+="\"ok\":$([ "$failed" = 0 ] && echo true || echo false),\"failed\":$failed,"
json+="\"duration_s\":$(( ($(now_ms) - SUITE_START) / 1000 )),\"stress\":{\"clients\":$CLIENTS,\"listings\":$LISTINGS,\"min_load_s\":$STRESS_S},"
json+="\"scenarios\":[$(IFS=,; echo "${R_JSON[*]}")]}"
echo "$json"
[ "$failed" = 0 ] || exit 1
exit 0
