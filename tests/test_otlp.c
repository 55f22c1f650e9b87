/* test_otlp.c: the OTLP trace exporter of otlp.h: traceparent parsing (valid, future
 * versions, hostile values), the span JSON of a request that fell back (structure, ids,
 * parent links, GenAI attributes, statuses, times), sampling, the bounded queue with a
 * receiver that is down (drops counted, submit and close bounded in time), an export to a
 * real socket, and the tracing: section and OTEL_* variables of the configuration. */
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "gateway/config.h"
#include "gateway/otlp.h"
#include "testutil.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* What the proxy does: the request's ids when it arrives, then its record when it ends. */
static void submit(otlp *x, const ledger_record *r, const otlp_context *parent) {
    otlp_ids ids;
    otlp_begin(x, parent, &ids);
    otlp_submit(x, r, "chat", &ids);
}

static void test_traceparent(void) {
    otlp_context c;
    CHECK_EQ_INT(otlp_parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c), 0);
    CHECK_EQ_INT(c.trace_id[0], 0x4b);
    CHECK_EQ_INT(c.trace_id[15], 0x36);
    CHECK_EQ_INT(c.span_id[0], 0x00);
    CHECK_EQ_INT(c.span_id[7], 0xb7);
    CHECK_EQ_INT(c.flags, 1);
    CHECK_EQ_INT(otlp_parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c), 0);
    CHECK_EQ_INT(c.flags, 0);
    /* a later version may add fields after a '-' */
    CHECK_EQ_INT(otlp_parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", &c), 0);
    CHECK_EQ_INT(otlp_parse_traceparent(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ", &c), 0);
    static const char *const bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",          /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",   /* 00 has no more fields */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",        /* no '-' before the rest */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",         /* version ff is invalid */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",         /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",         /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",         /* zero span id */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",         /* not hex */
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",         /* separators */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        "xx-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        NULL,
    };
    for (int i = 0; bad[i]; i++) CHECK_MSG(otlp_parse_traceparent(bad[i], &c) == -1, "accepted: %s", bad[i]);
    CHECK_EQ_INT(otlp_parse_traceparent(NULL, &c), -1);
    char big[4096];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_EQ_INT(otlp_parse_traceparent(big, &c), -1);
}

static const json_t *attr(const json_t *span, const char *key) {
    size_t i;
    const json_t *a;
    json_array_foreach(json_object_get(span, "attributes"), i, a)
        if (!strcmp(json_string_value(json_object_get(a, "key")), key)) return json_object_get(a, "value");
    return NULL;
}
static const char *attr_s(const json_t *span, const char *key) {
    return json_string_value(json_object_get(attr(span, key), "stringValue"));
}
static const char *attr_i(const json_t *span, const char *key) {   /* OTLP JSON: int64 as a string */
    return json_string_value(json_object_get(attr(span, key), "intValue"));
}
static const char *field(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void fill_ids(otlp_ids *ids, bool parent) {
    memset(ids, 0, sizeof *ids);
    for (int i = 0; i < 16; i++) ids->trace_id[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 8; i++) ids->root_id[i] = (uint8_t)(0x10 + i);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 8; i++) ids->att_ids[k][i] = (uint8_t)(0x20 * (k + 2) + i);
    if (parent) {
        ids->has_parent = true;
        for (int i = 0; i < 8; i++) ids->parent_id[i] = (uint8_t)(0xf0 + i);
    }
}

static ledger_record fallback_record(ledger_attempt *atts) {
    atts[0] = (ledger_attempt){"primary", "gpt-x", 503, "retryable", 40, 0, -1, -1, -1, -1, -1, -1};
    atts[1] = (ledger_attempt){"backup", "claude-y", 200, NULL, 120, 55, 3, 0, 41, 15, 7, 1234};
    ledger_record r = {
        .time_ms = 1700000000123, .request_id = "req-1", .key_id = "team-a", .route = "chat",
        .requested_model = "chat", .provider = "backup", .model = "claude-y", .attempts = atts, .n_attempts = 2,
        .usage = {10, 5, 0, 7, -1, false}, .cost_micro = 1234, .latency_ms = 180, .ttft_ms = 90, .status = 200,
    };
    return r;
}

static void test_span_json(void) {
    ledger_attempt atts[2];
    ledger_record r = fallback_record(atts);
    otlp_ids ids;
    fill_ids(&ids, false);
    sg_buf b;
    sg_buf_init(&b);
    otlp_record_json(&r, "chat", &ids, "svc-test", &b);
    json_error_t je;
    json_t *doc = json_loads(b.data, 0, &je);
    CHECK_MSG(doc != NULL, "not JSON: %s", b.data);
    if (!doc) { sg_buf_free(&b); return; }
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *ra = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    CHECK_EQ_STR(field(ra, "key"), "service.name");
    CHECK_EQ_STR(field(json_object_get(ra, "value"), "stringValue"), "svc-test");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    CHECK_EQ_STR(field(json_object_get(ss, "scope"), "name"), "smolgate");
    json_t *spans = json_object_get(ss, "spans");
    CHECK_EQ_INT(json_array_size(spans), 3);
    json_t *root = json_array_get(spans, 0), *a1 = json_array_get(spans, 1), *a2 = json_array_get(spans, 2);
    if (!root || !a1 || !a2) { json_decref(doc); sg_buf_free(&b); return; }
    /* ids: lower-case hex; one trace; the attempts are the root's children; no parent on the root */
    CHECK_EQ_STR(field(root, "traceId"), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    CHECK_EQ_STR(field(root, "spanId"), "1011121314151617");
    CHECK(json_object_get(root, "parentSpanId") == NULL);
    CHECK_EQ_STR(field(a1, "traceId"), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    CHECK_EQ_STR(field(a1, "parentSpanId"), "1011121314151617");
    CHECK_EQ_STR(field(a2, "parentSpanId"), "1011121314151617");
    CHECK_EQ_STR(field(a1, "spanId"), "4041424344454647");
    CHECK_EQ_STR(field(a2, "spanId"), "6061626364656667");
    /* names and kinds */
    CHECK_EQ_STR(field(root, "name"), "chat chat");
    CHECK_EQ_INT(json_integer_value(json_object_get(root, "kind")), 2);
    CHECK_EQ_STR(field(a1, "name"), "chat gpt-x");
    CHECK_EQ_INT(json_integer_value(json_object_get(a1, "kind")), 3);
    CHECK_EQ_STR(field(a2, "name"), "chat claude-y");
    /* times: unix nanoseconds as strings, from the record and the attempts' offsets */
    CHECK_EQ_STR(field(root, "startTimeUnixNano"), "1700000000123000000");
    CHECK_EQ_STR(field(root, "endTimeUnixNano"), "1700000000303000000");
    CHECK_EQ_STR(field(a1, "startTimeUnixNano"), "1700000000123000000");
    CHECK_EQ_STR(field(a1, "endTimeUnixNano"), "1700000000163000000");
    CHECK_EQ_STR(field(a2, "startTimeUnixNano"), "1700000000178000000");
    CHECK_EQ_STR(field(a2, "endTimeUnixNano"), "1700000000298000000");
    /* GenAI attributes of the root */
    CHECK_EQ_STR(attr_s(root, "gen_ai.operation.name"), "chat");
    CHECK_EQ_STR(attr_s(root, "gen_ai.request.model"), "chat");
    CHECK_EQ_STR(attr_s(root, "gen_ai.response.model"), "claude-y");
    CHECK_EQ_STR(attr_s(root, "gen_ai.provider.name"), "backup");
    CHECK_EQ_STR(attr_i(root, "gen_ai.usage.input_tokens"), "15");   /* cached prompt tokens count as input */
    CHECK_EQ_STR(attr_i(root, "gen_ai.usage.output_tokens"), "7");
    CHECK_EQ_STR(attr_i(root, "gen_ai.usage.cache_read.input_tokens"), "5");
    CHECK_EQ_STR(attr_i(root, "http.response.status_code"), "200");
    CHECK_EQ_STR(attr_s(root, "smolgate.key_id"), "team-a");
    CHECK_EQ_STR(attr_s(root, "smolgate.route"), "chat");
    CHECK_EQ_STR(attr_s(root, "smolgate.request_id"), "req-1");
    CHECK(json_real_value(json_object_get(attr(root, "smolgate.cost_usd"), "doubleValue")) == 0.001234);
    CHECK(attr(root, "error.type") == NULL);
    CHECK(json_object_get(root, "status") == NULL);
    /* the attempts */
    CHECK_EQ_STR(attr_s(a1, "gen_ai.provider.name"), "primary");
    CHECK_EQ_STR(attr_s(a1, "gen_ai.request.model"), "gpt-x");
    CHECK_EQ_STR(attr_i(a1, "http.response.status_code"), "503");
    CHECK_EQ_STR(attr_s(a1, "error.type"), "retryable");
    CHECK_EQ_STR(attr_s(a1, "smolgate.outcome"), "retryable");
    CHECK(attr(a1, "smolgate.retry_reason") == NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(a1, "status"), "code")), 2);
    CHECK_EQ_STR(attr_s(a2, "smolgate.outcome"), "ok");
    CHECK_EQ_STR(attr_s(a2, "smolgate.retry_reason"), "retryable");
    CHECK_EQ_STR(attr_i(a2, "smolgate.attempt"), "2");
    /* each attempt's usage, cost and timings; none when unknown (the first attempt) */
    CHECK_EQ_STR(attr_i(a2, "gen_ai.usage.input_tokens"), "15");
    CHECK_EQ_STR(attr_i(a2, "gen_ai.usage.output_tokens"), "7");
    CHECK(json_real_value(json_object_get(attr(a2, "smolgate.cost_usd"), "doubleValue")) == 0.001234);
    CHECK_EQ_STR(attr_i(a2, "smolgate.queue_ms"), "3");
    CHECK_EQ_STR(attr_i(a2, "smolgate.connect_ms"), "0");
    CHECK_EQ_STR(attr_i(a2, "smolgate.ttft_ms"), "41");
    CHECK(attr(a1, "gen_ai.usage.input_tokens") == NULL && attr(a1, "smolgate.ttft_ms") == NULL);
    CHECK(attr(a1, "smolgate.cost_usd") == NULL && attr(a1, "smolgate.queue_ms") == NULL);
    CHECK(json_object_get(a2, "status") == NULL);
    json_decref(doc);

    /* a failed request under a caller's span: the root is its child, with an error status */
    sg_buf_reset(&b);
    fill_ids(&ids, true);
    r.status = 502;
    r.error = "all_targets_failed";
    r.cost_micro = -1;
    r.usage = (gw_usage){-1, -1, -1, -1, -1, false};
    r.key_id = NULL;
    r.requested_model = "m\"with\\quotes\n";
    otlp_record_json(&r, "embeddings", &ids, NULL, &b);
    doc = json_loads(b.data, 0, &je);
    CHECK_MSG(doc != NULL, "not JSON: %s", b.data);
    if (!doc) { sg_buf_free(&b); return; }
    spans = json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"), 0), "spans");
    root = json_array_get(spans, 0);
    CHECK_EQ_STR(field(root, "parentSpanId"), "f0f1f2f3f4f5f6f7");
    CHECK_EQ_STR(field(root, "name"), "embeddings m\"with\\quotes\n");
    CHECK_EQ_STR(attr_s(root, "error.type"), "all_targets_failed");
    CHECK_EQ_STR(field(json_object_get(root, "status"), "message"), "all_targets_failed");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(root, "status"), "code")), 2);
    CHECK(attr(root, "gen_ai.usage.input_tokens") == NULL);
    CHECK(attr(root, "smolgate.cost_usd") == NULL);
    CHECK(attr(root, "smolgate.key_id") == NULL);
    const json_t *res = json_array_get(json_object_get(json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "resource"), "attributes"), 0);
    CHECK_EQ_STR(field(json_object_get(res, "value"), "stringValue"), "smolgate");
    json_decref(doc);
    sg_buf_free(&b);
}

