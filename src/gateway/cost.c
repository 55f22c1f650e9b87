/* cost.c: see cost.h. The built-in price table, the catalogue (a hash map keyed by
 * vendor and model), LiteLLM's price file reader, and the integer arithmetic. */
#include "gateway/cost.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "engine/tokenizer.h"
#include "gateway/provider.h"

#define PICO_PER_MICRO 1000000

/* ---- the built-in catalogue --------------------------------------------------------------
 * Standard-tier text prices from the providers' public pricing pages as of November 2025
 * (openai.com/api/pricing, claude.com/pricing, ai.google.dev/gemini-api/docs/pricing), in
 * micro-dollars per million tokens (= pico-dollars per token): 2500000 is $2.50 / M.
 * -1: the provider has no such price (no cached rate for older OpenAI models; OpenAI and
 * Google report no cache writes). Anthropic's cache write is the 5-minute rate (1.25x input).
 * Long tiers: Gemini 2.5 Pro and 3 Pro above 200k prompt tokens; Claude Sonnet 4 / 4.5 above
 * 200k (the 1M-context beta: a prompt that long is only accepted with it). */
typedef struct builtin {
    const char *vendor, *model;
    int64_t in, cache_read, cache_write, out;
    int64_t ctx, max_out;
    int64_t long_at, long_in, long_cache_read, long_cache_write, long_out;
} builtin;

