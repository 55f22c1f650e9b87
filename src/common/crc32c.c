/* crc32c.c: see crc32c.h. A byte-wise table (built once) and, on x86-64 with SSE4.2,
 * the crc32 instruction eight bytes at a time; chosen once. */
#include "common/crc32c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static uint32_t g_table[256];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void build_table(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;   /* reflected polynomial */
        g_table[i] = c;
    }
}

uint32_t sg_crc32c_table(uint32_t crc, const void *data, size_t n) {
    pthread_once(&g_once, build_table);
    const unsigned char *p = data;
    crc = ~crc;
    while (n--) crc = g_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return ~c32;
}

uint32_t sg_crc32c(uint32_t crc, const void *data, size_t n) {
    static atomic_int hw = -1;   /* every thread that races here finds the same answer */
    int h = atomic_load_explicit(&hw, memory_order_relaxed);
    if (h < 0) {
        __builtin_cpu_init();
        h = __builtin_cpu_supports("sse4.2") ? 1 : 0;
        atomic_store_explicit(&hw, h, memory_order_relaxed);
    }
    return h ? crc_hw(crc, data, n) : sg_crc32c_table(crc, data, n);
}
#else
uint32_t sg_crc32c(uint32_t crc, const void *data, size_t n) { return sg_crc32c_table(crc, data, n); }
#endif
