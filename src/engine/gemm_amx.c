/* gemm_amx.c: the prompt-processing matrix-matrix kernel on Intel AMX tiles (see
 * kernels.h for the contract: y[t * y_stride + r] = W row r . x row t).
 *
 * Why hand-written: prefill is bound by how fast weights are unpacked and multiplied by a
 * few hundred tokens at once, and AMX's TDPBF16PS does a 16x16x32 bf16 product per
 * instruction, far beyond what AVX-512 FMAs reach. No library we link has it.
 *
 * Numerics: the float reference multiplies exact dequantized weights by f32 activations,
 * and the default must stay within float rounding of it (test_infer holds F32 models to
 * transformers at ~3e-6, test_quant quantized logits below 1e-5 of exact). bf16 tiles
 * carry 8 significant bits, so each side is split into bf16 parts that sum to it: an f32
 * activation exactly into three (x = x0 + x1 + x2, each part the nearest bf16 to what the
 * previous left over), a weight into as many as its bits need (1 for BF16, 2 for F16,
 * Q4_0 and Q5_0, 3 for the others). The kernel sums the products xj * wi with i + j <= 2,
 * the terms down to ~2^-24 of each product, with fp32 accumulation over all of K: no
 * per-block rescaling, because the weights are dequantized to floats first. Measured:
 * logits as close to exact as the scalar path's. A hi/lo (two-part) split, with half
 * the tile products, was tried first: it left llama.cpp's reference files' logits ~3e-5
 * from exact (scalar: 4e-6) and F32 models 4e-5 from transformers; tests/test_gemm.c
 * fails it. That is the exact mode (kern_gemm_amx_exact), kept for the float reference.
 *
 * Fast mode (kern_gemm_amx_fast; kern_gemm_amx's default for block-quantized weights
 * whenever the integer dots are on, i.e. kern_active()->qdot[type] is set): weights and
 * activations each rounded to one bf16 part, one tile product per step instead of six
 * (bench_gemm: ~3.3x). The integer path it stands in for already rounds activations to
 * int8 (1/254 of an 8-value max); a bf16 rounding is at most 2^-8 of the value itself,
 * and the two roundings together stay below that. Measured on llama.cpp's reference
 * files (test_quant): logits 0.015-0.022 from exact, int8 row path 0.026-0.034,
 * llama.cpp 0.036-0.063. Weights in two bf16 parts (2^-17 from exact) with one-part
 * activations measured 0.011-0.014 at ~60% of the speed (two products per step).
 * Exact small-integer weights with per-block scales applied after each K=32 tile
 * product (one product, exact weights) was not built: its rescale (a tile store, 16
 * loads and FMAs per 16x16 block per step) is estimated to cost about what a second
 * tile product does. F32 / F16 / BF16 weights have no integer path and always run exact.
 *
 * Layout (per call, per calling thread, in its kern_scratch buffer):
 *   A  the weights: a panel of 32 rows x kb columns (KB exact, KB_FAST fast) dequantized
 *      with AVX-512 and split, stored as tiles of 16 rows x 32 bf16 (1 KB, row-major):
 *      (part, 2, kb / 32, 16, 32); two panel buffers, the next one unpacked while the
 *      current one's tile products run
 *   B  the activations, converted once per call: per 16 tokens and 32 columns a tile in
 *      the VNNI pair layout TDPBF16PS wants, (16 column pairs, 16 tokens, 2), i.e. a
 *      16x16 transpose of 32-bit pairs: (3 parts, or 1 fast, n_tok / 16, cols / 32, 16, 16, 2)
 *   C  fp32 accumulators, 16 rows x 16 tokens per tile, for a band of up to ROW_BAND rows
 *      and all tokens; transposed into y once the band's K loop is done.
 * Loops: row band > K block (kb columns) > 32-row panel (dequantized once per call) >
 * pairs of 16-token tiles, with 2x2 C tiles in tile registers (tmm0..3) and A / B parts
 * streamed through tmm4..7 (B part outer: it comes from L2, the A panel from L1/L2).
 * Rows past r1 and tokens past n_tok are zero padding: computed, never stored.
 *
 * The tile permission is per process (kern_amx_available asks the kernel once); the tile
 * configuration is loaded at the start of each call and released at its end, so a thread
 * that never calls here carries no tile state and a context switch saves none. */
