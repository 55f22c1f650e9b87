/* fuzz_ollama_request.c: libFuzzer target for Ollama's request parser
 * (ollama_parse_request, api_ollama.h): any bytes, as a /api/chat or a /api/generate body
 * (the first byte picks), must give a canonical request or a 400, never a crash or a
 * leak; a parsed request renders a whole answer and a streamed one for its model. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gateway/api_ollama.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    bool generate = data[0] & 1;
    oai_request r;
    memset(&r, 0, sizeof r);
    gw_api_error e;
    if (ollama_parse_request((const char *)data + 1, size - 1, generate, &r, &e)) {
        if (e.status != 400 || r.body) __builtin_trap();
        return 0;
    }
    if (!r.model || !json_is_array(json_object_get(r.body, "messages"))) __builtin_trap();
    sg_buf out;
    sg_buf_init(&out);
    for (int stream = 0; stream < 2; stream++) {
        ollama_render rs;
        ollama_render_init(&rs, &out, generate, stream, r.model, 0);
        gw_event ev = {.kind = GW_EV_TEXT, .text = r.model, .len = strlen(r.model)};
        ollama_render_event(&rs, &ev);
        ev = (gw_event){.kind = GW_EV_TOOL_CALL, .index = 0, .name = r.model, .text = r.model, .len = strlen(r.model)};
        ollama_render_event(&rs, &ev);
        ollama_render_end(&rs);
        ollama_render_free(&rs);
        sg_buf_reset(&out);
    }
    sg_buf_free(&out);
    json_decref(r.body);
    return 0;
}
