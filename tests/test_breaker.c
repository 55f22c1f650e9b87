/* test_breaker.c: the circuit breaker table. Opens after `failures` failures in the window,
 * stays open for the cooldown, a failed probe doubles it (up to the maximum), a success
 * closes it and removes the entry; lookups create nothing; the bound holds under 100k
 * distinct targets; long names that share a 511-byte prefix get breakers of their own;
 * eviction drops closed entries before open ones; the status list shows only open and
 * recently failing targets, bounded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/breaker.h"
#include "testutil.h"

static const gw_breaker cfg = {3, 10000, 1000, 4000, 0};

static void fail_n(breaker_table *t, const char *prov, const char *model, int n, uint64_t now) {
    for (int i = 0; i < n; i++) breaker_record(t, &cfg, prov, model, false, now);
}

static void test_opens_after_threshold(void) {
    breaker_table *t = breaker_table_new(16);
    fail_n(t, "openai", "m", 2, 100);
    CHECK(!breaker_is_open(t, "openai", "m", 100, NULL));
    fail_n(t, "openai", "m", 1, 100);
    uint64_t left = 0;
    CHECK(breaker_is_open(t, "openai", "m", 100, &left));
    CHECK_EQ_INT(left, 1000);
    CHECK(breaker_is_open(t, "openai", "m", 1099, &left));
    CHECK_EQ_INT(left, 1);
    CHECK(!breaker_is_open(t, "openai", "m", 1100, &left));   /* cooldown over: a probe may go */
    CHECK_EQ_INT(left, 0);
    CHECK(!breaker_is_open(t, "other", "m", 100, NULL));      /* per target */
    breaker_table_free(t);
}

static void test_window_restarts(void) {
    breaker_table *t = breaker_table_new(16);
    fail_n(t, "p", "m", 2, 0);
    fail_n(t, "p", "m", 1, 10001);   /* the window passed: this is failure 1 of a new one */
    CHECK(!breaker_is_open(t, "p", "m", 10001, NULL));
    fail_n(t, "p", "m", 2, 10002);
    CHECK(breaker_is_open(t, "p", "m", 10002, NULL));
    breaker_table_free(t);
}

static void test_probe_doubles_then_success_closes(void) {
    breaker_table *t = breaker_table_new(16);
    fail_n(t, "p", "m", 3, 0);                         /* open until 1000 */
    fail_n(t, "p", "m", 1, 500);                       /* a failure in cooldown: no change */
    uint64_t left;
    CHECK(breaker_is_open(t, "p", "m", 500, &left));
    CHECK_EQ_INT(left, 500);
    fail_n(t, "p", "m", 1, 1000);                      /* failed probe: 2000 */
    CHECK(breaker_is_open(t, "p", "m", 1000, &left));
    CHECK_EQ_INT(left, 2000);
    fail_n(t, "p", "m", 1, 3000);                      /* 4000 (the maximum) */
    CHECK(breaker_is_open(t, "p", "m", 3000, &left));
    CHECK_EQ_INT(left, 4000);
    fail_n(t, "p", "m", 1, 7000);                      /* stays at the maximum */
    CHECK(breaker_is_open(t, "p", "m", 7000, &left));
    CHECK_EQ_INT(left, 4000);
    breaker_view v[4];
    CHECK_EQ_INT(breaker_list(t, &cfg, 11000, v, 4), 1);
    CHECK_EQ_INT(v[0].state, BREAKER_HALF_OPEN);
    breaker_record(t, &cfg, "p", "m", true, 11000);    /* the probe answers */
    CHECK(!breaker_is_open(t, "p", "m", 11000, NULL));
    breaker_stats st;
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(st.entries, 0);                       /* closed and clean: no entry */
    fail_n(t, "p", "m", 3, 12000);                     /* the first cooldown again */
    CHECK(breaker_is_open(t, "p", "m", 12000, &left));
    CHECK_EQ_INT(left, 1000);
    breaker_table_free(t);
}

static void test_lookups_create_nothing(void) {
    breaker_table *t = breaker_table_new(16);
    char m[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(m, sizeof m, "m%d", i);
        CHECK(!breaker_is_open(t, "openai", m, 0, NULL));
        breaker_record(t, &cfg, "openai", m, true, 0);
    }
    breaker_stats st;
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(st.entries, 0);
    breaker_table_free(t);
}

static void test_bound_under_100k_keys(void) {
    breaker_table *t = breaker_table_new(4096);
    char m[32];
    size_t most = 0;
    for (int i = 0; i < 100000; i++) {
        snprintf(m, sizeof m, "m%d", i);
        breaker_record(t, &cfg, "openai", m, false, 5);   /* one window: none expires */
        breaker_stats st;
        breaker_get_stats(t, &st);
        if (st.entries > most) most = st.entries;
    }
    breaker_stats st;
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(most, 4096);
    CHECK_EQ_INT(st.entries, 4096);
    CHECK_EQ_INT(st.evicted, 100000 - 4096);
    CHECK_EQ_INT(st.evicted_open, 0);
    /* the most recent ones are kept, the oldest went */
    fail_n(t, "openai", "m99999", 2, 5);
    CHECK(breaker_is_open(t, "openai", "m99999", 5, NULL));
    fail_n(t, "openai", "m0", 2, 5);   /* m0 was evicted: 2 failures of a fresh entry */
    CHECK(!breaker_is_open(t, "openai", "m0", 5, NULL));
    /* the status list stays bounded whatever the table holds */
    breaker_view v[100];
    CHECK_EQ_INT(breaker_list(t, &cfg, 5, v, 100), 100);
    CHECK_EQ_STR(v[0].target, "openai/m99999");   /* open ones first */
    CHECK_EQ_INT(v[0].state, BREAKER_OPEN);
    breaker_table_free(t);
}

