/* provider.h: the providers: the APIs the gateway calls (outbound).
 *
 * One entry per provider type (openai and every OpenAI-compatible server, anthropic,
 * google, local), one file each (provider_openai.c, provider_anthropic.c,
 * provider_google.c, provider_local.c), listed in gw_provider_entries in the order of
 * gw_provider_type (config.h). In the way of nginx's upstream modules (create_request,
 * process_header, input_filter), an entry builds the upstream request (URL, auth, headers,
 * body) from the canonical request, scans the answer into canonical events and usage, and
 * classifies its error bodies; an in-process provider (local) runs jobs instead. The proxy
 * (proxy.c) holds the attempt state machine and talks to providers only through this
 * table: it never asks which provider it is calling.
 *
 * The configuration reads its provider types from here too (config.c): the type names,
 * the default base URL and version, the environment variables of the well-known names, and
 * the keys a provider section may have.
 *
 * Capabilities:
 *   passthrough_api  a client of that API and this provider speak the same format: the
 *                    request may be spliced (gw_client_api.splice_openai), the answer's
 *                    bytes go to the client as they are and are only scanned
 *   in_process       runs jobs (job_start / job_cancel), no upstream transfer: no
 *                    circuit breaker either; its section lists the models it loads
 *                    (gw_provider.local), which the gateway starts
 *   build_embeddings serves POST /v1/embeddings (NULL: it cannot embed, and an
 *                    embeddings request's routing skips it)
 *   build_count_tokens / count_prompt  how POST /v1/messages/count_tokens counts for it
 *                    (its endpoint, the local tokenizer; neither: an estimate)
 *
 * The gateway's other modules know providers only through this table too: a configured
 * provider carries its entry (gw_provider.entry), GET /v1/models lists its
 * listed_models, a bare model name resolves through owns_bare_model.
 *
 * Adding a provider: a file provider_NAME.c defining a const gw_provider_entry, a value
 * in gw_provider_type (config.h), and its row in gw_provider_entries (provider.c).
 * Threading: the loop thread only. */
#ifndef SG_GATEWAY_PROVIDER_H
#define SG_GATEWAY_PROVIDER_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "gateway/api.h"
#include "gateway/chat.h"
#include "gateway/config.h"
#include "gateway/upstream.h"

#define GW_CALL_MAX_HEADERS 16
#define GW_SCAN_BYTES 512          /* an entry's stream scanner */

/* An upstream request as build_request writes it; url and body are the caller's buffers
 * (empty on entry), the headers point into the provider's configuration or into auth. */
typedef struct gw_upstream_call {
    sg_buf *url;
    sg_buf *body;
    upstream_header headers[GW_CALL_MAX_HEADERS];
    size_t n_headers;
    char auth[1024];               /* room for a header value built from the key */
} gw_upstream_call;

/* A stream scanner's storage, opaque to the caller. */
typedef struct gw_scan {
    alignas(max_align_t) unsigned char state[GW_SCAN_BYTES];
} gw_scan;

/* What a scanned stream event means for a pass-through (scan_event's *relay). */
typedef enum gw_relay {
    GW_RELAY_NONE,                 /* nothing to pass on */
    GW_RELAY_CHUNK,                /* pass the payload on */
    GW_RELAY_USAGE_CHUNK,          /* pass it on only to a client that asked for usage */
} gw_relay;

/* How an in-process job ended: e NULL on success (usage then its usage, or NULL), else
 * the failure and what it means for the router. */
typedef void (*gw_job_done_fn)(void *ctx, const gw_api_error *e, gw_failure kind, const gw_usage *usage);

struct gateway;

