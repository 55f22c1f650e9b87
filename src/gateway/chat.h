/* chat.h: the gateway's provider-neutral view of one chat exchange.
 *
 * Every inbound API (OpenAI chat completions, Anthropic messages) is turned into a
 * canonical request: an OpenAI chat-completions body (jansson json_t), since that is
 * the format most clients and providers speak. Every provider (OpenAI-compatible,
 * Anthropic, Google Gemini, the local engine) answers with a stream of canonical
 * events; the inbound side renders those events in the client's format, streamed (SSE)
 * or assembled into one JSON response. When client and provider speak the same format,
 * the gateway passes the provider's bytes through and only scans them (usage, finish),
 * without re-serialising (the events still come out of the scan for accounting).
 *
 * The canonical request is an OpenAI chat-completions body plus two extensions OpenAI's
 * API lacks, which Anthropic clients send and each provider codec translates or drops:
 * "thinking": {"type": "enabled", "budget_tokens": N} and "top_k". The gateway's own
 * request extensions ("models", "provider") are never in it (oai_parse_request takes them
 * out).
 *
 * Usage is normalised into gw_usage so that every provider's counts mean the same:
 * uncached input, cache reads, cache writes, output (reasoning included) and, of the
 * output, reasoning. Token counts are integers; an unknown count is -1. When a provider
 * reports its prompt count, the cache fields it has no notion of are 0, not unknown
 * (OpenAI and Gemini write no cache); reasoning stays -1 unless broken out. Each codec's
 * header states its provider's arithmetic (codec_openai.h, codec_anthropic.h,
 * codec_gemini.h).
 *
 * Event order from every scanner: START first, then REASONING / TEXT / TOOL_CALL as they
 * come, FINISH at most once, USAGE any number of times (the last is the total), ERROR at
 * most once and nothing after it. Strings in events are valid only during the call. */
#ifndef SG_GATEWAY_CHAT_H
#define SG_GATEWAY_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/buf.h"

typedef struct gw_usage {
    int64_t input;        /* uncached prompt tokens */
    int64_t cache_read;   /* prompt tokens read from the provider's cache */
    int64_t cache_write;  /* prompt tokens written to the cache (Anthropic) */
    int64_t output;       /* completion tokens, reasoning included */
    int64_t reasoning;    /* of output: reasoning ("thinking") tokens */
    bool estimated;       /* counted by smolgate's tokenizer, not reported by the provider */
} gw_usage;

typedef enum gw_event_kind {
    GW_EV_START,          /* a response began: id, model (provider's model name) */
    GW_EV_TEXT,           /* text: content delta */
    GW_EV_REASONING,      /* text: reasoning delta (OpenAI-compatible "reasoning_content") */
    GW_EV_TOOL_CALL,      /* index, id (first fragment only), name (first only), text: arguments fragment */
    GW_EV_FINISH,         /* finish: "stop" | "length" | "tool_calls" | "content_filter";
                             text: the stop sequence that ended it, when the provider says */
    GW_EV_USAGE,          /* usage (cumulative: the latest event wins) */
    GW_EV_ERROR,          /* the provider failed mid-stream: text: message; err_type, status */
    GW_EV_EMBEDDING,      /* an embeddings answer's vector: index (of the input), vec, dims */
} gw_event_kind;

typedef struct gw_event {
    gw_event_kind kind;
    const char *text;     /* not NUL-terminated; len bytes */
    size_t len;
    int index;            /* TOOL_CALL: 0-based ordinal of the call in this response (dense:
                             0, 1, 2... in order of first appearance, whatever the provider
                             numbers its blocks) */
    const char *id;       /* START: response id; TOOL_CALL: call id (NUL-terminated or NULL) */
    const char *name;     /* START: model; TOOL_CALL: function name (NUL-terminated or NULL) */
    const char *finish;   /* FINISH */
    gw_usage usage;       /* USAGE */
    const char *err_type; /* ERROR: provider error type/status ("overloaded_error",
                             "server_error", "UNAVAILABLE"...), NUL-terminated or NULL */
    int status;           /* ERROR: the HTTP status this failure would have had (529 for an
                             Anthropic overload, 500 otherwise); 0 if unknown */
    const float *vec;     /* EMBEDDING: dims float32 values */
    size_t dims;
} gw_event;

/* A consumer of events (the inbound renderer, the usage accountant). Returns 0, or -1
 * to stop (client gone). */
typedef int (*gw_event_fn)(void *ctx, const gw_event *ev);

