/* fuzz_tokenizer_json.c: libFuzzer target for the tokenizer's loader and encoder. Run by
 * tests/e2e/fuzz.sh (FUZZ_ONLY=tokenizer tests/e2e/fuzz.sh for this one alone).
 *
 * Each input is used three ways, since random bytes rarely parse as a tokenizer.json:
 *  1. as a tokenizer.json: it loads or fails with a message, never crashes;
 *  2. as a tokenizer_config.json beside a small valid tokenizer;
 *  3. as the pieces of a small valid byte-level tokenizer, "FLAGS PATTERN\nADDED\nTEXT":
 *     the split pattern and an added token come from the input, and TEXT is encoded.
 *     Every byte has a token there, so the ids must decode to TEXT exactly.
 * Whatever loads encodes both ways; ids must be in range, and the stream decoder's output
 * must be valid UTF-8. */
#include "engine/tokenizer.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool utf8_valid(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t need = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!need || i + need > n) return false;
        unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        for (size_t k = 1; k < need; k++) {
            if (p[i + k] < lo || p[i + k] > hi) return false;
            lo = 0x80; hi = 0xBF;
        }
        i += need;
    }
    return true;
}

static void exercise(const sg_tokenizer *t, const char *text, size_t n, bool must_round_trip) {
    size_t nv = tok_n_vocab(t);
    for (int ps = 0; ps < 2; ps++) {
        sg_ids ids = {0};
        sg_error err;
        err.msg[0] = 0;
        if (tok_encode(t, text, n, ps, &ids, &err) != 0) {
            if (!err.msg[0] || ids.n) abort();        /* failures explain themselves, out untouched */
            sg_ids_free(&ids);
            continue;
        }
        for (size_t i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || (size_t)ids.ids[i] >= nv) abort();
        sg_buf b;
        sg_buf_init(&b);
        tok_decode(t, ids.ids, ids.n, false, &b);
        if (must_round_trip && (b.len != n || (n && memcmp(b.data, text, n) != 0))) abort();
        sg_buf_reset(&b);
        tok_decode(t, ids.ids, ids.n, true, &b);
        sg_buf_reset(&b);
        tok_stream st;
        tok_stream_init(&st);
        for (size_t i = 0; i < ids.n; i++) tok_stream_push(t, &st, ids.ids[i], ps, &b);
        tok_stream_flush(&st, &b);
        if (!utf8_valid((const unsigned char *)(b.data ? b.data : ""), b.len)) abort();
        sg_buf_free(&b);
        sg_ids_free(&ids);
    }
    for (int32_t id = -1; id < 4; id++) {
        size_t len;
        tok_piece(t, id, &len);
        tok_is_special(t, id);
    }
    tok_find(t, "<|x|>");
    tok_bos(t);
    tok_eos(t);
    tok_chat_template(t);
}

/* The GPT-2 byte-level character of byte b. */
static void byte_char(unsigned b, char out[4]) {
    unsigned cp;
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE)) cp = b;
    else cp = 0x100 + (b <= 0x20 ? b : b < 0xAD ? 33 + (b - 0x7F) : 67);
    if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); out[2] = 0; }
}

/* A byte-level tokenizer: 256 byte tokens, a few merges, the given pre-tokenizer. */
static json_t *template(json_t *pre, bool ignore_merges, json_t *added) {
    static const char *const merges[][2] = {
        {"\xC4\xA0", "t"}, {"h", "e"}, {"\xC4\xA0t", "he"}, {"i", "n"}, {"e", "r"}, {"a", "n"},
        {"\xC4\xA0", "\xC4\xA0"}, {"\xC4\xA0\xC4\xA0", "\xC4\xA0\xC4\xA0"}, {"1", "2"}, {"\xC4\x8A", "\xC4\x8A"},
        {"<", "|"}, {"|", ">"}};
    json_t *vocab = json_object(), *ml = json_array();
    for (unsigned b = 0; b < 256; b++) {
        char c[4];
        byte_char(b, c);
        json_object_set_new(vocab, c, json_integer(b));
    }
    for (size_t i = 0; i < sizeof merges / sizeof *merges; i++) {
        char m[32], r[32];
        snprintf(m, sizeof m, "%s %s", merges[i][0], merges[i][1]);
        snprintf(r, sizeof r, "%s%s", merges[i][0], merges[i][1]);
        json_object_set_new(vocab, r, json_integer(256 + (json_int_t)i));
        json_array_append_new(ml, json_string(m));
    }
    return json_pack("{s:o, s:o, s:{s:s, s:b, s:o, s:o}}", "pre_tokenizer", pre, "added_tokens", added,
                     "model", "type", "BPE", "ignore_merges", ignore_merges, "vocab", vocab, "merges", ml);
}

