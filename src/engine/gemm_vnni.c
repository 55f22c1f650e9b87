/* gemm_vnni.c: matrix-matrix kernel on AVX-512 VNNI (see kernels.h). Work in progress:
 * takes no call yet. */
#include "engine/kernels.h"


bool kern_gemm_vnni(sg_dtype w_type, const void *w, uint64_t w_row_bytes, int64_t cols,
                    const float *x, int64_t x_stride, int n_tok, float *y, int64_t y_stride,
                    int64_t r0, int64_t r1) {
    (void)w_type; (void)w; (void)w_row_bytes; (void)cols; (void)x; (void)x_stride;
    (void)n_tok; (void)y; (void)y_stride; (void)r0; (void)r1;
    return false;
}
