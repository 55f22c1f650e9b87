/* codec_anthropic.c: see codec_anthropic.h. Sections: inbound requests, upstream bodies,
 * response scanning, rendering, error bodies. Requests and provider events go through
 * jansson (a request is parsed once; an Anthropic event is small); the renderer writes
 * JSON by hand. */
#include "gateway/codec_anthropic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int afail(gw_api_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int afail(gw_api_error *e, const char *fmt, ...) {
    if (!e) return -1;
    memset(e, 0, sizeof *e);
    e->status = 400;
    e->retry_after_ms = -1;
    snprintf(e->type, sizeof e->type, "%s", "invalid_request_error");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *jstr(const json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

static int dump_to_buf(const char *p, size_t n, void *data) {
    sg_buf_append(data, p, n);
    return 0;
}

/* ====================================================================================== */
/* 1. inbound: Anthropic Messages -> canonical */

/* An image block's source -> an OpenAI image_url part. */
static json_t *image_part(const json_t *blk, const char *path, gw_api_error *err) {
    const json_t *src = json_object_get(blk, "source");
    if (!json_is_object(src)) { afail(err, "%s.source: Field required", path); return NULL; }
    const char *t = jstr(src, "type");
    char *url = NULL;
    if (t && strcmp(t, "base64") == 0) {
        const char *mt = jstr(src, "media_type"), *data = jstr(src, "data");
        if (!mt || !data) { afail(err, "%s.source: media_type and data are required", path); return NULL; }
        size_t n = strlen(mt) + strlen(data) + 16;
        url = sg_xmalloc(n);
        snprintf(url, n, "data:%s;base64,%s", mt, data);
    } else if (t && strcmp(t, "url") == 0) {
        const char *u = jstr(src, "url");
        if (!u) { afail(err, "%s.source.url: Field required", path); return NULL; }
        url = sg_xstrdup(u);
    } else {
        afail(err, "%s.source.type: smolgate supports 'base64' and 'url' sources", path);
        return NULL;
    }
    json_t *part = json_pack("{s:s,s:{s:s}}", "type", "image_url", "image_url", "url", url);
    free(url);
    return part;
}

/* A document block (base64 PDF) -> an OpenAI file part. */
static json_t *document_part(const json_t *blk, const char *path, gw_api_error *err) {
    const json_t *src = json_object_get(blk, "source");
    const char *t = jstr(src, "type"), *mt = jstr(src, "media_type"), *data = jstr(src, "data");
    if (!t || strcmp(t, "base64") != 0 || !mt || !data) {
        afail(err, "%s.source: smolgate supports base64 documents only", path);
        return NULL;
    }
    size_t n = strlen(mt) + strlen(data) + 16;
    char *url = sg_xmalloc(n);
    snprintf(url, n, "data:%s;base64,%s", mt, data);
    const char *title = jstr(blk, "title");
    json_t *part = json_pack("{s:s,s:{s:s,s:s}}", "type", "file", "file", "file_data", url, "filename",
                             title ? title : "document.pdf");
    free(url);
    return part;
}

static json_t *text_part(const char *text) { return json_pack("{s:s,s:s}", "type", "text", "text", text); }

/* tool_result content (string or blocks) -> tool message content; images go to `images`. */
static int tool_result_content(const json_t *c, json_t **out, json_t *images, const char *path, gw_api_error *err) {
    if (!c || json_is_null(c)) { *out = json_string(""); return 0; }
    if (json_is_string(c)) { *out = json_incref((json_t *)c); return 0; }
    if (!json_is_array(c)) return afail(err, "%s.content: Input should be a valid string or list", path);
    json_t *parts = json_array();
    size_t i;
    const json_t *b;
    char p[192];
    json_array_foreach(c, i, b) {
        snprintf(p, sizeof p, "%s.content.%zu", path, i);
        const char *t = jstr(b, "type");
        if (t && strcmp(t, "text") == 0 && jstr(b, "text")) {
            json_array_append_new(parts, text_part(jstr(b, "text")));
        } else if (t && strcmp(t, "image") == 0) {
            json_t *img = image_part(b, p, err);
            if (!img) { json_decref(parts); return -1; }
            json_array_append_new(images, img);
        } else {
            json_decref(parts);
            return afail(err, "%s.type: tool results may hold text and image blocks", p);
        }
    }
    *out = parts;
    return 0;
}

static int convert_user(const json_t *content, size_t mi, json_t *msgs, gw_api_error *err) {
    if (json_is_string(content)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", content));
        return 0;
    }
    json_t *parts = json_array(), *images = json_array();
    size_t i;
    const json_t *b;
    char p[128];
    int rc = 0;
    json_array_foreach(content, i, b) {
        snprintf(p, sizeof p, "messages.%zu.content.%zu", mi, i);
        const char *t = jstr(b, "type");
        if (!json_is_object(b) || !t) { rc = afail(err, "%s.type: Field required", p); break; }
        if (strcmp(t, "text") == 0) {
            const char *tx = jstr(b, "text");
            if (!tx) { rc = afail(err, "%s.text: Field required", p); break; }
            json_array_append_new(parts, text_part(tx));
        } else if (strcmp(t, "image") == 0) {
            json_t *img = image_part(b, p, err);
            if (!img) { rc = -1; break; }
            json_array_append_new(parts, img);
        } else if (strcmp(t, "document") == 0) {
            json_t *doc = document_part(b, p, err);
            if (!doc) { rc = -1; break; }
            json_array_append_new(parts, doc);
        } else if (strcmp(t, "tool_result") == 0) {
            const char *id = jstr(b, "tool_use_id");
            if (!id) { rc = afail(err, "%s.tool_use_id: Field required", p); break; }
            json_t *c = NULL;
            if (tool_result_content(json_object_get(b, "content"), &c, images, p, err)) { rc = -1; break; }
            /* tool messages come first: OpenAI wants them right after the assistant's calls */
            json_array_append_new(msgs, json_pack("{s:s,s:s,s:o}", "role", "tool", "tool_call_id", id, "content", c));
        } else if (strcmp(t, "thinking") == 0 || strcmp(t, "redacted_thinking") == 0) {
            /* not the user's to send; ignore as the API does for earlier turns */
        } else {
            rc = afail(err, "%s.type: smolgate does not support '%s' blocks", p, t);
            break;
        }
    }
    if (rc == 0) {
        json_array_extend(parts, images);
        if (json_array_size(parts))
            json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", parts));
    }
    json_decref(parts);
    json_decref(images);
    return rc;
}

static int convert_assistant(const json_t *content, size_t mi, json_t *msgs, gw_api_error *err) {
    if (json_is_string(content)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "assistant", "content", content));
        return 0;
    }
    sg_buf text;
    sg_buf_init(&text);
    json_t *calls = json_array();
    size_t i;
    const json_t *b;
    char p[128];
    int rc = 0;
    json_array_foreach(content, i, b) {
        snprintf(p, sizeof p, "messages.%zu.content.%zu", mi, i);
        const char *t = jstr(b, "type");
        if (!json_is_object(b) || !t) { rc = afail(err, "%s.type: Field required", p); break; }
        if (strcmp(t, "text") == 0) {
            const char *tx = jstr(b, "text");
            if (!tx) { rc = afail(err, "%s.text: Field required", p); break; }
            sg_buf_puts(&text, tx);
        } else if (strcmp(t, "tool_use") == 0) {
            const char *id = jstr(b, "id"), *name = jstr(b, "name");
            const json_t *input = json_object_get(b, "input");
            if (!id || !name) { rc = afail(err, "%s: tool_use blocks need id and name", p); break; }
            if (input && !json_is_object(input)) { rc = afail(err, "%s.input: Input should be a valid dictionary", p); break; }
            char *args = input ? json_dumps(input, JSON_COMPACT | JSON_PRESERVE_ORDER) : sg_xstrdup("{}");
            json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type", "function", "function",
                                                   "name", name, "arguments", args));
            free(args);
        } else if (strcmp(t, "thinking") == 0 || strcmp(t, "redacted_thinking") == 0) {
            /* earlier turns' thinking: no canonical place for it */
        } else {
            rc = afail(err, "%s.type: smolgate does not support '%s' blocks", p, t);
            break;
        }
    }
    if (rc == 0) {
        json_t *m = json_pack("{s:s}", "role", "assistant");
        json_object_set_new(m, "content", text.len || !json_array_size(calls) ? json_string(text.data ? text.data : "")
                                                                               : json_null());
        if (json_array_size(calls)) json_object_set(m, "tool_calls", calls);
        json_array_append_new(msgs, m);
    }
    json_decref(calls);
    sg_buf_free(&text);
    return rc;
}

