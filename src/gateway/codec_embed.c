/* codec_embed.c: embeddings on the wire (codec_embed.h). */
#include "gateway/codec_embed.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

/* ---- 1. inbound ---- */

static bool is_token_array(const json_t *a) {
    if (!json_is_array(a) || !json_array_size(a)) return false;
    size_t i;
    json_t *t;
    json_array_foreach(a, i, t) {
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX) return false;
    }
    return true;
}

static int bad_input(gw_api_error *e, const char *why) {
    return gw_api_fail(e, 400, "invalid_value", "input",
                       "'$.input' is invalid: %s. It must be a non-empty string, an array of non-empty strings, "
                       "an array of token ids or an array of token-id arrays (at most %d inputs).",
                       why, EMB_MAX_INPUTS);
}

static int check_input(const json_t *in, emb_request *r, gw_api_error *e) {
    if (!in) return gw_api_fail(e, 400, "missing_required_parameter", "input", "Missing required parameter: 'input'.");
    if (json_is_string(in)) {
        if (!json_string_length(in)) return bad_input(e, "the string is empty");
        r->n_inputs = 1;
        return 0;
    }
    if (!json_is_array(in)) return bad_input(e, "not a string or an array");
    size_t n = json_array_size(in);
    if (!n) return bad_input(e, "the array is empty");
    if (is_token_array(in)) { r->n_inputs = 1; r->tokens = true; return 0; }
    if (n > EMB_MAX_INPUTS) return bad_input(e, "too many inputs");
    size_t i;
    json_t *x;
    bool strings = json_is_string(json_array_get(in, 0));
    json_array_foreach(in, i, x) {
        if (strings) {
            if (!json_is_string(x)) return bad_input(e, "an array mixing strings and other values");
            if (!json_string_length(x)) return bad_input(e, "an input string is empty");
        } else if (!is_token_array(x)) {
            return bad_input(e, "an item is neither a string nor a non-empty array of token ids");
        }
    }
    r->n_inputs = n;
    r->tokens = !strings;
    return 0;
}

int emb_parse_request(const char *body, size_t len, emb_request *out, gw_api_error *e) {
    memset(out, 0, sizeof *out);
    out->dimensions = -1;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return gw_api_fail(e, 400, NULL, NULL,
                           "We could not parse the JSON body of your request. (HINT: The API expects a JSON payload, "
                           "but what was sent was not valid JSON: %s at byte %d.)",
                           je.text, je.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return gw_api_fail(e, 400, NULL, NULL,
                           "We could not parse the JSON body of your request. (HINT: The API expects a JSON object.)");
    }
    return emb_check_request(root, out, e);
}

int emb_check_request(json_t *root, emb_request *out, gw_api_error *e) {
    memset(out, 0, sizeof *out);
    out->dimensions = -1;
    json_t *model = json_object_get(root, "model");
    int rc = 0;
    if (!model) {
        rc = gw_api_fail(e, 400, "missing_required_parameter", "model", "you must provide a model parameter");
    } else if (!json_is_string(model) || !json_string_length(model)) {
        rc = gw_api_fail(e, 400, "invalid_type", "model", "Invalid type for 'model': expected a non-empty string.");
    } else if (gw_name_has_control(json_string_value(model), json_string_length(model))) {
        rc = gw_api_fail(e, 400, "invalid_value", "model", "Invalid value for 'model': it contains a control character.");
    }
    if (!rc) rc = check_input(json_object_get(root, "input"), out, e);
    json_t *fmt = json_object_get(root, "encoding_format");
    if (!rc && fmt && !json_is_null(fmt)) {
        const char *f = json_string_value(fmt);
        if (!f || (strcmp(f, "float") && strcmp(f, "base64")))
            rc = gw_api_fail(e, 400, "invalid_value", "encoding_format",
                             "Invalid value for 'encoding_format': supported values are 'float' and 'base64'.");
        else { out->base64 = !strcmp(f, "base64"); out->has_format = true; }
    }
    json_t *dims = json_object_get(root, "dimensions");
    if (!rc && dims && !json_is_null(dims)) {
        if (!json_is_integer(dims) || json_integer_value(dims) < 1 || json_integer_value(dims) > EMB_MAX_DIMS)
            rc = gw_api_fail(e, 400, "invalid_value", "dimensions",
                             "Invalid value for 'dimensions': expected an integer between 1 and %d.", EMB_MAX_DIMS);
        else out->dimensions = json_integer_value(dims);
    }
    json_t *user = json_object_get(root, "user");
    if (!rc && user && !json_is_null(user) && !json_is_string(user))
        rc = gw_api_fail(e, 400, "invalid_type", "user", "Invalid type for 'user': expected a string.");
    if (rc) {
        json_decref(root);
        memset(out, 0, sizeof *out);
        return -1;
    }
    out->body = root;
    out->model = json_string_value(model);
    return 0;
}

