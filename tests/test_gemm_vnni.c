/* test_gemm_vnni.c: the AVX-512 VNNI matrix-matrix kernel (gemm_vnni.c) on random data
 * with odd shapes, against two references: an emulation of its own numerics (the
 * activations quantized per 16 as it does, everything else in double), which it must
 * match to float rounding, and the scalar float dot, which it must match within the
 * int8 rounding bound; F32 / F16 / BF16 against the exact sum. Then end to end: logits on llama.cpp's quantized reference files
 * with the kernel forced, held to llama.cpp's own deviation from exact. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dtype.h"
#include "engine/infer.h"
#include "engine/kernels.h"
#include "engine/model.h"
#include "testutil.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {   /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static bool cpu_has_vnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
}

static const sg_dtype handled[] = {SG_Q4_0, SG_Q4_1, SG_Q5_0, SG_Q5_1, SG_Q8_0, SG_Q4_K, SG_Q5_K, SG_Q6_K};

/* Random bytes for a row with its f16 scale fields set to finite values of a sensible
 * size: codes no quantizer writes (Q8_0's -128, negative Q6_K scales) must work too. */
static void random_blocks(sg_dtype t, void *dst, int64_t n) {
    const sg_dtype_info *ti = dtype_info(t);
    unsigned char *p = dst;
    size_t bytes = dtype_row_bytes(t, (uint64_t)n);
    for (size_t i = 0; i < bytes; i++) { frand(); p[i] = (unsigned char)(rng >> 24); }
    int f16_fields[2] = {0, -1};
    switch (t) {
    case SG_Q4_1: case SG_Q5_1: case SG_Q4_K: case SG_Q5_K: f16_fields[1] = 2; break;
    case SG_Q6_K: f16_fields[0] = 208; break;
    default: break;
    }
    for (int64_t b = 0; b < n / ti->block_size; b++)
        for (int k = 0; k < 2; k++) {
            if (f16_fields[k] < 0) continue;
            uint16_t h = sg_f32_to_f16(frand() * 0.01f);
            memcpy(p + b * ti->type_size + f16_fields[k], &h, 2);
        }
}

/* The offset m of each 32 weights of a row (w = s * q + m), as the kernel splits it. */
static void row_offsets(sg_dtype t, const unsigned char *row, int64_t n, float *m) {
    for (int64_t b = 0; b < n / 32; b++) {
        switch (t) {
        case SG_Q4_1: m[b] = sg_f16_to_f32(((const quant_q4_1 *)row)[b].m); break;
        case SG_Q5_1: m[b] = sg_f16_to_f32(((const quant_q5_1 *)row)[b].m); break;
        case SG_Q4_K: case SG_Q5_K: {
            const unsigned char *blk = row + (b / 8) * (t == SG_Q4_K ? sizeof(quant_q4_K) : sizeof(quant_q5_K));
            const quant_q4_K *k4 = (const quant_q4_K *)blk;   /* d, dmin, scales: same place in both */
            uint8_t sc, mn;
            quant_scale_min_k4((int)(b % 8), k4->scales, &sc, &mn);
            m[b] = -sg_f16_to_f32(k4->dmin) * mn;
            break;
        }
        default: m[b] = 0; break;
        }
    }
}

/* The activations as the kernel quantizes them: per 16, d = max|x| / 127, q = x * 127 /
 * max|x| rounded to nearest even (float arithmetic in the same order). */
static void emulate_acts(const float *x, int64_t n, double *xq, double *d_of) {
    for (int64_t b = 0; b < n / 16; b++) {
        float amax = 0;
        for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(x[16 * b + i]));
        float d = amax / 127, id = amax != 0 ? 127 / amax : 0;
        for (int i = 0; i < 16; i++) {
            xq[16 * b + i] = (double)d * nearbyintf(x[16 * b + i] * id);
            d_of[16 * b + i] = d;
        }
    }
}

/* One shape: rows x cols weights of type t (quantized from floats or raw random blocks),
 * n_tok tokens; y written for rows [r0, rows) only, the rest must stay untouched. */
