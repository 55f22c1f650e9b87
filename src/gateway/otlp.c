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

static void hex(char *out, const uint8_t *b, size_t n) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) { out[2 * i] = d[b[i] >> 4]; out[2 * i + 1] = d[b[i] & 15]; }
    out[2 * n] = 0;
}

/* Written straight into the buffer (not through a JSON tree): the exporter shares the
 * machine with the loop, and this is several times cheaper per span. */

static void key(sg_buf *b, bool *first, const char *k) {
    sg_buf_puts(b, *first ? "{\"key\":\"" : ",{\"key\":\"");
    *first = false;
    sg_buf_puts(b, k);   /* attribute names are our literals */
    sg_buf_puts(b, "\",\"value\":{");
}
static void attr_str(sg_buf *b, bool *first, const char *k, const char *v) {
    if (!v) return;
    key(b, first, k);
    sg_buf_puts(b, "\"stringValue\":");
    sg_buf_json_str(b, v, strlen(v));
    sg_buf_puts(b, "}}");
}
/* OTLP JSON writes 64-bit integers as strings */
static void attr_int(sg_buf *b, bool *first, const char *k, int64_t v) {
    key(b, first, k);
    sg_buf_printf(b, "\"intValue\":\"%lld\"}}", (long long)v);
}
static void attr_double(sg_buf *b, bool *first, const char *k, double v) {
    key(b, first, k);
    sg_buf_printf(b, "\"doubleValue\":%.17g}}", v);
}
static void attr_bool(sg_buf *b, bool *first, const char *k, bool v) {
    key(b, first, k);
    sg_buf_printf(b, "\"boolValue\":%s}}", v ? "true" : "false");
}

enum { KIND_SERVER = 2, KIND_CLIENT = 3, STATUS_OK = 1, STATUS_ERROR = 2 };

/* Opens a span object up to its attribute list ("attributes":[ ... ). */
static void span_open(sg_buf *b, bool *first_span, const uint8_t *trace, const uint8_t *id, const uint8_t *parent,
                      const char *op, const char *model, int kind, int64_t start_ms, int64_t end_ms) {
    char t[33], s[17], p[17];
    hex(t, trace, 16);
    hex(s, id, 8);
    if (!*first_span) sg_buf_putc(b, ',');
    *first_span = false;
    sg_buf_printf(b, "{\"traceId\":\"%s\",\"spanId\":\"%s\",", t, s);
    if (parent) { hex(p, parent, 8); sg_buf_printf(b, "\"parentSpanId\":\"%s\",", p); }
    char name[300];   /* op (< 16) + ' ' + a model (copies are cut at 256 bytes): never cut here */
    snprintf(name, sizeof name, "%s %s", op, model ? model : "unknown");
    sg_buf_puts(b, "\"name\":");
    sg_buf_json_str(b, name, strlen(name));
    sg_buf_printf(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%lld000000\",\"endTimeUnixNano\":\"%lld000000\",\"attributes\":[",
                  kind, (long long)(start_ms > 0 ? start_ms : 0), (long long)(end_ms > 0 ? end_ms : 0));
}
/* Closes the attribute list and the span; Error status with the kind, unset on success
 * (as the GenAI conventions leave it). */
static void span_close(sg_buf *b, const char *error) {
    sg_buf_putc(b, ']');
    if (error) {
        sg_buf_printf(b, ",\"status\":{\"code\":%d,\"message\":", STATUS_ERROR);
        sg_buf_json_str(b, error, strlen(error));
        sg_buf_putc(b, '}');
    }
    sg_buf_putc(b, '}');
}

