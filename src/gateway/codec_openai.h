/* codec_openai.h: OpenAI chat completions on the wire, both ways.
 *
 * Why: OpenAI's format is the gateway's canonical request (see chat.h) and the one most
 * clients and providers speak, so this codec sits on the hot path twice: it validates
 * every inbound /v1/chat/completions body, and, when the upstream is OpenAI-compatible
 * too, it scans the upstream's bytes for events (usage, finish) while the caller passes
 * those bytes through unchanged. The scanner is a small zero-allocation JSON reader (no
 * jansson tree per chunk); the renderer writes JSON by hand. All functions are pure: no
 * I/O, no clock, no randomness.
 *
 * Contract, in four parts:
 * 1. Inbound requests: oai_parse_request validates a client's body enough to route it and
 *    answers precise OpenAI-shaped errors (400, type invalid_request_error, with param and
 *    code). The gateway's extensions "models" (fallback list) and "provider" ({order,
 *    only, ignore}) are taken out of the body, so the canonical request never carries them.
 *    n > 1 is refused (param "n", code "unsupported_value"): the event model has one choice.
 * 2. Upstream requests: oai_build_upstream serialises a canonical request for an
 *    OpenAI-compatible server with the target's model name.
 * 3. Upstream responses: oai_scan_* turn a chat.completion body, or each `data:` payload of
 *    a chat.completion.chunk stream, into canonical events (chat.h). For an OpenAI client
 *    the caller forwards each payload as it came (sse_write(out, NULL, data, len)) unless
 *    the flags say SKIP, or USAGE_ONLY and the client did not ask for usage, or ERROR on a
 *    malformed chunk (then it renders the error instead); the events only feed the
 *    accounting. Usage is normalised:
 *    OpenAI's prompt_tokens includes prompt_tokens_details.cached_tokens, so input =
 *    prompt - cached and cache_read = cached (cache_write = 0: OpenAI charges none);
 *    completion_tokens includes completion_tokens_details.reasoning_tokens (reasoning = -1
 *    when the details are absent). DeepSeek's prompt_cache_hit_tokens counts as cached.
 * 4. Rendering for OpenAI clients: oai_render_* turn canonical events into one
 *    chat.completion or into chunk SSE (role chunk, deltas, finish chunk, usage chunk with
 *    empty choices when include_usage, `data: [DONE]`). A failure after the first byte is
 *    `data: {"error":{...}}` and no [DONE]: the official openai SDK throws APIError on a
 *    chunk with an "error" key, so the client sees an error, never a clean end. */
#ifndef SG_GATEWAY_CODEC_OPENAI_H
#define SG_GATEWAY_CODEC_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/chat.h"

/* ---- 1. inbound requests ------------------------------------------------------------- */

#define OAI_MAX_MODELS 16      /* entries in "models" and in each provider list */

typedef struct oai_request {
    json_t *body;              /* the canonical request: the client's JSON without "models" and
                                  "provider"; owned */
    const char *model;         /* "model", else models[0]; valid while the request lives */
    bool stream;
    bool include_usage;        /* stream_options.include_usage */
    int64_t max_tokens;        /* max_completion_tokens, else max_tokens; -1 when absent */
    bool has_tools;
    size_t n_models;           /* "models": the client's fallback list, in order */
    const char *models[OAI_MAX_MODELS];
    size_t n_order, n_only, n_ignore;   /* "provider" preferences: provider names */
    const char *order[OAI_MAX_MODELS];
    const char *only[OAI_MAX_MODELS];
    const char *ignore[OAI_MAX_MODELS];
    json_t *ext;               /* keeps the stripped extensions' strings alive; owned */
} oai_request;

/* Parses and validates body. On success fills out (free with oai_request_free) and returns
 * 0; on failure returns -1 with err filled (status 400, message/param/code as OpenAI words
 * them) and out left empty. Invalid JSON, and invalid UTF-8 or a \u0000 escape (which
 * jansson refuses), are "could not parse the JSON body" errors; a model, models or
 * provider order/only/ignore name with a control character is an invalid_value error. */
int oai_parse_request(const char *body, size_t len, oai_request *out, gw_api_error *err);
void oai_request_free(oai_request *r);

