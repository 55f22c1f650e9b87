/* bench/bench_util.h: the clocks and the sort the C benchmarks share (header only: each
 * bench is its own program). */
#ifndef SG_BENCH_UTIL_H
#define SG_BENCH_UTIL_H

#include <stdint.h>
#include <time.h>

static inline int64_t bench_clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
/* wall time, and this process's CPU time (all threads) */
static inline int64_t bench_now_ns(void) { return bench_clock_ns(CLOCK_MONOTONIC); }
static inline int64_t bench_cpu_ns(void) { return bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

/* qsort's comparison of int64_t, ascending */
static inline int bench_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

#endif
