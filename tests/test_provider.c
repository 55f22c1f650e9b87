/* test_provider.c: the tables of client APIs (api.h) and providers (provider.h): one entry
 * per type, in gw_provider_type order, the configuration's type names from the table; each
 * remote entry's upstream request (URL, auth header, version, extra headers, body); the
 * OpenAI pass-through (a spliced body, no JSON tree built; the usage-only chunk marked);
 * OpenAI's retry-after from its rate-limit headers; the API table's endpoints and error
 * shapes. */
#include <string.h>

#include "common/buf.h"
#include "gateway/api.h"
#include "gateway/provider.h"
#include "testutil.h"

static void test_table(void) {
    for (int t = 0; t < GW_PROVIDER_N_TYPES; t++) {
        const gw_provider_entry *e = gw_provider_entry_of((gw_provider_type)t);
        CHECK(e != NULL);
        if (!e) continue;
        CHECK_EQ_INT(e->type, t);
        CHECK(gw_provider_entry_named(e->type_name) == e);
        CHECK_EQ_STR(config_provider_type_name((gw_provider_type)t), e->type_name);
        CHECK_EQ_INT(config_provider_type_from_name(e->type_name), t);
        CHECK(e->config_keys && !strcmp(e->config_keys[0], "type"));
        /* a provider either runs jobs or calls an upstream, with everything that needs */
        if (e->in_process) CHECK(e->job_start && e->job_cancel && !e->build_request);
        else CHECK(e->build_request && e->scan_event && e->scan_end && e->scan_response && e->classify_error &&
                   e->retry_after_ms && e->default_base_url && e->key_env[0]);
    }
    CHECK(gw_provider_entries[GW_PROVIDER_N_TYPES] == NULL);
    CHECK(gw_provider_entry_of(GW_PROVIDER_N_TYPES) == NULL);
    CHECK(gw_provider_entry_named("azure") == NULL);
    CHECK(gw_provider_local.in_process && !gw_provider_openai.in_process);
    CHECK(gw_provider_openai.passthrough_api == &gw_api_openai_chat);
    CHECK(gw_provider_anthropic.passthrough_api == NULL);
}

static const char *header(const gw_upstream_call *c, const char *name);