#define NOTIER -1, 0, 0, 0, 0
static const builtin k_builtin[] = {
    /* OpenAI */
    {"openai", "gpt-5.1", 1250000, 125000, -1, 10000000, 400000, 128000, NOTIER},
    {"openai", "gpt-5.1-chat-latest", 1250000, 125000, -1, 10000000, 128000, 16384, NOTIER},
    {"openai", "gpt-5.1-codex", 1250000, 125000, -1, 10000000, 400000, 128000, NOTIER},
    {"openai", "gpt-5.1-codex-mini", 250000, 25000, -1, 2000000, 400000, 128000, NOTIER},
    {"openai", "gpt-5", 1250000, 125000, -1, 10000000, 400000, 128000, NOTIER},
    {"openai", "gpt-5-chat-latest", 1250000, 125000, -1, 10000000, 128000, 16384, NOTIER},
    {"openai", "gpt-5-codex", 1250000, 125000, -1, 10000000, 400000, 128000, NOTIER},
    {"openai", "gpt-5-mini", 250000, 25000, -1, 2000000, 400000, 128000, NOTIER},
    {"openai", "gpt-5-nano", 50000, 5000, -1, 400000, 400000, 128000, NOTIER},
    {"openai", "gpt-5-pro", 15000000, -1, -1, 120000000, 400000, 272000, NOTIER},
    {"openai", "gpt-4.1", 2000000, 500000, -1, 8000000, 1047576, 32768, NOTIER},
    {"openai", "gpt-4.1-mini", 400000, 100000, -1, 1600000, 1047576, 32768, NOTIER},
    {"openai", "gpt-4.1-nano", 100000, 25000, -1, 400000, 1047576, 32768, NOTIER},
    {"openai", "gpt-4o", 2500000, 1250000, -1, 10000000, 128000, 16384, NOTIER},
    {"openai", "gpt-4o-2024-05-13", 5000000, -1, -1, 15000000, 128000, 4096, NOTIER},
    {"openai", "gpt-4o-mini", 150000, 75000, -1, 600000, 128000, 16384, NOTIER},
    {"openai", "chatgpt-4o-latest", 5000000, -1, -1, 15000000, 128000, 16384, NOTIER},
    {"openai", "o1", 15000000, 7500000, -1, 60000000, 200000, 100000, NOTIER},
    {"openai", "o1-mini", 1100000, 550000, -1, 4400000, 128000, 65536, NOTIER},
    {"openai", "o1-pro", 150000000, -1, -1, 600000000, 200000, 100000, NOTIER},
    {"openai", "o3", 2000000, 500000, -1, 8000000, 200000, 100000, NOTIER},
    {"openai", "o3-pro", 20000000, -1, -1, 80000000, 200000, 100000, NOTIER},
    {"openai", "o3-mini", 1100000, 550000, -1, 4400000, 200000, 100000, NOTIER},
    {"openai", "o3-deep-research", 10000000, 2500000, -1, 40000000, 200000, 100000, NOTIER},
    {"openai", "o4-mini", 1100000, 275000, -1, 4400000, 200000, 100000, NOTIER},
    {"openai", "o4-mini-deep-research", 2000000, 500000, -1, 8000000, 200000, 100000, NOTIER},
    {"openai", "codex-mini-latest", 1500000, 375000, -1, 6000000, 200000, 100000, NOTIER},
    {"openai", "gpt-4-turbo", 10000000, -1, -1, 30000000, 128000, 4096, NOTIER},
    {"openai", "gpt-4", 30000000, -1, -1, 60000000, 8192, 8192, NOTIER},
    {"openai", "gpt-3.5-turbo", 500000, -1, -1, 1500000, 16385, 4096, NOTIER},
    {"openai", "text-embedding-3-small", 20000, -1, -1, 0, 8191, -1, NOTIER},
    {"openai", "text-embedding-3-large", 130000, -1, -1, 0, 8191, -1, NOTIER},
    {"openai", "text-embedding-ada-002", 100000, -1, -1, 0, 8191, -1, NOTIER},
    /* Anthropic: input, cache read (0.1x), cache write 5 min (1.25x), output */
    {"anthropic", "claude-opus-4-5", 5000000, 500000, 6250000, 25000000, 200000, 64000, NOTIER},
    {"anthropic", "claude-opus-4-1", 15000000, 1500000, 18750000, 75000000, 200000, 32000, NOTIER},
    {"anthropic", "claude-opus-4", 15000000, 1500000, 18750000, 75000000, 200000, 32000, NOTIER},
    {"anthropic", "claude-opus-4-0", 15000000, 1500000, 18750000, 75000000, 200000, 32000, NOTIER},
    {"anthropic", "claude-sonnet-4-5", 3000000, 300000, 3750000, 15000000, 200000, 64000,
     200000, 6000000, 600000, 7500000, 22500000},
    {"anthropic", "claude-sonnet-4", 3000000, 300000, 3750000, 15000000, 200000, 64000,
     200000, 6000000, 600000, 7500000, 22500000},
    {"anthropic", "claude-sonnet-4-0", 3000000, 300000, 3750000, 15000000, 200000, 64000,
     200000, 6000000, 600000, 7500000, 22500000},
    {"anthropic", "claude-3-7-sonnet", 3000000, 300000, 3750000, 15000000, 200000, 64000, NOTIER},
    {"anthropic", "claude-3-5-sonnet", 3000000, 300000, 3750000, 15000000, 200000, 8192, NOTIER},
    {"anthropic", "claude-haiku-4-5", 1000000, 100000, 1250000, 5000000, 200000, 64000, NOTIER},
    {"anthropic", "claude-3-5-haiku", 800000, 80000, 1000000, 4000000, 200000, 8192, NOTIER},
    {"anthropic", "claude-3-haiku", 250000, 30000, 300000, 1250000, 200000, 4096, NOTIER},
    {"anthropic", "claude-3-opus", 15000000, 1500000, 18750000, 75000000, 200000, 4096, NOTIER},
    /* Google Gemini (text / image / video input; output includes thinking) */
    {"google", "gemini-3-pro-preview", 2000000, 200000, -1, 12000000, 1048576, 65536,
     200000, 4000000, 400000, -1, 18000000},
    {"google", "gemini-2.5-pro", 1250000, 125000, -1, 10000000, 1048576, 65536,
     200000, 2500000, 250000, -1, 15000000},
    {"google", "gemini-2.5-flash", 300000, 30000, -1, 2500000, 1048576, 65536, NOTIER},
    {"google", "gemini-2.5-flash-lite", 100000, 10000, -1, 400000, 1048576, 65536, NOTIER},
    {"google", "gemini-2.0-flash", 100000, 25000, -1, 400000, 1048576, 8192, NOTIER},
    {"google", "gemini-2.0-flash-lite", 75000, -1, -1, 300000, 1048576, 8192, NOTIER},
    {"google", "gemini-embedding-001", 150000, -1, -1, 0, 2048, -1, NOTIER},
};

/* ---- the catalogue: open addressing on "vendor\x1fmodel", lower case ------------------- */

typedef struct entry {
    char *key;                /* NULL: empty slot */
    cost_model m;             /* vendor, model, source point into owned copies below */
    char *vendor, *model, *source;
} entry;

struct cost_catalog {
    entry *slots;
    size_t cap, n;            /* cap: a power of two */
};

static const cost_model k_local_free = {
    .vendor = "local", .model = "*", .price = {0, 0, 0, 0, 0}, .long_threshold = -1,
    .long_price = {-1, -1, -1, -1, -1}, .context_window = -1, .max_output_tokens = -1, .source = "builtin",
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ull; }
    return h;
}

/* "vendor\x1fmodel" in lower case into buf; false when it does not fit. */
static bool make_key(char *buf, size_t cap, const char *vendor, const char *model, size_t model_len) {
    size_t vl = strlen(vendor);
    if (vl + 1 + model_len + 1 > cap) return false;
    for (size_t i = 0; i < vl; i++) buf[i] = (char)tolower((unsigned char)vendor[i]);
    buf[vl] = 0x1f;
    for (size_t i = 0; i < model_len; i++) buf[vl + 1 + i] = (char)tolower((unsigned char)model[i]);
    buf[vl + 1 + model_len] = 0;
    return true;
}

