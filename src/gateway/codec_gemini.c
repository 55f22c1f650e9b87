/* codec_gemini.c: see codec_gemini.h. Requests are built and responses read with jansson:
 * Gemini is always a translation (never a pass-through), so there is a tree either way. */
#include "gateway/codec_gemini.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *jstr(const json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

static int dump_to_buf(const char *p, size_t n, void *data) {
    sg_buf_append(data, p, n);
    return 0;
}

static int gfail(gw_api_error *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int gfail(gw_api_error *e, const char *param, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return gw_api_fail(e, 400, "unsupported_value", param, "%s", msg);
}

/* ====================================================================================== */
/* requests */

static bool parse_data_url(const char *url, char *media, size_t cap, const char **data) {
    if (strncmp(url, "data:", 5) != 0) return false;
    const char *semi = strstr(url + 5, ";base64,");
    if (!semi) return false;
    size_t n = (size_t)(semi - (url + 5));
    if (n == 0 || n >= cap) return false;
    memcpy(media, url + 5, n);
    media[n] = 0;
    *data = semi + 8;
    return true;
}

/* A MIME type from a URL's extension, for fileData (Gemini requires one). */
static const char *mime_from_url(const char *url) {
    static const struct { const char *ext, *mime; } map[] = {
        {".png", "image/png"}, {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"}, {".webp", "image/webp"},
        {".gif", "image/gif"}, {".heic", "image/heic"}, {".pdf", "application/pdf"},
    };
    const char *end = url + strcspn(url, "?#");
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i].ext);
        if ((size_t)(end - url) >= n && strncasecmp(end - n, map[i].ext, n) == 0) return map[i].mime;
    }
    return "image/jpeg";
}

static json_t *text_part(const char *s) { return json_pack("{s:s}", "text", s); }

/* OpenAI content -> Gemini parts appended to parts. */
static int content_parts(const json_t *content, json_t *parts, const char *param, gw_api_error *err) {
    if (!content || json_is_null(content)) return 0;
    if (json_is_string(content)) {
        if (*json_string_value(content)) json_array_append_new(parts, text_part(json_string_value(content)));
        return 0;
    }
    size_t i;
    const json_t *p;
    json_array_foreach(content, i, p) {
        const char *t = jstr(p, "type");
        if (!t) continue;
        char media[96];
        const char *data;
        if (strcmp(t, "text") == 0 || strcmp(t, "refusal") == 0) {
            const char *tx = jstr(p, strcmp(t, "text") == 0 ? "text" : "refusal");
            if (tx && *tx) json_array_append_new(parts, text_part(tx));
        } else if (strcmp(t, "image_url") == 0) {
            const char *url = jstr(json_object_get(p, "image_url"), "url");
            if (!url) return gfail(err, param, "%s[%zu].image_url.url is required", param, i);
            if (parse_data_url(url, media, sizeof media, &data))
                json_array_append_new(parts, json_pack("{s:{s:s,s:s}}", "inlineData", "mimeType", media, "data", data));
            else if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0 || strncmp(url, "gs://", 5) == 0)
                json_array_append_new(parts, json_pack("{s:{s:s,s:s}}", "fileData", "mimeType", mime_from_url(url),
                                                       "fileUri", url));
            else
                return gfail(err, param, "%s[%zu]: an image must be a base64 data: URL or a URL", param, i);
        } else if (strcmp(t, "input_audio") == 0) {
            const json_t *a = json_object_get(p, "input_audio");
            const char *d = jstr(a, "data"), *fmt = jstr(a, "format");
            if (!d || !fmt) return gfail(err, param, "%s[%zu].input_audio needs data and format", param, i);
            snprintf(media, sizeof media, "audio/%s", fmt);
            json_array_append_new(parts, json_pack("{s:{s:s,s:s}}", "inlineData", "mimeType", media, "data", d));
        } else if (strcmp(t, "file") == 0) {
            const char *fd = jstr(json_object_get(p, "file"), "file_data");
            if (!fd || !parse_data_url(fd, media, sizeof media, &data))
                return gfail(err, param, "%s[%zu]: Gemini takes files as inline base64 data (file_data)", param, i);
            json_array_append_new(parts, json_pack("{s:{s:s,s:s}}", "inlineData", "mimeType", media, "data", data));
        } else {
            return gfail(err, param, "%s[%zu]: Gemini does not accept '%s' content", param, i, t);
        }
    }
    return 0;
}

