/* util.c: helpers shared by the subcommands (cli.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "common/buf.h"

int cli_parse_ids(const char *s, sg_ids *out) {
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) return -1;
        sg_ids_push(out, (int32_t)v);
        s = end;
        while (*s == ' ') s++;
        if (*s == ',') s++;
        else if (*s) return -1;
        while (*s == ' ') s++;
    }
    return out->n ? 0 : -1;
}

void cli_print_ids(const int32_t *ids, size_t n) {
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
    puts("]");
}

char *cli_read_stdin(size_t *len) {
    sg_buf b;
    sg_buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) sg_buf_append(&b, chunk, n);
    *len = b.len;
    return sg_buf_steal(&b);
}

int cli_int(const char *opt, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "smolgate: %s needs an integer in [%ld, %ld]\n", opt, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_float(const char *opt, const char *v, double *out) {
    char *end;
    double x = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end) {
        fprintf(stderr, "smolgate: %s needs a number\n", opt);
        return -1;
    }
    *out = x;
    return 0;
}
