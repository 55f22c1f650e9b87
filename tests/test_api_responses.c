/* test_api_responses.c: the OpenAI Responses client API (api_openai_responses.c) and the
 * response store (response_store.h): input items into canonical chat messages, tools,
 * tool_choice, text.format, reasoning and limits; 400s in OpenAI's shape; the Response
 * object and the typed SSE events rendered from canonical events; storing, continuing
 * with previous_response_id, item_reference, ownership by key, GET / DELETE; the store's
 * bounds. */
#include <string.h>

#include "common/buf.h"
#include "gateway/api.h"
#include "gateway/response_store.h"
#include "testutil.h"

static int parse(gw_request *r, const char *body, const char *key, gw_api_error *e) {
    memset(r, 0, sizeof *r);
    r->key_id = key;
    return gw_request_parse(r, &gw_api_openai_responses, body, strlen(body), e);
}

static json_t *msg(const gw_request *r, size_t i) { return json_array_get(json_object_get(r->canon.body, "messages"), i); }
static const char *mstr(const gw_request *r, size_t i, const char *k) { return json_string_value(json_object_get(msg(r, i), k)); }

static void test_parse_input(void) {
    gw_request r;
    gw_api_error e;
    CHECK_EQ_INT(parse(&r, "{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"be brief\",\"unknown\":1}", NULL, &e), 0);
    CHECK_EQ_STR(r.canon.model, "m");
    CHECK(!r.canon.stream);
    CHECK_EQ_INT(json_array_size(json_object_get(r.canon.body, "messages")), 2);
    CHECK_EQ_STR(mstr(&r, 0, "role"), "system");
    CHECK_EQ_STR(mstr(&r, 0, "content"), "be brief");
    CHECK_EQ_STR(mstr(&r, 1, "role"), "user");
    CHECK_EQ_STR(mstr(&r, 1, "content"), "hi");
    CHECK(!json_object_get(r.canon.body, "unknown"));
    gw_request_free(&r);

    static const char items[] =
        "{\"model\":\"m\",\"stream\":true,\"max_output_tokens\":7,\"temperature\":0.5,\"reasoning\":{\"effort\":\"low\"},"
        "\"input\":[{\"role\":\"developer\",\"content\":\"sys\"},"
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"a\"},"
        "{\"type\":\"input_image\",\"image_url\":\"https://x/y.png\"}]},"
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"t\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"f\",\"arguments\":\"{}\"},"
        "{\"type\":\"function_call\",\"call_id\":\"c2\",\"name\":\"g\",\"arguments\":\"{\\\"x\\\":1}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":\"r1\"},"
        "{\"type\":\"reasoning\",\"summary\":[]}],"
        "\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":{\"type\":\"object\"},\"strict\":true}],"
        "\"tool_choice\":{\"type\":\"function\",\"name\":\"f\"},"
        "\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"s\",\"schema\":{\"type\":\"object\"},\"strict\":true}}}";
    CHECK_EQ_INT(parse(&r, items, NULL, &e), 0);
    CHECK(r.canon.stream && r.canon.include_usage && r.canon.has_tools);
    CHECK_EQ_INT(r.canon.max_tokens, 7);
    json_t *b = r.canon.body;
    CHECK_EQ_INT(json_array_size(json_object_get(b, "messages")), 4);   /* system, user, assistant (+2 calls), tool */
    CHECK_EQ_STR(mstr(&r, 0, "role"), "system");
    CHECK_EQ_INT(json_array_size(json_object_get(msg(&r, 1), "content")), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(msg(&r, 1), "content"), 1), "type")), "image_url");
    CHECK_EQ_STR(mstr(&r, 2, "content"), "t");
    CHECK_EQ_INT(json_array_size(json_object_get(msg(&r, 2), "tool_calls")), 2);
    CHECK_EQ_STR(mstr(&r, 3, "role"), "tool");
    CHECK_EQ_STR(mstr(&r, 3, "tool_call_id"), "c1");
    CHECK_EQ_STR(mstr(&r, 3, "content"), "r1");
    CHECK_EQ_INT(json_integer_value(json_object_get(b, "max_completion_tokens")), 7);
    CHECK_EQ_STR(json_string_value(json_object_get(b, "reasoning_effort")), "low");
    CHECK(json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage")));
    json_t *tool = json_array_get(json_object_get(b, "tools"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(tool, "type")), "function");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(tool, "function"), "name")), "f");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_object_get(b, "tool_choice"), "function"), "name")), "f");
    json_t *rf = json_object_get(b, "response_format");
    CHECK_EQ_STR(json_string_value(json_object_get(rf, "type")), "json_schema");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(rf, "json_schema"), "name")), "s");
    gw_request_free(&r);

    CHECK_EQ_INT(parse(&r, "{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_object\"}}}", NULL, &e), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(r.canon.body, "response_format"), "type")), "json_object");
    gw_request_free(&r);
}

