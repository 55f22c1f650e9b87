/* log.h: one-line structured logs on stderr ("2026-11-25T20:53:38.123Z INFO msg").
 * The level is set once at start-up (SMOLGATE_LOG=debug|info|warn|error, default info).
 * Never pass a secret to these functions: provider and gateway keys stay out of logs. */
#ifndef SG_LOG_H
#define SG_LOG_H

#include <stddef.h>

typedef enum { SG_LOG_DEBUG, SG_LOG_INFO, SG_LOG_WARN, SG_LOG_ERROR } sg_log_level;

void sg_log_set_level(sg_log_level level);
void sg_log_init_from_env(void);
int  sg_log_enabled(sg_log_level level);
void sg_log(sg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* For an event loop thread: the line goes into a per-thread buffer that sg_log_flush()
 * writes out (the loop calls it once per iteration), so a busy server makes one write()
 * per iteration instead of one per request. Lines stay whole and in order. */
void sg_log_buffered(sg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with a message already formatted (len bytes, cut at the line's limit): the
 * request log builds its line without printf. */
void sg_log_buffered_text(sg_log_level level, const char *msg, size_t len);
void sg_log_flush(void);

#define SG_DEBUG(...) do { if (sg_log_enabled(SG_LOG_DEBUG)) sg_log(SG_LOG_DEBUG, __VA_ARGS__); } while (0)
#define SG_INFO(...)  sg_log(SG_LOG_INFO, __VA_ARGS__)
#define SG_WARN(...)  sg_log(SG_LOG_WARN, __VA_ARGS__)
#define SG_ERROR(...) sg_log(SG_LOG_ERROR, __VA_ARGS__)

#endif
