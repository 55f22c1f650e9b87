/* test_gemm.c: the matrix-matrix prompt kernels (kernels.h's kern_gemm_fn) against the
 * scalar float reference, for every weight type, on random weights and odd shapes (row
 * ranges that end mid-tile, token counts that are not multiples of 16, columns that
 * span several K blocks or end mid-block), and kern_select's SMOLGATE_GEMM switch.
 * The AMX kernel has two numerics (kernels.h): exact, held to the float reference's
 * rounding, and fast (bf16 weights and activations, the default beside the integer
 * dots), held to the bound bf16 rounding implies.
 *
 * Where AMX is not available (CPU or OS), the test says so and checks that
 * kern_gemm_amx declines every call, so that the row path runs instead. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dtype.h"
#include "engine/kernels.h"
#include "testutil.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void) {   /* uniform in [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static const sg_dtype all_types[] = {SG_F32, SG_F16, SG_BF16, SG_Q4_0, SG_Q4_1, SG_Q5_0, SG_Q5_1,
                                     SG_Q8_0, SG_Q4_K, SG_Q5_K, SG_Q6_K};

#define SENTINEL 1234.5f

/* SMOLGATE_INT8 as the test was started with, put back after the tests that switch it. */
static char g_int8_env[16];
static bool g_int8_set;
static void set_int8(bool on) {
    if (on) unsetenv("SMOLGATE_INT8");
    else setenv("SMOLGATE_INT8", "0", 1);
}
static void restore_int8(void) {
    if (g_int8_set) setenv("SMOLGATE_INT8", g_int8_env, 1);
    else unsetenv("SMOLGATE_INT8");
    kern_select(NULL);
}

/* One case: W (rows x cols, type t) quantized from random floats, x (n_tok x cols, row
 * stride cols + 3), y with row stride rows + 5 prefilled with SENTINEL; the kernel runs on
 * rows r0 .. r1. Checks, against the exact double sum of the dequantized products:
 * exact (bf16 false):
 *   - each output within 1e-5 * sum|w x| (+1e-6): the bound test_kernels holds every
 *     SIMD dot to; float accumulation over a few thousand terms stays well inside it;
 *   - the RMS error over all outputs at most 2x the scalar float dot's (+1e-7 of the RMS
 *     output): the kernel carries products to ~2^-24 (activations split exactly into
 *     three bf16 parts, weights into as many as their bits need), so what remains is
 *     float accumulation as in the reference. A two-part split (2^-18 per product) would
 *     fail this at these lengths;
 * bf16 (the fast mode, weights and activations each rounded to bf16):
 *   - each output within 2^-7 * sum|w x| (+ the float bound above): a bf16 rounding is
 *     at most 2^-8 relative, so a product of two is off by at most ~2^-7 of itself;
 *   - the RMS error at most 2^-8 * RMS(sqrt(sum (w x)^2)): independent roundings add
 *     in quadrature, each product's RMS relative error is ~2^-8 / sqrt(3), so this has
 *     ~1.7x margin, and a bias or a lost term (whole products off) fails it;
 * both:
 *   - nothing outside rows r0 .. r1 and tokens 0 .. n_tok written. */
