/* bench_limits.c: the latency an admission check adds to a request (limits.h), in
 * process and through Redis.
 *
 * The request checked is a realistic worst case: a key with rpm, tpm and concurrency, a
 * route with the same three, a (key, route) limit, and daily and monthly budgets on both
 * key and route: 11 counters per admission. Each admission is ended at once (its usage
 * reconciled), as a request would be, but only the admission is timed: the end of a lease
 * is sent without waiting and adds nothing to a request's latency.
 *
 *   in-process  at 1,000 checks/s (paced, caches cooling between checks) and at the
 *               highest rate one thread sustains;
 *   Redis       a redis-server started here (tests/limits/redis_server.h; or
 *               BENCH_REDIS_URL), from the call to the callback on the event loop: at
 *               1,000 checks/s (one every millisecond), one at a time back to back, and
 *               with 64 in flight (the most one instance pushes through one connection).
 * Prints p50 / p99 in microseconds and the rate reached. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "gateway/limits.h"
#include "../tests/limits/redis_server.h"
#include "bench_util.h"

static void report(const char *what, int64_t *ns, size_t n, double seconds) {
    qsort(ns, n, sizeof *ns, bench_cmp_i64);
    printf("%-40s p50 %8.2f us   p99 %8.2f us", what, ns[n / 2] / 1000.0, ns[(size_t)(n * 0.99)] / 1000.0);
    if (seconds > 0) printf("   %9.0f checks/s", n / seconds);
    printf("\n");
}

static gw_key g_key;
static gw_route g_route;
static gw_key_route_limits g_krl;

static void setup_config(void) {
    const int64_t big = 1000000000000LL;
    memset(&g_route, 0, sizeof g_route);
    g_route.name = "chat";
    g_route.limits = (gw_limits){big, big, big};
    g_route.per_key_limits = (gw_limits){-1, -1, -1};
    g_route.budget = (gw_budget){big, big, -1, 80};
    memset(&g_key, 0, sizeof g_key);
    g_key.id = "team-a";
    g_key.all_routes = true;
    g_key.limits = (gw_limits){big, big, big};
    g_key.budget = (gw_budget){big, big, -1, 80};
    g_krl = (gw_key_route_limits){.route = &g_route, .limits = {big, -1, big}};
    g_key.route_limits = &g_krl;
    g_key.n_route_limits = 1;
}

static gw_key g_key2;
static gw_route g_route2;

/* A typical configuration: the key's rpm and tpm and daily budget, the route's concurrency. */
static void setup_typical(void) {
    const int64_t big = 1000000000000LL;
    memset(&g_route2, 0, sizeof g_route2);
    g_route2.name = "chat";
    g_route2.limits = (gw_limits){-1, -1, big};
    g_route2.per_key_limits = (gw_limits){-1, -1, -1};
    g_route2.budget = (gw_budget){-1, -1, -1, 80};
    memset(&g_key2, 0, sizeof g_key2);
    g_key2.id = "team-b";
    g_key2.all_routes = true;
    g_key2.limits = (gw_limits){big, big, -1};
    g_key2.budget = (gw_budget){big, -1, -1, 80};
}

static const limits_request k_full = {.key = &g_key, .route = &g_route, .est_tokens = 1500, .max_cost = 2000, .ttl_ms = 60000};
static const limits_request k_typical = {.key = &g_key2, .route = &g_route2, .est_tokens = 1500, .max_cost = 2000, .ttl_ms = 60000};
static const limits_request *g_req = &k_full;

static void noop_cb(void *arg, limits_lease *l, const limits_result *r) { (void)arg; (void)l; (void)r; }