/* What the entries know about the well-known providers' model names. */
static void test_model_names(void) {
    CHECK_EQ_STR(gw_provider_openai.listed_models[0], "gpt-4o-mini");
    CHECK_EQ_STR(gw_provider_anthropic.listed_models[0], "claude-sonnet-4-5");
    CHECK_EQ_STR(gw_provider_google.listed_models[0], "gemini-2.5-flash");
    CHECK(gw_provider_local.listed_models == NULL && gw_provider_local.owns_bare_model == NULL);
    static const struct { const char *model; const gw_provider_entry *owner; } cases[] = {
        {"gpt-4o", &gw_provider_openai}, {"chatgpt-4o-latest", &gw_provider_openai},
        {"text-embedding-3-small", &gw_provider_openai}, {"o3", &gw_provider_openai}, {"o4-mini", &gw_provider_openai},
        {"o10", NULL}, {"o2", NULL}, {"claude-haiku-4-5", &gw_provider_anthropic}, {"claude", NULL},
        {"gemini-2.5-pro", &gw_provider_google}, {"llama-3", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const gw_provider_entry *owner = NULL;
        for (size_t t = 0; gw_provider_entries[t]; t++)
            if (gw_provider_entries[t]->owns_bare_model && gw_provider_entries[t]->owns_bare_model(cases[i].model)) {
                CHECK_MSG(!owner, "%s has two owners", cases[i].model);
                owner = gw_provider_entries[t];
            }
        CHECK_MSG(owner == cases[i].owner, "%s: owner %s", cases[i].model, owner ? owner->type_name : "none");
    }
}

/* The token-count hooks: Anthropic's endpoint, the local tokenizer, nothing for the rest. */
static void test_count_tokens_entries(void) {
    CHECK(gw_provider_anthropic.build_count_tokens && gw_provider_anthropic.scan_count_tokens);
    CHECK(!gw_provider_openai.build_count_tokens && !gw_provider_google.build_count_tokens);
    CHECK(gw_provider_local.count_prompt && !gw_provider_openai.count_prompt);
    gw_header extra = {"x-extra", "1"};
    gw_provider pv = {.name = "a", .base_url = "https://api.anthropic.test", .api_key = "sk-ant", .version = "2023-06-01",
                      .headers = &extra, .n_headers = 1};
    sg_buf url, body;
    sg_buf_init(&url);
    sg_buf_init(&body);
    gw_upstream_call call = {.url = &url, .body = &body};
    json_t *req = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "claude-x", "messages", "role", "user", "content", "hi");
    gw_provider_anthropic.build_count_tokens(req, &pv, "claude-haiku-4-5", &call);
    CHECK_EQ_STR(url.data, "https://api.anthropic.test/v1/messages/count_tokens");
    CHECK_EQ_STR(body.data, "{\"model\":\"claude-haiku-4-5\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    CHECK_EQ_STR(header(&call, "x-api-key"), "sk-ant");
    CHECK_EQ_STR(header(&call, "anthropic-version"), "2023-06-01");
    CHECK_EQ_STR(header(&call, "x-extra"), "1");
    CHECK_EQ_STR(json_string_value(json_object_get(req, "model")), "claude-x");   /* the client's body is left as it was */
    json_decref(req);
    sg_buf_free(&url);
    sg_buf_free(&body);
    CHECK_EQ_INT(gw_provider_anthropic.scan_count_tokens("{\"input_tokens\":17}", 19), 17);
    CHECK_EQ_INT(gw_provider_anthropic.scan_count_tokens("{\"input_tokens\":-1}", 19), -1);
    CHECK_EQ_INT(gw_provider_anthropic.scan_count_tokens("nope", 4), -1);
}

static const char *header(const gw_upstream_call *c, const char *name) {
    for (size_t i = 0; i < c->n_headers; i++)
        if (!strcmp(c->headers[i].name, name)) return c->headers[i].value;
    return NULL;
}

typedef struct built {
    sg_buf url, body;
    gw_upstream_call call;
    int rc;
} built;

static void build(built *b, const gw_provider_entry *e, gw_request *r, const gw_provider *pv, const char *model) {
    sg_buf_init(&b->url);
    sg_buf_init(&b->body);
    memset(&b->call, 0, sizeof b->call);
    b->call.url = &b->url;
    b->call.body = &b->body;
    gw_api_error err;
    b->rc = e->build_request(r, pv, model, NULL, &b->call, &err);
}

static void built_free(built *b) {
    sg_buf_free(&b->url);
    sg_buf_free(&b->body);
}

static void test_build_requests(void) {
    static const char body[] = "{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":0.5}";
    gw_header extra = {"x-extra", "1"};
    gw_provider pv = {.name = "p", .base_url = "http://up.example/v1", .api_key = "sk-test", .headers = &extra, .n_headers = 1};
    gw_api_error err;
    gw_request r;
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_openai_chat, body, strlen(body), &err), 0);
    CHECK_EQ_STR(r.canon.model, "chat");

    built b;
    build(&b, &gw_provider_openai, &r, &pv, "gpt-x");
    CHECK_EQ_INT(b.rc, 0);
    CHECK_EQ_STR(b.url.data, "http://up.example/v1/chat/completions");
    CHECK_EQ_STR(header(&b.call, "authorization"), "Bearer sk-test");
    CHECK_EQ_STR(header(&b.call, "x-extra"), "1");
    CHECK(strstr(b.body.data, "\"model\":\"gpt-x\"") && strstr(b.body.data, "\"temperature\":0.5"));
    CHECK(r.canon.body == NULL);   /* spliced: the pass-through built no JSON tree */
    built_free(&b);

    pv.version = "2023-06-01";
    build(&b, &gw_provider_anthropic, &r, &pv, "claude-x");
    CHECK_EQ_INT(b.rc, 0);
    CHECK_EQ_STR(b.url.data, "http://up.example/v1/v1/messages");
    CHECK_EQ_STR(header(&b.call, "x-api-key"), "sk-test");
    CHECK_EQ_STR(header(&b.call, "anthropic-version"), "2023-06-01");
    CHECK(header(&b.call, "authorization") == NULL);
    CHECK(strstr(b.body.data, "\"max_tokens\"") != NULL);
    CHECK(r.canon.body != NULL);   /* a translation needs the canonical body */
    built_free(&b);

    /* once the canonical body exists, OpenAI's request is built from it */
    build(&b, &gw_provider_openai, &r, &pv, "gpt-y");
    CHECK_EQ_INT(b.rc, 0);
    CHECK(strstr(b.body.data, "\"model\":\"gpt-y\"") != NULL);
    built_free(&b);

    pv.version = "v1beta";
    build(&b, &gw_provider_google, &r, &pv, "gemini-x");
    CHECK_EQ_INT(b.rc, 0);
    CHECK_EQ_STR(b.url.data, "http://up.example/v1/v1beta/models/gemini-x:generateContent");
    CHECK_EQ_STR(header(&b.call, "x-goog-api-key"), "sk-test");
    CHECK(strstr(b.body.data, "\"contents\"") != NULL);
    built_free(&b);

    build(&b, &gw_provider_google, &r, &pv, "bad model/name");
    CHECK_EQ_INT(b.rc, -1);
    built_free(&b);
    gw_request_free(&r);

    /* an Anthropic client's request reaches an OpenAI provider through the canonical body */
    static const char abody[] = "{\"model\":\"chat\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_anthropic_messages, abody, strlen(abody), &err), 0);
    CHECK(gw_provider_openai.passthrough_api != r.api);
    build(&b, &gw_provider_openai, &r, &pv, "gpt-x");
    CHECK_EQ_INT(b.rc, 0);
    CHECK(strstr(b.body.data, "\"model\":\"gpt-x\"") && strstr(b.body.data, "\"role\":\"user\""));
    built_free(&b);
    gw_request_free(&r);
}

