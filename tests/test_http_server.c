/* test_http_server.c: the HTTP/1.1 server (and the loop under it) driven with raw sockets.
 * Each test starts a server on 127.0.0.1:0 with its loop on a background thread, talks to
 * it with blocking sockets (5 s receive timeout), and tears it down. Handlers, chosen by
 * path, exercise immediate, delayed (timer) and streamed responses. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "gateway/http_server.h"
#include "gateway/loop.h"
#include "testutil.h"

/* ------------------------------------------------------------------------------------ */
/* server fixture */

typedef struct fixture {
    loop        *l;
    http_server *s;
    pthread_t    th;
    int          port;
    atomic_int   aborts;          /* abort callbacks run */
    atomic_int   writes_after_abort_failed;
    atomic_int   drains;          /* on_drain callbacks run */
    atomic_int   shutdown_done;
    atomic_size_t max_buffered;
    atomic_int   hellos;          /* /hello requests handled */
    atomic_int   hook_calls;      /* before_send calls */
    atomic_int   hook_saw_hellos; /* hellos at the last before_send call */
} fixture;

static fixture F;

static long qparam(const http_request *r, const char *key, long dflt) {
    const char *q = strstr(r->query, key);
    if (!q || q[strlen(key)] != '=') return dflt;
    return strtol(q + strlen(key) + 1, NULL, 10);
}

/* Delayed answer: a timer in exchange memory. */
typedef struct delayed {
    loop_timer     t;
    http_exchange *x;
} delayed;

static void delayed_fire(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    delayed *d = arg;
    static const http_header h[] = {{"Content-Type", "text/plain"}};
    http_respond(d->x, 200, h, 1, "late", 4);
}

static void delayed_abort(http_exchange *x, void *arg) {
    delayed *d = arg;
    atomic_fetch_add(&F.aborts, 1);
    loop_timer_stop(http_exchange_loop(x), &d->t);
    http_exchange_close(x);
}

/* Streamed answer: n chunks, ms apart. On abort it only counts, and keeps writing, to
 * check that writes after an abort fail harmlessly and stream_end still releases. */
typedef struct streamer {
    loop_timer     t;
    http_exchange *x;
    int            left, i, ms;
} streamer;

static void streamer_fire(loop *l, loop_timer *t, void *arg) {
    streamer *st = arg;
    char frame[64];
    int n = snprintf(frame, sizeof frame, "data: chunk %d\n\n", st->i++);
    if (http_stream_write(st->x, frame, (size_t)n) < 0) {
        if (http_exchange_aborted(st->x)) atomic_fetch_add(&F.writes_after_abort_failed, 1);
        http_stream_end(st->x);
        return;
    }
    if (--st->left == 0) {
        http_stream_end(st->x);
        return;
    }
    loop_timer_start(l, t, (uint64_t)st->ms);
}

static void streamer_abort(http_exchange *x, void *arg) {
    (void)x; (void)arg;
    atomic_fetch_add(&F.aborts, 1);
}

/* Flood: writes 16 KiB chunks up to total bytes, pausing above 512 KiB buffered and
 * resuming from the drain callback. */
typedef struct flooder {
    http_exchange *x;
    size_t         left;
} flooder;

static void flood_drained(http_exchange *x, void *arg);

static void flood_more(http_exchange *x, flooder *f) {
    static char block[16384];
    memset(block, 'z', sizeof block);
    while (f->left) {
        size_t b = http_exchange_buffered(x);
        if (b > atomic_load(&F.max_buffered)) atomic_store(&F.max_buffered, b);
        if (b > 512 * 1024) {
            http_exchange_on_drain(x, 64 * 1024, flood_drained, f);
            return;
        }
        size_t n = f->left < sizeof block ? f->left : sizeof block;
        if (http_stream_write(x, block, n) < 0) {
            http_stream_end(x);
            return;
        }
        f->left -= n;
    }
    http_stream_end(x);
}

static void flood_drained(http_exchange *x, void *arg) {
    atomic_fetch_add(&F.drains, 1);
    flood_more(x, arg);
}

/* The byte at offset i of a test body: every value, CR, LF and NUL included. */
static unsigned char body_byte(unsigned seed, size_t i) {
    return (unsigned char)((i * 131u) ^ (i >> 9) ^ seed);
}

/* /check: what the handler saw, as one line the test compares byte for byte: method,
 * path, query, the X-Tag and Content-Type headers, the header count, and whether the
 * body is body_byte(X-Seed, i) for every i. */
static void check_request(http_exchange *x, const http_request *r) {
    const char *tag = http_request_header(r, "x-tag");
    const char *ct = http_request_header(r, "content-type");
    const char *seed = http_request_header(r, "x-seed");
    unsigned sd = seed ? (unsigned)strtoul(seed, NULL, 10) : 0;
    size_t bad = r->body_len;
    for (size_t i = 0; i < r->body_len; i++)
        if ((unsigned char)r->body[i] != body_byte(sd, i)) { bad = i; break; }
    char out[512];
    int n = snprintf(out, sizeof out, "%s %s q=%s tag=%s ct=%s headers=%zu len=%zu body=", r->method, r->path,
                     r->query, tag ? tag : "-", ct ? ct : "-", r->n_headers, r->body_len);
    if (bad == r->body_len) n += snprintf(out + n, sizeof out - (size_t)n, "exact");
    else n += snprintf(out + n, sizeof out - (size_t)n, "differs at %zu", bad);
    http_respond(x, 200, NULL, 0, out, (size_t)n);
}

static void handler(http_exchange *x, const http_request *r, void *arg) {
    (void)arg;
    loop *l = http_exchange_loop(x);
    if (!strcmp(r->path, "/check")) {
        check_request(x, r);
    } else if (!strcmp(r->path, "/hello")) {
        static const http_header h[] = {{"Content-Type", "text/plain"}};
        atomic_fetch_add(&F.hellos, 1);
        http_respond(x, 200, h, 1, "hello", 5);
    } else if (!strcmp(r->path, "/echo")) {
        char len[32];
        snprintf(len, sizeof len, "%zu", r->body_len);
        const char *ua = http_request_header(r, "user-agent");
        http_header h[] = {{"X-Method", r->method}, {"X-Path", r->path}, {"X-Query", r->query},
                           {"X-Body-Len", len}, {"X-UA", ua ? ua : "-"},
                           {"X-Request-Id-Seen", r->request_id},
                           {"Content-Length", "999"},  /* reserved: ignored */
                           {"X-Bad", "a\r\nInjected: yes"}};
        size_t nh = sizeof h / sizeof h[0] - (strstr(r->query, "bad=1") ? 0 : 1);
        http_respond(x, 200, h, nh, r->body, r->body_len);
    } else if (!strcmp(r->path, "/async")) {
        delayed *d = http_exchange_alloc(x, sizeof *d);
        d->x = x;
        loop_timer_init(&d->t, delayed_fire, d);
        loop_timer_start(l, &d->t, (uint64_t)qparam(r, "ms", 50));
        http_exchange_on_abort(x, delayed_abort, d);
    } else if (!strcmp(r->path, "/stream")) {
        streamer *st = http_exchange_alloc(x, sizeof *st);
        st->x = x;
        st->left = (int)qparam(r, "n", 3);
        st->ms = (int)qparam(r, "ms", 50);
        st->i = 0;
        loop_timer_init(&st->t, streamer_fire, st);
        static const http_header h[] = {{"Content-Type", "text/event-stream"}};
        http_stream_begin(x, 200, h, 1);
        http_exchange_on_abort(x, streamer_abort, st);
        loop_timer_start(l, &st->t, 0);
    } else if (!strcmp(r->path, "/flood")) {
        flooder *f = http_exchange_alloc(x, sizeof *f);
        f->x = x;
        f->left = (size_t)qparam(r, "bytes", 4 << 20);
        http_stream_begin(x, 200, NULL, 0);
        flood_more(x, f);
    } else if (!strcmp(r->path, "/big")) {
        size_t n = (size_t)qparam(r, "bytes", 1 << 20);
        char *body = http_exchange_alloc(x, n);
        for (size_t i = 0; i < n; i++) body[i] = (char)('a' + i % 26);
        http_respond(x, 200, NULL, 0, body, n);
    } else {
        static const char nf[] = "{\"error\":\"not found\"}";
        http_respond(x, 404, NULL, 0, nf, sizeof nf - 1);
    }
}

