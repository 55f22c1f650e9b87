/* bench_dashboard.c: the dashboard's ledger reads (dash_query.h) on a big SQLite ledger.
 *
 * Fills a ledger with N records (default 1,000,000; BENCH_DASH_N) over 30 days: 20 keys,
 * 5 routes, 4 providers, 12 models, 1 in 7 with a fallback, 1 in 20 failed, through
 * ledger_db_insert in batches of 5,000 (what the writer does). Then times:
 *   rollup      rolling up all N in steps of 50,000 (once, when schema 4 meets an old
 *               ledger; the worker does it when idle), and a spend query before it
 *   spend       dashq_spend (the rollup table and the records past its mark) for the
 *               dashboard's queries, next to usage_query over `requests` for the same
 *               filter (what a spend page would cost without the rollup)
 *   incremental 1,000 more records, then one spend query (the 1,000 summed on the fly)
 *   requests    dashq_requests: the first page, a search, a filter, a page deep in
 *   trace       dashq_request of one id
 * Each query: the median of 5 runs, in milliseconds. BENCH_DASH_DB keeps the file there
 * (bench/dashboard.sh times the HTTP endpoints on it). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/dash_query.h"
#include "gateway/ledger.h"
#include "gateway/ledger_db.h"
#include "gateway/ledger_usage.h"
#include "bench_util.h"

#define BATCH 5000
#define RUNS 5

static int64_t g_end_ms;   /* the newest record's time */

static void fill(ledger_db *db, int64_t from, int64_t n) {
    static const char *const routes[] = {"chat", "code", "summarise", "agents", "embed"};
    static const char *const providers[] = {"openai", "anthropic", "google", "local"};
    static const char *const models[] = {"gpt-4o-mini", "gpt-4.1", "o4-mini",          "claude-haiku-4-5",
                                         "claude-sonnet-4-5", "claude-opus-4", "gemini-2.5-flash", "gemini-2.5-pro",
                                         "gemini-2.0-flash", "smollm3", "smollm2-1.7b", "smollm2-360m"};
    ledger_record *rs = calloc(BATCH, sizeof *rs);
    ledger_attempt (*at)[2] = calloc(BATCH, sizeof *at);
    char (*ids)[40] = calloc(BATCH, sizeof *ids);
    char keys[20][24];
    for (int k = 0; k < 20; k++) snprintf(keys[k], sizeof keys[k], "team-%02d", k);
    int64_t span = 30ll * 86400000, t0 = g_end_ms - span;
    sg_error err;
    for (int64_t base = from; base < from + n; base += BATCH) {
        size_t m = (size_t)(from + n - base < BATCH ? from + n - base : BATCH);
        for (size_t k = 0; k < m; k++) {
            int64_t i = base + (int64_t)k;
            uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull;
            snprintf(ids[k], sizeof ids[k], "%016" PRIx64 "%016" PRIx64, (uint64_t)i, h);
            int p = (int)((h >> 20) % 4), mi = p * 3 + (int)((h >> 30) % 3);
            ledger_record *r = &rs[k];
            r->time_ms = t0 + (i * span) / 1000000 % span;
            r->request_id = ids[k];
            r->key_id = keys[(h >> 8) % 20];
            r->route = routes[(h >> 40) % 5];
            r->requested_model = r->route;
            r->provider = providers[p];
            r->model = models[mi];
            bool failed = i % 20 == 7, fb = i % 7 == 3;
            r->status = failed ? 502 : 200;
            r->error = failed ? "retryable" : NULL;
            r->usage = (gw_usage){.input = 200 + (int64_t)(h % 3000), .cache_read = (int64_t)(h % 500), .cache_write = 0,
                                  .output = 50 + (int64_t)((h >> 12) % 800), .reasoning = 0};
            r->cost_micro = p == 3 ? 0 : 30 + (int64_t)(h % 4000);
            r->latency_ms = 200 + (int64_t)(h % 5000);
            r->ttft_ms = 100 + (int64_t)(h % 900);
            at[k][0] = (ledger_attempt){.provider = "openai", .model = "gpt-4o", .status = 503, .error = "retryable", .latency_ms = 80};
            at[k][1] = (ledger_attempt){.provider = r->provider, .model = r->model, .status = r->status, .error = r->error,
                                        .latency_ms = r->latency_ms - (fb ? 80 : 0)};
            r->attempts = fb ? at[k] : &at[k][1];
            r->n_attempts = fb ? 2 : 1;
        }
        if (ledger_db_insert(db, rs, m, &err) < 0) { fprintf(stderr, "insert: %s\n", err.msg); exit(1); }
    }
    free(rs);
    free(at);
    free(ids);
}

