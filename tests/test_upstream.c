/* test_upstream.c: outbound requests through upstream.h on our loop, against a scripted
 * raw-socket server on 127.0.0.1 (a thread per connection) that can answer normally,
 * stream slowly, stall, delay its first byte, reset or close the connection before or
 * after the first chunk. Checks the reported error kinds, timeouts, cancellation,
 * pause/resume and connection reuse (accepts counted on the server).
 *
 * Every case runs twice: with the native HTTP/1.1 client (cfg.native = 1) and with
 * libcurl (cfg.native = 0), the size bounds included (an endless chunked body, a huge
 * Content-Length sent slowly, a huge head: too_large, at once, nothing past the bound). Then native-only cases: response framing edge cases and
 * limits, pooling (idle close, retry on a dead reused connection, idle expiry), and TLS
 * against `openssl s_server` and an in-test OpenSSL server with throwaway certificates
 * made by `openssl req` (trusted through ca_file), a wrong-host certificate failing. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/wait.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "gateway/loop.h"
#include "gateway/upstream.h"
#include "testutil.h"

/* ------------------------------------------------------------------------------------ */
/* scripted server */

#define MAX_CONNS 256

typedef struct server {
    int        lfd;
    int        port;
    pthread_t  th;
    atomic_int stop;
    atomic_int accepts;
    pthread_t  conn_th[MAX_CONNS];
    int        conn_fd[MAX_CONNS];
    int        n_conn;
    char       last_head[4096];  /* the last request head, for header checks */
    atomic_int flaky;            /* /flaky: closes without answering the first time */
    pthread_mutex_t mu;
} server;

static server S;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}
static int send_str(int fd, const char *s) { return send_all(fd, s, strlen(s)); }

/* Sleeps ms, or less if the peer closes. Returns -1 if it did. */
static int nap(int fd, int ms) {
    uint64_t until = now_ms() + (uint64_t)ms;
    while (!atomic_load(&S.stop)) {
        uint64_t now = now_ms();
        if (now >= until) return 0;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, (int)(until - now < 50 ? until - now : 50));
        if (r > 0) {
            char tmp[256];
            ssize_t n = recv(fd, tmp, sizeof tmp, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN)) return -1;
            if (n > 0) return 0;  /* next request pipelined: let the caller go on */
        }
    }
    return -1;
}

static void hard_reset(int fd) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

static int send_chunk(int fd, const char *s) {
    char line[32];
    snprintf(line, sizeof line, "%zx\r\n", strlen(s));
    if (send_str(fd, line) < 0 || send_str(fd, s) < 0) return -1;
    return send_str(fd, "\r\n");
}

