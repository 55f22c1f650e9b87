/* export.c: writing GGUF files and Hugging Face folders from a row source (export.h).
 * Rows are converted to their stored type (quantized, for block types) in parallel
 * batches, each row on its own: the output does not depend on the thread count. */
#include "engine/export.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/mapfile.h"
#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/quant.h"
#include "engine/safetensors.h"

void export_shape(const sg_model_config *c, exp_kind kind, int64_t *rows, int64_t *cols) {
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    switch (kind) {
    case EXP_EMBD: case EXP_OUTPUT: *rows = c->n_vocab; *cols = c->dim; break;
    case EXP_OUTPUT_NORM: case EXP_ATTN_NORM: case EXP_FFN_NORM: *rows = 1; *cols = c->dim; break;
    case EXP_Q: *rows = q; *cols = c->dim; break;
    case EXP_K: case EXP_V: *rows = kv; *cols = c->dim; break;
    case EXP_O: *rows = c->dim; *cols = q; break;
    case EXP_GATE: case EXP_UP: *rows = c->ffn_dim; *cols = c->dim; break;
    case EXP_DOWN: *rows = c->dim; *cols = c->ffn_dim; break;
    default: *rows = *cols = 0; break;
    }
}

static bool is_vector(exp_kind k) { return k == EXP_OUTPUT_NORM || k == EXP_ATTN_NORM || k == EXP_FFN_NORM; }

static const char *gguf_names[EXP_KIND_COUNT] = {
    "token_embd.weight", "output_norm.weight", "output.weight", "blk.%d.attn_norm.weight",
    "blk.%d.attn_q.weight", "blk.%d.attn_k.weight", "blk.%d.attn_v.weight", "blk.%d.attn_output.weight",
    "blk.%d.ffn_norm.weight", "blk.%d.ffn_gate.weight", "blk.%d.ffn_up.weight", "blk.%d.ffn_down.weight",
};
static const char *hf_names[EXP_KIND_COUNT] = {
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers.%d.input_layernorm.weight",
    "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.self_attn.k_proj.weight",
    "model.layers.%d.self_attn.v_proj.weight", "model.layers.%d.self_attn.o_proj.weight",
    "model.layers.%d.post_attention_layernorm.weight", "model.layers.%d.mlp.gate_proj.weight",
    "model.layers.%d.mlp.up_proj.weight", "model.layers.%d.mlp.down_proj.weight",
};

/* The tensors of a model in file order: global ones first, then each layer's. */
typedef struct tensor_ref { exp_kind kind; int layer; } tensor_ref;

static size_t list_tensors(const sg_model_config *c, tensor_ref *out) {
    size_t n = 0;
    out[n++] = (tensor_ref){EXP_EMBD, -1};
    out[n++] = (tensor_ref){EXP_OUTPUT_NORM, -1};
    if (!c->tied_embeddings) out[n++] = (tensor_ref){EXP_OUTPUT, -1};
    for (int l = 0; l < c->n_layers; l++)
        for (int k = EXP_ATTN_NORM; k <= EXP_DOWN; k++) out[n++] = (tensor_ref){(exp_kind)k, l};
    return n;
}

/* ---- streaming one tensor, in parallel batches of rows ---- */

void export_stream_init(exp_stream *s, exp_row_f32_fn row, void *ctx, int64_t rows, int64_t cols, sg_dtype type,
                        sg_threadpool *tp) {
    memset(s, 0, sizeof *s);
    s->row = row;
    s->ctx = ctx;
    s->rows = rows;
    s->cols = cols;
    s->type = type;
    s->tp = tp;
    s->row_bytes = dtype_row_bytes(type, (uint64_t)cols);
}

void export_stream_free(exp_stream *s) {
    free(s->batch);
    s->batch = NULL;
}

typedef struct batch_job {
    exp_stream *s;
    int64_t first, n;
} batch_job;

