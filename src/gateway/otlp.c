/* otlp.c: request traces to an OTLP/HTTP receiver (contract in otlp.h). */
#include "gateway/otlp.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/log.h"

/* ---- trace context ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;   /* upper case is invalid in traceparent */
}

static int hex_bytes(const char *s, uint8_t *out, size_t n) {
    uint8_t any = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
        any |= out[i];
    }
    return any ? 0 : -1;   /* all-zero ids are invalid */
}

int otlp_parse_traceparent(const char *s, otlp_context *out) {
    if (!s) return -1;
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    /* version 00 is exactly 55 chars; a later version may append "-..." fields */
    if (n < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-') return -1;
    int v1 = hexval(s[0]), v0 = hexval(s[1]);
    if (v1 < 0 || v0 < 0 || (v1 == 15 && v0 == 15)) return -1;
    if (v1 == 0 && v0 == 0 && n != 55) return -1;
    if (n > 55 && s[55] != '-') return -1;
    otlp_context c;
    uint8_t fl;
    if (hex_bytes(s + 3, c.trace_id, 16) || hex_bytes(s + 36, c.span_id, 8)) return -1;
    int f1 = hexval(s[53]), f0 = hexval(s[54]);
    if (f1 < 0 || f0 < 0) return -1;
    fl = (uint8_t)(f1 << 4 | f0);
    c.flags = fl;
    *out = c;
    return 0;
}

/* ---- encoding ---- */

/* Written straight into the buffer, without printf or a JSON tree: the exporter shares
 * the machine with the loop (bench/bench_otlp.c measures it). */

#define LIT(b, s) sg_buf_append((b), (s), sizeof(s) - 1)

static void hex(char *out, const uint8_t *b, size_t n) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) { out[2 * i] = d[b[i] >> 4]; out[2 * i + 1] = d[b[i] & 15]; }
    out[2 * n] = 0;
}

static void put_hex(sg_buf *b, const uint8_t *id, size_t n) {
    char h[33];
    hex(h, id, n);
    sg_buf_append(b, h, 2 * n);
}

/* s as a JSON string literal */
static void put_str(sg_buf *b, const char *s) { sg_buf_json_str(b, s, strlen(s)); }

/* ---- protobuf (the OTLP .proto's field numbers) ---- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}
/* v as a varint at d; its length (1 to 10) */
static size_t varint_at(uint8_t *d, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) { d[n++] = (uint8_t)(v | 0x80); v >>= 7; }
    d[n++] = (uint8_t)v;
    return n;
}
#define TAG(field, wt) ((uint8_t)((field) << 3 | (wt)))   /* fields below 16: one byte */

/* Each field is built in a few bytes on the stack and appended at once: the buffer's
 * append per byte would cost more than the encoding. */
static void pb_varint_field(sg_buf *b, unsigned field, uint64_t v) {
    uint8_t d[11] = {TAG(field, WT_VARINT)};
    sg_buf_append(b, d, 1 + varint_at(d + 1, v));
}
static void pb_bytes(sg_buf *b, unsigned field, const void *p, size_t n) {
    uint8_t d[11] = {TAG(field, WT_LEN)};
    sg_buf_append(b, d, 1 + varint_at(d + 1, n));
    sg_buf_append(b, p, n);
}
static void pb_fixed64(sg_buf *b, unsigned field, uint64_t v) {
    uint8_t d[9] = {TAG(field, WT_I64)};
    for (int i = 0; i < 8; i++) d[1 + i] = (uint8_t)(v >> (8 * i));   /* little-endian on the wire */
    sg_buf_append(b, d, 9);
}
/* A nested message whose length is known only at its end: room for a length varint of
 * `room` bytes now (what the message's usual size needs), the content moved at pb_close
 * only when its length needs another number of bytes. A span (~400 bytes) takes 2, a
 * batch's ScopeSpans (~200 KB) 3: moving every span down by the unused bytes of a
 * 5-byte room cost the exporter a third of its time. */
