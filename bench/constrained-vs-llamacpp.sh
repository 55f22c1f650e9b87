#!/bin/bash
# bench/constrained-vs-llamacpp.sh: constrained decoding, smolgate and llama.cpp side by
# side on one GGUF file, on this machine, now. Not run by CI or `make bench` (it needs a
# llama.cpp build with the llama-completion target).
#
#   LLAMA_CPP=/path/to/llama.cpp/build bench/constrained-vs-llamacpp.sh FILE.gguf
#
# Each round, one after another so that both engines see the same neighbours:
#   - smolgate bench --grammar (one repetition): N tokens at temperature 1 unconstrained,
#     under the nested object schema of `smolgate bench --grammar` (src/cli/cmd_bench.c,
#     bench_schema; the same text is written below) and under a forced call among 20 tools;
#   - llama-completion, N tokens at temperature 1, unconstrained (--ignore-eos);
#   - llama-completion --json-schema with the same schema;
#   - llama-completion --json-schema with the 20 tools as one schema (anyOf of {"name":
#     const, "arguments": the tool's parameters}), the nearest llama.cpp has to a forced
#     call on the command line (without SmolLM3's <tool_call> wrapper).
# llama.cpp's generation tokens/s are its generated tokens over (eval time + sampling
# time) from its performance print: its sampling time holds the grammar's cost, as
# smolgate's generation time holds the mask's. A constrained run ends when the grammar is
# complete, so it may generate fewer than N tokens (tokens/s are of what it generated).
# Prints each round, then the medians and each engine's constrained / unconstrained ratio.
#
# Environment: LLAMA_CPP (required: the build folder holding bin/llama-completion),
# THREADS (2), N (64), ROUNDS (3), SMOLGATE (build/smolgate), LOCK (1: both engines lock
# the weights in memory, smolgate --mlock and llama.cpp -lm mmap+mlock; 0: plain mmap).
set -u
cd "$(dirname "$0")/.."
: "${LLAMA_CPP:?set LLAMA_CPP to a llama.cpp build folder (with bin/llama-completion)}"
lc=$LLAMA_CPP/bin/llama-completion
[ -x "$lc" ] || { echo "no llama-completion under $LLAMA_CPP/bin (cmake --build DIR --target llama-completion)" >&2; exit 2; }
sg=${SMOLGATE:-build/smolgate}
threads=${THREADS:-2} n=${N:-64} rounds=${ROUNDS:-3}
[ $# -eq 1 ] || { echo "usage: LLAMA_CPP=DIR $0 FILE.gguf" >&2; exit 2; }
f=$1

if [ "${LOCK:-1}" = 1 ]; then
  ulimit -l unlimited 2>/dev/null
  lc_lock=(-lm mmap+mlock) sg_lock=--mlock
else
  lc_lock=() sg_lock=
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/schema.json" <<'EOF'
{"type":"object","properties":{"name":{"type":"string","maxLength":24},"age":{"type":"integer"},"role":{"enum":["admin","user","guest"]},"address":{"type":"object","properties":{"street":{"type":"string"},"city":{"type":"string"},"zip":{"type":"string","pattern":"^[0-9]{5}$"}},"required":["street","city","zip"],"additionalProperties":false},"tags":{"type":"array","items":{"type":"string","maxLength":12},"maxItems":5},"scores":{"type":"array","items":{"type":"number"}},"active":{"type":"boolean"},"note":{"type":["string","null"]}},"required":["name","age","role","address","tags","scores","active"],"additionalProperties":false}
EOF
# the 20 tools of smolgate bench --grammar (cmd_bench.c, bench_tools_request) as one schema
python3 - "$tmp/tools.json" <<'EOF'
import json, sys
kinds = ["string", "integer", "number", "boolean"]
alts = []
for i in range(20):
    props, req = {}, []
    for k in range(2 + i % 3):
        props[f"arg{k}"] = {"enum": ["low", "mid", "high"]} if k == 3 else {"type": kinds[(i + k) % 4]}
        req.append(f"arg{k}")
    alts.append({"type": "object", "properties": {
        "name": {"const": f"tool_{i:02d}_action"},
        "arguments": {"type": "object", "properties": props, "required": req, "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False})
json.dump({"anyOf": alts}, open(sys.argv[1], "w"))
EOF

prompt="Describe a person, as JSON."

smolgate_round() {
  "$sg" bench "$f" -t "$threads" -p 0 -n "$n" -r 1 --conc 0 --bw-mib 0 --grammar --json $sg_lock 2>/dev/null | python3 -c '
import json, sys
g = json.loads(sys.stdin.read())["grammar"]
print("%.3f %.3f %.3f" % (g["unconstrained_tok_s"], g["schema_tok_s"], g["tools20_tok_s"]))'
}

# llama-completion [extra args]: "tok/s generated" from its performance print
llama_run() {
  "$lc" -m "$f" -t "$threads" -c 512 -n "$n" --temp 1 --top-p 1 --top-k 0 --min-p 0 -s "$RANDOM" -no-cnv \
    --no-display-prompt "${lc_lock[@]}" -p "$prompt" "$@" </dev/null >"$tmp/lc.out" 2>"$tmp/lc.err"
  python3 - "$tmp/lc.err" <<'EOF'
import re, sys
t = open(sys.argv[1], errors="replace").read()
s = re.search(r"sampling time =\s*([0-9.]+) ms", t)
e = re.search(r"\beval time =\s*([0-9.]+) ms /\s*([0-9]+) runs", t)
if not (s and e) or int(e.group(2)) == 0:
    sys.stderr.write("llama-completion printed no timings:\n" + t[-2000:])
    print("0 0")
else:
    print("%.3f %d" % (int(e.group(2)) * 1000.0 / (float(e.group(1)) + float(s.group(1))), int(e.group(2))))
EOF
}

for r in $(seq "$rounds"); do
  s=$(smolgate_round) || s="0 0 0"
  lf=$(llama_run --ignore-eos) || lf="0 0"
  ls=$(llama_run --json-schema "$(cat "$tmp/schema.json")") || ls="0 0"
  lt=$(llama_run --json-schema "$(cat "$tmp/tools.json")") || lt="0 0"
  echo "$s ${lf% *} ${ls% *} ${lt% *}" >>"$tmp/rounds"
  printf 'round %d: smolgate free/schema/tools %s | llama.cpp free %s, schema %s (%s tokens), tools %s (%s tokens)\n' \
    "$r" "$s" "${lf% *}" "${ls% *}" "${ls#* }" "${lt% *}" "${lt#* }"
done

echo
echo "== $(basename "$f"): generation tokens/s, median of $rounds rounds, $threads threads"
python3 - "$tmp/rounds" <<'EOF'
import statistics, sys
R = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = [statistics.median(x[i] for x in R) for i in range(6)]
rng = lambda a, b: "%.2f-%.2f" % (min(x[a] / x[b] for x in R if x[b]), max(x[a] / x[b] for x in R if x[b]))
print("| engine | unconstrained | nested schema | ratio (per round) | 20-tool call | ratio (per round) |")
print("|---|---|---|---|---|---|")
print(f"| smolgate | {med[0]:.2f} | {med[1]:.2f} | {med[1] / med[0]:.2f} ({rng(1, 0)}) | {med[2]:.2f} | {med[2] / med[0]:.2f} ({rng(2, 0)}) |")
print(f"| llama.cpp | {med[3]:.2f} | {med[4]:.2f} | {med[4] / med[3]:.2f} ({rng(4, 3)}) | {med[5]:.2f} | {med[5] / med[3]:.2f} ({rng(5, 3)}) |")
EOF