static sg_tokenizer *load(json_t *j, const char *cfg, size_t cfg_len) {
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) return NULL;
    sg_error err;
    err.msg[0] = 0;
    sg_tokenizer *t = tok_load_json_mem(s, strlen(s), cfg, cfg_len, &err);
    free(s);
    if (!t && !err.msg[0]) abort();
    return t;
}

static const char SAMPLE[] = "The <|x|> quick 12345 brown\n\n fox's  \xE4\xBD\xA0\xE5\xA5\xBD \xFF\xC3 end";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    sg_error err;

    /* 1. The input as tokenizer.json. */
    err.msg[0] = 0;
    sg_tokenizer *t = tok_load_json_mem(in, size, NULL, 0, &err);
    if (!t && !err.msg[0]) abort();
    if (t) {
        exercise(t, SAMPLE, sizeof SAMPLE - 1, false);
        exercise(t, in, size < 256 ? size : 256, false);
        tok_free(t);
    }

    /* 2. The input as tokenizer_config.json. */
    json_t *added = json_pack("[{s:i, s:s, s:b}, {s:i, s:s, s:b}]", "id", 300, "content", "<|x|>", "special", 1,
                              "id", 301, "content", "<s>", "special", 0);
    t = load(template(json_pack("{s:s, s:b}", "type", "ByteLevel", "add_prefix_space", 0), false, added), in, size);
    if (t) {
        exercise(t, SAMPLE, sizeof SAMPLE - 1, true);
        tok_free(t);
    }

    /* 3. "FLAGS PATTERN\nADDED\nTEXT" as parts of a valid tokenizer. */
    if (size < 1) return 0;
    unsigned flags = data[0];
    const char *p = in + 1, *end = in + size;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *pat = p;
    size_t pat_len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (pat_len > 256) pat_len = 256;
    const char *add = nl ? nl + 1 : end;
    const char *nl2 = memchr(add, '\n', (size_t)(end - add));
    size_t add_len = nl2 ? (size_t)(nl2 - add) : (size_t)(end - add);
    if (add_len > 64) add_len = 64;
    const char *text = nl2 ? nl2 + 1 : SAMPLE;
    size_t text_len = nl2 ? (size_t)(end - text) : sizeof SAMPLE - 1;
    if (text_len > 1024) text_len = 1024;          /* a hostile pattern may be quadratic */

    json_t *js_pat = json_stringn(pat, pat_len);   /* NULL when not UTF-8 */
    if (!js_pat) js_pat = json_string("\\p{L}+|\\s+|.");
    json_t *split = json_pack("{s:s, s:{s:o}, s:s, s:b}", "type", "Split", "pattern",
                              (flags & 8) ? "String" : "Regex", js_pat, "behavior", "Isolated", "invert", 0);
    json_t *bl = json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", (flags & 4) != 0,
                           "use_regex", (flags & 16) != 0);
    json_t *stages = json_array();
    if (flags & 2) json_array_append_new(stages, json_pack("{s:s, s:b}", "type", "Digits", "individual_digits", 1));
    json_array_append_new(stages, split);
    json_array_append_new(stages, bl);
    json_t *js_add = json_stringn(add, add_len);
    added = json_array();
    if (js_add && add_len)
        json_array_append_new(added, json_pack("{s:i, s:o, s:b, s:b}", "id", 300, "content", js_add, "special",
                                               (flags & 32) != 0, "normalized", (flags & 64) != 0));
    else
        json_decref(js_add);
    t = load(template(json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", stages), flags & 1, added), NULL, 0);
    if (t) {
        exercise(t, text, text_len, !(flags & 4));  /* add_prefix_space adds bytes */
        tok_free(t);
    }
    return 0;
}
