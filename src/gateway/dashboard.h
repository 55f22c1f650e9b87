/* dashboard.h: the built-in dashboard: its page (web/, embedded at build time: no CDN, no
 * file to install) at /dashboard, and the admin's JSON endpoints the page reads:
 *
 *   GET /admin/stats              live figures from memory, on the loop thread: totals, per
 *                                 route/provider/model counters with p50/p95 latency and
 *                                 time to first token (metrics.h), circuit breakers, keys'
 *                                 limits and budgets, the local models' slots and queue
 *   GET /admin/spend              spend over time from the hourly rollup (dash_query.h):
 *                                 from, to, by, bucket, key, route, provider, model; the
 *                                 body has /v1/usage's shape
 *   GET /admin/spend.csv          the same rows as CSV
 *   GET /admin/requests           the request list: q, key, route, model, status, from, to,
 *                                 limit, before (paging)
 *   GET /admin/requests/{id}      one request with its attempts (the trace)
 *
 * Every /admin/ endpoint needs an admin key (403 in OpenAI's error shape for another
 * role); with no keys configured the gateway is open and so are they. The page itself
 * holds no data and needs no key: it asks for the admin key and sends it as a Bearer
 * token.
 *
 * Threads: database reads run on one worker thread that owns its connection (reopened
 * when the configured ledger changes); answers come back to the loop with loop_post. At
 * most DASHBOARD_MAX_QUEUED calls wait at once: beyond, 429. When idle, the worker keeps
 * the spend rollup up to date (dash_query.h), DASHBOARD_ROLLUP_STEP records a transaction,
 * every DASHBOARD_ROLLUP_MS (at once while more wait). */
#ifndef SG_GATEWAY_DASHBOARD_H
#define SG_GATEWAY_DASHBOARD_H

#include <stdbool.h>

#include "gateway/config.h"
#include "gateway/http_server.h"
#include "gateway/loop.h"

#define DASHBOARD_MAX_QUEUED 16
#define DASHBOARD_ROLLUP_STEP 50000
#define DASHBOARD_ROLLUP_MS 2000
#define DASHBOARD_MAX_CAPTURES 256

typedef struct dashboard dashboard;
struct gateway;

dashboard *dashboard_new(loop *l);
/* Stops the worker; calls still queued are answered 503 (run the loop once after: the
 * answers are posted to it). NULL ok. */
void dashboard_free(dashboard *d);
/* The ledger's database (at start and after each reload; target copied). */
void dashboard_use_db(dashboard *d, gw_ledger_kind kind, const char *target);

/* Payload capture (config capture: routes, keys): keeps request id's prompt (the request
 * body) and answer (its text), each passed through redact.h with c's secrets and cut to
 * c->capture.max_bytes at a character boundary, in the payloads table, written by the
 * worker; the loop never waits. At most DASHBOARD_MAX_CAPTURES wait to be written:
 * beyond, a capture is dropped and counted (/admin/stats captures_dropped). Captures
 * older than capture.retention_hours are deleted by the worker when idle. Loop thread;
 * d NULL (after dashboard_free, requests still ending): nothing. */
void dashboard_capture(dashboard *d, const gw_config *c, const char *request_id, const char *prompt, size_t prompt_len,
                       const char *answer, size_t answer_len);

/* GET /dashboard (and /dashboard/FILE, /ui, and / from a browser: redirected). true when
 * req was the page's (answered); false: not the page's, nothing done. */
bool dashboard_serve_page(http_exchange *x, const http_request *req);

/* Whether path is one of the JSON endpoints above. */
bool dashboard_owns_path(const char *path);
/* Answers one of them (key: the caller's, NULL when no keys are configured). */
void dashboard_admin(struct gateway *g, http_exchange *x, const http_request *req, const gw_key *key);

#endif
