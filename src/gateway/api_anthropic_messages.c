/* api_anthropic_messages.c: the Anthropic Messages client API (POST /v1/messages).
 *
 * The request is translated into the canonical (OpenAI-shaped) body at once
 * (codec_anthropic.h); answers are rendered as Messages events or one Message. */
#include "gateway/api.h"
#include "gateway/codec_anthropic.h"

_Static_assert(sizeof(anth_request) <= GW_API_STATE_BYTES, "GW_API_STATE_BYTES holds the request");
_Static_assert(sizeof(anth_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static int anthropic_parse(gw_request *r, gw_api_error *e) {
    anth_request *a = (anth_request *)r->state;
    *a = (anth_request){0};
    if (anth_parse_request(r->raw, r->raw_len, a, e)) return -1;
    r->canon.body = json_incref(a->body);
    r->canon.model = a->model;
    r->canon.stream = a->stream;
    r->canon.include_usage = true;   /* Anthropic always reports usage */
    r->canon.max_tokens = a->max_tokens;
    return 0;
}

static int anthropic_canonical(gw_request *r, gw_api_error *e) {
    (void)r;   /* parse built it: only reached after a failed parse */
    return gw_api_fail(e, 500, "internal_error", NULL, "the request has no canonical body");
}

static void anthropic_request_free(gw_request *r) { anth_request_free((anth_request *)r->state); }

static void anthropic_render_init(gw_render *rs, sg_buf *out, const gw_request *r, const char *model, int64_t created) {
    (void)created;
    anth_render_init((anth_render *)rs->state, out, r->canon.stream, NULL, model);
}
static int anthropic_render_event(gw_render *rs, const gw_event *ev) { return anth_render_event(rs->state, ev); }
static int anthropic_render_end(gw_render *rs) { return anth_render_end((anth_render *)rs->state); }
static void anthropic_render_error(gw_render *rs, const gw_api_error *e) { anth_render_error((anth_render *)rs->state, e); }
static void anthropic_render_free(gw_render *rs) { anth_render_free((anth_render *)rs->state); }

const gw_client_api gw_api_anthropic_messages = {
    .name = "anthropic-messages",
    .paths = {"/v1/messages", NULL},
    .error_prefix = "/v1/messages/",   /* count_tokens */
    .parse = anthropic_parse,
    .canonical = anthropic_canonical,
    .request_free = anthropic_request_free,
    .splice_openai = NULL,
    .render_init = anthropic_render_init,
    .render_event = anthropic_render_event,
    .render_end = anthropic_render_end,
    .render_error = anthropic_render_error,
    .render_free = anthropic_render_free,
    .error_body = anth_error_body,
};
