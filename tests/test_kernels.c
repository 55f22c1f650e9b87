/* test_kernels.c: every SIMD kernel against the scalar reference on random data, odd
 * sizes included, and the row conversions (quantize / dequantize) round-tripping. */
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

static void check_table(const kern_table *simd) {
    static const sg_dtype types[] = {SG_F32, SG_F16, SG_BF16, SG_Q8_0};
    static const int sizes[] = {1, 3, 15, 16, 17, 31, 32, 33, 64, 100, 256, 257, 1000, 2048, 11008};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        sg_dtype t = types[ti];
        if (!simd->dot[t]) continue;
        int bs = (int)dtype_info(t)->block_size;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int n = sizes[si];
            if (n % bs) continue;
            float *w = malloc((size_t)n * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
            for (int i = 0; i < n; i++) { w[i] = frand(); x[i] = frand(); }
            void *q = malloc(dtype_row_bytes(t, (uint64_t)n));
            CHECK(kern_from_f32(t, w, q, n) == 0);
            double exact = 0, mag = 0;
            float *deq = malloc((size_t)n * sizeof(float));
            kern_to_f32(t, q, deq, n);
            for (int i = 0; i < n; i++) { exact += (double)deq[i] * x[i]; mag += fabs((double)deq[i] * x[i]); }
            float a = kern_scalar.dot[t](q, x, n), b = simd->dot[t](q, x, n);
            /* both agree with the exact sum of the dequantized products to float rounding */
            double tol = 1e-5 * mag + 1e-6;
            CHECK_MSG(fabs(a - exact) <= tol, "scalar %s n=%d: %g vs %g", dtype_info(t)->name, n, a, exact);
            CHECK_MSG(fabs(b - exact) <= tol, "%s %s n=%d: %g vs %g", simd->name, dtype_info(t)->name, n, b, exact);
            free(w); free(x); free(q); free(deq);
        }
    }
}

static void test_avx2(void) {
    if (!kern_avx2.name) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) { printf("  avx2: not on this CPU\n"); return; }
    check_table(&kern_avx2);
}

static void test_avx512(void) {
    if (!kern_avx512.name) return;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) { printf("  avx512: not on this CPU\n"); return; }
    check_table(&kern_avx512);
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
    RUN(test_q8_0_layout);
    RUN(test_rmsnorm_softmax);
    return tu_finish(argv[0]);
}
