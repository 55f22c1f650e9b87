/* quant.c: GGUF block formats (see quant.h): unpacking, the reference quantizers, the
 * scalar float dots and the integer reference dots.
 *
 * The quantizers reproduce the scale choices of ggml's reference quantizers (the ones
 * llama-quantize uses without an importance matrix), so that smolgate's files are of the
 * same quality as llama.cpp's: Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 take the block's extreme
 * value; Q4_K and Q5_K fit each sub-block's scale and min by weighted least squares over
 * a range of trial scales, then quantize the eight scales and mins to 6 bits; Q6_K fits a
 * signed scale per 16 weights (weighted by x^2) and quantizes the scales to 8 bits. */
#include "engine/quant.h"

#include <assert.h>
#include <math.h>
#include <string.h>

_Static_assert(sizeof(quant_q4_0) == 18, "Q4_0 block");
_Static_assert(sizeof(quant_q4_1) == 20, "Q4_1 block");
_Static_assert(sizeof(quant_q5_0) == 22, "Q5_0 block");
_Static_assert(sizeof(quant_q5_1) == 24, "Q5_1 block");
_Static_assert(sizeof(quant_q8_0) == 34, "Q8_0 block");
_Static_assert(sizeof(quant_q4_K) == 144, "Q4_K block");
_Static_assert(sizeof(quant_q5_K) == 176, "Q5_K block");
_Static_assert(sizeof(quant_q6_K) == 210, "Q6_K block");
_Static_assert(sizeof(quant_q8_act) == 448, "activation group");

bool quant_supports(sg_dtype t) {
    switch (t) {
    case SG_Q4_0: case SG_Q4_1: case SG_Q5_0: case SG_Q5_1: case SG_Q8_0:
    case SG_Q4_K: case SG_Q5_K: case SG_Q6_K:
        return true;
    default:
        return false;
    }
}

static inline float h2f(uint16_t h) { return sg_f16_to_f32(h); }

/* ---- unpacking one block into floats ---- */

static void unpack_q4_0(const quant_q4_0 *b, float *y) {
    float d = h2f(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b->qs[j] & 15) - 8) * d;
        y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}