static void expect_400(const char *body, const char *param, const char *needle) {
    gw_request r;
    gw_api_error e;
    memset(&e, 0, sizeof e);
    CHECK_MSG(parse(&r, body, NULL, &e) == -1, "accepted: %s", body);
    CHECK_EQ_INT(e.status, 400);
    if (param) CHECK_EQ_STR(e.param, param);
    CHECK_MSG(strstr(e.message, needle) != NULL, "message \"%s\" lacks \"%s\"", e.message, needle);
    gw_request_free(&r);
}

static void test_parse_errors(void) {
    expect_400("{\"model\":", NULL, "could not parse the JSON body");
    expect_400("[1,2]", "body", "expected an object");
    expect_400("{\"input\":\"x\"}", "model", "Missing required parameter: 'model'");
    expect_400("{\"model\":3,\"input\":\"x\"}", "model", "expected a string");
    expect_400("{\"model\":\"m\"}", "input", "Missing required parameter: 'input'");
    expect_400("{\"model\":\"m\",\"input\":5}", "input", "expected a string or an array");
    expect_400("{\"model\":\"m\",\"input\":[]}", "input", "no input items");
    expect_400("{\"model\":\"m\",\"input\":[7]}", "input[0]", "expected an object");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"computer_call\"}]}", "input[0]", "'computer_call' is not supported");
    expect_400("{\"model\":\"m\",\"input\":[{\"role\":\"king\",\"content\":\"x\"}]}", "input[0]", "'king'");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"}]}", "input[0].call_id", "Missing required parameter");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"function_call\",\"call_id\":1,\"name\":\"f\",\"arguments\":\"{}\"}]}", "input[0].call_id", "expected a string");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"stream\":\"yes\"}", "stream", "expected a boolean");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}", "tools[0]", "'web_search' is not supported");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"tool_choice\":\"sometimes\"}", "tool_choice", "'sometimes'");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens", "below minimum");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"max_output_tokens\":\"9\"}", "max_output_tokens", "expected an integer");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", "text.format.type", "'yaml'");
    expect_400("{\"model\":\"m\",\"input\":\"x\",\"previous_response_id\":\"resp_nope\"}", "previous_response_id", "resp_nope");
    expect_400("{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_nope\"}]}", "input[0]", "msg_nope");
    expect_400("{\"model\":\"m\\u0001x\",\"input\":\"x\"}", "model", "control character");
}

/* Renders a fixed answer: text "Hello", then a call f({"a":1}) in two fragments. */
static int render(gw_request *r, sg_buf *out, const char *finish) {
    gw_render rs;
    r->api->render_init(&rs, out, r, "m", 1700000000);
    gw_event ev[] = {
        {.kind = GW_EV_START, .id = "up", .name = "m"},
        {.kind = GW_EV_TEXT, .text = "Hel", .len = 3},
        {.kind = GW_EV_TEXT, .text = "lo", .len = 2},
        {.kind = GW_EV_TOOL_CALL, .index = 0, .id = "call_9", .name = "f", .text = "{\"a\":", .len = 5},
        {.kind = GW_EV_TOOL_CALL, .index = 0, .text = "1}", .len = 2},
        {.kind = GW_EV_FINISH, .finish = finish},
        {.kind = GW_EV_USAGE, .usage = {5, 2, 0, 4, 1, false}},
    };
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) r->api->render_event(&rs, &ev[i]);
    int status = r->api->render_end(&rs);
    r->api->render_free(&rs);
    return status;
}

/* The endpoints as gateway.c serves them: the store's read, then the renderer. */
typedef struct call {
    const char *id, *query;
    bool items, del;
    sg_buf *out;
    int status;
} call;

