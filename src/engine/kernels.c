/* kernels.c: the scalar reference kernels and the run-time choice of SIMD variants.
 * See kernels.h. The scalar dot products dequantize each block exactly as GGUF defines
 * it and accumulate in float, in order: the reference the SIMD variants are tested
 * against. */
#include "engine/kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

bool kern_supports(sg_dtype t) {
    return t == SG_F32 || t == SG_F16 || t == SG_BF16 || quant_supports(t);
}

void kern_to_f32(sg_dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case SG_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case SG_F16: for (int64_t i = 0; i < n; i++) dst[i] = sg_f16_to_f32(((const uint16_t *)src)[i]); break;
    case SG_BF16: for (int64_t i = 0; i < n; i++) dst[i] = sg_bf16_to_f32(((const uint16_t *)src)[i]); break;
    default: quant_dequantize_row(t, src, dst, n); break;   /* zeros for an unknown type */
    }
}

int kern_from_f32(sg_dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case SG_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return 0;
    case SG_F16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = sg_f32_to_f16(src[i]); return 0;
    case SG_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = sg_f32_to_bf16(src[i]); return 0;
    default: return quant_quantize_row(t, src, dst, n);
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

const kern_table kern_scalar = {
    .name = "scalar",
    .dot = {[SG_F32] = dot_f32, [SG_F16] = dot_f16, [SG_BF16] = dot_bf16,
            [SG_Q4_0] = quant_dot_q4_0, [SG_Q4_1] = quant_dot_q4_1, [SG_Q5_0] = quant_dot_q5_0,
            [SG_Q5_1] = quant_dot_q5_1, [SG_Q8_0] = quant_dot_q8_0, [SG_Q4_K] = quant_dot_q4_K,
            [SG_Q5_K] = quant_dot_q5_K, [SG_Q6_K] = quant_dot_q6_K},
    /* no qdot: the scalar table is the float reference */
};

/* ---- selection ---- */

/* kern_select's choice: a copy of a table with its integer entries adjusted. */
static kern_table g_selected;
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

static bool cpu_has_avx512_vnni(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
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

int kern_prefetch_bytes = 2048;

static int prefetch_default(void) {
    const char *env = getenv("SMOLGATE_PREFETCH");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v >= 0 && v <= 65536) return (int)v;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_is("amd")) return 6144;
#endif
    return 2048;
}

const char *kern_select(const char *force) {
    kern_prefetch_bytes = prefetch_default();
    if (!force || !*force) force = getenv("SMOLGATE_SIMD");
    const kern_table *t;
    if (force && !strcmp(force, "scalar")) t = &kern_scalar;
    else if (force && !strcmp(force, "avx2") && kern_avx2.name && cpu_has_avx2()) t = &kern_avx2;
    else if ((!force || !*force || !strcmp(force, "avx512")) && kern_avx512.name && cpu_has_avx512()) t = &kern_avx512;
    else if (kern_avx2.name && cpu_has_avx2()) t = &kern_avx2;
    else t = &kern_scalar;
    g_selected = *t;
    if (t == &kern_avx512 && !cpu_has_avx512_vnni()) {   /* AVX2's integer dots run on any AVX-512 CPU */
        memcpy(g_selected.qdot, kern_avx2.qdot, sizeof g_selected.qdot);
        memcpy(g_selected.qdotn, kern_avx2.qdotn, sizeof g_selected.qdotn);
    }
    const char *int8 = getenv("SMOLGATE_INT8");
    bool int8_off = int8 && !strcmp(int8, "0");
    if (int8_off) {
        memset(g_selected.qdot, 0, sizeof g_selected.qdot);
        memset(g_selected.qdotn, 0, sizeof g_selected.qdotn);
    }
    /* The matrix-matrix kernel: AMX where the CPU and OS have it, else AVX-512 VNNI. */
    const char *gemm = getenv("SMOLGATE_GEMM");
    g_selected.gemm = NULL;
    g_selected.gemm_name = NULL;
    bool want_amx = !gemm || !*gemm || !strcmp(gemm, "amx");
    bool want_vnni = !gemm || !*gemm || !strcmp(gemm, "vnni");
    if (t != &kern_scalar && want_amx && kern_amx_available()) {
        g_selected.gemm = kern_gemm_amx;
        g_selected.gemm_name = "amx";
    } else if (t == &kern_avx512 && want_vnni && !int8_off && cpu_has_avx512_vnni()) {
        /* its int8 activations belong to the integer path SMOLGATE_INT8=0 turns off */
        g_selected.gemm = kern_gemm_vnni;
        g_selected.gemm_name = "avx512-vnni";
    }
    g_active = &g_selected;
    return g_active->name;
}

const kern_table *kern_active(void) { return g_active; }

/* ---- matmul ---- */

