/* test_config.c: the gateway configuration. Valid examples (tests/data/config/NAME.yaml) load
 * with the right values; every invalid example (tests/data/config/invalid/NAME.yaml, whose
 * first line is "# error: $FILE:LINE: key.path: message") fails with exactly that message
 * and never shows a value from the environment; ${ENV} expansion; the no-file defaults
 * from an injected environment; local model names; model id resolution; gateway key
 * hashing and lookup; key roles and what each may see; the rules a SIGHUP reload must
 * pass; the upstream: bounds and their per-provider overrides; reference counting. Run
 * from the repository root. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/buf.h"
#include "engine/speculate.h"
#include "gateway/config.h"
#include "testutil.h"

#define DATA "tests/data/config"

/* ------------------------------------------------------------------------------------ */
/* an injected environment */

typedef struct kv {
    const char *k, *v;
} kv;

static const char *env_table(void *ctx, const char *name) {
    for (const kv *e = ctx; e->k; e++)
        if (!strcmp(e->k, name)) return e->v;
    return NULL;
}

static config_env env_of(const kv *table) { return (config_env){env_table, (void *)table}; }

/* Every value here is treated as a secret: none may appear in any message. */
static const kv k_full_env[] = {
    {"OPENAI_API_KEY", "sk-test-openai-0123456789"},
    {"GROQ_API_KEY", "gsk-test-groq-0123456789"},
    {"ANTHROPIC_API_KEY", "sk-ant-test-0123456789"},
    {"GEMINI_API_KEY", "gemini-test-0123456789"},
    {"TEAM_B_KEY", "team-b-secret-key-0002"},
    {"REDIS_PASSWORD", "redis-pass-0123456789"},
    {"PG_PASSWORD", "pg-pass-0123456789"},
    {"SECRET_TOKEN", "hunter2-secret-value"},
    {"SHORT_KEY", "shorty-secret"},
    {NULL, NULL},
};
/* The same without Anthropic's key (for the "not configured" example). */
static const kv k_invalid_env[] = {
    {"OPENAI_API_KEY", "sk-test-openai-0123456789"},
    {"GROQ_API_KEY", "gsk-test-groq-0123456789"},
    {"SECRET_TOKEN", "hunter2-secret-value"},
    {"SHORT_KEY", "shorty-secret"},
    {NULL, NULL},
};

static void check_no_secret(const char *text, const kv *env) {
    for (const kv *e = env; e->k; e++)
        CHECK_MSG(!strstr(text, e->v), "the value of %s leaked into: %s", e->k, text);
}

static gw_config *load_ok(const char *path, const kv *env) {
    gw_config *c = NULL;
    sg_error err = {{0}};
    config_env e = env_of(env);
    int rc = config_load(&c, path, &e, &err);
    CHECK_MSG(rc == 0 && c, "%s: %s", path, err.msg);
    return c;
}

/* ------------------------------------------------------------------------------------ */
/* valid examples */

