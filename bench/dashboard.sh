#!/bin/bash
# dashboard.sh: the dashboard's HTTP endpoints on a ledger of a million records. Fills the
# ledger with build/bench/bench_dashboard (BENCH_DASH_N records, default 1,000,000; it
# prints the query timings too), starts `smolgate serve` on it, waits for the worker's
# rollup to catch up, and times each endpoint with curl: the median of 5, in ms (the
# whole exchange over loopback: HTTP, the worker hop, the query, JSON).
set -u
cd "$(dirname "$0")/.."
bin=build/smolgate
dir=$(mktemp -d /tmp/smolgate-bench-dash-XXXXXX)
gw=
trap '[ -n "$gw" ] && kill "$gw" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
BENCH_DASH_DB=$dir/ledger.db build/bench/bench_dashboard || exit 1
cat >"$dir/smolgate.yaml" <<EOC
listen: 127.0.0.1:0
keys:
  - id: bench
    key: sk-bench-dashboard-admin
    role: admin
ledger: {sqlite: $dir/ledger.db, spool_dir: $dir/spool}
EOC
"$bin" serve --config "$dir/smolgate.yaml" >"$dir/log" 2>&1 &
gw=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*smolgate listening on .* (port \([0-9]*\)).*/\1/p' "$dir/log" | head -n 1)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$dir/log"; exit 1; }
url=http://127.0.0.1:$port
for _ in $(seq 100); do   # the rollup caught up: nothing past the mark
  left=$(sqlite3 "$dir/ledger.db" "SELECT (SELECT MAX(rowid) FROM requests) - high_water FROM rollup_state" 2>/dev/null)
  [ "$left" = 0 ] && break
  sleep 0.2
done
echo "== dashboard endpoints over HTTP ($url; records past the rollup's mark: ${left:-?})"
from=$(( $(date +%s) - 30 * 86400 ))
id=$(sqlite3 "$dir/ledger.db" "SELECT request_id FROM requests ORDER BY ts_ms DESC LIMIT 1")
for p in "/admin/stats" "/admin/spend?by=key&bucket=day&from=$from" "/admin/spend?by=model&bucket=hour&from=$((from + 23 * 86400))" \
         "/admin/spend.csv?by=key&bucket=day&from=$from" "/admin/spend?by=key,route&bucket=day&from=$from" \
         "/admin/requests?limit=50" "/admin/requests?key=team-07&status=error&limit=50" "/admin/requests?q=haiku&limit=50" \
         "/admin/requests?q=$id" "/admin/requests/$id"; do
  ts=()
  for _ in 1 2 3 4 5; do
    ts+=("$(curl -s -o /dev/null -w '%{time_total}' -H 'authorization: Bearer sk-bench-dashboard-admin' "$url$p")")
  done
  med=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n 3p)
  printf '  %-70s %8.2f ms median\n' "$p" "$(echo "$med * 1000" | bc -l)"
done
