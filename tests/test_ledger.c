/* test_ledger.c: the ledger with SQLite. Records go through the spool and the writer
 * thread into the database with every field; N appended, closed and reopened, is N rows;
 * a batch fills and is delivered without waiting; segments rotate and delivered ones go;
 * a spool left by a dead process (checkpoint, a re-delivered part, a torn last line) is
 * adopted and delivered exactly once; a live process's spool is never taken; records
 * spooled while the database is unreachable are delivered by the next start; two ledgers
 * on one spool and one database; schema migrations and a too-new schema; usage queries
 * (filters, groups, sums, unpriced), their renderers, query-string and time parsing, and
 * GET /v1/usage's status codes; spool write failures (a file size limit) are counted and
 * logged without a flood. The kill -9 and PostgreSQL cases are in tests/e2e. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/buf.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "gateway/config.h"
#include "gateway/ledger.h"
#include "gateway/ledger_db.h"
#include "gateway/ledger_frame.h"
#include "gateway/ledger_usage.h"
#include "testutil.h"

/* A scratch folder per test: its database and spool paths. */
typedef struct tdir {
    char dir[300], db[400], spool[400];
} tdir;

static void tdir_init(tdir *t, const char *name) {
    snprintf(t->dir, sizeof t->dir, "%s/%s", tu_tmpdir(), name);
    mkdir(t->dir, 0755);
    snprintf(t->db, sizeof t->db, "%s/ledger.db", t->dir);
    snprintf(t->spool, sizeof t->spool, "%s/spool", t->dir);
}

static ledger_opts opts_for(const tdir *t) {
    ledger_opts o;
    ledger_opts_defaults(&o);
    o.sqlite_path = t->db;
    o.spool_dir = t->spool;
    o.flush_ms = 50;
    return o;
}

static int64_t sql_int(const char *db_path, const char *sql) {
    sqlite3 *db;
    int64_t v = -1;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        } else {
            fprintf(stderr, "    sql: %s\n", sqlite3_errmsg(db));
        }
    }
    sqlite3_close(db);
    return v;
}

static char *sql_text(const char *db_path, const char *sql) {
    static char out[1024];
    sqlite3 *db;
    out[0] = 0;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                snprintf(out, sizeof out, "%s", (const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return out;
}

static int count_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), s = strlen(suffix);
        if (l > s && !strcmp(e->d_name + l - s, suffix)) n++;
    }
    closedir(d);
    return n;
}

/* A simple record i: two attempts (a fallback) for odd i. */
static void make_record(ledger_record *r, ledger_attempt *att, char *id, size_t idcap, const char *prefix, int i) {
    snprintf(id, idcap, "%s-%d", prefix, i);
    memset(r, 0, sizeof *r);
    r->request_id = id;
    r->time_ms = 1732406400000ll + i;
    r->key_id = i % 3 ? "team-a" : "team-b";
    r->route = "chat";
    r->requested_model = "chat";
    att[0] = (ledger_attempt){"openai", "gpt-4o-mini", i % 2 ? 429 : 200, i % 2 ? "retryable" : NULL, 120, 0, 5, 30, 60, 100 + i, 40, i % 2 ? 0 : 17};
    att[1] = (ledger_attempt){"anthropic", "claude-haiku-4-5", 200, NULL, 340, 250, 0, 0, 90, 100 + i, 50, 42};
    r->attempts = att;
    r->n_attempts = i % 2 ? 2 : 1;
    r->provider = i % 2 ? "anthropic" : "openai";
    r->model = i % 2 ? "claude-haiku-4-5" : "gpt-4o-mini";
    r->usage = (gw_usage){100 + i, 10, 0, 50, -1, false};
    r->cost_micro = 42;
    r->latency_ms = 500;
    r->ttft_ms = 80;
    r->status = 200;
    r->stream = i % 2;
}

static int append_n(ledger *l, const char *prefix, int from, int n) {
    int ok = 0;
    for (int i = from; i < from + n; i++) {
        ledger_record r;
        ledger_attempt att[2];
        char id[64];
        make_record(&r, att, id, sizeof id, prefix, i);
        sg_error err;
        if (ledger_append(l, &r, &err) == 0) ok++;
    }
    return ok;
}

/* ---- the record's fields ---- */

static void test_fields(void) {
    tdir t;
    tdir_init(&t, "fields");
    ledger_opts o = opts_for(&t);
    const char *db = t.db;
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    CHECK_MSG(l != NULL, "%s", err.msg);
    if (!l) return;
    ledger_attempt att[2] = {
        {"openai", "gpt-4o", 503, "retryable", 1200, 0, 7, 45, 1100, -1, -1, 0},
        {"anthropic", "claude-sonnet-4-5-20250929", 200, NULL, 2300, 1300, 2, 0, 1200, 50, 400, 16650},
    };
    ledger_record r = {
        .time_ms = 1732406400123, .request_id = "req-1", .key_id = "team-\"a\"\n", .route = "r\t\xc3\xa9\xf0\x9f\x99\x82\\",
        .requested_model = "chat\xff\xfe", .provider = "anthropic", .model = "claude-sonnet-4-5-20250929",
        .attempts = att, .n_attempts = 2, .usage = {50, 10000, 2000, 400, 120, true}, .cost_micro = 16650,
        .latency_ms = 3600, .ttft_ms = 2500, .status = 200, .error = NULL, .stream = true,
    };
    CHECK(ledger_append(l, &r, &err) == 0);
    ledger_record r2 = {.request_id = "req-2", .status = 429, .error = "rate_limited", .cost_micro = -1,
                        .latency_ms = 1, .ttft_ms = -1};
    gw_usage_init(&r2.usage);
    CHECK(ledger_append(l, &r2, &err) == 0);
    CHECK(ledger_flush(l, 5000) == 0);
    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.appended, 2);
    CHECK_EQ_INT(st.delivered, 2);
    CHECK_EQ_INT(st.pending, 0);
    CHECK(st.db_connected);
    ledger_close(l, 5000);
    CHECK_EQ_INT(sql_int(db, "SELECT ts_ms FROM requests WHERE request_id='req-1'"), 1732406400123);
    CHECK_EQ_STR(sql_text(db, "SELECT key_id FROM requests WHERE request_id='req-1'"), "team-\"a\"\n");
    CHECK_EQ_STR(sql_text(db, "SELECT requested_model FROM requests WHERE request_id='req-1'"), "chat\xef\xbf\xbd\xef\xbf\xbd");
    CHECK_EQ_STR(sql_text(db, "SELECT route FROM requests WHERE request_id='req-1'"), "r\t\xc3\xa9\xf0\x9f\x99\x82\\");
    CHECK_EQ_STR(sql_text(db, "SELECT provider || '/' || model FROM requests WHERE request_id='req-1'"),
                 "anthropic/claude-sonnet-4-5-20250929");
    CHECK_EQ_INT(sql_int(db, "SELECT n_attempts FROM requests WHERE request_id='req-1'"), 2);
    CHECK_EQ_INT(sql_int(db, "SELECT fallbacks FROM requests WHERE request_id='req-1'"), 1);
    CHECK_EQ_INT(sql_int(db, "SELECT input_tokens + cache_read_tokens * 10 + cache_write_tokens * 100 FROM requests WHERE request_id='req-1'"),
                 50 + 100000 + 200000);
    CHECK_EQ_INT(sql_int(db, "SELECT output_tokens FROM requests WHERE request_id='req-1'"), 400);
    CHECK_EQ_INT(sql_int(db, "SELECT reasoning_tokens FROM requests WHERE request_id='req-1'"), 120);
    CHECK_EQ_INT(sql_int(db, "SELECT usage_estimated FROM requests WHERE request_id='req-1'"), 1);
    CHECK_EQ_INT(sql_int(db, "SELECT cost_micro FROM requests WHERE request_id='req-1'"), 16650);
    CHECK_EQ_INT(sql_int(db, "SELECT latency_ms * 10000 + ttft_ms FROM requests WHERE request_id='req-1'"), 36002500);
    CHECK_EQ_INT(sql_int(db, "SELECT stream FROM requests WHERE request_id='req-1'"), 1);
    CHECK_EQ_INT(sql_int(db, "SELECT status FROM attempts WHERE request_id='req-1' AND n=0"), 503);
    CHECK_EQ_STR(sql_text(db, "SELECT error FROM attempts WHERE request_id='req-1' AND n=0"), "retryable");
    CHECK_EQ_INT(sql_int(db, "SELECT latency_ms FROM attempts WHERE request_id='req-1' AND n=1"), 2300);
    CHECK_EQ_INT(sql_int(db, "SELECT error IS NULL FROM attempts WHERE request_id='req-1' AND n=1"), 1);
    CHECK_EQ_INT(sql_int(db, "SELECT start_ms * 1000 + queue_ms FROM attempts WHERE request_id='req-1' AND n=1"), 1300002);
    CHECK_EQ_INT(sql_int(db, "SELECT connect_ms * 10000 + ttft_ms FROM attempts WHERE request_id='req-1' AND n=0"), 451100);
    CHECK_EQ_INT(sql_int(db, "SELECT connect_ms FROM attempts WHERE request_id='req-1' AND n=1"), 0);   /* reused */
    CHECK_EQ_INT(sql_int(db, "SELECT input_tokens * 1000 + output_tokens FROM attempts WHERE request_id='req-1' AND n=1"), 50400);
    CHECK_EQ_INT(sql_int(db, "SELECT cost_micro FROM attempts WHERE request_id='req-1' AND n=1"), 16650);
    CHECK_EQ_INT(sql_int(db, "SELECT input_tokens IS NULL AND output_tokens IS NULL FROM attempts WHERE request_id='req-1' AND n=0"), 1);
    /* unknown values are NULL, not 0 or -1 */
    CHECK_EQ_INT(sql_int(db, "SELECT cost_micro IS NULL AND input_tokens IS NULL AND ttft_ms IS NULL AND key_id IS NULL "
                             "FROM requests WHERE request_id='req-2'"), 1);
    CHECK_EQ_STR(sql_text(db, "SELECT error FROM requests WHERE request_id='req-2'"), "rate_limited");
    CHECK(sql_int(db, "SELECT ts_ms FROM requests WHERE request_id='req-2'") > 1700000000000ll);   /* 0 = now */
    CHECK_EQ_INT(sql_int(db, "SELECT MAX(version) FROM schema_version"), LEDGER_SCHEMA_VERSION);
    /* a clean close leaves an empty spool */
    CHECK_EQ_INT(count_files(o.spool_dir, ".seg"), 0);
    CHECK_EQ_INT(count_files(o.spool_dir, ".lock"), 0);
}

