/* ledger_usage.c: see ledger_usage.h. Filter parsing, one aggregate SQL query for both
 * engines, the JSON / CSV / table renderers, and the JSON read back (usage over HTTP). */
#include "gateway/ledger_usage.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/cost.h"
#include "gateway/ledger_db.h"

static const char *const k_dim_names[USAGE_N_DIMS] = {"key", "route", "provider", "model", "hour", "day"};
static const char *const k_dim_sql[USAGE_N_DIMS] = {
    "key_id", "route", "provider", "model", "(ts_ms / 3600000) * 3600000", "(ts_ms / 86400000) * 86400000",
};

const char *usage_dim_name(usage_dim d) { return d < USAGE_N_DIMS ? k_dim_names[d] : "?"; }

void usage_filter_init(usage_filter *f) {
    memset(f, 0, sizeof *f);
    f->from_ms = -1;
    f->to_ms = -1;
}

/* ---- time -------------------------------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {   /* 1970-01-01 = 0 */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int digits(const char **p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

int usage_parse_time(const char *s, int64_t *ms) {
    if (!s || !*s) return -1;
    bool all = true;
    for (const char *p = s; *p; p++) all = all && isdigit((unsigned char)*p);
    if (all) {
        if (strlen(s) > 15) return -1;
        int64_t v = strtoll(s, NULL, 10);
        *ms = v >= 100000000000ll ? v : v * 1000;   /* >= 1e11: already milliseconds */
        return 0;
    }
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac_ms = 0;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d)) return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1]) return -1;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap) return -1;
    int64_t off_min = 0;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi)) return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec)) return -1;
            if (*p == '.' || *p == ',') {
                p++;
                int n = 0;
                for (; isdigit((unsigned char)*p); p++, n++)
                    if (n < 3) frac_ms = frac_ms * 10 + (*p - '0');
                if (!n) return -1;
                for (; n < 3; n++) frac_ms *= 10;
            }
        }
        if (h > 23 || mi > 59 || sec > 60) return -1;
        if (*p == 'Z' || *p == 'z') p++;
        else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (digits(&p, 2, &oh)) return -1;
            if (*p == ':') p++;
            if (*p && digits(&p, 2, &om)) return -1;
            if (oh > 23 || om > 59) return -1;
            off_min = sign * (oh * 60 + om);
        }
    }
    if (*p) return -1;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    *ms = ((days * 86400 + h * 3600 + mi * 60 + sec) - off_min * 60) * 1000 + frac_ms;
    return 0;
}

static void format_bucket(int64_t ms, bool hour, char *out, size_t cap) {
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    int64_t rem = secs - days * 86400;
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (hour) snprintf(out, cap, "%04d-%02u-%02uT%02d:00:00Z", y, m, d, (int)(rem / 3600));
    else snprintf(out, cap, "%04d-%02u-%02u", y, m, d);
}

static void format_time(int64_t ms, char *out, size_t cap) {
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    int64_t rem = secs - days * 86400;
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(out, cap, "%04d-%02u-%02uT%02d:%02d:%02dZ", y, m, d, (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60));
}

/* ---- filters ----------------------------------------------------------------------------- */

