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

/* Formats one line ("time LEVEL message\n") into line; returns its length. */
static size_t format_line(char *line, sg_log_level level, const char *fmt, va_list ap) {
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, LOG_LINE, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, LOG_LINE - (size_t)n, ".%03dZ %s ", (int)(tv.tv_usec / 1000), names[level]);
    int m = vsnprintf(line + n, LOG_LINE - (size_t)n, fmt, ap);
    n = (m < 0 || (size_t)(n + m) >= LOG_LINE - 1) ? LOG_LINE - 2 : n + m;
    line[n++] = '\n';
    return (size_t)n;
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

void sg_log(sg_log_level level, const char *fmt, ...) {
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < g_level) return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03dZ %s ", (int)(tv.tv_usec / 1000), names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    n = (m < 0 || (size_t)(n + m) >= sizeof line - 1) ? (int)sizeof line - 2 : n + m;
    line[n++] = '\n';
    ssize_t w = write(2, line, (size_t)n);
    (void)w;
}
