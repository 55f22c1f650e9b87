/* json_schema.c: see json_schema.h. One pass over the schema writes GBNF: an expression
 * per subschema, auxiliary rules (objects, arrays, $defs) appended as they are made;
 * each $ref target becomes a rule the first time it is named, so recursion is a rule
 * that refers to itself. Patterns are translated by a small regex parser. */
#include "engine/json_schema.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64                 /* schema nesting */
#define MAX_COUNT 4096               /* minItems / maxItems / lengths / pattern counts */
#define MAX_OUT (8u << 20)           /* GBNF bytes: a larger schema is an error */

/* The primitives every schema grammar can use. hex-ns: \u escapes never write a
 * surrogate half, so string lengths stay those a validator counts. */
#define PRELUDE_TEXT \
    "ws ::= ( \" \" | \"\\n\" [ \\t]{0,20} )?\n" \
    "string ::= \"\\\"\" char* \"\\\"\"\n" \
    "char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" hex-ns )\n" \
    "hex ::= [0-9a-fA-F]\n" \
    "hex-ns ::= [0-9a-cA-Ce-fE-F] hex hex hex | [dD] [0-7] hex hex\n" \
    "integer ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,14} )\n" \
    "number ::= integer ( \".\" [0-9]{1,15} )?\n" \
    "boolean ::= \"true\" | \"false\"\n" \
    "null ::= \"null\"\n" \
    "value ::= object | array | string | number | boolean | null\n" \
    "member ::= string ws \":\" ws value\n" \
    "object ::= \"{\" ws ( member ( ws \",\" ws member )* ws )? \"}\"\n" \
    "array ::= \"[\" ws ( value ( ws \",\" ws value )* ws )? \"]\"\n" \
    "date ::= [0-9]{4} \"-\" ( ( \"0\" [13578] | \"1\" [02] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] )" \
    " | ( \"0\" [469] | \"11\" ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"30\" )" \
    " | \"02-\" ( \"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8] ) )\n" \
    "time ::= ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )?" \
    " ( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )\n" \
    "date-time ::= date \"T\" time\n" \
    "uuid ::= hex{8} \"-\" hex{4} \"-\" hex{4} \"-\" hex{4} \"-\" hex{12}\n" \
    "email-word ::= [a-zA-Z0-9_+]+\n" \
    "email-label ::= [a-zA-Z0-9]+ ( \"-\" [a-zA-Z0-9]+ )*\n" \
    "email ::= email-word ( \".\" email-word )* \"@\" ( email-label \".\" )+ email-label\n"
static const char PRELUDE[] = PRELUDE_TEXT;

const char *json_schema_object_gbnf(void) { return "root ::= object\n" PRELUDE_TEXT; }

typedef struct conv {
    json_t *root;
    sg_buf rules;                 /* auxiliary rules */
    sg_error *err;
    int n_aux;
    struct ref { char *ptr; char name[80]; json_t *schema; } *refs;
    size_t n_refs, cap_refs, n_done;
    bool failed;
} conv;

static int cfail(conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(conv *c, const char *fmt, ...) {
    if (c->failed) return -1;
    c->failed = true;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sg_fail(c->err, "JSON Schema: %s", msg);
}

/* A GBNF literal of bytes. */
static void lit(sg_buf *o, const char *s, size_t n) {
    sg_buf_putc(o, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') { sg_buf_putc(o, '\\'); sg_buf_putc(o, (char)ch); }
        else if (ch < 0x20) sg_buf_printf(o, "\\x%02X", ch);
        else sg_buf_putc(o, (char)ch);
    }
    sg_buf_putc(o, '"');
}

/* The literal of a JSON value as compact JSON text. */
static void lit_json(sg_buf *o, json_t *v) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    lit(o, s ? s : "null", s ? strlen(s) : 4);
    free(s);
}

static int aux_name(conv *c, const char *kind, char *name, size_t cap) {
    return snprintf(name, cap, "%s-%d", kind, c->n_aux++);
}

/* ---------------------------------------------------------------- patterns */

typedef struct cpr { uint32_t lo, hi; } cpr;
typedef struct cset { cpr r[512]; size_t n; } cset;

static int cset_add(conv *c, cset *s, uint32_t lo, uint32_t hi) {
    if (s->n == sizeof s->r / sizeof s->r[0]) return cfail(c, "pattern: character class too large");
    s->r[s->n++] = (cpr){lo, hi};
    return 0;
}
static int cmp_cpr(const void *a, const void *b) {
    const cpr *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}
static void cset_norm(cset *s) {
    qsort(s->r, s->n, sizeof s->r[0], cmp_cpr);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (k && s->r[i].lo <= s->r[k - 1].hi + 1) { if (s->r[i].hi > s->r[k - 1].hi) s->r[k - 1].hi = s->r[i].hi; }
        else s->r[k++] = s->r[i];
    }
    s->n = k;
}
static void cset_negate(cset *s) {
    cset_norm(s);
    cset o = {.n = 0};
    uint32_t next = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->r[i].lo > next) o.r[o.n++] = (cpr){next, s->r[i].lo - 1};
        next = s->r[i].hi + 1;
    }
    if (next <= 0x10FFFF) o.r[o.n++] = (cpr){next, 0x10FFFF};
    *s = o;
}
static bool cset_has(const cset *s, uint32_t ch) {
    for (size_t i = 0; i < s->n; i++)
        if (ch >= s->r[i].lo && ch <= s->r[i].hi) return true;
    return false;
}

