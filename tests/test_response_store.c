/* test_response_store.c: the stored responses in the ledger's database (SQLite here;
 * PostgreSQL in tests/e2e/responses_shared.sh): put / get / delete with ownership and
 * admin, replacement, the count, byte and age bounds enforced in the database, two
 * connections to one file seeing each other's responses (two instances), the schema
 * migration; then the asynchronous front (response_store.h) on a real loop: a read after
 * a write sees it, reads of what does not exist, an unreachable database answers
 * RSTORE_UNAVAILABLE without blocking the loop, and back to memory. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/buf.h"
#include "gateway/ledger_db.h"
#include "gateway/loop.h"
#include "gateway/response_store.h"
#include "gateway/response_store_db.h"
#include "testutil.h"

static ledger_db *open_db(const char *path) {
    sg_error err;
    ledger_db *db = ledger_db_open(GW_LEDGER_SQLITE, path, false, &err);
    CHECK_MSG(db != NULL, "%s", err.msg);
    return db;
}

static int put(ledger_db *db, const char *id, const char *owner, const char *resp, const rstore_limits *l, int64_t now_ms) {
    rstore_db_record r = {id, owner, resp, "[{\"role\":\"user\",\"content\":\"hi\"}]", "[]"};
    sg_error err;
    int rc = rstore_db_put(db, &r, l, now_ms, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    return rc;
}

static int get(ledger_db *db, const char *id, const char *owner, bool admin, int64_t max_age_s, int64_t now_ms) {
    rstore_who who = {owner, admin};
    rstore_entry e;
    sg_error err;
    int rc = rstore_db_get(db, id, &who, max_age_s, now_ms, &e, &err);
    if (rc == 0) CHECK(e.response && e.messages && e.input_items && e.created > 0 && e.created <= now_ms / 1000);
    rstore_entry_free(&e);
    return rc;
}

static int64_t count(ledger_db *db, int64_t *bytes) {
    int64_t c = -1, b = -1;
    sg_error err;
    CHECK(rstore_db_totals(db, &c, &b, &err) == 0);
    if (bytes) *bytes = b;
    return c;
}

static void test_db_calls(void) {
    const char *path = tu_path("%s/ledger.db", tu_tmpdir());
    ledger_db *a = open_db(path), *b = open_db(path);   /* two instances on one file */
    if (!a || !b) return;
    int v = 0;
    sg_error err;
    CHECK(ledger_db_schema_version(a, &v, &err) == 0);
    CHECK_EQ_INT(v, LEDGER_SCHEMA_VERSION);
    CHECK(LEDGER_SCHEMA_VERSION >= 2);
    rstore_limits l = {100, 1 << 20, 3600};
    int64_t t = 1800000000000ll;
    put(a, "resp_1", "team-a", "{\"id\":\"resp_1\"}", &l, t);
    CHECK_EQ_INT(get(b, "resp_1", "team-a", false, 3600, t + 1), 0);    /* the other instance sees it */
    CHECK_EQ_INT(get(b, "resp_1", "team-b", false, 3600, t + 1), 1);    /* another key does not */
    CHECK_EQ_INT(get(b, "resp_1", "team-b", true, 3600, t + 1), 0);     /* an admin does */
    CHECK_EQ_INT(get(b, "resp_1", "", false, 3600, t + 1), 1);
    CHECK_EQ_INT(get(b, "resp_nope", "team-a", false, 3600, t + 1), 1);
    rstore_who other = {"team-b", false}, owner = {"team-a", false};
    CHECK_EQ_INT(rstore_db_delete(b, "resp_1", &other, 3600, t + 2, &err), 1);
    CHECK_EQ_INT(rstore_db_delete(b, "resp_1", &owner, 3600, t + 2, &err), 0);
    CHECK_EQ_INT(get(a, "resp_1", "team-a", false, 3600, t + 3), 1);    /* deleted through b: gone on a */
    CHECK_EQ_INT(rstore_db_delete(a, "resp_1", &owner, 3600, t + 3, &err), 1);

    /* replacing an id keeps one row with the new text */
    put(a, "resp_r", "k", "{\"v\":1}", &l, t);
    put(a, "resp_r", "k", "{\"v\":2}", &l, t + 5);
    CHECK_EQ_INT(count(a, NULL), 1);
    rstore_who k = {"k", false};
    rstore_entry e;
    CHECK_EQ_INT(rstore_db_get(b, "resp_r", &k, 3600, t + 6, &e, &err), 0);
    CHECK_EQ_STR(e.response, "{\"v\":2}");
    CHECK_EQ_STR(e.input_items, "[]");
    CHECK_EQ_INT(e.created, (t + 5) / 1000);
    rstore_entry_free(&e);

    /* the count bound: the oldest go */
    rstore_limits l3 = {3, 1 << 20, 3600};
    for (int i = 0; i < 6; i++) {
        char id[32];
        snprintf(id, sizeof id, "resp_c%d", i);
        put(a, id, "k", "{}", &l3, t + 100 + i);
    }
    CHECK_EQ_INT(count(a, NULL), 3);
    CHECK_EQ_INT(get(b, "resp_c2", "k", false, 3600, t + 200), 1);
    CHECK_EQ_INT(get(b, "resp_c3", "k", false, 3600, t + 200), 0);
    CHECK_EQ_INT(get(b, "resp_c5", "k", false, 3600, t + 200), 0);

    /* the byte bound: newest first until the total would pass it; one too big alone is not kept */
    char big[1001];
    memset(big, 'x', 1000);
    big[1000] = 0;
    sg_buf resp;
    sg_buf_init(&resp);
    sg_buf_printf(&resp, "{\"x\":\"%s\"}", big);
    rstore_limits lb = {100, 2600, 3600};
    for (int i = 0; i < 4; i++) {
        char id[32];
        snprintf(id, sizeof id, "resp_b%d", i);
        put(a, id, "k", resp.data, &lb, t + 300 + i);
    }
    int64_t bytes = 0;
    CHECK_EQ_INT(count(a, &bytes), 2);   /* about 1 050 bytes each */
    CHECK(bytes <= 2600 && bytes > 2000);
    CHECK_EQ_INT(get(b, "resp_b3", "k", false, 3600, t + 400), 0);
    CHECK_EQ_INT(get(b, "resp_b1", "k", false, 3600, t + 400), 1);
    rstore_limits tiny = {100, 500, 3600};
    put(a, "resp_huge", "k", resp.data, &tiny, t + 500);
    CHECK_EQ_INT(get(b, "resp_huge", "k", false, 3600, t + 501), 1);
    sg_buf_free(&resp);

    /* the age bound: never returned once expired, deleted by the next write */
    rstore_limits la = {100, 1 << 20, 10};
    put(a, "resp_old", "k", "{}", &la, t + 1000);
    CHECK_EQ_INT(get(b, "resp_old", "k", false, 10, t + 1000 + 9999), 0);
    CHECK_EQ_INT(get(b, "resp_old", "k", false, 10, t + 1000 + 10000), 1);
    rstore_who kk = {"k", false};
    CHECK_EQ_INT(rstore_db_delete(b, "resp_old", &kk, 10, t + 1000 + 10000, &err), 1);   /* expired: not found */
    put(a, "resp_new", "k", "{}", &la, t + 1000 + 20000);
    CHECK_EQ_INT(count(a, NULL), 1);   /* everything older than 10 s went */

    /* max_count 0: nothing stored */
    rstore_limits none = {0, 1 << 20, 3600};
    put(a, "resp_z", "k", "{}", &none, t + 30000);
    CHECK_EQ_INT(count(a, NULL), 0);
    ledger_db_close(a);
    ledger_db_close(b);
}

