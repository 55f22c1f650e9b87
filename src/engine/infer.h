/* infer.h: the forward pass over a loaded model, with a KV cache.
 *
 * An sg_infer holds one sequence's state: the KV cache (n_ctx positions, F16 by
 * default, F32 on request), scratch buffers for a micro-batch of tokens, and a thread
 * pool. infer_eval() appends tokens to the sequence (prompt processing runs them in
 * batches of n_batch through matrix-matrix kernels) and returns the logits of the last
 * token or of every token. The computation follows transformers' modeling code step
 * by step: embedding, per layer RMSNorm -> q/k/v -> RoPE (on the layers that use it)
 * -> causal grouped-query attention -> output projection -> residual -> RMSNorm ->
 * SwiGLU MLP -> residual; final RMSNorm and the LM head. */
#ifndef SG_INFER_H
#define SG_INFER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/model.h"

/* Prompt tokens per forward step: the matrix-matrix kernels unpack each weight tile once
 * per step, so larger steps amortise that over more tokens. */
#define INFER_DEFAULT_BATCH 256

typedef struct sg_infer_params {
    int n_ctx;          /* KV cache positions; 0: min(model max, 4096) */
    int n_threads;      /* 0: all online CPUs */
    int n_batch;        /* tokens per prompt-processing step; 0: INFER_DEFAULT_BATCH */
    sg_dtype kv_type;   /* SG_F16 (default) or SG_F32 */
    int bf16_activations; /* 1: round activations to bf16 as transformers does for a bf16
                             model; 0: f32 activations; -1 (default): on for Hugging Face
                             folders with bf16 weights, off otherwise */
} sg_infer_params;

void infer_params_default(sg_infer_params *p);

typedef struct sg_infer sg_infer;

sg_infer *infer_new(const sg_model *m, const sg_infer_params *p, sg_error *err);
void infer_free(sg_infer *s);

/* Runs n tokens at positions n_past .. n_past + n - 1. logits: (n, n_vocab) when
 * all_logits, else (n_vocab) for the last token; may be NULL. Fails (state unchanged)
 * when an id is out of range or the cache would overflow. */
int infer_eval(sg_infer *s, const int32_t *ids, int n, float *logits, bool all_logits, sg_error *err);

int  infer_n_past(const sg_infer *s);
int  infer_n_ctx(const sg_infer *s);
/* Forgets positions >= n_past (to reuse a shared prefix). */
void infer_truncate(sg_infer *s, int n_past);
const sg_model *infer_model(const sg_infer *s);
/* The RoPE inverse frequencies (head_dim / 2) and the factor applied to cos / sin. */
const float *infer_rope_freqs(const sg_infer *s, float *scale);

#endif
