/* fuzz_responses.c: libFuzzer target for the Responses API parser (api_openai_responses.c).
 *
 * Input: a request body. It is parsed into the canonical request; a failure must explain
 * itself (a message and a 4xx status). A parsed request must hold a canonical body that
 * names the model and has messages; it is then answered with a fixed sequence of events
 * (text, a tool call, finish, usage), rendered both as one Response object, which must
 * be valid JSON with object "response", and as SSE events. Stored responses go to a small
 * store, so that a later input's previous_response_id or item_reference may find one.
 * The same bytes are also read as what the stored-response endpoints take from a client:
 * the stored responses a body names (gw_responses_refs: at most its cap, each an id),
 * a path id (gw_responses_check_id) and an input_items query string: each answer is a
 * status in {200, 400, 404} with a JSON body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/api.h"
#include "gateway/response_store.h"

static void answer(gw_request *r, bool stream) {
    sg_buf out;
    sg_buf_init(&out);
    gw_render rs;
    const gw_client_api *api = &gw_api_openai_responses;
    r->canon.stream = stream;
    api->render_init(&rs, &out, r, r->canon.model, 1700000000);
    gw_event ev[] = {
        {.kind = GW_EV_START, .id = "x", .name = "m"},
        {.kind = GW_EV_TEXT, .text = "hi \"there\"", .len = 10},
        {.kind = GW_EV_TOOL_CALL, .index = 0, .id = "call_1", .name = "f", .text = "{\"a\":", .len = 5},
        {.kind = GW_EV_TOOL_CALL, .index = 0, .text = "1}", .len = 2},
        {.kind = GW_EV_FINISH, .finish = "tool_calls"},
        {.kind = GW_EV_USAGE, .usage = {3, 0, 0, 4, -1, false}},
    };
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++) api->render_event(&rs, &ev[i]);
    if (api->render_end(&rs) != 200) abort();
    if (!stream) {
        json_t *j = json_loadb(out.data, out.len, 0, NULL);
        if (!j || strcmp(json_string_value(json_object_get(j, "object")) ?: "", "response")) abort();
        json_decref(j);
    } else if (!out.len || strncmp(out.data, "event: response.created\n", 24)) {
        abort();
    }
    api->render_free(&rs);
    sg_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static bool init;
    if (!init) {
        rstore_limits l = {64, 1 << 20, 86400};
        rstore_configure(&l);
        init = true;
    }
    gw_request r;
    memset(&r, 0, sizeof r);
    gw_api_error e;
    memset(&e, 0, sizeof e);
    r.api = &gw_api_openai_responses;
    r.raw = (const char *)data;
    r.raw_len = size;
    r.canon.max_tokens = -1;
    if (gw_api_openai_responses.parse(&r, &e)) {
        if (!e.message[0] || e.status < 400 || e.status >= 500) abort();
    } else {
        if (!r.canon.body || !r.canon.model || !json_is_array(json_object_get(r.canon.body, "messages"))) abort();
        bool stream = r.canon.stream;
        answer(&r, stream);
        answer(&r, !stream);
    }
    gw_api_openai_responses.request_free(&r);
    oai_request_free(&r.canon);

    char *ids[4];
    size_t n = gw_responses_refs((const char *)data, size, ids, 4);
    if (n > 4) abort();
    for (size_t i = 0; i < n; i++) {
        if (strlen(ids[i]) > RSTORE_MAX_ID) abort();
        free(ids[i]);
    }
    char *text = malloc(size + 1);   /* the bytes as a C string, cut at the first NUL */
    memcpy(text, data, size);
    text[size] = 0;
    sg_buf out;
    sg_buf_init(&out);
    int st = gw_responses_check_id(text, &out);
    if (st != 0 && st != 400) abort();
    if (st) {
        json_t *ej = json_loadb(out.data, out.len, 0, NULL);
        if (!json_is_object(json_object_get(ej, "error"))) abort();
        json_decref(ej);
    }
    sg_buf_reset(&out);
    rstore_entry en = {.response = "{}", .messages = "[]",
                       .input_items = "[{\"id\":\"a\"},{\"id\":\"b\"},{\"type\":\"x\"},{\"id\":\"c\"}]", .created = 1};
    st = gw_responses_input_items(&en, "resp_x", text, &out);
    json_t *j = json_loadb(out.data, out.len, 0, NULL);
    if ((st != 200 && st != 400) || !j) abort();
    if (st == 200 && (json_array_size(json_object_get(j, "data")) > 100 || !json_is_boolean(json_object_get(j, "has_more"))))
        abort();
    json_decref(j);
    free(text);
    sg_buf_free(&out);
    return 0;
}
