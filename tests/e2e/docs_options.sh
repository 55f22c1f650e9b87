#!/bin/bash
# docs_options.sh: the docs carry every command's `smolgate CMD --help` verbatim (the
# options and their defaults: run, chat, eval and the engine's other commands in
# docs/engine.md, serve and usage in docs/gateway.md), so the documented defaults cannot
# drift from the program's; `--help` exits 0. The last line is
# "docs_options.sh: N passed, N failed"; exit status non-zero on any failure.
set -u
cd "$(dirname "$0")/../.."
bin=${SMOLGATE_BIN:-build/smolgate}
tmp=$(mktemp -d /tmp/smolgate-docs-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
[ -x "$bin" ] || { echo "docs_options.sh: $bin is missing: run make $bin"; echo "docs_options.sh: 0 passed, 1 failed"; exit 1; }
for cmd in run chat eval info tokenize convert make-model quantize perplexity bench pull list rm serve usage; do
  "$bin" $cmd --help >"$tmp/$cmd.help" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then fail=$((fail + 1)); echo "not ok - smolgate $cmd --help exits $rc"; fi
  # the fenced block that starts with "$ smolgate CMD --help", in whichever doc has it
  cat docs/*.md | awk -v want="\$ smolgate $cmd --help" '
    $0 == want { on = 1; next }
    on && /^```/ { exit }
    on { print }' >"$tmp/$cmd.doc"
  if [ -s "$tmp/$cmd.doc" ] && diff -u "$tmp/$cmd.doc" "$tmp/$cmd.help" >"$tmp/$cmd.diff"; then
    pass=$((pass + 1)); echo "ok - the docs have smolgate $cmd --help as the program prints it"
  else
    fail=$((fail + 1)); echo "not ok - the docs differ from smolgate $cmd --help (- docs, + program; none: missing):"
    sed 's/^/  /' "$tmp/$cmd.diff"
  fi
  # -n's default is the one place run and chat differ: both must be stated
  [ $cmd != run ] && [ $cmd != chat ] && continue
  grep -qE '^  -n, --max-tokens N .*\(default [0-9]+\)$' "$tmp/$cmd.help" ||
    { fail=$((fail + 1)); echo "not ok - $cmd --help states no -n default"; }
done
echo "docs_options.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
