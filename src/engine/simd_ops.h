/* simd_ops.h: the float dot products of kernels.h (F32, F16, BF16 and block-quantized
 * weights against f32 activations) and the attention and SwiGLU of ops.h, written once
 * over simd.h's vectors and compiled at each width by the kernel file that includes it
 * (kernels_avx2.c, kernels_avx512.c), which puts them in its kern_table. Include after
 * engine/simd.h.
 *
 * They agree with the scalar references (kernels.c, ops.c) to float rounding: the same
 * sums in another order, and vf_exp for expf (within ~2 ulp). */
#ifndef SG_SIMD_OPS_H
#define SG_SIMD_OPS_H

#include <math.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/ops.h"
#include "engine/quant.h"
#include "engine/unpack_x86.h"

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

/* ---- block-quantized weights against f32 activations (kernels.h's dot entries; the
 * integer qdot path is each kernel file's own). Each 32 weights are unpacked to one
 * unsigned byte per weight in an AVX2 register (integer code, the same at both widths),
 * and the bytes to exact float weights w = d * q + m, VF_N at a time, multiplied with x
 * by FMA. Every w is exact in float (d an f16 times a scale of at most 8 bits, q at most
 * 6 bits), as quant.c's scalar unpacking computes it. ---- */

/* acc[0 / 1, alternating per vector] += (d * q + m) * x over the 32 bytes q in v, with
 * (d0, m0) for the first 16 weights and (d1, m1) for the next 16. */
SIMD_FN void fma32(__m256i v, float d0, float m0, float d1, float m1, const float *x, vf acc[2]) {
    for (int p = 0; p < 32 / VF_N; p++) {
        bool second = p * VF_N >= 16;
        vf w = vf_fmadd(vf_set1(second ? d1 : d0), vf_from_u8x32(v, p), vf_set1(second ? m1 : m0));
        acc[p & 1] = vf_fmadd(w, vf_load(x + p * VF_N), acc[p & 1]);
    }
}

/* 16 bytes of nibbles to 32 weights: the low nibbles are weights 0..15, the high 16..31. */
SIMD_FN __m256i unpack_nibbles16(const uint8_t *qs) {
    const __m128i m4 = _mm_set1_epi8(15);
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

/* q + 16 in the bytes j whose bit j of the 32 bits at bits is set (Q5_0 / Q5_1's 5th bits). */
SIMD_FN __m256i add_fifth_bits(const uint8_t *bits, __m256i q) {
    uint32_t b;
    memcpy(&b, bits, 4);
    const __m256i byte_of = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                             2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit_of = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)b), byte_of);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit_of), bit_of);
    return _mm256_add_epi8(q, _mm256_and_si256(set, _mm256_set1_epi8(16)));
}

SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q8_0)(const void *w, const float *x, int64_t n) {
    const quant_q8_0 *b = w;
    vf acc[2] = {vf_zero(), vf_zero()};
    for (int64_t i = 0; i < n / 32; i++, x += 32) {   /* q + 128 as the unsigned byte, m = -128 d */
        __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)b[i].qs), _mm256_set1_epi8((char)0x80));
        float d = unpack_f16(&b[i].d);
        fma32(v, d, -128 * d, d, -128 * d, x, acc);
    }
    return vf_reduce_add(vf_add(acc[0], acc[1]));
}

/* Q4_0 (w = d (q - 8)), Q4_1 (d q + m), Q5_0 (d (q - 16), q with its 5th bit) and Q5_1:
 * f16 d, then (has_m) f16 m, then (five) qh[4], then qs[16] (quant.h). */