/* ---- N in, close, reopen: N ---- */

static void test_append_close_reopen(void) {
    tdir t;
    tdir_init(&t, "reopen");
    ledger_opts o = opts_for(&t);
    const char *db = t.db;
    o.flush_ms = 1000;
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    CHECK_MSG(l != NULL, "%s", err.msg);
    if (!l) return;
    CHECK_EQ_INT(append_n(l, "a", 0, 1500), 1500);
    ledger_close(l, 10000);   /* SIGTERM: everything pending is delivered */
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 1500);
    l = ledger_open(&o, &err);
    CHECK(l != NULL);
    if (!l) return;
    CHECK_EQ_INT(append_n(l, "b", 0, 10), 10);
    ledger_close(l, 10000);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 1510);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(DISTINCT request_id) FROM requests"), 1510);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM attempts"), 1510 + 755);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM schema_version"), LEDGER_SCHEMA_VERSION);   /* migrated once */
    CHECK_EQ_INT(count_files(o.spool_dir, ".seg"), 0);
}

/* ---- batches ---- */

static void test_batch_wakes_writer(void) {
    tdir t;
    tdir_init(&t, "batch");
    ledger_opts o = opts_for(&t);
    const char *db = t.db;
    o.flush_ms = 60000;   /* only a full batch can wake the writer */
    o.batch_max = 20;
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    append_n(l, "w", 0, 19);
    usleep(300 * 1000);
    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.delivered, 0);   /* 19 < batch_max: waits for flush_ms */
    append_n(l, "w", 19, 1);
    for (int i = 0; i < 100; i++) {
        ledger_get_stats(l, &st);
        if (st.delivered == 20) break;
        usleep(20 * 1000);
    }
    CHECK_EQ_INT(st.delivered, 20);
    CHECK_EQ_INT(st.batches, 1);
    ledger_close(l, 5000);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 20);
}

static void test_rotation(void) {
    tdir t;
    tdir_init(&t, "rotate");
    ledger_opts o = opts_for(&t);
    const char *db = t.db, *spool = t.spool;
    o.segment_bytes = 2048;   /* about 9 records a segment */
    o.batch_max = 7;
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    append_n(l, "r", 0, 200);
    CHECK(count_files(spool, ".seg") > 10);
    CHECK(ledger_flush(l, 10000) == 0);
    /* the writer removes sealed segments once delivered: only the live one stays */
    for (int i = 0; i < 200 && count_files(spool, ".seg") > 1; i++) usleep(10 * 1000);
    CHECK_EQ_INT(count_files(spool, ".seg"), 1);
    append_n(l, "r", 200, 100);
    ledger_close(l, 10000);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 300);
    CHECK_EQ_INT(count_files(spool, ".seg"), 0);
    CHECK_EQ_INT(count_files(spool, ".done"), 0);
}

/* Bytes of the spool's segments: what has been written to them. */
static long spool_bytes(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= 4 || strcmp(e->d_name + l - 4, ".seg")) continue;
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) == 0) n += (long)st.st_size;
    }
    closedir(d);
    return n;
}

static void append_deferred_n(ledger *l, const char *prefix, int from, int n) {
    for (int i = from; i < from + n; i++) {
        ledger_record r;
        ledger_attempt att[2];
        char id[64];
        make_record(&r, att, id, sizeof id, prefix, i);
        ledger_append_deferred(l, &r);
    }
}

/* ledger_append_deferred: nothing reaches the spool until ledger_flush_appends, the next
 * ledger_append (which keeps the order), LEDGER_DEFER_BYTES of frames, or ledger_close;
 * then every record is delivered once, across segment rotations too. */
static void test_deferred_appends(void) {
    tdir t;
    tdir_init(&t, "deferred");
    ledger_opts o = opts_for(&t);
    o.flush_ms = 60000;
    o.batch_max = 100000;   /* only flushes and close deliver */
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    long b0 = spool_bytes(t.spool);
    append_deferred_n(l, "d", 0, 5);
    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.appended, 0);
    CHECK_EQ_INT(spool_bytes(t.spool), b0);
    CHECK_EQ_INT(ledger_flush_appends(l, &err), 0);
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.appended, 5);
    long b1 = spool_bytes(t.spool);
    CHECK(b1 > b0);
    CHECK_EQ_INT(ledger_flush_appends(l, &err), 0);   /* nothing waits: no write */
    CHECK_EQ_INT(spool_bytes(t.spool), b1);

    append_deferred_n(l, "d", 5, 3);
    CHECK_EQ_INT(append_n(l, "i", 0, 1), 1);          /* the 3 deferred go first */
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.appended, 9);

    /* a long iteration: the frames go out at LEDGER_DEFER_BYTES without a flush */
    int big = 2 * LEDGER_DEFER_BYTES / 200;
    append_deferred_n(l, "b", 0, big);
    ledger_get_stats(l, &st);
    CHECK(st.appended > 9 && st.appended < 9 + (uint64_t)big);
    append_deferred_n(l, "e", 0, 2);
    ledger_close(l, 10000);                           /* writes what waits, delivers all */
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM requests"), 11 + big);
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(DISTINCT request_id) FROM requests"), 11 + big);
    CHECK_EQ_INT(sql_int(t.db, "SELECT MAX(rowid) FROM requests WHERE request_id LIKE 'd-%'") <
                     sql_int(t.db, "SELECT rowid FROM requests WHERE request_id = 'i-0'"), 1);
    CHECK_EQ_INT(count_files(t.spool, ".seg"), 0);

    /* flushes bigger than a segment: each goes whole into one, then the next rotates */
    tdir t2;
    tdir_init(&t2, "deferred-rotate");
    o = opts_for(&t2);
    o.segment_bytes = 2048;
    o.batch_max = 7;
    if (!(l = ledger_open(&o, &err))) { CHECK_MSG(0, "%s", err.msg); return; }
    for (int k = 0; k < 20; k++) {
        append_deferred_n(l, "r", 10 * k, 10);
        CHECK_EQ_INT(ledger_flush_appends(l, &err), 0);
    }
    CHECK(count_files(t2.spool, ".seg") >= 10);
    ledger_close(l, 10000);
    CHECK_EQ_INT(sql_int(t2.db, "SELECT COUNT(*) FROM requests"), 200);
    CHECK_EQ_INT(sql_int(t2.db, "SELECT COUNT(*) FROM attempts"), 300);
}