static void unpack_q4_1(const quant_q4_1 *b, float *y) {
    float d = h2f(b->d), m = h2f(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b->qs[j] & 15) * d + m;
        y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
    }
}

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The 5-bit values of a Q5_0 / Q5_1 block: nibble | (bit j of qh) << 4. */
static void q5_values(const uint8_t *qh4, const uint8_t *qs, int *q) {
    uint32_t qh = load_u32(qh4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

static void unpack_q5_0(const quant_q5_0 *b, float *y) {
    float d = h2f(b->d);
    int q[32];
    q5_values(b->qh, b->qs, q);
    for (int j = 0; j < 32; j++) y[j] = (float)(q[j] - 16) * d;
}

static void unpack_q5_1(const quant_q5_1 *b, float *y) {
    float d = h2f(b->d), m = h2f(b->m);
    int q[32];
    q5_values(b->qh, b->qs, q);
    for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d + m;
}

static void unpack_q8_0(const quant_q8_0 *b, float *y) {
    float d = h2f(b->d);
    for (int j = 0; j < 32; j++) y[j] = d * (float)b->qs[j];
}

static void unpack_q4_K(const quant_q4_K *b, float *y) {
    float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int c = 0; c < 4; c++) {          /* 64 weights per 32 bytes of qs */
        const uint8_t *q = b->qs + 32 * c;
        uint8_t sc, m;
        quant_scale_min_k4(2 * c, b->scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        quant_scale_min_k4(2 * c + 1, b->scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) y[64 * c + l] = d1 * (float)(q[l] & 15) - m1;
        for (int l = 0; l < 32; l++) y[64 * c + 32 + l] = d2 * (float)(q[l] >> 4) - m2;
    }
}

static void unpack_q5_K(const quant_q5_K *b, float *y) {
    float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int c = 0; c < 4; c++) {
        const uint8_t *q = b->qs + 32 * c;
        uint8_t sc, m;
        quant_scale_min_k4(2 * c, b->scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        quant_scale_min_k4(2 * c + 1, b->scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) {
            int hi1 = (b->qh[l] >> (2 * c)) & 1, hi2 = (b->qh[l] >> (2 * c + 1)) & 1;
            y[64 * c + l] = d1 * (float)((q[l] & 15) | hi1 << 4) - m1;
            y[64 * c + 32 + l] = d2 * (float)((q[l] >> 4) | hi2 << 4) - m2;
        }
    }
}

/* The 6-bit value (0..63) of weight i (0..255) of a Q6_K block. */
static inline int q6_value(const quant_q6_K *b, int i) {
    int half = i / 128, k = (i % 128) / 32, l = i % 32;
    uint8_t lo = b->ql[64 * half + l + 32 * (k & 1)];
    int nib = k < 2 ? (lo & 15) : (lo >> 4);
    return nib | ((b->qh[32 * half + l] >> (2 * k)) & 3) << 4;
}

static void unpack_q6_K(const quant_q6_K *b, float *y) {
    float d = h2f(b->d);
    for (int i = 0; i < 256; i++) y[i] = d * (float)b->scales[i / 16] * (float)(q6_value(b, i) - 32);
}

typedef void (*unpack_fn)(const void *block, float *y);

static unpack_fn unpacker(sg_dtype t) {
    switch (t) {
    case SG_Q4_0: return (unpack_fn)unpack_q4_0;
    case SG_Q4_1: return (unpack_fn)unpack_q4_1;
    case SG_Q5_0: return (unpack_fn)unpack_q5_0;
    case SG_Q5_1: return (unpack_fn)unpack_q5_1;
    case SG_Q8_0: return (unpack_fn)unpack_q8_0;
    case SG_Q4_K: return (unpack_fn)unpack_q4_K;
    case SG_Q5_K: return (unpack_fn)unpack_q5_K;
    case SG_Q6_K: return (unpack_fn)unpack_q6_K;
    default: return NULL;
    }
}

void quant_dequantize_row(sg_dtype t, const void *src, float *dst, int64_t n) {
    unpack_fn f = unpacker(t);
    const sg_dtype_info *ti = dtype_info(t);
    if (!f) { memset(dst, 0, (size_t)n * sizeof(float)); return; }
    const unsigned char *p = src;
    for (int64_t i = 0; i < n / ti->block_size; i++, p += ti->type_size) f(p, dst + i * ti->block_size);
}

/* ---- scalar float dots: each block unpacked, then sum(w * x) in float, in order ---- */

static float dot_blocks(sg_dtype t, const void *w, const float *x, int64_t n) {
    unpack_fn f = unpacker(t);
    const sg_dtype_info *ti = dtype_info(t);
    const unsigned char *p = w;
    float y[QUANT_QK_K], s = 0;
    for (int64_t i = 0; i < n / ti->block_size; i++, p += ti->type_size, x += ti->block_size) {
        f(p, y);
        for (uint32_t j = 0; j < ti->block_size; j++) s += y[j] * x[j];
    }
    return s;
}

float quant_dot_q4_0(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q4_0, w, x, n); }
float quant_dot_q4_1(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q4_1, w, x, n); }
float quant_dot_q5_0(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q5_0, w, x, n); }
float quant_dot_q5_1(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q5_1, w, x, n); }
float quant_dot_q8_0(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q8_0, w, x, n); }
float quant_dot_q4_K(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q4_K, w, x, n); }
float quant_dot_q5_K(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q5_K, w, x, n); }
float quant_dot_q6_K(const void *w, const float *x, int64_t n) { return dot_blocks(SG_Q6_K, w, x, n); }

/* ---- quantization ---- */

/* Round to nearest, ties to even, for |f| < 2^22: adding 1.5 * 2^23 leaves the integer in
 * the low mantissa bits. Much cheaper than rintf without SSE4.1. */
static inline int nearest(float f) {
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The value of largest magnitude (the first one, on ties), with its sign. */
static float signed_absmax(const float *x, int n, float *amax_out) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; }
    if (amax_out) *amax_out = amax;
    return max;
}

