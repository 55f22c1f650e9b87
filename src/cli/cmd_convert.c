/* cmd_convert.c: `smolgate convert` (a model to GGUF or a Hugging Face folder, in
 * another type) and `smolgate make-model` (a random-weight model of any shape). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "engine/export.h"
#include "engine/model.h"

static int parse_type(const char *s, sg_dtype *out) {
    int t = dtype_from_name(s);
    if (t != SG_F32 && t != SG_F16 && t != SG_BF16 && t != SG_Q8_0) {
        fprintf(stderr, "smolgate: type \"%s\" is not one of F32, F16, BF16, Q8_0\n", s);
        return -1;
    }
    *out = (sg_dtype)t;
    return 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

int cli_convert(int argc, char **argv) {
    bool help = argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"));
    if (argc < 2 || help) {
        fputs("usage: smolgate convert MODEL OUT [TYPE]\n"
              "  MODEL: a Hugging Face folder or a GGUF file; OUT: NAME.gguf, or a folder for\n"
              "  Hugging Face output; TYPE: F32, F16, BF16 or Q8_0 (GGUF only); default F16\n", help ? stdout : stderr);
        return help ? 0 : 2;
    }
    sg_dtype type = SG_F16;
    if (argc >= 3 && parse_type(argv[2], &type)) return 2;
    sg_error err = {{0}};
    sg_model *m = model_load(argv[0], &err);
    if (!m) { fprintf(stderr, "smolgate: %s\n", err.msg); return 1; }
    exp_source src;
    export_model_source(&src, m);
    struct stat st;
    char tokdir[4096];
    snprintf(tokdir, sizeof tokdir, "%s/tokenizer.json", argv[0]);
    if (m->src == MODEL_SRC_HF && stat(tokdir, &st) == 0) src.tokenizer_dir = argv[0];
    const char *base = strrchr(argv[0], '/');
    src.name = base && base[1] ? base + 1 : argv[0];
    int rc = ends_with(argv[1], ".gguf") ? export_gguf(&src, type, argv[1], &err) : export_hf(&src, type, argv[1], &err);
    if (rc) fprintf(stderr, "smolgate: %s\n", err.msg);
    else fprintf(stderr, "wrote %s (%s)\n", argv[1], dtype_info(type)->name);
    model_free(m);
    return rc ? 1 : 0;
}

static const char make_model_usage_text[] =
    "usage: smolgate make-model OUT [options]\n"
    "  OUT ending in .gguf writes GGUF, anything else a Hugging Face folder\n"
    "  --preset NAME      smollm3-3b (default), smollm3-tiny, llama-tiny, smollm2-135m\n"
    "  --arch smollm3|llama  --vocab N  --hidden N  --layers N  --heads N  --kv-heads N\n"
    "  --ffn N  --ctx N  --theta X  --eps X  --untied\n"
    "  --type F32|F16|BF16|Q8_0   weight type (default F16; Q8_0 for GGUF only)\n"
    "  --seed N           random seed (default 1): same seed, same file\n"
    "  --tokenizer DIR    folder with tokenizer.json to embed\n";

static void make_model_usage(void) {
    fputs(make_model_usage_text, stderr);
}

static const char preset_names[] = "smollm3-3b smollm3-tiny llama-tiny smollm2-135m";

/* Fills c with the named shape; -1 for a name that is not one. */
static int preset(sg_model_config *c, const char *name) {
    if (!strcmp(name, "smollm3-tiny")) {
        *c = (sg_model_config){.arch = "smollm3", .n_vocab = 1024, .dim = 256, .n_layers = 4, .n_heads = 8,
                               .n_kv_heads = 2, .head_dim = 32, .ffn_dim = 512, .max_ctx = 4096, .norm_eps = 1e-6f,
                               .rope_theta = 10000, .tied_embeddings = true};
    } else if (!strcmp(name, "llama-tiny")) {
        *c = (sg_model_config){.arch = "llama", .n_vocab = 1024, .dim = 256, .n_layers = 3, .n_heads = 4,
                               .n_kv_heads = 2, .head_dim = 64, .ffn_dim = 512, .max_ctx = 2048, .norm_eps = 1e-5f,
                               .rope_theta = 10000, .tied_embeddings = true};
    } else if (!strcmp(name, "smollm2-135m")) {
        *c = (sg_model_config){.arch = "llama", .n_vocab = 49152, .dim = 576, .n_layers = 30, .n_heads = 9,
                               .n_kv_heads = 3, .head_dim = 64, .ffn_dim = 1536, .max_ctx = 8192, .norm_eps = 1e-5f,
                               .rope_theta = 100000, .tied_embeddings = true};
    } else if (!strcmp(name, "smollm3-3b")) {
        *c = (sg_model_config){.arch = "smollm3", .n_vocab = 128256, .dim = 2048, .n_layers = 36, .n_heads = 16,
                               .n_kv_heads = 4, .head_dim = 128, .ffn_dim = 11008, .max_ctx = 65536, .norm_eps = 1e-6f,
                               .rope_theta = 5000000, .tied_embeddings = true};
    } else {
        return -1;
    }
    c->bos_id = c->eos_id = -1;
    return 0;
}