void gw_usage_init(gw_usage *u);   /* all -1, not estimated */
/* One line describing ev ("TEXT \"hi\"", "USAGE in=3 ..."): for logs and tests. */
void gw_event_format(const gw_event *ev, sg_buf *out);
/* Appends items (stolen) to turns as {"role": role, items_key: items}, merged into the last
 * turn when it has the same role (Anthropic and Gemini both want alternating turns). Empty
 * items are dropped. */
void gw_json_push_turn(json_t *turns, const char *role, const char *items_key, json_t *items);
/* The prompt of a canonical request as a tokenizer would see it: each message's role and
 * text (string content or text parts), earlier tool calls' names and arguments, and the
 * tool definitions (for estimates: cost.h). */
void gw_prompt_text(const json_t *req, sg_buf *out);

/* ---- errors ---------------------------------------------------------------------------
 * One error shape for both directions: what the gateway answers a client with (rendered by
 * oai_error_body / anth_error_body in the client's format) and what a provider answered
 * (filled by gw_classify_error from its status and body). */

typedef struct gw_api_error {
    int  status;          /* HTTP status (400, 429, 529...) */
    char type[64];        /* error type, e.g. "invalid_request_error"; "" = derive from status */
    char code[64];        /* OpenAI "code" (e.g. "context_length_exceeded"); "" = null */
    char param[128];      /* OpenAI "param" (e.g. "messages[0].role"); "" = null */
    char message[512];
    int64_t retry_after_ms; /* a retry delay the body named (Gemini RetryInfo); -1 = none */
} gw_api_error;

/* Fills e (type "" = by status) and returns -1, so a validator reads
 * `return gw_api_fail(err, 400, "invalid_type", "messages", "Invalid type for ...", ...);`.
 * code and param may be NULL. */
int gw_api_fail(gw_api_error *e, int status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Whether s[0..n) holds a control character (below 0x20, 0x7f; NUL included). Names a
 * client sends to be looked up (model, models, provider order/only/ignore) must not: a NUL
 * would end a C string comparison early ("chat\u0000evil" matching route "chat"), and a
 * CR or LF would reach logs and upstream requests. */
bool gw_name_has_control(const char *s, size_t n);

/* The wire format a provider speaks, for error classification. */
typedef enum gw_wire {
    GW_WIRE_OPENAI,       /* OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq...) */
    GW_WIRE_ANTHROPIC,
    GW_WIRE_GEMINI,
} gw_wire;

/* What a failed upstream attempt means for the router. */
typedef enum gw_failure {
    GW_FAIL_RETRYABLE,    /* transient (408, 409, 429 rate limits, 5xx, 529, overloaded,
                             UNAVAILABLE): retry with backoff, or fall back to the next target */
    GW_FAIL_CLIENT,       /* the request itself is wrong (400, 401, 403, 404, 413, 422): relay
                             the error to the client, no fallback */
    GW_FAIL_QUOTA,        /* the account's quota or spend limit is exhausted (OpenAI
                             insufficient_quota, Anthropic enforced_spend_limit_reached, low
                             credit balance, Gemini per-day quota): no retry, no fallback */
    GW_FAIL_CONTEXT,      /* the prompt exceeds this model's context window: fall back to a
                             target with a larger window */
} gw_failure;

/* Classifies an upstream failure from its HTTP status (0 for an error that arrived inside a
 * 200 stream) and its body (the whole error body, or the in-stream error payload; may be
 * NULL or not JSON). Fills out (if not NULL) with the provider's message, type, code and
 * status, ready to relay. */
gw_failure gw_classify_error(gw_wire wire, int status, const char *body, size_t len, gw_api_error *out);
const char *gw_failure_name(gw_failure f);   /* "retryable", "client", "quota", "context" */

/* The error type a client of `wire` expects for an HTTP status: 400 invalid_request_error,
 * 401 authentication_error, 403 permission_error, 404 not_found_error, 413
 * request_too_large, 429 rate_limit_error, 529 overloaded_error, other 5xx api_error
 * (Anthropic) or server_error (OpenAI). */
const char *gw_error_type_for_status(gw_wire wire, int status);

/* Normalised finish reasons from the providers' own. */
const char *gw_finish_from_anthropic(const char *stop_reason);  /* end_turn -> "stop"... */
const char *gw_finish_from_gemini(const char *finish_reason);   /* MAX_TOKENS -> "length"... */
const char *gw_finish_to_anthropic(const char *finish);         /* "tool_calls" -> "tool_use"... */

#endif