/* JavaScript's \s (what a validator's RegExp means by it). */
static const cpr JS_SPACE[] = {{9, 13}, {32, 32}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                               {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                               {0xFEFF, 0xFEFF}};

static int class_escape(conv *c, char e, cset *s, bool *neg) {
    *neg = e == 'D' || e == 'W' || e == 'S';
    switch (e) {
    case 'd': case 'D': return cset_add(c, s, '0', '9');
    case 'w': case 'W':
        cset_add(c, s, '0', '9'); cset_add(c, s, 'A', 'Z'); cset_add(c, s, 'a', 'z');
        return cset_add(c, s, '_', '_');
    case 's': case 'S':
        for (size_t i = 0; i < sizeof JS_SPACE / sizeof JS_SPACE[0]; i++) cset_add(c, s, JS_SPACE[i].lo, JS_SPACE[i].hi);
        return 0;
    }
    return 1;   /* not a class escape */
}

/* Writes the set as JSON string content: raw characters where JSON allows them,
 * escaped quote and backslash, \n and \t for those controls (other controls are left
 * out: a smaller language, still inside the pattern's). */
static void emit_cset(conv *c, cset *s, sg_buf *o) {
    (void)c;
    cset_norm(s);
    cset raw = {.n = 0};
    for (size_t i = 0; i < s->n; i++) {
        uint32_t lo = s->r[i].lo, hi = s->r[i].hi;
        if (lo < 0x20) lo = 0x20;
        for (uint32_t cut = lo; cut <= hi;) {   /* split around '"' and '\\' */
            uint32_t end = hi;
            if (cut <= '"' && end >= '"') end = cut == '"' ? '"' : '"' - 1;
            else if (cut <= '\\' && end >= '\\') end = cut == '\\' ? '\\' : '\\' - 1;
            if (!(cut == end && (cut == '"' || cut == '\\'))) raw.r[raw.n++] = (cpr){cut, end};
            cut = end + 1;
            if (end == 0x10FFFF) break;
        }
    }
    bool first = true;
    sg_buf_puts(o, "( ");
    if (raw.n) {
        sg_buf_putc(o, '[');
        for (size_t i = 0; i < raw.n; i++) {
            for (int k = 0; k < 2; k++) {
                uint32_t v = k ? raw.r[i].hi : raw.r[i].lo;
                if (k && raw.r[i].hi == raw.r[i].lo) break;
                if (k) sg_buf_putc(o, '-');
                if (v <= 0xFFFF) sg_buf_printf(o, "\\u%04X", v);
                else sg_buf_printf(o, "\\U%08X", v);
            }
        }
        sg_buf_putc(o, ']');
        first = false;
    }
    static const struct { uint32_t ch; const char *g; } esc[] = {
        {'"', "\"\\\\\\\"\""}, {'\\', "\"\\\\\\\\\""}, {'\n', "\"\\\\n\""}, {'\t', "\"\\\\t\""}};
    for (size_t i = 0; i < 4; i++)
        if (cset_has(s, esc[i].ch)) { sg_buf_printf(o, "%s%s", first ? "" : " | ", esc[i].g); first = false; }
    if (first) sg_buf_puts(o, "[^\\x00-\\U0010FFFF]");   /* nothing: unreachable class */
    sg_buf_puts(o, " )");
}

typedef struct rx { conv *c; const char *p, *end, *start; } rx;

static int rx_alt(rx *r, sg_buf *o);

static int rx_hex(rx *r, int n, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (r->p >= r->end) return cfail(r->c, "pattern: bad hex escape");
        char ch = *r->p++;
        int h = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (h < 0) return cfail(r->c, "pattern: bad hex escape");
        *v = *v << 4 | (uint32_t)h;
    }
    return 0;
}

