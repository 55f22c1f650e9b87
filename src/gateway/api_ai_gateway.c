/* api_ai_gateway.c: the Vercel AI Gateway client API (POST /v4/ai/language-model), so that
 * AI SDK code written for Vercel's gateway (`createGateway({ baseURL, apiKey })` of
 * @ai-sdk/gateway, or the `ai` package's default provider) runs against smolgate.
 *
 * The request: the AI SDK's LanguageModelV4 call options as JSON (prompt messages with
 * parts, tools, toolChoice, maxOutputTokens, temperature..., providerOptions); the model
 * id and whether to stream come in headers (ai-language-model-id,
 * ai-language-model-streaming). It is translated at once into the canonical
 * (OpenAI-shaped) body; providerOptions.gateway.order / only / models become the provider
 * preferences and the fallback list, providerOptions.openai.parallelToolCalls and
 * providerOptions.anthropic.disableParallelToolUse the canonical parallel_tool_calls. The answer: LanguageModelV4 content parts,
 * finishReason {unified, raw} and usage {inputTokens {...}, outputTokens {...}} in one
 * JSON object, or streamed as SSE `data:` lines of stream parts (stream-start,
 * response-metadata, text-start/delta/end, reasoning-*, tool-input-start/delta/end,
 * tool-call, finish, error). Errors are {"error": {message, type, param, code}}, typed
 * the way the package picks its GatewayError classes (authentication_error,
 * invalid_request_error, model_not_found, rate_limit_exceeded, forbidden, not_found,
 * internal_server_error). GET /v4/ai/config (the model list) lives in gateway.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/api.h"
#include "gateway/codec_embed.h"
#include "gateway/http_server.h"

#define AIG_MAX_MESSAGES 100000   /* prompt messages; a longer prompt is a 400 */

/* ---- request ------------------------------------------------------------------------ */

static int bad(gw_api_error *e, const char *param, const char *fmt, const char *what) {
    return gw_api_fail(e, 400, "invalid_request", param, fmt, what ? what : "");
}

static const char *jstr(const json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* A tool result's output as the text an OpenAI "tool" message carries. */
static char *tool_output_text(const json_t *out, size_t i, gw_api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "prompt[%zu].content", i);
    const char *t = jstr(out, "type");
    if (!json_is_object(out) || !t) { bad(e, param, "a tool-result needs an output with a type%s", NULL); return NULL; }
    const json_t *v = json_object_get(out, "value");
    if (!strcmp(t, "text") || !strcmp(t, "error-text")) {
        if (!json_is_string(v)) { bad(e, param, "a %s tool output needs a string value", t); return NULL; }
        return strdup(json_string_value(v));
    }
    if (!strcmp(t, "json") || !strcmp(t, "error-json")) {
        if (!v) { bad(e, param, "a %s tool output needs a value", t); return NULL; }
        return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    }
    if (!strcmp(t, "execution-denied")) {
        const char *r = jstr(out, "reason");
        return strdup(r ? r : "Tool execution denied.");
    }
    if (!strcmp(t, "content")) {
        if (!json_is_array(v)) { bad(e, param, "a content tool output needs an array value%s", NULL); return NULL; }
        sg_buf b;
        sg_buf_init(&b);
        size_t k;
        const json_t *p;
        json_array_foreach(v, k, p) {
            const char *pt = jstr(p, "text");
            if (pt && !strcmp(jstr(p, "type") ? jstr(p, "type") : "", "text")) sg_buf_append(&b, pt, strlen(pt));
        }
        char *s = strndup(b.data ? b.data : "", b.len);
        sg_buf_free(&b);
        return s;
    }
    bad(e, param, "unknown tool output type '%s'", t);
    return NULL;
}

/* A user file part as an OpenAI content part: images by URL or data URL, text files as
 * text; other media types are refused (no provider behind the canonical format takes them). */
static json_t *file_part(const json_t *p, size_t i, gw_api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "prompt[%zu].content", i);
    const char *mt = jstr(p, "mediaType");
    const json_t *d = json_object_get(p, "data");
    if (!mt) { bad(e, param, "a file part needs a mediaType%s", NULL); return NULL; }
    const char *dt = json_is_object(d) ? jstr(d, "type") : NULL;
    if (dt && !strcmp(dt, "text") && jstr(d, "text")) return json_pack("{s:s,s:s}", "type", "text", "text", jstr(d, "text"));
    if (strncmp(mt, "image/", 6)) { bad(e, param, "file parts of media type '%s' are not supported (images and text only)", mt); return NULL; }
    const char *url = NULL, *b64 = NULL;
    if (json_is_string(d)) b64 = json_string_value(d);                     /* older prompts: base64 */
    else if (dt && !strcmp(dt, "data")) b64 = jstr(d, "data");
    else if (dt && !strcmp(dt, "url")) url = jstr(d, "url");
    if (b64 && (!strncmp(b64, "http://", 7) || !strncmp(b64, "https://", 8) || !strncmp(b64, "data:", 5))) url = b64, b64 = NULL;
    if (!url && !b64) { bad(e, param, "an image file part needs data (base64) or a url%s", NULL); return NULL; }
    json_t *u;
    if (url) u = json_string(url);
    else {
        sg_buf b;
        sg_buf_init(&b);
        sg_buf_printf(&b, "data:%s;base64,%s", mt, b64);
        u = json_stringn(b.data, b.len);
        sg_buf_free(&b);
    }
    if (!u) { bad(e, param, "an image file part's data is not valid UTF-8%s", NULL); return NULL; }
    return json_pack("{s:s,s:{s:o}}", "type", "image_url", "image_url", "url", u);
}

