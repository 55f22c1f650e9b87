/* test_kernels.c: every SIMD kernel against the scalar reference on random data, odd
 * sizes included (float dots for every type; integer dots against quant.c's integer
 * reference), and the row conversions (quantize / dequantize) round-tripping. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dtype.h"
#include "engine/kernels.h"
#include "testutil.h"

static uint64_t rng = 0x243F6A8885A308D3ull;
static float frand(void) {   /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static const sg_dtype all_types[] = {SG_F32, SG_F16, SG_BF16, SG_Q4_0, SG_Q4_1, SG_Q5_0, SG_Q5_1,
                                     SG_Q8_0, SG_Q4_K, SG_Q5_K, SG_Q6_K};
/* odd sizes, block multiples, and 256 * k + 32 * j for the 32-block types' partial groups */
static const int sizes[] = {1, 3, 15, 16, 17, 31, 32, 33, 64, 96, 100, 256, 257, 288, 512, 544, 768,
                            1000, 2048, 2304, 2336, 11008};

/* Random bytes for a row of n weights of block type t, with the f16 scale fields set
 * to finite values of a sensible size: blocks no quantizer would write (extreme codes,
 * negative Q6_K scales, Q8_0's -128) must work too. */
static void random_blocks(sg_dtype t, void *dst, int64_t n) {
    const sg_dtype_info *ti = dtype_info(t);
    unsigned char *p = dst;
    size_t bytes = dtype_row_bytes(t, (uint64_t)n);
    for (size_t i = 0; i < bytes; i++) { frand(); p[i] = (unsigned char)(rng >> 24); }
    int f16_fields[2] = {0, -1};   /* byte offsets of f16 fields in a block */
    switch (t) {
    case SG_Q4_1: case SG_Q5_1: case SG_Q4_K: case SG_Q5_K: f16_fields[1] = 2; break;
    case SG_Q6_K: f16_fields[0] = 208; break;
    default: break;
    }
    for (int64_t b = 0; b < n / ti->block_size; b++)
        for (int k = 0; k < 2; k++) {
            if (f16_fields[k] < 0) continue;
            uint16_t h = sg_f32_to_f16(frand() * 0.01f);
            memcpy(p + b * ti->type_size + f16_fields[k], &h, 2);
        }
}

/* Float dots: every table's against the exact sum of the dequantized products. */
static void check_table(const kern_table *simd) {
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        sg_dtype t = all_types[ti];
        if (!simd->dot[t]) continue;
        int bs = (int)dtype_info(t)->block_size;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int n = sizes[si];
            if (n % bs) continue;
            for (int pass = 0; pass < 2; pass++) {   /* quantized from floats, then raw random blocks */
                if (pass == 1 && bs == 1) continue;
                float *w = malloc((size_t)n * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
                for (int i = 0; i < n; i++) { w[i] = frand(); x[i] = frand(); }
                void *q = malloc(dtype_row_bytes(t, (uint64_t)n));
                if (pass == 0) CHECK(kern_from_f32(t, w, q, n) == 0);
                else random_blocks(t, q, n);
                double exact = 0, mag = 0;
                float *deq = malloc((size_t)n * sizeof(float));
                kern_to_f32(t, q, deq, n);
                for (int i = 0; i < n; i++) { exact += (double)deq[i] * x[i]; mag += fabs((double)deq[i] * x[i]); }
                float a = kern_scalar.dot[t](q, x, n), b = simd->dot[t](q, x, n);
                /* both agree with the exact sum of the dequantized products to float rounding */
                double tol = 1e-5 * mag + 1e-6;
                CHECK_MSG(fabs(a - exact) <= tol, "scalar %s n=%d pass %d: %g vs %g", dtype_info(t)->name, n, pass, a, exact);
                CHECK_MSG(fabs(b - exact) <= tol, "%s %s n=%d pass %d: %g vs %g", simd->name, dtype_info(t)->name, n, pass, b, exact);
                free(w); free(x); free(q); free(deq);
            }
        }
    }
}

