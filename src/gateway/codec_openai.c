/* codec_openai.c: see codec_openai.h. Sections: the zero-allocation JSON reader, the
 * chunk/response scanner on top of it, request validation (jansson), upstream bodies, the
 * renderer, error bodies. */
#include "gateway/codec_openai.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ====================================================================================== */
/* A pull reader over JSON text: validates as it goes (RFC 8259 syntax, string escapes,
 * UTF-8, paired surrogates) and hands out strings as raw slices, decoded only on demand.
 * Nothing is allocated; nesting is bounded. */

#define JR_MAX_DEPTH 64

typedef struct jr {
    const unsigned char *p, *end;
    int depth;
    bool bad;
    const char *why;   /* first error, for the ERROR event */
} jr;

typedef struct jslice {
    const char *s;     /* raw bytes between the quotes */
    size_t n;
    bool esc;          /* has backslash escapes: decode before use */
} jslice;

static bool jr_fail(jr *r, const char *why) {
    if (!r->bad) { r->bad = true; r->why = why; }
    return false;
}

static void jr_ws(jr *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) r->p++;
}

static int jr_peek(jr *r) {
    jr_ws(r);
    return r->p < r->end ? *r->p : -1;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const unsigned char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Length of a valid UTF-8 sequence at p (first byte >= 0x80), 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) { n = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) n = 3;
    else if (c == 0xED) { n = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) n = 3;
    else if (c == 0xF0) { n = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) { n = 4; hi = 0x8F; }
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

/* 1 for the bytes a string can hold as they are: printable ASCII but '"' and '\\'. */
static const unsigned char plain_byte[256] = {
    ['\x20'] = 1, 1, 0 /* " */, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,            /* 0x20-0x2F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,                           /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,                           /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0 /* \\ */, 1, 1, 1,                  /* 0x50 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,                           /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,                           /* 0x70 */
};

/* At a '"': reads a string, validating it. */
static bool jr_string(jr *r, jslice *out) {
    if (jr_peek(r) != '"') return jr_fail(r, "expected a string");
    const unsigned char *p = ++r->p, *end = r->end;
    bool esc = false;
    for (;;) {
        /* the common run of plain ASCII, eight bytes at a time: a word is plain when no
         * byte is < 0x20, '"', '\\' or >= 0x80 (the usual SWAR byte tests) */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
            uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
            uint64_t special = ((w - ones * 0x20) & ~w & high)   /* a byte < 0x20 */
                               | ((q - ones) & ~q & high)        /* a '"' */
                               | ((b - ones) & ~b & high)        /* a backslash */
                               | (w & high);                     /* a byte >= 0x80 */
            if (special) break;
            p += 8;
        }
        while (p < end && plain_byte[*p]) p++;
        if (p >= end) return jr_fail(r, "unterminated string");
        unsigned c = *p;
        if (c == '"') break;
        if (c == '\\') {
            esc = true;
            if (end - p < 2) return jr_fail(r, "unterminated string");
            unsigned e = p[1];
            if (e == 'u') {
                if (end - p < 6) return jr_fail(r, "bad \\u escape");
                int v = hex4(p + 2);
                if (v < 0) return jr_fail(r, "bad \\u escape");
                p += 6;
                if (v >= 0xD800 && v <= 0xDBFF) {   /* must be followed by a low surrogate */
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return jr_fail(r, "lone surrogate");
                    int lo = hex4(p + 2);
                    if (lo < 0xDC00 || lo > 0xDFFF) return jr_fail(r, "lone surrogate");
                    p += 6;
                } else if (v >= 0xDC00 && v <= 0xDFFF) {
                    return jr_fail(r, "lone surrogate");
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", (int)e) || e == 0) return jr_fail(r, "bad escape");
            p += 2;
            continue;
        }
        if (c < 0x20) return jr_fail(r, "control character in string");
        size_t n = utf8_seq(p, end);
        if (!n) return jr_fail(r, "invalid UTF-8");
        p += n;
    }
    out->s = (const char *)r->p;
    out->n = (size_t)(p - r->p);
    out->esc = esc;
    r->p = p + 1;
    return true;
}

/* Appends the decoded string (validated by jr_string) to b. */
static void decode_into(sg_buf *b, const jslice *js) {
    if (!js->esc) { sg_buf_append(b, js->s, js->n); return; }
    const unsigned char *p = (const unsigned char *)js->s, *end = p + js->n;
    sg_buf_reserve(b, js->n);
    while (p < end) {
        const unsigned char *q = p;
        while (q < end && *q != '\\') q++;
        sg_buf_append(b, p, (size_t)(q - p));
        if (q >= end) break;
        unsigned e = q[1];
        p = q + 2;
        char c;
        switch (e) {
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            unsigned v = (unsigned)hex4(q + 2);
            p = q + 6;
            if (v >= 0xD800 && v <= 0xDBFF) {
                unsigned lo = (unsigned)hex4(q + 8);
                v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                p = q + 12;
            }
            char u[4];
            size_t n;
            if (v < 0x80) { u[0] = (char)v; n = 1; }
            else if (v < 0x800) { u[0] = (char)(0xC0 | (v >> 6)); u[1] = (char)(0x80 | (v & 0x3F)); n = 2; }
            else if (v < 0x10000) {
                u[0] = (char)(0xE0 | (v >> 12)); u[1] = (char)(0x80 | ((v >> 6) & 0x3F));
                u[2] = (char)(0x80 | (v & 0x3F)); n = 3;
            } else {
                u[0] = (char)(0xF0 | (v >> 18)); u[1] = (char)(0x80 | ((v >> 12) & 0x3F));
                u[2] = (char)(0x80 | ((v >> 6) & 0x3F)); u[3] = (char)(0x80 | (v & 0x3F)); n = 4;
            }
            sg_buf_append(b, u, n);
            continue;
        }
        default: c = (char)e; break;   /* " \ / */
        }
        sg_buf_putc(b, c);
    }
}

/* Compares a key with a literal. A key with escapes (rare) is decoded into a stack buffer
 * that never needs to grow: decoding never lengthens a string. */
#define key_is(k, lit) key_is_n((k), (lit), sizeof(lit) - 1)
static inline bool key_is_n(const jslice *k, const char *lit, size_t n) {
    if (!k->esc) return k->n == n && memcmp(k->s, lit, n) == 0;
    if (k->n > 64) return false;
    char tmp[80];
    sg_buf b = {tmp, 0, sizeof tmp};
    decode_into(&b, k);
    return b.len == n && memcmp(b.data, lit, n) == 0;
}

static bool jr_literal(jr *r, const char *lit, size_t n) {
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0) return jr_fail(r, "bad literal");
    r->p += n;
    return true;
}