static uint32_t rx_utf8(rx *r) {
    const unsigned char *s = (const unsigned char *)r->p;
    uint32_t ch = s[0];
    int n = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 1;
    if (r->p + n > r->end) n = 1;
    if (n > 1) {
        ch &= 0x3F >> (n - 1);
        for (int i = 1; i < n; i++) ch = ch << 6 | (s[i] & 63);
    }
    r->p += n;
    return ch;
}

/* One escaped character (after the backslash) that stands for itself; -1 on error. */
static int rx_escape_char(rx *r, uint32_t *ch) {
    if (r->p >= r->end) return cfail(r->c, "pattern: ends with '\\'");
    char e = *r->p++;
    switch (e) {
    case 'n': *ch = '\n'; return 0;
    case 't': *ch = '\t'; return 0;
    case 'r': *ch = '\r'; return 0;
    case 'f': *ch = '\f'; return 0;
    case 'v': *ch = '\v'; return 0;
    case '0': *ch = 0; return 0;
    case 'x': return rx_hex(r, 2, ch);
    case 'u': return rx_hex(r, 4, ch);
    case 'b': case 'B': return cfail(r->c, "pattern: word boundaries (\\%c) are not supported", e);
    case 'k': return cfail(r->c, "pattern: named backreferences are not supported");
    case 'p': case 'P': return cfail(r->c, "pattern: Unicode property escapes (\\%c) are not supported", e);
    default:
        if (e >= '1' && e <= '9') return cfail(r->c, "pattern: backreferences are not supported");
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z'))
            return cfail(r->c, "pattern: unknown escape '\\%c'", e);
        r->p--;
        *ch = rx_utf8(r);
        return 0;
    }
}

static int rx_class(rx *r, sg_buf *o) {
    cset s = {.n = 0};
    bool neg = false;
    if (r->p < r->end && *r->p == '^') { neg = true; r->p++; }
    bool first = true;
    while (r->p < r->end && (*r->p != ']' || first)) {
        first = false;
        uint32_t lo;
        if (*r->p == '\\') {
            r->p++;
            bool n2;
            if (r->p < r->end && class_escape(r->c, *r->p, &s, &n2) != 1) {
                if (n2) return cfail(r->c, "pattern: negated shorthand \\%c inside a class is not supported", *r->p);
                r->p++;
                continue;
            }
            if (r->p < r->end && *r->p == 'b') { r->p++; lo = '\b'; }
            else if (rx_escape_char(r, &lo)) return -1;
        } else lo = rx_utf8(r);
        uint32_t hi = lo;
        if (r->p + 1 < r->end && *r->p == '-' && r->p[1] != ']') {
            r->p++;
            if (*r->p == '\\') { r->p++; if (rx_escape_char(r, &hi)) return -1; }
            else hi = rx_utf8(r);
            if (hi < lo) return cfail(r->c, "pattern: class range out of order");
        }
        if (cset_add(r->c, &s, lo, hi)) return -1;
    }
    if (r->p >= r->end) return cfail(r->c, "pattern: unterminated class");
    r->p++;
    if (neg) cset_negate(&s);
    emit_cset(r->c, &s, o);
    return 0;
}

