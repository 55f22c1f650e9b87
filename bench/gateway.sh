#!/bin/bash
# Gateway overhead with the shared harness (../shared/bench/gateway): wrk -> target ->
# nginx fake upstream, for the upstream directly, a bare nginx proxy hop, and smolgate,
# non-streamed and streamed, at concurrency 1, 16 and 64. wrk and the upstream run on
# core 0, the proxy under test on core 1. Prints the harness's lines (figures, no verdict).
# Needs nginx-light and wrk (make deps-test installs them). BENCH_SECS sets seconds a row;
# SMOLGATE_BIN another binary (A/B against an older build); BENCH_LOG the gateway's log
# level (default warn: no request log lines; info writes one per request, as serve does
# by default). The gateways use the default ledger (smolgate.db, smolgate-spool/ here).
# BENCH_TRACING=1: smolgate with request traces on (OTEL_EXPORTER_OTLP_ENDPOINT to an nginx
# OTLP sink on core 0 that answers 200) is measured too, in rows "smolgate+otlp"
# alternating with plain "smolgate" rows, BENCH_ROUNDS times (default 2); the exporter
# thread shares core 1 with the gateway, as it would in production. Last, each gateway's
# CPU time per request served (from /proc; the traced ones' include their exporter).
set -u
cd "$(dirname "$0")/.."
harness=$(cd "${SMOLGATE_SHARED:-../shared}/bench/gateway" && pwd)
secs=${BENCH_SECS:-6}
bin=${SMOLGATE_BIN:-$PWD/build/smolgate}
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  echo "gateway bench: needs wrk and nginx (make deps-test)"; exit 0
fi
mkdir -p /tmp/gwbench/body
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -f /tmp/gwbench/nginx-proxy.pid ] && kill "$(cat /tmp/gwbench/nginx-proxy.pid)" 2>/dev/null
  [ -f /tmp/gwbench/nginx.pid ] && kill "$(cat /tmp/gwbench/nginx.pid)" 2>/dev/null
  [ -f /tmp/gwbench/nginx-otlp.pid ] && kill "$(cat /tmp/gwbench/nginx-otlp.pid)" 2>/dev/null
}
trap cleanup EXIT
taskset -c 0 nginx -c "$harness/nginx.conf" 2>/dev/null &
taskset -c 1 nginx -c "$harness/nginx-proxy.conf" 2>/dev/null &
sleep 0.5

gateway() {  # port upstream_port [otlp endpoint]
  OPENAI_API_KEY=sk-bench OPENAI_BASE_URL=http://127.0.0.1:$2/v1 SMOLGATE_LOG=${BENCH_LOG:-warn} \
    OTEL_EXPORTER_OTLP_ENDPOINT=${3:-} taskset -c 1 "$bin" serve --listen 127.0.0.1:$1 >/tmp/gwbench/smolgate-$1.log 2>&1 &
  pids+=($!)
}
gateway 18100 18080
gateway 18101 18081
if [ "${BENCH_TRACING:-0}" = 1 ]; then
  cat >/tmp/gwbench/nginx-otlp.conf <<'CONF'
worker_processes 1;
daemon off;
pid /tmp/gwbench/nginx-otlp.pid;
error_log /tmp/gwbench/error-otlp.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path /tmp/gwbench/body;
    client_max_body_size 64m;
    server {
        listen 127.0.0.1:18110;
        location = /v1/traces { default_type application/json; return 200 '{}'; }
    }
}
CONF
  taskset -c 0 nginx -c /tmp/gwbench/nginx-otlp.conf 2>/dev/null &
  gateway 18102 18080 http://127.0.0.1:18110
  gateway 18103 18081 http://127.0.0.1:18110
fi
sleep 0.5

if [ "${BENCH_TRACING:-0}" = 1 ]; then
  for round in $(seq "${BENCH_ROUNDS:-2}"); do
    for stream in 0 1; do
      "$harness/run.sh" smolgate "http://127.0.0.1:$((18100 + stream))/v1/chat/completions" $stream "" "$secs"
      "$harness/run.sh" smolgate+otlp "http://127.0.0.1:$((18102 + stream))/v1/chat/completions" $stream "" "$secs"
    done
  done
  for p in 18102 18103; do   # the traced gateways' exporter counters: were spans delivered or dropped?
    curl -s "http://127.0.0.1:$p/metrics" | grep -E '^smolgate_otlp_(spans_exported|dropped_queue_full|spans_dropped_failed)' | sed "s/^/port $p: /"
  done
  # CPU per request of each gateway process (its loop and, traced, its exporter thread):
  # less sensitive than requests/s to what else runs on a shared machine
  tck=$(getconf CLK_TCK)
  i=0
  for p in 18100 18101 18102 18103; do
    pid=${pids[$i]}; i=$((i + 1))
    n=$(curl -s "http://127.0.0.1:$p/metrics" | awk '/^smolgate_requests_total/{s += $2} END {print s + 0}')
    awk -v n="$n" -v t="$tck" -v p="$p" '{cpu = ($14 + $15) / t; printf "port %s (%s): %.1f s CPU for %d requests: %.1f us per request\n", p, (p >= 18102 ? "traced" : "plain"), cpu, n, n ? cpu * 1e6 / n : 0}' "/proc/$pid/stat"
  done
  exit 0
fi

for stream in 0 1; do
  up=$((18080 + stream)); px=$((18090 + stream)); sg=$((18100 + stream))
  "$harness/run.sh" direct "http://127.0.0.1:$up/v1/chat/completions" $stream "" "$secs"
  "$harness/run.sh" nginx "http://127.0.0.1:$px/v1/chat/completions" $stream "" "$secs"
  "$harness/run.sh" smolgate "http://127.0.0.1:$sg/v1/chat/completions" $stream "" "$secs"
done
