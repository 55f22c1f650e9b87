/* transport.c: the real transport (transport.h): upstream.h's client, one line each. */
#include "gateway/transport.h"

static upstream_xfer *up_start(void *impl, const upstream_request *req, sg_error *err) {
    return upstream_start(impl, req, err);
}

const gw_transport_ops gw_transport_upstream = {
    .start = up_start,
    .cancel = upstream_cancel,
    .pause = upstream_pause,
    .resume = upstream_resume,
    .paused = upstream_paused,
};
