/* kernels_avx2.c: AVX2 + FMA + F16C dot products (see kernels.h), for x86 CPUs without
 * AVX-512 (and the integer dots of AVX-512 CPUs without VNNI). Block types take whole
 * blocks; the float dots (F32, F16, BF16) are simd_ops.h's at this width. */
#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "engine/unpack_x86.h"

/* Every function here is compiled for these instructions whatever the file's flags. */
#define SIMD __attribute__((target("avx2,fma,f16c")))

/* Decoding streams each weight row from memory once: prefetching kern_prefetch_bytes
 * ahead (into the next row at a row's end) keeps more loads in flight than the hardware
 * prefetcher. Each kernel reads the distance once, into a register. */

/* Prefetches the `bytes` (a block's size) `ahead` bytes beyond p. */
SIMD static inline __attribute__((always_inline)) void prefetch_ahead(const void *p, int ahead, int bytes) {
    const char *q = (const char *)p + ahead;
    for (int o = 0; o < bytes; o += 64) __builtin_prefetch(q + o, 0, 3);
}

SIMD static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}


/* 8 unsigned / signed bytes to 8 floats. */
SIMD static inline __m256 u8x8_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
SIMD static inline __m256 i8x8_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

/* ---- integer dots against quant_q8_act activations, with maddubs (unsigned bytes times
 * signed bytes, adjacent pairs summed to int16: no pair here can reach 32767) and madd
 * to int32. Each pair of int32 lanes covers one 8-value activation block and is scaled
 * by its float factor (weight scale times activation scale), accumulated in float. ---- */

/* Eight int32 lanes: sums of four u * s, u unsigned and s signed. */
SIMD static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Lane l takes v[base + l / 2] (an 8-block's factor over its two lanes). */
SIMD static inline __m256 dup2(__m256 v, int base) {
    return _mm256_permutevar8x32_ps(v, _mm256_add_epi32(_mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0), _mm256_set1_epi32(base)));
}

/* Each integer dot is written once as a core over NT activation rows (NT 1 for decode,
 * KERN_QDOT_TOKENS for a prompt's tokens), so the weights are unpacked once for all rows;
 * the cores are inlined with a constant NT. Activation row t's groups start at
 * a + t * a_stride. *
 * CHAINS: a row's sum is accumulated the same way whatever NT is (the k-quants: two
 * chains, alternating), so a row computed with others (a speculative verification pass,
 * batched sequences) is bit for bit the row computed alone (a decode step): verified
 * drafts are accepted exactly when plain decoding would have produced them. */
#define CORE SIMD static inline __attribute__((always_inline))
#define NTMAX KERN_QDOT_TOKENS

/* The factors of the four 8-blocks of 32-block j (of group g), times the weight scale. */
SIMD static inline __m256 block32_factor(const quant_q8_act *g, int j, __m256 dw) {
    return _mm256_mul_ps(dup2(_mm256_castps128_ps256(_mm_loadu_ps(g->d + 4 * j)), 0), dw);
}

/* Q4_0 and Q8_0: signed weights (Q4_0's nibbles minus 8), one 32-block at a time. */
CORE void q32_core(const void *w, bool q8, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, float *out) {
    const int ahead = kern_prefetch_bytes;
    const __m256i m4 = _mm256_set1_epi8(15), eight = _mm256_set1_epi8(8);
    __m256 acc[NTMAX][2];
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    const unsigned char *blk = w;
    size_t bytes = q8 ? sizeof(quant_q8_0) : sizeof(quant_q4_0);
    for (int64_t i = 0; i < n / 32; i++, blk += bytes) {
        int j = (int)(i % 8);
        prefetch_ahead(blk, ahead, (int)bytes);
        __m256i v;
        if (q8) {
            v = _mm256_loadu_si256((const __m256i *)((const quant_q8_0 *)blk)->qs);
        } else {
            __m128i q = _mm_loadu_si128((const __m128i *)((const quant_q4_0 *)blk)->qs);
            v = _mm256_sub_epi8(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4), eight);
        }
        /* maddubs needs an unsigned side: |w| against x with w's sign (|w| <= 128, |x| <= 127:
         * a pair stays below 32767) */
        __m256i av = _mm256_sign_epi8(v, v);
        __m256 dw = _mm256_set1_ps(unpack_f16((const uint16_t *)blk));
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const quant_q8_act *g = a + t * a_stride + i / 8;
            __m256i x = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(g->qs + 32 * j)), v);
            int k = (int)(i & 1);   /* two chains for every row count: see CHAINS */
            acc[t][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8s8(av, x)), block32_factor(g, j, dw), acc[t][k]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) out[t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
}

