/* hub_http.h: the HTTP requests a pull makes (libcurl, blocking, one easy handle each).
 * Redirects are followed here rather than by libcurl so that the hub's own headers on a
 * 302 (X-Linked-Etag, X-Linked-Size) can be read, and so that a bearer token goes only to
 * the origin it belongs to, never to the CDN host a redirect points at. */
#ifndef SG_HUB_HTTP_H
#define SG_HUB_HTTP_H

#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

/* A bearer token and the origin ("scheme://host:port") it may be sent to. */
typedef struct hub_http_auth {
    const char *token;    /* NULL: none */
    const char *origin;
} hub_http_auth;

/* The headers a pull looks at, from the last response (after redirects, if followed). */
typedef struct hub_http_resp {
    long status;
    char *url;            /* the URL that gave this response */
    char *location;       /* absolute, resolved against url */
    char *etag;           /* ETag without quotes and W/ */
    char *linked_etag;    /* X-Linked-Etag without quotes (the LFS sha256) */
    char *repo_commit;    /* X-Repo-Commit */
    char *error_code;     /* X-Error-Code (RepoNotFound, GatedRepo, EntryNotFound, ...) */
    int64_t linked_size;  /* X-Linked-Size, -1 when absent */
    int64_t length;       /* Content-Length, -1 when absent */
    int64_t range_start;  /* from Content-Range on a 206, -1 otherwise */
    int transport;        /* 1: failed before a complete answer (worth retrying) */
    sg_buf body;          /* hub_http_fetch: the body (error bodies too) */
} hub_http_resp;

/* Where a download's body goes: start() once the status line and headers of a 2xx are in
 * (status 200 means "from byte 0", 206 "from r->range_start"), then data() per chunk. A
 * non-zero return aborts the transfer. */
typedef struct hub_http_sink {
    int (*start)(void *ctx, const hub_http_resp *r);
    int (*data)(void *ctx, const void *p, size_t n);
    void *ctx;
} hub_http_sink;

void hub_http_resp_free(hub_http_resp *r);

/* "scheme://host[:port]" of url, lower-cased. Caller frees. */
char *hub_http_origin(const char *url);

/* GET or HEAD into memory (body capped at 64 MiB). follow: redirects to follow (0: return
 * the 3xx with its headers). accept: an Accept header value or NULL. Returns 0 when an
 * HTTP answer came (any status), -1 on a transport failure (r->transport set). */
int hub_http_fetch(const char *method, const char *url, const char *accept,
                   const hub_http_auth *auth, int follow, hub_http_resp *r, sg_error *err);

/* GET url from byte offset (a Range request when offset > 0), following up to 5
 * redirects, streaming a 2xx body to sink. Returns 0 when the body arrived whole, -1
 * otherwise (r->status says what the server answered; r->transport when the connection
 * failed or stalled, which is worth a retry). */
int hub_http_download(const char *url, const hub_http_auth *auth, int64_t offset,
                      const hub_http_sink *sink, hub_http_resp *r, sg_error *err);

#endif
