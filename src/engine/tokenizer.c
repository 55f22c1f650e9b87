/* tokenizer.c: byte-level BPE, token for token what Hugging Face `tokenizers` gives for
 * the Llama-3 vocabulary SmolLM3 uses (and the GPT-2-style one of SmolLM2).
 *
 * Pipeline, as in `tokenizers`: added tokens are cut out first (leftmost-longest match),
 * each remaining segment goes through the pre-tokenizer's regex stages (each stage splits
 * every piece of the one before, keeping both matches and the gaps between them), and each
 * final piece is merged by rank, exactly as tokenizers' Word::merge_all does it (a min-heap
 * of (rank, position), stale entries skipped), so ties and odd vocabularies come out the
 * same. With ignore_merges a piece that is itself in the vocabulary is emitted whole.
 *
 * BPE runs on raw bytes, not on the GPT-2 byte-to-unicode strings the files use: the
 * mapping is a bijection, so every vocabulary string is turned into its bytes once at load
 * time and encoding never maps characters.
 *
 * Why PCRE2: `tokenizers` runs the split pattern with Oniguruma, a backtracking Perl-style
 * engine; PCRE2 is the packaged engine with the same semantics for everything these
 * patterns use (ordered alternation, lazy/greedy repeats, lookahead, \p{L}/\p{N}, scoped
 * (?i:...) with Unicode case folding) and a JIT that keeps a megabyte of text well under a
 * second. POSIX regex has no \p{..} or lookahead, and a hand-written splitter would fix
 * the pattern in code when tokenizer.json carries it as data. Where the two engines read
 * an escape differently (\s: PCRE2 also matches U+180E; \w, \h) the pattern is rewritten
 * to Oniguruma's meaning before compiling (see pattern_rewrite).
 *
 * Invalid UTF-8: `tokenizers` only sees valid strings, so there is no reference. Each
 * maximal run of bytes that are not valid UTF-8 becomes a piece of its own, skipping the
 * regex, and is merged like any piece (the byte tokens always exist), so decode(encode(x))
 * gives x back for any bytes. The valid text around such a run is split as if the run
 * were the end or start of the text.
 *
 * Not supported (load error rather than wrong ids): normalizers, pre-tokenizers other than
 * Split (Isolated), ByteLevel, Digits and Sequence, non-BPE models. Added tokens' lstrip,
 * rstrip and single_word flags are ignored (false for every token of the models we run). */
#include "engine/tokenizer.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/mapfile.h"

/* The split patterns, as tokenizers writes them. */
static const char PAT_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum { MAX_STAGES = 8 };
/* Ids past this many times the number of entries (plus slack) are taken as hostile: the
 * id table is allocated up to the largest id. */
enum { ID_SLACK = 1024 };

/* ---------------------------------------------------------------------------------- */
/* Hash maps.                                                                           */

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;                  /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

/* String -> id, keys stored in the tokenizer's pool (by offset: the pool grows). */
typedef struct strmap_slot {
    uint32_t hash, off, len;
    int32_t val;                /* -1: empty */
} strmap_slot;
typedef struct strmap {
    strmap_slot *slots;
    size_t mask, n;
} strmap;

/* Linear probing, kept at most 3/4 full. */
static void strmap_init(strmap *m, size_t expect) {
    size_t cap = pow2_at_least(expect / 3 * 4 + 4);
    m->slots = sg_xmalloc(cap * sizeof *m->slots);
    for (size_t i = 0; i < cap; i++) m->slots[i].val = -1;
    m->mask = cap - 1;
    m->n = 0;
}

static void strmap_free(strmap *m) { free(m->slots); m->slots = NULL; }

static int32_t strmap_get(const strmap *m, const char *pool, const void *key, size_t n) {
    if (!m->slots) return -1;
    uint64_t h = hash_bytes(key, n);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const strmap_slot *s = &m->slots[i];
        if (s->val < 0) return -1;
        if (s->hash == (uint32_t)h && s->len == n && memcmp(pool + s->off, key, n) == 0)
            return s->val;
    }
}

static void strmap_grow(strmap *m);

/* Inserts or overwrites (a later entry wins, like a HashMap built from a list). */
static void strmap_put(strmap *m, const char *pool, uint32_t off, uint32_t len, int32_t val) {
    if ((m->n + 1) * 4 > (m->mask + 1) * 3) strmap_grow(m);
    uint64_t h = hash_bytes(pool + off, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        strmap_slot *s = &m->slots[i];
        if (s->val < 0) {
            *s = (strmap_slot){(uint32_t)h, off, len, val};
            m->n++;
            return;
        }
        if (s->hash == (uint32_t)h && s->len == len && memcmp(pool + s->off, pool + off, len) == 0) {
            s->val = val;
            return;
        }
    }
}

static void strmap_grow(strmap *m) {
    strmap old = *m;
    size_t cap = (old.mask + 1) * 2;
    m->slots = sg_xmalloc(cap * sizeof *m->slots);
    for (size_t i = 0; i < cap; i++) m->slots[i].val = -1;
    m->mask = cap - 1;
    for (size_t i = 0; i <= old.mask; i++) {
        strmap_slot s = old.slots[i];
        if (s.val < 0) continue;
        size_t j = s.hash & m->mask;
        while (m->slots[j].val >= 0) j = (j + 1) & m->mask;
        m->slots[j] = s;
    }
    free(old.slots);
}

/* (left id, right id) -> (rank, merged id). */
typedef struct merge_slot {
    uint64_t key;               /* UINT64_MAX: empty */
    uint32_t rank;
    int32_t new_id;
} merge_slot;
typedef struct mergemap {
    merge_slot *slots;
    size_t mask;
} mergemap;

static uint64_t merge_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }
static size_t merge_hash(uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 20); }

static void mergemap_init(mergemap *m, size_t expect) {   /* expect: an upper bound */
    size_t cap = pow2_at_least(expect / 3 * 4 + 4);
    m->slots = sg_xmalloc(cap * sizeof *m->slots);
    for (size_t i = 0; i < cap; i++) m->slots[i].key = UINT64_MAX;
    m->mask = cap - 1;
}

