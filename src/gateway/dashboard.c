/* dashboard.c: see dashboard.h. The page's files, /admin/stats from memory, and the
 * database reads (dash_query.h) on a worker thread with its own connection. */
#include "gateway/dashboard.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/api.h"
#include "gateway/dash_query.h"
#include "gateway/gateway.h"
#include "gateway/ledger_db.h"
#include "gateway/redact.h"
#include "gateway/web_assets.h"

/* ---- the page ------------------------------------------------------------------------------ */

static const char *content_type(const char *name) {
    const char *dot = strrchr(name, '.');
    if (dot && !strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (dot && !strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (dot && !strcmp(dot, ".css")) return "text/css; charset=utf-8";
    return "application/octet-stream";
}

static void redirect(http_exchange *x, const char *to) {
    http_header h[2] = {{"location", to}, {"content-type", "text/plain; charset=utf-8"}};
    http_respond(x, 302, h, 2, "see /dashboard\n", 15);
}

bool dashboard_serve_page(http_exchange *x, const http_request *req) {
    const char *p = req->path;
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) return false;
    if (!strcmp(p, "/ui") || !strcmp(p, "/ui/") || !strcmp(p, "/dashboard/")) { redirect(x, "/dashboard"); return true; }
    if (!strcmp(p, "/")) {   /* Ollama's clients probe / for "Ollama is running": only browsers go on */
        const char *accept = http_request_header(req, "accept");
        if (!accept || !strstr(accept, "text/html")) return false;
        redirect(x, "/dashboard");
        return true;
    }
    const char *name;
    if (!strcmp(p, "/dashboard")) name = "dashboard.html";
    else if (!strncmp(p, "/dashboard/", 11)) name = p + 11;
    else return false;
    for (const web_asset *a = web_assets; a->name; a++) {
        if (strcmp(a->name, name)) continue;
        /* the page talks to this origin only: no inline script, nothing fetched elsewhere */
        http_header h[4] = {{"content-type", content_type(a->name)},
                            {"cache-control", "no-cache"},
                            {"content-security-policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"},
                            {"x-content-type-options", "nosniff"}};
        http_respond(x, 200, h, 4, (const char *)a->data, a->len);
        return true;
    }
    http_header h[1] = {{"content-type", "text/plain; charset=utf-8"}};
    http_respond(x, 404, h, 1, "not found\n", 10);
    return true;
}

/* ---- answers --------------------------------------------------------------------------------- */

static void respond_body(http_exchange *x, int status, const char *ctype, const char *body, size_t len,
                         const char *filename) {
    char disp[96];
    http_header h[2] = {{"content-type", ctype}, {"content-disposition", disp}};
    if (filename) snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", filename);
    http_respond(x, status, h, filename ? 2 : 1, body, len);
}

static void error_body(sg_buf *b, int status, const char *code, const char *msg) {
    gw_api_error e;
    gw_api_fail(&e, status, code, NULL, "%s", msg);
    gw_client_apis[0]->error_body(b, &e);   /* OpenAI's shape */
}

static void respond_error(http_exchange *x, int status, const char *code, const char *msg) {
    sg_buf b;
    sg_buf_init(&b);
    error_body(&b, status, code, msg);
    respond_body(x, status, "application/json", b.data, b.len, NULL);
    sg_buf_free(&b);
}

/* ---- the worker ---------------------------------------------------------------------------- */

typedef enum { JOB_SPEND, JOB_SPEND_CSV, JOB_REQUESTS, JOB_REQUEST, JOB_CAPTURE } job_kind;

typedef struct dash_job {
    struct dash_job *next;
    http_exchange *x;         /* NULL for JOB_CAPTURE: nobody waits for it */
    bool gone;                /* the client left (loop thread only) */
    job_kind kind;
    char *query;              /* the URL's query string; JOB_REQUEST, JOB_CAPTURE: the id */
    char *prompt, *answer;    /* JOB_CAPTURE: redacted, bounded */
    int64_t captured_ms;
    int status;
    sg_buf body;
} dash_job;

struct dashboard {
    loop *loop;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    dash_job *head, *tail;
    size_t queued;
    size_t captures;          /* JOB_CAPTURE among the queued */
    uint64_t captures_dropped;
    int64_t retention_ms;     /* captures older than this are deleted */
    bool stop;
    bool running;             /* the worker started */
    gw_ledger_kind kind;      /* the ledger's database (dashboard_use_db); target NULL: none yet */
    char *target;
    /* worker thread only */
    ledger_db *db;
    gw_ledger_kind db_kind;
    char *db_target;
    int64_t next_rollup_ms;   /* when an idle worker rolls up again */
};

static void job_free(dash_job *j) {
    free(j->query);
    free(j->prompt);
    free(j->answer);
    sg_buf_free(&j->body);
    free(j);
}

static void job_answer(loop *l, void *arg) {   /* loop thread */
    (void)l;
    dash_job *j = arg;
    if (j->gone) http_exchange_close(j->x);
    else {
        http_exchange_on_abort(j->x, NULL, NULL);
        bool csv = j->kind == JOB_SPEND_CSV && j->status == 200;
        respond_body(j->x, j->status, csv ? "text/csv; charset=utf-8" : "application/json", j->body.data ? j->body.data : "",
                     j->body.len, csv ? "smolgate-spend.csv" : NULL);
    }
    job_free(j);
}

static void job_abort(http_exchange *x, void *arg) {
    (void)x;
    ((dash_job *)arg)->gone = true;
}

/* The worker's connection to the configured database (a reload may have moved it);
 * reopened after a failure. NULL with err when it cannot be opened. Worker thread. */
static ledger_db *connection(dashboard *d, sg_error *err) {
    pthread_mutex_lock(&d->mu);
    gw_ledger_kind kind = d->kind;
    char *target = d->target ? sg_xstrdup(d->target) : NULL;
    pthread_mutex_unlock(&d->mu);
    if (!target) {
        sg_fail(err, "no ledger database configured");
        return NULL;
    }
    if (d->db && (d->db_kind != kind || strcmp(d->db_target, target) || !ledger_db_ok(d->db))) {
        ledger_db_close(d->db);
        d->db = NULL;
    }
    if (!d->db) {
        /* read-write: the rollup writes spend_hourly; opening also migrates (schema 4) */
        d->db = ledger_db_open(kind, target, false, err);
        if (d->db) {
            d->db_kind = kind;
            free(d->db_target);
            d->db_target = sg_xstrdup(target);
        }
    }
    free(target);
    return d->db;
}

static void run_job(dashboard *d, dash_job *j) {
    sg_error err;
    ledger_db *db = connection(d, &err);
    if (!db) {
        SG_WARN("dashboard: the ledger database cannot be opened: %s", err.msg);
        j->status = 503;
        error_body(&j->body, 503, "database_unavailable", "the ledger database cannot be reached; try again");
        return;
    }
    int rc = 0;
    bool bad = false;
    switch (j->kind) {
    case JOB_CAPTURE: {
        if (dashq_store_payload(db, j->query, j->captured_ms, j->prompt, j->answer, &err))
            SG_WARN("dashboard: a captured payload was not stored: %s", err.msg);
        return;
    }
    case JOB_SPEND:
    case JOB_SPEND_CSV: {
        usage_filter f;
        usage_result r;
        if (dashq_parse_spend(&f, j->query, &err)) { bad = true; break; }
        if ((rc = dashq_spend(db, &f, &r, &err)) == 0) {
            if (j->kind == JOB_SPEND_CSV) usage_render_csv(&f, &r, &j->body);
            else usage_render_json(&f, &r, &j->body);
            usage_result_free(&r);
        }
        break;
    }
    case JOB_REQUESTS: {
        dashq_filter f;
        dashq_filter_init(&f);
        if (dashq_parse_requests(&f, j->query, &err)) { bad = true; break; }
        rc = dashq_requests(db, &f, &j->body, &err);
        break;
    }
    case JOB_REQUEST: {
        bool found;
        if ((rc = dashq_request(db, j->query, &found, &j->body, &err)) == 0 && !found) {
            j->status = 404;
            error_body(&j->body, 404, "request_not_found", "no request by that id in the ledger (it may not be delivered yet)");
            return;
        }
        break;
    }
    }
    if (bad) {
        j->status = 400;
        error_body(&j->body, 400, "invalid_query", err.msg);
    } else if (rc) {
        SG_WARN("dashboard: a ledger query failed: %s", err.msg);
        j->body.len = 0;
        j->status = 503;
        error_body(&j->body, 503, "database_unavailable", "the ledger query failed; try again");
    } else {
        j->status = 200;
    }
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Idle work: keep the spend rollup's lag small, in bounded steps so that a query waiting
 * behind one waits little (a first rollup of a million records takes a few seconds in
 * all). Every DASHBOARD_ROLLUP_MS while there is nothing else to do. */
static void idle_rollup(dashboard *d) {
    sg_error err;
    ledger_db *db = connection(d, &err);
    int64_t rolled = 0;
    pthread_mutex_lock(&d->mu);
    int64_t keep_ms = d->retention_ms;
    pthread_mutex_unlock(&d->mu);
    if (db && keep_ms > 0) {   /* captured payloads past their retention */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (dashq_purge_payloads(db, (int64_t)ts.tv_sec * 1000 - keep_ms, NULL, &err))
            SG_DEBUG("dashboard: captured payloads not purged yet: %s", err.msg);
    }
    if (db && dashq_rollup(db, DASHBOARD_ROLLUP_STEP, &rolled, &err) == 0) {
        /* more waiting: go on at once (between steps, queued calls go first) */
        d->next_rollup_ms = mono_ms() + (rolled == DASHBOARD_ROLLUP_STEP ? 0 : DASHBOARD_ROLLUP_MS);
        return;
    }
    SG_DEBUG("dashboard: spend rollup deferred: %s", err.msg);   /* spend stays exact meanwhile */
    d->next_rollup_ms = mono_ms() + DASHBOARD_ROLLUP_MS * 5;
}

static void *worker(void *arg) {
    dashboard *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->head && !d->stop) {
            int64_t wait = d->next_rollup_ms - mono_ms();
            if (wait <= 0 && d->target) {
                pthread_mutex_unlock(&d->mu);
                idle_rollup(d);
                pthread_mutex_lock(&d->mu);
                continue;
            }
            if (wait <= 0) wait = DASHBOARD_ROLLUP_MS;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
            pthread_cond_timedwait(&d->cv, &d->mu, &ts);
        }
        dash_job *j = d->head;
        if (!j) break;   /* stopping, nothing left */
        d->head = j->next;
        if (!d->head) d->tail = NULL;
        bool stopping = d->stop;
        pthread_mutex_unlock(&d->mu);
        if (stopping && j->kind != JOB_CAPTURE) {
            j->status = 503;
            error_body(&j->body, 503, "shutting_down", "the gateway is shutting down");
        } else {
            run_job(d, j);
        }
        pthread_mutex_lock(&d->mu);
        d->queued--;
        if (j->kind == JOB_CAPTURE) {   /* nobody waits for it */
            d->captures--;
            job_free(j);
        } else {
            loop_post(d->loop, job_answer, j);
        }
    }
    pthread_mutex_unlock(&d->mu);
    ledger_db_close(d->db);
    d->db = NULL;
    return NULL;
}

