/* grammar.c: see grammar.h. Three parts: the GBNF compiler (text to byte-level rules),
 * the recogniser (hash-consed stacks, sets of stacks interned as lazy DFA states), and
 * the vocabulary trie that turns a DFA state into a token mask. */
#include "engine/grammar.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "engine/json_schema.h"

/* ------------------------------------------------------------------ compiled form */

enum { EL_END, EL_SET, EL_REF };
typedef struct gel {
    uint8_t kind;
    int32_t v;              /* EL_SET: index into sets; EL_REF: rule index */
} gel;

typedef struct byteset { uint64_t w[4]; } byteset;
static inline bool bs_has(const byteset *s, unsigned b) { return (s->w[b >> 6] >> (b & 63)) & 1; }
static inline void bs_add(byteset *s, unsigned b) { s->w[b >> 6] |= 1ull << (b & 63); }

typedef struct galt { gel *e; size_t n, cap; } galt;
typedef struct grule {
    char *name;
    bool defined;
    int line;               /* of its first use or definition, for messages */
    galt *alts;
    size_t n_alts, cap_alts;
} grule;

/* Recogniser states kept for reuse (see "the pool" below). */
#define STATE_POOL 4

struct sg_grammar {
    atomic_int refs;
    /* finished recogniser states of this grammar, their automaton and masks kept, so that
     * the next request's steps find them warm; owned by the grammar (they hold no ref) */
    pthread_mutex_t pool_mu;
    struct sg_grammar_state *pool[STATE_POOL];
    size_t n_pool;
    /* flattened: every alternative of every rule, each ended by EL_END */
    gel *el;
    size_t n_el;
    int32_t *alt_start;     /* (n_alt_total) positions into el */
    int32_t *rule_alt0;     /* (n_rules + 1) first alternative of each rule in alt_start */
    size_t n_rules;
    byteset *sets;
    size_t n_sets;
    int32_t root;
    /* the bytes of every string literal of two or more bytes, each after its u32 length:
     * a special token whose text one of them contains may stand for that text */
    uint8_t *lits;
    size_t n_lits;
};

size_t grammar_n_rules(const sg_grammar *g) { return g->n_rules; }

sg_grammar *grammar_ref(sg_grammar *g) {
    atomic_fetch_add(&g->refs, 1);
    return g;
}

static void state_destroy(struct sg_grammar_state *s);

void grammar_unref(sg_grammar *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    for (size_t i = 0; i < g->n_pool; i++) state_destroy(g->pool[i]);
    pthread_mutex_destroy(&g->pool_mu);
    free(g->el);
    free(g->alt_start);
    free(g->rule_alt0);
    free(g->sets);
    free(g->lits);
    free(g);
}

/* ------------------------------------------------------------------ GBNF parser */

#define MAX_REPEAT 4096          /* x{m,n}: bounded, so compile time is */
#define MAX_ELEMENTS (1 << 22)   /* a grammar larger than this is an error, not a hang */

typedef struct parser {
    const char *src, *p, *end;
    int line;
    grule *rules;
    size_t n_rules, cap_rules;
    byteset *sets;
    size_t n_sets, cap_sets;
    size_t n_el;
    /* lowered character classes, reused: key (ranges) to element */
    char **cls_key;
    gel *cls_el;
    size_t n_cls, cap_cls;
    sg_buf lits;              /* string literals, as sg_grammar's lits */
    sg_error *err;
    bool failed;
} parser;

static int perr(parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(parser *ps, const char *fmt, ...) {
    if (ps->failed) return -1;
    ps->failed = true;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sg_fail(ps->err, "grammar line %d: %s", ps->line, msg);
}

static int rule_get(parser *ps, const char *name, size_t n) {
    for (size_t i = 0; i < ps->n_rules; i++)
        if (strlen(ps->rules[i].name) == n && !memcmp(ps->rules[i].name, name, n)) return (int)i;
    if (ps->n_rules == ps->cap_rules) {
        ps->cap_rules = ps->cap_rules ? ps->cap_rules * 2 : 32;
        ps->rules = sg_xrealloc(ps->rules, ps->cap_rules * sizeof *ps->rules);
    }
    grule *r = &ps->rules[ps->n_rules];
    memset(r, 0, sizeof *r);
    r->name = sg_xstrndup(name, n);
    r->line = ps->line;
    return (int)ps->n_rules++;
}

/* A fresh rule for a group or a repetition, named after the rule it serves. */
static int rule_new(parser *ps, const char *base) {
    char name[128];
    snprintf(name, sizeof name, "%.100s~%zu", base, ps->n_rules);   /* "~": no clash with a user's name */
    int r = rule_get(ps, name, strlen(name));
    ps->rules[r].defined = true;
    return r;
}

static galt *alt_add(parser *ps, int rule) {
    grule *r = &ps->rules[rule];
    if (r->n_alts == r->cap_alts) {
        r->cap_alts = r->cap_alts ? r->cap_alts * 2 : 4;
        r->alts = sg_xrealloc(r->alts, r->cap_alts * sizeof *r->alts);
    }
    galt *a = &r->alts[r->n_alts++];
    memset(a, 0, sizeof *a);
    return a;
}

static void alt_push(parser *ps, galt *a, gel e) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 8;
        a->e = sg_xrealloc(a->e, a->cap * sizeof *a->e);
    }
    a->e[a->n++] = e;
    if (++ps->n_el > MAX_ELEMENTS) perr(ps, "grammar too large (over %d elements)", MAX_ELEMENTS);
}

static gel set_new(parser *ps, const byteset *s) {
    if (ps->n_sets == ps->cap_sets) {
        ps->cap_sets = ps->cap_sets ? ps->cap_sets * 2 : 64;
        ps->sets = sg_xrealloc(ps->sets, ps->cap_sets * sizeof *ps->sets);
    }
    ps->sets[ps->n_sets] = *s;
    return (gel){EL_SET, (int32_t)ps->n_sets++};
}

static gel byte_el(parser *ps, unsigned b) {
    byteset s = {{0}};
    bs_add(&s, b);
    return set_new(ps, &s);
}

/* ---- UTF-8 */

static int utf8_encode(uint32_t c, uint8_t *o) {
    if (c < 0x80) { o[0] = (uint8_t)c; return 1; }
    if (c < 0x800) { o[0] = (uint8_t)(0xC0 | c >> 6); o[1] = (uint8_t)(0x80 | (c & 63)); return 2; }
    if (c < 0x10000) {
        o[0] = (uint8_t)(0xE0 | c >> 12); o[1] = (uint8_t)(0x80 | ((c >> 6) & 63));
        o[2] = (uint8_t)(0x80 | (c & 63)); return 3;
    }
    o[0] = (uint8_t)(0xF0 | c >> 18); o[1] = (uint8_t)(0x80 | ((c >> 12) & 63));
    o[2] = (uint8_t)(0x80 | ((c >> 6) & 63)); o[3] = (uint8_t)(0x80 | (c & 63));
    return 4;
}

/* Decodes one UTF-8 character of the grammar's text (invalid bytes stand for themselves). */
static uint32_t utf8_next(parser *ps) {
    const uint8_t *s = (const uint8_t *)ps->p;
    size_t left = (size_t)(ps->end - ps->p);
    uint32_t c = s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if ((size_t)n > left) n = 1;
    if (n > 1) {
        c &= 0x3F >> (n - 1);
        for (int i = 1; i < n; i++) {
            if ((s[i] & 0xC0) != 0x80) { n = 1; c = s[0]; break; }
            c = c << 6 | (s[i] & 63);
        }
    }
    ps->p += n;
    return c;
}

/* ---- character classes: code point ranges to byte-level rules */

typedef struct cprange { uint32_t lo, hi; } cprange;

