/* gateway.c: `smolgate serve` (gateway.h): start-up, endpoints other than the two chat
 * APIs, authentication and what each key's role lets it see, signals and configuration
 * reload (all sections applied, or the reload refused). Circuit breakers: breaker.h. */
#include "gateway/gateway.h"
#include "gateway/response_store.h"

#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/version.h"
#include "gateway/api.h"
#include "gateway/api_ollama.h"
#include "gateway/provider.h"
#include "gateway/chat.h"
#include "gateway/dashboard.h"
#include "gateway/otlp.h"

/* Where the Vercel AI Gateway protocol is served (api_ai_gateway.c): Vercel's own path. */
#define AI_GATEWAY_BASE "/v4/ai"

/* ---- small helpers ---- */

uint64_t gateway_random(gateway *g) {   /* xorshift64*: jitter and weighted picks */
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return g->rng * 0x2545F4914F6CDD1Dull;
}

gw_local *gateway_local(gateway *g, const char *name) {
    for (size_t i = 0; i < g->n_locals; i++)
        if (!strcmp(g->locals[i].name, name)) return g->locals[i].lm;
    return NULL;
}

static void respond_json(http_exchange *x, int status, const char *body, size_t len) {
    http_header h[1] = {{"content-type", "application/json"}};
    http_respond(x, status, h, 1, body, len);
}

static void respond_error(http_exchange *x, const gw_client_api *api, int status, const char *code, const char *msg) {
    gw_api_error e;
    gw_api_fail(&e, status, code, NULL, "%s", msg);
    sg_buf b;
    sg_buf_init(&b);
    api->error_body(&b, &e);   /* each client its own shape */
    respond_json(x, status, b.data, b.len);
    sg_buf_free(&b);
}

/* ---- endpoints ---- */

/* ---- tenancy: what a key may see (k NULL: no keys configured, everything) ---- */

/* Does key k reach target "provider/model": by naming models directly, or through one of
 * its routes? */
static bool key_sees_target(const gw_config *c, const gw_key *k, const char *target) {
    if (config_key_uses_direct(k)) return true;
    for (size_t i = 0; i < c->n_routes; i++) {
        const gw_route *r = &c->routes[i];
        if (!config_key_uses_route(k, r)) continue;
        for (size_t t = 0; t < r->n_targets; t++) {
            const char *p = r->targets[t].provider->name, *m = r->targets[t].model;
            size_t pl = strlen(p);
            if (!strncmp(target, p, pl) && target[pl] == '/' && !strcmp(target + pl + 1, m)) return true;
        }
    }
    return false;
}

/* Does key k reach local engine lm (directly, or as a target of one of its routes)? */
static bool key_sees_local(gateway *g, const gw_key *k, const gw_local *lm) {
    if (config_key_uses_direct(k)) return true;
    const gw_config *c = g->cfg;
    for (size_t i = 0; i < c->n_routes; i++) {
        const gw_route *r = &c->routes[i];
        if (!config_key_uses_route(k, r)) continue;
        for (size_t t = 0; t < r->n_targets; t++)
            if (r->targets[t].local && gateway_local(g, r->targets[t].local->name) == lm) return true;
    }
    return false;
}

/* Each model id key k may name, once: its routes, then (when it may name models directly)
 * the local engines ("local/NAME"), the configured models, and each configured remote
 * provider's current models as Vercel's gateway names them. owner: "smolgate" for a route,
 * "local", or the provider's name. */
typedef void (*served_fn)(void *ctx, const char *id, const char *owner, const gw_route *route);

static void each_served_model(gateway *g, const gw_key *key, served_fn fn, void *ctx) {
    const gw_config *c = g->cfg;
    bool direct = config_key_sees_all(key) || config_key_uses_direct(key);   /* model ids beyond routes */
    for (size_t i = 0; i < c->n_routes; i++) {
        const gw_route *r = &c->routes[i];
        if (config_key_sees_all(key) || config_key_uses_route(key, r)) fn(ctx, r->name, "smolgate", r);
    }
    char id[256];
    for (size_t i = 0; direct && i < g->n_locals; i++) {
        snprintf(id, sizeof id, "local/%s", g->locals[i].name);
        fn(ctx, id, "local", NULL);
    }
    for (size_t i = 0; direct && i < c->n_models; i++) fn(ctx, c->models[i].id, c->models[i].provider->name, NULL);
    for (size_t i = 0; direct && i < c->n_providers; i++) {
        const gw_provider *p = &c->providers[i];
        if (!p->configured || p->declared || !p->entry->listed_models) continue;
        for (const char *const *m = p->entry->listed_models; *m; m++) {
            snprintf(id, sizeof id, "%s/%s", p->name, *m);
            fn(ctx, id, p->name, NULL);
        }
    }
}

typedef struct models_list {
    gateway *g;
    json_t *data;
    int64_t created;
} models_list;

static void models_add(void *ctx, const char *id, const char *owner, const gw_route *r) {
    models_list *l = ctx;
    json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created", (json_int_t)l->created, "owned_by", owner);
    if (r) {
        json_t *targets = json_array();
        for (size_t t = 0; t < r->n_targets; t++) {
            const gw_target *tg = &r->targets[t];
            json_t *to = json_pack("{s:s,s:s,s:i}", "provider", tg->provider->name, "model", tg->model, "weight", (json_int_t)tg->weight);
            uint64_t left;
            if (!tg->provider->entry->in_process &&   /* in-process targets have no breaker */
                breaker_is_open(l->g->breakers, tg->provider->name, tg->model, loop_now_ms(l->g->loop), &left))
                json_object_set_new(to, "cooldown_ms", json_integer((json_int_t)left));
            json_array_append_new(targets, to);
        }
        json_object_set_new(o, "targets", targets);
    }
    json_array_append_new(l->data, o);
}

static void respond_doc(http_exchange *x, int status, json_t *doc) {
    char *s = json_dumps(doc, JSON_COMPACT);
    respond_json(x, status, s, strlen(s));
    free(s);
    json_decref(doc);
}

/* The model objects key may see, as GET /v1/models lists them. */
static json_t *model_list(gateway *g, const gw_key *key, int64_t created) {
    models_list l = {g, json_array(), created};
    each_served_model(g, key, models_add, &l);
    return l.data;
}

static void handle_models(gateway *g, http_exchange *x, const gw_key *key) {
    respond_doc(x, 200, json_pack("{s:s,s:o}", "object", "list", "data", model_list(g, key, (int64_t)time(NULL))));
}

/* GET /v4/ai/config: the same models in the shape @ai-sdk/gateway reads (its
 * getAvailableModels), each declaring the v4 language-model specification. */
