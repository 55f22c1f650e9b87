/* limits_redis.c: the Redis backend of limits.h, shared by every gateway instance.
 *
 * Each admission is ONE Lua script (EVALSHA; EVAL when the server answers NOSCRIPT) that
 * reads Redis TIME, evaluates every check of the request, and only when all pass moves
 * every counter: admit all or nothing, atomically, on one clock whatever the instances'
 * clocks say. Each end of a lease is one more script (release the slot, reconcile tokens
 * and money). Both are idempotent per lease id, so a reconciliation sent twice, or sent
 * for an admission whose answer was lost, releases at most what that lease holds.
 *
 * Redis data (P = state.key_prefix, S = a scope's state key such as "key:team-a"):
 *   P rpm:S          list of admission times (µs), oldest first: the sliding log
 *   P tpmq:S         list of "time|lease" in admission order
 *   P tpmw:S         hash lease -> tokens charged, and "~" -> their sum
 *   P conc:S         sorted set lease -> deadline (µs): a slot frees itself at its
 *                    deadline if its instance died
 *   P budget:d|m|t:S hash p (period id), s (spent µ$), r (reserved µ$), a (alerted),
 *                    lease -> its reservation; a new period starts it over
 * Windows and budgets expire (PEXPIRE) when idle, so unused scopes leave nothing behind.
 *
 * The event loop never blocks: hiredis's async API with a small adapter to loop.h (the
 * socket's read/write interest as hiredis asks, one timer per admission for
 * state.timeout_ms). Unreachable (connect refused, lost, no answer in time): the request
 * is decided by state.on_redis_error, one warning is logged per outage, probes (PING)
 * detect the end, and the connection is retried with backoff (100 ms doubling to 2 s).
 * While Redis is away, requests are decided at once without waiting; reconciliations
 * wait in a bounded queue and are delivered when it is back. */
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/limits_int.h"

#define ROP_MAX_ARGS 160
#define FINISH_QUEUE_MAX 65536
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define PROBE_MS 200

/* ---- the scripts ---- */

/* Shared Lua: calendar (the same algorithms as limits.c) and number formatting (Lua 5.1
 * writes large numbers as 1e+15, which INCRBY refuses). */
#define LUA_COMMON \
    "local function fl(a, b) return math.floor(a / b) end\n" \
    "local function fmt(x) return string.format('%.0f', x) end\n" \
    "local function month_of(d)\n" \
    "  local z = d + 719468\n" \
    "  local era = fl(z, 146097)\n" \
    "  local doe = z - era * 146097\n" \
    "  local yoe = fl(doe - fl(doe, 1460) + fl(doe, 36524) - fl(doe, 146096), 365)\n" \
    "  local y = yoe + era * 400\n" \
    "  local doy = doe - (365 * yoe + fl(yoe, 4) - fl(yoe, 100))\n" \
    "  local mp = fl(5 * doy + 2, 153)\n" \
    "  local m = mp < 10 and mp + 3 or mp - 9\n" \
    "  if m <= 2 then y = y + 1 end\n" \
    "  return y * 12 + m - 1\n" \
    "end\n" \
    "local function month_start(mi)\n" \
    "  local y = fl(mi, 12)\n" \
    "  local m = mi - y * 12 + 1\n" \
    "  if m <= 2 then y = y - 1 end\n" \
    "  local era = fl(y, 400)\n" \
    "  local yoe = y - era * 400\n" \
    "  local mp = m > 2 and m - 3 or m + 9\n" \
    "  local doe = yoe * 365 + fl(yoe, 4) - fl(yoe, 100) + fl(153 * mp + 2, 5)\n" \
    "  return era * 146097 + doe - 719468\n" \
    "end\n" \
    "local function tpm_time(e) return tonumber(string.sub(e, 1, string.find(e, '|', 1, true) - 1)) end\n"

/* KEYS: per check in order: r: rpm list; t: tpmq, tpmw; c: conc zset; b?: budget hash.
 * ARGV: lease, window µs, ttl µs, n, then per check: kind (r t c bd bm bt), limit, amount.
 * Returns {admitted, now µs, then per check: fail, retry µs (-1 never, -2 no estimate),
 * remaining (budgets: period id), reset µs}. */