/* A number; *ival gets its value when it is an integer in range (else *is_int = false). */
static bool jr_number(jr *r, int64_t *ival, bool *is_int) {
    const unsigned char *p = r->p, *end = r->end;
    bool neg = false, integral = true, overflow = false;
    uint64_t v = 0;
    if (p < end && *p == '-') { neg = true; p++; }
    if (p >= end || *p < '0' || *p > '9') return jr_fail(r, "bad number");
    if (*p == '0') p++;
    else
        while (p < end && *p >= '0' && *p <= '9') {
            if (v > (UINT64_MAX - 9) / 10) overflow = true;
            v = v * 10 + (uint64_t)(*p - '0');
            p++;
        }
    if (p < end && *p == '.') {
        integral = false;
        p++;
        if (p >= end || *p < '0' || *p > '9') return jr_fail(r, "bad number");
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integral = false;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return jr_fail(r, "bad number");
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (integral && !overflow && v <= (uint64_t)INT64_MAX) {
        if (ival) *ival = neg ? -(int64_t)v : (int64_t)v;
        if (is_int) *is_int = true;
    } else {
        if (ival) *ival = 0;
        if (is_int) *is_int = false;
    }
    r->p = p;
    return true;
}

static bool jr_skip(jr *r);

/* Object members: `bool first = true; jslice k; while (jr_member(r, &first, &k)) {...value...}`
 * then check r->bad. */
static bool jr_member(jr *r, bool *first, jslice *key) {
    int c = jr_peek(r);
    if (*first) {
        *first = false;
        if (c == '}') { r->p++; return false; }
    } else {
        if (c == '}') { r->p++; return false; }
        if (c != ',') return jr_fail(r, "expected , or }");
        r->p++;
    }
    if (!jr_string(r, key)) return false;
    if (jr_peek(r) != ':') return jr_fail(r, "expected :");
    r->p++;
    return true;
}

/* Array elements, the same way. */
static bool jr_element(jr *r, bool *first) {
    int c = jr_peek(r);
    if (*first) {
        *first = false;
        if (c == ']') { r->p++; return false; }
        return c >= 0 ? true : jr_fail(r, "unterminated array");
    }
    if (c == ']') { r->p++; return false; }
    if (c != ',') return jr_fail(r, "expected , or ]");
    r->p++;
    return true;
}

static bool jr_open(jr *r, int ch) {
    if (jr_peek(r) != ch) return jr_fail(r, ch == '{' ? "expected an object" : "expected an array");
    if (++r->depth > JR_MAX_DEPTH) return jr_fail(r, "nested too deeply");
    r->p++;
    return true;
}

static bool jr_skip(jr *r) {
    int c = jr_peek(r);
    jslice tmp;
    bool first = true;
    switch (c) {
    case '"': return jr_string(r, &tmp);
    case '{':
        if (!jr_open(r, '{')) return false;
        while (jr_member(r, &first, &tmp))
            if (!jr_skip(r)) return false;
        r->depth--;
        return !r->bad;
    case '[':
        if (!jr_open(r, '[')) return false;
        while (jr_element(r, &first))
            if (!jr_skip(r)) return false;
        r->depth--;
        return !r->bad;
    case 't': return jr_literal(r, "true", 4);
    case 'f': return jr_literal(r, "false", 5);
    case 'n': return jr_literal(r, "null", 4);
    case -1: return jr_fail(r, "unexpected end");
    default: return jr_number(r, NULL, NULL);
    }
}

/* Typed readers: a null counts as absent (*present = false). */
static bool jr_opt_string(jr *r, jslice *out, bool *present) {
    int c = jr_peek(r);
    if (c == 'n') { *present = false; return jr_literal(r, "null", 4); }
    if (c != '"') return jr_fail(r, "expected a string");
    *present = true;
    return jr_string(r, out);
}

static bool jr_opt_int(jr *r, int64_t *out, bool *present) {
    int c = jr_peek(r);
    if (c == 'n') { *present = false; return jr_literal(r, "null", 4); }
    if (c != '-' && (c < '0' || c > '9')) return jr_fail(r, "expected a number");
    bool is_int = false;
    if (!jr_number(r, out, &is_int)) return false;
    *present = is_int && *out >= 0;   /* token counts: a fraction or negative is ignored */
    return true;
}

static bool jr_end(jr *r) {
    jr_ws(r);
    return r->p == r->end ? true : jr_fail(r, "trailing bytes after JSON");
}

/* ====================================================================================== */
/* The scanner: one chunk (or one whole response) into captured slices, then events. */

typedef struct frag {
    int64_t index;             /* provider index, or position for a whole response */
    jslice id, name, args;
    bool has_id, has_name, has_args;
} frag;

typedef struct capture {
    jslice id, model, content, reasoning, refusal, finish;
    bool has_id, has_model, has_content, has_reasoning, has_refusal, has_finish;
    bool has_choices;
    size_t n_choices;
    bool has_usage;
    int64_t prompt, completion, cached, reasoning_tokens, cache_hit;
    bool has_prompt, has_completion, has_cached, has_reasoning_tokens, has_cache_hit;
    bool has_error;
    size_t frag_mark;          /* where this choice's fragments start */
} capture;

static void frag_push(oai_scan *s, const frag *f) {
    if (s->n_frags == s->cap_frags) {
        s->cap_frags = s->cap_frags ? 2 * s->cap_frags : 8;
        s->frags = sg_xrealloc(s->frags, s->cap_frags * sizeof(frag));
    }
    ((frag *)s->frags)[s->n_frags++] = *f;
}

static bool read_function(jr *r, frag *f) {
    if (jr_peek(r) == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '{')) return false;
    bool first = true;
    jslice k;
    while (jr_member(r, &first, &k)) {
        bool ok;
        if (key_is(&k, "name")) ok = jr_opt_string(r, &f->name, &f->has_name);
        else if (key_is(&k, "arguments")) ok = jr_opt_string(r, &f->args, &f->has_args);
        else ok = jr_skip(r);
        if (!ok) return false;
    }
    r->depth--;
    return !r->bad;
}

static bool read_tool_calls(jr *r, oai_scan *s) {
    if (jr_peek(r) == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '[')) return false;
    bool afirst = true;
    int64_t pos = 0;
    while (jr_element(r, &afirst)) {
        frag f;
        memset(&f, 0, sizeof f);
        f.index = pos++;
        if (!jr_open(r, '{')) return false;
        bool first = true;
        jslice k;
        while (jr_member(r, &first, &k)) {
            bool ok, present = false;
            if (key_is(&k, "index")) {
                int64_t v = 0;
                ok = jr_opt_int(r, &v, &present);
                if (present) f.index = v;
            } else if (key_is(&k, "id")) ok = jr_opt_string(r, &f.id, &f.has_id);
            else if (key_is(&k, "function")) ok = read_function(r, &f);
            else ok = jr_skip(r);
            if (!ok) return false;
        }
        r->depth--;
        if (r->bad) return false;
        frag_push(s, &f);
    }
    r->depth--;
    return !r->bad;
}

/* "delta" (stream) or "message" (whole response). */
static bool read_delta(jr *r, oai_scan *s, capture *c) {
    if (jr_peek(r) == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '{')) return false;
    bool first = true;
    jslice k;
    while (jr_member(r, &first, &k)) {
        bool ok;
        if (key_is(&k, "content")) ok = jr_opt_string(r, &c->content, &c->has_content);
        else if (key_is(&k, "reasoning_content") || key_is(&k, "reasoning")) {
            jslice v;
            bool present = false;
            ok = jr_opt_string(r, &v, &present);
            if (present && (!c->has_reasoning || v.n)) { c->reasoning = v; c->has_reasoning = true; }
        } else if (key_is(&k, "refusal")) ok = jr_opt_string(r, &c->refusal, &c->has_refusal);
        else if (key_is(&k, "tool_calls")) ok = read_tool_calls(r, s);
        else ok = jr_skip(r);
        if (!ok) return false;
    }
    r->depth--;
    return !r->bad;
}

static bool read_choices(jr *r, oai_scan *s, capture *c) {
    if (jr_peek(r) == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '[')) return false;
    c->has_choices = true;
    bool afirst = true;
    while (jr_element(r, &afirst)) {
        /* read into a scratch capture; keep it only for choice 0 */
        capture one;
        memset(&one, 0, sizeof one);
        size_t mark = s->n_frags;
        int64_t index = (int64_t)c->n_choices;
        if (!jr_open(r, '{')) return false;
        bool first = true;
        jslice k;
        while (jr_member(r, &first, &k)) {
            bool ok, present = false;
            if (key_is(&k, "index")) {
                int64_t v = 0;
                ok = jr_opt_int(r, &v, &present);
                if (present) index = v;
            } else if (key_is(&k, "delta") || key_is(&k, "message")) ok = read_delta(r, s, &one);
            else if (key_is(&k, "finish_reason")) ok = jr_opt_string(r, &one.finish, &one.has_finish);
            else ok = jr_skip(r);
            if (!ok) return false;
        }
        r->depth--;
        if (r->bad) return false;
        c->n_choices++;
        if (index == 0) {
            c->content = one.content; c->has_content = one.has_content;
            c->reasoning = one.reasoning; c->has_reasoning = one.has_reasoning;
            c->refusal = one.refusal; c->has_refusal = one.has_refusal;
            c->finish = one.finish; c->has_finish = one.has_finish;
        } else {
            s->n_frags = mark;   /* another choice's tool calls: dropped */
        }
    }
    r->depth--;
    return !r->bad;
}

static bool read_details(jr *r, const char *field, int64_t *out, bool *present) {
    if (jr_peek(r) == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '{')) return false;
    bool first = true;
    jslice k;
    while (jr_member(r, &first, &k)) {
        bool ok = key_is_n(&k, field, strlen(field)) ? jr_opt_int(r, out, present) : jr_skip(r);
        if (!ok) return false;
    }
    r->depth--;
    return !r->bad;
}

static bool read_usage(jr *r, capture *c) {
    if (jr_peek(r) == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '{')) return false;
    c->has_usage = true;
    bool first = true;
    jslice k;
    while (jr_member(r, &first, &k)) {
        bool ok;
        if (key_is(&k, "prompt_tokens")) ok = jr_opt_int(r, &c->prompt, &c->has_prompt);
        else if (key_is(&k, "completion_tokens")) ok = jr_opt_int(r, &c->completion, &c->has_completion);
        else if (key_is(&k, "prompt_tokens_details")) ok = read_details(r, "cached_tokens", &c->cached, &c->has_cached);
        else if (key_is(&k, "completion_tokens_details"))
            ok = read_details(r, "reasoning_tokens", &c->reasoning_tokens, &c->has_reasoning_tokens);
        else if (key_is(&k, "prompt_cache_hit_tokens")) ok = jr_opt_int(r, &c->cache_hit, &c->has_cache_hit);
        else ok = jr_skip(r);
        if (!ok) return false;
    }
    r->depth--;
    return !r->bad;
}

