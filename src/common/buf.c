/* buf.c: see buf.h. */
#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *sg_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fputs("smolgate: out of memory\n", stderr); abort(); }
    return p;
}
void *sg_xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) { fputs("smolgate: out of memory\n", stderr); abort(); }
    return p;
}
void *sg_xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) { fputs("smolgate: out of memory\n", stderr); abort(); }
    return p;
}
char *sg_xstrdup(const char *s) { return sg_xstrndup(s, strlen(s)); }
char *sg_xstrndup(const char *s, size_t n) {
    char *p = sg_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void sg_buf_init(sg_buf *b) { b->data = NULL; b->len = b->cap = 0; }
void sg_buf_free(sg_buf *b) { free(b->data); sg_buf_init(b); }
void sg_buf_reset(sg_buf *b) { b->len = 0; if (b->data) b->data[0] = 0; }

void sg_buf_grow(sg_buf *b, size_t need) {
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap *= 2;
    b->data = sg_xrealloc(b->data, cap);
    b->cap = cap;
}

void sg_buf_printf(sg_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sg_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

size_t sg_fmt_u64(char *out, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

size_t sg_fmt_i64(char *out, int64_t v) {
    if (v >= 0) return sg_fmt_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + sg_fmt_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

void sg_buf_json_str(sg_buf *b, const char *s, size_t n) {
    sg_buf_reserve(b, n + 2);
    sg_buf_putc(b, '"');
    sg_buf_json_escape(b, s, n);
    sg_buf_putc(b, '"');
}

void sg_buf_json_escape(sg_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sg_buf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': sg_buf_append(b, "\\\"", 2); break;
        case '\\': sg_buf_append(b, "\\\\", 2); break;
        case '\n': sg_buf_append(b, "\\n", 2); break;
        case '\r': sg_buf_append(b, "\\r", 2); break;
        case '\t': sg_buf_append(b, "\\t", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sg_buf_append(b, u, 6);
        }
        }
    }
    sg_buf_append(b, s + run, n - run);
}

char *sg_buf_steal(sg_buf *b) {
    char *p = b->data ? b->data : sg_xstrdup("");
    sg_buf_init(b);
    return p;
}
