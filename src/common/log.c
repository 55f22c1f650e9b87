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
