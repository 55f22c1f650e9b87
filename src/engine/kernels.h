/* kernels.h: the numeric kernels of the forward pass, with SIMD variants chosen once
 * at start-up.
 *
 * Every weight type has a scalar reference path (kernels.c, quant.c) that dequantizes
 * exactly as GGUF defines the block format and accumulates in float; the AVX2 and
 * AVX-512 variants (kernels_avx2.c, kernels_avx512.c) must agree with it to float
 * rounding, which the tests check on random data. kern_select() picks the best variant
 * the CPU supports; SMOLGATE_SIMD=scalar|avx2|avx512 forces one.
 *
 * Block-quantized weights have a second, faster path in the SIMD tables (qdot): the
 * activation row is quantized once per matmul to int8 (quant_q8_act: a float scale per
 * 8 values) and the dot products run on integers (VNNI vpdpbusd, or AVX2 maddubs), as
 * llama.cpp does. That changes the numerics slightly (activations carry ~7 bits), so it
 * is a separate table entry: the float dot stays the reference, SMOLGATE_INT8=0 turns the
 * integer path off, and test_quant holds its logits at least as close to the exact ones
 * as llama.cpp's. */
#ifndef SG_KERNELS_H
#define SG_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/dtype.h"
#include "engine/quant.h"

/* One dot product of a weight row of type t (n weights) with an f32 vector. */
typedef float (*kern_dot_fn)(const void *w, const float *x, int64_t n);

/* One dot product of a block-quantized weight row (n weights) with an int8 activation
 * row from quant_act_quantize. */
typedef float (*kern_qdot_fn)(const void *w, const quant_q8_act *a, int64_t n);
/* The same for nt activation rows at once, 2 <= nt <= KERN_QDOT_TOKENS (row t's groups
 * start at a + t * a_stride), so that the weights are unpacked once for all of them: a
 * step of a few sequences, a speculative round and prompt processing are bound by that
 * unpacking. out[t] as kern_qdot_fn would give, to float rounding. */
#define KERN_QDOT_TOKENS 4
typedef void (*kern_qdotn_fn)(const void *w, const quant_q8_act *a, int64_t a_stride, int64_t n, int nt, float *out);

/* A matrix-matrix kernel for prompt processing: computes what kern_matmul_rows computes
 * (y[t * y_stride + r] = W row r . x row t, for t < n_tok and r0 <= r < r1) with the
 * weights unpacked once per tile and reused across many tokens. Returns false when it
 * does not take the call (weight type or shape it does not handle); the caller then
 * runs the row-by-row path. r0 is a multiple of KERN_GEMM_ROWS. Thread-safe: each
 * matmul thread calls it on its own rows. */
#define KERN_GEMM_ROWS 32
/* Below 16 tokens (a decode step of a few sequences) the row path's integer dots, which
 * read each weight row once for 4 tokens at a time, beat unpacking whole tiles: with 8
 * sequences on a 3B Q4_K_M model, 20 tok/s against 13 at a threshold of 8. */
#define KERN_GEMM_MIN_TOKENS 16
typedef bool (*kern_gemm_fn)(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                             const float *x, int64_t x_stride, int n_tok,
                             float *y, int64_t y_stride, int64_t r0, int64_t r1);

typedef struct kern_table {
    const char *name;                  /* "scalar", "avx2", "avx512" */
    kern_dot_fn dot[SG_DTYPE_COUNT];   /* NULL: type not supported (the scalar one is used) */
    kern_qdot_fn qdot[SG_DTYPE_COUNT]; /* NULL: no integer path, the float dot is used */
    kern_qdotn_fn qdotn[SG_DTYPE_COUNT]; /* NULL: qdot one row at a time */
    kern_gemm_fn gemm;                 /* NULL: no matrix-matrix kernel */
    /* quant_act_quantize, bit for bit; NULL: that scalar one */
    void (*act_quantize)(const float *x, quant_q8_act *dst, int64_t n);
    /* ops.h's ops_attend (hd a multiple of 16) and ops_swiglu at this table's width,
     * written once in simd_ops.h; NULL: ops.c's scalar references */
    void (*attend)(sg_dtype kv_type, const float *q, const void *k, const void *v, size_t stride, int n, int hd,
                   float scale, float *scores, float *out);
    void (*swiglu)(float *gate, const float *up, size_t n);
    const char *gemm_name;
} kern_table;

extern const kern_table kern_scalar;
extern const kern_table kern_avx2;     /* fields NULL when not compiled for x86 */
extern const kern_table kern_avx512;

/* Per-thread working buffers of the kernels: one per use, so that a kernel can hold its
 * own while calling another. kern_scratch returns the calling thread's buffer `id`, 64-byte
 * aligned and at least `bytes` long (NULL when memory runs out); it grows as needed
 * without keeping its contents, and is freed when the thread ends. */
typedef enum kern_scratch_id {
    KERN_SCRATCH_ROWS,       /* kern_matmul_rows' quantized activations */
    KERN_SCRATCH_ACT,        /* kern_act_buffer's, shared by the caller with other threads */
    KERN_SCRATCH_AMX,        /* gemm_amx.c's tiles */
    KERN_SCRATCH_VNNI,       /* gemm_vnni.c's panels and activations */
    KERN_SCRATCH_COUNT
} kern_scratch_id;
void *kern_scratch(kern_scratch_id id, size_t bytes);