static entry *find_slot(const cost_catalog *c, const char *key) {
    size_t mask = c->cap - 1;
    for (size_t i = hash_str(key) & mask;; i = (i + 1) & mask)
        if (!c->slots[i].key || !strcmp(c->slots[i].key, key)) return &c->slots[i];
}

static void grow(cost_catalog *c) {
    entry *old = c->slots;
    size_t old_cap = c->cap;
    c->cap = old_cap ? old_cap * 2 : 256;
    c->slots = sg_xcalloc(c->cap, sizeof *c->slots);
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key) *find_slot(c, old[i].key) = old[i];
    free(old);
}

cost_catalog *cost_catalog_new(void) {
    cost_catalog *c = sg_xcalloc(1, sizeof *c);
    grow(c);
    return c;
}

void cost_catalog_free(cost_catalog *c) {
    if (!c) return;
    for (size_t i = 0; i < c->cap; i++) {
        entry *e = &c->slots[i];
        if (!e->key) continue;
        free(e->key); free(e->vendor); free(e->model); free(e->source);
    }
    free(c->slots);
    free(c);
}

size_t cost_catalog_size(const cost_catalog *c) { return c->n; }

void cost_catalog_put(cost_catalog *c, const cost_model *m) {
    char key[512];
    if (!m->vendor || !m->model || !make_key(key, sizeof key, m->vendor, m->model, strlen(m->model))) return;
    if ((c->n + 1) * 2 > c->cap) grow(c);
    entry *e = find_slot(c, key);
    if (e->key) { free(e->vendor); free(e->model); free(e->source); }
    else { e->key = sg_xstrdup(key); c->n++; }
    e->m = *m;
    e->vendor = sg_xstrdup(m->vendor);
    e->model = sg_xstrdup(m->model);
    e->source = sg_xstrdup(m->source ? m->source : "");
    e->m.vendor = e->vendor;
    e->m.model = e->model;
    e->m.source = e->source;
}

static const cost_model *get_exact(const cost_catalog *c, const char *vendor, const char *model, size_t len) {
    char key[512];
    if (!make_key(key, sizeof key, vendor, model, len)) return NULL;
    const entry *e = find_slot(c, key);
    return e->key ? &e->m : NULL;
}

static gw_price price_of(int64_t in, int64_t cr, int64_t cw, int64_t out) {
    return (gw_price){in, cr, cw, out, out};
}

void cost_catalog_add_builtin(cost_catalog *c) {
    for (size_t i = 0; i < sizeof k_builtin / sizeof k_builtin[0]; i++) {
        const builtin *b = &k_builtin[i];
        cost_model m = {
            .vendor = b->vendor, .model = b->model,
            .price = price_of(b->in, b->cache_read, b->cache_write, b->out),
            .long_threshold = b->long_at,
            .long_price = b->long_at < 0 ? (gw_price){-1, -1, -1, -1, -1}
                                         : price_of(b->long_in, b->long_cache_read, b->long_cache_write, b->long_out),
            .context_window = b->ctx, .max_output_tokens = b->max_out, .source = "builtin",
        };
        cost_catalog_put(c, &m);
    }
}

void cost_catalog_add_config(cost_catalog *c, const gw_config *cfg) {
    for (size_t i = 0; i < cfg->n_models; i++) {
        const gw_model_info *mi = &cfg->models[i];
        const gw_price *p = &mi->price;
        bool any_price = p->input >= 0 || p->cache_read >= 0 || p->cache_write >= 0 || p->output >= 0 || p->reasoning >= 0;
        const cost_model *old = get_exact(c, mi->provider->name, mi->model, strlen(mi->model));
        if (!old) {   /* the entry the provider's vendor would give, so a partial entry keeps it */
            const char *v = cost_vendor_of(mi->provider);
            if (v) old = cost_lookup_vendor(c, v, mi->model);
        }
        cost_model m;
        if (old) m = *old;
        else m = (cost_model){.price = {-1, -1, -1, -1, -1}, .long_threshold = -1,
                              .long_price = {-1, -1, -1, -1, -1}, .context_window = -1, .max_output_tokens = -1};
        m.vendor = mi->provider->name;
        m.model = mi->model;
        m.source = "models";
        if (any_price) {   /* the user's price replaces the whole price, tiers included */
            m.price = *p;
            if (m.price.reasoning < 0) m.price.reasoning = m.price.output;
            m.long_threshold = -1;
        } else if (!old && mi->provider->entry->in_process) {
            m.price = k_local_free.price;
        }
        if (mi->context_window > 0) m.context_window = mi->context_window;
        if (mi->max_output_tokens > 0) m.max_output_tokens = mi->max_output_tokens;
        cost_catalog_put(c, &m);   /* facts without any price anywhere: kept, unpriced */
    }
}

