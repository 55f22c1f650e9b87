/* config.h: the gateway's configuration: one YAML file (docs/config.md documents every
 * key), or embedded defaults when there is no file.
 *
 * Why it exists: every part of the gateway (server limits, providers, routes, rate limits,
 * budgets, prices, API keys, Redis and ledger settings) reads its settings from one
 * validated, typed, immutable value, so that a mistake is found at start-up (or on
 * `smolgate serve --check`, or when SIGHUP brings a new file) with the file, the line and
 * the key path, never in the middle of a request.
 *
 * Contract:
 * - config_load() parses the file with libyaml into a small tree that keeps each node's
 *   line, then validates it into the structs below. Every error is one line:
 *   `smolgate.yaml:12: routes[0].targets[1].model: unknown provider "opneai" (...)`.
 *   Unknown keys, wrong types, out-of-range numbers, duplicate keys, duplicate names and
 *   unresolvable targets are errors. YAML anchors, aliases and `<<` merge keys work.
 * - Scalar values may use `${NAME}` and `${NAME:-default}` (environment, read through
 *   config_env); `$$` is a literal `$`. An unset variable without a default is an error
 *   naming the variable. No message ever contains a value that came from the environment,
 *   nor any API key, header value or database URL.
 * - The structs are immutable once loaded and shared by reference count: config_load()
 *   and config_default() return one reference; config_ref() adds one (a request takes one
 *   when it starts), config_unref() drops one and frees at zero. A reload builds a new
 *   config and swaps the pointer; requests in flight keep the old one.
 * - Absent optional numbers are -1 in the structs ("not set": no limit, no budget, no
 *   price), never 0 by accident. Money is integer: budgets in micro-dollars (1e-6 USD),
 *   prices in pico-dollars per token (1e-12 USD), which is the same number as micro-dollars
 *   per million tokens: $0.075 per million tokens is 75000, exactly.
 * - Gateway API keys are kept only as SHA-256 hashes (libcrypto); a key written in the
 *   file (usually `${TEAM_KEY}`) is hashed at load and its text wiped.
 * - All strings and arrays belong to the config and live as long as it does.
 * - The secrets a configuration holds are also collected in `secrets` (redact.h), so a
 *   reloaded file brings its own set: redaction follows the running configuration.
 */
#ifndef SG_GATEWAY_CONFIG_H
#define SG_GATEWAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "common/log.h"

#define GW_SHA256_LEN 32

/* Where ${NAME} and the no-file defaults read the environment. get returns NULL when the
 * variable is unset. A NULL config_env means the process environment (getenv). */
typedef const char *(*config_getenv_fn)(void *ctx, const char *name);
typedef struct config_env {
    config_getenv_fn get;
    void *ctx;
} config_env;

typedef enum gw_provider_type {
    GW_PROVIDER_OPENAI,     /* any OpenAI-compatible API (OpenAI, Groq, vLLM, Ollama, ...) */
    GW_PROVIDER_ANTHROPIC,  /* Messages API */
    GW_PROVIDER_GOOGLE,     /* Gemini generateContent */
    GW_PROVIDER_LOCAL,      /* the in-process engine */
    GW_PROVIDER_N_TYPES     /* how many; each has its entry in gw_provider_entries (provider.h) */
} gw_provider_type;

/* Rate limits; -1 = no limit. */
typedef struct gw_limits {
    int64_t rpm;            /* requests per minute */
    int64_t tpm;            /* tokens (input + output) per minute */
    int64_t concurrency;    /* requests in flight */
} gw_limits;

/* Spending caps, hard (reserved at admission); -1 = none. */
typedef struct gw_budget {
    int64_t daily_usd;      /* micro-dollars per UTC day */
    int64_t monthly_usd;    /* micro-dollars per UTC calendar month */
    int64_t total_usd;      /* micro-dollars, ever */
    int     alert_percent;  /* log a warning when a cap is this full; default 80 */
} gw_budget;

/* Per attempt, in milliseconds (all >= 1). */
typedef struct gw_timeouts {
    uint32_t connect_ms;      /* DNS + TCP + TLS; default 10000 */
    uint32_t first_token_ms;  /* request sent -> first response byte; default 300000 (a
                                 non-streamed answer's first byte comes when it is done) */
    uint32_t idle_ms;         /* longest gap between bytes after the first; default 120000 */
    uint32_t total_ms;        /* the whole attempt; default 600000 */
} gw_timeouts;

