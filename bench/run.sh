#!/bin/bash
# make bench: prints figures (no pass/fail). Engine: `smolgate bench` (prompt processing
# and generation tokens/s, mean ± sd over 3 runs, peak RSS, the machine's memory read
# bandwidth and the decode roofline, aggregate tokens/s of 1, 2, 4, 8 concurrent
# sequences) on random-weight models written by `smolgate make-model`: the SmolLM2-135M
# shape always; the full SmolLM3-3B shape when BENCH_3B=1, which writes ~10 GB of files
# to $BENCH_DIR. Types beyond F16 and Q8_0 come from `smolgate quantize` when it is
# there. Then the gateway harness (requests/s, and CPU per request per thread) and every
# bench/bench_* program.
# Side by side with llama.cpp: bench/vs-llamacpp.sh (not run here).
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

quantized() {  # name source.gguf type: prints the file, or nothing when it cannot be made
  local f=$dir/$1.gguf
  [ -s "$f" ] || $bin quantize "$2" "$f" "$3" >/dev/null 2>&1 || { rm -f "$f"; return; }
  echo "$f"
}

engine() {  # file, extra bench options...
  local f=$1; shift
  if [ -z "$f" ] || [ ! -s "$f" ]; then echo "(skipped: no file)"; return; fi
  $bin bench "$f" -t "$threads" "$@" 2>/dev/null || echo "(bench failed on $f)"
}

has_quantize() { ! $bin quantize --help 2>&1 | grep -q 'unknown command'; }

echo "== engine: smolgate bench ($threads threads)"
f16=$(model smollm2-135m-f16 smollm2-135m F16)
engine "$f16" -p 512 -n 128 -r 3
engine "$(model smollm2-135m-q8 smollm2-135m Q8_0)" -p 512 -n 128 -r 3
if has_quantize; then
  for t in Q4_K_M Q4_0; do engine "$(quantized "smollm2-135m-${t,,}" "$f16" "$t")" -p 512 -n 128 -r 3; done
fi
if [ "${BENCH_3B:-0}" = 1 ]; then
  f16=$(model smollm3-3b-f16 smollm3-3b F16)
  engine "$f16" -p 512 -n 64 -r 3 --conc-n 16
  engine "$(model smollm3-3b-q8 smollm3-3b Q8_0)" -p 512 -n 64 -r 3 --conc-n 16
  if has_quantize; then
    for t in Q4_K_M Q4_0; do engine "$(quantized "smollm3-3b-${t,,}" "$f16" "$t")" -p 512 -n 64 -r 3 --conc-n 16; done
  fi
fi
echo "== gateway overhead (../shared/bench/gateway harness)"
bench/gateway.sh
echo "== gateway CPU per request, per thread (ledger and request log on)"
bench/gateway_cpu.sh
for b in build/bench/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b"
done
