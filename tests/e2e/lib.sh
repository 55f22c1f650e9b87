# tests/e2e/lib.sh: the start-up plumbing of the e2e scripts that run smolgate serve
# instances against Debian's PostgreSQL and the fake upstream (keys_shared.sh,
# responses_shared.sh, scaleout.sh; ledger_postgres.sh takes its PostgreSQL part).
# Sourced, not run (tests/run.sh passes it over); it holds no test of its own, so a
# suite's checks stay in the suite.
#
# The sourcing script, from the repository root, sets before it sources this file:
#   suite  its name for the last line, "$suite: N passed, N failed" (e.g. keys_shared.sh)
#   tmp    a fresh temporary folder (mktemp -d); it is made world-readable (PostgreSQL
#          runs as postgres when the suite runs as root) and removed on exit
# and may define cleanup_more, called on exit after the gateways and the fake upstream
# are stopped and before PostgreSQL is, to stop what the suite started itself.
#
# It sets: bin (SMOLGATE_BIN, default build/smolgate), pass fail (0), pgbin (the newest
# /usr/lib/postgresql/*/bin, empty when none), pgdata pglog sock (under $tmp), pw (a
# random database password), port (PostgreSQL's, set by pg_setup), gw_pids gw_ports (two
# instances, empty), fake_pid; and the EXIT / INT / TERM traps.
#
# It provides:
#   ok MSG / bad MSG         count a check and print "ok - MSG" / "not ok - MSG"
#   finish                   print the last line, exit 0 only with passes and no failure
#   die MSG                  bad MSG, the instances' and PostgreSQL's log tails, finish
#   free_port                a loopback port nobody listens on now
#   stop_pid PID             SIGTERM, 5 s, then SIGKILL (empty or gone: nothing)
#   bin_copy                 check $bin, run a copy of it from $tmp (a concurrent rebuild
#                            cannot swap it under the test), print "$suite: testing $bin"
#   as_pg CMD...             CMD as the postgres user when root, else as is
#   pg_start / pg_stop [MODE]   pg_ctl start on $port / stop (MODE default fast)
#   pg_setup                 initdb with password authentication, start on a free port,
#                            CREATE DATABASE smolgate; sets port, pg_url (it holds $pw)
#   fake_start               tests/fakes/upstream.mjs; sets fake_pid, ports (its JSON
#                            ports line) and oa (its OpenAI-compatible port)
#   start_gw I CFG [PORT]    smolgate serve CFG as instance I (0 or 1) on PORT (default a
#                            free one, another if it is taken before the bind), its output
#                            appended to $tmp/gwI.log; dies unless /readyz answers 200
#                            within about 15 s
#   stop_gws [LABEL]         SIGTERM both instances: a check each that it exits 0
#   no_crash_in_logs         a check: no sanitizer report or crash in $tmp/gw*.log

bin=${SMOLGATE_BIN:-build/smolgate}
chmod 755 "$tmp"
pass=0 fail=0
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
pgdata=$tmp/pgdata pglog=$tmp/pglog/postgres.log sock=$tmp/sock
pw="pg-secret-$RANDOM$RANDOM"
port= fake_pid= gw_pids=("" "") gw_ports=("" "")

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_stop() { [ -d "$pgdata" ] && as_pg "$pgbin/pg_ctl" -D "$pgdata" stop -m "${1:-fast}" -w -t 30 >/dev/null 2>&1; }
pg_start() {
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$pglog" -w -t 30 start \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$sock" >/dev/null 2>&1
}
stop_pid() {  # pid: SIGTERM, 5 s, then SIGKILL
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
}
cleanup() {
  stop_pid "${gw_pids[0]}"
  stop_pid "${gw_pids[1]}"
  stop_pid "$fake_pid"
  if declare -F cleanup_more >/dev/null; then cleanup_more; fi
  pg_stop immediate
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok()  { pass=$((pass + 1)); echo "ok - $*"; }
bad() { fail=$((fail + 1)); echo "not ok - $*"; }
finish() { echo "$suite: $pass passed, $fail failed"; [ $fail -eq 0 ] && [ $pass -gt 0 ]; exit $?; }
die() {
  bad "$*"
  for i in 0 1; do [ -s "$tmp/gw$i.log" ] && { echo "  instance $i log (last 30 lines):"; tail -30 "$tmp/gw$i.log" | sed 's/^/  /'; }; done
  [ -s "$pglog" ] && tail -20 "$pglog" | sed 's/^/  pg: /'
  finish
}
free_port() {  # a loopback port nobody listens on now
  local p
  for _ in $(seq 20); do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}

bin_copy() {
  [ -x "$bin" ] || die "$bin is missing: run make $bin"
  cp "$bin" "$tmp/smolgate" || die "cannot copy $bin"
  echo "$suite: testing $bin"
  bin=$tmp/smolgate
}

pg_setup() {
  mkdir -p "$pgdata" "$sock" "$tmp/pglog"
  printf '%s\n' "$pw" >"$tmp/pwfile"
  [ "$(id -u)" = 0 ] && chown postgres "$pgdata" "$sock" "$tmp/pglog" "$tmp/pwfile"
  as_pg "$pgbin/initdb" -D "$pgdata" -U smolgate --pwfile="$tmp/pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-locale -N >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log"; die "initdb"; }
  local started=
  for _ in 1 2 3 4 5; do   # the port can be taken between free_port and the start
    port=$(free_port) || continue
    pg_start && { started=1; break; }
  done
  [ -n "$started" ] || die "PostgreSQL did not start"
  PGPASSWORD=$pw "$pgbin/psql" -h 127.0.0.1 -p "$port" -U smolgate -qAtX -d postgres -c "CREATE DATABASE smolgate" >/dev/null || die "createdb"
  pg_url="postgresql://smolgate:$pw@127.0.0.1:$port/smolgate"
}

