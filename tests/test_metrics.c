/* test_metrics.c: the Prometheus exposition. Requests, errors, fallbacks, tokens per class,
 * cost, unpriced and estimated counts land on the serving target's labels; attempts on each
 * attempt's own target with its outcome; histograms are cumulative with +Inf = count and
 * the sum in seconds; label values are escaped; label sets are bounded (model "other",
 * then all "other"); the ledger's counters; and every line is well-formed text format. The
 * same series as JSON for the dashboard, with p50 / p95 read from the histograms. */
#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/metrics.h"
#include "testutil.h"

static ledger_record rec(const char *route, const char *prov, const char *model, int status, int64_t lat, int64_t ttft) {
    ledger_record r;
    memset(&r, 0, sizeof r);
    r.request_id = "x";
    r.route = route;
    r.provider = prov;
    r.model = model;
    r.status = status;
    r.latency_ms = lat;
    r.ttft_ms = ttft;
    r.usage = (gw_usage){100, 20, 5, 50, 10, false};
    r.cost_micro = 1234;
    return r;
}

/* The value of the sample whose line starts with `series ` (labels included), or -1. */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, series, n) && p[n] == ' ') return atof(p + n + 1);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

/* Every line is a comment (# HELP / # TYPE) or `name{labels} value`. */
static int well_formed(const char *text) {
    int bad = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        if (!e) return bad + 1;   /* ends with a newline */
        if (*p == '#') { if (strncmp(p, "# HELP ", 7) && strncmp(p, "# TYPE ", 7)) bad++; }
        else {
            const char *q = p;
            if (!isalpha((unsigned char)*q) && *q != '_') bad++;
            while (q < e && (isalnum((unsigned char)*q) || *q == '_' || *q == ':')) q++;
            if (*q == '{') {
                bool in_str = false;
                for (q++; q < e; q++) {
                    if (in_str && *q == '\\') { q++; continue; }
                    if (*q == '"') in_str = !in_str;
                    else if (!in_str && *q == '}') break;
                }
                if (q >= e) bad++;
                q++;
            }
            if (*q != ' ') bad++;
            char *end;
            strtod(q + 1, &end);
            if (end != e) bad++;
        }
        p = e + 1;
    }
    return bad;
}

static void test_counters(void) {
    metrics *m = metrics_new(0);
    ledger_attempt att[2] = {{"openai", "gpt-4o", 429, "retryable", 30, 0, -1, -1, -1, -1, -1, -1}, {"anthropic", "claude-haiku-4-5", 200, NULL, 400, 30, -1, -1, -1, -1, -1, -1}};
    ledger_record a = rec("chat", "anthropic", "claude-haiku-4-5", 200, 420, 180);
    a.attempts = att;
    a.n_attempts = 2;
    metrics_observe_request(m, &a);
    ledger_record b = rec("chat", "anthropic", "claude-haiku-4-5", 502, 7000, -1);
    b.cost_micro = -1;
    b.usage.estimated = true;
    metrics_observe_request(m, &b);
    ledger_record c = rec(NULL, "openai", "gpt-4o-mini", 200, 3, 2);
    metrics_observe_request(m, &c);
    sg_buf out;
    sg_buf_init(&out);
    metrics_render(m, &out);
    const char *t = out.data;
    const char *L = "{route=\"chat\",provider=\"anthropic\",model=\"claude-haiku-4-5\"";
    char s[256];
#define AT(name, extra) (snprintf(s, sizeof s, "%s%s%s}", name, L, extra), sample(t, s))
    CHECK(AT("smolgate_requests_total", "") == 2);
    CHECK(AT("smolgate_request_errors_total", "") == 1);
    CHECK(AT("smolgate_fallbacks_total", "") == 1);
    CHECK(AT("smolgate_tokens_total", ",class=\"input\"") == 200);
    CHECK(AT("smolgate_tokens_total", ",class=\"cache_read\"") == 40);
    CHECK(AT("smolgate_tokens_total", ",class=\"cache_write\"") == 10);
    CHECK(AT("smolgate_tokens_total", ",class=\"output\"") == 100);
    CHECK(AT("smolgate_tokens_total", ",class=\"reasoning\"") == 20);
    CHECK(AT("smolgate_cost_microdollars_total", "") == 1234);
    CHECK(AT("smolgate_unpriced_requests_total", "") == 1);
    CHECK(AT("smolgate_estimated_usage_requests_total", "") == 1);
    /* histograms: 420 ms is in le=0.5, 7000 ms in le=10; cumulative; +Inf = count */
    CHECK(AT("smolgate_request_duration_seconds_bucket", ",le=\"0.250\"") == 0);
    CHECK(AT("smolgate_request_duration_seconds_bucket", ",le=\"0.500\"") == 1);
    CHECK(AT("smolgate_request_duration_seconds_bucket", ",le=\"5.000\"") == 1);
    CHECK(AT("smolgate_request_duration_seconds_bucket", ",le=\"10.000\"") == 2);
    CHECK(AT("smolgate_request_duration_seconds_bucket", ",le=\"+Inf\"") == 2);
    CHECK(AT("smolgate_request_duration_seconds_count", "") == 2);
    CHECK(AT("smolgate_request_duration_seconds_sum", "") == 7.42);
    CHECK(AT("smolgate_time_to_first_token_seconds_count", "") == 1);   /* no first token: not observed */
    CHECK(AT("smolgate_time_to_first_token_seconds_bucket", ",le=\"0.250\"") == 1);
    /* attempts on their own targets */
    CHECK(sample(t, "smolgate_attempts_total{route=\"chat\",provider=\"openai\",model=\"gpt-4o\",outcome=\"error\"}") == 1);
    CHECK(sample(t, "smolgate_attempts_total{route=\"chat\",provider=\"openai\",model=\"gpt-4o\",outcome=\"ok\"}") == 0);
    CHECK(sample(t, "smolgate_attempts_total{route=\"chat\",provider=\"anthropic\",model=\"claude-haiku-4-5\",outcome=\"ok\"}") == 1);
    /* a direct request: route "" */
    CHECK(sample(t, "smolgate_requests_total{route=\"\",provider=\"openai\",model=\"gpt-4o-mini\"}") == 1);
    CHECK(sample(t, "smolgate_request_duration_seconds_bucket{route=\"\",provider=\"openai\",model=\"gpt-4o-mini\",le=\"0.005\"}") == 1);
    CHECK(strstr(t, "# TYPE smolgate_request_duration_seconds histogram\n") != NULL);
    CHECK(strstr(t, "# TYPE smolgate_requests_total counter\n") != NULL);
    CHECK_EQ_INT(well_formed(t), 0);
#undef AT
    sg_buf_free(&out);
    metrics_free(m);
}

