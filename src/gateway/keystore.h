/* keystore.h: gateway keys made at run time through the admin API (POST/GET/PATCH/DELETE
 * /admin/keys, docs/gateway.md), kept in the ledger's database (table `gateway_keys`,
 * schema migration 3) so that every instance using that database serves the same keys.
 *
 * Contract:
 * - Only the SHA-256 of a secret is stored; the secret is generated here (24 random bytes
 *   from libcrypto, "sgk-" and 48 hex digits), returned once by the create call and never
 *   logged or kept.
 * - The request path never touches the database: keystore_find_hash looks the presented
 *   key's hash up in a table in memory, on the loop thread.
 * - One worker thread owns the connection. It runs the admin calls in order and, every
 *   KEYSTORE_POLL_MS, reads a cheap signature of the table (row count, newest and sum of
 *   updated_ms); when it changed (a write on this or another instance) it reads the live
 *   rows and posts them to the loop, which rebuilds the set. A change made anywhere is
 *   served everywhere within about KEYSTORE_POLL_MS.
 * - Database unreachable: the last set read stays in use; one warning per outage, one
 *   connection attempt every 2 s; admin calls answer 503.
 * - Keys from the configuration file win: a database key whose id is also a file key's is
 *   not served (warned at each rebuild), and the admin API refuses to create, change or
 *   revoke such an id (409). Ids are never reused: a revoked key's row stays (revoked_ms).
 * - A run-time key's routes are resolved by name against the configuration in use
 *   (keystore_rebuild after a reload); a route that no longer exists is dropped from it.
 * - gw_key pointers handed out stay valid while held (keystore_hold / keystore_release,
 *   loop thread), so a request in flight keeps its key across a rebuild.
 *
 * Threading: everything here is for the loop thread, except keystore_parse_body,
 * keystore_new_secret and the keystore_db_* calls (any thread, tests). */
#ifndef SG_GATEWAY_KEYSTORE_H
#define SG_GATEWAY_KEYSTORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/config.h"
#include "gateway/ledger_db.h"
#include "gateway/loop.h"

#define KEYSTORE_POLL_MS 500
#define KEYSTORE_SECRET_LEN 52      /* "sgk-" + 48 hex digits */
#define KEYSTORE_QUEUE_MAX 256      /* admin calls waiting; beyond: 503 at once */

typedef struct keystore keystore;

keystore *keystore_new(loop *l);
/* Frees the keys no request holds any more; those still held are freed at release. Stops
 * and joins the worker; the results it posted are run or dropped by the caller's loop. */
void keystore_free(keystore *ks);
/* Uses database kind/target from now on (starts the worker; reconnects on a change). */
void keystore_use_db(keystore *ks, gw_ledger_kind kind, const char *target);
/* Builds the served set again against configuration c (after a reload). c is borrowed:
 * call again before it is freed. */
void keystore_rebuild(keystore *ks, const gw_config *c);

/* The run-time key with this hash, or NULL (none, or expired at now_s, unix seconds). */
const gw_key *keystore_find_hash(const keystore *ks, const uint8_t hash[GW_SHA256_LEN], int64_t now_s);
size_t keystore_count(const keystore *ks);
/* The run-time key served now, i < keystore_count (loop thread; valid until the next
 * rebuild: use it at once). */
const gw_key *keystore_key(const keystore *ks, size_t i);
/* Keep k valid while a request uses it (no-ops for keys from the file). */
void keystore_hold(const gw_key *k);
void keystore_release(const gw_key *k);

/* An admin call: method (GET, POST, PATCH, DELETE), id (NULL: the collection), body.
 * done(arg, status, body) runs on the loop thread with a JSON body (a key, a list, or
 * {"error":{...}} in OpenAI's shape), later or before this returns (bad input). */
typedef void (*keystore_done_fn)(void *arg, int status, const char *body, size_t len);
void keystore_admin(keystore *ks, const gw_config *c, const char *method, const char *id, const char *body,
                    size_t len, keystore_done_fn done, void *arg);

/* ---- pure parts, for tests ---- */

/* Validates an admin body: create (may carry "id") or patch (may not). Returns 0 with
 * *spec (the normalized fields given: role, routes, limits, budget, alert_percent,
 * expires_at, description) and, on create, *id (malloc'd); -1 with err saying what is
 * wrong. Routes must name routes of c. */
int keystore_parse_body(const char *body, size_t len, const gw_config *c, bool create, json_t **spec, char **id,
                        sg_error *err);
/* A fresh secret (KEYSTORE_SECRET_LEN characters and a NUL) and its SHA-256 in hex. */
int keystore_new_secret(char secret[KEYSTORE_SECRET_LEN + 1], char sha_hex[2 * GW_SHA256_LEN + 1]);

/* The SQL (synchronous). Each returns an HTTP status (200, 201, 404, 409) with *body (a
 * JSON text, malloc'd), or -1 with err (the database failed). now_ms: unix milliseconds. */
int keystore_db_create(ledger_db *db, const char *id, const char *sha_hex, const json_t *spec, int64_t now_ms,
                       char **body, sg_error *err);
int keystore_db_get(ledger_db *db, const char *id, char **body, sg_error *err);
int keystore_db_list(ledger_db *db, char **body, sg_error *err);
int keystore_db_patch(ledger_db *db, const char *id, const json_t *patch, int64_t now_ms, char **body, sg_error *err);
int keystore_db_revoke(ledger_db *db, const char *id, int64_t now_ms, char **body, sg_error *err);
/* The table's signature (changes with every write) into sig; 0 or -1. */
int keystore_db_signature(ledger_db *db, char *sig, size_t cap, sg_error *err);
/* The live rows: a JSON array of {"id", "sha256", "spec"} (new reference), or NULL. */
json_t *keystore_db_load(ledger_db *db, sg_error *err);

#endif
