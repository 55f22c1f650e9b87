/* gemm_vnni.c: the prompt-processing matrix-matrix kernel for CPUs with AVX-512 VNNI but
 * no AMX (AMD Zen 4, Intel Ice Lake), kernels.h's kern_gemm_fn.
 *
 * Why hand-written: prefill on the row-by-row path (kernels_avx512.c's qdotn) is bound
 * by unpacking each weight row again for every 4 tokens and by horizontal reductions.
 * Here a tile of 16 weight rows is unpacked once per call into a panel laid out for
 * vpdpbusd (one zmm = 16 rows x 4 consecutive weights), and every token of the call
 * streams through it with no reduction: 16 rows x 1 token per instruction, into int32
 * lanes that are already the rows of y.
 *
 * Every block type is unpacked to the same form: per row and 32 weights, signed bytes q
 * with w = s * q + m (s per 16 weights, m per 32): Q4_0 q - 8; Q8_0 q; Q4_1 / Q5_1 with
 * their m; Q5_0 q - 16; Q4_K / Q5_K s = d * sc, m = -dmin * min; Q6_K q - 32, s = d * sc.
 * Activations are quantized once per call to int8 with a float scale per 16 values
 * (llama.cpp uses 32, and 256 for the k-quants: ours is closer to exact) and stored as
 * q + 128, the unsigned operand of vpdpbusd; the +128 is cancelled by starting each
 * block's int32 sum at -128 * sum(q) of the weights, a per-row constant of the panel.
 * The offsets m fold in through the sum of each 32 activations as quantized, so that
 * every weight meets the same rounded x: with the exact float sum, the k-quants' s * q
 * (all of one sign, about twice |w|) carried the rounding alone, and the deviation of
 * Q4_K_M's logits went from 0.034 to 0.098.
 *
 * F32 / F16 / BF16 weights take a float path with the same shape: a tile of 32 rows x 256
 * weights converted to f32 once (rows in the lanes), and per weight column two FMAs per
 * token against the broadcast activation, exact as the float dot is (the tests hold it to
 * the scalar one). Other types and shapes are declined (the row path runs), as is every
 * call on a CPU without AVX-512 VNNI. */
#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

#define TILE_ROWS 16   /* rows per panel: the lanes of a zmm */
#define TILE_TOK 8     /* tokens per micro-kernel call: its float accumulators */
#define CHUNK_BLKS 32  /* 32-blocks of the panel walked per pass over the tokens: 26 KiB, L1 */

/* 32 weights of 16 rows. */
typedef struct {
    __m512i w[8];   /* lane r of w[j]: weights 4j .. 4j + 3 of row r, signed bytes */
    __m512 s[2];    /* lane r: scale of weights 0..15 and 16..31 of row r */
    __m512i c[2];   /* lane r: -128 * sum of row r's q over each half (cancels the +128) */
    __m512 m;       /* lane r: offset of row r's 32 weights */
} panel_blk;

/* 32 activations of one token. */
typedef struct {
    uint8_t u[32];  /* q + 128, q = round(x / d) */
    float d[2];     /* scales of values 0..15 and 16..31 */
    float sum;      /* sum of the 32 values as quantized (d * q) */
    float pad;
} act_blk;

/* Packing reads each weight once, straight from memory (the file's pages): left to the
 * hardware those reads stall the packing. Each micro-kernel call prefetches a share
 * (part i of parts) of the next tile's weights, rows [r, r + n) bytes [b0, b1), into L2,
 * so they arrive while the current tile computes. */
static inline void prefetch_share(const uint8_t *w, uint64_t w_row_bytes, int64_t r, int n, uint64_t b0, uint64_t b1,
                                  int i, int parts) {
    uint64_t per_row = (b1 - b0 + 63) / 64, lines = per_row * (uint64_t)n;
    uint64_t lo = lines * (uint64_t)i / (uint64_t)parts, hi = lines * (uint64_t)(i + 1) / (uint64_t)parts;
    for (uint64_t l = lo; l < hi; l++)
        __builtin_prefetch(w + (uint64_t)(r + (int64_t)(l / per_row)) * w_row_bytes + b0 + 64 * (l % per_row), 0, 2);
}

