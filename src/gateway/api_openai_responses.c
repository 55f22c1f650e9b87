/* api_openai_responses.c: the OpenAI Responses client API (POST /v1/responses, and GET /
 * DELETE /v1/responses/{id}).
 *
 * The request is translated at once into the canonical chat-completions body, so every
 * provider serves it as it serves a chat request:
 *   input (a string, or items)   -> messages: message items (input_text / output_text /
 *                                   input_image parts), function_call items (assistant
 *                                   tool_calls), function_call_output items (tool
 *                                   messages), item_reference (an output item of a stored
 *                                   response, by id)
 *   instructions                 -> a leading system message (not carried over by
 *                                   previous_response_id, as OpenAI does)
 *   previous_response_id         -> the stored conversation before this input
 *   tools (function), tool_choice, max_output_tokens (max_completion_tokens), temperature,
 *   top_p, parallel_tool_calls, reasoning.effort (reasoning_effort), text.format
 *   (json_object / json_schema: response_format)
 * Other members are ignored, as OpenAI ignores what it does not know; hosted tools
 * (web_search, file_search...) are a 400, since no provider here runs them.
 *
 * The answer is rendered as a Response object, or as its typed SSE events with a
 * sequence_number. With "store" (default true) the Response and the conversation are
 * kept in the response store (response_store.h), owned by the request's gateway key.
 *
 * Output item ids are "msg_HEX_N" / "fc_HEX_N" / "rs_HEX_N" for the response "resp_HEX"
 * and output index N, so that an item_reference finds its response without an index. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "gateway/api.h"
#include "gateway/codec_openai.h"
#include "gateway/response_store.h"

#define RESP_MAX_INPUT_ITEMS 100000   /* input items in one request */
#define RESP_ID_HEX 32

typedef struct resp_state {
    json_t *echo;                  /* the request fields the Response object repeats */
    json_t *conv;                  /* the conversation without instructions: stored */
    json_t *items;                 /* the input items (carried over, then this input): stored */
    bool store;
    char hex[RESP_ID_HEX + 1];     /* the response id's, chosen at parse for the items' ids */
} resp_state;
_Static_assert(sizeof(resp_state) <= GW_API_STATE_BYTES, "GW_API_STATE_BYTES holds the state");

/* ---- parsing ------------------------------------------------------------------------- */

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static int bad_type(gw_api_error *e, const char *param, const char *want, const json_t *got) {
    if (!got) return gw_api_fail(e, 400, "missing_required_parameter", param, "Missing required parameter: '%s'.", param);
    return gw_api_fail(e, 400, "invalid_type", param, "Invalid type for '%s': expected %s, but got %s instead.", param,
                       want, type_name(got));
}

/* "input[3].call_id" */
static const char *member(char *buf, const char *param, const char *key) {
    snprintf(buf, 96, "%s.%s", param, key);
    return buf;
}

