/* test_codec_anthropic.c: the Anthropic codec. Inbound Messages requests to canonical and
 * their Anthropic-shaped errors; canonical to an upstream Messages body; the scanner over
 * realistic Message bodies and event streams (every split through the SSE parser gives the
 * same events), usage to the token with cumulative message_delta; the renderer (exact SSE,
 * and a round trip through the scanner, also from an OpenAI upstream's stream); error
 * bodies and failure classification. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/chat.h"
#include "gateway/codec_anthropic.h"
#include "gateway/codec_openai.h"
#include "gateway/sse.h"
#include "testutil.h"

/* ---- event recorder (one line per event) ---- */

typedef struct rec {
    sg_buf log;
    int n;
} rec;

static void rec_init(rec *r) { memset(r, 0, sizeof *r); sg_buf_init(&r->log); }
static void rec_free(rec *r) { sg_buf_free(&r->log); }

static int rec_event(void *ctx, const gw_event *ev) {
    rec *r = ctx;
    sg_buf *b = &r->log;
    gw_event_format(ev, b);
    r->n++;
    return 0;
}

/* ---- Anthropic streams through the SSE parser ---- */

typedef struct sctx {
    anth_scan scan;
    rec rec;
    sg_buf flags;
} sctx;

static int on_sse(void *ctx, const char *event, const char *data, size_t len) {
    sctx *c = ctx;
    int f = anth_scan_event(&c->scan, event, data, len, rec_event, &c->rec);
    if (f < 0) return 1;
    sg_buf_printf(&c->flags, "%d,", f);
    return 0;
}

static char *run_stream(const char *s, size_t n, const size_t *sizes, size_t n_sizes, char **flags) {
    sctx c;
    memset(&c, 0, sizeof c);
    anth_scan_init(&c.scan);
    rec_init(&c.rec);
    sg_buf_init(&c.flags);
    sse_parser p;
    sse_init(&p, 0, on_sse, &c);
    size_t off = 0, k = 0;
    while (off < n) {
        size_t m = sizes ? sizes[k++ % n_sizes] : n;
        if (m > n - off) m = n - off;
        if (sse_feed(&p, s + off, m, NULL)) break;
        off += m;
    }
    int fin = sse_finish(&p);
    int end = anth_scan_end(&c.scan, rec_event, &c.rec);
    sg_buf_printf(&c.rec.log, "END sse=%d scan=%d\n", fin, end);
    sse_free(&p);
    anth_scan_free(&c.scan);
    if (flags) *flags = sg_buf_steal(&c.flags);
    else sg_buf_free(&c.flags);
    return sg_buf_steal(&c.rec.log);
}

static char *check_stream_splits(const char *s) {
    size_t n = strlen(s);
    char *want = run_stream(s, n, NULL, 0, NULL);
    size_t one = 1;
    char *got = run_stream(s, n, &one, 1, NULL);
    CHECK_EQ_STR(got, want);
    free(got);
    for (size_t cut = 1; cut < n; cut += 5) {
        size_t sizes[2] = {cut, n};
        got = run_stream(s, n, sizes, 2, NULL);
        if (strcmp(got, want) != 0) CHECK_MSG(0, "split at %zu differs:\n%s", cut, got);
        free(got);
    }
    srand(5);
    for (int t = 0; t < 40; t++) {
        size_t sizes[32];
        for (int i = 0; i < 32; i++) sizes[i] = 1 + (size_t)(rand() % 50);
        got = run_stream(s, n, sizes, 32, NULL);
        CHECK_EQ_STR(got, want);
        free(got);
    }
    return want;
}

/* Hand-written from the documented Messages streaming format: thinking, text and a tool
 * call, a ping, cache usage at the start and the cumulative output count at the end. */
static const char *STREAM =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,"
    "\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":100,"
    "\"cache_read_input_tokens\":2000,\"output_tokens\":2}}}\n\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"The user wants \\\"weather\\\".\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking \\u00e9t\\u00e9\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\" weather.\\n\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01T1x1fJ34qAmk2tNTrN7Up6\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"San Fra\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ncisco, CA\\\"}\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

static void test_stream(void) {
    char *got = check_stream_splits(STREAM);
    CHECK_EQ_STR(got,
                 "START id=msg_01XFDUDYJgAACzvnptvVoYEL model=claude-sonnet-4-5-20250929\n"
                 "USAGE in=472 cr=2000 cw=100 out=2 rs=-1\n"
                 "REASONING \"The user wants \\\"weather\\\".\"\n"
                 "TEXT \"Checking \xc3\xa9t\xc3\xa9\"\n"
                 "TEXT \" weather.\\n\"\n"
                 "TOOL 0 id=toolu_01T1x1fJ34qAmk2tNTrN7Up6 name=get_weather \"\"\n"
                 "TOOL 0 id=- name=- \"{\\\"location\\\": \\\"San Fra\"\n"
                 "TOOL 0 id=- name=- \"ncisco, CA\\\"}\"\n"
                 "FINISH tool_calls\n"
                 "USAGE in=472 cr=2000 cw=100 out=89 rs=-1\n"
                 "END sse=0 scan=0\n");
    free(got);
    char *flags = NULL;
    got = run_stream(STREAM, strlen(STREAM), NULL, 0, &flags);
    CHECK_EQ_STR(flags, "0,4,0,0,4,0,0,0,0,0,0,0,0,0,0,0,1,");   /* ping and signature_delta skipped */
    free(flags);
    free(got);
}

