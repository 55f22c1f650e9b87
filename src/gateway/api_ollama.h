/* api_ollama.h: Ollama's API (POST /api/chat, /api/generate, /api/embed, /api/embeddings
 * and the read-only /api/tags, /api/show, /api/ps, /api/version), spoken on the gateway's
 * own port.
 *
 * Why: Ollama clients (the `ollama` packages, LangChain's ChatOllama, editors and UIs
 * that probe for a local Ollama) then reach every model smolgate serves, local and remote,
 * with the gateway's keys, limits and ledger, as the OpenAI and Anthropic clients do.
 *
 * Contract:
 * 1. Requests: ollama_parse_request turns a /api/chat body (or a /api/generate body:
 *    generate = true) into the canonical request (chat.h): messages (role, content,
 *    tool_calls with object arguments, tool results by tool_name), tools, options
 *    (temperature, top_p, top_k, num_predict -> max_tokens, stop, seed, frequency and
 *    presence penalties; other options are the runner's and are ignored), format ("json" ->
 *    response_format json_object, a schema -> json_schema), think (true or a level ->
 *    the canonical "thinking" extension enabled, false -> disabled), stream (default TRUE,
 *    as Ollama's). What smolgate cannot honour is a 400, not silently dropped: images,
 *    generate's suffix (fill-in-the-middle), raw, template and context. Errors are
 *    Ollama's shape, {"error": "..."}.
 * 2. Answers: ollama_render_* turn canonical events into NDJSON (one JSON object a line,
 *    "done": false, then a last line with "done": true, done_reason, the durations in
 *    nanoseconds and the token counts) or into one object when not streamed; chat answers
 *    carry "message", generate answers "response". Tool calls come whole, in one line,
 *    before the last. A failure after the first line is a line {"error": "..."} (the
 *    ollama client throws on it).
 * 3. Model listings: ollama_model_json writes one model as /api/tags and /api/ps list it.
 * 4. Embeddings (the entries gw_api_ollama_embed and gw_api_ollama_embeddings of api.h):
 *    POST /api/embed {model, input: a string or strings, dimensions, truncate} and the
 *    legacy POST /api/embeddings {model, prompt} are kept as OpenAI embeddings bodies
 *    (codec_embed.h) and served as POST /v1/embeddings is; answers {model, embeddings,
 *    total_duration, load_duration, prompt_eval_count} and {embedding}.
 *
 * Pure functions (no I/O), except that the renderer reads the monotonic clock for the
 * durations it reports. */
#ifndef SG_GATEWAY_API_OLLAMA_H
#define SG_GATEWAY_API_OLLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/chat.h"
#include "gateway/codec_openai.h"

/* The Ollama API version whose shapes smolgate follows (GET /api/version). */
#define OLLAMA_API_VERSION "0.6.4"

/* Parses body into out (out->body owned: json_decref it, or oai_request_free): 0, or -1
 * with e (400) and out->body NULL. out->model points into out->body. */
int ollama_parse_request(const char *body, size_t len, bool generate, oai_request *out, gw_api_error *e);

typedef struct ollama_tool {
    char *name;                /* owned */
    sg_buf args;               /* the arguments' JSON text, as fragments came */
} ollama_tool;

typedef struct ollama_render {
    sg_buf *out;               /* where output is appended (the caller sends and resets it) */
    bool stream, generate;
    char model[192];
    char created_at[40];       /* RFC 3339, UTC */
    uint64_t t0_ns, t_first_ns;   /* monotonic: init, first generated text */
    bool failed, ended, tools_sent;
    char done_reason[24];
    gw_usage usage;
    bool have_usage;
    gw_api_error error;        /* the failure, when failed (non-stream) */
    sg_buf content, thinking;  /* non-stream accumulators */
    ollama_tool *tools;
    size_t n_tools, cap_tools;
} ollama_render;

/* created: unix seconds. model: the name the client asked for. */
void ollama_render_init(ollama_render *r, sg_buf *out, bool generate, bool stream, const char *model, int64_t created);
/* A gw_event_fn: pass the ollama_render as ctx. */
int ollama_render_event(void *r, const gw_event *ev);
/* Stream: pending tool calls and the done line (nothing after an error). Non-stream: the
 * answer object, or the error body after an ERROR event. Returns the HTTP status. */
int ollama_render_end(ollama_render *r);
void ollama_render_error(ollama_render *r, const gw_api_error *e);
void ollama_render_free(ollama_render *r);

/* {"error": message} */
void ollama_error_body(sg_buf *out, const gw_api_error *e);

/* One model as /api/tags lists it: name, model, modified_at, size, digest (stable, from
 * the name), details {format, family, families, parameter_size, quantization_level}.
 * family: who serves it ("local", a provider's name, "route"). */
json_t *ollama_model_json(const char *name, const char *family, int64_t modified);

#endif
