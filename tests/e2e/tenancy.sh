#!/bin/bash
# tenancy.sh: what each gateway key sees, and the SIGHUP reload rules, end to end.
#
# Starts tests/fakes/upstream.mjs and build/smolgate serve with two routes and four keys:
# team-a (user, routes [route-a], an rpm limit so that admission consults the state
# store), team-b (user, routes [route-b]), ops (role admin) and prom (role metrics). Sends
# traffic as each, then reads /v1/usage (plain, group_by=key, key=another; and through
# `smolgate usage --url`), /v1/models,
# /v1/status and /metrics with a user key, the admin key, the metrics key and no key,
# asserting what each sees: a user key its own usage and routes only, the admin key
# everything, the metrics key /metrics only, no key 401. Then reloads (SIGHUP):
#   - an empty file: refused ("is empty"), auth still on (no key: 401);
#   - a file without keys: refused, auth still on;
#   - state: in-process -> Redis at a closed port with on_redis_error closed (applied: a
#     limited request gets 503 limits_unavailable; /v1/status says closed), then open
#     (applied in place: the same request gets 200);
#   - ledger: another SQLite file (applied: new records land there; the old file keeps
#     the earlier ones, read back with `smolgate usage --db`);
#   - auth: none (the deliberate way): applied, no key needed.
# Bounded waits; everything stopped and removed on exit; the last line is
# "tenancy.sh: N passed, N failed"; exit status non-zero on any failure.
#
# Environment: SMOLGATE_BIN (default build/smolgate; build-san/smolgate for sanitizers).
set -u
cd "$(dirname "$0")/../.."

bin=${SMOLGATE_BIN:-build/smolgate}
tmp=$(mktemp -d /tmp/smolgate-tenancy-XXXXXX)
fake_pid= gw_pid=
pass=0 fail=0

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