static const char *jstr(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void new_hex(char *hex);

/* An input item as input_items lists it: with an id ("msg_HEX_inN": never an output
 * item's, so an item_reference to it is not found), a message's string content as one
 * text part, and a status. */
static json_t *input_item(const json_t *it, const char *hex, size_t n) {
    json_t *o = json_deep_copy(it);
    const char *type = jstr(o, "type");
    if (!type && jstr(o, "role")) json_object_set_new(o, "type", json_string(type = "message"));
    if (!type) return o;
    if (!jstr(o, "id")) {
        const char *pre = !strcmp(type, "message") ? "msg" : !strcmp(type, "function_call") ? "fc"
                        : !strcmp(type, "function_call_output") ? "fco" : !strcmp(type, "reasoning") ? "rs" : "item";
        char id[80];
        snprintf(id, sizeof id, "%s_%s_in%zu", pre, hex, n);
        json_object_set_new(o, "id", json_string(id));
    }
    if (!strcmp(type, "message")) {
        json_t *c = json_object_get(o, "content");
        const char *role = jstr(o, "role");
        if (json_is_string(c))
            json_object_set_new(o, "content", json_pack("[{s:s,s:O}]", "type", role && !strcmp(role, "assistant")
                                                        ? "output_text" : "input_text", "text", c));
    }
    if (strcmp(type, "item_reference") && !json_object_get(o, "status")) json_object_set_new(o, "status", json_string("completed"));
    return o;
}


/* The text of a content value: a string, or the texts of its text parts joined. */
static int content_text(const json_t *c, const char *param, sg_buf *out, gw_api_error *e) {
    if (json_is_string(c)) { sg_buf_append(out, json_string_value(c), json_string_length(c)); return 0; }
    if (!json_is_array(c)) return bad_type(e, param, "a string or an array of content parts", c);
    size_t i;
    json_t *p;
    json_array_foreach(c, i, p) {
        const char *t = jstr(p, "text");
        if (!t) t = jstr(p, "refusal");
        if (!json_is_object(p) || !t)
            return gw_api_fail(e, 400, "invalid_value", param, "Invalid content part %zu of '%s': expected a text part.", i, param);
        sg_buf_append(out, t, strlen(t));
    }
    return 0;
}

/* A user message's content: a string, or chat parts (text, image_url). */
static json_t *user_content(const json_t *c, const char *param, gw_api_error *e) {
    if (json_is_string(c)) return json_incref((json_t *)c);
    if (!json_is_array(c)) { bad_type(e, param, "a string or an array of content parts", c); return NULL; }
    json_t *parts = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(c, i, p) {
        const char *t = jstr(p, "type");
        if (!json_is_object(p) || !t) {
            json_decref(parts);
            gw_api_fail(e, 400, "invalid_value", param, "Invalid content part %zu of '%s': expected an object with a type.", i, param);
            return NULL;
        }
        if (!strcmp(t, "input_text") || !strcmp(t, "output_text") || !strcmp(t, "text")) {
            json_t *tx = json_object_get(p, "text");
            if (!json_is_string(tx)) { json_decref(parts); bad_type(e, param, "a string text", tx); return NULL; }
            json_array_append_new(parts, json_pack("{s:s,s:O}", "type", "text", "text", tx));
        } else if (!strcmp(t, "input_image") && json_is_string(json_object_get(p, "image_url"))) {
            json_t *img = json_pack("{s:O}", "url", json_object_get(p, "image_url"));
            if (jstr(p, "detail")) json_object_set(img, "detail", json_object_get(p, "detail"));
            json_array_append_new(parts, json_pack("{s:s,s:o}", "type", "image_url", "image_url", img));
        } else {
            json_decref(parts);
            gw_api_fail(e, 400, "unsupported_value", param, "Content part type '%s' is not supported by this gateway "
                        "(input_text, output_text, input_image with an image_url).", t);
            return NULL;
        }
    }
    return parts;
}

/* The last message if it is an assistant's, else a new one (content null). */
static json_t *assistant_tail(json_t *msgs) {
    size_t n = json_array_size(msgs);
    json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
    const char *role = last ? jstr(last, "role") : NULL;
    if (role && !strcmp(role, "assistant")) return last;
    json_t *m = json_pack("{s:s,s:n}", "role", "assistant", "content");
    json_array_append_new(msgs, m);
    return m;
}

static int add_item(json_t *msgs, const json_t *it, const char *param, const rstore_who *who, int depth, gw_api_error *e);

/* An item_reference: an output item of a stored response ("msg_HEX_N", "fc_HEX_N"). */
static int add_reference(json_t *msgs, const char *id, const char *param, const rstore_who *who, int depth,
                         gw_api_error *e) {
    const char *u = strchr(id, '_');
    const char *u2 = u ? strchr(u + 1, '_') : NULL;
    char rid[64];
    if (u && u2 && u2 - u - 1 == RESP_ID_HEX && depth == 0) {
        snprintf(rid, sizeof rid, "resp_%.*s", RESP_ID_HEX, u + 1);
        rstore_entry en;
        if (!rstore_get(rid, who, (int64_t)time(NULL), &en)) {
            json_t *resp = json_loads(en.response, 0, NULL);
            rstore_entry_free(&en);
            size_t i;
            json_t *o;
            json_array_foreach(json_object_get(resp, "output"), i, o) {
                const char *oid = jstr(o, "id");
                if (oid && !strcmp(oid, id)) {
                    int rc = add_item(msgs, o, param, who, depth + 1, e);
                    json_decref(resp);
                    return rc;
                }
            }
            json_decref(resp);
        }
    }
    return gw_api_fail(e, 400, "invalid_value", param, "Item with id '%.200s' not found.", id);
}

static int add_item(json_t *msgs, const json_t *it, const char *param, const rstore_who *who, int depth, gw_api_error *e) {
    if (!json_is_object(it)) return bad_type(e, param, "an object", it);
    const char *type = jstr(it, "type");
    if (!type && jstr(it, "role")) type = "message";
    if (!type) return gw_api_fail(e, 400, "missing_required_parameter", param, "Missing required parameter: '%s.type'.", param);
    if (!strcmp(type, "message")) {
        const char *role = jstr(it, "role");
        json_t *c = json_object_get(it, "content");
        if (!role) return gw_api_fail(e, 400, "missing_required_parameter", param, "Missing required parameter: '%s.role'.", param);
        if (!c) return gw_api_fail(e, 400, "missing_required_parameter", param, "Missing required parameter: '%s.content'.", param);
        if (!strcmp(role, "user")) {
            json_t *uc = user_content(c, param, e);
            if (!uc) return -1;
            json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "user", "content", uc));
            return 0;
        }
        if (strcmp(role, "assistant") && strcmp(role, "system") && strcmp(role, "developer"))
            return gw_api_fail(e, 400, "invalid_value", param, "Invalid value: '%.64s'. Supported values are: 'user', "
                               "'assistant', 'system', and 'developer'.", role);
        sg_buf t;
        sg_buf_init(&t);
        if (content_text(c, param, &t, e)) { sg_buf_free(&t); return -1; }
        json_t *s = json_stringn_nocheck(t.data ? t.data : "", t.len);
        sg_buf_free(&t);
        if (!strcmp(role, "assistant")) {
            json_t *m = assistant_tail(msgs);
            const char *prev = jstr(m, "content");
            if (prev && *prev) {   /* two assistant texts in a row: one message */
                sg_buf j;
                sg_buf_init(&j);
                sg_buf_puts(&j, prev);
                sg_buf_append(&j, json_string_value(s), json_string_length(s));
                json_decref(s);
                s = json_stringn_nocheck(j.data, j.len);
                sg_buf_free(&j);
            }
            json_object_set_new(m, "content", s);
        } else {
            json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "system", "content", s));
        }
        return 0;
    }
    if (!strcmp(type, "function_call")) {
        json_t *cid = json_object_get(it, "call_id"), *name = json_object_get(it, "name"), *args = json_object_get(it, "arguments");
        char p[96];
        if (!json_is_string(cid)) return bad_type(e, member(p, param, "call_id"), "a string", cid);
        if (!json_is_string(name)) return bad_type(e, member(p, param, "name"), "a string", name);
        if (!json_is_string(args)) return bad_type(e, member(p, param, "arguments"), "a string", args);
        json_t *m = assistant_tail(msgs);
        json_t *calls = json_object_get(m, "tool_calls");
        if (!calls) { calls = json_array(); json_object_set_new(m, "tool_calls", calls); }
        json_array_append_new(calls, json_pack("{s:O,s:s,s:{s:O,s:O}}", "id", cid, "type", "function", "function", "name",
                                               name, "arguments", args));
        return 0;
    }
    if (!strcmp(type, "function_call_output")) {
        json_t *cid = json_object_get(it, "call_id"), *out = json_object_get(it, "output");
        char p[96];
        if (!json_is_string(cid)) return bad_type(e, member(p, param, "call_id"), "a string", cid);
        sg_buf t;
        sg_buf_init(&t);
        if (content_text(out, member(p, param, "output"), &t, e)) { sg_buf_free(&t); return -1; }
        json_array_append_new(msgs, json_pack("{s:s,s:O,s:s%}", "role", "tool", "tool_call_id", cid, "content",
                                              t.data ? t.data : "", t.len));
        sg_buf_free(&t);
        return 0;
    }
    if (!strcmp(type, "item_reference")) {
        const char *id = jstr(it, "id");
        char p[96];
        if (!id) return bad_type(e, member(p, param, "id"), "a string", json_object_get(it, "id"));
        return add_reference(msgs, id, param, who, depth, e);
    }
    if (!strcmp(type, "reasoning")) return 0;   /* providers get no reasoning back */
    return gw_api_fail(e, 400, "unsupported_value", param, "Input item type '%.64s' is not supported by this gateway "
                       "(message, function_call, function_call_output, item_reference, reasoning).", type);
}