static int set_str(char *dst, size_t cap, const char *name, const char *v, sg_error *err) {
    if (strlen(v) >= cap) return sg_fail(err, "%s: longer than %zu bytes", name, cap - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

int usage_filter_set(usage_filter *f, const char *name, const char *v, sg_error *err) {
    if (!strcmp(name, "from") || !strcmp(name, "to")) {
        int64_t ms;
        if (usage_parse_time(v, &ms))
            return sg_fail(err, "%s: \"%.64s\" is not a time (2025-11-24, 2025-11-24T10:00:00Z, or unix seconds)", name, v);
        if (name[0] == 'f') f->from_ms = ms;
        else f->to_ms = ms;
        return 0;
    }
    if (!strcmp(name, "key")) return set_str(f->key, sizeof f->key, name, v, err);
    if (!strcmp(name, "route")) return set_str(f->route, sizeof f->route, name, v, err);
    if (!strcmp(name, "provider")) return set_str(f->provider, sizeof f->provider, name, v, err);
    if (!strcmp(name, "model")) return set_str(f->model, sizeof f->model, name, v, err);
    if (!strcmp(name, "group_by") || !strcmp(name, "group-by")) {
        f->n_group = 0;
        const char *p = v;
        bool have_time = false;
        while (*p) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            while (n && *p == ' ') { p++; n--; }
            while (n && p[n - 1] == ' ') n--;
            int d = -1;
            for (int k = 0; k < USAGE_N_DIMS; k++)
                if (strlen(k_dim_names[k]) == n && !strncmp(p, k_dim_names[k], n)) d = k;
            if (d < 0) return sg_fail(err, "group_by: unknown \"%.*s\" (key, route, provider, model, hour, day)", (int)(n > 32 ? 32 : n), p);
            bool dup = false;
            for (size_t k = 0; k < f->n_group; k++) dup = dup || f->group[k] == (usage_dim)d;
            if (dup) return sg_fail(err, "group_by: \"%s\" given twice", k_dim_names[d]);
            if (d == USAGE_HOUR || d == USAGE_DAY) {
                if (have_time) return sg_fail(err, "group_by: hour and day together");
                have_time = true;
            }
            f->group[f->n_group++] = (usage_dim)d;
            if (!e) break;
            p = e + 1;
        }
        return 0;
    }
    return sg_fail(err, "unknown parameter \"%.64s\" (from, to, key, route, provider, model, group_by)", name);
}

static int hexval(char c) {
    return isdigit((unsigned char)c) ? c - '0' : isxdigit((unsigned char)c) ? tolower((unsigned char)c) - 'a' + 10 : -1;
}

/* Decodes [s, s+n) into out (cap bytes, NUL included). */
static int url_decode(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') c = ' ';
        else if (c == '%') {
            if (i + 2 >= n) return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == 0 || o + 1 >= cap) return -1;
        out[o++] = c;
    }
    out[o] = 0;
    return 0;
}

int usage_each_param(const char *q, usage_param_fn fn, void *arg, sg_error *err) {
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        if (n) {
            const char *eq = memchr(q, '=', n);
            size_t kn = eq ? (size_t)(eq - q) : n;
            char name[32], value[512];
            if (url_decode(q, kn, name, sizeof name)) return sg_fail(err, "bad query parameter name");
            if (url_decode(eq ? eq + 1 : q + n, eq ? n - kn - 1 : 0, value, sizeof value))
                return sg_fail(err, "%s: bad or too long value", name);
            int rc = fn(arg, name, value, err);
            if (rc) return rc;
        }
        if (!amp) break;
        q = amp + 1;
    }
    return 0;
}

static int filter_param(void *arg, const char *name, const char *value, sg_error *err) {
    return usage_filter_set(arg, name, value, err) ? -1 : 0;
}

int usage_parse_query(usage_filter *f, const char *q, sg_error *err) {
    return usage_each_param(q, filter_param, f, err);
}

/* ---- the query --------------------------------------------------------------------------- */

typedef struct collect {
    const usage_filter *f;
    usage_result *out;
    size_t cap;
} collect;

static int64_t num(const char *s) { return s ? strtoll(s, NULL, 10) : 0; }

static void add_row(usage_row *t, const usage_row *r) {
    t->requests += r->requests;
    t->errors += r->errors;
    t->fallbacks += r->fallbacks;
    t->input += r->input;
    t->cache_read += r->cache_read;
    t->cache_write += r->cache_write;
    t->output += r->output;
    t->reasoning += r->reasoning;
    t->cost_micro += r->cost_micro;
    t->unpriced += r->unpriced;
    t->estimated += r->estimated;
}

static int on_row(void *arg, int ncols, const char *const *cols) {
    collect *c = arg;
    size_t g = c->f->n_group;
    if ((size_t)ncols < g + 11) return 1;
    if (c->out->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->out->rows = sg_xrealloc(c->out->rows, c->cap * sizeof *c->out->rows);
    }
    usage_row *r = &c->out->rows[c->out->n];
    memset(r, 0, sizeof *r);
    r->bucket_ms = -1;
    for (size_t k = 0; k < g; k++) {
        usage_dim d = c->f->group[k];
        if (d == USAGE_HOUR || d == USAGE_DAY) r->bucket_ms = num(cols[k]);
        else r->dims[d] = cols[k] ? sg_xstrdup(cols[k]) : NULL;
    }
    const char *const *v = cols + g;
    r->requests = num(v[0]);
    if (!r->requests && !g) return 0;   /* no group and no record: no row */
    r->errors = num(v[1]);
    r->fallbacks = num(v[2]);
    r->input = num(v[3]);
    r->cache_read = num(v[4]);
    r->cache_write = num(v[5]);
    r->output = num(v[6]);
    r->reasoning = num(v[7]);
    r->cost_micro = num(v[8]);
    r->unpriced = num(v[9]);
    r->estimated = num(v[10]);
    add_row(&c->out->total, r);
    c->out->n++;
    return 0;
}

