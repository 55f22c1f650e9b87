/* gateway.h: `smolgate serve`: the AI gateway assembled from its parts.
 *
 * One event loop thread runs the HTTP server (http_server.h), the upstream client
 * (upstream.h) and every request's state machine (proxy.c); the local models run on
 * their own worker threads (local.h) and report back through the loop. The
 * configuration (config.h) is immutable and reference-counted: SIGHUP builds a new one
 * and swaps it in when it is valid and every section of it can be applied (requests in
 * flight keep theirs); otherwise the reload is refused, the reason logged, and nothing
 * changes. A changed `state` store gets a new limiter (the old one is freed once the
 * requests that hold its leases end); a changed `ledger` gets a new ledger, and the old
 * one delivers what it holds and closes on a thread of its own. SIGTERM / SIGINT stop
 * accepting and let requests in flight finish within server.shutdown_grace_ms.
 *
 * Endpoints: POST /v1/chat/completions (OpenAI), POST /v1/messages (Anthropic),
 * GET /v1/models, GET /v1/status (open or failing targets, bounded; ledger losses),
 * GET /v1/usage, GET /metrics, GET /healthz, GET /readyz, and with an admin key
 * GET/POST /admin/keys and GET/PATCH/DELETE /admin/keys/{id} (keystore.h). With gateway keys, what a key
 * sees follows its role (config.h, docs/config.md "Roles"): a user key its own usage and
 * the routes and models it may use, an admin key everything, a metrics key /metrics only. */
#ifndef SG_GATEWAY_GATEWAY_H
#define SG_GATEWAY_GATEWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/breaker.h"
#include "gateway/alert_hook.h"
#include "gateway/api.h"
#include "gateway/config.h"
#include "gateway/cost.h"
#include "gateway/keystore.h"
#include "gateway/ledger.h"
#include "gateway/limits.h"
#include "gateway/metrics.h"
#include "gateway/http_server.h"
#include "gateway/local.h"
#include "gateway/loop.h"
#include "gateway/transport.h"
#include "gateway/upstream.h"

typedef struct gateway_opts {
    const char *config_path;        /* NULL: embedded defaults */
    config_overrides overrides;     /* --listen, --model */
    bool check;                     /* validate, print the summary, exit */
} gateway_opts;

/* Runs the gateway until SIGTERM / SIGINT. Returns 0 after a clean shutdown. */
int gateway_serve(const gateway_opts *o, sg_error *err);

/* ---- shared with proxy.c ---- */

typedef struct gw_local_entry {
    char *name;               /* local model name */
    char *path;
    gw_local *lm;
} gw_local_entry;

typedef struct gateway {
    loop *loop;
    http_server *http;
    upstream *up;
    gw_transport transport;   /* upstream transfers go through this (transport.h): up */
    gw_config *cfg;           /* current configuration (one reference held) */
    cost_catalog *costs;      /* prices: built in, the config's models:, price files */
    limits *limits;           /* rate limits and budgets (in-process or Redis) */
    ledger *ledger;           /* one record per request (SQLite or PostgreSQL, spooled) */
    limits **old_limits;      /* replaced by reloads; each freed once limits_idle() */
    size_t n_old_limits;
    loop_timer old_limits_timer;
    pthread_t *closers;       /* threads closing the ledgers and trace exporters that
                                 reloads replaced (joined at exit) */
    size_t n_closers;
    metrics *metrics;         /* GET /metrics */
    keystore *keys;           /* keys made at run time (/admin/keys), from the ledger's database */
    struct dashboard *dash;   /* the dashboard's page and /admin/ reads (dashboard.h) */
    alert_hook *alerts;       /* budget alerts to alerts.webhook_url */
    struct otlp *otlp;        /* request traces out (otlp.h); NULL when tracing is off */
    gw_local_entry *locals;
    size_t n_locals;
    breaker_table *breakers;  /* circuit breakers by target (breaker.h) */
    uint64_t rng;
    int64_t started_unix;     /* when it started (unix seconds): Ollama's modified_at */
    bool shutting_down;
    char *config_path;
    config_overrides overrides;
    struct {
        uint64_t requests, errors, fallbacks, attempts;
    } stats;
} gateway;

gw_local *gateway_local(gateway *g, const char *name);
uint64_t gateway_random(gateway *g);

/* proxy.c: handles a chat request in one of the client APIs (api.h). */
void proxy_handle(gateway *g, http_exchange *x, const http_request *req, const gw_client_api *api,
                  const gw_key *key);

/* count_tokens.c: POST /v1/messages/count_tokens. */
void count_tokens_handle(gateway *g, http_exchange *x, const http_request *req, const gw_key *key);

#endif
