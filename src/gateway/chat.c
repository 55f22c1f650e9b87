/* chat.c: the helpers every codec shares: usage initialisation, the error value, the
 * classification of upstream failures for the router, and finish-reason mapping.
 * See chat.h for the contract. */
#include "gateway/chat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

void gw_usage_init(gw_usage *u) {
    u->input = u->cache_read = u->cache_write = u->output = u->reasoning = -1;
    u->estimated = false;
}

static void copy_str(char *dst, size_t cap, const char *src) {
    if (!src) src = "";
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

bool gw_name_has_control(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return true;
    return false;
}

int gw_api_fail(gw_api_error *e, int status, const char *code, const char *param, const char *fmt, ...) {
    if (!e) return -1;
    memset(e, 0, sizeof *e);
    e->status = status;
    e->retry_after_ms = -1;
    copy_str(e->code, sizeof e->code, code);
    copy_str(e->param, sizeof e->param, param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

const char *gw_error_type_for_status(gw_wire wire, int status) {
    switch (status) {
    case 400: case 422: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return wire == GW_WIRE_ANTHROPIC ? "billing_error" : "insufficient_quota";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: return wire == GW_WIRE_ANTHROPIC ? "timeout_error" : "timeout";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: break;
    }
    if (status >= 500) return wire == GW_WIRE_ANTHROPIC ? "api_error" : "server_error";
    if (status >= 400) return "invalid_request_error";
    return wire == GW_WIRE_ANTHROPIC ? "api_error" : "server_error";
}

const char *gw_failure_name(gw_failure f) {
    switch (f) {
    case GW_FAIL_RETRYABLE: return "retryable";
    case GW_FAIL_CLIENT: return "client";
    case GW_FAIL_QUOTA: return "quota";
    case GW_FAIL_CONTEXT: return "context";
    }
    return "?";
}

/* ---- classification ------------------------------------------------------------------ */

/* Case-insensitive substring search (messages vary in case between providers). */
static bool has_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0) return true;
    return false;
}

static const char *jstr(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

/* Status implied by an error type when none came with it (errors inside a 200 stream). */
static int status_from_type(const char *type) {
    static const struct { const char *type; int status; } map[] = {
        {"invalid_request_error", 400}, {"authentication_error", 401}, {"billing_error", 402},
        {"permission_error", 403}, {"not_found_error", 404}, {"request_too_large", 413},
        {"rate_limit_error", 429}, {"insufficient_quota", 429}, {"api_error", 500},
        {"server_error", 500}, {"overloaded_error", 529}, {"timeout_error", 504},
        /* google.rpc.Code names */
        {"INVALID_ARGUMENT", 400}, {"FAILED_PRECONDITION", 400}, {"OUT_OF_RANGE", 400},
        {"UNAUTHENTICATED", 401}, {"PERMISSION_DENIED", 403}, {"NOT_FOUND", 404},
        {"ABORTED", 409}, {"ALREADY_EXISTS", 409}, {"RESOURCE_EXHAUSTED", 429},
        {"CANCELLED", 499}, {"INTERNAL", 500}, {"UNKNOWN", 500}, {"DATA_LOSS", 500},
        {"UNIMPLEMENTED", 501}, {"UNAVAILABLE", 503}, {"DEADLINE_EXCEEDED", 504},
    };
    if (!type) return 0;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].type, type) == 0) return map[i].status;
    return 0;
}

/* "37s", "1.5s" (google.protobuf.Duration in JSON) -> milliseconds, -1 if not that form. */
static int64_t duration_ms(const char *s) {
    if (!s) return -1;
    char *end;
    double v = strtod(s, &end);
    if (end == s || strcmp(end, "s") != 0 || v < 0 || v > 86400.0 * 365) return -1;
    return (int64_t)(v * 1000.0 + 0.5);
}

static bool context_message(const char *msg) {
    return has_ci(msg, "maximum context length") || has_ci(msg, "context_length_exceeded") ||
           has_ci(msg, "prompt is too long") || has_ci(msg, "exceeds the maximum number of tokens") ||
           has_ci(msg, "context window") || has_ci(msg, "input is too long");
}

