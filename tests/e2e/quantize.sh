#!/bin/bash
# quantize.sh: `smolgate quantize` end to end with build/smolgate: a random model made by
# make-model (GGUF and Hugging Face folder) quantized to every type loads and generates;
# the file does not depend on the thread count; a GGUF input keeps its keys; the file
# type is llama.cpp's number; bad arguments get an error and exit 2.
set -u
cd "$(dirname "$0")/../.."
bin=${SMOLGATE_BIN:-build/smolgate}
tmp=$(mktemp -d /tmp/smolgate-quantize-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }

# hidden 256 and FFN 512: whole 256-blocks everywhere, so the k-quants apply as is
$bin make-model $tmp/m.gguf --preset smollm3-tiny --type F16 --seed 5 2>/dev/null
$bin make-model $tmp/hf --preset smollm3-tiny --type BF16 --seed 5 2>/dev/null
check "make-model" [ -s $tmp/m.gguf ]
for t in Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K; do
  $bin quantize $tmp/m.gguf $tmp/m-$t.gguf $t -t 2 2>$tmp/err
  check "quantize GGUF $t" [ $? -eq 0 ]
  got=$($bin run $tmp/m-$t.gguf --ids 1,2,3 -n 4 --temp 0 --ignore-eos --print-ids -q 2>/dev/null)
  check "$t runs" [ "$(echo "$got" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" = 4 ]
  $bin quantize $tmp/hf $tmp/hf-$t.gguf $t 2>/dev/null
  check "quantize HF $t" [ -s $tmp/hf-$t.gguf ]
done
$bin quantize $tmp/m.gguf $tmp/m1.gguf Q4_K_M -t 1 2>/dev/null
check "same bytes with 1 and 2 threads" cmp -s $tmp/m1.gguf $tmp/m-Q4_K_M.gguf

# general.file_type as llama.cpp numbers it; the input's keys carried over
python3 - $tmp <<'PY'
import struct, sys
def kv(path):
    d = open(path, 'rb').read(); p = 24; out = {}
    n = struct.unpack_from('<Q', d, 16)[0]
    def s(p):
        k = struct.unpack_from('<Q', d, p)[0]; return d[p + 8:p + 8 + k].decode(), p + 8 + k
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def val(t, p):
        if t == 8: return s(p)
        if t == 9:
            et, cnt = struct.unpack_from('<IQ', d, p); p += 12; vs = []
            for _ in range(cnt): v, p = val(et, p); vs.append(v)
            return vs, p
        return d[p:p + sizes[t]], p + sizes[t]
    for _ in range(n):
        k, p = s(p); t = struct.unpack_from('<I', d, p)[0]; v, p = val(t, p + 4); out[k] = v
    return out
tmp = sys.argv[1]
src = kv(f'{tmp}/m.gguf')
want = {'Q8_0': 7, 'Q4_0': 2, 'Q4_K_M': 15, 'Q5_K_M': 17, 'Q6_K': 18}
for t, ft in want.items():
    q = kv(f'{tmp}/m-{t}.gguf')
    assert struct.unpack('<I', q['general.file_type'])[0] == ft, t
    assert struct.unpack('<I', q['general.quantization_version'])[0] == 2, t
    missing = [k for k in src if k not in q]
    assert not missing, missing
    assert q['tokenizer.ggml.tokens'] == src['tokenizer.ggml.tokens']
PY
check "file types and carried keys" [ $? -eq 0 ]

# errors: unknown type, missing input, wrong arguments
$bin quantize $tmp/m.gguf $tmp/x.gguf Q3_K_S 2>$tmp/err
check "unknown type exits 2" [ $? -eq 2 ]
check "unknown type message" grep -q "Q3_K_S" $tmp/err
$bin quantize $tmp/none.gguf $tmp/x.gguf Q4_0 2>$tmp/err
check "missing input exits 1" [ $? -eq 1 ]
check "no output left behind" [ ! -e $tmp/x.gguf ]
$bin quantize $tmp/m.gguf 2>/dev/null
check "missing arguments exit 2" [ $? -eq 2 ]

echo "quantize.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
