/* test_keystore.c: gateway keys made at run time (keystore.h): the secrets and their
 * SHA-256, the admin bodies (valid ones normalized, bad ones refused with a reason), the
 * SQL on SQLite (create, get, list, patch, revoke, ids never reused, the signature
 * changing on each write, two connections to one file), then the whole store on a real
 * loop: a key created through keystore_admin is found by its hash, a file key's id is
 * refused, a held key outlives a rebuild and its revocation, an expired key is not found,
 * and the database rows never hold a secret. PostgreSQL and two processes:
 * tests/e2e/keys_shared.sh. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "gateway/keystore.h"
#include "gateway/ledger_db.h"
#include "gateway/loop.h"
#include "testutil.h"

static gw_config *load_cfg(void) {
    const char *path = tu_path("%s/keys.yaml", tu_tmpdir());
    const char *text = "listen: 127.0.0.1:1\n"
                       "providers:\n  openai: {base_url: \"http://127.0.0.1:9/v1\", api_key: sk-x}\n"
                       "routes:\n  - {name: chat, targets: [openai/m]}\n  - {name: other, targets: [openai/m]}\n"
                       "keys:\n  - {id: ops, key: sk-file-admin-000001, role: admin}\n";
    tu_write(path, text, strlen(text));
    gw_config *c = NULL;
    sg_error err;
    CHECK_MSG(config_load(&c, path, NULL, &err) == 0, "%s", err.msg);
    return c;
}

static void test_secret(void) {
    char s1[KEYSTORE_SECRET_LEN + 1], s2[KEYSTORE_SECRET_LEN + 1], h1[65], h2[65];
    CHECK(keystore_new_secret(s1, h1) == 0 && keystore_new_secret(s2, h2) == 0);
    CHECK_EQ_INT(strlen(s1), KEYSTORE_SECRET_LEN);
    CHECK(!strncmp(s1, "sgk-", 4) && strspn(s1 + 4, "0123456789abcdef") == 48);
    CHECK(strcmp(s1, s2) && strcmp(h1, h2));
    uint8_t h[GW_SHA256_LEN];
    CHECK(config_key_hash(s1, strlen(s1), h) == 0);
    char hex[65];
    for (int i = 0; i < GW_SHA256_LEN; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    CHECK_EQ_STR(hex, h1);
    /* SHA-256("abc"), the FIPS 180-2 example */
    CHECK(config_key_hash("abc", 3, h) == 0);
    CHECK(h[0] == 0xba && h[1] == 0x78 && h[31] == 0xad);
}

static void test_parse(void) {
    gw_config *c = load_cfg();
    if (!c) return;
    json_t *spec;
    char *id;
    sg_error err;
    const char *good = "{\"id\":\"team-x\",\"role\":\"user\",\"routes\":[\"chat\"],\"limits\":{\"rpm\":10,\"tpm\":null},"
                       "\"budget\":{\"daily_usd\":2.5},\"alert_percent\":50,\"expires_at\":1900000000,\"description\":\"d\"}";
    CHECK_MSG(keystore_parse_body(good, strlen(good), c, true, &spec, &id, &err) == 0, "%s", err.msg);
    if (spec) {
        CHECK_EQ_STR(id, "team-x");
        CHECK(!json_object_get(spec, "id"));   /* the id is its own column */
        CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(spec, "limits"), "rpm")), 10);
        CHECK(json_is_null(json_object_get(json_object_get(spec, "limits"), "tpm")));
        CHECK(json_real_value(json_object_get(json_object_get(spec, "budget"), "daily_usd")) == 2.5);
        CHECK_EQ_INT(json_integer_value(json_object_get(spec, "alert_percent")), 50);
    }
    json_decref(spec);
    free(id);
    const char *patch = "{\"limits\":{\"rpm\":2},\"routes\":null}";
    CHECK(keystore_parse_body(patch, strlen(patch), c, false, &spec, NULL, &err) == 0);
    CHECK(spec && json_is_null(json_object_get(spec, "routes")) && json_object_size(spec) == 2);
    json_decref(spec);

    struct { const char *body; bool create; const char *why; } bad[] = {
        {"", true, "not valid JSON"},
        {"nope{", true, "not valid JSON"},
        {"[1,2]", true, "JSON object"},
        {"{}", true, "missing \"id\""},
        {"{\"id\":\"\"}", true, "\"id\""},
        {"{\"id\":\"a/b\"}", true, "\"id\""},
        {"{\"id\":\"-lead\"}", true, "\"id\""},
        {"{\"id\":7}", true, "\"id\""},
        {"{\"id\":\"x\",\"id\":\"y\"}", true, "not valid JSON"},
        {"{\"id\":\"x\",\"key\":\"mine\"}", true, "unknown field \"key\""},
        {"{\"id\":\"x\",\"role\":\"root\"}", true, "\"role\""},
        {"{\"id\":\"x\",\"routes\":\"chat\"}", true, "\"routes\""},
        {"{\"id\":\"x\",\"routes\":[\"nope\"]}", true, "unknown route \"nope\""},
        {"{\"id\":\"x\",\"routes\":[1]}", true, "routes[0]"},
        {"{\"id\":\"x\",\"limits\":{\"rpm\":-1}}", true, "limits.rpm"},
        {"{\"id\":\"x\",\"limits\":{\"rpm\":1.5}}", true, "limits.rpm"},
        {"{\"id\":\"x\",\"limits\":{\"rps\":1}}", true, "limits.rps"},
        {"{\"id\":\"x\",\"limits\":5}", true, "\"limits\" must be an object"},
        {"{\"id\":\"x\",\"budget\":{\"daily_usd\":\"5\"}}", true, "budget.daily_usd"},
        {"{\"id\":\"x\",\"budget\":{\"total_usd\":1e12}}", true, "budget.total_usd"},
        {"{\"id\":\"x\",\"alert_percent\":101}", true, "alert_percent"},
        {"{\"id\":\"x\",\"expires_at\":-5}", true, "expires_at"},
        {"{\"id\":\"x\",\"description\":5}", true, "description"},
        {"{\"id\":\"x\"}", false, "cannot change"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        id = NULL;
        spec = NULL;
        int rc = keystore_parse_body(bad[i].body, strlen(bad[i].body), c, bad[i].create, &spec,
                                     bad[i].create ? &id : NULL, &err);
        CHECK_MSG(rc == -1 && !spec && !id, "accepted: %s", bad[i].body);
        if (rc == -1) CHECK_MSG(strstr(err.msg, bad[i].why) != NULL, "%s: %s", bad[i].body, err.msg);
    }
    config_unref(c);
}

