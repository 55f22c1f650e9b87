/* limits.h: admission control for the gateway: rate limits, concurrency and budgets.
 *
 * What is decided, per request (limits_admit):
 *   - requests per minute (rpm), tokens per minute (tpm) and requests in flight
 *     (concurrency) for the route, the gateway API key and the (key, route) pair;
 *   - budgets of the key and of the route per UTC day, UTC calendar month and in total:
 *     hard caps, enforced by reserving the request's maximum cost at admission;
 * and per attempt on an upstream provider account (limits_attempt): the account's own rpm,
 * tpm and concurrency, for the whole account and for the one model, so the proxy routes to
 * another target before the provider refuses.
 *
 * Exactness (the contract the tests check; docs/limits.md says it for users):
 *   - rpm: in any window (t - 60 s, t], at most `rpm` admissions. A sliding log, not a
 *     fixed window or an interpolated count, so N gateway instances sharing Redis admit N
 *     times nothing: the limit holds for all of them together.
 *   - tpm: at each admission, the tokens charged to admissions in (t - 60 s, t] plus this
 *     request's reservation are at most `tpm`. A request is charged its reservation at
 *     admission; when it ends the charge becomes its actual usage (in place, at its
 *     admission time). Usage above the reservation cannot be refused after the fact, so
 *     reserve generously (limits_estimate_tokens): with actual <= reserved, the actual
 *     tokens of admissions in any window never exceed `tpm`.
 *   - concurrency: admitted and not yet ended leases never exceed the limit.
 *   - budgets: spent + reserved + this request's maximum cost <= cap at admission, so the
 *     actual spend never exceeds the cap while actual cost <= maximum cost. A request with
 *     no price (max_cost -1) is refused by any budget that applies to it (403
 *     budget_unpriced): a hard cap cannot be kept for a cost nobody can bound.
 *   A request is admitted only if every check passes, and then all its counters move
 *   together (one atomic script in Redis): never a partial reservation.
 *
 * Backends: in-process hash tables (the default: exact for one instance, O(1) amortised
 * per check, decided synchronously), or Redis (state.redis) shared by every instance,
 * where each admission is one Lua script reading Redis TIME, so instances with skewed
 * clocks agree. Redis calls never block the event loop; when Redis is unreachable or
 * slower than state.timeout_ms, requests are admitted (state.on_redis_error: open) or
 * refused with 503 (closed), a warning is logged once per outage, and the connection is
 * retried with backoff.
 *
 * Calling contract (all on the loop thread):
 *   1. limits_admit() when a request arrives, before its first attempt. It returns
 *      LIMITS_NOW with *r filled (in-process, nothing to check, or Redis unreachable) or
 *      LIMITS_LATER: then cb runs once, later, from the loop, never from inside
 *      limits_admit. *lease is set in both cases.
 *   2. limits_attempt() before each attempt on a provider with limits: same shape. A
 *      refusal means "try the next target".
 *   3. Every lease is ended exactly once, whatever the outcome (admitted, refused,
 *      unavailable, still pending): limits_finish() with the usage when the request or
 *      attempt is over, or limits_cancel() when nothing was used (refused, client gone).
 *      Ending a pending lease cancels it: its callback does not run, and whatever Redis
 *      reserved for it is released when the answer comes.
 * Limits are read from the config at each admission (a reload takes effect at once); the
 * counters are keyed by names (key id, route name, provider name), so they survive it.
 * A reload that changes only state.on_redis_error or state.timeout_ms applies them to the
 * running limiter (limits_set_policy); one that changes the store (Redis URL, key prefix,
 * in-process <-> Redis) gets a new limiter, and the old one lives on until the leases of
 * the requests that started with it have ended (limits_idle), then is freed. */
#ifndef SG_GATEWAY_LIMITS_H
#define SG_GATEWAY_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/chat.h"
#include "gateway/config.h"
#include "gateway/loop.h"

typedef struct limits limits;
typedef struct limits_lease limits_lease;

/* The x-ratelimit-* values: for requests, the rpm limit with the least remaining among
 * those that apply (ties: the smaller limit); for tokens, the same among tpm limits.
 * -1 in limit_*: no such limit applies (its headers are left out). */
