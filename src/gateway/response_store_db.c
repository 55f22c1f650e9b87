/* response_store_db.c: see response_store_db.h. Parameters go as text (ledger_db's
 * interface), so every number compared in SQL is CAST. */
#include "gateway/response_store_db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"

static void i64(char *b, int64_t v) { snprintf(b, 24, "%" PRId64, v); }

/* The oldest rows beyond the count or byte bound, newest first (the window orders by
 * created_ms then id, so ties are still one order on both engines). */
static const char k_prune[] =
    "DELETE FROM responses WHERE id IN (SELECT id FROM (SELECT id,"
    " ROW_NUMBER() OVER (ORDER BY created_ms DESC, id DESC) AS rn,"
    " SUM(bytes) OVER (ORDER BY created_ms DESC, id DESC ROWS UNBOUNDED PRECEDING) AS run"
    " FROM responses) AS t WHERE rn > CAST(? AS BIGINT) OR run > CAST(? AS BIGINT))";

int rstore_db_put(ledger_db *db, const rstore_db_record *r, const rstore_limits *lim, int64_t now_ms, sg_error *err) {
    const char *owner = r->owner ? r->owner : "";
    size_t bytes = strlen(r->id) + strlen(owner) + strlen(r->response) + strlen(r->messages) + strlen(r->input_items);
    char now[24], b[24], cutoff[24], maxc[24], maxb[24];
    i64(now, now_ms);
    i64(b, (int64_t)bytes);
    i64(cutoff, now_ms - lim->max_age_s * 1000);
    i64(maxc, (int64_t)lim->max_count);
    i64(maxb, lim->max_bytes > (size_t)INT64_MAX ? INT64_MAX : (int64_t)lim->max_bytes);
    if (ledger_db_begin(db, err)) return -1;
    const char *del[] = {r->id};
    if (ledger_db_exec(db, "DELETE FROM responses WHERE id = ?", del, 1, err) < 0) goto fail;
    if (lim->max_count && bytes <= lim->max_bytes) {
        const char *p[] = {r->id, owner, now, b, r->response, r->messages, r->input_items};
        if (ledger_db_exec(db, "INSERT INTO responses (id, owner, created_ms, bytes, response, messages, input_items) "
                               "VALUES (?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), ?, ?, ?)", p, 7, err) < 0)
            goto fail;
    }
    const char *pc[] = {cutoff};
    if (ledger_db_exec(db, "DELETE FROM responses WHERE created_ms <= CAST(? AS BIGINT)", pc, 1, err) < 0) goto fail;
    const char *pp[] = {maxc, maxb};
    if (ledger_db_exec(db, k_prune, pp, 2, err) < 0) goto fail;
    if (ledger_db_commit(db, err)) goto fail;
    return 0;
fail:
    ledger_db_rollback(db);
    return -1;
}

typedef struct get_row {
    rstore_entry *e;
    bool found;
} get_row;

static int on_entry(void *arg, int ncols, const char *const *cols) {
    get_row *g = arg;
    if (ncols != 4 || !cols[0] || !cols[1] || !cols[2] || !cols[3]) return 1;
    g->e->response = sg_xstrdup(cols[0]);
    g->e->messages = sg_xstrdup(cols[1]);
    g->e->input_items = sg_xstrdup(cols[2]);
    g->e->created = strtoll(cols[3], NULL, 10) / 1000;
    g->found = true;
    return 1;
}

int rstore_db_get(ledger_db *db, const char *id, const rstore_who *who, int64_t max_age_s, int64_t now_ms,
                  rstore_entry *e, sg_error *err) {
    *e = (rstore_entry){0};
    char cutoff[24];
    i64(cutoff, now_ms - max_age_s * 1000);
    const char *p[] = {id, cutoff, who && who->owner ? who->owner : ""};
    bool all = !who || who->admin;
    get_row g = {e, false};
    if (ledger_db_select(db, all ? "SELECT response, messages, input_items, created_ms FROM responses "
                                   "WHERE id = ? AND created_ms > CAST(? AS BIGINT)"
                                 : "SELECT response, messages, input_items, created_ms FROM responses "
                                   "WHERE id = ? AND created_ms > CAST(? AS BIGINT) AND owner = ?",
                         p, all ? 2 : 3, on_entry, &g, err))
        return -1;
    return g.found ? 0 : 1;
}

int rstore_db_delete(ledger_db *db, const char *id, const rstore_who *who, int64_t max_age_s, int64_t now_ms,
                     sg_error *err) {
    char cutoff[24];
    i64(cutoff, now_ms - max_age_s * 1000);
    const char *p[] = {id, cutoff, who && who->owner ? who->owner : ""};
    bool all = !who || who->admin;
    int64_t n = ledger_db_exec(db, all ? "DELETE FROM responses WHERE id = ? AND created_ms > CAST(? AS BIGINT)"
                                       : "DELETE FROM responses WHERE id = ? AND created_ms > CAST(? AS BIGINT) AND owner = ?",
                               p, all ? 2 : 3, err);
    if (n < 0) return -1;
    return n ? 0 : 1;
}

typedef struct totals {
    int64_t count, bytes;
} totals;

static int on_totals(void *arg, int ncols, const char *const *cols) {
    totals *t = arg;
    if (ncols == 2) {
        t->count = cols[0] ? strtoll(cols[0], NULL, 10) : 0;
        t->bytes = cols[1] ? strtoll(cols[1], NULL, 10) : 0;
    }
    return 1;
}

int rstore_db_totals(ledger_db *db, int64_t *count, int64_t *bytes, sg_error *err) {
    totals t = {0, 0};
    if (ledger_db_select(db, "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM responses", NULL, 0, on_totals, &t, err))
        return -1;
    *count = t.count;
    *bytes = t.bytes;
    return 0;
}