typedef struct gw_provider_entry {
    gw_provider_type type;
    const char *type_name;         /* the config's `type:` value, and the well-known name */
    /* the well-known provider of this type (exists without being declared) */
    const char *default_base_url;  /* NULL: not remote */
    const char *default_version;   /* the `version:` default, NULL: none */
    const char *key_env[2];        /* where the SDKs read its key, preferred first */
    const char *url_env[2];        /* ... and its base URL */
    const char *const *config_keys;/* the keys of its providers: section, NULL-terminated */
    /* What GET /v1/models (and /api/tags, /v4/ai/config) lists for a provider of this type
     * that is configured without being declared (a key in the environment): its current
     * models, NULL-terminated; NULL: none. */
    const char *const *listed_models;
    /* Whether a bare model name ("claude-sonnet-4-5", no "provider/") as users' code sends
     * it belongs to the well-known provider of this type; NULL: none does. bare_models
     * says which, for errors ("claude-*"). */
    bool (*owns_bare_model)(const char *model);
    const char *bare_models;

    const gw_client_api *passthrough_api;
    bool in_process;

    /* The price catalogue's vendor for a provider of this type ("openai"), or NULL. */
    const char *(*cost_vendor)(const gw_provider *p);

    /* ---- remote ---- */
    /* Writes the upstream request for model into call; 0, or -1 with e (a request this
     * provider cannot express: e->status < 500 is the client's fault). */
    int (*build_request)(gw_request *req, const gw_provider *pv, const char *model, const gw_model_info *info,
                         gw_upstream_call *call, gw_api_error *e);
    /* A streamed answer: scan_init per attempt, scan_event per SSE event (event name and
     * data payload), scan_end when the transfer ended; scan_free always. scan_event
     * returns -1 when the stream failed (an ERROR event went out) or the consumer stopped;
     * scan_end returns 1 when the stream ended early (no end marker). */
    void (*scan_init)(gw_scan *s, uint64_t seed);
    void (*scan_free)(gw_scan *s);
    int (*scan_event)(gw_scan *s, const char *event, const char *data, size_t len, gw_event_fn fn, void *ctx,
                      gw_relay *relay);
    int (*scan_end)(gw_scan *s, gw_event_fn fn, void *ctx);
    /* A non-streamed body: 0, or 1 when malformed. */
    int (*scan_response)(const char *body, size_t len, uint64_t seed, gw_event_fn fn, void *ctx);
    /* Appends one pass-through stream payload as the client's stream carries it. */
    void (*relay_chunk)(const char *data, size_t len, sg_buf *out);
    /* An error status and body, classified (out: the error to relay). */
    gw_failure (*classify_error)(int status, const char *body, size_t len, gw_api_error *out);
    /* How long a failed answer asks us to wait, from its headers, in ms (0: no word). */
    uint32_t (*retry_after_ms)(const upstream_response *r);

    /* ---- embeddings (NULL: this provider has none; routing skips it for them) ---- */
    /* Writes the upstream embeddings request (req->api->kind is GW_REQ_EMBEDDINGS, its
     * state an emb_request, codec_embed.h); 0, or -1 with e as build_request. */
    int (*build_embeddings)(gw_request *req, const gw_provider *pv, const char *model, gw_upstream_call *call,
                            gw_api_error *e);
    /* Its answer: EMBEDDING events in input order, USAGE when reported; 0, 1 malformed,
     * -1 when fn stopped. */
    int (*scan_embeddings)(const char *body, size_t len, gw_event_fn fn, void *ctx);

    /* ---- token counting (POST /v1/messages/count_tokens, count_tokens.c) ---- */
    /* The provider's own count endpoint: writes the upstream request for body (Anthropic's
     * Messages shape, already without max_tokens and stream) and model. NULL: none (an
     * in-process provider counts with count_prompt; others are estimated). */
    void (*build_count_tokens)(const json_t *body, const gw_provider *pv, const char *model, gw_upstream_call *call);
    /* Its answer (status 200): the input tokens, or -1 when malformed. Error statuses go
     * through classify_error. */
    int64_t (*scan_count_tokens)(const char *body, size_t len);
    /* In-process: the prompt's exact count (*n); 0, -1 with err (the client's fault), or 1
     * when this model is not loaded here (the gateway estimates instead). */
    int (*count_prompt)(struct gateway *g, const char *model, const json_t *body, int64_t *n, sg_error *err);

    /* ---- in-process ---- */
    /* Starts a job for model: a handle for job_cancel, or NULL with e (no code when the
     * model is not available: a plain retryable failure) and *kind. */
    void *(*job_start)(struct gateway *g, const char *model, const json_t *body, gw_event_fn on_event,
                       gw_job_done_fn on_done, void *ctx, gw_api_error *e, gw_failure *kind);
    void (*job_cancel)(void *job);
} gw_provider_entry;

extern const gw_provider_entry gw_provider_openai;
extern const gw_provider_entry gw_provider_anthropic;
extern const gw_provider_entry gw_provider_google;
extern const gw_provider_entry gw_provider_local;

/* Every provider type, indexed by gw_provider_type; NULL-terminated. */
extern const gw_provider_entry *const gw_provider_entries[];

/* The entry of a type, or NULL. */
const gw_provider_entry *gw_provider_entry_of(gw_provider_type t);
const gw_provider_entry *gw_provider_entry_named(const char *type_name);

/* retry-after-ms, else retry-after (seconds): what every provider may send. */
uint32_t gw_retry_after_header(const upstream_response *r);
/* The provider's extra configured headers after what the entry set. */
void gw_call_add_config_headers(gw_upstream_call *call, const gw_provider *pv);

#endif
