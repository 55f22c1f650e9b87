#!/bin/bash
# scaleout.sh: two smolgate instances sharing Redis (limits, budgets) and PostgreSQL (the
# ledger), hammered at once, with an instance killed and the database stopped under load.
#
# Starts redis-server and PostgreSQL (Debian's packages, as ledger_postgres.sh does: a
# temporary folder, free loopback ports, password authentication), the fake upstreams
# (tests/fakes/upstream.mjs) and TWO `smolgate serve` with one configuration (Redis limits
# with on_redis_error: closed, so that no request is ever admitted unchecked; a PostgreSQL
# ledger with one shared spool folder), then, with a paced node client (concurrency >= 16,
# requests spread over both instances):
#   (a) 400 requests, 4 keys: two with rpm 40, two with a total budget of $0.05. Across
#       both instances: at most 40 admissions per rpm key (exactly 40 when Redis answered
#       every decision), and the money the ledger records per budget key never over the
#       cap; the ledger holds exactly one record per response, by x-request-id;
#   (b) provider account limits through Redis: a route [capped (rpm 20), backup], 50
#       requests over both instances: the fake sees exactly 20 on the capped target, and
#       every request is answered (the rest by backup);
#   (c) kill -9 of one instance under load, restarted on the same port and spool: after
#       delivery every response that completed has its record, none twice;
#   (d) PostgreSQL stopped under load for 3 s, then started: the same check;
# then SIGTERM: both exit 0, no sanitizer report, no key or password in any log.
# Bounded waits; everything started here is stopped and removed on exit; the last line is
# "scaleout.sh: N passed, N failed".
#
# Environment: SMOLGATE_BIN (default build/smolgate; build-san/smolgate for the sanitizer
# build).
set -u
cd "$(dirname "$0")/../.."
suite=scaleout.sh
tmp=$(mktemp -d /tmp/smolgate-scaleout-XXXXXX)
. tests/e2e/lib.sh
redis_pid= client_pid=
cleanup_more() {
  [ -n "$client_pid" ] && kill -9 "$client_pid" 2>/dev/null
  stop_pid "$redis_pid"
}

command -v node >/dev/null || die "node is not installed"
command -v redis-server >/dev/null || die "redis-server is not installed (tools/install-deps.sh --test)"
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || die "PostgreSQL is not installed (tools/install-deps.sh --test)"
bin_copy

# ---- PostgreSQL ----
pg_setup
psql_q() { PGPASSWORD=$pw "$pgbin/psql" -h 127.0.0.1 -p "$port" -U smolgate -qAtX -d smolgate "$@"; }

# ---- Redis ----
rport=
for _ in 1 2 3 4 5; do
  rport=$(free_port) || continue
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no \
    --logfile "$tmp/redis.log" >/dev/null 2>&1 </dev/null &
  redis_pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$rport) 2>/dev/null && break 2; sleep 0.1; done
  stop_pid "$redis_pid"; redis_pid=
done
[ -n "$redis_pid" ] || die "redis-server did not start"
echo "  PostgreSQL on 127.0.0.1:$port, redis-server on 127.0.0.1:$rport"

# ---- the fakes ----
fake_start
ctl=$(node -e 'console.log(JSON.parse(process.argv[1]).control)' "$ports")

# ---- one configuration, two instances ----
# price $100 per million tokens (100 micro-dollars a token): a request reserves about
# (body bytes / 4 + max_tokens) x 100 and costs about 10 x 100.
cfg=$tmp/smolgate.yaml
cat >"$cfg" <<EOF
# written by tests/e2e/scaleout.sh
listen: 127.0.0.1:0
log_level: info
server: {shutdown_grace_ms: 5000}
x-up: &up {timeouts: {connect_ms: 2000, first_token_ms: 10000, idle_ms: 5000, total_ms: 20000}, retries: {max: 0}}
providers:
  openai: {<<: *up, base_url: "http://127.0.0.1:$oa/v1", api_key: sk-fake-scale-openai}
  backup: {<<: *up, type: openai, base_url: "http://127.0.0.1:$oa/v1", api_key: sk-fake-scale-backup}
  capped: {<<: *up, type: openai, base_url: "http://127.0.0.1:$oa/v1", api_key: sk-fake-scale-capped, limits: {rpm: 20}}
models:
  openai/m-scale: {max_output_tokens: 64, price: {input: 100, output: 100}}
routes:
  - name: scale
    targets: [openai/m-scale]
  - name: capped
    targets: [capped/m-capped-a, backup/m-capped-b]