static int count_events(void *ctx, const gw_event *ev) {
    (void)ev;
    (*(int *)ctx)++;
    return 0;
}

static void test_openai_scan_and_relay(void) {
    gw_scan s;
    int n = 0;
    gw_relay relay;
    gw_provider_openai.scan_init(&s, 1);
    static const char chunk[] = "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}";
    CHECK_EQ_INT(gw_provider_openai.scan_event(&s, NULL, chunk, strlen(chunk), count_events, &n, &relay), 0);
    CHECK_EQ_INT(relay, GW_RELAY_CHUNK);
    CHECK(n >= 1);
    static const char usage[] = "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}";
    CHECK_EQ_INT(gw_provider_openai.scan_event(&s, NULL, usage, strlen(usage), count_events, &n, &relay), 0);
    CHECK_EQ_INT(relay, GW_RELAY_USAGE_CHUNK);
    static const char error[] = "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}";
    CHECK_EQ_INT(gw_provider_openai.scan_event(&s, NULL, error, strlen(error), count_events, &n, &relay), -1);
    gw_provider_openai.scan_free(&s);

    sg_buf out;
    sg_buf_init(&out);
    gw_provider_openai.relay_chunk("{}", 2, &out);
    CHECK_EQ_STR(out.data, "data: {}\n\n");
    sg_buf_free(&out);
}

static void test_retry_after(void) {
    upstream_header h[] = {{"x-ratelimit-remaining-requests", "0"}, {"x-ratelimit-reset-requests", "1m2.5s"}};
    upstream_response r = {429, h, 2};
    CHECK_EQ_INT(gw_provider_openai.retry_after_ms(&r), 62500);
    CHECK_EQ_INT(gw_provider_anthropic.retry_after_ms(&r), 0);   /* OpenAI's headers are OpenAI's */
    r.status = 503;
    CHECK_EQ_INT(gw_provider_openai.retry_after_ms(&r), 0);
    upstream_header h2[] = {{"retry-after", "3"}};
    upstream_response r2 = {429, h2, 1};
    CHECK_EQ_INT(gw_provider_google.retry_after_ms(&r2), 3000);
    CHECK_EQ_INT(gw_provider_openai.retry_after_ms(&r2), 3000);
}

static void test_client_apis(void) {
    CHECK(gw_client_api_for_path("/v1/chat/completions") == &gw_api_openai_chat);
    CHECK(gw_client_api_for_path("/chat/completions") == &gw_api_openai_chat);
    CHECK(gw_client_api_for_path("/v1/messages") == &gw_api_anthropic_messages);
    CHECK(gw_client_api_for_path("/v1/models") == NULL);
    /* the other endpoints' errors: in the shape of the API whose clients call them */
    CHECK(gw_client_api_for_errors("/v1/messages/count_tokens") == &gw_api_anthropic_messages);
    CHECK(gw_client_api_for_errors("/v4/ai/config") == &gw_api_ai_gateway);
    CHECK(gw_client_api_for_errors("/api/tags") == &gw_api_ollama_chat);
    CHECK(gw_client_api_for_errors("/api/embed") == &gw_api_ollama_embed);
    CHECK(gw_client_api_for_errors("/v1/models") == &gw_api_openai_chat);
    CHECK(gw_client_api_for_errors("/v1/messagesX") == &gw_api_openai_chat);
    CHECK(gw_client_apis[0] == &gw_api_openai_chat);
    gw_api_error e;
    gw_api_fail(&e, 429, "slow_down", NULL, "wait");
    sg_buf b;
    sg_buf_init(&b);
    gw_api_anthropic_messages.error_body(&b, &e);
    CHECK(strstr(b.data, "\"type\":\"error\"") && strstr(b.data, "rate_limit_error"));
    sg_buf_reset(&b);
    gw_api_openai_chat.error_body(&b, &e);
    CHECK(strstr(b.data, "\"code\":\"slow_down\"") && !strstr(b.data, "\"type\":\"error\""));
    sg_buf_free(&b);

    gw_request r;
    static const char bad[] = "{\"model\":\"chat\"}";
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_anthropic_messages, bad, strlen(bad), &e), -1);
    CHECK_EQ_INT(e.status, 400);
    gw_request_free(&r);
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_openai_chat, bad, strlen(bad), &e), -1);
    CHECK_EQ_INT(e.status, 400);
    gw_request_free(&r);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_table);
    RUN(test_model_names);
    RUN(test_count_tokens_entries);
    RUN(test_build_requests);
    RUN(test_openai_scan_and_relay);
    RUN(test_retry_after);
    RUN(test_client_apis);
    return tu_finish(argv[0]);
}