static void handle_ai_gateway_config(gateway *g, http_exchange *x, const gw_key *key) {
    json_t *data = model_list(g, key, (int64_t)time(NULL)), *models = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(data, i, m) {
        json_t *id = json_object_get(m, "id"), *owner = json_object_get(m, "owned_by");
        json_array_append_new(models, json_pack("{s:O,s:O,s:{s:s,s:O,s:O},s:s}", "id", id, "name", id, "specification",
                                                "specificationVersion", "v4", "provider", owner, "modelId", id,
                                                "modelType", "language"));
    }
    json_decref(data);
    respond_doc(x, 200, json_pack("{s:o}", "models", models));
}

/* ---- Ollama's read-only endpoints (api_ollama.h): the same models, its shapes ---- */

typedef struct ollama_list {
    gateway *g;
    json_t *models;
    const char *want;              /* /api/show: the one asked for */
    bool found;
    const char *owner;
} ollama_list;

static void ollama_add(void *ctx, const char *id, const char *owner, const gw_route *r) {
    (void)r;
    ollama_list *l = ctx;
    if (l->want) {
        if (!l->found && !strcmp(l->want, id)) { l->found = true; l->owner = owner; }
        return;
    }
    json_array_append_new(l->models, ollama_model_json(id, owner, l->g->started_unix));
}

static void handle_ollama_show(gateway *g, http_exchange *x, const http_request *req, const gw_key *key) {
    json_t *body = json_loadb(req->body ? req->body : "", req->body_len, 0, NULL);
    const char *name = json_string_value(json_object_get(body, "model"));
    if (!name) name = json_string_value(json_object_get(body, "name"));   /* older clients */
    if (!name) {
        json_decref(body);
        respond_error(x, &gw_api_ollama_chat, 400, "invalid_request", "model is required");
        return;
    }
    ollama_list l = {.g = g, .want = name};
    each_served_model(g, key, ollama_add, &l);
    if (!l.found) {
        char msg[320];
        snprintf(msg, sizeof msg, "model '%.256s' not found", name);
        json_decref(body);
        respond_error(x, &gw_api_ollama_chat, 404, "model_not_found", msg);
        return;
    }
    json_t *m = ollama_model_json(name, l.owner, g->started_unix);
    json_t *doc = json_pack("{s:s,s:s,s:s,s:O,s:{},s:[s,s],s:O}", "modelfile", "", "parameters", "", "template", "",
                            "details", json_object_get(m, "details"), "model_info", "capabilities", "completion", "tools",
                            "modified_at", json_object_get(m, "modified_at"));
    json_decref(m);
    json_decref(body);
    respond_doc(x, 200, doc);
}

/* GET /api/ps: the local engines this key reaches (loaded for as long as the gateway runs). */
static void handle_ollama_ps(gateway *g, http_exchange *x, const gw_key *key) {
    json_t *models = json_array();
    for (size_t i = 0; i < g->n_locals; i++) {
        if (!config_key_sees_all(key) && !key_sees_local(g, key, g->locals[i].lm)) continue;
        char id[256];
        snprintf(id, sizeof id, "local/%s", g->locals[i].name);
        json_t *m = ollama_model_json(id, "local", g->started_unix);
        json_object_del(m, "modified_at");
        json_object_set_new(m, "expires_at", json_string("2318-01-01T00:00:00Z"));   /* never unloaded */
        json_object_set_new(m, "size_vram", json_integer(0));
        json_array_append_new(models, m);
    }
    respond_doc(x, 200, json_pack("{s:o}", "models", models));
}

/* The /api/ endpoints other than chat and generate: true when handled. */
static bool handle_ollama(gateway *g, http_exchange *x, const http_request *req, const gw_key *key, bool get, bool post) {
    const char *path = req->path;
    if (!strcmp(path, "/api/tags") && get) {
        ollama_list l = {.g = g, .models = json_array()};
        each_served_model(g, key, ollama_add, &l);
        respond_doc(x, 200, json_pack("{s:o}", "models", l.models));
    } else if (!strcmp(path, "/api/show") && post) {
        handle_ollama_show(g, x, req, key);
    } else if (!strcmp(path, "/api/ps") && get) {
        handle_ollama_ps(g, x, key);
    } else if (!strcmp(path, "/api/version") && get) {
        respond_doc(x, 200, json_pack("{s:s,s:s}", "version", OLLAMA_API_VERSION, "smolgate", SMOLGATE_VERSION));
    } else {
        return false;
    }
    return true;
}

/* Breakers listed by GET /v1/status at most (open ones first): the page stays small
 * whatever clients send; breakers.entries says how many there are. */
#define STATUS_MAX_BREAKERS 100

/* Targets (open or failing breakers, bounded), local engines and (admin only) the
 * gateway-wide counters, breaker table, state and ledger. */
/* %XX decoded into out (cap bytes); -1 on a malformed escape, a control character (NUL
 * included) or an id too long. */
static int percent_decode(const char *s, char *out, size_t cap) {
    size_t o = 0;
    for (; *s; s++) {
        unsigned c = (unsigned char)*s;
        if (c == '%') {
            unsigned v = 0;
            for (int k = 1; k <= 2; k++) {
                char h = s[k];
                int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0) return -1;
                v = v * 16 + (unsigned)d;
            }
            c = v;
            s += 2;
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= cap) return -1;
        out[o++] = (char)c;
    }
    out[o] = 0;
    return o ? 0 : -1;
}

/* GET /v1/models/{id} (OpenAI's models.retrieve): the object GET /v1/models lists for it,
 * else, for a model id this gateway can serve to this key (a provider/model or a name of
 * a known family), {id, object, created, owned_by: the provider}; 404 in OpenAI's shape
 * otherwise. The id arrives percent-encoded (local%2Fx). */
static void handle_model(gateway *g, http_exchange *x, const char *enc, const gw_key *key) {
    char id[512];
    json_t *found = NULL;
    if (percent_decode(enc, id, sizeof id) == 0) {
        json_t *data = model_list(g, key, (int64_t)time(NULL)), *m;
        size_t i;
        json_array_foreach(data, i, m) {
            if (!strcmp(json_string_value(json_object_get(m, "id")), id)) { found = json_incref(m); break; }
        }
        json_decref(data);
        gw_resolved r;
        sg_error err;
        if (!found && !config_resolve_model(g->cfg, id, &r, &err) && !r.route && (!key || config_key_allows(key, &r)))
            found = json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created", (json_int_t)time(NULL),
                              "owned_by", r.provider->name);
    } else {
        snprintf(id, sizeof id, "%.200s", enc);
    }
    if (!found) {
        gw_api_error e;
        gw_api_fail(&e, 404, "model_not_found", "model", "The model '%.200s' does not exist", id);
        snprintf(e.type, sizeof e.type, "invalid_request_error");
        sg_buf b;
        sg_buf_init(&b);
        gw_client_apis[0]->error_body(&b, &e);
        respond_json(x, 404, b.data, b.len);
        sg_buf_free(&b);
        return;
    }
    char *s = json_dumps(found, JSON_COMPACT);
    respond_json(x, 200, s, strlen(s));
    free(s);
    json_decref(found);
}