static int rx_atom(rx *r, sg_buf *o) {
    char ch = *r->p;
    if (ch == '(') {
        r->p++;
        if (r->p < r->end && *r->p == '?') {
            if (r->p + 1 < r->end && r->p[1] == ':') r->p += 2;
            else if (r->p + 1 < r->end && (r->p[1] == '=' || r->p[1] == '!'))
                return cfail(r->c, "pattern: lookahead is not supported");
            else if (r->p + 2 < r->end && r->p[1] == '<' && (r->p[2] == '=' || r->p[2] == '!'))
                return cfail(r->c, "pattern: lookbehind is not supported");
            else if (r->p + 1 < r->end && r->p[1] == '<') {   /* named group: a group */
                const char *q = memchr(r->p, '>', (size_t)(r->end - r->p));
                if (!q) return cfail(r->c, "pattern: unterminated group name");
                r->p = q + 1;
            } else return cfail(r->c, "pattern: unsupported group '(?%c'", r->p[1]);
        }
        sg_buf_puts(o, "( ");
        if (rx_alt(r, o)) return -1;
        if (r->p >= r->end || *r->p != ')') return cfail(r->c, "pattern: ')' expected");
        r->p++;
        sg_buf_puts(o, " )");
        return 0;
    }
    if (ch == '[') { r->p++; return rx_class(r, o); }
    cset s = {.n = 0};
    if (ch == '.') {
        r->p++;
        cset_add(r->c, &s, '\n', '\n'); cset_add(r->c, &s, '\r', '\r'); cset_add(r->c, &s, 0x2028, 0x2029);
        cset_negate(&s);
        emit_cset(r->c, &s, o);
        return 0;
    }
    if (ch == '*' || ch == '+' || ch == '?' || ch == '{')
        return cfail(r->c, "pattern: '%c' with nothing to repeat", ch);
    uint32_t cp;
    if (ch == '\\') {
        r->p++;
        bool neg;
        if (r->p < r->end && class_escape(r->c, *r->p, &s, &neg) != 1) {
            r->p++;
            if (neg) cset_negate(&s);
            emit_cset(r->c, &s, o);
            return 0;
        }
        if (rx_escape_char(r, &cp)) return -1;
    } else cp = rx_utf8(r);
    cset_add(r->c, &s, cp, cp);
    emit_cset(r->c, &s, o);
    return 0;
}

static int rx_count(rx *r, long *v) {
    if (r->p >= r->end || *r->p < '0' || *r->p > '9') return cfail(r->c, "pattern: bad {m,n}");
    long x = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        x = x * 10 + (*r->p++ - '0');
        if (x > MAX_COUNT) return cfail(r->c, "pattern: repetition count above %d", MAX_COUNT);
    }
    *v = x;
    return 0;
}

static int rx_seq(rx *r, sg_buf *o) {
    bool empty = true;
    while (r->p < r->end && *r->p != '|' && *r->p != ')') {
        if (*r->p == '^') {
            if (r->p != r->start) return cfail(r->c, "pattern: '^' is supported only at the start");
            r->p++;
            continue;
        }
        if (*r->p == '$') {
            if (r->p + 1 != r->end) return cfail(r->c, "pattern: '$' is supported only at the end");
            r->p++;
            continue;
        }
        sg_buf_puts(o, "( ");
        if (rx_atom(r, o)) return -1;
        sg_buf_puts(o, " )");
        empty = false;
        if (r->p < r->end && (*r->p == '*' || *r->p == '+' || *r->p == '?')) sg_buf_putc(o, *r->p++);
        else if (r->p < r->end && *r->p == '{') {
            r->p++;
            long mn, mx;
            if (rx_count(r, &mn)) return -1;
            mx = mn;
            if (r->p < r->end && *r->p == ',') {
                r->p++;
                mx = -1;
                if (r->p < r->end && *r->p != '}' && rx_count(r, &mx)) return -1;
            }
            if (r->p >= r->end || *r->p != '}') return cfail(r->c, "pattern: '}' expected");
            r->p++;
            if (mx >= 0 && mx < mn) return cfail(r->c, "pattern: {%ld,%ld} has its maximum below its minimum", mn, mx);
            if (mx < 0) sg_buf_printf(o, "{%ld,}", mn);
            else sg_buf_printf(o, "{%ld,%ld}", mn, mx);
        } else { sg_buf_putc(o, ' '); continue; }
        if (r->p < r->end && *r->p == '?') r->p++;   /* lazy: the same language */
        sg_buf_putc(o, ' ');
    }
    if (empty) sg_buf_puts(o, "\"\"");
    return 0;
}

