/* bench_gemm.c: prompt-processing matmul throughput on one thread, for SmolLM3-3B's
 * weight shapes (q/o projections 2048x2048, gate/up 11008x2048, down 2048x11008; rows x
 * columns) at 256 tokens (a default prefill step), per weight type: the AMX matrix-matrix
 * kernel in its default mode (kern_gemm_amx: fast for block-quantized types, gemm_amx.c)
 * and its exact mode (kern_gemm_amx_exact, what SMOLGATE_INT8=0 runs), and the AVX-512
 * VNNI kernel CPUs without AMX get (kern_gemm_vnni, gemm_vnni.c), against the
 * row-by-row path kern_matmul_rows takes without one (the integer qdotn dots where the
 * type has them, else the float dots). A column is "-" where the CPU lacks its kernel.
 * Prints GFLOP/s (2 * rows * cols * tokens per call), medians of a few calls since the
 * machine is shared; asserts nothing.
 *
 * Weights are random blocks with sane f16 scales (speed does not depend on the values,
 * and quantizing 22M weights with the reference quantizer would take longer than the
 * benchmark), in 4 KiB pages as a mapped model file's are (the TLB is part of the cost). SMOLGATE_BENCH_TOKENS overrides the token count; SMOLGATE_BENCH_TYPE (a type
 * name, e.g. Q4_K) and SMOLGATE_BENCH_AMX_ONLY=1 narrow the run, for profiling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "engine/dtype.h"
#include "engine/kernels.h"

#define N_RUNS 3

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t next(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 32);
}
static float frand(void) { return (float)next() / 2147483648.0f - 1.0f; }   /* [-1, 1) */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A rows x cols matrix of type t: random bytes, f16 fields set to small finite scales. */
static void *random_matrix(sg_dtype t, int64_t rows, int64_t cols) {
    const sg_dtype_info *ti = dtype_info(t);
    size_t bytes = dtype_row_bytes(t, (uint64_t)cols) * (size_t)rows;
    unsigned char *p = malloc(bytes);
#ifdef MADV_NOHUGEPAGE
    madvise((void *)((uintptr_t)p & ~(uintptr_t)4095), bytes + 4096, MADV_NOHUGEPAGE);
#endif
    if (t == SG_F16 || t == SG_BF16) {
        uint16_t *h = (uint16_t *)p;
        for (size_t i = 0; i < bytes / 2; i++) h[i] = t == SG_F16 ? sg_f32_to_f16(frand() * 0.05f) : sg_f32_to_bf16(frand() * 0.05f);
        return p;
    }
    for (size_t i = 0; i < bytes; i++) p[i] = (unsigned char)next();
    int f16_off[2] = {0, -1};
    if (t == SG_Q4_1 || t == SG_Q5_1 || t == SG_Q4_K || t == SG_Q5_K) f16_off[1] = 2;
    if (t == SG_Q6_K) f16_off[0] = 208;
    for (size_t b = 0; b < bytes / ti->type_size; b++)
        for (int k = 0; k < 2; k++)
            if (f16_off[k] >= 0) {
                uint16_t h = sg_f32_to_f16(frand() * 0.001f);
                memcpy(p + b * ti->type_size + f16_off[k], &h, 2);
            }
    return p;
}

/* Median seconds of one full matmul (all rows, n_tok tokens) through table k. */
static double time_matmul(const kern_table *k, sg_dtype t, const void *w, int64_t rows, int64_t cols,
                          const float *x, int n_tok, float *y) {
    double s[N_RUNS];
    uint64_t rb = dtype_row_bytes(t, (uint64_t)cols);
    kern_matmul_rows(k, t, w, rb, cols, x, cols, n_tok, y, rows, 0, rows);   /* warm-up: buffers, page faults */
    for (int i = 0; i < N_RUNS; i++) {
        double t0 = now_s();
        kern_matmul_rows(k, t, w, rb, cols, x, cols, n_tok, y, rows, 0, rows);
        s[i] = now_s() - t0;
    }
    qsort(s, N_RUNS, sizeof s[0], cmp_d);
    return s[N_RUNS / 2];
}

int main(void) {
    const char *env = getenv("SMOLGATE_BENCH_TOKENS");
    int n_tok = env && atoi(env) > 0 ? atoi(env) : 256;
    kern_select(NULL);
    kern_table rows_path = *kern_active();
    rows_path.gemm = NULL;
    kern_table amx = rows_path, exact = rows_path, vnni = rows_path;
    amx.gemm = kern_gemm_amx;
    exact.gemm = kern_gemm_amx_exact;
    vnni.gemm = kern_gemm_vnni;
    bool have_amx = kern_amx_available();
    __builtin_cpu_init();
    bool have_vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
    printf("bench_gemm: %d tokens, 1 thread, table %s; GFLOP/s (2 * rows * cols * tokens / time)\n", n_tok,
           rows_path.name);
    if (!have_amx) printf("  AMX not available on this CPU / OS\n");
    static const struct { int64_t rows, cols; } shapes[] = {{2048, 2048}, {11008, 2048}, {2048, 11008}};
    static const sg_dtype types[] = {SG_Q4_K, SG_Q6_K, SG_Q8_0, SG_Q4_0, SG_F16};
    printf("  %-6s %-12s %10s %10s %10s %10s\n", "type", "rows x cols", "rows", "vnni", "amx", "amx exact");
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int64_t rows = shapes[si].rows, cols = shapes[si].cols;
            sg_dtype t = types[ti];
            const char *only = getenv("SMOLGATE_BENCH_TYPE");
            if (only && *only && strcmp(only, dtype_info(t)->name)) continue;
            const char *amx_only = getenv("SMOLGATE_BENCH_AMX_ONLY");
            void *w = random_matrix(t, rows, cols);
            float *x = malloc((size_t)n_tok * cols * sizeof(float)), *y = malloc((size_t)n_tok * rows * sizeof(float));
            for (int64_t i = 0; i < n_tok * cols; i++) x[i] = frand();
            double flop = 2.0 * (double)rows * (double)cols * n_tok;
            bool skip_rows = amx_only && !strcmp(amx_only, "1") && have_amx;
            double t_rows = skip_rows ? 0 : time_matmul(&rows_path, t, w, rows, cols, x, n_tok, y);
            double t_vnni = have_vnni && !skip_rows ? time_matmul(&vnni, t, w, rows, cols, x, n_tok, y) : 0;
            double t_amx = have_amx ? time_matmul(&amx, t, w, rows, cols, x, n_tok, y) : 0;
            double t_exact = have_amx ? time_matmul(&exact, t, w, rows, cols, x, n_tok, y) : 0;
            char shape[32], col[4][16];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
            double ts[4] = {t_rows, t_vnni, t_amx, t_exact};
            for (int c = 0; c < 4; c++) {
                if (ts[c] > 0) snprintf(col[c], sizeof col[c], "%.1f", flop / ts[c] * 1e-9);
                else snprintf(col[c], sizeof col[c], "-");
            }
            printf("  %-6s %-12s %10s %10s %10s %10s\n", dtype_info(t)->name, shape, col[0], col[1], col[2], col[3]);
            fflush(stdout);
            free(w);
            free(x);
            free(y);
        }
    return 0;
}
