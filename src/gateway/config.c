/* config.c: the gateway's configuration (see config.h for the contract, docs/config.md for
 * the keys).
 *
 * Three stages. (1) libyaml's parser events become a small tree of nodes (scalar, list,
 * mapping, null), each with its line; anchors are shared subtrees, `<<` merge keys are
 * expanded, and a document that aliases itself into millions of nodes is refused.
 * (2) The tree is validated section by section into the typed structs, with a path
 * ("routes[0].targets[1].model") carried down for the messages; ${ENV} is expanded when a
 * scalar is read, so an unset variable is reported at its key. (3) Cross references
 * (route targets, key routes, model facts) are resolved into pointers.
 *
 * Memory: the tree lives in one arena, freed (and wiped: it holds expanded secrets) when
 * loading ends; the config lives in another, wiped and freed when the last reference goes.
 * The SHA-256 of gateway keys is OpenSSL's libcrypto (EVP_Digest), compared with
 * CRYPTO_memcmp. */
#include "gateway/config.h"
#include "gateway/provider.h"
#include "gateway/redact.h"
#include "engine/speculate.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <yaml.h>

#define MAX_FILE_BYTES   (4u << 20)   /* a config is kilobytes; this bounds a mistake */
#define MAX_DEPTH        64
#define MAX_NODES        1000000      /* after alias expansion (billion laughs) */
#define MAX_MS           86400000     /* a day */
#define MAX_COUNT        1000000000000LL
#define MAX_USD_MICRO    (1000000000LL * 1000000LL)   /* a billion dollars */

/* ------------------------------------------------------------------------------------ */
/* arena: bump allocation, zeroed, freed (and wiped) in one go */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

typedef struct arena {
    arena_block *head;
} arena;

static void *arena_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!n) n = 16;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        arena_block *b = sg_xmalloc(sizeof *b + cap);
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

static char *arena_strndup(arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}
static char *arena_strdup(arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

static char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *arena_printf(arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

static void arena_free(arena *a) {
    for (arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        explicit_bzero(b->data, b->used);   /* secrets lived here */
        free(b);
    }
    a->head = NULL;
}

/* ------------------------------------------------------------------------------------ */
/* document tree */

typedef enum { N_NULL, N_SCALAR, N_SEQ, N_MAP } node_kind;

typedef struct node node;
typedef struct pair {
    node *k, *v;
    bool merged;         /* came in through `<<` (an explicit key wins over it) */
} pair;

struct node {
    node_kind kind;
    int line;            /* 1-based */
    bool quoted;         /* scalar: written quoted or as a block */
    char *text;          /* scalar as written (before ${} expansion) */
    node **items;        /* N_SEQ */
    pair *pairs;         /* N_MAP */
    size_t n;
    uint64_t weight;     /* nodes below, aliases expanded (saturating) */
};

typedef struct tframe {
    node *n;
    node **items;        /* seq items, or map keys and values alternating */
    size_t len, cap;
    char *anchor;
} tframe;

typedef struct tanchor {
    char *name;
    node *n;
} tanchor;

typedef struct tbuild {
    arena *a;
    const char *file;
    sg_error *err;
    tframe st[MAX_DEPTH];
    size_t depth;
    tanchor *anchors;
    size_t n_anchors, cap_anchors;
    node *root;
    int docs;
} tbuild;

static const char *kind_name(const node *n) {
    switch (n->kind) {
    case N_NULL:   return "null";
    case N_SCALAR: return "a value";
    case N_SEQ:    return "a list";
    case N_MAP:    return "a mapping";
    }
    return "?";
}

static int tb_fail(tbuild *t, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int tb_fail(tbuild *t, int line, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sg_fail(t->err, "%s:%d: %s", t->file, line, msg);
}

static void tb_anchor(tbuild *t, const char *name, node *n) {
    if (!name) return;
    if (t->n_anchors == t->cap_anchors) {
        t->cap_anchors = t->cap_anchors ? 2 * t->cap_anchors : 16;
        t->anchors = sg_xrealloc(t->anchors, t->cap_anchors * sizeof *t->anchors);
    }
    t->anchors[t->n_anchors++] = (tanchor){arena_strdup(t->a, name), n};
}

static node *tb_alias(tbuild *t, const char *name) {
    for (size_t i = t->n_anchors; i-- > 0;)   /* the latest definition wins */
        if (!strcmp(t->anchors[i].name, name)) return t->anchors[i].n;
    return NULL;
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a || a + b > MAX_NODES * 4ULL ? MAX_NODES * 4ULL : a + b; }

/* Adds a finished node to the open container (or makes it the root). */
static int tb_add(tbuild *t, node *n) {
    if (!t->depth) {
        t->root = n;
        return 0;
    }
    tframe *f = &t->st[t->depth - 1];
    if (f->n->kind == N_MAP && f->len % 2 == 0 && n->kind != N_SCALAR)
        return tb_fail(t, n->line, "a mapping key must be a plain string, not %s", kind_name(n));
    if (f->len == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 8;
        f->items = sg_xrealloc(f->items, f->cap * sizeof *f->items);
    }
    f->items[f->len++] = n;
    return 0;
}

static bool is_merge_key(const node *k) { return k->kind == N_SCALAR && !k->quoted && !strcmp(k->text, "<<"); }

static bool pairs_have(const pair *p, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(p[i].k->text, key)) return true;
    return false;
}

/* Closes a mapping: pairs from the alternating items, then `<<` sources appended
 * (explicit keys first, so the first match of a lookup is the one that wins). */
static int tb_close_map(tbuild *t, tframe *f) {
    node *m = f->n;
    size_t n_pairs = f->len / 2, n_total = 0;
    for (size_t i = 0; i < n_pairs; i++) {
        node *k = f->items[2 * i], *v = f->items[2 * i + 1];
        if (!is_merge_key(k)) { n_total++; continue; }
        if (v->kind == N_MAP) { n_total += v->n; continue; }
        if (v->kind != N_SEQ) return tb_fail(t, k->line, "`<<` takes a mapping or a list of mappings");
        for (size_t j = 0; j < v->n; j++) {
            if (v->items[j]->kind != N_MAP)
                return tb_fail(t, v->items[j]->line, "`<<` takes a mapping or a list of mappings");
            n_total += v->items[j]->n;
        }
    }
    m->pairs = arena_alloc(t->a, (n_total ? n_total : 1) * sizeof *m->pairs);
    size_t np = 0;
    uint64_t w = 1;
    for (size_t i = 0; i < n_pairs; i++) {
        node *k = f->items[2 * i], *v = f->items[2 * i + 1];
        if (is_merge_key(k)) continue;
        m->pairs[np++] = (pair){k, v, false};
        w = sat_add(w, k->weight + v->weight);
    }
    for (size_t i = 0; i < n_pairs; i++) {
        node *k = f->items[2 * i], *v = f->items[2 * i + 1];
        if (!is_merge_key(k)) continue;
        size_t n_src = v->kind == N_MAP ? 1 : v->n;
        for (size_t s = 0; s < n_src; s++) {
            const node *src = v->kind == N_MAP ? v : v->items[s];
            for (size_t j = 0; j < src->n; j++) {
                if (pairs_have(m->pairs, np, src->pairs[j].k->text)) continue;
                m->pairs[np++] = (pair){src->pairs[j].k, src->pairs[j].v, true};
                w = sat_add(w, src->pairs[j].k->weight + src->pairs[j].v->weight);
            }
        }
    }
    m->n = np;
    m->weight = w;
    return 0;
}

static node *tb_node(tbuild *t, node_kind kind, const yaml_mark_t *mark) {
    node *n = arena_alloc(t->a, sizeof *n);
    n->kind = kind;
    n->line = (int)mark->line + 1;
    n->weight = 1;
    return n;
}

static bool null_text(const char *s, size_t n) {
    return n == 0 || (n == 1 && s[0] == '~') ||
           (n == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

static int tb_event(tbuild *t, yaml_event_t *ev) {
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++t->docs > 1)
            return tb_fail(t, (int)ev->start_mark.line + 1, "only one YAML document is allowed (found a second `---`)");
        return 0;
    case YAML_SCALAR_EVENT: {
        const char *s = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        const char *tag = (const char *)ev->data.scalar.tag;
        bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        bool str_tag = tag && !strcmp(tag, YAML_STR_TAG);
        node *n = tb_node(t, plain && !str_tag && null_text(s, len) ? N_NULL : N_SCALAR, &ev->start_mark);
        if (memchr(s, 0, len)) return tb_fail(t, n->line, "a value contains a NUL character");
        n->quoted = !plain || str_tag;
        n->text = arena_strndup(t->a, s, len);
        tb_anchor(t, (const char *)ev->data.scalar.anchor, n);
        return tb_add(t, n);
    }
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        node *n = tb_alias(t, name);
        if (!n)   /* also catches an alias into its own, still open, anchor */
            return tb_fail(t, (int)ev->start_mark.line + 1, "unknown anchor *%.64s", name);
        return tb_add(t, n);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        if (t->depth == MAX_DEPTH)
            return tb_fail(t, (int)ev->start_mark.line + 1, "nested more than %d levels deep", MAX_DEPTH);
        bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
        const char *anchor = (const char *)(seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor);
        tframe *f = &t->st[t->depth++];
        memset(f, 0, sizeof *f);
        f->n = tb_node(t, seq ? N_SEQ : N_MAP, &ev->start_mark);
        f->anchor = anchor ? arena_strdup(t->a, anchor) : NULL;
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        tframe *f = &t->st[t->depth - 1];
        node *n = f->n;
        int rc = 0;
        if (n->kind == N_SEQ) {
            n->items = arena_alloc(t->a, (f->len ? f->len : 1) * sizeof *n->items);
            if (f->len) memcpy(n->items, f->items, f->len * sizeof *n->items);
            n->n = f->len;
            for (size_t i = 0; i < f->len; i++) n->weight = sat_add(n->weight, f->items[i]->weight);
        } else {
            rc = tb_close_map(t, f);
        }
        free(f->items);
        f->items = NULL;
        t->depth--;
        if (rc) return rc;
        if (n->weight > MAX_NODES)
            return tb_fail(t, n->line, "the document expands to more than %d nodes through aliases", MAX_NODES);
        tb_anchor(t, f->anchor, n);   /* only now: an alias inside it cannot reach it */
        return tb_add(t, n);
    }
    default:
        return 0;
    }
}

/* Parses data into a tree in arena a. An empty document gives a NULL root. */
static int tree_parse(arena *a, const char *file, const char *data, size_t len, node **root, sg_error *err) {
    tbuild t;
    memset(&t, 0, sizeof t);
    t.a = a;
    t.file = file;
    t.err = err;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return sg_fail(err, "%s: out of memory", file);
    yaml_parser_set_input_string(&p, (const unsigned char *)data, len);
    int rc = 0;
    for (bool done = false; !done && !rc;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            if (p.context)
                rc = sg_fail(err, "%s:%zu: invalid YAML: %s %s (line %zu)", file, p.problem_mark.line + 1,
                             p.problem ? p.problem : "error", p.context, p.context_mark.line + 1);
            else
                rc = sg_fail(err, "%s:%zu: invalid YAML: %s", file, p.problem_mark.line + 1,
                             p.problem ? p.problem : "error");
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        rc = tb_event(&t, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    for (size_t i = 0; i < t.depth; i++) free(t.st[i].items);
    free(t.anchors);
    *root = rc ? NULL : t.root;
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* validation context, key paths, messages */

typedef struct vctx {
    const char *file;        /* for messages; NULL for the embedded defaults */
    const char *dir;         /* relative paths resolve against it: "conf/" ("" = working folder) */
    const config_env *env;
    sg_error *err;
    arena *ta;               /* tree arena: temporaries (expanded values) */
    arena *ca;               /* the config's arena */
    gw_config *cfg;
} vctx;

typedef struct vpath {
    const struct vpath *up;
    const char *key;         /* mapping key, or NULL for a list index */
    long idx;
} vpath;

static const char *env_get(const config_env *e, const char *name) {
    if (e && e->get) return e->get(e->ctx, name);
    return getenv(name);
}
/* An empty variable counts as unset, as the SDKs treat OPENAI_API_KEY="". */
static const char *env_nonempty(const config_env *e, const char *name) {
    const char *s = env_get(e, name);
    return s && *s ? s : NULL;
}

static bool ident_key(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-') return false;
    return true;
}

static void path_put(sg_buf *b, const vpath *p) {
    if (!p) return;
    path_put(b, p->up);
    if (!p->key) {
        sg_buf_printf(b, "[%ld]", p->idx);
    } else if (ident_key(p->key)) {
        if (b->len) sg_buf_putc(b, '.');
        sg_buf_puts(b, p->key);
    } else {
        sg_buf_putc(b, '[');
        sg_buf_json_str(b, p->key, strlen(p->key));
        sg_buf_putc(b, ']');
    }
}

static int verr(vctx *v, int line, const vpath *p, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int verr(vctx *v, int line, const vpath *p, const char *fmt, ...) {
    sg_buf b;
    sg_buf_init(&b);
    path_put(&b, p);
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *path = b.len ? b.data : "", *sep = b.len ? ": " : "";
    if (v->file && line > 0) sg_fail(v->err, "%s:%d: %s%s%s", v->file, line, path, sep, msg);
    else if (v->file) sg_fail(v->err, "%s: %s%s%s", v->file, path, sep, msg);
    else sg_fail(v->err, "%s%s%s", path, sep, msg);
    sg_buf_free(&b);
    return -1;
}

/* A value for a message: quoted and cut short, or a note when it came from the
 * environment (which may be a secret: it is never shown). */
static const char *vshow(char *buf, size_t cap, const char *s, bool tainted) {
    if (tainted) {
        snprintf(buf, cap, "a value from the environment (not shown)");
        return buf;
    }
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; s[i] && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 40) { memcpy(buf + o, "...", 3); o += 3; break; }
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else buf[o++] = (char)c;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

/* Optimal string alignment distance (edits + transpositions), for "did you mean". */
static size_t edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 99;
    size_t d[64][64];
    for (size_t i = 0; i <= n; i++) d[i][0] = i;
    for (size_t j = 0; j <= m; j++) d[0][j] = j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t x = d[i - 1][j] + 1, y = d[i][j - 1] + 1, z = d[i - 1][j - 1] + cost;
            size_t best = x < y ? x : y;
            best = best < z ? best : z;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

/* The closest candidate within a couple of edits, or NULL. */
static const char *closest(const char *s, const char *const *cands, size_t n) {
    size_t limit = strlen(s) <= 4 ? 1 : 2, best = limit + 1;
    const char *pick = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(s, cands[i]);
        if (d < best) { best = d; pick = cands[i]; }
    }
    return pick;
}

static size_t count_list(const char *const *l) {
    size_t n = 0;
    while (l[n]) n++;
    return n;
}

static bool in_list(const char *s, const char *const *l) {
    for (; *l; l++)
        if (!strcmp(s, *l)) return true;
    return false;
}

/* ", did you mean "x"?" / " (known: a, b, c)" for a message. */
static void suggest(char *buf, size_t cap, const char *s, const char *const *cands, size_t n, const char *known_word) {
    const char *c = closest(s, cands, n);
    size_t o = 0;
    buf[0] = 0;
    if (c) o += (size_t)snprintf(buf, cap, " (did you mean \"%s\"?", c);
    else o += (size_t)snprintf(buf, cap, " (%s: ", known_word);
    if (c) {
        snprintf(buf + o, cap - o, ")");
        return;
    }
    for (size_t i = 0; i < n && o + 4 < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", cands[i]);
    if (!n && o < cap) o += (size_t)snprintf(buf + o, cap - o, "none");
    if (o + 2 < cap) snprintf(buf + o, cap - o, ")");
}

/* ------------------------------------------------------------------------------------ */
/* reading values */

static const node *mget(const node *map, const char *key) {
    if (!map || map->kind != N_MAP) return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (!strcmp(map->pairs[i].k->text, key)) return map->pairs[i].v;
    return NULL;
}
static bool present(const node *n) { return n && n->kind != N_NULL; }

/* n must be a mapping (absent or null: fine, nothing in it). Duplicate keys (written
 * ones, not merged ones) and, with a known list, unknown keys are errors. */
static int map_check(vctx *v, const node *n, const vpath *p, const char *const *known) {
    if (!present(n)) return 0;
    if (n->kind != N_MAP) return verr(v, n->line, p, "expected a mapping, got %s", kind_name(n));
    for (size_t j = 0; j < n->n; j++) {
        const pair *b = &n->pairs[j];
        if (b->merged) continue;
        for (size_t i = 0; i < j; i++)
            if (!n->pairs[i].merged && !strcmp(n->pairs[i].k->text, b->k->text)) {
                vpath kp = {p, b->k->text, -1};
                return verr(v, b->k->line, &kp, "duplicate key (first at line %d)", n->pairs[i].k->line);
            }
    }
    if (!known) return 0;
    for (size_t i = 0; i < n->n; i++) {
        const node *k = n->pairs[i].k;
        if (in_list(k->text, known)) continue;
        if (!p && !strncmp(k->text, "x-", 2)) continue;   /* top-level x-*: room for anchors */
        char sug[300];
        suggest(sug, sizeof sug, k->text, known, count_list(known), "expected one of");
        vpath kp = {p, k->text, -1};
        return verr(v, k->line, &kp, "unknown key%s", sug);
    }
    return 0;
}

static int seq_check(vctx *v, const node *n, const vpath *p) {
    if (!present(n) || n->kind == N_SEQ) return 0;
    return verr(v, n->line, p, "expected a list, got %s", kind_name(n));
}

static bool var_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static bool var_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* The scalar's value with ${NAME} / ${NAME:-default} expanded ($$ is a literal $), in the
 * tree arena (wiped later). *tainted: some of it came from the environment. */
static int sval(vctx *v, const node *n, const vpath *p, const char **out, bool *tainted) {
    const char *s = n->text;
    *tainted = false;
    if (!strchr(s, '$')) {
        *out = s;
        return 0;
    }
    sg_buf b;
    sg_buf_init(&b);
    int rc = 0;
    for (size_t i = 0; s[i] && !rc; i++) {
        if (s[i] != '$') { sg_buf_putc(&b, s[i]); continue; }
        if (s[i + 1] == '$') { sg_buf_putc(&b, '$'); i++; continue; }
        if (s[i + 1] != '{') { sg_buf_putc(&b, '$'); continue; }
        const char *name = s + i + 2, *end = strchr(name, '}');
        if (!end) { rc = verr(v, n->line, p, "unterminated ${ (write $$ for a literal $)"); break; }
        size_t nl = 0;
        if (var_start(name[0]))
            while (var_char(name[nl])) nl++;
        const char *def = NULL;
        if (nl && name + nl + 2 <= end && name[nl] == ':' && name[nl + 1] == '-') def = name + nl + 2;
        if (!nl || nl > 128 || (!def && name + nl != end)) {
            rc = verr(v, n->line, p, "bad ${...}: expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _");
            break;
        }
        char var[129];
        memcpy(var, name, nl);
        var[nl] = 0;
        const char *val = env_get(v->env, var);
        if (def && (!val || !*val)) {
            sg_buf_append(&b, def, (size_t)(end - def));
        } else if (!val) {
            rc = verr(v, n->line, p, "environment variable %s is not set (use ${%s:-default} for a default)", var, var);
        } else {
            sg_buf_puts(&b, val);
            *tainted = true;
        }
        i = (size_t)(end - s);
    }
    if (!rc) *out = arena_strndup(v->ta, b.data ? b.data : "", b.len);
    if (b.data) explicit_bzero(b.data, b.cap);
    sg_buf_free(&b);
    return rc;
}

static int want_scalar(vctx *v, const node *n, const vpath *p, const char *what) {
    if (n->kind == N_SCALAR) return 0;
    return verr(v, n->line, p, "expected %s, got %s", what, kind_name(n));
}

/* Integers: digits, '_' allowed between them, optional sign. */
static int parse_i64(const char *s, int64_t *out) {
    bool neg = false;
    if (*s == '+' || *s == '-') neg = *s++ == '-';
    if (!isdigit((unsigned char)*s)) return -1;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s == '_' && isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[-1])) continue;
        if (!isdigit((unsigned char)*s)) return -1;
        if (x > (uint64_t)INT64_MAX / 10) return -2;
        x = x * 10 + (uint64_t)(*s - '0');
        if (x > (uint64_t)INT64_MAX) return -2;
    }
    *out = neg ? -(int64_t)x : (int64_t)x;
    return 0;
}

static int range_err(vctx *v, const node *n, const vpath *p, int64_t lo, int64_t hi, const char *shown) {
    if (lo == 0 && hi >= MAX_COUNT) return verr(v, n->line, p, "must not be negative, got %s", shown);
    if (hi >= MAX_COUNT) return verr(v, n->line, p, "must be at least %lld, got %s", (long long)lo, shown);
    return verr(v, n->line, p, "must be between %lld and %lld, got %s", (long long)lo, (long long)hi, shown);
}

static int read_i64(vctx *v, const node *n, const vpath *p, int64_t lo, int64_t hi, int64_t *out) {
    if (want_scalar(v, n, p, "an integer")) return -1;
    const char *s;
    bool t;
    if (sval(v, n, p, &s, &t)) return -1;
    char shown[128];
    int64_t x = 0;
    int rc = parse_i64(s, &x);
    if (rc == -1) return verr(v, n->line, p, "expected an integer, got %s", vshow(shown, sizeof shown, s, t));
    if (rc == -2 || x < lo || x > hi) return range_err(v, n, p, lo, hi, vshow(shown, sizeof shown, s, t));
    *out = x;
    return 0;
}

/* Optional integer key: absent or null leaves *out (the default) alone. */
static int get_i64(vctx *v, const node *map, const vpath *up, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const node *n = mget(map, key);
    if (!present(n)) return 0;
    vpath p = {up, key, -1};
    return read_i64(v, n, &p, lo, hi, out);
}
static int get_int(vctx *v, const node *map, const vpath *up, const char *key, int lo, int hi, int *out) {
    int64_t x = *out;
    if (get_i64(v, map, up, key, lo, hi, &x)) return -1;
    *out = (int)x;
    return 0;
}
static int get_u32(vctx *v, const node *map, const vpath *up, const char *key, uint32_t lo, uint32_t hi, uint32_t *out) {
    int64_t x = *out;
    if (get_i64(v, map, up, key, lo, hi, &x)) return -1;
    *out = (uint32_t)x;
    return 0;
}
static int get_ms(vctx *v, const node *map, const vpath *up, const char *key, uint32_t *out) {
    return get_u32(v, map, up, key, 1, MAX_MS, out);
}
static int get_size(vctx *v, const node *map, const vpath *up, const char *key, size_t lo, size_t hi, size_t *out) {
    int64_t x = (int64_t)*out;
    if (get_i64(v, map, up, key, (int64_t)lo, (int64_t)hi, &x)) return -1;
    *out = (size_t)x;
    return 0;
}

static int get_bool(vctx *v, const node *map, const vpath *up, const char *key, bool *out) {
    const node *n = mget(map, key);
    if (!present(n)) return 0;
    vpath p = {up, key, -1};
    if (want_scalar(v, n, &p, "true or false")) return -1;
    const char *s;
    bool t;
    if (sval(v, n, &p, &s, &t)) return -1;
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) { *out = true; return 0; }
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) { *out = false; return 0; }
    char shown[128];
    return verr(v, n->line, &p, "expected true or false, got %s", vshow(shown, sizeof shown, s, t));
}