static void batch_worker(void *p, int ith, int nth) {
    batch_job *j = p;
    exp_stream *s = j->s;
    int64_t per = (j->n + nth - 1) / nth, r0 = per * ith, r1 = r0 + per < j->n ? r0 + per : j->n;
    if (r0 >= r1) return;
    float *f = malloc((size_t)s->cols * sizeof(float));
    if (!f) { s->failed = 1; return; }
    for (int64_t r = r0; r < r1; r++) {
        s->row(s->ctx, j->first + r, f);
        if (kern_from_f32(s->type, f, s->batch + (size_t)r * s->row_bytes, s->cols)) s->failed = 1;
    }
    free(f);
}

int export_stream_fill(void *p, void *dst, size_t n) {
    exp_stream *s = p;
    unsigned char *out = dst;
    while (n) {
        if (s->batch_pos == s->batch_len) {
            if (s->next_row >= s->rows || !s->row_bytes) return -1;
            int64_t per = (int64_t)(((size_t)4 << 20) / s->row_bytes);
            if (per < 1) per = 1;
            int64_t k = s->rows - s->next_row < per ? s->rows - s->next_row : per;
            if (!s->batch) {
                s->batch = malloc((size_t)(s->rows < per ? s->rows : per) * s->row_bytes);
                if (!s->batch) return -1;
            }
            batch_job j = {s, s->next_row, k};
            if (s->tp && k > 1) tp_run(s->tp, batch_worker, &j);
            else batch_worker(&j, 0, 1);
            if (s->failed) return -1;
            s->next_row += k;
            s->batch_len = (size_t)k * s->row_bytes;
            s->batch_pos = 0;
        }
        size_t k = s->batch_len - s->batch_pos < n ? s->batch_len - s->batch_pos : n;
        memcpy(out, s->batch + s->batch_pos, k);
        s->batch_pos += k;
        out += k;
        n -= k;
    }
    if (s->next_row == s->rows && s->batch_pos == s->batch_len) export_stream_free(s);   /* done: free early */
    return 0;
}

/* A model tensor as export_gguf streams it: rows read from the source, q/k rows in
 * GGUF's permuted order. */
typedef struct tensor_rows {
    const exp_source *src;
    tensor_ref ref;
    int perm_head_dim;         /* > 0: GGUF q/k row permutation within heads of this size */
} tensor_rows;

/* GGUF row r holds Hugging Face row h*hd + i*hd/2 + j where r = h*hd + 2j + i: pairs
 * (j, j + hd/2) become adjacent, which interleaved RoPE expects. */
static int64_t permuted_source_row(int64_t r, int hd) {
    if (hd <= 0) return r;
    int64_t h = r / hd, k = r % hd;
    return h * hd + (k % 2) * (hd / 2) + k / 2;
}

static void tensor_row(void *p, int64_t r, float *dst) {
    const tensor_rows *t = p;
    t->src->row(t->src->ctx, t->ref.kind, t->ref.layer, t->perm_head_dim ? permuted_source_row(r, t->perm_head_dim) : r, dst);
}

/* ---- tokenizer.json -> GGUF vocabulary ---- */

int export_tokenizer_ids(const char *dir, sg_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_error_t je;
    json_t *tj = json_load_file(path, 0, &je);
    if (!tj) return sg_fail(err, "%s: %s (line %d)", path, je.text, je.line);
    const json_t *vocab = json_object_get(json_object_get(tj, "model"), "vocab");
    if (!json_is_object(vocab)) { json_decref(tj); return sg_fail(err, "%s: not a BPE tokenizer", path); }
    json_int_t top = -1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v)
        if (json_integer_value(v) > top) top = json_integer_value(v);
    size_t i;
    json_array_foreach(json_object_get(tj, "added_tokens"), i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id > top) top = id;
    }
    json_decref(tj);
    if (top >= (1 << 24)) return sg_fail(err, "%s: token id %lld is out of range", path, (long long)top);
    return (int)(top + 1);
}

