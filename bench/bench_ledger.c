/* bench_ledger.c: what the ledger costs a request, and how fast it delivers (figures, no
 * assertions).
 *   1. ledger_append's added latency at 1,000 requests/s, as the event loop would call it
 *      (one realistic record per millisecond for 5 s, the writer delivering in the
 *      background every flush_ms): p50, p99, p99.9, max;
 *   2. the cost of the parts: serialising a record, and cost_compute + cost_lookup;
 *   3. delivery throughput: 200,000 records appended as fast as possible, then the time
 *      until the database has them all (records/s), with batch_max 500 (the default)
 *      and 5000.
 * SQLite in a temporary folder under $BENCH_DIR (default /tmp); PostgreSQL too when
 * SMOLGATE_BENCH_PG holds a connection URL (a scratch database: the bench adds rows). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/cost.h"
#include "gateway/ledger.h"
#include "gateway/provider.h"

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static char g_run[32];
static ledger_attempt g_att[2] = {{"openai", "gpt-4o-mini", 429, "retryable", 85, 0}, {"anthropic", "claude-haiku-4-5-20251001", 200, NULL, 1240, 85}};

static void make(ledger_record *r, char *id, size_t cap, long i) {
    snprintf(id, cap, "%s-%016lx", g_run, i);
    memset(r, 0, sizeof *r);
    r->request_id = id;
    r->time_ms = 0;
    r->key_id = "team-search";
    r->route = "chat";
    r->requested_model = "chat";
    r->provider = "anthropic";
    r->model = "claude-haiku-4-5-20251001";
    r->attempts = g_att;
    r->n_attempts = i % 10 ? 1 : 2;
    if (r->n_attempts == 1) r->attempts = g_att + 1;
    r->usage = (gw_usage){1200, 4096, 0, 321, -1, false};
    r->cost_micro = 3215;
    r->latency_ms = 1330;
    r->ttft_ms = 410;
    r->status = 200;
    r->stream = true;
}

static ledger *open_ledger(gw_ledger_kind kind, const char *target, const char *dir, uint32_t batch) {
    ledger_opts o;
    ledger_opts_defaults(&o);
    o.kind = kind;
    char db[600], spool[600];
    snprintf(db, sizeof db, "%s/ledger.db", dir);
    snprintf(spool, sizeof spool, "%s/spool-%u", dir, batch);
    o.sqlite_path = db;
    o.postgres_url = target;
    o.spool_dir = spool;
    o.batch_max = batch;
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) fprintf(stderr, "bench_ledger: %s\n", err.msg);
    return l;
}

static void append_latency(const char *name, gw_ledger_kind kind, const char *target, const char *dir) {
    ledger *l = open_ledger(kind, target, dir, 500);
    if (!l) return;
    enum { WARM = 500, N = 5000 };
    int64_t *lat = malloc(N * sizeof *lat);
    char id[64];
    ledger_record r;
    sg_error err;
    for (long i = 0; i < WARM; i++) { make(&r, id, sizeof id, i); ledger_append(l, &r, &err); }
    ledger_flush(l, 10000);
    int64_t t0 = now_ns();
    for (long i = 0; i < N; i++) {
        int64_t due = t0 + i * 1000000;   /* 1,000 per second */
        struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        make(&r, id, sizeof id, WARM + i);
        int64_t a = now_ns();
        ledger_append(l, &r, &err);
        lat[i] = now_ns() - a;
    }
    qsort(lat, N, sizeof *lat, cmp_i64);
    printf("ledger_append at 1,000 req/s (%s, %d records over %.1f s): p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
           name, N, (double)(now_ns() - t0) / 1e9, lat[N / 2] / 1e3, lat[N * 99 / 100] / 1e3, lat[N * 999 / 1000] / 1e3,
           lat[N - 1] / 1e3);
    free(lat);
    ledger_close(l, 30000);
}

static void throughput(const char *name, gw_ledger_kind kind, const char *target, const char *dir, uint32_t batch) {
    ledger *l = open_ledger(kind, target, dir, batch);
    if (!l) return;
    enum { N = 200000 };
    char id[64];
    ledger_record r;
    sg_error err;
    int64_t t0 = now_ns();
    for (long i = 0; i < N; i++) { make(&r, id, sizeof id, 1000000 + (long)batch * 10000000 + i); ledger_append(l, &r, &err); }
    int64_t t1 = now_ns();
    int rc = ledger_flush(l, 300000);
    int64_t t2 = now_ns();
    ledger_stats st;
    ledger_get_stats(l, &st);
    printf("delivery (%s, batch_max %u): %d records appended at %.0f/s; all in the database after %.2f s = %.0f records/s%s "
           "(%llu transactions)\n",
           name, batch, N, N / ((t1 - t0) / 1e9), (t2 - t0) / 1e9, N / ((t2 - t0) / 1e9), rc ? " (TIMED OUT)" : "",
           (unsigned long long)st.batches);
    ledger_close(l, 30000);
}

static void parts(void) {
    enum { N = 200000 };
    sg_buf b;
    sg_buf_init(&b);
    char id[64];
    ledger_record r;
    int64_t t0 = now_ns();
    for (long i = 0; i < N; i++) { make(&r, id, sizeof id, i); sg_buf_reset(&b); ledger_record_json(&r, &b); }
    int64_t t1 = now_ns();
    printf("record serialisation: %.2f us per record (%zu bytes)\n", (t1 - t0) / 1e3 / N, b.len);
    sg_buf_free(&b);
    cost_catalog *c = cost_catalog_build(NULL, NULL);
    gw_provider p = {.name = "anthropic", .type = GW_PROVIDER_ANTHROPIC, .entry = &gw_provider_anthropic};
    gw_usage u = {1200, 4096, 0, 321, -1, false};
    int64_t sum = 0;
    t0 = now_ns();
    for (long i = 0; i < N; i++) sum += cost_compute(cost_lookup(c, &p, "claude-haiku-4-5-20251001"), &u);
    t1 = now_ns();
    printf("cost_lookup (dated alias) + cost_compute: %.3f us per request (%lld)\n", (t1 - t0) / 1e3 / N, (long long)(sum / N));
    cost_catalog_free(c);
}

int main(void) {
    sg_log_set_level(SG_LOG_ERROR);
    snprintf(g_run, sizeof g_run, "bench-%lx", (unsigned long)time(NULL) ^ (unsigned long)getpid() << 16);
    const char *base = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/tmp";
    char dir[512];
    snprintf(dir, sizeof dir, "%s/smolgate-bench-ledger-XXXXXX", base);
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    append_latency("SQLite", GW_LEDGER_SQLITE, NULL, dir);
    parts();
    throughput("SQLite", GW_LEDGER_SQLITE, NULL, dir, 500);
    throughput("SQLite", GW_LEDGER_SQLITE, NULL, dir, 5000);
    const char *pg = getenv("SMOLGATE_BENCH_PG");
    if (pg && *pg) {
        append_latency("PostgreSQL", GW_LEDGER_POSTGRES, pg, dir);
        throughput("PostgreSQL", GW_LEDGER_POSTGRES, pg, dir, 500);
        throughput("PostgreSQL", GW_LEDGER_POSTGRES, pg, dir, 5000);
    } else {
        printf("(PostgreSQL: set SMOLGATE_BENCH_PG=postgresql://... to measure it)\n");
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* leave it */ }
    return 0;
}
