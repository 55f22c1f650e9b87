/* ledger.h: one record per request, written off the request path and delivered to the
 * database exactly once, whatever happens to the process or the database.
 *
 * Why: spend, budgets and audits rest on the ledger, so it must lose nothing (SIGTERM,
 * kill -9, a database outage) and count nothing twice (re-delivery after any of those),
 * while the event loop that serves requests never waits for a database.
 *
 * How a record travels:
 *   1. ledger_append() (the event loop thread, or any thread) encodes the record as one
 *      binary frame (length, CRC-32C, fields: ledger_frame.h) and write()s it to the
 *      current spool segment in spool_dir: one syscall to the page cache, no fsync, no
 *      database. Once it returns, the record survives the process being killed (the
 *      kernel owns the bytes). With the database up, a record is committed (durably)
 *      within about flush_ms, so a power loss can lose at most the records of the last
 *      flush_ms; when a delivery fails, the writer fdatasync()s the waiting segment.
 *   2. A writer thread wakes every flush_ms, or as soon as batch_max records wait, reads
 *      whole frames from the spool (each byte once: what a read brought beyond the batch
 *      is kept for the next; the frames are decoded in place, no parse, no allocation)
 *      and inserts them in one transaction per batch (multi-row INSERTs: SQLite's INSERT
 *      OR IGNORE, PostgreSQL's ON CONFLICT DO NOTHING, on the request id, which is the
 *      primary key). Then it records the delivered offset in the segment's
 *      checkpoint file; a segment that is sealed and fully delivered is removed. A crash
 *      between the commit and the checkpoint re-delivers the batch, which the primary key
 *      turns into a no-op: exactly once. A frame that fails its checks (torn by a crash
 *      mid-write, damaged on disk) is counted as malformed and skipped; the reader
 *      resynchronises on the next good frame. Segments of format 1 (JSON lines, written
 *      by smolgate before format 2) are still read and delivered.
 *   3. The database unreachable or failing: the batch stays in the spool, delivery retries
 *      with exponential backoff (retry_min_ms doubling to retry_max_ms), and everything is
 *      delivered when it returns, in order. The spool grows meanwhile (about 250 bytes a
 *      record); nothing is dropped.
 *   4. ledger_close() (SIGTERM) delivers what is pending within its time bound; what it
 *      could not deliver stays in the spool for the next start.
 *   5. ledger_open() adopts what a previous process left: each process owns its segments
 *      through an flock()ed lock file (`P.lock` for segments `P-000001.seg`...), so a
 *      segment whose lock is free belongs to a dead process, and is delivered by whoever
 *      finds it (at start, then every 30 s). Several processes may share a spool_dir and a
 *      database: each delivers its own records; the primary key keeps one row per request.
 *
 * Databases. SQLite (WAL, synchronous=FULL, busy_timeout 10 s so that several writers
 * take turns) at sqlite_path, or PostgreSQL through libpq at postgres_url. Either way the
 * schema is created and migrated by smolgate itself: a schema_version table lists the
 * migrations applied, new ones run in order inside one transaction (PostgreSQL: under an
 * advisory lock, so two instances starting together migrate once). A database whose
 * schema is newer than this binary knows is refused (records stay spooled). See
 * docs/ledger.md for the tables.
 *
 * Secrets: a record holds the gateway key's id, never the key; the PostgreSQL URL (which
 * may hold a password) is never logged or put in an error message.
 *
 * Threads: ledger_append, ledger_append_deferred, ledger_flush_appends, ledger_flush and
 * ledger_stats may be called from any thread;
 * ledger_open and ledger_close from one owner. The writer thread never calls back. */
#ifndef SG_GATEWAY_LEDGER_H
#define SG_GATEWAY_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/chat.h"
#include "gateway/config.h"

#define LEDGER_MAX_ATTEMPTS 32      /* attempts kept per record (the first ones) */