static int add_tokenizer(gguf_writer *w, const sg_model_config *c, const char *dir, sg_error *err) {
    if (!dir) {
        /* No tokenizer: a placeholder vocabulary, as llama.cpp's tests write, so that
         * the file still loads everywhere. */
        char **toks = sg_xmalloc((size_t)c->n_vocab * sizeof(char *));
        int32_t *types = sg_xmalloc((size_t)c->n_vocab * sizeof(int32_t));
        for (int i = 0; i < c->n_vocab; i++) {
            char b[32];
            snprintf(b, sizeof b, "<t%d>", i);
            toks[i] = sg_xstrdup(b);
            types[i] = 1;
        }
        gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
        gguf_set_str(w, "tokenizer.ggml.pre", "default");
        gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, (size_t)c->n_vocab);
        gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)c->n_vocab);
        const char *merge = "<t3> <t4>";
        gguf_set_arr_str(w, "tokenizer.ggml.merges", &merge, c->n_vocab > 4 ? 1 : 0);
        for (int i = 0; i < c->n_vocab; i++) free(toks[i]);
        free(toks);
        free(types);
        if (c->bos_id >= 0) gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos_id);
        if (c->eos_id >= 0) gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_id);
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_error_t je;
    json_t *tj = json_load_file(path, 0, &je);
    if (!tj) return sg_fail(err, "%s: %s (line %d)", path, je.text, je.line);
    int rc = -1;
    const json_t *model = json_object_get(tj, "model");
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges)) { sg_fail(err, "%s: not a BPE tokenizer", path); goto out; }
    int n = c->n_vocab;
    char **toks = sg_xcalloc((size_t)n, sizeof(char *));
    int32_t *types = sg_xcalloc((size_t)n, sizeof(int32_t));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (json_is_integer(v) && id >= 0 && id < n && !toks[id]) { toks[id] = sg_xstrdup(key); types[id] = 1; }
    }
    json_t *added = json_object_get(tj, "added_tokens");
    size_t i;
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        const char *content = json_string_value(json_object_get(v, "content"));
        if (!content || id < 0 || id >= n) continue;
        free(toks[id]);
        toks[id] = sg_xstrdup(content);
        types[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    for (int t = 0; t < n; t++)
        if (!toks[t]) {   /* ids past the tokenizer's vocabulary (padded embeddings) */
            char b[32];
            snprintf(b, sizeof b, "[PAD%d]", t);
            toks[t] = sg_xstrdup(b);
            types[t] = 5;
        }
    size_t nm = json_array_size(merges);
    char **ms = sg_xmalloc((nm ? nm : 1) * sizeof(char *));
    json_array_foreach(merges, i, v) {
        if (json_is_string(v)) ms[i] = sg_xstrdup(json_string_value(v));
        else {
            sg_buf b;
            sg_buf_init(&b);
            sg_buf_puts(&b, json_string_value(json_array_get(v, 0)) ? json_string_value(json_array_get(v, 0)) : "");
            sg_buf_putc(&b, ' ');
            sg_buf_puts(&b, json_string_value(json_array_get(v, 1)) ? json_string_value(json_array_get(v, 1)) : "");
            ms[i] = sg_buf_steal(&b);
        }
    }
    /* The Llama-3 split pattern is llama.cpp's "llama-bpe"; anything else: "gpt2". */
    const char *pre = "gpt2";
    const char *dumped = NULL;
    char *pt = json_dumps(json_object_get(tj, "pre_tokenizer"), JSON_COMPACT);
    dumped = pt;
    if (dumped && strstr(dumped, "\\\\p{N}{1,3}")) pre = "llama-bpe";
    free(pt);
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, (size_t)n);
    gguf_set_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)ms, nm);
    for (int t = 0; t < n; t++) free(toks[t]);
    for (size_t k = 0; k < nm; k++) free(ms[k]);
    free(toks); free(types); free(ms);

    /* bos / eos / chat template from tokenizer_config.json, else the model config */
    int32_t bos = c->bos_id, eos = c->eos_id;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_t *tc = json_load_file(path, 0, &je);
    if (tc) {
        const char *names[2] = {"bos_token", "eos_token"};
        int32_t *dst[2] = {&bos, &eos};
        for (int k = 0; k < 2; k++) {
            const json_t *t = json_object_get(tc, names[k]);
            const char *s = json_is_string(t) ? json_string_value(t) : json_string_value(json_object_get(t, "content"));
            json_array_foreach(added, i, v)
                if (s && json_is_string(json_object_get(v, "content")) && !strcmp(s, json_string_value(json_object_get(v, "content"))))
                    *dst[k] = (int32_t)json_integer_value(json_object_get(v, "id"));
        }
        const char *ct = json_string_value(json_object_get(tc, "chat_template"));
        if (ct) gguf_set_str(w, "tokenizer.chat_template", ct);
        json_decref(tc);
    }
    if (bos >= 0) gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    if (eos >= 0) gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos);
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    rc = 0;
out:
    json_decref(tj);
    return rc;
}

