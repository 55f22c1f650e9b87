/* cmd_bench.c: `smolgate bench MODEL`: prompt processing and generation tokens/s (as
 * llama-bench -p 512 -n 128 prints them), peak RSS, the machine's memory read
 * bandwidth and the decode roofline, aggregate tokens/s of concurrent sequences, and
 * with --grammar generation constrained by a nested JSON schema and by a forced call
 * among 20 tools, against unconstrained generation (engine/benchmark.h measures; this
 * file prints, as text or one JSON object). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "engine/benchmark.h"
#include "engine/dtype.h"
#include "engine/generate.h"
#include "engine/grammar.h"
#include "engine/model.h"
#include "engine/speculate.h"
#include "gateway/local_constraint.h"

enum { MAX_CONC = 16, MAX_REPS = 1000 };

static const char bench_usage_text[] =
    "usage: smolgate bench MODEL [options]\n"
    "  -p N              prompt tokens for pp (default 512; 0: skip)\n"
    "  -n N              generated tokens for tg (default 128; 0: skip)\n"
    "  -r N              repetitions (default 3)\n"
    "  -t, --threads N   threads (default: all CPUs)\n"
    "  --batch N         prompt tokens per step (default 256)\n"
    "  --kv-type f16|f32 KV cache type (default f16)\n"
    "  --conc LIST       concurrent sequences to measure (default 1,2,4,8; 0: skip)\n"
    "  --conc-n N        tokens each concurrent sequence decodes (default 32)\n"
    "  --conc-prompt N   prompt tokens of each concurrent sequence (default 32)\n"
    "  --bw-mib N        bandwidth test buffer in MiB (default 1024; 0: skip)\n"
    "  --bw-runs N       bandwidth passes, the best is kept (default 5)\n"
    "  --grammar         constrained generation too: -n tokens (at least 64) under a nested\n"
    "                    JSON schema and a forced call among 20 tools, vs unconstrained\n"
    "  --spec            speculative decoding: the cost of verifying k draft tokens in one\n"
    "                    pass, and greedy tok/s without drafts, with drafts that quote\n"
    "                    the answer (one token in 16 edited), with drafts that always miss,\n"
    "                    and with prompt lookup\n"
    "  --spec-n N        tokens each speculative run generates (default 32)\n"
    "  --spec-prompt N   prompt tokens of the speculative runs (default 64)\n"
    "  --draft N         draft tokens per round at most (default 8)\n"
    "  --mlock           lock the weights in memory first (steadier figures where the\n"
    "                    kernel evicts idle page cache; llama-bench -lm mmap+mlock)\n"
    "  --json            print one JSON object\n";

static void bench_usage(void) {
    fputs(bench_usage_text, stderr);
}

typedef struct bench_cli {
    const char *model;
    bench_params p;
    int conc[MAX_CONC], n_conc, conc_n, conc_prompt, bw_runs;
    long bw_mib;
    bool json, mlock, grammar, spec;
    int spec_n, spec_prompt, draft;
} bench_cli;

static int parse(int argc, char **argv, bench_cli *o) {
    memset(o, 0, sizeof *o);
    bench_params_default(&o->p);
    static const int conc_default[] = {1, 2, 4, 8};
    memcpy(o->conc, conc_default, sizeof conc_default);
    o->n_conc = 4;
    o->spec_n = 32;
    o->spec_prompt = 64;
    o->draft = SPEC_DEFAULT_DRAFT;
    o->conc_n = 32;
    o->conc_prompt = 32;
    o->bw_mib = 1024;
    o->bw_runs = 5;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l;
#define NEEDV() do { if (!v) { fprintf(stderr, "smolgate: %s needs a value\n", a); return -1; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { bench_usage(); exit(0); }
        else if (!strcmp(a, "-p")) { NEEDV(); if (cli_int(a, v, 0, 1 << 20, &l)) return -1; o->p.n_prompt = (int)l; }
        else if (!strcmp(a, "-n")) { NEEDV(); if (cli_int(a, v, 0, 1 << 20, &l)) return -1; o->p.n_gen = (int)l; }
        else if (!strcmp(a, "-r")) { NEEDV(); if (cli_int(a, v, 1, MAX_REPS, &l)) return -1; o->p.reps = (int)l; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (cli_int(a, v, 1, 1024, &l)) return -1; o->p.infer.n_threads = (int)l; }
        else if (!strcmp(a, "--batch")) { NEEDV(); if (cli_int(a, v, 1, 4096, &l)) return -1; o->p.infer.n_batch = (int)l; }
        else if (!strcmp(a, "--kv-type")) {
            NEEDV();
            if (!strcasecmp(v, "f16")) o->p.infer.kv_type = SG_F16;
            else if (!strcasecmp(v, "f32")) o->p.infer.kv_type = SG_F32;
            else { fprintf(stderr, "smolgate: --kv-type is f16 or f32\n"); return -1; }
        }
        else if (!strcmp(a, "--conc")) {
            NEEDV();
            sg_ids ids = {0};
            if (cli_parse_ids(v, &ids) || ids.n > MAX_CONC) {
                fprintf(stderr, "smolgate: --conc is a list of up to %d counts, e.g. 1,2,4,8\n", MAX_CONC);
                sg_ids_free(&ids);
                return -1;
            }
            o->n_conc = 0;
            for (size_t k = 0; k < ids.n; k++)
                if (ids.ids[k] > 0) o->conc[o->n_conc++] = ids.ids[k] > 256 ? 256 : ids.ids[k];
            sg_ids_free(&ids);
        }
        else if (!strcmp(a, "--conc-n")) { NEEDV(); if (cli_int(a, v, 1, 1 << 20, &l)) return -1; o->conc_n = (int)l; }
        else if (!strcmp(a, "--conc-prompt")) { NEEDV(); if (cli_int(a, v, 1, 1 << 20, &l)) return -1; o->conc_prompt = (int)l; }
        else if (!strcmp(a, "--bw-mib")) { NEEDV(); if (cli_int(a, v, 0, 1L << 20, &o->bw_mib)) return -1; }
        else if (!strcmp(a, "--bw-runs")) { NEEDV(); if (cli_int(a, v, 1, 1000, &l)) return -1; o->bw_runs = (int)l; }
        else if (!strcmp(a, "--json")) o->json = true;
        else if (!strcmp(a, "--mlock")) o->mlock = true;
        else if (!strcmp(a, "--grammar")) o->grammar = true;
        else if (!strcmp(a, "--spec")) o->spec = true;
        else if (!strcmp(a, "--spec-n")) { NEEDV(); if (cli_int(a, v, 1, 1 << 20, &l)) return -1; o->spec_n = (int)l; }
        else if (!strcmp(a, "--spec-prompt")) { NEEDV(); if (cli_int(a, v, 1, 1 << 20, &l)) return -1; o->spec_prompt = (int)l; }
        else if (!strcmp(a, "--draft")) { NEEDV(); if (cli_int(a, v, 1, SPEC_MAX_DRAFT, &l)) return -1; o->draft = (int)l; }
        else if (a[0] == '-' && a[1]) { cli_unknown_option("bench", a, bench_usage_text); return -1; }
        else if (!o->model) o->model = a;
        else { fprintf(stderr, "smolgate: unexpected argument %s\n", a); return -1; }
#undef NEEDV
    }
    if (!o->model) { bench_usage(); return -1; }
    return 0;
}

typedef struct figures {
    bool has_pp, has_tg, has_bw;
    double pp, pp_sd, tg, tg_sd, bw, rss;
    const char *bw_simd;
    double conc[MAX_CONC];
    /* --grammar: tok/s unconstrained, under the schema, under the tool call; setup ms */
    bool has_grammar;
    double gen_free, gen_schema, gen_tools, vocab_ms, schema_ms, tools_ms;
    double gen_sd[3];
    double grammar_pct[2];                  /* mean share of generation time on the grammar */                       /* standard deviations of the three */
    double ratio_lo[2], ratio_hi[2];        /* schema, tools / unconstrained, per repetition */
    bool has_spec;
    bench_spec spec;
} figures;

