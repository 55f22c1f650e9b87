/* ledger_db.c: see ledger_db.h. The schema (one migration list per engine), batch inserts
 * and text-parameter queries on SQLite and PostgreSQL. */
#include "gateway/ledger_db.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"

/* ---- the schema ------------------------------------------------------------------------
 * Migration N brings the schema from version N-1 to N. Append new ones; never edit one
 * that has shipped. The two lists must describe the same tables. */

static const char *const k_sqlite_migrations[] = {
    NULL,
    /* 1: requests and their attempts */
    "CREATE TABLE requests ("
    " request_id TEXT NOT NULL PRIMARY KEY,"
    " ts_ms INTEGER NOT NULL,"
    " key_id TEXT, route TEXT, requested_model TEXT, provider TEXT, model TEXT,"
    " status INTEGER NOT NULL, error TEXT,"
    " stream INTEGER NOT NULL DEFAULT 0,"
    " n_attempts INTEGER NOT NULL DEFAULT 0, fallbacks INTEGER NOT NULL DEFAULT 0,"
    " input_tokens INTEGER, cache_read_tokens INTEGER, cache_write_tokens INTEGER,"
    " output_tokens INTEGER, reasoning_tokens INTEGER,"
    " usage_estimated INTEGER NOT NULL DEFAULT 0,"
    " cost_micro INTEGER,"
    " latency_ms INTEGER, ttft_ms INTEGER);"
    "CREATE INDEX requests_ts ON requests (ts_ms);"
    "CREATE INDEX requests_key_ts ON requests (key_id, ts_ms);"
    "CREATE TABLE attempts ("
    " request_id TEXT NOT NULL, n INTEGER NOT NULL,"
    " provider TEXT, model TEXT, status INTEGER, error TEXT, latency_ms INTEGER,"
    " PRIMARY KEY (request_id, n));",
    /* 2: the Responses API's stored responses (response_store_db.c) */
    "CREATE TABLE responses ("
    " id TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " response TEXT NOT NULL, messages TEXT NOT NULL, input_items TEXT NOT NULL);"
    "CREATE INDEX responses_created ON responses (created_ms);",
    /* 3: gateway keys made at run time (keystore.c); only the SHA-256 of each secret */
    "CREATE TABLE gateway_keys ("
    " id TEXT NOT NULL PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, spec TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, revoked_ms INTEGER);",
    /* 4: the dashboard (dash_query.c): spend per hour per value of each of key, route,
     * provider and model (dim), rolled up from the requests stored after rollup_state's
     * high-water mark (the rowid here), and captured prompts and answers */
    "CREATE TABLE spend_hourly ("
    " dim TEXT NOT NULL, hour_ms INTEGER NOT NULL, value TEXT NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL, fallbacks INTEGER NOT NULL,"
    " input_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL, cache_write_tokens INTEGER NOT NULL,"
    " output_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL, cost_micro INTEGER NOT NULL,"
    " unpriced INTEGER NOT NULL, estimated INTEGER NOT NULL,"
    " PRIMARY KEY (dim, hour_ms, value));"
    "CREATE TABLE rollup_state (name TEXT NOT NULL PRIMARY KEY, high_water INTEGER NOT NULL);"
    "INSERT INTO rollup_state (name, high_water) VALUES ('spend_hourly', 0);"
    "CREATE TABLE payloads ("
    " request_id TEXT NOT NULL PRIMARY KEY, captured_ms INTEGER NOT NULL, request TEXT, response TEXT);"
    "CREATE INDEX payloads_captured ON payloads (captured_ms);",
    /* 5: each attempt's place on the trace's timeline, its timings, tokens and cost
     * (ledger_attempt); NULL for the attempts stored before */
    "ALTER TABLE attempts ADD COLUMN start_ms INTEGER;"
    "ALTER TABLE attempts ADD COLUMN queue_ms INTEGER;"
    "ALTER TABLE attempts ADD COLUMN connect_ms INTEGER;"
    "ALTER TABLE attempts ADD COLUMN ttft_ms INTEGER;"
    "ALTER TABLE attempts ADD COLUMN input_tokens INTEGER;"
    "ALTER TABLE attempts ADD COLUMN output_tokens INTEGER;"
    "ALTER TABLE attempts ADD COLUMN cost_micro INTEGER;",
};