typedef struct limits_headers {
    int64_t limit_requests;      /* x-ratelimit-limit-requests */
    int64_t remaining_requests;  /* after this request when admitted */
    int64_t reset_requests_ms;   /* until `remaining` next goes up (the oldest counted
                                    admission leaves the window); 0 when nothing counts */
    int64_t limit_tokens;
    int64_t remaining_tokens;
    int64_t reset_tokens_ms;
} limits_headers;

typedef enum limits_outcome {
    LIMITS_ADMITTED,
    LIMITS_REFUSED,          /* a limit or budget said no */
    LIMITS_UNAVAILABLE,      /* Redis could not decide and on_redis_error is closed */
} limits_outcome;

typedef struct limits_result {
    limits_outcome outcome;
    int status;              /* for the client: 0 admitted; 429 rate limit or budget; 403
                                budget_unpriced; 503 limits_unavailable */
    const char *code;        /* NULL when admitted; "rate_limit_exceeded", "budget_exceeded",
                                "budget_unpriced", "limits_unavailable" */
    char limit[224];         /* which limit refused: "key team-a rpm", "route chat tpm",
                                "key team-a route chat concurrency", "provider openai rpm",
                                "budget key team-a daily", "budget route chat monthly" */
    char message[512];       /* one sentence for the client's error body */
    int64_t retry_after_ms;  /* refused: when a retry can succeed (the longest wait over the
                                limits that refused); -1: never (the request is larger than
                                the limit, an exhausted total budget, unpriced) */
    bool degraded;           /* admitted with no decision: Redis unreachable, fail open */
    int64_t at_us;           /* when it was decided, microseconds on the deciding clock
                                (Redis TIME, or the limiter's clock); 0 if nothing decided */
    limits_headers headers;
} limits_result;

/* Called once per pending lease, on the loop thread, unless the lease was ended first.
 * The caller may end the lease (and start others) from inside. */
typedef void (*limits_fn)(void *arg, limits_lease *lease, const limits_result *r);

enum { LIMITS_NOW = 0, LIMITS_LATER = 1 };

typedef struct limits_request {
    const gw_key *key;       /* the caller's gateway key; NULL when the gateway asks none */
    const gw_route *route;   /* the route the model resolved to; NULL for a direct id */
    int64_t est_tokens;      /* tpm reservation (limits_estimate_tokens) */
    int64_t max_cost;        /* micro-dollars: the most the request can cost; -1 unpriced */
    uint32_t ttl_ms;         /* the longest the request can live (the route's timeout_ms).
                                Redis only: a slot held by an instance that died frees
                                itself after this; 0 = 600000 */
} limits_request;

/* What a request or attempt used, given when it ends. */
typedef struct limits_usage {
    int64_t tokens;          /* input + cache + output tokens; -1 unknown: the reservation
                                stays charged */
    int64_t cost;            /* micro-dollars; -1 unknown or unpriced: the reserved maximum
                                is charged (never less than what might have been spent) */
} limits_usage;

/* A budget that crossed its alert threshold. */
typedef struct limits_alert_info {
    const char *label;       /* "budget key team-a daily" */
    const char *scope;       /* "key:team-a" or "route:chat" */
    const char *period;      /* "daily", "monthly", "total" */
    int percent;             /* the threshold crossed */
    int64_t spent, cap;      /* micro-dollars */
} limits_alert_info;

typedef struct limits_opts {
    uint32_t window_ms;      /* rpm / tpm window; 0 = 60000. Shorter only in tests. */
    /* Test clock, microseconds since the epoch; NULL: CLOCK_MONOTONIC for windows and
     * CLOCK_REALTIME for budget periods. Redis decisions read Redis TIME instead. */
    int64_t (*clock_us)(void *ctx);
    void *clock_ctx;
    /* Called besides the log when a budget crosses its alert_percent (once per period):
     * label "budget key team-a daily", spent and cap in micro-dollars. */
    void (*on_alert)(void *ctx, const char *label, int64_t spent, int64_t cap);
    /* The same, with the budget's scope apart (the gateway's alert webhook). */
    void (*on_budget_alert)(void *ctx, const struct limits_alert_info *a);
    void *alert_ctx;
} limits_opts;

