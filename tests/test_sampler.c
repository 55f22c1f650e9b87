/* test_sampler.c: the sampler (greedy, seeded draws, top-k, top-p, min-p, penalties,
 * temperature, raw logprobs) and stop strings over streamed text. Expectations are
 * computed here by hand or by brute force (full sorts, double precision), never by
 * the code under test. Draws use fixed seeds, so every statistical check is
 * deterministic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "engine/sampler.h"
#include "testutil.h"

/* ---- helpers ---- */

static uint64_t g_lcg = 1;
static void lcg_seed(uint64_t s) { g_lcg = s; }
static double lcg_unit(void) {   /* [0, 1) */
    g_lcg = g_lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_lcg >> 11) * 0x1.0p-53;
}
static void random_logits(float *l, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) l[i] = lo + (float)lcg_unit() * (hi - lo);
}

static int32_t ref_argmax(const float *l, size_t n) {
    size_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (l[i] > l[b]) b = i;
    return (int32_t)b;
}

static sg_sampler *make(float temperature, int top_k, float top_p, float min_p, uint64_t seed,
                        size_t n_vocab) {
    sg_sampler_params p;
    sampler_params_default(&p);
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    return sampler_new(&p, n_vocab);
}

/* Draws n tokens from the same logits and counts them per id. */
static void draw_counts(sg_sampler *s, const float *logits, size_t n_vocab, int n, int *counts) {
    float *scratch = malloc(n_vocab * sizeof *scratch);
    memset(counts, 0, n_vocab * sizeof *counts);
    for (int i = 0; i < n; i++) {
        memcpy(scratch, logits, n_vocab * sizeof *scratch);
        int32_t id = sampler_sample(s, scratch, NULL, 0, NULL);
        if (id >= 0 && (size_t)id < n_vocab) counts[id]++;
    }
    free(scratch);
}

/* Checks observed frequencies against expected probabilities (absolute tolerance). */
static void check_freqs(const int *counts, const double *expect, size_t n, int draws, double tol) {
    for (size_t i = 0; i < n; i++) {
        double f = (double)counts[i] / draws;
        CHECK_MSG(fabs(f - expect[i]) <= tol, "id %zu: frequency %.4f, expected %.4f", i, f, expect[i]);
        if (expect[i] == 0) CHECK_MSG(counts[i] == 0, "id %zu drawn %d times, expected never", i, counts[i]);
    }
}

static void softmax_ref(const float *l, size_t n, double t, double *out) {
    double m = -INFINITY, z = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, l[i]);
    for (size_t i = 0; i < n; i++) z += out[i] = exp((l[i] - m) / t);
    for (size_t i = 0; i < n; i++) out[i] /= z;
}

/* The four-token distribution many tests use: p = 0.5, 0.3, 0.15, 0.05. */
static void four_logits(float *l) {
    l[0] = logf(0.5f);
    l[1] = logf(0.3f);
    l[2] = logf(0.15f);
    l[3] = logf(0.05f);
}

/* ---- greedy ---- */

static void test_greedy_argmax(void) {
    sg_sampler *s = make(0, 0, 1, 0, 0, 4);
    float l[4] = {1, 5, 3, 5};   /* tie between 1 and 3: the lowest id wins */
    CHECK_EQ_INT(sampler_sample(s, l, NULL, 0, NULL), 1);
    float l2[4] = {-3, -1, -2, -7};
    CHECK_EQ_INT(sampler_sample(s, l2, NULL, 0, NULL), 1);
    sampler_free(s);

    s = make(-1, 0, 1, 0, 0, 4);   /* negative temperature is greedy too */
    float l3[4] = {0, 0, 9, 8};
    CHECK_EQ_INT(sampler_sample(s, l3, NULL, 0, NULL), 2);
    sampler_free(s);

    /* Random large vocabulary against a reference argmax. */
    size_t n = 128256;
    float *big = malloc(n * sizeof *big);
    lcg_seed(7);
    random_logits(big, n, -10, 10);
    big[99999] = 11;
    s = make(0, 0, 1, 0, 0, n);
    CHECK_EQ_INT(sampler_sample(s, big, NULL, 0, NULL), 99999);
    sampler_free(s);
    free(big);

    CHECK(make(0, 0, 1, 0, 0, 0) == NULL);   /* empty vocabulary */
}

/* ---- seeded draws ---- */

static void run_sequence(uint64_t seed, int top_k, float top_p, int32_t *out, int n) {
    size_t nv = 1000;
    float *l = malloc(nv * sizeof *l);
    sg_sampler *s = make(1.0f, top_k, top_p, 0, seed, nv);
    lcg_seed(123);   /* the same logits sequence for every run */
    for (int i = 0; i < n; i++) {
        random_logits(l, nv, -3, 3);
        out[i] = sampler_sample(s, l, NULL, 0, NULL);
    }
    sampler_free(s);
    free(l);
}