void emb_request_free(emb_request *r) {
    json_decref(r->body);
    memset(r, 0, sizeof *r);
}

/* The inputs as a list: a single string or token array is one input. */
static json_t *input_item(const emb_request *r, size_t i) {
    json_t *in = json_object_get(r->body, "input");
    if (json_is_string(in) || (r->tokens && r->n_inputs == 1 && is_token_array(in))) return in;
    return json_array_get(in, i);
}

void emb_input_text(const emb_request *r, sg_buf *out, int64_t *tokens) {
    for (size_t i = 0; i < r->n_inputs; i++) {
        json_t *x = input_item(r, i);
        if (json_is_string(x)) {
            sg_buf_append(out, json_string_value(x), json_string_length(x));
            sg_buf_putc(out, '\n');
        } else {
            *tokens += (int64_t)json_array_size(x);
        }
    }
}

/* ---- 2. upstream ---- */

void emb_build_openai(const emb_request *r, const char *model, sg_buf *out) {
    json_t *b = json_object();
    json_object_set_new(b, "model", json_string(model));
    json_object_set(b, "input", json_object_get(r->body, "input"));
    if (r->has_format) json_object_set_new(b, "encoding_format", json_string(r->base64 ? "base64" : "float"));
    if (r->dimensions > 0) json_object_set_new(b, "dimensions", json_integer(r->dimensions));
    json_t *user = json_object_get(r->body, "user");
    if (json_is_string(user)) json_object_set(b, "user", user);
    char *s = json_dumps(b, JSON_COMPACT);
    sg_buf_puts(out, s);
    free(s);
    json_decref(b);
}

static json_t *gemini_content(json_t *text) {
    return json_pack("{s:{s:[{s:O}]}}", "content", "parts", "text", text);
}

int emb_build_gemini(const emb_request *r, const char *model, sg_buf *out, const char **method, gw_api_error *e) {
    if (r->tokens)
        return gw_api_fail(e, 400, "invalid_value", "input",
                           "Gemini embeds text only: give 'input' as strings, not token ids.");
    if (!strncmp(model, "models/", 7)) model += 7;
    json_t *b;
    if (r->n_inputs == 1) {
        b = gemini_content(input_item(r, 0));
        if (r->dimensions > 0) json_object_set_new(b, "outputDimensionality", json_integer(r->dimensions));
        *method = "embedContent";
    } else {
        json_t *reqs = json_array();
        char name[300];
        snprintf(name, sizeof name, "models/%s", model);
        for (size_t i = 0; i < r->n_inputs; i++) {
            json_t *q = gemini_content(input_item(r, i));
            json_object_set_new(q, "model", json_string(name));
            if (r->dimensions > 0) json_object_set_new(q, "outputDimensionality", json_integer(r->dimensions));
            json_array_append_new(reqs, q);
        }
        b = json_pack("{s:o}", "requests", reqs);
        *method = "batchEmbedContents";
    }
    char *s = json_dumps(b, JSON_COMPACT);
    sg_buf_puts(out, s);
    free(s);
    json_decref(b);
    return 0;
}

/* ---- base64 ---- */

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void emb_base64_floats(const float *v, size_t n, sg_buf *out) {
    size_t len = n * 4;
    unsigned char *p = malloc(len ? len : 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        p[4 * i] = (unsigned char)u;
        p[4 * i + 1] = (unsigned char)(u >> 8);
        p[4 * i + 2] = (unsigned char)(u >> 16);
        p[4 * i + 3] = (unsigned char)(u >> 24);
    }
    sg_buf_reserve(out, (len + 2) / 3 * 4);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < len ? p[i + 2] : 0);
        char q[4] = {k_b64[w >> 18 & 63], k_b64[w >> 12 & 63], i + 1 < len ? k_b64[w >> 6 & 63] : '=',
                     i + 2 < len ? k_b64[w & 63] : '='};
        sg_buf_append(out, q, 4);
    }
    free(p);
}

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int emb_unbase64_floats(const char *s, size_t len, float **v, size_t *n) {
    *v = NULL;
    *n = 0;
    if (len % 4) return -1;
    size_t pad = len && s[len - 1] == '=' ? (len > 1 && s[len - 2] == '=' ? 2 : 1) : 0;
    size_t bytes = len / 4 * 3 - pad;
    if (bytes % 4) return -1;
    unsigned char *p = malloc(bytes ? bytes : 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int a = b64_val((unsigned char)s[i]), b = b64_val((unsigned char)s[i + 1]);
        bool last = i + 4 == len;
        int c = last && pad >= 2 ? 0 : b64_val((unsigned char)s[i + 2]);
        int d = last && pad >= 1 ? 0 : b64_val((unsigned char)s[i + 3]);
        if (a < 0 || b < 0 || c < 0 || d < 0) { free(p); return -1; }
        uint32_t w = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        unsigned char q[3] = {(unsigned char)(w >> 16), (unsigned char)(w >> 8), (unsigned char)w};
        for (int k = 0; k < 3 && o < bytes; k++) p[o++] = q[k];
    }
    float *f = malloc((bytes / 4 ? bytes / 4 : 1) * sizeof *f);
    for (size_t i = 0; i < bytes / 4; i++) {
        uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                     (uint32_t)p[4 * i + 3] << 24;
        memcpy(&f[i], &u, 4);
    }
    free(p);
    *v = f;
    *n = bytes / 4;
    return 0;
}