static void add_spans(sg_buf *b, bool *first_span, const ledger_record *r, const char *op, const otlp_ids *ids) {
    bool f = true;
    span_open(b, first_span, ids->trace_id, ids->root_id, ids->has_parent ? ids->parent_id : NULL, op,
              r->requested_model, KIND_SERVER, r->time_ms, r->time_ms + r->latency_ms);
    attr_str(b, &f, "gen_ai.operation.name", op);
    attr_str(b, &f, "gen_ai.request.model", r->requested_model);
    attr_str(b, &f, "gen_ai.response.model", r->model);
    attr_str(b, &f, "gen_ai.provider.name", r->provider);
    const gw_usage *u = &r->usage;
    if (u->input >= 0)   /* the conventions count cached prompt tokens as input too */
        attr_int(b, &f, "gen_ai.usage.input_tokens", u->input + (u->cache_read > 0 ? u->cache_read : 0) +
                                                         (u->cache_write > 0 ? u->cache_write : 0));
    if (u->output >= 0) attr_int(b, &f, "gen_ai.usage.output_tokens", u->output);
    if (u->cache_read > 0) attr_int(b, &f, "gen_ai.usage.cache_read.input_tokens", u->cache_read);
    if (u->cache_write > 0) attr_int(b, &f, "gen_ai.usage.cache_creation.input_tokens", u->cache_write);
    attr_int(b, &f, "http.response.status_code", r->status);
    if (r->error) attr_str(b, &f, "error.type", r->error);
    attr_str(b, &f, "smolgate.request_id", r->request_id);
    attr_str(b, &f, "smolgate.key_id", r->key_id);
    attr_str(b, &f, "smolgate.route", r->route);
    if (r->cost_micro >= 0) attr_double(b, &f, "smolgate.cost_usd", (double)r->cost_micro / 1e6);
    attr_int(b, &f, "smolgate.attempts", (int64_t)r->n_attempts);
    if (r->ttft_ms >= 0) attr_int(b, &f, "smolgate.ttft_ms", r->ttft_ms);
    if (u->estimated) attr_bool(b, &f, "smolgate.usage_estimated", true);
    attr_bool(b, &f, "smolgate.stream", r->stream);
    span_close(b, r->error);
    size_t n = r->n_attempts < LEDGER_MAX_ATTEMPTS ? r->n_attempts : LEDGER_MAX_ATTEMPTS;
    for (size_t i = 0; i < n; i++) {
        const ledger_attempt *t = &r->attempts[i];
        int64_t st = r->time_ms + t->start_ms;
        f = true;
        span_open(b, first_span, ids->trace_id, ids->att_ids[i], ids->root_id, op, t->model, KIND_CLIENT, st,
                  st + t->latency_ms);
        attr_str(b, &f, "gen_ai.operation.name", op);
        attr_str(b, &f, "gen_ai.provider.name", t->provider);
        attr_str(b, &f, "gen_ai.request.model", t->model);
        if (t->status > 0) attr_int(b, &f, "http.response.status_code", t->status);
        if (t->error) attr_str(b, &f, "error.type", t->error);
        attr_int(b, &f, "smolgate.attempt", (int64_t)i + 1);
        attr_str(b, &f, "smolgate.outcome", t->error ? t->error : "ok");
        /* why this attempt was made: the one before it failed so */
        if (i > 0) attr_str(b, &f, "smolgate.retry_reason", r->attempts[i - 1].error ? r->attempts[i - 1].error : "unknown");
        span_close(b, t->error);
    }
}

/* The document up to the spans array; doc_close ends it. */
static void doc_open(sg_buf *b, const char *service) {
    const char *svc = service ? service : "smolgate";
    sg_buf_puts(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    sg_buf_json_str(b, svc, strlen(svc));
    sg_buf_puts(b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"smolgate\"},\"spans\":[");
}
static void doc_close(sg_buf *b) { sg_buf_puts(b, "]}]}]}"); }

void otlp_record_json(const ledger_record *r, const char *op, const otlp_ids *ids, const char *service_name, sg_buf *out) {
    bool first = true;
    doc_open(out, service_name);
    add_spans(out, &first, r, op, ids);
    doc_close(out);
}

/* ---- the queue ---- */

/* A record copied out of the request, with its ids. */
typedef struct item {
    ledger_record r;
    ledger_attempt atts[LEDGER_MAX_ATTEMPTS];
    otlp_ids ids;
    char op[16];
    char *strs[7 + 3 * LEDGER_MAX_ATTEMPTS];   /* what to free: 7 of the record, 3 per attempt */
    int n_strs;
} item;

static const char *keep(item *it, const char *s) {
    if (!s) return NULL;
    size_t n = strnlen(s, 256);
    if (n == 256)   /* cut on a UTF-8 character boundary: the JSON must stay valid */
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    char *d = strndup(s, n);
    if (!d) return NULL;
    it->strs[it->n_strs++] = d;
    return d;
}

static void item_free(item *it) {
    for (int i = 0; i < it->n_strs; i++) free(it->strs[i]);
    free(it);
}

struct otlp {
    otlp_opts o;
    char *url;
    struct curl_slist *headers;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    item **q;                 /* ring of queue_max */
    size_t head, len;
    bool stop;
    struct timespec stop_by;  /* CLOCK_MONOTONIC: otlp_close's bound */
    uint64_t rng;             /* under mu */
    uint64_t sample_below;    /* a trace id's low 8 bytes below this: sampled */
    bool sample_all;
    otlp_stats st;            /* under mu */
};

static uint64_t next_rand(uint64_t *s) {   /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rand_bytes(uint64_t *s, uint8_t *out, size_t n) {
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t x = next_rand(s);
            memcpy(out + i, &x, n - i < 8 ? n - i : 8);
        }
    } while (!out[0] && !memcmp(out, out + 1, n - 1));   /* never all zero */
}

