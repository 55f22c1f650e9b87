/* limits.c: see limits.h. The front (checks from the config, results, headers) and the
 * in-process backend.
 *
 * In-process state: one hash table from a scope's state key ("key:team-a") to its
 * counters. A rate window is a ring of (admission time, weight) in admission order with
 * a running sum: expiring is popping from the head, admitting is pushing at the tail, so
 * a check is O(1) amortised and the count is exact (no buckets). A lease remembers its
 * tpm entry by sequence number, so its reconciliation is O(1) too. Budgets keep, per
 * period kind, the current period's id, spent and reserved micro-dollars; a new period
 * starts them over, and reconciliations of leases from an earlier period are dropped
 * (their cost stays in that period, which is over). */
#include "gateway/limits.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/limits_int.h"

/* ---- clocks and calendar ---- */

static int64_t clock_us(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t limits_now_mono_us(const limits *lim) {
    return lim->opts.clock_us ? lim->opts.clock_us(lim->opts.clock_ctx) : clock_us(CLOCK_MONOTONIC);
}

int64_t limits_now_wall_us(const limits *lim) {
    return lim->opts.clock_us ? lim->opts.clock_us(lim->opts.clock_ctx) : clock_us(CLOCK_REALTIME);
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t limits_day_of(int64_t unix_us) { return floor_div(unix_us, 86400LL * 1000000); }

/* Howard Hinnant's civil_from_days / days_from_civil (public-domain algorithms); the Lua
 * in limits_redis.c computes the same. */
int64_t limits_month_of_day(int64_t day) {
    int64_t z = day + 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2) y++;
    return y * 12 + (m - 1);
}

int64_t limits_day_of_month(int64_t month) {
    int64_t y = floor_div(month, 12), m = month - y * 12 + 1;
    if (m <= 2) y--;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t limits_period_id(limits_period p, int64_t unix_us) {
    int64_t day = limits_day_of(unix_us);
    return p == LPER_DAY ? day : p == LPER_MONTH ? limits_month_of_day(day) : 0;
}

int64_t limits_period_left_us(limits_period p, int64_t unix_us) {
    const int64_t day_us = 86400LL * 1000000;
    int64_t day = limits_day_of(unix_us);
    if (p == LPER_DAY) return (day + 1) * day_us - unix_us;
    if (p == LPER_MONTH) return limits_day_of_month(limits_month_of_day(day) + 1) * day_us - unix_us;
    return -1;
}

const char *limits_period_name(limits_period p) {
    return p == LPER_DAY ? "daily" : p == LPER_MONTH ? "monthly" : "total";
}

const char *limits_kind_name(limits_chk_kind k) {
    static const char *const n[] = {"rpm", "tpm", "concurrency", "budget"};
    return n[k];
}

/* ---- small helpers ---- */

static int64_t ceil_ms(int64_t us) { return us <= 0 ? 0 : (us + 999) / 1000; }

static void put_usd(char *buf, size_t cap, int64_t micro) {
    if (micro < 0) { snprintf(buf, cap, "unpriced"); return; }
    snprintf(buf, cap, "$%" PRId64 ".%06" PRId64, micro / 1000000, micro % 1000000);
}

int64_t limits_estimate_tokens(size_t body_len, int64_t max_tokens, int64_t default_max_output) {
    int64_t prompt = (int64_t)((body_len + 2) / 3);
    int64_t out = max_tokens > 0 ? max_tokens : default_max_output > 0 ? default_max_output : 0;
    return prompt + out;
}

int64_t limits_usage_tokens(const gw_usage *u) {
    int64_t f[] = {u->input, u->cache_read, u->cache_write, u->output}, t = 0;
    bool any = false;
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (f[i] >= 0) { t += f[i]; any = true; }
    return any ? t : -1;
}

void limits_format_duration(int64_t ms, char *buf, size_t cap) {
    if (ms <= 0) { snprintf(buf, cap, "0s"); return; }
    if (ms < 1000) { snprintf(buf, cap, "%" PRId64 "ms", ms); return; }
    int64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
    char sec[16];
    if (frac) {
        int n = snprintf(sec, sizeof sec, "%" PRId64 ".%03" PRId64, s, frac);
        while (n > 0 && sec[n - 1] == '0') sec[--n] = 0;
    } else {
        snprintf(sec, sizeof sec, "%" PRId64, s);
    }
    if (h) snprintf(buf, cap, "%" PRId64 "h%" PRId64 "m%ss", h, m, sec);
    else if (m) snprintf(buf, cap, "%" PRId64 "m%ss", m, sec);
    else snprintf(buf, cap, "%ss", sec);
}

size_t limits_format_headers(const limits_result *r, limits_header out[LIMITS_MAX_HEADERS]) {
    size_t n = 0;
    const limits_headers *h = &r->headers;
    if (h->limit_requests >= 0) {
        out[n].name = "x-ratelimit-limit-requests";
        snprintf(out[n++].value, sizeof out->value, "%" PRId64, h->limit_requests);
        out[n].name = "x-ratelimit-remaining-requests";
        snprintf(out[n++].value, sizeof out->value, "%" PRId64, h->remaining_requests);
        out[n].name = "x-ratelimit-reset-requests";
        limits_format_duration(h->reset_requests_ms, out[n++].value, sizeof out->value);
    }
    if (h->limit_tokens >= 0) {
        out[n].name = "x-ratelimit-limit-tokens";
        snprintf(out[n++].value, sizeof out->value, "%" PRId64, h->limit_tokens);
        out[n].name = "x-ratelimit-remaining-tokens";
        snprintf(out[n++].value, sizeof out->value, "%" PRId64, h->remaining_tokens);
        out[n].name = "x-ratelimit-reset-tokens";
        limits_format_duration(h->reset_tokens_ms, out[n++].value, sizeof out->value);
    }
    if (r->outcome != LIMITS_ADMITTED && r->retry_after_ms >= 0) {
        out[n].name = "retry-after";
        snprintf(out[n++].value, sizeof out->value, "%" PRId64, (r->retry_after_ms + 999) / 1000);
        out[n].name = "retry-after-ms";
        snprintf(out[n++].value, sizeof out->value, "%" PRId64, r->retry_after_ms);
    }
    return n;
}

/* ---- results ---- */

static void no_headers(limits_headers *h) {
    *h = (limits_headers){.limit_requests = -1, .remaining_requests = -1, .reset_requests_ms = -1,
                          .limit_tokens = -1, .remaining_tokens = -1, .reset_tokens_ms = -1};
}

static void check_name(const limits_lease *l, const limits_check *c, char *buf, size_t cap) {
    const char *scope = l->scopes[c->scope].label;
    if (c->kind == LCHK_BUDGET) snprintf(buf, cap, "budget %s %s", scope, limits_period_name(c->period));
    else snprintf(buf, cap, "%s %s", scope, limits_kind_name(c->kind));
}

static void refusal_message(const limits_lease *l, const limits_check *c, int64_t retry_ms, limits_result *r) {
    char wait[32], a[32], b[32];
    limits_format_duration(retry_ms, wait, sizeof wait);
    const char *scope = l->scopes[c->scope].label;
    switch (c->kind) {
    case LCHK_RPM:
        snprintf(r->message, sizeof r->message,
                 "Rate limit reached for %s: %" PRId64 " requests per minute (rpm). Try again in %s.",
                 scope, c->limit, wait);
        break;
    case LCHK_TPM:
        if (retry_ms < 0)
            snprintf(r->message, sizeof r->message,
                     "Request too large for %s: it reserves %" PRId64 " tokens, more than the limit of %" PRId64
                     " tokens per minute (tpm). Lower max_tokens or shorten the prompt.", scope, c->amount, c->limit);
        else
            snprintf(r->message, sizeof r->message,
                     "Rate limit reached for %s: %" PRId64 " tokens per minute (tpm); this request reserves %" PRId64
                     ". Try again in %s.", scope, c->limit, c->amount, wait);
        break;
    case LCHK_CONC:
        snprintf(r->message, sizeof r->message,
                 "Concurrency limit reached for %s: %" PRId64 " requests in flight. Try again when one ends.",
                 scope, c->limit);
        break;
    default:
        put_usd(a, sizeof a, c->limit);
        put_usd(b, sizeof b, c->amount);
        if (retry_ms < 0 && c->amount > c->limit)
            snprintf(r->message, sizeof r->message,
                     "Budget exceeded: the %s budget of %s is %s, less than this request's maximum cost of %s.",
                     limits_period_name(c->period), scope, a, b);
        else if (retry_ms < 0)
            snprintf(r->message, sizeof r->message,
                     "Budget exceeded: the total budget of %s (%s) cannot cover this request's maximum cost of %s.",
                     scope, a, b);
        else
            snprintf(r->message, sizeof r->message,
                     "Budget exceeded: the %s budget of %s (%s) cannot cover this request's maximum cost of %s; "
                     "it starts over in %s.", limits_period_name(c->period), scope, a, b, wait);
    }
}

/* Retry waits, -1 (never) being the longest. */
static bool waits_longer(int64_t a, int64_t b) {
    if (b < 0) return false;
    return a < 0 || a > b;
}

void limits_build_result(const limits_lease *l, const limits_eval *ev, int64_t at_us, limits_result *r) {
    memset(r, 0, sizeof *r);
    r->at_us = at_us;
    no_headers(&r->headers);
    int worst = -1;
    for (int i = 0; i < l->n_checks; i++) {
        const limits_check *c = &l->checks[i];
        const limits_eval *e = &ev[i];
        if (e->fail && (worst < 0 || waits_longer(e->retry_ms, ev[worst].retry_ms))) worst = i;
        limits_headers *h = &r->headers;
        if (c->kind == LCHK_RPM &&
            (h->limit_requests < 0 || e->remaining < h->remaining_requests ||
             (e->remaining == h->remaining_requests && c->limit < h->limit_requests))) {
            h->limit_requests = c->limit;
            h->remaining_requests = e->remaining;
            h->reset_requests_ms = e->reset_ms;
        }
        if (c->kind == LCHK_TPM &&
            (h->limit_tokens < 0 || e->remaining < h->remaining_tokens ||
             (e->remaining == h->remaining_tokens && c->limit < h->limit_tokens))) {
            h->limit_tokens = c->limit;
            h->remaining_tokens = e->remaining;
            h->reset_tokens_ms = e->reset_ms;
        }
    }
    if (worst < 0) {
        r->outcome = LIMITS_ADMITTED;
        return;
    }
    const limits_check *c = &l->checks[worst];
    r->outcome = LIMITS_REFUSED;
    r->status = 429;
    r->code = c->kind == LCHK_BUDGET ? "budget_exceeded" : "rate_limit_exceeded";
    r->retry_after_ms = ev[worst].retry_ms;
    check_name(l, c, r->limit, sizeof r->limit);
    refusal_message(l, c, r->retry_after_ms, r);
}

void limits_undecided_result(const limits *lim, const char *why, limits_result *r) {
    memset(r, 0, sizeof *r);
    no_headers(&r->headers);
    if (lim->fail_open) {
        r->outcome = LIMITS_ADMITTED;
        r->degraded = true;
        return;
    }
    r->outcome = LIMITS_UNAVAILABLE;
    r->status = 503;
    r->code = "limits_unavailable";
    r->retry_after_ms = 1000;
    snprintf(r->limit, sizeof r->limit, "state");
    snprintf(r->message, sizeof r->message,
             "Rate limits and budgets cannot be checked right now (%s), and this gateway refuses requests "
             "it cannot check. Try again shortly.", why);
}

void limits_alert(limits *lim, const limits_lease *l, const limits_check *c, int64_t spent) {
    char name[256], a[32], b[32];
    check_name(l, c, name, sizeof name);
    put_usd(a, sizeof a, spent);
    put_usd(b, sizeof b, c->limit);
    SG_WARN("limits: %s crossed its alert threshold (%d%%): %s spent of %s", name, c->alert_percent, a, b);
    if (lim->opts.on_alert) lim->opts.on_alert(lim->opts.alert_ctx, name, spent, c->limit);
    if (lim->opts.on_budget_alert) {
        limits_alert_info al = {name, l->scopes[c->scope].key, limits_period_name(c->period), c->alert_percent, spent, c->limit};
        lim->opts.on_budget_alert(lim->opts.alert_ctx, &al);
    }
}

/* ---- the in-process backend ---- */

typedef struct win_ent {
    int64_t t;                    /* admission, µs */
    int64_t w;                    /* weight: 1 request, or tokens */
} win_ent;

/* A sliding window: entries in admission order in a ring, and their sum. */
typedef struct win {
    win_ent *e;
    size_t cap, head, len;
    uint64_t head_seq;            /* sequence number of e[head] */
    int64_t sum;
} win;

typedef struct budget_ctr {
    int64_t period;               /* -1: never used */
    int64_t spent, reserved;      /* micro-dollars */
    bool alerted;
} budget_ctr;

typedef struct mem_entry {
    struct mem_entry *next;
    uint64_t hash;
    win rpm, tpm;
    int64_t inflight;
    budget_ctr budget[3];         /* by limits_period */
    char key[];
} mem_entry;

struct limits_mem {
    mem_entry **b;
    size_t nb, n;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static mem_entry *mem_get(struct limits_mem *m, const char *key) {
    uint64_t h = hash_str(key);
    for (mem_entry *e = m->b[h & (m->nb - 1)]; e; e = e->next)
        if (e->hash == h && !strcmp(e->key, key)) return e;
    if (m->n >= m->nb) {              /* grow at load 1 */
        size_t nb = m->nb * 2;
        mem_entry **b = sg_xcalloc(nb, sizeof *b);
        for (size_t i = 0; i < m->nb; i++)
            for (mem_entry *e = m->b[i], *next; e; e = next) {
                next = e->next;
                e->next = b[e->hash & (nb - 1)];
                b[e->hash & (nb - 1)] = e;
            }
        free(m->b);
        m->b = b;
        m->nb = nb;
    }
    size_t len = strlen(key);
    mem_entry *e = sg_xcalloc(1, sizeof *e + len + 1);
    memcpy(e->key, key, len + 1);
    e->hash = h;
    for (int p = 0; p < 3; p++) e->budget[p].period = -1;
    e->next = m->b[h & (m->nb - 1)];
    m->b[h & (m->nb - 1)] = e;
    m->n++;
    return e;
}

static void win_expire(win *w, int64_t now, int64_t width) {
    while (w->len && w->e[w->head].t <= now - width) {
        w->sum -= w->e[w->head].w;
        w->head = (w->head + 1) % w->cap;
        w->len--;
        w->head_seq++;
    }
}

static uint64_t win_push(win *w, int64_t t, int64_t weight) {
    if (w->len == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        win_ent *e = sg_xmalloc(cap * sizeof *e);
        for (size_t i = 0; i < w->len; i++) e[i] = w->e[(w->head + i) % w->cap];
        free(w->e);
        w->e = e;
        w->cap = cap;
        w->head = 0;
    }
    w->e[(w->head + w->len) % w->cap] = (win_ent){t, weight};
    w->len++;
    w->sum += weight;
    return w->head_seq + w->len - 1;
}

static win_ent *win_find(win *w, uint64_t seq) {
    if (seq < w->head_seq || seq - w->head_seq >= w->len) return NULL;
    return &w->e[(w->head + (seq - w->head_seq)) % w->cap];
}

/* Microseconds until `need` more weight has left the window. */
static int64_t win_wait(const win *w, int64_t need, int64_t now, int64_t width) {
    int64_t freed = 0;
    for (size_t i = 0; i < w->len; i++) {
        const win_ent *e = &w->e[(w->head + i) % w->cap];
        freed += e->w;
        if (freed >= need) return e->t + width - now;
    }
    return width;   /* not reached: need <= sum */
}

/* One rate window check: weight `amount` against `limit`. */
static void win_eval(win *w, int64_t amount, int64_t limit, int64_t now, int64_t width, limits_eval *ev) {
    win_expire(w, now, width);
    ev->fail = w->sum + amount > limit;
    if (ev->fail) {
        ev->retry_ms = amount > limit ? -1 : ceil_ms(win_wait(w, w->sum + amount - limit, now, width));
        ev->remaining = limit > w->sum ? limit - w->sum : 0;
        ev->reset_ms = w->len ? ceil_ms(w->e[w->head].t + width - now) : 0;
    } else {
        ev->remaining = limit - w->sum - amount;
        ev->reset_ms = ceil_ms((w->len ? w->e[w->head].t : now) + width - now);
    }
}

static void mem_admit(limits *lim, limits_lease *l, limits_result *r) {
    struct limits_mem *m = lim->mem;
    int64_t now = limits_now_mono_us(lim), wall = limits_now_wall_us(lim), width = lim->window_us;
    limits_eval ev[LIMITS_MAX_CHECKS];
    bool ok = true;
    for (int i = 0; i < l->n_checks; i++) {
        limits_check *c = &l->checks[i];
        mem_entry *e = mem_get(m, l->scopes[c->scope].key);
        c->entry = e;
        limits_eval *v = &ev[i];
        *v = (limits_eval){0};
        switch (c->kind) {
        case LCHK_RPM: win_eval(&e->rpm, 1, c->limit, now, width, v); break;
        case LCHK_TPM: win_eval(&e->tpm, c->amount, c->limit, now, width, v); break;
        case LCHK_CONC:
            v->fail = e->inflight + 1 > c->limit;
            v->retry_ms = LIMITS_CONC_RETRY_MS;
            break;
        case LCHK_BUDGET: {
            budget_ctr *b = &e->budget[c->period];
            int64_t pid = limits_period_id(c->period, wall);
            if (b->period != pid) *b = (budget_ctr){.period = pid};
            c->period_id = pid;
            v->fail = b->spent + b->reserved + c->amount > c->limit;
            int64_t left = limits_period_left_us(c->period, wall);
            v->retry_ms = c->amount > c->limit || left < 0 ? -1 : ceil_ms(left);
            break;
        }
        }
        if (v->fail) ok = false;
    }
    if (ok) {
        for (int i = 0; i < l->n_checks; i++) {
            limits_check *c = &l->checks[i];
            mem_entry *e = c->entry;
            switch (c->kind) {
            case LCHK_RPM: win_push(&e->rpm, now, 1); break;
            case LCHK_TPM: c->seq = win_push(&e->tpm, now, c->amount); break;
            case LCHK_CONC: e->inflight++; break;
            case LCHK_BUDGET: e->budget[c->period].reserved += c->amount; break;
            }
        }
    }
    limits_build_result(l, ev, now, r);
}

static void mem_end(limits *lim, limits_lease *l) {
    for (int i = 0; i < l->n_checks; i++) {
        limits_check *c = &l->checks[i];
        mem_entry *e = c->entry;
        switch (c->kind) {
        case LCHK_RPM: break;     /* an admission stays counted: it happened */
        case LCHK_TPM: {
            win_ent *we = l->usage.tokens >= 0 ? win_find(&e->tpm, c->seq) : NULL;
            if (we) {
                e->tpm.sum += l->usage.tokens - we->w;
                we->w = l->usage.tokens;
            }
            break;
        }
        case LCHK_CONC: e->inflight--; break;
        case LCHK_BUDGET: {
            budget_ctr *b = &e->budget[c->period];
            if (b->period != c->period_id) break;   /* that period is over */
            b->reserved -= c->amount;
            b->spent += l->usage.cost >= 0 ? l->usage.cost : c->amount;
            /* caps are at most 1e15 µ$ (config), so these products fit in 64 bits */
            if (!b->alerted && c->limit > 0 && b->spent * 100 >= c->limit * c->alert_percent) {
                b->alerted = true;
                limits_alert(lim, l, c, b->spent);
            }
            break;
        }
        }
    }
}

static void mem_free(struct limits_mem *m) {
    if (!m) return;
    for (size_t i = 0; i < m->nb; i++)
        for (mem_entry *e = m->b[i], *next; e; e = next) {
            next = e->next;
            free(e->rpm.e);
            free(e->tpm.e);
            free(e);
        }
    free(m->b);
    free(m);
}

/* ---- the front ---- */

limits *limits_new(loop *l, const gw_state *st, const limits_opts *o, sg_error *err) {
    limits *lim = sg_xcalloc(1, sizeof *lim);
    lim->loop = l;
    if (o) lim->opts = *o;
    lim->window_us = (int64_t)(lim->opts.window_ms ? lim->opts.window_ms : 60000) * 1000;
    lim->fail_open = st ? st->fail_open : true;
    lim->timeout_ms = st && st->timeout_ms ? st->timeout_ms : 100;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        rnd = (uint64_t)clock_us(CLOCK_REALTIME) ^ ((uint64_t)clock_us(CLOCK_MONOTONIC) << 17);
    snprintf(lim->instance, sizeof lim->instance, "%016" PRIx64, rnd);
    if (st && st->redis_url) {
        if (!l) {
            free(lim);
            return sg_fail(err, "limits: the Redis backend needs an event loop"), NULL;
        }
        lim->stats.redis = true;
        if (limits_redis_new(lim, st, err)) {
            free(lim);
            return NULL;
        }
    } else {
        lim->mem = sg_xcalloc(1, sizeof *lim->mem);
        lim->mem->nb = 64;
        lim->mem->b = sg_xcalloc(lim->mem->nb, sizeof *lim->mem->b);
    }
    return lim;
}

void limits_free(limits *lim) {
    if (!lim) return;
    if (lim->redis) limits_redis_free(lim);
    while (lim->leases) limits_lease_free(lim->leases);
    mem_free(lim->mem);
    free(lim);
}

bool limits_key_now(limits *lim, const char *key_id, limits_now *out) {
    *out = (limits_now){0, 0, 0};
    if (!lim->mem || !key_id) return false;
    char key[208];
    snprintf(key, sizeof key, "key:%s", key_id);
    struct limits_mem *m = lim->mem;
    uint64_t h = hash_str(key);
    mem_entry *e = m->b[h & (m->nb - 1)];
    while (e && !(e->hash == h && !strcmp(e->key, key))) e = e->next;
    if (!e) return true;   /* nothing counted yet: looked up without adding an entry */
    int64_t now = limits_now_mono_us(lim);
    win_expire(&e->rpm, now, lim->window_us);
    win_expire(&e->tpm, now, lim->window_us);
    *out = (limits_now){e->rpm.sum, e->tpm.sum, e->inflight};
    return true;
}

void limits_get_stats(const limits *lim, limits_stats *out) {
    *out = lim->stats;
    out->in_flight = limits_redis_in_flight(lim);
}

void limits_set_policy(limits *lim, const gw_state *st) {
    lim->fail_open = st->fail_open;
    lim->timeout_ms = st->timeout_ms ? st->timeout_ms : 100;
}

bool limits_idle(const limits *lim) { return !lim->leases && !limits_redis_in_flight(lim); }

static limits_lease *lease_new(limits *lim, limits_fn cb, void *arg) {
    limits_lease *l = sg_xcalloc(1, sizeof *l);
    l->lim = lim;
    l->cb = cb;
    l->arg = arg;
    snprintf(l->id, sizeof l->id, "%s.%" PRIx64, lim->instance, ++lim->lease_seq);
    l->next = lim->leases;
    if (lim->leases) lim->leases->prev = l;
    lim->leases = l;
    return l;
}

void limits_lease_free(limits_lease *l) {
    limits *lim = l->lim;
    if (l->prev) l->prev->next = l->next;
    else lim->leases = l->next;
    if (l->next) l->next->prev = l->prev;
    free(l);
}

static int add_scope(limits_lease *l, const char *key_fmt, const char *a, const char *b, const char *label) {
    limits_scope *s = &l->scopes[l->n_scopes];
    snprintf(s->key, sizeof s->key, key_fmt, a, b ? b : "");
    snprintf(s->label, sizeof s->label, "%s", label);
    return l->n_scopes++;
}

static void add_rates(limits_lease *l, int scope, const gw_limits *g, int64_t est_tokens) {
    if (g->rpm >= 0) l->checks[l->n_checks++] = (limits_check){.kind = LCHK_RPM, .scope = (uint8_t)scope, .limit = g->rpm, .amount = 1};
    if (g->tpm >= 0) l->checks[l->n_checks++] = (limits_check){.kind = LCHK_TPM, .scope = (uint8_t)scope, .limit = g->tpm, .amount = est_tokens};
    if (g->concurrency >= 0) l->checks[l->n_checks++] = (limits_check){.kind = LCHK_CONC, .scope = (uint8_t)scope, .limit = g->concurrency, .amount = 1};
}

static void add_budgets(limits_lease *l, int scope, const gw_budget *b, int64_t max_cost) {
    const int64_t caps[3] = {b->daily_usd, b->monthly_usd, b->total_usd};
    for (int p = 0; p < 3; p++)
        if (caps[p] >= 0)
            l->checks[l->n_checks++] = (limits_check){
                .kind = LCHK_BUDGET, .period = (uint8_t)p, .scope = (uint8_t)scope,
                .alert_percent = (uint8_t)(b->alert_percent >= 1 && b->alert_percent <= 100 ? b->alert_percent : 80),
                .limit = caps[p], .amount = max_cost};
}

static bool has_rates(const gw_limits *g) { return g->rpm >= 0 || g->tpm >= 0 || g->concurrency >= 0; }
static bool has_budget(const gw_budget *b) { return b->daily_usd >= 0 || b->monthly_usd >= 0 || b->total_usd >= 0; }

static int decide(limits *lim, limits_lease *l, limits_result *r) {
    if (l->n_checks == 0) {              /* nothing applies: no state touched */
        memset(r, 0, sizeof *r);
        no_headers(&r->headers);
        r->outcome = LIMITS_ADMITTED;
        l->decided = l->admitted = true;
        lim->stats.admits++;
        return LIMITS_NOW;
    }
    if (lim->redis) {
        int rc = limits_redis_admit(lim, l, r);
        if (rc == LIMITS_LATER) return rc;
    } else {
        mem_admit(lim, l, r);
    }
    l->decided = true;
    l->admitted = r->outcome == LIMITS_ADMITTED;
    l->degraded = r->degraded;
    if (l->admitted) lim->stats.admits++;
    else lim->stats.refusals++;
    return LIMITS_NOW;
}

int limits_admit(limits *lim, const limits_request *req, limits_lease **lease, limits_result *r,
                 limits_fn cb, void *arg) {
    limits_lease *l = lease_new(lim, cb, arg);
    *lease = l;
    l->ttl_ms = req->ttl_ms ? req->ttl_ms : 600000;
    int64_t est = req->est_tokens > 0 ? req->est_tokens : 0;
    const gw_key *k = req->key;
    const gw_route *rt = req->route;
    if (k && (has_rates(&k->limits) || has_budget(&k->budget))) {
        char label[216];
        snprintf(label, sizeof label, "key %s", k->id);
        int s = add_scope(l, "key:%s", k->id, NULL, label);
        add_rates(l, s, &k->limits, est);
    }
    if (rt && (has_rates(&rt->limits) || has_budget(&rt->budget))) {
        char label[216];
        snprintf(label, sizeof label, "route %s", rt->name);
        int s = add_scope(l, "route:%s", rt->name, NULL, label);
        add_rates(l, s, &rt->limits, est);
    }
    if (k && rt) {
        gw_limits kr = config_key_route_limits(k, rt);
        if (has_rates(&kr)) {
            char label[216];
            snprintf(label, sizeof label, "key %s route %s", k->id, rt->name);
            int s = add_scope(l, "keyroute:%s:%s", k->id, rt->name, label);
            add_rates(l, s, &kr, est);
        }
    }
    /* budgets after the rate limits: scope 0 is the key's, the route's follows it */
    for (int s = 0; s < l->n_scopes; s++) {
        const char *key = l->scopes[s].key;
        if (k && !strncmp(key, "key:", 4)) add_budgets(l, s, &k->budget, req->max_cost);
        else if (rt && !strncmp(key, "route:", 6)) add_budgets(l, s, &rt->budget, req->max_cost);
    }
    if (req->max_cost < 0) {
        for (int i = 0; i < l->n_checks; i++) {
            const limits_check *c = &l->checks[i];
            if (c->kind != LCHK_BUDGET) continue;
            memset(r, 0, sizeof *r);
            no_headers(&r->headers);
            r->outcome = LIMITS_REFUSED;
            r->status = 403;
            r->code = "budget_unpriced";
            r->retry_after_ms = -1;
            check_name(l, c, r->limit, sizeof r->limit);
            snprintf(r->message, sizeof r->message,
                     "The %s applies to this request, but its model has no price, so its cost cannot be "
                     "reserved against the budget. Give the model a price (models: in the configuration).",
                     r->limit);
            l->n_checks = 0;             /* nothing was reserved */
            l->decided = true;
            lim->stats.refusals++;
            return LIMITS_NOW;
        }
    }
    return decide(lim, l, r);
}

int limits_attempt(limits *lim, const gw_provider *p, const gw_model_info *m, int64_t est_tokens, uint32_t ttl_ms,
                   limits_lease **lease, limits_result *r, limits_fn cb, void *arg) {
    limits_lease *l = lease_new(lim, cb, arg);
    *lease = l;
    l->attempt = true;
    l->ttl_ms = ttl_ms ? ttl_ms : 600000;
    if (has_rates(&p->limits)) {
        char label[216];
        snprintf(label, sizeof label, "provider %s", p->name);
        int s = add_scope(l, "provider:%s", p->name, NULL, label);
        add_rates(l, s, &p->limits, est_tokens > 0 ? est_tokens : 0);
    }
    if (m && has_rates(&m->limits)) {
        char label[216];
        snprintf(label, sizeof label, "model %s/%s", p->name, m->model);
        int s = add_scope(l, "model:%s/%s", p->name, m->model, label);
        add_rates(l, s, &m->limits, est_tokens > 0 ? est_tokens : 0);
    }
    return decide(lim, l, r);
}

void limits_finish(limits_lease *l, const limits_usage *u) {
    if (!l || l->ended) return;
    l->ended = true;
    /* a lease ended before its answer used nothing: it was cancelled */
    l->usage = !l->decided ? (limits_usage){0, 0} : u ? *u : (limits_usage){-1, -1};
    limits *lim = l->lim;
    if (lim->redis) {
        limits_redis_end(l);      /* frees l when nothing refers to it any more */
        return;
    }
    if (l->admitted && l->n_checks) mem_end(lim, l);
    limits_lease_free(l);
}

void limits_cancel(limits_lease *l) {
    limits_usage none = {0, 0};
    limits_finish(l, &none);
}
