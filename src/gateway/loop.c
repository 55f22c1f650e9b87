/* loop.c: see loop.h. One epoll set; watchers are pointers in epoll_event.data; timers
 * live in a binary min-heap of pointers (each timer knows its slot, so cancel is
 * O(log n)); posts are a mutex-protected vector swapped out whole by the loop thread. */
#include "gateway/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"

#define LOOP_MAX_EVENTS 256

typedef struct loop_post_item {
    loop_post_fn fn;
    void        *arg;
} loop_post_item;

typedef struct loop_prepare_item {
    loop_prepare_fn fn;
    void           *arg;
} loop_prepare_item;

struct loop {
    int      epfd;
    int      wakefd;          /* eventfd: posts and loop_stop from other threads */
    loop_watch wake_watch;
    uint64_t now_ms;
    atomic_int stop;

    /* The batch being dispatched, so loop_watch_remove can blank out events for a
     * watcher its owner is about to free. */
    struct epoll_event events[LOOP_MAX_EVENTS];
    int      n_events;
    int      cur_event;

    /* Timers: heap[i] has heap_index i + 1. */
    loop_timer **heap;
    size_t   heap_len, heap_cap;

    /* Posts: producers append to q under mu; the loop swaps q with run and drains run. */
    pthread_mutex_t mu;
    loop_post_item *q;
    size_t   q_len, q_cap;
    loop_post_item *run;
    size_t   run_cap;

    loop_prepare_item *prep;
    size_t   n_prep;
};

static uint64_t clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t loop_now_ms(const loop *l) { return l->now_ms; }
uint64_t loop_update_now(loop *l) { return l->now_ms = clock_ms(); }

static void loop_drain_posts(loop *l);

static void wake_cb(loop *l, loop_watch *w, unsigned events, void *arg) {
    (void)events; (void)arg;
    uint64_t v;
    ssize_t r = read(w->fd, &v, sizeof v);  /* resets the counter; EAGAIN is harmless */
    (void)r;
    loop_drain_posts(l);
}

loop *loop_new(sg_error *err) {
    loop *l = sg_xcalloc(1, sizeof *l);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        sg_fail(err, "epoll_create1: %s", strerror(errno));
        free(l);
        return NULL;
    }
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->wakefd < 0) {
        sg_fail(err, "eventfd: %s", strerror(errno));
        close(l->epfd);
        free(l);
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    l->now_ms = clock_ms();
    loop_watch_init(&l->wake_watch, l->wakefd, wake_cb, NULL);
    if (loop_watch_set(l, &l->wake_watch, LOOP_READ, err) < 0) {
        close(l->wakefd);
        close(l->epfd);
        pthread_mutex_destroy(&l->mu);
        free(l);
        return NULL;
    }
    return l;
}

void loop_free(loop *l) {
    if (!l) return;
    loop_watch_remove(l, &l->wake_watch);
    close(l->wakefd);
    close(l->epfd);
    pthread_mutex_destroy(&l->mu);
    free(l->heap);
    free(l->q);
    free(l->run);
    free(l->prep);
    free(l);
}

void loop_stop(loop *l) {
    atomic_store(&l->stop, 1);
    uint64_t one = 1;
    ssize_t r = write(l->wakefd, &one, sizeof one);
    (void)r;
}

int loop_stopping(const loop *l) { return atomic_load(&((loop *)l)->stop); }

/* --- watchers --- */

void loop_watch_init(loop_watch *w, int fd, loop_io_fn fn, void *arg) {
    w->fd = fd;
    w->interest = 0;
    w->registered = 0;
    w->fn = fn;
    w->arg = arg;
}

static void loop_forget_pending(loop *l, loop_watch *w) {
    for (int i = l->cur_event + 1; i < l->n_events; i++)
        if (l->events[i].data.ptr == w) l->events[i].data.ptr = NULL;
}

