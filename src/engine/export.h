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
#include "engine/threadpool.h"

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
    int n_threads;               /* rows converted in parallel; 0: all CPUs (same bytes either way) */
} exp_source;

/* type: the matrices' type (F32, F16, BF16 or a block type of quant.h: a matrix whose
 * rows are not whole blocks falls back to F16); norms are always F32. */
int export_gguf(const exp_source *src, sg_dtype type, const char *path, sg_error *err);

/* Chooses the stored type of each tensor (name: its GGUF name; n_dims 1 for norms). */
typedef sg_dtype (*exp_type_fn)(void *ctx, const char *name, int n_dims, int64_t cols);
typedef struct exp_types {
    exp_type_fn pick;
    void *ctx;
    uint32_t file_type;          /* general.file_type, as llama.cpp numbers it (llama_ftype) */
} exp_types;
/* export_gguf with a type per tensor (quantize.c's recipes). */
int export_gguf_types(const exp_source *src, const exp_types *types, const char *path, sg_error *err);

/* ---- streaming one tensor into a gguf_writer ---- */

/* Writes f32 row `row` (cols values) into dst. Called from several threads at once, for
 * different rows. */
typedef void (*exp_row_f32_fn)(void *ctx, int64_t row, float *dst);

/* A tensor's bytes produced on demand (export_stream_fill is a gguf_fill_fn): rows from
 * row() converted to `type` in batches of about 4 MiB, the rows of a batch spread over
 * tp's threads (tp NULL: the caller's thread). The bytes do not depend on the threads. */
typedef struct exp_stream {
    /* private */
    exp_row_f32_fn row;
    void *ctx;
    int64_t rows, cols, next_row;
    sg_dtype type;
    sg_threadpool *tp;
    unsigned char *batch;
    size_t row_bytes, batch_len, batch_pos;
    int failed;
} exp_stream;
void export_stream_init(exp_stream *s, exp_row_f32_fn row, void *ctx, int64_t rows, int64_t cols, sg_dtype type,
                        sg_threadpool *tp);
int export_stream_fill(void *stream, void *dst, size_t nbytes);
void export_stream_free(exp_stream *s);
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
/* The number of token ids dir/tokenizer.json uses (its largest id, vocab or added, plus
 * one): a model's vocabulary must be at least this. -1 with err filled on a bad file. */
int export_tokenizer_ids(const char *dir, sg_error *err);

/* Shape of a tensor kind: rows, cols. */
void export_shape(const sg_model_config *cfg, exp_kind kind, int64_t *rows, int64_t *cols);

#endif
