/* test_dash_query.c: the dashboard's ledger reads (dash_query.h) on SQLite: the hourly
 * rollup gives the same sums as the aggregate over the requests for every grouping, stays
 * right when rolled up in steps and when a batch is delivered twice, and rolls nothing
 * twice; the request list's filters, search (LIKE's wildcards taken literally) and paging
 * (every row once, newest first); one request's trace (attempts in order, their starts,
 * why the next one was made) with its captured payload, stored once and purged by age;
 * parameter errors. SQLite; PostgreSQL too with
 * DASHQ_POSTGRES (tests/e2e/ledger_postgres.sh). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/buf.h"
#include "gateway/dash_query.h"
#include "gateway/ledger.h"
#include "gateway/ledger_db.h"
#include "gateway/ledger_usage.h"
#include "testutil.h"

#define T0 1764547200000ll   /* 2025-12-01T00:00:00Z */

/* SQLite: a fresh file per test. With DASHQ_POSTGRES set to a database URL (tests/e2e/
 * ledger_postgres.sh does), the same tests on PostgreSQL, the tables emptied first. */
static ledger_db *open_db(const char *name) {
    const char *pg = getenv("DASHQ_POSTGRES");
    char path[512];
    snprintf(path, sizeof path, "%s/%s.db", tu_tmpdir(), name);
    sg_error err;
    ledger_db *db = ledger_db_open(pg ? GW_LEDGER_POSTGRES : GW_LEDGER_SQLITE, pg ? pg : path, false, &err);
    CHECK_MSG(db != NULL, "open: %s", err.msg);
    if (db && pg)
        CHECK_MSG(ledger_db_exec(db, "TRUNCATE requests, attempts, spend_hourly, payloads", NULL, 0, &err) >= 0 &&
                      ledger_db_exec(db, "UPDATE rollup_state SET high_water = 0", NULL, 0, &err) >= 0 &&
                      ledger_db_exec(db, "SELECT setval('requests_seq_seq', 1, false)", NULL, 0, &err) >= 0,
                  "empty: %s", err.msg);
    return db;
}

static const char *const KEYS[] = {"team-a", "team-b", NULL};
static const char *const ROUTES[] = {"chat", "code", NULL};
static const char *const PROVIDERS[] = {"openai", "anthropic", "local"};

/* n records from index `from`, spread over 50 hours, keys/routes/providers cycling (NULL
 * ones included), some failed, some unpriced; record 7k+3 fell back once. */
static void insert(ledger_db *db, int from, int n) {
    ledger_record *rs = calloc((size_t)n, sizeof *rs);
    ledger_attempt (*at)[2] = calloc((size_t)n, sizeof *at);
    char (*ids)[40] = calloc((size_t)n, sizeof *ids);
    for (int k = 0; k < n; k++) {
        int i = from + k;
        snprintf(ids[k], sizeof ids[k], "req-%06d", i);
        ledger_record *r = &rs[k];
        r->time_ms = T0 + (int64_t)(i % 50) * 3600000 + (i * 7919) % 3600000;
        r->request_id = ids[k];
        r->key_id = KEYS[i % 3];
        r->route = ROUTES[i % 3];
        r->requested_model = "m";
        r->provider = PROVIDERS[i % 3];
        r->model = i % 2 ? "big" : "small";
        r->status = i % 11 == 0 ? 502 : 200;
        r->error = i % 11 == 0 ? "retryable" : NULL;
        r->usage = (gw_usage){.input = 10 + i % 5, .cache_read = i % 3, .cache_write = 0, .output = 20 + i % 7,
                              .reasoning = i % 2};
        r->cost_micro = i % 13 == 0 ? -1 : 100 + i;
        r->latency_ms = 50 + i % 100;
        r->ttft_ms = i % 4 ? 10 : -1;
        bool fb = i % 7 == 3;
        /* the fallback after a backoff of 8 ms; the first attempt's usage unknown (NULL) */
        at[k][0] = (ledger_attempt){.provider = "flaky", .model = "x", .status = 500, .error = "retryable", .latency_ms = 12,
                                    .start_ms = 0, .queue_ms = 3, .connect_ms = 4, .ttft_ms = 11, .input_tokens = -1,
                                    .output_tokens = -1, .cost_micro = 0};
        at[k][1] = (ledger_attempt){.provider = r->provider, .model = r->model, .status = r->status, .error = r->error,
                                    .latency_ms = 30, .start_ms = fb ? 20 : 0, .queue_ms = 1, .connect_ms = 0,
                                    .ttft_ms = 9, .input_tokens = r->usage.input, .output_tokens = r->usage.output,
                                    .cost_micro = r->cost_micro};
        r->attempts = fb ? at[k] : &at[k][1];
        r->n_attempts = fb ? 2 : 1;
    }
    sg_error err;
    int64_t added = ledger_db_insert(db, rs, (size_t)n, &err);
    CHECK_MSG(added >= 0, "insert: %s", err.msg);
    free(rs);
    free(at);
    free(ids);
}