static int read_tools(json_t *canon, const json_t *tools, gw_api_error *e) {
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return bad_type(e, "tools", "an array", tools);
    if (!json_array_size(tools)) return 0;
    json_t *out = json_array();
    json_object_set_new(canon, "tools", out);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        char param[48];
        snprintf(param, sizeof param, "tools[%zu]", i);
        if (!json_is_object(t)) return bad_type(e, param, "an object", t);
        const char *type = jstr(t, "type");
        if (!type || strcmp(type, "function"))
            return gw_api_fail(e, 400, "unsupported_value", param, "Tool type '%.64s' is not supported by this gateway: "
                               "only function tools.", type ? type : "(none)");
        json_t *name = json_object_get(t, "name");
        if (!json_is_string(name)) return bad_type(e, "tools.name", "a string", name);
        json_t *fn = json_pack("{s:O}", "name", name);
        json_t *v;
        if ((v = json_object_get(t, "description")) && json_is_string(v)) json_object_set(fn, "description", v);
        if ((v = json_object_get(t, "parameters")) && json_is_object(v)) json_object_set(fn, "parameters", v);
        if ((v = json_object_get(t, "strict")) && json_is_boolean(v)) json_object_set(fn, "strict", v);
        json_array_append_new(out, json_pack("{s:s,s:o}", "type", "function", "function", fn));
    }
    return 0;
}

static int read_tool_choice(json_t *canon, const json_t *tc, gw_api_error *e) {
    if (!tc || json_is_null(tc)) return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (strcmp(s, "auto") && strcmp(s, "none") && strcmp(s, "required"))
            return gw_api_fail(e, 400, "invalid_value", "tool_choice", "Invalid value: '%.64s'. Supported values are: "
                               "'none', 'auto', and 'required'.", s);
        json_object_set(canon, "tool_choice", (json_t *)tc);
        return 0;
    }
    const char *type = jstr(tc, "type");
    if (!json_is_object(tc) || !type) return bad_type(e, "tool_choice", "a string or an object", tc);
    if (strcmp(type, "function") || !jstr(tc, "name"))
        return gw_api_fail(e, 400, "unsupported_value", "tool_choice", "tool_choice of type '%.64s' is not supported by "
                           "this gateway.", type);
    json_object_set_new(canon, "tool_choice", json_pack("{s:s,s:{s:O}}", "type", "function", "function", "name",
                                                        json_object_get(tc, "name")));
    return 0;
}

static int read_text_format(json_t *canon, const json_t *text, gw_api_error *e) {
    if (!text || json_is_null(text)) return 0;
    if (!json_is_object(text)) return bad_type(e, "text", "an object", text);
    const json_t *f = json_object_get(text, "format");
    if (!f || json_is_null(f)) return 0;
    const char *type = jstr(f, "type");
    if (!json_is_object(f) || !type) return bad_type(e, "text.format", "an object with a type", f);
    if (!strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object")) {
        json_object_set_new(canon, "response_format", json_pack("{s:s}", "type", "json_object"));
        return 0;
    }
    if (!strcmp(type, "json_schema")) {
        json_t *name = json_object_get(f, "name"), *schema = json_object_get(f, "schema");
        if (!json_is_string(name)) return bad_type(e, "text.format.name", "a string", name);
        if (!json_is_object(schema)) return bad_type(e, "text.format.schema", "an object", schema);
        json_t *js = json_pack("{s:O,s:O}", "name", name, "schema", schema);
        json_t *v;
        if ((v = json_object_get(f, "strict")) && json_is_boolean(v)) json_object_set(js, "strict", v);
        if ((v = json_object_get(f, "description")) && json_is_string(v)) json_object_set(js, "description", v);
        json_object_set_new(canon, "response_format", json_pack("{s:s,s:o}", "type", "json_schema", "json_schema", js));
        return 0;
    }
    return gw_api_fail(e, 400, "invalid_value", "text.format.type", "Invalid value: '%.64s'. Supported values are: "
                       "'text', 'json_object', and 'json_schema'.", type);
}

/* The Response object's echo of the request (what the fake and OpenAI repeat). */
static json_t *make_echo(const json_t *j) {
    json_t *echo = json_object();
    static const char *const keys[] = {"instructions", "max_output_tokens", "metadata", "parallel_tool_calls",
                                       "previous_response_id", "temperature", "text", "tool_choice", "tools",
                                       "top_p", "truncation", "user", "reasoning"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(j, keys[i]);
        json_object_set(echo, keys[i], v ? v : json_null());
    }
    if (json_is_null(json_object_get(echo, "tools"))) json_object_set_new(echo, "tools", json_array());
    if (json_is_null(json_object_get(echo, "tool_choice"))) json_object_set_new(echo, "tool_choice", json_string("auto"));
    if (json_is_null(json_object_get(echo, "parallel_tool_calls"))) json_object_set_new(echo, "parallel_tool_calls", json_true());
    if (json_is_null(json_object_get(echo, "metadata"))) json_object_set_new(echo, "metadata", json_object());
    if (json_is_null(json_object_get(echo, "text")))
        json_object_set_new(echo, "text", json_pack("{s:{s:s}}", "format", "type", "text"));
    if (json_is_null(json_object_get(echo, "truncation"))) json_object_set_new(echo, "truncation", json_string("disabled"));
    if (json_is_null(json_object_get(echo, "temperature"))) json_object_set_new(echo, "temperature", json_real(1));
    if (json_is_null(json_object_get(echo, "top_p"))) json_object_set_new(echo, "top_p", json_real(1));
    return echo;
}