static void check_case_mode(kern_gemm_fn gemm, const char *name, bool bf16, sg_dtype t, int64_t rows, int64_t r0,
                            int64_t r1, int64_t cols, int n_tok) {
    int64_t xs = cols + 3, ys = rows + 5;
    uint64_t rb = dtype_row_bytes(t, (uint64_t)cols);
    unsigned char *w = malloc(rb * (size_t)rows);
    float *wf = malloc((size_t)(rows * cols) * sizeof(float)), *tmp = malloc((size_t)cols * sizeof(float));
    float *x = malloc((size_t)(n_tok * xs) * sizeof(float)), *y = malloc((size_t)(n_tok * ys) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        float scale = r % 7 == 3 ? 100.0f : r % 7 == 5 ? 0.001f : 1.0f;   /* rows of different magnitudes */
        for (int64_t i = 0; i < cols; i++) tmp[i] = frand() * scale;
        CHECK(kern_from_f32(t, tmp, w + (size_t)r * rb, cols) == 0);
        kern_to_f32(t, w + (size_t)r * rb, wf + r * cols, cols);
    }
    for (int64_t i = 0; i < n_tok * xs; i++) x[i] = frand() * (i % 13 == 0 ? 30.0f : 1.0f);
    for (int64_t i = 0; i < n_tok * ys; i++) y[i] = SENTINEL;

    bool took = gemm(t, w, rb, cols, x, xs, n_tok, y, ys, r0, r1);
    CHECK_MSG(took, "%s %s %lldx%lld rows %lld..%lld, %d tokens: declined", name, dtype_info(t)->name,
              (long long)rows, (long long)cols, (long long)r0, (long long)r1, n_tok);
    if (took) {
        double e_k = 0, e_s = 0, sq = 0, worst = 0, p2 = 0;
        int64_t bad = 0, stray = 0;
        for (int tk = 0; tk < n_tok; tk++)
            for (int64_t r = 0; r < ys; r++) {
                float got = y[tk * ys + r];
                if (r < r0 || r >= r1) { stray += got != SENTINEL; continue; }
                const float *xr = x + tk * xs, *wr = wf + r * cols;
                double exact = 0, mag = 0;
                for (int64_t i = 0; i < cols; i++) {
                    double pr = (double)wr[i] * xr[i];
                    exact += pr;
                    mag += fabs(pr);
                    p2 += pr * pr;
                }
                float ref = kern_scalar.dot[t](w + (size_t)r * rb, xr, cols);
                double d = fabs(got - exact);
                if (!(d <= (bf16 ? 0x1p-7 + 1e-5 : 1e-5) * mag + 1e-6)) bad++;
                if (d / (mag + 1e-30) > worst) worst = d / (mag + 1e-30);
                e_k += d * d;
                e_s += (ref - exact) * (ref - exact);
                sq += exact * exact;
            }
        int64_t n = (r1 - r0) * n_tok;
        double rms_k = sqrt(e_k / n), rms_s = sqrt(e_s / n), rms = sqrt(sq / n);
        CHECK_MSG(bad == 0, "%s %s %lldx%lld rows %lld..%lld, %d tokens: %lld outputs off, worst %.3g of sum|wx|", name,
                  dtype_info(t)->name, (long long)rows, (long long)cols, (long long)r0, (long long)r1, n_tok,
                  (long long)bad, worst);
        if (bf16)
            CHECK_MSG(rms_k <= 0x1p-8 * sqrt(p2 / n) + 1e-7 * rms,
                      "%s %s %lldx%lld, %d tokens: RMS error %.3g, bf16 rounding bound %.3g", name, dtype_info(t)->name,
                      (long long)rows, (long long)cols, n_tok, rms_k, 0x1p-8 * sqrt(p2 / n));
        else
            CHECK_MSG(rms_k <= 2 * rms_s + 1e-7 * rms, "%s %s %lldx%lld, %d tokens: RMS error %.3g, scalar float dot %.3g",
                      name, dtype_info(t)->name, (long long)rows, (long long)cols, n_tok, rms_k, rms_s);
        CHECK_MSG(stray == 0, "%s %s: %lld values written outside rows %lld..%lld", name, dtype_info(t)->name,
                  (long long)stray, (long long)r0, (long long)r1);
    }
    free(w); free(wf); free(tmp); free(x); free(y);
}

/* Both AMX numerics on one case: exact for every type, fast where it is defined
 * (block-quantized weights; for the others kern_gemm_amx_fast is the exact kernel). */
static void check_case(sg_dtype t, int64_t rows, int64_t r0, int64_t r1, int64_t cols, int n_tok) {
    check_case_mode(kern_gemm_amx_exact, "amx exact", false, t, rows, r0, r1, cols, n_tok);
    check_case_mode(kern_gemm_amx_fast, "amx fast", quant_supports(t), t, rows, r0, r1, cols, n_tok);
}

static void test_amx_all_types(void) {
    if (!kern_amx_available()) {
        tu_skip("AMX kernels not exercised: AMX not available here (CPU without AMX-BF16 / AVX512-BF16, "
                "or the OS refused the tile state); checking that kern_gemm_amx declines");
        float w[64] = {0}, x[64 * 16] = {0}, y[64 * 16];
        CHECK(!kern_gemm_amx(SG_F32, w, 64 * sizeof(float), 64, x, 64, 16, y, 1, 0, 1));
        return;
    }
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        sg_dtype t = all_types[ti];
        int64_t bs = (int64_t)dtype_info(t)->block_size;
        /* columns: one step, several K blocks with a partial last one (the kernel blocks K
         * by 512), and for plain types lengths that end mid-step */
        int64_t c_small = bs == 256 ? 256 : bs == 32 ? 96 : 100;
        int64_t c_big = bs == 256 ? 1280 : bs == 32 ? 1056 : 1061;
        check_case(t, 45, 0, 45, c_small, 8);       /* rows end mid-tile */
        check_case(t, 100, 32, 100, c_small, 17);   /* r0 > 0, one token past a tile */
        check_case(t, 64, 32, 64, c_big, 255);
        check_case(t, 300, 0, 300, bs == 1 ? 33 : bs, 300);   /* two row bands */
    }
    check_case(SG_Q4_K, 70, 64, 70, 2048, 40);   /* a last chunk of 6 rows, K of the 3B model */
    /* types and lengths the kernel does not take: declined, not miscomputed */
    float x[16 * 48] = {0}, y[16] = {0};
    quant_q4_K blk[1];
    memset(blk, 0, sizeof blk);
    CHECK(!kern_gemm_amx(SG_Q4_K, blk, sizeof blk, 48, x, 48, 16, y, 1, 0, 1));   /* not whole blocks */
    CHECK(!kern_gemm_amx_fast(SG_Q4_K, blk, sizeof blk, 48, x, 48, 16, y, 1, 0, 1));
    CHECK(!kern_gemm_amx_exact(SG_Q4_K, blk, sizeof blk, 48, x, 48, 16, y, 1, 0, 1));
}