/* The rollup's answer and the plain aggregate's, for one query string. */
static void same_as_usage(ledger_db *db, const char *query) {
    usage_filter f;
    sg_error err;
    CHECK_MSG(dashq_parse_spend(&f, query, &err) == 0, "%s: %s", query, err.msg);
    usage_result a, b;
    CHECK_MSG(dashq_spend(db, &f, &a, &err) == 0, "spend %s: %s", query, err.msg);
    CHECK_MSG(usage_query(db, &f, &b, &err) == 0, "usage %s: %s", query, err.msg);
    sg_buf ja, jb;
    sg_buf_init(&ja);
    sg_buf_init(&jb);
    usage_render_json(&f, &a, &ja);
    usage_render_json(&f, &b, &jb);
    CHECK_MSG(ja.len == jb.len && !memcmp(ja.data, jb.data, ja.len), "%s:\n  rollup %.*s\n  usage  %.*s", query, (int)ja.len,
              ja.data, (int)jb.len, jb.data);
    CHECK(a.n > 0 || !strstr(query, "by="));
    sg_buf_free(&ja);
    sg_buf_free(&jb);
    usage_result_free(&a);
    usage_result_free(&b);
}

static const char *const QUERIES[] = {
    "bucket=none", "bucket=day", "bucket=hour", "by=key&bucket=none", "by=route&bucket=day", "by=provider,model&bucket=hour",
    "by=key,route&bucket=day&from=2025-12-01T05:00:00Z&to=2025-12-02T03:00:00Z", "by=model&bucket=none&key=team-a",
    "bucket=hour&route=chat&provider=openai", "by=key&bucket=day&from=2025-12-03",
};

static void all_same(ledger_db *db) {
    for (size_t i = 0; i < sizeof QUERIES / sizeof *QUERIES; i++) same_as_usage(db, QUERIES[i]);
}

