/* bench_keys.c: what a run-time gateway key (keystore.h) costs a request, and how long a
 * change takes to be served.
 *
 * 10,000 keys are written to a SQLite file (keystore_db_create, one transaction), then a
 * keystore on an event loop reads them (its first poll) and serves them. Timed:
 *   lookup     SHA-256 of the presented secret + keystore_find_hash, per request (the
 *              hash is what authentication computes for file keys too);
 *   first load from keystore_use_db to all 10,000 served;
 *   rebuild    keystore_rebuild of the 10,000 on the loop thread: after a poll that saw a
 *              change (unchanged keys are kept), and after a SIGHUP (all built again).
 * Prints p50 / p99 in microseconds, or milliseconds for the one-off steps. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "gateway/keystore.h"
#include "bench_util.h"

#define N 10000

int main(void) {
    char dir[] = "/tmp/bench-keys-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char path[256], cfgp[256];
    snprintf(path, sizeof path, "%s/keys.db", dir);
    snprintf(cfgp, sizeof cfgp, "%s/c.yaml", dir);
    FILE *f = fopen(cfgp, "w");
    if (!f) return 1;
    fputs("listen: 127.0.0.1:1\nproviders:\n  openai: {base_url: \"http://127.0.0.1:9/v1\", api_key: sk-x}\n"
          "routes:\n  - {name: chat, targets: [openai/m]}\nkeys:\n  - {id: ops, key: sk-bench-admin-0000001, role: admin}\n", f);
    fclose(f);
    sg_error err;
    gw_config *c = NULL;
    if (config_load(&c, cfgp, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    ledger_db *db = ledger_db_open(GW_LEDGER_SQLITE, path, false, &err);
    if (!db) { fprintf(stderr, "%s\n", err.msg); return 1; }
    char (*secrets)[KEYSTORE_SECRET_LEN + 1] = calloc(N, sizeof *secrets);
    json_t *spec = json_pack("{s:[s],s:{s:i},s:{s:f}}", "routes", "chat", "limits", "rpm", 600, "budget", "daily_usd", 5.0);
    ledger_db_begin(db, &err);
    for (int i = 0; i < N; i++) {
        char id[32], sha[65], *body = NULL;
        snprintf(id, sizeof id, "bench-%d", i);
        keystore_new_secret(secrets[i], sha);
        if (keystore_db_create(db, id, sha, spec, 1800000000000ll + i, &body, &err) != 0) {
            fprintf(stderr, "create: %s\n", err.msg);
            return 1;
        }
        free(body);
    }
    ledger_db_commit(db, &err);
    ledger_db_close(db);
    json_decref(spec);

    loop *l = loop_new(&err);
    keystore *ks = keystore_new(l);
    int64_t t0 = bench_now_ns();
    keystore_use_db(ks, GW_LEDGER_SQLITE, path);
    keystore_rebuild(ks, c);
    while (keystore_count(ks) < N && bench_now_ns() - t0 < 30000000000ll) loop_run_once(l, 5, &err);
    double load_ms = (bench_now_ns() - t0) / 1e6;
    if (keystore_count(ks) < N) { fprintf(stderr, "only %zu keys served\n", keystore_count(ks)); return 1; }

    enum { ROUNDS = 200000 };
    int64_t *ns = calloc(ROUNDS, sizeof *ns);
    size_t found = 0;
    for (int r = 0; r < ROUNDS; r++) {
        const char *s = secrets[(r * 7919) % N];
        int64_t a = bench_now_ns();
        uint8_t h[GW_SHA256_LEN];
        config_key_hash(s, KEYSTORE_SECRET_LEN, h);
        found += keystore_find_hash(ks, h, 1800000000) != NULL;
        ns[r] = bench_now_ns() - a;
    }
    qsort(ns, ROUNDS, sizeof *ns, bench_cmp_i64);
    printf("lookup (SHA-256 + table), %d keys        p50 %6.2f us   p99 %6.2f us   (%zu/%d found)\n", N,
           ns[ROUNDS / 2] / 1000.0, ns[(size_t)(ROUNDS * 0.99)] / 1000.0, found, ROUNDS);
    printf("first load of %d keys (poll + rows + build) %8.1f ms\n", N, load_ms);
    gw_config *c2 = NULL;
    if (config_load(&c2, cfgp, NULL, &err)) return 1;
    int64_t rb[20], rf[20];
    for (int i = 0; i < 20; i++) {
        int64_t a = bench_now_ns();
        keystore_rebuild(ks, i % 2 ? c : c2);   /* another configuration: every key built */
        rf[i] = bench_now_ns() - a;
        a = bench_now_ns();
        keystore_rebuild(ks, i % 2 ? c : c2);   /* the same: every key kept */
        rb[i] = bench_now_ns() - a;
    }
    qsort(rb, 20, sizeof *rb, bench_cmp_i64);
    qsort(rf, 20, sizeof *rf, bench_cmp_i64);
    printf("rebuild, %d keys unchanged (a poll)      p50 %6.2f ms   max %6.2f ms\n", N, rb[10] / 1e6, rb[19] / 1e6);
    printf("rebuild, %d keys built (a reload)        p50 %6.2f ms   max %6.2f ms\n", N, rf[10] / 1e6, rf[19] / 1e6);
    keystore_rebuild(ks, c);
    config_unref(c2);
    keystore_free(ks);
    loop_free(l);
    config_unref(c);
    free(ns);
    free(secrets);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) != 0;
}