static int convert_message(const json_t *m, size_t i, json_t *msgs, gw_api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "prompt[%zu]", i);
    if (!json_is_object(m)) return bad(e, param, "a prompt message must be an object%s", NULL);
    const char *role = jstr(m, "role");
    const json_t *c = json_object_get(m, "content");
    if (!role) return bad(e, param, "a prompt message needs a role%s", NULL);
    if (!strcmp(role, "system")) {
        if (!json_is_string(c)) return bad(e, param, "a system message's content must be a string%s", NULL);
        json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", c));
        return 0;
    }
    if (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "tool"))
        return bad(e, param, "unknown role '%s' (system, user, assistant or tool)", role);
    if (!json_is_array(c)) return bad(e, param, "a %s message's content must be an array of parts", role);
    size_t k;
    const json_t *p;
    json_array_foreach(c, k, p) {
        if (!json_is_object(p) || !jstr(p, "type")) return bad(e, param, "a content part must be an object with a type%s", NULL);
    }
    if (!strcmp(role, "user")) {
        json_t *parts = json_array();
        json_array_foreach(c, k, p) {
            const char *t = jstr(p, "type");
            json_t *q;
            if (!strcmp(t, "text")) {
                if (!json_is_string(json_object_get(p, "text"))) { json_decref(parts); return bad(e, param, "a text part needs a string text%s", NULL); }
                q = json_pack("{s:s,s:O}", "type", "text", "text", json_object_get(p, "text"));
            } else if (!strcmp(t, "file")) {
                if (!(q = file_part(p, i, e))) { json_decref(parts); return -1; }
            } else {
                json_decref(parts);
                return bad(e, param, "a user message cannot hold a '%s' part", t);
            }
            json_array_append_new(parts, q);
        }
        json_t *content = parts;
        if (json_array_size(parts) == 1 && !strcmp(jstr(json_array_get(parts, 0), "type"), "text"))
            content = json_incref(json_object_get(json_array_get(parts, 0), "text")), json_decref(parts);
        json_array_append_new(msgs, json_pack("{s:s,s:o}", "role", "user", "content", content));
        return 0;
    }
    if (!strcmp(role, "assistant")) {
        sg_buf text;
        sg_buf_init(&text);
        json_t *calls = json_array();
        json_array_foreach(c, k, p) {
            const char *t = jstr(p, "type");
            if (!strcmp(t, "text")) {
                const char *s = jstr(p, "text");
                if (!s) { sg_buf_free(&text); json_decref(calls); return bad(e, param, "a text part needs a string text%s", NULL); }
                sg_buf_append(&text, s, strlen(s));
            } else if (!strcmp(t, "tool-call")) {
                const char *id = jstr(p, "toolCallId"), *name = jstr(p, "toolName");
                const json_t *in = json_object_get(p, "input");
                if (!id || !name) { sg_buf_free(&text); json_decref(calls); return bad(e, param, "a tool-call part needs toolCallId and toolName strings%s", NULL); }
                char *args = json_is_string(in) ? strdup(json_string_value(in))
                             : in ? json_dumps(in, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("{}");
                json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type", "function", "function",
                                                       "name", name, "arguments", args ? args : "{}"));
                free(args);
            }
            /* reasoning, files and provider-executed tool results of earlier turns are not replayed */
        }
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        json_object_set_new(msg, "content", text.len || !json_array_size(calls) ? json_stringn(text.data ? text.data : "", text.len) : json_null());
        if (json_array_size(calls)) json_object_set(msg, "tool_calls", calls);
        json_decref(calls);
        sg_buf_free(&text);
        json_array_append_new(msgs, msg);
        return 0;
    }
    json_array_foreach(c, k, p) {   /* tool */
        const char *t = jstr(p, "type");
        if (strcmp(t, "tool-result")) continue;   /* tool-approval-response: nothing to send */
        const char *id = jstr(p, "toolCallId");
        if (!id) return bad(e, param, "a tool-result part needs a toolCallId string%s", NULL);
        char *out = tool_output_text(json_object_get(p, "output"), i, e);
        if (!out) return -1;
        json_t *s = json_string(out);
        free(out);
        if (!s) return bad(e, param, "a tool output is not valid UTF-8%s", NULL);
        json_array_append_new(msgs, json_pack("{s:s,s:s,s:o}", "role", "tool", "tool_call_id", id, "content", s));
    }
    return 0;
}

