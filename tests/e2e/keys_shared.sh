#!/bin/bash
# keys_shared.sh: gateway keys made at run time (/admin/keys) and shared by two smolgate
# instances through the ledger's database: first one SQLite file, then PostgreSQL
# (Debian's package, started by tests/e2e/lib.sh).
#
# For each engine, two `smolgate serve` with one configuration (file keys: an admin and a
# user key) and the fake upstream (tests/fakes/upstream.mjs); a node client (fetch) checks:
#   - POST /admin/keys on A returns the secret once (never again in GET or the list), and
#     the key is served by B within 1 s; the database row holds only its SHA-256;
#   - PATCH rpm 2 on B: the third request in a minute on A gets 429;
#   - routes: a key limited to one route cannot use another;
#   - DELETE on B: 401 on A within 1 s; GET shows revoked_at; ids are never reused (409);
#   - a file key's id: 409 on create / PATCH / DELETE; GET shows it as source "config";
#   - no key 401, a user key 403, hostile bodies (not JSON, wrong types, unknown fields,
#     a huge id, an unknown route, an id in a PATCH) 400 in OpenAI's error shape;
#   - a budget alert: a key with total_usd and alert_percent 10 crosses it; the webhook (a
#     node receiver that fails the first POST) gets the alert again after the retry, with
#     key id, spend, budget and threshold and no secret; the log has the alert line.
# PostgreSQL only: the database stopped: a run-time key still works (the last set read),
# /admin/keys answers 503, the outage is logged once. Then SIGTERM: exit 0, no sanitizer
# report, no key, secret, token or password in any log.
# The last line is "keys_shared.sh: N passed, N failed".
#
# Environment: SMOLGATE_BIN (default build/smolgate; build-san/smolgate for the sanitizer
# build).
set -u
cd "$(dirname "$0")/../.."
suite=keys_shared.sh
tmp=$(mktemp -d /tmp/smolgate-keys-XXXXXX)
. tests/e2e/lib.sh
hook_pid=
cleanup_more() { stop_pid "$hook_pid"; }

command -v node >/dev/null || die "node is not installed"
command -v curl >/dev/null || die "curl is not installed"
command -v sqlite3 >/dev/null || die "sqlite3 is not installed"
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || die "PostgreSQL is not installed (tools/install-deps.sh --test)"
bin_copy

fake_start

