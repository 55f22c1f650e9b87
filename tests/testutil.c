/* testutil.c: see testutil.h. */
#include "testutil.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int tu_passed, tu_failed, tu_skipped;
static const char *g_current;
static int g_current_failed;

void tu_check(int ok, const char *file, int line, const char *expr) {
    if (ok) { tu_passed++; return; }
    tu_failed++;
    if (g_current && !g_current_failed) fprintf(stderr, "FAIL %s\n", g_current);
    g_current_failed = 1;
    fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", file, line, expr);
}

void tu_run(const char *name, void (*fn)(void)) {
    g_current = name;
    g_current_failed = 0;
    fn();
    if (getenv("TU_VERBOSE") && !g_current_failed) fprintf(stderr, "ok   %s\n", name);
    g_current = NULL;
}

void tu_skip(const char *fmt, ...) {
    tu_skipped++;
    va_list ap;
    va_start(ap, fmt);
    printf("  skipped (%s): ", g_current ? g_current : "?");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

int tu_finish(const char *binary) {
    const char *base = strrchr(binary, '/');
    if (tu_skipped)
        printf("%s: %d passed, %d failed, %d skipped\n", base ? base + 1 : binary, tu_passed, tu_failed, tu_skipped);
    else
        printf("%s: %d passed, %d failed\n", base ? base + 1 : binary, tu_passed, tu_failed);
    return tu_failed ? 1 : (tu_passed ? 0 : 1);
}

const char *tu_shared(void) {
    const char *s = getenv("SMOLGATE_SHARED");
    return s ? s : "tests/data";
}

char *tu_path(const char *fmt, ...) {
    static char ring[8][1024];
    static int next;
    char *p = ring[next++ & 7];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, 1024, fmt, ap);
    va_end(ap);
    return p;
}

static char g_tmpdir[256];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

/* The scratch folder goes when the test binary exits (kept with TU_KEEP=1). */
static void remove_tmpdir(void) {
    if (g_tmpdir[0] && !getenv("TU_KEEP")) nftw(g_tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *tu_tmpdir(void) {
    if (!g_tmpdir[0]) {
        snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/smolgate-test-XXXXXX");
        if (!mkdtemp(g_tmpdir)) { perror("mkdtemp"); abort(); }
        atexit(remove_tmpdir);
    }
    return g_tmpdir;
}

void *tu_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); fclose(f); return NULL; }
    p[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return p;
}

int tu_write(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}
