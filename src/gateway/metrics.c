/* metrics.c: see metrics.h. Series live in insertion order in an array, found through an
 * open-addressing label_index keyed by their labels. */
#include "gateway/metrics.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Histogram upper bounds in milliseconds (rendered as seconds); +Inf is implied. */
static const uint32_t k_bounds_ms[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000};
#define NB (sizeof k_bounds_ms / sizeof k_bounds_ms[0])

typedef struct histo {
    uint64_t buckets[NB];     /* non-cumulative: observations <= bound and > the previous */
    uint64_t count, sum_ms;
} histo;

typedef struct series {
    char *route, *provider, *model;
    uint64_t requests, errors, fallbacks, cost_micro, unpriced, estimated;
    uint64_t tokens[5];       /* input, cache_read, cache_write, output, reasoning */
    histo latency, ttft;
} series;

typedef struct att_series {
    char *route, *provider, *model;
    uint64_t ok, failed, limited;   /* limited: skipped at the provider's own limits */
} att_series;

typedef struct label_index {
    size_t *slots;            /* position + 1; 0 = empty */
    size_t cap;
} label_index;

struct metrics {
    size_t max_series;
    series *s;
    size_t n_s, cap_s;
    label_index si;
    att_series *a;
    size_t n_a, cap_a;
    label_index ai;
};

static uint64_t hash3(const char *a, const char *b, const char *c) {
    uint64_t h = 1469598103934665603ull;
    const char *parts[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        for (const char *p = parts[i]; *p; p++) { h ^= (unsigned char)*p; h *= 1099511628211ull; }
        h ^= 0xff;
        h *= 1099511628211ull;
    }
    return h;
}

metrics *metrics_new(size_t max_series) {
    metrics *m = sg_xcalloc(1, sizeof *m);
    m->max_series = max_series ? max_series : 1000;
    return m;
}

void metrics_free(metrics *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_s; i++) { free(m->s[i].route); free(m->s[i].provider); free(m->s[i].model); }
    for (size_t i = 0; i < m->n_a; i++) { free(m->a[i].route); free(m->a[i].provider); free(m->a[i].model); }
    free(m->s);
    free(m->a);
    free(m->si.slots);
    free(m->ai.slots);
    free(m);
}

/* Finds the position of (r, p, md) among n entries whose labels get() returns; -1. */
typedef void (*labels_fn)(const void *base, size_t i, const char **r, const char **p, const char **md);

static void series_labels(const void *base, size_t i, const char **r, const char **p, const char **md) {
    const series *s = (const series *)base + i;
    *r = s->route; *p = s->provider; *md = s->model;
}

static void att_labels(const void *base, size_t i, const char **r, const char **p, const char **md) {
    const att_series *s = (const att_series *)base + i;
    *r = s->route; *p = s->provider; *md = s->model;
}

static long index_find(const label_index *ix, const void *base, labels_fn get, const char *r, const char *p, const char *md,
                       size_t *slot) {
    if (!ix->cap) return -1;
    size_t mask = ix->cap - 1;
    for (size_t i = hash3(r, p, md) & mask;; i = (i + 1) & mask) {
        if (!ix->slots[i]) { *slot = i; return -1; }
        const char *a, *b, *c;
        get(base, ix->slots[i] - 1, &a, &b, &c);
        if (!strcmp(a, r) && !strcmp(b, p) && !strcmp(c, md)) return (long)(ix->slots[i] - 1);
    }
}

static void index_rebuild(label_index *ix, const void *base, size_t n, labels_fn get) {
    free(ix->slots);
    ix->cap = 64;
    while (ix->cap < n * 2 + 2) ix->cap *= 2;
    ix->slots = sg_xcalloc(ix->cap, sizeof *ix->slots);
    for (size_t k = 0; k < n; k++) {
        const char *a, *b, *c;
        get(base, k, &a, &b, &c);
        size_t mask = ix->cap - 1, i = hash3(a, b, c) & mask;
        while (ix->slots[i]) i = (i + 1) & mask;
        ix->slots[i] = k + 1;
    }
}