/* ---- GGUF ---- */

static uint32_t gguf_file_type(sg_dtype t) {
    switch (t) {   /* llama.cpp's llama_ftype numbers */
    case SG_F32: return 0;
    case SG_F16: return 1;
    case SG_Q4_0: return 2;
    case SG_Q8_0: return 7;
    case SG_Q6_K: return 18;
    case SG_BF16: return 32;
    default: return 0;
    }
}

typedef struct uniform_type { sg_dtype type; } uniform_type;

static sg_dtype pick_uniform(void *ctx, const char *name, int n_dims, int64_t cols) {
    (void)name;
    sg_dtype t = ((const uniform_type *)ctx)->type;
    if (n_dims == 1) return SG_F32;
    return cols % dtype_info(t)->block_size ? SG_F16 : t;   /* rows must be whole blocks */
}

int export_gguf(const exp_source *src, sg_dtype type, const char *path, sg_error *err) {
    if (type != SG_F32 && type != SG_F16 && type != SG_BF16 && !quant_supports(type))
        return sg_fail(err, "GGUF export supports F32, F16, BF16 and the block types Q4_0 ... Q6_K");
    uniform_type u = {type};
    exp_types types = {pick_uniform, &u, gguf_file_type(type)};
    return export_gguf_types(src, &types, path, err);
}

