#!/usr/bin/env bash
# The stress verifier's self-test: a short calendar-stress run per fault,
# each corrupting its own rows in SQL after the load (--inject), must end
# with exit 1 (an invariant broken); a verifier that lets one pass fails
# this script. Usage: tests/stress/selftest.sh STACK_ENV
set -uo pipefail
env_file=${1:?usage: selftest.sh STACK_ENV}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
failed=0
for fault in double_booking lost_ack phantom night_mismatch shift_dates; do
    out=$(bin/calendar-stress --stack-env "$env_file" --clients 4 --listings 20 --duration 2 \
        --inject "$fault" 2>&1)
    rc=$?
    if [ "$rc" -eq 1 ]; then
        echo "selftest: $fault caught ($(grep -m1 '^verify: [a-z_]*:' <<<"$out" | cut -c1-120))"
    else
        echo "selftest: $fault NOT caught: calendar-stress exit $rc" >&2
        tail -5 <<<"$out" >&2
        failed=1
    fi
done
exit "$failed"
