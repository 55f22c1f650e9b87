/* kernels_avx512.c: AVX-512 dot products (see kernels.h), called only when the CPU
 * reports AVX-512F/BW/VL/DQ (and VNNI for the integer dots). Block types take whole
 * blocks; the float dots (F32, F16, BF16) are simd_ops.h's at this width. */
#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include "engine/unpack_x86.h"

/* Decoding streams each weight row from memory once: prefetching kern_prefetch_bytes
 * ahead (into the next row at a row's end: rows are contiguous) keeps more loads in
 * flight than the hardware prefetcher alone (single-thread streaming on a Xeon went from
 * ~7 to ~11 GB/s). Each kernel reads the distance once, into a register. */

/* Every function here is compiled for these instructions whatever the file's flags. */
#define SIMD __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))


/* ---- integer dots against quant_q8_act activations, with AVX-512 VNNI (vpdpbusd:
 * unsigned bytes times signed bytes, summed in fours into int32). Weights go in as the
 * unsigned operand; their offsets (-8 for Q4_0, -32 for Q6_K, +128 for Q8_0's sign) and
 * the k-quants' mins are folded in afterwards from the activations' float sums. Each
 * pair of int32 lanes covers one 8-value activation block and is scaled by its float
 * factor (weight scale times activation scale), accumulated in float. ---- */

#define SIMD_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

/* Prefetches the `bytes` (a block's size) `ahead` bytes beyond p. */
SIMD_VNNI static inline __attribute__((always_inline)) void prefetch_ahead(const void *p, int ahead, int bytes) {
    const char *q = (const char *)p + ahead;
    for (int o = 0; o < bytes; o += 64) __builtin_prefetch(q + o, 0, 3);
}

/* Lane l of the result takes v[base + l / 2] (one 8-block's factor over its two lanes). */
SIMD_VNNI static inline __m512i dup2_index(int base) {
    return _mm512_add_epi32(_mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0), _mm512_set1_epi32(base));
}

/* Lane l of the result takes v[base + l / 4]. */
SIMD_VNNI static inline __m512i quad_index(int base) {
    return _mm512_add_epi32(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0), _mm512_set1_epi32(base));
}

/* The factor of the 8 lanes pairs of a 64-value chunk c (0..3) of a group: 8-blocks
 * 8c .. 8c + 7, from fac[0] (8-blocks 0..15) or fac[1] (16..31). */
SIMD_VNNI static inline __m512 chunk_factor(const __m512 *fac, int c) {
    return _mm512_permutexvar_ps(dup2_index(8 * (c & 1)), fac[c >> 1]);
}

/* The eight f16 scales of a group of eight Q4_0 (18-byte) or Q8_0 (34-byte) blocks as
 * floats, picked out of whole-vector loads by word permutes: gathering them through a
 * stack array stalled every group on store-to-load forwarding (decode ran ~20% slower). */
SIMD_VNNI static inline __m256 f16x8_q4_0(const void *p) {
    const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         63, 54, 45, 36, 27, 18, 9, 0);
    __m512i d = _mm512_permutex2var_epi16(_mm512_loadu_si512(p), idx, _mm512_loadu_si512((const char *)p + 64));
    return _mm256_cvtph_ps(_mm512_castsi512_si128(d));
}

SIMD_VNNI static inline __m256 f16x8_q8_0(const void *p) {
    const char *c = p;
    const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         55, 38, 21, 4, 51, 34, 17, 0);
    __m512i lo = _mm512_permutex2var_epi16(_mm512_loadu_si512(c), idx, _mm512_loadu_si512(c + 64));
    __m512i hi = _mm512_permutex2var_epi16(_mm512_loadu_si512(c + 128), idx, _mm512_loadu_si512(c + 192));
    return _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_mask_mov_epi16(lo, 0xF0, hi)));
}

