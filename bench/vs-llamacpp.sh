#!/bin/bash
# bench/vs-llamacpp.sh: smolgate and llama.cpp side by side on the same GGUF files, on
# this machine, now. Not run by CI or `make bench` (it needs a llama.cpp build; see
# ../shared/bench/engine/README.md for building one outside the repository).
#
#   LLAMA_CPP=/path/to/llama.cpp/build bench/vs-llamacpp.sh FILE.gguf...
#
# On a CPU with AMX, configure llama.cpp with -DCMAKE_C_FLAGS and -DCMAKE_CXX_FLAGS set to
# "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16": its AMX path crashes in these VMs.
#
# For each file, ROUNDS times: llama-bench then smolgate bench, alternating, each one
# repetition of pp (prompt processing, P tokens) and tg (generation, N tokens), so that
# both engines see the same neighbours on a shared machine. Prints each round's figures,
# then a table of the medians over the rounds (steadier than means when a neighbour
# disturbs one round) and the ratios smolgate / llama.cpp, with the decode roofline
# (measured read bandwidth / bytes of weights per token) and each engine's share of it.
#
# Environment: LLAMA_CPP (required: the build folder holding bin/llama-bench),
# THREADS (2), P (512), N (64), ROUNDS (3), SMOLGATE (build/smolgate),
# SG_OPTS (extra smolgate bench options, e.g. "--batch 128"), QUIET_WAIT (seconds, default
# 300: before each run, wait up to this long for the machine to be idle (other processes
# under 10% of the CPUs over a second); runs that started on a busy machine are marked
# "busy": both engines spin-wait between operations, and a neighbour on a core makes
# those waits, and the figures, erratic), LOCK (1: both engines lock the weights in
# memory, smolgate --mlock and llama-bench -lm mmap+mlock, so that a kernel that evicts
# idle page cache, as some VMs do, cannot make decode read from disk; 0: plain mmap).
set -u
cd "$(dirname "$0")/.."
: "${LLAMA_CPP:?set LLAMA_CPP to a llama.cpp build folder (with bin/llama-bench)}"
lb=$LLAMA_CPP/bin/llama-bench
[ -x "$lb" ] || lb=$LLAMA_CPP/llama-bench
[ -x "$lb" ] || { echo "no llama-bench under $LLAMA_CPP" >&2; exit 2; }
sg=${SMOLGATE:-build/smolgate}
threads=${THREADS:-2} p=${P:-512} n=${N:-64} rounds=${ROUNDS:-3}
[ $# -ge 1 ] || { echo "usage: LLAMA_CPP=DIR $0 FILE.gguf..." >&2; exit 2; }

# Idle share of the CPUs over one second, in percent.
idle_pct() {
  local a b
  read -r -a a < /proc/stat
  sleep 1
  read -r -a b < /proc/stat
  local busy=0 idle=0 i
  for i in 1 2 3 5 6 7 8; do busy=$((busy + b[i] - a[i])); done
  idle=$((b[4] - a[4]))
  echo $((100 * idle / (busy + idle + 1)))
}

# Waits for an idle machine; prints "busy" when QUIET_WAIT ran out first.
wait_quiet() {
  local waited=0 limit=${QUIET_WAIT:-300}
  while [ "$(idle_pct)" -lt 90 ]; do
    waited=$((waited + 1))
    [ $waited -ge "$limit" ] && { echo busy; return; }
  done
  echo idle
}

lock=${LOCK:-1}
if [ "$lock" = 1 ]; then
  ulimit -l unlimited 2>/dev/null
  lb_lock=(-lm mmap+mlock) sg_lock=--mlock
else
  lb_lock=() sg_lock=
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# llama-bench -o jsonl: one object per test; print "pp tg" tokens/s
llama_round() {
  "$lb" -m "$1" -t "$threads" -p "$p" -n "$n" -r 1 "${lb_lock[@]}" -o jsonl 2>/dev/null | python3 -c '
import json, sys
pp = tg = 0.0
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"): continue
    o = json.loads(line)
    if o.get("n_prompt", 0) > 0 and o.get("n_gen", 0) == 0: pp = o["avg_ts"]
    if o.get("n_gen", 0) > 0 and o.get("n_prompt", 0) == 0: tg = o["avg_ts"]
print(f"{pp:.3f} {tg:.3f}")'
}

smolgate_round() {
  # shellcheck disable=SC2086
  "$sg" bench "$1" -t "$threads" -p "$p" -n "$n" -r 1 --conc 0 --bw-mib 0 --json $sg_lock ${SG_OPTS:-} 2>/dev/null | python3 -c '
import json, sys
o = json.loads(sys.stdin.read())
print("%.3f %.3f %d" % (o["pp_tok_s"] or 0, o["tg_tok_s"] or 0, o["weight_bytes"]))'
}

echo "== bandwidth ($(wait_quiet))"
bw=$("$sg" bench "$1" -t "$threads" -p 0 -n 0 --conc 0 --bw-mib 2048 --json 2>/dev/null | python3 -c '
import json, sys; print(json.loads(sys.stdin.read())["bandwidth_gbs"])')
echo "memory read bandwidth: $bw GB/s ($threads threads)"

for f in "$@"; do
  echo "== $f"
  for r in $(seq "$rounds"); do
    ql=$(wait_quiet)
    l=$(llama_round "$f") || l="0 0"
    qs=$(wait_quiet)
    s=$(smolgate_round "$f") || s="0 0 0"
    echo "$l" >> "$tmp/$(basename "$f").llama"
    echo "$s" >> "$tmp/$(basename "$f").smolgate"
    printf 'round %d: llama.cpp pp%d %s tg%d %s (%s) | smolgate pp%d %s tg%d %s (%s)\n' "$r" \
      "$p" "${l% *}" "$n" "${l#* }" "$ql" "$p" "$(echo "$s" | cut -d' ' -f1)" "$n" "$(echo "$s" | cut -d' ' -f2)" "$qs"
  done
done

echo
echo "== tokens/s, median of $rounds alternating rounds, $threads threads (ratio: smolgate / llama.cpp)"
python3 - "$tmp" "$p" "$n" "$bw" "$@" <<'EOF'
import os, statistics, sys
tmp, p, n, bw = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
print(f"| file | size | llama.cpp pp{p} | smolgate pp{p} | ratio | llama.cpp tg{n} | smolgate tg{n} | ratio "
      f"| roofline | llama.cpp / smolgate % of it |")
print("|---|---|---|---|---|---|---|---|---|---|")
for f in sys.argv[5:]:
    b = os.path.basename(f)
    L = [list(map(float, l.split())) for l in open(f"{tmp}/{b}.llama") if l.strip()]
    S = [list(map(float, l.split())) for l in open(f"{tmp}/{b}.smolgate") if l.strip()]
    lpp, ltg = statistics.median(x[0] for x in L), statistics.median(x[1] for x in L)
    spp, stg = statistics.median(x[0] for x in S), statistics.median(x[1] for x in S)
    wb = S[0][2] if S and len(S[0]) > 2 else 0
    roof = bw * 1e9 / wb if wb else 0
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "-"
    size = os.path.getsize(f) / 1e9
    pct = lambda x: f"{100 * x / roof:.0f}%" if roof else "-"
    print(f"| {b} | {size:.2f} GB | {lpp:.1f} | {spp:.1f} | {ratio(spp, lpp)} | {ltg:.1f} | {stg:.1f} | {ratio(stg, ltg)} "
          f"| {roof:.1f} | {pct(ltg)} / {pct(stg)} |")
EOF