static void test_db(void) {
    const char *path = tu_path("%s/keys.db", tu_tmpdir());
    sg_error err;
    ledger_db *a = ledger_db_open(GW_LEDGER_SQLITE, path, false, &err), *b = ledger_db_open(GW_LEDGER_SQLITE, path, false, &err);
    CHECK_MSG(a && b, "%s", err.msg);
    if (!a || !b) { ledger_db_close(a); ledger_db_close(b); return; }
    int v = 0;
    CHECK(ledger_db_schema_version(a, &v, &err) == 0 && v == LEDGER_SCHEMA_VERSION);
    char sig0[128], sig1[128], sig2[128], sig3[128];
    CHECK(keystore_db_signature(b, sig0, sizeof sig0, &err) == 0);
    char *body = NULL;
    json_t *spec = json_pack("{s:[s],s:{s:i}}", "routes", "chat", "limits", "rpm", 5);
    int64_t t = 1800000000000ll;
    char sha[65];
    memset(sha, 'a', 64);
    sha[64] = 0;
    CHECK_EQ_INT(keystore_db_create(a, "k1", sha, spec, t, &body, &err), 0);
    CHECK(keystore_db_signature(b, sig1, sizeof sig1, &err) == 0 && strcmp(sig0, sig1));
    CHECK_EQ_INT(keystore_db_create(b, "k1", sha, spec, t, &body, &err), 409);   /* taken */
    CHECK(body && strstr(body, "key_exists"));
    free(body);
    body = NULL;
    CHECK_EQ_INT(keystore_db_get(b, "k1", &body, &err), 200);
    json_t *o = body ? json_loads(body, 0, NULL) : NULL;
    CHECK(o && !strcmp(json_string_value(json_object_get(o, "id")), "k1") && !json_object_get(o, "sha256") &&
          json_integer_value(json_object_get(json_object_get(o, "limits"), "rpm")) == 5 &&
          json_integer_value(json_object_get(o, "created_at")) == t / 1000);
    CHECK(body && !strstr(body, sha));   /* the hash is not shown either */
    json_decref(o);
    free(body);
    body = NULL;
    /* a patch in the same millisecond still changes the signature */
    json_t *patch = json_pack("{s:{s:i}}", "limits", "rpm", 2);
    CHECK_EQ_INT(keystore_db_patch(b, "k1", patch, t, &body, &err), 200);
    CHECK(body && strstr(body, "\"rpm\":2") && strstr(body, "\"routes\":[\"chat\"]"));
    free(body);
    body = NULL;
    CHECK(keystore_db_signature(a, sig2, sizeof sig2, &err) == 0 && strcmp(sig1, sig2));
    CHECK_EQ_INT(keystore_db_patch(b, "nope", patch, t, &body, &err), 404);
    free(body);
    body = NULL;
    CHECK_EQ_INT(keystore_db_list(a, &body, &err), 200);
    CHECK(body && strstr(body, "\"id\":\"k1\""));
    free(body);
    body = NULL;
    json_t *rows = keystore_db_load(a, &err);
    CHECK(rows && json_array_size(rows) == 1 && !strcmp(json_string_value(json_object_get(json_array_get(rows, 0), "sha256")), sha));
    json_decref(rows);
    CHECK_EQ_INT(keystore_db_revoke(a, "k1", t + 5, &body, &err), 200);
    CHECK(body && strstr(body, "\"revoked_at\":1800000000"));
    free(body);
    body = NULL;
    CHECK(keystore_db_signature(b, sig3, sizeof sig3, &err) == 0 && strcmp(sig2, sig3));
    CHECK_EQ_INT(keystore_db_revoke(a, "k1", t + 6, &body, &err), 404);
    free(body);
    body = NULL;
    CHECK_EQ_INT(keystore_db_patch(a, "k1", patch, t + 7, &body, &err), 404);   /* revoked: no changes */
    free(body);
    body = NULL;
    rows = keystore_db_load(b, &err);
    CHECK(rows && json_array_size(rows) == 0);
    json_decref(rows);
    CHECK_EQ_INT(keystore_db_create(a, "k1", sha, spec, t + 8, &body, &err), 409);   /* never reused */
    free(body);
    json_decref(spec);
    json_decref(patch);
    ledger_db_close(a);
    ledger_db_close(b);
}