static void mergemap_put(mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    uint64_t k = merge_key(a, b);
    for (size_t i = merge_hash(k) & m->mask;; i = (i + 1) & m->mask) {
        merge_slot *s = &m->slots[i];
        if (s->key == UINT64_MAX || s->key == k) {   /* a repeated pair keeps the later rank */
            *s = (merge_slot){k, rank, new_id};
            return;
        }
    }
}

static const merge_slot *mergemap_get(const mergemap *m, int32_t a, int32_t b) {
    if (!m->slots) return NULL;
    uint64_t k = merge_key(a, b);
    for (size_t i = merge_hash(k) & m->mask;; i = (i + 1) & m->mask) {
        const merge_slot *s = &m->slots[i];
        if (s->key == k) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

/* ---------------------------------------------------------------------------------- */
/* The tokenizer.                                                                       */

typedef struct tok_entry {
    uint32_t text_off, text_len;    /* the string as the file writes it */
    uint32_t raw_off, raw_len;      /* the bytes it decodes to */
    uint8_t type;                   /* TOK_*; 0: no token has this id */
    uint8_t added;                  /* an added token: matched in the text before splitting */
    uint8_t normalized;             /* added token matched in the second pass (see split_added) */
} tok_entry;

typedef struct trie_node {
    int32_t child, sibling;         /* first child, next sibling; -1 none */
    int32_t id;                     /* added token ending here, -1 none */
    unsigned char byte;
} trie_node;

typedef struct tok_stage {
    pcre2_code *re;                 /* NULL: no split at this stage */
    bool prefix_space;              /* ByteLevel add_prefix_space: prepend ' ' to each piece */
} tok_stage;

struct sg_tokenizer {
    size_t n_vocab;
    tok_entry *tok;                 /* (n_vocab) */
    sg_buf pool;                    /* every string, addressed by offset */
    strmap bpe;                     /* raw bytes -> id: the model vocabulary merges can reach */
    strmap content;                 /* file string -> id, for tok_find (added tokens win) */
    mergemap merges;
    int32_t byte_id[256];           /* the single-byte token of each byte, -1 none */
    bool ignore_merges;
    tok_stage stages[MAX_STAGES];
    size_t n_stages;
    trie_node *trie;                /* added tokens; node 0 is the root */
    size_t n_trie, cap_trie;
    int32_t trie_first[256];        /* the root's child for each first byte, -1 none */
    bool has_pass[2];               /* some added token is matched in pass 0 / 1 */
    int32_t bos, eos;
    char *chat_template;
};

static uint32_t pool_add(sg_tokenizer *t, const void *s, size_t n) {
    uint32_t off = (uint32_t)t->pool.len;
    sg_buf_append(&t->pool, s, n);
    return off;
}

/* The byte a GPT-2 byte-level character stands for, or -1. Printable Latin-1 bytes stand
 * for themselves; the other 68 bytes, in order, are U+0100..U+0143. */
static int byte_of_char(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp < 0x100 || cp >= 0x100 + 68) return -1;
    uint32_t i = cp - 0x100;
    if (i < 33) return (int)i;                  /* 0x00..0x20 */
    if (i < 67) return (int)(0x7F + (i - 33));  /* 0x7F..0xA0 */
    return 0xAD;
}

/* ---------------------------------------------------------------------------------- */
/* UTF-8.                                                                               */

enum { U8_OK, U8_TRUNC, U8_BAD };

/* Classifies the sequence starting at p[0] (n >= 1 bytes available) by the rules of
 * Unicode table 3-7. U8_OK: *len is the character's length. U8_TRUNC: all n bytes are a
 * valid start of a longer character. U8_BAD: *len bytes are a maximal invalid subpart
 * (what one U+FFFD replaces, as Rust's from_utf8_lossy and WHATWG do). */
static int utf8_classify(const unsigned char *p, size_t n, size_t *len) {
    unsigned c = p[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) { *len = 1; return U8_OK; }
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else { *len = 1; return U8_BAD; }
    for (size_t k = 1; k < need; k++) {
        if (k >= n) { *len = n; return U8_TRUNC; }
        unsigned b = p[k];
        if (b < lo || b > hi) { *len = k; return U8_BAD; }
        lo = 0x80; hi = 0xBF;
    }
    *len = need;
    return U8_OK;
}

/* Decodes one character of valid UTF-8; returns its length. */
static size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp) {
    size_t len;
    if (utf8_classify(p, n, &len) != U8_OK) return 0;
    switch (len) {
    case 1: *cp = p[0]; break;
    case 2: *cp = (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F); break;
    case 3: *cp = (uint32_t)(p[0] & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F); break;
    default:
        *cp = (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 |
              (uint32_t)(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
    }
    return len;
}

/* Turns a byte-level string into the bytes it stands for. Returns -1 (out untouched past
 * its old length) when some character is outside the 256-character alphabet. */
static int byte_level_decode(const char *s, size_t n, sg_buf *out) {
    size_t start = out->len;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_decode(p + i, n - i, &cp);
        int b = l ? byte_of_char(cp) : -1;
        if (b < 0) { out->len = start; if (out->data) out->data[start] = 0; return -1; }
        sg_buf_putc(out, (char)b);
        i += l;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Building.                                                                            */

static sg_tokenizer *tok_alloc(size_t n_vocab, size_t n_merges) {
    sg_tokenizer *t = sg_xcalloc(1, sizeof *t);
    t->n_vocab = n_vocab;
    t->tok = sg_xcalloc(n_vocab ? n_vocab : 1, sizeof *t->tok);
    sg_buf_init(&t->pool);
    sg_buf_reserve(&t->pool, n_vocab * 16);
    strmap_init(&t->bpe, n_vocab);
    strmap_init(&t->content, n_vocab);
    mergemap_init(&t->merges, n_merges);
    t->bos = t->eos = -1;
    t->cap_trie = 64;
    t->trie = sg_xmalloc(t->cap_trie * sizeof *t->trie);
    t->trie[0] = (trie_node){-1, -1, -1, 0};
    t->n_trie = 1;
    memset(t->trie_first, 0xFF, sizeof t->trie_first);
    return t;
}

void tok_free(sg_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_stages; i++) pcre2_code_free(t->stages[i].re);
    strmap_free(&t->bpe);
    strmap_free(&t->content);
    free(t->merges.slots);
    free(t->tok);
    free(t->trie);
    sg_buf_free(&t->pool);
    free(t->chat_template);
    free(t);
}

static int pool_check(sg_tokenizer *t, size_t more, sg_error *err) {
    if (t->pool.len + more >= UINT32_MAX / 2) return sg_fail(err, "vocabulary strings too large");
    return 0;
}

/* A model-vocabulary token: its bytes come from the byte-level alphabet; one that is not
 * in the alphabet decodes to its own UTF-8 (as tokenizers' ByteLevel decoder does) and
 * cannot be produced by BPE, which only ever sees byte-level strings. */
static int set_model_token(sg_tokenizer *t, int32_t id, const char *s, size_t n, int type, sg_error *err) {
    if (pool_check(t, 2 * n, err)) return -1;
    tok_entry *e = &t->tok[id];
    e->text_off = pool_add(t, s, n);
    e->text_len = (uint32_t)n;
    e->raw_off = (uint32_t)t->pool.len;
    bool in_alphabet = byte_level_decode(s, n, &t->pool) == 0;
    if (!in_alphabet) pool_add(t, s, n);
    e->raw_len = (uint32_t)(t->pool.len - e->raw_off);
    e->type = (uint8_t)type;
    e->added = 0;
    if (in_alphabet) strmap_put(&t->bpe, t->pool.data, e->raw_off, e->raw_len, id);
    strmap_put(&t->content, t->pool.data, e->text_off, e->text_len, id);
    return 0;
}

static void trie_insert(sg_tokenizer *t, const unsigned char *s, size_t n, int32_t id) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = t->trie[node].child;
        while (c >= 0 && t->trie[c].byte != s[i]) c = t->trie[c].sibling;
        if (c < 0) {
            if (t->n_trie == t->cap_trie) {
                t->cap_trie *= 2;
                t->trie = sg_xrealloc(t->trie, t->cap_trie * sizeof *t->trie);
            }
            c = (int32_t)t->n_trie++;
            t->trie[c] = (trie_node){-1, t->trie[node].child, -1, s[i]};
            t->trie[node].child = c;
            if (node == 0) t->trie_first[s[i]] = c;
        }
        node = c;
    }
    t->trie[node].id = id;                  /* the same content twice: the later id wins */
}

