#!/bin/bash
# soak.sh: a few minutes of mixed valid and hostile traffic against one smolgate serve
# (bench/soak.mjs), printing requests, RSS and open fds at intervals. A benchmark, not a
# test: it prints figures, and the figures to read are whether RSS and fds stay flat.
#
#   bench/soak.sh                     # 180 s, 16 workers, build/smolgate
#   SOAK_SECONDS=600 SOAK_CONCURRENCY=32 bench/soak.sh
#   SMOLGATE_BIN=build-san/smolgate bench/soak.sh   # under the sanitizers (slower)
#
# Starts tests/fakes/upstream.mjs (OpenAI-compatible fake with fault injection) and a
# gateway with one route over two targets on it, an 8 MiB body limit, 4 MiB / 1 MiB
# upstream response bounds, short upstream timeouts and a SQLite ledger; everything is
# stopped on exit. The gateway log is checked for provider keys and sanitizer reports.
set -u
cd "$(dirname "$0")/.."
bin=${SMOLGATE_BIN:-build/smolgate}
tmp=$(mktemp -d /tmp/smolgate-soak-XXXXXX)
fake_pid= gw_pid=
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
  sleep 0.5
  [ -n "$gw_pid" ] && kill -9 "$gw_pid" 2>/dev/null
  [ -n "$fake_pid" ] && kill -9 "$fake_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -x "$bin" ] || { echo "soak.sh: $bin is missing: make"; exit 1; }
[ -d tests/node/node_modules ] || (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

node tests/fakes/upstream.mjs --no-log >"$tmp/ports" 2>"$tmp/fake.err" </dev/null &
fake_pid=$!
ports=
for _ in $(seq 100); do
  ports=$(head -n 1 "$tmp/ports" 2>/dev/null)
  [[ $ports == *'}' ]] && break
  ports=
  sleep 0.1
done
[ -n "$ports" ] || { echo "soak.sh: the fake upstream did not start"; cat "$tmp/fake.err"; exit 1; }
oa=$(node -e 'console.log(JSON.parse(process.argv[1]).openai)' "$ports")

max_body=$((8 * 1024 * 1024))
cat >"$tmp/smolgate.yaml" <<EOF
listen: 127.0.0.1:0
log_level: info
server: {max_body_bytes: $max_body, header_timeout_ms: 3000, body_timeout_ms: 10000}
upstream: {max_response_bytes: 4194304, max_sse_line_bytes: 1048576}
x-timeouts: &t {connect_ms: 1000, first_token_ms: 1000, idle_ms: 1000, total_ms: 10000}
providers:
  openai: {base_url: "http://127.0.0.1:$oa/v1", api_key: sk-soak-upstream-a, timeouts: *t, retries: {max: 0}}
  backup: {type: openai, base_url: "http://127.0.0.1:$oa/v1", api_key: sk-soak-upstream-b, timeouts: *t, retries: {max: 1, base_ms: 10, max_ms: 50}}
routes:
  - name: chat
    targets: [openai/gpt-4o-mini, backup/gpt-4o-mini]
keys:
  - id: soak
    key: sk-smolgate-soak
circuit_breaker: {failures: 1000000, window_ms: 1000, cooldown_ms: 100, max_cooldown_ms: 200}
ledger: {sqlite: $tmp/ledger.db, spool_dir: $tmp/spool}
EOF

"$bin" serve --config "$tmp/smolgate.yaml" >"$tmp/gateway.log" 2>&1 </dev/null &
gw_pid=$!
port=
for _ in $(seq 150); do
  port=$(sed -n 's/.*smolgate listening on .* (port \([0-9]*\)).*/\1/p' "$tmp/gateway.log" | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$gw_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { echo "soak.sh: the gateway did not start:"; cat "$tmp/gateway.log"; exit 1; }

echo "soak.sh: $bin at 127.0.0.1:$port, fake upstream $ports, $(nproc) cores"
SMOLGATE_URL=http://127.0.0.1:$port SMOLGATE_API_KEY=sk-smolgate-soak SMOLGATE_PID=$gw_pid FAKE_PORTS=$ports \
  SOAK_MAX_BODY=$max_body node bench/soak.mjs
rc=$?
if kill -0 "$gw_pid" 2>/dev/null; then echo "soak.sh: the gateway is still running"; else echo "soak.sh: the gateway died"; rc=1; fi
records=$(sqlite3 "$tmp/ledger.db" 'select count(*) from requests' 2>/dev/null || echo '?')
echo "soak.sh: ledger records: $records"
if grep -q 'sk-soak-upstream' "$tmp/gateway.log"; then echo "soak.sh: a provider key is in the gateway log"; rc=1
else echo "soak.sh: no provider key in the gateway log"; fi
if grep -Eq 'AddressSanitizer|runtime error:|LeakSanitizer' "$tmp/gateway.log"; then
  echo "soak.sh: sanitizer report in the gateway log:"; grep -E -m5 -A5 'AddressSanitizer|runtime error:' "$tmp/gateway.log"; rc=1
fi
exit $rc
