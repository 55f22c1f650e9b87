/* ledger_usage.h: reading the ledger back: sums of requests, tokens per class, cost and
 * errors, filtered and grouped. One query function serves both GET /v1/usage and
 * `smolgate usage`, so the two always agree.
 *
 * Filters: a time range [from, to) (ISO 8601 or unix time), and exact matches on key id,
 * route, provider and model. Grouping: any of key, route, provider, model, and hour or
 * day (UTC buckets), in the order given. Sums per group: requests, errors (status >= 400),
 * fallbacks, tokens per class (input = uncached input, cache_read, cache_write, output
 * with reasoning included, reasoning), cost in micro-dollars over the priced requests, and
 * the number of unpriced and of estimated requests (so that a sum is never silently short).
 * Rows come in the order of their group values; `total` sums every row.
 *
 * The ledger lags the requests by up to ledger.flush_ms (records wait in the spool until
 * the writer delivers them).
 *
 * Query string of GET /v1/usage (names as the command-line flags):
 *   from, to       2025-11-24, 2025-11-24T10:00:00Z, 2025-11-24T12:00:00+02:00, fractions
 *                  of a second allowed; or unix seconds (1732406400); `to` is exclusive
 *   key, route, provider, model   exact match
 *   group_by       comma-separated: key, route, provider, model, hour, day */
#ifndef SG_GATEWAY_LEDGER_USAGE_H
#define SG_GATEWAY_LEDGER_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"
#include "gateway/config.h"

typedef struct ledger_db ledger_db;

typedef enum usage_dim {
    USAGE_KEY, USAGE_ROUTE, USAGE_PROVIDER, USAGE_MODEL, USAGE_HOUR, USAGE_DAY, USAGE_N_DIMS
} usage_dim;

typedef struct usage_filter {
    int64_t from_ms, to_ms;           /* unix ms; -1 = open */
    char key[128], route[256], provider[128], model[256];   /* "" = any */
    usage_dim group[USAGE_N_DIMS];    /* in the order asked */
    size_t n_group;
} usage_filter;

typedef struct usage_row {
    char *dims[USAGE_N_DIMS];         /* KEY..MODEL: the group's value (NULL: the record had
                                         none, e.g. no key); HOUR/DAY: unused */
    int64_t bucket_ms;                /* HOUR or DAY: the bucket's start; -1 */
    int64_t requests, errors, fallbacks;
    int64_t input, cache_read, cache_write, output, reasoning;   /* tokens */
    int64_t cost_micro;               /* over the priced requests */
    int64_t unpriced, estimated;      /* requests */
} usage_row;

typedef struct usage_result {
    usage_row *rows;
    size_t n;
    usage_row total;
} usage_result;

void usage_filter_init(usage_filter *f);
/* Sets one filter from its name ("from", "to", "key", "route", "provider", "model",
 * "group_by"). -1 with err for an unknown name or a bad value. */
int usage_filter_set(usage_filter *f, const char *name, const char *value, sg_error *err);
/* Parses a URL query string (percent-decoding, '+' as space). */
int usage_parse_query(usage_filter *f, const char *query, sg_error *err);
/* The query string's parameters in order, percent-decoded ('+' is a space): fn(name,
 * value) returns 0 to go on, else that is returned. -1 with err on a bad escape or a
 * name or value too long (31 and 511 bytes). usage_parse_query and the dashboard's
 * queries read their parameters through it. */
typedef int (*usage_param_fn)(void *arg, const char *name, const char *value, sg_error *err);
int usage_each_param(const char *query, usage_param_fn fn, void *arg, sg_error *err);
/* "2025-11-24T10:00:00Z" and the other forms above into unix ms. -1 on error. */
int usage_parse_time(const char *s, int64_t *ms);
const char *usage_dim_name(usage_dim d);

int  usage_query(ledger_db *db, const usage_filter *f, usage_result *out, sg_error *err);
void usage_result_free(usage_result *r);

/* Renderers. JSON: {"object":"usage","from":..,"to":..,"group_by":[..],"data":[rows],
 * "total":{..}}, each row with its group values ("key", "day": "2025-11-24",
 * "hour": "2025-11-24T10:00:00Z"), requests, errors, fallbacks, input_tokens,
 * cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_micro,
 * cost_usd (a decimal number with 6 places), unpriced_requests, estimated_requests.
 * CSV: a header line and the same columns. Table: aligned columns for people. */
void usage_render_json(const usage_filter *f, const usage_result *r, sg_buf *out);
void usage_render_csv(const usage_filter *f, const usage_result *r, sg_buf *out);
void usage_render_table(const usage_filter *f, const usage_result *r, sg_buf *out);

/* GET /v1/usage in one call: parses query, opens the database read-only (kind, target as
 * for ledger_db_open), runs the query, renders JSON into body. only_key (non-NULL: the
 * caller is an ordinary gateway key) confines the query to that key's records whatever
 * the query asks: its key filter is set to only_key, and a query naming another key gets
 * 403. Returns the HTTP status: 200; 400 for a bad query; 403; 503 when the database
 * cannot be reached (the error body is OpenAI-shaped and never holds the database URL).
 * Blocking: call it off the loop thread (ledger_usage_async does). */
int usage_http(gw_ledger_kind kind, const char *target, const char *query, const char *only_key, sg_buf *body);

/* The reverse of usage_render_json: a GET /v1/usage body back into the filter's time range
 * and grouping and the result's rows (`smolgate usage --url` renders them as a table or
 * CSV). -1 with err when the body is not such a document. */
int usage_parse_json(const char *body, size_t len, usage_filter *f, usage_result *out, sg_error *err);

#endif