static void test_seed_reproducible(void) {
    enum { N = 300 };
    int32_t a[N], b[N], c[N];
    struct { int k; float p; } cfg[] = {{0, 1}, {50, 1}, {0, 0.9f}, {100, 0.8f}};
    for (size_t k = 0; k < sizeof cfg / sizeof cfg[0]; k++) {
        run_sequence(42, cfg[k].k, cfg[k].p, a, N);
        run_sequence(42, cfg[k].k, cfg[k].p, b, N);
        run_sequence(43, cfg[k].k, cfg[k].p, c, N);
        CHECK_MSG(memcmp(a, b, sizeof a) == 0, "config %zu: seed 42 twice gave different tokens", k);
        int differ = 0;
        for (int i = 0; i < N; i++) differ += a[i] != c[i];
        CHECK_MSG(differ > N / 2, "config %zu: seeds 42 and 43 differ at only %d of %d steps", k, differ, N);
    }

    /* sampler_seed restarts the stream. */
    sg_sampler *s = make(1.0f, 0, 1, 0, 5, 50);
    float l[50], x[50];
    lcg_seed(9);
    random_logits(l, 50, -1, 1);
    int32_t first[20];
    int varied = 0;
    for (int i = 0; i < 20; i++) {
        memcpy(x, l, sizeof x);
        first[i] = sampler_sample(s, x, NULL, 0, NULL);
        varied |= first[i] != first[0];
    }
    CHECK(varied);   /* same logits, yet the generator moved on */
    sampler_seed(s, 5);
    int same = 1;
    for (int i = 0; i < 20; i++) { memcpy(x, l, sizeof x); same &= sampler_sample(s, x, NULL, 0, NULL) == first[i]; }
    CHECK(same);
    sampler_free(s);
}

/* ---- top-k, top-p, min-p ---- */

static void test_top_k_one_is_greedy(void) {
    size_t n = 2000;
    float *l = malloc(n * sizeof *l);
    sg_sampler *s = make(1.5f, 1, 1, 0, 99, n);
    lcg_seed(11);
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        random_logits(l, n, -2, 2);
        int32_t want = ref_argmax(l, n);
        ok &= sampler_sample(s, l, NULL, 0, NULL) == want;
    }
    CHECK(ok);
    sampler_free(s);
    free(l);
}

static void test_top_p_tiny_is_greedy(void) {
    size_t n = 2000;
    float *l = malloc(n * sizeof *l);
    sg_sampler *s = make(1.5f, 0, 1e-6f, 0, 99, n);
    lcg_seed(12);
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        random_logits(l, n, -1, 1);   /* flat: many tokens are plausible */
        int32_t want = ref_argmax(l, n);
        ok &= sampler_sample(s, l, NULL, 0, NULL) == want;
    }
    CHECK(ok);
    sampler_free(s);
    free(l);
}

static void test_top_k_distribution(void) {
    float l[4];
    four_logits(l);
    int counts[4];
    sg_sampler *s = make(1, 2, 1, 0, 1, 4);
    draw_counts(s, l, 4, 20000, counts);
    check_freqs(counts, (double[]){0.625, 0.375, 0, 0}, 4, 20000, 0.012);
    sampler_free(s);
}

static void test_top_p_distribution(void) {
    float l[4];
    four_logits(l);
    int counts[4];
    /* cumulative 0.5, 0.8, 0.95: 0.75 keeps two tokens, 0.85 three */
    sg_sampler *s = make(1, 0, 0.75f, 0, 2, 4);
    draw_counts(s, l, 4, 20000, counts);
    check_freqs(counts, (double[]){0.625, 0.375, 0, 0}, 4, 20000, 0.012);
    sampler_free(s);
    s = make(1, 0, 0.85f, 0, 3, 4);
    draw_counts(s, l, 4, 20000, counts);
    check_freqs(counts, (double[]){0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}, 4, 20000, 0.012);
    sampler_free(s);

    /* top-p is renormalised over the top-k survivors: over the top 3 the cumulative is
     * 0.526, 0.842, so 0.82 keeps two (over the full distribution it would keep three). */
    s = make(1, 3, 0.82f, 0, 4, 4);
    draw_counts(s, l, 4, 20000, counts);
    check_freqs(counts, (double[]){0.625, 0.375, 0, 0}, 4, 20000, 0.012);
    sampler_free(s);

    /* top-p sees the tempered distribution: at T=2 the cumulative is 0.379, 0.673, 0.880,
     * so 0.7 keeps three (untempered it would keep two). */
    s = make(2, 0, 0.7f, 0, 5, 4);
    draw_counts(s, l, 4, 20000, counts);
    double t[4] = {sqrt(0.5), sqrt(0.3), sqrt(0.15), 0};
    double z = t[0] + t[1] + t[2];
    check_freqs(counts, (double[]){t[0] / z, t[1] / z, t[2] / z, 0}, 4, 20000, 0.012);
    sampler_free(s);
}

