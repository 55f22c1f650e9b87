/* model.c: loading a model from GGUF or a Hugging Face folder into sg_model (model.h).
 *
 * Matrices stay in the mapped files in their stored type (F32, F16, BF16, Q8_0 and the
 * other block formats the kernels know); only the small norm vectors are converted to
 * f32 copies, since the kernels read them as f32 whatever the file stores. */
#include "engine/model.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/buf.h"
#include "common/mapfile.h"
#include "engine/kernels.h"

/* ---- configuration ---- */

static int json_int(const json_t *o, const char *key, int dflt, int *out, sg_error *err) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) { *out = dflt; return 0; }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
        return sg_fail(err, "config.json: \"%s\" must be a non-negative integer", key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int json_num(const json_t *o, const char *key, double dflt, double *out, sg_error *err) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) { *out = dflt; return 0; }
    if (!json_is_number(v)) return sg_fail(err, "config.json: \"%s\" must be a number", key);
    *out = json_number_value(v);
    return 0;
}

void model_config_free(sg_model_config *cfg) {
    free(cfg->rope_layer);
    cfg->rope_layer = NULL;
}

static void config_default_rope_layers(sg_model_config *cfg, int interval) {
    cfg->rope_layer = sg_xcalloc((size_t)cfg->n_layers, 1);
    for (int i = 0; i < cfg->n_layers; i++)
        cfg->rope_layer[i] = interval > 0 ? ((i + 1) % interval != 0) : 1;
}

/* Shared sanity checks, whatever the source. */
static int config_validate(const sg_model_config *c, sg_error *err) {
    if (c->n_vocab <= 0 || c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->head_dim <= 0 || c->ffn_dim <= 0)
        return sg_fail(err, "model config has a zero or missing size (vocab %d, hidden %d, layers %d, heads %d, kv heads %d, head dim %d, ffn %d)",
                       c->n_vocab, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim);
    if (c->n_heads % c->n_kv_heads)
        return sg_fail(err, "attention heads (%d) are not a multiple of KV heads (%d)", c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2) return sg_fail(err, "head dim %d is odd: RoPE needs pairs", c->head_dim);
    if (c->n_layers > 4096 || c->head_dim > 4096 || c->n_heads > 4096)
        return sg_fail(err, "model config sizes are absurd (layers %d, heads %d, head dim %d)", c->n_layers, c->n_heads, c->head_dim);
    if (!(c->norm_eps > 0) || !(c->rope_theta > 0))
        return sg_fail(err, "rms_norm_eps and rope_theta must be positive");
    if (c->rope_scaling != ROPE_SCALING_NONE && !(c->rope_factor > 0))
        return sg_fail(err, "RoPE scaling factor must be positive");
    return 0;
}

static int parse_rope_scaling(sg_model_config *cfg, const json_t *rs, sg_error *err) {
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return sg_fail(err, "config.json: rope_scaling must be an object");
    const char *type = json_string_value(json_object_get(rs, "rope_type"));
    if (!type) type = json_string_value(json_object_get(rs, "type"));
    if (!type || !strcmp(type, "default")) return 0;
    double factor = 0;
    if (json_num(rs, "factor", 0, &factor, err)) return -1;
    cfg->rope_factor = factor;
    int orig;
    if (json_int(rs, "original_max_position_embeddings", cfg->max_ctx, &orig, err)) return -1;
    cfg->rope_orig_ctx = orig;
    if (!strcmp(type, "linear")) {
        cfg->rope_scaling = ROPE_SCALING_LINEAR;
    } else if (!strcmp(type, "yarn")) {
        cfg->rope_scaling = ROPE_SCALING_YARN;
        if (factor <= 0 && orig > 0) cfg->rope_factor = (double)cfg->max_ctx / orig;
        if (json_num(rs, "beta_fast", 32, &cfg->yarn_beta_fast, err)) return -1;
        if (json_num(rs, "beta_slow", 1, &cfg->yarn_beta_slow, err)) return -1;
        if (json_num(rs, "attention_factor", -1, &cfg->yarn_attn_factor, err)) return -1;
        if (json_object_get(rs, "mscale") || json_object_get(rs, "mscale_all_dim"))
            return sg_fail(err, "config.json: YaRN mscale / mscale_all_dim are not supported");
        if (json_is_false(json_object_get(rs, "truncate")))
            return sg_fail(err, "config.json: YaRN truncate=false is not supported");
    } else if (!strcmp(type, "llama3")) {
        cfg->rope_scaling = ROPE_SCALING_LLAMA3;
        if (json_num(rs, "low_freq_factor", 1, &cfg->llama3_low_freq, err)) return -1;
        if (json_num(rs, "high_freq_factor", 4, &cfg->llama3_high_freq, err)) return -1;
    } else {
        return sg_fail(err, "config.json: RoPE scaling type \"%s\" is not supported", type);
    }
    return 0;
}

