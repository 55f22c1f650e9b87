/* cmd_perplexity.c: `smolgate perplexity`: perplexity of a model over a text (or over
 * raw token ids), and its KL divergence from a reference model's saved distributions,
 * the measurements of llama.cpp's llama-perplexity (engine/perplexity.h computes;
 * this file gathers the tokens and prints). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "common/mapfile.h"
#include "engine/benchmark.h"
#include "engine/dtype.h"
#include "engine/model.h"
#include "engine/perplexity.h"
#include "engine/tokenizer.h"

static const char ppl_usage_text[] =
    "usage: smolgate perplexity MODEL [FILE] [options]\n"
    "  FILE                  text to score, tokenized with the model's tokenizer\n"
    "  --ids-file F          score these token ids instead (integers separated by commas,\n"
    "                        spaces or newlines; a JSON array works)\n"
    "  --random N            score N pseudo-random ids (uniform over the vocabulary, from\n"
    "                        --seed): for models without a tokenizer\n"
    "  --seed S              seed of --random (default 1)\n"
    "  -c, --ctx N           window length in tokens (default 512)\n"
    "  --stride N            windows every N tokens, each scoring its last N predictions\n"
    "                        (default 0: consecutive windows, second halves scored)\n"
    "  --chunks N            score only the first N windows (default: all)\n"
    "  --bos | --no-bos      put BOS at each window's start (default: when the model uses it)\n"
    "  --save-logits BASE    save this model's log-probabilities to BASE (reference run)\n"
    "  --kl-format F         BASE's encoding: u16 (default, 2 bytes a vocabulary entry),\n"
    "                        f32 (exact, 4 bytes), or topK, e.g. top64 (8 bytes a kept token)\n"
    "  --kl-base BASE        KL divergence against BASE (its tokens, ctx and stride are used\n"
    "                        when no FILE / --ids-file / --random is given)\n"
    "  --json                print the results as one JSON object\n"
    "  -t, --threads N       threads (default: all CPUs)\n"
    "  --batch N             positions per evaluation step (default 256)\n"
    "  --kv-type f16|f32     KV cache type (default f16)\n";

static void ppl_usage(void) {
    fputs(ppl_usage_text, stderr);
}

typedef struct ppl_cli {
    const char *model, *text, *ids_file, *save, *base;
    long random_n, seed, chunks;
    int bos;            /* 1 on, 0 off, -1 model default */
    bool json, ctx_set, stride_set;
    ppl_params p;
} ppl_cli;

static int parse(int argc, char **argv, ppl_cli *o) {
    memset(o, 0, sizeof *o);
    ppl_params_default(&o->p);
    o->bos = -1;
    o->seed = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l;
        char *end;
#define NEEDV() do { if (!v) { fprintf(stderr, "smolgate: %s needs a value\n", a); return -1; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { ppl_usage(); exit(0); }
        else if (!strcmp(a, "--ids-file")) { NEEDV(); o->ids_file = v; }
        else if (!strcmp(a, "--random")) { NEEDV(); if (cli_int(a, v, 1, 1L << 30, &o->random_n)) return -1; }
        else if (!strcmp(a, "--seed")) { NEEDV(); if (cli_int(a, v, 0, 0x7fffffffL, &o->seed)) return -1; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NEEDV(); if (cli_int(a, v, 4, 1 << 20, &l)) return -1; o->p.ctx = (int)l; o->ctx_set = true; }
        else if (!strcmp(a, "--stride")) { NEEDV(); if (cli_int(a, v, 0, 1 << 20, &l)) return -1; o->p.stride = (int)l; o->stride_set = true; }
        else if (!strcmp(a, "--chunks")) { NEEDV(); if (cli_int(a, v, 1, 1L << 30, &o->chunks)) return -1; }
        else if (!strcmp(a, "--bos")) o->bos = 1;
        else if (!strcmp(a, "--no-bos")) o->bos = 0;
        else if (!strcmp(a, "--save-logits")) { NEEDV(); o->save = v; }
        else if (!strcmp(a, "--kl-base")) { NEEDV(); o->base = v; }
        else if (!strcmp(a, "--kl-format")) {
            NEEDV();
            if (!strcasecmp(v, "u16")) o->p.save_enc = PPL_ENC_U16;
            else if (!strcasecmp(v, "f32")) o->p.save_enc = PPL_ENC_F32;
            else if (!strncasecmp(v, "top", 3) && (l = strtol(v + 3, &end, 10)) >= 1 && l <= (1 << 24) && end != v + 3 && !*end) {
                o->p.save_enc = PPL_ENC_TOPK;
                o->p.save_top_k = (int)l;
            }
            else { fprintf(stderr, "smolgate: --kl-format is u16, f32 or topK (e.g. top64)\n"); return -1; }
        }
        else if (!strcmp(a, "--json")) o->json = true;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (cli_int(a, v, 1, 1024, &l)) return -1; o->p.infer.n_threads = (int)l; }
        else if (!strcmp(a, "--batch")) { NEEDV(); if (cli_int(a, v, 1, 4096, &l)) return -1; o->p.infer.n_batch = (int)l; }
        else if (!strcmp(a, "--kv-type")) {
            NEEDV();
            if (!strcasecmp(v, "f16")) o->p.infer.kv_type = SG_F16;
            else if (!strcasecmp(v, "f32")) o->p.infer.kv_type = SG_F32;
            else { fprintf(stderr, "smolgate: --kv-type is f16 or f32\n"); return -1; }
        }
        else if (a[0] == '-' && a[1]) { cli_unknown_option("perplexity", a, ppl_usage_text); return -1; }
        else if (!o->model) o->model = a;
        else if (!o->text) o->text = a;
        else { fprintf(stderr, "smolgate: unexpected argument %s\n", a); return -1; }