static int rx_alt(rx *r, sg_buf *o) {
    if (rx_seq(r, o)) return -1;
    while (r->p < r->end && *r->p == '|') {
        r->p++;
        sg_buf_puts(o, " | ");
        if (rx_seq(r, o)) return -1;
    }
    return 0;
}

static int pattern_expr(conv *c, const char *pat, sg_buf *o) {
    rx r = {c, pat, pat + strlen(pat), pat};
    sg_buf_puts(o, "\"\\\"\" ( ");
    if (rx_alt(&r, o)) return -1;
    if (r.p != r.end) return cfail(c, "pattern: unbalanced ')'");
    sg_buf_puts(o, " ) \"\\\"\"");
    return 0;
}

/* ---------------------------------------------------------------- schemas */

static int schema_expr(conv *c, json_t *s, sg_buf *o, int depth);

static const char *const KNOWN[] = {
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    "enum", "const", "anyOf", "$ref", "$defs", "definitions", "format", "pattern", "minLength",
    "maxLength", "description", "title", "$schema", "$id", "$comment", "default", "examples", NULL};

static int check_keywords(conv *c, json_t *s) {
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        bool ok = false;
        for (size_t i = 0; KNOWN[i] && !ok; i++) ok = !strcmp(k, KNOWN[i]);
        if (!ok) return cfail(c, "unsupported JSON Schema keyword '%s'", k);
    }
    return 0;
}

static int get_count(conv *c, json_t *s, const char *key, long dflt, long *out) {
    json_t *v = json_object_get(s, key);
    *out = dflt;
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) return cfail(c, "'%s' must be a non-negative integer", key);
    if (json_integer_value(v) > MAX_COUNT) return cfail(c, "'%s' above %d is not supported", key, MAX_COUNT);
    *out = (long)json_integer_value(v);
    return 0;
}

/* A rule for a reference, made on first use; its body is written after the root. */
static int ref_rule(conv *c, const char *ptr, sg_buf *o) {
    for (size_t i = 0; i < c->n_refs; i++)
        if (!strcmp(c->refs[i].ptr, ptr)) { sg_buf_puts(o, c->refs[i].name); return 0; }
    json_t *target = NULL;
    if (!strcmp(ptr, "#")) target = c->root;
    else {
        const char *rest = NULL;
        json_t *defs = NULL;
        if (!strncmp(ptr, "#/$defs/", 8)) { defs = json_object_get(c->root, "$defs"); rest = ptr + 8; }
        else if (!strncmp(ptr, "#/definitions/", 14)) { defs = json_object_get(c->root, "definitions"); rest = ptr + 14; }
        else return cfail(c, "unsupported $ref '%.100s' (only \"#\", \"#/$defs/NAME\" and \"#/definitions/NAME\")", ptr);
        char key[256];
        size_t k = 0;
        for (const char *p = rest; *p && k + 1 < sizeof key; p++) {   /* JSON pointer escapes */
            if (*p == '/') return cfail(c, "unsupported $ref '%.100s': nested pointer", ptr);
            if (p[0] == '~' && p[1] == '0') { key[k++] = '~'; p++; }
            else if (p[0] == '~' && p[1] == '1') { key[k++] = '/'; p++; }
            else key[k++] = *p;
        }
        key[k] = 0;
        target = defs ? json_object_get(defs, key) : NULL;
        if (!target) return cfail(c, "$ref '%.100s' names no definition", ptr);
    }
    if (c->n_refs == c->cap_refs) {
        c->cap_refs = c->cap_refs ? c->cap_refs * 2 : 8;
        c->refs = realloc(c->refs, c->cap_refs * sizeof *c->refs);
        if (!c->refs) abort();
    }
    struct ref *r = &c->refs[c->n_refs++];
    r->ptr = sg_xstrdup(ptr);
    r->schema = target;
    aux_name(c, "def", r->name, sizeof r->name);
    sg_buf_puts(o, r->name);
    return 0;
}

