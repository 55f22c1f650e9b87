/* test_speculate.c: speculative decoding (speculate.h): the prompt-lookup draft, the
 * adaptive draft length and its pauses, greedy output with and without speculation on
 * the reference models (every difference a near-tie of the verification pass's
 * rounding), the same tokens for a seed when the pass computes the same logits, and
 * sampled output drawn from the model's distribution whatever the draft proposes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/generate.h"
#include "engine/infer.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "engine/speculate.h"
#include "testutil.h"

static void test_lookup(void) {
    int32_t out[8];
    /* the longest n-gram wins: "1 2 3" occurs once, followed by 4 5 */
    int32_t h1[] = {1, 2, 3, 4, 5, 9, 2, 3, 7, 1, 2, 3};
    CHECK_EQ_INT(spec_lookup(NULL, h1, 12, 2, out), 2);
    CHECK(out[0] == 4 && out[1] == 5);
    /* k caps the draft; past the history's end it repeats itself: 4 5 9 2 3 7 1 2 3 | 4 5 */
    CHECK_EQ_INT(spec_lookup(NULL, h1, 12, 8, out), 8);
    CHECK(out[0] == 4 && out[7] == 2);
    int32_t out11[11];
    CHECK_EQ_INT(spec_lookup(NULL, h1, 12, 11, out11), 11);
    CHECK(out11[8] == 3 && out11[9] == 4 && out11[10] == 5);
    /* the latest occurrence of the 1-gram 7: followed by 8 (not 6) */
    int32_t h2[] = {7, 6, 0, 7, 8, 5, 7};
    CHECK_EQ_INT(spec_lookup(NULL, h2, 7, 1, out), 1);
    CHECK_EQ_INT(out[0], 8);
    /* a loop: the draft runs on past the copy that ends the history */
    int32_t h3[] = {5, 6, 5, 6, 5};
    CHECK_EQ_INT(spec_lookup(NULL, h3, 5, 5, out), 5);
    CHECK(out[0] == 6 && out[1] == 5 && out[2] == 6 && out[3] == 5 && out[4] == 6);
    /* nothing to follow */
    int32_t h4[] = {1, 2, 3};
    CHECK_EQ_INT(spec_lookup(NULL, h4, 3, 4, out), 0);
    CHECK_EQ_INT(spec_lookup(NULL, h4, 1, 4, out), 0);
    CHECK_EQ_INT(spec_lookup(NULL, h1, 12, 0, out), 0);
}

static void test_adaptive(void) {
    int32_t loop[64], out[SPEC_MAX_DRAFT];
    for (int i = 0; i < 64; i++) loop[i] = i % 4;
    sg_spec s;
    spec_init(&s, 8);
    CHECK_EQ_INT(spec_draft(&s, loop, 64, 100, out), 2);   /* starts short */
    spec_update(&s, 2, 2);
    CHECK_EQ_INT(spec_draft(&s, loop, 64, 100, out), 4);   /* doubles while accepted */
    spec_update(&s, 4, 4);
    CHECK_EQ_INT(spec_draft(&s, loop, 64, 100, out), 8);
    spec_update(&s, 8, 8);
    CHECK_EQ_INT(spec_draft(&s, loop, 64, 100, out), 8);   /* up to max_draft */
    CHECK_EQ_INT(spec_draft(&s, loop, 64, 3, out), 3);     /* the caller's limit */
    spec_update(&s, 8, 3);
    CHECK_EQ_INT(spec_draft(&s, loop, 64, 100, out), 4);   /* one past the accepted run */
    spec_init(&s, 0);
    CHECK_EQ_INT(spec_draft(&s, loop, 64, 100, out), 0);   /* off */
    spec_init(&s, 99);
    CHECK_EQ_INT(s.max_draft, SPEC_MAX_DRAFT);

    /* drafts always rejected: under 3% of the first 256 steps pay a verification, then one
     * step in SPEC_MAX_PAUSE */
    spec_init(&s, 8);
    int steps = 20000, rounds = 0, drafted = 0, early = 0;
    for (int i = 0; i < steps; i++) {
        int k = spec_draft(&s, loop, 64, 100, out);
        if (!k) continue;
        rounds++;
        early += i < 256;
        drafted += k;
        spec_update(&s, k, 0);
    }
    CHECK_MSG(early * 100 < 3 * 256, "%d rounds with a draft in the first 256 steps", early);
    CHECK_MSG(rounds * 100 < steps, "%d rounds with a draft in %d steps", rounds, steps);
    CHECK_MSG(drafted <= rounds + 1, "%d draft tokens in %d rounds: rejected drafts shrink to one", drafted, rounds);
    CHECK(rounds >= steps / (SPEC_MAX_PAUSE + 1) - 2);   /* and it keeps probing */
    /* one accepted token ends the pauses */
    spec_update(&s, 1, 1);
    CHECK_EQ_INT(s.pause_next, SPEC_FIRST_PAUSE);
    CHECK(!s.probing);
}