typedef struct limits_stats {
    bool redis;              /* the Redis backend */
    bool connected;          /* Redis: a connection is up */
    bool outage;             /* Redis: failing open/closed now */
    uint64_t outages;        /* Redis: outages begun (each logged once) */
    uint64_t admits, refusals;
    uint64_t undecided;      /* decisions made without Redis (fail open or closed) */
    uint64_t late_replies;   /* Redis answers after their timeout (reconciled) */
    uint64_t in_flight;      /* Redis calls awaiting an answer */
    uint64_t dropped;        /* Redis: reconciliations given up (queue full, lost) */
} limits_stats;

/* A limiter for the state configuration st (copied; the URL is never logged with its
 * password). l is the loop it runs on (required with Redis; may be NULL in-process). o may
 * be NULL. With Redis, the connection starts now and requests made before it is up wait
 * for it up to state.timeout_ms. Fails on a URL hiredis 0.14 cannot use (rediss://). */
limits *limits_new(loop *l, const gw_state *st, const limits_opts *o, sg_error *err);
/* Frees the limiter. Every lease must have been ended; Redis calls still in flight are
 * dropped (their callbacks do not run). */
void limits_free(limits *lim);

/* Admission of a request (see the calling contract above). */
int  limits_admit(limits *lim, const limits_request *req, limits_lease **lease,
                  limits_result *r, limits_fn cb, void *arg);
/* One attempt on provider p for model m (m may be NULL): p's limits (rpm, tpm,
 * concurrency) and m's, both at once; a refusal names "provider openai rpm" or
 * "model openai/gpt-4o tpm". */
int  limits_attempt(limits *lim, const gw_provider *p, const gw_model_info *m, int64_t est_tokens,
                    uint32_t ttl_ms, limits_lease **lease, limits_result *r, limits_fn cb, void *arg);
/* Ends a lease with what it used (u NULL: unknown, the reservations stay charged). */
void limits_finish(limits_lease *lease, const limits_usage *u);
/* Ends a lease that used nothing; pending: cancels it (the callback will not run). */
void limits_cancel(limits_lease *lease);

/* A tpm reservation for a request: prompt tokens estimated from the body size (bytes / 3,
 * rounded up: more than any tokenizer produces for text, which is refunded at the end)
 * plus max_tokens, or default_max_output when the request sets none (<= 0). */
int64_t limits_estimate_tokens(size_t body_len, int64_t max_tokens, int64_t default_max_output);
/* The tokens a usage record counts for tpm: input + cache read + cache write + output
 * (known fields only); -1 if none is known. */
int64_t limits_usage_tokens(const gw_usage *u);

/* Response headers for r: the six x-ratelimit-* (those whose limit applies) and, when
 * refused with a known wait, retry-after (seconds, rounded up) and retry-after-ms. Reset
 * values are durations as OpenAI writes them ("20ms", "1.5s", "6m0s"). */
#define LIMITS_MAX_HEADERS 8
typedef struct limits_header {
    const char *name;        /* static */
    char value[24];
} limits_header;
size_t limits_format_headers(const limits_result *r, limits_header out[LIMITS_MAX_HEADERS]);
/* A duration in OpenAI's notation, into buf (cap >= 24): "0s", "250ms", "1.5s", "6m0s". */
void limits_format_duration(int64_t ms, char *buf, size_t cap);

void limits_get_stats(const limits *lim, limits_stats *out);

/* What a gateway key's own rpm and tpm windows and concurrency hold now (the dashboard's
 * live view): counted in the last 60 s, or in flight. The in-process backend only; with
 * Redis the counts live there and this answers false (nothing is asked of Redis from
 * here). A key nothing was counted for yet has zeros. */
typedef struct limits_now {
    int64_t requests;        /* admissions in the rpm window */
    int64_t tokens;          /* tokens charged in the tpm window */
    int64_t inflight;        /* leases holding a concurrency slot */
} limits_now;
bool limits_key_now(limits *lim, const char *key_id, limits_now *out);

/* on_redis_error and timeout_ms from st, for the decisions from now on (a reload). */
void limits_set_policy(limits *lim, const gw_state *st);
/* No live lease and no Redis call in flight: limits_free() drops nothing. */
bool limits_idle(const limits *lim);

#endif