int model_config_from_hf(sg_model_config *cfg, const void *config_json, sg_error *err) {
    const json_t *c = config_json;
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_id = cfg->eos_id = -1;
    if (!json_is_object(c)) return sg_fail(err, "config.json is not a JSON object");
    const char *mt = json_string_value(json_object_get(c, "model_type"));
    if (!mt) return sg_fail(err, "config.json has no model_type");
    bool smollm3 = !strcmp(mt, "smollm3");
    if (!smollm3 && strcmp(mt, "llama"))
        return sg_fail(err, "config.json: model_type \"%s\" is not supported (llama, smollm3)", mt);
    snprintf(cfg->arch, sizeof cfg->arch, "%s", mt);
    if (json_int(c, "vocab_size", 0, &cfg->n_vocab, err) ||
        json_int(c, "hidden_size", 0, &cfg->dim, err) ||
        json_int(c, "num_hidden_layers", 0, &cfg->n_layers, err) ||
        json_int(c, "num_attention_heads", 0, &cfg->n_heads, err) ||
        json_int(c, "num_key_value_heads", cfg->n_heads, &cfg->n_kv_heads, err) ||
        json_int(c, "intermediate_size", 0, &cfg->ffn_dim, err) ||
        json_int(c, "max_position_embeddings", 2048, &cfg->max_ctx, err))
        return -1;
    if (cfg->n_heads <= 0) return sg_fail(err, "config.json: num_attention_heads missing");
    if (json_int(c, "head_dim", cfg->dim / cfg->n_heads, &cfg->head_dim, err)) return -1;
    double eps = 1e-6;
    if (json_num(c, "rms_norm_eps", 1e-6, &eps, err)) return -1;
    cfg->norm_eps = (float)eps;
    const json_t *tie = json_object_get(c, "tie_word_embeddings");
    cfg->tied_embeddings = tie ? json_is_true(tie) : smollm3;
    if (json_is_true(json_object_get(c, "attention_bias")) || json_is_true(json_object_get(c, "mlp_bias")))
        return sg_fail(err, "config.json: attention/MLP biases are not supported");
    if (json_is_true(json_object_get(c, "use_sliding_window")))
        return sg_fail(err, "config.json: use_sliding_window is not supported");
    const char *act = json_string_value(json_object_get(c, "hidden_act"));
    if (act && strcmp(act, "silu"))
        return sg_fail(err, "config.json: hidden_act \"%s\" is not supported (silu)", act);

    /* RoPE: transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; older
     * configs have rope_theta and rope_scaling at the top level. */
    const json_t *rp = json_object_get(c, "rope_parameters");
    double theta_default = smollm3 ? 2000000.0 : 10000.0;
    if (json_is_object(rp)) {
        if (json_num(rp, "rope_theta", theta_default, &cfg->rope_theta, err)) return -1;
        if (parse_rope_scaling(cfg, rp, err)) return -1;
    } else {
        if (json_num(c, "rope_theta", theta_default, &cfg->rope_theta, err)) return -1;
        if (parse_rope_scaling(cfg, json_object_get(c, "rope_scaling"), err)) return -1;
    }
    if (config_validate(cfg, err)) return -1;

    /* NoPE layers: no_rope_layers[i] == 1 means layer i uses RoPE. */
    const json_t *nrl = json_object_get(c, "no_rope_layers");
    if (smollm3 && json_is_array(nrl)) {
        if ((int)json_array_size(nrl) != cfg->n_layers)
            return sg_fail(err, "config.json: no_rope_layers has %zu entries for %d layers",
                           json_array_size(nrl), cfg->n_layers);
        cfg->rope_layer = sg_xcalloc((size_t)cfg->n_layers, 1);
        for (int i = 0; i < cfg->n_layers; i++) {
            const json_t *v = json_array_get(nrl, (size_t)i);
            if (!json_is_integer(v) && !json_is_boolean(v)) {
                model_config_free(cfg);
                return sg_fail(err, "config.json: no_rope_layers[%d] is not 0 or 1", i);
            }
            cfg->rope_layer[i] = json_is_integer(v) ? json_integer_value(v) != 0 : json_is_true(v);
        }
    } else {
        int interval = 0;
        if (smollm3 && json_int(c, "no_rope_layer_interval", 4, &interval, err)) return -1;
        config_default_rope_layers(cfg, interval);
    }
    const json_t *bos = json_object_get(c, "bos_token_id"), *eos = json_object_get(c, "eos_token_id");
    if (json_is_integer(bos)) cfg->bos_id = (int32_t)json_integer_value(bos);
    if (json_is_integer(eos)) cfg->eos_id = (int32_t)json_integer_value(eos);
    else if (json_is_array(eos) && json_is_integer(json_array_get(eos, 0)))
        cfg->eos_id = (int32_t)json_integer_value(json_array_get(eos, 0));
    return 0;
}