static int convert_system(const json_t *sys, json_t *msgs, gw_api_error *err) {
    if (!sys || json_is_null(sys)) return 0;
    if (json_is_string(sys)) {
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", sys));
        return 0;
    }
    if (!json_is_array(sys)) return afail(err, "system: Input should be a valid string or list");
    json_t *parts = json_array();
    size_t i;
    const json_t *b;
    json_array_foreach(sys, i, b) {
        const char *t = jstr(b, "type"), *tx = jstr(b, "text");
        if (!t || strcmp(t, "text") != 0 || !tx) {
            json_decref(parts);
            return afail(err, "system.%zu: system blocks must be text blocks", i);
        }
        json_array_append_new(parts, text_part(tx));
    }
    if (json_array_size(parts)) json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "system", "content", parts));
    else json_decref(parts);
    return 0;
}

static int convert_tools(const json_t *tools, json_t *c, gw_api_error *err) {
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return afail(err, "tools: Input should be a valid list");
    json_t *out = json_array();
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        const char *type = jstr(t, "type"), *name = jstr(t, "name");
        if (type && strcmp(type, "custom") != 0) {
            json_decref(out);
            return afail(err, "tools.%zu.type: smolgate does not support the server tool '%s'", i, type);
        }
        if (!name) { json_decref(out); return afail(err, "tools.%zu.name: Field required", i); }
        const json_t *schema = json_object_get(t, "input_schema");
        if (!json_is_object(schema)) { json_decref(out); return afail(err, "tools.%zu.input_schema: Field required", i); }
        json_t *fn = json_pack("{s:s,s:O}", "name", name, "parameters", schema);
        const char *desc = jstr(t, "description");
        if (desc) json_object_set_new(fn, "description", json_string(desc));
        json_array_append_new(out, json_pack("{s:s,s:o}", "type", "function", "function", fn));
    }
    json_object_set_new(c, "tools", out);
    return 0;
}