static void on_read(loop *l, void *arg, rstore_status st, rstore_entry *en) {
    (void)l;
    call *c = arg;
    if (c->del) c->status = gw_responses_deleted(st, c->id, c->out);
    else if (st == RSTORE_UNAVAILABLE) c->status = gw_responses_unavailable(c->out);
    else c->status = c->items ? gw_responses_input_items(&en[0], c->id, c->query, c->out) : gw_responses_get(&en[0], c->id, c->out);
}

/* query NULL: GET /v1/responses/{id}; else GET .../input_items?query. */
static int http_get(const char *id, const char *key, bool admin, const char *query, sg_buf *out) {
    call c = {id, query, query != NULL, false, out, -1};
    rstore_who who = {key, admin};
    const char *ids[1] = {id};
    rstore_fetch_async(NULL, ids, 1, &who, on_read, &c);   /* memory: done before it returns */
    return c.status;
}

static int http_delete(const char *id, const char *key, bool admin, sg_buf *out) {
    call c = {id, NULL, false, true, out, -1};
    rstore_who who = {key, admin};
    rstore_delete_async(NULL, id, &who, on_read, &c);
    return c.status;
}

static void test_render_and_store(void) {
    rstore_clear();
    gw_request r;
    gw_api_error e;
    sg_buf out;
    sg_buf_init(&out);
    CHECK_EQ_INT(parse(&r, "{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"sys\"}", "team-a", &e), 0);
    CHECK_EQ_INT(render(&r, &out, "tool_calls"), 200);
    gw_request_free(&r);
    json_t *j = json_loadb(out.data, out.len, 0, NULL);
    CHECK(j != NULL);
    const char *id = json_string_value(json_object_get(j, "id"));
    CHECK(id && !strncmp(id, "resp_", 5));
    CHECK_EQ_STR(json_string_value(json_object_get(j, "object")), "response");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "status")), "completed");
    CHECK_EQ_STR(json_string_value(json_object_get(j, "instructions")), "sys");
    json_t *output = json_object_get(j, "output");
    CHECK_EQ_INT(json_array_size(output), 2);
    json_t *m0 = json_array_get(output, 0), *f1 = json_array_get(output, 1);
    CHECK_EQ_STR(json_string_value(json_object_get(m0, "type")), "message");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(m0, "content"), 0), "text")), "Hello");
    CHECK_EQ_STR(json_string_value(json_object_get(f1, "type")), "function_call");
    CHECK_EQ_STR(json_string_value(json_object_get(f1, "call_id")), "call_9");
    CHECK_EQ_STR(json_string_value(json_object_get(f1, "arguments")), "{\"a\":1}");
    json_t *u = json_object_get(j, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(u, "input_tokens")), 7);   /* uncached + cached */
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(u, "input_tokens_details"), "cached_tokens")), 2);
    CHECK_EQ_INT(json_integer_value(json_object_get(u, "output_tokens")), 4);
    CHECK_EQ_INT(json_integer_value(json_object_get(u, "total_tokens")), 11);
    CHECK_EQ_INT(rstore_count(), 1);

    /* continued by its owner: the stored conversation (no instructions), then the input */
    char body[512];
    snprintf(body, sizeof body, "{\"model\":\"m\",\"previous_response_id\":\"%s\",\"input\":[{\"type\":\"function_call_output\","
             "\"call_id\":\"call_9\",\"output\":\"ok\"}],\"store\":false}", id);
    CHECK_EQ_INT(parse(&r, body, "team-a", &e), 0);
    CHECK_EQ_INT(json_array_size(json_object_get(r.canon.body, "messages")), 3);
    CHECK_EQ_STR(mstr(&r, 0, "content"), "hi");
    CHECK_EQ_STR(mstr(&r, 1, "role"), "assistant");
    CHECK_EQ_STR(mstr(&r, 1, "content"), "Hello");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(msg(&r, 1), "tool_calls"), 0), "id")), "call_9");
    CHECK_EQ_STR(mstr(&r, 2, "role"), "tool");
    sg_buf_reset(&out);
    CHECK_EQ_INT(render(&r, &out, "stop"), 200);
    gw_request_free(&r);
    CHECK_EQ_INT(rstore_count(), 1);   /* store: false */

    /* another key does not see it */
    CHECK_EQ_INT(parse(&r, body, "team-b", &e), -1);
    CHECK_EQ_STR(e.code, "previous_response_not_found");
    gw_request_free(&r);

    /* item_reference to its message */
    const char *mid = json_string_value(json_object_get(m0, "id"));
    snprintf(body, sizeof body, "{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"%s\"},\"x\"]}", mid);
    CHECK_EQ_INT(parse(&r, body, "team-a", &e), -1);   /* a bare string is not an item */
    gw_request_free(&r);
    snprintf(body, sizeof body, "{\"model\":\"m\",\"store\":false,\"input\":[{\"type\":\"item_reference\",\"id\":\"%s\"}]}", mid);
    CHECK_EQ_INT(parse(&r, body, "team-a", &e), 0);
    CHECK_EQ_STR(mstr(&r, 0, "content"), "Hello");
    gw_request_free(&r);

    /* GET and DELETE: owner, other key, admin */
    sg_buf g;
    sg_buf_init(&g);
    CHECK_EQ_INT(http_get(id, "team-b", false, NULL, &g), 404);
    CHECK(strstr(g.data, "not found") && strstr(g.data, "invalid_request_error"));
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id, "team-b", true, NULL, &g), 200);
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id, "team-a", false, NULL, &g), 200);
    CHECK(g.len == out.len || strstr(g.data, id));
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_delete(id, "team-b", false, &g), 404);
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_delete(id, "team-a", false, &g), 200);
    CHECK(strstr(g.data, "\"deleted\":true") != NULL);
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id, "team-a", false, NULL, &g), 404);
    sg_buf_free(&g);
    json_decref(j);
    sg_buf_free(&out);
}