/* ---- activations ---- */

/* Per 32 activations: both halves' max |x| and sum of q reduced side by side, one
 * shuffle tree for two (each thread quantizes every token, and for the 512-row k / v
 * matmuls that is a seventh of the kernel's time). */
VNNI static void quantize_acts(const float *x, int64_t nb, act_blk *a) {
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m128 c127 = _mm_set1_ps(127);
    for (int64_t b = 0; b < nb; b++, x += 32) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        __m512 a0 = _mm512_and_ps(v0, absmask), a1 = _mm512_and_ps(v1, absmask);
        /* 128-bit lanes 0, 1 reduce v0, lanes 2, 3 v1 */
        __m512 m = _mm512_max_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
        m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, 0xB1));
        m = _mm512_max_ps(m, _mm512_permute_ps(m, 0x4E));
        m = _mm512_max_ps(m, _mm512_permute_ps(m, 0xB1));
        /* [max0, max1, max0, max1]: d = max / 127, id = 127 / max (0 for an all-zero half) */
        __m128 mx = _mm_blend_ps(_mm512_castps512_ps128(m), _mm512_extractf32x4_ps(m, 2), 0xA);
        __m128 d = _mm_div_ps(mx, c127), id = _mm_maskz_div_ps(_mm_cmp_ps_mask(mx, _mm_setzero_ps(), _CMP_NEQ_OQ), c127, mx);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_broadcastss_ps(id)));   /* nearest even */
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_broadcastss_ps(_mm_movehdup_ps(id))));
        const __m512i off = _mm512_set1_epi32(128);
        _mm_storeu_si128((__m128i *)a[b].u, _mm512_cvtepi32_epi8(_mm512_add_epi32(q0, off)));
        _mm_storeu_si128((__m128i *)(a[b].u + 16), _mm512_cvtepi32_epi8(_mm512_add_epi32(q1, off)));
        __m512i s = _mm512_add_epi32(_mm512_shuffle_i32x4(q0, q1, 0x44), _mm512_shuffle_i32x4(q0, q1, 0xEE));
        s = _mm512_add_epi32(s, _mm512_shuffle_i32x4(s, s, 0xB1));
        s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, (_MM_PERM_ENUM)0x4E));
        s = _mm512_add_epi32(s, _mm512_shuffle_epi32(s, (_MM_PERM_ENUM)0xB1));
        float d0 = _mm_cvtss_f32(d), d1 = _mm_cvtss_f32(_mm_movehdup_ps(d));
        int s0 = _mm_cvtsi128_si32(_mm512_castsi512_si128(s)), s1 = _mm_cvtsi128_si32(_mm512_extracti32x4_epi32(s, 2));
        a[b].d[0] = d0;
        a[b].d[1] = d1;
        a[b].sum = d0 * (float)s0 + d1 * (float)s1;
        a[b].pad = 0;
    }
}

/* ---- unpacking a weight row ---- */