static int cmp_range(const void *a, const void *b) {
    const cprange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Appends the UTF-8 byte-range sequences of [lo, hi] (same encoded length, no
 * surrogates) as alternatives of rule r: split until every byte position is a range. */
static void utf8_split(parser *ps, int r, uint32_t lo, uint32_t hi) {
    uint8_t a[4], b[4];
    int n = utf8_encode(lo, a);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if (lo & m) { utf8_split(ps, r, lo, lo | m); utf8_split(ps, r, (lo | m) + 1, hi); return; }
            if ((hi & m) != m) { utf8_split(ps, r, lo, (hi & ~m) - 1); utf8_split(ps, r, hi & ~m, hi); return; }
        }
    }
    utf8_encode(hi, b);
    galt *alt = alt_add(ps, r);
    for (int i = 0; i < n; i++) {
        byteset s = {{0}};
        for (unsigned x = a[i]; x <= b[i]; x++) bs_add(&s, x);
        alt_push(ps, alt, set_new(ps, &s));
    }
}

/* One element for a class: a byte set when it is ASCII only, else a rule. */
static gel class_el(parser *ps, cprange *rg, size_t n, bool negate, const char *rule_name) {
    qsort(rg, n, sizeof *rg, cmp_range);
    cprange *m = sg_xmalloc((n + 2) * sizeof *m);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (rg[i].hi > 0x10FFFF) rg[i].hi = 0x10FFFF;
        if (rg[i].lo > rg[i].hi) continue;
        if (k && rg[i].lo <= m[k - 1].hi + 1) { if (rg[i].hi > m[k - 1].hi) m[k - 1].hi = rg[i].hi; }
        else m[k++] = rg[i];
    }
    if (negate) {
        cprange *c = sg_xmalloc((k + 2) * sizeof *c);
        size_t kc = 0;
        uint32_t next = 0;
        for (size_t i = 0; i < k; i++) {
            if (m[i].lo > next) c[kc++] = (cprange){next, m[i].lo - 1};
            next = m[i].hi + 1;
        }
        if (next <= 0x10FFFF) c[kc++] = (cprange){next, 0x10FFFF};
        free(m);
        m = c;
        k = kc;
    }
    /* the key of the lowered class, so a class used many times is one rule */
    sg_buf key;
    sg_buf_init(&key);
    for (size_t i = 0; i < k; i++) sg_buf_printf(&key, "%x-%x,", m[i].lo, m[i].hi);
    const char *ks = key.data ? key.data : "";
    for (size_t i = 0; i < ps->n_cls; i++)
        if (!strcmp(ps->cls_key[i], ks)) { sg_buf_free(&key); free(m); return ps->cls_el[i]; }
    byteset ascii = {{0}};
    bool any_ascii = false, any_multi = false;
    for (size_t i = 0; i < k; i++) {
        for (uint32_t c = m[i].lo; c <= m[i].hi && c < 0x80; c++) { bs_add(&ascii, c); any_ascii = true; }
        if (m[i].hi >= 0x80) any_multi = true;
    }
    gel out;
    if (!any_multi) {
        out = set_new(ps, &ascii);
        if (!any_ascii) perr(ps, "empty character class in rule '%s'", rule_name);
    } else {
        int r = rule_new(ps, rule_name);
        if (any_ascii) alt_push(ps, alt_add(ps, r), set_new(ps, &ascii));
        static const uint32_t bounds[][2] = {{0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}};
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < 4; j++) {
                uint32_t lo = m[i].lo > bounds[j][0] ? m[i].lo : bounds[j][0];
                uint32_t hi = m[i].hi < bounds[j][1] ? m[i].hi : bounds[j][1];
                if (lo <= hi) utf8_split(ps, r, lo, hi);
            }
        out = (gel){EL_REF, r};
    }
    if (ps->n_cls == ps->cap_cls) {
        ps->cap_cls = ps->cap_cls ? ps->cap_cls * 2 : 16;
        ps->cls_key = sg_xrealloc(ps->cls_key, ps->cap_cls * sizeof *ps->cls_key);
        ps->cls_el = sg_xrealloc(ps->cls_el, ps->cap_cls * sizeof *ps->cls_el);
    }
    ps->cls_key[ps->n_cls] = sg_buf_steal(&key);
    if (!ps->cls_key[ps->n_cls]) ps->cls_key[ps->n_cls] = sg_xstrdup("");
    ps->cls_el[ps->n_cls++] = out;
    free(m);
    return out;
}

/* ---- lexing */

static void skip_space(parser *ps, bool newlines) {
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == '#') { while (ps->p < ps->end && *ps->p != '\n') ps->p++; }
        else if (c == ' ' || c == '\t' || c == '\r') ps->p++;
        else if (c == '\n' && newlines) { ps->p++; ps->line++; }
        else break;
    }
}

static bool is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a literal or class, escapes decoded. */
static int read_char(parser *ps, uint32_t *out) {
    if (ps->p >= ps->end) return perr(ps, "unexpected end of grammar");
    if (*ps->p != '\\') {
        if (*ps->p == '\n') return perr(ps, "newline inside a literal or class");
        *out = utf8_next(ps);
        return 0;
    }
    ps->p++;
    if (ps->p >= ps->end) return perr(ps, "unexpected end after '\\'");
    char c = *ps->p++;
    int nhex = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (nhex) {
        uint32_t v = 0;
        for (int i = 0; i < nhex; i++) {
            int h = ps->p < ps->end ? hexval(*ps->p) : -1;
            if (h < 0) return perr(ps, "bad \\%c escape: %d hex digits expected", c, nhex);
            v = v << 4 | (uint32_t)h;
            ps->p++;
        }
        if (v > 0x10FFFF) return perr(ps, "escape \\%c beyond U+10FFFF", c);
        *out = v;
        return 0;
    }
    switch (c) {
    case 'n': *out = '\n'; return 0;
    case 'r': *out = '\r'; return 0;
    case 't': *out = '\t'; return 0;
    case '0': *out = 0; return 0;
    case '\\': case '"': case '[': case ']': case '-': case '^': case '\'': case '/': case '.':
        *out = (uint32_t)c; return 0;
    default: return perr(ps, "unknown escape '\\%c'", c);
    }
}

static int parse_alternates(parser *ps, int rule, bool nested);

/* Wraps the item items[from..] of alternative a into repetition {mn, mx} (mx < 0: no
 * upper bound). */
static void repeat(parser *ps, int rule, int alt_idx, size_t from, long mn, long mx) {
    galt *a = &ps->rules[rule].alts[alt_idx];
    gel item;
    if (a->n - from == 1) item = a->e[from];
    else {
        int r = rule_new(ps, ps->rules[rule].name);
        a = &ps->rules[rule].alts[alt_idx];
        galt *na = alt_add(ps, r);
        a = &ps->rules[rule].alts[alt_idx];
        for (size_t i = from; i < a->n; i++) alt_push(ps, na, a->e[i]);
        item = (gel){EL_REF, r};
    }
    a->n = from;
    for (long i = 0; i < mn; i++) alt_push(ps, &ps->rules[rule].alts[alt_idx], item);
    if (mx < 0) {   /* star ::= item star | (empty) */
        int s = rule_new(ps, ps->rules[rule].name);
        galt *x = alt_add(ps, s);
        alt_push(ps, x, item);
        alt_push(ps, &ps->rules[s].alts[0], (gel){EL_REF, s});
        alt_add(ps, s);
        alt_push(ps, &ps->rules[rule].alts[alt_idx], (gel){EL_REF, s});
    } else if (mx > mn) {  /* opt_k ::= item opt_{k-1} | (empty) */
        int prev = -1;
        for (long k = 0; k < mx - mn; k++) {
            int o = rule_new(ps, ps->rules[rule].name);
            alt_push(ps, alt_add(ps, o), item);
            if (prev >= 0) alt_push(ps, &ps->rules[o].alts[0], (gel){EL_REF, prev});
            alt_add(ps, o);
            prev = o;
        }
        alt_push(ps, &ps->rules[rule].alts[alt_idx], (gel){EL_REF, prev});
    }
}

static int parse_number(parser *ps, long *v) {
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return perr(ps, "a number expected in {m,n}");
    long x = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        x = x * 10 + (*ps->p++ - '0');
        if (x > MAX_REPEAT) return perr(ps, "repetition count above %d", MAX_REPEAT);
    }
    *v = x;
    return 0;
}

