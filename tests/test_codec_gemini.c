/* test_codec_gemini.c: the Gemini codec. Canonical requests to generateContent bodies and
 * URL paths; the scanner over realistic responses and alt=sse streams (every split through
 * the SSE parser gives the same events), usage to the token (cached, thoughts, tool-use
 * prompt), finish reasons, errors in and out of streams; Gemini error classification; a
 * Gemini stream rendered for an OpenAI client and read back. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/chat.h"
#include "gateway/codec_gemini.h"
#include "gateway/codec_openai.h"
#include "gateway/sse.h"
#include "testutil.h"

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

static json_t *jpath(json_t *root, const char *path) {
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

/* ---- requests ---- */

static json_t *build(const char *canon, int *rc, gw_api_error *e) {
    json_t *req = json_loads(canon, 0, NULL);
    CHECK(req != NULL);
    sg_buf out;
    sg_buf_init(&out);
    *rc = gem_build_request(req, &out, e);
    json_t *g = *rc == 0 ? json_loads(out.data, 0, NULL) : NULL;
    sg_buf_free(&out);
    json_decref(req);
    return g;
}

static void test_build_request(void) {
    int rc;
    gw_api_error e;
    json_t *g = build(
        "{\"model\":\"google/gemini-2.5-flash\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather in Paris and Rome?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBOR\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://example.com/map.webp?x=1\"}}]},"
        "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
        "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Rome\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"{\\\"temp\\\":21}\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_2\",\"content\":\"sunny\"},"
        "{\"role\":\"assistant\",\"content\":\"Paris 21, Rome sunny.\"},"
        "{\"role\":\"user\",\"content\":\"Thanks\"}],"
        "\"temperature\":0.3,\"top_p\":0.8,\"top_k\":20,\"max_tokens\":500,\"stop\":[\"END\"],\"seed\":9,"
        "\"presence_penalty\":0.5,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"w\","
        "\"schema\":{\"type\":\"object\",\"additionalProperties\":false}}},"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather.\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
        "\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048},\"user\":\"dropped\"}",
        &rc, &e);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(jps(g, "systemInstruction.parts.0.text"), "Be brief.");
    CHECK_EQ_INT(json_array_size(json_object_get(g, "contents")), 5);
    CHECK_EQ_STR(jps(g, "contents.0.role"), "user");
    CHECK_EQ_STR(jps(g, "contents.0.parts.0.text"), "Weather in Paris and Rome?");
    CHECK_EQ_STR(jps(g, "contents.0.parts.1.inlineData.mimeType"), "image/png");
    CHECK_EQ_STR(jps(g, "contents.0.parts.1.inlineData.data"), "iVBOR");
    CHECK_EQ_STR(jps(g, "contents.0.parts.2.fileData.mimeType"), "image/webp");
    CHECK_EQ_STR(jps(g, "contents.0.parts.2.fileData.fileUri"), "https://example.com/map.webp?x=1");
    CHECK_EQ_STR(jps(g, "contents.1.role"), "model");
    CHECK_EQ_STR(jps(g, "contents.1.parts.0.text"), "Checking.");
    CHECK_EQ_STR(jps(g, "contents.1.parts.1.functionCall.name"), "get_weather");
    CHECK_EQ_STR(jps(g, "contents.1.parts.2.functionCall.args.city"), "Rome");
    CHECK_EQ_STR(jps(g, "contents.2.role"), "user");   /* both results in one turn */
    CHECK_EQ_STR(jps(g, "contents.2.parts.0.functionResponse.name"), "get_weather");
    CHECK_EQ_INT(json_integer_value(jpath(g, "contents.2.parts.0.functionResponse.response.temp")), 21);
    CHECK_EQ_STR(jps(g, "contents.2.parts.1.functionResponse.response.result"), "sunny");
    CHECK_EQ_STR(jps(g, "contents.3.role"), "model");
    CHECK_EQ_STR(jps(g, "contents.4.parts.0.text"), "Thanks");
    json_t *gc = json_object_get(g, "generationConfig");
    CHECK(json_real_value(json_object_get(gc, "temperature")) == 0.3);
    CHECK(json_real_value(json_object_get(gc, "topP")) == 0.8);
    CHECK_EQ_INT(json_integer_value(json_object_get(gc, "topK")), 20);
    CHECK_EQ_INT(json_integer_value(json_object_get(gc, "maxOutputTokens")), 500);
    CHECK_EQ_STR(jps(gc, "stopSequences.0"), "END");
    CHECK_EQ_INT(json_integer_value(json_object_get(gc, "seed")), 9);
    CHECK(json_real_value(json_object_get(gc, "presencePenalty")) == 0.5);
    CHECK_EQ_STR(jps(gc, "responseMimeType"), "application/json");
    CHECK(json_is_false(jpath(gc, "responseJsonSchema.additionalProperties")));
    CHECK_EQ_INT(json_integer_value(jpath(gc, "thinkingConfig.thinkingBudget")), 2048);
    CHECK(json_is_true(jpath(gc, "thinkingConfig.includeThoughts")));
    CHECK_EQ_STR(jps(g, "tools.0.functionDeclarations.0.name"), "get_weather");
    CHECK_EQ_STR(jps(g, "tools.0.functionDeclarations.0.description"), "Weather.");
    CHECK_EQ_STR(jps(g, "tools.0.functionDeclarations.0.parametersJsonSchema.required.0"), "city");
    CHECK_EQ_STR(jps(g, "toolConfig.functionCallingConfig.mode"), "ANY");
    CHECK_EQ_STR(jps(g, "toolConfig.functionCallingConfig.allowedFunctionNames.0"), "get_weather");
    CHECK(json_object_get(g, "user") == NULL && json_object_get(g, "model") == NULL);
    json_decref(g);

    /* minimal: no generationConfig at all; tool_choice strings; reasoning_effort */
    g = build("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &rc, &e);
    CHECK(json_object_get(g, "generationConfig") == NULL && json_object_get(g, "systemInstruction") == NULL);
    json_decref(g);
    g = build("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"reasoning_effort\":\"high\",\"stop\":\"x\","
              "\"response_format\":{\"type\":\"json_object\"},\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
              "\"tool_choice\":\"required\"}",
              &rc, &e);
    CHECK_EQ_INT(json_integer_value(jpath(g, "generationConfig.thinkingConfig.thinkingBudget")), 24576);
    CHECK_EQ_STR(jps(g, "generationConfig.stopSequences.0"), "x");
    CHECK(jpath(g, "generationConfig.responseJsonSchema") == NULL);
    CHECK_EQ_STR(jps(g, "toolConfig.functionCallingConfig.mode"), "ANY");
    CHECK(jpath(g, "tools.0.functionDeclarations.0.parametersJsonSchema") == NULL);
    json_decref(g);

    const char *bad[] = {
        "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"nope\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"[]\"}}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"video_url\"}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"file:///etc/passwd\"}}]}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\",\"file\":{\"file_id\":\"f\"}}]}]}",
        "{\"messages\":[{\"role\":\"narrator\",\"content\":\"x\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        g = build(bad[i], &rc, &e);
        CHECK_MSG(rc == -1 && e.status == 400 && e.message[0], "case %zu", i);
        json_decref(g);
    }
}

static void test_url_path(void) {
    sg_buf b;
    sg_buf_init(&b);
    gw_api_error e;
    CHECK_EQ_INT(gem_url_path(&b, NULL, "gemini-2.5-flash", false, &e), 0);
    CHECK_EQ_STR(b.data, "/v1beta/models/gemini-2.5-flash:generateContent");
    sg_buf_reset(&b);
    CHECK_EQ_INT(gem_url_path(&b, "v1", "models/gemini-2.0-flash-001", true, &e), 0);
    CHECK_EQ_STR(b.data, "/v1/models/gemini-2.0-flash-001:streamGenerateContent?alt=sse");
    const char *bad[] = {"", "../x", "a/b", "gemini?key=1", "x:generateContent", "..", "models/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sg_buf_reset(&b);
        CHECK_MSG(gem_url_path(&b, NULL, bad[i], false, &e) == -1, "'%s' accepted", bad[i]);
    }
    sg_buf_free(&b);
}

/* ---- responses ---- */

typedef struct sctx {
    gem_scan scan;
    rec rec;
} sctx;

static int on_sse(void *ctx, const char *event, const char *data, size_t len) {
    (void)event;
    sctx *c = ctx;
    return gem_scan_chunk(&c->scan, data, len, rec_event, &c->rec) < 0;
}

static char *run_stream(const char *s, size_t n, const size_t *sizes, size_t n_sizes) {
    sctx c;
    memset(&c, 0, sizeof c);
    gem_scan_init(&c.scan, 42);
    rec_init(&c.rec);
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
    int end = gem_scan_end(&c.scan, rec_event, &c.rec);
    sg_buf_printf(&c.rec.log, "END sse=%d scan=%d\n", fin, end);
    sse_free(&p);
    return sg_buf_steal(&c.rec.log);
}

static char *check_stream_splits(const char *s) {
    size_t n = strlen(s);
    char *want = run_stream(s, n, NULL, 0);
    size_t one = 1;
    char *got = run_stream(s, n, &one, 1);
    CHECK_EQ_STR(got, want);
    free(got);
    for (size_t cut = 1; cut < n; cut += 3) {
        size_t sizes[2] = {cut, n};
        got = run_stream(s, n, sizes, 2);
        if (strcmp(got, want) != 0) CHECK_MSG(0, "split at %zu differs:\n%s", cut, got);
        free(got);
    }
    srand(3);
    for (int t = 0; t < 40; t++) {
        size_t sizes[32];
        for (int i = 0; i < 32; i++) sizes[i] = 1 + (size_t)(rand() % 60);
        got = run_stream(s, n, sizes, 32);
        CHECK_EQ_STR(got, want);
        free(got);
    }
    return want;
}

/* streamGenerateContent?alt=sse as documented: one GenerateContentResponse per data line,
 * CRLF framing, usageMetadata on every chunk with the totals in the last. */
static const char *STREAM =
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"**Weighing** the cities\",\"thought\": true}],"
    "\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 1500,\"totalTokenCount\": 1500,"
    "\"cachedContentTokenCount\": 1024,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 1500}]},"
    "\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mBNmaKbfIsOQ1dkPxu_8oQE\"}\r\n\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Let me check \\u00e9 \\\"both\\\".\"}],\"role\": \"model\"},"
    "\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 1500,\"totalTokenCount\": 1500,"
    "\"cachedContentTokenCount\": 1024},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mBNmaKbfIsOQ1dkPxu_8oQE\"}\r\n\r\n"
    "data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"get_weather\",\"args\": "
    "{\"city\": \"Paris\"}},\"thoughtSignature\": \"CiQBVKhc7\"},{\"functionCall\": {\"name\": \"get_weather\",\"args\": "
    "{\"city\": \"Rome\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": "
    "{\"promptTokenCount\": 1500,\"candidatesTokenCount\": 40,\"totalTokenCount\": 1670,\"cachedContentTokenCount\": 1024,"
    "\"toolUsePromptTokenCount\": 10,\"thoughtsTokenCount\": 120},\"modelVersion\": \"gemini-2.5-flash\","
    "\"responseId\": \"mBNmaKbfIsOQ1dkPxu_8oQE\"}\r\n\r\n";

static void test_stream(void) {
    char *got = check_stream_splits(STREAM);
    CHECK_EQ_STR(got,
                 "START id=mBNmaKbfIsOQ1dkPxu_8oQE model=gemini-2.5-flash\n"
                 "REASONING \"**Weighing** the cities\"\n"
                 "USAGE in=476 cr=1024 cw=0 out=0 rs=0\n"
                 "TEXT \"Let me check \xc3\xa9 \\\"both\\\".\"\n"
                 "TOOL 0 id=call_56ce4ab7719ba3a0c841eb53 name=get_weather \"{\\\"city\\\":\\\"Paris\\\"}\"\n"
                 "TOOL 1 id=call_ca466be0c9980276f1acc733 name=get_weather \"{\\\"city\\\":\\\"Rome\\\"}\"\n"
                 "FINISH tool_calls\n"
                 "USAGE in=486 cr=1024 cw=0 out=160 rs=120\n"
                 "END sse=0 scan=0\n");
    free(got);
}

static void test_finish_and_errors(void) {
    const struct { const char *chunk, *want; } cases[] = {
        {"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},\"finishReason\":\"MAX_TOKENS\"}]}\n\n",
         "FINISH length\n"},
        {"data: {\"candidates\":[{\"finishReason\":\"SAFETY\",\"safetyRatings\":[]}]}\n\n", "FINISH content_filter\n"},
        {"data: {\"candidates\":[{\"finishReason\":\"RECITATION\"}]}\n\n", "FINISH content_filter\n"},
        {"data: {\"candidates\":[{\"finishReason\":\"OTHER\"}]}\n\n", "FINISH stop\n"},
        {"data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":7}}\n\n",
         "FINISH content_filter\nUSAGE in=7 cr=0 cw=0 out=0 rs=0\n"},
        {"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"id\":\"fc-1\"}}]},\"finishReason\":\"STOP\"}]}\n\n",
         "TOOL 0 id=fc-1 name=f \"{}\"\nFINISH tool_calls\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = run_stream(cases[i].chunk, strlen(cases[i].chunk), NULL, 0);
        CHECK_MSG(strstr(got, cases[i].want) != NULL, "case %zu: %s", i, got);
        CHECK_MSG(strstr(got, "END sse=0 scan=0") != NULL, "case %zu: %s", i, got);
        free(got);
    }

    /* an error object mid-stream (what Gemini sends when it gives up after starting) */
    const char *s =
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"par\"}]}}],\"responseId\":\"r\",\"modelVersion\":\"g\"}\n\n"
        "data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}\n\n"
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ignored\"}]}}]}\n\n";
    char *got = run_stream(s, strlen(s), NULL, 0);
    CHECK_EQ_STR(got,
                 "START id=r model=g\n"
                 "TEXT \"par\"\n"
                 "ERROR UNAVAILABLE 503 \"The model is overloaded. Please try again later.\"\n"
                 "END sse=0 scan=0\n");
    free(got);

    const char *t = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"cut\"}]}}]}\n\n";
    got = run_stream(t, strlen(t), NULL, 0);
    CHECK(strstr(got, "ERROR incomplete_response 502 \"upstream stream ended early\"\nEND sse=0 scan=1") != NULL);
    free(got);

    const char *bad[] = {"data: {\"candidates\":[\n\n", "data: 17\n\n", "data: {\"candidates\":{}}\n\n",
                         "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"args\":{}}}]}}]}\n\n",
                         "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\xfe\"}]}}]}\n\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        got = run_stream(bad[i], strlen(bad[i]), NULL, 0);
        CHECK_MSG(strstr(got, "ERROR invalid_response 502 \"malformed") != NULL, "case %zu: %s", i, got);
        free(got);
    }
}

static void test_scan_response(void) {
    const char *body =
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Thinking...\",\"thought\":true},{\"text\":\"Hello \"},"
        "{\"text\":\"there.\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],"
        "\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":3,\"totalTokenCount\":31,\"thoughtsTokenCount\":20},"
        "\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"abc\"}";
    rec r;
    rec_init(&r);
    CHECK_EQ_INT(gem_scan_response(body, strlen(body), 1, rec_event, &r), 0);
    CHECK_EQ_STR(r.log.data,
                 "START id=abc model=gemini-2.5-pro\n"
                 "REASONING \"Thinking...\"\n"
                 "TEXT \"Hello \"\n"
                 "TEXT \"there.\"\n"
                 "FINISH stop\n"
                 "USAGE in=8 cr=0 cw=0 out=23 rs=20\n");
    rec_free(&r);

    const char *err = "[{\"error\":{\"code\":429,\"message\":\"Resource has been exhausted (e.g. check quota).\","
                      "\"status\":\"RESOURCE_EXHAUSTED\"}}]";
    rec_init(&r);
    CHECK_EQ_INT(gem_scan_response(err, strlen(err), 1, rec_event, &r), 1);
    CHECK_EQ_STR(r.log.data, "ERROR RESOURCE_EXHAUSTED 429 \"Resource has been exhausted (e.g. check quota).\"\n");
    rec_free(&r);

    /* the same seed gives the same ids */
    const char *calls = "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]}}]}";
    rec a, b;
    rec_init(&a);
    rec_init(&b);
    gem_scan_response(calls, strlen(calls), 77, rec_event, &a);
    gem_scan_response(calls, strlen(calls), 77, rec_event, &b);
    CHECK_EQ_STR(a.log.data, b.log.data);
    CHECK(strstr(a.log.data, "FINISH tool_calls") != NULL);
    rec_free(&a);
    rec_free(&b);
}

static void test_classify_gemini(void) {
    gw_api_error e;
    const char *rate =
        "{\"error\":{\"code\":429,\"message\":\"You exceeded your current quota, please check your plan and billing "
        "details.\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.QuotaFailure\","
        "\"violations\":[{\"quotaMetric\":\"generativelanguage.googleapis.com/generate_content_free_tier_requests\","
        "\"quotaId\":\"GenerateRequestsPerMinutePerProjectPerModel-FreeTier\"}]},{\"@type\":"
        "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"37s\"}]}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 429, rate, strlen(rate), &e), GW_FAIL_RETRYABLE);
    CHECK_EQ_INT(e.retry_after_ms, 37000);
    CHECK_EQ_STR(e.code, "RESOURCE_EXHAUSTED");
    CHECK_EQ_STR(e.type, "rate_limit_error");
    const char *day =
        "{\"error\":{\"code\":429,\"message\":\"Quota exceeded\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"@type\":"
        "\"type.googleapis.com/google.rpc.QuotaFailure\",\"violations\":[{\"quotaId\":"
        "\"GenerateRequestsPerDayPerProjectPerModel-FreeTier\"}]},{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\","
        "\"retryDelay\":\"1.5s\"}]}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 429, day, strlen(day), &e), GW_FAIL_QUOTA);
    CHECK_EQ_INT(e.retry_after_ms, 1500);
    const char *ctx = "{\"error\":{\"code\":400,\"message\":\"The input token count (1300000) exceeds the maximum number of "
                      "tokens allowed (1048575).\",\"status\":\"INVALID_ARGUMENT\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 400, ctx, strlen(ctx), &e), GW_FAIL_CONTEXT);
    const char *unavail = "{\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 503, unavail, strlen(unavail), &e), GW_FAIL_RETRYABLE);
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 0, unavail, strlen(unavail), &e), GW_FAIL_RETRYABLE);
    CHECK_EQ_INT(e.status, 503);
    const char *key = "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please pass a valid API key.\",\"status\":"
                      "\"INVALID_ARGUMENT\",\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.ErrorInfo\",\"reason\":"
                      "\"API_KEY_INVALID\"}]}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 400, key, strlen(key), &e), GW_FAIL_CLIENT);
    CHECK_EQ_STR(e.message, "API key not valid. Please pass a valid API key.");
    const char *perm = "{\"error\":{\"code\":403,\"message\":\"denied\",\"status\":\"PERMISSION_DENIED\"}}";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 403, perm, strlen(perm), &e), GW_FAIL_CLIENT);
    const char *internal = "[{\"error\":{\"code\":500,\"message\":\"Internal error\",\"status\":\"INTERNAL\"}}]";
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 500, internal, strlen(internal), &e), GW_FAIL_RETRYABLE);
    CHECK_EQ_STR(e.message, "Internal error");
    CHECK_EQ_INT(gw_classify_error(GW_WIRE_GEMINI, 504, NULL, 0, &e), GW_FAIL_RETRYABLE);
}