/* Per 8-block factors of a group whose 32-blocks have scales w32 (8 floats in the low
 * half): fac[h][k] = dx_(16h + k) * w32[(16h + k) / 4]. */
SIMD_VNNI static inline void factors_32(__m512 w32, const quant_q8_act *g, __m512 *fac) {
    fac[0] = _mm512_mul_ps(_mm512_loadu_ps(g->d), _mm512_permutexvar_ps(quad_index(0), w32));
    fac[1] = _mm512_mul_ps(_mm512_loadu_ps(g->d + 16), _mm512_permutexvar_ps(quad_index(4), w32));
}

/* Each integer dot is written once as a core over NT activation rows (NT 1 for decode,
 * KERN_QDOT_TOKENS for a prompt's tokens): the weights are loaded and unpacked once and
 * used for every row, which is what prompt processing is bound by. The cores are inlined
 * with a constant NT, so the per-row loops unroll and the accumulators stay in registers.
 * Activation row t's groups start at a + t * a_stride. *
 * CHAINS: a row's sum is accumulated the same way whatever NT is (the k-quants: two
 * chains, alternating), so a row computed with others (a speculative verification pass,
 * batched sequences) is bit for bit the row computed alone (a decode step): verified
 * drafts are accepted exactly when plain decoding would have produced them. */
#define CORE SIMD_VNNI static inline __attribute__((always_inline))
#define NTMAX KERN_QDOT_TOKENS

/* Q4_0 and Q8_0: groups of eight 32-blocks against one activation group, two blocks per
 * vector; a partial last group is finished by the scalar reference. */
CORE void q4_0_core(const void *w, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, float *out) {
    const int ahead = kern_prefetch_bytes;
    const quant_q4_0 *b = w;
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i shift = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);   /* per 16 bytes: low nibbles, then high */
    __m512 acc[NTMAX], acc_off[NTMAX];
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t] = acc_off[t] = _mm512_setzero_ps();
    int64_t groups = n / 256;
    for (int64_t gi = 0; gi < groups; gi++) {
        const quant_q4_0 *bb = b + 8 * gi;
        prefetch_ahead(bb, ahead, 8 * sizeof *bb);
        __m512 dw = _mm512_castps256_ps512(f16x8_q4_0(bb)), fac[NTMAX][2];
        __m512 dw2 = _mm512_permutexvar_ps(dup2_index(0), dw);
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const quant_q8_act *g = a + t * a_stride + gi;
            factors_32(dw, g, fac[t]);
            acc_off[t] = _mm512_fmadd_ps(dw2, _mm512_loadu_ps(g->s), acc_off[t]);
        }
        #pragma GCC unroll 8
        for (int p = 0; p < 4; p++) {
            __m256i q0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)bb[2 * p].qs));
            __m256i q1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)bb[2 * p + 1].qs));
            __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
            q = _mm512_and_si512(_mm512_srlv_epi64(q, shift), m4);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                const quant_q8_act *g = a + t * a_stride + gi;
                __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(g->qs + 64 * p));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), chunk_factor(fac[t], p), acc[t]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) {
        out[t] = _mm512_reduce_add_ps(acc[t]) - 8 * _mm512_reduce_add_ps(acc_off[t]);
        if (n > groups * 256) out[t] += quant_qdot_q4_0(b + 8 * groups, a + t * a_stride + groups, n - groups * 256);
    }
}

