/* cmd_serve.c: `smolgate serve`: the gateway (gateway.h). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "gateway/gateway.h"

static void serve_usage(FILE *f) {
    fputs("usage: smolgate serve [options]\n"
          "  -c, --config FILE    configuration file (docs/config.md); default: none, the embedded\n"
          "                       defaults (local models given with --model, and every provider\n"
          "                       whose API key is in the environment)\n"
          "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080)\n"
          "  --model PATH         serve a GGUF file or Hugging Face folder as local/NAME\n"
          "                       (repeatable; NAME=PATH names it)\n"
          "  --check              validate the configuration, print a summary, exit\n", f);
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
        else if (!strcmp(a, "--model") && v) {
            if (n_models == sizeof models / sizeof models[0]) { fputs("smolgate: too many --model\n", stderr); return 2; }
            models[n_models++] = v;
            i++;
        } else {
            fprintf(stderr, "smolgate: serve: unknown or incomplete option %s\n", a);
            serve_usage(stderr);
            return 2;
        }
    }
    o.overrides.model_paths = models;
    o.overrides.n_model_paths = n_models;
    sg_error err;
    if (gateway_serve(&o, &err)) {
        fprintf(stderr, "smolgate: %s\n", err.msg);
        return 1;
    }
    if (o.check) fputs("configuration OK\n", stdout);
    return 0;
}
