/* test_local_constraint.c: the grammar a chat request asks of the local model
 * (gateway/local_constraint.h). Texts are fed byte by byte: a forced tool call accepts
 * exactly SmolLM3's <tool_call> blocks naming a declared tool (or the named one) with
 * arguments valid against its schema, one block when parallel_tool_calls is false;
 * response_format json_object / json_schema accept JSON of the form; unconstrained
 * requests get no grammar; tool_choice auto gets the call grammar, lazy (or, with a
 * response_format, that form or calls); unsupported schema features and undeclared names
 * are errors naming them; tool_choice "none" offers no tools. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gateway/local_constraint.h"
#include "testutil.h"

static json_t *req(const char *text) {
    json_error_t je;
    json_t *r = json_loads(text, 0, &je);
    if (!r) fprintf(stderr, "    bad test JSON: %s\n", je.text);
    return r;
}

/* 1: accepted whole; 0: a live prefix; -1: rejected. */
static int feed(sg_grammar *g, const char *text) {
    sg_grammar_state *s = grammar_state_new(g, NULL);
    int r = grammar_state_advance_bytes(s, text, strlen(text)) ? -1 : grammar_state_is_accepting(s) ? 1 : 0;
    grammar_state_free(s);
    return r;
}

/* The grammar of a request (NULL on error, err filled); *lazy, when asked, whether it
 * applies from "<tool_call>" on. */
static sg_grammar *grammar_lazy_of(const char *request, bool *lazy, sg_error *err) {
    json_t *r = req(request);
    sg_grammar *g = NULL;
    bool lz = false;
    if (local_constraint_grammar(r, &g, &lz, err)) g = NULL;
    json_decref(r);
    if (lazy) *lazy = lz;
    return g;
}

/* The grammar of a request that is not lazy (a lazy one fails the check). */
static sg_grammar *grammar_of(const char *request, sg_error *err) {
    bool lazy;
    sg_grammar *g = grammar_lazy_of(request, &lazy, err);
    CHECK_MSG(!g || !lazy, "not lazy: %s", request);
    return g;
}

#define TOOLS "\"tools\": [" \
    "{\"type\": \"function\", \"function\": {\"name\": \"add\", \"parameters\": {\"type\": \"object\", " \
    "\"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"type\": \"integer\"}}, \"required\": [\"a\", \"b\"]}}}," \
    "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": {\"type\": \"object\", " \
    "\"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}," \
    "{\"type\": \"function\", \"function\": {\"name\": \"now\"}}]"

static const char ADD[] = "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": -2}}\n</tool_call>";
static const char WEATHER[] = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
static const char NOW[] = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";

