/* dash_query.c: see dash_query.h. Parameter parsing, the request list and trace queries,
 * the hourly spend rollup and the spend read from it; the same SQL on both engines. */
#include "gateway/dash_query.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/ledger_db.h"

/* ---- query strings ------------------------------------------------------------------------ */

static int copy(char *dst, size_t cap, const char *name, const char *v, sg_error *err) {
    if (strlen(v) >= cap) return sg_fail(err, "%s: longer than %zu bytes", name, cap - 1);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

void dashq_filter_init(dashq_filter *f) {
    memset(f, 0, sizeof *f);
    f->limit = 50;
    f->from_ms = f->to_ms = f->before_ms = -1;
}

static int requests_param(void *arg, const char *name, const char *v, sg_error *err) {
    dashq_filter *f = arg;
    if (!strcmp(name, "q")) return copy(f->q, sizeof f->q, name, v, err);
    if (!strcmp(name, "key")) return copy(f->key, sizeof f->key, name, v, err);
    if (!strcmp(name, "route")) return copy(f->route, sizeof f->route, name, v, err);
    if (!strcmp(name, "model")) return copy(f->model, sizeof f->model, name, v, err);
    if (!strcmp(name, "status")) {
        if (!*v || !strcmp(v, "any")) f->status = 0;
        else if (!strcmp(v, "error")) f->status = -1;
        else if (!strcmp(v, "ok")) f->status = -2;
        else {
            char *end;
            long s = strtol(v, &end, 10);
            if (*end || s < 100 || s > 599) return sg_fail(err, "status: a status code, \"ok\" or \"error\"");
            f->status = (int)s;
        }
        return 0;
    }
    if (!strcmp(name, "limit")) {
        char *end;
        long n = strtol(v, &end, 10);
        if (!*v || *end || n < 1 || n > DASHQ_MAX_LIMIT) return sg_fail(err, "limit: 1 to %d", DASHQ_MAX_LIMIT);
        f->limit = (int)n;
        return 0;
    }
    if (!strcmp(name, "from") || !strcmp(name, "to")) {
        int64_t ms;
        if (usage_parse_time(v, &ms)) return sg_fail(err, "%s: not a time (ISO 8601 or unix seconds)", name);
        *(name[0] == 'f' ? &f->from_ms : &f->to_ms) = ms;
        return 0;
    }
    if (!strcmp(name, "before")) {
        char *end;
        long long ms = strtoll(v, &end, 10);
        if (end == v || *end != '.' || ms < 0) return sg_fail(err, "before: the next_before of the previous page");
        f->before_ms = ms;
        return copy(f->before_id, sizeof f->before_id, name, end + 1, err);
    }
    return sg_fail(err, "unknown parameter %s", name);
}

int dashq_parse_requests(dashq_filter *f, const char *query, sg_error *err) {
    return usage_each_param(query, requests_param, f, err);
}

typedef struct spend_parse {
    usage_filter *f;
    char by[128], bucket[8];
} spend_parse;

static int spend_param(void *arg, const char *name, const char *v, sg_error *err) {
    spend_parse *p = arg;
    if (!strcmp(name, "by")) return copy(p->by, sizeof p->by, name, v, err);
    if (!strcmp(name, "bucket")) {
        if (strcmp(v, "hour") && strcmp(v, "day") && strcmp(v, "none")) return sg_fail(err, "bucket: hour, day or none");
        return copy(p->bucket, sizeof p->bucket, name, v, err);
    }
    if (!strcmp(name, "group_by")) return sg_fail(err, "unknown parameter group_by (use by and bucket)");
    return usage_filter_set(p->f, name, v, err);
}

int dashq_parse_spend(usage_filter *f, const char *query, sg_error *err) {
    usage_filter_init(f);
    spend_parse p = {.f = f, .bucket = "day"};
    if (usage_each_param(query, spend_param, &p, err)) return -1;
    for (const char *s = p.by; *s; s++)   /* only dimensions here: time is bucket's */
        if (!strncmp(s, "hour", 4) || !strncmp(s, "day", 3)) return sg_fail(err, "by: key, route, provider or model");
    char group[160];
    snprintf(group, sizeof group, "%s%s%s", strcmp(p.bucket, "none") ? p.bucket : "",
             *p.by && strcmp(p.bucket, "none") ? "," : "", p.by);
    return *group ? usage_filter_set(f, "group_by", group, err) : 0;
}

/* ---- the request list ------------------------------------------------------------------- */

static json_t *num_or_null(const char *s) { return s ? json_integer(strtoll(s, NULL, 10)) : json_null(); }
static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

#define LIST_COLS "request_id, ts_ms, key_id, route, requested_model, provider, model, status, error, " \
                  "CASE WHEN stream THEN 1 ELSE 0 END, n_attempts, fallbacks, input_tokens, output_tokens, cost_micro, " \
                  "latency_ms, ttft_ms, cache_read_tokens, reasoning_tokens"

static json_t *request_json(const char *const *c) {
    json_t *o = json_object();
    json_object_set_new(o, "request_id", str_or_null(c[0]));
    json_object_set_new(o, "time_ms", num_or_null(c[1]));
    json_object_set_new(o, "key", str_or_null(c[2]));
    json_object_set_new(o, "route", str_or_null(c[3]));
    json_object_set_new(o, "requested_model", str_or_null(c[4]));
    json_object_set_new(o, "provider", str_or_null(c[5]));
    json_object_set_new(o, "model", str_or_null(c[6]));
    json_object_set_new(o, "status", num_or_null(c[7]));
    json_object_set_new(o, "error", str_or_null(c[8]));
    json_object_set_new(o, "stream", json_boolean(c[9] && !strcmp(c[9], "1")));
    json_object_set_new(o, "attempts", num_or_null(c[10]));
    json_object_set_new(o, "fallbacks", num_or_null(c[11]));
    json_object_set_new(o, "input_tokens", num_or_null(c[12]));
    json_object_set_new(o, "output_tokens", num_or_null(c[13]));
    json_object_set_new(o, "cost_micro", num_or_null(c[14]));
    json_object_set_new(o, "latency_ms", num_or_null(c[15]));
    json_object_set_new(o, "ttft_ms", num_or_null(c[16]));
    json_object_set_new(o, "cache_read_tokens", num_or_null(c[17]));
    json_object_set_new(o, "reasoning_tokens", num_or_null(c[18]));
    return o;
}

static int on_list_row(void *arg, int ncols, const char *const *c) {
    if (ncols < 19) return 1;
    json_array_append_new(arg, request_json(c));
    return 0;
}

int dashq_requests(ledger_db *db, const dashq_filter *f, sg_buf *out, sg_error *err) {
    sg_buf sql;
    sg_buf_init(&sql);
    sg_buf_puts(&sql, "SELECT " LIST_COLS " FROM requests WHERE 1 = 1");
    const char *params[20];
    size_t np = 0;
    char from[24], to[24], before[24], status[16], like[160];
    if (f->from_ms >= 0) {
        snprintf(from, sizeof from, "%" PRId64, f->from_ms);
        params[np++] = from;
        sg_buf_puts(&sql, " AND ts_ms >= CAST(? AS BIGINT)");
    }
    if (f->to_ms >= 0) {
        snprintf(to, sizeof to, "%" PRId64, f->to_ms);
        params[np++] = to;
        sg_buf_puts(&sql, " AND ts_ms < CAST(? AS BIGINT)");
    }
    if (f->before_ms >= 0) {   /* strictly after the previous page's last row, in (time, id) order */
        snprintf(before, sizeof before, "%" PRId64, f->before_ms);
        params[np++] = before;
        params[np++] = before;
        params[np++] = before;
        params[np++] = f->before_id;
        /* the first bound alone lets the time index limit the scan */
        sg_buf_puts(&sql, " AND ts_ms <= CAST(? AS BIGINT)"
                          " AND (ts_ms < CAST(? AS BIGINT) OR (ts_ms = CAST(? AS BIGINT) AND request_id < ?))");
    }
    if (*f->key) { params[np++] = f->key; sg_buf_puts(&sql, " AND key_id = ?"); }
    if (*f->route) { params[np++] = f->route; sg_buf_puts(&sql, " AND route = ?"); }
    if (*f->model) {
        params[np++] = f->model;
        params[np++] = f->model;
        sg_buf_puts(&sql, " AND (model = ? OR requested_model = ?)");
    }
    if (f->status > 0) {
        snprintf(status, sizeof status, "%d", f->status);
        params[np++] = status;
        sg_buf_puts(&sql, " AND status = CAST(? AS INTEGER)");
    } else if (f->status == -1) sg_buf_puts(&sql, " AND status >= 400");
    else if (f->status == -2) sg_buf_puts(&sql, " AND status < 400");
    bool whole_id = strlen(f->q) == 32 && strspn(f->q, "0123456789abcdef") == 32;
    if (whole_id) {   /* a request id (request_id.h) pasted whole: the primary key finds it */
        params[np++] = f->q;
        sg_buf_puts(&sql, " AND request_id = ?");
    } else if (*f->q) {   /* a substring anywhere people would look; % and _ taken literally */
        size_t o = 0;
        like[o++] = '%';
        for (const char *s = f->q; *s && o + 4 < sizeof like; s++) {
            if (*s == '%' || *s == '_' || *s == '!') like[o++] = '!';
            like[o++] = *s;
        }
        like[o++] = '%';
        like[o] = 0;
        for (int k = 0; k < 5; k++) params[np++] = like;
        sg_buf_puts(&sql, " AND (request_id LIKE ? ESCAPE '!' OR key_id LIKE ? ESCAPE '!' OR route LIKE ? ESCAPE '!'"
                          " OR model LIKE ? ESCAPE '!' OR error LIKE ? ESCAPE '!')");
    }
    sg_buf_printf(&sql, " ORDER BY ts_ms DESC, request_id DESC LIMIT %d", f->limit + 1);
    json_t *rows = json_array();
    int rc = ledger_db_select(db, sql.data, params, np, on_list_row, rows, err);
    sg_buf_free(&sql);
    if (rc) { json_decref(rows); return -1; }
    json_t *next = json_null();
    if (json_array_size(rows) > (size_t)f->limit) {   /* one more than asked: there is a next page */
        json_array_remove(rows, (size_t)f->limit);
        json_t *last = json_array_get(rows, (size_t)f->limit - 1);
        char cur[200];
        snprintf(cur, sizeof cur, "%" JSON_INTEGER_FORMAT ".%s", json_integer_value(json_object_get(last, "time_ms")),
                 json_string_value(json_object_get(last, "request_id")));
        json_decref(next);
        next = json_string(cur);
    }
    json_t *doc = json_pack("{s:s,s:o,s:o}", "object", "list", "data", rows, "next_before", next);
    char *s = json_dumps(doc, JSON_COMPACT);
    sg_buf_puts(out, s);
    free(s);
    json_decref(doc);
    return 0;
}

/* ---- one request's trace ------------------------------------------------------------------ */

static int on_attempt(void *arg, int ncols, const char *const *c) {
    if (ncols < 13) return 1;
    json_t *a = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o}", "n", num_or_null(c[0]), "provider", str_or_null(c[1]), "model",
                          str_or_null(c[2]), "status", num_or_null(c[3]), "error", str_or_null(c[4]), "latency_ms",
                          num_or_null(c[5]));
    json_object_set_new(a, "start_ms", num_or_null(c[6]));   /* NULL before schema 5: placed below */
    json_object_set_new(a, "queue_ms", num_or_null(c[7]));
    json_object_set_new(a, "connect_ms", num_or_null(c[8]));
    json_object_set_new(a, "ttft_ms", num_or_null(c[9]));
    json_object_set_new(a, "input_tokens", num_or_null(c[10]));
    json_object_set_new(a, "output_tokens", num_or_null(c[11]));
    json_object_set_new(a, "cost_micro", num_or_null(c[12]));
    json_array_append_new(arg, a);
    return 0;
}

