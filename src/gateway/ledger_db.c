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

#define REQ_COLS "request_id, ts_ms, key_id, route, requested_model, provider, model, status, error, " \
                 "stream, n_attempts, fallbacks, input_tokens, cache_read_tokens, cache_write_tokens, " \
                 "output_tokens, reasoning_tokens, usage_estimated, cost_micro, latency_ms, ttft_ms"
#define N_REQ_COLS 21
#define ATT_COLS "request_id, n, provider, model, status, error, latency_ms, " \
                 "start_ms, queue_ms, connect_ms, ttft_ms, input_tokens, output_tokens, cost_micro"
#define N_ATT_COLS 14
#define PG_ROWS_PER_INSERT 1000     /* 21 000 parameters, under libpq's 65 535 */
#define PG_LOCK_KEY "7261001"       /* advisory lock held while migrating */

struct ledger_db {
    gw_ledger_kind kind;
    bool ok;
    bool permanent;           /* the last failure was the data's (see ledger_db_failure_is_data) */
    sqlite3 *sq;
    sqlite3_stmt *ins_req, *ins_att;
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
     * a checkpoint every 4000 WAL pages (16 MiB) instead of 1000 writes a page touched by
     * several batches once. Neither changes what a commit guarantees. */
    if (sq_exec(db, "PRAGMA cache_size=-32768", err) || sq_exec(db, "PRAGMA wal_autocheckpoint=4000", err))
        return sg_fail_wrap(err, "%s", path);
    if (sq_retry_busy(db, sq_migrate, err)) return sg_fail_wrap(err, "%s", path);
    if (sqlite3_prepare_v2(db->sq, "INSERT INTO requests (" REQ_COLS ") VALUES "
                           "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (request_id) DO NOTHING",
                           -1, &db->ins_req, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->sq, "INSERT INTO attempts (" ATT_COLS ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                           "ON CONFLICT (request_id, n) DO NOTHING", -1, &db->ins_att, NULL) != SQLITE_OK)
        return sq_fail(db, err, "prepare");
    return 0;
}