/* Walks one JSON document (chunk or whole response) into c and s->frags. */
static bool read_doc(jr *r, oai_scan *s, capture *c) {
    if (!jr_open(r, '{')) return false;
    bool first = true;
    jslice k;
    while (jr_member(r, &first, &k)) {
        bool ok;
        if (key_is(&k, "id")) ok = jr_opt_string(r, &c->id, &c->has_id);
        else if (key_is(&k, "model")) ok = jr_opt_string(r, &c->model, &c->has_model);
        else if (key_is(&k, "choices")) ok = read_choices(r, s, c);
        else if (key_is(&k, "usage")) ok = read_usage(r, c);
        else if (key_is(&k, "error")) {
            c->has_error = jr_peek(r) != 'n';
            ok = jr_skip(r);
        } else ok = jr_skip(r);
        if (!ok) return false;
    }
    r->depth--;
    return !r->bad && jr_end(r);
}

static gw_usage usage_of(const capture *c) {
    gw_usage u;
    gw_usage_init(&u);
    if (c->has_prompt) {
        int64_t cached = c->has_cached ? c->cached : c->has_cache_hit ? c->cache_hit : 0;
        if (cached > c->prompt) cached = c->prompt;
        u.input = c->prompt - cached;
        u.cache_read = cached;
        u.cache_write = 0;
    }
    if (c->has_completion) {
        u.output = c->completion;
        if (c->has_reasoning_tokens) u.reasoning = c->reasoning_tokens;
    }
    return u;
}

static int emit_error(gw_event_fn fn, void *ctx, const gw_api_error *e) {
    gw_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = GW_EV_ERROR;
    ev.text = e->message;
    ev.len = strlen(e->message);
    ev.err_type = e->code[0] ? e->code : e->type;
    ev.status = e->status;
    return fn(ctx, &ev) ? -1 : 0;
}

static int emit_malformed(gw_event_fn fn, void *ctx, const char *why) {
    gw_api_error e;
    gw_api_fail(&e, 502, NULL, NULL, "malformed response from upstream: %s", why ? why : "invalid JSON");
    snprintf(e.type, sizeof e.type, "%s", "invalid_response");
    return emit_error(fn, ctx, &e);
}

/* Dense ordinal for a fragment: a new call when the index is new, or when the same index
 * comes back with a different id (some compatible servers number every call 0). */
static int tool_ordinal(oai_scan *s, const frag *f, const char *id, bool *is_new) {
    for (size_t i = s->n_tools; i-- > 0;) {
        oai_tool_slot *t = &s->tools[i];
        if (t->provider_index != f->index) continue;
        if (id && t->id && strcmp(t->id, id) != 0) break;   /* a new call reusing the index */
        *is_new = false;
        return (int)i;
    }
    if (s->n_tools == s->cap_tools) {
        s->cap_tools = s->cap_tools ? 2 * s->cap_tools : 4;
        s->tools = sg_xrealloc(s->tools, s->cap_tools * sizeof *s->tools);
    }
    s->tools[s->n_tools].provider_index = (int)f->index;
    s->tools[s->n_tools].id = id ? sg_xstrdup(id) : NULL;
    *is_new = true;
    return (int)s->n_tools++;
}

/* Emits the events of a captured document. */
static int emit_capture(oai_scan *s, const capture *c, gw_event_fn fn, void *ctx) {
    /* decode every string into scratch first (it may move while growing), as offsets */
    sg_buf_reset(&s->scratch);
    size_t n_frags = s->n_frags;
    frag *frags = s->frags;
#define PUT(slice, off, nul)                      \
    do {                                          \
        off = s->scratch.len;                     \
        decode_into(&s->scratch, &(slice));       \
        if (nul) sg_buf_putc(&s->scratch, 0);     \
    } while (0)
    size_t o_content = 0, o_reason = 0, o_refusal = 0, o_finish = 0;
    size_t l_content = 0, l_reason = 0, l_refusal = 0;
    if (c->has_content) { PUT(c->content, o_content, false); l_content = s->scratch.len - o_content; }
    if (c->has_reasoning) { PUT(c->reasoning, o_reason, false); l_reason = s->scratch.len - o_reason; }
    if (c->has_refusal) { PUT(c->refusal, o_refusal, false); l_refusal = s->scratch.len - o_refusal; }
    if (c->has_finish) PUT(c->finish, o_finish, true);
    /* per fragment: id\0 name\0 args (offsets kept in a small side array on the stack for
     * the usual handful, else in scratch-parallel heap) */
    size_t stack_offs[3 * 8];
    size_t *offs = n_frags <= 8 ? stack_offs : sg_xmalloc(3 * n_frags * sizeof *offs);
    size_t *lens = NULL;
    size_t stack_lens[8];
    lens = n_frags <= 8 ? stack_lens : sg_xmalloc(n_frags * sizeof *lens);
    for (size_t i = 0; i < n_frags; i++) {
        frag *f = &frags[i];
        offs[3 * i] = offs[3 * i + 1] = offs[3 * i + 2] = (size_t)-1;
        if (f->has_id) PUT(f->id, offs[3 * i], true);
        if (f->has_name) PUT(f->name, offs[3 * i + 1], true);
        if (f->has_args) { PUT(f->args, offs[3 * i + 2], false); lens[i] = s->scratch.len - offs[3 * i + 2]; }
        else lens[i] = 0;
    }
#undef PUT
    if (c->has_id && s->id.len == 0) { decode_into(&s->id, &c->id); }
    if (c->has_model && s->model.len == 0) { decode_into(&s->model, &c->model); }
    const char *base = s->scratch.data ? s->scratch.data : "";
    int rc = 0;
    gw_event ev;

    if (!s->started) {
        s->started = true;
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_START;
        ev.id = s->id.len ? s->id.data : NULL;
        ev.name = s->model.len ? s->model.data : NULL;
        if (fn(ctx, &ev)) { rc = -1; goto out; }
    }
    if (l_reason) {
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_REASONING;
        ev.text = base + o_reason;
        ev.len = l_reason;
        if (fn(ctx, &ev)) { rc = -1; goto out; }
    }
    if (l_content || l_refusal) {
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_TEXT;
        ev.text = base + (l_content ? o_content : o_refusal);
        ev.len = l_content ? l_content : l_refusal;
        if (fn(ctx, &ev)) { rc = -1; goto out; }
        if (l_content && l_refusal) {
            ev.text = base + o_refusal;
            ev.len = l_refusal;
            if (fn(ctx, &ev)) { rc = -1; goto out; }
        }
    }
    for (size_t i = 0; i < n_frags; i++) {
        const char *id = offs[3 * i] != (size_t)-1 ? base + offs[3 * i] : NULL;
        const char *name = offs[3 * i + 1] != (size_t)-1 ? base + offs[3 * i + 1] : NULL;
        if (id && !*id) id = NULL;
        if (name && !*name) name = NULL;
        bool is_new = false;
        int ord = tool_ordinal(s, &frags[i], id, &is_new);
        if (!is_new && !lens[i]) continue;   /* a repeat of id/name with nothing new */
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_TOOL_CALL;
        ev.index = ord;
        ev.id = is_new ? id : NULL;
        ev.name = is_new ? name : NULL;
        ev.text = lens[i] ? base + offs[3 * i + 2] : "";
        ev.len = lens[i];
        if (fn(ctx, &ev)) { rc = -1; goto out; }
    }
    if (c->has_finish && !s->finished) {
        s->finished = true;
        const char *f = base + o_finish;
        if (strcmp(f, "function_call") == 0) f = "tool_calls";
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_FINISH;
        ev.finish = f;
        if (fn(ctx, &ev)) { rc = -1; goto out; }
    }
    if (c->has_usage && (c->has_prompt || c->has_completion)) {
        s->usage_seen = true;
        memset(&ev, 0, sizeof ev);
        ev.kind = GW_EV_USAGE;
        ev.usage = usage_of(c);
        if (fn(ctx, &ev)) { rc = -1; goto out; }
    }
out:
    if (offs != stack_offs) free(offs);
    if (lens != stack_lens) free(lens);
    return rc;
}

void oai_scan_init(oai_scan *s) {
    memset(s, 0, sizeof *s);
    sg_buf_init(&s->scratch);
    sg_buf_init(&s->id);
    sg_buf_init(&s->model);
}

void oai_scan_free(oai_scan *s) {
    sg_buf_free(&s->scratch);
    sg_buf_free(&s->id);
    sg_buf_free(&s->model);
    free(s->frags);
    for (size_t i = 0; i < s->n_tools; i++) free(s->tools[i].id);
    free(s->tools);
    memset(s, 0, sizeof *s);
}

static bool all_space(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') return false;
    return true;
}

