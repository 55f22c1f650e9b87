/* codec_anthropic.h: Anthropic's Messages API on the wire, both ways.
 *
 * Why: Anthropic SDK users point at smolgate's /v1/messages, and Anthropic is one of the
 * providers. This codec translates between the Messages format and the canonical request
 * and events of chat.h. All functions are pure (no I/O, no clock).
 *
 * Contract, in four parts:
 * 1. Inbound: anth_parse_request validates an Anthropic Messages body and converts it to
 *    the canonical (OpenAI-shaped) request: system (string or text blocks) becomes a
 *    system message; content blocks map to OpenAI parts (image -> image_url with a data:
 *    URL, or the URL itself; base64 PDF document -> file part); tool_use blocks become
 *    assistant tool_calls (input serialised as arguments); tool_result blocks become "tool"
 *    messages (placed before the rest of their user message; images inside a tool result
 *    move to that user message, since OpenAI tool messages carry text only); thinking
 *    blocks are dropped. stop_sequences -> stop, tools {name, description, input_schema} ->
 *    function tools, tool_choice auto/any/tool/none -> auto/required/{function}/none,
 *    disable_parallel_tool_use -> parallel_tool_calls false, metadata.user_id -> user;
 *    top_k and thinking {type, budget_tokens} stay as canonical extensions. Errors are
 *    Anthropic-shaped: 400 invalid_request_error, message "path: problem".
 * 2. Outbound: anth_build_upstream turns a canonical request into a Messages body: system
 *    and developer messages into "system"; consecutive same-role messages merged; tool
 *    messages into user tool_result blocks; assistant tool_calls into tool_use blocks (the
 *    arguments parsed back to an object: invalid JSON is a 400); max_tokens defaulted
 *    (Anthropic requires it); stop -> stop_sequences; temperature clamped to [0, 1];
 *    response_format json_object / json_schema, which Messages lacks, becomes an
 *    instruction appended to the system prompt (with the schema); n, seed, logprobs,
 *    penalties and logit_bias are dropped.
 * 3. Upstream responses: anth_scan_* turn a Message body, or each SSE event of a stream,
 *    into canonical events. Usage: Anthropic's input_tokens EXCLUDES the cache fields, so
 *    input = input_tokens, cache_read = cache_read_input_tokens, cache_write =
 *    cache_creation_input_tokens, output = output_tokens (reasoning =
 *    output_tokens_details.thinking_tokens when given, else -1). In a stream the counts in
 *    message_delta are CUMULATIVE and override message_start's field by field. stop_reason:
 *    end_turn/stop_sequence/pause_turn -> stop, max_tokens -> length, tool_use ->
 *    tool_calls, refusal -> content_filter. Tool calls get dense ordinals whatever block
 *    index they had.
 * 4. Rendering for Anthropic clients: anth_render_* write one Message or the SSE sequence
 *    the official @anthropic-ai/sdk accumulates: message_start (a full message with empty
 *    content and usage), then per block content_block_start / content_block_delta
 *    (text_delta, thinking_delta, input_json_delta) / content_block_stop with indices
 *    0, 1, 2..., then message_delta (stop_reason, cumulative usage) and message_stop. A
 *    failure after the first byte is `event: error` (the SDK throws APIError on it). */
#ifndef SG_GATEWAY_CODEC_ANTHROPIC_H
#define SG_GATEWAY_CODEC_ANTHROPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/chat.h"

/* ---- 1. inbound requests ------------------------------------------------------------- */

typedef struct anth_request {
    json_t *body;              /* the canonical (OpenAI-shaped) request; owned */
    const char *model;         /* valid while the request lives */
    bool stream;
    int64_t max_tokens;
} anth_request;

/* 0 and out filled (free with anth_request_free), or -1 with err (status 400; among
 * others for a model name with a control character, or any \u0000 escape). */
int anth_parse_request(const char *body, size_t len, anth_request *out, gw_api_error *err);
void anth_request_free(anth_request *r);