static void test_stream_usage_override(void) {
    /* message_delta carrying every count (as newer API versions and proxies send): each
     * present field overrides, absent ones keep message_start's; thinking_tokens read */
    const char *s =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"Hi\"}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":30}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":5,"
        "\"cache_creation_input_tokens\":null,\"output_tokens\":40,\"output_tokens_details\":{\"thinking_tokens\":25}}}\n\n";
    char *got = check_stream_splits(s);
    CHECK_EQ_STR(got,
                 "START id=m model=c\n"
                 "USAGE in=10 cr=0 cw=0 out=1 rs=-1\n"
                 "TEXT \"Hi\"\n"
                 "FINISH length\n"
                 "USAGE in=10 cr=0 cw=0 out=30 rs=-1\n"
                 "USAGE in=12 cr=5 cw=0 out=40 rs=25\n"
                 "END sse=0 scan=0\n");   /* a stop_reason came: complete without message_stop */
    free(got);
}

static void test_stream_errors(void) {
    const char *s =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"par\"}}\n\n"
        "event: error\n"
        "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ignored\"}}\n\n";
    char *flags = NULL;
    char *got = run_stream(s, strlen(s), NULL, 0, &flags);
    CHECK_EQ_STR(got,
                 "START id=m model=c\n"
                 "USAGE in=3 cr=0 cw=0 out=1 rs=-1\n"
                 "TEXT \"par\"\n"
                 "ERROR overloaded_error 529 \"Overloaded\"\n"
                 "END sse=0 scan=0\n");
    CHECK_EQ_STR(flags, "0,0,0,2,4,");
    free(flags);
    free(got);

    const char *t =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"cut\"}}\n\n";
    got = run_stream(t, strlen(t), NULL, 0, NULL);
    CHECK(strstr(got, "ERROR incomplete_response 502 \"upstream stream ended early\"\nEND sse=0 scan=1\n") != NULL);
    free(got);

    const char *bad[] = {
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"\n\n",
        "event: content_block_delta\ndata: [1]\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"bad \xff\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"text\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":99999999,\"content_block\":{\"type\":\"tool_use\",\"id\":\"x\",\"name\":\"y\",\"input\":{}}}\n\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        got = run_stream(bad[i], strlen(bad[i]), NULL, 0, NULL);
        CHECK_MSG(strstr(got, "ERROR invalid_response 502 \"malformed") != NULL, "case %zu: %s", i, got);
        CHECK_MSG(strstr(got, "END sse=0 scan=0") != NULL, "case %zu: %s", i, got);
        free(got);
    }
}

static void test_scan_response(void) {
    const char *body =
        "{\"id\":\"msg_01Aq9w938a90dw8q\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\","
        "\"content\":[{\"type\":\"thinking\",\"thinking\":\"Need the tool.\",\"signature\":\"sig\"},"
        "{\"type\":\"text\",\"text\":\"I'll check.\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\","
        "\"input\":{\"location\":\"Paris\",\"unit\":\"c\"}},{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"now\",\"input\":{}}],"
        "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":2095,\"cache_creation_input_tokens\":0,"
        "\"cache_read_input_tokens\":1800,\"output_tokens\":503}}";
    rec r;
    rec_init(&r);
    CHECK_EQ_INT(anth_scan_response(body, strlen(body), rec_event, &r), 0);
    CHECK_EQ_STR(r.log.data,
                 "START id=msg_01Aq9w938a90dw8q model=claude-sonnet-4-5\n"
                 "REASONING \"Need the tool.\"\n"
                 "TEXT \"I'll check.\"\n"
                 "TOOL 0 id=toolu_1 name=get_weather \"{\\\"location\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}\"\n"
                 "TOOL 1 id=toolu_2 name=now \"{}\"\n"
                 "FINISH tool_calls\n"
                 "USAGE in=2095 cr=1800 cw=0 out=503 rs=-1\n");
    rec_free(&r);

    const char *stops[][2] = {{"end_turn", "stop"}, {"stop_sequence", "stop"}, {"max_tokens", "length"},
                              {"refusal", "content_filter"}, {"pause_turn", "stop"}};
    for (size_t i = 0; i < 5; i++) {
        char b[256];
        snprintf(b, sizeof b, "{\"id\":\"m\",\"model\":\"c\",\"content\":[],\"stop_reason\":\"%s\"}", stops[i][0]);
        rec_init(&r);
        anth_scan_response(b, strlen(b), rec_event, &r);
        char want[64];
        snprintf(want, sizeof want, "FINISH %s\n", stops[i][1]);
        CHECK_MSG(strstr(r.log.data, want) != NULL, "%s: %s", stops[i][0], r.log.data);
        rec_free(&r);
    }

    const char *err = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Number of request tokens "
                      "has exceeded your per-minute rate limit\"},\"request_id\":\"req_1\"}";
    rec_init(&r);
    CHECK_EQ_INT(anth_scan_response(err, strlen(err), rec_event, &r), 1);
    CHECK(strncmp(r.log.data, "ERROR rate_limit_error 429", 26) == 0);
    rec_free(&r);
    rec_init(&r);
    CHECK_EQ_INT(anth_scan_response("nope", 4, rec_event, &r), 1);
    CHECK(strncmp(r.log.data, "ERROR invalid_response 502", 26) == 0);
    rec_free(&r);
}

/* ---- inbound ---- */

static json_t *jpath(json_t *root, const char *path) {
    /* "messages.1.content.0.text" */
    json_t *cur = root;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, ".")) {
        if (json_is_array(cur)) cur = json_array_get(cur, (size_t)atoi(tok));
        else cur = json_object_get(cur, tok);
    }
    return cur;
}
static const char *jps(json_t *root, const char *path) { return json_string_value(jpath(root, path)); }

