/* redact.c: see redact.h. Two passes: the known secrets of REDACT_MIN_SECRET bytes or
 * more are replaced wherever they occur (longest first, so a secret that contains another
 * goes whole), then one scan over tokens applies the token and credential-shape rules. */
#include "gateway/redact.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct secret {
    char  *s;
    size_t len;
} secret;

struct redact_set {
    secret  *secrets;     /* longest first */
    size_t   n, cap;
    uint8_t (*hashes)[32];
    size_t   n_hashes;
};

#define MAX_HASHED_TOKEN 512   /* longer tokens are not gateway keys */
#define MIN_BARE_CREDENTIAL 8  /* Bearer X without a key name before it: X this long */

redact_set *redact_new(void) { return sg_xcalloc(1, sizeof(redact_set)); }

void redact_free(redact_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        explicit_bzero(s->secrets[i].s, s->secrets[i].len);
        free(s->secrets[i].s);
    }
    free(s->secrets);
    free(s->hashes);
    free(s);
}

void redact_add(redact_set *s, const char *secret_text, size_t len) {
    if (!s || !secret_text || !len) return;
    for (size_t i = 0; i < s->n; i++)
        if (s->secrets[i].len == len && !memcmp(s->secrets[i].s, secret_text, len)) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->secrets = sg_xrealloc(s->secrets, s->cap * sizeof *s->secrets);
    }
    size_t at = s->n;   /* keep them longest first */
    while (at > 0 && s->secrets[at - 1].len < len) at--;
    memmove(s->secrets + at + 1, s->secrets + at, (s->n - at) * sizeof *s->secrets);
    s->secrets[at] = (secret){sg_xstrndup(secret_text, len), len};
    s->n++;
}

void redact_add_dsn(redact_set *s, const char *dsn) {
    if (!s || !dsn || !*dsn) return;
    redact_add(s, dsn, strlen(dsn));
    const char *scheme = strstr(dsn, "://");
    if (scheme) {
        const char *auth = scheme + 3;
        size_t host_end = strcspn(auth, "/?#");
        const char *at = NULL;
        for (const char *p = auth; p < auth + host_end; p++) if (*p == '@') at = p;   /* the last '@' */
        const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
        if (colon) redact_add(s, colon + 1, (size_t)(at - colon - 1));
    }
    /* conninfo: password=VALUE or password='VALUE' (also as a URL query parameter) */
    for (const char *p = dsn; (p = strcasestr(p, "password=")); p += 9) {
        const char *v = p + 9;
        size_t n;
        if (*v == '\'') { v++; n = strcspn(v, "'"); }
        else n = strcspn(v, " &");
        redact_add(s, v, n);
    }
}

void redact_add_sha256(redact_set *s, const uint8_t hash[32]) {
    if (!s) return;
    s->hashes = sg_xrealloc(s->hashes, (s->n_hashes + 1) * sizeof *s->hashes);
    memcpy(s->hashes[s->n_hashes++], hash, 32);
}

size_t redact_count(const redact_set *s) { return s ? s->n + s->n_hashes : 0; }

/* ---- the token scan ---- */

static int tok_char(unsigned char c) {
    return isalnum(c) || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' || c == '-';
}

/* The token starting at p: its length without a sentence's trailing dots (*word), and
 * with the '=' padding right after it (the return value). */
static size_t tok_len2(const char *p, const char *end, size_t *word) {
    const char *q = p;
    while (q < end && tok_char((unsigned char)*q)) q++;
    const char *w = q;
    while (w > p + 1 && w[-1] == '.') w--;
    if (word) *word = (size_t)(w - p);
    if (w == q)
        while (q < end && *q == '=' && q > p) q++;
    else
        q = w;
    return (size_t)(q - p);
}
static size_t tok_len(const char *p, const char *end) { return tok_len2(p, end, NULL); }

static int word_is(const char *p, size_t n, const char *w) { return strlen(w) == n && !strncasecmp(p, w, n); }

static int is_scheme(const char *p, size_t n) { return word_is(p, n, "bearer") || word_is(p, n, "basic"); }

static const char *const k_key_names[] = {"x-api-key", "api-key", "api_key", "apikey", "x-goog-api-key",
                                          "authorization", "proxy-authorization", "access_token", "password", NULL};

static int is_key_name(const char *p, size_t n, const char *start) {
    for (int i = 0; k_key_names[i]; i++)
        if (word_is(p, n, k_key_names[i])) return 1;
    /* a query string's key=: Gemini's ?key=API_KEY */
    return word_is(p, n, "key") && p > start && (p[-1] == '?' || p[-1] == '&');
}

static int known_token(const redact_set *s, const char *p, size_t n) {
    if (!s) return 0;
    for (size_t i = 0; i < s->n; i++) {
        const secret *k = &s->secrets[i];
        if (k->len == n && !memcmp(k->s, p, n)) return 1;
        if (n >= REDACT_MIN_PIECE && k->len > n && memmem(k->s, k->len, p, n)) return 1;
    }
    if (s->n_hashes && n >= 1 && n <= MAX_HASHED_TOKEN) {
        uint8_t h[32];
        unsigned int hl = 0;
        if (EVP_Digest(p, n, h, &hl, EVP_sha256(), NULL) && hl == 32)
            for (size_t i = 0; i < s->n_hashes; i++)
                if (!memcmp(h, s->hashes[i], 32)) return 1;
    }
    return 0;
}

