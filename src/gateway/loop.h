/* loop.h: the gateway's event loop: one thread, one epoll set, fd watchers, millisecond
 * timers and a thread-safe post queue.
 *
 * Why hand-written: this is the product's heart. Every request through the gateway costs a
 * few trips through this loop (client socket, upstream socket, timers), and the speed bar
 * (a bare nginx proxy hop) leaves about 15 µs of CPU per request in all. Watchers and
 * timers are structs the caller embeds in its own objects (no allocation per event), a
 * dispatch is one indirect call, and the clock is read once per iteration.
 *
 * Contract:
 * - Single-threaded. Every function here must be called on the loop thread, except
 *   loop_post() and loop_stop(), which any thread may call at any time.
 * - Watchers are level-triggered by default: the callback fires on every iteration while
 *   the fd is ready for the interest set. LOOP_EDGE makes a watcher edge-triggered
 *   (EPOLLET): it fires once per readiness change, so its owner must read or write until
 *   EAGAIN (or a short read) before waiting again. The HTTP server uses edge-triggered
 *   watchers with read+write interest set once (no epoll_ctl per request); libcurl's
 *   sockets use level-triggered ones, as libcurl expects.
 * - Timers have millisecond resolution against CLOCK_MONOTONIC, sit in a binary min-heap
 *   (O(log n) start, restart and cancel), and fire no earlier than their deadline. A timer
 *   fires once; restart it from its callback for periodic work. Cancel and restart are safe
 *   at any time, including from inside any callback.
 * - loop_post(fn, arg) runs fn(loop, arg) on the loop thread soon after, in posting order.
 *   Posts that are still queued when the loop is freed are dropped (fn is not called).
 * - Prepare hooks run once per iteration, just before the loop blocks: the HTTP server
 *   flushes output there, so several writes made during one iteration become one syscall.
 */
#ifndef SG_GATEWAY_LOOP_H
#define SG_GATEWAY_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct loop loop;

/* Interest and event bits. LOOP_ERROR is reported (never requested) for EPOLLERR/EPOLLHUP;
 * LOOP_RDHUP for a peer that shut down its writing side. */
enum {
    LOOP_READ  = 1u << 0,
    LOOP_WRITE = 1u << 1,
    LOOP_EDGE  = 1u << 2,   /* interest flag: edge-triggered */
    LOOP_ERROR = 1u << 3,
    LOOP_RDHUP = 1u << 4,
};

typedef struct loop_watch loop_watch;
typedef void (*loop_io_fn)(loop *l, loop_watch *w, unsigned events, void *arg);

/* An fd watcher, embedded in its owner's struct. Fields are private to loop.c. */
struct loop_watch {
    int        fd;
    unsigned   interest;    /* LOOP_READ | LOOP_WRITE | LOOP_EDGE as registered */
    int        registered;  /* in the epoll set */
    loop_io_fn fn;
    void      *arg;
};

typedef struct loop_timer loop_timer;
typedef void (*loop_timer_fn)(loop *l, loop_timer *t, void *arg);

/* A timer, embedded in its owner's struct. Zero-initialise or loop_timer_init() before
 * first use. Fields are private to loop.c. */
struct loop_timer {
    uint64_t      deadline_ms;  /* loop_now_ms() clock */
    size_t        heap_index;   /* position in the heap + 1; 0 when not armed */
    loop_timer_fn fn;
    void         *arg;
};

typedef void (*loop_post_fn)(loop *l, void *arg);
typedef void (*loop_prepare_fn)(loop *l, void *arg);

/* Creates a loop (epoll set + eventfd). Returns NULL and fills err on failure. */
loop *loop_new(sg_error *err);
/* Frees the loop. Watchers must have been removed; armed timers are simply forgotten. */
void loop_free(loop *l);

/* Runs until loop_stop(). Returns 0, or -1 if epoll_wait fails with something other
 * than EINTR (err filled). */
int loop_run(loop *l, sg_error *err);
/* One iteration: prepare hooks, wait up to timeout_ms (-1: until an event or the next
 * timer), dispatch I/O, expired timers and posts. Returns the number of callbacks run,
 * or -1 on error. For tests and for embedding the loop in another loop. */
int loop_run_once(loop *l, int timeout_ms, sg_error *err);
/* Makes loop_run return after the current iteration (or, if it is not running, the next
 * loop_run return at once). Thread-safe. */
void loop_stop(loop *l);
/* Non-zero once loop_stop() has been called, until loop_run returns. */
int loop_stopping(const loop *l);

/* Milliseconds on CLOCK_MONOTONIC, read once per iteration (cheap; use for timeouts). */
uint64_t loop_now_ms(const loop *l);
/* Re-reads the clock now (for code that must measure within one long callback). */
uint64_t loop_update_now(loop *l);

/* --- fd watchers --- */

/* Prepares w for fd. Does not touch epoll. */
void loop_watch_init(loop_watch *w, int fd, loop_io_fn fn, void *arg);
/* Sets the interest set (LOOP_READ/LOOP_WRITE, optionally LOOP_EDGE); 0 removes the fd
 * from the epoll set but keeps w usable. Returns 0, or -1 with err filled. Skips the
 * syscall when nothing changes. */
int loop_watch_set(loop *l, loop_watch *w, unsigned interest, sg_error *err);
/* Removes w from the epoll set (if it is there). Call before closing the fd. Pending
 * events for w in the current iteration are dropped, so its owner may free it after. */
void loop_watch_remove(loop *l, loop_watch *w);
/* Drops w's registration without epoll_ctl, for when the fd was already closed (the
 * kernel forgot it then). Pending events for w in this iteration are dropped. */
void loop_watch_forget(loop *l, loop_watch *w);

/* --- timers --- */

void loop_timer_init(loop_timer *t, loop_timer_fn fn, void *arg);
/* Arms (or re-arms) t to fire after ms milliseconds, replacing any earlier deadline. */
void loop_timer_start(loop *l, loop_timer *t, uint64_t ms);
/* Arms t for an absolute deadline on the loop_now_ms() clock. */
void loop_timer_start_at(loop *l, loop_timer *t, uint64_t deadline_ms);
/* Disarms t; a no-op if it is not armed. */
void loop_timer_stop(loop *l, loop_timer *t);
static inline int loop_timer_active(const loop_timer *t) { return t->heap_index != 0; }

/* --- cross-thread posts and per-iteration hooks --- */

/* Queues fn(l, arg) to run on the loop thread. Thread-safe; wakes the loop with an
 * eventfd write only when the queue goes from empty to non-empty. Returns 0 (the queue
 * grows as needed; allocation failure aborts as everywhere in smolgate). */
int loop_post(loop *l, loop_post_fn fn, void *arg);

/* Registers fn to run once per iteration before the loop blocks. Loop thread only.
 * Returns 0. */
int loop_add_prepare(loop *l, loop_prepare_fn fn, void *arg);
/* Unregisters the hook added with this fn and arg (a no-op if there is none). Safe from
 * inside a hook. */
void loop_remove_prepare(loop *l, loop_prepare_fn fn, void *arg);

#endif