/* An added token: matched in the text before splitting; decodes to its content as is
 * (tokenizers emits added tokens' content without the decoder). */
static int set_added_token(sg_tokenizer *t, int32_t id, const char *s, size_t n, bool special,
                           bool normalized, sg_error *err) {
    if (n == 0) return sg_fail(err, "added token %d has empty content", (int)id);
    if (pool_check(t, n, err)) return -1;
    tok_entry *e = &t->tok[id];
    e->text_off = e->raw_off = pool_add(t, s, n);
    e->text_len = e->raw_len = (uint32_t)n;
    e->type = special ? TOK_CONTROL : TOK_USER_DEFINED;
    e->added = 1;
    e->normalized = normalized;
    strmap_put(&t->content, t->pool.data, e->text_off, e->text_len, id);
    trie_insert(t, (const unsigned char *)s, n, id);
    t->has_pass[normalized ? 1 : 0] = true;
    return 0;
}

/* Records merge `rank` of a and b. Parts outside the byte-level alphabet can never meet
 * in a byte-level word, so such a merge is dropped. A part or result missing from the
 * vocabulary is an error when strict (tokenizers refuses such a tokenizer.json); from
 * GGUF it is dropped, as llama.cpp loads such files (reference/llama-tiny's placeholder
 * vocabulary has one) and the merge can never apply anyway. */
static int add_merge(sg_tokenizer *t, size_t rank, const char *a, size_t na, const char *b, size_t nb,
                     bool strict, sg_buf *tmp, sg_error *err) {
    sg_buf_reset(tmp);
    if (byte_level_decode(a, na, tmp) < 0) return 0;
    size_t ra = tmp->len;
    if (byte_level_decode(b, nb, tmp) < 0) return 0;
    int32_t ia = strmap_get(&t->bpe, t->pool.data, tmp->data, ra);
    int32_t ib = strmap_get(&t->bpe, t->pool.data, tmp->data + ra, tmp->len - ra);
    int32_t ic = strmap_get(&t->bpe, t->pool.data, tmp->data, tmp->len);
    if (!strict && (ia < 0 || ib < 0 || ic < 0)) return 0;
    if (ia < 0 || ib < 0)
        return sg_fail(err, "merge %zu (\"%.*s %.*s\"): part not in the vocabulary", rank,
                       (int)(na > 64 ? 64 : na), a, (int)(nb > 64 ? 64 : nb), b);
    if (ic < 0)
        return sg_fail(err, "merge %zu (\"%.*s %.*s\"): result not in the vocabulary", rank,
                       (int)(na > 64 ? 64 : na), a, (int)(nb > 64 ? 64 : nb), b);
    mergemap_put(&t->merges, ia, ib, (uint32_t)rank, ic);
    return 0;
}

/* "a b", split at the first space after the first byte (as llama.cpp does). */
static int add_merge_str(sg_tokenizer *t, size_t rank, const char *s, size_t n, bool strict, sg_buf *tmp,
                         sg_error *err) {
    const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
    if (!sp) return sg_fail(err, "merge %zu is not \"a b\"", rank);
    return add_merge(t, rank, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp - s) - 1, strict, tmp, err);
}

/* Rewrites the escapes whose meaning differs between Oniguruma (what tokenizers runs, in
 * its Ruby-style syntax) and PCRE2: \s is \t-\r, U+0085 and Z* in Oniguruma (PCRE2 adds
 * U+180E), \w is L, M, N and Pc (PCRE2 10.42: L, N and '_'), \h is a hex digit (PCRE2:
 * horizontal space). Negated forms inside a class (\S, \W, \H in [...]) are left alone:
 * no tokenizer we know uses them. */
static void class_escape(sg_buf *out, const char *members, bool in_class, bool negated) {
    if (in_class) { sg_buf_puts(out, members); return; }
    sg_buf_puts(out, negated ? "[^" : "[");
    sg_buf_puts(out, members);
    sg_buf_putc(out, ']');
}

