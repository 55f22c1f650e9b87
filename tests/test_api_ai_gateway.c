/* test_api_ai_gateway.c: the Vercel AI Gateway client API (api_ai_gateway.c): the AI SDK's
 * call options into the canonical request, routing fields from the headers and
 * providerOptions.gateway, answers as LanguageModelV4 results and stream parts, errors in
 * the shape @ai-sdk/gateway turns into its GatewayError classes. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/api.h"
#include "gateway/http_server.h"
#include "testutil.h"

/* Parses body as the package sends it (model id and streaming in headers). */
static int parse(gw_request *r, const char *model, const char *streaming, const char *body, gw_api_error *e) {
    static http_header h[2];
    static http_request req;
    size_t n = 0;
    if (model) h[n++] = (http_header){"AI-Language-Model-Id", model};
    if (streaming) h[n++] = (http_header){"ai-language-model-streaming", streaming};
    req = (http_request){.method = "POST", .path = "/v4/ai/language-model", .headers = h, .n_headers = n};
    memset(r, 0, sizeof *r);
    r->http = &req;
    return gw_request_parse(r, &gw_api_ai_gateway, body, strlen(body), e);
}

static json_t *canon_path(const gw_request *r, const char *path) {   /* "messages.1.content" */
    const json_t *v = r->canon.body;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok && v; tok = strtok(NULL, ".")) {
        char *end;
        long i = strtol(tok, &end, 10);
        v = *end ? json_object_get(v, tok) : json_array_get(v, (size_t)i);
    }
    return (json_t *)v;
}

static void test_prompt_to_canonical(void) {
    static const char body[] =
        "{\"prompt\":[{\"role\":\"system\",\"content\":\"Be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"call:get_weather {}\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"reasoning\",\"text\":\"hmm\"},{\"type\":\"tool-call\","
        "\"toolCallId\":\"c1\",\"toolName\":\"get_weather\",\"input\":{\"city\":\"Paris\"}}]},"
        "{\"role\":\"tool\",\"content\":[{\"type\":\"tool-result\",\"toolCallId\":\"c1\",\"toolName\":\"get_weather\","
        "\"output\":{\"type\":\"json\",\"value\":{\"city\":\"Paris\",\"temp_c\":21}}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"file\",\"mediaType\":\"image/png\","
        "\"data\":{\"type\":\"data\",\"data\":\"iVBOR\"}}]}],"
        "\"tools\":[{\"type\":\"function\",\"name\":\"get_weather\",\"description\":\"Weather\",\"inputSchema\":{\"type\":\"object\"}}],"
        "\"toolChoice\":{\"type\":\"tool\",\"toolName\":\"get_weather\"},\"maxOutputTokens\":50,\"temperature\":0.5,"
        "\"stopSequences\":[\"END\"],\"providerOptions\":{\"gateway\":{\"order\":[\"backup\",\"openai\"],"
        "\"models\":[\"anthropic/claude-haiku-4-5\"]}}}";
    gw_request r;
    gw_api_error e;
    CHECK_EQ_INT(parse(&r, "openai/gpt-4o-mini", "true", body, &e), 0);
    CHECK_EQ_STR(r.canon.model, "openai/gpt-4o-mini");
    CHECK(r.canon.stream && r.canon.include_usage && r.canon.has_tools);
    CHECK_EQ_INT(r.canon.max_tokens, 50);
    CHECK_EQ_INT(r.canon.n_order, 2);
    CHECK_EQ_STR(r.canon.order[0], "backup");
    CHECK_EQ_INT(r.canon.n_models, 2);   /* the header's model first, then the fallbacks */
    CHECK_EQ_STR(r.canon.models[0], "openai/gpt-4o-mini");
    CHECK_EQ_STR(r.canon.models[1], "anthropic/claude-haiku-4-5");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "messages.0.role")), "system");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "messages.1.content")), "call:get_weather {}");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "messages.2.tool_calls.0.function.arguments")), "{\"city\":\"Paris\"}");
    CHECK(json_is_null(canon_path(&r, "messages.2.content")));
    CHECK_EQ_STR(json_string_value(canon_path(&r, "messages.3.role")), "tool");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "messages.3.content")), "{\"city\":\"Paris\",\"temp_c\":21}");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "messages.4.content.1.image_url.url")), "data:image/png;base64,iVBOR");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "tools.0.function.name")), "get_weather");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "tool_choice.function.name")), "get_weather");
    CHECK_EQ_STR(json_string_value(canon_path(&r, "stop.0")), "END");
    CHECK(json_is_true(canon_path(&r, "stream_options.include_usage")));
    gw_request_free(&r);

    CHECK_EQ_INT(parse(&r, "chat", NULL, "{\"prompt\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}", &e), 0);
    CHECK(!r.canon.stream && r.canon.n_models == 0 && r.canon.max_tokens == -1);
    CHECK(canon_path(&r, "stream") == NULL);
    gw_request_free(&r);
}

