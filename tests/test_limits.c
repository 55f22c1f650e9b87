/* test_limits.c: the admission layer (limits.h) with the in-process backend, on a fake
 * clock: rpm exactness (never more than N admissions in any window, and a refusal only
 * when N are already in it, checked against a brute-force model over random arrivals),
 * tpm reservations and their reconciliation, concurrency, all-or-nothing across scopes,
 * refusal names and retry-after, budgets (reserve, refund, unpriced, periods, alert once
 * per period), the x-ratelimit-* values and their formatting, provider attempts, config
 * changes, the UTC calendar against gmtime, Redis URL parsing (never echoing a password),
 * and the token helpers. The Redis backend has its own test (test_limits_redis.c). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/limits.h"
#include "gateway/limits_int.h"
#include "testutil.h"

#define SEC 1000000LL
#define MIN (60 * SEC)
#define DAY (86400 * SEC)

static int64_t g_now;
static int64_t fake_clock(void *ctx) { (void)ctx; return g_now; }

typedef struct alert_log {
    int n;
    char last[256];
    int64_t spent, cap;
} alert_log;

static void on_alert(void *ctx, const char *label, int64_t spent, int64_t cap) {
    alert_log *a = ctx;
    a->n++;
    snprintf(a->last, sizeof a->last, "%s", label);
    a->spent = spent;
    a->cap = cap;
}

static alert_log g_alerts;

static limits *new_limits(void) {
    limits_opts o = {.clock_us = fake_clock, .on_alert = on_alert, .alert_ctx = &g_alerts};
    sg_error err;
    limits *lim = limits_new(NULL, NULL, &o, &err);
    CHECK(lim != NULL);
    memset(&g_alerts, 0, sizeof g_alerts);
    return lim;
}

static gw_limits none(void) { return (gw_limits){-1, -1, -1}; }
static gw_budget no_budget(void) { return (gw_budget){-1, -1, -1, 80}; }

static gw_key make_key(const char *id) {
    gw_key k;
    memset(&k, 0, sizeof k);
    k.id = (char *)id;
    k.all_routes = true;
    k.limits = none();
    k.budget = no_budget();
    return k;
}

static gw_route make_route(const char *name) {
    gw_route r;
    memset(&r, 0, sizeof r);
    r.name = (char *)name;
    r.limits = none();
    r.per_key_limits = none();
    r.budget = no_budget();
    return r;
}

static void never_called(void *arg, limits_lease *l, const limits_result *r) {
    (void)l; (void)r;
    *(int *)arg += 1;
}

static int g_cb_calls;

/* One admission; the in-process backend always answers at once. */
static limits_lease *admit(limits *lim, const gw_key *k, const gw_route *rt, int64_t est, int64_t cost,
                           limits_result *r) {
    limits_request req = {.key = k, .route = rt, .est_tokens = est, .max_cost = cost};
    limits_lease *l = NULL;
    int rc = limits_admit(lim, &req, &l, r, never_called, &g_cb_calls);
    if (rc != LIMITS_NOW || !l) CHECK(!"the in-process backend answers at once, with a lease");
    return l;
}

/* Admits and ends at once (rpm-only tests). */
static bool admit_once(limits *lim, const gw_key *k, const gw_route *rt, limits_result *r) {
    limits_lease *l = admit(lim, k, rt, 0, 0, r);
    limits_cancel(l);
    return r->outcome == LIMITS_ADMITTED;
}

/* ---- rpm ---- */

static void test_rpm_basic(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    k.limits.rpm = 3;
    limits_result r;
    g_now = 1000 * SEC;
    CHECK(admit_once(lim, &k, NULL, &r));
    CHECK_EQ_INT(r.headers.limit_requests, 3);
    CHECK_EQ_INT(r.headers.remaining_requests, 2);
    CHECK_EQ_INT(r.headers.reset_requests_ms, 60000);
    g_now += 10 * SEC;
    CHECK(admit_once(lim, &k, NULL, &r));
    g_now += 10 * SEC;
    CHECK(admit_once(lim, &k, NULL, &r));
    CHECK_EQ_INT(r.headers.remaining_requests, 0);
    CHECK_EQ_INT(r.headers.reset_requests_ms, 40000);   /* the first leaves at +60 s */
    g_now += 5 * SEC;                                    /* t = 25 s */
    CHECK(!admit_once(lim, &k, NULL, &r));
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_INT(r.status, 429);
    CHECK_EQ_STR(r.code, "rate_limit_exceeded");
    CHECK_EQ_STR(r.limit, "key team-a rpm");
    CHECK_EQ_INT(r.retry_after_ms, 35000);
    CHECK(strstr(r.message, "key team-a") && strstr(r.message, "3 requests per minute"));
    CHECK_EQ_INT(r.headers.remaining_requests, 0);
    /* one microsecond before the first admission leaves the window: still refused */
    g_now = 1060 * SEC - 1;
    CHECK(!admit_once(lim, &k, NULL, &r));
    CHECK_EQ_INT(r.retry_after_ms, 1);
    /* at exactly +60 s it has left: the window is (t - 60 s, t] */
    g_now = 1060 * SEC;
    CHECK(admit_once(lim, &k, NULL, &r));
    CHECK(!admit_once(lim, &k, NULL, &r));
    CHECK_EQ_INT(r.retry_after_ms, 10000);
    CHECK_EQ_INT(g_cb_calls, 0);
    limits_free(lim);
}

