/* api.c: the table of client APIs and the request calls every entry shares. */
#include <string.h>

#include "gateway/api.h"

const gw_client_api *const gw_client_apis[] = {
    &gw_api_openai_chat,
    &gw_api_anthropic_messages,
    &gw_api_ai_gateway,
    &gw_api_openai_embeddings,
    &gw_api_openai_responses,
    &gw_api_ollama_chat,
    &gw_api_ollama_generate,
    &gw_api_ollama_embed,
    &gw_api_ollama_embeddings,
    &gw_api_ai_gateway_embedding,
    NULL,
};

const gw_client_api *gw_client_api_for_path(const char *path) {
    for (size_t i = 0; gw_client_apis[i]; i++)
        for (size_t k = 0; gw_client_apis[i]->paths[k]; k++)
            if (!strcmp(gw_client_apis[i]->paths[k], path)) return gw_client_apis[i];
    return NULL;
}

const gw_client_api *gw_client_api_for_errors(const char *path) {
    const gw_client_api *api = gw_client_api_for_path(path);
    if (api) return api;
    for (size_t i = 0; gw_client_apis[i]; i++) {
        const char *p = gw_client_apis[i]->error_prefix;
        if (p && !strncmp(path, p, strlen(p))) return gw_client_apis[i];
    }
    return gw_client_apis[0];
}

int gw_request_parse(gw_request *r, const gw_client_api *api, const char *raw, size_t len, gw_api_error *e) {
    memset(&r->canon, 0, sizeof r->canon);
    r->canon.max_tokens = -1;
    r->api = api;
    r->raw = raw;
    r->raw_len = len;
    return api->parse(r, e);
}

int gw_request_canonical(gw_request *r, gw_api_error *e) {
    if (r->canon.body) return 0;
    return r->api->canonical(r, e);
}

void gw_request_free(gw_request *r) {
    if (!r->api) return;
    r->api->request_free(r);
    oai_request_free(&r->canon);
    r->api = NULL;
}