static int convert_tool_choice(const json_t *tc, json_t *c, gw_api_error *err) {
    if (!tc || json_is_null(tc)) return 0;
    const char *t = jstr(tc, "type");
    if (!json_is_object(tc) || !t) return afail(err, "tool_choice.type: Field required");
    if (strcmp(t, "auto") == 0) json_object_set_new(c, "tool_choice", json_string("auto"));
    else if (strcmp(t, "any") == 0) json_object_set_new(c, "tool_choice", json_string("required"));
    else if (strcmp(t, "none") == 0) json_object_set_new(c, "tool_choice", json_string("none"));
    else if (strcmp(t, "tool") == 0) {
        const char *name = jstr(tc, "name");
        if (!name) return afail(err, "tool_choice.name: Field required");
        json_object_set_new(c, "tool_choice", json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name", name));
    } else {
        return afail(err, "tool_choice.type: Input tag '%s' does not match any of the expected tags: 'auto', 'any', "
                          "'tool', 'none'", t);
    }
    if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")))
        json_object_set_new(c, "parallel_tool_calls", json_false());
    return 0;
}

static int check_number(const json_t *req, const char *key, double lo, double hi, json_t *c, gw_api_error *err) {
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return afail(err, "%s: Input should be a valid number", key);
    double d = json_number_value(v);
    if (d < lo || d > hi) return afail(err, "%s: Input should be between %g and %g", key, lo, hi);
    json_object_set(c, key, (json_t *)v);
    return 0;
}

int anth_parse_request(const char *body, size_t len, anth_request *out, gw_api_error *err) {
    memset(out, 0, sizeof *out);
    out->max_tokens = -1;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) return afail(err, "There was an error parsing the body of your request: %s at byte %d", je.text, je.position);
    json_t *c = json_object();
    json_t *msgs = json_array();
    int rc = -1;
    if (!json_is_object(root)) { afail(err, "The request body must be a JSON object"); goto done; }

    const json_t *model = json_object_get(root, "model");
    if (!model) { afail(err, "model: Field required"); goto done; }
    if (!json_is_string(model) || !*json_string_value(model)) { afail(err, "model: Input should be a valid string"); goto done; }
    if (gw_name_has_control(json_string_value(model), json_string_length(model))) {
        afail(err, "model: a model name must not contain control characters");
        goto done;
    }
    json_object_set(c, "model", (json_t *)model);

    const json_t *mt = json_object_get(root, "max_tokens");
    if (!mt) { afail(err, "max_tokens: Field required"); goto done; }
    if (!json_is_integer(mt)) { afail(err, "max_tokens: Input should be a valid integer"); goto done; }
    if (json_integer_value(mt) < 1) { afail(err, "max_tokens: Input should be greater than or equal to 1"); goto done; }
    json_object_set(c, "max_tokens", (json_t *)mt);

    if (convert_system(json_object_get(root, "system"), msgs, err)) goto done;
    const json_t *ms = json_object_get(root, "messages");
    if (!ms) { afail(err, "messages: Field required"); goto done; }
    if (!json_is_array(ms)) { afail(err, "messages: Input should be a valid list"); goto done; }
    if (!json_array_size(ms)) { afail(err, "messages: at least one message is required"); goto done; }
    size_t i;
    const json_t *m;
    json_array_foreach(ms, i, m) {
        if (!json_is_object(m)) { afail(err, "messages.%zu: Input should be a valid dictionary", i); goto done; }
        const char *role = jstr(m, "role");
        const json_t *content = json_object_get(m, "content");
        if (!role) { afail(err, "messages.%zu.role: Field required", i); goto done; }
        if (!content) { afail(err, "messages.%zu.content: Field required", i); goto done; }
        if (!json_is_string(content) && !json_is_array(content)) {
            afail(err, "messages.%zu.content: Input should be a valid string or list", i);
            goto done;
        }
        if (strcmp(role, "user") == 0) {
            if (convert_user(content, i, msgs, err)) goto done;
        } else if (strcmp(role, "assistant") == 0) {
            if (convert_assistant(content, i, msgs, err)) goto done;
        } else {
            afail(err, "messages.%zu.role: Input should be 'user' or 'assistant'", i);
            goto done;
        }
    }
    json_object_set(c, "messages", msgs);

    const json_t *st = json_object_get(root, "stream");
    if (st && !json_is_null(st) && !json_is_boolean(st)) { afail(err, "stream: Input should be a valid boolean"); goto done; }
    if (json_is_true(st)) json_object_set_new(c, "stream", json_true());

    const json_t *stop = json_object_get(root, "stop_sequences");
    if (stop && !json_is_null(stop)) {
        if (!json_is_array(stop)) { afail(err, "stop_sequences: Input should be a valid list"); goto done; }
        const json_t *s;
        json_array_foreach(stop, i, s) if (!json_is_string(s)) {
            afail(err, "stop_sequences.%zu: Input should be a valid string", i);
            goto done;
        }
        if (json_array_size(stop)) json_object_set(c, "stop", (json_t *)stop);
    }
    if (check_number(root, "temperature", 0, 1, c, err) || check_number(root, "top_p", 0, 1, c, err)) goto done;
    const json_t *tk = json_object_get(root, "top_k");
    if (tk && !json_is_null(tk)) {
        if (!json_is_integer(tk) || json_integer_value(tk) < 0) { afail(err, "top_k: Input should be a valid integer"); goto done; }
        json_object_set(c, "top_k", (json_t *)tk);
    }
    if (convert_tools(json_object_get(root, "tools"), c, err)) goto done;
    if (convert_tool_choice(json_object_get(root, "tool_choice"), c, err)) goto done;
    const json_t *meta = json_object_get(root, "metadata");
    if (meta && !json_is_null(meta) && !json_is_object(meta)) { afail(err, "metadata: Input should be a valid dictionary"); goto done; }
    const char *uid = jstr(meta, "user_id");
    if (uid) json_object_set_new(c, "user", json_string(uid));
    const json_t *th = json_object_get(root, "thinking");
    if (th && !json_is_null(th)) {
        const char *tt = jstr(th, "type");
        if (!tt) { afail(err, "thinking.type: Field required"); goto done; }
        if (strcmp(tt, "enabled") == 0) {
            const json_t *bt = json_object_get(th, "budget_tokens");
            if (!json_is_integer(bt) || json_integer_value(bt) < 1) {
                afail(err, "thinking.enabled.budget_tokens: Input should be a valid integer");
                goto done;
            }
            json_object_set(c, "thinking", (json_t *)th);
        } else if (strcmp(tt, "disabled") != 0) {
            afail(err, "thinking.type: Input tag '%s' does not match any of the expected tags: 'enabled', 'disabled'", tt);
            goto done;
        }
    }
    out->body = c;
    c = NULL;
    out->model = jstr(out->body, "model");
    out->stream = json_is_true(json_object_get(out->body, "stream"));
    out->max_tokens = json_integer_value(json_object_get(out->body, "max_tokens"));
    rc = 0;
done:
    json_decref(c);
    json_decref(msgs);
    json_decref(root);
    return rc;
}

void anth_request_free(anth_request *r) {
    json_decref(r->body);
    memset(r, 0, sizeof *r);
    r->max_tokens = -1;
}

/* ====================================================================================== */
/* 2. outbound: canonical -> Anthropic Messages */

static int bfail(gw_api_error *e, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bfail(gw_api_error *e, const char *code, const char *param, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gw_api_fail(e, 400, code, param, "%s", msg);
}

/* "data:<media>;base64,<data>" -> its two halves (pointers into url), or false. */
static bool parse_data_url(const char *url, char *media, size_t media_cap, const char **data) {
    if (strncmp(url, "data:", 5) != 0) return false;
    const char *semi = strstr(url + 5, ";base64,");
    if (!semi) return false;
    size_t n = (size_t)(semi - (url + 5));
    if (n == 0 || n >= media_cap) return false;
    memcpy(media, url + 5, n);
    media[n] = 0;
    *data = semi + 8;
    return true;
}

static json_t *text_block(const char *s) { return json_pack("{s:s,s:s}", "type", "text", "text", s); }

/* OpenAI content (string or parts) -> Anthropic blocks appended to `blocks`. */
static int content_blocks(const json_t *content, json_t *blocks, const char *param, gw_api_error *err) {
    if (!content || json_is_null(content)) return 0;
    if (json_is_string(content)) {
        if (*json_string_value(content)) json_array_append_new(blocks, text_block(json_string_value(content)));
        return 0;
    }
    size_t i;
    const json_t *p;
    json_array_foreach(content, i, p) {
        const char *t = jstr(p, "type");
        if (!t) continue;
        if (strcmp(t, "text") == 0 || strcmp(t, "refusal") == 0) {
            const char *tx = jstr(p, strcmp(t, "text") == 0 ? "text" : "refusal");
            if (tx && *tx) json_array_append_new(blocks, text_block(tx));
        } else if (strcmp(t, "image_url") == 0) {
            const char *url = jstr(json_object_get(p, "image_url"), "url");
            if (!url) return bfail(err, "missing_required_parameter", param, "%s[%zu].image_url.url is required", param, i);
            char media[96];
            const char *data;
            if (parse_data_url(url, media, sizeof media, &data))
                json_array_append_new(blocks, json_pack("{s:s,s:{s:s,s:s,s:s}}", "type", "image", "source", "type",
                                                        "base64", "media_type", media, "data", data));
            else if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0)
                json_array_append_new(blocks, json_pack("{s:s,s:{s:s,s:s}}", "type", "image", "source", "type", "url",
                                                        "url", url));
            else
                return bfail(err, "invalid_value", param, "%s[%zu]: an image must be a base64 data: URL or an http(s) URL",
                             param, i);
        } else if (strcmp(t, "file") == 0) {
            const char *fd = jstr(json_object_get(p, "file"), "file_data");
            char media[96];
            const char *data;
            if (!fd || !parse_data_url(fd, media, sizeof media, &data))
                return bfail(err, "unsupported_value", param,
                             "%s[%zu]: Anthropic takes files as inline base64 data (file_data)", param, i);
            json_array_append_new(blocks, json_pack("{s:s,s:{s:s,s:s,s:s}}", "type", "document", "source", "type",
                                                    "base64", "media_type", media, "data", data));
        } else {
            return bfail(err, "unsupported_value", param, "%s[%zu]: Anthropic does not accept '%s' content", param, i, t);
        }
    }
    return 0;
}