typedef int (*query_fn)(ledger_db *db, const char *q);

static int q_spend(ledger_db *db, const char *q) {
    usage_filter f;
    usage_result r;
    sg_error err;
    if (dashq_parse_spend(&f, q, &err) || dashq_spend(db, &f, &r, &err)) { fprintf(stderr, "%s: %s\n", q, err.msg); return -1; }
    usage_result_free(&r);
    return 0;
}

static int q_usage(ledger_db *db, const char *q) {
    usage_filter f;
    usage_result r;
    sg_error err;
    if (dashq_parse_spend(&f, q, &err) || usage_query(db, &f, &r, &err)) { fprintf(stderr, "%s: %s\n", q, err.msg); return -1; }
    usage_result_free(&r);
    return 0;
}

static int q_requests(ledger_db *db, const char *q) {
    dashq_filter f;
    dashq_filter_init(&f);
    sg_error err;
    sg_buf b;
    sg_buf_init(&b);
    int rc = dashq_parse_requests(&f, q, &err) || dashq_requests(db, &f, &b, &err) ? -1 : 0;
    if (rc) fprintf(stderr, "%s: %s\n", q, err.msg);
    sg_buf_free(&b);
    return rc;
}

static char g_id[40];
static int q_trace(ledger_db *db, const char *q) {
    (void)q;
    bool found;
    sg_error err;
    sg_buf b;
    sg_buf_init(&b);
    int rc = dashq_request(db, g_id, &found, &b, &err);
    sg_buf_free(&b);
    return rc || !found ? -1 : 0;
}

static void timed(ledger_db *db, const char *label, query_fn fn, const char *q) {
    int64_t t[RUNS];
    for (int i = 0; i < RUNS; i++) {
        int64_t a = bench_now_ns();
        if (fn(db, q)) { printf("  %-44s failed\n", label); return; }
        t[i] = bench_now_ns() - a;
    }
    int64_t first = t[0];
    qsort(t, RUNS, sizeof *t, bench_cmp_i64);
    printf("  %-44s %9.2f ms median  (first %.2f)\n", label, t[RUNS / 2] / 1e6, first / 1e6);
}