static int parse_sequence(parser *ps, int rule, bool nested) {
    int alt_idx = (int)ps->rules[rule].n_alts;
    alt_add(ps, rule);
#define ALT (&ps->rules[rule].alts[alt_idx])
    size_t last = (size_t)-1;   /* where the last item starts */
    while (ps->p < ps->end && !ps->failed) {
        char c = *ps->p;
        if (c == '"') {
            ps->p++;
            last = ALT->n;
            while (ps->p < ps->end && *ps->p != '"' && !ps->failed) {
                uint32_t cp;
                if (read_char(ps, &cp)) return -1;
                uint8_t b[4];
                int n = utf8_encode(cp, b);
                for (int i = 0; i < n; i++) alt_push(ps, ALT, byte_el(ps, b[i]));
            }
            if (ps->p >= ps->end) return perr(ps, "unterminated literal");
            ps->p++;
            if (ALT->n - last >= 2) {   /* its bytes: each element is a one-byte set */
                uint32_t n = (uint32_t)(ALT->n - last);
                sg_buf_append(&ps->lits, &n, sizeof n);
                for (size_t i = last; i < ALT->n; i++) {
                    const byteset *bs = &ps->sets[ALT->e[i].v];
                    uint8_t b = 0;
                    while (!bs_has(bs, b)) b++;
                    sg_buf_append(&ps->lits, &b, 1);
                }
            }
            if (ALT->n == last) last = (size_t)-1;   /* "" is nothing to repeat */
        } else if (c == '[' || c == '.') {
            cprange rg[256];
            size_t n = 0;
            bool neg = false;
            if (c == '.') { ps->p++; rg[n++] = (cprange){0, 0x10FFFF}; }
            else {
                ps->p++;
                if (ps->p < ps->end && *ps->p == '^') { neg = true; ps->p++; }
                while (ps->p < ps->end && *ps->p != ']' && !ps->failed) {
                    uint32_t lo, hi;
                    if (read_char(ps, &lo)) return -1;
                    hi = lo;
                    if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
                        ps->p++;
                        if (read_char(ps, &hi)) return -1;
                        if (hi < lo) return perr(ps, "class range out of order");
                    }
                    if (n == sizeof rg / sizeof rg[0]) return perr(ps, "character class with over 256 ranges");
                    rg[n++] = (cprange){lo, hi};
                }
                if (ps->p >= ps->end) return perr(ps, "unterminated character class");
                ps->p++;
            }
            gel e = class_el(ps, rg, n, neg, ps->rules[rule].name);
            last = ALT->n;
            alt_push(ps, ALT, e);
        } else if (is_word(c)) {
            const char *s = ps->p;
            while (ps->p < ps->end && is_word(*ps->p)) ps->p++;
            int r = rule_get(ps, s, (size_t)(ps->p - s));
            last = ALT->n;
            alt_push(ps, ALT, (gel){EL_REF, r});
        } else if (c == '(') {
            ps->p++;
            skip_space(ps, true);
            int r = rule_new(ps, ps->rules[rule].name);
            if (parse_alternates(ps, r, true)) return -1;
            if (ps->p >= ps->end || *ps->p != ')') return perr(ps, "')' expected");
            ps->p++;
            last = ALT->n;
            alt_push(ps, ALT, (gel){EL_REF, r});
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == (size_t)-1) return perr(ps, "'%c' with nothing before it to repeat", c);
            long mn = 0, mx = -1;
            ps->p++;
            if (c == '+') mn = 1;
            else if (c == '?') mx = 1;
            else if (c == '{') {
                skip_space(ps, false);
                if (parse_number(ps, &mn)) return -1;
                skip_space(ps, false);
                mx = mn;
                if (ps->p < ps->end && *ps->p == ',') {
                    ps->p++;
                    skip_space(ps, false);
                    mx = -1;
                    if (ps->p < ps->end && *ps->p != '}' && parse_number(ps, &mx)) return -1;
                    skip_space(ps, false);
                }
                if (ps->p >= ps->end || *ps->p != '}') return perr(ps, "'}' expected");
                ps->p++;
                if (mx >= 0 && mx < mn) return perr(ps, "{%ld,%ld}: the maximum is below the minimum", mn, mx);
            }
            repeat(ps, rule, alt_idx, last, mn, mx);
            last = (size_t)-1;
        } else break;
        skip_space(ps, nested);
    }
#undef ALT
    return ps->failed ? -1 : 0;
}

static int parse_alternates(parser *ps, int rule, bool nested) {
    if (parse_sequence(ps, rule, nested)) return -1;
    while (ps->p < ps->end && *ps->p == '|') {
        ps->p++;
        skip_space(ps, true);
        if (parse_sequence(ps, rule, nested)) return -1;
    }
    return 0;
}

static int parse_rules(parser *ps) {
    skip_space(ps, true);
    while (ps->p < ps->end) {
        const char *s = ps->p;
        while (ps->p < ps->end && is_word(*ps->p)) ps->p++;
        if (ps->p == s) return perr(ps, "rule name expected, found '%c'", *s);
        int r = rule_get(ps, s, (size_t)(ps->p - s));
        if (ps->rules[r].defined) return perr(ps, "rule '%s' defined twice", ps->rules[r].name);
        ps->rules[r].defined = true;
        ps->rules[r].line = ps->line;
        skip_space(ps, false);
        if (ps->end - ps->p < 3 || memcmp(ps->p, "::=", 3)) return perr(ps, "'::=' expected after '%s'", ps->rules[r].name);
        ps->p += 3;
        skip_space(ps, true);
        if (parse_alternates(ps, r, false)) return -1;
        if (ps->p < ps->end && *ps->p != '\n')
            return perr(ps, "unexpected '%c' in rule '%s'", *ps->p, ps->rules[r].name);
        skip_space(ps, true);
    }
    return 0;
}

/* ---- checks: undefined rules, root, left recursion */

static int check_rules(parser *ps, int *root) {
    *root = -1;
    for (size_t i = 0; i < ps->n_rules; i++) {
        if (!ps->rules[i].defined) {
            ps->line = ps->rules[i].line;
            return perr(ps, "undefined rule '%s'", ps->rules[i].name);
        }
        if (!strcmp(ps->rules[i].name, "root")) *root = (int)i;
    }
    if (*root < 0) { ps->line = 1; return perr(ps, "no 'root' rule"); }
    size_t n = ps->n_rules;
    /* nullable: fixpoint */
    bool *nul = sg_xcalloc(n, 1);
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t i = 0; i < n; i++) {
            if (nul[i]) continue;
            for (size_t a = 0; a < ps->rules[i].n_alts && !nul[i]; a++) {
                galt *al = &ps->rules[i].alts[a];
                size_t k = 0;
                while (k < al->n && al->e[k].kind == EL_REF && nul[al->e[k].v]) k++;
                if (k == al->n) { nul[i] = changed = true; }
            }
        }
    }
    /* left edges: i -> j when j can be the first thing i matches; a cycle is left recursion */
    int *color = sg_xcalloc(n, sizeof *color);
    int *stack = sg_xmalloc(n * 2 * sizeof *stack);   /* (rule, edge cursor) pairs */
    int rc = 0;
    for (size_t s = 0; s < n && !rc; s++) {
        if (color[s]) continue;
        size_t sp = 0;
        stack[0] = (int)s; stack[1] = 0; sp = 1; color[s] = 1;
        while (sp && !rc) {
            int r = stack[2 * (sp - 1)], cur = stack[2 * (sp - 1) + 1]++;
            /* enumerate left edges as (alt, position) pairs flattened by cur */
            int idx = 0, next = -1;
            for (size_t a = 0; a < ps->rules[r].n_alts && next < 0; a++) {
                galt *al = &ps->rules[r].alts[a];
                for (size_t k = 0; k < al->n; k++) {
                    if (al->e[k].kind != EL_REF) break;
                    if (idx++ == cur) { next = al->e[k].v; break; }
                    if (!nul[al->e[k].v]) break;
                }
            }
            if (next < 0) { color[r] = 2; sp--; continue; }
            if (color[next] == 1) {
                ps->line = ps->rules[next].line;
                rc = perr(ps, "rule '%s' is left-recursive (or repeats something that can be empty)",
                          ps->rules[next].name);
            } else if (!color[next]) {
                color[next] = 1;
                stack[2 * sp] = next; stack[2 * sp + 1] = 0; sp++;
            }
        }
    }
    free(stack);
    free(color);
    free(nul);
    return rc;
}