static void json_num(sg_buf *b, const char *key, bool has, double v) {
    if (has) sg_buf_printf(b, ", \"%s\": %.3f", key, v);
    else sg_buf_printf(b, ", \"%s\": null", key);
}

static void print_json(const bench_cli *o, const sg_model *m, int threads, const figures *f) {
    uint64_t wb = model_weight_bytes(m);
    double roof = f->has_bw ? f->bw * 1e9 / (double)wb : 0;
    sg_buf b;
    sg_buf_init(&b);
    sg_buf_puts(&b, "{\"model\": ");
    sg_buf_json_str(&b, o->model, strlen(o->model));
    sg_buf_printf(&b, ", \"type\": \"%s\", \"threads\": %d, \"n_prompt\": %d, \"n_gen\": %d, \"reps\": %d, \"batch\": %d",
                  bench_model_type(m), threads, o->p.n_prompt, o->p.n_gen, o->p.reps,
                  o->p.infer.n_batch > 0 ? o->p.infer.n_batch : INFER_DEFAULT_BATCH);
    json_num(&b, "pp_tok_s", f->has_pp, f->pp);
    json_num(&b, "pp_tok_s_sd", f->has_pp, f->pp_sd);
    json_num(&b, "tg_tok_s", f->has_tg, f->tg);
    json_num(&b, "tg_tok_s_sd", f->has_tg, f->tg_sd);
    json_num(&b, "bandwidth_gbs", f->has_bw, f->bw);
    json_num(&b, "roofline_tok_s", f->has_bw, roof);
    json_num(&b, "roofline_pct", f->has_bw && f->has_tg, roof > 0 ? 100 * f->tg / roof : 0);
    sg_buf_printf(&b, ", \"peak_rss_mb\": %.1f, \"weight_bytes\": %llu", f->rss, (unsigned long long)wb);
    sg_buf_puts(&b, ", \"concurrency_mode\": ");
    sg_buf_json_str(&b, bench_batched.name, strlen(bench_batched.name));
    sg_buf_printf(&b, ", \"concurrency_tokens\": %d, \"concurrency\": {", o->conc_n);
    for (int i = 0; i < o->n_conc; i++) sg_buf_printf(&b, "%s\"%d\": %.3f", i ? ", " : "", o->conc[i], f->conc[i]);
    sg_buf_puts(&b, "}");
    if (f->has_grammar)
        sg_buf_printf(&b, ", \"grammar\": {\"unconstrained_tok_s\": %.3f, \"schema_tok_s\": %.3f, \"tools20_tok_s\": %.3f, "
                      "\"schema_grammar_pct\": %.2f, \"tools20_grammar_pct\": %.2f, "
                      "\"vocab_index_ms\": %.1f, \"schema_compile_ms\": %.1f, \"tools20_compile_ms\": %.1f}",
                      f->gen_free, f->gen_schema, f->gen_tools, f->grammar_pct[0], f->grammar_pct[1], f->vocab_ms,
                      f->schema_ms, f->tools_ms);
    if (f->has_spec) {
        const bench_spec *sp = &f->spec;
        sg_buf_printf(&b, ", \"speculation\": {\"draft\": %d, \"pass_ms\": {", o->draft);
        for (int i = 0; i < sp->n_pass; i++) sg_buf_printf(&b, "%s\"%d\": %.3f", i ? ", " : "", sp->pass_k[i], sp->pass_ms[i]);
        sg_buf_puts(&b, "}, \"pass_cpu_ms\": {");
        for (int i = 0; i < sp->n_pass; i++) sg_buf_printf(&b, "%s\"%d\": %.3f", i ? ", " : "", sp->pass_k[i], sp->pass_cpu_ms[i]);
        sg_buf_puts(&b, "}");
        const bench_spec_run *runs[4] = {&sp->plain, &sp->quoting, &sp->missing, &sp->lookup};
        static const char *const names[4] = {"plain", "quoting", "missing", "lookup"};
        for (int i = 0; i < 4; i++)
            sg_buf_printf(&b, ", \"%s\": {\"tok_s\": %.3f, \"tok_s_min\": %.3f, \"tok_s_max\": %.3f, \"drafted\": %lld, "
                          "\"cpu_tok_s\": %.3f, \"cpu_tok_s_min\": %.3f, \"cpu_tok_s_max\": %.3f, "
                          "\"accepted\": %lld, \"passes\": %lld, \"generated\": %lld}",
                          names[i], runs[i]->mean, runs[i]->min, runs[i]->max, runs[i]->drafted, runs[i]->cpu_mean,
                          runs[i]->cpu_min, runs[i]->cpu_max, runs[i]->accepted,
                          runs[i]->passes, runs[i]->generated);
        sg_buf_puts(&b, "}");
    }
    sg_buf_puts(&b, "}");
    puts(b.data);
    sg_buf_free(&b);
}

