/* sse.c: see sse.h. Complete lines are processed in place from the caller's bytes; only
 * a line cut by the end of a feed is copied (into p->line) to wait for the rest. */
#include "gateway/sse.h"

#include <string.h>

void sse_init(sse_parser *p, size_t max_event, sse_event_fn fn, void *ctx) {
    memset(p, 0, sizeof *p);
    p->fn = fn;
    p->ctx = ctx;
    p->max_event = max_event ? max_event : SSE_DEFAULT_MAX_EVENT;
    sg_buf_init(&p->line);
    sg_buf_init(&p->event);
    sg_buf_init(&p->data);
}

void sse_free(sse_parser *p) {
    sg_buf_free(&p->line);
    sg_buf_free(&p->event);
    sg_buf_free(&p->data);
}

static void reset_event(sse_parser *p) {
    sg_buf_reset(&p->event);
    sg_buf_reset(&p->data);
    p->has_data = p->has_event = false;
}

static int fail(sse_parser *p, sg_error *err, const char *msg) {
    p->failed = true;
    return sg_fail(err, "%s", msg);
}

/* A line or an event over max_event: the bound says which. */
static int fail_size(sse_parser *p, sg_error *err, const char *what) {
    p->failed = true;
    p->too_large = true;
    return sg_fail(err, "SSE %s larger than %zu bytes", what, p->max_event);
}

/* One complete line, without its terminator. */
static int process_line(sse_parser *p, const char *s, size_t n, sg_error *err) {
    if (n == 0) {   /* blank line: dispatch */
        if (p->has_data || p->has_event) {
            /* make sure both are NUL-terminated even when empty */
            sg_buf_reserve(&p->event, 0);
            sg_buf_reserve(&p->data, 0);
            p->event.data[p->event.len] = 0;
            p->data.data[p->data.len] = 0;
            int rc = p->fn(p->ctx, p->event.data, p->data.data, p->data.len);
            reset_event(p);
            if (rc) return fail(p, err, "SSE consumer stopped");
        }
        return 0;
    }
    if (s[0] == ':') return 0;   /* comment */
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = (size_t)(s + n - v);
    if (vlen && v[0] == ' ') { v++; vlen--; }
    if (flen == 4 && memcmp(s, "data", 4) == 0) {
        if (p->event.len + p->data.len + vlen + 1 > p->max_event) return fail_size(p, err, "event");
        if (p->has_data) sg_buf_putc(&p->data, '\n');
        sg_buf_append(&p->data, v, vlen);
        p->has_data = true;
    } else if (flen == 5 && memcmp(s, "event", 5) == 0) {
        if (vlen + p->data.len > p->max_event) return fail_size(p, err, "event");
        sg_buf_reset(&p->event);
        sg_buf_append(&p->event, v, vlen);
        p->has_event = true;
    }
    /* id, retry and unknown fields are ignored */
    return 0;
}

int sse_feed(sse_parser *p, const void *bytes, size_t n, sg_error *err) {
    if (p->failed) return sg_fail(err, "SSE parser failed earlier");
    const char *s = bytes, *end = s + n;
    if (!p->started) {
        /* skip a BOM (EF BB BF), which may itself be split across feeds */
        static const char bom[3] = {(char)0xEF, (char)0xBB, (char)0xBF};
        while (s < end && p->bom_seen < 3 && *s == bom[p->bom_seen]) { s++; p->bom_seen++; }
        if (s == end && p->bom_seen < 3) return 0;   /* maybe more BOM next time */
        if (p->bom_seen > 0 && p->bom_seen < 3) {
            /* not a BOM after all: those bytes were data */
            sg_buf_append(&p->line, bom, p->bom_seen);
        }
        p->started = true;
    }
    if (p->cr_pending && s < end) {
        p->cr_pending = false;
        if (*s == '\n') s++;
    }
    while (s < end) {
        /* the line ends at the first CR or LF */
        const char *lf = memchr(s, '\n', (size_t)(end - s));
        const char *stop = lf ? lf : end;
        const char *cr = memchr(s, '\r', (size_t)(stop - s));
        const char *eol = cr ? cr : lf;
        if (!eol) {   /* partial line: keep it for the next feed */
            if (p->line.len + (size_t)(end - s) > p->max_event) return fail_size(p, err, "line");
            sg_buf_append(&p->line, s, (size_t)(end - s));
            return 0;
        }
        int rc;
        if (p->line.len) {
            if (p->line.len + (size_t)(eol - s) > p->max_event) return fail_size(p, err, "line");
            sg_buf_append(&p->line, s, (size_t)(eol - s));
            rc = process_line(p, p->line.data, p->line.len, err);
            sg_buf_reset(&p->line);
        } else {
            if ((size_t)(eol - s) > p->max_event) return fail_size(p, err, "line");
            rc = process_line(p, s, (size_t)(eol - s), err);
        }
        if (rc) return -1;
        s = eol + 1;
        if (*eol == '\r') {
            if (s < end) { if (*s == '\n') s++; }
            else p->cr_pending = true;
        }
    }
    return 0;
}

int sse_finish(sse_parser *p) {
    if (p->failed) return -1;
    return (p->line.len || p->has_data || p->has_event || (p->bom_seen && !p->started)) ? 1 : 0;
}

void sse_write(sg_buf *out, const char *name, const char *data, size_t len) {
    if (name) {
        sg_buf_puts(out, "event: ");
        sg_buf_puts(out, name);
        sg_buf_putc(out, '\n');
    }
    /* one data line per line of data (our JSON has none, but text might); CRLF, LF and a
     * bare CR each end a line, as they do for the reader */
    if (len == 0 || (!memchr(data, '\n', len) && !memchr(data, '\r', len))) {   /* the usual case */
        sg_buf_reserve(out, len + 8);
        sg_buf_append(out, "data: ", 6);
        sg_buf_append(out, data, len);
        sg_buf_append(out, "\n\n", 2);
        return;
    }
    size_t i = 0, start = 0;
    for (;;) {
        if (i == len || data[i] == '\n' || data[i] == '\r') {
            sg_buf_append(out, "data: ", 6);
            sg_buf_append(out, data + start, i - start);
            sg_buf_putc(out, '\n');
            if (i == len) break;
            if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n') i++;
            start = ++i;
            continue;
        }
        i++;
    }
    sg_buf_putc(out, '\n');
}