/* ---- protobuf: a reader of the wire format, enough to check what otlp writes ---- */

typedef struct pbf {   /* one field */
    unsigned num, wt;
    uint64_t v;          /* varint, fixed64 */
    const uint8_t *p;    /* length-delimited */
    size_t n;
} pbf;

/* The next field of [*p, end): 1, 0 at the end, -1 on anything malformed. */
static int pb_read(const uint8_t **p, const uint8_t *end, pbf *f) {
    if (*p == end) return 0;
    uint64_t x = 0;
    int sh = 0;
#define VARINT(out)                                                                   \
    do {                                                                              \
        x = 0; sh = 0;                                                                \
        for (;;) {                                                                    \
            if (*p == end || sh > 63) return -1;                                      \
            uint8_t c = *(*p)++;                                                      \
            x |= (uint64_t)(c & 0x7f) << sh;                                          \
            sh += 7;                                                                  \
            if (!(c & 0x80)) break;                                                   \
        }                                                                             \
        out = x;                                                                      \
    } while (0)
    uint64_t tag;
    VARINT(tag);
    f->num = (unsigned)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    if (f->wt == 0) { VARINT(f->v); return 1; }
    if (f->wt == 1) {
        if (end - *p < 8) return -1;
        f->v = 0;
        for (int i = 0; i < 8; i++) f->v |= (uint64_t)(*p)[i] << (8 * i);
        *p += 8;
        return 1;
    }
    if (f->wt == 2) {
        uint64_t n;
        VARINT(n);
        if (n > (uint64_t)(end - *p)) return -1;
        f->p = *p;
        f->n = (size_t)n;
        *p += n;
        return 1;
    }
#undef VARINT
    return -1;
}