cost_catalog *cost_catalog_build(const gw_config *cfg, sg_error *err) {
    cost_catalog *c = cost_catalog_new();
    cost_catalog_add_builtin(c);
    if (cfg) {
        for (size_t i = 0; i < cfg->n_price_files; i++)
            if (cost_catalog_load_litellm(c, cfg->price_files[i], err) < 0) { cost_catalog_free(c); return NULL; }
        cost_catalog_add_config(c, cfg);
    }
    return c;
}

/* ---- lookup ----------------------------------------------------------------------------- */

static bool all_digits(const char *s, size_t n) {
    if (!n) return false;
    for (size_t i = 0; i < n; i++) if (!isdigit((unsigned char)s[i])) return false;
    return true;
}

/* The length of name without one trailing version suffix, or len when it has none:
 * -YYYY-MM-DD, -YYYYMMDD, @YYYYMMDD, -latest, -NNN / -NNNN (gemini-2.0-flash-001,
 * gpt-3.5-turbo-0125), -preview-MM-YYYY / -preview-MM-DD. */
static size_t strip_suffix(const char *s, size_t len) {
    for (size_t d = 2; d <= 4; d += 2) {   /* -preview-MM-DD, -preview-MM-YYYY */
        size_t total = 12 + d;
        if (len <= total) continue;
        size_t p = len - total;
        if (!strncasecmp(s + p, "-preview-", 9) && all_digits(s + p + 9, 2) && s[p + 11] == '-' &&
            all_digits(s + p + 12, d))
            return p;
    }
    if (len > 11 && s[len - 11] == '-' && all_digits(s + len - 10, 4) && s[len - 6] == '-' &&
        all_digits(s + len - 5, 2) && s[len - 3] == '-' && all_digits(s + len - 2, 2))
        return len - 11;
    if (len > 9 && (s[len - 9] == '-' || s[len - 9] == '@') && all_digits(s + len - 8, 8)) return len - 9;
    if (len > 7 && !strncasecmp(s + len - 7, "-latest", 7)) return len - 7;
    if (len > 4 && s[len - 4] == '-' && all_digits(s + len - 3, 3)) return len - 4;
    if (len > 5 && s[len - 5] == '-' && all_digits(s + len - 4, 4)) return len - 5;
    return len;
}

const cost_model *cost_lookup_vendor(const cost_catalog *c, const char *vendor, const char *model) {
    if (!c || !vendor || !model) return NULL;
    if (!strncmp(model, "models/", 7)) model += 7;
    size_t len = strlen(model);
    for (int i = 0; i < 4; i++) {
        const cost_model *m = get_exact(c, vendor, model, len);
        if (m) return m;
        size_t n = strip_suffix(model, len);
        if (n == len) break;
        len = n;
    }
    return NULL;
}

const char *cost_vendor_of(const gw_provider *p) {
    const gw_provider_entry *e = p->entry;
    return e && e->cost_vendor ? e->cost_vendor(p) : NULL;
}

const cost_model *cost_lookup(const cost_catalog *c, const gw_provider *p, const char *model) {
    if (!p || !model) return NULL;
    const cost_model *m = cost_lookup_vendor(c, p->name, model);
    if (m) return m;
    if (p->entry->in_process) return &k_local_free;   /* our own engine */
    const char *v = cost_vendor_of(p);
    if (v && strcmp(v, p->name)) return cost_lookup_vendor(c, v, model);
    return NULL;
}

/* ---- decimal text to integer units ------------------------------------------------------- */

/* value(s) x 10^scale as an integer, rounded half up on the first dropped digit; -1 on
 * anything that is not a non-negative JSON number, or beyond max. */