static size_t pb_open(sg_buf *b, unsigned field, size_t room) {
    sg_buf_reserve(b, 1 + room);
    b->data[b->len++] = (char)TAG(field, WT_LEN);
    size_t at = b->len;
    b->len += room;
    b->data[at] = (char)room;   /* pb_close reads the room back from here */
    return at;
}
static void pb_close(sg_buf *b, size_t at) {
    size_t room = (unsigned char)b->data[at];
    size_t n = b->len - at - room, k = varint_len(n);
    if (k != room) {
        sg_buf_reserve(b, k > room ? k - room : 0);
        memmove(b->data + at + k, b->data + at + room, n);
        b->len = b->len + k - room;
    }
    varint_at((uint8_t *)b->data + at, n);
    b->data[b->len] = 0;
}
/* KeyValue{key = 1, value = 2: AnyValue{...}} up to the AnyValue's content, whose
 * length is known up front */
static void pb_kv_head(sg_buf *b, unsigned field, const char *k, size_t any_len) {
    size_t kl = strlen(k);
    size_t kv = 1 + varint_len(kl) + kl + 1 + varint_len(any_len) + any_len;
    uint8_t d[24] = {TAG(field, WT_LEN)};
    size_t n = 1 + varint_at(d + 1, kv);
    d[n++] = TAG(1, WT_LEN);
    n += varint_at(d + n, kl);
    sg_buf_append(b, d, n);
    sg_buf_append(b, k, kl);
    d[0] = TAG(2, WT_LEN);
    sg_buf_append(b, d, 1 + varint_at(d + 1, any_len));
}

/* ---- one writer for both encodings ---- */

/* Where a document or a span is being written, in which encoding. */
typedef struct wr {
    sg_buf *b;
    bool pb;
    bool first_attr;          /* JSON: no comma before the next attribute */
    bool first_span;          /* JSON: no comma before the next span */
    size_t span_at, rs_at, ss_at;   /* protobuf: open messages (span, ResourceSpans, ScopeSpans) */
} wr;

static void key(sg_buf *b, bool *first, const char *k) {
    if (*first) LIT(b, "{\"key\":\"");
    else LIT(b, ",{\"key\":\"");
    *first = false;
    sg_buf_puts(b, k);   /* attribute names are our literals */
    LIT(b, "\",\"value\":{");
}
enum { SPAN_ATTRIBUTES = 9 };   /* Span.attributes */
static void attr_str(wr *w, const char *k, const char *v) {
    if (!v) return;
    sg_buf *b = w->b;
    if (w->pb) {
        size_t vl = strlen(v);
        pb_kv_head(b, SPAN_ATTRIBUTES, k, 1 + varint_len(vl) + vl);
        pb_bytes(b, 1, v, vl);   /* AnyValue.string_value */
        return;
    }
    key(b, &w->first_attr, k);
    LIT(b, "\"stringValue\":");
    put_str(b, v);
    LIT(b, "}}");
}
/* OTLP JSON writes 64-bit integers as strings */
static void attr_int(wr *w, const char *k, int64_t v) {
    sg_buf *b = w->b;
    if (w->pb) {
        pb_kv_head(b, SPAN_ATTRIBUTES, k, 1 + varint_len((uint64_t)v));
        pb_varint_field(b, 3, (uint64_t)v);   /* AnyValue.int_value (int64: two's complement) */
        return;
    }
    key(b, &w->first_attr, k);
    LIT(b, "\"intValue\":\"");
    sg_buf_put_i64(b, v);
    LIT(b, "\"}}");
}
/* micro-dollars as dollars: JSON the exact decimal, which parses to the double nearest
 * to it, as the division does */
static void attr_usd(wr *w, const char *k, int64_t micro) {
    sg_buf *b = w->b;
    if (w->pb) {
        double d = (double)micro / 1e6;
        uint64_t bits;
        memcpy(&bits, &d, 8);
        pb_kv_head(b, SPAN_ATTRIBUTES, k, 9);
        pb_fixed64(b, 4, bits);   /* AnyValue.double_value */
        return;
    }
    key(b, &w->first_attr, k);
    LIT(b, "\"doubleValue\":");
    uint64_t m = micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;
    if (micro < 0) sg_buf_putc(b, '-');
    sg_buf_put_u64(b, m / 1000000);
    uint64_t frac = m % 1000000;
    if (frac) {
        char d[7] = {'.'};
        int n = 6;
        while (frac % 10 == 0) { frac /= 10; n--; }
        for (int i = n; i > 0; i--) { d[i] = (char)('0' + frac % 10); frac /= 10; }
        sg_buf_append(b, d, (size_t)n + 1);
    }
    LIT(b, "}}");
}
static void attr_bool(wr *w, const char *k, bool v) {
    sg_buf *b = w->b;
    if (w->pb) {
        pb_kv_head(b, SPAN_ATTRIBUTES, k, 2);
        pb_varint_field(b, 2, v);   /* AnyValue.bool_value */
        return;
    }
    key(b, &w->first_attr, k);
    if (v) LIT(b, "\"boolValue\":true}}");
    else LIT(b, "\"boolValue\":false}}");
}

