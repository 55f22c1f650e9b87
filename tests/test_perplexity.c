/* test_perplexity.c: the perplexity / KL-divergence module (engine/perplexity.h): its
 * math on crafted logits against hand values, the window plan, the base file's
 * encodings, and end-to-end runs on the tiny reference model: perplexity equal to the
 * one computed from transformers' logits, a model against itself giving exactly zero
 * KL, and its Q8_0 conversion giving a small positive KL. Also the benchmark module's
 * pure parts (no timings are checked: those belong to `make bench`). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/benchmark.h"
#include "engine/export.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "testutil.h"

#define NEAR(a, b, tol) (fabs((double)(a) - (double)(b)) <= (tol))

/* ---- math ---- */

static void test_uniform_logits(void) {
    enum { V = 1000 };
    static float lg[V];
    for (int i = 0; i < V; i++) lg[i] = 3.75f;
    ppl_stat s = {0};
    for (int t = 0; t < 50; t++) {
        double nll = ppl_nll(lg, V, (t * 37) % V);
        CHECK_MSG(NEAR(nll, log(V), 1e-12), "nll %.15g", nll);
        ppl_stat_add(&s, nll);
    }
    double err, ppl = ppl_from_nll(&s, &err);
    CHECK_MSG(NEAR(ppl, V, 1e-9), "ppl %.12g", ppl);   /* uniform over V: PPL = V */
    CHECK_MSG(err < 1e-6, "err %g", err);              /* no spread, no uncertainty */
}

static void test_known_nll(void) {
    /* logits log(0.5), log(0.25), log(0.25) shifted by a constant: p = .5 .25 .25 */
    float lg[3] = {(float)log(0.5) + 10, (float)log(0.25) + 10, (float)log(0.25) + 10};
    CHECK(NEAR(ppl_nll(lg, 3, 0), log(2), 1e-6));
    CHECK(NEAR(ppl_nll(lg, 3, 2), log(4), 1e-6));
    float lp[3];
    double lse = ppl_log_softmax(lg, 3, lp);
    CHECK(NEAR(lse, 10, 1e-6));
    CHECK(NEAR(lp[1], log(0.25), 1e-6));
    CHECK_EQ_INT(ppl_argmax(lg, 3), 0);
    float tie[4] = {1, 5, 5, 2};
    CHECK_EQ_INT(ppl_argmax(tie, 4), 1);   /* the lowest index among equals */
    /* perplexity of targets with p = .5 and .25: exp((ln 2 + ln 4) / 2) = sqrt(8); the
     * ± is PPL * sqrt(var / (n - 1)) with the population variance (ln 2 / 2)^2 */
    ppl_stat s = {0};
    ppl_stat_add(&s, ppl_nll(lg, 3, 0));
    ppl_stat_add(&s, ppl_nll(lg, 3, 1));
    double err, ppl = ppl_from_nll(&s, &err);
    CHECK_MSG(NEAR(ppl, sqrt(8), 1e-6), "ppl %.9g", ppl);
    CHECK_MSG(NEAR(err, sqrt(8) * log(2) / 2, 1e-6), "err %.9g", err);
}

static void test_kl(void) {
    /* identical distributions: exactly 0 */
    float a[5] = {0.1f, -2, 3, 0.5f, 1}, la[5];
    ppl_log_softmax(a, 5, la);
    CHECK(ppl_kl(la, la, 5) == 0);
    /* P = (1/2, 1/2), Q = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3) */
    float p[2] = {(float)log(0.5), (float)log(0.5)}, q[2] = {(float)log(0.25), (float)log(0.75)};
    CHECK_MSG(NEAR(ppl_kl(p, q, 2), 0.5 * log(4.0 / 3), 1e-7), "kl %.9g", ppl_kl(p, q, 2));
    /* and the other way: 1/4 ln(1/2) + 3/4 ln(3/2) */
    CHECK(NEAR(ppl_kl(q, p, 2), 0.25 * log(0.5) + 0.75 * log(1.5), 1e-7));
    /* a zero-probability outcome of P contributes nothing */
    float p0[3] = {0, -INFINITY, -INFINITY}, q0[3] = {(float)log(0.5), (float)log(0.25), (float)log(0.25)};
    CHECK(NEAR(ppl_kl(p0, q0, 3), log(2), 1e-7));
}