static void test_min_p(void) {
    float l[4];
    four_logits(l);
    int counts[4];
    /* relative to the top (0.5): 1, 0.6, 0.3, 0.1 */
    sg_sampler *s = make(1, 0, 1, 0.2f, 6, 4);
    draw_counts(s, l, 4, 20000, counts);
    check_freqs(counts, (double[]){0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}, 4, 20000, 0.012);
    sampler_free(s);
    s = make(1, 0, 1, 0.5f, 7, 4);
    draw_counts(s, l, 4, 20000, counts);
    check_freqs(counts, (double[]){0.625, 0.375, 0, 0}, 4, 20000, 0.012);
    sampler_free(s);
    s = make(1, 0, 1, 0.61f, 8, 4);
    draw_counts(s, l, 4, 2000, counts);
    CHECK_EQ_INT(counts[0], 2000);
    sampler_free(s);
    s = make(1, 3, 1, 0.5f, 9, 4);   /* with top-k: min-p cuts the third */
    draw_counts(s, l, 4, 20000, counts);
    check_freqs(counts, (double[]){0.625, 0.375, 0, 0}, 4, 20000, 0.012);
    sampler_free(s);
    s = make(1, 0, 1, 5.0f, 8, 4);   /* above 1: still keeps the best token */
    draw_counts(s, l, 4, 200, counts);
    CHECK_EQ_INT(counts[0], 200);
    sampler_free(s);
}

/* top-k's bar comes from block and group maxima: the k best must all be drawable,
 * wherever they sit (several in one block, several in one group of 8, one per block,
 * in the partial last block), and with their softmax shares. */
static void test_top_k_placement(void) {
    size_t n = 5000;   /* 78 full blocks of 64 and a partial one */
    int32_t places[2][10] = {
        {640, 641, 642, 643, 644, 700, 708, 716, 2345, 4996},
        {5, 100, 300, 1000, 1500, 2000, 2600, 3100, 4000, 4999},
    };
    float *l = malloc(n * sizeof *l);
    int *counts = malloc(n * sizeof *counts);
    double *want = malloc(n * sizeof *want);
    for (int pl = 0; pl < 2; pl++) {
        const int32_t *top = places[pl];
        lcg_seed(4242);
        random_logits(l, n, -10, 0);
        for (int j = 0; j < 10; j++) l[top[j]] = 5.0f + 0.1f * (float)j;
        memset(want, 0, n * sizeof *want);
        double z = 0;
        for (int j = 0; j < 10; j++) z += exp(l[top[j]]);
        for (int j = 0; j < 10; j++) want[top[j]] = exp(l[top[j]]) / z;
        sg_sampler *s = make(1, 10, 1, 0, 31, n);
        draw_counts(s, l, n, 20000, counts);
        int outside = 0;
        for (size_t i = 0; i < n; i++) outside += want[i] == 0 ? counts[i] : 0;
        CHECK_EQ_INT(outside, 0);
        for (int j = 0; j < 10; j++) {
            double f = counts[top[j]] / 20000.0;
            CHECK_MSG(fabs(f - want[top[j]]) < 0.012, "placement %d, id %d: frequency %.4f, expected %.4f",
                      pl, top[j], f, want[top[j]]);
        }
        sampler_free(s);
    }
    free(l);
    free(counts);
    free(want);
}