static void test_parse_request(void) {
    const char *body =
        "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,\"stream\":true,"
        "\"system\":[{\"type\":\"text\",\"text\":\"You are terse.\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
        "\"messages\":["
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is this?\"},{\"type\":\"image\",\"source\":"
        "{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"iVBORw0K\"}}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"s\"},"
        "{\"type\":\"text\",\"text\":\"Let me look.\"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"zoom\","
        "\"input\":{\"factor\":2}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":[{\"type\":"
        "\"text\",\"text\":\"zoomed\"},{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://x/y.png\"}}]},"
        "{\"type\":\"text\",\"text\":\"And now?\"}]},"
        "{\"role\":\"assistant\",\"content\":\"A cat.\"},"
        "{\"role\":\"user\",\"content\":\"Thanks\"}],"
        "\"stop_sequences\":[\"\\n\\nHuman:\"],\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,"
        "\"tools\":[{\"name\":\"zoom\",\"description\":\"Zooms.\",\"input_schema\":{\"type\":\"object\",\"properties\":"
        "{\"factor\":{\"type\":\"number\"}}}}],"
        "\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true},"
        "\"metadata\":{\"user_id\":\"u-42\"},\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048}}";
    anth_request rq;
    gw_api_error e;
    CHECK_EQ_INT(anth_parse_request(body, strlen(body), &rq, &e), 0);
    CHECK_EQ_STR(rq.model, "claude-sonnet-4-5");
    CHECK(rq.stream);
    CHECK_EQ_INT(rq.max_tokens, 1024);
    json_t *c = rq.body;
    CHECK_EQ_STR(jps(c, "messages.0.role"), "system");
    CHECK_EQ_STR(jps(c, "messages.0.content.0.text"), "You are terse.");
    CHECK_EQ_STR(jps(c, "messages.1.role"), "user");
    CHECK_EQ_STR(jps(c, "messages.1.content.1.type"), "image_url");
    CHECK_EQ_STR(jps(c, "messages.1.content.1.image_url.url"), "data:image/png;base64,iVBORw0K");
    CHECK_EQ_STR(jps(c, "messages.2.role"), "assistant");
    CHECK_EQ_STR(jps(c, "messages.2.content"), "Let me look.");
    CHECK_EQ_STR(jps(c, "messages.2.tool_calls.0.id"), "toolu_1");
    CHECK_EQ_STR(jps(c, "messages.2.tool_calls.0.function.name"), "zoom");
    CHECK_EQ_STR(jps(c, "messages.2.tool_calls.0.function.arguments"), "{\"factor\":2}");
    CHECK_EQ_STR(jps(c, "messages.3.role"), "tool");
    CHECK_EQ_STR(jps(c, "messages.3.tool_call_id"), "toolu_1");
    CHECK_EQ_STR(jps(c, "messages.3.content.0.text"), "zoomed");
    CHECK_EQ_STR(jps(c, "messages.4.role"), "user");   /* the rest of that user turn, image moved in */
    CHECK_EQ_STR(jps(c, "messages.4.content.0.text"), "And now?");
    CHECK_EQ_STR(jps(c, "messages.4.content.1.image_url.url"), "https://x/y.png");
    CHECK_EQ_STR(jps(c, "messages.5.content"), "A cat.");
    CHECK_EQ_STR(jps(c, "messages.6.content"), "Thanks");
    CHECK_EQ_INT(json_array_size(json_object_get(c, "messages")), 7);
    CHECK_EQ_STR(jps(c, "stop.0"), "\n\nHuman:");
    CHECK_EQ_INT(json_integer_value(json_object_get(c, "top_k")), 40);
    CHECK_EQ_STR(jps(c, "tools.0.type"), "function");
    CHECK_EQ_STR(jps(c, "tools.0.function.name"), "zoom");
    CHECK_EQ_STR(jps(c, "tools.0.function.description"), "Zooms.");
    CHECK_EQ_STR(jps(c, "tools.0.function.parameters.type"), "object");
    CHECK_EQ_STR(jps(c, "tool_choice"), "required");
    CHECK(json_is_false(json_object_get(c, "parallel_tool_calls")));
    CHECK_EQ_STR(jps(c, "user"), "u-42");
    CHECK_EQ_INT(json_integer_value(jpath(c, "thinking.budget_tokens")), 2048);
    CHECK(json_is_true(json_object_get(c, "stream")));
    /* the canonical request is a valid OpenAI request */
    CHECK_EQ_INT(oai_validate_request(c, &e), 0);

    /* and back out to Anthropic: the same conversation */
    sg_buf out;
    sg_buf_init(&out);
    CHECK_EQ_INT(anth_build_upstream(c, "claude-sonnet-4-5-20250929", true, 0, &out, &e), 0);
    json_t *a = json_loads(out.data, 0, NULL);
    CHECK(a != NULL);
    CHECK_EQ_STR(jps(a, "model"), "claude-sonnet-4-5-20250929");
    CHECK_EQ_INT(json_integer_value(json_object_get(a, "max_tokens")), 1024);
    CHECK_EQ_STR(jps(a, "system.0.text"), "You are terse.");
    CHECK_EQ_INT(json_array_size(json_object_get(a, "messages")), 5);
    CHECK_EQ_STR(jps(a, "messages.0.content.1.source.type"), "base64");
    CHECK_EQ_STR(jps(a, "messages.0.content.1.source.media_type"), "image/png");
    CHECK_EQ_STR(jps(a, "messages.0.content.1.source.data"), "iVBORw0K");
    CHECK_EQ_STR(jps(a, "messages.1.content.0.text"), "Let me look.");
    CHECK_EQ_STR(jps(a, "messages.1.content.1.type"), "tool_use");
    CHECK_EQ_INT(json_integer_value(jpath(a, "messages.1.content.1.input.factor")), 2);
    CHECK_EQ_STR(jps(a, "messages.2.role"), "user");   /* tool result + text + image merged */
    CHECK_EQ_STR(jps(a, "messages.2.content.0.type"), "tool_result");
    CHECK_EQ_STR(jps(a, "messages.2.content.0.tool_use_id"), "toolu_1");
    CHECK_EQ_STR(jps(a, "messages.2.content.0.content.0.text"), "zoomed");
    CHECK_EQ_STR(jps(a, "messages.2.content.1.text"), "And now?");
    CHECK_EQ_STR(jps(a, "messages.2.content.2.source.url"), "https://x/y.png");
    CHECK_EQ_STR(jps(a, "tool_choice.type"), "any");
    CHECK(json_is_true(jpath(a, "tool_choice.disable_parallel_tool_use")));
    CHECK_EQ_STR(jps(a, "metadata.user_id"), "u-42");
    CHECK_EQ_STR(jps(a, "thinking.type"), "enabled");
    CHECK(json_object_get(a, "temperature") == NULL);   /* thinking allows the default only */
    CHECK(json_object_get(a, "top_k") == NULL);
    CHECK_EQ_STR(jps(a, "stop_sequences.0"), "\n\nHuman:");
    CHECK(json_is_true(json_object_get(a, "stream")));
    json_decref(a);
    sg_buf_free(&out);
    anth_request_free(&rq);
}

static void test_parse_request_errors(void) {
#define M "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
    const struct { const char *body, *msg; } cases[] = {
        {"{\"model\":", "error parsing the body"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}", "error parsing"},
        {"\"str\"", "must be a JSON object"},
        {"{\"max_tokens\":5," M "}", "model: Field required"},
        {"{\"model\":\"c\"," M "}", "max_tokens: Field required"},
        {"{\"model\":\"c\",\"max_tokens\":\"5\"," M "}", "max_tokens: Input should be a valid integer"},
        {"{\"model\":\"c\",\"max_tokens\":0," M "}", "greater than or equal to 1"},
        {"{\"model\":\"c\",\"max_tokens\":5}", "messages: Field required"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":{}}", "messages: Input should be a valid list"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[]}", "at least one message"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "messages.0.role"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\"}]}", "messages.0.content: Field required"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":7}]}", "messages.0.content"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video\"}]}]}",
         "messages.0.content.0.type"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":"
         "{\"type\":\"file\",\"file_id\":\"f\"}}]}]}",
         "messages.0.content.0.source.type"},
        {"{\"model\":\"c\",\"max_tokens\":5,\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
         "\"id\":\"t\",\"name\":\"n\",\"input\":[1]}]}]}",
         "messages.0.content.0.input"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"system\":5}", "system:"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"temperature\":1.5}", "temperature"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"stream\":1}", "stream"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"stop_sequences\":[1]}", "stop_sequences.0"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}]}",
         "server tool 'web_search_20250305'"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"tools\":[{\"name\":\"x\"}]}", "tools.0.input_schema"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"tool_choice\":{\"type\":\"maybe\"}}", "tool_choice.type"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"tool_choice\":{\"type\":\"tool\"}}", "tool_choice.name"},
        {"{\"model\":\"c\",\"max_tokens\":5," M ",\"thinking\":{\"type\":\"enabled\"}}", "budget_tokens"},
        /* a model name with a NUL (jansson refuses it at parse) or another control character */
        {"{\"model\":\"chat\\u0000evil\",\"max_tokens\":5," M "}", "error parsing the body"},
        {"{\"model\":\"chat\\u0001\",\"max_tokens\":5," M "}", "model: a model name must not contain control"},
        {"{\"model\":\"anthropic/c\\r\\nx: 1\",\"max_tokens\":5," M "}", "model: a model name must not contain"},
        {"{\"model\":\"c\\u007f\",\"max_tokens\":5," M "}", "model: a model name must not contain"},
    };
