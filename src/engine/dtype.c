/* dtype.c: the table of tensor element types (names, block and byte sizes, as ggml
 * defines them) and the scalar half / bfloat16 conversions that everything else uses as
 * the reference for its SIMD paths. Only the types listed in dtype.h are known here;
 * other ggml types (IQ*, TQ*, MXFP4) have no kernels in smolgate, so files using them are
 * rejected by the readers rather than half-supported. */
#include "engine/dtype.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

static const sg_dtype_info g_types[SG_DTYPE_COUNT] = {
    [SG_F32]  = {"F32",  1, 4},    [SG_F16]  = {"F16",  1, 2},
    [SG_Q4_0] = {"Q4_0", 32, 18},  [SG_Q4_1] = {"Q4_1", 32, 20},
    [SG_Q5_0] = {"Q5_0", 32, 22},  [SG_Q5_1] = {"Q5_1", 32, 24},
    [SG_Q8_0] = {"Q8_0", 32, 34},  [SG_Q8_1] = {"Q8_1", 32, 36},
    [SG_Q2_K] = {"Q2_K", 256, 84}, [SG_Q3_K] = {"Q3_K", 256, 110},
    [SG_Q4_K] = {"Q4_K", 256, 144}, [SG_Q5_K] = {"Q5_K", 256, 176},
    [SG_Q6_K] = {"Q6_K", 256, 210}, [SG_Q8_K] = {"Q8_K", 256, 292},
    [SG_I8]   = {"I8",   1, 1},    [SG_I16]  = {"I16",  1, 2},
    [SG_I32]  = {"I32",  1, 4},    [SG_I64]  = {"I64",  1, 8},
    [SG_F64]  = {"F64",  1, 8},    [SG_BF16] = {"BF16", 1, 2},
};

const sg_dtype_info *dtype_info(uint32_t t) {
    if (t >= SG_DTYPE_COUNT || !g_types[t].name) return NULL;
    return &g_types[t];
}

size_t dtype_row_bytes(sg_dtype t, uint64_t n) {
    const sg_dtype_info *ti = dtype_info((uint32_t)t);
    if (!ti || n % ti->block_size) return 0;
    uint64_t blocks = n / ti->block_size;
    if (blocks > SIZE_MAX / ti->type_size) return 0;
    return (size_t)blocks * ti->type_size;
}

int dtype_from_name(const char *name) {
    if (!name) return -1;
    for (int t = 0; t < SG_DTYPE_COUNT; t++)
        if (g_types[t].name && strcasecmp(g_types[t].name, name) == 0) return t;
    return -1;
}

static uint32_t f32_bits(float f) { uint32_t x; memcpy(&x, &f, 4); return x; }
static float bits_f32(uint32_t x) { float f; memcpy(&f, &x, 4); return f; }

float sg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));   /* inf, nan (payload kept) */
    if (e != 0) return bits_f32(sign | ((e + 112) << 23) | (m << 13));
    if (m == 0) return bits_f32(sign);
    /* Subnormal m * 2^-24: normalise so the leading 1 becomes the implicit bit. */
    e = 113;
    while (!(m & 0x400)) { m <<= 1; e--; }
    return bits_f32(sign | (e << 23) | ((m & 0x3ff) << 13));
}

uint16_t sg_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return sign | 0x7e00 | (uint16_t)((x >> 13) & 0x3ff);  /* quiet nan */
    if (x >= 0x477ff000u) return sign | 0x7c00;  /* >= 65520 rounds (to even) past 65504 */
    uint32_t e = x >> 23;
    if (e >= 113) {                               /* normal half */
        uint32_t h = ((e - 112) << 10) | ((x >> 13) & 0x3ff), rem = x & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  /* a carry bumps the exponent */
        return sign | (uint16_t)h;
    }
    /* Subnormal half: count units of 2^-24, rounding to nearest even. */
    uint32_t shift = 126 - e;
    if (shift > 24) return sign;                  /* below 2^-25: rounds to zero */
    uint32_t mant = (x & 0x7fffff) | 0x800000;
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;
}

float sg_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t sg_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  /* keep nan a nan */
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