static void test_full(void) {
    gw_config *c = load_ok(DATA "/full.yaml", k_full_env);
    if (!c) return;
    CHECK_EQ_STR(c->path, DATA "/full.yaml");
    CHECK_EQ_STR(c->listen, "0.0.0.0:9090");
    CHECK_EQ_INT(c->log_level, SG_LOG_DEBUG);
    CHECK(c->direct);
    CHECK_EQ_INT(c->server.max_body_bytes, 10485760);
    CHECK_EQ_INT(c->server.header_timeout_ms, 5000);
    CHECK_EQ_INT(c->server.shutdown_grace_ms, 0);
    CHECK_EQ_INT(c->server.idle_timeout_ms, 75000);   /* default */

    /* providers: declared in file order, then the implicit ones (none left here) */
    CHECK_EQ_INT(c->n_providers, 5);
    const gw_provider *oa = config_provider(c, "openai");
    CHECK(oa && oa == &c->providers[0]);
    CHECK_EQ_INT(oa->type, GW_PROVIDER_OPENAI);
    CHECK(oa->declared && oa->configured);
    CHECK_EQ_STR(oa->base_url, "https://api.openai.com/v1");
    CHECK_EQ_STR(oa->api_key, "sk-test-openai-0123456789");
    CHECK_EQ_INT(oa->timeouts.connect_ms, 2000);
    CHECK_EQ_INT(oa->timeouts.first_token_ms, 15000);
    CHECK_EQ_INT(oa->timeouts.idle_ms, 120000);
    CHECK_EQ_INT(oa->timeouts.total_ms, 600000);
    CHECK_EQ_INT(oa->retries.max, 1);
    CHECK_EQ_INT(oa->retries.base_ms, 250);
    CHECK_EQ_INT(oa->retries.max_ms, 2000);
    CHECK_EQ_INT(oa->limits.rpm, 500);
    CHECK_EQ_INT(oa->limits.tpm, 200000);
    CHECK_EQ_INT(oa->limits.concurrency, -1);
    CHECK(oa->version == NULL);
    CHECK_EQ_INT(oa->line, 13);

    const gw_provider *gq = config_provider(c, "groq");
    CHECK(gq && gq->type == GW_PROVIDER_OPENAI);
    CHECK_EQ_STR(gq->base_url, "https://api.groq.com/openai/v1");   /* trailing '/' dropped */
    CHECK_EQ_STR(gq->api_key, "gsk-test-groq-0123456789");
    CHECK_EQ_INT(gq->n_headers, 2);
    if (gq->n_headers == 2) {
        CHECK_EQ_STR(gq->headers[0].name, "X-Team");
        CHECK_EQ_STR(gq->headers[0].value, "search");
        CHECK_EQ_STR(gq->headers[1].name, "X-Trace");
        CHECK_EQ_STR(gq->headers[1].value, "none");   /* ${TRACE_TOKEN:-none} */
    }
    CHECK_EQ_INT(gq->retries.max, 2);   /* default */

    const gw_provider *an = config_provider(c, "anthropic");
    CHECK(an && an->type == GW_PROVIDER_ANTHROPIC);
    CHECK_EQ_STR(an->base_url, "https://api.anthropic.com");
    CHECK_EQ_STR(an->version, "2023-06-01");
    CHECK_EQ_STR(an->api_key, "sk-ant-test-0123456789");

    const gw_provider *gg = config_provider(c, "google");
    CHECK(gg && gg->type == GW_PROVIDER_GOOGLE);
    CHECK_EQ_STR(gg->base_url, "https://generativelanguage.googleapis.com");
    CHECK_EQ_STR(gg->version, "v1beta");
    CHECK_EQ_STR(gg->api_key, "gemini-test-0123456789");

    const gw_provider *lo = config_provider(c, "local");
    CHECK(lo && lo->type == GW_PROVIDER_LOCAL && lo->configured);
    CHECK_EQ_INT(lo->local.n_models, 1);
    if (lo->local.n_models == 1) {
        CHECK_EQ_STR(lo->local.models[0].name, "smollm3-3b");
        CHECK_EQ_STR(lo->local.models[0].alias, "smollm3");
        CHECK_EQ_STR(lo->local.models[0].path, DATA "/models/SmolLM3-3B");   /* relative to the file */
    }
    CHECK_EQ_INT(lo->local.threads, 4);
    CHECK_EQ_INT(lo->local.queue, 8);
    CHECK_EQ_INT(lo->local.ctx, 8192);
    CHECK_EQ_INT(lo->local.parallel, 2);
    CHECK(lo->base_url == NULL && lo->api_key == NULL);

    /* models: prices exact, in pico-dollars per token (= micro-dollars per million) */
    CHECK_EQ_INT(c->n_models, 3);
    const gw_model_info *mini = config_model_info(c, oa, "gpt-4o-mini");
    CHECK(mini != NULL);
    if (mini) {
        CHECK_EQ_INT(mini->context_window, 128000);
        CHECK_EQ_INT(mini->max_output_tokens, 16384);
        CHECK_EQ_INT(mini->price.input, 150000);
        CHECK_EQ_INT(mini->price.cache_read, 75000);
        CHECK_EQ_INT(mini->price.cache_write, -1);   /* unpriced, not $0 */
        CHECK_EQ_INT(mini->price.output, 600000);
        CHECK_EQ_INT(mini->price.reasoning, 600000);  /* = output */
    }
    const gw_model_info *son = config_model_info(c, an, "claude-sonnet-4-5");
    CHECK(son && son->price.cache_write == 3750000 && son->price.input == 3000000 && son->price.output == 15000000);
    CHECK(son && son->max_output_tokens == -1);
    const gw_model_info *ll = config_model_info(c, gq, "llama-3.1-8b-instant");
    CHECK(ll && ll->price.input == 50000 && ll->context_window == -1);
    CHECK(config_model_info(c, oa, "gpt-4o") == NULL);

    /* routes */
    CHECK_EQ_INT(c->n_routes, 2);
    const gw_route *chat = config_route(c, "chat");
    CHECK(chat && chat == &c->routes[0]);
    if (chat) {
        CHECK_EQ_INT(chat->n_targets, 4);
        CHECK_EQ_INT(chat->n_groups, 3);
        CHECK_EQ_INT(chat->retry_budget, 2);
        CHECK_EQ_INT(chat->timeout_ms, 60000);
        CHECK_EQ_INT(chat->limits.rpm, 100);
        CHECK_EQ_INT(chat->limits.tpm, 100000);
        CHECK_EQ_INT(chat->limits.concurrency, 10);
        CHECK_EQ_INT(chat->per_key_limits.rpm, 20);
        CHECK_EQ_INT(chat->per_key_limits.tpm, -1);
        CHECK_EQ_INT(chat->budget.daily_usd, 10000000);
        CHECK_EQ_INT(chat->budget.monthly_usd, 100500000);
        CHECK_EQ_INT(chat->budget.total_usd, -1);
        CHECK_EQ_INT(chat->budget.alert_percent, 90);
        const gw_target *t = chat->targets;
        CHECK(t[0].provider == oa);
        CHECK_EQ_STR(t[0].model, "gpt-4o-mini");
        CHECK_EQ_STR(t[0].id, "openai/gpt-4o-mini");
        CHECK(t[0].info == mini);
        CHECK_EQ_INT(t[0].weight, 3);
        CHECK_EQ_INT(t[0].group, 0);
        CHECK(t[1].provider == gq && t[1].weight == 1 && t[1].group == 0 && t[1].info == ll);
        CHECK(t[2].provider == an && t[2].group == 1 && t[2].weight == 1 && t[2].info == son);
        CHECK(t[3].provider == lo && t[3].group == 2 && t[3].local == &lo->local.models[0]);
        CHECK_EQ_STR(t[3].model, "smollm3-3b");   /* the alias resolves to the canonical name */
    }
    const gw_route *cheap = config_route(c, "cheap");
    CHECK(cheap && cheap->n_targets == 2 && cheap->n_groups == 2);
    if (cheap) {
        CHECK(cheap->targets[0].provider == gg);
        CHECK_EQ_STR(cheap->targets[0].model, "gemini-2.5-flash");
        CHECK_EQ_STR(cheap->targets[0].id, "gemini-2.5-flash");
        CHECK_EQ_INT(cheap->retry_budget, 3);
        CHECK_EQ_INT(cheap->timeout_ms, 600000);
        CHECK_EQ_INT(cheap->limits.rpm, -1);
        CHECK_EQ_INT(cheap->budget.daily_usd, -1);
        CHECK_EQ_INT(cheap->budget.alert_percent, 80);
    }
    CHECK(config_route(c, "nope") == NULL);

    /* keys */
    CHECK_EQ_INT(c->n_keys, 2);
    const gw_key *ka = config_key_by_id(c, "team-a"), *kb = config_key_by_id(c, "team-b");
    CHECK(ka && kb);
    if (ka && kb) {
        CHECK(!ka->all_routes && ka->n_routes == 1 && ka->routes[0] == chat);
        CHECK_EQ_INT(ka->limits.rpm, 60);
        CHECK_EQ_INT(ka->budget.monthly_usd, 50000000);
        CHECK_EQ_INT(ka->n_route_limits, 1);
        CHECK(kb->all_routes && kb->n_routes == 0);
        CHECK(config_key_find(c, "team-a-secret-key-0001", 22) == ka);
        CHECK(config_key_find(c, "team-b-secret-key-0002", 22) == kb);
        CHECK(config_key_find(c, "team-b-secret-key-0003", 22) == NULL);
        gw_limits l = config_key_route_limits(ka, chat);
        CHECK(l.rpm == 30 && l.concurrency == 2 && l.tpm == -1);
        l = config_key_route_limits(kb, chat);   /* the route's per_key_limits */
        CHECK(l.rpm == 20 && l.concurrency == -1);
    }

    CHECK_EQ_INT(c->circuit_breaker.failures, 3);
    CHECK_EQ_INT(c->circuit_breaker.window_ms, 10000);
    CHECK_EQ_INT(c->circuit_breaker.cooldown_ms, 5000);
    CHECK_EQ_INT(c->circuit_breaker.max_cooldown_ms, 60000);
    CHECK_EQ_INT(c->circuit_breaker.max_targets, 1000);
    CHECK_EQ_STR(c->state.redis_url, "redis://:redis-pass-0123456789@127.0.0.1:6379/0");
    CHECK(!c->state.fail_open);
    CHECK_EQ_STR(c->state.key_prefix, "sg:");
    CHECK_EQ_INT(c->state.timeout_ms, 100);
    CHECK_EQ_INT(c->ledger.kind, GW_LEDGER_POSTGRES);
    CHECK_EQ_STR(c->ledger.postgres_url, "postgresql://smolgate:pg-pass-0123456789@db.internal/smolgate");
    CHECK(c->ledger.sqlite_path == NULL);
    CHECK_EQ_STR(c->ledger.spool_dir, "/var/spool/smolgate");
    CHECK_EQ_INT(c->ledger.flush_ms, 500);
    CHECK_EQ_INT(c->ledger.batch_max, 100);
    CHECK_EQ_INT(c->n_price_files, 1);
    if (c->n_price_files) CHECK_EQ_STR(c->price_files[0], DATA "/prices/litellm.json");

    /* the summary names everything and shows no secret */
    sg_buf b;
    sg_buf_init(&b);
    config_describe(c, &b);
    CHECK(strstr(b.data, "route chat: openai/gpt-4o-mini (weight 3) | groq/llama-3.1-8b-instant (weight 1) -> "
                         "anthropic/claude-sonnet-4-5 -> local/smollm3-3b") != NULL);
    CHECK(strstr(b.data, "provider groq (openai) https://api.groq.com/openai/v1, key set, 2 extra header(s)") != NULL);
    CHECK(strstr(b.data, "state: redis redis://***@127.0.0.1:6379/0 (when unreachable: refuse)") != NULL);
    CHECK(strstr(b.data, "key team-a (user): routes chat") != NULL);
    check_no_secret(b.data, k_full_env);
    sg_buf_free(&b);
    config_free(c);
}

