/* benchmark.c: see benchmark.h. */
#include "engine/benchmark.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "common/buf.h"
#include "common/mapfile.h"
#include "engine/generate.h"
#include "engine/kernels.h"
#include "engine/threadpool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_params_default(bench_params *p) {
    memset(p, 0, sizeof *p);
    p->n_prompt = 512;
    p->n_gen = 128;
    p->reps = 3;
    p->seed = 1;
    infer_params_default(&p->infer);
}

void bench_mean_sd(const double *x, int n, double *mean, double *sd) {
    double m = 0, v = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m = n ? m / n : 0;
    for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    *mean = m;
    *sd = n > 1 ? sqrt(v / (n - 1)) : 0;
}

/* Pseudo-random ids in [0, n_vocab) (splitmix64). */
static void random_ids(uint64_t seed, int32_t *ids, int n, int n_vocab) {
    uint64_t x = seed;
    for (int i = 0; i < n; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        ids[i] = (int32_t)((z ^ (z >> 31)) % (uint64_t)n_vocab);
    }
}

/* ---- pp and tg ---- */

typedef struct bench_ctx {
    sg_infer *s;
    int32_t *ids;
    float *logits;      /* (n_vocab) */
    int n_ids;
} bench_ctx;

static int ctx_open(bench_ctx *b, const sg_model *m, const bench_params *p, int n_ids, sg_error *err) {
    memset(b, 0, sizeof *b);
    sg_infer_params ip = p->infer;
    ip.n_ctx = n_ids + 1;
    if (!(b->s = infer_new(m, &ip, err))) return -1;
    b->n_ids = n_ids;
    b->ids = sg_xmalloc((size_t)(n_ids + 1) * sizeof(int32_t));
    random_ids(p->seed, b->ids, n_ids + 1, m->cfg.n_vocab);
    b->logits = sg_xmalloc((size_t)m->cfg.n_vocab * sizeof(float));
    return 0;
}

static void ctx_close(bench_ctx *b) {
    infer_free(b->s);
    free(b->ids);
    free(b->logits);
}

/* One generated token evaluated and a batch of prompt: touches every weight. */
static int warm_up(bench_ctx *b, int n, sg_error *err) {
    infer_truncate(b->s, 0);
    if (infer_eval(b->s, b->ids, 1, b->logits, false, err)) return -1;
    infer_truncate(b->s, 0);
    return infer_eval(b->s, b->ids, n < b->n_ids ? n : b->n_ids, b->logits, false, err);
}

int bench_pp(const sg_model *m, const bench_params *p, double *tok_s, sg_error *err) {
    bench_ctx b;
    if (p->n_prompt <= 0) return sg_fail(err, "pp needs at least one token");
    if (ctx_open(&b, m, p, p->n_prompt, err)) return -1;
    int rc = warm_up(&b, p->infer.n_batch > 0 ? p->infer.n_batch : INFER_DEFAULT_BATCH, err);
    for (int r = 0; r < p->reps && !rc; r++) {
        infer_truncate(b.s, 0);
        double t0 = now_s();
        rc = infer_eval(b.s, b.ids, p->n_prompt, b.logits, false, err);
        tok_s[r] = p->n_prompt / (now_s() - t0);
    }
    ctx_close(&b);
    return rc;
}

int bench_tg(const sg_model *m, const bench_params *p, double *tok_s, sg_error *err) {
    bench_ctx b;
    if (p->n_gen <= 0) return sg_fail(err, "tg needs at least one token");
    if (ctx_open(&b, m, p, p->n_gen, err)) return -1;
    int rc = warm_up(&b, 1, err);
    for (int r = 0; r < p->reps && !rc; r++) {
        infer_truncate(b.s, 0);
        double t0 = now_s();
        for (int i = 0; i < p->n_gen && !rc; i++) rc = infer_eval(b.s, b.ids + i, 1, b.logits, false, err);
        tok_s[r] = p->n_gen / (now_s() - t0);
    }
    ctx_close(&b);
    return rc;
}

/* ---- constrained generation ---- */