/* The count-th (0-based) field num of a message, or NULL */
static bool pb_get(const uint8_t *p, size_t n, unsigned num, int count, pbf *out) {
    const uint8_t *end = p + n;
    pbf f;
    int rc;
    while ((rc = pb_read(&p, end, &f)) == 1)
        if (f.num == num && count-- == 0) { *out = f; return true; }
    return false;
}

/* A well-formed message: every field parses, to its end. */
static bool pb_valid(const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    pbf f;
    int rc;
    while ((rc = pb_read(&p, end, &f)) == 1) {}
    return rc == 0;
}

/* a span's attribute key's AnyValue */
static bool pb_attr(const pbf *span, const char *key, pbf *any) {
    pbf kv;
    for (int i = 0; pb_get(span->p, span->n, 9, i, &kv); i++) {
        pbf k;
        if (pb_get(kv.p, kv.n, 1, 0, &k) && k.n == strlen(key) && !memcmp(k.p, key, k.n))
            return pb_get(kv.p, kv.n, 2, 0, any);
    }
    return false;
}
static bool pb_is(const pbf *f, const char *s) { return f->wt == 2 && f->n == strlen(s) && !memcmp(f->p, s, f->n); }

static void test_span_protobuf(void) {
    ledger_attempt atts[2];
    ledger_record r = fallback_record(atts);
    otlp_ids ids;
    fill_ids(&ids, false);
    sg_buf b;
    sg_buf_init(&b);
    otlp_record_protobuf(&r, "chat", &ids, "svc-test", &b);
    const uint8_t *d = (const uint8_t *)b.data;
    CHECK(pb_valid(d, b.len));
    pbf rs = {0}, res = {0}, kv = {0}, f = {0}, ss = {0}, scope = {0}, sp[3] = {{0}}, any = {0};
    CHECK(pb_get(d, b.len, 1, 0, &rs) && pb_valid(rs.p, rs.n));
    CHECK(!pb_get(d, b.len, 1, 1, &f));   /* one ResourceSpans */
    CHECK(pb_get(rs.p, rs.n, 1, 0, &res) && pb_get(res.p, res.n, 1, 0, &kv));
    CHECK(pb_get(kv.p, kv.n, 1, 0, &f) && pb_is(&f, "service.name"));
    CHECK(pb_get(kv.p, kv.n, 2, 0, &any) && pb_get(any.p, any.n, 1, 0, &f) && pb_is(&f, "svc-test"));
    CHECK(pb_get(rs.p, rs.n, 2, 0, &ss));
    CHECK(pb_get(ss.p, ss.n, 1, 0, &scope) && pb_get(scope.p, scope.n, 1, 0, &f) && pb_is(&f, "smolgate"));
    for (int i = 0; i < 3; i++) CHECK(pb_get(ss.p, ss.n, 2, i, &sp[i]) && pb_valid(sp[i].p, sp[i].n));
    CHECK(!pb_get(ss.p, ss.n, 2, 3, &f));
    /* ids as bytes; the attempts are the root's children; no parent on the root */
    CHECK(pb_get(sp[0].p, sp[0].n, 1, 0, &f) && f.n == 16 && !memcmp(f.p, ids.trace_id, 16));
    CHECK(pb_get(sp[0].p, sp[0].n, 2, 0, &f) && f.n == 8 && !memcmp(f.p, ids.root_id, 8));
    CHECK(!pb_get(sp[0].p, sp[0].n, 4, 0, &f));
    CHECK(pb_get(sp[1].p, sp[1].n, 4, 0, &f) && f.n == 8 && !memcmp(f.p, ids.root_id, 8));
    CHECK(pb_get(sp[2].p, sp[2].n, 2, 0, &f) && !memcmp(f.p, ids.att_ids[1], 8));
    CHECK(pb_get(sp[0].p, sp[0].n, 5, 0, &f) && pb_is(&f, "chat chat"));
    CHECK(pb_get(sp[1].p, sp[1].n, 5, 0, &f) && pb_is(&f, "chat gpt-x"));
    CHECK(pb_get(sp[0].p, sp[0].n, 6, 0, &f) && f.wt == 0 && f.v == 2);
    CHECK(pb_get(sp[1].p, sp[1].n, 6, 0, &f) && f.v == 3);
    /* times: fixed64 unix nanoseconds */
    CHECK(pb_get(sp[0].p, sp[0].n, 7, 0, &f) && f.wt == 1 && f.v == 1700000000123000000ull);
    CHECK(pb_get(sp[0].p, sp[0].n, 8, 0, &f) && f.v == 1700000000303000000ull);
    CHECK(pb_get(sp[2].p, sp[2].n, 7, 0, &f) && f.v == 1700000000178000000ull);
    /* attributes: strings, int64, double, bool */
    CHECK(pb_attr(&sp[0], "gen_ai.response.model", &any) && pb_get(any.p, any.n, 1, 0, &f) && pb_is(&f, "claude-y"));
    CHECK(pb_attr(&sp[0], "gen_ai.usage.input_tokens", &any) && pb_get(any.p, any.n, 3, 0, &f) && f.v == 15);
    CHECK(pb_attr(&sp[0], "http.response.status_code", &any) && pb_get(any.p, any.n, 3, 0, &f) && f.v == 200);
    double usd = 0;
    if (pb_attr(&sp[0], "smolgate.cost_usd", &any) && pb_get(any.p, any.n, 4, 0, &f)) memcpy(&usd, &f.v, 8);
    CHECK(usd == 0.001234);
    CHECK(pb_attr(&sp[0], "smolgate.stream", &any) && pb_get(any.p, any.n, 2, 0, &f) && f.v == 0);
    CHECK(!pb_attr(&sp[0], "error.type", &any));
    CHECK(!pb_get(sp[0].p, sp[0].n, 15, 0, &f));   /* no status on success */
    /* the failed attempt: Error status with the kind */
    pbf st = {0};
    CHECK(pb_get(sp[1].p, sp[1].n, 15, 0, &st));
    CHECK(pb_get(st.p, st.n, 3, 0, &f) && f.v == 2);
    CHECK(pb_get(st.p, st.n, 2, 0, &f) && pb_is(&f, "retryable"));
    CHECK(pb_attr(&sp[2], "smolgate.retry_reason", &any) && pb_get(any.p, any.n, 1, 0, &f) && pb_is(&f, "retryable"));
    CHECK(pb_attr(&sp[2], "smolgate.attempt", &any) && pb_get(any.p, any.n, 3, 0, &f) && f.v == 2);
    /* a long span name (over 127 bytes: a 2-byte length) and a negative int64 (10 bytes) */
    sg_buf_reset(&b);
    char longname[300];
    memset(longname, 'm', 250);
    longname[250] = 0;
    r.requested_model = longname;
    r.ttft_ms = -1;
    r.status = -5;
    otlp_record_protobuf(&r, "chat", &ids, NULL, &b);
    d = (const uint8_t *)b.data;
    CHECK(pb_valid(d, b.len) && pb_get(d, b.len, 1, 0, &rs) && pb_get(rs.p, rs.n, 2, 0, &ss) && pb_get(ss.p, ss.n, 2, 0, &sp[0]));
    CHECK(pb_get(sp[0].p, sp[0].n, 5, 0, &f) && f.n == 255);
    CHECK(pb_attr(&sp[0], "http.response.status_code", &any) && pb_get(any.p, any.n, 3, 0, &f) && (int64_t)f.v == -5);
    sg_buf_free(&b);
}

