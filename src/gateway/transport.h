/* transport.h: how the proxy reaches the upstream HTTP layer: a table of operations.
 *
 * Why a table: the attempt state machine (proxy.c) and the token-count call
 * (count_tokens.c) start, cancel, pause and resume upstream transfers; they do it
 * through this table so that the state machine can be driven by a scripted transport
 * in tests (tests/test_proxy.c) as well as by the real client. In the way of Redis's
 * ConnectionType: callers use gw_transport_*() and are not aware of which one it is.
 *
 * Contract: every operation has upstream.h's semantics (the order and number of
 * callbacks, on_done exactly once unless cancelled, callbacks that may start new
 * transfers, a handle valid until on_done or cancel returns, no callback before start
 * returns). gw_transport_upstream is upstream.h itself, impl an `upstream *`.
 *
 * Threading: the loop thread, as upstream.h. */
#ifndef SG_GATEWAY_TRANSPORT_H
#define SG_GATEWAY_TRANSPORT_H

#include "common/error.h"
#include "gateway/upstream.h"

typedef struct gw_transport_ops {
    upstream_xfer *(*start)(void *impl, const upstream_request *req, sg_error *err);
    void (*cancel)(upstream_xfer *t);
    void (*pause)(upstream_xfer *t);
    void (*resume)(upstream_xfer *t);
    int (*paused)(const upstream_xfer *t);
} gw_transport_ops;

typedef struct gw_transport {
    const gw_transport_ops *ops;
    void *impl;                    /* the implementation's own object */
} gw_transport;

/* The real one: upstream_start / cancel / pause / resume / paused on an `upstream *`. */
extern const gw_transport_ops gw_transport_upstream;

static inline upstream_xfer *gw_transport_start(const gw_transport *t, const upstream_request *req, sg_error *err) {
    return t->ops->start(t->impl, req, err);
}
static inline void gw_transport_cancel(const gw_transport *t, upstream_xfer *x) { t->ops->cancel(x); }
static inline void gw_transport_pause(const gw_transport *t, upstream_xfer *x) { t->ops->pause(x); }
static inline void gw_transport_resume(const gw_transport *t, upstream_xfer *x) { t->ops->resume(x); }
static inline int gw_transport_paused(const gw_transport *t, const upstream_xfer *x) { return t->ops->paused(x); }

#endif