int loop_watch_set(loop *l, loop_watch *w, unsigned interest, sg_error *err) {
    interest &= LOOP_READ | LOOP_WRITE | LOOP_EDGE;
    if (!(interest & (LOOP_READ | LOOP_WRITE))) {
        loop_watch_remove(l, w);
        w->interest = 0;
        return 0;
    }
    if (w->registered && w->interest == interest) return 0;
    struct epoll_event ev = {0};
    ev.data.ptr = w;
    if (interest & LOOP_READ) ev.events |= EPOLLIN | EPOLLRDHUP;
    if (interest & LOOP_WRITE) ev.events |= EPOLLOUT;
    if (interest & LOOP_EDGE) ev.events |= EPOLLET;
    int op = w->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    int r = epoll_ctl(l->epfd, op, w->fd, &ev);
    /* The fd may have been closed and its number reused behind our back (libcurl closes
     * sockets it owns): fall back to the other operation. */
    if (r < 0 && op == EPOLL_CTL_MOD && errno == ENOENT) r = epoll_ctl(l->epfd, EPOLL_CTL_ADD, w->fd, &ev);
    else if (r < 0 && op == EPOLL_CTL_ADD && errno == EEXIST) r = epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev);
    if (r < 0) return sg_fail(err, "epoll_ctl(fd %d): %s", w->fd, strerror(errno));
    w->registered = 1;
    w->interest = interest;
    return 0;
}

void loop_watch_remove(loop *l, loop_watch *w) {
    if (w->registered) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
        w->registered = 0;
        w->interest = 0;
    }
    loop_forget_pending(l, w);
}

void loop_watch_forget(loop *l, loop_watch *w) {
    w->registered = 0;
    w->interest = 0;
    loop_forget_pending(l, w);
}

/* --- timers: a binary min-heap on deadline_ms --- */

void loop_timer_init(loop_timer *t, loop_timer_fn fn, void *arg) {
    t->deadline_ms = 0;
    t->heap_index = 0;
    t->fn = fn;
    t->arg = arg;
}

static inline void heap_place(loop *l, size_t i, loop_timer *t) {
    l->heap[i] = t;
    t->heap_index = i + 1;
}

static void heap_up(loop *l, size_t i) {
    loop_timer *t = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->deadline_ms <= t->deadline_ms) break;
        heap_place(l, i, l->heap[p]);
        i = p;
    }
    heap_place(l, i, t);
}

static void heap_down(loop *l, size_t i) {
    loop_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_len) break;
        if (c + 1 < l->heap_len && l->heap[c + 1]->deadline_ms < l->heap[c]->deadline_ms) c++;
        if (l->heap[c]->deadline_ms >= t->deadline_ms) break;
        heap_place(l, i, l->heap[c]);
        i = c;
    }
    heap_place(l, i, t);
}

void loop_timer_start_at(loop *l, loop_timer *t, uint64_t deadline_ms) {
    if (t->heap_index) {
        uint64_t old = t->deadline_ms;
        t->deadline_ms = deadline_ms;
        if (deadline_ms < old) heap_up(l, t->heap_index - 1);
        else if (deadline_ms > old) heap_down(l, t->heap_index - 1);
        return;
    }
    if (l->heap_len == l->heap_cap) {
        l->heap_cap = l->heap_cap ? l->heap_cap * 2 : 64;
        l->heap = sg_xrealloc(l->heap, l->heap_cap * sizeof *l->heap);
    }
    t->deadline_ms = deadline_ms;
    heap_place(l, l->heap_len++, t);
    heap_up(l, l->heap_len - 1);
}

void loop_timer_start(loop *l, loop_timer *t, uint64_t ms) {
    loop_timer_start_at(l, t, l->now_ms + ms);
}

void loop_timer_stop(loop *l, loop_timer *t) {
    if (!t->heap_index) return;
    size_t i = t->heap_index - 1;
    t->heap_index = 0;
    l->heap_len--;
    if (i == l->heap_len) return;
    loop_timer *last = l->heap[l->heap_len];
    heap_place(l, i, last);
    if (i > 0 && l->heap[(i - 1) / 2]->deadline_ms > last->deadline_ms) heap_up(l, i);
    else heap_down(l, i);
}

/* Fires the timers due at the phase's start time. A callback that re-arms a timer for
 * "now" (libcurl asks for 0 ms timeouts) must not make this spin, so one phase fires at
 * most as many timers as the heap held when it began; any left over wait one iteration
 * (whose epoll_wait then has a zero timeout). */
static int loop_fire_timers(loop *l) {
    size_t due = 0;
    size_t budget = l->heap_len;
    uint64_t now = l->now_ms;
    while (l->heap_len && budget-- && l->heap[0]->deadline_ms <= now) {
        loop_timer *t = l->heap[0];
        loop_timer_stop(l, t);
        t->fn(l, t, t->arg);
        due++;
    }
    return (int)due;
}

