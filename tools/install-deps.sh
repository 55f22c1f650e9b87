#!/bin/sh
# Installs the Debian packages smolgate builds and tests with (a no-op when present).
# Build: a C11 compiler, make, pkg-config and the -dev packages of the libraries below.
# Tests: redis-server and postgresql (started by the tests themselves on loopback ports),
# tmux (drives `smolgate chat` in a terminal), jq and the sqlite3 shell (read answers and
# the ledger in e2e scripts), nodejs/npm for the official-SDK client tests, nginx-light
# and wrk for the benchmarks, chromium (the dashboard's browser test drives it headless).
set -e
pkgs="build-essential pkg-config libjansson-dev libpcre2-dev libcurl4-openssl-dev \
libsqlite3-dev libpq-dev libhiredis-dev libyaml-dev libssl-dev libedit-dev"
[ "${1:-}" = "--test" ] && pkgs="$pkgs redis-server postgresql nginx-light wrk python3 curl clang tmux jq sqlite3 chromium"
missing=
# Node.js 18+ with npm installs the official SDK clients (tests/node); it may come from
# elsewhere than Debian (then it is used as it is). The clients themselves need Node >= 22:
# below that, tests/node/node.sh runs them with the Node binary pinned in tests/node.
if [ "${1:-}" = "--test" ] && ! { command -v node >/dev/null && command -v npm >/dev/null; }; then
  pkgs="$pkgs nodejs npm"
fi
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
