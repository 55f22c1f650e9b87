/* bench_gateway_core.c: the raw overhead of the gateway's networking core (loop.c,
 * http_server.c, upstream.c) measured as a minimal proxy: accept a request, forward it
 * with upstream.c, relay the response (buffered, or streamed chunk by chunk for SSE).
 * No routing, no JSON: what is left is the floor every gateway feature adds to.
 *
 *   bench_gateway_core                 self-contained figures: an in-process fake
 *                                      upstream, the proxy and a load generator, each on
 *                                      its own thread; direct vs proxied, stream 0/1,
 *                                      c = 1, 16, 64; plus CPU per request of each part.
 *   bench_gateway_core serve --listen 127.0.0.1:18100 --upstream http://127.0.0.1:18080
 *                                      the proxy alone, for ../shared/bench/gateway/run.sh
 *                                      (start it with taskset -c 1; the request path is
 *                                      appended to the upstream base URL).
 *   bench_gateway_core client-cost [N] N sequential transfers through upstream.h to the
 *                                      in-process upstream: loop-thread CPU per transfer
 *                                      (the old name curl-cost still works).
 *
 * The upstream client is the native HTTP/1.1 one (upstream_h1.c); SMOLGATE_UPSTREAM=curl
 * in the environment runs every mode through libcurl instead, for comparison.
 *
 * Options for the self-contained run: --seconds S (default 2), --quick (c=16 only).
 * It prints figures; it never asserts.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/http_server.h"
#include "gateway/loop.h"
#include "gateway/upstream.h"

/* The fake upstream's answers: the same bytes as ../shared/bench/gateway/nginx.conf. */
static const char k_json[] =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"gpt-4o-mini\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello there, how can I help you "
    "today?\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":10,\"total_tokens\":22}}";