static void push_turn(json_t *turns, const char *role, json_t *items) {
    gw_json_push_turn(turns, role, "parts", items);
}

/* The function name of an earlier tool call, by id. */
static const char *call_name(const json_t *msgs, size_t upto, const char *id) {
    for (size_t i = upto; i-- > 0;) {
        const json_t *m = json_array_get(msgs, i);
        size_t j;
        const json_t *tc;
        json_array_foreach(json_object_get(m, "tool_calls"), j, tc) {
            const char *tid = jstr(tc, "id");
            if (tid && strcmp(tid, id) == 0) return jstr(json_object_get(tc, "function"), "name");
        }
    }
    return NULL;
}

static json_t *function_response(const char *name, const json_t *content) {
    json_t *resp = NULL;
    if (json_is_string(content)) {
        json_t *v = json_loads(json_string_value(content), JSON_DECODE_ANY, NULL);
        if (json_is_object(v)) resp = v;
        else {
            resp = json_pack("{s:o}", "result", v ? v : json_string(json_string_value(content)));
        }
    } else if (json_is_array(content)) {   /* text parts: joined */
        sg_buf b;
        sg_buf_init(&b);
        size_t i;
        const json_t *p;
        json_array_foreach(content, i, p) {
            const char *tx = jstr(p, "text");
            if (tx) sg_buf_puts(&b, tx);
        }
        resp = json_pack("{s:s}", "result", b.data ? b.data : "");
        sg_buf_free(&b);
    } else {
        resp = json_pack("{s:s}", "result", "");
    }
    return json_pack("{s:{s:s,s:o}}", "functionResponse", "name", name, "response", resp);
}

static int64_t effort_budget(const char *effort) {
    if (!effort) return -1;
    if (strcmp(effort, "minimal") == 0) return 512;
    if (strcmp(effort, "low") == 0) return 1024;
    if (strcmp(effort, "medium") == 0) return 8192;
    if (strcmp(effort, "high") == 0) return 24576;
    return -1;
}

