/* proxy.c: one client request through the gateway: parse, resolve the model to an
 * ordered list of targets, try them (retries with backoff, fallback, circuit breaker),
 * and answer in the client's format, streamed or not. It knows no wire format: the
 * client's API is an entry of the client API table (api.h), each target's provider an
 * entry of the provider table (provider.h).
 *
 * States of a request:
 *   attempt  -> a target is called (upstream transfer or local job)
 *   success  -> events are rendered for the client; when the provider declares the
 *               client's API as its passthrough_api, its bytes pass through and are
 *               only scanned
 *   failure before the client saw a byte -> classified: retry the same target after a
 *               backoff (honouring retry-after), move to the next target, or relay a
 *               client error (400, 401, quota) as it is
 *   failure after the first byte -> the stream ends with an explicit error event in
 *               the client's format: never a clean end that looks like success.
 * Every response carries x-smolgate-provider, x-smolgate-model, x-smolgate-attempts (and
 * x-request-id from the server); one log line per request says the same.
 *
 * What an upstream can make us hold is bounded (the provider's gw_bounds): a non-streamed
 * body by max_response_bytes (upstream.h cuts it), a stream's SSE line or event by
 * max_sse_line_bytes, the head by max_header_bytes, an error body by MAX_ERROR_BODY (the
 * rest is not read), and a stream's output waiting for a slow client by
 * CLIENT_HIGH_WATER (the upstream transfer is paused until the client drains it). Crossing
 * a size bound is a failed attempt (502 upstream_response_too_large, retried and fallen
 * back like a 5xx). Text that came from an upstream (error messages) and is relayed or
 * logged goes through the configuration's redaction set first (redact.h). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/api.h"
#include "gateway/chat.h"
#include "gateway/codec_embed.h"
#include "gateway/cost.h"
#include "gateway/dashboard.h"
#include "gateway/gateway.h"
#include "gateway/limits.h"
#include "gateway/otlp.h"
#include "gateway/provider.h"
#include "gateway/redact.h"
#include "gateway/request_id.h"
#include "gateway/sse.h"

#define MAX_TARGETS 32
#define MAX_RECORDED_ATTEMPTS 16
#define TRACESTATE_MAX 512             /* W3C: what a vendor must pass on at least */
#define MAX_ERROR_BODY (64 * 1024)      /* of an upstream error body: classified from this much */
#define CLIENT_HIGH_WATER (1u << 20)    /* stream bytes queued for the client: pause the upstream */
#define CLIENT_LOW_WATER (256u << 10)   /* ... and resume it below this */
#define GEN_MAX_BUFFERED (256 * 1024)   /* answer text kept for an estimate, then counted */

typedef struct candidate {
    const gw_provider *provider;
    const char *model;             /* upstream model name */
    const gw_model_info *info;
    int retries;                   /* retries made on this target */
} candidate;

typedef struct proxy_req {
    gateway *gw;
    gw_config *cfg;                /* a reference for the request's lifetime */
    http_exchange *x;
    const gw_key *key;
    gw_request req;                /* the client's request in its API (req.api), canonical */
    const char *client_model;
    char id[REQID_LEN + 1];        /* the request id (the exchange's is gone once answered) */
    const gw_route *route;
    candidate cands[MAX_TARGETS];
    int n_cands, cur;
    int n_cannot;                  /* targets left out: their provider cannot serve the kind */
    const gw_provider *cannot;     /* the first of them */
    int attempts, retry_budget;
    uint64_t t_start, deadline_ms;
    bool done;

    /* the attempt in flight */
    int depth;                     /* > 0 inside upstream_start, which may finish the whole
                                      transfer (and so this request) before returning */
    bool zombie;                   /* freed while depth > 0: really freed on the way out */
    unsigned attempt_gen;          /* bumped per start: a nested attempt supersedes */
    bool xfer_done;
    upstream_xfer *xfer;
    void *job;                     /* an in-process provider's job */
    sg_buf up_body;                /* request body sent upstream */
    sg_buf url;
    gw_upstream_call call;         /* the request as the provider built it */
    int up_status;
    sg_buf resp;                   /* a non-streamed body, or an error body */
    uint32_t retry_after_ms;       /* from the failed attempt's headers */
    sse_parser sse;
    const gw_provider_entry *up;   /* the current attempt's provider */
    gw_scan scan;                  /* its stream scanner (scan_live: initialised) */
    bool scan_live;
    bool passthrough;              /* client and provider speak one format: bytes relayed */
    loop_timer backoff;
    loop_timer defer;              /* a failure seen inside libcurl, handled outside it */
    char defer_why[256];
    bool defer_too_large;          /* the deferred failure is a size bound crossed */
    bool error_cut;                /* deferred: an error body cut at MAX_ERROR_BODY */
    gw_api_error last_error;
    bool have_error;
    bool had_error;                /* an earlier target failed (last_error is its error) */
    int last_sent;                 /* the candidate of the last attempt sent upstream */

    /* limits and cost */
    limits_lease *lease;           /* the request's admission (limits, budgets) */
    limits_lease *att_lease;       /* the current attempt's provider limits */
    limits_result lim;             /* admission: x-ratelimit-* headers for the response */
    limits_result att_lim;         /* the current attempt's provider-limit decision */
    int64_t limited_retry_ms;      /* targets skipped at their provider's limit: the
                                      soonest one frees up (-1: none skipped or unknown) */
    bool lim_headers;
    int64_t est_tokens;
    int64_t cost;                  /* micro-dollars of the answer; COST_UNPRICED... */

    /* the ledger record */
    int64_t wall_start_ms;         /* unix ms at arrival */
    uint64_t att_start_ms;         /* loop clock at the current attempt's start: the
                                      request's for the first (admission is its queue),
                                      after the backoff for a retry */
    uint64_t att_sent_ms;          /* ... when it went out (its provider limits passed) */
    bool att_sent;                 /* ... it did (else it was skipped or is still queued) */
    uint64_t att_first_ms;         /* ... its upstream's first byte (0: none yet) */
    int64_t att_connect_ms;        /* the transport's connect time; -1 unknown */
    uint64_t first_byte_ms;        /* loop clock when the client got its first byte */
    ledger_attempt atts[MAX_RECORDED_ATTEMPTS];
    size_t n_atts;
    otlp_ids trace;                /* the request's span ids, when traced */
    bool traced;                   /* otlp_begin made them (tracing was on at arrival) */
    char traceparent[OTLP_TRACEPARENT_LEN + 1];   /* the current attempt's, sent upstream */
    char tracestate[TRACESTATE_MAX + 1];          /* the caller's, passed on; "" none */

    /* towards the client */
    bool client_started;           /* a byte (the head) went out */
    gw_render render;              /* in the client's API */
    bool render_init;
    sg_buf out;
    gw_usage usage;
    const char *finish;
    sg_buf gen;                    /* the answer's text while no usage was reported: what
                                      the tokenizer counts when none comes (estimate_usage) */
    int64_t gen_tokens;            /* tokens of text already counted out of gen (bounded) */
    bool capture;                  /* payload capture on for this route or key (dashboard.h) */
    sg_buf cap_req, cap_ans;       /* ... the request body and the answer's text, bounded */
} proxy_req;

static void start_attempt(proxy_req *p);
static void send_attempt(proxy_req *p);
static void attempt_failed(proxy_req *p, int status, const char *why, gw_failure kind);
static void record_attempt(proxy_req *p, int status, const char *error);