int export_gguf_types(const exp_source *src, const exp_types *types, const char *path, sg_error *err) {
    const sg_model_config *c = src->cfg;
    gguf_writer *w = gguf_writer_new();
    const char *a = c->arch;
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, a), key)
    gguf_set_str(w, "general.architecture", a);
    gguf_set_str(w, "general.name", src->name ? src->name : a);
    gguf_set_u32(w, K("vocab_size"), (uint32_t)c->n_vocab);
    gguf_set_u32(w, K("context_length"), (uint32_t)c->max_ctx);
    gguf_set_u32(w, K("embedding_length"), (uint32_t)c->dim);
    gguf_set_u32(w, K("block_count"), (uint32_t)c->n_layers);
    gguf_set_u32(w, K("feed_forward_length"), (uint32_t)c->ffn_dim);
    gguf_set_u32(w, K("attention.head_count"), (uint32_t)c->n_heads);
    gguf_set_u32(w, K("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    gguf_set_f32(w, K("rope.freq_base"), (float)c->rope_theta);
    gguf_set_f32(w, K("attention.layer_norm_rms_epsilon"), c->norm_eps);
    gguf_set_u32(w, K("rope.dimension_count"), (uint32_t)c->head_dim);
    if (c->head_dim * c->n_heads != c->dim) {
        gguf_set_u32(w, K("attention.key_length"), (uint32_t)c->head_dim);
        gguf_set_u32(w, K("attention.value_length"), (uint32_t)c->head_dim);
    }
    if (c->rope_scaling == ROPE_SCALING_LINEAR || c->rope_scaling == ROPE_SCALING_YARN) {
        gguf_set_str(w, K("rope.scaling.type"), c->rope_scaling == ROPE_SCALING_YARN ? "yarn" : "linear");
        gguf_set_f32(w, K("rope.scaling.factor"), (float)c->rope_factor);
        gguf_set_u32(w, K("rope.scaling.original_context_length"), (uint32_t)c->rope_orig_ctx);
        if (c->rope_scaling == ROPE_SCALING_YARN) {
            gguf_set_f32(w, K("rope.scaling.yarn_beta_fast"), (float)c->yarn_beta_fast);
            gguf_set_f32(w, K("rope.scaling.yarn_beta_slow"), (float)c->yarn_beta_slow);
            if (c->yarn_attn_factor > 0) gguf_set_f32(w, K("rope.scaling.attn_factor"), (float)c->yarn_attn_factor);
        }
    } else if (c->rope_scaling != ROPE_SCALING_NONE) {
        gguf_writer_free(w);
        return sg_fail(err, "GGUF export: this RoPE scaling type has no GGUF form here");
    }
    /* llama.cpp derives SmolLM3's NoPE layers (every 4th); record a list that differs. */
    bool rule = true;
    for (int l = 0; l < c->n_layers; l++)
        rule &= c->rope_layer[l] == (strcmp(a, "smollm3") ? 1 : ((l + 1) % 4 != 0));
    if (!rule) {
        int32_t *v = sg_xmalloc((size_t)c->n_layers * sizeof(int32_t));
        for (int l = 0; l < c->n_layers; l++) v[l] = c->rope_layer[l];
        gguf_set_arr_i32(w, K("smolgate.rope_layers"), v, (size_t)c->n_layers);
        free(v);
    }
#undef K
    gguf_set_u32(w, "general.file_type", types->file_type);
    if (add_tokenizer(w, c, src->tokenizer_dir, err)) { gguf_writer_free(w); return -1; }

    tensor_ref *refs = sg_xmalloc((size_t)(3 + 9 * c->n_layers) * sizeof(tensor_ref));
    size_t nt = list_tensors(c, refs);
    exp_stream *streams = sg_xcalloc(nt, sizeof(exp_stream));
    tensor_rows *trs = sg_xcalloc(nt, sizeof(tensor_rows));
    int threads = src->n_threads > 0 ? src->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    sg_threadpool *tp = threads > 1 ? tp_new(threads) : NULL;
    bool quantized = false;
    int rc = 0;
    for (size_t i = 0; i < nt; i++) {
        int64_t rows, cols;
        export_shape(c, refs[i].kind, &rows, &cols);
        char name[128];
        snprintf(name, sizeof name, gguf_names[refs[i].kind], refs[i].layer);
        int n_dims = is_vector(refs[i].kind) ? 1 : 2;
        sg_dtype t = types->pick(types->ctx, name, n_dims, cols);
        if (!dtype_row_bytes(t, (uint64_t)cols) || (t != SG_F32 && t != SG_F16 && t != SG_BF16 && !quant_supports(t))) {
            rc = sg_fail(err, "tensor %s: cannot store rows of %lld as %s", name, (long long)cols,
                         dtype_info(t) ? dtype_info(t)->name : "an unknown type");
            break;
        }
        quantized |= dtype_info(t)->block_size > 1;
        trs[i] = (tensor_rows){src, refs[i], refs[i].kind == EXP_Q || refs[i].kind == EXP_K ? c->head_dim : 0};
        export_stream_init(&streams[i], tensor_row, &trs[i], rows, cols, t, tp);
        uint64_t ne[2] = {(uint64_t)cols, (uint64_t)rows};
        gguf_add_tensor(w, name, t, (uint32_t)n_dims, ne, NULL, export_stream_fill, &streams[i]);
    }
    if (quantized) gguf_set_u32(w, "general.quantization_version", 2);
    if (!rc) rc = gguf_writer_write(w, path, err);
    for (size_t i = 0; i < nt; i++) export_stream_free(&streams[i]);
    if (tp) tp_free(tp);
    free(streams);
    free(trs);
    free(refs);
    gguf_writer_free(w);
    return rc;
}

/* ---- Hugging Face folder ---- */

static int copy_file(const char *from, const char *to, sg_error *err) {
    size_t n;
    char *data = sg_read_file(from, &n, err);
    if (!data) return -1;
    FILE *f = fopen(to, "wb");
    int ok = f && fwrite(data, 1, n, f) == n;
    if (f && fclose(f)) ok = 0;
    free(data);
    return ok ? 0 : sg_fail(err, "cannot write %s", to);
}

static json_t *hf_config_json(const sg_model_config *c) {
    json_t *j = json_object();
    bool smol = !strcmp(c->arch, "smollm3");
    json_object_set_new(j, "architectures", json_pack("[s]", smol ? "SmolLM3ForCausalLM" : "LlamaForCausalLM"));
    json_object_set_new(j, "model_type", json_string(c->arch));
    json_object_set_new(j, "vocab_size", json_integer(c->n_vocab));
    json_object_set_new(j, "hidden_size", json_integer(c->dim));
    json_object_set_new(j, "intermediate_size", json_integer(c->ffn_dim));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(j, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_ctx));
    json_object_set_new(j, "rms_norm_eps", json_real(c->norm_eps));
    json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tied_embeddings));
    json_object_set_new(j, "attention_bias", json_false());
    json_object_set_new(j, "mlp_bias", json_false());
    if (c->bos_id >= 0) json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
    if (c->rope_scaling == ROPE_SCALING_YARN || c->rope_scaling == ROPE_SCALING_LINEAR) {
        json_t *rs = json_pack("{s:s,s:f,s:i}", "rope_type", c->rope_scaling == ROPE_SCALING_YARN ? "yarn" : "linear",
                               "factor", c->rope_factor, "original_max_position_embeddings", c->rope_orig_ctx);
        json_object_set_new(j, "rope_scaling", rs);
    }
    if (smol) {
        json_t *nrl = json_array();
        for (int l = 0; l < c->n_layers; l++) json_array_append_new(nrl, json_integer(c->rope_layer[l]));
        json_object_set_new(j, "no_rope_layers", nrl);
        json_object_set_new(j, "no_rope_layer_interval", json_integer(4));
        json_object_set_new(j, "use_sliding_window", json_false());
    }
    return j;
}

