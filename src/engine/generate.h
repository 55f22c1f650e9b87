/* generate.h: the generation loop shared by the command line and the gateway's local
 * provider: evaluate the prompt, then sample, stream-decode and check stop conditions
 * (EOS / end-of-turn tokens, stop strings, max tokens) one token at a time.
 *
 * gen_run drives one sequence through infer_eval. sg_gen_seq is the same loop body
 * without the forward pass, for callers that evaluate many sequences in one batched
 * step (the local provider): hand it each step's logits, get the next token back.
 *
 * Both speculate (speculate.h) unless sg_gen_params.draft is 0: a round evaluates the
 * sampled token and a drafted continuation in one pass and keeps the accepted part. */
#ifndef SG_GENERATE_H
#define SG_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/grammar.h"
#include "engine/infer.h"
#include "engine/sampler.h"
#include "engine/speculate.h"

typedef struct sg_gen_params {
    sg_sampler_params sampling;
    int max_tokens;                 /* <= 0: until the context is full */
    const char *const *stops;       /* stop strings (not included in the output) */
    size_t n_stops;
    const int32_t *stop_ids;        /* extra end tokens (e.g. <|im_end|>); EOS always ends */
    size_t n_stop_ids;
    bool ignore_eos;                /* generate through EOS (benchmarks, reference checks) */
    /* Constrained decoding (grammar.h), NULL: none. Each step samples only among the
     * tokens the grammar allows; EOS and stop_ids only where the grammar may end.
     * Generation stops ("stop") when the grammar is complete; a length cut before the
     * grammar may end is "length" with incomplete set. Needs the model's tokenizer.
     * Borrowed: each sequence keeps its own reference while it runs. */
    sg_grammar *grammar;
    /* With grammar: lazy.trigger set makes it a lazy grammar (grammar.h): free text until
     * the trigger, the grammar from there on. */
    grammar_lazy lazy;
    /* Speculative decoding: draft tokens per round at most (0: off; clamped to
     * SPEC_MAX_DRAFT); gen_params_default sets SPEC_DEFAULT_DRAFT. draft_source NULL:
     * prompt lookup (spec_lookup); benchmarks and tests may propose their own. */
    int draft;
    spec_source_fn draft_source;
    void *draft_ctx;
} sg_gen_params;

void gen_params_default(sg_gen_params *p);

/* Called for each generated token: text is the newly releasable text (UTF-8 complete,
 * stop strings held back), possibly empty; NULL when the model has no tokenizer. A last
 * call with id -1 and info NULL delivers text held back until the end. info is NULL
 * unless sampling.n_logprobs > 0.
 * Return nonzero to stop generating ("cancelled"). */
typedef int (*sg_gen_token_fn)(void *ctx, int32_t id, const char *text, size_t len,
                               const sg_sample_info *info);

typedef struct sg_gen_result {
    int n_prompt, n_generated;
    double prompt_ms, gen_ms;        /* wall time of prompt processing / generation */
    const char *finish_reason;       /* "stop", "length", "cancelled" */
    bool incomplete;                 /* constrained: the answer stopped before the grammar could end */
    int n_drafted, n_accepted;       /* speculation: draft tokens proposed / accepted */
    int n_passes;                    /* forward passes of generation (rounds and single steps) */
    double grammar_ms;               /* of gen_ms: masks computed and applied, drafts checked */
} sg_gen_result;

/* Appends prompt[n_prompt] to the sequence in inf and generates. */
int gen_run(sg_infer *inf, const int32_t *prompt, int n_prompt, const sg_gen_params *p,
            sg_gen_token_fn on_token, void *ctx, sg_gen_result *res, sg_error *err);

double gen_now_ms(void);

/* One sequence's generation, stepped by the caller. prompt[n_prompt] is the whole
 * prompt (the penalties' history); room: positions left in the sequence's KV slot after
 * the prompt (the last sampled token needs none). With p->grammar, the sequence keeps a
 * grammar state of its own (grammar.h), so a batched caller constrains each sequence
 * independently; NULL when p->grammar is set and the model has no tokenizer. */
typedef struct sg_gen_seq sg_gen_seq;
sg_gen_seq *gen_seq_new(const sg_model *m, const int32_t *prompt, int n_prompt, int room, const sg_gen_params *p);
void gen_seq_free(sg_gen_seq *g);
/* Samples from the logits that follow the last evaluated token (penalties are applied
 * in place) and streams its text to on_token. Returns 0 with *next the token to evaluate before the next call, or 1 when
 * generation has ended (held-back text delivered, gen_seq_result says why). */
int gen_seq_step(sg_gen_seq *g, float *logits, sg_gen_token_fn on_token, void *ctx, int32_t *next);
/* Speculation, for a caller that evaluates the rounds: the draft to evaluate after
 * *next (up to room tokens: KV positions left after *next), 0: none this step. */
int gen_seq_draft(sg_gen_seq *g, int room, int32_t *draft);
/* A round's verification: rows holds k + 1 logits rows (row i follows the evaluated
 * token, then draft[0 .. i - 1]), row_stride floats apart. Samples and streams position
 * after position as gen_seq_step does, while the sampled token equals the draft's.
 * Returns as gen_seq_step (*next: the token to evaluate next); *kept: tokens of the
 * round whose keys and values stay valid (the evaluated one and the accepted drafts):
 * the caller truncates the sequence to its length before the round plus *kept. */
int gen_seq_verify(sg_gen_seq *g, float *rows, size_t row_stride, const int32_t *draft, int k,
                   sg_gen_token_fn on_token, void *ctx, int32_t *next, int *kept);
/* n_generated and finish_reason (timings are the caller's). */
const sg_gen_result *gen_seq_result(const sg_gen_seq *g);

#endif
