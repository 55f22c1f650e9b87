/* count_tokens.c: POST /v1/messages/count_tokens (Anthropic's token counting): the body of
 * /v1/messages without max_tokens, answered {"input_tokens": N}; errors in Anthropic's
 * shape.
 *
 * The model (a route: its first target) decides how N is found, through its provider's
 * entry (provider.h):
 *   count_prompt        (in-process, local) the local tokenizer over the rendered chat
 *                       template: what the engine feeds
 *   build_count_tokens  (anthropic) the provider's own count endpoint, its answer relayed
 *   neither             an estimate of the prompt (gw_prompt_text) with the first local
 *                       model's tokenizer when one is loaded, else the bytes-per-token
 *                       rule (cost.h)
 *
 * Counting is not a chat request: it generates nothing and costs nothing, so it is not
 * admitted against rate limits or budgets, not recorded in the ledger, and makes one
 * upstream call at most (no retries, no fallback, no circuit breaker record). The key
 * must be allowed the model, as for a chat request. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/codec_anthropic.h"
#include "gateway/cost.h"
#include "gateway/gateway.h"
#include "gateway/local.h"
#include "gateway/provider.h"
#include "gateway/redact.h"

#define MAX_ANSWER (64 * 1024)

typedef struct count_call {
    gateway *gw;
    gw_config *cfg;                /* a reference: the provider lives in it */
    const gw_provider *pv;
    http_exchange *x;
    upstream_xfer *xfer;
    sg_buf url, body, resp;
    gw_upstream_call call;
    int status;
} count_call;

static void respond(http_exchange *x, int status, const char *body, size_t len) {
    http_header h[1] = {{"content-type", "application/json"}};
    http_respond(x, status, h, 1, body, len);
}

static void respond_error(http_exchange *x, int status, const char *type, const char *fmt, const char *arg) {
    gw_api_error e;
    gw_api_fail(&e, status, NULL, NULL, fmt, arg);
    if (type) snprintf(e.type, sizeof e.type, "%s", type);
    sg_buf b;
    sg_buf_init(&b);
    anth_error_body(&b, &e);
    respond(x, status, b.data, b.len);
    sg_buf_free(&b);
}

static void respond_count(http_exchange *x, int64_t n) {
    char b[64];
    int len = snprintf(b, sizeof b, "{\"input_tokens\":%lld}", (long long)n);
    respond(x, 200, b, (size_t)len);
}

static void call_free(count_call *c) {
    if (c->xfer) gw_transport_cancel(&c->gw->transport, c->xfer);
    sg_buf_free(&c->url);
    sg_buf_free(&c->body);
    sg_buf_free(&c->resp);
    config_unref(c->cfg);
    free(c);
}

static void on_headers(upstream_xfer *t, const upstream_response *r, void *arg) {
    count_call *c = arg;
    c->xfer = t;
    c->status = r->status;
}

static void on_data(upstream_xfer *t, const char *data, size_t len, void *arg) {
    count_call *c = arg;
    c->xfer = t;
    if (c->resp.len + len <= MAX_ANSWER) sg_buf_append(&c->resp, data, len);
}

static void on_done(upstream_xfer *t, const upstream_done *d, void *arg) {
    (void)t;
    count_call *c = arg;
    c->xfer = NULL;
    if (d->result != UPSTREAM_OK) {
        char why[300];
        snprintf(why, sizeof why, "%s", d->error && *d->error ? d->error : upstream_result_name(d->result));
        redact_str(c->cfg->secrets, why, sizeof why);
        respond_error(c->x, 502, "api_error", "the provider's token count failed: %s", why);
    } else if (c->status == 200) {
        int64_t n = c->pv->entry->scan_count_tokens(c->resp.data ? c->resp.data : "", c->resp.len);
        if (n >= 0) respond_count(c->x, n);
        else respond_error(c->x, 502, "api_error", "%s", "the provider's token count was malformed");
    } else {   /* the provider's error, its words without secrets */
        gw_api_error e;
        c->pv->entry->classify_error(c->status, c->resp.data, c->resp.len, &e);
        redact_str(c->cfg->secrets, e.message, sizeof e.message);
        sg_buf b;
        sg_buf_init(&b);
        anth_error_body(&b, &e);
        respond(c->x, c->status, b.data, b.len);
        sg_buf_free(&b);
    }
    call_free(c);
}