static void bench_inprocess(void) {
    sg_error err;
    limits *lim = limits_new(NULL, NULL, NULL, &err);
    enum { N_PACED = 2000, N_MAX = 300000 };
    int64_t *ns = malloc(sizeof *ns * N_MAX);
    limits_result r;
    limits_lease *l;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < N_PACED; i++) {
        while (bench_now_ns() < t0 + (int64_t)i * 1000000) ;   /* one per millisecond */
        int64_t a = bench_now_ns();
        limits_admit(lim, g_req, &l, &r, noop_cb, NULL);
        ns[i] = bench_now_ns() - a;
        limits_finish(l, &(limits_usage){700, 900});
    }
    report("in-process, 1,000 checks/s", ns, N_PACED, (bench_now_ns() - t0) / 1e9);
    t0 = bench_now_ns();
    for (int i = 0; i < N_MAX; i++) {
        int64_t a = bench_now_ns();
        limits_admit(lim, g_req, &l, &r, noop_cb, NULL);
        ns[i] = bench_now_ns() - a;
        limits_finish(l, &(limits_usage){700, 900});
    }
    double secs = (bench_now_ns() - t0) / 1e9;
    report("in-process, max rate (one thread)", ns, N_MAX, secs);
    free(ns);
    limits_free(lim);
}

/* ---- Redis ---- */

typedef struct rb {
    loop *lp;
    limits *lim;
    int64_t *ns;
    size_t n, want;
    int in_flight, depth;
    int64_t t0;
    uint64_t t0_ms;           /* loop clock */
    loop_timer pace;
    bool paced;
    int failures;
} rb;

typedef struct call {
    rb *b;
    int64_t start;
} call;

static void issue(rb *b);

static void done(rb *b, call *c, limits_lease *l, const limits_result *r) {
    if (r->outcome != LIMITS_ADMITTED || r->degraded) b->failures++;
    if (b->n < b->want) b->ns[b->n++] = bench_now_ns() - c->start;
    limits_finish(l, &(limits_usage){700, 900});
    free(c);
    b->in_flight--;
    if (!b->paced && b->n + (size_t)b->in_flight < b->want) issue(b);
}

static void on_cb(void *arg, limits_lease *l, const limits_result *r) {
    call *c = arg;
    done(c->b, c, l, r);
}

static void issue(rb *b) {
    call *c = malloc(sizeof *c);
    c->b = b;
    c->start = bench_now_ns();
    b->in_flight++;
    limits_lease *l;
    limits_result r;
    if (limits_admit(b->lim, g_req, &l, &r, on_cb, c) == LIMITS_NOW) done(b, c, l, &r);
}

static void pace_fire(loop *lp, loop_timer *t, void *arg) {
    rb *b = arg;
    size_t issued = b->n + (size_t)b->in_flight;
    if (issued < b->want) issue(b);
    /* the next one at t0 + (issued + 1) ms: no drift */
    if (issued + 1 < b->want) loop_timer_start_at(lp, t, b->t0_ms + issued + 1);
}

static void run_redis(rb *b, const char *what, size_t want, bool paced, int depth) {
    b->n = 0;
    b->want = want;
    b->paced = paced;
    b->depth = depth;
    b->failures = 0;
    b->t0 = bench_now_ns();
    if (paced) {
        b->t0_ms = loop_update_now(b->lp);
        loop_timer_init(&b->pace, pace_fire, b);
        loop_timer_start_at(b->lp, &b->pace, b->t0_ms);
    } else {
        for (int i = 0; i < depth; i++) issue(b);
    }
    int64_t until = bench_now_ns() + 60 * 1000000000LL;
    while ((b->n < want || b->in_flight) && bench_now_ns() < until) loop_run_once(b->lp, 1, NULL);
    double secs = (bench_now_ns() - b->t0) / 1e9;
    limits_stats s;
    do {
        loop_run_once(b->lp, 1, NULL);
        limits_get_stats(b->lim, &s);
    } while (s.in_flight && bench_now_ns() < until);
    report(what, b->ns, b->n, secs);
    if (b->failures) printf("  (%d checks were not admitted by Redis: degraded or refused)\n", b->failures);
}

/* Redis's own account of the scripts' cost: every call's duration in the server (SLOWLOG
 * with a threshold of 0), apart from the network, the client and the loop. The first
 * script seen is the admission, the other the end of a lease. */
