/* test_proxy.c: the attempt state machine (proxy.c) against a fake provider and a fake
 * transport.
 *
 * The gateway is assembled as gateway.c does it (loop, HTTP server on 127.0.0.1:0, the
 * configuration below, in-process limits, a SQLite ledger in a temporary folder, circuit
 * breakers), with two seams filled by this file:
 *   - every provider's entry (gw_provider.entry, provider.h) is `fake_entry`: its request
 *     is the model name, its answers a tiny text format (below), so nothing here depends
 *     on a real provider's codec;
 *   - the transport (gateway.transport, transport.h) is `fake_ops`: each upstream_start
 *     takes the next scripted answer (status, headers, body chunks, a transport error at
 *     the end, or a connect error instead of any answer) and plays it from a loop timer,
 *     with upstream.h's callback order; every call is recorded (URL, body, loop time).
 * Clients are raw sockets on the single loop thread: a request is written, then the loop
 * runs until the server closes the connection (Connection: close).
 *
 * Fake answer format: a non-streamed body "TEXT|INPUT|OUTPUT" (text and usage); a stream
 * is SSE whose data is text, "usage:IN,OUT", or "[DONE]" (the end marker). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "gateway/breaker.h"
#include "gateway/gateway.h"
#include "gateway/provider.h"
#include "testutil.h"

/* ------------------------------------------------------------------------------------ */
/* the fake provider */

typedef struct fake_scan {
    bool done;                     /* "[DONE]" seen */
} fake_scan;

static int fake_build(gw_request *req, const gw_provider *pv, const char *model, const gw_model_info *info,
                      gw_upstream_call *call, gw_api_error *e) {
    (void)req; (void)info; (void)e;
    sg_buf_printf(call->url, "%s/chat", pv->base_url);
    sg_buf_puts(call->body, model);
    return 0;
}

static void emit_usage(gw_event_fn fn, void *ctx, long in, long out) {
    gw_event ev = {.kind = GW_EV_USAGE};
    gw_usage_init(&ev.usage);
    ev.usage.input = in;
    ev.usage.output = out;
    fn(ctx, &ev);
}

static void fake_scan_init(gw_scan *s, uint64_t seed) { (void)seed; memset(s->state, 0, sizeof(fake_scan)); }
static void fake_scan_free(gw_scan *s) { (void)s; }

static int fake_scan_event(gw_scan *s, const char *event, const char *data, size_t len, gw_event_fn fn, void *ctx,
                           gw_relay *relay) {
    (void)event;
    *relay = GW_RELAY_NONE;
    fake_scan *f = (fake_scan *)s->state;
    long in, out;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        f->done = true;
        gw_event ev = {.kind = GW_EV_FINISH, .finish = "stop"};
        fn(ctx, &ev);
    } else if (len > 6 && !memcmp(data, "usage:", 6) && sscanf(data + 6, "%ld,%ld", &in, &out) == 2) {
        emit_usage(fn, ctx, in, out);
    } else {
        gw_event ev = {.kind = GW_EV_TEXT, .text = data, .len = len};
        fn(ctx, &ev);
    }
    return 0;
}

static int fake_scan_end(gw_scan *s, gw_event_fn fn, void *ctx) {
    (void)fn; (void)ctx;
    return ((fake_scan *)s->state)->done ? 0 : 1;
}

static int fake_scan_response(const char *body, size_t len, uint64_t seed, gw_event_fn fn, void *ctx) {
    (void)seed;
    char b[256];
    long in, out;
    snprintf(b, sizeof b, "%.*s", (int)len, body);
    char *bar = strchr(b, '|');
    if (!bar || sscanf(bar + 1, "%ld|%ld", &in, &out) != 2) return 1;
    gw_event st = {.kind = GW_EV_START, .id = "fake-1"};
    fn(ctx, &st);
    gw_event t = {.kind = GW_EV_TEXT, .text = b, .len = (size_t)(bar - b)};
    fn(ctx, &t);
    gw_event f = {.kind = GW_EV_FINISH, .finish = "stop"};
    fn(ctx, &f);
    emit_usage(fn, ctx, in, out);
    return 0;
}

/* 429, 408 and 5xx are transient, 402 an exhausted quota, other 4xx the client's. */
static gw_failure fake_classify(int status, const char *body, size_t len, gw_api_error *out) {
    gw_api_fail(out, status, status == 429 ? "rate_limited" : "fake_error", NULL, "fake says: %.*s", (int)len,
                body ? body : "");
    if (status == 429 || status == 408 || status >= 500) return GW_FAIL_RETRYABLE;
    return status == 402 ? GW_FAIL_QUOTA : GW_FAIL_CLIENT;
}

static void fake_build_count(const json_t *body, const gw_provider *pv, const char *model, gw_upstream_call *call) {
    (void)body;
    sg_buf_printf(call->url, "%s/count", pv->base_url);
    sg_buf_puts(call->body, model);
}

static int64_t fake_scan_count(const char *body, size_t len) {
    char b[32];
    snprintf(b, sizeof b, "%.*s", (int)len, body);
    char *end;
    long n = strtol(b, &end, 10);
    return end != b && n >= 0 ? n : -1;
}