/* Serves requests on one connection until EOF or a scripted close. */
static void *conn_main(void *arg) {
    int fd = (int)(intptr_t)arg;
    char buf[1 << 16];
    size_t len = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
            if (len > 0 && (unsigned char)buf[0] == 0x16) {  /* a TLS ClientHello */
                send_str(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                goto out;
            }
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 100) == 0) {
                if (atomic_load(&S.stop)) goto out;
                continue;
            }
            ssize_t n = recv(fd, buf + len, sizeof buf - len - 1, 0);
            if (n <= 0) goto out;
            len += (size_t)n;
        }
        size_t hl = (size_t)(end - buf) + 4;
        buf[hl - 1] = 0;
        pthread_mutex_lock(&S.mu);
        size_t keep = hl < sizeof S.last_head - 1 ? hl : sizeof S.last_head - 1;
        memcpy(S.last_head, buf, keep);
        S.last_head[keep] = 0;
        pthread_mutex_unlock(&S.mu);
        size_t cl = 0;
        const char *clh = strcasestr(buf, "\r\ncontent-length:");
        if (clh) cl = strtoul(clh + 17, NULL, 10);
        while (len < hl + cl) {
            ssize_t n = recv(fd, buf + len, sizeof buf - len, 0);
            if (n <= 0) goto out;
            len += (size_t)n;
        }
        char path[256] = "";
        sscanf(buf, "%*s %255s", path);
        char body[8192];
        size_t bl = cl < sizeof body - 1 ? cl : sizeof body - 1;
        memcpy(body, buf + hl, bl);
        body[bl] = 0;
        memmove(buf, buf + hl + cl, len - hl - cl);
        len -= hl + cl;

        if (!strcmp(path, "/ok")) {
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Multi: a\r\nContent-Length: 5\r\n\r\nhello");
        } else if (!strcmp(path, "/echo")) {
            char hdr[512];
            const char *xt = strcasestr(S.last_head, "\r\nx-test:");
            char xv[64] = "-";
            if (xt) sscanf(xt + 9, " %63[^\r]", xv);
            int saw_expect = strcasestr(S.last_head, "\r\nexpect:") != NULL;
            snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nX-Seen-Test: %s\r\nX-Saw-Expect: %d\r\nContent-Length: %zu\r\n\r\n",
                     xv, saw_expect, bl);
            send_str(fd, hdr);
            send_all(fd, body, bl);
        } else if (!strcmp(path, "/429")) {
            send_str(fd, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Type: application/json\r\n"
                         "Content-Length: 2\r\n\r\n{}");
        } else if (!strcmp(path, "/continue")) {
            send_str(fd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
        } else if (!strcmp(path, "/slow-stream")) {
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
            int dead = 0;
            for (int i = 0; i < 5 && !dead; i++) {
                char ev[64];
                snprintf(ev, sizeof ev, "data: %d\n\n", i);
                if (send_chunk(fd, ev) < 0 || nap(fd, 40) < 0) dead = 1;
            }
            if (dead) goto out;
            send_str(fd, "0\r\n\r\n");
        } else if (!strcmp(path, "/stall")) {
            send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            send_chunk(fd, "data: first\n\n");
            nap(fd, 3000);
            goto out;
        } else if (!strcmp(path, "/slow-head")) {
            if (nap(fd, 1500) < 0) goto out;
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        } else if (!strcmp(path, "/reset-before")) {
            hard_reset(fd);
            goto out;
        } else if (!strcmp(path, "/close-before")) {
            goto out;
        } else if (!strcmp(path, "/reset-after")) {
            send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            send_chunk(fd, "data: first\n\n");
            usleep(50 * 1000);
            hard_reset(fd);
            goto out;
        } else if (!strcmp(path, "/short-body")) {
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
            usleep(20 * 1000);
            goto out;
        } else if (!strcmp(path, "/bye")) {  /* answers, then closes the idle connection */
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye");
            usleep(30 * 1000);
            goto out;
        } else if (!strcmp(path, "/flaky")) {
            if (atomic_fetch_add(&S.flaky, 1) == 0) goto out;
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        } else if (!strcmp(path, "/head")) {
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        } else if (!strcmp(path, "/204")) {
            send_str(fd, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n");
        } else if (!strcmp(path, "/304")) {
            send_str(fd, "HTTP/1.1 304 Not Modified\r\nContent-Length: 55\r\n\r\n");
        } else if (!strcmp(path, "/close-delimited")) {
            send_str(fd, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ");
            usleep(10 * 1000);
            send_str(fd, "close");
            goto out;
        } else if (!strcmp(path, "/chunk-ext")) {  /* framing split at awkward places */
            static const char *parts[] = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r", "\nX-Y:  padded \r\n\r\n5;ext=",
                                          "1\r\nhel", "lo\r", "\n6\r\n world\r\n0\r\nX-Trailer: 1\r", "\n\r\n"};
            for (size_t i = 0; i < 6; i++) {
                send_str(fd, parts[i]);
                usleep(5 * 1000);
            }
        } else if (!strcmp(path, "/huge-head")) {         /* one 160 KiB header line */
            send_str(fd, "HTTP/1.1 200 OK\r\nX-Big: ");
            static char blk[4096];
            memset(blk, 'x', sizeof blk);
            for (int i = 0; i < 40; i++) send_all(fd, blk, sizeof blk);
            send_str(fd, "\r\nContent-Length: 0\r\n\r\n");
        } else if (!strcmp(path, "/many-headers")) {      /* 40 lines of 4 KiB: 160 KiB */
            send_str(fd, "HTTP/1.1 200 OK\r\n");
            static char line[4096 + 16];
            for (int i = 0; i < 40; i++) {
                int n = snprintf(line, 16, "X-H%d: ", i);
                memset(line + n, 'y', 4096 - (size_t)n - 2);
                memcpy(line + 4096 - 2, "\r\n", 2);
                send_all(fd, line, 4096);
            }
            send_str(fd, "Content-Length: 2\r\n\r\nok");
        } else if (!strcmp(path, "/endless-chunked")) {   /* 64 KiB chunks until the client leaves */
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
            static char blk[65536 + 16];
            memcpy(blk, "10000\r\n", 7);
            memset(blk + 7, 'e', 65536);
            memcpy(blk + 7 + 65536, "\r\n", 2);
            for (int i = 0; i < 100000 && !atomic_load(&S.stop); i++)
                if (send_all(fd, blk, 7 + 65536 + 2) < 0) goto out;
            goto out;
        } else if (!strcmp(path, "/huge-length")) {       /* 2 GiB declared, 64 KiB per 50 ms */
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2147483648\r\n\r\n");
            static char blk[65536];
            memset(blk, 'h', sizeof blk);
            for (int i = 0; i < 200; i++)
                if (send_all(fd, blk, sizeof blk) < 0 || nap(fd, 50) < 0) goto out;
            goto out;
        } else if (!strcmp(path, "/bad-status")) {
            send_str(fd, "HTTP/1.1 2x0 Odd\r\nContent-Length: 0\r\n\r\n");
        } else if (!strcmp(path, "/bad-chunk")) {
            send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
        } else if (!strncmp(path, "/big", 4)) {
            size_t n = 4u << 20;
            char hdr[128];
            snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);
            send_str(fd, hdr);
            static char block[65536];
            memset(block, 'b', sizeof block);
            for (size_t sent = 0; sent < n; sent += sizeof block)
                if (send_all(fd, block, sizeof block) < 0) goto out;
        } else {
            send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    }
out:
    close(fd);
    return NULL;
}