static int resp_parse(gw_request *r, gw_api_error *e) {
    resp_state *s = (resp_state *)r->state;
    *s = (resp_state){0};
    json_error_t jerr;
    json_t *j = json_loadb(r->raw, r->raw_len, JSON_DECODE_ANY, &jerr);
    if (!j)
        return gw_api_fail(e, 400, NULL, NULL, "We could not parse the JSON body of your request. (HINT: This likely means "
                           "you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "
                           "was sent was not valid JSON.)");
    int rc = -1;
    json_t *canon = json_object(), *msgs = json_array();
    rstore_who who = {r->key_id, r->key_admin};
    if (!json_is_object(j)) { bad_type(e, "body", "an object", j); goto out; }

    json_t *model = json_object_get(j, "model");
    if (!model) { gw_api_fail(e, 400, "missing_required_parameter", "model", "Missing required parameter: 'model'."); goto out; }
    if (!json_is_string(model)) { bad_type(e, "model", "a string", model); goto out; }
    if (!json_string_length(model) || gw_name_has_control(json_string_value(model), json_string_length(model))) {
        gw_api_fail(e, 400, "invalid_value", "model", "Invalid value for 'model': an empty name or one with a control character.");
        goto out;
    }
    json_object_set(canon, "model", model);

    json_t *v = json_object_get(j, "stream");
    if (v && !json_is_null(v) && !json_is_boolean(v)) { bad_type(e, "stream", "a boolean", v); goto out; }
    bool stream = json_is_true(v);
    v = json_object_get(j, "store");
    if (v && !json_is_null(v) && !json_is_boolean(v)) { bad_type(e, "store", "a boolean", v); goto out; }
    s->store = !json_is_false(v);

    v = json_object_get(j, "instructions");
    if (v && !json_is_null(v) && !json_is_string(v)) { bad_type(e, "instructions", "a string", v); goto out; }
    if (json_is_string(v) && json_string_length(v))
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", v));

    /* the conversation: the previous response's, then this input */
    json_t *conv = json_array(), *items = json_array();
    s->conv = conv;
    s->items = items;
    new_hex(s->hex);
    v = json_object_get(j, "previous_response_id");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) { bad_type(e, "previous_response_id", "a string", v); goto out; }
        rstore_entry en;
        json_t *prev = NULL, *prev_items = NULL, *prev_resp = NULL;
        if (!rstore_get(json_string_value(v), &who, (int64_t)time(NULL), &en)) {
            prev = json_loads(en.messages, 0, NULL);
            prev_items = json_loads(en.input_items ? en.input_items : "[]", 0, NULL);
            prev_resp = json_loads(en.response, 0, NULL);
            rstore_entry_free(&en);
        }
        if (!json_is_array(prev)) {
            json_decref(prev);
            json_decref(prev_items);
            json_decref(prev_resp);
            gw_api_fail(e, 400, "previous_response_not_found", "previous_response_id",
                        "Previous response with id '%.200s' not found.", json_string_value(v));
            goto out;
        }
        json_array_extend(conv, prev);
        /* what OpenAI lists as this response's input: the previous one's, and its output */
        if (json_is_array(prev_items)) json_array_extend(items, prev_items);
        if (json_is_array(json_object_get(prev_resp, "output"))) json_array_extend(items, json_object_get(prev_resp, "output"));
        json_decref(prev);
        json_decref(prev_items);
        json_decref(prev_resp);
    }
    json_t *input = json_object_get(j, "input");
    if (!input || json_is_null(input)) {
        if (!json_array_size(conv)) { gw_api_fail(e, 400, "missing_required_parameter", "input", "Missing required parameter: 'input'."); goto out; }
    } else if (json_is_string(input)) {
        json_array_append_new(conv, json_pack("{s:s,s:O}", "role", "user", "content", input));
        json_t *m = json_pack("{s:s,s:O}", "role", "user", "content", input);
        json_array_append_new(items, input_item(m, s->hex, 0));
        json_decref(m);
    } else if (json_is_array(input)) {
        if (json_array_size(input) > RESP_MAX_INPUT_ITEMS) {
            gw_api_fail(e, 400, "array_above_max_length", "input", "Invalid 'input': array too long. Expected an array "
                        "with maximum length %d, but got an array with length %zu instead.", RESP_MAX_INPUT_ITEMS,
                        json_array_size(input));
            goto out;
        }
        size_t i;
        json_t *it;
        json_array_foreach(input, i, it) {
            char param[48];
            snprintf(param, sizeof param, "input[%zu]", i);
            if (add_item(conv, it, param, &who, 0, e)) goto out;
            json_array_append_new(items, input_item(it, s->hex, i));
        }
    } else {
        bad_type(e, "input", "a string or an array of input items", input);
        goto out;
    }
    if (!json_array_size(conv)) { gw_api_fail(e, 400, "invalid_value", "input", "Invalid 'input': no input items."); goto out; }
    json_array_extend(msgs, conv);
    json_object_set(canon, "messages", msgs);

    if (read_tools(canon, json_object_get(j, "tools"), e) || read_tool_choice(canon, json_object_get(j, "tool_choice"), e) ||
        read_text_format(canon, json_object_get(j, "text"), e))
        goto out;
    v = json_object_get(j, "max_output_tokens");
    int64_t max_tokens = -1;
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) { bad_type(e, "max_output_tokens", "an integer", v); goto out; }
        if (json_integer_value(v) < 1) {
            gw_api_fail(e, 400, "integer_below_min_value", "max_output_tokens", "Invalid 'max_output_tokens': integer below "
                        "minimum value. Expected a value >= 1, but got %lld instead.", (long long)json_integer_value(v));
            goto out;
        }
        max_tokens = json_integer_value(v);
        json_object_set(canon, "max_completion_tokens", v);
    }
    static const char *const nums[] = {"temperature", "top_p"};
    for (size_t i = 0; i < 2; i++) {
        v = json_object_get(j, nums[i]);
        if (!v || json_is_null(v)) continue;
        if (!json_is_number(v)) { bad_type(e, nums[i], "a number", v); goto out; }
        json_object_set(canon, nums[i], v);
    }
    v = json_object_get(j, "parallel_tool_calls");
    if (json_is_boolean(v) && json_object_get(canon, "tools")) json_object_set(canon, "parallel_tool_calls", v);
    v = json_object_get(j, "reasoning");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) { bad_type(e, "reasoning", "an object", v); goto out; }
        json_t *effort = json_object_get(v, "effort");
        if (json_is_string(effort)) json_object_set(canon, "reasoning_effort", effort);
    }
    if (stream) {
        json_object_set_new(canon, "stream", json_true());
        json_object_set_new(canon, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    if (oai_validate_request(canon, e)) goto out;

    s->echo = make_echo(j);
    r->canon.body = canon;
    canon = NULL;
    r->canon.model = json_string_value(json_object_get(r->canon.body, "model"));
    r->canon.stream = stream;
    r->canon.include_usage = true;
    r->canon.max_tokens = max_tokens;
    r->canon.has_tools = json_object_get(r->canon.body, "tools") != NULL;
    rc = 0;
out:
    json_decref(canon);
    json_decref(msgs);
    json_decref(j);
    if (rc) {
        json_decref(s->conv);
        json_decref(s->items);
        s->conv = s->items = NULL;
    }
    return rc;
}

static int resp_canonical(gw_request *r, gw_api_error *e) {
    (void)r;   /* parse built it: only reached after a failed parse */
    return gw_api_fail(e, 500, "internal_error", NULL, "the request has no canonical body");
}

static void resp_request_free(gw_request *r) {
    resp_state *s = (resp_state *)r->state;
    json_decref(s->echo);
    json_decref(s->conv);
    json_decref(s->items);
    s->echo = s->conv = s->items = NULL;
}

/* ---- rendering ----------------------------------------------------------------------- */

typedef enum { IT_MSG, IT_FC, IT_RS } item_kind;

typedef struct resp_item {
    item_kind kind;
    int canon_index;               /* FC: the event's index */
    char *call_id, *name;          /* FC; owned */
    sg_buf text;                   /* text, arguments or reasoning */
} resp_item;

typedef struct resp_render {
    sg_buf *out;
    const gw_request *req;
    bool stream, started, open, ended, failed, have_finish;
    char hex[RESP_ID_HEX + 1];
    char model[192];
    char finish[24];
    int64_t created;
    long seq;
    gw_usage usage;
    gw_api_error error;
    resp_item *items;
    size_t n, cap;
} resp_render;
_Static_assert(sizeof(resp_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static void put_str(sg_buf *b, const char *s) { sg_buf_json_str(b, s, strlen(s)); }
static long long nz(int64_t v) { return v < 0 ? 0 : (long long)v; }

static void new_hex(char *hex) {
    unsigned char rnd[RESP_ID_HEX / 2];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (unsigned char)((ts.tv_nsec >> (i % 8)) ^ (i * 131) ^ rand());
    }
    for (size_t i = 0; i < sizeof rnd; i++) sprintf(hex + 2 * i, "%02x", rnd[i]);
}

static void put_item_id(resp_render *r, sg_buf *b, size_t i) {
    static const char *const pre[] = {"msg", "fc", "rs"};
    sg_buf_printf(b, "\"%s_%s_%zu\"", pre[r->items[i].kind], r->hex, i);
}

static void put_usage(sg_buf *b, const gw_usage *u) {
    long long in = nz(u->input) + nz(u->cache_read) + nz(u->cache_write), out = nz(u->output);
    sg_buf_printf(b, "{\"input_tokens\":%lld,\"input_tokens_details\":{\"cached_tokens\":%lld},\"output_tokens\":%lld,"
                  "\"output_tokens_details\":{\"reasoning_tokens\":%lld},\"total_tokens\":%lld}",
                  in, nz(u->cache_read), out, nz(u->reasoning), in + out);
}

/* One output item; done: its final form (status completed), else as first announced. */
static void put_item(resp_render *r, sg_buf *b, size_t i, bool done) {
    const resp_item *it = &r->items[i];
    const char *t = it->text.data ? it->text.data : "";
    size_t len = done ? it->text.len : 0;
    const char *status = !done ? "in_progress" : r->have_finish && !strcmp(r->finish, "length") ? "incomplete" : "completed";
    sg_buf_puts(b, "{\"id\":");
    put_item_id(r, b, i);
    if (it->kind == IT_MSG) {
        sg_buf_printf(b, ",\"type\":\"message\",\"status\":\"%s\",\"role\":\"assistant\",\"content\":[", status);
        if (done) {
            sg_buf_puts(b, "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":");
            sg_buf_json_str(b, t, len);
            sg_buf_putc(b, '}');
        }
        sg_buf_puts(b, "]}");
    } else if (it->kind == IT_FC) {
        sg_buf_printf(b, ",\"type\":\"function_call\",\"status\":\"%s\",\"arguments\":", status);
        sg_buf_json_str(b, t, len);
        sg_buf_puts(b, ",\"call_id\":");
        put_str(b, it->call_id);
        sg_buf_puts(b, ",\"name\":");
        put_str(b, it->name);
        sg_buf_putc(b, '}');
    } else {
        sg_buf_puts(b, ",\"type\":\"reasoning\",\"summary\":[],\"content\":[");
        if (done) {
            sg_buf_puts(b, "{\"type\":\"reasoning_text\",\"text\":");
            sg_buf_json_str(b, t, len);
            sg_buf_putc(b, '}');
        }
        sg_buf_puts(b, "]}");
    }
}

static const char *final_status(const resp_render *r) {
    if (r->failed) return "failed";
    if (r->have_finish && (!strcmp(r->finish, "length") || !strcmp(r->finish, "content_filter"))) return "incomplete";
    return "completed";
}

/* The Response object. status "in_progress": no output, usage null. */
static void put_response(resp_render *r, sg_buf *b, const char *status) {
    bool fin = strcmp(status, "in_progress") != 0;
    const resp_state *s = (const resp_state *)r->req->state;
    sg_buf_printf(b, "{\"id\":\"resp_%s\",\"object\":\"response\",\"created_at\":%lld,\"status\":\"%s\","
                  "\"background\":false,\"error\":", r->hex, (long long)r->created, status);
    if (r->failed) {
        sg_buf_puts(b, "{\"code\":");
        put_str(b, r->error.code[0] ? r->error.code : "server_error");
        sg_buf_puts(b, ",\"message\":");
        put_str(b, r->error.message);
        sg_buf_putc(b, '}');
    } else sg_buf_puts(b, "null");
    sg_buf_puts(b, ",\"incomplete_details\":");
    if (!strcmp(status, "incomplete"))
        sg_buf_printf(b, "{\"reason\":\"%s\"}", !strcmp(r->finish, "length") ? "max_output_tokens" : "content_filter");
    else sg_buf_puts(b, "null");
    sg_buf_puts(b, ",\"model\":");
    put_str(b, r->model);
    sg_buf_puts(b, ",\"output\":[");
    for (size_t i = 0; fin && i < r->n; i++) {
        if (i) sg_buf_putc(b, ',');
        put_item(r, b, i, true);
    }
    sg_buf_puts(b, "]");
    const char *k;
    json_t *v;
    json_object_foreach(s->echo, k, v) {
        sg_buf_putc(b, ',');
        put_str(b, k);
        sg_buf_putc(b, ':');
        char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
        sg_buf_puts(b, d ? d : "null");
        free(d);
    }
    sg_buf_printf(b, ",\"store\":%s,\"usage\":", s->store ? "true" : "false");
    if (fin && !r->failed) put_usage(b, &r->usage);
    else sg_buf_puts(b, "null");
    sg_buf_putc(b, '}');
}

/* `event: TYPE\ndata: {"type":TYPE,"sequence_number":N,` ... then ev_close. */
static void ev_open(resp_render *r, const char *type) {
    sg_buf_printf(r->out, "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%ld,", type, type, r->seq++);
}
static void ev_close(resp_render *r) { sg_buf_puts(r->out, "}\n\n"); }

static void send_start(resp_render *r) {
    if (r->started) return;
    r->started = true;
    if (!r->stream) return;
    static const char *const names[] = {"response.created", "response.in_progress"};
    for (int i = 0; i < 2; i++) {
        ev_open(r, names[i]);
        sg_buf_puts(r->out, "\"response\":");
        put_response(r, r->out, "in_progress");
        ev_close(r);
    }
}

static void close_item(resp_render *r) {
    if (!r->open) return;
    r->open = false;
    if (!r->stream) return;
    size_t i = r->n - 1;
    resp_item *it = &r->items[i];
    const char *t = it->text.data ? it->text.data : "";
    if (it->kind == IT_MSG || it->kind == IT_RS) {
        bool msg = it->kind == IT_MSG;
        ev_open(r, msg ? "response.output_text.done" : "response.reasoning_text.done");
        sg_buf_puts(r->out, "\"item_id\":");
        put_item_id(r, r->out, i);
        sg_buf_printf(r->out, ",\"output_index\":%zu,\"content_index\":0,%s\"text\":", i, msg ? "\"logprobs\":[]," : "");
        sg_buf_json_str(r->out, t, it->text.len);
        ev_close(r);
        if (msg) {
            ev_open(r, "response.content_part.done");
            sg_buf_puts(r->out, "\"item_id\":");
            put_item_id(r, r->out, i);
            sg_buf_printf(r->out, ",\"output_index\":%zu,\"content_index\":0,\"part\":{\"type\":\"output_text\","
                          "\"annotations\":[],\"logprobs\":[],\"text\":", i);
            sg_buf_json_str(r->out, t, it->text.len);
            sg_buf_putc(r->out, '}');
            ev_close(r);
        }
    } else {
        ev_open(r, "response.function_call_arguments.done");
        sg_buf_puts(r->out, "\"item_id\":");
        put_item_id(r, r->out, i);
        sg_buf_printf(r->out, ",\"output_index\":%zu,\"name\":", i);
        put_str(r->out, it->name);
        sg_buf_puts(r->out, ",\"arguments\":");
        sg_buf_json_str(r->out, t, it->text.len);
        ev_close(r);
    }
    ev_open(r, "response.output_item.done");
    sg_buf_printf(r->out, "\"output_index\":%zu,\"item\":", i);
    put_item(r, r->out, i, true);
    ev_close(r);
}

static resp_item *open_item(resp_render *r, item_kind kind, const gw_event *ev) {
    close_item(r);
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 4;
        r->items = sg_xrealloc(r->items, r->cap * sizeof *r->items);
    }
    size_t i = r->n++;
    resp_item *it = &r->items[i];
    memset(it, 0, sizeof *it);
    it->kind = kind;
    it->canon_index = ev->index;
    sg_buf_init(&it->text);
    if (kind == IT_FC) {
        char gen[64];
        snprintf(gen, sizeof gen, "call_%.24s_%zu", r->hex, i);
        it->call_id = sg_xstrdup(ev->id && *ev->id ? ev->id : gen);
        it->name = sg_xstrdup(ev->name ? ev->name : "");
    }
    r->open = true;
    if (r->stream) {
        ev_open(r, "response.output_item.added");
        sg_buf_printf(r->out, "\"output_index\":%zu,\"item\":", i);
        put_item(r, r->out, i, false);
        ev_close(r);
        if (kind == IT_MSG) {
            ev_open(r, "response.content_part.added");
            sg_buf_puts(r->out, "\"item_id\":");
            put_item_id(r, r->out, i);
            sg_buf_printf(r->out, ",\"output_index\":%zu,\"content_index\":0,\"part\":{\"type\":\"output_text\","
                          "\"annotations\":[],\"logprobs\":[],\"text\":\"\"}", i);
            ev_close(r);
        }
    }
    return it;
}

static resp_item *item_for(resp_render *r, item_kind kind, const gw_event *ev) {
    if (r->open) {
        resp_item *it = &r->items[r->n - 1];
        if (it->kind == kind && (kind != IT_FC || it->canon_index == ev->index)) return it;
    }
    if (kind == IT_FC && !ev->id) {   /* a fragment of an earlier call after another item: rare */
        for (size_t i = 0; i < r->n; i++)
            if (r->items[i].kind == IT_FC && r->items[i].canon_index == ev->index) return r->stream ? NULL : &r->items[i];
    }
    return open_item(r, kind, ev);
}

static void resp_render_init(gw_render *rs, sg_buf *out, const gw_request *req, const char *model, int64_t created) {
    resp_render *r = (resp_render *)rs->state;
    memset(r, 0, sizeof *r);
    r->out = out;
    r->req = req;
    r->stream = req->canon.stream;
    r->created = created;
    snprintf(r->model, sizeof r->model, "%s", model ? model : "");
    const resp_state *s = (const resp_state *)req->state;
    if (s->hex[0]) memcpy(r->hex, s->hex, sizeof r->hex);
    else new_hex(r->hex);
    gw_usage_init(&r->usage);
}

static void resp_render_free(gw_render *rs) {
    resp_render *r = (resp_render *)rs->state;
    for (size_t i = 0; i < r->n; i++) {
        free(r->items[i].call_id);
        free(r->items[i].name);
        sg_buf_free(&r->items[i].text);
    }
    free(r->items);
    r->items = NULL;
    r->n = r->cap = 0;
}

static void resp_render_error(gw_render *rs, const gw_api_error *e) {
    resp_render *r = (resp_render *)rs->state;
    if (r->ended || r->failed) return;
    r->failed = true;
    r->error = *e;
    if (!r->stream) return;
    send_start(r);
    ev_open(r, "error");
    sg_buf_puts(r->out, "\"code\":");
    put_str(r->out, e->code[0] ? e->code : gw_error_type_for_status(GW_WIRE_OPENAI, e->status));
    sg_buf_puts(r->out, ",\"message\":");
    put_str(r->out, e->message);
    sg_buf_puts(r->out, ",\"param\":null");
    ev_close(r);
    ev_open(r, "response.failed");
    sg_buf_puts(r->out, "\"response\":");
    put_response(r, r->out, "failed");
    ev_close(r);
    r->ended = true;
}

static int resp_render_event(gw_render *rs, const gw_event *ev) {
    resp_render *r = (resp_render *)rs->state;
    if (r->ended || r->failed) return 0;
    switch (ev->kind) {
    case GW_EV_START:
    case GW_EV_EMBEDDING:   /* not a chat event */
        break;
    case GW_EV_TEXT:
    case GW_EV_REASONING: {
        if (!ev->len) break;
        send_start(r);
        bool msg = ev->kind == GW_EV_TEXT;
        resp_item *it = item_for(r, msg ? IT_MSG : IT_RS, ev);
        sg_buf_append(&it->text, ev->text, ev->len);
        if (r->stream) {
            size_t i = r->n - 1;
            ev_open(r, msg ? "response.output_text.delta" : "response.reasoning_text.delta");
            sg_buf_puts(r->out, "\"item_id\":");
            put_item_id(r, r->out, i);
            sg_buf_printf(r->out, ",\"output_index\":%zu,\"content_index\":0,%s\"delta\":", i, msg ? "\"logprobs\":[]," : "");
            sg_buf_json_str(r->out, ev->text, ev->len);
            ev_close(r);
        }
        break;
    }
    case GW_EV_TOOL_CALL: {
        send_start(r);
        resp_item *it = item_for(r, IT_FC, ev);
        if (!it || !ev->len) break;
        sg_buf_append(&it->text, ev->text, ev->len);
        if (r->stream) {
            size_t i = r->n - 1;
            ev_open(r, "response.function_call_arguments.delta");
            sg_buf_puts(r->out, "\"item_id\":");
            put_item_id(r, r->out, i);
            sg_buf_printf(r->out, ",\"output_index\":%zu,\"delta\":", i);
            sg_buf_json_str(r->out, ev->text, ev->len);
            ev_close(r);
        }
        break;
    }
    case GW_EV_FINISH:
        r->have_finish = true;
        snprintf(r->finish, sizeof r->finish, "%s", ev->finish ? ev->finish : "stop");
        break;
    case GW_EV_USAGE:
        r->usage = ev->usage;
        break;
    case GW_EV_ERROR: {
        gw_api_error e;
        gw_api_fail(&e, ev->status ? ev->status : 502, NULL, NULL, "%.*s", (int)(ev->len < 480 ? ev->len : 480),
                    ev->text ? ev->text : "");
        if (ev->err_type) snprintf(e.type, sizeof e.type, "%s", ev->err_type);
        resp_render_error(rs, &e);
        break;
    }
    }
    return 0;
}

/* The conversation after this response: the request's, then the answer as one assistant
 * message (text and tool calls). */
static char *conversation_after(const resp_render *r) {
    const resp_state *s = (const resp_state *)r->req->state;
    json_t *conv = json_deep_copy(s->conv);
    json_t *m = json_pack("{s:s,s:n}", "role", "assistant", "content");
    sg_buf text;
    sg_buf_init(&text);
    json_t *calls = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const resp_item *it = &r->items[i];
        if (it->kind == IT_MSG) sg_buf_append(&text, it->text.data ? it->text.data : "", it->text.len);
        else if (it->kind == IT_FC)
            json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s%}}", "id", it->call_id, "type", "function",
                                                   "function", "name", it->name, "arguments",
                                                   it->text.data ? it->text.data : "", it->text.len));
    }
    if (text.len) json_object_set_new(m, "content", json_stringn_nocheck(text.data, text.len));
    if (json_array_size(calls)) json_object_set(m, "tool_calls", calls);
    json_decref(calls);
    sg_buf_free(&text);
    json_array_append_new(conv, m);
    char *d = json_dumps(conv, JSON_COMPACT);
    json_decref(conv);
    return d;
}