#include "engine/kernels.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && (__GNUC__ >= 11 || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/unpack_x86.h"

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Columns per K block: 512 measured ~15% faster than 256 and as fast as 1024 (fewer C
 * tile stores and reloads per op). A multiple of 256 (k-quant blocks). */
#define KB 512
/* The fast mode's K block: with one tile product per A / B tile pair the loop is bound by
 * tile loads, and at 256 columns the 32-row panel and a token-tile pair's activations
 * (16 KB each) both stay in L1. */
#ifndef KB_FAST
#define KB_FAST 256
#endif
/* Rows per band: the band's fp32 accumulators (ROW_BAND * n_tok * 4 bytes, 256 KB at 256
 * tokens) and the K block of activations share L2. */
#define ROW_BAND 256

#define SIMD __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,amx-tile,amx-bf16")))

static bool g_amx_ok;
static pthread_once_t g_amx_once = PTHREAD_ONCE_INIT;

static void amx_probe(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    bool tile = d & (1u << 24), bf16 = d & (1u << 22);
    bool avx512 = (b & (1u << 16)) && (b & (1u << 17)) && (b & (1u << 30)) && (b & (1u << 31));   /* F DQ BW VL */
    if (!tile || !bf16 || !avx512 || a < 1) return;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return;   /* AVX512_BF16 */
    /* Linux hands out the 8 KB tile state only on request (since 5.16). */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return;
    unsigned long perm = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &perm) != 0 || !(perm & (1ul << XFEATURE_XTILEDATA))) return;
    g_amx_ok = true;
}

bool kern_amx_available(void) {
    pthread_once(&g_amx_once, amx_probe);
    return g_amx_ok;
}

/* ---- dequantization: kn (a multiple of 32) weights of a row from column k0 (a multiple
 * of the block size) into floats, zeros past cols. Same values as quant.c's scalar
 * unpacking, to float rounding. ---- */


SIMD static inline __m512 u8_ps(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }

/* w = d * q + m over a 32-block's nibbles (plus 16 where qh's bit is set: Q5_0 / Q5_1). */
SIMD static inline void legacy32(const uint8_t *qs, uint32_t qh, float d, float m, float *out) {
    const __m128i m4 = _mm_set1_epi8(15);
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m512i lo = _mm512_cvtepu8_epi32(_mm_and_si128(q, m4));
    __m512i hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), m4));
    lo = _mm512_mask_add_epi32(lo, (__mmask16)(qh & 0xffff), lo, _mm512_set1_epi32(16));
    hi = _mm512_mask_add_epi32(hi, (__mmask16)(qh >> 16), hi, _mm512_set1_epi32(16));
    __m512 vd = _mm512_set1_ps(d), vm = _mm512_set1_ps(m);
    _mm512_storeu_ps(out, _mm512_fmadd_ps(vd, _mm512_cvtepi32_ps(lo), vm));
    _mm512_storeu_ps(out + 16, _mm512_fmadd_ps(vd, _mm512_cvtepi32_ps(hi), vm));
}

/* out[0..31] = dq * q - dm for 32 bytes q. */
SIMD static inline void sub32(__m256i q, float dq, float dm, float *out) {
    __m512 vd = _mm512_set1_ps(dq), vm = _mm512_set1_ps(dm);
    _mm512_storeu_ps(out, _mm512_fmsub_ps(vd, u8_ps(_mm256_castsi256_si128(q)), vm));
    _mm512_storeu_ps(out + 16, _mm512_fmsub_ps(vd, u8_ps(_mm256_extracti128_si256(q, 1)), vm));
}