# ---- the webhook receiver: fails the first POST (the gateway retries), keeps each body ----
cat >"$tmp/hook.mjs" <<'HOOK'
import { createServer } from 'node:http';
import { appendFileSync } from 'node:fs';
const out = process.argv[2];
let n = 0;
const srv = createServer((req, res) => {
  let b = '';
  req.on('data', (c) => { b += c; });
  req.on('end', () => {
    n++;
    appendFileSync(out, JSON.stringify({ n, method: req.method, type: req.headers['content-type'], body: b }) + '\n');
    res.writeHead(n === 1 ? 500 : 200, { 'content-type': 'text/plain' });
    res.end(n === 1 ? 'not now' : 'ok');
  });
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
HOOK
node "$tmp/hook.mjs" "$tmp/hook.jsonl" >"$tmp/hook.port" 2>"$tmp/hook.err" </dev/null &
hook_pid=$!
for _ in $(seq 100); do [ -s "$tmp/hook.port" ] && break; sleep 0.1; done
hook_port=$(cat "$tmp/hook.port")
[ -n "$hook_port" ] || die "the webhook receiver did not start"

KADM=sk-keys-admin-00000000001 KU=sk-keys-user-000000000002
write_cfg() {  # file ledger-yaml
  cat >"$1" <<EOC
# written by tests/e2e/keys_shared.sh
listen: 127.0.0.1:0
log_level: info
server: {shutdown_grace_ms: 5000}
providers:
  openai: {base_url: "http://127.0.0.1:$oa/v1", api_key: sk-fake-keys-openai, retries: {max: 0}}
models:
  openai/m-keys: {max_output_tokens: 64, price: {input: 1000, output: 1000}}
routes:
  - {name: m, targets: [openai/m-keys]}
  - {name: other, targets: [openai/m-keys]}
keys:
  - {id: ops, key: $KADM, role: admin}
  - {id: plain, key: $KU}
alerts: {webhook_url: "http://127.0.0.1:$hook_port/hook?token=hook-secret-token", timeout_ms: 2000, retries: 2}
ledger: $2
EOC
}

# ---- the client: prints ok / not ok lines; secrets it was given in $tmp/secrets ----
cat >"$tmp/check.mjs" <<'EOC'
const [label, a, b, keysJson, secretsFile] = process.argv.slice(2);
const K = JSON.parse(keysJson);
import { appendFileSync } from 'node:fs';
let failed = 0;
const ok = (m) => console.log(`ok - ${label}: ${m}`);
const bad = (m) => { failed++; console.log(`not ok - ${label}: ${m}`); };
const check = (cond, m, extra) => (cond ? ok(m) : bad(`${m}${extra !== undefined ? ` (got ${JSON.stringify(extra).slice(0, 300)})` : ''}`));
async function call(base, method, path, key, body, raw) {
  const r = await fetch(base + path, {
    method, signal: AbortSignal.timeout(15000),
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: raw !== undefined ? raw : body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let j = null;
  try { j = JSON.parse(text); } catch { /* not JSON */ }
  return { s: r.status, j, text };
}
const errShape = (r) => r.j && r.j.error && typeof r.j.error.message === 'string' && 'type' in r.j.error && 'code' in r.j.error;
const chat = (base, key, model = 'm') => call(base, 'POST', '/v1/chat/completions', key, { model, messages: [{ role: 'user', content: 'hello there' }] });
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
async function until(fn, ms) {   // polls fn until it returns true; the elapsed ms, or -1
  const t0 = Date.now();
  while (Date.now() - t0 < ms) { if (await fn()) return Date.now() - t0; await sleep(25); }
  return -1;
}
const id = `k${label}`;

// create on A: the secret once
const c = await call(a, 'POST', '/admin/keys', K.adm, { id, routes: ['m'], limits: { rpm: 100 }, description: 'made by keys_shared.sh' });
check(c.s === 201 && /^sgk-[0-9a-f]{48}$/.test(c.j?.key) && c.j.id === id && c.j.source === 'database' && c.j.role === 'user',
      'POST /admin/keys on A: 201 with the secret (sgk-...)', c.text);
const secret = c.j?.key;
appendFileSync(secretsFile, `${secret}\n`);
const tB = await until(async () => (await chat(b, secret)).s === 200, 3000);
check(tB >= 0 && tB <= 1000, `the new key is served by B within 1 s (${tB} ms)`, tB);
const g = await call(b, 'GET', `/admin/keys/${id}`, K.adm);
check(g.s === 200 && g.j.id === id && !('key' in g.j) && !g.text.includes(secret) && g.j.limits?.rpm === 100 &&
      JSON.stringify(g.j.routes) === '["m"]' && g.j.revoked_at === null, 'GET /admin/keys/{id} on B: the key, no secret', g.text);
const l = await call(a, 'GET', '/admin/keys', K.adm);
check(l.s === 200 && l.j.object === 'list' && l.j.data.some((k) => k.id === id) && !l.text.includes(secret), 'GET /admin/keys: listed, no secret', l.text);
const wrongRoute = await chat(a, secret, 'other');
check(wrongRoute.s === 403 || wrongRoute.s === 404, 'the key cannot use a route outside its routes', wrongRoute.text);

// PATCH rpm on B, enforced on A
const p = await call(b, 'PATCH', `/admin/keys/${id}`, K.adm, { limits: { rpm: 2 } });
check(p.s === 200 && p.j.limits?.rpm === 2 && p.j.description === 'made by keys_shared.sh', 'PATCH rpm 2 on B: 200, the rest kept', p.text);
await sleep(1000);
const codes = [];
for (let i = 0; i < 3; i++) codes.push((await chat(a, secret)).s);
// the requests before the PATCH count in the same window: at least the third is refused
check(codes.at(-1) === 429, `rpm 2 enforced on A: ${codes.join(',')}`, codes);

// a file key's id
const fk = await call(a, 'GET', '/admin/keys/plain', K.adm);
check(fk.s === 200 && fk.j.source === 'config' && !fk.text.includes('sha'), "GET a file key: source config", fk.text);
for (const [m, body] of [['POST', { id: 'plain' }], ['PATCH', { limits: { rpm: 1 } }], ['DELETE', undefined]]) {
  const r = await call(a, m, m === 'POST' ? '/admin/keys' : '/admin/keys/plain', K.adm, body);
  check(r.s === 409 && errShape(r), `${m} of a file key's id: 409`, r.text);
}

// who may call
const nokey = await call(a, 'GET', '/admin/keys', null);
check(nokey.s === 401 && errShape(nokey), 'no key: 401', nokey.text);
const user = await call(a, 'POST', '/admin/keys', K.u, { id: 'x1' });
check(user.s === 403 && errShape(user), 'a user key: 403', user.text);
const dyn = await call(a, 'GET', '/admin/keys', secret);
check(dyn.s === 403, 'a run-time user key: 403', dyn.text);

// hostile bodies
const H = [
  ['not JSON', '/admin/keys', 'POST', 'nope{'], ['an array', '/admin/keys', 'POST', '[1]'], ['no id', '/admin/keys', 'POST', '{}'],
  ['a huge id', '/admin/keys', 'POST', JSON.stringify({ id: 'a'.repeat(5000) })], ['an id with a slash', '/admin/keys', 'POST', '{"id":"a/b"}'],
  ['an unknown field', '/admin/keys', 'POST', '{"id":"x2","secret":"mine"}'], ['rpm as a string', '/admin/keys', 'POST', '{"id":"x3","limits":{"rpm":"5"}}'],
  ['a negative budget', '/admin/keys', 'POST', '{"id":"x4","budget":{"daily_usd":-1}}'], ['an unknown route', '/admin/keys', 'POST', '{"id":"x5","routes":["nope"]}'],
  ['a bad role', '/admin/keys', 'POST', '{"id":"x6","role":"root"}'], ['alert_percent 0', '/admin/keys', 'POST', '{"id":"x7","alert_percent":0}'],
  ['duplicate fields', '/admin/keys', 'POST', '{"id":"x8","id":"x9"}'], ['an id in a PATCH', `/admin/keys/${id}`, 'PATCH', '{"id":"other"}'],
  ['NUL in a string', '/admin/keys', 'POST', '{"id":"x\\u0000y"}'],
];
for (const [what, path, m, raw] of H) {
  const r = await call(a, m, path, K.adm, null, raw);
  check(r.s === 400 && errShape(r) && !r.text.includes('sgk-'), `hostile body (${what}): 400`, r.text);
}
const unk = await call(a, 'GET', '/admin/keys/no-such-key', K.adm);
check(unk.s === 404 && errShape(unk), 'GET an unknown id: 404', unk.text);
const meth = await call(a, 'PUT', '/admin/keys', K.adm, {});
check(meth.s === 405 && errShape(meth), 'PUT /admin/keys: 405', meth.text);

// revoke on B: 401 on A within 1 s
const d = await call(b, 'DELETE', `/admin/keys/${id}`, K.adm);
check(d.s === 200 && typeof d.j.revoked_at === 'number', 'DELETE on B: revoked', d.text);
const tA = await until(async () => (await chat(a, secret)).s === 401, 3000);
check(tA >= 0 && tA <= 1000, `revoked on B: 401 on A within 1 s (${tA} ms)`, tA);
const again = await call(a, 'POST', '/admin/keys', K.adm, { id });
check(again.s === 409 && errShape(again), 'a revoked id is not reused: 409', again.text);
const d2 = await call(a, 'DELETE', `/admin/keys/${id}`, K.adm);
check(d2.s === 404, 'DELETE again: 404', d2.text);

// a budget alert: alert_percent 10 of $0.10 total
const bk = await call(a, 'POST', '/admin/keys', K.adm, { id: `${id}-budget`, budget: { total_usd: 0.1 }, alert_percent: 10 });
check(bk.s === 201, 'a key with a budget: 201', bk.text);
appendFileSync(secretsFile, `${bk.j?.key}\n`);
const seenB = await until(async () => (await call(b, 'GET', '/v1/models', bk.j?.key)).s === 200, 3000);
check(seenB >= 0, 'B serves it', seenB);
const st = [];
for (let i = 0; i < 8; i++) { const r = await chat(b, bk.j?.key); st.push(r.s === 200 ? 200 : r.j?.error?.code); }
// each answer costs about $0.008 and reserves up to $0.081 (64 output tokens): the budget stops it
check(st.filter((x) => x === 200).length >= 2 && st.at(-1) === 'budget_exceeded', `8 requests with it on B: answered until its budget ran out (${st.join(',')})`, st);
process.exit(failed ? 1 : 0);
EOC

run_phase() {  # label ledger-yaml reloads-expected db-query-command...
  local label=$1 cfg=$tmp/$1.yaml
  write_cfg "$cfg" "$2"
  set -- "$1" "$3" "${@:4}"   # $2: reloads expected in gw0.log after this phase's SIGHUP
  local reloads=$2
  shift 2
  : >"$tmp/hook.jsonl"
  timeout 20 "$bin" serve --config "$cfg" --check >"$tmp/check.out" 2>&1 || { cat "$tmp/check.out"; die "$label: serve --check refused the configuration"; }
  start_gw 0 "$cfg"
  start_gw 1 "$cfg"
  A=http://127.0.0.1:${gw_ports[0]} B=http://127.0.0.1:${gw_ports[1]}
  echo "  $label: instances on ports ${gw_ports[0]} and ${gw_ports[1]}"
  timeout 120 node "$tmp/check.mjs" "$label" "$A" "$B" "{\"adm\":\"$KADM\",\"u\":\"$KU\"}" "$tmp/secrets" >"$tmp/$label.out" 2>&1
  cat "$tmp/$label.out"
  pass=$((pass + $(grep -c '^ok - ' "$tmp/$label.out")))
  fail=$((fail + $(grep -c '^not ok - ' "$tmp/$label.out")))
  grep -q "8 requests with it" "$tmp/$label.out" || bad "$label: the client did not finish"
  # the database holds hashes only
  rows=$("$@" "SELECT id || ' ' || sha256 || ' ' || spec FROM gateway_keys ORDER BY id")
  if [ "$(echo "$rows" | grep -c .)" = 2 ] && echo "$rows" | grep -Eq "^k$label [0-9a-f]{64} " && ! grep -qFf "$tmp/secrets" <<<"$rows"; then
    ok "$label: the table holds 2 rows with SHA-256 hashes and no secret"
  else bad "$label: gateway_keys rows: $rows"; fi
  # the webhook: first POST failed, the retry delivered the same body
  for _ in $(seq 100); do [ "$(grep -c . "$tmp/hook.jsonl" 2>/dev/null)" -ge 2 ] && break; sleep 0.1; done
  if node -e '
    const L = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
    const j = JSON.parse(L[1].body);
    const good = L.length === 2 && L[0].body === L[1].body && L[1].method === "POST" && /application\/json/.test(L[1].type) &&
      j.event === "budget_alert" && j.scope === "key" && j.key_id === process.argv[2] && j.period === "total" &&
      j.budget_usd === 0.1 && j.threshold_percent === 10 && j.spent_usd >= 0.01 && j.spent_usd < 0.1 && !/sgk-|sk-keys/.test(L[1].body);
    if (!good) { console.error(JSON.stringify(L)); process.exit(1); }' "$tmp/hook.jsonl" "k$label-budget"; then
    ok "$label: the webhook got the budget alert (key id, spend, budget, threshold) once, again after a 500"
  else bad "$label: webhook bodies: $(cat "$tmp/hook.jsonl")"; fi
  grep -q "budget key k$label-budget total crossed its alert threshold (10%)" "$tmp"/gw*.log \
    && ok "$label: the alert is logged" || bad "$label: no alert line in the logs"
  # a reload rebuilds the run-time keys against the new configuration: still served
  kill -HUP "${gw_pids[0]}"
  for _ in $(seq 50); do [ "$(grep -c "configuration reloaded" "$tmp/gw0.log")" -ge "$reloads" ] && break; sleep 0.1; done
  code=$(curl -s -o "$tmp/out" -m 30 -w '%{http_code}' -H "Authorization: Bearer $(tail -1 "$tmp/secrets")" -H 'content-type: application/json' \
    -d '{"model":"m","messages":[{"role":"user","content":"hi"}]}' "$A/v1/chat/completions")
  [ "$code" = 200 ] && ok "$label: after SIGHUP on A, a run-time key is still served there" || bad "$label: after SIGHUP: $code $(cat "$tmp/out")"
}

# ---- SQLite: one file, two instances ----
run_phase sqlite "{sqlite: \"$tmp/shared.db\", spool_dir: \"$tmp/spool-sqlite\", flush_ms: 200}" 1 sqlite3 "$tmp/shared.db"
stop_gws sqlite

# ---- PostgreSQL ----
pg_setup
psql_q() { PGPASSWORD=$pw "$pgbin/psql" -h 127.0.0.1 -p "$port" -U smolgate -qAtX -d smolgate -c "$1"; }
echo "  PostgreSQL on 127.0.0.1:$port"
kill "$hook_pid"; wait "$hook_pid" 2>/dev/null   # a fresh receiver: its first POST fails again
node "$tmp/hook.mjs" "$tmp/hook.jsonl" >"$tmp/hook.port" 2>"$tmp/hook.err" </dev/null &
hook_pid=$!
: >"$tmp/hook.port"; for _ in $(seq 100); do [ -s "$tmp/hook.port" ] && break; sleep 0.1; done
hook_port=$(cat "$tmp/hook.port")
run_phase postgres "{postgres: \"$pg_url\", spool_dir: \"$tmp/spool-pg\", flush_ms: 200}" 2 psql_q

# ---- PostgreSQL stopped: the last keys read are still served ----
pg_stop fast || bad "stopping PostgreSQL"
sleep 1.5
code=$(curl -s -o "$tmp/out" -m 30 -w '%{http_code}' -H "Authorization: Bearer $(tail -1 "$tmp/secrets")" -H 'content-type: application/json' \
  -d '{"model":"m","messages":[{"role":"user","content":"hi"}]}' "http://127.0.0.1:${gw_ports[0]}/v1/chat/completions")
[ "$code" = 200 ] && ok "outage: a run-time key still works with the database down" || bad "outage: $code $(cat "$tmp/out")"
code=$(curl -s -o "$tmp/out" -m 30 -w '%{http_code}' -H "Authorization: Bearer $KADM" "http://127.0.0.1:${gw_ports[0]}/admin/keys")
[ "$code" = 503 ] && ok "outage: GET /admin/keys: 503" || bad "outage: GET /admin/keys: $code $(cat "$tmp/out")"
n=$(grep -c "keys: the database is unavailable" "$tmp/gw0.log")
[ "$n" = 1 ] && ok "outage: logged once" || bad "outage: logged $n times"
pg_start || die "PostgreSQL did not start again"
stop_gws postgres

no_crash_in_logs
if grep -q -- "$pw\|sk-keys-\|hook-secret-token" "$tmp"/gw*.log || grep -qFf "$tmp/secrets" "$tmp"/gw*.log; then bad "a password, key or secret appears in a gateway log"
else ok "no password, key or secret in the gateway logs"; fi
finish
