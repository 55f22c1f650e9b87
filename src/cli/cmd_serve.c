/* cmd_serve.c: `smolgate serve`: the gateway (gateway.h). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "gateway/gateway.h"

static const char serve_usage_text[] =
    "usage: smolgate serve [options]\n"
    "  -c, --config FILE    configuration file (docs/config.md); default: none, the embedded\n"
    "                       defaults (local models given with --model, and every provider\n"
    "                       whose API key is in the environment)\n"
    "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080)\n"
    "  --model PATH         serve a GGUF file or Hugging Face folder as local/NAME\n"
    "                       (repeatable; NAME=PATH names it)\n"
    "  --parallel N         sequences the local models decode together (1 to 1024;\n"
    "                       default: the configuration's, else 4)\n"
    "  --check              validate the configuration, print a summary, exit\n"
    "With no --config and no --model, the local models in ./models/*.gguf and SmolLM\n"
    "snapshots in the Hugging Face cache are served.\n";

static void serve_usage(FILE *f) {
    fputs(serve_usage_text, f);
}

/* With no file and no --model, the embedded default serves the local models it finds:
 * models/NAME.gguf in the working folder, and SmolLM snapshots in the Hugging Face cache
 * ($HF_HOME/hub or ~/.cache/huggingface/hub). */
static size_t discover_models(char **out, size_t cap) {
    size_t n = 0;
    DIR *d = opendir("models");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < cap) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".gguf")) {
            out[n] = sg_xmalloc(l + 8);
            snprintf(out[n++], l + 8, "models/%s", e->d_name);
        }
    }
    if (d) closedir(d);
    char hub[4096];
    const char *hf = getenv("HF_HOME"), *home = getenv("HOME");
    if (hf) snprintf(hub, sizeof hub, "%s/hub", hf);
    else if (home) snprintf(hub, sizeof hub, "%s/.cache/huggingface/hub", home);
    else return n;
    d = opendir(hub);
    while (d && (e = readdir(d)) && n < cap) {
        if (strncmp(e->d_name, "models--HuggingFaceTB--SmolLM", 29)) continue;
        char snaps[4400];
        snprintf(snaps, sizeof snaps, "%s/%s/snapshots", hub, e->d_name);
        DIR *s2 = opendir(snaps);
        struct dirent *f;
        while (s2 && (f = readdir(s2)) && n < cap) {
            if (f->d_name[0] == '.') continue;
            char cfg[4800];
            struct stat st;
            snprintf(cfg, sizeof cfg, "%s/%s/config.json", snaps, f->d_name);
            if (stat(cfg, &st) == 0) {
                cfg[strlen(cfg) - strlen("/config.json")] = 0;
                out[n++] = sg_xstrdup(cfg);
                break;   /* one snapshot per repository */
            }
        }
        if (s2) closedir(s2);
    }
    if (d) closedir(d);
    return n;
}

int cli_serve(int argc, char **argv) {
    gateway_opts o;
    memset(&o, 0, sizeof o);
    const char *models[64];
    size_t n_models = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { serve_usage(stdout); return 0; }
        else if (!strcmp(a, "--check")) o.check = true;
        else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && v) { o.config_path = v; i++; }
        else if (!strcmp(a, "--listen") && v) { o.overrides.listen = v; i++; }
        else if (!strcmp(a, "--parallel") && v) {
            long n;
            if (cli_int(a, v, 1, 1024, &n)) return 2;
            o.overrides.parallel = (int)n;
            i++;
        }
        else if (!strcmp(a, "--model") && v) {
            if (n_models == sizeof models / sizeof models[0]) { fputs("smolgate: too many --model\n", stderr); return 2; }
            models[n_models++] = v;
            i++;
        } else {
            if (!strncmp(a, "--", 2) && strstr(serve_usage_text, a)) fprintf(stderr, "smolgate serve: %s needs a value\n", a);
            else cli_unknown_option("serve", a, serve_usage_text);
            return 2;
        }
    }
    char *found[16];
    size_t n_found = 0;
    if (!o.config_path && !n_models) {
        /* A file found by looking around is skipped when it does not load (a half-copied
         * download must not keep the gateway from starting); an explicit --model that
         * does not load stays an error. */
        n_found = discover_models(found, 16);
        for (size_t i = 0; i < n_found; i++) {
            sg_error merr = {{0}};
            sg_model *m = model_load(found[i], &merr);
            if (!m) {
                fprintf(stderr, "smolgate: warning: skipping a model file that does not load: %s\n", merr.msg);
                continue;
            }
            model_free(m);
            models[n_models++] = found[i];
            fprintf(stderr, "smolgate: serving the local model found at %s\n", found[i]);
        }
    }
    o.overrides.model_paths = models;
    o.overrides.n_model_paths = n_models;
    sg_error err;
    int rc = gateway_serve(&o, &err);
    for (size_t i = 0; i < n_found; i++) free(found[i]);
    if (rc) {
        fprintf(stderr, "smolgate: %s\n", err.msg);
        return 1;
    }
    if (o.check) fputs("configuration OK\n", stdout);
    return 0;
}
