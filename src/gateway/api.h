/* api.h: the client APIs: the formats the gateway is spoken to in.
 *
 * One entry per inbound API (OpenAI chat completions, Anthropic messages, OpenAI
 * responses, OpenAI embeddings, the Vercel AI Gateway protocol's language and embedding
 * models, Ollama's chat, generate and embed), one file per format (api_openai_chat.c,
 * api_anthropic_messages.c, api_openai_responses.c, api_openai_embeddings.c,
 * api_ai_gateway.c, api_ollama.c), all listed in gw_client_apis. An embeddings entry
 * keeps an emb_request (codec_embed.h) at the start of its state: the providers build
 * from it whatever API asked. An entry
 * reads a client's body into a gw_request (the canonical request of chat.h plus the
 * routing fields), and renders canonical events, the final answer and errors in its own
 * format. The proxy (proxy.c) talks to an entry only through this table: it never asks
 * which API a request came in.
 *
 * A request's canonical JSON body may be built lazily: an entry that can read the routing
 * fields without a JSON tree (OpenAI's fast path) leaves canon.body NULL, and
 * gw_request_canonical builds it on first need. Such an entry may also offer
 * splice_openai: writing an OpenAI-compatible upstream body straight from the client's
 * bytes (the pass-through of provider.h).
 *
 * Adding a client API: a file api_NAME.c defining a const gw_client_api, and its row in
 * gw_client_apis (api.c). Threading: the loop thread only. */
#ifndef SG_GATEWAY_API_H
#define SG_GATEWAY_API_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "gateway/chat.h"
#include "gateway/codec_openai.h"

#define GW_API_STATE_BYTES 3584   /* an entry's per-request state (OpenAI: its peek) */
#define GW_API_RENDER_BYTES 2048   /* an entry's renderer */

typedef struct gw_client_api gw_client_api;

struct http_request;
/* What a request asks for: a chat (messages in, events out) or embeddings (inputs in,
 * GW_EV_EMBEDDING events out, never streamed; served only by providers with
 * build_embeddings, provider.h). */
typedef enum gw_request_kind {
    GW_REQ_CHAT,
    GW_REQ_EMBEDDINGS,
} gw_request_kind;

typedef struct gw_request {
    const gw_client_api *api;
    const struct http_request *http;   /* the client's request, for an entry that reads routing
                                          fields from headers (the AI Gateway's model id);
                                          set before gw_request_parse and read by parse
                                          only; may be NULL */
    const char *raw;               /* the client's body (valid while the exchange lives) */
    size_t raw_len;
    const char *key_id;            /* the gateway key's id (NULL without keys): set before
                                      parse by the caller, for APIs that keep state per key */
    bool key_admin;                /* that key is an admin key */
    oai_request canon;             /* the routing fields always; body NULL until
                                      gw_request_canonical when the entry reads lazily */
    alignas(max_align_t) unsigned char state[GW_API_STATE_BYTES];   /* the entry's own */
} gw_request;

/* A renderer's storage: what render_init sets up, opaque to the caller. */
typedef struct gw_render {
    alignas(max_align_t) unsigned char state[GW_API_RENDER_BYTES];
} gw_render;

struct gw_client_api {
    const char *name;              /* "openai-chat", for logs */
    const char *paths[3];          /* the endpoints it serves ("/v1/chat/completions"), NULL-ended */
    const char *error_prefix;      /* the gateway's other endpoints under this prefix ("/api/")
                                      word their errors in this API's shape; NULL: none */
    gw_request_kind kind;
    const char *stream_content_type;   /* a streamed answer's content-type; NULL: text/event-stream */
    /* Reads r->raw into r->canon (routing fields, and the body unless read lazily): 0, or
     * -1 with e (a 400 in this API's words). r->api, raw and raw_len are set. */
    int (*parse)(gw_request *r, gw_api_error *e);
    /* Fills r->canon.body when parse left it NULL: 0, or -1 with e. */
    int (*canonical)(gw_request *r, gw_api_error *e);
    void (*request_free)(gw_request *r);
    /* The pass-through: appends the OpenAI-compatible upstream body for model straight
     * from the client's bytes; 1 when this request cannot be spliced (the caller then
     * builds it from the canonical body). NULL: this API never splices. */
    int (*splice_openai)(const gw_request *r, const char *model, bool stream, sg_buf *out);
    /* Rendering into out: events as they come (SSE when streamed, or the entry's stream_content_type), then render_end
     * (returns the HTTP status of a non-streamed answer) or render_error (a stream's
     * explicit error event). model is the client's model name; created unix seconds. */
    void (*render_init)(gw_render *rs, sg_buf *out, const gw_request *r, const char *model, int64_t created);
    int (*render_event)(gw_render *rs, const gw_event *ev);
    int (*render_end)(gw_render *rs);
    void (*render_error)(gw_render *rs, const gw_api_error *e);
    void (*render_free)(gw_render *rs);
    /* A complete error body in this API's shape (before any byte of an answer). */
    void (*error_body)(sg_buf *out, const gw_api_error *e);
};

extern const gw_client_api gw_api_openai_chat;
extern const gw_client_api gw_api_anthropic_messages;
extern const gw_client_api gw_api_ai_gateway;
extern const gw_client_api gw_api_openai_embeddings;
extern const gw_client_api gw_api_openai_responses;

/* GET and DELETE /v1/responses/{id} (api_openai_responses.c): status and a body in
 * OpenAI's shape. id is the path's last segment; key_id / admin as in gw_request. */
int gw_responses_get(const char *id, const char *key_id, bool admin, sg_buf *out);
int gw_responses_delete(const char *id, const char *key_id, bool admin, sg_buf *out);
extern const gw_client_api gw_api_ollama_chat;       /* api_ollama.c */
extern const gw_client_api gw_api_ollama_generate;
extern const gw_client_api gw_api_ollama_embed;      /* POST /api/embed */
extern const gw_client_api gw_api_ollama_embeddings; /* POST /api/embeddings (legacy) */
extern const gw_client_api gw_api_ai_gateway_embedding;   /* api_ai_gateway.c */

/* What every embeddings entry shares (api_openai_embeddings.c): its state starts with an
 * emb_request and its renderer with an emb_render (codec_embed.h), set up by the entry's
 * own parse and render_init (which choose the answer's shape). */
void gw_emb_request_free(gw_request *r);
int gw_emb_render_event(gw_render *rs, const gw_event *ev);
int gw_emb_render_end(gw_render *rs);
void gw_emb_render_error(gw_render *rs, const gw_api_error *e);
void gw_emb_render_free(gw_render *rs);

/* Every client API, NULL-terminated. The first also words the errors of the gateway's
 * other endpoints. */
extern const gw_client_api *const gw_client_apis[];

/* The entry serving path, or NULL. */
const gw_client_api *gw_client_api_for_path(const char *path);
/* The entry whose shape path's errors take: the one serving it, else the one whose
 * error_prefix it starts with, else the first. */
const gw_client_api *gw_client_api_for_errors(const char *path);

/* Parses raw into r (r is fully initialised first; gw_request_free it either way). */
int gw_request_parse(gw_request *r, const gw_client_api *api, const char *raw, size_t len, gw_api_error *e);
/* The canonical body, built on first need. */
int gw_request_canonical(gw_request *r, gw_api_error *e);
void gw_request_free(gw_request *r);

#endif
