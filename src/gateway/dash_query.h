/* dash_query.h: the dashboard's reads of the ledger (dashboard.h serves them): the request
 * list with search and filters, one request's trace (its attempts), and spend over time
 * (the rows of ledger_usage.h, read from an hourly rollup).
 *
 * Why a module apart from ledger_usage.c: these are the admin's views (every key, every
 * record), paged and searched, where /v1/usage is a tenant's sums; the two share the
 * usage_row shape and its renderers so that spend and usage always agree.
 *
 * The rollup (table spend_hourly, schema 4): sums per hour and value of each dimension
 * apart (dim key, route, provider, model: about as many rows an hour as there are keys,
 * routes, providers and models, not their product), brought up to date by dashq_rollup
 * from a high-water mark over the order in
 * which records were stored (SQLite: rowid; PostgreSQL: requests.seq), so the ledger's
 * writer never does more per record, and a record stored late (a spool adopted after a
 * crash) is still counted once. dashq_spend reads the rollup and sums the records past
 * the mark on the fly (one statement, one snapshot), so it is exact whatever the rollup's
 * lag; the dashboard's worker keeps the lag small, rolling up in bounded steps when idle.
 * Spend is by whole hours (from rounded down, to rounded up to the hour).
 *
 * All calls block on the database: run them off the loop thread (dashboard.c's worker).
 * Every function returns 0, or -1 with err (the database's message, never its URL). */
#ifndef SG_GATEWAY_DASH_QUERY_H
#define SG_GATEWAY_DASH_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "gateway/ledger_usage.h"

#define DASHQ_MAX_LIMIT 500

typedef struct dashq_filter {
    char q[128];                      /* substring of request id, key, route, model or error;
                                         a whole request id (32 hex digits): that request */
    char key[128], route[256], model[256];   /* exact; model matches the served or requested */
    int status;                       /* 0 any; > 0 exact; -1 errors (>= 400); -2 ok (< 400) */
    int limit;                        /* 1 .. DASHQ_MAX_LIMIT; default 50 */
    int64_t from_ms, to_ms;           /* -1: open */
    int64_t before_ms;                /* cursor (the last row's time and id); -1: newest */
    char before_id[128];
} dashq_filter;

void dashq_filter_init(dashq_filter *f);
/* GET /admin/requests' query string: q, key, route, model, status (a number, "error" or
 * "ok"), limit, from, to (as ledger_usage.h), before ("MS.REQUEST_ID" from next_before). */
int dashq_parse_requests(dashq_filter *f, const char *query, sg_error *err);

/* {"object":"list","data":[{request_id, time_ms, key, route, requested_model, provider,
 * model, status, error, stream, attempts, fallbacks, input_tokens, output_tokens,
 * cost_micro, latency_ms, ttft_ms}], "next_before": "MS.ID" or null}, newest first. */
int dashq_requests(ledger_db *db, const dashq_filter *f, sg_buf *out, sg_error *err);

/* One request with "attempts": [{n, provider, model, status, error, start_ms, latency_ms,
 * queue_ms, connect_ms, ttft_ms, input_tokens, output_tokens, cost_micro, next_reason}]
 * (ms; start_ms after the request's start, the others from the attempt's start as
 * ledger_attempt says; null when unknown, as for attempts stored before schema 5, whose
 * start_ms is where the attempt before ended; next_reason: why the next attempt was made,
 * the failed attempt's error kind; null for the last) and "payload" ({"request","response","captured_ms"} when
 * captured, else null). *found false (and nothing written) when there is no such id. */
int dashq_request(ledger_db *db, const char *id, bool *found, sg_buf *out, sg_error *err);

/* GET /admin/spend's query string into a usage filter: from, to, key, route, provider,
 * model as /v1/usage; by (key, route, provider or model, or several comma-separated),
 * bucket (hour, day or none; default day). */
int dashq_parse_spend(usage_filter *f, const char *query, sg_error *err);

/* Adds to spend_hourly the records past the mark, at most max_records of them (<= 0: all),
 * in one transaction (concurrent callers take turns). *rolled: the records added (may be
 * NULL). */
int dashq_rollup(ledger_db *db, int64_t max_records, int64_t *rolled, sg_error *err);
/* The usage sums for f (usage_query's rows, order and totals): from spend_hourly and the
 * records not rolled up yet when f groups by at most one dimension and filters only on
 * that one (what the dashboard asks); else usage_query over requests (exact, slower). */
int dashq_spend(ledger_db *db, const usage_filter *f, usage_result *out, sg_error *err);

/* Payload capture's rows (table payloads): one request's prompt and answer, stored once
 * (a second capture of the id is ignored); and the purge of those captured before
 * before_ms (*deleted: how many; may be NULL). */
int dashq_store_payload(ledger_db *db, const char *request_id, int64_t captured_ms, const char *prompt,
                        const char *answer, sg_error *err);
int dashq_purge_payloads(ledger_db *db, int64_t before_ms, int64_t *deleted, sg_error *err);

#endif