/* The AI SDK's parallel tool call switches (providerOptions.openai / .anthropic) reach the
 * canonical parallel_tool_calls; without tools they are dropped; a wrong type is a 400. */
static void test_parallel_tool_calls(void) {
    static const char tools[] = "\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"inputSchema\":{\"type\":\"object\"}}]";
    static const struct { const char *options; int want; } cases[] = {   /* want: -1 absent, 0 false, 1 true */
        {"{\"openai\":{\"parallelToolCalls\":false}}", 0},
        {"{\"openai\":{\"parallelToolCalls\":true}}", 1},
        {"{\"anthropic\":{\"disableParallelToolUse\":true}}", 0},
        {"{\"anthropic\":{\"disableParallelToolUse\":false}}", 1},
        {"{\"openai\":{\"parallelToolCalls\":null},\"gateway\":{}}", -1},
        {"{\"openai\":{\"reasoningEffort\":\"low\"}}", -1},
    };
    char body[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(body, sizeof body, "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],%s,\"providerOptions\":%s}", tools, cases[i].options);
        gw_request r;
        gw_api_error e;
        CHECK_EQ_INT(parse(&r, "local/m", NULL, body, &e), 0);
        const json_t *p = canon_path(&r, "parallel_tool_calls");
        if (cases[i].want < 0) CHECK_MSG(p == NULL, "case %zu: no parallel_tool_calls", i);
        else CHECK_MSG(json_is_boolean(p) && json_is_true(p) == (cases[i].want == 1), "case %zu: parallel_tool_calls %d", i, cases[i].want);
        gw_request_free(&r);
    }
    /* without tools: nothing to say about their calls */
    gw_request r;
    gw_api_error e;
    CHECK_EQ_INT(parse(&r, "local/m", NULL, "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],\"providerOptions\":{\"openai\":{\"parallelToolCalls\":false}}}", &e), 0);
    CHECK(canon_path(&r, "parallel_tool_calls") == NULL);
    gw_request_free(&r);
    snprintf(body, sizeof body, "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],%s,\"providerOptions\":{\"openai\":{\"parallelToolCalls\":\"no\"}}}", tools);
    CHECK_EQ_INT(parse(&r, "local/m", NULL, body, &e), -1);
    CHECK_EQ_INT(e.status, 400);
    CHECK_EQ_STR(e.param, "providerOptions.openai.parallelToolCalls");
    gw_request_free(&r);
    snprintf(body, sizeof body, "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],%s,\"providerOptions\":{\"anthropic\":{\"disableParallelToolUse\":1}}}", tools);
    CHECK_EQ_INT(parse(&r, "local/m", NULL, body, &e), -1);
    CHECK_EQ_STR(e.param, "providerOptions.anthropic.disableParallelToolUse");
    gw_request_free(&r);
}

