/* cmd_run.c: the engine's one-shot commands: run, eval, tokenize, info (chat: cmd_chat.c). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/run_opts.h"
#include "common/buf.h"
#include "engine/chat.h"
#include "engine/generate.h"
#include "engine/infer.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

typedef struct print_ctx {
    bool print_ids;
    const sg_tokenizer *tok;
    json_t *logprobs;     /* OpenAI's choice.logprobs.content, when asked for */
    sg_ids gen;
} print_ctx;

/* {"token", "logprob", "bytes"} as OpenAI writes one entry */
static json_t *logprob_entry(const sg_tokenizer *tok, int32_t id, float lp) {
    size_t n = 0;
    const char *p = tok ? tok_piece(tok, id, &n) : NULL;
    json_t *bytes = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)p[i]));
    json_t *e = json_object();
    json_object_set_new(e, "token", p ? json_stringn_nocheck(p, n) : json_sprintf("<%d>", id));
    json_object_set_new(e, "logprob", json_real(lp));
    json_object_set_new(e, "bytes", bytes);
    return e;
}

static int print_token(void *p, int32_t id, const char *text, size_t len, const sg_sample_info *info) {
    print_ctx *pc = p;
    if (id >= 0) sg_ids_push(&pc->gen, id);
    if (pc->logprobs && info && id >= 0) {
        json_t *e = logprob_entry(pc->tok, id, info->logprob), *top = json_array();
        for (int i = 0; i < info->n_top; i++)
            json_array_append_new(top, logprob_entry(pc->tok, info->top[i].id, info->top[i].logprob));
        json_object_set_new(e, "top_logprobs", top);
        json_array_append_new(pc->logprobs, e);
    }
    if (!pc->print_ids && !pc->logprobs && text && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

/* Builds the prompt ids from --ids, or from -p text (optionally through the chat template). */
static int build_prompt(const run_opts *o, const sg_model *m, sg_ids *ids) {
    sg_error err = {{0}};
    if (o->ids) {
        if (cli_parse_ids(o->ids, ids)) { fprintf(stderr, "smolgate: --ids must be a comma-separated list of ids\n"); return -1; }
        return 0;
    }
    if (!o->prompt) { fprintf(stderr, "smolgate: give a prompt with -p TEXT or --ids\n"); return -1; }
    if (!m->tok) { fprintf(stderr, "smolgate: %s has no tokenizer: use --ids\n", o->model); return -1; }
    if (o->bos && tok_bos(m->tok) >= 0) sg_ids_push(ids, tok_bos(m->tok));
    if (!o->chat_template) {
        if (o->verbose_prompt) fprintf(stderr, "%s\n", o->prompt);
        return tok_encode(m->tok, o->prompt, strlen(o->prompt), o->special, ids, &err) ? (fprintf(stderr, "smolgate: %s\n", err.msg), -1) : 0;
    }
    json_t *msgs = json_array();
    if (o->system) json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", o->system));
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", o->prompt));
    chat_options co = {.enable_thinking = o->no_think ? 0 : -1, .add_generation_prompt = true};
    sg_buf text;
    sg_buf_init(&text);
    int rc = chat_render(chat_detect(m->chat_template), msgs, NULL, &co, &text, &err);
    if (!rc && o->verbose_prompt) fprintf(stderr, "%.*s\n", (int)text.len, text.data);
    if (!rc) rc = tok_encode(m->tok, text.data, text.len, true, ids, &err);
    if (rc) fprintf(stderr, "smolgate: %s\n", err.msg);
    json_decref(msgs);
    sg_buf_free(&text);
    return rc;
}

int cli_run(int argc, char **argv) {
    run_opts o;
    int prc = run_opts_parse(argc, argv, &o, RUN_CMD_RUN);
    if (prc) return prc > 0 ? 0 : 2;
    if (run_load_grammar(&o)) return 2;
    sg_model *m = run_load_model(o.model);
    if (!m) { grammar_unref(o.gp.grammar); return 1; }
    sg_ids prompt = {0}, stop_ids = {0};
    int rc = 1;
    sg_infer *inf = NULL;
    print_ctx pc = {.print_ids = o.print_ids, .tok = m->tok, .logprobs = o.logprobs ? json_array() : NULL};
    sg_error err = {{0}};
    if (build_prompt(&o, m, &prompt)) goto out;
    if (o.chat_template) run_turn_end_ids(m, &stop_ids);
    o.gp.stop_ids = stop_ids.ids;
    o.gp.n_stop_ids = stop_ids.n;
    if (!(inf = infer_new(m, &o.ip, &err))) { fprintf(stderr, "smolgate: %s\n", err.msg); goto out; }
    sg_gen_result res;
    if (gen_run(inf, prompt.ids, (int)prompt.n, &o.gp, print_token, &pc, &res, &err)) {
        fprintf(stderr, "smolgate: %s\n", err.msg);
        goto out;
    }
    if (o.logprobs) {
        json_t *doc = json_pack("{s:O}", "content", pc.logprobs);
        char *js = json_dumps(doc, JSON_COMPACT);
        puts(js ? js : "{}");
        free(js);
        json_decref(doc);
    } else if (o.print_ids) {
        cli_print_ids(pc.gen.ids, pc.gen.n);
    } else {
        putchar('\n');
    }
    if (!o.quiet) { fputc('\n', stderr); run_print_stats(stderr, &res); }
    rc = 0;
out:
    infer_free(inf);
    sg_ids_free(&prompt);
    sg_ids_free(&stop_ids);
    sg_ids_free(&pc.gen);
    json_decref(pc.logprobs);
    model_free(m);
    grammar_unref(o.gp.grammar);
    return rc;
}

int cli_eval(int argc, char **argv) {
    run_opts o;
    int prc = run_opts_parse(argc, argv, &o, RUN_CMD_EVAL);
    if (prc) return prc > 0 ? 0 : 2;
    if (!o.logits_path) { fprintf(stderr, "smolgate: eval needs --logits FILE\n"); return 2; }
    sg_model *m = run_load_model(o.model);
    if (!m) return 1;
    sg_ids ids = {0};
    int rc = 1;
    float *logits = NULL;
    sg_infer *inf = NULL;
    sg_error err = {{0}};
    if (build_prompt(&o, m, &ids)) goto out;
    if (o.ip.n_ctx < (int)ids.n) o.ip.n_ctx = (int)ids.n;
    if (!(inf = infer_new(m, &o.ip, &err))) { fprintf(stderr, "smolgate: %s\n", err.msg); goto out; }
    size_t nv = (size_t)m->cfg.n_vocab;
    logits = malloc(ids.n * nv * sizeof(float));
    if (!logits) { fprintf(stderr, "smolgate: cannot allocate logits for %zu positions\n", ids.n); goto out; }
    if (infer_eval(inf, ids.ids, (int)ids.n, logits, true, &err)) { fprintf(stderr, "smolgate: %s\n", err.msg); goto out; }
    FILE *f = fopen(o.logits_path, "wb");
    if (!f || fwrite(logits, sizeof(float), ids.n * nv, f) != ids.n * nv || fclose(f)) {
        fprintf(stderr, "smolgate: cannot write %s\n", o.logits_path);
        goto out;
    }
    if (!o.quiet) fprintf(stderr, "wrote logits (%zu, %zu) to %s\n", ids.n, nv, o.logits_path);
    rc = 0;
out:
    free(logits);
    infer_free(inf);
    sg_ids_free(&ids);
    model_free(m);
    return rc;
}

int cli_tokenize(int argc, char **argv) {
    const char *src = NULL;
    bool special = false, bos = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--special")) special = true;
        else if (!strcmp(argv[i], "--bos")) bos = true;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs("usage: smolgate tokenize MODEL|tokenizer.json [--special] [--bos] < text\n", stderr);
            return 0;
        } else if (!src) src = argv[i];
        else { fprintf(stderr, "smolgate: unexpected argument %s\n", argv[i]); return 2; }
    }
    if (!src) { fputs("usage: smolgate tokenize MODEL|tokenizer.json [--special] [--bos] < text\n", stderr); return 2; }
    sg_error err = {{0}};
    sg_model *m = NULL;
    sg_tokenizer *tok = NULL;
    size_t n = strlen(src);
    if (n > 5 && !strcmp(src + n - 5, ".json")) {
        char cfg[4096];
        snprintf(cfg, sizeof cfg, "%.*stokenizer_config.json", (int)(strrchr(src, '/') ? strrchr(src, '/') - src + 1 : 0), src);
        tok = tok_load_json(src, access(cfg, R_OK) == 0 ? cfg : NULL, &err);
    } else if ((m = model_load(src, &err))) {
        tok = m->tok;
        if (!tok) snprintf(err.msg, sizeof err.msg, "%s has no tokenizer", src);
    }
    if (!tok) { fprintf(stderr, "smolgate: %s\n", err.msg); model_free(m); return 1; }
    size_t len;
    char *text = cli_read_stdin(&len);
    sg_ids ids = {0};
    if (bos && tok_bos(tok) >= 0) sg_ids_push(&ids, tok_bos(tok));
    int rc = tok_encode(tok, text, len, special, &ids, &err);
    if (rc) fprintf(stderr, "smolgate: %s\n", err.msg);
    else cli_print_ids(ids.ids, ids.n);
    sg_ids_free(&ids);
    free(text);
    if (m) model_free(m);
    else tok_free(tok);
    return rc ? 1 : 0;
}

int cli_info(int argc, char **argv) {
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        fputs("usage: smolgate info MODEL\n  prints the model's configuration as JSON\n", stdout);
        return 0;
    }
    if (argc < 1) { fputs("usage: smolgate info MODEL\n", stderr); return 2; }
    sg_model *m = run_load_model(argv[0]);
    if (!m) return 1;
    const sg_model_config *c = &m->cfg;
    int nope = 0;
    for (int i = 0; i < c->n_layers; i++) nope += !c->rope_layer[i];
    printf("{\"arch\": \"%s\", \"vocab\": %d, \"hidden\": %d, \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, "
           "\"head_dim\": %d, \"ffn\": %d, \"max_ctx\": %d, \"rope_theta\": %g, \"nope_layers\": %d, "
           "\"tied\": %s, \"weight_type\": \"%s\", \"weight_bytes\": %llu, \"tokenizer\": %s}\n",
           c->arch, c->n_vocab, c->dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn_dim,
           c->max_ctx, c->rope_theta, nope, c->tied_embeddings ? "true" : "false",
           dtype_info(m->layers[0].wq.type)->name, (unsigned long long)model_weight_bytes(m),
           m->tok ? "true" : "false");
    model_free(m);
    return 0;
}