static void quantize_q4_0(const float *x, quant_q4_0 *b) {
    /* d maps the extreme value to -8, the end of the range with one more step. */
    float max = signed_absmax(x, 32, NULL), d = max / -8, id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sg_f32_to_f16(d);
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)(x[j] * id + 8.5f), 0, 15), q1 = clampi((int)(x[j + 16] * id + 8.5f), 0, 15);
        b->qs[j] = (uint8_t)(q0 | q1 << 4);
    }
}

static void min_max(const float *x, int n, float *lo, float *hi) {
    *lo = x[0];
    *hi = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < *lo) *lo = x[i];
        if (x[i] > *hi) *hi = x[i];
    }
}

static void quantize_q4_1(const float *x, quant_q4_1 *b) {
    float lo, hi;
    min_max(x, 32, &lo, &hi);
    float d = (hi - lo) / 15, id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sg_f32_to_f16(d);
    b->m = sg_f32_to_f16(lo);
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)((x[j] - lo) * id + 0.5f), 0, 15), q1 = clampi((int)((x[j + 16] - lo) * id + 0.5f), 0, 15);
        b->qs[j] = (uint8_t)(q0 | q1 << 4);
    }
}

static void pack_q5(const int *q, uint8_t *qh4, uint8_t *qs) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
        qh |= (uint32_t)(q[j] >> 4 & 1) << j;
        qh |= (uint32_t)(q[j + 16] >> 4 & 1) << (j + 16);
    }
    for (int k = 0; k < 4; k++) qh4[k] = (uint8_t)(qh >> (8 * k));
}

static void quantize_q5_0(const float *x, quant_q5_0 *b) {
    float max = signed_absmax(x, 32, NULL), d = max / -16, id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sg_f32_to_f16(d);
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = clampi((int)(x[j] * id + 16.5f), 0, 31);
    pack_q5(q, b->qh, b->qs);
}

static void quantize_q5_1(const float *x, quant_q5_1 *b) {
    float lo, hi;
    min_max(x, 32, &lo, &hi);
    float d = (hi - lo) / 31, id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sg_f32_to_f16(d);
    b->m = sg_f32_to_f16(lo);
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = clampi((int)((x[j] - lo) * id + 0.5f), 0, 31);
    pack_q5(q, b->qh, b->qs);
}

static void quantize_q8_0(const float *x, quant_q8_0 *b) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sg_f32_to_f16(d);
    for (int j = 0; j < 32; j++) b->qs[j] = (int8_t)roundf(x[j] * id);
}

/* Fits x[i] ~ scale * L[i] - min with L in 0..nmax, minimizing sum(w[i] * err^2), for a
 * k-quant sub-block. Starts from the min/max mapping, then tries nstep + 1 inverse scales
 * (nmax + rmin + rdelta * k) / (max - min): for each, the rounding L it induces and the
 * least-squares scale and min for that L (min held at 0 if the fit wants it positive),
 * keeping the best. Returns the scale; *neg_min receives the (non-negative) min. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                           float rmin, float rdelta, int nstep) {
    float lo = x[0], hi = x[0], sw = w[0], swx = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
        sw += w[i];
        swx += w[i] * x[i];
    }
    if (lo > 0) lo = 0;   /* the min is subtracted: it never goes above 0 */
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *neg_min = -lo;
        return 0;
    }
    float iscale = nmax / (hi - lo), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest(iscale * (x[i] - lo)), 0, nmax);
        float e = scale * L[i] + lo - x[i];
        best += w[i] * e * e;
    }
    uint8_t trial[32];
    for (int k = 0; k <= nstep; k++) {
        iscale = (rmin + rdelta * k + nmax) / (hi - lo);
        float swl = 0, swl2 = 0, swxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * (x[i] - lo)), 0, nmax);
            trial[i] = (uint8_t)l;
            swl += w[i] * l;
            swl2 += w[i] * l * l;
            swxl += w[i] * l * x[i];
        }
        float det = sw * swl2 - swl * swl;
        if (det <= 0) continue;
        float s = (sw * swxl - swx * swl) / det, m = (swl2 * swx - swl * swxl) / det;
        if (m > 0) {
            m = 0;
            s = swxl / swl2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = s * trial[i] + m - x[i];
            err += w[i] * e * e;
        }
        if (err < best) {
            memcpy(L, trial, (size_t)n);
            best = err;
            scale = s;
            lo = m;
        }
    }
    *neg_min = -lo;
    return scale;
}