/* Random arrivals against a brute-force model: every window (t - 60 s, t] holds at most N
 * admissions, and a request is refused only when N admissions are already in its window
 * (so the limiter is exact both ways, not merely conservative). */
static void test_rpm_exact_random(void) {
    limits *lim = new_limits();
    gw_key k = make_key("k");
    gw_route rt = make_route("chat");
    const int64_t N = 7;
    k.limits.rpm = N;
    srand(12345);
    int64_t *adm = malloc(sizeof *adm * 20000);
    size_t n_adm = 0;
    int wrong_refusals = 0, wrong_retry = 0, refusals = 0;
    g_now = 5000 * SEC;
    for (int i = 0; i < 20000; i++) {
        /* bursts and gaps: 0 to 20 s between arrivals, often 0 */
        int64_t gap = rand() % 3 == 0 ? 0 : (int64_t)(rand() % 20000) * 1000 + rand() % 1000;
        g_now += gap;
        limits_result r;
        bool ok = admit_once(lim, &k, &rt, &r);
        size_t in_window = 0;
        for (size_t j = n_adm; j-- > 0 && adm[j] > g_now - MIN;) in_window++;
        if (ok) {
            adm[n_adm++] = g_now;
        } else {
            refusals++;
            if ((int64_t)in_window < N) wrong_refusals++;
            /* retry-after: when the (in_window - N + 1)-th oldest in the window leaves */
            int64_t leave = adm[n_adm - in_window + (size_t)(in_window - (size_t)N)] + MIN - g_now;
            if (r.retry_after_ms != (leave + 999) / 1000) wrong_retry++;
        }
    }
    /* the contract: no window of 60 s holds more than N admissions */
    int64_t worst = 0;
    for (size_t i = 0, j = 0; i < n_adm; i++) {
        while (adm[j] <= adm[i] - MIN) j++;
        if ((int64_t)(i - j + 1) > worst) worst = (int64_t)(i - j + 1);
    }
    CHECK_EQ_INT(worst, N);
    CHECK_EQ_INT(wrong_refusals, 0);
    CHECK_EQ_INT(wrong_retry, 0);
    CHECK(refusals > 1000);
    CHECK(n_adm > 1000);
    free(adm);
    limits_free(lim);
}

/* ---- tpm ---- */

