/* cmd_pull.c: `smolgate pull`, `smolgate list` and `smolgate rm`: models from the Hugging
 * Face hub and Ollama's registry, in the caches those tools use (hub.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "hub/hub.h"
#include "hub/hub_progress.h"

static const char names_help[] =
    "MODEL: smollm3                 ggml-org/SmolLM3-3B-GGUF, quant Q4_K_M\n"
    "       OWNER/REPO[:QUANT]      a Hugging Face repository: a GGUF file (QUANT, else\n"
    "                               Q4_K_M, else the first; every shard of a split model)\n"
    "                               or, without .gguf files, a safetensors model\n"
    "       ollama:NAME[:TAG]       a model of Ollama's registry (TAG default latest)\n";

static void pull_help(FILE *f) {
    fprintf(f, "usage: smolgate pull MODEL [-q]\n%s"
               "Files go to the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else\n"
               "~/.cache/huggingface/hub) or Ollama's store ($OLLAMA_MODELS, else ~/.ollama/models);\n"
               "files already there are not fetched again. Prints the model's path on stdout.\n"
               "  -q, --quiet   no progress on stderr\n"
               "Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN (gated and\n"
               "private repositories), SMOLGATE_OLLAMA_REGISTRY (default https://registry.ollama.ai).\n",
            names_help);
}

int cli_pull(int argc, char **argv) {
    const char *name = NULL;
    hub_pull_opts opts = {.tty = isatty(2)};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { pull_help(stdout); return 0; }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) opts.quiet = 1;
        else if (a[0] == '-' || name) {
            fprintf(stderr, "smolgate pull: unexpected argument %s\n", a);
            pull_help(stderr);
            return 2;
        } else name = a;
    }
    if (!name) { pull_help(stderr); return 2; }
    sg_error err = {{0}};
    char *path = hub_pull(name, &opts, &err);
    if (!path) {
        fprintf(stderr, "smolgate pull: %s\n", err.msg);
        return 1;
    }
    printf("%s\n", path);
    free(path);
    return 0;
}

int cli_list(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            puts("usage: smolgate list\n"
                 "Every pulled model: the Hugging Face cache (GGUF files and safetensors snapshots)\n"
                 "and Ollama's store, with its name, size, quant and path.");
            return 0;
        }
        fprintf(stderr, "smolgate list: unexpected argument %s\n", argv[i]);
        return 2;
    }
    hub_model *m;
    size_t n;
    sg_error err;
    if (hub_list(&m, &n, &err)) { fprintf(stderr, "smolgate list: %s\n", err.msg); return 1; }
    int w = 4;
    for (size_t i = 0; i < n; i++) if ((int)strlen(m[i].name) > w) w = (int)strlen(m[i].name);
    printf("%-*s  %9s  %-8s  %s\n", w, "NAME", "SIZE", "QUANT", "PATH");
    for (size_t i = 0; i < n; i++) {
        char size[32];
        hub_format_bytes((double)m[i].size, size, sizeof size);
        printf("%-*s  %9s  %-8s  %s\n", w, m[i].name, size, m[i].quant, m[i].path);
    }
    hub_models_free(m, n);
    return 0;
}

int cli_rm(int argc, char **argv) {
    if (argc == 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
        printf("usage: smolgate rm MODEL...\n%s"
               "Removes the model's files (for OWNER/REPO:QUANT only that quant's files; for\n"
               "OWNER/REPO the whole repository) and every blob nothing else uses.\n", names_help);
        return 0;
    }
    if (argc < 1) { fputs("usage: smolgate rm MODEL...\n", stderr); return 2; }
    int rc = 0;
    for (int i = 0; i < argc; i++) {
        uint64_t freed = 0;
        sg_error err;
        if (hub_remove(argv[i], &freed, &err)) {
            fprintf(stderr, "smolgate rm: %s\n", err.msg);
            rc = 1;
            continue;
        }
        char b[32];
        hub_format_bytes((double)freed, b, sizeof b);
        printf("removed %s (%s freed)\n", argv[i], b);
    }
    return rc;
}