/* Retries of one target before moving to the next (exponential backoff with jitter). */
typedef struct gw_retries {
    int      max;             /* retries after the first attempt; default 2 */
    uint32_t base_ms;         /* first backoff; default 500 */
    uint32_t max_ms;          /* backoff cap; default 8000 */
} gw_retries;

/* Bounds on what one upstream response may make the gateway hold, in bytes. Crossing one
 * fails the attempt like a bad upstream answer (502 upstream_response_too_large, fallback
 * as the route says). The top-level `upstream:` section gives the defaults, a remote
 * provider may override each. */
typedef struct gw_bounds {
    size_t max_response_bytes;  /* a non-streamed body; default 33554432 (32 MiB) */
    size_t max_sse_line_bytes;  /* one SSE line, and one event, of a stream; default 4194304 */
    size_t max_header_bytes;    /* the response head; default 65536 */
} gw_bounds;

typedef struct gw_header {
    char *name;
    char *value;              /* may be a secret: never log it */
} gw_header;

typedef struct gw_local_model {
    char *name;               /* "smollm3-3b-q4_k_m": served as PROVIDER/NAME */
    char *alias;              /* a second name ("smollm3") or NULL; see docs/config.md */
    char *path;               /* GGUF file or Hugging Face folder (exists at load) */
} gw_local_model;

typedef struct gw_provider {
    char *name;               /* "openai", "groq", ...: the part before '/' in model ids */
    gw_provider_type type;
    const struct gw_provider_entry *entry;  /* what serves its type (provider.h): what the
                                               proxy calls; gw_provider_entry_of(type) */
    bool declared;            /* written under providers: (else implicit) */
    bool configured;          /* usable: remote ones declared, or implicit with a key in
                                 the environment; local ones with at least one model.
                                 Targets on an unconfigured provider are errors. */
    int  line;                /* in the file, 0 if implicit */
    /* remote types */
    char *base_url;           /* no trailing '/'; "https://api.openai.com/v1" */
    char *api_key;            /* secret; NULL = send none */
    char *version;            /* anthropic: anthropic-version header ("2023-06-01");
                                 google: API version in the path ("v1beta"); else NULL */
    gw_header *headers;       /* extra request headers */
    size_t n_headers;
    gw_timeouts timeouts;
    gw_retries retries;
    gw_limits limits;         /* the account's own limits: route around before a 429 */
    gw_bounds bounds;         /* remote types: the file's upstream: section unless set here */
    /* local type */
    struct {
        gw_local_model *models;
        size_t n_models;
        int threads;          /* 0 = all online CPUs (default) */
        int queue;            /* requests waiting for a slot; beyond: fall back; default 16 */
        int ctx;              /* KV positions per sequence; 0 = min(model max, 4096) */
        int parallel;         /* sequences decoded together; default 4 */
        int draft;            /* speculative decoding: draft tokens per step at most; 0 = off;
                                 default SPEC_DEFAULT_DRAFT (engine/speculate.h) */
    } local;
} gw_provider;

/* Prices in pico-dollars per token (= micro-dollars per million tokens); -1 = unpriced. */
typedef struct gw_price {
    int64_t input;            /* uncached input */
    int64_t cache_read;
    int64_t cache_write;
    int64_t output;           /* output, reasoning included unless `reasoning` is set */
    int64_t reasoning;        /* reasoning tokens, when priced apart; default: = output */
} gw_price;

/* Facts about one model from the `models:` section. */
typedef struct gw_model_info {
    char *id;                 /* "openai/gpt-4o-mini" as written */
    const gw_provider *provider;
    char *model;              /* "gpt-4o-mini" (the part after the provider) */
    int64_t context_window;   /* tokens; -1 = unknown */
    int64_t max_output_tokens;/* -1 = unknown */
    gw_price price;
    gw_limits limits;         /* the account's limits for this model at its provider (providers
                                 limit many models separately): checked per attempt */
    int line;
} gw_model_info;

typedef struct gw_target {
    char *id;                 /* as written: "openai/gpt-4o-mini" or "gpt-4o-mini" */
    const gw_provider *provider;
    char *model;              /* upstream model name ("gpt-4o-mini"; local: canonical name) */
    const gw_local_model *local;    /* provider->type == GW_PROVIDER_LOCAL, else NULL */
    const gw_model_info *info;      /* from models:, or NULL */
    uint32_t weight;          /* within its group; 1 when not written */
    int group;                /* targets of one group are load-balanced by weight; groups
                                 are tried in order (0, 1, ...) */
} gw_target;

