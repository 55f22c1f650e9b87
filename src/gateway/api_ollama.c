/* api_ollama.c: Ollama's chat and generate APIs as client API entries (POST /api/chat,
 * POST /api/generate; api_ollama.h), and the shapes of its model listings. */
#include "gateway/api_ollama.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gateway/api.h"
#include "gateway/codec_embed.h"

/* ---- 1. requests ---- */

/* A 400 about one element of an array: "messages[3].role must be ...". */
static int bad_at(gw_api_error *e, const char *array, size_t i, const char *what) {
    return gw_api_fail(e, 400, "invalid_request", array, "%s[%zu]%s", array, i, what);
}

/* options -> canonical sampling fields. */
static int parse_options(const json_t *o, json_t *c, int64_t *max_tokens, gw_api_error *e) {
    if (!o || json_is_null(o)) return 0;
    if (!json_is_object(o)) return gw_api_fail(e, 400, "invalid_request", "options", "options must be an object");
    static const char *const numbers[] = {"temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        json_t *v = json_object_get(o, numbers[i]);
        if (!v || json_is_null(v)) continue;
        if (!json_is_number(v)) return gw_api_fail(e, 400, "invalid_request", "options", "options.%s must be a number", numbers[i]);
        json_object_set(c, numbers[i], v);
    }
    json_t *v = json_object_get(o, "top_k");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) return gw_api_fail(e, 400, "invalid_request", "options", "options.top_k must be a non-negative integer");
        json_object_set(c, "top_k", v);
    }
    v = json_object_get(o, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) return gw_api_fail(e, 400, "invalid_request", "options", "options.seed must be an integer");
        json_object_set(c, "seed", v);
    }
    v = json_object_get(o, "num_predict");   /* -1: no limit, -2: fill the context */
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v)) return gw_api_fail(e, 400, "invalid_request", "options", "options.num_predict must be an integer");
        if (json_integer_value(v) > 0) {
            *max_tokens = json_integer_value(v);
            json_object_set(c, "max_tokens", v);
        }
    }
    v = json_object_get(o, "stop");
    if (v && !json_is_null(v)) {
        json_t *stop = json_array();
        if (json_is_string(v)) json_array_append(stop, v);
        else if (json_is_array(v)) {
            size_t i;
            json_t *s;
            json_array_foreach(v, i, s) {
                if (!json_is_string(s)) { json_decref(stop); return bad_at(e, "options.stop", i, " must be a string"); }
                json_array_append(stop, s);
            }
        } else {
            json_decref(stop);
            return gw_api_fail(e, 400, "invalid_request", "options", "options.stop must be an array of strings");
        }
        if (json_array_size(stop)) json_object_set(c, "stop", stop);
        json_decref(stop);
    }
    return 0;
}

static int parse_format(const json_t *f, json_t *c, gw_api_error *e) {
    if (!f || json_is_null(f) || (json_is_string(f) && !json_string_length(f))) return 0;
    if (json_is_string(f) && !strcmp(json_string_value(f), "json")) {
        json_object_set_new(c, "response_format", json_pack("{s:s}", "type", "json_object"));
        return 0;
    }
    if (json_is_object(f)) {
        json_object_set_new(c, "response_format", json_pack("{s:s,s:{s:s,s:O}}", "type", "json_schema", "json_schema",
                                                            "name", "response", "schema", f));
        return 0;
    }
    return gw_api_fail(e, 400, "invalid_request", "format", "format must be \"json\" or a JSON schema object");
}

static int parse_think(const json_t *t, json_t *c, gw_api_error *e) {
    if (!t || json_is_null(t)) return 0;
    int budget = 0;
    if (json_is_boolean(t)) budget = json_is_true(t) ? 2048 : -1;
    else if (json_is_string(t)) {
        const char *s = json_string_value(t);
        budget = !strcmp(s, "low") ? 1024 : !strcmp(s, "medium") ? 2048 : !strcmp(s, "high") ? 8192 : 0;
    }
    if (!budget) return gw_api_fail(e, 400, "invalid_request", "think", "think must be a boolean or \"low\", \"medium\", \"high\"");
    if (budget < 0) json_object_set_new(c, "thinking", json_pack("{s:s}", "type", "disabled"));
    else json_object_set_new(c, "thinking", json_pack("{s:s,s:i}", "type", "enabled", "budget_tokens", budget));
    return 0;
}

