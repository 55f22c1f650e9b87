/* quantize.c: model quantization with llama.cpp's per-tensor recipes (quantize.h). */
#include "engine/quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "engine/export.h"
#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/threadpool.h"

static const struct { quantize_ftype ft; const char *name; sg_dtype base; } g_ftypes[] = {
    {QUANTIZE_Q4_0, "Q4_0", SG_Q4_0},       {QUANTIZE_Q8_0, "Q8_0", SG_Q8_0},
    {QUANTIZE_Q4_K_M, "Q4_K_M", SG_Q4_K},   {QUANTIZE_Q5_K_M, "Q5_K_M", SG_Q5_K},
    {QUANTIZE_Q6_K, "Q6_K", SG_Q6_K},
};

int quantize_ftype_from_name(const char *name) {
    for (size_t i = 0; name && i < sizeof g_ftypes / sizeof g_ftypes[0]; i++)
        if (!strcasecmp(name, g_ftypes[i].name)) return g_ftypes[i].ft;
    return -1;
}

const char *quantize_ftype_name(quantize_ftype ft) {
    for (size_t i = 0; i < sizeof g_ftypes / sizeof g_ftypes[0]; i++)
        if (g_ftypes[i].ft == ft) return g_ftypes[i].name;
    return "?";
}

static sg_dtype ftype_base(quantize_ftype ft) {
    for (size_t i = 0; i < sizeof g_ftypes / sizeof g_ftypes[0]; i++)
        if (g_ftypes[i].ft == ft) return g_ftypes[i].base;
    return SG_F16;
}

/* ---- the recipe ---- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* The layer of "blk.N.<role>.weight" when role matches, else -1. */
static int layer_of(const char *name, const char *role) {
    int layer, end = 0;
    if (sscanf(name, "blk.%d.%n", &layer, &end) != 1 || end <= 0) return -1;
    size_t n = strlen(role);
    return !strncmp(name + end, role, n) && !strcmp(name + end + n, ".weight") ? layer : -1;
}

/* llama.cpp's choice of layers that get more bits: the first and last eighth, and every
 * third layer in between. */
