/* dtype.h: tensor element types, numbered as GGUF / ggml number them so that a type id
 * read from a file is used as is. Block-quantized types store `block_size` weights in
 * `type_size` bytes; plain types have a block size of 1. */
#ifndef SG_DTYPE_H
#define SG_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum sg_dtype {
    SG_F32 = 0, SG_F16 = 1, SG_Q4_0 = 2, SG_Q4_1 = 3, SG_Q5_0 = 6, SG_Q5_1 = 7,
    SG_Q8_0 = 8, SG_Q8_1 = 9, SG_Q2_K = 10, SG_Q3_K = 11, SG_Q4_K = 12, SG_Q5_K = 13,
    SG_Q6_K = 14, SG_Q8_K = 15, SG_I8 = 24, SG_I16 = 25, SG_I32 = 26, SG_I64 = 27,
    SG_F64 = 28, SG_BF16 = 30,
    SG_DTYPE_COUNT = 40
} sg_dtype;

typedef struct sg_dtype_info {
    const char *name;      /* "F32", "Q8_0", ... as GGUF tools print them */
    uint32_t block_size;   /* weights per block */
    uint32_t type_size;    /* bytes per block */
} sg_dtype_info;

/* NULL when t is not a type ggml defines. */
const sg_dtype_info *dtype_info(uint32_t t);
/* Bytes taken by n weights of type t; 0 when n is not a multiple of the block size or
 * the size would overflow. */
size_t dtype_row_bytes(sg_dtype t, uint64_t n);
/* Looks a type up by name ("q8_0", "F16", case-insensitive); -1 when unknown. */
int dtype_from_name(const char *name);

/* Scalar conversions (IEEE half, bfloat16 with round-to-nearest-even). */
float    sg_f16_to_f32(uint16_t h);
uint16_t sg_f32_to_f16(float f);
float    sg_bf16_to_f32(uint16_t b);
uint16_t sg_f32_to_bf16(float f);

#endif
