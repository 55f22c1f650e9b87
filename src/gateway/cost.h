/* cost.h: what a request cost, in integer money, and the price catalogue behind it.
 *
 * Why: a gateway that records a missing price as $0, or prices cached and reasoning
 * tokens like fresh ones, reports spend that is wrong by a factor, and budgets built on it
 * are wrong too. Here every usage class has its own price, a missing price is "unpriced"
 * (never zero), and the arithmetic is exact integers.
 *
 * Units. Prices are pico-dollars per token (1e-12 USD), the same number as micro-dollars
 * per million tokens ($0.075 / M = 75 000), as in gw_price (config.h); -1 = unpriced.
 * Costs are micro-dollars (1e-6 USD).
 *
 * The catalogue (cost_catalog) holds one cost_model per (vendor, model), from three
 * sources, later ones replacing earlier ones entry by entry:
 *   1. built in: the current OpenAI, Anthropic and Google models from their public pricing
 *      pages (standard tier, text; see cost.c for the date), under the vendors "openai",
 *      "anthropic", "google";
 *   2. price_files: LiteLLM's model_prices_and_context_window.json format, under the
 *      provider names of the file ("openai", "anthropic", "gemini" -> "google", "groq", ...);
 *   3. the config's models: section, under the provider's own name. An entry there that
 *      gives no price at all only sets the context window; one that gives some prices
 *      replaces the whole price (a class it leaves out is unpriced, as docs/config.md says).
 * It is immutable once built: lookups from any thread. Rebuild it on configuration reload.
 *
 * Lookup of (provider, model): the provider's own name first (models: entries, and file
 * entries for providers such as groq), then the vendor it stands for: a provider of type
 * anthropic or google is that vendor; one of type openai is "openai" only when named so or
 * when its base_url is api.openai.com (an OpenAI-compatible server elsewhere does not get
 * OpenAI's prices); type local is free (price 0) unless models: prices it. Each name is
 * tried as given, then with its version suffixes stripped one at a time, so dated
 * snapshots find their family: gpt-4o-mini-2024-07-18 -> gpt-4o-mini,
 * claude-sonnet-4-5-20250929 -> claude-sonnet-4-5, claude-3-5-haiku-latest ->
 * claude-3-5-haiku, gemini-2.0-flash-001 -> gemini-2.0-flash, models/gemini-2.5-pro ->
 * gemini-2.5-pro. A snapshot priced apart is its own entry (gpt-4o-2024-05-13), and the
 * exact name always wins. Names compare without case.
 *
 * Arithmetic (cost_compute): cost = sum over classes of tokens x price, in pico-dollars
 * (an exact integer; overflow past ~$9.2M per request is refused as unpriced), then
 * rounded to micro-dollars once, half up: 1.5 micro-dollars -> 2, 1.49 -> 1. Reasoning
 * tokens are part of output; they are priced at `reasoning` (which equals `output` unless a
 * model says otherwise), the rest of output at `output`. A class with no tokens (0 or -1,
 * "unknown") contributes nothing whatever its price; a class with tokens and no price makes
 * the whole request unpriced. Long-context tiers (Gemini 2.5 Pro and Gemini 3 Pro above
 * 200k prompt tokens) price the whole request at the tier's prices when its prompt
 * (input + cache_read + cache_write) is over the threshold, as those providers bill.
 *
 * Known limits: Anthropic's 1-hour cache writes (2x input) are priced as 5-minute writes
 * (1.25x), since gw_usage does not tell them apart; audio input (Gemini) is priced as text;
 * batch and priority tiers are not modelled. */
#ifndef SG_GATEWAY_COST_H
#define SG_GATEWAY_COST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "gateway/chat.h"
#include "gateway/config.h"

typedef struct sg_tokenizer sg_tokenizer;

enum {
    COST_UNPRICED = -1,       /* a class with tokens has no price, or no model is known */
    COST_NO_USAGE = -2,       /* the usage has no count at all: estimate it first */
};

typedef struct cost_model {
    const char *vendor;       /* catalogue key: "openai", a provider name, a LiteLLM provider */
    const char *model;        /* "gpt-4o-mini" */
    gw_price price;           /* pico-dollars per token; -1 = unpriced class */
    int64_t long_threshold;   /* prompt tokens above which long_price applies; -1 = none */
    gw_price long_price;
    int64_t context_window;   /* tokens; -1 = unknown */
    int64_t max_output_tokens;/* -1 = unknown */
    const char *source;       /* "builtin", "models", or the price file's path */
} cost_model;

typedef struct cost_catalog cost_catalog;

/* The catalogue a gateway runs with: the built-in prices, then cfg->price_files, then
 * cfg->models. NULL with err on an unreadable or malformed price file (file: what). */
cost_catalog *cost_catalog_build(const gw_config *cfg, sg_error *err);