static void print_text(const bench_cli *o, const sg_model *m, int threads, const figures *f) {
    uint64_t wb = model_weight_bytes(m);
    double roof = f->has_bw ? f->bw * 1e9 / (double)wb : 0;
    printf("%s: %s, %s weights, %.3f GB read per generated token, %d thread%s\n", o->model, m->cfg.arch,
           bench_model_type(m), (double)wb / 1e9, threads, threads == 1 ? "" : "s");
    if (f->has_pp)
        printf("  pp%-5d %9.2f ± %6.2f tok/s   (batches of %d, %d reps)\n", o->p.n_prompt, f->pp, f->pp_sd,
               o->p.infer.n_batch > 0 ? o->p.infer.n_batch : INFER_DEFAULT_BATCH, o->p.reps);
    if (f->has_tg) printf("  tg%-5d %9.2f ± %6.2f tok/s\n", o->p.n_gen, f->tg, f->tg_sd);
    printf("  peak RSS %.0f MB\n", f->rss);
    if (f->has_bw) {
        printf("  memory read bandwidth %.1f GB/s (%d thread%s, %ld MiB, %s loads, best of %d)\n", f->bw, threads,
               threads == 1 ? "" : "s", o->bw_mib, f->bw_simd, o->bw_runs);
        printf("  decode roofline %.2f tok/s", roof);
        if (f->has_tg) printf(": tg reaches %.1f%%", 100 * f->tg / roof);
        putchar('\n');
    }
    if (o->n_conc) {
        printf("  concurrent sequences, aggregate tok/s (%s; %d prompt + %d generated tokens each):\n   ",
               bench_batched.name, o->conc_prompt, o->conc_n);
        for (int i = 0; i < o->n_conc; i++) printf(" %d: %.2f", o->conc[i], f->conc[i]);
        putchar('\n');
    }
    if (f->has_grammar) {
        printf("  constrained generation, tok/s (temperature 1, %d tokens, %d alternating reps): unconstrained %.2f ± %.2f, "
               "nested schema %.2f ± %.2f (%.1f%%; per rep %.1f-%.1f%%), forced call among 20 tools %.2f ± %.2f "
               "(%.1f%%; per rep %.1f-%.1f%%)\n",
               o->p.n_gen < 64 ? 64 : o->p.n_gen, o->p.reps, f->gen_free, f->gen_sd[0], f->gen_schema, f->gen_sd[1],
               100 * f->gen_schema / f->gen_free, 100 * f->ratio_lo[0], 100 * f->ratio_hi[0], f->gen_tools, f->gen_sd[2],
               100 * f->gen_tools / f->gen_free, 100 * f->ratio_lo[1], 100 * f->ratio_hi[1]);
        printf("  time on the grammar (masks, draft checks), share of generation time: nested schema %.2f%%, "
               "20 tools %.2f%%\n", f->grammar_pct[0], f->grammar_pct[1]);
        printf("  grammar setup, once: vocabulary index %.1f ms, schema compiled in %.1f ms, 20 tools in %.1f ms\n",
               f->vocab_ms, f->schema_ms, f->tools_ms);
    }
    if (f->has_spec) {
        const bench_spec *sp = &f->spec;
        printf("  speculative decoding (greedy, %d prompt + %d generated tokens, drafts of up to %d, %d reps):\n",
               o->spec_prompt, o->spec_n, o->draft, o->p.reps);
        printf("    verification pass of 1 + k tokens, ms (x a decode step):");
        for (int i = 0; i < sp->n_pass; i++)
            printf(" k=%d %.1f (%.2fx)", sp->pass_k[i], sp->pass_ms[i], sp->pass_ms[0] > 0 ? sp->pass_ms[i] / sp->pass_ms[0] : 0);
        printf("\n    the same in CPU time, ms:");
        for (int i = 0; i < sp->n_pass; i++)
            printf(" k=%d %.1f (%.2fx)", sp->pass_k[i], sp->pass_cpu_ms[i],
                   sp->pass_cpu_ms[0] > 0 ? sp->pass_cpu_ms[i] / sp->pass_cpu_ms[0] : 0);
        putchar('\n');
        const bench_spec_run *runs[4] = {&sp->plain, &sp->quoting, &sp->missing, &sp->lookup};
        static const char *const names[4] = {"off", "quoting answer", "drafts always miss", "prompt lookup"};
        for (int i = 0; i < 4; i++) {
            const bench_spec_run *r = runs[i];
            printf("    %-19s %8.2f tok/s (%.2f-%.2f)", names[i], r->mean, r->min, r->max);
            if (i) printf(" %.2fx off", sp->plain.mean > 0 ? r->mean / sp->plain.mean : 0);
            printf("; CPU time %.2f tok/s (%.2f-%.2f)", r->cpu_mean, r->cpu_min, r->cpu_max);
            if (i) printf(" %.2fx off", sp->plain.cpu_mean > 0 ? r->cpu_mean / sp->plain.cpu_mean : 0);
            if (r->drafted) printf(", %lld of %lld drafted accepted", r->accepted, r->drafted);
            if (r->passes) printf(", %.2f tokens per pass", (double)(r->generated - r->n) / (double)r->passes);
            putchar('\n');
        }
    }
}