static int object_expr(conv *c, json_t *s, sg_buf *o, int depth) {
    json_t *props = json_object_get(s, "properties");
    json_t *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if (addl && !json_is_boolean(addl)) return cfail(c, "'additionalProperties' as a schema is not supported (use false)");
    if (props && !json_is_object(props)) return cfail(c, "'properties' must be an object");
    if (req && !json_is_array(req)) return cfail(c, "'required' must be an array");
    size_t i;
    json_t *rv;
    json_array_foreach(req, i, rv) {
        if (!json_is_string(rv)) return cfail(c, "'required' must list strings");
        if (!props || !json_object_get(props, json_string_value(rv)))
            return cfail(c, "required property '%.100s' is not in 'properties'", json_string_value(rv));
    }
    if (!props || !json_object_size(props)) {
        if (req && json_array_size(req)) return cfail(c, "'required' without 'properties'");
        if (json_is_false(addl)) sg_buf_puts(o, "\"{\" ws \"}\"");
        else sg_buf_puts(o, "object");
        return 0;
    }
    size_t n = json_object_size(props);
    char base[64];
    aux_name(c, "obj", base, sizeof base);
    /* F_i: the members from i on, none written yet; T_i: the same after one was */
    const char *key;
    json_t *ps;
    size_t k = 0;
    json_object_foreach(props, key, ps) {
        bool required = false;
        json_array_foreach(req, i, rv) if (!strcmp(json_string_value(rv), key)) required = true;
        sg_buf m;
        sg_buf_init(&m);
        sg_buf enc;
        sg_buf_init(&enc);
        sg_buf_json_str(&enc, key, strlen(key));
        lit(&m, enc.data, enc.len);
        sg_buf_free(&enc);
        sg_buf_puts(&m, " ws \":\" ws ");
        if (schema_expr(c, ps, &m, depth + 1)) { sg_buf_free(&m); return -1; }
        const char *mm = m.data;
        sg_buf_printf(&c->rules, "%s-m%zu ::= %s\n", base, k, mm);
        if (required) sg_buf_printf(&c->rules, "%s-t%zu ::= ws \",\" ws %s-m%zu %s-t%zu\n", base, k, base, k, base, k + 1);
        else sg_buf_printf(&c->rules, "%s-t%zu ::= ( ws \",\" ws %s-m%zu )? %s-t%zu\n", base, k, base, k, base, k + 1);
        if (required) sg_buf_printf(&c->rules, "%s-f%zu ::= %s-m%zu %s-t%zu\n", base, k, base, k, base, k + 1);
        else sg_buf_printf(&c->rules, "%s-f%zu ::= %s-m%zu %s-t%zu | %s-f%zu\n", base, k, base, k, base, k + 1, base, k + 1);
        sg_buf_free(&m);
        k++;
    }
    sg_buf_printf(&c->rules, "%s-t%zu ::= \"\"\n%s-f%zu ::= \"\"\n", base, n, base, n);
    sg_buf_printf(o, "\"{\" ws %s-f0 ws \"}\"", base);
    return 0;
}