static void handle_status(gateway *g, http_exchange *x, const gw_key *key) {
    bool all = config_key_sees_all(key);
    json_t *br = json_array();
    breaker_view views[STATUS_MAX_BREAKERS];
    size_t n = breaker_list(g->breakers, &g->cfg->circuit_breaker, loop_now_ms(g->loop), views, STATUS_MAX_BREAKERS);
    for (size_t i = 0; i < n; i++) {
        if (!all && !key_sees_target(g->cfg, key, views[i].target)) continue;
        json_array_append_new(br, json_pack("{s:s,s:s,s:i,s:I}", "target", views[i].target, "state",
                                            breaker_state_name(views[i].state), "failures", views[i].failures,
                                            "cooldown_ms", (json_int_t)views[i].cooldown_left_ms));
    }
    json_t *locals = json_array();
    for (size_t i = 0; i < g->n_locals; i++) {
        if (!all && !key_sees_local(g, key, g->locals[i].lm)) continue;
        local_stats st;
        local_get_stats(g->locals[i].lm, &st);
        json_array_append_new(locals, json_pack("{s:s,s:i,s:{s:i,s:i,s:i,s:I,s:I,s:I,s:I,s:I}}", "name", g->locals[i].name, "load",
                                                local_load(g->locals[i].lm), "batch", "parallel", st.slots, "active",
                                                st.active, "max_active", st.max_active, "steps", (json_int_t)st.steps,
                                                "batched_steps", (json_int_t)st.batched_steps, "reused_prompt_tokens",
                                                (json_int_t)st.reused_tokens, "drafted_tokens",
                                                (json_int_t)st.drafted_tokens, "accepted_draft_tokens",
                                                (json_int_t)st.accepted_tokens));
    }
    json_t *doc = json_pack("{s:o,s:o}", "targets", br, "local", locals);
    if (all) {   /* every tenant's traffic and the shared stores: not for a user key */
        const gw_config *c = g->cfg;
        breaker_stats bs;
        breaker_get_stats(g->breakers, &bs);
        json_object_set_new(doc, "breakers", json_pack("{s:I,s:I,s:I,s:I,s:I}", "entries", (json_int_t)bs.entries, "open",
                                                       (json_int_t)bs.open, "max", (json_int_t)bs.max_entries, "evicted",
                                                       (json_int_t)bs.evicted, "evicted_open", (json_int_t)bs.evicted_open));
        json_object_set_new(doc, "stats", json_pack("{s:I,s:I,s:I,s:I}", "requests", (json_int_t)g->stats.requests,
                                                    "errors", (json_int_t)g->stats.errors, "fallbacks",
                                                    (json_int_t)g->stats.fallbacks, "attempts", (json_int_t)g->stats.attempts));
        limits_stats lims;
        limits_get_stats(g->limits, &lims);
        json_object_set_new(doc, "state", json_pack("{s:s,s:s,s:i,s:b,s:b,s:I}", "store", lims.redis ? "redis" : "in-process",
                                                    "on_redis_error", c->state.fail_open ? "open" : "closed", "timeout_ms",
                                                    (int)c->state.timeout_ms, "connected", lims.connected, "outage",
                                                    lims.outage, "retired", (json_int_t)g->n_old_limits));
        ledger_stats st;
        ledger_get_stats(g->ledger, &st);
        json_t *lj = json_pack("{s:s,s:I,s:I,s:I,s:I,s:b}", "engine", c->ledger.kind == GW_LEDGER_POSTGRES ? "postgres" : "sqlite",
                               "appended", (json_int_t)st.appended, "delivered", (json_int_t)st.delivered, "pending",
                               (json_int_t)st.pending, "lost", (json_int_t)st.append_failures, "database_up",
                               st.db_connected);
        if (c->ledger.kind == GW_LEDGER_SQLITE) json_object_set_new(lj, "sqlite", json_string(c->ledger.sqlite_path));
        json_object_set_new(doc, "ledger", lj);
    }
    char *s = json_dumps(doc, JSON_COMPACT);
    respond_json(x, 200, s, strlen(s));
    free(s);
    json_decref(doc);
}

static void handle_metrics(gateway *g, http_exchange *x) {
    sg_buf b;
    sg_buf_init(&b);
    metrics_render(g->metrics, &b);
    ledger_stats st;
    ledger_get_stats(g->ledger, &st);
    metrics_render_ledger(&st, &b);
    if (g->otlp) {
        otlp_stats os;
        otlp_get_stats(g->otlp, &os);
        otlp_render_metrics(&os, &b);
    }
    http_header h[1] = {{"content-type", "text/plain; version=0.0.4"}};
    http_respond(x, 200, h, 1, b.data, b.len);
    sg_buf_free(&b);
}

/* GET /v1/usage: the query runs on the ledger's worker; the answer comes back here. */
typedef struct usage_call {
    http_exchange *x;
    bool gone;
    int status;
    char *body;
    size_t len;
} usage_call;

static void usage_answer(loop *l, void *arg) {
    (void)l;
    usage_call *u = arg;
    if (!u->gone) respond_json(u->x, u->status, u->body ? u->body : "{}", u->body ? u->len : 2);
    else http_exchange_close(u->x);
    free(u->body);
    free(u);
}

static void usage_done(void *arg, int status, const char *body, size_t len) {   /* worker thread */
    usage_call *u = arg;
    u->status = status;
    u->body = body ? sg_xstrndup(body, len) : NULL;
    u->len = len;
    loop_post(http_exchange_loop(u->x), usage_answer, u);
}

static void usage_abort(http_exchange *x, void *arg) {
    (void)x;
    ((usage_call *)arg)->gone = true;
}

/* A user key reads its own records only (usage_http confines the query); admin: all. */
static void handle_usage(gateway *g, http_exchange *x, const http_request *req, const gw_key *key) {
    usage_call *u = sg_xcalloc(1, sizeof *u);
    u->x = x;
    http_exchange_on_abort(x, usage_abort, u);
    if (ledger_usage_async(g->ledger, req->query, config_key_sees_all(key) ? NULL : key->id, usage_done, u) != 0) {
        free(u);
        respond_error(x, gw_client_apis[0], 429, "too_many_queries", "too many usage queries at once; try again");
    }
}

/* ---- stored responses: reads and deletes run through response_store.h, off the loop when
 * the store is the ledger's database; the answer comes back here ---- */

typedef enum { RC_GET, RC_ITEMS, RC_DELETE, RC_CREATE } rcall_kind;

typedef struct responses_call {
    gateway *g;
    http_exchange *x;
    bool gone;
    rcall_kind kind;
    char id[RSTORE_MAX_ID + 2];
    char *ids[RSTORE_MAX_FETCH];   /* RC_CREATE: what the body names */
    size_t n;
} responses_call;

static void rcall_free(responses_call *c) {
    for (size_t i = 0; i < c->n; i++) free(c->ids[i]);
    free(c);
}

static void rcall_abort(http_exchange *x, void *arg) {
    (void)x;
    ((responses_call *)arg)->gone = true;
}