/* The per-thread buffers of kern_scratch: one thread-specific array of them. Per thread,
 * because each matmul thread quantizes its (small) activation rows itself rather than
 * synchronising on a shared copy. */
typedef struct scratch { void *p; size_t cap; } scratch;
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_destroy(void *p) {
    scratch *s = p;
    for (int i = 0; i < KERN_SCRATCH_COUNT; i++) free(s[i].p);
    free(s);
}

static void scratch_key_init(void) { pthread_key_create(&g_scratch_key, scratch_destroy); }

void *kern_scratch(kern_scratch_id id, size_t bytes) {
    pthread_once(&g_scratch_once, scratch_key_init);
    scratch *s = pthread_getspecific(g_scratch_key);
    if (!s) {
        s = calloc(KERN_SCRATCH_COUNT, sizeof *s);
        if (!s || pthread_setspecific(g_scratch_key, s)) { free(s); return NULL; }
    }
    scratch *b = &s[id];
    if (b->cap < bytes) {
        size_t cap = (bytes + 63) & ~(size_t)63;
        void *p = aligned_alloc(64, cap);
        if (!p) return NULL;
        free(b->p);
        b->p = p;
        b->cap = cap;
    }
    return b->p;
}

bool kern_uses_int8(const kern_table *k, sg_dtype w_type, int64_t cols) {
    return k->qdot[w_type] && cols % QUANT_QK == 0;
}

quant_q8_act *kern_act_buffer(int64_t cols, int n_tok) {
    return kern_scratch(KERN_SCRATCH_ACT, (size_t)(quant_act_groups(cols) * n_tok) * sizeof(quant_q8_act));
}

void kern_act_quantize(const kern_table *k, const float *x, int64_t x_stride, int n_tok, int64_t cols,
                       quant_q8_act *xq) {
    int64_t groups = quant_act_groups(cols);
    void (*quantize)(const float *, quant_q8_act *, int64_t) = k->act_quantize ? k->act_quantize : quant_act_quantize;
    for (int t = 0; t < n_tok; t++) quantize(x + t * x_stride, xq + t * groups, cols);
}

void kern_matmul_rows_q8(const kern_table *k, sg_dtype w_type, const void *w, uint64_t w_row_bytes,
                         int64_t cols, const quant_q8_act *xq, int n_tok,
                         float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    const unsigned char *wb = w;
    int64_t groups = quant_act_groups(cols);
    kern_qdot_fn qdot = k->qdot[w_type];
    kern_qdotn_fn qdotn = k->qdotn[w_type];
    if (n_tok == 1) {   /* decode: one row after another, nothing else in the loop */
        for (int64_t r = r0; r < r1; r++) y[r] = qdot(wb + (uint64_t)r * w_row_bytes, xq, cols);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        const void *row = wb + (uint64_t)r * w_row_bytes;
        int t = 0;
        while (qdotn && n_tok - t >= 2) {   /* 4 at a time, then 3 or 2 */
            int m = n_tok - t < KERN_QDOT_TOKENS ? n_tok - t : KERN_QDOT_TOKENS;
            float out[KERN_QDOT_TOKENS];
            qdotn(row, xq + t * groups, groups, cols, m, out);
            for (int k2 = 0; k2 < m; k2++) y[(t + k2) * y_stride + r] = out[k2];
            t += m;
        }
        for (; t < n_tok; t++) y[t * y_stride + r] = qdot(row, xq + t * groups, cols);
    }
}

void kern_matmul_rows(const kern_table *k, sg_dtype w_type, const void *w, uint64_t w_row_bytes,
                      int64_t cols, const float *x, int64_t x_stride, int n_tok,
                      float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    if (k->gemm && n_tok >= KERN_GEMM_MIN_TOKENS &&
        k->gemm(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1))
        return;
    const unsigned char *wb = w;
    quant_q8_act *xq = kern_uses_int8(k, w_type, cols)
                           ? kern_scratch(KERN_SCRATCH_ROWS, (size_t)(quant_act_groups(cols) * n_tok) * sizeof(quant_q8_act))
                           : NULL;
    if (xq) {
        kern_act_quantize(k, x, x_stride, n_tok, cols, xq);
        kern_matmul_rows_q8(k, w_type, w, w_row_bytes, cols, xq, n_tok, y, y_stride, r0, r1);
        return;
    }
    kern_dot_fn dot = k->dot[w_type] ? k->dot[w_type] : kern_scalar.dot[w_type];
    /* Rows outer, tokens inner: each weight row is read from memory once and reused
     * from L1 for every token of the batch. */
    for (int64_t r = r0; r < r1; r++) {
        const void *row = wb + (uint64_t)r * w_row_bytes;
        for (int t = 0; t < n_tok; t++) y[t * y_stride + r] = dot(row, x + t * x_stride, cols);
    }
}

/* ---- norms ---- */

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