keys:
  - {id: rpm-a, key: sk-scale-rpm-a-0000000001, limits: {rpm: 40}}
  - {id: rpm-b, key: sk-scale-rpm-b-0000000002, limits: {rpm: 40}}
  - {id: bud-c, key: sk-scale-bud-c-0000000003, budget: {total_usd: 0.05}}
  - {id: bud-d, key: sk-scale-bud-d-0000000004, budget: {total_usd: 0.05}}
  - {id: free, key: sk-scale-free-00000000005}
state: {redis: "redis://127.0.0.1:$rport", on_redis_error: closed, timeout_ms: 2000}
ledger: {postgres: "$pg_url", spool_dir: spool, flush_ms: 200}
EOF
timeout 20 "$bin" serve --config "$cfg" --check >"$tmp/check.out" 2>&1 || { cat "$tmp/check.out"; die "serve --check refused the configuration"; }

start_gw 0 "$cfg"
start_gw 1 "$cfg"
urls="[\"http://127.0.0.1:${gw_ports[0]}\",\"http://127.0.0.1:${gw_ports[1]}\"]"
echo "  instances on ports ${gw_ports[0]} (pid ${gw_pids[0]}) and ${gw_ports[1]} (pid ${gw_pids[1]})"

# ---- the client: N requests, C at a time, spread over the instances; one JSON line each ----
cat >"$tmp/hammer.mjs" <<'EOF'
import { writeFileSync } from 'node:fs';
const [out, json] = process.argv.slice(2);
const c = JSON.parse(json);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const lines = [];
let next = 0;
async function one(i) {
  const k = c.keys[i % c.keys.length];
  const inst = Math.floor(i / c.keys.length) % c.urls.length;
  const stream = !!c.stream && i % 3 === 0;
  const body = { model: c.model, max_tokens: 16, stream, messages: [{ role: 'user', content: `${c.tag} ${i} load` }] };
  const t0 = performance.now();
  try {
    const r = await fetch(`${c.urls[inst]}/v1/chat/completions`, {
      method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(20000),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${k.key}` },
    });
    const text = await r.text();
    let code = null;
    try { code = JSON.parse(text).error?.code ?? null; } catch { /* a stream */ }
    // a streamed answer is complete only with its end marker
    const complete = r.status !== 200 || !stream || text.includes('data: [DONE]');
    lines.push({ i, key: k.id, inst, s: complete ? r.status : -1, id: r.headers.get('x-request-id'), code,
                 provider: r.headers.get('x-smolgate-provider'), ms: performance.now() - t0, t: Date.now() });
  } catch (e) {
    lines.push({ i, key: k.id, inst, s: 0, id: null, err: String(e.cause?.code ?? e.name), t: Date.now() });
  }
}
async function worker() {
  while (next < c.n) {
    const i = next++;
    await one(i);
    if (c.pauseMs) await sleep(c.pauseMs);
  }
}
await Promise.all(Array.from({ length: c.conc }, worker));
writeFileSync(out, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
EOF
# jq-like summaries of a client's output: node q.mjs FILE EXPR (EXPR sees `rows`)
cat >"$tmp/q.mjs" <<'EOF'
import { readFileSync } from 'node:fs';
const rows = readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const v = new Function('rows', `return (${process.argv[3]});`)(rows);
console.log(Array.isArray(v) ? v.join('\n') : v);
EOF
q() { node "$tmp/q.mjs" "$@"; }
hammer() {  # out json
  timeout 120 node "$tmp/hammer.mjs" "$1" "$2" || bad "the client failed or timed out ($1)"
}
keys_json() {  # ids... -> [{"id","key"}]
  local out= id key
  for id in "$@"; do
    key=$(sed -n "s/.*{id: $id, key: \([^,}]*\).*/\1/p" "$cfg")
    out="$out${out:+,}{\"id\":\"$id\",\"key\":\"$key\"}"
  done
  echo "[$out]"
}

# Waits until the ledger holds a record for every completed response in FILE (bounded),
# then checks: none missing, none twice; exact: no record beyond the responses either.
check_ledger() {  # label file exact(0|1) tag
  local label=$1 file=$2 exact=$3 tag=$4 missing= n db dups
  q "$file" 'rows.filter((r) => r.s > 0 && r.id).map((r) => r.id)' | sort >"$tmp/ids.want"
  n=$(wc -l <"$tmp/ids.want")
  [ "$(sort -u "$tmp/ids.want" | wc -l)" = "$n" ] || bad "$label: the responses repeat a request id"
  for _ in $(seq 120); do   # 60 s at most
    psql_q -c "SELECT request_id FROM requests WHERE requested_model IN ('scale', 'capped') AND ts_ms >= $tag" 2>/dev/null | sort >"$tmp/ids.db"
    missing=$(comm -23 "$tmp/ids.want" "$tmp/ids.db" | wc -l)
    [ "$missing" = 0 ] && break
    sleep 0.5
  done
  db=$(wc -l <"$tmp/ids.db")
  dups=$(psql_q -c "SELECT COUNT(*) - COUNT(DISTINCT request_id) FROM requests")
  if [ "$missing" != 0 ]; then bad "$label: $missing of $n completed requests have no ledger record after 60 s"
  elif [ "$dups" != 0 ]; then bad "$label: $dups duplicate records"
  elif [ "$exact" = 1 ] && [ "$db" != "$n" ]; then bad "$label: $db records for $n responses"
  else ok "$label: each of the $n completed requests has exactly one ledger record ($db records in the phase)"; fi
}
now_ms() { date +%s%3N; }

# ---- (a) rpm and budgets across both instances ----
t_a=$(now_ms)
hammer "$tmp/a.jsonl" "{\"urls\":$urls,\"keys\":$(keys_json rpm-a rpm-b bud-c bud-d),\"model\":\"scale\",\"n\":400,\"conc\":32,\"tag\":\"a\",\"stream\":true}"
el=$(( $(now_ms) - t_a ))
echo "  (a) 400 requests in $el ms: $(q "$tmp/a.jsonl" 'Object.entries(rows.reduce((m, r) => (m[r.s] = (m[r.s] || 0) + 1, m), {})).map(([s, n]) => s + ":" + n).join(" ")')"
[ "$el" -lt 55000 ] || bad "(a) took $el ms: more than the rpm window, the exact check below does not hold"
n503=$(q "$tmp/a.jsonl" 'rows.filter((r) => r.s === 503).length')
[ "$n503" = 0 ] || echo "  (a) $n503 requests got 503 (Redis slower than state.timeout_ms)"
for k in rpm-a rpm-b; do
  adm=$(q "$tmp/a.jsonl" "rows.filter((r) => r.key === '$k' && r.s === 200).length")
  lim=$(q "$tmp/a.jsonl" "rows.filter((r) => r.key === '$k' && r.s === 429 && r.code === 'rate_limit_exceeded').length")
  per=$(q "$tmp/a.jsonl" "[0, 1].map((i) => rows.filter((r) => r.key === '$k' && r.s === 200 && r.inst === i).length).join('+')")
  if [ "$adm" -gt 40 ]; then bad "(a) key $k: $adm admitted over both instances, rpm is 40"
  elif [ "$n503" = 0 ] && [ "$adm" != 40 ]; then bad "(a) key $k: $adm admitted, expected exactly 40"
  elif [ "$lim" -lt 1 ]; then bad "(a) key $k: no request was refused for its rpm"
  else ok "(a) key $k: $adm admitted ($per per instance) of 100, rpm 40 across both; $lim refused"; fi
done
for k in bud-c bud-d; do
  adm=$(q "$tmp/a.jsonl" "rows.filter((r) => r.key === '$k' && r.s === 200).length")
  ref=$(q "$tmp/a.jsonl" "rows.filter((r) => r.key === '$k' && r.s === 429 && r.code === 'budget_exceeded').length")
  [ "$adm" -ge 5 ] && [ "$ref" -ge 1 ] && ok "(a) key $k: $adm admitted, $ref refused by the budget" \
    || bad "(a) key $k: $adm admitted, $ref refused by the budget"
done
check_ledger "(a) ledger" "$tmp/a.jsonl" 1 "$t_a"
for k in bud-c bud-d; do
  spent=$(psql_q -c "SELECT COALESCE(SUM(cost_micro), 0) FROM requests WHERE key_id = '$k'")
  n=$(psql_q -c "SELECT COUNT(*) FROM requests WHERE key_id = '$k' AND status = 200")
  adm=$(q "$tmp/a.jsonl" "rows.filter((r) => r.key === '$k' && r.s === 200).length")
  if [ "$n" = "$adm" ] && [ "$spent" -gt 0 ] && [ "$spent" -le 50000 ]; then
    ok "(a) key $k: the ledger's spend \$$(awk "BEGIN{printf \"%.6f\", $spent/1e6}") of $n requests is within its \$0.05 budget"
  else bad "(a) key $k: ledger spend $spent micro-dollars over $n records ($adm admitted), budget 50000"; fi
done
for k in rpm-a rpm-b; do
  n=$(psql_q -c "SELECT COUNT(*) FROM requests WHERE key_id = '$k' AND status = 200")
  adm=$(q "$tmp/a.jsonl" "rows.filter((r) => r.key === '$k' && r.s === 200).length")
  [ "$n" = "$adm" ] && [ "$n" -le 40 ] && ok "(a) key $k: $n successful records in the ledger" || bad "(a) key $k: $n records, $adm admitted"
done

# ---- (b) a provider account's rpm, counted in Redis by both instances ----
hammer "$tmp/b.jsonl" "{\"urls\":$urls,\"keys\":$(keys_json free),\"model\":\"capped\",\"n\":50,\"conc\":16,\"tag\":\"b\"}"
capped=$(curl -s -m 10 "http://127.0.0.1:$ctl/control/log?provider=openai&match=m-capped-a" | node -e 'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>console.log(JSON.parse(s).length))')
served=$(q "$tmp/b.jsonl" 'rows.filter((r) => r.s === 200).length')
bk=$(q "$tmp/b.jsonl" "rows.filter((r) => r.s === 200 && r.provider === 'backup').length")
if [ "$capped" = 20 ] && [ "$served" = 50 ] && [ "$bk" = 30 ]; then
  ok "(b) provider rpm 20 over both instances: the capped target saw exactly 20 requests, backup answered 30"
else bad "(b) the capped target saw $capped requests (rpm 20); $served of 50 answered, $bk by backup"; fi

# ---- (c) kill -9 one instance under load, restart it ----
t_c=$(now_ms)
# about 900 / 16 x (60 ms + latency) >= 3.4 s of load: the kill at 1 s, the restart after 0.5 s
hammer "$tmp/c.jsonl" "{\"urls\":$urls,\"keys\":$(keys_json free),\"model\":\"scale\",\"n\":900,\"conc\":16,\"pauseMs\":60,\"tag\":\"c\",\"stream\":true}" &
client_pid=$!
sleep 1
kill -9 "${gw_pids[1]}"; wait "${gw_pids[1]}" 2>/dev/null
echo "  (c) instance 1 killed (-9) under load"
sleep 0.5
start_gw 1 "$cfg" "${gw_ports[1]}"   # the same port
t_up=$(now_ms)
echo "  (c) instance 1 restarted (pid ${gw_pids[1]})"
wait "$client_pid"; client_pid=
echo "  (c) $(q "$tmp/c.jsonl" 'Object.entries(rows.reduce((m, r) => (m[r.s] = (m[r.s] || 0) + 1, m), {})).map(([s, n]) => s + ":" + n).join(" ")')"
lost=$(q "$tmp/c.jsonl" 'rows.filter((r) => r.s <= 0).length')
after=$(q "$tmp/c.jsonl" "rows.filter((r) => r.inst === 1 && r.s === 200 && r.t > $t_up).length")
[ "$lost" -ge 1 ] && [ "$after" -ge 1 ] && ok "(c) the kill cut $lost requests; the restarted instance answered $after" \
  || bad "(c) the kill should cut some requests and the restarted instance answer some: cut $lost, answered after the restart $after"
check_ledger "(c) kill -9 + restart" "$tmp/c.jsonl" 0 "$t_c"

# ---- (d) PostgreSQL stopped under load, then started ----
t_d=$(now_ms)
hammer "$tmp/d.jsonl" "{\"urls\":$urls,\"keys\":$(keys_json free),\"model\":\"scale\",\"n\":600,\"conc\":16,\"pauseMs\":60,\"tag\":\"d\",\"stream\":true}" &
client_pid=$!
sleep 1
pg_stop fast || bad "(d) stopping PostgreSQL"
echo "  (d) PostgreSQL stopped under load"
sleep 3
pg_start || die "(d) PostgreSQL did not start again"
echo "  (d) PostgreSQL started again"
wait "$client_pid"; client_pid=
echo "  (d) $(q "$tmp/d.jsonl" 'Object.entries(rows.reduce((m, r) => (m[r.s] = (m[r.s] || 0) + 1, m), {})).map(([s, n]) => s + ":" + n).join(" ")')"
bad_d=$(q "$tmp/d.jsonl" 'rows.filter((r) => r.s !== 200).length')
[ "$bad_d" = 0 ] && ok "(d) every request was answered 200 while the database was down" || bad "(d) $bad_d requests failed during the outage"
check_ledger "(d) database outage" "$tmp/d.jsonl" 1 "$t_d"

# ---- the end: clean exits, no crash, no secret in any log ----
stop_gws
left=$(ls "$tmp/spool" 2>/dev/null | grep -c -E '\.(seg|spool)$')
[ "$left" = 0 ] && ok "the shared spool folder is empty after both stopped" || bad "spool files left: $(ls "$tmp/spool")"
no_crash_in_logs
if grep -q -- "$pw\|sk-scale-\|sk-fake-scale-" "$tmp"/gw*.log; then bad "a password or key appears in a gateway log"
else ok "no password or key in the gateway logs"; fi
finish