int usage_query(ledger_db *db, const usage_filter *f, usage_result *out, sg_error *err) {
    memset(out, 0, sizeof *out);
    out->total.bucket_ms = -1;
    sg_buf sql;
    sg_buf_init(&sql);
    sg_buf_puts(&sql, "SELECT ");
    for (size_t k = 0; k < f->n_group; k++) sg_buf_printf(&sql, "%s, ", k_dim_sql[f->group[k]]);
    sg_buf_puts(&sql, "COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(fallbacks), "
                      "SUM(COALESCE(input_tokens, 0)), SUM(COALESCE(cache_read_tokens, 0)), "
                      "SUM(COALESCE(cache_write_tokens, 0)), SUM(COALESCE(output_tokens, 0)), "
                      "SUM(COALESCE(reasoning_tokens, 0)), SUM(COALESCE(cost_micro, 0)), "
                      "SUM(CASE WHEN cost_micro IS NULL THEN 1 ELSE 0 END), "
                      "SUM(CASE WHEN usage_estimated THEN 1 ELSE 0 END) FROM requests WHERE 1 = 1");
    const char *params[6];
    char from[24], to[24];
    size_t np = 0;
    if (f->from_ms >= 0) { snprintf(from, sizeof from, "%" PRId64, f->from_ms); params[np++] = from; sg_buf_puts(&sql, " AND ts_ms >= CAST(? AS BIGINT)"); }
    if (f->to_ms >= 0) { snprintf(to, sizeof to, "%" PRId64, f->to_ms); params[np++] = to; sg_buf_puts(&sql, " AND ts_ms < CAST(? AS BIGINT)"); }
    if (*f->key) { params[np++] = f->key; sg_buf_puts(&sql, " AND key_id = ?"); }
    if (*f->route) { params[np++] = f->route; sg_buf_puts(&sql, " AND route = ?"); }
    if (*f->provider) { params[np++] = f->provider; sg_buf_puts(&sql, " AND provider = ?"); }
    if (*f->model) { params[np++] = f->model; sg_buf_puts(&sql, " AND model = ?"); }
    if (f->n_group) {
        sg_buf_puts(&sql, " GROUP BY ");
        for (size_t k = 0; k < f->n_group; k++) sg_buf_printf(&sql, k ? ", %zu" : "%zu", k + 1);
        sg_buf_puts(&sql, " ORDER BY ");
        for (size_t k = 0; k < f->n_group; k++) sg_buf_printf(&sql, k ? ", %zu NULLS FIRST" : "%zu NULLS FIRST", k + 1);
    }
    collect c = {f, out, 0};
    int rc = ledger_db_select(db, sql.data, params, np, on_row, &c, err);
    sg_buf_free(&sql);
    if (rc) usage_result_free(out);
    return rc;
}