/* ---- the spool's record format ---- */

static void test_crc32c(void) {
    CHECK_EQ_INT(sg_crc32c(0, "123456789", 9), 0xE3069283u);   /* the standard check value */
    CHECK_EQ_INT(sg_crc32c_table(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(sg_crc32c(0, "", 0), 0);
    unsigned char data[300];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 7 + 3);
    for (size_t n = 0; n <= sizeof data; n += 13)   /* the hardware path agrees with the table */
        CHECK_EQ_INT(sg_crc32c(0, data, n), sg_crc32c_table(0, data, n));
    CHECK_EQ_INT(sg_crc32c(sg_crc32c(0, data, 100), data + 100, 200), sg_crc32c(0, data, 300));   /* continued */
}

static void check_same(const ledger_record *a, const ledger_record *b) {
#define STR_EQ(x, y) CHECK_MSG(((x) == NULL) == ((y) == NULL) && (!(x) || !strcmp((x), (y))), "%s vs %s", \
                               (x) ? (x) : "NULL", (y) ? (y) : "NULL")
    STR_EQ(a->request_id, b->request_id);
    STR_EQ(a->key_id, b->key_id);
    STR_EQ(a->route, b->route);
    STR_EQ(a->requested_model, b->requested_model);
    STR_EQ(a->provider, b->provider);
    STR_EQ(a->model, b->model);
    STR_EQ(a->error, b->error);
    CHECK_EQ_INT(a->time_ms, b->time_ms);
    CHECK_EQ_INT(a->usage.input, b->usage.input);
    CHECK_EQ_INT(a->usage.cache_read, b->usage.cache_read);
    CHECK_EQ_INT(a->usage.cache_write, b->usage.cache_write);
    CHECK_EQ_INT(a->usage.output, b->usage.output);
    CHECK_EQ_INT(a->usage.reasoning, b->usage.reasoning);
    CHECK_EQ_INT(a->usage.estimated, b->usage.estimated);
    CHECK_EQ_INT(a->cost_micro, b->cost_micro);
    CHECK_EQ_INT(a->latency_ms, b->latency_ms);
    CHECK_EQ_INT(a->ttft_ms, b->ttft_ms);
    CHECK_EQ_INT(a->status, b->status);
    CHECK_EQ_INT(a->stream, b->stream);
    CHECK_EQ_INT(a->n_attempts, b->n_attempts);
    for (size_t i = 0; i < a->n_attempts && i < b->n_attempts; i++) {
        STR_EQ(a->attempts[i].provider, b->attempts[i].provider);
        STR_EQ(a->attempts[i].model, b->attempts[i].model);
        STR_EQ(a->attempts[i].error, b->attempts[i].error);
        CHECK_EQ_INT(a->attempts[i].status, b->attempts[i].status);
        CHECK_EQ_INT(a->attempts[i].latency_ms, b->attempts[i].latency_ms);
        CHECK_EQ_INT(a->attempts[i].start_ms, b->attempts[i].start_ms);
        CHECK_EQ_INT(a->attempts[i].queue_ms, b->attempts[i].queue_ms);
        CHECK_EQ_INT(a->attempts[i].connect_ms, b->attempts[i].connect_ms);
        CHECK_EQ_INT(a->attempts[i].ttft_ms, b->attempts[i].ttft_ms);
        CHECK_EQ_INT(a->attempts[i].input_tokens, b->attempts[i].input_tokens);
        CHECK_EQ_INT(a->attempts[i].output_tokens, b->attempts[i].output_tokens);
        CHECK_EQ_INT(a->attempts[i].cost_micro, b->attempts[i].cost_micro);
    }
#undef STR_EQ
}