static const char k_admit_lua[] =
    "-- smolgate limits: admission\n"
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local sec = tonumber(t[1])\n"
    "local now = sec * 1000000 + tonumber(t[2])\n"
    "local lid, win, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local day = math.floor(sec / 86400)\n"
    LUA_COMMON
    "local out = {0, now}\n"
    "local ok = true\n"
    "local ki = 1\n"
    "local st = {}\n"
    "for i = 1, n do\n"
    "  local a = 4 + (i - 1) * 3\n"
    "  local kind, limit, amt = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
    "  local fail, retry, r1, r2 = 0, 0, 0, 0\n"
    "  if kind == 'r' then\n"
    "    local q = KEYS[ki]; ki = ki + 1\n"
    "    local first = redis.call('LINDEX', q, 0)\n"
    "    while first and tonumber(first) <= now - win do\n"
    "      redis.call('LPOP', q)\n"
    "      first = redis.call('LINDEX', q, 0)\n"
    "    end\n"
    "    local cnt = redis.call('LLEN', q)\n"
    "    local oldest = first and tonumber(first) or now\n"
    "    if cnt + 1 > limit then\n"
    "      fail = 1\n"
    "      local e = redis.call('LINDEX', q, cnt - limit)\n"
    "      if limit < 1 then retry = -1 elseif e then retry = tonumber(e) + win - now else retry = win end\n"
    "      r1 = math.max(limit - cnt, 0)\n"
    "      r2 = first and oldest + win - now or 0\n"
    "    else\n"
    "      r1 = limit - cnt - 1\n"
    "      r2 = oldest + win - now\n"
    "    end\n"
    "    st[i] = {q}\n"
    "  elseif kind == 't' then\n"
    "    local q, h = KEYS[ki], KEYS[ki + 1]; ki = ki + 2\n"
    "    local first = redis.call('LINDEX', q, 0)\n"
    "    while first and tpm_time(first) <= now - win do\n"
    "      redis.call('LPOP', q)\n"
    "      local id = string.sub(first, string.find(first, '|', 1, true) + 1)\n"
    "      local w = tonumber(redis.call('HGET', h, id) or 0)\n"
    "      redis.call('HDEL', h, id)\n"
    "      if w ~= 0 then redis.call('HINCRBY', h, '~', fmt(-w)) end\n"
    "      first = redis.call('LINDEX', q, 0)\n"
    "    end\n"
    "    local sum = math.max(tonumber(redis.call('HGET', h, '~') or 0), 0)\n"
    "    local oldest = first and tpm_time(first) or now\n"
    "    if sum + amt > limit then\n"
    "      fail = 1\n"
    "      if amt > limit then retry = -1 else\n"
    "        local need, freed, j = sum + amt - limit, 0, 0\n"
    "        retry = nil\n"
    "        while retry == nil and j < 1024 do\n"
    "          local batch = redis.call('LRANGE', q, j, j + 63)\n"
    "          if #batch == 0 then break end\n"
    "          for _, e in ipairs(batch) do\n"
    "            local bar = string.find(e, '|', 1, true)\n"
    "            freed = freed + tonumber(redis.call('HGET', h, string.sub(e, bar + 1)) or 0)\n"
    "            if freed >= need then retry = tonumber(string.sub(e, 1, bar - 1)) + win - now; break end\n"
    "          end\n"
    "          j = j + 64\n"
    "        end\n"
    "        if retry == nil then\n"
    "          local last = redis.call('LINDEX', q, -1)\n"
    "          retry = last and tpm_time(last) + win - now or win\n"
    "        end\n"
    "      end\n"
    "      r1 = math.max(limit - sum, 0)\n"
    "      r2 = first and oldest + win - now or 0\n"
    "    else\n"
    "      r1 = limit - sum - amt\n"
    "      r2 = oldest + win - now\n"
    "    end\n"
    "    st[i] = {q, h}\n"
    "  elseif kind == 'c' then\n"
    "    local z = KEYS[ki]; ki = ki + 1\n"
    "    redis.call('ZREMRANGEBYSCORE', z, '-inf', fmt(now))\n"
    "    local cnt = redis.call('ZCARD', z)\n"
    "    if cnt + 1 > limit then fail = 1; retry = -2; r1 = math.max(limit - cnt, 0) else r1 = limit - cnt - 1 end\n"
    "    st[i] = {z}\n"
    "  else\n"
    "    local h = KEYS[ki]; ki = ki + 1\n"
    "    local p = string.sub(kind, 2, 2)\n"
    "    local pid = 0\n"
    "    if p == 'd' then pid = day elseif p == 'm' then pid = month_of(day) end\n"
    "    local v = redis.call('HMGET', h, 'p', 's', 'r')\n"
    "    local same = tonumber(v[1] or -1) == pid\n"
    "    local spent, res = 0, 0\n"
    "    if same then spent = tonumber(v[2] or 0); res = tonumber(v[3] or 0) end\n"
    "    if spent + res + amt > limit then\n"
    "      fail = 1\n"
    "      if amt > limit or p == 't' then retry = -1\n"
    "      elseif p == 'd' then retry = (day + 1) * 86400000000 - now\n"
    "      else retry = month_start(month_of(day) + 1) * 86400000000 - now end\n"
    "    end\n"
    "    r1 = pid\n"
    "    st[i] = {h, pid, same, p}\n"
    "  end\n"
    "  if fail == 1 then ok = false end\n"
    "  out[#out + 1] = fail; out[#out + 1] = retry; out[#out + 1] = r1; out[#out + 1] = r2\n"
    "end\n"
    "if not ok then return out end\n"
    "out[1] = 1\n"
    "local px = fl(win, 1000) + 1000\n"
    "for i = 1, n do\n"
    "  local a = 4 + (i - 1) * 3\n"
    "  local kind, amt = ARGV[a + 1], ARGV[a + 3]\n"
    "  local s = st[i]\n"
    "  if kind == 'r' then\n"
    "    redis.call('RPUSH', s[1], fmt(now)); redis.call('PEXPIRE', s[1], px)\n"
    "  elseif kind == 't' then\n"
    "    redis.call('RPUSH', s[1], fmt(now) .. '|' .. lid)\n"
    "    redis.call('HSET', s[2], lid, amt)\n"
    "    redis.call('HINCRBY', s[2], '~', amt)\n"
    "    redis.call('PEXPIRE', s[1], px); redis.call('PEXPIRE', s[2], px)\n"
    "  elseif kind == 'c' then\n"
    "    redis.call('ZADD', s[1], fmt(now + ttl), lid)\n"
    "    local ms = fl(ttl, 1000) + 1000\n"
    "    if redis.call('PTTL', s[1]) < ms then redis.call('PEXPIRE', s[1], ms) end\n"
    "  else\n"
    "    local h = s[1]\n"
    "    if not s[3] then redis.call('DEL', h); redis.call('HSET', h, 'p', fmt(s[2])) end\n"
    "    if tonumber(amt) > 0 then\n"
    "      redis.call('HINCRBY', h, 'r', amt)\n"
    "      redis.call('HSET', h, lid, amt)\n"
    "    end\n"
    "    if s[4] == 'd' then redis.call('PEXPIRE', h, 3 * 86400000)\n"
    "    elseif s[4] == 'm' then redis.call('PEXPIRE', h, 63 * 86400000) end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS: per check: t: tpmw; c: conc zset; b?: budget hash.
 * ARGV: lease, n, fresh (1: the admission never reached Redis), then per check: kind,
 * x1, x2, x3, x4 (t: tokens; b?: period id, cost (-1: charge the reservation), cap,
 * alert percent). Returns per check {alert crossed now (0/1), spent µ$}. */
