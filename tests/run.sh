#!/bin/bash
# Runs the whole test suite: every unit test binary built with ASan + UBSan
# (build-san/tests), then the end-to-end scripts in tests/e2e/ against build/smolgate
# (but tests/e2e/lib.sh, which they source).
# Prints one line per test file and ends with "N passed, N failed" (test files); checks
# that cannot run on this CPU are counted as skipped by the files and summed before it.
set -u
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0 failed=0 skipped=0 failures=()
run_one() {  # name, command...
  local name=$1; shift
  local out rc
  out=$("$@" 2>&1); rc=$?
  local line
  line=$(printf '%s\n' "$out" | grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed' | tail -1)
  if [ $rc -eq 0 ] && [ -n "$line" ]; then
    passed=$((passed + 1)); echo "ok   $line"
    local s
    s=$(printf '%s\n' "$line" | sed -n 's/.* \([0-9][0-9]*\) skipped.*/\1/p')
    skipped=$((skipped + ${s:-0}))
    printf '%s\n' "$out" | grep '^  skipped (' | sed 's/^/   /' 
  else
    failed=$((failed + 1)); failures+=("$name")
    echo "FAIL $name (exit $rc)"; printf '%s\n' "$out" | tail -40 | sed 's/^/     /'
  fi
}
only=${1:-}
for t in build-san/tests/test_*; do
  [ -x "$t" ] || continue
  [ -n "$only" ] && [[ $t != *$only* ]] && continue
  run_one "$(basename "$t")" "$t"
done
for t in tests/e2e/*.sh; do
  [ -f "$t" ] || continue
  [ "$t" = tests/e2e/lib.sh ] && continue   # sourced by the suites, not one itself
  [ -n "$only" ] && [[ $t != *$only* ]] && continue
  run_one "$(basename "$t")" bash "$t"
done
echo
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
[ $skipped -gt 0 ] && echo "checks skipped on this machine (each printed with its reason above): $skipped"
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