static void test_escaping_and_bounds(void) {
    metrics *m = metrics_new(3);
    ledger_record r = rec("r", "p", "we\"ird\\model\nx", 200, 1, 1);
    metrics_observe_request(m, &r);
    char name[32];
    for (int i = 0; i < 10; i++) {   /* clients sending made-up model names */
        snprintf(name, sizeof name, "gpt-made-up-%d", i);
        ledger_record x = rec("r", "openai", name, 404, 1, -1);
        metrics_observe_request(m, &x);
    }
    sg_buf out;
    sg_buf_init(&out);
    metrics_render(m, &out);
    CHECK(strstr(out.data, "model=\"we\\\"ird\\\\model\\nx\"") != NULL);
    CHECK(strstr(out.data, "gpt-made-up-0") != NULL);
    CHECK(strstr(out.data, "gpt-made-up-5") == NULL);   /* folded */
    double folded = sample(out.data, "smolgate_requests_total{route=\"r\",provider=\"openai\",model=\"other\"}");
    double all_other = sample(out.data, "smolgate_requests_total{route=\"other\",provider=\"other\",model=\"other\"}");
    CHECK(folded > 0);
    CHECK(folded + (all_other > 0 ? all_other : 0) + 2 == 10);   /* nothing lost */
    CHECK_EQ_INT(well_formed(out.data), 0);
    sg_buf_free(&out);
    metrics_free(m);
}

static void test_ledger_stats(void) {
    ledger_stats s = {.appended = 10, .delivered = 9, .duplicates = 1, .batches = 2, .db_failures = 3,
                      .append_failures = 0, .malformed = 0, .pending = 1, .db_connected = true};
    sg_buf out;
    sg_buf_init(&out);
    metrics_render_ledger(&s, &out);
    CHECK(sample(out.data, "smolgate_ledger_appended_total") == 10);
    CHECK(sample(out.data, "smolgate_ledger_delivered_total") == 9);
    CHECK(sample(out.data, "smolgate_ledger_pending") == 1);
    CHECK(sample(out.data, "smolgate_ledger_db_failures_total") == 3);
    CHECK(sample(out.data, "smolgate_ledger_database_up") == 1);
    CHECK_EQ_INT(well_formed(out.data), 0);
    sg_buf_free(&out);
}

/* metrics_json (the dashboard's live view): one object per series, quantiles as the upper
 * bound of the histogram bucket that holds them, -1 without observations. */
static void test_json(void) {
    metrics *m = metrics_new(0);
    int64_t lat[] = {3, 30, 30, 30, 300, 300, 300, 300, 300, 4000};   /* buckets 5, 50, 500, 5000 */
    for (int i = 0; i < 10; i++) {
        ledger_record r = rec("chat", "openai", "gpt", i == 9 ? 502 : 200, lat[i], i < 5 ? 20 : -1);
        metrics_observe_request(m, &r);
    }
    json_t *a = metrics_json(m);
    CHECK_EQ_INT(json_array_size(a), 1);
    json_t *o = json_array_get(a, 0);
    CHECK_EQ_STR(json_string_value(json_object_get(o, "route")), "chat");
    CHECK_EQ_INT(json_integer_value(json_object_get(o, "requests")), 10);
    CHECK_EQ_INT(json_integer_value(json_object_get(o, "errors")), 1);
    json_t *l = json_object_get(o, "latency_ms"), *t = json_object_get(o, "ttft_ms");
    CHECK_EQ_INT(json_integer_value(json_object_get(l, "count")), 10);
    CHECK_EQ_INT(json_integer_value(json_object_get(l, "p50")), 500);   /* the 5th of 10: 300 ms */
    CHECK_EQ_INT(json_integer_value(json_object_get(l, "p95")), 5000);  /* the 10th: 4000 ms */
    CHECK_EQ_INT(json_integer_value(json_object_get(t, "count")), 5);
    CHECK_EQ_INT(json_integer_value(json_object_get(t, "p50")), 25);
    json_decref(a);
    metrics_free(m);
    m = metrics_new(0);
    ledger_record r = rec("", "openai", "gpt", 200, -1, -1);   /* nothing observed */
    metrics_observe_request(m, &r);
    a = metrics_json(m);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(json_array_get(a, 0), "latency_ms"), "p95")), -1);
    json_decref(a);
    metrics_free(m);
}

int main(void) {
    RUN(test_counters);
    RUN(test_escaping_and_bounds);
    RUN(test_ledger_stats);
    RUN(test_json);
    return tu_finish("test_metrics");
}
