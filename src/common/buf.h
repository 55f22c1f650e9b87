/* buf.h: a growable byte buffer, always NUL-terminated so it can be used as a string.
 * Allocation failure aborts (there is no sensible recovery from OOM mid-request). */
#ifndef SG_BUF_H
#define SG_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct sg_buf {
    char  *data;
    size_t len;
    size_t cap;
} sg_buf;

void sg_buf_init(sg_buf *b);
void sg_buf_free(sg_buf *b);
void sg_buf_reset(sg_buf *b);                        /* len = 0, keeps the memory */
/* The slow path of sg_buf_reserve: grows the memory to hold need bytes. */
void sg_buf_grow(sg_buf *b, size_t need);

/* Inline: JSON rendering and the trace encoder append a few bytes at a time, and a call
 * per append cost them more than the copying. */
static inline void sg_buf_reserve(sg_buf *b, size_t extra) {   /* room for len + extra + NUL */
    if (b->len + extra + 1 > b->cap) sg_buf_grow(b, b->len + extra + 1);
}
static inline void sg_buf_append(sg_buf *b, const void *p, size_t n) {
    sg_buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}
static inline void sg_buf_puts(sg_buf *b, const char *s) { sg_buf_append(b, s, strlen(s)); }
static inline void sg_buf_putc(sg_buf *b, char c) {
    sg_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = 0;
}
void sg_buf_printf(sg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included. */
void sg_buf_json_str(sg_buf *b, const char *s, size_t n);
/* The same without the quotes (a string written in pieces). */
void sg_buf_json_escape(sg_buf *b, const char *s, size_t n);

/* v in decimal at out, without printf (hot paths write numbers a few at a time): its
 * length, at most 20 (u64) or 20 with the sign (i64); no NUL. */
size_t sg_fmt_u64(char *out, uint64_t v);
size_t sg_fmt_i64(char *out, int64_t v);
static inline void sg_buf_put_u64(sg_buf *b, uint64_t v) {
    sg_buf_reserve(b, 20);
    b->len += sg_fmt_u64(b->data + b->len, v);
    b->data[b->len] = 0;
}
static inline void sg_buf_put_i64(sg_buf *b, int64_t v) {
    sg_buf_reserve(b, 20);
    b->len += sg_fmt_i64(b->data + b->len, v);
    b->data[b->len] = 0;
}
/* Hands the memory to the caller (who frees it) and resets b. */
char *sg_buf_steal(sg_buf *b);

/* Allocation helpers that abort on OOM. */
void *sg_xmalloc(size_t n);
void *sg_xcalloc(size_t count, size_t size);
void *sg_xrealloc(void *p, size_t n);
char *sg_xstrdup(const char *s);
char *sg_xstrndup(const char *s, size_t n);

#endif