/* ---- the client's format ---- */

static void render_free(proxy_req *p) {
    if (!p->render_init) return;
    p->req.api->render_free(&p->render);
    p->render_init = false;
}

static void render_init(proxy_req *p) {
    render_free(p);
    sg_buf_reset(&p->out);
    p->req.api->render_init(&p->render, &p->out, &p->req, p->client_model, (int64_t)time(NULL));
    p->render_init = true;
}

/* ---- lifecycle ---- */

/* What the request (or attempt) used, for its leases. An estimated usage charges the tpm
 * windows its estimate, but budgets the whole reservation: an estimate may be short, and a
 * budget is a hard cap. */
static limits_usage lease_usage(const proxy_req *p) {
    limits_usage u = {limits_usage_tokens(&p->usage), p->cost >= 0 && !p->usage.estimated ? p->cost : -1};
    return u;
}

/* Ends the current attempt's provider lease after a failure. A provider that answered with
 * an error generated nothing; after a transport failure it may have, so the reservation
 * stays charged. */
static void end_attempt_lease(proxy_req *p) {
    if (!p->att_lease) return;
    limits_usage u = lease_usage(p);
    if (u.tokens < 0 && p->up_status >= 400) u.tokens = 0;
    limits_finish(p->att_lease, &u);
    p->att_lease = NULL;
}

static void scan_free(proxy_req *p) {
    if (p->scan_live) p->up->scan_free(&p->scan);
    p->scan_live = false;
}

static void proxy_free(proxy_req *p) {
    if (p->depth > 0) { p->zombie = true; return; }
    if (p->att_lease) { limits_usage u = lease_usage(p); limits_finish(p->att_lease, &u); }
    if (p->lease) {
        limits_usage u = lease_usage(p);
        if (p->attempts) limits_finish(p->lease, &u);
        else limits_cancel(p->lease);
    }
    if (p->xfer) gw_transport_cancel(&p->gw->transport, p->xfer);
    if (p->job) p->up->job_cancel(p->job);
    loop_timer_stop(p->gw->loop, &p->backoff);
    loop_timer_stop(p->gw->loop, &p->defer);
    sg_buf_free(&p->up_body);
    sg_buf_free(&p->url);
    sg_buf_free(&p->resp);
    sg_buf_free(&p->out);
    sg_buf_free(&p->gen);
    sg_buf_free(&p->cap_req);
    sg_buf_free(&p->cap_ans);
    sse_free(&p->sse);
    scan_free(p);
    render_free(p);
    gw_request_free(&p->req);   /* after the renderer, which is the request's API's */
    keystore_release(p->key);
    config_unref(p->cfg);
    free(p);
}

static const candidate *current(const proxy_req *p) {
    return p->cur < p->n_cands ? &p->cands[p->cur] : NULL;
}

/* The request's ledger record and metrics: written once, when it ends. A failed request's
 * cost is its last target's price of what it used (a failure before any token used
 * nothing: 0), unknown (NULL) when that target is unpriced, and 0 when no target was
 * tried at all; p->cost takes it, so that the log line says the same. */
static void record_request(proxy_req *p, int status, uint64_t ms) {
    const candidate *c = p->attempts ? current(p) : NULL;
    gw_usage u = p->usage;
    if (status != 200 && u.input < 0 && u.output < 0) {   /* failed before any token: nothing used */
        u.input = u.output = u.cache_read = u.cache_write = 0;
        u.reasoning = -1;
    }
    if (status != 200) p->cost = c ? cost_of_failure(cost_lookup(p->gw->costs, c->provider, c->model), &p->usage) : 0;
    ledger_record r = {
        .time_ms = p->wall_start_ms, .request_id = p->id, .key_id = p->key ? p->key->id : NULL,
        .route = p->route ? p->route->name : NULL, .requested_model = p->client_model,
        .provider = c ? c->provider->name : NULL, .model = c ? c->model : NULL,
        .attempts = p->atts, .n_attempts = p->n_atts, .usage = u,
        .cost_micro = p->cost, .latency_ms = (int64_t)ms,
        .ttft_ms = p->first_byte_ms ? (int64_t)(p->first_byte_ms - p->t_start) : -1, .status = status,
        .error = status == 200 ? NULL : (p->have_error ? p->last_error.code : "error"), .stream = p->req.canon.stream,
    };
    /* written before the answer is sent (the server's before_send hook): a loss is
     * counted and logged (rate-limited) there */
    ledger_append_deferred(p->gw->ledger, &r);
    metrics_observe_request(p->gw->metrics, &r);
    if (p->gw->otlp) {
        if (!p->traced) otlp_begin(p->gw->otlp, NULL, &p->trace);   /* a reload turned tracing on meanwhile */
        otlp_submit(p->gw->otlp, &r, p->req.api && p->req.api->kind == GW_REQ_EMBEDDINGS ? "embeddings" : "chat",
                    &p->trace);
    }
    if (p->capture)
        dashboard_capture(p->gw->dash, p->cfg, p->id, p->cap_req.data, p->cap_req.len, p->cap_ans.data, p->cap_ans.len);
}

/* The request log's line, built without printf (one a request: vsnprintf was a few
 * percent of the loop's CPU): strings as they are, integers in decimal. */
typedef struct line_w {
    char buf[1024];
    size_t n;
} line_w;

static void lw_put(line_w *w, const char *s, size_t n) {
    if (n > sizeof w->buf - w->n) n = sizeof w->buf - w->n;
    memcpy(w->buf + w->n, s, n);
    w->n += n;
}
static void lw_str(line_w *w, const char *s) { lw_put(w, s, strlen(s)); }
static void lw_int(line_w *w, int64_t v) {
    char d[21];
    lw_put(w, d, sg_fmt_i64(d, v));
}

static void log_request(proxy_req *p, int status) {
    const candidate *c = current(p);
    uint64_t ms = loop_now_ms(p->gw->loop) - p->t_start;
    record_request(p, status, ms);
    if (!sg_log_enabled(SG_LOG_INFO)) return;
    line_w w = {.n = 0};
    lw_str(&w, "request id=");
    lw_str(&w, p->id);
    lw_str(&w, " model=");
    lw_str(&w, p->client_model ? p->client_model : "-");
    lw_str(&w, " route=");
    lw_str(&w, p->route ? p->route->name : "-");
    lw_str(&w, " provider=");
    lw_str(&w, c ? c->provider->name : "-");
    lw_str(&w, " upstream_model=");
    lw_str(&w, c ? c->model : "-");
    lw_str(&w, " attempts=");
    lw_int(&w, p->attempts);
    lw_str(&w, " status=");
    lw_int(&w, status);
    lw_str(&w, " ms=");
    lw_int(&w, (int64_t)ms);
    lw_str(&w, " input=");
    lw_int(&w, p->usage.input);
    lw_str(&w, " cache_read=");
    lw_int(&w, p->usage.cache_read);
    lw_str(&w, " output=");
    lw_int(&w, p->usage.output);
    char usd[32] = "unpriced";
    if (p->cost >= 0) cost_format_usd(p->cost, usd, sizeof usd);
    lw_str(&w, " cost=");
    lw_str(&w, usd);
    sg_log_buffered_text(SG_LOG_INFO, w.buf, w.n);
}