#undef M
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        anth_request rq;
        gw_api_error e;
        memset(&e, 0, sizeof e);
        int rc = anth_parse_request(cases[i].body, strlen(cases[i].body), &rq, &e);
        CHECK_MSG(rc == -1, "case %zu accepted", i);
        if (rc == 0) { anth_request_free(&rq); continue; }
        CHECK_EQ_INT(e.status, 400);
        CHECK_MSG(strstr(e.message, cases[i].msg) != NULL, "case %zu: '%s'", i, e.message);
        sg_buf b;
        sg_buf_init(&b);
        anth_error_body(&b, &e);
        json_t *j = json_loads(b.data, 0, NULL);
        CHECK_EQ_STR(jps(j, "type"), "error");
        CHECK_EQ_STR(jps(j, "error.type"), "invalid_request_error");
        CHECK_EQ_STR(jps(j, "error.message"), e.message);
        json_decref(j);
        sg_buf_free(&b);
    }
}

/* ---- outbound ---- */

static json_t *build(const char *canon, int64_t dflt, int *rc, gw_api_error *e) {
    json_t *req = json_loads(canon, 0, NULL);
    CHECK(req != NULL);
    sg_buf out;
    sg_buf_init(&out);
    *rc = anth_build_upstream(req, "claude-x", false, dflt, &out, e);
    json_t *a = *rc == 0 ? json_loads(out.data, 0, NULL) : NULL;
    sg_buf_free(&out);
    json_decref(req);
    return a;
}