static const gw_key *authenticate(gateway *g, const http_request *req, bool *ok);

static void rcall_done(loop *l, void *arg, rstore_status st, rstore_entry *entries) {
    (void)l;
    responses_call *c = arg;
    if (c->gone) { http_exchange_close(c->x); rcall_free(c); return; }
    http_exchange_on_abort(c->x, NULL, NULL);
    if (c->kind == RC_CREATE && st == RSTORE_OK) {
        /* the key again: a reload may have replaced the configuration meanwhile */
        const http_request *req = http_exchange_request(c->x);
        bool ok;
        const gw_key *key = authenticate(c->g, req, &ok);
        if (!ok) {
            respond_error(c->x, &gw_api_openai_responses, 401, "invalid_api_key", "a valid smolgate API key is required");
        } else {
            rstore_lookaside((const char *const *)c->ids, entries, c->n);   /* what the parse reads */
            proxy_handle(c->g, c->x, req, &gw_api_openai_responses, key);
            rstore_lookaside(NULL, NULL, 0);
        }
        rcall_free(c);
        return;
    }
    sg_buf b;
    sg_buf_init(&b);
    int status = st == RSTORE_UNAVAILABLE ? gw_responses_unavailable(&b)
               : c->kind == RC_DELETE ? gw_responses_deleted(st, c->id, &b)
               : c->kind == RC_ITEMS ? gw_responses_input_items(&entries[0], c->id, http_exchange_request(c->x)->query, &b)
               : gw_responses_get(&entries[0], c->id, &b);
    respond_json(c->x, status, b.data, b.len);
    sg_buf_free(&b);
    rcall_free(c);
}

static responses_call *rcall_new(gateway *g, http_exchange *x, rcall_kind kind) {
    responses_call *c = sg_xcalloc(1, sizeof *c);
    c->g = g;
    c->x = x;
    c->kind = kind;
    http_exchange_on_abort(x, rcall_abort, c);
    return c;
}

/* POST /v1/responses: with the store in a database, the responses the body names are
 * read first (off the loop), then the request goes to the proxy, whose parse finds them. */
static void handle_create_response(gateway *g, http_exchange *x, const http_request *req, const gw_key *key) {
    char *ids[RSTORE_MAX_FETCH];
    size_t n = rstore_uses_db() ? gw_responses_refs(req->body, req->body_len, ids, RSTORE_MAX_FETCH) : 0;
    if (!n) { proxy_handle(g, x, req, &gw_api_openai_responses, key); return; }
    responses_call *c = rcall_new(g, x, RC_CREATE);
    memcpy(c->ids, ids, n * sizeof *ids);
    c->n = n;
    rstore_who who = {key ? key->id : NULL, key && key->role == GW_ROLE_ADMIN};
    rstore_fetch_async(g->loop, (const char *const *)c->ids, n, &who, rcall_done, c);
}

/* GET /v1/responses/{id}, GET /v1/responses/{id}/input_items, DELETE /v1/responses/{id}
 * (rest: the path after "/v1/responses/"). */
static void handle_stored_response(gateway *g, http_exchange *x, const char *rest, bool get, const gw_key *key) {
    const char *slash = strchr(rest, '/');
    rcall_kind kind = !get ? RC_DELETE : slash ? RC_ITEMS : RC_GET;
    sg_buf b;
    sg_buf_init(&b);
    char id[RSTORE_MAX_ID + 2];
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    snprintf(id, sizeof id, "%.*s", (int)(n < sizeof id - 1 ? n : sizeof id - 1), rest);
    int status = 0;
    if (slash && (!get || strcmp(slash, "/input_items"))) {
        gw_api_error e;   /* the path is not echoed: its bytes may be anything */
        gw_api_fail(&e, 404, "not_found", NULL, "unknown endpoint: %s under /v1/responses/{id} (GET .../input_items is "
                    "the only one)", get ? "GET" : "DELETE");
        oai_error_body(&b, &e);
        status = 404;
    } else if (n > RSTORE_MAX_ID) {
        status = gw_responses_check_id("", &b);
    } else {
        status = gw_responses_check_id(id, &b);
    }
    if (status) { respond_json(x, status, b.data, b.len); sg_buf_free(&b); return; }
    sg_buf_free(&b);
    responses_call *c = rcall_new(g, x, kind);
    snprintf(c->id, sizeof c->id, "%s", id);
    rstore_who who = {key ? key->id : NULL, key && key->role == GW_ROLE_ADMIN};
    const char *ids[1] = {c->id};
    if (kind == RC_DELETE) rstore_delete_async(g->loop, c->id, &who, rcall_done, c);
    else rstore_fetch_async(g->loop, ids, 1, &who, rcall_done, c);
}

/* The gateway key a client presents (Authorization: Bearer or x-api-key): one of the
 * file's, else one made at run time (keystore.h; only where the file has keys, so that
 * key management never turns authentication on by itself). */
static const gw_key *authenticate(gateway *g, const http_request *req, bool *ok) {
    *ok = true;
    if (!g->cfg->n_keys) return NULL;
    const char *v = http_request_header(req, "authorization");
    const char *k = NULL;
    if (v && !strncasecmp(v, "Bearer ", 7)) k = v + 7;
    if (!k) k = http_request_header(req, "x-api-key");
    if (!k) k = http_request_header(req, "x-goog-api-key");
    const gw_key *key = NULL;
    uint8_t h[GW_SHA256_LEN];
    if (k && !config_key_hash(k, strlen(k), h)) {
        key = config_key_find_hash(g->cfg, h);
        if (!key) key = keystore_find_hash(g->keys, h, (int64_t)time(NULL));
        explicit_bzero(h, sizeof h);
    }
    if (!key) *ok = false;
    return key;
}

/* ---- /admin/keys: run-time keys (keystore.h); the calls run on its worker ---- */

typedef struct admin_call {
    http_exchange *x;
    bool gone;
} admin_call;

static void admin_abort(http_exchange *x, void *arg) {
    (void)x;
    ((admin_call *)arg)->gone = true;
}

static void admin_done(void *arg, int status, const char *body, size_t len) {   /* loop thread */
    admin_call *a = arg;
    if (a->gone) http_exchange_close(a->x);
    else {
        http_exchange_on_abort(a->x, NULL, NULL);
        respond_json(a->x, status, body, len);
    }
    free(a);
}

