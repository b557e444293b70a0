#!/usr/bin/env bash
# Every program that loads a database config refuses, when it loads it, a
# tls_ca it cannot read, naming the file's line, the key and the path: it
# would otherwise start and fail every connection to the database. The
# daemons refuse it with --check-config too; a readable one passes. So are
# a password file others can read and a read timeout shorter than the lock
# wait; and calendar-admin's arguments its command does not take.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
missing=$tmp/no-such-ca.pem
fail=0

# refused NAME SECTION PROGRAM ARGS...: PROGRAM ARGS (CONFIG in ARGS stands
# for the config file) with a config whose [SECTION] names the missing CA
# must exit with status 2 and say which key and file, before it connects
# anywhere.
refused() {
    local name=$1 section=$2 conf=$tmp/$1.ini out=$tmp/$1.out rc=0 args=()
    shift 2
    printf '[%s]\ntls = true\ntls_ca = %s\n' "$section" "$missing" >"$conf"
    for a in "$@"; do [ "$a" = CONFIG ] && args+=("$conf") || args+=("$a"); done
    timeout 20 "${args[@]}" >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 2 ] || ! grep -qF "$conf:3: [$section] tls_ca: cannot read $missing" "$out"; then
        echo "FAIL $name: exit $rc, want 2 naming [$section] tls_ca and $missing: $(cat "$out")"
        fail=1
    else
        echo "ok   $name refuses an unreadable [$section] tls_ca"
    fi
}

# refused_conf NAME BODY WANT PROGRAM ARGS...: PROGRAM ARGS (CONFIG stands
# for a config file holding BODY) must exit with status 2 and print WANT
# (CONFIG in WANT stands for the file's path).
refused_conf() {
    local name=$1 body=$2 want=$3 conf=$tmp/$1.ini out=$tmp/$1.out rc=0 args=()
    shift 3
    printf '%b' "$body" >"$conf"
    want=${want//CONFIG/$conf}
    for a in "$@"; do [ "$a" = CONFIG ] && args+=("$conf") || args+=("$a"); done
    timeout 20 "${args[@]}" >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 2 ] || ! grep -qF -- "$want" "$out"; then
        echo "FAIL $name: exit $rc, want 2 and '$want': $(cat "$out")"
        fail=1
    else
        echo "ok   $name"
    fi
}

# accepted NAME SECTION PROGRAM: PROGRAM --check-config passes the same
# config with a CA file that exists.
accepted() {
    local name=$1 section=$2 prog=$3 conf=$tmp/$1-ok.ini
    : >"$tmp/ca.pem"
    printf '[%s]\ntls = true\ntls_ca = %s\n' "$section" "$tmp/ca.pem" >"$conf"
    if ! "$prog" --config "$conf" --check-config >"$tmp/$name-ok.out" 2>&1; then
        echo "FAIL $name refuses a readable tls_ca: $(cat "$tmp/$name-ok.out")"
        fail=1
    else
        echo "ok   $name accepts a readable [$section] tls_ca"
    fi
}

refused calendard-catalog catalog bin/calendard --config CONFIG --check-config
refused calendard-shards shards bin/calendard --config CONFIG --check-config
refused cdc-relay source bin/calendar-cdc-relay --config CONFIG --check-config
refused admin shards bin/calendar-admin --config CONFIG migrate
refused rebalance catalog bin/calendar-rebalance --config CONFIG status
accepted calendard shards bin/calendard
accepted cdc-relay source bin/calendar-cdc-relay

# A password file others can read is refused at load, naming the file's
# line and the key, by every program with a database config.
open_pw=$tmp/open-password
echo secret >"$open_pw"
chmod 644 "$open_pw"
pw_want="CONFIG:3: [SECTION] password_file: $open_pw must have no group or other permission bits"
for c in "calendard shards bin/calendard --config CONFIG --check-config" \
    "calendard catalog bin/calendard --config CONFIG --check-config" \
    "cdc-relay source bin/calendar-cdc-relay --config CONFIG --check-config" \
    "admin shards bin/calendar-admin --config CONFIG migrate" \
    "rebalance catalog bin/calendar-rebalance --config CONFIG status"; do
    read -r name section cmd <<<"$c"
    # shellcheck disable=SC2086 # cmd is words
    refused_conf "$name-open-password-$section" "[$section]\nuser = u\npassword_file = $open_pw\n" \
        "${pw_want/SECTION/$section}" $cmd
done

# A read timeout shorter than the lock wait is refused naming the file.
slow="[catalog]\nlock_wait_timeout_s = 9\nread_timeout_ms = 5000\n"
to_want="CONFIG: [catalog] read_timeout_ms (5 s) must be at least lock_wait_timeout_s (9 s)"
refused_conf calendard-timeouts "$slow" "$to_want" bin/calendard --config CONFIG --check-config
refused_conf admin-timeouts "$slow" "$to_want" bin/calendar-admin --config CONFIG migrate
refused_conf rebalance-timeouts "$slow" "$to_want" bin/calendar-rebalance --config CONFIG status

# calendar-admin refuses what its command does not take, before it loads
# anything (migrate --dry-run would otherwise migrate).
refused_conf admin-extra-argument "" "migrate takes no arguments, got '--dry-run'" \
    bin/calendar-admin --config CONFIG migrate --dry-run
refused_conf admin-unknown-command "" "unknown command 'frob'" bin/calendar-admin --config CONFIG frob
# Nor a password on the command line (bootstrap's --shard).
refused_conf admin-shard-password "" "--shard: want HOST:PORT/DB without a user or password" \
    bin/calendar-admin --config CONFIG bootstrap --vbuckets 8 --shard u:pw@127.0.0.1:1/db
# Nor a second shard without its own --shard: it would be dropped, and a
# cluster of fewer shards bootstrapped.
refused_conf admin-shard-without-option "" "unexpected argument '127.0.0.1:2/s1'" \
    bin/calendar-admin --config CONFIG bootstrap --vbuckets 8 --shard 127.0.0.1:1/s0 127.0.0.1:2/s1
exit "$fail"