static void test_build_upstream(void) {
    int rc;
    gw_api_error e;
    json_t *a = build(
        "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be nice.\"},{\"role\":\"developer\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"Use tools.\"}]},{\"role\":\"user\",\"content\":\"one\"},{\"role\":\"user\","
        "\"content\":\"two\"},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":[1,2]}\"}},{\"id\":\"c2\",\"type\":\"function\",\"function\":"
        "{\"name\":\"g\",\"arguments\":\"\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"r1\"},{\"role\":"
        "\"tool\",\"tool_call_id\":\"c2\",\"content\":[{\"type\":\"text\",\"text\":\"r2\"}]},{\"role\":\"user\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/\"}}]}],"
        "\"stop\":\"END\",\"temperature\":1.7,\"top_p\":0.5,\"top_k\":3,\"user\":\"bob\",\"seed\":1,\"n\":1,"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"F.\",\"parameters\":{\"type\":"
        "\"object\",\"properties\":{\"a\":{\"type\":\"array\"}}}}},{\"type\":\"function\",\"function\":{\"name\":\"g\"}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},\"parallel_tool_calls\":false,"
        "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r\",\"schema\":{\"type\":\"object\"}}}}",
        0, &rc, &e);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(jps(a, "model"), "claude-x");
    CHECK_EQ_INT(json_integer_value(json_object_get(a, "max_tokens")), ANTH_DEFAULT_MAX_TOKENS);
    CHECK_EQ_STR(jps(a, "system.0.text"), "Be nice.");
    CHECK_EQ_STR(jps(a, "system.1.text"), "Use tools.");
    CHECK(strstr(jps(a, "system.2.text"), "JSON Schema: {\"type\":\"object\"}") != NULL);
    CHECK_EQ_INT(json_array_size(json_object_get(a, "messages")), 3);
    CHECK_EQ_STR(jps(a, "messages.0.role"), "user");
    CHECK_EQ_STR(jps(a, "messages.0.content.0.text"), "one");
    CHECK_EQ_STR(jps(a, "messages.0.content.1.text"), "two");
    CHECK_EQ_STR(jps(a, "messages.1.role"), "assistant");
    CHECK_EQ_INT(json_array_size(jpath(a, "messages.1.content")), 2);   /* no empty text block */
    CHECK_EQ_STR(jps(a, "messages.1.content.0.type"), "tool_use");
    CHECK_EQ_INT(json_integer_value(jpath(a, "messages.1.content.0.input.a.1")), 2);
    CHECK(json_is_object(jpath(a, "messages.1.content.1.input")));
    CHECK_EQ_STR(jps(a, "messages.2.content.0.tool_use_id"), "c1");
    CHECK_EQ_STR(jps(a, "messages.2.content.0.content"), "r1");
    CHECK_EQ_STR(jps(a, "messages.2.content.1.content.0.text"), "r2");
    CHECK_EQ_STR(jps(a, "messages.2.content.2.source.media_type"), "image/jpeg");
    CHECK_EQ_INT(json_array_size(jpath(a, "messages.2.content")), 3);
    CHECK_EQ_STR(jps(a, "stop_sequences.0"), "END");
    CHECK(json_real_value(json_object_get(a, "temperature")) == 1.0);
    CHECK_EQ_INT(json_integer_value(json_object_get(a, "top_k")), 3);
    CHECK_EQ_STR(jps(a, "metadata.user_id"), "bob");
    CHECK(json_object_get(a, "seed") == NULL && json_object_get(a, "n") == NULL);
    CHECK_EQ_STR(jps(a, "tools.0.input_schema.type"), "object");
    CHECK_EQ_STR(jps(a, "tools.0.description"), "F.");
    CHECK_EQ_STR(jps(a, "tools.1.input_schema.type"), "object");
    CHECK_EQ_STR(jps(a, "tool_choice.type"), "tool");
    CHECK_EQ_STR(jps(a, "tool_choice.name"), "f");
    CHECK(json_is_true(jpath(a, "tool_choice.disable_parallel_tool_use")));
    CHECK(json_object_get(a, "stream") == NULL);
    json_decref(a);

    a = build("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":77,\"max_tokens\":5}", 9, &rc, &e);
    CHECK_EQ_INT(json_integer_value(json_object_get(a, "max_tokens")), 77);
    json_decref(a);
    a = build("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 9, &rc, &e);
    CHECK_EQ_INT(json_integer_value(json_object_get(a, "max_tokens")), 9);
    json_decref(a);

    const char *bad[] = {
        "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}",
        "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"x\",\"format\":\"wav\"}}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://x\"}}]}]}",
        "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"function\",\"name\":\"f\",\"content\":\"x\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        a = build(bad[i], 0, &rc, &e);
        CHECK_MSG(rc == -1 && e.status == 400 && e.message[0], "case %zu", i);
        json_decref(a);
    }
}

/* ---- rendering ---- */

static gw_event ev_text(gw_event_kind k, const char *s) {
    gw_event e;
    memset(&e, 0, sizeof e);
    e.kind = k;
    e.text = s;
    e.len = strlen(s);
    return e;
}

static void sample_events(gw_event *evs, size_t *n) {
    size_t k = 0;
    memset(evs, 0, 12 * sizeof *evs);
    evs[k].kind = GW_EV_START; evs[k].id = "chatcmpl-1"; evs[k].name = "gpt-4o"; k++;
    evs[k++] = ev_text(GW_EV_REASONING, "Plan.");
    evs[k++] = ev_text(GW_EV_TEXT, "Sure");
    evs[k++] = ev_text(GW_EV_TEXT, "! \"ok\"");
    evs[k] = ev_text(GW_EV_TOOL_CALL, ""); evs[k].index = 0; evs[k].id = "call_a"; evs[k].name = "f"; k++;
    evs[k] = ev_text(GW_EV_TOOL_CALL, "{\"x\":"); evs[k].index = 0; k++;
    evs[k] = ev_text(GW_EV_TOOL_CALL, "1}"); evs[k].index = 0; k++;
    evs[k] = ev_text(GW_EV_TOOL_CALL, "{}"); evs[k].index = 1; evs[k].id = "call_b"; evs[k].name = "g"; k++;
    evs[k].kind = GW_EV_FINISH; evs[k].finish = "tool_calls"; k++;
    evs[k].kind = GW_EV_USAGE;
    gw_usage_init(&evs[k].usage);
    evs[k].usage.input = 176; evs[k].usage.cache_read = 1024; evs[k].usage.cache_write = 0;
    evs[k].usage.output = 300; evs[k].usage.reasoning = 256;
    k++;
    *n = k;
}

