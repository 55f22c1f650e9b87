/* test_threadpool.c: tp_run runs every thread once per call; tp_run_chunks runs every
 * chunk exactly once and returns only when all are done, over thousands of back-to-back
 * jobs of both kinds (the forward pass alternates them), with workers that come late
 * (a chunk that yields) and pools of 1 to 4 threads. */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "engine/threadpool.h"
#include "testutil.h"

#define MAX_CHUNKS 64

typedef struct chunk_job {
    atomic_int runs[MAX_CHUNKS];
    int n;
} chunk_job;

static void chunk_fn(void *p, int c) {
    chunk_job *j = p;
    if (c % 7 == 3) sched_yield();   /* let another thread overtake this one */
    atomic_fetch_add(&j->runs[c], 1);
}

typedef struct thread_job {
    atomic_int runs[8];
    atomic_int bad_nth;
} thread_job;

static void thread_fn(void *p, int ith, int nth) {
    thread_job *j = p;
    atomic_fetch_add(&j->runs[ith], 1);
    if (nth < 1 || nth > 8) atomic_fetch_add(&j->bad_nth, 1);
}

static void test_jobs(void) {
    for (int nth = 1; nth <= 4; nth++) {
        sg_threadpool *tp = tp_new(nth);
        CHECK_EQ_INT(tp_size(tp), nth);
        int wrong = 0;
        for (int iter = 0; iter < 3000; iter++) {
            if (iter % 5 == 4) {   /* a per-thread job between chunk jobs */
                thread_job tj = {0};
                tp_run(tp, thread_fn, &tj);
                for (int i = 0; i < nth; i++) wrong += atomic_load(&tj.runs[i]) != 1;
                wrong += atomic_load(&tj.bad_nth) != 0;
                continue;
            }
            chunk_job *cj = calloc(1, sizeof *cj);   /* freed right away: a late worker must not touch it */
            cj->n = iter % MAX_CHUNKS;
            tp_run_chunks(tp, chunk_fn, cj, cj->n);
            for (int c = 0; c < MAX_CHUNKS; c++) wrong += atomic_load(&cj->runs[c]) != (c < cj->n);
            free(cj);
        }
        CHECK_MSG(wrong == 0, "%d threads: %d chunks or threads ran other than once", nth, wrong);
        tp_free(tp);
    }
}

int main(void) {
    RUN(test_jobs);
    return tu_finish("test_threadpool");
}
