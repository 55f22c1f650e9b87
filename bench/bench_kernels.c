/* bench_kernels.c: one thread's decode matmul speed per weight type, as GB/s of weights
 * read: "hot" with a 1 MiB matrix that stays in L2 (the kernel's compute ceiling) and
 * "stream" with a 512 MiB one read once per pass (what decode sees). Decode is bound by
 * whichever is lower; a hot figure below the machine's per-core memory bandwidth means
 * the kernel, not memory, limits generation. Thread CPU time, medians: a shared machine
 * adds noise to wall-clock means. Prints figures; asserts nothing.
 * Usage: bench_kernels [scalar|avx2|avx512 [TYPES]], TYPES as "Q4_K,F16". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "engine/kernels.h"

#define COLS 2048

static uint64_t g_rng = 88172645463325252ull;
static float frand(void) {   /* [-1, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-52 - 1.0);
}

static double cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_asc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

/* Median GB/s of `reps` passes of y = W x over rows rows of type t; *best gets the
 * fastest pass (on a shared machine, the one least disturbed by neighbours). */
static double run(const kern_table *k, sg_dtype t, const void *w, int64_t rows, const float *x, float *y, int reps,
                  double *best) {
    uint64_t rb = dtype_row_bytes(t, COLS);
    double gbs[32];
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_s();
        kern_matmul_rows(k, t, w, rb, COLS, x, COLS, 1, y, 1, 0, rows);
        gbs[r] = (double)rb * (double)rows / (cpu_s() - t0) * 1e-9;
    }
    qsort(gbs, (size_t)reps, sizeof *gbs, cmp_asc);
    if (best) *best = gbs[reps - 1];
    return gbs[reps / 2];
}

int main(int argc, char **argv) {
    const char *simd = kern_select(argc > 1 ? argv[1] : NULL);
    const kern_table *k = kern_active();
    const sg_dtype types[] = {SG_Q4_K, SG_Q6_K, SG_Q4_0, SG_Q8_0, SG_F16};
    float *x = malloc(COLS * sizeof *x), *row = malloc(COLS * sizeof *row);
    for (int i = 0; i < COLS; i++) x[i] = frand();
    printf("decode matmul, 1 thread, %s kernels%s, %d columns: GB/s of weights (median)\n", simd,
           k->qdot[SG_Q4_K] ? " (int8 activations)" : "", COLS);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        sg_dtype t = types[ti];
        if (argc > 2 && !strstr(argv[2], dtype_info(t)->name)) continue;   /* e.g. "Q4_K,F16" */
        uint64_t rb = dtype_row_bytes(t, COLS);
        int64_t hot_rows = (1 << 20) / (int64_t)rb, cold_rows = ((int64_t)512 << 20) / (int64_t)rb;
        size_t wbytes = ((size_t)(rb * (uint64_t)cold_rows) + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
        unsigned char *w = aligned_alloc(2u << 20, wbytes);
        if (getenv("BENCH_HUGE")) madvise(w, wbytes, MADV_HUGEPAGE);
        float *y = malloc((size_t)cold_rows * sizeof *y);
        /* random rows, copied: quantizing all of them would take longer than the bench */
        for (int r = 0; r < 64; r++) {
            for (int i = 0; i < COLS; i++) row[i] = frand();
            kern_from_f32(t, row, w + (uint64_t)r * rb, COLS);
        }
        for (int64_t r = 64; r < cold_rows; r++) memcpy(w + (uint64_t)r * rb, w + (uint64_t)(r % 64) * rb, rb);
        double hot_best, cold_best;
        run(k, t, w, hot_rows, x, y, 3, NULL);   /* warm up */
        double hot = run(k, t, w, hot_rows, x, y, 31, &hot_best);
        double cold = run(k, t, w, cold_rows, x, y, 3, &cold_best);
        printf("  %-5s hot %6.1f (best %6.1f)  stream %6.1f (best %6.1f)\n", dtype_info(t)->name, hot, hot_best, cold,
               cold_best);
        free(w);
        free(y);
    }
    free(x);
    free(row);
    return 0;
}
