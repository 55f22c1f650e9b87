/* fuzz_http_segments.c: libFuzzer target for the inbound HTTP/1.1 server (http_server):
 * what a request means must not depend on how its bytes are split.
 *
 * Input: the first 8 bytes seed the segmentations; the rest is what a client sends (one
 * request, or several pipelined). The server runs on a loop in this thread and gets each
 * connection through http_server_adopt (one end of a socketpair). The bytes go out in one
 * write, then under several random segmentations (and one byte at a time when short),
 * with the loop run between writes so that each segment is read on its own. What the
 * handler saw (method, path, query, version, keep-alive, headers, body, in order), the
 * statuses of the responses (with the error code of the server's own errors) and whether
 * the connection stalled must be the same every time; a difference aborts. `100 Continue`
 * is left out: it is sent only when the body has not started arriving, by design.
 *
 * The server's limits are small (head 1 KiB, 16 headers, target 256 bytes, body 4 KiB)
 * so that inputs reach them. FUZZ_HTTP_SHOW=1 prints each input's outcome. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/http_server.h"
#include "gateway/loop.h"

#define SEGMENTATIONS   4     /* random ones, after the single write */
#define BYTEWISE_MAX    256   /* inputs up to this long are also sent one byte at a time */
#define MAX_SEGMENTS    1024

static loop        *L;
static http_server *S;
static sg_buf       seen;  /* what the handler saw, this run */
static sg_buf       got;   /* what the client received, this run */

static void put_field(sg_buf *b, const char *s, size_t n) {
    sg_buf_printf(b, "%zu:", n);
    sg_buf_append(b, s, n);
    sg_buf_putc(b, ' ');
}

static void handler(http_exchange *x, const http_request *r, void *arg) {
    (void)arg;
    sg_buf_puts(&seen, "REQ ");
    put_field(&seen, r->method, strlen(r->method));
    put_field(&seen, r->path, strlen(r->path));
    put_field(&seen, r->query, strlen(r->query));
    sg_buf_printf(&seen, "v1.%d ka%d\n", r->version_minor, r->keep_alive);
    for (size_t i = 0; i < r->n_headers; i++) {
        put_field(&seen, r->headers[i].name, strlen(r->headers[i].name));
        put_field(&seen, r->headers[i].value, strlen(r->headers[i].value));
        sg_buf_putc(&seen, '\n');
    }
    sg_buf_puts(&seen, "BODY ");
    put_field(&seen, r->body, r->body_len);
    sg_buf_putc(&seen, '\n');
    http_respond(x, 204, NULL, 0, NULL, 0);  /* no body: responses are easy to split */
}

static void setup(void) {
    sg_log_set_level(SG_LOG_ERROR);
    sg_error err;
    L = loop_new(&err);
    if (!L) { fprintf(stderr, "loop_new: %s\n", err.msg); abort(); }
    http_server_config cfg;
    http_server_config_defaults(&cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.max_header_bytes = 1024;
    cfg.max_headers = 16;
    cfg.max_uri_bytes = 256;
    cfg.max_body_bytes = 4096;
    cfg.linger_ms = 60000;  /* a closing connection drains until our EOF, never on a timer */
    cfg.handler = handler;
    S = http_server_new(L, &cfg, &err);
    if (!S) { fprintf(stderr, "http_server_new: %s\n", err.msg); abort(); }
    sg_buf_init(&seen);
    sg_buf_init(&got);
}

static size_t client_read(int fd) {
    char tmp[16384];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n <= 0) return total;
        sg_buf_append(&got, tmp, (size_t)n);
        total += (size_t)n;
    }
}

/* Runs the loop until neither it nor the client has anything left to do. */
static void settle(int fd) {
    sg_error err;
    int idle = 0;
    for (int i = 0; i < 100000 && idle < 2; i++) {
        int ran = loop_run_once(L, 0, &err);
        size_t n = fd >= 0 ? client_read(fd) : 0;
        idle = ran == 0 && n == 0 ? idle + 1 : 0;
    }
}

/* Sends a segment; returns 0, 1 if the server stopped taking bytes (a stall), -1 if it
 * closed the connection. */
static int client_send(int fd, const uint8_t *p, size_t n) {
    int stuck = 0;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            stuck = 0;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            settle(fd);
            if (++stuck > 3) return 1;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        return -1;
    }
    /* One loop iteration: the server reads this segment before the next is sent. */
    sg_error err;
    loop_run_once(L, 0, &err);
    client_read(fd);
    return 0;
}