SIMD static void dequant(sg_dtype t, const unsigned char *row, int64_t k0, int64_t kn, int64_t cols, float *out) {
    switch (t) {
    case SG_F32: case SG_F16: case SG_BF16: {
        for (int64_t i = 0; i < kn; i += 16) {
            int64_t left = cols - (k0 + i);
            __mmask16 m = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
            __m512 v;
            if (t == SG_F32) v = _mm512_maskz_loadu_ps(m, (const float *)row + k0 + i);
            else {
                __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k0 + i);
                v = t == SG_F16 ? _mm512_cvtph_ps(h) : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
            }
            _mm512_storeu_ps(out + i, v);
        }
        return;
    }
    case SG_Q8_0: {
        const quant_q8_0 *b = (const quant_q8_0 *)row + k0 / 32;
        for (int64_t i = 0; i < kn / 32; i++, out += 32) {
            __m512 d = _mm512_set1_ps(unpack_f16(&b[i].d));
            __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].qs)));
            __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b[i].qs + 16))));
            _mm512_storeu_ps(out, _mm512_mul_ps(d, q0));
            _mm512_storeu_ps(out + 16, _mm512_mul_ps(d, q1));
        }
        return;
    }
    case SG_Q4_0: {
        const quant_q4_0 *b = (const quant_q4_0 *)row + k0 / 32;
        for (int64_t i = 0; i < kn / 32; i++, out += 32) {
            float d = unpack_f16(&b[i].d);
            legacy32(b[i].qs, 0, d, -8 * d, out);
        }
        return;
    }
    case SG_Q4_1: {
        const quant_q4_1 *b = (const quant_q4_1 *)row + k0 / 32;
        for (int64_t i = 0; i < kn / 32; i++, out += 32) legacy32(b[i].qs, 0, unpack_f16(&b[i].d), unpack_f16(&b[i].m), out);
        return;
    }
    case SG_Q5_0: {
        const quant_q5_0 *b = (const quant_q5_0 *)row + k0 / 32;
        for (int64_t i = 0; i < kn / 32; i++, out += 32) {
            uint32_t qh;
            memcpy(&qh, b[i].qh, 4);
            float d = unpack_f16(&b[i].d);
            legacy32(b[i].qs, qh, d, -16 * d, out);
        }
        return;
    }
    case SG_Q5_1: {
        const quant_q5_1 *b = (const quant_q5_1 *)row + k0 / 32;
        for (int64_t i = 0; i < kn / 32; i++, out += 32) {
            uint32_t qh;
            memcpy(&qh, b[i].qh, 4);
            legacy32(b[i].qs, qh, unpack_f16(&b[i].d), unpack_f16(&b[i].m), out);
        }
        return;
    }
    case SG_Q4_K: case SG_Q5_K: {
        const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
        size_t bytes = t == SG_Q4_K ? sizeof(quant_q4_K) : sizeof(quant_q5_K);
        const unsigned char *blk = row + (size_t)(k0 / 256) * bytes;
        for (int64_t i = 0; i < kn / 256; i++, blk += bytes) {
            const quant_q4_K *b4 = (const quant_q4_K *)blk;   /* d, dmin, scales: same place in Q5_K */
            const uint8_t *qs = t == SG_Q4_K ? b4->qs : ((const quant_q5_K *)blk)->qs;
            __m256i qh = t == SG_Q5_K ? _mm256_loadu_si256((const __m256i *)((const quant_q5_K *)blk)->qh)
                                      : _mm256_setzero_si256();
            float d = unpack_f16(&b4->d), dmin = unpack_f16(&b4->dmin);
            /* the 8 six-bit scales and mins at once (quant_scale_min_k4's bit layout, four
             * bytes per word): sub-block scales d * sc, offsets dmin * m */
            uint32_t a[3];
            memcpy(a, b4->scales, 12);
            uint32_t sc_lo = a[0] & 0x3f3f3f3fu, m_lo = a[1] & 0x3f3f3f3fu;
            uint32_t sc_hi = (a[2] & 0x0f0f0f0fu) | ((a[0] >> 2) & 0x30303030u);
            uint32_t m_hi = ((a[2] >> 4) & 0x0f0f0f0fu) | ((a[1] >> 2) & 0x30303030u);
            __m128i scm = _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi);
            float dsc[16];   /* 0..7: d * sc[j], 8..15: dmin * m[j] */
            __m512 dd = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d), _mm512_set1_ps(dmin));
            _mm512_storeu_ps(dsc, _mm512_mul_ps(dd, u8_ps(scm)));
            for (int c = 0; c < 4; c++, out += 64) {
                float dsc0 = dsc[2 * c], dsc1 = dsc[2 * c + 1], dm0 = dsc[8 + 2 * c], dm1 = dsc[9 + 2 * c];
                __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(qh, one), 4);                       /* bit 2c */
                __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4);  /* bit 2c+1 */
                qh = _mm256_srli_epi16(qh, 2);
                sub32(_mm256_or_si256(_mm256_and_si256(q, m4), h0), dsc0, dm0, out);
                sub32(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1), dsc1, dm1, out + 32);
            }
        }
        return;
    }
    case SG_Q6_K: {
        const quant_q6_K *b = (const quant_q6_K *)row + k0 / 256;
        for (int64_t i = 0; i < kn / 256; i++) {
            /* the 16 sub-block scales d * sc at once */
            float ds[16];
            _mm512_storeu_ps(ds, _mm512_mul_ps(_mm512_set1_ps(unpack_f16(&b[i].d)),
                                               _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b[i].scales)))));
            for (int h = 0; h < 2; h++, out += 128) {
                __m256i q[4];
                unpack_q6_K_half(&b[i], h, q);
                for (int k = 0; k < 4; k++) {   /* quarter k: weights 32k .. 32k + 31 of this half */
                    float d0 = ds[8 * h + 2 * k], d1 = ds[8 * h + 2 * k + 1];
                    _mm512_storeu_ps(out + 32 * k, _mm512_fmsub_ps(_mm512_set1_ps(d0), u8_ps(_mm256_castsi256_si128(q[k])),
                                                                   _mm512_set1_ps(32 * d0)));
                    _mm512_storeu_ps(out + 32 * k + 16, _mm512_fmsub_ps(_mm512_set1_ps(d1), u8_ps(_mm256_extracti128_si256(q[k], 1)),
                                                                        _mm512_set1_ps(32 * d1)));
                }
            }
        }
        return;
    }
    default: return;
    }
}

