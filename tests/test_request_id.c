/* test_request_id.c: the gateway's request ids (request_id.h): layout, order within and
 * across milliseconds, a clock that steps back, and two generators not colliding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/request_id.h"
#include "testutil.h"

static uint64_t hex_prefix(const char *s, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v * 16 + (uint64_t)(s[i] <= '9' ? s[i] - '0' : s[i] - 'a' + 10);
    return v;
}

static void test_layout(void) {
    reqid_gen g;
    reqid_init(&g);
    char id[REQID_LEN + 1];
    time_t before = time(NULL);
    reqid_next(&g, id);
    CHECK_EQ_INT(strlen(id), 32);
    CHECK_EQ_INT(strspn(id, "0123456789abcdef"), 32);
    CHECK(id[12] == '7');                              /* version */
    CHECK(strchr("89ab", id[16]) != NULL);             /* variant 0b10 */
    uint64_t ms = hex_prefix(id, 12);                  /* 48-bit Unix milliseconds */
    CHECK(ms / 1000 >= (uint64_t)before && ms / 1000 <= (uint64_t)time(NULL) + 1);
    reqid_init(&g);                                    /* a fresh one: the clock it is given */
    reqid_next_at(&g, 0x0123456789abull, id);
    CHECK(!strncmp(id, "0123456789ab7", 13));
}

static void test_monotonic(void) {
    reqid_gen g;
    reqid_init(&g);
    char prev[REQID_LEN + 1], id[REQID_LEN + 1];
    uint64_t t = 1765000000000ull;
    reqid_next_at(&g, t, prev);
    int ok = 1;
    for (int i = 0; i < 200000; i++) {
        /* mostly the same millisecond, sometimes the next one, sometimes the clock steps back */
        uint64_t now = t + (uint64_t)(i / 1000) - (i % 7777 == 0 ? 5 : 0);
        reqid_next_at(&g, now, id);
        if (strcmp(id, prev) <= 0 || strlen(id) != 32 || id[12] != '7' || !strchr("89ab", id[16])) {
            ok = 0;
            fprintf(stderr, "  not increasing at %d: %s then %s\n", i, prev, id);
            break;
        }
        memcpy(prev, id, sizeof id);
    }
    CHECK(ok);
    /* a clock that stepped back keeps the last millisecond */
    reqid_next_at(&g, t - 1000, id);
    CHECK(strcmp(id, prev) > 0 && !strncmp(id, prev, 12));
    /* a later millisecond starts afresh, its prefix is that time */
    reqid_next_at(&g, t + 10000, id);
    CHECK_EQ_INT(hex_prefix(id, 12), t + 10000);
}

static void test_counter_carries(void) {
    reqid_gen g;
    reqid_init(&g);
    char a[REQID_LEN + 1], b[REQID_LEN + 1];
    reqid_next_at(&g, 1000, a);
    g.lo = (1ull << 62) - 1;                           /* rand_b full: carry into rand_a */
    g.hi = 5;
    reqid_next_at(&g, 1000, a);
    CHECK_EQ_INT(g.hi, 6);
    CHECK_EQ_INT(g.lo, 0);
    g.lo = (1ull << 62) - 1;                           /* both full: the next millisecond */
    g.hi = (1ull << 12) - 1;
    reqid_next_at(&g, 1000, b);
    CHECK(strcmp(b, a) > 0);
    CHECK_EQ_INT(hex_prefix(b, 12), 1001);
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

static void test_two_generators(void) {
    /* Two processes minting in the same milliseconds: no id in common. */
    enum { N = 20000 };
    reqid_gen g1, g2;
    reqid_init(&g1);
    reqid_init(&g2);
    char *ids[2 * N];
    for (int i = 0; i < N; i++) {
        ids[2 * i] = malloc(REQID_LEN + 1);
        ids[2 * i + 1] = malloc(REQID_LEN + 1);
        reqid_next_at(&g1, 5000 + (uint64_t)i / 100, ids[2 * i]);
        reqid_next_at(&g2, 5000 + (uint64_t)i / 100, ids[2 * i + 1]);
    }
    qsort(ids, 2 * N, sizeof *ids, cmp_str);
    int dup = 0;
    for (int i = 1; i < 2 * N; i++) dup += !strcmp(ids[i - 1], ids[i]);
    CHECK_EQ_INT(dup, 0);
    for (int i = 0; i < 2 * N; i++) free(ids[i]);
}

int main(void) {
    RUN(test_layout);
    RUN(test_monotonic);
    RUN(test_counter_carries);
    RUN(test_two_generators);
    return tu_finish("test_request_id");
}