static const gw_provider_entry fake_entry = {
    .type = GW_PROVIDER_OPENAI,
    .type_name = "fake",
    .build_request = fake_build,
    .scan_init = fake_scan_init,
    .scan_free = fake_scan_free,
    .scan_event = fake_scan_event,
    .scan_end = fake_scan_end,
    .scan_response = fake_scan_response,
    .classify_error = fake_classify,
    .retry_after_ms = gw_retry_after_header,
    .build_count_tokens = fake_build_count,
    .scan_count_tokens = fake_scan_count,
};

/* The same without a count endpoint: count_tokens estimates. */
static gw_provider_entry fake_entry_nocount;

/* ------------------------------------------------------------------------------------ */
/* the fake transport */

typedef struct fake_answer {
    upstream_result connect_error; /* not OK: no head, on_done with this at once */
    int status;
    const char *headers[4][2];
    const char *chunks[6];
    upstream_result end;           /* how the transfer ends after the chunks */
    int head_ms, tail_ms;          /* the head comes head_ms after the start, the body and
                                      the end tail_ms after the head */
    uint32_t connect_ms;           /* what on_done reports as the connect time */
} fake_answer;

typedef struct fake_call {
    char url[128];
    char body[128];
    uint64_t at_ms;                /* loop clock at upstream_start */
} fake_call;

typedef struct fake_xfer {
    loop_timer timer;
    upstream_callbacks cb;
    void *arg;
    fake_answer a;
    bool cancelled, paused;
    bool head_sent;
} fake_xfer;

#define MAX_SCRIPT 32
#define MAX_CALLS 64

static struct {
    fake_answer script[MAX_SCRIPT];
    int n_script, next;
    fake_call calls[MAX_CALLS];
    int n_calls;
    fake_xfer xfers[MAX_CALLS];    /* one per call, kept until the next test */
    int unscripted;                /* starts with no answer left in the script */
    int cancels;
} T;

static gateway G;

static void fake_play(loop *l, loop_timer *t, void *arg) {
    (void)l; (void)t;
    fake_xfer *x = arg;
    upstream_xfer *h = (upstream_xfer *)(void *)x;
    if (x->a.connect_error != UPSTREAM_OK) {
        upstream_done d = {.result = x->a.connect_error, .error = upstream_result_name(x->a.connect_error),
                           .connect_ms = x->a.connect_ms};
        x->cb.on_done(h, &d, x->arg);
        return;
    }
    if (!x->head_sent) {
        upstream_header hs[4];
        size_t nh = 0;
        for (int i = 0; i < 4 && x->a.headers[i][0]; i++) hs[nh++] = (upstream_header){x->a.headers[i][0], x->a.headers[i][1]};
        upstream_response r = {x->a.status, hs, nh};
        x->head_sent = true;
        x->cb.on_headers(h, &r, x->arg);
        if (x->cancelled) return;
        if (x->a.tail_ms > 0) { loop_timer_start(G.loop, &x->timer, (uint64_t)x->a.tail_ms); return; }
    }
    uint64_t bytes = 0;
    for (int i = 0; i < 6 && x->a.chunks[i]; i++) {
        size_t len = strlen(x->a.chunks[i]);
        x->cb.on_data(h, x->a.chunks[i], len, x->arg);
        bytes += len;
        if (x->cancelled) return;
    }
    upstream_done d = {.result = x->a.end, .status = x->a.status,
                       .error = x->a.end == UPSTREAM_OK ? "" : upstream_result_name(x->a.end), .body_bytes = bytes,
                       .requests_sent = 1, .connect_ms = x->a.connect_ms, .new_connection = x->a.connect_ms > 0};
    x->cb.on_done(h, &d, x->arg);
}

static upstream_xfer *fake_start(void *impl, const upstream_request *req, sg_error *err) {
    (void)impl;
    if (T.next >= T.n_script || T.n_calls >= MAX_CALLS) {
        T.unscripted++;
        sg_fail(err, "the script has no answer left");
        return NULL;
    }
    fake_call *c = &T.calls[T.n_calls];
    snprintf(c->url, sizeof c->url, "%s", req->url);
    snprintf(c->body, sizeof c->body, "%.*s", (int)req->body_len, (const char *)req->body);
    c->at_ms = loop_now_ms(G.loop);
    fake_xfer *x = &T.xfers[T.n_calls++];
    memset(x, 0, sizeof *x);
    x->cb = req->cb;
    x->arg = req->arg;
    x->a = T.script[T.next++];
    loop_timer_init(&x->timer, fake_play, x);
    loop_timer_start(G.loop, &x->timer, (uint64_t)x->a.head_ms);   /* no callback before start returns */
    return (upstream_xfer *)(void *)x;
}

static void fake_cancel(upstream_xfer *t) {
    fake_xfer *x = (fake_xfer *)(void *)t;
    x->cancelled = true;
    T.cancels++;
    loop_timer_stop(G.loop, &x->timer);
}
static void fake_pause(upstream_xfer *t) { ((fake_xfer *)(void *)t)->paused = true; }
static void fake_resume(upstream_xfer *t) { ((fake_xfer *)(void *)t)->paused = false; }
static int fake_paused(const upstream_xfer *t) { return ((const fake_xfer *)(const void *)t)->paused; }

