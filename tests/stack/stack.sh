#!/usr/bin/env bash
# The local stack of real servers (MariaDB shards, memcached, the Kafka
# devbroker, one CDC relay per shard, calendard) for
# development (`make run`, `make stack-up`) and for the integration tests.
# Every server listens on 127.0.0.1 and is stopped by the PID this script wrote.
set -euo pipefail
# Debian installs mariadbd in /usr/sbin, which is not on a non-root user's PATH.
PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ME=${0##*/}

NUM_VBUCKETS=${NUM_VBUCKETS:-4096}
DB_READY_TIMEOUT=${DB_READY_TIMEOUT:-60}
CALENDARD_READY_TIMEOUT=${CALENDARD_READY_TIMEOUT:-20}
CDC_READY_TIMEOUT=${CDC_READY_TIMEOUT:-15}
# The invalidator's join: 3-5 s, or 18 s more when the devbroker dropped it
# (its max_poll_interval_ms below).
INV_READY_TIMEOUT=${INV_READY_TIMEOUT:-60}
CDC_TOPIC_PREFIX=calendar
# One partition per topic by default: the devbroker (librdkafka's mock) serves
# one message set per partition per fetch and finds it by walking the
# partition's log, so many small partitions make the invalidator fall behind
# under load; a real Kafka cluster has neither limit (docs/benchmarks.md).
CDC_PARTITIONS=${CDC_PARTITIONS:-1}
CDC_BROKERS=${CDC_BROKERS:-1}
# The relays batch for 15 ms, not the relay's default 5, and the invalidator
# waits 2 ms for an empty fetch, not its default 5: the devbroker keeps up to
# 5 MB of message sets per partition and walks them from the oldest on every
# fetch with data, so at a few hundred commits a second small batches made its
# CPU grow through a run and its replies wait (at 5 ms, CDC p99 over 100 ms at
# 4 clients); and it holds an empty fetch for the whole wait even when data
# arrives meanwhile (docs/benchmarks.md, "The devbroker's sockets, the relays'
# linger and the invalidator's fetch wait"). A real Kafka broker indexes its
# log and answers a waiting fetch when data comes; production keeps the defaults.
CDC_LINGER_MS=${CDC_LINGER_MS:-15}
CDC_FETCH_WAIT_MS=${CDC_FETCH_WAIT_MS:-2}
STOP_TIMEOUT=15 # calendard answers what it runs for up to 10 s (http.c STOP_DRAIN_MS) after TERM
OS_USER=$(id -un)

usage() {
    cat <<EOF
Usage: $ME COMMAND --dir DIR [options]

Runs the local stack under DIR: one mariadbd per shard (the catalog database
lives on shard 0), memcached, calendar-devbroker (an in-memory Kafka: its data
is lost when it stops), one calendar-cdc-relay per shard (binlog -> Kafka,
checkpoints in DIR/cdc/shard<i>/), calendar-cdc-invalidator (Kafka -> memcached)
and calendard, all on 127.0.0.1.

Commands:
  up --dir DIR [--free-ports] [--shards N]
        Start everything in the background, wait until each server is ready,
        create the databases, users and schema (bin/calendar-admin bootstrap),
        write DIR/stack.env and print a summary. Data under DIR is kept
        between runs, and so is its catalog, which names the shards by
        address: a DIR set up with other shard ports or another --shards is
        refused (exit 1; reuse them, or remove DIR). Refuses (exit 3) when
        processes from an earlier 'up' in DIR are still alive: run 'down'
        first. If a step fails or a signal comes, 'up' stops what it started
        and exits non-zero (logs stay in DIR/logs/).
  down --dir DIR
        Stop exactly the processes 'up' started (DIR/run/*.pid): TERM, up to
        ${STOP_TIMEOUT} s, then KILL. Never looks processes up by name.
  run --dir DIR [--shards N]
        'up' on the fixed ports, print the URL and a curl example, then wait;
        Ctrl-C (SIGINT/SIGTERM/SIGHUP) runs 'down' and exits 0.
  restart NAME --dir DIR
        Stop NAME of a running stack (as 'down' does; a process that already
        died is fine) and start it again with the command 'up' recorded in
        DIR/run/NAME.cmd, then wait until it is ready. NAME is a file name of
        DIR/run/*.pid, e.g. cdc-relay-shard0, calendard, memcached, shard1.
        The devbroker cannot be restarted alone (new port, empty memory).

Options:
  --dir DIR      state directory (created; no whitespace in the path)
  --free-ports   pick free loopback ports in 20000-32767 (below the kernel's ephemeral
                 range, so an outgoing connection cannot take one first)
  --shards N     number of MariaDB shards, 1-16 (default 2)
  --spare-shards K  also start K more MariaDB instances with databases and users
                 but outside the cluster (stack.env: SPARE_SHARD), for add-shard
  -h, --help     this text

Fixed ports (environment overrides):
  CALENDARD_PORT=${CALENDARD_PORT:-8080}  SHARD_BASE_PORT=${SHARD_BASE_PORT:-3307} (shard i: base+i)
  MEMCACHED_PORT=${MEMCACHED_PORT:-11212}  INVALIDATOR_METRICS_PORT=${INVALIDATOR_METRICS_PORT:-9464}
  The devbroker always listens on a port the system picks (librdkafka 2.0);
  stack.env has it as KAFKA_BOOTSTRAP.
  CDC_PARTITIONS=${CDC_PARTITIONS:-1} partitions per CDC topic (<prefix>.<db>.<table>),
  CDC_BROKERS=${CDC_BROKERS:-1} devbroker brokers, CDC_LINGER_MS=${CDC_LINGER_MS:-15} (relay linger.ms),
  CDC_FETCH_WAIT_MS=${CDC_FETCH_WAIT_MS:-2} (invalidator fetch.wait.max.ms).

Layout of DIR: shard<i>/ (data, binlog, socket), memcached/, logs/, run/*.pid,
ports (the shard count and ports of the last up; --free-ports keeps them while
they are free),
secrets/{admin,app,repl}.password and .cnf (mode 0600; the .cnf files are for
'mariadb --defaults-extra-file=DIR/secrets/app.cnf -P PORT'), admin.ini,
calendard.ini, cdc-relay-shard<i>.ini, invalidator.ini, cdc/shard<i>/ (relay checkpoints),
run/kafka.bootstrap, stack.env (sourceable KEY=VALUE lines).

Development only (not for CI): STACK_NO_CALENDARD=1 skips calendard;
STACK_NO_CDC=1 skips the devbroker and the relays;
STACK_NO_ADMIN=1 applies schema/*/*.sql with the mariadb client instead of
running bin/calendar-admin bootstrap.
EOF
}

# Never fails: a stop must go on when stderr is gone (a closed pipe, a hung-up
# terminal), or set -e would end it with the servers still running.
log() { printf '%s: %s\n' "$ME" "$*" >&2 2>/dev/null || true; }
die() {
    log "error: $*"
    exit 1
}

# ---------------------------------------------------------------- processes

# Start time of a process in clock ticks since boot (field 22 of stat), so a
# PID file never makes us signal an unrelated process that reused the PID.
proc_start_time() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # comm may contain spaces and parentheses
    # shellcheck disable=SC2086 # split the remaining fields on purpose
    set -- $stat
    printf '%s\n' "${20}"
}

# A zombie (state Z) counts as gone: in 'run' the servers are our children
# and stay zombies until this shell exits.
proc_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Prints the PID recorded for NAME if that process is still the one we started.
owned_pid() {
    local name=$1 pid start
    pid=$(cat "$RUN_DIR/$name.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    start=$(cat "$RUN_DIR/$name.start" 2>/dev/null) || return 1
    proc_alive "$pid" || return 1
    [ "$(proc_start_time "$pid")" = "$start" ] || return 1
    printf '%s\n' "$pid"
}

# start_bg NAME CMD...: runs CMD in the background in its own session (so a
# Ctrl-C on the terminal reaches only this script, which then stops it in
# order), stdout/stderr to DIR/logs/NAME.log, PID in DIR/run/NAME.pid.
start_bg() {
    local name=$1 pid
    shift
    # The command, shell-quoted, for 'restart NAME'.
    printf '%q ' "$@" >"$RUN_DIR/$name.cmd"
    setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
    pid=$!
    printf '%s\n' "$pid" >"$RUN_DIR/$name.pid"
    proc_start_time "$pid" >"$RUN_DIR/$name.start" || true
    printf '%s\n' "$name" >>"$RUN_DIR/order"
    STARTED+=("$name")
}

# Last lines of every log that belongs to NAME.
show_logs() {
    local f
    for f in "$LOG_DIR/$1".*; do
        [ -s "$f" ] || continue
        printf -- '--- tail of %s\n' "$f" >&2
        tail -n 30 "$f" >&2
    done
}

# wait_ready NAME TIMEOUT CMD...: polls CMD until it succeeds; fails early if
# NAME's process exited, and after TIMEOUT seconds.
wait_ready() {
    local name=$1 timeout=$2 deadline
    shift 2
    deadline=$((SECONDS + timeout))
    while :; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if ! owned_pid "$name" >/dev/null; then
            log "$name exited during startup"
            show_logs "$name"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$name not ready after ${timeout}s"
            show_logs "$name"
            return 1
        fi
        sleep 0.2
    done
}

# Stops NAME if it is still ours: TERM, bounded wait, KILL.
stop_one() {
    local name=$1 pid deadline
    if pid=$(owned_pid "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true # stopped (a test's SIGSTOP): it must see the TERM
        deadline=$((SECONDS + STOP_TIMEOUT))
        while proc_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        if proc_alive "$pid"; then
            log "$name (pid $pid) still running after ${STOP_TIMEOUT}s, sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while proc_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
                sleep 0.1
            done
        fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.start"
}

# log_has_since NAME OFFSET PATTERN: PATTERN appears in NAME's log after byte
# OFFSET (the log is appended to across restarts).
log_has_since() {
    tail -c +"$(($2 + 1))" "$LOG_DIR/$1.log" 2>/dev/null | grep -qF -- "$3"
}

log_size() {
    stat -c %s "$LOG_DIR/$1.log" 2>/dev/null || echo 0
}

# Every NAME with a PID file, latest started first (the order file), then any
# PID file the order file does not know.
recorded_names() {
    local name f
    local -a names=()
    if [ -f "$RUN_DIR/order" ]; then
        while IFS= read -r name; do
            [ -n "$name" ] && [ -f "$RUN_DIR/$name.pid" ] && names=("$name" "${names[@]}")
        done <"$RUN_DIR/order"
    fi
    for f in "$RUN_DIR"/*.pid; do
        [ -e "$f" ] || continue
        name=${f##*/}
        name=${name%.pid}
        [[ " ${names[*]} " == *" $name "* ]] || names+=("$name")
    done
    printf '%s\n' "${names[@]}" | awk 'NF && !seen[$0]++'
}

# Is a 'restart NAME' under way (its marker names a live process)?
restarting() {
    local pid start
    read -r pid start <"$RUN_DIR/$1.restarting" 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] && proc_alive "$pid" && [ "$(proc_start_time "$pid")" = "$start" ]
}

stack_down() {
    local name
    # A stop goes on to its end whatever stderr became (log() cannot fail,
    # and a closed pipe must not kill the script either).
    trap '' PIPE
    [ -d "$RUN_DIR" ] || return 0
    while IFS= read -r name; do
        stop_one "$name"
    done < <(recorded_names)
    rm -f "$RUN_DIR/order"
}

# ---------------------------------------------------------------- ports

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Both helpers set PORT (not print it) so USED_PORTS survives: no subshell.
USED_PORTS=" "
pick_free_port() {
    local tries
    for ((tries = 0; tries < 200; tries++)); do
        PORT=$((((RANDOM << 15) | RANDOM) % 12768 + 20000))
        [[ $USED_PORTS == *" $PORT "* ]] && continue
        port_in_use "$PORT" && continue
        USED_PORTS+="$PORT "
        return 0
    done
    die "no free loopback port found in 20000-32767"
}

fixed_port() {
    PORT=$1
    if port_in_use "$PORT"; then
        die "port $PORT on 127.0.0.1 is in use (override the *_PORT variables or use --free-ports)"
    fi
    USED_PORTS+="$PORT "
}

# choose_port NAME FIXED: sets PORT for NAME. With --free-ports, the port NAME
# had in the last 'up' in DIR (DIR/ports) is kept when it is still free, so a
# reused datadir keeps the addresses the catalog registered.
choose_port() {
    local name=$1 fixed=$2 prev
    if [ "$FREE_PORTS" != 1 ]; then
        fixed_port "$fixed"
        return 0
    fi
    prev=$(sed -n "s/^$name=\([0-9][0-9]*\)\$/\1/p" "$DIR/ports" 2>/dev/null || true)
    if [ -n "$prev" ] && [[ $USED_PORTS != *" $prev "* ]] && ! port_in_use "$prev"; then
        PORT=$prev
        USED_PORTS+="$PORT "
        return 0
    fi
    pick_free_port
}

# ---------------------------------------------------------------- secrets

gen_password() {
    local pw=""
    while [ "${#pw}" -lt 24 ]; do
        pw+=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 256 /dev/urandom))
    done
    printf '%s\n' "${pw:0:24}"
}