/* The series for these labels, created if there is room, else folded (metrics.h). */
static series *get_series(metrics *m, const char *r, const char *p, const char *md) {
    for (int fold = 0; fold < 3; fold++) {
        if (fold == 1) md = "other";
        if (fold == 2) r = p = "other";
        size_t slot = 0;
        long at = index_find(&m->si, m->s, series_labels, r, p, md, &slot);
        if (at >= 0) return &m->s[at];
        if (m->n_s >= m->max_series * (fold + 1) && fold < 2) continue;
        if (m->n_s == m->cap_s) {
            m->cap_s = m->cap_s ? m->cap_s * 2 : 16;
            m->s = sg_xrealloc(m->s, m->cap_s * sizeof *m->s);
        }
        series *s = &m->s[m->n_s++];
        memset(s, 0, sizeof *s);
        s->route = sg_xstrdup(r);
        s->provider = sg_xstrdup(p);
        s->model = sg_xstrdup(md);
        if (m->n_s * 2 + 2 > m->si.cap) index_rebuild(&m->si, m->s, m->n_s, series_labels);
        else m->si.slots[slot] = m->n_s;
        return s;
    }
    return NULL;   /* not reached */
}

static att_series *get_att(metrics *m, const char *r, const char *p, const char *md) {
    for (int fold = 0; fold < 3; fold++) {
        if (fold == 1) md = "other";
        if (fold == 2) r = p = "other";
        size_t slot = 0;
        long at = index_find(&m->ai, m->a, att_labels, r, p, md, &slot);
        if (at >= 0) return &m->a[at];
        if (m->n_a >= m->max_series * (fold + 1) && fold < 2) continue;
        if (m->n_a == m->cap_a) {
            m->cap_a = m->cap_a ? m->cap_a * 2 : 16;
            m->a = sg_xrealloc(m->a, m->cap_a * sizeof *m->a);
        }
        att_series *s = &m->a[m->n_a++];
        memset(s, 0, sizeof *s);
        s->route = sg_xstrdup(r);
        s->provider = sg_xstrdup(p);
        s->model = sg_xstrdup(md);
        if (m->n_a * 2 + 2 > m->ai.cap) index_rebuild(&m->ai, m->a, m->n_a, att_labels);
        else m->ai.slots[slot] = m->n_a;
        return s;
    }
    return NULL;
}

static void observe(histo *h, int64_t ms) {
    if (ms < 0) return;
    size_t b = 0;
    while (b < NB && (uint64_t)ms > k_bounds_ms[b]) b++;
    if (b < NB) h->buckets[b]++;
    h->count++;
    h->sum_ms += (uint64_t)ms;
}

static uint64_t pos(int64_t v) { return v > 0 ? (uint64_t)v : 0; }

void metrics_observe_request(metrics *m, const ledger_record *r) {
    const char *route = r->route ? r->route : "";
    series *s = get_series(m, route, r->provider ? r->provider : "", r->model ? r->model : "");
    s->requests++;
    if (r->status >= 400) s->errors++;
    s->fallbacks += (uint64_t)ledger_record_fallbacks(r);
    s->tokens[0] += pos(r->usage.input);
    s->tokens[1] += pos(r->usage.cache_read);
    s->tokens[2] += pos(r->usage.cache_write);
    s->tokens[3] += pos(r->usage.output);
    s->tokens[4] += pos(r->usage.reasoning);
    if (r->cost_micro >= 0) s->cost_micro += (uint64_t)r->cost_micro;
    else s->unpriced++;
    if (r->usage.estimated) s->estimated++;
    observe(&s->latency, r->latency_ms);
    observe(&s->ttft, r->ttft_ms);
    for (size_t i = 0; i < r->n_attempts; i++) {
        const ledger_attempt *a = &r->attempts[i];
        att_series *t = get_att(m, route, a->provider ? a->provider : "", a->model ? a->model : "");
        if (a->error && !strcmp(a->error, "limited")) t->limited++;
        else if (a->error) t->failed++;
        else t->ok++;
    }
}

/* ---- rendering ----------------------------------------------------------------------------- */

static void label_value(sg_buf *b, const char *v) {
    for (; *v; v++) {
        if (*v == '\\') sg_buf_puts(b, "\\\\");
        else if (*v == '"') sg_buf_puts(b, "\\\"");
        else if (*v == '\n') sg_buf_puts(b, "\\n");
        else sg_buf_putc(b, *v);
    }
}

static void labels(sg_buf *b, const char *name, const char *r, const char *p, const char *md, const char *extra) {
    sg_buf_puts(b, name);
    sg_buf_puts(b, "{route=\"");
    label_value(b, r);
    sg_buf_puts(b, "\",provider=\"");
    label_value(b, p);
    sg_buf_puts(b, "\",model=\"");
    label_value(b, md);
    sg_buf_putc(b, '"');
    if (extra) { sg_buf_putc(b, ','); sg_buf_puts(b, extra); }
    sg_buf_puts(b, "} ");
}

