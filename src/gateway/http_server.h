/* http_server.h: the gateway's inbound HTTP/1.1 server, running on one event loop.
 *
 * Why it exists: every client request enters here; the OpenAI and Anthropic endpoints are
 * handlers on top of it. It is hand-written for the latency bar (one read, one parse pass
 * and one write per request on a keep-alive connection, nothing allocated per request).
 * On a parser library: `apt-cache search` in this Debian (bookworm) finds no llhttp or
 * picohttpparser C library (only node-llhttp, the JavaScript sources); it does find
 * libhttp-parser-dev, Node's old http_parser 2.9, which upstream archived in favour of
 * llhttp, drives everything through per-token callbacks, and is not in our link line.
 * The request grammar we accept is small and strict, so it is parsed here.
 *
 * Protocol (RFC 9112), what this server does:
 * - Request line `METHOD SP target SP HTTP/1.x CRLF`: method is a token; target is
 *   origin-form (`/path?query`), `*`, or absolute-form (scheme and authority are dropped).
 *   Bytes outside 0x21..0x7e in the target (raw UTF-8, controls) get 400: URIs are ASCII
 *   on the wire, and the gateway's routes are too. Percent-escapes are not decoded.
 *   HTTP/2+ or garbage versions get 505 / 400. Up to 8 leading empty lines are skipped.
 * - Lines end at an LF with a CR just before it; a bare LF, or a CR anywhere else in the
 *   request line or a header line, gets 400. Header names are tokens compared without
 *   case; whitespace before the colon, obsolete line folding, and control characters in
 *   values get 400. Header values may hold obs-text (bytes >= 0x80), passed as they are.
 * - The head (request line, headers, the empty line) must fit in max_header_bytes: 414
 *   when the request line alone does not, 431 otherwise.
 * - The answer depends on the bytes only, never on how they were split into reads or
 *   segments (a body arriving in many reads after the headers included).
 * - Bodies: Content-Length (digits only; conflicting duplicates get 400; above the limit
 *   413) or Transfer-Encoding: chunked (decoded in place; trailers read and dropped); both
 *   at once get 400; any other transfer coding 501. Bodies are bytes, passed through
 *   unchecked (invalid UTF-8 is the JSON layer's to reject).
 * - HTTP/1.1 requests need exactly one Host header (400 otherwise).
 * - Keep-alive: HTTP/1.1 by default unless `Connection: close`; HTTP/1.0 only with
 *   `Connection: keep-alive`. Pipelined requests are processed one at a time, in order,
 *   and their responses are sent in order.
 * - `Expect: 100-continue` sends `100 Continue` before reading the body (and 413 instead,
 *   without reading it, when the declared length is over the limit); other expectations 417.
 * - Errors the server answers itself (400, 408, 413, 414, 417, 431, 501, 505) carry a JSON
 *   body `{"error":{"message":"...","type":"invalid_request_error","param":null,
 *   "code":"..."}}` and close the connection (after a short lingering read so the client
 *   sees the response rather than a reset); except 408, which closes as soon as it is
 *   sent: a client too slow to send its request in time is given no more.
 * - A client that closes its side (EOF) while its exchange is still with the handler is
 *   taken as gone: the exchange is aborted (as nginx does), since the upstream work it
 *   waits on is expensive. Requests already complete in the buffer are still answered
 *   first when their handler responds at once.
 *
 * Misuse is refused where it can be seen: responding to an exchange that has ended, or
 * writing to a stream that has not begun, returns -1 and changes nothing. (A handle kept
 * after its exchange ended may already belong to the connection's next request: end
 * each exchange once and drop the pointer.)
 *
 * Threading: everything runs on the loop thread. Handlers and the functions below must be
 * called there; other threads use loop_post() to get back onto it.
 *
 * Output: responses are appended to the connection's output buffer and written once per
 * loop iteration (a prepare hook), so headers, body and several pipelined responses or
 * stream chunks leave in one write/writev. Bodies of 64 KiB or more are written directly
 * from the caller's memory with writev (no copy) when the socket takes them.
 */
#ifndef SG_GATEWAY_HTTP_SERVER_H
#define SG_GATEWAY_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/loop.h"

typedef struct http_server http_server;
typedef struct http_exchange http_exchange;

typedef struct http_header {
    const char *name;   /* NUL-terminated; as sent (compare without case) */
    const char *value;  /* NUL-terminated; surrounding whitespace trimmed */
} http_header;

