#!/bin/bash
# fuzz.sh: builds every libFuzzer target in tests/fuzz/fuzz_*.c with ASan + UBSan, seeds
# each with small valid inputs, runs it for a bounded time, and ends with
# "fuzz.sh: N passed, N failed" (one count per target). Exits non-zero if a target
# failed to build or found a crash, leak, timeout or sanitizer report.
#
# Each target is linked against an archive of every src/common/*.c and src/engine/*.c
# (the SIMD kernels included: they carry per-function target attributes), plus the
# gateway's event loop and HTTP server (which need nothing beyond src/common), the canonical
# chat helpers and embeddings codec, the Responses API's store (with its database layer,
# response_store_db.c and ledger_db.c), and the client APIs' request parsers (api*.c with
# the OpenAI and Anthropic codecs and chat.c), with -ljansson -lpcre2-8 -lsqlite3 -lpq -lm
# -lpthread, so a new target needs no change here: the linker
# takes the objects it uses. A source file that does not compile (someone's work in
# progress) is left out with a warning.
#
# Seeds: fuzz_gguf and fuzz_safetensors get files written by the writers (a generator
# below); any target may also keep seed files in tests/fuzz/seeds/<target>/.
#
# Environment: FUZZ_TIME (seconds per target, default 20), FUZZ_ONLY (run only targets
# whose name contains it), CLANG (default clang). On failure the work folder, with the
# crashing inputs, is kept and its path printed.
set -u
cd "$(dirname "$0")/../.."
TIME=${FUZZ_TIME:-20}
CLANG=${CLANG:-clang}
ONLY=${FUZZ_ONLY:-}

if ! command -v "$CLANG" >/dev/null; then
  echo "fuzz.sh: $CLANG not found; skipping (install clang for libFuzzer)"
  echo "fuzz.sh: 0 passed, 0 failed"
  exit 0
fi
work=$(mktemp -d /tmp/smolgate-fuzz-XXXXXX)
keep=0
trap '[ $keep -eq 1 ] || rm -rf "$work"' EXIT
mkdir -p "$work/obj" "$work/bin" "$work/corpus" "$work/artifacts"

CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -pthread -Isrc -Itests $(pkg-config --cflags jansson libpcre2-8 2>/dev/null) -I/usr/include/postgresql"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
LIBS="-ljansson -lpcre2-8 -lsqlite3 -lpq -lm -lpthread"

# The library, instrumented for coverage.
objs=()
for src in src/common/*.c src/engine/*.c src/gateway/loop.c src/gateway/http_server.c \
           src/gateway/chat.c src/gateway/codec_embed.c src/gateway/api*.c src/gateway/codec_openai.c \
           src/gateway/codec_anthropic.c src/gateway/response_store.c src/gateway/response_store_db.c \
           src/gateway/ledger_db.c src/gateway/request_id.c; do
  obj=$work/obj/$(echo "${src%.c}" | tr / _).o
  if "$CLANG" $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj" 2>"$work/cc.log"; then
    objs+=("$obj")
  else
    echo "fuzz.sh: warning: $src does not compile; left out of the fuzz library"
    head -5 "$work/cc.log" | sed 's/^/    /'
  fi
done
ar rcs "$work/libsmolgate-fuzz.a" "${objs[@]}"

# Seeds for the model-file readers, written by the writers themselves (plus, when the
# shared reference data is there, one GGUF carrying llama.cpp's real metadata).
cat > "$work/seedgen.c" <<'EOF'
#include "engine/gguf.h"
#include "engine/safetensors.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *out_dir;
static char *path(const char *dir, const char *name) {
    static char p[4096];
    snprintf(p, sizeof p, "%s/%s/%s", out_dir, dir, name);
    return p;
}
static void check(int rc, const sg_error *e) { if (rc) { fprintf(stderr, "seedgen: %s\n", e->msg); exit(1); } }

static void gguf_seed(const char *name, uint32_t align, int with_tensors, const char *ref) {
    gguf_writer *w = gguf_writer_new();
    sg_error e;
    gguf_file rf;
    int have_ref = ref && gguf_open(&rf, ref, &e) == 0;
    if (have_ref)   /* llama.cpp's real metadata, tokenizer arrays included */
        for (uint64_t i = 0; i < rf.n_kv; i++) {
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)rf.kv[i].key.n, rf.kv[i].key.p);
            gguf_set_value(w, key, &rf.kv[i].v);
        }
    if (align) gguf_set_u32(w, "general.alignment", align);
    gguf_set_str(w, "general.architecture", "smollm3");
    gguf_set_u32(w, "smollm3.block_count", 2);
    gguf_set_i32(w, "i32", -3);
    gguf_set_u64(w, "u64", 1ull << 40);
    gguf_set_f32(w, "smollm3.rope.freq_base", 5e6f);
    gguf_set_bool(w, "bool", 1);
    gguf_set_str(w, "empty", "");
    const char *toks[] = {"<|im_start|>", "a", "", "\xc4\xa0the"};
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    int32_t ti[] = {3, 1, 1, 1};
    gguf_set_arr_i32(w, "tokenizer.ggml.token_type", ti, 4);
    float sc[] = {0, -1.5f};
    gguf_set_arr_f32(w, "scores", sc, 2);
    gguf_set_arr_i32(w, "empty_arr", NULL, 0);
    unsigned char raw[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    const gguf_type el[] = {GGUF_U8, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_BOOL, GGUF_U64, GGUF_I64, GGUF_F64};
    for (size_t i = 0; i < sizeof el / sizeof el[0]; i++) {
        char key[32];
        snprintf(key, sizeof key, "arr.%s", gguf_type_name(el[i]));
        gguf_value v = {.type = GGUF_ARRAY, .arr = {.elem = el[i], .n = 2, .data = raw}};
        gguf_set_value(w, key, &v);
        snprintf(key, sizeof key, "val.%s", gguf_type_name(el[i]));
        gguf_value s = {.type = el[i], .u = 7};
        gguf_set_value(w, key, &s);
    }
    static unsigned char data[4096];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 31);
    if (with_tensors) {
        uint64_t a[2] = {3, 2}, b[2] = {32, 2}, c[2] = {256, 1}, d[1] = {5}, s4[4] = {2, 1, 2, 1};
        gguf_add_tensor(w, "token_embd.weight", SG_F32, 2, a, data, NULL, NULL);
        gguf_add_tensor(w, "blk.0.attn_q.weight", SG_Q8_0, 2, b, data, NULL, NULL);
        gguf_add_tensor(w, "blk.0.ffn_down.weight", SG_Q4_K, 2, c, data, NULL, NULL);
        gguf_add_tensor(w, "blk.0.attn_v.weight", SG_Q6_K, 2, c, data, NULL, NULL);
        gguf_add_tensor(w, "output_norm.weight", SG_BF16, 1, d, data, NULL, NULL);
        gguf_add_tensor(w, "four", SG_F16, 4, s4, data, NULL, NULL);
    }
    check(gguf_writer_write(w, path("fuzz_gguf", name), &e), &e);
    gguf_writer_free(w);
    if (have_ref) gguf_close(&rf);
}

