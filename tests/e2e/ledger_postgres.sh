#!/bin/bash
# ledger_postgres.sh: the ledger on a real PostgreSQL: exactly once through crashes,
# outages and two writers.
#
# Starts PostgreSQL from Debian's package (/usr/lib/postgresql/*/bin: initdb + pg_ctl in a
# temporary folder, as the postgres user when run as root, password authentication on a
# free loopback port), builds tests/ledger/ledger_driver.c (see ledger_sqlite.sh), then:
#   (a) 3000 records: delivered exactly once; the schema is at version 3 (migrations 1, 2, 3);
#   (b) PostgreSQL stopped for 2 s while a driver appends at 1000/s, then started again:
#       the driver keeps appending (spooled), delivers everything when the server is
#       back, and SIGTERM leaves every record in the database exactly once;
#   (c) two drivers at once on a fresh database and one spool folder (they also race to
#       create the schema): each record once, the schema migrated once; and two drivers
#       delivering the SAME request ids (what two instances adopting one spool would do):
#       one row per request;
#   (d) kill -9 while appending, then a fresh process drains the spool: no record
#       missing, none twice;
#   (e) PostgreSQL stopped AND the driver killed -9 during the outage: after both come
#       back, every record is there once;
#   (f) `smolgate usage --postgres` reads the totals back; the database password never
#       appears in any log or error message.
# Bounded waits; PostgreSQL and the drivers are stopped and everything removed on exit;
# the last line is "ledger_postgres.sh: N passed, N failed".
#
# Environment: LEDGER_DRIVER (a prebuilt driver), SMOLGATE_BIN (default build/smolgate).
set -u
cd "$(dirname "$0")/../.."
suite=ledger_postgres.sh
tmp=$(mktemp -d /tmp/smolgate-ledger-pg-XXXXXX)
. tests/e2e/lib.sh
pids=()
cleanup_more() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; }

[ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || die "PostgreSQL is not installed (tools/install-deps.sh --test)"
[ -x "$bin" ] || die "$bin is missing: run make $bin"
driver=${LEDGER_DRIVER:-}
if [ -z "$driver" ]; then
  [ -f build/libsmolgate.a ] || die "build/libsmolgate.a is missing: run make"
  driver=$tmp/ledger_driver
  cc -std=c11 -D_GNU_SOURCE -O2 -g -pthread -Isrc -I/usr/include/postgresql \
     $(pkg-config --cflags jansson 2>/dev/null) tests/ledger/ledger_driver.c build/libsmolgate.a \
     $(sed -n 's/^LDLIBS *= *//p' Makefile) -o "$driver" 2>"$tmp/cc.err" || { cat "$tmp/cc.err"; die "building the driver"; }
fi

# ---- PostgreSQL in a temporary folder ----
pg_setup
psql_q() { PGPASSWORD=$pw "$pgbin/psql" -h 127.0.0.1 -p "$port" -U smolgate -qAtX "$@"; }
psql_q -d postgres -c "CREATE DATABASE twodb" >/dev/null || die "createdb"
url=$pg_url
url2="postgresql://smolgate:$pw@127.0.0.1:$port/twodb"
echo "  PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"

verify() {  # url prefix -> "count distinct min max attempts"
  "$driver" --postgres "$1" --verify "$2" | sed 's/[a-z]*=//g'
}
check_exact() {  # what url prefix expected
  local count distinct min max attempts
  read -r count distinct min max attempts < <(verify "$2" "$3")
  if [ "$count" = "$4" ] && [ "$distinct" = "$4" ] && [ "$min" = 0 ] && [ "$max" = $(($4 - 1)) ] && \
     [ "$attempts" = $(($4 + $4 / 2)) ]; then
    ok "$1: $4 records exactly once (attempts $attempts)"
  else
    bad "$1: expected $4, database count=$count distinct=$distinct min=$min max=$max attempts=$attempts"
  fi
}
wait_exit() {  # pid seconds
  local pid=$1 t=$2
  for _ in $(seq $((t * 10))); do kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }; sleep 0.1; done
  return 124
}
progress() { echo $((10#$(head -c 20 "$1"))); }

# ---- (a) exactly once ----
"$driver" --spool "$tmp/spool-a" --postgres "$url" --prefix once --count 3000 --flush-ms 50 2>"$tmp/a.log" \
  || { cat "$tmp/a.log"; die "(a) the driver failed"; }
check_exact "(a) 3000 appended" "$url" once 3000
v=$(psql_q -d smolgate -c "SELECT string_agg(version::text, ',') FROM schema_version")
[ "$v" = 1,2,3,4,5 ] && ok "(a) schema_version: 1,2,3,4,5" || bad "(a) schema_version: $v"

# ---- (b) outage ----
spool=$tmp/spool-b
"$driver" --spool "$spool" --postgres "$url" --prefix outage --rate 1000 --flush-ms 100 --progress "$tmp/b.n" 2>"$tmp/b.log" &
pid=$!; pids+=($pid)
sleep 1
pg_stop fast || bad "(b) stopping PostgreSQL"
before=$(progress "$tmp/b.n")
sleep 2
during=$(progress "$tmp/b.n")
kill -0 $pid 2>/dev/null && [ "$during" -gt $((before + 1000)) ] && ok "(b) appends go on while the database is down ($before -> $during)" \
  || bad "(b) appends stalled during the outage ($before -> $during)"
spooled=$("$driver" --spooled "$spool")
[ "$spooled" -ge $((during - before)) ] && ok "(b) the outage's records wait in the spool ($spooled records)" || bad "(b) spool has $spooled records"
pg_start || die "(b) PostgreSQL did not restart"
sleep 2
kill -TERM $pid
wait_exit $pid 60 && ok "(b) SIGTERM after the outage: exit 0" || bad "(b) the driver did not exit cleanly"
check_exact "(b) outage" "$url" outage "$(progress "$tmp/b.n")"
grep -q 'retrying' "$tmp/b.log" && ok "(b) the outage was logged" || bad "(b) no outage warning in the log"
[ -z "$(ls "$spool" | grep -E '\.(spool|lock)$')" ] && ok "(b) the spool is empty" || bad "(b) spool left: $(ls "$spool")"

# ---- (c) two writers ----
"$driver" --spool "$tmp/spool-c" --postgres "$url2" --prefix twoA --count 4000 --rate 4000 --flush-ms 20 2>"$tmp/c1.log" &
p1=$!; pids+=($p1)
"$driver" --spool "$tmp/spool-c" --postgres "$url2" --prefix twoB --count 4000 --rate 4000 --flush-ms 20 2>"$tmp/c2.log" &
p2=$!; pids+=($p2)
wait_exit $p1 60 && wait_exit $p2 60 && ok "(c) both writers exit 0" || bad "(c) a writer failed: $(cat "$tmp/c1.log" "$tmp/c2.log")"
check_exact "(c) writer A" "$url2" twoA 4000
check_exact "(c) writer B" "$url2" twoB 4000
v=$(PGPASSWORD=$pw "$pgbin/psql" -h 127.0.0.1 -p "$port" -U smolgate -qAtX -d twodb -c "SELECT COUNT(*) FROM schema_version")
[ "$v" = 5 ] && ok "(c) the schema was created once by two racing writers (migrations 1 to 5)" || bad "(c) schema_version rows: $v"
"$driver" --spool "$tmp/spool-c1" --postgres "$url2" --prefix dup --count 3000 --flush-ms 10 --batch 100 2>"$tmp/c3.log" &
p1=$!; pids+=($p1)
"$driver" --spool "$tmp/spool-c2" --postgres "$url2" --prefix dup --count 3000 --flush-ms 10 --batch 100 2>"$tmp/c4.log" &
p2=$!; pids+=($p2)
wait_exit $p1 60 && wait_exit $p2 60 || bad "(c) a duplicate writer failed"
check_exact "(c) the same 3000 ids from two writers" "$url2" dup 3000

# ---- (d) kill -9 ----
spool=$tmp/spool-d
"$driver" --spool "$spool" --postgres "$url" --prefix crash --rate 5000 --flush-ms 20 --batch 100 --progress "$tmp/d.n" 2>"$tmp/d.log" &
pid=$!; pids+=($pid)
sleep "1.$((RANDOM % 9))"
kill -9 $pid; wait $pid 2>/dev/null
n=$(progress "$tmp/d.n")
"$driver" --spool "$spool" --postgres "$url" --drain --close-ms 30000 2>"$tmp/d-drain.log" || bad "(d) the drain left files"
read -r count distinct min max attempts < <(verify "$url" crash)
if [ "$count" = "$distinct" ] && [ "$min" = 0 ] && [ "$max" = $((count - 1)) ] && { [ "$count" = "$n" ] || [ "$count" = $((n + 1)) ]; } && \
   [ "$attempts" = $((count + count / 2)) ]; then
  ok "(d) kill -9: $count records ($n appends had returned), none missing, none twice"
else
  bad "(d) kill -9: $n appended, database count=$count distinct=$distinct min=$min max=$max attempts=$attempts"
fi

# ---- (e) outage and kill -9 ----
spool=$tmp/spool-e
"$driver" --spool "$spool" --postgres "$url" --prefix both --rate 2000 --flush-ms 20 --progress "$tmp/e.n" 2>"$tmp/e.log" &
pid=$!; pids+=($pid)
sleep 0.5
pg_stop fast
sleep 1
kill -9 $pid; wait $pid 2>/dev/null
n=$(progress "$tmp/e.n")
pg_start || die "(e) PostgreSQL did not restart"
"$driver" --spool "$spool" --postgres "$url" --drain --close-ms 30000 2>"$tmp/e-drain.log" || bad "(e) the drain left files"
read -r count distinct min max attempts < <(verify "$url" both)
if [ "$count" = "$distinct" ] && [ "$min" = 0 ] && [ "$max" = $((count - 1)) ] && { [ "$count" = "$n" ] || [ "$count" = $((n + 1)) ]; }; then
  ok "(e) outage + kill -9: $count records ($n appends had returned), none missing, none twice"
else
  bad "(e) outage + kill -9: $n appended, database count=$count distinct=$distinct min=$min max=$max"
fi

# ---- (f) reading back, secrets ----
all=$(psql_q -d smolgate -c "SELECT COUNT(*) FROM requests")
json=$("$bin" usage --postgres "$url" --format json 2>&1)
echo "$json" | grep -q "\"total\":{\"requests\":$all," && ok "(f) smolgate usage --postgres: $all requests" || bad "(f) smolgate usage: $json"
table=$("$bin" usage --postgres "$url" --group-by key,day 2>&1)
echo "$table" | grep -q '^once ' && ok "(f) smolgate usage --group-by key,day" || bad "(f) table: $table"
wrong=$("$bin" usage --postgres "postgresql://smolgate:wrong-$pw@127.0.0.1:$port/smolgate" 2>&1)
if [ -n "$wrong" ] && ! echo "$wrong" | grep -q -- "$pw"; then ok "(f) a failed login says why without the password"; else bad "(f) $wrong"; fi
if grep -l -- "$pw" "$tmp"/*.log 2>/dev/null; then bad "(f) the password appears in a log"; else ok "(f) the password is in no log"; fi
if grep -q -i -E 'AddressSanitizer|runtime error' "$tmp"/*.log; then bad "sanitizer reports in the driver logs"; else ok "no sanitizer reports"; fi

# ---- (g) the dashboard's queries (rollup, spend, request list, trace) on PostgreSQL ----
dq=build-san/tests/test_dash_query
[ -x "$dq" ] || dq=build/tests/test_dash_query
psql_q -d postgres -c "CREATE DATABASE dashq" >/dev/null || die "createdb dashq"
if out=$(DASHQ_POSTGRES="postgresql://smolgate:$pw@127.0.0.1:$port/dashq" "$dq" 2>&1); then
  ok "(g) test_dash_query on PostgreSQL: $(printf '%s\n' "$out" | tail -1)"
else
  bad "(g) test_dash_query on PostgreSQL:"; printf '%s\n' "$out" | tail -20 | sed 's/^/    /'
fi
finish