VNNI static inline float f16(const void *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 16 packed nibbles to 32 bytes: low nibbles first (weights 0..15), then high. */
VNNI static inline __m256i nibbles32(const uint8_t *qs) {
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    __m128i m4 = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

/* The 5th bits of Q5_0 / Q5_1 (bit j of qh for weight j) as 16 or 0 per byte. */
VNNI static inline __m256i fifth_bits(const uint8_t *qh4) {
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    return _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(16));
}

/* Unpacks row weights [256 c, 256 c + 32 nb) (nb 32-blocks, nb <= 8) to q (32 nb bytes),
 * s (2 nb scales, one per 16) and m (nb offsets). */
VNNI static void unpack_chunk(sg_dtype t, const uint8_t *row, int64_t c, int nb, int8_t *q, float *s, float *m) {
    switch (t) {
    case SG_Q4_0: {
        const quant_q4_0 *b = (const quant_q4_0 *)row + 8 * c;
        for (int i = 0; i < nb; i++) {
            _mm256_storeu_si256((__m256i *)(q + 32 * i), _mm256_sub_epi8(nibbles32(b[i].qs), _mm256_set1_epi8(8)));
            s[2 * i] = s[2 * i + 1] = f16(&b[i].d);
            m[i] = 0;
        }
        break;
    }
    case SG_Q4_1: {
        const quant_q4_1 *b = (const quant_q4_1 *)row + 8 * c;
        for (int i = 0; i < nb; i++) {
            _mm256_storeu_si256((__m256i *)(q + 32 * i), nibbles32(b[i].qs));
            s[2 * i] = s[2 * i + 1] = f16(&b[i].d);
            m[i] = f16(&b[i].m);
        }
        break;
    }
    case SG_Q5_0: {
        const quant_q5_0 *b = (const quant_q5_0 *)row + 8 * c;
        for (int i = 0; i < nb; i++) {
            __m256i v = _mm256_or_si256(nibbles32(b[i].qs), fifth_bits(b[i].qh));
            _mm256_storeu_si256((__m256i *)(q + 32 * i), _mm256_sub_epi8(v, _mm256_set1_epi8(16)));
            s[2 * i] = s[2 * i + 1] = f16(&b[i].d);
            m[i] = 0;
        }
        break;
    }
    case SG_Q5_1: {
        const quant_q5_1 *b = (const quant_q5_1 *)row + 8 * c;
        for (int i = 0; i < nb; i++) {
            _mm256_storeu_si256((__m256i *)(q + 32 * i), _mm256_or_si256(nibbles32(b[i].qs), fifth_bits(b[i].qh)));
            s[2 * i] = s[2 * i + 1] = f16(&b[i].d);
            m[i] = f16(&b[i].m);
        }
        break;
    }
    case SG_Q8_0: {
        const quant_q8_0 *b = (const quant_q8_0 *)row + 8 * c;
        for (int i = 0; i < nb; i++) {
            memcpy(q + 32 * i, b[i].qs, 32);
            s[2 * i] = s[2 * i + 1] = f16(&b[i].d);
            m[i] = 0;
        }
        break;
    }
    case SG_Q4_K:
    case SG_Q5_K: {
        /* Q5_K is Q4_K's layout with qh[32] before qs: bits 2i / 2i + 1 of qh[l] are the
         * 5th bits of weight l of sub-blocks 2i / 2i + 1 */
        bool five = t == SG_Q5_K;
        const uint8_t *blk = row + (uint64_t)c * (five ? sizeof(quant_q5_K) : sizeof(quant_q4_K));
        const quant_q4_K *b4 = (const quant_q4_K *)blk;
        const uint8_t *qs = five ? ((const quant_q5_K *)blk)->qs : b4->qs;
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)((const quant_q5_K *)blk)->qh) : _mm256_setzero_si256();
        const __m256i m4 = _mm256_set1_epi8(15), sixteen = _mm256_set1_epi8(16);
        float d = f16(&b4->d), dmin = f16(&b4->dmin);
        for (int i = 0; i < 4; i++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_maskz_mov_epi8(_mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * i)))), sixteen));
                hi = _mm256_or_si256(hi, _mm256_maskz_mov_epi8(_mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(2 << (2 * i)))), sixteen));
            }
            _mm256_storeu_si256((__m256i *)(q + 64 * i), lo);
            _mm256_storeu_si256((__m256i *)(q + 64 * i + 32), hi);
        }
        for (int j = 0; j < 8; j++) {
            uint8_t sc, mn;
            quant_scale_min_k4(j, b4->scales, &sc, &mn);
            s[2 * j] = s[2 * j + 1] = d * sc;
            m[j] = -dmin * mn;
        }
        break;
    }
    case SG_Q6_K: {
        const quant_q6_K *b = (const quant_q6_K *)row + c;
        const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
        for (int h = 0; h < 2; h++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            __m256i lo4[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                              _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
            for (int k = 0; k < 4; k++) {   /* quarter k: weights 32k .. 32k + 31 of this half */
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2);
                __m256i v = _mm256_or_si256(lo4[k], _mm256_slli_epi16(hb, 4));
                _mm256_storeu_si256((__m256i *)(q + 128 * h + 32 * k), _mm256_sub_epi8(v, off));
            }
        }
        float d = f16(&b->d);
        for (int j = 0; j < 16; j++) s[j] = d * b->scales[j];
        for (int j = 0; j < 8; j++) m[j] = 0;
        break;
    }
    default:
        break;
    }
}