enum { KIND_SERVER = 2, KIND_CLIENT = 3 };

/* unix milliseconds as a nanosecond string */
static void put_nanos(sg_buf *b, int64_t ms) {
    sg_buf_putc(b, '"');
    sg_buf_put_u64(b, ms > 0 ? (uint64_t)ms : 0);
    if (ms > 0) LIT(b, "000000\"");
    else sg_buf_putc(b, '"');
}

/* Opens a span up to its attributes. */
static void span_open(wr *w, const uint8_t *trace, const uint8_t *id, const uint8_t *parent, const char *op,
                      const char *model, int kind, int64_t start_ms, int64_t end_ms) {
    sg_buf *b = w->b;
    sg_buf_reserve(b, 1024);   /* one growth check for most spans */
    const char *m = model ? model : "unknown";
    w->first_attr = true;
    if (w->pb) {
        w->span_at = pb_open(b, 2, 2);   /* ScopeSpans.spans */
        pb_bytes(b, 1, trace, 16);
        pb_bytes(b, 2, id, 8);
        if (parent) pb_bytes(b, 4, parent, 8);
        size_t ol = strlen(op), ml = strlen(m);
        uint8_t d[11] = {TAG(5, WT_LEN)};
        sg_buf_append(b, d, 1 + varint_at(d + 1, ol + 1 + ml));
        sg_buf_append(b, op, ol);
        sg_buf_putc(b, ' ');
        sg_buf_append(b, m, ml);
        pb_varint_field(b, 6, (uint64_t)kind);
        pb_fixed64(b, 7, start_ms > 0 ? (uint64_t)start_ms * 1000000 : 0);
        pb_fixed64(b, 8, end_ms > 0 ? (uint64_t)end_ms * 1000000 : 0);
        return;
    }
    if (!w->first_span) sg_buf_putc(b, ',');
    w->first_span = false;
    LIT(b, "{\"traceId\":\"");
    put_hex(b, trace, 16);
    LIT(b, "\",\"spanId\":\"");
    put_hex(b, id, 8);
    if (parent) { LIT(b, "\",\"parentSpanId\":\""); put_hex(b, parent, 8); }
    LIT(b, "\",\"name\":\"");
    sg_buf_json_escape(b, op, strlen(op));   /* op (< 16) + ' ' + a model (copies are cut at 256 bytes) */
    sg_buf_putc(b, ' ');
    sg_buf_json_escape(b, m, strlen(m));
    LIT(b, "\",\"kind\":");
    sg_buf_put_u64(b, (uint64_t)kind);
    LIT(b, ",\"startTimeUnixNano\":");
    put_nanos(b, start_ms);
    LIT(b, ",\"endTimeUnixNano\":");
    put_nanos(b, end_ms);
    LIT(b, ",\"attributes\":[");
}
/* Closes the span; Error status with the kind, unset on success (as the GenAI
 * conventions leave it). */
static void span_close(wr *w, const char *error) {
    sg_buf *b = w->b;
    if (w->pb) {
        if (error) {   /* Span.status = Status{message = 2, code = 3: STATUS_CODE_ERROR} */
            size_t el = strlen(error);
            uint8_t d[11] = {TAG(15, WT_LEN)};
            sg_buf_append(b, d, 1 + varint_at(d + 1, 1 + varint_len(el) + el + 2));
            pb_bytes(b, 2, error, el);
            pb_varint_field(b, 3, 2);
        }
        pb_close(b, w->span_at);
        return;
    }
    sg_buf_putc(b, ']');
    if (error) {
        LIT(b, ",\"status\":{\"code\":2,\"message\":");   /* STATUS_CODE_ERROR */
        put_str(b, error);
        sg_buf_putc(b, '}');
    }
    sg_buf_putc(b, '}');
}