/* Rank of every id under (logit desc, id asc), by a full sort. */
static const float *g_sort_logits;
static int by_logit(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    float lx = g_sort_logits[x], ly = g_sort_logits[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : 1;
}
static void ranks_of(const float *l, size_t n, int32_t *order, int32_t *rank) {
    for (size_t i = 0; i < n; i++) order[i] = (int32_t)i;
    g_sort_logits = l;
    qsort(order, n, sizeof *order, by_logit);
    for (size_t i = 0; i < n; i++) rank[order[i]] = (int32_t)i;
}

/* Partial selection on a large vocabulary with many ties and with sorted inputs (the
 * usual worst cases for quickselect) against a full sort. */
static void test_selection_large(void) {
    size_t n = 5000;
    float *l = malloc(n * sizeof *l), *x = malloc(n * sizeof *x);
    int32_t *order = malloc(n * sizeof *order), *rank = malloc(n * sizeof *rank);
    for (int shape = 0; shape < 4; shape++) {
        lcg_seed(100 + (uint64_t)shape);
        for (size_t i = 0; i < n; i++) {
            switch (shape) {
            case 0: l[i] = floorf((float)lcg_unit() * 64) * 0.125f - 4; break;   /* ties */
            case 1: l[i] = (float)i * 1e-3f; break;                                /* ascending */
            case 2: l[i] = -(float)i * 1e-3f; break;                               /* descending */
            default: l[i] = 0.5f; break;                                           /* all equal */
            }
        }
        ranks_of(l, n, order, rank);

        /* top-k = 37: every draw is among the 37 best */
        sg_sampler *s = make(1, 37, 1, 0, 10, n);
        int ok = 1, distinct = 0;
        char *hit = calloc(n, 1);
        for (int d = 0; d < 2000; d++) {
            memcpy(x, l, n * sizeof *x);
            int32_t id = sampler_sample(s, x, NULL, 0, NULL);
            ok &= id >= 0 && (size_t)id < n && rank[id] < 37;
            if (ok && !hit[id]) { hit[id] = 1; distinct++; }
        }
        CHECK_MSG(ok, "shape %d: top-k draw outside the top 37", shape);
        CHECK_MSG(distinct > 20, "shape %d: only %d distinct top-k draws", shape, distinct);
        sampler_free(s);

        /* top-p chosen halfway between the cumulative mass of ranks 99 and 100, so the
         * nucleus is exactly the 100 best with a margin for rounding. */
        double *pr = malloc(n * sizeof *pr);
        softmax_ref(l, n, 1, pr);
        double cum = 0, c98 = 0, c99 = 0;
        for (int r = 0; r < 100; r++) {
            cum += pr[order[r]];
            if (r == 98) c98 = cum;
            if (r == 99) c99 = cum;
        }
        s = make(1, 0, (float)((c98 + c99) / 2), 0, 11, n);
        memset(hit, 0, n);
        ok = 1, distinct = 0;
        for (int d = 0; d < 2000; d++) {
            memcpy(x, l, n * sizeof *x);
            int32_t id = sampler_sample(s, x, NULL, 0, NULL);
            ok &= id >= 0 && (size_t)id < n && rank[id] < 100;
            if (ok && !hit[id]) { hit[id] = 1; distinct++; }
        }
        CHECK_MSG(ok, "shape %d: top-p draw outside the 100-token nucleus", shape);
        CHECK_MSG(distinct > 50, "shape %d: only %d distinct top-p draws", shape, distinct);
        /* and within it, the better half gets its share of the renormalised mass */
        double half = 0;
        for (int r = 0; r < 50; r++) half += pr[order[r]];
        half /= c99;
        int in_half = 0;
        for (int d = 0; d < 5000; d++) {
            memcpy(x, l, n * sizeof *x);
            in_half += rank[sampler_sample(s, x, NULL, 0, NULL)] < 50;
        }
        CHECK_MSG(fabs(in_half / 5000.0 - half) < 0.03, "shape %d: better half drawn %.3f, expected %.3f",
                  shape, in_half / 5000.0, half);
        sampler_free(s);
        free(pr);
        free(hit);
    }
    free(l);
    free(x);
    free(order);
    free(rank);
}

/* ---- temperature ---- */

static void test_temperature_frequencies(void) {
    float l[5] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
    int counts[5];
    double want[5];
    float temps[3] = {1.0f, 0.5f, 2.0f};
    for (int t = 0; t < 3; t++) {
        sg_sampler *s = make(temps[t], 0, 1, 0, 1234, 5);
        draw_counts(s, l, 5, 20000, counts);
        softmax_ref(l, 5, temps[t], want);
        check_freqs(counts, want, 5, 20000, 0.012);
        sampler_free(s);
    }
}

/* Temperature alone over a vocabulary of several blocks: the draw goes through block
 * sums, so check it per token against softmax. */
static void test_temperature_large_vocab(void) {
    size_t n = 1000;
    float l[1000];
    for (size_t i = 0; i < n; i++) l[i] = i % 97 == 5 ? 4.0f + (float)(i / 97) * 0.2f : -3.0f;
    int counts[1000];
    double want[1000];
    sg_sampler *s = make(0.8f, 0, 1, 0, 77, n);
    draw_counts(s, l, n, 20000, counts);
    softmax_ref(l, n, 0.8, want);
    check_freqs(counts, want, n, 20000, 0.012);
    sampler_free(s);
}

/* Masked tokens (logit -inf) are never drawn, whichever path the draw takes. */
static void test_masked_never_drawn(void) {
    size_t n = 3000;
    float *l = malloc(n * sizeof *l), *x = malloc(n * sizeof *x);
    lcg_seed(31);
    random_logits(l, n, -2, 2);
    for (size_t i = 0; i < n; i++)
        if (i % 3 != 1) l[i] = -INFINITY;
    struct { float t; int k; float p, min_p; } cfg[] = {
        {1.0f, 0, 1, 0}, {3.0f, 0, 0.99f, 0}, {2.0f, 50, 1, 0}, {2.0f, 0, 1, 0.01f}, {1.0f, 2000, 0.9f, 0},
    };
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        sg_sampler *s = make(cfg[c].t, cfg[c].k, cfg[c].p, cfg[c].min_p, 5, n);
        int ok = 1;
        for (int d = 0; d < 3000; d++) {
            memcpy(x, l, n * sizeof *x);
            int32_t id = sampler_sample(s, x, NULL, 0, NULL);
            ok &= id >= 0 && (size_t)id < n && id % 3 == 1;
        }
        CHECK_MSG(ok, "config %zu drew a masked token", c);
        sampler_free(s);
    }
    /* Everything masked but one token. */
    for (size_t i = 0; i < n; i++) l[i] = -INFINITY;
    l[2222] = -50;
    sg_sampler *s = make(1.0f, 0, 1, 0, 5, n);
    int ok = 1;
    for (int d = 0; d < 100; d++) {
        memcpy(x, l, n * sizeof *x);
        ok &= sampler_sample(s, x, NULL, 0, NULL) == 2222;
    }
    CHECK(ok);
    sampler_free(s);
    free(l);
    free(x);
}

/* ---- penalties ---- */