/* After a key name at q: [quote] spaces [:=] spaces [quote] spaces. Returns where the value
 * starts, or NULL when no separator follows. */
static const char *after_separator(const char *q, const char *end) {
    if (q < end && (*q == '"' || *q == '\'')) q++;
    while (q < end && (*q == ' ' || *q == '\t')) q++;
    if (q >= end || (*q != ':' && *q != '=')) return NULL;
    q++;
    while (q < end && (*q == ' ' || *q == '\t')) q++;
    if (q < end && (*q == '"' || *q == '\'')) q++;
    while (q < end && (*q == ' ' || *q == '\t')) q++;
    return q;
}

/* Copies [from, to) then the mark, counting one replacement. */
static void emit_mark(sg_buf *out, const char *from, const char *to, size_t *count) {
    sg_buf_append(out, from, (size_t)(to - from));
    sg_buf_puts(out, REDACT_MARK);
    (*count)++;
}

/* "scheme WS+ token" at v: the end of the token when it is one, else NULL. A token of
 * fewer than min bytes is not taken ("the bearer of bad news"). */
static const char *scheme_value(const char *v, const char *end, const char **tok, size_t min) {
    size_t w, n = tok_len2(v, end, &w);
    if (!n || !is_scheme(v, w) || w != n) return NULL;
    const char *q = v + n;
    if (q >= end || (*q != ' ' && *q != '\t')) return NULL;
    while (q < end && (*q == ' ' || *q == '\t')) q++;
    size_t t = tok_len(q, end);
    if (!t || t < min) return NULL;
    *tok = q;
    return q + t;
}

static size_t scan(const redact_set *s, const char *text, size_t len, sg_buf *out) {
    const char *p = text, *end = text + len;
    size_t count = 0;
    while (p < end) {
        if (!tok_char((unsigned char)*p)) {
            sg_buf_putc(out, *p++);
            continue;
        }
        size_t w, n = tok_len2(p, end, &w);
        const char *tok;
        const char *tend = scheme_value(p, end, &tok, MIN_BARE_CREDENTIAL);
        if (tend) {                                   /* Bearer X, Basic X */
            emit_mark(out, p, tok, &count);
            p = tend;
            continue;
        }
        if (is_key_name(p, w, text)) {                /* x-api-key: X, "api_key": "X", ?key=X */
            const char *v = after_separator(p + w, end);
            size_t vw, vn = v ? tok_len2(v, end, &vw) : 0;
            if (vn && vw == vn && is_scheme(v, vw) && v + vn < end && (v[vn] == ' ' || v[vn] == '\t')) {
                /* "Authorization: Bearer X": X goes (when a secret pass has not taken it) */
                const char *inner = scheme_value(v, end, &tok, 1);
                if (inner) { emit_mark(out, p, tok, &count); p = inner; continue; }
            } else if (vn) {
                emit_mark(out, p, v, &count);
                p = v + vn;
                continue;
            }
        }
        /* scheme://user:password@host: the token before '@' after a ':' in the authority */
        if ((size_t)(end - p) >= n + 3 && !memcmp(p + n, "://", 3)) {
            const char *a = p + n + 3, *q = a;
            while (q < end && *q != '@' && *q != '/' && *q != ' ' && *q != '"' && *q != '\n') q++;
            const char *colon = q < end && *q == '@' ? memchr(a, ':', (size_t)(q - a)) : NULL;
            if (colon && colon + 1 < q) { emit_mark(out, p, colon + 1, &count); p = q; continue; }
        }
        if (known_token(s, p, w)) { emit_mark(out, p, p, &count); p += w; continue; }
        sg_buf_append(out, p, n);
        p += n;
    }
    return count;
}

size_t redact_text(const redact_set *s, const char *text, size_t len, sg_buf *out) {
    if (!len) { sg_buf_reserve(out, 0); out->data[out->len] = 0; return 0; }
    size_t count = 0;
    sg_buf a, b;
    sg_buf_init(&a);
    sg_buf_init(&b);
    const char *cur = text;
    size_t cur_len = len;
    for (size_t i = 0; s && i < s->n; i++) {
        const secret *k = &s->secrets[i];
        if (k->len < REDACT_MIN_SECRET || !memmem(cur, cur_len, k->s, k->len)) continue;
        sg_buf *dst = cur == a.data ? &b : &a;
        sg_buf_reset(dst);
        const char *p = cur, *e = cur + cur_len, *hit;
        while ((hit = memmem(p, (size_t)(e - p), k->s, k->len))) {
            emit_mark(dst, p, hit, &count);
            p = hit + k->len;
        }
        sg_buf_append(dst, p, (size_t)(e - p));
        cur = dst->data;
        cur_len = dst->len;
    }
    count += scan(s, cur, cur_len, out);
    if (a.data) explicit_bzero(a.data, a.len);
    if (b.data) explicit_bzero(b.data, b.len);
    sg_buf_free(&a);
    sg_buf_free(&b);
    return count;
}

size_t redact_str(const redact_set *s, char *str, size_t cap) {
    if (!str || !cap) return 0;
    size_t len = strnlen(str, cap - 1);
    sg_buf out;
    sg_buf_init(&out);
    size_t count = redact_text(s, str, len, &out);
    if (count) {
        size_t n = out.len < cap - 1 ? out.len : cap - 1;
        memcpy(str, out.data, n);
        str[n] = 0;
    }
    if (out.data) explicit_bzero(out.data, out.len);
    sg_buf_free(&out);
    return count;
}
