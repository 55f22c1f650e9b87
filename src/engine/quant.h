/* quant.h: the block-quantized weight formats of GGUF (ggml), byte for byte: block
 * layouts, dequantization, reference-quality quantization, and scalar dot products.
 *
 * Why a module of its own: the formats are the contract with every GGUF file on the hub
 * and with llama.cpp, so their definition lives in one place that the kernels (kernels.c
 * and its SIMD variants), the model loader and the quantizer (quantize.c) all share.
 *
 * Formats (weights per block / bytes per block; w = the dequantized weight):
 *   Q4_0  32 / 18   f16 d; qs[16]: weight j<16 low nibble of qs[j], j+16 its high
 *                   nibble; w = d * (q - 8)
 *   Q4_1  32 / 20   f16 d, m; nibbles as Q4_0; w = d * q + m
 *   Q5_0  32 / 22   f16 d; u32 qh (bit j = 5th bit of weight j); nibbles as Q4_0;
 *                   w = d * (q - 16)
 *   Q5_1  32 / 24   f16 d, m; qh and nibbles as Q5_0; w = d * q + m
 *   Q8_0  32 / 34   f16 d; i8 qs[32]; w = d * q
 *   Q4_K  256 / 144 f16 d, dmin; scales[12]: eight 6-bit (scale, min) pairs; qs[128]: in
 *                   chunks of 32 bytes, low nibbles = sub-block 2i, high = 2i+1;
 *                   w = d * sc * q - dmin * m
 *   Q5_K  256 / 176 as Q4_K plus qh[32]: bit 2i of qh[l] is the 5th bit of weight l of
 *                   sub-block 2i, bit 2i+1 that of sub-block 2i+1
 *   Q6_K  256 / 210 ql[128], qh[64], i8 scales[16] (one per 16 weights), f16 d; each half
 *                   of 128 weights uses 64 bytes of ql and 32 of qh: weight l (l<32) of
 *                   quarter k (0..3) takes the low (k<2) or high (k>=2) nibble of
 *                   ql[l + 32*(k&1)] and bits 2k..2k+1 of qh[l]; w = d * scale * (q - 32)
 *
 * The scalar dot products dequantize each block exactly as above into floats and
 * accumulate w * x in float, in order: the reference every faster path is tested against.
 *
 * For the integer dot products (kernels.h's qdot), activations are quantized to
 * quant_q8_act: groups of 256 values in which every 8 share a float scale. The integer
 * reference dots here compute sum(w * x) from the weight blocks and that form exactly in
 * integers within each 8 and in float across them (the weights' offsets and mins through
 * the activations' float sums); the SIMD variants must agree with them to float rounding. */
#ifndef SG_QUANT_H
#define SG_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/dtype.h"

#define QUANT_QK   32    /* weights per block of Q4_0 ... Q8_0 */
#define QUANT_QK_K 256   /* weights per super-block of the k-quants */

typedef struct { uint16_t d; uint8_t qs[16]; } quant_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } quant_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } quant_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } quant_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } quant_q8_0;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } quant_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } quant_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } quant_q6_K;

/* True for the block types this module implements (those above). */
bool quant_supports(sg_dtype t);

/* n values of block type t to f32; n a multiple of the block size. */
void quant_dequantize_row(sg_dtype t, const void *src, float *dst, int64_t n);

/* n f32 values to block type t, choosing scales as ggml's reference quantizer does
 * (for the k-quants, its weighted least-squares search over scale and min, not a plain
 * min/max). Returns 0, or -1 when t is not a block type here or n is not a multiple of
 * its block size. Deterministic: same input, same bytes. */
int quant_quantize_row(sg_dtype t, const float *src, void *dst, int64_t n);

/* The 6-bit scale and min of sub-block j (0..7) from a Q4_K / Q5_K scales[12]. */
static inline void quant_scale_min_k4(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* ---- scalar float dot products: sum(w[i] * x[i]) over n weights of a row ---- */
float quant_dot_q4_0(const void *w, const float *x, int64_t n);
float quant_dot_q4_1(const void *w, const float *x, int64_t n);
float quant_dot_q5_0(const void *w, const float *x, int64_t n);
float quant_dot_q5_1(const void *w, const float *x, int64_t n);
float quant_dot_q8_0(const void *w, const float *x, int64_t n);
float quant_dot_q4_K(const void *w, const float *x, int64_t n);
float quant_dot_q5_K(const void *w, const float *x, int64_t n);
float quant_dot_q6_K(const void *w, const float *x, int64_t n);

/* ---- int8 activations ---- */

/* 256 activations (the last group of a row may be partly used): value i of the group is
 * d[i / 8] * qs[i]. A scale per 8 values keeps the int8 rounding error well below what
 * llama.cpp's 32- and 256-value blocks give (its deviation from exact logits is the bar);
 * s[k] = sum of the dequantized values i in 16k .. 16k + 15, which lets the kernels fold
 * the weights' offsets and mins in without touching qs again. 448 bytes. */
typedef struct {
    float d[32];
    float s[16];
    int8_t qs[256];
} quant_q8_act;

/* Groups needed for a row of n values (n a multiple of 32). */
static inline int64_t quant_act_groups(int64_t n) { return (n + QUANT_QK_K - 1) / QUANT_QK_K; }
/* Quantizes n values (a multiple of 32): per 8, d = max|x| / 127, q = round(x / d). */
void quant_act_quantize(const float *x, quant_q8_act *dst, int64_t n);

/* Integer reference dots of a weight row (n weights) with quantized activations. */
float quant_qdot_q4_0(const void *w, const quant_q8_act *a, int64_t n);
float quant_qdot_q8_0(const void *w, const quant_q8_act *a, int64_t n);
float quant_qdot_q4_K(const void *w, const quant_q8_act *a, int64_t n);
float quant_qdot_q5_K(const void *w, const quant_q8_act *a, int64_t n);
float quant_qdot_q6_K(const void *w, const quant_q8_act *a, int64_t n);

#endif