static void test_required(void) {
    sg_error err = {{0}};
    sg_grammar *g = grammar_of("{" TOOLS ", \"tool_choice\": \"required\"}", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    CHECK_EQ_INT(feed(g, ADD), 1);
    CHECK_EQ_INT(feed(g, WEATHER), 1);
    CHECK_EQ_INT(feed(g, NOW), 1);
    char two[512];
    snprintf(two, sizeof two, "%s\n%s", ADD, WEATHER);
    CHECK_EQ_INT(feed(g, two), 1);   /* parallel by default */
    CHECK_EQ_INT(feed(g, "<tool_call>\n{\"name\": \"sub\""), -1);                       /* undeclared */
    CHECK_EQ_INT(feed(g, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": \"x\""), -1);   /* a: integer */
    CHECK_EQ_INT(feed(g, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}"), -1);       /* b required */
    CHECK_EQ_INT(feed(g, "<tool_call>\n{\"name\": \"now\", \"arguments\": {\"x\": 1}}"), -1);       /* no parameters */
    CHECK_EQ_INT(feed(g, "Sure: <tool_call>"), -1);                                      /* no text first */
    CHECK_EQ_INT(feed(g, "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}"), 0);   /* unclosed */
    grammar_unref(g);
}

static void test_named_and_single(void) {
    sg_error err = {{0}};
    sg_grammar *g = grammar_of("{" TOOLS ", \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"get_weather\"}}, "
                               "\"parallel_tool_calls\": false}", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    CHECK_EQ_INT(feed(g, WEATHER), 1);
    CHECK_EQ_INT(feed(g, ADD), -1);   /* not the named tool */
    sg_grammar_state *s = grammar_state_new(g, NULL);
    CHECK(!grammar_state_is_complete(s));
    CHECK_EQ_INT(grammar_state_advance_bytes(s, WEATHER, strlen(WEATHER)), 0);
    CHECK(grammar_state_is_complete(s));   /* one call: nothing may follow */
    CHECK_EQ_INT(grammar_state_advance_bytes(s, "\n", 1), -1);
    grammar_state_free(s);
    grammar_unref(g);
}

static void test_response_format(void) {
    sg_error err = {{0}};
    sg_grammar *g = grammar_of("{\"response_format\": {\"type\": \"json_object\"}}", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (g) {
        CHECK_EQ_INT(feed(g, "{\"x\": [1, {\"y\": null}]}"), 1);
        CHECK_EQ_INT(feed(g, "[1]"), -1);
        grammar_unref(g);
    }
    g = grammar_of("{\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"p\", \"strict\": true, "
                   "\"schema\": {\"type\": \"object\", \"properties\": {\"mood\": {\"enum\": [\"happy\", \"sad\"]}}, "
                   "\"required\": [\"mood\"], \"additionalProperties\": false}}}}", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (g) {
        CHECK_EQ_INT(feed(g, "{\"mood\": \"sad\"}"), 1);
        CHECK_EQ_INT(feed(g, "{\"mood\": \"angry\"}"), -1);
        grammar_unref(g);
    }
    /* a forced call wins over response_format */
    g = grammar_of("{" TOOLS ", \"tool_choice\": \"required\", \"response_format\": {\"type\": \"json_object\"}}", &err);
    CHECK(g && feed(g, NOW) == 1);
    grammar_unref(g);
}

/* tool_choice auto (or absent) with tools: the call grammar, lazy; with a response_format
 * too: that form or calls, not lazy. */
static void test_auto(void) {
    static const char *const autos[] = {"{" TOOLS "}", "{" TOOLS ", \"tool_choice\": \"auto\"}"};
    for (size_t i = 0; i < 2; i++) {
        sg_error err = {{0}};
        bool lazy = false;
        sg_grammar *g = grammar_lazy_of(autos[i], &lazy, &err);
        CHECK_MSG(g && lazy, "%s: %s", autos[i], err.msg);
        if (!g) continue;
        CHECK_EQ_INT(feed(g, ADD), 1);
        char two[512];
        snprintf(two, sizeof two, "%s\n%s", NOW, WEATHER);
        CHECK_EQ_INT(feed(g, two), 1);
        CHECK_EQ_INT(feed(g, "<tool_call>\n{\"name\": \"sub\""), -1);
        grammar_unref(g);
    }
    sg_error err = {{0}};
    bool lazy = true;
    sg_grammar *g = grammar_lazy_of("{" TOOLS ", \"parallel_tool_calls\": false}", &lazy, &err);
    CHECK_MSG(g && lazy, "%s", err.msg);
    if (g) {
        sg_grammar_state *s = grammar_state_new(g, NULL);
        CHECK_EQ_INT(grammar_state_advance_bytes(s, ADD, strlen(ADD)), 0);
        CHECK(grammar_state_is_complete(s));   /* at most one call */
        grammar_state_free(s);
        grammar_unref(g);
    }
    g = grammar_lazy_of("{" TOOLS ", \"response_format\": {\"type\": \"json_object\"}}", &lazy, &err);
    CHECK_MSG(g && !lazy, "%s", err.msg);
    if (g) {
        CHECK_EQ_INT(feed(g, "{\"x\": 1}"), 1);
        CHECK_EQ_INT(feed(g, WEATHER), 1);
        CHECK_EQ_INT(feed(g, "Hello"), -1);
        grammar_unref(g);
    }
    /* an unsupported feature in a tool's parameters is an error in auto too */
    CHECK(!grammar_lazy_of("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": "
                           "{\"type\": \"object\", \"patternProperties\": {}}}}]}", NULL, &err));
    CHECK_MSG(strstr(err.msg, "tools[0].function.parameters") && strstr(err.msg, "patternProperties"), "%s", err.msg);
}

static void test_unconstrained(void) {
    static const char *const free_forms[] = {
        "{\"messages\": []}",
        "{" TOOLS ", \"tool_choice\": \"none\"}",
        "{\"tools\": []}",
        "{\"tools\": [{\"type\": \"custom\"}]}",
        "{\"response_format\": {\"type\": \"text\"}}",
    };
    for (size_t i = 0; i < sizeof free_forms / sizeof free_forms[0]; i++) {
        sg_error err = {{0}};
        json_t *r = req(free_forms[i]);
        sg_grammar *g = (sg_grammar *)1;
        bool lazy = true;
        CHECK_EQ_INT(local_constraint_grammar(r, &g, &lazy, &err), 0);
        CHECK(!lazy);
        CHECK_MSG(g == NULL, "no grammar for %s", free_forms[i]);
        json_decref(r);
    }
    json_t *none = req("{" TOOLS ", \"tool_choice\": \"none\"}"), *aut = req("{" TOOLS "}");
    CHECK(!local_constraint_offers_tools(none));
    CHECK(local_constraint_offers_tools(aut));
    json_decref(none);
    json_decref(aut);
}

static void test_errors(void) {
    sg_error err = {{0}};
    CHECK(!grammar_of("{\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"p\", "
                      "\"schema\": {\"type\": \"object\", \"properties\": {\"a\": {\"not\": {}}}}}}}", &err));
    CHECK_MSG(strstr(err.msg, "response_format.json_schema.schema") && strstr(err.msg, "'not'"), "%s", err.msg);
    CHECK(!grammar_of("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": "
                      "{\"type\": \"object\", \"patternProperties\": {}}}}], \"tool_choice\": \"required\"}", &err));
    CHECK_MSG(strstr(err.msg, "tools[0].function.parameters") && strstr(err.msg, "patternProperties"), "%s", err.msg);
    CHECK(!grammar_of("{" TOOLS ", \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"nope\"}}}", &err));
    CHECK_MSG(strstr(err.msg, "'nope'"), "%s", err.msg);
    CHECK(!grammar_of("{\"tool_choice\": \"required\"}", &err));
    CHECK_MSG(strstr(err.msg, "tools"), "%s", err.msg);
    CHECK(!grammar_of("{\"response_format\": {\"type\": \"xml\"}}", &err));
    CHECK_MSG(strstr(err.msg, "'xml'"), "%s", err.msg);
}

/* The two steps the local provider takes apart (the text on the loop thread, the compile
 * on its worker): every error of the request's shows in the first, what they make is what
 * local_constraint_grammar makes, and a text that does not compile names its part. */
static void test_two_steps(void) {
    static const struct { const char *request, *what; bool lazy; } cases[] = {
        {"{" TOOLS "}", "tools", true},
        {"{" TOOLS ", \"tool_choice\": \"required\"}", "tools", false},
        {"{\"response_format\": {\"type\": \"json_object\"}}", "response_format", false},
        {"{" TOOLS ", \"response_format\": {\"type\": \"json_object\"}}", "response_format and tools", false},
        {"{\"messages\": []}", NULL, false},
        {"{" TOOLS ", \"tool_choice\": \"none\"}", NULL, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sg_error err = {{0}};
        json_t *r = req(cases[i].request);
        sg_buf gbnf;
        sg_buf_init(&gbnf);
        const char *what = "unset";
        bool lazy = !cases[i].lazy;
        CHECK_EQ_INT(local_constraint_gbnf(r, &gbnf, &lazy, &what, &err), 0);
        CHECK_MSG(cases[i].what ? what && !strcmp(what, cases[i].what) : what == NULL, "%s: %s", cases[i].request,
                  what ? what : "(none)");
        CHECK(lazy == cases[i].lazy);
        CHECK(cases[i].what ? gbnf.len > 0 : gbnf.len == 0);
        if (cases[i].what) {
            sg_grammar *a = local_constraint_compile(gbnf.data, gbnf.len, what, &err), *b = NULL;
            bool lz;
            CHECK_EQ_INT(local_constraint_grammar(r, &b, &lz, &err), 0);
            CHECK_MSG(a && a == b, "the same (cached) grammar both ways: %s", cases[i].request);
            grammar_unref(a);
            grammar_unref(b);
        }
        sg_buf_free(&gbnf);
        json_decref(r);
    }
    sg_error err = {{0}};
    json_t *r = req("{\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"p\", "
                    "\"schema\": {\"type\": \"object\", \"properties\": {\"a\": {\"not\": {}}}}}}}");
    sg_buf gbnf;
    sg_buf_init(&gbnf);
    const char *what;
    bool lazy;
    CHECK_EQ_INT(local_constraint_gbnf(r, &gbnf, &lazy, &what, &err), -1);
    CHECK_MSG(strstr(err.msg, "'not'"), "%s", err.msg);
    sg_buf_free(&gbnf);
    json_decref(r);
    CHECK(!local_constraint_compile("root ::= (", 10, "tools", &err));
    CHECK_MSG(!strncmp(err.msg, "tools: ", 7), "%s", err.msg);
}

/* Names needing escapes in JSON and in GBNF literals are matched as JSON writes them. */
static void test_odd_names(void) {
    sg_error err = {{0}};
    sg_grammar *g = grammar_of("{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"a\\\"b\\\\c-d_e\"}}], "
                               "\"tool_choice\": \"required\"}", &err);
    CHECK_MSG(g, "%s", err.msg);
    if (!g) return;
    CHECK_EQ_INT(feed(g, "<tool_call>\n{\"name\": \"a\\\"b\\\\c-d_e\", \"arguments\": {}}\n</tool_call>"), 1);
    grammar_unref(g);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_required);
    RUN(test_named_and_single);
    RUN(test_response_format);
    RUN(test_auto);
    RUN(test_unconstrained);
    RUN(test_errors);
    RUN(test_two_steps);
    RUN(test_odd_names);
    return tu_finish(argv[0]);
}