int bench_generate(const sg_model *m, const bench_params *p, sg_grammar *g, double *tok_s, double *grammar_pct, sg_error *err) {
    enum { N_PROMPT = 16 };
    if (p->n_gen <= 0) return sg_fail(err, "generation needs at least one token");
    if (g && !m->tok) return sg_fail(err, "constrained generation needs the model's tokenizer");
    bench_ctx b;
    if (ctx_open(&b, m, p, N_PROMPT + p->n_gen + 1, err)) return -1;
    sg_gen_params gp;
    gen_params_default(&gp);
    gp.sampling.temperature = 1;
    gp.sampling.top_p = 1;
    gp.grammar = g;
    int rc = warm_up(&b, N_PROMPT, err);
    uint64_t seed = p->seed;
    for (int r = 0; r < p->reps && !rc; r++) {
        int done = 0;
        double ms = 0, gms = 0;
        while (done < p->n_gen && !rc) {
            sg_gen_result res;
            infer_truncate(b.s, 0);
            gp.sampling.seed = seed++;
            gp.max_tokens = p->n_gen - done;
            rc = gen_run(b.s, b.ids, N_PROMPT, &gp, NULL, NULL, &res, err);
            if (!rc && res.n_generated == 0) rc = sg_fail(err, "a run generated nothing");
            done += res.n_generated;
            ms += res.gen_ms;
            gms += res.grammar_ms;
        }
        tok_s[r] = ms > 0 ? done * 1000.0 / ms : 0;
        if (grammar_pct) grammar_pct[r] = ms > 0 ? 100 * gms / ms : 0;
    }
    ctx_close(&b);
    return rc;
}

/* ---- memory bandwidth ---- */

typedef uint64_t (*sum_fn)(const unsigned char *p, size_t n);   /* n: a multiple of 256 */

static uint64_t sum_scalar(const unsigned char *p, size_t n) {
    const uint64_t *q = (const uint64_t *)(const void *)p;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < n / 8; i += 4) {
        s0 += q[i];
        s1 += q[i + 1];
        s2 += q[i + 2];
        s3 += q[i + 3];
    }
    return s0 + s1 + s2 + s3;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static uint64_t sum_avx2(const unsigned char *p, size_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(const void *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(const void *)(p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(const void *)(p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(const void *)(p + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)(void *)out, s);
    return out[0] + out[1] + out[2] + out[3];
}

__attribute__((target("avx512f"))) static uint64_t sum_avx512(const unsigned char *p, size_t n) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_load_si512((const void *)(p + i)));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512((const void *)(p + i + 64)));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512((const void *)(p + i + 128)));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512((const void *)(p + i + 192)));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}
#endif

typedef struct bw_job {
    unsigned char *buf;
    size_t bytes;
    sum_fn sum;
    bool fill;
    uint64_t sink[256];     /* each thread's sum, so the reads cannot be optimised away */
} bw_job;

static void bw_worker(void *ctx, int ith, int nth) {
    bw_job *j = ctx;
    size_t per = j->bytes / (size_t)nth / 256 * 256, off = per * (size_t)ith;
    if (j->fill) memset(j->buf + off, 0x5a + ith, per);   /* first touch by the reading thread */
    else j->sink[ith & 255] += j->sum(j->buf + off, per);
}

int bench_mem_bandwidth(int n_threads, size_t bytes, int runs, double *gbs, const char **simd, sg_error *err) {
    if (n_threads < 1) n_threads = 1;
    if (bytes < (size_t)n_threads * 256) bytes = (size_t)n_threads * 256;
    bw_job j = {.bytes = bytes, .sum = sum_scalar};
    *simd = "scalar";
#if defined(__x86_64__)
    const char *k = kern_active()->name;
    if (!strcmp(k, "avx512")) { j.sum = sum_avx512; *simd = "avx512"; }
    else if (!strcmp(k, "avx2")) { j.sum = sum_avx2; *simd = "avx2"; }
#endif
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return sg_fail(err, "cannot map %zu MiB for the bandwidth test", bytes >> 20);
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);   /* fewer TLB misses: the test measures DRAM, not page walks */
#endif
    j.buf = p;
    sg_threadpool *tp = tp_new(n_threads);
    j.fill = true;
    tp_run(tp, bw_worker, &j);
    j.fill = false;
    size_t read = j.bytes / (size_t)n_threads / 256 * 256 * (size_t)n_threads;
    double best = 0;
    for (int r = 0; r < (runs > 0 ? runs : 1); r++) {
        double t0 = now_s();
        tp_run(tp, bw_worker, &j);
        double g = (double)read / (now_s() - t0) / 1e9;
        if (g > best) best = g;
    }
    tp_free(tp);
    munmap(p, bytes);
    *gbs = best;
    return 0;
}