static int array_expr(conv *c, json_t *s, sg_buf *o, int depth) {
    long mn, mx;
    if (get_count(c, s, "minItems", 0, &mn) || get_count(c, s, "maxItems", -1, &mx)) return -1;
    if (mx >= 0 && mx < mn) return cfail(c, "minItems %ld is above maxItems %ld", mn, mx);
    json_t *items = json_object_get(s, "items");
    char item[64];
    aux_name(c, "item", item, sizeof item);
    sg_buf b;
    sg_buf_init(&b);
    if (items && !json_is_object(items) && !json_is_true(items)) { sg_buf_free(&b); return cfail(c, "'items' must be a schema"); }
    if (items && json_is_object(items)) { if (schema_expr(c, items, &b, depth + 1)) { sg_buf_free(&b); return -1; } }
    else sg_buf_puts(&b, "value");
    sg_buf_printf(&c->rules, "%s ::= %s\n", item, b.data);
    sg_buf_free(&b);
    if (mx == 0) { sg_buf_puts(o, "\"[\" ws \"]\""); return 0; }
    char more[96];
    snprintf(more, sizeof more, "( ws \",\" ws %s )", item);
    if (mn >= 1) {
        sg_buf_printf(o, "\"[\" ws %s ", item);
        if (mn > 1) sg_buf_printf(o, "%s{%ld} ", more, mn - 1);
        if (mx < 0) sg_buf_printf(o, "%s* ", more);
        else if (mx > mn) sg_buf_printf(o, "%s{0,%ld} ", more, mx - mn);
        sg_buf_puts(o, "ws \"]\"");
    } else {
        sg_buf_printf(o, "\"[\" ws ( %s ", item);
        if (mx < 0) sg_buf_printf(o, "%s* ", more);
        else if (mx > 1) sg_buf_printf(o, "%s{0,%ld} ", more, mx - 1);
        sg_buf_puts(o, "ws )? \"]\"");
    }
    return 0;
}

static int string_expr(conv *c, json_t *s, sg_buf *o) {
    json_t *fmt = json_object_get(s, "format"), *pat = json_object_get(s, "pattern");
    long mn, mx;
    if (get_count(c, s, "minLength", 0, &mn) || get_count(c, s, "maxLength", -1, &mx)) return -1;
    if (mx >= 0 && mx < mn) return cfail(c, "minLength %ld is above maxLength %ld", mn, mx);
    bool len = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
    if ((fmt != NULL) + (pat != NULL) + len > 1)
        return cfail(c, "'format', 'pattern' and minLength/maxLength together are not supported");
    if (fmt) {
        const char *f = json_string_value(fmt);
        static const char *const formats[] = {"date", "time", "date-time", "uuid", "email", NULL};
        for (size_t i = 0; f && formats[i]; i++)
            if (!strcmp(f, formats[i])) { sg_buf_printf(o, "\"\\\"\" %s \"\\\"\"", f); return 0; }
        return cfail(c, "unsupported string format '%.60s' (supported: date, time, date-time, uuid, email)", f ? f : "?");
    }
    if (pat) {
        if (!json_is_string(pat)) return cfail(c, "'pattern' must be a string");
        return pattern_expr(c, json_string_value(pat), o);
    }
    if (!len) { sg_buf_puts(o, "string"); return 0; }
    if (mx < 0) sg_buf_printf(o, "\"\\\"\" char{%ld,} \"\\\"\"", mn);
    else sg_buf_printf(o, "\"\\\"\" char{%ld,%ld} \"\\\"\"", mn, mx);
    return 0;
}

static int type_expr(conv *c, const char *t, json_t *s, sg_buf *o, int depth) {
    if (!strcmp(t, "object")) return object_expr(c, s, o, depth);
    if (!strcmp(t, "array")) return array_expr(c, s, o, depth);
    if (!strcmp(t, "string")) return string_expr(c, s, o);
    if (!strcmp(t, "number") || !strcmp(t, "integer") || !strcmp(t, "boolean") || !strcmp(t, "null")) {
        sg_buf_puts(o, t);
        return 0;
    }
    return cfail(c, "unknown type '%.60s'", t);
}