static int64_t parse_scaled(const char *s, size_t len, int scale, int64_t max) {
    size_t i = 0;
    bool negative = i < len && s[i] == '-';
    if (negative) i++;
    char digits[64];
    size_t nd = 0;
    int exp10 = 0;            /* value = digits x 10^exp10 */
    bool any = false;   /* digits past 64 significant ones are far below any rounding */
    for (; i < len && isdigit((unsigned char)s[i]); i++) {
        any = true;
        if (nd == 0 && s[i] == '0') continue;
        if (nd < sizeof digits) digits[nd++] = s[i];
        else exp10++;
    }
    if (i < len && s[i] == '.') {
        i++;
        for (; i < len && isdigit((unsigned char)s[i]); i++) {
            any = true;
            if (nd == 0 && s[i] == '0') { exp10--; continue; }
            if (nd < sizeof digits) { digits[nd++] = s[i]; exp10--; }
        }
    }
    if (!any) return -1;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        int sign = 1;
        if (i < len && (s[i] == '+' || s[i] == '-')) { if (s[i] == '-') sign = -1; i++; }
        if (i >= len || !isdigit((unsigned char)s[i])) return -1;
        long e = 0;
        for (; i < len && isdigit((unsigned char)s[i]); i++) { e = e * 10 + (s[i] - '0'); if (e > 100000) return -1; }
        exp10 += (int)(sign * e);
    }
    if (i != len) return -1;
    if (nd == 0) return 0;   /* zero, "-0" included */
    if (negative) return -1;
    int shift = exp10 + scale;         /* result = digits x 10^shift */
    int64_t v = 0;
    size_t keep = nd;
    int round_digit = 0;
    if (shift < 0) {
        if ((size_t)-shift > nd) return 0;   /* below a tenth of the unit */
        keep = nd - (size_t)-shift;
        round_digit = digits[keep] - '0';
    }
    for (size_t k = 0; k < keep; k++) {
        if (v > (max - (digits[k] - '0')) / 10) return -1;
        v = v * 10 + (digits[k] - '0');
    }
    for (int k = 0; k < shift; k++) {
        if (v > max / 10) return -1;
        v *= 10;
    }
    if (round_digit >= 5) { if (v == max) return -1; v++; }
    return v > max ? -1 : v;
}

int64_t cost_parse_usd_per_token(const char *s, size_t len) {
    return parse_scaled(s, len, 12, 1000000000000000ll);   /* at most $1000 per token */
}

/* ---- LiteLLM's model_prices_and_context_window.json -----------------------------------
 * A small JSON reader that keeps each number's text, so that prices are converted from the
 * decimal the file wrote rather than from a double. Only the shape the file has is read:
 * an object of objects; values of other shapes are skipped. */

typedef struct jr {
    const char *p, *end;
    const char *source;
    sg_error *err;
    int depth;
} jr;

static void ws(jr *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) r->p++;
}

static int jfail(jr *r, const char *what) {
    /* the line number helps people who edit the file by hand */
    return sg_fail(r->err, "%s: %s", r->source, what);
}

/* A string into out (escapes decoded; \u beyond ASCII becomes '?': model names are ASCII). */
static int jstring(jr *r, sg_buf *out) {
    if (r->p >= r->end || *r->p != '"') return jfail(r, "expected a string");
    r->p++;
    sg_buf_reset(out);
    while (r->p < r->end && *r->p != '"') {
        char ch = *r->p++;
        if ((unsigned char)ch < 0x20) return jfail(r, "control character in a string");
        if (ch != '\\') { sg_buf_putc(out, ch); continue; }
        if (r->p >= r->end) break;
        char e = *r->p++;
        switch (e) {
        case 'n': sg_buf_putc(out, '\n'); break;
        case 't': sg_buf_putc(out, '\t'); break;
        case 'r': sg_buf_putc(out, '\r'); break;
        case 'b': sg_buf_putc(out, '\b'); break;
        case 'f': sg_buf_putc(out, '\f'); break;
        case 'u': {
            if (r->end - r->p < 4) return jfail(r, "bad \\u escape");
            unsigned v = 0;
            for (int k = 0; k < 4; k++) {
                char h = r->p[k];
                v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
                if (!isxdigit((unsigned char)h)) return jfail(r, "bad \\u escape");
            }
            r->p += 4;
            sg_buf_putc(out, v < 0x80 ? (char)v : '?');
            break;
        }
        default: sg_buf_putc(out, e); break;   /* \" \\ \/ */
        }
    }
    if (r->p >= r->end) return jfail(r, "unterminated string");
    r->p++;
    return 0;
}

/* A scalar's text span (number, true, false, null), or skips a nested value (*start NULL). */
static int jvalue(jr *r, const char **start, size_t *len, sg_buf *scratch) {
    ws(r);
    *start = NULL;
    *len = 0;
    if (r->p >= r->end) return jfail(r, "unexpected end");
    char ch = *r->p;
    if (ch == '"') {
        if (jstring(r, scratch)) return -1;
        *start = scratch->data ? scratch->data : "";
        *len = scratch->len;
        return 1;   /* a string */
    }
    if (ch == '{' || ch == '[') {
        if (++r->depth > 64) return jfail(r, "nested too deeply");
        char close = ch == '{' ? '}' : ']';
        r->p++;
        ws(r);
        if (r->p < r->end && *r->p == close) { r->p++; r->depth--; return 0; }
        for (;;) {
            if (ch == '{') {
                ws(r);
                if (jstring(r, scratch)) return -1;
                ws(r);
                if (r->p >= r->end || *r->p != ':') return jfail(r, "expected ':'");
                r->p++;
            }
            const char *s2;
            size_t l2;
            if (jvalue(r, &s2, &l2, scratch) < 0) return -1;
            ws(r);
            if (r->p < r->end && *r->p == ',') { r->p++; continue; }
            if (r->p < r->end && *r->p == close) { r->p++; break; }
            return jfail(r, "expected ',' or a closing bracket");
        }
        r->depth--;
        return 0;
    }
    const char *s = r->p;
    while (r->p < r->end && (isalnum((unsigned char)*r->p) || *r->p == '.' || *r->p == '-' || *r->p == '+')) r->p++;
    if (r->p == s) return jfail(r, "unexpected character");
    *start = s;
    *len = (size_t)(r->p - s);
    return 2;   /* a bare scalar */
}

