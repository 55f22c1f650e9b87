/* log.c: see log.h. A single write() per line keeps lines whole across threads. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static sg_log_level g_level = SG_LOG_INFO;

void sg_log_set_level(sg_log_level level) { g_level = level; }
int sg_log_enabled(sg_log_level level) { return level >= g_level; }

void sg_log_init_from_env(void) {
    const char *v = getenv("SMOLGATE_LOG");
    if (!v) return;
    if (!strcmp(v, "debug")) g_level = SG_LOG_DEBUG;
    else if (!strcmp(v, "info")) g_level = SG_LOG_INFO;
    else if (!strcmp(v, "warn")) g_level = SG_LOG_WARN;
    else if (!strcmp(v, "error")) g_level = SG_LOG_ERROR;
}

enum { LOG_BUF = 64 * 1024, LOG_LINE = 2048 };
static __thread char t_buf[LOG_BUF];   /* sg_log_buffered's pending lines */
static __thread size_t t_len;

/* The line's time, "2026-12-08T00:42:52.206Z": the date and time of day formatted once a
 * second per thread (the request log writes a line per request). */
static size_t format_time(char *out) {
    static __thread time_t t_sec = -1;
    static __thread char t_prefix[32];
    static __thread size_t t_prefix_len;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != t_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        t_prefix_len = strftime(t_prefix, sizeof t_prefix, "%Y-%m-%dT%H:%M:%S", &tm);
        t_sec = tv.tv_sec;
    }
    memcpy(out, t_prefix, t_prefix_len);
    int ms = (int)(tv.tv_usec / 1000);
    char *p = out + t_prefix_len;
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    *p++ = 'Z';
    return (size_t)(p - out);
}

static const char *const k_level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

/* A line's "time LEVEL " into line; its length. */
static size_t format_prefix(char *line, sg_log_level level) {
    size_t n = format_time(line);
    line[n++] = ' ';
    size_t ln = strlen(k_level_names[level]);
    memcpy(line + n, k_level_names[level], ln);
    n += ln;
    line[n++] = ' ';
    return n;
}

/* Formats one line ("time LEVEL message\n") into line (LOG_LINE bytes); its length. */
static size_t format_line(char *line, sg_log_level level, const char *fmt, va_list ap) {
    size_t n = format_prefix(line, level);
    int m = vsnprintf(line + n, LOG_LINE - n, fmt, ap);
    n = (m < 0 || n + (size_t)m >= LOG_LINE - 1) ? LOG_LINE - 2 : n + (size_t)m;
    line[n++] = '\n';
    return n;
}

void sg_log_flush(void) {
    size_t off = 0;
    while (off < t_len) {
        ssize_t w = write(2, t_buf + off, t_len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    t_len = 0;
}

void sg_log_buffered(sg_log_level level, const char *fmt, ...) {
    if (level < g_level) return;
    if (t_len > LOG_BUF - LOG_LINE) sg_log_flush();
    va_list ap;
    va_start(ap, fmt);
    t_len += format_line(t_buf + t_len, level, fmt, ap);
    va_end(ap);
}

void sg_log_buffered_text(sg_log_level level, const char *msg, size_t len) {
    if (level < g_level) return;
    if (t_len > LOG_BUF - LOG_LINE) sg_log_flush();
    char *line = t_buf + t_len;
    size_t n = format_prefix(line, level);
    if (len > LOG_LINE - 2 - n) len = LOG_LINE - 2 - n;
    memcpy(line + n, msg, len);
    n += len;
    line[n++] = '\n';
    t_len += n;
}

void sg_log(sg_log_level level, const char *fmt, ...) {
    if (level < g_level) return;
    char line[LOG_LINE];
    va_list ap;
    va_start(ap, fmt);
    size_t n = format_line(line, level, fmt, ap);
    va_end(ap);
    ssize_t w = write(2, line, n);
    (void)w;
}