#undef NEEDV
    }
    if (!o->model) { ppl_usage(); return -1; }
    int sources = !!o->text + !!o->ids_file + !!o->random_n;
    if (sources > 1) { fprintf(stderr, "smolgate: give one of FILE, --ids-file, --random\n"); return -1; }
    if (!sources && !o->base) { fprintf(stderr, "smolgate: give a text FILE, --ids-file or --random\n"); return -1; }
    return 0;
}

/* BOS when the model's files say to add it: GGUF's tokenizer.ggml.add_bos_token, else a
 * tokenizer that names a BOS token (Llama 3 does, SmolLM3 does not). */
static int32_t model_bos(const sg_model *m) {
    int32_t bos = m->cfg.bos_id;
    if (bos < 0 || bos >= m->cfg.n_vocab) return -1;
    bool add;
    if (m->src == MODEL_SRC_GGUF && gguf_get_bool(&m->gguf, "tokenizer.ggml.add_bos_token", &add) == 0) return add ? bos : -1;
    return m->tok && tok_bos(m->tok) >= 0 ? bos : -1;
}

/* Every integer in the file, in order ("1,2,3", "[1, 2, 3]", one per line...). */
static int read_ids_file(const char *path, sg_ids *ids) {
    size_t len;
    sg_error err = {{0}};
    char *s = sg_read_file(path, &len, &err);
    if (!s) { fprintf(stderr, "smolgate: %s\n", err.msg); return -1; }
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        if (s[i] == '-') { fprintf(stderr, "smolgate: %s: negative token id\n", path); rc = -1; }
        else if (isdigit((unsigned char)s[i])) {
            long long v = 0;
            while (i < len && isdigit((unsigned char)s[i]) && v <= INT32_MAX) v = v * 10 + (s[i++] - '0');
            if (v > INT32_MAX) { fprintf(stderr, "smolgate: %s: token id out of range\n", path); rc = -1; }
            else sg_ids_push(ids, (int32_t)v);
        } else i++;
    }
    free(s);
    if (!rc && !ids->n) { fprintf(stderr, "smolgate: %s holds no token ids\n", path); rc = -1; }
    return rc;
}

/* n ids uniform over [0, n_vocab), from splitmix64(seed): the same on every machine. */
static void random_ids(size_t n, uint64_t seed, int n_vocab, sg_ids *ids) {
    uint64_t x = seed;
    for (size_t i = 0; i < n; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        sg_ids_push(ids, (int32_t)(z % (uint64_t)n_vocab));
    }
}