/* Q4_K / Q5_K scales[12] to eight 6-bit scales and eight mins, one per byte. */
SIMD static inline void scales_k4(const uint8_t *s, uint64_t *sc, uint64_t *m) {
    uint32_t u[3];
    __builtin_memcpy(u, s, 12);
    uint32_t sc_lo = u[0] & 0x3f3f3f3f, m_lo = u[1] & 0x3f3f3f3f;
    uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
    uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
    *sc = sc_lo | (uint64_t)sc_hi << 32;
    *m = m_lo | (uint64_t)m_hi << 32;
}

SIMD static inline __m256 u64x8_ps(uint64_t v) { return u8x8_ps(_mm_cvtsi64_si128((long long)v)); }

/* Q4_K and Q5_K (q5: the 5th bits from qh): per 32-block j, d * sc_j * dx over its
 * 8-blocks; the mins' share dmin * m_j * sum_j(x) goes into acc_min. */
CORE void k4_core(const void *w, bool q5, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, float *out) {
    const int ahead = kern_prefetch_bytes;
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    __m256 acc[NTMAX][2], acc_min[NTMAX];
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t][0] = acc[t][1] = acc_min[t] = _mm256_setzero_ps();
    size_t bytes = q5 ? sizeof(quant_q5_K) : sizeof(quant_q4_K);
    const unsigned char *blk = w;
    for (int64_t i = 0; i < n / 256; i++, blk += bytes) {
        const quant_q4_K *b4 = (const quant_q4_K *)blk;   /* d, dmin, scales: the same in both */
        const uint8_t *qs = q5 ? ((const quant_q5_K *)blk)->qs : b4->qs;
        prefetch_ahead(blk, ahead, (int)bytes);
        uint64_t sc, m;
        scales_k4(b4->scales, &sc, &m);
        float dsc[8];
        _mm256_storeu_ps(dsc, _mm256_mul_ps(u64x8_ps(sc), _mm256_set1_ps(_cvtsh_ss(b4->d))));
        __m256 mins = _mm256_mul_ps(u64x8_ps(m), _mm256_set1_ps(_cvtsh_ss(b4->dmin)));
        __m256 mins_lo = dup2(mins, 0), mins_hi = dup2(mins, 4);
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const quant_q8_act *g = a + t * a_stride + i;
            acc_min[t] = _mm256_fmadd_ps(mins_lo, _mm256_loadu_ps(g->s), acc_min[t]);
            acc_min[t] = _mm256_fmadd_ps(mins_hi, _mm256_loadu_ps(g->s + 8), acc_min[t]);
        }
        __m256i qh = q5 ? _mm256_loadu_si256((const __m256i *)((const quant_q5_K *)blk)->qh) : _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i v[2] = {_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4)};
            if (q5) {
                v[0] = _mm256_or_si256(v[0], _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));                        /* bit 2c */
                v[1] = _mm256_or_si256(v[1], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));  /* 2c+1 */
                qh = _mm256_srli_epi16(qh, 2);
            }
#pragma GCC unroll 8
            for (int h = 0; h < 2; h++) {   /* 32-block 2c + h */
                __m256 wsc = _mm256_set1_ps(dsc[2 * c + h]);
#pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    const quant_q8_act *g = a + t * a_stride + i;
                    __m256i dot = dot_u8s8(v[h], _mm256_loadu_si256((const __m256i *)(g->qs + 64 * c + 32 * h)));
                    int k = h;   /* see CHAINS */
                    acc[t][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), block32_factor(g, 2 * c + h, wsc), acc[t][k]);
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) out[t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1])) - hsum(acc_min[t]);
}

CORE void q6_K_core(const void *w, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, float *out) {
    const int ahead = kern_prefetch_bytes;
    const quant_q6_K *b = w;
    __m256 acc[NTMAX][2], acc_off[NTMAX];
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t][0] = acc[t][1] = acc_off[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++) {
        prefetch_ahead(b + i, ahead, sizeof *b);
        /* d * scale_k per 16-block k, in two vectors of 8 */
        __m256 d = _mm256_set1_ps(unpack_f16(&b[i].d)), sc[2];
#pragma GCC unroll 8
        for (int h = 0; h < 2; h++) sc[h] = _mm256_mul_ps(i8x8_ps(_mm_loadl_epi64((const __m128i *)(b[i].scales + 8 * h))), d);
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const quant_q8_act *g = a + t * a_stride + i;
            acc_off[t] = _mm256_fmadd_ps(sc[0], _mm256_loadu_ps(g->s), acc_off[t]);
            acc_off[t] = _mm256_fmadd_ps(sc[1], _mm256_loadu_ps(g->s + 8), acc_off[t]);
        }
