/* api_openai_chat.c: the OpenAI chat-completions client API (POST /v1/chat/completions).
 *
 * The request is first read by the zero-allocation peek (codec_openai.h, "the
 * pass-through fast path"): the routing fields only, no JSON tree. The canonical body is
 * parsed only when a provider needs it; an OpenAI-compatible provider gets the client's
 * bytes spliced instead. A body the peek declines is parsed at once, which also words
 * its errors. */
#include <string.h>
#include <time.h>

#include "gateway/api.h"
#include "gateway/codec_openai.h"

typedef struct openai_state {
    bool peeked;                   /* canon's routing fields come from peek */
    oai_peek peek;
} openai_state;
_Static_assert(sizeof(openai_state) <= GW_API_STATE_BYTES, "GW_API_STATE_BYTES holds the peek");
_Static_assert(sizeof(oai_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static int openai_parse(gw_request *r, gw_api_error *e) {
    openai_state *s = (openai_state *)r->state;
    s->peeked = false;
    if (oai_peek_request(r->raw, r->raw_len, &s->peek) != 0) return oai_parse_request(r->raw, r->raw_len, &r->canon, e);
    s->peeked = true;
    oai_request *c = &r->canon;
    const oai_peek *pk = &s->peek;
    c->model = pk->model;
    c->stream = pk->stream;
    c->include_usage = pk->include_usage;
    c->max_tokens = pk->max_tokens;
    c->has_tools = pk->has_tools;
    c->n_models = pk->n_models;
    memcpy(c->models, pk->models, sizeof pk->models);
    c->n_order = pk->n_order;
    memcpy(c->order, pk->order, sizeof pk->order);
    c->n_only = pk->n_only;
    memcpy(c->only, pk->only, sizeof pk->only);
    c->n_ignore = pk->n_ignore;
    memcpy(c->ignore, pk->ignore, sizeof pk->ignore);
    return 0;
}

static int openai_canonical(gw_request *r, gw_api_error *e) {
    oai_request full;
    if (oai_parse_request(r->raw, r->raw_len, &full, e)) return -1;
    r->canon.body = full.body;     /* the routing fields stay the peek's */
    r->canon.ext = full.ext;
    full.body = NULL;
    full.ext = NULL;
    oai_request_free(&full);
    return 0;
}

static void openai_request_free(gw_request *r) { (void)r; }

static int openai_splice(const gw_request *r, const char *model, bool stream, sg_buf *out) {
    const openai_state *s = (const openai_state *)r->state;
    if (!s->peeked || r->canon.body) return 1;
    oai_splice_upstream(r->raw, &s->peek, model, stream, 0, out);
    return 0;
}

static void openai_render_init(gw_render *rs, sg_buf *out, const gw_request *r, const char *model, int64_t created) {
    oai_render_init((oai_render *)rs->state, out, r->canon.stream, r->canon.include_usage, NULL, model, created);
}
static int openai_render_event(gw_render *rs, const gw_event *ev) { return oai_render_event(rs->state, ev); }
static int openai_render_end(gw_render *rs) { return oai_render_end((oai_render *)rs->state); }
static void openai_render_error(gw_render *rs, const gw_api_error *e) { oai_render_error((oai_render *)rs->state, e); }
static void openai_render_free(gw_render *rs) { oai_render_free((oai_render *)rs->state); }

const gw_client_api gw_api_openai_chat = {
    .name = "openai-chat",
    .paths = {"/v1/chat/completions", "/chat/completions", NULL},
    .parse = openai_parse,
    .canonical = openai_canonical,
    .request_free = openai_request_free,
    .splice_openai = openai_splice,
    .render_init = openai_render_init,
    .render_event = openai_render_event,
    .render_end = openai_render_end,
    .render_error = openai_render_error,
    .render_free = openai_render_free,
    .error_body = oai_error_body,
};