static void add_spans(wr *w, const ledger_record *r, const char *op, const otlp_ids *ids) {
    span_open(w, ids->trace_id, ids->root_id, ids->has_parent ? ids->parent_id : NULL, op, r->requested_model,
              KIND_SERVER, r->time_ms, r->time_ms + r->latency_ms);
    attr_str(w, "gen_ai.operation.name", op);
    attr_str(w, "gen_ai.request.model", r->requested_model);
    attr_str(w, "gen_ai.response.model", r->model);
    attr_str(w, "gen_ai.provider.name", r->provider);
    const gw_usage *u = &r->usage;
    if (u->input >= 0)   /* the conventions count cached prompt tokens as input too */
        attr_int(w, "gen_ai.usage.input_tokens", u->input + (u->cache_read > 0 ? u->cache_read : 0) +
                                                     (u->cache_write > 0 ? u->cache_write : 0));
    if (u->output >= 0) attr_int(w, "gen_ai.usage.output_tokens", u->output);
    if (u->cache_read > 0) attr_int(w, "gen_ai.usage.cache_read.input_tokens", u->cache_read);
    if (u->cache_write > 0) attr_int(w, "gen_ai.usage.cache_creation.input_tokens", u->cache_write);
    attr_int(w, "http.response.status_code", r->status);
    if (r->error) attr_str(w, "error.type", r->error);
    attr_str(w, "smolgate.request_id", r->request_id);
    attr_str(w, "smolgate.key_id", r->key_id);
    attr_str(w, "smolgate.route", r->route);
    if (r->cost_micro >= 0) attr_usd(w, "smolgate.cost_usd", r->cost_micro);
    attr_int(w, "smolgate.attempts", (int64_t)r->n_attempts);
    if (r->ttft_ms >= 0) attr_int(w, "smolgate.ttft_ms", r->ttft_ms);
    if (u->estimated) attr_bool(w, "smolgate.usage_estimated", true);
    attr_bool(w, "smolgate.stream", r->stream);
    span_close(w, r->error);
    size_t n = r->n_attempts < LEDGER_MAX_ATTEMPTS ? r->n_attempts : LEDGER_MAX_ATTEMPTS;
    for (size_t i = 0; i < n; i++) {
        const ledger_attempt *t = &r->attempts[i];
        int64_t st = r->time_ms + t->start_ms;
        span_open(w, ids->trace_id, ids->att_ids[i], ids->root_id, op, t->model, KIND_CLIENT, st, st + t->latency_ms);
        attr_str(w, "gen_ai.operation.name", op);
        attr_str(w, "gen_ai.provider.name", t->provider);
        attr_str(w, "gen_ai.request.model", t->model);
        if (t->status > 0) attr_int(w, "http.response.status_code", t->status);
        if (t->error) attr_str(w, "error.type", t->error);
        /* what this call to the provider used and how its time went (as the dashboard's
         * trace shows them); unknown ones are left out */
        if (t->input_tokens >= 0) attr_int(w, "gen_ai.usage.input_tokens", t->input_tokens);
        if (t->output_tokens >= 0) attr_int(w, "gen_ai.usage.output_tokens", t->output_tokens);
        if (t->cost_micro >= 0) attr_usd(w, "smolgate.cost_usd", t->cost_micro);
        if (t->queue_ms >= 0) attr_int(w, "smolgate.queue_ms", t->queue_ms);
        if (t->connect_ms >= 0) attr_int(w, "smolgate.connect_ms", t->connect_ms);
        if (t->ttft_ms >= 0) attr_int(w, "smolgate.ttft_ms", t->ttft_ms);
        attr_int(w, "smolgate.attempt", (int64_t)i + 1);
        attr_str(w, "smolgate.outcome", t->error ? t->error : "ok");
        /* why this attempt was made: the one before it failed so */
        if (i > 0) attr_str(w, "smolgate.retry_reason", r->attempts[i - 1].error ? r->attempts[i - 1].error : "unknown");
        span_close(w, t->error);
    }
}

/* The document up to its spans; doc_close ends it. ExportTraceServiceRequest{
 * resource_spans = 1: ResourceSpans{resource = 1: Resource{attributes = 1}, scope_spans =
 * 2: ScopeSpans{scope = 1: InstrumentationScope{name = 1}, spans = 2}}} */