static int convert_tools(const json_t *root, json_t *c, gw_api_error *e) {
    const json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) return bad(e, "tools", "tools must be an array%s", NULL);
        json_t *out = json_array();
        size_t i;
        const json_t *t;
        json_array_foreach(tools, i, t) {
            const char *type = jstr(t, "type"), *name = jstr(t, "name");
            if (!json_is_object(t) || !type || !name) { json_decref(out); return bad(e, "tools", "a tool needs a type and a name%s", NULL); }
            if (strcmp(type, "function")) { json_decref(out); return bad(e, "tools", "'%s' tools are not supported (function tools only)", type); }
            const json_t *schema = json_object_get(t, "inputSchema");
            json_t *fn = json_pack("{s:s}", "name", name);
            if (jstr(t, "description")) json_object_set(fn, "description", json_object_get(t, "description"));
            json_object_set_new(fn, "parameters", json_is_object(schema) ? json_incref((json_t *)schema) : json_pack("{s:s}", "type", "object"));
            json_array_append_new(out, json_pack("{s:s,s:o}", "type", "function", "function", fn));
        }
        if (json_array_size(out)) json_object_set(c, "tools", out);
        json_decref(out);
    }
    const json_t *tc = json_object_get(root, "toolChoice");
    if (tc && !json_is_null(tc)) {
        const char *t = jstr(tc, "type");
        if (!t) return bad(e, "toolChoice", "toolChoice needs a type%s", NULL);
        if (!strcmp(t, "auto") || !strcmp(t, "none") || !strcmp(t, "required")) {
            if (json_object_get(c, "tools")) json_object_set_new(c, "tool_choice", json_string(t));
        } else if (!strcmp(t, "tool")) {
            const char *n = jstr(tc, "toolName");
            if (!n) return bad(e, "toolChoice", "a tool toolChoice needs a toolName%s", NULL);
            json_object_set_new(c, "tool_choice", json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name", n));
        } else {
            return bad(e, "toolChoice", "unknown toolChoice type '%s'", t);
        }
    }
    return 0;
}

/* The AI SDK's per-provider switches for parallel tool calls (providerOptions.openai
 * .parallelToolCalls, providerOptions.anthropic.disableParallelToolUse): the canonical body
 * has one field for them, honoured by whichever provider serves the call (a forced tool
 * choice on the local model keeps to one call). Without tools they mean nothing. */
static int convert_parallel(const json_t *root, json_t *c, gw_api_error *e) {
    const json_t *po = json_object_get(root, "providerOptions");
    if (!json_is_object(po) || !json_object_get(c, "tools")) return 0;
    const json_t *v = json_object_get(json_object_get(po, "openai"), "parallelToolCalls");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) return bad(e, "providerOptions.openai.parallelToolCalls", "providerOptions.openai.parallelToolCalls must be a boolean%s", NULL);
        json_object_set(c, "parallel_tool_calls", (json_t *)v);
    }
    v = json_object_get(json_object_get(po, "anthropic"), "disableParallelToolUse");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) return bad(e, "providerOptions.anthropic.disableParallelToolUse", "providerOptions.anthropic.disableParallelToolUse must be a boolean%s", NULL);
        json_object_set_new(c, "parallel_tool_calls", json_boolean(!json_is_true(v)));
    }
    return 0;
}

/* Copies the sampling options that exist in the canonical body under their OpenAI names. */
static int convert_options(const json_t *root, json_t *c, gw_api_error *e) {
    static const struct { const char *from, *to; bool integer; } opts[] = {
        {"maxOutputTokens", "max_completion_tokens", true}, {"temperature", "temperature", false},
        {"topP", "top_p", false}, {"topK", "top_k", true}, {"seed", "seed", true},
        {"presencePenalty", "presence_penalty", false}, {"frequencyPenalty", "frequency_penalty", false},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const json_t *v = json_object_get(root, opts[i].from);
        if (!v || json_is_null(v)) continue;
        if (opts[i].integer ? !json_is_integer(v) : !json_is_number(v))
            return bad(e, opts[i].from, opts[i].integer ? "%s must be an integer" : "%s must be a number", opts[i].from);
        json_object_set(c, opts[i].to, (json_t *)v);
    }
    const json_t *stop = json_object_get(root, "stopSequences");
    if (stop && !json_is_null(stop)) {
        if (!json_is_array(stop)) return bad(e, "stopSequences", "stopSequences must be an array of strings%s", NULL);
        size_t i;
        const json_t *s;
        json_array_foreach(stop, i, s) if (!json_is_string(s)) return bad(e, "stopSequences", "stopSequences must be an array of strings%s", NULL);
        if (json_array_size(stop)) json_object_set(c, "stop", (json_t *)stop);
    }
    const json_t *rf = json_object_get(root, "responseFormat");
    if (rf && !json_is_null(rf)) {
        const char *t = jstr(rf, "type");
        if (!t) return bad(e, "responseFormat", "responseFormat needs a type%s", NULL);
        if (!strcmp(t, "json")) {
            const json_t *schema = json_object_get(rf, "schema");
            if (json_is_object(schema))
                json_object_set_new(c, "response_format",
                                    json_pack("{s:s,s:{s:s,s:O}}", "type", "json_schema", "json_schema", "name",
                                              jstr(rf, "name") ? jstr(rf, "name") : "response", "schema", schema));
            else
                json_object_set_new(c, "response_format", json_pack("{s:s}", "type", "json_object"));
        } else if (strcmp(t, "text")) {
            return bad(e, "responseFormat", "unknown responseFormat type '%s'", t);
        }
    }
    return 0;
}