typedef struct gw_route {
    char *name;               /* the public model name clients send */
    gw_target *targets;       /* in order; at least one */
    size_t n_targets;
    int n_groups;
    int retry_budget;         /* retries (not fallbacks) summed over the targets; default 3 */
    uint32_t timeout_ms;      /* deadline for the whole request; default 600000 */
    gw_limits limits;         /* for the route, all keys together */
    gw_limits per_key_limits; /* for each key separately on this route */
    gw_budget budget;
    int line;
} gw_route;

typedef struct gw_key_route_limits {
    const gw_route *route;
    gw_limits limits;
} gw_key_route_limits;

/* What a gateway key may see besides the chat endpoints (docs/config.md, "Roles"). */
typedef enum gw_key_role {
    GW_ROLE_USER,             /* default: its own usage, its own routes and models */
    GW_ROLE_ADMIN,            /* everything: every key's usage, every route, /metrics */
    GW_ROLE_METRICS,          /* GET /metrics only (a scrape token); no chat requests */
} gw_key_role;

typedef struct gw_key {
    char *id;                 /* "team-a": names the key in logs and the ledger */
    gw_key_role role;
    uint8_t sha256[GW_SHA256_LEN];
    bool all_routes;          /* no routes: list; then direct model ids are allowed too */
    const gw_route **routes;  /* the routes this key may use (when !all_routes) */
    size_t n_routes;
    gw_limits limits;         /* for this key, all routes together */
    gw_key_route_limits *route_limits;  /* for this key on one route */
    size_t n_route_limits;
    gw_budget budget;
    int line;
    struct ks_key *dyn;       /* a key made at run time (keystore.h); NULL: from the file */
} gw_key;

/* Inbound HTTP server bounds (defaults match http_server_config_defaults). */
typedef struct gw_server {
    size_t   max_connections;     /* default 10000 */
    size_t   max_header_bytes;    /* default 16384 */
    size_t   max_body_bytes;      /* default 16 MiB */
    uint32_t header_timeout_ms;   /* default 10000 */
    uint32_t body_timeout_ms;     /* default 60000 */
    uint32_t idle_timeout_ms;     /* default 75000 */
    uint32_t write_timeout_ms;    /* default 30000 */
    uint32_t shutdown_grace_ms;   /* SIGTERM: in-flight requests get this long; 30000 */
} gw_server;

#define GW_BREAKER_MAX_TARGETS_DEFAULT 4096

typedef struct gw_breaker {
    int      failures;            /* failures within window_ms that open it; default 5 */
    uint32_t window_ms;           /* default 30000 */
    uint32_t cooldown_ms;         /* first cooldown; default 30000 */
    uint32_t max_cooldown_ms;     /* cooldown doubles on each failed probe up to this; 300000 */
    size_t   max_targets;         /* breakers kept (breaker.h); GW_BREAKER_MAX_TARGETS_DEFAULT */
} gw_breaker;

typedef struct gw_state {
    char    *redis_url;           /* secret-ish (may hold a password); NULL = in-process */
    bool     fail_open;           /* Redis unreachable: admit (true, default) or refuse */
    char    *key_prefix;          /* default "smolgate:" */
    uint32_t timeout_ms;          /* per Redis call; default 100 */
} gw_state;

typedef enum gw_ledger_kind { GW_LEDGER_SQLITE, GW_LEDGER_POSTGRES } gw_ledger_kind;

typedef struct gw_ledger {
    gw_ledger_kind kind;
    char    *sqlite_path;         /* default "smolgate.db" (working folder) */
    char    *postgres_url;        /* secret: conninfo or postgresql:// URL */
    char    *spool_dir;           /* records wait here while the database is away;
                                     default "smolgate-spool" */
    uint32_t flush_ms;            /* batch interval; default 1000 */
    uint32_t batch_max;           /* records per write; default 5000 */
} gw_ledger;

/* tracing: request spans to an OTLP/HTTP receiver (otlp.h); off while endpoint is NULL. */
typedef struct gw_tracing {
    char    *endpoint;            /* base URL (secret-ish: may hold a token); NULL = off */
    gw_header *headers;           /* sent with each export; values are secrets */
    size_t   n_headers;
    char    *service_name;        /* default "smolgate" */
    double   sample_ratio;        /* default 1.0 */
    uint32_t batch_max;           /* default 256 */
    uint32_t queue_max;           /* default 4096 */
    uint32_t flush_ms;            /* default 1000 */
    uint32_t timeout_ms;          /* default 5000 */
    uint32_t max_retries;         /* default 3 */
    bool     protobuf;            /* protocol: http/protobuf (default) or http/json */
} gw_tracing;

