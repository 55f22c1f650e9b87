/* ops.c: attention and SwiGLU with SIMD variants (see ops.h). Like kernels_*.c, every
 * SIMD function carries its own target attribute, so the file builds with the common
 * flags and the variant is picked at run time from kern_active()'s name.
 *
 * The vector exponential is written here because the one packaged vector expf, glibc's
 * libmvec, is reached through compiler vector-ABI symbols (-fopenmp-simd / -ffast-math
 * code generation), not an API to call from intrinsics code. It is the textbook method: x = n ln2 + r, |r| <= ln2 / 2, exp(r)
 * by its Taylor series to r^7 (truncation below 6e-9 relative), times 2^n. */
#include "engine/ops.h"

#include <math.h>
#include <string.h>

#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---- scalar references ---- */

static float dot_row(sg_dtype t, const void *row, const float *q, int hd) {
    float s = 0;
    if (t == SG_F32) {
        const float *a = row;
        for (int j = 0; j < hd; j++) s += a[j] * q[j];
    } else {
        const uint16_t *a = row;
        for (int j = 0; j < hd; j++) s += sg_f16_to_f32(a[j]) * q[j];
    }
    return s;
}

void ops_attend_scalar(sg_dtype kv_type, const float *q, const void *k, const void *v, size_t stride,
                       int n, int hd, float scale, float *scores, float *out) {
    size_t esz = kv_type == SG_F32 ? 4 : 2;
    const unsigned char *kb = k, *vb = v;
    for (int i = 0; i < n; i++) scores[i] = dot_row(kv_type, kb + (size_t)i * stride * esz, q, hd) * scale;
    kern_softmax(scores, n);
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int i = 0; i < n; i++) {
        const unsigned char *row = vb + (size_t)i * stride * esz;
        float p = scores[i];
        if (kv_type == SG_F32) for (int j = 0; j < hd; j++) out[j] += p * ((const float *)row)[j];
        else for (int j = 0; j < hd; j++) out[j] += p * sg_f16_to_f32(((const uint16_t *)row)[j]);
    }
}

void ops_swiglu_scalar(float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

#if defined(__x86_64__)

/* ---- AVX-512 ---- */

#define OPS512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))

OPS512 static inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

OPS512 static inline __m512 load16(sg_dtype t, const unsigned char *p) {
    if (t == SG_F32) return _mm512_loadu_ps(p);
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

OPS512 static void attend_avx512(sg_dtype kv_type, const float *q, const void *k, const void *v,
                                 size_t stride, int n, int hd, float scale, float *scores, float *out) {
    size_t esz = kv_type == SG_F32 ? 4 : 2, row = stride * esz;
    const unsigned char *kb = k, *vb = v;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        const unsigned char *kr = kb + (size_t)i * row;
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < hd; j += 16) acc = _mm512_fmadd_ps(load16(kv_type, kr + j * esz), _mm512_loadu_ps(q + j), acc);
        float s = _mm512_reduce_add_ps(acc) * scale;
        scores[i] = s;
        max = s > max ? s : max;
    }
    __m512 vmax = _mm512_set1_ps(max), vsum = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(scores + i), vmax));
        _mm512_storeu_ps(scores + i, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + i), vmax));
        e = _mm512_maskz_mov_ps(m, e);
        _mm512_mask_storeu_ps(scores + i, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    float inv = 1.0f / _mm512_reduce_add_ps(vsum);
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int j = 0; j < hd; j += 16) {
        /* two accumulators hide the FMA latency over positions */
        __m512 o0 = _mm512_setzero_ps(), o1 = _mm512_setzero_ps();
        int t = 0;
        for (; t + 2 <= n; t += 2) {
            o0 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t]), load16(kv_type, vb + (size_t)t * row + j * esz), o0);
            o1 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t + 1]), load16(kv_type, vb + (size_t)(t + 1) * row + j * esz), o1);
        }
        if (t < n) o0 = _mm512_fmadd_ps(_mm512_set1_ps(scores[t]), load16(kv_type, vb + (size_t)t * row + j * esz), o0);
        _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_add_ps(o0, o1), _mm512_set1_ps(inv)));
    }
}