/* The litellm_provider names that are smolgate's built-in vendors. */
static const char *vendor_of_litellm(const char *prov) {
    if (!strcmp(prov, "openai") || !strcmp(prov, "text-completion-openai")) return "openai";
    if (!strcmp(prov, "anthropic")) return "anthropic";
    if (!strcmp(prov, "gemini")) return "google";
    return prov;
}

typedef struct llm_entry {
    gw_price price, long_price;
    int64_t long_at, ctx, max_out, max_tokens;
    bool priced, bad;
    char provider[96];
} llm_entry;

/* One field of a model entry. */
static void llm_field(llm_entry *e, const char *name, const char *v, size_t len, int kind) {
    if (kind == 1) {
        if (!strcmp(name, "litellm_provider") && len < sizeof e->provider) { memcpy(e->provider, v, len); e->provider[len] = 0; }
        return;
    }
    if (kind != 2) return;
    if (!strcmp(name, "max_input_tokens")) { e->ctx = parse_scaled(v, len, 0, INT64_MAX / 2); return; }
    if (!strcmp(name, "max_output_tokens")) { e->max_out = parse_scaled(v, len, 0, INT64_MAX / 2); return; }
    if (!strcmp(name, "max_tokens")) { e->max_tokens = parse_scaled(v, len, 0, INT64_MAX / 2); return; }
    static const struct { const char *name; size_t off; } k_prices[] = {
        {"input_cost_per_token", offsetof(gw_price, input)},
        {"output_cost_per_token", offsetof(gw_price, output)},
        {"cache_read_input_token_cost", offsetof(gw_price, cache_read)},
        {"cache_creation_input_token_cost", offsetof(gw_price, cache_write)},
        {"output_cost_per_reasoning_token", offsetof(gw_price, reasoning)},
    };
    for (size_t i = 0; i < sizeof k_prices / sizeof k_prices[0]; i++) {
        size_t nl = strlen(k_prices[i].name);
        if (strncmp(name, k_prices[i].name, nl)) continue;
        const char *rest = name + nl;
        gw_price *dst;
        if (!*rest) dst = &e->price;
        else {   /* "_above_200k_tokens": a long tier (the first threshold seen) */
            unsigned long k = 0;
            char tail[16];
            if (sscanf(rest, "_above_%luk_token%15s", &k, tail) != 2 || k == 0 || k > 100000000) return;
            if (e->long_at < 0) e->long_at = (int64_t)k * 1000;
            else if (e->long_at != (int64_t)k * 1000) return;
            dst = &e->long_price;
        }
        int64_t p = cost_parse_usd_per_token(v, len);
        if (p < 0) { e->bad = true; return; }
        *(int64_t *)((char *)dst + k_prices[i].off) = p;
        if (dst == &e->price && (k_prices[i].off == offsetof(gw_price, input) || k_prices[i].off == offsetof(gw_price, output)))
            e->priced = true;
        return;
    }
}

