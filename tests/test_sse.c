/* test_sse.c: the incremental SSE parser against the event-stream rules (line endings,
 * fields, comments, multi-line data), fed in every split, byte by byte and in random
 * chunks (each must give the same events), its limits, and the writer round trip. */
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/sse.h"
#include "testutil.h"

/* Events recorded as "name|data\n" lines, so that whole runs compare as one string. */
typedef struct rec {
    sg_buf log;
    int n;
    int stop_after;   /* > 0: the callback stops at that event */
} rec;

static int on_event(void *ctx, const char *name, const char *data, size_t len) {
    rec *r = ctx;
    CHECK(strlen(data) == len);   /* NUL-terminated, no NUL inside for these inputs */
    sg_buf_puts(&r->log, name);
    sg_buf_putc(&r->log, '|');
    sg_buf_append(&r->log, data, len);
    sg_buf_putc(&r->log, '\n');
    r->n++;
    return (r->stop_after && r->n >= r->stop_after) ? 1 : 0;
}

/* Parses s in pieces of the given sizes (cycled); returns the log (caller frees). */
static char *parse_split(const char *s, size_t n, const size_t *sizes, size_t n_sizes, int *finish_rc) {
    rec r = {0};
    sg_buf_init(&r.log);
    sse_parser p;
    sse_init(&p, 0, on_event, &r);
    size_t off = 0, k = 0;
    while (off < n) {
        size_t m = sizes ? sizes[k++ % n_sizes] : n;
        if (m > n - off) m = n - off;
        sg_error err;
        CHECK(sse_feed(&p, s + off, m, &err) == 0);
        off += m;
    }
    if (finish_rc) *finish_rc = sse_finish(&p);
    sse_free(&p);
    return sg_buf_steal(&r.log);
}

static char *parse_whole(const char *s, int *finish_rc) { return parse_split(s, strlen(s), NULL, 0, finish_rc); }

/* Every way of cutting s in two, byte by byte, and random chunkings all give `want`. */
static void check_all_splits(const char *s, const char *want) {
    size_t n = strlen(s);
    char *got = parse_whole(s, NULL);
    CHECK_EQ_STR(got, want);
    free(got);
    for (size_t cut = 1; cut < n; cut++) {
        rec r = {0};
        sg_buf_init(&r.log);
        sse_parser p;
        sse_init(&p, 0, on_event, &r);
        CHECK(sse_feed(&p, s, cut, NULL) == 0);
        CHECK(sse_feed(&p, s + cut, n - cut, NULL) == 0);
        if (strcmp(r.log.data ? r.log.data : "", want) != 0) {
            CHECK_MSG(0, "split at %zu gave \"%s\"", cut, r.log.data ? r.log.data : "");
        }
        sse_free(&p);
        sg_buf_free(&r.log);
    }
    size_t one = 1;
    got = parse_split(s, n, &one, 1, NULL);
    CHECK_EQ_STR(got, want);
    free(got);
    srand(7);
    for (int t = 0; t < 50; t++) {
        size_t sizes[16];
        for (int i = 0; i < 16; i++) sizes[i] = 1 + (size_t)(rand() % 9);
        got = parse_split(s, n, sizes, 16, NULL);
        CHECK_EQ_STR(got, want);
        free(got);
    }
}

static void test_basic_fields(void) {
    check_all_splits("data: hello\n\n", "|hello\n");
    check_all_splits("event: message_start\ndata: {\"a\":1}\n\n", "message_start|{\"a\":1}\n");
    /* multi-line data joined with \n; no space after the colon; two spaces keep one */
    check_all_splits("data:a\ndata:  b\ndata\n\n", "|a\n b\n\n");
    /* comments, id, retry and unknown fields are ignored; the last event line wins */
    check_all_splits(": keep-alive\nid: 7\nretry: 1000\nfoo: bar\nevent: x\nevent: y\ndata: d\n\n", "y|d\n");
    /* an event line alone dispatches (as the SDKs do); blank lines alone do not */
    check_all_splits("\n\n\nevent: ping\n\n\n", "ping|\n");
    /* the name does not carry over to the next event */
    check_all_splits("event: a\ndata: 1\n\ndata: 2\n\n", "a|1\n|2\n");
    /* data: [DONE] is just data */
    check_all_splits("data: {\"x\":1}\n\ndata: [DONE]\n\n", "|{\"x\":1}\n|[DONE]\n");
    /* a colon inside the value stays */
    check_all_splits("data: a:b: c\n\n", "|a:b: c\n");
}

static void test_line_endings(void) {
    const char *want = "e|1\n2\n|3\n";
    check_all_splits("event: e\ndata: 1\ndata: 2\n\ndata: 3\n\n", want);
    check_all_splits("event: e\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\n\r\n", want);
    check_all_splits("event: e\rdata: 1\rdata: 2\r\rdata: 3\r\r", want);
    check_all_splits("event: e\r\ndata: 1\rdata: 2\n\r\ndata: 3\n\r", want);   /* mixed */
    /* Gemini's alt=sse uses CRLF pairs */
    check_all_splits("data: {\"candidates\":[]}\r\n\r\n", "|{\"candidates\":[]}\n");
}

static void test_bom(void) {
    check_all_splits("\xEF\xBB\xBF" "data: x\n\n", "|x\n");
    /* only at the very start; later it is data */
    check_all_splits("data: a\n\ndata: \xEF\xBB\xBFz\n\n", "|a\n|\xEF\xBB\xBFz\n");
    /* bytes that only look like the start of a BOM are kept */
    check_all_splits("\xEF" "data\n\n", "");   /* field "\xEF" "data" is unknown: nothing */
}