static const char k_sse[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\" there\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}\n\ndata: [DONE]\n\n";
/* The request wrk sends with post.lua. */
static const char k_body_plain[] =
    "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
    "{\"role\":\"user\",\"content\":\"Say hello.\"}]}";
static const char k_body_stream[] =
    "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"system\",\"content\":\"You are terse.\"},"
    "{\"role\":\"user\",\"content\":\"Say hello.\"}]}";

static uint64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t thread_cpu_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void pin_to(int core) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 2) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(core % n, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* ------------------------------------------------------------------------------------ */
/* a loop on its own thread, with a way to run code there and wait */

typedef struct loop_thread {
    loop     *l;
    pthread_t th;
    int       core;
} loop_thread;

static void *loop_thread_main(void *arg) {
    loop_thread *lt = arg;
    pin_to(lt->core);
    sg_error err;
    if (loop_run(lt->l, &err) < 0) fprintf(stderr, "loop: %s\n", err.msg);
    return NULL;
}

typedef struct sync_call {
    void (*fn)(void *);
    void *arg;
    atomic_int done;
} sync_call;

static void sync_tramp(loop *l, void *arg) {
    (void)l;
    sync_call *sc = arg;
    sc->fn(sc->arg);
    atomic_store(&sc->done, 1);
}

static void on_loop(loop_thread *lt, void (*fn)(void *), void *arg) {
    sync_call sc = {fn, arg, 0};
    loop_post(lt->l, sync_tramp, &sc);
    while (!atomic_load(&sc.done)) usleep(200);
}

static void cpu_fn(void *arg) { *(uint64_t *)arg = thread_cpu_us(); }
static uint64_t loop_cpu_us(loop_thread *lt) {
    uint64_t v = 0;
    on_loop(lt, cpu_fn, &v);
    return v;
}

/* ------------------------------------------------------------------------------------ */
/* the fake upstream (in-process): JSON, or SSE when the body asks for "stream":true */

static void fake_handler(http_exchange *x, const http_request *r, void *arg) {
    (void)arg;
    int stream = r->body_len && memmem(r->body, r->body_len, "\"stream\":true", 13) != NULL;
    http_header h = {"Content-Type", stream ? "text/event-stream" : "application/json"};
    if (stream) http_respond(x, 200, &h, 1, k_sse, sizeof k_sse - 1);
    else http_respond(x, 200, &h, 1, k_json, sizeof k_json - 1);
}

/* ------------------------------------------------------------------------------------ */
/* the proxy */

typedef struct proxy proxy;

typedef struct proxy_ex {
    proxy           *p;
    http_exchange   *x;
    upstream_xfer   *t;
    struct proxy_ex *next;  /* free list */
    int              status;
    int              streaming;
    char             ctype[128];
    char             url[1024];
    sg_buf           body;  /* buffered response (reused across exchanges) */
} proxy_ex;

struct proxy {
    loop        *l;
    http_server *s;
    upstream    *u;
    char         base[512];
    proxy_ex    *free_list;
    uint64_t     relayed, failed;
};

static proxy_ex *pe_get(proxy *p) {
    proxy_ex *pe = p->free_list;
    if (pe) p->free_list = pe->next;
    else {
        pe = sg_xcalloc(1, sizeof *pe);
        sg_buf_init(&pe->body);
        pe->p = p;
    }
    pe->next = NULL;
    pe->status = 0;
    pe->streaming = 0;
    pe->ctype[0] = 0;
    pe->t = NULL;
    sg_buf_reset(&pe->body);
    return pe;
}

static void pe_put(proxy_ex *pe) {
    pe->next = pe->p->free_list;
    pe->p->free_list = pe;
}

static void px_on_drain(http_exchange *x, void *arg) {
    (void)x;
    proxy_ex *pe = arg;
    if (pe->t) upstream_resume(pe->t);
}

static void px_on_headers(upstream_xfer *t, const upstream_response *resp, void *arg) {
    (void)t;
    proxy_ex *pe = arg;
    pe->status = resp->status;
    const char *ct = upstream_response_header(resp, "content-type");
    snprintf(pe->ctype, sizeof pe->ctype, "%s", ct ? ct : "application/octet-stream");
    if (!strncasecmp(pe->ctype, "text/event-stream", 17)) {
        http_header h = {"Content-Type", pe->ctype};
        pe->streaming = 1;
        http_stream_begin(pe->x, pe->status, &h, 1);
    }
}

static void px_on_data(upstream_xfer *t, const char *data, size_t len, void *arg) {
    proxy_ex *pe = arg;
    if (!pe->streaming) {
        sg_buf_append(&pe->body, data, len);
        return;
    }
    http_stream_write(pe->x, data, len);
    /* Backpressure: a slow client pauses the upstream instead of growing our buffer. */
    if (http_exchange_buffered(pe->x) > (1u << 20)) {
        upstream_pause(t);
        http_exchange_on_drain(pe->x, 256u << 10, px_on_drain, pe);
    }
}

static void px_on_done(upstream_xfer *t, const upstream_done *d, void *arg) {
    (void)t;
    proxy_ex *pe = arg;
    proxy *p = pe->p;
    pe->t = NULL;
    if (d->result == UPSTREAM_OK) {
        p->relayed++;
        if (pe->streaming) http_stream_end(pe->x);
        else {
            http_header h = {"Content-Type", pe->ctype};
            http_respond(pe->x, pe->status, &h, 1, pe->body.data, pe->body.len);
        }
    } else {
        p->failed++;
        if (pe->streaming) http_exchange_close(pe->x);  /* a truncated stream, not a clean end */
        else {
            char msg[600];
            int n = snprintf(msg, sizeof msg, "{\"error\":{\"message\":\"upstream %s\",\"type\":\"upstream_error\"}}",
                             upstream_result_name(d->result));
            http_header h = {"Content-Type", "application/json"};
            http_respond(pe->x, 502, &h, 1, msg, (size_t)n);
        }
    }
    pe_put(pe);
}

static void px_on_abort(http_exchange *x, void *arg) {
    proxy_ex *pe = arg;
    if (pe->t) upstream_cancel(pe->t);
    pe->t = NULL;
    http_exchange_close(x);
    pe_put(pe);
}

static void px_handler(http_exchange *x, const http_request *r, void *arg) {
    proxy *p = arg;
    proxy_ex *pe = pe_get(p);
    pe->x = x;
    snprintf(pe->url, sizeof pe->url, "%s%s%s%s", p->base, r->path, r->query[0] ? "?" : "", r->query);
    upstream_header h[3];
    size_t n = 0;
    const char *v;
    if ((v = http_request_header(r, "content-type"))) h[n++] = (upstream_header){"Content-Type", v};
    if ((v = http_request_header(r, "authorization"))) h[n++] = (upstream_header){"Authorization", v};
    if ((v = http_request_header(r, "accept"))) h[n++] = (upstream_header){"Accept", v};
    upstream_request req = {
        .method = r->method, .url = pe->url, .headers = h, .n_headers = n,
        .body = r->body, .body_len = r->body_len,
        .cb = {px_on_headers, px_on_data, px_on_done}, .arg = pe,
    };
    sg_error err;
    pe->t = upstream_start(p->u, &req, &err);
    if (!pe->t) {
        static const char msg[] = "{\"error\":{\"message\":\"cannot start upstream request\"}}";
        http_respond(x, 502, NULL, 0, msg, sizeof msg - 1);
        pe_put(pe);
        return;
    }
    http_exchange_on_abort(x, px_on_abort, pe);
}

static proxy *proxy_new(loop *l, const char *listen, const char *base, sg_error *err) {
    proxy *p = sg_xcalloc(1, sizeof *p);
    p->l = l;
    snprintf(p->base, sizeof p->base, "%s", base);
    size_t bl = strlen(p->base);
    while (bl && p->base[bl - 1] == '/') p->base[--bl] = 0;
    upstream_config ucfg;
    upstream_config_defaults(&ucfg);
    p->u = upstream_new(l, &ucfg, err);
    if (!p->u) { free(p); return NULL; }
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.listen = listen;
    cfg.handler = px_handler;
    cfg.handler_arg = p;
    p->s = http_server_new(l, &cfg, err);
    if (!p->s) { upstream_free(p->u); free(p); return NULL; }
    return p;
}

static void proxy_free(proxy *p) {
    http_server_free(p->s);
    upstream_free(p->u);
    while (p->free_list) {
        proxy_ex *pe = p->free_list;
        p->free_list = pe->next;
        sg_buf_free(&pe->body);
        free(pe);
    }
    free(p);
}

/* ------------------------------------------------------------------------------------ */
/* serve mode */

static loop *g_serve_loop;
static void on_signal(int sig) { (void)sig; if (g_serve_loop) loop_stop(g_serve_loop); }

static int cmd_serve(int argc, char **argv) {
    const char *listen = "127.0.0.1:18100", *base = "http://127.0.0.1:18080";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc) listen = argv[++i];
        else if (!strcmp(argv[i], "--upstream") && i + 1 < argc) base = argv[++i];
        else { fprintf(stderr, "usage: %s serve [--listen HOST:PORT] [--upstream URL]\n", argv[0]); return 2; }
    }
    sg_error err;
    loop *l = loop_new(&err);
    if (!l) { fprintf(stderr, "%s\n", err.msg); return 1; }
    proxy *p = proxy_new(l, listen, base, &err);
    if (!p) { fprintf(stderr, "%s\n", err.msg); loop_free(l); return 1; }
    g_serve_loop = l;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    fprintf(stderr, "bench_gateway_core: proxying http://%s -> %s (%s)\n", listen, base, upstream_version());
    uint64_t c0 = thread_cpu_us();
    int rc = loop_run(l, &err);
    uint64_t cpu = thread_cpu_us() - c0;
    http_server_stats st = http_server_get_stats(p->s);
    printf("bench_gateway_core serve: %llu requests (%llu relayed, %llu failed), %llu connections, "
           "loop CPU %.2f s = %.2f us/request\n",
           (unsigned long long)st.requests, (unsigned long long)p->relayed, (unsigned long long)p->failed,
           (unsigned long long)st.accepted, cpu / 1e6, st.requests ? (double)cpu / (double)st.requests : 0.0);
    proxy_free(p);
    loop_free(l);
    return rc < 0;
}

