/* util.c: helpers shared by the subcommands (cli.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

size_t cli_edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    size_t row[65];
    if (na > 64) na = 64;
    if (nb > 64) nb = 64;
    for (size_t j = 0; j <= nb; j++) row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

static int word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

const char *cli_did_you_mean(const char *word, const char *candidates) {
    static char best[65];
    const char *eq = strchr(word, '=');   /* --flag=value: the flag */
    size_t lw = eq ? (size_t)(eq - word) : strlen(word);
    size_t limit = lw <= 4 ? 1 : (lw + 2) / 3, best_d = limit + 1;
    for (const char *p = candidates; *p;) {
        if (!word_char(*p)) { p++; continue; }
        const char *st = p;
        while (*p && word_char(*p)) p++;
        size_t lc = (size_t)(p - st);
        while (lc > 1 && st[lc - 1] == '.') lc--;   /* the end of a sentence */
        if ((word[0] == '-') != (st[0] == '-') || lc == 0 || lc > 64) continue;
        if (st != candidates && st[-1] == '-') continue;   /* inside a word like a-b */
        size_t d = cli_edit_distance(word, lw, st, lc);
        if (d < best_d && d > 0) {
            best_d = d;
            memcpy(best, st, lc);
            best[lc] = 0;
        }
    }
    return best_d <= limit ? best : NULL;
}

void cli_unknown_option(const char *cmd, const char *arg, const char *usage_text) {
    const char *s = cli_did_you_mean(arg, usage_text);
    if (s) fprintf(stderr, "smolgate %s: unknown option %s (did you mean %s?)\n", cmd, arg, s);
    else fprintf(stderr, "smolgate %s: unknown option %s\n", cmd, arg);
    fprintf(stderr, "run `smolgate %s --help` for its options\n", cmd);
}