static void test_bad_requests(void) {
    static const struct { const char *model, *body, *param; } cases[] = {
        {NULL, "{\"prompt\":[]}", "ai-language-model-id"},
        {"m\n", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}]}", "ai-language-model-id"},
        {"m\xe9", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}]}", "ai-language-model-id"},
        {"m", "{\"prompt\":", NULL},
        {"m", "[1,2]", NULL},
        {"m", "{\"prompt\":[]}", "prompt"},
        {"m", "{\"prompt\":\"hi\"}", "prompt"},
        {"m", "{\"prompt\":[{\"role\":\"wizard\",\"content\":[]}]}", "prompt[0]"},
        {"m", "{\"prompt\":[{\"role\":\"system\",\"content\":[]}]}", "prompt[0]"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":\"hi\"}]}", "prompt[0]"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":7}]}]}", "prompt[0]"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\",\"mediaType\":\"application/pdf\",\"data\":\"x\"}]}]}", "prompt[0].content"},
        {"m", "{\"prompt\":[{\"role\":\"tool\",\"content\":[{\"type\":\"tool-result\",\"toolCallId\":\"c\",\"output\":{\"type\":\"odd\"}}]}]}", "prompt[0].content"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],\"maxOutputTokens\":\"lots\"}", "maxOutputTokens"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],\"tools\":[{\"type\":\"provider\",\"name\":\"x\"}]}", "tools"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],\"toolChoice\":{\"type\":\"any\"}}", "toolChoice"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],\"providerOptions\":{\"gateway\":{\"order\":\"openai\"}}}", "providerOptions.gateway.order"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],\"providerOptions\":{\"gateway\":{\"models\":[\"a\\u0001b\"]}}}", "providerOptions.gateway.models"},
        {"m", "{\"prompt\":[{\"role\":\"user\",\"content\":[]}],\"providerOptions\":{\"gateway\":7}}", "providerOptions.gateway"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw_request r;
        gw_api_error e;
        int rc = parse(&r, cases[i].model, NULL, cases[i].body, &e);
        CHECK_MSG(rc == -1 && e.status == 400, "case %zu: rc %d status %d", i, rc, e.status);
        if (rc == -1 && cases[i].param) CHECK_MSG(!strcmp(e.param, cases[i].param), "case %zu: param %s", i, e.param);
        gw_request_free(&r);
    }
}

/* Renders the events of one answer; returns the HTTP status. */
static int render(bool stream, sg_buf *out) {
    gw_request r;
    memset(&r, 0, sizeof r);
    r.canon.stream = stream;
    gw_render rs;
    gw_api_ai_gateway.render_init(&rs, out, &r, "openai/gpt-4o-mini", 0);
    gw_event ev[] = {
        {.kind = GW_EV_START, .id = "chatcmpl-1", .name = "gpt-4o-mini"},
        {.kind = GW_EV_TEXT, .text = "echo:", .len = 5},
        {.kind = GW_EV_TEXT, .text = " hi", .len = 3},
        {.kind = GW_EV_TOOL_CALL, .index = 0, .id = "call_1", .name = "get_weather", .text = "{\"city\":", .len = 8},
        {.kind = GW_EV_TOOL_CALL, .index = 0, .text = "\"Paris\"}", .len = 8},
        {.kind = GW_EV_FINISH, .finish = "tool_calls"},
        {.kind = GW_EV_USAGE, .usage = {.input = 3, .cache_read = 2, .cache_write = 0, .output = 5, .reasoning = -1}},
    };
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) gw_api_ai_gateway.render_event(&rs, &ev[i]);
    int status = gw_api_ai_gateway.render_end(&rs);
    gw_api_ai_gateway.render_free(&rs);
    return status;
}

