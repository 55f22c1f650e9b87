/* kernels.c: the scalar reference kernels and the run-time choice of SIMD variants.
 * See kernels.h. The scalar dot products dequantize each block exactly as GGUF defines
 * it and accumulate in float, in order: the reference the SIMD variants are tested
 * against. */
#include "engine/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- block formats ---- */

typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;   /* 34 bytes */

static void q8_0_to_f32(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = src;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = sg_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; j++) dst[i * 32 + j] = d * (float)b[i].qs[j];
    }
}

/* As ggml quantizes: d = max|x| / 127, q = round(x / d). */
static void f32_to_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        const float *x = src + i * 32;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = sg_f32_to_f16(d);
        for (int j = 0; j < 32; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

bool kern_supports(sg_dtype t) {
    return t == SG_F32 || t == SG_F16 || t == SG_BF16 || t == SG_Q8_0;
}

void kern_to_f32(sg_dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case SG_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case SG_F16: for (int64_t i = 0; i < n; i++) dst[i] = sg_f16_to_f32(((const uint16_t *)src)[i]); break;
    case SG_BF16: for (int64_t i = 0; i < n; i++) dst[i] = sg_bf16_to_f32(((const uint16_t *)src)[i]); break;
    case SG_Q8_0: q8_0_to_f32(src, dst, n); break;
    default: memset(dst, 0, (size_t)n * sizeof(float)); break;
    }
}

int kern_from_f32(sg_dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case SG_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return 0;
    case SG_F16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = sg_f32_to_f16(src[i]); return 0;
    case SG_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = sg_f32_to_bf16(src[i]); return 0;
    case SG_Q8_0: if (n % 32) return -1; f32_to_q8_0(src, dst, n); return 0;
    default: return -1;
    }
}

/* ---- scalar dot products ---- */

static float dot_f32(const void *w, const float *x, int64_t n) {
    const float *a = w;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * x[i];
    return s;
}

static float dot_f16(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += sg_f16_to_f32(a[i]) * x[i];
    return s;
}

static float dot_bf16(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += sg_bf16_to_f32(a[i]) * x[i];
    return s;
}

static float dot_q8_0(const void *w, const float *x, int64_t n) {
    const block_q8_0 *b = w;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        float d = sg_f16_to_f32(b[i].d);
        for (int j = 0; j < 32; j++) s += d * (float)b[i].qs[j] * x[i * 32 + j];
    }
    return s;
}

const kern_table kern_scalar = {
    .name = "scalar",
    .dot = {[SG_F32] = dot_f32, [SG_F16] = dot_f16, [SG_BF16] = dot_bf16, [SG_Q8_0] = dot_q8_0},
};

/* ---- selection ---- */

static const kern_table *g_active = &kern_scalar;

static bool cpu_has_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

static bool cpu_has_avx2(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");   /* every AVX2 CPU has F16C */
#else
    return false;
#endif
}

const char *kern_select(const char *force) {
    if (!force || !*force) force = getenv("SMOLGATE_SIMD");
    if (force && !strcmp(force, "scalar")) g_active = &kern_scalar;
    else if (force && !strcmp(force, "avx2") && kern_avx2.name && cpu_has_avx2()) g_active = &kern_avx2;
    else if ((!force || !*force || !strcmp(force, "avx512")) && kern_avx512.name && cpu_has_avx512()) g_active = &kern_avx512;
    else if (kern_avx2.name && cpu_has_avx2()) g_active = &kern_avx2;
    else g_active = &kern_scalar;
    return g_active->name;
}

const kern_table *kern_active(void) { return g_active; }

/* ---- matmul, norms ---- */

void kern_matmul_rows(const kern_table *k, sg_dtype w_type, const void *w, uint64_t w_row_bytes,
                      int64_t cols, const float *x, int64_t x_stride, int n_tok,
                      float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    kern_dot_fn dot = k->dot[w_type] ? k->dot[w_type] : kern_scalar.dot[w_type];
    const unsigned char *wb = w;
    /* Rows outer, tokens inner: each weight row is read from memory once and reused
     * from L1 for every token of the batch. */
    for (int64_t r = r0; r < r1; r++) {
        const void *row = wb + (uint64_t)r * w_row_bytes;
        for (int t = 0; t < n_tok; t++) y[t * y_stride + r] = dot(row, x + t * x_stride, cols);
    }
}

void kern_rmsnorm(float *o, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0;   /* double: the mean of squares over thousands of values */
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    if (w) for (int64_t i = 0; i < n; i++) o[i] = w[i] * (x[i] * scale);
    else for (int64_t i = 0; i < n; i++) o[i] = x[i] * scale;
}

void kern_softmax(float *x, int64_t n) {
    float max = x[0];
    for (int64_t i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    float sum = 0;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}