static const char k_finish_lua[] =
    "-- smolgate limits: end of a lease\n"
    "local lid, n, fresh = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'\n"
    "local function fmt(x) return string.format('%.0f', x) end\n"
    "local out = {}\n"
    "for i = 1, n do\n"
    "  local a = 3 + (i - 1) * 5\n"
    "  local kind, k = ARGV[a + 1], KEYS[i]\n"
    "  local flag, spent = 0, 0\n"
    "  if kind == 't' then\n"
    "    local w = redis.call('HGET', k, lid)\n"
    "    if w then\n"
    "      redis.call('HSET', k, lid, ARGV[a + 2])\n"
    "      redis.call('HINCRBY', k, '~', fmt(tonumber(ARGV[a + 2]) - tonumber(w)))\n"
    "    end\n"
    "  elseif kind == 'c' then\n"
    "    redis.call('ZREM', k, lid)\n"
    "  else\n"
    "    local pid, cost, cap, pct = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])\n"
    "    local cur = redis.call('HGET', k, 'p')\n"
    "    if not cur and fresh and cost > 0 then\n"
    "      redis.call('HSET', k, 'p', fmt(pid)); cur = fmt(pid)\n"
    "      local p = string.sub(kind, 2, 2)\n"
    "      if p == 'd' then redis.call('PEXPIRE', k, 3 * 86400000)\n"
    "      elseif p == 'm' then redis.call('PEXPIRE', k, 63 * 86400000) end\n"
    "    end\n"
    "    if cur and tonumber(cur) == pid then\n"
    "      local r = redis.call('HGET', k, lid)\n"
    "      local charge = 0\n"
    "      if r then\n"
    "        redis.call('HDEL', k, lid)\n"
    "        redis.call('HINCRBY', k, 'r', fmt(-tonumber(r)))\n"
    "        if cost >= 0 then charge = cost else charge = tonumber(r) end\n"
    "      elseif fresh and cost > 0 then\n"
    "        charge = cost\n"
    "      end\n"
    "      if charge > 0 then spent = redis.call('HINCRBY', k, 's', fmt(charge))\n"
    "      else spent = tonumber(redis.call('HGET', k, 's') or 0) end\n"
    "      if cap > 0 and spent * 100 >= cap * pct and redis.call('HSETNX', k, 'a', 1) == 1 then flag = 1 end\n"
    "    end\n"
    "  end\n"
    "  out[#out + 1] = flag; out[#out + 1] = spent\n"
    "end\n"
    "return out\n";

/* ---- state ---- */

typedef enum rop_kind { ROP_SETUP, ROP_PROBE, ROP_ADMIT, ROP_FINISH } rop_kind;

struct limits_redis;

/* One connection and its loop adapter. Freed by a timer after hiredis's cleanup hook, so
 * the I/O callback may still look at it after hiredis freed the context under it. */
typedef struct rconn {
    struct limits_redis *rd;
    redisAsyncContext *ac;     /* NULL once hiredis freed it */
    loop_watch w;
    unsigned interest;
    bool connected;            /* the connect completed */
    bool dead;                 /* hiredis called cleanup */
    struct rconn *next_dying;  /* waiting for its reap timer */
    loop_timer reap;
    loop_timer connect_timer;
} rconn;

/* One call to Redis. Its arguments are kept for a resend with EVAL (NOSCRIPT). */
typedef struct rop {
    struct limits_redis *rd;
    struct rop *prev, *next;   /* in flight, oldest first */
    rop_kind kind;
    limits_lease *lease;       /* ADMIT, FINISH */
    bool answered;             /* ADMIT: the caller has its result */
    bool resent;               /* sent again with EVAL */
    bool ready_marker;         /* SETUP: the last call; its answer means ready */
    int retries;               /* FINISH: resent after a lost connection */
    const char *script;        /* ADMIT / FINISH: its text */
    const char *sha;
    uint64_t sent_ms;
    loop_timer timer;          /* ADMIT: state.timeout_ms */
    int n_args;
    size_t off[ROP_MAX_ARGS], len[ROP_MAX_ARGS];
    sg_buf buf;
    int fin_checks[LIMITS_MAX_CHECKS];   /* FINISH: which lease checks it carries */
    int n_fin;
} rop;

struct limits_redis {
    limits *lim;
    limits_redis_url url;
    char where[300];           /* host:port or unix:path, for logs (no password) */
    char prefix[256];
    rconn *conn;               /* the current connection, or NULL */
    rconn *dying;              /* connections hiredis let go, freed by a timer */
    uint64_t last_reply_ms;
    bool ready;                /* the setup on the current connection answered */
    bool outage;
    bool freeing;
    uint64_t outage_start_ms;
    uint64_t outage_undecided;
    uint32_t backoff_ms;
    loop_timer reconnect_timer, probe_timer, stall_timer;
    bool probe_inflight;
    rop *head, *tail;          /* calls in flight */
    uint64_t n_inflight;
    limits_lease **queue;      /* leases waiting to send their end while Redis is away */
    size_t n_queue, cap_queue;
    uint64_t last_error_log_ms;
    char sha_admit[41], sha_finish[41];
};

static void rd_connect(struct limits_redis *rd);
static void rd_drop(struct limits_redis *rd, const char *why);
static void lease_settle(limits_lease *l);
static void send_finish(limits_lease *l, int retries);

static uint64_t now_ms(struct limits_redis *rd) { return loop_update_now(rd->lim->loop); }

/* ---- URLs ---- */

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Copies [s, e) percent-decoded into out (cap bytes). */
static int pct_decode(const char *s, const char *e, char *out, size_t cap) {
    size_t n = 0;
    for (; s < e; s++) {
        char c = *s;
        if (c == '%' && e - s >= 3 && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            c = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        }
        if (n + 1 >= cap) return -1;
        out[n++] = c;
    }
    out[n] = 0;
    return 0;
}