/* Ids and the traceparent sent upstream: the caller's trace and flag, or a new trace
 * sampled by the ratio; an attempt's id made once; past the kept attempts, the root. */
static void test_ids(void) {
    otlp_opts o = {.endpoint = "http://127.0.0.1:9", .sample_ratio = 1.0, .flush_ms = 60000};
    sg_error err;
    otlp *x = otlp_open(&o, &err);
    CHECK(x != NULL);
    if (!x) return;
    otlp_ids a, b;
    otlp_begin(x, NULL, &a);
    otlp_begin(x, NULL, &b);
    CHECK(a.sampled && !a.has_parent);
    CHECK(memcmp(a.trace_id, b.trace_id, 16) != 0);
    CHECK(memcmp(a.root_id, b.root_id, 8) != 0);
    static const uint8_t zero[16];
    CHECK(memcmp(a.trace_id, zero, 16) != 0 && memcmp(a.root_id, zero, 8) != 0);
    CHECK(memcmp(a.att_ids[0], zero, 8) == 0);   /* made when the attempt starts */
    char tp[OTLP_TRACEPARENT_LEN + 1], tp2[OTLP_TRACEPARENT_LEN + 1];
    otlp_attempt_traceparent(&a, 0, tp);
    CHECK_EQ_INT(strlen(tp), OTLP_TRACEPARENT_LEN);
    otlp_context back;
    CHECK_EQ_INT(otlp_parse_traceparent(tp, &back), 0);   /* what we send, we would accept */
    CHECK(memcmp(back.trace_id, a.trace_id, 16) == 0 && memcmp(back.span_id, a.att_ids[0], 8) == 0);
    CHECK_EQ_INT(back.flags, 1);
    otlp_attempt_traceparent(&a, 0, tp2);   /* the same attempt: the same span */
    CHECK_EQ_STR(tp, tp2);
    otlp_attempt_traceparent(&a, 1, tp2);
    CHECK(strcmp(tp, tp2) != 0 && !strncmp(tp, tp2, 36));
    otlp_attempt_traceparent(&a, LEDGER_MAX_ATTEMPTS + 3, tp2);   /* not exported: the root is its parent */
    CHECK_EQ_INT(otlp_parse_traceparent(tp2, &back), 0);
    CHECK(memcmp(back.span_id, a.root_id, 8) == 0);
    /* an unsampled caller: its trace, not sampled, and the flag goes on as 00 */
    otlp_context un;
    CHECK_EQ_INT(otlp_parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &un), 0);
    otlp_begin(x, &un, &a);
    CHECK(!a.sampled && a.has_parent);
    otlp_attempt_traceparent(&a, 0, tp);
    CHECK(!strncmp(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36));
    CHECK(!strcmp(tp + 52, "-00"));
    CHECK(strncmp(tp + 36, "00f067aa0ba902b7", 16) != 0);   /* our span, not the caller's */
    otlp_close(x, 0);
    /* ratio 0: new traces are not sampled, and say so upstream */
    o.sample_ratio = 0;
    x = otlp_open(&o, &err);
    otlp_begin(x, NULL, &a);
    CHECK(!a.sampled);
    otlp_attempt_traceparent(&a, 0, tp);
    CHECK(!strcmp(tp + 52, "-00"));
    otlp_close(x, 0);
    /* tracing off: nothing */
    otlp_begin(NULL, NULL, &a);
    CHECK(!a.sampled && memcmp(a.trace_id, zero, 16) == 0);
}