void usage_result_free(usage_result *r) {
    for (size_t i = 0; i < r->n; i++)
        for (int d = 0; d < USAGE_N_DIMS; d++) free(r->rows[i].dims[d]);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

/* ---- rendering --------------------------------------------------------------------------- */

/* The text of one group value of a row ("" and false for a NULL). */
static bool dim_text(const usage_row *r, usage_dim d, char *buf, size_t cap, const char **out) {
    if (d == USAGE_HOUR || d == USAGE_DAY) {
        format_bucket(r->bucket_ms, d == USAGE_HOUR, buf, cap);
        *out = buf;
        return true;
    }
    *out = r->dims[d] ? r->dims[d] : "";
    return r->dims[d] != NULL;
}

static void json_sums(sg_buf *b, const usage_row *r) {
    char usd[32];
    cost_format_usd(r->cost_micro, usd, sizeof usd);
    sg_buf_printf(b, "\"requests\":%" PRId64 ",\"errors\":%" PRId64 ",\"fallbacks\":%" PRId64 ",\"input_tokens\":%" PRId64
                     ",\"cache_read_tokens\":%" PRId64 ",\"cache_write_tokens\":%" PRId64 ",\"output_tokens\":%" PRId64
                     ",\"reasoning_tokens\":%" PRId64 ",\"cost_micro\":%" PRId64 ",\"cost_usd\":%s"
                     ",\"unpriced_requests\":%" PRId64 ",\"estimated_requests\":%" PRId64 "}",
                  r->requests, r->errors, r->fallbacks, r->input, r->cache_read, r->cache_write, r->output,
                  r->reasoning, r->cost_micro, usd, r->unpriced, r->estimated);
}

void usage_render_json(const usage_filter *f, const usage_result *r, sg_buf *b) {
    char t[40];
    sg_buf_puts(b, "{\"object\":\"usage\",\"from\":");
    if (f->from_ms >= 0) { format_time(f->from_ms, t, sizeof t); sg_buf_printf(b, "\"%s\"", t); }
    else sg_buf_puts(b, "null");
    sg_buf_puts(b, ",\"to\":");
    if (f->to_ms >= 0) { format_time(f->to_ms, t, sizeof t); sg_buf_printf(b, "\"%s\"", t); }
    else sg_buf_puts(b, "null");
    sg_buf_puts(b, ",\"group_by\":[");
    for (size_t k = 0; k < f->n_group; k++) sg_buf_printf(b, k ? ",\"%s\"" : "\"%s\"", k_dim_names[f->group[k]]);
    sg_buf_puts(b, "],\"data\":[");
    for (size_t i = 0; i < r->n; i++) {
        const usage_row *row = &r->rows[i];
        sg_buf_puts(b, i ? ",{" : "{");
        for (size_t k = 0; k < f->n_group; k++) {
            const char *v;
            bool present = dim_text(row, f->group[k], t, sizeof t, &v);
            sg_buf_printf(b, "\"%s\":", k_dim_names[f->group[k]]);
            if (present) sg_buf_json_str(b, v, strlen(v));
            else sg_buf_puts(b, "null");
            sg_buf_putc(b, ',');
        }
        json_sums(b, row);
    }
    sg_buf_puts(b, "],\"total\":{");
    json_sums(b, &r->total);
    sg_buf_puts(b, "}\n");
}

static void csv_field(sg_buf *b, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) { sg_buf_puts(b, s); return; }
    sg_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"') sg_buf_putc(b, '"');
        sg_buf_putc(b, *s);
    }
    sg_buf_putc(b, '"');
}

static const char *const k_sum_names[] = {"requests", "errors", "fallbacks", "input_tokens", "cache_read_tokens",
                                          "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost_usd",
                                          "cost_micro", "unpriced_requests", "estimated_requests"};
#define N_SUMS (sizeof k_sum_names / sizeof k_sum_names[0])

static void sums_text(const usage_row *r, char out[N_SUMS][32]) {
    int64_t v[N_SUMS] = {r->requests, r->errors, r->fallbacks, r->input, r->cache_read, r->cache_write,
                         r->output, r->reasoning, 0, r->cost_micro, r->unpriced, r->estimated};
    for (size_t i = 0; i < N_SUMS; i++) snprintf(out[i], 32, "%" PRId64, v[i]);
    cost_format_usd(r->cost_micro, out[8], 32);
}

void usage_render_csv(const usage_filter *f, const usage_result *r, sg_buf *b) {
    for (size_t k = 0; k < f->n_group; k++) { sg_buf_puts(b, k_dim_names[f->group[k]]); sg_buf_putc(b, ','); }
    for (size_t i = 0; i < N_SUMS; i++) { sg_buf_puts(b, k_sum_names[i]); sg_buf_putc(b, i + 1 < N_SUMS ? ',' : '\n'); }
    char t[40], s[N_SUMS][32];
    for (size_t i = 0; i < r->n; i++) {
        for (size_t k = 0; k < f->n_group; k++) {
            const char *v;
            dim_text(&r->rows[i], f->group[k], t, sizeof t, &v);
            csv_field(b, v);
            sg_buf_putc(b, ',');
        }
        sums_text(&r->rows[i], s);
        for (size_t j = 0; j < N_SUMS; j++) { sg_buf_puts(b, s[j]); sg_buf_putc(b, j + 1 < N_SUMS ? ',' : '\n'); }
    }
}

