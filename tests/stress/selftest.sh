#!/usr/bin/env bash
# The stress verifier's self-test: a short calendar-stress run per fault,
# each corrupting its own rows in SQL after the load (--inject), must end
# with exit 1 and the counter of its own detector above zero (another
# detector tripping over the same rows does not count); a verifier that
# lets one pass fails this script. Usage: tests/stress/selftest.sh STACK_ENV
set -uo pipefail
env_file=${1:?usage: selftest.sh STACK_ENV}
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
failed=0
for case in double_booking:double_bookings lost_ack:lost_acknowledged \
    delete_ack:lost_acknowledged phantom:phantom_bookings night_mismatch:night_mismatches \
    shift_dates:lost_acknowledged lost_refusal:lost_acknowledged; do
    fault=${case%%:*} counter=${case#*:}
    out=$(bin/calendar-stress --stack-env "$env_file" --clients 4 --listings 20 --duration 2 \
        --inject "$fault" 2>&1)
    rc=$?
    n=$(grep -o "\"$counter\":[0-9]*" <<<"$out" | tail -1 | cut -d: -f2)
    if [ "$rc" -eq 1 ] && [ "${n:-0}" -gt 0 ]; then
        echo "selftest: $fault caught by $counter=$n ($(grep -m1 '^verify: [a-z_]*:' <<<"$out" | cut -c1-100))"
    else
        echo "selftest: $fault NOT caught by $counter: calendar-stress exit $rc, $counter=${n:-?}" >&2
        tail -5 <<<"$out" >&2
        failed=1
    fi
done
exit "$failed"
