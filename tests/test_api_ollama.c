/* test_api_ollama.c: Ollama's chat and generate bodies into the canonical request
 * (messages, tool calls and results, options, format, think, stream's default), what is
 * refused with a 400 in Ollama's error shape, and the answers rendered: NDJSON lines
 * (deltas, tool calls, the done line with counts and durations, an error line) and one
 * object when not streamed; the /api/tags model shape. */
#include <string.h>

#include "common/buf.h"
#include "gateway/api.h"
#include "gateway/api_ollama.h"
#include "gateway/codec_embed.h"
#include "testutil.h"

static json_t *parse_ok(const char *body, bool generate, oai_request *r) {
    gw_api_error e = {0};
    memset(r, 0, sizeof *r);
    int rc = ollama_parse_request(body, strlen(body), generate, r, &e);
    CHECK_MSG(rc == 0, "parse failed: %s", e.message);
    return r->body;
}

static void parse_fails(const char *body, bool generate, const char *needle) {
    gw_api_error e = {0};
    oai_request r;
    memset(&r, 0, sizeof r);
    CHECK_EQ_INT(ollama_parse_request(body, strlen(body), generate, &r, &e), -1);
    CHECK_EQ_INT(e.status, 400);
    CHECK(r.body == NULL);
    CHECK_MSG(strstr(e.message, needle) != NULL, "\"%s\" not in \"%s\" (body %s)", needle, e.message, body);
    sg_buf b;
    sg_buf_init(&b);
    ollama_error_body(&b, &e);   /* {"error": "..."} and nothing else */
    json_t *doc = json_loads(b.data, 0, NULL);
    CHECK(json_is_string(json_object_get(doc, "error")) && json_object_size(doc) == 1);
    json_decref(doc);
    sg_buf_free(&b);
}

static void test_parse_chat(void) {
    oai_request r;
    json_t *c = parse_ok("{\"model\":\"m1\",\"messages\":[{\"role\":\"system\",\"content\":\"be terse\"},"
                         "{\"role\":\"user\",\"content\":\"hi\"}],\"options\":{\"temperature\":0.5,\"top_p\":0.9,"
                         "\"top_k\":40,\"num_predict\":7,\"stop\":[\"\\n\\n\"],\"seed\":42,\"num_ctx\":4096},"
                         "\"format\":\"json\",\"think\":true}", false, &r);
    CHECK_EQ_STR(r.model, "m1");
    CHECK(r.stream);   /* Ollama streams by default */
    CHECK(r.include_usage);
    CHECK_EQ_INT(r.max_tokens, 7);
    CHECK_EQ_INT(json_array_size(json_object_get(c, "messages")), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(c, "messages"), 0), "role")), "system");
    CHECK(json_real_value(json_object_get(c, "temperature")) == 0.5);
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "top_k")), 40);
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "max_tokens")), 7);
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "seed")), 42);
    CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(c, "stop"), 0)), "\n\n");
    CHECK(json_object_get(c, "num_ctx") == NULL);   /* the runner's options stay out */
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(c, "response_format"), "type")), "json_object");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(c, "thinking"), "type")), "enabled");
    json_decref(c);

    c = parse_ok("{\"model\":\"m\",\"stream\":false,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"format\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}},\"think\":false,"
                 "\"options\":{\"num_predict\":-1}}", false, &r);
    CHECK(!r.stream);
    CHECK_EQ_INT(r.max_tokens, -1);
    CHECK(json_object_get(c, "max_tokens") == NULL);
    json_t *rf = json_object_get(c, "response_format");
    CHECK_EQ_STR(json_string_value(json_object_get(rf, "type")), "json_schema");
    CHECK(json_object_get(json_object_get(json_object_get(json_object_get(rf, "json_schema"), "schema"), "properties"), "a") != NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(c, "thinking"), "type")), "disabled");
    json_decref(c);
}