static void test_frame_roundtrip(void) {
    /* every field, NULLs, negative numbers, cut strings, bad UTF-8, too many attempts */
    char long_id[300];
    memset(long_id, 'i', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    ledger_attempt att[40];
    for (int i = 0; i < 40; i++)
        att[i] = (ledger_attempt){i % 2 ? "openai" : NULL, "gpt-\xc3\xa9", 500 + i, i % 3 ? "timeout" : NULL, -1 - i, i, 3 * i, i % 2 ? -1 : 0, 100 + i, 5000000000ll + i, -1, i % 5 ? 1000 * i : -9};
    ledger_record r = {
        .time_ms = 1732406400123ll, .request_id = long_id, .key_id = NULL, .route = "r\xff" "oute",
        .requested_model = "m\"odel\n", .provider = "p", .model = "", .attempts = att, .n_attempts = 40,
        .usage = {5000000000ll, -1, 0, 7, -1, true}, .cost_micro = -5, .latency_ms = 12, .ttft_ms = -1,
        .status = 502, .error = "upstream", .stream = true,
    };
    sg_buf b;
    sg_buf_init(&b);
    ledger_frame_encode(&r, &b);
    CHECK_EQ_INT((unsigned char)b.data[0], LEDGER_FRAME_MAGIC);
    CHECK_EQ_INT(b.data[1], LEDGER_FRAME_VERSION);
    ledger_record back;
    ledger_attempt batt[LEDGER_MAX_ATTEMPTS];
    size_t used = 0;
    CHECK_EQ_INT(ledger_frame_decode(b.data, b.len, &back, batt, &used), 1);
    CHECK_EQ_INT(used, b.len);
    /* what the JSON line (format 1) made of the same record: the same bounds and fixes */
    sg_buf j;
    sg_buf_init(&j);
    ledger_record_json(&r, &j);
    ledger_record fromjson;
    ledger_attempt jatt[LEDGER_MAX_ATTEMPTS];
    json_t *root = NULL;
    CHECK_EQ_INT(ledger_frame_parse_json(j.data, j.len - 1, &root, &fromjson, jatt), 0);
    check_same(&back, &fromjson);
    json_decref(root);
    sg_buf_free(&j);
    CHECK_EQ_INT(strlen(back.request_id), 128);
    CHECK_EQ_STR(back.route, "r\xef\xbf\xbdoute");   /* U+FFFD */
    CHECK_EQ_STR(back.requested_model, "m\"odel\n");
    CHECK_EQ_STR(back.model, "");
    CHECK(back.key_id == NULL);
    CHECK_EQ_INT(back.n_attempts, LEDGER_MAX_ATTEMPTS);
    CHECK_EQ_INT(back.cost_micro, -1);
    CHECK_EQ_INT(back.usage.input, 5000000000ll);
    CHECK(back.usage.estimated && back.stream);
    CHECK(back.attempts[0].provider == NULL && back.attempts[1].provider && !strcmp(back.attempts[1].provider, "openai"));
    CHECK_EQ_INT(back.attempts[3].latency_ms, -4);
    /* format 3: each attempt's start, timings, tokens and cost */
    const ledger_attempt *a7 = &back.attempts[7];
    CHECK_EQ_INT(a7->start_ms, 7);
    CHECK_EQ_INT(a7->queue_ms, 21);
    CHECK_EQ_INT(a7->connect_ms, -1);
    CHECK_EQ_INT(back.attempts[8].connect_ms, 0);
    CHECK_EQ_INT(a7->ttft_ms, 107);
    CHECK_EQ_INT(a7->input_tokens, 5000000007ll);
    CHECK_EQ_INT(a7->output_tokens, -1);
    CHECK_EQ_INT(a7->cost_micro, 7000);
    CHECK_EQ_INT(back.attempts[5].cost_micro, -1);   /* negative: unknown */

    /* a frame cut anywhere is "not whole yet", never a record */
    int partial_ok = 1;
    for (size_t n = 0; n < b.len; n++) partial_ok &= ledger_frame_decode(b.data, n, &back, batt, &used) == 0;
    CHECK(partial_ok);
    /* any one byte changed: refused */
    int flip_ok = 1;
    for (size_t i = 0; i < b.len; i++) {
        b.data[i] ^= 0x10;
        flip_ok &= ledger_frame_decode(b.data, b.len, &back, batt, &used) != 1;
        b.data[i] ^= 0x10;
    }
    CHECK(flip_ok);
    /* after garbage (with a stray magic byte in it), resync finds the next frame */
    sg_buf g;
    sg_buf_init(&g);
    sg_buf_append(&g, "junk\xa7\x02junk", 10);
    size_t at = g.len;
    sg_buf_append(&g, b.data, b.len);
    CHECK_EQ_INT(ledger_frame_resync(g.data, g.len), at);
    CHECK_EQ_INT(ledger_frame_resync(g.data, 10), 10);   /* none in the garbage alone */
    CHECK_EQ_INT(ledger_frame_resync(g.data, at + 5), at);   /* a frame starting: read more */
    sg_buf_free(&g);
    sg_buf_free(&b);
}

/* The frame of a one-attempt record at b[at..] (the last in b) rewritten as format 2
 * wrote it: the attempt's last ATT fields (format 3's) dropped, version 2. */
static void frame_to_format2(sg_buf *b, size_t at) {
    unsigned char *h = (unsigned char *)b->data + at;
    uint32_t L = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
    L -= 56;
    b->len -= 56;
    h[1] = 2;
    for (int i = 0; i < 4; i++) h[4 + i] = (unsigned char)(L >> (8 * i));
    uint32_t crc = sg_crc32c(0, h + LEDGER_FRAME_HEADER, L);
    for (int i = 0; i < 4; i++) h[8 + i] = (unsigned char)(crc >> (8 * i));
}

static void test_frame_format2(void) {
    /* a frame of format 2 (before attempts had timings) still decodes: those are -1 */
    ledger_record r, back;
    ledger_attempt att[2], batt[LEDGER_MAX_ATTEMPTS];
    char id[32];
    make_record(&r, att, id, sizeof id, "v2", 0);   /* even: one attempt */
    sg_buf b;
    sg_buf_init(&b);
    ledger_frame_encode(&r, &b);
    size_t used = 0;
    CHECK_EQ_INT(ledger_frame_decode(b.data, b.len, &back, batt, &used), 1);
    CHECK_EQ_INT(back.attempts[0].queue_ms, 5);
    frame_to_format2(&b, 0);
    CHECK_EQ_INT(ledger_frame_decode(b.data, b.len, &back, batt, &used), 1);
    CHECK_EQ_INT(used, b.len);
    CHECK_EQ_STR(back.request_id, "v2-0");
    CHECK_EQ_INT(back.n_attempts, 1);
    CHECK_EQ_STR(back.attempts[0].provider, "openai");
    CHECK_EQ_INT(back.attempts[0].latency_ms, 120);
    CHECK_EQ_INT(back.attempts[0].start_ms, -1);
    CHECK_EQ_INT(back.attempts[0].queue_ms, -1);
    CHECK_EQ_INT(back.attempts[0].ttft_ms, -1);
    CHECK_EQ_INT(back.attempts[0].input_tokens, -1);
    CHECK_EQ_INT(back.attempts[0].cost_micro, -1);
    /* a format 2 frame that carries format 3's fields is refused (its payload is not
     * filled exactly), as is an unknown version */
    sg_buf_reset(&b);
    ledger_frame_encode(&r, &b);
    b.data[1] = 2;
    CHECK(ledger_frame_decode(b.data, b.len, &back, batt, &used) == -1);
    b.data[1] = 4;
    CHECK(ledger_frame_decode(b.data, b.len, &back, batt, &used) == -1);
    /* a format 1 line without the attempts' later fields reads them as -1 */
    const char *line = "{\"v\":1,\"id\":\"j1\",\"ts\":5,\"status\":200,\"att\":[[\"openai\",\"m\",200,null,33]]}";
    json_t *root = NULL;
    CHECK_EQ_INT(ledger_frame_parse_json(line, strlen(line), &root, &back, batt), 0);
    CHECK_EQ_INT(back.n_attempts, 1);
    CHECK_EQ_INT(back.attempts[0].latency_ms, 33);
    CHECK_EQ_INT(back.attempts[0].start_ms, -1);
    CHECK_EQ_INT(back.attempts[0].cost_micro, -1);
    json_decref(root);
    sg_buf_free(&b);
}

/* ---- ledger_db_insert's multi-row statements ---- */

/* SQLite inserts 32 rows a statement, then 16, 8, 4, 2, 1 for the rest: batches that cut
 * those statements anywhere, records with 0, 1 and 2 attempts (the attempts' statements
 * are cut elsewhere than the requests'), duplicates and new records in one statement, and
 * a record without an id refusing the whole batch. */
static void test_insert_batches(void) {
    tdir t;
    tdir_init(&t, "multirow");
    sg_error err;
    ledger_db *d = ledger_db_open(GW_LEDGER_SQLITE, t.db, false, &err);
    CHECK_MSG(d != NULL, "%s", err.msg);
    if (!d) return;
    enum { N = 77 };
    ledger_record recs[N];
    ledger_attempt att[N][2];
    char ids[N][32];
    int n_att = 0;
    for (int i = 0; i < N; i++) {
        make_record(&recs[i], att[i], ids[i], sizeof ids[i], "m", i);
        if (i % 7 == 3) recs[i].n_attempts = 0;   /* refused before any target */
        n_att += (int)recs[i].n_attempts;
    }
    CHECK_EQ_INT(sql_int(t.db, "PRAGMA page_size"), 16384);   /* a new database */
    CHECK_EQ_INT(ledger_db_insert(d, recs, 40, &err), 40);
    CHECK_EQ_INT(ledger_db_insert(d, recs, N, &err), N - 40);   /* 40 again, 37 new */
    CHECK_EQ_INT(ledger_db_insert(d, recs + 5, 1, &err), 0);
    CHECK_EQ_INT(ledger_db_insert(d, recs, N, &err), 0);
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM requests"), N);
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM attempts"), n_att);
    CHECK_EQ_INT(sql_int(t.db, "SELECT SUM(n_attempts) FROM requests"), n_att);
    /* every record's fields in their own row: compare what each row holds with its i */
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM requests WHERE input_tokens = 100 + CAST(substr(request_id, 3) AS INTEGER) "
                               "AND ts_ms = 1732406400000 + CAST(substr(request_id, 3) AS INTEGER) "
                               "AND stream = CAST(substr(request_id, 3) AS INTEGER) % 2 AND reasoning_tokens IS NULL"), N);
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM attempts a JOIN requests r USING (request_id) "
                               "WHERE a.n < r.n_attempts AND (a.n = 0) = (a.provider = 'openai')"), n_att);
    CHECK_EQ_INT(sql_int(t.db, "SELECT latency_ms FROM attempts WHERE request_id = 'm-75' AND n = 1"), 340);
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM attempts WHERE request_id = 'm-73'"), 0);
    /* a record without an id: the batch is refused as the data's fault, nothing of it stays */
    ledger_record more[3];
    ledger_attempt matt[3][2];
    char mids[3][32];
    for (int i = 0; i < 3; i++) make_record(&more[i], matt[i], mids[i], sizeof mids[i], "n", i);
    more[1].request_id = NULL;
    CHECK_EQ_INT(ledger_db_insert(d, more, 3, &err), -1);
    CHECK(ledger_db_failure_is_data(d));
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM requests"), N);
    CHECK_EQ_INT(ledger_db_insert(d, more + 2, 1, &err), 1);
    CHECK(!ledger_db_failure_is_data(d));
    ledger_db_close(d);
}

/* ---- a dead process's spool ---- */

static void write_file(const char *path, const char *data, size_t len) {
    CHECK(tu_write(path, data, len) == 0);
}

/* What a killed process leaves in spool: its two segments (ext ".spool" or ".seg"), the
 * first one's checkpoint at byte ckpt, and its lock file (nobody holds it). Frees the
 * segments' buffers. */
static void plant_orphan(const char *spool, const char *prefix, const char *ext, sg_buf *seg1, sg_buf *seg2,
                         size_t ckpt) {
    write_file(tu_path("%s/%s-000001%s", spool, prefix, ext), seg1->data, seg1->len);
    write_file(tu_path("%s/%s-000002%s", spool, prefix, ext), seg2->data, seg2->len);
    char ck[32];
    snprintf(ck, sizeof ck, "%020zu\n", ckpt);
    write_file(tu_path("%s/%s-000001.done", spool, prefix), ck, 21);
    write_file(tu_path("%s/%s.lock", spool, prefix), "", 0);
    sg_buf_free(seg1);
    sg_buf_free(seg2);
}