static void pattern_rewrite(const char *p, size_t n, sg_buf *out) {
    static const char ws[] = "\\t-\\r\\x{85}\\p{Z}", word[] = "\\p{L}\\p{M}\\p{N}\\p{Pc}", hex[] = "0-9a-fA-F";
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 'Q') {                          /* \Q...\E: literal, copy as is */
                size_t j = i + 2;
                while (j + 1 < n && !(p[j] == '\\' && p[j + 1] == 'E')) j++;
                j = j + 1 < n ? j + 2 : n;
                sg_buf_append(out, p + i, j - i);
                i = j - 1;
                continue;
            }
            const char *members = d == 's' || d == 'S' ? ws : d == 'w' || d == 'W' ? word : d == 'h' || d == 'H' ? hex : NULL;
            bool negated = d == 'S' || d == 'W' || d == 'H';
            if (members && !(negated && in_class)) class_escape(out, members, in_class, negated);
            else sg_buf_append(out, p + i, 2);
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            sg_buf_putc(out, c);
            /* A ']' right after '[' or '[^' is a literal member. */
            if (i + 1 < n && p[i + 1] == '^') { sg_buf_putc(out, '^'); i++; }
            if (i + 1 < n && p[i + 1] == ']') { sg_buf_putc(out, ']'); i++; }
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {   /* [:alpha:] */
            const char *end = NULL;
            for (size_t j = i + 2; j + 1 < n; j++)
                if (p[j] == ':' && p[j + 1] == ']') { end = p + j + 2; break; }
            if (end) { sg_buf_append(out, p + i, (size_t)(end - (p + i))); i = (size_t)(end - p) - 1; continue; }
        }
        if (in_class && c == ']') in_class = false;
        sg_buf_putc(out, c);
    }
}

static int add_stage(sg_tokenizer *t, const char *pat, size_t n, bool literal, bool prefix_space, sg_error *err) {
    if (t->n_stages == MAX_STAGES) return sg_fail(err, "more than %d pre-tokenizer stages", MAX_STAGES);
    tok_stage *st = &t->stages[t->n_stages];
    st->re = NULL;
    st->prefix_space = prefix_space;
    if (pat) {
        if (n == 0) return sg_fail(err, "empty split pattern");
        sg_buf b;
        sg_buf_init(&b);
        if (literal) sg_buf_append(&b, pat, n);
        else pattern_rewrite(pat, n, &b);
        int code;
        PCRE2_SIZE at;
        /* MULTILINE: ^ and $ are line anchors in Oniguruma's Ruby-style syntax. */
        st->re = pcre2_compile((PCRE2_SPTR)b.data, b.len,
                               literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE,
                               &code, &at, NULL);
        sg_buf_free(&b);
        if (!st->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            return sg_fail(err, "split pattern /%.*s/: %s", (int)(n > 200 ? 200 : n), pat, (char *)msg);
        }
        pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE);   /* falls back to the interpreter */
    }
    t->n_stages++;
    return 0;
}

/* The single-byte tokens BPE starts from. A byte-level vocabulary has all 256; a byte
 * without one is dropped, as tokenizers does when there is no unk token. */
static void finish(sg_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        t->byte_id[b] = strmap_get(&t->bpe, t->pool.data, &c, 1);
    }
}

/* ---------------------------------------------------------------------------------- */
/* Loading tokenizer.json.                                                              */

static bool jbool(const json_t *o, const char *key, bool dflt) {
    const json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int pre_from_json(sg_tokenizer *t, const json_t *pre, bool *byte_level, int depth, sg_error *err) {
    if (depth > 8) return sg_fail(err, "pre_tokenizer nested too deeply");
    if (!json_is_object(pre)) return sg_fail(err, "pre_tokenizer is not an object");
    const char *type = json_string_value(json_object_get(pre, "type"));
    if (!type) return sg_fail(err, "pre_tokenizer has no type");
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(pre, "pretokenizers");
        if (!json_is_array(list)) return sg_fail(err, "pre_tokenizer Sequence has no pretokenizers list");
        size_t i;
        const json_t *p;
        json_array_foreach(list, i, p)
            if (pre_from_json(t, p, byte_level, depth + 1, err)) return -1;
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        const json_t *pat = json_object_get(pre, "pattern");
        const json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        const char *behavior = json_string_value(json_object_get(pre, "behavior"));
        if (!json_is_string(re) && !json_is_string(lit))
            return sg_fail(err, "pre_tokenizer Split has no Regex or String pattern");
        if (!behavior || strcmp(behavior, "Isolated") != 0)
            return sg_fail(err, "pre_tokenizer Split behavior %s is not supported (only Isolated)",
                           behavior ? behavior : "(missing)");
        if (jbool(pre, "invert", false)) return sg_fail(err, "pre_tokenizer Split invert is not supported");
        const json_t *s = json_is_string(re) ? re : lit;
        return add_stage(t, json_string_value(s), json_string_length(s), !json_is_string(re), false, err);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        *byte_level = true;
        bool prefix = jbool(pre, "add_prefix_space", true);
        if (jbool(pre, "use_regex", true))
            return add_stage(t, PAT_GPT2, strlen(PAT_GPT2), false, prefix, err);
        return prefix ? add_stage(t, NULL, 0, false, true, err) : 0;
    }
    if (strcmp(type, "Digits") == 0) {
        const char *pat = jbool(pre, "individual_digits", false) ? "\\p{N}" : "\\p{N}+";
        return add_stage(t, pat, strlen(pat), false, false, err);
    }
    return sg_fail(err, "pre_tokenizer type %s is not supported", type);
}

/* An id from JSON: an integer in [0, limit). */
static int json_id(const json_t *v, size_t limit, int32_t *id) {
    if (!json_is_integer(v)) return -1;
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i >= limit) return -1;
    *id = (int32_t)i;
    return 0;
}