static void check_shape(sg_dtype t, int rows, int64_t cols, int n_tok, int r0, bool raw) {
    size_t rb = dtype_row_bytes(t, (uint64_t)cols);
    unsigned char *w = malloc(rb * (size_t)rows);
    float *wf = malloc((size_t)cols * sizeof(float));
    for (int r = 0; r < rows; r++) {
        if (raw) random_blocks(t, w + rb * (size_t)r, cols);
        else {
            for (int64_t i = 0; i < cols; i++) wf[i] = frand() * (r % 5 == 0 ? 3.0f : 1.0f);
            CHECK(kern_from_f32(t, wf, w + rb * (size_t)r, cols) == 0);
        }
    }
    int64_t xs = cols + 5, ys = rows + 3;   /* strides wider than the rows */
    float *x = malloc((size_t)(xs * n_tok) * sizeof(float));
    for (int64_t i = 0; i < xs * n_tok; i++) x[i] = frand() * (i % 13 == 0 ? 6.0f : 1.0f);   /* some outliers */
    float *y = malloc((size_t)(ys * n_tok) * sizeof(float));
    for (int64_t i = 0; i < ys * n_tok; i++) y[i] = -12345.0f;
    bool took = kern_gemm_vnni(t, w, rb, cols, x, xs, n_tok, y, ys, r0, rows);
    CHECK_MSG(took, "%s declined rows %d cols %lld tokens %d", dtype_info(t)->name, rows, (long long)cols, n_tok);
    if (!took) { free(w); free(wf); free(x); free(y); return; }

    double *xq = malloc((size_t)cols * sizeof(double)), *dq = malloc((size_t)cols * sizeof(double));
    float *deq = malloc((size_t)cols * sizeof(float)), *m = malloc((size_t)(cols / 32) * sizeof(float));
    int bad_emul = 0, bad_float = 0, bad_untouched = 0;
    for (int t_ = 0; t_ < n_tok; t_++) {
        const float *xt = x + t_ * xs;
        emulate_acts(xt, cols, xq, dq);
        for (int r = 0; r < rows + 3; r++) {
            float got = y[t_ * ys + r];
            if (r < r0 || r >= rows) { bad_untouched += got != -12345.0f; continue; }
            const unsigned char *row = w + rb * (size_t)r;
            kern_to_f32(t, row, deq, cols);
            row_offsets(t, row, cols, m);
            /* the kernel's numerics: w times the quantized x, with w = s * q + m taken
             * apart (q * x in integers, m * the sum of 32 quantized x in float) */
            double emul = 0, mag = 0, bound = 0;
            for (int64_t i = 0; i < cols; i++) {
                double wq = (double)deq[i] - m[i / 32];
                emul += (double)deq[i] * xq[i];
                mag += fabs(wq * xq[i]) + fabs((double)m[i / 32] * xq[i]);
                bound += fabs((double)deq[i]) * dq[i] / 2;   /* x off by at most half a step of its 16's scale */
            }
            double ref = kern_scalar.dot[t](row, xt, cols);
            /* float rounding: the int32 sums are exact, each 16's share is scaled and added
             * in float (a few roundings of ~6e-8 each relative to the magnitudes summed) */
            double tol = 1e-5 * mag + 1e-6;
            if (fabs(got - emul) > tol && bad_emul++ < 3)
                fprintf(stderr, "    %s r=%d t=%d cols=%lld: %.9g, emulated %.9g\n", dtype_info(t)->name, r, t_, (long long)cols, got, emul);
            if (fabs(got - ref) > bound + tol && bad_float++ < 3)
                fprintf(stderr, "    %s r=%d t=%d cols=%lld: %.9g, float %.9g, bound %.3g\n", dtype_info(t)->name, r, t_, (long long)cols, got, ref, bound);
        }
    }
    CHECK_MSG(bad_emul == 0, "%s rows %d cols %lld tokens %d raw %d: %d off the emulation", dtype_info(t)->name, rows, (long long)cols, n_tok, raw, bad_emul);
    CHECK_MSG(bad_float == 0, "%s rows %d cols %lld tokens %d raw %d: %d past the int8 bound", dtype_info(t)->name, rows, (long long)cols, n_tok, raw, bad_float);
    CHECK_MSG(bad_untouched == 0, "%s: %d values outside rows [%d, %d) written", dtype_info(t)->name, bad_untouched, r0, rows);
    free(xq); free(dq); free(deq); free(m);
    free(w); free(wf); free(x); free(y);
}

static void test_types(void) {
    if (!cpu_has_vnni()) { tu_skip("no AVX-512 VNNI on this CPU: only the declines are checked"); return; }
    /* (rows, cols, tokens, first row): rows not a multiple of 16, token counts around the
     * 8-token tiles, and for the 32-block types rows that are not whole 256-blocks */
    static const struct { int rows; int cols; int tok; int r0; } shapes[] = {
        {37, 256, 8, 0}, {21, 512, 17, 0}, {50, 2304, 255, 32}, {16, 768, 300, 0}, {70, 1024, 9, 64},
        {5, 288, 13, 0}, {33, 96, 8, 0}, {40, 11008, 10, 32},
    };
    for (size_t ti = 0; ti < sizeof handled / sizeof handled[0]; ti++) {
        sg_dtype t = handled[ti];
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            if (shapes[s].cols % (int)dtype_info(t)->block_size) continue;
            for (int raw = 0; raw < 2; raw++)
                check_shape(t, shapes[s].rows, shapes[s].cols, shapes[s].tok, shapes[s].r0, raw);
        }
    }
}