/* Format 1 (JSON lines, `.spool`), as a smolgate before format 2 left it. */
static void test_adopt_orphan(void) {
    tdir t;
    tdir_init(&t, "orphan");
    ledger_opts o = opts_for(&t);
    const char *db = t.db, *spool = t.spool;
    mkdir(spool, 0755);
    /* a database that already has o-0 .. o-4 (delivered before the crash) */
    sg_error err;
    ledger_db *d = ledger_db_open(GW_LEDGER_SQLITE, db, false, &err);
    CHECK_MSG(d != NULL, "%s", err.msg);
    if (!d) return;
    ledger_record recs[5];
    ledger_attempt att[5][2];
    char ids[5][32];
    for (int i = 0; i < 5; i++) make_record(&recs[i], att[i], ids[i], sizeof ids[i], "o", i);
    CHECK_EQ_INT(ledger_db_insert(d, recs, 5, &err), 5);
    CHECK_EQ_INT(ledger_db_insert(d, recs, 5, &err), 0);   /* again: nothing new */
    ledger_db_close(d);
    /* its spool: segment 1 holds o-0..o-9 with a checkpoint after o-2 (so o-3, o-4 are
     * re-delivered: duplicates), segment 2 holds o-10..o-14 and a torn last line */
    sg_buf seg1, seg2;
    sg_buf_init(&seg1);
    sg_buf_init(&seg2);
    size_t ckpt = 0;
    for (int i = 0; i < 15; i++) {
        ledger_record r;
        ledger_attempt a[2];
        char id[32];
        make_record(&r, a, id, sizeof id, "o", i);
        ledger_record_json(&r, i < 10 ? &seg1 : &seg2);
        if (i == 2) ckpt = seg1.len;
    }
    sg_buf_puts(&seg2, "{\"v\":1,\"id\":\"o-15\",\"ts\":17324");   /* killed mid-write */
    plant_orphan(spool, "sg-1700000000-999999-0badf00d", ".spool", &seg1, &seg2, ckpt);

    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    ledger_stats st;
    for (int i = 0; i < 200; i++) {
        ledger_get_stats(l, &st);
        if (count_files(spool, ".spool") == 0) break;   /* only our own live segment left */
        usleep(20 * 1000);
    }
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.delivered, 12);     /* o-3 .. o-14 */
    CHECK_EQ_INT(st.duplicates, 2);     /* o-3, o-4 were there */
    CHECK_EQ_INT(st.malformed, 1);      /* the torn line */
    CHECK_EQ_INT(count_files(spool, ".spool"), 0);
    CHECK_EQ_INT(count_files(spool, ".seg"), 1);
    CHECK_EQ_INT(count_files(spool, ".lock"), 1);   /* ours */
    ledger_close(l, 5000);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 15);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests WHERE request_id LIKE 'o-%'"), 15);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM attempts"), 15 + 7);
    CHECK_EQ_INT(count_files(spool, ".spool") + count_files(spool, ".seg") + count_files(spool, ".done") +
                 count_files(spool, ".lock"), 0);
}

/* Format 2 (binary frames, `.seg`): a checkpoint, a damaged frame in the middle (skipped,
 * the records after it delivered) and a torn last frame. */
static void test_adopt_orphan_frames(void) {
    tdir t;
    tdir_init(&t, "orphan2");
    ledger_opts o = opts_for(&t);
    const char *db = t.db, *spool = t.spool;
    mkdir(spool, 0755);
    sg_error err;
    ledger_db *d = ledger_db_open(GW_LEDGER_SQLITE, db, false, &err);
    if (!d) { CHECK_MSG(0, "%s", err.msg); return; }
    ledger_record recs[5];
    ledger_attempt att[5][2];
    char ids[5][32];
    for (int i = 0; i < 5; i++) make_record(&recs[i], att[i], ids[i], sizeof ids[i], "f", i);
    CHECK_EQ_INT(ledger_db_insert(d, recs, 5, &err), 5);   /* f-0 .. f-4 delivered before the crash */
    ledger_db_close(d);
    /* segment 1: f-0..f-9, checkpoint after f-2, f-5 damaged; segment 2: f-10..f-14 and
     * the first half of f-15 */
    sg_buf seg1, seg2;
    sg_buf_init(&seg1);
    sg_buf_init(&seg2);
    size_t ckpt = 0, bad_at = 0;
    for (int i = 0; i < 16; i++) {
        ledger_record r;
        ledger_attempt a[2];
        char id[32];
        make_record(&r, a, id, sizeof id, "f", i);
        if (i == 5) bad_at = seg1.len + LEDGER_FRAME_HEADER + 20;   /* a byte of its payload */
        size_t before = seg2.len, before1 = seg1.len;
        ledger_frame_encode(&r, i < 10 ? &seg1 : &seg2);
        if (i < 10 && i % 2 == 0 && i != 2) frame_to_format2(&seg1, before1);   /* a segment of both formats */
        if (i == 15) seg2.len = before + (seg2.len - before) / 2;   /* killed mid-write */
        if (i == 2) ckpt = seg1.len;
    }
    seg1.data[bad_at] ^= 0x55;
    plant_orphan(spool, "sg-1700000001-999998-0badf00d", ".seg", &seg1, &seg2, ckpt);

    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    ledger_stats st;
    for (int i = 0; i < 200; i++) {
        if (count_files(spool, ".seg") == 1) break;   /* only our own live segment left */
        usleep(20 * 1000);
    }
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.delivered, 11);     /* f-3, f-4, f-6 .. f-14 */
    CHECK_EQ_INT(st.duplicates, 2);     /* f-3, f-4 were there */
    CHECK_EQ_INT(st.malformed, 2);      /* the damaged frame and the torn one */
    CHECK_EQ_INT(count_files(spool, ".seg"), 1);
    ledger_close(l, 5000);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 14);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests WHERE request_id IN ('f-5', 'f-15')"), 0);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM attempts WHERE request_id = 'f-13'"), 2);
    CHECK_EQ_STR(sql_text(db, "SELECT model FROM requests WHERE request_id = 'f-13'"), "claude-haiku-4-5");
    /* format 3's attempts keep their timings, tokens and cost; format 2's have NULLs */
    CHECK_EQ_INT(sql_int(db, "SELECT queue_ms * 1000000 + connect_ms * 1000 + ttft_ms FROM attempts WHERE request_id = 'f-13' AND n = 0"),
                 5030060);
    CHECK_EQ_INT(sql_int(db, "SELECT start_ms * 1000 + input_tokens FROM attempts WHERE request_id = 'f-13' AND n = 1"), 250113);
    CHECK_EQ_INT(sql_int(db, "SELECT cost_micro FROM attempts WHERE request_id = 'f-13' AND n = 1"), 42);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM attempts WHERE request_id = 'f-6' AND start_ms IS NULL AND queue_ms IS NULL "
                             "AND ttft_ms IS NULL AND cost_micro IS NULL AND latency_ms = 120"), 1);
    CHECK_EQ_INT(count_files(spool, ".seg") + count_files(spool, ".done") + count_files(spool, ".lock"), 0);
}

static void test_live_spool_not_taken(void) {
    /* two ledgers on one spool folder and one database, as two gateway processes on one
     * machine: each delivers its own; neither adopts the other's live segments */
    tdir t;
    tdir_init(&t, "two");
    ledger_opts o = opts_for(&t);
    const char *db = t.db;
    o.adopt_every_ms = 20;   /* scan constantly: it must still leave the live one alone */
    sg_error err;
    ledger *a = ledger_open(&o, &err), *b = ledger_open(&o, &err);
    CHECK(a && b);
    if (!a || !b) { ledger_close(a, 0); ledger_close(b, 0); return; }
    for (int i = 0; i < 500; i++) { append_n(a, "A", i, 1); append_n(b, "B", i, 1); }
    CHECK(ledger_flush(a, 10000) == 0);
    CHECK(ledger_flush(b, 10000) == 0);
    ledger_stats sa, sb;
    ledger_get_stats(a, &sa);
    ledger_get_stats(b, &sb);
    CHECK_EQ_INT(sa.delivered, 500);   /* its own only */
    CHECK_EQ_INT(sb.delivered, 500);
    CHECK_EQ_INT(sa.duplicates + sb.duplicates, 0);
    ledger_close(a, 5000);
    ledger_close(b, 5000);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 1000);
}

