/* error.h: errors are values. A function that can fail returns 0 on success and -1 on
 * failure, after writing a one-line message into the caller's sg_error (which may be NULL
 * when the caller does not care why). Nothing outside main() exits the process. */
#ifndef SG_ERROR_H
#define SG_ERROR_H

#include <stddef.h>

typedef struct sg_error {
    char msg[512];
} sg_error;

/* Formats the message into err (if not NULL) and returns -1, so that a failing path
 * reads `return sg_fail(err, "bad magic in %s", path);`. */
int sg_fail(sg_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message with more context ("loading x.gguf: " + old). */
int sg_fail_wrap(sg_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
