/* bench_ledger.c: what the ledger costs a request, and how fast it delivers (figures, no
 * assertions).
 *   1. ledger_append's added latency at 1,000 requests/s, as the event loop would call it
 *      (one realistic record per millisecond for 5 s, the writer delivering in the
 *      background every flush_ms): p50, p99, p99.9, max;
 *   2. the cost of the parts: a record's spool frame written and read back (and format
 *      1's JSON line, still read from old segments), cost_compute + cost_lookup, and
 *      ledger_db_insert alone (SQLite, decoded records, batches of 500 and 5000);
 *   3. delivery throughput: 200,000 records appended as fast as possible, then the time
 *      until the database has them all (records/s), with batch_max 500 (the default)
 *      and 5000, and the CPU time that took, all threads (append + delivery), per record;
 *   4. delivery alone: 200,000 records a stopped process left in the spool, adopted by
 *      a fresh one (the path after a crash): records/s and CPU per record.
 * CPU times are the process's (CLOCK_PROCESS_CPUTIME_ID), so other load on the machine
 * inflates them less than it inflates wall-clock rates. Each phase starts from an empty
 * database. Records carry ids from the gateway's generator (request_id.h: time-ordered, so
 * each insert lands at the right edge of the primary key's index); BENCH_IDS=random16
 * gives them the 16 random hex digits of smolgate before it, which land all over the
 * index and cost more as it outgrows SQLite's page cache (the A/B of that change; the
 * "random ids" line of ledger_db_insert alone shows it in every run).
 * SQLite in a temporary folder under $BENCH_DIR (default /tmp); PostgreSQL too when
 * SMOLGATE_BENCH_PG holds a connection URL (a scratch database: the bench adds rows). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/cost.h"
#include "gateway/ledger.h"
#include "gateway/request_id.h"
#include "gateway/ledger_db.h"
#include "gateway/ledger_frame.h"
#include "gateway/provider.h"
#include "bench_util.h"
#include <jansson.h>
#include <sqlite3.h>

static ledger_attempt g_att[2] = {{"openai", "gpt-4o-mini", 429, "retryable", 85, 0, 0, 30, 80, -1, -1, 0}, {"anthropic", "claude-haiku-4-5-20251001", 200, NULL, 1240, 85, 0, 0, 400, 1200, 300, 900}};

static uint64_t g_seed;
static bool g_random16;     /* BENCH_IDS=random16: the ids of smolgate before request_id.h */
static reqid_gen g_ids;

/* Record i's id: the gateway's, or (random16) 16 random hex digits. */
static void make_id(char *id, size_t cap, long i, bool random16) {
    if (!random16 && cap > REQID_LEN) { reqid_next(&g_ids, id); return; }
    uint64_t z = g_seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;   /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    snprintf(id, cap, "%016llx", (unsigned long long)z);
}

/* Record i, with an id as above. */
static void make(ledger_record *r, char *id, size_t cap, long i) {
    make_id(id, cap, i, g_random16);
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

static ledger *open_ledger_at(gw_ledger_kind kind, const char *target, const char *dir, uint32_t batch,
                              const char *spool_name, uint32_t flush_ms) {
    ledger_opts o;
    ledger_opts_defaults(&o);
    o.kind = kind;
    if (flush_ms) o.flush_ms = flush_ms;
    char db[600], spool[600];
    snprintf(db, sizeof db, "%s/%s.db", dir, spool_name);   /* each phase from an empty database */
    snprintf(spool, sizeof spool, "%s/%s", dir, spool_name);
    o.sqlite_path = db;
    o.postgres_url = target;
    o.spool_dir = spool;
    o.batch_max = batch;
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) fprintf(stderr, "bench_ledger: %s\n", err.msg);
    return l;
}

