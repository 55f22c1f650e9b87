/* threadpool.h: a persistent pool of worker threads for the forward pass. tp_run()
 * runs fn(ctx, ith, nth) on every thread (the caller is thread 0) and returns when all
 * have finished: one fork/join per call, no allocation, workers spin briefly before
 * sleeping so back-to-back calls (one per matmul) do not pay a wake-up each. */
#ifndef SG_THREADPOOL_H
#define SG_THREADPOOL_H

typedef struct sg_threadpool sg_threadpool;
typedef void (*tp_fn)(void *ctx, int ith, int nth);

sg_threadpool *tp_new(int n_threads);   /* n_threads >= 1, caller included */
void tp_free(sg_threadpool *tp);
int  tp_size(const sg_threadpool *tp);
void tp_run(sg_threadpool *tp, tp_fn fn, void *ctx);

#endif
