/* ops.c: attention and SwiGLU (see ops.h): the scalar references here, the SIMD
 * variants in the kernel table (written once in simd_ops.h over simd.h's vectors, and
 * compiled at each width by kernels_avx2.c and kernels_avx512.c). */
#include "engine/ops.h"

#include <math.h>
#include <string.h>

#include "engine/kernels.h"

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

/* ---- dispatch: the table kern_select chose ---- */

void ops_attend(sg_dtype kv_type, const float *q, const void *k, const void *v, size_t stride, int n,
                int hd, float scale, float *scores, float *out) {
    const kern_table *kt = kern_active();
    if (kt->attend && hd % 16 == 0) kt->attend(kv_type, q, k, v, stride, n, hd, scale, scores, out);
    else ops_attend_scalar(kv_type, q, k, v, stride, n, hd, scale, scores, out);
}

void ops_swiglu(float *gate, const float *up, size_t n) {
    const kern_table *kt = kern_active();
    if (kt->swiglu) kt->swiglu(gate, up, n);
    else ops_swiglu_scalar(gate, up, n);
}