/* What --grammar measures: a typical nested object (bounded strings, enums, arrays,
 * numbers, an optional field), and 20 tools of 2 to 4 parameters with one call forced. */
static const char bench_schema[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":24},"
    "\"age\":{\"type\":\"integer\"},\"role\":{\"enum\":[\"admin\",\"user\",\"guest\"]},"
    "\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":\"string\"},\"city\":{\"type\":\"string\"},"
    "\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"street\",\"city\",\"zip\"],\"additionalProperties\":false},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":12},\"maxItems\":5},"
    "\"scores\":{\"type\":\"array\",\"items\":{\"type\":\"number\"}},\"active\":{\"type\":\"boolean\"},"
    "\"note\":{\"type\":[\"string\",\"null\"]}},"
    "\"required\":[\"name\",\"age\",\"role\",\"address\",\"tags\",\"scores\",\"active\"],\"additionalProperties\":false}";

static json_t *bench_tools_request(void) {
    json_t *tools = json_array();
    static const char *const kinds[] = {"string", "integer", "number", "boolean"};
    for (int i = 0; i < 20; i++) {
        json_t *props = json_object(), *req = json_array();
        for (int k = 0; k < 2 + i % 3; k++) {
            char pn[16];
            snprintf(pn, sizeof pn, "arg%d", k);
            json_object_set_new(props, pn, k == 3 ? json_pack("{s:[s,s,s]}", "enum", "low", "mid", "high")
                                                  : json_pack("{s:s}", "type", kinds[(i + k) % 4]));
            json_array_append_new(req, json_string(pn));
        }
        char name[32];
        snprintf(name, sizeof name, "tool_%02d_action", i);
        json_array_append_new(tools, json_pack("{s:s,s:{s:s,s:s,s:{s:s,s:o,s:o,s:b}}}", "type", "function", "function",
                                               "name", name, "description", "a tool", "parameters", "type", "object",
                                               "properties", props, "required", req, "additionalProperties", 0));
    }
    return json_pack("{s:o,s:s,s:b}", "tools", tools, "tool_choice", "required", "parallel_tool_calls", 0);
}

