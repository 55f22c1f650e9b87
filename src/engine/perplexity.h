/* perplexity.h: how well a model predicts a token sequence (perplexity), and how far a
 * model's next-token distributions are from a reference model's (KL divergence), the
 * measurements llama.cpp's llama-perplexity makes, so that each quantization type's
 * loss can be shown with the same yardstick.
 *
 * Windows. The tokens are cut into windows of ctx tokens, each evaluated from an empty
 * KV cache (its first token replaced by BOS when the model uses one, as llama.cpp
 * does). Default (stride 0): consecutive windows, and the predictions of the second
 * half of each window are scored, positions ctx/2 .. ctx-2 predicting tokens
 * ctx/2+1 .. ctx-1, so every scored token has at least ctx/2 tokens of context.
 * Strided (stride S, 1 <= S <= ctx-2): windows start every S tokens and score their
 * last S predictions, so every token after the first ctx-S is scored exactly once.
 *
 * Per scored position the model's logits give nll = -log softmax(logits)[target],
 * summed in double and rounded to float (so that a model compared with itself gives
 * exactly zero differences). PPL = exp(mean nll), ± = PPL * standard error of the
 * mean nll (llama.cpp's estimate).
 *
 * KL divergence. A first run on the reference model (e.g. F16) saves, per scored
 * position, its log-probabilities to a base file (format below); a second run on
 * another model over the same tokens and windows reads them back and reports
 * KL(P_base || Q_model) per position (mean ± standard error, percentiles), the share of
 * positions where both models' most likely token is the same, and the models'
 * perplexities with their difference.
 *
 * Base file (little-endian):
 *   header, 64 bytes:  char magic[8] "SGPPLKL1"; u32 version (1); u32 encoding
 *     (0 f32, 1 u16, 2 top-k); u32 n_vocab; u32 top_k; u32 ctx; u32 stride; i32 bos;
 *     u32 n_windows; u32 n_scored (per window); u32 reserved; u64 n_tokens;
 *     u64 reserved
 *   tokens:            n_tokens x i32 (the run's whole token sequence)
 *   records, n_windows x n_scored of them, in order:
 *     i32 target; i32 base_top (argmax of the base logits); f32 base_nll; then
 *     f32:   n_vocab x f32 log-probabilities (exact; 4 bytes a token)
 *     u16:   f32 lo (the smallest log-probability), n_vocab x u16 q with
 *            log p = lo + q * (-lo / 65535) (2 bytes a token, error <= -lo / 131070;
 *            the compared model's log-probabilities go through the same grid, so
 *            identical models give exactly 0)
 *     top-k: top_k x (i32 id, f32 log p), most likely first; KL is then taken over
 *            k + 1 bins (the k tokens and "all the others"), which can only
 *            underestimate the full KL (merging outcomes never increases it).
 * The base PPL, top-token agreement and ΔPPL are exact in every encoding. */
#ifndef SG_PERPLEXITY_H
#define SG_PERPLEXITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/infer.h"
#include "engine/model.h"

/* ---- one position's distribution (pure functions) ---- */

/* lp[i] = logits[i] - logsumexp(logits) (lp may be NULL); returns logsumexp. Float
 * exponentials summed in double. */
double ppl_log_softmax(const float *logits, int n, float *lp);
/* -log softmax(logits)[target]. */
double ppl_nll(const float *logits, int n, int32_t target);
/* Index of the largest value (the lowest index among equals). */
int32_t ppl_argmax(const float *x, int n);
/* KL(P || Q) = sum_i p_i (log p_i - log q_i), from log-probabilities (each normalised).
 * Terms with p_i == 0 count 0. */
double ppl_kl(const float *lp, const float *lq, int n);
/* KL over k + 1 bins: the k tokens ids[] with base log-probabilities lp_top[] and the
 * rest (1 - their mass; ignored when below float rounding, k * 2^-23), against the
 * full log-probabilities lq of Q. */
double ppl_kl_topk(const int32_t *ids, const float *lp_top, int k, const float *lq);