static void test_outage_then_next_start(void) {
    /* the database is unreachable (a PostgreSQL port where nobody listens): records spool,
     * close leaves them, and the next start (here on SQLite) delivers them all */
    tdir t;
    tdir_init(&t, "outage");
    ledger_opts o = opts_for(&t);
    const char *db = t.db, *spool = t.spool;
    ledger_opts pg = o;
    pg.kind = GW_LEDGER_POSTGRES;
    pg.postgres_url = "postgresql://smolgate:secret-password@127.0.0.1:1/none?connect_timeout=1";
    pg.retry_min_ms = 20;
    pg.retry_max_ms = 50;
    sg_error err;
    ledger *l = ledger_open(&pg, &err);
    CHECK_MSG(l != NULL, "%s", err.msg);
    if (!l) return;
    CHECK_EQ_INT(append_n(l, "p", 0, 300), 300);
    CHECK(ledger_flush(l, 300) == -1);   /* cannot be delivered */
    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK(st.db_failures >= 1);
    CHECK(!st.db_connected);
    CHECK_EQ_INT(st.pending, 300);
    ledger_close(l, 200);
    CHECK_EQ_INT(count_files(spool, ".seg"), 1);
    CHECK_EQ_INT(count_files(spool, ".lock"), 1);   /* left (unlocked) for the next start */
    l = ledger_open(&o, &err);
    CHECK(l != NULL);
    if (!l) return;
    for (int i = 0; i < 200 && count_files(spool, ".seg") > 1; i++) usleep(20 * 1000);
    ledger_close(l, 5000);
    CHECK_EQ_INT(sql_int(db, "SELECT COUNT(*) FROM requests"), 300);
    CHECK_EQ_INT(count_files(spool, ".seg") + count_files(spool, ".lock"), 0);
}

