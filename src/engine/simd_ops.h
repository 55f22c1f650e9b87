/* simd_ops.h: the float dot products of kernels.h (F32, F16 and BF16 weights) and the
 * attention and SwiGLU of ops.h, written once over simd.h's vectors and compiled at each
 * width by the kernel file that includes it (kernels_avx2.c, kernels_avx512.c), which
 * puts them in its kern_table. Include after engine/simd.h.
 *
 * They agree with the scalar references (kernels.c, ops.c) to float rounding: the same
 * sums in another order, and vf_exp for expf (within ~2 ulp). */
#ifndef SG_SIMD_OPS_H
#define SG_SIMD_OPS_H

#include <math.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/ops.h"

/* sum(w[i] * x[i]) for a row of n weights: two accumulators over 2 * VF_N values (FMA
 * latency), the last n % (2 * VF_N) in scalar code. LOAD(p) gives VF_N weights from p,
 * SCALAR(w, i) weight i; F16 rows, which decode streams from memory, prefetch a cache
 * line every 32 weights kern_prefetch_bytes ahead. */
#define SIMD_FLOAT_DOT(name, elem, LOAD, SCALAR, prefetch)                                        \
    SIMD_TARGET static float SIMD_SUFFIX(name)(const void *w, const float *x, int64_t n) {          \
        const elem *a = w;                                                                          \
        const int ahead = kern_prefetch_bytes;                                                      \
        vf s0 = vf_zero(), s1 = vf_zero();                                                          \
        int64_t i = 0;                                                                              \
        for (; i + 2 * VF_N <= n; i += 2 * VF_N) {                                                  \
            if (prefetch && i % 32 == 0) __builtin_prefetch((const char *)(a + i) + ahead, 0, 3);   \
            s0 = vf_fmadd(LOAD(a + i), vf_load(x + i), s0);                                         \
            s1 = vf_fmadd(LOAD(a + i + VF_N), vf_load(x + i + VF_N), s1);                           \
        }                                                                                           \
        float s = vf_reduce_add(vf_add(s0, s1));                                                    \
        for (; i < n; i++) s += SCALAR(a, i) * x[i];                                                \
        return s;                                                                                   \
    }
#define F32_AT(a, i) (a)[i]
#define F16_AT(a, i) sg_f16_to_f32((a)[i])
#define BF16_AT(a, i) sg_bf16_to_f32((a)[i])
SIMD_FLOAT_DOT(simd_dot_f32, float, vf_load, F32_AT, false)
SIMD_FLOAT_DOT(simd_dot_f16, uint16_t, vf_load_f16, F16_AT, true)
SIMD_FLOAT_DOT(simd_dot_bf16, uint16_t, vf_load_bf16, BF16_AT, false)
#undef F32_AT
#undef F16_AT
#undef BF16_AT
#undef SIMD_FLOAT_DOT

/* scores[i] = e^(scores[i] - max) for i < n; returns their sum. The last n % VF_N go
 * through a padded copy, so the tail takes the same exponential as the rest. */
SIMD_FN float softmax_exp(float *scores, int n, float max) {
    vf vmax = vf_set1(max), vsum = vf_zero();
    int i = 0;
    for (; i + VF_N <= n; i += VF_N) {
        vf e = vf_exp(vf_sub(vf_load(scores + i), vmax));
        vf_store(scores + i, e);
        vsum = vf_add(vsum, e);
    }
    float sum = vf_reduce_add(vsum);
    if (i < n) {
        float tmp[VF_N] = {0};
        memcpy(tmp, scores + i, (size_t)(n - i) * sizeof(float));
        vf_store(tmp, vf_exp(vf_sub(vf_load(tmp), vmax)));
        for (int j = 0; j < n - i; j++) sum += scores[i + j] = tmp[j];
    }
    return sum;
}

/* ops_attend for one head (hd a multiple of VF_N). */
SIMD_TARGET static void SIMD_SUFFIX(simd_attend)(sg_dtype kv_type, const float *q, const void *k, const void *v,
                                                 size_t stride, int n, int hd, float scale, float *scores,
                                                 float *out) {
    size_t esz = kv_type == SG_F32 ? 4 : 2, row = stride * esz;
    const unsigned char *kb = k, *vb = v;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        const unsigned char *kr = kb + (size_t)i * row;
        vf acc = vf_zero();
        for (int j = 0; j < hd; j += VF_N) acc = vf_fmadd(vf_load_kv(kv_type, kr + j * esz), vf_load(q + j), acc);
        float s = vf_reduce_add(acc) * scale;
        scores[i] = s;
        max = s > max ? s : max;
    }
    float inv = 1.0f / softmax_exp(scores, n, max);
    for (int j = 0; j < hd; j += VF_N) {
        /* two accumulators hide the FMA latency over positions */
        vf o0 = vf_zero(), o1 = vf_zero();
        int t = 0;
        for (; t + 2 <= n; t += 2) {
            o0 = vf_fmadd(vf_set1(scores[t]), vf_load_kv(kv_type, vb + (size_t)t * row + j * esz), o0);
            o1 = vf_fmadd(vf_set1(scores[t + 1]), vf_load_kv(kv_type, vb + (size_t)(t + 1) * row + j * esz), o1);
        }
        if (t < n) o0 = vf_fmadd(vf_set1(scores[t]), vf_load_kv(kv_type, vb + (size_t)t * row + j * esz), o0);
        vf_store(out + j, vf_mul(vf_add(o0, o1), vf_set1(inv)));
    }
}

/* ops_swiglu: gate = gate / (1 + e^-gate) * up. */
SIMD_TARGET static void SIMD_SUFFIX(simd_swiglu)(float *gate, const float *up, size_t n) {
    size_t i = 0;
    vf one = vf_set1(1.0f);
    for (; i + VF_N <= n; i += VF_N) {
        vf g = vf_load(gate + i);
        vf e = vf_exp(vf_sub(vf_zero(), g));
        vf_store(gate + i, vf_mul(vf_div(g, vf_add(one, e)), vf_load(up + i)));
    }
    ops_swiglu_scalar(gate + i, up + i, n - i);
}

#endif