const char *bench_model_type(const sg_model *m) {
    /* llama.cpp's llama_ftype values */
    static const struct { int ftype; const char *name; } names[] = {
        {0, "F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {7, "Q8_0"}, {8, "Q5_0"}, {9, "Q5_1"},
        {10, "Q2_K"}, {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"},
        {16, "Q5_K_S"}, {17, "Q5_K_M"}, {18, "Q6_K"}, {32, "BF16"},
    };
    int64_t ft;
    if (m->src == MODEL_SRC_GGUF && gguf_get_i64(&m->gguf, "general.file_type", &ft) == 0)
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (names[i].ftype == ft) return names[i].name;
    return dtype_info(m->layers[0].wq.type)->name;
}

static int lock_map(const sg_mapfile *f, sg_error *err) {
    if (f->data && f->size && mlock(f->data, f->size))
        return sg_fail(err, "cannot lock %zu MiB of weights in memory: %s (raise ulimit -l)", f->size >> 20, strerror(errno));
    return 0;
}

int bench_lock_weights(const sg_model *m, sg_error *err) {
    if (m->src == MODEL_SRC_GGUF) return lock_map(&m->gguf.map, err);
    for (size_t i = 0; i < m->st.n_files; i++)
        if (lock_map(&m->st.files[i].map, err)) return -1;
    return 0;
}

double bench_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (double)ru.ru_maxrss * 1024.0 / 1e6;   /* Linux reports KiB */
}

/* ---- concurrent sequences ---- */

typedef struct round_robin {
    int n_seq, n_vocab;
    sg_infer **s;           /* (n_seq) */
} round_robin;

static void rr_close(void *d) {
    round_robin *rr = d;
    if (!rr) return;
    for (int i = 0; i < rr->n_seq; i++) infer_free(rr->s[i]);
    free(rr->s);
    free(rr);
}

static void *rr_open(const sg_model *m, int n_seq, int n_ctx, const sg_infer_params *ip, sg_error *err) {
    round_robin *rr = sg_xcalloc(1, sizeof *rr);
    rr->n_vocab = m->cfg.n_vocab;
    rr->s = sg_xcalloc((size_t)n_seq, sizeof *rr->s);
    sg_infer_params p = *ip;
    p.n_ctx = n_ctx;
    for (; rr->n_seq < n_seq; rr->n_seq++)
        if (!(rr->s[rr->n_seq] = infer_new(m, &p, err))) { rr_close(rr); return NULL; }
    return rr;
}

static int rr_prefill(void *d, int seq, const int32_t *ids, int n, sg_error *err) {
    round_robin *rr = d;
    return infer_eval(rr->s[seq], ids, n, NULL, false, err);
}

static int rr_step(void *d, const int32_t *ids, float *logits, sg_error *err) {
    round_robin *rr = d;
    for (int i = 0; i < rr->n_seq; i++)
        if (infer_eval(rr->s[i], ids + i, 1, logits + (size_t)i * rr->n_vocab, false, err)) return -1;
    return 0;
}

const bench_decoder_ops bench_round_robin = {
    .name = "round-robin over independent contexts",
    .open = rr_open, .prefill = rr_prefill, .step = rr_step, .close = rr_close,
};

/* One sg_infer with n_seq KV slots: each step is one infer_decode_batch over all
 * sequences, so the weights are read once per step whatever n_seq is. */
typedef struct batched {
    sg_infer *s;
    int n_seq;
    int *seq;               /* (n_seq) 0, 1, ..., n_seq - 1 */
} batched;

static void *batched_open(const sg_model *m, int n_seq, int n_ctx, const sg_infer_params *ip, sg_error *err) {
    sg_infer_params p = *ip;
    p.n_ctx = n_ctx;
    p.n_seq = n_seq;
    sg_infer *s = infer_new(m, &p, err);
    if (!s) return NULL;
    batched *b = sg_xcalloc(1, sizeof *b);
    b->s = s;
    b->n_seq = n_seq;
    b->seq = sg_xmalloc((size_t)n_seq * sizeof(int));
    for (int i = 0; i < n_seq; i++) b->seq[i] = i;
    return b;
}

static int batched_prefill(void *d, int seq, const int32_t *ids, int n, sg_error *err) {
    batched *b = d;
    return infer_eval_seq(b->s, seq, ids, n, NULL, false, err);
}

static int batched_step(void *d, const int32_t *ids, float *logits, sg_error *err) {
    batched *b = d;
    return infer_decode_batch(b->s, b->seq, ids, b->n_seq, logits, err);
}

static void batched_close(void *d) {
    batched *b = d;
    if (!b) return;
    infer_free(b->s);
    free(b->seq);
    free(b);
}

const bench_decoder_ops bench_batched = {
    .name = "batched decode, one forward pass per step for all sequences",
    .open = batched_open, .prefill = batched_prefill, .step = batched_step, .close = batched_close,
};

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int bench_concurrency(const sg_model *m, const bench_decoder_ops *ops, int n_seq, int n_prompt, int n_gen,
                      const bench_params *p, double *tok_s, sg_error *err) {
    if (n_seq < 1 || n_prompt < 1 || n_gen < 1) return sg_fail(err, "concurrency test needs sequences, a prompt and tokens");
    int V = m->cfg.n_vocab;
    void *d = ops->open(m, n_seq, n_prompt + n_gen + 1, &p->infer, err);
    if (!d) return -1;
    int32_t *prompt = sg_xmalloc((size_t)n_prompt * sizeof(int32_t)), *next = sg_xmalloc((size_t)n_seq * sizeof(int32_t));
    float *logits = sg_xmalloc((size_t)n_seq * (size_t)V * sizeof(float));
    int rc = 0;
    for (int i = 0; i < n_seq && !rc; i++) {   /* a different prompt for each sequence */
        random_ids(p->seed + 1 + (uint64_t)i, prompt, n_prompt, V);
        rc = ops->prefill(d, i, prompt, n_prompt, err);
        next[i] = prompt[n_prompt - 1];
    }
    double t0 = 0;
    for (int t = 0; t <= n_gen && !rc; t++) {   /* step 0 is the untimed warm-up */
        if (t == 1) t0 = now_s();
        rc = ops->step(d, next, logits, err);
        for (int i = 0; i < n_seq && !rc; i++) next[i] = argmax(logits + (size_t)i * V, V);
    }
    if (!rc) *tok_s = (double)n_seq * n_gen / (now_s() - t0);
    free(prompt);
    free(next);
    free(logits);
    ops->close(d);
    return rc;
}

/* ---- speculative decoding ---- */

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The answer's ids, and the CPU time when its first token came (after the prompt). */
typedef struct spec_answer {
    sg_ids ids;
    double cpu_first;
} spec_answer;

static int spec_collect(void *ctx, int32_t id, const char *text, size_t len, const sg_sample_info *info) {
    (void)text; (void)len; (void)info;
    spec_answer *a = ctx;
    if (id < 0) return 0;
    if (a->ids.n == 0) a->cpu_first = cpu_s();
    sg_ids_push(&a->ids, id);
    return 0;
}

/* Drafts from a known answer: the tokens it says next, each one at position % every ==
 * every - 1 changed (every 0: all of them changed, a draft that always misses). */
typedef struct answer_draft {
    const sg_ids *answer;
    size_t n_prompt;
    int every, n_vocab;
} answer_draft;

static int answer_source(void *ctx, const int32_t *hist, size_t n, int k, int32_t *out) {
    (void)hist;
    const answer_draft *a = ctx;
    size_t pos = n - a->n_prompt;
    int m = 0;
    for (; m < k && pos + (size_t)m < a->answer->n; m++) {
        size_t q = pos + (size_t)m;
        int32_t id = a->answer->ids[q];
        out[m] = a->every == 0 || q % (size_t)a->every == (size_t)a->every - 1 ? (id + 1) % a->n_vocab : id;
    }
    return m;
}

static void spec_figure(bench_spec_run *r, double tok_s, double cpu_tok_s, const sg_gen_result *res) {
    if (r->n == 0 || tok_s < r->min) r->min = tok_s;
    if (r->n == 0 || tok_s > r->max) r->max = tok_s;
    if (r->n == 0 || cpu_tok_s < r->cpu_min) r->cpu_min = cpu_tok_s;
    if (r->n == 0 || cpu_tok_s > r->cpu_max) r->cpu_max = cpu_tok_s;
    r->mean = (r->mean * r->n + tok_s) / (r->n + 1);
    r->cpu_mean = (r->cpu_mean * r->n + cpu_tok_s) / (r->n + 1);
    r->n++;
    r->drafted += res->n_drafted;
    r->accepted += res->n_accepted;
    r->passes += res->n_passes;
    r->generated += res->n_generated;
}

int bench_speculation(const sg_model *m, const bench_params *p, int draft, bench_spec *r, sg_error *err) {
    memset(r, 0, sizeof *r);
    int n_prompt = p->n_prompt > 0 ? p->n_prompt : 64, n_gen = p->n_gen > 0 ? p->n_gen : 32, V = m->cfg.n_vocab;
    int reps = p->reps > 0 ? p->reps : 1;
    sg_infer_params ip = p->infer;
    ip.n_ctx = n_prompt + n_gen + SPEC_MAX_DRAFT + 2;
    ip.n_seq = 1;
    sg_infer *s = infer_new(m, &ip, err);
    if (!s) return -1;
    int32_t *prompt = sg_xmalloc((size_t)n_prompt * sizeof *prompt);
    random_ids(p->seed, prompt, n_prompt, V);
    float *logits = sg_xmalloc((size_t)(SPEC_MAX_DRAFT + 1) * (size_t)V * sizeof(float));
    int32_t pass[SPEC_MAX_DRAFT + 1];
    sg_ids answer = {0};
    spec_answer out = {{0}, 0};
    int rc = infer_eval(s, prompt, n_prompt, logits, false, err);
    /* a verification pass of 1 + k tokens (every row's logits) against a decode step, at
     * the end of the prompt; k = 0 is the decode step */
    static const int ks[] = {0, 1, 2, 4, 8, 14};
    r->n_pass = (int)(sizeof ks / sizeof ks[0]);
    for (int rep = 0; rep <= reps && !rc; rep++)   /* rep 0: warm-up */
        for (int i = 0; i < r->n_pass && !rc; i++) {
            random_ids(p->seed + 7 + (uint64_t)i, pass, ks[i] + 1, V);
            double t0 = now_s(), c0 = cpu_s();
            rc = infer_eval(s, pass, ks[i] + 1, logits, ks[i] > 0, err);
            double ms = (now_s() - t0) * 1e3, cpu_ms = (cpu_s() - c0) * 1e3;
            infer_truncate(s, n_prompt);
            r->pass_k[i] = ks[i];
            if (rep > 0) r->pass_ms[i] += ms / reps;
            if (rep > 0) r->pass_cpu_ms[i] += cpu_ms / reps;
        }
    /* generation, greedy, the variants alternating so that a disturbance hits them all */
    sg_gen_params gp;
    gen_params_default(&gp);
    gp.max_tokens = n_gen;
    gp.ignore_eos = true;
    answer_draft quote = {&answer, (size_t)n_prompt, 16, V}, miss = {&answer, (size_t)n_prompt, 0, V};
    bench_spec_run *runs[4] = {&r->plain, &r->quoting, &r->missing, &r->lookup};
    for (int rep = 0; rep <= reps && !rc; rep++)
        for (int v = 0; v < 4 && !rc; v++) {
            gp.draft = v == 0 ? 0 : draft;
            gp.draft_source = v == 1 || v == 2 ? answer_source : NULL;
            gp.draft_ctx = v == 1 ? &quote : v == 2 ? &miss : NULL;
            sg_gen_result res;
            infer_truncate(s, 0);
            out.ids.n = 0;
            rc = gen_run(s, prompt, n_prompt, &gp, spec_collect, &out, &res, err);
            if (rc) break;
            double cpu = cpu_s() - out.cpu_first;   /* after the first token, as gen_ms */
            if (v == 0 && answer.n == 0)
                for (size_t i = 0; i < out.ids.n; i++) sg_ids_push(&answer, out.ids.ids[i]);
            if (rep > 0)
                spec_figure(runs[v], res.gen_ms > 0 ? res.n_generated * 1e3 / res.gen_ms : 0,
                            cpu > 0 ? (res.n_generated - 1) / cpu : 0, &res);
        }
    sg_ids_free(&answer);
    sg_ids_free(&out.ids);
    free(prompt);
    free(logits);
    infer_free(s);
    return rc;
}
