/* breaker.h: the circuit breakers, one per target ("provider/model").
 *
 * A target that fails `failures` times within `window_ms` opens: it is tried last (a
 * probe) for a cooldown; a failed probe doubles the cooldown up to max_cooldown_ms, a
 * success closes it (config.h: gw_breaker).
 *
 * Why a table of its own: direct model ids come from clients, so the set of targets is
 * unbounded. The table is a hash on the whole "provider/model" (no length limit, so two
 * long names never share a breaker) holding only targets that failed: a lookup creates
 * nothing and a success removes the entry (a closed breaker with no failures is the same
 * as none). It holds at most max_entries. To make room it drops, least recently used
 * first, a closed entry; an open one only when every entry is open (counted and logged),
 * so a breaker in cooldown is not forgotten while anything else can go.
 *
 * Callers name the target on every call; the table hands out no pointers to its entries,
 * so an entry evicted during an attempt's upstream round-trip cannot dangle: the result
 * is recorded by looking the target up again. breaker_list's strings are the exception,
 * valid until the table next changes.
 *
 * Threads: one (the event loop's). Lookups and records are O(1). */
#ifndef SG_GATEWAY_BREAKER_H
#define SG_GATEWAY_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/config.h"

typedef struct breaker_table breaker_table;

typedef enum breaker_state {
    BREAKER_CLOSED,                 /* failing, not yet at the threshold */
    BREAKER_OPEN,                   /* in cooldown: skipped unless nothing else is left */
    BREAKER_HALF_OPEN,              /* cooldown over: the next attempt is a probe */
} breaker_state;

typedef struct breaker_view {
    const char *target;             /* "provider/model"; valid until the table changes */
    breaker_state state;
    int failures;                   /* in the current window */
    uint64_t cooldown_left_ms;      /* OPEN: time to the probe; else 0 */
} breaker_view;

typedef struct breaker_stats {
    size_t entries;                 /* targets with an entry (recent failures or open) */
    size_t open;                    /* of those, open or half-open */
    size_t max_entries;
    uint64_t evicted;               /* entries dropped to stay within max_entries */
    uint64_t evicted_open;          /* of those, open ones (the table was all open) */
} breaker_stats;

/* max_entries 0 = GW_BREAKER_MAX_TARGETS_DEFAULT (config.h). */
breaker_table *breaker_table_new(size_t max_entries);
void breaker_table_free(breaker_table *t);   /* NULL ok */
/* A new bound (configuration reload); a smaller one evicts down to it now. */
void breaker_table_set_max(breaker_table *t, size_t max_entries);

/* Whether the target is in its cooldown at now_ms (try it last). *left_ms (NULL ok): the
 * cooldown's remaining time, 0 when not open. Creates no entry. */
bool breaker_is_open(breaker_table *t, const char *provider, const char *model, uint64_t now_ms,
                     uint64_t *left_ms);

/* Records an attempt's outcome under cfg's thresholds (logs when a breaker opens or
 * closes). A failure creates the entry if needed; a success removes it. */
void breaker_record(breaker_table *t, const gw_breaker *cfg, const char *provider, const char *model, bool ok,
                    uint64_t now_ms);

/* The breakers worth showing (GET /v1/status): open and half-open ones, then closed ones
 * with failures within cfg->window_ms, most recently used first; at most max. Returns the
 * count written to out. */
size_t breaker_list(breaker_table *t, const gw_breaker *cfg, uint64_t now_ms, breaker_view *out, size_t max);

void breaker_get_stats(const breaker_table *t, breaker_stats *s);

/* "closed", "open", "half_open". */
const char *breaker_state_name(breaker_state s);

#endif