static void test_long_keys_are_distinct(void) {
    breaker_table *t = breaker_table_new(16);
    size_t n = 2000;
    char *a = malloc(n + 2), *b = malloc(n + 2);
    memset(a, 'x', n);
    memcpy(b, a, n);
    a[n] = 'a', b[n] = 'b';
    a[n + 1] = b[n + 1] = 0;
    fail_n(t, "openai", a, 3, 0);
    CHECK(breaker_is_open(t, "openai", a, 0, NULL));
    CHECK(!breaker_is_open(t, "openai", b, 0, NULL));   /* shares 2000 bytes, not the breaker */
    a[600] = 0;                                         /* a prefix of it is another target */
    CHECK(!breaker_is_open(t, "openai", a, 0, NULL));
    a[600] = 'x';
    breaker_view v[4];
    CHECK_EQ_INT(breaker_list(t, &cfg, 0, v, 4), 1);
    CHECK_EQ_INT(strlen(v[0].target), strlen("openai/") + n + 1);   /* the whole name */
    /* provider and model split differently name other targets */
    fail_n(t, "open", "ai/m", 3, 0);
    CHECK(!breaker_is_open(t, "openai", "m", 0, NULL));
    free(a);
    free(b);
    breaker_table_free(t);
}

static void test_eviction_prefers_closed(void) {
    breaker_table *t = breaker_table_new(16);
    char m[32];
    for (int i = 0; i < 8; i++) {   /* 8 open */
        snprintf(m, sizeof m, "open%d", i);
        fail_n(t, "p", m, 3, 0);
    }
    for (int i = 0; i < 1000; i++) {   /* a stream of closed ones churns through the rest */
        snprintf(m, sizeof m, "closed%d", i);
        fail_n(t, "p", m, 1, 1);
    }
    breaker_stats st;
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(st.entries, 16);
    CHECK_EQ_INT(st.open, 8);
    CHECK_EQ_INT(st.evicted_open, 0);
    for (int i = 0; i < 8; i++) {
        snprintf(m, sizeof m, "open%d", i);
        CHECK_MSG(breaker_is_open(t, "p", m, 1, NULL), "%s forgotten in its cooldown", m);
    }
    /* a table full of open breakers: the least recently used open one goes */
    for (int i = 8; i < 16; i++) {
        snprintf(m, sizeof m, "open%d", i);
        fail_n(t, "p", m, 3, 2);
    }
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(st.open, 16);
    CHECK(breaker_is_open(t, "p", "open0", 2, NULL));   /* used now: the most recent */
    fail_n(t, "p", "open16", 3, 2);
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(st.entries, 16);
    CHECK_EQ_INT(st.evicted_open, 1);
    CHECK(breaker_is_open(t, "p", "open0", 2, NULL));
    CHECK(!breaker_is_open(t, "p", "open1", 2, NULL));   /* the least recently used */
    CHECK(breaker_is_open(t, "p", "open16", 2, NULL));
    breaker_table_set_max(t, 4);   /* a reload with a smaller bound */
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(st.entries, 4);
    breaker_table_free(t);
}

static void test_list_shows_open_and_recent_failures(void) {
    breaker_table *t = breaker_table_new(64);
    fail_n(t, "p", "open", 3, 0);
    fail_n(t, "p", "failing", 1, 0);
    fail_n(t, "p", "old", 1, 0);
    breaker_view v[8];
    CHECK_EQ_INT(breaker_list(t, &cfg, 0, v, 8), 3);
    fail_n(t, "p", "recent", 1, 20000);   /* "failing" and "old" are past their window */
    size_t n = breaker_list(t, &cfg, 20000, v, 8);
    CHECK_EQ_INT(n, 2);
    CHECK_EQ_STR(v[0].target, "p/open");
    CHECK_EQ_INT(v[0].state, BREAKER_HALF_OPEN);
    CHECK_EQ_STR(v[1].target, "p/recent");
    CHECK_EQ_INT(v[1].state, BREAKER_CLOSED);
    CHECK_EQ_INT(v[1].failures, 1);
    CHECK_EQ_STR(breaker_state_name(BREAKER_OPEN), "open");
    /* stale closed entries are dropped as failures go on: the table shrinks back */
    fail_n(t, "p", "recent", 1, 20001);
    breaker_stats st;
    breaker_get_stats(t, &st);
    CHECK_EQ_INT(st.entries, 2);   /* open + recent */
    breaker_table_free(t);
}

int main(void) {
    RUN(test_opens_after_threshold);
    RUN(test_window_restarts);
    RUN(test_probe_doubles_then_success_closes);
    RUN(test_lookups_create_nothing);
    RUN(test_bound_under_100k_keys);
    RUN(test_long_keys_are_distinct);
    RUN(test_eviction_prefers_closed);
    RUN(test_list_shows_open_and_recent_failures);
    return tu_finish("test_breaker");
}
