#!/bin/bash
# ledger_sqlite.sh: the ledger survives SIGTERM and kill -9, with the embedded SQLite.
#
# Builds tests/ledger/ledger_driver.c against build/libsmolgate.a (a process that appends
# ledger records in a loop; see its header), then:
#   (a) SIGTERM while appending at 2000/s: every appended record is in the database, once,
#       and the spool is empty after the clean exit;
#   (b) kill -9 while appending at 20,000/s (deliveries every 10 ms, so that the kill
#       also lands mid-batch), three times in a row on the same spool: a fresh process
#       drains what each dead one left; the database holds every record whose append had
#       returned (the progress file's count, or one more: the append in flight), ids
#       contiguous, none twice, attempts exactly once too;
#   (c) `smolgate usage` reads the same totals back (JSON and CSV).
# Bounded waits; everything is stopped and removed on exit; the last line is
# "ledger_sqlite.sh: N passed, N failed".
#
# Environment: LEDGER_DRIVER (a prebuilt driver: skips the build), SMOLGATE_BIN (default
# build/smolgate).
set -u
cd "$(dirname "$0")/../.."
bin=${SMOLGATE_BIN:-build/smolgate}
tmp=$(mktemp -d /tmp/smolgate-ledger-sqlite-XXXXXX)
pids=()
pass=0 fail=0

cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok()  { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
finish() { echo "ledger_sqlite.sh: $pass passed, $fail failed"; [ $fail -eq 0 ]; exit $?; }
die() { bad "$*"; finish; }

# ---- the driver ----
driver=${LEDGER_DRIVER:-}
if [ -z "$driver" ]; then
  [ -f build/libsmolgate.a ] || die "build/libsmolgate.a is missing: run make"
  driver=$tmp/ledger_driver
  cc -std=c11 -D_GNU_SOURCE -O2 -g -pthread -Isrc -I/usr/include/postgresql \
     $(pkg-config --cflags jansson 2>/dev/null) tests/ledger/ledger_driver.c build/libsmolgate.a \
     $(sed -n 's/^LDLIBS *= *//p' Makefile) -o "$driver" 2>"$tmp/cc.err" || { cat "$tmp/cc.err"; die "building the driver"; }
fi
[ -x "$bin" ] || die "$bin is missing: run make $bin"

db=$tmp/ledger.db
spool=$tmp/spool

verify() {  # prefix -> "count distinct min max attempts"
  "$driver" --sqlite "$db" --verify "$1" | sed 's/[a-z]*=//g'
}

wait_exit() {  # pid seconds: 0 if it exited in time
  local pid=$1 t=$2
  for _ in $(seq $((t * 10))); do kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }; sleep 0.1; done
  return 124
}

# ---- (a) SIGTERM ----
"$driver" --spool "$spool" --sqlite "$db" --prefix term --rate 2000 --progress "$tmp/term.n" 2>"$tmp/term.log" &
pid=$!; pids+=($pid)
sleep 1.5
kill -TERM $pid
if wait_exit $pid 30; then ok "SIGTERM: the driver exits 0"; else bad "SIGTERM: the driver did not exit cleanly"; fi
n=$((10#$(head -c 20 "$tmp/term.n")))
read -r count distinct min max attempts < <(verify term)
if [ "$n" -gt 1000 ] && [ "$count" = "$n" ] && [ "$distinct" = "$n" ] && [ "$min" = 0 ] && [ "$max" = $((n - 1)) ]; then
  ok "SIGTERM: all $n appended records delivered once"
else
  bad "SIGTERM: appended $n, database count=$count distinct=$distinct min=$min max=$max"
fi
[ "$attempts" = $((n + n / 2)) ] && ok "SIGTERM: attempts stored once ($attempts)" || bad "SIGTERM: attempts $attempts, expected $((n + n / 2))"
left=$(ls "$spool" | grep -c -E '\.(seg|spool|lock)$')
[ "$left" = 0 ] && ok "SIGTERM: the spool is empty after a clean exit" || bad "SIGTERM: $left spool files left: $(ls "$spool")"

# ---- (b) kill -9, three times on one spool ----
total=0 expect_lo=0
for round in 1 2 3; do
  "$driver" --spool "$spool" --sqlite "$db" --prefix k9 --start $total --rate 20000 --flush-ms 10 --batch 64 \
    --progress "$tmp/k9.n" 2>"$tmp/k9.$round.log" &
  pid=$!; pids+=($pid)
  sleep "1.$((RANDOM % 9))"
  kill -9 $pid; wait $pid 2>/dev/null
  n=$((10#$(head -c 20 "$tmp/k9.n")))
  spooled=$("$driver" --spooled "$spool")
  echo "  round $round: $n appends returned before kill -9 ($spooled records in the spool)"
  # the append in flight may have reached the spool: then its id is total+n
  total=$((total + n))
  "$driver" --spool "$spool" --sqlite "$db" --drain --close-ms 30000 2>"$tmp/drain.$round.log" \
    || { bad "round $round: drain left files"; cat "$tmp/drain.$round.log"; }
  read -r count distinct min max attempts < <(verify k9)
  if [ "$count" = "$distinct" ] && [ "$min" = 0 ] && [ "$max" = $((count - 1)) ] && \
     { [ "$count" = "$total" ] || [ "$count" = $((total + 1)) ]; }; then
    ok "kill -9 round $round: $count records, none missing, none twice"
  else
    bad "kill -9 round $round: expected $total (or one more), database count=$count distinct=$distinct min=$min max=$max"
  fi
  [ "$attempts" = $((count + count / 2)) ] && ok "kill -9 round $round: attempts once" || bad "kill -9 round $round: attempts $attempts"
  total=$count   # the next round continues the ids after what is stored
done
left=$(ls "$spool" | grep -c -E '\.(seg|spool|lock)$')
[ "$left" = 0 ] && ok "kill -9: the spool is empty after the drains" || bad "kill -9: spool files left: $(ls "$spool")"

# ---- (c) smolgate usage ----
all=$(( $(verify term | cut -d' ' -f1) + $(verify k9 | cut -d' ' -f1) ))
json=$("$bin" usage --db "$db" --format json 2>&1)
if echo "$json" | grep -q "\"total\":{\"requests\":$all,"; then ok "smolgate usage: $all requests"; else bad "smolgate usage: $json"; fi
cost=$((all * 42))
if echo "$json" | grep -q "\"cost_micro\":$cost,"; then ok "smolgate usage: cost $cost micro-dollars"; else bad "smolgate usage cost: $json"; fi
csv=$("$bin" usage --db "$db" --format csv --group-by key 2>&1)
if echo "$csv" | grep -q "^term,$(verify term | cut -d' ' -f1),"; then ok "smolgate usage --group-by key (CSV)"; else bad "CSV: $csv"; fi
if grep -q -i -E 'AddressSanitizer|runtime error' "$tmp"/*.log; then bad "sanitizer reports in the driver logs"; else ok "no sanitizer reports"; fi
finish