static void test_parse_tools(void) {
    oai_request r;
    json_t *c = parse_ok(
        "{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{}}}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"},"
        "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_time\"}},"
        "{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]},"
        "{\"role\":\"tool\",\"content\":\"21C\",\"tool_name\":\"get_weather\"},"
        "{\"role\":\"tool\",\"content\":\"noon\"}]}", false, &r);
    CHECK(r.has_tools);
    json_t *msgs = json_object_get(c, "messages");
    json_t *a = json_array_get(msgs, 1);
    CHECK(json_is_null(json_object_get(a, "content")));
    json_t *tc = json_array_get(json_object_get(a, "tool_calls"), 1);
    CHECK_EQ_STR(json_string_value(json_object_get(tc, "id")), "call_1");
    /* a call without arguments: "{}" */
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(a, "tool_calls"), 0), "function"), "arguments")), "{}");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")), "{\"city\":\"Paris\"}");
    /* results answer the call of their tool_name, then the first one left */
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 2), "tool_call_id")), "call_1");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 3), "tool_call_id")), "call_0");
    json_decref(c);
}

static void test_parse_generate(void) {
    oai_request r;
    json_t *c = parse_ok("{\"model\":\"g\",\"prompt\":\"why?\",\"system\":\"be brief\",\"raw\":false,\"suffix\":\"\"}", true, &r);
    json_t *msgs = json_object_get(c, "messages");
    CHECK_EQ_INT(json_array_size(msgs), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "be brief");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "role")), "user");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(msgs, 1), "content")), "why?");
    CHECK(r.stream);
    json_decref(c);
}

static void test_parse_refused(void) {
    parse_fails("", false, "invalid JSON");
    parse_fails("{\"model\":", false, "invalid JSON");
    parse_fails("[1,2]", false, "JSON object");
    parse_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", false, "model is required");
    parse_fails("{\"model\":7,\"messages\":[]}", false, "model is required");
    parse_fails("{\"model\":\"a\\u0001b\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", false, "control");
    parse_fails("{\"model\":\"m\"}", false, "messages");
    parse_fails("{\"model\":\"m\",\"messages\":[]}", false, "messages");
    parse_fails("{\"model\":\"m\",\"messages\":\"hi\"}", false, "messages");
    parse_fails("{\"model\":\"m\",\"messages\":[7]}", false, "messages[0]");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", false, "messages[0].role");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[1]}]}", false, "content");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"images\":[\"aGk=\"]}]}", false, "images");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[{}]}]}", false, "tool_calls");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":5}}]}]}",
                false, "tool_calls");
    parse_fails("{\"model\":\"m\",\"stream\":\"yes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", false, "stream");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":[]}", false, "options");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":{\"temperature\":\"hot\"}}", false, "temperature");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":{\"num_predict\":1.5}}", false, "num_predict");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"options\":{\"stop\":[1]}}", false, "options.stop[0]");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"format\":\"xml\"}", false, "format");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"think\":\"maybe\"}", false, "think");
    parse_fails("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"function\"}]}", false, "tools[0]");
    parse_fails("{\"model\":\"g\"}", true, "prompt");
    parse_fails("{\"model\":\"g\",\"prompt\":\"x\",\"suffix\":\"end\"}", true, "suffix");
    parse_fails("{\"model\":\"g\",\"prompt\":\"x\",\"raw\":true}", true, "raw");
    parse_fails("{\"model\":\"g\",\"prompt\":\"x\",\"context\":[1,2]}", true, "context");
    parse_fails("{\"model\":\"g\",\"prompt\":\"x\",\"images\":[\"aGk=\"]}", true, "images");
    parse_fails("{\"model\":\"g\",\"prompt\":\"x\",\"system\":3}", true, "system");
}