static int bench_grammar(const sg_model *m, bench_cli *o, double *x, figures *f, sg_error *err) {
    if (!m->tok) return sg_fail(err, "--grammar needs the model's tokenizer");
    bench_params p = o->p;
    if (p.n_gen < 64) p.n_gen = 64;
    double t0 = gen_now_ms();
    if (!grammar_vocab_get(m->tok)) return sg_fail(err, "cannot index the vocabulary");
    double t1 = gen_now_ms();
    sg_grammar *schema = grammar_compile_cached(GRAMMAR_JSON_SCHEMA, bench_schema, strlen(bench_schema), err);
    if (!schema) return -1;
    double t2 = gen_now_ms();
    json_t *req = bench_tools_request();
    sg_grammar *tools = NULL;
    bool lazy;
    int rc = local_constraint_grammar(req, &tools, &lazy, err);
    json_decref(req);
    double t3 = gen_now_ms();
    f->vocab_ms = t1 - t0;
    f->schema_ms = t2 - t1;
    f->tools_ms = t3 - t2;
    sg_grammar *gs[3] = {NULL, schema, tools};
    double *out[3] = {&f->gen_free, &f->gen_schema, &f->gen_tools};
    /* the three alternate, one repetition each in turn and the order rotating, so that
     * a neighbour on a shared machine (or a drift) slows all of them alike rather than one */
    double *xs = sg_xmalloc(3 * (size_t)p.reps * sizeof *xs);
    double *pct = sg_xcalloc(3 * (size_t)p.reps, sizeof *pct);
    bench_params one = p;
    one.reps = 1;
    for (int r = 0; r < p.reps && !rc; r++) {
        for (int j = 0; j < 3 && !rc; j++) {
            int i = (j + r) % 3;
            if (!o->json)
                fprintf(stderr, "generation, %s, repetition %d...\n", i == 0 ? "unconstrained" : i == 1 ? "nested schema" : "20 tools", r + 1);
            one.seed = p.seed + (uint64_t)r * 1000;
            rc = bench_generate(m, &one, gs[i], &xs[i * p.reps + r], &pct[i * p.reps + r], err);
            if (!rc && !o->json) fprintf(stderr, "  %.2f tok/s\n", xs[i * p.reps + r]);
        }
    }
    for (int i = 0; i < 3 && !rc; i++) bench_mean_sd(xs + i * p.reps, p.reps, out[i], &f->gen_sd[i]);
    for (int k = 0; k < 2 && !rc; k++) {
        double sd;
        bench_mean_sd(pct + (k + 1) * p.reps, p.reps, &f->grammar_pct[k], &sd);
        f->ratio_lo[k] = 1e9;
        f->ratio_hi[k] = 0;
        for (int r = 0; r < p.reps; r++) {
            double q = xs[r] > 0 ? xs[(k + 1) * p.reps + r] / xs[r] : 0;
            if (q < f->ratio_lo[k]) f->ratio_lo[k] = q;
            if (q > f->ratio_hi[k]) f->ratio_hi[k] = q;
        }
    }
    free(xs);
    free(pct);
    (void)x;
    grammar_unref(schema);
    grammar_unref(tools);
    f->has_grammar = !rc;
    return rc;
}