static const char *const k_pg_migrations[] = {
    NULL,
    "CREATE TABLE requests ("
    " request_id TEXT NOT NULL PRIMARY KEY,"
    " ts_ms BIGINT NOT NULL,"
    " key_id TEXT, route TEXT, requested_model TEXT, provider TEXT, model TEXT,"
    " status INTEGER NOT NULL, error TEXT,"
    " stream BOOLEAN NOT NULL DEFAULT false,"
    " n_attempts INTEGER NOT NULL DEFAULT 0, fallbacks INTEGER NOT NULL DEFAULT 0,"
    " input_tokens BIGINT, cache_read_tokens BIGINT, cache_write_tokens BIGINT,"
    " output_tokens BIGINT, reasoning_tokens BIGINT,"
    " usage_estimated BOOLEAN NOT NULL DEFAULT false,"
    " cost_micro BIGINT,"
    " latency_ms BIGINT, ttft_ms BIGINT);"
    "CREATE INDEX requests_ts ON requests (ts_ms);"
    "CREATE INDEX requests_key_ts ON requests (key_id, ts_ms);"
    "CREATE TABLE attempts ("
    " request_id TEXT NOT NULL, n INTEGER NOT NULL,"
    " provider TEXT, model TEXT, status INTEGER, error TEXT, latency_ms BIGINT,"
    " PRIMARY KEY (request_id, n));",
    "CREATE TABLE responses ("
    " id TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL,"
    " created_ms BIGINT NOT NULL, bytes BIGINT NOT NULL,"
    " response TEXT NOT NULL, messages TEXT NOT NULL, input_items TEXT NOT NULL);"
    "CREATE INDEX responses_created ON responses (created_ms);",
    "CREATE TABLE gateway_keys ("
    " id TEXT NOT NULL PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, spec TEXT NOT NULL,"
    " created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, revoked_ms BIGINT);",
    /* 4: as SQLite's; seq numbers requests in the order they are stored (the rollup's
     * high-water mark; existing rows are numbered by the ALTER) */
    "ALTER TABLE requests ADD COLUMN seq BIGSERIAL;"
    "CREATE INDEX requests_seq ON requests (seq);"
    "CREATE TABLE spend_hourly ("
    " dim TEXT NOT NULL, hour_ms BIGINT NOT NULL, value TEXT NOT NULL, requests BIGINT NOT NULL, errors BIGINT NOT NULL, fallbacks BIGINT NOT NULL,"
    " input_tokens BIGINT NOT NULL, cache_read_tokens BIGINT NOT NULL, cache_write_tokens BIGINT NOT NULL,"
    " output_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL, cost_micro BIGINT NOT NULL,"
    " unpriced BIGINT NOT NULL, estimated BIGINT NOT NULL,"
    " PRIMARY KEY (dim, hour_ms, value));"
    "CREATE TABLE rollup_state (name TEXT NOT NULL PRIMARY KEY, high_water BIGINT NOT NULL);"
    "INSERT INTO rollup_state (name, high_water) VALUES ('spend_hourly', 0);"
    "CREATE TABLE payloads ("
    " request_id TEXT NOT NULL PRIMARY KEY, captured_ms BIGINT NOT NULL, request TEXT, response TEXT);"
    "CREATE INDEX payloads_captured ON payloads (captured_ms);",
    "ALTER TABLE attempts ADD COLUMN start_ms BIGINT, ADD COLUMN queue_ms BIGINT, ADD COLUMN connect_ms BIGINT,"
    " ADD COLUMN ttft_ms BIGINT, ADD COLUMN input_tokens BIGINT, ADD COLUMN output_tokens BIGINT,"
    " ADD COLUMN cost_micro BIGINT;",
};

_Static_assert(sizeof k_sqlite_migrations / sizeof k_sqlite_migrations[0] == LEDGER_SCHEMA_VERSION + 1,
               "one SQLite migration per schema version");
_Static_assert(sizeof k_pg_migrations / sizeof k_pg_migrations[0] == LEDGER_SCHEMA_VERSION + 1,
               "one PostgreSQL migration per schema version");

#define PG_ROWS_PER_INSERT 1000     /* rows per statement; 21 000 parameters, under libpq's 65 535 */
#define PG_LOCK_KEY "7261001"       /* advisory lock held while migrating */
#define SQ_ROWS_MAX 32              /* rows per SQLite INSERT statement (see sq_insert) */
#define SQ_SIZES 6                  /* statements of 32, 16, 8, 4, 2 and 1 rows */
#define SQ_PAGE_SIZE "16384"        /* bytes, for a new SQLite database (see sq_open) */

/* ---- the rows ----------------------------------------------------------------------------
 * What a record puts in each table, for both engines, in one place: each column is named
 * where its value is given, and the INSERT statements are built from these same calls
 * (row_cols), so a new column is one line here plus its migration. A sink receives the
 * values in order: SQLite binds them, PostgreSQL formats them as text parameters. */
typedef struct row_sink row_sink;
struct row_sink {
    void (*text)(row_sink *s, const char *col, const char *v);             /* NULL: SQL NULL */
    void (*i64)(row_sink *s, const char *col, int64_t v);
    void (*opt)(row_sink *s, const char *col, int64_t v);                  /* < 0: SQL NULL */
    void (*flag)(row_sink *s, const char *col, bool v);                    /* boolean */
};

typedef enum { T_REQUESTS, T_ATTEMPTS, T_COUNT } ledger_table;

/* Row k of a record in table t: the request (k = 0), or its attempt k. The key's columns
 * (request_id; request_id, n) are never NULL: SQLite's INSERT OR IGNORE would skip such a
 * row instead of failing it, so sq_insert refuses a record without an id first. */