/* The lines of out, each parsed. */
static size_t lines_of(const sg_buf *out, json_t **lines, size_t cap) {
    size_t n = 0;
    const char *p = out->data, *end = out->data + out->len;
    while (p < end && n < cap) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        CHECK_MSG(nl != NULL, "a line without its newline: %.*s", (int)(end - p), p);
        if (!nl) break;
        lines[n] = json_loadb(p, (size_t)(nl - p), 0, NULL);
        CHECK_MSG(lines[n] != NULL, "not JSON: %.*s", (int)(nl - p), p);
        n++;
        p = nl + 1;
    }
    return n;
}

static void send_answer(ollama_render *r, bool tool) {
    gw_event ev = {.kind = GW_EV_START, .id = "x", .name = "up"};
    ollama_render_event(r, &ev);
    ev = (gw_event){.kind = GW_EV_TEXT, .text = "hel", .len = 3};
    ollama_render_event(r, &ev);
    ev = (gw_event){.kind = GW_EV_TEXT, .text = "lo \"you\"", .len = 8};
    ollama_render_event(r, &ev);
    if (tool) {
        ev = (gw_event){.kind = GW_EV_TOOL_CALL, .index = 0, .id = "c1", .name = "get_weather", .text = "{\"city\":", .len = 8};
        ollama_render_event(r, &ev);
        ev = (gw_event){.kind = GW_EV_TOOL_CALL, .index = 0, .text = "\"Paris\"}", .len = 8};
        ollama_render_event(r, &ev);
    }
    ev = (gw_event){.kind = GW_EV_FINISH, .finish = tool ? "tool_calls" : "length"};
    ollama_render_event(r, &ev);
    ev = (gw_event){.kind = GW_EV_USAGE};
    gw_usage_init(&ev.usage);
    ev.usage.input = 5;
    ev.usage.cache_read = 2;
    ev.usage.output = 3;
    ollama_render_event(r, &ev);
}

static void test_render_stream(void) {
    sg_buf out;
    sg_buf_init(&out);
    ollama_render r;
    ollama_render_init(&r, &out, false, true, "mine", 0);
    send_answer(&r, true);
    CHECK_EQ_INT(ollama_render_end(&r), 200);
    json_t *l[8] = {0};
    size_t n = lines_of(&out, l, 8);
    CHECK_EQ_INT(n, 4);   /* two deltas, the tool calls, the done line */
    if (n == 4) {
        CHECK_EQ_STR(json_string_value(json_object_get(l[0], "model")), "mine");
        CHECK_EQ_STR(json_string_value(json_object_get(l[0], "created_at")), "1970-01-01T00:00:00Z");
        CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(l[0], "message"), "role")), "assistant");
        CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(l[1], "message"), "content")), "lo \"you\"");
        CHECK(json_is_false(json_object_get(l[0], "done")) && json_is_false(json_object_get(l[2], "done")));
        json_t *tc = json_array_get(json_object_get(json_object_get(l[2], "message"), "tool_calls"), 0);
        CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tc, "function"), "name")), "get_weather");
        CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_object_get(tc, "function"), "arguments"), "city")), "Paris");
        CHECK(json_is_true(json_object_get(l[3], "done")));
        CHECK_EQ_STR(json_string_value(json_object_get(l[3], "done_reason")), "stop");   /* after tool calls too */
        CHECK_EQ_INT(json_integer_value(json_object_get(l[3], "prompt_eval_count")), 7);
        CHECK_EQ_INT(json_integer_value(json_object_get(l[3], "eval_count")), 3);
        static const char *const durations[] = {"total_duration", "load_duration", "prompt_eval_duration", "eval_duration"};
        for (size_t i = 0; i < 4; i++) CHECK(json_is_integer(json_object_get(l[3], durations[i])));
        CHECK(json_integer_value(json_object_get(l[3], "total_duration")) >=
              json_integer_value(json_object_get(l[3], "eval_duration")));
    }
    for (size_t i = 0; i < n; i++) json_decref(l[i]);
    ollama_render_free(&r);

    /* generate: "response" pieces; a failure is an {"error"} line and no done line */
    sg_buf_reset(&out);
    ollama_render_init(&r, &out, true, true, "g", 0);
    gw_event ev = {.kind = GW_EV_TEXT, .text = "partial", .len = 7};
    ollama_render_event(&r, &ev);
    gw_api_error e;
    gw_api_fail(&e, 502, "upstream_error", NULL, "the provider failed");
    ollama_render_error(&r, &e);
    CHECK_EQ_INT(ollama_render_end(&r), 200);
    n = lines_of(&out, l, 8);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_EQ_STR(json_string_value(json_object_get(l[0], "response")), "partial");
        CHECK(json_object_get(l[0], "message") == NULL);
        CHECK_EQ_STR(json_string_value(json_object_get(l[1], "error")), "the provider failed");
    }
    for (size_t i = 0; i < n; i++) json_decref(l[i]);
    ollama_render_free(&r);
    sg_buf_free(&out);
}

