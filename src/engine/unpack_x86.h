/* unpack_x86.h: pieces of GGUF block unpacking that every x86 kernel file repeats, in
 * 128- and 256-bit integer code that is the same whatever vector width the kernel then
 * computes at (kernels_avx2.c, kernels_avx512.c, simd_ops.h, gemm_amx.c). Include inside
 * an x86-only section; the functions carry their own target attribute and inline into
 * any caller compiled for AVX2 and F16C or more. */
#ifndef SG_UNPACK_X86_H
#define SG_UNPACK_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "engine/quant.h"

#define UNPACK_FN static inline __attribute__((always_inline, target("avx2,f16c")))

/* The f16 at p (a block's scale; unaligned) as a float. */
UNPACK_FN float unpack_f16(const uint16_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Half h (weights 128h .. 128h + 127) of a Q6_K block as unsigned 6-bit bytes, quarter k
 * (weights 32k .. 32k + 31 of the half) in q[k]: the low (k < 2) or high nibble of
 * ql[64h + l + 32 (k & 1)] with bits 2k, 2k + 1 of qh[32h + l] on top (quant.h). */
UNPACK_FN void unpack_q6_K_half(const quant_q6_K *b, int h, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
    __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    __m256i nib[4] = {
        _mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
        _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
    };
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_or_si256(nib[k], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2), 4));
}

#endif