/* Packs eight 6-bit scales and mins into a Q4_K / Q5_K scales[12] (quant_scale_min_k4's
 * inverse). */
static void pack_scales_k4(const uint8_t *ls, const uint8_t *lm, uint8_t *s) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 15) | (lm[j] & 15) << 4);
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

/* The shared part of Q4_K and Q5_K: per sub-block scale/min fit, 6-bit scales, and the
 * final quants L (0..nmax) recomputed against the stored (rounded) scales. */
static void quantize_k4_common(const float *x, int nmax, float rmin, float rdelta, int nstep,
                               uint16_t *d_out, uint16_t *dmin_out, uint8_t *scales_out, uint8_t *L) {
    float scales[8], mins[8], w[32], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        float ss = 0;
        for (int l = 0; l < 32; l++) ss += xj[l] * xj[l];
        float av = sqrtf(ss / 32);
        for (int l = 0; l < 32; l++) w[l] = av + fabsf(xj[l]);   /* weight big values more */
        scales[j] = fit_scale_min(32, nmax, xj, w, L + 32 * j, &mins[j], rmin, rdelta, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63 / max_scale : 0, inv_min = max_min > 0 ? 63 / max_min : 0;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        ls[j] = (uint8_t)clampi(nearest(inv_scale * scales[j]), 0, 63);
        lm[j] = (uint8_t)clampi(nearest(inv_min * mins[j]), 0, 63);
    }
    pack_scales_k4(ls, lm, scales_out);
    *d_out = sg_f32_to_f16(max_scale / 63);
    *dmin_out = sg_f32_to_f16(max_min / 63);
    float d = h2f(*d_out), dmin = h2f(*dmin_out);
    for (int j = 0; j < 8; j++) {
        float dj = d * ls[j], mj = dmin * lm[j];
        if (dj == 0) continue;   /* every weight of the sub-block decodes to -mj anyway */
        for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)clampi(nearest((x[32 * j + l] + mj) / dj), 0, nmax);
    }
}

static void quantize_q4_K(const float *x, quant_q4_K *b) {
    uint8_t L[256];
    quantize_k4_common(x, 15, -1.0f, 0.1f, 20, &b->d, &b->dmin, b->scales, L);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) b->qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
}

static void quantize_q5_K(const float *x, quant_q5_K *b) {
    uint8_t L[256];
    quantize_k4_common(x, 31, -0.5f, 0.1f, 15, &b->d, &b->dmin, b->scales, L);
    memset(b->qh, 0, sizeof b->qh);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int a = L[64 * c + l], h = L[64 * c + 32 + l];
            b->qs[32 * c + l] = (uint8_t)((a & 15) | (h & 15) << 4);
            b->qh[l] |= (uint8_t)(((a >> 4) << (2 * c)) | ((h >> 4) << (2 * c + 1)));
        }
}

/* Fits x[i] ~ scale * l[i] with l in -nmax..nmax-1 for 16 weights, minimizing
 * sum(x^2 * err^2): the extreme value maps to -nmax (the longer side of the range), then
 * 18 nearby inverse scales are tried with their least-squares scale. L gets l + nmax. */
static float fit_scale_signed(int n, int nmax, const float *x, int8_t *L) {
    float amax, max = signed_absmax(x, n, &amax);
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float best_scale = 0, best = 0;
    for (int k = 0; k <= 18; k++) {
        int step = k == 0 ? 0 : k <= 9 ? k - 10 : k - 9;   /* 0, then -9..-1, 1..9 */
        float iscale = -(nmax + 0.1f * step) / max;
        float sxl = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sxl += w * x[i] * l;
            sl2 += w * l * l;
        }
        /* the fit's error falls as sxl^2 / sl2 grows */
        bool better = k == 0 ? true : sl2 > 0 && sxl * sxl > best * sl2;
        if (!better) continue;
        for (int i = 0; i < n; i++) L[i] = (int8_t)(clampi(nearest(iscale * x[i]), -nmax, nmax - 1) + nmax);
        best_scale = sl2 != 0 ? sxl / sl2 : 0;
        best = best_scale * sxl;
    }
    return best_scale;
}

