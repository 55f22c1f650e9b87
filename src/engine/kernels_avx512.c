/* kernels_avx512.c: AVX-512 dot products (see kernels.h). Compiled with AVX-512 flags;
 * only called when the CPU reports AVX-512F/BW/VL/DQ. Tails use masked loads, so any
 * row length works. */
#include "engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

/* Every function here is compiled for these instructions whatever the file's flags. */
#define SIMD __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

SIMD static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

SIMD static float dot_f32(const void *w, const float *x, int64_t n) {
    const float *a = w;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(x + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, x + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

SIMD static inline __m512 load_f16(const uint16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

SIMD static float dot_f16(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i))), _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(a + i + 16))), _mm512_loadu_ps(x + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        s0 = _mm512_fmadd_ps(load_f16(a + i, m), _mm512_maskz_loadu_ps(m, x + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

SIMD static inline __m512 load_bf16(const uint16_t *p, __mmask16 m) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

SIMD static float dot_bf16(const void *w, const float *x, int64_t n) {
    const uint16_t *a = w;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(load_bf16(a + i, 0xFFFF), _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(load_bf16(a + i + 16, 0xFFFF), _mm512_loadu_ps(x + i + 16), s1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        s0 = _mm512_fmadd_ps(load_bf16(a + i, m), _mm512_maskz_loadu_ps(m, x + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

SIMD static float dot_q8_0(const void *w, const float *x, int64_t n) {
    const unsigned char *b = w;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++, b += 34, x += 32) {
        uint16_t dh;
        __builtin_memcpy(&dh, b, 2);
        __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))));
        __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18))));
        __m512 bs = _mm512_mul_ps(q0, _mm512_loadu_ps(x));
        bs = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), bs);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(dh)), bs, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

const kern_table kern_avx512 = {
    .name = "avx512",
    .dot = {[SG_F32] = dot_f32, [SG_F16] = dot_f16, [SG_BF16] = dot_bf16, [SG_Q8_0] = dot_q8_0},
};
#else
const kern_table kern_avx512 = {0};
#endif
