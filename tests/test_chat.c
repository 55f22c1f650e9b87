/* test_chat.c: chat templates and answer parsing (src/engine/chat.c).
 *
 * The renders are checked byte for byte against tests/data/chat/render.json, which
 * tools/chat/gen_fixtures.py made with Jinja and the models' own templates (kept next
 * to it). The parser is checked on hand-written answers, and its streaming form against
 * the whole-answer form, fed in pieces of every size. */
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "testutil.h"

/* ---- renders against Jinja ---------------------------------------------------------- */

static void show_diff(const char *name, const char *got, size_t got_len, const char *want,
                      size_t want_len) {
    size_t i = 0;
    while (i < got_len && i < want_len && got[i] == want[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "    %s: differs at byte %zu (got %zu bytes, want %zu)\n", name, i, got_len,
            want_len);
    fprintf(stderr, "    got:  ...%.*s...\n", (int)((got_len - from) < 80 ? got_len - from : 80),
            got + from);
    fprintf(stderr, "    want: ...%.*s...\n", (int)((want_len - from) < 80 ? want_len - from : 80),
            want + from);
}

static void test_fixtures(void) {
    json_error_t jerr;
    json_t *cases = json_load_file("tests/data/chat/render.json", 0, &jerr);
    CHECK_MSG(cases != NULL, "render.json: %s", jerr.text);
    if (!cases) return;
    CHECK(json_array_size(cases) >= 30);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *kind = json_string_value(json_object_get(c, "kind"));
        const json_t *want = json_object_get(c, "expected");
        chat_options opt = {
            .enable_thinking = (int)json_integer_value(json_object_get(c, "enable_thinking")),
            .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
            .today = json_string_value(json_object_get(c, "today")),
            .python_tools = json_object_get(c, "python_tools"),
        };
        sg_buf out;
        sg_buf_init(&out);
        sg_error err = {{0}};
        int rc = chat_render(strcmp(kind, "chatml") ? CHAT_SMOLLM3 : CHAT_CHATML,
                             json_object_get(c, "messages"), json_object_get(c, "tools"), &opt,
                             &out, &err);
        CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
        bool same = rc == 0 && out.len == json_string_length(want) &&
                    memcmp(out.data, json_string_value(want), out.len) == 0;
        CHECK_MSG(same, "case %s renders differently from Jinja", name);
        if (!same && rc == 0)
            show_diff(name, out.data, out.len, json_string_value(want), json_string_length(want));
        sg_buf_free(&out);
    }
    json_decref(cases);
}

static char *render(chat_kind kind, const char *messages_json, const char *tools_json,
                    const chat_options *opt, sg_error *err) {
    json_t *m = json_loads(messages_json, JSON_DECODE_ANY, NULL);
    json_t *t = tools_json ? json_loads(tools_json, JSON_DECODE_ANY, NULL) : NULL;
    sg_buf out;
    sg_buf_init(&out);
    sg_buf_puts(&out, "KEEP");
    int rc = chat_render(kind, m, t, opt, &out, err);
    json_decref(m);
    json_decref(t);
    if (rc < 0) {
        CHECK_EQ_STR(out.data, "KEEP");  /* out untouched on failure */
        sg_buf_free(&out);
        return NULL;
    }
    char *s = sg_xstrdup(out.data + 4);
    sg_buf_free(&out);
    return s;
}

static void test_defaults(void) {
    /* opt NULL: thinking on, generation prompt on, today's date */
    char *s = render(CHAT_SMOLLM3, "[{\"role\":\"user\",\"content\":\"hi\"}]", NULL, NULL, NULL);
    CHECK(s != NULL);
    if (!s) return;
    const char *d = strstr(s, "Today Date: ");
    CHECK(d != NULL);
    if (d) {
        int day = 0, year = 0, used = 0;
        char month[16] = "";
        CHECK(sscanf(d, "Today Date: %2d %15s %4d%n", &day, month, &year, &used) == 3);
        CHECK(day >= 1 && day <= 31 && year >= 2025 && d[used] == '\n');
        CHECK(d[12] >= '0' && d[12] <= '3');  /* zero-padded day, as %d */
    }
    CHECK(strstr(s, "Reasoning Mode: /think\n") != NULL);
    size_t n = strlen(s);
    CHECK(n > 22 && strcmp(s + n - 22, "<|im_start|>assistant\n") == 0);
    free(s);

    chat_options opt = {0, false, "01 May 2030", NULL};
    s = render(CHAT_CHATML, "[{\"role\":\"user\",\"content\":\"hi\"}]", NULL, &opt, NULL);
    CHECK_EQ_STR(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                    "Hugging Face<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n");
    free(s);
}