static void push_turn(json_t *turns, const char *role, json_t *items) {
    gw_json_push_turn(turns, role, "content", items);
}

static int tool_use_blocks(const json_t *calls, json_t *blocks, size_t mi, gw_api_error *err) {
    size_t j;
    const json_t *tc;
    char param[96];
    json_array_foreach(calls, j, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const char *id = jstr(tc, "id"), *name = jstr(fn, "name"), *args = jstr(fn, "arguments");
        snprintf(param, sizeof param, "messages[%zu].tool_calls[%zu]", mi, j);
        if (!id || !name) return bfail(err, "missing_required_parameter", param, "%s needs an id and a function name", param);
        json_t *input = NULL;
        const char *a = args ? args : "";
        while (*a == ' ' || *a == '\n' || *a == '\t' || *a == '\r') a++;
        if (!*a) input = json_object();
        else input = json_loads(args, 0, NULL);
        if (!json_is_object(input)) {
            json_decref(input);
            return bfail(err, "invalid_value", param, "%s.function.arguments must be a JSON object to send to Anthropic",
                         param);
        }
        json_array_append_new(blocks, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id", id, "name", name,
                                                "input", input));
    }
    return 0;
}

/* JSON-mode instruction for response_format, which Messages has no field for. */
static void response_format_note(const json_t *rf, json_t *system) {
    const char *t = jstr(rf, "type");
    if (!t || strcmp(t, "text") == 0) return;
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_puts(&b, "Respond with a single valid JSON value and nothing else: no prose, no code fences.");
    const json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    if (strcmp(t, "json_schema") == 0 && schema) {
        char *s = json_dumps(schema, JSON_COMPACT | JSON_PRESERVE_ORDER);
        sg_buf_printf(&b, " It must conform to this JSON Schema: %s", s ? s : "{}");
        free(s);
    }
    json_array_append_new(system, text_block(b.data));
    sg_buf_free(&b);
}

int anth_build_upstream(const json_t *req, const char *model, bool stream, int64_t default_max_tokens,
                        sg_buf *out, gw_api_error *err) {
    json_t *b = json_object(), *system = json_array(), *msgs = json_array();
    int rc = -1;
    json_object_set_new(b, "model", json_string(model));
    const json_t *mt = json_object_get(req, "max_completion_tokens");
    if (!json_is_integer(mt)) mt = json_object_get(req, "max_tokens");
    int64_t max_tokens = json_is_integer(mt) ? json_integer_value(mt)
                         : default_max_tokens > 0 ? default_max_tokens : ANTH_DEFAULT_MAX_TOKENS;
    json_object_set_new(b, "max_tokens", json_integer(max_tokens));

    size_t i;
    const json_t *m;
    json_array_foreach(json_object_get(req, "messages"), i, m) {
        const char *role = jstr(m, "role");
        const json_t *content = json_object_get(m, "content");
        char param[48];
        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (!role) continue;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            if (content_blocks(content, system, param, err)) goto done;
        } else if (strcmp(role, "user") == 0) {
            json_t *blocks = json_array();
            if (content_blocks(content, blocks, param, err)) { json_decref(blocks); goto done; }
            push_turn(msgs, "user", blocks);
        } else if (strcmp(role, "assistant") == 0) {
            json_t *blocks = json_array();
            if (content_blocks(content, blocks, param, err) ||
                tool_use_blocks(json_object_get(m, "tool_calls"), blocks, i, err)) {
                json_decref(blocks);
                goto done;
            }
            push_turn(msgs, "assistant", blocks);
        } else if (strcmp(role, "tool") == 0) {
            const char *id = jstr(m, "tool_call_id");
            if (!id) { bfail(err, "missing_required_parameter", param, "messages[%zu].tool_call_id is required", i); goto done; }
            json_t *res = json_pack("{s:s,s:s}", "type", "tool_result", "tool_use_id", id);
            if (json_is_string(content)) {
                if (*json_string_value(content)) json_object_set(res, "content", (json_t *)content);
            } else {
                json_t *inner = json_array();
                if (content_blocks(content, inner, param, err)) { json_decref(inner); json_decref(res); goto done; }
                if (json_array_size(inner)) json_object_set(res, "content", inner);
                json_decref(inner);
            }
            json_t *blocks = json_array();
            json_array_append_new(blocks, res);
            push_turn(msgs, "user", blocks);
        } else {
            bfail(err, "unsupported_value", "messages", "messages[%zu]: role '%s' cannot be sent to Anthropic", i, role);
            goto done;
        }
    }
    response_format_note(json_object_get(req, "response_format"), system);
    if (json_array_size(system)) json_object_set(b, "system", system);
    json_object_set(b, "messages", msgs);

    const json_t *thinking = json_object_get(req, "thinking");
    bool think = json_is_object(thinking) && jstr(thinking, "type") && strcmp(jstr(thinking, "type"), "enabled") == 0;
    if (think) json_object_set(b, "thinking", (json_t *)thinking);
    const json_t *v = json_object_get(req, "temperature");
    if (json_is_number(v) && !think) {   /* thinking allows only the default temperature */
        double t = json_number_value(v);
        json_object_set_new(b, "temperature", json_real(t > 1 ? 1 : t < 0 ? 0 : t));
    }
    v = json_object_get(req, "top_p");
    if (json_is_number(v) && (!think || json_number_value(v) >= 0.95)) json_object_set(b, "top_p", (json_t *)v);
    v = json_object_get(req, "top_k");
    if (json_is_integer(v) && !think) json_object_set(b, "top_k", (json_t *)v);
    v = json_object_get(req, "stop");
    if (json_is_string(v)) json_object_set_new(b, "stop_sequences", json_pack("[O]", v));
    else if (json_is_array(v) && json_array_size(v)) json_object_set(b, "stop_sequences", (json_t *)v);
    v = json_object_get(req, "user");
    if (json_is_string(v)) json_object_set_new(b, "metadata", json_pack("{s:O}", "user_id", v));

    const json_t *tools = json_object_get(req, "tools");
    if (json_is_array(tools) && json_array_size(tools)) {
        json_t *at = json_array();
        const json_t *t;
        json_array_foreach(tools, i, t) {
            const json_t *fn = json_object_get(t, "function");
            const char *name = jstr(fn, "name");
            if (!name) continue;
            const json_t *params = json_object_get(fn, "parameters");
            json_t *tool = json_pack("{s:s}", "name", name);
            const char *desc = jstr(fn, "description");
            if (desc) json_object_set_new(tool, "description", json_string(desc));
            if (json_is_object(params)) json_object_set(tool, "input_schema", (json_t *)params);
            else json_object_set_new(tool, "input_schema", json_pack("{s:s,s:{}}", "type", "object", "properties"));
            json_array_append_new(at, tool);
        }
        json_object_set_new(b, "tools", at);
        const json_t *tc = json_object_get(req, "tool_choice");
        json_t *choice = NULL;
        if (json_is_string(tc)) {
            const char *s = json_string_value(tc);
            choice = json_pack("{s:s}", "type", strcmp(s, "required") == 0 ? "any" : strcmp(s, "none") == 0 ? "none" : "auto");
        } else if (json_is_object(tc)) {
            const char *name = jstr(json_object_get(tc, "function"), "name");
            if (name) choice = json_pack("{s:s,s:s}", "type", "tool", "name", name);
        }
        if (json_is_false(json_object_get(req, "parallel_tool_calls"))) {
            if (!choice) choice = json_pack("{s:s}", "type", "auto");
            if (strcmp(jstr(choice, "type"), "none") != 0)
                json_object_set_new(choice, "disable_parallel_tool_use", json_true());
        }
        if (choice) json_object_set_new(b, "tool_choice", choice);
    }
    if (stream) json_object_set_new(b, "stream", json_true());
    json_dump_callback(b, dump_to_buf, out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    rc = 0;
done:
    json_decref(b);
    json_decref(system);
    json_decref(msgs);
    return rc;
}