static void test_render_stream(void) {
    gw_event evs[12];
    size_t n;
    sample_events(evs, &n);
    sg_buf out;
    sg_buf_init(&out);
    anth_render r;
    anth_render_init(&r, &out, true, "msg_gw1", NULL);
    for (size_t i = 0; i < n; i++) anth_render_event(&r, &evs[i]);
    CHECK_EQ_INT(anth_render_end(&r), 200);
    const char *want =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_gw1\",\"type\":\"message\","
        "\"role\":\"assistant\",\"model\":\"gpt-4o\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
        "{\"input_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":0}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
        "\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
        "\"thinking_delta\",\"thinking\":\"Plan.\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":"
        "\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
        "\"text_delta\",\"text\":\"Sure\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
        "\"text_delta\",\"text\":\"! \\\"ok\\\"\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":"
        "\"tool_use\",\"id\":\"call_a\",\"name\":\"f\",\"input\":{}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":"
        "\"tool_use\",\"id\":\"call_b\",\"name\":\"g\",\"input\":{}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":"
        "\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":3}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":"
        "null},\"usage\":{\"input_tokens\":176,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":1024,"
        "\"output_tokens\":300}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    CHECK_EQ_STR(out.data, want);
    /* read back by the scanner: the same events */
    char *got = run_stream(out.data, out.len, NULL, 0, NULL);
    CHECK_EQ_STR(got,
                 "START id=msg_gw1 model=gpt-4o\n"
                 "USAGE in=0 cr=0 cw=0 out=0 rs=-1\n"
                 "REASONING \"Plan.\"\n"
                 "TEXT \"Sure\"\n"
                 "TEXT \"! \\\"ok\\\"\"\n"
                 "TOOL 0 id=call_a name=f \"\"\n"
                 "TOOL 0 id=- name=- \"{\\\"x\\\":\"\n"
                 "TOOL 0 id=- name=- \"1}\"\n"
                 "TOOL 1 id=call_b name=g \"\"\n"
                 "TOOL 1 id=- name=- \"{}\"\n"
                 "FINISH tool_calls\n"
                 "USAGE in=176 cr=1024 cw=0 out=300 rs=-1\n"
                 "END sse=0 scan=0\n");
    free(got);
    anth_render_free(&r);

    /* a provider usage that came before content goes into message_start */
    sg_buf_reset(&out);
    anth_render_init(&r, &out, true, NULL, "claude");
    gw_event u;
    memset(&u, 0, sizeof u);
    u.kind = GW_EV_USAGE;
    gw_usage_init(&u.usage);
    u.usage.input = 9; u.usage.cache_read = 0; u.usage.cache_write = 4; u.usage.output = 1;
    anth_render_event(&r, &u);
    gw_event t = ev_text(GW_EV_TEXT, "x");
    anth_render_event(&r, &t);
    anth_render_end(&r);
    CHECK(strstr(out.data, "\"id\":\"msg_smolgate\"") != NULL);
    CHECK(strstr(out.data, "\"usage\":{\"input_tokens\":9,\"cache_creation_input_tokens\":4,\"cache_read_input_tokens\":0,"
                           "\"output_tokens\":1}}}") != NULL);
    CHECK(strstr(out.data, "\"stop_reason\":\"end_turn\"") != NULL);
    anth_render_free(&r);
    sg_buf_free(&out);
}

