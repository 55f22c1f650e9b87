/* export.h: writing models: GGUF files (as llama.cpp's converter lays them out: its
 * metadata keys, tensor names, q/k rows permuted for interleaved RoPE, 1-D tensors in
 * F32) and Hugging Face folders (config.json + model.safetensors).
 *
 * Weights come from a row source in Hugging Face layout (rows = output features,
 * q/k unpermuted), one f32 row at a time, so a multi-gigabyte model is streamed to
 * disk. Two sources exist: a loaded model (`smolgate convert`) and a seeded random
 * generator (`smolgate make-model`). */
#ifndef SG_EXPORT_H
#define SG_EXPORT_H

#include <stdint.h>

#include "common/error.h"
#include "engine/model.h"

typedef enum {
    EXP_EMBD, EXP_OUTPUT_NORM, EXP_OUTPUT,
    EXP_ATTN_NORM, EXP_Q, EXP_K, EXP_V, EXP_O, EXP_FFN_NORM, EXP_GATE, EXP_UP, EXP_DOWN,
    EXP_KIND_COUNT
} exp_kind;

/* Writes row `row` of tensor (kind, layer) as f32 into dst (the tensor's row length).
 * Vectors (norms) have one row. */
typedef void (*exp_row_fn)(void *ctx, exp_kind kind, int layer, int64_t row, float *dst);

typedef struct exp_source {
    const sg_model_config *cfg;
    exp_row_fn row;
    void *ctx;
    const char *tokenizer_dir;   /* folder with tokenizer.json (+ tokenizer_config.json), or NULL */
    const char *name;            /* general.name */
} exp_source;

/* type: F32, F16, BF16 or Q8_0 for the matrices; norms are always F32. */
int export_gguf(const exp_source *src, sg_dtype type, const char *path, sg_error *err);
/* type: F32, F16 or BF16. Writes DIR/config.json, DIR/model.safetensors,
 * DIR/generation_config.json, and copies the tokenizer files when tokenizer_dir is set. */
int export_hf(const exp_source *src, sg_dtype type, const char *dir, sg_error *err);

/* A row source that reads a loaded model (undoing the GGUF q/k permutation). */
void export_model_source(exp_source *src, const sg_model *m);

/* A row source of deterministic random weights (same seed, same file). */
typedef struct exp_random {
    uint64_t seed;
    const sg_model_config *cfg;   /* set by export_random_source */
} exp_random;
void export_random_source(exp_source *src, const sg_model_config *cfg, exp_random *r);

/* Shape of a tensor kind: rows, cols. */
void export_shape(const sg_model_config *cfg, exp_kind kind, int64_t *rows, int64_t *cols);

#endif