#pragma GCC unroll 8
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            unpack_q6_K_half(&b[i], h, q);
#pragma GCC unroll 8
            for (int k = 0; k < 4; k++) {   /* quarter k: 16-blocks 8h + 2k, 8h + 2k + 1 */
                /* lanes 0..3: 16-block 2k, lanes 4..7: 2k+1 (each pair of lanes one 8-block) */
                __m256 wsc = _mm256_permutevar8x32_ps(sc[h], _mm256_set_epi32(2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1,
                                                                               2 * k, 2 * k, 2 * k, 2 * k));
#pragma GCC unroll 8
                for (int t = 0; t < nt; t++) {
                    const quant_q8_act *g = a + t * a_stride + i;
                    __m256i dot = dot_u8s8(q[k], _mm256_loadu_si256((const __m256i *)(g->qs + 128 * h + 32 * k)));
                    int j = k & 1;   /* see CHAINS */
                    acc[t][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), block32_factor(g, 4 * h + k, wsc), acc[t][j]);
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < nt; t++) out[t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1])) - 32 * hsum(acc_off[t]);
}

/* The table's entry points: one activation row (decode) and 2 to KERN_QDOT_TOKENS rows,
 * each count its own copy of the core (nt a constant). */
#define QDOT_ENTRIES(name, core_call)                                                                      \
    SIMD static float qdot_##name(const void *w, const quant_q8_act *a, int64_t n) {                       \
        float out;                                                                                         \
        core_call(w, a, 0, n, 1, &out);                                                                    \
        return out;                                                                                        \
    }                                                                                                      \
    SIMD static void qdotn_##name(const void *w, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, \
                                  float *out) {                                                            \
        _Static_assert(KERN_QDOT_TOKENS == 4, "the cases below");                                          \
        if (nt == 2) core_call(w, a, a_stride, n, 2, out);                                                 \
        else if (nt == 3) core_call(w, a, a_stride, n, 3, out);                                            \
        else core_call(w, a, a_stride, n, 4, out);                                                         \
    }

#define Q4_0_CALL(w, a, s, n, nt, out) q32_core(w, false, a, s, n, nt, out)
#define Q8_0_CALL(w, a, s, n, nt, out) q32_core(w, true, a, s, n, nt, out)
#define Q4_K_CALL(w, a, s, n, nt, out) k4_core(w, false, a, s, n, nt, out)
#define Q5_K_CALL(w, a, s, n, nt, out) k4_core(w, true, a, s, n, nt, out)
QDOT_ENTRIES(q4_0, Q4_0_CALL)
QDOT_ENTRIES(q8_0, Q8_0_CALL)
QDOT_ENTRIES(q4_K, Q4_K_CALL)
QDOT_ENTRIES(q5_K, Q5_K_CALL)
QDOT_ENTRIES(q6_K, q6_K_core)

/* the float dots, attention and SwiGLU, from the width-generic layer */
#define SIMD_WIDTH 256
#define SIMD_TARGET __attribute__((target("avx2,fma,f16c")))
#include "engine/simd.h"
#include "engine/simd_ops.h"

const kern_table kern_avx2 = {
    .name = "avx2",
    .dot = {[SG_F32] = simd_dot_f32_avx2, [SG_F16] = simd_dot_f16_avx2, [SG_BF16] = simd_dot_bf16_avx2,
            [SG_Q8_0] = simd_dot_q8_0_avx2, [SG_Q4_0] = simd_dot_q4_0_avx2, [SG_Q4_K] = simd_dot_q4_K_avx2,
            [SG_Q5_K] = simd_dot_q5_K_avx2, [SG_Q6_K] = simd_dot_q6_K_avx2, [SG_Q4_1] = simd_dot_q4_1_avx2,
            [SG_Q5_0] = simd_dot_q5_0_avx2, [SG_Q5_1] = simd_dot_q5_1_avx2},
    .qdot = {[SG_Q4_0] = qdot_q4_0, [SG_Q8_0] = qdot_q8_0, [SG_Q4_K] = qdot_q4_K,
             [SG_Q5_K] = qdot_q5_K, [SG_Q6_K] = qdot_q6_K},
    .qdotn = {[SG_Q4_0] = qdotn_q4_0, [SG_Q8_0] = qdotn_q8_0, [SG_Q4_K] = qdotn_q4_K,
              [SG_Q5_K] = qdotn_q5_K, [SG_Q6_K] = qdotn_q6_K},
    .attend = simd_attend_avx2,
    .swiglu = simd_swiglu_avx2,
};
#else
const kern_table kern_avx2 = {0};
#endif