static void quantize_q6_K(const float *x, quant_q6_K *b) {
    int8_t L[256];
    float scales[16], max_scale = 0, max_abs = 0;
    for (int k = 0; k < 16; k++) {
        scales[k] = fit_scale_signed(16, 32, x + 16 * k, L + 16 * k);
        if (fabsf(scales[k]) > max_abs) { max_abs = fabsf(scales[k]); max_scale = scales[k]; }
    }
    memset(b, 0, sizeof *b);
    if (max_abs < 1e-15f) return;   /* all zero */
    float iscale = -128 / max_scale;
    b->d = sg_f32_to_f16(1 / iscale);
    for (int k = 0; k < 16; k++) b->scales[k] = (int8_t)clampi(nearest(iscale * scales[k]), -128, 127);
    float d = h2f(b->d);
    for (int k = 0; k < 16; k++) {
        float dk = d * b->scales[k];
        if (dk == 0) continue;
        for (int i = 0; i < 16; i++) L[16 * k + i] = (int8_t)(clampi(nearest(x[16 * k + i] / dk), -32, 31) + 32);
    }
    for (int half = 0; half < 2; half++) {
        const int8_t *Lh = L + 128 * half;
        uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        for (int l = 0; l < 32; l++) {
            int q0 = Lh[l], q1 = Lh[l + 32], q2 = Lh[l + 64], q3 = Lh[l + 96];
            ql[l] = (uint8_t)((q0 & 15) | (q2 & 15) << 4);
            ql[l + 32] = (uint8_t)((q1 & 15) | (q3 & 15) << 4);
            qh[l] = (uint8_t)((q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
        }
    }
}

int quant_quantize_row(sg_dtype t, const float *src, void *dst, int64_t n) {
    const sg_dtype_info *ti = dtype_info(t);
    if (!quant_supports(t) || n % ti->block_size) return -1;
    unsigned char *p = dst;
    for (int64_t i = 0; i < n / ti->block_size; i++, p += ti->type_size) {
        const float *x = src + i * ti->block_size;
        switch (t) {
        case SG_Q4_0: quantize_q4_0(x, (quant_q4_0 *)p); break;
        case SG_Q4_1: quantize_q4_1(x, (quant_q4_1 *)p); break;
        case SG_Q5_0: quantize_q5_0(x, (quant_q5_0 *)p); break;
        case SG_Q5_1: quantize_q5_1(x, (quant_q5_1 *)p); break;
        case SG_Q8_0: quantize_q8_0(x, (quant_q8_0 *)p); break;
        case SG_Q4_K: quantize_q4_K(x, (quant_q4_K *)p); break;
        case SG_Q5_K: quantize_q5_K(x, (quant_q5_K *)p); break;
        case SG_Q6_K: quantize_q6_K(x, (quant_q6_K *)p); break;
        default: return -1;
        }
    }
    return 0;
}

/* ---- int8 activations and the integer reference dots ---- */

void quant_act_quantize(const float *x, quant_q8_act *dst, int64_t n) {
    assert(n % QUANT_QK == 0);
    for (int64_t b = 0; b < n / 8; b++) {
        quant_q8_act *g = &dst[b / 32];
        int k = (int)(b % 32);
        const float *xb = x + 8 * b;
        float amax = 0;
        for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float d = amax / 127, id = d != 0 ? 1.0f / d : 0.0f;
        g->d[k] = d;
        int8_t *q = g->qs + 8 * k;
        int sum = 0;
        for (int j = 0; j < 8; j++) {
            q[j] = (int8_t)clampi(nearest(xb[j] * id), -127, 127);
            sum += q[j];
        }
        if (k % 2 == 0) g->s[k / 2] = 0;
        g->s[k / 2] += d * (float)sum;
    }
}

/* sum(u[i] * x[i]) over 8 weights and activations. */
static inline int dot8(const int *u, const int8_t *x) {
    int s = 0;
    for (int i = 0; i < 8; i++) s += u[i] * x[i];
    return s;
}

/* A 32-block's share: d_w * sum over its four 8s of dx_k * sum(u * x), with the
 * weights' codes u; the offset (Q4_0's -8) is applied by the caller through s. */
static float block32(const int *u, const quant_q8_act *g, int j) {
    float s = 0;
    for (int k = 0; k < 4; k++) s += g->d[4 * j + k] * (float)dot8(u + 8 * k, g->qs + 32 * j + 8 * k);
    return s;
}

float quant_qdot_q4_0(const void *w, const quant_q8_act *a, int64_t n) {
    const quant_q4_0 *b = w;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        const quant_q8_act *g = &a[i / 8];
        int j = (int)(i % 8), u[32];
        for (int l = 0; l < 16; l++) { u[l] = b[i].qs[l] & 15; u[l + 16] = b[i].qs[l] >> 4; }
        s += h2f(b[i].d) * (block32(u, g, j) - 8 * (g->s[2 * j] + g->s[2 * j + 1]));
    }
    return s;
}

float quant_qdot_q8_0(const void *w, const quant_q8_act *a, int64_t n) {
    const quant_q8_0 *b = w;
    float s = 0;
    for (int64_t i = 0; i < n / 32; i++) {
        int u[32];
        for (int l = 0; l < 32; l++) u[l] = b[i].qs[l];
        s += h2f(b[i].d) * block32(u, &a[i / 8], (int)(i % 8));
    }
    return s;
}

/* Q4_K / Q5_K: per 32-block j, d * sc_j * sum_k(dx_k * sum(q * qx)) - dmin * m_j * sum(x). */
static float qdot_k4(uint16_t dh, uint16_t dminh, const uint8_t *scales, const int *q, const quant_q8_act *g) {
    float d = h2f(dh), dmin = h2f(dminh), s = 0;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        quant_scale_min_k4(j, scales, &sc, &m);
        s += d * sc * block32(q + 32 * j, g, j) - dmin * m * (g->s[2 * j] + g->s[2 * j + 1]);
    }
    return s;
}