/* One try of one target. Strings are copied by ledger_append; NULL = none. */
typedef struct ledger_attempt {
    const char *provider;           /* provider name ("openai", "groq") */
    const char *model;              /* upstream model name */
    int status;                     /* the upstream's HTTP status; 0 = no response
                                       (connection failure, timeout, cancelled) */
    const char *error;              /* NULL on success; else a short kind: "retryable",
                                       "client", "quota", "context", "timeout", "connect",
                                       "stream", "cancelled" (free text, <= 63 bytes) */
    int64_t latency_ms;             /* total: the attempt's start to its end (queue included) */
    int64_t start_ms;               /* the attempt's start, ms after the request's start: the
                                       first attempt's is 0 (its admission wait is its
                                       queue); a retry's is after its backoff wait */
    /* Since format 3 / schema 5; -1 = unknown (a record of an older smolgate, NULL in the
     * database). Times in ms from the attempt's start. */
    int64_t queue_ms;               /* before the request could go out: admission (first
                                       attempt), the provider account's limits */
    int64_t connect_ms;             /* DNS + TCP + TLS of a fresh upstream connection as the
                                       transport reports it; 0 on a reused keep-alive
                                       connection; -1 none (local model, never sent) */
    int64_t ttft_ms;                /* to the first byte of the upstream's answer (local
                                       model: its first event); -1 none came */
    int64_t input_tokens;           /* what this attempt used, when known */
    int64_t output_tokens;
    int64_t cost_micro;             /* micro-dollars of this attempt; -1 unpriced/unknown */
} ledger_attempt;

/* One request. Strings are copied (and cut to a bounded length); NULL = none. */
typedef struct ledger_record {
    int64_t time_ms;                /* request start, unix epoch ms; 0 = now */
    const char *request_id;         /* required and unique: the primary key */
    const char *key_id;             /* the gateway key's id (gw_key.id), NULL when the
                                       gateway asks for no key. Never the key itself. */
    const char *route;              /* route name; NULL for a direct model id */
    const char *requested_model;    /* "model" as the client sent it */
    const char *provider;           /* the serving provider and upstream model: the attempt */
    const char *model;              /* that answered, else the last one tried; NULL if none */
    const ledger_attempt *attempts; /* in order */
    size_t n_attempts;
    gw_usage usage;                 /* normalised (chat.h); -1 = unknown; estimated flag */
    int64_t cost_micro;             /* micro-dollars (cost_compute); < 0 = unpriced/unknown,
                                       stored as NULL */
    int64_t latency_ms;             /* request start to the end of the response */
    int64_t ttft_ms;                /* request start to the first byte of the answer the
                                       client got (streams: first token); -1 = none */
    int status;                     /* HTTP status the client got */
    const char *error;              /* the request's failure kind, NULL on success */
    bool stream;
} ledger_record;

typedef struct ledger_opts {
    gw_ledger_kind kind;            /* GW_LEDGER_SQLITE or GW_LEDGER_POSTGRES */
    const char *sqlite_path;        /* default "smolgate.db" */
    const char *postgres_url;       /* secret: conninfo or postgresql:// URL */
    const char *spool_dir;          /* default "smolgate-spool" (created if missing) */
    uint32_t flush_ms;              /* delivery interval; default 1000 */
    uint32_t batch_max;             /* records per transaction; default 5000 */
    size_t   segment_bytes;         /* a spool segment is sealed past this; default 4 MiB */
    uint32_t retry_min_ms;          /* database backoff; default 100 */
    uint32_t retry_max_ms;          /* default 30000 */
    uint32_t adopt_every_ms;        /* orphan scan interval; default 30000 */
    uint32_t loss_log_ms;           /* records lost to spool write errors: the first is
                                       logged, then one summary per interval; 10000 */
} ledger_opts;

/* Defaults above (SQLite in the working folder). */
void ledger_opts_defaults(ledger_opts *o);
/* From the configuration's ledger: section (pointers into cfg: keep cfg alive). */
void ledger_opts_from_config(ledger_opts *o, const gw_config *cfg);

typedef struct ledger ledger;