/* Packs rows [r, r + n) (n <= 16; missing rows are zeros) of nb 32-blocks into p. */
VNNI static void pack_tile(sg_dtype t, const uint8_t *w, uint64_t w_row_bytes, int64_t r, int n, int64_t nb,
                           panel_blk *p) {
    /* staged per 256 weights, row-major, then transposed by gathers */
    int8_t q[TILE_ROWS][256] __attribute__((aligned(64)));
    float s[TILE_ROWS][16] __attribute__((aligned(64))), m[TILE_ROWS][8] __attribute__((aligned(64)));
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i qidx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(256));
    const __m512i sidx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(16));
    const __m512i midx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(8));
    const __m512i ones = _mm512_set1_epi8(1);
    if (n < TILE_ROWS) {
        memset(q, 0, sizeof q);
        memset(s, 0, sizeof s);
        memset(m, 0, sizeof m);
    }
    for (int64_t c = 0; c * 8 < nb; c++) {
        int cb = nb - 8 * c < 8 ? (int)(nb - 8 * c) : 8;
        for (int i = 0; i < n; i++)
            unpack_chunk(t, w + (uint64_t)(r + i) * w_row_bytes, c, cb, q[i], s[i], m[i]);
        for (int b = 0; b < cb; b++) {
            panel_blk *pb = p + 8 * c + b;
            __m512i sum[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
            for (int j = 0; j < 8; j++) {
                pb->w[j] = _mm512_i32gather_epi32(qidx, &q[0][32 * b + 4 * j], 1);
                sum[j / 4] = _mm512_dpbusd_epi32(sum[j / 4], ones, pb->w[j]);
            }
            for (int h = 0; h < 2; h++) {
                pb->s[h] = _mm512_i32gather_ps(sidx, &s[0][2 * b + h], 4);
                pb->c[h] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum[h], 7));
            }
            pb->m = _mm512_i32gather_ps(midx, &m[0][b], 4);
        }
    }
}

/* ---- the micro-kernel: 16 rows x nt tokens over nb 32-blocks ---- */

VNNI INLINE __m512i bcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

VNNI INLINE void micro(const panel_blk *p, int64_t nb, const act_blk *a, int64_t a_stride, int nt, bool offs,
                       bool two_scales, __m512 *acc) {
    for (int64_t b = 0; b < nb; b++, p++, a++) {
        __m512i w0 = p->w[0], w1 = p->w[1], w2 = p->w[2], w3 = p->w[3];
        __m512i w4 = p->w[4], w5 = p->w[5], w6 = p->w[6], w7 = p->w[7];
        #pragma GCC unroll 16
        for (int t = 0; t < nt; t++) {
            const act_blk *x = a + t * a_stride;
            __m512i i0 = p->c[0], i1 = p->c[1];
            i0 = _mm512_dpbusd_epi32(i0, bcast4(x->u + 0), w0);
            i0 = _mm512_dpbusd_epi32(i0, bcast4(x->u + 4), w1);
            i0 = _mm512_dpbusd_epi32(i0, bcast4(x->u + 8), w2);
            i0 = _mm512_dpbusd_epi32(i0, bcast4(x->u + 12), w3);
            i1 = _mm512_dpbusd_epi32(i1, bcast4(x->u + 16), w4);
            i1 = _mm512_dpbusd_epi32(i1, bcast4(x->u + 20), w5);
            i1 = _mm512_dpbusd_epi32(i1, bcast4(x->u + 24), w6);
            i1 = _mm512_dpbusd_epi32(i1, bcast4(x->u + 28), w7);
            if (two_scales) {
                __m512 f0 = _mm512_mul_ps(_mm512_cvtepi32_ps(i0), p->s[0]);
                __m512 f1 = _mm512_mul_ps(_mm512_cvtepi32_ps(i1), p->s[1]);
                acc[t] = _mm512_fmadd_ps(f0, _mm512_set1_ps(x->d[0]), acc[t]);
                acc[t] = _mm512_fmadd_ps(f1, _mm512_set1_ps(x->d[1]), acc[t]);
            } else {   /* one weight scale for the 32: an instruction less per token */
                __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(i0), _mm512_set1_ps(x->d[0]));
                f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_set1_ps(x->d[1]), f);
                acc[t] = _mm512_fmadd_ps(f, p->s[0], acc[t]);
            }
            if (offs) acc[t] = _mm512_fmadd_ps(p->m, _mm512_set1_ps(x->sum), acc[t]);
        }
    }
}