/* ---- the whole store on a loop ---- */

typedef struct answer {
    int status;
    char *body;
    bool done;
} answer;

static void on_done(void *arg, int status, const char *body, size_t len) {
    answer *a = arg;
    a->status = status;
    a->body = sg_xstrndup(body, len);
    a->done = true;
}

static answer call(loop *l, keystore *ks, const gw_config *c, const char *m, const char *id, const char *body) {
    answer a = {0};
    keystore_admin(ks, c, m, id, body, body ? strlen(body) : 0, on_done, &a);
    sg_error err;
    for (int i = 0; i < 500 && !a.done; i++) loop_run_once(l, 10, &err);
    CHECK(a.done);
    return a;
}

static const gw_key *find_secret(loop *l, keystore *ks, const char *secret, bool want, int64_t now_s) {
    uint8_t h[GW_SHA256_LEN];
    config_key_hash(secret, strlen(secret), h);
    sg_error err;
    const gw_key *k = NULL;
    /* the poll: within about KEYSTORE_POLL_MS; waited for by the clock (up to 5 s), since
     * an iteration of the loop returns early whenever an event is due */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        k = keystore_find_hash(ks, h, now_s);
        if ((k != NULL) == want) break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > 5000) break;
        loop_run_once(l, 10, &err);
    }
    return k;
}