static void test_poison_record(void) {
    /* a record the database refuses for its data is set aside; the others go through */
    tdir t;
    tdir_init(&t, "poison");
    ledger_opts o = opts_for(&t);
    sg_error err;
    ledger_db *d = ledger_db_open(GW_LEDGER_SQLITE, t.db, false, &err);
    if (!d) { CHECK_MSG(0, "%s", err.msg); return; }
    ledger_db_close(d);
    sqlite3 *s;
    sqlite3_open(t.db, &s);
    CHECK(sqlite3_exec(s, "CREATE TRIGGER poison BEFORE INSERT ON requests WHEN NEW.request_id = 'x-3' "
                          "BEGIN SELECT RAISE(ABORT, 'refused'); END", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(s);
    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    append_n(l, "x", 0, 10);
    CHECK(ledger_flush(l, 5000) == 0);
    ledger_stats st;
    ledger_get_stats(l, &st);
    CHECK_EQ_INT(st.rejected, 1);
    CHECK_EQ_INT(st.delivered, 10);
    ledger_close(l, 5000);
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM requests"), 9);
    size_t len = 0;
    char *rej = tu_read(tu_path("%s/rejected.jsonl", t.spool), &len);
    CHECK(rej && strstr(rej, "\"id\":\"x-3\"") && len > 0 && rej[len - 1] == '\n');
    free(rej);
}

static void test_opts_from_config(void) {
    tdir t;
    tdir_init(&t, "config");
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "providers:\n  openai: {api_key: sk-test-0123456789}\n"
             "ledger: {sqlite: usage.db, spool_dir: sp, flush_ms: 20, batch_max: 7}\n");
    char *path = tu_path("%s/smolgate.yaml", t.dir);
    CHECK(tu_write(path, yaml, strlen(yaml)) == 0);
    gw_config *cfg = NULL;
    sg_error err;
    if (config_load(&cfg, path, NULL, &err)) { CHECK_MSG(0, "%s", err.msg); return; }
    ledger_opts o;
    ledger_opts_from_config(&o, cfg);
    CHECK(o.kind == GW_LEDGER_SQLITE);
    CHECK(o.sqlite_path && strstr(o.sqlite_path, "usage.db"));
    CHECK(o.spool_dir && strstr(o.spool_dir, "sp"));
    CHECK_EQ_INT(o.flush_ms, 20);
    CHECK_EQ_INT(o.batch_max, 7);
    CHECK_EQ_INT(o.segment_bytes, 4u << 20);
    ledger *l = ledger_open(&o, &err);
    CHECK_MSG(l != NULL, "%s", err.msg);
    ledger_record r = {.request_id = "", .status = 200};
    CHECK(l && ledger_append(l, &r, &err) == -1 && strstr(err.msg, "request id"));
    ledger_close(l, 1000);
    config_free(cfg);
    /* no file: the defaults, in the working folder */
    ledger_opts d;
    ledger_opts_defaults(&d);
    CHECK_EQ_STR(d.sqlite_path, "smolgate.db");
    CHECK_EQ_STR(d.spool_dir, "smolgate-spool");
    CHECK_EQ_INT(d.flush_ms, 1000);
    CHECK_EQ_INT(d.batch_max, 5000);
}

static void test_open_errors(void) {
    tdir t;
    tdir_init(&t, "errors");
    ledger_opts o = opts_for(&t);
    sg_error err;
    o.sqlite_path = "/nonexistent-folder/ledger.db";
    CHECK(ledger_open(&o, &err) == NULL);
    CHECK(strstr(err.msg, "/nonexistent-folder/ledger.db") != NULL);
    o = opts_for(&t);
    char *file = tu_path("%s/a-file", t.dir);
    tu_write(file, "x", 1);
    o.spool_dir = file;
    CHECK(ledger_open(&o, &err) == NULL);
    CHECK(strstr(err.msg, "not a folder") != NULL);
    /* a schema newer than this binary */
    o = opts_for(&t);
    ledger_db *d = ledger_db_open(GW_LEDGER_SQLITE, o.sqlite_path, false, &err);
    CHECK(d != NULL);
    ledger_db_close(d);
    sqlite3 *s;
    sqlite3_open(o.sqlite_path, &s);
    sqlite3_exec(s, "INSERT INTO schema_version VALUES (99, 0)", NULL, NULL, NULL);
    sqlite3_close(s);
    d = ledger_db_open(GW_LEDGER_SQLITE, o.sqlite_path, false, &err);
    CHECK(d == NULL);
    CHECK(strstr(err.msg, "newer") != NULL);
    /* read-only opens never create a database */
    char *missing = tu_path("%s/missing.db", t.dir);
    CHECK(ledger_db_open(GW_LEDGER_SQLITE, missing, true, &err) == NULL);
    CHECK(access(missing, F_OK) != 0);
    /* the PostgreSQL URL (and its password) never shows in an error */
    d = ledger_db_open(GW_LEDGER_POSTGRES, "postgresql://u:hunter2-secret@127.0.0.1:1/db?connect_timeout=1", false, &err);
    CHECK(d == NULL);
    CHECK(strstr(err.msg, "hunter2") == NULL);
}

/* ---- usage ---- */

static void test_parse_time(void) {
    int64_t ms;
    CHECK(usage_parse_time("2024-11-24", &ms) == 0 && ms == 1732406400000ll);
    CHECK(usage_parse_time("2024-11-24T00:00:00Z", &ms) == 0 && ms == 1732406400000ll);
    CHECK(usage_parse_time("2024-11-24T02:00:00+02:00", &ms) == 0 && ms == 1732406400000ll);
    CHECK(usage_parse_time("2024-11-23T19:00-0500", &ms) == 0 && ms == 1732406400000ll);
    CHECK(usage_parse_time("2024-11-24T00:00:00.250Z", &ms) == 0 && ms == 1732406400250ll);
    CHECK(usage_parse_time("2024-11-24 00:00:01", &ms) == 0 && ms == 1732406401000ll);
    CHECK(usage_parse_time("1732406400", &ms) == 0 && ms == 1732406400000ll);
    CHECK(usage_parse_time("1732406400123", &ms) == 0 && ms == 1732406400123ll);
    CHECK(usage_parse_time("2024-02-29", &ms) == 0);
    CHECK(usage_parse_time("2023-02-29", &ms) == -1);
    CHECK(usage_parse_time("2024-13-01", &ms) == -1);
    CHECK(usage_parse_time("2024-11-24T25:00", &ms) == -1);
    CHECK(usage_parse_time("yesterday", &ms) == -1);
    CHECK(usage_parse_time("", &ms) == -1);
    CHECK(usage_parse_time("1970-01-01", &ms) == 0 && ms == 0);
}

static void test_parse_query(void) {
    usage_filter f;
    usage_filter_init(&f);
    sg_error err;
    CHECK(usage_parse_query(&f, "from=2024-11-24&to=2024-11-25T00%3A00%3A00Z&key=team-a&route=chat&provider=openai"
                                "&model=gpt-4o-mini&group_by=provider,day", &err) == 0);
    CHECK_EQ_INT(f.from_ms, 1732406400000ll);
    CHECK_EQ_INT(f.to_ms, 1732492800000ll);
    CHECK_EQ_STR(f.key, "team-a");
    CHECK_EQ_STR(f.model, "gpt-4o-mini");
    CHECK_EQ_INT(f.n_group, 2);
    CHECK(f.group[0] == USAGE_PROVIDER && f.group[1] == USAGE_DAY);
    usage_filter_init(&f);
    CHECK(usage_parse_query(&f, "model=a+b%2Fc", &err) == 0);
    CHECK_EQ_STR(f.model, "a b/c");
    CHECK(usage_parse_query(&f, "", &err) == 0);
    CHECK(usage_parse_query(&f, "group_by=weekday", &err) == -1 && strstr(err.msg, "weekday"));
    CHECK(usage_parse_query(&f, "group_by=hour,day", &err) == -1);
    CHECK(usage_parse_query(&f, "group_by=key,key", &err) == -1);
    CHECK(usage_parse_query(&f, "from=tomorrow", &err) == -1 && strstr(err.msg, "from"));
    CHECK(usage_parse_query(&f, "colour=red", &err) == -1);
    CHECK(usage_parse_query(&f, "key=%zz", &err) == -1);
    CHECK(usage_parse_query(&f, "key=%00", &err) == -1);
}

/* A database with known records for the queries below. */
static char g_usage_db[512];

static void add(ledger_db *d, const char *id, int64_t ts, const char *key, const char *route, const char *prov,
                const char *model, int status, gw_usage u, int64_t cost, int attempts_moves) {
    ledger_attempt att[2] = {{"openai", "gpt-4o", 503, "retryable", 10, 0, -1, -1, -1, -1, -1, -1}, {prov, model, status, NULL, 10, 10, -1, -1, -1, -1, -1, -1}};
    ledger_record r = {.request_id = id, .time_ms = ts, .key_id = key, .route = route, .requested_model = route,
                       .provider = prov, .model = model, .status = status, .usage = u, .cost_micro = cost,
                       .latency_ms = 10, .ttft_ms = 5, .attempts = attempts_moves ? att : att + 1,
                       .n_attempts = attempts_moves ? 2 : 1};
    sg_error err;
    CHECK_MSG(ledger_db_insert(d, &r, 1, &err) == 1, "%s", err.msg);
}

static void setup_usage_db(void) {
    tdir t;
    tdir_init(&t, "usage");
    snprintf(g_usage_db, sizeof g_usage_db, "%s/usage.db", t.dir);
    sg_error err;
    ledger_db *d = ledger_db_open(GW_LEDGER_SQLITE, g_usage_db, false, &err);
    if (!d) { CHECK_MSG(0, "%s", err.msg); return; }
    const int64_t day = 1732406400000ll;   /* 2024-11-24 */
    add(d, "u1", day + 3600000 * 1 + 5, "team-a", "chat", "openai", "gpt-4o-mini", 200, (gw_usage){100, 20, 0, 50, -1, false}, 30, 0);
    add(d, "u2", day + 3600000 * 1 + 9, "team-a", "chat", "openai", "gpt-4o-mini", 200, (gw_usage){200, 0, 0, 70, 10, true}, 50, 0);
    add(d, "u3", day + 3600000 * 2, "team-b", "chat", "anthropic", "claude-haiku-4-5", 200, (gw_usage){10, 1000, 300, 40, -1, false}, 700, 1);
    add(d, "u4", day + 86400000 + 60000, "team-a", NULL, "groq", "llama-3.1-8b-instant", 200, (gw_usage){1000, 0, 0, 1000, -1, false}, -1, 0);
    add(d, "u5", day + 86400000 + 120000, NULL, "chat", "openai", "gpt-4o-mini", 502, (gw_usage){-1, -1, -1, -1, -1, false}, 0, 1);
    ledger_db_close(d);
}

static void test_usage_query(void) {
    sg_error err;
    ledger_db *d = ledger_db_open(GW_LEDGER_SQLITE, g_usage_db, true, &err);
    if (!d) { CHECK_MSG(0, "%s", err.msg); return; }
    usage_filter f;
    usage_result r;
    usage_filter_init(&f);
    CHECK(usage_query(d, &f, &r, &err) == 0);
    CHECK_EQ_INT(r.n, 1);
    CHECK_EQ_INT(r.total.requests, 5);
    CHECK_EQ_INT(r.total.errors, 1);
    CHECK_EQ_INT(r.total.fallbacks, 2);
    CHECK_EQ_INT(r.total.input, 1310);
    CHECK_EQ_INT(r.total.cache_read, 1020);
    CHECK_EQ_INT(r.total.cache_write, 300);
    CHECK_EQ_INT(r.total.output, 1160);
    CHECK_EQ_INT(r.total.reasoning, 10);
    CHECK_EQ_INT(r.total.cost_micro, 780);
    CHECK_EQ_INT(r.total.unpriced, 1);
    CHECK_EQ_INT(r.total.estimated, 1);
    usage_result_free(&r);

    /* by provider and day */
    usage_filter_init(&f);
    CHECK(usage_parse_query(&f, "group_by=provider,day", &err) == 0);
    CHECK(usage_query(d, &f, &r, &err) == 0);
    CHECK_EQ_INT(r.n, 4);   /* anthropic d1, groq d2, openai d1, openai d2 */
    if (r.n == 4) {
        CHECK_EQ_STR(r.rows[0].dims[USAGE_PROVIDER], "anthropic");
        CHECK_EQ_INT(r.rows[0].cost_micro, 700);
        CHECK_EQ_STR(r.rows[2].dims[USAGE_PROVIDER], "openai");
        CHECK_EQ_INT(r.rows[2].bucket_ms, 1732406400000ll);
        CHECK_EQ_INT(r.rows[2].requests, 2);
        CHECK_EQ_INT(r.rows[2].input, 300);
        CHECK_EQ_INT(r.rows[3].bucket_ms, 1732492800000ll);
        CHECK_EQ_INT(r.rows[3].errors, 1);
    }
    CHECK_EQ_INT(r.total.requests, 5);
    sg_buf b;
    sg_buf_init(&b);
    usage_render_json(&f, &r, &b);
    CHECK(strstr(b.data, "\"group_by\":[\"provider\",\"day\"]") != NULL);
    CHECK(strstr(b.data, "{\"provider\":\"anthropic\",\"day\":\"2024-11-24\",\"requests\":1,") != NULL);
    CHECK(strstr(b.data, "\"cost_micro\":700,\"cost_usd\":0.000700") != NULL);
    CHECK(strstr(b.data, "\"total\":{\"requests\":5,") != NULL);
    sg_buf_reset(&b);
    usage_render_csv(&f, &r, &b);
    CHECK(!strncmp(b.data, "provider,day,requests,errors,fallbacks,input_tokens,", 52));
    CHECK(strstr(b.data, "\nopenai,2024-11-25,1,1,1,0,0,0,0,0,0.000000,0,0,0\n") != NULL);
    sg_buf_reset(&b);
    usage_render_table(&f, &r, &b);
    CHECK(strstr(b.data, "provider") && strstr(b.data, "total") && strstr(b.data, "0.000780"));
    sg_buf_free(&b);
    usage_result_free(&r);

    /* filters: key and time range; by hour; NULL keys grouped as null */
    usage_filter_init(&f);
    CHECK(usage_parse_query(&f, "key=team-a&from=2024-11-24&to=2024-11-25&group_by=hour", &err) == 0);
    CHECK(usage_query(d, &f, &r, &err) == 0);
    CHECK_EQ_INT(r.n, 1);
    if (r.n) CHECK_EQ_INT(r.rows[0].bucket_ms, 1732406400000ll + 3600000);
    CHECK_EQ_INT(r.total.requests, 2);
    usage_result_free(&r);
    usage_filter_init(&f);
    CHECK(usage_parse_query(&f, "group_by=key,route", &err) == 0);
    CHECK(usage_query(d, &f, &r, &err) == 0);
    CHECK_EQ_INT(r.n, 4);   /* (null,chat) (team-a,null) (team-a,chat) (team-b,chat) */
    if (r.n == 4) {
        CHECK(r.rows[0].dims[USAGE_KEY] == NULL);
        CHECK(r.rows[1].dims[USAGE_ROUTE] == NULL);
        CHECK_EQ_INT(r.rows[2].requests, 2);
    }
    sg_buf_init(&b);
    usage_render_json(&f, &r, &b);
    CHECK(strstr(b.data, "{\"key\":null,\"route\":\"chat\",") != NULL);
    sg_buf_free(&b);
    usage_result_free(&r);
    /* nothing matches: no rows, zero totals */
    usage_filter_init(&f);
    CHECK(usage_parse_query(&f, "model=nope", &err) == 0);
    CHECK(usage_query(d, &f, &r, &err) == 0);
    CHECK_EQ_INT(r.n, 0);
    CHECK_EQ_INT(r.total.requests, 0);
    usage_result_free(&r);
    ledger_db_close(d);
}

static void test_usage_http(void) {
    sg_buf b;
    sg_buf_init(&b);
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, g_usage_db, "group_by=model", NULL, &b), 200);
    CHECK(strstr(b.data, "\"model\":\"claude-haiku-4-5\"") != NULL);
    sg_buf_reset(&b);
    /* an ordinary key's view: its own records whatever the query asks */
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, g_usage_db, "group_by=key", "team-a", &b), 200);
    CHECK(strstr(b.data, "{\"key\":\"team-a\",\"requests\":3,") != NULL);
    CHECK(strstr(b.data, "team-b") == NULL && strstr(b.data, "\"key\":null") == NULL);
    CHECK(strstr(b.data, "\"total\":{\"requests\":3,") != NULL);
    sg_buf_reset(&b);
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, g_usage_db, "group_by=model", "team-b", &b), 200);
    CHECK(strstr(b.data, "\"total\":{\"requests\":1,") != NULL && strstr(b.data, "gpt-4o-mini") == NULL);
    sg_buf_reset(&b);
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, g_usage_db, "key=team-a", "team-a", &b), 200);
    sg_buf_reset(&b);
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, g_usage_db, "key=team-b&group_by=key", "team-a", &b), 403);
    CHECK(strstr(b.data, "\"type\":\"permission_error\"") != NULL && strstr(b.data, "\"requests\"") == NULL);
    sg_buf_reset(&b);
    /* read back (smolgate usage --url): parsed and rendered again, the same document */
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, g_usage_db, "from=2024-11-24&to=2024-11-26&group_by=key,provider,day", NULL, &b), 200);
    usage_filter pf;
    usage_result pr;
    sg_error perr;
    CHECK_MSG(usage_parse_json(b.data, b.len, &pf, &pr, &perr) == 0, "%s", perr.msg);
    CHECK_EQ_INT(pr.n, 4);   /* (null,openai,d2) (team-a,groq,d2) (team-a,openai,d1) (team-b,anthropic,d1) */
    CHECK_EQ_INT(pr.total.requests, 5);
    CHECK_EQ_INT(pf.n_group, 3);
    sg_buf again;
    sg_buf_init(&again);
    usage_render_json(&pf, &pr, &again);
    CHECK_MSG(again.len == b.len && !memcmp(again.data, b.data, b.len), "\n  got:  %s  want: %s", again.data, b.data);
    sg_buf_free(&again);
    usage_result_free(&pr);
    CHECK_EQ_INT(usage_parse_json("{\"error\":{}}", 12, &pf, &pr, &perr), -1);
    sg_buf_reset(&b);
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, g_usage_db, "group_by=colour", NULL, &b), 400);
    CHECK(strstr(b.data, "\"type\":\"invalid_request_error\"") != NULL);
    sg_buf_reset(&b);
    CHECK_EQ_INT(usage_http(GW_LEDGER_SQLITE, tu_path("%s/none.db", tu_tmpdir()), "", NULL, &b), 503);
    sg_buf_reset(&b);
    CHECK_EQ_INT(usage_http(GW_LEDGER_POSTGRES, "postgresql://u:pw-s3cret@127.0.0.1:1/x?connect_timeout=1", "", NULL, &b), 503);
    CHECK(strstr(b.data, "pw-s3cret") == NULL);
    sg_buf_free(&b);
}