static sg_sampler *make_pen(float rep, float presence, float freq, int last_n, size_t n) {
    sg_sampler_params p;
    sampler_params_default(&p);
    p.repetition_penalty = rep;
    p.presence_penalty = presence;
    p.frequency_penalty = freq;
    p.penalty_last_n = last_n;
    return sampler_new(&p, n);
}

#define CHECK_NEAR(a, b) do { double a_ = (a), b_ = (b); \
        CHECK_MSG(fabs(a_ - b_) <= 1e-5, "%s = %.7f, expected %.7f", #a, a_, b_); } while (0)

static void test_penalty_formulas(void) {
    int32_t hist[] = {0, 1, 1, 3, 0, 0};   /* counts: 0 x3, 1 x2, 3 x1 */
    /* repetition 2, presence 0.5, frequency 0.25 */
    sg_sampler *s = make_pen(2, 0.5f, 0.25f, 0, 5);
    for (int round = 0; round < 2; round++) {   /* twice: counts must not leak between calls */
        float l[5] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f};
        sampler_penalize(s, l, hist, 6);
        CHECK_NEAR(l[0], 2.0 / 2 - 0.5 - 0.25 * 3);    /* -0.25 */
        CHECK_NEAR(l[1], -1.0 * 2 - 0.5 - 0.25 * 2);   /* -3 */
        CHECK_NEAR(l[2], 0.5);
        CHECK_NEAR(l[3], 3.0 / 2 - 0.5 - 0.25 * 1);    /* 0.75 */
        CHECK_NEAR(l[4], -2.0);
    }
    sampler_free(s);

    /* Repetition alone: distinct tokens only (count does not matter), zero stays zero. */
    s = make_pen(1.5f, 0, 0, 0, 4);
    float r[4] = {3.0f, -3.0f, 0.0f, 1.0f};
    int32_t h2[] = {0, 0, 0, 1, 2};
    sampler_penalize(s, r, h2, 5);
    CHECK_NEAR(r[0], 2.0);
    CHECK_NEAR(r[1], -4.5);
    CHECK_NEAR(r[2], 0.0);
    CHECK_NEAR(r[3], 1.0);
    sampler_free(s);

    /* The window: only the last 2 ids count; ids outside the vocabulary are ignored. */
    s = make_pen(1, 1.0f, 0.5f, 2, 4);
    float w[4] = {0, 0, 0, 0};
    int32_t h3[] = {0, 0, 0, 1, -5, 2, 2, 77};
    sampler_penalize(s, w, h3, 8);   /* window: {2, 77} */
    CHECK_NEAR(w[0], 0);
    CHECK_NEAR(w[1], 0);
    CHECK_NEAR(w[2], -1.0 - 0.5);
    sampler_free(s);
    s = make_pen(1, 1.0f, 0.5f, 4, 4);
    float w2[4] = {0, 0, 0, 0};
    sampler_penalize(s, w2, h3, 8);  /* window: {-5, 2, 2, 77} */
    CHECK_NEAR(w2[1], 0);
    CHECK_NEAR(w2[2], -1.0 - 0.5 * 2);
    sampler_free(s);

    /* Inside sampler_sample the penalties decide the greedy choice. */
    s = make_pen(1, 0.5f, 0, 0, 2);
    float g[2] = {3.0f, 2.9f};
    int32_t h4[] = {0};
    CHECK_EQ_INT(sampler_sample(s, g, h4, 1, NULL), 1);
    float g2[2] = {3.0f, 2.9f};
    CHECK_EQ_INT(sampler_sample(s, g2, NULL, 0, NULL), 0);
    sampler_free(s);
}

/* ---- logprobs ---- */