/* Runs the micro-kernel for tokens [t0, t0 + nt) and adds (first: stores) the result
 * to y's rows [r, r + rows). */
VNNI INLINE void tile_tokens(const panel_blk *p, int64_t nb, const act_blk *a, int64_t a_stride, int nt, bool offs,
                             bool two_scales, bool first, float *y, int64_t y_stride, __mmask16 rows) {
    __m512 acc[TILE_TOK];
    #pragma GCC unroll 16
    for (int t = 0; t < nt; t++) acc[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows, y + t * y_stride);
    micro(p, nb, a, a_stride, nt, offs, two_scales, acc);
    #pragma GCC unroll 16
    for (int t = 0; t < nt; t++) _mm512_mask_storeu_ps(y + t * y_stride, rows, acc[t]);
}

/* The weights' form: offsets m (Q4_1, Q5_1, Q4_K, Q5_K) and scales per 16 (Q6_K). */
typedef enum { FORM_PLAIN, FORM_OFFS, FORM_HALVES } weight_form;

VNNI static void tile_any(const panel_blk *p, int64_t nb, const act_blk *a, int64_t a_stride, int nt, weight_form form,
                          bool first, float *y, int64_t y_stride, __mmask16 rows) {
    /* constant token counts and forms, so that the accumulators live in registers */
#define CASE(k) case k:                                                                                  \
        if (form == FORM_OFFS) tile_tokens(p, nb, a, a_stride, k, true, false, first, y, y_stride, rows);     \
        else if (form == FORM_HALVES) tile_tokens(p, nb, a, a_stride, k, false, true, first, y, y_stride, rows); \
        else tile_tokens(p, nb, a, a_stride, k, false, false, first, y, y_stride, rows);                      \
        break;
    switch (nt) {
    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
    default: break;
    }
#undef CASE
}

/* ---- F32 / F16 / BF16 weights ---- */

#define FTILE_ROWS 32   /* two zmm of rows */
#define FTILE_TOK 12    /* 24 accumulators */
#define FCHUNK 256      /* weights per row converted at a time: a 32 KiB panel, L1 */

/* Transposes 16 x 16 floats in place: r[i] lane j becomes r[j] lane i. */
VNNI INLINE void transpose16(__m512 *r) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        #define PD(v) _mm512_castps_pd(v)
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(PD(t[i]), PD(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(PD(t[i]), PD(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(PD(t[i + 1]), PD(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(PD(t[i + 1]), PD(t[i + 3])));
        #undef PD
    }
    /* now r[4a + b] holds, in each 128-bit lane q, column b of rows 4q' .. for block a */
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xdd);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
    }
}

/* Converts rows [r, r + n) (n <= 32; missing rows zero), weights [k0, k0 + nk), to
 * p[k][32]: f32, row i in lane i. */
VNNI static void pack_float(sg_dtype t, const uint8_t *w, uint64_t w_row_bytes, int64_t r, int n, int64_t k0, int nk,
                            float *p) {
    for (int k = 0; k < nk; k += 16) {
        __mmask16 mk = nk - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nk - k)) - 1);
        for (int h = 0; h < 2; h++) {
            __m512 v[16];
            for (int i = 0; i < 16; i++) {
                const uint8_t *row = 16 * h + i < n ? w + (uint64_t)(r + 16 * h + i) * w_row_bytes : NULL;
                if (!row) v[i] = _mm512_setzero_ps();
                else if (t == SG_F32) v[i] = _mm512_maskz_loadu_ps(mk, (const float *)row + k0 + k);
                else if (t == SG_F16) v[i] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)row + k0 + k));
                else v[i] = _mm512_castsi512_ps(_mm512_slli_epi32(
                         _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)row + k0 + k)), 16));
            }
            transpose16(v);
            for (int j = 0; j < 16 && k + j < nk; j++) _mm512_store_ps(p + 32 * (k + j) + 16 * h, v[j]);
        }
    }
}