static void test_truncated(void) {
    int rc = -2;
    char *got = parse_whole("data: a\n\ndata: partial", &rc);
    CHECK_EQ_STR(got, "|a\n");
    CHECK_EQ_INT(rc, 1);
    free(got);
    got = parse_whole("data: a\n\ndata: b\n", &rc);   /* no blank line: dropped */
    CHECK_EQ_STR(got, "|a\n");
    CHECK_EQ_INT(rc, 1);
    free(got);
    got = parse_whole("data: a\n\n", &rc);
    CHECK_EQ_INT(rc, 0);
    free(got);
    got = parse_whole("data: a\r\n\r", &rc);   /* the final CR ends the event */
    CHECK_EQ_STR(got, "|a\n");
    CHECK_EQ_INT(rc, 0);
    free(got);
}

static void test_limits(void) {
    rec r = {0};
    sg_buf_init(&r.log);
    sse_parser p;
    sse_init(&p, 64, on_event, &r);
    sg_error err = {{0}};
    CHECK(sse_feed(&p, "data: short\n\n", 13, &err) == 0);
    /* one line longer than the limit, cut into pieces so it is caught while buffering */
    char big[100];
    memset(big, 'x', sizeof big);
    CHECK(sse_feed(&p, "data: ", 6, &err) == 0);
    CHECK(sse_feed(&p, big, 50, &err) == 0);
    CHECK(sse_feed(&p, big, 50, &err) == -1);
    CHECK_EQ_STR(err.msg, "SSE line larger than 64 bytes");
    CHECK(p.too_large);
    CHECK(p.line.cap <= 256);                       /* buffered no more than the bound (plus growth) */
    CHECK(sse_feed(&p, "\n\n", 2, &err) == -1);   /* stays failed */
    CHECK_EQ_INT(sse_finish(&p), -1);
    CHECK_EQ_INT(r.n, 1);
    sse_free(&p);
    sg_buf_free(&r.log);

    /* many short data lines adding up past the limit */
    sse_init(&p, 64, on_event, &r);
    int failed = 0;
    for (int i = 0; i < 40 && !failed; i++) failed = sse_feed(&p, "data: 0123456789\n", 17, &err) != 0;
    CHECK(failed);
    CHECK_EQ_STR(err.msg, "SSE event larger than 64 bytes");
    CHECK(p.too_large);
    sse_free(&p);

    /* a whole oversized line in one feed */
    sse_init(&p, 64, on_event, &r);
    char line[200];
    memset(line, 'y', sizeof line);
    memcpy(line, "data: ", 6);
    line[198] = '\n';
    line[199] = '\n';
    CHECK(sse_feed(&p, line, sizeof line, &err) == -1);
    CHECK(p.too_large);
    sse_free(&p);

    /* a consumer that stops is a failure, not a size one */
    rec stop = {0};
    sg_buf_init(&stop.log);
    stop.stop_after = 1;
    sse_init(&p, 64, on_event, &stop);
    CHECK(sse_feed(&p, "data: a\n\n", 9, &err) == -1);
    CHECK(!p.too_large);
    sse_free(&p);
    sg_buf_free(&stop.log);
}

static void test_callback_stop(void) {
    rec r = {0};
    sg_buf_init(&r.log);
    r.stop_after = 2;
    sse_parser p;
    sse_init(&p, 0, on_event, &r);
    const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    sg_error err;
    CHECK(sse_feed(&p, s, strlen(s), &err) == -1);
    CHECK_EQ_INT(r.n, 2);
    CHECK(sse_feed(&p, "data: 4\n\n", 9, &err) == -1);
    CHECK_EQ_INT(r.n, 2);
    sse_free(&p);
    sg_buf_free(&r.log);
}

static void test_writer_roundtrip(void) {
    sg_buf out;
    sg_buf_init(&out);
    sse_write(&out, "message_start", "{\"type\":\"message_start\"}", 24);
    sse_write(&out, NULL, "[DONE]", 6);
    CHECK_EQ_STR(out.data, "event: message_start\ndata: {\"type\":\"message_start\"}\n\ndata: [DONE]\n\n");
    sg_buf_reset(&out);
    const char *multi = "line1\nline2\r\nline3\rline4";
    sse_write(&out, "x", multi, strlen(multi));
    sse_write(&out, NULL, "", 0);
    CHECK_EQ_STR(out.data, "event: x\ndata: line1\ndata: line2\ndata: line3\ndata: line4\n\ndata: \n\n");
    char *got = parse_whole(out.data, NULL);
    CHECK_EQ_STR(got, "x|line1\nline2\nline3\nline4\n|\n");
    free(got);
    sg_buf_free(&out);
}

/* A realistic OpenAI stream with keep-alive comments, in every split. */
static void test_realistic_stream(void) {
    const char *s =
        ": OPENROUTER PROCESSING\n\n"
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\\n\"}}]}\n\n"
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5}}\n\n"
        "data: [DONE]\n\n";
    const char *want =
        "|{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n"
        "|{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\\n\"}}]}\n"
        "|{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5}}\n"
        "|[DONE]\n";
    check_all_splits(s, want);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_basic_fields);
    RUN(test_line_endings);
    RUN(test_bom);
    RUN(test_truncated);
    RUN(test_limits);
    RUN(test_callback_stop);
    RUN(test_writer_roundtrip);
    RUN(test_realistic_stream);
    return tu_finish(argv[0]);
}