CORE void q8_0_core(const void *w, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, float *out) {
    const int ahead = kern_prefetch_bytes;
    const quant_q8_0 *b = w;
    const __m512i flip = _mm512_set1_epi8((char)0x80);   /* q + 128: the unsigned operand */
    __m512 acc[NTMAX], acc_off[NTMAX];
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t] = acc_off[t] = _mm512_setzero_ps();
    int64_t groups = n / 256;
    for (int64_t gi = 0; gi < groups; gi++) {
        const quant_q8_0 *bb = b + 8 * gi;
        prefetch_ahead(bb, ahead, 8 * sizeof *bb);
        __m512 dw = _mm512_castps256_ps512(f16x8_q8_0(bb)), fac[NTMAX][2];
        __m512 dw2 = _mm512_permutexvar_ps(dup2_index(0), dw);
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const quant_q8_act *g = a + t * a_stride + gi;
            factors_32(dw, g, fac[t]);
            acc_off[t] = _mm512_fmadd_ps(dw2, _mm512_loadu_ps(g->s), acc_off[t]);
        }
        #pragma GCC unroll 8
        for (int p = 0; p < 4; p++) {
            __m256i q0 = _mm256_loadu_si256((const __m256i *)bb[2 * p].qs);
            __m256i q1 = _mm256_loadu_si256((const __m256i *)bb[2 * p + 1].qs);
            __m512i q = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1), flip);
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                const quant_q8_act *g = a + t * a_stride + gi;
                __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(g->qs + 64 * p));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), chunk_factor(fac[t], p), acc[t]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) {
        out[t] = _mm512_reduce_add_ps(acc[t]) - 128 * _mm512_reduce_add_ps(acc_off[t]);
        if (n > groups * 256) out[t] += quant_qdot_q8_0(b + 8 * groups, a + t * a_stride + groups, n - groups * 256);
    }
}

/* Q4_K / Q5_K scales[12] to eight 6-bit scales and eight mins, one per byte. */
SIMD_VNNI static inline void scales_k4(const uint8_t *s, uint64_t *sc, uint64_t *m) {
    uint32_t u[3];
    __builtin_memcpy(u, s, 12);
    uint32_t sc_lo = u[0] & 0x3f3f3f3f, m_lo = u[1] & 0x3f3f3f3f;
    uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
    uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
    *sc = sc_lo | (uint64_t)sc_hi << 32;
    *m = m_lo | (uint64_t)m_hi << 32;
}

/* Q4_K and Q5_K: per super-block, the 8-block factors d * sc_j * dx and the mins' share
 * dmin * m_j * sum_j(x); Q5_K adds the 5th bits from qh.
 *
 * Decode is bound by the vector instructions per super-block, so they are few: Q4_K's
 * high nibbles stay in place (q & 0xF0 is 16 times the weight) and 16 times every low
 * nibble's scale makes up for it, the row's sum coming out 16 times too large (powers
 * of two: exact). The scales and mins go to floats in one vector, sc_j and m_j
 * interleaved, so one multiply by (d, dmin, d, dmin, ...) scales them all. */