/* ---- 2. upstream requests ------------------------------------------------------------ */

#define ANTH_DEFAULT_MAX_TOKENS 4096

/* Appends the Messages body for model. default_max_tokens (<= 0: ANTH_DEFAULT_MAX_TOKENS)
 * applies when the request sets no max_tokens / max_completion_tokens. 0, or -1 with err
 * (a request Anthropic cannot express: audio input, unparsable tool arguments...). */
int anth_build_upstream(const json_t *req, const char *model, bool stream, int64_t default_max_tokens,
                        sg_buf *out, gw_api_error *err);

/* ---- 3. upstream responses ----------------------------------------------------------- */

enum {
    ANTH_SCAN_STOP = 1,        /* message_stop: the stream is complete */
    ANTH_SCAN_ERROR = 2,       /* an error event, or a malformed one: an ERROR was emitted */
    ANTH_SCAN_SKIP = 4,        /* nothing of interest (ping, unknown event, after the end) */
};

typedef struct anth_scan {
    bool started, finished, stopped, failed;
    gw_usage usage;            /* accumulated: message_start, then message_delta overrides */
    int *block_tool;           /* block index -> tool ordinal, or -1 (not a tool_use block) */
    size_t n_blocks;
    int n_tools;
} anth_scan;

void anth_scan_init(anth_scan *s);
void anth_scan_free(anth_scan *s);
/* One SSE event (its name may be "", the data's "type" decides). Returns ANTH_SCAN_* flags
 * (>= 0), or -1 if fn returned non-zero. */
int anth_scan_event(anth_scan *s, const char *event, const char *data, size_t len, gw_event_fn fn, void *ctx);
/* The stream ended: an ERROR ("upstream stream ended early") and 1 if neither message_stop
 * nor a stop_reason came; 0 if complete; -1 if fn stopped. */
int anth_scan_end(anth_scan *s, gw_event_fn fn, void *ctx);
/* A whole Message body. 0; 1 if it was an error or malformed (ERROR emitted); -1 stopped. */
int anth_scan_response(const char *body, size_t len, gw_event_fn fn, void *ctx);

/* ---- 4. rendering for Anthropic clients ----------------------------------------------- */

typedef enum anth_block_kind { ANTH_BLOCK_TEXT, ANTH_BLOCK_THINKING, ANTH_BLOCK_TOOL } anth_block_kind;

typedef struct anth_render_block {
    anth_block_kind kind;
    int canon_index;           /* TOOL: the event's index */
    char *id, *name;           /* TOOL; owned */
    sg_buf text;               /* non-stream: text, thinking or arguments */
} anth_render_block;

typedef struct anth_render {
    sg_buf *out;
    bool stream;
    char id[128], model[192];
    bool start_sent, open, ended, failed, have_finish;
    char finish[24];
    char stop_sequence[256];   /* the stop sequence that ended the answer, "" if none */
    gw_usage usage;
    gw_api_error error;
    anth_render_block *blocks; /* in order; the last is the open one when open */
    size_t n_blocks, cap_blocks;
} anth_render;

/* id, model: what the client sees (NULL: from START). */
void anth_render_init(anth_render *r, sg_buf *out, bool stream, const char *id, const char *model);
/* A gw_event_fn (ctx: the anth_render). In a stream, message_start is written at the first
 * content event (so that a usage from the provider's own start can go in it). */
int anth_render_event(void *r, const gw_event *ev);
/* The end: stream: open block closed, message_delta, message_stop (nothing after an
 * error). Non-stream: the Message JSON or the error body. Returns the HTTP status for a
 * non-stream answer, 200 for a stream. */
int anth_render_end(anth_render *r);
void anth_render_error(anth_render *r, const gw_api_error *e);
void anth_render_free(anth_render *r);

/* ---- errors --------------------------------------------------------------------------- */

/* {"type":"error","error":{"type","message"}}; a type Anthropic does not define becomes
 * the one for e->status. */
void anth_error_body(sg_buf *out, const gw_api_error *e);

#endif