static void put_row(row_sink *s, ledger_table t, const ledger_record *r, size_t k) {
    if (t == T_REQUESTS) {
        s->text(s, "request_id", r->request_id);
        s->i64(s, "ts_ms", r->time_ms);
        s->text(s, "key_id", r->key_id);
        s->text(s, "route", r->route);
        s->text(s, "requested_model", r->requested_model);
        s->text(s, "provider", r->provider);
        s->text(s, "model", r->model);
        s->i64(s, "status", r->status);
        s->text(s, "error", r->error);
        s->flag(s, "stream", r->stream);
        s->i64(s, "n_attempts", (int64_t)r->n_attempts);
        s->i64(s, "fallbacks", ledger_record_fallbacks(r));
        s->opt(s, "input_tokens", r->usage.input);
        s->opt(s, "cache_read_tokens", r->usage.cache_read);
        s->opt(s, "cache_write_tokens", r->usage.cache_write);
        s->opt(s, "output_tokens", r->usage.output);
        s->opt(s, "reasoning_tokens", r->usage.reasoning);
        s->flag(s, "usage_estimated", r->usage.estimated);
        s->opt(s, "cost_micro", r->cost_micro);
        s->opt(s, "latency_ms", r->latency_ms);
        s->opt(s, "ttft_ms", r->ttft_ms);
    } else {
        const ledger_attempt *a = &r->attempts[k];
        s->text(s, "request_id", r->request_id);
        s->i64(s, "n", (int64_t)k);
        s->text(s, "provider", a->provider);
        s->text(s, "model", a->model);
        s->i64(s, "status", a->status);
        s->text(s, "error", a->error);
        s->opt(s, "latency_ms", a->latency_ms);
        s->opt(s, "start_ms", a->start_ms);
        s->opt(s, "queue_ms", a->queue_ms);
        s->opt(s, "connect_ms", a->connect_ms);
        s->opt(s, "ttft_ms", a->ttft_ms);
        s->opt(s, "input_tokens", a->input_tokens);
        s->opt(s, "output_tokens", a->output_tokens);
        s->opt(s, "cost_micro", a->cost_micro);
    }
}

static const char *const k_table_names[T_COUNT] = {"requests", "attempts"};
static const char *const k_table_keys[T_COUNT] = {"request_id", "request_id, n"};

/* A table's column list ("request_id, ts_ms, ...") and count, from put_row. */
typedef struct cols_sink {
    row_sink s;
    sg_buf *out;
    int n;
} cols_sink;
static void cols_add(row_sink *s, const char *col) {
    cols_sink *c = (cols_sink *)s;
    if (c->n++) sg_buf_puts(c->out, ", ");
    sg_buf_puts(c->out, col);
}
static void cols_text(row_sink *s, const char *col, const char *v) { (void)v; cols_add(s, col); }
static void cols_i64(row_sink *s, const char *col, int64_t v) { (void)v; cols_add(s, col); }
static void cols_flag(row_sink *s, const char *col, bool v) { (void)v; cols_add(s, col); }

static int row_cols(ledger_table t, sg_buf *out) {
    static const ledger_attempt att = {0};
    const ledger_record r = {.request_id = "", .attempts = &att, .n_attempts = 1};
    cols_sink c = {{cols_text, cols_i64, cols_i64, cols_flag}, out, 0};
    put_row(&c.s, t, &r, 0);
    return c.n;
}

/* "INSERT ... INTO t (cols) VALUES (?, ...), ... " with rows rows of placeholders ($1, $2
 * ... when dollar), between head ("INSERT OR IGNORE INTO" / "INSERT INTO") and tail. */
static void insert_sql(sg_buf *sql, ledger_table t, size_t rows, bool dollar, const char *head, const char *tail) {
    sg_buf_printf(sql, "%s %s (", head, k_table_names[t]);
    int n = row_cols(t, sql);
    sg_buf_puts(sql, ") VALUES ");
    size_t p = 0;
    for (size_t r = 0; r < rows; r++) {
        sg_buf_puts(sql, r ? ",(" : "(");
        for (int c = 0; c < n; c++) {
            p++;
            if (dollar) sg_buf_printf(sql, c ? ",$%zu" : "$%zu", p);
            else sg_buf_puts(sql, c ? ",?" : "?");
        }
        sg_buf_putc(sql, ')');
    }
    sg_buf_puts(sql, tail);
}