static void test_stream_events(void) {
    gw_request r;
    gw_api_error e;
    sg_buf out;
    sg_buf_init(&out);
    CHECK_EQ_INT(parse(&r, "{\"model\":\"m\",\"input\":\"hi\",\"stream\":true,\"store\":false,\"max_output_tokens\":3}", NULL, &e), 0);
    CHECK_EQ_INT(render(&r, &out, "length"), 200);
    gw_request_free(&r);
    static const char *const order[] = {
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.incomplete"};
    const char *p = out.data;
    size_t n = 0;
    json_t *last = NULL;
    while (p && (p = strstr(p, "event: "))) {
        p += 7;
        const char *nl = strchr(p, '\n');
        CHECK(n < sizeof order / sizeof order[0]);
        if (n < sizeof order / sizeof order[0]) CHECK_MSG(!strncmp(p, order[n], (size_t)(nl - p)) && strlen(order[n]) == (size_t)(nl - p),
                                                          "event %zu is %.*s, expected %s", n, (int)(nl - p), p, order[n]);
        const char *d = nl + 7, *end = strstr(d, "\n\n");
        json_decref(last);
        last = json_loadb(d, (size_t)(end - d), 0, NULL);
        CHECK(last != NULL);
        CHECK_EQ_INT(json_integer_value(json_object_get(last, "sequence_number")), n);
        n++;
    }
    CHECK_EQ_INT(n, sizeof order / sizeof order[0]);
    json_t *resp = json_object_get(last, "response");
    CHECK_EQ_STR(json_string_value(json_object_get(resp, "status")), "incomplete");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(resp, "incomplete_details"), "reason")), "max_output_tokens");
    json_decref(last);

    /* an error mid-stream: error, then response.failed */
    sg_buf_reset(&out);
    CHECK_EQ_INT(parse(&r, "{\"model\":\"m\",\"input\":\"hi\",\"stream\":true}", NULL, &e), 0);
    gw_render rs;
    r.api->render_init(&rs, &out, &r, "m", 1);
    gw_event t = {.kind = GW_EV_TEXT, .text = "a", .len = 1};
    r.api->render_event(&rs, &t);
    gw_api_error fail;
    gw_api_fail(&fail, 502, "upstream_error", NULL, "the provider failed");
    r.api->render_error(&rs, &fail);
    r.api->render_end(&rs);
    r.api->render_free(&rs);
    gw_request_free(&r);
    CHECK(strstr(out.data, "event: error\n") && strstr(out.data, "event: response.failed\n"));
    CHECK(!strstr(out.data, "response.completed"));
    sg_buf_free(&out);
}

static const char *item_id(json_t *page, size_t i) {
    return json_string_value(json_object_get(json_array_get(json_object_get(page, "data"), i), "id"));
}

/* input_items: this input and what previous_response_id carried over (the previous
 * input, then its output), newest first by default; limit, order, after; bad queries. */