CORE void k4_core(const void *w, size_t block_bytes, bool q5, const quant_q8_act *a, int64_t a_stride, int64_t n,
                  int nt, float *out) {
    const int ahead = kern_prefetch_bytes;
    const __m512i m4 = _mm512_set1_epi8(15), sixteen = _mm512_set1_epi8(16);
    const __m512i shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);   /* low nibbles, then high */
    /* Q4_K: per 64-weight chunk, low nibbles in the first 32 bytes, high ones in place */
    const __m512i nib = _mm512_inserti64x4(_mm512_set1_epi8(15), _mm256_set1_epi8((char)0xF0), 1);
    /* lane 2j: sc_j's weight, 16 for Q4_K's low nibbles (even j); lane 2j + 1: m_j's */
    const __m512 lo16 = q5 ? _mm512_set1_ps(1) : _mm512_set_ps(1, 1, 1, 16, 1, 1, 1, 16, 1, 1, 1, 16, 1, 1, 1, 16);
    /* lane l of e0 / e1: sc_(l / 4) / sc_(4 + l / 4), the 32-block of 8-block l or 16 + l */
    const __m512i e0_idx = _mm512_set_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
    const __m512i e1_idx = _mm512_add_epi32(e0_idx, _mm512_set1_epi32(8));
    const __m512i min_idx = _mm512_set_epi32(15, 15, 13, 13, 11, 11, 9, 9, 7, 7, 5, 5, 3, 3, 1, 1);
    __m512i hmask[4];   /* chunk c: 5th bits are bit 2c (first 32 weights) and 2c+1 (next 32) of qh */
    #pragma GCC unroll 8
    for (int c = 0; c < 4; c++)
        hmask[c] = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (2 * c))), _mm256_set1_epi8((char)(1 << (2 * c + 1))), 1);
    __m512 acc[NTMAX][2], acc_min[NTMAX];
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t][0] = acc[t][1] = acc_min[t] = _mm512_setzero_ps();
    const unsigned char *blk = w;
    for (int64_t i = 0; i < n / 256; i++, blk += block_bytes) {
        /* Q4_K: d, dmin, scales[12], qs[128]; Q5_K: the same with qh[32] before qs */
        const quant_q4_K *b4 = (const quant_q4_K *)blk;
        const uint8_t *qs = q5 ? ((const quant_q5_K *)blk)->qs : b4->qs;
        prefetch_ahead(blk, ahead, (int)block_bytes);
        uint64_t sc, m;
        scales_k4(b4->scales, &sc, &m);
        uint32_t dd;   /* d and dmin */
        __builtin_memcpy(&dd, blk, 4);
        __m512 scm = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(_mm_cvtsi64_si128((long long)sc),
                                                                             _mm_cvtsi64_si128((long long)m))));
        scm = _mm512_mul_ps(_mm512_mul_ps(scm, _mm512_cvtph_ps(_mm256_set1_epi32((int)dd))), lo16);
        __m512 e0 = _mm512_permutexvar_ps(e0_idx, scm), e1 = _mm512_permutexvar_ps(e1_idx, scm);
        __m512 mins = _mm512_permutexvar_ps(min_idx, scm);
        __m512 fac[NTMAX][2];
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const quant_q8_act *g = a + t * a_stride + i;
            fac[t][0] = _mm512_mul_ps(_mm512_loadu_ps(g->d), e0);
            fac[t][1] = _mm512_mul_ps(_mm512_loadu_ps(g->d + 16), e1);
            acc_min[t] = _mm512_fmadd_ps(mins, _mm512_loadu_ps(g->s), acc_min[t]);
        }
        __m512i qh = q5 ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)((const quant_q5_K *)blk)->qh))
                        : _mm512_setzero_si512();
        #pragma GCC unroll 8
        for (int c = 0; c < 4; c++) {
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * c)));
            if (q5) {
                q = _mm512_and_si512(_mm512_srlv_epi64(q, shift), m4);
                q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(qh, hmask[c]), q, sixteen);
            } else {
                q = _mm512_and_si512(q, nib);
            }
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                const quant_q8_act *g = a + t * a_stride + i;
                __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, _mm512_loadu_si512(g->qs + 64 * c));
                int k = c & 1;   /* see CHAINS */
                acc[t][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), chunk_factor(fac[t], c), acc[t][k]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) {
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
        out[t] = (q5 ? sum : sum * (1.f / 16)) - _mm512_reduce_add_ps(acc_min[t]);
    }
}