/* images: smolgate's models read no images: refused rather than dropped. */
static bool has_items(const json_t *v) { return v && !json_is_null(v) && !(json_is_array(v) && !json_array_size(v)); }

/* A pending tool call of an earlier assistant turn, for the tool results that follow. */
typedef struct pending_call {
    const char *name;
    char id[32];
    bool answered;
} pending_call;

#define OLLAMA_MAX_PENDING 256

static int parse_messages(const json_t *msgs, json_t *out, gw_api_error *e) {
    if (!json_is_array(msgs) || !json_array_size(msgs))
        return gw_api_fail(e, 400, "invalid_request", "messages", "messages must be a non-empty array");
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    pending_call calls[OLLAMA_MAX_PENDING];
    size_t n_calls = 0, n_ids = 0, i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (!json_is_object(m)) return bad_at(e, "messages", i, " must be an object");
        const char *role = json_string_value(json_object_get(m, "role"));
        bool known = false;
        for (size_t k = 0; role && k < 4; k++) known |= !strcmp(role, roles[k]);
        if (!known) return bad_at(e, "messages", i, ".role must be one of system, user, assistant, tool");
        json_t *content = json_object_get(m, "content");
        if (content && !json_is_null(content) && !json_is_string(content))
            return bad_at(e, "messages", i, ".content must be a string");
        if (has_items(json_object_get(m, "images")))
            return bad_at(e, "messages", i, ".images: smolgate's models take no images");
        json_t *cm = json_pack("{s:s}", "role", role);
        json_object_set_new(cm, "content", json_string(json_is_string(content) ? json_string_value(content) : ""));
        json_t *tcs = json_object_get(m, "tool_calls");
        if (has_items(tcs)) {
            if (strcmp(role, "assistant") || !json_is_array(tcs)) {
                json_decref(cm);
                return bad_at(e, "messages", i, ".tool_calls must be an array, in an assistant message");
            }
            json_t *otc = json_array();
            size_t j;
            json_t *tc;
            json_array_foreach(tcs, j, tc) {
                json_t *fn = json_object_get(tc, "function");
                const char *name = json_string_value(json_object_get(fn, "name"));
                json_t *args = json_object_get(fn, "arguments");
                if (!name || (args && !json_is_object(args) && !json_is_string(args))) {
                    json_decref(otc);
                    json_decref(cm);
                    return bad_at(e, "messages", i, ".tool_calls: each needs function.name and object arguments");
                }
                char id[32];
                snprintf(id, sizeof id, "call_%zu", n_ids++);
                char *a = json_is_object(args) ? json_dumps(args, JSON_COMPACT) : NULL;
                json_array_append_new(otc, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", id, "type", "function", "function",
                                                     "name", name, "arguments",
                                                     a ? a : args ? json_string_value(args) : "{}"));
                free(a);
                if (n_calls < OLLAMA_MAX_PENDING) {
                    calls[n_calls].name = name;
                    snprintf(calls[n_calls].id, sizeof calls[n_calls].id, "%s", id);
                    calls[n_calls++].answered = false;
                }
            }
            json_object_set_new(cm, "tool_calls", otc);
            if (!json_string_length(json_object_get(cm, "content"))) json_object_set_new(cm, "content", json_null());
        }
        if (!strcmp(role, "tool")) {   /* matched to the first unanswered call of that name */
            const char *tn = json_string_value(json_object_get(m, "tool_name"));
            if (!tn) tn = json_string_value(json_object_get(m, "name"));
            const char *tid = json_string_value(json_object_get(m, "tool_call_id"));
            pending_call *hit = NULL;
            for (size_t k = 0; !tid && k < n_calls && !hit; k++)
                if (!calls[k].answered && (!tn || !strcmp(calls[k].name, tn))) hit = &calls[k];
            for (size_t k = 0; !tid && k < n_calls && !hit; k++)
                if (!calls[k].answered) hit = &calls[k];
            if (hit) hit->answered = true;
            json_object_set_new(cm, "tool_call_id", json_string(tid ? tid : hit ? hit->id : "call_unknown"));
        }
        json_array_append_new(out, cm);
    }
    return 0;
}

static int parse_tools(const json_t *tools, json_t *c, bool *has_tools, gw_api_error *e) {
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return gw_api_fail(e, 400, "invalid_request", "tools", "tools must be an array");
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        if (!json_is_string(json_object_get(json_object_get(t, "function"), "name")))
            return bad_at(e, "tools", i, " must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    if (json_array_size(tools)) {
        json_object_set(c, "tools", (json_t *)tools);
        *has_tools = true;
    }
    return 0;
}

