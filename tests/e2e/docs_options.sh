#!/bin/bash
# docs_options.sh: docs/engine.md carries `smolgate run|chat|eval --help` verbatim (the
# options and their defaults), and every option the help lists is documented there: the
# documented defaults cannot drift from the program's. The last line is
# "docs_options.sh: N passed, N failed"; exit status non-zero on any failure.
set -u
cd "$(dirname "$0")/../.."
bin=${SMOLGATE_BIN:-build/smolgate}
tmp=$(mktemp -d /tmp/smolgate-docs-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
[ -x "$bin" ] || { echo "docs_options.sh: $bin is missing: run make $bin"; echo "docs_options.sh: 0 passed, 1 failed"; exit 1; }
for cmd in run chat eval; do
  "$bin" $cmd --help >"$tmp/$cmd.help" 2>&1
  # the fenced block that starts with "$ smolgate CMD --help"
  awk -v want="\$ smolgate $cmd --help" '
    $0 == want { on = 1; next }
    on && /^```/ { exit }
    on { print }' docs/engine.md >"$tmp/$cmd.doc"
  if [ -s "$tmp/$cmd.doc" ] && diff -u "$tmp/$cmd.doc" "$tmp/$cmd.help" >"$tmp/$cmd.diff"; then
    pass=$((pass + 1)); echo "ok - docs/engine.md has smolgate $cmd --help as the program prints it"
  else
    fail=$((fail + 1)); echo "not ok - docs/engine.md differs from smolgate $cmd --help (- docs, + program):"
    sed 's/^/  /' "$tmp/$cmd.diff"
  fi
  # -n's default is the one place run and chat differ: both must be stated
  grep -qE '^  -n, --max-tokens N .*\(default [0-9]+\)$' "$tmp/$cmd.help" || [ $cmd = eval ] ||
    { fail=$((fail + 1)); echo "not ok - $cmd --help states no -n default"; }
done
echo "docs_options.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