CORE void q6_K_core(const void *w, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, float *out) {
    const int ahead = kern_prefetch_bytes;
    const quant_q6_K *b = w;
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    /* per 256-bit half of a vector, quarter k's two bits of qh (bits 2k, 2k + 1) moved to
     * bits 4, 5 of their byte: left by 4 - 2k for k = 0, 1, right by 2k - 4 for k = 2, 3
     * (epi16 lanes: what crosses into the neighbouring byte is masked off) */
    const __m512i shl01 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr23 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    __m512 acc[NTMAX][2], acc_off[NTMAX];
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++) acc[t][0] = acc[t][1] = acc_off[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / 256; i++) {
        prefetch_ahead(b + i, ahead, sizeof *b);
        /* d * scale_k per 16-block k; an 8-block's factor is that times its dx */
        __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].scales))),
                                  _mm512_set1_ps(unpack_f16(&b[i].d)));
        __m512 e0 = _mm512_permutexvar_ps(dup2_index(0), sc), e1 = _mm512_permutexvar_ps(dup2_index(8), sc);
        __m512 fac[NTMAX][2];
        #pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const quant_q8_act *g = a + t * a_stride + i;
            fac[t][0] = _mm512_mul_ps(_mm512_loadu_ps(g->d), e0);
            fac[t][1] = _mm512_mul_ps(_mm512_loadu_ps(g->d + 16), e1);
            acc_off[t] = _mm512_fmadd_ps(sc, _mm512_loadu_ps(g->s), acc_off[t]);
        }
        #pragma GCC unroll 8
        for (int h = 0; h < 2; h++) {
            __m512i ql = _mm512_loadu_si512(b[i].ql + 64 * h);
            __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h)));
            __m512i h01 = _mm512_and_si512(_mm512_sllv_epi16(qh, shl01), m30);
            __m512i h23 = _mm512_and_si512(_mm512_srlv_epi16(qh, shr23), m30);
            __m512i q0 = _mm512_or_si512(_mm512_and_si512(ql, m4), h01);                        /* weights 0..63 */
            __m512i q1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4), h23);  /* 64..127 */
            #pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                const quant_q8_act *g = a + t * a_stride + i;
                __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q0, _mm512_loadu_si512(g->qs + 128 * h));
                __m512i d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q1, _mm512_loadu_si512(g->qs + 128 * h + 64));
                acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), chunk_factor(fac[t], 2 * h), acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), chunk_factor(fac[t], 2 * h + 1), acc[t][1]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < nt; t++)
        out[t] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1])) - 32 * _mm512_reduce_add_ps(acc_off[t]);
}

/* quant_act_quantize, bit for bit, sixteen values (two 8-blocks) per vector: the same
 * divisions (d = amax / 127, 1 / d), products and round-to-nearest-even conversion, and
 * s as the scalar sums it, d_2j * sum_2j + d_2j+1 * sum_2j+1 without fusing. Decode
 * quantizes every matmul's input; the scalar loop cost a few percent of a token. */
SIMD static void act_quantize(const float *x, quant_q8_act *dst, int64_t n) {
    const __m512 r127 = _mm512_set1_ps(127), one = _mm512_set1_ps(1);
    const __m512i lim = _mm512_set1_epi32(127);
    for (int64_t i = 0; i < n; i += 16) {
        quant_q8_act *g = &dst[i / 256];
        int k = (int)(i % 256) / 8;   /* first of the two 8-blocks, even */
        __m512 v = _mm512_loadu_ps(x + i);
        /* each lane ends up with the max |x| of its 8-block (its 256-bit half) */
        __m512 m = _mm512_abs_ps(v);
        m = _mm512_max_ps(m, _mm512_permute_ps(m, _MM_SHUFFLE(2, 3, 0, 1)));
        m = _mm512_max_ps(m, _mm512_permute_ps(m, _MM_SHUFFLE(1, 0, 3, 2)));
        m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
        __m512 d = _mm512_div_ps(m, r127);
        __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ), one, d);
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, id));
        q = _mm512_max_epi32(_mm512_min_epi32(q, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
        _mm_storeu_si128((__m128i *)(g->qs + 8 * k), _mm512_cvtepi32_epi8(q));
        __m512i sum = _mm512_add_epi32(q, _mm512_shuffle_epi32(q, _MM_PERM_CDAB));
        sum = _mm512_add_epi32(sum, _mm512_shuffle_epi32(sum, _MM_PERM_BADC));
        sum = _mm512_add_epi32(sum, _mm512_shuffle_i32x4(sum, sum, _MM_SHUFFLE(2, 3, 0, 1)));
        __m512 ds = _mm512_mul_ps(d, _mm512_cvtepi32_ps(sum));
        float d0 = _mm512_cvtss_f32(d), d1 = _mm_cvtss_f32(_mm512_extractf32x4_ps(d, 2));
        float s0 = _mm512_cvtss_f32(ds), s1 = _mm_cvtss_f32(_mm512_extractf32x4_ps(ds, 2));
        g->d[k] = d0;
        g->d[k + 1] = d1;
        g->s[k / 2] = s0 + s1;
    }
}