static void test_store(void) {
    gw_config *c = load_cfg();
    sg_error err;
    loop *l = loop_new(&err);
    if (!c || !l) { config_unref(c); if (l) loop_free(l); return; }
    const char *path = tu_path("%s/store.db", tu_tmpdir());
    keystore *ks = keystore_new(l);
    keystore_use_db(ks, GW_LEDGER_SQLITE, path);
    keystore_rebuild(ks, c);
    answer a = call(l, ks, c, "POST", NULL, "{\"id\":\"dyn\",\"routes\":[\"chat\"],\"limits\":{\"rpm\":3},\"budget\":{\"daily_usd\":1}}");
    CHECK_EQ_INT(a.status, 201);
    json_t *o = a.body ? json_loads(a.body, 0, NULL) : NULL;
    const char *secret = json_string_value(json_object_get(o, "key"));
    CHECK(secret && !strncmp(secret, "sgk-", 4));
    char sec[KEYSTORE_SECRET_LEN + 1] = "";
    if (secret) snprintf(sec, sizeof sec, "%s", secret);
    json_decref(o);
    free(a.body);
    const gw_key *k = find_secret(l, ks, sec, true, time(NULL));
    CHECK(k && !strcmp(k->id, "dyn") && k->role == GW_ROLE_USER && !k->all_routes && k->n_routes == 1 &&
          k->routes[0] == &c->routes[0] && k->limits.rpm == 3 && k->limits.tpm == -1 && k->budget.daily_usd == 1000000 &&
          k->budget.alert_percent == 80 && k->dyn);
    CHECK_EQ_INT(keystore_count(ks), 1);
    /* the database holds the hash only */
    ledger_db *db = ledger_db_open(GW_LEDGER_SQLITE, path, false, &err);
    json_t *rows = db ? keystore_db_load(db, &err) : NULL;
    char *dumped = rows ? json_dumps(rows, 0) : NULL;
    CHECK(dumped && !strstr(dumped, sec));
    free(dumped);
    json_decref(rows);
    ledger_db_close(db);
    /* a request holds it across a patch (a rebuild) and its revocation */
    keystore_hold(k);
    a = call(l, ks, c, "PATCH", "dyn", "{\"limits\":{\"rpm\":7}}");
    CHECK_EQ_INT(a.status, 200);
    free(a.body);
    const gw_key *k2 = NULL;
    for (int i = 0; i < 300; i++) {
        k2 = find_secret(l, ks, sec, true, time(NULL));
        if (k2 && k2->limits.rpm == 7) break;
        loop_run_once(l, 10, &err);
    }
    CHECK(k2 && k2->limits.rpm == 7 && k2 != k);
    CHECK(!strcmp(k->id, "dyn") && k->limits.rpm == 3);   /* the held one is intact (ASan) */
    a = call(l, ks, c, "DELETE", "dyn", NULL);
    CHECK_EQ_INT(a.status, 200);
    free(a.body);
    CHECK(find_secret(l, ks, sec, false, time(NULL)) == NULL);
    CHECK(!strcmp(k->id, "dyn"));
    keystore_release(k);
    /* a file key's id; bad input answered at once */
    a = call(l, ks, c, "POST", NULL, "{\"id\":\"ops\"}");
    CHECK_EQ_INT(a.status, 409);
    free(a.body);
    a = call(l, ks, c, "PATCH", "ops", "{}");
    CHECK_EQ_INT(a.status, 409);
    free(a.body);
    a = call(l, ks, c, "GET", "ops", NULL);
    CHECK(a.status == 200 && strstr(a.body, "\"source\":\"config\"") && !strstr(a.body, "sk-file"));
    free(a.body);
    a = call(l, ks, c, "POST", NULL, "{\"id\":\"x\",\"routes\":[\"gone\"]}");
    CHECK(a.status == 400 && strstr(a.body, "\"error\"") && strstr(a.body, "unknown route"));
    free(a.body);
    a = call(l, ks, c, "PUT", NULL, "{}");
    CHECK_EQ_INT(a.status, 405);
    free(a.body);
    a = call(l, ks, c, "GET", "bad id", NULL);
    CHECK_EQ_INT(a.status, 404);
    free(a.body);
    /* expiry */
    a = call(l, ks, c, "POST", NULL, "{\"id\":\"soon\",\"expires_at\":2000000000}");
    o = a.body ? json_loads(a.body, 0, NULL) : NULL;
    snprintf(sec, sizeof sec, "%s", json_string_value(json_object_get(o, "key")) ? json_string_value(json_object_get(o, "key")) : "");
    json_decref(o);
    free(a.body);
    const gw_key *soon = find_secret(l, ks, sec, true, 1999999999);
    CHECK(soon != NULL);
    CHECK(find_secret(l, ks, sec, false, 2000000000) == NULL);
    /* another key's creation rebuilds the set; the unchanged key is kept, not rebuilt */
    CHECK_EQ_INT(keystore_count(ks), 1);
    a = call(l, ks, c, "POST", NULL, "{\"id\":\"later\"}");
    CHECK_EQ_INT(a.status, 201);
    free(a.body);
    for (int i = 0; i < 300 && keystore_count(ks) < 2; i++) loop_run_once(l, 10, &err);
    CHECK_EQ_INT(keystore_count(ks), 2);
    CHECK(find_secret(l, ks, sec, true, 1999999999) == soon);
    a = call(l, ks, c, "GET", NULL, NULL);
    CHECK(a.status == 200 && strstr(a.body, "\"soon\"") && !strstr(a.body, "\"dyn\"") && !strstr(a.body, sec));
    free(a.body);
    keystore_free(ks);
    loop_free(l);
    config_unref(c);
}

/* An unreachable database: admin calls answer 503 without blocking; nothing is served. */
static void test_unavailable(void) {
    gw_config *c = load_cfg();
    sg_error err;
    loop *l = loop_new(&err);
    if (!c || !l) { config_unref(c); if (l) loop_free(l); return; }
    keystore *ks = keystore_new(l);
    keystore_use_db(ks, GW_LEDGER_SQLITE, tu_path("%s/no/such/folder/x.db", tu_tmpdir()));
    keystore_rebuild(ks, c);
    answer a = call(l, ks, c, "GET", NULL, NULL);
    CHECK(a.status == 503 && a.body && strstr(a.body, "keys_unavailable"));
    free(a.body);
    CHECK_EQ_INT(keystore_count(ks), 0);
    keystore_free(ks);
    loop_free(l);
    config_unref(c);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_secret);
    RUN(test_parse);
    RUN(test_db);
    RUN(test_store);
    RUN(test_unavailable);
    return tu_finish(argv[0]);
}
