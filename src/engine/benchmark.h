/* benchmark.h: the engine's speed, measured the way llama-bench measures it, and set
 * against the machine's limit.
 *
 *   pp   prompt processing: n_prompt tokens evaluated from an empty cache in batches of
 *        n_batch (the logits of the last one computed), tokens/s;
 *   tg   generation: n_gen tokens evaluated one at a time from an empty cache, each with
 *        its logits (the LM head included), tokens/s;
 * both as mean and sample standard deviation over `reps` repetitions, after one
 * untimed warm-up (which also pages in memory-mapped weights). Token ids are
 * pseudo-random from a seed: speed does not depend on them.
 *
 * Decode is memory-bound: each generated token reads every weight once
 * (model_weight_bytes()). bench_mem_bandwidth() measures what the machine can read
 * (threads streaming through a buffer far larger than the caches, with the widest
 * SIMD loads the kernel table uses), so bandwidth / weight bytes is the decode
 * roofline, the tokens/s no engine can pass on this machine.
 *
 * Constrained generation (bench_generate): the same generation loop with and without a
 * grammar, so the difference is the cost of the masks (grammar.h).
 *
 * Speculative decoding (bench_speculation): the cost of a verification pass of 1 + k
 * tokens against a decode step, and greedy generation with speculation off, with drafts
 * that quote the answer (what prompt lookup proposes when the answer repeats its prompt,
 * which a random-weight model does not do by itself), with drafts that always miss, and
 * with prompt lookup itself.
 *
 * Concurrent sequences: the aggregate tokens/s when N sequences decode at once.
 * A bench_decoder is what advances N sequences by one token each. bench_batched (what
 * `smolgate bench` and the gateway's local provider use) runs one infer_decode_batch
 * step for all N: the weights are read once per step, so while decode is memory-bound
 * the aggregate grows with N. bench_round_robin steps N independent sg_infer contexts
 * one after another, reading the weights N times per step: the baseline that shows
 * what batching buys. */
#ifndef SG_BENCHMARK_H
#define SG_BENCHMARK_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/grammar.h"
#include "engine/infer.h"
#include "engine/model.h"

typedef struct bench_params {
    int n_prompt;               /* pp tokens (llama-bench -p); 0: no pp test */
    int n_gen;                  /* tg tokens (llama-bench -n); 0: no tg test */
    int reps;                   /* repetitions of each (llama-bench -r) */
    sg_infer_params infer;      /* threads, batch, KV type; n_ctx is set as needed */
    uint64_t seed;              /* token ids */
} bench_params;

void bench_params_default(bench_params *p);   /* 512, 128, 3 reps, seed 1 */

/* Mean and sample standard deviation (n - 1; 0 for n < 2) of x[n]. */
void bench_mean_sd(const double *x, int n, double *mean, double *sd);

/* tok_s[reps]: each repetition's tokens/s. */
int bench_pp(const sg_model *m, const bench_params *p, double *tok_s, sg_error *err);
int bench_tg(const sg_model *m, const bench_params *p, double *tok_s, sg_error *err);

/* Read bandwidth in GB/s (1e9 bytes/s): n_threads threads sum a buffer of `bytes`
 * bytes (filled first, so its pages are real), best of `runs` passes. Sets *simd to the
 * loads used ("avx512", "avx2", "scalar"), following the active kernel table. Fails when
 * the buffer cannot be allocated. */
int bench_mem_bandwidth(int n_threads, size_t bytes, int runs, double *gbs, const char **simd, sg_error *err);

/* The model's type as llama.cpp names files: GGUF general.file_type ("Q4_K_M",
 * "Q8_0", "F16", ...) when the file has one, else its attention weights' type. */
const char *bench_model_type(const sg_model *m);

/* Locks the model's memory-mapped files in RAM (mlock), so that the kernel cannot evict
 * weight pages between or during runs: on machines that reclaim idle page cache
 * eagerly (some VMs), an unlocked model pages in from disk and decode figures measure
 * the disk. Needs RLIMIT_MEMLOCK or CAP_IPC_LOCK; the pages stay locked until the
 * model is freed (munmap unlocks them). */
