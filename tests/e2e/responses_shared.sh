#!/bin/bash
# responses_shared.sh: the Responses API's stored responses shared by two smolgate
# instances through the ledger's database: first one SQLite file, then PostgreSQL
# (Debian's package, started by tests/e2e/lib.sh).
#
# For each engine, two `smolgate serve` with one configuration (responses.max_count 6)
# and the fake upstream (tests/fakes/upstream.mjs); a node client (fetch) checks:
#   - a response created on A is read on B (GET), continued on B (previous_response_id:
#     the conversation is carried), its input items listed on A (this input, then the
#     previous output and input, newest first; limit / after paging), and deleted on B
#     (then gone on A: GET 404, previous_response_id 400 previous_response_not_found);
#   - ownership across instances: another key gets 404 / 400, an admin key reads it;
#   - the count bound in the database: of 9 responses made one after another on both
#     instances, the 3 oldest are gone and the 6 newest readable;
#   - hostile ids and queries (300 characters, percent-escapes, a bad limit or order, an
#     unknown sub-path): 400 / 404 with OpenAI's error body;
# and with curl, raw invalid UTF-8 in the id: 400 with a JSON body. PostgreSQL only: the
# database stopped: a previous_response_id gets 503 (OpenAI's error shape) within 10 s
# and GET 503, a plain request is still answered; started again, the stored response is
# read again. Then SIGTERM: exit 0, no sanitizer report, no key or password in any log.
# The last line is "responses_shared.sh: N passed, N failed".
#
# Environment: SMOLGATE_BIN (default build/smolgate; build-san/smolgate for the sanitizer
# build).
set -u
cd "$(dirname "$0")/../.."
suite=responses_shared.sh
tmp=$(mktemp -d /tmp/smolgate-rshared-XXXXXX)
. tests/e2e/lib.sh