/* The x-smolgate-* headers of the response. */
/* x-smolgate-* and, when limits apply, x-ratelimit-* headers; h has room for 16. */
static size_t response_headers(proxy_req *p, http_header *h, char *attempts, size_t cap, const char *ctype) {
    const candidate *c = current(p);
    size_t n = 0;
    snprintf(attempts, cap, "%d", p->attempts);
    if (p->lim_headers) {
        static limits_header lh[LIMITS_MAX_HEADERS];   /* loop thread only; sent before reuse */
        size_t k = limits_format_headers(&p->lim, lh);
        for (size_t i = 0; i < k; i++) h[n++] = (http_header){lh[i].name, lh[i].value};
    }
    h[n++] = (http_header){"content-type", ctype};
    if (c) {
        h[n++] = (http_header){"x-smolgate-provider", c->provider->name};
        h[n++] = (http_header){"x-smolgate-model", c->model};
    }
    h[n++] = (http_header){"x-smolgate-attempts", attempts};
    return n;
}

/* A complete error answer in the client's format, before any byte went out. */
static void respond_error(proxy_req *p, const gw_api_error *e) {
    sg_buf b;
    sg_buf_init(&b);
    p->req.api->error_body(&b, e);
    http_header h[16];
    char att[16];
    size_t n = response_headers(p, h, att, sizeof att, "application/json");
    char ra[16];
    bool refused_here = p->lim_headers && p->lim.outcome != LIMITS_ADMITTED;   /* its headers carry it */
    if (e->status == 429 && p->retry_after_ms && !refused_here) {
        snprintf(ra, sizeof ra, "%u", (p->retry_after_ms + 999) / 1000);
        h[n++] = (http_header){"retry-after", ra};
    }
    if (!p->have_error) {   /* a refusal or a request error: the ledger names it as well */
        p->last_error = *e;
        p->have_error = true;
    }
    log_request(p, e->status);   /* the record is spooled before the client has the answer */
    http_respond(p->x, e->status, h, n, b.data, b.len);
    sg_buf_free(&b);
    p->gw->stats.errors++;
    p->done = true;
    proxy_free(p);
}

static void respond_simple_error(proxy_req *p, int status, const char *code, const char *param, const char *msg) {
    gw_api_error e;
    gw_api_fail(&e, status, code, param, "%s", msg);
    respond_error(p, &e);
}

/* ---- output to the client ---- */

static void client_begin(proxy_req *p) {
    if (p->client_started) return;
    p->client_started = true;
    p->first_byte_ms = loop_now_ms(p->gw->loop);
    http_header h[16];
    char att[16];
    const char *ctype = p->req.api->stream_content_type;
    size_t n = response_headers(p, h, att, sizeof att, ctype ? ctype : "text/event-stream");
    h[n++] = (http_header){"cache-control", "no-cache"};
    http_stream_begin(p->x, 200, h, n);
}

static void client_flush(proxy_req *p) {
    if (!p->out.len) return;
    client_begin(p);
    http_stream_write(p->x, p->out.data, p->out.len);
    sg_buf_reset(&p->out);
}

/* The answer's cost from the serving target's prices and the normalised usage. */
static void compute_cost(proxy_req *p) {
    const candidate *c = current(p);
    const cost_model *m = c ? cost_lookup(p->gw->costs, c->provider, c->model) : NULL;
    p->cost = cost_compute(m, &p->usage);
}

/* The tokenizer that counts usage nobody reported: the first local model's (another
 * model's count, an estimate either way), else NULL: cost_estimate_tokens' heuristic. */
static const sg_tokenizer *estimate_tokenizer(const proxy_req *p) {
    for (size_t i = 0; i < p->gw->n_locals; i++) {
        const sg_model *m = p->gw->locals[i].lm ? local_model(p->gw->locals[i].lm) : NULL;
        if (m && m->tok) return m->tok;
    }
    return NULL;
}

/* An answer that ended without any usage (a stream without its usage chunk, a body
 * without "usage"): counted by the tokenizer from the request's messages and the text
 * that came back, and marked estimated. */
static void estimate_usage(proxy_req *p) {
    if (p->usage.input >= 0 || p->usage.output >= 0) return;
    sg_buf prompt;
    sg_buf_init(&prompt);
    gw_api_error e;
    int64_t tokens = 0;   /* token-id inputs count as they are */
    if (p->req.api->kind == GW_REQ_EMBEDDINGS) emb_input_text((const emb_request *)p->req.state, &prompt, &tokens);
    else if (gw_request_canonical(&p->req, &e) == 0) gw_prompt_text(p->req.canon.body, &prompt);
    else sg_buf_append(&prompt, p->req.raw, p->req.raw_len);
    cost_estimate_usage(estimate_tokenizer(p), prompt.data, prompt.len, p->gen.data, p->gen.len, &p->usage);
    p->usage.output += p->gen_tokens;
    p->usage.input += tokens;
    sg_buf_free(&prompt);
    sg_log_buffered(SG_LOG_INFO, "usage estimated id=%s: the provider reported none; input=%lld output=%lld", p->id,
                    (long long)p->usage.input, (long long)p->usage.output);
}

static void finish_ok(proxy_req *p) {
    const candidate *c = current(p);
    estimate_usage(p);
    compute_cost(p);
    record_attempt(p, 200, NULL);
    if (p->usage.estimated && p->req.api->kind == GW_REQ_EMBEDDINGS) {   /* its answer carries the usage */
        gw_event ev = {.kind = GW_EV_USAGE, .usage = p->usage};
        p->req.api->render_event(&p->render, &ev);
    }
    if (c && !p->up->in_process)
        breaker_record(p->gw->breakers, &p->gw->cfg->circuit_breaker, c->provider->name, c->model, true,
                       loop_now_ms(p->gw->loop));
    if (p->req.canon.stream) {
        if (!p->passthrough) p->req.api->render_end(&p->render);
        client_flush(p);
        client_begin(p);
        log_request(p, 200);   /* spooled before the stream's end reaches the client */
        http_stream_end(p->x);
    } else {
        int status = 200;
        if (!p->passthrough) {
            status = p->req.api->render_end(&p->render);
            sg_buf_reset(&p->resp);
            sg_buf_append(&p->resp, p->out.data ? p->out.data : "", p->out.len);
        }
        http_header h[16];
        char att[16];
        size_t n = response_headers(p, h, att, sizeof att, "application/json");
        log_request(p, status);
        http_respond(p->x, status, h, n, p->resp.data, p->resp.len);
    }
    p->done = true;
    proxy_free(p);
}

/* A failure after the client saw the head: an explicit error in the stream. */
static void fail_mid_stream(proxy_req *p, const char *why) {
    gw_api_error e;
    gw_api_fail(&e, 502, "upstream_error", NULL, "the provider failed mid-response: %s", why);
    redact_str(p->cfg->secrets, e.message, sizeof e.message);
    p->req.api->render_error(&p->render, &e);
    client_flush(p);
    if (p->gen.len || p->gen_tokens) { estimate_usage(p); compute_cost(p); }   /* what was generated is billed */
    record_attempt(p, 200, "stream");   /* it had answered (the client has its head), then broke */
    const candidate *c = current(p);
    if (c && !p->up->in_process)   /* a provider that breaks its answers is failing: its breaker counts it */
        breaker_record(p->gw->breakers, &p->gw->cfg->circuit_breaker, c->provider->name, c->model, false,
                       loop_now_ms(p->gw->loop));
    log_request(p, 502);
    http_stream_end(p->x);
    p->gw->stats.errors++;
    p->done = true;
    proxy_free(p);
}