OPS512 static void swiglu_avx512(float *gate, const float *up, size_t n) {
    size_t i = 0;
    __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 g = _mm512_loadu_ps(gate + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        _mm512_storeu_ps(gate + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
    }
    ops_swiglu_scalar(gate + i, up + i, n - i);
}

/* ---- AVX2 ---- */

#define OPS256 __attribute__((target("avx2,f16c,fma")))

OPS256 static inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^n through the exponent bits: n is within [-126, 127] after the clamp */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

OPS256 static inline __m256 load8(sg_dtype t, const unsigned char *p) {
    if (t == SG_F32) return _mm256_loadu_ps((const float *)p);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

OPS256 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

OPS256 static void attend_avx2(sg_dtype kv_type, const float *q, const void *k, const void *v,
                               size_t stride, int n, int hd, float scale, float *scores, float *out) {
    size_t esz = kv_type == SG_F32 ? 4 : 2, row = stride * esz;
    const unsigned char *kb = k, *vb = v;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        const unsigned char *kr = kb + (size_t)i * row;
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < hd; j += 8) acc = _mm256_fmadd_ps(load8(kv_type, kr + j * esz), _mm256_loadu_ps(q + j), acc);
        float s = hsum256(acc) * scale;
        scores[i] = s;
        max = s > max ? s : max;
    }
    __m256 vmax = _mm256_set1_ps(max), vsum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(scores + i), vmax));
        _mm256_storeu_ps(scores + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum256(vsum);
    for (; i < n; i++) { scores[i] = expf(scores[i] - max); sum += scores[i]; }
    float inv = 1.0f / sum;
    for (int j = 0; j < hd; j += 8) {
        __m256 o0 = _mm256_setzero_ps(), o1 = _mm256_setzero_ps();
        int t = 0;
        for (; t + 2 <= n; t += 2) {
            o0 = _mm256_fmadd_ps(_mm256_set1_ps(scores[t]), load8(kv_type, vb + (size_t)t * row + j * esz), o0);
            o1 = _mm256_fmadd_ps(_mm256_set1_ps(scores[t + 1]), load8(kv_type, vb + (size_t)(t + 1) * row + j * esz), o1);
        }
        if (t < n) o0 = _mm256_fmadd_ps(_mm256_set1_ps(scores[t]), load8(kv_type, vb + (size_t)t * row + j * esz), o0);
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_add_ps(o0, o1), _mm256_set1_ps(inv)));
    }
}

OPS256 static void swiglu_avx2(float *gate, const float *up, size_t n) {
    size_t i = 0;
    __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    ops_swiglu_scalar(gate + i, up + i, n - i);
}

#endif /* __x86_64__ */

/* ---- dispatch: the SIMD level kern_select chose ---- */

/* 0 scalar, 1 AVX2, 2 AVX-512. Called per attention head: the active table's name is
 * one of the tables' own, so a pointer comparison says which. */
static int simd_level(void) {
#if defined(__x86_64__)
    const char *name = kern_active()->name;
    if (name == kern_avx512.name) return 2;
    if (name == kern_avx2.name) return 1;
#endif
    return 0;
}

void ops_attend(sg_dtype kv_type, const float *q, const void *k, const void *v, size_t stride, int n,
                int hd, float scale, float *scores, float *out) {
#if defined(__x86_64__)
    int level = hd % 16 == 0 ? simd_level() : 0;
    if (level == 2) { attend_avx512(kv_type, q, k, v, stride, n, hd, scale, scores, out); return; }
    if (level == 1) { attend_avx2(kv_type, q, k, v, stride, n, hd, scale, scores, out); return; }
#endif
    ops_attend_scalar(kv_type, q, k, v, stride, n, hd, scale, scores, out);
}

void ops_swiglu(float *gate, const float *up, size_t n) {
#if defined(__x86_64__)
    int level = simd_level();
    if (level == 2) { swiglu_avx512(gate, up, n); return; }
    if (level == 1) { swiglu_avx2(gate, up, n); return; }
#endif
    ops_swiglu_scalar(gate, up, n);
}