/* F32 / F16 / BF16: the float path computes the same products as the float dot, summed
 * in another order, so float rounding apart (a few ulps of the magnitudes summed) they
 * agree. */
static void check_float(sg_dtype t, int rows, int64_t cols, int n_tok, int r0) {
    size_t rb = dtype_row_bytes(t, (uint64_t)cols);
    unsigned char *w = malloc(rb * (size_t)rows);
    float *wf = malloc((size_t)cols * sizeof(float));
    for (int r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++) wf[i] = frand() * (r % 3 == 0 ? 5.0f : 1.0f);
        CHECK(kern_from_f32(t, wf, w + rb * (size_t)r, cols) == 0);
    }
    int64_t xs = cols + 3, ys = rows + 5;
    float *x = malloc((size_t)(xs * n_tok) * sizeof(float)), *y = malloc((size_t)(ys * n_tok) * sizeof(float));
    for (int64_t i = 0; i < xs * n_tok; i++) x[i] = frand();
    for (int64_t i = 0; i < ys * n_tok; i++) y[i] = -12345.0f;
    bool took = kern_gemm_vnni(t, w, rb, cols, x, xs, n_tok, y, ys, r0, rows);
    CHECK_MSG(took, "%s declined rows %d cols %lld tokens %d", dtype_info(t)->name, rows, (long long)cols, n_tok);
    float *deq = malloc((size_t)cols * sizeof(float));
    int bad = 0, bad_untouched = 0;
    for (int t_ = 0; took && t_ < n_tok; t_++)
        for (int r = 0; r < rows + 5; r++) {
            float got = y[t_ * ys + r];
            if (r < r0 || r >= rows) { bad_untouched += got != -12345.0f; continue; }
            kern_to_f32(t, w + rb * (size_t)r, deq, cols);
            double exact = 0, mag = 0;
            for (int64_t i = 0; i < cols; i++) { exact += (double)deq[i] * x[t_ * xs + i]; mag += fabs((double)deq[i] * x[t_ * xs + i]); }
            if (fabs(got - exact) > 1e-5 * mag + 1e-6 && bad++ < 3)
                fprintf(stderr, "    %s r=%d t=%d cols=%lld: %.9g, exact %.9g\n", dtype_info(t)->name, r, t_, (long long)cols, got, exact);
        }
    CHECK_MSG(bad == 0, "%s rows %d cols %lld tokens %d: %d off", dtype_info(t)->name, rows, (long long)cols, n_tok, bad);
    CHECK_MSG(bad_untouched == 0, "%s: %d values outside rows [%d, %d) written", dtype_info(t)->name, bad_untouched, r0, rows);
    free(w); free(wf); free(x); free(y); free(deq);
}

static void test_float_types(void) {
    if (!cpu_has_vnni()) { tu_skip("no AVX-512 VNNI on this CPU: only the declines are checked"); return; }
    static const struct { int rows; int cols; int tok; int r0; } shapes[] = {
        {37, 256, 8, 0}, {21, 100, 17, 0}, {70, 2304, 255, 32}, {32, 13, 300, 0}, {45, 777, 9, 32}, {3, 2048, 12, 0},
    };
    static const sg_dtype types[] = {SG_F32, SG_F16, SG_BF16};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_float(types[ti], shapes[s].rows, shapes[s].cols, shapes[s].tok, shapes[s].r0);
}

static void test_declines(void) {
    float x[8 * 256] = {0}, y[8 * 16];
    unsigned char blocks[16 * 84] = {0};
    CHECK(!kern_gemm_vnni(SG_Q2_K, blocks, 84, 256, x, 256, 1, y, 16, 0, 16));   /* a type it does not handle */
    CHECK(!kern_gemm_vnni(SG_Q4_0, blocks, 18 * 3, 96, x, 96, 8, y, 16, 0, 0));   /* no rows */
    CHECK(!kern_gemm_vnni(SG_Q4_0, blocks, 18 * 3, 96, x, 96, 0, y, 16, 0, 16));  /* no tokens */
    if (!cpu_has_vnni()) {   /* and every type on a CPU without VNNI */
        static const sg_dtype flt[] = {SG_F32, SG_F16, SG_BF16};
        for (size_t ti = 0; ti < 3; ti++) {
            static float wf[16 * 256], xs[8 * 256], ys[8 * 16];
            CHECK(!kern_gemm_vnni(flt[ti], wf, dtype_row_bytes(flt[ti], 256), 256, xs, 256, 8, ys, 16, 0, 16));
        }
        for (size_t ti = 0; ti < sizeof handled / sizeof handled[0]; ti++) {
            static unsigned char wq[16 * 210];
            static float xs[8 * 256], ys[8 * 16];
            CHECK(!kern_gemm_vnni(handled[ti], wq, dtype_row_bytes(handled[ti], 256), 256, xs, 256, 8, ys, 16, 0, 16));
        }
    }
}