SIMD_FN float dot_q32(const uint8_t *blk, size_t block_bytes, bool has_m, bool five, const float *x, int64_t n) {
    vf acc[2] = {vf_zero(), vf_zero()};
    size_t qh_at = has_m ? 4 : 2, qs_at = qh_at + (five ? 4 : 0);
    for (int64_t i = 0; i < n / 32; i++, blk += block_bytes, x += 32) {
        float d = unpack_f16((const uint16_t *)blk), m = has_m ? unpack_f16((const uint16_t *)blk + 1) : (five ? -16 : -8) * d;
        __m256i q = unpack_nibbles16(blk + qs_at);
        if (five) q = add_fifth_bits(blk + qh_at, q);
        fma32(q, d, m, d, m, x, acc);
    }
    return vf_reduce_add(vf_add(acc[0], acc[1]));
}

SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q4_0)(const void *w, const float *x, int64_t n) {
    return dot_q32(w, sizeof(quant_q4_0), false, false, x, n);
}
SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q4_1)(const void *w, const float *x, int64_t n) {
    return dot_q32(w, sizeof(quant_q4_1), true, false, x, n);
}
SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q5_0)(const void *w, const float *x, int64_t n) {
    return dot_q32(w, sizeof(quant_q5_0), false, true, x, n);
}
SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q5_1)(const void *w, const float *x, int64_t n) {
    return dot_q32(w, sizeof(quant_q5_1), true, true, x, n);
}

/* Q4_K and Q5_K (q5: the 5th bits from qh): sub-block j of 32 weights, w = d sc_j q -
 * dmin m_j; chunk c of qs holds sub-blocks 2c (low nibbles) and 2c + 1 (high). */
SIMD_FN float dot_k4(const uint8_t *blk, size_t block_bytes, bool q5, const float *x, int64_t n) {
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    vf acc[2] = {vf_zero(), vf_zero()};
    for (int64_t i = 0; i < n / 256; i++, blk += block_bytes, x += 256) {
        const quant_q4_K *b4 = (const quant_q4_K *)blk;
        const uint8_t *qs = q5 ? ((const quant_q5_K *)blk)->qs : b4->qs;
        float d = unpack_f16(&b4->d), dmin = unpack_f16(&b4->dmin);
        __m256i qh = q5 ? _mm256_loadu_si256((const __m256i *)((const quant_q5_K *)blk)->qh) : _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i sub[2] = {_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)};
            for (int h = 0; h < 2; h++) {
                if (q5)   /* bit 2c + h of qh[l]: the 5th bit of weight l */
                    sub[h] = _mm256_or_si256(sub[h], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + h), one), 4));
                uint8_t sc, m;
                quant_scale_min_k4(2 * c + h, b4->scales, &sc, &m);
                float f = d * sc, o = -(dmin * m);
                fma32(sub[h], f, o, f, o, x + 64 * c + 32 * h, acc);
            }
        }
    }
    return vf_reduce_add(vf_add(acc[0], acc[1]));
}

SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q4_K)(const void *w, const float *x, int64_t n) {
    return dot_k4(w, sizeof(quant_q4_K), false, x, n);
}
SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q5_K)(const void *w, const float *x, int64_t n) {
    return dot_k4(w, sizeof(quant_q5_K), true, x, n);
}

/* Q6_K: a scale per 16 weights, w = d sc (q - 32). */
SIMD_TARGET static float SIMD_SUFFIX(simd_dot_q6_K)(const void *w, const float *x, int64_t n) {
    const quant_q6_K *b = w;
    vf acc[2] = {vf_zero(), vf_zero()};
    for (int64_t i = 0; i < n / 256; i++) {
        float d = unpack_f16(&b[i].d);
        for (int h = 0; h < 2; h++, x += 128) {
            __m256i q[4];
            unpack_q6_K_half(&b[i], h, q);
            for (int k = 0; k < 4; k++) {
                const int8_t *sc = b[i].scales + 8 * h + 2 * k;
                float f0 = d * sc[0], f1 = d * sc[1];
                fma32(q[k], f0, -32 * f0, f1, -32 * f1, x + 32 * k, acc);
            }
        }
    }
    return vf_reduce_add(vf_add(acc[0], acc[1]));
}

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