/* A Gemini stream rendered for an OpenAI client, and that output read back. */
typedef struct bridge {
    gem_scan scan;
    oai_render render;
} bridge;

static int bridge_sse(void *ctx, const char *event, const char *data, size_t len) {
    (void)event;
    bridge *b = ctx;
    return gem_scan_chunk(&b->scan, data, len, oai_render_event, &b->render) < 0;
}

typedef struct octx {
    oai_scan scan;
    rec rec;
} octx;

static int oai_sse(void *ctx, const char *event, const char *data, size_t len) {
    (void)event;
    octx *c = ctx;
    return oai_scan_chunk(&c->scan, data, len, rec_event, &c->rec) < 0;
}

static void test_gemini_to_openai(void) {
    sg_buf out;
    sg_buf_init(&out);
    bridge b;
    gem_scan_init(&b.scan, 42);
    oai_render_init(&b.render, &out, true, true, "chatcmpl-g", NULL, 1);
    sse_parser p;
    sse_init(&p, 0, bridge_sse, &b);
    CHECK_EQ_INT(sse_feed(&p, STREAM, strlen(STREAM), NULL), 0);
    CHECK_EQ_INT(gem_scan_end(&b.scan, oai_render_event, &b.render), 0);
    oai_render_end(&b.render);
    sse_free(&p);
    oai_render_free(&b.render);

    octx c;
    oai_scan_init(&c.scan);
    rec_init(&c.rec);
    sse_init(&p, 0, oai_sse, &c);
    CHECK_EQ_INT(sse_feed(&p, out.data, out.len, NULL), 0);
    CHECK_EQ_INT(oai_scan_end(&c.scan, rec_event, &c.rec), 0);
    CHECK_EQ_STR(c.rec.log.data,
                 "START id=chatcmpl-g model=gemini-2.5-flash\n"
                 "REASONING \"**Weighing** the cities\"\n"
                 "TEXT \"Let me check \xc3\xa9 \\\"both\\\".\"\n"
                 "TOOL 0 id=call_56ce4ab7719ba3a0c841eb53 name=get_weather \"{\\\"city\\\":\\\"Paris\\\"}\"\n"
                 "TOOL 1 id=call_ca466be0c9980276f1acc733 name=get_weather \"{\\\"city\\\":\\\"Rome\\\"}\"\n"
                 "FINISH tool_calls\n"
                 "USAGE in=486 cr=1024 cw=0 out=160 rs=120\n");
    sse_free(&p);
    oai_scan_free(&c.scan);
    rec_free(&c.rec);
    sg_buf_free(&out);
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
    (void)event;
    gem_scan *s = ctx;
    static int errors;
    return gem_scan_chunk(s, data, len, count_errors, &errors) < 0;
}