static void parser_free(parser *ps) {
    for (size_t i = 0; i < ps->n_rules; i++) {
        for (size_t a = 0; a < ps->rules[i].n_alts; a++) free(ps->rules[i].alts[a].e);
        free(ps->rules[i].alts);
        free(ps->rules[i].name);
    }
    free(ps->rules);
    free(ps->sets);
    for (size_t i = 0; i < ps->n_cls; i++) free(ps->cls_key[i]);
    free(ps->cls_key);
    free(ps->cls_el);
    sg_buf_free(&ps->lits);
}

sg_grammar *grammar_parse_gbnf(const char *src, size_t len, sg_error *err) {
    parser ps = {.src = src, .p = src, .end = src + len, .line = 1, .err = err};
    int root = -1;
    if (parse_rules(&ps) || check_rules(&ps, &root)) { parser_free(&ps); return NULL; }
    sg_grammar *g = sg_xcalloc(1, sizeof *g);
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->pool_mu, NULL);
    size_t n_alt = 0, n_el = 0;
    for (size_t i = 0; i < ps.n_rules; i++) {
        n_alt += ps.rules[i].n_alts;
        for (size_t a = 0; a < ps.rules[i].n_alts; a++) n_el += ps.rules[i].alts[a].n + 1;
    }
    g->el = sg_xmalloc((n_el + 1) * sizeof *g->el);
    g->alt_start = sg_xmalloc((n_alt + 1) * sizeof *g->alt_start);
    g->rule_alt0 = sg_xmalloc((ps.n_rules + 1) * sizeof *g->rule_alt0);
    size_t ai = 0, ei = 0;
    for (size_t i = 0; i < ps.n_rules; i++) {
        g->rule_alt0[i] = (int32_t)ai;
        for (size_t a = 0; a < ps.rules[i].n_alts; a++) {
            g->alt_start[ai++] = (int32_t)ei;
            for (size_t k = 0; k < ps.rules[i].alts[a].n; k++) g->el[ei++] = ps.rules[i].alts[a].e[k];
            g->el[ei++] = (gel){EL_END, 0};
        }
    }
    g->rule_alt0[ps.n_rules] = (int32_t)ai;
    g->n_el = ei;
    g->n_rules = ps.n_rules;
    g->root = root;
    g->sets = ps.sets;
    g->n_sets = ps.n_sets;
    ps.sets = NULL;
    g->n_lits = ps.lits.len;
    g->lits = ps.lits.len ? sg_xmalloc(ps.lits.len) : NULL;
    if (ps.lits.len) memcpy(g->lits, ps.lits.data, ps.lits.len);
    parser_free(&ps);
    return g;
}

/* ------------------------------------------------------------------ vocabulary trie */

struct sg_grammar_vocab {
    size_t n_vocab;
    size_t n_nodes;
    uint8_t *byte;          /* (n_nodes) the edge into the node */
    uint16_t *depth;        /* (n_nodes) 1 for children of the root */
    int32_t *skip;          /* (n_nodes) index just past the node's subtree */
    int32_t *tok;           /* (n_nodes) a token ending here, or -1 */
    int32_t *dup;           /* (n_vocab) next token with the same bytes, or -1 */
    uint8_t *blob;          /* the bytes of every token (special ones: their text) */
    uint32_t *off;          /* (n_vocab + 1) token id's bytes: blob[off[id] .. off[id+1]) */
    uint8_t *in_trie;       /* (n_vocab) 0 for special and empty tokens: never allowed */
    uint64_t fingerprint;   /* of the tokenizer's pieces: the registry's key */
    uint64_t serial;        /* unique in the process: a pooled state's vocabulary is this one */
    int max_depth;
    int32_t *specials;      /* ids of the special tokens with text (outside the trie) */
    size_t n_specials;
};

size_t grammar_vocab_n(const sg_grammar_vocab *v) { return v->n_vocab; }

typedef struct tok_ent { const uint8_t *s; size_t n; int32_t id; } tok_ent;
static int cmp_tok(const void *a, const void *b) {
    const tok_ent *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

#define TRIE_MAX_DEPTH 1024   /* longer tokens are never allowed (none are near it) */

sg_grammar_vocab *grammar_vocab_new(const sg_tokenizer *t) {
    size_t nv = tok_n_vocab(t);
    tok_ent *e = sg_xmalloc((nv ? nv : 1) * sizeof *e);
    size_t n = 0, total = 0, all = 0;
    for (size_t i = 0; i < nv; i++) {
        size_t len;
        const char *p = tok_piece(t, (int32_t)i, &len);
        if (p) all += len;
        if (!p || !len || len > TRIE_MAX_DEPTH || tok_is_special(t, (int32_t)i)) continue;
        e[n++] = (tok_ent){(const uint8_t *)p, len, (int32_t)i};
        total += len;
    }
    static atomic_uint_fast64_t serials;
    sg_grammar_vocab *v = sg_xcalloc(1, sizeof *v);
    v->serial = atomic_fetch_add(&serials, 1) + 1;
    v->n_vocab = nv;
    v->blob = sg_xmalloc(all + 1);   /* special tokens' text too: lazy triggers read it */
    v->off = sg_xcalloc(nv + 1, sizeof *v->off);
    v->in_trie = sg_xcalloc(nv ? nv : 1, 1);
    {
        size_t at = 0, k = 0;
        for (size_t i = 0; i < nv; i++) {
            v->off[i] = (uint32_t)at;
            size_t len;
            const char *p = tok_piece(t, (int32_t)i, &len);
            if (p && len) {
                memcpy(v->blob + at, p, len);
                at += len;
            }
            if (k < n && e[k].id == (int32_t)i) {
                v->in_trie[i] = 1;
                k++;
            }
        }
        v->off[nv] = (uint32_t)at;
        for (size_t i = 0; i < n; i++) e[i].s = v->blob + v->off[e[i].id];
        for (size_t i = 0; i < nv; i++)
            if (!v->in_trie[i] && v->off[i + 1] > v->off[i]) v->n_specials++;
        v->specials = sg_xmalloc((v->n_specials ? v->n_specials : 1) * sizeof *v->specials);
        v->n_specials = 0;
        for (size_t i = 0; i < nv; i++)
            if (!v->in_trie[i] && v->off[i + 1] > v->off[i]) v->specials[v->n_specials++] = (int32_t)i;
    }
    qsort(e, n, sizeof *e, cmp_tok);
    v->byte = sg_xmalloc((total + 1) * sizeof *v->byte);
    v->depth = sg_xmalloc((total + 1) * sizeof *v->depth);
    v->skip = sg_xmalloc((total + 1) * sizeof *v->skip);
    v->tok = sg_xmalloc((total + 1) * sizeof *v->tok);
    v->dup = sg_xmalloc((nv ? nv : 1) * sizeof *v->dup);
    for (size_t i = 0; i < nv; i++) v->dup[i] = -1;
    int32_t open[TRIE_MAX_DEPTH + 1];   /* node index at each depth along the current path */
    size_t nn = 0;
    const tok_ent *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t lcp = 0;
        if (prev) while (lcp < prev->n && lcp < e[i].n && prev->s[lcp] == e[i].s[lcp]) lcp++;
        if (prev && lcp == e[i].n && prev->n == e[i].n) {   /* same bytes: chain it */
            int32_t at = open[e[i].n];
            int32_t id = v->tok[at];
            while (v->dup[id] >= 0) id = v->dup[id];
            v->dup[id] = e[i].id;
            continue;
        }
        /* close the nodes deeper than the common prefix */
        if (prev)
            for (size_t d = lcp + 1; d <= prev->n; d++) v->skip[open[d]] = (int32_t)nn;
        for (size_t d = lcp + 1; d <= e[i].n; d++) {
            v->byte[nn] = e[i].s[d - 1];
            v->depth[nn] = (uint16_t)d;
            v->tok[nn] = d == e[i].n ? e[i].id : -1;
            open[d] = (int32_t)nn++;
        }
        if ((int)e[i].n > v->max_depth) v->max_depth = (int)e[i].n;
        prev = &e[i];
    }
    if (prev)
        for (size_t d = 1; d <= prev->n; d++) v->skip[open[d]] = (int32_t)nn;
    v->n_nodes = nn;
    free(e);
    return v;
}