int limits_redis_parse_url(const char *url, limits_redis_url *out, sg_error *err) {
    memset(out, 0, sizeof *out);
    if (!strncasecmp(url, "rediss://", 9))
        return sg_fail(err, "state.redis: rediss:// (TLS) is not supported: this build's hiredis (0.14) has no TLS; "
                            "use redis:// through a TLS tunnel, or unix://");
    if (!strncasecmp(url, "unix://", 7)) {
        const char *p = url + 7, *q = strchr(p, '?');
        const char *e = q ? q : p + strlen(p);
        if (e == p || pct_decode(p, e, out->host, sizeof out->host))
            return sg_fail(err, "state.redis: a unix:// URL needs a socket path (value not shown)");
        out->unix_socket = true;
        for (const char *a = q; a && *a; a = strchr(a + 1, '&')) {
            const char *kv = a + 1;
            if (!strncmp(kv, "db=", 3)) out->db = atoi(kv + 3);
        }
        return 0;
    }
    if (strncasecmp(url, "redis://", 8)) return sg_fail(err, "state.redis: expected redis:// or unix:// (value not shown)");
    const char *p = url + 8;
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *s = p; s < end; s++)
        if (*s == '@') at = s;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (pct_decode(p, colon, out->user, sizeof out->user) || pct_decode(colon + 1, at, out->password, sizeof out->password))
                return sg_fail(err, "state.redis: user or password too long (value not shown)");
        } else if (pct_decode(p, at, out->password, sizeof out->password)) {
            return sg_fail(err, "state.redis: password too long (value not shown)");
        }
        p = at + 1;
    }
    const char *host_end, *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb) return sg_fail(err, "state.redis: unterminated [IPv6] host (value not shown)");
        if ((size_t)(rb - p - 1) >= sizeof out->host) return sg_fail(err, "state.redis: host too long");
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
        host_end = rb + 1;
        if (host_end < end && *host_end == ':') port = host_end + 1;
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        host_end = colon ? colon : end;
        if (colon) port = colon + 1;
        if ((size_t)(host_end - p) >= sizeof out->host) return sg_fail(err, "state.redis: host too long");
        memcpy(out->host, p, (size_t)(host_end - p));
    }
    if (!out->host[0]) return sg_fail(err, "state.redis: the URL has no host (value not shown)");
    out->port = 6379;
    if (port) {
        char *e;
        long v = strtol(port, &e, 10);
        if (e != end || v < 1 || v > 65535) return sg_fail(err, "state.redis: invalid port (value not shown)");
        out->port = (int)v;
    }
    if (*end == '/' && end[1] && end[1] != '?' && end[1] != '#') {
        char *e;
        long v = strtol(end + 1, &e, 10);
        if (v < 0 || v > 1000000 || (*e && *e != '?' && *e != '#'))
            return sg_fail(err, "state.redis: the path must be a database number (value not shown)");
        out->db = (int)v;
    }
    return 0;
}

/* ---- outages ---- */

static void outage_begin(struct limits_redis *rd, const char *why) {
    if (rd->freeing || rd->outage) return;
    rd->outage = true;
    rd->outage_start_ms = now_ms(rd);
    rd->outage_undecided = 0;
    rd->lim->stats.outage = true;
    rd->lim->stats.outages++;
    SG_WARN("limits: Redis at %s is unavailable (%s): %s requests without checking limits or budgets until it "
            "answers again (state.on_redis_error: %s)", rd->where, why,
            rd->lim->fail_open ? "admitting" : "refusing", rd->lim->fail_open ? "open" : "closed");
    loop_timer_start(rd->lim->loop, &rd->probe_timer, PROBE_MS);
}

static void flush_queue(struct limits_redis *rd) {
    size_t n = rd->n_queue;
    limits_lease **q = rd->queue;
    rd->queue = NULL;
    rd->n_queue = rd->cap_queue = 0;
    for (size_t i = 0; i < n; i++) {
        q[i]->ops--;
        q[i]->finish_sent = false;
        lease_settle(q[i]);
    }
    free(q);
}

/* Any answer from Redis ends an outage. */
static void outage_end(struct limits_redis *rd) {
    if (!rd->outage) return;
    rd->outage = false;
    rd->lim->stats.outage = false;
    SG_INFO("limits: Redis at %s answers again after %" PRIu64 " ms; requests decided without it: %" PRIu64,
            rd->where, now_ms(rd) - rd->outage_start_ms, rd->outage_undecided);
    loop_timer_stop(rd->lim->loop, &rd->probe_timer);
}

static void log_error(struct limits_redis *rd, const char *what, const char *msg) {
    uint64_t now = now_ms(rd);
    if (rd->last_error_log_ms && now - rd->last_error_log_ms < 10000) return;
    rd->last_error_log_ms = now;
    SG_ERROR("limits: Redis at %s: %s: %.200s", rd->where, what, msg);
}

/* ---- calls ---- */

static void rop_arg(rop *o, const char *s, size_t n) {
    o->off[o->n_args] = o->buf.len;
    o->len[o->n_args] = n;
    o->n_args++;
    sg_buf_append(&o->buf, s, n);
}

static void rop_str(rop *o, const char *s) { rop_arg(o, s, strlen(s)); }

static void rop_i64(rop *o, int64_t v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    rop_arg(o, t, (size_t)n);
}

static void rop_key(rop *o, const struct limits_redis *rd, const char *kind, const char *scope) {
    char t[600];
    int n = snprintf(t, sizeof t, "%s%s:%s", rd->prefix, kind, scope);
    rop_arg(o, t, (size_t)n);
}

static rop *rop_new(struct limits_redis *rd, rop_kind kind, limits_lease *l) {
    rop *o = sg_xcalloc(1, sizeof *o);
    o->rd = rd;
    o->kind = kind;
    o->lease = l;
    sg_buf_init(&o->buf);
    if (l) l->ops++;
    return o;
}

static void rop_unlink(rop *o) {
    struct limits_redis *rd = o->rd;
    if (o->prev) o->prev->next = o->next;
    else if (rd->head == o) rd->head = o->next;
    if (o->next) o->next->prev = o->prev;
    else if (rd->tail == o) rd->tail = o->prev;
    o->prev = o->next = NULL;
}

