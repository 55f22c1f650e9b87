/* fuzz_safetensors.c: libFuzzer target for the safetensors reader. Parses the input,
 * then reads every tensor's whole data range (ASan catches a range outside the input),
 * checks each lookup finds its tensor, and that the tensors tile the data area exactly as
 * the reader promises. Run by tests/e2e/fuzz.sh. */
#include "engine/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static volatile unsigned g_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    sg_error err;
    err.msg[0] = 0;
    if (st_parse(&f, data, size, &err) != 0) {
        if (!err.msg[0]) abort();   /* every failure explains itself */
        return 0;
    }
    unsigned s = 0;
    uint64_t covered = 0;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        if (st_find(&f, t->name) != t) abort();
        if (t->n_dims > ST_MAX_DIMS || !st_dtype_name(t->dtype)) abort();
        const uint8_t *p = t->data;
        if (p < data + 8 || t->nbytes > size || p - data > (ptrdiff_t)(size - t->nbytes)) abort();
        for (size_t j = 0; j < t->nbytes; j++) s += p[j];
        s += (unsigned)strlen(t->name);
        covered += t->nbytes;
    }
    /* The tensors tile the data area: their sizes add up to it. */
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | data[i];
    if (covered != size - 8 - hl) abort();
    for (size_t i = 0; i < f.n_meta; i++)
        if (st_metadata(&f, f.meta[2 * i]) == NULL) abort();
    g_sink = s;
    st_close(&f);
    return 0;
}
