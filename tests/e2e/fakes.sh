#!/bin/bash
# fakes.sh: the official SDK client tests (tests/clients/*.test.mjs) in TARGET=fake mode,
# each pointed straight at the fake upstreams, plus the fakes' own wire-level checks
# (tests/fakes/*.test.mjs). Starts tests/fakes/upstream.mjs, waits for its ports line,
# runs `node --test`, stops the fake, and ends with "fakes.sh: N passed, N failed"
# (counted from the test runner's "# pass N" / "# fail N"). Every wait is bounded and the
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

# The SDKs come from tests/node (make test runs npm ci there when node_modules is absent;
# an older node_modules without the SDKs is brought up to date here).
for pkg in openai @anthropic-ai/sdk ai @ai-sdk/openai-compatible zod; do
  if [ ! -f "tests/node/node_modules/$pkg/package.json" ]; then
    echo "fakes.sh: $pkg missing from tests/node/node_modules: npm ci"
    (cd tests/node && timeout 300 npm ci --no-audit --no-fund --loglevel=error) || fail_early "npm ci in tests/node failed"
    break
  fi
done

node tests/fakes/upstream.mjs >"$tmp/ports" 2>"$tmp/fake.err" </dev/null &
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

FAKE_PORTS=$ports TARGET=fake timeout 600 node --test --test-reporter=tap --test-timeout=60000 \
  tests/clients/ tests/fakes/ >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"
if [ -s "$tmp/fake.err" ]; then echo "fakes.sh: the fake's stderr:"; sed 's/^/  /' "$tmp/fake.err"; fi

pass=$(grep -E '^# pass [0-9]+' "$tmp/out" | tail -1 | awk '{print $3}')
fail=$(grep -E '^# fail [0-9]+' "$tmp/out" | tail -1 | awk '{print $3}')
cancelled=$(grep -E '^# cancelled [0-9]+' "$tmp/out" | tail -1 | awk '{print $3}')
pass=${pass:-0} fail=${fail:-0} cancelled=${cancelled:-0}
fail=$((fail + cancelled))
[ "$rc" -eq 124 ] && echo "fakes.sh: the test run timed out"
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
echo "fakes.sh: $pass passed, $fail failed"
[ "$rc" -eq 0 ] && [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