static void test_render(void) {
    sg_buf b;
    sg_buf_init(&b);
    CHECK_EQ_INT(render(false, &b), 200);
    json_t *doc = json_loadb(b.data, b.len, 0, NULL);
    CHECK(doc != NULL);
    json_t *content = json_object_get(doc, "content");
    CHECK_EQ_INT(json_array_size(content), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(content, 0), "text")), "echo: hi");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(content, 1), "type")), "tool-call");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(content, 1), "input")), "{\"city\":\"Paris\"}");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(doc, "finishReason"), "unified")), "tool-calls");
    json_t *u = json_object_get(doc, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(u, "inputTokens"), "total")), 5);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(u, "inputTokens"), "noCache")), 3);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(u, "outputTokens"), "total")), 5);
    CHECK(json_is_null(json_object_get(json_object_get(u, "outputTokens"), "reasoning")));
    json_decref(doc);

    sg_buf_reset(&b);
    CHECK_EQ_INT(render(true, &b), 200);
    /* the parts in order, each one `data: {json}` */
    static const char *want[] = {"stream-start", "response-metadata", "text-start", "text-delta", "text-delta", "text-end",
                                 "tool-input-start", "tool-input-delta", "tool-input-delta", "tool-input-end", "tool-call", "finish"};
    size_t n = 0;
    char *s = strndup(b.data, b.len);
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n"), n++) {
        CHECK(!strncmp(line, "data: ", 6));
        json_t *p = json_loads(line + 6, 0, NULL);
        CHECK_MSG(n < 12 && p && !strcmp(json_string_value(json_object_get(p, "type")), want[n]), "part %zu: %s", n, line);
        if (n == 3) CHECK_EQ_STR(json_string_value(json_object_get(p, "delta")), "echo:");
        if (n == 11) CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(p, "finishReason"), "raw")), "tool_calls");
        json_decref(p);
    }
    CHECK_EQ_INT(n, 12);
    free(s);
    sg_buf_free(&b);
}

static void test_errors(void) {
    static const struct { int status; const char *code, *type; } cases[] = {
        {400, NULL, "invalid_request_error"}, {401, "invalid_api_key", "authentication_error"},
        {403, NULL, "forbidden"}, {404, "model_not_found", "model_not_found"}, {404, "not_found", "not_found"},
        {429, NULL, "rate_limit_exceeded"}, {502, NULL, "internal_server_error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw_api_error e;
        gw_api_fail(&e, cases[i].status, cases[i].code, NULL, "went wrong");
        sg_buf b;
        sg_buf_init(&b);
        gw_api_ai_gateway.error_body(&b, &e);
        json_t *doc = json_loadb(b.data, b.len, 0, NULL);
        json_t *err = json_object_get(doc, "error");
        CHECK_EQ_STR(json_string_value(json_object_get(err, "type")), cases[i].type);
        CHECK_EQ_STR(json_string_value(json_object_get(err, "message")), "went wrong");
        json_decref(doc);
        sg_buf_free(&b);
    }
    /* a stream's failure: an error part, and nothing after it */
    gw_request r;
    memset(&r, 0, sizeof r);
    r.canon.stream = true;
    sg_buf b;
    sg_buf_init(&b);
    gw_render rs;
    gw_api_ai_gateway.render_init(&rs, &b, &r, "m", 0);
    gw_event t = {.kind = GW_EV_TEXT, .text = "x", .len = 1};
    gw_api_ai_gateway.render_event(&rs, &t);
    gw_event err = {.kind = GW_EV_ERROR, .text = "upstream broke", .len = 14, .status = 502};
    gw_api_ai_gateway.render_event(&rs, &err);
    CHECK_EQ_INT(gw_api_ai_gateway.render_end(&rs), 200);
    gw_api_ai_gateway.render_free(&rs);
    sg_buf_append(&b, "", 1);
    CHECK(strstr(b.data, "\"type\":\"error\"") && strstr(b.data, "upstream broke"));
    CHECK(!strstr(b.data, "\"type\":\"finish\""));
    sg_buf_free(&b);
    CHECK(gw_client_api_for_path("/v4/ai/language-model") == &gw_api_ai_gateway);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_prompt_to_canonical);
    RUN(test_bad_requests);
    RUN(test_parallel_tool_calls);
    RUN(test_render);
    RUN(test_errors);
    return tu_finish(argv[0]);
}
