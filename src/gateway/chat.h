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
 * Usage is normalised into gw_usage so that every provider's counts mean the same:
 * uncached input, cache reads, cache writes, output (reasoning included) and, of the
 * output, reasoning. Token counts are integers; an unknown count is -1. */
#ifndef SG_GATEWAY_CHAT_H
#define SG_GATEWAY_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    GW_EV_FINISH,         /* finish: "stop" | "length" | "tool_calls" | "content_filter" */
    GW_EV_USAGE,          /* usage (cumulative: the latest event wins) */
    GW_EV_ERROR,          /* the provider failed mid-stream: text: message */
} gw_event_kind;

typedef struct gw_event {
    gw_event_kind kind;
    const char *text;     /* not NUL-terminated; len bytes */
    size_t len;
    int index;            /* tool call index */
    const char *id;       /* START: response id; TOOL_CALL: call id (NUL-terminated or NULL) */
    const char *name;     /* START: model; TOOL_CALL: function name (NUL-terminated or NULL) */
    const char *finish;   /* FINISH */
    gw_usage usage;       /* USAGE */
} gw_event;

/* A consumer of events (the inbound renderer, the usage accountant). Returns 0, or -1
 * to stop (client gone). */
typedef int (*gw_event_fn)(void *ctx, const gw_event *ev);

void gw_usage_init(gw_usage *u);   /* all -1, not estimated */

#endif