static void test_render_errors(void) {
    sg_buf out;
    sg_buf_init(&out);
    anth_render r;
    anth_render_init(&r, &out, true, "m", "c");
    gw_event t = ev_text(GW_EV_TEXT, "part");
    anth_render_event(&r, &t);
    gw_event e = ev_text(GW_EV_ERROR, "The server had an error");
    e.status = 500;
    e.err_type = "server_error";   /* OpenAI's type: not Anthropic's, mapped by status */
    anth_render_event(&r, &e);
    anth_render_event(&r, &t);
    CHECK_EQ_INT(anth_render_end(&r), 200);
    const char *last = strstr(out.data, "event: error\n");
    CHECK(last != NULL);
    CHECK_EQ_STR(last, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
                       "\"The server had an error\"}}\n\n");
    CHECK(strstr(out.data, "message_stop") == NULL);
    char *got = run_stream(out.data, out.len, NULL, 0, NULL);
    CHECK(strstr(got, "ERROR api_error 500 \"The server had an error\"") != NULL);
    free(got);
    anth_render_free(&r);

    sg_buf_reset(&out);
    anth_render_init(&r, &out, false, "m", "c");
    e = ev_text(GW_EV_ERROR, "Overloaded");
    e.status = 529;
    e.err_type = "overloaded_error";
    anth_render_event(&r, &e);
    CHECK_EQ_INT(anth_render_end(&r), 529);
    CHECK_EQ_STR(out.data, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}");
    anth_render_free(&r);

    const struct { int status; const char *type; } map[] = {
        {400, "invalid_request_error"}, {401, "authentication_error"}, {403, "permission_error"},
        {404, "not_found_error"}, {413, "request_too_large"}, {429, "rate_limit_error"}, {500, "api_error"},
        {529, "overloaded_error"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        gw_api_error ae;
        gw_api_fail(&ae, map[i].status, NULL, NULL, "x");
        sg_buf_reset(&out);
        anth_error_body(&out, &ae);
        json_t *j = json_loads(out.data, 0, NULL);
        CHECK_EQ_STR(jps(j, "error.type"), map[i].type);
        json_decref(j);
    }
    sg_buf_free(&out);
}

static void test_render_json(void) {
    gw_event evs[12];
    size_t n;
    sample_events(evs, &n);
    sg_buf out;
    sg_buf_init(&out);
    anth_render r;
    anth_render_init(&r, &out, false, NULL, "anthropic/claude-via-openai");
    for (size_t i = 0; i < n; i++) anth_render_event(&r, &evs[i]);
    CHECK_EQ_INT(anth_render_end(&r), 200);
    json_t *j = json_loads(out.data, 0, NULL);
    CHECK(j != NULL);
    CHECK_EQ_STR(jps(j, "id"), "chatcmpl-1");
    CHECK_EQ_STR(jps(j, "type"), "message");
    CHECK_EQ_STR(jps(j, "role"), "assistant");
    CHECK_EQ_STR(jps(j, "model"), "anthropic/claude-via-openai");
    CHECK_EQ_STR(jps(j, "content.0.type"), "thinking");
    CHECK_EQ_STR(jps(j, "content.0.thinking"), "Plan.");
    CHECK_EQ_STR(jps(j, "content.1.text"), "Sure! \"ok\"");
    CHECK_EQ_STR(jps(j, "content.2.type"), "tool_use");
    CHECK_EQ_STR(jps(j, "content.2.id"), "call_a");
    CHECK_EQ_INT(json_integer_value(jpath(j, "content.2.input.x")), 1);
    CHECK_EQ_STR(jps(j, "content.3.name"), "g");
    CHECK(json_is_object(jpath(j, "content.3.input")));
    CHECK_EQ_STR(jps(j, "stop_reason"), "tool_use");
    CHECK(json_is_null(json_object_get(j, "stop_sequence")));
    CHECK_EQ_INT(json_integer_value(jpath(j, "usage.input_tokens")), 176);
    CHECK_EQ_INT(json_integer_value(jpath(j, "usage.cache_read_input_tokens")), 1024);
    CHECK_EQ_INT(json_integer_value(jpath(j, "usage.cache_creation_input_tokens")), 0);
    CHECK_EQ_INT(json_integer_value(jpath(j, "usage.output_tokens")), 300);
    json_decref(j);
    /* and back through the scanner */
    rec rc;
    rec_init(&rc);
    CHECK_EQ_INT(anth_scan_response(out.data, out.len, rec_event, &rc), 0);
    CHECK_EQ_STR(rc.log.data,
                 "START id=chatcmpl-1 model=anthropic/claude-via-openai\n"
                 "REASONING \"Plan.\"\n"
                 "TEXT \"Sure! \\\"ok\\\"\"\n"
                 "TOOL 0 id=call_a name=f \"{\\\"x\\\":1}\"\n"
                 "TOOL 1 id=call_b name=g \"{}\"\n"
                 "FINISH tool_calls\n"
                 "USAGE in=176 cr=1024 cw=0 out=300 rs=-1\n");
    rec_free(&rc);
    anth_render_free(&r);

    /* arguments that are not a JSON object are kept visible */
    sg_buf_reset(&out);
    anth_render_init(&r, &out, false, "m", "c");
    gw_event t = ev_text(GW_EV_TOOL_CALL, "{broken");
    t.id = "t";
    t.name = "f";
    anth_render_event(&r, &t);
    anth_render_end(&r);
    j = json_loads(out.data, 0, NULL);
    CHECK_EQ_STR(jps(j, "content.0.input._raw_arguments"), "{broken");
    json_decref(j);
    anth_render_free(&r);
    sg_buf_free(&out);
}

/* An OpenAI upstream's stream, scanned, rendered for an Anthropic client, read back. */
typedef struct bridge {
    oai_scan scan;
    anth_render render;
} bridge;

static int bridge_sse(void *ctx, const char *event, const char *data, size_t len) {
    (void)event;
    bridge *b = ctx;
    return oai_scan_chunk(&b->scan, data, len, anth_render_event, &b->render) < 0;
}

static void test_openai_to_anthropic(void) {
    const char *up =
        "data: {\"id\":\"chatcmpl-z\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
        "data: {\"id\":\"chatcmpl-z\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Looking\"}}]}\n\n"
        "data: {\"id\":\"chatcmpl-z\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n"
        "data: {\"id\":\"chatcmpl-z\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"q\\\":\\\"x\\\"}\"}}]}}]}\n\n"
        "data: {\"id\":\"chatcmpl-z\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
        "data: {\"id\":\"chatcmpl-z\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":20,"
        "\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n"
        "data: [DONE]\n\n";
    sg_buf out;
    sg_buf_init(&out);
    bridge b;
    oai_scan_init(&b.scan);
    anth_render_init(&b.render, &out, true, "msg_b", NULL);
    sse_parser p;
    sse_init(&p, 0, bridge_sse, &b);
    CHECK_EQ_INT(sse_feed(&p, up, strlen(up), NULL), 0);
    CHECK_EQ_INT(oai_scan_end(&b.scan, anth_render_event, &b.render), 0);
    anth_render_end(&b.render);
    char *got = run_stream(out.data, out.len, NULL, 0, NULL);
    CHECK_EQ_STR(got,
                 "START id=msg_b model=gpt-4o\n"
                 "USAGE in=0 cr=0 cw=0 out=0 rs=-1\n"
                 "TEXT \"Looking\"\n"
                 "TOOL 0 id=call_1 name=lookup \"\"\n"
                 "TOOL 0 id=- name=- \"{\\\"q\\\":\\\"x\\\"}\"\n"
                 "FINISH tool_calls\n"
                 "USAGE in=18 cr=32 cw=0 out=20 rs=-1\n"
                 "END sse=0 scan=0\n");
    free(got);
    sse_free(&p);
    oai_scan_free(&b.scan);
    anth_render_free(&b.render);
    sg_buf_free(&out);
}

static void test_classify_anthropic(void) {
    gw_api_error e;
    const char *over = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 529, over, strlen(over), &e), GW_FAIL_RETRYABLE);
    CHECK_EQ_STR(e.type, "overloaded_error");
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 0, over, strlen(over), &e), GW_FAIL_RETRYABLE);
    CHECK_EQ_INT(e.status, 529);
    const char *rate = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Number of request tokens "
                       "has exceeded your per-minute rate limit\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 429, rate, strlen(rate), &e), GW_FAIL_RETRYABLE);
    const char *spend = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"You have reached your API "
                        "usage limits.\",\"details\":{\"error_code\":\"enforced_spend_limit_reached\"}}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 429, spend, strlen(spend), &e), GW_FAIL_QUOTA);
    const char *credit = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"Your credit balance "
                         "is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase "
                         "credits.\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 400, credit, strlen(credit), &e), GW_FAIL_QUOTA);
    const char *own = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"You have reached your "
                      "specified API usage limits. You will regain access on 2026-08-01 at 00:00 UTC.\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 400, own, strlen(own), &e), GW_FAIL_QUOTA);
    const char *bill = "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\",\"message\":\"billing\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 402, bill, strlen(bill), &e), GW_FAIL_QUOTA);
    const char *ctx = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long: "
                      "210000 tokens > 200000 maximum\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 400, ctx, strlen(ctx), &e), GW_FAIL_CONTEXT);
    const char *auth = "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 401, auth, strlen(auth), &e), GW_FAIL_CLIENT);
    CHECK_EQ_STR(e.message, "invalid x-api-key");
    const char *big = "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\",\"message\":\"Request exceeds the "
                      "maximum allowed number of bytes.\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 413, big, strlen(big), &e), GW_FAIL_CLIENT);
    const char *api = "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal server error\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_ANTHROPIC, 500, api, strlen(api), &e), GW_FAIL_RETRYABLE);
}

