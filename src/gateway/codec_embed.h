/* codec_embed.h: embeddings on the wire: OpenAI's POST /v1/embeddings (clients and
 * OpenAI-compatible providers) and Gemini's embedContent / batchEmbedContents.
 *
 * Why: an embeddings request is not a chat: it has inputs instead of messages and answers
 * vectors instead of text, so it has its own canonical request (the client's validated
 * OpenAI body) and its answers come as GW_EV_EMBEDDING events (chat.h), one per input,
 * then a USAGE when the provider reports one. All functions are pure: no I/O, no clock.
 *
 * 1. Inbound: emb_parse_request validates an OpenAI embeddings body: model (a string
 *    without control characters), input (a non-empty string, a non-empty array of
 *    non-empty strings, an array of token ids, or an array of token-id arrays; at most
 *    EMB_MAX_INPUTS inputs), encoding_format ("float" | "base64"), dimensions (an
 *    integer 1..EMB_MAX_DIMS), user (a string). Errors are OpenAI's 400s with param and
 *    code. Other members are ignored (not sent upstream).
 * 2. Upstream: emb_build_openai writes the OpenAI-compatible body (model replaced, the
 *    client's encoding_format passed on); emb_build_gemini writes Gemini's body (text
 *    inputs only; dimensions -> outputDimensionality) and says which method
 *    (embedContent for one input, batchEmbedContents for several).
 * 3. Answers: emb_scan_openai reads {"data":[{"index","embedding"}],"usage"}, where an
 *    embedding is an array of numbers or base64 of little-endian float32 (what
 *    encoding_format base64 returns); emb_scan_gemini reads {"embedding":{"values"}} or
 *    {"embeddings":[{"values"}]}. Gemini reports no usage (the caller estimates it). Both
 *    emit EMBEDDING events in input order; a malformed answer (no vectors, an index out
 *    of range or twice, a non-finite value, bad base64) is 1 and no event.
 * 4. Rendering: emb_render_* write OpenAI's {"object":"list","data":[...],"model",
 *    "usage"}, each vector as float numbers (printed so that they read back as the same
 *    float32) or base64 float32, as the client asked; or, after emb_render_shape, the
 *    shapes of Ollama's /api/embed and /api/embeddings and of the AI Gateway protocol's
 *    embedding-model answer (emb_shape). */
#ifndef SG_GATEWAY_CODEC_EMBED_H
#define SG_GATEWAY_CODEC_EMBED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/chat.h"

#define EMB_MAX_INPUTS 2048        /* OpenAI's limit on inputs per request */
#define EMB_MAX_DIMS 65536

typedef struct emb_request {
    json_t *body;                  /* the client's body, validated; owned */
    const char *model;             /* valid while body lives */
    bool base64;                   /* encoding_format "base64" */
    bool has_format;               /* encoding_format was given */
    int64_t dimensions;            /* -1: absent */
    size_t n_inputs;
    bool tokens;                   /* the inputs are token-id arrays */
} emb_request;

int emb_parse_request(const char *body, size_t len, emb_request *out, gw_api_error *e);
/* Validates an OpenAI-shaped body already parsed (what another API's entry builds from its
 * own): takes root whatever the result. */
int emb_check_request(json_t *root, emb_request *out, gw_api_error *e);
void emb_request_free(emb_request *r);

/* The inputs as text, joined by newlines (token arrays add their length to *tokens
 * instead): what the tokenizer counts when a provider reports no usage. */
void emb_input_text(const emb_request *r, sg_buf *out, int64_t *tokens);

void emb_build_openai(const emb_request *r, const char *model, sg_buf *out);
/* 0 with *method "embedContent" or "batchEmbedContents"; -1 with e (400) for token inputs. */
int emb_build_gemini(const emb_request *r, const char *model, sg_buf *out, const char **method, gw_api_error *e);

int emb_scan_openai(const char *body, size_t len, gw_event_fn fn, void *ctx);
int emb_scan_gemini(const char *body, size_t len, gw_event_fn fn, void *ctx);

/* base64 of n little-endian float32 values (standard alphabet, padded). */
void emb_base64_floats(const float *v, size_t n, sg_buf *out);
/* Decodes base64 float32 into a malloc'd array (*n values): 0, or -1 when not base64 or
 * not a whole number of floats. */
int emb_unbase64_floats(const char *s, size_t len, float **v, size_t *n);

/* The answer's shape: which client API asked. */
typedef enum emb_shape {
    EMB_SHAPE_OPENAI,          /* {"object":"list","data":[{"object":"embedding","index","embedding"}],"model","usage"} */
    EMB_SHAPE_OLLAMA,          /* {"model","embeddings":[[...]],"total_duration","load_duration","prompt_eval_count"} */
    EMB_SHAPE_OLLAMA_LEGACY,   /* {"embedding":[...]}: one input */
    EMB_SHAPE_AI_GATEWAY,      /* {"embeddings":[[...]],"usage":{"tokens"},"warnings":[]} */
} emb_shape;

typedef struct emb_render {
    emb_shape shape;
    void (*error_body)(sg_buf *out, const gw_api_error *e);   /* NULL: OpenAI's */
    int64_t elapsed_ns;        /* Ollama's total_duration: set by the caller before render_end */
    sg_buf *out;
    bool base64;
    size_t n_inputs;
    char model[192];
    size_t count;                  /* vectors written */
    int next;                      /* the index the next vector must have */
    gw_usage usage;
    bool have_usage, failed;
    gw_api_error error;
} emb_render;

void emb_render_init(emb_render *r, sg_buf *out, bool base64, size_t n_inputs, const char *model);
/* Another shape than OpenAI's (numbers only), its errors written by error_body. */
void emb_render_shape(emb_render *r, emb_shape shape, void (*error_body)(sg_buf *out, const gw_api_error *e));
int emb_render_event(void *r, const gw_event *ev);
/* The list (200), or the error body (its status; 502 when the answer had fewer or more
 * vectors than inputs). */
int emb_render_end(emb_render *r);
void emb_render_error(emb_render *r, const gw_api_error *e);

#endif