static void test_rollup_matches_usage(void) {
    ledger_db *db = open_db("rollup");
    if (!db) return;
    insert(db, 0, 400);
    all_same(db);   /* nothing rolled up yet: all from the requests past the mark */
    int64_t rolled = -1;
    sg_error err;
    CHECK_MSG(dashq_rollup(db, 150, &rolled, &err) == 0, "%s", err.msg);   /* a bounded step */
    CHECK_EQ_INT(rolled, 150);
    all_same(db);   /* part rolled up, part not */
    CHECK_MSG(dashq_rollup(db, 0, &rolled, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(rolled, 250);
    all_same(db);
    /* more records, some in hours already rolled up: summed into the same rows */
    insert(db, 400, 333);
    all_same(db);
    CHECK_MSG(dashq_rollup(db, 0, &rolled, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(rolled, 333);
    all_same(db);
    CHECK_MSG(dashq_rollup(db, 0, &rolled, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(rolled, 0);   /* nothing is rolled up twice */
    /* a batch delivered twice is stored once, and rolled up once */
    insert(db, 100, 200);
    CHECK_MSG(dashq_rollup(db, 0, &rolled, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(rolled, 0);
    same_as_usage(db, "by=key,route,provider,model&bucket=hour");
    usage_filter f;
    usage_result r;
    CHECK(dashq_parse_spend(&f, "bucket=none", &err) == 0);
    CHECK(dashq_spend(db, &f, &r, &err) == 0);
    CHECK_EQ_INT(r.total.requests, 733);
    usage_result_free(&r);
    /* which queries the rollup answers: one dimension, filtered on that one only (a
     * changed rollup row shows through); others are summed over requests */
    CHECK(ledger_db_exec(db, "UPDATE spend_hourly SET cost_micro = cost_micro + 1000000 WHERE dim = 'key'", NULL, 0, &err) > 0);
    static const struct { const char *q; bool rollup; } paths[] = {
        {"by=key&bucket=day", true}, {"by=key&bucket=none&key=team-a", true}, {"bucket=hour&key=team-b", true},
        {"by=key&bucket=day&route=chat", false}, {"by=key,model&bucket=none", false}, {"by=route&bucket=day", false},
    };
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        usage_result a, b;
        CHECK(dashq_parse_spend(&f, paths[i].q, &err) == 0);
        CHECK(dashq_spend(db, &f, &a, &err) == 0);
        CHECK(usage_query(db, &f, &b, &err) == 0);
        CHECK_MSG((a.total.cost_micro != b.total.cost_micro) == paths[i].rollup, "%s", paths[i].q);
        usage_result_free(&a);
        usage_result_free(&b);
    }
    ledger_db_close(db);
}

/* The request ids of a /admin/requests answer, in order, joined by ','. */
static void list_ids(ledger_db *db, const char *query, char *out, size_t cap, char *next, size_t next_cap) {
    dashq_filter f;
    dashq_filter_init(&f);
    sg_error err;
    out[0] = 0;
    if (next) next[0] = 0;
    CHECK_MSG(dashq_parse_requests(&f, query, &err) == 0, "%s: %s", query, err.msg);
    sg_buf b;
    sg_buf_init(&b);
    CHECK_MSG(dashq_requests(db, &f, &b, &err) == 0, "%s: %s", query, err.msg);
    json_t *doc = json_loadb(b.data ? b.data : "", b.len, 0, NULL);
    CHECK(doc != NULL);
    size_t i, o = 0;
    json_t *row;
    json_array_foreach(json_object_get(doc, "data"), i, row) {
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? "," : "", json_string_value(json_object_get(row, "request_id")));
        if (o >= cap) break;
    }
    const char *nb = json_string_value(json_object_get(doc, "next_before"));
    if (next && nb) snprintf(next, next_cap, "%s", nb);
    json_decref(doc);
    sg_buf_free(&b);
}

static void test_request_list(void) {
    ledger_db *db = open_db("list");
    if (!db) return;
    insert(db, 0, 60);
    char ids[4096], next[200];
    /* hour 0 holds records 0 and 50: the newest first (record 50 is later in the hour) */
    list_ids(db, "from=2025-12-01T00:00:00Z&to=2025-12-01T01:00:00Z", ids, sizeof ids, NULL, 0);
    CHECK_EQ_STR(ids, "req-000050,req-000000");
    list_ids(db, "q=00005&limit=20", ids, sizeof ids, NULL, 0);
    /* newest first: record i is at hour i % 50, so 5 comes between 55 and 54 */
    CHECK_EQ_STR(ids, "req-000059,req-000058,req-000057,req-000056,req-000055,req-000005,req-000054,req-000053,req-000052,req-000051,req-000050");
    list_ids(db, "q=%25", ids, sizeof ids, NULL, 0);   /* % is a character here, not a wildcard */
    CHECK_EQ_STR(ids, "");
    list_ids(db, "status=error&limit=100", ids, sizeof ids, NULL, 0);   /* i % 11 == 0: 0, 11, 22, 33, 44, 55 */
    CHECK_EQ_STR(ids, "req-000044,req-000033,req-000022,req-000011,req-000055,req-000000");
    list_ids(db, "status=502&key=team-a&limit=100", ids, sizeof ids, NULL, 0);   /* and i % 3 == 0 */
    CHECK_EQ_STR(ids, "req-000033,req-000000");
    list_ids(db, "q=retryable&route=code&limit=100", ids, sizeof ids, NULL, 0);   /* error text; i % 3 == 1 */
    CHECK_EQ_STR(ids, "req-000022,req-000055");
    list_ids(db, "model=small&limit=500", ids, sizeof ids, NULL, 0);
    CHECK_EQ_INT(strlen(ids), 30 * 10 + 29);
    /* paging by 7: every record once, in (time, id) order newest first */
    char seen[61] = {0}, q[300];
    int pages = 0, total = 0;
    int64_t last_t = INT64_MAX;
    next[0] = 0;
    do {
        snprintf(q, sizeof q, "limit=7%s%s", *next ? "&before=" : "", next);
        list_ids(db, q, ids, sizeof ids, next, sizeof next);
        for (char *s = ids; *s;) {
            int i = atoi(s + 4);
            CHECK(i >= 0 && i < 60 && !seen[i]);
            if (i >= 0 && i < 60) seen[i] = 1;
            int64_t t = T0 + (int64_t)(i % 50) * 3600000 + (i * 7919) % 3600000;
            CHECK(t <= last_t);
            last_t = t;
            total++;
            s = strchr(s, ',') ? strchr(s, ',') + 1 : s + strlen(s);
        }
        pages++;
    } while (*next && pages < 20);
    CHECK_EQ_INT(total, 60);
    CHECK_EQ_INT(pages, 9);
    ledger_db_close(db);
}

static void test_trace(void) {
    ledger_db *db = open_db("trace");
    if (!db) return;
    insert(db, 0, 20);
    sg_buf b;
    sg_buf_init(&b);
    bool found = false;
    sg_error err;
    CHECK_MSG(dashq_request(db, "req-000010", &found, &b, &err) == 0, "%s", err.msg);   /* 10 % 7 == 3: a fallback */
    CHECK(found);
    json_t *doc = json_loadb(b.data, b.len, 0, NULL);
    CHECK(doc != NULL);
    json_t *att = json_object_get(doc, "attempts");
    CHECK_EQ_INT(json_array_size(att), 2);
    json_t *a0 = json_array_get(att, 0), *a1 = json_array_get(att, 1);
    CHECK_EQ_STR(json_string_value(json_object_get(a0, "provider")), "flaky");
    CHECK_EQ_STR(json_string_value(json_object_get(a0, "next_reason")), "retryable");
    CHECK_EQ_INT(json_integer_value(json_object_get(a0, "start_ms")), 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(a1, "start_ms")), 20);   /* after its backoff */
    CHECK_EQ_INT(json_integer_value(json_object_get(a0, "queue_ms")), 3);
    CHECK_EQ_INT(json_integer_value(json_object_get(a0, "connect_ms")), 4);
    CHECK_EQ_INT(json_integer_value(json_object_get(a0, "ttft_ms")), 11);
    CHECK_EQ_INT(json_integer_value(json_object_get(a0, "latency_ms")), 12);
    CHECK(json_is_null(json_object_get(a0, "input_tokens")) && json_is_null(json_object_get(a0, "output_tokens")));
    CHECK_EQ_INT(json_integer_value(json_object_get(a0, "cost_micro")), 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(a1, "connect_ms")), 0);   /* a reused connection */
    CHECK_EQ_INT(json_integer_value(json_object_get(a1, "ttft_ms")), 9);
    CHECK_EQ_INT(json_integer_value(json_object_get(a1, "input_tokens")), 10);   /* 10 + 10 % 5 */
    CHECK_EQ_INT(json_integer_value(json_object_get(a1, "output_tokens")), 23);  /* 20 + 10 % 7 */
    CHECK_EQ_INT(json_integer_value(json_object_get(a1, "cost_micro")), 110);
    CHECK(json_is_null(json_object_get(a1, "next_reason")));
    CHECK_EQ_STR(json_string_value(json_object_get(a1, "provider")), "anthropic");   /* 10 % 3 == 1 */
    CHECK_EQ_INT(json_integer_value(json_object_get(doc, "cost_micro")), 110);
    CHECK_EQ_STR(json_string_value(json_object_get(doc, "key")), "team-b");
    CHECK(json_is_null(json_object_get(doc, "payload")));
    json_decref(doc);
    /* attempts stored before schema 5 (no start, timings, tokens, cost): placed one after
     * the other, the rest null */
    ledger_attempt old[2] = {
        {.provider = "a", .model = "m", .status = 503, .error = "retryable", .latency_ms = 40, .start_ms = -1, .queue_ms = -1,
         .connect_ms = -1, .ttft_ms = -1, .input_tokens = -1, .output_tokens = -1, .cost_micro = -1},
        {.provider = "b", .model = "m", .status = 200, .latency_ms = 25, .start_ms = -1, .queue_ms = -1, .connect_ms = -1,
         .ttft_ms = -1, .input_tokens = -1, .output_tokens = -1, .cost_micro = -1},
    };
    ledger_record ro = {.request_id = "old-1", .time_ms = T0, .status = 200, .cost_micro = -1, .latency_ms = 70,
                        .ttft_ms = -1, .attempts = old, .n_attempts = 2};
    gw_usage_init(&ro.usage);
    CHECK_MSG(ledger_db_insert(db, &ro, 1, &err) == 1, "%s", err.msg);
    b.len = 0;
    CHECK(dashq_request(db, "old-1", &found, &b, &err) == 0 && found);
    doc = json_loadb(b.data, b.len, 0, NULL);
    att = json_object_get(doc, "attempts");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(att, 0), "start_ms")), 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(att, 1), "start_ms")), 40);
    CHECK(json_is_null(json_object_get(json_array_get(att, 1), "ttft_ms")));
    CHECK(json_is_null(json_object_get(json_array_get(att, 1), "cost_micro")));
    json_decref(doc);
    /* a captured payload shows in the trace; stored once; purged by age */
    CHECK(dashq_store_payload(db, "req-000010", T0 + 5, "{\"messages\":[]}", "hello", &err) == 0);
    CHECK(dashq_store_payload(db, "req-000010", T0 + 9, "again", "again", &err) == 0);
    CHECK(dashq_store_payload(db, "req-000011", T0 + 100, "p", "a", &err) == 0);
    b.len = 0;
    CHECK(dashq_request(db, "req-000010", &found, &b, &err) == 0 && found);
    doc = json_loadb(b.data, b.len, 0, NULL);
    json_t *pl = json_object_get(doc, "payload");
    CHECK_EQ_STR(json_string_value(json_object_get(pl, "request")), "{\"messages\":[]}");
    CHECK_EQ_STR(json_string_value(json_object_get(pl, "response")), "hello");
    CHECK_EQ_INT(json_integer_value(json_object_get(pl, "captured_ms")), T0 + 5);
    json_decref(doc);
    int64_t deleted = -1;
    CHECK(dashq_purge_payloads(db, T0 + 50, &deleted, &err) == 0);
    CHECK_EQ_INT(deleted, 1);
    b.len = 0;
    CHECK(dashq_request(db, "req-000010", &found, &b, &err) == 0 && found);
    doc = json_loadb(b.data, b.len, 0, NULL);
    CHECK(json_is_null(json_object_get(doc, "payload")));
    json_decref(doc);
    b.len = 0;
    CHECK(dashq_request(db, "req-000011", &found, &b, &err) == 0 && found);
    doc = json_loadb(b.data, b.len, 0, NULL);
    CHECK(json_is_object(json_object_get(doc, "payload")));
    json_decref(doc);
    b.len = 0;
    CHECK(dashq_request(db, "req-999999", &found, &b, &err) == 0);
    CHECK(!found);
    CHECK_EQ_INT(b.len, 0);
    sg_buf_free(&b);
    ledger_db_close(db);
}