void grammar_vocab_free(sg_grammar_vocab *v) {
    if (!v) return;
    free(v->byte);
    free(v->depth);
    free(v->skip);
    free(v->tok);
    free(v->dup);
    free(v->blob);
    free(v->off);
    free(v->in_trie);
    free(v->specials);
    free(v);
}

/* The registry's key: the pieces and kinds of every token, so a tokenizer freed and
 * another made at the same address never gets a stale index. */
static uint64_t vocab_fingerprint(const sg_tokenizer *t) {
    uint64_t h = 1469598103934665603ull ^ tok_n_vocab(t);
    for (size_t i = 0; i < tok_n_vocab(t); i++) {
        size_t len = 0;
        const char *p = tok_piece(t, (int32_t)i, &len);
        for (size_t k = 0; p && k < len; k++) h = (h ^ (uint8_t)p[k]) * 1099511628211ull;
        h = (h ^ (len | (tok_is_special(t, (int32_t)i) ? 1u << 31 : 0))) * 1099511628211ull;
    }
    return h;
}

static pthread_mutex_t vocab_mu = PTHREAD_MUTEX_INITIALIZER;
static sg_grammar_vocab *vocab_reg[16];

const sg_grammar_vocab *grammar_vocab_get(const sg_tokenizer *t) {
    uint64_t fp = vocab_fingerprint(t);
    pthread_mutex_lock(&vocab_mu);
    sg_grammar_vocab *v = NULL;
    size_t i = 0;
    for (; i < sizeof vocab_reg / sizeof vocab_reg[0] && vocab_reg[i]; i++)
        if (vocab_reg[i]->fingerprint == fp && vocab_reg[i]->n_vocab == tok_n_vocab(t)) { v = vocab_reg[i]; break; }
    if (!v && i < sizeof vocab_reg / sizeof vocab_reg[0]) {
        v = vocab_reg[i] = grammar_vocab_new(t);
        v->fingerprint = fp;
    }
    pthread_mutex_unlock(&vocab_mu);
    /* a process with more distinct vocabularies than the registry holds (never, in
     * practice) gets NULL: the caller reports that constrained decoding is unavailable */
    return v;
}

/* ------------------------------------------------------------------ recogniser */

#define DEAD 0                 /* the empty set of stacks */
#define UNKNOWN -1
#define MAX_MASKS 256          /* cached masks per state object (16 KB each at 128k) */

typedef struct snode { int32_t pos, parent; } snode;   /* stack frame; node 0: empty stack */

typedef struct dstate {
    int32_t first, n;          /* its stacks: ids[first .. first+n) */
    int32_t *trans;            /* (256) next state per byte, UNKNOWN until computed */
    int32_t mask;              /* index into masks, or -1 */
    bool accepting, live;
} dstate;

typedef struct htab { int32_t *slot; size_t cap; } htab;   /* open addressing, -1 empty */

/* A lazy state's free-text part (see "lazy grammars" below). */
#define LAZY_MARKER_MAX 64

typedef struct lzpos { bool quiet; size_t n_tail; uint8_t tail[LAZY_MARKER_MAX]; } lzpos;

typedef struct lazy {
    uint8_t *marker[3];           /* trigger, quiet open, quiet close (NULL: none) */
    size_t n_marker[3], longest;
    bool triggered;
    lzpos pos;
    int32_t *always; size_t n_always;   /* special tokens and tokens containing the trigger */
    int32_t *forbid; size_t n_forbid, cap_forbid;
    uint8_t *w; size_t cap_w;     /* scratch: tail + a token's bytes */
} lazy;

struct sg_grammar_state {
    sg_grammar *g;
    const sg_grammar_vocab *v;
    uint64_t v_serial;         /* v's serial when this state was made (the pool's check) */
    int32_t start;             /* the state before any byte */
    snode *nodes; size_t n_nodes, cap_nodes; htab node_h;
    dstate *st; size_t n_st, cap_st; htab st_h;
    int32_t *ids; size_t n_ids, cap_ids;       /* stacks of all states */
    int32_t *scratch; size_t n_scr, cap_scr;
    uint32_t *masks; size_t n_masks;
    int32_t cur;
    size_t n_cached;
    lazy *lz;                  /* grammar_state_new_lazy: free text until the trigger; else NULL */
    int32_t *markers;          /* special tokens that may stand for their text (see marker_of) */
    size_t n_markers;
    int32_t path[TRIE_MAX_DEPTH + 1];
};

static uint64_t mix(uint64_t h) {
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull; h ^= h >> 33;
    return h;
}

static void htab_grow(htab *h, size_t need, uint64_t (*hash)(void *, int32_t), void *ctx) {
    if (need * 2 < h->cap) return;
    size_t cap = h->cap ? h->cap * 2 : 1024;
    while (need * 2 >= cap) cap *= 2;
    int32_t *s = sg_xmalloc(cap * sizeof *s);
    memset(s, 0xff, cap * sizeof *s);
    for (size_t i = 0; i < h->cap; i++) {
        if (h->slot[i] < 0) continue;
        size_t j = hash(ctx, h->slot[i]) & (cap - 1);
        while (s[j] >= 0) j = (j + 1) & (cap - 1);
        s[j] = h->slot[i];
    }
    free(h->slot);
    h->slot = s;
    h->cap = cap;
}

static uint64_t node_hash_v(int32_t pos, int32_t parent) { return mix((uint64_t)(uint32_t)pos << 32 | (uint32_t)parent); }
static uint64_t node_hash(void *ctx, int32_t id) {
    sg_grammar_state *s = ctx;
    return node_hash_v(s->nodes[id].pos, s->nodes[id].parent);
}

static int32_t node_intern(sg_grammar_state *s, int32_t pos, int32_t parent) {
    htab_grow(&s->node_h, s->n_nodes + 1, node_hash, s);
    size_t j = node_hash_v(pos, parent) & (s->node_h.cap - 1);
    for (; s->node_h.slot[j] >= 0; j = (j + 1) & (s->node_h.cap - 1)) {
        snode *n = &s->nodes[s->node_h.slot[j]];
        if (n->pos == pos && n->parent == parent) return s->node_h.slot[j];
    }
    if (s->n_nodes == s->cap_nodes) {
        s->cap_nodes *= 2;
        s->nodes = sg_xrealloc(s->nodes, s->cap_nodes * sizeof *s->nodes);
    }
    s->nodes[s->n_nodes] = (snode){pos, parent};
    s->node_h.slot[j] = (int32_t)s->n_nodes;
    return (int32_t)s->n_nodes++;
}

static void scr_push(sg_grammar_state *s, int32_t id) {
    if (s->n_scr == s->cap_scr) {
        s->cap_scr = s->cap_scr ? s->cap_scr * 2 : 256;
        s->scratch = sg_xrealloc(s->scratch, s->cap_scr * sizeof *s->scratch);
    }
    s->scratch[s->n_scr++] = id;
}

/* Adds to scratch every stack reached by continuing at pos with the frames of parent
 * below it, so that each stack's top is a byte set (or the stack is empty). */