static void test_minimal_and_empty(void) {
    static const kv env[] = {{"OPENAI_API_KEY", "sk-x"}, {"SMOLGATE_LOG", "warn"}, {NULL, NULL}};
    gw_config *c = load_ok(DATA "/minimal.yaml", env);
    if (c) {
        CHECK_EQ_STR(c->listen, "127.0.0.1:8080");
        CHECK_EQ_INT(c->log_level, SG_LOG_WARN);   /* from SMOLGATE_LOG when the file is silent */
        CHECK_EQ_INT(c->n_providers, 4);            /* the four implicit ones */
        const gw_provider *oa = config_provider(c, "openai");
        CHECK(oa && !oa->declared && oa->configured && oa->line == 0);
        CHECK_EQ_STR(oa->api_key, "sk-x");
        const gw_provider *an = config_provider(c, "anthropic");
        CHECK(an && !an->configured && an->api_key == NULL);
        CHECK(!config_provider(c, "local")->configured);
        CHECK_EQ_INT(c->n_routes, 1);
        CHECK(c->routes[0].targets[0].provider == oa);
        CHECK_EQ_INT(c->n_keys, 0);
        CHECK_EQ_INT(c->ledger.kind, GW_LEDGER_SQLITE);
        CHECK_EQ_STR(c->ledger.sqlite_path, "smolgate.db");   /* defaults stay in the working folder */
        CHECK_EQ_STR(c->ledger.spool_dir, "smolgate-spool");
        CHECK(c->state.redis_url == NULL && c->state.fail_open);
        CHECK_EQ_STR(c->state.key_prefix, "smolgate:");
        CHECK_EQ_INT(c->server.max_body_bytes, 16 << 20);
        CHECK_EQ_INT(c->circuit_breaker.failures, 5);
        CHECK_EQ_INT(c->circuit_breaker.max_targets, GW_BREAKER_MAX_TARGETS_DEFAULT);
        config_free(c);
    }
    static const kv none[] = {{NULL, NULL}};
    c = load_ok(DATA "/empty.yaml", none);
    if (c) {
        CHECK_EQ_INT(c->n_routes, 0);
        CHECK_EQ_INT(c->log_level, SG_LOG_INFO);
        CHECK(c->direct);
        for (size_t i = 0; i < c->n_providers; i++) CHECK(!c->providers[i].configured);
        config_free(c);
    }
}

static void test_anchors(void) {
    static const kv none[] = {{NULL, NULL}};
    gw_config *c = load_ok(DATA "/anchors.yaml", none);
    if (!c) return;
    const gw_provider *a = config_provider(c, "vllm-a"), *b = config_provider(c, "vllm-b");
    CHECK(a && b);
    if (a && b) {
        CHECK_EQ_INT(a->type, GW_PROVIDER_OPENAI);
        CHECK_EQ_STR(a->base_url, "http://10.0.0.1:8000/v1");
        CHECK_EQ_INT(a->timeouts.connect_ms, 1000);
        CHECK_EQ_INT(a->timeouts.first_token_ms, 5000);
        CHECK_EQ_INT(a->retries.max, 0);
        CHECK_EQ_INT(b->retries.max, 3);   /* an explicit key wins over the merged one */
        CHECK_EQ_INT(b->timeouts.connect_ms, 1000);
        CHECK(a->api_key == NULL);
    }
    const gw_route *r = config_route(c, "llama"), *s = config_route(c, "llama-slow");
    CHECK(r && r->n_targets == 2 && r->n_groups == 1 && r->limits.rpm == 10);
    CHECK(s && s->limits.rpm == 10 && s->targets[0].provider == b);
    config_free(c);
}

static void test_sqlite_and_routes_only(void) {
    static const kv none[] = {{NULL, NULL}};
    gw_config *c = load_ok(DATA "/sqlite.yaml", none);
    if (!c) return;
    CHECK(!c->direct);
    CHECK_EQ_INT(c->ledger.kind, GW_LEDGER_SQLITE);
    CHECK_EQ_STR(c->ledger.sqlite_path, DATA "/data/usage.db");
    CHECK_EQ_STR(c->state.redis_url, "redis://127.0.0.1:6379");
    CHECK(c->state.fail_open);
    CHECK_EQ_INT(c->state.timeout_ms, 50);
    const gw_provider *lo = config_provider(c, "local");
    CHECK(lo && lo->local.n_models == 1);
    if (lo && lo->local.n_models) CHECK_EQ_STR(lo->local.models[0].name, "smollm3-3b");   /* derived */
    gw_resolved r;
    sg_error err = {{0}};
    CHECK_EQ_INT(config_resolve_model(c, "default", &r, &err), 0);
    CHECK(r.route == &c->routes[0] && r.provider == NULL);
    CHECK_EQ_INT(config_resolve_model(c, "local/smollm3", &r, &err), -1);
    CHECK_EQ_STR(err.msg, "model \"local/smollm3\" is not served here (this gateway serves its routes only: default)");
    config_free(c);
}

/* ------------------------------------------------------------------------------------ */
/* invalid examples: the first line says the exact message */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_invalid_examples(void) {
    DIR *d = opendir(DATA "/invalid");
    CHECK(d != NULL);
    if (!d) return;
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".yaml")) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    CHECK(n >= 30);
    config_env env = env_of(k_invalid_env);
    for (size_t i = 0; i < n; i++) {
        char path[512], want[600];
        snprintf(path, sizeof path, DATA "/invalid/%s", names[i]);
        size_t len;
        char *text = tu_read(path, &len);
        CHECK_MSG(text && !strncmp(text, "# error: ", 9), "%s: first line must be \"# error: ...\"", path);
        if (!text || strncmp(text, "# error: ", 9)) { free(text); continue; }
        /* "$FILE" in the expectation is the path */
        const char *w = text + 9, *eol = strchr(w, '\n');
        size_t o = 0;
        for (const char *s = w; s < eol && o + 1 < sizeof want;) {
            if (!strncmp(s, "$FILE", 5)) { o += (size_t)snprintf(want + o, sizeof want - o, "%s", path); s += 5; }
            else want[o++] = *s++;
        }
        want[o] = 0;
        gw_config *c = (gw_config *)1;
        sg_error err = {{0}};
        int rc = config_load(&c, path, &env, &err);
        CHECK_MSG(rc == -1 && c == NULL, "%s loaded but should not", path);
        CHECK_MSG(!strcmp(err.msg, want), "%s\n      got:  %s\n      want: %s", names[i], err.msg, want);
        check_no_secret(err.msg, k_invalid_env);
        if (!rc) config_free(c);
        free(text);
        free(names[i]);
    }
}

/* ------------------------------------------------------------------------------------ */
/* ${ENV} */

static gw_config *load_text(const char *text, const kv *env, sg_error *err) {
    char *path = tu_path("%s/t.yaml", tu_tmpdir());
    tu_write(path, text, strlen(text));
    gw_config *c = NULL;
    config_env e = env_of(env);
    config_load(&c, path, &e, err);
    return c;
}

