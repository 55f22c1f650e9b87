/* sampler.h: turning logits into the next token, and stop strings.
 *
 * Order of operations (as llama.cpp and Hugging Face apply them): penalties
 * (repetition, presence, frequency over the last penalty_last_n tokens), then
 * temperature; temperature <= 0 is greedy (argmax). Then top-k, top-p, min-p, and a
 * draw from a seeded generator (same seed, same output). Log-probabilities are those
 * of the model's raw distribution (log-softmax of the unmodified logits), as OpenAI's
 * `logprobs` reports them. */
#ifndef SG_SAMPLER_H
#define SG_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct sg_sampler_params {
    float temperature;          /* <= 0: greedy */
    int   top_k;                /* <= 0: off */
    float top_p;                /* >= 1: off */
    float min_p;                /* <= 0: off */
    float repetition_penalty;   /* 1: off (HF style: divide positive logits, multiply negative) */
    float presence_penalty;     /* 0: off (OpenAI style: subtract once if present) */
    float frequency_penalty;    /* 0: off (subtract count * penalty) */
    int   penalty_last_n;       /* history window for penalties; <= 0: whole history */
    uint64_t seed;
    int   n_logprobs;           /* top alternatives to report, 0..20 */
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
    sg_logprob top[SG_MAX_LOGPROBS];   /* best first */
} sg_sample_info;

typedef struct sg_sampler sg_sampler;
sg_sampler *sampler_new(const sg_sampler_params *p, size_t n_vocab);
void sampler_free(sg_sampler *s);
/* Chooses a token. logits (n_vocab) is scratch and may be modified. history: the ids
 * so far (prompt + generated) for penalties. info may be NULL. */
int32_t sampler_sample(sg_sampler *s, float *logits, const int32_t *history, size_t n_history,
                       sg_sample_info *info);

/* Stop strings over streamed text: text is fed in pieces; what cannot be the start of
 * a stop string is released at once, the rest is held back until it is decided. */
typedef struct sg_stop sg_stop;
sg_stop *stop_new(const char *const *stops, size_t n);
void stop_free(sg_stop *s);
/* Feeds text; appends releasable text to out (an sg_buf from common/buf.h, passed as
 * void* to keep this header light). Returns 1 when a stop string matched (out then holds
 * everything before it and the rest is dropped), else 0. */
int stop_feed(sg_stop *s, const char *text, size_t len, void *out);
/* At the end of generation: releases what was held back. */
void stop_flush(sg_stop *s, void *out);

#endif