int oai_scan_chunk(oai_scan *s, const char *data, size_t len, gw_event_fn fn, void *ctx) {
    if (s->done || s->failed) return OAI_CHUNK_SKIP;
    if (len >= 6 && memcmp(data, "[DONE]", 6) == 0) {   /* the SDK tests startsWith too */
        s->done = true;
        return OAI_CHUNK_DONE;
    }
    if (all_space(data, len)) return OAI_CHUNK_SKIP;
    capture c;
    memset(&c, 0, sizeof c);
    s->n_frags = 0;
    jr r = {(const unsigned char *)data, (const unsigned char *)data + len, 0, false, NULL};
    if (!read_doc(&r, s, &c)) {
        s->failed = true;
        return emit_malformed(fn, ctx, r.why) ? -1 : OAI_CHUNK_ERROR;
    }
    if (c.has_error) {
        s->failed = true;
        gw_api_error e;
        gw_classify_error(GW_WIRE_OPENAI, 0, data, len, &e);
        return emit_error(fn, ctx, &e) ? -1 : OAI_CHUNK_ERROR;
    }
    if (emit_capture(s, &c, fn, ctx)) return -1;
    int flags = 0;
    if (c.has_choices && c.n_choices == 0 && c.has_usage) flags |= OAI_CHUNK_USAGE_ONLY;
    return flags;
}

int oai_scan_end(oai_scan *s, gw_event_fn fn, void *ctx) {
    if (s->done || s->finished || s->failed) return 0;
    gw_api_error e;
    gw_api_fail(&e, 502, NULL, NULL, "upstream stream ended early");
    snprintf(e.type, sizeof e.type, "%s", "incomplete_response");
    return emit_error(fn, ctx, &e) ? -1 : 1;
}

int oai_scan_response(const char *body, size_t len, gw_event_fn fn, void *ctx) {
    oai_scan s;
    oai_scan_init(&s);
    capture c;
    memset(&c, 0, sizeof c);
    jr r = {(const unsigned char *)body, (const unsigned char *)body + len, 0, false, NULL};
    int rc;
    if (!read_doc(&r, &s, &c)) {
        rc = emit_malformed(fn, ctx, r.why) ? -1 : 1;
    } else if (c.has_error) {
        gw_api_error e;
        gw_classify_error(GW_WIRE_OPENAI, 0, body, len, &e);
        rc = emit_error(fn, ctx, &e) ? -1 : 1;
    } else {
        if (!c.has_finish) {   /* a whole response always ends; say so even if the field is missing */
            c.finish = (jslice){"stop", 4, false};
            c.has_finish = true;
        }
        rc = emit_capture(&s, &c, fn, ctx);
    }
    oai_scan_free(&s);
    return rc;
}

/* ====================================================================================== */
/* Request validation (jansson: a request is parsed once, and its tree is the canonical
 * request the providers translate from). */

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a decimal";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

static int bad_type(gw_api_error *err, const char *param, const char *want, const json_t *v) {
    return gw_api_fail(err, 400, "invalid_type", param, "Invalid type for '%s': expected %s, but got %s instead.",
                       param, want, type_name(v));
}

static int missing(gw_api_error *err, const char *param) {
    return gw_api_fail(err, 400, "missing_required_parameter", param, "Missing required parameter: '%s'.", param);
}

/* Optional number within [lo, hi]. */
static int check_number(const json_t *req, const char *key, double lo, double hi, gw_api_error *err) {
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return bad_type(err, key, "a number", v);
    double d = json_number_value(v);
    if (d < lo)
        return gw_api_fail(err, 400, "decimal_below_min_value", key,
                           "Invalid '%s': decimal below minimum value. Expected a value >= %g, but got %g instead.",
                           key, lo, d);
    if (d > hi)
        return gw_api_fail(err, 400, "decimal_above_max_value", key,
                           "Invalid '%s': decimal above maximum value. Expected a value <= %g, but got %g instead.",
                           key, hi, d);
    return 0;
}

static int check_int(const json_t *req, const char *key, int64_t lo, gw_api_error *err) {
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return bad_type(err, key, "an integer", v);
    if (json_integer_value(v) < lo)
        return gw_api_fail(err, 400, "integer_below_min_value", key,
                           "Invalid '%s': integer below minimum value. Expected a value >= %lld, but got %lld "
                           "instead.",
                           key, (long long)lo, (long long)json_integer_value(v));
    return 0;
}

static int check_bool(const json_t *req, const char *key, gw_api_error *err) {
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v) || json_is_boolean(v)) return 0;
    return bad_type(err, key, "a boolean", v);
}

static int check_string(const json_t *req, const char *key, gw_api_error *err) {
    const json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v) || json_is_string(v)) return 0;
    return bad_type(err, key, "a string", v);
}

static int check_content_parts(const json_t *content, const char *param, gw_api_error *err) {
    size_t i;
    const json_t *part;
    char p[256];
    json_array_foreach(content, i, part) {
        snprintf(p, sizeof p, "%s[%zu]", param, i);
        if (!json_is_object(part)) return bad_type(err, p, "an object", part);
        const json_t *t = json_object_get(part, "type");
        snprintf(p, sizeof p, "%s[%zu].type", param, i);
        if (!t) return missing(err, p);
        if (!json_is_string(t)) return bad_type(err, p, "a string", t);
        const char *ts = json_string_value(t);
        if (strcmp(ts, "text") == 0) {
            const json_t *tx = json_object_get(part, "text");
            snprintf(p, sizeof p, "%s[%zu].text", param, i);
            if (!tx) return missing(err, p);
            if (!json_is_string(tx)) return bad_type(err, p, "a string", tx);
        } else if (strcmp(ts, "image_url") == 0) {
            const json_t *iu = json_object_get(part, "image_url");
            snprintf(p, sizeof p, "%s[%zu].image_url", param, i);
            if (!iu) return missing(err, p);
            if (!json_is_object(iu)) return bad_type(err, p, "an object", iu);
            const json_t *url = json_object_get(iu, "url");
            snprintf(p, sizeof p, "%s[%zu].image_url.url", param, i);
            if (!url) return missing(err, p);
            if (!json_is_string(url)) return bad_type(err, p, "a string", url);
        } else if (strcmp(ts, "input_audio") != 0 && strcmp(ts, "file") != 0 && strcmp(ts, "refusal") != 0) {
            return gw_api_fail(err, 400, "invalid_value", p,
                               "Invalid value: '%s'. Supported values are: 'text', 'image_url', 'input_audio', "
                               "'refusal', and 'file'.",
                               ts);
        }
    }
    return 0;
}

static int check_tool_calls(const json_t *tcs, const char *param, gw_api_error *err) {
    char p[256];
    if (!json_is_array(tcs)) return bad_type(err, param, "an array", tcs);
    size_t i;
    const json_t *tc;
    json_array_foreach(tcs, i, tc) {
        snprintf(p, sizeof p, "%s[%zu]", param, i);
        if (!json_is_object(tc)) return bad_type(err, p, "an object", tc);
        const json_t *id = json_object_get(tc, "id"), *fn = json_object_get(tc, "function");
        snprintf(p, sizeof p, "%s[%zu].id", param, i);
        if (!id) return missing(err, p);
        if (!json_is_string(id)) return bad_type(err, p, "a string", id);
        snprintf(p, sizeof p, "%s[%zu].function", param, i);
        if (!fn) return missing(err, p);
        if (!json_is_object(fn)) return bad_type(err, p, "an object", fn);
        const json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        snprintf(p, sizeof p, "%s[%zu].function.name", param, i);
        if (!name) return missing(err, p);
        if (!json_is_string(name)) return bad_type(err, p, "a string", name);
        snprintf(p, sizeof p, "%s[%zu].function.arguments", param, i);
        if (!args) return missing(err, p);
        if (!json_is_string(args)) return bad_type(err, p, "a string", args);
    }
    return 0;
}