static void test_interpolation(void) {
    static const kv env[] = {{"HOST", "api.example.com"}, {"EMPTY", ""}, {"KEY", "s3cr3t-0123456789"},
                             {"PORT", "9000"}, {NULL, NULL}};
    sg_error err = {{0}};
    gw_config *c = load_text("listen: \"127.0.0.1:${PORT}\"\n"
                             "providers:\n"
                             "  p1: {type: openai, base_url: \"https://${HOST}/v1\", api_key: \"pre-${KEY}-post\"}\n"
                             "  p2: {type: openai, base_url: \"https://${UNSET:-fallback.example}/v1\"}\n"
                             "  p3: {type: openai, base_url: \"https://${EMPTY:-was-empty}/v1\", api_key: \"$$5 and $ and $$${KEY}\"}\n"
                             "  p4: {type: openai, base_url: \"https://h/${UNSET:-}\", headers: {X-A: \"${EMPTY}\"}}\n",
                             env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_STR(c->listen, "127.0.0.1:9000");
        CHECK_EQ_STR(config_provider(c, "p1")->base_url, "https://api.example.com/v1");
        CHECK_EQ_STR(config_provider(c, "p1")->api_key, "pre-s3cr3t-0123456789-post");
        CHECK_EQ_STR(config_provider(c, "p2")->base_url, "https://fallback.example/v1");
        CHECK_EQ_STR(config_provider(c, "p3")->base_url, "https://was-empty/v1");
        CHECK_EQ_STR(config_provider(c, "p3")->api_key, "$5 and $ and $s3cr3t-0123456789");
        CHECK_EQ_STR(config_provider(c, "p4")->base_url, "https://h");   /* empty default, '/' trimmed */
        CHECK_EQ_STR(config_provider(c, "p4")->headers[0].value, "");     /* set but empty is a value */
        config_free(c);
    }
    static const struct { const char *text, *want; } bad[] = {
        {"providers:\n  openai: {api_key: \"${MISSING}\"}\n",
         "t.yaml:2: providers.openai.api_key: environment variable MISSING is not set (use ${MISSING:-default} for a default)"},
        {"providers:\n  openai: {api_key: \"${1BAD}\"}\n",
         "t.yaml:2: providers.openai.api_key: bad ${...}: expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _"},
        {"providers:\n  openai: {api_key: \"${}\"}\n",
         "t.yaml:2: providers.openai.api_key: bad ${...}: expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _"},
        {"providers:\n  openai: {api_key: \"${KEY:default}\"}\n",
         "t.yaml:2: providers.openai.api_key: bad ${...}: expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _"},
        {"providers:\n  openai: {api_key: \"${EMPTY}\"}\n",
         "t.yaml:2: providers.openai.api_key: must not be empty (it comes from the environment)"},
        {"listen: ${KEY}\n", "t.yaml:1: listen: expected HOST:PORT, such as 127.0.0.1:8080"},
        {"log_level: ${KEY}\n", "t.yaml:1: log_level: unknown value a value from the environment (not shown)"},
        {"routes:\n  - {name: r, targets: [\"${KEY}/x\"]}\n",
         "t.yaml:2: routes[0].targets[0]: not a model this gateway can serve (the value comes from the environment and is not shown)"},
        {"keys:\n  - {id: k, key: \"${KEY}\", routes: [\"${KEY}\"]}\n",
         "t.yaml:2: keys[0].routes[0]: unknown route (the value comes from the environment and is not shown)"},
        {"circuit_breaker: {failures: \"${KEY}\"}\n",
         "t.yaml:1: circuit_breaker.failures: expected an integer, got a value from the environment (not shown)"},
        {"models:\n  \"openai/m\\tx\": {price: {input: 1}}\n", "t.yaml:2: models: a model id contains a control character"},
        {"circuit_breaker: {max_targets: 8}\n", "t.yaml:1: circuit_breaker.max_targets: must be between 16 and 10000000, got \"8\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sg_error e2 = {{0}};
        gw_config *x = load_text(bad[i].text, env, &e2);
        CHECK_MSG(x == NULL, "case %zu loaded", i);
        config_free(x);
        const char *base = strstr(e2.msg, "t.yaml");
        CHECK_MSG(base && !strcmp(base, bad[i].want), "case %zu\n      got:  %s\n      want: %s", i, e2.msg, bad[i].want);
        CHECK(!strstr(e2.msg, "s3cr3t"));
    }
}

/* ------------------------------------------------------------------------------------ */
/* no file: defaults from the environment and --model */

/* A file under the test's temporary folder (parent folders made); the caller frees. */
static char *make_file(const char *rel) {
    char *p = strdup(tu_path("%s/%s", tu_tmpdir(), rel));
    for (char *s = p + strlen(tu_tmpdir()) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(p, 0700);
        *s = '/';
    }
    tu_write(p, "x", 1);
    return p;
}

static void test_defaults(void) {
    char *m1 = make_file("SmolLM3-3B-Q4_K_M.gguf");
    static const kv env[] = {
        {"OPENAI_API_KEY", "sk-o"},
        {"ANTHROPIC_API_KEY", "sk-a"}, {"ANTHROPIC_BASE_URL", "http://127.0.0.1:9999/"},
        {"GEMINI_API_KEY", "g-gemini"}, {"GOOGLE_API_KEY", "g-google"},
        {"GEMINI_BASE_URL", "http://127.0.0.1:9998"},
        {NULL, NULL},
    };
    config_env e = env_of(env);
    gw_config *c = NULL;
    sg_error err = {{0}};
    const char *paths[] = {m1};
    CHECK_EQ_INT(config_default(&c, paths, 1, &e, &err), 0);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK(c->path == NULL);
        CHECK_EQ_STR(c->listen, "127.0.0.1:8080");
        CHECK(c->direct && c->n_routes == 0 && c->n_keys == 0);
        const gw_provider *oa = config_provider(c, "openai"), *an = config_provider(c, "anthropic"),
                          *gg = config_provider(c, "google"), *lo = config_provider(c, "local");
        CHECK(oa && oa->configured);
        CHECK_EQ_STR(oa->base_url, "https://api.openai.com/v1");   /* the SDK's default keeps /v1 */
        CHECK_EQ_STR(oa->api_key, "sk-o");
        CHECK_EQ_STR(an->base_url, "http://127.0.0.1:9999");
        CHECK_EQ_STR(an->api_key, "sk-a");
        CHECK_EQ_STR(an->version, "2023-06-01");
        CHECK_EQ_STR(gg->api_key, "g-google");   /* GOOGLE_API_KEY wins, as in Google's SDK */
        CHECK_EQ_STR(gg->base_url, "http://127.0.0.1:9998");
        CHECK(lo->configured && lo->local.n_models == 1);
        CHECK_EQ_STR(lo->local.models[0].name, "smollm3-3b-q4_k_m");
        CHECK_EQ_STR(lo->local.models[0].alias, "smollm3");
        CHECK_EQ_STR(lo->local.models[0].path, m1);
        config_free(c);
    }

    /* nothing in the environment: nothing configured; Gemini's second key name works */
    static const kv env2[] = {{"GEMINI_API_KEY", "g-only"}, {"OPENAI_API_KEY", ""}, {NULL, NULL}};
    e = env_of(env2);
    CHECK_EQ_INT(config_default(&c, NULL, 0, &e, &err), 0);
    if (c) {
        CHECK(!config_provider(c, "openai")->configured);   /* empty counts as unset */
        CHECK(!config_provider(c, "anthropic")->configured);
        CHECK(!config_provider(c, "local")->configured);
        CHECK_EQ_STR(config_provider(c, "google")->api_key, "g-only");
        CHECK_EQ_STR(config_provider(c, "google")->base_url, "https://generativelanguage.googleapis.com");
        gw_resolved r;
        CHECK_EQ_INT(config_resolve_model(c, "gpt-4o-mini", &r, &err), -1);
        CHECK_EQ_STR(err.msg, "provider \"openai\" is not configured (set OPENAI_API_KEY, or declare it under providers)");
        CHECK_EQ_INT(config_resolve_model(c, "google/gemini-2.5-flash", &r, &err), 0);
        CHECK_EQ_INT(config_resolve_model(c, "local/smollm3", &r, &err), -1);
        CHECK_EQ_STR(err.msg, "unknown local model \"smollm3\" (served: none; give --model PATH)");
        config_free(c);
    }

    /* two models, NAME=PATH, two smollm3 files (no alias), HF cache folder */
    char *m2 = make_file("models--HuggingFaceTB--SmolLM3-3B/snapshots/abc123/config.json");
    char *m2dir = strdup(m2);
    *strrchr(m2dir, '/') = 0;
    char named[600];
    snprintf(named, sizeof named, "tiny=%s", m1);
    const char *three[] = {m1, m2dir, named};
    e = env_of(env2);
    CHECK_EQ_INT(config_default(&c, three, 3, &e, &err), 0);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        const gw_provider *lo = config_provider(c, "local");
        CHECK_EQ_INT(lo->local.n_models, 3);
        CHECK_EQ_STR(lo->local.models[1].name, "smollm3-3b");
        CHECK_EQ_STR(lo->local.models[2].name, "tiny");
        for (size_t i = 0; i < lo->local.n_models; i++) CHECK(lo->local.models[i].alias == NULL);
        gw_resolved r;
        CHECK_EQ_INT(config_resolve_model(c, "tiny", &r, &err), 0);
        CHECK(r.provider == lo && r.local == &lo->local.models[2]);
        config_free(c);
    }

    /* errors name the flag or the variable, never a value */
    const char *dup[] = {m1, m1};
    CHECK_EQ_INT(config_default(&c, dup, 2, &e, &err), -1);
    CHECK_EQ_STR(err.msg, "--model: a local model named \"smollm3-3b-q4_k_m\" already exists");
    const char *missing[] = {"/nonexistent/model.gguf"};
    CHECK_EQ_INT(config_default(&c, missing, 1, &e, &err), -1);
    CHECK_EQ_STR(err.msg, "--model: /nonexistent/model.gguf: No such file or directory");
    static const kv badurl[] = {{"OPENAI_BASE_URL", "ftp://secret-host/v1"}, {NULL, NULL}};
    e = env_of(badurl);
    CHECK_EQ_INT(config_default(&c, NULL, 0, &e, &err), -1);
    CHECK_EQ_STR(err.msg, "OPENAI_BASE_URL: unsupported URL scheme (http:// or https://; value not shown)");
    CHECK(c == NULL);
    free(m1);
    free(m2);
    free(m2dir);
}