/* SMOLGATE_GEMM: 0 turns the matrix-matrix kernel off, amx / vnni force one (none when
 * the CPU lacks it), unset picks AMX where available. */
static void test_select(void) {
    setenv("SMOLGATE_GEMM", "0", 1);
    kern_select(NULL);
    CHECK(kern_active()->gemm == NULL);
    setenv("SMOLGATE_GEMM", "amx", 1);
    kern_select(NULL);
    if (kern_amx_available()) {
        CHECK(kern_active()->gemm == kern_gemm_amx);
        CHECK_EQ_STR(kern_active()->gemm_name, "amx");
    } else {
        CHECK(kern_active()->gemm == NULL);
    }
    setenv("SMOLGATE_GEMM", "vnni", 1);
    kern_select(NULL);
    CHECK(kern_active()->gemm != kern_gemm_amx);
    if (kern_active()->gemm) CHECK_EQ_STR(kern_active()->gemm_name, "avx512-vnni");
    else printf("  no AVX-512 VNNI here: SMOLGATE_GEMM=vnni leaves the row path\n");
    unsetenv("SMOLGATE_GEMM");
    kern_select(NULL);
    CHECK(kern_active()->gemm == (kern_amx_available() ? kern_gemm_amx : kern_active()->gemm));
    if (kern_amx_available()) CHECK(kern_active()->gemm == kern_gemm_amx);
    printf("  default matrix-matrix kernel: %s\n", kern_active()->gemm_name ? kern_active()->gemm_name : "none");
    kern_select("scalar");
    CHECK(kern_active()->gemm == NULL || kern_amx_available());   /* the scalar table is the reference: no gemm */
    kern_select(NULL);
}

/* Through kern_matmul_rows, as the forward pass calls it: the gemm takes the call from
 * KERN_GEMM_MIN_TOKENS tokens on, and the result matches the float row path's: to float
 * rounding with the integer dots off (SMOLGATE_INT8=0: AMX runs exact), within bf16
 * rounding (2^-7 of sum |w x|, see check_case_mode) with them on (AMX runs fast). */