int export_hf(const exp_source *src, sg_dtype type, const char *dir, sg_error *err) {
    const sg_model_config *c = src->cfg;
    if (type != SG_F32 && type != SG_F16 && type != SG_BF16)
        return sg_fail(err, "Hugging Face export supports F32, F16 and BF16");
    if (mkdir(dir, 0755) && errno != EEXIST) return sg_fail(err, "cannot create %s: %s", dir, strerror(errno));
    char path[4096];
    json_t *cj = hf_config_json(c);
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = json_dump_file(cj, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(cj);
    if (rc) return sg_fail(err, "cannot write %s", path);
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    json_t *gj = json_object();
    if (c->bos_id >= 0) json_object_set_new(gj, "bos_token_id", json_integer(c->bos_id));
    if (c->eos_id >= 0) json_object_set_new(gj, "eos_token_id", json_integer(c->eos_id));
    rc = json_dump_file(gj, path, JSON_INDENT(2));
    json_decref(gj);
    if (rc) return sg_fail(err, "cannot write %s", path);

    tensor_ref *refs = sg_xmalloc((size_t)(3 + 9 * c->n_layers) * sizeof(tensor_ref));
    size_t nt = list_tensors(c, refs);
    st_write_tensor *wt = sg_xcalloc(nt, sizeof *wt);
    char **names = sg_xcalloc(nt, sizeof(char *));
    float *frow = NULL;
    rc = 0;
    for (size_t i = 0; i < nt && !rc; i++) {
        int64_t rows, cols;
        export_shape(c, refs[i].kind, &rows, &cols);
        char name[128];
        snprintf(name, sizeof name, hf_names[refs[i].kind], refs[i].layer);
        names[i] = sg_xstrdup(name);
        size_t row_bytes = dtype_row_bytes(type, (uint64_t)cols);
        unsigned char *data = malloc((size_t)rows * row_bytes);
        if (!data) { rc = sg_fail(err, "cannot allocate %s", name); break; }
        frow = sg_xrealloc(frow, (size_t)cols * sizeof(float));
        for (int64_t r = 0; r < rows; r++) {
            src->row(src->ctx, refs[i].kind, refs[i].layer, r, frow);
            kern_from_f32(type, frow, data + (size_t)r * row_bytes, cols);
        }
        wt[i] = (st_write_tensor){.name = names[i], .dtype = type, .n_dims = is_vector(refs[i].kind) ? 1 : 2, .data = data};
        if (is_vector(refs[i].kind)) wt[i].shape[0] = (uint64_t)cols;
        else { wt[i].shape[0] = (uint64_t)rows; wt[i].shape[1] = (uint64_t)cols; }
    }
    free(frow);
    if (!rc) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = st_write(path, wt, nt, err);
    }
    for (size_t i = 0; i < nt; i++) { free((void *)wt[i].data); free(names[i]); }
    free(wt); free(names); free(refs);
    if (rc || !src->tokenizer_dir) return rc;
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    for (size_t i = 0; i < 3; i++) {
        char from[4096];
        snprintf(from, sizeof from, "%s/%s", src->tokenizer_dir, files[i]);
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        struct stat st;
        if (stat(from, &st) == 0 && copy_file(from, path, err)) return -1;
    }
    return 0;
}