command -v node >/dev/null || die "node is not installed"
command -v curl >/dev/null || die "curl is not installed"
[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || die "PostgreSQL is not installed (tools/install-deps.sh --test)"
bin_copy

fake_start

KA=sk-rshared-team-a-000000001 KB=sk-rshared-team-b-000000002 KADM=sk-rshared-admin-0000000003
write_cfg() {  # file ledger-yaml
  cat >"$1" <<EOF
# written by tests/e2e/responses_shared.sh
listen: 127.0.0.1:0
log_level: info
server: {shutdown_grace_ms: 5000}
providers:
  openai: {base_url: "http://127.0.0.1:$oa/v1", api_key: sk-fake-rshared-openai, retries: {max: 0}}
routes:
  - {name: m, targets: [openai/m-resp]}
keys:
  - {id: team-a, key: $KA}
  - {id: team-b, key: $KB}
  - {id: ops, key: $KADM, role: admin}
responses: {max_count: 6}
ledger: $2
EOF
}

# ---- the client: prints ok / not ok lines; the last response id in $tmp/last_id ----
cat >"$tmp/check.mjs" <<'EOF'
const [label, a, b, keysJson, lastFile] = process.argv.slice(2);
const K = JSON.parse(keysJson);
import { writeFileSync } from 'node:fs';
let failed = 0;
const ok = (m) => console.log(`ok - ${label}: ${m}`);
const bad = (m) => { failed++; console.log(`not ok - ${label}: ${m}`); };
const check = (cond, m, extra) => (cond ? ok(m) : bad(`${m}${extra !== undefined ? ` (got ${JSON.stringify(extra).slice(0, 300)})` : ''}`));
async function call(base, method, path, key, body) {
  const r = await fetch(base + path, {
    method, signal: AbortSignal.timeout(15000),
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let j = null;
  try { j = JSON.parse(text); } catch { /* not JSON */ }
  return { s: r.status, j, text };
}
const errShape = (r) => r.j && r.j.error && typeof r.j.error.message === 'string' && 'type' in r.j.error && 'param' in r.j.error && 'code' in r.j.error;
// a response written on one instance is in the database moments after the answer: wait for it
async function visible(base, id, key) {
  for (let i = 0; i < 50; i++) {
    const r = await call(base, 'GET', `/v1/responses/${id}`, key);
    if (r.s === 200) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
  return call(base, 'GET', `/v1/responses/${id}`, key);
}
const text = (item) => (typeof item.content === 'string' ? item.content : (item.content ?? []).map((p) => p.text ?? '').join(''));
const tag = `${label.replace(/\W/g, '')}${Date.now()}`;

const c1 = await call(a, 'POST', '/v1/responses', K.a, { model: 'm', input: `hello ${tag}`, instructions: 'Be brief.' });
check(c1.s === 200 && /^resp_/.test(c1.j?.id), 'POST on A with store: 200, a resp_ id', c1.text);
const r1 = c1.j?.id;
const g1 = await visible(b, r1, K.a);
check(g1.s === 200 && g1.j?.id === r1 && JSON.stringify(g1.j.output) === JSON.stringify(c1.j.output), 'GET on B: the same Response', g1.text);
const gb = await call(b, 'GET', `/v1/responses/${r1}`, K.b);
check(gb.s === 404 && errShape(gb) && gb.j.error.type === 'invalid_request_error', "GET on B with another key: 404 in OpenAI's shape", gb.text);
const ga = await call(b, 'GET', `/v1/responses/${r1}`, K.adm);
check(ga.s === 200 && ga.j?.id === r1, 'GET on B with an admin key: 200', ga.text);

const c2 = await call(b, 'POST', '/v1/responses', K.a, { model: 'm', previous_response_id: r1, input: [{ role: 'user', content: `again ${tag}` }] });
check(c2.s === 200 && c2.j?.previous_response_id === r1, 'continued on B (previous_response_id of a response made on A): 200', c2.text);
const r2 = c2.j?.id;
const c2b = await call(b, 'POST', '/v1/responses', K.b, { model: 'm', previous_response_id: r1, input: 'x' });
check(c2b.s === 400 && c2b.j?.error?.code === 'previous_response_not_found', "another key cannot continue it: 400 previous_response_not_found", c2b.text);
await visible(a, r2, K.a);
const it = await call(a, 'GET', `/v1/responses/${r2}/input_items`, K.a);
const d = it.j?.data ?? [];
check(it.s === 200 && it.j.object === 'list' && d.length === 3 && text(d[0]) === `again ${tag}` && d[1].role === 'assistant' &&
      text(d[1]) === text(c1.j.output[0]) && text(d[2]) === `hello ${tag}` && it.j.first_id === d[0].id && it.j.last_id === d[2].id &&
      it.j.has_more === false, 'input_items on A of the response continued on B: this input, then the previous output and input', it.text);
const p1 = await call(a, 'GET', `/v1/responses/${r2}/input_items?limit=1`, K.a);
const p2 = await call(b, 'GET', `/v1/responses/${r2}/input_items?limit=2&after=${p1.j?.last_id}`, K.a);
check(p1.j?.data?.length === 1 && p1.j.has_more === true && p2.j?.data?.length === 2 && p2.j.has_more === false &&
      p2.j.data[1].id === d[2].id, 'input_items paged with limit and after, across instances', [p1.text, p2.text]);
const pasc = await call(b, 'GET', `/v1/responses/${r2}/input_items?order=asc`, K.a);
check(pasc.j?.data?.map((x) => x.id).join() === [...d].reverse().map((x) => x.id).join(), 'input_items order=asc', pasc.text);
const itb = await call(b, 'GET', `/v1/responses/${r2}/input_items`, K.b);
check(itb.s === 404 && errShape(itb), "another key's input_items: 404", itb.text);

const db = await call(b, 'DELETE', `/v1/responses/${r1}`, K.b);
check(db.s === 404 && errShape(db), "DELETE on B with another key: 404", db.text);
const dd = await call(b, 'DELETE', `/v1/responses/${r1}`, K.a);
check(dd.s === 200 && dd.j?.deleted === true && dd.j?.id === r1, 'DELETE on B by its owner: deleted', dd.text);
const gg = await call(a, 'GET', `/v1/responses/${r1}`, K.a);
check(gg.s === 404, 'then GET on A: 404', gg.text);
const cc = await call(a, 'POST', '/v1/responses', K.a, { model: 'm', previous_response_id: r1, input: 'x' });
check(cc.s === 400 && cc.j?.error?.code === 'previous_response_not_found', 'then previous_response_id on A: 400 previous_response_not_found', cc.text);

// the count bound (6): r2 and 8 more, one after another on both instances
const made = [r2];
for (let i = 0; i < 8; i++) {
  const [on, other] = i % 2 ? [b, a] : [a, b];
  const r = await call(on, 'POST', '/v1/responses', K.a, { model: 'm', input: `bound ${i} ${tag}` });
  if (r.s !== 200) { bad(`bound: POST ${i}: ${r.s} ${r.text}`); break; }
  made.push(r.j.id);
  await visible(other, r.j.id, K.a);   // written before the next one: one order
}
const seen = [];
for (const id of made) seen.push((await call(b, 'GET', `/v1/responses/${id}`, K.a)).s);
check(seen.join() === '404,404,404,200,200,200,200,200,200', 'max_count 6 in the database: the 3 oldest of 9 are gone', seen);
writeFileSync(lastFile, made.at(-1));

// hostile ids and queries
const H = [
  ['GET', `/v1/responses/${'a'.repeat(300)}`, 400], ['GET', '/v1/responses/resp_%FF%FE', 400], ['DELETE', '/v1/responses/resp_%00', 400],
  ['GET', `/v1/responses/${made.at(-1)}/input_items?limit=0`, 400], ['GET', `/v1/responses/${made.at(-1)}/input_items?limit=101`, 400],
  ['GET', `/v1/responses/${made.at(-1)}/input_items?limit=abc`, 400], ['GET', `/v1/responses/${made.at(-1)}/input_items?order=up`, 400],
  ['GET', `/v1/responses/${made.at(-1)}/input_items?after=%FF`, 400], ['GET', `/v1/responses/${made.at(-1)}/other`, 404],
  ['GET', '/v1/responses/resp_doesnotexist/input_items', 404],
];
for (const [m, p, want] of H) {
  const r = await call(a, m, p, K.a);
  check(r.s === want && errShape(r), `${m} ${p.slice(0, 60)}: ${want} in OpenAI's shape`, r.text);
}
process.exit(failed ? 1 : 0);
EOF

run_phase() {  # label ledger-yaml
  local label=$1 cfg=$tmp/$1.yaml
  write_cfg "$cfg" "$2"
  timeout 20 "$bin" serve --config "$cfg" --check >"$tmp/check.out" 2>&1 || { cat "$tmp/check.out"; die "$label: serve --check refused the configuration"; }
  start_gw 0 "$cfg"
  start_gw 1 "$cfg"
  A=http://127.0.0.1:${gw_ports[0]} B=http://127.0.0.1:${gw_ports[1]}
  echo "  $label: instances on ports ${gw_ports[0]} and ${gw_ports[1]}"
  timeout 120 node "$tmp/check.mjs" "$label" "$A" "$B" "{\"a\":\"$KA\",\"b\":\"$KB\",\"adm\":\"$KADM\"}" "$tmp/last_id" >"$tmp/$label.out" 2>&1
  cat "$tmp/$label.out"
  pass=$((pass + $(grep -c '^ok - ' "$tmp/$label.out")))
  fail=$((fail + $(grep -c '^not ok - ' "$tmp/$label.out")))
  grep -q "max_count 6" "$tmp/$label.out" || bad "$label: the client did not finish"
  # raw invalid UTF-8 in the id (curl sends the bytes as they are)
  out=$(curl -s -m 10 -w '\n%{http_code}' -H "Authorization: Bearer $KA" "$A/v1/responses/resp_$(printf '\xff\xfe\xc3')")
  code=${out##*$'\n'} body=${out%$'\n'*}
  if [ "$code" = 400 ] && node -e 'const j = JSON.parse(process.argv[1]); if (!j.error.message) process.exit(1)' "$body" 2>/dev/null; then
    ok "$label: raw invalid UTF-8 in the id: 400 with a JSON error body"
  else bad "$label: raw invalid UTF-8 in the id: $code $body"; fi
}

# ---- SQLite: one file, two instances ----
run_phase sqlite "{sqlite: \"$tmp/shared.db\", spool_dir: \"$tmp/spool-sqlite\", flush_ms: 200}"
n=$(sqlite3 "$tmp/shared.db" "SELECT COUNT(*) FROM responses" 2>/dev/null || echo "?")
[ "$n" = 6 ] && ok "sqlite: the responses table holds 6 rows" || bad "sqlite: the responses table holds $n rows, expected 6"
stop_gws sqlite

# ---- PostgreSQL ----
pg_setup
psql_q() { PGPASSWORD=$pw "$pgbin/psql" -h 127.0.0.1 -p "$port" -U smolgate -qAtX -d smolgate "$@"; }
echo "  PostgreSQL on 127.0.0.1:$port"

run_phase postgres "{postgres: \"$pg_url\", spool_dir: \"$tmp/spool-pg\", flush_ms: 200}"
n=$(psql_q -c "SELECT COUNT(*) FROM responses")
[ "$n" = 6 ] && ok "postgres: the responses table holds 6 rows" || bad "postgres: the responses table holds $n rows, expected 6"
v=$(psql_q -c "SELECT MAX(version) FROM schema_version")
[ "$v" = 5 ] && ok "postgres: schema migrated to version 5 by smolgate" || bad "postgres: schema version $v"

# ---- PostgreSQL stopped: 503 for what needs the store, the rest answered; back: read again ----
last=$(cat "$tmp/last_id" 2>/dev/null)
pg_stop fast || bad "stopping PostgreSQL"
t0=$(date +%s%3N)
out=$(curl -s -m 30 -w '\n%{http_code}' -H "Authorization: Bearer $KA" -H 'content-type: application/json' \
  -d "{\"model\":\"m\",\"previous_response_id\":\"$last\",\"input\":\"during the outage\"}" "http://127.0.0.1:${gw_ports[1]}/v1/responses")
el=$(( $(date +%s%3N) - t0 ))
code=${out##*$'\n'} body=${out%$'\n'*}
if [ "$code" = 503 ] && [ "$el" -lt 10000 ] && node -e 'const j = JSON.parse(process.argv[1]); if (j.error.type !== "server_error" || !j.error.message) process.exit(1)' "$body" 2>/dev/null; then
  ok "outage: previous_response_id: 503 in OpenAI's shape after $el ms"
else bad "outage: previous_response_id: $code after $el ms: $body"; fi
code=$(curl -s -o "$tmp/get.out" -m 30 -w '%{http_code}' -H "Authorization: Bearer $KA" "http://127.0.0.1:${gw_ports[0]}/v1/responses/$last")
[ "$code" = 503 ] && ok "outage: GET: 503" || bad "outage: GET: $code $(cat "$tmp/get.out")"
code=$(curl -s -o "$tmp/post.out" -m 30 -w '%{http_code}' -H "Authorization: Bearer $KA" -H 'content-type: application/json' \
  -d '{"model":"m","input":"still answered"}' "http://127.0.0.1:${gw_ports[0]}/v1/responses")
[ "$code" = 200 ] && ok "outage: a request that names no stored response is answered (200)" || bad "outage: plain POST: $code $(cat "$tmp/post.out")"
pg_start || die "PostgreSQL did not start again"
code=
for _ in $(seq 100); do   # the worker retries its connection every 2 s
  code=$(curl -s -o "$tmp/get.out" -m 10 -w '%{http_code}' -H "Authorization: Bearer $KA" "http://127.0.0.1:${gw_ports[1]}/v1/responses/$last")
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] && ok "PostgreSQL back: the stored response is read again" || bad "PostgreSQL back: GET $code $(cat "$tmp/get.out")"
stop_gws postgres

no_crash_in_logs
if grep -q -- "$pw\|sk-rshared-\|sk-fake-rshared-" "$tmp"/gw*.log; then bad "a password or key appears in a gateway log"
else ok "no password or key in the gateway logs"; fi
finish