static void test_kl_topk(void) {
    /* P = (.5, .3, .2), Q = (.4, .4, .2); top-1 of P: bins {0} and {1, 2}:
     * .5 ln(.5/.4) + .5 ln(.5/.6) */
    float lp[3] = {(float)log(0.5), (float)log(0.3), (float)log(0.2)};
    float lq[3] = {(float)log(0.4), (float)log(0.4), (float)log(0.2)};
    int32_t ids[3] = {0, 1, 2};
    float top[3] = {lp[0], lp[1], lp[2]};
    double want1 = 0.5 * log(0.5 / 0.4) + 0.5 * log(0.5 / 0.6);
    CHECK_MSG(NEAR(ppl_kl_topk(ids, top, 1, lq), want1, 1e-6), "kl %.9g want %.9g", ppl_kl_topk(ids, top, 1, lq), want1);
    /* k = V is the full KL; merging bins never increases it */
    double full = ppl_kl(lp, lq, 3);
    CHECK(NEAR(ppl_kl_topk(ids, top, 3, lq), full, 1e-7));
    CHECK(ppl_kl_topk(ids, top, 1, lq) <= full + 1e-12);
    CHECK(ppl_kl_topk(ids, top, 2, lq) <= full + 1e-12);
}

static void test_u16(void) {
    enum { V = 300 };
    float lg[V], lp[V], back[V];
    uint16_t q[V];
    for (int i = 0; i < V; i++) lg[i] = (float)sin(i * 0.7) * 6;
    ppl_log_softmax(lg, V, lp);
    float lo = 0;
    for (int i = 0; i < V; i++) lo = lp[i] < lo ? lp[i] : lo;
    ppl_u16_encode(lp, V, lo, q);
    ppl_u16_decode(q, V, lo, back);
    double step = -lo / 65535.0, worst = 0, mass = 0;
    for (int i = 0; i < V; i++) {
        worst = fmax(worst, fabs(back[i] - lp[i]));
        mass += exp(back[i]);
    }
    /* half a step of rounding, plus the renormalisation's shift of at most as much */
    CHECK_MSG(worst <= step + 1e-6, "worst %g step %g", worst, step);
    CHECK(NEAR(mass, 1, 1e-5));
    CHECK_EQ_INT(q[ppl_argmax(lp, V)], (int)lrint((lp[ppl_argmax(lp, V)] - lo) / step));
    /* float log-probabilities put a floor of ~1e-7 under any KL; the grid adds less */
    CHECK_MSG(ppl_kl(lp, back, V) < 1e-6, "kl %g step %g", ppl_kl(lp, back, V), step);
}

static void test_stats(void) {
    double v[] = {5, 1, 4, 2, 3};
    CHECK(NEAR(ppl_quantile(v, 5, 0.5), 3, 1e-12));
    CHECK(NEAR(ppl_quantile(v, 5, 1), 5, 1e-12));
    CHECK(NEAR(ppl_quantile(v, 5, 0), 1, 1e-12));
    CHECK(NEAR(ppl_quantile(v, 5, 0.9), 4.6, 1e-12));   /* between 4 and 5 */
    ppl_stat s = {0};
    for (int i = 1; i <= 4; i++) ppl_stat_add(&s, i);
    CHECK(NEAR(ppl_stat_mean(&s), 2.5, 1e-12));
    CHECK(NEAR(ppl_stat_sem(&s), sqrt(1.25 / 3), 1e-12));
    double x[] = {2, 4, 4, 4, 5, 5, 7, 9}, m, sd;
    bench_mean_sd(x, 8, &m, &sd);
    CHECK(NEAR(m, 5, 1e-12));
    CHECK(NEAR(sd, sqrt(32.0 / 7), 1e-12));   /* sample deviation, as llama-bench */
    bench_mean_sd(x, 1, &m, &sd);
    CHECK(sd == 0);
}

static void test_plan(void) {
    ppl_plan p;
    sg_error err = {{0}};
    CHECK(ppl_plan_windows(1000, 128, 0, &p, &err) == 0);
    CHECK_EQ_INT(p.n_windows, 7);     /* 1000 / 128 */
    CHECK_EQ_INT(p.first, 64);
    CHECK_EQ_INT(p.n_scored, 63);     /* positions 64..126 predict tokens 65..127 */
    CHECK_EQ_INT(ppl_window_start(&p, 3), 384);
    CHECK(ppl_plan_windows(1000, 128, 32, &p, &err) == 0);
    CHECK_EQ_INT(p.n_windows, 28);    /* starts 0, 32, ..., 864: (1000 - 128) / 32 + 1 */
    CHECK_EQ_INT(p.first, 95);
    CHECK_EQ_INT(p.n_scored, 32);
    CHECK_EQ_INT(ppl_window_start(&p, 2), 64);
    /* the last token window 0 scores (start + ctx - 1) is just before the first one
     * window 1 scores (start + first + 1): no gap, no overlap */
    CHECK_EQ_INT(ppl_window_start(&p, 0) + p.ctx - 1 + 1, ppl_window_start(&p, 1) + p.first + 1);
    CHECK(ppl_plan_windows(100, 128, 0, &p, &err) == -1);
    CHECK(strstr(err.msg, "do not fill") != NULL);
    CHECK(ppl_plan_windows(1000, 128, 127, &p, &err) == -1);
    CHECK(ppl_plan_windows(1000, 3, 0, &p, &err) == -1);
}