/* ---- sources ---- */

static const sg_tensor *model_tensor(const sg_model *m, exp_kind kind, int layer) {
    const sg_layer *L = layer >= 0 ? &m->layers[layer] : NULL;
    switch (kind) {
    case EXP_EMBD: return &m->tok_embd;
    case EXP_OUTPUT: return &m->output;
    case EXP_Q: return &L->wq;
    case EXP_K: return &L->wk;
    case EXP_V: return &L->wv;
    case EXP_O: return &L->wo;
    case EXP_GATE: return &L->w_gate;
    case EXP_UP: return &L->w_up;
    case EXP_DOWN: return &L->w_down;
    default: return NULL;
    }
}

static void model_row(void *ctx, exp_kind kind, int layer, int64_t row, float *dst) {
    const sg_model *m = ctx;
    const sg_model_config *c = &m->cfg;
    const float *vec = kind == EXP_OUTPUT_NORM ? m->output_norm
                     : kind == EXP_ATTN_NORM ? m->layers[layer].attn_norm
                     : kind == EXP_FFN_NORM ? m->layers[layer].ffn_norm : NULL;
    if (vec) { memcpy(dst, vec, (size_t)c->dim * sizeof(float)); return; }
    const sg_tensor *t = model_tensor(m, kind, layer);
    /* A GGUF model stores q/k permuted: read the row that holds this HF row. */
    if (c->rope_interleaved && (kind == EXP_Q || kind == EXP_K)) {
        int hd = c->head_dim;
        int64_t h = row / hd, k = row % hd, i = k / (hd / 2), j = k % (hd / 2);
        row = h * hd + 2 * j + i;
    }
    uint64_t rb = dtype_row_bytes(t->type, (uint64_t)t->cols);
    kern_to_f32(t->type, (const unsigned char *)t->data + (uint64_t)row * rb, dst, t->cols);
}

void export_model_source(exp_source *src, const sg_model *m) {
    memset(src, 0, sizeof *src);
    src->cfg = &m->cfg;
    src->row = model_row;
    src->ctx = (void *)m;
}

/* splitmix64: a seeded stream per (seed, tensor, row), so any row is reproducible alone. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void random_row(void *ctx, exp_kind kind, int layer, int64_t row, float *dst) {
    const exp_random *r = ctx;
    int64_t rows, cols;
    export_shape(r->cfg, kind, &rows, &cols);
    uint64_t s = r->seed * 0x100000001B3ull ^ ((uint64_t)kind << 48) ^ ((uint64_t)(layer + 1) << 36) ^ (uint64_t)row;
    splitmix64(&s);
    /* Norm weights near 1, matrices uniform with std 0.02 (transformers' init range). */
    float base = is_vector(kind) ? 1.0f : 0.0f, scale = is_vector(kind) ? 0.1f : 0.02f * sqrtf(3.0f);
    for (int64_t i = 0; i < cols; i++) {
        double u = (double)(splitmix64(&s) >> 11) * (1.0 / 9007199254740992.0);   /* [0, 1) */
        dst[i] = base + scale * (float)(2 * u - 1);
    }
}

void export_random_source(exp_source *src, const sg_model_config *cfg, exp_random *r) {
    memset(src, 0, sizeof *src);
    r->cfg = cfg;
    src->cfg = cfg;
    src->row = random_row;
    src->ctx = r;
}