static void test_input_items(void) {
    rstore_clear();
    gw_request r;
    gw_api_error e;
    sg_buf out, g;
    sg_buf_init(&out);
    sg_buf_init(&g);
    CHECK_EQ_INT(parse(&r, "{\"model\":\"m\",\"input\":\"hi\",\"instructions\":\"sys\"}", "k", &e), 0);
    CHECK_EQ_INT(render(&r, &out, "tool_calls"), 200);   /* output: a message and a function call */
    gw_request_free(&r);
    json_t *first = json_loadb(out.data, out.len, 0, NULL);
    const char *id1 = json_string_value(json_object_get(first, "id"));
    CHECK_EQ_INT(http_get(id1, "k", false, "", &g), 200);
    json_t *page = json_loadb(g.data, g.len, 0, NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(page, "object")), "list");
    CHECK_EQ_INT(json_array_size(json_object_get(page, "data")), 1);   /* instructions are not an item */
    json_t *it = json_array_get(json_object_get(page, "data"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(it, "type")), "message");
    CHECK_EQ_STR(json_string_value(json_object_get(it, "role")), "user");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(it, "content"), 0), "type")), "input_text");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(it, "content"), 0), "text")), "hi");
    CHECK(item_id(page, 0) && !strncmp(item_id(page, 0), "msg_", 4));
    CHECK(json_is_false(json_object_get(page, "has_more")));
    json_decref(page);

    char body[1024];
    snprintf(body, sizeof body, "{\"model\":\"m\",\"previous_response_id\":\"%s\",\"input\":[{\"role\":\"user\","
             "\"content\":\"more\"}]}", id1);
    CHECK_EQ_INT(parse(&r, body, "k", &e), 0);
    sg_buf_reset(&out);
    CHECK_EQ_INT(render(&r, &out, "stop"), 200);
    gw_request_free(&r);
    json_t *second = json_loadb(out.data, out.len, 0, NULL);
    const char *id2 = json_string_value(json_object_get(second, "id"));
    CHECK(id2 && strcmp(id1, id2));
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id2, "k", false, "", &g), 200);
    page = json_loadb(g.data, g.len, 0, NULL);
    CHECK_EQ_INT(json_array_size(json_object_get(page, "data")), 4);   /* more, fc, msg (output), hi */
    json_t *d = json_object_get(page, "data");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(d, 0), "content"), 0), "text")), "more");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(d, 1), "type")), "function_call");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(d, 2), "id")),
                 json_string_value(json_object_get(json_array_get(json_object_get(first, "output"), 0), "id")));
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(d, 3), "content"), 0), "text")), "hi");
    char fid[80], lid[80];
    snprintf(fid, sizeof fid, "%s", item_id(page, 0));
    snprintf(lid, sizeof lid, "%s", item_id(page, 1));
    json_decref(page);

    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id2, "k", false, "limit=2", &g), 200);
    page = json_loadb(g.data, g.len, 0, NULL);
    CHECK_EQ_INT(json_array_size(json_object_get(page, "data")), 2);
    CHECK(json_is_true(json_object_get(page, "has_more")));
    CHECK_EQ_STR(json_string_value(json_object_get(page, "first_id")), fid);
    CHECK_EQ_STR(json_string_value(json_object_get(page, "last_id")), lid);
    json_decref(page);
    char q[200];
    snprintf(q, sizeof q, "limit=2&after=%s", lid);
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id2, "k", false, q, &g), 200);
    page = json_loadb(g.data, g.len, 0, NULL);
    CHECK_EQ_INT(json_array_size(json_object_get(page, "data")), 2);
    CHECK(json_is_false(json_object_get(page, "has_more")));
    json_decref(page);
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id2, "k", false, "order=asc&limit=1&include%5B%5D=x", &g), 200);
    page = json_loadb(g.data, g.len, 0, NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(page, "data"), 0),
                                                                                   "content"), 0), "text")), "hi");
    json_decref(page);
    sg_buf_reset(&g);
    CHECK_EQ_INT(http_get(id2, "other", false, "", &g), 404);   /* another key's */

    /* bad queries and ids: 400 in OpenAI's shape */
    static const char *const bad[] = {"limit=0", "limit=101", "limit=abc", "limit=", "limit=99999999999999999999",
                                      "order=sideways", "after=%FF", "after=a%00b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sg_buf_reset(&g);
        CHECK_MSG(http_get(id2, "k", false, bad[i], &g) == 400, "%s", bad[i]);
        json_t *ej = json_loadb(g.data, g.len, 0, NULL);
        CHECK_MSG(json_is_string(json_object_get(json_object_get(ej, "error"), "message")), "%s", bad[i]);
        CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(ej, "error"), "type")), "invalid_request_error");
        json_decref(ej);
    }
    char huge[400];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    static const char *const bad_ids[] = {"", "resp_\xff\xfe", "resp_%20", "resp_a\"b", "resp_/x"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        sg_buf_reset(&g);
        CHECK_EQ_INT(gw_responses_check_id(bad_ids[i], &g), 400);
        json_t *ej = json_loadb(g.data, g.len, 0, NULL);
        CHECK(json_is_object(json_object_get(ej, "error")));   /* valid JSON, whatever the bytes */
        json_decref(ej);
    }
    sg_buf_reset(&g);
    CHECK_EQ_INT(gw_responses_check_id(huge, &g), 400);
    CHECK_EQ_INT(gw_responses_check_id(id2, &g), 0);
    sg_buf_reset(&g);
    CHECK_EQ_INT(gw_responses_unavailable(&g), 503);
    CHECK(strstr(g.data, "\"server_error\"") != NULL);

    /* the responses a body names, for the fetch before its parse */
    char *ids[RSTORE_MAX_FETCH];
    snprintf(body, sizeof body, "{\"previous_response_id\":\"%s\",\"input\":[{\"type\":\"item_reference\",\"id\":\"%s\"},"
             "{\"type\":\"item_reference\",\"id\":\"%s\"},{\"type\":\"item_reference\",\"id\":\"bogus\"}]}", id2, fid,
             json_string_value(json_object_get(json_array_get(json_object_get(first, "output"), 0), "id")));
    size_t n = gw_responses_refs(body, strlen(body), ids, RSTORE_MAX_FETCH);
    CHECK_EQ_INT(n, 2);   /* id2 (fid, an input of id2, names it again), and id1 (its output item) */
    if (n == 2) {
        CHECK_EQ_STR(ids[0], id2);
        CHECK_EQ_STR(ids[1], id1);
    }
    for (size_t i = 0; i < n; i++) free(ids[i]);
    CHECK_EQ_INT(gw_responses_refs("not json", 8, ids, RSTORE_MAX_FETCH), 0);

    json_decref(first);
    json_decref(second);
    sg_buf_free(&g);
    sg_buf_free(&out);
    rstore_clear();
}