static void doc_open(wr *w, sg_buf *b, bool pb, const char *service) {
    *w = (wr){.b = b, .pb = pb, .first_span = true};
    const char *svc = service ? service : "smolgate";
    if (pb) {
        w->rs_at = pb_open(b, 1, 3);
        size_t res = pb_open(b, 1, 1);
        size_t sl = strlen(svc);
        pb_kv_head(b, 1, "service.name", 1 + varint_len(sl) + sl);
        pb_bytes(b, 1, svc, sl);
        pb_close(b, res);
        w->ss_at = pb_open(b, 2, 3);
        LIT(b, "\x0a\x0a\x0a\x08smolgate");   /* scope = 1 (10 bytes): name = 1 (8 bytes) */
        return;
    }
    LIT(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    put_str(b, svc);
    LIT(b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"smolgate\"},\"spans\":[");
}
static void doc_close(wr *w) {
    if (w->pb) {
        pb_close(w->b, w->ss_at);
        pb_close(w->b, w->rs_at);
        return;
    }
    LIT(w->b, "]}]}]}");
}

void otlp_record_json(const ledger_record *r, const char *op, const otlp_ids *ids, const char *service_name, sg_buf *out) {
    wr w;
    doc_open(&w, out, false, service_name);
    add_spans(&w, r, op, ids);
    doc_close(&w);
}

void otlp_record_protobuf(const ledger_record *r, const char *op, const otlp_ids *ids, const char *service_name,
                          sg_buf *out) {
    wr w;
    doc_open(&w, out, true, service_name);
    add_spans(&w, r, op, ids);
    doc_close(&w);
}

/* ---- ids ---- */

static uint64_t next_rand(uint64_t *s) {   /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Random ids from a per-thread generator seeded by the kernel: the loop makes them with
 * no lock, and two threads (or two gateways) never share a sequence. */
static _Thread_local uint64_t tl_rng;
static _Thread_local bool tl_seeded;

static void rand_bytes(uint8_t *out, size_t n) {
    if (!tl_seeded) {
        if (getrandom(&tl_rng, sizeof tl_rng, 0) != sizeof tl_rng)
            tl_rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&tl_rng;
        tl_seeded = true;
    }
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t x = next_rand(&tl_rng);
            memcpy(out + i, &x, n - i < 8 ? n - i : 8);
        }
    } while (!out[0] && !memcmp(out, out + 1, n - 1));   /* never all zero */
}

static bool is_zero(const uint8_t *b, size_t n) { return !b[0] && !memcmp(b, b + 1, n - 1); }

/* ---- the queue ---- */

/* A record copied out of the request with its ids; its attempts and its strings (cut at
 * 256 bytes) follow it in the same allocation, sized to the record: most requests make
 * one attempt, and a small block is cheap to allocate on the loop and free on the
 * exporter's thread. */
typedef struct item {
    ledger_record r;
    otlp_ids ids;
    char op[16];
    ledger_attempt atts[];   /* r.n_attempts of them, then the strings */
} item;

static void item_free(item *it) { free(it); }

/* Bytes kept of s: at most 256, cut on a UTF-8 character boundary (the JSON must stay
 * valid); with the NUL. 0 for NULL. */
static size_t keep_len(const char *s) {
    if (!s) return 0;
    size_t n = strnlen(s, 256);
    if (n == 256)
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    return n + 1;
}
static const char *keep(char **at, const char *s) {
    size_t n = keep_len(s);
    if (!n) return NULL;
    char *d = *at;
    memcpy(d, s, n - 1);
    d[n - 1] = 0;
    *at += n;
    return d;
}

struct otlp {
    otlp_opts o;
    char *url;
    char *service;            /* o.service_name's copy */
    struct curl_slist *headers;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item **q;                 /* ring of queue_max */
    size_t head, len;
    bool stop;
    struct timespec stop_by;  /* CLOCK_MONOTONIC: otlp_close's bound */
    uint64_t sample_below;    /* a trace id's low 8 bytes below this: sampled (read only) */
    bool sample_all;
    otlp_stats st;            /* under mu */
};

void otlp_begin(otlp *o, const otlp_context *parent, otlp_ids *ids) {
    memset(ids, 0, sizeof *ids);
    if (!o) return;
    if (parent) {
        memcpy(ids->trace_id, parent->trace_id, 16);
        memcpy(ids->parent_id, parent->span_id, 8);
        ids->has_parent = true;
        ids->sampled = parent->flags & 1;   /* parent-based: the caller decided */
    } else {
        rand_bytes(ids->trace_id, 16);
        uint64_t low;
        memcpy(&low, ids->trace_id + 8, 8);
        ids->sampled = o->sample_all || low < o->sample_below;
    }
    rand_bytes(ids->root_id, 8);
}