void usage_render_table(const usage_filter *f, const usage_result *r, sg_buf *b) {
    /* columns: the group values, then requests, errors, input, cache_read, cache_write,
     * output, reasoning, cost (USD), unpriced */
    static const char *const heads[] = {"requests", "errors", "input", "cache_read", "cache_write", "output",
                                        "reasoning", "cost_usd", "unpriced"};
    static const int sum_idx[] = {0, 1, 3, 4, 5, 6, 7, 8, 10};
    enum { NS = sizeof heads / sizeof heads[0] };
    size_t ncol = f->n_group + NS, nrow = r->n + 1;
    size_t *w = sg_xcalloc(ncol, sizeof *w);
    char ***cells = sg_xcalloc(nrow, sizeof *cells);
    char t[40], s[N_SUMS][32];
    for (size_t i = 0; i < nrow; i++) {
        const usage_row *row = i < r->n ? &r->rows[i] : &r->total;
        cells[i] = sg_xcalloc(ncol, sizeof **cells);
        for (size_t k = 0; k < f->n_group; k++) {
            const char *v;
            bool present = i < r->n && dim_text(row, f->group[k], t, sizeof t, &v);
            cells[i][k] = sg_xstrdup(i == r->n ? (k == 0 ? "total" : "") : present ? v : "-");
        }
        sums_text(row, s);
        for (size_t j = 0; j < NS; j++) cells[i][f->n_group + j] = sg_xstrdup(s[sum_idx[j]]);
    }
    for (size_t k = 0; k < ncol; k++) {
        const char *h = k < f->n_group ? k_dim_names[f->group[k]] : heads[k - f->n_group];
        w[k] = strlen(h);
        for (size_t i = 0; i < nrow; i++) if (strlen(cells[i][k]) > w[k]) w[k] = strlen(cells[i][k]);
    }
    for (size_t k = 0; k < ncol; k++) {
        const char *h = k < f->n_group ? k_dim_names[f->group[k]] : heads[k - f->n_group];
        if (k < f->n_group) sg_buf_printf(b, "%-*s", (int)w[k], h);
        else sg_buf_printf(b, "%*s", (int)w[k], h);
        sg_buf_puts(b, k + 1 < ncol ? "  " : "\n");
    }
    for (size_t i = 0; i < nrow; i++) {
        if (i == r->n && (r->n > 1 || f->n_group)) {   /* a rule above the total */
            size_t total = 0;
            for (size_t k = 0; k < ncol; k++) total += w[k] + (k + 1 < ncol ? 2 : 0);
            for (size_t k = 0; k < total; k++) sg_buf_putc(b, '-');
            sg_buf_putc(b, '\n');
        }
        if (i == r->n && r->n == 1 && !f->n_group) break;   /* one ungrouped row is the total */
        for (size_t k = 0; k < ncol; k++) {
            if (k < f->n_group) sg_buf_printf(b, "%-*s", (int)w[k], cells[i][k]);
            else sg_buf_printf(b, "%*s", (int)w[k], cells[i][k]);
            sg_buf_puts(b, k + 1 < ncol ? "  " : "\n");
        }
    }
    for (size_t i = 0; i < nrow; i++) {
        for (size_t k = 0; k < ncol; k++) free(cells[i][k]);
        free(cells[i]);
    }
    free(cells);
    free(w);
}

/* ---- GET /v1/usage ----------------------------------------------------------------------- */

static void error_body(sg_buf *b, const char *type, const char *msg) {
    sg_buf_puts(b, "{\"error\":{\"message\":");
    sg_buf_json_str(b, msg, strlen(msg));
    sg_buf_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":null}}\n", type);
}