static int resp_render_end(gw_render *rs) {
    resp_render *r = (resp_render *)rs->state;
    if (r->ended) return r->failed && !r->stream ? r->error.status : 200;
    r->ended = true;
    if (r->failed) {   /* non-stream (a stream ended at the error already) */
        oai_error_body(r->out, &r->error);
        return r->error.status ? r->error.status : 500;
    }
    send_start(r);
    close_item(r);
    const char *status = final_status(r);
    sg_buf body;
    sg_buf_init(&body);
    put_response(r, &body, status);
    if (r->stream) {
        ev_open(r, !strcmp(status, "completed") ? "response.completed" : "response.incomplete");
        sg_buf_puts(r->out, "\"response\":");
        sg_buf_append(r->out, body.data, body.len);
        ev_close(r);
    } else {
        sg_buf_append(r->out, body.data, body.len);
    }
    const resp_state *s = (const resp_state *)r->req->state;
    if (s->store) {
        char id[64];
        snprintf(id, sizeof id, "resp_%s", r->hex);
        char *conv = conversation_after(r);
        char *items = s->items ? json_dumps(s->items, JSON_COMPACT) : NULL;
        if (conv) rstore_put(id, r->req->key_id, (int64_t)time(NULL), body.data, conv, items ? items : "[]");
        free(conv);
        free(items);
    }
    sg_buf_free(&body);
    return 200;
}