/* generate's prompt (and system) as chat messages; what it cannot honour refused. */
static int generate_messages(const json_t *root, json_t *msgs, gw_api_error *e) {
    const json_t *prompt = json_object_get(root, "prompt"), *system = json_object_get(root, "system");
    if (!json_is_string(prompt)) return gw_api_fail(e, 400, "invalid_request", "prompt", "prompt must be a string");
    if (system && !json_is_null(system) && !json_is_string(system))
        return gw_api_fail(e, 400, "invalid_request", "system", "system must be a string");
    const json_t *suffix = json_object_get(root, "suffix");
    if (suffix && !json_is_null(suffix) && (!json_is_string(suffix) || json_string_length(suffix)))
        return gw_api_fail(e, 400, "invalid_request", "suffix", "suffix (fill-in-the-middle) is not supported by smolgate");
    const json_t *raw = json_object_get(root, "raw");
    if (raw && !json_is_null(raw) && !json_is_boolean(raw)) return gw_api_fail(e, 400, "invalid_request", "raw", "raw must be a boolean");
    if (json_is_true(raw))
        return gw_api_fail(e, 400, "invalid_request", "raw", "raw prompts are not supported: smolgate sends the prompt as a chat message");
    const json_t *tpl = json_object_get(root, "template");
    if (tpl && !json_is_null(tpl) && (!json_is_string(tpl) || json_string_length(tpl)))
        return gw_api_fail(e, 400, "invalid_request", "template", "template is not supported: each model's own chat template applies");
    if (has_items(json_object_get(root, "context")))
        return gw_api_fail(e, 400, "invalid_request", "context", "context is not supported: send the conversation to /api/chat");
    if (has_items(json_object_get(root, "images")))
        return gw_api_fail(e, 400, "invalid_request", "images", "images: smolgate's models take no images");
    if (json_string_length(system)) json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "system", "content", system));
    json_array_append_new(msgs, json_pack("{s:s,s:O}", "role", "user", "content", prompt));
    return 0;
}

int ollama_parse_request(const char *body, size_t len, bool generate, oai_request *out, gw_api_error *e) {
    out->body = NULL;
    out->model = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
    if (!root) return gw_api_fail(e, 400, "invalid_json", NULL, "invalid JSON body: %s", jerr.text);
    json_t *c = NULL;
    int rc = -1;
    if (!json_is_object(root)) { gw_api_fail(e, 400, "invalid_request", NULL, "the body must be a JSON object"); goto done; }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_string(model) || !json_string_length(model)) { gw_api_fail(e, 400, "invalid_request", "model", "model is required"); goto done; }
    if (gw_name_has_control(json_string_value(model), json_string_length(model))) {
        gw_api_fail(e, 400, "invalid_request", "model", "model must not contain control characters");
        goto done;
    }
    const json_t *stream = json_object_get(root, "stream");
    if (stream && !json_is_null(stream) && !json_is_boolean(stream)) {
        gw_api_fail(e, 400, "invalid_request", "stream", "stream must be a boolean");
        goto done;
    }
    bool streamed = !json_is_false(stream);   /* Ollama streams unless told not to */
    c = json_pack("{s:O,s:b}", "model", model, "stream", streamed);
    json_t *msgs = json_array();
    json_object_set_new(c, "messages", msgs);
    int64_t max_tokens = -1;
    bool has_tools = false;
    if (generate ? generate_messages(root, msgs, e) : parse_messages(json_object_get(root, "messages"), msgs, e)) goto done;
    if (!generate && parse_tools(json_object_get(root, "tools"), c, &has_tools, e)) goto done;
    if (parse_options(json_object_get(root, "options"), c, &max_tokens, e)) goto done;
    if (parse_format(json_object_get(root, "format"), c, e)) goto done;
    if (parse_think(json_object_get(root, "think"), c, e)) goto done;
    out->body = c;
    c = NULL;
    out->model = json_string_value(json_object_get(out->body, "model"));
    out->stream = streamed;
    out->include_usage = true;   /* the done line always carries the counts */
    out->max_tokens = max_tokens;
    out->has_tools = has_tools;
    rc = 0;
done:
    json_decref(c);
    json_decref(root);
    return rc;
}