static int get_enum(vctx *v, const node *map, const vpath *up, const char *key, const char *const *names, int *out) {
    const node *n = mget(map, key);
    if (!present(n)) return 0;
    vpath p = {up, key, -1};
    if (want_scalar(v, n, &p, "a name")) return -1;
    const char *s;
    bool t;
    if (sval(v, n, &p, &s, &t)) return -1;
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) { *out = i; return 0; }
    char shown[128], sug[300];
    suggest(sug, sizeof sug, s, names, count_list(names), "one of");
    return verr(v, n->line, &p, "unknown value %s%s", vshow(shown, sizeof shown, s, t), t ? "" : sug);
}

/* A non-negative decimal with at most 6 decimal places, scaled by 10^6 exactly:
 * "0.075" -> 75000. No floating point anywhere. */
static int parse_micro(const char *s, int64_t max, int64_t *out) {
    int64_t whole = 0, frac = 0;
    int nd = 0, nf = 0;
    for (; isdigit((unsigned char)*s) || (*s == '_' && nd); s++) {
        if (*s == '_') continue;
        if (whole > max / 10) return -2;
        whole = whole * 10 + (*s - '0');
        nd++;
    }
    if (*s == '.') {
        for (s++; isdigit((unsigned char)*s); s++) {
            if (++nf > 6) return -3;
            frac = frac * 10 + (*s - '0');
        }
    }
    if (*s || (!nd && !nf)) return -1;
    for (int i = nf; i < 6; i++) frac *= 10;
    if (whole > max / 1000000) return -2;
    int64_t x = whole * 1000000 + frac;
    if (x > max) return -2;
    *out = x;
    return 0;
}

static int get_micro(vctx *v, const node *map, const vpath *up, const char *key, int64_t *out) {
    const node *n = mget(map, key);
    if (!present(n)) return 0;
    vpath p = {up, key, -1};
    if (want_scalar(v, n, &p, "an amount in USD")) return -1;
    const char *s;
    bool t;
    if (sval(v, n, &p, &s, &t)) return -1;
    char shown[128];
    vshow(shown, sizeof shown, s, t);
    if (s[0] == '-') return verr(v, n->line, &p, "must not be negative, got %s", shown);
    switch (parse_micro(s, MAX_USD_MICRO, out)) {
    case 0: return 0;
    case -2: return verr(v, n->line, &p, "too large, got %s", shown);
    case -3: return verr(v, n->line, &p, "at most 6 decimal places (a micro-dollar), got %s", shown);
    default: return verr(v, n->line, &p, "expected an amount in USD such as 0.075, got %s", shown);
    }
}

enum { S_SECRET = 1, S_EMPTY_OK = 2, S_PATH = 4 };

static char *resolve_path(vctx *v, const char *s) {
    if (s[0] == '/') return arena_strdup(v->ca, s);
    if (s[0] == '~' && (s[1] == '/' || !s[1])) {
        const char *home = env_nonempty(v->env, "HOME");
        if (home) return arena_printf(v->ca, "%s%s", home, s + 1);
    }
    if (v->dir && *v->dir) return arena_printf(v->ca, "%s%s", v->dir, s);
    return arena_strdup(v->ca, s);
}

/* A string into the config arena. Control characters are refused everywhere (a CR/LF
 * in a header or URL would be an injection). */
static int read_str(vctx *v, const node *n, const vpath *p, int flags, char **out, bool *tainted) {
    if (want_scalar(v, n, p, "a string")) return -1;
    const char *s;
    bool t;
    if (sval(v, n, p, &s, &t)) return -1;
    if (tainted) *tainted = t;
    if (!*s && !(flags & S_EMPTY_OK)) return verr(v, n->line, p, "must not be empty%s", t ? " (it comes from the environment)" : "");
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) return verr(v, n->line, p, "contains a control character");
    *out = flags & S_PATH ? resolve_path(v, s) : arena_strdup(v->ca, s);
    return 0;
}
static int get_str(vctx *v, const node *map, const vpath *up, const char *key, int flags, char **out) {
    const node *n = mget(map, key);
    if (!present(n)) return 0;
    vpath p = {up, key, -1};
    return read_str(v, n, &p, flags, out, NULL);
}

/* "scheme://host..." with one of the schemes; NULL when fine, else why. */
static const char *url_problem(const char *s, const char *const *schemes) {
    const char *colon = strstr(s, "://");
    if (!colon) return "expected a URL such as https://host/path";
    bool ok = false;
    for (; *schemes; schemes++)
        if (strlen(*schemes) == (size_t)(colon - s) && !strncasecmp(s, *schemes, (size_t)(colon - s))) ok = true;
    if (!ok) return "unsupported URL scheme";
    const char *host = colon + 3;
    if (!*host || *host == '/' || *host == '?' || *host == '#') return "the URL has no host";
    for (const char *c = s; *c; c++)
        if (*c == ' ') return "the URL contains a space";
    return NULL;
}

