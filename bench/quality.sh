#!/bin/bash
# quality.sh: what each quantization type costs in quality, for smolgate's quantizer and,
# side by side, llama.cpp's llama-quantize on the same F16 weights. Not part of CI.
#
#   bench/quality.sh                  the tiny reference models (../shared/reference)
#   FULL=1 bench/quality.sh           also a random model of the full SmolLM3-3B shape
#                                     (FULL_F16=FILE.gguf reuses an F16 file of that shape)
#   LLAMA_BIN=DIR                     llama.cpp's build/bin (llama-quantize); without it only
#                                     smolgate's files are measured
#
# Every file is evaluated by smolgate itself on the same pseudo-random token windows
# (`smolgate perplexity --random`), so the columns differ only in the quantizer. KL is the
# mean KL divergence of each scored position's next-token distribution from the F16
# model's; ppl/F16 the perplexity ratio; top1 the share of positions whose most likely
# token is the F16 model's.
set -eu
cd "$(dirname "$0")/.."
bin=${SMOLGATE_BIN:-build/smolgate}
ref=${SHARED:-../shared}/reference
threads=${THREADS:-2}
lq=""
[ -n "${LLAMA_BIN:-}" ] && [ -x "$LLAMA_BIN/llama-quantize" ] && lq=$LLAMA_BIN/llama-quantize
tmp=$(mktemp -d /tmp/smolgate-quality-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
types="Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0"

# row FILE: "KL ± err|ppl ratio|top1" from a --kl-base --json result
row() {
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print("%.5f ± %.5f|%.4f|%.4f" % (d["kld"], d["kld_err"], d["ppl"] / d["base_ppl"], d["same_top"]))' "$1"
}

# same_tensors A B: "yes" when both files hold the same tensors (names, types, shapes and
# data), whatever the order of their metadata keys
same_tensors() {
    python3 - "$1" "$2" <<'PY'
import struct, sys
def tensors(path):
    d = open(path, 'rb').read()
    nt, nk = struct.unpack_from('<QQ', d, 8); p = 24
    def s(p):
        k = struct.unpack_from('<Q', d, p)[0]; return d[p + 8:p + 8 + k], p + 8 + k
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip(t, p):
        if t == 8: return s(p)[1]
        if t == 9:
            et, cnt = struct.unpack_from('<IQ', d, p); p += 12
            for _ in range(cnt): p = skip(et, p)
            return p
        return p + sizes[t]
    align = 32
    for _ in range(nk):
        k, p = s(p); t = struct.unpack_from('<I', d, p)[0]
        if k == b'general.alignment': align = struct.unpack_from('<I', d, p + 4)[0]
        p = skip(t, p + 4)
    info = []
    for _ in range(nt):
        n, p = s(p); nd = struct.unpack_from('<I', d, p)[0]; p += 4
        dims = struct.unpack_from('<%dQ' % nd, d, p); p += 8 * nd
        ty, off = struct.unpack_from('<IQ', d, p); p += 12
        info.append((n, dims, ty, off))
    base = (p + align - 1) // align * align
    offs = sorted(o for _, _, _, o in info) + [len(d) - base]
    out = {}
    for n, dims, ty, off in info:
        end = min(o for o in offs if o > off)
        out[n] = (dims, ty, d[base + off:base + end].rstrip(b'\0'))
    return out
print('yes' if tensors(sys.argv[1]) == tensors(sys.argv[2]) else 'no')
PY
}

# measure NAME F16_GGUF TOKENS CTX
measure() {
    local name=$1 f16=$2 n=$3 ctx=$4
    echo
    echo "## $name: $n random tokens, windows of $ctx, $threads threads"
    $bin perplexity "$f16" --random "$n" -c "$ctx" -t "$threads" --save-logits $tmp/base.bin \
        --json >$tmp/base.json 2>/dev/null
    echo "F16 perplexity: $(python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["ppl"])' $tmp/base.json)"
    echo
    echo "| type | KL smolgate | KL llama-quantize | ppl/F16 sg / lq | top1 sg / lq | same tensors |"
    echo "|---|---|---|---|---|---|"
    for t in $types; do
        $bin quantize "$f16" $tmp/sg.gguf $t -t "$threads" 2>/dev/null
        $bin perplexity $tmp/sg.gguf --kl-base $tmp/base.bin -t "$threads" --json >$tmp/sg.json 2>/dev/null
        local sg lq_row="-|-|-" same="-"
        sg=$(row $tmp/sg.json)
        if [ -n "$lq" ]; then
            "$lq" "$f16" $tmp/lq.gguf $t "$threads" >/dev/null 2>&1
            $bin perplexity $tmp/lq.gguf --kl-base $tmp/base.bin -t "$threads" --json >$tmp/lq.json 2>/dev/null
            lq_row=$(row $tmp/lq.json)
            same=$(same_tensors $tmp/sg.gguf $tmp/lq.gguf)
        fi
        IFS='|' read -r kl_sg r_sg top_sg <<<"$sg"
        IFS='|' read -r kl_lq r_lq top_lq <<<"$lq_row"
        echo "| $t | $kl_sg | $kl_lq | $r_sg / $r_lq | $top_sg / $top_lq | $same |"
        rm -f $tmp/sg.gguf $tmp/lq.gguf
    done
}

for m in smollm3-tiny llama-tiny; do
    $bin convert $ref/$m/f32 $tmp/$m-f16.gguf F16 2>/dev/null
    measure "$m (reference weights)" $tmp/$m-f16.gguf 8192 512
    rm -f $tmp/$m-f16.gguf
done
if [ "${FULL:-0}" = 1 ]; then
    f16=${FULL_F16:-}
    if [ -z "$f16" ]; then
        f16=$tmp/full-f16.gguf
        $bin make-model $f16 --preset smollm3-3b --type F16 --seed 1 2>/dev/null
    fi
    measure "SmolLM3-3B shape, random weights (seed 1)" "$f16" 1024 512
fi