void otlp_submit(otlp *o, const ledger_record *r, const char *op, const otlp_context *parent) {
    if (!o) return;
    item *it = calloc(1, sizeof *it);
    if (!it) return;
    pthread_mutex_lock(&o->mu);
    bool sampled;
    if (parent) {
        memcpy(it->ids.trace_id, parent->trace_id, 16);
        memcpy(it->ids.parent_id, parent->span_id, 8);
        it->ids.has_parent = true;
        sampled = parent->flags & 1;   /* parent-based: the caller decided */
    } else {
        rand_bytes(&o->rng, it->ids.trace_id, 16);
        uint64_t low;
        memcpy(&low, it->ids.trace_id + 8, 8);
        sampled = o->sample_all || low < o->sample_below;
    }
    if (!sampled) { o->st.sampled_out++; pthread_mutex_unlock(&o->mu); free(it); return; }
    if (o->len == o->o.queue_max) { o->st.dropped_full++; pthread_mutex_unlock(&o->mu); free(it); return; }
    rand_bytes(&o->rng, it->ids.root_id, 8);
    size_t n = r->n_attempts < LEDGER_MAX_ATTEMPTS ? r->n_attempts : LEDGER_MAX_ATTEMPTS;
    for (size_t i = 0; i < n; i++) rand_bytes(&o->rng, it->ids.att_ids[i], 8);
    pthread_mutex_unlock(&o->mu);

    /* the copy outside the lock: it is ours alone until queued */
    it->r = *r;
    it->r.request_id = keep(it, r->request_id);
    it->r.key_id = keep(it, r->key_id);
    it->r.route = keep(it, r->route);
    it->r.requested_model = keep(it, r->requested_model);
    it->r.provider = keep(it, r->provider);
    it->r.model = keep(it, r->model);
    it->r.error = keep(it, r->error);
    for (size_t i = 0; i < n; i++) {
        it->atts[i] = r->attempts[i];
        it->atts[i].provider = keep(it, r->attempts[i].provider);
        it->atts[i].model = keep(it, r->attempts[i].model);
        it->atts[i].error = r->attempts[i].error;   /* kinds are static strings... */
        if (it->atts[i].error) it->atts[i].error = keep(it, r->attempts[i].error);   /* ...but need not be */
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

static void export_batch(otlp *o, CURL *c, item **batch, size_t n, bool final) {
    sg_buf body;
    sg_buf_init(&body);
    bool first = true;
    doc_open(&body, o->o.service_name);
    uint64_t n_spans = 0;
    for (size_t i = 0; i < n; i++) {
        add_spans(&body, &first, &batch[i]->r, batch[i]->op, &batch[i]->ids);
        n_spans += 1 + batch[i]->r.n_attempts;
        item_free(batch[i]);
    }
    doc_close(&body);
    int rc = 1;
    uint32_t backoff = 100;
    for (uint32_t t = 0; rc == 1 && t <= o->o.max_retries; t++) {
        if (t && (final || wait_ms(o, backoff))) break;   /* stopping: no more waits */
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
        rc = post(o, c, &body, final);
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
    sg_buf_free(&body);
}

static void *run(void *arg) {
    otlp *o = arg;
    CURL *c = curl_easy_init();
    item **batch = calloc(o->o.batch_max, sizeof *batch);
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
        if (n && c && batch) export_batch(o, c, batch, n, stop);
        else for (size_t i = 0; i < n; i++) item_free(batch[i]);
        if (stop && !more) break;
    }
    free(batch);
    if (c) curl_easy_cleanup(c);
    return NULL;
}

/* ---- lifecycle ---- */

void otlp_opts_from_config(otlp_opts *o, const gw_config *cfg) {
    const gw_tracing *t = &cfg->tracing;
    *o = (otlp_opts){t->endpoint, t->headers, t->n_headers, t->service_name, t->sample_ratio, t->batch_max,
                     t->queue_max, t->flush_ms, t->timeout_ms, t->max_retries};
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

otlp *otlp_open(const otlp_opts *in, sg_error *err) {
    pthread_once(&curl_once, curl_init_once);
    otlp *o = sg_xcalloc(1, sizeof *o);
    o->o = *in;
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
    o->headers = curl_slist_append(NULL, "Content-Type: application/json");
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
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)o;
    o->rng = seed;
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
    SG_INFO("otlp: traces to %.*s%.*s (sample ratio %g, batch %u, queue %u)",
            scheme_end ? (int)(scheme_end + 3 - o->url) : 0, o->url, q ? (int)(q - host) : (int)strlen(host), host,
            in->sample_ratio, o->o.batch_max, o->o.queue_max);
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
