/* fuzz_embeddings_request.c: libFuzzer target for the embeddings request parser
 * (codec_embed.h): any bytes as a POST /v1/embeddings body. A body it accepts must have a
 * model, 1..EMB_MAX_INPUTS inputs and build both upstream bodies (Gemini refusing token
 * inputs only, with a 400); one it refuses must say so with a 400 and keep nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "gateway/codec_embed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    emb_request r;
    gw_api_error e;
    if (emb_parse_request((const char *)data, size, &r, &e)) {
        if (e.status != 400 || r.body) abort();
        return 0;
    }
    if (!r.model || !*r.model || r.n_inputs < 1 || r.n_inputs > EMB_MAX_INPUTS) abort();
    sg_buf b;
    sg_buf_init(&b);
    emb_build_openai(&r, "m", &b);
    if (!b.len) abort();
    sg_buf_reset(&b);
    const char *method = NULL;
    int rc = emb_build_gemini(&r, "g", &b, &method, &e);
    if (rc != (r.tokens ? -1 : 0) || (rc && e.status != 400) || (!rc && !method)) abort();
    int64_t tokens = 0;
    sg_buf_reset(&b);
    emb_input_text(&r, &b, &tokens);
    if (r.tokens ? tokens < (int64_t)r.n_inputs : b.len < r.n_inputs) abort();
    sg_buf_free(&b);
    emb_request_free(&r);
    return 0;
}