/* Creates the spool folder, takes this process's lock, finds orphaned segments and starts
 * the writer thread. With SQLite the database is opened and migrated here, so a wrong path
 * fails at start-up; a PostgreSQL server is only reached by the writer (an outage at start
 * is not an error: records spool until it answers). NULL with err on failure. */
ledger *ledger_open(const ledger_opts *o, sg_error *err);

/* Spools one record: encode + one write(). Cheap (a few microseconds) and never waits
 * for the database. -1 with err only when the spool cannot be written (disk full, I/O
 * error): the record is then lost and counted (ledger_stats.append_failures). The ledger
 * logs the loss itself, without flooding: an ERROR line at the first loss, then at most
 * one per loss_log_ms with the count lost since (the writer thread, or ledger_close,
 * reports the rest when losses stop). Callers need not log it again. */
int ledger_append(ledger *l, const ledger_record *r, sg_error *err);

/* Spools one record later: its frame waits in memory until ledger_flush_appends (or until
 * LEDGER_DEFER_BYTES wait, or the next ledger_append, ledger_flush or ledger_close), and
 * is written then, with every other waiting frame, in one write(). For the event loop,
 * which appends while it handles an iteration's events and flushes before it sends any
 * answer (http_server's before_send hook): a client never holds an answer whose record is
 * not in the spool, and one syscall carries an iteration's records instead of one each.
 * Losses are counted and logged as for ledger_append. */
#define LEDGER_DEFER_BYTES (256 * 1024)
void ledger_append_deferred(ledger *l, const ledger_record *r);
/* Writes the deferred frames: 0, or -1 with err when they were lost. NULL l ok. */
int ledger_flush_appends(ledger *l, sg_error *err);

/* Waits until every record appended before the call is delivered, or timeout_ms passes.
 * 0 when delivered, -1 on timeout (tests and benchmarks; the gateway never needs it). */
int ledger_flush(ledger *l, uint32_t timeout_ms);

/* Delivers what is pending within timeout_ms, stops the writer, releases the spool (what
 * is left is delivered by the next start). NULL ok. */
void ledger_close(ledger *l, uint32_t timeout_ms);

typedef struct ledger_stats {
    uint64_t appended;              /* by this process */
    uint64_t delivered;             /* records handed to the database (own and adopted) */
    uint64_t duplicates;            /* of those, already there (re-deliveries) */
    uint64_t batches;
    uint64_t db_failures;           /* failed connections or transactions */
    uint64_t append_failures;       /* records lost to a spool write error */
    uint64_t malformed;             /* spool records that failed their checks (torn writes) */
    uint64_t rejected;              /* records the database refused for their data, kept in
                                       spool_dir/rejected.jsonl (never expected) */
    uint64_t pending;               /* appended by this process, not yet delivered */
    bool db_connected;
} ledger_stats;
void ledger_get_stats(ledger *l, ledger_stats *s);

/* Fallbacks in r: attempts that moved to another (provider, model) than the one before. */
int ledger_record_fallbacks(const ledger_record *r);

/* Serialises r as a JSON line (with '\n') into out: spool format 1, which is still read
 * (ledger_frame.h), and the lines of rejected.jsonl; for tests and tools too. */
struct sg_buf;
void ledger_record_json(const ledger_record *r, struct sg_buf *out);

/* ---- reading it back: GET /v1/usage off the loop thread ---- */

/* Called when a usage query finishes, on a worker thread (use loop_post to get back to the
 * loop): status 200 with a JSON body, 400 (bad query) or 503 (database unreachable) with
 * an OpenAI-style error body. The body is valid only during the call. */
typedef void (*ledger_usage_fn)(void *arg, int status, const char *body, size_t len);

/* Runs usage_http (ledger_usage.h) for query (the URL's query string, not decoded) on a
 * worker thread with its own database connection; only_key (copied; NULL: every key)
 * confines it to one key's records. At most 4 run at once: beyond, -1 and nothing is
 * called (answer 429). */
int ledger_usage_async(ledger *l, const char *query, const char *only_key, ledger_usage_fn done, void *arg);

#endif