static ledger *open_ledger(gw_ledger_kind kind, const char *target, const char *dir, uint32_t batch) {
    char spool[32];
    snprintf(spool, sizeof spool, "spool-%u", batch);
    return open_ledger_at(kind, target, dir, batch, spool, 0);
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
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < N; i++) {
        int64_t due = t0 + i * 1000000;   /* 1,000 per second */
        struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        make(&r, id, sizeof id, WARM + i);
        int64_t a = bench_now_ns();
        ledger_append(l, &r, &err);
        lat[i] = bench_now_ns() - a;
    }
    qsort(lat, N, sizeof *lat, bench_cmp_i64);
    printf("ledger_append at 1,000 req/s (%s, %d records over %.1f s): p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
           name, N, (double)(bench_now_ns() - t0) / 1e9, lat[N / 2] / 1e3, lat[N * 99 / 100] / 1e3, lat[N * 999 / 1000] / 1e3,
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
    int64_t c0 = bench_cpu_ns(), t0 = bench_now_ns();
    for (long i = 0; i < N; i++) { make(&r, id, sizeof id, 1000000 + (long)batch * 10000000 + i); ledger_append(l, &r, &err); }
    int64_t t1 = bench_now_ns();
    int rc = ledger_flush(l, 300000);
    int64_t t2 = bench_now_ns(), c2 = bench_cpu_ns();
    ledger_stats st;
    ledger_get_stats(l, &st);
    printf("delivery (%s, batch_max %u): %d records appended at %.0f/s; all in the database after %.2f s = %.0f records/s%s "
           "(%llu transactions); CPU %.2f us per record, append + delivery, all threads\n",
           name, batch, N, N / ((t1 - t0) / 1e9), (t2 - t0) / 1e9, N / ((t2 - t0) / 1e9), rc ? " (TIMED OUT)" : "",
           (unsigned long long)st.batches, (c2 - c0) / 1e3 / N);
    ledger_close(l, 30000);
}

/* Delivery alone: a process appends N records and stops before delivering any (a flush
 * interval longer than the run, a batch larger than N, closed with no time to deliver);
 * a fresh ledger adopts its segments and delivers them. */
static void delivery_alone(const char *name, gw_ledger_kind kind, const char *target, const char *dir, uint32_t batch) {
    enum { N = 200000 };
    char spool[32];
    snprintf(spool, sizeof spool, "spool-adopt-%u", batch);
    ledger *w = open_ledger_at(kind, target, dir, 1u << 30, spool, 3600000);
    if (!w) return;
    char id[64];
    ledger_record r;
    sg_error err;
    for (long i = 0; i < N; i++) { make(&r, id, sizeof id, 500000000 + (long)batch * 10000000 + i); ledger_append(w, &r, &err); }
    ledger_close(w, 0);
    int64_t c0 = bench_cpu_ns(), t0 = bench_now_ns();
    ledger *l = open_ledger_at(kind, target, dir, batch, spool, 0);
    if (!l) return;
    ledger_stats st;
    int64_t deadline = t0 + 300 * (int64_t)1000000000;
    do {
        usleep(2000);
        ledger_get_stats(l, &st);
    } while (st.delivered < N && bench_now_ns() < deadline);
    int64_t t1 = bench_now_ns(), c1 = bench_cpu_ns();
    printf("delivery alone (%s, batch_max %u, adopted from a stopped process's spool): %llu records in %.2f s = %.0f records/s%s; "
           "CPU %.2f us per record\n",
           name, batch, (unsigned long long)st.delivered, (t1 - t0) / 1e9, st.delivered / ((t1 - t0) / 1e9),
           st.delivered < N ? " (TIMED OUT)" : "", (c1 - c0) / 1e3 / N);
    ledger_close(l, 30000);
}

/* ledger_db_insert alone: records decoded beforehand, batches of `batch`, SQLite. random16:
 * 16 random hex digits (before request_id.h) instead of the gateway's time-ordered ids. */
static void insert_alone(const char *dir, uint32_t batch, bool random16) {
    enum { N = 200000 };
    char path[600];
    snprintf(path, sizeof path, "%s/insert-%u-%d.db", dir, batch, random16);
    sg_error err;
    ledger_db *db = ledger_db_open(GW_LEDGER_SQLITE, path, false, &err);
    if (!db) { fprintf(stderr, "bench_ledger: %s\n", err.msg); return; }
    ledger_record *recs = malloc(batch * sizeof *recs);
    char (*ids)[64] = malloc(batch * sizeof *ids);
    int64_t c0 = bench_cpu_ns(), t0 = bench_now_ns();
    for (long i = 0; i < N; i += batch) {
        uint32_t n = 0;
        for (; n < batch && i + n < N; n++) {
            make(&recs[n], ids[n], sizeof ids[n], 900000000 + i + n);
            make_id(ids[n], sizeof ids[n], 900000000 + i + n, random16);
        }
        if (ledger_db_insert(db, recs, n, &err) < 0) { fprintf(stderr, "bench_ledger: %s\n", err.msg); break; }
    }
    int64_t t1 = bench_now_ns(), c1 = bench_cpu_ns();
    printf("ledger_db_insert alone (SQLite, batches of %u, %s ids): %.0f records/s, CPU %.2f us per record\n", batch,
           random16 ? "random" : "time-ordered", N / ((t1 - t0) / 1e9), (c1 - c0) / 1e3 / N);
    free(recs);
    free(ids);
    ledger_db_close(db);
}