dashboard *dashboard_new(loop *l) {
    dashboard *d = sg_xcalloc(1, sizeof *d);
    d->loop = l;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->running = pthread_create(&d->th, NULL, worker, d) == 0;
    if (!d->running) SG_ERROR("dashboard: cannot start its worker thread: its /admin/ reads answer 503");
    return d;
}

void dashboard_free(dashboard *d) {
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    if (d->running) pthread_join(d->th, NULL);
    sg_error e;   /* the answers posted refer to exchanges still open: send them now */
    loop_run_once(d->loop, 0, &e);
    free(d->db_target);
    free(d->target);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}

void dashboard_use_db(dashboard *d, gw_ledger_kind kind, const char *target) {
    pthread_mutex_lock(&d->mu);
    if (!d->target || d->kind != kind || strcmp(d->target, target)) {
        free(d->target);
        d->target = sg_xstrdup(target);
        d->kind = kind;
        pthread_cond_signal(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
}

/* text redacted and cut to max bytes, at a UTF-8 character boundary. */
static char *redacted(const gw_config *c, const char *text, size_t len, size_t max) {
    sg_buf b;
    sg_buf_init(&b);
    redact_text(c->secrets, text ? text : "", text ? len : 0, &b);
    size_t n = b.len;
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)b.data[n] & 0xC0) == 0x80) n--;
    }
    char *out = sg_xstrndup(b.data ? b.data : "", n);
    sg_buf_free(&b);
    return out;
}