/* ---- bf16 splitting ---- */

/* v rounded to the nearest bf16 (ties to even), as a float: finite inputs only. */
SIMD static inline __m512 bf16_round(__m512 v) {
    __m512i b = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    b = _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
    return _mm512_castsi512_ps(_mm512_and_si512(b, _mm512_set1_epi32((int)0xFFFF0000u)));
}

/* 32 floats to n bf16 parts (32 each, in order: one tile row) whose sum is the value:
 * part k is the nearest bf16 to what parts 0 .. k-1 left over. */
SIMD static inline void split32(__m512 a, __m512 b, int n, __m512i *part) {
    for (int k = 0; k < n - 1; k++) {
        __m512 ah = bf16_round(a), bh = bf16_round(b);
        part[k] = (__m512i)_mm512_cvtne2ps_pbh(bh, ah);   /* the second operand fills the low half */
        a = _mm512_sub_ps(a, ah);
        b = _mm512_sub_ps(b, bh);
    }
    part[n - 1] = (__m512i)_mm512_cvtne2ps_pbh(b, a);   /* the last part: rounded by the conversion */
}

/* In-place transpose of a 16x16 matrix of 32-bit elements (r[i] = row i). */
SIMD static inline __attribute__((always_inline)) void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {   /* u[4i + j], lane L: column 4L + j of rows 4i .. 4i + 3 */
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int j = 0; j < 4; j++) {   /* row 4L + j gathers lane L of u[j], u[4 + j], u[8 + j], u[12 + j] */
        __m512i v0 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xDD);
        __m512i w0 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x88), w1 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_i32x4(v0, w0, 0x88);
        r[8 + j] = _mm512_shuffle_i32x4(v0, w0, 0xDD);
        r[4 + j] = _mm512_shuffle_i32x4(v1, w1, 0x88);
        r[12 + j] = _mm512_shuffle_i32x4(v1, w1, 0xDD);
    }
}