struct ledger_db {
    gw_ledger_kind kind;
    bool ok;
    bool permanent;           /* the last failure was the data's (see ledger_db_failure_is_data) */
    sqlite3 *sq;
    sqlite3_stmt *ins[T_COUNT][SQ_SIZES];   /* INSERT of 32 >> i rows, prepared on first use */
    PGconn *pg;
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- SQLite ------------------------------------------------------------------------------ */

static int sq_fail(ledger_db *db, sg_error *err, const char *what) {
    int code = sqlite3_errcode(db->sq) & 0xff;
    db->permanent = code == SQLITE_CONSTRAINT || code == SQLITE_MISMATCH || code == SQLITE_TOOBIG || code == SQLITE_RANGE;
    return sg_fail(err, "sqlite: %s: %s", what, sqlite3_errmsg(db->sq));
}

static int sq_exec(ledger_db *db, const char *sql, sg_error *err) {
    char *msg = NULL;
    if (sqlite3_exec(db->sq, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sg_fail(err, "sqlite: %s", msg ? msg : sqlite3_errmsg(db->sq));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int sq_version(ledger_db *db, int *version, sg_error *err) {
    sqlite3_stmt *st;
    *version = 0;
    if (sqlite3_prepare_v2(db->sq, "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'",
                           -1, &st, NULL) != SQLITE_OK)
        return sq_fail(db, err, "schema");
    bool exists = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (!exists) return 0;
    if (sqlite3_prepare_v2(db->sq, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &st, NULL) != SQLITE_OK)
        return sq_fail(db, err, "schema_version");
    if (sqlite3_step(st) == SQLITE_ROW) *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return 0;
}

/* The migration steps both engines share, inside the caller's transaction: refuse a
 * schema newer than this build, then apply migrations[v + 1 ..] in order, each recorded
 * in schema_version. */
typedef int (*db_exec_fn)(ledger_db *db, const char *sql, sg_error *err);
static int migrate_from(ledger_db *db, int v, db_exec_fn exec, const char *const *migrations, sg_error *err) {
    if (v > LEDGER_SCHEMA_VERSION)
        return sg_fail(err, "the database's schema version %d is newer than this smolgate knows (%d)", v,
                       LEDGER_SCHEMA_VERSION);
    for (int m = v + 1; m <= LEDGER_SCHEMA_VERSION; m++) {
        char ins[160];
        snprintf(ins, sizeof ins, "INSERT INTO schema_version (version, applied_ms) VALUES (%d, %" PRId64 ")", m, now_ms());
        if (exec(db, migrations[m], err) || exec(db, ins, err)) return sg_fail_wrap(err, "migration %d", m);
    }
    return 0;
}

static int sq_migrate(ledger_db *db, sg_error *err) {
    if (sq_exec(db, "BEGIN IMMEDIATE", err)) return -1;
    int v;
    if (sq_exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)", err) ||
        sq_version(db, &v, err) || migrate_from(db, v, sq_exec, k_sqlite_migrations, err)) {
        sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return sq_exec(db, "COMMIT", err);
}

/* Runs step until it succeeds, fails for another reason than a lock, or 10 s pass.
 * Several connections open one file at start (the ledger's writer, the stored responses'
 * and the run-time keys' workers, other instances): switching a new file to WAL and the
 * first schema transaction may answer SQLITE_BUSY at once, without the busy handler
 * (SQLite does so where waiting could deadlock), so the wait is ours. */
static int sq_retry_busy(ledger_db *db, int (*step)(ledger_db *, sg_error *), sg_error *err) {
    for (int i = 0;; i++) {
        if (step(db, err) == 0) return 0;
        if ((sqlite3_extended_errcode(db->sq) & 0xff) != SQLITE_BUSY &&
            (sqlite3_extended_errcode(db->sq) & 0xff) != SQLITE_LOCKED && !(err && strstr(err->msg, "locked")))
            return -1;
        if (i >= 200) return -1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int sq_wal(ledger_db *db, sg_error *err) {
    return sq_exec(db, "PRAGMA journal_mode=WAL", err) || sq_exec(db, "PRAGMA synchronous=FULL", err) ? -1 : 0;
}

static int sq_open(ledger_db *db, const char *path, bool read_only, sg_error *err) {
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (read_only ? 0 : SQLITE_OPEN_CREATE);
    if (sqlite3_open_v2(path, &db->sq, flags, NULL) != SQLITE_OK) {
        sg_fail(err, "sqlite: %s: %s", path, db->sq ? sqlite3_errmsg(db->sq) : "cannot open");
        return -1;
    }
    sqlite3_busy_timeout(db->sq, 10000);
    /* A new database gets 16 KiB pages (SQLite's default is 4 KiB; an existing file keeps
     * its size): the ledger appends rows at the right edge of its b-trees and writes each
     * page twice (the WAL, then the checkpoint), one system call per page and per frame
     * header, so larger pages cut the system calls of a record by four. */
    if (!read_only && sq_exec(db, "PRAGMA page_size=" SQ_PAGE_SIZE, err)) return sg_fail_wrap(err, "%s", path);
    if (sq_retry_busy(db, sq_wal, err)) return sg_fail_wrap(err, "%s", path);
    if (read_only) {
        int v;
        if (sq_version(db, &v, err)) return -1;
        if (v < 1) return sg_fail(err, "%s: not a smolgate ledger (no schema_version)", path);
        return 0;
    }
    /* The writer's connection. Request ids start with the time (request_id.h), so inserts
     * append at the right edge of the primary keys' indexes; ids of an older smolgate (16
     * random hex digits) land each on its own page, and for those a page cache that holds
     * the indexes (32 MiB, taken only as the database grows) saves reading pages back, and
     * a checkpoint every 16 MiB of WAL (4000 pages of 4 KiB) instead of SQLite's 1000 pages
     * writes a page touched by several batches once. Neither changes what a commit
     * guarantees. */
    sqlite3_stmt *ps;
    int page = 4096;
    if (sqlite3_prepare_v2(db->sq, "PRAGMA page_size", -1, &ps, NULL) == SQLITE_OK) {
        if (sqlite3_step(ps) == SQLITE_ROW && sqlite3_column_int(ps, 0) >= 512) page = sqlite3_column_int(ps, 0);
        sqlite3_finalize(ps);
    }
    char ckpt[64];
    snprintf(ckpt, sizeof ckpt, "PRAGMA wal_autocheckpoint=%d", (16 << 20) / page);
    if (sq_exec(db, "PRAGMA cache_size=-32768", err) || sq_exec(db, ckpt, err)) return sg_fail_wrap(err, "%s", path);
    if (sq_retry_busy(db, sq_migrate, err)) return sg_fail_wrap(err, "%s", path);
    return 0;
}

static void sq_text(sqlite3_stmt *st, int i, const char *s) {
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

/* Binds a row's values to the next placeholders of a multi-row statement. The strings
 * are bound SQLITE_STATIC: they live in the batch (the spool's read buffer) until the
 * statement has run. */
typedef struct sq_sink {
    row_sink s;
    sqlite3_stmt *st;
    int i;                     /* the last placeholder bound */
} sq_sink;
static void sq_bind_text(row_sink *s, const char *col, const char *v) {
    (void)col;
    sq_sink *q = (sq_sink *)s;
    sq_text(q->st, ++q->i, v);
}
static void sq_bind_i64(row_sink *s, const char *col, int64_t v) {
    (void)col;
    sq_sink *q = (sq_sink *)s;
    sqlite3_bind_int64(q->st, ++q->i, v);
}
static void sq_bind_opt(row_sink *s, const char *col, int64_t v) {
    (void)col;
    sq_sink *q = (sq_sink *)s;
    if (v < 0) sqlite3_bind_null(q->st, ++q->i);
    else sqlite3_bind_int64(q->st, ++q->i, v);
}
static void sq_bind_flag(row_sink *s, const char *col, bool v) { sq_bind_i64(s, col, v); }

/* The INSERT of table t for 32 >> size rows, prepared on first use. */
static sqlite3_stmt *sq_ins_stmt(ledger_db *db, ledger_table t, int size, sg_error *err) {
    if (db->ins[t][size]) return db->ins[t][size];
    sg_buf sql;
    sg_buf_init(&sql);
    insert_sql(&sql, t, (size_t)SQ_ROWS_MAX >> size, false, "INSERT OR IGNORE INTO", "");
    int rc = sqlite3_prepare_v2(db->sq, sql.data, -1, &db->ins[t][size], NULL);
    sg_buf_free(&sql);
    if (rc != SQLITE_OK) { sq_fail(db, err, "prepare"); return NULL; }
    return db->ins[t][size];
}

/* The n_rows rows of table t that recs hold (t = requests: one per record; attempts: all
 * their attempts, in order), in as few statements as it can: 32 rows each, then one of 16,
 * 8, 4, 2, 1 for what is left. Adds the rows inserted to *added. */
static int sq_insert_rows(ledger_db *db, ledger_table t, const ledger_record *recs, size_t n_rows, int64_t *added,
                          sg_error *err) {
    sq_sink q = {{sq_bind_text, sq_bind_i64, sq_bind_opt, sq_bind_flag}, NULL, 0};
    size_t rec = 0, att = 0;
    for (size_t done = 0; done < n_rows;) {
        int size = 0;
        while ((size_t)SQ_ROWS_MAX >> size > n_rows - done) size++;
        size_t rows = (size_t)SQ_ROWS_MAX >> size;
        if (!(q.st = sq_ins_stmt(db, t, size, err))) return -1;
        q.i = 0;
        for (size_t k = 0; k < rows; k++) {
            if (t == T_REQUESTS) {
                put_row(&q.s, t, &recs[rec++], 0);
            } else {
                while (att >= recs[rec].n_attempts) { rec++; att = 0; }
                put_row(&q.s, t, &recs[rec], att++);
            }
        }
        int rc = sqlite3_step(q.st);
        sqlite3_reset(q.st);
        if (rc != SQLITE_DONE) return sq_fail(db, err, t == T_REQUESTS ? "insert" : "insert attempts");
        *added += sqlite3_changes(db->sq);
        done += rows;
    }
    return 0;
}

/* One transaction: the requests, then their attempts, each as multi-row INSERT OR IGNORE
 * (a row whose key is there is skipped: a re-delivery). Multi-row statements execute a
 * fraction of the virtual machine code of one row at a time; OR IGNORE rather than ON
 * CONFLICT DO NOTHING because a statement that may abort half-way (a NOT NULL failure)
 * keeps a statement journal, which a 32-row statement spills to a temporary file. */
static int64_t sq_insert(ledger_db *db, const ledger_record *recs, size_t n, sg_error *err) {
    size_t n_att = 0;
    for (size_t i = 0; i < n; i++) {
        if (!recs[i].request_id) {   /* what the PRIMARY KEY's NOT NULL would refuse */
            db->permanent = true;
            return sg_fail(err, "sqlite: insert: a record without a request id");
        }
        n_att += recs[i].n_attempts;
    }
    if (sq_exec(db, "BEGIN IMMEDIATE", err)) return -1;
    int64_t added = 0, added_att = 0;
    if (sq_insert_rows(db, T_REQUESTS, recs, n, &added, err) ||
        sq_insert_rows(db, T_ATTEMPTS, recs, n_att, &added_att, err) || sq_exec(db, "COMMIT", err)) {
        sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return added;
}

static int sq_select(ledger_db *db, const char *sql, const char *const *params, size_t n_params,
                     ledger_db_row_fn row, void *arg, sg_error *err) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->sq, sql, -1, &st, NULL) != SQLITE_OK) return sq_fail(db, err, "query");
    for (size_t i = 0; i < n_params; i++) sq_text(st, (int)i + 1, params[i]);
    int ncols = sqlite3_column_count(st), rc;
    const char *cols[64];
    if (ncols > 64) { sqlite3_finalize(st); return sg_fail(err, "sqlite: too many columns"); }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; c < ncols; c++) cols[c] = (const char *)sqlite3_column_text(st, c);
        if (row(arg, ncols, cols)) break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) { sq_fail(db, err, "query"); sqlite3_finalize(st); return -1; }
    sqlite3_finalize(st);
    return 0;
}

static int64_t sq_write(ledger_db *db, const char *sql, const char *const *params, size_t n_params, sg_error *err) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db->sq, sql, -1, &st, NULL) != SQLITE_OK) return sq_fail(db, err, "statement");
    for (size_t i = 0; i < n_params; i++) sq_text(st, (int)i + 1, params[i]);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return sq_fail(db, err, "statement");
    return sqlite3_changes(db->sq);
}