typedef struct gw_config {
    char *path;                   /* the file, or NULL for the embedded defaults */
    int   version;                /* schema version: 1 */
    char *listen;                 /* "127.0.0.1:8080" */
    sg_log_level log_level;       /* default SG_LOG_INFO */
    bool  direct;                 /* model ids that are not routes are served; default true */
    gw_server server;
    gw_provider *providers;       /* declared ones in file order, then the implicit ones */
    size_t n_providers;
    gw_model_info *models;
    size_t n_models;
    gw_route *routes;
    size_t n_routes;
    gw_key *keys;                 /* none: the gateway asks for no key */
    size_t n_keys;
    bool  auth_none;              /* `auth: none` written: serving without keys on purpose
                                     (a reload may then drop keys; see config_reload_check) */
    bool  empty;                  /* a file with nothing in it (no document, or only null) */
    gw_breaker circuit_breaker;
    gw_state state;
    gw_ledger ledger;
    gw_tracing tracing;
    char **price_files;           /* LiteLLM model_prices_and_context_window.json files */
    size_t n_price_files;
    gw_bounds upstream;           /* defaults of every remote provider's bounds */
    struct {                      /* the Responses API's stored responses (response_store.h) */
        size_t max_count;         /* default 10000; 0: nothing stored */
        size_t max_bytes;         /* default 256 MiB */
        uint32_t max_age_s;       /* default 86400 */
        bool memory;              /* backend: memory (true) or the ledger's database (default) */
    } responses;
    struct {                      /* budget alerts (docs/config.md "alerts") */
        char *webhook_url;        /* secret-ish (may carry a token); NULL: log only */
        uint32_t timeout_ms;      /* per POST; default 5000 */
        int retries;              /* after the first try; default 3 */
    } alerts;
    struct {                      /* the dashboard's payload capture (docs/config.md "dashboard") */
        char **routes;            /* routes whose prompts and answers are kept */
        size_t n_routes;
        char **keys;              /* gateway key ids whose prompts and answers are kept */
        size_t n_keys;
        uint32_t retention_h;     /* hours a capture is kept; default 24 */
        uint32_t max_bytes;       /* per prompt and per answer, cut beyond; default 32768 */
    } capture;
    struct redact_set *secrets;   /* every secret above (provider keys and header values,
                                     gateway key hashes, DSN passwords), for redact.h:
                                     what the gateway relays or logs about upstream errors
                                     goes through it. Built at load, freed with the config */
} gw_config;

/* Command-line settings that win over the file: --listen, --model (repeatable;
 * PATH or NAME=PATH, added to the provider "local"), --parallel (its sequences) and
 * --draft / --no-speculate (its speculative decoding). */
typedef struct config_overrides {
    const char *listen;           /* NULL: keep the file's */
    const char *const *model_paths;
    size_t n_model_paths;
    int parallel;                 /* 0: keep the file's */
    int draft;                    /* --draft N + 1 (--no-speculate: 1); 0: keep the file's */
} config_overrides;

/* Loads and validates path. On failure *out is NULL and err says file:line: key: what. */
int  config_load(gw_config **out, const char *path, const config_env *env, sg_error *err);
/* The same with command-line overrides (ov may be NULL). path NULL = no file. */
int  config_load_ex(gw_config **out, const char *path, const config_overrides *ov,
                    const config_env *env, sg_error *err);
/* No file: the local models given (--model PATH or NAME=PATH, served as local/NAME) and
 * every provider whose key is in the environment (see docs/config.md). */
int  config_default(gw_config **out, const char *const *model_paths, size_t n,
                    const config_env *env, sg_error *err);

gw_config *config_ref(gw_config *c);      /* returns c; thread-safe */
void config_unref(gw_config *c);
/* Whether payload capture is on for a request on route (NULL: a direct model id) with key
 * id key_id (NULL: no key). */
bool config_capture_wanted(const gw_config *c, const char *route, const char *key_id);          /* frees at zero (secrets wiped); NULL ok */
void config_free(gw_config *c);           /* = config_unref: drops the loader's reference */

/* Lookups; NULL when absent. */
const gw_route    *config_route(const gw_config *c, const char *name);
const gw_provider *config_provider(const gw_config *c, const char *name);
const gw_key      *config_key_by_id(const gw_config *c, const char *id);
const gw_model_info *config_model_info(const gw_config *c, const gw_provider *p,
                                       const char *model);