static void test_detect(void) {
    char *t3 = tu_read("tests/data/chat/smollm3.jinja", NULL);
    char *t2 = tu_read("tests/data/chat/smollm2.jinja", NULL);
    CHECK(t3 && t2);
    if (t3) CHECK_EQ_INT(chat_detect(t3), CHAT_SMOLLM3);
    if (t2) CHECK_EQ_INT(chat_detect(t2), CHAT_CHATML);
    CHECK_EQ_INT(chat_detect(NULL), CHAT_CHATML);
    CHECK_EQ_INT(chat_detect(""), CHAT_CHATML);
    /* Unsloth's edit of the SmolLM3 template (no date line) still says Reasoning Mode */
    CHECK_EQ_INT(chat_detect("{{- \"Reasoning Mode: \" + reasoning_mode + \"\\n\\n\" -}}"),
                 CHAT_SMOLLM3);
    free(t3);
    free(t2);
}

/* Each hostile input fails with a message and leaves out alone. */
static void expect_error(chat_kind kind, const char *messages, const char *tools,
                         const json_t *python_tools, const char *fragment) {
    sg_error err = {{0}};
    chat_options opt = {-1, true, "01 May 2030", python_tools};
    char *s = render(kind, messages, tools, &opt, &err);
    CHECK_MSG(s == NULL, "accepted %s", messages);
    CHECK_MSG(strstr(err.msg, fragment) != NULL, "error \"%s\" lacks \"%s\"", err.msg, fragment);
    free(s);
}

static void test_hostile_input(void) {
    for (int k = 0; k < 2; k++) {
        chat_kind kind = k ? CHAT_CHATML : CHAT_SMOLLM3;
        expect_error(kind, "{\"role\":\"user\"}", NULL, NULL, "messages must be an array");
        expect_error(kind, "\"hello\"", NULL, NULL, "messages must be an array");
        expect_error(kind, "null", NULL, NULL, "messages must be an array");
        expect_error(kind, "[]", NULL, NULL, "empty");
        expect_error(kind, "[42]", NULL, NULL, "messages[0] must be an object");
        expect_error(kind, "[{\"content\":\"x\"}]", NULL, NULL, "messages[0].role");
        expect_error(kind, "[{\"role\":7,\"content\":\"x\"}]", NULL, NULL, "messages[0].role");
        expect_error(kind, "[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"wizard\",\"content\":\"x\"}]",
                     NULL, NULL, "unsupported role");
        expect_error(kind, "[{\"role\":\"user\",\"content\":12}]", NULL, NULL, "content must be");
        expect_error(kind, "[{\"role\":\"user\",\"content\":{\"text\":\"x\"}}]", NULL, NULL,
                     "content must be");
        expect_error(kind, "[{\"role\":\"user\",\"content\":true}]", NULL, NULL, "content must be");
        expect_error(kind, "[{\"role\":\"user\",\"content\":[\"x\"]}]", NULL, NULL, "content[0]");
        expect_error(kind, "[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]",
                     NULL, NULL, "unsupported part type");
        expect_error(kind, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":3}]}]", NULL,
                     NULL, "text must be a string");
        expect_error(kind, "[{\"role\":\"assistant\",\"content\":null,\"tool_calls\":{}}]", NULL, NULL,
                     "tool_calls must be an array");
        expect_error(kind, "[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"arguments\":\"{}\"}}]}]",
                     NULL, NULL, "function.name");
        expect_error(kind, "[{\"role\":\"assistant\",\"tool_calls\":[7]}]", NULL, NULL, "function.name");
        expect_error(kind, "[{\"role\":\"user\",\"content\":\"x\"}]", "{\"type\":\"function\"}", NULL,
                     "tools must be an array");
        expect_error(kind, "[{\"role\":\"user\",\"content\":\"x\"}]", "[\"get_weather\"]", NULL,
                     "tools[0] must be an object");
    }
    json_t *pt = json_string("not a list");
    expect_error(CHAT_SMOLLM3, "[{\"role\":\"user\",\"content\":\"x\"}]", NULL, pt,
                 "python_tools must be an array");
    json_decref(pt);

    /* lenient where the templates are: null content, tools null, a tool_call on a user */
    chat_options opt = {0, true, "01 May 2030", NULL};
    char *s = render(CHAT_SMOLLM3, "[{\"role\":\"system\",\"content\":null},{\"role\":\"user\"}]",
                     "null", &opt, NULL);
    CHECK(s && strstr(s, "## Custom Instructions\n\nYou are a helpful AI assistant named SmolLM, "
                         "trained by Hugging Face.\n\n<|im_start|>user\n<|im_end|>\n"));
    free(s);
}