int gem_build_request(const json_t *req, sg_buf *out, gw_api_error *err) {
    json_t *b = json_object(), *contents = json_array(), *system = json_array(), *gc = json_object();
    int rc = -1;
    const json_t *msgs = json_object_get(req, "messages");
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = jstr(m, "role");
        const json_t *content = json_object_get(m, "content");
        char param[48];
        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (!role) continue;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            if (content_parts(content, system, param, err)) goto done;
        } else if (strcmp(role, "user") == 0) {
            json_t *parts = json_array();
            if (content_parts(content, parts, param, err)) { json_decref(parts); goto done; }
            push_turn(contents, "user", parts);
        } else if (strcmp(role, "assistant") == 0) {
            json_t *parts = json_array();
            if (content_parts(content, parts, param, err)) { json_decref(parts); goto done; }
            size_t j;
            const json_t *tc;
            json_array_foreach(json_object_get(m, "tool_calls"), j, tc) {
                const json_t *fn = json_object_get(tc, "function");
                const char *name = jstr(fn, "name"), *args = jstr(fn, "arguments");
                const char *a = args ? args : "";
                while (*a == ' ' || *a == '\n' || *a == '\t' || *a == '\r') a++;
                json_t *obj = *a ? json_loads(a, 0, NULL) : json_object();
                if (!name || !json_is_object(obj)) {
                    json_decref(obj);
                    json_decref(parts);
                    gfail(err, "messages", "messages[%zu].tool_calls[%zu]: arguments must be a JSON object to send to Gemini", i, j);
                    goto done;
                }
                json_array_append_new(parts, json_pack("{s:{s:s,s:o}}", "functionCall", "name", name, "args", obj));
            }
            push_turn(contents, "model", parts);
        } else if (strcmp(role, "tool") == 0) {
            const char *id = jstr(m, "tool_call_id");
            const char *name = id ? call_name(msgs, i, id) : NULL;
            if (!name) name = jstr(m, "name");
            if (!name) {
                gfail(err, "messages", "messages[%zu]: no earlier tool call has the id '%s'", i, id ? id : "");
                goto done;
            }
            json_t *parts = json_array();
            json_array_append_new(parts, function_response(name, content));
            push_turn(contents, "user", parts);
        } else {
            gfail(err, "messages", "messages[%zu]: role '%s' cannot be sent to Gemini", i, role);
            goto done;
        }
    }
    json_object_set(b, "contents", contents);
    if (json_array_size(system)) json_object_set_new(b, "systemInstruction", json_pack("{s:O}", "parts", system));

    const json_t *v;
    if (json_is_number(v = json_object_get(req, "temperature"))) json_object_set(gc, "temperature", (json_t *)v);
    if (json_is_number(v = json_object_get(req, "top_p"))) json_object_set(gc, "topP", (json_t *)v);
    if (json_is_integer(v = json_object_get(req, "top_k"))) json_object_set(gc, "topK", (json_t *)v);
    v = json_object_get(req, "max_completion_tokens");
    if (!json_is_integer(v)) v = json_object_get(req, "max_tokens");
    if (json_is_integer(v)) json_object_set(gc, "maxOutputTokens", (json_t *)v);
    v = json_object_get(req, "stop");
    if (json_is_string(v)) json_object_set_new(gc, "stopSequences", json_pack("[O]", v));
    else if (json_is_array(v) && json_array_size(v)) json_object_set(gc, "stopSequences", (json_t *)v);
    if (json_is_integer(v = json_object_get(req, "seed"))) json_object_set(gc, "seed", (json_t *)v);
    if (json_is_number(v = json_object_get(req, "presence_penalty"))) json_object_set(gc, "presencePenalty", (json_t *)v);
    if (json_is_number(v = json_object_get(req, "frequency_penalty"))) json_object_set(gc, "frequencyPenalty", (json_t *)v);
    const json_t *rf = json_object_get(req, "response_format");
    const char *rft = jstr(rf, "type");
    if (rft && (strcmp(rft, "json_object") == 0 || strcmp(rft, "json_schema") == 0)) {
        json_object_set_new(gc, "responseMimeType", json_string("application/json"));
        const json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
        if (strcmp(rft, "json_schema") == 0 && json_is_object(schema))
            json_object_set(gc, "responseJsonSchema", (json_t *)schema);
    }
    const json_t *th = json_object_get(req, "thinking");
    int64_t budget = -1;
    if (json_is_object(th) && jstr(th, "type") && strcmp(jstr(th, "type"), "enabled") == 0)
        budget = json_integer_value(json_object_get(th, "budget_tokens"));
    else
        budget = effort_budget(jstr(req, "reasoning_effort"));
    if (budget > 0)
        json_object_set_new(gc, "thinkingConfig", json_pack("{s:I,s:b}", "thinkingBudget", (json_int_t)budget,
                                                            "includeThoughts", 1));
    if (json_object_size(gc)) json_object_set(b, "generationConfig", gc);

    const json_t *tools = json_object_get(req, "tools");
    if (json_is_array(tools) && json_array_size(tools)) {
        json_t *decls = json_array();
        const json_t *t;
        json_array_foreach(tools, i, t) {
            const json_t *fn = json_object_get(t, "function");
            const char *name = jstr(fn, "name");
            if (!name) continue;
            json_t *d = json_pack("{s:s}", "name", name);
            const char *desc = jstr(fn, "description");
            if (desc) json_object_set_new(d, "description", json_string(desc));
            const json_t *params = json_object_get(fn, "parameters");
            if (json_is_object(params)) json_object_set(d, "parametersJsonSchema", (json_t *)params);
            json_array_append_new(decls, d);
        }
        json_object_set_new(b, "tools", json_pack("[{s:o}]", "functionDeclarations", decls));
        const json_t *tc = json_object_get(req, "tool_choice");
        json_t *fcc = NULL;
        if (json_is_string(tc)) {
            const char *s = json_string_value(tc);
            fcc = json_pack("{s:s}", "mode", strcmp(s, "required") == 0 ? "ANY" : strcmp(s, "none") == 0 ? "NONE" : "AUTO");
        } else if (json_is_object(tc)) {
            const char *name = jstr(json_object_get(tc, "function"), "name");
            if (name) fcc = json_pack("{s:s,s:[s]}", "mode", "ANY", "allowedFunctionNames", name);
        }
        if (fcc) json_object_set_new(b, "toolConfig", json_pack("{s:o}", "functionCallingConfig", fcc));
    }
    json_dump_callback(b, dump_to_buf, out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    rc = 0;
done:
    json_decref(b);
    json_decref(contents);
    json_decref(system);
    json_decref(gc);
    return rc;
}

