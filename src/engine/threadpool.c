/* threadpool.c: see threadpool.h.
 *
 * A job's fields and its `generation` are written and read together under the mutex (a
 * worker spins on the generation alone, then takes the lock once to copy the job), so
 * a worker never mixes two jobs. tp_run's caller waits for every worker (`pending`), so
 * no worker is behind on those. tp_run_chunks' caller does not: a worker may wake after
 * the job is over, holding its stale copy, so a chunk is claimed by a CAS on `claim`
 * (the job's generation in the high half, the next chunk in the low half) that fails
 * once the generation has moved on; only a claimed chunk touches ctx. */
#include "engine/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/buf.h"

enum { SPIN_ITERS = 20000 };

struct sg_threadpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    atomic_uint generation;     /* bumped per job */
    atomic_bool stop;
    /* the job, under mu */
    tp_fn fn;                   /* per-thread job (tp_run), or NULL */
    tp_chunk_fn chunk_fn;
    void *ctx;
    int n_chunks;
    atomic_int pending;         /* tp_run: workers still running */
    atomic_uint_fast64_t claim; /* tp_run_chunks: generation << 32 | next chunk */
    atomic_int done;            /* tp_run_chunks: chunks finished */
};

typedef struct { sg_threadpool *tp; int ith; } worker_arg;

/* Takes and runs chunks of job `gen` until none is left (or the job is over). */
static void run_chunks(sg_threadpool *tp, unsigned gen, tp_chunk_fn fn, void *ctx, int n) {
    uint64_t cur = atomic_load_explicit(&tp->claim, memory_order_relaxed);
    for (;;) {
        if ((unsigned)(cur >> 32) != gen || (int)(uint32_t)cur >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&tp->claim, &cur, cur + 1, memory_order_acquire,
                                                   memory_order_relaxed))
            continue;   /* cur now holds the fresh value */
        fn(ctx, (int)(uint32_t)cur);
        if (atomic_fetch_add_explicit(&tp->done, 1, memory_order_acq_rel) + 1 == n) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->cv_done);
            pthread_mutex_unlock(&tp->mu);
        }
        cur = atomic_load_explicit(&tp->claim, memory_order_relaxed);
    }
}

static void *worker(void *p) {
    worker_arg a = *(worker_arg *)p;
    free(p);
    sg_threadpool *tp = a.tp;
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&tp->generation, memory_order_acquire)) == seen &&
               !atomic_load(&tp->stop) && spins < SPIN_ITERS) {
            spins++;
            __builtin_ia32_pause();
        }
        pthread_mutex_lock(&tp->mu);
        while ((gen = atomic_load(&tp->generation)) == seen && !atomic_load(&tp->stop))
            pthread_cond_wait(&tp->cv_work, &tp->mu);
        tp_fn fn = tp->fn;   /* the job of generation gen */
        tp_chunk_fn chunk_fn = tp->chunk_fn;
        void *ctx = tp->ctx;
        int n_chunks = tp->n_chunks;
        pthread_mutex_unlock(&tp->mu);
        if (atomic_load(&tp->stop)) return NULL;
        seen = gen;
        if (!fn) {
            run_chunks(tp, gen, chunk_fn, ctx, n_chunks);
            continue;
        }
        fn(ctx, a.ith, tp->n);
        if (atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->cv_done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
}

sg_threadpool *tp_new(int n_threads) {
    sg_threadpool *tp = sg_xcalloc(1, sizeof *tp);
    tp->n = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv_work, NULL);
    pthread_cond_init(&tp->cv_done, NULL);
    tp->threads = sg_xcalloc((size_t)tp->n, sizeof(pthread_t));
    for (int i = 1; i < tp->n; i++) {
        worker_arg *a = sg_xmalloc(sizeof *a);
        a->tp = tp;
        a->ith = i;
        pthread_create(&tp->threads[i], NULL, worker, a);
    }
    return tp;
}

void tp_free(sg_threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, true);
    pthread_cond_broadcast(&tp->cv_work);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv_work);
    pthread_cond_destroy(&tp->cv_done);
    free(tp->threads);
    free(tp);
}

int tp_size(const sg_threadpool *tp) { return tp->n; }


/* Waits until *counter reaches target: spinning first, then on cv_done. */
static void wait_for(sg_threadpool *tp, atomic_int *counter, int target) {
    int spins = 0;
    while (atomic_load_explicit(counter, memory_order_acquire) != target && spins < SPIN_ITERS) {
        spins++;
        __builtin_ia32_pause();
    }
    if (atomic_load(counter) != target) {
        pthread_mutex_lock(&tp->mu);
        while (atomic_load(counter) != target) pthread_cond_wait(&tp->cv_done, &tp->mu);
        pthread_mutex_unlock(&tp->mu);
    }
}

void tp_run(sg_threadpool *tp, tp_fn fn, void *ctx) {
    if (tp->n == 1) { fn(ctx, 0, 1); return; }
    pthread_mutex_lock(&tp->mu);
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store(&tp->pending, tp->n - 1);
    atomic_fetch_add(&tp->generation, 1);
    pthread_cond_broadcast(&tp->cv_work);
    pthread_mutex_unlock(&tp->mu);
    fn(ctx, 0, tp->n);
    wait_for(tp, &tp->pending, 0);
}

void tp_run_chunks(sg_threadpool *tp, tp_chunk_fn fn, void *ctx, int n_chunks) {
    if (n_chunks <= 0) return;
    if (tp->n == 1 || n_chunks == 1) {
        for (int c = 0; c < n_chunks; c++) fn(ctx, c);
        return;
    }
    pthread_mutex_lock(&tp->mu);
    unsigned gen = atomic_load(&tp->generation) + 1;
    tp->fn = NULL;
    tp->chunk_fn = fn;
    tp->ctx = ctx;
    tp->n_chunks = n_chunks;
    atomic_store(&tp->done, 0);
    atomic_store(&tp->claim, (uint64_t)gen << 32);
    atomic_store(&tp->generation, gen);
    pthread_cond_broadcast(&tp->cv_work);
    pthread_mutex_unlock(&tp->mu);
    run_chunks(tp, gen, fn, ctx, n_chunks);
    wait_for(tp, &tp->done, n_chunks);
}