/* ---- answers -------------------------------------------------------------------------- */

static chat_parsed parse(const char *text) {
    chat_parsed p;
    sg_error err = {{0}};
    CHECK(chat_parse_answer(CHAT_SMOLLM3, text, strlen(text), &p, &err) == 0);
    return p;
}

static const char *call_field(const chat_parsed *p, size_t i, const char *field) {
    const json_t *c = json_array_get(p->tool_calls, i);
    if (!strcmp(field, "id") || !strcmp(field, "type")) return json_string_value(json_object_get(c, field));
    return json_string_value(json_object_get(json_object_get(c, "function"), field));
}

static void test_parse_plain_and_reasoning(void) {
    chat_parsed p = parse("  Hello there.\n");
    CHECK(p.reasoning == NULL);
    CHECK_EQ_STR(p.content, "Hello there.");
    CHECK(p.tool_calls == NULL);
    chat_parsed_free(&p);

    p = parse("<think>\nLet me add.\n2+2=4\n</think>\n\nThe answer is 4.\n");
    CHECK_EQ_STR(p.reasoning, "Let me add.\n2+2=4");
    CHECK_EQ_STR(p.content, "The answer is 4.");
    chat_parsed_free(&p);

    /* no_think answers carry an empty block (or none: the prompt held it) */
    p = parse("<think>\n\n</think>\nFour.");
    CHECK(p.reasoning == NULL);
    CHECK_EQ_STR(p.content, "Four.");
    chat_parsed_free(&p);

    /* the prompt opened <think>: the answer only closes it */
    p = parse("The user wants a sum.\n</think>\nFour.");
    CHECK_EQ_STR(p.reasoning, "The user wants a sum.");
    CHECK_EQ_STR(p.content, "Four.");
    chat_parsed_free(&p);

    /* cut off by the token limit while thinking */
    p = parse("<think>\nStill going");
    CHECK_EQ_STR(p.reasoning, "Still going");
    CHECK_EQ_STR(p.content, "");
    chat_parsed_free(&p);

    p = parse("");
    CHECK(p.reasoning == NULL);
    CHECK_EQ_STR(p.content, "");
    chat_parsed_free(&p);

    sg_error err;
    CHECK(chat_parse_answer(CHAT_CHATML, NULL, 0, &p, &err) == 0);
    CHECK_EQ_STR(p.content, "");
    chat_parsed_free(&p);
    chat_parsed_free(NULL);

    /* inner whitespace is kept; unicode passes through */
    p = parse("<think>a\n\n b</think>Ça  va 😀 \n");
    CHECK_EQ_STR(p.reasoning, "a\n\n b");
    CHECK_EQ_STR(p.content, "Ça  va 😀");
    chat_parsed_free(&p);
}