/* ====================================================================================== */
/* 3. upstream responses -> events */

static int emit(gw_event_fn fn, void *ctx, const gw_event *ev) { return fn(ctx, ev) ? -1 : 0; }

static int emit_err(gw_event_fn fn, void *ctx, const gw_api_error *e) {
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = GW_EV_ERROR;
    ev.text = e->message;
    ev.len = strlen(e->message);
    ev.err_type = e->type;
    ev.status = e->status;
    return emit(fn, ctx, &ev);
}

static int emit_malformed(gw_event_fn fn, void *ctx, const char *why) {
    gw_api_error e;
    gw_api_fail(&e, 502, NULL, NULL, "malformed response from upstream: %s", why);
    snprintf(e.type, sizeof e.type, "%s", "invalid_response");
    return emit_err(fn, ctx, &e);
}

static int emit_text(gw_event_fn fn, void *ctx, gw_event_kind k, const char *s) {
    if (!s || !*s) return 0;
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = k;
    ev.text = s;
    ev.len = strlen(s);
    return emit(fn, ctx, &ev);
}

/* Reads an Anthropic usage object into u: fields present override (message_delta counts
 * are cumulative); returns whether anything was there. */
static bool read_usage(const json_t *o, gw_usage *u) {
    if (!json_is_object(o)) return false;
    bool any = false;
    const json_t *v;
    if (json_is_integer(v = json_object_get(o, "input_tokens"))) { u->input = json_integer_value(v); any = true; }
    if (json_is_integer(v = json_object_get(o, "output_tokens"))) { u->output = json_integer_value(v); any = true; }
    if (json_is_integer(v = json_object_get(o, "cache_read_input_tokens"))) { u->cache_read = json_integer_value(v); any = true; }
    if (json_is_integer(v = json_object_get(o, "cache_creation_input_tokens"))) { u->cache_write = json_integer_value(v); any = true; }
    v = json_object_get(json_object_get(o, "output_tokens_details"), "thinking_tokens");
    if (json_is_integer(v)) { u->reasoning = json_integer_value(v); any = true; }
    return any;
}

static int emit_usage(gw_event_fn fn, void *ctx, const gw_usage *acc) {
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = GW_EV_USAGE;
    ev.usage = *acc;
    /* Anthropic omits cache fields it did not use: none read, none written */
    if (ev.usage.input >= 0) {
        if (ev.usage.cache_read < 0) ev.usage.cache_read = 0;
        if (ev.usage.cache_write < 0) ev.usage.cache_write = 0;
    }
    return emit(fn, ctx, &ev);
}

static int emit_finish(anth_scan *s, gw_event_fn fn, void *ctx, const char *stop_reason, const char *stop_sequence) {
    if (s->finished) return 0;
    s->finished = true;
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = GW_EV_FINISH;
    ev.finish = gw_finish_from_anthropic(stop_reason);
    if (stop_sequence) {   /* which stop sequence ended it, for Anthropic clients */
        ev.text = stop_sequence;
        ev.len = strlen(stop_sequence);
    }
    return emit(fn, ctx, &ev);
}

static int emit_start(anth_scan *s, gw_event_fn fn, void *ctx, const json_t *msg) {
    if (s->started) return 0;
    s->started = true;
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = GW_EV_START;
    ev.id = jstr(msg, "id");
    ev.name = jstr(msg, "model");
    return emit(fn, ctx, &ev);
}

void anth_scan_init(anth_scan *s) {
    memset(s, 0, sizeof *s);
    gw_usage_init(&s->usage);
}

void anth_scan_free(anth_scan *s) {
    free(s->block_tool);
    memset(s, 0, sizeof *s);
}

#define ANTH_MAX_BLOCKS 4096   /* a block index past this is not a real response */

static int tool_for_block(anth_scan *s, int64_t index, bool create) {
    if (index < 0 || index >= ANTH_MAX_BLOCKS) return -1;
    if ((size_t)index >= s->n_blocks) {
        if (!create) return -1;
        size_t n = (size_t)index + 1;
        s->block_tool = sg_xrealloc(s->block_tool, n * sizeof *s->block_tool);
        for (size_t i = s->n_blocks; i < n; i++) s->block_tool[i] = -1;
        s->n_blocks = n;
    }
    if (create && s->block_tool[index] < 0) s->block_tool[index] = s->n_tools++;
    return s->block_tool[index];
}

/* One tool_use block as a TOOL_CALL with arguments (whole input, or "" when streaming). */
static int emit_tool(gw_event_fn fn, void *ctx, int ord, const json_t *blk, bool whole) {
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = GW_EV_TOOL_CALL;
    ev.index = ord;
    ev.id = jstr(blk, "id");
    ev.name = jstr(blk, "name");
    const json_t *input = json_object_get(blk, "input");
    char *args = NULL;
    if (json_is_object(input) && (whole || json_object_size(input)))
        args = json_dumps(input, JSON_COMPACT | JSON_PRESERVE_ORDER);
    ev.text = args ? args : "";
    ev.len = args ? strlen(args) : 0;
    int rc = emit(fn, ctx, &ev);
    free(args);
    return rc;
}

