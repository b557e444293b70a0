#!/usr/bin/env bash
# Installs the Debian packages the project needs to build, test and run the
# local stack, and only those that are missing (`make deps` calls this).
set -euo pipefail

PACKAGES=(
    mariadb-server mariadb-client libmariadb-dev libmariadb-dev-compat
    libmemcached-dev memcached librdkafka-dev check libsubunit-dev
    libmicrohttpd-dev libjansson-dev libinih-dev libcurl4-openssl-dev zlib1g-dev
    pkg-config gcc make kcat gnuplot-nox curl
    clang libclang-rt-14-dev libfuzzer-14-dev clang-format
)

usage() {
    cat <<EOF
Usage: ${0##*/} [--help]

Checks each package below with 'dpkg -s'. When any is missing, runs
'apt-get update' once and 'apt-get install -y --no-install-recommends' for
the missing ones (through sudo when not root), each waiting up to 10 minutes
for apt's lock. Prints one line when everything is already installed.

Packages: ${PACKAGES[*]}
EOF
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
"") ;;
*)
    usage >&2
    exit 2
    ;;
esac

if ! command -v dpkg >/dev/null 2>&1; then
    echo "deps: dpkg not found (not Debian?); install the equivalents of:" \
        "${PACKAGES[*]}" >&2
    exit 0
fi

# 'dpkg -s' also succeeds for removed packages that left config files behind,
# so look at the status line, not only at the exit code.
installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all present"
    exit 0
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "deps: not root and sudo not found; install as root:" \
            "${missing[*]}" >&2
        exit 1
    fi
    # sudo resets the environment; pass the frontend through env(1).
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
fi
# A fresh machine may be running its daily apt jobs: wait for their lock
# (up to 10 minutes) instead of failing at once.
lock_wait=(-o DPkg::Lock::Timeout=600)
"${as_root[@]}" apt-get "${lock_wait[@]}" update
"${as_root[@]}" apt-get "${lock_wait[@]}" install -y --no-install-recommends "${missing[@]}"