static void test_mutations(void) {
    for (int iter = 0; iter < 3000; iter++) {
        size_t len;
        char *m = mutate(STREAM, &len);
        gem_scan s;
        gem_scan_init(&s, 1);
        sse_parser p;
        sse_init(&p, 0, mut_sse, &s);
        sse_feed(&p, m, len, NULL);
        sse_finish(&p);
        int errors = 0;
        gem_scan_end(&s, count_errors, &errors);
        CHECK(errors <= 1);
        sse_free(&p);
        free(m);
    }
    const char *req = "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                      "\"text\":\"hi\"}]},{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\","
                      "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"1\"}],\"tools\":[{\"type\":"
                      "\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"auto\",\"max_tokens\":3}";
    for (int iter = 0; iter < 5000; iter++) {
        size_t len;
        char *m = mutate(req, &len);
        json_t *j = json_loadb(m, len, 0, NULL);
        if (j) {   /* any JSON the router might hand over: built or refused, never a crash */
            sg_buf out;
            sg_buf_init(&out);
            gw_api_error e;
            if (gem_build_request(j, &out, &e) == 0) CHECK(out.len > 0);
            sg_buf_free(&out);
            json_decref(j);
        }
        free(m);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_build_request);
    RUN(test_url_path);
    RUN(test_stream);
    RUN(test_finish_and_errors);
    RUN(test_scan_response);
    RUN(test_classify_gemini);
    RUN(test_gemini_to_openai);
    RUN(test_mutations);
    return tu_finish(argv[0]);
}
