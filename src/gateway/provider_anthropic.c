/* provider_anthropic.c: Anthropic's Messages API: POST {base_url}/v1/messages, x-api-key
 * and anthropic-version headers; the canonical request is translated (codec_anthropic.h). */
#include <stdlib.h>
#include <string.h>

#include "gateway/codec_anthropic.h"
#include "gateway/provider.h"

_Static_assert(sizeof(anth_scan) <= GW_SCAN_BYTES, "GW_SCAN_BYTES holds the scanner");

static const char *const k_keys[] = {"type", "base_url", "api_key", "version", "headers", "timeouts", "retries", "limits",
                                     "max_response_bytes", "max_sse_line_bytes", "max_header_bytes", NULL};

/* Listed by GET /v1/models for an anthropic provider configured from the environment. */
static const char *const k_models[] = {"claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", NULL};

static bool anthropic_owns(const char *m) { return !strncmp(m, "claude-", 7); }

static const char *anthropic_cost_vendor(const gw_provider *p) { (void)p; return "anthropic"; }

static int anthropic_build(gw_request *req, const gw_provider *pv, const char *model, const gw_model_info *info,
                           gw_upstream_call *call, gw_api_error *e) {
    if (gw_request_canonical(req, e)) return -1;
    int64_t max_out = info && info->max_output_tokens > 0 ? info->max_output_tokens : 4096;
    if (anth_build_upstream(req->canon.body, model, req->canon.stream, max_out, call->body, e)) return -1;
    sg_buf_printf(call->url, "%s/v1/messages", pv->base_url);
    call->headers[call->n_headers++] = (upstream_header){"content-type", "application/json"};
    if (pv->api_key) call->headers[call->n_headers++] = (upstream_header){"x-api-key", pv->api_key};
    call->headers[call->n_headers++] = (upstream_header){"anthropic-version", pv->version ? pv->version : "2023-06-01"};
    gw_call_add_config_headers(call, pv);
    return 0;
}

static void anthropic_scan_init(gw_scan *s, uint64_t seed) { (void)seed; anth_scan_init((anth_scan *)s->state); }
static void anthropic_scan_free(gw_scan *s) { anth_scan_free((anth_scan *)s->state); }

static int anthropic_scan_event(gw_scan *s, const char *event, const char *data, size_t len, gw_event_fn fn, void *ctx,
                                gw_relay *relay) {
    *relay = GW_RELAY_NONE;
    anth_scan *a = (anth_scan *)s->state;
    int rc = anth_scan_event(a, event, data, len, fn, ctx);
    return rc < 0 || a->failed ? -1 : 0;
}

static int anthropic_scan_end(gw_scan *s, gw_event_fn fn, void *ctx) { return anth_scan_end((anth_scan *)s->state, fn, ctx); }

static int anthropic_scan_response(const char *body, size_t len, uint64_t seed, gw_event_fn fn, void *ctx) {
    (void)seed;
    return anth_scan_response(body, len, fn, ctx);
}

/* POST {base_url}/v1/messages/count_tokens: the client's body with the upstream model. */
static void anthropic_build_count(const json_t *body, const gw_provider *pv, const char *model, gw_upstream_call *call) {
    json_t *b = json_deep_copy(body);
    json_object_set_new(b, "model", json_string(model));
    char *s = json_dumps(b, JSON_COMPACT);
    sg_buf_puts(call->body, s);
    free(s);
    json_decref(b);
    sg_buf_printf(call->url, "%s/v1/messages/count_tokens", pv->base_url);
    call->headers[call->n_headers++] = (upstream_header){"content-type", "application/json"};
    if (pv->api_key) call->headers[call->n_headers++] = (upstream_header){"x-api-key", pv->api_key};
    call->headers[call->n_headers++] = (upstream_header){"anthropic-version", pv->version ? pv->version : "2023-06-01"};
    gw_call_add_config_headers(call, pv);
}

/* {"input_tokens": N} */
static int64_t anthropic_scan_count(const char *body, size_t len) {
    json_t *j = json_loadb(body, len, 0, NULL);
    json_t *n = json_object_get(j, "input_tokens");
    int64_t v = json_is_integer(n) && json_integer_value(n) >= 0 ? (int64_t)json_integer_value(n) : -1;
    json_decref(j);
    return v;
}

static gw_failure anthropic_classify(int status, const char *body, size_t len, gw_api_error *out) {
    return gw_classify_error(GW_WIRE_ANTHROPIC, status, body, len, out);
}

const gw_provider_entry gw_provider_anthropic = {
    .type = GW_PROVIDER_ANTHROPIC,
    .type_name = "anthropic",
    .default_base_url = "https://api.anthropic.com",
    .default_version = "2023-06-01",
    .key_env = {"ANTHROPIC_API_KEY", NULL},
    .url_env = {"ANTHROPIC_BASE_URL", NULL},
    .config_keys = k_keys,
    .listed_models = k_models,
    .owns_bare_model = anthropic_owns,
    .bare_models = "claude-*",
    .cost_vendor = anthropic_cost_vendor,
    .build_request = anthropic_build,
    .scan_init = anthropic_scan_init,
    .scan_free = anthropic_scan_free,
    .scan_event = anthropic_scan_event,
    .scan_end = anthropic_scan_end,
    .scan_response = anthropic_scan_response,
    .classify_error = anthropic_classify,
    .retry_after_ms = gw_retry_after_header,
    .build_count_tokens = anthropic_build_count,
    .scan_count_tokens = anthropic_scan_count,
};