/* The matrix-matrix kernels: AMX tiles (gemm_amx.c; Intel CPUs from Sapphire Rapids, when
 * the kernel grants the tile state) and AVX-512 VNNI (gemm_vnni.c). kern_amx_available()
 * asks the OS for the tile state once; false when the CPU or the OS lacks it. */
bool kern_amx_available(void);
bool kern_gemm_amx(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                   const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                   int64_t r0, int64_t r1);
/* kern_gemm_amx's two numerics, callable directly (tests, benchmarks). Exact: activations
 * and weights split into bf16 parts down to ~2^-24 of each product (the float
 * reference's rounding). Fast, for block-quantized weights (other types: exact):
 * activations rounded to bf16 (2^-9 relative, finer than the integer path's int8) and
 * weights to two bf16 parts (2^-17), a third to a sixth of the tile products.
 * kern_gemm_amx runs fast where kern_active()->qdot[w_type] is set, else exact. */
bool kern_gemm_amx_exact(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                         const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                         int64_t r0, int64_t r1);
bool kern_gemm_amx_fast(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                        const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                        int64_t r0, int64_t r1);
bool kern_gemm_vnni(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                    const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                    int64_t r0, int64_t r1);

/* Chooses the table (force: NULL or "" for the best the CPU has, else "scalar", "avx2",
 * "avx512"; SMOLGATE_SIMD when force is NULL) and whether its integer path is used
 * (SMOLGATE_INT8=0 turns it off; the AVX-512 integer dots need VNNI, without it the AVX2
 * ones are used) and its matrix-matrix kernel (AMX when available, else AVX-512 VNNI;
 * SMOLGATE_GEMM=0 turns it off, =amx or =vnni forces one) and kern_prefetch_bytes. Returns the table's name. Not thread-safe: call it at start-up. */
const char *kern_select(const char *force);
/* The chosen table (a copy of one of those above, integer entries adjusted). */
const kern_table *kern_active(void);

/* How far ahead of the row being multiplied the decode kernels prefetch weights, in
 * bytes: single-row decode streams each weight once, and the distance that keeps enough
 * loads in flight depends on the core. kern_select sets it: 6144 on AMD (Zen 5: a Q4_K
 * row streams at ~24 GB/s a core against ~18 at 2048), 2048 elsewhere (tuned on Intel
 * Xeon), or SMOLGATE_PREFETCH (bytes, 0 to 65536). */
extern int kern_prefetch_bytes;

bool kern_supports(sg_dtype t);
/* Dequantizes / converts n values of type t to f32 (n a multiple of the block size). */
void kern_to_f32(sg_dtype t, const void *src, float *dst, int64_t n);
/* Converts n f32 values to type t (F32, F16, BF16, or a block type of quant.h, quantized
 * as quant_quantize_row does). Returns 0, -1 if unsupported or n is not whole blocks. */
int kern_from_f32(sg_dtype t, const float *src, void *dst, int64_t n);

/* y[t * y_stride + r] = dot(W row r, x[t * x_stride ...]) for t < n_tok, r0 <= r < r1.
 * w_type, w_row_bytes describe W; cols is the row length. Uses k->qdot[w_type] when set
 * (quantizing the n_tok activation rows into a per-thread buffer first), else k->dot. */
void kern_matmul_rows(const kern_table *k, sg_dtype w_type, const void *w, uint64_t w_row_bytes,
                      int64_t cols, const float *x, int64_t x_stride, int n_tok,
                      float *y, int64_t y_stride, int64_t r0, int64_t r1);

/* The same split in two, for callers that share one quantization of x among threads or
 * matrices: kern_uses_int8() says whether rows of w_type take the integer path (else call
 * kern_matmul_rows); kern_act_quantize() fills xq (n_tok rows of quant_act_groups(cols)
 * groups) from x; kern_matmul_rows_q8() is kern_matmul_rows on those rows.
 * kern_act_buffer() is a per-thread buffer for them (NULL when out of memory), valid
 * until the thread's next call and freed when the thread ends. */
bool kern_uses_int8(const kern_table *k, sg_dtype w_type, int64_t cols);
quant_q8_act *kern_act_buffer(int64_t cols, int n_tok);
void kern_act_quantize(const kern_table *k, const float *x, int64_t x_stride, int n_tok, int64_t cols,
                       quant_q8_act *xq);
void kern_matmul_rows_q8(const kern_table *k, sg_dtype w_type, const void *w, uint64_t w_row_bytes,
                         int64_t cols, const quant_q8_act *xq, int n_tok,
                         float *y, int64_t y_stride, int64_t r0, int64_t r1);

/* o = x / sqrt(mean(x^2) + eps) * w   (n); w NULL: no weight */
void kern_rmsnorm(float *o, const float *x, const float *w, int64_t n, float eps);
/* x = softmax(x) in place (n) */
void kern_softmax(float *x, int64_t n);

#endif