static int gguf_arch_u64(const gguf_file *g, const char *arch, const char *suffix, uint64_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_u64(g, key, out);
}

static int gguf_arch_f64(const gguf_file *g, const char *arch, const char *suffix, double *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_f64(g, key, out);
}

static int config_from_gguf(sg_model_config *cfg, const gguf_file *g, sg_error *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_id = cfg->eos_id = -1;
    char *arch = gguf_get_str(g, "general.architecture");
    if (!arch) return sg_fail(err, "GGUF has no general.architecture");
    if (strcmp(arch, "llama") && strcmp(arch, "smollm3")) {
        int r = sg_fail(err, "GGUF architecture \"%s\" is not supported (llama, smollm3)", arch);
        free(arch);
        return r;
    }
    snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
    free(arch);
    const char *a = cfg->arch;
    uint64_t v;
    struct { const char *key; int *dst; int required; } ints[] = {
        {"embedding_length", &cfg->dim, 1}, {"block_count", &cfg->n_layers, 1},
        {"feed_forward_length", &cfg->ffn_dim, 1}, {"attention.head_count", &cfg->n_heads, 1},
        {"context_length", &cfg->max_ctx, 0},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (gguf_arch_u64(g, a, ints[i].key, &v) != 0) {
            if (ints[i].required) return sg_fail(err, "GGUF lacks %s.%s", a, ints[i].key);
            v = 2048;
        }
        if (v > (1u << 30)) return sg_fail(err, "GGUF %s.%s = %llu is absurd", a, ints[i].key, (unsigned long long)v);
        *ints[i].dst = (int)v;
    }
    cfg->n_kv_heads = gguf_arch_u64(g, a, "attention.head_count_kv", &v) == 0 && v <= 4096 ? (int)v : cfg->n_heads;
    cfg->head_dim = cfg->n_heads ? cfg->dim / cfg->n_heads : 0;
    if (gguf_arch_u64(g, a, "attention.key_length", &v) == 0 && v <= 4096) cfg->head_dim = (int)v;
    if (gguf_arch_u64(g, a, "vocab_size", &v) == 0 && v <= (1u << 30)) cfg->n_vocab = (int)v;
    double f;
    cfg->norm_eps = gguf_arch_f64(g, a, "attention.layer_norm_rms_epsilon", &f) == 0 ? (float)f : 1e-5f;
    cfg->rope_theta = gguf_arch_f64(g, a, "rope.freq_base", &f) == 0 ? f : 10000.0;
    cfg->rope_interleaved = true;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    char *st = gguf_get_str(g, key);
    if (st && strcmp(st, "none")) {
        if (!strcmp(st, "linear")) cfg->rope_scaling = ROPE_SCALING_LINEAR;
        else if (!strcmp(st, "yarn")) cfg->rope_scaling = ROPE_SCALING_YARN;
        else {
            int r = sg_fail(err, "GGUF RoPE scaling type \"%s\" is not supported", st);
            free(st);
            return r;
        }
        cfg->rope_factor = gguf_arch_f64(g, a, "rope.scaling.factor", &f) == 0 ? f : 1.0;
        cfg->rope_orig_ctx = gguf_arch_u64(g, a, "rope.scaling.original_context_length", &v) == 0 && v < (1u << 30)
                                 ? (int)v : cfg->max_ctx;
        cfg->yarn_beta_fast = gguf_arch_f64(g, a, "rope.scaling.yarn_beta_fast", &f) == 0 ? f : 32;
        cfg->yarn_beta_slow = gguf_arch_f64(g, a, "rope.scaling.yarn_beta_slow", &f) == 0 ? f : 1;
        cfg->yarn_attn_factor = gguf_arch_f64(g, a, "rope.scaling.attn_factor", &f) == 0 && f != 1.0 ? f : -1;
    }
    free(st);
    /* vocab size from the embedding matrix when the key is absent */
    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) return sg_fail(err, "GGUF lacks tensor token_embd.weight");
    if (!cfg->n_vocab) cfg->n_vocab = (int)te->ne[1];
    cfg->tied_embeddings = gguf_find_tensor(g, "output.weight") == NULL;
    if (config_validate(cfg, err)) return -1;
    /* llama.cpp stores no NoPE list for smollm3: every 4th layer has no RoPE. smolgate's
     * converter records a list that differs from that rule under its own key. */
    config_default_rope_layers(cfg, !strcmp(a, "smollm3") ? 4 : 0);
    snprintf(key, sizeof key, "%s.smolgate.rope_layers", a);
    const gguf_kv *rl = gguf_find(g, key);
    if (rl && rl->v.type == GGUF_ARRAY && rl->v.arr.n == (uint64_t)cfg->n_layers)
        for (int i = 0; i < cfg->n_layers; i++) {
            int64_t x = 1;
            gguf_arr_i64(&rl->v, (uint64_t)i, &x);
            cfg->rope_layer[i] = x != 0;
        }
    int64_t iv;
    if (gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &iv) == 0) cfg->bos_id = (int32_t)iv;
    if (gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &iv) == 0) cfg->eos_id = (int32_t)iv;
    return 0;
}

