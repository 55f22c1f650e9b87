/* testutil.h: the tiny harness every unit test uses. A test binary calls TEST(name) blocks
 * through tu_run, counts each CHECK, and ends with tu_finish(), which prints
 * "<binary>: N passed, N failed" and returns the exit status. Tests run from the
 * repository root; tests/data (or $SMOLGATE_SHARED) holds the reference data in reference/:
 * a copy of the random-weight models and transformers / llama.cpp outputs, see its README. */
#ifndef SG_TESTUTIL_H
#define SG_TESTUTIL_H

#include <stdio.h>
#include <string.h>

extern int tu_passed, tu_failed, tu_skipped;

void tu_check(int ok, const char *file, int line, const char *expr);
#define CHECK(cond) tu_check(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_MSG(cond, ...) do { int ok_ = !!(cond); tu_check(ok_, __FILE__, __LINE__, #cond); \
        if (!ok_) { fprintf(stderr, "    "); fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
        CHECK_MSG(a_ == b_, "%s = %lld, expected %lld", #a, a_, b_); } while (0)
#define CHECK_EQ_STR(a, b) do { const char *a_ = (a), *b_ = (b); \
        CHECK_MSG(a_ && b_ && strcmp(a_, b_) == 0, "%s = \"%s\", expected \"%s\"", #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)

/* Runs one named test function, printing its name when it fails. */
void tu_run(const char *name, void (*fn)(void));
#define RUN(fn) tu_run(#fn, fn)
/* A group of checks that cannot run on this machine (a CPU without the instructions it
 * tests): counted and printed with its reason, never passed silently. */
void tu_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "<binary>: N passed, N failed" (", N skipped" when any were). */
int tu_finish(const char *binary);

/* Paths. */
const char *tu_shared(void);                 /* "tests/data" unless $SMOLGATE_SHARED says */
char *tu_path(const char *fmt, ...);         /* formatted path; static buffer ring */
const char *tu_tmpdir(void);                 /* a fresh directory, removed at exit */
/* Reads a whole file; returns NULL if missing. */
void *tu_read(const char *path, size_t *len);
/* Writes bytes to a file; returns 0 on success. */
int tu_write(const char *path, const void *data, size_t len);

#endif
