/* fuzz_gguf.c: libFuzzer target for the GGUF reader. Parses the input as a GGUF image,
 * then reads every byte the parse hands out (every key, value, array element and tensor
 * data range), so that any range not truly inside the input shows up under ASan. Also
 * checks the lookups find what the tables hold, and feeds every value and tensor to the
 * writer's serialisers. Run by tests/e2e/fuzz.sh. */
#include "engine/gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static volatile unsigned g_sink;

static unsigned touch(const void *p, uint64_t n) {
    const unsigned char *b = p;
    unsigned s = 0;
    for (uint64_t i = 0; i < n; i++) s += b[i];
    return s;
}

/* A NUL-terminated copy, or NULL when s holds a NUL (such a name cannot be looked up). */
static char *cstr(gguf_str s) {
    if (memchr(s.p, 0, (size_t)s.n)) return NULL;
    char *c = malloc((size_t)s.n + 1);
    memcpy(c, s.p, (size_t)s.n);
    c[s.n] = 0;
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file f;
    sg_error err;
    err.msg[0] = 0;
    if (gguf_parse(&f, data, size, &err) != 0) {
        if (!err.msg[0]) abort();   /* every failure explains itself */
        return 0;
    }
    unsigned s = 0;
    gguf_writer *w = gguf_writer_new();
    for (uint64_t i = 0; i < f.n_kv; i++) {
        const gguf_kv *kv = &f.kv[i];
        const gguf_value *v = &kv->v;
        s += touch(kv->key.p, kv->key.n);
        if (v->type == GGUF_STRING) s += touch(v->str.p, v->str.n);
        if (v->type == GGUF_ARRAY) {
            for (uint64_t j = 0; j < v->arr.n; j++) {
                int64_t x;
                double d;
                if (v->arr.elem == GGUF_STRING) { s += touch(v->arr.strs[j].p, v->arr.strs[j].n); continue; }
                if (gguf_arr_i64(v, j, &x) == 0) s += (unsigned)x;
                if (gguf_arr_f64(v, j, &d) == 0) s += d > 0;
            }
            if (v->arr.elem != GGUF_STRING && v->arr.n) s += touch(v->arr.data, 1);
        }
        char *key = cstr(kv->key);
        if (key) {
            if (gguf_find(&f, key) != kv) abort();   /* keys are unique */
            uint64_t u;
            int64_t x;
            double d;
            bool b;
            s += gguf_get_u64(&f, key, &u) == 0 ? (unsigned)u : 0;
            s += gguf_get_i64(&f, key, &x) == 0 ? (unsigned)x : 0;
            s += gguf_get_f64(&f, key, &d) == 0 && d > 0;
            s += gguf_get_bool(&f, key, &b) == 0 && b;
            free(gguf_get_str(&f, key));
            gguf_set_value(w, key, v);
            free(key);
        }
    }
    if (f.alignment == 0 || (f.alignment & (f.alignment - 1)) || f.data_offset % f.alignment) abort();
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        const gguf_tensor *t = &f.tensors[i];
        if (t->n_dims > 4 || !dtype_info(t->type) || t->offset % f.alignment) abort();
        if ((const uint8_t *)t->data < data || t->nbytes > size ||
            (const uint8_t *)t->data - data > (ptrdiff_t)(size - t->nbytes)) abort();
        s += touch(t->data, t->nbytes);
        char *name = cstr(t->name);
        if (name) {
            if (gguf_find_tensor(&f, name) != t) abort();   /* names are unique */
            gguf_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data, NULL, NULL);
            free(name);
        }
    }
    gguf_writer_free(w);
    g_sink = s;
    gguf_close(&f);
    return 0;
}
