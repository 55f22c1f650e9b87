/* fuzz_ai_gateway.c: libFuzzer target for the Vercel AI Gateway request parser
 * (api_ai_gateway.c). Run by tests/e2e/fuzz.sh (FUZZ_ONLY=ai_gateway tests/e2e/fuzz.sh).
 *
 * Input: "MODEL\nSTREAMING\nBODY": the ai-language-model-id and
 * ai-language-model-streaming headers, then the JSON call options. A parse either fails
 * with a 400 and a message, or yields a canonical request that the OpenAI validator
 * accepts, whose model is the header's and whose routing names have no control
 * character; the answer renderer then runs over a few events. Anything else aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/api.h"
#include "gateway/http_server.h"

static const char *line(const char **p, const char *end, char *buf, size_t cap) {
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    size_t n = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
    if (n >= cap) n = cap - 1;
    memcpy(buf, *p, n);
    buf[n] = 0;
    *p = nl ? nl + 1 : end;
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data, *end = p + size;
    char model[256], streaming[16];
    line(&p, end, model, sizeof model);
    line(&p, end, streaming, sizeof streaming);
    http_header h[2] = {{"ai-language-model-id", model}, {"ai-language-model-streaming", streaming}};
    http_request req = {.method = "POST", .path = "/v4/ai/language-model", .headers = h, .n_headers = model[0] ? 2 : 1};
    if (!model[0]) h[0] = h[1];
    gw_request r;
    memset(&r, 0, sizeof r);
    r.http = &req;
    gw_api_error e;
    if (gw_request_parse(&r, &gw_api_ai_gateway, p, (size_t)(end - p), &e) != 0) {
        if (e.status != 400 || !e.message[0]) abort();
        gw_request_free(&r);
        return 0;
    }
    if (!r.canon.body || !r.canon.model || strcmp(r.canon.model, model)) abort();
    if (oai_validate_request(r.canon.body, &e) != 0) abort();
    for (size_t i = 0; i < r.canon.n_models; i++)
        if (gw_name_has_control(r.canon.models[i], strlen(r.canon.models[i]))) abort();
    for (size_t i = 0; i < r.canon.n_order; i++)
        if (gw_name_has_control(r.canon.order[i], strlen(r.canon.order[i]))) abort();

    sg_buf out;
    sg_buf_init(&out);
    gw_render rs;
    gw_api_ai_gateway.render_init(&rs, &out, &r, model, 0);
    gw_event ev[] = {
        {.kind = GW_EV_START, .id = "id-1", .name = "m"},
        {.kind = GW_EV_TEXT, .text = p, .len = (size_t)(end - p) < 16 ? (size_t)(end - p) : 16},
        {.kind = GW_EV_TOOL_CALL, .index = 0, .id = "c", .name = "t", .text = "{}", .len = 2},
        {.kind = GW_EV_FINISH, .finish = "stop"},
    };
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) gw_api_ai_gateway.render_event(&rs, &ev[i]);
    int status = gw_api_ai_gateway.render_end(&rs);
    gw_api_ai_gateway.render_free(&rs);
    if (status != 200 || !out.len) abort();
    sg_buf_free(&out);
    gw_request_free(&r);
    return 0;
}