static int load_config(sg_tokenizer *t, const char *cfg, size_t cfg_len, sg_error *err) {
    json_error_t je;
    /* model_max_length is often 1e30, past json_int_t: nothing here needs integers. */
    json_t *root = json_loadb(cfg, cfg_len, JSON_DECODE_INT_AS_REAL, &je);
    if (!root) return sg_fail(err, "tokenizer_config: line %d: %s", je.line, je.text);
    int rc = -1;
    if (!json_is_object(root)) { sg_fail(err, "tokenizer_config is not an object"); goto done; }
    const char *names[2] = {"bos_token", "eos_token"};
    int32_t *ids[2] = {&t->bos, &t->eos};
    for (int k = 0; k < 2; k++) {
        const json_t *v = json_object_get(root, names[k]);
        if (json_is_object(v)) v = json_object_get(v, "content");   /* {"content": ...} form */
        if (json_is_string(v)) {
            int32_t id = tok_find(t, json_string_value(v));
            if (id < 0) { sg_fail(err, "tokenizer_config %s \"%.100s\" is not a token", names[k], json_string_value(v)); goto done; }
            *ids[k] = id;
        }
    }
    const json_t *tpl = json_object_get(root, "chat_template");
    if (json_is_string(tpl)) {
        t->chat_template = sg_xstrdup(json_string_value(tpl));
    } else if (json_is_array(tpl)) {            /* [{"name": ..., "template": ...}]: take "default" */
        size_t i;
        const json_t *e;
        json_array_foreach(tpl, i, e) {
            const char *name = json_string_value(json_object_get(e, "name"));
            const char *s = json_string_value(json_object_get(e, "template"));
            if (name && s && strcmp(name, "default") == 0) t->chat_template = sg_xstrdup(s);
        }
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

static sg_tokenizer *load_json(const json_t *root, sg_error *err) {
    if (!json_is_object(root)) { sg_fail(err, "not a JSON object"); return NULL; }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) { sg_fail(err, "no \"model\" object"); return NULL; }
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (mtype && strcmp(mtype, "BPE") != 0) { sg_fail(err, "model type %s is not supported (only BPE)", mtype); return NULL; }
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) { sg_fail(err, "model.vocab is not an object"); return NULL; }
    const json_t *merges = json_object_get(model, "merges");
    if (merges && !json_is_array(merges) && !json_is_null(merges)) { sg_fail(err, "model.merges is not a list"); return NULL; }
    const json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added) && !json_is_null(added)) { sg_fail(err, "added_tokens is not a list"); return NULL; }
    const json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const json_t *list = json_object_get(norm, "normalizers");
        const char *nt = json_string_value(json_object_get(norm, "type"));
        if (!(nt && strcmp(nt, "Sequence") == 0 && json_is_array(list) && json_array_size(list) == 0)) {
            sg_fail(err, "normalizer %s is not supported", nt ? nt : "(unknown)");
            return NULL;
        }
    }

    /* Size the id table: largest id + 1, bounded against the number of entries. */
    size_t n_entries = json_object_size(vocab) + json_array_size(added);
    size_t limit = 2 * n_entries + ID_SLACK;
    size_t n_vocab = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        int32_t id;
        if (json_id(v, limit, &id)) { sg_fail(err, "vocab entry \"%.64s\": id is not an integer in [0, %zu)", key, limit); return NULL; }
        if ((size_t)id + 1 > n_vocab) n_vocab = (size_t)id + 1;
    }
    size_t i;
    json_array_foreach((json_t *)added, i, v) {
        int32_t id;
        if (!json_is_object(v) || json_id(json_object_get(v, "id"), limit, &id) ||
            !json_is_string(json_object_get(v, "content"))) {
            sg_fail(err, "added_tokens[%zu]: needs an integer id in [0, %zu) and a string content", i, limit);
            return NULL;
        }
        if ((size_t)id + 1 > n_vocab) n_vocab = (size_t)id + 1;
    }
    if (n_vocab == 0) { sg_fail(err, "empty vocabulary"); return NULL; }

    sg_tokenizer *t = tok_alloc(n_vocab, json_array_size(merges));
    sg_buf tmp;
    sg_buf_init(&tmp);
    for (void *it = json_object_iter((json_t *)vocab); it; it = json_object_iter_next((json_t *)vocab, it)) {
        int32_t id = (int32_t)json_integer_value(json_object_iter_value(it));
        const char *k = json_object_iter_key(it);
        if (t->tok[id].type) { sg_fail(err, "vocab: id %d used twice", (int)id); goto fail; }
        if (set_model_token(t, id, k, json_object_iter_key_len(it), TOK_NORMAL, err)) goto fail;
    }
    json_array_foreach((json_t *)added, i, v) {
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        const json_t *c = json_object_get(v, "content");
        bool special = jbool(v, "special", false);
        if (t->tok[id].added) { sg_fail(err, "added_tokens: id %d used twice", (int)id); goto fail; }
        /* An added token may reuse a vocabulary id; its content then wins for decoding. */
        if (set_added_token(t, id, json_string_value(c), json_string_length(c), special,
                            jbool(v, "normalized", !special), err)) goto fail;
    }
    json_array_foreach((json_t *)merges, i, v) {
        int rc;
        if (json_is_string(v)) {
            rc = add_merge_str(t, i, json_string_value(v), json_string_length(v), true, &tmp, err);
        } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
                   json_is_string(json_array_get(v, 1))) {
            const json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1);
            rc = add_merge(t, i, json_string_value(a), json_string_length(a), json_string_value(b),
                           json_string_length(b), true, &tmp, err);
        } else {
            rc = sg_fail(err, "merge %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
        }
        if (rc) goto fail;
    }
    t->ignore_merges = jbool(model, "ignore_merges", false);

    bool byte_level = false;
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    if (pre && !json_is_null(pre) && pre_from_json(t, pre, &byte_level, 0, err)) goto fail;
    if (!byte_level) { sg_fail(err, "no ByteLevel pre-tokenizer: only byte-level BPE is supported"); goto fail; }
    finish(t);
    sg_buf_free(&tmp);
    return t;
fail:
    sg_buf_free(&tmp);
    tok_free(t);
    return NULL;
}

sg_tokenizer *tok_load_json_mem(const char *json, size_t len, const char *config, size_t config_len,
                                sg_error *err) {
    if (!json || len == 0) { sg_fail(err, "empty tokenizer.json"); return NULL; }
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
    if (!root) { sg_fail(err, "line %d: %s", je.line, je.text); return NULL; }
    sg_tokenizer *t = load_json(root, err);
    json_decref(root);
    if (t && config && load_config(t, config, config_len, err)) { tok_free(t); return NULL; }
    return t;
}