/* ---- end to end on the tiny reference model ---- */

static sg_model *load(const char *path) {
    sg_error err = {{0}};
    sg_model *m = model_load(path, &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    return m;
}

static void random_tokens(int32_t *ids, int n, int vocab, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((seed >> 33) % (uint64_t)vocab);
    }
}

/* The perplexity of transformers' own logits over the reference ids (one window of
 * 128, second half scored) equals the engine's. */
static void test_matches_reference_logits(void) {
    json_t *j = json_load_file(tu_path("%s/reference/llama-tiny/reference.json", tu_shared()), 0, NULL);
    size_t len;
    float *ref = tu_read(tu_path("%s/reference/llama-tiny/logits_f32.bin", tu_shared()), &len);
    sg_model *m = load(tu_path("%s/reference/llama-tiny/f32", tu_shared()));
    CHECK(j && ref && m);
    if (!j || !ref || !m) goto out;
    int32_t ids[128];
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "input_ids"), i, v) if (i < 128) ids[i] = (int32_t)json_integer_value(v);
    int V = m->cfg.n_vocab;
    CHECK_EQ_INT(len, 128 * (size_t)V * 4);
    ppl_stat s = {0};
    for (int t = 64; t < 127; t++) ppl_stat_add(&s, ppl_nll(ref + (size_t)t * V, V, ids[t + 1]));
    double want = ppl_from_nll(&s, NULL);
    ppl_params p;
    ppl_params_default(&p);
    p.ctx = 128;
    p.infer.n_threads = 2;
    p.infer.kv_type = SG_F32;
    ppl_result r;
    sg_error err = {{0}};
    CHECK_MSG(ppl_run(m, ids, 128, &p, &r, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(r.n_windows, 1);
    CHECK_EQ_INT(r.n_scored, 63);
    CHECK_MSG(fabs(r.ppl / want - 1) < 1e-4, "engine %.6f, transformers %.6f", r.ppl, want);
    CHECK(!r.has_kl);
out:
    json_decref(j);
    free(ref);
    model_free(m);
}

static int run_kl(const sg_model *m, const int32_t *ids, int n, const char *save, ppl_encoding enc, int k,
                  const char *base, ppl_result *r, sg_error *err) {
    ppl_params p;
    ppl_params_default(&p);
    p.ctx = 32;
    p.infer.n_threads = 2;
    p.save_path = save;
    p.save_enc = enc;
    p.save_top_k = k;
    p.kl_base_path = base;
    return ppl_run(m, ids, (size_t)n, &p, r, err);
}

static void test_kl_end_to_end(void) {
    enum { N = 192 };
    const char *dir = tu_tmpdir();
    char *q8 = tu_path("%s/llama-tiny-q8.gguf", dir);
    sg_model *f32 = load(tu_path("%s/reference/llama-tiny/f32", tu_shared())), *q = NULL;
    if (!f32) return;
    sg_error err = {{0}};
    exp_source src;
    export_model_source(&src, f32);
    CHECK_MSG(export_gguf(&src, SG_Q8_0, q8, &err) == 0, "%s", err.msg);
    q = load(q8);
    if (!q) { model_free(f32); return; }
    int32_t ids[N];
    random_tokens(ids, N, f32->cfg.n_vocab, 7);
    static const struct { ppl_encoding enc; int k; const char *name; } encs[] = {
        {PPL_ENC_U16, 0, "u16"}, {PPL_ENC_F32, 0, "f32"}, {PPL_ENC_TOPK, 32, "top32"}};
    double kl_full = 0;
    for (size_t e = 0; e < sizeof encs / sizeof encs[0]; e++) {
        char base[4096];
        snprintf(base, sizeof base, "%s/base-%s.bin", dir, encs[e].name);
        ppl_result rb, rs, rq;
        CHECK_MSG(run_kl(f32, ids, N, base, encs[e].enc, encs[e].k, NULL, &rb, &err) == 0, "%s", err.msg);
        CHECK_EQ_INT(rb.n_windows, 6);          /* 192 / 32 */
        CHECK_EQ_INT(rb.n_scored, 6 * 15);
        ppl_base_info bi;
        CHECK_MSG(ppl_base_read_info(base, &bi, &err) == 0, "%s", err.msg);
        CHECK(bi.enc == encs[e].enc && bi.n_vocab == f32->cfg.n_vocab && bi.ctx == 32 && bi.n_tokens == N);
        CHECK(bi.tokens && !memcmp(bi.tokens, ids, sizeof ids));
        free(bi.tokens);
        /* the same model against its own base: exactly nothing */
        CHECK_MSG(run_kl(f32, ids, N, NULL, 0, 0, base, &rs, &err) == 0, "%s", err.msg);
        CHECK(rs.has_kl);
        CHECK_MSG(rs.kl_mean == 0 && rs.kl_max == 0, "%s: self KL %g max %g", encs[e].name, rs.kl_mean, rs.kl_max);
        CHECK(rs.same_top == 1 && rs.dppl == 0 && rs.ppl == rb.ppl && rs.base_ppl == rb.ppl);
        /* Q8_0 against the f32 base: a small, positive divergence */
        CHECK_MSG(run_kl(q, ids, N, NULL, 0, 0, base, &rq, &err) == 0, "%s", err.msg);
        CHECK_MSG(rq.kl_mean > 0 && rq.kl_mean < 0.01, "%s: Q8_0 KL %g", encs[e].name, rq.kl_mean);
        CHECK(rq.kl_max >= rq.kl_p99 && rq.kl_p99 >= rq.kl_median && rq.kl_median >= rq.kl_min && rq.kl_min >= 0);
        CHECK(rq.kl_err > 0 && rq.kl_err < rq.kl_mean);
        CHECK_MSG(rq.same_top > 0.8 && rq.same_top < 1, "%s: same top %g", encs[e].name, rq.same_top);
        CHECK(rq.base_ppl == rb.ppl && rq.ppl != rb.ppl);
        CHECK(NEAR(rq.dppl, rq.ppl - rq.base_ppl, 1e-9) && fabs(rq.dppl) < 0.05 * rb.ppl);
        if (encs[e].enc == PPL_ENC_F32) kl_full = rq.kl_mean;
        else if (encs[e].enc == PPL_ENC_U16 && kl_full == 0) kl_full = rq.kl_mean;
        else if (encs[e].enc == PPL_ENC_TOPK) CHECK_MSG(rq.kl_mean <= kl_full, "top-k %g full %g", rq.kl_mean, kl_full);
        if (encs[e].enc == PPL_ENC_F32) {   /* the u16 grid costs little: within 1% of exact */
            ppl_result ru;
            CHECK(run_kl(q, ids, N, NULL, 0, 0, tu_path("%s/base-u16.bin", dir), &ru, &err) == 0);
            CHECK_MSG(fabs(ru.kl_mean / rq.kl_mean - 1) < 0.01, "u16 %g f32 %g", ru.kl_mean, rq.kl_mean);
        }
    }
    /* a base saved over other tokens, or from other windows, is refused */
    ppl_result r;
    int32_t other[N];
    memcpy(other, ids, sizeof ids);
    other[100]++;
    other[100] %= f32->cfg.n_vocab;
    CHECK(run_kl(q, other, N, NULL, 0, 0, tu_path("%s/base-u16.bin", dir), &r, &err) == -1);
    CHECK_MSG(strstr(err.msg, "other tokens") != NULL, "%s", err.msg);
    ppl_params p;
    ppl_params_default(&p);
    p.ctx = 64;
    p.kl_base_path = tu_path("%s/base-u16.bin", dir);
    CHECK(ppl_run(q, ids, N, &p, &r, &err) == -1);
    CHECK_MSG(strstr(err.msg, "ctx 32") != NULL, "%s", err.msg);
    /* a truncated base file is refused at once */
    size_t len;
    void *data = tu_read(tu_path("%s/base-u16.bin", dir), &len);
    CHECK(data && tu_write(tu_path("%s/cut.bin", dir), data, len - 7) == 0);
    free(data);
    ppl_base_info bi;
    CHECK(ppl_base_read_info(tu_path("%s/cut.bin", dir), &bi, &err) == -1);
    CHECK(ppl_base_read_info(tu_path("%s/llama-tiny-q8.gguf", dir), &bi, &err) == -1);
    /* out-of-vocabulary tokens */
    other[5] = f32->cfg.n_vocab;
    CHECK(run_kl(q, other, N, NULL, 0, 0, NULL, &r, &err) == -1);
    model_free(q);
    model_free(f32);
}

/* Strided windows score every token after the first ctx - stride exactly once. */
static void test_strided_run(void) {
    sg_model *m = load(tu_path("%s/reference/llama-tiny/f32", tu_shared()));
    if (!m) return;
    int32_t ids[100];
    random_tokens(ids, 100, m->cfg.n_vocab, 3);
    ppl_params p;
    ppl_params_default(&p);
    p.ctx = 32;
    p.stride = 12;
    p.bos = 1;
    p.infer.n_threads = 1;
    ppl_result r;
    sg_error err = {{0}};
    CHECK_MSG(ppl_run(m, ids, 100, &p, &r, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(r.n_windows, 6);              /* (100 - 32) / 12 + 1 */
    CHECK_EQ_INT(r.n_scored, 6 * 12);
    CHECK(r.ppl > 1 && isfinite(r.ppl) && r.ppl_err > 0);
    model_free(m);
}

/* The concurrency decoders step every sequence, the batched one to the round-robin one's
 * logits; the bandwidth probe reads its buffer. */
static void test_bench_parts(void) {
    sg_model *m = load(tu_path("%s/reference/llama-tiny/f32", tu_shared()));
    if (!m) return;
    bench_params p;
    bench_params_default(&p);
    p.n_prompt = 8;
    p.n_gen = 4;
    p.reps = 2;
    p.infer.n_threads = 1;
    double x[2] = {0}, t = 0;
    sg_error err = {{0}};
    CHECK_MSG(bench_pp(m, &p, x, &err) == 0, "%s", err.msg);
    CHECK(x[0] > 0 && x[1] > 0);
    CHECK_MSG(bench_tg(m, &p, x, &err) == 0, "%s", err.msg);
    CHECK(x[0] > 0 && x[1] > 0);
    CHECK_MSG(bench_concurrency(m, &bench_round_robin, 3, 4, 2, &p, &t, &err) == 0, "%s", err.msg);
    CHECK(t > 0);
    t = 0;
    CHECK_MSG(bench_concurrency(m, &bench_batched, 3, 4, 2, &p, &t, &err) == 0, "%s", err.msg);
    CHECK(t > 0);
    /* the batched decoder's steps give each sequence the logits the round-robin one does */
    int V = m->cfg.n_vocab;
    void *rr = bench_round_robin.open(m, 3, 16, &p.infer, &err), *bd = bench_batched.open(m, 3, 16, &p.infer, &err);
    CHECK(rr && bd);
    float *la = malloc((size_t)3 * V * sizeof(float)), *lb = malloc((size_t)3 * V * sizeof(float));
    int32_t prompt[3][5] = {{1, 2, 3, 4, 5}, {9, 8}, {7, 7, 7}}, next[3] = {11, 12, 13};
    int plen[3] = {5, 2, 3};
    double worst = 0;
    for (int i = 0; rr && bd && i < 3; i++) {
        CHECK(bench_round_robin.prefill(rr, i, prompt[i], plen[i], &err) == 0);
        CHECK(bench_batched.prefill(bd, i, prompt[i], plen[i], &err) == 0);
    }
    for (int step = 0; rr && bd && step < 3; step++) {
        CHECK(bench_round_robin.step(rr, next, la, &err) == 0);
        CHECK(bench_batched.step(bd, next, lb, &err) == 0);
        for (size_t k = 0; k < (size_t)3 * V; k++) worst = fmax(worst, fabs((double)la[k] - lb[k]));
        for (int i = 0; i < 3; i++) next[i] = (next[i] * 31 + step) % V;
    }
    CHECK_MSG(worst < 1e-4, "batched and round-robin logits differ by %.3g", worst);
    free(la);
    free(lb);
    if (rr) bench_round_robin.close(rr);
    if (bd) bench_batched.close(bd);
    double gbs = 0;
    const char *simd = NULL;
    CHECK(bench_mem_bandwidth(2, 4 << 20, 1, &gbs, &simd, &err) == 0);
    CHECK(gbs > 0 && simd != NULL);
    CHECK(bench_peak_rss_mb() > 1);
    model_free(m);
}

int main(void) {
    RUN(test_uniform_logits);
    RUN(test_known_nll);
    RUN(test_kl);
    RUN(test_kl_topk);
    RUN(test_u16);
    RUN(test_stats);
    RUN(test_plan);
    RUN(test_matches_reference_logits);
    RUN(test_kl_end_to_end);
    RUN(test_strided_run);
    RUN(test_bench_parts);
    return tu_finish("test_perplexity");
}