static void st_seed(const char *name, const st_write_tensor *t, size_t n, int meta) {
    const char *m[] = {"format", "pt"};
    sg_error e;
    check(st_write_meta(path("fuzz_safetensors", name), t, n, m, meta ? 1 : 0, &e), &e);
}

int main(int argc, char **argv) {
    out_dir = argv[1];
    const char *ref = argc > 2 ? argv[2] : NULL;
    gguf_seed("small.gguf", 0, 1, NULL);
    gguf_seed("align64.gguf", 64, 1, NULL);
    gguf_seed("meta-only.gguf", 0, 0, NULL);
    if (ref) gguf_seed("llama-meta.gguf", 0, 1, ref);

    static unsigned char d[256];
    for (size_t i = 0; i < sizeof d; i++) d[i] = (unsigned char)i;
    st_write_tensor all[] = {
        {"model.embed_tokens.weight", SG_BF16, 2, {4, 3}, d}, {"model.norm.weight", SG_F32, 1, {3}, d},
        {"f16", SG_F16, 3, {1, 2, 3}, d}, {"f64", SG_F64, 1, {2}, d}, {"i8", SG_I8, 1, {3}, d},
        {"i16", SG_I16, 1, {2}, d}, {"i32", SG_I32, 1, {1}, d}, {"i64", SG_I64, 8, {1, 1, 1, 1, 1, 1, 1, 2}, d},
        {"scalar", SG_F32, 0, {0}, d}, {"empty", SG_F32, 2, {0, 4}, NULL},
    };
    st_seed("all.safetensors", all, sizeof all / sizeof all[0], 1);
    st_seed("plain.safetensors", all, 2, 0);
    st_seed("none.safetensors", NULL, 0, 0);
    return 0;
}
EOF
mkdir -p "$work/corpus/fuzz_gguf" "$work/corpus/fuzz_safetensors"
ref=tests/data/reference/llama-tiny/gguf/llama-tiny-Q4_K_M.gguf
[ -n "${SMOLGATE_SHARED:-}" ] && ref=$SMOLGATE_SHARED/reference/llama-tiny/gguf/llama-tiny-Q4_K_M.gguf
[ -f "$ref" ] || ref=
if "$CLANG" $CFLAGS "$work/seedgen.c" src/engine/gguf.c src/engine/safetensors.c src/engine/dtype.c \
     src/common/buf.c src/common/error.c src/common/mapfile.c -ljansson -o "$work/seedgen" 2>"$work/cc.log" &&
   "$work/seedgen" "$work/corpus" $ref; then
  :
else
  echo "fuzz.sh: warning: the seed generator failed; gguf/safetensors start from an empty corpus"
  head -5 "$work/cc.log" | sed 's/^/    /'
fi

passed=0 failed=0 failures=()
for src in tests/fuzz/fuzz_*.c; do
  [ -f "$src" ] || continue
  name=$(basename "$src" .c)
  [ -n "$ONLY" ] && [[ $name != *$ONLY* ]] && continue
  bin=$work/bin/$name
  if ! "$CLANG" $CFLAGS $SAN -fsanitize=fuzzer "$src" "$work/libsmolgate-fuzz.a" $LIBS -o "$bin" 2>"$work/cc.log"; then
    echo "FAIL $name: does not build"
    head -20 "$work/cc.log" | sed 's/^/    /'
    failed=$((failed + 1)); failures+=("$name"); continue
  fi
  corpus=$work/corpus/$name
  mkdir -p "$corpus"
  [ -d "tests/fuzz/seeds/$name" ] && cp -r "tests/fuzz/seeds/$name/." "$corpus/"
  log=$work/$name.log
  if "$bin" "$corpus" -max_total_time="$TIME" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
       -artifact_prefix="$work/artifacts/$name-" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
    echo "ok   $name (${runs:-?} runs in ${TIME}s, corpus $(ls "$corpus" | wc -l) inputs)"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -10 | sed 's/^/    /'
    tail -30 "$log" | sed 's/^/    /'
    failed=$((failed + 1)); failures+=("$name")
    keep=1
  fi
done
if [ $keep -eq 1 ]; then
  echo "fuzz.sh: crashing inputs and logs kept in $work/ (reproduce: $work/bin/TARGET $work/artifacts/FILE)"
fi
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "fuzz.sh: $passed passed, $failed failed"
[ $failed -eq 0 ]
