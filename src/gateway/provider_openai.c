/* provider_openai.c: OpenAI chat completions and every OpenAI-compatible server (vLLM,
 * Ollama, Groq, llama.cpp...): POST {base_url}/chat/completions, Authorization: Bearer.
 *
 * The pass-through: an OpenAI chat client's request is spliced from its bytes (no JSON
 * round trip) while the canonical body was never needed, and the answer's bytes go back
 * as they are, only scanned for usage and finish. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/codec_embed.h"
#include "gateway/codec_openai.h"
#include "gateway/provider.h"

_Static_assert(sizeof(oai_scan) <= GW_SCAN_BYTES, "GW_SCAN_BYTES holds the scanner");

static const char *const k_keys[] = {"type", "base_url", "api_key", "headers", "timeouts", "retries", "limits",
                                     "max_response_bytes", "max_sse_line_bytes", "max_header_bytes", NULL};

/* Listed by GET /v1/models for an openai provider configured from the environment. */
static const char *const k_models[] = {"gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "o3", NULL};

/* OpenAI's own prices for api.openai.com under any name; other compatible servers have
 * their own (or none). */
/* gpt-*, chatgpt-*, text-embedding-*, and o1, o3, o4 with or without a "-suffix". */
static bool openai_owns(const char *m) {
    if (!strncmp(m, "gpt-", 4) || !strncmp(m, "chatgpt-", 8) || !strncmp(m, "text-embedding-", 15)) return true;
    return m[0] == 'o' && (m[1] == '1' || m[1] == '3' || m[1] == '4') && (m[2] == 0 || m[2] == '-');
}

static const char *openai_cost_vendor(const gw_provider *p) {
    if (!strcmp(p->name, "openai")) return "openai";
    const char *h = p->base_url ? strstr(p->base_url, "://") : NULL;
    if (h && !strncasecmp(h + 3, "api.openai.com", 14) && (h[17] == 0 || h[17] == '/' || h[17] == ':'))
        return "openai";
    return NULL;
}

static int openai_build(gw_request *req, const gw_provider *pv, const char *model, const gw_model_info *info,
                        gw_upstream_call *call, gw_api_error *e) {
    (void)info;
    bool stream = req->canon.stream;
    if (!req->api->splice_openai || req->api->splice_openai(req, model, stream, call->body) != 0) {
        if (gw_request_canonical(req, e)) return -1;
        oai_build_upstream(req->canon.body, model, stream, 0, call->body);
    }
    sg_buf_printf(call->url, "%s/chat/completions", pv->base_url);
    call->headers[call->n_headers++] = (upstream_header){"content-type", "application/json"};
    if (pv->api_key) {
        snprintf(call->auth, sizeof call->auth, "Bearer %s", pv->api_key);
        call->headers[call->n_headers++] = (upstream_header){"authorization", call->auth};
    }
    gw_call_add_config_headers(call, pv);
    return 0;
}

static void openai_auth(const gw_provider *pv, gw_upstream_call *call) {
    call->headers[call->n_headers++] = (upstream_header){"content-type", "application/json"};
    if (pv->api_key) {
        snprintf(call->auth, sizeof call->auth, "Bearer %s", pv->api_key);
        call->headers[call->n_headers++] = (upstream_header){"authorization", call->auth};
    }
    gw_call_add_config_headers(call, pv);
}

/* POST {base_url}/embeddings */
static int openai_build_embeddings(gw_request *req, const gw_provider *pv, const char *model, gw_upstream_call *call,
                                   gw_api_error *e) {
    (void)e;
    emb_build_openai((const emb_request *)req->state, model, call->body);
    sg_buf_printf(call->url, "%s/embeddings", pv->base_url);
    openai_auth(pv, call);
    return 0;
}

static void openai_scan_init(gw_scan *s, uint64_t seed) { (void)seed; oai_scan_init((oai_scan *)s->state); }
static void openai_scan_free(gw_scan *s) { oai_scan_free((oai_scan *)s->state); }

static int openai_scan_event(gw_scan *s, const char *event, const char *data, size_t len, gw_event_fn fn, void *ctx,
                             gw_relay *relay) {
    (void)event;
    *relay = GW_RELAY_NONE;
    int flags = oai_scan_chunk((oai_scan *)s->state, data, len, fn, ctx);
    if (flags < 0 || (flags & OAI_CHUNK_ERROR)) return -1;
    if (!(flags & OAI_CHUNK_SKIP)) *relay = flags & OAI_CHUNK_USAGE_ONLY ? GW_RELAY_USAGE_CHUNK : GW_RELAY_CHUNK;
    return 0;
}

static int openai_scan_end(gw_scan *s, gw_event_fn fn, void *ctx) { return oai_scan_end((oai_scan *)s->state, fn, ctx); }

static int openai_scan_response(const char *body, size_t len, uint64_t seed, gw_event_fn fn, void *ctx) {
    (void)seed;
    return oai_scan_response(body, len, fn, ctx);
}

static void openai_relay_chunk(const char *data, size_t len, sg_buf *out) {
    sg_buf_puts(out, "data: ");
    sg_buf_append(out, data, len);
    sg_buf_puts(out, "\n\n");
}

static gw_failure openai_classify(int status, const char *body, size_t len, gw_api_error *out) {
    return gw_classify_error(GW_WIRE_OPENAI, status, body, len, out);
}

/* OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s". -1 when malformed. */
static int64_t parse_go_duration(const char *s) {
    double total = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s) return -1;
        if (!strncmp(end, "ms", 2)) { total += v; end += 2; }
        else if (*end == 'h') { total += v * 3600e3; end++; }
        else if (*end == 'm') { total += v * 60e3; end++; }
        else if (*end == 's') { total += v * 1e3; end++; }
        else return -1;
        s = end;
    }
    return (int64_t)total;
}