/* ---- weights ---- */

static const float *own_f32_vector(sg_model *m, sg_dtype type, const void *data, int64_t n) {
    float *v = sg_xmalloc((size_t)n * sizeof(float));
    kern_to_f32(type, data, v, n);
    m->owned = sg_xrealloc(m->owned, (size_t)(m->n_owned + 1) * sizeof(float *));
    m->owned[m->n_owned++] = v;
    return v;
}

/* A tensor as found in a file, before it becomes a model view. */
typedef struct found {
    sg_dtype type;
    uint32_t n_dims;
    int64_t rows, cols;        /* matrix view: cols = fastest dim */
    const void *data;
} found;

static int find_tensor(sg_model *m, const char *name, found *out, sg_error *err) {
    if (m->src == MODEL_SRC_GGUF) {
        const gguf_tensor *t = gguf_find_tensor(&m->gguf, name);
        if (!t) return sg_fail(err, "tensor %s is missing", name);
        if (t->n_dims > 2 || t->ne[2] != 1 || t->ne[3] != 1)
            return sg_fail(err, "tensor %s has %u dims, expected at most 2", name, t->n_dims);
        out->type = t->type;
        out->n_dims = t->n_dims;
        out->cols = (int64_t)t->ne[0];
        out->rows = (int64_t)t->ne[1];
        out->data = t->data;
    } else {
        const st_tensor *t = st_set_find(&m->st, name);
        if (!t) return sg_fail(err, "tensor %s is missing", name);
        if (t->n_dims < 1 || t->n_dims > 2)
            return sg_fail(err, "tensor %s has %u dims, expected 1 or 2", name, t->n_dims);
        out->type = t->dtype;
        out->n_dims = t->n_dims;
        out->cols = (int64_t)t->shape[t->n_dims - 1];
        out->rows = t->n_dims == 2 ? (int64_t)t->shape[0] : 1;
        out->data = t->data;
    }
    if (!kern_supports(out->type))
        return sg_fail(err, "tensor %s has type %s, which the kernels do not support",
                       name, dtype_info(out->type) ? dtype_info(out->type)->name : "unknown");
    return 0;
}

static int bind_matrix(sg_model *m, const char *name, int64_t rows, int64_t cols, sg_tensor *dst, sg_error *err) {
    found f;
    if (find_tensor(m, name, &f, err)) return -1;
    if (f.rows != rows || f.cols != cols)
        return sg_fail(err, "tensor %s has shape (%lld, %lld), the config says (%lld, %lld)", name,
                       (long long)f.rows, (long long)f.cols, (long long)rows, (long long)cols);
    if (cols % dtype_info(f.type)->block_size)
        return sg_fail(err, "tensor %s: row length %lld is not a multiple of the %s block size", name,
                       (long long)cols, dtype_info(f.type)->name);
    dst->type = f.type;
    dst->rows = rows;
    dst->cols = cols;
    dst->data = f.data;
    return 0;
}