static int on_payload(void *arg, int ncols, const char *const *c) {
    if (ncols < 3) return 1;
    json_t **p = arg;
    *p = json_pack("{s:o,s:o,s:o}", "captured_ms", num_or_null(c[0]), "request", str_or_null(c[1]), "response",
                   str_or_null(c[2]));
    return 0;
}

int dashq_request(ledger_db *db, const char *id, bool *found, sg_buf *out, sg_error *err) {
    json_t *rows = json_array();
    const char *p[1] = {id};
    *found = false;
    if (ledger_db_select(db, "SELECT " LIST_COLS " FROM requests WHERE request_id = ?", p, 1, on_list_row, rows, err)) {
        json_decref(rows);
        return -1;
    }
    if (!json_array_size(rows)) { json_decref(rows); return 0; }
    json_t *doc = json_incref(json_array_get(rows, 0)), *att = json_array(), *payload = NULL;
    json_decref(rows);
    if (ledger_db_select(db, "SELECT n, provider, model, status, error, latency_ms, start_ms, queue_ms, connect_ms, ttft_ms, "
                         "input_tokens, output_tokens, cost_micro FROM attempts WHERE request_id = ? ORDER BY n",
                         p, 1, on_attempt, att, err) ||
        ledger_db_select(db, "SELECT captured_ms, request, response FROM payloads WHERE request_id = ?", p, 1, on_payload,
                         &payload, err)) {
        json_decref(doc);
        json_decref(att);
        json_decref(payload);
        return -1;
    }
    /* Each attempt starts where the ledger says (backoff waits are the gaps); an attempt
     * stored before schema 5 has no start: it is placed where the one before ended (the
     * proxy tries targets one after another). Why the next one was made: the failure of
     * this one. */
    int64_t at = 0;
    size_t n = json_array_size(att);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(att, i);
        json_t *st = json_object_get(a, "start_ms");
        if (json_is_integer(st)) at = json_integer_value(st);
        else json_object_set_new(a, "start_ms", json_integer(at));
        json_t *lat = json_object_get(a, "latency_ms");
        if (json_is_integer(lat)) at += json_integer_value(lat);
        json_t *e = json_object_get(a, "error");
        json_object_set_new(a, "next_reason", i + 1 < n && json_is_string(e) ? json_incref(e) : json_null());
    }
    json_object_set_new(doc, "attempts", att);
    json_object_set_new(doc, "payload", payload ? payload : json_null());
    char *s = json_dumps(doc, JSON_COMPACT);
    sg_buf_puts(out, s);
    free(s);
    json_decref(doc);
    *found = true;
    return 0;
}

