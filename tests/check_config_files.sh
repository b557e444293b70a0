#!/usr/bin/env bash
# Every program that loads a database config refuses, when it loads it, a
# tls_ca it cannot read, naming the file's line, the key and the path: it
# would otherwise start and fail every connection to the database. The
# daemons refuse it with --check-config too; a readable one passes.
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
exit "$fail"