static void handle_admin_keys(gateway *g, http_exchange *x, const http_request *req, const char *rest, const gw_key *key) {
    if (!key) {   /* no keys in the file: nothing to manage keys with */
        respond_error(x, gw_client_apis[0], 403, "permission_denied",
                      "key management needs gateway keys: add a key with role admin to keys: in the configuration");
        return;
    }
    if (key->role != GW_ROLE_ADMIN) {
        respond_error(x, gw_client_apis[0], 403, "permission_denied", "/admin/keys needs an admin key");
        return;
    }
    const char *id = NULL;
    char buf[80];
    if (*rest == '/') {
        if (!rest[1] || strlen(rest + 1) >= sizeof buf || strchr(rest + 1, '/')) {
            respond_error(x, gw_client_apis[0], 404, "key_not_found", "no gateway key by that id");
            return;
        }
        snprintf(buf, sizeof buf, "%s", rest + 1);
        id = buf;
    }
    admin_call *a = sg_xcalloc(1, sizeof *a);
    a->x = x;
    http_exchange_on_abort(x, admin_abort, a);
    keystore_admin(g->keys, g->cfg, req->method, id, req->body, req->body_len, admin_done, a);
}

static void handler(http_exchange *x, const http_request *req, void *arg) {
    gateway *g = arg;
    const char *m = req->method, *path = req->path;
    bool get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST");
    if (!strcmp(path, "/healthz") && get) { respond_json(x, 200, "{\"status\":\"ok\"}", 15); return; }
    if (!strcmp(path, "/readyz") && get) {
        if (g->shutting_down) respond_json(x, 503, "{\"status\":\"shutting down\"}", 26);
        else respond_json(x, 200, "{\"status\":\"ready\"}", 18);
        return;
    }
    if (dashboard_serve_page(x, req)) return;   /* the page itself holds no data: no key */
    if (!strcmp(path, "/") && get) {   /* what Ollama clients probe for */
        http_header h[1] = {{"content-type", "text/plain; charset=utf-8"}};
        http_respond(x, 200, h, 1, "Ollama is running", 17);
        return;
    }
    const gw_client_api *chat_api = gw_client_api_for_path(path);   /* NULL: not a chat endpoint */
    bool count = !strcmp(path, "/v1/messages/count_tokens");
    bool ollama = !strncmp(path, "/api/", 5);
    const gw_client_api *wire = gw_client_api_for_errors(path);   /* errors in the shape its clients read */
    bool ok;
    const gw_key *key = authenticate(g, req, &ok);
    if (!ok) {
        respond_error(x, wire, 401, "invalid_api_key", "a valid smolgate API key is required (Authorization: Bearer or x-api-key)");
        return;
    }
    if (key && key->role == GW_ROLE_METRICS && strcmp(path, "/metrics")) {
        respond_error(x, wire, 403, "permission_denied", "this API key reads GET /metrics only");
        return;
    }
    if (chat_api) {
        if (!post) { respond_error(x, wire, 405, "method_not_allowed", "use POST"); return; }
        if (chat_api == &gw_api_openai_responses) handle_create_response(g, x, req, key);
        else proxy_handle(g, x, req, chat_api, key);
    } else if (count) {
        if (!post) { respond_error(x, wire, 405, "method_not_allowed", "use POST"); return; }
        count_tokens_handle(g, x, req, key);
    } else if (ollama && handle_ollama(g, x, req, key, get, post)) {
        return;
    } else if ((!strcmp(path, "/v1/models") || !strcmp(path, "/models")) && get) {
        handle_models(g, x, key);
    } else if (!strcmp(path, AI_GATEWAY_BASE "/config") && get) {
        handle_ai_gateway_config(g, x, key);
    } else if ((!strncmp(path, "/v1/models/", 11) || !strncmp(path, "/models/", 8)) && get) {
        handle_model(g, x, path + (path[1] == 'v' ? 11 : 8), key);
    } else if (!strcmp(path, "/v1/status") && get) {
        handle_status(g, x, key);
    } else if (!strcmp(path, "/metrics") && get) {
        if (config_key_reads_metrics(key)) handle_metrics(g, x);
        else respond_error(x, wire, 403, "permission_denied", "GET /metrics needs an admin key or a key with role metrics");
    } else if (!strcmp(path, "/v1/usage") && get) {
        handle_usage(g, x, req, key);
    } else if (!strncmp(path, "/admin/keys", 11) && (!path[11] || path[11] == '/')) {
        handle_admin_keys(g, x, req, path + 11, key);
    } else if (dashboard_owns_path(path)) {
        dashboard_admin(g, x, req, key);
    } else if (!strncmp(path, "/v1/responses/", 14) && path[14] && (get || !strcmp(m, "DELETE"))) {
        handle_stored_response(g, x, path + 14, get, key);
    } else {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown endpoint %s %.200s", m, path);
        respond_error(x, wire, 404, "not_found", msg);
    }
}

/* ---- local models ---- */

/* The engines of the in-process providers (their `models:`, gw_provider.local). */
static int start_locals(gateway *g, sg_error *err) {
    for (size_t i = 0; i < g->cfg->n_providers; i++) {
        const gw_provider *p = &g->cfg->providers[i];
        if (!p->entry->in_process || !p->configured) continue;
        for (size_t k = 0; k < p->local.n_models; k++) {
            const gw_local_model *lm = &p->local.models[k];
            if (gateway_local(g, lm->name)) continue;
            local_opts o = {.threads = p->local.threads, .queue = p->local.queue, .ctx = p->local.ctx,
                            .parallel = p->local.parallel, .draft = p->local.draft};
            SG_INFO("loading local model %s from %s", lm->name, lm->path);
            gw_local *l = local_new(g->loop, lm->path, &o, err);
            if (!l) return sg_fail_wrap(err, "local model %s", lm->name);
            g->locals = sg_xrealloc(g->locals, (g->n_locals + 1) * sizeof *g->locals);
            g->locals[g->n_locals++] = (gw_local_entry){sg_xstrdup(lm->name), sg_xstrdup(lm->path), l};
            if (lm->alias) {
                g->locals = sg_xrealloc(g->locals, (g->n_locals + 1) * sizeof *g->locals);
                g->locals[g->n_locals++] = (gw_local_entry){sg_xstrdup(lm->alias), sg_xstrdup(lm->path), l};
            }
        }
    }
    return 0;
}

/* ---- signals: SIGTERM/SIGINT shut down, SIGHUP reloads ---- */

typedef struct signal_watch {
    gateway *g;
    loop_watch w;
    int fd;
} signal_watch;

static void shutdown_done(http_server *s, void *arg) {
    (void)s;
    gateway *g = arg;
    loop_stop(g->loop);
}

/* ---- reload: every section applied, or none ---- */

/* Frees the limiters reloads replaced, once the requests holding their leases are over. */
static void sweep_old_limits(loop *l, loop_timer *t, void *arg) {
    (void)t;
    gateway *g = arg;
    size_t kept = 0;
    for (size_t i = 0; i < g->n_old_limits; i++) {
        if (limits_idle(g->old_limits[i])) limits_free(g->old_limits[i]);
        else g->old_limits[kept++] = g->old_limits[i];
    }
    g->n_old_limits = kept;
    if (kept) loop_timer_start(l, &g->old_limits_timer, 1000);
    else SG_INFO("state: the replaced limiter is idle and freed");
}

/* A ledger a reload replaced: it delivers what it holds (30 s at most) on this thread, so
 * the loop never waits for a database; what it cannot deliver stays in its spool_dir for
 * whichever ledger opens that folder next. */