/* A port where nothing listens (bound, never listened on: connections are refused). */
static int dead_port(int *fd_out) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static void test_queue_bound_receiver_down(void) {
    int fd;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", dead_port(&fd));
    otlp_opts o = {.endpoint = url, .sample_ratio = 1.0, .batch_max = 1000, .queue_max = 4, .flush_ms = 60000,
                   .timeout_ms = 500, .max_retries = 1};
    sg_error err;
    otlp *x = otlp_open(&o, &err);
    CHECK(x != NULL);
    if (!x) { close(fd); return; }
    ledger_attempt atts[2];
    ledger_record r = fallback_record(atts);
    double t0 = now_s();
    for (int i = 0; i < 10; i++) submit(x, &r, NULL);
    double dt = now_s() - t0;
    CHECK_MSG(dt < 0.5, "10 submits took %.3f s", dt);   /* generous: only memory work */
    otlp_stats st;
    otlp_get_stats(x, &st);
    CHECK_EQ_INT(st.queued, 4);
    CHECK_EQ_INT(st.dropped_full, 6);
    CHECK_EQ_INT(st.pending, 4);
    /* parent-based sampling: a caller that did not sample is not traced */
    otlp_context unsampled;
    CHECK_EQ_INT(otlp_parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &unsampled), 0);
    submit(x, &r, &unsampled);
    otlp_get_stats(x, &st);
    CHECK_EQ_INT(st.sampled_out, 1);
    sg_buf m;
    sg_buf_init(&m);
    otlp_render_metrics(&st, &m);
    CHECK(strstr(m.data, "smolgate_otlp_dropped_queue_full_total 6\n") != NULL);
    CHECK(strstr(m.data, "smolgate_otlp_pending 4\n") != NULL);
    sg_buf_free(&m);
    /* a record with more attempts than are kept, each with every string: copied whole */
    ledger_attempt many[LEDGER_MAX_ATTEMPTS + 8];
    for (size_t i = 0; i < LEDGER_MAX_ATTEMPTS + 8; i++) many[i] = (ledger_attempt){"p", "m", 503, "retryable", 1, (int64_t)i, -1, -1, -1, -1, -1, -1};
    ledger_record big = r;
    big.attempts = many;
    big.n_attempts = LEDGER_MAX_ATTEMPTS + 8;
    otlp_context sampled;
    CHECK_EQ_INT(otlp_parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &sampled), 0);
    submit(x, &big, &sampled);   /* the queue is full: dropped, counted */
    otlp_get_stats(x, &st);
    CHECK_EQ_INT(st.dropped_full, 7);
    /* close: one try at the dead receiver, bounded */
    t0 = now_s();
    otlp_close(x, 1000);
    dt = now_s() - t0;
    CHECK_MSG(dt < 3.0, "close took %.3f s", dt);
    close(fd);

    /* sample ratio 0: nothing is queued */
    o.sample_ratio = 0;
    x = otlp_open(&o, &err);
    for (int i = 0; i < 5; i++) submit(x, &r, NULL);
    otlp_get_stats(x, &st);
    CHECK_EQ_INT(st.queued, 0);
    CHECK_EQ_INT(st.sampled_out, 5);
    submit(x, &big, &sampled);   /* a sampled caller wins over the ratio; queued */
    otlp_get_stats(x, &st);
    CHECK_EQ_INT(st.queued, 1);
    otlp_close(x, 100);
}

