/* request_id.c: see request_id.h. */
#include "gateway/request_id.h"

#include <sys/random.h>
#include <time.h>

#define LO_MASK ((1ull << 62) - 1)
#define HI_MASK ((1ull << 12) - 1)
#define MS_MASK ((1ull << 48) - 1)

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void reqid_init(reqid_gen *g) {
    *g = (reqid_gen){0};
    if (getrandom(&g->rng, sizeof g->rng, 0) != sizeof g->rng)
        g->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)g ^ (uint64_t)clock();
}

void reqid_next_at(reqid_gen *g, uint64_t now_ms, char out[REQID_LEN + 1]) {
    now_ms &= MS_MASK;
    if (now_ms > g->ms) {
        g->ms = now_ms;
        uint64_t r = splitmix64(&g->rng);
        g->hi = r & HI_MASK;
        /* The top bit of rand_b starts clear: about 2^61 ids of room in this millisecond
         * before the counter would carry into rand_a. */
        g->lo = splitmix64(&g->rng) & (LO_MASK >> 1);
    } else if (++g->lo > LO_MASK) {   /* same millisecond, or the clock stepped back */
        g->lo = 0;
        if (++g->hi > HI_MASK) {      /* 2^74 ids in one millisecond: borrow the next one */
            g->hi = 0;
            g->ms = (g->ms + 1) & MS_MASK;
        }
    }
    static const char hex[] = "0123456789abcdef";
    uint64_t a = g->ms << 16 | 0x7000u | g->hi;   /* time, version, rand_a */
    uint64_t b = 2ull << 62 | g->lo;              /* variant 0b10, rand_b */
    for (int i = 15; i >= 0; i--, a >>= 4) out[i] = hex[a & 15];
    for (int i = 31; i >= 16; i--, b >>= 4) out[i] = hex[b & 15];
    out[REQID_LEN] = 0;
}

void reqid_next(reqid_gen *g, char out[REQID_LEN + 1]) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    reqid_next_at(g, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, out);
}