/* The answer's text for payload capture, up to its bound. */
static void capture_event(proxy_req *p, const gw_event *ev) {
    size_t room = p->cfg->capture.max_bytes > p->cap_ans.len ? p->cfg->capture.max_bytes - p->cap_ans.len : 0;
    if (!room) return;
    if (ev->kind == GW_EV_TOOL_CALL && ev->name) sg_buf_printf(&p->cap_ans, "[tool call %.200s] ", ev->name);
    sg_buf_append(&p->cap_ans, ev->text, ev->len < room ? ev->len : room);
}

/* Canonical events from any provider: usage is kept, the rest rendered. */
static int on_event(void *ctx, const gw_event *ev) {
    proxy_req *p = ctx;
    if (!p->att_first_ms) p->att_first_ms = loop_now_ms(p->gw->loop);   /* an in-process provider's first */
    if (p->capture && ev->len && (ev->kind == GW_EV_TEXT || ev->kind == GW_EV_REASONING || ev->kind == GW_EV_TOOL_CALL))
        capture_event(p, ev);
    if (ev->kind == GW_EV_USAGE) p->usage = ev->usage;
    if (ev->kind == GW_EV_FINISH) p->finish = ev->finish;
    if ((ev->kind == GW_EV_TEXT || ev->kind == GW_EV_REASONING || ev->kind == GW_EV_TOOL_CALL) &&
        p->usage.input < 0 && p->usage.output < 0) {   /* kept until a usage comes */
        if (ev->kind == GW_EV_TOOL_CALL && ev->name) { sg_buf_puts(&p->gen, ev->name); sg_buf_putc(&p->gen, ' '); }
        if (ev->len) sg_buf_append(&p->gen, ev->text, ev->len);
        if (p->gen.len >= GEN_MAX_BUFFERED) {   /* a long answer: counted in pieces */
            p->gen_tokens += cost_estimate_tokens(estimate_tokenizer(p), p->gen.data, p->gen.len);
            sg_buf_reset(&p->gen);
        }
    }
    if (p->passthrough) return 0;
    if (ev->kind == GW_EV_ERROR) return 0;   /* handled by the attempt's end */
    p->req.api->render_event(&p->render, ev);
    if (p->req.canon.stream) client_flush(p);
    return 0;
}

/* ---- remote attempts ---- */

static int on_sse(void *ctx, const char *event, const char *data, size_t len) {
    proxy_req *p = ctx;
    gw_relay relay;
    if (p->up->scan_event(&p->scan, event, data, len, on_event, p, &relay)) return -1;
    /* the usage-only chunk goes only to clients that asked for it */
    if (p->passthrough && (relay == GW_RELAY_CHUNK || (relay == GW_RELAY_USAGE_CHUNK && p->req.canon.include_usage)))
        p->up->relay_chunk(data, len, &p->out);
    return 0;
}

static void up_headers(upstream_xfer *t, const upstream_response *r, void *arg) {
    proxy_req *p = arg;
    p->xfer = t;   /* callbacks may run inside upstream_start, before it returns t */
    if (!p->att_first_ms) p->att_first_ms = loop_now_ms(p->gw->loop);
    p->up_status = r->status;
    p->retry_after_ms = r->status == 200 ? 0 : p->up->retry_after_ms(r);
}

/* Stops the transfer from inside its callback; deferred_failure decides outside it (a
 * fallback starts a new transfer). */
static void stop_and_defer(proxy_req *p, upstream_xfer *t) {
    gw_transport_cancel(&p->gw->transport, t);
    p->xfer = NULL;
    p->xfer_done = true;
    loop_timer_start(p->gw->loop, &p->defer, 0);
}

static void client_drained(http_exchange *x, void *arg) {
    (void)x;
    proxy_req *p = arg;
    if (!p->xfer) return;
    p->depth++;                    /* resuming may deliver the rest and end the request */
    gw_transport_resume(&p->gw->transport, p->xfer);
    p->depth--;
    if (p->zombie) proxy_free(p);
}

static void up_data(upstream_xfer *t, const char *data, size_t len, void *arg) {
    proxy_req *p = arg;
    p->xfer = t;
    if (p->up_status != 200 || !p->req.canon.stream) {
        /* a non-streamed body is bounded by max_response_bytes in the transfer itself */
        if (p->up_status != 200 && p->resp.len + len > MAX_ERROR_BODY) {
            /* an error body: its first MAX_ERROR_BODY bytes are enough to classify it */
            sg_buf_append(&p->resp, data, MAX_ERROR_BODY - p->resp.len);
            p->error_cut = true;
            stop_and_defer(p, t);
            return;
        }
        sg_buf_append(&p->resp, data, len);
        return;
    }
    sg_error err;
    if (sse_feed(&p->sse, data, len, &err) != 0) {
        /* A malformed, failed or oversized stream: stop it now. */
        p->defer_too_large = p->sse.too_large;
        if (p->sse.too_large)
            snprintf(p->defer_why, sizeof p->defer_why, "the provider's stream is too large: %.160s (max_sse_line_bytes)", err.msg);
        else
            snprintf(p->defer_why, sizeof p->defer_why, "%s", "the provider's stream failed or was malformed");
        stop_and_defer(p, t);
        return;
    }
    client_flush(p);
    /* a client slower than the provider: hold the provider, not the bytes */
    if (http_exchange_buffered(p->x) > CLIENT_HIGH_WATER && !gw_transport_paused(&p->gw->transport, t)) {
        gw_transport_pause(&p->gw->transport, t);
        http_exchange_on_drain(p->x, CLIENT_LOW_WATER, client_drained, p);
    }
}

/* A size bound crossed (message says which): the attempt fails as a bad upstream answer,
 * with its own error code for the client. */
static void too_large_failed(proxy_req *p, const char *why) {
    if (p->client_started || p->out.len) { client_flush(p); fail_mid_stream(p, why); return; }
    gw_api_fail(&p->last_error, 502, "upstream_response_too_large", NULL, "%s", why);
    p->have_error = true;
    attempt_failed(p, 502, why, GW_FAIL_RETRYABLE);
}

static void upstream_error_answer(proxy_req *p);

static void deferred_failure(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    proxy_req *p = arg;
    if (p->error_cut) { p->error_cut = false; upstream_error_answer(p); return; }
    if (p->defer_too_large) { p->defer_too_large = false; too_large_failed(p, p->defer_why); return; }
    if (p->client_started || p->out.len) { client_flush(p); fail_mid_stream(p, p->defer_why); }
    else attempt_failed(p, 502, p->defer_why, GW_FAIL_RETRYABLE);
}

/* The provider answered an error status: classified from its body (relayed to the client
 * when it is the client's fault). */
static void upstream_error_answer(proxy_req *p) {
    gw_api_error e;
    gw_failure kind = p->up->classify_error(p->up_status, p->resp.data, p->resp.len, &e);
    if (e.retry_after_ms > p->retry_after_ms) p->retry_after_ms = e.retry_after_ms;   /* Gemini's RetryInfo */
    p->last_error = e;
    p->have_error = true;
    attempt_failed(p, p->up_status, e.message, kind);
}