#define X_PARTS 3   /* an f32 activation is exactly the sum of its three bf16 parts */
#define TILE 512    /* uint16 elements (1 KB) of an A or B tile; a C tile is 256 floats */

/* The activations of token tile jt (tokens 16 jt ..) and column step s (32 columns) as
 * xp B tiles (part k at b + k * part_stride; xp <= X_PARTS): row p holds, for each of
 * the 16 tokens, columns 2p and 2p + 1. */
SIMD static void pack_b(const float *x, int64_t x_stride, int n_tok, int64_t cols, int jt, int64_t s,
                        uint16_t *b, size_t part_stride, int xp) {
    __m512i p[X_PARTS][16];
    int64_t c0 = s * 32, left = cols - c0;
    __mmask16 m0 = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
    __mmask16 m1 = left >= 32 ? 0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
    for (int i = 0; i < 16; i++) {
        int t = jt * 16 + i;
        __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
        if (t < n_tok) {
            const float *xr = x + (int64_t)t * x_stride + c0;
            lo = _mm512_maskz_loadu_ps(m0, xr);
            hi = _mm512_maskz_loadu_ps(m1, xr + 16);
        }
        __m512i parts[X_PARTS];
        split32(lo, hi, xp, parts);
        for (int k = 0; k < xp; k++) p[k][i] = parts[k];
    }
    for (int k = 0; k < xp; k++) {
        transpose16(p[k]);
        for (int r = 0; r < 16; r++) _mm512_store_si512(b + k * part_stride + r * 32, p[k][r]);
    }
}

/* Significant bits a dequantized weight of type t can carry, in bf16 parts: 1 for BF16;
 * 2 for F16 (11 bits) and Q4_0 / Q5_0 (an f16 scale times a 4-5 bit integer); 3 (all of
 * an f32) for the rest, whose weights are products or sums of several floats. */
static int weight_parts(sg_dtype t) {
    switch (t) {
    case SG_BF16: return 1;
    case SG_F16: case SG_Q4_0: case SG_Q5_0: return 2;
    default: return 3;
    }
}

/* ---- the tile loop ---- */

typedef struct __attribute__((aligned(64))) tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* C (2 row tiles x nt token tiles, nt 1 or 2) += sum of A part i . B part j over
 * i < a_parts, j < xp, i + j < terms (exact mode: xp = terms = 3, the terms down to
 * ~2^-24 of the product), over `steps` column steps. a: the panel's part 0, row tile 0, first step; row tile 1 is a_steps
 * tiles further, part i is i * a_part tiles further. b: token tile 0, part 0, first step;
 * token tile 1 is b_steps tiles further, part j is j * b_part elements further. c: the C
 * tile of row tile r, token tile j at c + (r * c_tiles + j) * 256. */
SIMD static void tile_kernel(const uint16_t *a, int64_t a_steps, size_t a_part, int a_parts, const uint16_t *b,
                             int64_t b_steps, size_t b_part, int xp, int terms, int64_t steps, float *c,
                             int64_t c_tiles, int nt, bool load_c) {
    float *c00 = c, *c01 = c + 256, *c10 = c + c_tiles * 256, *c11 = c10 + 256;
    if (load_c) {
        _tile_loadd(0, c00, 64);
        _tile_loadd(2, c10, 64);
        if (nt == 2) { _tile_loadd(1, c01, 64); _tile_loadd(3, c11, 64); }
    } else {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    }
    size_t a1 = (size_t)a_steps * TILE, b1 = (size_t)b_steps * TILE;
    for (int64_t s = 0; s < steps; s++) {
        const uint16_t *as = a + s * TILE, *bs = b + s * TILE;
        /* The next step's activation tiles into L1: at 11008 columns they come from L3
         * (~10% faster there, no change at 2048). */
        if (s + 1 < steps)
            for (int j = 0; j < xp; j++)
                for (int l = 0; l < 16; l++) {
                    _mm_prefetch((const char *)(bs + TILE + j * b_part) + 64 * l, _MM_HINT_T0);
                    if (nt == 2) _mm_prefetch((const char *)(bs + TILE + j * b_part + b1) + 64 * l, _MM_HINT_T0);
                }
        for (int j = 0; j < xp; j++) {
            _tile_loadd(6, bs + j * b_part, 64);
            if (nt == 2) _tile_loadd(7, bs + j * b_part + b1, 64);
            for (int i = 0; i < a_parts && i + j < terms; i++) {
                _tile_loadd(4, as + i * a_part, 64);
                _tile_loadd(5, as + i * a_part + a1, 64);
                _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(2, 5, 6);
                if (nt == 2) { _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(3, 5, 7); }
            }
        }
    }
    _tile_stored(0, c00, 64);
    _tile_stored(2, c10, 64);
    if (nt == 2) { _tile_stored(1, c01, 64); _tile_stored(3, c11, 64); }
}