/* ---- 2. answers ---- */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ollama_render_init(ollama_render *r, sg_buf *out, bool generate, bool stream, const char *model, int64_t created) {
    memset(r, 0, sizeof *r);
    r->out = out;
    r->generate = generate;
    r->stream = stream;
    snprintf(r->model, sizeof r->model, "%s", model ? model : "");
    time_t t = (time_t)created;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(r->created_at, sizeof r->created_at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    r->t0_ns = mono_ns();
    snprintf(r->done_reason, sizeof r->done_reason, "stop");
    gw_usage_init(&r->usage);
    sg_buf_init(&r->content);
    sg_buf_init(&r->thinking);
}

/* {"model":..,"created_at":.., */
static void line_head(ollama_render *r) {
    sg_buf_puts(r->out, "{\"model\":");
    sg_buf_json_str(r->out, r->model, strlen(r->model));
    sg_buf_puts(r->out, ",\"created_at\":\"");
    sg_buf_puts(r->out, r->created_at);
    sg_buf_puts(r->out, "\",");
}

static void put_tool_calls(ollama_render *r) {
    sg_buf_puts(r->out, ",\"tool_calls\":[");
    for (size_t i = 0; i < r->n_tools; i++) {
        ollama_tool *t = &r->tools[i];
        sg_buf_puts(r->out, i ? ",{\"function\":{\"name\":" : "{\"function\":{\"name\":");
        sg_buf_json_str(r->out, t->name ? t->name : "", t->name ? strlen(t->name) : 0);
        sg_buf_printf(r->out, ",\"index\":%zu,\"arguments\":", i);
        json_t *a = t->args.len ? json_loadb(t->args.data, t->args.len, 0, NULL) : json_object();
        if (json_is_object(a)) {   /* Ollama's arguments are an object, not a string */
            char *s = json_dumps(a, JSON_COMPACT);
            sg_buf_puts(r->out, s);
            free(s);
        } else {
            sg_buf_json_str(r->out, t->args.data ? t->args.data : "", t->args.len);
        }
        json_decref(a);
        sg_buf_puts(r->out, "}}");
    }
    sg_buf_putc(r->out, ']');
}

/* The answer's part: "message":{...} (chat) or "response":..,"thinking":.. (generate). */
static void put_part(ollama_render *r, const char *content, size_t clen, const char *thinking, size_t tlen, bool tools) {
    if (r->generate) {
        sg_buf_puts(r->out, "\"response\":");
        sg_buf_json_str(r->out, content, clen);
        if (tlen) { sg_buf_puts(r->out, ",\"thinking\":"); sg_buf_json_str(r->out, thinking, tlen); }
        sg_buf_putc(r->out, ',');
        return;
    }
    sg_buf_puts(r->out, "\"message\":{\"role\":\"assistant\",\"content\":");
    sg_buf_json_str(r->out, content, clen);
    if (tlen) { sg_buf_puts(r->out, ",\"thinking\":"); sg_buf_json_str(r->out, thinking, tlen); }
    if (tools) put_tool_calls(r);
    sg_buf_puts(r->out, "},");
}

static void emit_delta(ollama_render *r, const char *content, size_t clen, const char *thinking, size_t tlen, bool tools) {
    line_head(r);
    put_part(r, content, clen, thinking, tlen, tools);
    sg_buf_puts(r->out, "\"done\":false}\n");
}

static ollama_tool *tool_at(ollama_render *r, int index) {
    if (index < 0 || index > 1024) return NULL;
    while ((size_t)index >= r->n_tools) {
        if (r->n_tools == r->cap_tools) {
            r->cap_tools = r->cap_tools ? r->cap_tools * 2 : 4;
            r->tools = sg_xrealloc(r->tools, r->cap_tools * sizeof *r->tools);
        }
        ollama_tool *t = &r->tools[r->n_tools++];
        t->name = NULL;
        sg_buf_init(&t->args);
    }
    return &r->tools[index];
}

static void flush_tools(ollama_render *r) {
    if (!r->stream || r->tools_sent || !r->n_tools) return;
    r->tools_sent = true;
    emit_delta(r, "", 0, NULL, 0, true);
}

int ollama_render_event(void *ctx, const gw_event *ev) {
    ollama_render *r = ctx;
    if (r->failed || r->ended) return 0;
    switch (ev->kind) {
    case GW_EV_START:
    case GW_EV_EMBEDDING:   /* not a chat event */
        break;
    case GW_EV_TEXT:
    case GW_EV_REASONING:
        if (!ev->len) break;
        if (!r->t_first_ns) r->t_first_ns = mono_ns();
        if (r->stream) {
            if (ev->kind == GW_EV_TEXT) emit_delta(r, ev->text, ev->len, NULL, 0, false);
            else emit_delta(r, "", 0, ev->text, ev->len, false);
        } else {
            sg_buf_append(ev->kind == GW_EV_TEXT ? &r->content : &r->thinking, ev->text, ev->len);
        }
        break;
    case GW_EV_TOOL_CALL: {
        if (!r->t_first_ns) r->t_first_ns = mono_ns();
        ollama_tool *t = tool_at(r, ev->index);
        if (!t) break;
        if (ev->name && !t->name) t->name = sg_xstrdup(ev->name);
        if (ev->len) sg_buf_append(&t->args, ev->text, ev->len);
        break;
    }
    case GW_EV_FINISH:
        /* Ollama says "stop" after tool calls too */
        snprintf(r->done_reason, sizeof r->done_reason, "%s", ev->finish && !strcmp(ev->finish, "length") ? "length" : "stop");
        flush_tools(r);
        break;
    case GW_EV_USAGE:
        r->usage = ev->usage;
        r->have_usage = true;
        break;
    case GW_EV_ERROR: {
        gw_api_error e;
        gw_api_fail(&e, ev->status ? ev->status : 502, "upstream_error", NULL, "%.*s", (int)(ev->len > 400 ? 400 : ev->len),
                    ev->text ? ev->text : "");
        ollama_render_error(r, &e);
        break;
    }
    }
    return 0;
}

static int64_t count_or_zero(int64_t v) { return v > 0 ? v : 0; }

static void put_done(ollama_render *r) {
    uint64_t now = mono_ns(), first = r->t_first_ns ? r->t_first_ns : now;
    int64_t prompt = count_or_zero(r->usage.input) + count_or_zero(r->usage.cache_read) + count_or_zero(r->usage.cache_write);
    sg_buf_puts(r->out, "\"done\":true,\"done_reason\":");
    sg_buf_json_str(r->out, r->done_reason, strlen(r->done_reason));
    sg_buf_printf(r->out,
                  ",\"total_duration\":%llu,\"load_duration\":0,\"prompt_eval_count\":%lld,\"prompt_eval_duration\":%llu,"
                  "\"eval_count\":%lld,\"eval_duration\":%llu}",
                  (unsigned long long)(now - r->t0_ns), (long long)prompt, (unsigned long long)(first - r->t0_ns),
                  (long long)count_or_zero(r->usage.output), (unsigned long long)(now - first));
}

int ollama_render_end(ollama_render *r) {
    if (r->failed) {
        if (r->stream) return 200;
        sg_buf_reset(r->out);
        ollama_error_body(r->out, &r->error);
        return r->error.status;
    }
    if (r->ended) return 200;
    r->ended = true;
    if (r->stream) {
        flush_tools(r);   /* calls that came without a finish */
        line_head(r);
        put_part(r, "", 0, NULL, 0, false);
        put_done(r);
        sg_buf_putc(r->out, '\n');
        return 200;
    }
    line_head(r);
    put_part(r, r->content.data ? r->content.data : "", r->content.len, r->thinking.data, r->thinking.len, r->n_tools > 0);
    put_done(r);
    return 200;
}

void ollama_render_error(ollama_render *r, const gw_api_error *e) {
    if (r->failed || r->ended) return;
    r->failed = true;
    r->error = *e;
    if (r->stream) {
        ollama_error_body(r->out, e);
        sg_buf_putc(r->out, '\n');
    }
}

void ollama_render_free(ollama_render *r) {
    sg_buf_free(&r->content);
    sg_buf_free(&r->thinking);
    for (size_t i = 0; i < r->n_tools; i++) {
        free(r->tools[i].name);
        sg_buf_free(&r->tools[i].args);
    }
    free(r->tools);
    r->tools = NULL;
    r->n_tools = r->cap_tools = 0;
}

void ollama_error_body(sg_buf *out, const gw_api_error *e) {
    sg_buf_puts(out, "{\"error\":");
    sg_buf_json_str(out, e->message, strlen(e->message));
    sg_buf_putc(out, '}');
}

/* ---- 3. model listings ---- */

json_t *ollama_model_json(const char *name, const char *family, int64_t modified) {
    /* a digest stable per name: FNV-1a, four lanes, 64 hex digits */
    char digest[65];
    for (int lane = 0; lane < 4; lane++) {
        uint64_t h = 1469598103934665603ull ^ (uint64_t)lane;
        for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        snprintf(digest + lane * 16, 17, "%016llx", (unsigned long long)h);
    }
    time_t t = (time_t)modified;
    struct tm tm;
    gmtime_r(&t, &tm);
    char when[40];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_pack("{s:s,s:s,s:s,s:i,s:s,s:{s:s,s:s,s:s,s:[s],s:s,s:s}}", "name", name, "model", name, "modified_at", when,
                     "size", 0, "digest", digest, "details", "parent_model", "", "format",
                     strcmp(family, "local") ? "remote" : "gguf", "family", family, "families", family, "parameter_size",
                     "", "quantization_level", "");
}

/* ---- the client API entries ---- */

_Static_assert(sizeof(ollama_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static int chat_parse(gw_request *r, gw_api_error *e) { return ollama_parse_request(r->raw, r->raw_len, false, &r->canon, e); }
static int generate_parse(gw_request *r, gw_api_error *e) { return ollama_parse_request(r->raw, r->raw_len, true, &r->canon, e); }

static int ollama_canonical(gw_request *r, gw_api_error *e) {
    (void)r;   /* parse built it: only reached after a failed parse */
    return gw_api_fail(e, 500, "internal_error", NULL, "the request has no canonical body");
}

static void ollama_request_free(gw_request *r) { (void)r; }   /* the body is canon's */

static void ollama_api_render_init(gw_render *rs, sg_buf *out, const gw_request *r, const char *model, int64_t created) {
    ollama_render_init((ollama_render *)rs->state, out, r->api == &gw_api_ollama_generate, r->canon.stream, model, created);
}
static int ollama_api_render_event(gw_render *rs, const gw_event *ev) { return ollama_render_event(rs->state, ev); }
static int ollama_api_render_end(gw_render *rs) { return ollama_render_end((ollama_render *)rs->state); }
static void ollama_api_render_error(gw_render *rs, const gw_api_error *e) { ollama_render_error((ollama_render *)rs->state, e); }
static void ollama_api_render_free(gw_render *rs) { ollama_render_free((ollama_render *)rs->state); }

const gw_client_api gw_api_ollama_chat = {
    .name = "ollama-chat",
    .paths = {"/api/chat", NULL},
    .error_prefix = "/api/",
    .stream_content_type = "application/x-ndjson",
    .parse = chat_parse,
    .canonical = ollama_canonical,
    .request_free = ollama_request_free,
    .splice_openai = NULL,
    .render_init = ollama_api_render_init,
    .render_event = ollama_api_render_event,
    .render_end = ollama_api_render_end,
    .render_error = ollama_api_render_error,
    .render_free = ollama_api_render_free,
    .error_body = ollama_error_body,
};

const gw_client_api gw_api_ollama_generate = {
    .name = "ollama-generate",
    .paths = {"/api/generate", NULL},
    .stream_content_type = "application/x-ndjson",
    .parse = generate_parse,
    .canonical = ollama_canonical,
    .request_free = ollama_request_free,
    .splice_openai = NULL,
    .render_init = ollama_api_render_init,
    .render_event = ollama_api_render_event,
    .render_end = ollama_api_render_end,
    .render_error = ollama_api_render_error,
    .render_free = ollama_api_render_free,
    .error_body = ollama_error_body,
};

/* ---- embeddings: POST /api/embed and the legacy POST /api/embeddings ---- */

_Static_assert(sizeof(emb_request) <= GW_API_STATE_BYTES, "GW_API_STATE_BYTES holds the request");

/* The body as the OpenAI embeddings body the providers are built from ({model, input,
 * dimensions}): the state's emb_request, as api_openai_embeddings.c keeps it. truncate,
 * keep_alive and options are the runner's and are checked for type only. */
static int embed_parse(gw_request *r, bool legacy, gw_api_error *e) {
    emb_request *q = (emb_request *)r->state;
    memset(q, 0, sizeof *q);
    json_error_t je;
    json_t *root = json_loadb(r->raw, r->raw_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return gw_api_fail(e, 400, "invalid_request", NULL, "invalid JSON body: %s", je.text);
    json_t *c = NULL;
    int rc = -1;
    if (!json_is_object(root)) { gw_api_fail(e, 400, "invalid_request", NULL, "the body must be a JSON object"); goto done; }
    json_t *model = json_object_get(root, "model");
    if (!json_is_string(model) || !json_string_length(model)) { gw_api_fail(e, 400, "invalid_request", "model", "model is required"); goto done; }
    const char *in_key = legacy ? "prompt" : "input";
    json_t *in = json_object_get(root, in_key);
    bool ok = json_is_string(in) && json_string_length(in);
    if (!legacy && json_is_array(in) && json_array_size(in)) {
        ok = true;
        size_t i;
        json_t *x;
        json_array_foreach(in, i, x) if (!json_is_string(x) || !json_string_length(x)) ok = false;
    }
    if (!ok) {
        gw_api_fail(e, 400, "invalid_request", in_key, legacy ? "prompt must be a non-empty string"
                                                               : "input must be a non-empty string or a non-empty array of non-empty strings");
        goto done;
    }
    json_t *t = json_object_get(root, "truncate"), *o = json_object_get(root, "options");
    if (t && !json_is_null(t) && !json_is_boolean(t)) { gw_api_fail(e, 400, "invalid_request", "truncate", "truncate must be a boolean"); goto done; }
    if (o && !json_is_null(o) && !json_is_object(o)) { gw_api_fail(e, 400, "invalid_request", "options", "options must be an object"); goto done; }
    c = json_pack("{s:O,s:O}", "model", model, "input", in);
    json_t *dims = json_object_get(root, "dimensions");
    if (!legacy && dims && !json_is_null(dims)) json_object_set(c, "dimensions", dims);
    rc = emb_check_request(c, q, e);
    c = NULL;   /* taken */
    if (rc) goto done;
    r->canon.body = json_incref(q->body);
    r->canon.model = q->model;
    r->canon.stream = false;
    r->canon.max_tokens = 0;   /* an embedding generates nothing */
done:
    json_decref(c);
    json_decref(root);
    return rc ? -1 : 0;
}

static int embed_api_parse(gw_request *r, gw_api_error *e) { return embed_parse(r, false, e); }
static int embeddings_api_parse(gw_request *r, gw_api_error *e) { return embed_parse(r, true, e); }

typedef struct embed_render {
    emb_render emb;                /* first: gw_emb_render_* work on it */
    uint64_t t0_ns;                /* monotonic: init, for total_duration */
} embed_render;
_Static_assert(sizeof(embed_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static void embed_render_init(gw_render *rs, sg_buf *out, const gw_request *r, const char *model, int64_t created) {
    (void)created;
    embed_render *w = (embed_render *)rs->state;
    emb_render_init(&w->emb, out, false, ((const emb_request *)r->state)->n_inputs, model);
    emb_render_shape(&w->emb, r->api == &gw_api_ollama_embeddings ? EMB_SHAPE_OLLAMA_LEGACY : EMB_SHAPE_OLLAMA,
                     ollama_error_body);
    w->t0_ns = mono_ns();
}
static int embed_render_end(gw_render *rs) {
    embed_render *w = (embed_render *)rs->state;
    w->emb.elapsed_ns = (int64_t)(mono_ns() - w->t0_ns);
    return emb_render_end(&w->emb);
}

const gw_client_api gw_api_ollama_embed = {
    .name = "ollama-embed",
    .paths = {"/api/embed", NULL},
    .kind = GW_REQ_EMBEDDINGS,
    .parse = embed_api_parse,
    .canonical = ollama_canonical,
    .request_free = gw_emb_request_free,
    .splice_openai = NULL,
    .render_init = embed_render_init,
    .render_event = gw_emb_render_event,
    .render_end = embed_render_end,
    .render_error = gw_emb_render_error,
    .render_free = gw_emb_render_free,
    .error_body = ollama_error_body,
};

const gw_client_api gw_api_ollama_embeddings = {
    .name = "ollama-embeddings",
    .paths = {"/api/embeddings", NULL},
    .kind = GW_REQ_EMBEDDINGS,
    .parse = embeddings_api_parse,
    .canonical = ollama_canonical,
    .request_free = gw_emb_request_free,
    .splice_openai = NULL,
    .render_init = embed_render_init,
    .render_event = gw_emb_render_event,
    .render_end = embed_render_end,
    .render_error = gw_emb_render_error,
    .render_free = gw_emb_render_free,
    .error_body = ollama_error_body,
};
