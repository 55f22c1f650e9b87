/* cmd_serve.c: `smolgate serve`: the gateway (gateway.h). */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "engine/speculate.h"
#include "gateway/gateway.h"
#include "hub/hub.h"

static const char serve_usage_text[] =
    "usage: smolgate serve [options]\n"
    "  -c, --config FILE    configuration file (docs/config.md); default: none, the embedded\n"
    "                       defaults (local models given with --model, and every provider\n"
    "                       whose API key is in the environment)\n"
    "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080)\n"
    "  --model PATH         serve a GGUF file or Hugging Face folder as local/NAME\n"
    "                       (repeatable; NAME=PATH names it), or a pulled model by its\n"
    "                       name (smollm3, OWNER/REPO:QUANT, ollama:NAME; smolgate list)\n"
    "  --parallel N         sequences the local models decode together (1 to 1024;\n"
    "                       default: the configuration's, else 4)\n"
    "  --draft N            speculative decoding: tokens the local models draft per\n"
    "                       sequence and step by prompt lookup, at most (0 to 14;\n"
    "                       default: the configuration's, else 8)\n"
    "  --no-speculate       speculative decoding off (--draft 0)\n"
    "  --check              validate the configuration, print a summary, exit\n"
    "With no --config and no --model, the local models in ./models/*.gguf and every\n"
    "pulled model (smolgate pull; the Hugging Face cache and Ollama's store) are served;\n"
    "a SmolLM3 among them also answers to the name smollm3.\n";

static void serve_usage(FILE *f) {
    fputs(serve_usage_text, f);
}

/* name into out as a served model name: lowercase, [a-z0-9._-], anything else '-'. */
static void served_name(const char *name, char *out, size_t cap) {
    size_t o = 0;
    for (; *name && o + 1 < cap; name++) {
        unsigned char c = (unsigned char)tolower((unsigned char)*name);
        out[o++] = isalnum(c) || c == '.' || c == '_' || c == '-' ? (char)c : '-';
    }
    out[o] = 0;
}

/* A served name for a pulled model: the repository's name without its owner and a
 * "-GGUF" suffix, then the quant: ggml-org/SmolLM3-3B-GGUF:Q4_K_M -> smollm3-3b-q4_k_m;
 * ollama:library/smollm3:latest -> smollm3-latest. Lowercase, [a-z0-9._-]. */
static void pulled_model_name(const hub_model *hm, char *out, size_t cap) {
    const char *n = hm->name;
    if (!strncmp(n, "ollama:", 7)) n += 7;
    const char *slash = strrchr(n, '/');
    served_name(slash ? slash + 1 : n, out, cap);
    char *gg = strstr(out, "-gguf");
    if (gg && (gg[5] == 0 || gg[5] == '-')) memmove(gg, gg + 5, strlen(gg + 5) + 1);
    if (!strcmp(hm->format, "gguf") && hm->quant && strcmp(hm->quant, "?") && !strchr(hm->name, ':')) {
        size_t l = strlen(out);
        snprintf(out + l, cap - l, "-%s", hm->quant);
        for (char *q = out + l; *q; q++) *q = (char)tolower((unsigned char)*q);
    }
}

/* With no file and no --model, the embedded default serves the local models it finds:
 * models/NAME.gguf in the working folder, and every model pulled into the Hugging Face
 * cache or Ollama's store (hub.h). Entries are "NAME=PATH". */
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
    hub_model *hm = NULL;
    size_t n_hm = 0;
    sg_error err = {{0}};
    if (hub_list(&hm, &n_hm, &err)) return n;
    for (size_t i = 0; i < n_hm && n < cap; i++) {
        char name[129];
        pulled_model_name(&hm[i], name, sizeof name);
        if (!name[0]) continue;
        size_t l = strlen(name) + strlen(hm[i].path) + 2;
        out[n] = sg_xmalloc(l);
        snprintf(out[n++], l, "%s=%s", name, hm[i].path);
    }
    hub_models_free(hm, n_hm);
    return n;
}

/* --model NAME: a path, else a pulled model's name ("smollm3", "OWNER/REPO:QUANT",
 * "ollama:NAME"), served under that name's last part. Returns a new "NAME=PATH" string,
 * or NULL to use the argument as it is. */
static char *resolve_model_arg(const char *arg) {
    if (strchr(arg, '=') || !access(arg, F_OK)) return NULL;
    char *path = hub_resolve(arg, NULL);
    if (!path) return NULL;
    const char *n = strncmp(arg, "ollama:", 7) ? arg : arg + 7;
    const char *slash = strrchr(n, '/');
    char name[129];
    served_name(slash ? slash + 1 : n, name, sizeof name);
    size_t l = strlen(name) + strlen(path) + 2;
    char *out = sg_xmalloc(l);
    snprintf(out, l, "%s=%s", name, path);
    free(path);
    return out;
}

int cli_serve(int argc, char **argv) {
    gateway_opts o;
    memset(&o, 0, sizeof o);
    const char *models[64];
    size_t n_models = 0;
    char *found[64];   /* strings made here (pulled models' NAME=PATH), freed at the end */
    size_t n_found = 0;
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
        else if (!strcmp(a, "--draft") && v) {
            long n;
            if (cli_int(a, v, 0, SPEC_MAX_DRAFT, &n)) return 2;
            o.overrides.draft = (int)n + 1;
            i++;
        }
        else if (!strcmp(a, "--no-speculate")) o.overrides.draft = 1;
        else if (!strcmp(a, "--model") && v) {
            if (n_models == sizeof models / sizeof models[0]) { fputs("smolgate: too many --model\n", stderr); return 2; }
            char *pulled = resolve_model_arg(v);
            if (pulled) found[n_found++] = pulled;
            models[n_models++] = pulled ? pulled : v;
            i++;
        } else {
            if (!strncmp(a, "--", 2) && strstr(serve_usage_text, a)) fprintf(stderr, "smolgate serve: %s needs a value\n", a);
            else cli_unknown_option("serve", a, serve_usage_text);
            return 2;
        }
    }
    if (!o.config_path && !n_models) {
        /* A file found by looking around is skipped when it does not load (a half-copied
         * download must not keep the gateway from starting); an explicit --model that
         * does not load stays an error. */
        n_found = discover_models(found, 16);
        for (size_t i = 0; i < n_found; i++) {
            sg_error merr = {{0}};
            const char *eq = strchr(found[i], '='), *path = eq && (!strchr(found[i], '/') || eq < strchr(found[i], '/')) ? eq + 1 : found[i];
            sg_model *m = model_load(path, &merr);
            if (!m) {
                fprintf(stderr, "smolgate: warning: skipping a model file that does not load: %s\n", merr.msg);
                continue;
            }
            model_free(m);
            models[n_models++] = found[i];
            fprintf(stderr, "smolgate: serving the local model found at %s\n", path);
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
