/* simd.h: one width-generic layer over the float vectors of AVX2 (8 lanes) and AVX-512
 * (16 lanes), so that a kernel is written once and compiled at both widths.
 *
 * A kernel file defines SIMD_WIDTH (256 or 512) and SIMD_TARGET (its function target
 * attribute) before including this header; it then has:
 *   vf                    the float vector type, VF_N lanes
 *   vf_zero, vf_set1      constants
 *   vf_load, vf_store     unaligned loads and stores of VF_N floats
 *   vf_load_f16           VF_N f16 values converted to float (F16C)
 *   vf_load_bf16          VF_N bf16 values widened to float (exact: bf16 is float's top half)
 *   vf_from_u8x32         VF_N of the 32 unsigned bytes in an AVX2 register (part p)
 *                         converted to float
 *   vf_load_kv            VF_N floats or f16 values, by sg_dtype
 *   vf_add, vf_sub, vf_mul, vf_div, vf_max, vf_min, vf_fmadd (a * b + c)
 *   vf_reduce_add         the sum of the lanes
 *   vf_exp                e^x to ~2 ulp: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by its
 *                         Taylor series to r^7 (truncation below 6e-9), times 2^n
 * Functions defined in terms of these (simd_ops.h) carry SIMD_TARGET and a name with
 * SIMD_SUFFIX, so the two widths live side by side in the program.
 *
 * Why our own: the vector exponential is not in any packaged library callable from
 * intrinsics code (glibc's libmvec is reached through the compiler's vector ABI), and
 * the handful of operations the kernels use fit in this page. */
#ifndef SG_SIMD_H
#define SG_SIMD_H

#if !defined(SIMD_WIDTH) || !defined(SIMD_TARGET)
#error "define SIMD_WIDTH (256 or 512) and SIMD_TARGET before including engine/simd.h"
#endif

#include <immintrin.h>

#include "engine/dtype.h"

#define SIMD_FN SIMD_TARGET static inline __attribute__((always_inline))

#if SIMD_WIDTH == 512
typedef __m512 vf;
#define VF_N 16
#define SIMD_SUFFIX(name) name##_avx512
SIMD_FN vf vf_zero(void) { return _mm512_setzero_ps(); }
SIMD_FN vf vf_set1(float x) { return _mm512_set1_ps(x); }
SIMD_FN vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
SIMD_FN void vf_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
SIMD_FN vf vf_load_f16(const void *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
SIMD_FN vf vf_from_u8x32(__m256i v, int p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(p ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v)));
}
SIMD_FN vf vf_load_bf16(const void *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
SIMD_FN vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
SIMD_FN vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
SIMD_FN vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
SIMD_FN vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
SIMD_FN vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
SIMD_FN vf vf_min(vf a, vf b) { return _mm512_min_ps(a, b); }
SIMD_FN vf vf_fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
SIMD_FN vf vf_fnmadd(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); }
SIMD_FN float vf_reduce_add(vf v) { return _mm512_reduce_add_ps(v); }
SIMD_FN vf vf_round(vf v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* p * 2^n, n integral */
SIMD_FN vf vf_scale2(vf p, vf n) { return _mm512_scalef_ps(p, n); }
#elif SIMD_WIDTH == 256
typedef __m256 vf;
#define VF_N 8
#define SIMD_SUFFIX(name) name##_avx2
SIMD_FN vf vf_zero(void) { return _mm256_setzero_ps(); }
SIMD_FN vf vf_set1(float x) { return _mm256_set1_ps(x); }
SIMD_FN vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
SIMD_FN void vf_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
SIMD_FN vf vf_load_f16(const void *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
SIMD_FN vf vf_from_u8x32(__m256i v, int p) {
    __m128i h = p & 2 ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p & 1 ? _mm_srli_si128(h, 8) : h));
}
SIMD_FN vf vf_load_bf16(const void *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
SIMD_FN vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
SIMD_FN vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
SIMD_FN vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
SIMD_FN vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
SIMD_FN vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
SIMD_FN vf vf_min(vf a, vf b) { return _mm256_min_ps(a, b); }
SIMD_FN vf vf_fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
SIMD_FN vf vf_fnmadd(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
SIMD_FN float vf_reduce_add(vf v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
SIMD_FN vf vf_round(vf v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* p * 2^n through the exponent bits: n within [-126, 127] (vf_exp's clamp keeps it so) */
SIMD_FN vf vf_scale2(vf p, vf n) {
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#else
#error "SIMD_WIDTH must be 256 or 512"
#endif

/* VF_N values of a KV cache row: floats (SG_F32) or f16. */
SIMD_FN vf vf_load_kv(sg_dtype t, const unsigned char *p) {
    return t == SG_F32 ? vf_load((const float *)p) : vf_load_f16(p);
}

SIMD_FN vf vf_exp(vf x) {
    x = vf_max(vf_min(x, vf_set1(88.0f)), vf_set1(-87.0f));
    vf n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fnmadd(n, vf_set1(0.693145751953125f), x);   /* ln2 in two parts */
    r = vf_fnmadd(n, vf_set1(1.428606765330187e-06f), r);
    vf p = vf_set1(1.0f / 5040);
    p = vf_fmadd(p, r, vf_set1(1.0f / 720));
    p = vf_fmadd(p, r, vf_set1(1.0f / 120));
    p = vf_fmadd(p, r, vf_set1(1.0f / 24));
    p = vf_fmadd(p, r, vf_set1(1.0f / 6));
    p = vf_fmadd(p, r, vf_set1(0.5f));
    p = vf_fmadd(p, r, vf_set1(1.0f));
    p = vf_fmadd(p, r, vf_set1(1.0f));
    return vf_scale2(p, n);
}

#endif