sg_tokenizer *tok_load_json(const char *tokenizer_json, const char *config_json, sg_error *err) {
    sg_mapfile m;
    if (sg_mapfile_open(&m, tokenizer_json, err)) return NULL;
    char *cfg = NULL;
    size_t cfg_len = 0;
    if (config_json && !(cfg = sg_read_file(config_json, &cfg_len, err))) {
        sg_mapfile_close(&m);
        return NULL;
    }
    sg_tokenizer *t = tok_load_json_mem((const char *)m.data, m.size, cfg, cfg_len, err);
    sg_mapfile_close(&m);
    free(cfg);
    if (!t) sg_fail_wrap(err, "%s", tokenizer_json);
    return t;
}

/* ---------------------------------------------------------------------------------- */
/* Loading GGUF arrays.                                                                 */

/* tokenizer.ggml.pre -> split stages and ignore_merges, as llama.cpp's llama-vocab.cpp
 * (2025) maps them. The Llama-3 family gets the pattern exactly as in tokenizer.json
 * (llama.cpp spells its (?i:...) out as [sS] etc., which differs only for 'ſ').
 * "smollm" is SmolLM2's: its tokenizer.json is Sequence[Digits(individual_digits),
 * ByteLevel(use_regex)], which llama.cpp writes as the two stages \p{N} then GPT-2
 * (the same for starcoder and its kin). "smaug-bpe" and "dbrx" use the Llama-3 pattern
 * without ignore_merges (llama.cpp sets it for the llama3 names only). */
static int pre_from_name(sg_tokenizer *t, const char *pre, sg_error *err) {
    static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
                                          "pixtral", "midm-2.0", "lfm2", NULL};
    static const char *const llama3_merged[] = {"smaug-bpe", "dbrx", NULL};
    static const char *const digits_gpt2[] = {"smollm", "starcoder", "refact", "command-r", "codeshell",
                                              "exaone", "minerva-7b", NULL};
    static const char *const gpt2[] = {"default", "gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais",
                                       "roberta-bpe", "jina-es", "jina-de", "jina-v1-en",
                                       "jina-v2-es", "jina-v2-de", "jina-v2-code", NULL};
    if (!pre || !*pre) pre = "default";            /* what llama.cpp assumes when absent */
    for (int i = 0; llama3[i]; i++)
        if (strcmp(pre, llama3[i]) == 0) {
            t->ignore_merges = true;
            return add_stage(t, PAT_LLAMA3, strlen(PAT_LLAMA3), false, false, err);
        }
    for (int i = 0; llama3_merged[i]; i++)
        if (strcmp(pre, llama3_merged[i]) == 0) return add_stage(t, PAT_LLAMA3, strlen(PAT_LLAMA3), false, false, err);
    for (int i = 0; digits_gpt2[i]; i++)
        if (strcmp(pre, digits_gpt2[i]) == 0)
            return add_stage(t, "\\p{N}", 5, false, false, err) ? -1
                   : add_stage(t, PAT_GPT2, strlen(PAT_GPT2), false, false, err);
    for (int i = 0; gpt2[i]; i++)
        if (strcmp(pre, gpt2[i]) == 0) return add_stage(t, PAT_GPT2, strlen(PAT_GPT2), false, false, err);
    return sg_fail(err, "tokenizer.ggml.pre \"%.64s\" is not supported", pre);
}

sg_tokenizer *tok_load_vocab(const tok_vocab_desc *d, sg_error *err) {
    if (!d || !d->tokens || d->n_tokens == 0) { sg_fail(err, "empty vocabulary"); return NULL; }
    if (d->n_tokens > INT32_MAX / 2 || d->n_merges > INT32_MAX / 2) { sg_fail(err, "vocabulary too large"); return NULL; }
    if (d->n_merges && !d->merges) { sg_fail(err, "merges missing"); return NULL; }
    sg_tokenizer *t = tok_alloc(d->n_tokens, d->n_merges);
    sg_buf tmp;
    sg_buf_init(&tmp);
    for (size_t i = 0; i < d->n_tokens; i++) {
        const char *s = d->tokens[i];
        if (!s) { sg_fail(err, "token %zu is missing", i); goto fail; }
        size_t n = d->token_lens ? d->token_lens[i] : strlen(s);
        int type = d->types ? d->types[i] : TOK_NORMAL;
        if (type < TOK_NORMAL || type > TOK_BYTE) type = TOK_NORMAL;   /* 0 "undefined" and the like */
        int rc;
        /* CONTROL and USER_DEFINED are the converter's added tokens (special or not); an
         * empty one (padding in some files) cannot be matched, so it is kept unmatched. */
        if ((type == TOK_CONTROL || type == TOK_USER_DEFINED) && n > 0)
            rc = set_added_token(t, (int32_t)i, s, n, type == TOK_CONTROL, false, err);
        else
            rc = set_model_token(t, (int32_t)i, s, n, type, err);
        if (rc) goto fail;
    }
    for (size_t i = 0; i < d->n_merges; i++) {
        const char *s = d->merges[i];
        if (!s) { sg_fail(err, "merge %zu is missing", i); goto fail; }
        if (add_merge_str(t, i, s, d->merge_lens ? d->merge_lens[i] : strlen(s), false, &tmp, err)) goto fail;
    }
    if (pre_from_name(t, d->pre, err)) goto fail;
    if (d->bos_id >= 0 && (size_t)d->bos_id < d->n_tokens) t->bos = d->bos_id;
    if (d->eos_id >= 0 && (size_t)d->eos_id < d->n_tokens) t->eos = d->eos_id;
    if (d->chat_template) t->chat_template = sg_xstrdup(d->chat_template);
    finish(t);
    sg_buf_free(&tmp);
    return t;
fail:
    sg_buf_free(&tmp);
    tok_free(t);
    return NULL;
}

/* ---------------------------------------------------------------------------------- */
/* Queries.                                                                             */

size_t tok_n_vocab(const sg_tokenizer *t) { return t->n_vocab; }
int32_t tok_bos(const sg_tokenizer *t) { return t->bos; }
int32_t tok_eos(const sg_tokenizer *t) { return t->eos; }
const char *tok_chat_template(const sg_tokenizer *t) { return t->chat_template; }