void otlp_attempt_traceparent(otlp_ids *ids, size_t i, char out[OTLP_TRACEPARENT_LEN + 1]) {
    const uint8_t *span = ids->root_id;
    if (i < LEDGER_MAX_ATTEMPTS) {
        if (is_zero(ids->att_ids[i], 8)) rand_bytes(ids->att_ids[i], 8);
        span = ids->att_ids[i];
    }
    memcpy(out, "00-", 3);
    hex(out + 3, ids->trace_id, 16);
    out[35] = '-';
    hex(out + 36, span, 8);
    memcpy(out + 52, ids->sampled ? "-01" : "-00", 4);
}

void otlp_submit(otlp *o, const ledger_record *r, const char *op, const otlp_ids *ids) {
    if (!o || !ids) return;
    if (!ids->sampled) {
        pthread_mutex_lock(&o->mu);
        o->st.sampled_out++;
        pthread_mutex_unlock(&o->mu);
        return;
    }
    size_t n = r->n_attempts < LEDGER_MAX_ATTEMPTS ? r->n_attempts : LEDGER_MAX_ATTEMPTS;
    size_t bytes = keep_len(r->request_id) + keep_len(r->key_id) + keep_len(r->route) + keep_len(r->requested_model) +
                   keep_len(r->provider) + keep_len(r->model) + keep_len(r->error);
    for (size_t i = 0; i < n; i++)   /* failure kinds are mostly static strings, but need not be */
        bytes += keep_len(r->attempts[i].provider) + keep_len(r->attempts[i].model) + keep_len(r->attempts[i].error);
    item *it = malloc(sizeof *it + n * sizeof *it->atts + bytes);
    if (!it) return;
    it->r = *r;
    it->ids = *ids;
    char *at = (char *)(it->atts + n);
    it->r.request_id = keep(&at, r->request_id);
    it->r.key_id = keep(&at, r->key_id);
    it->r.route = keep(&at, r->route);
    it->r.requested_model = keep(&at, r->requested_model);
    it->r.provider = keep(&at, r->provider);
    it->r.model = keep(&at, r->model);
    it->r.error = keep(&at, r->error);
    for (size_t i = 0; i < n; i++) {
        it->atts[i] = r->attempts[i];
        it->atts[i].provider = keep(&at, r->attempts[i].provider);
        it->atts[i].model = keep(&at, r->attempts[i].model);
        it->atts[i].error = keep(&at, r->attempts[i].error);
        if (is_zero(it->ids.att_ids[i], 8)) rand_bytes(it->ids.att_ids[i], 8);   /* not sent upstream */
    }
    it->r.attempts = it->atts;
    it->r.n_attempts = n;
    snprintf(it->op, sizeof it->op, "%s", op ? op : "chat");

    pthread_mutex_lock(&o->mu);
    if (o->len == o->o.queue_max || o->stop) {
        o->st.dropped_full++;
        pthread_mutex_unlock(&o->mu);
        item_free(it);
        return;
    }
    o->q[(o->head + o->len) % o->o.queue_max] = it;
    o->len++;
    o->st.queued++;
    if (o->len >= o->o.batch_max) pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

/* ---- the exporter thread ---- */

static size_t discard(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }

/* One POST. 0: accepted; 1: worth retrying (429, 5xx, no answer); -1: refused for good. */
static long ms_left(const struct timespec *by) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(by->tv_sec - now.tv_sec) * 1000 + (by->tv_nsec - now.tv_nsec) / 1000000;
}

static int post(otlp *o, CURL *c, const sg_buf *body, bool final) {
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, o->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, o->headers);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    long tmo = (long)o->o.timeout_ms;
    if (final) {   /* closing: within otlp_close's bound (stop_by is set before stop) */
        long left = ms_left(&o->stop_by);
        if (left < 1) return -1;
        if (left < tmo) tmo = left;
    }
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, tmo);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, tmo);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (rc == CURLE_OK && code >= 200 && code < 300) return 0;
    return rc != CURLE_OK || code == 429 || code >= 500 ? 1 : -1;
}

/* Sleeps ms unless told to stop; true when stopping. */
static bool wait_ms(otlp *o, uint32_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&o->mu);
    while (!o->stop && pthread_cond_timedwait(&o->cv, &o->mu, &ts) == 0) {}
    bool s = o->stop;
    pthread_mutex_unlock(&o->mu);
    return s;
}