static int scan_stream_event(anth_scan *s, const char *type, const json_t *d, gw_event_fn fn, void *ctx) {
    if (strcmp(type, "message_start") == 0) {
        const json_t *msg = json_object_get(d, "message");
        if (emit_start(s, fn, ctx, msg)) return -1;
        if (read_usage(json_object_get(msg, "usage"), &s->usage) && emit_usage(fn, ctx, &s->usage)) return -1;
        return 0;
    }
    if (strcmp(type, "content_block_start") == 0) {
        const json_t *blk = json_object_get(d, "content_block");
        const char *bt = jstr(blk, "type");
        const json_t *ix = json_object_get(d, "index");
        if (!json_is_integer(ix) || !bt) return emit_malformed(fn, ctx, "content_block_start without index or type") ? -1 : ANTH_SCAN_ERROR;
        if (emit_start(s, fn, ctx, NULL)) return -1;
        if (strcmp(bt, "text") == 0) return emit_text(fn, ctx, GW_EV_TEXT, jstr(blk, "text"));
        if (strcmp(bt, "thinking") == 0) return emit_text(fn, ctx, GW_EV_REASONING, jstr(blk, "thinking"));
        if (strcmp(bt, "tool_use") == 0) {
            int ord = tool_for_block(s, json_integer_value(ix), true);
            if (ord < 0) return emit_malformed(fn, ctx, "content block index out of range") ? -1 : ANTH_SCAN_ERROR;
            return emit_tool(fn, ctx, ord, blk, false);
        }
        return ANTH_SCAN_SKIP;   /* redacted_thinking, server tool blocks */
    }
    if (strcmp(type, "content_block_delta") == 0) {
        const json_t *delta = json_object_get(d, "delta");
        const char *dt = jstr(delta, "type");
        if (!dt) return emit_malformed(fn, ctx, "content_block_delta without a delta type") ? -1 : ANTH_SCAN_ERROR;
        if (emit_start(s, fn, ctx, NULL)) return -1;
        if (strcmp(dt, "text_delta") == 0) return emit_text(fn, ctx, GW_EV_TEXT, jstr(delta, "text"));
        if (strcmp(dt, "thinking_delta") == 0) return emit_text(fn, ctx, GW_EV_REASONING, jstr(delta, "thinking"));
        if (strcmp(dt, "input_json_delta") == 0) {
            int ord = tool_for_block(s, json_integer_value(json_object_get(d, "index")), false);
            const char *pj = jstr(delta, "partial_json");
            if (ord < 0 || !pj || !*pj) return 0;
            gw_event ev;
            memset(&ev, 0, sizeof ev);
            ev.kind = GW_EV_TOOL_CALL;
            ev.index = ord;
            ev.text = pj;
            ev.len = strlen(pj);
            return emit(fn, ctx, &ev);
        }
        return ANTH_SCAN_SKIP;   /* signature_delta, citations_delta */
    }
    if (strcmp(type, "content_block_stop") == 0) return 0;
    if (strcmp(type, "message_delta") == 0) {
        const char *sr = jstr(json_object_get(d, "delta"), "stop_reason");
        if (sr && emit_finish(s, fn, ctx, sr, jstr(json_object_get(d, "delta"), "stop_sequence"))) return -1;
        if (read_usage(json_object_get(d, "usage"), &s->usage) && emit_usage(fn, ctx, &s->usage)) return -1;
        return 0;
    }
    if (strcmp(type, "message_stop") == 0) {
        s->stopped = true;
        return ANTH_SCAN_STOP;
    }
    return ANTH_SCAN_SKIP;   /* ping, and events added later */
}

int anth_scan_event(anth_scan *s, const char *event, const char *data, size_t len, gw_event_fn fn, void *ctx) {
    if (s->stopped || s->failed) return ANTH_SCAN_SKIP;
    if (event && strcmp(event, "ping") == 0) return ANTH_SCAN_SKIP;
    json_t *d = json_loadb(data, len, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        s->failed = true;
        return emit_malformed(fn, ctx, "an event that is not a JSON object") ? -1 : ANTH_SCAN_ERROR;
    }
    const char *type = jstr(d, "type");
    if (!type) type = event ? event : "";
    int rc;
    if (strcmp(type, "error") == 0 || (event && strcmp(event, "error") == 0)) {
        gw_api_error e;
        gw_classify_error(GW_WIRE_ANTHROPIC, 0, data, len, &e);
        s->failed = true;
        rc = emit_err(fn, ctx, &e) ? -1 : ANTH_SCAN_ERROR;
    } else {
        rc = scan_stream_event(s, type, d, fn, ctx);
        if (rc == ANTH_SCAN_ERROR) s->failed = true;
    }
    json_decref(d);
    return rc;
}

int anth_scan_end(anth_scan *s, gw_event_fn fn, void *ctx) {
    if (s->stopped || s->finished || s->failed) return 0;
    gw_api_error e;
    gw_api_fail(&e, 502, NULL, NULL, "upstream stream ended early");
    snprintf(e.type, sizeof e.type, "%s", "incomplete_response");
    return emit_err(fn, ctx, &e) ? -1 : 1;
}

int anth_scan_response(const char *body, size_t len, gw_event_fn fn, void *ctx) {
    json_t *d = json_loadb(body, len, 0, NULL);
    int rc = 0;
    if (!json_is_object(d)) {
        rc = emit_malformed(fn, ctx, "the body is not a JSON object") ? -1 : 1;
        json_decref(d);
        return rc;
    }
    const char *type = jstr(d, "type");
    if ((type && strcmp(type, "error") == 0) || json_object_get(d, "error")) {
        gw_api_error e;
        gw_classify_error(GW_WIRE_ANTHROPIC, 0, body, len, &e);
        rc = emit_err(fn, ctx, &e) ? -1 : 1;
        json_decref(d);
        return rc;
    }
    anth_scan s;
    anth_scan_init(&s);
    const json_t *content = json_object_get(d, "content");
    if (!json_is_array(content)) {
        rc = emit_malformed(fn, ctx, "a message without content") ? -1 : 1;
        goto out;
    }
    if (emit_start(&s, fn, ctx, d)) { rc = -1; goto out; }
    size_t i;
    const json_t *blk;
    json_array_foreach(content, i, blk) {
        const char *bt = jstr(blk, "type");
        if (!bt) continue;
        if (strcmp(bt, "text") == 0) rc = emit_text(fn, ctx, GW_EV_TEXT, jstr(blk, "text"));
        else if (strcmp(bt, "thinking") == 0) rc = emit_text(fn, ctx, GW_EV_REASONING, jstr(blk, "thinking"));
        else if (strcmp(bt, "tool_use") == 0) rc = emit_tool(fn, ctx, s.n_tools++, blk, true);
        if (rc) goto out;
    }
    if (emit_finish(&s, fn, ctx, jstr(d, "stop_reason"), jstr(d, "stop_sequence"))) { rc = -1; goto out; }
    if (read_usage(json_object_get(d, "usage"), &s.usage) && emit_usage(fn, ctx, &s.usage)) rc = -1;
out:
    anth_scan_free(&s);
    json_decref(d);
    return rc;
}