static void test_store_bounds(void) {
    rstore_clear();
    rstore_limits saved = rstore_get_limits();
    rstore_limits l = {3, 1 << 20, 100};
    rstore_configure(&l);
    char id[32];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "resp_%d", i);
        rstore_put(id, "k", 1000 + i, "{}", "[]", "[]");
    }
    CHECK_EQ_INT(rstore_count(), 3);   /* the two oldest went */
    rstore_who who = {"k", false};
    rstore_entry en;
    CHECK_EQ_INT(rstore_get("resp_0", &who, 1010, &en), -1);
    CHECK_EQ_INT(rstore_get("resp_4", &who, 1010, &en), 0);
    rstore_entry_free(&en);
    CHECK_EQ_INT(rstore_get("resp_4", &who, 1104, &en), -1);   /* expired after max_age_s */
    CHECK_EQ_INT(rstore_count(), 0);
    l = (rstore_limits){100, 400, 100};
    rstore_configure(&l);
    rstore_put("resp_big", "k", 1, "{\"x\":\"................................................................................................................................................................................................................................................................................................................................................................................................................\"}", "[]", "[]");
    CHECK_EQ_INT(rstore_count(), 0);   /* over max_bytes alone */
    rstore_put("resp_a", "k", 1, "{}", "[]", "[]");
    CHECK_EQ_INT(rstore_count(), 1);
    CHECK(rstore_bytes() > 0 && rstore_bytes() <= 400);
    rstore_configure(&saved);
    rstore_clear();
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_parse_input);
    RUN(test_parse_errors);
    RUN(test_render_and_store);
    RUN(test_stream_events);
    RUN(test_input_items);
    RUN(test_store_bounds);
    return tu_finish(argv[0]);
}