/* The table's entry points: one activation row (decode) and 2 to KERN_QDOT_TOKENS rows,
 * each count its own copy of the core (nt a constant: its loops unrolled, its
 * accumulators in registers). */
#define QDOT_ENTRIES(name, core_call)                                                                    \
    SIMD_VNNI static float qdot_##name(const void *w, const quant_q8_act *a, int64_t n) {                \
        float out;                                                                                       \
        core_call(w, a, 0, n, 1, &out);                                                                  \
        return out;                                                                                      \
    }                                                                                                    \
    SIMD_VNNI static void qdotn_##name(const void *w, const quant_q8_act *a, int64_t a_stride, int64_t n, \
                                       int nt, float *out) {                                             \
        _Static_assert(KERN_QDOT_TOKENS == 4, "the cases below");                                        \
        if (nt == 2) core_call(w, a, a_stride, n, 2, out);                                               \
        else if (nt == 3) core_call(w, a, a_stride, n, 3, out);                                          \
        else core_call(w, a, a_stride, n, 4, out);                                                       \
    }

#define Q4_K_CALL(w, a, s, n, nt, out) k4_core(w, sizeof(quant_q4_K), false, a, s, n, nt, out)
#define Q5_K_CALL(w, a, s, n, nt, out) k4_core(w, sizeof(quant_q5_K), true, a, s, n, nt, out)
QDOT_ENTRIES(q4_0, q4_0_core)
QDOT_ENTRIES(q8_0, q8_0_core)
QDOT_ENTRIES(q4_K, Q4_K_CALL)
QDOT_ENTRIES(q5_K, Q5_K_CALL)
QDOT_ENTRIES(q6_K, q6_K_core)

/* the float dots, attention and SwiGLU, from the width-generic layer */
#define SIMD_WIDTH 512
#define SIMD_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#include "engine/simd.h"
#include "engine/simd_ops.h"

const kern_table kern_avx512 = {
    .name = "avx512",
    .dot = {[SG_F32] = simd_dot_f32_avx512, [SG_F16] = simd_dot_f16_avx512, [SG_BF16] = simd_dot_bf16_avx512,
            [SG_Q8_0] = simd_dot_q8_0_avx512, [SG_Q4_0] = simd_dot_q4_0_avx512, [SG_Q4_K] = simd_dot_q4_K_avx512,
            [SG_Q5_K] = simd_dot_q5_K_avx512, [SG_Q6_K] = simd_dot_q6_K_avx512, [SG_Q4_1] = simd_dot_q4_1_avx512,
            [SG_Q5_0] = simd_dot_q5_0_avx512, [SG_Q5_1] = simd_dot_q5_1_avx512},
    /* the integer dots need AVX512-VNNI; kern_select substitutes AVX2's without it */
    .qdot = {[SG_Q4_0] = qdot_q4_0, [SG_Q8_0] = qdot_q8_0, [SG_Q4_K] = qdot_q4_K,
             [SG_Q5_K] = qdot_q5_K, [SG_Q6_K] = qdot_q6_K},
    .qdotn = {[SG_Q4_0] = qdotn_q4_0, [SG_Q8_0] = qdotn_q8_0, [SG_Q4_K] = qdotn_q4_K,
              [SG_Q5_K] = qdotn_q5_K, [SG_Q6_K] = qdotn_q6_K},
    .act_quantize = act_quantize,
    .attend = simd_attend_avx512,
    .swiglu = simd_swiglu_avx512,
};
#else
const kern_table kern_avx512 = {0};
#endif