/* ------------------------------------------------------------------------------------ */
/* load generator: one thread, epoll, N keep-alive connections, like wrk -t1 */

#define LAT_BUCKETS 200000  /* 1 us buckets up to 200 ms */

typedef struct lg_conn {
    int      fd;
    char     buf[16384];
    size_t   len;
    uint64_t sent_us;
} lg_conn;

typedef struct lg_result {
    double   rps;
    double   p50_us, p99_us;
    uint64_t requests, errors;
} lg_result;

static int lg_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Returns the length of one complete response at the start of buf, or 0. */
static size_t lg_complete(const char *buf, size_t len) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t hl = (size_t)(end - buf) + 4;
    const char *cl = NULL;
    for (const char *p = buf; p < end; p++) {
        if ((*p == 'C' || *p == 'c') && !strncasecmp(p, "content-length:", 15)) { cl = p + 15; break; }
    }
    if (cl) {
        size_t n = strtoul(cl, NULL, 10);
        return len >= hl + n ? hl + n : 0;
    }
    const char *term = memmem(buf + hl - 2, len - hl + 2, "\r\n0\r\n\r\n", 7);
    return term ? (size_t)(term - buf) + 7 : 0;
}

static lg_result load_run(int port, int conns, int stream, double seconds) {
    lg_result res = {0};
    char req[1024];
    const char *body = stream ? k_body_stream : k_body_plain;
    int rl = snprintf(req, sizeof req,
                      "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                      "Authorization: Bearer sk-bench\r\nContent-Length: %zu\r\n\r\n%s",
                      port, strlen(body), body);
    uint32_t *hist = calloc(LAT_BUCKETS, sizeof *hist);
    lg_conn *cs = calloc((size_t)conns, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        cs[i].fd = lg_connect(port);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        cs[i].sent_us = 0;
    }
    uint64_t t0 = mono_us(), until = t0 + (uint64_t)(seconds * 1e6);
    struct epoll_event evs[256];
    uint64_t done = 0, errors = 0;
    while (mono_us() < until) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            lg_conn *c = evs[i].data.ptr;
            if (!c->sent_us && (evs[i].events & EPOLLOUT)) {  /* connected: first request */
                c->sent_us = mono_us();
                if (send(c->fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) errors++;
            }
            if (!(evs[i].events & EPOLLIN)) continue;
            for (;;) {
                ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
                if (r <= 0) {
                    if (r == 0 || (errno != EAGAIN && errno != EINTR)) errors++;
                    break;
                }
                c->len += (size_t)r;
                size_t got;
                while ((got = lg_complete(c->buf, c->len))) {
                    uint64_t now = mono_us();
                    uint64_t lat = now - c->sent_us;
                    hist[lat < LAT_BUCKETS ? lat : LAT_BUCKETS - 1]++;
                    if (strncmp(c->buf, "HTTP/1.1 200", 12)) errors++;
                    done++;
                    memmove(c->buf, c->buf + got, c->len - got);
                    c->len -= got;
                    c->sent_us = now;
                    if (send(c->fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) errors++;
                }
                if (c->len == sizeof c->buf) { c->len = 0; errors++; }
                if ((size_t)r < sizeof c->buf) break;
            }
        }
    }
    double el = (double)(mono_us() - t0) / 1e6;
    res.requests = done;
    res.errors = errors;
    res.rps = done / el;
    uint64_t acc = 0, p50 = 0, p99 = 0;
    for (uint32_t i = 0; i < LAT_BUCKETS; i++) {
        acc += hist[i];
        if (!p50 && acc * 2 >= done) p50 = i;
        if (!p99 && acc * 100 >= done * 99) { p99 = i; break; }
    }
    res.p50_us = (double)p50;
    res.p99_us = (double)p99;
    for (int i = 0; i < conns; i++) close(cs[i].fd);
    close(ep);
    free(cs);
    free(hist);
    usleep(50 * 1000);  /* let servers reap the closed connections */
    return res;
}

