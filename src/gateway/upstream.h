/* upstream.h: outbound HTTP(S) requests to providers, driven by the gateway's event loop.
 *
 * Why it exists: every provider call (OpenAI, Anthropic, Google, another smolgate) goes
 * through here. Two implementations serve this one API:
 * - the native HTTP/1.1 client (upstream_h1.c), for http:// and https:// URLs: libcurl's
 *   per-transfer cost (about 60k instructions and two poll() calls) was most of the
 *   gateway's CPU per proxied request, so the common case has a client of its own on the
 *   loop, with the same guarantees (pooling, TLS verification, timeouts);
 * - libcurl's multi interface on our loop (upstream.c: CURLMOPT_SOCKETFUNCTION and
 *   CURLMOPT_TIMERFUNCTION feeding curl_multi_socket_action) for everything else: a proxy
 *   (configured, or from the environment), HTTP/2 when cfg.http2 asks for it, URLs with
 *   credentials, other schemes; and for everything when cfg.native is 0 or the
 *   environment has SMOLGATE_UPSTREAM=curl.
 *
 * Contract (both implementations):
 * - One `upstream` per loop; everything runs on the loop thread.
 * - Connections are pooled per (scheme, host, port) and reused by every request to the
 *   same one; idle ones are bounded (max_cached_connections in all, max_host_idle per
 *   host) and closed after pool_idle_ms, or as soon as the server closes them. libcurl:
 *   one multi handle per loop, so its connection and DNS caches are shared by all
 *   requests; easy handles are pooled with their options and parsed URL. TLS peer and
 *   host verification are always on (the system CA store, or cfg.ca_file). HTTP/1.1,
 *   unless cfg.http2 asks libcurl to negotiate HTTP/2 over TLS. Redirects are not
 *   followed. `Expect: 100-continue` is never sent. No Accept-Encoding is added:
 *   compressed bodies pass through as they come.
 * - Callbacks, in order, for a request that is not cancelled: on_headers once (the final
 *   response head; 1xx heads are skipped) if a response arrived, on_data zero or more
 *   times (body bytes as they arrive, chunked framing removed), then on_done exactly
 *   once. on_done may start new requests (a retry, the next fallback target) directly,
 *   including one that reuses the connection this request just released.
 * - A transport failure after the head (reset, idle timeout) still reports on_done with
 *   the error: a response is complete only when on_done says UPSTREAM_OK. HTTP error
 *   statuses (429, 500, ...) are UPSTREAM_OK at this level; the status is in the head.
 * - Timeouts are loop timers, so each failure is exact and named: connect (DNS + TCP +
 *   TLS, from the start), ttfb (from the connection being ready and the request going out
 *   to the response's first byte), idle (longest gap between bytes after the first; it
 *   does not run while the caller has paused the transfer), total (from the start). A
 *   server that drips bytes just often enough to beat idle still ends at total.
 * - Sizes are bounded: the response head (status line, headers, trailers) by
 *   max_head_bytes, the body by the request's max_body_bytes when it sets one. A declared
 *   Content-Length above the bound fails the request as soon as the head is read (after
 *   on_headers, before any body byte is read), a body that grows past it is cut there
 *   (no on_data for the bytes beyond); both end with UPSTREAM_ERR_TOO_LARGE and the
 *   connection is closed. What the caller buffers from on_data is thus bounded too.
 *   (libcurl also refuses one header line over 100 KiB: too_large as well.)
 * - upstream_cancel() is safe from anywhere on the loop thread, including inside this
 *   request's or another's callbacks; after it returns no callback runs for that request.
 * - The upstream_xfer handle is valid from upstream_start() until on_done returns or
 *   upstream_cancel() returns; after that the object is recycled.
 */
#ifndef SG_GATEWAY_UPSTREAM_H
#define SG_GATEWAY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/loop.h"

typedef struct upstream upstream;
typedef struct upstream_xfer upstream_xfer;

typedef struct upstream_header {
    const char *name;   /* NUL-terminated */
    const char *value;  /* NUL-terminated, surrounding whitespace trimmed */
} upstream_header;

