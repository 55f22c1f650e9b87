/* local_constraint.c: the grammar that keeps the local model to a request's promises
 * (local_constraint.h). */
#include "gateway/local_constraint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "engine/json_schema.h"

/* Appends GBNF text with every rule name prefixed (so that several schemas' rules live
 * in one grammar): a name is a run of word characters outside "...", [...], {...} and
 * comments. */
static void append_prefixed(sg_buf *out, const char *g, size_t n, const char *prefix) {
    size_t i = 0;
    while (i < n) {
        char c = g[i];
        if (c == '"' || c == '[' || c == '{') {
            char close = c == '"' ? '"' : c == '[' ? ']' : '}';
            size_t s = i++;
            while (i < n && g[i] != close) i += g[i] == '\\' && i + 1 < n ? 2 : 1;
            if (i < n) i++;
            sg_buf_append(out, g + s, i - s);
        } else if (c == '#') {
            size_t s = i;
            while (i < n && g[i] != '\n') i++;
            sg_buf_append(out, g + s, i - s);
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            size_t s = i;
            while (i < n && ((g[i] >= 'a' && g[i] <= 'z') || (g[i] >= 'A' && g[i] <= 'Z') || (g[i] >= '0' && g[i] <= '9') ||
                             g[i] == '-' || g[i] == '_'))
                i++;
            sg_buf_puts(out, prefix);
            sg_buf_append(out, g + s, i - s);
        } else {
            sg_buf_append(out, &c, 1);
            i++;
        }
    }
}

/* Appends s as the inside of a GBNF string literal. */
static void append_literal(sg_buf *out, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') sg_buf_printf(out, "\\%c", c);
        else if (c == '\n') sg_buf_puts(out, "\\n");
        else if (c < 0x20) sg_buf_printf(out, "\\x%02x", c);
        else sg_buf_append(out, (const char *)&c, 1);
    }
}

/* The GBNF of a forced tool call in SmolLM3's syntax (chat.h: the form the template shows
 * the model, Python json.dumps spacing): one or more blocks
 *     <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>
 * with "\n" between blocks; NAME one of the tools (or only), ARGS its parameters' schema. */
static int tool_call_gbnf(const json_t *tools, const char *only, bool parallel, sg_buf *out, sg_error *err) {
    sg_buf rules, alts;
    sg_buf_init(&rules);
    sg_buf_init(&alts);
    int rc = -1, n = 0;
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        const json_t *fn = json_object_get(t, "function");
        if (!fn) fn = t;
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name || (only && strcmp(name, only) != 0)) continue;
        const json_t *params = json_object_get(fn, "parameters");
        char prefix[32];
        snprintf(prefix, sizeof prefix, "t%d-", n);
        sg_buf_printf(&alts, "%s\"\\\"name\\\": \\\"", n ? " | " : "");
        json_t *js = json_string(name);
        char *quoted = json_dumps(js, JSON_ENCODE_ANY);   /* the name as JSON writes it */
        json_decref(js);
        /* quoted is "\"NAME\"": the literal without its own quotes */
        size_t ql = strlen(quoted);
        quoted[ql - 1] = '\0';
        append_literal(&alts, quoted + 1);
        free(quoted);
        sg_buf_printf(&alts, "\\\", \\\"arguments\\\": \" %sroot", prefix);
        if (json_is_object(params)) {
            char *text = json_dumps(params, JSON_COMPACT);
            sg_buf g;
            sg_buf_init(&g);
            int bad = json_schema_to_gbnf(text, strlen(text), &g, err);
            free(text);
            if (bad) {
                char m[sizeof err->msg];
                snprintf(m, sizeof m, "%s", err->msg);
                sg_fail(err, "tools[%zu].function.parameters: %s", i, m);
                sg_buf_free(&g);
                goto done;
            }
            append_prefixed(&rules, g.data, g.len, prefix);
            sg_buf_free(&g);
        } else {
            sg_buf_printf(&rules, "%sroot ::= \"{}\"\n", prefix);   /* no parameters */
        }
        n++;
    }
    if (!n) {
        if (only) sg_fail(err, "tool_choice names the function '%s', which tools does not declare", only);
        else sg_fail(err, "tool_choice \"required\" needs at least one function in tools");
        goto done;
    }
    sg_buf_printf(out, "root ::= call%s\n", parallel ? " ( \"\\n\" call )*" : "");
    sg_buf_puts(out, "call ::= \"<tool_call>\\n{\" named \"}\\n</tool_call>\"\n");
    sg_buf_puts(out, "named ::= ");
    sg_buf_append(out, alts.data, alts.len);
    sg_buf_puts(out, "\n");
    sg_buf_append(out, rules.data, rules.len);
    rc = 0;
done:
    sg_buf_free(&rules);
    sg_buf_free(&alts);
    return rc;
}

int local_constraint_grammar(const json_t *request, sg_grammar **out, sg_error *err) {
    *out = NULL;
    const json_t *tc = json_object_get(request, "tool_choice");
    const json_t *tools = json_object_get(request, "tools");
    const char *only = NULL;
    bool forced = false;
    if (json_is_string(tc) && !strcmp(json_string_value(tc), "required")) forced = true;
    else if (json_is_object(tc)) {
        only = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        forced = only != NULL;
    }
    if (forced) {
        if (!json_is_array(tools) || !json_array_size(tools))
            return sg_fail(err, "tool_choice forces a tool call, but tools is empty");
        sg_buf g;
        sg_buf_init(&g);
        int rc = tool_call_gbnf(tools, only, !json_is_false(json_object_get(request, "parallel_tool_calls")), &g, err);
        if (!rc) {
            *out = grammar_compile_cached(GRAMMAR_GBNF, g.data, g.len, err);
            if (!*out) rc = -1;
        }
        sg_buf_free(&g);
        return rc;
    }
    const json_t *rf = json_object_get(request, "response_format");
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!type || !strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object")) {
        *out = grammar_compile_cached(GRAMMAR_JSON_OBJECT, NULL, 0, err);
        return *out ? 0 : -1;
    }
    if (!strcmp(type, "json_schema")) {
        const json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
        if (!json_is_object(schema)) {   /* OpenAI: the schema may be left out; any object then */
            *out = grammar_compile_cached(GRAMMAR_JSON_OBJECT, NULL, 0, err);
            return *out ? 0 : -1;
        }
        char *text = json_dumps(schema, JSON_COMPACT);
        *out = grammar_compile_cached(GRAMMAR_JSON_SCHEMA, text, strlen(text), err);
        free(text);
        if (*out) return 0;
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        return sg_fail(err, "response_format.json_schema.schema: %s", m);
    }
    return sg_fail(err, "response_format.type '%s' is not supported by the local model", type);
}

bool local_constraint_offers_tools(const json_t *request) {
    const json_t *tc = json_object_get(request, "tool_choice");
    return !(json_is_string(tc) && !strcmp(json_string_value(tc), "none"));
}
