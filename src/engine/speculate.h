/* speculate.h: speculative decoding without a second model (prompt lookup).
 *
 * A draft is a guess at the tokens that come next, made from the text so far: the last
 * n tokens of the history (n from SPEC_NGRAM_MAX down to 1) are looked up earlier in
 * the history (the prompt and the answer), and the tokens that followed their latest
 * earlier occurrence are proposed (where those run into the end of the history, the
 * draft continues with its own tokens: a loop is drafted as far as asked). An answer that quotes its prompt (a code edit, an
 * extraction, RAG) or repeats itself is guessed a run of tokens at a time.
 *
 * The caller evaluates the token it just sampled and the draft in one forward pass
 * (infer_eval / infer_step with a logits row per token: the weights are read once for
 * all of them), then samples position after position from those rows: a draft token is
 * accepted when the token sampled at its position is that token, and the first sampled
 * token that differs ends the round (it becomes the next token to evaluate; the cache
 * is truncated to drop the rejected draft's keys and values). With a deterministic
 * draft (q a point mass on x) this is the standard speculative-sampling rule: draft x
 * is accepted with probability p(x) = min(1, p(x) / q(x)), and on rejection the token is
 * distributed as p with x removed and renormalised (norm(max(0, p - q))). Sampling
 * from p and comparing draws once per generated token, as plain decoding does, so a
 * seed gives the same tokens with or without a draft wherever the verification pass
 * computes the same logits as a decode step (greedy: the argmax of the same row).
 *
 * Drafting is adaptive (sg_spec, one per sequence): the draft length doubles while
 * whole drafts are accepted and falls back to one past the accepted run after a miss;
 * after two rounds in a row with nothing accepted, drafting pauses for 8, 16, 32, ...,
 * SPEC_MAX_PAUSE decode steps, and a probe after a pause that accepts nothing pauses
 * again at once. Where the answer does not quote (drafts rejected), 7 rounds of a short
 * draft in the first 256 steps (under 3%), then one one-token round per SPEC_MAX_PAUSE
 * steps, pay a verification; any accepted token ends the pauses. */
#ifndef SG_SPECULATE_H
#define SG_SPECULATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest n-gram looked up, and the most draft tokens per round: a verification pass of
 * 1 + SPEC_MAX_DRAFT tokens stays on the row kernels (fewer than KERN_GEMM_MIN_TOKENS
 * tokens), which read each weight row once for several tokens. */
#define SPEC_NGRAM_MAX 3
#define SPEC_MAX_DRAFT 14
/* Draft tokens per round when the caller does not say (sg_gen_params.draft). */
#define SPEC_DEFAULT_DRAFT 8
/* A batched step's decode tokens and drafts together at most (the local provider): a
 * step stays on the row kernels, and drafts ride along only while few sequences decode. */
#define SPEC_STEP_TOKENS 15
/* Decode steps drafting pauses after misses: the first pause, and the longest. */
#define SPEC_FIRST_PAUSE 8
#define SPEC_MAX_PAUSE 256

/* Proposes up to k tokens to follow hist[n] into out; returns how many (0: none). */
typedef int (*spec_source_fn)(void *ctx, const int32_t *hist, size_t n, int k, int32_t *out);

/* The prompt-lookup source: the tokens that followed the latest earlier occurrence of the
 * history's last n tokens, n = SPEC_NGRAM_MAX .. 1 (the longest that occurs). */
int spec_lookup(void *ctx, const int32_t *hist, size_t n, int k, int32_t *out);

typedef struct sg_spec {
    int max_draft;          /* 0: off */
    int k;                  /* this round's draft length at most */
    int misses;             /* rounds in a row with nothing accepted */
    int pause, pause_next;  /* decode steps left without drafting; the next pause */
    bool probing;           /* drafting again after a pause: one miss pauses again */
    spec_source_fn source;  /* spec_lookup unless a caller (benchmark, test) sets another */
    void *source_ctx;
    long long drafted, accepted, rounds;   /* totals, for statistics */
} sg_spec;

/* max_draft clamped to 0 .. SPEC_MAX_DRAFT. */
void spec_init(sg_spec *s, int max_draft);
/* The draft for the next round: up to min(the adaptive length, limit) tokens into out,
 * following hist[n] (whose last token is the one about to be evaluated). 0: decode one
 * token as usual (drafting off or paused, no match, or limit <= 0); each 0 while paused
 * counts one step of the pause. */
int spec_draft(sg_spec *s, const int32_t *hist, size_t n, int limit, int32_t *out);
/* The round's outcome: drafted tokens proposed, accepted of them. */
void spec_update(sg_spec *s, int drafted, int accepted);

#endif
