/* sse.h: Server-Sent Events, read incrementally and written.
 *
 * Why: every streaming provider (OpenAI, Anthropic, Gemini with alt=sse) answers in SSE,
 * and bytes arrive from the network in arbitrary pieces. The parser is fed whatever
 * arrived and calls back once per complete event, so the codecs above it only ever see
 * whole events.
 *
 * Contract (the WHATWG event-stream rules, as the official OpenAI and Anthropic SDKs read
 * them):
 * - Lines end in CRLF, LF or CR, and may be split anywhere between feeds (a CR at the end
 *   of one feed and an LF at the start of the next are one line end). A UTF-8 BOM at the
 *   very start is skipped.
 * - `event: NAME` sets the event name; `data: X` lines are joined with "\n"; one space
 *   after the colon is dropped; a line without a colon is a field with an empty value;
 *   `:` comments, `id:`, `retry:` and unknown fields are ignored.
 * - A blank line dispatches the event if it had a data or an event line (as the SDKs do;
 *   the spec alone would drop an event without data). The callback gets the name ("" when
 *   none; name is NUL-terminated) and the data (data[len] is NUL). Both are valid only
 *   during the call.
 * - Buffering is bounded: a line or an event larger than max_event bytes fails the feed
 *   ("SSE line larger than N bytes", too_large set), as soon as the bytes buffered for it
 *   would cross the bound: a line that never ends costs max_event bytes, no more.
 * - After a failure (limit, or the callback returning non-zero) every later feed fails.
 * No allocation per event once the buffers have grown to the largest event seen. */
#ifndef SG_GATEWAY_SSE_H
#define SG_GATEWAY_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/error.h"

#define SSE_DEFAULT_MAX_EVENT (8u << 20)   /* 8 MiB */

/* Returns 0 to go on, non-zero to stop parsing (sse_feed then fails with that reason). */
typedef int (*sse_event_fn)(void *ctx, const char *event, const char *data, size_t len);

typedef struct sse_parser {
    sse_event_fn fn;
    void *ctx;
    size_t max_event;   /* bytes: longest line, and longest event (name + data) */
    sg_buf line;        /* a line split across feeds */
    sg_buf event;       /* event name of the event being read */
    sg_buf data;        /* data lines joined with \n */
    bool has_data;      /* a data line was seen (data may still be empty) */
    bool has_event;     /* an event line was seen */
    bool cr_pending;    /* the last feed ended with CR: skip a leading LF next time */
    bool started;       /* past the optional BOM */
    bool failed;
    bool too_large;     /* the failure was a line or an event over max_event */
    size_t bom_seen;    /* bytes of a BOM prefix seen so far (split BOM) */
} sse_parser;

void sse_init(sse_parser *p, size_t max_event, sse_event_fn fn, void *ctx);
void sse_free(sse_parser *p);
/* Feeds n bytes. 0, or -1 with err set (event too large, callback stopped, earlier
 * failure). */
int sse_feed(sse_parser *p, const void *bytes, size_t n, sg_error *err);
/* The stream ended. Returns 0 if it ended on an event boundary, 1 if a partial event was
 * pending and discarded (a truncated stream: the caller decides what that means), -1 if
 * the parser had failed. Does not dispatch the partial event (the spec and the SDKs drop
 * it too). */
int sse_finish(sse_parser *p);

/* Appends one event: `event: NAME\n` (when name is not NULL), a `data: ` line per line of
 * data, and the blank line. */
void sse_write(sg_buf *out, const char *name, const char *data, size_t len);

#endif