static void *close_old_ledger(void *arg) {
    ledger *old = arg;
    if (ledger_flush(old, 30000)) SG_WARN("ledger: the replaced ledger did not deliver everything within 30 s; "
                                          "the rest stays in its spool_dir");
    ledger_close(old, 1000);
    return NULL;
}

/* A trace exporter a reload replaced: what it holds gets one try (2 s at most, as at
 * shutdown) on this thread, off the loop. */
static void *close_old_otlp(void *arg) {
    otlp_close(arg, 2000);
    return NULL;
}

static void add_closer(gateway *g, pthread_t th) {
    g->closers = sg_xrealloc(g->closers, (g->n_closers + 1) * sizeof *g->closers);
    g->closers[g->n_closers++] = th;
}

/* The response store from the configuration: its bounds, and where it lives (the
 * ledger's database unless `responses.backend: memory`). */
static void apply_responses(const gw_config *c) {
    rstore_limits l = {c->responses.max_count, c->responses.max_bytes, c->responses.max_age_s};
    rstore_configure(&l);
    if (c->responses.memory) { rstore_use_memory(); return; }
    const char *t = c->ledger.kind == GW_LEDGER_POSTGRES ? c->ledger.postgres_url : c->ledger.sqlite_path;
    rstore_use_db(c->ledger.kind, t);
}

/* A budget crossed its alert threshold (limits.h, which logged it): to the webhook, with
 * ids and amounts only. */
static void on_budget_alert(void *ctx, const limits_alert_info *a) {
    gateway *g = ctx;
    bool key = !strncmp(a->scope, "key:", 4), route = !strncmp(a->scope, "route:", 6);
    json_t *o = json_pack("{s:s,s:s,s:s,s:f,s:f,s:i,s:I}", "event", "budget_alert", "scope",
                          key ? "key" : route ? "route" : "other", "period", a->period, "spent_usd", a->spent / 1e6,
                          "budget_usd", a->cap / 1e6, "threshold_percent", a->percent, "time", (json_int_t)time(NULL));
    if (key) json_object_set_new(o, "key_id", json_string(a->scope + 4));
    if (route) json_object_set_new(o, "route", json_string(a->scope + 6));
    json_object_set_new(o, "label", json_string(a->label));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s) alert_hook_send(g->alerts, s);
    free(s);
}

static limits *new_limits(gateway *g, const gw_config *c, sg_error *err) {
    limits_opts o = {.on_budget_alert = on_budget_alert, .alert_ctx = g};
    return limits_new(g->loop, &c->state, &o, err);
}

/* Run-time keys live in the ledger's database; the alert webhook is the file's. */
static void apply_keys(gateway *g, const gw_config *c) {
    const char *t = c->ledger.kind == GW_LEDGER_POSTGRES ? c->ledger.postgres_url : c->ledger.sqlite_path;
    keystore_use_db(g->keys, c->ledger.kind, t);
    dashboard_use_db(g->dash, c->ledger.kind, t);
    keystore_rebuild(g->keys, c);
    alert_hook_configure(g->alerts, c->alerts.webhook_url, c->alerts.timeout_ms, c->alerts.retries);
}

static void reload(gateway *g) {
    gw_config *c = NULL;
    cost_catalog *costs = NULL;
    limits *lim = NULL;
    ledger *led = NULL;
    otlp *tr = NULL;
    const char *section = "";   /* where a refusal came from, for its log line */
    sg_error err;
    if (config_load_ex(&c, g->config_path, &g->overrides, NULL, &err) || config_reload_check(g->cfg, c, &err) ||
        !(costs = cost_catalog_build(c, &err)))
        goto refuse;
    /* Build what the new sections need before touching anything: any failure refuses. */
    if (!config_state_same_store(&g->cfg->state, &c->state) && !(lim = new_limits(g, c, &err))) {
        section = "state: ";
        goto refuse;
    }
    if (!config_ledger_equal(&g->cfg->ledger, &c->ledger)) {
        ledger_opts lo;
        ledger_opts_from_config(&lo, c);
        if (!(led = ledger_open(&lo, &err))) {
            section = "ledger: ";
            goto refuse;
        }
    }
    /* tracing: a new exporter when any of its keys changed (none when it is now off) */
    bool new_tracing = !config_tracing_equal(&g->cfg->tracing, &c->tracing);
    if (new_tracing && c->tracing.endpoint) {
        otlp_opts to;
        otlp_opts_from_config(&to, c);
        if (!(tr = otlp_open(&to, &err))) {
            section = "tracing: ";
            goto refuse;
        }
    }
    gw_config *old = g->cfg;
    g->cfg = c;
    if (start_locals(g, &err)) {   /* new local models load now; a failure keeps the old config */
        g->cfg = old;
        goto refuse;
    }
    /* Commit. Everything below succeeds. */
    breaker_table_set_max(g->breakers, c->circuit_breaker.max_targets);
    apply_responses(c);
    apply_keys(g, c);              /* before old goes: run-time keys now point into c */
    cost_catalog_free(g->costs);   /* requests look prices up when they end: swap now */
    g->costs = costs;
    if (lim) {   /* requests in flight end their leases on the old limiter: it stays until then */
        g->old_limits = sg_xrealloc(g->old_limits, (g->n_old_limits + 1) * sizeof *g->old_limits);
        g->old_limits[g->n_old_limits++] = g->limits;
        g->limits = lim;
        if (!loop_timer_active(&g->old_limits_timer)) loop_timer_start(g->loop, &g->old_limits_timer, 0);
        SG_INFO("state: now %s (on_redis_error %s); counters start over in the new store",
                c->state.redis_url ? "redis" : "in-process", c->state.fail_open ? "open" : "closed");
    } else {
        limits_set_policy(g->limits, &c->state);
        if (old->state.fail_open != c->state.fail_open || old->state.timeout_ms != c->state.timeout_ms)
            SG_INFO("state: on_redis_error %s, timeout_ms %u (were %s, %u)", c->state.fail_open ? "open" : "closed",
                    c->state.timeout_ms, old->state.fail_open ? "open" : "closed", old->state.timeout_ms);
    }
    if (led) {   /* records of requests ending from now on go to the new ledger */
        ledger *was = g->ledger;
        sg_error ferr;
        ledger_flush_appends(was, &ferr);   /* before any answer of this iteration goes out */
        g->ledger = led;
        pthread_t th;
        if (pthread_create(&th, NULL, close_old_ledger, was)) {
            close_old_ledger(was);   /* no thread: deliver here, bounded */
        } else {
            add_closer(g, th);
        }
        if (c->ledger.kind == GW_LEDGER_SQLITE) SG_INFO("ledger: now sqlite %s (spool %s)", c->ledger.sqlite_path, c->ledger.spool_dir);
        else SG_INFO("ledger: now postgres (spool %s)", c->ledger.spool_dir);
    }
    if (new_tracing) {   /* requests ending from now on go to the new exporter (or none) */
        otlp *was = g->otlp;
        g->otlp = tr;
        pthread_t th;
        if (was && pthread_create(&th, NULL, close_old_otlp, was)) close_old_otlp(was);
        else if (was) add_closer(g, th);
        if (was && !tr) SG_INFO("tracing: off");
    }
    if (old->n_keys && !c->n_keys) SG_WARN("auth: none: the gateway now serves without keys, as the file says");
    config_unref(old);
    sg_log_set_level(c->log_level);
    SG_INFO("configuration reloaded from %s", g->config_path ? g->config_path : "the environment");
    return;
refuse:
    SG_ERROR("reload refused, the running configuration stays: %s%s", section, err.msg);
    otlp_close(tr, 0);
    ledger_close(led, 0);
    limits_free(lim);
    cost_catalog_free(costs);
    config_unref(c);
}