gw_failure gw_classify_error(gw_wire wire, int status, const char *body, size_t len, gw_api_error *out) {
    gw_api_error local;
    gw_api_error *e = out ? out : &local;
    memset(e, 0, sizeof *e);
    e->retry_after_ms = -1;

    json_t *root = (body && len) ? json_loadb(body, len, 0, NULL) : NULL;
    /* Gemini's stream answers errors as a one-element array. */
    const json_t *doc = json_is_array(root) ? json_array_get(root, 0) : root;
    const json_t *err = json_object_get(doc, "error");
    const char *type = NULL, *code = NULL, *param = NULL, *msg = NULL, *detail_code = NULL;
    bool per_day_quota = false;
    char codebuf[32];

    if (json_is_string(err)) {              /* {"error": "text"} from some compatible servers */
        msg = json_string_value(err);
    } else if (json_is_object(err)) {
        msg = jstr(err, "message");
        type = jstr(err, "type");
        param = jstr(err, "param");
        const json_t *c = json_object_get(err, "code");
        if (json_is_string(c)) code = json_string_value(c);
        else if (json_is_integer(c) && wire != GW_WIRE_GEMINI) {
            snprintf(codebuf, sizeof codebuf, "%lld", (long long)json_integer_value(c));
            code = codebuf;
        }
        const json_t *details = json_object_get(err, "details");
        if (json_is_object(details)) detail_code = jstr(details, "error_code");   /* Anthropic */
        if (wire == GW_WIRE_GEMINI) {
            const char *st = jstr(err, "status");
            if (json_is_integer(c) && status == 0) status = (int)json_integer_value(c);
            size_t i;
            const json_t *d;
            json_array_foreach(details, i, d) {
                const char *at = jstr(d, "@type");
                if (!at) continue;
                if (strstr(at, "RetryInfo")) e->retry_after_ms = duration_ms(jstr(d, "retryDelay"));
                if (strstr(at, "QuotaFailure")) {
                    size_t k;
                    const json_t *v;
                    json_array_foreach(json_object_get(d, "violations"), k, v) {
                        const char *q = jstr(v, "quotaId");
                        if (q && strstr(q, "PerDay")) per_day_quota = true;
                    }
                }
            }
            code = st;      /* the google.rpc.Code name goes to "code"; type is by status */
            type = NULL;
            if (status == 0) status = status_from_type(st);
        }
    } else if (json_is_object(doc)) {
        msg = jstr(doc, "message");
        if (!msg) msg = jstr(doc, "detail");
    }
    if (status == 0) status = status_from_type(type);
    if (status == 0 && code) status = status_from_type(code);

    e->status = status ? status : 500;
    copy_str(e->type, sizeof e->type, type ? type : gw_error_type_for_status(wire, e->status));
    copy_str(e->code, sizeof e->code, code);
    copy_str(e->param, sizeof e->param, param);
    if (msg && *msg) copy_str(e->message, sizeof e->message, msg);
    else if (body && len && !root) {
        size_t n = len < sizeof e->message - 1 ? len : sizeof e->message - 1;
        memcpy(e->message, body, n);
        e->message[n] = 0;
    } else snprintf(e->message, sizeof e->message, "upstream answered HTTP %d", e->status);
    const char *m = e->message;
    gw_failure f;
    /* Context first: a too-long prompt is a 400 that another target may accept. */
    if (status != 429 && status < 500 &&
        ((code && strcmp(code, "context_length_exceeded") == 0) || context_message(m)))
        f = GW_FAIL_CONTEXT;
    /* Quota: 429s (or 400/402s) that will not clear by waiting minutes. */
    else if ((code && (strcmp(code, "insufficient_quota") == 0 || strcmp(code, "billing_hard_limit_reached") == 0)) ||
             (type && strcmp(type, "insufficient_quota") == 0) ||
             (detail_code && strcmp(detail_code, "enforced_spend_limit_reached") == 0) ||
             (type && strcmp(type, "billing_error") == 0) || status == 402 ||
             has_ci(m, "credit balance is too low") || has_ci(m, "specified api usage limits") ||
             has_ci(m, "specified workspace api usage limits") || per_day_quota)
        f = GW_FAIL_QUOTA;
    else if (status == 408 || status == 409 || status == 425 || status == 429 || status >= 500)
        f = GW_FAIL_RETRYABLE;
    else if (status == 0 || (status >= 200 && status < 300))
        f = GW_FAIL_RETRYABLE;   /* an unknown in-stream failure */
    else
        f = GW_FAIL_CLIENT;
    json_decref(root);   /* type, code, detail_code point into it */
    return f;
}

/* ---- finish reasons ------------------------------------------------------------------ */

const char *gw_finish_from_anthropic(const char *r) {
    if (!r) return "stop";
    if (strcmp(r, "max_tokens") == 0 || strcmp(r, "model_context_window_exceeded") == 0) return "length";
    if (strcmp(r, "tool_use") == 0) return "tool_calls";
    if (strcmp(r, "refusal") == 0) return "content_filter";
    return "stop";   /* end_turn, stop_sequence, pause_turn */
}