void dashboard_capture(dashboard *d, const gw_config *c, const char *request_id, const char *prompt, size_t prompt_len,
                       const char *answer, size_t answer_len) {
    if (!d) return;   /* shutting down: the worker is gone */
    pthread_mutex_lock(&d->mu);
    d->retention_ms = (int64_t)c->capture.retention_h * 3600000;
    bool full = d->captures >= DASHBOARD_MAX_CAPTURES || !d->running;
    if (full) d->captures_dropped++;
    pthread_mutex_unlock(&d->mu);
    if (full) return;
    dash_job *j = sg_xcalloc(1, sizeof *j);
    j->kind = JOB_CAPTURE;
    j->query = sg_xstrdup(request_id);
    j->prompt = redacted(c, prompt, prompt_len, c->capture.max_bytes);
    j->answer = redacted(c, answer, answer_len, c->capture.max_bytes);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    j->captured_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    sg_buf_init(&j->body);
    pthread_mutex_lock(&d->mu);
    d->queued++;
    d->captures++;
    if (d->tail) d->tail->next = j;
    else d->head = j;
    d->tail = j;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void submit(gateway *g, http_exchange *x, job_kind kind, const char *query) {
    dashboard *d = g->dash;
    dash_job *j = sg_xcalloc(1, sizeof *j);
    j->x = x;
    j->kind = kind;
    j->query = sg_xstrdup(query ? query : "");
    sg_buf_init(&j->body);
    pthread_mutex_lock(&d->mu);
    bool full = d->queued - d->captures >= DASHBOARD_MAX_QUEUED || !d->running;
    if (!full) {
        d->queued++;
        if (d->tail) d->tail->next = j;
        else d->head = j;
        d->tail = j;
        http_exchange_on_abort(x, job_abort, j);
        pthread_cond_signal(&d->cv);
    }
    pthread_mutex_unlock(&d->mu);
    if (full) {
        job_free(j);
        respond_error(x, 429, "too_many_queries", "too many dashboard queries at once; try again");
    }
}

/* ---- /admin/stats: from memory, on the loop ---------------------------------------------- */

static json_t *usd_or_null(int64_t micro) { return micro >= 0 ? json_integer(micro) : json_null(); }

/* A key's limits and budgets, and what its rpm/tpm windows and concurrency hold now
 * ("now": null with Redis limits, whose counts are not read from here). */
static json_t *key_limits(limits *lim, const gw_key *k) {
    limits_now n;
    json_t *now = lim && limits_key_now(lim, k->id, &n)
                      ? json_pack("{s:I,s:I,s:I}", "requests", (json_int_t)n.requests, "tokens", (json_int_t)n.tokens,
                                  "inflight", (json_int_t)n.inflight)
                      : json_null();
    json_t *o = json_pack("{s:s,s:s,s:s,s:{s:o,s:o,s:o},s:{s:o,s:o,s:o}}", "id", k->id, "role", config_key_role_name(k->role),
                     "source", k->dyn ? "runtime" : "config", "limits", "rpm",
                     k->limits.rpm >= 0 ? json_integer(k->limits.rpm) : json_null(), "tpm",
                     k->limits.tpm >= 0 ? json_integer(k->limits.tpm) : json_null(), "concurrency",
                     k->limits.concurrency >= 0 ? json_integer(k->limits.concurrency) : json_null(), "budget_micro",
                     "daily", usd_or_null(k->budget.daily_usd), "monthly", usd_or_null(k->budget.monthly_usd), "total",
                     usd_or_null(k->budget.total_usd));
    json_object_set_new(o, "now", now);
    return o;
}

static void handle_stats(gateway *g, http_exchange *x) {
    const gw_config *c = g->cfg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    json_t *doc = json_pack("{s:I,s:I,s:{s:I,s:I,s:I,s:I}}", "now_ms", (json_int_t)now, "started_unix",
                            (json_int_t)g->started_unix, "totals", "requests", (json_int_t)g->stats.requests, "errors",
                            (json_int_t)g->stats.errors, "fallbacks", (json_int_t)g->stats.fallbacks, "attempts",
                            (json_int_t)g->stats.attempts);
    json_object_set_new(doc, "series", metrics_json(g->metrics));
    enum { MAX_BREAKERS = 200 };
    breaker_view *views = sg_xcalloc(MAX_BREAKERS, sizeof *views);
    size_t n = breaker_list(g->breakers, &c->circuit_breaker, loop_now_ms(g->loop), views, MAX_BREAKERS);
    json_t *br = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(br, json_pack("{s:s,s:s,s:i,s:I}", "target", views[i].target, "state",
                                            breaker_state_name(views[i].state), "failures", views[i].failures,
                                            "cooldown_ms", (json_int_t)views[i].cooldown_left_ms));
    free(views);
    json_object_set_new(doc, "breakers", br);
    json_t *locals = json_array();
    for (size_t i = 0; i < g->n_locals; i++) {
        bool alias = false;   /* an alias shares its model's engine: listed once */
        for (size_t k = 0; k < i; k++) alias |= g->locals[k].lm == g->locals[i].lm;
        if (alias) continue;
        local_stats st;
        local_get_stats(g->locals[i].lm, &st);
        json_array_append_new(locals, json_pack("{s:s,s:i,s:i,s:i,s:i,s:I,s:I}", "name", g->locals[i].name, "slots",
                                                st.slots, "active", st.active, "queued", st.queued, "load",
                                                local_load(g->locals[i].lm), "steps", (json_int_t)st.steps,
                                                "reused_prompt_tokens", (json_int_t)st.reused_tokens));
    }
    json_object_set_new(doc, "local", locals);
    json_t *keys = json_array();
    for (size_t i = 0; i < c->n_keys; i++) json_array_append_new(keys, key_limits(g->limits, &c->keys[i]));
    for (size_t i = 0; i < keystore_count(g->keys); i++) json_array_append_new(keys, key_limits(g->limits, keystore_key(g->keys, i)));
    json_object_set_new(doc, "keys", keys);
    ledger_stats ls;
    ledger_get_stats(g->ledger, &ls);
    json_object_set_new(doc, "ledger", json_pack("{s:I,s:I,s:b}", "delivered", (json_int_t)ls.delivered, "pending",
                                                 (json_int_t)ls.pending, "database_up", ls.db_connected));
    pthread_mutex_lock(&g->dash->mu);
    uint64_t dropped = g->dash->captures_dropped;
    pthread_mutex_unlock(&g->dash->mu);
    json_object_set_new(doc, "capture", json_pack("{s:i,s:i,s:I}", "routes", (int)c->capture.n_routes, "keys",
                                                  (int)c->capture.n_keys, "dropped", (json_int_t)dropped));
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    respond_body(x, 200, "application/json", s, strlen(s), NULL);
    free(s);
}

/* ---- routing ----------------------------------------------------------------------------------- */

bool dashboard_owns_path(const char *p) {
    return !strcmp(p, "/admin/stats") || !strcmp(p, "/admin/spend") || !strcmp(p, "/admin/spend.csv") ||
           !strcmp(p, "/admin/requests") || !strncmp(p, "/admin/requests/", 16);
}

void dashboard_admin(gateway *g, http_exchange *x, const http_request *req, const gw_key *key) {
    const char *p = req->path;
    if (key && key->role != GW_ROLE_ADMIN) {
        respond_error(x, 403, "permission_denied", "the dashboard's endpoints need an admin key");
        return;
    }
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        respond_error(x, 405, "method_not_allowed", "use GET");
        return;
    }
    if (!strcmp(p, "/admin/stats")) handle_stats(g, x);
    else if (!strcmp(p, "/admin/spend")) submit(g, x, JOB_SPEND, req->query);
    else if (!strcmp(p, "/admin/spend.csv")) submit(g, x, JOB_SPEND_CSV, req->query);
    else if (!strcmp(p, "/admin/requests")) submit(g, x, JOB_REQUESTS, req->query);
    else {
        const char *id = p + 16;   /* ids are hex (request_id.h) or a client's x-request-id */
        bool ok = *id && strlen(id) < 128;
        for (const char *s = id; ok && *s; s++) ok = *s > 0x20 && *s < 0x7f && *s != '/' && *s != '%';
        if (!ok) {
            respond_error(x, 404, "request_not_found", "no request by that id");
            return;
        }
        submit(g, x, JOB_REQUEST, id);
    }
}