/* The floor: what SQLite itself costs for a row of this shape, without the ledger. A
 * bare table with the 21 columns of `requests` (no primary key, no index, no attempts),
 * one prepared single-row INSERT in a loop, transactions of 5000, the writer's settings
 * (WAL, synchronous=FULL, 16 KiB pages). multi: 32 rows a statement, as ledger_db does. */
static void insert_floor(const char *dir, bool multi) {
    enum { N = 200000, TX = 5000, ROWS = 32, COLS = 21 };
    char path[600];
    snprintf(path, sizeof path, "%s/floor-%d.db", dir, multi);
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) return;
    sqlite3_exec(db, "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-32768;"
                     "CREATE TABLE r (request_id TEXT, ts_ms INTEGER, key_id TEXT, route TEXT, requested_model TEXT,"
                     " provider TEXT, model TEXT, status INTEGER, error TEXT, stream INTEGER, n_attempts INTEGER,"
                     " fallbacks INTEGER, input_tokens INTEGER, cache_read_tokens INTEGER, cache_write_tokens INTEGER,"
                     " output_tokens INTEGER, reasoning_tokens INTEGER, usage_estimated INTEGER, cost_micro INTEGER,"
                     " latency_ms INTEGER, ttft_ms INTEGER)", NULL, NULL, NULL);
    int rows = multi ? ROWS : 1;
    sg_buf sql;
    sg_buf_init(&sql);
    sg_buf_puts(&sql, "INSERT INTO r VALUES ");
    for (int r = 0; r < rows; r++) sg_buf_puts(&sql, r ? ",(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql.data, -1, &st, NULL) != SQLITE_OK) { sqlite3_close(db); sg_buf_free(&sql); return; }
    sg_buf_free(&sql);
    char id[64];
    ledger_record r;
    int64_t c0 = bench_cpu_ns(), t0 = bench_now_ns();
    for (long i = 0; i < N; i += rows) {
        if (i % TX == 0) sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (int k = 0; k < rows; k++) {
            make(&r, id, sizeof id, 700000000 + i + k);
            int p = k * COLS;
            sqlite3_bind_text(st, p + 1, r.request_id, -1, SQLITE_TRANSIENT);   /* id[] is reused */
            sqlite3_bind_int64(st, p + 2, r.time_ms);
            sqlite3_bind_text(st, p + 3, r.key_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, p + 4, r.route, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, p + 5, r.requested_model, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, p + 6, r.provider, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, p + 7, r.model, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, p + 8, r.status);
            sqlite3_bind_null(st, p + 9);
            sqlite3_bind_int64(st, p + 10, r.stream);
            sqlite3_bind_int64(st, p + 11, (int64_t)r.n_attempts);
            sqlite3_bind_int64(st, p + 12, 0);
            sqlite3_bind_int64(st, p + 13, r.usage.input);
            sqlite3_bind_int64(st, p + 14, r.usage.cache_read);
            sqlite3_bind_int64(st, p + 15, r.usage.cache_write);
            sqlite3_bind_int64(st, p + 16, r.usage.output);
            sqlite3_bind_null(st, p + 17);
            sqlite3_bind_int64(st, p + 18, 0);
            sqlite3_bind_int64(st, p + 19, r.cost_micro);
            sqlite3_bind_int64(st, p + 20, r.latency_ms);
            sqlite3_bind_int64(st, p + 21, r.ttft_ms);
        }
        if (sqlite3_step(st) != SQLITE_DONE) fprintf(stderr, "bench_ledger: floor: %s\n", sqlite3_errmsg(db));
        sqlite3_reset(st);
        if ((i + rows) % TX == 0 || i + rows >= N) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    int64_t t1 = bench_now_ns(), c1 = bench_cpu_ns();
    printf("the floor: a bare INSERT of a requests row (no key, no index, no attempts; %s, transactions of %d): "
           "%.0f records/s, CPU %.2f us per record\n",
           multi ? "32 rows a statement" : "one row a statement", TX, N / ((t1 - t0) / 1e9), (c1 - c0) / 1e3 / N);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void parts(void) {
    enum { N = 200000 };
    sg_buf b;
    sg_buf_init(&b);
    char id[64];
    ledger_record r;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < N; i++) { make(&r, id, sizeof id, i); sg_buf_reset(&b); ledger_frame_encode(&r, &b); }
    int64_t t1 = bench_now_ns();
    printf("spool frame (format 2): written in %.3f us per record (%zu bytes)", (t1 - t0) / 1e3 / N, b.len);
    ledger_record back;
    ledger_attempt atts[LEDGER_MAX_ATTEMPTS];
    size_t used = 0;
    long ok = 0;
    t0 = bench_now_ns();
    for (long i = 0; i < N; i++) ok += ledger_frame_decode(b.data, b.len, &back, atts, &used);
    t1 = bench_now_ns();
    printf(", read back in %.3f us (%ld)\n", (t1 - t0) / 1e3 / N, ok);
    sg_buf_reset(&b);
    ledger_record_json(&r, &b);
    ok = 0;
    t0 = bench_now_ns();
    for (long i = 0; i < N; i++) {
        json_t *root = NULL;
        ok += ledger_frame_parse_json(b.data, b.len - 1, &root, &back, atts) == 0;
        json_decref(root);
    }
    t1 = bench_now_ns();
    printf("spool line (format 1, JSON, %zu bytes): read back in %.3f us (%ld)\n", b.len, (t1 - t0) / 1e3 / N, ok);
    sg_buf_free(&b);
    cost_catalog *c = cost_catalog_build(NULL, NULL);
    gw_provider p = {.name = "anthropic", .type = GW_PROVIDER_ANTHROPIC, .entry = &gw_provider_anthropic};
    gw_usage u = {1200, 4096, 0, 321, -1, false};
    int64_t sum = 0;
    t0 = bench_now_ns();
    for (long i = 0; i < N; i++) sum += cost_compute(cost_lookup(c, &p, "claude-haiku-4-5-20251001"), &u);
    t1 = bench_now_ns();
    printf("cost_lookup (dated alias) + cost_compute: %.3f us per request (%lld)\n", (t1 - t0) / 1e3 / N, (long long)(sum / N));
    cost_catalog_free(c);
}

/* BENCH_ONLY=latency,parts,insert,floor,throughput,alone,postgres: those phases only (all by default). */
static bool phase(const char *name) {
    const char *only = getenv("BENCH_ONLY");
    if (!only || !*only) return true;
    size_t n = strlen(name);
    for (const char *p = only; (p = strstr(p, name)); p += n)
        if ((p == only || p[-1] == ',') && (p[n] == ',' || !p[n])) return true;
    return false;
}

int main(void) {
    sg_log_set_level(SG_LOG_ERROR);
    g_seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    reqid_init(&g_ids);
    g_random16 = getenv("BENCH_IDS") && !strcmp(getenv("BENCH_IDS"), "random16");
    printf("ids: %s\n", g_random16 ? "16 random hex digits (BENCH_IDS=random16)" : "the gateway's, time-ordered (request_id.h)");
    const char *base = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/tmp";
    char dir[512];
    snprintf(dir, sizeof dir, "%s/smolgate-bench-ledger-XXXXXX", base);
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    if (phase("latency")) append_latency("SQLite", GW_LEDGER_SQLITE, NULL, dir);
    if (phase("parts")) parts();
    if (phase("insert")) {
        insert_alone(dir, 500, false);
        insert_alone(dir, 5000, false);
        insert_alone(dir, 5000, true);
    }
    if (phase("floor")) {
        insert_floor(dir, false);
        insert_floor(dir, true);
    }
    if (phase("throughput")) {
        throughput("SQLite", GW_LEDGER_SQLITE, NULL, dir, 500);
        throughput("SQLite", GW_LEDGER_SQLITE, NULL, dir, 5000);
    }
    if (phase("alone")) {
        delivery_alone("SQLite", GW_LEDGER_SQLITE, NULL, dir, 500);
        delivery_alone("SQLite", GW_LEDGER_SQLITE, NULL, dir, 5000);
    }
    const char *pg = getenv("SMOLGATE_BENCH_PG");
    if (pg && *pg && phase("postgres")) {
        append_latency("PostgreSQL", GW_LEDGER_POSTGRES, pg, dir);
        throughput("PostgreSQL", GW_LEDGER_POSTGRES, pg, dir, 500);
        throughput("PostgreSQL", GW_LEDGER_POSTGRES, pg, dir, 5000);
        delivery_alone("PostgreSQL", GW_LEDGER_POSTGRES, pg, dir, 5000);
    } else {
        printf("(PostgreSQL: set SMOLGATE_BENCH_PG=postgresql://... to measure it)\n");
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) { /* leave it */ }
    return 0;
}
