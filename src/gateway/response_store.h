/* response_store.h: the stored responses of the Responses API (POST /v1/responses with
 * "store", previous_response_id, GET and DELETE /v1/responses/{id}, GET
 * /v1/responses/{id}/input_items).
 *
 * What is kept per response: its id, the gateway key that created it (its owner), its
 * creation time, the Response object as the client got it (JSON text), the conversation
 * up to and including it as canonical chat messages (a JSON array text, without the
 * request's instructions, which OpenAI does not carry over): what a request naming it as
 * previous_response_id continues from, and its input items in the Responses API's item
 * shape (a JSON array text: those carried over from the previous response, then its own),
 * which input_items lists.
 *
 * Two backends behind the same calls:
 * - memory (the default without rstore_use_db): one per process, shared by its threads
 *   behind a mutex; instances behind a load balancer do not see each other's responses.
 * - the ledger's database (SQLite or PostgreSQL, response_store_db.h): shared by every
 *   instance using it. The loop never waits for it: one worker thread owns the
 *   connection and runs the calls in the order they were made (so a read made after a
 *   write on this instance sees it), handing completions back to the loop with
 *   loop_post. While the database is unreachable, reads complete with
 *   RSTORE_UNAVAILABLE (no more than one connection attempt every 2 s) and writes are
 *   dropped with a warning: the store is a convenience, not a record.
 * Both are bounded by a count, a byte total (ids, owners and the texts) and an age; the
 * oldest response goes first when a bound is crossed, and an expired one is never
 * returned.
 *
 * Ownership: a response is visible (get, delete, continue, input items) only to the key
 * that created it; an admin key sees all; with no keys configured the owner is "" and all
 * see all.
 *
 * Threading: rstore_put, rstore_fetch_async, rstore_delete_async and rstore_get are for
 * the loop thread (callbacks run there); the rest any thread. */
#ifndef SG_GATEWAY_RESPONSE_STORE_H
#define SG_GATEWAY_RESPONSE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/config.h"
#include "gateway/loop.h"

typedef struct rstore_limits {
    size_t max_count;          /* responses kept; default 10000; 0 = store nothing */
    size_t max_bytes;          /* their bytes together; default 256 MiB */
    int64_t max_age_s;         /* seconds a response is kept; default 86400 (1 day) */
} rstore_limits;

#define RSTORE_DEFAULT_MAX_COUNT 10000
#define RSTORE_DEFAULT_MAX_BYTES ((size_t)256 << 20)
#define RSTORE_DEFAULT_MAX_AGE_S 86400
#define RSTORE_MAX_ID 128          /* longer ids are never stored: refuse them up front */
#define RSTORE_MAX_FETCH 64        /* responses one fetch reads */
#define RSTORE_QUEUE_MAX 4096      /* database calls waiting; beyond: unavailable at once */

/* Who asks: owner is the key id (NULL or "" without keys); admin sees every response. */
typedef struct rstore_who {
    const char *owner;
    bool admin;
} rstore_who;

/* A response read back: the texts malloc'd (free with rstore_entry_free); response NULL
 * when not found. */
typedef struct rstore_entry {
    char *response;            /* the Response object */
    char *messages;            /* the conversation as chat messages (JSON array) */
    char *input_items;         /* its input items (JSON array) */
    int64_t created;           /* unix seconds */
} rstore_entry;

typedef enum rstore_status {
    RSTORE_OK = 0,             /* done (a fetch: each entry found or not) */
    RSTORE_NOT_FOUND = 1,      /* a delete: nothing visible to who by that id */
    RSTORE_UNAVAILABLE = 2,    /* the database could not be asked: try again later */
} rstore_status;

/* ---- configuration ---- */

/* The bounds (both backends). */
void rstore_configure(const rstore_limits *l);
rstore_limits rstore_get_limits(void);
/* Keeps responses in the ledger database kind / target (a path or a PostgreSQL URL) from
 * now on: starts the worker thread, or points it at another database. The connection is
 * opened (and the schema migrated) by the worker on its first call, so this never
 * blocks. */
void rstore_use_db(gw_ledger_kind kind, const char *target);
/* Back to the memory backend from the next call on, without waiting: the worker ends
 * the calls already queued (their callbacks posted to their loops as usual) and exits.
 * (A later rstore_use_db first joins it.) */
void rstore_use_memory(void);
/* rstore_use_memory, then waits for the worker's end: at exit, once the loops no longer
 * take calls (the callbacks still queued are posted; the caller runs or drops them). */
void rstore_shutdown(void);
bool rstore_uses_db(void);

/* ---- the calls ---- */

/* Keeps a response (replacing one with the same id); drops the oldest past the bounds.
 * A response larger than max_bytes alone is not kept. now: unix seconds (the database
 * backend stamps its own clock, in milliseconds, to order responses). */
void rstore_put(const char *id, const char *owner, int64_t now, const char *response, const char *messages,
                const char *input_items);

/* Reads the responses ids[0..n) (n <= RSTORE_MAX_FETCH) that who may see: done(l, arg,
 * status, entries) on the loop thread, entries[i] for ids[i] (response NULL when not
 * found or expired), owned by the callee (valid during done). Memory: done runs before
 * this returns. */
typedef void (*rstore_fetch_fn)(loop *l, void *arg, rstore_status status, rstore_entry *entries);
void rstore_fetch_async(loop *l, const char *const *ids, size_t n, const rstore_who *who, rstore_fetch_fn done, void *arg);
/* Deletes id when who may see it: done(l, arg, RSTORE_OK / NOT_FOUND / UNAVAILABLE, NULL). */
void rstore_delete_async(loop *l, const char *id, const rstore_who *who, rstore_fetch_fn done, void *arg);

/* The synchronous read that request parsing uses: memory: the store; database: only what
 * the fetch made available with rstore_lookaside (a parse runs right after its fetch).
 * 0 and e filled when id exists, has not expired and who may see it; -1 otherwise. */
int rstore_get(const char *id, const rstore_who *who, int64_t now, rstore_entry *e);
/* Lends the entries of a fetch to rstore_get on this thread until rstore_lookaside(NULL,
 * NULL, 0). */
void rstore_lookaside(const char *const *ids, const rstore_entry *entries, size_t n);

/* 0 when deleted (same visibility as rstore_get), -1 when not found. Memory only. */
int rstore_delete(const char *id, const rstore_who *who, int64_t now);
void rstore_entry_free(rstore_entry *e);
/* Counts of the memory backend, for tests. */
size_t rstore_count(void);
size_t rstore_bytes(void);
/* Drops everything in memory (tests). */
void rstore_clear(void);

#endif