static void expand(sg_grammar_state *s, int32_t pos, int32_t parent) {
    const sg_grammar *g = s->g;
    for (;;) {
        gel e = g->el[pos];
        if (e.kind == EL_SET) { scr_push(s, node_intern(s, pos, parent)); return; }
        if (e.kind == EL_END) {
            if (parent == 0) { scr_push(s, 0); return; }
            pos = s->nodes[parent].pos;
            parent = s->nodes[parent].parent;
            continue;
        }
        /* a reference: its return frame, unless the rule it returns to ends there */
        int32_t ret = g->el[pos + 1].kind == EL_END ? parent : node_intern(s, pos + 1, parent);
        for (int32_t a = g->rule_alt0[e.v]; a < g->rule_alt0[e.v + 1]; a++) expand(s, g->alt_start[a], ret);
        return;
    }
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t set_hash_v(const int32_t *ids, int32_t n) {
    uint64_t h = (uint64_t)n * 0x9e3779b97f4a7c15ull;
    for (int32_t i = 0; i < n; i++) h = mix(h ^ (uint32_t)ids[i]) + (uint64_t)i;
    return h;
}
static uint64_t st_hash(void *ctx, int32_t id) {
    sg_grammar_state *s = ctx;
    return set_hash_v(s->ids + s->st[id].first, s->st[id].n);
}

/* The state for the stacks in scratch (sorted and deduplicated here). */
static int32_t state_intern(sg_grammar_state *s) {
    if (s->n_scr > 1) {
        qsort(s->scratch, s->n_scr, sizeof *s->scratch, cmp_i32);
        size_t k = 1;
        for (size_t i = 1; i < s->n_scr; i++)
            if (s->scratch[i] != s->scratch[k - 1]) s->scratch[k++] = s->scratch[i];
        s->n_scr = k;
    }
    if (s->n_scr == 0) return DEAD;
    int32_t n = (int32_t)s->n_scr;
    htab_grow(&s->st_h, s->n_st + 1, st_hash, s);
    size_t j = set_hash_v(s->scratch, n) & (s->st_h.cap - 1);
    for (; s->st_h.slot[j] >= 0; j = (j + 1) & (s->st_h.cap - 1)) {
        dstate *d = &s->st[s->st_h.slot[j]];
        if (d->n == n && !memcmp(s->ids + d->first, s->scratch, (size_t)n * sizeof(int32_t))) return s->st_h.slot[j];
    }
    if (s->n_ids + s->n_scr > s->cap_ids) {
        while (s->n_ids + s->n_scr > s->cap_ids) s->cap_ids = s->cap_ids ? s->cap_ids * 2 : 1024;
        s->ids = sg_xrealloc(s->ids, s->cap_ids * sizeof *s->ids);
    }
    memcpy(s->ids + s->n_ids, s->scratch, s->n_scr * sizeof(int32_t));
    if (s->n_st == s->cap_st) {
        s->cap_st *= 2;
        s->st = sg_xrealloc(s->st, s->cap_st * sizeof *s->st);
    }
    dstate *d = &s->st[s->n_st];
    *d = (dstate){.first = (int32_t)s->n_ids, .n = n, .trans = NULL, .mask = -1};
    d->accepting = s->scratch[0] == 0;          /* node 0 sorts first */
    d->live = !(n == 1 && d->accepting);
    s->n_ids += s->n_scr;
    s->st_h.slot[j] = (int32_t)s->n_st;
    return (int32_t)s->n_st++;
}

static int32_t step_slow(sg_grammar_state *s, int32_t from, uint8_t b) {
    if (!s->st[from].trans) {
        s->st[from].trans = sg_xmalloc(256 * sizeof(int32_t));
        memset(s->st[from].trans, 0xff, 256 * sizeof(int32_t));
    }
    s->n_scr = 0;
    int32_t first = s->st[from].first, n = s->st[from].n;
    for (int32_t i = 0; i < n; i++) {
        int32_t id = s->ids[first + i];
        if (id == 0) continue;
        int32_t pos = s->nodes[id].pos;
        if (bs_has(&s->g->sets[s->g->el[pos].v], b)) expand(s, pos + 1, s->nodes[id].parent);
    }
    int32_t to = state_intern(s);
    s->st[from].trans[b] = to;   /* s->st may have moved: index again */
    return to;
}

static inline int32_t step(sg_grammar_state *s, int32_t from, uint8_t b) {
    const int32_t *t = s->st[from].trans;
    if (t && t[b] != UNKNOWN) return t[b];
    return step_slow(s, from, b);
}

static void lazy_free(lazy *lz);
static int lazy_advance(sg_grammar_state *s, const uint8_t *b, size_t n);
static size_t lazy_mask(sg_grammar_state *s, uint32_t *bits);

/* The pool. A recogniser state builds its automaton (states, transitions, masks of the
 * vocabulary) lazily, and most of the cost of a constrained step is a state's first mask.
 * Requests under one grammar (a schema, a tool list) visit the same states again, so a
 * finished state object goes back to its grammar, automaton intact, and the next
 * grammar_state_new under that grammar and vocabulary starts from it, at its start state.
 * Bounded: STATE_POOL objects a grammar, each at most POOL_MAX_STATES automaton states
 * (and MAX_MASKS masks); lazy states (free text first) are not pooled. */
#define POOL_MAX_STATES 4096

static sg_grammar_state *pool_take(sg_grammar *g, const sg_grammar_vocab *v) {
    sg_grammar_state *s = NULL;
    pthread_mutex_lock(&g->pool_mu);
    for (size_t i = g->n_pool; i-- > 0;)
        if (g->pool[i]->v == v && g->pool[i]->v_serial == (v ? v->serial : 0)) {
            s = g->pool[i];
            g->pool[i] = g->pool[--g->n_pool];
            break;
        }
    pthread_mutex_unlock(&g->pool_mu);
    if (!s) return NULL;
    s->g = grammar_ref(g);
    s->cur = s->start;
    s->n_cached = 0;
    s->n_scr = 0;
    return s;
}

/* Keeps s in its grammar's pool; false when it is not kept (the caller frees it). */
static bool pool_put(sg_grammar_state *s) {
    if (s->lz || s->n_st > POOL_MAX_STATES) return false;
    sg_grammar *g = s->g;
    bool kept = false;
    pthread_mutex_lock(&g->pool_mu);
    if (g->n_pool < STATE_POOL) { g->pool[g->n_pool++] = s; kept = true; }
    pthread_mutex_unlock(&g->pool_mu);
    if (kept) grammar_unref(g);   /* the pool does not hold its grammar: it is the grammar's */
    return kept;
}

/* Marker tokens. Special tokens never stand for ordinary text, but a model like SmolLM3
 * writes some markers as one special token (`<tool_call>`, `</tool_call>`): where a
 * literal of the grammar contains a special token's text, that token may stand for the
 * text, wherever the grammar accepts its bytes. Found once per state object. */
static void find_markers(sg_grammar_state *s) {
    const sg_grammar *g = s->g;
    const sg_grammar_vocab *v = s->v;
    for (size_t k = 0; k < v->n_specials; k++) {
        int32_t id = v->specials[k];
        const uint8_t *t = v->blob + v->off[id];
        size_t n = v->off[id + 1] - v->off[id];
        for (size_t at = 0; at + 4 <= g->n_lits;) {
            uint32_t len;
            memcpy(&len, g->lits + at, 4);
            const uint8_t *lit = g->lits + at + 4;
            at += 4 + len;
            if (n <= len && memmem(lit, len, t, n)) {
                s->markers = sg_xrealloc(s->markers, (s->n_markers + 1) * sizeof *s->markers);
                s->markers[s->n_markers++] = id;
                break;
            }
        }
    }
}

static bool is_marker(const sg_grammar_state *s, int32_t id) {
    for (size_t i = 0; i < s->n_markers; i++)
        if (s->markers[i] == id) return true;
    return false;
}

bool grammar_token_is_text(const sg_grammar_state *s, int32_t id) {
    const sg_grammar_vocab *v = s->v;
    if (!v || id < 0 || (size_t)id >= v->n_vocab || v->in_trie[id]) return false;
    if (is_marker(s, id)) return true;
    if (!s->lz) return false;
    for (int i = 0; i < 3; i++)   /* the trigger and the quiet markers, as one token */
        if (s->lz->marker[i] && v->off[id + 1] - v->off[id] == s->lz->n_marker[i] &&
            !memcmp(v->blob + v->off[id], s->lz->marker[i], s->lz->n_marker[i]))
            return true;
    return false;
}

sg_grammar_state *grammar_state_new(sg_grammar *g, const sg_grammar_vocab *v) {
    sg_grammar_state *s = pool_take(g, v);
    if (s) return s;
    s = sg_xcalloc(1, sizeof *s);
    s->g = grammar_ref(g);
    s->v = v;
    s->v_serial = v ? v->serial : 0;   /* NULL: bytes only (grammar_state_advance_bytes) */
    s->cap_nodes = 1024;
    s->nodes = sg_xmalloc(s->cap_nodes * sizeof *s->nodes);
    s->nodes[0] = (snode){-1, -1};
    s->n_nodes = 1;
    s->cap_st = 256;
    s->st = sg_xmalloc(s->cap_st * sizeof *s->st);
    s->st[0] = (dstate){.mask = -1};   /* DEAD */
    s->n_st = 1;
    s->n_scr = 0;
    for (int32_t a = g->rule_alt0[g->root]; a < g->rule_alt0[g->root + 1]; a++) expand(s, g->alt_start[a], 0);
    s->start = s->cur = state_intern(s);
    if (v) find_markers(s);
    return s;
}

/* Frees a state's memory; its grammar reference is the caller's business. */
static void state_destroy(sg_grammar_state *s) {
    for (size_t i = 0; i < s->n_st; i++) free(s->st[i].trans);
    free(s->st);
    free(s->st_h.slot);
    free(s->nodes);
    free(s->node_h.slot);
    free(s->ids);
    free(s->scratch);
    free(s->masks);
    free(s->markers);
    lazy_free(s->lz);
    free(s);
}

void grammar_state_free(sg_grammar_state *s) {
    if (!s || pool_put(s)) return;
    sg_grammar *g = s->g;
    state_destroy(s);
    grammar_unref(g);
}

bool grammar_state_is_accepting(const sg_grammar_state *s) {
    return (s->lz && !s->lz->triggered) || s->st[s->cur].accepting;
}
bool grammar_state_is_complete(const sg_grammar_state *s) {
    return !(s->lz && !s->lz->triggered) && !s->st[s->cur].live;
}
bool grammar_state_is_triggered(const sg_grammar_state *s) { return !s->lz || s->lz->triggered; }
size_t grammar_state_n_dfa(const sg_grammar_state *s) { return s->n_st - 1; }
size_t grammar_state_n_cached(const sg_grammar_state *s) { return s->n_cached; }

/* The DFA state after bytes from state c (DEAD when they leave the grammar). */
static int32_t run(sg_grammar_state *s, int32_t c, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n && c != DEAD; i++) c = step(s, c, p[i]);
    return c;
}