static const char *const k_http_schemes[] = {"http", "https", NULL};

static int get_url(vctx *v, const node *map, const vpath *up, const char *key, char **out) {
    const node *n = mget(map, key);
    if (!present(n)) return 0;
    vpath p = {up, key, -1};
    char *s = NULL;
    if (read_str(v, n, &p, S_SECRET, &s, NULL)) return -1;
    const char *why = url_problem(s, k_http_schemes);
    if (why) return verr(v, n->line, &p, "%s (http:// or https://)", why);
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '/') s[--len] = 0;   /* joined with "/chat/..." later */
    *out = s;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* sections shared by several places */

static const char *const k_limits[] = {"rpm", "tpm", "concurrency", NULL};
static const char *const k_budget[] = {"daily_usd", "monthly_usd", "total_usd", "alert_percent", NULL};
static const char *const k_timeouts[] = {"connect_ms", "first_token_ms", "idle_ms", "total_ms", NULL};
static const char *const k_retries[] = {"max", "base_ms", "max_ms", NULL};

static void limits_none(gw_limits *l) { l->rpm = l->tpm = l->concurrency = -1; }
static void budget_none(gw_budget *b) {
    b->daily_usd = b->monthly_usd = b->total_usd = -1;
    b->alert_percent = 80;
}

static int read_limits(vctx *v, const node *n, const vpath *p, gw_limits *out) {
    limits_none(out);
    if (map_check(v, n, p, k_limits)) return -1;
    return get_i64(v, n, p, "rpm", 1, MAX_COUNT, &out->rpm) ||
           get_i64(v, n, p, "tpm", 1, MAX_COUNT, &out->tpm) ||
           get_i64(v, n, p, "concurrency", 1, MAX_COUNT, &out->concurrency) ? -1 : 0;
}
static int get_limits(vctx *v, const node *map, const vpath *up, const char *key, gw_limits *out) {
    vpath p = {up, key, -1};
    return read_limits(v, mget(map, key), &p, out);
}

static int get_budget(vctx *v, const node *map, const vpath *up, const char *key, gw_budget *out) {
    budget_none(out);
    const node *n = mget(map, key);
    vpath p = {up, key, -1};
    if (map_check(v, n, &p, k_budget)) return -1;
    return get_micro(v, n, &p, "daily_usd", &out->daily_usd) ||
           get_micro(v, n, &p, "monthly_usd", &out->monthly_usd) ||
           get_micro(v, n, &p, "total_usd", &out->total_usd) ||
           get_int(v, n, &p, "alert_percent", 1, 100, &out->alert_percent) ? -1 : 0;
}

/* The bounds keys, in the top-level upstream: section and in each remote provider; a key
 * not given leaves *out as it was (the defaults, or 0: "inherit" for providers). */
static const char *const k_upstream[] = {"max_response_bytes", "max_sse_line_bytes", "max_header_bytes", NULL};

static int read_bounds(vctx *v, const node *n, const vpath *p, gw_bounds *out) {
    return get_size(v, n, p, "max_response_bytes", 1024, (size_t)1 << 34, &out->max_response_bytes) ||
           get_size(v, n, p, "max_sse_line_bytes", 1024, (size_t)1 << 30, &out->max_sse_line_bytes) ||
           get_size(v, n, p, "max_header_bytes", 1024, (size_t)1 << 24, &out->max_header_bytes) ? -1 : 0;
}

static void timeouts_default(gw_timeouts *t) {
    t->connect_ms = 10000;
    t->first_token_ms = 300000;
    t->idle_ms = 120000;
    t->total_ms = 600000;
}
static void retries_default(gw_retries *r) {
    r->max = 2;
    r->base_ms = 500;
    r->max_ms = 8000;
}

static int get_timeouts(vctx *v, const node *map, const vpath *up, gw_timeouts *out) {
    const node *n = mget(map, "timeouts");
    vpath p = {up, "timeouts", -1};
    if (map_check(v, n, &p, k_timeouts)) return -1;
    return get_ms(v, n, &p, "connect_ms", &out->connect_ms) ||
           get_ms(v, n, &p, "first_token_ms", &out->first_token_ms) ||
           get_ms(v, n, &p, "idle_ms", &out->idle_ms) ||
           get_ms(v, n, &p, "total_ms", &out->total_ms) ? -1 : 0;
}

static int get_retries(vctx *v, const node *map, const vpath *up, gw_retries *out) {
    const node *n = mget(map, "retries");
    vpath p = {up, "retries", -1};
    if (map_check(v, n, &p, k_retries)) return -1;
    if (get_int(v, n, &p, "max", 0, 20, &out->max) || get_ms(v, n, &p, "base_ms", &out->base_ms) ||
        get_ms(v, n, &p, "max_ms", &out->max_ms))
        return -1;
    if (out->max_ms < out->base_ms) {
        const node *m = mget(n, "max_ms");
        vpath mp = {&p, m ? "max_ms" : "base_ms", -1};
        return verr(v, m ? m->line : mget(n, "base_ms")->line, &mp, "max_ms (%u) is below base_ms (%u)",
                    out->max_ms, out->base_ms);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* providers */

/* The provider types come from the provider table (provider.h): each type's name is also
 * a provider that exists without being declared, with the environment the official SDKs
 * read, its default base URL and version, and the keys its section may have. */
typedef gw_provider_entry known_provider;

#define N_KNOWN ((size_t)GW_PROVIDER_N_TYPES)
#define k_known(i) (*gw_provider_entries[i])

const char *config_provider_type_name(gw_provider_type t) {
    const gw_provider_entry *e = gw_provider_entry_of(t);
    return e ? e->type_name : "?";
}
int config_provider_type_from_name(const char *s) {
    const gw_provider_entry *e = gw_provider_entry_named(s);
    return e ? (int)e->type : -1;
}

static const known_provider *known_by_name(const char *name) { return gw_provider_entry_named(name); }

/* Names that become part of model ids: no '/', no spaces. */
static bool valid_name(const char *s, size_t max) {
    size_t n = strlen(s);
    if (!n || n > max || !isalnum((unsigned char)s[0])) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-') return false;
    return true;
}

static void provider_defaults(gw_provider *p, const char *name, gw_provider_type type, arena *a) {
    p->name = arena_strdup(a, name);
    p->type = type;
    timeouts_default(&p->timeouts);
    retries_default(&p->retries);
    limits_none(&p->limits);
    p->bounds = (gw_bounds){0, 0, 0};   /* 0: the upstream: section's (inherit_bounds) */
    p->local.queue = 16;
    p->local.parallel = 4;
    p->local.draft = SPEC_DEFAULT_DRAFT;
    const known_provider *k = gw_provider_entry_of(type);
    p->entry = k;
    if (k->default_base_url) p->base_url = arena_strdup(a, k->default_base_url);
    if (k->default_version) p->version = arena_strdup(a, k->default_version);
}

/* For the well-known names: base_url and api_key from the environment when the file
 * does not give them. */
static int provider_from_env(vctx *v, gw_provider *p, const known_provider *k, bool url_given, bool key_given) {
    if (!url_given) {
        for (int i = 0; i < 2 && k->url_env[i]; i++) {
            const char *u = env_nonempty(v->env, k->url_env[i]);
            if (!u) continue;
            const char *why = url_problem(u, k_http_schemes);
            if (why) {
                vpath ep = {NULL, k->url_env[i], -1};
                vctx nv = *v;
                nv.file = NULL;   /* about the environment, not a line of the file */
                return verr(&nv, 0, &ep, "%s (http:// or https://; value not shown)", why);
            }
            char *s = arena_strdup(v->ca, u);
            size_t len = strlen(s);
            while (len > 0 && s[len - 1] == '/') s[--len] = 0;
            p->base_url = s;
            break;
        }
    }
    if (!key_given) {
        for (int i = 0; i < 2 && k->key_env[i]; i++) {
            const char *key = env_nonempty(v->env, k->key_env[i]);
            if (!key) continue;
            for (const char *c = key; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                    vpath ep = {NULL, k->key_env[i], -1};
                    vctx nv = *v;
                    nv.file = NULL;
                    return verr(&nv, 0, &ep, "contains a control character");
                }
            p->api_key = arena_strdup(v->ca, key);
            break;
        }
    }
    return 0;
}

/* RFC 9110 token characters. */
static bool header_name_ok(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) return false;
    return true;
}

static int read_header_map(vctx *v, const node *n, const vpath *p, gw_header **out, size_t *n_out);
static int read_headers(vctx *v, const node *n, const vpath *p, gw_provider *prov) {
    return read_header_map(v, n, p, &prov->headers, &prov->n_headers);
}

static int read_header_map(vctx *v, const node *n, const vpath *p, gw_header **out, size_t *n_out) {
    if (map_check(v, n, p, NULL)) return -1;
    if (!present(n)) return 0;
    gw_header *hs = arena_alloc(v->ca, n->n * sizeof *hs);
    *out = hs;
    *n_out = 0;
    static const char *const reserved[] = {"host", "content-length", "transfer-encoding", "connection", NULL};
    for (size_t i = 0; i < n->n; i++) {
        const pair *pr = &n->pairs[i];
        vpath hp = {p, pr->k->text, -1};
        if (!header_name_ok(pr->k->text)) return verr(v, pr->k->line, &hp, "not a valid header name");
        for (size_t j = 0; reserved[j]; j++)
            if (!strcasecmp(pr->k->text, reserved[j])) return verr(v, pr->k->line, &hp, "set by smolgate itself");
        for (size_t j = 0; j < i; j++)
            if (!strcasecmp(hs[j].name, pr->k->text))
                return verr(v, pr->k->line, &hp, "duplicate header (header names ignore case; first at line %d)",
                            n->pairs[j].k->line);
        gw_header *h = &hs[*n_out];
        h->name = arena_strdup(v->ca, pr->k->text);
        if (read_str(v, pr->v, &hp, S_SECRET | S_EMPTY_OK, &h->value, NULL)) return -1;
        (*n_out)++;
    }
    return 0;
}

static int add_local_model(vctx *v, gw_provider *p, const char *name, const char *path, bool path_shown,
                           int line, const vpath *at) {
    if (!valid_name(name, 128))
        return verr(v, line, at, "invalid model name \"%.64s\" (letters, digits, '.', '_', '-'; no '/')", name);
    for (size_t i = 0; i < p->local.n_models; i++)
        if (!strcmp(p->local.models[i].name, name))
            return verr(v, line, at, "a local model named \"%s\" already exists", name);
    struct stat st;
    const char *why = NULL;
    if (stat(path, &st) != 0) why = strerror(errno);
    else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) why = "not a file or folder";
    if (why) {
        if (path_shown) return verr(v, line, at, "%s: %s", path, why);
        return verr(v, line, at, "the model path (from the environment): %s", why);
    }
    gw_local_model *m = &p->local.models[p->local.n_models++];
    m->name = arena_strdup(v->ca, name);
    m->path = arena_strdup(v->ca, path);
    return 0;
}

int config_local_model_name(const char *path, char *out, size_t cap) {
    if (!path || !cap) return -1;
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    const char *base = path, *end = path + len;
    /* A Hugging Face cache snapshot: .../models--ORG--NAME/snapshots/<sha>: use NAME. */
    const char *hf = NULL;
    for (const char *s = path; (s = strstr(s, "models--")) && s < end; s++) hf = s;
    if (hf) {
        const char *comp = hf + 8;
        const char *comp_end = memchr(comp, '/', (size_t)(end - comp));
        if (!comp_end) comp_end = end;
        base = comp;   /* skip the organisation: ORG--NAME */
        for (const char *s = comp; s + 1 < comp_end; s++)
            if (s[0] == '-' && s[1] == '-') { base = s + 2; break; }
        end = comp_end;
    } else {
        for (const char *s = path; s < end; s++)
            if (*s == '/') base = s + 1;
    }
    size_t n = (size_t)(end - base);
    if (n > 5 && !strncasecmp(end - 5, ".gguf", 5)) n -= 5;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)tolower((unsigned char)base[i]);
        out[o++] = isalnum(c) || c == '.' || c == '_' || c == '-' ? (char)c : '-';
    }
    out[o] = 0;
    while (o && !isalnum((unsigned char)out[0])) memmove(out, out + 1, o--);
    return o ? 0 : -1;
}

/* --model PATH or NAME=PATH. */
static int add_cli_model(vctx *v, gw_provider *p, const char *arg) {
    char name[129];
    const char *eq = strchr(arg, '='), *slash = strchr(arg, '/');
    const char *path = arg;
    if (eq && (!slash || eq < slash) && eq > arg && (size_t)(eq - arg) < sizeof name) {
        memcpy(name, arg, (size_t)(eq - arg));
        name[eq - arg] = 0;
        path = eq + 1;
    } else if (config_local_model_name(arg, name, sizeof name)) {
        vpath mp = {NULL, "--model", -1};
        vctx nv = *v;
        nv.file = NULL;
        return verr(&nv, 0, &mp, "%.200s: cannot derive a model name (use --model NAME=PATH)", arg);
    }
    vpath mp = {NULL, "--model", -1};
    vctx nv = *v;
    nv.file = NULL;
    return add_local_model(&nv, p, name, path, true, 0, &mp);
}

