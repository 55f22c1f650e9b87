/* test_ops: the SIMD attention and SwiGLU (ops.c) against their scalar references on
 * random data, for every SIMD level this CPU has: odd lengths, F16 and F32 caches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dtype.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "testutil.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(float scale) {   /* uniform in [-scale, scale) */
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return scale * ((float)(g_rng >> 40) / (float)(1 << 23) - 1.0f);
}

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, size_t n) {
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        d = e > d ? e : d;
        m = fabs(b[i]) > m ? fabs(b[i]) : m;
    }
    return d / m;
}

static const char *levels[] = {"scalar", "avx2", "avx512"};

static void test_attend(void) {
    int lens[] = {1, 2, 15, 16, 17, 100, 513};
    int hds[] = {32, 64, 128};
    int tested_levels = 0;
    for (int li = 0; li < 3; li++) {
        if (strcmp(kern_select(levels[li]), levels[li])) {
            printf("  %s: not available on this CPU, not tested\n", levels[li]);
            continue;
        }
        tested_levels++;
        /* the SIMD levels' own versions (simd_ops.h) are what runs, not the scalar ones */
        if (li) CHECK_MSG(kern_active()->attend && kern_active()->swiglu, "%s: no attend / swiglu entry", levels[li]);
        double worst = 0;
        for (int ti = 0; ti < 2; ti++) {
            sg_dtype t = ti ? SG_F16 : SG_F32;
            for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++) {
                int hd = hds[hi];
                size_t stride = (size_t)hd * 3;   /* other heads between a position's rows */
                for (size_t ni = 0; ni < sizeof lens / sizeof *lens; ni++) {
                    int n = lens[ni];
                    float *q = malloc((size_t)hd * sizeof(float));
                    float *kf = malloc((size_t)n * stride * sizeof(float)), *vf = malloc((size_t)n * stride * sizeof(float));
                    for (int j = 0; j < hd; j++) q[j] = frand(1.0f);
                    /* scores up to ~+-20: a peaked softmax, as real attention has */
                    for (size_t j = 0; j < (size_t)n * stride; j++) { kf[j] = frand(2.0f); vf[j] = frand(1.0f); }
                    void *k = kf, *v = vf;
                    uint16_t *kh = NULL, *vh = NULL;
                    if (t == SG_F16) {
                        kh = malloc((size_t)n * stride * 2); vh = malloc((size_t)n * stride * 2);
                        for (size_t j = 0; j < (size_t)n * stride; j++) { kh[j] = sg_f32_to_f16(kf[j]); vh[j] = sg_f32_to_f16(vf[j]); }
                        k = kh; v = vh;
                    }
                    float *sc = malloc((size_t)n * sizeof(float)), *out = malloc((size_t)hd * sizeof(float));
                    float *ref = malloc((size_t)hd * sizeof(float));
                    float scale = 1.0f / sqrtf((float)hd);
                    ops_attend_scalar(t, q, k, v, stride, n, hd, scale, sc, ref);
                    memset(out, 0xff, (size_t)hd * sizeof(float));
                    ops_attend(t, q, k, v, stride, n, hd, scale, sc, out);
                    double e = rel_err(out, ref, (size_t)hd);
                    worst = e > worst ? e : worst;
                    /* float rounding of sums over at most 513 positions */
                    CHECK_MSG(e < 2e-5, "%s %s hd %d n %d: %.3g", levels[li], t == SG_F16 ? "f16" : "f32", hd, n, e);
                    free(q); free(kf); free(vf); free(kh); free(vh); free(sc); free(out); free(ref);
                }
            }
        }
        printf("  attention %-6s max rel diff %.2e\n", levels[li], worst);
    }
    CHECK(tested_levels >= 1);
    kern_select(NULL);
}

static void test_swiglu(void) {
    size_t sizes[] = {1, 7, 16, 33, 1000, 4099};
    for (int li = 0; li < 3; li++) {
        if (strcmp(kern_select(levels[li]), levels[li])) continue;
        double worst = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            size_t n = sizes[si];
            float *g = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
            /* a wide range: silu's tails (-100: exp overflow clamped, 100: identity) */
            for (size_t i = 0; i < n; i++) { g[i] = frand(i % 5 == 0 ? 100.0f : 6.0f); u[i] = frand(3.0f); }
            memcpy(ref, g, n * sizeof(float));
            ops_swiglu_scalar(ref, u, n);
            ops_swiglu(g, u, n);
            for (size_t i = 0; i < n; i++) {
                double e = fabs((double)g[i] - ref[i]) / (fabs(ref[i]) + 1e-30);
                /* relative, except where the result underflows towards 0 */
                if (fabs(ref[i]) < 1e-30) e = fabs((double)g[i]);
                worst = e > worst ? e : worst;
            }
            free(g); free(u); free(ref);
        }
        CHECK_MSG(worst < 1e-6, "%s swiglu: %.3g", levels[li], worst);
        printf("  swiglu    %-6s max rel diff %.2e\n", levels[li], worst);
    }
    kern_select(NULL);
}

int main(void) {
    RUN(test_attend);
    RUN(test_swiglu);
    return tu_finish("test_ops");
}