static void test_render_whole(void) {
    sg_buf out;
    sg_buf_init(&out);
    ollama_render r;
    ollama_render_init(&r, &out, true, false, "g", 86400);
    send_answer(&r, false);
    CHECK_EQ_INT(ollama_render_end(&r), 200);
    json_t *doc = json_loadb(out.data, out.len, 0, NULL);
    CHECK(doc != NULL);
    CHECK(memchr(out.data, '\n', out.len) == NULL);   /* one object, not lines */
    CHECK_EQ_STR(json_string_value(json_object_get(doc, "response")), "hello \"you\"");
    CHECK_EQ_STR(json_string_value(json_object_get(doc, "created_at")), "1970-01-02T00:00:00Z");
    CHECK_EQ_STR(json_string_value(json_object_get(doc, "done_reason")), "length");
    CHECK(json_is_true(json_object_get(doc, "done")));
    CHECK_EQ_INT(json_integer_value(json_object_get(doc, "eval_count")), 3);
    json_decref(doc);
    ollama_render_free(&r);

    /* chat with a tool call: message.tool_calls, arguments an object */
    sg_buf_reset(&out);
    ollama_render_init(&r, &out, false, false, "c", 0);
    send_answer(&r, true);
    ollama_render_end(&r);
    doc = json_loadb(out.data, out.len, 0, NULL);
    json_t *msg = json_object_get(doc, "message");
    CHECK_EQ_STR(json_string_value(json_object_get(msg, "content")), "hello \"you\"");
    json_t *args = json_object_get(json_object_get(json_array_get(json_object_get(msg, "tool_calls"), 0), "function"), "arguments");
    CHECK(json_is_object(args));
    json_decref(doc);
    ollama_render_free(&r);

    /* an error before any byte: the error body and its status */
    sg_buf_reset(&out);
    ollama_render_init(&r, &out, false, false, "c", 0);
    gw_event ev = {.kind = GW_EV_ERROR, .text = "overloaded", .len = 10, .status = 529};
    ollama_render_event(&r, &ev);
    CHECK_EQ_INT(ollama_render_end(&r), 529);
    doc = json_loadb(out.data, out.len, 0, NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(doc, "error")), "overloaded");
    json_decref(doc);
    ollama_render_free(&r);
    sg_buf_free(&out);
}

static void test_entries(void) {
    CHECK(gw_client_api_for_path("/api/chat") == &gw_api_ollama_chat);
    CHECK(gw_client_api_for_path("/api/generate") == &gw_api_ollama_generate);
    CHECK_EQ_STR(gw_api_ollama_chat.stream_content_type, "application/x-ndjson");
    CHECK(gw_client_apis[0] != &gw_api_ollama_chat);   /* the other endpoints keep OpenAI's words */
    gw_request r;
    gw_api_error e;
    static const char body[] = "{\"model\":\"m\",\"prompt\":\"hi\",\"stream\":false}";
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_ollama_generate, body, strlen(body), &e), 0);
    CHECK_EQ_STR(r.canon.model, "m");
    CHECK(!r.canon.stream);
    CHECK_EQ_INT(gw_request_canonical(&r, &e), 0);
    gw_request_free(&r);

    json_t *m = ollama_model_json("local/tiny", "local", 0);
    CHECK_EQ_STR(json_string_value(json_object_get(m, "name")), "local/tiny");
    CHECK_EQ_STR(json_string_value(json_object_get(m, "model")), "local/tiny");
    CHECK_EQ_INT(json_string_length(json_object_get(m, "digest")), 64);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(m, "details"), "family")), "local");
    json_t *m2 = ollama_model_json("local/tinz", "local", 0);
    CHECK(strcmp(json_string_value(json_object_get(m, "digest")), json_string_value(json_object_get(m2, "digest"))));
    json_decref(m);
    json_decref(m2);
}