const char *gw_finish_from_gemini(const char *r) {
    if (!r) return "stop";
    if (strcmp(r, "MAX_TOKENS") == 0) return "length";
    if (strcmp(r, "SAFETY") == 0 || strcmp(r, "RECITATION") == 0 || strcmp(r, "BLOCKLIST") == 0 ||
        strcmp(r, "PROHIBITED_CONTENT") == 0 || strcmp(r, "SPII") == 0 || strcmp(r, "IMAGE_SAFETY") == 0 ||
        strcmp(r, "IMAGE_PROHIBITED_CONTENT") == 0 || strcmp(r, "IMAGE_RECITATION") == 0)
        return "content_filter";
    return "stop";   /* STOP, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED */
}

const char *gw_finish_to_anthropic(const char *f) {
    if (!f) return "end_turn";
    if (strcmp(f, "length") == 0) return "max_tokens";
    if (strcmp(f, "tool_calls") == 0) return "tool_use";
    if (strcmp(f, "content_filter") == 0) return "refusal";
    return "end_turn";
}

void gw_event_format(const gw_event *ev, sg_buf *b) {
    switch (ev->kind) {
    case GW_EV_START:
        sg_buf_printf(b, "START id=%s model=%s\n", ev->id ? ev->id : "-", ev->name ? ev->name : "-");
        break;
    case GW_EV_TEXT:
    case GW_EV_REASONING:
        sg_buf_puts(b, ev->kind == GW_EV_TEXT ? "TEXT " : "REASONING ");
        sg_buf_json_str(b, ev->text, ev->len);
        sg_buf_putc(b, '\n');
        break;
    case GW_EV_TOOL_CALL:
        sg_buf_printf(b, "TOOL %d id=%s name=%s ", ev->index, ev->id ? ev->id : "-", ev->name ? ev->name : "-");
        sg_buf_json_str(b, ev->text ? ev->text : "", ev->len);
        sg_buf_putc(b, '\n');
        break;
    case GW_EV_FINISH: sg_buf_printf(b, "FINISH %s\n", ev->finish); break;
    case GW_EV_USAGE:
        sg_buf_printf(b, "USAGE in=%lld cr=%lld cw=%lld out=%lld rs=%lld\n", (long long)ev->usage.input,
                      (long long)ev->usage.cache_read, (long long)ev->usage.cache_write, (long long)ev->usage.output,
                      (long long)ev->usage.reasoning);
        break;
    case GW_EV_ERROR:
        sg_buf_printf(b, "ERROR %s %d ", ev->err_type ? ev->err_type : "-", ev->status);
        sg_buf_json_str(b, ev->text, ev->len);
        sg_buf_putc(b, '\n');
        break;
    case GW_EV_EMBEDDING:
        sg_buf_printf(b, "EMBEDDING %d dims=%zu\n", ev->index, ev->dims);
        break;
    }
}

void gw_json_push_turn(json_t *turns, const char *role, const char *items_key, json_t *items) {
    if (!json_array_size(items)) { json_decref(items); return; }
    json_t *last = json_array_get(turns, json_array_size(turns) - 1);
    const char *last_role = json_string_value(json_object_get(last, "role"));
    if (last_role && strcmp(last_role, role) == 0) {
        json_array_extend(json_object_get(last, items_key), items);
        json_decref(items);
        return;
    }
    json_array_append_new(turns, json_pack("{s:s,s:o}", "role", role, items_key, items));
}

/* The prompt as a tokenizer would see it: each message's role and text (string content or
 * text parts), earlier tool calls' names and arguments, and the tool definitions. */
void gw_prompt_text(const json_t *req, sg_buf *out) {
    size_t i, j;
    json_t *m, *part;
    json_array_foreach(json_object_get(req, "messages"), i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role) { sg_buf_puts(out, role); sg_buf_puts(out, ":\n"); }
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content)) sg_buf_append(out, json_string_value(content), json_string_length(content));
        json_array_foreach(content, j, part) {
            json_t *t = json_object_get(part, "text");
            if (json_is_string(t)) { sg_buf_append(out, json_string_value(t), json_string_length(t)); sg_buf_putc(out, '\n'); }
        }
        json_array_foreach(json_object_get(m, "tool_calls"), j, part) {
            json_t *fn = json_object_get(part, "function");
            json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
            if (json_is_string(name)) { sg_buf_append(out, json_string_value(name), json_string_length(name)); sg_buf_putc(out, ' '); }
            if (json_is_string(args)) sg_buf_append(out, json_string_value(args), json_string_length(args));
        }
        sg_buf_putc(out, '\n');
    }
    json_array_foreach(json_object_get(req, "tools"), i, m) {
        char *t = json_dumps(m, JSON_COMPACT);
        if (t) { sg_buf_puts(out, t); sg_buf_putc(out, '\n'); free(t); }
    }
}