int cost_catalog_load_litellm_mem(cost_catalog *c, const char *json, size_t len, const char *source, sg_error *err) {
    jr r = {json, json + len, source ? source : "price file", err, 0};
    sg_buf key, field, scratch;
    sg_buf_init(&key); sg_buf_init(&field); sg_buf_init(&scratch);
    int taken = 0, rc = -1;
    ws(&r);
    if (r.p >= r.end || *r.p != '{') { jfail(&r, "not a JSON object of models"); goto out; }
    r.p++;
    ws(&r);
    if (r.p < r.end && *r.p == '}') { r.p++; rc = 0; goto tail; }
    for (;;) {
        ws(&r);
        if (jstring(&r, &key)) goto out;
        ws(&r);
        if (r.p >= r.end || *r.p != ':') { jfail(&r, "expected ':'"); goto out; }
        r.p++;
        ws(&r);
        if (r.p < r.end && *r.p == '{') {
            r.p++;
            llm_entry e = {.price = {-1, -1, -1, -1, -1}, .long_price = {-1, -1, -1, -1, -1},
                           .long_at = -1, .ctx = -1, .max_out = -1, .max_tokens = -1};
            ws(&r);
            if (r.p < r.end && *r.p == '}') r.p++;
            else for (;;) {
                ws(&r);
                if (jstring(&r, &field)) goto out;
                ws(&r);
                if (r.p >= r.end || *r.p != ':') { jfail(&r, "expected ':'"); goto out; }
                r.p++;
                const char *v;
                size_t vl;
                int kind = jvalue(&r, &v, &vl, &scratch);
                if (kind < 0) goto out;
                llm_field(&e, field.data, v, vl, kind);
                ws(&r);
                if (r.p < r.end && *r.p == ',') { r.p++; continue; }
                if (r.p < r.end && *r.p == '}') { r.p++; break; }
                jfail(&r, "expected ',' or '}'");
                goto out;
            }
            if (e.priced && !e.bad && strcmp(key.data, "sample_spec")) {
                /* no litellm_provider: "PROVIDER/MODEL" names it, and a bare name is
                 * OpenAI's, as LiteLLM assumes */
                const char *model = key.data, *slash = strchr(model, '/');
                if (!e.provider[0] && slash && (size_t)(slash - model) < sizeof e.provider) {
                    memcpy(e.provider, model, (size_t)(slash - model));
                    e.provider[slash - model] = 0;
                }
                const char *vendor = e.provider[0] ? vendor_of_litellm(e.provider) : "openai";
                size_t pl = strlen(e.provider);   /* "gemini/gemini-2.5-pro" -> "gemini-2.5-pro" */
                if (pl && !strncmp(model, e.provider, pl) && model[pl] == '/') model += pl + 1;
                bool long_reasoning = e.long_price.reasoning >= 0;
                if (e.price.reasoning < 0) e.price.reasoning = e.price.output;
                if (e.long_at >= 0) {   /* a tier inherits what it does not restate */
                    if (e.long_price.input < 0) e.long_price.input = e.price.input;
                    if (e.long_price.cache_read < 0) e.long_price.cache_read = e.price.cache_read;
                    if (e.long_price.cache_write < 0) e.long_price.cache_write = e.price.cache_write;
                    if (e.long_price.output < 0) e.long_price.output = e.price.output;
                    if (!long_reasoning) e.long_price.reasoning = e.long_price.output;
                }
                cost_model m = {
                    .vendor = vendor, .model = model, .price = e.price,
                    .long_threshold = e.long_at, .long_price = e.long_price,
                    .context_window = e.ctx > 0 ? e.ctx : -1,
                    .max_output_tokens = e.max_out > 0 ? e.max_out : (e.max_tokens > 0 ? e.max_tokens : -1),
                    .source = r.source,
                };
                cost_catalog_put(c, &m);
                taken++;
            }
        } else {
            const char *v;
            size_t vl;
            if (jvalue(&r, &v, &vl, &scratch) < 0) goto out;
        }
        ws(&r);
        if (r.p < r.end && *r.p == ',') { r.p++; continue; }
        if (r.p < r.end && *r.p == '}') { r.p++; break; }
        jfail(&r, "expected ',' or '}'");
        goto out;
    }
tail:
    ws(&r);
    if (r.p != r.end) { jfail(&r, "trailing characters after the object"); rc = -1; goto out; }
    rc = taken;
out:
    sg_buf_free(&key); sg_buf_free(&field); sg_buf_free(&scratch);
    return rc;
}

int cost_catalog_load_litellm(cost_catalog *c, const char *path, sg_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return sg_fail(err, "%s: %s", path, strerror(errno));
    sg_buf b;
    sg_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        sg_buf_append(&b, chunk, n);
        if (b.len > 256u << 20) { fclose(f); sg_buf_free(&b); return sg_fail(err, "%s: larger than 256 MiB", path); }
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) { sg_buf_free(&b); return sg_fail(err, "%s: read error", path); }
    int rc = cost_catalog_load_litellm_mem(c, b.data ? b.data : "", b.len, path, err);
    sg_buf_free(&b);
    return rc;
}

/* ---- arithmetic -------------------------------------------------------------------------- */

static bool add_class(int64_t tokens, int64_t price, int64_t *sum, bool *unpriced) {
    if (tokens <= 0) return true;
    if (price < 0) { *unpriced = true; return true; }
    int64_t t;
    if (__builtin_mul_overflow(tokens, price, &t) || __builtin_add_overflow(*sum, t, sum)) return false;
    return true;
}

int64_t cost_compute_pico(const gw_price *p, const gw_usage *u) {
    if (!p) return COST_UNPRICED;
    if (u->input < 0 && u->cache_read < 0 && u->cache_write < 0 && u->output < 0) return COST_NO_USAGE;
    int64_t sum = 0;
    bool unpriced = false;
    int64_t reasoning = u->reasoning > 0 ? u->reasoning : 0;
    int64_t output = u->output > 0 ? u->output : 0;
    if (reasoning > output) reasoning = output;   /* reasoning is part of output */
    int64_t rprice = p->reasoning >= 0 ? p->reasoning : p->output;
    if (!add_class(u->input, p->input, &sum, &unpriced) ||
        !add_class(u->cache_read, p->cache_read, &sum, &unpriced) ||
        !add_class(u->cache_write, p->cache_write, &sum, &unpriced) ||
        !add_class(output - reasoning, p->output, &sum, &unpriced) ||
        !add_class(reasoning, rprice, &sum, &unpriced))
        return COST_UNPRICED;
    return unpriced ? COST_UNPRICED : sum;
}