/* ---- GET / DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items --------------- */

static int error_body(sg_buf *out, int status, const char *type, const char *code, const char *param, const char *msg) {
    gw_api_error e;
    gw_api_fail(&e, status, code, param, "%s", msg);
    snprintf(e.type, sizeof e.type, "%s", type);
    oai_error_body(out, &e);
    return status;
}

static int not_found(sg_buf *out, const char *id) {
    char msg[300];
    snprintf(msg, sizeof msg, "Response with id '%.200s' not found.", id);
    return error_body(out, 404, "invalid_request_error", NULL, NULL, msg);
}

/* An id the store may hold: 1..RSTORE_MAX_ID letters, digits, '_', '-'. */
static bool id_ok(const char *id) {
    size_t n = strlen(id);
    bool ok = n > 0 && n <= RSTORE_MAX_ID;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    }
    return ok;
}

int gw_responses_check_id(const char *id, sg_buf *out) {
    if (id_ok(id)) return 0;
    return error_body(out, 400, "invalid_request_error", "invalid_value", "response_id",
                      "Invalid 'response_id': expected an id of at most 128 letters, digits, '_' or '-' (such as "
                      "'resp_...').");
}

size_t gw_responses_refs(const char *raw, size_t len, char **ids, size_t cap) {
    json_t *j = json_loadb(raw, len, 0, NULL);
    size_t n = 0;
    const char *prev = jstr(j, "previous_response_id");
    if (prev && n < cap && id_ok(prev)) ids[n++] = sg_xstrdup(prev);   /* another can be no stored one */
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(j, "input"), i, it) {
        const char *type = jstr(it, "type"), *id = jstr(it, "id");
        if (!type || strcmp(type, "item_reference") || !id) continue;
        const char *u = strchr(id, '_');
        const char *u2 = u ? strchr(u + 1, '_') : NULL;
        if (!u || !u2 || u2 - u - 1 != RESP_ID_HEX) continue;
        char rid[64];
        snprintf(rid, sizeof rid, "resp_%.*s", RESP_ID_HEX, u + 1);
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++) seen = !strcmp(ids[k], rid);
        if (seen) continue;
        if (n == cap) break;
        ids[n++] = sg_xstrdup(rid);
    }
    json_decref(j);
    return n;
}