/* retry-after(-ms), or on a 429 without them the reset of the exhausted rate-limit
 * window. */
static uint32_t openai_retry_after(const upstream_response *r) {
    uint32_t ms = gw_retry_after_header(r);
    if (ms || upstream_response_header(r, "retry-after-ms") || r->status != 429) return ms;
    const char *s = upstream_response_header(r, "retry-after");
    if (s && *s >= '0' && *s <= '9') return ms;
    int64_t wait = 0;
    static const char *const pairs[][2] = {
        {"x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"},
        {"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"},
    };
    for (size_t i = 0; i < 2; i++) {
        const char *rem = upstream_response_header(r, pairs[i][0]), *reset = upstream_response_header(r, pairs[i][1]);
        if (rem && reset && strtol(rem, NULL, 10) == 0) {
            int64_t d = parse_go_duration(reset);
            if (d > wait) wait = d;
        }
    }
    return (uint32_t)wait;
}

const gw_provider_entry gw_provider_openai = {
    .type = GW_PROVIDER_OPENAI,
    .type_name = "openai",
    .default_base_url = "https://api.openai.com/v1",
    .key_env = {"OPENAI_API_KEY", NULL},
    .url_env = {"OPENAI_BASE_URL", NULL},
    .config_keys = k_keys,
    .listed_models = k_models,
    .owns_bare_model = openai_owns,
    .bare_models = "gpt-*, o1/o3/o4*, chatgpt-*, text-embedding-*",
    .passthrough_api = &gw_api_openai_chat,
    .cost_vendor = openai_cost_vendor,
    .build_request = openai_build,
    .scan_init = openai_scan_init,
    .scan_free = openai_scan_free,
    .scan_event = openai_scan_event,
    .scan_end = openai_scan_end,
    .scan_response = openai_scan_response,
    .relay_chunk = openai_relay_chunk,
    .classify_error = openai_classify,
    .retry_after_ms = openai_retry_after,
    .build_embeddings = openai_build_embeddings,
    .scan_embeddings = emb_scan_openai,
};