/* What a model id sent by a client means. Exactly one of route / provider is set. */
typedef struct gw_resolved {
    const gw_route *route;            /* the id names a route */
    const gw_provider *provider;      /* else the provider that serves it directly */
    const char *model;                /* upstream model name: points into the id, or into
                                         the config for local models */
    const gw_local_model *local;      /* local providers */
    const gw_model_info *info;        /* from models:, or NULL */
} gw_resolved;

/* Resolution order: a route name; PROVIDER/MODEL (split at the first '/'); a local model
 * name; then the families gpt-*, o1*, o3*, o4*, chatgpt-*, text-embedding-* -> openai,
 * claude-* -> anthropic, gemini-* -> google. Fails with a message fit for the client
 * (unknown provider or model, provider not configured, direct ids disabled). */
int  config_resolve_model(const gw_config *c, const char *id, gw_resolved *out,
                          sg_error *err);

/* Gateway API keys. */
int  config_key_hash(const void *key, size_t len, uint8_t out[GW_SHA256_LEN]);
/* The key whose hash matches the presented key, or NULL. Compares every stored hash in
 * constant time (no early exit), so timing says nothing about which key or how close. */
const gw_key *config_key_find(const gw_config *c, const char *presented, size_t len);
const gw_key *config_key_find_hash(const gw_config *c, const uint8_t hash[GW_SHA256_LEN]);
/* May key k use what r resolved to? (routes: list, or all routes and direct ids; never a
 * metrics key). */
bool config_key_allows(const gw_key *k, const gw_resolved *r);

/* Visibility (tenancy). k NULL means no keys are configured: open single-user mode, where
 * everything is visible. An admin key sees everything; a user key sees its own usage and
 * the routes and models it may use; a metrics key sees /metrics only. */
bool config_key_sees_all(const gw_key *k);                      /* NULL or admin */
bool config_key_reads_metrics(const gw_key *k);                 /* NULL, admin or metrics */
bool config_key_uses_route(const gw_key *k, const gw_route *r); /* may send requests to r */
bool config_key_uses_direct(const gw_key *k);                   /* may name models directly */
const char *config_key_role_name(gw_key_role r);                /* "user", "admin", "metrics" */
/* What key k may ask for, for an unknown model's error: (when it may name models
 * directly) the local models, its routes, and the configured providers as
 * "PROVIDER/MODEL"; appended to out as "local models: local/x; routes: a, b; or
 * PROVIDER/MODEL for: openai", at most 12 names of each kind (then "and N more").
 * "nothing" (with how to get something) when that is empty. */
void config_describe_served(const gw_config *c, const gw_key *k, sg_buf *out);

/* SIGHUP: may `next` replace `running`? Refused (-1, err says why, naming the section)
 * when next came from an empty file; when running requires gateway keys and next has
 * none without saying `auth: none`; and when next changes what only a restart applies:
 * `listen`, the `server` bounds other than shutdown_grace_ms, and a local provider's
 * engine settings (threads, queue, ctx, parallel) or a loaded local model's path.
 * The `state` and `ledger` sections are applied by the gateway (gateway.c); these two
 * say what changed there. */
int  config_reload_check(const gw_config *running, const gw_config *next, sg_error *err);
/* Same Redis URL and key prefix (or both in-process): only on_redis_error / timeout_ms
 * may differ, and those apply to the running limiter in place. */
bool config_state_same_store(const gw_state *a, const gw_state *b);
bool config_ledger_equal(const gw_ledger *a, const gw_ledger *b);
/* Every tracing key the same (the exporter then runs on untouched by a reload). */
bool config_tracing_equal(const gw_tracing *a, const gw_tracing *b);
/* The limits for key k on route r: its route_limits entry, else the route's
 * per_key_limits (fields -1 when none apply). */
gw_limits config_key_route_limits(const gw_key *k, const gw_route *r);

/* Names: "openai", ...; config_provider_type_from_name returns -1 if unknown. */
const char *config_provider_type_name(gw_provider_type t);
int  config_provider_type_from_name(const char *s);
/* The local model name --model PATH derives: "SmolLM3-3B-Q4_K_M.gguf" ->
 * "smollm3-3b-q4_k_m"; HF cache ".../models--HuggingFaceTB--SmolLM3-3B/snapshots/<sha>"
 * -> "smollm3-3b". Writes at most cap bytes (NUL included); -1 if nothing usable. */
int  config_local_model_name(const char *path, char *out, size_t cap);

/* A multi-line summary for logs and --check: providers (key set or not, never the key),
 * routes, keys by id and role, state, ledger. */
void config_describe(const gw_config *c, sg_buf *out);

#endif
