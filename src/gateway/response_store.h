/* response_store.h: the stored responses of the Responses API (POST /v1/responses with
 * "store", previous_response_id, GET and DELETE /v1/responses/{id}).
 *
 * What is kept per response: its id, the gateway key that created it (its owner), its
 * creation time, the Response object as the client got it (JSON text), and the
 * conversation up to and including it as canonical chat messages (a JSON array text,
 * without the request's instructions, which OpenAI does not carry over): what a request
 * naming it as previous_response_id continues from.
 *
 * This backend is in process (one per gateway process, shared by its threads behind a
 * mutex): instances behind a load balancer do not see each other's responses. It is
 * bounded by a count, a byte total (ids, owners and both texts) and an age; the oldest
 * response goes first when a bound is crossed, and an expired one is never returned.
 * A database backend (the ledger's SQLite / PostgreSQL) can implement the same calls.
 *
 * Ownership: a response is visible (get, delete, continue) only to the key that created
 * it; an admin key sees all; with no keys configured the owner is "" and all see all. */
#ifndef SG_GATEWAY_RESPONSE_STORE_H
#define SG_GATEWAY_RESPONSE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rstore_limits {
    size_t max_count;          /* responses kept; default 10000; 0 = store nothing */
    size_t max_bytes;          /* their bytes together; default 256 MiB */
    int64_t max_age_s;         /* seconds a response is kept; default 86400 (1 day) */
} rstore_limits;

#define RSTORE_DEFAULT_MAX_COUNT 10000
#define RSTORE_DEFAULT_MAX_BYTES ((size_t)256 << 20)
#define RSTORE_DEFAULT_MAX_AGE_S 86400

/* Who asks: owner is the key id (NULL or "" without keys); admin sees every response. */
typedef struct rstore_who {
    const char *owner;
    bool admin;
} rstore_who;

/* A response read back: both texts malloc'd (free with rstore_entry_free). */
typedef struct rstore_entry {
    char *response;            /* the Response object */
    char *messages;            /* the conversation as chat messages (JSON array) */
    int64_t created;
} rstore_entry;

/* The process's store (created on first use with the defaults). */
void rstore_configure(const rstore_limits *l);
rstore_limits rstore_get_limits(void);
/* Keeps a response (replacing one with the same id); drops the oldest past the bounds.
 * A response larger than max_bytes alone is not kept. now: unix seconds. */
void rstore_put(const char *id, const char *owner, int64_t now, const char *response, const char *messages);
/* 0 and e filled when id exists, has not expired and who may see it; -1 otherwise. */
int rstore_get(const char *id, const rstore_who *who, int64_t now, rstore_entry *e);
/* 0 when deleted (same visibility as rstore_get), -1 when not found. */
int rstore_delete(const char *id, const rstore_who *who, int64_t now);
void rstore_entry_free(rstore_entry *e);
/* Counts, for tests. */
size_t rstore_count(void);
size_t rstore_bytes(void);
/* Drops everything (tests). */
void rstore_clear(void);

#endif