static void check_matmul_rows(bool int8) {
    set_int8(int8);
    kern_select(NULL);
    const kern_table *k = kern_active();
    if (!k->gemm) { printf("  no matrix-matrix kernel selected: row path only\n"); restore_int8(); return; }
    bool fast = k->gemm == kern_gemm_amx && k->qdot[SG_Q6_K];
    int64_t rows = 96, cols = 512;
    int n = 20;
    uint64_t rb = dtype_row_bytes(SG_Q6_K, (uint64_t)cols);
    unsigned char *w = malloc(rb * (size_t)rows);
    float *tmp = malloc((size_t)cols * sizeof(float)), *x = malloc((size_t)(n * cols) * sizeof(float));
    float *y1 = malloc((size_t)(n * rows) * sizeof(float)), *y2 = malloc((size_t)(n * rows) * sizeof(float));
    float *wf = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++) tmp[i] = frand();
        kern_from_f32(SG_Q6_K, tmp, w + (size_t)r * rb, cols);
        kern_to_f32(SG_Q6_K, w + (size_t)r * rb, wf + r * cols, cols);
    }
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand();
    kern_table rows_only = *k;
    rows_only.gemm = NULL;
    memset(rows_only.qdot, 0, sizeof rows_only.qdot);   /* the float dots: the reference numerics */
    kern_matmul_rows(k, SG_Q6_K, w, rb, cols, x, cols, n, y1, rows, 0, rows);
    kern_matmul_rows(&rows_only, SG_Q6_K, w, rb, cols, x, cols, n, y2, rows, 0, rows);
    double md = 0, mx = 0, worst = 0;
    for (int64_t i = 0; i < n * rows; i++) {
        md = fmax(md, fabs((double)y1[i] - y2[i]));
        mx = fmax(mx, fabs((double)y2[i]));
    }
    for (int tk = 0; tk < n; tk++)
        for (int64_t r = 0; r < rows; r++) {
            double mag = 0;
            for (int64_t i = 0; i < cols; i++) mag += fabs((double)wf[r * cols + i] * x[tk * cols + i]);
            worst = fmax(worst, fabs((double)y1[tk * rows + r] - y2[tk * rows + r]) / (mag + 1e-30));
        }
    /* the VNNI kernel (chosen where AMX is missing, or by SMOLGATE_GEMM=vnni) quantizes
     * activations to int8 with a scale per 16: each within 1/254 of its 16's largest,
     * about 2^-7 of sum |w x| for these inputs in the worst case */
    bool vnni = k->gemm == kern_gemm_vnni;
    if (vnni)
        CHECK_MSG(worst <= 0x1p-6, "%s gemm vs float row path: worst %.3g of sum|wx|", k->gemm_name, worst);
    else if (fast)
        CHECK_MSG(worst <= 0x1p-7 + 2e-5, "%s gemm (fast) vs float row path: worst %.3g of sum|wx|", k->gemm_name, worst);
    else
        CHECK_MSG(md <= 1e-5 * mx, "%s gemm vs float row path: max diff %.3g of %.3g", k->gemm_name, md, mx);
    printf("  %s%s vs the float row path: max diff %.3g of max |y| %.3g, worst %.3g of sum|wx|\n", k->gemm_name,
           fast ? " (fast)" : int8 ? "" : " (SMOLGATE_INT8=0)", md, mx, worst);
    free(w); free(wf); free(tmp); free(x); free(y1); free(y2);
    restore_int8();
}

static void test_matmul_rows(void) {
    check_matmul_rows(true);
    check_matmul_rows(false);
    /* the kernel a CPU without AMX gets (Zen 4), forced where both are */
    setenv("SMOLGATE_GEMM", "vnni", 1);
    check_matmul_rows(true);
    unsetenv("SMOLGATE_GEMM");
    kern_select(NULL);
}

/* kern_gemm_amx follows the integer path's switch per weight type. */
static void test_mode(void) {
    if (!kern_amx_available()) { tu_skip("AMX mode switch: AMX not available here"); return; }
    int64_t rows = 32, cols = 256;
    int n = 16;
    uint64_t rb = dtype_row_bytes(SG_Q4_K, (uint64_t)cols);
    unsigned char *w = malloc(rb * (size_t)rows);
    float *tmp = malloc((size_t)cols * sizeof(float)), *x = malloc((size_t)(n * cols) * sizeof(float));
    float *y[3];
    for (int i = 0; i < 3; i++) y[i] = malloc((size_t)(n * rows) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < cols; i++) tmp[i] = frand();
        kern_from_f32(SG_Q4_K, tmp, w + (size_t)r * rb, cols);
    }
    for (int64_t i = 0; i < n * cols; i++) x[i] = frand();
    CHECK(kern_gemm_amx_exact(SG_Q4_K, w, rb, cols, x, cols, n, y[0], rows, 0, rows));
    CHECK(kern_gemm_amx_fast(SG_Q4_K, w, rb, cols, x, cols, n, y[1], rows, 0, rows));
    CHECK(memcmp(y[0], y[1], (size_t)(n * rows) * sizeof(float)) != 0);   /* the modes do differ */
    for (int int8 = 0; int8 < 2; int8++) {
        set_int8(int8);
        kern_select(NULL);
        CHECK(kern_gemm_amx(SG_Q4_K, w, rb, cols, x, cols, n, y[2], rows, 0, rows));
        CHECK_MSG(!memcmp(y[2], y[int8], (size_t)(n * rows) * sizeof(float)), "SMOLGATE_INT8=%s: wrong AMX mode",
                  int8 ? "unset" : "0");
    }
    restore_int8();
    free(w); free(tmp); free(x);
    for (int i = 0; i < 3; i++) free(y[i]);
}

int main(void) {
    const char *int8 = getenv("SMOLGATE_INT8");
    if ((g_int8_set = int8 != NULL)) snprintf(g_int8_env, sizeof g_int8_env, "%s", int8);
    kern_select(NULL);
    printf("kernels: %s, matrix-matrix: %s, AMX %s\n", kern_active()->name,
           kern_active()->gemm_name ? kern_active()->gemm_name : "none",
           kern_amx_available() ? "available" : "not available");
    RUN(test_amx_all_types);
    RUN(test_select);
    RUN(test_matmul_rows);
    RUN(test_mode);
    return tu_finish("test_gemm");
}