int cli_make_model(int argc, char **argv) {
    const char *out = NULL, *tokdir = NULL;
    sg_model_config c;
    preset(&c, "smollm3-3b");
    sg_dtype type = SG_F16;
    exp_random rnd = {.seed = 1};
    bool vocab_set = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l;
        double d;
        int *ip = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { make_model_usage(); return 0; }
        if (!strcmp(a, "--untied")) { c.tied_embeddings = false; continue; }
        if (a[0] != '-') {
            if (out) { fprintf(stderr, "smolgate: unexpected argument %s\n", a); return 2; }
            out = a;
            continue;
        }
        if (!v) { fprintf(stderr, "smolgate: %s needs a value\n", a); return 2; }
        i++;
        if (!strcmp(a, "--preset")) {
            if (preset(&c, v)) {
                const char *near = cli_did_you_mean(v, preset_names);
                fprintf(stderr, "smolgate make-model: unknown preset \"%s\"%s%s%s; presets: %s\n", v,
                        near ? " (did you mean " : "", near ? near : "", near ? "?)" : "", preset_names);
                return 2;
            }
            vocab_set = false;
        }
        else if (!strcmp(a, "--arch")) {
            if (strcmp(v, "smollm3") && strcmp(v, "llama")) { fprintf(stderr, "smolgate: --arch is smollm3 or llama\n"); return 2; }
            snprintf(c.arch, sizeof c.arch, "%s", v);
        }
        else if (!strcmp(a, "--type")) { if (parse_type(v, &type)) return 2; }
        else if (!strcmp(a, "--seed")) { if (cli_int(a, v, 0, 0x7fffffffL, &l)) return 2; rnd.seed = (uint64_t)l; }
        else if (!strcmp(a, "--tokenizer")) tokdir = v;
        else if (!strcmp(a, "--theta")) { if (cli_float(a, v, &d)) return 2; c.rope_theta = d; }
        else if (!strcmp(a, "--eps")) { if (cli_float(a, v, &d)) return 2; c.norm_eps = (float)d; }
        else {
            if (!strcmp(a, "--vocab")) { ip = &c.n_vocab; vocab_set = true; }
            else if (!strcmp(a, "--hidden")) ip = &c.dim;
            else if (!strcmp(a, "--layers")) ip = &c.n_layers;
            else if (!strcmp(a, "--heads")) ip = &c.n_heads;
            else if (!strcmp(a, "--kv-heads")) ip = &c.n_kv_heads;
            else if (!strcmp(a, "--ffn")) ip = &c.ffn_dim;
            else if (!strcmp(a, "--ctx")) ip = &c.max_ctx;
            else if (!strcmp(a, "--head-dim")) ip = &c.head_dim;
            else { cli_unknown_option("make-model", a, make_model_usage_text); return 2; }
            if (cli_int(a, v, 1, 1 << 24, &l)) return 2;
            *ip = (int)l;
            if (ip == &c.dim || ip == &c.n_heads) c.head_dim = c.dim / c.n_heads;
        }
    }
    if (!out) { make_model_usage(); return 2; }
    if (c.n_heads <= 0 || c.dim % c.n_heads || c.n_heads % c.n_kv_heads || c.head_dim % 2) {
        fprintf(stderr, "smolgate: inconsistent shape: hidden %d, heads %d, kv heads %d\n", c.dim, c.n_heads, c.n_kv_heads);
        return 2;
    }
    if (tokdir) {   /* a tokenizer with more ids than the vocabulary would be cut short */
        sg_error terr = {{0}};
        int n_ids = export_tokenizer_ids(tokdir, &terr);
        if (n_ids < 0) { fprintf(stderr, "smolgate make-model: %s\n", terr.msg); return 2; }
        if (n_ids > c.n_vocab) {
            fprintf(stderr, "smolgate make-model: the tokenizer in %s has %d token ids but the vocabulary is %d%s; "
                    "pass --vocab %d\n", tokdir, n_ids, c.n_vocab, vocab_set ? "" : " (the preset's)", n_ids);
            return 2;
        }
    }
    c.rope_layer = sg_xcalloc((size_t)c.n_layers, 1);
    for (int l = 0; l < c.n_layers; l++) c.rope_layer[l] = strcmp(c.arch, "smollm3") ? 1 : ((l + 1) % 4 != 0);
    exp_source src;
    export_random_source(&src, &c, &rnd);
    src.tokenizer_dir = tokdir;
    src.name = "smolgate-random";
    sg_error err = {{0}};
    int rc = ends_with(out, ".gguf") ? export_gguf(&src, type, out, &err) : export_hf(&src, type, out, &err);
    if (rc) fprintf(stderr, "smolgate: %s\n", err.msg);
    else fprintf(stderr, "wrote %s: %s, vocab %d, hidden %d, %d layers, %s, seed %llu\n", out, c.arch, c.n_vocab,
                 c.dim, c.n_layers, dtype_info(type)->name, (unsigned long long)rnd.seed);
    free(c.rope_layer);
    return rc ? 1 : 0;
}