static kern_qdot_fn qdot_reference(sg_dtype t) {
    switch (t) {
    case SG_Q4_0: return quant_qdot_q4_0;
    case SG_Q8_0: return quant_qdot_q8_0;
    case SG_Q4_K: return quant_qdot_q4_K;
    case SG_Q5_K: return quant_qdot_q5_K;
    case SG_Q6_K: return quant_qdot_q6_K;
    default: return NULL;
    }
}

/* Integer dots: the SIMD ones against quant.c's integer reference to float rounding, and
 * both within activation-quantization error of the float dot. */
static void check_qdot(const kern_table *simd) {
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        sg_dtype t = all_types[ti];
        if (!simd->qdot[t]) continue;
        kern_qdot_fn ref = qdot_reference(t);
        CHECK_MSG(ref != NULL, "%s has an integer dot for %s but quant.c has no reference", simd->name, dtype_info(t)->name);
        if (!ref) continue;
        int bs = (int)dtype_info(t)->block_size;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int n = sizes[si];
            if (n % bs) continue;
            for (int pass = 0; pass < 2; pass++) {
                float *w = malloc((size_t)n * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
                for (int i = 0; i < n; i++) { w[i] = frand(); x[i] = frand() * (i % 7 == 0 ? 4 : 1); }
                void *q = malloc(dtype_row_bytes(t, (uint64_t)n));
                if (pass == 0) CHECK(kern_from_f32(t, w, q, n) == 0);
                else random_blocks(t, q, n);
                quant_q8_act *xa = malloc((size_t)quant_act_groups(n) * sizeof(quant_q8_act));
                quant_act_quantize(x, xa, n);
                float *deq = malloc((size_t)n * sizeof(float));
                kern_to_f32(t, q, deq, n);
                double mag = 0, exact = 0;
                for (int i = 0; i < n; i++) {
                    double xd = xa[i / 256].d[(i % 256) / 8] * xa[i / 256].qs[i % 256];
                    mag += fabs(deq[i] * xd);
                    exact += (double)deq[i] * x[i];
                }
                float r = ref(q, xa, n), v = simd->qdot[t](q, xa, n);
                CHECK_MSG(fabs(r - v) <= 1e-5 * mag + 1e-6, "%s qdot %s n=%d pass %d: %.9g vs reference %.9g",
                          simd->name, dtype_info(t)->name, n, pass, v, r);
                if (simd->qdotn[t]) {   /* several activation rows at once: row k is x scaled by k + 1 */
                    int64_t groups = quant_act_groups(n);
                    quant_q8_act *xn = malloc((size_t)(groups * KERN_QDOT_TOKENS) * sizeof(quant_q8_act));
                    float *xs = malloc((size_t)n * sizeof(float)), out[KERN_QDOT_TOKENS];
                    for (int k = 0; k < KERN_QDOT_TOKENS; k++) {
                        for (int i = 0; i < n; i++) xs[i] = x[i] * (float)(k + 1) * (k % 2 ? -1.0f : 1.0f);
                        quant_act_quantize(xs, xn + k * groups, n);
                    }
                    for (int nt = 2; nt <= KERN_QDOT_TOKENS; nt++) {
                        for (int k = 0; k < KERN_QDOT_TOKENS; k++) out[k] = NAN;
                        simd->qdotn[t](q, xn, groups, n, nt, out);
                        for (int k = 0; k < nt; k++) {
                            float rk = ref(q, xn + k * groups, n);
                            CHECK_MSG(fabs(rk - out[k]) <= 1e-5 * mag * (k + 1) + 1e-6,
                                      "%s qdotn(%d) %s n=%d row %d: %.9g vs %.9g", simd->name, nt,
                                      dtype_info(t)->name, n, k, out[k], rk);
                            /* and bit for bit the one-row dot (speculation relies on it) */
                            float one = simd->qdot[t](q, xn + k * groups, n);
                            CHECK_MSG(memcmp(&one, &out[k], sizeof one) == 0, "%s qdotn(%d) %s n=%d row %d: %.9g, qdot %.9g",
                                      simd->name, nt, dtype_info(t)->name, n, k, out[k], one);
                        }
                        for (int k = nt; k < KERN_QDOT_TOKENS; k++) CHECK(isnan(out[k]));   /* untouched */
                    }
                    free(xn);
                    free(xs);
                }
                /* 8-bit activations: each product off by at most half a step of x */
                CHECK_MSG(fabs(r - exact) <= 0.01 * mag + 1e-6, "qdot %s n=%d: %g vs float %g", dtype_info(t)->name, n, r, exact);
                free(w); free(x); free(q); free(xa); free(deq);
            }
        }
    }
}