/* ====================================================================================== */
/* 4. rendering for Anthropic clients */

void anth_render_init(anth_render *r, sg_buf *out, bool stream, const char *id, const char *model) {
    memset(r, 0, sizeof *r);
    r->out = out;
    r->stream = stream;
    if (id) snprintf(r->id, sizeof r->id, "%s", id);
    if (model) snprintf(r->model, sizeof r->model, "%s", model);
    gw_usage_init(&r->usage);
}

void anth_render_free(anth_render *r) {
    for (size_t i = 0; i < r->n_blocks; i++) {
        free(r->blocks[i].id);
        free(r->blocks[i].name);
        sg_buf_free(&r->blocks[i].text);
    }
    free(r->blocks);
    r->blocks = NULL;
    r->n_blocks = 0;
}

static void put_str(sg_buf *b, const char *s) { sg_buf_json_str(b, s, strlen(s)); }
static long long nz(int64_t v) { return v < 0 ? 0 : (long long)v; }

static void put_usage(sg_buf *b, const gw_usage *u, bool start) {
    sg_buf_printf(b,
                  "{\"input_tokens\":%lld,\"cache_creation_input_tokens\":%lld,\"cache_read_input_tokens\":%lld,"
                  "\"output_tokens\":%lld}",
                  nz(u->input), nz(u->cache_write), nz(u->cache_read), start && u->output < 0 ? 0 : nz(u->output));
}

/* `event: NAME\ndata: ` ... `\n\n` around a JSON object written in between. */
static void ev_open(anth_render *r, const char *name) {
    sg_buf_puts(r->out, "event: ");
    sg_buf_puts(r->out, name);
    sg_buf_puts(r->out, "\ndata: ");
}
static void ev_close(anth_render *r) { sg_buf_append(r->out, "\n\n", 2); }

static void ensure_id(anth_render *r) {
    if (!r->id[0]) snprintf(r->id, sizeof r->id, "%s", "msg_smolgate");
}

