#!/bin/bash
# make bench: prints figures (no pass/fail). Engine: prompt and generation tokens/s of
# random-weight models written by `smolgate make-model` (the SmolLM2-135M shape always;
# the full SmolLM3-3B shape when BENCH_3B=1, which writes ~10 GB of files to $BENCH_DIR).
# Then every bench/bench_* program.
set -u
cd "$(dirname "$0")/.."
bin=build/smolgate
dir=${BENCH_DIR:-/tmp/smolgate-bench}
threads=${BENCH_THREADS:-2}
mkdir -p "$dir"

model() {  # name preset type
  local f=$dir/$1.gguf
  [ -s "$f" ] || $bin make-model "$f" --preset "$2" --type "$3" 2>/dev/null
  echo "$f"
}

engine() {  # label file
  local out
  out=$($bin run "$2" --ids "$(seq -s, 1 128)" -n 64 --temp 0 --ignore-eos --print-ids -t "$threads" -c 512 2>&1 >/dev/null | grep prompt)
  printf '%-24s %s\n' "$1" "$out"
}

echo "== engine ($threads threads; prompt 128 tokens, generation 64 tokens)"
engine "smollm2-135m F16" "$(model smollm2-135m-f16 smollm2-135m F16)"
engine "smollm2-135m Q8_0" "$(model smollm2-135m-q8 smollm2-135m Q8_0)"
if [ "${BENCH_3B:-0}" = 1 ]; then
  engine "smollm3-3b F16" "$(model smollm3-3b-f16 smollm3-3b F16)"
  engine "smollm3-3b Q8_0" "$(model smollm3-3b-q8 smollm3-3b Q8_0)"
fi
echo "== gateway overhead (../shared/bench/gateway harness)"
bench/gateway.sh
for b in build/bench/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b"
done