float quant_qdot_q4_K(const void *w, const quant_q8_act *a, int64_t n) {
    const quant_q4_K *b = w;
    float s = 0;
    int q[256];
    for (int64_t i = 0; i < n / 256; i++) {
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] = b[i].qs[32 * c + l] & 15;
                q[64 * c + 32 + l] = b[i].qs[32 * c + l] >> 4;
            }
        s += qdot_k4(b[i].d, b[i].dmin, b[i].scales, q, &a[i]);
    }
    return s;
}

float quant_qdot_q5_K(const void *w, const quant_q8_act *a, int64_t n) {
    const quant_q5_K *b = w;
    float s = 0;
    int q[256];
    for (int64_t i = 0; i < n / 256; i++) {
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                q[64 * c + l] = (b[i].qs[32 * c + l] & 15) | ((b[i].qh[l] >> (2 * c)) & 1) << 4;
                q[64 * c + 32 + l] = (b[i].qs[32 * c + l] >> 4) | ((b[i].qh[l] >> (2 * c + 1)) & 1) << 4;
            }
        s += qdot_k4(b[i].d, b[i].dmin, b[i].scales, q, &a[i]);
    }
    return s;
}

/* Q6_K: per 16-block k, d * sc_k * (sum over its two 8s of dx * sum(q * qx) - 32 * sum(x)). */
float quant_qdot_q6_K(const void *w, const quant_q8_act *a, int64_t n) {
    const quant_q6_K *b = w;
    float s = 0;
    int q[256];
    for (int64_t i = 0; i < n / 256; i++) {
        const quant_q8_act *g = &a[i];
        for (int l = 0; l < 256; l++) q[l] = q6_value(&b[i], l);
        float d = h2f(b[i].d);
        for (int k = 0; k < 16; k++) {
            float t = g->d[2 * k] * (float)dot8(q + 16 * k, g->qs + 16 * k) +
                      g->d[2 * k + 1] * (float)dot8(q + 16 * k + 8, g->qs + 16 * k + 8);
            s += d * b[i].scales[k] * (t - 32 * g->s[k]);
        }
    }
    return s;
}