/* Writes C tile (16 rows from r, 16 tokens from t) into y, transposed, skipping rows
 * >= r1 and tokens >= n_tok. */
SIMD static void store_c(const float *c, float *y, int64_t y_stride, int64_t r, int64_t r1, int t, int n_tok) {
    __m512i v[16];
    for (int i = 0; i < 16; i++) v[i] = _mm512_load_si512(c + 16 * i);
    transpose16(v);
    int64_t left = r1 - r;
    __mmask16 m = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
    /* Plain stores where the whole row is in range: y is rarely 64-byte aligned (malloc),
     * and a masked store across two cache lines costs far more than a plain one. */
    if (m == 0xFFFF)
        for (int i = 0; i < 16 && t + i < n_tok; i++) _mm512_storeu_ps(y + (int64_t)(t + i) * y_stride + r, _mm512_castsi512_ps(v[i]));
    else
        for (int i = 0; i < 16 && t + i < n_tok; i++)
            _mm512_mask_storeu_ps(y + (int64_t)(t + i) * y_stride + r, m, _mm512_castsi512_ps(v[i]));
}

/* A 32-row panel of the weights: rows rp .. rp + 31 of the band rb .. re (rows from re on
 * are zero padding), columns k0 .. k0 + kb (or to the padded end). */
typedef struct panel { int64_t rb, re, k0, rp, kb; } panel;

/* The panel after p in loop order (row band > K block > panel); false after the last. */
static bool next_panel(panel p, int64_t band, int64_t kp, int64_t r1, panel *n) {
    *n = p;
    if ((n->rp += 32) < p.re) return true;
    n->rp = p.rb;
    if ((n->k0 += p.kb) < kp) return true;
    if (p.re >= r1) return false;
    n->rb = n->rp = p.re;
    n->re = p.re + band < r1 ? p.re + band : r1;
    n->k0 = 0;
    return true;
}

/* Rows i0 .. i1 of panel p into L2: 32 short runs at a row stride the hardware
 * prefetchers do not follow (at 11008 columns each row is on a page of its own). */
SIMD static void prefetch_rows(const unsigned char *wb, uint64_t w_row_bytes, sg_dtype t, int64_t kp, int64_t r1,
                               panel p, int i0, int i1) {
    const sg_dtype_info *ti = dtype_info(t);
    int64_t kn = kp - p.k0 < p.kb ? kp - p.k0 : p.kb, bs = (int64_t)ti->block_size;
    uint64_t off = (uint64_t)(p.k0 / bs) * ti->type_size, bytes = (uint64_t)((kn + bs - 1) / bs) * ti->type_size;
    for (int i = i0; i < i1 && i < 32 && p.rp + i < p.re && p.rp + i < r1; i++)
        for (uint64_t o = 0; o < bytes; o += 64)
            _mm_prefetch((const char *)(wb + (uint64_t)(p.rp + i) * w_row_bytes + off + o), _MM_HINT_T1);
}

/* Rows i0 .. i1 of panel p, unpacked and split into a_parts bf16 parts, into the panel
 * buffer a: (part, row tile, step) tiles; frow: KB floats of scratch. */