static void test_logprobs(void) {
    sg_sampler_params p;
    sampler_params_default(&p);
    p.n_logprobs = 4;
    sg_sampler *s = sampler_new(&p, 4);
    float l[4] = {1.0f, 2.0f, 3.0f, 0.5f};
    sg_sample_info info;
    CHECK_EQ_INT(sampler_sample(s, l, NULL, 0, &info), 2);
    /* lse = log(e + e^2 + e^3 + e^0.5) = 3.4607735 */
    CHECK_NEAR(info.logprob, -0.4607735);
    CHECK_EQ_INT(info.n_top, 4);
    CHECK_EQ_INT(info.top[0].id, 2);
    CHECK_EQ_INT(info.top[1].id, 1);
    CHECK_EQ_INT(info.top[2].id, 0);
    CHECK_EQ_INT(info.top[3].id, 3);
    CHECK_NEAR(info.top[0].logprob, -0.4607735);
    CHECK_NEAR(info.top[1].logprob, -1.4607735);
    CHECK_NEAR(info.top[2].logprob, -2.4607735);
    CHECK_NEAR(info.top[3].logprob, -2.9607735);
    double sum = 0;
    for (int i = 0; i < 4; i++) sum += exp(info.top[i].logprob);
    CHECK_NEAR(sum, 1.0);
    sampler_free(s);

    /* Stable for large logits: log-softmax of {1000, 999, 998} at 0 is -0.4076060. */
    p.n_logprobs = 2;
    s = sampler_new(&p, 3);
    float big[3] = {1000, 999, 998};
    CHECK_EQ_INT(sampler_sample(s, big, NULL, 0, &info), 0);
    CHECK(isfinite(info.logprob));
    CHECK_NEAR(info.logprob, -0.4076060);
    CHECK_EQ_INT(info.n_top, 2);
    CHECK_NEAR(info.top[1].logprob, -1.4076060);
    sampler_free(s);

    /* Raw distribution: penalties and temperature do not change the reported logprob. */
    sampler_params_default(&p);
    p.presence_penalty = 5;
    p.n_logprobs = 1;
    s = sampler_new(&p, 2);
    float pl[2] = {2, 1};
    int32_t h[] = {0};
    CHECK_EQ_INT(sampler_sample(s, pl, h, 1, &info), 1);
    CHECK_NEAR(info.logprob, 1 - 2.3132617);   /* lse(2, 1) = 2.3132617 */
    CHECK_EQ_INT(info.top[0].id, 0);
    CHECK_NEAR(info.top[0].logprob, 2 - 2.3132617);
    sampler_free(s);
    p.presence_penalty = 0.5f;   /* the chosen token itself penalised (2 -> 1.5), still chosen */
    s = sampler_new(&p, 2);
    float pl2[2] = {2, 1};
    CHECK_EQ_INT(sampler_sample(s, pl2, h, 1, &info), 0);
    CHECK_NEAR(info.logprob, 2 - 2.3132617);
    sampler_free(s);
    sampler_params_default(&p);
    p.temperature = 0.25f;
    p.top_k = 1;
    s = sampler_new(&p, 4);
    float tl[4] = {1.0f, 2.0f, 3.0f, 0.5f};
    CHECK_EQ_INT(sampler_sample(s, tl, NULL, 0, &info), 2);
    CHECK_NEAR(info.logprob, -0.4607735);
    CHECK_EQ_INT(info.n_top, 0);
    sampler_free(s);

    /* Ties go to the lowest id; n_logprobs is clamped to 20 and to the vocabulary. */
    sampler_params_default(&p);
    p.n_logprobs = 3;
    s = sampler_new(&p, 5);
    float tie[5] = {1, 3, 3, 2, 3};
    sampler_sample(s, tie, NULL, 0, &info);
    CHECK_EQ_INT(info.top[0].id, 1);
    CHECK_EQ_INT(info.top[1].id, 2);
    CHECK_EQ_INT(info.top[2].id, 4);
    sampler_free(s);
    p.n_logprobs = 50;
    s = sampler_new(&p, 30);
    float many[30];
    for (int i = 0; i < 30; i++) many[i] = (float)i;
    sampler_sample(s, many, NULL, 0, &info);
    CHECK_EQ_INT(info.n_top, 20);
    CHECK_EQ_INT(info.top[0].id, 29);
    CHECK_EQ_INT(info.top[19].id, 10);
    sampler_free(s);
    p.n_logprobs = 10;
    s = sampler_new(&p, 3);
    float few[3] = {0, 0, 0};
    sampler_sample(s, few, NULL, 0, &info);
    CHECK_EQ_INT(info.n_top, 3);
    CHECK_NEAR(info.top[2].logprob, -log(3.0));
    sampler_free(s);
}

/* Against a double-precision reference over random logits: every reported logprob to
 * 1e-6, the top 20 of a 1000-token vocabulary in the right order. */
static void test_logprobs_reference(void) {
    sg_sampler_params p;
    sampler_params_default(&p);
    p.n_logprobs = 20;
    size_t n = 1000;
    sg_sampler *s = sampler_new(&p, n);
    float *l = malloc(n * sizeof *l), *x = malloc(n * sizeof *x);
    int32_t *order = malloc(n * sizeof *order), *rank = malloc(n * sizeof *rank);
    lcg_seed(555);
    int ok_ids = 1;
    double worst = 0;
    for (int trial = 0; trial < 50; trial++) {
        random_logits(l, n, -8, 8);
        double m = -INFINITY, z = 0;
        for (size_t i = 0; i < n; i++) m = fmax(m, l[i]);
        for (size_t i = 0; i < n; i++) z += exp(l[i] - m);
        double lse = m + log(z);
        ranks_of(l, n, order, rank);
        memcpy(x, l, n * sizeof *x);
        sg_sample_info info;
        int32_t id = sampler_sample(s, x, NULL, 0, &info);
        worst = fmax(worst, fabs(info.logprob - (l[id] - lse)));
        ok_ids &= info.n_top == 20;
        for (int j = 0; j < info.n_top; j++) {
            ok_ids &= info.top[j].id == order[j];
            worst = fmax(worst, fabs(info.top[j].logprob - (l[order[j]] - lse)));
        }
    }
    CHECK(ok_ids);
    CHECK_MSG(worst < 1e-6, "largest logprob error %.3g", worst);
    sampler_free(s);
    free(l);
    free(x);
    free(order);
    free(rank);
}

/* ---- stop strings ---- */

