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

/* Does tools declare a function tool_call_gbnf can name? */
static bool has_function(const json_t *tools) {
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        const json_t *fn = json_object_get(t, "function");
        if (json_string_value(json_object_get(fn ? fn : t, "name"))) return true;
    }
    return false;
}

/* The GBNF of response_format into *out: 1 when it constrains, 0 when it does not (text
 * or absent), -1 with err. */
static int response_format_gbnf(const json_t *request, sg_buf *out, sg_error *err) {
    const json_t *rf = json_object_get(request, "response_format");
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!type || !strcmp(type, "text")) return 0;
    const json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    /* OpenAI: a json_schema without its schema is any object */
    if (!strcmp(type, "json_object") || (!strcmp(type, "json_schema") && !json_is_object(schema))) {
        sg_buf_puts(out, json_schema_object_gbnf());
        return 1;
    }
    if (strcmp(type, "json_schema") != 0)
        return sg_fail(err, "response_format.type '%s' is not supported by the local model", type);
    char *text = json_dumps(schema, JSON_COMPACT);
    int rc = json_schema_to_gbnf(text, strlen(text), out, err);
    free(text);
    if (rc) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        return sg_fail(err, "response_format.json_schema.schema: %s", m);
    }
    return 1;
}

sg_grammar *local_constraint_compile(const char *gbnf, size_t len, const char *what, sg_error *err) {
    sg_grammar *out = grammar_compile_cached(GRAMMAR_GBNF, gbnf, len, err);
    if (!out) {
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s", err->msg);
        sg_fail(err, "%s: %s", what, m);
    }
    return out;
}

int local_constraint_gbnf(const json_t *request, sg_buf *gbnf, bool *lazy, const char **what, sg_error *err) {
    *lazy = false;
    *what = NULL;
    const json_t *tc = json_object_get(request, "tool_choice");
    const json_t *tools = json_object_get(request, "tools");
    bool parallel = !json_is_false(json_object_get(request, "parallel_tool_calls"));
    const char *only = NULL;
    bool forced = false, none = false;
    if (json_is_string(tc)) {
        forced = !strcmp(json_string_value(tc), "required");
        none = !strcmp(json_string_value(tc), "none");
    } else if (json_is_object(tc)) {
        only = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        forced = only != NULL;
    }
    int rc = -1;
    sg_buf calls, rf;
    sg_buf_init(&calls);
    sg_buf_init(&rf);
    if (forced) {
        if (!json_is_array(tools) || !json_array_size(tools)) {
            sg_fail(err, "tool_choice forces a tool call, but tools is empty");
            goto done;
        }
        if (tool_call_gbnf(tools, only, parallel, gbnf, err)) goto done;
        *what = "tools";
        rc = 0;
        goto done;
    }
    int has_rf = response_format_gbnf(request, &rf, err);
    if (has_rf < 0) goto done;
    bool auto_calls = !none && json_is_array(tools) && has_function(tools);
    if (auto_calls && tool_call_gbnf(tools, NULL, parallel, &calls, err)) goto done;
    if (auto_calls && has_rf) {
        /* the answer is the response_format's text or tool calls: one grammar, not lazy */
        sg_buf_puts(gbnf, "root ::= rf-root | tc-root\n");
        append_prefixed(gbnf, rf.data, rf.len, "rf-");
        append_prefixed(gbnf, calls.data, calls.len, "tc-");
        *what = "response_format and tools";
    } else if (auto_calls) {
        /* free text, or tool calls from their first "<tool_call>" on */
        sg_buf_append(gbnf, calls.data, calls.len);
        *what = "tools";
        *lazy = true;
    } else if (has_rf) {
        sg_buf_append(gbnf, rf.data, rf.len);
        *what = "response_format";
    }
    rc = 0;
done:
    sg_buf_free(&calls);
    sg_buf_free(&rf);
    return rc;
}

int local_constraint_grammar(const json_t *request, sg_grammar **out, bool *lazy, sg_error *err) {
    *out = NULL;
    sg_buf gbnf;
    sg_buf_init(&gbnf);
    const char *what;
    int rc = local_constraint_gbnf(request, &gbnf, lazy, &what, err);
    if (!rc && what && !(*out = local_constraint_compile(gbnf.data, gbnf.len, what, err))) rc = -1;
    if (rc) *lazy = false;
    sg_buf_free(&gbnf);
    return rc;
}

bool local_constraint_offers_tools(const json_t *request) {
    const json_t *tc = json_object_get(request, "tool_choice");
    return !(json_is_string(tc) && !strcmp(json_string_value(tc), "none"));
}
