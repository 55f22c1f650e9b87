/* breaker.c: see breaker.h. A chained hash table on "provider/model" whose entries also sit
 * on one of two recency lists, closed and open (open = in cooldown or half-open), most
 * recently used at the head: eviction takes the closed list's tail, else the open one's. */
#include "gateway/breaker.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"

typedef struct entry {
    struct entry *chain;            /* next in its hash bucket */
    struct entry *prev, *next;      /* its recency list, head = most recent */
    uint64_t hash;
    size_t provider_len, key_len;
    int failures;                   /* in the current window */
    uint64_t window_start_ms;
    uint64_t open_until_ms;         /* cooldown end; 0 = closed */
    uint32_t cooldown_ms;           /* the next cooldown (doubles on failed probes) */
    char key[];                     /* "provider/model", NUL-terminated */
} entry;

typedef struct lru {
    entry *head, *tail;
    size_t n;
} lru;

struct breaker_table {
    entry **buckets;
    size_t n_buckets;               /* a power of two, >= entries */
    size_t max_entries;
    lru closed, open;
    uint64_t evicted, evicted_open;
};

static uint64_t fnv_bytes(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t target_hash(const char *provider, size_t pl, const char *model, size_t ml) {
    uint64_t h = fnv_bytes(0xcbf29ce484222325ull, provider, pl);
    h = fnv_bytes(h, "/", 1);
    return fnv_bytes(h, model, ml);
}

static void lru_unlink(lru *l, entry *e) {
    if (e->prev) e->prev->next = e->next;
    else l->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else l->tail = e->prev;
    e->prev = e->next = NULL;
    l->n--;
}

static void lru_push_head(lru *l, entry *e) {
    e->prev = NULL;
    e->next = l->head;
    if (l->head) l->head->prev = e;
    else l->tail = e;
    l->head = e;
    l->n++;
}

static lru *list_of(breaker_table *t, const entry *e) { return e->open_until_ms ? &t->open : &t->closed; }

static entry *find(breaker_table *t, const char *provider, const char *model, uint64_t *hash_out) {
    size_t pl = strlen(provider), ml = strlen(model);
    uint64_t h = target_hash(provider, pl, model, ml);
    if (hash_out) *hash_out = h;
    for (entry *e = t->buckets[h & (t->n_buckets - 1)]; e; e = e->chain)
        if (e->hash == h && e->provider_len == pl && e->key_len == pl + 1 + ml && !memcmp(e->key, provider, pl) &&
            !memcmp(e->key + pl + 1, model, ml))
            return e;
    return NULL;
}

static void remove_entry(breaker_table *t, entry *e) {
    entry **pp = &t->buckets[e->hash & (t->n_buckets - 1)];
    while (*pp != e) pp = &(*pp)->chain;
    *pp = e->chain;
    lru_unlink(list_of(t, e), e);
    free(e);
}

static size_t n_entries(const breaker_table *t) { return t->closed.n + t->open.n; }

/* Drops one entry to make room: the least recently used closed one, else open one. */
static void evict_one(breaker_table *t) {
    entry *victim = t->closed.tail;
    if (!victim) {
        victim = t->open.tail;
        t->evicted_open++;
        /* every entry is open: say so, at 1, 2, 4, 8... evictions, not once each */
        if (!(t->evicted_open & (t->evicted_open - 1)))
            SG_WARN("circuit breakers: all %zu are open; forgetting the least recent (%s), %llu so far",
                    t->max_entries, victim->key, (unsigned long long)t->evicted_open);
    }
    t->evicted++;
    remove_entry(t, victim);
}

static void grow(breaker_table *t) {
    size_t n = t->n_buckets * 2;
    entry **b = sg_xcalloc(n, sizeof *b);
    for (size_t i = 0; i < t->n_buckets; i++)
        for (entry *e = t->buckets[i], *next; e; e = next) {
            next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
}

breaker_table *breaker_table_new(size_t max_entries) {
    breaker_table *t = sg_xcalloc(1, sizeof *t);
    t->max_entries = max_entries ? max_entries : GW_BREAKER_MAX_TARGETS_DEFAULT;
    t->n_buckets = 16;
    t->buckets = sg_xcalloc(t->n_buckets, sizeof *t->buckets);
    return t;
}

void breaker_table_free(breaker_table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_buckets; i++)
        for (entry *e = t->buckets[i], *next; e; e = next) {
            next = e->chain;
            free(e);
        }
    free(t->buckets);
    free(t);
}

void breaker_table_set_max(breaker_table *t, size_t max_entries) {
    t->max_entries = max_entries ? max_entries : GW_BREAKER_MAX_TARGETS_DEFAULT;
    while (n_entries(t) > t->max_entries) evict_one(t);
}

static bool in_cooldown(const entry *e, uint64_t now_ms) { return e->open_until_ms && now_ms < e->open_until_ms; }

bool breaker_is_open(breaker_table *t, const char *provider, const char *model, uint64_t now_ms, uint64_t *left_ms) {
    entry *e = find(t, provider, model, NULL);
    bool open = e && in_cooldown(e, now_ms);
    if (left_ms) *left_ms = open ? e->open_until_ms - now_ms : 0;
    if (e) {   /* looked at: recently used */
        lru *l = list_of(t, e);
        lru_unlink(l, e);
        lru_push_head(l, e);
    }
    return open;
}

/* A closed entry whose window has passed holds nothing a fresh one would not (its
 * failures restart and its cooldown is the configured one): one such is dropped per
 * record, from the cold end, so the table shrinks back once failures stop. */
static void expire_one(breaker_table *t, const gw_breaker *cfg, uint64_t now_ms) {
    entry *e = t->closed.tail;
    if (e && now_ms - e->window_start_ms > cfg->window_ms) remove_entry(t, e);
}

void breaker_record(breaker_table *t, const gw_breaker *cfg, const char *provider, const char *model, bool ok,
                    uint64_t now_ms) {
    if (!ok) expire_one(t, cfg, now_ms);   /* before the lookup: it may be the one dropped */
    uint64_t h;
    entry *e = find(t, provider, model, &h);
    if (ok) {
        if (!e) return;
        if (e->open_until_ms) SG_INFO("circuit closed: %s answers again", e->key);
        remove_entry(t, e);
        return;
    }
    if (!e) {
        while (n_entries(t) >= t->max_entries) evict_one(t);
        if (n_entries(t) >= t->n_buckets) grow(t);
        size_t pl = strlen(provider), ml = strlen(model);
        e = sg_xcalloc(1, sizeof *e + pl + 1 + ml + 1);
        memcpy(e->key, provider, pl);
        e->key[pl] = '/';
        memcpy(e->key + pl + 1, model, ml + 1);
        e->hash = h;
        e->provider_len = pl;
        e->key_len = pl + 1 + ml;
        e->window_start_ms = now_ms;
        e->cooldown_ms = cfg->cooldown_ms;
        e->chain = t->buckets[h & (t->n_buckets - 1)];
        t->buckets[h & (t->n_buckets - 1)] = e;
        lru_push_head(&t->closed, e);
    }
    lru_unlink(list_of(t, e), e);
    if (e->open_until_ms) {   /* a failed probe after the cooldown: a longer cooldown */
        if (now_ms >= e->open_until_ms) {
            uint64_t next = (uint64_t)e->cooldown_ms * 2;
            e->cooldown_ms = next > cfg->max_cooldown_ms ? cfg->max_cooldown_ms : (uint32_t)next;
            e->open_until_ms = now_ms + e->cooldown_ms;
            SG_WARN("circuit open: %s failed its probe; cooldown %u ms", e->key, e->cooldown_ms);
        }
    } else {
        if (now_ms - e->window_start_ms > cfg->window_ms) { e->window_start_ms = now_ms; e->failures = 0; }
        if (++e->failures >= cfg->failures) {
            e->open_until_ms = now_ms + e->cooldown_ms;
            SG_WARN("circuit open: %s failed %d times in %u ms; cooldown %u ms", e->key, e->failures, cfg->window_ms,
                    e->cooldown_ms);
        }
    }
    lru_push_head(list_of(t, e), e);
}

size_t breaker_list(breaker_table *t, const gw_breaker *cfg, uint64_t now_ms, breaker_view *out, size_t max) {
    size_t n = 0;
    for (const entry *e = t->open.head; e && n < max; e = e->next) {
        bool cooling = in_cooldown(e, now_ms);
        out[n++] = (breaker_view){e->key, cooling ? BREAKER_OPEN : BREAKER_HALF_OPEN, e->failures,
                                  cooling ? e->open_until_ms - now_ms : 0};
    }
    for (const entry *e = t->closed.head; e && n < max; e = e->next)
        if (e->failures > 0 && now_ms - e->window_start_ms <= cfg->window_ms)
            out[n++] = (breaker_view){e->key, BREAKER_CLOSED, e->failures, 0};
    return n;
}

void breaker_get_stats(const breaker_table *t, breaker_stats *s) {
    *s = (breaker_stats){n_entries(t), t->open.n, t->max_entries, t->evicted, t->evicted_open};
}

const char *breaker_state_name(breaker_state s) {
    return s == BREAKER_OPEN ? "open" : s == BREAKER_HALF_OPEN ? "half_open" : "closed";
}
