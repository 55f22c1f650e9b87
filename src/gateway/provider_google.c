/* provider_google.c: Google Gemini's generateContent API:
 * POST {base_url}/{version}/models/{model}:generateContent (or :streamGenerateContent?alt=sse),
 * x-goog-api-key; the canonical request is translated (codec_gemini.h). Google's SDK
 * prefers GOOGLE_API_KEY when both it and GEMINI_API_KEY are set; so do we. */
#include <string.h>

#include "gateway/codec_embed.h"
#include "gateway/codec_gemini.h"
#include "gateway/provider.h"

_Static_assert(sizeof(gem_scan) <= GW_SCAN_BYTES, "GW_SCAN_BYTES holds the scanner");

static const char *const k_keys[] = {"type", "base_url", "api_key", "version", "headers", "timeouts", "retries", "limits",
                                     "max_response_bytes", "max_sse_line_bytes", "max_header_bytes", NULL};

/* Listed by GET /v1/models for a google provider configured from the environment. */
static const char *const k_models[] = {"gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", NULL};

static const char *google_cost_vendor(const gw_provider *p) { (void)p; return "google"; }

static int google_build(gw_request *req, const gw_provider *pv, const char *model, const gw_model_info *info,
                        gw_upstream_call *call, gw_api_error *e) {
    (void)info;
    if (gw_request_canonical(req, e)) return -1;
    if (gem_build_request(req->canon.body, call->body, e)) return -1;
    sg_buf_puts(call->url, pv->base_url);
    if (gem_url_path(call->url, pv->version, model, req->canon.stream, e)) return -1;
    call->headers[call->n_headers++] = (upstream_header){"content-type", "application/json"};
    if (pv->api_key) call->headers[call->n_headers++] = (upstream_header){"x-goog-api-key", pv->api_key};
    gw_call_add_config_headers(call, pv);
    return 0;
}

/* POST {base_url}/{version}/models/{model}:embedContent (one input) or
 * :batchEmbedContents (several). */
static int google_build_embeddings(gw_request *req, const gw_provider *pv, const char *model, gw_upstream_call *call,
                                   gw_api_error *e) {
    const char *method;
    if (emb_build_gemini((const emb_request *)req->state, model, call->body, &method, e)) return -1;
    sg_buf_puts(call->url, pv->base_url);
    if (gem_url_path(call->url, pv->version, model, false, e)) return -1;
    /* the chat path ends in ":generateContent": the method replaces it */
    char *colon = strrchr(call->url->data, ':');
    call->url->len = (size_t)(colon + 1 - call->url->data);
    sg_buf_puts(call->url, method);
    call->headers[call->n_headers++] = (upstream_header){"content-type", "application/json"};
    if (pv->api_key) call->headers[call->n_headers++] = (upstream_header){"x-goog-api-key", pv->api_key};
    gw_call_add_config_headers(call, pv);
    return 0;
}

static void google_scan_init(gw_scan *s, uint64_t seed) { gem_scan_init((gem_scan *)s->state, seed); }
static void google_scan_free(gw_scan *s) { (void)s; }

static int google_scan_event(gw_scan *s, const char *event, const char *data, size_t len, gw_event_fn fn, void *ctx,
                             gw_relay *relay) {
    (void)event;
    *relay = GW_RELAY_NONE;
    int rc = gem_scan_chunk((gem_scan *)s->state, data, len, fn, ctx);
    return rc < 0 || (rc & GEM_SCAN_ERROR) ? -1 : 0;
}

static int google_scan_end(gw_scan *s, gw_event_fn fn, void *ctx) { return gem_scan_end((gem_scan *)s->state, fn, ctx); }

static gw_failure google_classify(int status, const char *body, size_t len, gw_api_error *out) {
    return gw_classify_error(GW_WIRE_GEMINI, status, body, len, out);
}

static bool google_owns(const char *m) { return !strncmp(m, "gemini-", 7); }

const gw_provider_entry gw_provider_google = {
    .type = GW_PROVIDER_GOOGLE,
    .type_name = "google",
    .default_base_url = "https://generativelanguage.googleapis.com",
    .default_version = "v1beta",
    .key_env = {"GOOGLE_API_KEY", "GEMINI_API_KEY"},
    .url_env = {"GEMINI_BASE_URL", "GOOGLE_GEMINI_BASE_URL"},
    .config_keys = k_keys,
    .listed_models = k_models,
    .owns_bare_model = google_owns,
    .bare_models = "gemini-*",
    .cost_vendor = google_cost_vendor,
    .build_request = google_build,
    .scan_init = google_scan_init,
    .scan_free = google_scan_free,
    .scan_event = google_scan_event,
    .scan_end = google_scan_end,
    .scan_response = gem_scan_response,
    .classify_error = google_classify,
    .retry_after_ms = gw_retry_after_header,
    .build_embeddings = google_build_embeddings,
    .scan_embeddings = emb_scan_gemini,
};