static void head(sg_buf *b, const char *name, const char *type, const char *help) {
    sg_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

typedef uint64_t (*field_fn)(const series *s, int arg);
static uint64_t f_requests(const series *s, int a) { (void)a; return s->requests; }
static uint64_t f_errors(const series *s, int a) { (void)a; return s->errors; }
static uint64_t f_fallbacks(const series *s, int a) { (void)a; return s->fallbacks; }
static uint64_t f_cost(const series *s, int a) { (void)a; return s->cost_micro; }
static uint64_t f_unpriced(const series *s, int a) { (void)a; return s->unpriced; }
static uint64_t f_estimated(const series *s, int a) { (void)a; return s->estimated; }

static void counter(const metrics *m, sg_buf *b, const char *name, const char *help, field_fn f) {
    head(b, name, "counter", help);
    for (size_t i = 0; i < m->n_s; i++) {
        const series *s = &m->s[i];
        labels(b, name, s->route, s->provider, s->model, NULL);
        sg_buf_printf(b, "%" PRIu64 "\n", f(s, 0));
    }
}

static void histogram(const metrics *m, sg_buf *b, const char *name, const char *help, bool ttft) {
    head(b, name, "histogram", help);
    char bucket[128], le[48];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    for (size_t i = 0; i < m->n_s; i++) {
        const series *s = &m->s[i];
        const histo *h = ttft ? &s->ttft : &s->latency;
        uint64_t cum = 0;
        for (size_t k = 0; k < NB; k++) {
            cum += h->buckets[k];
            snprintf(le, sizeof le, "le=\"%u.%03u\"", k_bounds_ms[k] / 1000, k_bounds_ms[k] % 1000);
            labels(b, bucket, s->route, s->provider, s->model, le);
            sg_buf_printf(b, "%" PRIu64 "\n", cum);
        }
        labels(b, bucket, s->route, s->provider, s->model, "le=\"+Inf\"");
        sg_buf_printf(b, "%" PRIu64 "\n", h->count);
        char n2[128];
        snprintf(n2, sizeof n2, "%s_sum", name);
        labels(b, n2, s->route, s->provider, s->model, NULL);
        sg_buf_printf(b, "%" PRIu64 ".%03" PRIu64 "\n", h->sum_ms / 1000, h->sum_ms % 1000);
        snprintf(n2, sizeof n2, "%s_count", name);
        labels(b, n2, s->route, s->provider, s->model, NULL);
        sg_buf_printf(b, "%" PRIu64 "\n", h->count);
    }
}

void metrics_render(const metrics *m, sg_buf *b) {
    counter(m, b, "smolgate_requests_total", "Requests answered, by route and serving provider and model.", f_requests);
    counter(m, b, "smolgate_request_errors_total", "Requests answered with a status of 400 or more.", f_errors);
    counter(m, b, "smolgate_fallbacks_total", "Moves to another target within a request.", f_fallbacks);
    static const char *const classes[5] = {"input", "cache_read", "cache_write", "output", "reasoning"};
    head(b, "smolgate_tokens_total", "counter",
         "Tokens by usage class: input is uncached input; reasoning is part of output.");
    for (size_t i = 0; i < m->n_s; i++) {
        const series *s = &m->s[i];
        for (int c = 0; c < 5; c++) {
            char extra[32];
            snprintf(extra, sizeof extra, "class=\"%s\"", classes[c]);
            labels(b, "smolgate_tokens_total", s->route, s->provider, s->model, extra);
            sg_buf_printf(b, "%" PRIu64 "\n", s->tokens[c]);
        }
    }
    counter(m, b, "smolgate_cost_microdollars_total", "Cost of priced requests, in micro-dollars (1e-6 USD).", f_cost);
    counter(m, b, "smolgate_unpriced_requests_total", "Requests whose cost is unknown (no price for a class they used).",
            f_unpriced);
    counter(m, b, "smolgate_estimated_usage_requests_total", "Requests whose usage was counted by smolgate, not reported.",
            f_estimated);
    head(b, "smolgate_attempts_total", "counter", "Upstream attempts, by the attempt's own target and outcome.");
    for (size_t i = 0; i < m->n_a; i++) {
        const att_series *a = &m->a[i];
        labels(b, "smolgate_attempts_total", a->route, a->provider, a->model, "outcome=\"ok\"");
        sg_buf_printf(b, "%" PRIu64 "\n", a->ok);
        labels(b, "smolgate_attempts_total", a->route, a->provider, a->model, "outcome=\"error\"");
        sg_buf_printf(b, "%" PRIu64 "\n", a->failed);
        labels(b, "smolgate_attempts_total", a->route, a->provider, a->model, "outcome=\"limited\"");
        sg_buf_printf(b, "%" PRIu64 "\n", a->limited);
    }
    histogram(m, b, "smolgate_request_duration_seconds", "Request start to the end of the response.", false);
    histogram(m, b, "smolgate_time_to_first_token_seconds", "Request start to the first byte of the answer.", true);
}

/* The upper bound (ms) of the bucket holding quantile q of h; past the last bound, the
 * mean of the observations there is not known: the last bound. -1 when empty. */
static int64_t quantile_ms(const histo *h, double q) {
    if (!h->count) return -1;
    uint64_t want = (uint64_t)(q * (double)h->count + 0.999999), cum = 0;
    if (!want) want = 1;
    for (size_t k = 0; k < NB; k++) {
        cum += h->buckets[k];
        if (cum >= want) return k_bounds_ms[k];
    }
    return k_bounds_ms[NB - 1];
}

static json_t *histo_json(const histo *h) {
    return json_pack("{s:I,s:I,s:I,s:I}", "count", (json_int_t)h->count, "sum", (json_int_t)h->sum_ms, "p50",
                     (json_int_t)quantile_ms(h, 0.5), "p95", (json_int_t)quantile_ms(h, 0.95));
}

json_t *metrics_json(const metrics *m) {
    json_t *a = json_array();
    for (size_t i = 0; i < m->n_s; i++) {
        const series *s = &m->s[i];
        json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "route", s->route, "provider", s->provider,
                              "model", s->model, "requests", (json_int_t)s->requests, "errors", (json_int_t)s->errors,
                              "fallbacks", (json_int_t)s->fallbacks, "cost_micro", (json_int_t)s->cost_micro,
                              "unpriced", (json_int_t)s->unpriced, "input_tokens", (json_int_t)s->tokens[0],
                              "output_tokens", (json_int_t)s->tokens[3]);
        json_object_set_new(o, "latency_ms", histo_json(&s->latency));
        json_object_set_new(o, "ttft_ms", histo_json(&s->ttft));
        json_array_append_new(a, o);
    }
    return a;
}

