#!/usr/bin/env bash
# Make sure the database servers the tests run privately, and the browser the console's
# end-to-end test drives (Debian's chromium, through Playwright), are installed.
#
# Idempotent and fast when everything is present: it only calls apt-get (after one
# `apt-get update`) when `redis-server`, PostgreSQL's `initdb` or `chromium` is missing. It never starts
# a system service: the test fixtures (tests/servers.py) start their own servers on free
# loopback ports in temporary directories.
set -euo pipefail

have_redis() { command -v redis-server >/dev/null 2>&1; }
have_initdb() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_chromium() { [ -x /usr/bin/chromium ]; }

missing=()
have_redis || missing+=(redis-server)
have_initdb || missing+=(postgresql)
have_chromium || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "services.sh: installing ${missing[*]}" >&2

# Packages' maintainer scripts would start the system-wide servers; forbid that for
# the duration of the install (unless a policy is already in place, as in containers).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    added_policy=1
fi
cleanup() { [ "$added_policy" -eq 1 ] && $SUDO rm -f "$policy"; return 0; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

have_redis || { echo "services.sh: redis-server still missing after install" >&2; exit 1; }
have_initdb || { echo "services.sh: initdb still missing after install" >&2; exit 1; }
have_chromium || { echo "services.sh: chromium still missing after install" >&2; exit 1; }
