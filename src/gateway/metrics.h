/* metrics.h: the gateway's counters and histograms, rendered for GET /metrics in
 * Prometheus' text exposition format (version 0.0.4).
 *
 * Why in-process and lock-free: every request ends on the event loop thread, which also
 * answers /metrics, so plain integers updated there need no locks and cost a hash lookup
 * per request. Scrapes see exact counts since start.
 *
 * Series (labels route, provider, model: the serving target; "" when none):
 *   smolgate_requests_total, smolgate_request_errors_total (status >= 400),
 *   smolgate_fallbacks_total, smolgate_tokens_total{class=input|cache_read|cache_write|
 *   output|reasoning} (reasoning is part of output), smolgate_cost_microdollars_total,
 *   smolgate_unpriced_requests_total, smolgate_estimated_usage_requests_total,
 *   smolgate_request_duration_seconds and smolgate_time_to_first_token_seconds
 *   (histograms, buckets 5 ms .. 300 s);
 *   smolgate_attempts_total{route, provider, model, outcome=ok|error}: labelled by each
 *   attempt's own target, so failing upstreams show up even when a fallback answered;
 *   smolgate_ledger_* (from ledger_stats): appended, delivered, pending, duplicates,
 *   failures, database up.
 * Label cardinality is bounded: routes and providers come from the configuration, but
 * model names can come from clients (direct ids), so past max_series label sets a new
 * model is counted as model="other" (and past twice that, every label as "other").
 *
 * Contract: metrics_observe_request and metrics_render on one thread (the loop); the
 * record is only read during the call. */
#ifndef SG_GATEWAY_METRICS_H
#define SG_GATEWAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "gateway/ledger.h"

typedef struct metrics metrics;

/* max_series: label sets (route, provider, model) kept apart; 0 = 1000. */
metrics *metrics_new(size_t max_series);
void metrics_free(metrics *m);   /* NULL ok */

/* Counts one finished request (the record given to ledger_append). */
void metrics_observe_request(metrics *m, const ledger_record *r);

/* Appends every series. */
void metrics_render(const metrics *m, sg_buf *out);
/* The same series as JSON for the dashboard (dashboard.h): an array of {route, provider,
 * model, requests, errors, fallbacks, cost_micro, unpriced, input_tokens, output_tokens,
 * latency_ms: {count, sum, p50, p95}, ttft_ms: {...}}. Quantiles are read from the
 * histogram: the upper bound of the bucket that holds them (so p50 = 250 means
 * "between 100 and 250 ms"), -1 without observations. */
struct json_t;
struct json_t *metrics_json(const metrics *m);
/* Appends the ledger's counters (ledger_get_stats). */
void metrics_render_ledger(const ledger_stats *s, sg_buf *out);

#endif