/* The tokens to score, from FILE, --ids-file or --random; BOS first when the run uses
 * one (as llama.cpp tokenizes with add_bos). */
static int gather_tokens(const ppl_cli *o, const sg_model *m, sg_ids *ids) {
    if (o->p.bos >= 0) sg_ids_push(ids, o->p.bos);
    if (o->random_n) { random_ids((size_t)o->random_n, (uint64_t)o->seed, m->cfg.n_vocab, ids); return 0; }
    if (o->ids_file) return read_ids_file(o->ids_file, ids);
    if (!m->tok) { fprintf(stderr, "smolgate: %s has no tokenizer: use --ids-file or --random\n", o->model); return -1; }
    size_t len;
    sg_error err = {{0}};
    char *text = sg_read_file(o->text, &len, &err);
    int rc = text ? tok_encode(m->tok, text, len, false, ids, &err) : -1;
    if (rc) fprintf(stderr, "smolgate: %s\n", err.msg);
    free(text);
    return rc;
}

typedef struct progress {
    bool kl, json;
} progress;

/* llama.cpp prints the running perplexity as "[1]x,[2]y,..."; with a base, one line a
 * window with the running KL. */
static void on_window(void *ctx, int w, int n, double ppl, double kl) {
    const progress *pr = ctx;
    FILE *f = pr->json ? stderr : stdout;
    if (pr->kl) fprintf(f, "[%d/%d] PPL %.4f  KLD %.6g\n", w + 1, n, ppl, kl);
    else fprintf(f, "[%d]%.4f,%s", w + 1, ppl, w + 1 == n ? "\n" : "");
    fflush(f);
}

static void print_text(const ppl_result *r) {
    printf("Final estimate: PPL = %.4f +/- %.5f\n", r->ppl, r->ppl_err);
    if (!r->has_kl) return;
    double ratio = exp(r->ln_ratio);
    printf("\n====== Perplexity statistics ======\n"
           "Mean PPL(Q)                   : %10.6f ± %10.6f\n"
           "Mean PPL(base)                : %10.6f ± %10.6f\n"
           "Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n"
           "Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n"
           "Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n",
           r->ppl, r->ppl_err, r->base_ppl, r->base_ppl_err, r->ln_ratio, r->ln_ratio_err,
           ratio, ratio * r->ln_ratio_err, r->dppl, r->dppl_err);
    printf("\n====== KL divergence statistics ======\n"
           "Mean    KLD: %10.6g ± %.3g\n"
           "Maximum KLD: %10.6g\n"
           "99.9%%   KLD: %10.6g\n"
           "99.0%%   KLD: %10.6g\n"
           "90.0%%   KLD: %10.6g\n"
           "Median  KLD: %10.6g\n"
           "Minimum KLD: %10.6g\n",
           r->kl_mean, r->kl_err, r->kl_max, r->kl_p999, r->kl_p99, r->kl_p90, r->kl_median, r->kl_min);
    printf("\n====== Token probability statistics ======\n"
           "RMS Δp    : %7.3f %%\n"
           "Same top p: %7.3f ± %5.3f %%\n",
           100 * r->rms_dp, 100 * r->same_top, 100 * r->same_top_err);
}

static void print_json(const ppl_cli *o, const sg_model *m, size_t n_tokens, const ppl_result *r) {
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_puts(&b, "{\"model\": ");
    sg_buf_json_str(&b, o->model, strlen(o->model));
    sg_buf_printf(&b, ", \"type\": \"%s\", \"tokens\": %zu, \"ctx\": %d, \"stride\": %d, \"bos\": %d, "
                      "\"windows\": %d, \"scored\": %lld, \"ppl\": %.6f, \"ppl_err\": %.6f",
                  bench_model_type(m), n_tokens, o->p.ctx, o->p.stride, o->p.bos,
                  r->n_windows, (long long)r->n_scored, r->ppl, r->ppl_err);
    if (r->has_kl)
        sg_buf_printf(&b, ", \"base_ppl\": %.6f, \"base_ppl_err\": %.6f, \"dppl\": %.6f, \"dppl_err\": %.6f, "
                          "\"ln_ratio\": %.8f, \"ln_ratio_err\": %.8f, \"kld\": %.8f, \"kld_err\": %.8f, "
                          "\"kld_max\": %.8f, \"kld_p999\": %.8f, \"kld_p99\": %.8f, \"kld_p90\": %.8f, "
                          "\"kld_median\": %.8f, \"kld_min\": %.8f, \"same_top\": %.6f, \"same_top_err\": %.6f, "
                          "\"rms_dp\": %.6f",
                      r->base_ppl, r->base_ppl_err, r->dppl, r->dppl_err, r->ln_ratio, r->ln_ratio_err,
                      r->kl_mean, r->kl_err, r->kl_max, r->kl_p999, r->kl_p99, r->kl_p90, r->kl_median,
                      r->kl_min, r->same_top, r->same_top_err, r->rms_dp);
    sg_buf_puts(&b, "}");
    puts(b.data);
    sg_buf_free(&b);
}