static void test_parse_tool_calls(void) {
    chat_parsed p = parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", "
                          "\"days\": 3, \"x\": 0.1, \"nested\": {\"a\": [true, null]}}}\n</tool_call>");
    CHECK_EQ_STR(p.content, "");
    CHECK_EQ_INT(json_array_size(p.tool_calls), 1);
    CHECK_EQ_STR(call_field(&p, 0, "type"), "function");
    CHECK_EQ_STR(call_field(&p, 0, "name"), "get_weather");
    CHECK_EQ_STR(call_field(&p, 0, "arguments"),
                 "{\"city\":\"Paris\",\"days\":3,\"x\":0.1,\"nested\":{\"a\":[true,null]}}");
    const char *id = call_field(&p, 0, "id");
    CHECK(id && strncmp(id, "call_", 5) == 0 && strlen(id) == 21);
    char *first_id = sg_xstrdup(id ? id : "");
    chat_parsed_free(&p);

    /* deterministic */
    p = parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", "
              "\"days\": 3, \"x\": 0.1, \"nested\": {\"a\": [true, null]}}}\n</tool_call>");
    CHECK_EQ_STR(call_field(&p, 0, "id"), first_id);
    chat_parsed_free(&p);
    free(first_id);

    /* thinking, text, two calls (same function twice: distinct ids), text after */
    p = parse("<think>\nNeed two lookups.\n</think>\nLet me check.\n<tool_call>\n"
              "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
              "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
              "</tool_call>\nDone.");
    CHECK_EQ_STR(p.reasoning, "Need two lookups.");
    CHECK_EQ_STR(p.content, "Let me check.\n\n\nDone.");
    CHECK_EQ_INT(json_array_size(p.tool_calls), 2);
    CHECK(call_field(&p, 0, "id") && call_field(&p, 1, "id") &&
          strcmp(call_field(&p, 0, "id"), call_field(&p, 1, "id")) != 0);
    chat_parsed_free(&p);

    /* arguments already a string, absent, "parameters" spelling */
    p = parse("<tool_call>{\"name\":\"a\",\"arguments\":\"{\\\"q\\\":1}\"}</tool_call>"
              "<tool_call>{\"name\":\"b\"}</tool_call>"
              "<tool_call>{\"name\":\"c\",\"parameters\":{\"k\":\"v\"}}</tool_call>");
    CHECK_EQ_INT(json_array_size(p.tool_calls), 3);
    CHECK_EQ_STR(call_field(&p, 0, "arguments"), "{\"q\":1}");
    CHECK_EQ_STR(call_field(&p, 1, "arguments"), "{}");
    CHECK_EQ_STR(call_field(&p, 2, "arguments"), "{\"k\":\"v\"}");
    CHECK_EQ_STR(p.content, "");
    chat_parsed_free(&p);

    /* malformed blocks stay in the content, the good one is still taken */
    p = parse("A <tool_call>{\"name\": \"x\", \"arguments\": {</tool_call> B "
              "<tool_call>{\"arguments\": {}}</tool_call> C "
              "<tool_call>[1,2]</tool_call> D "
              "<tool_call>{\"name\": \"ok\"}</tool_call>");
    CHECK_EQ_STR(p.content, "A <tool_call>{\"name\": \"x\", \"arguments\": {</tool_call> B "
                            "<tool_call>{\"arguments\": {}}</tool_call> C "
                            "<tool_call>[1,2]</tool_call> D");
    CHECK_EQ_INT(json_array_size(p.tool_calls), 1);
    CHECK_EQ_STR(call_field(&p, 0, "name"), "ok");
    chat_parsed_free(&p);

    /* unclosed (cut off) block stays text */
    p = parse("Calling.\n<tool_call>\n{\"name\": \"get_wea");
    CHECK_EQ_STR(p.content, "Calling.\n<tool_call>\n{\"name\": \"get_wea");
    CHECK(p.tool_calls == NULL);
    chat_parsed_free(&p);

    /* a tool_call inside the reasoning is reasoning */
    p = parse("<think>maybe <tool_call>{\"name\":\"x\"}</tool_call></think>no");
    CHECK_EQ_STR(p.reasoning, "maybe <tool_call>{\"name\":\"x\"}</tool_call>");
    CHECK_EQ_STR(p.content, "no");
    CHECK(p.tool_calls == NULL);
    chat_parsed_free(&p);
}