/* ---- 3. answers ---- */

/* A vector from an array of numbers or a base64 string: malloc'd, finite values only. */
static int read_vector(const json_t *x, float **v, size_t *n) {
    *v = NULL;
    *n = 0;
    if (json_is_string(x)) {
        if (emb_unbase64_floats(json_string_value(x), json_string_length(x), v, n)) return -1;
    } else if (json_is_array(x)) {
        size_t k = json_array_size(x), i;
        json_t *t;
        *v = malloc((k ? k : 1) * sizeof **v);
        json_array_foreach(x, i, t) {
            if (!json_is_number(t)) { free(*v); *v = NULL; return -1; }
            (*v)[i] = (float)json_number_value(t);
        }
        *n = k;
    } else {
        return -1;
    }
    for (size_t i = 0; i < *n; i++)
        if (!isfinite((*v)[i])) { free(*v); *v = NULL; *n = 0; return -1; }
    if (!*n) { free(*v); *v = NULL; return -1; }
    return 0;
}

typedef struct vecs {
    float **v;
    size_t *dims;
    size_t n;
} vecs;

static void vecs_free(vecs *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    free(s->dims);
}

static int vecs_emit(const vecs *s, gw_event_fn fn, void *ctx) {
    for (size_t i = 0; i < s->n; i++) {
        gw_event ev = {.kind = GW_EV_EMBEDDING, .index = (int)i, .vec = s->v[i], .dims = s->dims[i]};
        if (fn(ctx, &ev)) return -1;
    }
    return 0;
}

int emb_scan_openai(const char *body, size_t len, gw_event_fn fn, void *ctx) {
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *data = json_object_get(root, "data");
    size_t n = json_array_size(data);
    if (!json_is_array(data) || !n || n > EMB_MAX_INPUTS) { json_decref(root); return 1; }
    vecs s = {calloc(n, sizeof(float *)), calloc(n, sizeof(size_t)), n};
    int rc = 0;
    size_t i;
    json_t *d;
    json_array_foreach(data, i, d) {
        json_t *ix = json_object_get(d, "index");
        json_int_t k = ix ? (json_is_integer(ix) ? json_integer_value(ix) : -1) : (json_int_t)i;
        if (k < 0 || (size_t)k >= n || s.v[k] || read_vector(json_object_get(d, "embedding"), &s.v[k], &s.dims[k])) {
            rc = 1;
            break;
        }
    }
    if (!rc) {
        rc = vecs_emit(&s, fn, ctx);
        json_t *u = json_object_get(root, "usage");
        json_t *pt = json_object_get(u, "prompt_tokens");
        if (!rc && json_is_integer(pt) && json_integer_value(pt) >= 0) {
            gw_event ev = {.kind = GW_EV_USAGE};
            ev.usage = (gw_usage){json_integer_value(pt), 0, 0, 0, -1, false};
            rc = fn(ctx, &ev) ? -1 : 0;
        }
    }
    vecs_free(&s);
    json_decref(root);
    return rc;
}

int emb_scan_gemini(const char *body, size_t len, gw_event_fn fn, void *ctx) {
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *one = json_object_get(root, "embedding"), *many = json_object_get(root, "embeddings");
    size_t n = one ? 1 : json_array_size(many);
    if ((!one && !json_is_array(many)) || !n || n > EMB_MAX_INPUTS) { json_decref(root); return 1; }
    vecs s = {calloc(n, sizeof(float *)), calloc(n, sizeof(size_t)), n};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        json_t *e = one ? one : json_array_get(many, i);
        if (read_vector(json_object_get(e, "values"), &s.v[i], &s.dims[i])) rc = 1;
    }
    if (!rc) rc = vecs_emit(&s, fn, ctx);
    vecs_free(&s);
    json_decref(root);
    return rc;
}

/* ---- 4. rendering ---- */

void emb_render_init(emb_render *r, sg_buf *out, bool base64, size_t n_inputs, const char *model) {
    memset(r, 0, sizeof *r);
    r->out = out;
    r->base64 = base64;
    r->n_inputs = n_inputs;
    snprintf(r->model, sizeof r->model, "%s", model ? model : "");
    gw_usage_init(&r->usage);
}

