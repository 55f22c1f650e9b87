/* bench_sampler.c: time per sampled token over SmolLM3's 128,256-entry vocabulary, for
 * the sampler settings a chat request typically uses and for three shapes of logits
 * (flat uniform noise is the hardest case for top-p: its nucleus is thousands of
 * tokens wide; real model output is closer to the last, confident shape). Prints
 * figures; asserts nothing.
 *
 * Each timed call includes copying the logits into the scratch array sampler_sample
 * may modify, as the engine does; the copy alone is printed for reference. Medians,
 * since a shared machine adds noise to means. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sampler.h"

#define N_VOCAB 128256
#define N_POOL 8       /* distinct logit vectors cycled through, so one is not always hot */
#define N_ITERS 400

static uint64_t g_rng = 88172645463325252ull;
static double unit(void) {   /* (0, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return ((double)(g_rng >> 11) + 0.5) * 0x1.0p-53;
}
static double gauss(void) { return sqrt(-2 * log(unit())) * cos(2 * M_PI * unit()); }

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static int cmp_asc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}
static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x > y ? -1 : x < y ? 1 : 0;
}

/* Size of the top-p nucleus at temperature t, by a full sort (context for the figures). */
static size_t nucleus_size(const float *l, double t, double top_p) {
    double *p = malloc(N_VOCAB * sizeof *p), m = -INFINITY, z = 0, cum = 0;
    for (size_t i = 0; i < N_VOCAB; i++) m = fmax(m, l[i]);
    for (size_t i = 0; i < N_VOCAB; i++) z += p[i] = exp((l[i] - m) / t);
    qsort(p, N_VOCAB, sizeof *p, cmp_desc);
    size_t n = 0;
    while (n < N_VOCAB && cum < top_p * z) cum += p[n++];
    free(p);
    return n;
}

typedef struct config {
    const char *name;
    sg_sampler_params p;
    int with_history;
} config;

int main(void) {
    const char *shapes[4] = {"uniform[-10,10]", "gaussian sd 3", "peaked (sd 2, one at +12)",
                             "confident (sd 2, five at +16..+20)"};
    float *pool = malloc((size_t)N_POOL * N_VOCAB * sizeof *pool);
    float *scratch = malloc(N_VOCAB * sizeof *scratch);
    int32_t history[1024];
    for (int i = 0; i < 1024; i++) history[i] = (int32_t)(unit() * N_VOCAB);

    config cfg[8];
    int n_cfg = 0;
    sg_sampler_params base;
    sampler_params_default(&base);
    base.seed = 1;
    cfg[n_cfg++] = (config){"greedy", base, 0};
    sg_sampler_params p = base;
    p.temperature = 0.7f;
    p.top_p = 0.95f;
    cfg[n_cfg++] = (config){"T 0.7, top_p 0.95", p, 0};
    sg_sampler_params q = p;
    q.top_k = 40;
    cfg[n_cfg++] = (config){"T 0.7, top_k 40, top_p 0.95", q, 0};
    q = p;
    q.min_p = 0.05f;
    cfg[n_cfg++] = (config){"T 0.7, top_p 0.95, min_p 0.05", q, 0};
    q = base;
    q.temperature = 1.0f;
    cfg[n_cfg++] = (config){"T 1.0 alone", q, 0};
    q = p;
    q.n_logprobs = 5;
    cfg[n_cfg++] = (config){"T 0.7, top_p 0.95, 5 logprobs", q, 0};
    q = p;
    q.repetition_penalty = 1.1f;
    q.presence_penalty = 0.5f;
    q.frequency_penalty = 0.5f;
    q.penalty_last_n = 64;
    cfg[n_cfg++] = (config){"T 0.7, top_p 0.95, penalties (last 64)", q, 1};

    /* The copy alone. */
    double t0 = now_us();
    for (int it = 0; it < N_ITERS; it++)
        memcpy(scratch, pool + (size_t)(it % N_POOL) * N_VOCAB, N_VOCAB * sizeof *scratch);
    double copy_us = (now_us() - t0) / N_ITERS;
    printf("bench_sampler: vocabulary %d, %d calls per figure, logits copy alone %.1f us\n",
           N_VOCAB, N_ITERS, copy_us);

    for (int sh = 0; sh < 4; sh++) {
        for (size_t k = 0; k < (size_t)N_POOL * N_VOCAB; k++) {
            switch (sh) {
            case 0: pool[k] = (float)(unit() * 20 - 10); break;
            case 1: pool[k] = (float)(gauss() * 3); break;
            default: pool[k] = (float)(gauss() * 2); break;
            }
        }
        if (sh == 2)
            for (int v = 0; v < N_POOL; v++) pool[(size_t)v * N_VOCAB + 1000 + (size_t)v] = 12;
        if (sh == 3)
            for (int v = 0; v < N_POOL; v++)
                for (int j = 0; j < 5; j++) pool[(size_t)v * N_VOCAB + 7000 * (size_t)j + (size_t)v] = 20 - (float)j;
        printf("\nlogits %s: top_p 0.95 nucleus at T 0.7 is %zu tokens\n", shapes[sh],
               nucleus_size(pool, 0.7, 0.95));
        for (int c = 0; c < n_cfg; c++) {
            sg_sampler *s = sampler_new(&cfg[c].p, N_VOCAB);
            sg_sample_info info;
            sg_sample_info *ip = cfg[c].p.n_logprobs ? &info : NULL;
            long check = 0;
            for (int it = 0; it < 10; it++) {   /* warm-up */
                memcpy(scratch, pool + (size_t)(it % N_POOL) * N_VOCAB, N_VOCAB * sizeof *scratch);
                check += sampler_sample(s, scratch, history, cfg[c].with_history ? 1024 : 0, ip);
            }
            double t[N_ITERS];
            for (int it = 0; it < N_ITERS; it++) {
                double a = now_us();
                memcpy(scratch, pool + (size_t)(it % N_POOL) * N_VOCAB, N_VOCAB * sizeof *scratch);
                check += sampler_sample(s, scratch, history, cfg[c].with_history ? 1024 : 0, ip);
                t[it] = now_us() - a;
            }
            qsort(t, N_ITERS, sizeof t[0], cmp_asc);
            printf("  %-40s %7.1f us median %7.1f us best %7.1f us p95  (checksum %ld)\n",
                   cfg[c].name, t[N_ITERS / 2], t[0], t[N_ITERS * 95 / 100], check);
            sampler_free(s);
        }
    }
    free(pool);
    free(scratch);
    return 0;
}