/* The activation quantizer: per 8, d = max|x| / 127; s holds the dequantized sums. */
static void test_act_quantize(void) {
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 20) * 0.5f;
    quant_q8_act a;
    quant_act_quantize(x, &a, 64);
    CHECK(fabsf(a.d[0] - 10.0f / 127) < 1e-7f);       /* max |x| of the first 8: x[0] = -10 */
    CHECK(fabsf(a.d[7] - 21.5f / 127) < 1e-6f);       /* x[63] = 21.5 */
    CHECK_EQ_INT(a.qs[0], -127);
    CHECK_EQ_INT(a.qs[63], 127);
    CHECK_EQ_INT(a.qs[20], 0);
    for (int k = 0; k < 4; k++) {
        double s = 0;
        for (int j = 0; j < 16; j++) s += a.d[(16 * k + j) / 8] * a.qs[16 * k + j];
        CHECK(fabs(a.s[k] - s) < 1e-5);
    }
    float z[32] = {0};
    quant_act_quantize(z, &a, 32);
    CHECK(a.d[0] == 0 && a.qs[5] == 0 && a.s[0] == 0);
}

/* A table's activation quantizer gives quant_act_quantize's bytes, bit for bit: values
 * of mixed magnitudes, exact ties (x * id = k + 0.5), all-zero 8-blocks, rows of whole
 * and partial 256-groups. */
static void check_act_quantize(const kern_table *k) {
    if (!k->act_quantize) return;
    static const int ns[] = {32, 64, 96, 224, 256, 288, 544, 2048, 2080, 11008};
    for (size_t si = 0; si < sizeof ns / sizeof *ns; si++) {
        int n = ns[si];
        int64_t groups = quant_act_groups(n);
        float *x = malloc((size_t)n * sizeof *x);
        quant_q8_act *a = calloc((size_t)groups, sizeof *a), *b = calloc((size_t)groups, sizeof *b);
        for (int pass = 0; pass < 3; pass++) {
            for (int i = 0; i < n; i++) {
                float scale = (i / 8) % 5 == 0 ? 1e-3f : (i / 8) % 5 == 1 ? 30.0f : 1.0f;
                x[i] = frand() * scale;
                if (pass == 1 && (i / 8) % 7 == 3) x[i] = 0;
                if (pass == 2) x[i] = (float)((i % 8 == 0 ? 127 : (int)(frand() * 127)) + (i % 3 == 0 ? 0.5f : 0));
            }
            memset(a, 0x5a, (size_t)groups * sizeof *a);
            memset(b, 0x5a, (size_t)groups * sizeof *b);
            quant_act_quantize(x, a, n);
            k->act_quantize(x, b, n);
            CHECK_MSG(memcmp(a, b, (size_t)groups * sizeof *a) == 0, "%s act_quantize n=%d pass %d differs", k->name, n, pass);
        }
        free(x);
        free(a);
        free(b);
    }
}