/* Feeds text in pieces of the given sizes (cycled); returns the return of the last feed. */
static int feed_pieces(sg_stop *st, const char *text, const size_t *sizes, size_t n_sizes, sg_buf *out) {
    size_t len = strlen(text), at = 0, k = 0;
    int r = 0;
    while (at < len) {
        size_t n = sizes[k++ % n_sizes];
        if (n > len - at) n = len - at;
        r = stop_feed(st, text + at, n, out);
        at += n;
        if (r) break;
    }
    return r;
}

static void test_stop_basic(void) {
    const char *stops[] = {"STOP"};
    sg_stop *st = stop_new(stops, 1);
    sg_buf out;
    sg_buf_init(&out);
    /* one byte at a time */
    int r = feed_pieces(st, "Hello STOP world", (size_t[]){1}, 1, &out);
    CHECK_EQ_INT(r, 1);
    CHECK_EQ_STR(out.data, "Hello ");
    CHECK_EQ_INT(stop_which(st), 0);
    CHECK_EQ_INT(stop_feed(st, "more", 4, &out), 1);   /* after a match: nothing more */
    stop_flush(st, &out);
    CHECK_EQ_STR(out.data, "Hello ");
    stop_free(st);

    /* release what cannot start a stop; hold the rest */
    st = stop_new(stops, 1);
    sg_buf_reset(&out);
    CHECK_EQ_INT(stop_feed(st, "xyzS", 4, &out), 0);
    CHECK_EQ_STR(out.data, "xyz");
    CHECK_EQ_INT(stop_feed(st, "T", 1, &out), 0);
    CHECK_EQ_STR(out.data, "xyz");
    CHECK_EQ_INT(stop_feed(st, "x", 1, &out), 0);
    CHECK_EQ_STR(out.data, "xyzSTx");
    CHECK_EQ_INT(stop_feed(st, "STO", 3, &out), 0);
    CHECK_EQ_STR(out.data, "xyzSTx");
    stop_flush(st, &out);   /* end of generation: the held "STO" is text after all */
    CHECK_EQ_STR(out.data, "xyzSTxSTO");
    CHECK_EQ_INT(stop_which(st), -1);
    stop_free(st);

    /* a stop spread over many pieces, and a match inside one piece */
    st = stop_new(stops, 1);
    sg_buf_reset(&out);
    CHECK_EQ_INT(feed_pieces(st, "abcSTOPdef", (size_t[]){3, 1, 1, 1, 1, 3}, 6, &out), 1);
    CHECK_EQ_STR(out.data, "abc");
    stop_free(st);
    st = stop_new(stops, 1);
    sg_buf_reset(&out);
    CHECK_EQ_INT(stop_feed(st, "abSTOPcd", 8, &out), 1);
    CHECK_EQ_STR(out.data, "ab");
    stop_free(st);
    sg_buf_free(&out);
}

static void test_stop_overlaps(void) {
    sg_buf out;
    sg_buf_init(&out);
    const char *ov[] = {"abc", "bcd"};
    sg_stop *st = stop_new(ov, 2);
    CHECK_EQ_INT(feed_pieces(st, "xbcd", (size_t[]){1}, 1, &out), 1);   /* "b" held as a prefix of "bcd" */
    CHECK_EQ_STR(out.data, "x");
    CHECK_EQ_INT(stop_which(st), 1);
    stop_free(st);
    st = stop_new(ov, 2);
    sg_buf_reset(&out);
    CHECK_EQ_INT(feed_pieces(st, "zabcd", (size_t[]){2}, 1, &out), 1);   /* abc starts first */
    CHECK_EQ_STR(out.data, "z");
    CHECK_EQ_INT(stop_which(st), 0);
    stop_free(st);
    st = stop_new(ov, 2);
    sg_buf_reset(&out);
    CHECK_EQ_INT(stop_feed(st, "ab", 2, &out), 0);
    CHECK_EQ_STR(out.data, "");
    CHECK_EQ_INT(stop_feed(st, "x", 1, &out), 0);
    CHECK_EQ_STR(out.data, "abx");
    stop_free(st);

    /* a stop that overlaps itself: "aab" in "aaab" */
    const char *self[] = {"aab"};
    st = stop_new(self, 1);
    sg_buf_reset(&out);
    CHECK_EQ_INT(feed_pieces(st, "aaab", (size_t[]){1}, 1, &out), 1);
    CHECK_EQ_STR(out.data, "a");
    stop_free(st);

    /* multiple stops: the earliest in the text wins, whatever the list order */
    const char *multi[] = {"baz", "bar", "</s>"};
    st = stop_new(multi, 3);
    sg_buf_reset(&out);
    CHECK_EQ_INT(feed_pieces(st, "foo bar baz", (size_t[]){4}, 1, &out), 1);
    CHECK_EQ_STR(out.data, "foo ");
    CHECK_EQ_INT(stop_which(st), 1);
    stop_free(st);
    sg_buf_free(&out);
}