static const gw_transport_ops fake_ops = {fake_start, fake_cancel, fake_pause, fake_resume, fake_paused};

static void script(fake_answer a) {
    if (T.n_script < MAX_SCRIPT) T.script[T.n_script++] = a;
}

static fake_answer ok_body(const char *body) { return (fake_answer){.status = 200, .chunks = {body}}; }
static fake_answer error_status(int status, const char *body) { return (fake_answer){.status = status, .chunks = {body}}; }

static void reset_script(void) {
    for (int i = 0; i < T.n_calls; i++) loop_timer_stop(G.loop, &T.xfers[i].timer);
    memset(&T, 0, sizeof T);
}

/* Each test starts with an empty script and no breaker state: earlier tests' failures
 * would otherwise open breakers and reorder targets. */
static void fresh(void) {
    reset_script();
    breaker_table_free(G.breakers);
    G.breakers = breaker_table_new(G.cfg->circuit_breaker.max_targets);
}

/* "pa,pa,pb": the providers called, in order (from each call's URL "http://NAME.test/"). */
static const char *call_order(void) {
    static char s[256];
    s[0] = 0;
    for (int i = 0; i < T.n_calls; i++) {
        const char *h = T.calls[i].url + 7;
        size_t n = strcspn(h, ".");
        snprintf(s + strlen(s), sizeof s - strlen(s), "%s%.*s", i ? "," : "", (int)n, h);
    }
    return s;
}

/* ------------------------------------------------------------------------------------ */
/* the gateway under test */

static http_server *S;
static char DB[512];

static void handler(http_exchange *x, const http_request *req, void *arg) {
    gateway *g = arg;
    if (!strcmp(req->path, "/v1/messages/count_tokens")) { count_tokens_handle(g, x, req, NULL); return; }
    const gw_client_api *api = gw_client_api_for_path(req->path);
    if (!api) { http_respond(x, 404, NULL, 0, "", 0); return; }
    proxy_handle(g, x, req, api, NULL);
}

static const char *k_config =
    "providers:\n"
    "  pa: {type: openai, base_url: 'http://pa.test', api_key: sk-a, retries: {max: 2, base_ms: 1, max_ms: 2}}\n"
    "  pb: {type: openai, base_url: 'http://pb.test', api_key: sk-b, retries: {max: 0}}\n"
    "  pc: {type: openai, base_url: 'http://pc.test', api_key: sk-c, retries: {max: 0}}\n"
    "  pd: {type: openai, base_url: 'http://pd.test', api_key: sk-d, retries: {max: 0}}\n"
    "models:\n"
    "  pa/m: {price: {input: 1, output: 1}}\n"
    "  pb/m: {price: {input: 1, output: 1}}\n"
    "  pc/m: {price: {input: 1, output: 1}}\n"
    "  pd/m: {price: {input: 1, output: 1}}\n"
    "routes:\n"
    "  - {name: ab, targets: [pa/m, pb/m]}\n"
    "  - {name: bca, targets: [pb/m, pc/m, pa/m]}\n"
    "  - {name: cb, targets: [pc/m, pb/m]}\n"
    "  - {name: short, timeout_ms: 2000, targets: [pa/m, pb/m]}\n"
    "  - {name: thrifty, retry_budget: 1, targets: [pa/m, pb/m]}\n"
    "  - {name: limited, limits: {rpm: 1}, targets: [pb/m]}\n"
    "  - {name: budgeted, budget: {total_usd: 0.0001}, targets: [pb/m]}\n"
    "circuit_breaker: {failures: 2, window_ms: 60000, cooldown_ms: 1000, max_cooldown_ms: 4000}\n"
    "ledger: {sqlite: '%s/ledger.db', spool_dir: '%s/spool', flush_ms: 10}\n";

static int setup(void) {
    sg_error err;
    const char *dir = tu_tmpdir();
    char yaml[4096];
    snprintf(yaml, sizeof yaml, k_config, dir, dir);
    char *path = tu_path("%s/smolgate.yaml", dir);
    if (tu_write(path, yaml, strlen(yaml))) return -1;
    snprintf(DB, sizeof DB, "%s/ledger.db", dir);
    sg_log_set_level(SG_LOG_ERROR);
    memset(&G, 0, sizeof G);
    if (config_load_ex(&G.cfg, path, NULL, NULL, &err)) { fprintf(stderr, "config: %s\n", err.msg); return -1; }
    fake_entry_nocount = fake_entry;
    fake_entry_nocount.build_count_tokens = NULL;
    fake_entry_nocount.scan_count_tokens = NULL;
    const char *names[] = {"pa", "pb", "pc", "pd"};
    for (int i = 0; i < 4; i++)   /* the seam: each provider's entry */
        ((gw_provider *)config_provider(G.cfg, names[i]))->entry = i == 3 ? &fake_entry_nocount : &fake_entry;
    G.rng = 0x9E3779B97F4A7C15ull;
    G.breakers = breaker_table_new(G.cfg->circuit_breaker.max_targets);
    if (!(G.loop = loop_new(&err)) || !(G.costs = cost_catalog_build(G.cfg, &err)) ||
        !(G.limits = limits_new(G.loop, &G.cfg->state, NULL, &err))) {
        fprintf(stderr, "setup: %s\n", err.msg);
        return -1;
    }
    ledger_opts lo;
    ledger_opts_from_config(&lo, G.cfg);
    if (!(G.ledger = ledger_open(&lo, &err))) { fprintf(stderr, "ledger: %s\n", err.msg); return -1; }
    G.metrics = metrics_new(0);
    G.transport = (gw_transport){&fake_ops, NULL};
    http_server_config hc;
    http_server_config_defaults(&hc);
    hc.listen = "127.0.0.1:0";
    hc.handler = handler;
    hc.handler_arg = &G;
    if (!(S = http_server_new(G.loop, &hc, &err))) { fprintf(stderr, "server: %s\n", err.msg); return -1; }
    G.http = S;
    return 0;
}