/* The u16 grid of the base file: encode lp (n values, each in [lo, 0]; lo < 0) ... */
void ppl_u16_encode(const float *lp, int n, float lo, uint16_t *q);
/* ... and decode to log-probabilities renormalised to sum to one. */
void ppl_u16_decode(const uint16_t *q, int n, float lo, float *lp);

/* ---- statistics ---- */

/* A running mean and variance (zero-initialise to start). */
typedef struct ppl_stat {
    int64_t n;
    double mean, m2;    /* m2: sum of squared deviations from the mean */
} ppl_stat;

void ppl_stat_add(ppl_stat *s, double x);
double ppl_stat_mean(const ppl_stat *s);
/* Standard error of the mean, sqrt(var / (n - 1)) with the population variance (the
 * estimate llama.cpp prints); 0 when n < 2. */
double ppl_stat_sem(const ppl_stat *s);
/* exp(mean nll), and in *err (may be NULL) its ± (PPL * sem). */
double ppl_from_nll(const ppl_stat *nll, double *err);
/* The q-quantile (0..1) of v[n], linear between order statistics; sorts v. */
double ppl_quantile(double *v, size_t n, double q);

/* ---- windows ---- */

typedef struct ppl_plan {
    int ctx, stride;
    int n_windows;
    int first;          /* first scored position in a window */
    int n_scored;       /* scored positions per window: first .. ctx-2 */
} ppl_plan;

/* Plans windows over n_tokens (see the top of this file). Fails when the tokens do not
 * fill one window or the stride is out of range. */
int ppl_plan_windows(size_t n_tokens, int ctx, int stride, ppl_plan *plan, sg_error *err);
/* First token of window i. */
size_t ppl_window_start(const ppl_plan *plan, int i);

/* ---- base files ---- */

typedef enum { PPL_ENC_F32 = 0, PPL_ENC_U16 = 1, PPL_ENC_TOPK = 2 } ppl_encoding;

typedef struct ppl_base_info {
    ppl_encoding enc;
    int n_vocab, top_k, ctx, stride, n_windows, n_scored;
    int32_t bos;
    size_t n_tokens;
    int32_t *tokens;    /* (n_tokens), owned: free() */
} ppl_base_info;

/* Reads a base file's header and tokens. */
int ppl_base_read_info(const char *path, ppl_base_info *info, sg_error *err);

/* ---- a run over a model ---- */

typedef struct ppl_result {
    int n_windows;
    int64_t n_scored;
    double ppl, ppl_err;
    /* with a base file */
    bool has_kl;
    double base_ppl, base_ppl_err;
    double dppl, dppl_err;          /* ppl - base_ppl, ± by the delta method */
    double ln_ratio, ln_ratio_err;  /* mean ln(PPL / PPL_base) = mean (nll - nll_base) */
    double kl_mean, kl_err, kl_max, kl_p999, kl_p99, kl_p90, kl_median, kl_min;
    double same_top, same_top_err;  /* fraction of positions with the same argmax */
    double rms_dp;                  /* RMS of p(target) - p_base(target) */
} ppl_result;

/* Called after each window with the running figures (base_ppl / kl_mean 0 without a
 * base file). */
typedef void (*ppl_progress_fn)(void *ctx, int window, int n_windows, double ppl, double kl_mean);

typedef struct ppl_params {
    int ctx;                    /* window length in tokens */
    int stride;                 /* 0: score second halves; else see the top of this file */
    int32_t bos;                /* written at each window's first position; -1: none */
    sg_infer_params infer;      /* threads, batch; n_ctx is set to ctx */
    const char *save_path;      /* write a base file (NULL: none) */
    ppl_encoding save_enc;
    int save_top_k;             /* PPL_ENC_TOPK: tokens kept per position */
    const char *kl_base_path;   /* compare with this base file (NULL: none); its tokens,
                                   ctx, stride and bos must equal the run's */
    ppl_progress_fn progress;
    void *progress_ctx;
} ppl_params;

void ppl_params_default(ppl_params *p);

/* Evaluates the windows of tokens[n_tokens] through m and fills *r. */
int ppl_run(const sg_model *m, const int32_t *tokens, size_t n_tokens, const ppl_params *p,
            ppl_result *r, sg_error *err);

#endif
