/* kernels_avx2.c: AVX2 + FMA + F16C dot products (see kernels.h), for x86 CPUs without
 * AVX-512. Tails fall back to scalar code. */
#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* Every function here is compiled for these instructions whatever the file's flags. */
#define SIMD __attribute__((target("avx2,fma,f16c")))

SIMD static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

SIMD static float dot_f32(const void *w, const float *x, int64_t n) {
    const float *a = w;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), s1);
    }
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * x[i];
    return s;
}

SIMD static float dot_f16(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8))), _mm256_loadu_ps(x + i + 8), s1);
    }
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += sg_f16_to_f32(a[i]) * x[i];
    return s;
}

SIMD static inline __m256 load_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

SIMD static float dot_bf16(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(load_bf16(a + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(load_bf16(a + i + 8), _mm256_loadu_ps(x + i + 8), s1);
    }
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += sg_bf16_to_f32(a[i]) * x[i];
    return s;
}

SIMD static float dot_q8_0(const void *w, const float *x, int64_t n) {
    const unsigned char *b = w;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++, b += 34, x += 32) {
        uint16_t dh;
        __builtin_memcpy(&dh, b, 2);
        __m256 bs = _mm256_setzero_ps();
        for (int j = 0; j < 32; j += 8) {
            __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + j))));
            bs = _mm256_fmadd_ps(q, _mm256_loadu_ps(x + j), bs);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(dh)), bs, acc);
    }
    return hsum(acc);
}

const kern_table kern_avx2 = {
    .name = "avx2",
    .dot = {[SG_F32] = dot_f32, [SG_F16] = dot_f16, [SG_BF16] = dot_bf16, [SG_Q8_0] = dot_q8_0},
};
#else
const kern_table kern_avx2 = {0};
#endif