/* providerOptions.gateway: {order, only, models}, each an array of names. */
static int gateway_list(const json_t *g, const char *key, const char **out, size_t *n, gw_api_error *e) {
    const json_t *a = json_object_get(g, key);
    char param[64];
    snprintf(param, sizeof param, "providerOptions.gateway.%s", key);
    if (!a || json_is_null(a)) return 0;
    if (!json_is_array(a)) return bad(e, param, "%s must be an array of strings", param);
    if (json_array_size(a) + *n > OAI_MAX_MODELS) return gw_api_fail(e, 400, "invalid_request", param, "%s holds more than %d names", param, OAI_MAX_MODELS - 1);
    size_t i;
    const json_t *s;
    json_array_foreach(a, i, s) {
        if (!json_is_string(s) || !json_string_length(s)) return bad(e, param, "%s must be an array of non-empty strings", param);
        if (gw_name_has_control(json_string_value(s), json_string_length(s))) return bad(e, param, "%s: a name must not contain control characters", param);
        out[(*n)++] = json_string_value(s);
    }
    return 0;
}

/* Parses body (with the model id and streaming flag of the headers) into out. */
static int aig_parse(const char *raw, size_t len, const char *model, bool stream, oai_request *out, gw_api_error *e) {
    if (!model || !*model) return gw_api_fail(e, 400, "invalid_request", "ai-language-model-id", "the ai-language-model-id header (the model id) is required");
    if (gw_name_has_control(model, strlen(model)))
        return gw_api_fail(e, 400, "invalid_request", "ai-language-model-id", "a model id must not contain control characters");
    json_t *model_json = json_string(model);   /* NULL: not UTF-8 */
    if (!model_json) return gw_api_fail(e, 400, "invalid_request", "ai-language-model-id", "a model id must be UTF-8");
    json_error_t je;
    json_t *root = json_loadb(raw, len, 0, &je);
    if (!root) {
        json_decref(model_json);
        return gw_api_fail(e, 400, "invalid_json", NULL, "could not parse the JSON body: %s", je.text);
    }
    json_t *c = json_object(), *msgs = json_array();
    int rc = -1;
    if (!json_is_object(root)) { bad(e, NULL, "the body must be a JSON object (the language model call options)%s", NULL); goto done; }
    const json_t *prompt = json_object_get(root, "prompt");
    if (!json_is_array(prompt) || !json_array_size(prompt)) { bad(e, "prompt", "prompt must be a non-empty array of messages%s", NULL); goto done; }
    if (json_array_size(prompt) > AIG_MAX_MESSAGES) { gw_api_fail(e, 400, "invalid_request", "prompt", "a prompt holds at most %d messages", AIG_MAX_MESSAGES); goto done; }
    json_object_set(c, "model", model_json);
    size_t i;
    const json_t *m;
    json_array_foreach(prompt, i, m) if (convert_message(m, i, msgs, e)) goto done;
    json_object_set(c, "messages", msgs);
    if (convert_options(root, c, e) || convert_tools(root, c, e) || convert_parallel(root, c, e)) goto done;
    if (stream) {
        json_object_set_new(c, "stream", json_true());
        json_object_set_new(c, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    if (oai_validate_request(c, e)) goto done;

    /* the routing fields: strings kept alive by ext = [root, model] */
    out->ext = json_pack("[O,O]", root, model_json);
    out->model = json_string_value(json_array_get(out->ext, 1));
    const json_t *po = json_object_get(root, "providerOptions");
    const json_t *g = json_is_object(po) ? json_object_get(po, "gateway") : NULL;
    if (g && !json_is_null(g) && !json_is_object(g)) { bad(e, "providerOptions.gateway", "providerOptions.gateway must be an object%s", NULL); goto fail; }
    if (json_object_get(g, "models") && json_array_size(json_object_get(g, "models"))) out->models[out->n_models++] = out->model;
    if (gateway_list(g, "models", out->models, &out->n_models, e) || gateway_list(g, "order", out->order, &out->n_order, e) ||
        gateway_list(g, "only", out->only, &out->n_only, e))
        goto fail;
    out->body = c;
    c = NULL;
    out->stream = stream;
    out->include_usage = true;
    const json_t *mt = json_object_get(out->body, "max_completion_tokens");
    out->max_tokens = json_is_integer(mt) ? json_integer_value(mt) : -1;
    out->has_tools = json_object_get(out->body, "tools") != NULL;
    rc = 0;
    goto done;
fail:
    json_decref(out->ext);
    memset(out, 0, sizeof *out);
    out->max_tokens = -1;
done:
    json_decref(model_json);
    json_decref(c);
    json_decref(msgs);
    json_decref(root);
    return rc;
}

static int aig_entry_parse(gw_request *r, gw_api_error *e) {
    const char *model = r->http ? http_request_header(r->http, "ai-language-model-id") : NULL;
    const char *st = r->http ? http_request_header(r->http, "ai-language-model-streaming") : NULL;
    return aig_parse(r->raw, r->raw_len, model, st && !strcasecmp(st, "true"), &r->canon, e);
}

static int aig_canonical(gw_request *r, gw_api_error *e) {
    (void)r;   /* parse built it: only reached after a failed parse */
    return gw_api_fail(e, 500, "internal_error", NULL, "the request has no canonical body");
}

static void aig_request_free(gw_request *r) { (void)r; }

/* ---- errors ------------------------------------------------------------------------- */

/* The error type the package turns into its GatewayError classes. */
static const char *aig_error_type(const gw_api_error *e) {
    switch (e->status) {
    case 400: case 413: case 422: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "forbidden";
    case 404: return !strcmp(e->code, "model_not_found") ? "model_not_found" : "not_found";
    case 424: return "failed_dependency";
    case 429: return "rate_limit_exceeded";
    default: return e->status >= 500 ? "internal_server_error" : "invalid_request_error";
    }
}

static json_t *aig_error_json(const gw_api_error *e) {
    json_t *msg = json_string(e->message);   /* NULL: not UTF-8 (a provider's bytes) */
    json_t *o = json_pack("{s:o,s:s}", "message", msg ? msg : json_string("error"), "type", aig_error_type(e));
    json_t *param = e->param[0] ? json_string(e->param) : NULL, *code = e->code[0] ? json_string(e->code) : NULL;
    json_object_set_new(o, "param", param ? param : json_null());
    json_object_set_new(o, "code", code ? code : json_null());
    return o;
}

static void aig_error_body(sg_buf *out, const gw_api_error *e) {
    json_t *doc = json_pack("{s:o}", "error", aig_error_json(e));
    char *s = json_dumps(doc, JSON_COMPACT);
    sg_buf_append(out, s, strlen(s));
    free(s);
    json_decref(doc);
}

/* ---- answers ------------------------------------------------------------------------ */

typedef struct aig_tool {
    char *id, *name;               /* owned */
    sg_buf args;
} aig_tool;

typedef struct aig_render {
    sg_buf *out;
    bool stream, started, text_open, reasoning_open, failed, ended;
    int n_text, n_reasoning;       /* blocks opened: their ids are txt-N, reasoning-N */
    char id[128], model[192];
    char finish[24];
    gw_usage usage;
    bool have_usage;
    gw_api_error error;
    sg_buf text, reasoning;        /* non-stream accumulators */
    aig_tool *tools;
    size_t n_tools;
} aig_render;
_Static_assert(sizeof(aig_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static void part(aig_render *r, json_t *p) {   /* one stream part, stolen */
    char *s = json_dumps(p, JSON_COMPACT);
    sg_buf_append(r->out, "data: ", 6);
    sg_buf_append(r->out, s, strlen(s));
    sg_buf_append(r->out, "\n\n", 2);
    free(s);
    json_decref(p);
}

static void head(aig_render *r) {
    if (r->started || !r->stream) return;
    r->started = true;
    part(r, json_pack("{s:s,s:[]}", "type", "stream-start", "warnings"));
    json_t *md = json_pack("{s:s}", "type", "response-metadata");
    if (r->id[0]) json_object_set_new(md, "id", json_string(r->id));
    json_object_set_new(md, "modelId", json_string(r->model));
    part(r, md);
}

static void block_id(char *buf, size_t n, const char *kind, int k) { snprintf(buf, n, "%s-%d", kind, k); }

static void close_blocks(aig_render *r) {
    char id[32];
    if (r->text_open) {
        block_id(id, sizeof id, "txt", r->n_text - 1);
        part(r, json_pack("{s:s,s:s}", "type", "text-end", "id", id));
        r->text_open = false;
    }
    if (r->reasoning_open) {
        block_id(id, sizeof id, "reasoning", r->n_reasoning - 1);
        part(r, json_pack("{s:s,s:s}", "type", "reasoning-end", "id", id));
        r->reasoning_open = false;
    }
}

static void delta(aig_render *r, bool reasoning, const char *s, size_t n) {
    if (!r->stream) {
        sg_buf_append(reasoning ? &r->reasoning : &r->text, s, n);
        return;
    }
    bool *open = reasoning ? &r->reasoning_open : &r->text_open;
    int *count = reasoning ? &r->n_reasoning : &r->n_text;
    const char *kind = reasoning ? "reasoning" : "txt";
    char id[32];
    if (!*open) {
        close_blocks(r);
        block_id(id, sizeof id, kind, (*count)++);
        part(r, json_pack("{s:s,s:s}", "type", reasoning ? "reasoning-start" : "text-start", "id", id));
        *open = true;
    }
    block_id(id, sizeof id, kind, *count - 1);
    json_t *d = json_stringn(s, n);
    if (!d) return;   /* not UTF-8: providers' bytes are checked upstream; drop rather than break the JSON */
    part(r, json_pack("{s:s,s:s,s:o}", "type", reasoning ? "reasoning-delta" : "text-delta", "id", id, "delta", d));
}

static void tool_delta(aig_render *r, const gw_event *ev) {
    if (ev->index < 0 || ev->index > 1024) return;
    while (r->n_tools <= (size_t)ev->index) {
        r->tools = realloc(r->tools, (r->n_tools + 1) * sizeof *r->tools);
        aig_tool *t = &r->tools[r->n_tools++];
        memset(t, 0, sizeof *t);
        sg_buf_init(&t->args);
    }
    aig_tool *t = &r->tools[ev->index];
    bool fresh = !t->id;
    if (fresh) {
        char gen[48];
        snprintf(gen, sizeof gen, "call_%d", ev->index);
        t->id = strdup(ev->id ? ev->id : gen);
        t->name = strdup(ev->name ? ev->name : "");
        if (r->stream) {
            close_blocks(r);
            part(r, json_pack("{s:s,s:s,s:s}", "type", "tool-input-start", "id", t->id, "toolName", t->name));
        }
    }
    if (ev->len) {
        sg_buf_append(&t->args, ev->text, ev->len);
        json_t *d = json_stringn(ev->text, ev->len);
        if (r->stream && d) part(r, json_pack("{s:s,s:s,s:o}", "type", "tool-input-delta", "id", t->id, "delta", d));
        else json_decref(d);
    }
}

static json_t *tool_call_json(const aig_tool *t) {
    json_t *in = t->args.len ? json_stringn(t->args.data, t->args.len) : json_string("{}");
    if (!in) in = json_string("{}");
    return json_pack("{s:s,s:s,s:s,s:o}", "type", "tool-call", "toolCallId", t->id, "toolName", t->name, "input", in);
}

static const char *unified_finish(const char *f) {
    if (!f[0] || !strcmp(f, "stop")) return "stop";
    if (!strcmp(f, "length")) return "length";
    if (!strcmp(f, "tool_calls")) return "tool-calls";
    if (!strcmp(f, "content_filter")) return "content-filter";
    return "other";
}

static json_t *finish_json(const aig_render *r) {
    const char *f = r->finish[0] ? r->finish : (r->n_tools ? "tool_calls" : "stop");
    return json_pack("{s:s,s:s}", "unified", unified_finish(f), "raw", f);
}

static json_t *count(int64_t n) { return n >= 0 ? json_integer((json_int_t)n) : json_null(); }

/* LanguageModelV4Usage: input total = uncached + cache reads + cache writes. */
static json_t *usage_json(const aig_render *r) {
    gw_usage u = r->usage;
    if (!r->have_usage) gw_usage_init(&u);
    int64_t in = u.input < 0 ? -1 : u.input + (u.cache_read > 0 ? u.cache_read : 0) + (u.cache_write > 0 ? u.cache_write : 0);
    int64_t text = u.output >= 0 ? u.output - (u.reasoning > 0 ? u.reasoning : 0) : -1;
    return json_pack("{s:{s:o,s:o,s:o,s:o},s:{s:o,s:o,s:o}}", "inputTokens", "total", count(in), "noCache", count(u.input),
                     "cacheRead", count(u.cache_read), "cacheWrite", count(u.cache_write), "outputTokens", "total",
                     count(u.output), "text", count(text), "reasoning", count(u.reasoning));
}

static void aig_render_init(gw_render *rs, sg_buf *out, const gw_request *req, const char *model, int64_t created) {
    (void)created;
    aig_render *r = (aig_render *)rs->state;
    memset(r, 0, sizeof *r);
    r->out = out;
    r->stream = req->canon.stream;
    snprintf(r->model, sizeof r->model, "%s", model ? model : "");
    gw_usage_init(&r->usage);
    sg_buf_init(&r->text);
    sg_buf_init(&r->reasoning);
}

/* A failure after the first byte: the stream's error part; non-stream: kept for the end. */
static void fail_render(aig_render *r, const gw_api_error *e) {
    if (r->failed || r->ended) return;
    r->failed = true;
    r->error = *e;
    if (!r->stream) return;
    head(r);
    close_blocks(r);
    part(r, json_pack("{s:s,s:o}", "type", "error", "error", aig_error_json(e)));
}

static int aig_render_event(gw_render *rs, const gw_event *ev) {
    aig_render *r = (aig_render *)rs->state;
    if (r->failed || r->ended) return 0;
    switch (ev->kind) {
    case GW_EV_START:
        if (ev->id && !r->id[0]) snprintf(r->id, sizeof r->id, "%s", ev->id);
        head(r);
        break;
    case GW_EV_TEXT: head(r); delta(r, false, ev->text, ev->len); break;
    case GW_EV_REASONING: head(r); delta(r, true, ev->text, ev->len); break;
    case GW_EV_TOOL_CALL: head(r); tool_delta(r, ev); break;
    case GW_EV_FINISH: snprintf(r->finish, sizeof r->finish, "%s", ev->finish ? ev->finish : "stop"); break;
    case GW_EV_USAGE: r->usage = ev->usage; r->have_usage = true; break;
    case GW_EV_ERROR: {
        gw_api_error e;
        gw_api_fail(&e, ev->status ? ev->status : 500, NULL, NULL, "%.*s", (int)(ev->len < 400 ? ev->len : 400), ev->text ? ev->text : "");
        fail_render(r, &e);
        break;
    }
    case GW_EV_EMBEDDING:   /* embeddings are not requested through this entry */
        break;
    }
    return 0;
}

static void aig_render_error(gw_render *rs, const gw_api_error *e) { fail_render((aig_render *)rs->state, e); }

static int aig_render_end(gw_render *rs) {
    aig_render *r = (aig_render *)rs->state;
    if (r->ended) return 200;
    r->ended = true;
    if (r->failed) {
        if (r->stream) return 200;
        aig_error_body(r->out, &r->error);
        return r->error.status ? r->error.status : 500;
    }
    if (r->stream) {
        head(r);
        close_blocks(r);
        for (size_t i = 0; i < r->n_tools; i++) {
            part(r, json_pack("{s:s,s:s}", "type", "tool-input-end", "id", r->tools[i].id));
            part(r, tool_call_json(&r->tools[i]));
        }
        part(r, json_pack("{s:s,s:o,s:o}", "type", "finish", "finishReason", finish_json(r), "usage", usage_json(r)));
        return 200;
    }
    json_t *content = json_array();
    if (r->reasoning.len) {
        json_t *t = json_stringn(r->reasoning.data, r->reasoning.len);
        if (t) json_array_append_new(content, json_pack("{s:s,s:o}", "type", "reasoning", "text", t));
    }
    if (r->text.len) {
        json_t *t = json_stringn(r->text.data, r->text.len);
        if (t) json_array_append_new(content, json_pack("{s:s,s:o}", "type", "text", "text", t));
    }
    for (size_t i = 0; i < r->n_tools; i++) json_array_append_new(content, tool_call_json(&r->tools[i]));
    json_t *resp = json_pack("{s:s}", "modelId", r->model);
    if (r->id[0]) json_object_set_new(resp, "id", json_string(r->id));
    json_t *doc = json_pack("{s:o,s:o,s:o,s:o,s:[]}", "content", content, "finishReason", finish_json(r), "usage",
                            usage_json(r), "response", resp, "warnings");
    char *s = json_dumps(doc, JSON_COMPACT);
    sg_buf_append(r->out, s, strlen(s));
    free(s);
    json_decref(doc);
    return 200;
}

static void aig_render_free(gw_render *rs) {
    aig_render *r = (aig_render *)rs->state;
    for (size_t i = 0; i < r->n_tools; i++) {
        free(r->tools[i].id);
        free(r->tools[i].name);
        sg_buf_free(&r->tools[i].args);
    }
    free(r->tools);
    r->tools = NULL;
    r->n_tools = 0;
    sg_buf_free(&r->text);
    sg_buf_free(&r->reasoning);
}

const gw_client_api gw_api_ai_gateway = {
    .name = "ai-gateway",
    .paths = {"/v4/ai/language-model", NULL},
    .error_prefix = "/v4/ai/",
    .parse = aig_entry_parse,
    .canonical = aig_canonical,
    .request_free = aig_request_free,
    .splice_openai = NULL,
    .render_init = aig_render_init,
    .render_event = aig_render_event,
    .render_end = aig_render_end,
    .render_error = aig_render_error,
    .render_free = aig_render_free,
    .error_body = aig_error_body,
};

/* ---- embeddings: POST /v4/ai/embedding-model ------------------------------------------
 * The model id in the ai-model-id header; the body {values: [strings], dimensions?,
 * providerOptions?} (EmbeddingModelV4's call options; providerOptions.gateway routes as
 * for the language model, the rest is the providers' and ignored). Kept as the OpenAI
 * embeddings body the providers are built from (the state's emb_request); the answer
 * {embeddings: [[...]], usage: {tokens}, warnings: []}. */

_Static_assert(sizeof(emb_request) <= GW_API_STATE_BYTES, "GW_API_STATE_BYTES holds the request");
_Static_assert(sizeof(emb_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static int aig_embed_parse(gw_request *r, gw_api_error *e) {
    emb_request *q = (emb_request *)r->state;
    memset(q, 0, sizeof *q);
    const char *model = r->http ? http_request_header(r->http, "ai-model-id") : NULL;
    if (!model || !*model) return gw_api_fail(e, 400, "invalid_request", "ai-model-id", "the ai-model-id header (the model id) is required");
    if (gw_name_has_control(model, strlen(model)))
        return gw_api_fail(e, 400, "invalid_request", "ai-model-id", "a model id must not contain control characters");
    json_t *model_json = json_string(model);   /* NULL: not UTF-8 */
    if (!model_json) return gw_api_fail(e, 400, "invalid_request", "ai-model-id", "a model id must be UTF-8");
    json_error_t je;
    json_t *root = json_loadb(r->raw, r->raw_len, JSON_REJECT_DUPLICATES, &je), *c = NULL;
    int rc = -1;
    if (!root) { gw_api_fail(e, 400, "invalid_json", NULL, "could not parse the JSON body: %s", je.text); goto done; }
    if (!json_is_object(root)) { bad(e, NULL, "the body must be a JSON object (the embedding model call options)%s", NULL); goto done; }
    json_t *values = json_object_get(root, "values");
    bool ok = json_is_array(values) && json_array_size(values);
    size_t i;
    json_t *x;
    json_array_foreach(values, i, x) if (!json_is_string(x) || !json_string_length(x)) ok = false;
    if (!ok) { bad(e, "values", "values must be a non-empty array of non-empty strings%s", NULL); goto done; }
    json_t *dims = json_object_get(root, "dimensions");
    c = json_pack("{s:O,s:O}", "model", model_json, "input", values);
    if (dims && !json_is_null(dims)) json_object_set(c, "dimensions", dims);
    rc = emb_check_request(c, q, e);
    c = NULL;   /* taken */
    if (rc) goto done;
    r->canon.body = json_incref(q->body);
    r->canon.model = q->model;
    r->canon.stream = false;
    r->canon.max_tokens = 0;   /* an embedding generates nothing */
    /* the routing lists point into root, kept alive by ext */
    const json_t *po = json_object_get(root, "providerOptions");
    const json_t *g = json_is_object(po) ? json_object_get(po, "gateway") : NULL;
    r->canon.ext = json_incref(root);
    if (g && !json_is_null(g) && !json_is_object(g)) {
        rc = bad(e, "providerOptions.gateway", "providerOptions.gateway must be an object%s", NULL);
    } else {
        if (json_array_size(json_object_get(g, "models"))) r->canon.models[r->canon.n_models++] = r->canon.model;
        rc = gateway_list(g, "models", r->canon.models, &r->canon.n_models, e) ||
             gateway_list(g, "order", r->canon.order, &r->canon.n_order, e) ||
             gateway_list(g, "only", r->canon.only, &r->canon.n_only, e) ? -1 : 0;
    }
done:
    json_decref(c);
    json_decref(root);
    json_decref(model_json);
    return rc ? -1 : 0;
}

static void aig_embed_render_init(gw_render *rs, sg_buf *out, const gw_request *r, const char *model, int64_t created) {
    (void)created;
    emb_render *w = (emb_render *)rs->state;
    emb_render_init(w, out, false, ((const emb_request *)r->state)->n_inputs, model);
    emb_render_shape(w, EMB_SHAPE_AI_GATEWAY, aig_error_body);
}

const gw_client_api gw_api_ai_gateway_embedding = {
    .name = "ai-gateway-embedding",
    .paths = {"/v4/ai/embedding-model", NULL},
    .kind = GW_REQ_EMBEDDINGS,
    .parse = aig_embed_parse,
    .canonical = aig_canonical,
    .request_free = gw_emb_request_free,
    .splice_openai = NULL,
    .render_init = aig_embed_render_init,
    .render_event = gw_emb_render_event,
    .render_end = gw_emb_render_end,
    .render_error = gw_emb_render_error,
    .render_free = gw_emb_render_free,
    .error_body = aig_error_body,
};