int32_t tok_find(const sg_tokenizer *t, const char *s) {
    return strmap_get(&t->content, t->pool.data, s, strlen(s));
}

bool tok_is_special(const sg_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_vocab && t->tok[id].type == TOK_CONTROL;
}

const char *tok_piece(const sg_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= t->n_vocab) return NULL;
    const tok_entry *e = &t->tok[id];
    if (len) *len = e->raw_len;
    return t->pool.data + e->raw_off;      /* a hole in the ids decodes to "" */
}

void sg_ids_push(sg_ids *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->ids = sg_xrealloc(v->ids, v->cap * sizeof *v->ids);
    }
    v->ids[v->n++] = id;
}

void sg_ids_free(sg_ids *v) {
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

/* ---------------------------------------------------------------------------------- */
/* Encoding.                                                                            */

typedef struct bpe_sym {
    int32_t id, prev, next;
    bool gone;                      /* merged into its left neighbour */
} bpe_sym;

typedef struct bpe_cand {
    uint32_t rank, pos;
    int32_t new_id;
} bpe_cand;

/* Per-call scratch: tok_encode is const on the tokenizer, so threads can share one. */
typedef struct enc {
    const sg_tokenizer *t;
    bool parse_special;
    sg_ids *out;
    sg_error *err;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    bpe_sym *sym;
    size_t cap_sym;
    bpe_cand *heap;
    size_t n_heap, cap_heap;
} enc;

static bool cand_less(const bpe_cand *a, const bpe_cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(enc *c, bpe_cand x) {
    if (c->n_heap == c->cap_heap) {
        c->cap_heap = c->cap_heap ? c->cap_heap * 2 : 64;
        c->heap = sg_xrealloc(c->heap, c->cap_heap * sizeof *c->heap);
    }
    size_t i = c->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&x, &c->heap[p])) break;
        c->heap[i] = c->heap[p];
        i = p;
    }
    c->heap[i] = x;
}

static bpe_cand heap_pop(enc *c) {
    bpe_cand top = c->heap[0], x = c->heap[--c->n_heap];
    size_t i = 0, n = c->n_heap;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const bpe_cand *best = &x;
        if (l < n && cand_less(&c->heap[l], best)) { m = l; best = &c->heap[l]; }
        if (l + 1 < n && cand_less(&c->heap[l + 1], best)) m = l + 1;
        if (m == i) break;
        c->heap[i] = c->heap[m];
        i = m;
    }
    if (n) c->heap[i] = x;
    return top;
}

static void push_pair(enc *c, int32_t pos) {
    const bpe_sym *s = c->sym;
    const merge_slot *m = mergemap_get(&c->t->merges, s[pos].id, s[s[pos].next].id);
    if (m) heap_push(c, (bpe_cand){m->rank, (uint32_t)pos, m->new_id});
}

/* One pre-token: ids by merge rank (tokenizers' Word::merge_all, step for step). */
static void bpe_piece(enc *c, const char *s, size_t n) {
    const sg_tokenizer *t = c->t;
    if (n == 0) return;
    if (n == 1 || t->ignore_merges) {
        int32_t id = n == 1 ? t->byte_id[(unsigned char)s[0]] : strmap_get(&t->bpe, t->pool.data, s, n);
        if (id >= 0) { sg_ids_push(c->out, id); return; }
        if (n == 1) return;                 /* no token for this byte: dropped, as with no unk */
    }
    if (n > c->cap_sym) {
        c->cap_sym = n;
        c->sym = sg_xrealloc(c->sym, n * sizeof *c->sym);
    }
    bpe_sym *sym = c->sym;
    int32_t ns = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[(unsigned char)s[i]];
        if (id < 0) continue;
        sym[ns] = (bpe_sym){id, ns - 1, ns + 1, false};
        ns++;
    }
    if (ns == 0) return;
    sym[ns - 1].next = -1;
    c->n_heap = 0;
    for (int32_t i = 0; i + 1 < ns; i++) push_pair(c, i);
    while (c->n_heap) {
        bpe_cand top = heap_pop(c);
        bpe_sym *cur = &sym[top.pos];
        if (cur->gone || cur->next < 0) continue;
        bpe_sym *right = &sym[cur->next];
        /* A stale entry: the pair at pos changed since it was queued. */
        const merge_slot *m = mergemap_get(&t->merges, cur->id, right->id);
        if (!m || m->new_id != top.new_id) continue;
        cur->id = top.new_id;
        cur->next = right->next;
        right->gone = true;
        if (cur->next >= 0) sym[cur->next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) push_pair(c, cur->prev);
        if (cur->next >= 0) push_pair(c, (int32_t)top.pos);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) sg_ids_push(c->out, sym[i].id);
}

static int stage_run(enc *c, size_t k, const char *s, size_t n);

/* Pre-tokenizer stage k over s: each match and each gap between matches goes on to the
 * next stage as a text of its own (tokenizers' Split with behavior Isolated). */