/* --- posts and prepare hooks --- */

int loop_post(loop *l, loop_post_fn fn, void *arg) {
    pthread_mutex_lock(&l->mu);
    if (l->q_len == l->q_cap) {
        l->q_cap = l->q_cap ? l->q_cap * 2 : 64;
        l->q = sg_xrealloc(l->q, l->q_cap * sizeof *l->q);
    }
    l->q[l->q_len++] = (loop_post_item){fn, arg};
    int wake = l->q_len == 1;
    pthread_mutex_unlock(&l->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t r = write(l->wakefd, &one, sizeof one);
        (void)r;
    }
    return 0;
}

static void loop_drain_posts(loop *l) {
    pthread_mutex_lock(&l->mu);
    loop_post_item *items = l->q;
    size_t n = l->q_len;
    size_t cap = l->q_cap;
    l->q = l->run;
    l->q_cap = l->run_cap;
    l->q_len = 0;
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n; i++) items[i].fn(l, items[i].arg);
    l->run = items;
    l->run_cap = cap;
}

int loop_add_prepare(loop *l, loop_prepare_fn fn, void *arg) {
    l->prep = sg_xrealloc(l->prep, (l->n_prep + 1) * sizeof *l->prep);
    l->prep[l->n_prep++] = (loop_prepare_item){fn, arg};
    return 0;
}

void loop_remove_prepare(loop *l, loop_prepare_fn fn, void *arg) {
    for (size_t i = 0; i < l->n_prep; i++) {
        if (l->prep[i].fn == fn && l->prep[i].arg == arg) {
            memmove(&l->prep[i], &l->prep[i + 1], (l->n_prep - i - 1) * sizeof *l->prep);
            l->n_prep--;
            return;
        }
    }
}

static void loop_run_prepare(loop *l) {
    /* Index loop re-reading n_prep: a hook may remove itself or others. */
    for (size_t i = 0; i < l->n_prep; i++) {
        loop_prepare_item it = l->prep[i];
        it.fn(l, it.arg);
        if (i < l->n_prep && (l->prep[i].fn != it.fn || l->prep[i].arg != it.arg)) i--;
    }
}

/* --- the loop --- */

int loop_run_once(loop *l, int timeout_ms, sg_error *err) {
    loop_run_prepare(l);

    int wait = timeout_ms;
    if (l->heap_len) {
        /* now_ms is from the end of the last wait: stale by this iteration's work, which
         * can only make us wait a little longer, never fire early. */
        uint64_t d = l->heap[0]->deadline_ms;
        int until = d <= l->now_ms ? 0 : (d - l->now_ms > 86400000u ? 86400000 : (int)(d - l->now_ms));
        if (wait < 0 || until < wait) wait = until;
    }
    if (atomic_load_explicit(&l->stop, memory_order_relaxed)) wait = 0;

    int n = epoll_wait(l->epfd, l->events, LOOP_MAX_EVENTS, wait);
    l->now_ms = clock_ms();
    if (n < 0) {
        if (errno == EINTR) return 0;
        return sg_fail(err, "epoll_wait: %s", strerror(errno));
    }
    int ran = 0;
    l->n_events = n;
    for (l->cur_event = 0; l->cur_event < n; l->cur_event++) {
        struct epoll_event *ev = &l->events[l->cur_event];
        loop_watch *w = ev->data.ptr;
        if (!w) continue;  /* removed earlier in this batch */
        unsigned e = 0;
        if (ev->events & EPOLLIN) e |= LOOP_READ;
        if (ev->events & EPOLLOUT) e |= LOOP_WRITE;
        if (ev->events & (EPOLLERR | EPOLLHUP)) e |= LOOP_ERROR;
        if (ev->events & EPOLLRDHUP) e |= LOOP_RDHUP;
        w->fn(l, w, e, w->arg);
        ran++;
    }
    l->n_events = 0;
    l->cur_event = 0;
    ran += loop_fire_timers(l);
    return ran;
}

int loop_run(loop *l, sg_error *err) {
    int rc = 0;
    while (!atomic_load_explicit(&l->stop, memory_order_relaxed))
        if (loop_run_once(l, -1, err) < 0) { rc = -1; break; }
    /* Run hooks once more so buffered output from the last iteration is not stranded. */
    loop_run_prepare(l);
    atomic_store(&l->stop, 0);  /* a stop requested before loop_run is honoured, once */
    return rc;
}