static void up_done(upstream_xfer *t, const upstream_done *d, void *arg) {
    (void)t;
    proxy_req *p = arg;
    p->xfer = NULL;
    p->xfer_done = true;
    p->att_connect_ms = d->connect_ms;
    if (d->requests_sent > 1) {   /* the client resent on a fresh connection: attempts too */
        int extra = d->requests_sent - 1;
        p->attempts += extra;
        p->gw->stats.attempts += (uint64_t)extra;
        p->cands[p->cur].retries += extra;
        p->retry_budget -= extra;
    }
    if (d->result == UPSTREAM_ERR_TOO_LARGE) {
        char why[256];
        snprintf(why, sizeof why, "the provider's response %s: %s (%s)", d->status ? "is too large" : "head is too large",
                 d->error, d->status ? "max_response_bytes" : "max_header_bytes");
        too_large_failed(p, why);
        return;
    }
    if (d->result != UPSTREAM_OK) {
        if (p->client_started) { fail_mid_stream(p, d->error && *d->error ? d->error : upstream_result_name(d->result)); return; }
        attempt_failed(p, d->result == UPSTREAM_ERR_TTFB_TIMEOUT || d->result == UPSTREAM_ERR_TOTAL_TIMEOUT ? 504 : 502,
                       d->error && *d->error ? d->error : upstream_result_name(d->result), GW_FAIL_RETRYABLE);
        return;
    }
    if (p->up_status != 200) {
        upstream_error_answer(p);
        return;
    }
    if (p->req.canon.stream) {
        sse_finish(&p->sse);
        int end = p->up->scan_end(&p->scan, on_event, p);
        if (end == 1) {
            if (p->client_started || p->out.len) { client_flush(p); fail_mid_stream(p, "the stream ended early"); }
            else attempt_failed(p, 502, "the provider's stream ended early", GW_FAIL_RETRYABLE);
            return;
        }
        finish_ok(p);
        return;
    }
    const char *body = p->resp.data ? p->resp.data : "";
    int rc = p->req.api->kind == GW_REQ_EMBEDDINGS ? p->up->scan_embeddings(body, p->resp.len, on_event, p)
                                                   : p->up->scan_response(body, p->resp.len, gateway_random(p->gw), on_event, p);
    if (rc == 1) { attempt_failed(p, 502, "malformed response from the provider", GW_FAIL_RETRYABLE); return; }
    finish_ok(p);
}

/* The provider's URL, headers and body for the canonical request. */
static int build_remote(proxy_req *p, const candidate *c, gw_api_error *e) {
    sg_buf_reset(&p->up_body);
    sg_buf_reset(&p->url);
    p->call.url = &p->url;
    p->call.body = &p->up_body;
    p->call.n_headers = 0;
    if (p->req.api->kind == GW_REQ_EMBEDDINGS) return p->up->build_embeddings(&p->req, c->provider, c->model, &p->call, e);
    return p->up->build_request(&p->req, c->provider, c->model, c->info, &p->call, e);
}

/* W3C Trace Context out, as OpenTelemetry's HTTP client instrumentation does it: while
 * tracing is on, every attempt carries a traceparent naming its attempt span (sampled or
 * not, so that the provider follows our decision), and the caller's tracestate as it came.
 * Unless the provider's configured headers already set one. */
static void add_trace_headers(proxy_req *p) {
    if (!p->traced || !p->gw->otlp) return;   /* off since a reload: no span will name it */
    gw_upstream_call *call = &p->call;
    for (size_t i = 0; i < call->n_headers; i++)
        if (!strcasecmp(call->headers[i].name, "traceparent")) return;
    otlp_attempt_traceparent(&p->trace, p->n_atts, p->traceparent);   /* n_atts: this attempt's record */
    if (call->n_headers < GW_CALL_MAX_HEADERS)
        call->headers[call->n_headers++] = (upstream_header){"traceparent", p->traceparent};
    if (*p->tracestate && call->n_headers < GW_CALL_MAX_HEADERS)
        call->headers[call->n_headers++] = (upstream_header){"tracestate", p->tracestate};
}

static void start_remote(proxy_req *p, const candidate *c) {
    const gw_provider *pv = c->provider;
    gw_api_error e;
    if (build_remote(p, c, &e)) {
        p->last_error = e;
        p->have_error = true;
        attempt_failed(p, e.status, e.message, e.status >= 500 ? GW_FAIL_RETRYABLE : GW_FAIL_CLIENT);
        return;
    }
    add_trace_headers(p);
    uint64_t left = p->deadline_ms - loop_now_ms(p->gw->loop);
    upstream_request r = {
        .method = "POST", .url = p->url.data, .headers = p->call.headers, .n_headers = p->call.n_headers,
        .body = p->up_body.data, .body_len = p->up_body.len,
        .timeouts = {pv->timeouts.connect_ms, pv->timeouts.first_token_ms, pv->timeouts.idle_ms,
                     (uint32_t)(left < pv->timeouts.total_ms ? left : pv->timeouts.total_ms)},
        .cb = {up_headers, up_data, up_done}, .arg = p,
        /* the client may resend on a fresh connection only while this target has a retry
         * left; the resend then counts as one (up_done) */
        .no_resend = !(c->retries < pv->retries.max && p->retry_budget > 0),
        /* a stream is consumed as it comes (its lines are bounded by the SSE parser) */
        .max_body_bytes = p->req.canon.stream ? 0 : pv->bounds.max_response_bytes,
        .max_head_bytes = pv->bounds.max_header_bytes,
    };
    sg_error err;
    unsigned gen = ++p->attempt_gen;
    p->xfer_done = false;
    p->depth++;
    upstream_xfer *t = gw_transport_start(&p->gw->transport, &r, &err);
    p->depth--;
    if (p->zombie) { proxy_free(p); return; }   /* it finished, and answered, inside */
    if (gen != p->attempt_gen || p->xfer_done) return;   /* done, or a later attempt runs */
    p->xfer = t;
    if (!t) attempt_failed(p, 502, err.msg, GW_FAIL_RETRYABLE);
}

/* ---- local attempts ---- */

static void job_done(void *ctx, const gw_api_error *e, gw_failure kind, const gw_usage *usage) {
    proxy_req *p = ctx;
    p->job = NULL;
    if (e) {
        if (p->client_started) { fail_mid_stream(p, e->message); return; }
        p->last_error = *e;
        p->have_error = true;
        attempt_failed(p, e->status, e->message, kind);
        return;
    }
    if (usage) p->usage = *usage;
    finish_ok(p);
}

static void start_job(proxy_req *p, const candidate *c) {
    gw_api_error e;
    gw_failure kind = GW_FAIL_CLIENT;
    if (gw_request_canonical(&p->req, &e) == 0)
        p->job = p->up->job_start(p->gw, c->model, p->req.canon.body, on_event, job_done, p, &e, &kind);
    if (p->job) return;
    if (e.code[0] || kind == GW_FAIL_CLIENT) {   /* an error worth relaying as it is */
        p->last_error = e;
        p->have_error = true;
    }
    attempt_failed(p, e.status, e.message, kind);
}

/* ---- attempts, retries, fallback ---- */

static void reset_attempt(proxy_req *p) {
    p->up_status = 0;
    p->retry_after_ms = 0;
    sg_buf_reset(&p->resp);
    sse_free(&p->sse);
    sse_init(&p->sse, current(p) ? current(p)->provider->bounds.max_sse_line_bytes : 0, on_sse, p);
    scan_free(p);
    if (p->up->scan_init) {
        p->up->scan_init(&p->scan, gateway_random(p->gw));
        p->scan_live = true;
    }
    render_init(p);
    gw_usage_init(&p->usage);
    sg_buf_reset(&p->gen);
    sg_buf_reset(&p->cap_ans);   /* what the client gets is the next attempt's */
    p->gen_tokens = 0;
}