/* Appends the final statuses in got (and the error code of the server's own errors). */
static void record_responses(sg_buf *out) {
    const char *p = got.data ? got.data : "", *end = p + got.len;
    while (p < end) {
        const char *he = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!he || end - p < 12 || memcmp(p, "HTTP/1.1 ", 9)) {
            sg_buf_puts(out, "RESP garbled\n");
            return;
        }
        int status = atoi(p + 9);
        size_t body = 0;
        const char *cl = memmem(p, (size_t)(he - p), "\r\nContent-Length: ", 18);
        if (cl) body = (size_t)strtoull(cl + 18, NULL, 10);
        const char *b = he + 4;
        if (body > (size_t)(end - b)) {
            sg_buf_puts(out, "RESP truncated\n");
            return;
        }
        if (status >= 200) {
            sg_buf_printf(out, "RESP %d", status);
            const char *code = memmem(b, body, "\"code\":\"", 8);
            if (code) {
                const char *ce = memchr(code + 8, '"', (size_t)(b + body - (code + 8)));
                if (ce) sg_buf_printf(out, " %.*s", (int)(ce - code - 8), code + 8);
            }
            sg_buf_putc(out, '\n');
        }
        p = b + body;
    }
}

/* One connection: the bytes in the given segments. Leaves the outcome in *out. */
static void run_once(const uint8_t *data, size_t n, const size_t *cuts, size_t n_cuts, sg_buf *out) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) { perror("socketpair"); abort(); }
    sg_error err;
    if (http_server_adopt(S, sv[1], &err) < 0) { fprintf(stderr, "adopt: %s\n", err.msg); abort(); }
    sg_buf_reset(&seen);
    sg_buf_reset(&got);
    settle(sv[0]);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= n_cuts && rc == 0; i++) {
        size_t to = i < n_cuts ? cuts[i] : n;
        if (to > at) rc = client_send(sv[0], data + at, to - at);
        at = to;
    }
    settle(sv[0]);
    sg_buf_reset(out);
    sg_buf_append(out, seen.data ? seen.data : "", seen.len);
    record_responses(out);
    if (rc == 1) sg_buf_puts(out, "STALLED\n");
    close(sv[0]);
    settle(-1);
    /* Our EOF must end every connection: nothing may be left open between runs. */
    if (http_server_get_stats(S).conns_open != 0) {
        fprintf(stderr, "fuzz_http_segments: a connection outlived the client's close\n");
        abort();
    }
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Random cut points, increasing: few and anywhere, or many and short. */
static size_t make_cuts(uint64_t *rng, size_t n, size_t *cuts) {
    if (n < 2) return 0;
    size_t k = 0;
    if (splitmix64(rng) & 1) {
        size_t want = 1 + splitmix64(rng) % 16;
        size_t at = 0;
        for (size_t i = 0; i < want; i++) {
            size_t room = n - at;
            if (room < 2) break;
            at += 1 + splitmix64(rng) % (room - 1);
            cuts[k++] = at;
        }
    } else {
        size_t mean = 1 + splitmix64(rng) % 16;
        for (size_t at = 0; k < MAX_SEGMENTS - 1;) {
            at += 1 + splitmix64(rng) % (2 * mean);
            if (at >= n) break;
            cuts[k++] = at;
        }
    }
    return k;
}

static int same(const sg_buf *a, const sg_buf *b) {
    return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

static void report(const char *what, const sg_buf *want, const sg_buf *have, const size_t *cuts, size_t n_cuts) {
    fprintf(stderr, "fuzz_http_segments: %s gave another outcome than one write\n", what);
    fprintf(stderr, "--- one write:\n%.*s\n--- segmented:\n%.*s\n--- cuts:", (int)want->len,
            want->data ? want->data : "", (int)have->len, have->data ? have->data : "");
    for (size_t i = 0; i < n_cuts && i < 64; i++) fprintf(stderr, " %zu", cuts[i]);
    fprintf(stderr, "%s\n", n_cuts > 64 ? " ..." : "");
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    static size_t cuts[MAX_SEGMENTS];
    static sg_buf want, have;
    if (!L) setup();
    uint64_t rng = 0;
    size_t head = size < 8 ? size : 8;
    memcpy(&rng, input, head);
    const uint8_t *data = input + head;
    size_t n = size - head;

    run_once(data, n, NULL, 0, &want);
    if (getenv("FUZZ_HTTP_SHOW")) fprintf(stderr, "--- outcome:\n%.*s", (int)want.len, want.data ? want.data : "");
    for (int i = 0; i < SEGMENTATIONS; i++) {
        size_t k = make_cuts(&rng, n, cuts);
        run_once(data, n, cuts, k, &have);
        if (!same(&have, &want)) {
            report("a random segmentation", &want, &have, cuts, k);
            abort();
        }
    }
    if (n <= BYTEWISE_MAX && n > 1) {
        for (size_t i = 0; i + 1 < n; i++) cuts[i] = i + 1;
        run_once(data, n, cuts, n - 1, &have);
        if (!same(&have, &want)) {
            report("one byte at a time", &want, &have, cuts, n - 1);
            abort();
        }
    }
    return 0;
}