/* /api/embed and /api/embeddings: kept as the OpenAI embeddings body the providers build
 * from (only model, input and dimensions), errors in Ollama's shape. */
static void test_embed_entries(void) {
    CHECK(gw_client_api_for_path("/api/embed") == &gw_api_ollama_embed);
    CHECK(gw_client_api_for_path("/api/embeddings") == &gw_api_ollama_embeddings);
    CHECK_EQ_INT(gw_api_ollama_embed.kind, GW_REQ_EMBEDDINGS);
    gw_request r;
    gw_api_error e;
    static const char embed[] = "{\"model\":\"m\",\"input\":[\"a\",\"b\"],\"dimensions\":8,\"truncate\":false,"
                                "\"keep_alive\":\"5m\",\"options\":{\"num_ctx\":512}}";
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_ollama_embed, embed, strlen(embed), &e), 0);
    const emb_request *q = (const emb_request *)r.state;
    CHECK_EQ_INT((int)q->n_inputs, 2);
    CHECK_EQ_INT((int)q->dimensions, 8);
    CHECK_EQ_STR(r.canon.model, "m");
    CHECK_EQ_INT((int)r.canon.max_tokens, 0);
    CHECK_EQ_INT((int)json_object_size(r.canon.body), 3);   /* model, input, dimensions */
    gw_request_free(&r);
    static const char legacy[] = "{\"model\":\"m\",\"prompt\":\"hello\"}";
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_ollama_embeddings, legacy, strlen(legacy), &e), 0);
    CHECK_EQ_INT((int)((const emb_request *)r.state)->n_inputs, 1);
    CHECK_EQ_STR(json_string_value(json_object_get(r.canon.body, "input")), "hello");
    gw_request_free(&r);
    static const char *const bad[] = {
        "{\"model\":\"m\",\"input\":[1]}", "{\"model\":\"m\",\"input\":[]}", "{\"input\":\"x\"}",
        "{\"model\":\"m\",\"input\":\"x\",\"truncate\":1}", "{\"model\":\"m\",\"input\":\"x\",\"dimensions\":0}",
        "{\"model\":\"m\",\"input\":\"x\",\"options\":[]}", "[1]", "{\"model\":",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(gw_request_parse(&r, &gw_api_ollama_embed, bad[i], strlen(bad[i]), &e), -1);
        CHECK_EQ_INT(e.status, 400);
        gw_request_free(&r);
    }
    static const char prompt_array[] = "{\"model\":\"m\",\"prompt\":[\"x\"]}";
    CHECK_EQ_INT(gw_request_parse(&r, &gw_api_ollama_embeddings, prompt_array, strlen(prompt_array), &e), -1);
    CHECK_EQ_STR(e.param, "prompt");
    gw_request_free(&r);
    sg_buf out;
    sg_buf_init(&out);
    gw_api_ollama_embed.error_body(&out, &e);
    CHECK_EQ_STR(out.data, "{\"error\":\"prompt must be a non-empty string\"}");
    sg_buf_free(&out);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_parse_chat);
    RUN(test_parse_tools);
    RUN(test_parse_generate);
    RUN(test_parse_refused);
    RUN(test_render_stream);
    RUN(test_render_whole);
    RUN(test_entries);
    RUN(test_embed_entries);
    return tu_finish(argv[0]);
}