static void test_overrides(void) {
    char *m = make_file("Extra-Model.gguf");
    static const kv env[] = {{"OPENAI_API_KEY", "sk-o"}, {NULL, NULL}};
    config_env e = env_of(env);
    sg_error err = {{0}};
    gw_config *c = NULL;
    /* --model adds to the file's local provider; routes may target it */
    char *path = tu_path("%s/ov.yaml", tu_tmpdir());
    const char *text = "listen: 127.0.0.1:1\nroutes:\n  - {name: r, targets: [gpt-4o, local/extra-model]}\n";
    tu_write(path, text, strlen(text));
    const char *models[] = {m};
    config_overrides ov = {"[::1]:0", models, 1, 0, 0};
    CHECK_EQ_INT(config_load_ex(&c, path, &ov, &e, &err), 0);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_STR(c->listen, "[::1]:0");
        CHECK(c->routes[0].targets[1].local != NULL);
        CHECK_EQ_INT(config_provider(c, "local")->local.parallel, 4);   /* the default */
        CHECK_EQ_INT(config_provider(c, "local")->local.draft, SPEC_DEFAULT_DRAFT);
        config_free(c);
    }
    /* --draft N is stored as N + 1 (0: keep the file's); --no-speculate as --draft 0 */
    ov.draft = 1;
    CHECK_EQ_INT(config_load_ex(&c, path, &ov, &e, &err), 0);
    if (c) {
        CHECK_EQ_INT(config_provider(c, "local")->local.draft, 0);
        config_free(c);
    }
    ov.draft = 5;
    CHECK_EQ_INT(config_load_ex(&c, path, &ov, &e, &err), 0);
    if (c) {
        CHECK_EQ_INT(config_provider(c, "local")->local.draft, 4);
        config_free(c);
    }
    ov.draft = 0;
    /* --parallel sets the local provider's sequences */
    ov.parallel = 7;
    CHECK_EQ_INT(config_load_ex(&c, path, &ov, &e, &err), 0);
    if (c) {
        CHECK_EQ_INT(config_provider(c, "local")->local.parallel, 7);
        config_free(c);
    }
    ov.parallel = 0;
    ov.listen = "localhost";
    CHECK_EQ_INT(config_load_ex(&c, path, &ov, &e, &err), -1);
    CHECK_EQ_STR(err.msg, "--listen: expected HOST:PORT, such as 127.0.0.1:8080");
    CHECK_EQ_INT(config_load(&c, DATA "/no-such-file.yaml", &e, &err), -1);
    CHECK_EQ_STR(err.msg, DATA "/no-such-file.yaml: No such file or directory");
    free(m);
}

/* The well-known names take what the file leaves out from the environment. */
static void test_well_known_env(void) {
    char *m = make_file("home/models/a.gguf");
    char home[512];
    snprintf(home, sizeof home, "%s/home", tu_tmpdir());
    const kv env[] = {{"OPENAI_API_KEY", "sk-env"}, {"OPENAI_BASE_URL", "http://env-host/v1"},
                      {"ANTHROPIC_API_KEY", "sk-ant-env"}, {"GEMINI_API_KEY", "g-env"},
                      {"GEMINI_BASE_URL", "http://gem-env"}, {"HOME", home}, {NULL, NULL}};
    sg_error err = {{0}};
    gw_config *c = load_text("providers:\n"
                             "  openai: {base_url: \"http://file-host/v1\"}\n"   /* key still from the env */
                             "  anthropic: {api_key: null}\n"                     /* explicitly none */
                             "  google:\n"                                       /* all from the env */
                             "  local: {models: {a: ~/models/a.gguf}}\n",
                             env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        const gw_provider *oa = config_provider(c, "openai"), *an = config_provider(c, "anthropic"),
                          *gg = config_provider(c, "google"), *lo = config_provider(c, "local");
        CHECK_EQ_STR(oa->base_url, "http://file-host/v1");
        CHECK_EQ_STR(oa->api_key, "sk-env");
        CHECK(an->api_key == NULL && an->configured && an->declared);
        CHECK_EQ_STR(an->base_url, "https://api.anthropic.com");
        CHECK_EQ_STR(gg->api_key, "g-env");
        CHECK_EQ_STR(gg->base_url, "http://gem-env");
        CHECK_EQ_STR(lo->local.models[0].path, m);
        config_free(c);
    }
    c = load_text("version: 2\n", env, &err);
    CHECK(c == NULL);
    CHECK(strstr(err.msg, "t.yaml:1: version: this smolgate reads version 1 (got 2)") != NULL);
    free(m);
}

static void test_local_model_names(void) {
    static const struct { const char *path, *want; } cases[] = {
        {"SmolLM3-3B-Q4_K_M.gguf", "smollm3-3b-q4_k_m"},
        {"/models/SmolLM3-3B-Q4_K_M.GGUF", "smollm3-3b-q4_k_m"},
        {"/models/SmolLM3-3B/", "smollm3-3b"},
        {"./hf/SmolLM3-3B", "smollm3-3b"},
        {"/root/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM3-3B/snapshots/0123abcd", "smollm3-3b"},
        {"/root/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM3-3B/snapshots/0123abcd/", "smollm3-3b"},
        {"my model (v2).gguf", "my-model--v2-"},
        {"_weird.gguf", "weird"},
        {"tiny.bin", "tiny.bin"},
    };
    char out[128];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_EQ_INT(config_local_model_name(cases[i].path, out, sizeof out), 0);
        CHECK_EQ_STR(out, cases[i].want);
    }
    CHECK_EQ_INT(config_local_model_name("", out, sizeof out), -1);
    CHECK_EQ_INT(config_local_model_name("__.gguf", out, sizeof out), -1);
    CHECK_EQ_INT(config_local_model_name("/", out, sizeof out), -1);
}

/* ------------------------------------------------------------------------------------ */
/* model id resolution */