/* A parsed call, sent back as history, renders as the model wrote it. */
static void test_tool_call_round_trip(void) {
    chat_parsed p = parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>");
    json_t *msgs = json_pack("[{s:s, s:s}, {s:s, s:n, s:O}, {s:s, s:s, s:s}]",
                             "role", "user", "content", "Weather?",
                             "role", "assistant", "content", "tool_calls", p.tool_calls,
                             "role", "tool", "tool_call_id", "x", "content", "cold");
    sg_buf out;
    sg_buf_init(&out);
    chat_options opt = {0, true, "01 May 2030", NULL};
    CHECK(chat_render(CHAT_SMOLLM3, msgs, NULL, &opt, &out, NULL) == 0);
    CHECK(strstr(out.data, "<|im_start|>assistant\n<think>\n\n</think>\n<tool_call>\n"
                           "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n"
                           "</tool_call><|im_end|>\n<|im_start|>user\ncold<|im_end|>\n") != NULL);
    sg_buf_free(&out);
    json_decref(msgs);
    chat_parsed_free(&p);
}

/* ---- streaming ----------------------------------------------------------------------- */

typedef struct events {
    sg_buf reasoning, content;
    json_t *calls;
    int n_events;
    bool bad_utf8;
} events;

static bool utf8_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!len || i + len > n) return false;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80) return false;
        i += len;
    }
    return true;
}

static void on_event(void *user, const chat_event *ev) {
    events *e = user;
    e->n_events++;
    if (ev->kind == CHAT_EV_TOOL_CALL) {
        if (!e->calls) e->calls = json_array();
        CHECK_EQ_INT(ev->index, (int)json_array_size(e->calls));
        json_array_append(e->calls, (json_t *)ev->tool_call);
        return;
    }
    CHECK(ev->len > 0);
    if (!utf8_valid(ev->text, ev->len)) e->bad_utf8 = true;
    sg_buf_append(ev->kind == CHAT_EV_REASONING ? &e->reasoning : &e->content, ev->text, ev->len);
}

static const char *const answers[] = {
    "Hello there.",
    "<think>\nLet me add.\n2+2=4\n</think>\n\nThe answer is 4.\n",
    "<think>\n\n</think>\nFour.",
    "The user wants a sum.\n</think>\nFour.",
    "<think>\nStill going",
    "   ",
    "<thin",
    "<think>",
    "<thinking> is not a tag",
    "Ça va 😀 — très bien. 東京\n",
    "<think>é😀</think>日本",
    "<think>\nNeed two lookups.\n</think>\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", "
    "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", "
    "\"arguments\": {\"city\": \"東京\"}}\n</tool_call>\nDone.",
    "A <tool_call>{\"name\": \"x\", \"arguments\": {</tool_call> B <tool_call>{\"name\": \"ok\"}"
    "</tool_call>",
    "Calling.\n<tool_call>\n{\"name\": \"get_wea",
    "a < b and c <tool d </tool_call> e",
    "x\n\n  \n",
};