int gem_url_path(sg_buf *out, const char *api_version, const char *model, bool stream, gw_api_error *err) {
    if (!model) return gw_api_fail(err, 400, "invalid_value", "model", "no model name");
    if (strncmp(model, "models/", 7) == 0) model += 7;
    size_t n = strlen(model);
    bool ok = n > 0 && n <= 128;
    for (size_t i = 0; ok && i < n; i++) {
        char c = model[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
             c == '_';
    }
    if (!ok || strcmp(model, ".") == 0 || strcmp(model, "..") == 0)
        return gw_api_fail(err, 400, "invalid_value", "model", "'%s' is not a Gemini model name", model);
    sg_buf_printf(out, "/%s/models/%s:%s", api_version ? api_version : "v1beta", model,
                  stream ? "streamGenerateContent?alt=sse" : "generateContent");
    return 0;
}

/* ====================================================================================== */
/* responses */

void gem_scan_init(gem_scan *s, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    gw_usage_init(&s->last_usage);
}

static uint64_t next_rand(gem_scan *s) {   /* xorshift64* */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static int emit(gw_event_fn fn, void *ctx, const gw_event *ev) { return fn(ctx, ev) ? -1 : 0; }

static int emit_err(gw_event_fn fn, void *ctx, const gw_api_error *e) {
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = GW_EV_ERROR;
    ev.text = e->message;
    ev.len = strlen(e->message);
    ev.err_type = e->code[0] ? e->code : e->type;
    ev.status = e->status;
    return emit(fn, ctx, &ev);
}

static int emit_malformed(gw_event_fn fn, void *ctx, const char *why) {
    gw_api_error e;
    gw_api_fail(&e, 502, NULL, NULL, "malformed response from upstream: %s", why);
    snprintf(e.type, sizeof e.type, "%s", "invalid_response");
    return emit_err(fn, ctx, &e);
}

static int64_t count(const json_t *um, const char *key) {
    const json_t *v = json_object_get(um, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 0;
}

static gw_usage usage_of(const json_t *um) {
    gw_usage u;
    gw_usage_init(&u);
    int64_t prompt = count(um, "promptTokenCount"), cached = count(um, "cachedContentTokenCount");
    int64_t tool = count(um, "toolUsePromptTokenCount");
    int64_t cand = count(um, "candidatesTokenCount"), thoughts = count(um, "thoughtsTokenCount");
    if (cached > prompt) cached = prompt;
    u.input = prompt - cached + tool;
    u.cache_read = cached;
    u.cache_write = 0;
    u.output = cand + thoughts;
    u.reasoning = thoughts;
    return u;
}

static int scan_doc(gem_scan *s, const json_t *d, gw_event_fn fn, void *ctx) {
    gw_event ev;
    if (!s->started) {
        s->started = true;
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_START;
        ev.id = jstr(d, "responseId");
        ev.name = jstr(d, "modelVersion");
        if (emit(fn, ctx, &ev)) return -1;
    }
    const json_t *cands = json_object_get(d, "candidates");
    if (cands && !json_is_array(cands)) return emit_malformed(fn, ctx, "candidates is not an array") ? -1 : GEM_SCAN_ERROR;
    const json_t *cand = json_array_get(cands, 0);
    const json_t *parts = json_object_get(json_object_get(cand, "content"), "parts");
    size_t i;
    const json_t *p;
    json_array_foreach(parts, i, p) {
        const char *text = jstr(p, "text");
        const json_t *call = json_object_get(p, "functionCall");
        if (text && *text) {
            memset(&ev, 0, sizeof ev);
            ev.kind = json_is_true(json_object_get(p, "thought")) ? GW_EV_REASONING : GW_EV_TEXT;
            ev.text = text;
            ev.len = strlen(text);
            if (emit(fn, ctx, &ev)) return -1;
        } else if (json_is_object(call)) {
            const char *name = jstr(call, "name");
            if (!name) return emit_malformed(fn, ctx, "functionCall without a name") ? -1 : GEM_SCAN_ERROR;
            char idbuf[32];
            const char *id = jstr(call, "id");
            if (!id || !*id) {
                uint64_t a = next_rand(s), b = next_rand(s);
                snprintf(idbuf, sizeof idbuf, "call_%016llx%08llx", (unsigned long long)a,
                         (unsigned long long)(b >> 32));
                id = idbuf;
            }
            const json_t *args = json_object_get(call, "args");
            char *a = json_is_object(args) ? json_dumps(args, JSON_COMPACT | JSON_PRESERVE_ORDER) : sg_xstrdup("{}");
            memset(&ev, 0, sizeof ev);
            ev.kind = GW_EV_TOOL_CALL;
            ev.index = s->n_tools++;
            ev.id = id;
            ev.name = name;
            ev.text = a;
            ev.len = strlen(a);
            int rc = emit(fn, ctx, &ev);
            free(a);
            if (rc) return -1;
        }
        /* inlineData (generated images), executableCode...: not in the event model */
    }
    const char *fr = jstr(cand, "finishReason");
    const char *block = jstr(json_object_get(d, "promptFeedback"), "blockReason");
    if (!s->finished && (fr || (block && !cand))) {
        s->finished = true;
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_FINISH;
        if (!fr) ev.finish = "content_filter";
        else {
            ev.finish = gw_finish_from_gemini(fr);
            if (strcmp(ev.finish, "stop") == 0 && s->n_tools) ev.finish = "tool_calls";
        }
        if (emit(fn, ctx, &ev)) return -1;
    }
    const json_t *um = json_object_get(d, "usageMetadata");
    if (json_is_object(um)) {
        gw_usage u = usage_of(um);
        const gw_usage *l = &s->last_usage;
        if (!s->have_usage || u.input != l->input || u.cache_read != l->cache_read || u.output != l->output ||
            u.reasoning != l->reasoning) {
            s->have_usage = true;
            s->last_usage = u;
            memset(&ev, 0, sizeof ev);
            ev.kind = GW_EV_USAGE;
            ev.usage = u;
            if (emit(fn, ctx, &ev)) return -1;
        }
    }
    return 0;
}

int gem_scan_chunk(gem_scan *s, const char *data, size_t len, gw_event_fn fn, void *ctx) {
    if (s->failed) return GEM_SCAN_SKIP;
    size_t k = 0;
    while (k < len && (data[k] == ' ' || data[k] == '\r' || data[k] == '\n' || data[k] == '\t')) k++;
    if (k == len) return GEM_SCAN_SKIP;
    json_t *d = json_loadb(data, len, 0, NULL);
    int rc;
    const json_t *doc = json_is_array(d) ? json_array_get(d, 0) : d;   /* [{...}] error form */
    if (!json_is_object(doc)) {
        s->failed = true;
        rc = emit_malformed(fn, ctx, d ? "a chunk that is not a JSON object" : "invalid JSON") ? -1 : GEM_SCAN_ERROR;
    } else if (json_object_get(doc, "error")) {
        s->failed = true;
        gw_api_error e;
        gw_classify_error(GW_WIRE_GEMINI, 0, data, len, &e);
        rc = emit_err(fn, ctx, &e) ? -1 : GEM_SCAN_ERROR;
    } else {
        rc = scan_doc(s, doc, fn, ctx);
        if (rc == GEM_SCAN_ERROR) s->failed = true;
    }
    json_decref(d);
    return rc;
}

int gem_scan_end(gem_scan *s, gw_event_fn fn, void *ctx) {
    if (s->finished || s->failed) return 0;
    gw_api_error e;
    gw_api_fail(&e, 502, NULL, NULL, "upstream stream ended early");
    snprintf(e.type, sizeof e.type, "%s", "incomplete_response");
    return emit_err(fn, ctx, &e) ? -1 : 1;
}

int gem_scan_response(const char *body, size_t len, uint64_t seed, gw_event_fn fn, void *ctx) {
    gem_scan s;
    gem_scan_init(&s, seed);
    int rc = gem_scan_chunk(&s, body, len, fn, ctx);
    if (rc < 0) return -1;
    if (rc & GEM_SCAN_ERROR) return 1;
    if (!s.finished) {   /* a whole response without a finishReason: it still ended */
        gw_event ev;
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_FINISH;
        ev.finish = s.n_tools ? "tool_calls" : "stop";
        if (emit(fn, ctx, &ev)) return -1;
    }
    return 0;
}