/* How a request ended. The names (upstream_result_name) are stable, for logs and tests. */
typedef enum upstream_result {
    UPSTREAM_OK = 0,                    /* "ok": the whole response arrived */
    UPSTREAM_ERR_DNS,                   /* "dns": the host name did not resolve */
    UPSTREAM_ERR_CONNECT_REFUSED,       /* "connect_refused": TCP RST to our SYN */
    UPSTREAM_ERR_CONNECT,               /* "connect": other connect failures (unreachable) */
    UPSTREAM_ERR_TLS,                   /* "tls": handshake or certificate verification */
    UPSTREAM_ERR_CONNECT_TIMEOUT,       /* "connect_timeout" */
    UPSTREAM_ERR_TTFB_TIMEOUT,          /* "ttfb_timeout": no response byte in time */
    UPSTREAM_ERR_IDLE_TIMEOUT,          /* "idle_timeout": the response stalled */
    UPSTREAM_ERR_TOTAL_TIMEOUT,         /* "total_timeout" */
    UPSTREAM_ERR_RESET_BEFORE_RESPONSE, /* "reset_before_response": closed/reset before
                                           the first response byte (retry-safe for
                                           idempotent work) */
    UPSTREAM_ERR_RESET_DURING_RESPONSE, /* "reset_during_response": closed/reset after the
                                           first byte, before the response was complete */
    UPSTREAM_ERR_PROTOCOL,              /* "protocol": malformed response */
    UPSTREAM_ERR_TOO_LARGE,             /* "too_large": the head or the body is over its
                                           bound (the error says which, and the bound) */
    UPSTREAM_ERR_BAD_REQUEST,           /* "bad_request": malformed URL, unknown scheme */
    UPSTREAM_ERR_OTHER,                 /* "other": see the error text */
} upstream_result;

const char *upstream_result_name(upstream_result r);
/* 1 for the results a gateway may fall back on (all but OK and BAD_REQUEST). */
int upstream_result_is_transport_error(upstream_result r);

/* The response head, valid during on_headers only (copy what you keep). */
typedef struct upstream_response {
    int    status;                     /* 200, 429, ... */
    const upstream_header *headers;    /* in arrival order */
    size_t n_headers;
} upstream_response;

/* First header with this name (case-insensitive), or NULL. */
const char *upstream_response_header(const upstream_response *resp, const char *name);

typedef struct upstream_done {
    upstream_result result;
    int         status;          /* response status, 0 if no head arrived */
    const char *error;           /* one line for logs ("" when ok): our timeout text, or
                                    libcurl's message; never contains request headers */
    int         curl_code;       /* CURLcode, for diagnostics (0 for our timeouts) */
    uint64_t    body_bytes;      /* body bytes delivered to on_data */
    uint32_t    elapsed_ms;      /* start to end */
    uint32_t    ttfb_ms;         /* start to first response byte, 0 if none */
    int         new_connection;  /* 1 if this request opened a connection (0: reused) */
    uint32_t    connect_ms;      /* start to the connection being ready (DNS + TCP + TLS)
                                    when this request opened it; 0 on a reused one; the
                                    time spent trying when no connection was made */
    int         requests_sent;   /* times the request went out: 0 if no connection was
                                    made, 2 when a reused connection failed before any
                                    response byte and it was sent again on a fresh one
                                    (native client; libcurl's own retry is not seen: 1) */
} upstream_done;

typedef struct upstream_callbacks {
    void (*on_headers)(upstream_xfer *t, const upstream_response *resp, void *arg);
    void (*on_data)(upstream_xfer *t, const char *data, size_t len, void *arg);
    void (*on_done)(upstream_xfer *t, const upstream_done *done, void *arg);
} upstream_callbacks;

/* Milliseconds; 0 takes the upstream's default, UPSTREAM_NO_TIMEOUT disables one. */
#define UPSTREAM_NO_TIMEOUT UINT32_MAX
typedef struct upstream_timeouts {
    uint32_t connect_ms;  /* default 10000 */
    uint32_t ttfb_ms;     /* default 300000: a non-streamed completion sends its head
                             only when generation is done */
    uint32_t idle_ms;     /* default 120000 */
    uint32_t total_ms;    /* default 600000 */
} upstream_timeouts;