static void on_abort(http_exchange *x, void *arg) {
    call_free(arg);
    http_exchange_close(x);
}

/* The provider's count: the client's body with the upstream model, without max_tokens. */
static void ask_provider(gateway *g, http_exchange *x, json_t *root, const gw_provider *pv, const char *model) {
    count_call *c = sg_xcalloc(1, sizeof *c);
    c->gw = g;
    c->cfg = config_ref(g->cfg);
    c->pv = pv;
    c->x = x;
    sg_buf_init(&c->url);
    sg_buf_init(&c->body);
    sg_buf_init(&c->resp);
    json_object_del(root, "max_tokens");
    json_object_del(root, "stream");
    c->call.url = &c->url;
    c->call.body = &c->body;
    pv->entry->build_count_tokens(root, pv, model, &c->call);
    gw_upstream_call *call = &c->call;
    upstream_request r = {
        .method = "POST", .url = c->url.data, .headers = call->headers, .n_headers = call->n_headers,
        .body = c->body.data, .body_len = c->body.len,
        .timeouts = {pv->timeouts.connect_ms, pv->timeouts.first_token_ms, pv->timeouts.idle_ms, pv->timeouts.total_ms},
        .cb = {on_headers, on_data, on_done}, .arg = c,
        .max_body_bytes = MAX_ANSWER, .max_head_bytes = pv->bounds.max_header_bytes,
    };
    sg_error err;
    http_exchange_on_abort(x, on_abort, c);
    c->xfer = gw_transport_start(&g->transport, &r, &err);
    if (!c->xfer) {
        respond_error(x, 502, "api_error", "the provider's token count failed: %s", err.msg);
        call_free(c);
    }
}

static const sg_tokenizer *any_tokenizer(gateway *g) {
    for (size_t i = 0; i < g->n_locals; i++) {
        const sg_model *m = g->locals[i].lm ? local_model(g->locals[i].lm) : NULL;
        if (m && m->tok) return m->tok;
    }
    return NULL;
}

void count_tokens_handle(gateway *g, http_exchange *x, const http_request *req, const gw_key *key) {
    /* the body of /v1/messages without max_tokens: validated as one (with a max_tokens) */
    json_t *root = json_loadb(req->body ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        respond_error(x, 400, "invalid_request_error", "%s", "the body is not a JSON object");
        return;
    }
    if (!json_object_get(root, "max_tokens")) json_object_set_new(root, "max_tokens", json_integer(1));
    char *s = json_dumps(root, JSON_COMPACT);
    anth_request a = {0};
    gw_api_error e;
    int rc = anth_parse_request(s, strlen(s), &a, &e);
    free(s);
    if (rc) {
        sg_buf b;
        sg_buf_init(&b);
        anth_error_body(&b, &e);
        respond(x, e.status, b.data, b.len);
        sg_buf_free(&b);
        json_decref(root);
        return;
    }
    gw_resolved r;
    sg_error err;
    const gw_provider *pv = NULL;
    const char *model = NULL;
    if (config_resolve_model(g->cfg, a.model, &r, &err) == 0 && (!key || config_key_allows(key, &r))) {
        if (r.route && r.route->n_targets) { pv = r.route->targets[0].provider; model = r.route->targets[0].model; }
        else if (!r.route) { pv = r.provider; model = r.model; }
    }
    if (!pv) {
        respond_error(x, 404, "not_found_error", "model: %s", a.model);
        anth_request_free(&a);
        json_decref(root);
        return;
    }
    int64_t n = 0;
    int counted = 1;   /* 0 counted, -1 the client's error, 1 not here: estimated */
    if (!pv->entry->build_count_tokens && pv->entry->count_prompt) counted = pv->entry->count_prompt(g, model, a.body, &n, &err);
    if (pv->entry->build_count_tokens) {
        ask_provider(g, x, root, pv, model);
    } else if (counted == 0) {
        respond_count(x, n);
    } else if (counted < 0) {
        respond_error(x, 400, "invalid_request_error", "%s", err.msg);
    } else {
        sg_buf p;
        sg_buf_init(&p);
        gw_prompt_text(a.body, &p);
        respond_count(x, cost_estimate_tokens(any_tokenizer(g), p.data ? p.data : "", p.len));
        sg_buf_free(&p);
    }
    anth_request_free(&a);
    json_decref(root);
}