static void on_signal(loop *l, loop_watch *w, unsigned events, void *arg) {
    (void)l; (void)w; (void)events;
    signal_watch *sw = arg;
    struct signalfd_siginfo si;
    while (read(sw->fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) { reload(sw->g); continue; }
        if (sw->g->shutting_down) { loop_stop(sw->g->loop); return; }   /* a second signal: now */
        sw->g->shutting_down = true;
        SG_INFO("shutting down: letting requests in flight finish (up to %u ms)", sw->g->cfg->server.shutdown_grace_ms);
        http_server_shutdown(sw->g->http, sw->g->cfg->server.shutdown_grace_ms, shutdown_done, sw->g);
    }
}

/* ---- serve ---- */

/* The block printed once at start-up: where to point clients, what is served, and what
 * to do when that is nothing. Plain lines on stderr (with the log), for a person. */
static void print_welcome(const gateway *g, int port) {
    const gw_config *c = g->cfg;
    sg_buf b;
    sg_buf_init(&b);
    char host[256];
    snprintf(host, sizeof host, "%s", c->listen);
    char *colon = strrchr(host, ':');
    if (colon) *colon = 0;
    bool any = !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]");   /* every interface */
    if (any) snprintf(host, sizeof host, "127.0.0.1");
    sg_buf_printf(&b, "\nsmolgate %s is serving on http://%s:%d\n", SMOLGATE_VERSION, host, port);
    sg_buf_printf(&b, "  OpenAI API    base URL http://%s:%d/v1\n", host, port);
    sg_buf_printf(&b, "  Anthropic API base URL http://%s:%d\n", host, port);
    size_t n_local = 0, n_remote = 0;
    for (size_t i = 0; i < c->n_providers; i++) {
        const gw_provider *p = &c->providers[i];
        if (!p->configured) continue;
        if (p->entry->in_process) {
            for (size_t j = 0; j < p->local.n_models; j++) {
                const gw_local_model *m = &p->local.models[j];
                sg_buf_printf(&b, "  %s  %s/%s%s%s%s  %s\n", n_local++ ? "              " : "local models", p->name, m->name,
                              m->alias ? " (also " : "", m->alias ? m->alias : "", m->alias ? ")" : "", m->path);
            }
        }
    }
    for (size_t i = 0; i < c->n_providers; i++) {
        const gw_provider *p = &c->providers[i];
        if (!p->configured || p->entry->in_process) continue;
        sg_buf_printf(&b, "%s%s", n_remote++ ? ", " : "  providers     ", p->name);
    }
    if (n_remote) sg_buf_puts(&b, "\n");
    for (size_t i = 0; i < c->n_routes && i < 8; i++) sg_buf_printf(&b, "%s%s", i ? ", " : "  routes        ", c->routes[i].name);
    if (c->n_routes > 8) sg_buf_printf(&b, " and %zu more", c->n_routes - 8);
    if (c->n_routes) sg_buf_puts(&b, "\n");
    if (c->n_keys) sg_buf_printf(&b, "  gateway keys  %zu: every request needs one\n", c->n_keys);
    else if (any || (strcmp(host, "127.0.0.1") && strcmp(host, "[::1]") && strcmp(host, "localhost")))
        sg_buf_printf(&b, "  gateway keys  none: anyone who can reach port %d of this machine (%s) may use it\n", port,
                      c->listen);
    else sg_buf_printf(&b, "  gateway keys  none: anyone who can reach %s:%d may use it\n", host, port);
    if (c->ledger.kind == GW_LEDGER_POSTGRES) sg_buf_puts(&b, "  cost ledger   PostgreSQL (smolgate usage --config ...)\n");
    else sg_buf_printf(&b, "  cost ledger   %s (smolgate usage --db %s)\n", c->ledger.sqlite_path, c->ledger.sqlite_path);
    if (!n_local && !n_remote && !c->n_routes)
        sg_buf_puts(&b, "\n  Nothing to serve yet: no local model and no provider API key. Either\n"
                        "    smolgate pull smollm3          download SmolLM3-3B (GGUF Q4_K_M, about 1.9 GB), or\n"
                        "    export OPENAI_API_KEY=...      (or ANTHROPIC_API_KEY, GEMINI_API_KEY)\n"
                        "  then start smolgate again. Requests meanwhile get 404 with this advice.\n");
    sg_buf_puts(&b, "\n");
    fwrite(b.data, 1, b.len, stderr);
    sg_buf_free(&b);
}

/* http_server's before_send: the records of requests that ended in this iteration go to
 * the spool, in one write, before their answers go out. */
static void flush_ledger_appends(void *arg) {
    gateway *g = arg;
    sg_error err;
    ledger_flush_appends(g->ledger, &err);   /* a loss is counted and logged there */
}

/* Before the loop waits: the request log lines, and the records of requests whose
 * answers did not go out (a client gone), so that none waits in memory while idle. */
static void flush_pending(loop *l, void *arg) {
    (void)l;
    flush_ledger_appends(arg);
    sg_log_flush();
}