SIMD static void pack_a_rows(sg_dtype t, const unsigned char *wb, uint64_t w_row_bytes, int64_t cols, int64_t kp,
                             panel p, int i0, int i1, uint16_t *a, size_t a_part, int a_parts, float *frow) {
    int64_t kn = kp - p.k0 < p.kb ? kp - p.k0 : p.kb, steps = kn / 32;
    for (int i = i0; i < i1 && i < 32; i++) {
        uint16_t *pa = a + (size_t)(i >> 4) * steps * TILE + (size_t)(i & 15) * 32;
        if (p.rp + i < p.re) dequant(t, wb + (uint64_t)(p.rp + i) * w_row_bytes, p.k0, kn, cols, frow);
        else memset(frow, 0, (size_t)kn * sizeof(float));
        for (int64_t s = 0; s < steps; s++) {
            __m512i parts[3];
            split32(_mm512_loadu_ps(frow + 32 * s), _mm512_loadu_ps(frow + 32 * s + 16), a_parts, parts);
            for (int k = 0; k < a_parts; k++) _mm512_store_si512(pa + k * a_part + s * TILE, parts[k]);
        }
    }
}

SIMD static bool gemm_amx(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols, const float *x,
                          int64_t x_stride, int n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1,
                          bool fast) {
    int64_t ksteps = (cols + 31) / 32, kp = ksteps * 32;   /* padded columns */
    int ntt = (n_tok + 15) / 16;                           /* token tiles */
    int64_t band = ROW_BAND < r1 - r0 ? ROW_BAND : ((r1 - r0 + 31) & ~(int64_t)31);
    int a_parts = weight_parts(w_type), xp = X_PARTS, terms = X_PARTS;
    int64_t kb = KB;
    if (fast) {   /* one product of bf16-rounded weights and activations */
        xp = a_parts = terms = 1;
        kb = KB_FAST;
    }
    size_t b_part = (size_t)ntt * ksteps * TILE, a_part = (size_t)2 * (kb / 32) * TILE;   /* uint16 elements */
    size_t b_bytes = (size_t)xp * b_part * 2, a_bytes = (size_t)a_parts * a_part * 2;
    size_t c_bytes = (size_t)band * (size_t)ntt * 16 * sizeof(float);
    size_t f_bytes = (size_t)kb * sizeof(float);
    unsigned char *buf = kern_scratch(KERN_SCRATCH_AMX, b_bytes + 2 * a_bytes + c_bytes + f_bytes);   /* two A panels */
    if (!buf) return false;
    uint16_t *bbuf = (uint16_t *)buf, *abuf = (uint16_t *)(buf + b_bytes);
    float *cbuf = (float *)(buf + b_bytes + 2 * a_bytes), *frow = (float *)(buf + b_bytes + 2 * a_bytes + c_bytes);

    /* B: (part, token tile, step) tiles, steps contiguous per token tile */
    for (int jt = 0; jt < ntt; jt++)
        for (int64_t s = 0; s < ksteps; s++)
            pack_b(x, x_stride, n_tok, cols, jt, s, bbuf + ((size_t)jt * ksteps + s) * TILE, b_part, xp);

    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) { cfg.colsb[i] = 64; cfg.rows[i] = 16; }
    __asm__ volatile("" ::: "memory");   /* the tile loads' asm does not name the memory it reads */
    _tile_loadconfig(&cfg);

    /* Panels in loop order: row band > K block > 32-row panel. Each panel's weights are
     * unpacked into one half of abuf while the tile products of the previous one run from
     * the other, a slice of rows after each token-tile pair, so that the AVX-512
     * unpacking overlaps the AMX work queued ahead of it. */
    const unsigned char *wb = w;
    panel cur = {r0, r0 + band < r1 ? r0 + band : r1, 0, r0, kb}, nxt;
    int half = 0;
    int npairs = (ntt + 1) / 2, per = (32 + npairs - 1) / npairs;
    prefetch_rows(wb, w_row_bytes, w_type, kp, r1, cur, 0, 32);
    pack_a_rows(w_type, wb, w_row_bytes, cols, kp, cur, 0, 32, abuf, a_part, a_parts, frow);
    for (;;) {
        int64_t kn = kp - cur.k0 < kb ? kp - cur.k0 : kb, steps = kn / 32, s0 = cur.k0 / 32;
        uint16_t *acur = abuf + (size_t)half * a_parts * a_part, *anxt = abuf + (size_t)(half ^ 1) * a_parts * a_part;
        bool more = next_panel(cur, band, kp, r1, &nxt);
        if (more) prefetch_rows(wb, w_row_bytes, w_type, kp, r1, nxt, 0, per);
        __asm__ volatile("" ::: "memory");
        float *c = cbuf + (size_t)((cur.rp - cur.rb) / 16) * ntt * 256;
        for (int jt = 0; jt < ntt; jt += 2) {
            tile_kernel(acur, steps, a_part, a_parts, bbuf + ((size_t)jt * ksteps + s0) * TILE, ksteps, b_part, xp,
                        terms, steps, c + (size_t)jt * 256, ntt, jt + 1 < ntt ? 2 : 1, cur.k0 > 0);
            if (more) {
                int q = jt / 2;
                prefetch_rows(wb, w_row_bytes, w_type, kp, r1, nxt, (q + 1) * per, (q + 2) * per);
                pack_a_rows(w_type, wb, w_row_bytes, cols, kp, nxt, q * per, q + 1 < npairs ? (q + 1) * per : 32, anxt,
                            a_part, a_parts, frow);
            }
        }
        __asm__ volatile("" ::: "memory");
        if (!more || nxt.rb != cur.rb)   /* the band is done: its accumulators out to y, */
            for (int jt = 0; jt < ntt; jt++)   /* each token's run of rows in order */
                for (int64_t r = cur.rb; r < cur.re; r += 16)
                    store_c(cbuf + ((size_t)((r - cur.rb) / 16) * ntt + jt) * 256, y, y_stride, r, cur.re, jt * 16, n_tok);
        if (!more) break;
        cur = nxt;
        half ^= 1;
    }
    _tile_release();
    return true;
}