static void test_act_quantize_simd(void) {
    __builtin_cpu_init();
    if (kern_avx2.name && __builtin_cpu_supports("avx2")) check_act_quantize(&kern_avx2);
    else tu_skip("avx2 activation quantizer: not on this CPU");
    if (kern_avx512.name && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        check_act_quantize(&kern_avx512);
    else tu_skip("avx512 activation quantizer: not on this CPU");
}

static void test_scalar_qdot(void) { check_qdot(&kern_scalar); }   /* none: the float reference */

static void test_avx2(void) {
    if (!kern_avx2.name) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) { tu_skip("avx2 kernels: not on this CPU"); return; }
    check_table(&kern_avx2);
    check_qdot(&kern_avx2);
}

static void test_avx512(void) {
    if (!kern_avx512.name) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) { tu_skip("avx512 kernels: not on this CPU"); return; }
    check_table(&kern_avx512);
    if (!__builtin_cpu_supports("avx512vnni")) { tu_skip("avx512 integer dots need VNNI, not on this CPU"); return; }
    check_qdot(&kern_avx512);
}

/* What kern_select hands the forward pass: its integer dots are present and agree. */
static void test_selected(void) {
    kern_select(NULL);
    const kern_table *k = kern_active();
    printf("  selected: %s, integer dots for Q4_K %s\n", k->name, k->qdot[SG_Q4_K] ? "yes" : "no");
    check_qdot(k);
    setenv("SMOLGATE_INT8", "0", 1);
    kern_select(NULL);
    CHECK(kern_active()->qdot[SG_Q4_K] == NULL);
    unsetenv("SMOLGATE_INT8");
    kern_select("scalar");
    CHECK(kern_active() == &kern_scalar || kern_active()->qdot[SG_Q4_K] == NULL);
    kern_select(NULL);
}

static void test_scalar_exactness(void) { check_table(&kern_scalar); }

/* Q8_0 as ggml defines it: d = max|x| / 127 stored as f16, q = round(x / d). */
static void test_q8_0_layout(void) {
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16) / 8.0f;   /* max |x| = 2 */
    unsigned char b[34];
    CHECK(kern_from_f32(SG_Q8_0, x, b, 32) == 0);
    uint16_t d;
    memcpy(&d, b, 2);
    CHECK(fabsf(sg_f16_to_f32(d) - 2.0f / 127) < 1e-5f);
    CHECK_EQ_INT((int8_t)b[2], -127);    /* x[0] = -2 */
    CHECK_EQ_INT((int8_t)b[2 + 16], 0);  /* x[16] = 0 */
    float y[32];
    kern_to_f32(SG_Q8_0, b, y, 32);
    for (int i = 0; i < 32; i++) CHECK(fabsf(y[i] - x[i]) <= 1.0f / 127);
    CHECK(kern_from_f32(SG_Q8_0, x, b, 31) == -1);   /* whole blocks only */
}

static void test_rmsnorm_softmax(void) {
    float x[5] = {1, 2, 3, 4, 5}, w[5] = {1, 1, 1, 1, 2}, o[5];
    kern_rmsnorm(o, x, w, 5, 0);
    float rms = sqrtf((1 + 4 + 9 + 16 + 25) / 5.0f);
    CHECK(fabsf(o[0] - 1 / rms) < 1e-6f && fabsf(o[4] - 10 / rms) < 1e-5f);
    float s[3] = {1000, 1000, 1000 + logf(2)};
    kern_softmax(s, 3);
    CHECK(fabsf(s[0] - 0.25f) < 1e-4f && fabsf(s[2] - 0.5f) < 1e-4f);   /* 1000 + ln 2 carries float rounding */
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_scalar_exactness);
    RUN(test_avx2);
    RUN(test_avx512);
    RUN(test_selected);
    RUN(test_scalar_qdot);
    RUN(test_act_quantize);
    RUN(test_act_quantize_simd);
    RUN(test_q8_0_layout);
    RUN(test_rmsnorm_softmax);
    return tu_finish(argv[0]);
}
