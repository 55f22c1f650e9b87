/* test_limits_redis.c: the Redis backend of limits.h against a real redis-server (the
 * Debian package; tests/limits/redis_server.h starts it on a free loopback port without
 * persistence and stops it, bounded waits, nothing left behind).
 *
 *   - decisions: rpm, tpm reservation and reconciliation, concurrency, budgets, unpriced,
 *     refusal names and headers, what the keys in Redis look like and that they expire;
 *   - NOSCRIPT (the server's script cache flushed): EVAL takes over;
 *   - two processes, each with its own loop and limiter (one with a clock an hour off),
 *     hammering the same keys: never more than the limit in any window (rpm, by Redis's
 *     decision times), never more in flight than the concurrency limit, never more tokens
 *     than tpm (actual <= reserved), never more spent than the budget, and afterwards
 *     Redis holds exactly the money both processes say they spent, nothing reserved and no
 *     slot taken;
 *   - the budget alert fires once per period across instances;
 *   - redis-server stopped: fail open admits (degraded) and fail closed refuses (503) at
 *     once, one outage each however many requests; costs spent meanwhile reach Redis when
 *     it is back; the limiters reconnect by themselves;
 *   - redis-server frozen (SIGSTOP): answers within state.timeout_ms by the policy; when it
 *     thaws, the late answers are reconciled: no slot stays taken, a cancelled request's
 *     callback never runs. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "common/log.h"
#include "gateway/limits.h"
#include "limits/redis_server.h"
#include "testutil.h"

static redis_server g_rs;
static char g_prefix[64];

/* ---- helpers ---- */

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static gw_limits none(void) { return (gw_limits){-1, -1, -1}; }

static gw_key make_key(const char *id) {
    gw_key k;
    memset(&k, 0, sizeof k);
    k.id = (char *)id;
    k.all_routes = true;
    k.limits = none();
    k.budget = (gw_budget){-1, -1, -1, 80};
    return k;
}

static gw_route make_route(const char *name) {
    gw_route r;
    memset(&r, 0, sizeof r);
    r.name = (char *)name;
    r.limits = none();
    r.per_key_limits = none();
    r.budget = (gw_budget){-1, -1, -1, 80};
    return r;
}

typedef struct alerts { int n; char last[256]; } alerts;
static void on_alert(void *ctx, const char *label, int64_t spent, int64_t cap) {
    (void)spent; (void)cap;
    alerts *a = ctx;
    a->n++;
    snprintf(a->last, sizeof a->last, "%s", label);
}

static limits *new_limiter(loop *lp, bool fail_open, uint32_t window_ms, alerts *al) {
    gw_state st = {.redis_url = g_rs.url, .fail_open = fail_open, .key_prefix = g_prefix, .timeout_ms = 100};
    limits_opts o = {.window_ms = window_ms, .on_alert = al ? on_alert : NULL, .alert_ctx = al};
    sg_error err;
    limits *lim = limits_new(lp, &st, &o, &err);
    CHECK_MSG(lim != NULL, "%s", err.msg);
    return lim;
}

typedef struct waiter {
    int calls;
    limits_result r;
} waiter;

static void on_done(void *arg, limits_lease *l, const limits_result *r) {
    (void)l;
    waiter *w = arg;
    w->calls++;
    w->r = *r;
}

static void run_for(loop *lp, int ms) {
    int64_t until = mono_us() + (int64_t)ms * 1000;
    while (mono_us() < until) loop_run_once(lp, 5, NULL);
}

/* Admits and waits for the answer (at most 3 s). *took_ms: how long it took. */
static limits_lease *admit_wait(limits *lim, loop *lp, const limits_request *req, limits_result *r, int64_t *took_ms) {
    waiter w = {0};
    limits_lease *l = NULL;
    int64_t t0 = mono_us();
    if (limits_admit(lim, req, &l, r, on_done, &w) == LIMITS_LATER) {
        int64_t until = mono_us() + 3000000;
        while (!w.calls && mono_us() < until) loop_run_once(lp, 5, NULL);
        CHECK_EQ_INT(w.calls, 1);
        *r = w.r;
    }
    if (took_ms) *took_ms = (mono_us() - t0) / 1000;
    return l;
}

/* Runs the loop until the limiter has no call in flight (at most 3 s). */
static void drain(limits *lim, loop *lp) {
    int64_t until = mono_us() + 3000000;
    limits_stats s;
    for (;;) {
        limits_get_stats(lim, &s);
        if (!s.in_flight || mono_us() > until) break;
        loop_run_once(lp, 5, NULL);
    }
    CHECK_EQ_INT(s.in_flight, 0);
}

static void wait_connected(limits *lim, loop *lp, int ms) {
    int64_t until = mono_us() + (int64_t)ms * 1000;
    limits_stats s;
    for (;;) {
        limits_get_stats(lim, &s);
        if ((s.connected && !s.outage) || mono_us() > until) break;
        loop_run_once(lp, 5, NULL);
    }
}