static redisReply *rs_cmd(redisContext *c, const char *cmd) {
    redisReply *r = redisCommand(c, cmd);
    if (r) freeReplyObject(r);
    return r;
}

static void slowlog_start(const redis_server *rs) {
    redisContext *c = rs_connect(rs);
    if (!c) return;
    rs_cmd(c, "CONFIG SET slowlog-max-len 100000");
    rs_cmd(c, "CONFIG SET slowlog-log-slower-than 0");
    rs_cmd(c, "SLOWLOG RESET");
    redisFree(c);
}

static void slowlog_report(const redis_server *rs) {
    redisContext *c = rs_connect(rs);
    if (!c) return;
    redisReply *r = redisCommand(c, "SLOWLOG GET 100000");
    int64_t *d[2] = {malloc(sizeof(int64_t) * 100000), malloc(sizeof(int64_t) * 100000)};
    size_t n[2] = {0, 0};
    char sha[2][48] = {"", ""};
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = r->elements; i-- > 0;) {            /* oldest first */
            redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 4) continue;
            redisReply *args = e->element[3];
            if (args->type != REDIS_REPLY_ARRAY || args->elements < 2 || strcasecmp(args->element[0]->str, "EVALSHA")) continue;
            const char *h = args->element[1]->str;
            int k = !strcmp(sha[0], h) ? 0 : !strcmp(sha[1], h) ? 1 : !sha[0][0] ? 0 : 1;
            snprintf(sha[k], sizeof sha[k], "%s", h);
            d[k][n[k]++] = e->element[2]->integer * 1000;     /* µs -> ns for report() */
        }
    }
    if (r) freeReplyObject(r);
    rs_cmd(c, "CONFIG SET slowlog-log-slower-than 10000");
    redisFree(c);
    if (n[0]) report("  server side: admission script", d[0], n[0], 0);
    if (n[1]) report("  server side: end-of-lease script", d[1], n[1], 0);
    free(d[0]);
    free(d[1]);
}

static void bench_redis(void) {
    redis_server rs = {0};
    const char *url = getenv("BENCH_REDIS_URL");
    if (!url) {
        if (rs_start(&rs)) {
            printf("redis: skipped (%s)\n", rs.why);
            rs_stop(&rs);
            return;
        }
        url = rs.url;
    }
    sg_error err;
    rb b = {0};
    b.lp = loop_new(&err);
    gw_state st = {.redis_url = (char *)url, .fail_open = true, .key_prefix = "bench:", .timeout_ms = 1000};
    b.lim = limits_new(b.lp, &st, NULL, &err);
    if (!b.lim) {
        printf("redis: %s\n", err.msg);
        loop_free(b.lp);
        rs_stop(&rs);
        return;
    }
    b.ns = malloc(sizeof *b.ns * 200000);
    run_redis(&b, "redis, warm-up", 2000, false, 1);
    run_redis(&b, "redis, 1,000 checks/s", 3000, true, 1);
    if (rs.pid > 0) slowlog_start(&rs);
    run_redis(&b, "redis, back to back (1 in flight)", 20000, false, 1);
    if (rs.pid > 0) slowlog_report(&rs);
    run_redis(&b, "redis, max rate (64 in flight)", 100000, false, 64);
    free(b.ns);
    limits_free(b.lim);
    loop_free(b.lp);
    rs_stop(&rs);
}

int main(void) {
    sg_log_set_level(SG_LOG_ERROR);
    setup_config();
    setup_typical();
    printf("== typical: key rpm + tpm + daily budget, route concurrency (4 counters)\n");
    g_req = &k_typical;
    bench_inprocess();
    bench_redis();
    printf("== every limit: key, route, key+route rpm/tpm/concurrency, daily + monthly budgets on key and route "
           "(12 counters)\n");
    g_req = &k_full;
    bench_inprocess();
    bench_redis();
    return 0;
}