int gw_responses_unavailable(sg_buf *out) {
    return error_body(out, 503, "server_error", "response_store_unavailable", NULL,
                      "The stored responses cannot be reached right now (their database is unavailable). "
                      "Please try again.");
}

int gw_responses_get(const rstore_entry *en, const char *id, sg_buf *out) {
    if (!en || !en->response) return not_found(out, id);
    sg_buf_puts(out, en->response);
    return 200;
}

int gw_responses_deleted(int st, const char *id, sg_buf *out) {
    if (st == RSTORE_UNAVAILABLE) return gw_responses_unavailable(out);
    if (st != RSTORE_OK) return not_found(out, id);
    sg_buf_puts(out, "{\"id\":");
    put_str(out, id);
    sg_buf_puts(out, ",\"object\":\"response\",\"deleted\":true}");
    return 200;
}

/* The query of input_items: limit (1..100, default 20), order (asc | desc, default desc),
 * after (an item id); include[] is accepted and ignored. Values are compared
 * undecoded except for the percent-escapes ids never need. */
typedef struct items_query {
    long limit;
    bool asc;
    char after[RSTORE_MAX_ID + 1];
} items_query;

static int query_fail(sg_buf *out, const char *param, const char *msg) {
    return error_body(out, 400, "invalid_request_error", "invalid_value", param, msg);
}