static void rop_free(rop *o) {
    loop_timer_stop(o->rd->lim->loop, &o->timer);
    if (o->kind == ROP_SETUP && o->buf.data) explicit_bzero(o->buf.data, o->buf.len);   /* AUTH */
    sg_buf_free(&o->buf);
    free(o);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void stall_check(loop *lp, loop_timer *t, void *arg);

/* Sends o: scripts as EVALSHA (EVAL once the server said NOSCRIPT). Returns -1 when
 * there is no connection or hiredis refuses (the caller handles it as a lost call). */
static int rop_send(rop *o) {
    struct limits_redis *rd = o->rd;
    if (!rd->conn || !rd->conn->ac) return -1;
    const char *argv[ROP_MAX_ARGS + 2];
    size_t lens[ROP_MAX_ARGS + 2];
    int n = 0;
    if (o->script) {
        argv[n] = o->resent ? "EVAL" : "EVALSHA";
        lens[n] = strlen(argv[n]);
        n++;
        argv[n] = o->resent ? o->script : o->sha;
        lens[n] = strlen(argv[n]);
        n++;
    }
    for (int i = 0; i < o->n_args; i++) {
        argv[n] = o->buf.data + o->off[i];
        lens[n++] = o->len[i];
    }
    if (redisAsyncCommandArgv(rd->conn->ac, on_reply, o, n, argv, lens) != REDIS_OK) return -1;
    if (!o->prev && !o->next && rd->head != o) {   /* first send: into the in-flight list */
        o->prev = rd->tail;
        if (rd->tail) rd->tail->next = o;
        else rd->head = o;
        rd->tail = o;
        rd->n_inflight++;
        o->sent_ms = now_ms(rd);
        if (!loop_timer_active(&rd->stall_timer)) loop_timer_start(rd->lim->loop, &rd->stall_timer, rd->lim->timeout_ms);
    }
    return 0;
}

/* A call is over: out of the in-flight list, its lease released. */
static void rop_done(rop *o) {
    struct limits_redis *rd = o->rd;
    if (o->prev || o->next || rd->head == o) {
        rop_unlink(o);
        rd->n_inflight--;
    }
    limits_lease *l = o->lease;
    rop_free(o);
    if (l) {
        l->ops--;
        lease_settle(l);
    }
}

/* No answer for a while though calls wait: the connection is stuck (a frozen server, a
 * dead peer without RST). Drop it and reconnect. */
static void stall_check(loop *lp, loop_timer *t, void *arg) {
    (void)t;
    struct limits_redis *rd = arg;
    if (!rd->head) return;
    uint64_t now = loop_update_now(lp);
    uint64_t stall = rd->lim->timeout_ms * 10 > 2000 ? rd->lim->timeout_ms * 10 : 2000;
    uint64_t since = rd->head->sent_ms > rd->last_reply_ms ? rd->head->sent_ms : rd->last_reply_ms;
    if (now - since >= stall) {
        char why[64];
        snprintf(why, sizeof why, "no answer for %" PRIu64 " ms", now - since);
        rd_drop(rd, why);
        return;
    }
    loop_timer_start(lp, &rd->stall_timer, rd->lim->timeout_ms);
}

/* ---- admissions ---- */

static void deliver(limits_lease *l, const limits_result *r) {
    limits *lim = l->lim;
    l->decided = true;
    l->admitted = r->outcome == LIMITS_ADMITTED;
    l->degraded = r->degraded;
    if (l->admitted) lim->stats.admits++;
    else lim->stats.refusals++;
    if (!l->ended && l->cb) l->cb(l->arg, l, r);
}

static void undecided(struct limits_redis *rd, limits_result *r, const char *why) {
    rd->lim->stats.undecided++;
    rd->outage_undecided++;
    limits_undecided_result(rd->lim, why, r);
}

static void admit_timeout(loop *lp, loop_timer *t, void *arg) {
    (void)lp; (void)t;
    rop *o = arg;
    struct limits_redis *rd = o->rd;
    if (o->answered) return;
    o->answered = true;
    char why[64];
    snprintf(why, sizeof why, "no answer within %u ms", rd->lim->timeout_ms);
    outage_begin(rd, why);
    limits_lease *l = o->lease;
    limits_result r;
    undecided(rd, &r, why);
    l->ops++;                   /* the callback may end the lease: keep it until we are out */
    deliver(l, &r);
    l->ops--;
    lease_settle(l);
}

static char kind_letter(const limits_check *c) { return "rtcb"[c->kind]; }

static void admit_reply(rop *o, redisReply *rep) {
    struct limits_redis *rd = o->rd;
    limits_lease *l = o->lease;
    l->admit_inflight = false;
    l->rop = NULL;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 + 4 * (size_t)l->n_checks) {
        /* lost or failed: the script may have run (a lost connection), or run partly */
        if (rep) log_error(rd, "admission script failed", rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        else outage_begin(rd, "connection lost");
        if (!o->answered) {
            o->answered = true;
            limits_result r;
            undecided(rd, &r, rep ? "Redis error" : "connection lost");
            deliver(l, &r);
        }
        return;
    }
    for (size_t i = 0; i < rep->elements; i++)
        if (rep->element[i]->type != REDIS_REPLY_INTEGER) {
            log_error(rd, "admission script", "non-integer in the reply");
            if (!o->answered) {
                o->answered = true;
                limits_result r;
                undecided(rd, &r, "Redis error");
                deliver(l, &r);
            }
            return;
        }
    bool admitted = rep->element[0]->integer == 1;
    int64_t at = rep->element[1]->integer;
    limits_eval ev[LIMITS_MAX_CHECKS];
    for (int i = 0; i < l->n_checks; i++) {
        limits_check *c = &l->checks[i];
        redisReply **e = rep->element + 2 + 4 * i;
        int64_t retry = e[1]->integer;
        ev[i] = (limits_eval){
            .fail = e[0]->integer == 1,
            .retry_ms = retry == -1 ? -1 : retry == -2 ? LIMITS_CONC_RETRY_MS : (retry + 999) / 1000,
            .remaining = e[2]->integer,
            .reset_ms = e[3]->integer > 0 ? (e[3]->integer + 999) / 1000 : 0,
        };
        if (c->kind == LCHK_BUDGET) c->period_id = e[2]->integer;
    }
    l->maybe_reserved = admitted;
    if (o->answered) {          /* too late: the caller went on without it */
        rd->lim->stats.late_replies++;
        return;
    }
    o->answered = true;
    limits_result r;
    limits_build_result(l, ev, at, &r);
    if (admitted != (r.outcome == LIMITS_ADMITTED)) {   /* cannot happen: same rule both sides */
        log_error(rd, "admission script", "verdict and checks disagree");
    }
    deliver(l, &r);
}

int limits_redis_admit(limits *lim, limits_lease *l, limits_result *r) {
    struct limits_redis *rd = lim->redis;
    /* budget periods on the local clock until Redis says (its answer may never come) */
    int64_t wall = limits_now_wall_us(lim);
    for (int i = 0; i < l->n_checks; i++)
        if (l->checks[i].kind == LCHK_BUDGET) l->checks[i].period_id = limits_period_id(l->checks[i].period, wall);
    if (!rd->conn || rd->outage) {
        l->never_sent = true;
        undecided(rd, r, rd->conn ? "no recent answer" : "not connected");
        return LIMITS_NOW;
    }
    rop *o = rop_new(rd, ROP_ADMIT, l);
    o->script = k_admit_lua;
    o->sha = rd->sha_admit;
    int n_keys = 0;
    for (int i = 0; i < l->n_checks; i++) n_keys += l->checks[i].kind == LCHK_TPM ? 2 : 1;
    rop_i64(o, n_keys);
    for (int i = 0; i < l->n_checks; i++) {
        const limits_check *c = &l->checks[i];
        const char *scope = l->scopes[c->scope].key;
        switch (c->kind) {
        case LCHK_RPM: rop_key(o, rd, "rpm", scope); break;
        case LCHK_TPM: rop_key(o, rd, "tpmq", scope); rop_key(o, rd, "tpmw", scope); break;
        case LCHK_CONC: rop_key(o, rd, "conc", scope); break;
        case LCHK_BUDGET: {
            char kind[16];
            snprintf(kind, sizeof kind, "budget:%c", "dmt"[c->period]);
            rop_key(o, rd, kind, scope);
            break;
        }
        }
    }
    rop_str(o, l->id);
    rop_i64(o, lim->window_us);
    rop_i64(o, (int64_t)l->ttl_ms * 1000);
    rop_i64(o, l->n_checks);
    for (int i = 0; i < l->n_checks; i++) {
        const limits_check *c = &l->checks[i];
        char kind[3] = {kind_letter(c), c->kind == LCHK_BUDGET ? "dmt"[c->period] : 0, 0};
        rop_str(o, kind);
        rop_i64(o, c->limit);
        rop_i64(o, c->amount);
    }
    if (rop_send(o)) {
        l->ops--;
        rop_free(o);
        l->never_sent = true;
        undecided(rd, r, "not connected");
        return LIMITS_NOW;
    }
    l->admit_inflight = true;
    l->maybe_reserved = true;
    l->rop = o;
    loop_timer_init(&o->timer, admit_timeout, o);
    loop_timer_start(lim->loop, &o->timer, lim->timeout_ms);
    return LIMITS_LATER;
}

/* ---- ends of leases ---- */

/* Whether the end of lease l sends check c: what Redis may hold for it, or (never
 * sent, admitted without a decision) the money it spent, so budgets see it. */
static bool finish_carries(const limits_lease *l, const limits_check *c) {
    if (l->never_sent) return l->admitted && c->kind == LCHK_BUDGET && l->usage.cost > 0;
    return l->maybe_reserved && c->kind != LCHK_RPM && (c->kind != LCHK_TPM || l->usage.tokens >= 0);
}

static bool finish_needed(const limits_lease *l) {
    for (int i = 0; i < l->n_checks; i++)
        if (finish_carries(l, &l->checks[i])) return true;
    return false;
}

static void finish_reply(rop *o, redisReply *rep) {
    struct limits_redis *rd = o->rd;
    limits_lease *l = o->lease;
    if (!rep) {
        /* lost with the connection: resend when it is back, if that is harmless (the end
         * of a lease Redis may hold is idempotent; a fresh one's charge is not) */
        if (!l->never_sent && o->retries < 3 && !rd->freeing) send_finish(l, o->retries + 1);
        else rd->lim->stats.dropped++;
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 * (size_t)o->n_fin) {
        rd->lim->stats.dropped++;
        log_error(rd, "reconciliation script failed", rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        return;
    }
    for (int i = 0; i < o->n_fin; i++) {
        redisReply *flag = rep->element[2 * i], *spent = rep->element[2 * i + 1];
        if (flag->type == REDIS_REPLY_INTEGER && flag->integer == 1)
            limits_alert(rd->lim, l, &l->checks[o->fin_checks[i]], spent->type == REDIS_REPLY_INTEGER ? spent->integer : 0);
    }
}

/* Keeps the end of l for when Redis is back (bounded: beyond, it is dropped and counted;
 * what it held then ages out, or stays charged: never under-counted). */
static void queue_finish(struct limits_redis *rd, limits_lease *l) {
    if (rd->n_queue >= FINISH_QUEUE_MAX) {
        rd->lim->stats.dropped++;
        return;
    }
    if (rd->n_queue == rd->cap_queue) {
        rd->cap_queue = rd->cap_queue ? rd->cap_queue * 2 : 64;
        rd->queue = sg_xrealloc(rd->queue, rd->cap_queue * sizeof *rd->queue);
    }
    rd->queue[rd->n_queue++] = l;
    l->ops++;
}

static void send_finish(limits_lease *l, int retries) {
    struct limits_redis *rd = l->lim->redis;
    l->finish_sent = true;
    if (!rd->conn || (rd->outage && !rd->conn->connected)) {
        queue_finish(rd, l);
        return;
    }
    rop *o = rop_new(rd, ROP_FINISH, l);
    o->retries = retries;
    o->script = k_finish_lua;
    o->sha = rd->sha_finish;
    for (int i = 0; i < l->n_checks; i++) {
        const limits_check *c = &l->checks[i];
        if (finish_carries(l, c)) o->fin_checks[o->n_fin++] = i;
    }
    rop_i64(o, o->n_fin);
    for (int j = 0; j < o->n_fin; j++) {
        const limits_check *c = &l->checks[o->fin_checks[j]];
        const char *scope = l->scopes[c->scope].key;
        char kind[16];
        if (c->kind == LCHK_TPM) rop_key(o, rd, "tpmw", scope);
        else if (c->kind == LCHK_CONC) rop_key(o, rd, "conc", scope);
        else {
            snprintf(kind, sizeof kind, "budget:%c", "dmt"[c->period]);
            rop_key(o, rd, kind, scope);
        }
    }
    rop_str(o, l->id);
    rop_i64(o, o->n_fin);
    rop_str(o, l->never_sent ? "1" : "0");
    for (int j = 0; j < o->n_fin; j++) {
        const limits_check *c = &l->checks[o->fin_checks[j]];
        char kind[3] = {kind_letter(c), c->kind == LCHK_BUDGET ? "dmt"[c->period] : 0, 0};
        rop_str(o, kind);
        if (c->kind == LCHK_BUDGET) {
            rop_i64(o, c->period_id);
            rop_i64(o, l->usage.cost);
            rop_i64(o, c->limit);
            rop_i64(o, c->alert_percent);
        } else {
            rop_i64(o, c->kind == LCHK_TPM ? l->usage.tokens : 0);
            rop_i64(o, 0);
            rop_i64(o, 0);
            rop_i64(o, 0);
        }
    }
    if (rop_send(o)) {
        /* hiredis refused (the connection is going away): queue it for the next one */
        l->ops--;
        rop_free(o);
        queue_finish(rd, l);
    }
}

/* Frees the lease once the caller ended it and nothing waits on Redis for it; sends its
 * end first when Redis may hold something for it. */
static void lease_settle(limits_lease *l) {
    struct limits_redis *rd = l->lim->redis;
    if (!l->ended || l->admit_inflight) return;
    if (!l->finish_sent && !rd->freeing && finish_needed(l)) send_finish(l, 0);
    if (l->ops == 0) limits_lease_free(l);
}

void limits_redis_end(limits_lease *l) {
    if (l->admit_inflight && l->rop) {
        /* cancelled while waiting: no callback; the answer still comes and is settled */
        loop_timer_stop(l->lim->loop, &((rop *)l->rop)->timer);
    }
    lease_settle(l);
}

/* ---- connection setup and replies ---- */

static void setup_reply(rop *o, redisReply *rep) {
    struct limits_redis *rd = o->rd;
    if (!rep) return;
    if (rep->type == REDIS_REPLY_ERROR) {
        /* AUTH / SELECT / SCRIPT LOAD refused (Redis's message never holds the password) */
        log_error(rd, "connection setup refused", rep->str);
        rd_drop(rd, "connection setup refused");
        return;
    }
    if (o->ready_marker) {
        rd->ready = true;
        rd->backoff_ms = BACKOFF_MIN_MS;
        outage_end(rd);
        if (rd->n_queue) flush_queue(rd);
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)ac;
    rop *o = privdata;
    struct limits_redis *rd = o->rd;
    redisReply *rep = reply;
    if (rd->freeing) {
        if (o->lease) o->lease->admit_inflight = false;
        if (o->prev || o->next || rd->head == o) {
            rop_unlink(o);
            rd->n_inflight--;
        }
        if (o->lease) o->lease->ops--;
        rop_free(o);
        return;
    }
    /* NOSCRIPT: the server lost its script cache (restart, SCRIPT FLUSH); EVAL loads it */
    if (rep && rep->type == REDIS_REPLY_ERROR && o->script && !o->resent && !strncmp(rep->str, "NOSCRIPT", 8)) {
        o->resent = true;
        if (rop_send(o) == 0) return;
        rep = NULL;
    }
    if (rep && rep->type != REDIS_REPLY_ERROR) outage_end(rd);
    if (rep) rd->last_reply_ms = now_ms(rd);
    switch (o->kind) {
    case ROP_SETUP: setup_reply(o, rep); break;
    case ROP_PROBE:
        rd->probe_inflight = false;
        if (rep && rep->type != REDIS_REPLY_ERROR) outage_end(rd);
        break;
    case ROP_ADMIT: admit_reply(o, rep); break;
    case ROP_FINISH: finish_reply(o, rep); break;
    }
    rop_done(o);
}

static void probe_fire(loop *lp, loop_timer *t, void *arg) {
    (void)t;
    struct limits_redis *rd = arg;
    if (!rd->outage) return;
    if (rd->conn && rd->conn->connected && rd->ready && !rd->probe_inflight) {
        rop *o = rop_new(rd, ROP_PROBE, NULL);
        rop_str(o, "PING");
        if (rop_send(o) == 0) rd->probe_inflight = true;
        else rop_free(o);
    }
    loop_timer_start(lp, &rd->probe_timer, PROBE_MS);
}

/* ---- the loop adapter ---- */

static void conn_update(rconn *c) {
    if (c->dead) return;
    sg_error err;
    if (loop_watch_set(c->rd->lim->loop, &c->w, c->interest, &err))
        SG_ERROR("limits: Redis socket: %s", err.msg);
}

static void ev_add_read(void *p) { rconn *c = p; c->interest |= LOOP_READ; conn_update(c); }
static void ev_del_read(void *p) { rconn *c = p; c->interest &= ~(unsigned)LOOP_READ; conn_update(c); }
static void ev_add_write(void *p) { rconn *c = p; c->interest |= LOOP_WRITE; conn_update(c); }
static void ev_del_write(void *p) { rconn *c = p; c->interest &= ~(unsigned)LOOP_WRITE; conn_update(c); }

static void conn_reap(loop *lp, loop_timer *t, void *arg) {
    (void)lp; (void)t;
    rconn *c = arg;
    for (rconn **p = &c->rd->dying; *p; p = &(*p)->next_dying)
        if (*p == c) { *p = c->next_dying; break; }
    free(c);
}

/* hiredis is freeing the context (its fd closes right after). */
static void ev_cleanup(void *p) {
    rconn *c = p;
    struct limits_redis *rd = c->rd;
    loop_watch_remove(rd->lim->loop, &c->w);
    loop_timer_stop(rd->lim->loop, &c->connect_timer);
    c->dead = true;
    c->ac = NULL;
    if (rd->conn == c) {
        rd->conn = NULL;
        rd->ready = false;
    }
    /* hiredis calls on_disconnect with it after this: free it later */
    c->next_dying = rd->dying;
    rd->dying = c;
    loop_timer_init(&c->reap, conn_reap, c);
    if (!rd->freeing) loop_timer_start(rd->lim->loop, &c->reap, 0);
}

static void on_io(loop *lp, loop_watch *w, unsigned events, void *arg) {
    (void)lp; (void)w;
    rconn *c = arg;
    if (c->dead) return;
    redisAsyncContext *ac = c->ac;
    if ((events & (LOOP_READ | LOOP_ERROR | LOOP_RDHUP)) && (c->interest & LOOP_READ)) redisAsyncHandleRead(ac);
    if (!c->dead && (events & (LOOP_WRITE | LOOP_ERROR)) && (c->interest & LOOP_WRITE)) redisAsyncHandleWrite(ac);
}

static void schedule_reconnect(struct limits_redis *rd) {
    if (rd->freeing || loop_timer_active(&rd->reconnect_timer)) return;
    uint32_t ms = rd->backoff_ms + (uint32_t)(rand() % (rd->backoff_ms / 4 + 1));
    loop_timer_start(rd->lim->loop, &rd->reconnect_timer, ms);
    rd->backoff_ms = rd->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rd->backoff_ms * 2;
}

static void on_connect(const redisAsyncContext *ac, int status) {
    rconn *c = ac->data;
    struct limits_redis *rd = c->rd;
    loop_timer_stop(rd->lim->loop, &c->connect_timer);
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns */
        if (rd->conn == c) rd->conn = NULL;
        outage_begin(rd, ac->errstr[0] ? ac->errstr : "connect failed");
        schedule_reconnect(rd);
        return;
    }
    c->connected = true;
    rd->lim->stats.connected = true;
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    (void)status;
    rconn *c = ac->data;
    struct limits_redis *rd = c->rd;
    if (rd->freeing) return;
    if (rd->conn == c || !rd->conn) {     /* not an old connection we already gave up */
        rd->conn = NULL;
        rd->ready = false;
        rd->lim->stats.connected = false;
    }
    outage_begin(rd, ac->errstr[0] ? ac->errstr : "connection closed");
    schedule_reconnect(rd);
}

/* Gives up the current connection (its pending calls answer as lost) and reconnects. */
static void rd_drop(struct limits_redis *rd, const char *why) {
    rconn *c = rd->conn;
    outage_begin(rd, why);
    rd->conn = NULL;
    rd->ready = false;
    rd->lim->stats.connected = false;
    if (c && c->ac) redisAsyncFree(c->ac);   /* deferred by hiredis inside its callbacks */
    schedule_reconnect(rd);
}

static void connect_timeout(loop *lp, loop_timer *t, void *arg) {
    (void)lp; (void)t;
    rconn *c = arg;
    struct limits_redis *rd = c->rd;
    if (c->connected || c->dead || rd->conn != c) return;
    rd_drop(rd, "connect timed out");
}

static void reconnect_fire(loop *lp, loop_timer *t, void *arg) {
    (void)lp; (void)t;
    rd_connect(arg);
}

static void setup_call(struct limits_redis *rd, const char *const *argv, int argc, bool last) {
    rop *o = rop_new(rd, ROP_SETUP, NULL);
    for (int i = 0; i < argc; i++) rop_str(o, argv[i]);
    o->ready_marker = last;
    if (rop_send(o)) rop_free(o);
}

static void rd_connect(struct limits_redis *rd) {
    if (rd->freeing || rd->conn) return;
    redisAsyncContext *ac = rd->url.unix_socket ? redisAsyncConnectUnix(rd->url.host)
                                                : redisAsyncConnect(rd->url.host, rd->url.port);
    if (!ac || ac->err) {
        outage_begin(rd, ac && ac->errstr[0] ? ac->errstr : "cannot create a connection");
        if (ac) redisAsyncFree(ac);
        schedule_reconnect(rd);
        return;
    }
    rconn *c = sg_xcalloc(1, sizeof *c);
    c->rd = rd;
    c->ac = ac;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    loop_watch_init(&c->w, ac->c.fd, on_io, c);
    loop_timer_init(&c->connect_timer, connect_timeout, c);
    rd->conn = c;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (!rd->conn) return;      /* failed at once */
    uint32_t cto = rd->lim->timeout_ms > 1000 ? rd->lim->timeout_ms : 1000;
    loop_timer_start(rd->lim->loop, &c->connect_timer, cto);
    /* pipelined: commands queue until the connect completes */
    char db[16];
    snprintf(db, sizeof db, "%d", rd->url.db);
    if (rd->url.password[0]) {
        const char *a[] = {"AUTH", rd->url.user, rd->url.password};
        if (rd->url.user[0]) setup_call(rd, a, 3, false);
        else { a[1] = rd->url.password; setup_call(rd, a, 2, false); }
    }
    if (rd->url.db) {
        const char *a[] = {"SELECT", db};
        setup_call(rd, a, 2, false);
    }
    const char *la[] = {"SCRIPT", "LOAD", k_admit_lua};
    setup_call(rd, la, 3, false);
    const char *lf[] = {"SCRIPT", "LOAD", k_finish_lua};
    setup_call(rd, lf, 3, true);
}

static void sha1_hex(const char *s, char out[41]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(s, strlen(s), md, &n, EVP_sha1(), NULL);
    for (unsigned i = 0; i < n && i < 20; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

int limits_redis_new(limits *lim, const gw_state *st, sg_error *err) {
    struct limits_redis *rd = sg_xcalloc(1, sizeof *rd);
    rd->lim = lim;
    if (limits_redis_parse_url(st->redis_url, &rd->url, err)) {
        free(rd);
        return -1;
    }
    if (rd->url.unix_socket) snprintf(rd->where, sizeof rd->where, "unix:%s", rd->url.host);
    else if (strchr(rd->url.host, ':')) snprintf(rd->where, sizeof rd->where, "[%s]:%d", rd->url.host, rd->url.port);
    else snprintf(rd->where, sizeof rd->where, "%s:%d", rd->url.host, rd->url.port);
    snprintf(rd->prefix, sizeof rd->prefix, "%s", st->key_prefix ? st->key_prefix : "smolgate:");
    sha1_hex(k_admit_lua, rd->sha_admit);
    sha1_hex(k_finish_lua, rd->sha_finish);
    rd->backoff_ms = BACKOFF_MIN_MS;
    loop_timer_init(&rd->reconnect_timer, reconnect_fire, rd);
    loop_timer_init(&rd->probe_timer, probe_fire, rd);
    loop_timer_init(&rd->stall_timer, stall_check, rd);
    lim->redis = rd;
    rd_connect(rd);
    return 0;
}

void limits_redis_free(limits *lim) {
    struct limits_redis *rd = lim->redis;
    rd->freeing = true;
    loop_timer_stop(lim->loop, &rd->reconnect_timer);
    loop_timer_stop(lim->loop, &rd->probe_timer);
    loop_timer_stop(lim->loop, &rd->stall_timer);
    if (rd->conn && rd->conn->ac) redisAsyncFree(rd->conn->ac);   /* pending calls answer NULL */
    while (rd->dying) {
        rconn *c = rd->dying;
        rd->dying = c->next_dying;
        loop_timer_stop(lim->loop, &c->reap);
        free(c);
    }
    free(rd->queue);              /* the leases in it are freed by limits_free */
    explicit_bzero(&rd->url, sizeof rd->url);
    free(rd);
    lim->redis = NULL;
}

uint64_t limits_redis_in_flight(const limits *lim) { return lim->redis ? lim->redis->n_inflight : 0; }