static void *loop_thread(void *arg) {
    sg_error err;
    if (loop_run(arg, &err) < 0) fprintf(stderr, "loop_run: %s\n", err.msg);
    return NULL;
}

/* Runs fn(arg) on the loop thread and waits for it. */
typedef struct sync_call {
    void (*fn)(void *);
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} sync_call;

static void sync_trampoline(loop *l, void *arg) {
    (void)l;
    sync_call *sc = arg;
    sc->fn(sc->arg);
    pthread_mutex_lock(&sc->mu);
    sc->done = 1;
    pthread_cond_signal(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
}

static void on_loop(void (*fn)(void *), void *arg) {
    sync_call sc = {.fn = fn, .arg = arg, .done = 0};
    pthread_mutex_init(&sc.mu, NULL);
    pthread_cond_init(&sc.cv, NULL);
    loop_post(F.l, sync_trampoline, &sc);
    pthread_mutex_lock(&sc.mu);
    while (!sc.done) pthread_cond_wait(&sc.cv, &sc.mu);
    pthread_mutex_unlock(&sc.mu);
    pthread_mutex_destroy(&sc.mu);
    pthread_cond_destroy(&sc.cv);
}

static void start_server(http_server_config *cfg) {
    sg_error err;
    memset(&F, 0, sizeof F);
    F.l = loop_new(&err);
    cfg->listen = "127.0.0.1:0";
    cfg->handler = handler;
    F.s = http_server_new(F.l, cfg, &err);
    if (!F.s) { fprintf(stderr, "server: %s\n", err.msg); abort(); }
    F.port = http_server_port(F.s);
    pthread_create(&F.th, NULL, loop_thread, F.l);
}

static void start_default(void) {
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.max_body_bytes = 1 << 20;
    cfg.max_header_bytes = 4096;
    cfg.max_uri_bytes = 1024;
    cfg.linger_ms = 200;
    start_server(&cfg);
}

static void stop_fn(void *arg) {
    (void)arg;
    if (F.s) http_server_free(F.s);
    F.s = NULL;
    loop_stop(F.l);
}

static void stop_server(void) {
    on_loop(stop_fn, NULL);
    pthread_join(F.th, NULL);
    loop_free(F.l);
    F.l = NULL;
}

static http_server_stats stats_now;
static void stats_fn(void *arg) { (void)arg; stats_now = http_server_get_stats(F.s); }
static http_server_stats get_stats(void) {
    on_loop(stats_fn, NULL);
    return stats_now;
}

/* Connections the server has not yet seen close may still count: wait up to 1 s. */
static uint64_t open_conns_settled(void) {
    http_server_stats st = get_stats();
    for (int i = 0; i < 100 && st.conns_open; i++) {
        usleep(10 * 1000);
        st = get_stats();
    }
    return st.conns_open;
}

/* ------------------------------------------------------------------------------------ */
/* a tiny blocking client */

typedef struct client {
    int    fd;
    char   buf[1 << 16];
    size_t len;
} client;

typedef struct response {
    int    status;
    char   head[8192];  /* status line and headers, NUL-terminated */
    sg_buf body;
    int    chunks;      /* chunks seen (chunked responses) */
    int    closed;      /* body ended by EOF */
} response;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void client_open(client *c) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); abort(); }
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->len = 0;
}

static void client_close(client *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static void client_send(client *c, const char *data, size_t n) {
    while (n) {
        ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        data += w;
        n -= (size_t)w;
    }
}
static void client_sends(client *c, const char *s) { client_send(c, s, strlen(s)); }

/* Reads more into c->buf; returns bytes read, 0 on EOF, -1 on error/timeout. */
static ssize_t client_fill(client *c) {
    if (c->len == sizeof c->buf) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n > 0) c->len += (size_t)n;
    return n;
}

static void client_consume(client *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Waits until c->buf holds a CRLF-terminated line; returns its length (with CRLF) or -1. */
static ssize_t client_line(client *c) {
    for (;;) {
        char *nl = memmem(c->buf, c->len, "\r\n", 2);
        if (nl) return nl - c->buf + 2;
        if (client_fill(c) <= 0) return -1;
    }
}

static int client_need(client *c, size_t n) {
    while (c->len < n)
        if (client_fill(c) <= 0) return -1;
    return 0;
}

static const char *resp_header(response *r, const char *name, char *out, size_t outn) {
    char *p = r->head;
    size_t nl = strlen(name);
    while ((p = strstr(p, "\r\n"))) {
        p += 2;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ') v++;
            size_t k = 0;
            while (v[k] && v[k] != '\r' && k + 1 < outn) { out[k] = v[k]; k++; }
            out[k] = 0;
            return out;
        }
    }
    return NULL;
}

/* Reads one response (skipping 100 Continue). Returns 0, or -1 on EOF/timeout/garbage.
 * head_request: no body follows. */
static int client_response_ex(client *c, response *r, int head_request) {
    memset(r->head, 0, sizeof r->head);
    sg_buf_init(&r->body);
    r->status = 0;
    r->chunks = 0;
    r->closed = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
            if (client_fill(c) <= 0) return -1;
        size_t hl = (size_t)(end - c->buf) + 4;
        if (hl >= sizeof r->head) return -1;
        memcpy(r->head, c->buf, hl);
        r->head[hl] = 0;
        client_consume(c, hl);
        if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
        if (r->status != 100) break;
    }
    if (head_request || r->status == 204 || r->status == 304) return 0;
    char v[64];
    if (resp_header(r, "transfer-encoding", v, sizeof v)) {
        for (;;) {
            ssize_t ll = client_line(c);
            if (ll < 0) return -1;
            size_t size = strtoul(c->buf, NULL, 16);
            client_consume(c, (size_t)ll);
            if (size == 0) {
                if (client_line(c) < 0) return -1;  /* empty trailer line */
                client_consume(c, 2);
                return 0;
            }
            if (client_need(c, size + 2) < 0) return -1;
            sg_buf_append(&r->body, c->buf, size);
            client_consume(c, size + 2);
            r->chunks++;
        }
    }
    if (resp_header(r, "content-length", v, sizeof v)) {
        size_t n = strtoul(v, NULL, 10);
        while (n) {
            if (!c->len && client_fill(c) <= 0) return -1;
            size_t k = c->len < n ? c->len : n;
            sg_buf_append(&r->body, c->buf, k);
            client_consume(c, k);
            n -= k;
        }
        return 0;
    }
    for (;;) {  /* close-delimited */
        if (c->len) { sg_buf_append(&r->body, c->buf, c->len); c->len = 0; }
        ssize_t n = client_fill(c);
        if (n == 0) { r->closed = 1; return 0; }
        if (n < 0) return -1;
    }
}
static int client_response(client *c, response *r) { return client_response_ex(c, r, 0); }