static void backoff_fired(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    start_attempt(arg);
}

/* Exponential backoff with full jitter, at least what the provider asked for. */
static uint32_t backoff_ms(proxy_req *p, const candidate *c) {
    const gw_retries *r = &c->provider->retries;
    uint64_t cap = (uint64_t)r->base_ms << (c->retries < 16 ? c->retries : 16);
    if (cap > r->max_ms) cap = r->max_ms;
    uint64_t ms = cap / 2 + gateway_random(p->gw) % (cap / 2 + 1);
    if (p->retry_after_ms > ms) ms = p->retry_after_ms;
    return (uint32_t)ms;
}

static void no_more_targets(proxy_req *p, int status, const char *why) {
    if (p->have_error) { respond_error(p, &p->last_error); return; }
    gw_api_error e;
    gw_api_fail(&e, status >= 400 ? status : 502, "all_targets_failed", NULL,
                "every target for \"%s\" failed; last: %s", p->client_model, why);
    respond_error(p, &e);
}

/* The attempt's line in the ledger: its times from its start (queue: until it went out;
 * one never sent, skipped at its provider's limit, queued all along), the usage it
 * reported and its cost (a success's is the answer's, p->cost; a failure's as
 * record_request prices one). */
static void record_attempt(proxy_req *p, int status, const char *error) {
    const candidate *c = current(p);
    if (!c || p->n_atts == MAX_RECORDED_ATTEMPTS) return;
    uint64_t now = loop_now_ms(p->gw->loop), start = p->att_start_ms;
    bool sent = p->att_sent;
    int64_t cost = !sent ? 0 : status == 200 && !error ? p->cost
                 : cost_of_failure(cost_lookup(p->gw->costs, c->provider, c->model), &p->usage);
    p->atts[p->n_atts++] = (ledger_attempt){
        .provider = c->provider->name, .model = c->model, .status = status, .error = error,
        .latency_ms = (int64_t)(now - start), .start_ms = (int64_t)(start - p->t_start),
        .queue_ms = (int64_t)((sent ? p->att_sent_ms : now) - start),
        .connect_ms = sent ? p->att_connect_ms : -1,
        .ttft_ms = sent && p->att_first_ms ? (int64_t)(p->att_first_ms - start) : -1,
        .input_tokens = sent ? p->usage.input : 0, .output_tokens = sent ? p->usage.output : 0,
        .cost_micro = cost < 0 ? -1 : cost,
    };
}

/* Secrets out of an error that came (in part) from an upstream, before it is relayed,
 * logged or recorded. */
static void redact_error(const proxy_req *p, gw_api_error *e) {
    const redact_set *s = p->cfg->secrets;
    redact_str(s, e->message, sizeof e->message);
    redact_str(s, e->type, sizeof e->type);
    redact_str(s, e->code, sizeof e->code);
    redact_str(s, e->param, sizeof e->param);
}

static void attempt_failed(proxy_req *p, int status, const char *why_in, gw_failure kind) {
    candidate *c = &p->cands[p->cur];
    char why[512];   /* the upstream's words, without secrets: for the log and the client */
    snprintf(why, sizeof why, "%s", why_in);
    redact_str(p->cfg->secrets, why, sizeof why);
    if (p->have_error) redact_error(p, &p->last_error);
    end_attempt_lease(p);
    record_attempt(p, status, gw_failure_name(kind));
    sg_log_buffered(SG_LOG_WARN, "attempt failed id=%s provider=%s model=%s status=%d kind=%s: %s", p->id,
            c->provider->name, c->model, status, gw_failure_name(kind), why);
    if (kind == GW_FAIL_CLIENT || kind == GW_FAIL_QUOTA) {
        if (!p->have_error) gw_api_fail(&p->last_error, status, NULL, NULL, "%s", why);
        respond_error(p, &p->last_error);
        return;
    }
    if (!p->have_error) {
        gw_api_fail(&p->last_error, status, "upstream_error", NULL, "%s", why);
        p->have_error = true;
    }
    if (!p->up->in_process && kind == GW_FAIL_RETRYABLE)
        breaker_record(p->gw->breakers, &p->gw->cfg->circuit_breaker, c->provider->name, c->model, false,
                       loop_now_ms(p->gw->loop));
    uint64_t now = loop_now_ms(p->gw->loop);
    if (now >= p->deadline_ms) { no_more_targets(p, 504, "the request's deadline passed"); return; }
    /* retry the same target while its retries and the request's budget last */
    if (kind == GW_FAIL_RETRYABLE && c->retries < c->provider->retries.max && p->retry_budget > 0) {
        uint32_t wait = backoff_ms(p, c);
        if (now + wait < p->deadline_ms) {
            c->retries++;
            p->retry_budget--;
            loop_timer_start(p->gw->loop, &p->backoff, wait);
            return;
        }
    }
    /* fall back to the next target (a context-length failure needs a larger window) */
    int64_t window = c->info ? c->info->context_window : -1;
    for (p->cur++; p->cur < p->n_cands; p->cur++) {
        const candidate *n = &p->cands[p->cur];
        if (kind != GW_FAIL_CONTEXT || window < 0 || !n->info || n->info->context_window < 0 ||
            n->info->context_window > window)
            break;
    }
    if (p->cur >= p->n_cands) { p->cur = p->n_cands - 1; no_more_targets(p, status, why); return; }
    p->gw->stats.fallbacks++;
    p->have_error = false;
    p->had_error = true;
    start_attempt(p);
}

/* The target is at its provider account's limit (rpm, tpm or concurrency): it is skipped
 * without a request, recorded as a "limited" attempt, and the next target tried. With no
 * target left the client gets the last target's error or, when none was tried, a 429. */
static void skip_limited(proxy_req *p, const limits_result *r) {
    const candidate *c = &p->cands[p->cur];
    record_attempt(p, 0, "limited");
    sg_log_buffered(SG_LOG_INFO, "attempt skipped id=%s provider=%s model=%s: %s", p->id, c->provider->name, c->model,
                    r->outcome == LIMITS_UNAVAILABLE ? "its limits cannot be checked" : r->limit);
    if (r->retry_after_ms > 0 && (p->limited_retry_ms < 0 || r->retry_after_ms < p->limited_retry_ms))
        p->limited_retry_ms = r->retry_after_ms;
    if (p->cur + 1 < p->n_cands) {
        p->cur++;
        p->gw->stats.fallbacks++;
        start_attempt(p);
        return;
    }
    if (p->have_error || p->had_error) {   /* answered as the last target that was tried */
        p->cur = p->last_sent;
        respond_error(p, &p->last_error);
        return;
    }
    gw_api_error e;
    if (r->outcome == LIMITS_UNAVAILABLE) {
        gw_api_fail(&e, 503, "limits_unavailable", NULL, "%s", r->message);
    } else {
        gw_api_fail(&e, 429, "rate_limit_exceeded", NULL,
                    "Every target for \"%s\" is at its provider account's limit (last: %s); nothing was sent upstream.",
                    p->client_model, r->limit);
    }
    if (p->limited_retry_ms > 0)
        p->retry_after_ms = p->limited_retry_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)p->limited_retry_ms;
    respond_error(p, &e);
}