static void test_tpm_reserve_reconcile(void) {
    limits *lim = new_limits();
    gw_route rt = make_route("chat");
    rt.limits.tpm = 1000;
    limits_result r;
    g_now = 100 * SEC;
    limits_lease *a = admit(lim, NULL, &rt, 400, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.limit_tokens, 1000);
    CHECK_EQ_INT(r.headers.remaining_tokens, 600);
    CHECK_EQ_INT(r.headers.limit_requests, -1);
    g_now += SEC;
    limits_lease *b = admit(lim, NULL, &rt, 400, 0, &r);
    CHECK_EQ_INT(r.headers.remaining_tokens, 200);
    g_now += SEC;
    limits_lease *c = admit(lim, NULL, &rt, 400, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "route chat tpm");
    CHECK_EQ_INT(r.retry_after_ms, 58000);        /* a's 400 leave at 160 s */
    CHECK(strstr(r.message, "1000 tokens per minute") != NULL);
    limits_cancel(c);
    /* a used 100 of its 400: 300 come back at once */
    limits_finish(a, &(limits_usage){100, -1});
    c = admit(lim, NULL, &rt, 400, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.remaining_tokens, 100);
    /* more than reserved is charged too (in place, at the admission time) */
    limits_finish(b, &(limits_usage){500, -1});
    limits_lease *d = admit(lim, NULL, &rt, 1, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);       /* 100 + 500 + 400 = 1000 */
    limits_cancel(d);
    /* unknown usage: the reservation stays */
    limits_finish(c, NULL);
    /* larger than the limit itself: never, whatever the wait */
    limits_lease *e = admit(lim, NULL, &rt, 1001, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_INT(r.retry_after_ms, -1);
    CHECK(strstr(r.message, "Request too large") != NULL);
    limits_cancel(e);
    /* a minute after the last admission, everything has left */
    g_now += 61 * SEC;
    limits_lease *f = admit(lim, NULL, &rt, 1000, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.remaining_tokens, 0);
    limits_cancel(f);
    limits_free(lim);
}

/* What a key's windows hold now (the dashboard's live view): its requests and tokens in
 * the last minute and its slots, reconciled with the usage; nothing added for a key never
 * counted. */
static void test_key_now(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    k.limits.rpm = 10;
    k.limits.tpm = 1000;
    k.limits.concurrency = 5;
    limits_result r;
    limits_now n;
    g_now = 500 * SEC;
    CHECK(limits_key_now(lim, "team-a", &n));
    CHECK(n.requests == 0 && n.tokens == 0 && n.inflight == 0);
    limits_lease *a = admit(lim, &k, NULL, 300, 0, &r);
    g_now += 10 * SEC;
    limits_lease *b = admit(lim, &k, NULL, 200, 0, &r);
    CHECK(limits_key_now(lim, "team-a", &n));
    CHECK_EQ_INT(n.requests, 2);
    CHECK_EQ_INT(n.tokens, 500);
    CHECK_EQ_INT(n.inflight, 2);
    limits_finish(a, &(limits_usage){120, -1});   /* the charge becomes the usage */
    CHECK(limits_key_now(lim, "team-a", &n));
    CHECK_EQ_INT(n.tokens, 320);
    CHECK_EQ_INT(n.inflight, 1);
    g_now += 55 * SEC;   /* a (at 500 s) has left the window, b (510 s) not */
    CHECK(limits_key_now(lim, "team-a", &n));
    CHECK_EQ_INT(n.requests, 1);
    CHECK_EQ_INT(n.tokens, 200);
    limits_finish(b, &(limits_usage){50, -1});
    CHECK(limits_key_now(lim, "nobody", &n) && n.requests == 0 && n.tokens == 0);
    limits_free(lim);
}

/* Random reservations and actual usage <= reservation: at every admission the window's
 * charges plus the reservation fit, refusals happen only when they would not, and the
 * actual tokens of admissions in any window never exceed the limit. */
static void test_tpm_exact_random(void) {
    limits *lim = new_limits();
    gw_key k = make_key("k");
    const int64_t T = 5000;
    k.limits.tpm = T;
    srand(777);
    enum { N = 6000 };
    struct rec { int64_t t, charge; limits_lease *l; bool open; } *rec = calloc(N, sizeof *rec);
    int n = 0, wrong = 0, refused = 0;
    g_now = 9000 * SEC;
    for (int i = 0; i < N; i++) {
        g_now += (int64_t)(rand() % 3000) * 1000;
        /* end some open leases with their actual usage */
        for (int j = 0; j < n; j++)
            if (rec[j].open && rand() % 4 == 0) {
                int64_t actual = rand() % (rec[j].charge + 1);
                limits_finish(rec[j].l, &(limits_usage){actual, 0});
                rec[j].charge = actual;
                rec[j].open = false;
            }
        int64_t est = 1 + rand() % 1500;
        int64_t in_window = 0;
        for (int j = 0; j < n; j++)
            if (rec[j].t > g_now - MIN) in_window += rec[j].charge;
        limits_result r;
        limits_lease *l = admit(lim, &k, NULL, est, 0, &r);
        bool ok = r.outcome == LIMITS_ADMITTED;
        if (ok != (in_window + est <= T)) wrong++;
        if (ok) rec[n++] = (struct rec){g_now, est, l, true};
        else { refused++; limits_cancel(l); }
    }
    for (int j = 0; j < n; j++)
        if (rec[j].open) limits_finish(rec[j].l, &(limits_usage){rec[j].charge, 0});
    int64_t worst = 0;
    for (int i = 0; i < n; i++) {
        int64_t s = 0;
        for (int j = 0; j <= i; j++)
            if (rec[j].t > rec[i].t - MIN) s += rec[j].charge;
        if (s > worst) worst = s;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK(worst <= T);
    CHECK(refused > 100);
    free(rec);
    limits_free(lim);
}

/* ---- concurrency ---- */

static void test_concurrency(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    gw_route rt = make_route("chat");
    gw_key_route_limits krl = {.route = &rt, .limits = {-1, -1, 2}};
    k.route_limits = &krl;
    k.n_route_limits = 1;
    limits_result r;
    g_now = 50 * SEC;
    limits_lease *a = admit(lim, &k, &rt, 0, 0, &r);
    limits_lease *b = admit(lim, &k, &rt, 0, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_lease *c = admit(lim, &k, &rt, 0, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "key team-a route chat concurrency");
    CHECK_EQ_INT(r.retry_after_ms, 1000);
    limits_cancel(c);
    /* the same key on another route is not limited by this pair */
    gw_route other = make_route("other");
    limits_lease *d = admit(lim, &k, &other, 0, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(d);
    limits_finish(a, &(limits_usage){10, 0});
    c = admit(lim, &k, &rt, 0, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(b);
    limits_cancel(c);
    /* per_key_limits of the route apply to keys without their own entry */
    gw_key k2 = make_key("team-b");
    rt.per_key_limits.concurrency = 1;
    a = admit(lim, &k2, &rt, 0, 0, &r);
    b = admit(lim, &k2, &rt, 0, 0, &r);
    CHECK_EQ_STR(r.limit, "key team-b route chat concurrency");
    limits_cancel(a);
    limits_cancel(b);
    limits_free(lim);
}

/* ---- scopes, names, all or nothing ---- */

static void test_scopes_all_or_nothing(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    k.limits.rpm = 10;
    gw_route chat = make_route("chat"), other = make_route("other");
    chat.limits.rpm = 2;
    limits_result r;
    g_now = 7 * DAY;
    CHECK(admit_once(lim, &k, &chat, &r));
    /* tightest: the route's 2 (1 left) rather than the key's 10 (9 left) */
    CHECK_EQ_INT(r.headers.limit_requests, 2);
    CHECK_EQ_INT(r.headers.remaining_requests, 1);
    CHECK(admit_once(lim, &k, &chat, &r));
    CHECK(!admit_once(lim, &k, &chat, &r));
    CHECK_EQ_STR(r.limit, "route chat rpm");
    /* refusals reserved nothing on the key: 8 more fit on another route, not 7 */
    for (int i = 0; i < 8; i++) CHECK(admit_once(lim, &k, &other, &r));
    CHECK(!admit_once(lim, &k, &other, &r));
    CHECK_EQ_STR(r.limit, "key team-a rpm");
    /* a direct model id (no route): key limits only */
    CHECK(!admit_once(lim, &k, NULL, &r));
    CHECK_EQ_STR(r.limit, "key team-a rpm");
    /* several refuse: the one with the longest wait is named */
    g_now += 30 * SEC;
    chat.limits.tpm = 10;
    limits_lease *l = admit(lim, &k, &chat, 11, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "route chat tpm");     /* never beats 30 s */
    CHECK_EQ_INT(r.retry_after_ms, -1);
    limits_cancel(l);
    /* no key, no limits: admitted, nothing counted, no headers */
    gw_route bare = make_route("bare");
    l = admit(lim, NULL, &bare, 100, -1, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.limit_requests, -1);
    CHECK_EQ_INT(r.headers.limit_tokens, -1);
    limits_header h[LIMITS_MAX_HEADERS];
    CHECK_EQ_INT(limits_format_headers(&r, h), 0);
    limits_finish(l, NULL);
    limits_free(lim);
}

/* The config changes (reload): the counters stay, the new values apply at once. */
static void test_reload(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    k.limits.rpm = 5;
    limits_result r;
    g_now = 3 * DAY;
    for (int i = 0; i < 4; i++) CHECK(admit_once(lim, &k, NULL, &r));
    gw_key k2 = make_key("team-a");              /* a new config's struct, same id */
    k2.limits.rpm = 3;
    CHECK(!admit_once(lim, &k2, NULL, &r));
    CHECK_EQ_INT(r.headers.remaining_requests, 0);
    k2.limits.rpm = 6;
    CHECK(admit_once(lim, &k2, NULL, &r));
    CHECK(admit_once(lim, &k2, NULL, &r));
    CHECK(!admit_once(lim, &k2, NULL, &r));
    limits_free(lim);
}

/* ---- provider attempts ---- */

static void test_provider_attempts(void) {
    limits *lim = new_limits();
    gw_provider p;
    memset(&p, 0, sizeof p);
    p.name = "openai";
    p.limits = (gw_limits){2, 1000, 1};
    limits_result r;
    limits_lease *a = NULL, *b = NULL;
    g_now = 20 * DAY;
    CHECK_EQ_INT(limits_attempt(lim, &p, NULL, 300, 0, &a, &r, never_called, &g_cb_calls), LIMITS_NOW);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.limit_requests, 2);
    CHECK_EQ_INT(r.headers.limit_tokens, 1000);
    limits_attempt(lim, &p, NULL, 300, 0, &b, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "provider openai concurrency");
    limits_cancel(b);
    limits_finish(a, &(limits_usage){250, 12});
    limits_attempt(lim, &p, NULL, 800, 0, &b, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);     /* 250 + 800 > 1000 */
    CHECK_EQ_STR(r.limit, "provider openai tpm");
    limits_cancel(b);
    limits_attempt(lim, &p, NULL, 700, 0, &b, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(b);
    limits_attempt(lim, &p, NULL, 1, 0, &b, &r, never_called, &g_cb_calls);
    CHECK_EQ_STR(r.limit, "provider openai rpm");
    limits_cancel(b);
    /* a provider with no limits: admitted, nothing kept */
    gw_provider q;
    memset(&q, 0, sizeof q);
    q.name = "groq";
    q.limits = none();
    limits_attempt(lim, &q, NULL, 1, 0, &b, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(b);
    CHECK_EQ_INT(g_cb_calls, 0);
    limits_free(lim);
}

/* The account's limits for one model at a provider, with the provider's own: both checked
 * per attempt; a model's counters are its own (another model of the provider is not held). */
static void test_model_attempts(void) {
    limits *lim = new_limits();
    gw_provider p;
    memset(&p, 0, sizeof p);
    p.name = "openai";
    p.limits = (gw_limits){3, -1, -1};
    gw_model_info big, small;
    memset(&big, 0, sizeof big);
    memset(&small, 0, sizeof small);
    big.model = "gpt-4o";
    big.limits = (gw_limits){1, -1, -1};
    small.model = "gpt-4o-mini";
    small.limits = none();
    limits_result r;
    limits_lease *a = NULL;
    g_now = 21 * DAY;
    limits_attempt(lim, &p, &big, 10, 0, &a, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    CHECK_EQ_INT(r.headers.limit_requests, 1);            /* the tightest: the model's */
    limits_finish(a, &(limits_usage){5, -1});
    limits_attempt(lim, &p, &big, 10, 0, &a, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "model openai/gpt-4o rpm");
    CHECK(r.retry_after_ms > 0 && r.retry_after_ms <= 60000);
    limits_cancel(a);
    /* the other model is not held by gpt-4o's limit, only by the provider's (3) */
    for (int i = 0; i < 2; i++) {
        limits_attempt(lim, &p, &small, 10, 0, &a, &r, never_called, &g_cb_calls);
        CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
        limits_finish(a, &(limits_usage){5, -1});
    }
    limits_attempt(lim, &p, NULL, 10, 0, &a, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "provider openai rpm");
    limits_cancel(a);
    /* a refused attempt consumed nothing: a minute later the model passes again */
    g_now += 60 * SEC;
    limits_attempt(lim, &p, &big, 10, 0, &a, &r, never_called, &g_cb_calls);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(a);
    CHECK_EQ_INT(g_cb_calls, 0);
    limits_free(lim);
}

/* ---- budgets ---- */

static void test_budget_reserve_refund(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    k.budget.daily_usd = 1000000;                /* $1 */
    limits_result r;
    g_now = 20000 * DAY + 20 * 3600 * SEC;       /* 20:00 UTC */
    limits_lease *a = admit(lim, &k, NULL, 0, 300000, &r);
    limits_lease *b = admit(lim, &k, NULL, 0, 300000, &r);
    limits_lease *c = admit(lim, &k, NULL, 0, 300000, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_lease *d = admit(lim, &k, NULL, 0, 300000, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_INT(r.status, 429);
    CHECK_EQ_STR(r.code, "budget_exceeded");
    CHECK_EQ_STR(r.limit, "budget key team-a daily");
    CHECK_EQ_INT(r.retry_after_ms, 4 * 3600 * 1000);   /* midnight UTC */
    CHECK(strstr(r.message, "$1.000000") && strstr(r.message, "$0.300000"));
    limits_cancel(d);
    /* a cost 0.12 of its 0.30: 0.18 back */
    limits_finish(a, &(limits_usage){-1, 120000});
    d = admit(lim, &k, NULL, 0, 300000, &r);     /* 0.12 + 0.60 + 0.30 = 1.02 > 1 */
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    limits_cancel(d);
    d = admit(lim, &k, NULL, 0, 280000, &r);     /* exactly $1: fits */
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    /* unknown cost: the maximum is charged */
    limits_finish(b, NULL);
    limits_finish(c, &(limits_usage){-1, 0});
    limits_cancel(d);
    limits_lease *e = admit(lim, &k, NULL, 0, 580000, &r);   /* 0.12 + 0.30 + 0.58 */
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_lease *f = admit(lim, &k, NULL, 0, 1, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    limits_cancel(f);
    /* a free request fits a full budget */
    f = admit(lim, &k, NULL, 0, 0, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(f);
    /* more than the cap itself: never */
    f = admit(lim, &k, NULL, 0, 1000001, &r);
    CHECK_EQ_INT(r.retry_after_ms, -1);
    CHECK(strstr(r.message, "less than this request's maximum cost") != NULL);
    limits_cancel(f);
    /* next day: a new period; e's reconciliation belongs to the old one and is dropped */
    g_now += 5 * 3600 * SEC;
    limits_finish(e, &(limits_usage){-1, 580000});
    f = admit(lim, &k, NULL, 0, 1000000, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(f);
    limits_free(lim);
}

static void test_budget_unpriced(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    gw_route rt = make_route("chat");
    rt.budget.monthly_usd = 5000000;
    limits_result r;
    g_now = 19000 * DAY;
    limits_lease *l = admit(lim, &k, &rt, 10, -1, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_INT(r.status, 403);
    CHECK_EQ_STR(r.code, "budget_unpriced");
    CHECK_EQ_STR(r.limit, "budget route chat monthly");
    CHECK_EQ_INT(r.retry_after_ms, -1);
    CHECK(strstr(r.message, "no price") != NULL);
    limits_header h[LIMITS_MAX_HEADERS];
    CHECK_EQ_INT(limits_format_headers(&r, h), 0);   /* no retry-after: retrying cannot help */
    limits_finish(l, NULL);
    /* without a budget an unpriced request passes */
    gw_route free_rt = make_route("free");
    l = admit(lim, &k, &free_rt, 10, -1, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_finish(l, NULL);
    limits_free(lim);
}

static void test_budget_periods(void) {
    limits *lim = new_limits();
    gw_route rt = make_route("chat");
    rt.budget.monthly_usd = 1000000;
    rt.budget.total_usd = 2500000;
    limits_result r;
    /* 2025-01-31 23:00 UTC */
    struct tm tm = {.tm_year = 125, .tm_mon = 0, .tm_mday = 31, .tm_hour = 23};
    g_now = (int64_t)timegm(&tm) * SEC;
    limits_lease *l = admit(lim, NULL, &rt, 0, 1000000, &r);
    limits_finish(l, &(limits_usage){-1, 1000000});
    l = admit(lim, NULL, &rt, 0, 1, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);
    CHECK_EQ_STR(r.limit, "budget route chat monthly");
    CHECK_EQ_INT(r.retry_after_ms, 3600 * 1000);  /* February starts in an hour */
    limits_cancel(l);
    g_now += 3600 * SEC;                          /* 2025-02-01 00:00 */
    l = admit(lim, NULL, &rt, 0, 1000000, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_finish(l, &(limits_usage){-1, 1000000});
    g_now += 28 * DAY;                            /* March */
    l = admit(lim, NULL, &rt, 0, 600000, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_REFUSED);      /* 2.0 + 0.6 > 2.5 in total */
    CHECK_EQ_STR(r.limit, "budget route chat total");
    CHECK_EQ_INT(r.retry_after_ms, -1);
    CHECK(strstr(r.message, "total budget") != NULL);
    limits_cancel(l);
    l = admit(lim, NULL, &rt, 0, 500000, &r);
    CHECK_EQ_INT(r.outcome, LIMITS_ADMITTED);
    limits_cancel(l);
    limits_free(lim);
}

static void test_budget_alert(void) {
    limits *lim = new_limits();
    gw_key k = make_key("team-a");
    k.budget.daily_usd = 1000000;
    k.budget.alert_percent = 50;
    limits_result r;
    g_now = 21000 * DAY + 3600 * SEC;
    limits_lease *a = admit(lim, &k, NULL, 0, 400000, &r);
    limits_lease *b = admit(lim, &k, NULL, 0, 400000, &r);
    limits_finish(a, &(limits_usage){-1, 400000});
    CHECK_EQ_INT(g_alerts.n, 0);                  /* reservations do not alert: spending does */
    limits_finish(b, &(limits_usage){-1, 100000});
    CHECK_EQ_INT(g_alerts.n, 1);
    CHECK_EQ_STR(g_alerts.last, "budget key team-a daily");
    CHECK_EQ_INT(g_alerts.spent, 500000);
    CHECK_EQ_INT(g_alerts.cap, 1000000);
    a = admit(lim, &k, NULL, 0, 400000, &r);
    limits_finish(a, &(limits_usage){-1, 400000});
    CHECK_EQ_INT(g_alerts.n, 1);                  /* once per period */
    g_now += DAY;
    a = admit(lim, &k, NULL, 0, 600000, &r);
    limits_finish(a, &(limits_usage){-1, 600000});
    CHECK_EQ_INT(g_alerts.n, 2);                  /* and again in the next */
    limits_free(lim);
}

/* ---- headers ---- */

static void test_headers_format(void) {
    char b[24];
    limits_format_duration(0, b, sizeof b);
    CHECK_EQ_STR(b, "0s");
    limits_format_duration(20, b, sizeof b);
    CHECK_EQ_STR(b, "20ms");
    limits_format_duration(1500, b, sizeof b);
    CHECK_EQ_STR(b, "1.5s");
    limits_format_duration(1001, b, sizeof b);
    CHECK_EQ_STR(b, "1.001s");
    limits_format_duration(60000, b, sizeof b);
    CHECK_EQ_STR(b, "1m0s");
    limits_format_duration(360000, b, sizeof b);
    CHECK_EQ_STR(b, "6m0s");
    limits_format_duration(3723500, b, sizeof b);
    CHECK_EQ_STR(b, "1h2m3.5s");

    limits_result r;
    memset(&r, 0, sizeof r);
    r.outcome = LIMITS_REFUSED;
    r.retry_after_ms = 1200;
    r.headers = (limits_headers){60, 0, 1200, 150000, 149000, 400};
    limits_header h[LIMITS_MAX_HEADERS];
    size_t n = limits_format_headers(&r, h);
    CHECK_EQ_INT(n, 8);
    const char *want[][2] = {
        {"x-ratelimit-limit-requests", "60"}, {"x-ratelimit-remaining-requests", "0"},
        {"x-ratelimit-reset-requests", "1.2s"}, {"x-ratelimit-limit-tokens", "150000"},
        {"x-ratelimit-remaining-tokens", "149000"}, {"x-ratelimit-reset-tokens", "400ms"},
        {"retry-after", "2"}, {"retry-after-ms", "1200"},
    };
    for (size_t i = 0; i < n && i < 8; i++) {
        CHECK_EQ_STR(h[i].name, want[i][0]);
        CHECK_EQ_STR(h[i].value, want[i][1]);
    }
    r.outcome = LIMITS_ADMITTED;
    r.headers.limit_requests = -1;
    n = limits_format_headers(&r, h);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(h[0].name, "x-ratelimit-limit-tokens");
}

/* ---- helpers ---- */

static void test_calendar(void) {
    int bad = 0;
    for (int64_t day = -800; day < 60000; day++) {   /* 1967 .. 2134 */
        time_t t = (time_t)(day * 86400 + 43200);
        struct tm tm;
        gmtime_r(&t, &tm);
        int64_t month = (int64_t)(tm.tm_year + 1900) * 12 + tm.tm_mon;
        if (limits_month_of_day(day) != month) bad++;
        if (tm.tm_mday == 1 && limits_day_of_month(month) != day) bad++;
        if (limits_day_of((int64_t)t * SEC) != day) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(limits_day_of(-1), -1);
    /* 2024-02-29 12:00 UTC: the month ends in 12 hours */
    struct tm tm = {.tm_year = 124, .tm_mon = 1, .tm_mday = 29, .tm_hour = 12};
    int64_t us = (int64_t)timegm(&tm) * SEC;
    CHECK_EQ_INT(limits_period_left_us(LPER_MONTH, us), 12 * 3600 * SEC);
    CHECK_EQ_INT(limits_period_left_us(LPER_DAY, us), 12 * 3600 * SEC);
    CHECK_EQ_INT(limits_period_left_us(LPER_TOTAL, us), -1);
    CHECK_EQ_INT(limits_period_id(LPER_MONTH, us), 2024 * 12 + 1);
}

static void test_redis_url(void) {
    limits_redis_url u;
    sg_error err;
    CHECK_EQ_INT(limits_redis_parse_url("redis://10.0.0.5", &u, &err), 0);
    CHECK_EQ_STR(u.host, "10.0.0.5");
    CHECK_EQ_INT(u.port, 6379);
    CHECK_EQ_INT(u.db, 0);
    CHECK_EQ_STR(u.password, "");
    CHECK_EQ_INT(limits_redis_parse_url("redis://:p%40ss:w@cache.local:6380/2", &u, &err), 0);
    CHECK_EQ_STR(u.host, "cache.local");
    CHECK_EQ_INT(u.port, 6380);
    CHECK_EQ_INT(u.db, 2);
    CHECK_EQ_STR(u.user, "");
    CHECK_EQ_STR(u.password, "p@ss:w");
    CHECK_EQ_INT(limits_redis_parse_url("redis://app:secret@[::1]:7000/", &u, &err), 0);
    CHECK_EQ_STR(u.host, "::1");
    CHECK_EQ_INT(u.port, 7000);
    CHECK_EQ_STR(u.user, "app");
    CHECK_EQ_STR(u.password, "secret");
    CHECK_EQ_INT(limits_redis_parse_url("unix:///run/redis/redis.sock?db=3", &u, &err), 0);
    CHECK(u.unix_socket);
    CHECK_EQ_STR(u.host, "/run/redis/redis.sock");
    CHECK_EQ_INT(u.db, 3);
    /* failures never echo the URL (it may hold a password) */
    const char *bad[] = {"rediss://:hunter2@host", "redis://:hunter2@host:99999", "redis://:hunter2@",
                         "redis://:hunter2@host/notadb", "http://:hunter2@host"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ_INT(limits_redis_parse_url(bad[i], &u, &err), -1);
        CHECK_MSG(!strstr(err.msg, "hunter2"), "%s", err.msg);
    }
    CHECK(strstr(err.msg, "redis://") != NULL);
    limits_redis_parse_url("rediss://x", &u, &err);
    CHECK(strstr(err.msg, "TLS") != NULL);
    /* a limiter with rediss:// refuses to start */
    gw_state st = {.redis_url = "rediss://:hunter2@host", .fail_open = true, .timeout_ms = 100};
    loop *lp = loop_new(&err);
    CHECK(limits_new(lp, &st, NULL, &err) == NULL);
    CHECK(!strstr(err.msg, "hunter2"));
    loop_free(lp);
}

static void test_tokens(void) {
    CHECK_EQ_INT(limits_estimate_tokens(300, 100, 4096), 200);
    CHECK_EQ_INT(limits_estimate_tokens(301, 0, 4096), 101 + 4096);
    CHECK_EQ_INT(limits_estimate_tokens(0, -1, 0), 0);
    gw_usage u;
    gw_usage_init(&u);
    CHECK_EQ_INT(limits_usage_tokens(&u), -1);
    u.input = 10;
    u.output = 5;
    CHECK_EQ_INT(limits_usage_tokens(&u), 15);
    u.cache_read = 100;
    u.cache_write = 3;
    u.reasoning = 4;                              /* part of output: not added again */
    CHECK_EQ_INT(limits_usage_tokens(&u), 118);
}

static void test_stats(void) {
    limits *lim = new_limits();
    gw_key k = make_key("a");
    k.limits.rpm = 1;
    limits_result r;
    g_now = 10 * DAY;
    admit_once(lim, &k, NULL, &r);
    admit_once(lim, &k, NULL, &r);
    limits_stats s;
    limits_get_stats(lim, &s);
    CHECK(!s.redis);
    CHECK_EQ_INT(s.admits, 1);
    CHECK_EQ_INT(s.refusals, 1);
    CHECK_EQ_INT(s.in_flight, 0);
    limits_free(lim);
}

int main(int argc, char **argv) {
    (void)argc;
    RUN(test_rpm_basic);
    RUN(test_rpm_exact_random);
    RUN(test_tpm_reserve_reconcile);
    RUN(test_key_now);
    RUN(test_tpm_exact_random);
    RUN(test_concurrency);
    RUN(test_scopes_all_or_nothing);
    RUN(test_reload);
    RUN(test_provider_attempts);
    RUN(test_model_attempts);
    RUN(test_budget_reserve_refund);
    RUN(test_budget_unpriced);
    RUN(test_budget_periods);
    RUN(test_budget_alert);
    RUN(test_headers_format);
    RUN(test_calendar);
    RUN(test_redis_url);
    RUN(test_tokens);
    RUN(test_stats);
    return tu_finish(argv[0]);
}