/* Does the server close the connection (EOF) within ms? Drains what comes first. */
static int client_sees_eof(client *c, int ms) {
    uint64_t until = now_ms() + (uint64_t)ms;
    while (now_ms() < until) {
        struct pollfd p = {c->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        char tmp[4096];
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n == 0) return 1;
        if (n < 0 && errno != EAGAIN && errno != EINTR) return 1;  /* reset counts as closed */
    }
    return 0;
}

/* One request on a fresh connection; returns the status (or -1). */
static int one_shot(const char *raw, response *r) {
    client c;
    client_open(&c);
    client_sends(&c, raw);
    int rc = client_response(&c, r);
    client_close(&c);
    return rc < 0 ? -1 : r->status;
}

/* ------------------------------------------------------------------------------------ */
/* tests */

static void test_simple_get(void) {
    start_default();
    response r;
    CHECK_EQ_INT(one_shot("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK_EQ_STR(r.body.data, "hello");
    char v[64];
    CHECK(resp_header(&r, "date", v, sizeof v) != NULL);
    CHECK(resp_header(&r, "content-length", v, sizeof v) && !strcmp(v, "5"));
    CHECK(resp_header(&r, "x-request-id", v, sizeof v) && strlen(v) == 32 && strspn(v, "0123456789abcdef") == 32);
    CHECK(v[12] == '7');   /* UUIDv7 layout: the id starts with the time */
    CHECK(resp_header(&r, "connection", v, sizeof v) == NULL);  /* keep-alive is implied */
    sg_buf_free(&r.body);
    char v2[64];
    CHECK_EQ_INT(one_shot("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK(resp_header(&r, "x-request-id", v2, sizeof v2) && strcmp(v2, v) > 0);   /* later id sorts after */
    sg_buf_free(&r.body);
    CHECK_EQ_INT(one_shot("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &r), 404);
    sg_buf_free(&r.body);
    stop_server();
}

static void test_post_echo(void) {
    start_default();
    response r;
    const char *req = "POST /echo?a=1&b=2&bad=1 HTTP/1.1\r\nHost: x\r\nUser-Agent:   tester/1.0  \r\n"
                      "Content-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world";
    CHECK_EQ_INT(one_shot(req, &r), 200);
    CHECK_EQ_STR(r.body.data, "hello world");
    char v[128], id[64];
    CHECK(resp_header(&r, "x-method", v, sizeof v) && !strcmp(v, "POST"));
    CHECK(resp_header(&r, "x-path", v, sizeof v) && !strcmp(v, "/echo"));
    CHECK(resp_header(&r, "x-query", v, sizeof v) && !strcmp(v, "a=1&b=2&bad=1"));
    CHECK(resp_header(&r, "x-ua", v, sizeof v) && !strcmp(v, "tester/1.0"));
    CHECK(resp_header(&r, "content-length", v, sizeof v) && !strcmp(v, "11"));
    /* a handler's header with CR/LF in it is dropped, not injected */
    CHECK(!resp_header(&r, "x-bad", v, sizeof v) && !resp_header(&r, "injected", v, sizeof v));
    CHECK(resp_header(&r, "x-request-id", v, sizeof v) && resp_header(&r, "x-request-id-seen", id, sizeof id) &&
          !strcmp(v, id));
    sg_buf_free(&r.body);
    stop_server();
}

static void test_keepalive_many(void) {
    start_default();
    client c;
    client_open(&c);
    int ok = 0;
    char prev_id[64] = "", v[64];
    int unique = 1;
    for (int i = 0; i < 200; i++) {
        client_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        response r;
        if (client_response(&c, &r) == 0 && r.status == 200 && !strcmp(r.body.data, "hello")) ok++;
        if (resp_header(&r, "x-request-id", v, sizeof v)) {
            if (!strcmp(v, prev_id)) unique = 0;
            strcpy(prev_id, v);
        }
        sg_buf_free(&r.body);
    }
    CHECK_EQ_INT(ok, 200);
    CHECK(unique);
    client_close(&c);
    http_server_stats st = get_stats();
    CHECK_EQ_INT(st.accepted, 1);
    CHECK_EQ_INT(st.requests, 200);
    stop_server();
}

static void test_pipelined(void) {
    start_default();
    client c;
    client_open(&c);
    /* Three requests in one write, one of them delayed: responses must keep order. */
    client_sends(&c, "GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /async?ms=80 HTTP/1.1\r\nHost: x\r\n\r\n"
                     "POST /echo?n=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    response r;
    char v[64];
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK(resp_header(&r, "x-query", v, sizeof v) && !strcmp(v, "n=1"));
    sg_buf_free(&r.body);
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK_EQ_STR(r.body.data, "late");
    sg_buf_free(&r.body);
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK(resp_header(&r, "x-query", v, sizeof v) && !strcmp(v, "n=3"));
    CHECK_EQ_STR(r.body.data, "abc");
    sg_buf_free(&r.body);
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK_EQ_STR(r.body.data, "hello");
    CHECK(resp_header(&r, "connection", v, sizeof v) && !strcmp(v, "close"));
    sg_buf_free(&r.body);
    CHECK(client_sees_eof(&c, 2000));
    client_close(&c);
    stop_server();
}

static void test_chunked_request(void) {
    start_default();
    response r;
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n", &r), 200);
    CHECK_EQ_STR(r.body.data, "hello world");
    sg_buf_free(&r.body);

    /* The same body dribbled a byte at a time, then a second request on the connection. */
    client c;
    client_open(&c);
    const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
                      "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
    for (const char *p = req; *p; p++) {
        client_send(&c, p, 1);
        if ((p - req) % 16 == 0) usleep(1000);
    }
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK_EQ_STR(r.body.data, "abc0123456789abcdef");
    sg_buf_free(&r.body);
    client_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    sg_buf_free(&r.body);
    client_close(&c);

    /* Malformed chunk sizes. */
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", &r), 400);
    sg_buf_free(&r.body);
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", &r), 400);
    sg_buf_free(&r.body);
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", &r), 501);
    sg_buf_free(&r.body);
    stop_server();
}

static void test_limits(void) {
    start_default();  /* body 1 MiB, headers 4 KiB, URI 1 KiB */
    response r;
    char v[64];
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\nabc", &r), 413);
    CHECK(strstr(r.body.data, "\"error\"") && strstr(r.body.data, "body_too_large"));
    CHECK(resp_header(&r, "content-type", v, sizeof v) && !strcmp(v, "application/json"));
    CHECK(resp_header(&r, "connection", v, sizeof v) && !strcmp(v, "close"));
    sg_buf_free(&r.body);
    /* absurd Content-Length */
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", &r), 413);
    sg_buf_free(&r.body);
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", &r), 400);
    sg_buf_free(&r.body);
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", &r), 400);
    sg_buf_free(&r.body);
    /* a chunked body that grows past the limit */
    {
        client c;
        client_open(&c);
        client_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        static char block[70000];
        memset(block, 'q', sizeof block);
        char line[32];
        int status = -1;
        for (int i = 0; i < 20; i++) {
            snprintf(line, sizeof line, "%zx\r\n", sizeof block);
            client_sends(&c, line);
            client_send(&c, block, sizeof block);
            client_sends(&c, "\r\n");
        }
        if (client_response(&c, &r) == 0) status = r.status;
        CHECK_EQ_INT(status, 413);
        sg_buf_free(&r.body);
        client_close(&c);
    }
    /* header block too large */
    {
        sg_buf req;
        sg_buf_init(&req);
        sg_buf_puts(&req, "GET /hello HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; i < 100; i++) sg_buf_printf(&req, "X-Filler-%d: %060d\r\n", i, i);
        sg_buf_puts(&req, "\r\n");
        CHECK_EQ_INT(one_shot(req.data, &r), 431);
        sg_buf_free(&r.body);
        sg_buf_free(&req);
    }
    /* URI too long */
    {
        sg_buf req;
        sg_buf_init(&req);
        sg_buf_puts(&req, "GET /");
        for (int i = 0; i < 2000; i++) sg_buf_putc(&req, 'a');
        sg_buf_puts(&req, " HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK_EQ_INT(one_shot(req.data, &r), 414);
        sg_buf_free(&r.body);
        sg_buf_free(&req);
    }
    /* the server is still fine */
    CHECK_EQ_INT(one_shot("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    sg_buf_free(&r.body);
    stop_server();
}

static void test_slowloris(void) {
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.header_timeout_ms = 300;
    cfg.linger_ms = 100;
    start_server(&cfg);
    client slow;
    client_open(&slow);
    uint64_t t0 = now_ms();
    client_sends(&slow, "GET /hello HTTP/1.1\r\n");
    int served = 0;
    /* Dribble a header line every 60 ms (each read resets nothing: the limit is total),
     * while another client is served normally. */
    for (int i = 0; i < 12; i++) {
        usleep(60 * 1000);
        client_sends(&slow, "X-a: b\r\n");
        response r;
        if (one_shot("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 200) served++;
        sg_buf_free(&r.body);
    }
    CHECK_EQ_INT(served, 12);
    response r;
    int rc = client_response(&slow, &r);
    CHECK(rc == 0 && r.status == 408);
    uint64_t took = now_ms() - t0;
    CHECK_MSG(took >= 280 && took < 2000, "408 after %llu ms", (unsigned long long)took);
    if (rc == 0) sg_buf_free(&r.body);
    CHECK(client_sees_eof(&slow, 2000));
    client_close(&slow);

    /* A connection that never sends a byte is closed silently at the same deadline. */
    client idle;
    client_open(&idle);
    t0 = now_ms();
    CHECK(client_sees_eof(&idle, 2000));
    CHECK(now_ms() - t0 >= 250);
    client_close(&idle);
    stop_server();
}

static void test_idle_timeout(void) {
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.idle_timeout_ms = 200;
    start_server(&cfg);
    client c;
    client_open(&c);
    client_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    response r;
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    sg_buf_free(&r.body);
    uint64_t t0 = now_ms();
    CHECK(client_sees_eof(&c, 2000));
    CHECK(now_ms() - t0 >= 150);
    client_close(&c);
    stop_server();
}

static void test_truncated_then_close(void) {
    start_default();
    client c;
    client_open(&c);
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
    client_close(&c);
    client_open(&c);
    client_sends(&c, "GET /hel");
    client_close(&c);
    usleep(50 * 1000);
    response r;
    CHECK_EQ_INT(one_shot("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    sg_buf_free(&r.body);
    CHECK_EQ_INT(open_conns_settled(), 0);
    CHECK_EQ_INT(get_stats().requests, 1);
    stop_server();
}

static void test_bad_requests(void) {
    start_default();
    static const struct { const char *raw; int status; } cases[] = {
        {"GARBAGE\r\n\r\n", 400},
        {"GET /\r\n\r\n", 400},
        {"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505},
        {"GET / HTTP/2\r\nHost: x\r\n\r\n", 505},
        {"GET / FTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET nopath HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET /hello HTTP/1.1\nHost: x\n\n", 400},                        /* bare LF */
        {"GET /hello HTTP/1.1\r\nHost : x\r\n\r\n", 400},                 /* space before colon */
        {"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400},  /* obs-fold */
        {"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400},   /* control char */
        {"GET /hello HTTP/1.1\r\n\r\n", 400},                             /* no Host */
        {"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},       /* two Hosts */
        {"GET /hello HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400},
        {"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400},            /* raw UTF-8 in path */
        {"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 400},               /* invalid UTF-8 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        response r;
        int st = one_shot(cases[i].raw, &r);
        CHECK_MSG(st == cases[i].status, "case %zu: got %d, want %d", i, st, cases[i].status);
        if (st >= 400) CHECK_MSG(r.body.data && strstr(r.body.data, "{\"error\":{\"message\":"), "case %zu: JSON body", i);
        sg_buf_free(&r.body);
    }
    /* Leading empty lines are skipped; percent-escaped bytes pass through undecoded; a
     * body with invalid UTF-8 reaches the handler byte for byte. */
    response r;
    CHECK_EQ_INT(one_shot("\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    sg_buf_free(&r.body);
    char v[64];
    CHECK_EQ_INT(one_shot("GET /echo?q=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    CHECK(resp_header(&r, "x-query", v, sizeof v) && !strcmp(v, "q=%ff%fe"));
    sg_buf_free(&r.body);
    CHECK_EQ_INT(one_shot("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\xff\xfe\xc3\x28", &r), 200);
    CHECK(r.body.len == 4 && !memcmp(r.body.data, "\xff\xfe\xc3\x28", 4));
    sg_buf_free(&r.body);
    /* absolute-form target */
    CHECK_EQ_INT(one_shot("GET http://example.com/echo?z=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", &r), 200);
    CHECK(resp_header(&r, "x-path", v, sizeof v) && !strcmp(v, "/echo"));
    sg_buf_free(&r.body);
    stop_server();
}

static void test_http10_and_head(void) {
    start_default();
    response r;
    client c;
    char v[64];
    /* HTTP/1.0 without keep-alive: closed after the response. */
    client_open(&c);
    client_sends(&c, "GET /hello HTTP/1.0\r\n\r\n");
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK(resp_header(&r, "connection", v, sizeof v) && !strcmp(v, "close"));
    sg_buf_free(&r.body);
    CHECK(client_sees_eof(&c, 2000));
    client_close(&c);
    /* HTTP/1.0 with keep-alive: stays open. */
    client_open(&c);
    for (int i = 0; i < 3; i++) {
        client_sends(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        CHECK(client_response(&c, &r) == 0 && r.status == 200);
        CHECK(resp_header(&r, "connection", v, sizeof v) && !strcmp(v, "keep-alive"));
        sg_buf_free(&r.body);
    }
    client_close(&c);
    /* HEAD: headers with the length, no body; the connection stays usable. */
    client_open(&c);
    client_sends(&c, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(client_response_ex(&c, &r, 1) == 0 && r.status == 200);
    CHECK(resp_header(&r, "content-length", v, sizeof v) && !strcmp(v, "5"));
    sg_buf_free(&r.body);
    client_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(client_response(&c, &r) == 0 && r.status == 200 && !strcmp(r.body.data, "hello"));
    sg_buf_free(&r.body);
    client_close(&c);
    /* HTTP/1.0 streaming: close-delimited. */
    client_open(&c);
    client_sends(&c, "GET /stream?n=3&ms=5 HTTP/1.0\r\n\r\n");
    CHECK(client_response(&c, &r) == 0 && r.status == 200 && r.closed);
    CHECK(r.body.data && strstr(r.body.data, "data: chunk 2\n\n"));
    sg_buf_free(&r.body);
    client_close(&c);
    stop_server();
}

static void test_expect_continue(void) {
    start_default();
    client c;
    client_open(&c);
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    ssize_t ll = client_line(&c);
    CHECK(ll > 0 && !strncmp(c.buf, "HTTP/1.1 100 Continue\r\n", 23));
    client_sends(&c, "abcde");
    response r;
    CHECK(client_response(&c, &r) == 0 && r.status == 200 && !strcmp(r.body.data, "abcde"));
    sg_buf_free(&r.body);
    client_close(&c);
    /* Over the limit: 413 straight away, the body is never asked for. */
    client_open(&c);
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n");
    CHECK(client_response(&c, &r) == 0 && r.status == 413);
    sg_buf_free(&r.body);
    client_close(&c);
    stop_server();
}

static void test_async_response(void) {
    start_default();
    response r;
    uint64_t t0 = now_ms();
    CHECK_EQ_INT(one_shot("GET /async?ms=120 HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    uint64_t took = now_ms() - t0;
    CHECK_EQ_STR(r.body.data, "late");
    CHECK_MSG(took >= 115 && took < 1500, "took %llu ms", (unsigned long long)took);
    sg_buf_free(&r.body);
    /* Several concurrent async exchanges on separate connections. */
    client cs[8];
    for (int i = 0; i < 8; i++) {
        client_open(&cs[i]);
        client_sends(&cs[i], "GET /async?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        if (client_response(&cs[i], &r) == 0 && r.status == 200) ok++;
        sg_buf_free(&r.body);
        client_close(&cs[i]);
    }
    CHECK_EQ_INT(ok, 8);
    stop_server();
}

static void test_streaming(void) {
    start_default();
    client c;
    client_open(&c);
    client_sends(&c, "GET /stream?n=4&ms=100 HTTP/1.1\r\nHost: x\r\n\r\n");
    /* The head and the first chunk arrive long before the stream ends. */
    uint64_t t0 = now_ms();
    char *end;
    while (!(end = memmem(c.buf, c.len, "\r\n\r\n", 4)))
        if (client_fill(&c) <= 0) break;
    CHECK(end && strstr(c.buf, "Transfer-Encoding: chunked"));
    CHECK(end && strstr(c.buf, "Content-Type: text/event-stream"));
    if (end) client_consume(&c, (size_t)(end - c.buf) + 4);
    ssize_t ll = client_line(&c);
    CHECK(ll > 0 && strtoul(c.buf, NULL, 16) == strlen("data: chunk 0\n\n"));
    client_consume(&c, ll > 0 ? (size_t)ll : 0);
    CHECK(client_need(&c, strlen("data: chunk 0\n\n") + 2) == 0 && !memcmp(c.buf, "data: chunk 0\n\n\r\n", 17));
    client_consume(&c, 17);
    CHECK_MSG(now_ms() - t0 < 250, "first chunk after %llu ms", (unsigned long long)(now_ms() - t0));
    /* the rest, chunk by chunk */
    int chunks = 1;
    for (;;) {
        ll = client_line(&c);
        if (ll < 0) break;
        size_t n = strtoul(c.buf, NULL, 16);
        client_consume(&c, (size_t)ll);
        if (!n) { client_line(&c); client_consume(&c, 2); break; }
        if (client_need(&c, n + 2) < 0) break;
        client_consume(&c, n + 2);
        chunks++;
    }
    CHECK_EQ_INT(chunks, 4);
    uint64_t took = now_ms() - t0;
    CHECK_MSG(took >= 280, "stream took %llu ms", (unsigned long long)took);
    /* and the connection is reusable afterwards */
    client_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    response r;
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    sg_buf_free(&r.body);
    client_close(&c);
    CHECK_EQ_INT(atomic_load(&F.aborts), 0);
    stop_server();
}

static void test_disconnect_mid_stream(void) {
    start_default();
    client c;
    client_open(&c);
    client_sends(&c, "GET /stream?n=50&ms=20 HTTP/1.1\r\nHost: x\r\n\r\n");
    while (!memmem(c.buf, c.len, "data: chunk 1", 13))
        if (client_fill(&c) <= 0) break;
    client_close(&c);
    /* The streamer keeps writing: the first write after the abort fails and ends it. */
    for (int i = 0; i < 100 && atomic_load(&F.writes_after_abort_failed) == 0; i++) usleep(10 * 1000);
    usleep(100 * 1000);
    CHECK_EQ_INT(atomic_load(&F.aborts), 1);
    CHECK_EQ_INT(atomic_load(&F.writes_after_abort_failed), 1);
    /* A delayed exchange whose client leaves: abort fires once, the owner ends it. */
    client_open(&c);
    client_sends(&c, "GET /async?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(50 * 1000);
    client_close(&c);
    usleep(100 * 1000);
    CHECK_EQ_INT(atomic_load(&F.aborts), 2);
    CHECK_EQ_INT(open_conns_settled(), 0);
    stop_server();
}

static void test_backpressure(void) {
    start_default();
    client c;
    client_open(&c);
    int small = 16 * 1024;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    size_t total = 8u << 20;
    char req[128];
    snprintf(req, sizeof req, "GET /flood?bytes=%zu HTTP/1.1\r\nHost: x\r\n\r\n", total);
    client_sends(&c, req);
    usleep(200 * 1000);  /* let the server fill its buffer while we do not read */
    response r;
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK_EQ_INT(r.body.len, total);
    sg_buf_free(&r.body);
    client_close(&c);
    size_t maxb = atomic_load(&F.max_buffered);
    CHECK_MSG(maxb > 512 * 1024 && maxb < 1024 * 1024, "max buffered %zu", maxb);
    CHECK(atomic_load(&F.drains) > 0);
    stop_server();
}

static void before_send_hook(void *arg) {
    (void)arg;
    atomic_fetch_add(&F.hook_calls, 1);
    atomic_store(&F.hook_saw_hellos, atomic_load(&F.hellos));
}

/* before_send runs after a handler queued its answer and before the answer's bytes go
 * out (a client that has answer i saw the hook run with i answers queued), and again
 * each time a write-blocked connection's output goes on. */
static void test_before_send(void) {
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.before_send = before_send_hook;
    start_server(&cfg);
    for (int i = 1; i <= 5; i++) {
        response r;
        CHECK_EQ_INT(one_shot("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
        CHECK_EQ_INT(atomic_load(&F.hook_saw_hellos), i);
        sg_buf_free(&r.body);
    }
    client c;
    client_open(&c);
    int small = 16 * 1024;
    setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    int before = atomic_load(&F.hook_calls);
    client_sends(&c, "GET /flood?bytes=4194304 HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(100 * 1000);   /* the server's socket buffer fills: the rest waits for writability */
    response r;
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    CHECK_EQ_INT(r.body.len, 4194304);
    CHECK_MSG(atomic_load(&F.hook_calls) - before > 2, "%d calls", atomic_load(&F.hook_calls) - before);
    sg_buf_free(&r.body);
    client_close(&c);
    stop_server();
}

static void test_big_body(void) {
    start_default();
    client c;
    client_open(&c);
    response r;
    for (int i = 0; i < 3; i++) {
        client_sends(&c, "GET /big?bytes=3000000 HTTP/1.1\r\nHost: x\r\n\r\n");
        CHECK(client_response(&c, &r) == 0 && r.status == 200);
        int ok = r.body.len == 3000000;
        for (size_t k = 0; ok && k < r.body.len; k += 4099) ok = r.body.data[k] == (char)('a' + k % 26);
        CHECK(ok);
        sg_buf_free(&r.body);
    }
    client_close(&c);
    stop_server();
}

static void shutdown_done(http_server *s, void *arg) {
    (void)arg;
    atomic_store(&F.shutdown_done, 1);
    http_server_free(s);
    F.s = NULL;
}

static void shutdown_fn(void *arg) { http_server_shutdown(F.s, (uint32_t)(uintptr_t)arg, shutdown_done, NULL); }

/* ------------------------------------------------------------------------------------ */
/* bodies arriving after the headers, in many small writes */

static uint64_t test_rng = 0x1234567;
static size_t rnd(size_t n) {  /* 0 .. n-1 */
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (size_t)(test_rng % n);
}

/* Sends data in writes of 1 .. max_piece bytes, now and then pausing so that the server
 * reads a piece on its own (its buffer then grows and compacts under the parsed head). */
static void client_send_pieces(client *c, const char *data, size_t n, size_t max_piece) {
    size_t at = 0;
    for (int i = 0; at < n; i++) {
        size_t k = 1 + rnd(max_piece);
        if (k > n - at) k = n - at;
        client_send(c, data + at, k);
        at += k;
        if (i % 64 == 63) usleep(200);
    }
}

static void make_body(sg_buf *b, unsigned seed, size_t n) {
    sg_buf_reserve(b, n);
    for (size_t i = 0; i < n; i++) b->data[b->len + i] = (char)body_byte(seed, i);
    b->len += n;
    b->data[b->len] = 0;
}

/* The body as chunks of random sizes (some with extensions), then a trailer. */
static void make_chunked(sg_buf *out, const sg_buf *body) {
    size_t at = 0;
    while (at < body->len) {
        size_t k = 1 + rnd(70000);
        if (k > body->len - at) k = body->len - at;
        sg_buf_printf(out, rnd(4) ? "%zx\r\n" : "%zX;ext=\"v\"\r\n", k);
        sg_buf_append(out, body->data + at, k);
        sg_buf_puts(out, "\r\n");
        at += k;
    }
    sg_buf_puts(out, "0\r\nX-Trailer: dropped\r\n\r\n");
}

static void expect_check(client *c, const char *want) {
    response r;
    int rc = client_response(c, &r);
    CHECK_MSG(rc == 0 && r.status == 200 && r.body.data && !strcmp(r.body.data, want), "rc %d status %d: got \"%s\", want \"%s\"",
              rc, r.status, r.body.data ? r.body.data : "(none)", want);
    sg_buf_free(&r.body);
}

static void start_big(void) {
    http_server_config cfg;
    http_server_config_defaults(&cfg);  /* max_body_bytes 16 MiB */
    cfg.linger_ms = 200;
    start_server(&cfg);
}

/* A body of several MB reaches the handler byte for byte, whatever the writes: the
 * request head parsed from the first write must survive the input buffer growing (and
 * compacting: a small request comes first, in the same write) while the body arrives. */
static void test_large_body_in_pieces(void) {
    start_big();
    const size_t n = 6u << 20;
    sg_buf body, head, chunked;
    sg_buf_init(&body);
    sg_buf_init(&head);
    sg_buf_init(&chunked);
    make_body(&body, 7, n);
    char want[512];

    /* Content-Length */
    client c;
    client_open(&c);
    sg_buf_printf(&head, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                         "PUT /check?k=v&z=%%41 HTTP/1.1\r\nHost: x\r\nX-Tag: the-tag-1\r\nX-Seed: 7\r\n"
                         "Content-Type: application/octet-stream\r\nContent-Length: %zu\r\n\r\n", n);
    client_send(&c, head.data, head.len);
    usleep(20 * 1000);  /* the head is parsed before any body byte arrives */
    client_send_pieces(&c, body.data, body.len, 3000);
    response r;
    CHECK(client_response(&c, &r) == 0 && r.status == 200 && !strcmp(r.body.data, "hello"));
    sg_buf_free(&r.body);
    snprintf(want, sizeof want, "PUT /check q=k=v&z=%%41 tag=the-tag-1 ct=application/octet-stream headers=5 len=%zu body=exact", n);
    expect_check(&c, want);

    /* chunked, on the same connection; each piece small */
    sg_buf_reset(&head);
    sg_buf_puts(&head, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                       "POST /check HTTP/1.1\r\nHost: x\r\nX-Seed: 7\r\nTransfer-Encoding: chunked\r\nX-Tag: t2\r\n\r\n");
    client_send(&c, head.data, head.len);
    usleep(20 * 1000);
    make_chunked(&chunked, &body);
    client_send_pieces(&c, chunked.data, chunked.len, 3000);
    CHECK(client_response(&c, &r) == 0 && r.status == 200 && !strcmp(r.body.data, "hello"));
    sg_buf_free(&r.body);
    snprintf(want, sizeof want, "POST /check q= tag=t2 ct=- headers=4 len=%zu body=exact", n);
    expect_check(&c, want);
    client_close(&c);

    /* the head itself in pieces, a byte at a time */
    client_open(&c);
    sg_buf_reset(&head);
    sg_buf_printf(&head, "POST http://h.example/check?abs=1 HTTP/1.1\r\nHost: x\r\nX-Seed: 7\r\nX-Tag: bytewise\r\n"
                         "Content-Length: %zu\r\n\r\n", n);
    client_send_pieces(&c, head.data, head.len, 1);
    client_send_pieces(&c, body.data, body.len, 20000);
    snprintf(want, sizeof want, "POST /check q=abs=1 tag=bytewise ct=- headers=4 len=%zu body=exact", n);
    expect_check(&c, want);
    client_close(&c);

    sg_buf_free(&body);
    sg_buf_free(&head);
    sg_buf_free(&chunked);
    stop_server();
}

/* The next requests arrive while a large body is still being read: in the write that
 * ends the body, and right after it. */
static void test_pipelined_during_large_body(void) {
    start_big();
    const size_t n = 3u << 20;
    sg_buf body, all, chunked;
    sg_buf_init(&body);
    sg_buf_init(&all);
    sg_buf_init(&chunked);
    make_body(&body, 3, n);
    for (int mode = 0; mode < 2; mode++) {
        client c;
        client_open(&c);
        sg_buf_reset(&all);
        if (mode == 0) {
            sg_buf_printf(&all, "POST /check?first HTTP/1.1\r\nHost: x\r\nX-Seed: 3\r\nX-Tag: big\r\nContent-Length: %zu\r\n\r\n", n);
            sg_buf_append(&all, body.data, body.len);
        } else {
            sg_buf_puts(&all, "POST /check?first HTTP/1.1\r\nHost: x\r\nX-Seed: 3\r\nX-Tag: big\r\nTransfer-Encoding: chunked\r\n\r\n");
            sg_buf_reset(&chunked);
            make_chunked(&chunked, &body);
            sg_buf_append(&all, chunked.data, chunked.len);
        }
        size_t body_end = all.len;
        sg_buf_puts(&all, "POST /check?second HTTP/1.1\r\nHost: x\r\nX-Seed: 9\r\nX-Tag: small\r\nContent-Length: 5\r\n\r\n");
        for (size_t i = 0; i < 5; i++) sg_buf_putc(&all, (char)body_byte(9, i));
        sg_buf_puts(&all, "GET /check?third HTTP/1.1\r\nHost: x\r\nX-Tag: last\r\n\r\n");
        /* Everything up to shortly before the end of the body in small writes; the rest
         * (body end, second request, start of the third) in one; then the third's end. */
        size_t split = body_end - 100, tail_cut = all.len - 10;
        client_send_pieces(&c, all.data, split, 4000);
        client_send(&c, all.data + split, tail_cut - split);
        usleep(10 * 1000);
        client_send(&c, all.data + tail_cut, all.len - tail_cut);
        char want[512];
        snprintf(want, sizeof want, "POST /check q=first tag=big ct=- headers=4 len=%zu body=exact", n);
        expect_check(&c, want);
        expect_check(&c, "POST /check q=second tag=small ct=- headers=4 len=5 body=exact");
        expect_check(&c, "GET /check q=third tag=last ct=- headers=2 len=0 body=exact");
        client_close(&c);
    }
    sg_buf_free(&body);
    sg_buf_free(&all);
    sg_buf_free(&chunked);
    stop_server();
}

/* Expect: 100-continue with a large body: the 100 comes first, then the body arrives in
 * pieces after a head the parser has long finished with. */
static void test_expect_continue_big_body(void) {
    start_big();
    const size_t n = 5u << 20;
    sg_buf body, chunked;
    sg_buf_init(&body);
    sg_buf_init(&chunked);
    make_body(&body, 11, n);
    char head[512], want[512];
    for (int mode = 0; mode < 2; mode++) {
        client c;
        client_open(&c);
        if (mode == 0)
            snprintf(head, sizeof head, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /check?e=1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                        "X-Seed: 11\r\nX-Tag: expect\r\nContent-Length: %zu\r\n\r\n", n);
        else
            snprintf(head, sizeof head, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /check?e=1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                        "X-Seed: 11\r\nX-Tag: expect\r\nTransfer-Encoding: chunked\r\n\r\n");
        client_sends(&c, head);
        response r;
        CHECK(client_response(&c, &r) == 0 && r.status == 200 && !strcmp(r.body.data, "hello"));
        sg_buf_free(&r.body);
        ssize_t ll = client_line(&c);
        CHECK_MSG(ll > 0 && !strncmp(c.buf, "HTTP/1.1 100 Continue\r\n", 23), "mode %d: 100 Continue first", mode);
        if (mode == 0) {
            client_send_pieces(&c, body.data, body.len, 5000);
        } else {
            sg_buf_reset(&chunked);
            make_chunked(&chunked, &body);
            client_send_pieces(&c, chunked.data, chunked.len, 5000);
        }
        snprintf(want, sizeof want, "POST /check q=e=1 tag=expect ct=- headers=5 len=%zu body=exact", n);
        expect_check(&c, want);  /* skips the 100 */
        client_close(&c);
    }
    sg_buf_free(&body);
    sg_buf_free(&chunked);
    stop_server();
}

/* A CR is only allowed right before the LF that ends a line (RFC 9112 2.2): elsewhere in
 * the request line, a header line or a chunk line it gets 400, whole or byte by byte, and
 * the handler never sees the request. */
static void test_bare_cr(void) {
    start_default();
    static const struct { const char *raw; const char *code; } cases[] = {
        {"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", "bad_header"},
        {"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: ab\r\r\n\r\n", "bad_header"},
        {"GET /hello HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", "bad_header"},
        {"GET /hello HTTP/1.1\r\nHost: x\r\n\r\r\n", "bad_header"},
        {"GET /hello HTTP/1.1\r\r\nHost: x\r\n\r\n", "bad_request_line"},
        {"GET /hel\rlo HTTP/1.1\r\nHost: x\r\n\r\n", "bad_request_line"},
        {"GET\r/hello HTTP/1.1\r\nHost: x\r\n\r\n", "bad_request_line"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\r\nabc\r\n0\r\n\r\n", "bad_chunk"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\rb\r\nabc\r\n0\r\n\r\n", "bad_chunk"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: a\rb\r\n\r\n", "bad_chunk"},
    };
    uint64_t before = get_stats().requests;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            client c;
            client_open(&c);
            const char *raw = cases[i].raw;
            if (bytewise) {
                for (size_t k = 0; raw[k]; k++) {
                    client_send(&c, raw + k, 1);
                    usleep(300);
                }
            } else {
                client_sends(&c, raw);
            }
            response r;
            int rc = client_response(&c, &r);
            CHECK_MSG(rc == 0 && r.status == 400, "case %zu (bytewise %d): status %d", i, bytewise, r.status);
            char code[64];
            snprintf(code, sizeof code, "\"code\":\"%s\"", cases[i].code);
            CHECK_MSG(r.body.data && strstr(r.body.data, code), "case %zu (bytewise %d): %s in %s", i, bytewise, code,
                      r.body.data ? r.body.data : "(none)");
            sg_buf_free(&r.body);
            client_close(&c);
        }
    }
    CHECK_EQ_INT(get_stats().requests - before, 0);
    /* A CR right before the LF is the line end, and a tab in a value is fine. */
    response r;
    CHECK_EQ_INT(one_shot("GET /echo HTTP/1.1\r\nHost: x\r\nUser-Agent: a\tb\r\n\r\n", &r), 200);
    char v[64];
    CHECK(resp_header(&r, "x-ua", v, sizeof v) && !strcmp(v, "a\tb"));
    sg_buf_free(&r.body);
    stop_server();
}

/* Slowloris: a client dribbling its head is answered 408 and cut at header_timeout_ms
 * from the request's first byte: not re-armed by each read, not started late, and not
 * kept open afterwards for linger_ms (which is 3 s here). */
typedef struct dribble_result {
    int64_t got_408_ms;  /* from the first byte; -1 never */
    int64_t cut_ms;      /* the server stopped taking bytes: a write failed or was reset */
} dribble_result;

/* Sends first, then a byte every 25 ms, also after the server's FIN (a lingering server
 * still reads and drops them), until a write fails. */
static dribble_result dribble(client *c, const char *first, uint64_t t0, int max_ms) {
    dribble_result res = {-1, -1};
    client_sends(c, first);
    char buf[4096];
    size_t have = 0;
    int eof = 0;
    while (now_ms() - t0 < (uint64_t)max_ms) {
        struct pollfd p = {c->fd, POLLIN, 0};
        if (!eof && poll(&p, 1, 25) > 0) {
            ssize_t k = recv(c->fd, buf + have, sizeof buf - have - 1, 0);
            if (k < 0) break;  /* reset */
            if (k == 0) {
                eof = 1;
                continue;
            }
            have += (size_t)k;
            buf[have] = 0;
            if (res.got_408_ms < 0 && strstr(buf, "\r\n\r\n") && !strncmp(buf, "HTTP/1.1 408 ", 13))
                res.got_408_ms = (int64_t)(now_ms() - t0);
            if (have > sizeof buf / 2) have = 0;
            continue;
        }
        if (eof) usleep(25 * 1000);
        if (send(c->fd, "a", 1, MSG_NOSIGNAL) <= 0) break;
    }
    res.cut_ms = (int64_t)(now_ms() - t0);
    return res;
}

static void test_slowloris_timing(void) {
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.header_timeout_ms = 1000;
    cfg.linger_ms = 3000;
    start_server(&cfg);
    /* The first request on a connection. */
    client c;
    client_open(&c);
    uint64_t t0 = now_ms();
    dribble_result d = dribble(&c, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ", t0, 5000);
    CHECK_MSG(d.got_408_ms >= 990 && d.got_408_ms < 1150, "408 after %lld ms (header_timeout_ms 1000)", (long long)d.got_408_ms);
    CHECK_MSG(d.cut_ms >= 990 && d.cut_ms < 1250, "cut after %lld ms", (long long)d.cut_ms);
    client_close(&c);
    /* A later request on a kept-alive connection: timed from its own first byte. */
    client_open(&c);
    client_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    response r;
    CHECK(client_response(&c, &r) == 0 && r.status == 200);
    sg_buf_free(&r.body);
    usleep(700 * 1000);  /* idle, within idle_timeout_ms */
    t0 = now_ms();
    d = dribble(&c, "G", t0, 5000);
    CHECK_MSG(d.got_408_ms >= 990 && d.got_408_ms < 1150, "keep-alive: 408 after %lld ms", (long long)d.got_408_ms);
    CHECK_MSG(d.cut_ms >= 990 && d.cut_ms < 1250, "keep-alive: cut after %lld ms", (long long)d.cut_ms);
    client_close(&c);
    stop_server();
}

static void test_graceful_shutdown(void) {
    start_default();
    client busy, idle;
    client_open(&idle);
    client_sends(&idle, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    response r;
    CHECK(client_response(&idle, &r) == 0 && r.status == 200);
    sg_buf_free(&r.body);
    client_open(&busy);
    client_sends(&busy, "GET /async?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(50 * 1000);
    uint64_t t0 = now_ms();
    on_loop(shutdown_fn, (void *)(uintptr_t)3000);
    /* the idle keep-alive connection is closed at once */
    CHECK(client_sees_eof(&idle, 500));
    CHECK(now_ms() - t0 < 400);
    client_close(&idle);
    /* new connections are refused */
    {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) < 0);
        close(fd);
    }
    /* the in-flight request finishes, with Connection: close */
    char v[32];
    CHECK(client_response(&busy, &r) == 0 && r.status == 200 && !strcmp(r.body.data, "late"));
    CHECK(resp_header(&r, "connection", v, sizeof v) && !strcmp(v, "close"));
    sg_buf_free(&r.body);
    CHECK(client_sees_eof(&busy, 1000));
    client_close(&busy);
    for (int i = 0; i < 100 && !atomic_load(&F.shutdown_done); i++) usleep(10 * 1000);
    CHECK(atomic_load(&F.shutdown_done));
    stop_server();

    /* With a short deadline, a request still in progress is aborted. */
    start_default();
    client_open(&busy);
    client_sends(&busy, "GET /async?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n");
    usleep(50 * 1000);
    t0 = now_ms();
    on_loop(shutdown_fn, (void *)(uintptr_t)100);
    CHECK(client_sees_eof(&busy, 2000));
    CHECK(now_ms() - t0 < 1000);
    client_close(&busy);
    for (int i = 0; i < 100 && !atomic_load(&F.shutdown_done); i++) usleep(10 * 1000);
    CHECK(atomic_load(&F.shutdown_done));
    CHECK_EQ_INT(atomic_load(&F.aborts), 1);
    stop_server();
}

static void test_ipv6_listen(void) {
    sg_error err;
    loop *l = loop_new(&err);
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.listen = "[::1]:0";
    cfg.handler = handler;
    http_server *s = http_server_new(l, &cfg, &err);
    if (!s) {
        /* no IPv6 loopback in this sandbox: not the server's fault */
        fprintf(stderr, "  (skipping IPv6: %s)\n", err.msg);
        loop_free(l);
        return;
    }
    CHECK(http_server_port(s) > 0);
    http_server_free(s);
    cfg.listen = "bogus";
    CHECK(http_server_new(l, &cfg, &err) == NULL);
    loop_free(l);
}

/* Loop basics: timer order, cancel, posts from another thread. */
static int order[8], n_order;
static void rec_timer(loop *l, loop_timer *t, void *arg) { (void)l; (void)t; order[n_order++] = (int)(intptr_t)arg; }
static atomic_int posted;
static void rec_post(loop *l, void *arg) { (void)l; atomic_fetch_add(&posted, (int)(intptr_t)arg); }
static void *poster(void *arg) {
    for (int i = 0; i < 1000; i++) loop_post(arg, rec_post, (void *)(intptr_t)1);
    return NULL;
}

static void test_loop_basics(void) {
    sg_error err;
    loop *l = loop_new(&err);
    loop_timer t[4];
    for (int i = 0; i < 4; i++) loop_timer_init(&t[i], rec_timer, (void *)(intptr_t)i);
    loop_timer_start(l, &t[0], 30);
    loop_timer_start(l, &t[1], 10);
    loop_timer_start(l, &t[2], 20);
    loop_timer_start(l, &t[3], 5);
    loop_timer_stop(l, &t[3]);
    loop_timer_start(l, &t[0], 1);  /* re-arm earlier */
    uint64_t t0 = loop_now_ms(l);
    while (n_order < 3 && loop_now_ms(l) - t0 < 1000) loop_run_once(l, 100, &err);
    CHECK_EQ_INT(n_order, 3);
    CHECK(order[0] == 0 && order[1] == 1 && order[2] == 2);
    CHECK(loop_now_ms(l) - t0 >= 20);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, poster, l);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 10 && atomic_load(&posted) < 4000; i++) loop_run_once(l, 100, &err);
    CHECK_EQ_INT(atomic_load(&posted), 4000);
    loop_free(l);
}

/* `test_http_server NAME` runs only the tests whose name contains NAME. */
#define ONLY(fn) do { if (argc < 2 || strstr(#fn, argv[1])) RUN(fn); } while (0)

int main(int argc, char **argv) {
    ONLY(test_loop_basics);
    ONLY(test_simple_get);
    ONLY(test_post_echo);
    ONLY(test_keepalive_many);
    ONLY(test_pipelined);
    ONLY(test_chunked_request);
    ONLY(test_limits);
    ONLY(test_slowloris);
    ONLY(test_idle_timeout);
    ONLY(test_truncated_then_close);
    ONLY(test_bad_requests);
    ONLY(test_http10_and_head);
    ONLY(test_expect_continue);
    ONLY(test_async_response);
    ONLY(test_streaming);
    ONLY(test_disconnect_mid_stream);
    ONLY(test_backpressure);
    ONLY(test_before_send);
    ONLY(test_big_body);
    ONLY(test_large_body_in_pieces);
    ONLY(test_pipelined_during_large_body);
    ONLY(test_expect_continue_big_body);
    ONLY(test_bare_cr);
    ONLY(test_slowloris_timing);
    ONLY(test_graceful_shutdown);
    ONLY(test_ipv6_listen);
    return tu_finish(argv[0]);
}
