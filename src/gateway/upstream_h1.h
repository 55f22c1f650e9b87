/* upstream_h1.h: private to upstream.c and upstream_h1.c. The native HTTP/1.1 client that
 * serves upstream.h's API for plain http:// and https:// URLs; upstream.c dispatches to it
 * from upstream_start() and keeps libcurl for the rest (proxies, HTTP/2 when asked, URLs
 * with credentials). See upstream_h1.c for why it exists and what it guarantees.
 *
 * Both implementations' upstream_xfer objects begin with an `int` tag (UPSTREAM_IMPL_*),
 * so upstream_cancel/pause/resume can tell which one a handle belongs to.
 */
#ifndef SG_GATEWAY_UPSTREAM_H1_H
#define SG_GATEWAY_UPSTREAM_H1_H

#include "gateway/upstream.h"

enum { UPSTREAM_IMPL_CURL = 0x6375726c, UPSTREAM_IMPL_H1 = 0x68317831 };

static inline int upstream_xfer_impl(const upstream_xfer *t) { return *(const int *)(const void *)t; }

typedef struct h1_client h1_client;

/* cfg has its defaults filled in; its strings must outlive the client. Statistics are
 * added to *stats (shared with the libcurl side). */
h1_client *h1_new(loop *l, const upstream_config *cfg, upstream_stats *stats, sg_error *err);
void h1_free(h1_client *c);

/* Starts req if the native client takes its URL. Returns the handle; or NULL with
 * *declined = 1 when the URL is for libcurl (a scheme other than http/https, user
 * credentials in the URL); or NULL with *declined = 0 and err filled when the URL is
 * malformed. */
upstream_xfer *h1_start(h1_client *c, const upstream_request *req, int *declined, sg_error *err);
void h1_cancel(upstream_xfer *t);
void h1_pause(upstream_xfer *t);
void h1_resume(upstream_xfer *t);
int  h1_paused(const upstream_xfer *t);

/* "OpenSSL 3.0.x ..." */
const char *h1_tls_version(void);

#endif