/* Validates a canonical request already parsed (what oai_parse_request checks, minus the
 * extensions). */
int oai_validate_request(const json_t *req, gw_api_error *err);

/* ---- 1b. the pass-through fast path ------------------------------------------------- */

/* When the first target speaks OpenAI too, the gateway need not build a jansson tree for
 * the request at all: oai_peek_request reads the routing fields with the zero-allocation
 * reader (~10x cheaper than oai_parse_request), and oai_splice_upstream writes the
 * upstream body by copying the client's bytes member by member. The fast path never
 * answers errors itself: it returns 1 ("decline") for anything it cannot vouch for
 * (invalid JSON or UTF-8, a routing field of the wrong type or range, a routing name with
 * a control character or NUL, a duplicated routing key, an empty or malformed messages
 * array, more members than it tracks...), and the
 * caller then runs oai_parse_request, the single source of error messages. It checks
 * messages down to each message's role, content type and tool_call_id; deeper fields
 * (content parts, tools' schemas, tool_choice, response_format, stop...) are left to the
 * OpenAI-compatible upstream, which answers its own 400 in the same shape. A route that
 * falls back to another wire format calls oai_parse_request then (lazily). */

#define OAI_PEEK_MAX_MEMBERS 48   /* top-level members tracked */
#define OAI_PEEK_MAX_SO 8         /* stream_options members kept */

typedef struct oai_peek {
    const char *model;         /* "model", else models[0]; NUL-terminated, in strs */
    bool stream;
    bool include_usage;
    bool has_tools;
    int64_t max_tokens;        /* max_completion_tokens, else max_tokens; -1 absent */
    size_t n_models, n_order, n_only, n_ignore;
    const char *models[OAI_MAX_MODELS];
    const char *order[OAI_MAX_MODELS];
    const char *only[OAI_MAX_MODELS];
    const char *ignore[OAI_MAX_MODELS];
    /* private: where each top-level member sits in the body (key to end of value) */
    uint32_t n_members;
    struct { uint32_t start, end; uint8_t what; } members[OAI_PEEK_MAX_MEMBERS];
    uint32_t n_so;
    struct { uint32_t start, end; } so[OAI_PEEK_MAX_SO];
    size_t strs_len;
    char strs[2048];
} oai_peek;

/* 0: the request is fine for the fast path and out is filled; 1: use oai_parse_request. */
int oai_peek_request(const char *body, size_t len, oai_peek *out);
/* Appends what oai_build_upstream would for the same request (same members and values;
 * "model" and "stream" first, the other members in the client's order and bytes). body
 * is the one given to oai_peek_request. */
void oai_splice_upstream(const char *body, const oai_peek *pk, const char *model, bool stream, unsigned flags,
                         sg_buf *out);

/* ---- 2. upstream requests ------------------------------------------------------------ */

#define OAI_UP_KEEP_EXTENSIONS 1u  /* keep "top_k" (vLLM, Ollama and llama.cpp take it) */

/* Appends the body for an OpenAI-compatible upstream: req with "model" set to model and
 * "stream" to stream; when streaming, stream_options.include_usage is forced on (the
 * gateway needs the usage; oai_scan_chunk flags the usage-only chunk so that the caller can
 * hold it back from a client that did not ask for it). The canonical extensions that
 * api.openai.com would refuse ("thinking", and "top_k" unless OAI_UP_KEEP_EXTENSIONS) are
 * left out. */
void oai_build_upstream(const json_t *req, const char *model, bool stream, unsigned flags, sg_buf *out);

/* ---- 3. upstream responses ----------------------------------------------------------- */

/* Flags oai_scan_chunk returns (a payload can carry several). */
enum {
    OAI_CHUNK_DONE = 1,        /* the `[DONE]` sentinel */
    OAI_CHUNK_USAGE_ONLY = 2,  /* "choices": [] with a usage object (the include_usage chunk) */
    OAI_CHUNK_ERROR = 4,       /* an {"error":...} chunk, or a malformed one: an ERROR event
                                  was emitted; the caller ends the stream with an error */
    OAI_CHUNK_SKIP = 8,        /* nothing to forward: blank payload, or after [DONE]/error */
};

