/* ledger_db.h: the ledger's databases, SQLite and PostgreSQL, behind one small interface:
 * connect and migrate, insert a batch exactly once, and aggregate for usage reports.
 *
 * Why a layer: the spool and writer (ledger.c), the usage queries (ledger_usage.c) and
 * `smolgate usage` all need the same schema and SQL on two engines; this is the one place
 * that knows them.
 *
 * Contract:
 * - ledger_db_open connects (SQLite: opens or creates the file, 16 KiB pages when it
 *   creates it, WAL, synchronous=FULL, busy_timeout 10 s; a writer's connection also a
 *   32 MiB page cache and a checkpoint every 16 MiB of WAL; PostgreSQL: libpq,
 *   connect_timeout 5 s unless the URL sets one)
 *   and brings the schema up to date (migrations in order, recorded in schema_version,
 *   one transaction; PostgreSQL holds an advisory lock meanwhile). read_only skips the
 *   migrations and fails when the tables are missing (for reports: never create a stray
 *   database from a typo).
 * - ledger_db_insert writes records in one transaction: rows of `requests`, then of
 *   `attempts`, in multi-row INSERTs that skip a row whose key is already there (SQLite:
 *   INSERT OR IGNORE, 32 rows a statement; PostgreSQL: ON CONFLICT DO NOTHING, 1000), so
 *   a record delivered twice is stored once. It returns the number of records that were
 *   new; on any failure it rolls back and the caller retries the whole batch later (the
 *   connection may be dropped: call ledger_db_ok to know). A record without a request id
 *   is refused as a data failure. The columns each record fills are listed once, in
 *   ledger_db.c (put_row), for both engines.
 * - One ledger_db is used by one thread at a time.
 * - Error messages never contain the PostgreSQL URL. */
#ifndef SG_GATEWAY_LEDGER_DB_H
#define SG_GATEWAY_LEDGER_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/ledger.h"

#define LEDGER_SCHEMA_VERSION 5     /* the newest migration this binary knows */

typedef struct ledger_db ledger_db;

/* kind: GW_LEDGER_SQLITE (target: a path) or GW_LEDGER_POSTGRES (target: conninfo/URL). */
ledger_db *ledger_db_open(gw_ledger_kind kind, const char *target, bool read_only, sg_error *err);
void ledger_db_close(ledger_db *db);              /* NULL ok */
/* false once a failure suggests the connection is gone (PostgreSQL): reconnect. */
bool ledger_db_ok(const ledger_db *db);
gw_ledger_kind ledger_db_kind(const ledger_db *db);

/* Inserts n records exactly once (see above). Returns records newly stored (0..n), or -1
 * with err. */
int64_t ledger_db_insert(ledger_db *db, const ledger_record *recs, size_t n, sg_error *err);

/* Whether the last ledger_db_insert failed because of the records themselves (a data or
 * constraint error: SQLite CONSTRAINT, MISMATCH, TOOBIG; PostgreSQL SQLSTATE 22xxx and
 * 23xxx) rather than the database (unreachable, busy, full): retrying such a batch can
 * never succeed, so the writer isolates the offending record instead. */
bool ledger_db_failure_is_data(const ledger_db *db);

/* The schema version now in the database (0 when none). */
int ledger_db_schema_version(ledger_db *db, int *version, sg_error *err);

/* Runs a read query whose placeholders are written `?` (turned into $1, $2 for
 * PostgreSQL), with text parameters, and calls row() for each result row with its columns
 * as text (NULL for SQL NULL). row returns 0 to go on. */
typedef int (*ledger_db_row_fn)(void *arg, int ncols, const char *const *cols);
int ledger_db_select(ledger_db *db, const char *sql, const char *const *params, size_t n_params,
                     ledger_db_row_fn row, void *arg, sg_error *err);

/* Runs one statement that returns no rows (placeholders and parameters as in
 * ledger_db_select; a NULL parameter is SQL NULL): the rows it changed, or -1 with err.
 * Compare a text parameter with a number through CAST(? AS BIGINT): SQLite compares an
 * untyped text with an integer as text. */
int64_t ledger_db_exec(ledger_db *db, const char *sql, const char *const *params, size_t n_params, sg_error *err);
/* A write transaction around several ledger_db_exec (SQLite: BEGIN IMMEDIATE). */
int ledger_db_begin(ledger_db *db, sg_error *err);
int ledger_db_commit(ledger_db *db, sg_error *err);
void ledger_db_rollback(ledger_db *db);

#endif
