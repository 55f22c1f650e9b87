/* codec_gemini.h: Google Gemini's generateContent API on the wire (the provider side).
 *
 * Why: Gemini is one of the providers a route can fall back to; no client speaks Gemini
 * to smolgate, so this codec only translates canonical requests out and Gemini responses
 * back into canonical events. All functions are pure (tool-call ids come from a seed the
 * caller passes, so the output is reproducible).
 *
 * Contract:
 * - gem_build_request: canonical request -> generateContent body. system/developer
 *   messages -> systemInstruction; user -> role "user", assistant -> role "model";
 *   text parts, images (data: URLs -> inlineData, http(s) URLs -> fileData with a MIME type
 *   guessed from the extension), audio -> inlineData; assistant tool_calls -> functionCall
 *   parts (arguments parsed back to objects); tool messages -> functionResponse parts (the
 *   function name found from the earlier call's id; a JSON-object result is the response,
 *   anything else is wrapped as {"result": ...}); consecutive same-role turns merged.
 *   generationConfig: temperature, topP, topK, maxOutputTokens, stopSequences, seed,
 *   presence/frequency penalties, responseMimeType "application/json" (+ responseJsonSchema)
 *   for response_format, thinkingConfig from the canonical "thinking" extension or
 *   reasoning_effort. tools -> [{functionDeclarations: [{name, description,
 *   parametersJsonSchema}]}]; tool_choice -> toolConfig.functionCallingConfig (AUTO, ANY,
 *   NONE, ANY + allowedFunctionNames).
 * - gem_url_path: "/v1beta/models/MODEL:generateContent" or
 *   "...:streamGenerateContent?alt=sse" (the model name is checked: no path tricks).
 * - gem_scan_*: a GenerateContentResponse (whole, or one per SSE `data:` in a stream) ->
 *   START (responseId, modelVersion), REASONING (parts with "thought": true), TEXT,
 *   TOOL_CALL (Gemini sends each call whole: one event with the whole arguments and an id,
 *   Gemini's own or "call_" + 24 hex digits from the seed), FINISH (STOP -> "stop", or
 *   "tool_calls" when the response called tools; MAX_TOKENS -> "length"; SAFETY,
 *   RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII... -> "content_filter"; a prompt
 *   blocked by promptFeedback -> "content_filter"), USAGE when usageMetadata changes.
 *   Usage: promptTokenCount INCLUDES cachedContentTokenCount, candidatesTokenCount EXCLUDES
 *   thoughtsTokenCount, so input = prompt - cached + toolUsePrompt, cache_read = cached,
 *   cache_write = 0, output = candidates + thoughts, reasoning = thoughts (absent fields are
 *   zero: proto3 JSON omits them). Error objects (also the one-element array form) ->
 *   ERROR. Classification of Gemini error bodies is gw_classify_error(GW_WIRE_GEMINI, ...)
 *   in chat.h (RESOURCE_EXHAUSTED and UNAVAILABLE retryable, a per-day quota is quota,
 *   RetryInfo's retryDelay becomes retry_after_ms). */
#ifndef SG_GATEWAY_CODEC_GEMINI_H
#define SG_GATEWAY_CODEC_GEMINI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/chat.h"

/* 0 and the body appended to out, or -1 with err (400: a request Gemini cannot express). */
int gem_build_request(const json_t *req, sg_buf *out, gw_api_error *err);

/* Appends the request path for model ("gemini-2.5-flash" or "models/gemini-2.5-flash").
 * api_version NULL means "v1beta". 0, or -1 with err for a model name that is not
 * [A-Za-z0-9._-]+. */
int gem_url_path(sg_buf *out, const char *api_version, const char *model, bool stream, gw_api_error *err);

enum {
    GEM_SCAN_ERROR = 1,        /* an error object or a malformed chunk: an ERROR was emitted */
    GEM_SCAN_SKIP = 2,         /* nothing to do (blank, or after the end or an error) */
};

typedef struct gem_scan {
    bool started, finished, failed;
    int n_tools;
    uint64_t rng;              /* xorshift state for generated tool-call ids */
    gw_usage last_usage;       /* the last USAGE emitted (to skip repeats) */
    bool have_usage;
} gem_scan;

void gem_scan_init(gem_scan *s, uint64_t seed);
/* One GenerateContentResponse (an SSE data payload). Returns GEM_SCAN_* flags (>= 0), or -1
 * if fn returned non-zero. */
int gem_scan_chunk(gem_scan *s, const char *data, size_t len, gw_event_fn fn, void *ctx);
/* The stream ended: ERROR ("upstream stream ended early") and 1 if no finishReason came;
 * 0 if complete; -1 if fn stopped. */
int gem_scan_end(gem_scan *s, gw_event_fn fn, void *ctx);
/* A whole generateContent response. 0; 1 if an error or malformed (ERROR emitted); -1. */
int gem_scan_response(const char *body, size_t len, uint64_t seed, gw_event_fn fn, void *ctx);

#endif