fake_start() {
  node tests/fakes/upstream.mjs >"$tmp/ports" 2>"$tmp/fake.err" </dev/null &
  fake_pid=$!
  ports=
  for _ in $(seq 100); do
    ports=$(head -n 1 "$tmp/ports" 2>/dev/null)
    [ -n "$ports" ] && [[ $ports == *'}' ]] && break
    kill -0 "$fake_pid" 2>/dev/null || break
    ports= ; sleep 0.1
  done
  [ -n "$ports" ] || { cat "$tmp/fake.err"; die "the fake upstream did not print its ports line"; }
  oa=$(node -e 'console.log(JSON.parse(process.argv[1]).openai)' "$ports")
}

start_gw() {  # instance config [port]
  local i=$1 cfg=$2 code try at
  # a port free_port found can be taken before the gateway binds it: another one then,
  # unless the caller named the port (a restart on the same address)
  for try in 1 2 3; do
    gw_ports[$i]=${3:-$(free_port)} || die "no free port"
    at=$(stat -c %s "$tmp/gw$i.log" 2>/dev/null || echo 0)
    "$bin" serve --config "$cfg" --listen "127.0.0.1:${gw_ports[$i]}" >>"$tmp/gw$i.log" 2>&1 </dev/null &
    gw_pids[$i]=$!
    for _ in $(seq 150); do
      code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:${gw_ports[$i]}/readyz")
      [ "$code" = 200 ] && return 0
      kill -0 "${gw_pids[$i]}" 2>/dev/null || break
      sleep 0.1
    done
    [ -z "${3:-}" ] && ! kill -0 "${gw_pids[$i]}" 2>/dev/null &&
      tail -c +$((at + 1)) "$tmp/gw$i.log" | grep -q 'Address already in use' || break
    echo "# instance $i: port ${gw_ports[$i]} was taken before it could bind; another port (try $try)"
  done
  die "instance $i did not become ready"
}
stop_gws() {  # [label]: SIGTERM both, exit 0
  local label=${1:+$1: } rc
  for i in 0 1; do
    kill -TERM "${gw_pids[$i]}" 2>/dev/null
    rc=
    for _ in $(seq 150); do
      if ! kill -0 "${gw_pids[$i]}" 2>/dev/null; then wait "${gw_pids[$i]}"; rc=$?; break; fi
      sleep 0.1
    done
    [ "$rc" = 0 ] && ok "${label}instance $i: SIGTERM, exit 0" || bad "${label}instance $i: exit status ${rc:-none after 15 s}"
    [ -n "$rc" ] && gw_pids[$i]=
  done
}

no_crash_in_logs() {
  local crash_re='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:|Segmentation fault|Assertion .* failed|double free'
  if grep -Eq "$crash_re" "$tmp"/gw*.log; then bad "a sanitizer report or crash in a gateway log"; grep -E -m5 "$crash_re" "$tmp"/gw*.log
  else ok "no sanitizer report or crash in the gateway logs"; fi
}