/* Not compiled for AVX-512 itself: it must be callable (and decline) on any x86 CPU. */
static bool gemm_entry(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols, const float *x,
                       int64_t x_stride, int n_tok, float *y, int64_t y_stride, int64_t r0, int64_t r1, bool fast) {
    if (!kern_supports(w_type) || !kern_amx_available() || n_tok < 1 || cols < 1 || r1 <= r0) return false;
    if (cols % (int64_t)dtype_info(w_type)->block_size) return false;
    return gemm_amx(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1, fast);
}

bool kern_gemm_amx_exact(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                         const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                         int64_t r0, int64_t r1) {
    return gemm_entry(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1, false);
}

/* Fast mode where it is defined (block-quantized weights), exact otherwise. */
bool kern_gemm_amx_fast(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                        const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                        int64_t r0, int64_t r1) {
    return gemm_entry(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1, quant_supports(w_type));
}

/* The mode follows the row path's numerics for the type: fast where the integer dots
 * are on (activations already rounded to ~7 bits there), exact for the float reference. */
bool kern_gemm_amx(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                   const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                   int64_t r0, int64_t r1) {
    bool fast = kern_supports(w_type) && kern_active()->qdot[w_type] != NULL;
    return gemm_entry(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1, fast);
}

#else /* not x86-64, or a compiler without AMX: the kernel declines every call */

bool kern_amx_available(void) { return false; }

bool kern_gemm_amx(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                   const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                   int64_t r0, int64_t r1) {
    (void)w_type; (void)w; (void)w_row_bytes; (void)cols; (void)x; (void)x_stride;
    (void)n_tok; (void)y; (void)y_stride; (void)r0; (void)r1;
    return false;
}

bool kern_gemm_amx_exact(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                         const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                         int64_t r0, int64_t r1) {
    return kern_gemm_amx(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1);
}

bool kern_gemm_amx_fast(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                        const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                        int64_t r0, int64_t r1) {
    return kern_gemm_amx(w_type, w, w_row_bytes, cols, x, x_stride, n_tok, y, y_stride, r0, r1);
}

#endif
