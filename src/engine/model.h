/* model.h: a loaded SmolLM3 / Llama model: its configuration, its weights (views into
 * memory-mapped files, never copied when the file's layout is usable as is) and its
 * tokenizer.
 *
 * Two sources give the same sg_model:
 *   - a GGUF file (architectures "llama" and "smollm3", keys and tensor names as
 *     llama.cpp writes them; q/k rows permuted so RoPE pairs are adjacent), and
 *   - a Hugging Face snapshot folder (config.json, model.safetensors or a sharded index,
 *     tokenizer.json + tokenizer_config.json; RoPE pairs are (i, i + d/2)).
 * Every tensor's shape is checked against the configuration at load. */
#ifndef SG_MODEL_H
#define SG_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/dtype.h"
#include "engine/gguf.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"

typedef enum { ROPE_SCALING_NONE, ROPE_SCALING_LINEAR, ROPE_SCALING_YARN, ROPE_SCALING_LLAMA3 } sg_rope_scaling;

typedef struct sg_model_config {
    char arch[16];             /* "llama" or "smollm3" */
    int n_vocab;
    int dim;                   /* hidden size */
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int ffn_dim;               /* intermediate size */
    int max_ctx;               /* max_position_embeddings (after any YaRN extension) */
    float norm_eps;
    double rope_theta;
    bool rope_interleaved;     /* true: pairs (2i, 2i+1) (GGUF); false: (i, i + d/2) (HF) */
    uint8_t *rope_layer;       /* (n_layers) 1: RoPE, 0: no positional encoding (NoPE) */
    bool tied_embeddings;
    /* RoPE scaling (transformers' rope_scaling / rope_parameters) */
    sg_rope_scaling rope_scaling;
    double rope_factor;
    int rope_orig_ctx;         /* original_max_position_embeddings */
    double yarn_beta_fast, yarn_beta_slow, yarn_attn_factor; /* attn_factor < 0: derived */
    double llama3_low_freq, llama3_high_freq;
    int32_t bos_id, eos_id;    /* from config.json / GGUF; -1 when unknown */
} sg_model_config;

/* A weight matrix (rows = output features, cols = input features), row-major, each row
 * dtype_row_bytes(type, cols) bytes; or a vector when rows == 1. */
typedef struct sg_tensor {
    sg_dtype type;
    int64_t rows, cols;
    const void *data;
} sg_tensor;

typedef struct sg_layer {
    const float *attn_norm;    /* (dim) */
    sg_tensor wq;              /* (n_heads * head_dim, dim) */
    sg_tensor wk;              /* (n_kv_heads * head_dim, dim) */
    sg_tensor wv;              /* (n_kv_heads * head_dim, dim) */
    sg_tensor wo;              /* (dim, n_heads * head_dim) */
    const float *ffn_norm;     /* (dim) */
    sg_tensor w_gate;          /* (ffn_dim, dim) */
    sg_tensor w_up;            /* (ffn_dim, dim) */
    sg_tensor w_down;          /* (dim, ffn_dim) */
} sg_layer;

typedef struct sg_model {
    sg_model_config cfg;
    sg_tensor tok_embd;        /* (n_vocab, dim) */
    const float *output_norm;  /* (dim) */
    sg_tensor output;          /* (n_vocab, dim): tok_embd when tied */
    sg_layer *layers;          /* (n_layers) */
    sg_tokenizer *tok;         /* NULL when the files carry no tokenizer */
    char *chat_template;       /* NULL when none */
    char *path;
    /* what backs the views */
    enum { MODEL_SRC_GGUF, MODEL_SRC_HF } src;
    gguf_file gguf;
    st_set st;
    float **owned;             /* f32 copies of small vectors (norms) */
    int n_owned;
} sg_model;

/* Loads a .gguf file or a Hugging Face folder. */
sg_model *model_load(const char *path, sg_error *err);
void model_free(sg_model *m);

/* Fills cfg from a parsed config.json (jansson json_t*, passed as void* to keep jansson
 * out of this header). Exposed for tests and the converter. */
int model_config_from_hf(sg_model_config *cfg, const void *config_json, sg_error *err);
void model_config_free(sg_model_config *cfg);
/* Bytes of weights read per generated token (for the decode roofline). */
uint64_t model_weight_bytes(const sg_model *m);

#endif