/* The provider-limit decision for the current target (on_attempt of limits_attempt). */
static void on_attempt_limits(void *arg, limits_lease *lease, const limits_result *r) {
    proxy_req *p = arg;
    p->att_lease = lease;
    if (r != &p->att_lim) p->att_lim = *r;
    if (r->outcome == LIMITS_ADMITTED) { send_attempt(p); return; }
    limits_cancel(lease);
    p->att_lease = NULL;
    skip_limited(p, &p->att_lim);
}

static bool has_limits(const gw_limits *l) { return l->rpm >= 0 || l->tpm >= 0 || l->concurrency >= 0; }

/* Before each attempt (retries and fallbacks included), the target's provider account
 * limits (providers.NAME.limits, and models.PROVIDER/MODEL.limits) are reserved: the request's token estimate against tpm, one against rpm, a slot
 * against concurrency. The reservation is reconciled with the usage when the attempt ends. */
static void start_attempt(proxy_req *p) {
    const candidate *c = &p->cands[p->cur];
    p->att_start_ms = p->n_atts ? loop_now_ms(p->gw->loop) : p->t_start;
    p->att_sent = false;   /* send_attempt sets the rest of the attempt's times */
    if (!has_limits(&c->provider->limits) && !(c->info && has_limits(&c->info->limits))) { send_attempt(p); return; }
    uint64_t now = loop_now_ms(p->gw->loop), left = p->deadline_ms > now ? p->deadline_ms - now : 1;
    limits_lease *lease = NULL;
    int rc = limits_attempt(p->gw->limits, c->provider, c->info, p->est_tokens, (uint32_t)(left < UINT32_MAX ? left : UINT32_MAX),
                            &lease, &p->att_lim, on_attempt_limits, p);
    p->att_lease = lease;   /* pending: ended (cancelled) if the client leaves meanwhile */
    if (rc == LIMITS_NOW) on_attempt_limits(p, lease, &p->att_lim);
}

static void send_attempt(proxy_req *p) {
    const candidate *c = &p->cands[p->cur];
    p->att_sent_ms = loop_now_ms(p->gw->loop);
    p->att_sent = true;
    p->att_first_ms = 0;
    p->att_connect_ms = -1;
    p->last_sent = p->cur;
    p->attempts++;
    p->gw->stats.attempts++;
    scan_free(p);                  /* the previous attempt's scanner is its provider's */
    p->up = c->provider->entry;
    reset_attempt(p);
    p->passthrough = p->up->passthrough_api == p->req.api;
    if (p->up->in_process) start_job(p, c);
    else start_remote(p, c);
}

/* ---- targets ---- */

static bool provider_listed(const char *const *list, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++) if (!strcmp(list[i], name)) return true;
    return false;
}

static void add_candidate(proxy_req *p, const gw_provider *pv, const char *model, const gw_model_info *info) {
    if (p->n_cands >= MAX_TARGETS) return;
    if (p->req.canon.n_only && !provider_listed(p->req.canon.only, p->req.canon.n_only, pv->name)) return;
    if (provider_listed(p->req.canon.ignore, p->req.canon.n_ignore, pv->name)) return;
    if (p->req.api->kind == GW_REQ_EMBEDDINGS && !pv->entry->build_embeddings) {
        if (!p->n_cannot++) p->cannot = pv;
        return;
    }
    p->cands[p->n_cands++] = (candidate){.provider = pv, .model = model, .info = info};
}

/* A route's targets: groups in order; within a group, a weighted random order. */
static void add_route(proxy_req *p, const gw_route *r) {
    for (int g = 0; g < r->n_groups; g++) {
        const gw_target *ts[MAX_TARGETS];
        uint64_t w[MAX_TARGETS], total = 0;
        size_t n = 0;
        for (size_t i = 0; i < r->n_targets && n < MAX_TARGETS; i++)
            if (r->targets[i].group == g) { ts[n] = &r->targets[i]; w[n] = r->targets[i].weight; total += w[n]; n++; }
        while (n) {
            uint64_t pick = total ? gateway_random(p->gw) % total : 0;
            size_t k = 0;
            while (k + 1 < n && pick >= w[k]) pick -= w[k++];
            add_candidate(p, ts[k]->provider, ts[k]->model, ts[k]->info);
            total -= w[k];
            ts[k] = ts[n - 1];
            w[k] = w[n - 1];
            n--;
        }
    }
}

/* An unknown model's error says what may be asked for instead (what this key may use). */
static int unknown_model(proxy_req *p, sg_error *err) {
    sg_buf b;
    sg_buf_init(&b);
    config_describe_served(p->cfg, p->key, &b);
    size_t l = strlen(err->msg);
    snprintf(err->msg + l, sizeof err->msg - l, "; served here: %s", b.data ? b.data : "nothing");
    sg_buf_free(&b);
    return -1;
}

static int add_model_id(proxy_req *p, const char *id, sg_error *err) {
    gw_resolved r;
    if (config_resolve_model(p->cfg, id, &r, err)) return unknown_model(p, err);
    if (p->key && !config_key_allows(p->key, &r)) {
        sg_fail(err, "this API key may not use \"%s\"", id);
        return unknown_model(p, err);
    }
    if (r.route) {
        if (!p->route) p->route = r.route;
        add_route(p, r.route);
    } else {
        add_candidate(p, r.provider, r.model, r.info);
    }
    return 0;
}

/* provider.order: listed providers first, in that order, the rest after (stable). */
static void apply_order(proxy_req *p) {
    if (!p->req.canon.n_order) return;
    candidate sorted[MAX_TARGETS];
    int n = 0;
    for (size_t o = 0; o < p->req.canon.n_order; o++)
        for (int i = 0; i < p->n_cands; i++)
            if (!strcmp(p->cands[i].provider->name, p->req.canon.order[o])) sorted[n++] = p->cands[i];
    for (int i = 0; i < p->n_cands; i++)
        if (!provider_listed(p->req.canon.order, p->req.canon.n_order, p->cands[i].provider->name)) sorted[n++] = p->cands[i];
    memcpy(p->cands, sorted, (size_t)n * sizeof *sorted);
}

/* Targets in cooldown go to the back (still tried when nothing else is left: a probe). */
static void apply_breakers(proxy_req *p) {
    candidate open[MAX_TARGETS];
    int n_open = 0, k = 0;
    for (int i = 0; i < p->n_cands; i++) {
        const candidate *c = &p->cands[i];
        if (!c->provider->entry->in_process &&
            breaker_is_open(p->gw->breakers, c->provider->name, c->model, loop_now_ms(p->gw->loop), NULL))
            open[n_open++] = *c;
        else p->cands[k++] = *c;
    }
    memcpy(p->cands + k, open, (size_t)n_open * sizeof *open);
}

/* ---- admission: rate limits and budgets ---- */

static void on_admitted(void *arg, limits_lease *lease, const limits_result *r) {
    proxy_req *p = arg;
    p->lease = lease;
    if (r != &p->lim) p->lim = *r;
    p->lim_headers = r->headers.limit_requests >= 0 || r->headers.limit_tokens >= 0;
    if (r->outcome != LIMITS_ADMITTED) {
        gw_api_error e;
        gw_api_fail(&e, r->status ? r->status : 429, r->code, NULL, "%s", r->message);
        p->retry_after_ms = r->retry_after_ms > 0 ? (uint32_t)r->retry_after_ms : 0;
        sg_log_buffered(SG_LOG_INFO, "refused id=%s by %s", p->id, r->limit);
        respond_error(p, &e);
        return;
    }
    start_attempt(p);
}