# Creates DIR/secrets/ROLE.password once, and a client option file for it.
ensure_secret() {
    local role=$1 user=$2 file="$SECRETS_DIR/$1.password" pw
    if [ ! -s "$file" ]; then
        gen_password >"$file"
    fi
    pw=$(cat "$file")
    [[ $pw =~ ^[A-Za-z0-9]{24}$ ]] || die "$file: not a 24-character alphanumeric password"
    printf '[client]\nuser=%s\npassword=%s\nhost=127.0.0.1\nprotocol=tcp\n' \
        "$user" "$pw" >"$SECRETS_DIR/$role.cnf"
    chmod 600 "$file" "$SECRETS_DIR/$role.cnf"
    printf '%s\n' "$pw"
}

# ---------------------------------------------------------------- MariaDB

shard_sock() { printf '%s\n' "$DIR/shard$1/mysqld.sock"; }

# SQL as the OS user's unix_socket account (root, or the account
# mariadb-install-db created for a non-root user). SQL comes on stdin, so
# passwords never appear on a command line.
shard_sql() {
    mariadb --no-defaults --socket="$(shard_sock "$1")" -u"$OS_USER" \
        --batch --skip-column-names "${@:2}"
}

shard_ping() {
    mariadb-admin --no-defaults --socket="$(shard_sock "$1")" -uroot \
        --connect-timeout=2 ping
}