static int collect(void *ctx, int32_t id, const char *text, size_t len, const sg_sample_info *info) {
    (void)text; (void)len; (void)info;
    if (id >= 0) sg_ids_push(ctx, id);
    return 0;
}

static int generate(sg_infer *s, const int32_t *prompt, int n_prompt, const sg_gen_params *gp, sg_ids *out,
                    sg_gen_result *res) {
    sg_error err = {{0}};
    infer_truncate(s, 0);
    out->n = 0;
    int rc = gen_run(s, prompt, n_prompt, gp, collect, out, res, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    return rc;
}

/* The prompt of the greedy checks: the reference ids with a long passage repeated, so that
 * drafts are proposed from the start, and the model's own loops later. */
static int quoting_prompt(const sg_model *m, int32_t *p) {
    int n = 0;
    for (int i = 0; i < 48; i++) p[n++] = (int32_t)((i * 37 + 11) % m->cfg.n_vocab);
    for (int i = 0; i < 40; i++) p[n++] = p[i];
    return n;
}

/* A draft source that knows the plain answer: proposes its next tokens, every 7th of them
 * changed, so that long drafts are accepted and the rest rejected mid-draft. */
typedef struct oracle {
    const sg_ids *answer;
    size_t n_prompt;
    int vocab;
} oracle;
static int oracle_source(void *ctx, const int32_t *hist, size_t n, int k, int32_t *out) {
    (void)hist;
    const oracle *o = ctx;
    size_t pos = n - o->n_prompt;   /* answer tokens so far */
    int m = 0;
    for (; m < k && pos + (size_t)m < o->answer->n; m++) {
        int32_t id = o->answer->ids[pos + (size_t)m];
        out[m] = (pos + (size_t)m) % 7 == 3 ? (id + 1) % o->vocab : id;
    }
    return m;
}

/* How far a verification pass's logits stray from a decode step's for the same token, at
 * 32 positions of the plain answer (relative to the largest logit): the pass runs 5
 * tokens, so its rows come from the multi-token dot products. */
static double pass_rounding(sg_infer *s, const int32_t *prompt, int np, const sg_ids *plain) {
    const sg_model *m = infer_model(s);
    size_t V = (size_t)m->cfg.n_vocab;
    sg_error err = {{0}};
    float *one = malloc(V * sizeof *one), *five = malloc(5 * V * sizeof *five);
    double worst = 0;
    infer_truncate(s, 0);
    CHECK(infer_eval(s, prompt, np, one, false, &err) == 0);
    for (size_t i = 0; i + 5 <= plain->n && i < 32; i++) {
        int base = infer_n_past(s);
        CHECK(infer_eval(s, &plain->ids[i], 1, one, false, &err) == 0);
        infer_truncate(s, base);
        CHECK(infer_eval(s, &plain->ids[i], 5, five, true, &err) == 0);
        infer_truncate(s, base + 1);
        double d = 0, amax = 0;
        for (size_t v = 0; v < V; v++) {
            d = fmax(d, fabs((double)one[v] - five[v]));
            amax = fmax(amax, fabs((double)one[v]));
        }
        worst = fmax(worst, d / (amax > 0 ? amax : 1));
    }
    free(one);
    free(five);
    return worst;
}

/* spec against plain greedy: on a difference, the top-2 gap of the plain logits at that
 * step must be within eps (relative to the largest logit). */
static void check_same(sg_infer *s, const int32_t *prompt, int np, const sg_ids *plain, const sg_ids *spec,
                       const sg_gen_result *r, double eps, const char *what, const char *how) {
    const sg_model *m = infer_model(s);
    sg_error err = {{0}};
    CHECK_EQ_INT(spec->n, plain->n);
    CHECK(r->n_passes + r->n_accepted == r->n_generated - 1);   /* a pass: one sampled token + its accepted drafts */
    size_t same = 0;
    double gap = 0;
    while (same < plain->n && same < spec->n && plain->ids[same] == spec->ids[same]) same++;
    if (same < plain->n) {   /* the plain run's logits where the two chose differently */
        float *lg = malloc((size_t)m->cfg.n_vocab * sizeof *lg);
        infer_truncate(s, 0);
        CHECK(infer_eval(s, prompt, np, lg, false, &err) == 0);   /* as gen_run: the prompt, then token by token */
        for (size_t i = 0; i < same; i++) CHECK(infer_eval(s, &plain->ids[i], 1, lg, false, &err) == 0);
        float top1 = -INFINITY, top2 = -INFINITY, amax = 0;
        for (int i = 0; i < m->cfg.n_vocab; i++) {
            if (lg[i] > top1) { top2 = top1; top1 = lg[i]; }
            else if (lg[i] > top2) top2 = lg[i];
            amax = fabsf(lg[i]) > amax ? fabsf(lg[i]) : amax;
        }
        gap = (top1 - top2) / (amax > 0 ? amax : 1);
        CHECK_MSG(gap <= eps, "%s, %s: greedy differs at token %zu with a top-2 gap of %.3g (near-tie bound %.3g)", what,
                  how, same, gap, eps);
        free(lg);
    }
    printf("  %-24s %-13s %zu/%zu tokens the same", what, how, same, plain->n);
    if (same < plain->n) printf(" (then a top-2 gap of %.2g)", gap);
    printf(", %d of %d drafted accepted, %d passes\n", r->n_accepted, r->n_drafted, r->n_passes);
}

/* Greedy with and without speculation (prompt lookup, and drafts from the answer itself):
 * where they differ, the plain step's top-2 gap is within twice what a verification pass
 * may stray from a decode step (measured, and at most max_rounding). Adds the accepted
 * draft tokens to *accepted. */
static void check_greedy(const char *path, const char *what, double max_rounding, long long *accepted) {
    double eps = 1e-6;
    sg_error err = {{0}};
    sg_model *m = model_load(path, &err);
    CHECK_MSG(m != NULL, "%s: %s", path, err.msg);
    if (!m) return;
    sg_infer_params ip;
    infer_params_default(&ip);
    ip.n_threads = 2;
    ip.n_ctx = 512;
    sg_infer *s = infer_new(m, &ip, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    int32_t prompt[128];
    int np = quoting_prompt(m, prompt);
    sg_gen_params gp;
    gen_params_default(&gp);
    gp.max_tokens = 160;
    gp.ignore_eos = true;
    sg_ids plain = {0}, spec = {0};
    sg_gen_result r0, r1;
    gp.draft = 0;
    generate(s, prompt, np, &gp, &plain, &r0);
    CHECK_EQ_INT(r0.n_drafted, 0);
    /* a flip needs the two logits within the sum of their deviations */
    double rounding = pass_rounding(s, prompt, np, &plain);
    eps = 2 * rounding + eps;
    printf("  %-24s a pass's logits within %.2g of a step's: near-tie bound %.2g\n", what, rounding, eps);
    CHECK_MSG(rounding <= max_rounding, "%s: a verification pass strays %.3g from a decode step", what, rounding);
    gp.draft = SPEC_MAX_DRAFT;
    generate(s, prompt, np, &gp, &spec, &r1);
    check_same(s, prompt, np, &plain, &spec, &r1, eps, what, "prompt lookup");
    *accepted += r1.n_accepted;
    oracle o = {&plain, (size_t)np, m->cfg.n_vocab};
    gp.draft_source = oracle_source;
    gp.draft_ctx = &o;
    generate(s, prompt, np, &gp, &spec, &r1);
    check_same(s, prompt, np, &plain, &spec, &r1, eps, what, "oracle");
    CHECK(r1.n_accepted > 0 && r1.n_accepted < r1.n_drafted);
    *accepted += r1.n_accepted;
    sg_ids_free(&plain);
    sg_ids_free(&spec);
    infer_free(s);
    model_free(m);
}

static void test_greedy_reference(void) {
    long long accepted = 0;
    const char *ref = tu_shared();
    /* float kernels: a verification pass computes each row as a decode step does */
    setenv("SMOLGATE_INT8", "0", 1);
    kern_select(NULL);
    check_greedy(tu_path("%s/reference/smollm3-tiny/f32", ref), "smollm3-tiny f32", 1e-6, &accepted);
    check_greedy(tu_path("%s/reference/smollm3-tiny/bf16", ref), "smollm3-tiny bf16", 1e-6, &accepted);
    check_greedy(tu_path("%s/reference/llama-tiny/f32", ref), "llama-tiny f32", 1e-6, &accepted);
    check_greedy(tu_path("%s/reference/llama-tiny/gguf/llama-tiny-F32.gguf", ref), "llama-tiny F32 gguf", 1e-6, &accepted);
    /* the integer path: a pass of several tokens takes the multi-token integer dots, which
     * accumulate each row as the one-token dot does (kernels' CHAINS): a pass's logits are
     * a step's, bit for bit, so speculation never changes a greedy answer */
    setenv("SMOLGATE_INT8", "1", 1);
    kern_select(NULL);
    static const char *const types[] = {"Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "llama-tiny %s int8", types[i]);
        check_greedy(tu_path("%s/reference/llama-tiny/gguf/llama-tiny-%s.gguf", ref, types[i]), what, 0, &accepted);
    }
    CHECK_MSG(accepted > 100, "only %lld draft tokens accepted: the check did not exercise verification", accepted);
}

/* A draft source that proposes fixed tokens, whatever the history. */
typedef struct fixed_draft {
    int32_t ids[2];
} fixed_draft;
static int fixed_source(void *ctx, const int32_t *hist, size_t n, int k, int32_t *out) {
    (void)hist; (void)n;
    const fixed_draft *f = ctx;
    int m = k < 2 ? k : 2;
    memcpy(out, f->ids, (size_t)m * sizeof *out);
    return m;
}

enum { SAMPLE_TOP_K = 4, SAMPLE_RUNS = 2000 };

/* Counts of (t2, t3) as indices into the top-k of their steps, from runs with seeds
 * seed0 .. seed0 + SAMPLE_RUNS - 1; the greedy prompt, 3 tokens sampled. */
static void sample_pairs(sg_infer *s, const sg_gen_params *gp0, uint64_t seed0, int *counts, int32_t *t2s,
                         int32_t *t3s, long long *accepted, long long *drafted) {
    static const int32_t prompt[] = {11, 200, 31, 400, 55, 600};
    sg_gen_params gp = *gp0;
    sg_ids out = {0};
    for (int r = 0; r < SAMPLE_RUNS; r++) {
        gp.sampling.seed = seed0 + (uint64_t)r;
        sg_gen_result res;
        if (generate(s, prompt, 6, &gp, &out, &res) || out.n != 3) { CHECK(out.n == 3); break; }
        t2s[r] = out.ids[1];
        t3s[r] = out.ids[2];
        *accepted += res.n_accepted;
        *drafted += res.n_drafted;
    }
    sg_ids_free(&out);
    (void)counts;
}

static void test_sampled_distribution(void) {
    setenv("SMOLGATE_INT8", "0", 1);
    kern_select(NULL);
    sg_error err = {{0}};
    sg_model *m = model_load(tu_path("%s/reference/llama-tiny/f32", tu_shared()), &err);
    CHECK_MSG(m != NULL, "%s", err.msg);
    if (!m) return;
    sg_infer_params ip;
    infer_params_default(&ip);
    ip.n_threads = 1;
    ip.n_ctx = 64;
    sg_infer *s = infer_new(m, &ip, &err);
    sg_gen_params gp;
    gen_params_default(&gp);
    gp.max_tokens = 3;
    gp.ignore_eos = true;
    gp.sampling.temperature = 1.5f;   /* flat enough that drafts are rejected often */
    gp.sampling.top_k = SAMPLE_TOP_K;

    /* the same seed gives the same tokens with and without a draft (one draw per token) */
    fixed_draft fd = {{0, 0}};
    int32_t *a2 = malloc(SAMPLE_RUNS * sizeof(int32_t)), *a3 = malloc(SAMPLE_RUNS * sizeof(int32_t));
    int32_t *b2 = malloc(SAMPLE_RUNS * sizeof(int32_t)), *b3 = malloc(SAMPLE_RUNS * sizeof(int32_t));
    long long acc = 0, dr = 0;
    gp.draft = 0;
    sample_pairs(s, &gp, 1, NULL, a2, a3, &acc, &dr);
    /* the draft: the commonest second and third tokens, so that it is accepted part of
     * the time and rejected the rest */
    for (int w = 0; w < 2; w++) {
        const int32_t *t = w ? a3 : a2;
        int best = 0, best_n = 0;
        for (int r = 0; r < SAMPLE_RUNS; r++) {
            int c = 0;
            for (int q = 0; q < SAMPLE_RUNS; q += 7) c += t[q] == t[r];
            if (c > best_n) { best_n = c; best = r; }
        }
        fd.ids[w] = t[best];
    }
    gp.draft = 2;
    gp.draft_source = fixed_source;
    gp.draft_ctx = &fd;
    sample_pairs(s, &gp, 1, NULL, b2, b3, &acc, &dr);
    int same = 0;
    for (int r = 0; r < SAMPLE_RUNS; r++) same += a2[r] == b2[r] && a3[r] == b3[r];
    CHECK_MSG(same == SAMPLE_RUNS, "%d of %d seeds gave the same tokens with a draft", same, SAMPLE_RUNS);
    CHECK_MSG(acc > SAMPLE_RUNS / 10 && acc < dr - SAMPLE_RUNS / 10, "%lld of %lld drafted accepted: both outcomes needed",
              acc, dr);

    /* the distribution, from independent seeds: a two-sample chi-square test of the
     * (t2, t3) pairs without a draft against pairs with one */
    sample_pairs(s, &gp, 1000003, NULL, b2, b3, &acc, &dr);
    enum { CELLS = 64 };
    int32_t key2[CELLS], key3[CELLS];
    int na[CELLS] = {0}, nb[CELLS] = {0}, n_cells = 0, other_a = 0, other_b = 0;
    for (int w = 0; w < 2; w++)
        for (int r = 0; r < SAMPLE_RUNS; r++) {
            int32_t x = w ? b2[r] : a2[r], y = w ? b3[r] : a3[r];
            int c = 0;
            while (c < n_cells && !(key2[c] == x && key3[c] == y)) c++;
            if (c == n_cells) {
                if (n_cells == CELLS) { *(w ? &other_b : &other_a) += 1; continue; }
                key2[c] = x; key3[c] = y; n_cells++;
            }
            (w ? nb : na)[c] += 1;
        }
    /* pool cells with few counts so that the statistic is chi-square distributed */
    double chi2 = 0;
    int df = -1, pool_a = other_a, pool_b = other_b;
    for (int c = 0; c < n_cells; c++) {
        if (na[c] + nb[c] < 20) { pool_a += na[c]; pool_b += nb[c]; continue; }
        chi2 += (double)(na[c] - nb[c]) * (na[c] - nb[c]) / (na[c] + nb[c]);
        df++;
    }
    if (pool_a + pool_b > 0) { chi2 += (double)(pool_a - pool_b) * (pool_a - pool_b) / (pool_a + pool_b); df++; }
    /* the 1e-4 upper tail of chi-square(df), Wilson-Hilferty */
    double z = 3.719, h = 2.0 / (9.0 * df), crit = df * pow(1 - h + z * sqrt(h), 3);
    printf("  sampled (t2, t3): %d cells, chi-square %.1f with %d df (1e-4 bound %.1f), %lld of %lld drafted accepted\n",
           n_cells, chi2, df, crit, acc, dr);
    CHECK(df >= 3);
    CHECK_MSG(chi2 < crit, "chi-square %.1f >= %.1f: speculation changed the distribution", chi2, crit);
    free(a2); free(a3); free(b2); free(b3);
    infer_free(s);
    model_free(m);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_lookup);
    RUN(test_adaptive);
    RUN(test_greedy_reference);
    RUN(test_sampled_distribution);
    return tu_finish(argv[0]);
}