/* The same in pieces (tests, `smolgate usage`): an empty catalogue, then sources in order. */
cost_catalog *cost_catalog_new(void);
void cost_catalog_add_builtin(cost_catalog *c);
/* Reads a LiteLLM price file. Entries without any token price are skipped (image, audio
 * and per-second models); "sample_spec" is skipped. Returns the number of entries taken,
 * or -1 with err on malformed JSON. Prices are parsed from the decimal text of each number
 * (never through a double): "2.5e-06" USD per token is exactly 2 500 000 pico-dollars; a
 * price finer than a pico-dollar per token is rounded half up. Negative or absurd values
 * (over $1000 per token) skip the entry. */
int  cost_catalog_load_litellm(cost_catalog *c, const char *path, sg_error *err);
int  cost_catalog_load_litellm_mem(cost_catalog *c, const char *json, size_t len, const char *source,
                                   sg_error *err);
/* The models: entries of cfg (see above for how a partial entry combines). */
void cost_catalog_add_config(cost_catalog *c, const gw_config *cfg);
/* Adds or replaces one entry (copied). */
void cost_catalog_put(cost_catalog *c, const cost_model *m);
size_t cost_catalog_size(const cost_catalog *c);
void cost_catalog_free(cost_catalog *c);   /* NULL ok */

/* The entry for a model served by provider p (rules above), or NULL: unpriced. The result
 * lives as long as the catalogue. A local provider's models without an entry get a shared
 * zero-price entry. */
const cost_model *cost_lookup(const cost_catalog *c, const gw_provider *p, const char *model);
/* The same by catalogue key ("openai", "groq"...), with alias stripping. */
const cost_model *cost_lookup_vendor(const cost_catalog *c, const char *vendor, const char *model);
/* The catalogue key a provider's prices are found under after its own name: "openai",
 * "anthropic", "google", or NULL (an OpenAI-compatible server elsewhere, or local). */
const char *cost_vendor_of(const gw_provider *p);

/* ---- arithmetic ---- */

/* Micro-dollars (>= 0), COST_UNPRICED (m NULL, or tokens in an unpriced class, or
 * overflow), or COST_NO_USAGE (every count unknown). */
int64_t cost_compute(const cost_model *m, const gw_usage *u);
/* What a request that ended in an error costs: its usage at m's prices, with every count
 * unknown meaning nothing used (it failed before any token), so a priced model's failure
 * costs 0. COST_UNPRICED when m is NULL (or a class it used has no price): an unpriced
 * model's failure is unknown, never $0. */
int64_t cost_of_failure(const cost_model *m, const gw_usage *u);
/* The same at one flat price (no tier). */
int64_t cost_compute_price(const gw_price *p, const gw_usage *u);
/* The exact pico-dollar sum behind cost_compute_price; -1 unpriced, -2 no usage. */
int64_t cost_compute_pico(const gw_price *p, const gw_usage *u);

/* The most a request can cost, for budget reservation, in micro-dollars rounded UP:
 * prompt_tokens at the dearest prompt class (input, or cache_write when it is dearer:
 * an Anthropic request may write its whole prompt to the cache), plus max_tokens at the
 * dearer of output and reasoning, at the long tier's prices when prompt_tokens is over the
 * threshold. max_tokens < 0 means the model's max_output_tokens. COST_UNPRICED when a
 * needed price or max_output_tokens is unknown. */
int64_t cost_max(const cost_model *m, int64_t prompt_tokens, int64_t max_tokens);

/* ---- estimates (streams without a usage chunk) ---- */

/* Tokens in text. With a tokenizer (any model's: an estimate of another model's count),
 * its encoding's length, special-token strings counted as text. With tok NULL, a
 * heuristic: one token per 4 bytes of ASCII (rounded up, per run) plus one per non-ASCII
 * character, which is within ~25% of BPE tokenizers on English and close on CJK. Never
 * fails: a tokenizer error falls back to the heuristic. */
int64_t cost_estimate_tokens(const sg_tokenizer *tok, const char *text, size_t len);
/* Fills u from prompt and completion texts (either may be NULL): input = prompt tokens,
 * output = completion tokens, cache classes 0, reasoning -1, estimated = true. */
void cost_estimate_usage(const sg_tokenizer *tok, const char *prompt, size_t prompt_len,
                         const char *completion, size_t completion_len, gw_usage *u);

/* ---- money text ---- */

/* "1.234567" USD from micro-dollars (negative: "-0.000001"). Returns the bytes written
 * (buffer of at least 24). */
int cost_format_usd(int64_t micro, char *out, size_t cap);
/* Parses a decimal USD-per-token string ("2.5e-06", "0.000003", "3E-6") to pico-dollars
 * per token, rounded half up below a pico-dollar. -1 on anything else, or negative, or
 * over $1000 per token. */
int64_t cost_parse_usd_per_token(const char *s, size_t len);

#endif
