/* cmd_quantize.c: `smolgate quantize MODEL OUT.gguf TYPE` (see engine/quantize.h). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "engine/quantize.h"

static const char quantize_usage_text[] =
    "usage: smolgate quantize MODEL OUT.gguf TYPE [options]\n"
    "  MODEL: a GGUF file or a Hugging Face folder\n"
    "  TYPE:  Q8_0, Q4_0, Q4_K_M, Q5_K_M or Q6_K, with llama.cpp's per-tensor recipes\n"
    "  -t, --threads N   threads (default: all CPUs; the file is the same either way)\n"
    "  -v, --verbose     print each tensor's type\n";

static void usage(FILE *f) {
    fputs(quantize_usage_text, f);
}

int cli_quantize(int argc, char **argv) {
    const char *pos[3] = {0};
    int npos = 0;
    quantize_params p = {0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) { p.verbose = true; continue; }
        if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            long n;
            if (cli_int(a, i + 1 < argc ? argv[i + 1] : NULL, 1, 1024, &n)) return 2;
            p.n_threads = (int)n;
            i++;
            continue;
        }
        if (a[0] == '-' && a[1]) { cli_unknown_option("quantize", a, quantize_usage_text); return 2; }
        if (npos == 3) { fprintf(stderr, "smolgate: unexpected argument %s\n", a); return 2; }
        pos[npos++] = a;
    }
    if (npos != 3) { usage(stderr); return 2; }
    int ft = quantize_ftype_from_name(pos[2]);
    if (ft < 0) {
        fprintf(stderr, "smolgate: type \"%s\" is not one of Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K\n", pos[2]);
        return 2;
    }
    p.ftype = (quantize_ftype)ft;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sg_error err = {{0}};
    if (quantize_model(pos[0], pos[1], &p, &err)) {
        fprintf(stderr, "smolgate: %s\n", err.msg);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct stat st;
    double mb = stat(pos[1], &st) == 0 ? (double)st.st_size / 1e6 : 0;
    fprintf(stderr, "wrote %s (%s, %.1f MB) in %.1f s\n", pos[1], quantize_ftype_name(p.ftype), mb,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