/* A one-shot receiver: accepts connections, reads each request whole, answers status. */
typedef struct receiver {
    int fd, port, status;
    int requests;
    char auth[128];
    sg_buf body;   /* the last body */
} receiver;

static void *receive(void *arg) {
    receiver *rv = arg;
    for (int n = 0; n < 3; n++) {
        int c = accept(rv->fd, NULL, NULL);
        if (c < 0) return NULL;
        sg_buf req;
        sg_buf_init(&req);
        char buf[8192];
        size_t need = (size_t)-1;
        for (;;) {
            ssize_t k = read(c, buf, sizeof buf);
            if (k <= 0) break;
            sg_buf_append(&req, buf, (size_t)k);
            char *end = strstr(req.data, "\r\n\r\n");
            if (end && need == (size_t)-1) {
                char *cl = strcasestr(req.data, "content-length:");
                need = (size_t)(end + 4 - req.data) + (cl ? (size_t)atol(cl + 15) : 0);
            }
            if (req.len >= need) break;
        }
        char *end = req.data ? strstr(req.data, "\r\n\r\n") : NULL;
        if (end) {
            sg_buf_reset(&rv->body);
            sg_buf_puts(&rv->body, end + 4);
            char *a = strcasestr(req.data, "\r\nauthorization: ");
            if (a) sscanf(a + 17, "%127[^\r]", rv->auth);
        }
        rv->requests++;
        char resp[128];
        int s = rv->requests == 1 ? 503 : rv->status;   /* the first try fails: retried */
        int len = snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", s);
        if (write(c, resp, (size_t)len) < 0) {}
        close(c);
        sg_buf_free(&req);
        if (s == 200) break;
    }
    return NULL;
}