int grammar_state_advance_bytes(sg_grammar_state *s, const char *p, size_t n) {
    if (s->lz && !s->lz->triggered) return lazy_advance(s, (const uint8_t *)p, n);
    int32_t c = run(s, s->cur, (const uint8_t *)p, n);
    if (c == DEAD) return -1;
    s->cur = c;
    return 0;
}

int grammar_state_advance(sg_grammar_state *s, int32_t id) {
    const sg_grammar_vocab *v = s->v;
    if (id < 0 || (size_t)id >= v->n_vocab) return -1;
    if (s->lz && !s->lz->triggered)   /* free text: any token, special ones included */
        return lazy_advance(s, v->blob + v->off[id], v->off[id + 1] - v->off[id]);
    if (!v->in_trie[id] && !is_marker(s, id)) return -1;   /* special tokens: markers only */
    return grammar_state_advance_bytes(s, (const char *)v->blob + v->off[id], v->off[id + 1] - v->off[id]);
}

int grammar_state_allowed_prefix(sg_grammar_state *s, const int32_t *ids, int n) {
    const sg_grammar_vocab *v = s->v;
    if (s->lz && !s->lz->triggered) return n;
    int32_t c = s->cur;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= v->n_vocab || (!v->in_trie[id] && !is_marker(s, id))) return i;
        c = run(s, c, v->blob + v->off[id], v->off[id + 1] - v->off[id]);
        if (c == DEAD) return i;
    }
    return n;
}

size_t grammar_state_mask(sg_grammar_state *s, uint32_t *bits) {
    const sg_grammar_vocab *v = s->v;
    size_t words = (v->n_vocab + 31) / 32;
    if (s->lz && !s->lz->triggered) return lazy_mask(s, bits);
    dstate *d = &s->st[s->cur];
    if (d->mask >= 0) {
        s->n_cached++;
        memcpy(bits, s->masks + (size_t)d->mask * words, words * sizeof *bits);
        size_t c = 0;
        for (size_t i = 0; i < words; i++) c += (size_t)__builtin_popcount(bits[i]);
        return c;
    }
    memset(bits, 0, words * sizeof *bits);
    size_t count = 0;
    int32_t *path = s->path;
    path[0] = s->cur;
    const size_t nn = v->n_nodes;
    for (size_t i = 0; i < nn;) {
        int32_t from = path[v->depth[i] - 1];
        const int32_t *t = s->st[from].trans;
        int32_t to = t && t[v->byte[i]] != UNKNOWN ? t[v->byte[i]] : step_slow(s, from, v->byte[i]);
        if (to == DEAD) { i = (size_t)v->skip[i]; continue; }
        path[v->depth[i]] = to;
        for (int32_t id = v->tok[i]; id >= 0; id = v->dup[id]) {
            bits[id >> 5] |= 1u << (id & 31);
            count++;
        }
        i++;
    }
    for (size_t k = 0; k < s->n_markers; k++) {
        int32_t id = s->markers[k];
        if (run(s, s->cur, v->blob + v->off[id], v->off[id + 1] - v->off[id]) != DEAD) {
            bits[id >> 5] |= 1u << (id & 31);
            count++;
        }
    }
    d = &s->st[s->cur];
    if (s->n_masks < MAX_MASKS) {
        s->masks = sg_xrealloc(s->masks, (s->n_masks + 1) * words * sizeof *s->masks);
        memcpy(s->masks + s->n_masks * words, bits, words * sizeof *bits);
        d->mask = (int32_t)s->n_masks++;
    }
    return count;
}

/* ------------------------------------------------------------------ lazy grammars */

/* Free text until the trigger (grammar.h). The output's last bytes since the last marker
 * are kept (fewer than the longest marker), so a marker split across tokens is seen when
 * its last byte comes. Before each step, the tokens that would complete the trigger with
 * bytes the grammar rejects right after it are forbidden: a token can complete it only
 * if its text contains the whole trigger, or starts with the trigger's rest after a
 * prefix the tail ends with (a subtree of the vocabulary trie), or is special (their
 * text is not in the trie); each such candidate is checked exactly. */
static void lazy_free(lazy *lz) {
    if (!lz) return;
    for (int i = 0; i < 3; i++) free(lz->marker[i]);
    free(lz->always);
    free(lz->forbid);
    free(lz->w);
    free(lz);
}

/* Runs n more bytes of output through the markers, updating *pos. Returns the offset in
 * lz->w (the old tail then b, *wn bytes) where the trigger begins, or -1 when the text
 * stays free. A trigger and a quiet opening at the same place: the trigger. */
static long lazy_scan(lazy *lz, lzpos *pos, const uint8_t *b, size_t n, size_t *wn) {
    size_t need = pos->n_tail + n;
    if (need > lz->cap_w) {
        lz->cap_w = need * 2;
        lz->w = sg_xrealloc(lz->w, lz->cap_w);
    }
    uint8_t *w = lz->w;
    memcpy(w, pos->tail, pos->n_tail);
    if (n) memcpy(w + pos->n_tail, b, n);
    *wn = need;
    size_t at = 0;
    for (;;) {
        if (pos->quiet) {
            const uint8_t *c = memmem(w + at, need - at, lz->marker[2], lz->n_marker[2]);
            if (!c) break;
            at = (size_t)(c - w) + lz->n_marker[2];
            pos->quiet = false;
            continue;
        }
        const uint8_t *t = memmem(w + at, need - at, lz->marker[0], lz->n_marker[0]);
        const uint8_t *o = lz->marker[1] ? memmem(w + at, need - at, lz->marker[1], lz->n_marker[1]) : NULL;
        if (t && (!o || t <= o)) return t - w;
        if (!o) break;
        at = (size_t)(o - w) + lz->n_marker[1];
        pos->quiet = lz->marker[2] != NULL;
    }
    size_t keep = need - at < lz->longest - 1 ? need - at : lz->longest - 1;
    memmove(pos->tail, w + need - keep, keep);
    pos->n_tail = keep;
    return -1;
}