/* ---- PostgreSQL -------------------------------------------------------------------------- */

/* libpq's message, one line (it never contains the password; we never add the URL). */
static int pg_fail(ledger_db *db, sg_error *err, const char *what, const PGresult *res) {
    /* SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation) are the
     * record's fault; anything else (connection, resources, locks...) may pass */
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    db->permanent = state && (!strncmp(state, "22", 2) || !strncmp(state, "23", 2));
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (!m || !*m) m = PQerrorMessage(db->pg);
    char line[400];
    snprintf(line, sizeof line, "%s", m ? m : "unknown error");
    char *w = line;   /* one line: newlines and tabs become single spaces */
    for (char *p = line; *p; p++) {
        char c = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
        if (c == ' ' && (w == line || w[-1] == ' ')) continue;
        *w++ = c;
    }
    while (w > line && w[-1] == ' ') w--;
    *w = 0;
    if (PQstatus(db->pg) != CONNECTION_OK) db->ok = false;
    return sg_fail(err, "postgres: %s: %s", what, line);
}

static int pg_exec(ledger_db *db, const char *sql, sg_error *err) {
    PGresult *res = PQexec(db->pg, sql);
    ExecStatusType s = PQresultStatus(res);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        pg_fail(db, err, "exec", res);
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

static int pg_version(ledger_db *db, int *version, sg_error *err) {
    *version = 0;
    PGresult *res = PQexec(db->pg, "SELECT to_regclass('schema_version') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) { pg_fail(db, err, "schema", res); PQclear(res); return -1; }
    bool exists = PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    if (!exists) return 0;
    res = PQexec(db->pg, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) { pg_fail(db, err, "schema_version", res); PQclear(res); return -1; }
    *version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

static int pg_migrate(ledger_db *db, sg_error *err) {
    if (pg_exec(db, "BEGIN", err)) return -1;
    int v;
    if (pg_exec(db, "SELECT pg_advisory_xact_lock(" PG_LOCK_KEY ")", err) ||
        pg_exec(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_ms BIGINT NOT NULL)", err) ||
        pg_version(db, &v, err) || migrate_from(db, v, pg_exec, k_pg_migrations, err)) {
        if (PQstatus(db->pg) == CONNECTION_OK) PQclear(PQexec(db->pg, "ROLLBACK"));
        return -1;
    }
    return pg_exec(db, "COMMIT", err);
}

static void pg_notice(void *arg, const char *msg) { (void)arg; (void)msg; }   /* quiet */

static int pg_open(ledger_db *db, const char *url, bool read_only, sg_error *err) {
    /* Keywords before "dbname" are defaults the URL may override (expand_dbname). */
    const char *keys[] = {"connect_timeout", "application_name", "keepalives_idle", "tcp_user_timeout", "options",
                          "dbname", NULL};
    const char *vals[] = {"5", "smolgate", "10", "30000", "-c statement_timeout=60000", url ? url : "", NULL};
    db->pg = PQconnectdbParams(keys, vals, 1);
    if (!db->pg) return sg_fail(err, "postgres: out of memory");
    if (PQstatus(db->pg) != CONNECTION_OK) return pg_fail(db, err, "connect", NULL);
    PQsetNoticeProcessor(db->pg, pg_notice, NULL);
    if (read_only) {
        int v;
        if (pg_version(db, &v, err)) return -1;
        if (v < 1) return sg_fail(err, "postgres: not a smolgate ledger (no schema_version)");
        return 0;
    }
    return pg_migrate(db, err);
}

/* Text parameters of a batch: every value formatted into one buffer, pointers taken
 * after; a sink for put_row. */
typedef struct pg_params {
    row_sink s;
    sg_buf text;
    size_t *offs;             /* (size_t)-1 = NULL */
    size_t n, cap;
} pg_params;

static void pp_add(row_sink *s, const char *col, const char *v) {
    (void)col;
    pg_params *p = (pg_params *)s;
    if (p->n == p->cap) { p->cap = p->cap ? p->cap * 2 : 256; p->offs = sg_xrealloc(p->offs, p->cap * sizeof *p->offs); }
    if (!v) { p->offs[p->n++] = (size_t)-1; return; }
    p->offs[p->n++] = p->text.len;
    sg_buf_append(&p->text, v, strlen(v) + 1);
}

static void pp_i64(row_sink *s, const char *col, int64_t v) {
    char b[24];
    snprintf(b, sizeof b, "%" PRId64, v);
    pp_add(s, col, b);
}

static void pp_opt(row_sink *s, const char *col, int64_t v) {
    if (v < 0) pp_add(s, col, NULL);
    else pp_i64(s, col, v);
}

static void pp_flag(row_sink *s, const char *col, bool v) { pp_add(s, col, v ? "t" : "f"); }

static void pp_init(pg_params *p) {
    *p = (pg_params){{pp_add, pp_i64, pp_opt, pp_flag}, {0}, NULL, 0, 0};
    sg_buf_init(&p->text);
}

/* One multi-row INSERT into t of the parameters [first, first + rows * cols). Rows added,
 * or -1. */
static int64_t pg_insert_rows(ledger_db *db, ledger_table t, int cols, pg_params *p, size_t first, size_t rows,
                              const char **vals, sg_error *err) {
    sg_buf sql, tail;
    sg_buf_init(&sql);
    sg_buf_init(&tail);
    sg_buf_printf(&tail, " ON CONFLICT (%s) DO NOTHING", k_table_keys[t]);
    insert_sql(&sql, t, rows, true, "INSERT INTO", tail.data);
    sg_buf_free(&tail);
    size_t np = rows * (size_t)cols;
    for (size_t i = 0; i < np; i++) {
        size_t o = p->offs[first + i];
        vals[i] = o == (size_t)-1 ? NULL : p->text.data + o;
    }
    PGresult *res = PQexecParams(db->pg, sql.data, (int)np, NULL, vals, NULL, NULL, 0);
    sg_buf_free(&sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) { pg_fail(db, err, "insert", res); PQclear(res); return -1; }
    int64_t n = atoll(PQcmdTuples(res));
    PQclear(res);
    return n;
}

static int64_t pg_insert(ledger_db *db, const ledger_record *recs, size_t n, sg_error *err) {
    pg_params par[T_COUNT];
    size_t rows[T_COUNT] = {n, 0};
    for (int t = 0; t < T_COUNT; t++) pp_init(&par[t]);
    for (size_t i = 0; i < n; i++) {
        put_row(&par[T_REQUESTS].s, T_REQUESTS, &recs[i], 0);
        for (size_t k = 0; k < recs[i].n_attempts; k++, rows[T_ATTEMPTS]++) put_row(&par[T_ATTEMPTS].s, T_ATTEMPTS, &recs[i], k);
    }
    int cols[T_COUNT];
    size_t most = 0;
    for (int t = 0; t < T_COUNT; t++) {
        sg_buf scratch;
        sg_buf_init(&scratch);
        cols[t] = row_cols((ledger_table)t, &scratch);
        sg_buf_free(&scratch);
        if ((size_t)cols[t] > most) most = (size_t)cols[t];
    }
    const char **vals = sg_xmalloc(PG_ROWS_PER_INSERT * most * sizeof *vals);
    int64_t added = 0;
    if (pg_exec(db, "BEGIN", err)) { added = -1; goto out; }
    for (int t = 0; t < T_COUNT; t++) {
        for (size_t i = 0; i < rows[t]; i += PG_ROWS_PER_INSERT) {
            size_t r = rows[t] - i < PG_ROWS_PER_INSERT ? rows[t] - i : PG_ROWS_PER_INSERT;
            int64_t k = pg_insert_rows(db, (ledger_table)t, cols[t], &par[t], i * (size_t)cols[t], r, vals, err);
            if (k < 0) goto fail;
            if (t == T_REQUESTS) added += k;
        }
    }
    if (pg_exec(db, "COMMIT", err)) goto fail;
    goto out;
fail:
    if (PQstatus(db->pg) == CONNECTION_OK) PQclear(PQexec(db->pg, "ROLLBACK"));
    else db->ok = false;
    added = -1;
out:
    free(vals);
    for (int t = 0; t < T_COUNT; t++) {
        sg_buf_free(&par[t].text);
        free(par[t].offs);
    }
    return added;
}

/* sql with `?` placeholders, as PostgreSQL's $1, $2 (the SQL we write has no '?' in strings). */
static void pg_placeholders(sg_buf *q, const char *sql) {
    int k = 0;
    for (const char *s = sql; *s; s++) {
        if (*s == '?') sg_buf_printf(q, "$%d", ++k);
        else sg_buf_putc(q, *s);
    }
}

static int64_t pg_write(ledger_db *db, const char *sql, const char *const *params, size_t n_params, sg_error *err) {
    sg_buf q;
    sg_buf_init(&q);
    pg_placeholders(&q, sql);
    PGresult *res = PQexecParams(db->pg, q.data, (int)n_params, NULL, params, NULL, NULL, 0);
    sg_buf_free(&q);
    ExecStatusType s = PQresultStatus(res);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) { pg_fail(db, err, "statement", res); PQclear(res); return -1; }
    int64_t n = atoll(PQcmdTuples(res));
    PQclear(res);
    return n;
}

static int pg_select(ledger_db *db, const char *sql, const char *const *params, size_t n_params,
                     ledger_db_row_fn row, void *arg, sg_error *err) {
    sg_buf q;
    sg_buf_init(&q);
    pg_placeholders(&q, sql);
    PGresult *res = PQexecParams(db->pg, q.data, (int)n_params, NULL, params, NULL, NULL, 0);
    sg_buf_free(&q);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) { pg_fail(db, err, "query", res); PQclear(res); return -1; }
    int ncols = PQnfields(res);
    if (ncols > 64) { PQclear(res); return sg_fail(err, "postgres: too many columns"); }
    const char *cols[64];
    for (int r = 0; r < PQntuples(res); r++) {
        for (int c = 0; c < ncols; c++) cols[c] = PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
        if (row(arg, ncols, cols)) break;
    }
    PQclear(res);
    return 0;
}

/* ---- the interface ----------------------------------------------------------------------- */

/* (ledger.h) Here rather than in ledger.c: what the database layer needs of a record, so
 * that it links without the spool and writer (the response store's users, the fuzzers). */
int ledger_record_fallbacks(const ledger_record *r) {
    int n = 0;
    for (size_t i = 1; i < r->n_attempts; i++) {
        const ledger_attempt *a = &r->attempts[i - 1], *b = &r->attempts[i];
        if (strcmp(a->provider ? a->provider : "", b->provider ? b->provider : "") ||
            strcmp(a->model ? a->model : "", b->model ? b->model : ""))
            n++;
    }
    return n;
}

ledger_db *ledger_db_open(gw_ledger_kind kind, const char *target, bool read_only, sg_error *err) {
    ledger_db *db = sg_xcalloc(1, sizeof *db);
    db->kind = kind;
    db->ok = true;
    int rc = kind == GW_LEDGER_POSTGRES ? pg_open(db, target, read_only, err)
                                        : sq_open(db, target && *target ? target : "smolgate.db", read_only, err);
    if (rc) { ledger_db_close(db); return NULL; }
    return db;
}

void ledger_db_close(ledger_db *db) {
    if (!db) return;
    for (int t = 0; t < T_COUNT; t++)
        for (int k = 0; k < SQ_SIZES; k++)
            if (db->ins[t][k]) sqlite3_finalize(db->ins[t][k]);
    if (db->sq) sqlite3_close(db->sq);
    if (db->pg) PQfinish(db->pg);
    free(db);
}

bool ledger_db_ok(const ledger_db *db) { return db && db->ok; }
gw_ledger_kind ledger_db_kind(const ledger_db *db) { return db->kind; }

bool ledger_db_failure_is_data(const ledger_db *db) { return db && db->permanent; }

int64_t ledger_db_insert(ledger_db *db, const ledger_record *recs, size_t n, sg_error *err) {
    db->permanent = false;
    if (!n) return 0;
    return db->kind == GW_LEDGER_POSTGRES ? pg_insert(db, recs, n, err) : sq_insert(db, recs, n, err);
}

int ledger_db_schema_version(ledger_db *db, int *version, sg_error *err) {
    return db->kind == GW_LEDGER_POSTGRES ? pg_version(db, version, err) : sq_version(db, version, err);
}

int ledger_db_select(ledger_db *db, const char *sql, const char *const *params, size_t n_params,
                     ledger_db_row_fn row, void *arg, sg_error *err) {
    return db->kind == GW_LEDGER_POSTGRES ? pg_select(db, sql, params, n_params, row, arg, err)
                                          : sq_select(db, sql, params, n_params, row, arg, err);
}

int64_t ledger_db_exec(ledger_db *db, const char *sql, const char *const *params, size_t n_params, sg_error *err) {
    db->permanent = false;
    return db->kind == GW_LEDGER_POSTGRES ? pg_write(db, sql, params, n_params, err) : sq_write(db, sql, params, n_params, err);
}

int ledger_db_begin(ledger_db *db, sg_error *err) {
    return db->kind == GW_LEDGER_POSTGRES ? pg_exec(db, "BEGIN", err) : sq_exec(db, "BEGIN IMMEDIATE", err);
}

int ledger_db_commit(ledger_db *db, sg_error *err) {
    return db->kind == GW_LEDGER_POSTGRES ? pg_exec(db, "COMMIT", err) : sq_exec(db, "COMMIT", err);
}

void ledger_db_rollback(ledger_db *db) {
    if (db->kind == GW_LEDGER_POSTGRES) {
        if (PQstatus(db->pg) == CONNECTION_OK) PQclear(PQexec(db->pg, "ROLLBACK"));
        else db->ok = false;
    } else {
        sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
    }
}