static void test_params(void) {
    dashq_filter f;
    usage_filter u;
    sg_error err;
    static const char *const bad_requests[] = {"status=abc", "status=99", "limit=0", "limit=501", "limit=x", "before=123",
                                               "before=x.y", "nope=1", "from=yesterday", "q=%zz"};
    for (size_t i = 0; i < sizeof bad_requests / sizeof *bad_requests; i++) {
        dashq_filter_init(&f);
        CHECK_MSG(dashq_parse_requests(&f, bad_requests[i], &err) != 0, "%s accepted", bad_requests[i]);
    }
    dashq_filter_init(&f);
    CHECK(dashq_parse_requests(&f, "q=a+b&status=ok&limit=500&before=1764547200000.req-1", &err) == 0);
    CHECK_EQ_STR(f.q, "a b");
    CHECK_EQ_INT(f.status, -2);
    CHECK_EQ_INT(f.limit, 500);
    CHECK_EQ_INT(f.before_ms, T0);
    CHECK_EQ_STR(f.before_id, "req-1");
    static const char *const bad_spend[] = {"by=hour", "by=day", "bucket=week", "group_by=key", "by=colour", "from=x"};
    for (size_t i = 0; i < sizeof bad_spend / sizeof *bad_spend; i++)
        CHECK_MSG(dashq_parse_spend(&u, bad_spend[i], &err) != 0, "%s accepted", bad_spend[i]);
    CHECK(dashq_parse_spend(&u, "by=key,model&bucket=hour", &err) == 0);
    CHECK_EQ_INT(u.n_group, 3);
    CHECK_EQ_INT(u.group[0], USAGE_HOUR);
    CHECK_EQ_INT(u.group[1], USAGE_KEY);
    CHECK_EQ_INT(u.group[2], USAGE_MODEL);
    CHECK(dashq_parse_spend(&u, "", &err) == 0);   /* default: by day */
    CHECK_EQ_INT(u.n_group, 1);
    CHECK_EQ_INT(u.group[0], USAGE_DAY);
    CHECK(dashq_parse_spend(&u, "bucket=none", &err) == 0);
    CHECK_EQ_INT(u.n_group, 0);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_rollup_matches_usage);
    RUN(test_request_list);
    RUN(test_trace);
    RUN(test_params);
    return tu_finish(argv[0]);
}