/* ---- payload capture ------------------------------------------------------------------------ */

int dashq_store_payload(ledger_db *db, const char *request_id, int64_t captured_ms, const char *prompt,
                        const char *answer, sg_error *err) {
    char ms[24];
    snprintf(ms, sizeof ms, "%" PRId64, captured_ms);
    const char *p[4] = {request_id, ms, prompt, answer};
    return ledger_db_exec(db, "INSERT INTO payloads (request_id, captured_ms, request, response)"
                              " VALUES (?, CAST(? AS BIGINT), ?, ?) ON CONFLICT (request_id) DO NOTHING",
                          p, 4, err) < 0 ? -1 : 0;
}

int dashq_purge_payloads(ledger_db *db, int64_t before_ms, int64_t *deleted, sg_error *err) {
    char ms[24];
    snprintf(ms, sizeof ms, "%" PRId64, before_ms);
    const char *p[1] = {ms};
    int64_t n = ledger_db_exec(db, "DELETE FROM payloads WHERE captured_ms < CAST(? AS BIGINT)", p, 1, err);
    if (n < 0) return -1;
    if (deleted) *deleted = n;
    return 0;
}

/* ---- spend: the hourly rollup ---------------------------------------------------------------- */

static int on_int(void *arg, int ncols, const char *const *c) {
    if (ncols >= 1 && c[0]) *(int64_t *)arg = strtoll(c[0], NULL, 10);
    return 0;
}