ok()  { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
check() {  # description, then a command that succeeds when the check holds
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
  if [ "$fail" -gt 0 ] && [ -s "$tmp/gateway.log" ]; then
    echo "tenancy.sh: the gateway log (last 80 lines):"; tail -n 80 "$tmp/gateway.log" | sed 's/^/  /'
  fi
  echo "tenancy.sh: $pass passed, $fail failed"
  [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
  exit $?
}
die() { bad "$*"; finish; }

command -v node >/dev/null || die "node is not installed"
command -v jq >/dev/null || die "jq is not installed"
[ -x "$bin" ] || die "$bin is missing: run make $bin"
cp "$bin" "$tmp/smolgate" || die "cannot copy $bin"
bin=$tmp/smolgate

# ---- the fake upstream ----
node tests/fakes/upstream.mjs --no-log >"$tmp/ports" 2>"$tmp/fake.err" </dev/null &
fake_pid=$!
ports=
for _ in $(seq 100); do   # 10 s at most
  ports=$(head -n 1 "$tmp/ports" 2>/dev/null)
  [ -n "$ports" ] && [[ $ports == *'}' ]] && break
  kill -0 "$fake_pid" 2>/dev/null || break
  ports= ; sleep 0.1
done
[ -n "$ports" ] || { cat "$tmp/fake.err"; die "the fake upstream did not print its ports line"; }
oa=$(echo "$ports" | jq -r .openai)

# ---- configuration ----
KA=sk-tenancy-team-a-0001 KB=sk-tenancy-team-b-0002 KO=sk-tenancy-admin-00003 KM=sk-tenancy-metrics-0004
cfg=$tmp/smolgate.yaml
head_cfg() {  # the part every version of the file shares
  cat <<EOF
# written by tests/e2e/tenancy.sh
listen: 127.0.0.1:0
providers:
  openai: {base_url: "http://127.0.0.1:$oa/v1", api_key: sk-fake-openai-dummy, retries: {max: 0}}
  backup: {type: openai, base_url: "http://127.0.0.1:$oa/v1", api_key: sk-fake-backup-dummy, retries: {max: 0}}
models:
  openai/m-tenancy-a: {price: {input: 1000, output: 2000}}
  backup/m-tenancy-b: {price: {input: 1000, output: 2000}}
routes:
  - {name: route-a, targets: [openai/m-tenancy-a]}
  - {name: route-b, targets: [backup/m-tenancy-b]}
EOF
}
keys_cfg() {
  cat <<EOF
keys:
  - {id: team-a, key: $KA, routes: [route-a], limits: {rpm: 1000}}
  - {id: team-b, key: $KB, routes: [route-b]}
  - {id: ops, key: $KO, role: admin}
  - {id: prom, key: $KM, role: metrics}
EOF
}
write_cfg() {  # state-yaml ledger-db
  { head_cfg; keys_cfg; echo "state: $1"; echo "ledger: {sqlite: $tmp/$2, spool_dir: $tmp/spool, flush_ms: 50}"; } >"$cfg"
}
write_cfg "{}" a.db

timeout 20 "$bin" serve --config "$cfg" --check >"$tmp/check.out" 2>&1 || { cat "$tmp/check.out"; die "serve --check refused the configuration"; }
check "--check names each key with its role" grep -q "key prom (metrics): GET /metrics only" "$tmp/check.out"

# ---- the gateway ----
"$bin" serve --config "$cfg" >"$tmp/gateway.log" 2>&1 </dev/null &
gw_pid=$!
gw_port=
for _ in $(seq 150); do   # 15 s at most
  gw_port=$(sed -n 's/.*smolgate listening on .* (port \([0-9]*\)).*/\1/p' "$tmp/gateway.log" | head -n 1)
  [ -n "$gw_port" ] && break
  kill -0 "$gw_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$gw_port" ] || die "the gateway did not print its port"
url=http://127.0.0.1:$gw_port
echo "tenancy.sh: smolgate at $url, fake upstream at $ports"

# req KEY METHOD PATH [BODY]: the body into $tmp/body, the status on stdout ("-" = no key)
req() {
  local key=$1 method=$2 path=$3 body=${4:-}
  local auth=()
  [ "$key" != - ] && auth=(-H "authorization: Bearer $key")
  if [ -n "$body" ]; then
    curl -s -m 10 -o "$tmp/body" -w '%{http_code}' -X "$method" "${auth[@]}" -H 'content-type: application/json' \
      --data "$body" "$url$path"
  else
    curl -s -m 10 -o "$tmp/body" -w '%{http_code}' -X "$method" "${auth[@]}" "$url$path"
  fi
}
chat() { req "$1" POST /v1/chat/completions "{\"model\":\"$2\",\"messages\":[{\"role\":\"user\",\"content\":\"hello from $1\"}]}"; }
is() { [ "$1" = "$2" ] || { echo "    got $1, want $2: $(head -c 300 "$tmp/body")"; return 1; }; }
body_has() { grep -q -- "$1" "$tmp/body" || { echo "    no \"$1\" in: $(head -c 300 "$tmp/body")"; return 1; }; }
body_lacks() { ! grep -q -- "$1" "$tmp/body" || { echo "    \"$1\" in: $(head -c 300 "$tmp/body")"; return 1; }; }
jqis() {  # filter want: jq on the last body
  local got; got=$(jq -c "$1" "$tmp/body" 2>/dev/null)
  [ "$got" = "$2" ] || { echo "    jq '$1': got $got, want $2"; return 1; }
}
log_count() { grep -c -- "$1" "$tmp/gateway.log"; }
wait_log() {  # pattern count: until the log has more than count lines matching (5 s)
  for _ in $(seq 50); do [ "$(log_count "$1")" -gt "$2" ] && return 0; sleep 0.1; done
  return 1
}
hup() {  # pattern: SIGHUP, then wait for one more line matching it
  local n; n=$(log_count "$1")
  kill -HUP "$gw_pid"
  wait_log "$1" "$n"
}
usage_total() {  # key query: total.requests of GET /v1/usage
  req "$1" GET "/v1/usage?$2" >/dev/null && jq -r .total.requests "$tmp/body" 2>/dev/null
}
wait_usage() {  # key query want: until the ledger answers want (10 s)
  for _ in $(seq 100); do [ "$(usage_total "$1" "$2")" = "$3" ] && return 0; sleep 0.1; done
  echo "    usage for $2: $(usage_total "$1" "$2"), want $3"; return 1
}

# ---- traffic as each key ----
for i in 1 2 3; do check "team-a request $i on route-a: 200" is "$(chat $KA route-a)" 200; done
for i in 1 2; do check "team-b request $i on route-b: 200" is "$(chat $KB route-b)" 200; done
check "admin request on route-b: 200" is "$(chat $KO route-b)" 200
check "team-a may not use route-b: 404, as if it did not exist" is "$(chat $KA route-b)" 404
check "team-a's 404 lists what team-a may use" body_has "served here: routes: route-a"
check "team-a's 404 does not list team-b's routes" body_lacks ", route-b"
check "the metrics key sends no chat request: 403" is "$(chat $KM route-a)" 403
check "no key: 401" is "$(chat - route-a)" 401
check "the ledger holds the 7 requests (admin view)" wait_usage $KO "" 7

# ---- /v1/usage ----
check "usage, team-a: 200" is "$(req $KA GET /v1/usage)" 200
check "usage, team-a: its 4 requests only (3 + the one refused with 404)" jqis .total.requests 4
check "usage?group_by=key, team-a: 200" is "$(req $KA GET '/v1/usage?group_by=key')" 200
check "usage?group_by=key, team-a: one row, itself" jqis '[.data[].key]' '["team-a"]'
check "usage?group_by=key, team-a: nothing of team-b or ops" body_lacks team-b
check "usage?key=team-b as team-a: 403" is "$(req $KA GET '/v1/usage?key=team-b')" 403
check "usage?key=team-b as team-a: no numbers leak" body_lacks '"requests"'
check "usage?key=team-a&group_by=route as team-a: 200" is "$(req $KA GET '/v1/usage?key=team-a&group_by=route')" 200
check "usage, team-b: its 2 requests" is "$(usage_total $KB "")" 2
check "usage?group_by=model, team-b: only its model" is "$(req $KB GET '/v1/usage?group_by=model')" 200
check "usage?group_by=model, team-b: m-tenancy-b only" jqis '[.data[].model]' '["m-tenancy-b"]'
check "usage?group_by=key, admin: 200" is "$(req $KO GET '/v1/usage?group_by=key')" 200
check "usage?group_by=key, admin: every key" jqis '[.data[] | {(.key): .requests}] | add' '{"ops":1,"team-a":4,"team-b":2}'
check "usage?group_by=key, admin: team-b's cost is there" jqis '[.data[] | select(.key=="team-b") | .cost_micro > 0] | .[0]' true
csv_keys() { cut -d, -f1 "$tmp/body" | tail -n +2 | sort | tr '\n' ' '; }
SMOLGATE_API_KEY=$KA "$bin" usage --url "$url" --group-by key --format csv >"$tmp/body" 2>&1
check "smolgate usage --url as team-a: its own row only" is "$(csv_keys)" "team-a "
SMOLGATE_API_KEY=$KO "$bin" usage --url "$url" --group-by key --format csv >"$tmp/body" 2>&1
check "smolgate usage --url as admin: every key" is "$(csv_keys)" "ops team-a team-b "
SMOLGATE_API_KEY=$KB "$bin" usage --url "$url" --group-by model >"$tmp/body" 2>&1
check "smolgate usage --url as team-b (table): its model and total" eval 'body_has m-tenancy-b && body_lacks m-tenancy-a && grep -Eq "^total +2 " "$tmp/body"'
SMOLGATE_API_KEY=$KA "$bin" usage --url "$url" --key team-b >"$tmp/body" 2>&1
check "smolgate usage --url --key team-b as team-a: refused (403)" eval 'body_has "answered 403" && body_lacks "total "'
check "usage, metrics key: 403" is "$(req $KM GET /v1/usage)" 403
check "usage, no key: 401" is "$(req - GET /v1/usage)" 401

# ---- /v1/models ----
check "models, team-a: 200" is "$(req $KA GET /v1/models)" 200
check "models, team-a: route-a only (no direct model ids)" jqis '[.data[].id]' '["route-a"]'
check "models, team-b: 200" is "$(req $KB GET /v1/models)" 200
check "models, team-b: route-b only" jqis '[.data[].id]' '["route-b"]'
check "models, admin: 200" is "$(req $KO GET /v1/models)" 200
check "models, admin: both routes and the models: entries" jqis '[.data[].id | select(startswith("route-") or startswith("openai/") or startswith("backup/"))] | sort' '["backup/m-tenancy-b","openai/m-tenancy-a","route-a","route-b"]'
check "models, metrics key: 403" is "$(req $KM GET /v1/models)" 403
check "models, no key: 401" is "$(req - GET /v1/models)" 401

# ---- /v1/status ----
# /v1/status lists the targets whose breakers are open or failing: one failure each
ctl=$(echo "$ports" | jq -r .control)
for m in m-tenancy-a m-tenancy-b; do
  curl -s -m 5 -o /dev/null -H 'content-type: application/json' \
    -d "{\"provider\":\"openai\",\"match\":\"$m\",\"faults\":[\"500\"]}" "http://127.0.0.1:$ctl/control"
done
check "team-a, upstream 500: relayed" is "$(chat $KA route-a)" 500
check "team-b, upstream 500: relayed" is "$(chat $KB route-b)" 500
check "status, team-a: 200" is "$(req $KA GET /v1/status)" 200
check "status, team-a: its target only" jqis '[.targets[].target]' '["openai/m-tenancy-a"]'
check "status, team-a: no gateway-wide counters, state or ledger" jqis '[has("stats"), has("state"), has("ledger")]' '[false,false,false]'
check "status, team-b: 200" is "$(req $KB GET /v1/status)" 200
check "status, team-b: its target only" jqis '[.targets[].target]' '["backup/m-tenancy-b"]'
check "status, admin: 200" is "$(req $KO GET /v1/status)" 200
check "status, admin: every target" jqis '[.targets[].target] | sort' '["backup/m-tenancy-b","openai/m-tenancy-a"]'
check "status, admin: counters, state and ledger" jqis '[.stats.requests >= 7, .state.store, .state.on_redis_error, .ledger.engine]' '[true,"in-process","open","sqlite"]'
check "status, metrics key: 403" is "$(req $KM GET /v1/status)" 403
check "status, no key: 401" is "$(req - GET /v1/status)" 401

# ---- /metrics ----
check "metrics, metrics key: 200" is "$(req $KM GET /metrics)" 200
check "metrics, metrics key: the request counters" body_has 'smolgate_requests_total{route="route-b"'
check "metrics, admin: 200" is "$(req $KO GET /metrics)" 200
check "metrics, team-a: 403" is "$(req $KA GET /metrics)" 403
check "metrics, team-a: nothing of the metrics" body_lacks smolgate_requests_total
check "metrics, no key: 401" is "$(req - GET /metrics)" 401

# ---- reload: an empty file ----
cp "$cfg" "$tmp/good.yaml"
: >"$cfg"
check "reload of an empty file: refused" hup "reload refused"
check "reload of an empty file: the reason is logged" grep -q "reload refused.*is empty" "$tmp/gateway.log"
check "after the empty file: no key still 401" is "$(chat - route-a)" 401
check "after the empty file: team-a still 200" is "$(chat $KA route-a)" 200

# ---- reload: a file without keys ----
head_cfg >"$cfg"
check "reload of a key-less file: refused" hup "reload refused"
check "reload of a key-less file: the reason is logged" grep -q "reload refused.*lists no gateway keys while 4 are required" "$tmp/gateway.log"
check "after the key-less file: no key still 401" is "$(req - GET /v1/models)" 401
check "after the key-less file: team-b still 200" is "$(chat $KB route-b)" 200

# ---- reload: state ----
write_cfg "{redis: \"redis://127.0.0.1:1/0\", on_redis_error: closed, timeout_ms: 200}" a.db
check "reload to Redis (unreachable), on_redis_error closed: applied" hup "configuration reloaded"
check "state change logged" grep -q "state: now redis (on_redis_error closed)" "$tmp/gateway.log"
check "status, admin: store redis, on_redis_error closed" \
  eval 'req $KO GET /v1/status >/dev/null && jqis "[.state.store, .state.on_redis_error]" "[\"redis\",\"closed\"]"'
check "closed: team-a (rpm limit) gets 503" is "$(chat $KA route-a)" 503
check "closed: the error is limits_unavailable" body_has limits_unavailable
write_cfg "{redis: \"redis://127.0.0.1:1/0\", on_redis_error: open, timeout_ms: 200}" a.db
check "reload with on_redis_error open: applied" hup "configuration reloaded"
check "on_redis_error change logged" grep -q "state: on_redis_error open, timeout_ms 200 (were closed, 200)" "$tmp/gateway.log"
check "status, admin: on_redis_error open" \
  eval 'req $KO GET /v1/status >/dev/null && jqis .state.on_redis_error "\"open\""'
check "open: team-a gets 200 again" is "$(chat $KA route-a)" 200
check "the replaced in-process limiter is freed once idle" wait_log "replaced limiter is idle and freed" 0

# ---- reload: ledger ----
check "the old ledger has delivered (admin: 13 requests)" wait_usage $KO "" 13
write_cfg "{redis: \"redis://127.0.0.1:1/0\", on_redis_error: open, timeout_ms: 200}" b.db
check "reload to another ledger file: applied" hup "configuration reloaded"
check "ledger change logged" grep -q "ledger: now sqlite $tmp/b.db" "$tmp/gateway.log"
check "team-a request into the new ledger: 200" is "$(chat $KA route-a)" 200
check "team-b request into the new ledger: 200" is "$(chat $KB route-b)" 200
check "the new ledger has the 2 new requests (admin)" wait_usage $KO "" 2
check "the new ledger, team-a's view: 1" wait_usage $KA "" 1
json=$("$bin" usage --db "$tmp/a.db" --format json --group-by key 2>&1)
echo "$json" >"$tmp/body"
check "smolgate usage --db a.db: the old ledger kept its 13 records" jqis .total.requests 13
check "smolgate usage --db a.db: team-b's 4" jqis '[.data[] | select(.key=="team-b") | .requests]' '[4]'

# ---- reload: auth: none, on purpose ----
{ echo "auth: none"; head_cfg; echo "ledger: {sqlite: $tmp/b.db, spool_dir: $tmp/spool, flush_ms: 50}"; } >"$cfg"
check "reload with auth: none: applied" hup "configuration reloaded"
check "auth: none is logged as a warning" grep -q "serves without keys, as the file says" "$tmp/gateway.log"
check "auth: none: no key needed" is "$(chat - route-a)" 200
check "auth: none: /metrics open" is "$(req - GET /metrics)" 200

# ---- alive, no key in the log, clean exit ----
check "the gateway is still running" kill -0 "$gw_pid"
check "no gateway or provider key in the log" eval '! grep -q -e "$KA" -e "$KB" -e "$KO" -e "$KM" -e sk-fake-openai-dummy "$tmp/gateway.log"'
kill -TERM "$gw_pid"
rc=
for _ in $(seq 150); do
  if ! kill -0 "$gw_pid" 2>/dev/null; then wait "$gw_pid"; rc=$?; break; fi
  sleep 0.1
done
check "SIGTERM: exit 0" is "${rc:-still running}" 0
[ -n "$rc" ] && gw_pid=
crash_re='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|Segmentation fault|Assertion .* failed|double free'
check "no sanitizer report or crash in the log" eval '! grep -Eq "$crash_re" "$tmp/gateway.log"'
finish