static void test_export(void) {
    receiver rv = {.status = 200};
    sg_buf_init(&rv.body);
    rv.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(rv.fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(rv.fd, (struct sockaddr *)&a, &len);
    listen(rv.fd, 8);
    pthread_t th;
    pthread_create(&th, NULL, receive, &rv);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/traces", ntohs(a.sin_port));
    gw_header h = {"authorization", "Bearer tok-123"};
    otlp_opts o = {.endpoint = url, .headers = &h, .n_headers = 1, .sample_ratio = 1.0, .batch_max = 2,
                   .queue_max = 10, .flush_ms = 50, .timeout_ms = 2000, .max_retries = 2};
    sg_error err;
    otlp *x = otlp_open(&o, &err);
    ledger_attempt atts[2];
    ledger_record r = fallback_record(atts);
    otlp_context parent;
    otlp_parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &parent);
    /* the second attempt was sent upstream with a traceparent; the first was not (its id
     * is made at submit) */
    otlp_ids ids;
    otlp_begin(x, &parent, &ids);
    char tp[OTLP_TRACEPARENT_LEN + 1];
    otlp_attempt_traceparent(&ids, 1, tp);
    otlp_submit(x, &r, "chat", &ids);
    /* a long model name is cut at 256 bytes, on a character boundary: "\xc3\xa9" straddles it */
    char longname[300];
    memset(longname, 'a', 255);
    strcpy(longname + 255, "\xc3\xa9tail");
    ledger_record r2 = r;
    r2.requested_model = longname;
    submit(x, &r2, NULL);
    otlp_stats st = {0};
    for (int i = 0; i < 200 && st.exported < 6; i++) { usleep(10000); otlp_get_stats(x, &st); }
    CHECK_EQ_INT(st.exported, 6);
    CHECK_EQ_INT(st.export_failures, 1);
    pthread_join(th, NULL);
    CHECK_EQ_INT(rv.requests, 2);
    CHECK_EQ_STR(rv.auth, "Bearer tok-123");
    json_t *doc = json_loads(rv.body.data ? rv.body.data : "", 0, NULL);
    json_t *spans = json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0), "scopeSpans"), 0), "spans");
    CHECK_EQ_INT(json_array_size(spans), 6);
    /* the first request continues the caller's trace; the second has one of its own */
    CHECK_EQ_STR(field(json_array_get(spans, 0), "traceId"), "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK_EQ_STR(field(json_array_get(spans, 0), "parentSpanId"), "00f067aa0ba902b7");
    /* the upstream's parent is the exported span of its attempt */
    char want[OTLP_TRACEPARENT_LEN + 1];
    snprintf(want, sizeof want, "00-4bf92f3577b34da6a3ce929d0e0e4736-%s-01", field(json_array_get(spans, 2), "spanId"));
    CHECK_EQ_STR(tp, want);
    CHECK_EQ_STR(field(json_array_get(spans, 2), "parentSpanId"), field(json_array_get(spans, 0), "spanId"));
    CHECK_EQ_INT(strlen(field(json_array_get(spans, 1), "spanId")), 16);
    CHECK(strcmp(field(json_array_get(spans, 1), "spanId"), "0000000000000000") != 0);
    CHECK(strcmp(field(json_array_get(spans, 3), "traceId"), "4bf92f3577b34da6a3ce929d0e0e4736") != 0);
    CHECK_EQ_INT(strlen(field(json_array_get(spans, 3), "traceId")), 32);
    CHECK_EQ_STR(field(json_array_get(spans, 4), "parentSpanId"), field(json_array_get(spans, 3), "spanId"));
    CHECK_EQ_INT(strlen(field(json_array_get(spans, 3), "name")), 5 + 255);   /* "chat " + the name, without the cut character */
    json_decref(doc);
    otlp_close(x, 100);
    close(rv.fd);
    sg_buf_free(&rv.body);
}

/* ---- configuration ---- */

typedef struct kv { const char *k, *v; } kv;
static const char *env_table(void *ctx, const char *name) {
    for (const kv *e = ctx; e->k; e++)
        if (!strcmp(e->k, name)) return e->v;
    return NULL;
}

static gw_config *load(const char *text, const kv *env, sg_error *err) {
    char *path = tu_path("%s/t.yaml", tu_tmpdir());
    tu_write(path, text, strlen(text));
    gw_config *c = NULL;
    config_env e = {env_table, (void *)env};
    config_load(&c, path, &e, err);
    return c;
}