static void test_resolve(void) {
    gw_config *c = load_ok(DATA "/full.yaml", k_full_env);
    if (!c) return;
    static const struct { const char *id, *route, *provider, *model; } ok[] = {
        {"chat", "chat", NULL, NULL},
        {"cheap", "cheap", NULL, NULL},
        {"openai/gpt-4o-mini", NULL, "openai", "gpt-4o-mini"},
        {"anthropic/claude-sonnet-4-5", NULL, "anthropic", "claude-sonnet-4-5"},
        {"google/gemini-2.5-flash", NULL, "google", "gemini-2.5-flash"},
        {"local/smollm3", NULL, "local", "smollm3-3b"},
        {"local/smollm3-3b", NULL, "local", "smollm3-3b"},
        {"groq/llama-3.1-8b-instant", NULL, "groq", "llama-3.1-8b-instant"},
        {"groq/meta-llama/Llama-4-Scout", NULL, "groq", "meta-llama/Llama-4-Scout"},   /* split at the first '/' */
        {"gpt-4o-mini", NULL, "openai", "gpt-4o-mini"},
        {"gpt-5", NULL, "openai", "gpt-5"},
        {"chatgpt-4o-latest", NULL, "openai", "chatgpt-4o-latest"},
        {"o1", NULL, "openai", "o1"},
        {"o1-mini", NULL, "openai", "o1-mini"},
        {"o3-pro", NULL, "openai", "o3-pro"},
        {"o4-mini", NULL, "openai", "o4-mini"},
        {"text-embedding-3-small", NULL, "openai", "text-embedding-3-small"},
        {"claude-sonnet-4-5", NULL, "anthropic", "claude-sonnet-4-5"},
        {"claude-3-5-haiku-latest", NULL, "anthropic", "claude-3-5-haiku-latest"},
        {"gemini-2.5-flash", NULL, "google", "gemini-2.5-flash"},
        {"smollm3", NULL, "local", "smollm3-3b"},
        {"smollm3-3b", NULL, "local", "smollm3-3b"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        gw_resolved r;
        sg_error err = {{0}};
        int rc = config_resolve_model(c, ok[i].id, &r, &err);
        CHECK_MSG(rc == 0, "%s: %s", ok[i].id, err.msg);
        if (rc) continue;
        if (ok[i].route) {
            CHECK_MSG(r.route && !strcmp(r.route->name, ok[i].route) && !r.provider, "%s", ok[i].id);
        } else {
            CHECK_MSG(!r.route && r.provider && !strcmp(r.provider->name, ok[i].provider), "%s", ok[i].id);
            CHECK_MSG(r.model && !strcmp(r.model, ok[i].model), "%s -> %s", ok[i].id, r.model ? r.model : "(null)");
            CHECK_MSG((r.local != NULL) == (r.provider->type == GW_PROVIDER_LOCAL), "%s", ok[i].id);
        }
    }
    gw_resolved r;
    sg_error err = {{0}};
    CHECK_EQ_INT(config_resolve_model(c, "openai/gpt-4o-mini", &r, &err), 0);
    CHECK(r.info == config_model_info(c, r.provider, "gpt-4o-mini") && r.info && r.info->context_window == 128000);
    static const struct { const char *id, *want; } bad[] = {
        {"", "no model given"},
        {"opneai/gpt-4o", "unknown provider \"opneai\" (did you mean \"openai\"? known: openai, groq, anthropic, google, local)"},
        {"mistral/large", "unknown provider \"mistral\" (known: openai, groq, anthropic, google, local)"},
        {"openai/", "model id \"openai/\" names no model after the provider"},
        {"llama-3", "unknown model \"llama-3\": not a route, a local model, or a known family (gpt-*, o1/o3/o4*, "
                    "chatgpt-*, text-embedding-*, claude-*, gemini-*); write it as provider/model"},
        {"o10", "unknown model \"o10\": not a route, a local model, or a known family (gpt-*, o1/o3/o4*, "
                "chatgpt-*, text-embedding-*, claude-*, gemini-*); write it as provider/model"},
        {"local/smollm2", "unknown local model \"smollm2\" (served: smollm3-3b)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(config_resolve_model(c, bad[i].id, &r, &err), -1);
        CHECK_EQ_STR(err.msg, bad[i].want);
        CHECK(r.route == NULL && r.provider == NULL);
    }
    config_free(c);
}

/* ------------------------------------------------------------------------------------ */
/* keys and references */

static void test_keys(void) {
    uint8_t h[GW_SHA256_LEN];
    CHECK_EQ_INT(config_key_hash("abc", 3, h), 0);   /* FIPS 180-2 test vector */
    static const uint8_t abc[GW_SHA256_LEN] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                               0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                               0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    CHECK(!memcmp(h, abc, sizeof h));

    gw_config *c = load_ok(DATA "/full.yaml", k_full_env);
    if (!c) return;
    const gw_key *ka = config_key_by_id(c, "team-a"), *kb = config_key_by_id(c, "team-b");
    CHECK(config_key_hash("team-a-secret-key-0001", 22, h) == 0 && config_key_find_hash(c, h) == ka);
    CHECK(config_key_find(c, "team-a-secret-key-0001", 21) == NULL);   /* a prefix is not the key */
    CHECK(config_key_find(c, "", 0) == NULL);
    CHECK(config_key_find(c, NULL, 0) == NULL);
    CHECK(config_key_by_id(c, "team-c") == NULL);
    /* the plaintext of team-b's key is not kept anywhere in the structs */
    CHECK(kb && memcmp(kb->sha256, (uint8_t[GW_SHA256_LEN]){0}, GW_SHA256_LEN) != 0);

    gw_resolved chat, cheap, direct;
    sg_error err = {{0}};
    CHECK(config_resolve_model(c, "chat", &chat, &err) == 0);
    CHECK(config_resolve_model(c, "cheap", &cheap, &err) == 0);
    CHECK(config_resolve_model(c, "gpt-4o-mini", &direct, &err) == 0);
    CHECK(config_key_allows(ka, &chat));
    CHECK(!config_key_allows(ka, &cheap));
    CHECK(!config_key_allows(ka, &direct));   /* a routes: list means routes only */
    CHECK(config_key_allows(kb, &chat) && config_key_allows(kb, &cheap) && config_key_allows(kb, &direct));
    config_free(c);
}

/* ------------------------------------------------------------------------------------ */
/* roles (tenancy) and the reload rules */

#define TENANTS "routes:\n" \
                "  - {name: chat, targets: [openai/gpt-4o-mini]}\n" \
                "  - {name: cheap, targets: [openai/gpt-4.1-nano]}\n" \
                "keys:\n" \
                "  - {id: team-a, key: team-a-secret-key-0001, routes: [chat]}\n" \
                "  - {id: team-b, key: team-b-secret-key-0002, role: user}\n" \
                "  - {id: ops, key: ops-secret-key-00000003, role: admin, routes: [cheap]}\n" \
                "  - {id: scrape, key: scrape-secret-key-0004, role: metrics}\n"

static void test_roles(void) {
    static const kv env[] = {{"OPENAI_API_KEY", "sk-o"}, {NULL, NULL}};
    sg_error err = {{0}};
    gw_config *c = load_text(TENANTS, env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (!c) return;
    const gw_key *a = config_key_by_id(c, "team-a"), *b = config_key_by_id(c, "team-b"),
                 *ops = config_key_by_id(c, "ops"), *m = config_key_by_id(c, "scrape");
    CHECK(a && b && ops && m);
    if (!a || !b || !ops || !m) { config_free(c); return; }
    CHECK_EQ_INT(a->role, GW_ROLE_USER);   /* the default */
    CHECK_EQ_INT(b->role, GW_ROLE_USER);
    CHECK_EQ_INT(ops->role, GW_ROLE_ADMIN);
    CHECK_EQ_INT(m->role, GW_ROLE_METRICS);
    CHECK(!c->auth_none && !c->empty);
    const gw_route *chat = config_route(c, "chat"), *cheap = config_route(c, "cheap");
    /* seeing everything: no keys configured (NULL) or admin */
    CHECK(config_key_sees_all(NULL) && config_key_sees_all(ops));
    CHECK(!config_key_sees_all(a) && !config_key_sees_all(b) && !config_key_sees_all(m));
    /* /metrics: admin and metrics keys, or open mode; never a user key */
    CHECK(config_key_reads_metrics(NULL) && config_key_reads_metrics(ops) && config_key_reads_metrics(m));
    CHECK(!config_key_reads_metrics(a) && !config_key_reads_metrics(b));
    /* routes and direct ids: a user key its own, a metrics key none */
    CHECK(config_key_uses_route(a, chat) && !config_key_uses_route(a, cheap) && !config_key_uses_direct(a));
    CHECK(config_key_uses_route(b, chat) && config_key_uses_route(b, cheap) && config_key_uses_direct(b));
    CHECK(config_key_uses_route(ops, cheap) && !config_key_uses_route(ops, chat));   /* admin sees, uses its list */
    CHECK(!config_key_uses_route(m, chat) && !config_key_uses_direct(m));
    gw_resolved direct;
    CHECK(config_resolve_model(c, "gpt-4o", &direct, &err) == 0);
    CHECK(!config_key_allows(m, &direct) && config_key_allows(b, &direct));
    CHECK(config_key_uses_route(NULL, chat) && config_key_uses_direct(NULL));
    CHECK_EQ_STR(config_key_role_name(GW_ROLE_METRICS), "metrics");
    sg_buf d;
    sg_buf_init(&d);
    config_describe(c, &d);
    CHECK(strstr(d.data, "key ops (admin): routes cheap") && strstr(d.data, "key scrape (metrics): GET /metrics only"));
    CHECK(!strstr(d.data, "secret-key"));
    sg_buf_free(&d);
    config_free(c);

    /* auth: none is the explicit way to serve without keys */
    c = load_text("auth: none\nroutes:\n  - {name: chat, targets: [openai/gpt-4o-mini]}\n", env, &err);
    CHECK_MSG(c && c->auth_none && c->n_keys == 0, "%s", err.msg);
    config_free(c);
    c = load_text("auth: keys\nkeys:\n  - {id: k, key: k-secret-key-000001}\n", env, &err);
    CHECK_MSG(c && !c->auth_none && c->n_keys == 1, "%s", err.msg);
    config_free(c);

    static const struct { const char *text, *want; } bad[] = {
        {"keys:\n  - {id: k, key: k-secret-key-000001, role: root}\n",
         "t.yaml:2: keys[0].role: unknown value \"root\" (one of: user, admin, metrics)"},
        {"keys:\n  - {id: k, key: k-secret-key-000001, role: metrics, routes: [chat]}\n"
         "routes:\n  - {name: chat, targets: [openai/gpt-4o-mini]}\n",
         "t.yaml:2: keys[0].routes: a key with role metrics sends no requests (it reads /metrics only)"},
        {"keys:\n  - id: k\n    key: k-secret-key-000001\n    role: metrics\n    budget: {daily_usd: 1}\n",
         "t.yaml:5: keys[0].budget: a key with role metrics sends no requests (it reads /metrics only)"},
        {"auth: none\nkeys:\n  - {id: k, key: k-secret-key-000001}\n",
         "t.yaml:1: auth: none, but 1 key(s) are listed under keys (remove them, or the line)"},
        {"auth: keys\n", "t.yaml:1: auth: keys, but no key is listed under keys"},
        {"auth: off\n", "t.yaml:1: auth: unknown value \"off\" (one of: keys, none)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sg_error e2 = {{0}};
        gw_config *x = load_text(bad[i].text, env, &e2);
        CHECK_MSG(x == NULL, "case %zu loaded", i);
        config_free(x);
        const char *base = strstr(e2.msg, "t.yaml");
        CHECK_MSG(base && !strcmp(base, bad[i].want), "case %zu\n      got:  %s\n      want: %s", i, e2.msg, bad[i].want);
        CHECK(!strstr(e2.msg, "secret-key"));
    }
}

/* May next replace run on SIGHUP? 0 or -1; the message (when refused) into why. */
static int reload_verdict(const gw_config *run, const char *next_text, char *why, size_t cap) {
    static const kv env[] = {{"OPENAI_API_KEY", "sk-o"}, {NULL, NULL}};
    sg_error err = {{0}};
    gw_config *n = load_text(next_text, env, &err);
    CHECK_MSG(n != NULL, "the next configuration does not load: %s", err.msg);
    if (!n) return 99;
    int rc = config_reload_check(run, n, &err);
    snprintf(why, cap, "%s", rc ? err.msg : "");
    config_free(n);
    return rc;
}

static void test_reload_rules(void) {
    static const kv env[] = {{"OPENAI_API_KEY", "sk-o"}, {NULL, NULL}};
    sg_error err = {{0}};
    gw_config *run = load_text(TENANTS "state: {redis: \"redis://127.0.0.1:1\", on_redis_error: closed}\n"
                               "ledger: {sqlite: a.db}\n", env, &err);
    CHECK_MSG(run != NULL, "%s", err.msg);
    if (!run) return;
    char why[600];
    /* an empty file (nothing, or only comments): refused, never the defaults */
    CHECK_EQ_INT(reload_verdict(run, "", why, sizeof why), -1);
    CHECK_MSG(strstr(why, "is empty") != NULL, "%s", why);
    CHECK_EQ_INT(reload_verdict(run, "# all commented out\n# keys:\n", why, sizeof why), -1);
    CHECK_MSG(strstr(why, "is empty") != NULL, "%s", why);
    /* keys on, none in the new file: refused, naming the way to do it on purpose */
    CHECK_EQ_INT(reload_verdict(run, "routes:\n  - {name: chat, targets: [openai/gpt-4o-mini]}\n", why, sizeof why), -1);
    CHECK_MSG(strstr(why, "no gateway keys while 4 are required") && strstr(why, "auth: none"), "%s", why);
    /* ... unless it says auth: none */
    CHECK_EQ_INT(reload_verdict(run, "auth: none\n", why, sizeof why), 0);
    /* keys replaced by others: fine (rotation) */
    CHECK_EQ_INT(reload_verdict(run, "keys:\n  - {id: new, key: new-secret-key-00001}\n", why, sizeof why), 0);
    /* state and ledger changes pass here: the gateway applies them */
    CHECK_EQ_INT(reload_verdict(run, TENANTS "state: {redis: \"redis://127.0.0.1:2\"}\nledger: {sqlite: b.db}\n", why, sizeof why), 0);
    /* what only a restart applies: refused, naming the key */
    CHECK_EQ_INT(reload_verdict(run, TENANTS "listen: 127.0.0.1:9999\n", why, sizeof why), -1);
    CHECK_MSG(!strcmp(why, "listen: changed from 127.0.0.1:8080 to 127.0.0.1:9999; a new address needs a restart"), "%s", why);
    CHECK_EQ_INT(reload_verdict(run, TENANTS "server: {max_body_bytes: 2048}\n", why, sizeof why), -1);
    CHECK_MSG(!strcmp(why, "server.max_body_bytes: changed; the HTTP server's bounds need a restart"), "%s", why);
    CHECK_EQ_INT(reload_verdict(run, TENANTS "server: {shutdown_grace_ms: 5}\n", why, sizeof why), 0);   /* read at SIGTERM */

    /* no keys running: a key-less file is fine, an empty one still is not */
    gw_config *open_cfg = load_text("routes:\n  - {name: chat, targets: [openai/gpt-4o-mini]}\n", env, &err);
    CHECK_MSG(open_cfg != NULL, "%s", err.msg);
    if (open_cfg) {
        CHECK_EQ_INT(reload_verdict(open_cfg, "routes:\n  - {name: c2, targets: [openai/gpt-4o]}\n", why, sizeof why), 0);
        CHECK_EQ_INT(reload_verdict(open_cfg, "\n", why, sizeof why), -1);
        config_free(open_cfg);
    }

    /* what changed in state / ledger */
    gw_state s1 = run->state, s2 = run->state;
    CHECK(config_state_same_store(&s1, &s2));
    s2.fail_open = !s2.fail_open;   /* a policy change: the same store, applied in place */
    s2.timeout_ms = 7;
    CHECK(config_state_same_store(&s1, &s2));
    s2.key_prefix = "other:";
    CHECK(!config_state_same_store(&s1, &s2));
    s2 = s1;
    s2.redis_url = "redis://127.0.0.1:2";
    CHECK(!config_state_same_store(&s1, &s2));
    s2.redis_url = NULL;   /* Redis -> in-process */
    CHECK(!config_state_same_store(&s1, &s2));
    s1.redis_url = NULL;   /* in-process both: the prefix is not used */
    s1.key_prefix = "x:";
    CHECK(config_state_same_store(&s1, &s2));
    gw_ledger l1 = run->ledger, l2 = run->ledger;
    CHECK(config_ledger_equal(&l1, &l2));
    l2.sqlite_path = "b.db";
    CHECK(!config_ledger_equal(&l1, &l2));
    l2 = l1;
    l2.flush_ms++;
    CHECK(!config_ledger_equal(&l1, &l2));
    l2 = l1;
    l2.kind = GW_LEDGER_POSTGRES;
    l2.sqlite_path = NULL;
    l2.postgres_url = "postgresql://db/x";
    CHECK(!config_ledger_equal(&l1, &l2));
    config_free(run);
}

/* upstream: bounds: defaults, the section's values, a provider's own (which wins), and
 * the secret set built with the configuration */
static void test_bounds(void) {
    static const kv no_env[] = {{NULL, NULL}};
    sg_error err = {{0}};
    gw_config *c = load_text("providers:\n  openai: {api_key: sk-bounds-0001}\n", no_env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (!c) return;
    CHECK_EQ_INT(c->upstream.max_response_bytes, 32u << 20);
    CHECK_EQ_INT(c->upstream.max_sse_line_bytes, 4u << 20);
    CHECK_EQ_INT(c->upstream.max_header_bytes, 65536);
    const gw_provider *o = config_provider(c, "openai");
    CHECK_EQ_INT(o->bounds.max_response_bytes, 32u << 20);
    CHECK_EQ_INT(o->bounds.max_sse_line_bytes, 4u << 20);
    CHECK_EQ_INT(o->bounds.max_header_bytes, 65536);
    CHECK(c->secrets != NULL);
    config_unref(c);

    c = load_text("upstream: {max_response_bytes: 1048576, max_sse_line_bytes: 2048, max_header_bytes: 4096}\n"
                  "providers:\n"
                  "  openai: {api_key: k1}\n"
                  "  big: {type: anthropic, api_key: k2, max_response_bytes: 268435456, max_header_bytes: 131072}\n",
                  no_env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (!c) return;
    o = config_provider(c, "openai");
    CHECK_EQ_INT(o->bounds.max_response_bytes, 1048576);
    CHECK_EQ_INT(o->bounds.max_sse_line_bytes, 2048);
    CHECK_EQ_INT(o->bounds.max_header_bytes, 4096);
    const gw_provider *b = config_provider(c, "big");
    CHECK_EQ_INT(b->bounds.max_response_bytes, 268435456);
    CHECK_EQ_INT(b->bounds.max_sse_line_bytes, 2048);
    CHECK_EQ_INT(b->bounds.max_header_bytes, 131072);
    const gw_provider *g = config_provider(c, "google");   /* implicit: the section's */
    CHECK_EQ_INT(g->bounds.max_response_bytes, 1048576);
    config_unref(c);
}

static void test_refcount(void) {
    gw_config *c = load_ok(DATA "/full.yaml", k_full_env);
    if (!c) return;
    CHECK(config_ref(c) == c);
    config_ref(c);
    config_unref(c);
    config_unref(c);
    CHECK_EQ_STR(c->listen, "0.0.0.0:9090");   /* still alive: one reference left */
    config_unref(c);                            /* freed here (ASan reports a leak otherwise) */
    config_unref(NULL);
    config_free(NULL);
    CHECK(config_ref(NULL) == NULL);
}

static void test_type_names(void) {
    CHECK_EQ_STR(config_provider_type_name(GW_PROVIDER_ANTHROPIC), "anthropic");
    CHECK_EQ_INT(config_provider_type_from_name("google"), GW_PROVIDER_GOOGLE);
    CHECK_EQ_INT(config_provider_type_from_name("azure"), -1);
}

/* responses: the stored responses' bounds, their defaults and ranges */
static void test_responses(void) {
    static const kv none[] = {{NULL, NULL}};
    sg_error err = {{0}};
    gw_config *c = load_text("listen: 127.0.0.1:0\n", none, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_INT(c->responses.max_count, 10000);
        CHECK_EQ_INT(c->responses.max_bytes, 256 << 20);
        CHECK_EQ_INT(c->responses.max_age_s, 86400);
        CHECK(!c->responses.memory);   /* the ledger's database by default */
        config_free(c);
    }
    c = load_text("responses: {max_count: 0, max_bytes: 1048576, max_age_s: 60, backend: memory}\n", none, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_INT(c->responses.max_count, 0);
        CHECK_EQ_INT(c->responses.max_bytes, 1 << 20);
        CHECK_EQ_INT(c->responses.max_age_s, 60);
        CHECK(c->responses.memory);
        config_free(c);
    }
    c = load_text("responses: {backend: ledger}\n", none, &err);
    CHECK_MSG(c != NULL && !c->responses.memory, "%s", err.msg);
    config_free(c);
    static const char *const bad[] = {"responses: {max_age_s: 0}\n", "responses: {max_count: -1}\n",
                                      "responses: {max_items: 5}\n", "responses: {max_bytes: big}\n",
                                      "responses: {backend: redis}\n", "responses: {backend: [ledger]}\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        c = load_text(bad[i], none, &err);
        CHECK_MSG(c == NULL, "accepted: %s", bad[i]);
        CHECK_MSG(strstr(err.msg, "responses") != NULL, "error \"%s\" does not name the section", err.msg);
        config_free(c);
    }
}

/* dashboard.capture: off by default; routes (checked against routes:), keys (any id:
 * run-time keys too), retention and bound with their ranges. */
static void test_capture(void) {
    static const kv env[] = {{"OPENAI_API_KEY", "sk-test-openai-0123456789"}, {NULL, NULL}};
    sg_error err = {{0}};
    gw_config *c = load_text("routes:\n  - name: chat\n    targets: [gpt-4o]\n", env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_INT(c->capture.n_routes + c->capture.n_keys, 0);
        CHECK_EQ_INT(c->capture.retention_h, 24);
        CHECK_EQ_INT(c->capture.max_bytes, 32768);
        CHECK(!config_capture_wanted(c, "chat", "team-a"));
        config_free(c);
    }
    c = load_text("routes:\n  - name: chat\n    targets: [gpt-4o]\n  - name: code\n    targets: [gpt-4o]\n"
                  "dashboard:\n  capture: {routes: [chat], keys: [team-b], retention_hours: 2, max_bytes: 4096}\n",
                  env, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    if (c) {
        CHECK_EQ_INT(c->capture.retention_h, 2);
        CHECK_EQ_INT(c->capture.max_bytes, 4096);
        CHECK(config_capture_wanted(c, "chat", NULL));
        CHECK(config_capture_wanted(c, "code", "team-b"));
        CHECK(config_capture_wanted(c, NULL, "team-b"));
        CHECK(!config_capture_wanted(c, "code", "team-a"));
        CHECK(!config_capture_wanted(c, NULL, NULL));
        config_free(c);
    }
    static const char *const bad[] = {
        "dashboard:\n  capture: {retention_hours: 0}\n", "dashboard:\n  capture: {max_bytes: 10}\n",
        "dashboard:\n  capture: {routes: chat}\n", "dashboard:\n  capture: {colour: red}\n", "dashboard:\n  theme: dark\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        c = load_text(bad[i], env, &err);
        CHECK_MSG(c == NULL, "accepted: %s", bad[i]);
        config_free(c);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_responses);
    RUN(test_full);
    RUN(test_minimal_and_empty);
    RUN(test_anchors);
    RUN(test_sqlite_and_routes_only);
    RUN(test_invalid_examples);
    RUN(test_interpolation);
    RUN(test_defaults);
    RUN(test_overrides);
    RUN(test_well_known_env);
    RUN(test_local_model_names);
    RUN(test_resolve);
    RUN(test_keys);
    RUN(test_capture);
    RUN(test_roles);
    RUN(test_reload_rules);
    RUN(test_bounds);
    RUN(test_refcount);
    RUN(test_type_names);
    return tu_finish(argv[0]);
}