/* body: the exporter's buffer, reused from batch to batch */
static void export_batch(otlp *o, CURL *c, sg_buf *body, item **batch, size_t n, bool final) {
    sg_buf_reset(body);
    wr w;
    doc_open(&w, body, o->o.protocol == OTLP_PROTOBUF, o->o.service_name);
    uint64_t n_spans = 0;
    for (size_t i = 0; i < n; i++) {
        add_spans(&w, &batch[i]->r, batch[i]->op, &batch[i]->ids);
        n_spans += 1 + batch[i]->r.n_attempts;
        item_free(batch[i]);
    }
    doc_close(&w);
    int rc = 1;
    uint32_t backoff = 100;
    for (uint32_t t = 0; rc == 1 && t <= o->o.max_retries; t++) {
        if (t && (final || wait_ms(o, backoff))) break;   /* stopping: no more waits */
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
        rc = post(o, c, body, final);
        if (rc) {
            pthread_mutex_lock(&o->mu);
            bool first = o->st.export_failures++ == 0;
            pthread_mutex_unlock(&o->mu);
            if (first) SG_WARN("otlp: exporting spans failed (more failures are counted in /metrics, not logged)");
        }
    }
    pthread_mutex_lock(&o->mu);
    if (rc == 0) o->st.exported += n_spans;
    else o->st.dropped_failed += n_spans;
    pthread_mutex_unlock(&o->mu);
}