/* ---- the asynchronous front ---- */

typedef struct got {
    int calls;
    rstore_status status;
    char response[256];
    bool found;
} got;

static void on_fetch(loop *l, void *arg, rstore_status st, rstore_entry *en) {
    (void)l;
    got *g = arg;
    g->calls++;
    g->status = st;
    g->found = en && en[0].response;
    if (g->found) snprintf(g->response, sizeof g->response, "%s", en[0].response);
}

static void wait_calls(loop *l, got *g, int n) {
    sg_error err;
    for (int i = 0; i < 500 && g->calls < n; i++) loop_run_once(l, 20, &err);
    CHECK_EQ_INT(g->calls, n);
}

static void test_async(void) {
    sg_error err;
    loop *l = loop_new(&err);
    CHECK(l != NULL);
    if (!l) return;
    rstore_limits saved = rstore_get_limits();
    rstore_limits lim = {100, 1 << 20, 3600};
    rstore_configure(&lim);
    const char *path = tu_path("%s/async.db", tu_tmpdir());
    rstore_use_db(GW_LEDGER_SQLITE, path);
    CHECK(rstore_uses_db());
    rstore_put("resp_a1", "team-a", (int64_t)time(NULL), "{\"id\":\"resp_a1\"}", "[]", "[]");
    CHECK_EQ_INT(rstore_count(), 0);   /* not in memory */
    rstore_who who = {"team-a", false};
    const char *ids[2] = {"resp_a1", "resp_none"};
    got g = {0};
    rstore_fetch_async(l, ids, 1, &who, on_fetch, &g);
    CHECK_EQ_INT(g.calls, 0);   /* done comes later, on the loop */
    wait_calls(l, &g, 1);
    CHECK_EQ_INT(g.status, RSTORE_OK);
    CHECK(g.found);
    CHECK_EQ_STR(g.response, "{\"id\":\"resp_a1\"}");

    /* the parse's synchronous read sees only what a fetch lent it */
    rstore_entry e;
    CHECK_EQ_INT(rstore_get("resp_a1", &who, (int64_t)time(NULL), &e), -1);
    rstore_entry lent[1] = {{.response = "{}", .messages = "[]", .input_items = "[]", .created = 1}};
    rstore_lookaside(ids, lent, 1);
    CHECK_EQ_INT(rstore_get("resp_a1", &who, (int64_t)time(NULL), &e), 0);
    rstore_entry_free(&e);
    rstore_lookaside(NULL, NULL, 0);
    CHECK_EQ_INT(rstore_get("resp_a1", &who, (int64_t)time(NULL), &e), -1);

    got n = {0};
    rstore_fetch_async(l, ids + 1, 1, &who, on_fetch, &n);
    wait_calls(l, &n, 1);
    CHECK_EQ_INT(n.status, RSTORE_OK);
    CHECK(!n.found);

    got d = {0};
    rstore_who other = {"team-b", false};
    rstore_delete_async(l, "resp_a1", &other, on_fetch, &d);
    wait_calls(l, &d, 1);
    CHECK_EQ_INT(d.status, RSTORE_NOT_FOUND);
    rstore_delete_async(l, "resp_a1", &who, on_fetch, &d);
    wait_calls(l, &d, 2);
    CHECK_EQ_INT(d.status, RSTORE_OK);

    /* an unreachable database: unavailable, quickly, and the loop keeps turning */
    rstore_use_db(GW_LEDGER_SQLITE, tu_path("%s/no/such/folder/x.db", tu_tmpdir()));
    rstore_put("resp_lost", "team-a", (int64_t)time(NULL), "{}", "[]", "[]");   /* dropped, with a warning */
    got u = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rstore_fetch_async(l, ids, 1, &who, on_fetch, &u);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000);   /* submitting never waits */
    wait_calls(l, &u, 1);
    CHECK_EQ_INT(u.status, RSTORE_UNAVAILABLE);
    rstore_delete_async(l, "resp_a1", &who, on_fetch, &u);
    wait_calls(l, &u, 2);
    CHECK_EQ_INT(u.status, RSTORE_UNAVAILABLE);

    /* back to memory: calls complete at once (the worker drains without being waited for) */
    rstore_use_memory();
    CHECK(!rstore_uses_db());
    got m = {0};
    rstore_fetch_async(l, ids, 1, &who, on_fetch, &m);
    CHECK_EQ_INT(m.calls, 1);
    CHECK_EQ_INT(m.status, RSTORE_OK);
    CHECK(!m.found);
    /* and to the database again: the first worker is joined, a new one answers */
    rstore_use_db(GW_LEDGER_SQLITE, path);
    CHECK(rstore_uses_db());
    got again = {0};
    rstore_fetch_async(l, ids, 1, &who, on_fetch, &again);
    wait_calls(l, &again, 1);
    CHECK_EQ_INT(again.status, RSTORE_OK);
    CHECK(!again.found);   /* deleted above */
    rstore_shutdown();
    CHECK(!rstore_uses_db());
    rstore_configure(&saved);
    loop_free(l);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_db_calls);
    RUN(test_async);
    return tu_finish(argv[0]);
}
