#!/bin/bash
# CPU time the gateway spends per request, per thread, with its default ledger (SQLite) and
# request log: wrk (core 0) -> smolgate (core 1) -> the shared harness's nginx upstream
# (core 0), non-streamed and streamed at concurrency 16. CPU time, unlike requests/s,
# holds still on a machine shared with other work, so this is the A/B figure for the
# gateway's own cost. Prints, per row: requests served, then microseconds of CPU per
# request for the event loop thread, for the other threads (the ledger writer), and in
# all (user + system, from /proc/PID/task/*/stat, sampled after the ledger has delivered
# what the row appended). SMOLGATE_BIN another binary (A/B); BENCH_SECS seconds a row
# (default 5); BENCH_LOG the log level (default info: one request line per request).
set -u
cd "$(dirname "$0")/.."
harness=$(cd "${SMOLGATE_SHARED:-../shared}/bench/gateway" && pwd)
secs=${BENCH_SECS:-5}
bin=${SMOLGATE_BIN:-$PWD/build/smolgate}
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  echo "gateway cpu bench: needs wrk and nginx (make deps-test)"; exit 0
fi
work=$(mktemp -d /tmp/smolgate-gwcpu-XXXXXX)
mkdir -p /tmp/gwbench/body
gw=
cleanup() {
  [ -n "$gw" ] && kill "$gw" 2>/dev/null && wait "$gw" 2>/dev/null
  [ -f /tmp/gwbench/nginx.pid ] && kill "$(cat /tmp/gwbench/nginx.pid)" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
curl -s -o /dev/null http://127.0.0.1:18080/ || { taskset -c 0 nginx -c "$harness/nginx.conf" 2>/dev/null & sleep 0.5; }
tck=$(getconf CLK_TCK)

ticks() {  # pid: "loop_ticks other_ticks" (utime + stime)
  local loop=0 other=0 t v
  for t in /proc/$1/task/*; do
    v=$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null) || continue
    if [ "${t##*/}" = "$1" ]; then loop=$((loop + v)); else other=$((other + v)); fi
  done
  echo "$loop $other"
}

for stream in 0 1; do
  up=$((18080 + stream))
  (cd "$work" && rm -rf smolgate.db* smolgate-spool && \
   exec env OPENAI_API_KEY=sk-bench OPENAI_BASE_URL=http://127.0.0.1:$up/v1 SMOLGATE_LOG=${BENCH_LOG:-info} \
     taskset -c 1 "$bin" serve --listen 127.0.0.1:18110 >"$work/smolgate.log" 2>&1) &
  gw=$!
  for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18110/healthz && break; sleep 0.1; done
  WRK_STREAM=$stream taskset -c 0 wrk -t1 -c16 -d1s -s "$harness/post.lua" http://127.0.0.1:18110/v1/chat/completions >/dev/null 2>&1
  sleep 2   # the warm-up's records delivered
  read -r l0 o0 < <(ticks $gw)
  out=$(WRK_STREAM=$stream taskset -c 0 wrk -t1 -c16 -d${secs}s -s "$harness/post.lua" http://127.0.0.1:18110/v1/chat/completions 2>&1)
  sleep 2   # the row's records delivered (flush_ms 1000)
  read -r l1 o1 < <(ticks $gw)
  n=$(echo "$out" | awk '/requests in/{print $1}')
  awk -v n="$n" -v l=$((l1 - l0)) -v o=$((o1 - o0)) -v tck="$tck" -v s=$stream -v b="$(basename "$bin")" 'BEGIN {
    printf "%-14s stream=%s c=16 requests=%-7d CPU per request: loop %.1f us, other threads %.1f us, all %.1f us\n",
      b, s, n, l * 1e6 / tck / n, o * 1e6 / tck / n, (l + o) * 1e6 / tck / n }'
  kill "$gw"; wait "$gw" 2>/dev/null; gw=
done