/* ---- end to end: logits on llama.cpp's quantized reference files ---- */

static const char *ref_dir(void) { return tu_path("%s/reference/llama-tiny", tu_shared()); }

static int32_t g_ids[256];
static int g_n_ids;

static int load_ids(void) {
    json_t *j = json_load_file(tu_path("%s/reference.json", ref_dir()), 0, NULL);
    if (!j) return -1;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(j, "input_ids"), i, v) if (g_n_ids < 256) g_ids[g_n_ids++] = (int32_t)json_integer_value(v);
    json_decref(j);
    return 0;
}

static float *logits_of(const sg_model *m) {
    sg_infer_params p;
    infer_params_default(&p);
    p.kv_type = SG_F32;
    p.n_threads = 2;
    sg_error err = {{0}};
    sg_infer *s = infer_new(m, &p, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    if (!s) return NULL;
    float *lg = malloc((size_t)g_n_ids * m->cfg.n_vocab * sizeof(float));
    CHECK_MSG(infer_eval(s, g_ids, g_n_ids, lg, true, &err) == 0, "%s", err.msg);
    infer_free(s);
    return lg;
}

/* max |a - b| / max |ref|, as the reference README measures deviations */
static double deviation(const float *a, const float *b, const float *ref, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md || isnan(d) ? (isnan(d) ? INFINITY : d) : md;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return md / mr;
}

static void test_reference_logits(void) {
    if (!cpu_has_vnni()) { tu_skip("no AVX-512 VNNI on this CPU: logits not checked"); return; }
    CHECK(load_ids() == 0);
    CHECK(g_n_ids >= KERN_GEMM_MIN_TOKENS);   /* else the kernel would not be called */
    setenv("SMOLGATE_GEMM", "vnni", 1);
    unsetenv("SMOLGATE_INT8");
    kern_select(NULL);
    CHECK(kern_active()->gemm == kern_gemm_vnni);
    static const char *types[] = {"Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K"};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        sg_error err = {{0}};
        sg_model *m = model_load(tu_path("%s/gguf/llama-tiny-%s.gguf", ref_dir(), types[k]), &err);
        float *exact = tu_read(tu_path("%s/gguf/logits-exact-%s.bin", ref_dir(), types[k]), NULL);
        float *lcpp = tu_read(tu_path("%s/gguf/logits-llamacpp-%s.bin", ref_dir(), types[k]), NULL);
        CHECK_MSG(m && exact && lcpp, "%s: %s", types[k], err.msg);
        if (m && exact && lcpp) {
            size_t n = (size_t)g_n_ids * m->cfg.n_vocab;
            double bar = deviation(lcpp, exact, exact, n);
            float *lg = logits_of(m);
            double dev = lg ? deviation(lg, exact, exact, n) : INFINITY;
            printf("  %-7s deviation from exact with avx512-vnni gemm: %.4f (llama.cpp %.4f)\n", types[k], dev, bar);
            CHECK_MSG(dev <= bar, "%s: %.3g, llama.cpp %.3g", types[k], dev, bar);
            free(lg);
        }
        model_free(m);
        free(exact);
        free(lcpp);
    }
    unsetenv("SMOLGATE_GEMM");
    kern_select(NULL);
}

/* SMOLGATE_GEMM=vnni picks this kernel where the CPU has VNNI; SMOLGATE_INT8=0 (the
 * float reference numerics) leaves it out, since its activations are int8. */
static void test_select(void) {
    setenv("SMOLGATE_GEMM", "vnni", 1);
    unsetenv("SMOLGATE_INT8");
    kern_select(NULL);
    if (cpu_has_vnni()) {
        CHECK(kern_active()->gemm == kern_gemm_vnni);
        CHECK_EQ_STR(kern_active()->gemm_name, "avx512-vnni");
    } else {
        CHECK(kern_active()->gemm == NULL);
    }
    setenv("SMOLGATE_INT8", "0", 1);
    kern_select(NULL);
    CHECK(kern_active()->gemm == NULL);
    unsetenv("SMOLGATE_INT8");
    unsetenv("SMOLGATE_GEMM");
    kern_select(NULL);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_declines);
    RUN(test_types);
    RUN(test_float_types);
    RUN(test_select);
    RUN(test_reference_logits);
    return tu_finish(argv[0]);
}