/* ------------------------------------------------------------------------------------ */
/* self-contained run */

typedef struct world {
    loop_thread  up_lt, px_lt;
    http_server *up;
    proxy       *px;
    int          up_port, px_port;
} world;

static world W;

static void up_start_fn(void *arg) {
    (void)arg;
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.handler = fake_handler;
    sg_error err;
    W.up = http_server_new(W.up_lt.l, &cfg, &err);
    if (!W.up) { fprintf(stderr, "fake upstream: %s\n", err.msg); exit(1); }
    W.up_port = http_server_port(W.up);
}

static void px_start_fn(void *arg) {
    (void)arg;
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", W.up_port);
    sg_error err;
    W.px = proxy_new(W.px_lt.l, "127.0.0.1:0", base, &err);
    if (!W.px) { fprintf(stderr, "proxy: %s\n", err.msg); exit(1); }
    W.px_port = http_server_port(W.px->s);
}

static void up_stop_fn(void *arg) { (void)arg; http_server_free(W.up); loop_stop(W.up_lt.l); }
static void px_stop_fn(void *arg) { (void)arg; proxy_free(W.px); loop_stop(W.px_lt.l); }

static void world_start(void) {
    sg_error err;
    W.up_lt.l = loop_new(&err);
    W.up_lt.core = 0;
    W.px_lt.l = loop_new(&err);
    W.px_lt.core = 1;
    pthread_create(&W.up_lt.th, NULL, loop_thread_main, &W.up_lt);
    pthread_create(&W.px_lt.th, NULL, loop_thread_main, &W.px_lt);
    on_loop(&W.up_lt, up_start_fn, NULL);
    on_loop(&W.px_lt, px_start_fn, NULL);
}