static int schema_expr(conv *c, json_t *s, sg_buf *o, int depth) {
    if (c->failed) return -1;
    if (depth > MAX_DEPTH) return cfail(c, "schema nested deeper than %d levels", MAX_DEPTH);
    if (c->rules.len > MAX_OUT || o->len > MAX_OUT) return cfail(c, "schema too large");
    if (json_is_true(s)) { sg_buf_puts(o, "value"); return 0; }
    if (!json_is_object(s)) return cfail(c, "a schema must be an object");
    if (check_keywords(c, s)) return -1;
    json_t *v;
    if ((v = json_object_get(s, "$ref"))) {
        if (!json_is_string(v)) return cfail(c, "'$ref' must be a string");
        return ref_rule(c, json_string_value(v), o);
    }
    if ((v = json_object_get(s, "const"))) { lit_json(o, v); return 0; }
    if ((v = json_object_get(s, "enum"))) {
        if (!json_is_array(v) || !json_array_size(v)) return cfail(c, "'enum' must be a non-empty array");
        size_t i;
        json_t *e;
        sg_buf_puts(o, "( ");
        json_array_foreach(v, i, e) {
            if (i) sg_buf_puts(o, " | ");
            lit_json(o, e);
        }
        sg_buf_puts(o, " )");
        return 0;
    }
    if ((v = json_object_get(s, "anyOf"))) {
        if (json_object_get(s, "type")) return cfail(c, "'anyOf' beside 'type' is not supported");
        if (!json_is_array(v) || !json_array_size(v)) return cfail(c, "'anyOf' must be a non-empty array");
        size_t i;
        json_t *e;
        sg_buf_puts(o, "( ");
        json_array_foreach(v, i, e) {
            if (i) sg_buf_puts(o, " | ");
            if (schema_expr(c, e, o, depth + 1)) return -1;
        }
        sg_buf_puts(o, " )");
        return 0;
    }
    json_t *t = json_object_get(s, "type");
    if (!t) {
        if (json_object_get(s, "properties")) return object_expr(c, s, o, depth);
        sg_buf_puts(o, "value");
        return 0;
    }
    if (json_is_string(t)) return type_expr(c, json_string_value(t), s, o, depth);
    if (!json_is_array(t) || !json_array_size(t)) return cfail(c, "'type' must be a string or a non-empty array");
    size_t i;
    json_t *e;
    sg_buf_puts(o, "( ");
    json_array_foreach(t, i, e) {
        if (!json_is_string(e)) return cfail(c, "'type' lists strings");
        if (i) sg_buf_puts(o, " | ");
        if (type_expr(c, json_string_value(e), s, o, depth)) return -1;
    }
    sg_buf_puts(o, " )");
    return 0;
}

int json_schema_to_gbnf(const char *schema, size_t len, sg_buf *out, sg_error *err) {
    json_error_t je;
    json_t *root = json_loadb(schema, len, JSON_DECODE_ANY, &je);
    if (!root) return sg_fail(err, "JSON Schema: not JSON: %s (line %d)", je.text, je.line);
    conv c = {.root = root, .err = err};
    sg_buf_init(&c.rules);
    sg_buf top;
    sg_buf_init(&top);
    int rc = schema_expr(&c, root, &top, 0);
    /* definitions named so far, and those they name in turn */
    for (size_t i = 0; !rc && i < c.n_refs; i++) {
        sg_buf b;
        sg_buf_init(&b);
        rc = schema_expr(&c, c.refs[i].schema, &b, 1);
        if (!rc) sg_buf_printf(&c.rules, "%s ::= %s\n", c.refs[i].name, b.data);
        sg_buf_free(&b);
    }
    if (!rc) {
        sg_buf_printf(out, "root ::= %s\n", top.data);
        sg_buf_append(out, c.rules.data ? c.rules.data : "", c.rules.len);
        sg_buf_puts(out, PRELUDE);
    }
    sg_buf_free(&top);
    sg_buf_free(&c.rules);
    for (size_t i = 0; i < c.n_refs; i++) free(c.refs[i].ptr);
    free(c.refs);
    json_decref(root);
    return rc ? -1 : 0;
}