static int read_local_models(vctx *v, const node *n, const vpath *p, gw_provider *prov) {
    if (!present(n)) return 0;
    if (n->kind == N_MAP) {
        if (map_check(v, n, p, NULL)) return -1;
        for (size_t i = 0; i < n->n; i++) {
            vpath mp = {p, n->pairs[i].k->text, -1};
            char *path = NULL;
            bool t;
            if (read_str(v, n->pairs[i].v, &mp, S_PATH, &path, &t)) return -1;
            if (add_local_model(v, prov, n->pairs[i].k->text, path, !t, n->pairs[i].v->line, &mp)) return -1;
        }
        return 0;
    }
    if (n->kind == N_SEQ) {
        for (size_t i = 0; i < n->n; i++) {
            vpath mp = {p, NULL, (long)i};
            char *path = NULL, name[129];
            bool t;
            if (read_str(v, n->items[i], &mp, S_PATH, &path, &t)) return -1;
            if (config_local_model_name(path, name, sizeof name))
                return verr(v, n->items[i]->line, &mp, "cannot derive a model name from the path (use NAME: PATH)");
            if (add_local_model(v, prov, name, path, !t, n->items[i]->line, &mp)) return -1;
        }
        return 0;
    }
    return verr(v, n->line, p, "expected a mapping NAME: PATH or a list of paths, got %s", kind_name(n));
}

/* "smollm3" names the only local model whose name starts with it, so that the model id
 * the docs use (local/smollm3) works whichever SmolLM3 file was given. */
static void local_alias(gw_provider *p, arena *a) {
    gw_local_model *hit = NULL;
    int n_hits = 0;
    for (size_t i = 0; i < p->local.n_models; i++) {
        if (!strcmp(p->local.models[i].name, "smollm3")) return;
        if (!strncmp(p->local.models[i].name, "smollm3", 7)) { hit = &p->local.models[i]; n_hits++; }
    }
    if (n_hits == 1) hit->alias = arena_strdup(a, "smollm3");
}

static int read_provider(vctx *v, const pair *pr, const vpath *up, gw_provider *p, size_t extra_models) {
    const char *name = pr->k->text;
    const node *n = pr->v;
    vpath pp = {up, name, -1};
    if (!valid_name(name, 64))
        return verr(v, pr->k->line, &pp, "invalid provider name (letters, digits, '.', '_', '-'; no '/')");
    if (map_check(v, n, &pp, NULL)) return -1;
    const known_provider *known = known_by_name(name);
    int type = known ? (int)known->type : -1;
    const node *tn = mget(n, "type");
    if (present(tn)) {
        int t = -1;
        const char *type_names[N_KNOWN + 1];
        for (size_t i = 0; i <= N_KNOWN; i++) type_names[i] = i < N_KNOWN ? k_known(i).type_name : NULL;
        if (get_enum(v, n, &pp, "type", type_names, &t)) return -1;
        if (known && t != type) {
            vpath tp = {&pp, "type", -1};
            return verr(v, tn->line, &tp, "the provider named \"%s\" must have type %s (give another name to a second account)",
                        name, name);
        }
        type = t;
    } else if (!known) {
        char types[160] = "";
        for (size_t i = 0; i < N_KNOWN; i++)
            snprintf(types + strlen(types), sizeof types - strlen(types), "%s%s", i ? (i + 1 < N_KNOWN ? ", " : " or ") : "",
                     k_known(i).type_name);
        return verr(v, present(n) ? n->line : pr->k->line, &pp, "missing key \"type\" (%s)", types);
    }
    if (map_check(v, n, &pp, gw_provider_entry_of((gw_provider_type)type)->config_keys)) return -1;
    provider_defaults(p, name, (gw_provider_type)type, v->ca);
    p->declared = p->configured = true;
    p->line = pr->k->line;
    if (get_timeouts(v, n, &pp, &p->timeouts) || get_retries(v, n, &pp, &p->retries) ||
        get_limits(v, n, &pp, "limits", &p->limits) || (!p->entry->in_process && read_bounds(v, n, &pp, &p->bounds)))
        return -1;
    if (p->entry->in_process) {
        const node *mn = mget(n, "models");
        size_t cap = (present(mn) ? mn->n : 0) + extra_models;
        p->local.models = arena_alloc(v->ca, (cap ? cap : 1) * sizeof *p->local.models);
        vpath mp = {&pp, "models", -1};
        return read_local_models(v, mn, &mp, p) ||
               get_int(v, n, &pp, "threads", 0, 4096, &p->local.threads) ||
               get_int(v, n, &pp, "queue", 0, 1000000, &p->local.queue) ||
               get_int(v, n, &pp, "ctx", 0, 1 << 24, &p->local.ctx) ||
               get_int(v, n, &pp, "parallel", 1, 1024, &p->local.parallel) ||
               get_int(v, n, &pp, "draft", 0, SPEC_MAX_DRAFT, &p->local.draft) ? -1 : 0;
    }
    const node *kn = mget(n, "api_key"), *un = mget(n, "base_url");
    if (get_url(v, n, &pp, "base_url", &p->base_url) || get_str(v, n, &pp, "api_key", S_SECRET, &p->api_key) ||
        get_str(v, n, &pp, "version", 0, &p->version))
        return -1;
    vpath hp = {&pp, "headers", -1};
    if (read_headers(v, mget(n, "headers"), &hp, p)) return -1;
    /* api_key absent: the environment's (well-known names); api_key: null: none. */
    if (known && provider_from_env(v, p, known, un != NULL, kn != NULL)) return -1;
    return 0;
}

static int read_providers(vctx *v, const node *root, const config_overrides *ov) {
    gw_config *c = v->cfg;
    const node *n = mget(root, "providers");
    vpath pp = {NULL, "providers", -1};
    if (map_check(v, n, &pp, NULL)) return -1;
    size_t declared = present(n) ? n->n : 0, implicit = 0;
    for (size_t i = 0; i < N_KNOWN; i++)
        if (!mget(n, k_known(i).type_name)) implicit++;
    size_t n_cli = ov ? ov->n_model_paths : 0;
    c->providers = arena_alloc(v->ca, (declared + implicit) * sizeof *c->providers);
    for (size_t i = 0; i < declared; i++) {
        bool is_local = !strcmp(n->pairs[i].k->text, "local");
        if (read_provider(v, &n->pairs[i], &pp, &c->providers[c->n_providers], is_local ? n_cli : 0)) return -1;
        c->n_providers++;
    }
    for (size_t i = 0; i < N_KNOWN; i++) {
        if (mget(n, k_known(i).type_name)) continue;
        gw_provider *p = &c->providers[c->n_providers++];
        provider_defaults(p, k_known(i).type_name, k_known(i).type, v->ca);
        if (k_known(i).in_process) {
            p->local.models = arena_alloc(v->ca, (n_cli ? n_cli : 1) * sizeof *p->local.models);
        } else {
            if (provider_from_env(v, p, &k_known(i), false, false)) return -1;
            p->configured = p->api_key != NULL;
        }
    }
    gw_provider *local = (gw_provider *)config_provider(c, "local");
    for (size_t i = 0; i < n_cli; i++)
        if (add_cli_model(v, local, ov->model_paths[i])) return -1;
    if (ov && ov->parallel > 0) local->local.parallel = ov->parallel;
    if (ov && ov->draft > 0) local->local.draft = ov->draft - 1;
    local_alias(local, v->ca);
    for (size_t i = 0; i < c->n_providers; i++)   /* a local provider without models serves nothing */
        if (c->providers[i].entry->in_process) c->providers[i].configured = c->providers[i].local.n_models > 0;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* model id resolution (used for route targets at load and for requests) */

static const gw_provider *provider_n(const gw_config *c, const char *name, size_t n) {
    for (size_t i = 0; i < c->n_providers; i++)
        if (strlen(c->providers[i].name) == n && !strncmp(c->providers[i].name, name, n)) return &c->providers[i];
    return NULL;
}

static const gw_local_model *local_find(const gw_provider *p, const char *name) {
    for (size_t i = 0; i < p->local.n_models; i++) {
        const gw_local_model *m = &p->local.models[i];
        if (!strcmp(m->name, name) || (m->alias && !strcmp(m->alias, name))) return m;
    }
    return NULL;
}

/* The well-known provider a bare model name as users' code sends it belongs to (its
 * type's entry says), or NULL. */
static const char *family_of(const char *m) {
    for (size_t i = 0; i < N_KNOWN; i++)
        if (k_known(i).owns_bare_model && k_known(i).owns_bare_model(m)) return k_known(i).type_name;
    return NULL;
}

/* "gpt-*, o1/o3/o4*, ..., gemini-*": the bare names family_of knows, for errors. */
static void families(char *out, size_t cap) {
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < N_KNOWN && o < cap; i++)
        if (k_known(i).bare_models) o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? ", " : "", k_known(i).bare_models);
}

static void not_configured(char *why, size_t cap, const gw_provider *p) {
    const known_provider *k = known_by_name(p->name);
    if (p->entry->in_process)
        snprintf(why, cap, "provider \"%s\" has no models (give --model PATH, or list them under providers.%s.models)",
                 p->name, p->name);
    else if (k && k->key_env[1])
        snprintf(why, cap, "provider \"%s\" is not configured (set %s or %s, or declare it under providers)",
                 p->name, k->key_env[1], k->key_env[0]);
    else
        snprintf(why, cap, "provider \"%s\" is not configured (set %s, or declare it under providers)",
                 p->name, k ? k->key_env[0] : "its API key");
}

/* id (not a route) -> provider and model. why: a message without file or key path. */
static int resolve_direct(const gw_config *c, const char *id, gw_resolved *r, char *why, size_t cap) {
    memset(r, 0, sizeof *r);
    const char *slash = strchr(id, '/');
    const gw_provider *p = NULL;
    const char *model = id;
    if (slash) {
        p = provider_n(c, id, (size_t)(slash - id));
        if (!p) {
            const char *names[64];
            size_t nn = 0;
            for (size_t i = 0; i < c->n_providers && nn < 64; i++) names[nn++] = c->providers[i].name;
            char prov[65], sug[400];
            snprintf(prov, sizeof prov, "%.*s", (int)(slash - id < 64 ? slash - id : 64), id);
            const char *near = closest(prov, names, nn);
            size_t o = 0;
            if (near) o += (size_t)snprintf(sug, sizeof sug, " (did you mean \"%s\"? known:", near);
            else o += (size_t)snprintf(sug, sizeof sug, " (known:");
            for (size_t i = 0; i < nn && o + 4 < sizeof sug; i++)
                o += (size_t)snprintf(sug + o, sizeof sug - o, "%s %s", i ? "," : "", names[i]);
            if (o + 2 < sizeof sug) snprintf(sug + o, sizeof sug - o, ")");
            snprintf(why, cap, "unknown provider \"%s\"%s", prov, sug);
            return -1;
        }
        model = slash + 1;
        if (!*model) {
            snprintf(why, cap, "model id \"%.100s\" names no model after the provider", id);
            return -1;
        }
    } else {
        for (size_t i = 0; i < c->n_providers && !p; i++)
            if (c->providers[i].entry->in_process && local_find(&c->providers[i], id)) p = &c->providers[i];
        if (!p) {
            const char *fam = family_of(id);
            if (!fam) {
                char fams[200];
                families(fams, sizeof fams);
                snprintf(why, cap, "unknown model \"%.100s\": not a route, a local model, or a known family (%s); "
                         "write it as provider/model", id, fams);
                return -1;
            }
            p = config_provider(c, fam);
        }
    }
    if (p->entry->in_process) {
        const gw_local_model *lm = local_find(p, model);
        if (!lm) {
            size_t o = (size_t)snprintf(why, cap, "unknown local model \"%.100s\" (served:", model);
            for (size_t i = 0; i < p->local.n_models && o + 4 < cap; i++)
                o += (size_t)snprintf(why + o, cap - o, "%s %s", i ? "," : "", p->local.models[i].name);
            if (!p->local.n_models && o < cap) o += (size_t)snprintf(why + o, cap - o, " none; give --model PATH");
            if (o + 2 < cap) snprintf(why + o, cap - o, ")");
            return -1;
        }
        r->local = lm;
        model = lm->name;
    }
    if (!p->configured) {
        not_configured(why, cap, p);
        return -1;
    }
    r->provider = p;
    r->model = model;
    r->info = config_model_info(c, p, model);
    return 0;
}