static void world_stop(void) {
    on_loop(&W.px_lt, px_stop_fn, NULL);
    pthread_join(W.px_lt.th, NULL);
    on_loop(&W.up_lt, up_stop_fn, NULL);
    pthread_join(W.up_lt.th, NULL);
    loop_free(W.px_lt.l);
    loop_free(W.up_lt.l);
}

/* curl-cost: sequential transfers on the proxy's loop thread, each started from the
 * previous one's on_done. */
typedef struct cost_run {
    upstream *u;
    char      url[128];
    int       left;
    uint64_t  ok, failed;
    uint64_t  cpu0, cpu1, wall0, wall1;
    atomic_int finished;
} cost_run;

static void cost_next(cost_run *cr);
static void cost_done(upstream_xfer *t, const upstream_done *d, void *arg) {
    (void)t;
    cost_run *cr = arg;
    if (d->result == UPSTREAM_OK) cr->ok++;
    else cr->failed++;
    if (--cr->left > 0) cost_next(cr);
    else {
        cr->cpu1 = thread_cpu_us();
        cr->wall1 = mono_us();
        atomic_store(&cr->finished, 1);
    }
}
static void cost_data(upstream_xfer *t, const char *d, size_t n, void *arg) { (void)t; (void)d; (void)n; (void)arg; }
static void cost_next(cost_run *cr) {
    static const upstream_header h[] = {{"Content-Type", "application/json"}, {"Authorization", "Bearer sk-bench"}};
    upstream_request req = {.method = "POST", .url = cr->url, .headers = h, .n_headers = 2,
                            .body = k_body_plain, .body_len = sizeof k_body_plain - 1,
                            .cb = {NULL, cost_data, cost_done}, .arg = cr};
    upstream_start(cr->u, &req, NULL);
}
static void cost_start_fn(void *arg) {
    cost_run *cr = arg;
    cr->cpu0 = thread_cpu_us();
    cr->wall0 = mono_us();
    cost_next(cr);
}