static int bind_vector(sg_model *m, const char *name, int64_t n, const float **dst, sg_error *err) {
    found f;
    if (find_tensor(m, name, &f, err)) return -1;
    if (f.rows != 1 || f.cols != n)
        return sg_fail(err, "tensor %s has %lld x %lld elements, the config says %lld", name,
                       (long long)f.rows, (long long)f.cols, (long long)n);
    if (dtype_info(f.type)->block_size != 1)
        return sg_fail(err, "tensor %s: norm weights must be F32, F16 or BF16", name);
    *dst = own_f32_vector(m, f.type, f.data, n);
    return 0;
}

static int bind_weights(sg_model *m, sg_error *err) {
    const sg_model_config *c = &m->cfg;
    bool gg = m->src == MODEL_SRC_GGUF;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    if (bind_matrix(m, gg ? "token_embd.weight" : "model.embed_tokens.weight", c->n_vocab, c->dim, &m->tok_embd, err))
        return -1;
    if (bind_vector(m, gg ? "output_norm.weight" : "model.norm.weight", c->dim, &m->output_norm, err)) return -1;
    if (c->tied_embeddings) {
        m->output = m->tok_embd;
    } else if (bind_matrix(m, gg ? "output.weight" : "lm_head.weight", c->n_vocab, c->dim, &m->output, err)) {
        return -1;
    }
    m->layers = sg_xcalloc((size_t)c->n_layers, sizeof(sg_layer));
    char name[160];
#define NAME(gguf_fmt, hf_fmt) (snprintf(name, sizeof name, gg ? gguf_fmt : hf_fmt, i), name)
    for (int i = 0; i < c->n_layers; i++) {
        sg_layer *l = &m->layers[i];
        if (bind_vector(m, NAME("blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight"), c->dim, &l->attn_norm, err) ||
            bind_matrix(m, NAME("blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight"), q, c->dim, &l->wq, err) ||
            bind_matrix(m, NAME("blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight"), kv, c->dim, &l->wk, err) ||
            bind_matrix(m, NAME("blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight"), kv, c->dim, &l->wv, err) ||
            bind_matrix(m, NAME("blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight"), c->dim, q, &l->wo, err) ||
            bind_vector(m, NAME("blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight"), c->dim, &l->ffn_norm, err) ||
            bind_matrix(m, NAME("blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight"), c->ffn_dim, c->dim, &l->w_gate, err) ||
            bind_matrix(m, NAME("blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight"), c->ffn_dim, c->dim, &l->w_up, err) ||
            bind_matrix(m, NAME("blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight"), c->dim, c->ffn_dim, &l->w_down, err))
            return -1;
    }
#undef NAME
    return 0;
}

/* ---- tokenizer from GGUF metadata ---- */

static sg_tokenizer *tokenizer_from_gguf(const gguf_file *g, char **chat_template, sg_error *err) {
    const gguf_kv *toks = gguf_find(g, "tokenizer.ggml.tokens");
    if (!toks) return NULL;
    if (toks->v.type != GGUF_ARRAY || toks->v.arr.elem != GGUF_STRING) {
        sg_fail(err, "tokenizer.ggml.tokens is not an array of strings");
        return NULL;
    }
    const gguf_kv *merges = gguf_find(g, "tokenizer.ggml.merges");
    const gguf_kv *types = gguf_find(g, "tokenizer.ggml.token_type");
    size_t nt = (size_t)toks->v.arr.n, nm = 0;
    const char **tp = sg_xmalloc(nt * sizeof *tp);
    size_t *tl = sg_xmalloc(nt * sizeof *tl);
    for (size_t i = 0; i < nt; i++) { tp[i] = toks->v.arr.strs[i].p; tl[i] = toks->v.arr.strs[i].n; }
    const char **mp = NULL;
    size_t *ml = NULL;
    if (merges && merges->v.type == GGUF_ARRAY && merges->v.arr.elem == GGUF_STRING) {
        nm = (size_t)merges->v.arr.n;
        mp = sg_xmalloc(nm * sizeof *mp);
        ml = sg_xmalloc(nm * sizeof *ml);
        for (size_t i = 0; i < nm; i++) { mp[i] = merges->v.arr.strs[i].p; ml[i] = merges->v.arr.strs[i].n; }
    }
    int32_t *tt = NULL;
    if (types && types->v.type == GGUF_ARRAY && types->v.arr.n == nt) {
        tt = sg_xmalloc(nt * sizeof *tt);
        for (size_t i = 0; i < nt; i++) {
            int64_t x = TOK_NORMAL;
            gguf_arr_i64(&types->v, i, &x);
            tt[i] = (int32_t)x;
        }
    }
    char *pre = gguf_get_str(g, "tokenizer.ggml.pre");
    *chat_template = gguf_get_str(g, "tokenizer.chat_template");
    int64_t bos = -1, eos = -1;
    gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &bos);
    gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &eos);
    tok_vocab_desc d = {
        .tokens = tp, .token_lens = tl, .n_tokens = nt, .types = tt,
        .merges = mp, .merge_lens = ml, .n_merges = nm, .pre = pre ? pre : "default",
        .bos_id = (int32_t)bos, .eos_id = (int32_t)eos, .chat_template = *chat_template,
    };
    sg_tokenizer *t = tok_load_vocab(&d, err);
    free(tp); free(tl); free(mp); free(ml); free(tt); free(pre);
    return t;
}

