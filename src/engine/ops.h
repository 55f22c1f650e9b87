/* ops.h: the forward pass's element-wise and attention operations (everything but the
 * matmuls, which are kernels.h's), with SIMD variants.
 *
 * Once the matmuls run on matrix-matrix kernels, these are what is left of prompt
 * processing: attention reads every cached key and value once per query head, and the
 * SwiGLU takes an exponential per FFN activation. The scalar versions are the reference
 * (the float arithmetic transformers does, in order); the AVX2 / AVX-512 versions are
 * kern_active()'s entries (kern_table.attend / .swiglu, written once in simd_ops.h),
 * follow its choice (SMOLGATE_SIMD) and agree with the references to float rounding,
 * which test_ops checks on random data. */
#ifndef SG_OPS_H
#define SG_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/dtype.h"

/* One query head's causal attention over n cached positions:
 *   out (hd) = sum_i softmax_i(scale * q . K_i) V_i
 * K_i = k + i * stride and V_i = v + i * stride, in elements of kv_type (SG_F16 or
 * SG_F32). scores: n floats of scratch. hd a multiple of 16. */
void ops_attend(sg_dtype kv_type, const float *q, const void *k, const void *v, size_t stride, int n,
                int hd, float scale, float *scores, float *out);

/* gate[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i], for i < n. */
void ops_swiglu(float *gate, const float *up, size_t n);

/* The scalar references, for the tests. */
void ops_attend_scalar(sg_dtype kv_type, const float *q, const void *k, const void *v, size_t stride,
                       int n, int hd, float scale, float *scores, float *out);
void ops_swiglu_scalar(float *gate, const float *up, size_t n);

#endif