int bench_lock_weights(const sg_model *m, sg_error *err);

/* Peak resident set size of this process so far, in MB (1e6 bytes). */
double bench_peak_rss_mb(void);

/* ---- constrained generation ---- */

/* Generation through gen_run (sampling at temperature 1, detokenizing, and with g the
 * grammar's mask at each step): runs of up to n_gen tokens after a 16-token pseudo-random
 * prompt, repeated with new seeds until n_gen tokens were generated (a grammar may end a
 * run early), tokens/s of generation time per repetition. g NULL: unconstrained, the
 * baseline. Needs the model's tokenizer when g is set. grammar_pct (may be NULL): per
 * repetition, the share of generation time spent on the grammar (masks, draft checks),
 * a figure the machine's neighbours do not move the way they move tokens/s. */
int bench_generate(const sg_model *m, const bench_params *p, sg_grammar *g, double *tok_s, double *grammar_pct, sg_error *err);

/* ---- concurrent sequences ---- */

typedef struct bench_decoder_ops {
    const char *name;       /* printed with the figures */
    /* n_seq sequences of up to n_ctx positions each. */
    void *(*open)(const sg_model *m, int n_seq, int n_ctx, const sg_infer_params *ip, sg_error *err);
    /* Appends ids[n] to sequence `seq` (its prompt). */
    int (*prefill)(void *d, int seq, const int32_t *ids, int n, sg_error *err);
    /* Appends ids[i] to each sequence i and writes its next-token logits to
     * logits + i * n_vocab: one decode step for all. */
    int (*step)(void *d, const int32_t *ids, float *logits, sg_error *err);
    void (*close)(void *d);
} bench_decoder_ops;

/* N independent sg_infer contexts stepped one after another. */
extern const bench_decoder_ops bench_round_robin;
/* One sg_infer with N sequences, one batched step for all. */
extern const bench_decoder_ops bench_batched;

/* n_seq sequences each prefilled with n_prompt pseudo-random tokens, then n_gen decode
 * steps (each sequence's next token its greedy choice), timed after one untimed step;
 * *tok_s = n_seq * n_gen / seconds. */
int bench_concurrency(const sg_model *m, const bench_decoder_ops *ops, int n_seq, int n_prompt, int n_gen,
                      const bench_params *p, double *tok_s, sg_error *err);

/* ---- speculative decoding ---- */

/* One generation variant over the repetitions: tokens/s (generation time), and the
 * speculation counts summed. */
typedef struct bench_spec_run {
    int n;
    double mean, min, max;              /* tok/s of wall time */
    double cpu_mean, cpu_min, cpu_max;  /* tok/s of the process's CPU time: on a shared
                                           machine, with one thread, what the work costs */
    long long drafted, accepted, passes, generated;
} bench_spec_run;

typedef struct bench_spec {
    int n_pass;
    int pass_k[8];          /* draft tokens of each pass measured (0: a decode step) */
    double pass_ms[8];      /* ms of a forward pass of 1 + k tokens with every row's logits */
    double pass_cpu_ms[8];  /* ... of the process's CPU time */
    /* greedy generation of n_gen tokens after n_prompt pseudo-random tokens: */
    bench_spec_run plain;   /* speculation off */
    bench_spec_run quoting; /* drafts from the answer, one token in 16 changed: an answer
                               that quotes its prompt with edits, as prompt lookup sees it */
    bench_spec_run missing; /* drafts that are always wrong: the adaptive length's cost */
    bench_spec_run lookup;  /* prompt lookup on this prompt (a random model does not quote) */
} bench_spec;

/* Speculative decoding's figures (above) with up to `draft` tokens per round, p->reps
 * repetitions after a warm-up, the variants alternating. */
int bench_speculation(const sg_model *m, const bench_params *p, int draft, bench_spec *r, sg_error *err);

#endif