static void teardown(void) {
    reset_script();
    http_server_free(S);
    limits_free(G.limits);
    ledger_close(G.ledger, 5000);
    cost_catalog_free(G.costs);
    metrics_free(G.metrics);
    breaker_table_free(G.breakers);
    loop_free(G.loop);
    config_unref(G.cfg);
}

/* ------------------------------------------------------------------------------------ */
/* a client */

typedef struct reply {
    int status;
    sg_buf raw;                    /* head and body as received */
    const char *body;              /* into raw */
    uint64_t ms;                   /* loop time from sending to the end */
} reply;

static void pump(int ms) {
    sg_error err;
    uint64_t end = loop_update_now(G.loop) + (uint64_t)ms;
    while (loop_update_now(G.loop) < end) loop_run_once(G.loop, 5, &err);
}

static void send_request(reply *r, const char *path, const char *body) {
    sg_buf_init(&r->raw);
    r->status = 0;
    r->body = "";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_server_port(S)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { CHECK(!"connect"); close(fd); return; }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n", path, strlen(body));
    CHECK(write(fd, head, (size_t)n) == n);
    CHECK(write(fd, body, strlen(body)) == (ssize_t)strlen(body));
    uint64_t t0 = loop_update_now(G.loop);
    sg_error err;
    for (;;) {
        char buf[4096];
        ssize_t got = read(fd, buf, sizeof buf);
        if (got > 0) { sg_buf_append(&r->raw, buf, (size_t)got); continue; }
        if (got == 0) break;
        if (errno != EAGAIN) break;
        if (loop_update_now(G.loop) - t0 > 10000) { CHECK(!"the answer took over 10 s"); break; }
        loop_run_once(G.loop, 5, &err);
    }
    close(fd);
    r->ms = loop_update_now(G.loop) - t0;
    sg_buf_putc(&r->raw, 0);
    r->raw.len--;
    if (r->raw.data) {
        sscanf(r->raw.data, "HTTP/1.1 %d", &r->status);
        char *b = strstr(r->raw.data, "\r\n\r\n");
        r->body = b ? b + 4 : "";
    }
    pump(1);   /* what the request left for the loop (ledger spool writes are synchronous) */
}

static void chat(reply *r, const char *model, bool stream) {
    char body[256];
    snprintf(body, sizeof body, "{\"model\":\"%s\",\"max_tokens\":10,\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
             model, stream ? "true" : "false");
    send_request(r, "/v1/chat/completions", body);
}

/* A response header's value ("" when absent). */
static const char *header(const reply *r, const char *name) {
    static char v[256];
    v[0] = 0;
    const char *p = r->raw.data ? r->raw.data : "";
    size_t nl = strlen(name);
    while ((p = strstr(p, "\r\n")) && p < r->body) {
        p += 2;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *s = p + nl + 1;
            while (*s == ' ') s++;
            snprintf(v, sizeof v, "%.*s", (int)strcspn(s, "\r\n"), s);
            break;
        }
    }
    return v;
}

/* ------------------------------------------------------------------------------------ */
/* the ledger, read back */

typedef struct ledger_row {
    int found, status, n_attempts;
    char provider[32], error[64];
    char attempts[256];            /* "pb:0:retryable,pa:200:-" in order */
} ledger_row;

static ledger_row ledger_of(const reply *r) {
    ledger_row row = {0};
    char id[64];
    snprintf(id, sizeof id, "%s", header(r, "x-request-id"));
    CHECK_MSG(ledger_flush(G.ledger, 5000) == 0, "ledger delivery");
    sqlite3 *db;
    if (sqlite3_open_v2(DB, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) { CHECK(!"open the ledger"); return row; }
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT status, n_attempts, provider, error FROM requests WHERE request_id = ?", -1, &st, NULL);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
        row.found = 1;
        row.status = sqlite3_column_int(st, 0);
        row.n_attempts = sqlite3_column_int(st, 1);
        const unsigned char *p = sqlite3_column_text(st, 2), *e = sqlite3_column_text(st, 3);
        snprintf(row.provider, sizeof row.provider, "%s", p ? (const char *)p : "-");
        snprintf(row.error, sizeof row.error, "%s", e ? (const char *)e : "-");
    }
    sqlite3_finalize(st);
    sqlite3_prepare_v2(db, "SELECT provider, status, error FROM attempts WHERE request_id = ? ORDER BY n", -1, &st, NULL);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *e = sqlite3_column_text(st, 2);
        snprintf(row.attempts + strlen(row.attempts), sizeof row.attempts - strlen(row.attempts), "%s%s:%d:%s",
                 row.attempts[0] ? "," : "", sqlite3_column_text(st, 0), sqlite3_column_int(st, 1),
                 e ? (const char *)e : "-");
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return row;
}

