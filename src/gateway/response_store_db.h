/* response_store_db.h: the stored responses (response_store.h) in the ledger's database,
 * table `responses` (schema migration 2, ledger_db.c): the SQL, synchronous, for the
 * response store's worker thread and for tests.
 *
 * Bounds are enforced on every write, in its transaction: expired rows are deleted, then
 * the oldest beyond max_count or beyond max_bytes (counting from the newest); reads also
 * filter on age, so an expired response is never returned even before the next write.
 * Ownership is part of every read and delete (WHERE owner = ?, unless admin).
 *
 * Each call returns 0 (done / found), 1 (not found: get and delete) or -1 with err (the
 * database failed: ledger_db_ok says whether the connection is gone). */
#ifndef SG_GATEWAY_RESPONSE_STORE_DB_H
#define SG_GATEWAY_RESPONSE_STORE_DB_H

#include "gateway/ledger_db.h"
#include "gateway/response_store.h"

/* One response to keep. bytes counts the id, the owner and the three texts. */
typedef struct rstore_db_record {
    const char *id, *owner;    /* owner "" without keys */
    const char *response, *messages, *input_items;
} rstore_db_record;

/* now_ms: unix milliseconds (the row's created_ms, and the age bound's reference). */
int rstore_db_put(ledger_db *db, const rstore_db_record *r, const rstore_limits *lim, int64_t now_ms, sg_error *err);
int rstore_db_get(ledger_db *db, const char *id, const rstore_who *who, int64_t max_age_s, int64_t now_ms,
                  rstore_entry *e, sg_error *err);
int rstore_db_delete(ledger_db *db, const char *id, const rstore_who *who, int64_t max_age_s, int64_t now_ms,
                     sg_error *err);
/* Rows and their bytes (tests). */
int rstore_db_totals(ledger_db *db, int64_t *count, int64_t *bytes, sg_error *err);

#endif