static int check_messages(const json_t *msgs, gw_api_error *err) {
    if (!msgs) return missing(err, "messages");
    if (!json_is_array(msgs)) return bad_type(err, "messages", "an array", msgs);
    if (json_array_size(msgs) == 0)
        return gw_api_fail(err, 400, "empty_array", "messages",
                           "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                           "empty array instead.");
    size_t i;
    const json_t *m;
    char p[96];
    json_array_foreach(msgs, i, m) {
        snprintf(p, sizeof p, "messages[%zu]", i);
        if (!json_is_object(m)) return bad_type(err, p, "an object", m);
        const json_t *role = json_object_get(m, "role");
        snprintf(p, sizeof p, "messages[%zu].role", i);
        if (!role) return missing(err, p);
        if (!json_is_string(role)) return bad_type(err, p, "a string", role);
        const char *r = json_string_value(role);
        bool user = strcmp(r, "user") == 0, sys = strcmp(r, "system") == 0 || strcmp(r, "developer") == 0,
             asst = strcmp(r, "assistant") == 0, tool = strcmp(r, "tool") == 0, func = strcmp(r, "function") == 0;
        if (!user && !sys && !asst && !tool && !func)
            return gw_api_fail(err, 400, "invalid_value", p,
                               "Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', "
                               "'function', 'tool', and 'developer'.",
                               r);
        const json_t *content = json_object_get(m, "content");
        snprintf(p, sizeof p, "messages[%zu].content", i);
        if (!content || json_is_null(content)) {
            if (!asst) return missing(err, p);   /* only an assistant message may omit it */
        } else if (json_is_array(content)) {
            if (check_content_parts(content, p, err)) return -1;
        } else if (!json_is_string(content)) {
            return bad_type(err, p, "one of a string or an array", content);
        }
        if (tool) {
            const json_t *id = json_object_get(m, "tool_call_id");
            snprintf(p, sizeof p, "messages[%zu].tool_call_id", i);
            if (!id) return missing(err, p);
            if (!json_is_string(id)) return bad_type(err, p, "a string", id);
        }
        const json_t *tcs = json_object_get(m, "tool_calls");
        if (tcs && !json_is_null(tcs)) {
            snprintf(p, sizeof p, "messages[%zu].tool_calls", i);
            if (!asst)
                return gw_api_fail(err, 400, "invalid_value", p, "Invalid parameter: only messages with role "
                                                                 "'assistant' can have 'tool_calls'.");
            if (check_tool_calls(tcs, p, err)) return -1;
        }
    }
    return 0;
}

static int check_tools(const json_t *req, gw_api_error *err) {
    const json_t *tools = json_object_get(req, "tools");
    char p[96];
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) return bad_type(err, "tools", "an array", tools);
        size_t i;
        const json_t *t;
        json_array_foreach(tools, i, t) {
            snprintf(p, sizeof p, "tools[%zu]", i);
            if (!json_is_object(t)) return bad_type(err, p, "an object", t);
            const json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
            snprintf(p, sizeof p, "tools[%zu].type", i);
            if (!type) return missing(err, p);
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0)
                return gw_api_fail(err, 400, "invalid_value", p,
                                   "Invalid value: '%s'. Supported values are: 'function'.",
                                   json_is_string(type) ? json_string_value(type) : type_name(type));
            snprintf(p, sizeof p, "tools[%zu].function", i);
            if (!fn) return missing(err, p);
            if (!json_is_object(fn)) return bad_type(err, p, "an object", fn);
            const json_t *name = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters");
            snprintf(p, sizeof p, "tools[%zu].function.name", i);
            if (!name) return missing(err, p);
            if (!json_is_string(name)) return bad_type(err, p, "a string", name);
            const char *n = json_string_value(name);
            size_t nl = strlen(n);
            bool ok = nl >= 1 && nl <= 64;
            for (size_t k = 0; ok && k < nl; k++) {
                char c = n[k];
                ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                     c == '-' || c == '.';
            }
            if (!ok)
                return gw_api_fail(err, 400, "invalid_value", p,
                                   "Invalid '%s': string does not match pattern. Expected a string that matches "
                                   "the pattern '^[a-zA-Z0-9_.-]{1,64}$'.",
                                   p);
            snprintf(p, sizeof p, "tools[%zu].function.parameters", i);
            if (params && !json_is_null(params) && !json_is_object(params)) return bad_type(err, p, "an object", params);
        }
    }
    const json_t *tc = json_object_get(req, "tool_choice");
    if (tc && !json_is_null(tc)) {
        if (json_is_string(tc)) {
            const char *s = json_string_value(tc);
            if (strcmp(s, "none") && strcmp(s, "auto") && strcmp(s, "required"))
                return gw_api_fail(err, 400, "invalid_value", "tool_choice",
                                   "Invalid value: '%s'. Supported values are: 'none', 'auto', and 'required'.", s);
        } else if (json_is_object(tc)) {
            const json_t *fn = json_object_get(tc, "function");
            const json_t *name = json_object_get(fn, "name");
            if (!json_is_string(name)) return missing(err, "tool_choice.function.name");
        } else {
            return bad_type(err, "tool_choice", "one of a string or an object", tc);
        }
    }
    return 0;
}

int oai_validate_request(const json_t *req, gw_api_error *err) {
    if (!json_is_object(req))
        return gw_api_fail(err, 400, NULL, NULL, "Invalid type for body: expected an object, but got %s instead.",
                           req ? type_name(req) : "nothing");
    const json_t *model = json_object_get(req, "model");
    if (model && !json_is_string(model)) return bad_type(err, "model", "a string", model);
    if (check_messages(json_object_get(req, "messages"), err)) return -1;
    if (check_bool(req, "stream", err)) return -1;
    const json_t *so = json_object_get(req, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return bad_type(err, "stream_options", "an object", so);
        const json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_boolean(iu)) return bad_type(err, "stream_options.include_usage", "a boolean", iu);
        if (!json_is_true(json_object_get(req, "stream")))
            return gw_api_fail(err, 400, "invalid_value", "stream_options",
                               "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
    }
    if (check_int(req, "max_tokens", 1, err) || check_int(req, "max_completion_tokens", 1, err)) return -1;
    if (check_number(req, "temperature", 0, 2, err) || check_number(req, "top_p", 0, 1, err) ||
        check_number(req, "presence_penalty", -2, 2, err) || check_number(req, "frequency_penalty", -2, 2, err))
        return -1;
    if (check_int(req, "n", 1, err) || check_int(req, "seed", INT64_MIN, err) ||
        check_int(req, "top_logprobs", 0, err) || check_int(req, "top_k", 0, err))
        return -1;
    const json_t *n = json_object_get(req, "n");
    if (json_is_integer(n) && json_integer_value(n) > 1)
        return gw_api_fail(err, 400, "unsupported_value", "n",
                           "Invalid 'n': smolgate returns one choice per request; n must be 1.");
    if (check_bool(req, "logprobs", err) || check_bool(req, "parallel_tool_calls", err) ||
        check_string(req, "user", err) || check_string(req, "reasoning_effort", err))
        return -1;
    const json_t *stop = json_object_get(req, "stop");
    if (stop && !json_is_null(stop) && !json_is_string(stop)) {
        if (!json_is_array(stop)) return bad_type(err, "stop", "one of a string or an array", stop);
        size_t i;
        const json_t *s;
        json_array_foreach(stop, i, s) {
            char p[32];
            snprintf(p, sizeof p, "stop[%zu]", i);
            if (!json_is_string(s)) return bad_type(err, p, "a string", s);
        }
    }
    const json_t *rf = json_object_get(req, "response_format");
    if (rf && !json_is_null(rf)) {
        if (!json_is_object(rf)) return bad_type(err, "response_format", "an object", rf);
        const char *t = json_string_value(json_object_get(rf, "type"));
        if (!t) return missing(err, "response_format.type");
        if (strcmp(t, "text") && strcmp(t, "json_object") && strcmp(t, "json_schema"))
            return gw_api_fail(err, 400, "invalid_value", "response_format.type",
                               "Invalid value: '%s'. Supported values are: 'text', 'json_object', and "
                               "'json_schema'.",
                               t);
        if (strcmp(t, "json_schema") == 0 && !json_is_object(json_object_get(rf, "json_schema")))
            return missing(err, "response_format.json_schema");
    }
    return check_tools(req, err);
}

static int control_in_name(gw_api_error *err, const char *param) {
    return gw_api_fail(err, 400, "invalid_value", param,
                       "Invalid '%s': a model or provider name must not contain control characters.", param);
}

/* "models" / provider lists: arrays of non-empty strings without control characters, at
 * most OAI_MAX_MODELS. */
static int take_list(const json_t *v, const char *param, const char **out, size_t *n, gw_api_error *err) {
    *n = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v)) return bad_type(err, param, "an array", v);
    if (json_array_size(v) > OAI_MAX_MODELS)
        return gw_api_fail(err, 400, "array_above_max_length", param,
                           "Invalid '%s': array too long. Expected an array with maximum length %d, but got an "
                           "array with length %zu instead.",
                           param, OAI_MAX_MODELS, json_array_size(v));
    size_t i;
    const json_t *s;
    json_array_foreach(v, i, s) {
        char p[64];
        snprintf(p, sizeof p, "%s[%zu]", param, i);
        if (!json_is_string(s)) return bad_type(err, p, "a string", s);
        if (!*json_string_value(s))
            return gw_api_fail(err, 400, "empty_string", p, "Invalid '%s': empty string.", p);
        if (gw_name_has_control(json_string_value(s), json_string_length(s))) return control_in_name(err, p);
        out[(*n)++] = json_string_value(s);
    }
    return 0;
}