typedef struct async_result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int status;
    char body[4096];
} async_result;

static void async_done(void *arg, int status, const char *body, size_t len) {
    async_result *a = arg;
    pthread_mutex_lock(&a->mu);
    snprintf(a->body, sizeof a->body, "%.*s", (int)len, body);
    a->status = status;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void test_usage_async(void) {
    tdir t;
    tdir_init(&t, "async");
    ledger_opts o = opts_for(&t);
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    append_n(l, "q", 0, 7);
    CHECK(ledger_flush(l, 5000) == 0);
    async_result a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, ""};
    CHECK(ledger_usage_async(l, "group_by=key", NULL, async_done, &a) == 0);
    pthread_mutex_lock(&a.mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    while (!a.status) if (pthread_cond_timedwait(&a.cv, &a.mu, &ts)) break;
    pthread_mutex_unlock(&a.mu);
    CHECK_EQ_INT(a.status, 200);
    CHECK(strstr(a.body, "\"total\":{\"requests\":7,") != NULL);
    ledger_close(l, 5000);
    usleep(50 * 1000);   /* the detached worker finishes its cleanup */
}

/* ---- spool write failures ---- */

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *hit = strstr(p, needle);
        if (hit && hit < p + len) n++;
        p += len + (e ? 1 : 0);
    }
    return n;
}

/* The spool cannot grow (RLIMIT_FSIZE below its size: every write fails with EFBIG, as on
 * a full disk): each record is lost and counted, but the log says so in a few lines, not
 * one per record. stderr goes to a pipe meanwhile (a pipe is not limited by the size). */
static void test_spool_full_log_is_rate_limited(void) {
    tdir t;
    tdir_init(&t, "spoolfull");
    ledger_opts o = opts_for(&t);
    o.flush_ms = 60000;   /* nothing is delivered (and written) until close */
    o.loss_log_ms = 300;
    sg_error err;
    ledger *l = ledger_open(&o, &err);
    if (!l) { CHECK_MSG(0, "%s", err.msg); return; }
    CHECK_EQ_INT(append_n(l, "ok", 0, 1), 1);

    int fds[2];
    if (pipe(fds)) { CHECK_MSG(0, "pipe"); ledger_close(l, 5000); return; }
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);
    void (*old_xfsz)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    lim = old_lim;
    lim.rlim_cur = 1;   /* the segment already holds a record: the next write fails whole */
    setrlimit(RLIMIT_FSIZE, &lim);

    int a = append_n(l, "lostA", 0, 50);   /* the first is logged, 49 wait */
    usleep(700 * 1000);                     /* the writer summarises the 49 after 300 ms */
    int b = append_n(l, "lostB", 0, 5);     /* the interval is over: the first logs, 4 wait */
    setrlimit(RLIMIT_FSIZE, &old_lim);
    ledger_stats st;
    ledger_get_stats(l, &st);
    ledger_close(l, 5000);                  /* reports the 4 */
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    signal(SIGXFSZ, old_xfsz);
    close(fds[1]);
    static char log[65536];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof log - 1 && (r = read(fds[0], log + n, sizeof log - 1 - n)) > 0) n += (size_t)r;
    log[n] = 0;
    close(fds[0]);

    CHECK_EQ_INT(a, 0);
    CHECK_EQ_INT(b, 0);
    CHECK_EQ_INT(st.append_failures, 55);
    CHECK_EQ_INT(st.appended, 1);
    CHECK_MSG(count_lines_with(log, "lost") == 4, "4 loss lines expected, got:\n%s", log);
    CHECK_MSG(strstr(log, "record lostA-0 lost (1 since start") != NULL, "the first loss, at once:\n%s", log);
    CHECK_MSG(strstr(log, "49 more record(s) lost") != NULL, "the summary of the rest:\n%s", log);
    CHECK_MSG(strstr(log, "record lostB-0 lost (51 since start") != NULL, "the next loss after the interval:\n%s", log);
    CHECK_MSG(strstr(log, "4 more record(s) lost") && strstr(log, "55 lost since start"), "the summary at close:\n%s", log);
    CHECK(strstr(log, "File too large") != NULL);   /* the cause is named */
    CHECK_EQ_INT(sql_int(t.db, "SELECT COUNT(*) FROM requests"), 1);   /* what was spooled arrives */
}

int main(void) {
    sg_log_set_level(SG_LOG_ERROR);
    RUN(test_fields);
    RUN(test_append_close_reopen);
    RUN(test_batch_wakes_writer);
    RUN(test_rotation);
    RUN(test_deferred_appends);
    RUN(test_crc32c);
    RUN(test_frame_roundtrip);
    RUN(test_frame_format2);
    RUN(test_insert_batches);
    RUN(test_adopt_orphan);
    RUN(test_adopt_orphan_frames);
    RUN(test_live_spool_not_taken);
    RUN(test_outage_then_next_start);
    RUN(test_poison_record);
    RUN(test_opts_from_config);
    RUN(test_open_errors);
    RUN(test_spool_full_log_is_rate_limited);
    RUN(test_parse_time);
    RUN(test_parse_query);
    setup_usage_db();
    RUN(test_usage_query);
    RUN(test_usage_http);
    RUN(test_usage_async);
    return tu_finish("test_ledger");
}
