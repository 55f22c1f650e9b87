/* sampler.h: turning logits into the next token, and stop strings.
 *
 * Order of operations (as Hugging Face applies them): penalties (repetition, presence,
 * frequency over the last penalty_last_n tokens), then temperature; temperature <= 0 is
 * greedy (argmax, ties to the lowest id). Then top-k, top-p (renormalised over the top-k
 * survivors), min-p (relative to the most likely token), and a draw from a seeded
 * generator: the same seed and the same sequence of logits give the same tokens.
 * Log-probabilities are those of the model's raw distribution (log-softmax of the
 * unmodified logits), as OpenAI's `logprobs` reports them.
 *
 * Cost is linear in the vocabulary: top-k and top-p use partial selection, not a sort,
 * and top-k, top-p and min-p never consider tokens whose probability is below float
 * resolution of the total. Exponentials are computed to about 2e-7 relative, so
 * reported logprobs are good to about 1e-6. Logits are expected finite, or -inf for
 * masked tokens, which are never drawn. */
#ifndef SG_SAMPLER_H
#define SG_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct sg_sampler_params {
    float temperature;          /* <= 0: greedy */
    int   top_k;                /* <= 0: off */
    float top_p;                /* >= 1: off; keeps at least one token */
    float min_p;                /* <= 0: off; keeps p >= min_p * p_max */
    float repetition_penalty;   /* 1 (or <= 0): off (HF style: divide positive logits, multiply negative) */
    float presence_penalty;     /* 0: off (OpenAI style: subtract once if present) */
    float frequency_penalty;    /* 0: off (subtract count * penalty) */
    int   penalty_last_n;       /* history window for penalties; <= 0: whole history */
    uint64_t seed;
    int   n_logprobs;           /* top alternatives to report, 0..20 (clamped) */
} sg_sampler_params;

void sampler_params_default(sg_sampler_params *p);   /* greedy, no penalties, seed 0 */

#define SG_MAX_LOGPROBS 20
typedef struct sg_logprob {
    int32_t id;
    float logprob;
} sg_logprob;
typedef struct sg_sample_info {
    float logprob;                     /* of the chosen token */
    int n_top;
    sg_logprob top[SG_MAX_LOGPROBS];   /* best first, ties to the lowest id */
} sg_sample_info;

typedef struct sg_sampler sg_sampler;
/* Copies p. NULL when n_vocab is 0 or does not fit an int32 id. */
sg_sampler *sampler_new(const sg_sampler_params *p, size_t n_vocab);
void sampler_free(sg_sampler *s);
/* Restarts the generator as if the sampler had just been made with this seed. */
void sampler_seed(sg_sampler *s, uint64_t seed);
/* Chooses a token. logits (n_vocab) is scratch and may be modified. history: the ids
 * so far (prompt + generated) for penalties; ids outside the vocabulary are ignored.
 * info may be NULL. Every call with temperature > 0 advances the generator by one draw,
 * even when only one candidate is left. */
int32_t sampler_sample(sg_sampler *s, float *logits, const int32_t *history, size_t n_history,
                       sg_sample_info *info);
/* The penalty step of sampler_sample on its own: rewrites logits in place. For callers
 * that want the penalised logits, and for tests. */
void sampler_penalize(sg_sampler *s, float *logits, const int32_t *history, size_t n_history);

/* Stop strings over streamed text: text is fed in pieces; what cannot be the start of
 * a stop string is released at once, the rest is held back until it is decided. Works
 * on bytes, so a multi-byte UTF-8 stop string split across pieces still matches. Empty
 * stop strings are ignored. */
typedef struct sg_stop sg_stop;
/* Copies the strings. n may be 0 (everything passes through). */
sg_stop *stop_new(const char *const *stops, size_t n);
void stop_free(sg_stop *s);
/* Feeds text; appends releasable text to out (an sg_buf from common/buf.h, passed as
 * void* to keep this header light; NULL discards). Returns 1 when a stop string matched
 * (out then holds everything before it and the rest is dropped), else 0. When several
 * stops match, the one starting earliest wins. After a match, further feeds release
 * nothing and return 1. */
int stop_feed(sg_stop *s, const char *text, size_t len, void *out);
/* At the end of generation: releases what was held back. */
void stop_flush(sg_stop *s, void *out);
/* Index (into the array given to stop_new) of the stop string that matched, or -1.
 * Anthropic's API reports it as stop_sequence. */
int stop_which(const sg_stop *s);

#endif