int oai_parse_request(const char *body, size_t len, oai_request *out, gw_api_error *err) {
    memset(out, 0, sizeof *out);
    out->max_tokens = -1;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        return gw_api_fail(err, 400, NULL, NULL,
                           "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                           "using your HTTP library correctly. The API expects a JSON payload, but what was sent "
                           "was not valid JSON: %s at byte %d.)",
                           je.text, je.position);
    if (!json_is_object(root)) {
        const char *what = json_is_array(root) ? "array" : "scalar";
        json_decref(root);
        return gw_api_fail(err, 400, NULL, NULL,
                           "We could not parse the JSON body of your request. (HINT: The API expects a JSON "
                           "object, but what was sent was a JSON %s.)",
                           what);
    }
    /* take the gateway's extensions out first: they are ours to validate */
    json_t *ext = json_object();
    json_t *models = json_object_get(root, "models"), *prov = json_object_get(root, "provider");
    if (models) { json_object_set(ext, "models", models); json_object_del(root, "models"); }
    if (prov) { json_object_set(ext, "provider", prov); json_object_del(root, "provider"); }
    out->body = root;
    out->ext = ext;
    if (take_list(json_object_get(ext, "models"), "models", out->models, &out->n_models, err)) goto fail;
    prov = json_object_get(ext, "provider");
    if (prov && !json_is_null(prov)) {
        if (!json_is_object(prov)) { bad_type(err, "provider", "an object", prov); goto fail; }
        if (take_list(json_object_get(prov, "order"), "provider.order", out->order, &out->n_order, err) ||
            take_list(json_object_get(prov, "only"), "provider.only", out->only, &out->n_only, err) ||
            take_list(json_object_get(prov, "ignore"), "provider.ignore", out->ignore, &out->n_ignore, err))
            goto fail;
    }
    if (oai_validate_request(root, err)) goto fail;
    const json_t *model = json_object_get(root, "model");
    if (json_is_string(model) && gw_name_has_control(json_string_value(model), json_string_length(model))) {
        control_in_name(err, "model");
        goto fail;
    }
    out->model = json_string_value(model);
    if (out->model && !*out->model) out->model = NULL;
    if (!out->model && out->n_models) out->model = out->models[0];
    if (!out->model) {
        gw_api_fail(err, 400, NULL, "model", "you must provide a model parameter");
        goto fail;
    }
    out->stream = json_is_true(json_object_get(root, "stream"));
    out->include_usage = out->stream &&
                         json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage"));
    const json_t *mt = json_object_get(root, "max_completion_tokens");
    if (!json_is_integer(mt)) mt = json_object_get(root, "max_tokens");
    if (json_is_integer(mt)) out->max_tokens = json_integer_value(mt);
    const json_t *tools = json_object_get(root, "tools");
    out->has_tools = json_is_array(tools) && json_array_size(tools) > 0;
    return 0;
fail:
    oai_request_free(out);
    out->max_tokens = -1;
    return -1;
}

void oai_request_free(oai_request *r) {
    json_decref(r->body);
    json_decref(r->ext);
    memset(r, 0, sizeof *r);
}

/* ====================================================================================== */
/* Upstream bodies */

static int dump_to_buf(const char *p, size_t n, void *data) {
    sg_buf_append(data, p, n);
    return 0;
}

void oai_build_upstream(const json_t *req, const char *model, bool stream, unsigned flags, sg_buf *out) {
    json_t *b = json_copy((json_t *)req);   /* shallow: values are shared, keys are ours */
    json_object_set_new(b, "model", json_string(model));
    json_object_set_new(b, "stream", json_boolean(stream));
    json_object_del(b, "thinking");
    if (!(flags & OAI_UP_KEEP_EXTENSIONS)) json_object_del(b, "top_k");
    if (stream) {
        json_t *so = json_object_get(b, "stream_options");
        json_t *nso = json_is_object(so) ? json_copy(so) : json_object();
        json_object_set_new(nso, "include_usage", json_true());
        json_object_set_new(b, "stream_options", nso);
    } else {
        json_object_del(b, "stream_options");
    }
    json_dump_callback(b, dump_to_buf, out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(b);
}

/* ====================================================================================== */
/* The pass-through fast path: oai_peek_request / oai_splice_upstream. Anything unusual
 * declines (returns 1) so that oai_parse_request, the one place that words errors, decides. */

enum { PK_KEEP, PK_MODEL, PK_STREAM, PK_SO, PK_MODELS, PK_PROVIDER, PK_THINKING, PK_TOP_K };

/* Decodes a string into pk->strs; NULL when it does not fit. The sg_buf over the arena
 * never grows: decoding never lengthens a string. */
/* A name to look up (model, models, provider lists), decoded; NULL declines one with a
 * control character (oai_parse_request words the error). */
static const char *pk_str(oai_peek *pk, const jslice *js) {
    size_t need = js->n + 1;
    if (need > sizeof pk->strs - pk->strs_len) return NULL;
    char *dst = pk->strs + pk->strs_len;
    sg_buf b = {dst, 0, need};
    decode_into(&b, js);
    if (gw_name_has_control(dst, b.len)) return NULL;
    dst[b.len] = 0;
    pk->strs_len += b.len + 1;
    return dst;
}

/* null, or an array of non-empty strings (at most OAI_MAX_MODELS). */
static bool pk_list(jr *r, oai_peek *pk, const char **out, size_t *n) {
    *n = 0;
    int c = jr_peek(r);
    if (c == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '[')) return false;
    bool first = true;
    while (jr_element(r, &first)) {
        jslice v;
        if (*n == OAI_MAX_MODELS || jr_peek(r) != '"' || !jr_string(r, &v)) return false;
        const char *s = pk_str(pk, &v);
        if (!s || !*s) return false;
        out[(*n)++] = s;
    }
    r->depth--;
    return !r->bad;
}

/* A number within [lo, hi], or null. */
static bool pk_number(jr *r, double lo, double hi) {
    int c = jr_peek(r);
    if (c == 'n') return jr_literal(r, "null", 4);
    if (c != '-' && (c < '0' || c > '9')) return false;
    const unsigned char *start = r->p;
    if (!jr_number(r, NULL, NULL)) return false;
    char tmp[40];
    size_t n = (size_t)(r->p - start);
    if (n >= sizeof tmp) return false;
    memcpy(tmp, start, n);
    tmp[n] = 0;
    double d = strtod(tmp, NULL);
    return d >= lo && d <= hi;
}