/* y rows [r, r + 32) (masks m0, m1) for nt tokens: += (first: =) panel . x over nk weights. */
VNNI INLINE void ftile(const float *p, int nk, const float *x, int64_t x_stride, int nt, bool first, float *y,
                       int64_t y_stride, __mmask16 m0, __mmask16 m1) {
    __m512 a0[FTILE_TOK], a1[FTILE_TOK];
    #pragma GCC unroll 16
    for (int t = 0; t < nt; t++) {
        a0[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, y + t * y_stride);
        a1[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, y + t * y_stride + 16);
    }
    for (int k = 0; k < nk; k++, p += 32, x++) {
        __m512 w0 = _mm512_load_ps(p), w1 = _mm512_load_ps(p + 16);
        #pragma GCC unroll 16
        for (int t = 0; t < nt; t++) {
            __m512 xv = _mm512_set1_ps(x[t * x_stride]);
            a0[t] = _mm512_fmadd_ps(w0, xv, a0[t]);
            a1[t] = _mm512_fmadd_ps(w1, xv, a1[t]);
        }
    }
    #pragma GCC unroll 16
    for (int t = 0; t < nt; t++) {
        _mm512_mask_storeu_ps(y + t * y_stride, m0, a0[t]);
        _mm512_mask_storeu_ps(y + t * y_stride + 16, m1, a1[t]);
    }
}

VNNI static void ftile_any(const float *p, int nk, const float *x, int64_t x_stride, int nt, bool first, float *y,
                           int64_t y_stride, __mmask16 m0, __mmask16 m1) {
#define CASE(k) case k: ftile(p, nk, x, x_stride, k, first, y, y_stride, m0, m1); break;
    switch (nt) {
    CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
    default: break;
    }
#undef CASE
}

static bool gemm_float(sg_dtype t, const uint8_t *w, uint64_t w_row_bytes, int64_t cols, const float *x,
                       int64_t x_stride, int n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1) {
    /* the activations of a chunk are copied to a stride of FCHUNK + 16: at the model's
     * row lengths (multiples of 4 KiB) the tokens' rows would alias in L1 */
    size_t panel_floats = FCHUNK * FTILE_ROWS, xs = FCHUNK + 16;
    float *panel = kern_scratch(KERN_SCRATCH_VNNI, (panel_floats + xs * (size_t)n_tok) * sizeof(float));
    if (!panel) return false;
    float *xb = panel + panel_floats;
    for (int64_t k0 = 0; k0 < cols; k0 += FCHUNK) {
        int nk = cols - k0 < FCHUNK ? (int)(cols - k0) : FCHUNK;
        for (int t0 = 0; t0 < n_tok; t0++) memcpy(xb + t0 * xs, x + t0 * x_stride + k0, (size_t)nk * sizeof(float));
        for (int64_t r = r0; r < r1; r += FTILE_ROWS) {
            int n = r1 - r < FTILE_ROWS ? (int)(r1 - r) : FTILE_ROWS;
            uint32_t rows = n == 32 ? 0xFFFFFFFFu : (1u << n) - 1;
            pack_float(t, w, w_row_bytes, r, n, k0, nk, panel);
            /* the next tile: the next rows of this chunk, else the first of the next chunk */
            int64_t rn = r + FTILE_ROWS < r1 ? r + FTILE_ROWS : r0, kn = rn == r0 ? k0 + FCHUNK : k0;
            int nn = r1 - rn < FTILE_ROWS ? (int)(r1 - rn) : FTILE_ROWS, parts = (n_tok + FTILE_TOK - 1) / FTILE_TOK;
            uint64_t eb = t == SG_F32 ? 4 : 2, kend = kn + FCHUNK < cols ? kn + FCHUNK : cols;
            for (int t0 = 0; t0 < n_tok; t0 += FTILE_TOK) {
                int nt = n_tok - t0 < FTILE_TOK ? n_tok - t0 : FTILE_TOK;
                if (kn < cols) prefetch_share(w, w_row_bytes, rn, nn, kn * eb, kend * eb, t0 / FTILE_TOK, parts);
                ftile_any(panel, nk, xb + t0 * xs, (int64_t)xs, nt, k0 == 0, y + t0 * y_stride + r, y_stride,
                          (__mmask16)rows, (__mmask16)(rows >> 16));
            }
        }
    }
    return true;
}