static void *server_main(void *arg) {
    (void)arg;
    while (!atomic_load(&S.stop)) {
        struct pollfd p = {S.lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int fd = accept(S.lfd, NULL, NULL);
        if (fd < 0) continue;
        atomic_fetch_add(&S.accepts, 1);
        if (S.n_conn == MAX_CONNS) { close(fd); continue; }
        pthread_create(&S.conn_th[S.n_conn++], NULL, conn_main, (void *)(intptr_t)fd);
    }
    return NULL;
}

static int listen_any(int backlog, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    listen(fd, backlog);
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    *port = ntohs(a.sin_port);
    return fd;
}

static void server_start(void) {
    memset(&S, 0, sizeof S);
    pthread_mutex_init(&S.mu, NULL);
    S.lfd = listen_any(128, &S.port);
    pthread_create(&S.th, NULL, server_main, NULL);
}

static void server_stop(void) {
    atomic_store(&S.stop, 1);
    pthread_join(S.th, NULL);
    for (int i = 0; i < S.n_conn; i++) pthread_join(S.conn_th[i], NULL);
    close(S.lfd);
    pthread_mutex_destroy(&S.mu);
}

/* ------------------------------------------------------------------------------------ */
/* client side */

static loop *L;
static upstream *U;
static int g_native = 1;          /* which implementation setup() picks */
static const char *g_ca_file;     /* for the TLS cases */
static uint32_t g_pool_idle_ms;
static int g_in_start, g_cb_inside_start;  /* callbacks must not run inside upstream_start */
static uint64_t g_max_body;       /* upstream_request.max_body_bytes of the next starts */
static size_t g_max_head;         /* upstream_request.max_head_bytes */

typedef struct result {
    int      done;
    int      headers_calls, data_calls;
    int      status;
    char     retry_after[32];
    char     content_type[64];
    char     seen_test[64];
    char     saw_expect[8];
    sg_buf   body;
    upstream_done d;
    char     error[256];
    uint64_t first_data_ms, last_data_ms;
    /* behaviours */
    int      cancel_on_headers, cancel_on_data_n;
    int      pause_ms;           /* pause after the first chunk, resume after this long */
    int      data_while_paused;
    int      paused_now;
    loop_timer resume_timer;
    upstream_xfer *t;
    const char *chain_url;       /* on_done starts this next */
    struct result *chained;
} result;

static void res_init(result *r) {
    memset(r, 0, sizeof *r);
    sg_buf_init(&r->body);
}

static void on_headers(upstream_xfer *t, const upstream_response *resp, void *arg) {
    result *r = arg;
    g_cb_inside_start += g_in_start;
    r->headers_calls++;
    r->status = resp->status;
    const char *v;
    if ((v = upstream_response_header(resp, "retry-after"))) snprintf(r->retry_after, sizeof r->retry_after, "%s", v);
    if ((v = upstream_response_header(resp, "Content-Type"))) snprintf(r->content_type, sizeof r->content_type, "%s", v);
    if ((v = upstream_response_header(resp, "x-seen-test"))) snprintf(r->seen_test, sizeof r->seen_test, "%s", v);
    if ((v = upstream_response_header(resp, "x-saw-expect"))) snprintf(r->saw_expect, sizeof r->saw_expect, "%s", v);
    if (r->cancel_on_headers) {
        upstream_cancel(t);
        r->done = 1;
    }
}

static void resume_fire(loop *l, loop_timer *tm, void *arg) {
    (void)l; (void)tm;
    result *r = arg;
    r->paused_now = 0;
    upstream_resume(r->t);
}

static void on_data(upstream_xfer *t, const char *data, size_t len, void *arg) {
    result *r = arg;
    g_cb_inside_start += g_in_start;
    if (r->paused_now) r->data_while_paused++;
    r->data_calls++;
    uint64_t now = now_ms();
    if (!r->first_data_ms) r->first_data_ms = now;
    r->last_data_ms = now;
    sg_buf_append(&r->body, data, len);
    if (r->cancel_on_data_n && r->data_calls == r->cancel_on_data_n) {
        upstream_cancel(t);
        r->done = 1;
        return;
    }
    if (r->pause_ms && r->data_calls == 1) {
        upstream_pause(t);
        r->paused_now = 1;
        loop_timer_init(&r->resume_timer, resume_fire, r);
        loop_timer_start(L, &r->resume_timer, (uint64_t)r->pause_ms);
    }
}

static upstream_xfer *start(const char *path_or_url, result *r, const char *method, const char *body,
                            upstream_timeouts to);
static int g_evil;  /* send a header with CR/LF in it (must be dropped) */

static void on_done(upstream_xfer *t, const upstream_done *d, void *arg) {
    (void)t;
    result *r = arg;
    g_cb_inside_start += g_in_start;
    r->d = *d;
    snprintf(r->error, sizeof r->error, "%s", d->error);
    r->d.error = r->error;
    r->done = 1;
    if (r->chain_url) start(r->chain_url, r->chained, "GET", NULL, (upstream_timeouts){0});
}

static upstream_xfer *start(const char *path_or_url, result *r, const char *method, const char *body,
                            upstream_timeouts to) {
    static char url[512];
    if (path_or_url[0] == '/') snprintf(url, sizeof url, "http://127.0.0.1:%d%s", S.port, path_or_url);
    else snprintf(url, sizeof url, "%s", path_or_url);
    static const upstream_header hs[] = {{"Content-Type", "application/json"}, {"X-Test", "42"},
                                         {"X-Evil", "a\r\nX-Injected: 1"}};
    upstream_request req = {
        .method = method, .url = url, .headers = hs, .n_headers = g_evil ? 3 : 2,
        .body = body, .body_len = body ? strlen(body) : 0, .timeouts = to,
        .cb = {on_headers, on_data, on_done}, .arg = r,
        .max_body_bytes = g_max_body, .max_head_bytes = g_max_head,
    };
    sg_error err;
    g_in_start++;
    upstream_xfer *t = upstream_start(U, &req, &err);
    g_in_start--;
    if (!t) fprintf(stderr, "upstream_start: %s\n", err.msg);
    r->t = t;
    return t;
}

/* Runs the loop until every result is done (or 10 s). */
static int wait_all(result **rs, int n) {
    uint64_t until = now_ms() + 10000;
    sg_error err;
    for (;;) {
        int all = 1;
        for (int i = 0; i < n; i++) all &= rs[i]->done;
        if (all) return 1;
        if (now_ms() > until) return 0;
        loop_run_once(L, 50, &err);
    }
}
static int wait1(result *r) { return wait_all(&r, 1); }

/* Lets the loop run a little (stray callbacks would show up). */
static void spin(int ms) {
    uint64_t until = now_ms() + (uint64_t)ms;
    sg_error err;
    while (now_ms() < until) loop_run_once(L, 10, &err);
}

static void setup(void) {
    sg_error err;
    server_start();
    L = loop_new(&err);
    upstream_config cfg;
    upstream_config_defaults(&cfg);
    cfg.native = g_native;
    cfg.proxy = "";
    cfg.ca_file = g_ca_file;
    if (g_pool_idle_ms) cfg.pool_idle_ms = g_pool_idle_ms;
    U = upstream_new(L, &cfg, &err);
}

static void teardown(void) {
    upstream_free(U);
    loop_free(L);
    server_stop();
}

/* ------------------------------------------------------------------------------------ */

static void test_basic(void) {
    setup();
    result r;
    res_init(&r);
    start("/ok", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_STR(upstream_result_name(r.d.result), "ok");
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.d.status, 200);
    CHECK_EQ_INT(r.headers_calls, 1);
    CHECK_EQ_STR(r.content_type, "text/plain");
    CHECK_EQ_STR(r.body.data, "hello");
    CHECK_EQ_INT(r.d.body_bytes, 5);
    CHECK_EQ_INT(r.d.new_connection, 1);
    CHECK(r.d.connect_ms <= r.d.elapsed_ms);   /* a fresh connection: its connect time */
    CHECK_EQ_INT(r.d.requests_sent, 1);
    CHECK_EQ_STR(r.d.error, "");
    sg_buf_free(&r.body);

    res_init(&r);
    g_evil = 1;
    start("/echo", &r, "POST", "{\"q\":1}", (upstream_timeouts){0});
    g_evil = 0;
    CHECK(wait1(&r));
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_STR(r.body.data, "{\"q\":1}");
    CHECK_EQ_STR(r.seen_test, "42");
    CHECK_EQ_STR(r.saw_expect, "0");
    CHECK_EQ_INT(r.d.new_connection, 0);
    CHECK_EQ_INT(r.d.connect_ms, 0);   /* reused: no connect */
    pthread_mutex_lock(&S.mu);
    CHECK(!strcasestr(S.last_head, "X-Injected") && !strcasestr(S.last_head, "X-Evil"));
    pthread_mutex_unlock(&S.mu);
    sg_buf_free(&r.body);

    /* after a POST, a GET on the same pooled handle is a GET again */
    res_init(&r);
    start("/ok", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    pthread_mutex_lock(&S.mu);
    CHECK(!strncmp(S.last_head, "GET /ok ", 8));
    pthread_mutex_unlock(&S.mu);
    sg_buf_free(&r.body);

    res_init(&r);
    start("/429", &r, "POST", "{}", (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(r.status, 429);
    CHECK_EQ_STR(r.retry_after, "7");
    sg_buf_free(&r.body);

    res_init(&r);
    start("/continue", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_EQ_INT(r.status, 201);
    CHECK_EQ_INT(r.headers_calls, 1);
    CHECK_EQ_STR(r.body.data, "ok");
    sg_buf_free(&r.body);
    teardown();
}

static void test_connection_reuse(void) {
    setup();
    int ok = 0, fresh = 0;
    for (int i = 0; i < 50; i++) {
        result r;
        res_init(&r);
        start(i % 2 ? "/ok" : "/echo", &r, i % 2 ? "GET" : "POST", "x", (upstream_timeouts){0});
        if (wait1(&r) && r.d.result == UPSTREAM_OK && r.status == 200) ok++;
        fresh += r.d.new_connection;
        sg_buf_free(&r.body);
    }
    CHECK_EQ_INT(ok, 50);
    CHECK_EQ_INT(fresh, 1);
    CHECK_EQ_INT(atomic_load(&S.accepts), 1);
    upstream_stats st = upstream_get_stats(U);
    CHECK_EQ_INT(st.connections, 1);
    CHECK_EQ_INT(st.completed, 50);
    CHECK_EQ_INT(st.in_flight, 0);
    /* concurrent requests open parallel connections, then stay pooled */
    result rs[16];
    result *ps[16];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 16; i++) {
            res_init(&rs[i]);
            ps[i] = &rs[i];
            start("/ok", &rs[i], "GET", NULL, (upstream_timeouts){0});
        }
        CHECK(wait_all(ps, 16));
        int good = 0;
        for (int i = 0; i < 16; i++) {
            good += rs[i].d.result == UPSTREAM_OK && !strcmp(rs[i].body.data, "hello");
            sg_buf_free(&rs[i].body);
        }
        CHECK_EQ_INT(good, 16);
    }
    CHECK_MSG(atomic_load(&S.accepts) <= 17, "accepts %d", atomic_load(&S.accepts));
    teardown();
}

static void test_streaming(void) {
    setup();
    result r;
    res_init(&r);
    uint64_t t0 = now_ms();
    start("/slow-stream", &r, "POST", "{}", (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.content_type, "text/event-stream");
    CHECK_EQ_STR(r.body.data, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    CHECK_MSG(r.data_calls >= 4, "data_calls %d", r.data_calls);
    /* delivered as they came, not at the end */
    CHECK(r.first_data_ms - t0 < 150);
    CHECK(r.last_data_ms - r.first_data_ms >= 120);
    sg_buf_free(&r.body);
    teardown();
}

static void test_timeouts(void) {
    setup();
    result r;
    /* idle gap */
    res_init(&r);
    uint64_t t0 = now_ms();
    start("/stall", &r, "GET", NULL, (upstream_timeouts){.idle_ms = 200});
    CHECK(wait1(&r));
    uint64_t took = now_ms() - t0;
    CHECK_EQ_STR(upstream_result_name(r.d.result), "idle_timeout");
    CHECK_EQ_INT(r.d.status, 200);
    CHECK_EQ_STR(r.body.data, "data: first\n\n");
    CHECK_MSG(took >= 195 && took < 1000, "idle timeout after %llu ms", (unsigned long long)took);
    CHECK(strstr(r.d.error, "stalled") != NULL);
    sg_buf_free(&r.body);
    /* first byte */
    res_init(&r);
    t0 = now_ms();
    start("/slow-head", &r, "GET", NULL, (upstream_timeouts){.ttfb_ms = 200});
    CHECK(wait1(&r));
    took = now_ms() - t0;
    CHECK_EQ_STR(upstream_result_name(r.d.result), "ttfb_timeout");
    CHECK_EQ_INT(r.d.status, 0);
    CHECK_EQ_INT(r.headers_calls, 0);
    CHECK_MSG(took >= 195 && took < 1000, "ttfb timeout after %llu ms", (unsigned long long)took);
    sg_buf_free(&r.body);
    /* total */
    res_init(&r);
    t0 = now_ms();
    start("/slow-stream", &r, "GET", NULL, (upstream_timeouts){.total_ms = 100});
    CHECK(wait1(&r));
    took = now_ms() - t0;
    CHECK_EQ_STR(upstream_result_name(r.d.result), "total_timeout");
    CHECK(r.data_calls >= 1);
    CHECK_MSG(took >= 95 && took < 1000, "total timeout after %llu ms", (unsigned long long)took);
    sg_buf_free(&r.body);
    /* connect: a listener whose accept queue is full drops further SYNs */
    int qport;
    int qfd = listen_any(0, &qport);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)qport)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    }
    usleep(50 * 1000);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", qport);
    res_init(&r);
    t0 = now_ms();
    start(url, &r, "GET", NULL, (upstream_timeouts){.connect_ms = 200});
    CHECK(wait1(&r));
    took = now_ms() - t0;
    CHECK_EQ_STR(upstream_result_name(r.d.result), "connect_timeout");
    CHECK_MSG(took >= 195 && took < 1000, "connect timeout after %llu ms", (unsigned long long)took);
    sg_buf_free(&r.body);
    for (int i = 0; i < 4; i++) close(fillers[i]);
    close(qfd);
    /* the connection that timed out mid-response was dropped, the rest still work */
    res_init(&r);
    start("/ok", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r) && r.d.result == UPSTREAM_OK);
    sg_buf_free(&r.body);
    teardown();
}

static void test_failures(void) {
    setup();
    result r;
    res_init(&r);
    start("/reset-before", &r, "POST", "{}", (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_MSG(r.d.result == UPSTREAM_ERR_RESET_BEFORE_RESPONSE, "reset-before: %s (%s)",
              upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.headers_calls, 0);
    sg_buf_free(&r.body);

    res_init(&r);
    start("/close-before", &r, "POST", "{}", (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_MSG(r.d.result == UPSTREAM_ERR_RESET_BEFORE_RESPONSE, "close-before: %s (%s)",
              upstream_result_name(r.d.result), r.d.error);
    sg_buf_free(&r.body);

    res_init(&r);
    start("/reset-after", &r, "POST", "{}", (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_MSG(r.d.result == UPSTREAM_ERR_RESET_DURING_RESPONSE, "reset-after: %s (%s)",
              upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.d.status, 200);
    CHECK_EQ_STR(r.body.data, "data: first\n\n");
    sg_buf_free(&r.body);

    res_init(&r);
    start("/short-body", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_MSG(r.d.result == UPSTREAM_ERR_RESET_DURING_RESPONSE, "short-body: %s (%s)",
              upstream_result_name(r.d.result), r.d.error);
    sg_buf_free(&r.body);

    /* refused: a port with nothing listening */
    int port;
    int fd = listen_any(1, &port);
    close(fd);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    res_init(&r);
    start(url, &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_EQ_STR(upstream_result_name(r.d.result), "connect_refused");
    CHECK(r.d.error[0] != 0);
    CHECK(upstream_result_is_transport_error(r.d.result));
    sg_buf_free(&r.body);

    /* DNS: the .invalid TLD never resolves */
    res_init(&r);
    start("http://no-such-host.invalid/x", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_EQ_STR(upstream_result_name(r.d.result), "dns");
    sg_buf_free(&r.body);

    /* TLS: https to a plain HTTP server fails the handshake */
    snprintf(url, sizeof url, "https://127.0.0.1:%d/ok", S.port);
    res_init(&r);
    start(url, &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_MSG(r.d.result == UPSTREAM_ERR_TLS, "tls: %s (%s)", upstream_result_name(r.d.result), r.d.error);
    sg_buf_free(&r.body);

    /* malformed URL / unsupported scheme */
    res_init(&r);
    start("ftp://127.0.0.1/x", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    CHECK_EQ_STR(upstream_result_name(r.d.result), "bad_request");
    CHECK(!upstream_result_is_transport_error(r.d.result));
    sg_buf_free(&r.body);

    /* a URL that does not parse is refused at once, with no callback */
    res_init(&r);
    CHECK(start("http://bad host/x", &r, "GET", NULL, (upstream_timeouts){0}) == NULL);
    spin(20);
    CHECK_EQ_INT(r.done, 0);

    upstream_stats st = upstream_get_stats(U);
    CHECK_EQ_INT(st.in_flight, 0);
    CHECK_EQ_INT(st.completed, 0);
    CHECK_EQ_INT(g_cb_inside_start, 0);  /* even refusals on loopback, found at connect() */
    teardown();
}

static void test_cancel(void) {
    setup();
    result r;
    /* from on_data: no on_done afterwards */
    res_init(&r);
    r.cancel_on_data_n = 1;
    start("/slow-stream", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    spin(300);
    CHECK_EQ_INT(r.data_calls, 1);
    CHECK_EQ_INT(r.d.result, 0);
    CHECK(r.d.error == NULL);
    sg_buf_free(&r.body);
    /* from on_headers */
    res_init(&r);
    r.cancel_on_headers = 1;
    start("/slow-stream", &r, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&r));
    spin(100);
    CHECK_EQ_INT(r.data_calls, 0);
    CHECK(r.d.error == NULL);
    sg_buf_free(&r.body);
    /* right after starting */
    res_init(&r);
    upstream_xfer *t = start("/slow-head", &r, "GET", NULL, (upstream_timeouts){0});
    upstream_cancel(t);
    spin(100);
    CHECK_EQ_INT(r.done, 0);
    upstream_stats st = upstream_get_stats(U);
    CHECK_EQ_INT(st.cancelled, 3);
    CHECK_EQ_INT(st.in_flight, 0);
    /* and everything still works, including a request chained from on_done */
    result a, b;
    res_init(&a);
    res_init(&b);
    a.chain_url = "/echo";
    a.chained = &b;
    start("/ok", &a, "GET", NULL, (upstream_timeouts){0});
    CHECK(wait1(&a) && wait1(&b));
    CHECK_EQ_INT(a.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(b.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(b.status, 200);
    sg_buf_free(&a.body);
    sg_buf_free(&b.body);
    /* a request still running when the upstream is freed: no callback, no leak */
    res_init(&r);
    start("/slow-head", &r, "GET", NULL, (upstream_timeouts){0});
    spin(50);
    teardown();
    CHECK_EQ_INT(r.done, 0);
}

static void test_pause_resume(void) {
    setup();
    result r;
    res_init(&r);
    r.pause_ms = 300;
    uint64_t t0 = now_ms();
    /* an idle timeout shorter than the pause must not fire while paused */
    start("/big", &r, "GET", NULL, (upstream_timeouts){.idle_ms = 150});
    CHECK(wait1(&r));
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.body.len, 4u << 20);
    CHECK_EQ_INT(r.data_while_paused, 0);
    CHECK(now_ms() - t0 >= 300);
    sg_buf_free(&r.body);
    teardown();
}

/* ------------------------------------------------------------------------------------ */
/* native client only: framing, limits, pooling */

static void get(const char *path, result *r, const char *method) {
    res_init(r);
    start(path, r, method, NULL, (upstream_timeouts){0});
    CHECK(wait1(r));
}

static void test_framing(void) {
    setup();
    result r;
    get("/head", &r, "HEAD");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, 0);
    sg_buf_free(&r.body);
    get("/204", &r, "GET");
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(r.status, 204);
    CHECK_EQ_INT(r.d.new_connection, 0);
    sg_buf_free(&r.body);
    get("/304", &r, "GET");
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(r.status, 304);
    CHECK_EQ_INT(r.body.len, 0);
    sg_buf_free(&r.body);
    get("/chunk-ext", &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_STR(r.body.data, "hello world");
    CHECK_EQ_INT(r.d.body_bytes, 11);
    sg_buf_free(&r.body);
    get("/ok", &r, "GET");  /* the connection is still good after trailers */
    CHECK_EQ_INT(r.d.new_connection, 0);
    CHECK_EQ_STR(r.body.data, "hello");
    sg_buf_free(&r.body);
    get("/close-delimited", &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_STR(r.body.data, "until close");
    CHECK_EQ_STR(r.content_type, "text/plain");
    sg_buf_free(&r.body);
    get("/bad-status", &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "protocol");
    sg_buf_free(&r.body);
    get("/bad-chunk", &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "protocol");
    CHECK_EQ_INT(r.body.len, 0);
    sg_buf_free(&r.body);
    /* localhost needs no resolver; a name that is not an IP literal goes through it */
    char url[128];
    snprintf(url, sizeof url, "http://localhost:%d/ok", S.port);
    get(url, &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    sg_buf_free(&r.body);
    snprintf(url, sizeof url, "http://ip6-localhost.invalid:%d/ok", S.port);
    get(url, &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "dns");
    CHECK_EQ_INT(r.d.requests_sent, 0);
    sg_buf_free(&r.body);
    upstream_stats st = upstream_get_stats(U);
    CHECK_EQ_INT(st.in_flight, 0);
    teardown();
}

/* Size bounds: a body above max_body_bytes is cut (nothing past the bound reaches
 * on_data), a declared Content-Length above it fails before any body byte is read, a
 * head above max_head_bytes fails; each as too_large, quickly, and the client is fine
 * afterwards. A bound equal to the body's size is no failure; none is applied to a
 * request that sets none. */
static void test_bounds(void) {
    setup();
    result r;
    g_max_body = 1u << 20;
    uint64_t t0 = now_ms();
    get("/endless-chunked", &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_ERR_TOO_LARGE, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_STR(upstream_result_name(r.d.result), "too_large");
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.headers_calls, 1);
    CHECK(r.body.len <= (1u << 20));
    CHECK(r.d.body_bytes <= (1u << 20));
    CHECK_EQ_INT(r.d.body_bytes, r.body.len);
    CHECK_MSG(strstr(r.error, "1048576") != NULL, "%s", r.error);
    CHECK_MSG(now_ms() - t0 < 5000, "%llu ms", (unsigned long long)(now_ms() - t0));
    sg_buf_free(&r.body);

    t0 = now_ms();
    get("/huge-length", &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "too_large");
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, 0);          /* failed on the head: no body byte delivered */
    CHECK_EQ_INT(r.d.body_bytes, 0);
    CHECK_MSG(strstr(r.error, "2147483648") && strstr(r.error, "1048576"), "%s", r.error);
    CHECK_MSG(now_ms() - t0 < 1000, "%llu ms: not at once", (unsigned long long)(now_ms() - t0));
    sg_buf_free(&r.body);

    /* /big is 4 MiB with a Content-Length: a bound of exactly that passes, one less fails */
    g_max_body = 4u << 20;
    get("/big", &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.body.len, 4u << 20);
    sg_buf_free(&r.body);
    g_max_body = (4u << 20) - 1;
    get("/big", &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "too_large");
    CHECK_EQ_INT(r.body.len, 0);
    sg_buf_free(&r.body);
    g_max_body = 0;                        /* no bound: all of it */
    get("/big", &r, "GET");
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(r.body.len, 4u << 20);
    sg_buf_free(&r.body);

    /* a 160 KiB head: over the default 64 KiB head bound, within a 256 KiB one; one
     * 160 KiB line is over it too (libcurl has its own 100 KiB bound per line) */
    get("/huge-head", &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "too_large");
    CHECK_EQ_INT(r.headers_calls, 0);
    sg_buf_free(&r.body);
    get("/many-headers", &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "too_large");
    CHECK_EQ_INT(r.headers_calls, 0);
    CHECK_EQ_INT(r.d.status, 0);
    CHECK_MSG(strstr(r.error, "head") != NULL, "%s", r.error);
    sg_buf_free(&r.body);
    g_max_head = 256u << 10;
    get("/many-headers", &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.status, 200);
    sg_buf_free(&r.body);
    g_max_head = 0;

    get("/ok", &r, "GET");                 /* still serving */
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_STR(r.body.data, "hello");
    sg_buf_free(&r.body);
    upstream_stats st = upstream_get_stats(U);
    CHECK_EQ_INT(st.in_flight, 0);
    teardown();
}

static void test_pool(void) {
    setup();
    result r;
    /* sequential requests: one connection */
    for (int i = 0; i < 20; i++) {
        get("/ok", &r, "GET");
        CHECK_EQ_INT(r.d.new_connection, i == 0);
        sg_buf_free(&r.body);
    }
    CHECK_EQ_INT(atomic_load(&S.accepts), 1);
    /* the server closes an idle connection: seen while idle, the next request reconnects */
    get("/bye", &r, "GET");
    CHECK_EQ_STR(r.body.data, "bye");
    sg_buf_free(&r.body);
    spin(150);
    get("/ok", &r, "GET");
    CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
    CHECK_EQ_INT(r.d.new_connection, 1);
    CHECK_EQ_INT(r.d.requests_sent, 1);
    CHECK_EQ_INT(atomic_load(&S.accepts), 2);
    sg_buf_free(&r.body);
    /* a reused connection that dies before any response byte: sent again, once, on a
     * fresh connection, and counted */
    get("/flaky", &r, "POST");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_STR(r.body.data, "ok");
    CHECK_EQ_INT(r.d.requests_sent, 2);
    CHECK_EQ_INT(r.d.new_connection, 1);
    CHECK_EQ_INT(atomic_load(&S.accepts), 3);
    sg_buf_free(&r.body);
    /* ... only once: a second failure is reported */
    get("/close-before", &r, "GET");
    CHECK_EQ_STR(upstream_result_name(r.d.result), "reset_before_response");
    CHECK_EQ_INT(r.d.requests_sent, 2);
    sg_buf_free(&r.body);
    upstream_stats st = upstream_get_stats(U);
    CHECK_EQ_INT(st.connections, 4);
    CHECK_EQ_INT(st.in_flight, 0);
    teardown();

    /* idle connections expire after pool_idle_ms */
    g_pool_idle_ms = 100;
    setup();
    get("/ok", &r, "GET");
    sg_buf_free(&r.body);
    spin(300);
    get("/ok", &r, "GET");
    CHECK_EQ_INT(r.d.new_connection, 1);
    CHECK_EQ_INT(atomic_load(&S.accepts), 2);
    sg_buf_free(&r.body);
    teardown();
    g_pool_idle_ms = 0;
}

/* ------------------------------------------------------------------------------------ */
/* TLS: throwaway certificates, `openssl s_server`, and a keep-alive server of our own */

static int make_cert(const char *dir, const char *name, const char *cn, const char *san) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
             "-subj /CN=%s -addext subjectAltName=%s -keyout %s/%s.key -out %s/%s.pem >/dev/null 2>&1",
             cn, san, dir, name, dir, name);
    return system(cmd);
}

static int free_port(void) {
    int port;
    int fd = listen_any(1, &port);
    close(fd);
    return port;
}

static int wait_port(int port) {
    for (int i = 0; i < 300; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return 0;
        usleep(10 * 1000);
    }
    return -1;
}

static pid_t s_server(const char *dir, const char *name, int port) {
    char acc[32], cert[512], key[512];
    snprintf(acc, sizeof acc, "127.0.0.1:%d", port);
    snprintf(cert, sizeof cert, "%s/%s.pem", dir, name);
    snprintf(key, sizeof key, "%s/%s.key", dir, name);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("openssl", "openssl", "s_server", "-accept", acc, "-cert", cert, "-key", key, "-www", "-quiet",
               (char *)NULL);
        _exit(127);
    }
    if (pid > 0 && wait_port(port) < 0) {
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* An in-test TLS server: keep-alive, "GET /ok" answered with a chunked body. */
typedef struct tls_srv {
    SSL_CTX   *ctx;
    int        lfd, port;
    atomic_int stop, accepts, resumed;
    pthread_t  th;
} tls_srv;

static void *tls_srv_main(void *arg) {
    tls_srv *ts = arg;
    while (!atomic_load(&ts->stop)) {
        struct pollfd p = {ts->lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int fd = accept(ts->lfd, NULL, NULL);
        if (fd < 0) continue;
        atomic_fetch_add(&ts->accepts, 1);
        SSL *ssl = SSL_new(ts->ctx);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            if (SSL_session_reused(ssl)) atomic_fetch_add(&ts->resumed, 1);
            char buf[8192];
            size_t len = 0;
            for (;;) {
                int n = SSL_read(ssl, buf + len, (int)(sizeof buf - len - 1));
                if (n <= 0) break;
                len += (size_t)n;
                buf[len] = 0;
                char *end = strstr(buf, "\r\n\r\n");
                if (!end) continue;
                static const char resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                           "7\r\nsecure!\r\n0\r\n\r\n";
                SSL_write(ssl, resp, (int)sizeof resp - 1);
                size_t used = (size_t)(end + 4 - buf);
                memmove(buf, buf + used, len - used);
                len -= used;
            }
        }
        SSL_free(ssl);
        close(fd);
    }
    return NULL;
}

static void test_tls(void) {
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_tls: no openssl binary, skipped\n");
        return;
    }
    const char *dir = tu_tmpdir();
    CHECK(make_cert(dir, "good", "localhost", "DNS:localhost,IP:127.0.0.1") == 0);
    CHECK(make_cert(dir, "wrong", "wrong.example", "DNS:wrong.example") == 0);
    /* trust both certificates: the wrong one must still fail on its name */
    char ca[512], cmd[1200];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cmd, sizeof cmd, "cat %s/good.pem %s/wrong.pem > %s", dir, dir, ca);
    CHECK(system(cmd) == 0);
    int p1 = free_port(), p2 = free_port();
    pid_t good = s_server(dir, "good", p1), wrong = s_server(dir, "wrong", p2);
    CHECK(good > 0 && wrong > 0);

    g_ca_file = ca;
    setup();
    char url[128];
    result r;
    snprintf(url, sizeof url, "https://localhost:%d/", p1);
    get(url, &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body.data && strstr(r.body.data, "s_server") != NULL);
    sg_buf_free(&r.body);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/", p1);  /* verified against the IP SAN */
    get(url, &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    sg_buf_free(&r.body);
    snprintf(url, sizeof url, "https://localhost:%d/", p2);  /* trusted, but not for localhost */
    get(url, &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_ERR_TLS, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    CHECK_EQ_INT(r.headers_calls, 0);
    sg_buf_free(&r.body);
    teardown();

    /* the system store does not know our certificate */
    g_ca_file = NULL;
    setup();
    snprintf(url, sizeof url, "https://localhost:%d/", p1);
    get(url, &r, "GET");
    CHECK_MSG(r.d.result == UPSTREAM_ERR_TLS, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
    sg_buf_free(&r.body);
    teardown();

    /* keep-alive over TLS: one handshake for many requests, resumption on reconnect */
    if (g_native) {
        tls_srv ts;
        memset(&ts, 0, sizeof ts);
        ts.ctx = SSL_CTX_new(TLS_server_method());
        char cert[512], key[512];
        snprintf(cert, sizeof cert, "%s/good.pem", dir);
        snprintf(key, sizeof key, "%s/good.key", dir);
        CHECK(SSL_CTX_use_certificate_file(ts.ctx, cert, SSL_FILETYPE_PEM) == 1);
        CHECK(SSL_CTX_use_PrivateKey_file(ts.ctx, key, SSL_FILETYPE_PEM) == 1);
        ts.lfd = listen_any(16, &ts.port);
        pthread_create(&ts.th, NULL, tls_srv_main, &ts);
        g_ca_file = ca;
        g_pool_idle_ms = 200;
        setup();
        snprintf(url, sizeof url, "https://localhost:%d/ok", ts.port);
        for (int i = 0; i < 10; i++) {
            get(url, &r, i % 2 ? "POST" : "GET");
            CHECK_MSG(r.d.result == UPSTREAM_OK, "%s (%s)", upstream_result_name(r.d.result), r.d.error);
            CHECK_EQ_STR(r.body.data, "secure!");
            sg_buf_free(&r.body);
        }
        CHECK_EQ_INT(atomic_load(&ts.accepts), 1);
        spin(400);  /* the idle connection expires */
        get(url, &r, "GET");
        CHECK_EQ_INT(r.d.result, UPSTREAM_OK);
        CHECK_EQ_INT(r.d.new_connection, 1);
        sg_buf_free(&r.body);
        CHECK_EQ_INT(atomic_load(&ts.accepts), 2);
        CHECK_EQ_INT(atomic_load(&ts.resumed), 1);
        teardown();
        g_pool_idle_ms = 0;
        atomic_store(&ts.stop, 1);
        pthread_join(ts.th, NULL);
        close(ts.lfd);
        SSL_CTX_free(ts.ctx);
    } else {
        server_start();  /* teardown() stops it below */
        server_stop();
    }
    g_ca_file = NULL;
    if (good > 0) { kill(good, SIGTERM); waitpid(good, NULL, 0); }
    if (wrong > 0) { kill(wrong, SIGTERM); waitpid(wrong, NULL, 0); }
}

static void run_all(void) {
    RUN(test_basic);
    RUN(test_connection_reuse);
    RUN(test_streaming);
    RUN(test_timeouts);
    RUN(test_failures);
    RUN(test_cancel);
    RUN(test_pause_resume);
    RUN(test_bounds);
    RUN(test_tls);
}

int main(int argc, char **argv) {
    (void)argc;
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "%s\n", upstream_version());
    /* SMOLGATE_UPSTREAM=curl would turn the native client off: the cases pick it here */
    unsetenv("SMOLGATE_UPSTREAM");
    fprintf(stderr, "-- native client\n");
    g_native = 1;
    run_all();
    RUN(test_framing);
    RUN(test_pool);
    fprintf(stderr, "-- libcurl\n");
    g_native = 0;
    run_all();
    return tu_finish(argv[0]);
}