static void test_stop_empty_and_utf8(void) {
    sg_buf out;
    sg_buf_init(&out);
    /* empty strings are ignored; stop_which still indexes the caller's array */
    const char *e[] = {"", "END"};
    sg_stop *st = stop_new(e, 2);
    CHECK_EQ_INT(feed_pieces(st, "one END two", (size_t[]){2}, 1, &out), 1);
    CHECK_EQ_STR(out.data, "one ");
    CHECK_EQ_INT(stop_which(st), 1);
    stop_free(st);
    const char *only_empty[] = {""};
    st = stop_new(only_empty, 1);
    sg_buf_reset(&out);
    CHECK_EQ_INT(stop_feed(st, "abc", 3, &out), 0);
    CHECK_EQ_STR(out.data, "abc");   /* nothing held when there is nothing to match */
    stop_free(st);
    st = stop_new(NULL, 0);
    sg_buf_reset(&out);
    CHECK_EQ_INT(stop_feed(st, "abc", 3, &out), 0);
    stop_flush(st, &out);
    CHECK_EQ_STR(out.data, "abc");
    stop_free(st);

    /* UTF-8: "。" is three bytes, fed one at a time; "é" shares no bytes with it */
    const char *u[] = {"\xe3\x80\x82"};
    st = stop_new(u, 1);
    sg_buf_reset(&out);
    CHECK_EQ_INT(feed_pieces(st, "caf\xc3\xa9\xe3\x80\x82 next", (size_t[]){1}, 1, &out), 1);
    CHECK_EQ_STR(out.data, "caf\xc3\xa9");
    stop_free(st);
    st = stop_new(u, 1);
    sg_buf_reset(&out);
    CHECK_EQ_INT(stop_feed(st, "a\xe3\x80", 3, &out), 0);
    CHECK_EQ_STR(out.data, "a");
    CHECK_EQ_INT(stop_feed(st, "\x81", 1, &out), 0);   /* a different character: released */
    CHECK_EQ_STR(out.data, "a\xe3\x80\x81");
    stop_free(st);
    sg_buf_free(&out);
}

/* Length of the longest suffix of t[0, n) that is a proper prefix of some stop. */
static size_t ref_held(const char *t, size_t n, const char *const *stops, size_t ns) {
    for (size_t j = 0; j < n; j++)
        for (size_t k = 0; k < ns; k++) {
            size_t sl = strlen(stops[k]);
            if (sl > n - j && memcmp(t + j, stops[k], n - j) == 0) return n - j;
        }
    return 0;
}
/* Earliest start of any stop in t[0, n), or -1. */
static long ref_match(const char *t, size_t n, const char *const *stops, size_t ns) {
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < ns; k++) {
            size_t sl = strlen(stops[k]);
            if (sl && sl <= n - i && memcmp(t + i, stops[k], sl) == 0) return (long)i;
        }
    return -1;
}

/* Random texts and random piece sizes (zero included) against a brute-force model:
 * after every feed the released text is exactly what the model says is safe. */
static void test_stop_random(void) {
    const char *stops[] = {"aba", "bb", "", "cab", "abcab"};
    size_t ns = 5;
    sg_buf out;
    sg_buf_init(&out);
    lcg_seed(2024);
    int bad = 0, matched = 0;
    for (int trial = 0; trial < 2000 && !bad; trial++) {
        char text[40];
        size_t len = (size_t)(lcg_unit() * 39);
        for (size_t i = 0; i < len; i++) text[i] = "abc"[(int)(lcg_unit() * 3)];
        text[len] = 0;
        sg_stop *st = stop_new(stops, ns);
        sg_buf_reset(&out);
        size_t at = 0;
        int r = 0;
        while (at < len && !r) {
            size_t n = (size_t)(lcg_unit() * 5);
            if (n > len - at) n = len - at;
            r = stop_feed(st, text + at, n, &out);
            at += n;
            long m = ref_match(text, at, stops, ns);
            if (m >= 0) {
                bad |= r != 1 || out.len != (size_t)m || memcmp(out.data, text, (size_t)m) != 0;
                matched++;
            } else {
                size_t want = at - ref_held(text, at, stops, ns);
                bad |= r != 0 || out.len != want || memcmp(out.data, text, want) != 0;
            }
        }
        if (!r) {
            stop_flush(st, &out);
            bad |= out.len != len || memcmp(out.data, text, len) != 0;
        }
        if (bad) fprintf(stderr, "    trial %d text \"%s\": got \"%s\"\n", trial, text, out.data);
        stop_free(st);
    }
    CHECK(!bad);
    CHECK(matched > 100);   /* the random texts did exercise matches */
    sg_buf_free(&out);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_greedy_argmax);
    RUN(test_seed_reproducible);
    RUN(test_top_k_one_is_greedy);
    RUN(test_top_p_tiny_is_greedy);
    RUN(test_top_k_distribution);
    RUN(test_top_p_distribution);
    RUN(test_min_p);
    RUN(test_top_k_placement);
    RUN(test_selection_large);
    RUN(test_temperature_frequencies);
    RUN(test_temperature_large_vocab);
    RUN(test_masked_never_drawn);
    RUN(test_penalty_formulas);
    RUN(test_logprobs);
    RUN(test_logprobs_reference);
    RUN(test_stop_basic);
    RUN(test_stop_overlaps);
    RUN(test_stop_empty_and_utf8);
    RUN(test_stop_random);
    return tu_finish(argv[0]);
}