static int stage_split(enc *c, size_t k, const char *s, size_t n) {
    const tok_stage *st = &c->t->stages[k];
    if (!st->re) return stage_run(c, k + 1, s, n);
    /* The real patterns take about one step per character of a whitespace run; a
     * pattern from a hostile file that backtracks past this fails instead of hanging. */
    uint32_t limit = n < (UINT32_MAX - 100000) / 2 ? (uint32_t)(100000 + 2 * n) : UINT32_MAX;
    size_t off = 0, gap = 0;
    while (off < n) {
        pcre2_set_match_limit(c->mctx, limit);     /* the next stage sets its own */
        int r = pcre2_match(st->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, c->md, c->mctx);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(r, msg, sizeof msg);
            return sg_fail(c->err, "split pattern: %s", (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
        size_t a = ov[0], b = ov[1];
        if (a == b) {                        /* an empty match splits nothing: step over a character */
            if (a >= n) break;
            size_t l;
            utf8_classify((const unsigned char *)s + a, n - a, &l);
            off = a + l;
            continue;
        }
        if (a > gap && stage_run(c, k + 1, s + gap, a - gap)) return -1;
        if (stage_run(c, k + 1, s + a, b - a)) return -1;
        gap = off = b;
    }
    return gap < n ? stage_run(c, k + 1, s + gap, n - gap) : 0;
}

static int stage_run(enc *c, size_t k, const char *s, size_t n) {
    const sg_tokenizer *t = c->t;
    if (k == t->n_stages) { bpe_piece(c, s, n); return 0; }
    if (t->stages[k].prefix_space && s[0] != ' ') {
        char *p = sg_xmalloc(n + 1);
        p[0] = ' ';
        memcpy(p + 1, s, n);
        int rc = stage_split(c, k, p, n + 1);
        free(p);
        return rc;
    }
    return stage_split(c, k, s, n);
}

/* Text between added tokens: valid UTF-8 runs go through the pre-tokenizer, each maximal
 * run of invalid bytes is one piece of its own. */
static int encode_plain(enc *c, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t start = i, l;
        while (i < n && utf8_classify(p + i, n - i, &l) == U8_OK) i += l;
        if (i > start && stage_run(c, 0, s + start, i - start)) return -1;
        start = i;
        while (i < n && utf8_classify(p + i, n - i, &l) != U8_OK) i += l;
        if (i > start) bpe_piece(c, s + start, i - start);
    }
    return 0;
}

/* The longest added token of this pass starting at s, or 0. */
static size_t added_match(const sg_tokenizer *t, const unsigned char *s, size_t n, int pass, int32_t *id) {
    size_t best = 0;
    int32_t node = 0;
    for (size_t j = 0; j < n; j++) {
        int32_t ch = j == 0 ? t->trie_first[s[0]] : t->trie[node].child;
        while (j > 0 && ch >= 0 && t->trie[ch].byte != s[j]) ch = t->trie[ch].sibling;
        if (ch < 0) break;
        node = ch;
        int32_t tid = t->trie[node].id;
        if (tid >= 0 && t->tok[tid].normalized == pass) { best = j + 1; *id = tid; }
    }
    return best;
}

/* tokenizers cuts added tokens out in two passes: those with normalized=false over the
 * raw text, then those with normalized=true over what is left (no normalizer here, so
 * both see the same bytes). Within a pass the match is leftmost, then longest. A special
 * token met while parse_special is off stays text, and nothing inside it matches. */
static int split_added(enc *c, const char *s, size_t n, int pass) {
    const sg_tokenizer *t = c->t;
    while (pass < 2 && !t->has_pass[pass]) pass++;
    if (pass == 2) return encode_plain(c, s, n);
    size_t i = 0, start = 0;
    while (i < n) {
        int32_t id = -1;
        size_t l = added_match(t, (const unsigned char *)s + i, n - i, pass, &id);
        if (l == 0) { i++; continue; }
        if (t->tok[id].type == TOK_CONTROL && !c->parse_special) { i += l; continue; }
        if (i > start && split_added(c, s + start, i - start, pass + 1)) return -1;
        sg_ids_push(c->out, id);
        i += l;
        start = i;
    }
    return start < n ? split_added(c, s + start, n - start, pass + 1) : 0;
}

int tok_encode(const sg_tokenizer *t, const char *text, size_t len, bool parse_special,
               sg_ids *out, sg_error *err) {
    if (len == 0) return 0;
    enc c = {.t = t, .parse_special = parse_special, .out = out, .err = err};
    c.md = pcre2_match_data_create(1, NULL);   /* only the whole match is read */
    c.mctx = pcre2_match_context_create(NULL);
    if (!c.md || !c.mctx) {
        pcre2_match_data_free(c.md);
        pcre2_match_context_free(c.mctx);
        return sg_fail(err, "out of memory");
    }
    size_t n0 = out->n;
    int rc = split_added(&c, text, len, 0);
    if (rc) out->n = n0;
    pcre2_match_data_free(c.md);
    pcre2_match_context_free(c.mctx);
    free(c.sym);
    free(c.heap);
    return rc;
}

/* ---------------------------------------------------------------------------------- */
/* Decoding.                                                                            */

void tok_decode(const sg_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, sg_buf *out) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab) continue;
        const tok_entry *e = &t->tok[ids[i]];
        if (skip_special && e->type == TOK_CONTROL) continue;
        sg_buf_append(out, t->pool.data + e->raw_off, e->raw_len);
    }
}

void tok_stream_init(tok_stream *s) { s->n_pending = 0; }

static const char REPLACEMENT[] = "\xEF\xBF\xBD";   /* U+FFFD */

/* Appends the valid UTF-8 in p, U+FFFD for each maximal invalid subpart; returns how
 * many trailing bytes are an incomplete but still possible character. */
static size_t emit_utf8(const unsigned char *p, size_t n, sg_buf *out) {
    size_t i = 0, run = 0;
    while (i < n) {
        size_t l;
        int k = utf8_classify(p + i, n - i, &l);
        if (k == U8_OK) { i += l; continue; }
        sg_buf_append(out, p + run, i - run);
        if (k == U8_TRUNC) return n - i;
        sg_buf_append(out, REPLACEMENT, 3);
        i += l;
        run = i;
    }
    sg_buf_append(out, p + run, i - run);
    return 0;
}

void tok_stream_push(const sg_tokenizer *t, tok_stream *s, int32_t id, bool skip_special, sg_buf *out) {
    if (id < 0 || (size_t)id >= t->n_vocab) return;
    const tok_entry *e = &t->tok[id];
    if (skip_special && e->type == TOK_CONTROL) return;
    size_t np = s->n_pending, n = np + e->raw_len;
    unsigned char small[256], *b = n <= sizeof small ? small : sg_xmalloc(n);
    memcpy(b, s->pending, np);
    memcpy(b + np, t->pool.data + e->raw_off, e->raw_len);
    size_t keep = emit_utf8(b, n, out);      /* at most 3: a character is at most 4 bytes */
    memcpy(s->pending, b + n - keep, keep);
    s->n_pending = keep;
    if (b != small) free(b);
}

void tok_stream_flush(tok_stream *s, sg_buf *out) {
    /* What is held is a valid but unfinished start: one maximal subpart, one U+FFFD. */
    if (s->n_pending) sg_buf_append(out, REPLACEMENT, 3);
    s->n_pending = 0;
}