static int64_t pico_to_micro_half_up(int64_t pico) {
    return pico / PICO_PER_MICRO + (pico % PICO_PER_MICRO >= PICO_PER_MICRO / 2 ? 1 : 0);
}

int64_t cost_compute_price(const gw_price *p, const gw_usage *u) {
    int64_t pico = cost_compute_pico(p, u);
    return pico < 0 ? pico : pico_to_micro_half_up(pico);
}

static int64_t prompt_tokens(const gw_usage *u) {
    return (u->input > 0 ? u->input : 0) + (u->cache_read > 0 ? u->cache_read : 0) +
           (u->cache_write > 0 ? u->cache_write : 0);
}

int64_t cost_compute(const cost_model *m, const gw_usage *u) {
    if (!m) return COST_UNPRICED;
    const gw_price *p = m->long_threshold >= 0 && prompt_tokens(u) > m->long_threshold ? &m->long_price : &m->price;
    return cost_compute_price(p, u);
}

int64_t cost_of_failure(const cost_model *m, const gw_usage *u) {
    if (!m) return COST_UNPRICED;
    int64_t c = cost_compute(m, u);
    return c == COST_NO_USAGE ? 0 : c;
}

int64_t cost_max(const cost_model *m, int64_t prompt, int64_t max_tokens) {
    if (!m) return COST_UNPRICED;
    if (max_tokens < 0) max_tokens = m->max_output_tokens;
    if (max_tokens < 0 || prompt < 0) return COST_UNPRICED;
    const gw_price *p = m->long_threshold >= 0 && prompt > m->long_threshold ? &m->long_price : &m->price;
    int64_t in = p->input > p->cache_write ? p->input : p->cache_write;
    int64_t out = p->output > p->reasoning ? p->output : p->reasoning;
    if ((prompt > 0 && in < 0) || (max_tokens > 0 && out < 0)) return COST_UNPRICED;
    int64_t a = 0, b = 0, sum;
    if ((prompt > 0 && __builtin_mul_overflow(prompt, in, &a)) || (max_tokens > 0 && __builtin_mul_overflow(max_tokens, out, &b)) ||
        __builtin_add_overflow(a, b, &sum))
        return COST_UNPRICED;
    return sum / PICO_PER_MICRO + (sum % PICO_PER_MICRO ? 1 : 0);
}

/* ---- estimates --------------------------------------------------------------------------- */

int64_t cost_estimate_tokens(const sg_tokenizer *tok, const char *text, size_t len) {
    if (!text || !len) return 0;
    if (tok) {
        sg_ids ids = {0};
        sg_error err;
        if (tok_encode(tok, text, len, false, &ids, &err) == 0) {
            int64_t n = (int64_t)ids.n;
            sg_ids_free(&ids);
            return n;
        }
        sg_ids_free(&ids);
    }
    int64_t n = 0, ascii_run = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch < 0x80) { ascii_run++; continue; }
        n += (ascii_run + 3) / 4;
        ascii_run = 0;
        if ((ch & 0xC0) != 0x80) n++;   /* a lead byte (or a stray one): one character */
    }
    return n + (ascii_run + 3) / 4;
}

void cost_estimate_usage(const sg_tokenizer *tok, const char *prompt, size_t prompt_len,
                         const char *completion, size_t completion_len, gw_usage *u) {
    u->input = cost_estimate_tokens(tok, prompt, prompt ? prompt_len : 0);
    u->cache_read = 0;
    u->cache_write = 0;
    u->output = cost_estimate_tokens(tok, completion, completion ? completion_len : 0);
    u->reasoning = -1;
    u->estimated = true;
}

/* ---- money text -------------------------------------------------------------------------- */

int cost_format_usd(int64_t micro, char *out, size_t cap) {   /* no printf: a request log line has one */
    char t[24];
    size_t n = 0;
    uint64_t v = micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;
    if (micro < 0) t[n++] = '-';
    n += sg_fmt_u64(t + n, v / 1000000);
    t[n++] = '.';
    uint64_t frac = v % 1000000;
    for (int i = 6; i > 0; i--, frac /= 10) t[n + (size_t)i - 1] = (char)('0' + frac % 10);
    n += 6;
    if (!cap) return 0;
    if (n > cap - 1) n = cap - 1;
    memcpy(out, t, n);
    out[n] = 0;
    return (int)n;
}