install_shard() {
    local i=$1 sdir="$DIR/shard$1"
    local -a as_user=()
    [ -f "$sdir/.installed" ] && return 0
    # A datadir without the marker is a half-finished install: start over.
    rm -rf "$sdir/data"
    mkdir -p "$sdir/data" "$sdir/tmp"
    [ "$(id -u)" -eq 0 ] && as_user=(--user="$OS_USER")
    log "initialising shard$i datadir"
    if ! mariadb-install-db --no-defaults --datadir="$sdir/data" \
        --auth-root-authentication-method=socket \
        --auth-root-socket-user="$OS_USER" "${as_user[@]}" \
        --skip-test-db --skip-name-resolve \
        >>"$LOG_DIR/shard$i.install.log" 2>&1; then
        show_logs "shard$i"
        die "mariadb-install-db failed for shard$i"
    fi
    touch "$sdir/.installed"
}

start_shard() {
    local i=$1 port=$2 sdir="$DIR/shard$1"
    mkdir -p "$sdir/tmp"
    start_bg "shard$i" mariadbd --no-defaults --user="$OS_USER" \
        --datadir="$sdir/data" --socket="$sdir/mysqld.sock" \
        --port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
        --server-id=$((i + 1)) \
        --log-bin="$sdir/binlog" --binlog-format=ROW \
        --binlog-row-metadata=FULL --binlog-row-image=FULL \
        --innodb-flush-log-at-trx-commit=1 --sync-binlog=1 \
        --pid-file="$sdir/mysqld.pid" --log-error="$LOG_DIR/shard$i.err" \
        --tmpdir="$sdir/tmp" --secure-file-priv="$sdir/tmp" \
        --innodb-buffer-pool-size=256M --innodb-log-file-size=64M \
        --max-connections=500 --performance-schema=OFF \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
}