static int lazy_advance(sg_grammar_state *s, const uint8_t *b, size_t n) {
    lazy *lz = s->lz;
    lzpos p = lz->pos;
    size_t wn;
    long t = lazy_scan(lz, &p, b, n, &wn);
    if (t < 0) { lz->pos = p; return 0; }
    int32_t c = run(s, s->cur, lz->w + t, wn - (size_t)t);
    if (c == DEAD) return -1;
    s->cur = c;
    lz->triggered = true;
    return 0;
}

/* Would token id, next, complete the trigger into bytes the grammar rejects? */
static bool lazy_rejects(sg_grammar_state *s, int32_t id) {
    const sg_grammar_vocab *v = s->v;
    lzpos p = s->lz->pos;
    size_t wn;
    long t = lazy_scan(s->lz, &p, v->blob + v->off[id], v->off[id + 1] - v->off[id], &wn);
    return t >= 0 && run(s, s->cur, s->lz->w + t, wn - (size_t)t) == DEAD;
}

static void forbid_push(lazy *lz, int32_t id) {
    for (size_t i = 0; i < lz->n_forbid; i++)
        if (lz->forbid[i] == id) return;
    if (lz->n_forbid == lz->cap_forbid) {
        lz->cap_forbid = lz->cap_forbid ? lz->cap_forbid * 2 : 16;
        lz->forbid = sg_xrealloc(lz->forbid, lz->cap_forbid * sizeof *lz->forbid);
    }
    lz->forbid[lz->n_forbid++] = id;
}

/* The trie node whose path spells q, or -1. */
static long trie_find(const sg_grammar_vocab *v, const uint8_t *q, size_t n) {
    size_t i = 0;
    for (size_t d = 1; d <= n; d++) {
        while (i < v->n_nodes && v->depth[i] == d && v->byte[i] != q[d - 1]) i = (size_t)v->skip[i];
        if (i >= v->n_nodes || v->depth[i] != d) return -1;
        if (d < n) i++;
    }
    return n ? (long)i : -1;
}

static size_t lazy_mask(sg_grammar_state *s, uint32_t *bits) {
    const sg_grammar_vocab *v = s->v;
    lazy *lz = s->lz;
    size_t words = (v->n_vocab + 31) / 32;
    memset(bits, 0xff, words * sizeof *bits);
    lz->n_forbid = 0;
    for (size_t i = 0; i < lz->n_always; i++)
        if (lazy_rejects(s, lz->always[i])) forbid_push(lz, lz->always[i]);
    if (!lz->pos.quiet) {
        const uint8_t *tr = lz->marker[0];
        size_t L = lz->n_marker[0], nt = lz->pos.n_tail;
        for (size_t k = 1; k < L && k <= nt; k++) {
            if (memcmp(lz->pos.tail + nt - k, tr, k) != 0) continue;
            long node = trie_find(v, tr + k, L - k);
            if (node < 0) continue;
            for (size_t j = (size_t)node; j < (size_t)v->skip[node]; j++)
                for (int32_t id = v->tok[j]; id >= 0; id = v->dup[id])
                    if (lazy_rejects(s, id)) forbid_push(lz, id);
        }
    }
    for (size_t i = 0; i < lz->n_forbid; i++) bits[lz->forbid[i] >> 5] &= ~(1u << (lz->forbid[i] & 31));
    return v->n_vocab - lz->n_forbid;
}

sg_grammar_state *grammar_state_new_lazy(sg_grammar *g, const sg_grammar_vocab *v, const grammar_lazy *opt) {
    const char *m[3] = {opt->trigger, opt->quiet_open, opt->quiet_close};
    if (!m[0] || !*m[0] || !v || (!m[1]) != (!m[2])) return NULL;
    for (int i = 0; i < 3; i++)
        if (m[i] && (!*m[i] || strlen(m[i]) >= LAZY_MARKER_MAX)) return NULL;
    sg_grammar_state *s = grammar_state_new(g, v);
    lazy *lz = s->lz = sg_xcalloc(1, sizeof *lz);
    for (int i = 0; i < 3; i++) {
        if (!m[i]) continue;
        lz->n_marker[i] = strlen(m[i]);
        lz->marker[i] = (uint8_t *)sg_xstrdup(m[i]);
        if (lz->n_marker[i] > lz->longest) lz->longest = lz->n_marker[i];
    }
    lz->pos.quiet = opt->in_quiet && m[1];
    /* special tokens (outside the trie) and tokens whose text holds the whole trigger */
    size_t cap = 0;
    for (size_t id = 0; id < v->n_vocab; id++) {
        const uint8_t *p = v->blob + v->off[id];
        size_t n = v->off[id + 1] - v->off[id];
        if (!n || (v->in_trie[id] && !memmem(p, n, lz->marker[0], lz->n_marker[0]))) continue;
        if (lz->n_always == cap) {
            cap = cap ? cap * 2 : 64;
            lz->always = sg_xrealloc(lz->always, cap * sizeof *lz->always);
        }
        lz->always[lz->n_always++] = (int32_t)id;
    }
    return s;
}

/* ------------------------------------------------------------------ cache */

#define CACHE_SLOTS 64

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct centry { uint64_t hash; grammar_kind kind; char *text; size_t len; sg_grammar *g; uint64_t used; } cache[CACHE_SLOTS];
static uint64_t cache_clock;

static uint64_t text_hash(grammar_kind kind, const char *t, size_t n) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)t[i]) * 1099511628211ull;
    return h;
}

static sg_grammar *compile_kind(grammar_kind kind, const char *text, size_t len, sg_error *err) {
    if (kind == GRAMMAR_GBNF) return grammar_parse_gbnf(text, len, err);
    if (kind == GRAMMAR_JSON_OBJECT) {
        const char *g = json_schema_object_gbnf();
        return grammar_parse_gbnf(g, strlen(g), err);
    }
    sg_buf b;
    sg_buf_init(&b);
    sg_grammar *g = NULL;
    if (!json_schema_to_gbnf(text, len, &b, err)) {
        g = grammar_parse_gbnf(b.data, b.len, err);
        if (!g) sg_fail_wrap(err, "JSON Schema: ");
    }
    sg_buf_free(&b);
    return g;
}

sg_grammar *grammar_compile_cached(grammar_kind kind, const char *text, size_t len, sg_error *err) {
    if (kind == GRAMMAR_JSON_OBJECT) { text = ""; len = 0; }
    uint64_t h = text_hash(kind, text, len);
    pthread_mutex_lock(&cache_mu);
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        struct centry *e = &cache[i];
        if (e->g && e->hash == h && e->kind == kind && e->len == len && !memcmp(e->text, text, len)) {
            e->used = ++cache_clock;
            sg_grammar *g = grammar_ref(e->g);
            pthread_mutex_unlock(&cache_mu);
            return g;
        }
    }
    pthread_mutex_unlock(&cache_mu);
    /* compiled outside the lock: two threads may both compile a new text, one copy stays */
    sg_grammar *g = compile_kind(kind, text, len, err);
    if (!g) return NULL;
    pthread_mutex_lock(&cache_mu);
    size_t victim = 0;
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        if (!cache[i].g) { victim = i; break; }
        if (cache[i].used < cache[victim].used) victim = i;
    }
    struct centry *e = &cache[victim];
    sg_grammar *old = e->g;
    char *old_text = e->text;
    e->g = grammar_ref(g);
    e->hash = h;
    e->kind = kind;
    e->text = sg_xmalloc(len + 1);
    memcpy(e->text, text, len);
    e->len = len;
    e->used = ++cache_clock;
    pthread_mutex_unlock(&cache_mu);
    grammar_unref(old);
    free(old_text);
    return g;
}
