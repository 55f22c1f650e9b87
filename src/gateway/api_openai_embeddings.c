/* api_openai_embeddings.c: the OpenAI embeddings client API (POST /v1/embeddings).
 *
 * The body is validated at once (codec_embed.h) and kept as the canonical request of kind
 * GW_REQ_EMBEDDINGS; answers (EMBEDDING events) are rendered as OpenAI's list, floats or
 * base64 as the client asked. Errors in OpenAI's shape. */
#include "gateway/api.h"
#include "gateway/codec_embed.h"

_Static_assert(sizeof(emb_request) <= GW_API_STATE_BYTES, "GW_API_STATE_BYTES holds the request");
_Static_assert(sizeof(emb_render) <= GW_API_RENDER_BYTES, "GW_API_RENDER_BYTES holds the renderer");

static int embeddings_parse(gw_request *r, gw_api_error *e) {
    emb_request *q = (emb_request *)r->state;
    if (emb_parse_request(r->raw, r->raw_len, q, e)) return -1;
    r->canon.body = json_incref(q->body);
    r->canon.model = q->model;
    r->canon.stream = false;
    r->canon.max_tokens = 0;   /* an embedding generates nothing */
    return 0;
}

static int embeddings_canonical(gw_request *r, gw_api_error *e) {
    (void)r;   /* parse built it: only reached after a failed parse */
    return gw_api_fail(e, 500, "internal_error", NULL, "the request has no canonical body");
}

void gw_emb_request_free(gw_request *r) { emb_request_free((emb_request *)r->state); }

static void embeddings_render_init(gw_render *rs, sg_buf *out, const gw_request *r, const char *model, int64_t created) {
    (void)created;
    const emb_request *q = (const emb_request *)r->state;
    emb_render_init((emb_render *)rs->state, out, q->base64, q->n_inputs, model);
}
int gw_emb_render_event(gw_render *rs, const gw_event *ev) { return emb_render_event(rs->state, ev); }
int gw_emb_render_end(gw_render *rs) { return emb_render_end((emb_render *)rs->state); }
void gw_emb_render_error(gw_render *rs, const gw_api_error *e) { emb_render_error((emb_render *)rs->state, e); }
void gw_emb_render_free(gw_render *rs) { (void)rs; }

const gw_client_api gw_api_openai_embeddings = {
    .name = "openai-embeddings",
    .paths = {"/v1/embeddings", "/embeddings", NULL},
    .kind = GW_REQ_EMBEDDINGS,
    .parse = embeddings_parse,
    .canonical = embeddings_canonical,
    .request_free = gw_emb_request_free,
    .splice_openai = NULL,
    .render_init = embeddings_render_init,
    .render_event = gw_emb_render_event,
    .render_end = gw_emb_render_end,
    .render_error = gw_emb_render_error,
    .render_free = gw_emb_render_free,
    .error_body = oai_error_body,
};