int gateway_serve(const gateway_opts *o, sg_error *err) {
    gw_config *cfg = NULL;
    int rc = config_load_ex(&cfg, o->config_path, &o->overrides, NULL, err);   /* no path: defaults */
    if (rc) return -1;
    if (o->check) {   /* the configuration, and every local model's files as they would load */
        for (size_t i = 0; i < cfg->n_providers && !rc; i++) {
            const gw_provider *p = &cfg->providers[i];
            if (!p->entry->in_process) continue;
            for (size_t j = 0; j < p->local.n_models && !rc; j++) {
                sg_model *m = model_load(p->local.models[j].path, err);
                if (!m) {
                    sg_fail_wrap(err, "local model %s/%s", p->name, p->local.models[j].name);
                    rc = -1;
                }
                model_free(m);
            }
        }
        if (!rc) {
            sg_buf b;
            sg_buf_init(&b);
            config_describe(cfg, &b);
            fwrite(b.data, 1, b.len, stdout);
            sg_buf_free(&b);
        }
        config_unref(cfg);
        return rc;
    }
    sg_log_set_level(cfg->log_level);
    if (cfg->empty)   /* a reload would refuse it (config_reload_check); at start it is the defaults */
        SG_WARN("%s is empty: serving the defaults, with no gateway key", cfg->path);
    signal(SIGPIPE, SIG_IGN);
    /* Request bodies and upstream answers of megabytes come and go. glibc raises its mmap
     * threshold each time such a block is freed, after which they are carved from the
     * heap and their pages stay with the process: RSS creeps up under mixed traffic.
     * A fixed threshold keeps every block of 256 KiB or more in its own mapping, given
     * back to the system when freed. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    /* A fixed threshold also fixes the heap's trim threshold at its default of 128 KiB:
     * with a few dozen requests in flight, freeing the one at the top of the heap gave
     * memory back and the next request took it again, each time a brk, a TLB flush and
     * fresh pages faulted in and zeroed (a third of the proxy's CPU at c=16). The heap
     * keeps up to 16 MiB of free top and grows 1 MiB at a time instead. */
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
    mallopt(M_TOP_PAD, 1024 * 1024);
    /* Block the signals we read from a signalfd before any thread starts (the local
     * models' workers, libcurl's resolver), so that no thread takes them by default. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    gateway *g = sg_xcalloc(1, sizeof *g);
    g->cfg = cfg;
    g->started_unix = (int64_t)time(NULL);
    g->config_path = o->config_path ? sg_xstrdup(o->config_path) : NULL;
    g->overrides = o->overrides;
    g->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull | 1;
    g->breakers = breaker_table_new(cfg->circuit_breaker.max_targets);
    apply_responses(cfg);
    signal_watch sw = {.g = g, .fd = -1};
    rc = -1;
    if (!(g->loop = loop_new(err))) goto out;
    loop_timer_init(&g->old_limits_timer, sweep_old_limits, g);
    if (!(g->costs = cost_catalog_build(cfg, err))) goto out;
    g->alerts = alert_hook_new();
    if (!(g->limits = new_limits(g, cfg, err))) goto out;
    g->keys = keystore_new(g->loop);
    g->dash = dashboard_new(g->loop);
    apply_keys(g, cfg);
    ledger_opts lo;
    ledger_opts_from_config(&lo, cfg);
    if (!(g->ledger = ledger_open(&lo, err))) goto out;
    g->metrics = metrics_new(0);
    if (cfg->tracing.endpoint) {
        otlp_opts to;
        otlp_opts_from_config(&to, cfg);
        if (!(g->otlp = otlp_open(&to, err))) goto out;
    }
    upstream_config uc;
    upstream_config_defaults(&uc);
    if (!(g->up = upstream_new(g->loop, &uc, err))) goto out;
    g->transport = (gw_transport){&gw_transport_upstream, g->up};
    if (start_locals(g, err)) goto out;
    http_server_config hc;
    http_server_config_defaults(&hc);
    hc.listen = cfg->listen;
    hc.max_connections = cfg->server.max_connections;
    hc.max_header_bytes = cfg->server.max_header_bytes;
    hc.max_body_bytes = cfg->server.max_body_bytes;
    hc.header_timeout_ms = cfg->server.header_timeout_ms;
    hc.body_timeout_ms = cfg->server.body_timeout_ms;
    hc.idle_timeout_ms = cfg->server.idle_timeout_ms;
    hc.write_timeout_ms = cfg->server.write_timeout_ms;
    hc.handler = handler;
    hc.handler_arg = g;
    hc.before_send = flush_ledger_appends;
    hc.before_send_arg = g;
    if (!(g->http = http_server_new(g->loop, &hc, err))) goto out;

    sw.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sw.fd < 0) { sg_fail(err, "signalfd: %s", strerror(errno)); goto out; }
    loop_watch_init(&sw.w, sw.fd, on_signal, &sw);
    if (loop_watch_set(g->loop, &sw.w, LOOP_READ, err)) goto out;
    loop_add_prepare(g->loop, flush_pending, g);   /* one write per iteration for each */

    sg_buf b;
    sg_buf_init(&b);
    config_describe(cfg, &b);
    SG_INFO("smolgate listening on %s (port %d); %s", cfg->listen, http_server_port(g->http), upstream_version());
    sg_log_flush();
    print_welcome(g, http_server_port(g->http));
    if (sg_log_enabled(SG_LOG_DEBUG)) SG_DEBUG("configuration:\n%s", b.data ? b.data : "");
    sg_buf_free(&b);
    rc = loop_run(g->loop, err);
    sg_log_flush();
    SG_INFO("stopped: %llu requests, %llu errors, %llu fallbacks", (unsigned long long)g->stats.requests,
            (unsigned long long)g->stats.errors, (unsigned long long)g->stats.fallbacks);
out:
    if (sw.fd >= 0) { loop_watch_remove(g->loop, &sw.w); close(sw.fd); }
    keystore_free(g->keys);   /* its last answers go out while the exchanges are there */
    dashboard_free(g->dash);  /* the same */
    g->dash = NULL;           /* requests that end as their exchanges close capture nothing */
    if (g->http) http_server_free(g->http);
    rstore_shutdown();   /* the responses' worker ends its queue (the exchanges are gone) */
    if (g->up) upstream_free(g->up);
    if (g->limits || g->n_old_limits) {   /* let reconciliations reach Redis (bounded), then free */
        sg_error e2;
        for (int i = 0; i < 50; i++) {
            bool busy = false;
            limits_stats st;
            if (g->limits) { limits_get_stats(g->limits, &st); busy |= st.in_flight > 0; }
            for (size_t k = 0; k < g->n_old_limits; k++) { limits_get_stats(g->old_limits[k], &st); busy |= st.in_flight > 0; }
            if (!busy) break;
            loop_run_once(g->loop, 20, &e2);
        }
        limits_free(g->limits);
        for (size_t k = 0; k < g->n_old_limits; k++) limits_free(g->old_limits[k]);
    }
    free(g->old_limits);
    for (size_t k = 0; k < g->n_closers; k++) pthread_join(g->closers[k], NULL);
    free(g->closers);
    cost_catalog_free(g->costs);
    if (g->ledger) ledger_close(g->ledger, 5000);   /* what cannot be delivered stays spooled */
    otlp_close(g->otlp, 2000);   /* one bounded try for what is queued */
    metrics_free(g->metrics);
    alert_hook_free(g->alerts);
    for (size_t i = 0; i < g->n_locals; i++) {
        bool alias = false;   /* an alias shares its model's engine */
        for (size_t k = 0; k < i; k++) alias |= g->locals[k].lm == g->locals[i].lm;
        if (!alias) local_free(g->locals[i].lm);
        free(g->locals[i].name);
        free(g->locals[i].path);
    }
    free(g->locals);
    breaker_table_free(g->breakers);
    if (g->loop) loop_free(g->loop);
    config_unref(g->cfg);
    free(g->config_path);
    free(g);
    return rc;
}