static int parse_items_query(const char *q, items_query *iq, sg_buf *out) {
    *iq = (items_query){.limit = 20};
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', n);
        size_t kn = eq ? (size_t)(eq - q) : n;
        const char *val = eq ? eq + 1 : q + n;
        size_t vn = eq ? n - kn - 1 : 0;
        if (kn == 5 && !memcmp(q, "limit", 5)) {
            long v = 0;
            bool ok = vn > 0 && vn <= 3;
            for (size_t i = 0; ok && i < vn; i++) {
                ok = val[i] >= '0' && val[i] <= '9';
                v = v * 10 + (val[i] - '0');
            }
            if (!ok || v < 1 || v > 100)
                return query_fail(out, "limit", "Invalid 'limit': expected an integer from 1 to 100.");
            iq->limit = v;
        } else if (kn == 5 && !memcmp(q, "order", 5)) {
            if (vn == 3 && !memcmp(val, "asc", 3)) iq->asc = true;
            else if (vn == 4 && !memcmp(val, "desc", 4)) iq->asc = false;
            else return query_fail(out, "order", "Invalid 'order': expected 'asc' or 'desc'.");
        } else if (kn == 5 && !memcmp(q, "after", 5)) {
            bool ok = vn > 0 && vn <= RSTORE_MAX_ID;
            for (size_t i = 0; ok && i < vn; i++) {
                unsigned char c = (unsigned char)val[i];
                ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
            }
            if (!ok) return query_fail(out, "after", "Invalid 'after': expected an item id.");
            memcpy(iq->after, val, vn);
            iq->after[vn] = 0;
        }
        if (!amp) break;
        q = amp + 1;
    }
    return 0;
}

int gw_responses_input_items(const rstore_entry *en, const char *id, const char *query, sg_buf *out) {
    items_query iq;
    int st = parse_items_query(query, &iq, out);
    if (st) return st;
    if (!en || !en->response) return not_found(out, id);
    json_t *items = json_loads(en->input_items ? en->input_items : "[]", 0, NULL);
    if (!json_is_array(items)) { json_decref(items); items = json_array(); }
    size_t n = json_array_size(items);
    /* the walk: newest first (desc) or oldest first (asc), starting after `after` */
    size_t start = 0;
    if (iq.after[0]) {
        start = n;   /* an unknown `after`: an empty page, as a cursor past the end */
        for (size_t k = 0; k < n; k++) {
            json_t *it = json_array_get(items, iq.asc ? k : n - 1 - k);
            const char *iid = jstr(it, "id");
            if (iid && !strcmp(iid, iq.after)) { start = k + 1; break; }
        }
    }
    json_t *data = json_array();
    size_t k = start;
    for (; k < n && json_array_size(data) < (size_t)iq.limit; k++)
        json_array_append(data, json_array_get(items, iq.asc ? k : n - 1 - k));
    size_t got = json_array_size(data);
    json_t *first = got ? json_object_get(json_array_get(data, 0), "id") : NULL;
    json_t *last = got ? json_object_get(json_array_get(data, got - 1), "id") : NULL;
    json_t *page = json_pack("{s:s,s:o,s:O,s:O,s:b}", "object", "list", "data", data, "first_id", first ? first : json_null(),
                             "last_id", last ? last : json_null(), "has_more", k < n);
    char *text = json_dumps(page, JSON_COMPACT);
    sg_buf_puts(out, text);
    free(text);
    json_decref(page);
    json_decref(items);
    return 200;
}

const gw_client_api gw_api_openai_responses = {
    .name = "openai-responses",
    .paths = {"/v1/responses", "/responses", NULL},
    .parse = resp_parse,
    .canonical = resp_canonical,
    .request_free = resp_request_free,
    .splice_openai = NULL,
    .render_init = resp_render_init,
    .render_event = resp_render_event,
    .render_end = resp_render_end,
    .render_error = resp_render_error,
    .render_free = resp_render_free,
    .error_body = oai_error_body,
};