/* The rolled-up dimensions: usage_dim, its column in requests, its name in spend_hourly. */
static const struct { usage_dim d; const char *col, *name; } k_dims[] = {
    {USAGE_KEY, "key_id", "key"}, {USAGE_ROUTE, "route", "route"},
    {USAGE_PROVIDER, "provider", "provider"}, {USAGE_MODEL, "model", "model"},
};
#define N_DIMS (sizeof k_dims / sizeof *k_dims)

static int64_t num(const char *s) { return s ? strtoll(s, NULL, 10) : 0; }

/* Records stored after the high-water mark (SQLite: rowid; PostgreSQL: seq) summed into
 * spend_hourly per dimension, '' standing for NULL (a primary key has no NULLs).
 *
 * The records are read once, in storage order (no sort), and summed here into a hash of
 * (dimension, hour, value); the few sums then go in as multi-row upserts. Four GROUP BY
 * passes of the database over the same records cost about four times the CPU, and this
 * runs beside a gateway under load. */

#define N_SUMS 11   /* spend_hourly's sums: requests .. estimated */

typedef struct roll_row {
    uint8_t dim;        /* k_dims index */
    int64_t hour_ms;
    char *value;        /* never NULL: '' for NULL */
    int64_t sums[N_SUMS];
} roll_row;

