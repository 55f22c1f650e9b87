/* limits_int.h: what limits.c (the front and the in-process backend) and limits_redis.c
 * (the Redis backend) share. Not part of the API: the proxy includes limits.h only; the
 * tests include this for the pure helpers (calendar, Redis URLs).
 *
 * A lease carries the list of checks its request touches. Each check is one counter in
 * one scope: (scope, kind) is unique within a lease. The front builds the list from the
 * config, the backend evaluates it (every check, so the headers describe all limits even
 * when one refuses), and limits_build_result() turns the evaluation into a result. */
#ifndef SG_GATEWAY_LIMITS_INT_H
#define SG_GATEWAY_LIMITS_INT_H

#include "gateway/limits.h"

#define LIMITS_MAX_CHECKS 16       /* 3 scopes x 3 rate kinds + 2 scopes x 3 budgets */
#define LIMITS_MAX_SCOPES 4
#define LIMITS_CONC_RETRY_MS 1000  /* a concurrency refusal's retry hint: slots free when
                                      requests end, which no clock predicts */

typedef enum limits_chk_kind { LCHK_RPM, LCHK_TPM, LCHK_CONC, LCHK_BUDGET } limits_chk_kind;
typedef enum limits_period { LPER_DAY, LPER_MONTH, LPER_TOTAL } limits_period;

typedef struct limits_scope {
    char key[208];           /* state key: "key:team-a", "route:chat",
                                "keyroute:team-a:chat" (key ids have no ':'),
                                "provider:openai" */
    char label[216];         /* "key team-a", "route chat", "key team-a route chat" */
} limits_scope;

typedef struct limits_check {
    uint8_t kind;            /* limits_chk_kind */
    uint8_t period;          /* budgets: limits_period */
    uint8_t scope;           /* index in the lease's scopes */
    uint8_t alert_percent;   /* budgets: 1..100 */
    int64_t limit;           /* rpm, tpm, concurrency, or the cap in micro-dollars */
    int64_t amount;          /* reserved: 1 request, est tokens, 1 slot, max cost */
    int64_t period_id;       /* budgets: the period reserved in: UTC day number, month
                                number (year * 12 + month - 1), 0 for total (Redis: the
                                local clock's until Redis answers with its own) */
    /* in-process backend */
    void *entry;             /* the scope's counters */
    uint64_t seq;            /* tpm: this lease's entry in the window */
} limits_check;

/* The evaluation of one check at admission. */
typedef struct limits_eval {
    bool fail;
    int64_t retry_ms;        /* fail: >= 0, or -1 never */
    int64_t remaining;       /* rpm/tpm: after this admission when admitted, else now */
    int64_t reset_ms;        /* rpm/tpm */
} limits_eval;

struct limits_lease {
    limits *lim;
    limits_lease *prev, *next;     /* every lease not yet freed (limits_free) */
    limits_fn cb;
    void *arg;
    bool attempt;                  /* a provider attempt, not a request */
    bool decided;                  /* the caller has its result */
    bool admitted;                 /* ... and it was an admission */
    bool degraded;                 /* admitted with no decision (fail open) */
    bool ended;                    /* the caller ended it: finish or cancel */
    limits_usage usage;            /* when ended */
    uint32_t ttl_ms;
    char id[40];                   /* unique among every instance: Redis members */
    /* Redis backend */
    bool admit_inflight;           /* the admission script has not answered */
    bool maybe_reserved;           /* that script may have reserved (sent, not refused) */
    bool never_sent;               /* decided without Redis: nothing reserved there */
    bool finish_sent;
    int ops;                       /* Redis calls referring to this lease */
    void *rop;                     /* the admission call while it waits */
    int n_scopes;
    limits_scope scopes[LIMITS_MAX_SCOPES];
    int n_checks;
    limits_check checks[LIMITS_MAX_CHECKS];
};

/* The limiter; the backend's state hangs from it. */
struct limits {
    loop *loop;
    limits_opts opts;
    int64_t window_us;
    bool fail_open;
    uint32_t timeout_ms;
    uint64_t lease_seq;
    char instance[20];             /* random hex, names this limiter's leases */
    limits_lease *leases;          /* live leases */
    limits_stats stats;
    struct limits_mem *mem;        /* in-process backend */
    struct limits_redis *redis;    /* Redis backend */
};

/* Clocks (the test clock when set). */
int64_t limits_now_mono_us(const limits *lim);
int64_t limits_now_wall_us(const limits *lim);

/* Calendar, UTC. */
int64_t limits_day_of(int64_t unix_us);                 /* floor(us / 86400e6) */
int64_t limits_month_of_day(int64_t day);               /* year * 12 + month - 1 */
int64_t limits_day_of_month(int64_t month);             /* its first day */
int64_t limits_period_id(limits_period p, int64_t unix_us);
/* Microseconds from unix_us to the end of period p (-1 for total). */
int64_t limits_period_left_us(limits_period p, int64_t unix_us);
const char *limits_period_name(limits_period p);        /* daily, monthly, total */
const char *limits_kind_name(limits_chk_kind k);        /* rpm, tpm, concurrency, budget */

/* Fills r from the evaluations of every check (admitted = no check failed). */
void limits_build_result(const limits_lease *l, const limits_eval *ev, int64_t at_us,
                         limits_result *r);
/* The result of a decision made without the state store (fail open / closed). */
void limits_undecided_result(const limits *lim, const char *why, limits_result *r);
/* A budget crossed its alert threshold: logs once (the backend ensures once per period). */
void limits_alert(limits *lim, const limits_lease *l, const limits_check *c, int64_t spent);
/* Frees a lease (backends call it when nothing refers to it any more). */
void limits_lease_free(limits_lease *l);

/* Redis URLs: redis://[[user]:password@]host[:port][/db], unix://path[?db=N]. */
typedef struct limits_redis_url {
    char host[256];          /* TCP host, or the socket path for unix:// */
    int port;                /* 6379 by default; 0 for unix:// */
    bool unix_socket;
    char user[128];          /* empty: none */
    char password[256];      /* empty: none (never logged) */
    int db;                  /* 0 by default */
} limits_redis_url;
int limits_redis_parse_url(const char *url, limits_redis_url *out, sg_error *err);

/* The Redis backend (limits_redis.c). */
int  limits_redis_new(limits *lim, const gw_state *st, sg_error *err);
void limits_redis_free(limits *lim);
int  limits_redis_admit(limits *lim, limits_lease *l, limits_result *r);
void limits_redis_end(limits_lease *l);
uint64_t limits_redis_in_flight(const limits *lim);

#endif