static void run_curl_cost(int n) {
    cost_run cr = {0};
    cr.u = W.px->u;
    cr.left = n;
    snprintf(cr.url, sizeof cr.url, "http://127.0.0.1:%d/v1/chat/completions", W.up_port);
    uint64_t up0 = loop_cpu_us(&W.up_lt);
    on_loop(&W.px_lt, cost_start_fn, &cr);
    while (!atomic_load(&cr.finished)) usleep(1000);
    uint64_t up1 = loop_cpu_us(&W.up_lt);
    double per = (double)(cr.cpu1 - cr.cpu0) / n;
    const char *impl = getenv("SMOLGATE_UPSTREAM");
    printf("upstream (%s), %d sequential transfers on one connection: %.2f us CPU per transfer "
           "on the client loop (%.0f transfers/s wall; fake upstream http_server: %.2f us CPU per request)\n",
           impl && !strcmp(impl, "curl") ? "libcurl" : "native http/1.1", n, per, n / ((double)(cr.wall1 - cr.wall0) / 1e6), (double)(up1 - up0) / n);
}

static int cmd_self(int argc, char **argv, int cost_only) {
    double secs = 2.0;
    int quick = 0, cost_n = 20000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (cost_only && i >= 2 && atoi(argv[i]) > 0) cost_n = atoi(argv[i]);
    }
    sg_log_set_level(SG_LOG_WARN);
    world_start();
    printf("bench_gateway_core (%s; %ld cores; fake upstream on core 0, proxy on core 1, load generator "
           "unpinned)\n", upstream_version(), sysconf(_SC_NPROCESSORS_ONLN));
    if (cost_only) {
        run_curl_cost(cost_n);
        world_stop();
        return 0;
    }
    printf("%-8s %-6s %-4s %10s %9s %9s %8s  %s\n", "target", "stream", "c", "rps", "p50_us", "p99_us", "errors",
           "CPU us/req (proxy loop, upstream loop)");
    static const int cs_all[] = {1, 16, 64}, cs_quick[] = {16};
    const int *cs = quick ? cs_quick : cs_all;
    int ncs = quick ? 1 : 3;
    for (int stream = 0; stream <= 1; stream++) {
        for (int k = 0; k < ncs; k++) {
            for (int via = 0; via <= 1; via++) {
                uint64_t p0 = loop_cpu_us(&W.px_lt), u0 = loop_cpu_us(&W.up_lt);
                lg_result r = load_run(via ? W.px_port : W.up_port, cs[k], stream, secs);
                uint64_t p1 = loop_cpu_us(&W.px_lt), u1 = loop_cpu_us(&W.up_lt);
                double n = r.requests ? (double)r.requests : 1;
                printf("%-8s %-6d %-4d %10.0f %9.0f %9.0f %8llu  %.2f, %.2f\n", via ? "proxy" : "direct", stream,
                       cs[k], r.rps, r.p50_us, r.p99_us, (unsigned long long)r.errors,
                       via ? (double)(p1 - p0) / n : 0.0, (double)(u1 - u0) / n);
                fflush(stdout);
            }
        }
    }
    run_curl_cost(cost_n);
    world_stop();
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && !strcmp(argv[1], "serve")) return cmd_serve(argc, argv);
    if (argc > 1 && (!strcmp(argv[1], "client-cost") || !strcmp(argv[1], "curl-cost"))) return cmd_self(argc, argv, 1);
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("usage: %s [--seconds S] [--quick] | serve [--listen HOST:PORT] [--upstream URL] | client-cost [N]\n",
               argv[0]);
        return 0;
    }
    return cmd_self(argc, argv, 0);
}