/* An integer >= lo (<= hi), or null; *out gets it (-1 for null). */
static bool pk_int(jr *r, int64_t lo, int64_t hi, int64_t *out) {
    *out = -1;
    int c = jr_peek(r);
    if (c == 'n') return jr_literal(r, "null", 4);
    bool is_int = false;
    int64_t v = 0;
    if (c != '-' && (c < '0' || c > '9')) return false;
    if (!jr_number(r, &v, &is_int) || !is_int || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool pk_messages(jr *r) {
    if (!jr_open(r, '[')) return false;
    bool first = true;
    size_t n = 0;
    while (jr_element(r, &first)) {
        if (!jr_open(r, '{')) return false;
        bool mfirst = true, has_tcid = false, content_null = true;
        int role = -1;   /* 0 user, 1 system/developer, 2 assistant, 3 tool, 4 function */
        jslice k;
        while (jr_member(r, &mfirst, &k)) {
            if (key_is(&k, "role")) {
                jslice v;
                if (role >= 0 || jr_peek(r) != '"' || !jr_string(r, &v) || v.esc) return false;
                static const struct { const char *name; int role; } roles[] = {
                    {"user", 0}, {"system", 1}, {"developer", 1}, {"assistant", 2}, {"tool", 3}, {"function", 4}};
                for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
                    if (v.n == strlen(roles[i].name) && memcmp(v.s, roles[i].name, v.n) == 0) role = roles[i].role;
                if (role < 0) return false;
            } else if (key_is(&k, "content")) {
                int c = jr_peek(r);
                if (c == 'n') { if (!jr_literal(r, "null", 4)) return false; }
                else if (c == '"' || c == '[') { content_null = false; if (!jr_skip(r)) return false; }
                else return false;
            } else if (key_is(&k, "tool_call_id")) {
                jslice v;
                if (jr_peek(r) != '"' || !jr_string(r, &v)) return false;
                has_tcid = true;
            } else if (!jr_skip(r)) {
                return false;
            }
        }
        r->depth--;
        if (r->bad || role < 0 || (content_null && role != 2) || (role == 3 && !has_tcid)) return false;
        n++;
    }
    r->depth--;
    return !r->bad && n > 0;
}

static bool pk_stream_options(jr *r, oai_peek *pk, const char *body, bool *present) {
    *present = false;
    int c = jr_peek(r);
    if (c == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '{')) return false;
    *present = true;
    bool first = true;
    jslice k;
    while (jr_member(r, &first, &k)) {
        uint32_t start = (uint32_t)(k.s - 1 - body);
        if (key_is(&k, "include_usage")) {
            int v = jr_peek(r);
            if (v == 't') { if (!jr_literal(r, "true", 4)) return false; pk->include_usage = true; }
            else if (v == 'f') { if (!jr_literal(r, "false", 5)) return false; }
            else return false;
        } else {
            if (!jr_skip(r) || pk->n_so == OAI_PEEK_MAX_SO) return false;
            pk->so[pk->n_so].start = start;
            pk->so[pk->n_so].end = (uint32_t)((const char *)r->p - body);
            pk->n_so++;
        }
    }
    r->depth--;
    return !r->bad;
}

static bool pk_provider(jr *r, oai_peek *pk) {
    int c = jr_peek(r);
    if (c == 'n') return jr_literal(r, "null", 4);
    if (!jr_open(r, '{')) return false;
    bool first = true;
    jslice k;
    while (jr_member(r, &first, &k)) {
        bool ok;
        if (key_is(&k, "order")) ok = pk_list(r, pk, pk->order, &pk->n_order);
        else if (key_is(&k, "only")) ok = pk_list(r, pk, pk->only, &pk->n_only);
        else if (key_is(&k, "ignore")) ok = pk_list(r, pk, pk->ignore, &pk->n_ignore);
        else ok = jr_skip(r);
        if (!ok) return false;
    }
    r->depth--;
    return !r->bad;
}

int oai_peek_request(const char *body, size_t len, oai_peek *pk) {
    memset(pk, 0, offsetof(oai_peek, strs));
    pk->max_tokens = -1;
    if (len >= UINT32_MAX) return 1;
    jr r = {(const unsigned char *)body, (const unsigned char *)body + len, 0, false, NULL};
    if (!jr_open(&r, '{')) return 1;
    bool first = true, have_messages = false, so_present = false;
    unsigned seen = 0;   /* routing keys seen, to refuse duplicates */
    int64_t mt = -1, mct = -1, ignored;
    const char *model = NULL;
    jslice k;
    while (jr_member(&r, &first, &k)) {
        uint32_t start = (uint32_t)(k.s - 1 - body);
        int what = PK_KEEP;
        unsigned bit = 0;
        bool ok;
        if (key_is(&k, "model")) {
            what = PK_MODEL, bit = 1;
            jslice v;
            ok = jr_peek(&r) == '"' && jr_string(&r, &v) && (model = pk_str(pk, &v)) != NULL;
        } else if (key_is(&k, "messages")) {
            bit = 2;
            ok = have_messages = pk_messages(&r);
        } else if (key_is(&k, "stream")) {
            what = PK_STREAM, bit = 4;
            int c = jr_peek(&r);
            if (c == 't') {
                ok = jr_literal(&r, "true", 4);
                pk->stream = true;
            } else if (c == 'f') ok = jr_literal(&r, "false", 5);
            else ok = c == 'n' && jr_literal(&r, "null", 4);
        } else if (key_is(&k, "stream_options")) {
            what = PK_SO, bit = 8;
            ok = pk_stream_options(&r, pk, body, &so_present);
        } else if (key_is(&k, "max_tokens")) {
            bit = 16;
            ok = pk_int(&r, 1, INT64_MAX, &mt);
        } else if (key_is(&k, "max_completion_tokens")) {
            bit = 32;
            ok = pk_int(&r, 1, INT64_MAX, &mct);
        } else if (key_is(&k, "models")) {
            what = PK_MODELS, bit = 64;
            ok = pk_list(&r, pk, pk->models, &pk->n_models);
        } else if (key_is(&k, "provider")) {
            what = PK_PROVIDER, bit = 128;
            ok = pk_provider(&r, pk);
        } else if (key_is(&k, "tools")) {
            bit = 256;
            int c = jr_peek(&r);
            if (c == 'n') ok = jr_literal(&r, "null", 4);
            else if (c == '[') {
                const unsigned char *at = r.p;
                ok = jr_skip(&r);
                const unsigned char *q = at + 1;   /* non-empty when something follows '[' */
                while (q < r.p && (*q == ' ' || *q == '\n' || *q == '\r' || *q == '\t')) q++;
                pk->has_tools = *q != ']';
            } else ok = false;
        } else if (key_is(&k, "n")) {
            ok = pk_int(&r, 1, 1, &ignored);
        } else if (key_is(&k, "temperature")) {
            ok = pk_number(&r, 0, 2);
        } else if (key_is(&k, "top_p")) {
            ok = pk_number(&r, 0, 1);
        } else if (key_is(&k, "presence_penalty") || key_is(&k, "frequency_penalty")) {
            ok = pk_number(&r, -2, 2);
        } else if (key_is(&k, "thinking")) {
            what = PK_THINKING;
            ok = jr_skip(&r);
        } else if (key_is(&k, "top_k")) {
            what = PK_TOP_K;
            ok = pk_int(&r, 0, INT64_MAX, &ignored);
        } else {
            ok = jr_skip(&r);
        }
        if (!ok || r.bad || (seen & bit) || pk->n_members == OAI_PEEK_MAX_MEMBERS) return 1;
        seen |= bit;
        pk->members[pk->n_members].start = start;
        pk->members[pk->n_members].end = (uint32_t)((const char *)r.p - body);
        pk->members[pk->n_members].what = (uint8_t)what;
        pk->n_members++;
    }
    if (r.bad || !jr_end(&r) || !have_messages) return 1;
    if (so_present && !pk->stream) return 1;   /* oai_parse_request words that error */
    if (model && !*model) model = NULL;
    pk->model = model ? model : pk->n_models ? pk->models[0] : NULL;
    if (!pk->model) return 1;
    pk->include_usage = pk->include_usage && pk->stream;
    pk->max_tokens = mct >= 0 ? mct : mt;
    return 0;
}

void oai_splice_upstream(const char *body, const oai_peek *pk, const char *model, bool stream, unsigned flags,
                         sg_buf *out) {
    size_t total = 64 + strlen(model);
    for (uint32_t i = 0; i < pk->n_members; i++) total += pk->members[i].end - pk->members[i].start + 1;
    sg_buf_reserve(out, total);
    sg_buf_puts(out, "{\"model\":");
    sg_buf_json_str(out, model, strlen(model));
    sg_buf_puts(out, stream ? ",\"stream\":true" : ",\"stream\":false");
    if (stream) {
        sg_buf_puts(out, ",\"stream_options\":{\"include_usage\":true");
        for (uint32_t i = 0; i < pk->n_so; i++) {
            sg_buf_putc(out, ',');
            sg_buf_append(out, body + pk->so[i].start, pk->so[i].end - pk->so[i].start);
        }
        sg_buf_putc(out, '}');
    }
    for (uint32_t i = 0; i < pk->n_members; i++) {
        int what = pk->members[i].what;
        if (what != PK_KEEP && !(what == PK_TOP_K && (flags & OAI_UP_KEEP_EXTENSIONS))) continue;
        sg_buf_putc(out, ',');
        sg_buf_append(out, body + pk->members[i].start, pk->members[i].end - pk->members[i].start);
    }
    sg_buf_putc(out, '}');
}

/* ====================================================================================== */
/* Rendering */

void oai_render_init(oai_render *r, sg_buf *out, bool stream, bool include_usage, const char *id,
                     const char *model, int64_t created) {
    memset(r, 0, sizeof *r);
    r->out = out;
    r->stream = stream;
    r->include_usage = include_usage;
    r->created = created;
    if (id) snprintf(r->id, sizeof r->id, "%s", id);
    if (model) snprintf(r->model, sizeof r->model, "%s", model);
    gw_usage_init(&r->usage);
    sg_buf_init(&r->prefix);
    sg_buf_init(&r->content);
    sg_buf_init(&r->reasoning);
}

void oai_render_free(oai_render *r) {
    sg_buf_free(&r->prefix);
    sg_buf_free(&r->content);
    sg_buf_free(&r->reasoning);
    for (size_t i = 0; i < r->n_tools; i++) {
        free(r->tools[i].id);
        free(r->tools[i].name);
        sg_buf_free(&r->tools[i].args);
    }
    free(r->tools);
    r->tools = NULL;
    r->n_tools = 0;
}

static void put_str(sg_buf *b, const char *s) { sg_buf_json_str(b, s, strlen(s)); }

static int64_t nz(int64_t v) { return v < 0 ? 0 : v; }

static void put_usage(sg_buf *b, const gw_usage *u) {
    int64_t prompt = nz(u->input) + nz(u->cache_read) + nz(u->cache_write), completion = nz(u->output);
    sg_buf_printf(b,
                  "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
                  "\"prompt_tokens_details\":{\"cached_tokens\":%lld},"
                  "\"completion_tokens_details\":{\"reasoning_tokens\":%lld}}",
                  (long long)prompt, (long long)completion, (long long)(prompt + completion),
                  (long long)nz(u->cache_read), (long long)nz(u->reasoning));
}

/* The chunk envelope up to and including `"choices":` is the same for every chunk. */
static void ensure_prefix(oai_render *r) {
    if (r->prefix.len) return;
    if (!r->id[0]) snprintf(r->id, sizeof r->id, "%s", "chatcmpl-smolgate");
    sg_buf_puts(&r->prefix, "{\"id\":");
    put_str(&r->prefix, r->id);
    sg_buf_printf(&r->prefix, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                  (long long)r->created);
    put_str(&r->prefix, r->model);
    sg_buf_puts(&r->prefix, ",\"choices\":");
}

/* data: <prefix>[{"index":0,"delta":{DELTA},"logprobs":null,"finish_reason":FINISH}]}\n\n */
static void chunk_open(oai_render *r) {
    ensure_prefix(r);
    sg_buf_append(r->out, "data: ", 6);
    sg_buf_append(r->out, r->prefix.data, r->prefix.len);
    sg_buf_puts(r->out, "[{\"index\":0,\"delta\":{");
}

static void chunk_close(oai_render *r, const char *finish) {
    sg_buf_puts(r->out, "},\"logprobs\":null,\"finish_reason\":");
    if (finish) put_str(r->out, finish);
    else sg_buf_puts(r->out, "null");
    sg_buf_puts(r->out, "}]}\n\n");
}

static void send_head(oai_render *r) {
    if (r->head_sent) return;
    r->head_sent = true;
    if (!r->stream) return;
    chunk_open(r);
    sg_buf_puts(r->out, "\"role\":\"assistant\",\"content\":\"\"");
    chunk_close(r, NULL);
}

static oai_render_tool *tool_for(oai_render *r, int canon_index, bool *is_new) {
    for (size_t i = 0; i < r->n_tools; i++)
        if (r->tools[i].canon_index == canon_index) { *is_new = false; return &r->tools[i]; }
    if (r->n_tools == r->cap_tools) {
        r->cap_tools = r->cap_tools ? 2 * r->cap_tools : 4;
        r->tools = sg_xrealloc(r->tools, r->cap_tools * sizeof *r->tools);
    }
    oai_render_tool *t = &r->tools[r->n_tools++];
    memset(t, 0, sizeof *t);
    t->canon_index = canon_index;
    sg_buf_init(&t->args);
    *is_new = true;
    return t;
}

static void render_stream_error(oai_render *r, const gw_api_error *e) {
    sg_buf_append(r->out, "data: ", 6);
    oai_error_body(r->out, e);
    sg_buf_append(r->out, "\n\n", 2);
}

void oai_render_error(oai_render *r, const gw_api_error *e) {
    if (r->ended || r->failed) return;
    r->failed = true;
    r->error = *e;
    if (r->stream) {
        render_stream_error(r, e);
        r->ended = true;
    }
}

int oai_render_event(void *ctx, const gw_event *ev) {
    oai_render *r = ctx;
    if (r->ended || r->failed) return 0;
    switch (ev->kind) {
    case GW_EV_START:
        if (!r->id[0] && ev->id && *ev->id) snprintf(r->id, sizeof r->id, "%s", ev->id);
        if (!r->model[0] && ev->name) snprintf(r->model, sizeof r->model, "%s", ev->name);
        send_head(r);
        break;
    case GW_EV_TEXT:
    case GW_EV_REASONING:
        if (!ev->len) break;
        send_head(r);
        if (r->stream) {
            chunk_open(r);
            sg_buf_puts(r->out, ev->kind == GW_EV_TEXT ? "\"content\":" : "\"reasoning_content\":");
            sg_buf_json_str(r->out, ev->text, ev->len);
            chunk_close(r, NULL);
        } else {
            sg_buf_append(ev->kind == GW_EV_TEXT ? &r->content : &r->reasoning, ev->text, ev->len);
        }
        break;
    case GW_EV_TOOL_CALL: {
        send_head(r);
        bool is_new = false;
        oai_render_tool *t = tool_for(r, ev->index, &is_new);
        int ord = (int)(t - r->tools);
        if (is_new) {
            char gen[32];
            if (!ev->id) snprintf(gen, sizeof gen, "call_%d", ord);
            t->id = sg_xstrdup(ev->id ? ev->id : gen);
            t->name = sg_xstrdup(ev->name ? ev->name : "");
        }
        if (r->stream) {
            if (!is_new && !ev->len) break;
            chunk_open(r);
            sg_buf_printf(r->out, "\"tool_calls\":[{\"index\":%d,", ord);
            if (is_new) {
                sg_buf_puts(r->out, "\"id\":");
                put_str(r->out, t->id);
                sg_buf_puts(r->out, ",\"type\":\"function\",\"function\":{\"name\":");
                put_str(r->out, t->name);
                sg_buf_puts(r->out, ",\"arguments\":");
            } else {
                sg_buf_puts(r->out, "\"function\":{\"arguments\":");
            }
            sg_buf_json_str(r->out, ev->text ? ev->text : "", ev->len);
            sg_buf_puts(r->out, "}}]");
            chunk_close(r, NULL);
        } else if (ev->len) {
            sg_buf_append(&t->args, ev->text, ev->len);
        }
        break;
    }
    case GW_EV_FINISH:
        if (r->finish_sent) break;
        send_head(r);
        snprintf(r->finish, sizeof r->finish, "%s", ev->finish ? ev->finish : "stop");
        r->finish_sent = true;
        if (r->stream) {
            chunk_open(r);
            chunk_close(r, r->finish);
        }
        break;
    case GW_EV_USAGE:
        r->usage = ev->usage;
        r->have_usage = true;
        break;
    case GW_EV_ERROR: {
        gw_api_error e;
        gw_api_fail(&e, ev->status ? ev->status : 502, NULL, NULL, "%.*s", (int)(ev->len < 480 ? ev->len : 480),
                    ev->text ? ev->text : "");
        if (ev->err_type) snprintf(e.type, sizeof e.type, "%s", ev->err_type);
        oai_render_error(r, &e);
        break;
    }
    case GW_EV_EMBEDDING: break;   /* not a chat event */
    }
    return 0;
}

int oai_render_end(oai_render *r) {
    if (r->ended) return r->failed && !r->stream ? r->error.status : 200;
    r->ended = true;
    if (r->failed) {   /* non-stream: the error body */
        oai_error_body(r->out, &r->error);
        return r->error.status ? r->error.status : 500;
    }
    if (r->stream) {
        send_head(r);
        if (!r->finish_sent) {
            chunk_open(r);
            chunk_close(r, r->n_tools ? "tool_calls" : "stop");
        }
        if (r->include_usage && r->have_usage) {
            ensure_prefix(r);
            sg_buf_append(r->out, "data: ", 6);
            sg_buf_append(r->out, r->prefix.data, r->prefix.len);
            sg_buf_puts(r->out, "[],\"usage\":");
            put_usage(r->out, &r->usage);
            sg_buf_puts(r->out, "}\n\n");
        }
        sg_buf_puts(r->out, "data: [DONE]\n\n");
        return 200;
    }
    if (!r->id[0]) snprintf(r->id, sizeof r->id, "%s", "chatcmpl-smolgate");
    sg_buf *o = r->out;
    sg_buf_puts(o, "{\"id\":");
    put_str(o, r->id);
    sg_buf_printf(o, ",\"object\":\"chat.completion\",\"created\":%lld,\"model\":", (long long)r->created);
    put_str(o, r->model);
    sg_buf_puts(o, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (r->content.len || !r->n_tools) sg_buf_json_str(o, r->content.data ? r->content.data : "", r->content.len);
    else sg_buf_puts(o, "null");
    if (r->reasoning.len) {
        sg_buf_puts(o, ",\"reasoning_content\":");
        sg_buf_json_str(o, r->reasoning.data, r->reasoning.len);
    }
    if (r->n_tools) {
        sg_buf_puts(o, ",\"tool_calls\":[");
        for (size_t i = 0; i < r->n_tools; i++) {
            oai_render_tool *t = &r->tools[i];
            if (i) sg_buf_putc(o, ',');
            sg_buf_puts(o, "{\"id\":");
            put_str(o, t->id);
            sg_buf_puts(o, ",\"type\":\"function\",\"function\":{\"name\":");
            put_str(o, t->name);
            sg_buf_puts(o, ",\"arguments\":");
            sg_buf_json_str(o, t->args.data ? t->args.data : "", t->args.len);
            sg_buf_puts(o, "}}");
        }
        sg_buf_putc(o, ']');
    }
    sg_buf_puts(o, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":");
    put_str(o, r->finish_sent ? r->finish : r->n_tools ? "tool_calls" : "stop");
    sg_buf_puts(o, "}]");
    if (r->have_usage) {
        sg_buf_puts(o, ",\"usage\":");
        put_usage(o, &r->usage);
    }
    sg_buf_putc(o, '}');
    return 200;
}

/* ====================================================================================== */

void oai_error_body(sg_buf *out, const gw_api_error *e) {
    sg_buf_puts(out, "{\"error\":{\"message\":");
    put_str(out, e->message);
    sg_buf_puts(out, ",\"type\":");
    put_str(out, e->type[0] ? e->type : gw_error_type_for_status(GW_WIRE_OPENAI, e->status));
    sg_buf_puts(out, ",\"param\":");
    if (e->param[0]) put_str(out, e->param);
    else sg_buf_puts(out, "null");
    sg_buf_puts(out, ",\"code\":");
    if (e->code[0]) put_str(out, e->code);
    else sg_buf_puts(out, "null");
    sg_buf_puts(out, "}}");
}