int cli_bench(int argc, char **argv) {
    bench_cli o;
    if (parse(argc, argv, &o)) return 2;
    sg_error err = {{0}};
    sg_model *m = model_load(o.model, &err);
    if (!m) { fprintf(stderr, "smolgate: %s\n", err.msg); return 1; }
    if (o.mlock && bench_lock_weights(m, &err)) { fprintf(stderr, "smolgate: %s\n", err.msg); model_free(m); return 1; }
    int threads = o.p.infer.n_threads > 0 ? o.p.infer.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    figures f = {0};
    double *x = sg_xmalloc((size_t)o.p.reps * sizeof(double));
    int rc = 1;
    if (o.p.n_prompt) {
        if (!o.json) fprintf(stderr, "pp%d...\n", o.p.n_prompt);
        if (bench_pp(m, &o.p, x, &err)) goto fail;
        bench_mean_sd(x, o.p.reps, &f.pp, &f.pp_sd);
        f.has_pp = true;
    }
    if (o.p.n_gen) {
        if (!o.json) fprintf(stderr, "tg%d...\n", o.p.n_gen);
        if (bench_tg(m, &o.p, x, &err)) goto fail;
        bench_mean_sd(x, o.p.reps, &f.tg, &f.tg_sd);
        f.has_tg = true;
    }
    f.rss = bench_peak_rss_mb();   /* before the N contexts and the bandwidth buffer */
    if (o.grammar && bench_grammar(m, &o, x, &f, &err)) goto fail;
    if (o.spec) {
        if (!o.json) fprintf(stderr, "speculative decoding...\n");
        bench_params sp = o.p;
        sp.n_prompt = o.spec_prompt;
        sp.n_gen = o.spec_n;
        if (bench_speculation(m, &sp, o.draft, &f.spec, &err)) goto fail;
        f.has_spec = true;
    }
    for (int i = 0; i < o.n_conc; i++) {
        if (!o.json) fprintf(stderr, "%d concurrent sequences...\n", o.conc[i]);
        if (bench_concurrency(m, &bench_batched, o.conc[i], o.conc_prompt, o.conc_n, &o.p, &f.conc[i], &err)) goto fail;
    }
    if (o.bw_mib) {
        if (!o.json) fprintf(stderr, "memory bandwidth...\n");
        if (bench_mem_bandwidth(threads, (size_t)o.bw_mib << 20, o.bw_runs, &f.bw, &f.bw_simd, &err)) goto fail;
        f.has_bw = true;
    }
    if (o.json) print_json(&o, m, threads, &f);
    else print_text(&o, m, threads, &f);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "smolgate: %s\n", err.msg);
out:
    free(x);
    model_free(m);
    return rc;
}