void metrics_render_ledger(const ledger_stats *s, sg_buf *b) {
    head(b, "smolgate_ledger_appended_total", "counter", "Records written to the ledger spool by this process.");
    sg_buf_printf(b, "smolgate_ledger_appended_total %" PRIu64 "\n", s->appended);
    head(b, "smolgate_ledger_delivered_total", "counter", "Records delivered to the ledger database.");
    sg_buf_printf(b, "smolgate_ledger_delivered_total %" PRIu64 "\n", s->delivered);
    head(b, "smolgate_ledger_duplicates_total", "counter", "Re-delivered records the database already had.");
    sg_buf_printf(b, "smolgate_ledger_duplicates_total %" PRIu64 "\n", s->duplicates);
    head(b, "smolgate_ledger_pending", "gauge", "Records of this process waiting in the spool.");
    sg_buf_printf(b, "smolgate_ledger_pending %" PRIu64 "\n", s->pending);
    head(b, "smolgate_ledger_db_failures_total", "counter", "Failed database connections or transactions.");
    sg_buf_printf(b, "smolgate_ledger_db_failures_total %" PRIu64 "\n", s->db_failures);
    head(b, "smolgate_ledger_append_failures_total", "counter", "Records lost to a spool write error.");
    sg_buf_printf(b, "smolgate_ledger_append_failures_total %" PRIu64 "\n", s->append_failures);
    head(b, "smolgate_ledger_malformed_total", "counter", "Spool lines skipped because they did not parse.");
    sg_buf_printf(b, "smolgate_ledger_malformed_total %" PRIu64 "\n", s->malformed);
    head(b, "smolgate_ledger_rejected_total", "counter", "Records the database refused for their data (kept in rejected.jsonl).");
    sg_buf_printf(b, "smolgate_ledger_rejected_total %" PRIu64 "\n", s->rejected);
    head(b, "smolgate_ledger_database_up", "gauge", "1 while the ledger database is connected.");
    sg_buf_printf(b, "smolgate_ledger_database_up %d\n", s->db_connected ? 1 : 0);
}