void emb_render_shape(emb_render *r, emb_shape shape, void (*error_body)(sg_buf *out, const gw_api_error *e)) {
    r->shape = shape;
    r->error_body = error_body;
    if (shape != EMB_SHAPE_OPENAI) r->base64 = false;   /* the other shapes carry numbers only */
}

int emb_render_event(void *arg, const gw_event *ev) {
    emb_render *r = arg;
    if (r->failed) return 0;
    if (ev->kind == GW_EV_USAGE) { r->usage = ev->usage; r->have_usage = true; return 0; }
    if (ev->kind == GW_EV_ERROR) {
        gw_api_error e;
        gw_api_fail(&e, ev->status ? ev->status : 502, NULL, NULL, "%.*s", (int)(ev->len < 480 ? ev->len : 480),
                    ev->text ? ev->text : "");
        emb_render_error(r, &e);
        return 0;
    }
    if (ev->kind != GW_EV_EMBEDDING) return 0;
    sg_buf *o = r->out;
    switch (r->shape) {
    case EMB_SHAPE_OPENAI:
        sg_buf_puts(o, r->count ? "," : "{\"object\":\"list\",\"data\":[");
        sg_buf_printf(o, "{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", r->count);
        break;
    case EMB_SHAPE_OLLAMA:
        if (r->count) sg_buf_putc(o, ',');
        else {
            sg_buf_puts(o, "{\"model\":");
            sg_buf_json_str(o, r->model, strlen(r->model));
            sg_buf_puts(o, ",\"embeddings\":[");
        }
        break;
    case EMB_SHAPE_OLLAMA_LEGACY:
        if (r->count) { r->count++; return 0; }   /* one input: render_end sees the surplus */
        sg_buf_puts(o, "{\"embedding\":");
        break;
    case EMB_SHAPE_AI_GATEWAY:
        sg_buf_puts(o, r->count ? "," : "{\"embeddings\":[");
        break;
    }
    if (r->base64) {
        sg_buf_putc(o, '"');
        emb_base64_floats(ev->vec, ev->dims, o);
        sg_buf_putc(o, '"');
    } else {
        sg_buf_putc(o, '[');
        for (size_t i = 0; i < ev->dims; i++) sg_buf_printf(o, i ? ",%.9g" : "%.9g", (double)ev->vec[i]);
        sg_buf_putc(o, ']');
    }
    if (r->shape == EMB_SHAPE_OPENAI) sg_buf_putc(o, '}');
    r->count++;
    return 0;
}

void emb_render_error(emb_render *r, const gw_api_error *e) {
    r->failed = true;
    r->error = *e;
}

int emb_render_end(emb_render *r) {
    if (!r->failed && r->count != r->n_inputs)
        gw_api_fail(&r->error, 502, "upstream_error", NULL, "the provider answered %zu embeddings for %zu inputs",
                    r->count, r->n_inputs), r->failed = true;
    if (r->failed) {
        sg_buf_reset(r->out);
        if (r->error_body) {
            r->error_body(r->out, &r->error);
            return r->error.status;
        }
        json_t *err = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", r->error.message, "type",
                                r->error.type[0] ? r->error.type : gw_error_type_for_status(GW_WIRE_OPENAI, r->error.status),
                                "param", r->error.param[0] ? json_string(r->error.param) : json_null(), "code",
                                r->error.code[0] ? json_string(r->error.code) : json_null());
        char *s = json_dumps(err, JSON_COMPACT);
        sg_buf_puts(r->out, s);
        free(s);
        json_decref(err);
        return r->error.status;
    }
    int64_t p = r->usage.input >= 0 ? r->usage.input : 0;
    if (r->usage.cache_read > 0) p += r->usage.cache_read;
    switch (r->shape) {
    case EMB_SHAPE_OPENAI: break;
    case EMB_SHAPE_OLLAMA:
        sg_buf_printf(r->out, "],\"total_duration\":%lld,\"load_duration\":0,\"prompt_eval_count\":%lld}",
                      (long long)(r->elapsed_ns > 0 ? r->elapsed_ns : 0), (long long)p);
        return 200;
    case EMB_SHAPE_OLLAMA_LEGACY:
        sg_buf_putc(r->out, '}');
        return 200;
    case EMB_SHAPE_AI_GATEWAY:
        sg_buf_printf(r->out, "],\"usage\":{\"tokens\":%lld},\"warnings\":[]}", (long long)p);
        return 200;
    }
    sg_buf_puts(r->out, "],\"model\":");
    sg_buf_json_str(r->out, r->model, strlen(r->model));
    sg_buf_printf(r->out, ",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}", (long long)p, (long long)p);
    return 200;
}
