/* infer.h: the forward pass over a loaded model, with a KV cache.
 *
 * An sg_infer holds n_seq sequences (KV slots of n_ctx positions each, F16 by default,
 * F32 on request), scratch buffers for a micro-batch of tokens, and a thread pool.
 * infer_eval() appends tokens to sequence 0 (prompt processing runs them in batches of
 * n_batch through matrix-matrix kernels) and returns the logits of the last token or of
 * every token; infer_eval_seq() does the same for any sequence.
 *
 * infer_decode_batch() is the serving step: tokens of several sequences go through one
 * forward pass, so each weight matrix is read once for all of them (decode is bound by
 * reading the weights; attention alone is per sequence, over its own slot). Sequences
 * join and leave between steps: a slot is just its n_past, reset by truncating to 0,
 * and infer_seq_copy() gives a new sequence the cached keys and values of a shared
 * prompt prefix instead of recomputing them. The computation follows transformers' modeling code step
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

/* KV cache positions when the caller gives none: the model's limit, at most this many. */
#define INFER_DEFAULT_CTX 4096

typedef struct sg_infer_params {
    int n_ctx;          /* KV cache positions per sequence; 0: min(model max, INFER_DEFAULT_CTX) */
    int n_seq;          /* sequences (KV slots); 0: 1. The cache is n_seq x n_ctx
                           positions, allocated lazily by the OS as slots fill */
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

/* infer_eval on sequence seq (0 .. n_seq - 1). */
int infer_eval_seq(sg_infer *s, int seq, const int32_t *ids, int n, float *logits, bool all_logits, sg_error *err);

/* One step over several sequences: token i is appended to sequence seq[i] at that
 * sequence's next position (several tokens of one sequence go in order), and
 * logits + i * n_vocab receives its next-token logits (logits may be NULL). Every
 * matmul runs once over all n tokens. Fails (state unchanged) on a bad sequence or
 * id, or when a sequence would overflow its slot. */
int infer_decode_batch(sg_infer *s, const int *seq, const int32_t *tok, int n, float *logits, sg_error *err);
/* The same with logits only for the tokens with want[i] (want NULL: all), packed: row k
 * of logits belongs to the k-th wanted token. A prompt chunk in a step wants at most its
 * last token, and the LM head runs over the wanted tokens alone. */
int infer_step(sg_infer *s, const int *seq, const int32_t *tok, const bool *want, int n, float *logits, sg_error *err);

/* Sequence 0's state, as before sequences existed. */
int  infer_n_past(const sg_infer *s);
int  infer_n_ctx(const sg_infer *s);       /* positions per sequence */
/* Forgets positions >= n_past (to reuse a shared prefix). */
void infer_truncate(sg_infer *s, int n_past);

int  infer_n_seq(const sg_infer *s);
int  infer_seq_n_past(const sg_infer *s, int seq);
/* Forgets seq's positions >= n_past; 0 frees the slot for a new sequence. */
void infer_seq_truncate(sg_infer *s, int seq, int n_past);
/* Makes dst's first n positions a copy of src's (n <= src's n_past) and dst's n_past n:
 * a request sharing a prompt prefix with another starts from its keys and values. */
int  infer_seq_copy(sg_infer *s, int src, int dst, int n, sg_error *err);
const sg_model *infer_model(const sg_infer *s);
/* The RoPE inverse frequencies (head_dim / 2) and the factor applied to cos / sin. */
const float *infer_rope_freqs(const sg_infer *s, float *scale);

#endif