# Databases and users of shard i; idempotent. ALTER USER keeps the server's
# passwords equal to the secrets files. '\_' stops GRANT from reading the
# underscore in a database name as a wildcard.
setup_shard_sql() {
    local i=$1 host db="calendar_shard$1"
    local gdb="calendar\\_shard$1" gcat='calendar\_catalog'
    printf "CREATE DATABASE IF NOT EXISTS \`%s\`;\n" "$db"
    if [ "$i" -eq 0 ]; then
        printf "CREATE DATABASE IF NOT EXISTS \`calendar_catalog\`;\n"
    fi
    for host in 127.0.0.1 localhost; do
        printf "CREATE USER IF NOT EXISTS 'cal_admin'@'%s' IDENTIFIED BY '%s';\n" "$host" "$ADMIN_PW"
        printf "ALTER USER 'cal_admin'@'%s' IDENTIFIED BY '%s';\n" "$host" "$ADMIN_PW"
        printf "GRANT ALL PRIVILEGES ON \`%s\`.* TO 'cal_admin'@'%s';\n" "$gdb" "$host"
        printf "CREATE USER IF NOT EXISTS 'cal_app'@'%s' IDENTIFIED BY '%s';\n" "$host" "$APP_PW"
        printf "ALTER USER 'cal_app'@'%s' IDENTIFIED BY '%s';\n" "$host" "$APP_PW"
        printf "GRANT SELECT, INSERT, UPDATE, DELETE ON \`%s\`.* TO 'cal_app'@'%s';\n" "$gdb" "$host"
        printf "CREATE USER IF NOT EXISTS 'cal_repl'@'%s' IDENTIFIED BY '%s';\n" "$host" "$REPL_PW"
        printf "ALTER USER 'cal_repl'@'%s' IDENTIFIED BY '%s';\n" "$host" "$REPL_PW"
        printf "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'cal_repl'@'%s';\n" "$host"
        printf "GRANT SELECT ON \`%s\`.* TO 'cal_repl'@'%s';\n" "$gdb" "$host"
        if [ "$i" -eq 0 ]; then
            printf "GRANT ALL PRIVILEGES ON \`%s\`.* TO 'cal_admin'@'%s';\n" "$gcat" "$host"
            printf "GRANT SELECT ON \`%s\`.* TO 'cal_app'@'%s';\n" "$gcat" "$host"
        fi
    done
}