typedef struct upstream_request {
    const char *method;              /* "GET", "POST", "HEAD", or any token */
    const char *url;                 /* http:// or https:// */
    const upstream_header *headers;  /* sent as given (a header with CR/LF is dropped);
                                        pass Content-Type for bodies */
    size_t      n_headers;
    const void *body;                /* NOT copied: must stay valid until on_done or
                                        cancel (e.g. the client request's body) */
    size_t      body_len;
    upstream_timeouts timeouts;
    upstream_callbacks cb;
    void       *arg;
    int         no_resend;           /* 1: when a reused connection dies before the
                                        response, report it (reset_before_response)
                                        instead of sending once more on a fresh one: the
                                        caller counts and budgets its attempts itself */
    uint64_t    max_body_bytes;      /* bound on the response body (after de-chunking);
                                        0: none (a stream the caller consumes as it
                                        comes). See "Sizes are bounded" above */
    size_t      max_head_bytes;      /* bound on the response head; 0: cfg.max_head_bytes */
} upstream_request;

typedef struct upstream_config {
    int      native;                  /* 1 (default): the native HTTP/1.1 client for http
                                         and https URLs; 0: libcurl for all. The environment
                                         variable SMOLGATE_UPSTREAM=curl forces 0 */
    size_t   max_cached_connections;  /* idle connections kept for reuse; default 1024 */
    size_t   max_host_connections;    /* per host; 0 = unlimited (default); the native
                                         client queues requests beyond it */
    size_t   max_host_idle;           /* idle connections kept per host; default 256
                                         (native client) */
    uint32_t pool_idle_ms;            /* an idle connection is closed after this long;
                                         default 60000 */
    size_t   max_pooled_handles;      /* idle transfer objects kept; default 1024 */
    int      http2;                   /* 1: https URLs go through libcurl, which
                                         negotiates HTTP/2 if it can; default 0 */
    const char *ca_file;              /* PEM bundle instead of the system store; NULL */
    const char *proxy;                /* proxy URL, "" for none; NULL (default): the
                                         environment (http_proxy, https_proxy, all_proxy,
                                         no_proxy) as curl reads it */
    upstream_timeouts timeouts;       /* defaults for requests that leave fields 0 */
    size_t   max_head_bytes;          /* response head bound for requests that leave it 0;
                                         default 65536 (UPSTREAM_DEFAULT_MAX_HEAD) */
} upstream_config;

#define UPSTREAM_DEFAULT_MAX_HEAD 65536

void upstream_config_defaults(upstream_config *cfg);

/* Creates the client on loop l (calls curl_global_init once per process). The native
 * client is used when cfg.native is 1, SMOLGATE_UPSTREAM is not "curl", and no proxy is
 * set (cfg.proxy, or the environment when cfg.proxy is NULL). */
upstream *upstream_new(loop *l, const upstream_config *cfg, sg_error *err);
/* Cancels every request in flight (no callbacks), closes cached connections, frees.
 * Not from inside one of this upstream's callbacks. */
void upstream_free(upstream *u);

/* Starts a request; it goes out in this loop iteration. Returns its handle, or NULL with
 * err filled (no method, a URL that does not parse; then no callback runs). Failures to
 * connect etc. are reported through on_done, never here: no callback of this request
 * runs before upstream_start has returned. */
upstream_xfer *upstream_start(upstream *u, const upstream_request *req, sg_error *err);

/* Stops the request: no further callbacks; its connection is closed if mid-response. */
void upstream_cancel(upstream_xfer *t);

/* Backpressure: stop / restart receiving (the native client stops reading the socket;
 * libcurl: CURLPAUSE_RECV). While paused no on_data runs
 * and the idle timeout is suspended. upstream_resume may deliver data already read
 * while paused: on_data can run before it returns. Both are no-ops when already so. */
void upstream_pause(upstream_xfer *t);
void upstream_resume(upstream_xfer *t);
int  upstream_paused(const upstream_xfer *t);

typedef struct upstream_stats {
    uint64_t started;          /* requests started */
    uint64_t completed;        /* on_done with UPSTREAM_OK */
    uint64_t failed;           /* on_done with an error */
    uint64_t cancelled;
    uint64_t connections;      /* connections opened */
    uint64_t in_flight;
} upstream_stats;
upstream_stats upstream_get_stats(const upstream *u);

/* "native http/1.1 (OpenSSL 3.0.x); libcurl/7.88.1 ... (http2: yes)" for start-up logs. */
const char *upstream_version(void);

#endif