int usage_http(gw_ledger_kind kind, const char *target, const char *query, const char *only_key, sg_buf *body) {
    usage_filter f;
    usage_filter_init(&f);
    sg_error err;
    if (usage_parse_query(&f, query, &err)) {
        error_body(body, "invalid_request_error", err.msg);
        return 400;
    }
    if (only_key) {   /* tenancy: an ordinary key reads its own records, nothing else */
        if (f.key[0] && strcmp(f.key, only_key)) {
            error_body(body, "permission_error", "this API key may read only its own usage (leave key= out, or name this key)");
            return 403;
        }
        snprintf(f.key, sizeof f.key, "%s", only_key);
    }
    ledger_db *db = ledger_db_open(kind, target, true, &err);
    if (!db) {
        char msg[600];
        snprintf(msg, sizeof msg, "the ledger database is unreachable: %s", err.msg);
        error_body(body, "server_error", msg);
        return 503;
    }
    usage_result r;
    int rc = usage_query(db, &f, &r, &err);
    ledger_db_close(db);
    if (rc) {
        char msg[600];
        snprintf(msg, sizeof msg, "the ledger query failed: %s", err.msg);
        error_body(body, "server_error", msg);
        return 503;
    }
    usage_render_json(&f, &r, body);
    usage_result_free(&r);
    return 200;
}

/* ---- a /v1/usage body read back ---------------------------------------------------------- */

static void sums_from_json(const json_t *o, usage_row *r) {
    static const struct { const char *name; size_t off; } f[] = {
        {"requests", offsetof(usage_row, requests)}, {"errors", offsetof(usage_row, errors)},
        {"fallbacks", offsetof(usage_row, fallbacks)}, {"input_tokens", offsetof(usage_row, input)},
        {"cache_read_tokens", offsetof(usage_row, cache_read)}, {"cache_write_tokens", offsetof(usage_row, cache_write)},
        {"output_tokens", offsetof(usage_row, output)}, {"reasoning_tokens", offsetof(usage_row, reasoning)},
        {"cost_micro", offsetof(usage_row, cost_micro)}, {"unpriced_requests", offsetof(usage_row, unpriced)},
        {"estimated_requests", offsetof(usage_row, estimated)},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        *(int64_t *)((char *)r + f[i].off) = (int64_t)json_integer_value(json_object_get(o, f[i].name));
}

int usage_parse_json(const char *body, size_t len, usage_filter *f, usage_result *out, sg_error *err) {
    memset(out, 0, sizeof *out);
    usage_filter_init(f);
    json_error_t je;
    json_t *doc = json_loadb(body, len, 0, &je);
    json_t *gb = doc ? json_object_get(doc, "group_by") : NULL, *data = doc ? json_object_get(doc, "data") : NULL;
    if (!json_is_array(gb) || !json_is_array(data) || !json_is_object(json_object_get(doc, "total"))) {
        json_decref(doc);
        return sg_fail(err, "not a usage report (expected {\"object\":\"usage\",\"group_by\":[...],\"data\":[...],...})");
    }
    const char *from = json_string_value(json_object_get(doc, "from")), *to = json_string_value(json_object_get(doc, "to"));
    if (from) usage_parse_time(from, &f->from_ms);
    if (to) usage_parse_time(to, &f->to_ms);
    for (size_t k = 0; k < json_array_size(gb) && f->n_group < USAGE_N_DIMS; k++) {
        const char *name = json_string_value(json_array_get(gb, k));
        for (int d = 0; name && d < USAGE_N_DIMS; d++)
            if (!strcmp(name, k_dim_names[d])) f->group[f->n_group++] = (usage_dim)d;
    }
    out->rows = sg_xcalloc(json_array_size(data) ? json_array_size(data) : 1, sizeof *out->rows);
    for (size_t i = 0; i < json_array_size(data); i++) {
        const json_t *o = json_array_get(data, i);
        usage_row *r = &out->rows[out->n++];
        r->bucket_ms = -1;
        for (size_t k = 0; k < f->n_group; k++) {
            usage_dim d = f->group[k];
            const char *v = json_string_value(json_object_get(o, k_dim_names[d]));
            if (d == USAGE_HOUR || d == USAGE_DAY) { if (v) usage_parse_time(v, &r->bucket_ms); }
            else r->dims[d] = v ? sg_xstrdup(v) : NULL;
        }
        sums_from_json(o, r);
    }
    out->total.bucket_ms = -1;
    sums_from_json(json_object_get(doc, "total"), &out->total);
    json_decref(doc);
    return 0;
}
