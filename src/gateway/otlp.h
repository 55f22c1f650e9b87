/* otlp.h: request traces out, as OpenTelemetry spans over OTLP/HTTP (JSON or protobuf).
 *
 * Why: the ledger says what a request cost; a trace says what happened to it (which
 * targets were tried, why the next one was, how long each took) in whatever tracing
 * back end the operator already runs (Jaeger, Tempo, Honeycomb, an OpenTelemetry
 * Collector...).
 *
 * What a request becomes: one trace (or a part of the caller's, when the request carried
 * a W3C `traceparent`), with a root span "chat {model}" (SpanKind SERVER) and one child
 * per attempt "chat {upstream model}" (SpanKind CLIENT), with OpenTelemetry's GenAI
 * semantic-convention attributes (gen_ai.operation.name, gen_ai.request.model,
 * gen_ai.response.model, gen_ai.provider.name, gen_ai.usage.input_tokens/output_tokens),
 * http.response.status_code, error.type and smolgate.* ones (key id, route, cost, outcome,
 * retry reason). docs/gateway.md lists them.
 *
 * Propagation: each attempt sent to a remote provider carries a W3C traceparent naming
 * its attempt span (otlp_attempt_traceparent), so the provider's own spans join the trace.
 *
 * How it stays off the request path: otlp_submit() (the loop thread) copies the finished
 * request's record (the ledger's, ledger.h) into a bounded queue under a mutex: one
 * allocation, no I/O, no encoding. A background thread takes up to batch_max records
 * every flush_ms (sooner when a batch is full), encodes them (protobuf or JSON, written
 * straight into one reused buffer) and POSTs them to {endpoint}/v1/traces with libcurl;
 * 429 / 5xx / no answer is retried with backoff, at most max_retries times, then the
 * batch is dropped. A full queue drops the new record (counted, see otlp_stats), so a
 * slow or dead receiver costs the gateway a bounded amount of memory and nothing else.
 *
 * Secrets: header values (authorization tokens) are sent, never logged; the endpoint is
 * logged without user:password@ and its query string.
 *
 * Threads: otlp_begin, otlp_attempt_traceparent (on its own ids), otlp_submit and
 * otlp_get_stats from any thread; otlp_open/otlp_close from one owner. */
#ifndef SG_GATEWAY_OTLP_H
#define SG_GATEWAY_OTLP_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "gateway/config.h"
#include "gateway/ledger.h"

/* A W3C trace context (traceparent: 00-{32 hex}-{16 hex}-{2 hex}). */
typedef struct otlp_context {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;            /* bit 0: sampled */
} otlp_context;

/* Parses a traceparent header value. 0 and *out on a valid one; -1 for anything else
 * (wrong length or version ff, non-hex or upper-case hex, all-zero ids): the request is
 * then traced as a new trace, as the W3C spec asks. */
int otlp_parse_traceparent(const char *s, otlp_context *out);

/* The ids of one request's spans, made when it arrives (otlp_begin) and when each attempt
 * starts (otlp_attempt_traceparent), so that the upstream can be told its parent. */
typedef struct otlp_ids {
    uint8_t trace_id[16];
    uint8_t root_id[8];
    uint8_t parent_id[8];     /* the caller's span (traceparent); zeros: a root of its own */
    bool has_parent;
    bool sampled;             /* exported; the flag sent upstream */
    uint8_t att_ids[LEDGER_MAX_ATTEMPTS][8];   /* zeros: not made yet (otlp_submit makes them) */
} otlp_ids;

/* One ExportTraceServiceRequest (OTLP JSON) with r's spans, appended to out: for tests
 * and the exporter. op is gen_ai.operation.name ("chat", "embeddings"). */
void otlp_record_json(const ledger_record *r, const char *op, const otlp_ids *ids, const char *service_name, sg_buf *out);

/* The same document in OTLP's protobuf encoding (ExportTraceServiceRequest), written by
 * hand: no library, no tree. */
void otlp_record_protobuf(const ledger_record *r, const char *op, const otlp_ids *ids, const char *service_name,
                          sg_buf *out);

typedef enum otlp_protocol { OTLP_JSON, OTLP_PROTOBUF } otlp_protocol;

typedef struct otlp_opts {
    const char *endpoint;     /* base URL; spans go to {endpoint}/v1/traces (an endpoint
                                 already ending in /v1/traces is used as it is) */
    const gw_header *headers; /* sent with every export (auth); values are secrets */
    size_t n_headers;
    const char *service_name; /* resource service.name; default "smolgate" */
    double sample_ratio;      /* 0..1 of new traces kept; a traceparent's sampled flag wins */
    uint32_t batch_max;       /* records per export; default 256 */
    uint32_t queue_max;       /* records waiting; default 4096 (then dropped, counted) */
    uint32_t flush_ms;        /* export at least this often while records wait; 1000 */
    uint32_t timeout_ms;      /* one export POST; default 5000 */
    uint32_t max_retries;     /* per batch on 429/5xx/no answer; default 3 */
    otlp_protocol protocol;   /* OTLP_JSON (0) or OTLP_PROTOBUF (the configuration's default) */
} otlp_opts;

void otlp_opts_from_config(otlp_opts *o, const gw_config *cfg);

typedef struct otlp otlp;

/* Starts the exporter thread. NULL with err when it cannot start (no thread). */
otlp *otlp_open(const otlp_opts *o, sg_error *err);

/* A request's trace, as it arrives: the caller's trace (parent: its valid traceparent, or
 * NULL) or a new one, a root span id, and whether it is sampled (the caller's flag, else
 * sample_ratio). No lock, no I/O (the ids come from a per-thread generator). NULL-safe:
 * with o NULL, ids are zeroed (not traced). */
void otlp_begin(otlp *o, const otlp_context *parent, otlp_ids *ids);

/* The span of the request's attempt i (0-based; the ledger record's attempts[i]) gets an
 * id, and out its W3C traceparent for the upstream request (00-{trace}-{span}-{flags}).
 * Past LEDGER_MAX_ATTEMPTS (spans not exported) the parent named is the root span. */
#define OTLP_TRACEPARENT_LEN 55
void otlp_attempt_traceparent(otlp_ids *ids, size_t i, char out[OTLP_TRACEPARENT_LEN + 1]);

/* Queues r's spans for export under ids (from otlp_begin; attempt ids not made yet are
 * made here), copying what it needs in one allocation; an unsampled request is only
 * counted. op as for otlp_record_json. Never blocks on I/O. NULL-safe. */
void otlp_submit(otlp *o, const ledger_record *r, const char *op, const otlp_ids *ids);

/* Exports what is queued (one try per batch) within timeout_ms, then drops the rest
 * (counted); an export already in flight may add up to opts.timeout_ms. Stops the
 * thread. NULL ok. */
void otlp_close(otlp *o, uint32_t timeout_ms);

typedef struct otlp_stats {
    uint64_t queued;          /* records accepted into the queue */
    uint64_t sampled_out;     /* records not traced (sample_ratio, traceparent flag) */
    uint64_t dropped_full;    /* records dropped: the queue was full */
    uint64_t exported;        /* spans the receiver accepted */
    uint64_t dropped_failed;  /* spans dropped after the export failed max_retries times */
    uint64_t export_failures; /* failed POSTs (each try) */
    uint64_t pending;         /* records waiting now */
} otlp_stats;
void otlp_get_stats(otlp *o, otlp_stats *s);
/* Prometheus text of s (GET /metrics). */
void otlp_render_metrics(const otlp_stats *s, sg_buf *b);

#endif
