/* threadpool.h: a persistent pool of worker threads for the forward pass. tp_run()
 * runs fn(ctx, ith, nth) on every thread (the caller is thread 0) and returns when all
 * have finished: one fork/join per call, no allocation, workers spin briefly before
 * sleeping so back-to-back calls (one per matmul) do not pay a wake-up each.
 *
 * tp_run_chunks() runs fn(ctx, c) once for each c < n_chunks on whichever threads come
 * for them, the caller included, and returns when every chunk is done. It waits for no
 * thread that took no chunk: on a busy machine a worker the scheduler has not run yet
 * costs nothing (the caller does its share), where tp_run would wait for it. Chunks are
 * taken in order. */
#ifndef SG_THREADPOOL_H
#define SG_THREADPOOL_H

typedef struct sg_threadpool sg_threadpool;
typedef void (*tp_fn)(void *ctx, int ith, int nth);
typedef void (*tp_chunk_fn)(void *ctx, int chunk);

sg_threadpool *tp_new(int n_threads);   /* n_threads >= 1, caller included */
void tp_free(sg_threadpool *tp);
int  tp_size(const sg_threadpool *tp);
void tp_run(sg_threadpool *tp, tp_fn fn, void *ctx);
void tp_run_chunks(sg_threadpool *tp, tp_chunk_fn fn, void *ctx, int n_chunks);

#endif
