/* provider.c: the table of providers and the helpers their entries share. */
#include <stdlib.h>
#include <string.h>

#include "gateway/provider.h"

const gw_provider_entry *const gw_provider_entries[] = {
    [GW_PROVIDER_OPENAI] = &gw_provider_openai,
    [GW_PROVIDER_ANTHROPIC] = &gw_provider_anthropic,
    [GW_PROVIDER_GOOGLE] = &gw_provider_google,
    [GW_PROVIDER_LOCAL] = &gw_provider_local,
    NULL,
};
#define N_ENTRIES (sizeof gw_provider_entries / sizeof gw_provider_entries[0] - 1)
_Static_assert(N_ENTRIES == GW_PROVIDER_N_TYPES, "one entry per gw_provider_type");

const gw_provider_entry *gw_provider_entry_of(gw_provider_type t) {
    return (unsigned)t < N_ENTRIES ? gw_provider_entries[t] : NULL;
}

const gw_provider_entry *gw_provider_entry_named(const char *type_name) {
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (!strcmp(gw_provider_entries[i]->type_name, type_name)) return gw_provider_entries[i];
    return NULL;
}

uint32_t gw_retry_after_header(const upstream_response *r) {
    const char *ms = upstream_response_header(r, "retry-after-ms");
    if (ms) return (uint32_t)strtoul(ms, NULL, 10);
    const char *s = upstream_response_header(r, "retry-after");
    if (s && *s >= '0' && *s <= '9') return (uint32_t)(strtod(s, NULL) * 1000);
    return 0;
}

void gw_call_add_config_headers(gw_upstream_call *call, const gw_provider *pv) {
    for (size_t i = 0; i < pv->n_headers && call->n_headers < GW_CALL_MAX_HEADERS; i++)
        call->headers[call->n_headers++] = (upstream_header){pv->headers[i].name, pv->headers[i].value};
}