# Development fallback while bin/calendar-admin does not exist.
apply_schema_files() {
    local i f
    for ((i = 0; i < NSHARDS; i++)); do
        if [ -z "$(shard_sql "$i" -e "SHOW TABLES FROM calendar_shard$i LIKE 'listings'")" ]; then
            for f in "$ROOT"/schema/shard/*.sql; do
                shard_sql "$i" "calendar_shard$i" <"$f"
            done
        fi
    done
    if [ -z "$(shard_sql 0 -e "SHOW TABLES FROM calendar_catalog LIKE 'shards'")" ]; then
        for f in "$ROOT"/schema/catalog/*.sql; do
            shard_sql 0 calendar_catalog <"$f"
        done
    fi
}

# calendard takes blocks of reservation ids from the catalog's id_blocks
# (schema/catalog/003_id_blocks.sql): its only catalog write. A table grant
# needs the table, so it follows the schema.
grant_app_ids_sql() {
    local host
    for host in 127.0.0.1 localhost; do
        printf "GRANT UPDATE ON \`calendar_catalog\`.\`id_blocks\` TO 'cal_app'@'%s';\n" "$host"
    done
}

bootstrap_schema() {
    local i
    local -a shards=()
    if [ "${STACK_NO_ADMIN:-0}" = 1 ]; then
        log "STACK_NO_ADMIN=1: applying schema/*.sql directly (development only)"
        apply_schema_files
        grant_app_ids_sql | shard_sql 0 || die "granting cal_app UPDATE on id_blocks failed"
        return 0
    fi
    [ -x "$ROOT/bin/calendar-admin" ] ||
        die "$ROOT/bin/calendar-admin not built (run make; STACK_NO_ADMIN=1 skips it for development)"
    for ((i = 0; i < NSHARDS; i++)); do
        shards+=(--shard "127.0.0.1:${SHARD_PORTS[i]}/calendar_shard$i")
    done
    log "bootstrapping schema with calendar-admin"
    if ! timeout 120 "$ROOT/bin/calendar-admin" --config "$DIR/admin.ini" \
        bootstrap --vbuckets "$NUM_VBUCKETS" "${shards[@]}" \
        >>"$LOG_DIR/admin.log" 2>&1; then
        show_logs admin
        die "calendar-admin bootstrap failed"
    fi
    grant_app_ids_sql | shard_sql 0 || die "granting cal_app UPDATE on id_blocks failed"
}

# ---------------------------------------------------------------- memcached

memcached_ping() {
    local line
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'version\r\n' >&3
        IFS= read -r -t 2 line <&3 || exit 1
        [[ $line == VERSION* ]]
    ) 2>/dev/null
}

# ---------------------------------------------------------------- configs

write_configs() {
    cat >"$DIR/admin.ini" <<EOF
[catalog]
host = 127.0.0.1
port = ${SHARD_PORTS[0]}
database = calendar_catalog
user = cal_admin
password_file = $SECRETS_DIR/admin.password
[shards]
user = cal_admin
password_file = $SECRETS_DIR/admin.password
EOF
    cat >"$DIR/calendard.ini" <<EOF
[server]
listen = 127.0.0.1
port = $CAL_PORT
[catalog]
host = 127.0.0.1
port = ${SHARD_PORTS[0]}
database = calendar_catalog
user = cal_app
password_file = $SECRETS_DIR/app.password
[shards]
user = cal_app
password_file = $SECRETS_DIR/app.password
[cache]
servers = 127.0.0.1:$MC_PORT
[log]
level = info
EOF
    chmod 600 "$DIR/admin.ini" "$DIR/calendard.ini"
}

write_env() {
    local i dsns="" socks="" ports=""
    for ((i = 0; i < NSHARDS; i++)); do
        dsns+="${dsns:+ }mysql://cal_admin:$ADMIN_PW@127.0.0.1:${SHARD_PORTS[i]}/calendar_shard$i"
        socks+="${socks:+ }$(shard_sock "$i")"
        ports+="${ports:+ }${SHARD_PORTS[i]}"
    done
    {
        echo "# Written by tests/stack/stack.sh up; sourceable. Contains passwords."
        echo "STACK_DIR=$DIR"
        echo "CALENDARD_URL=http://127.0.0.1:$CAL_PORT"
        echo "CATALOG_DSN=mysql://cal_admin:$ADMIN_PW@127.0.0.1:${SHARD_PORTS[0]}/calendar_catalog"
        echo "SHARD_DSNS=\"$dsns\""
        echo "APP_SHARD_USER=cal_app"
        echo "MEMCACHED_SERVERS=127.0.0.1:$MC_PORT"
        echo "CALENDARD_CONFIG=$DIR/calendard.ini"
        echo "ADMIN_CONFIG=$DIR/admin.ini"
        echo "SHARD_SOCKETS=\"$socks\""
        echo "SHARD_PORTS=\"$ports\""
        echo "SHARD_COUNT=$NSHARDS"
        echo "NUM_VBUCKETS=$NUM_VBUCKETS"
        echo "CALENDARD_PORT=$CAL_PORT"
        echo "MEMCACHED_PORT=$MC_PORT"
        echo "ADMIN_USER=cal_admin"
        echo "ADMIN_PASSWORD_FILE=$SECRETS_DIR/admin.password"
        echo "APP_USER=cal_app"
        echo "APP_PASSWORD_FILE=$SECRETS_DIR/app.password"
        echo "REPL_USER=cal_repl"
        echo "REPL_PASSWORD_FILE=$SECRETS_DIR/repl.password"
        echo "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP"
        echo "CDC_TOPIC_PREFIX=$CDC_TOPIC_PREFIX"
        echo "CDC_PARTITIONS=$CDC_PARTITIONS"
        echo "STACK_SH=$ROOT/tests/stack/stack.sh"
        if [ "$NSPARE" -gt 0 ]; then
            # Running, with users and databases, but not in the catalog:
            # for calendar-rebalance add-shard.
            echo "SPARE_SHARD=127.0.0.1:${SHARD_PORTS[NSHARDS]}/calendar_shard$NSHARDS"
        fi
        if [ -n "${INV_METRICS_PORT:-}" ] && [ -n "$KAFKA_BOOTSTRAP" ]; then
            echo "INVALIDATOR_METRICS_URL=http://127.0.0.1:$INV_METRICS_PORT/metrics"
        fi
    } >"$DIR/stack.env"
    chmod 600 "$DIR/stack.env"
}

# ---------------------------------------------------------------- CDC

cdc_topics() {
    local i t topics=""
    for ((i = 0; i < NINST; i++)); do
        for t in listings nights reservations; do
            topics+="${topics:+,}$CDC_TOPIC_PREFIX.calendar_shard$i.$t"
        done
    done
    printf '%s\n' "$topics"
}

# One relay per shard, presenting replica server id 1000+i, checkpointing
# under DIR/cdc/shard<i>/.
write_relay_config() {
    local i=$1 f="$DIR/cdc-relay-shard$1.ini"
    cat >"$f" <<EOF
[source]
host = 127.0.0.1
port = ${SHARD_PORTS[i]}
database = calendar_shard$i
user = cal_repl
password_file = $SECRETS_DIR/repl.password
server_id = $((1000 + i))
[kafka]
bootstrap_servers = $KAFKA_BOOTSTRAP
topic_prefix = $CDC_TOPIC_PREFIX
linger_ms = $CDC_LINGER_MS
[relay]
state_dir = $DIR/cdc/shard$i
[log]
level = info
EOF
    chmod 600 "$f"
}

start_cdc() {
    local i name size
    KAFKA_BOOTSTRAP=""
    if [ "${STACK_NO_CDC:-0}" = 1 ]; then
        log "STACK_NO_CDC=1: not starting the devbroker and the relays (development only)"
        return 0
    fi
    for name in calendar-devbroker calendar-cdc-relay; do
        [ -x "$ROOT/bin/$name" ] ||
            die "$ROOT/bin/$name not built (run make; STACK_NO_CDC=1 skips it for development)"
    done
    rm -f "$RUN_DIR/kafka.bootstrap"
    start_bg devbroker "$ROOT/bin/calendar-devbroker" --brokers "$CDC_BROKERS" --topics "$(cdc_topics)" \
        --partitions "$CDC_PARTITIONS" --bootstrap-file "$RUN_DIR/kafka.bootstrap"
    wait_ready devbroker 10 test -s "$RUN_DIR/kafka.bootstrap" || die "devbroker did not start"
    KAFKA_BOOTSTRAP=$(head -n 1 "$RUN_DIR/kafka.bootstrap")
    [[ $KAFKA_BOOTSTRAP =~ ^127\.0\.0\.1:[0-9]+(,127\.0\.0\.1:[0-9]+)*$ ]] ||
        die "devbroker wrote an unexpected bootstrap address: $KAFKA_BOOTSTRAP"
    mkdir -p "$DIR/cdc"
    for ((i = 0; i < NINST; i++)); do
        write_relay_config "$i"
        name=cdc-relay-shard$i
        size=$(log_size "$name")
        start_bg "$name" "$ROOT/bin/calendar-cdc-relay" --config "$DIR/$name.ini"
        wait_ready "$name" "$CDC_READY_TIMEOUT" log_has_since "$name" "$size" 'msg="streaming"' ||
            die "$name did not start streaming"
    done
}

write_invalidator_config() {
    cat >"$DIR/invalidator.ini" <<EOF
[kafka]
bootstrap_servers = $KAFKA_BOOTSTRAP
group_id = calendar-invalidator
session_timeout_ms = 6000
# The devbroker (librdkafka's mock) drops a joining member whose session ran
# out while it waited (a stall of 1-3 s): its JoinGroup is asked again after
# 18 s, not librdkafka's 5 min.
max_poll_interval_ms = 15000
fetch_wait_max_ms = $CDC_FETCH_WAIT_MS
[cache]
servers = 127.0.0.1:$MC_PORT
[invalidator]
metrics_listen = 127.0.0.1
metrics_port = $INV_METRICS_PORT
[log]
level = info
EOF
    chmod 600 "$DIR/invalidator.ini"
}

# The invalidator follows every relay's topics (its default topic pattern).
# Ready once the consumer group has assigned it partitions.
start_invalidator() {
    [ -n "$KAFKA_BOOTSTRAP" ] || return 0
    [ -x "$ROOT/bin/calendar-cdc-invalidator" ] ||
        die "$ROOT/bin/calendar-cdc-invalidator not built (run make; STACK_NO_CDC=1 skips CDC)"
    write_invalidator_config
    start_bg invalidator "$ROOT/bin/calendar-cdc-invalidator" --config "$DIR/invalidator.ini"
    wait_ready invalidator "$INV_READY_TIMEOUT" \
        curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$INV_METRICS_PORT/readyz" ||
        die "the invalidator did not join its consumer group"
}

# ---------------------------------------------------------------- commands

set_dir() {
    [ -n "$1" ] || die "--dir is required"
    [[ $1 =~ [[:space:]] ]] && die "--dir must not contain whitespace"
    if [ "$2" = down ] && [ ! -d "$1" ]; then
        echo "stack: $1 does not exist, nothing to stop"
        exit 0
    fi
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    RUN_DIR=$DIR/run
    LOG_DIR=$DIR/logs
    SECRETS_DIR=$DIR/secrets
}

# On a failed 'up', stop what this invocation started.
UP_OK=0
STARTED=()
on_up_exit() {
    local rc=$?
    if [ "$UP_OK" -ne 1 ] && [ "${#STARTED[@]}" -gt 0 ]; then
        log "startup failed; stopping what was started (logs in $LOG_DIR)"
        stack_down
    fi
    exit "$rc"
}

# A stack set up before keeps its catalog, which names each shard by its
# address and holds the vbucket layout of its shard count: the same
# directory with other shard ports or another --shards cannot start.
check_layout() {
    local i prev prev_n
    [ -f "$DIR/shard0/.installed" ] && [ -f "$DIR/ports" ] || return 0
    prev_n=$(sed -n 's/^nshards=\([0-9][0-9]*\)$/\1/p' "$DIR/ports")
    if [ -n "$prev_n" ] && [ "$prev_n" != "$NSHARDS" ]; then
        die "$DIR holds a stack of $prev_n shards, not $NSHARDS: use --shards $prev_n, or remove $DIR to start afresh"
    fi
    for ((i = 0; i < NINST; i++)); do
        prev=$(sed -n "s/^shard$i=\([0-9][0-9]*\)\$/\1/p" "$DIR/ports")
        if [ -f "$DIR/shard$i/.installed" ] && [ -n "$prev" ] && [ "$prev" != "${SHARD_PORTS[i]}" ]; then
            die "shard$i of the stack in $DIR was set up on port $prev, not ${SHARD_PORTS[i]} (taken, or another SHARD_BASE_PORT): its catalog names shards by address; free port $prev or remove $DIR to start afresh"
        fi
    done
}

stack_up() {
    local i name pid alive=() mc_user=()
    umask 077
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$SECRETS_DIR" "$DIR/memcached"
    chmod 700 "$SECRETS_DIR"

    while IFS= read -r name; do
        if owned_pid "$name" >/dev/null; then
            alive+=("$name")
        else
            rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.start"
        fi
    done < <(recorded_names)
    if [ "${#alive[@]}" -gt 0 ]; then
        log "a stack is already running in $DIR (${alive[*]}); run '$ME down --dir $DIR' first"
        exit 3
    fi
    rm -f "$RUN_DIR/order"

    SHARD_PORTS=()
    for ((i = 0; i < NINST; i++)); do
        choose_port "shard$i" $((${SHARD_BASE_PORT:-3307} + i))
        SHARD_PORTS+=("$PORT")
    done
    choose_port memcached "${MEMCACHED_PORT:-11212}"
    MC_PORT=$PORT
    choose_port calendard "${CALENDARD_PORT:-8080}"
    CAL_PORT=$PORT
    choose_port invalidator "${INVALIDATOR_METRICS_PORT:-9464}"
    INV_METRICS_PORT=$PORT
    check_layout
    {
        echo "nshards=$NSHARDS"
        for ((i = 0; i < NINST; i++)); do echo "shard$i=${SHARD_PORTS[i]}"; done
        echo "memcached=$MC_PORT"
        echo "calendard=$CAL_PORT"
        echo "invalidator=$INV_METRICS_PORT"
    } >"$DIR/ports"
    # sun_path holds 108 bytes including the terminating NUL.
    [ "${#DIR}" -le 80 ] || die "--dir path too long for a unix socket: $DIR"

    ADMIN_PW=$(ensure_secret admin cal_admin)
    APP_PW=$(ensure_secret app cal_app)
    REPL_PW=$(ensure_secret repl cal_repl)
    write_configs

    trap on_up_exit EXIT
    trap 'exit 130' INT TERM HUP

    for ((i = 0; i < NINST; i++)); do
        install_shard "$i"
        start_shard "$i" "${SHARD_PORTS[i]}"
    done
    mc_user=()
    [ "$(id -u)" -eq 0 ] && mc_user=(-u root)
    # Without the segmented LRU's maintainer thread (and the crawler it
    # schedules): it kept juggling the items every search fetches and took
    # a third of memcached's CPU per search here; what it buys, keeping hot
    # items from eviction under memory pressure, a cache that fits does not
    # need (docs/benchmarks.md).
    start_bg memcached memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 64 -c 1024 -t 2 \
        -o no_lru_maintainer,no_lru_crawler "${mc_user[@]}"

    for ((i = 0; i < NINST; i++)); do
        wait_ready "shard$i" "$DB_READY_TIMEOUT" shard_ping "$i" ||
            die "shard$i did not start"
        setup_shard_sql "$i" | shard_sql "$i" ||
            die "creating databases and users on shard$i failed"
    done
    wait_ready memcached 10 memcached_ping "$MC_PORT" || die "memcached did not start"

    bootstrap_schema
    start_cdc
    start_invalidator
    write_env

    if [ "${STACK_NO_CALENDARD:-0}" = 1 ]; then
        log "STACK_NO_CALENDARD=1: not starting calendard (development only)"
    else
        [ -x "$ROOT/bin/calendard" ] ||
            die "$ROOT/bin/calendard not built (run make; STACK_NO_CALENDARD=1 skips it for development)"
        start_bg calendard "$ROOT/bin/calendard" --config "$DIR/calendard.ini"
        wait_ready calendard "$CALENDARD_READY_TIMEOUT" \
            curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$CAL_PORT/readyz" ||
            die "calendard did not become ready"
    fi

    UP_OK=1
    trap - EXIT
    # `run` stops what it started on a signal from here on; `up` leaves the
    # stack running once it is up.
    if [ "${RUN_MODE:-0}" = 1 ]; then
        # Whatever stderr became (a pipe whose reader died with the same
        # Ctrl-C, a terminal hung up), the stop goes on to the end.
        trap 'trap "" PIPE; set +e; log "stopping"; stack_down; exit 0' INT TERM HUP
    else
        trap - INT TERM HUP
    fi

    echo "stack up in $DIR"
    for ((i = 0; i < NINST; i++)); do
        echo "  shard$i     127.0.0.1:${SHARD_PORTS[i]}  calendar_shard$i$([ "$i" -eq 0 ] && echo ' + calendar_catalog')  (pid $(owned_pid "shard$i"))"
    done
    echo "  memcached  127.0.0.1:$MC_PORT  (pid $(owned_pid memcached))"
    if pid=$(owned_pid devbroker); then
        echo "  devbroker  $KAFKA_BOOTSTRAP  (pid $pid; in-memory Kafka, topics $CDC_TOPIC_PREFIX.<db>.<table>)"
        for ((i = 0; i < NINST; i++)); do
            echo "  cdc-relay-shard$i  calendar_shard$i -> Kafka  (pid $(owned_pid "cdc-relay-shard$i"))"
        done
        echo "  invalidator  Kafka -> memcached, metrics http://127.0.0.1:$INV_METRICS_PORT/metrics  (pid $(owned_pid invalidator))"
    fi
    if pid=$(owned_pid calendard); then
        echo "  calendard  http://127.0.0.1:$CAL_PORT  (pid $pid)"
    fi
    echo "  env        $DIR/stack.env"
}

stack_restart() {
    local name=$1 cmd size port
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad process name: $name"
    [ "$name" != devbroker ] ||
        die "the devbroker keeps data in memory and gets a new port: restart the whole stack"
    [ -s "$RUN_DIR/$name.cmd" ] || die "no recorded command for $name in $RUN_DIR"
    cmd=$(cat "$RUN_DIR/$name.cmd")
    # A 'run' watching the stack leaves NAME alone while this restart (its
    # pid in the marker) is between the stop and the new pid files.
    printf '%s %s\n' "$$" "$(proc_start_time "$$")" >"$RUN_DIR/$name.restarting"
    stop_one "$name"
    size=$(log_size "$name")
    eval "start_bg \"\$name\" $cmd"
    rm -f "$RUN_DIR/$name.restarting"
    case "$name" in
    cdc-relay-*)
        wait_ready "$name" "$CDC_READY_TIMEOUT" log_has_since "$name" "$size" 'msg="streaming"' ||
            die "$name did not start streaming"
        ;;
    shard[0-9]*)
        wait_ready "$name" "$DB_READY_TIMEOUT" shard_ping "${name#shard}" || die "$name did not start"
        ;;
    invalidator)
        port=$(sed -n 's/^invalidator=\([0-9][0-9]*\)$/\1/p' "$DIR/ports")
        wait_ready "$name" "$INV_READY_TIMEOUT" \
            curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/readyz" ||
            die "the invalidator did not join its consumer group"
        ;;
    memcached)
        port=$(sed -n 's/^memcached=\([0-9][0-9]*\)$/\1/p' "$DIR/ports")
        wait_ready "$name" 10 memcached_ping "$port" || die "memcached did not start"
        ;;
    calendard)
        port=$(sed -n 's/^calendard=\([0-9][0-9]*\)$/\1/p' "$DIR/ports")
        wait_ready "$name" "$CALENDARD_READY_TIMEOUT" \
            curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/readyz" ||
            die "calendard did not become ready"
        ;;
    esac
    echo "restarted $name (pid $(owned_pid "$name"))"
}

stack_run() {
    local name ci co to
    RUN_MODE=1
    stack_up
    ci=$(date -u -d '+30 days' +%F)
    co=$(date -u -d '+33 days' +%F)
    to=$(date -u -d '+37 days' +%F)
    cat <<EOF

calendard: http://127.0.0.1:$CAL_PORT
Try:
  curl -X PUT 127.0.0.1:$CAL_PORT/v1/listings/42 \\
       -d '{"default_price":10000,"currency":"USD","min_nights":1,"max_nights":30}'
  curl -X POST 127.0.0.1:$CAL_PORT/v1/listings/42/reservations -H 'Idempotency-Key: demo-$ci' \\
       -d '{"check_in":"$ci","check_out":"$co","guest_id":7}'
  curl '127.0.0.1:$CAL_PORT/v1/listings/42/availability?from=$ci&to=$to'
SQL (app user): mariadb --defaults-extra-file=$SECRETS_DIR/app.cnf -P ${SHARD_PORTS[0]} calendar_shard0
Ctrl-C stops the stack.
EOF
    while :; do
        while IFS= read -r name; do
            # Looked at again after the marker: a restart that just ended
            # wrote the new pid files before it removed its marker.
            if ! owned_pid "$name" >/dev/null && ! restarting "$name" &&
                ! owned_pid "$name" >/dev/null; then
                log "$name exited unexpectedly"
                show_logs "$name"
                stack_down
                exit 1
            fi
        done < <(recorded_names)
        # sleep in the background so the trap runs as soon as a signal comes.
        sleep 2 &
        wait $! || true
    done
}

main() {
    local cmd="" dir="" name=""
    FREE_PORTS=0
    NSHARDS=2
    NSPARE=0
    [ $# -gt 0 ] || {
        usage >&2
        exit 2
    }
    case "$1" in
    -h | --help | help)
        usage
        exit 0
        ;;
    up | down | run) cmd=$1 ;;
    restart)
        cmd=$1
        [ $# -ge 2 ] || die "restart needs a NAME"
        name=$2
        shift
        ;;
    *)
        log "unknown command: $1"
        usage >&2
        exit 2
        ;;
    esac
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        --dir)
            [ $# -ge 2 ] || die "--dir needs a value"
            dir=$2
            shift 2
            ;;
        --dir=*)
            dir=${1#--dir=}
            shift
            ;;
        --free-ports)
            FREE_PORTS=1
            shift
            ;;
        --shards)
            [ $# -ge 2 ] || die "--shards needs a value"
            NSHARDS=$2
            shift 2
            ;;
        --shards=*)
            NSHARDS=${1#--shards=}
            shift
            ;;
        --spare-shards)
            [ $# -ge 2 ] || die "--spare-shards needs a value"
            NSPARE=$2
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $1 (see --help)" ;;
        esac
    done
    if ! [[ $NSHARDS =~ ^[0-9]+$ ]] || [ "$NSHARDS" -lt 1 ] || [ "$NSHARDS" -gt 16 ]; then
        die "--shards must be 1-16"
    fi
    if ! [[ $NSPARE =~ ^[0-9]+$ ]] || [ $((NSHARDS + NSPARE)) -gt 16 ]; then
        die "--spare-shards must be 0-$((16 - NSHARDS))"
    fi
    NINST=$((NSHARDS + NSPARE))
    case "$cmd" in
    down | restart) [ "$FREE_PORTS" = 1 ] && die "--free-ports applies to up/run" ;;
    esac
    set_dir "$dir" "$cmd"

    case "$cmd" in
    up) stack_up ;;
    down)
        stack_down
        echo "stack down in $DIR"
        ;;
    run) stack_run ;;
    restart) stack_restart "$name" ;;
    esac
}

main "$@"