static bool g_cpu_ok;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static void cpu_check(void) {
    __builtin_cpu_init();
    g_cpu_ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
}

bool kern_gemm_vnni(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                    const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                    int64_t r0, int64_t r1) {
    weight_form form = FORM_PLAIN;
    bool flt = false;
    switch (w_type) {
    case SG_F32: case SG_F16: case SG_BF16: flt = true; break;
    case SG_Q4_0: case SG_Q5_0: case SG_Q8_0: break;
    case SG_Q6_K: form = FORM_HALVES; if (cols % QUANT_QK_K) return false; break;
    case SG_Q4_1: case SG_Q5_1: form = FORM_OFFS; break;
    case SG_Q4_K: case SG_Q5_K: form = FORM_OFFS; if (cols % QUANT_QK_K) return false; break;
    default: return false;
    }
    if (cols <= 0 || (!flt && cols % QUANT_QK) || n_tok <= 0 || r1 <= r0) return false;
    pthread_once(&g_cpu_once, cpu_check);
    if (!g_cpu_ok) return false;
    if (flt) return gemm_float(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1);

    int64_t nb = cols / QUANT_QK;
    size_t act_bytes = (size_t)(nb * n_tok) * sizeof(act_blk);
    size_t panel_bytes = (size_t)nb * sizeof(panel_blk);
    unsigned char *buf = kern_scratch(KERN_SCRATCH_VNNI, act_bytes + panel_bytes);
    if (!buf) return false;
    panel_blk *panel = (panel_blk *)buf;
    act_blk *acts = (act_blk *)(buf + panel_bytes);
    for (int t = 0; t < n_tok; t++) quantize_acts(x + t * x_stride, nb, acts + t * nb);

    for (int64_t r = r0; r < r1; r += TILE_ROWS) {
        int n = r1 - r < TILE_ROWS ? (int)(r1 - r) : TILE_ROWS;
        __mmask16 rows = (__mmask16)((1u << n) - 1);
        pack_tile(w_type, w, w_row_bytes, r, n, nb, panel);
        int64_t rn = r + TILE_ROWS;
        int nn = r1 - rn < TILE_ROWS ? (int)(r1 - rn) : TILE_ROWS, tt = (n_tok + TILE_TOK - 1) / TILE_TOK;
        int parts = (int)((nb + CHUNK_BLKS - 1) / CHUNK_BLKS) * tt;
        for (int64_t b0 = 0; b0 < nb; b0 += CHUNK_BLKS) {
            int64_t cb = nb - b0 < CHUNK_BLKS ? nb - b0 : CHUNK_BLKS;
            for (int t0 = 0; t0 < n_tok; t0 += TILE_TOK) {
                int nt = n_tok - t0 < TILE_TOK ? n_tok - t0 : TILE_TOK;
                if (rn < r1) prefetch_share(w, w_row_bytes, rn, nn, 0, w_row_bytes, (int)(b0 / CHUNK_BLKS) * tt + t0 / TILE_TOK, parts);
                tile_any(panel + b0, cb, acts + t0 * nb + b0, nb, nt, form, b0 == 0, y + t0 * y_stride + r, y_stride, rows);
            }
        }
    }
    return true;
}

#else
bool kern_gemm_vnni(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                    const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                    int64_t r0, int64_t r1) {
    (void)w_type; (void)w; (void)w_row_bytes; (void)cols; (void)x; (void)x_stride;
    (void)n_tok; (void)y; (void)y_stride; (void)r0; (void)r1;
    return false;
}
#endif