static void test_stream_matches_batch(void) {
    for (size_t a = 0; a < sizeof answers / sizeof answers[0]; a++) {
        const char *text = answers[a];
        size_t len = strlen(text);
        chat_parsed want;
        CHECK(chat_parse_answer(CHAT_SMOLLM3, text, len, &want, NULL) == 0);
        size_t i = 0;
        while (i < len && (text[i] == ' ' || text[i] == '\n')) i++;
        bool in_reasoning = strncmp(text + i, "<think>", 7) != 0 && strstr(text, "</think>");
        for (size_t piece = 1; piece <= len + 1; piece++) {
            events e = {0};
            sg_buf_init(&e.reasoning);
            sg_buf_init(&e.content);
            chat_stream *s = chat_stream_new(CHAT_SMOLLM3, in_reasoning, on_event, &e);
            for (size_t off = 0; off < len; off += piece)
                chat_stream_feed(s, text + off, off + piece > len ? len - off : piece);
            chat_stream_finish(s);
            chat_stream_free(s);
            const char *r = e.reasoning.len ? e.reasoning.data : NULL;
            bool same = ((r == NULL) == (want.reasoning == NULL)) &&
                        (!r || strcmp(r, want.reasoning) == 0) &&
                        strcmp(e.content.len ? e.content.data : "", want.content) == 0 &&
                        json_equal(e.calls, want.tool_calls) == (want.tool_calls != NULL) &&
                        (e.calls == NULL) == (want.tool_calls == NULL);
            CHECK_MSG(same, "answer %zu in pieces of %zu: reasoning \"%s\" content \"%s\"", a, piece,
                      r ? r : "(null)", e.content.len ? e.content.data : "");
            CHECK_MSG(!e.bad_utf8, "answer %zu in pieces of %zu split a UTF-8 character", a, piece);
            sg_buf_free(&e.reasoning);
            sg_buf_free(&e.content);
            json_decref(e.calls);
            if (!same) break;
        }
        chat_parsed_free(&want);
    }
}

/* Content arrives before the answer ends: deltas are not all held to the end. */
static void test_stream_is_incremental(void) {
    events e = {0};
    sg_buf_init(&e.reasoning);
    sg_buf_init(&e.content);
    chat_stream *s = chat_stream_new(CHAT_SMOLLM3, false, on_event, &e);
    chat_stream_feed(s, "<think>\nfirst", 13);
    CHECK_EQ_STR(e.reasoning.data, "first");
    chat_stream_feed(s, " thought\n</thi", 14);
    CHECK_EQ_STR(e.reasoning.data, "first thought");
    chat_stream_feed(s, "nk>\nHello ", 10);
    CHECK_EQ_STR(e.content.data, "Hello");
    chat_stream_feed(s, "world <tool", 11);
    CHECK_EQ_STR(e.content.data, "Hello world");  /* "<tool" may open a call: held */
    chat_stream_feed(s, "_call>{\"name\":\"f\"}</tool_call>", 30);
    CHECK_EQ_INT(json_array_size(e.calls), 1);
    chat_stream_feed(s, "\xc3", 1);   /* half of "é" */
    CHECK_EQ_STR(e.content.data, "Hello world");
    chat_stream_feed(s, "\xa9", 1);
    CHECK_EQ_STR(e.content.data, "Hello world \xc3\xa9");
    chat_stream_finish(s);
    chat_stream_free(s);
    sg_buf_free(&e.reasoning);
    sg_buf_free(&e.content);
    json_decref(e.calls);
}

static void test_prompt_opens_reasoning(void) {
    const char *open = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n";
    CHECK(chat_prompt_opens_reasoning(open, strlen(open)));
    const char *closed = "<|im_start|>assistant\n<think>\n\n</think>\n";
    CHECK(!chat_prompt_opens_reasoning(closed, strlen(closed)));
    CHECK(!chat_prompt_opens_reasoning("", 0));
    /* the built-in templates never leave it open, though their system text quotes <think> */
    for (int think = 0; think < 2; think++) {
        chat_options opt = {think, true, "01 May 2030", NULL};
        char *s = render(CHAT_SMOLLM3, "[{\"role\":\"user\",\"content\":\"<think>\"}]", NULL, &opt, NULL);
        CHECK(s && !chat_prompt_opens_reasoning(s, strlen(s)));
        free(s);
    }
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_fixtures);
    RUN(test_defaults);
    RUN(test_detect);
    RUN(test_hostile_input);
    RUN(test_parse_plain_and_reasoning);
    RUN(test_parse_tool_calls);
    RUN(test_tool_call_round_trip);
    RUN(test_stream_matches_batch);
    RUN(test_stream_is_incremental);
    RUN(test_prompt_opens_reasoning);
    return tu_finish(argv[0]);
}