/* A parsed request. Every pointer stays valid until the exchange ends, and no longer. */
typedef struct http_request {
    const char *method;         /* "GET", "POST", ... (case-sensitive, as sent) */
    const char *path;           /* "/v1/chat/completions": the target up to '?', not decoded */
    const char *query;          /* after '?', "" if none, not decoded */
    int         version_minor;  /* 0 or 1 (HTTP/1.x) */
    int         keep_alive;     /* the connection will stay open after this exchange */
    const http_header *headers; /* in arrival order, n_headers of them */
    size_t      n_headers;
    const char *body;           /* body_len bytes, NOT NUL-terminated; "" when empty */
    size_t      body_len;
    const char *request_id;     /* 32 lowercase hex chars, time-ordered (request_id.h), NUL-terminated */
    const char *remote_addr;    /* "127.0.0.1:54321" / "[::1]:54321" */
} http_request;

/* First header with this name (case-insensitive), or NULL. */
const char *http_request_header(const http_request *req, const char *name);

/* Called on the loop thread for each complete request. The handler now owns x and must
 * end it exactly once, now or later: http_respond(), http_stream_end() (after
 * http_stream_begin), or http_exchange_close(). Until then the connection reads no further
 * request (pipelined ones wait in order). */
typedef void (*http_handler_fn)(http_exchange *x, const http_request *req, void *arg);

/* Exchange event callback (abort, drain). */
typedef void (*http_exchange_fn)(http_exchange *x, void *arg);

typedef struct http_server_config {
    const char *listen;          /* "HOST:PORT": "127.0.0.1:8080", "[::1]:0", "0.0.0.0:80";
                                    port 0 picks a free one (see http_server_port) */
    int      reuse_port;         /* SO_REUSEPORT (several processes on one port); default 0 */
    int      backlog;            /* listen() backlog; default 4096 */
    size_t   max_connections;    /* accepting pauses at this many; default 10000 */
    size_t   max_header_bytes;   /* request line + headers; over: 431; default 16384 */
    size_t   max_headers;        /* header lines; over: 431; default 100 */
    size_t   max_uri_bytes;      /* request target; over: 414; default 8192 */
    size_t   max_body_bytes;     /* decoded body; over: 413; default 16 MiB */
    uint32_t header_timeout_ms;  /* first byte of a request to end of its headers; then
                                    408 and close (slowloris); default 10000 */
    uint32_t body_timeout_ms;    /* end of headers to end of body; 408; default 60000 */
    uint32_t idle_timeout_ms;    /* keep-alive connection with no request; closed
                                    silently; default 75000 */
    uint32_t write_timeout_ms;   /* output pending with no progress for this long: the
                                    connection is closed (exchange aborted); default 30000 */
    uint32_t linger_ms;          /* after an error response (not 408), read-and-discard
                                    this long before closing; default 2000 */
    const char *request_id_header; /* response header carrying the request id, default
                                    "x-request-id"; NULL or "" sends none */
    http_handler_fn handler;
    void    *handler_arg;
    /* Called on the loop before any queued output is sent (NULL: none): what the handlers
     * left to write out first (the gateway's deferred ledger records) reaches the disk
     * before a client can see the answer it belongs to. */
    void   (*before_send)(void *arg);
    void    *before_send_arg;
} http_server_config;

/* Fills every field with the defaults above (listen "127.0.0.1:8080", no handler). */
void http_server_config_defaults(http_server_config *cfg);

/* Binds, listens and starts accepting on l. cfg is copied (listen and request_id_header
 * strings too). Returns NULL with err filled on failure (bad address, bind, ...). */
http_server *http_server_new(loop *l, const http_server_config *cfg, sg_error *err);

/* Serves fd, an already-connected stream socket (one end of a socketpair, a socket
 * handed over by a supervisor), as if it had just been accepted. fd belongs to the server
 * from this call on, failure included (it is then closed). Returns 0, or -1 with err
 * (shutting down, at max_connections, or the loop refused it). Loop thread only. */
int http_server_adopt(http_server *s, int fd, sg_error *err);

/* The bound port (useful after listening on port 0). */
int http_server_port(const http_server *s);