typedef struct roll {
    roll_row *rows;
    size_t n, cap;
    uint32_t *slots;    /* open addressing: row index + 1, 0 empty */
    size_t n_slots;     /* a power of two, at least twice n */
    int64_t records;
} roll;

static uint64_t roll_hash(unsigned dim, int64_t hour_ms, const char *v) {
    uint64_t h = 1469598103934665603ull ^ dim;   /* FNV-1a */
    h = (h ^ (uint64_t)hour_ms) * 1099511628211ull;
    for (; *v; v++) h = (h ^ (unsigned char)*v) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void roll_grow(roll *r) {
    size_t n_slots = r->n_slots ? r->n_slots * 2 : 256;
    uint32_t *slots = sg_xcalloc(n_slots, sizeof *slots);
    for (size_t i = 0; i < r->n; i++) {
        size_t s = roll_hash(r->rows[i].dim, r->rows[i].hour_ms, r->rows[i].value) & (n_slots - 1);
        while (slots[s]) s = (s + 1) & (n_slots - 1);
        slots[s] = (uint32_t)i + 1;
    }
    free(r->slots);
    r->slots = slots;
    r->n_slots = n_slots;
}

static void roll_add(roll *r, unsigned dim, int64_t hour_ms, const char *value, const int64_t *sums) {
    if (2 * (r->n + 1) > r->n_slots) roll_grow(r);
    size_t s = roll_hash(dim, hour_ms, value) & (r->n_slots - 1);
    for (; r->slots[s]; s = (s + 1) & (r->n_slots - 1)) {
        roll_row *x = &r->rows[r->slots[s] - 1];
        if (x->dim == dim && x->hour_ms == hour_ms && !strcmp(x->value, value)) {
            for (int k = 0; k < N_SUMS; k++) x->sums[k] += sums[k];
            return;
        }
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->rows = sg_xrealloc(r->rows, r->cap * sizeof *r->rows);
    }
    roll_row *x = &r->rows[r->n];
    *x = (roll_row){.dim = (uint8_t)dim, .hour_ms = hour_ms, .value = sg_xstrdup(value)};
    memcpy(x->sums, sums, sizeof x->sums);
    r->slots[s] = (uint32_t)++r->n;
}

static void roll_free(roll *r) {
    for (size_t i = 0; i < r->n; i++) free(r->rows[i].value);
    free(r->rows);
    free(r->slots);
}

/* The columns the rollup reads of a record, in this order; the dimensions first, as in
 * k_dims. usage_estimated as 0/1 (PostgreSQL prints a boolean as t/f). */
#define ROLL_COLS \
    "key_id, route, provider, model, ts_ms, status, fallbacks, input_tokens, cache_read_tokens," \
    " cache_write_tokens, output_tokens, reasoning_tokens, cost_micro, CASE WHEN usage_estimated THEN 1 ELSE 0 END"

static int on_roll_record(void *arg, int ncols, const char *const *c) {
    roll *r = arg;
    if (ncols < 14) return 1;
    int64_t ts = num(c[4]);
    int64_t hour_ms = ts / 3600000 * 3600000;   /* truncated toward zero, as SQL's division */
    int64_t sums[N_SUMS] = {1, num(c[5]) >= 400, num(c[6]), num(c[7]), num(c[8]), num(c[9]), num(c[10]),
                            num(c[11]), num(c[12]), c[12] == NULL, num(c[13]) != 0};
    for (unsigned d = 0; d < N_DIMS; d++) roll_add(r, d, hour_ms, c[d] ? c[d] : "", sums);
    r->records++;
    return 0;
}

/* The summed rows into spend_hourly, added to what is there, ROLL_UPSERT_ROWS a statement. */
#define ROLL_UPSERT_ROWS 64
static int roll_store(ledger_db *db, const roll *r, sg_error *err) {
    enum { COLS = 3 + N_SUMS };
    sg_buf sql;
    sg_buf_init(&sql);
    const char **params = sg_xmalloc(ROLL_UPSERT_ROWS * COLS * sizeof *params);
    char (*nums)[24] = sg_xmalloc(ROLL_UPSERT_ROWS * (1 + N_SUMS) * sizeof *nums);
    int rc = 0;
    for (size_t at = 0; at < r->n && rc == 0; at += ROLL_UPSERT_ROWS) {
        size_t n = r->n - at < ROLL_UPSERT_ROWS ? r->n - at : ROLL_UPSERT_ROWS;
        sg_buf_reset(&sql);
        sg_buf_puts(&sql, "INSERT INTO spend_hourly (dim, hour_ms, value, requests, errors, fallbacks, input_tokens,"
                          " cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_micro,"
                          " unpriced, estimated) VALUES ");
        for (size_t i = 0; i < n; i++) {
            const roll_row *x = &r->rows[at + i];
            sg_buf_puts(&sql, i ? ", (?, CAST(? AS BIGINT), ?" : "(?, CAST(? AS BIGINT), ?");
            for (int k = 0; k < N_SUMS; k++) sg_buf_puts(&sql, ", CAST(? AS BIGINT)");
            sg_buf_putc(&sql, ')');
            const char **p = params + i * COLS;
            char (*v)[24] = nums + i * (1 + N_SUMS);
            p[0] = k_dims[x->dim].name;
            snprintf(v[0], sizeof v[0], "%" PRId64, x->hour_ms);
            p[1] = v[0];
            p[2] = x->value;
            for (int k = 0; k < N_SUMS; k++) {
                snprintf(v[1 + k], sizeof v[1 + k], "%" PRId64, x->sums[k]);
                p[3 + k] = v[1 + k];
            }
        }
        sg_buf_puts(&sql,
                    " ON CONFLICT (dim, hour_ms, value) DO UPDATE SET"
                    " requests = spend_hourly.requests + excluded.requests, errors = spend_hourly.errors + excluded.errors,"
                    " fallbacks = spend_hourly.fallbacks + excluded.fallbacks,"
                    " input_tokens = spend_hourly.input_tokens + excluded.input_tokens,"
                    " cache_read_tokens = spend_hourly.cache_read_tokens + excluded.cache_read_tokens,"
                    " cache_write_tokens = spend_hourly.cache_write_tokens + excluded.cache_write_tokens,"
                    " output_tokens = spend_hourly.output_tokens + excluded.output_tokens,"
                    " reasoning_tokens = spend_hourly.reasoning_tokens + excluded.reasoning_tokens,"
                    " cost_micro = spend_hourly.cost_micro + excluded.cost_micro,"
                    " unpriced = spend_hourly.unpriced + excluded.unpriced, estimated = spend_hourly.estimated + excluded.estimated");
        if (ledger_db_exec(db, sql.data, params, n * COLS, err) < 0) rc = -1;
    }
    free(nums);
    free(params);
    sg_buf_free(&sql);
    return rc;
}

int dashq_rollup(ledger_db *db, int64_t max_records, int64_t *rolled, sg_error *err) {
    bool pg = ledger_db_kind(db) == GW_LEDGER_POSTGRES;
    const char *seq = pg ? "seq" : "rowid";
    int64_t hw = 0, top = 0;
    roll r = {0};
    if (ledger_db_begin(db, err)) return -1;
    char sql[400];
    /* PostgreSQL: the state row locked, so two instances take turns (SQLite's BEGIN
     * IMMEDIATE already does). */
    if (ledger_db_select(db, pg ? "SELECT high_water FROM rollup_state WHERE name = 'spend_hourly' FOR UPDATE"
                                : "SELECT high_water FROM rollup_state WHERE name = 'spend_hourly'",
                         NULL, 0, on_int, &hw, err))
        goto fail;
    /* PostgreSQL hands out seq at insert, and a transaction may commit after one that took
     * a later number: a mark moved past a number still in flight would skip that record.
     * SHARE mode waits for the inserts in flight and holds new ones back until commit (the
     * ledger's writers wait a moment; requests never do: they spool). SQLite's writes are
     * serialised, so its rowids commit in order. */
    if (pg && ledger_db_exec(db, "LOCK TABLE requests IN SHARE MODE", NULL, 0, err) < 0) goto fail;
    snprintf(sql, sizeof sql, "SELECT COALESCE(MAX(%s), 0) FROM requests", seq);
    if (ledger_db_select(db, sql, NULL, 0, on_int, &top, err)) goto fail;
    if (max_records > 0 && top - hw > max_records) top = hw + max_records;   /* a bounded transaction */
    if (top > hw) {
        char lo[24], hi[24];
        snprintf(lo, sizeof lo, "%" PRId64, hw);
        snprintf(hi, sizeof hi, "%" PRId64, top);
        const char *p[2] = {lo, hi};
        snprintf(sql, sizeof sql, "SELECT " ROLL_COLS " FROM requests WHERE %s > CAST(? AS BIGINT) AND %s <= CAST(? AS BIGINT)",
                 seq, seq);
        if (ledger_db_select(db, sql, p, 2, on_roll_record, &r, err)) goto fail;
        if (roll_store(db, &r, err)) goto fail;
        if (ledger_db_exec(db, "UPDATE rollup_state SET high_water = CAST(? AS BIGINT) WHERE name = 'spend_hourly'",
                           (const char *[]){hi}, 1, err) < 0)
            goto fail;
    }
    if (ledger_db_commit(db, err)) goto fail;
    if (rolled) *rolled = r.records;
    roll_free(&r);
    return 0;
fail:
    ledger_db_rollback(db);
    roll_free(&r);
    return -1;
}

typedef struct spend_collect {
    const usage_filter *f;
    usage_result *out;
    size_t cap;
} spend_collect;

static int on_spend_row(void *arg, int ncols, const char *const *cols) {
    spend_collect *c = arg;
    size_t g = c->f->n_group;
    if ((size_t)ncols < g + 11) return 1;
    const char *const *v = cols + g;
    if (!num(v[0])) return 0;   /* no record in the range: no row */
    if (c->out->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        c->out->rows = sg_xrealloc(c->out->rows, c->cap * sizeof *c->out->rows);
    }
    usage_row *r = &c->out->rows[c->out->n++];
    memset(r, 0, sizeof *r);
    r->bucket_ms = -1;
    for (size_t k = 0; k < g; k++) {
        usage_dim d = c->f->group[k];
        if (d == USAGE_HOUR || d == USAGE_DAY) r->bucket_ms = num(cols[k]);
        else r->dims[d] = cols[k] && *cols[k] ? sg_xstrdup(cols[k]) : NULL;
    }
    int64_t *fields[11] = {&r->requests, &r->errors, &r->fallbacks, &r->input, &r->cache_read, &r->cache_write,
                           &r->output, &r->reasoning, &r->cost_micro, &r->unpriced, &r->estimated};
    int64_t *totals[11] = {&c->out->total.requests, &c->out->total.errors, &c->out->total.fallbacks,
                           &c->out->total.input, &c->out->total.cache_read, &c->out->total.cache_write,
                           &c->out->total.output, &c->out->total.reasoning, &c->out->total.cost_micro,
                           &c->out->total.unpriced, &c->out->total.estimated};
    for (int k = 0; k < 11; k++) {
        *fields[k] = num(v[k]);
        *totals[k] += *fields[k];
    }
    return 0;
}

/* The one dimension a query can be answered from the rollup with: its grouping names at
 * most one of key, route, provider, model, and its filters name only that one. -1: none
 * (the query runs over requests). *dim_ix: the k_dims entry (route when nothing is named). */
static bool rollup_serves(const usage_filter *f, size_t *dim_ix) {
    int want = -1;
    for (size_t k = 0; k < f->n_group; k++) {
        if (f->group[k] == USAGE_HOUR || f->group[k] == USAGE_DAY) continue;
        if (want >= 0) return false;
        want = (int)f->group[k];
    }
    const char *filters[4] = {f->key, f->route, f->provider, f->model};
    for (int d = 0; d < 4; d++) {
        if (!*filters[d]) continue;
        if (want >= 0 && want != (int)k_dims[d].d) return false;
        want = (int)k_dims[d].d;
    }
    *dim_ix = 1;
    for (size_t d = 0; d < N_DIMS; d++)
        if ((int)k_dims[d].d == want) *dim_ix = d;
    return true;
}

int dashq_spend(ledger_db *db, const usage_filter *f, usage_result *out, sg_error *err) {
    size_t di;
    if (!rollup_serves(f, &di)) return usage_query(db, f, out, err);   /* exact, over every record */
    memset(out, 0, sizeof *out);
    out->total.bucket_ms = -1;
    bool pg = ledger_db_kind(db) == GW_LEDGER_POSTGRES;
    const char *filters[4] = {f->key, f->route, f->provider, f->model};
    const char *value = *filters[di] ? filters[di] : NULL;
    const char *params[8];
    char from[24], to[24];
    size_t np = 0;
    sg_buf where;
    sg_buf_init(&where);
    if (f->from_ms >= 0)   /* whole hours: the hour holding from ... */
        snprintf(from, sizeof from, "%" PRId64, f->from_ms / 3600000 * 3600000);
    if (f->to_ms >= 0)     /* ... to the hour holding the last millisecond before to */
        snprintf(to, sizeof to, "%" PRId64, f->to_ms);
    for (int side = 0; side < 2; side++) {   /* the same filters on both sides of the union */
        if (f->from_ms >= 0) params[np++] = from;
        if (f->to_ms >= 0) params[np++] = to;
        if (value) params[np++] = value;
    }
    if (f->from_ms >= 0) sg_buf_puts(&where, " AND hour_ms >= CAST(? AS BIGINT)");
    if (f->to_ms >= 0) sg_buf_puts(&where, " AND hour_ms < CAST(? AS BIGINT)");
    if (value) sg_buf_puts(&where, " AND value = ?");
    sg_buf sql;
    sg_buf_init(&sql);
    sg_buf_puts(&sql, "SELECT ");
    for (size_t k = 0; k < f->n_group; k++)
        sg_buf_puts(&sql, f->group[k] == USAGE_HOUR ? "hour_ms, " : f->group[k] == USAGE_DAY ? "(hour_ms / 86400000) * 86400000, " : "value, ");
    /* What is rolled up, and the records past the mark summed on the fly: one statement,
     * so one snapshot of both, and spend is never behind the requests table. */
    sg_buf_printf(&sql,
                  "SUM(requests), SUM(errors), SUM(fallbacks), SUM(input_tokens), SUM(cache_read_tokens),"
                  " SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_micro),"
                  " SUM(unpriced), SUM(estimated) FROM ("
                  "SELECT hour_ms, value, requests, errors, fallbacks, input_tokens, cache_read_tokens,"
                  " cache_write_tokens, output_tokens, reasoning_tokens, cost_micro, unpriced, estimated"
                  " FROM spend_hourly WHERE dim = '%s'%s"
                  " UNION ALL SELECT * FROM (SELECT (ts_ms / 3600000) * 3600000 AS hour_ms, COALESCE(%s, '') AS value,"
                  " 1 AS requests, CASE WHEN status >= 400 THEN 1 ELSE 0 END AS errors, fallbacks,"
                  " COALESCE(input_tokens, 0) AS input_tokens, COALESCE(cache_read_tokens, 0) AS cache_read_tokens,"
                  " COALESCE(cache_write_tokens, 0) AS cache_write_tokens, COALESCE(output_tokens, 0) AS output_tokens,"
                  " COALESCE(reasoning_tokens, 0) AS reasoning_tokens, COALESCE(cost_micro, 0) AS cost_micro,"
                  " CASE WHEN cost_micro IS NULL THEN 1 ELSE 0 END AS unpriced,"
                  " CASE WHEN usage_estimated THEN 1 ELSE 0 END AS estimated"
                  " FROM requests WHERE %s > (SELECT high_water FROM rollup_state WHERE name = 'spend_hourly')) tail"
                  " WHERE 1 = 1%s) spend",
                  k_dims[di].name, where.data ? where.data : "", k_dims[di].col, pg ? "seq" : "rowid",
                  where.data ? where.data : "");
    sg_buf_free(&where);
    if (f->n_group) {
        sg_buf_puts(&sql, " GROUP BY ");
        for (size_t k = 0; k < f->n_group; k++) sg_buf_printf(&sql, k ? ", %zu" : "%zu", k + 1);
        sg_buf_puts(&sql, " ORDER BY ");
        for (size_t k = 0; k < f->n_group; k++) sg_buf_printf(&sql, k ? ", %zu" : "%zu", k + 1);
    }
    spend_collect c = {f, out, 0};
    int rc = ledger_db_select(db, sql.data, params, np, on_spend_row, &c, err);
    sg_buf_free(&sql);
    if (rc) usage_result_free(out);
    return rc;
}