static long long rkey(const char *cmd, const char *suffix) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", g_prefix, suffix);
    return rs_int(&g_rs, cmd, key);
}

/* ---- decisions ---- */

static void test_decisions(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    limits *lim = new_limiter(lp, true, 2000, NULL);
    gw_key k = make_key("team-a");
    k.limits.rpm = 3;
    gw_route rt = make_route("chat");
    rt.limits.tpm = 1000;
    rt.limits.concurrency = 2;
    limits_request req = {.key = &k, .route = &rt, .est_tokens = 400, .max_cost = 0, .ttl_ms = 5000};
    limits_result r;
    int64_t took;
    limits_lease *a = admit_wait(lim, lp, &req, &r, &took);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(!r.degraded);
    CHECK(r.at_us > wall_us() - 5000000 && r.at_us < wall_us() + 5000000);   /* Redis TIME */
    CHECK_EQ_INT(r.headers.limit_requests, 3);
    CHECK_EQ_INT(r.headers.remaining_requests, 2);
    CHECK_EQ_INT(r.headers.limit_tokens, 1000);
    CHECK_EQ_INT(r.headers.remaining_tokens, 600);
    CHECK(r.headers.reset_tokens_ms > 1900 && r.headers.reset_tokens_ms <= 2000);
    limits_lease *b = admit_wait(lim, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.remaining_tokens, 200);
    /* the third: tpm (400 > 200 left) and concurrency (2) both refuse */
    limits_lease *c = admit_wait(lim, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_INT(r.status, 429);
    CHECK_EQ_STR(r.limit, "route chat tpm");           /* the longer wait of the two */
    CHECK(r.retry_after_ms > 1500 && r.retry_after_ms <= 2000);
    limits_cancel(c);
    /* a used 100 of its 400: 300 come back; its slot frees */
    limits_finish(a, &(limits_usage){100, 0});
    drain(lim, lp);
    CHECK_EQ_INT(rkey("HGET %s ~", "tpmw:route:chat"), 500);
    CHECK_EQ_INT(rkey("ZCARD %s", "conc:route:chat"), 1);
    c = admit_wait(lim, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.remaining_tokens, 100);
    CHECK_EQ_INT(r.headers.remaining_requests, 0);
    limits_finish(b, &(limits_usage){50, 0});
    limits_finish(c, &(limits_usage){50, 0});
    drain(lim, lp);
    /* the rpm window is full (3 in 2 s) though tokens and slots are free */
    limits_lease *d = admit_wait(lim, lp, &req, &r, NULL);
    CHECK_EQ_STR(r.limit, "key team-a rpm");
    limits_cancel(d);
    CHECK_EQ_INT(rkey("LLEN %s", "rpm:key:team-a"), 3);
    CHECK_EQ_INT(rkey("ZCARD %s", "conc:route:chat"), 0);
    CHECK_EQ_INT(rkey("HGET %s ~", "tpmw:route:chat"), 200);
    long long ttl = rkey("PTTL %s", "rpm:key:team-a");
    CHECK(ttl > 0 && ttl <= 3000);                       /* idle windows vanish */

    /* budgets */
    gw_key kb = make_key("team-b");
    kb.budget.daily_usd = 1000000;
    limits_request breq = {.key = &kb, .max_cost = 400000};
    a = admit_wait(lim, lp, &breq, &r, NULL);
    b = admit_wait(lim, lp, &breq, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    c = admit_wait(lim, lp, &breq, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.code, "budget_exceeded");
    CHECK_EQ_STR(r.limit, "budget key team-b daily");
    int64_t to_midnight = (86400000000LL - wall_us() % 86400000000LL) / 1000;
    CHECK(llabs(r.retry_after_ms - to_midnight) < 5000);
    limits_cancel(c);
    limits_finish(a, &(limits_usage){-1, 100000});      /* 0.30 back */
    drain(lim, lp);
    CHECK_EQ_INT(rkey("HGET %s s", "budget:d:key:team-b"), 100000);
    CHECK_EQ_INT(rkey("HGET %s r", "budget:d:key:team-b"), 400000);
    c = admit_wait(lim, lp, &breq, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_finish(b, NULL);                             /* unknown: the maximum */
    limits_cancel(c);
    drain(lim, lp);
    CHECK_EQ_INT(rkey("HGET %s s", "budget:d:key:team-b"), 500000);
    CHECK_EQ_INT(rkey("HGET %s r", "budget:d:key:team-b"), 0);
    breq.max_cost = -1;
    a = admit_wait(lim, lp, &breq, &r, NULL);
    CHECK_EQ_INT(r.status, 403);
    CHECK_EQ_STR(r.code, "budget_unpriced");
    limits_cancel(a);
    limits_free(lim);
    loop_free(lp);
}

/* One provider attempt through Redis (at most 3 s). */
static limits_lease *attempt_wait(limits *lim, loop *lp, const gw_provider *p, const gw_model_info *m, int64_t est,
                                  limits_result *r) {
    waiter w = {0};
    limits_lease *l = NULL;
    if (limits_attempt(lim, p, m, est, 5000, &l, r, on_done, &w) == LIMITS_LATER) {
        int64_t until = mono_us() + 3000000;
        while (!w.calls && mono_us() < until) loop_run_once(lp, 5, NULL);
        CHECK_EQ_INT(w.calls, 1);
        *r = w.r;
    }
    return l;
}

/* Provider and per-model account limits are shared counters in Redis too: two limiters
 * (two instances) together admit no more than the limit, and tokens are reconciled. */
static void test_attempts(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    limits *one = new_limiter(lp, true, 2000, NULL), *two = new_limiter(lp, true, 2000, NULL);
    gw_provider p;
    memset(&p, 0, sizeof p);
    p.name = "openai";
    p.limits = (gw_limits){-1, 1000, -1};
    gw_model_info m;
    memset(&m, 0, sizeof m);
    m.model = "gpt-4o";
    m.limits = (gw_limits){2, -1, -1};
    limits_result r;
    limits_lease *a = attempt_wait(one, lp, &p, &m, 300, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(!r.degraded);
    limits_lease *b = attempt_wait(two, lp, &p, &m, 300, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_lease *c = attempt_wait(one, lp, &p, &m, 300, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "model openai/gpt-4o rpm");
    limits_cancel(c);
    /* another model of the provider: only the provider's tpm (600 of 1000 held) */
    c = attempt_wait(two, lp, &p, NULL, 500, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "provider openai tpm");
    limits_cancel(c);
    limits_finish(a, &(limits_usage){50, -1});   /* 250 of its 300 come back */
    limits_finish(b, &(limits_usage){50, -1});
    drain(one, lp);
    drain(two, lp);
    CHECK_EQ_INT(rkey("HGET %s ~", "tpmw:provider:openai"), 100);
    CHECK_EQ_INT(rkey("LLEN %s", "rpm:model:openai/gpt-4o"), 2);
    c = attempt_wait(two, lp, &p, NULL, 500, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(c);
    drain(two, lp);
    limits_free(one);
    limits_free(two);
    loop_free(lp);
}

static void test_noscript(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    limits *lim = new_limiter(lp, false, 2000, NULL);
    gw_key k = make_key("noscript");
    k.limits.concurrency = 5;
    limits_request req = {.key = &k};
    limits_result r;
    limits_lease *a = admit_wait(lim, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    rs_int(&g_rs, "SCRIPT FLUSH", NULL);
    limits_lease *b = admit_wait(lim, lp, &req, &r, NULL);   /* NOSCRIPT, then EVAL */
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(!r.degraded);
    rs_int(&g_rs, "SCRIPT FLUSH", NULL);
    limits_cancel(a);                                  /* the end script too */
    limits_cancel(b);
    drain(lim, lp);
    CHECK_EQ_INT(rkey("ZCARD %s", "conc:key:noscript"), 0);
    limits_stats s;
    limits_get_stats(lim, &s);
    CHECK_EQ_INT(s.outages, 0);
    CHECK_EQ_INT(s.dropped, 0);
    limits_free(lim);
    loop_free(lp);
}

/* The alert fires once per period, whichever instance crosses the threshold. */
static void test_alert_once(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    alerts a1 = {0}, a2 = {0};
    limits *l1 = new_limiter(lp, true, 2000, &a1), *l2 = new_limiter(lp, true, 2000, &a2);
    gw_key k = make_key("alerted");
    k.budget.monthly_usd = 1000;
    k.budget.alert_percent = 50;
    limits_request req = {.key = &k, .max_cost = 300};
    limits_result r;
    for (int i = 0; i < 3; i++) {
        limits_lease *x = admit_wait(i % 2 ? l2 : l1, lp, &req, &r, NULL);
        CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
        limits_finish(x, &(limits_usage){-1, 300});
        drain(i % 2 ? l2 : l1, lp);
    }
    CHECK_EQ_INT(a1.n + a2.n, 1);
    CHECK_EQ_INT(a2.n, 1);                             /* the second crossed 50% */
    CHECK_EQ_STR(a2.last, "budget key alerted monthly");
    limits_free(l1);
    limits_free(l2);
    loop_free(lp);
}

/* An instance whose clock is a day and an hour ahead still decides on Redis's: the
 * budget's period is Redis's day, and at_us is Redis's time. */
static int64_t clock_ahead(void *ctx) { (void)ctx; return wall_us() + 25 * 3600LL * 1000000; }

static void test_skewed_clock(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    gw_state st = {.redis_url = g_rs.url, .fail_open = true, .key_prefix = g_prefix, .timeout_ms = 100};
    limits_opts o = {.clock_us = clock_ahead};
    limits *lim = limits_new(lp, &st, &o, &err);
    gw_key k = make_key("skewed");
    k.budget.daily_usd = 1000;
    limits_request req = {.key = &k, .max_cost = 10};
    limits_result r;
    limits_lease *l = admit_wait(lim, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(llabs(r.at_us - wall_us()) < 5000000);
    limits_finish(l, &(limits_usage){-1, 7});
    drain(lim, lp);
    int64_t day = wall_us() / 86400000000LL;
    long long p = rkey("HGET %s p", "budget:d:key:skewed");
    CHECK_MSG(p == day || p == day - 1, "period %lld, today %lld", p, (long long)day);
    CHECK_EQ_INT(rkey("HGET %s s", "budget:d:key:skewed"), 7);
    limits_free(lim);
    loop_free(lp);
}

/* ---- two instances hammering ---- */

enum { HAM_RPM, HAM_CONC, HAM_BUDGET };
#define HAM_WINDOW_MS 1000
#define HAM_RPM_LIMIT 150
#define HAM_CONC_LIMIT 6
#define HAM_TPM_LIMIT 30000
#define HAM_BUDGET_CAP 250000
#define HAM_CLIENTS 12
#define HAM_SECONDS 3

typedef struct ham_rec {
    int type;
    int64_t at_us;            /* Redis's decision time */
    int64_t recv_us, fin_us;  /* local monotonic: answer received, end sent */
    int64_t tokens, charged;  /* actual tokens; money charged (the maximum when unknown) */
} ham_rec;

typedef struct ham_client {
    struct ham *h;
    int id, n;
    loop_timer t;
    limits_lease *lease;
    int type;
    int64_t est, max_cost;
    ham_rec rec;
    bool holding;
} ham_client;

typedef struct ham {
    loop *lp;
    limits *lim;
    gw_key krpm, kbud;
    gw_route rconc;
    int64_t stop_us;
    ham_rec *recs;
    size_t n_recs, cap_recs;
    int budget_refusals, degraded, active;
    unsigned seed;
} ham;

static int64_t skewed_clock(void *ctx) { (void)ctx; return wall_us() + 3600LL * 1000000; }

static void ham_next(loop *lp, loop_timer *t, void *arg);

static void ham_result(ham_client *c, const limits_result *r) {
    ham *h = c->h;
    if (r->degraded) h->degraded++;
    if (r->outcome != LIMITS_ADMITTED) {
        if (c->type == HAM_BUDGET && r->status == 429) h->budget_refusals++;
        limits_cancel(c->lease);
        c->lease = NULL;
        loop_timer_start(h->lp, &c->t, (uint64_t)(rand_r(&h->seed) % 3));
        return;
    }
    c->rec = (ham_rec){.type = c->type, .at_us = r->at_us, .recv_us = mono_us()};
    c->holding = true;
    loop_timer_start(h->lp, &c->t, (uint64_t)(rand_r(&h->seed) % 6));
}

static void ham_cb(void *arg, limits_lease *l, const limits_result *r) {
    (void)l;
    ham_result(arg, r);
}

static void ham_next(loop *lp, loop_timer *t, void *arg) {
    (void)lp; (void)t;
    ham_client *c = arg;
    ham *h = c->h;
    if (c->holding) {                  /* end the request with its usage */
        int64_t tokens = c->type == HAM_CONC ? rand_r(&h->seed) % (c->est + 1) : 0;
        int64_t cost = c->type == HAM_BUDGET ? (rand_r(&h->seed) % 4 == 0 ? -1 : rand_r(&h->seed) % (c->max_cost + 1)) : 0;
        c->rec.tokens = tokens;
        c->rec.charged = cost < 0 ? c->max_cost : cost;
        c->rec.fin_us = mono_us();
        limits_finish(c->lease, &(limits_usage){tokens, cost});
        c->lease = NULL;
        c->holding = false;
        if (h->n_recs == h->cap_recs) {
            h->cap_recs = h->cap_recs ? h->cap_recs * 2 : 1024;
            h->recs = realloc(h->recs, h->cap_recs * sizeof *h->recs);
        }
        h->recs[h->n_recs++] = c->rec;
    }
    if (mono_us() >= h->stop_us) { h->active--; return; }
    c->type = (c->id + c->n++) % 3;
    c->est = 200 + rand_r(&h->seed) % 2800;
    c->max_cost = 1000 + rand_r(&h->seed) % 4000;
    limits_request req = {.ttl_ms = 10000};
    if (c->type == HAM_RPM) req.key = &h->krpm;
    else if (c->type == HAM_CONC) { req.route = &h->rconc; req.est_tokens = c->est; }
    else { req.key = &h->kbud; req.max_cost = c->max_cost; }
    limits_result r;
    if (limits_admit(h->lim, &req, &c->lease, &r, ham_cb, c) == LIMITS_NOW) ham_result(c, &r);
}

/* One instance: its own loop and limiter. Writes its records to path. */
static int ham_child(const char *path, bool skew, int64_t start_us) {
    sg_error err;
    ham h = {0};
    h.seed = (unsigned)getpid();
    h.lp = loop_new(&err);
    gw_state st = {.redis_url = g_rs.url, .fail_open = true, .key_prefix = g_prefix, .timeout_ms = 1000};
    limits_opts o = {.window_ms = HAM_WINDOW_MS, .clock_us = skew ? skewed_clock : NULL};
    h.lim = limits_new(h.lp, &st, &o, &err);
    if (!h.lim) return 2;
    h.krpm = make_key("ham-rpm");
    h.krpm.limits.rpm = HAM_RPM_LIMIT;
    h.kbud = make_key("ham-budget");
    h.kbud.budget.total_usd = HAM_BUDGET_CAP;
    h.rconc = make_route("ham-conc");
    h.rconc.limits.concurrency = HAM_CONC_LIMIT;
    h.rconc.limits.tpm = HAM_TPM_LIMIT;
    wait_connected(h.lim, h.lp, 2000);
    while (mono_us() < start_us) loop_run_once(h.lp, 1, NULL);   /* both start together */
    h.stop_us = mono_us() + HAM_SECONDS * 1000000LL;
    ham_client cl[HAM_CLIENTS];
    for (int i = 0; i < HAM_CLIENTS; i++) {
        cl[i] = (ham_client){.h = &h, .id = i};
        loop_timer_init(&cl[i].t, ham_next, &cl[i]);
        loop_timer_start(h.lp, &cl[i].t, 0);
        h.active++;
    }
    int64_t until = h.stop_us + 5000000;
    while (h.active && mono_us() < until) loop_run_once(h.lp, 5, NULL);
    limits_stats s;
    do {
        loop_run_once(h.lp, 5, NULL);
        limits_get_stats(h.lim, &s);
    } while (s.in_flight && mono_us() < until);
    FILE *f = fopen(path, "wb");
    if (!f) return 3;
    int hdr[4] = {h.budget_refusals, h.degraded, (int)s.in_flight, (int)s.dropped};
    fwrite(hdr, sizeof hdr, 1, f);
    fwrite(h.recs, sizeof *h.recs, h.n_recs, f);
    fclose(f);
    free(h.recs);
    limits_free(h.lim);
    loop_free(h.lp);
    return h.active ? 4 : 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct ev { int64_t t; int d; } ev;
static int cmp_ev(const void *a, const void *b) {
    const ev *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return x->d - y->d;        /* an end before a start at the same instant */
}

static void test_two_instances(void) {
    char paths[2][128];
    pid_t pids[2];
    int64_t start = mono_us() + 300000;
    for (int i = 0; i < 2; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/ham%d.bin", tu_tmpdir(), i);
        fflush(NULL);
        pid_t parent = getpid();
        pids[i] = fork();
        if (pids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(9);
            _exit(ham_child(paths[i], i == 1, start));
        }
    }
    for (int i = 0; i < 2; i++) {
        int st = 0;
        int64_t until = mono_us() + 20000000;
        while (waitpid(pids[i], &st, WNOHANG) != pids[i]) {
            if (mono_us() > until) { kill(pids[i], SIGKILL); waitpid(pids[i], &st, 0); break; }
            usleep(20000);
        }
        CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "instance %d: status %d", i, st);
    }
    ham_rec *all = NULL;
    size_t n = 0;
    int budget_refusals = 0, degraded = 0, dropped = 0;
    for (int i = 0; i < 2; i++) {
        size_t len;
        char *data = tu_read(paths[i], &len);
        CHECK(data && len >= 4 * sizeof(int));
        if (!data) continue;
        int hdr[4];
        memcpy(hdr, data, sizeof hdr);
        budget_refusals += hdr[0];
        degraded += hdr[1];
        dropped += hdr[3];
        CHECK_EQ_INT(hdr[2], 0);
        size_t k = (len - sizeof hdr) / sizeof(ham_rec);
        all = realloc(all, (n + k) * sizeof *all);
        memcpy(all + n, data + sizeof hdr, k * sizeof(ham_rec));
        n += k;
        free(data);
    }
    CHECK_EQ_INT(degraded, 0);
    CHECK_EQ_INT(dropped, 0);
    /* rpm: no window (t - 1 s, t] of Redis time holds more than the limit */
    int64_t *ts = malloc((n + 1) * sizeof *ts);
    size_t nt = 0;
    for (size_t i = 0; i < n; i++) if (all[i].type == HAM_RPM) ts[nt++] = all[i].at_us;
    qsort(ts, nt, sizeof *ts, cmp_i64);
    size_t worst = 0;
    for (size_t i = 0, j = 0; i < nt; i++) {
        while (ts[j] <= ts[i] - HAM_WINDOW_MS * 1000) j++;
        if (i - j + 1 > worst) worst = i - j + 1;
    }
    CHECK_MSG(worst <= HAM_RPM_LIMIT, "%zu admissions in one window (limit %d)", worst, HAM_RPM_LIMIT);
    CHECK_MSG(worst == HAM_RPM_LIMIT, "the window never filled: %zu", worst);
    CHECK_MSG(nt >= (size_t)HAM_RPM_LIMIT * (HAM_SECONDS - 1), "only %zu rpm admissions", nt);
    /* concurrency: the local [answer, end] spans lie inside Redis's [admit, release] */
    ev *evs = malloc(2 * (n + 1) * sizeof *evs);
    size_t ne = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].type == HAM_CONC) {
            evs[ne++] = (ev){all[i].recv_us, 1};
            evs[ne++] = (ev){all[i].fin_us, -1};
        }
    qsort(evs, ne, sizeof *evs, cmp_ev);
    int cur = 0, peak = 0;
    for (size_t i = 0; i < ne; i++) { cur += evs[i].d; if (cur > peak) peak = cur; }
    CHECK_MSG(peak <= HAM_CONC_LIMIT, "%d in flight (limit %d)", peak, HAM_CONC_LIMIT);
    CHECK_MSG(peak >= 2, "peak %d", peak);
    /* tpm: actual tokens of admissions in any window, by Redis time, fit the limit */
    int64_t worst_tok = 0;
    for (size_t i = 0; i < n; i++) {
        if (all[i].type != HAM_CONC) continue;
        int64_t s = 0;
        for (size_t j = 0; j < n; j++)
            if (all[j].type == HAM_CONC && all[j].at_us <= all[i].at_us && all[j].at_us > all[i].at_us - HAM_WINDOW_MS * 1000)
                s += all[j].tokens;
        if (s > worst_tok) worst_tok = s;
    }
    CHECK_MSG(worst_tok <= HAM_TPM_LIMIT, "%" PRId64 " tokens in one window (limit %d)", worst_tok, HAM_TPM_LIMIT);
    /* budget: never more than the cap, and Redis agrees to the micro-dollar */
    int64_t spent = 0;
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) if (all[i].type == HAM_BUDGET) { spent += all[i].charged; nb++; }
    CHECK_MSG(spent <= HAM_BUDGET_CAP, "spent %" PRId64 " of %d", spent, HAM_BUDGET_CAP);
    CHECK_MSG(spent >= HAM_BUDGET_CAP / 2, "spent only %" PRId64, spent);
    CHECK(budget_refusals > 0);
    CHECK_EQ_INT(rkey("HGET %s s", "budget:t:key:ham-budget"), spent);
    CHECK_EQ_INT(rkey("HGET %s r", "budget:t:key:ham-budget"), 0);
    CHECK_EQ_INT(rkey("ZCARD %s", "conc:route:ham-conc"), 0);
    /* p, s, r (and a once 80% was crossed): no lease's reservation left behind */
    CHECK_EQ_INT(rkey("HLEN %s", "budget:t:key:ham-budget"), 3 + (spent * 100 >= HAM_BUDGET_CAP * 80));
    printf("two instances: %zu admissions (rpm %zu, peak window %zu/%d; in flight peak %d/%d; "
           "tokens peak %" PRId64 "/%d; spent %" PRId64 "/%d in %zu requests)\n",
           n, nt, worst, HAM_RPM_LIMIT, peak, HAM_CONC_LIMIT, worst_tok, HAM_TPM_LIMIT, spent, HAM_BUDGET_CAP, nb);
    free(ts);
    free(evs);
    free(all);
}

/* ---- Redis away ---- */

static void test_redis_stopped(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    limits *open = new_limiter(lp, true, 2000, NULL), *closed = new_limiter(lp, false, 2000, NULL);
    wait_connected(open, lp, 2000);
    wait_connected(closed, lp, 2000);
    gw_key k = make_key("outage");
    k.limits.rpm = 1000;
    k.budget.daily_usd = 10000000;
    limits_request req = {.key = &k, .max_cost = 5000};
    limits_result r;
    rs_kill(&g_rs);
    /* the first call may still wait for the lost connection's answer */
    limits_lease *l = admit_wait(open, lp, &req, &r, NULL);
    limits_cancel(l);
    l = admit_wait(closed, lp, &req, &r, NULL);
    limits_cancel(l);
    run_for(lp, 50);
    int slow = 0, bad_open = 0, bad_closed = 0;
    limits_lease *spent_lease = NULL;
    for (int i = 0; i < 40; i++) {
        int64_t took;
        l = admit_wait(open, lp, &req, &r, &took);
        if (r.outcome != LIMITS_ADMITTED || !r.degraded) bad_open++;
        if (took > 150) slow++;
        if (i == 0) spent_lease = l;
        else limits_cancel(l);
        l = admit_wait(closed, lp, &req, &r, &took);
        if (r.outcome != LIMITS_UNAVAILABLE || r.status != 503 || strcmp(r.code, "limits_unavailable")) bad_closed++;
        if (took > 150) slow++;
        limits_cancel(l);
        run_for(lp, 20);
    }
    CHECK_EQ_INT(bad_open, 0);
    CHECK_EQ_INT(bad_closed, 0);
    CHECK_EQ_INT(slow, 0);
    /* a degraded admission that spent money: counted once Redis is back */
    limits_finish(spent_lease, &(limits_usage){-1, 4321});
    limits_stats so, sc;
    limits_get_stats(open, &so);
    limits_get_stats(closed, &sc);
    CHECK_EQ_INT(so.outages, 1);                          /* one warning, not 40 */
    CHECK_EQ_INT(sc.outages, 1);
    CHECK(so.outage && sc.outage);
    CHECK(so.undecided >= 40 && sc.undecided >= 40);
    /* back: both reconnect by themselves */
    CHECK_MSG(rs_restart(&g_rs) == 0, "%s", g_rs.why);
    wait_connected(open, lp, 5000);
    wait_connected(closed, lp, 5000);
    limits_get_stats(open, &so);
    limits_get_stats(closed, &sc);
    CHECK(so.connected && !so.outage);
    CHECK(sc.connected && !sc.outage);
    l = admit_wait(closed, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(!r.degraded && r.at_us > 0);
    limits_cancel(l);
    drain(open, lp);
    drain(closed, lp);
    CHECK_EQ_INT(rkey("HGET %s s", "budget:d:key:outage"), 4321);
    limits_free(open);
    limits_free(closed);
    loop_free(lp);
}

static void test_redis_frozen(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    limits *open = new_limiter(lp, true, 2000, NULL), *closed = new_limiter(lp, false, 2000, NULL);
    wait_connected(open, lp, 2000);
    wait_connected(closed, lp, 2000);
    gw_route rt = make_route("frozen");
    rt.limits.concurrency = 1;
    limits_request req = {.route = &rt, .ttl_ms = 60000};
    limits_result r;
    rs_pause(&g_rs);
    int64_t took;
    limits_lease *a = admit_wait(open, lp, &req, &r, &took);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(r.degraded);
    CHECK_MSG(took >= 90 && took < 400, "took %" PRId64 " ms", took);
    limits_lease *b = admit_wait(closed, lp, &req, &r, &took);
    CHECK_EQ_INT(r.outcome, LIMITS_UNAVAILABLE);
    CHECK(took < 400);
    limits_cancel(b);
    /* cancelled while waiting: its callback never runs */
    waiter w = {0};
    limits_lease *c = NULL;
    CHECK_EQ_INT(limits_admit(closed, &req, &c, &r, on_done, &w), LIMITS_NOW);  /* in an outage: at once */
    limits_cancel(c);
    limits_finish(a, &(limits_usage){0, 0});
    run_for(lp, 300);
    rs_resume(&g_rs);
    wait_connected(open, lp, 5000);
    wait_connected(closed, lp, 5000);
    drain(open, lp);
    drain(closed, lp);
    run_for(lp, 100);
    /* the late answers took the slot for a and b; their ends gave it back */
    CHECK_EQ_INT(rkey("ZCARD %s", "conc:route:frozen"), 0);
    limits_stats so;
    limits_get_stats(open, &so);
    CHECK(so.late_replies >= 1);
    a = admit_wait(open, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(!r.degraded);
    /* a pending admission cancelled before its answer: no callback, slot released */
    c = NULL;
    w.calls = 0;
    gw_route rt2 = make_route("frozen2");
    rt2.limits.concurrency = 1;
    limits_request req2 = {.route = &rt2, .ttl_ms = 60000};
    CHECK_EQ_INT(limits_admit(closed, &req2, &c, &r, on_done, &w), LIMITS_LATER);
    limits_cancel(c);
    drain(closed, lp);
    run_for(lp, 50);
    CHECK_EQ_INT(w.calls, 0);
    CHECK_EQ_INT(rkey("ZCARD %s", "conc:route:frozen2"), 0);
    limits_cancel(a);
    drain(open, lp);
    limits_free(open);
    limits_free(closed);
    loop_free(lp);
}

/* A password and a database in the URL; a wrong password is an outage whose logs never
 * show either password. */
static redisReply *auth_cmd(const char *pass, const char *fmt, const char *arg) {
    redisContext *c = rs_connect(&g_rs);
    if (!c) return NULL;
    redisReply *r = redisCommand(c, "AUTH %s", pass);
    if (r) freeReplyObject(r);
    r = redisCommand(c, "SELECT 3");
    if (r) freeReplyObject(r);
    r = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
    redisFree(c);
    return r;
}

static void test_auth_and_db(void) {
    const char *pass = "s3cr3t-pass-0123";
    redisContext *c = rs_connect(&g_rs);
    CHECK(c != NULL);
    if (!c) return;
    redisReply *x = redisCommand(c, "CONFIG SET requirepass %s", pass);
    if (x) freeReplyObject(x);
    redisFree(c);
    /* the log goes to a file for this test */
    char logpath[256];
    snprintf(logpath, sizeof logpath, "%s/auth.log", tu_tmpdir());
    fflush(stderr);
    int saved = dup(2);
    FILE *lf = fopen(logpath, "w");
    dup2(fileno(lf), 2);
    sg_log_set_level(SG_LOG_INFO);

    sg_error err;
    loop *lp = loop_new(&err);
    char good[128], bad[128];
    snprintf(good, sizeof good, "redis://:%s@127.0.0.1:%d/3", pass, g_rs.port);
    snprintf(bad, sizeof bad, "redis://:wrong-pass-98765@127.0.0.1:%d/3", g_rs.port);
    gw_state st = {.redis_url = good, .fail_open = false, .key_prefix = g_prefix, .timeout_ms = 100};
    limits *ok = limits_new(lp, &st, NULL, &err);
    st.redis_url = bad;
    limits *no = limits_new(lp, &st, NULL, &err);
    CHECK(ok && no);
    gw_key k = make_key("authed");
    k.limits.concurrency = 3;
    limits_request req = {.key = &k};
    limits_result r;
    limits_lease *a = admit_wait(ok, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK(!r.degraded);
    limits_lease *b = admit_wait(no, lp, &req, &r, NULL);
    CHECK_EQ_INT(r.outcome, LIMITS_UNAVAILABLE);
    limits_cancel(b);
    run_for(lp, 300);
    limits_stats s;
    limits_get_stats(no, &s);
    CHECK(s.outage);
    /* the key is in database 3 */
    char key[128];
    snprintf(key, sizeof key, "%sconc:key:authed", g_prefix);
    redisReply *e = auth_cmd(pass, "ZCARD %s", key);
    CHECK(e && e->type == REDIS_REPLY_INTEGER && e->integer == 1);
    if (e) freeReplyObject(e);
    limits_cancel(a);
    drain(ok, lp);
    limits_free(ok);
    limits_free(no);
    loop_free(lp);
    e = auth_cmd(pass, "CONFIG SET requirepass %s", "");
    if (e) freeReplyObject(e);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(lf);
    sg_log_set_level(getenv("TU_VERBOSE") ? SG_LOG_DEBUG : SG_LOG_ERROR);
    size_t len;
    char *log = tu_read(logpath, &len);
    CHECK(log != NULL);
    if (log) {
        CHECK_MSG(strstr(log, "unavailable") != NULL, "log: %s", log);
        CHECK(strstr(log, "127.0.0.1:") != NULL);
        CHECK(!strstr(log, pass));
        CHECK(!strstr(log, "wrong-pass-98765"));
        free(log);
    }
    CHECK(rs_ping(&g_rs));                    /* no password any more */
}

/* Started while nothing listens: decisions by the policy at once, one outage. */
static void test_no_server(void) {
    sg_error err;
    loop *lp = loop_new(&err);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", rs_free_port());
    gw_state st = {.redis_url = url, .fail_open = true, .key_prefix = g_prefix, .timeout_ms = 100};
    limits *lim = limits_new(lp, &st, NULL, &err);
    CHECK(lim != NULL);
    gw_key k = make_key("nobody");
    k.limits.rpm = 1;
    limits_request req = {.key = &k};
    limits_result r;
    int bad = 0;
    for (int i = 0; i < 20; i++) {
        limits_lease *l = admit_wait(lim, lp, &req, &r, NULL);
        if (r.outcome != LIMITS_ADMITTED || !r.degraded) bad++;
        limits_finish(l, &(limits_usage){1, 0});
        run_for(lp, 10);
    }
    CHECK_EQ_INT(bad, 0);
    limits_stats s;
    limits_get_stats(lim, &s);
    CHECK_EQ_INT(s.outages, 1);
    CHECK(!s.connected);
    limits_free(lim);
    loop_free(lp);
}

int main(int argc, char **argv) {
    (void)argc;
    sg_log_set_level(getenv("TU_VERBOSE") ? SG_LOG_DEBUG : SG_LOG_ERROR);
    if (rs_start(&g_rs)) {
        fprintf(stderr, "test_limits_redis: cannot start redis-server: %s\n", g_rs.why);
        rs_stop(&g_rs);
        CHECK(!"redis-server started");
        return tu_finish(argv[0]);
    }
    snprintf(g_prefix, sizeof g_prefix, "t%d:", (int)getpid());
    RUN(test_decisions);
    RUN(test_attempts);
    RUN(test_noscript);
    RUN(test_alert_once);
    RUN(test_skewed_clock);
    RUN(test_two_instances);
    RUN(test_redis_stopped);
    RUN(test_redis_frozen);
    RUN(test_auth_and_db);
    RUN(test_no_server);
    rs_stop(&g_rs);
    return tu_finish(argv[0]);
}