/* A number of the request's attempt n in the ledger (column col); -999 for NULL. */
static int64_t attempt_num(const reply *r, int n, const char *col) {
    char id[64], sql[160];
    snprintf(id, sizeof id, "%s", header(r, "x-request-id"));
    CHECK_MSG(ledger_flush(G.ledger, 5000) == 0, "ledger delivery");
    sqlite3 *db;
    int64_t v = -1000;
    if (sqlite3_open_v2(DB, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return v;
    snprintf(sql, sizeof sql, "SELECT %s FROM attempts WHERE request_id = ? AND n = %d", col, n);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_type(st, 0) == SQLITE_NULL ? -999 : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int ledger_count(void) {
    CHECK(ledger_flush(G.ledger, 5000) == 0);
    sqlite3 *db;
    int n = -1;
    if (sqlite3_open_v2(DB, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return -1;
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM requests", -1, &st, NULL);
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* ------------------------------------------------------------------------------------ */
/* tests */

static void test_success_first_target(void) {
    fresh();
    script(ok_body("hello there|7|3"));
    reply r;
    chat(&r, "ab", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pa");
    CHECK_EQ_STR(T.calls[0].url, "http://pa.test/chat");
    CHECK_EQ_STR(T.calls[0].body, "m");
    CHECK(strstr(r.body, "\"content\":\"hello there\"") != NULL);
    CHECK_EQ_STR(header(&r, "x-smolgate-provider"), "pa");
    CHECK_EQ_STR(header(&r, "x-smolgate-model"), "m");
    CHECK_EQ_STR(header(&r, "x-smolgate-attempts"), "1");
    ledger_row l = ledger_of(&r);
    CHECK(l.found);
    CHECK_EQ_INT(l.status, 200);
    CHECK_EQ_INT(l.n_attempts, 1);
    CHECK_EQ_STR(l.provider, "pa");
    CHECK_EQ_STR(l.attempts, "pa:200:-");
    CHECK_EQ_INT(T.unscripted, 0);
    sg_buf_free(&r.raw);
}

/* 429 with retry-after-ms: the same target again, no sooner than asked. */
static void test_retry_honours_retry_after(void) {
    fresh();
    script((fake_answer){.status = 429, .headers = {{"retry-after-ms", "120"}}, .chunks = {"slow down"}});
    script(ok_body("second time|5|2"));
    reply r;
    chat(&r, "ab", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pa,pa");
    CHECK_MSG(T.calls[1].at_ms - T.calls[0].at_ms >= 120, "retried after %llu ms, retry-after-ms was 120",
              (unsigned long long)(T.calls[1].at_ms - T.calls[0].at_ms));
    CHECK_EQ_STR(header(&r, "x-smolgate-attempts"), "2");
    ledger_row l = ledger_of(&r);
    CHECK_EQ_STR(l.attempts, "pa:429:retryable,pa:200:-");
    /* the backoff is the gap between the attempts: the retry starts 120 ms or more later */
    CHECK_EQ_INT(attempt_num(&r, 0, "start_ms"), 0);
    int64_t end0 = attempt_num(&r, 0, "start_ms + latency_ms"), start1 = attempt_num(&r, 1, "start_ms");
    CHECK_MSG(start1 >= 120 && start1 >= end0 + 100, "retry started at %lld ms, the first attempt ended at %lld",
              (long long)start1, (long long)end0);
    CHECK_EQ_INT(attempt_num(&r, 1, "input_tokens * 100 + output_tokens"), 502);
    sg_buf_free(&r.raw);
}

/* A retry-after beyond the route's deadline (2 s) is not waited for: the next target now. */
static void test_retry_after_bounded_by_deadline(void) {
    fresh();
    script((fake_answer){.status = 503, .headers = {{"retry-after", "30"}}, .chunks = {"later"}});
    script(ok_body("from b|5|2"));
    reply r;
    chat(&r, "short", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pa,pb");
    CHECK_MSG(r.ms < 2000, "answered after %llu ms", (unsigned long long)r.ms);
    CHECK_EQ_STR(header(&r, "x-smolgate-provider"), "pb");
    ledger_row l = ledger_of(&r);
    CHECK_EQ_STR(l.attempts, "pa:503:retryable,pb:200:-");
    sg_buf_free(&r.raw);
}

/* 400 and 402 are the client's (or the account's) problem: relayed, nothing else tried. */
static void test_no_retry_of_client_errors(void) {
    fresh();
    script(error_status(400, "bad tool schema"));
    reply r;
    chat(&r, "ab", false);
    CHECK_EQ_INT(r.status, 400);
    CHECK_EQ_STR(call_order(), "pa");
    CHECK(strstr(r.body, "fake says: bad tool schema") != NULL);
    CHECK_EQ_STR(header(&r, "x-smolgate-attempts"), "1");
    ledger_row l = ledger_of(&r);
    CHECK_EQ_INT(l.status, 400);
    CHECK_EQ_STR(l.attempts, "pa:400:client");
    sg_buf_free(&r.raw);

    reset_script();
    script(error_status(402, "out of credit"));
    chat(&r, "ab", false);
    CHECK_EQ_INT(r.status, 402);
    CHECK_EQ_STR(call_order(), "pa");
    l = ledger_of(&r);
    CHECK_EQ_STR(l.attempts, "pa:402:quota");
    sg_buf_free(&r.raw);
}

/* Route order: pb (connection refused), pc (503), then pa answers. */
static void test_fallback_in_route_order(void) {
    fresh();
    script((fake_answer){.connect_error = UPSTREAM_ERR_CONNECT_REFUSED});
    script(error_status(503, "overloaded"));
    script(ok_body("third|4|4"));
    reply r;
    chat(&r, "bca", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pb,pc,pa");
    CHECK_EQ_STR(header(&r, "x-smolgate-provider"), "pa");
    CHECK_EQ_STR(header(&r, "x-smolgate-attempts"), "3");
    ledger_row l = ledger_of(&r);
    CHECK_EQ_INT(l.status, 200);
    CHECK_EQ_INT(l.n_attempts, 3);
    CHECK_EQ_STR(l.provider, "pa");
    CHECK_EQ_STR(l.attempts, "pb:502:retryable,pc:503:retryable,pa:200:-");
    sg_buf_free(&r.raw);

    /* every target failing: the last error, and every attempt in the record */
    reset_script();
    script((fake_answer){.connect_error = UPSTREAM_ERR_TTFB_TIMEOUT});
    script(error_status(500, "boom"));
    script(error_status(500, "boom"));
    script(error_status(500, "boom"));
    script(error_status(503, "last words"));
    chat(&r, "bca", false);
    CHECK_EQ_INT(r.status, 503);
    CHECK_EQ_STR(call_order(), "pb,pc,pa,pa,pa");
    CHECK(strstr(r.body, "fake says: last words") != NULL);
    l = ledger_of(&r);
    CHECK_EQ_INT(l.status, 503);
    CHECK_EQ_STR(l.attempts, "pb:504:retryable,pc:500:retryable,pa:500:retryable,pa:500:retryable,pa:503:retryable");
    sg_buf_free(&r.raw);
}

/* Each attempt's timings, tokens and cost: pc answers 500 (its head after 60 ms, the end
 * 40 ms later, on a fresh connection of 7 ms), then pb answers on a reused connection. */
static void test_attempt_timings(void) {
    fresh();
    script((fake_answer){.status = 500, .chunks = {"boom"}, .head_ms = 60, .tail_ms = 40, .connect_ms = 7});
    script((fake_answer){.status = 200, .chunks = {"from b|11|5"}, .head_ms = 30});
    reply r;
    chat(&r, "cb", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pc,pb");
    ledger_row l = ledger_of(&r);
    CHECK_EQ_STR(l.attempts, "pc:500:retryable,pb:200:-");
    /* the first: its TTFT is the head's time, its total the end's (a loaded machine may
     * add to both; a timer never fires early) */
    int64_t ttft0 = attempt_num(&r, 0, "ttft_ms"), total0 = attempt_num(&r, 0, "latency_ms");
    CHECK_MSG(ttft0 >= 60 && ttft0 < 60 + 2000, "ttft %lld", (long long)ttft0);
    CHECK_MSG(total0 >= ttft0 + 40 && total0 < 100 + 2000, "total %lld after a ttft of %lld", (long long)total0,
              (long long)ttft0);
    CHECK_EQ_INT(attempt_num(&r, 0, "start_ms"), 0);
    CHECK_EQ_INT(attempt_num(&r, 0, "connect_ms"), 7);
    int64_t q0 = attempt_num(&r, 0, "queue_ms");
    CHECK_MSG(q0 >= 0 && q0 <= ttft0, "queue %lld", (long long)q0);
    CHECK_EQ_INT(attempt_num(&r, 0, "input_tokens"), -999);   /* an error answer reports none */
    CHECK_EQ_INT(attempt_num(&r, 0, "cost_micro"), 0);        /* a priced model's failure: $0 */
    /* the second: after the first, on a reused connection, with the answer's usage and cost */
    int64_t start1 = attempt_num(&r, 1, "start_ms");
    CHECK_MSG(start1 >= total0, "the fallback started at %lld, the first ended at %lld", (long long)start1, (long long)total0);
    CHECK_EQ_INT(attempt_num(&r, 1, "connect_ms"), 0);
    int64_t ttft1 = attempt_num(&r, 1, "ttft_ms");
    CHECK_MSG(ttft1 >= 30 && ttft1 <= attempt_num(&r, 1, "latency_ms"), "ttft %lld", (long long)ttft1);
    CHECK_EQ_INT(attempt_num(&r, 1, "input_tokens"), 11);
    CHECK_EQ_INT(attempt_num(&r, 1, "output_tokens"), 5);
    int64_t cost1 = attempt_num(&r, 1, "cost_micro");
    CHECK_MSG(cost1 > 0, "cost %lld", (long long)cost1);
    char id[64], sql[200];
    snprintf(id, sizeof id, "%s", header(&r, "x-request-id"));
    snprintf(sql, sizeof sql, "cost_micro - (SELECT cost_micro FROM requests WHERE request_id = '%s')", id);
    CHECK_EQ_INT(attempt_num(&r, 1, sql), 0);   /* the request's cost is its answer's */
    sg_buf_free(&r.raw);
}

/* The route's retry budget (1) ends retries of pa (which allows 2): then the fallback. */
static void test_retry_budget_exhausted(void) {
    fresh();
    script(error_status(500, "one"));
    script(error_status(500, "two"));
    script(ok_body("b answers|1|1"));
    reply r;
    chat(&r, "thrifty", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pa,pa,pb");
    ledger_row l = ledger_of(&r);
    CHECK_EQ_STR(l.attempts, "pa:500:retryable,pa:500:retryable,pb:200:-");
    sg_buf_free(&r.raw);
}

/* Two failures of pc open its breaker: pc goes last (pb answers first, pc untried); after
 * the cooldown pc is half-open, probed first again, and a success closes it. */
static void test_breaker_opens_then_half_open(void) {
    fresh();
    reply r;
    for (int i = 0; i < 2; i++) {
        reset_script();
        script(error_status(500, "down"));
        script(ok_body("b|1|1"));
        chat(&r, "cb", false);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_STR(call_order(), "pc,pb");
        sg_buf_free(&r.raw);
    }
    CHECK(breaker_is_open(G.breakers, "pc", "m", loop_update_now(G.loop), NULL));
    reset_script();
    script(ok_body("b again|1|1"));
    chat(&r, "cb", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pb");
    ledger_row l = ledger_of(&r);
    CHECK_EQ_STR(l.attempts, "pb:200:-");
    sg_buf_free(&r.raw);

    pump(1100);   /* past the 1 s cooldown */
    breaker_view v[4];
    size_t n = breaker_list(G.breakers, &G.cfg->circuit_breaker, loop_update_now(G.loop), v, 4);
    CHECK_EQ_INT(n, 1);
    if (n) {
        CHECK_EQ_STR(v[0].target, "pc/m");
        CHECK_EQ_INT(v[0].state, BREAKER_HALF_OPEN);
    }
    reset_script();
    script(ok_body("c is back|1|1"));
    chat(&r, "cb", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pc");
    CHECK_EQ_STR(header(&r, "x-smolgate-provider"), "pc");
    CHECK(!breaker_is_open(G.breakers, "pc", "m", loop_update_now(G.loop), NULL));
    CHECK_EQ_INT(breaker_list(G.breakers, &G.cfg->circuit_breaker, loop_update_now(G.loop), v, 4), 0);
    sg_buf_free(&r.raw);
}

/* Streams that break after their first byte count against their target's breaker: two
 * such failures of pa (the configured threshold) open it, and pb answers first. */
static void test_stream_failures_open_breaker(void) {
    fresh();
    reply r;
    for (int i = 0; i < 2; i++) {
        reset_script();
        script((fake_answer){.status = 200, .chunks = {"data: partial\n\n"}, .end = UPSTREAM_ERR_RESET_DURING_RESPONSE});
        chat(&r, "ab", true);
        CHECK_EQ_STR(call_order(), "pa");
        CHECK(strstr(r.body, "the provider failed mid-response") != NULL);
        sg_buf_free(&r.raw);
        CHECK(breaker_is_open(G.breakers, "pa", "m", loop_update_now(G.loop), NULL) == (i == 1));
    }
    reset_script();
    script(ok_body("b|1|1"));
    chat(&r, "ab", false);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pb");
    sg_buf_free(&r.raw);
}

/* A stream that breaks after its first byte reached the client: no retry, no fallback;
 * the client's stream ends with an error, never a clean end. */
static void test_stream_failure_after_first_byte(void) {
    fresh();
    script((fake_answer){.status = 200, .chunks = {"data: partial answer\n\n"}, .end = UPSTREAM_ERR_RESET_DURING_RESPONSE});
    reply r;
    chat(&r, "ab", true);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pa");
    CHECK(strstr(r.body, "partial answer") != NULL);
    CHECK(strstr(r.body, "the provider failed mid-response") != NULL);
    CHECK(strstr(r.body, "[DONE]") == NULL);
    ledger_row l = ledger_of(&r);
    CHECK_EQ_INT(l.status, 502);
    CHECK_EQ_INT(l.n_attempts, 1);
    CHECK_EQ_STR(l.attempts, "pa:200:stream");
    sg_buf_free(&r.raw);

    /* the same failure before any byte: retried */
    reset_script();
    script((fake_answer){.status = 200, .chunks = {NULL}, .end = UPSTREAM_ERR_RESET_DURING_RESPONSE});
    script((fake_answer){.status = 200, .chunks = {"data: whole\n\n", "data: usage:2,1\n\n", "data: [DONE]\n\n"}});
    chat(&r, "ab", true);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(call_order(), "pa,pa");
    CHECK(strstr(r.body, "whole") != NULL);
    CHECK(strstr(r.body, "data: [DONE]") != NULL);
    CHECK(strstr(r.body, "mid-response") == NULL);
    l = ledger_of(&r);
    CHECK_EQ_INT(l.status, 200);
    CHECK_EQ_STR(l.attempts, "pa:502:retryable,pa:200:-");
    sg_buf_free(&r.raw);
}

/* The route's rpm (1): the second request is refused with 429 before any attempt. */
static void test_limits_refuse_before_any_attempt(void) {
    fresh();
    script(ok_body("once|1|1"));
    reply r;
    chat(&r, "limited", false);
    CHECK_EQ_INT(r.status, 200);
    sg_buf_free(&r.raw);
    reset_script();
    chat(&r, "limited", false);
    CHECK_EQ_INT(r.status, 429);
    CHECK_EQ_INT(T.n_calls, 0);
    CHECK_EQ_INT(T.unscripted, 0);
    CHECK(strstr(r.body, "rate_limit_exceeded") != NULL);
    CHECK(header(&r, "retry-after")[0] != 0);
    CHECK_EQ_STR(header(&r, "x-smolgate-attempts"), "0");
    ledger_row l = ledger_of(&r);
    CHECK(l.found);
    CHECK_EQ_INT(l.status, 429);
    CHECK_EQ_INT(l.n_attempts, 0);
    CHECK_EQ_STR(l.error, "rate_limit_exceeded");
    CHECK_EQ_STR(l.attempts, "");
    sg_buf_free(&r.raw);
}

/* A budget of $0.0001 (100 micro-dollars) at $1 per million tokens: an answer that used
 * 100 tokens spends it; the next request is refused before any attempt. */
static void test_budget_exhausted(void) {
    fresh();
    script(ok_body("spent|10|90"));
    reply r;
    chat(&r, "budgeted", false);
    CHECK_EQ_INT(r.status, 200);
    sg_buf_free(&r.raw);
    reset_script();
    chat(&r, "budgeted", false);
    CHECK_EQ_INT(r.status, 429);
    CHECK_EQ_INT(T.n_calls, 0);
    CHECK(strstr(r.body, "budget_exceeded") != NULL);
    ledger_row l = ledger_of(&r);
    CHECK_EQ_INT(l.status, 429);
    CHECK_EQ_INT(l.n_attempts, 0);
    CHECK_EQ_STR(l.error, "budget_exceeded");
    sg_buf_free(&r.raw);
}

/* count_tokens: one call to the provider's count endpoint (no retry even on 529 and a
 * provider with retries), no ledger record, no rate-limit admission; a provider without
 * an endpoint is estimated without any call. */
static void test_count_tokens(void) {
    const char *body = "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"count me\"}]}";
    char b[256];
    int before = ledger_count();
    fresh();
    script(ok_body("42"));
    script(error_status(529, "overloaded"));
    reply r;
    snprintf(b, sizeof b, body, "ab");
    send_request(&r, "/v1/messages/count_tokens", b);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body, "{\"input_tokens\":42}");
    CHECK_EQ_STR(T.calls[0].url, "http://pa.test/count");
    CHECK_EQ_STR(T.calls[0].body, "m");
    sg_buf_free(&r.raw);
    send_request(&r, "/v1/messages/count_tokens", b);
    CHECK_EQ_INT(r.status, 529);
    CHECK_EQ_INT(T.n_calls, 2);
    CHECK(strstr(r.body, "fake says: overloaded") != NULL);
    sg_buf_free(&r.raw);

    /* "limited" allows 1 request a minute: counts do not use it up */
    reset_script();
    script(ok_body("5"));
    script(ok_body("6"));
    snprintf(b, sizeof b, body, "limited");
    send_request(&r, "/v1/messages/count_tokens", b);
    CHECK_EQ_STR(r.body, "{\"input_tokens\":5}");
    sg_buf_free(&r.raw);
    send_request(&r, "/v1/messages/count_tokens", b);
    CHECK_EQ_STR(r.body, "{\"input_tokens\":6}");
    sg_buf_free(&r.raw);
    CHECK_EQ_INT(ledger_count(), before);

    /* no count endpoint: an estimate, nothing sent */
    reset_script();
    snprintf(b, sizeof b, body, "pd/m");
    send_request(&r, "/v1/messages/count_tokens", b);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(T.n_calls, 0);
    CHECK(strstr(r.body, "{\"input_tokens\":") == r.body);
    CHECK(atoi(r.body + 16) > 0);
    sg_buf_free(&r.raw);
    CHECK_EQ_INT(ledger_count(), before);
}

int main(void) {
    if (setup()) {
        CHECK(!"setup");
        return tu_finish("test_proxy");
    }
    RUN(test_success_first_target);
    RUN(test_retry_honours_retry_after);
    RUN(test_retry_after_bounded_by_deadline);
    RUN(test_no_retry_of_client_errors);
    RUN(test_fallback_in_route_order);
    RUN(test_attempt_timings);
    RUN(test_retry_budget_exhausted);
    RUN(test_breaker_opens_then_half_open);
    RUN(test_stream_failure_after_first_byte);
    RUN(test_stream_failures_open_breaker);
    RUN(test_count_tokens);   /* before test_limits uses up the "limited" route's minute */
    RUN(test_limits_refuse_before_any_attempt);
    RUN(test_budget_exhausted);
    teardown();
    return tu_finish("test_proxy");
}
