#!/usr/bin/env bash
# The example configs in configs/ are what the programs print with
# --sample-config today (regenerated, never edited by hand), and the daemons'
# ones pass --check-config as they stand: a newcomer can start from a copy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fail=0
check() { # EXAMPLE PROGRAM CHECK(yes|no) SAMPLE-ARGS...
    local example=$1 prog=$2 validate=$3 bad=0 sample
    shift 3
    if ! sample=$("$prog" "$@"); then
        echo "FAIL '$prog $*' failed"
        bad=1
    elif ! diff -u "$example" - <<<"$sample" >/dev/null; then
        echo "FAIL $example differs from '$prog $*' (regenerate it)"
        bad=1
    fi
    if [ "$validate" = yes ] && ! "$prog" --config "$example" --check-config >/dev/null; then
        echo "FAIL $example does not pass '$prog --check-config'"
        bad=1
    fi
    [ "$bad" -eq 0 ] && echo "ok   $example"
    [ "$bad" -eq 0 ] || fail=1
    return 0
}
check configs/calendard.example.ini bin/calendard yes --sample-config
check configs/cdc-relay.example.ini bin/calendar-cdc-relay yes --sample-config
check configs/cdc-invalidator.example.ini bin/calendar-cdc-invalidator yes --sample-config
check configs/admin.example.ini bin/calendar-admin no sample-config
exit "$fail"