static void send_start(anth_render *r) {
    if (r->start_sent) return;
    r->start_sent = true;
    if (!r->stream) return;
    ensure_id(r);
    ev_open(r, "message_start");
    sg_buf_puts(r->out, "{\"type\":\"message_start\",\"message\":{\"id\":");
    put_str(r->out, r->id);
    sg_buf_puts(r->out, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    put_str(r->out, r->model);
    sg_buf_puts(r->out, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
    put_usage(r->out, &r->usage, true);
    sg_buf_puts(r->out, "}}");
    ev_close(r);
}

static void close_block(anth_render *r) {
    if (!r->open) return;
    r->open = false;
    if (!r->stream) return;
    ev_open(r, "content_block_stop");
    sg_buf_printf(r->out, "{\"type\":\"content_block_stop\",\"index\":%zu}", r->n_blocks - 1);
    ev_close(r);
}

static anth_render_block *open_block(anth_render *r, anth_block_kind kind, int canon_index, const char *id,
                                     const char *name) {
    close_block(r);
    if (r->n_blocks == r->cap_blocks) {
        r->cap_blocks = r->cap_blocks ? 2 * r->cap_blocks : 4;
        r->blocks = sg_xrealloc(r->blocks, r->cap_blocks * sizeof *r->blocks);
    }
    anth_render_block *b = &r->blocks[r->n_blocks++];
    memset(b, 0, sizeof *b);
    b->kind = kind;
    b->canon_index = canon_index;
    sg_buf_init(&b->text);
    if (kind == ANTH_BLOCK_TOOL) {
        char gen[32];
        snprintf(gen, sizeof gen, "toolu_smolgate_%zu", r->n_blocks - 1);
        b->id = sg_xstrdup(id ? id : gen);
        b->name = sg_xstrdup(name ? name : "");
    }
    r->open = true;
    if (r->stream) {
        ev_open(r, "content_block_start");
        sg_buf_printf(r->out, "{\"type\":\"content_block_start\",\"index\":%zu,\"content_block\":", r->n_blocks - 1);
        if (kind == ANTH_BLOCK_TEXT) sg_buf_puts(r->out, "{\"type\":\"text\",\"text\":\"\"}");
        else if (kind == ANTH_BLOCK_THINKING) sg_buf_puts(r->out, "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}");
        else {
            sg_buf_puts(r->out, "{\"type\":\"tool_use\",\"id\":");
            put_str(r->out, b->id);
            sg_buf_puts(r->out, ",\"name\":");
            put_str(r->out, b->name);
            sg_buf_puts(r->out, ",\"input\":{}}");
        }
        sg_buf_putc(r->out, '}');
        ev_close(r);
    }
    return b;
}

/* The block this delta belongs to: the open one if it matches, else a new one. */
static anth_render_block *block_for(anth_render *r, anth_block_kind kind, const gw_event *ev) {
    if (r->open) {
        anth_render_block *b = &r->blocks[r->n_blocks - 1];
        if (b->kind == kind && (kind != ANTH_BLOCK_TOOL || b->canon_index == ev->index)) return b;
    }
    if (kind == ANTH_BLOCK_TOOL) {   /* a fragment of an earlier call after another block: rare */
        for (size_t i = 0; i < r->n_blocks; i++)
            if (r->blocks[i].kind == ANTH_BLOCK_TOOL && r->blocks[i].canon_index == ev->index && !ev->id)
                return r->stream ? NULL : &r->blocks[i];
    }
    return open_block(r, kind, ev->index, ev->id, ev->name);
}

static void delta(anth_render *r, const char *type_and_field, const char *s, size_t n) {
    sg_buf_reserve(r->out, n + 128);
    sg_buf_puts(r->out, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":");
    sg_buf_put_u64(r->out, r->n_blocks - 1);   /* no printf: deltas are the hot path */
    sg_buf_puts(r->out, type_and_field);
    sg_buf_json_str(r->out, s, n);
    sg_buf_puts(r->out, "}}\n\n");
}

void anth_render_error(anth_render *r, const gw_api_error *e) {
    if (r->ended || r->failed) return;
    r->failed = true;
    r->error = *e;
    if (r->stream) {   /* the SDK throws APIError on this event, whatever came before */
        ev_open(r, "error");
        anth_error_body(r->out, e);
        ev_close(r);
        r->ended = true;
    }
}

int anth_render_event(void *ctx, const gw_event *ev) {
    anth_render *r = ctx;
    if (r->ended || r->failed) return 0;
    switch (ev->kind) {
    case GW_EV_START:
        if (!r->id[0] && ev->id && *ev->id) snprintf(r->id, sizeof r->id, "%s", ev->id);
        if (!r->model[0] && ev->name) snprintf(r->model, sizeof r->model, "%s", ev->name);
        break;
    case GW_EV_TEXT:
    case GW_EV_REASONING: {
        if (!ev->len) break;
        send_start(r);
        anth_block_kind k = ev->kind == GW_EV_TEXT ? ANTH_BLOCK_TEXT : ANTH_BLOCK_THINKING;
        anth_render_block *b = block_for(r, k, ev);
        if (r->stream)
            delta(r, k == ANTH_BLOCK_TEXT ? ",\"delta\":{\"type\":\"text_delta\",\"text\":"
                                          : ",\"delta\":{\"type\":\"thinking_delta\",\"thinking\":",
                  ev->text, ev->len);
        else sg_buf_append(&b->text, ev->text, ev->len);
        break;
    }
    case GW_EV_TOOL_CALL: {
        send_start(r);
        anth_render_block *b = block_for(r, ANTH_BLOCK_TOOL, ev);
        if (!b || !ev->len) break;   /* (a stream cannot reopen a closed block: dropped) */
        if (r->stream)
            delta(r, ",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":", ev->text, ev->len);
        else sg_buf_append(&b->text, ev->text, ev->len);
        break;
    }
    case GW_EV_FINISH:
        r->have_finish = true;
        snprintf(r->finish, sizeof r->finish, "%s", ev->finish ? ev->finish : "stop");
        if (ev->text && ev->len && ev->len < sizeof r->stop_sequence) {
            memcpy(r->stop_sequence, ev->text, ev->len);
            r->stop_sequence[ev->len] = 0;
        }
        break;
    case GW_EV_USAGE:
        r->usage = ev->usage;
        break;
    case GW_EV_ERROR: {
        gw_api_error e;
        gw_api_fail(&e, ev->status ? ev->status : 502, NULL, NULL, "%.*s", (int)(ev->len < 480 ? ev->len : 480),
                    ev->text ? ev->text : "");
        if (ev->err_type) snprintf(e.type, sizeof e.type, "%s", ev->err_type);
        anth_render_error(r, &e);
        break;
    }
    case GW_EV_EMBEDDING: break;   /* not a chat event */
    }
    return 0;
}

static bool has_tool_block(const anth_render *r) {
    for (size_t i = 0; i < r->n_blocks; i++)
        if (r->blocks[i].kind == ANTH_BLOCK_TOOL) return true;
    return false;
}

static void put_tool_input(sg_buf *o, const anth_render_block *b) {
    const char *a = b->text.data ? b->text.data : "";
    json_t *input = b->text.len ? json_loadb(a, b->text.len, 0, NULL) : json_object();
    if (json_is_object(input)) {
        json_dump_callback(input, dump_to_buf, o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    } else {   /* arguments that are not an object: keep them visible rather than lose them */
        sg_buf_puts(o, "{\"_raw_arguments\":");
        sg_buf_json_str(o, a, b->text.len);
        sg_buf_putc(o, '}');
    }
    json_decref(input);
}

/* "stop_reason":..., "stop_sequence":... (stop_sequence when a stop sequence matched) */
static void put_stop(sg_buf *o, const anth_render *r, const char *finish) {
    bool seq = r->stop_sequence[0] && !strcmp(finish, "stop");
    sg_buf_puts(o, "\"stop_reason\":");
    put_str(o, seq ? "stop_sequence" : gw_finish_to_anthropic(finish));
    sg_buf_puts(o, ",\"stop_sequence\":");
    if (seq) put_str(o, r->stop_sequence);
    else sg_buf_puts(o, "null");
}

int anth_render_end(anth_render *r) {
    if (r->ended) return r->failed && !r->stream ? r->error.status : 200;
    r->ended = true;
    const char *finish = r->have_finish ? r->finish : has_tool_block(r) ? "tool_calls" : "stop";
    if (r->failed) {   /* non-stream (a stream ended at the error already) */
        anth_error_body(r->out, &r->error);
        return r->error.status ? r->error.status : 500;
    }
    if (r->stream) {
        send_start(r);
        close_block(r);
        ev_open(r, "message_delta");
        sg_buf_puts(r->out, "{\"type\":\"message_delta\",\"delta\":{");
        put_stop(r->out, r, finish);
        sg_buf_puts(r->out, "},\"usage\":");
        put_usage(r->out, &r->usage, false);
        sg_buf_putc(r->out, '}');
        ev_close(r);
        ev_open(r, "message_stop");
        sg_buf_puts(r->out, "{\"type\":\"message_stop\"}");
        ev_close(r);
        return 200;
    }
    ensure_id(r);
    sg_buf *o = r->out;
    sg_buf_puts(o, "{\"id\":");
    put_str(o, r->id);
    sg_buf_puts(o, ",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    put_str(o, r->model);
    sg_buf_puts(o, ",\"content\":[");
    for (size_t i = 0; i < r->n_blocks; i++) {
        const anth_render_block *b = &r->blocks[i];
        if (i) sg_buf_putc(o, ',');
        const char *t = b->text.data ? b->text.data : "";
        if (b->kind == ANTH_BLOCK_TEXT) {
            sg_buf_puts(o, "{\"type\":\"text\",\"text\":");
            sg_buf_json_str(o, t, b->text.len);
            sg_buf_putc(o, '}');
        } else if (b->kind == ANTH_BLOCK_THINKING) {
            sg_buf_puts(o, "{\"type\":\"thinking\",\"thinking\":");
            sg_buf_json_str(o, t, b->text.len);
            sg_buf_puts(o, ",\"signature\":\"\"}");
        } else {
            sg_buf_puts(o, "{\"type\":\"tool_use\",\"id\":");
            put_str(o, b->id);
            sg_buf_puts(o, ",\"name\":");
            put_str(o, b->name);
            sg_buf_puts(o, ",\"input\":");
            put_tool_input(o, b);
            sg_buf_putc(o, '}');
        }
    }
    sg_buf_puts(o, "],");
    put_stop(o, r, finish);
    sg_buf_puts(o, ",\"usage\":");
    put_usage(o, &r->usage, false);
    sg_buf_putc(o, '}');
    return 200;
}

/* ====================================================================================== */

static bool anthropic_type(const char *t) {
    static const char *known[] = {"invalid_request_error", "authentication_error", "billing_error",
                                  "permission_error", "not_found_error", "request_too_large",
                                  "rate_limit_error", "api_error", "overloaded_error", "timeout_error"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(t, known[i]) == 0) return true;
    return false;
}

void anth_error_body(sg_buf *out, const gw_api_error *e) {
    const char *t = e->type[0] && anthropic_type(e->type) ? e->type : gw_error_type_for_status(GW_WIRE_ANTHROPIC, e->status);
    sg_buf_puts(out, "{\"type\":\"error\",\"error\":{\"type\":");
    put_str(out, t);
    sg_buf_puts(out, ",\"message\":");
    put_str(out, e->message);
    sg_buf_puts(out, "}}");
}