int main(void) {
    sg_log_set_level(SG_LOG_WARN);
    int64_t n = getenv("BENCH_DASH_N") ? strtoll(getenv("BENCH_DASH_N"), NULL, 10) : 1000000;
    const char *keep = getenv("BENCH_DASH_DB");
    char path[256];
    if (keep) snprintf(path, sizeof path, "%s", keep);
    else snprintf(path, sizeof path, "/tmp/smolgate-bench-dashboard-%d.db", (int)getpid());
    for (const char *sfx = ""; sfx; sfx = !*sfx ? "-wal" : !strcmp(sfx, "-wal") ? "-shm" : NULL) {
        char p[300];
        snprintf(p, sizeof p, "%s%s", path, sfx);
        unlink(p);
    }
    sg_error err;
    ledger_db *db = ledger_db_open(GW_LEDGER_SQLITE, path, false, &err);
    if (!db) { fprintf(stderr, "open: %s\n", err.msg); return 1; }
    g_end_ms = (int64_t)time(NULL) * 1000;
    printf("== dashboard queries on a SQLite ledger of %" PRId64 " records (%s)\n", n, path);
    int64_t a = bench_now_ns();
    fill(db, 0, n);
    printf("  %-44s %9.2f s\n", "fill (ledger_db_insert, batches of 5000)", (bench_now_ns() - a) / 1e9);
    char q[256];
    int64_t now_s = g_end_ms / 1000;
    snprintf(q, sizeof q, "by=key&bucket=day&from=%" PRId64, now_s - 30 * 86400);
    timed(db, "spend by key, day, 30 days (none rolled up)", q_spend, q);
    a = bench_now_ns();
    int64_t rolled = 0, step, steps = 0, worst = 0;
    do {   /* as the worker does: bounded steps */
        int64_t s0 = bench_now_ns();
        if (dashq_rollup(db, 50000, &step, &err)) { fprintf(stderr, "rollup: %s\n", err.msg); return 1; }
        if (bench_now_ns() - s0 > worst) worst = bench_now_ns() - s0;
        rolled += step;
        steps++;
    } while (step > 0);
    printf("  %-44s %9.2f ms  (%" PRId64 " records, %" PRId64 " steps of 50000, longest %.0f ms)\n", "first rollup",
           (bench_now_ns() - a) / 1e6, rolled, steps - 1, worst / 1e6);
    struct { const char *label, *fmt; } spend[] = {
        {"spend by key, day, 30 days", "by=key&bucket=day&from=%" PRId64},
        {"spend by model, hour, 7 days", "by=model&bucket=hour&from=%" PRId64},
        {"spend by route, none, 24 hours", "by=route&bucket=none&from=%" PRId64},
        {"spend by key, day, one key, 30 days", "by=key&bucket=day&key=team-03&from=%" PRId64},
    };
    int64_t back[] = {30 * 86400, 7 * 86400, 86400, 30 * 86400};
    for (size_t i = 0; i < sizeof spend / sizeof *spend; i++) {
        snprintf(q, sizeof q, spend[i].fmt, now_s - back[i]);
        char label[96];
        snprintf(label, sizeof label, "%s (rollup)", spend[i].label);
        timed(db, label, q_spend, q);
        snprintf(label, sizeof label, "%s (requests)", spend[i].label);
        timed(db, label, q_usage, q);
    }
    fill(db, n, 1000);
    snprintf(q, sizeof q, "by=key&bucket=day&from=%" PRId64, now_s - 30 * 86400);
    int64_t b0 = bench_now_ns();
    q_spend(db, q);
    printf("  %-44s %9.2f ms  (1000 not rolled up)\n", "1000 new records, then spend by key, day", (bench_now_ns() - b0) / 1e6);
    timed(db, "requests: newest 50", q_requests, "limit=50");
    timed(db, "requests: key and status=error, 50", q_requests, "key=team-07&status=error&limit=50");
    timed(db, "requests: route + model, 50", q_requests, "route=code&model=claude-haiku-4-5&limit=50");
    timed(db, "requests: search a common word (q=haiku)", q_requests, "q=haiku&limit=50");
    timed(db, "requests: search a rare string (q=nothing)", q_requests, "q=nothing-matches&limit=50");
    snprintf(q, sizeof q, "limit=50&before=%" PRId64 ".0", (int64_t)(g_end_ms - 15 * (int64_t)86400000));
    timed(db, "requests: a page 15 days back (before=)", q_requests, q);
    snprintf(g_id, sizeof g_id, "%016" PRIx64 "%016" PRIx64, (uint64_t)10, (uint64_t)(10 * (uint64_t)0x9E3779B97F4A7C15));
    timed(db, "trace: one request and its attempts", q_trace, "");
    ledger_db_close(db);
    if (!keep) {
        unlink(path);
        char p[300];
        snprintf(p, sizeof p, "%s-wal", path);
        unlink(p);
        snprintf(p, sizeof p, "%s-shm", path);
        unlink(p);
    }
    return 0;
}