/* ---- hostile input by mutation: no crash, no leak, at most one ERROR ---- */

static uint64_t rng_state = 0x9876543;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

static char *mutate(const char *s, size_t *len) {
    size_t n = strlen(s);
    char *m = malloc(n + 16);
    memcpy(m, s, n);
    int edits = 1 + (int)(rnd() % 3);
    for (int e = 0; e < edits && n; e++) {
        size_t at = rnd() % n;
        static const char interesting[] = "{}[]\",:\\u0 \x80\xff\n";
        switch (rnd() % 4) {
        case 0: m[at] = interesting[rnd() % (sizeof interesting - 1)]; break;
        case 1: m[at] = (char)(rnd() & 0xff); break;
        case 2: memmove(m + at, m + at + 1, n - at - 1); n--; break;
        case 3: n = at; break;
        }
    }
    m[n] = 0;
    *len = n;
    return m;
}

static int count_errors(void *ctx, const gw_event *ev) {
    if (ev->kind == GW_EV_ERROR) (*(int *)ctx)++;
    return 0;
}

static int mut_sse(void *ctx, const char *event, const char *data, size_t len) {
    anth_scan *s = ctx;
    static int errors;
    return anth_scan_event(s, event, data, len, count_errors, &errors) < 0;
}

static void test_mutations(void) {
    for (int iter = 0; iter < 3000; iter++) {
        size_t len;
        char *m = mutate(STREAM, &len);
        anth_scan s;
        anth_scan_init(&s);
        sse_parser p;
        sse_init(&p, 0, mut_sse, &s);
        sse_feed(&p, m, len, NULL);
        sse_finish(&p);
        int errors = 0;
        anth_scan_end(&s, count_errors, &errors);
        CHECK(errors <= 1);
        sse_free(&p);
        anth_scan_free(&s);
        free(m);
    }
    const char *req =
        "{\"model\":\"c\",\"max_tokens\":5,\"system\":[{\"type\":\"text\",\"text\":\"s\"}],\"messages\":[{\"role\":\"user\","
        "\"content\":[{\"type\":\"text\",\"text\":\"hi\"},{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":"
        "\"image/png\",\"data\":\"AA\"}}]},{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\","
        "\"input\":{}}]},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t\",\"content\":\"r\"}]}],"
        "\"tools\":[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":{\"type\":\"auto\"}}";
    int accepted = 0;
    for (int iter = 0; iter < 5000; iter++) {
        size_t len;
        char *m = mutate(req, &len);
        anth_request rq;
        gw_api_error e;
        if (anth_parse_request(m, len, &rq, &e) == 0) {
            accepted++;
            /* whatever is accepted converts onward without trouble */
            sg_buf out;
            sg_buf_init(&out);
            anth_build_upstream(rq.body, "c", false, 0, &out, &e);
            sg_buf_free(&out);
            anth_request_free(&rq);
        } else {
            CHECK(e.status == 400 && e.message[0]);
        }
        free(m);
    }
    CHECK(accepted > 0);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_stream);
    RUN(test_stream_usage_override);
    RUN(test_stream_errors);
    RUN(test_scan_response);
    RUN(test_parse_request);
    RUN(test_parse_request_errors);
    RUN(test_build_upstream);
    RUN(test_render_stream);
    RUN(test_render_errors);
    RUN(test_render_json);
    RUN(test_openai_to_anthropic);
    RUN(test_classify_anthropic);
    RUN(test_mutations);
    return tu_finish(argv[0]);
}