static void test_config(void) {
    static const kv none[] = {{NULL, NULL}};
    sg_error err = {{0}};
    gw_config *c = load("version: 1\n", none, &err);
    CHECK(c && c->tracing.endpoint == NULL);   /* off by default */
    config_unref(c);
    c = load("tracing:\n  endpoint: http://127.0.0.1:4318/\n  headers: {authorization: \"Bearer zz-secret-1\"}\n"
             "  sample_ratio: 0.25\n  batch_max: 10\n  queue_max: 20\n  service_name: gw1\n", none, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_STR(c->tracing.endpoint, "http://127.0.0.1:4318/v1/traces");
        CHECK_EQ_INT(c->tracing.n_headers, 1);
        CHECK_EQ_STR(c->tracing.headers[0].value, "Bearer zz-secret-1");
        CHECK(c->tracing.sample_ratio == 0.25);
        CHECK_EQ_INT(c->tracing.batch_max, 10);
        CHECK_EQ_INT(c->tracing.queue_max, 20);
        CHECK_EQ_STR(c->tracing.service_name, "gw1");
    }
    config_unref(c);
    c = load("tracing: {endpoint: http://h:1, sample_ratio: 1.5}\n", none, &err);
    CHECK(c == NULL && strstr(err.msg, "sample_ratio") && strstr(err.msg, "0 to 1"));
    c = load("tracing: {endpoint: ftp://h:1}\n", none, &err);
    CHECK(c == NULL && strstr(err.msg, "endpoint"));
    c = load("tracing: {endpoint: http://h:1, bogus: 1}\n", none, &err);
    CHECK(c == NULL && strstr(err.msg, "bogus"));
    /* the standard variables */
    static const kv env[] = {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"},
                             {"OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret-42, x-team = blue"},
                             {"OTEL_SERVICE_NAME", "edge"}, {NULL, NULL}};
    c = load("version: 1\n", env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_STR(c->tracing.endpoint, "http://collector:4318/v1/traces");
        CHECK_EQ_INT(c->tracing.n_headers, 2);
        if (c->tracing.n_headers == 2) {
            CHECK_EQ_STR(c->tracing.headers[0].name, "api-key");
            CHECK_EQ_STR(c->tracing.headers[0].value, "s=cret-42");
            CHECK_EQ_STR(c->tracing.headers[1].name, "x-team");
            CHECK_EQ_STR(c->tracing.headers[1].value, "blue");
        }
        CHECK_EQ_STR(c->tracing.service_name, "edge");
    }
    config_unref(c);
    static const kv env2[] = {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"},
                              {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom/path"}, {NULL, NULL}};
    c = load("version: 1\n", env2, &err);
    CHECK(c && !strcmp(c->tracing.endpoint, "http://t:1/custom/path"));   /* used as it is */
    config_unref(c);
    /* the protocol: the file's key, else the traces' variable, else the general one */
    c = load("version: 1\n", env2, &err);
    CHECK(c && c->tracing.protobuf);   /* http/protobuf unless asked */
    config_unref(c);
    c = load("tracing: {endpoint: http://h:1, protocol: http/protobuf}\n", none, &err);
    CHECK(c && c->tracing.protobuf);
    gw_config *c2 = load("tracing: {endpoint: http://h:1, protocol: http/json}\n", none, &err);
    CHECK(c2 && !c2->tracing.protobuf);
    if (c && c2) {   /* what a reload compares */
        CHECK(!config_tracing_equal(&c->tracing, &c2->tracing));
        c2->tracing.protobuf = true;
        CHECK(config_tracing_equal(&c->tracing, &c2->tracing));
        c2->tracing.sample_ratio = 0.5;
        CHECK(!config_tracing_equal(&c->tracing, &c2->tracing));
    }
    config_unref(c2);
    config_unref(c);
    c = load("tracing: {endpoint: http://h:1, protocol: grpc}\n", none, &err);
    CHECK(c == NULL && strstr(err.msg, "protocol") && strstr(err.msg, "http/protobuf"));
    static const kv envp[] = {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:1"}, {"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"},
                              {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"}, {NULL, NULL}};
    c = load("version: 1\n", envp, &err);
    CHECK_MSG(c && c->tracing.protobuf, "%s", err.msg);
    config_unref(c);
    c = load("tracing: {protocol: http/json}\n", envp, &err);   /* the file wins */
    CHECK(c && !c->tracing.protobuf);
    config_unref(c);
    static const kv envg[] = {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:1"}, {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}, {NULL, NULL}};
    c = load("version: 1\n", envg, &err);
    CHECK(c == NULL && strstr(err.msg, "OTEL_EXPORTER_OTLP_PROTOCOL") && strstr(err.msg, "grpc"));
    c = load("tracing: {enabled: false}\n", env2, &err);
    CHECK(c && c->tracing.endpoint == NULL);
    config_unref(c);
    static const kv env3[] = {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:1"},
                              {"OTEL_EXPORTER_OTLP_HEADERS", "bad name=zz-secret-9"}, {NULL, NULL}};
    c = load("version: 1\n", env3, &err);
    CHECK(c == NULL && strstr(err.msg, "OTEL_EXPORTER_OTLP_HEADERS") && !strstr(err.msg, "zz-secret-9"));
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_traceparent);
    RUN(test_span_json);
    RUN(test_span_protobuf);
    RUN(test_ids);
    RUN(test_queue_bound_receiver_down);
    RUN(test_export);
    RUN(test_config);
    return tu_finish(argv[0]);
}