typedef struct http_server_stats {
    uint64_t accepted;      /* connections accepted since start */
    uint64_t requests;      /* requests dispatched to the handler */
    uint64_t conns_open;    /* connections open now */
    uint64_t errors;        /* requests answered by the server itself with 4xx/5xx */
} http_server_stats;
http_server_stats http_server_get_stats(const http_server *s);

/* Graceful shutdown: closes the listener, closes idle keep-alive connections now, lets
 * connections with a request in progress finish it (their responses carry
 * `Connection: close`), and after deadline_ms closes whatever is left (aborting exchanges
 * still in progress). done(s, arg), if given, runs on the loop thread (from a timer) once
 * no connection is left and every exchange has been ended; it may free the server.
 * Calling it again is a no-op. */
void http_server_shutdown(http_server *s, uint32_t deadline_ms,
                          void (*done)(http_server *s, void *arg), void *arg);

/* Closes the listener and every connection now. Exchanges still owned by a handler get
 * their abort callback first (owners should end them from there); any still not ended
 * afterwards are ended by the server, and their handles are invalid once this returns.
 * Call it on the loop thread but not from inside this server's callbacks (handlers,
 * abort, drain); the shutdown done callback is fine. */
void http_server_free(http_server *s);

/* --- responding --- */

/* A complete response. headers: n of them (names and values without CR/LF; a header with
 * CR or LF is dropped). The server adds Date, Content-Length, Connection where needed and
 * the request id header; handler-supplied Content-Length, Transfer-Encoding, Connection,
 * Keep-Alive and Date are ignored, except that `Connection: close` closes the connection
 * after this response. body may be NULL when len is 0; it is copied or written before
 * this returns. HEAD requests get the headers only; 1xx/204/304 get no body. Ends x.
 * Returns 0, or -1 if the client has gone (x is still ended and released). */
int http_respond(http_exchange *x, int status, const http_header *headers, size_t n_headers,
                 const void *body, size_t len);

/* A streamed response: begin sends status and headers (chunked for HTTP/1.1 clients; for
 * HTTP/1.0 the body is delimited by closing the connection); write sends one chunk (an SSE
 * frame is just a chunk; empty writes are skipped); end terminates the body and ends x.
 * Writes buffer in the connection (see http_exchange_buffered / _on_drain). All return 0,
 * or -1 once the client has gone (abort fired) or when misused (write before begin,
 * begin twice, respond after begin); after an abort they do nothing, and http_stream_end
 * still releases x. */
int http_stream_begin(http_exchange *x, int status, const http_header *headers, size_t n_headers);
int http_stream_write(http_exchange *x, const void *data, size_t len);
int http_stream_end(http_exchange *x);

/* Ends x without a (further) response and closes its connection: for owners that were
 * aborted, or that must drop a client mid-stream (a truncated chunked body tells the
 * client the response failed). Releases x. */
void http_exchange_close(http_exchange *x);

/* --- exchange state --- */

/* Registers fn to run once if the client goes away (EOF, reset, write error, write timeout,
 * server shutdown deadline or free) before x ends. It runs from the loop (never inside an
 * http_* call made by the owner). Registering again replaces it. */
void http_exchange_on_abort(http_exchange *x, http_exchange_fn fn, void *arg);
/* Non-zero once the client is gone; writes are then no-ops. */
int http_exchange_aborted(const http_exchange *x);

/* Bytes queued on the connection and not yet taken by the kernel. */
size_t http_exchange_buffered(const http_exchange *x);
/* Backpressure: fn runs once, from the loop, when the buffered amount is at or below
 * low_water after a write to the socket (at once on the next iteration if it already is).
 * A producer pauses when http_exchange_buffered() is high and registers this to resume.
 * One-shot; NULL fn cancels. */
void http_exchange_on_drain(http_exchange *x, size_t low_water, http_exchange_fn fn, void *arg);

/* Per-exchange memory (16-byte aligned), freed in one place when x ends. Aborts on OOM. */
void *http_exchange_alloc(http_exchange *x, size_t n);
/* A copy of s in exchange memory. */
char *http_exchange_strdup(http_exchange *x, const char *s);

const char *http_exchange_id(const http_exchange *x);
const http_request *http_exchange_request(const http_exchange *x);
loop *http_exchange_loop(const http_exchange *x);
/* The status sent (0 before a response began). */
int http_exchange_status(const http_exchange *x);

/* The reason phrase for a status ("OK", "Not Found"; "Unknown" otherwise). */
const char *http_status_reason(int status);

#endif