int config_resolve_model(const gw_config *c, const char *id, gw_resolved *out, sg_error *err) {
    memset(out, 0, sizeof *out);
    if (!id || !*id) return sg_fail(err, "no model given");
    const gw_route *r = config_route(c, id);
    if (r) {
        out->route = r;
        return 0;
    }
    if (!c->direct) {
        size_t o = 0;
        char list[300];
        list[0] = 0;
        for (size_t i = 0; i < c->n_routes && o + 4 < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", c->routes[i].name);
        return sg_fail(err, "model \"%.100s\" is not served here (this gateway serves its routes only: %s)", id,
                       c->n_routes ? list : "none");
    }
    char why[500];
    if (resolve_direct(c, id, out, why, sizeof why)) return sg_fail(err, "%s", why);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* models: facts and prices */

static const char *const k_model[] = {"context_window", "max_output_tokens", "price", "limits", NULL};
static const char *const k_price[] = {"input", "cache_read", "cache_write", "output", "reasoning", NULL};

static int read_models(vctx *v, const node *root) {
    gw_config *c = v->cfg;
    const node *n = mget(root, "models");
    vpath mp = {NULL, "models", -1};
    if (map_check(v, n, &mp, NULL)) return -1;
    if (!present(n)) return 0;
    c->models = arena_alloc(v->ca, n->n * sizeof *c->models);
    for (size_t i = 0; i < n->n; i++) {
        const pair *pr = &n->pairs[i];
        const char *id = pr->k->text;
        vpath ip = {&mp, id, -1};
        gw_model_info *m = &c->models[c->n_models];
        const char *slash = strchr(id, '/');
        if (!slash || slash == id || !slash[1])
            return verr(v, pr->k->line, &ip, "model ids here are provider/model (e.g. openai/gpt-4o-mini)");
        for (const char *ch = id; *ch; ch++)   /* as read_str: a name to look up, never a CR/LF */
            if ((unsigned char)*ch < 0x20 || *ch == 0x7f) return verr(v, pr->k->line, &mp, "a model id contains a control character");
        const gw_provider *p = provider_n(c, id, (size_t)(slash - id));
        if (!p) {
            char why[500];
            gw_resolved r;
            resolve_direct(c, id, &r, why, sizeof why);
            return verr(v, pr->k->line, &ip, "%s", why);
        }
        const char *model = slash + 1;
        if (p->entry->in_process) {
            const gw_local_model *lm = local_find(p, model);
            if (!lm) return verr(v, pr->k->line, &ip, "unknown local model \"%.100s\"", model);
            model = lm->name;
        }
        for (size_t j = 0; j < c->n_models; j++)
            if (c->models[j].provider == p && !strcmp(c->models[j].model, model))
                return verr(v, pr->k->line, &ip, "the same model as %s (line %d)", c->models[j].id, c->models[j].line);
        m->id = arena_strdup(v->ca, id);
        m->provider = p;
        m->model = arena_strdup(v->ca, model);
        m->line = pr->k->line;
        m->context_window = m->max_output_tokens = -1;
        m->price = (gw_price){-1, -1, -1, -1, -1};
        if (map_check(v, pr->v, &ip, k_model) ||
            get_i64(v, pr->v, &ip, "context_window", 1, MAX_COUNT, &m->context_window) ||
            get_i64(v, pr->v, &ip, "max_output_tokens", 1, MAX_COUNT, &m->max_output_tokens) ||
            get_limits(v, pr->v, &ip, "limits", &m->limits))
            return -1;
        const node *pn = mget(pr->v, "price");
        vpath pp = {&ip, "price", -1};
        if (map_check(v, pn, &pp, k_price) || get_micro(v, pn, &pp, "input", &m->price.input) ||
            get_micro(v, pn, &pp, "cache_read", &m->price.cache_read) ||
            get_micro(v, pn, &pp, "cache_write", &m->price.cache_write) ||
            get_micro(v, pn, &pp, "output", &m->price.output) ||
            get_micro(v, pn, &pp, "reasoning", &m->price.reasoning))
            return -1;
        if (m->price.reasoning < 0) m->price.reasoning = m->price.output;
        c->n_models++;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* routes */

static const char *const k_route[] = {"name", "targets", "retry_budget", "timeout_ms", "limits", "per_key_limits", "budget", NULL};
static const char *const k_target[] = {"model", "weight", NULL};

static bool route_name_ok(const char *s) {
    size_t n = strlen(s);
    if (!n || n > 128) return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f) return false;
    return true;
}

static int read_target(vctx *v, const node *t, const vpath *tp, gw_target *out, bool *weighted) {
    const node *mn = t;
    vpath mp = *tp;
    *weighted = false;
    if (t->kind == N_MAP) {
        if (map_check(v, t, tp, k_target)) return -1;
        mn = mget(t, "model");
        if (!present(mn)) return verr(v, t->line, tp, "missing key \"model\"");
        mp = (vpath){tp, "model", -1};
        int64_t w = 1;
        if (get_i64(v, t, tp, "weight", 0, 1000000, &w)) return -1;
        *weighted = present(mget(t, "weight"));
        out->weight = (uint32_t)w;
    } else if (t->kind == N_SCALAR) {
        out->weight = 1;
    } else {
        return verr(v, t->line, tp, "expected a model id or {model: ..., weight: ...}, got %s", kind_name(t));
    }
    char *id = NULL;
    bool from_env;
    if (read_str(v, mn, &mp, 0, &id, &from_env)) return -1;
    gw_resolved r;
    char why[500];
    if (resolve_direct(v->cfg, id, &r, why, sizeof why))
        return verr(v, mn->line, &mp, "%s", from_env ? "not a model this gateway can serve (the value comes from the environment "
                                                "and is not shown)" : why);
    out->id = id;
    out->provider = r.provider;
    out->model = arena_strdup(v->ca, r.model);
    out->local = r.local;
    out->info = r.info;
    return 0;
}

static int read_route(vctx *v, const node *n, const vpath *rp, gw_route *r) {
    if (map_check(v, n, rp, k_route)) return -1;
    if (!present(n)) return verr(v, n ? n->line : 0, rp, "expected a mapping, got null");
    r->line = n->line;
    const node *nn = mget(n, "name");
    vpath np = {rp, "name", -1};
    if (!present(nn)) return verr(v, n->line, rp, "missing key \"name\"");
    bool t;
    if (read_str(v, nn, &np, 0, &r->name, &t)) return -1;
    if (!route_name_ok(r->name)) return verr(v, nn->line, &np, "a route name has no spaces and at most 128 characters");
    gw_config *c = v->cfg;
    for (size_t i = 0; i < c->n_routes; i++)
        if (!strcmp(c->routes[i].name, r->name))
            return verr(v, nn->line, &np, "duplicate route name%s%s%s (first at line %d)", t ? "" : " \"",
                        t ? "" : r->name, t ? "" : "\"", c->routes[i].line);
    r->retry_budget = 3;
    r->timeout_ms = 600000;
    if (get_int(v, n, rp, "retry_budget", 0, 100, &r->retry_budget) || get_ms(v, n, rp, "timeout_ms", &r->timeout_ms) ||
        get_limits(v, n, rp, "limits", &r->limits) || get_limits(v, n, rp, "per_key_limits", &r->per_key_limits) ||
        get_budget(v, n, rp, "budget", &r->budget))
        return -1;
    const node *tn = mget(n, "targets");
    vpath tp = {rp, "targets", -1};
    if (seq_check(v, tn, &tp)) return -1;
    if (!present(tn) || !tn->n) return verr(v, tn ? tn->line : n->line, present(tn) ? &tp : rp,
                                            present(tn) ? "a route needs at least one target" : "missing key \"targets\"");
    r->targets = arena_alloc(v->ca, tn->n * sizeof *r->targets);
    bool *weighted = arena_alloc(v->ta, tn->n * sizeof *weighted);
    int group = -1;
    for (size_t i = 0; i < tn->n; i++) {
        vpath ip = {&tp, NULL, (long)i};
        gw_target *t = &r->targets[i];
        if (read_target(v, tn->items[i], &ip, t, &weighted[i])) return -1;
        for (size_t j = 0; j < i; j++)
            if (r->targets[j].provider == t->provider && !strcmp(r->targets[j].model, t->model))
                return verr(v, tn->items[i]->line, &ip, "the same target as targets[%zu]", j);
        /* A run of consecutive targets that all say weight: is one load-balanced group. */
        if (!i || !(weighted[i] && weighted[i - 1])) group++;
        t->group = group;
    }
    r->n_targets = tn->n;
    r->n_groups = group + 1;
    for (size_t first = 0, last; first < tn->n; first = last + 1) {
        uint64_t sum = 0;
        for (last = first; last + 1 < tn->n && r->targets[last + 1].group == r->targets[first].group; last++) {}
        for (size_t j = first; j <= last; j++) sum += r->targets[j].weight;
        if (!sum) {
            vpath gp = {&tp, NULL, (long)first};
            return verr(v, tn->items[first]->line, &gp, "the weights of targets[%zu..%zu] add up to 0", first, last);
        }
    }
    return 0;
}

static int read_routes(vctx *v, const node *root) {
    gw_config *c = v->cfg;
    const node *n = mget(root, "routes");
    vpath rp = {NULL, "routes", -1};
    if (seq_check(v, n, &rp)) return -1;
    if (!present(n)) return 0;
    c->routes = arena_alloc(v->ca, (n->n ? n->n : 1) * sizeof *c->routes);
    for (size_t i = 0; i < n->n; i++) {
        vpath ip = {&rp, NULL, (long)i};
        if (read_route(v, n->items[i], &ip, &c->routes[c->n_routes])) return -1;
        c->n_routes++;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* gateway API keys */

static const char *const k_key[] = {"id", "sha256", "key", "role", "routes", "limits", "route_limits", "budget", NULL};
static const char *const k_roles[] = {"user", "admin", "metrics", NULL};   /* gw_key_role order */
static const char *const k_auth[] = {"keys", "none", NULL};

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int route_ref(vctx *v, const node *n, const vpath *p, const gw_route **out) {
    char *name = NULL;
    bool t;
    if (read_str(v, n, p, 0, &name, &t)) return -1;
    const gw_route *r = config_route(v->cfg, name);
    if (r) { *out = r; return 0; }
    if (t) return verr(v, n->line, p, "unknown route (the value comes from the environment and is not shown)");
    const char *names[256];
    size_t nn = 0;
    for (size_t i = 0; i < v->cfg->n_routes && nn < 256; i++) names[nn++] = v->cfg->routes[i].name;
    char sug[400];
    suggest(sug, sizeof sug, name, names, nn, "routes");
    return verr(v, n->line, p, "unknown route \"%.100s\"%s", name, sug);
}

static int read_key(vctx *v, const node *n, const vpath *kp, gw_key *k) {
    if (map_check(v, n, kp, k_key)) return -1;
    if (!present(n)) return verr(v, n ? n->line : 0, kp, "expected a mapping, got null");
    k->line = n->line;
    const node *idn = mget(n, "id");
    vpath ip = {kp, "id", -1};
    if (!present(idn)) return verr(v, n->line, kp, "missing key \"id\"");
    bool t;
    if (read_str(v, idn, &ip, 0, &k->id, &t)) return -1;
    if (!valid_name(k->id, 64)) return verr(v, idn->line, &ip, "invalid id (letters, digits, '.', '_', '-')");
    gw_config *c = v->cfg;
    for (size_t i = 0; i < c->n_keys; i++)
        if (!strcmp(c->keys[i].id, k->id))
            return verr(v, idn->line, &ip, "duplicate key id%s%s%s (first at line %d)", t ? "" : " \"", t ? "" : k->id,
                        t ? "" : "\"", c->keys[i].line);
    const node *hn = mget(n, "sha256"), *pn = mget(n, "key");
    if (present(hn) && present(pn)) return verr(v, pn->line, kp, "give sha256 or key, not both");
    if (!present(hn) && !present(pn)) return verr(v, n->line, kp, "missing key \"sha256\" (or \"key\")");
    if (present(hn)) {
        vpath hp = {kp, "sha256", -1};
        if (want_scalar(v, hn, &hp, "64 hex digits")) return -1;
        const char *s;
        bool t;
        if (sval(v, hn, &hp, &s, &t)) return -1;
        if (strlen(s) != 64) return verr(v, hn->line, &hp, "expected 64 hex digits (the SHA-256 of the key), got %zu characters", strlen(s));
        for (int i = 0; i < 32; i++) {
            int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
            if (hi < 0 || lo < 0) return verr(v, hn->line, &hp, "expected 64 hex digits (the SHA-256 of the key)");
            k->sha256[i] = (uint8_t)(hi << 4 | lo);
        }
    } else {
        vpath pp = {kp, "key", -1};
        if (want_scalar(v, pn, &pp, "a string")) return -1;
        const char *s;
        bool t;
        if (sval(v, pn, &pp, &s, &t)) return -1;
        if (strlen(s) < 16) return verr(v, pn->line, &pp, "too short for an API key (at least 16 characters)");
        config_key_hash(s, strlen(s), k->sha256);
        explicit_bzero((char *)s, strlen(s));   /* in the tree arena; do not keep it around */
    }
    for (size_t i = 0; i < c->n_keys; i++)
        if (!CRYPTO_memcmp(c->keys[i].sha256, k->sha256, GW_SHA256_LEN))
            return verr(v, (present(hn) ? hn : pn)->line, kp, "the same key as keys[%zu] (%s)", i, c->keys[i].id);
    int role = GW_ROLE_USER;
    if (get_enum(v, n, kp, "role", k_roles, &role)) return -1;
    k->role = (gw_key_role)role;
    if (k->role == GW_ROLE_METRICS) {   /* a scrape token: nothing that only applies to requests */
        static const char *const req_only[] = {"routes", "limits", "route_limits", "budget", NULL};
        for (const char *const *w = req_only; *w; w++) {
            const node *x = mget(n, *w);
            vpath xp = {kp, *w, -1};
            if (present(x)) return verr(v, x->line, &xp, "a key with role metrics sends no requests (it reads /metrics only)");
        }
    }
    const node *rn = mget(n, "routes");
    vpath rp = {kp, "routes", -1};
    if (seq_check(v, rn, &rp)) return -1;
    k->all_routes = !present(rn);
    if (present(rn)) {
        if (!rn->n) return verr(v, rn->line, &rp, "empty (leave routes out to allow every route)");
        k->routes = arena_alloc(v->ca, rn->n * sizeof *k->routes);
        for (size_t i = 0; i < rn->n; i++) {
            vpath ep = {&rp, NULL, (long)i};
            const gw_route *r;
            if (route_ref(v, rn->items[i], &ep, &r)) return -1;
            for (size_t j = 0; j < k->n_routes; j++)
                if (k->routes[j] == r) return verr(v, rn->items[i]->line, &ep, "listed twice");
            k->routes[k->n_routes++] = r;
        }
    }
    if (get_limits(v, n, kp, "limits", &k->limits) || get_budget(v, n, kp, "budget", &k->budget)) return -1;
    const node *ln = mget(n, "route_limits");
    vpath lp = {kp, "route_limits", -1};
    if (map_check(v, ln, &lp, NULL)) return -1;
    if (present(ln)) {
        k->route_limits = arena_alloc(v->ca, ln->n * sizeof *k->route_limits);
        for (size_t i = 0; i < ln->n; i++) {
            vpath ep = {&lp, ln->pairs[i].k->text, -1};
            gw_key_route_limits *e = &k->route_limits[k->n_route_limits];
            if (route_ref(v, ln->pairs[i].k, &ep, &e->route) || read_limits(v, ln->pairs[i].v, &ep, &e->limits))
                return -1;
            if (!k->all_routes && !config_key_allows(k, &(gw_resolved){.route = e->route}))
                return verr(v, ln->pairs[i].k->line, &ep, "not among this key's routes");
            k->n_route_limits++;
        }
    }
    return 0;
}

static int read_keys(vctx *v, const node *root) {
    gw_config *c = v->cfg;
    const node *n = mget(root, "keys");
    vpath kp = {NULL, "keys", -1};
    if (seq_check(v, n, &kp)) return -1;
    if (!present(n)) return 0;
    c->keys = arena_alloc(v->ca, (n->n ? n->n : 1) * sizeof *c->keys);
    for (size_t i = 0; i < n->n; i++) {
        vpath ip = {&kp, NULL, (long)i};
        if (read_key(v, n->items[i], &ip, &c->keys[c->n_keys])) return -1;
        c->n_keys++;
    }
    return 0;
}

/* `auth: keys` insists on at least one key, `auth: none` on none: the switch that lets a
 * reload turn authentication off (config_reload_check). */
static int read_auth(vctx *v, const node *root) {
    gw_config *c = v->cfg;
    const node *an = mget(root, "auth");
    if (!present(an)) return 0;
    int auth = 0;
    vpath ap = {NULL, "auth", -1};
    if (get_enum(v, root, NULL, "auth", k_auth, &auth)) return -1;
    if (auth == 1 && c->n_keys)
        return verr(v, an->line, &ap, "none, but %zu key(s) are listed under keys (remove them, or the line)", c->n_keys);
    if (auth == 0 && !c->n_keys) return verr(v, an->line, &ap, "keys, but no key is listed under keys");
    c->auth_none = auth == 1;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* the rest: server, breaker, state, ledger */

static const char *const k_top[] = {"version", "listen", "log_level", "direct", "server", "providers", "models",
                                    "routes", "keys", "auth", "circuit_breaker", "state", "ledger", "price_files",
                                    "upstream", "responses", "alerts", "tracing", "dashboard", NULL};
static const char *const k_dashboard[] = {"capture", NULL};
static const char *const k_capture[] = {"routes", "keys", "retention_hours", "max_bytes", NULL};
static const char *const k_alerts[] = {"webhook_url", "timeout_ms", "retries", NULL};
static const char *const k_server[] = {"max_connections", "max_header_bytes", "max_body_bytes", "header_timeout_ms",
                                       "body_timeout_ms", "idle_timeout_ms", "write_timeout_ms", "shutdown_grace_ms", NULL};
static const char *const k_responses[] = {"max_count", "max_bytes", "max_age_s", "backend", NULL};
static const char *const k_responses_backend[] = {"ledger", "memory", NULL};
static const char *const k_breaker[] = {"failures", "window_ms", "cooldown_ms", "max_cooldown_ms", "max_targets", NULL};
static const char *const k_state[] = {"redis", "on_redis_error", "key_prefix", "timeout_ms", NULL};
static const char *const k_ledger[] = {"sqlite", "postgres", "spool_dir", "flush_ms", "batch_max", NULL};
static const char *const k_tracing[] = {"enabled", "endpoint", "headers", "service_name", "sample_ratio", "batch_max",
                                        "queue_max", "flush_ms", "timeout_ms", "max_retries", "protocol", NULL};
static const char *const k_otlp_protocols[] = {"http/json", "http/protobuf", NULL};
static const char *const k_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const k_on_error[] = {"open", "closed", NULL};

/* "HOST:PORT" or "[V6]:PORT", port 0..65535 (0: any free port). */
static const char *listen_problem(const char *s) {
    const char *port;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close == s + 1 || close[1] != ':') return "expected HOST:PORT or [IPV6]:PORT";
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || colon == s) return "expected HOST:PORT, such as 127.0.0.1:8080";
        if (memchr(s, ':', (size_t)(colon - s))) return "an IPv6 address goes in brackets: [::1]:8080";
        port = colon + 1;
    }
    size_t n = strlen(port);
    if (!n || n > 5 || strspn(port, "0123456789") != n || atoi(port) > 65535) return "the port must be 0 to 65535";
    return NULL;
}

static void config_defaults(gw_config *c, const config_env *env, arena *a) {
    c->version = 1;
    c->listen = arena_strdup(a, "127.0.0.1:8080");
    c->log_level = SG_LOG_INFO;
    const char *lv = env_nonempty(env, "SMOLGATE_LOG");
    for (int i = 0; lv && k_levels[i]; i++)
        if (!strcmp(lv, k_levels[i])) c->log_level = (sg_log_level)i;
    c->direct = true;
    c->server = (gw_server){10000, 16384, 16u << 20, 10000, 60000, 75000, 30000, 30000};
    c->circuit_breaker = (gw_breaker){5, 30000, 30000, 300000, GW_BREAKER_MAX_TARGETS_DEFAULT};
    c->upstream = (gw_bounds){32u << 20, 4u << 20, 65536};
    c->responses.max_count = 10000;
    c->responses.max_bytes = (size_t)256 << 20;
    c->responses.max_age_s = 86400;
    c->alerts.timeout_ms = 5000;
    c->alerts.retries = 3;
    c->state = (gw_state){NULL, true, arena_strdup(a, "smolgate:"), 100};
    c->ledger = (gw_ledger){GW_LEDGER_SQLITE, arena_strdup(a, "smolgate.db"), NULL,
                            arena_strdup(a, "smolgate-spool"), 1000, 500};
    c->tracing = (gw_tracing){NULL, NULL, 0, arena_strdup(a, "smolgate"), 1.0, 256, 4096, 1000, 5000, 3, true};
}

/* A ratio 0..1 ("0.25"). */
static int get_ratio(vctx *v, const node *map, const vpath *up, const char *key, double *out) {
    const node *n = mget(map, key);
    if (!present(n)) return 0;
    vpath p = {up, key, -1};
    if (want_scalar(v, n, &p, "a number from 0 to 1")) return -1;
    const char *s;
    bool t;
    if (sval(v, n, &p, &s, &t)) return -1;
    char *end = NULL;
    double x = strtod(s, &end);
    char shown[128];
    if (!*s || *end || !(x >= 0 && x <= 1))
        return verr(v, n->line, &p, "expected a number from 0 to 1, got %s", vshow(shown, sizeof shown, s, t));
    *out = x;
    return 0;
}

static int hexdig(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* OTEL_EXPORTER_OTLP_HEADERS: "k1=v1,k2=v2", values percent-encoded (W3C baggage form). */
static int env_headers(vctx *v, const char *s, gw_tracing *t) {
    size_t cap = 1;
    for (const char *c = s; *c; c++) cap += *c == ',';
    t->headers = arena_alloc(v->ca, cap * sizeof *t->headers);
    t->n_headers = 0;
    vpath ep = {NULL, "OTEL_EXPORTER_OTLP_HEADERS", -1};
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        char *item = arena_strndup(v->ta, s, len);
        s += len + (e ? 1 : 0);
        char *eq = strchr(item, '=');
        if (!eq) { if (strspn(item, " \t") == strlen(item)) continue; return verr(v, 0, &ep, "expected key=value pairs (value not shown)"); }
        *eq = 0;
        char *k = item, *val = eq + 1;
        while (*k == ' ' || *k == '\t') k++;
        for (char *z = k + strlen(k); z > k && (z[-1] == ' ' || z[-1] == '\t');) *--z = 0;
        while (*val == ' ' || *val == '\t') val++;
        for (char *z = val + strlen(val); z > val && (z[-1] == ' ' || z[-1] == '\t');) *--z = 0;
        if (!header_name_ok(k)) return verr(v, 0, &ep, "\"%.64s\" is not a valid header name", k);
        char *d = arena_alloc(v->ca, strlen(val) + 1), *o = d;
        for (const char *c = val; *c; c++) {
            int hi, lo;
            if (*c == '%' && (hi = hexdig(c[1])) >= 0 && (lo = hexdig(c[2])) >= 0) { *o++ = (char)(hi << 4 | lo); c += 2; }
            else *o++ = *c;
        }
        *o = 0;
        for (const char *c = d; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) return verr(v, 0, &ep, "a value contains a control character");
        t->headers[t->n_headers++] = (gw_header){arena_strdup(v->ca, k), d};
    }
    return 0;
}

/* tracing: the file's keys, then the standard OTEL_* variables for what it leaves unset. */
/* dashboard.capture: which requests' prompts and answers the dashboard keeps. Route names
 * must be routes of this file; key ids may also be run-time keys'. */
static int read_names(vctx *v, const node *map, const vpath *up, const char *key, char ***out, size_t *n) {
    const node *ln = mget(map, key);
    vpath lp = {up, key, -1};
    if (seq_check(v, ln, &lp)) return -1;
    if (!present(ln)) return 0;
    *out = arena_alloc(v->ca, (ln->n ? ln->n : 1) * sizeof **out);
    for (size_t i = 0; i < ln->n; i++) {
        vpath ep = {&lp, NULL, (long)i};
        if (read_str(v, ln->items[i], &ep, 0, &(*out)[*n], NULL)) return -1;
        (*n)++;
    }
    return 0;
}

static int read_dashboard(vctx *v, const node *root) {
    gw_config *c = v->cfg;
    const node *dn = mget(root, "dashboard");
    vpath dp = {NULL, "dashboard", -1};
    const node *cn = mget(dn, "capture");
    vpath cp = {&dp, "capture", -1};
    c->capture.retention_h = 24;
    c->capture.max_bytes = 32768;
    if (map_check(v, dn, &dp, k_dashboard) || map_check(v, cn, &cp, k_capture) ||
        read_names(v, cn, &cp, "routes", &c->capture.routes, &c->capture.n_routes) ||
        read_names(v, cn, &cp, "keys", &c->capture.keys, &c->capture.n_keys) ||
        get_u32(v, cn, &cp, "retention_hours", 1, 8760, &c->capture.retention_h) ||
        get_u32(v, cn, &cp, "max_bytes", 1024, 1048576, &c->capture.max_bytes))
        return -1;
    for (size_t i = 0; i < c->capture.n_routes; i++) {
        bool known = false;
        for (size_t r = 0; r < c->n_routes && !known; r++) known = !strcmp(c->routes[r].name, c->capture.routes[i]);
        vpath lp = {&cp, "routes", -1}, rp = {&lp, NULL, (long)i};
        if (!known) return verr(v, mget(cn, "routes")->line, &rp, "unknown route \"%s\" (not in routes:)", c->capture.routes[i]);
    }
    return 0;
}

bool config_capture_wanted(const gw_config *c, const char *route, const char *key_id) {
    for (size_t i = 0; route && i < c->capture.n_routes; i++)
        if (!strcmp(c->capture.routes[i], route)) return true;
    for (size_t i = 0; key_id && i < c->capture.n_keys; i++)
        if (!strcmp(c->capture.keys[i], key_id)) return true;
    return false;
}

static int read_tracing(vctx *v, const node *root) {
    gw_tracing *t = &v->cfg->tracing;
    const node *tn = mget(root, "tracing");
    vpath tp = {NULL, "tracing", -1};
    bool enabled = true;
    char *endpoint = NULL;
    if (map_check(v, tn, &tp, k_tracing) || get_bool(v, tn, &tp, "enabled", &enabled) ||
        get_url(v, tn, &tp, "endpoint", &endpoint) || get_str(v, tn, &tp, "service_name", 0, &t->service_name) ||
        get_ratio(v, tn, &tp, "sample_ratio", &t->sample_ratio) || get_u32(v, tn, &tp, "batch_max", 1, 100000, &t->batch_max) ||
        get_u32(v, tn, &tp, "queue_max", 1, 10000000, &t->queue_max) || get_ms(v, tn, &tp, "flush_ms", &t->flush_ms) ||
        get_ms(v, tn, &tp, "timeout_ms", &t->timeout_ms) || get_u32(v, tn, &tp, "max_retries", 0, 100, &t->max_retries))
        return -1;
    /* http/protobuf unless asked: OTLP's default, the encoding every receiver must accept
     * (JSON is optional there), and the cheaper one (bench/bench_otlp.c) */
    int proto = -1;
    if (get_enum(v, tn, &tp, "protocol", k_otlp_protocols, &proto)) return -1;
    if (proto < 0) {   /* the standard variables, the traces' one first; a value we do not speak is named */
        const char *var = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", *pv = env_nonempty(v->env, var);
        if (!pv) pv = env_nonempty(v->env, var = "OTEL_EXPORTER_OTLP_PROTOCOL");
        if (pv) {
            for (int i = 0; k_otlp_protocols[i]; i++)
                if (!strcmp(pv, k_otlp_protocols[i])) proto = i;
            vpath pp = {NULL, var, -1};
            if (proto < 0) return verr(v, 0, &pp, "\"%.40s\" is not http/json or http/protobuf (grpc is not spoken here)", pv);
        }
    }
    if (proto >= 0) t->protobuf = proto == 1;
    vpath hp = {&tp, "headers", -1};
    if (read_header_map(v, mget(tn, "headers"), &hp, &t->headers, &t->n_headers)) return -1;
    if (!enabled) return 0;
    if (endpoint) {   /* a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT */
        size_t n = strlen(endpoint);
        t->endpoint = n >= 10 && !strcmp(endpoint + n - 10, "/v1/traces") ? endpoint : arena_printf(v->ca, "%s/v1/traces", endpoint);
    } else {
        const char *full = env_nonempty(v->env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        const char *base = env_nonempty(v->env, "OTEL_EXPORTER_OTLP_ENDPOINT");
        const char *u = full ? full : base;
        const char *var = full ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" : "OTEL_EXPORTER_OTLP_ENDPOINT";
        if (u) {
            vpath ep = {NULL, var, -1};
            const char *why = url_problem(u, k_http_schemes);
            if (why) return verr(v, 0, &ep, "%s (http:// or https://; value not shown)", why);
            for (const char *c = u; *c; c++)
                if ((unsigned char)*c < 0x20 || *c == 0x7f) return verr(v, 0, &ep, "contains a control character");
            size_t n = strlen(u);
            while (!full && n && u[n - 1] == '/') n--;
            t->endpoint = full ? arena_strdup(v->ca, u) : arena_printf(v->ca, "%.*s/v1/traces", (int)n, u);
        }
    }
    const char *hv = env_nonempty(v->env, "OTEL_EXPORTER_OTLP_HEADERS");
    if (t->endpoint && !t->n_headers && hv && env_headers(v, hv, t)) return -1;
    const char *sn = env_nonempty(v->env, "OTEL_SERVICE_NAME");
    if (sn && !present(mget(tn, "service_name"))) t->service_name = arena_strdup(v->ca, sn);
    return 0;
}

static int read_top(vctx *v, const node *root) {
    gw_config *c = v->cfg;
    int64_t version = 1;
    if (get_i64(v, root, NULL, "version", 1, INT_MAX, &version)) return -1;
    if (version != 1) {
        vpath vp = {NULL, "version", -1};
        return verr(v, mget(root, "version")->line, &vp, "this smolgate reads version 1 (got %lld)", (long long)version);
    }
    const node *ln = mget(root, "listen");
    if (present(ln)) {
        vpath lp = {NULL, "listen", -1};
        if (read_str(v, ln, &lp, 0, &c->listen, NULL)) return -1;
        const char *why = listen_problem(c->listen);
        if (why) return verr(v, ln->line, &lp, "%s", why);
    }
    int level = (int)c->log_level;
    if (get_enum(v, root, NULL, "log_level", k_levels, &level) || get_bool(v, root, NULL, "direct", &c->direct))
        return -1;
    c->log_level = (sg_log_level)level;

    const node *sn = mget(root, "server");
    vpath sp = {NULL, "server", -1};
    gw_server *s = &c->server;
    if (map_check(v, sn, &sp, k_server) || get_size(v, sn, &sp, "max_connections", 1, 10000000, &s->max_connections) ||
        get_size(v, sn, &sp, "max_header_bytes", 1024, 1 << 20, &s->max_header_bytes) ||
        get_size(v, sn, &sp, "max_body_bytes", 1024, (size_t)1 << 32, &s->max_body_bytes) ||
        get_ms(v, sn, &sp, "header_timeout_ms", &s->header_timeout_ms) ||
        get_ms(v, sn, &sp, "body_timeout_ms", &s->body_timeout_ms) ||
        get_ms(v, sn, &sp, "idle_timeout_ms", &s->idle_timeout_ms) ||
        get_ms(v, sn, &sp, "write_timeout_ms", &s->write_timeout_ms) ||
        get_u32(v, sn, &sp, "shutdown_grace_ms", 0, MAX_MS, &s->shutdown_grace_ms))
        return -1;

    const node *un = mget(root, "upstream");
    vpath up = {NULL, "upstream", -1};
    if (map_check(v, un, &up, k_upstream) || read_bounds(v, un, &up, &c->upstream)) return -1;

    const node *rsn = mget(root, "responses");
    vpath rsp = {NULL, "responses", -1};
    if (map_check(v, rsn, &rsp, k_responses) ||
        get_size(v, rsn, &rsp, "max_count", 0, 100000000, &c->responses.max_count) ||
        get_size(v, rsn, &rsp, "max_bytes", 0, (size_t)1 << 40, &c->responses.max_bytes) ||
        get_u32(v, rsn, &rsp, "max_age_s", 1, 365u * 86400, &c->responses.max_age_s))
        return -1;
    int backend = c->responses.memory ? 1 : 0;
    if (get_enum(v, rsn, &rsp, "backend", k_responses_backend, &backend)) return -1;
    c->responses.memory = backend == 1;

    const node *bn = mget(root, "circuit_breaker");
    vpath bp = {NULL, "circuit_breaker", -1};
    gw_breaker *b = &c->circuit_breaker;
    if (map_check(v, bn, &bp, k_breaker) || get_int(v, bn, &bp, "failures", 1, 1000000, &b->failures) ||
        get_ms(v, bn, &bp, "window_ms", &b->window_ms) || get_ms(v, bn, &bp, "cooldown_ms", &b->cooldown_ms) ||
        get_ms(v, bn, &bp, "max_cooldown_ms", &b->max_cooldown_ms) ||
        get_size(v, bn, &bp, "max_targets", 16, 10000000, &b->max_targets))
        return -1;
    if (b->max_cooldown_ms < b->cooldown_ms) {
        const node *m = mget(bn, "max_cooldown_ms");
        vpath mp = {&bp, m ? "max_cooldown_ms" : "cooldown_ms", -1};
        return verr(v, (m ? m : mget(bn, "cooldown_ms"))->line, &mp, "max_cooldown_ms (%u) is below cooldown_ms (%u)",
                    b->max_cooldown_ms, b->cooldown_ms);
    }

    const node *stn = mget(root, "state");
    vpath stp = {NULL, "state", -1};
    gw_state *st = &c->state;
    int on_err = st->fail_open ? 0 : 1;
    if (map_check(v, stn, &stp, k_state) || get_str(v, stn, &stp, "redis", S_SECRET, &st->redis_url) ||
        get_enum(v, stn, &stp, "on_redis_error", k_on_error, &on_err) ||
        get_str(v, stn, &stp, "key_prefix", S_EMPTY_OK, &st->key_prefix) ||
        get_ms(v, stn, &stp, "timeout_ms", &st->timeout_ms))
        return -1;
    st->fail_open = on_err == 0;
    if (st->redis_url) {
        static const char *const schemes[] = {"redis", "rediss", "unix", NULL};
        const char *why = url_problem(st->redis_url, schemes);
        vpath rp = {&stp, "redis", -1};
        if (why) return verr(v, mget(stn, "redis")->line, &rp, "%s (redis://, rediss:// or unix://; value not shown)", why);
    }

    const node *aln = mget(root, "alerts");
    vpath alp = {NULL, "alerts", -1};
    if (map_check(v, aln, &alp, k_alerts) || get_url(v, aln, &alp, "webhook_url", &c->alerts.webhook_url) ||
        get_ms(v, aln, &alp, "timeout_ms", &c->alerts.timeout_ms) || get_int(v, aln, &alp, "retries", 0, 10, &c->alerts.retries))
        return -1;

    const node *ldn = mget(root, "ledger");
    vpath ldp = {NULL, "ledger", -1};
    gw_ledger *l = &c->ledger;
    if (map_check(v, ldn, &ldp, k_ledger)) return -1;
    const node *sq = mget(ldn, "sqlite"), *pg = mget(ldn, "postgres");
    if (present(sq) && present(pg)) return verr(v, pg->line, &ldp, "give sqlite or postgres, not both");
    if (get_str(v, ldn, &ldp, "sqlite", S_PATH, &l->sqlite_path) ||
        get_str(v, ldn, &ldp, "postgres", S_SECRET, &l->postgres_url) ||
        get_str(v, ldn, &ldp, "spool_dir", S_PATH, &l->spool_dir) || get_ms(v, ldn, &ldp, "flush_ms", &l->flush_ms) ||
        get_u32(v, ldn, &ldp, "batch_max", 1, 1000000, &l->batch_max))
        return -1;
    if (present(pg)) {
        l->kind = GW_LEDGER_POSTGRES;
        l->sqlite_path = NULL;
        static const char *const schemes[] = {"postgresql", "postgres", NULL};
        vpath pp = {&ldp, "postgres", -1};
        if (strstr(l->postgres_url, "://") ? url_problem(l->postgres_url, schemes) != NULL : !strchr(l->postgres_url, '='))
            return verr(v, pg->line, &pp, "expected postgresql://... or a key=value conninfo (value not shown)");
    }

    if (read_tracing(v, root)) return -1;

    const node *pfn = mget(root, "price_files");
    vpath pfp = {NULL, "price_files", -1};
    if (seq_check(v, pfn, &pfp)) return -1;
    if (present(pfn)) {
        c->price_files = arena_alloc(v->ca, (pfn->n ? pfn->n : 1) * sizeof *c->price_files);
        for (size_t i = 0; i < pfn->n; i++) {
            vpath ep = {&pfp, NULL, (long)i};
            if (read_str(v, pfn->items[i], &ep, S_PATH, &c->price_files[c->n_price_files], NULL)) return -1;
            c->n_price_files++;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* loading, references */

typedef struct config_box {
    atomic_long refs;
    arena a;
    gw_config cfg;
} config_box;

static config_box *box_of(gw_config *c) { return (config_box *)((char *)c - offsetof(config_box, cfg)); }

static char *read_file(const char *path, size_t *len, sg_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        sg_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    sg_buf b;
    sg_buf_init(&b);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > MAX_FILE_BYTES) {
            fclose(f);
            explicit_bzero(b.data, b.len);
            sg_buf_free(&b);
            sg_fail(err, "%s: larger than %u bytes", path, MAX_FILE_BYTES);
            return NULL;
        }
        sg_buf_append(&b, chunk, n);
    }
    explicit_bzero(chunk, sizeof chunk);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        if (b.data) explicit_bzero(b.data, b.len);
        sg_buf_free(&b);
        sg_fail(err, "%s: read error", path);
        return NULL;
    }
    *len = b.len;
    if (!b.data) sg_buf_reserve(&b, 0);
    return sg_buf_steal(&b);
}

/* Remote providers take the upstream: section's bounds where they set none. */
static void inherit_bounds(gw_config *c) {
    for (size_t i = 0; i < c->n_providers; i++) {
        gw_bounds *b = &c->providers[i].bounds;
        if (!b->max_response_bytes) b->max_response_bytes = c->upstream.max_response_bytes;
        if (!b->max_sse_line_bytes) b->max_sse_line_bytes = c->upstream.max_sse_line_bytes;
        if (!b->max_header_bytes) b->max_header_bytes = c->upstream.max_header_bytes;
    }
}

/* The redaction set: every secret this configuration holds (redact.h). */
static void collect_secrets(gw_config *c) {
    redact_set *s = redact_new();
    for (size_t i = 0; i < c->n_providers; i++) {
        const gw_provider *p = &c->providers[i];
        if (p->api_key) redact_add(s, p->api_key, strlen(p->api_key));
        for (size_t j = 0; j < p->n_headers; j++) redact_add(s, p->headers[j].value, strlen(p->headers[j].value));
    }
    for (size_t i = 0; i < c->n_keys; i++) redact_add_sha256(s, c->keys[i].sha256);
    redact_add_dsn(s, c->state.redis_url);
    redact_add_dsn(s, c->ledger.postgres_url);
    for (size_t j = 0; j < c->tracing.n_headers; j++)
        if (*c->tracing.headers[j].value) redact_add(s, c->tracing.headers[j].value, strlen(c->tracing.headers[j].value));
    c->secrets = s;
}

int config_load_ex(gw_config **out, const char *path, const config_overrides *ov, const config_env *env, sg_error *err) {
    *out = NULL;
    config_box *box = sg_xcalloc(1, sizeof *box);
    atomic_init(&box->refs, 1);
    gw_config *c = &box->cfg;
    arena ta = {NULL};
    char *data = NULL;
    size_t len = 0;
    node *root = NULL;
    int rc = 0;
    config_defaults(c, env, &box->a);
    vctx v = {.file = path, .dir = "", .env = env, .err = err, .ta = &ta, .ca = &box->a, .cfg = c};
    if (path) {
        c->path = arena_strdup(&box->a, path);
        const char *slash = strrchr(path, '/');   /* the folder, with its '/' */
        v.dir = slash ? arena_strndup(&ta, path, (size_t)(slash - path) + 1) : "";
        data = read_file(path, &len, err);
        if (!data) rc = -1;
        if (!rc) rc = tree_parse(&ta, path, data, len, &root, err);
        if (!rc && present(root) && root->kind != N_MAP)
            rc = verr(&v, root->line, NULL, "the top level must be a mapping of keys (listen, providers, routes, ...)");
        if (!rc) rc = map_check(&v, root, NULL, k_top);
        c->empty = !present(root);
    }
    if (!rc) rc = read_top(&v, root);
    if (!rc) rc = read_providers(&v, root, ov);
    if (!rc) rc = read_models(&v, root);
    if (!rc) rc = read_routes(&v, root);
    if (!rc) rc = read_keys(&v, root);
    if (!rc) rc = read_dashboard(&v, root);
    if (!rc) rc = read_auth(&v, root);
    if (!rc) inherit_bounds(c);
    if (!rc) collect_secrets(c);
    if (!rc && ov && ov->listen) {
        const char *why = listen_problem(ov->listen);
        if (why) rc = sg_fail(err, "--listen: %s", why);
        else c->listen = arena_strdup(&box->a, ov->listen);
    }
    if (data) {
        explicit_bzero(data, len);
        free(data);
    }
    arena_free(&ta);
    if (rc) {
        redact_free(c->secrets);
        arena_free(&box->a);
        free(box);
        return -1;
    }
    *out = c;
    return 0;
}

int config_load(gw_config **out, const char *path, const config_env *env, sg_error *err) {
    if (!path) {
        *out = NULL;
        return sg_fail(err, "config_load: no path (config_default serves without a file)");
    }
    return config_load_ex(out, path, NULL, env, err);
}

int config_default(gw_config **out, const char *const *model_paths, size_t n, const config_env *env, sg_error *err) {
    config_overrides ov = {NULL, model_paths, n, 0, 0};
    return config_load_ex(out, NULL, &ov, env, err);
}

gw_config *config_ref(gw_config *c) {
    if (c) atomic_fetch_add_explicit(&box_of(c)->refs, 1, memory_order_relaxed);
    return c;
}

void config_unref(gw_config *c) {
    if (!c) return;
    config_box *box = box_of(c);
    if (atomic_fetch_sub_explicit(&box->refs, 1, memory_order_acq_rel) != 1) return;
    redact_free(c->secrets);
    arena_free(&box->a);
    free(box);
}

void config_free(gw_config *c) { config_unref(c); }

/* ------------------------------------------------------------------------------------ */
/* lookups and keys */

const gw_route *config_route(const gw_config *c, const char *name) {
    for (size_t i = 0; i < c->n_routes; i++)
        if (!strcmp(c->routes[i].name, name)) return &c->routes[i];
    return NULL;
}

const gw_provider *config_provider(const gw_config *c, const char *name) {
    return provider_n(c, name, strlen(name));
}

const gw_key *config_key_by_id(const gw_config *c, const char *id) {
    for (size_t i = 0; i < c->n_keys; i++)
        if (!strcmp(c->keys[i].id, id)) return &c->keys[i];
    return NULL;
}

const gw_model_info *config_model_info(const gw_config *c, const gw_provider *p, const char *model) {
    for (size_t i = 0; i < c->n_models; i++)
        if (c->models[i].provider == p && !strcmp(c->models[i].model, model)) return &c->models[i];
    return NULL;
}

int config_key_hash(const void *key, size_t len, uint8_t out[GW_SHA256_LEN]) {
    unsigned int n = 0;
    if (!EVP_Digest(key, len, out, &n, EVP_sha256(), NULL) || n != GW_SHA256_LEN) {
        memset(out, 0, GW_SHA256_LEN);
        return -1;
    }
    return 0;
}

const gw_key *config_key_find_hash(const gw_config *c, const uint8_t hash[GW_SHA256_LEN]) {
    const gw_key *found = NULL;
    for (size_t i = 0; i < c->n_keys; i++) {   /* every key, no early exit */
        int diff = CRYPTO_memcmp(c->keys[i].sha256, hash, GW_SHA256_LEN);
        if (!diff && !found) found = &c->keys[i];
    }
    return found;
}

const gw_key *config_key_find(const gw_config *c, const char *presented, size_t len) {
    uint8_t h[GW_SHA256_LEN];
    if (!presented || config_key_hash(presented, len, h)) return NULL;
    const gw_key *k = config_key_find_hash(c, h);
    explicit_bzero(h, sizeof h);
    return k;
}

bool config_key_allows(const gw_key *k, const gw_resolved *r) {
    if (k->role == GW_ROLE_METRICS) return false;
    if (k->all_routes) return true;
    if (!r->route) return false;   /* a key with a routes: list cannot name models directly */
    for (size_t i = 0; i < k->n_routes; i++)
        if (k->routes[i] == r->route) return true;
    return false;
}

bool config_key_sees_all(const gw_key *k) { return !k || k->role == GW_ROLE_ADMIN; }
bool config_key_reads_metrics(const gw_key *k) { return !k || k->role != GW_ROLE_USER; }
bool config_key_uses_direct(const gw_key *k) { return !k || (k->role != GW_ROLE_METRICS && k->all_routes); }

bool config_key_uses_route(const gw_key *k, const gw_route *r) {
    return !k || config_key_allows(k, &(gw_resolved){.route = r});
}

void config_describe_served(const gw_config *c, const gw_key *k, sg_buf *out) {
    enum { MAX_NAMES = 12 };   /* per kind; the rest is counted (GET /v1/models lists all) */
    size_t parts = 0;
    if (config_key_uses_direct(k)) {   /* local models first: what `smollm3` most likely meant */
        size_t n = 0, more = 0;
        for (size_t i = 0; i < c->n_providers; i++) {
            const gw_provider *p = &c->providers[i];
            if (!p->configured || !p->entry->in_process) continue;
            for (size_t m = 0; m < p->local.n_models; m++) {
                if (n == MAX_NAMES) { more++; continue; }
                const gw_local_model *lm = &p->local.models[m];
                sg_buf_printf(out, "%s%s/%s", n++ ? ", " : "local models: ", p->name, lm->alias ? lm->alias : lm->name);
            }
        }
        if (more) sg_buf_printf(out, " and %zu more", more);
        parts += n > 0;
    }
    size_t n = 0, more = 0;
    for (size_t i = 0; i < c->n_routes; i++) {
        if (!config_key_uses_route(k, &c->routes[i])) continue;
        if (n == MAX_NAMES) { more++; continue; }
        sg_buf_printf(out, "%s%s", n++ ? ", " : parts ? "; routes: " : "routes: ", c->routes[i].name);
    }
    if (more) sg_buf_printf(out, " and %zu more (GET /v1/models)", more);
    parts += n > 0;
    if (config_key_uses_direct(k)) {
        n = 0;
        for (size_t i = 0; i < c->n_providers && n < MAX_NAMES; i++) {
            const gw_provider *p = &c->providers[i];
            if (!p->configured || p->entry->in_process) continue;
            sg_buf_printf(out, "%s%s", n++ ? ", " : parts ? "; or PROVIDER/MODEL for: " : "PROVIDER/MODEL for: ", p->name);
        }
        parts += n > 0;
    }
    if (!parts && config_key_uses_direct(k))
        sg_buf_puts(out, "nothing: no route, no local model and no provider key is configured "
                         "(`smolgate pull smollm3`, or set OPENAI_API_KEY / ANTHROPIC_API_KEY / GEMINI_API_KEY)");
    else if (!parts)
        sg_buf_puts(out, "nothing (this key has no routes)");
}

const char *config_key_role_name(gw_key_role r) {
    return (unsigned)r < sizeof k_roles / sizeof k_roles[0] - 1 ? k_roles[r] : "?";
}

gw_limits config_key_route_limits(const gw_key *k, const gw_route *r) {
    for (size_t i = 0; i < k->n_route_limits; i++)
        if (k->route_limits[i].route == r) return k->route_limits[i].limits;
    return r->per_key_limits;
}

/* ------------------------------------------------------------------------------------ */
/* reload rules */

static bool str_same(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

bool config_state_same_store(const gw_state *a, const gw_state *b) {
    if (!a->redis_url && !b->redis_url) return true;   /* in-process: no prefix in use */
    return str_same(a->redis_url, b->redis_url) && str_same(a->key_prefix, b->key_prefix);
}

bool config_ledger_equal(const gw_ledger *a, const gw_ledger *b) {
    return a->kind == b->kind && str_same(a->sqlite_path, b->sqlite_path) && str_same(a->postgres_url, b->postgres_url) &&
           str_same(a->spool_dir, b->spool_dir) && a->flush_ms == b->flush_ms && a->batch_max == b->batch_max;
}

bool config_tracing_equal(const gw_tracing *a, const gw_tracing *b) {
    if (!str_same(a->endpoint, b->endpoint) || !str_same(a->service_name, b->service_name) ||
        a->sample_ratio != b->sample_ratio || a->batch_max != b->batch_max || a->queue_max != b->queue_max ||
        a->flush_ms != b->flush_ms || a->timeout_ms != b->timeout_ms || a->max_retries != b->max_retries ||
        a->protobuf != b->protobuf || a->n_headers != b->n_headers)
        return false;
    for (size_t i = 0; i < a->n_headers; i++)
        if (strcmp(a->headers[i].name, b->headers[i].name) || strcmp(a->headers[i].value, b->headers[i].value)) return false;
    return true;
}

static const gw_local_model *local_model_named(const gw_config *c, const char *name) {
    for (size_t i = 0; i < c->n_providers; i++) {
        const gw_provider *p = &c->providers[i];
        if (!p->entry->in_process || !p->configured) continue;
        for (size_t k = 0; k < p->local.n_models; k++)
            if (!strcmp(p->local.models[k].name, name)) return &p->local.models[k];
    }
    return NULL;
}

int config_reload_check(const gw_config *run, const gw_config *next, sg_error *err) {
    const char *file = next->path ? next->path : "the configuration";
    if (next->empty)
        return sg_fail(err, "%s is empty: it would fall back to the defaults (no routes, no gateway keys); "
                            "write `auth: none` in a file to serve without keys on purpose", file);
    if (run->n_keys && !next->n_keys && !next->auth_none)
        return sg_fail(err, "%s lists no gateway keys while %zu are required now: every client would be let in "
                            "(keys); write `auth: none` to turn authentication off on purpose", file, run->n_keys);
    if (strcmp(run->listen, next->listen))
        return sg_fail(err, "listen: changed from %s to %s; a new address needs a restart", run->listen, next->listen);
    const gw_server *a = &run->server, *b = &next->server;
    static const char *const names[] = {"max_connections", "max_header_bytes", "max_body_bytes", "header_timeout_ms",
                                        "body_timeout_ms", "idle_timeout_ms", "write_timeout_ms"};
    const bool changed[] = {a->max_connections != b->max_connections, a->max_header_bytes != b->max_header_bytes,
                            a->max_body_bytes != b->max_body_bytes, a->header_timeout_ms != b->header_timeout_ms,
                            a->body_timeout_ms != b->body_timeout_ms, a->idle_timeout_ms != b->idle_timeout_ms,
                            a->write_timeout_ms != b->write_timeout_ms};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (changed[i]) return sg_fail(err, "server.%s: changed; the HTTP server's bounds need a restart", names[i]);
    for (size_t i = 0; i < next->n_providers; i++) {
        const gw_provider *np = &next->providers[i];
        if (!np->entry->in_process || !np->configured) continue;
        const gw_provider *op = config_provider(run, np->name);
        if (op && op->configured && op->entry->in_process &&
            (op->local.threads != np->local.threads || op->local.queue != np->local.queue ||
             op->local.ctx != np->local.ctx || op->local.parallel != np->local.parallel ||
             op->local.draft != np->local.draft))
            return sg_fail(err, "providers.%s: threads, queue, ctx, parallel or draft changed; the loaded engines need a restart",
                           np->name);
        for (size_t k = 0; k < np->local.n_models; k++) {
            const gw_local_model *om = local_model_named(run, np->local.models[k].name);
            if (om && strcmp(om->path, np->local.models[k].path))
                return sg_fail(err, "providers.%s.models.%s: another file under a loaded model's name needs a restart",
                               np->name, np->local.models[k].name);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* summary */

/* A URL with any user:password@ replaced, for logs. */
static void put_url(sg_buf *b, const char *u) {
    const char *s = strstr(u, "://");
    if (!s) { sg_buf_puts(b, "(set)"); return; }
    s += 3;
    size_t host_end = strcspn(s, "/?#");
    const char *at = memchr(s, '@', host_end);
    if (!at) { sg_buf_puts(b, u); return; }
    sg_buf_append(b, u, (size_t)(s - u));
    sg_buf_puts(b, "***");
    sg_buf_puts(b, at);
}

static void put_limits(sg_buf *b, const char *what, const gw_limits *l) {
    if (l->rpm < 0 && l->tpm < 0 && l->concurrency < 0) return;
    sg_buf_printf(b, ", %s", what);
    if (l->rpm >= 0) sg_buf_printf(b, " rpm %lld", (long long)l->rpm);
    if (l->tpm >= 0) sg_buf_printf(b, " tpm %lld", (long long)l->tpm);
    if (l->concurrency >= 0) sg_buf_printf(b, " concurrency %lld", (long long)l->concurrency);
}

static void put_usd(sg_buf *b, const char *what, int64_t micro) {
    if (micro >= 0) sg_buf_printf(b, " %s $%lld.%06lld", what, (long long)(micro / 1000000), (long long)(micro % 1000000));
}

static void put_budget(sg_buf *b, const gw_budget *g) {
    if (g->daily_usd < 0 && g->monthly_usd < 0 && g->total_usd < 0) return;
    sg_buf_puts(b, ", budget");
    put_usd(b, "daily", g->daily_usd);
    put_usd(b, "monthly", g->monthly_usd);
    put_usd(b, "total", g->total_usd);
}

void config_describe(const gw_config *c, sg_buf *b) {
    sg_buf_printf(b, "config: %s\n", c->path ? c->path : "(embedded defaults)");
    sg_buf_printf(b, "listen %s, log_level %s, direct model ids %s, %zu key(s)%s\n", c->listen,
                  k_levels[c->log_level], c->direct ? "on" : "off", c->n_keys,
                  c->n_keys ? "" : c->auth_none ? " (auth: none, no key required)" : " (no key required)");
    for (size_t i = 0; i < c->n_providers; i++) {
        const gw_provider *p = &c->providers[i];
        if (!p->configured && !p->declared) continue;
        sg_buf_printf(b, "provider %s (%s)", p->name, config_provider_type_name(p->type));
        if (p->entry->in_process) {
            for (size_t j = 0; j < p->local.n_models; j++) {
                const gw_local_model *m = &p->local.models[j];
                sg_buf_printf(b, "%s %s", j ? "," : ":", m->name);
                if (m->alias) sg_buf_printf(b, " (also %s)", m->alias);
                sg_buf_printf(b, " = %s", m->path);
            }
        } else {
            sg_buf_putc(b, ' ');
            put_url(b, p->base_url);
            sg_buf_printf(b, ", key %s", p->api_key ? "set" : "none");
            if (p->n_headers) sg_buf_printf(b, ", %zu extra header(s)", p->n_headers);
        }
        put_limits(b, "limits", &p->limits);
        sg_buf_putc(b, '\n');
    }
    for (size_t i = 0; i < c->n_routes; i++) {
        const gw_route *r = &c->routes[i];
        sg_buf_printf(b, "route %s:", r->name);
        for (size_t j = 0; j < r->n_targets; j++) {
            const gw_target *t = &r->targets[j];
            bool grouped = (j > 0 && r->targets[j - 1].group == t->group) ||
                           (j + 1 < r->n_targets && r->targets[j + 1].group == t->group);
            sg_buf_printf(b, "%s %s/%s", j ? (grouped && r->targets[j - 1].group == t->group ? " |" : " ->") : "",
                          t->provider->name, t->model);
            if (grouped) sg_buf_printf(b, " (weight %u)", t->weight);
        }
        put_limits(b, "limits", &r->limits);
        put_budget(b, &r->budget);
        sg_buf_putc(b, '\n');
    }
    for (size_t i = 0; i < c->n_keys; i++) {
        const gw_key *k = &c->keys[i];
        sg_buf_printf(b, "key %s (%s): ", k->id, config_key_role_name(k->role));
        if (k->role == GW_ROLE_METRICS) sg_buf_puts(b, "GET /metrics only");
        else if (k->all_routes) sg_buf_puts(b, "all routes and models");
        for (size_t j = 0; j < k->n_routes; j++) sg_buf_printf(b, "%s%s", j ? ", " : "routes ", k->routes[j]->name);
        put_limits(b, "limits", &k->limits);
        put_budget(b, &k->budget);
        sg_buf_putc(b, '\n');
    }
    if (c->state.redis_url) {
        sg_buf_puts(b, "state: redis ");
        put_url(b, c->state.redis_url);
        sg_buf_printf(b, " (when unreachable: %s)\n", c->state.fail_open ? "admit" : "refuse");
    } else {
        sg_buf_puts(b, "state: in-process\n");
    }
    if (c->ledger.kind == GW_LEDGER_POSTGRES) sg_buf_printf(b, "ledger: postgres (spool %s)\n", c->ledger.spool_dir);
    else sg_buf_printf(b, "ledger: sqlite %s\n", c->ledger.sqlite_path);
}