/* What admission reserves, from one look at each candidate's catalogue entry: the most
 * this request can cost (the dearest target's price for the estimated prompt and
 * max_tokens; -1, unpriced, when any target is), and the output a request without
 * max_tokens may produce (the largest max_output_tokens of its models, 4096 when none is
 * known). */
static void candidate_bounds(proxy_req *p, int64_t *max_cost, int64_t *max_output) {
    int64_t prompt = cost_estimate_tokens(NULL, p->req.raw, p->req.raw_len), cost = 0, out = -1;
    for (int i = 0; i < p->n_cands; i++) {
        const cost_model *m = cost_lookup(p->gw->costs, p->cands[i].provider, p->cands[i].model);
        int64_t c = cost_max(m, prompt, p->req.canon.max_tokens);
        if (c < 0 || cost < 0) cost = -1;
        else if (c > cost) cost = c;
        if (m && m->max_output_tokens > out) out = m->max_output_tokens;
    }
    *max_cost = cost;
    *max_output = p->req.canon.max_tokens == 0 ? 0 : out > 0 ? out : 4096;   /* 0: embeddings */
}

static void admit(proxy_req *p) {
    int64_t max_cost, max_output;
    candidate_bounds(p, &max_cost, &max_output);
    p->est_tokens = limits_estimate_tokens(p->req.raw_len, p->req.canon.max_tokens, max_output);
    limits_request lr = {
        .key = p->key, .route = p->route, .est_tokens = p->est_tokens,
        .max_cost = max_cost, .ttl_ms = p->route ? p->route->timeout_ms : 600000,
    };
    limits_lease *lease = NULL;
    if (limits_admit(p->gw->limits, &lr, &lease, &p->lim, on_admitted, p) == LIMITS_NOW)
        on_admitted(p, lease, &p->lim);
    else
        p->lease = lease;   /* pending: ended (cancelled) if the client leaves meanwhile */
}

/* ---- entry ---- */

static void on_client_abort(http_exchange *x, void *arg) {
    (void)x;
    proxy_req *p = arg;
    sg_log_buffered(SG_LOG_INFO, "client gone id=%s after %d attempts", p->id, p->attempts);
    record_attempt(p, 0, "cancelled");
    record_request(p, 499, loop_now_ms(p->gw->loop) - p->t_start);   /* nginx's "client closed" */
    http_exchange_close(p->x);
    p->done = true;
    proxy_free(p);
}

/* The caller's tracestate, passed on unchanged when it is printable ASCII within
 * TRACESTATE_MAX bytes; anything else is dropped (W3C: a vendor may drop a tracestate it
 * cannot pass on whole). Several tracestate fields are one list, joined with commas in
 * the order they came (W3C Trace Context, as RFC 9110 combines a repeated field). */
static void keep_tracestate(proxy_req *p, const http_request *req) {
    size_t len = 0;
    for (size_t h = 0; h < req->n_headers; h++) {
        if (strcasecmp(req->headers[h].name, "tracestate")) continue;
        const char *v = req->headers[h].value;   /* the server trimmed its whitespace */
        size_t n = 0;
        for (; v[n]; n++)
            if (n == TRACESTATE_MAX || (unsigned char)v[n] < 0x20 || (unsigned char)v[n] > 0x7e) goto drop;
        if (!n) continue;
        if (len + (len > 0) + n > TRACESTATE_MAX) goto drop;
        if (len) p->tracestate[len++] = ',';
        memcpy(p->tracestate + len, v, n);
        len += n;
    }
    p->tracestate[len] = 0;
    return;
drop:
    p->tracestate[0] = 0;
}

void proxy_handle(gateway *g, http_exchange *x, const http_request *req, const gw_client_api *api, const gw_key *key) {
    proxy_req *p = sg_xcalloc(1, sizeof *p);
    p->gw = g;
    p->cfg = config_ref(g->cfg);
    p->x = x;
    p->key = key;
    keystore_hold(key);   /* a run-time key stays valid while this request uses it */
    p->t_start = p->att_start_ms = loop_now_ms(g->loop);
    p->cost = COST_UNPRICED;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    p->wall_start_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    snprintf(p->id, sizeof p->id, "%s", http_exchange_id(x));
    sg_buf_init(&p->up_body);
    sg_buf_init(&p->url);
    sg_buf_init(&p->resp);
    sg_buf_init(&p->out);
    sg_buf_init(&p->gen);
    sg_buf_init(&p->cap_req);
    sg_buf_init(&p->cap_ans);
    p->limited_retry_ms = -1;
    sse_init(&p->sse, 0, on_sse, p);   /* each attempt sets its provider's bound */
    loop_timer_init(&p->backoff, backoff_fired, p);
    loop_timer_init(&p->defer, deferred_failure, p);
    gw_usage_init(&p->usage);
    http_exchange_on_abort(x, on_client_abort, p);
    g->stats.requests++;
    if (g->otlp) {   /* the caller's trace context, when valid; else a trace of our own */
        otlp_context caller;
        bool has = otlp_parse_traceparent(http_request_header(req, "traceparent"), &caller) == 0;
        otlp_begin(g->otlp, has ? &caller : NULL, &p->trace);
        p->traced = true;
        if (has) keep_tracestate(p, req);
    }

    gw_api_error e;
    p->req.http = req;
    p->req.key_id = key ? key->id : NULL;
    p->req.key_admin = key && key->role == GW_ROLE_ADMIN;
    if (gw_request_parse(&p->req, api, req->body, req->body_len, &e)) { respond_error(p, &e); return; }
    p->client_model = p->req.canon.model;
    if (!p->client_model) { respond_simple_error(p, 400, "missing_required_parameter", "model", "you must provide a model parameter"); return; }
    sg_error err;
    if (p->req.canon.n_models) {
        for (size_t i = 0; i < p->req.canon.n_models; i++)
            if (add_model_id(p, p->req.canon.models[i], &err)) { respond_simple_error(p, 404, "model_not_found", "models", err.msg); return; }
    } else if (add_model_id(p, p->client_model, &err)) {
        respond_simple_error(p, 404, "model_not_found", "model", err.msg);
        return;
    }
    p->capture = config_capture_wanted(p->cfg, p->route ? p->route->name : NULL, key ? key->id : NULL);
    if (p->capture)   /* the request as the client sent it, redacted when stored */
        sg_buf_append(&p->cap_req, req->body, req->body_len < p->cfg->capture.max_bytes ? req->body_len : p->cfg->capture.max_bytes);
    apply_order(p);
    apply_breakers(p);
    if (!p->n_cands && p->n_cannot) {
        gw_api_error ce;
        gw_api_fail(&ce, 400, "model_not_supported", "model",
                    "\"%s\" cannot serve embeddings: provider \"%s\" (type %s) has no embeddings API%s", p->client_model,
                    p->cannot->name, p->cannot->entry->type_name,
                    p->n_cannot > 1 ? ", nor has any other target" : "");
        respond_error(p, &ce);
        return;
    }
    if (!p->n_cands) {
        respond_simple_error(p, 400, "no_target", "provider", "no target is left after the provider preferences");
        return;
    }
    p->retry_budget = p->route ? p->route->retry_budget : 3;
    p->deadline_ms = p->t_start + (p->route ? p->route->timeout_ms : 600000);
    admit(p);
}