static void sq_text(sqlite3_stmt *st, int i, const char *s) {
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

static void sq_int(sqlite3_stmt *st, int i, int64_t v, bool null_if_negative) {
    if (null_if_negative && v < 0) sqlite3_bind_null(st, i);
    else sqlite3_bind_int64(st, i, v);
}

static int64_t sq_insert(ledger_db *db, const ledger_record *recs, size_t n, sg_error *err) {
    if (sq_exec(db, "BEGIN IMMEDIATE", err)) return -1;
    int64_t added = 0;
    for (size_t i = 0; i < n; i++) {
        const ledger_record *r = &recs[i];
        sqlite3_stmt *st = db->ins_req;
        sqlite3_reset(st);
        sq_text(st, 1, r->request_id);
        sq_int(st, 2, r->time_ms, false);
        sq_text(st, 3, r->key_id);
        sq_text(st, 4, r->route);
        sq_text(st, 5, r->requested_model);
        sq_text(st, 6, r->provider);
        sq_text(st, 7, r->model);
        sq_int(st, 8, r->status, false);
        sq_text(st, 9, r->error);
        sq_int(st, 10, r->stream, false);
        sq_int(st, 11, (int64_t)r->n_attempts, false);
        sq_int(st, 12, ledger_record_fallbacks(r), false);
        sq_int(st, 13, r->usage.input, true);
        sq_int(st, 14, r->usage.cache_read, true);
        sq_int(st, 15, r->usage.cache_write, true);
        sq_int(st, 16, r->usage.output, true);
        sq_int(st, 17, r->usage.reasoning, true);
        sq_int(st, 18, r->usage.estimated, false);
        sq_int(st, 19, r->cost_micro, true);
        sq_int(st, 20, r->latency_ms, true);
        sq_int(st, 21, r->ttft_ms, true);
        if (sqlite3_step(st) != SQLITE_DONE) { sq_fail(db, err, "insert"); goto fail; }
        int fresh = sqlite3_changes(db->sq);
        added += fresh;
        if (!fresh) continue;   /* delivered before: its attempts are there too */
        for (size_t k = 0; k < r->n_attempts; k++) {
            const ledger_attempt *a = &r->attempts[k];
            sqlite3_stmt *sa = db->ins_att;
            sqlite3_reset(sa);
            sq_text(sa, 1, r->request_id);
            sq_int(sa, 2, (int64_t)k, false);
            sq_text(sa, 3, a->provider);
            sq_text(sa, 4, a->model);
            sq_int(sa, 5, a->status, false);
            sq_text(sa, 6, a->error);
            sq_int(sa, 7, a->latency_ms, true);
            sq_int(sa, 8, a->start_ms, true);
            sq_int(sa, 9, a->queue_ms, true);
            sq_int(sa, 10, a->connect_ms, true);
            sq_int(sa, 11, a->ttft_ms, true);
            sq_int(sa, 12, a->input_tokens, true);
            sq_int(sa, 13, a->output_tokens, true);
            sq_int(sa, 14, a->cost_micro, true);
            if (sqlite3_step(sa) != SQLITE_DONE) { sq_fail(db, err, "insert attempt"); goto fail; }
        }
    }
    sqlite3_reset(db->ins_req);
    sqlite3_reset(db->ins_att);
    if (sq_exec(db, "COMMIT", err)) goto fail;
    return added;
fail:
    sqlite3_reset(db->ins_req);
    sqlite3_reset(db->ins_att);
    sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
    return -1;
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

/* Text parameters of a batch: every value formatted into one buffer, pointers taken after. */
typedef struct pg_params {
    sg_buf text;
    size_t *offs;             /* (size_t)-1 = NULL */
    size_t n, cap;
} pg_params;

static void pp_add(pg_params *p, const char *s) {
    if (p->n == p->cap) { p->cap = p->cap ? p->cap * 2 : 256; p->offs = sg_xrealloc(p->offs, p->cap * sizeof *p->offs); }
    if (!s) { p->offs[p->n++] = (size_t)-1; return; }
    p->offs[p->n++] = p->text.len;
    sg_buf_append(&p->text, s, strlen(s) + 1);
}

static void pp_int(pg_params *p, int64_t v, bool null_if_negative) {
    if (null_if_negative && v < 0) { pp_add(p, NULL); return; }
    char b[24];
    snprintf(b, sizeof b, "%" PRId64, v);
    pp_add(p, b);
}

/* One multi-row INSERT of the parameters [first, first + rows * cols). Rows added, or -1. */
static int64_t pg_insert_rows(ledger_db *db, const char *head, const char *conflict, int cols, pg_params *p,
                              size_t first, size_t rows, const char **vals, sg_error *err) {
    sg_buf sql;
    sg_buf_init(&sql);
    sg_buf_puts(&sql, head);
    for (size_t r = 0; r < rows; r++) {
        sg_buf_puts(&sql, r ? ",(" : "(");
        for (int c = 0; c < cols; c++) sg_buf_printf(&sql, c ? ",$%zu" : "$%zu", r * (size_t)cols + (size_t)c + 1);
        sg_buf_putc(&sql, ')');
    }
    sg_buf_puts(&sql, conflict);
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
    pg_params rq = {0}, at = {0};
    sg_buf_init(&rq.text);
    sg_buf_init(&at.text);
    size_t n_att = 0;
    for (size_t i = 0; i < n; i++) {
        const ledger_record *r = &recs[i];
        pp_add(&rq, r->request_id);
        pp_int(&rq, r->time_ms, false);
        pp_add(&rq, r->key_id);
        pp_add(&rq, r->route);
        pp_add(&rq, r->requested_model);
        pp_add(&rq, r->provider);
        pp_add(&rq, r->model);
        pp_int(&rq, r->status, false);
        pp_add(&rq, r->error);
        pp_add(&rq, r->stream ? "t" : "f");
        pp_int(&rq, (int64_t)r->n_attempts, false);
        pp_int(&rq, ledger_record_fallbacks(r), false);
        pp_int(&rq, r->usage.input, true);
        pp_int(&rq, r->usage.cache_read, true);
        pp_int(&rq, r->usage.cache_write, true);
        pp_int(&rq, r->usage.output, true);
        pp_int(&rq, r->usage.reasoning, true);
        pp_add(&rq, r->usage.estimated ? "t" : "f");
        pp_int(&rq, r->cost_micro, true);
        pp_int(&rq, r->latency_ms, true);
        pp_int(&rq, r->ttft_ms, true);
        for (size_t k = 0; k < r->n_attempts; k++, n_att++) {
            const ledger_attempt *a = &r->attempts[k];
            pp_add(&at, r->request_id);
            pp_int(&at, (int64_t)k, false);
            pp_add(&at, a->provider);
            pp_add(&at, a->model);
            pp_int(&at, a->status, false);
            pp_add(&at, a->error);
            pp_int(&at, a->latency_ms, true);
            pp_int(&at, a->start_ms, true);
            pp_int(&at, a->queue_ms, true);
            pp_int(&at, a->connect_ms, true);
            pp_int(&at, a->ttft_ms, true);
            pp_int(&at, a->input_tokens, true);
            pp_int(&at, a->output_tokens, true);
            pp_int(&at, a->cost_micro, true);
        }
    }
    const char **vals = sg_xmalloc(PG_ROWS_PER_INSERT * N_REQ_COLS * sizeof *vals);
    int64_t added = 0;
    if (pg_exec(db, "BEGIN", err)) { added = -1; goto out; }
    for (size_t i = 0; i < n; i += PG_ROWS_PER_INSERT) {
        size_t rows = n - i < PG_ROWS_PER_INSERT ? n - i : PG_ROWS_PER_INSERT;
        int64_t k = pg_insert_rows(db, "INSERT INTO requests (" REQ_COLS ") VALUES ", " ON CONFLICT (request_id) DO NOTHING",
                                   N_REQ_COLS, &rq, i * N_REQ_COLS, rows, vals, err);
        if (k < 0) goto fail;
        added += k;
    }
    for (size_t i = 0; i < n_att; i += PG_ROWS_PER_INSERT) {
        size_t rows = n_att - i < PG_ROWS_PER_INSERT ? n_att - i : PG_ROWS_PER_INSERT;
        if (pg_insert_rows(db, "INSERT INTO attempts (" ATT_COLS ") VALUES ", " ON CONFLICT (request_id, n) DO NOTHING",
                           N_ATT_COLS, &at, i * N_ATT_COLS, rows, vals, err) < 0)
            goto fail;
    }
    if (pg_exec(db, "COMMIT", err)) goto fail;
    goto out;
fail:
    if (PQstatus(db->pg) == CONNECTION_OK) PQclear(PQexec(db->pg, "ROLLBACK"));
    else db->ok = false;
    added = -1;
out:
    free(vals);
    sg_buf_free(&rq.text);
    sg_buf_free(&at.text);
    free(rq.offs);
    free(at.offs);
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
    if (db->ins_req) sqlite3_finalize(db->ins_req);
    if (db->ins_att) sqlite3_finalize(db->ins_att);
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