static bool use_more_bits(int layer, int n_layers) {
    return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

sg_dtype quantize_tensor_type(quantize_ftype ft, const quantize_model_info *mi, const char *name, int n_dims,
                              int64_t cols, sg_dtype current) {
    /* What llama.cpp quantizes at all: matrices named "*weight", norms excepted. */
    if (n_dims < 2 || !ends_with(name, "weight") || strstr(name, "_norm.weight")) return current;
    sg_dtype t = ftype_base(ft);
    bool m_mix = ft == QUANTIZE_Q4_K_M || ft == QUANTIZE_Q5_K_M;
    int layer;
    if (!strcmp(name, "output.weight") || (mi->tied_embeddings && !strcmp(name, "token_embd.weight"))) {
        if (cols % dtype_info(t)->block_size) t = SG_Q8_0;
        else if (t != SG_Q8_0) t = SG_Q6_K;
    } else if ((layer = layer_of(name, "attn_v")) >= 0) {
        if (m_mix && use_more_bits(layer, mi->n_layers)) t = SG_Q6_K;
    } else if ((layer = layer_of(name, "ffn_down")) >= 0) {
        if (m_mix && use_more_bits(layer, mi->n_layers)) t = SG_Q6_K;
    }
    /* rows that are not whole blocks: the nearest 32-block type, then F16 */
    if (cols % dtype_info(t)->block_size) {
        switch (t) {
        case SG_Q4_K: t = SG_Q5_0; break;
        case SG_Q5_K: t = SG_Q5_1; break;
        case SG_Q6_K: t = SG_Q8_0; break;
        default: break;
        }
        if (cols % dtype_info(t)->block_size) t = SG_F16;
    }
    return t;
}

/* ---- from a Hugging Face folder: the exporter with the recipe as its type choice ---- */

typedef struct recipe_ctx {
    const quantize_params *p;
    quantize_model_info mi;
} recipe_ctx;

static sg_dtype pick_recipe(void *ctx, const char *name, int n_dims, int64_t cols) {
    const recipe_ctx *r = ctx;
    sg_dtype t = quantize_tensor_type(r->p->ftype, &r->mi, name, n_dims, cols, SG_F32);
    if (r->p->verbose) fprintf(stderr, "  %-28s %-6s (%lld per row)\n", name, dtype_info(t)->name, (long long)cols);
    return t;
}

static int quantize_hf(const char *in, const char *out, const quantize_params *p, sg_error *err) {
    sg_model *m = model_load(in, err);
    if (!m) return -1;
    exp_source src;
    export_model_source(&src, m);
    char tok[4096];
    struct stat st;
    snprintf(tok, sizeof tok, "%s/tokenizer.json", in);
    if (stat(tok, &st) == 0) src.tokenizer_dir = in;
    const char *base = strrchr(in, '/');
    src.name = base && base[1] ? base + 1 : in;
    src.n_threads = p->n_threads;
    recipe_ctx rc = {p, {m->cfg.n_layers, m->cfg.tied_embeddings}};
    exp_types types = {pick_recipe, &rc, (uint32_t)p->ftype};
    int r = export_gguf_types(&src, &types, out, err);
    model_free(m);
    return r;
}

/* ---- from a GGUF: every key and tensor carried over, matrices converted ---- */

typedef struct gguf_rows {
    const gguf_tensor *t;
    size_t row_bytes;
} gguf_rows;

static void gguf_row(void *ctx, int64_t r, float *dst) {
    const gguf_rows *g = ctx;
    kern_to_f32(g->t->type, (const unsigned char *)g->t->data + (size_t)r * g->row_bytes, dst, (int64_t)g->t->ne[0]);
}

static int quantize_gguf(const char *in, const char *out, const quantize_params *p, sg_error *err) {
    gguf_file f;
    if (gguf_open(&f, in, err)) return -1;
    quantize_model_info mi = {0, gguf_find_tensor(&f, "output.weight") == NULL};
    char *arch = gguf_get_str(&f, "general.architecture");
    char key[160];
    uint64_t v;
    snprintf(key, sizeof key, "%s.block_count", arch ? arch : "");
    if (gguf_get_u64(&f, key, &v) == 0 && v < 100000) mi.n_layers = (int)v;
    free(arch);
    for (uint64_t i = 0; i < f.n_tensors && !mi.n_layers; i++) {   /* no block_count: count the layers */
        int l;
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)f.tensors[i].name.n, f.tensors[i].name.p);
        if (sscanf(name, "blk.%d.", &l) == 1 && l + 1 > mi.n_layers) mi.n_layers = l + 1;
    }

    gguf_writer *w = gguf_writer_new();
    for (uint64_t i = 0; i < f.n_kv; i++) {
        char *k = sg_xmalloc((size_t)f.kv[i].key.n + 1);
        memcpy(k, f.kv[i].key.p, (size_t)f.kv[i].key.n);
        k[f.kv[i].key.n] = 0;
        gguf_set_value(w, k, &f.kv[i].v);
        free(k);
    }
    gguf_set_u32(w, "general.quantization_version", 2);
    gguf_set_u32(w, "general.file_type", (uint32_t)p->ftype);

    int threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    sg_threadpool *tp = threads > 1 ? tp_new(threads) : NULL;
    exp_stream *streams = sg_xcalloc((size_t)f.n_tensors + 1, sizeof(exp_stream));
    gguf_rows *rows = sg_xcalloc((size_t)f.n_tensors + 1, sizeof(gguf_rows));
    int rc = 0, requantized = 0;
    for (uint64_t i = 0; i < f.n_tensors && !rc; i++) {
        const gguf_tensor *t = &f.tensors[i];
        char name[80];
        snprintf(name, sizeof name, "%.*s", (int)t->name.n, t->name.p);
        int64_t cols = (int64_t)t->ne[0], nrows = (int64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
        sg_dtype to = quantize_tensor_type(p->ftype, &mi, name, (int)t->n_dims, cols, t->type);
        if (p->verbose)
            fprintf(stderr, "  %-28s %-6s -> %-6s (%lld per row)\n", name, dtype_info(t->type)->name,
                    dtype_info(to)->name, (long long)cols);
        if (to == t->type) {   /* nothing to do: the bytes as they are */
            gguf_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data, NULL, NULL);
            continue;
        }
        if (!kern_supports(t->type)) {
            rc = sg_fail(err, "tensor %s has type %s, which smolgate cannot dequantize", name, dtype_info(t->type)->name);
            break;
        }
        requantized += dtype_info(t->type)->block_size > 1;
        rows[i] = (gguf_rows){t, dtype_row_bytes(t->type, (uint64_t)cols)};
        export_stream_init(&streams[i], gguf_row, &rows[i], nrows, cols, to, tp);
        gguf_add_tensor(w, name, to, t->n_dims, t->ne, NULL, export_stream_fill, &streams[i]);
    }
    if (requantized)
        fprintf(stderr, "smolgate: warning: %d tensors of %s are already quantized: requantizing loses more than "
                        "quantizing from F16 / BF16 / F32\n", requantized, in);
    if (!rc) rc = gguf_writer_write(w, out, err);
    for (uint64_t i = 0; i < f.n_tensors; i++) export_stream_free(&streams[i]);
    free(streams);
    free(rows);
    if (tp) tp_free(tp);
    gguf_writer_free(w);
    gguf_close(&f);
    return rc;
}

int quantize_model(const char *in, const char *out, const quantize_params *p, sg_error *err) {
    if (!dtype_info(ftype_base(p->ftype)) || quantize_ftype_from_name(quantize_ftype_name(p->ftype)) < 0)
        return sg_fail(err, "unknown quantization type %d", (int)p->ftype);
    struct stat st;
    if (stat(in, &st) != 0) return sg_fail(err, "%s: no such file or folder", in);
    int rc = S_ISDIR(st.st_mode) ? quantize_hf(in, out, p, err) : quantize_gguf(in, out, p, err);
    return rc ? sg_fail_wrap(err, "quantizing %s", in) : 0;
}