int cli_perplexity(int argc, char **argv) {
    ppl_cli o;
    if (parse(argc, argv, &o)) return 2;
    sg_error err = {{0}};
    ppl_base_info bi = {0};
    if (o.base) {   /* the windows come from the base file */
        if (ppl_base_read_info(o.base, &bi, &err)) { fprintf(stderr, "smolgate: %s\n", err.msg); return 1; }
        if (!o.ctx_set) o.p.ctx = bi.ctx;
        if (!o.stride_set) o.p.stride = bi.stride;
    }
    sg_model *m = model_load(o.model, &err);
    if (!m) { fprintf(stderr, "smolgate: %s\n", err.msg); free(bi.tokens); return 1; }
    int rc = 1;
    sg_ids ids = {0};
    int32_t bos = m->cfg.bos_id >= 0 && m->cfg.bos_id < m->cfg.n_vocab ? m->cfg.bos_id : -1;
    if (o.bos == 0) o.p.bos = -1;
    else if (o.bos == 1 && bos < 0) { fprintf(stderr, "smolgate: --bos: %s names no BOS token\n", o.model); goto out; }
    else if (o.bos == 1) o.p.bos = bos;
    else o.p.bos = o.base ? bi.bos : model_bos(m);
    if (o.text || o.ids_file || o.random_n) {
        if (gather_tokens(&o, m, &ids)) goto out;
    } else {
        if (o.chunks) { fprintf(stderr, "smolgate: --chunks: the windows come from %s\n", o.base); goto out; }
        for (size_t i = 0; i < bi.n_tokens; i++) sg_ids_push(&ids, bi.tokens[i]);
    }
    if (o.chunks) {   /* keep the tokens of the first N windows */
        size_t need = o.p.stride ? (size_t)o.p.ctx + (size_t)(o.chunks - 1) * (size_t)o.p.stride
                                 : (size_t)o.chunks * (size_t)o.p.ctx;
        if (ids.n > need) ids.n = need;
    }
    ppl_plan plan;
    if (ppl_plan_windows(ids.n, o.p.ctx, o.p.stride, &plan, &err)) { fprintf(stderr, "smolgate: %s\n", err.msg); goto out; }
    fprintf(stderr, "perplexity: %zu tokens, %d windows of %d, %d predictions scored in each (%s), BOS %s, %s weights\n",
            ids.n, plan.n_windows, plan.ctx, plan.n_scored, plan.stride ? "stride" : "second halves",
            o.p.bos >= 0 ? "at each window's start" : "none", bench_model_type(m));
    progress pr = {.kl = o.base != NULL, .json = o.json};
    o.p.save_path = o.save;
    o.p.kl_base_path = o.base;
    o.p.progress = on_window;
    o.p.progress_ctx = &pr;
    ppl_result r;
    if (ppl_run(m, ids.ids, ids.n, &o.p, &r, &err)) { fprintf(stderr, "smolgate: %s\n", err.msg); goto out; }
    if (o.json) print_json(&o, m, ids.n, &r);
    else print_text(&r);
    if (o.save) fprintf(stderr, "saved log-probabilities of %lld positions to %s\n", (long long)r.n_scored, o.save);
    rc = 0;
out:
    sg_ids_free(&ids);
    free(bi.tokens);
    model_free(m);
    return rc;
}