typedef struct oai_tool_slot {
    int  provider_index;       /* the upstream's "index" */
    char *id;                  /* the upstream's call id (to tell calls apart); owned */
} oai_tool_slot;

/* Stream scan state: a few flags, id/model copies and reusable buffers, so that scanning
 * allocates nothing per chunk once warm. Fields are private. */
typedef struct oai_scan {
    bool started, finished, done, failed, usage_seen;
    sg_buf scratch;            /* decoded strings of the current chunk */
    sg_buf id, model;          /* from the first chunk, for START */
    void *frags;               /* tool-call fragments of the current chunk */
    size_t n_frags, cap_frags;
    oai_tool_slot *tools;      /* provider index -> dense ordinal (position in the array) */
    size_t n_tools, cap_tools;
} oai_scan;

void oai_scan_init(oai_scan *s);
void oai_scan_free(oai_scan *s);
/* Scans one SSE data payload (without the `data: ` prefix) and calls fn for each event in
 * it: START (first chunk), REASONING ("reasoning_content" or "reasoning"), TEXT
 * ("content", and "refusal"), TOOL_CALL fragments (dense ordinals; id and name on the first
 * fragment of each call), FINISH (once), USAGE. Only choice 0 is read. Returns the
 * OAI_CHUNK_* flags (>= 0), or -1 if fn returned non-zero. */
int oai_scan_chunk(oai_scan *s, const char *data, size_t len, gw_event_fn fn, void *ctx);
/* The upstream's stream ended. If it ended before any finish_reason or [DONE], emits an
 * ERROR event ("upstream stream ended early") and returns 1; 0 if it was complete; -1 if fn
 * stopped. */
int oai_scan_end(oai_scan *s, gw_event_fn fn, void *ctx);
/* A whole (non-streamed) chat.completion body: START, REASONING, TEXT, one TOOL_CALL per
 * call with its whole arguments, FINISH, USAGE. Returns 0; 1 when the body was an error
 * object or malformed (an ERROR event was emitted); -1 if fn stopped. */
int oai_scan_response(const char *body, size_t len, gw_event_fn fn, void *ctx);

/* ---- 4. rendering for OpenAI clients -------------------------------------------------- */

typedef struct oai_render_tool {
    char *id, *name;           /* owned */
    sg_buf args;
    int canon_index;
} oai_render_tool;

typedef struct oai_render {
    sg_buf *out;               /* where output is appended (the caller sends and resets it) */
    bool stream, include_usage;
    char id[128], model[192];
    int64_t created;           /* unix seconds */
    bool head_sent, finish_sent, ended, failed;
    char finish[24];
    gw_usage usage;
    bool have_usage;
    gw_api_error error;        /* the failure, when failed */
    sg_buf prefix;             /* stream: the chunk prefix up to "choices" */
    sg_buf content, reasoning; /* non-stream accumulators */
    oai_render_tool *tools;
    size_t n_tools, cap_tools;
} oai_render;

/* id and model: what the client is shown (NULL: the START event's). created: unix time. */
void oai_render_init(oai_render *r, sg_buf *out, bool stream, bool include_usage, const char *id,
                     const char *model, int64_t created);
/* A gw_event_fn: pass the oai_render as ctx. Streaming output is appended to out as the
 * events come; an ERROR event renders the in-stream error and ends the stream. */
int oai_render_event(void *r, const gw_event *ev);
/* The end. Stream: the finish chunk if none came (finish_reason "stop"), the usage chunk
 * (include_usage and a usage known), `data: [DONE]`; nothing after an error. Non-stream:
 * the chat.completion JSON, or the error body after an ERROR event. Returns the HTTP
 * status for a non-stream answer (200, or the error's), 200 for a stream. */
int oai_render_end(oai_render *r);
/* A failure after the first byte (stream: `data: {"error":...}`, ends the stream);
 * non-stream: remembered for oai_render_end. */
void oai_render_error(oai_render *r, const gw_api_error *e);
void oai_render_free(oai_render *r);

/* ---- errors --------------------------------------------------------------------------- */

/* {"error":{"message","type","param","code"}}; type "" becomes the type for e->status. */
void oai_error_body(sg_buf *out, const gw_api_error *e);

#endif