/* ---- loading ---- */

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int load_hf(sg_model *m, const char *dir, sg_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *cj = json_load_file(path, 0, &je);
    if (!cj) return sg_fail(err, "%s: %s (line %d)", path, je.text, je.line);
    int rc = model_config_from_hf(&m->cfg, cj, err);
    json_decref(cj);
    if (rc) return -1;
    m->src = MODEL_SRC_HF;
    if (st_set_open(&m->st, dir, err)) return -1;
    if (bind_weights(m, err)) return -1;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (file_exists(path)) {
        char cfgp[4096];
        snprintf(cfgp, sizeof cfgp, "%s/tokenizer_config.json", dir);
        m->tok = tok_load_json(path, file_exists(cfgp) ? cfgp : NULL, err);
        if (!m->tok) return sg_fail_wrap(err, "%s", path);
        const char *ct = tok_chat_template(m->tok);
        if (ct) m->chat_template = sg_xstrdup(ct);
    }
    return 0;
}

static int load_gguf(sg_model *m, const char *path, sg_error *err) {
    if (gguf_open(&m->gguf, path, err)) return -1;
    m->src = MODEL_SRC_GGUF;
    if (config_from_gguf(&m->cfg, &m->gguf, err)) return -1;
    if (bind_weights(m, err)) return -1;
    sg_error terr = {{0}};
    m->tok = tokenizer_from_gguf(&m->gguf, &m->chat_template, &terr);
    if (!m->tok && terr.msg[0])   /* a model without a usable vocabulary still runs on ids */
        fprintf(stderr, "smolgate: warning: %s: tokenizer not loaded: %s\n", path, terr.msg);
    return 0;
}

sg_model *model_load(const char *path, sg_error *err) {
    sg_model *m = sg_xcalloc(1, sizeof *m);
    m->path = sg_xstrdup(path);
    int rc = is_dir(path) ? load_hf(m, path, err) : load_gguf(m, path, err);
    if (rc) {
        sg_fail_wrap(err, "%s", path);
        model_free(m);
        return NULL;
    }
    if (m->tok) {
        if (m->cfg.bos_id < 0) m->cfg.bos_id = tok_bos(m->tok);
        if (m->cfg.eos_id < 0) m->cfg.eos_id = tok_eos(m->tok);
    }
    return m;
}

void model_free(sg_model *m) {
    if (!m) return;
    if (m->src == MODEL_SRC_GGUF) gguf_close(&m->gguf);
    else st_set_close(&m->st);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    if (m->tok) tok_free(m->tok);
    free(m->chat_template);
    free(m->path);
    model_config_free(&m->cfg);
    free(m);
}

static uint64_t tensor_bytes(const sg_tensor *t) {
    return (uint64_t)t->rows * dtype_row_bytes(t->type, (uint64_t)t->cols);
}

uint64_t model_weight_bytes(const sg_model *m) {
    uint64_t b = tensor_bytes(&m->output);   /* the embedding is a lookup: one row */
    for (int i = 0; i < m->cfg.n_layers; i++) {
        const sg_layer *l = &m->layers[i];
        b += tensor_bytes(&l->wq) + tensor_bytes(&l->wk) + tensor_bytes(&l->wv) + tensor_bytes(&l->wo) +
             tensor_bytes(&l->w_gate) + tensor_bytes(&l->w_up) + tensor_bytes(&l->w_down);
    }
    return b;
}