static void *run(void *arg) {
    otlp *o = arg;
    CURL *c = curl_easy_init();
    item **batch = calloc(o->o.batch_max, sizeof *batch);
    sg_buf body;
    sg_buf_init(&body);
    struct timespec last;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (;;) {
        pthread_mutex_lock(&o->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += o->o.flush_ms / 1000;
        ts.tv_nsec += (long)(o->o.flush_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        while (!o->stop && o->len < o->o.batch_max) {
            if (pthread_cond_timedwait(&o->cv, &o->mu, &ts)) break;   /* flush_ms passed */
        }
        bool stop = o->stop;
        size_t n = 0;
        while (o->len && n < o->o.batch_max) {
            batch[n++] = o->q[o->head];
            o->head = (o->head + 1) % o->o.queue_max;
            o->len--;
        }
        bool more = o->len > 0;
        pthread_mutex_unlock(&o->mu);
        if (n && c && batch) export_batch(o, c, &body, batch, n, stop);
        else for (size_t i = 0; i < n; i++) item_free(batch[i]);
        if (stop && !more) break;
    }
    free(batch);
    sg_buf_free(&body);
    if (c) curl_easy_cleanup(c);
    return NULL;
}

/* ---- lifecycle ---- */

void otlp_opts_from_config(otlp_opts *o, const gw_config *cfg) {
    const gw_tracing *t = &cfg->tracing;
    *o = (otlp_opts){t->endpoint, t->headers, t->n_headers, t->service_name, t->sample_ratio, t->batch_max,
                     t->queue_max, t->flush_ms, t->timeout_ms, t->max_retries,
                     t->protobuf ? OTLP_PROTOBUF : OTLP_JSON};
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

otlp *otlp_open(const otlp_opts *in, sg_error *err) {
    pthread_once(&curl_once, curl_init_once);
    otlp *o = sg_xcalloc(1, sizeof *o);
    o->o = *in;
    /* nothing of the configuration is kept: a reload may free it while this one closes */
    o->o.endpoint = NULL;
    o->o.headers = NULL;
    o->o.n_headers = 0;
    o->o.service_name = o->service = sg_xstrdup(in->service_name ? in->service_name : "smolgate");
    if (!o->o.batch_max) o->o.batch_max = 256;
    if (!o->o.queue_max) o->o.queue_max = 4096;
    if (!o->o.flush_ms) o->o.flush_ms = 1000;
    if (!o->o.timeout_ms) o->o.timeout_ms = 5000;
    size_t el = strlen(in->endpoint);
    while (el && in->endpoint[el - 1] == '/') el--;
    bool full = el >= 10 && !strncmp(in->endpoint + el - 10, "/v1/traces", 10);
    size_t cap = el + 16;
    o->url = sg_xmalloc(cap);
    snprintf(o->url, cap, "%.*s%s", (int)el, in->endpoint, full ? "" : "/v1/traces");
    o->headers = curl_slist_append(NULL, o->o.protocol == OTLP_PROTOBUF ? "Content-Type: application/x-protobuf"
                                                                        : "Content-Type: application/json");
    o->headers = curl_slist_append(o->headers, "Expect:");
    for (size_t i = 0; i < in->n_headers; i++) {
        sg_buf h;
        sg_buf_init(&h);
        sg_buf_printf(&h, "%s: %s", in->headers[i].name, in->headers[i].value);
        o->headers = curl_slist_append(o->headers, h.data);
        explicit_bzero(h.data, h.len);
        sg_buf_free(&h);
    }
    o->q = sg_xcalloc(o->o.queue_max, sizeof *o->q);
    o->sample_all = in->sample_ratio >= 1.0;
    o->sample_below = in->sample_ratio <= 0 ? 0 : (uint64_t)(in->sample_ratio * 18446744073709551616.0);
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    if (pthread_create(&o->th, NULL, run, o)) {
        sg_fail(err, "otlp: cannot start the exporter thread");
        pthread_mutex_destroy(&o->mu);
        pthread_cond_destroy(&o->cv);
        curl_slist_free_all(o->headers);
        free(o->q);
        free(o->url);
        free(o->service);
        free(o);
        return NULL;
    }
    /* logged without user:password@ or a query string, which may hold credentials */
    const char *host = strstr(o->url, "://");
    host = host ? host + 3 : o->url;
    const char *at = strchr(host, '@'), *slash = strchr(host, '/');
    if (at && (!slash || at < slash)) host = at + 1;
    const char *q = strchr(host, '?');
    const char *scheme_end = strstr(o->url, "://");
    SG_INFO("otlp: traces to %.*s%.*s (%s, sample ratio %g, batch %u, queue %u)",
            scheme_end ? (int)(scheme_end + 3 - o->url) : 0, o->url, q ? (int)(q - host) : (int)strlen(host), host,
            o->o.protocol == OTLP_PROTOBUF ? "http/protobuf" : "http/json", in->sample_ratio, o->o.batch_max, o->o.queue_max);
    return o;
}

void otlp_close(otlp *o, uint32_t timeout_ms) {
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    clock_gettime(CLOCK_MONOTONIC, &o->stop_by);
    o->stop_by.tv_sec += timeout_ms / 1000;
    o->stop_by.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (o->stop_by.tv_nsec >= 1000000000L) { o->stop_by.tv_sec++; o->stop_by.tv_nsec -= 1000000000L; }
    o->stop = true;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->th, NULL);
    for (size_t i = 0; i < o->len; i++) item_free(o->q[(o->head + i) % o->o.queue_max]);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    /* the header list holds the secret values: wipe them before freeing */
    for (struct curl_slist *s = o->headers; s; s = s->next) explicit_bzero(s->data, strlen(s->data));
    curl_slist_free_all(o->headers);
    free(o->q);
    free(o->url);
    free(o->service);
    free(o);
}

void otlp_get_stats(otlp *o, otlp_stats *s) {
    memset(s, 0, sizeof *s);
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    *s = o->st;
    s->pending = o->len;
    pthread_mutex_unlock(&o->mu);
}

void otlp_render_metrics(const otlp_stats *s, sg_buf *b) {
    static const struct { const char *name, *type, *help; size_t off; } rows[] = {
        {"smolgate_otlp_queued_total", "counter", "Requests queued for trace export.", offsetof(otlp_stats, queued)},
        {"smolgate_otlp_sampled_out_total", "counter", "Requests not traced (sample ratio or the caller's traceparent).",
         offsetof(otlp_stats, sampled_out)},
        {"smolgate_otlp_dropped_queue_full_total", "counter", "Requests whose spans were dropped: the export queue was full.",
         offsetof(otlp_stats, dropped_full)},
        {"smolgate_otlp_spans_exported_total", "counter", "Spans the OTLP receiver accepted.", offsetof(otlp_stats, exported)},
        {"smolgate_otlp_spans_dropped_failed_total", "counter", "Spans dropped after their export failed every retry.",
         offsetof(otlp_stats, dropped_failed)},
        {"smolgate_otlp_export_failures_total", "counter", "Failed OTLP export requests (each try).",
         offsetof(otlp_stats, export_failures)},
        {"smolgate_otlp_pending", "gauge", "Requests waiting in the export queue.", offsetof(otlp_stats, pending)},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint64_t v;
        memcpy(&v, (const char *)s + rows[i].off, sizeof v);
        sg_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", rows[i].name, rows[i].help, rows[i].name, rows[i].type,
                      rows[i].name, (unsigned long long)v);
    }
}
