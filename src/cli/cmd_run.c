/* cmd_run.c: the engine's interactive commands: run, chat, eval, tokenize, info. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/buf.h"
#include "engine/chat.h"
#include "engine/generate.h"
#include "engine/infer.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "hub/hub.h"

/* Options shared by run, chat and eval. */
typedef struct run_opts {
    const char *model;
    const char *prompt;
    const char *ids;
    const char *logits_path;
    const char *system;
    sg_infer_params ip;
    sg_gen_params gp;
    const char *stops[16];
    int n_stops;
    bool print_ids, special, bos, chat_template, no_think, quiet, logprobs;
} run_opts;

static void run_usage(const char *cmd) {
    fprintf(stderr,
            "usage: smolgate %s MODEL [options]\n"
            "  -p, --prompt TEXT       prompt text (run)\n"
            "  --ids 1,2,3             prompt as token ids (run, eval)\n"
            "  -n, --max-tokens N      tokens to generate (default 256; run, chat)\n"
            "  --temp T                temperature (default 0: greedy)\n"
            "  --top-k K  --top-p P  --min-p P\n"
            "  --repeat-penalty R  --presence-penalty P  --frequency-penalty F  --penalty-last-n N\n"
            "  --seed S                sampling seed (default 0)\n"
            "  --stop TEXT             stop string (repeatable)\n"
            "  --ignore-eos            keep generating after the end-of-sequence token\n"
            "  --print-ids             print generated ids as a JSON array instead of text\n"
            "  --logprobs N            print OpenAI-style logprobs (chosen token + N alternatives) as JSON\n"
            "  --special               parse special tokens in the prompt text\n"
            "  --bos                   start the prompt with the BOS token\n"
            "  --chat                  wrap the prompt in the model's chat template (run)\n"
            "  --system TEXT           system prompt (chat, run --chat)\n"
            "  --no-think              SmolLM3: reasoning off (chat, run --chat)\n"
            "  -t, --threads N         threads (default: all CPUs)\n"
            "  -c, --ctx N             KV cache positions (default min(model, 4096))\n"
            "  --batch N               prompt tokens per step (default 256)\n"
            "  --kv-type f16|f32       KV cache type (default f16)\n"
            "  --logits FILE           (eval) write float32 logits, shape (n_ids, vocab)\n"
            "  -q, --quiet             no statistics on stderr\n", cmd);
}

static int parse_run_opts(int argc, char **argv, run_opts *o, const char *cmd) {
    memset(o, 0, sizeof *o);
    infer_params_default(&o->ip);
    gen_params_default(&o->gp);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l;
        double d;
#define NEEDV() do { if (!v) { fprintf(stderr, "smolgate: %s needs a value\n", a); return -1; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { run_usage(cmd); exit(0); }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEEDV(); o->prompt = v; }
        else if (!strcmp(a, "--ids")) { NEEDV(); o->ids = v; }
        else if (!strcmp(a, "--logits")) { NEEDV(); o->logits_path = v; }
        else if (!strcmp(a, "--system")) { NEEDV(); o->system = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) { NEEDV(); if (cli_int(a, v, 0, 1 << 24, &l)) return -1; o->gp.max_tokens = (int)l; }
        else if (!strcmp(a, "--temp")) { NEEDV(); if (cli_float(a, v, &d)) return -1; o->gp.sampling.temperature = (float)d; }
        else if (!strcmp(a, "--top-k")) { NEEDV(); if (cli_int(a, v, 0, 1 << 24, &l)) return -1; o->gp.sampling.top_k = (int)l; }
        else if (!strcmp(a, "--top-p")) { NEEDV(); if (cli_float(a, v, &d)) return -1; o->gp.sampling.top_p = (float)d; }
        else if (!strcmp(a, "--min-p")) { NEEDV(); if (cli_float(a, v, &d)) return -1; o->gp.sampling.min_p = (float)d; }
        else if (!strcmp(a, "--repeat-penalty")) { NEEDV(); if (cli_float(a, v, &d)) return -1; o->gp.sampling.repetition_penalty = (float)d; }
        else if (!strcmp(a, "--presence-penalty")) { NEEDV(); if (cli_float(a, v, &d)) return -1; o->gp.sampling.presence_penalty = (float)d; }
        else if (!strcmp(a, "--frequency-penalty")) { NEEDV(); if (cli_float(a, v, &d)) return -1; o->gp.sampling.frequency_penalty = (float)d; }
        else if (!strcmp(a, "--penalty-last-n")) { NEEDV(); if (cli_int(a, v, 0, 1 << 24, &l)) return -1; o->gp.sampling.penalty_last_n = (int)l; }
        else if (!strcmp(a, "--seed")) { NEEDV(); if (cli_float(a, v, &d) || d < 0) return -1; o->gp.sampling.seed = (uint64_t)d; }
        else if (!strcmp(a, "--stop")) { NEEDV(); if (o->n_stops < 16) o->stops[o->n_stops++] = v; }
        else if (!strcmp(a, "--ignore-eos")) o->gp.ignore_eos = true;
        else if (!strcmp(a, "--print-ids")) o->print_ids = true;
        else if (!strcmp(a, "--logprobs")) { NEEDV(); if (cli_int(a, v, 0, SG_MAX_LOGPROBS, &l)) return -1; o->logprobs = true; o->gp.sampling.n_logprobs = (int)l; }
        else if (!strcmp(a, "--special")) o->special = true;
        else if (!strcmp(a, "--bos")) o->bos = true;
        else if (!strcmp(a, "--chat")) o->chat_template = true;
        else if (!strcmp(a, "--no-think")) o->no_think = true;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) o->quiet = true;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (cli_int(a, v, 1, 1024, &l)) return -1; o->ip.n_threads = (int)l; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NEEDV(); if (cli_int(a, v, 1, 1 << 24, &l)) return -1; o->ip.n_ctx = (int)l; }
        else if (!strcmp(a, "--batch")) { NEEDV(); if (cli_int(a, v, 1, 4096, &l)) return -1; o->ip.n_batch = (int)l; }
        else if (!strcmp(a, "--kv-type")) {
            NEEDV();
            if (!strcasecmp(v, "f16")) o->ip.kv_type = SG_F16;
            else if (!strcasecmp(v, "f32")) o->ip.kv_type = SG_F32;
            else { fprintf(stderr, "smolgate: --kv-type is f16 or f32\n"); return -1; }
        }
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "smolgate: unknown option %s\n", a); run_usage(cmd); return -1; }
        else if (!o->model) o->model = a;
        else { fprintf(stderr, "smolgate: unexpected argument %s\n", a); return -1; }
#undef NEEDV
    }
    if (!o->model) { run_usage(cmd); return -1; }
    o->gp.stops = o->stops;
    o->gp.n_stops = (size_t)o->n_stops;
    return 0;
}

/* MODEL is a path, else the name of a pulled model ("smollm3", "OWNER/REPO:QUANT"). */
static sg_model *load_or_die(const char *path) {
    sg_error err = {{0}};
    char *pulled = access(path, F_OK) ? hub_resolve(path, NULL) : NULL;
    sg_model *m = model_load(pulled ? pulled : path, &err);
    if (!m) fprintf(stderr, "smolgate: %s\n", err.msg);
    free(pulled);
    return m;
}

/* Ends of turn for chat models: <|im_end|> (SmolLM2/3), <|eot_id|> (Llama 3). */
static void add_turn_end_ids(const sg_model *m, sg_ids *ids) {
    static const char *names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>"};
    if (!m->tok) return;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t id = tok_find(m->tok, names[i]);
        if (id >= 0) sg_ids_push(ids, id);
    }
}

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

static void print_stats(const sg_gen_result *r) {
    fprintf(stderr, "\n[prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s | %s]\n",
            r->n_prompt, r->prompt_ms > 0 ? r->n_prompt * 1000.0 / r->prompt_ms : 0.0,
            r->n_generated, r->gen_ms > 0 ? r->n_generated * 1000.0 / r->gen_ms : 0.0, r->finish_reason);
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
    if (!o->chat_template)
        return tok_encode(m->tok, o->prompt, strlen(o->prompt), o->special, ids, &err) ? (fprintf(stderr, "smolgate: %s\n", err.msg), -1) : 0;
    json_t *msgs = json_array();
    if (o->system) json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", o->system));
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", o->prompt));
    chat_options co = {.enable_thinking = o->no_think ? 0 : -1, .add_generation_prompt = true};
    sg_buf text;
    sg_buf_init(&text);
    int rc = chat_render(chat_detect(m->chat_template), msgs, NULL, &co, &text, &err);
    if (!rc) rc = tok_encode(m->tok, text.data, text.len, true, ids, &err);
    if (rc) fprintf(stderr, "smolgate: %s\n", err.msg);
    json_decref(msgs);
    sg_buf_free(&text);
    return rc;
}

int cli_run(int argc, char **argv) {
    run_opts o;
    if (parse_run_opts(argc, argv, &o, "run")) return 2;
    sg_model *m = load_or_die(o.model);
    if (!m) return 1;
    sg_ids prompt = {0}, stop_ids = {0};
    int rc = 1;
    sg_infer *inf = NULL;
    print_ctx pc = {.print_ids = o.print_ids, .tok = m->tok, .logprobs = o.logprobs ? json_array() : NULL};
    sg_error err = {{0}};
    if (build_prompt(&o, m, &prompt)) goto out;
    if (o.chat_template) add_turn_end_ids(m, &stop_ids);
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
    if (!o.quiet) print_stats(&res);
    rc = 0;
out:
    infer_free(inf);
    sg_ids_free(&prompt);
    sg_ids_free(&stop_ids);
    sg_ids_free(&pc.gen);
    json_decref(pc.logprobs);
    model_free(m);
    return rc;
}

int cli_eval(int argc, char **argv) {
    run_opts o;
    if (parse_run_opts(argc, argv, &o, "eval")) return 2;
    if (!o.logits_path) { fprintf(stderr, "smolgate: eval needs --logits FILE\n"); return 2; }
    sg_model *m = load_or_die(o.model);
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
    if (argc < 1) { fputs("usage: smolgate info MODEL\n", stderr); return 2; }
    sg_model *m = load_or_die(argv[0]);
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

/* ---- chat ---- */

typedef struct chat_print {
    sg_buf answer;
} chat_print;

static int chat_token(void *p, int32_t id, const char *text, size_t len, const sg_sample_info *info) {
    chat_print *cp = p;
    (void)id; (void)info;
    if (text && len) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        sg_buf_append(&cp->answer, text, len);
    }
    return 0;
}

int cli_chat(int argc, char **argv) {
    run_opts o;
    if (parse_run_opts(argc, argv, &o, "chat")) return 2;
    if (o.gp.max_tokens == 256) o.gp.max_tokens = 2048;
    sg_model *m = load_or_die(o.model);
    if (!m) return 1;
    if (!m->tok) { fprintf(stderr, "smolgate: %s has no tokenizer\n", o.model); model_free(m); return 1; }
    sg_error err = {{0}};
    sg_infer *inf = infer_new(m, &o.ip, &err);
    if (!inf) { fprintf(stderr, "smolgate: %s\n", err.msg); model_free(m); return 1; }
    sg_ids stop_ids = {0}, cached = {0};
    add_turn_end_ids(m, &stop_ids);
    o.gp.stop_ids = stop_ids.ids;
    o.gp.n_stop_ids = stop_ids.n;
    chat_kind kind = chat_detect(m->chat_template);
    json_t *msgs = json_array();
    if (o.system) json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", o.system));
    chat_options co = {.enable_thinking = o.no_think ? 0 : -1, .add_generation_prompt = true};
    bool tty = isatty(0);
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        if (!strcmp(line, "/bye") || !strcmp(line, "/exit")) break;
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", line));
        sg_buf text;
        sg_buf_init(&text);
        sg_ids ids = {0};
        if (chat_render(kind, msgs, NULL, &co, &text, &err) || tok_encode(m->tok, text.data, text.len, true, &ids, &err)) {
            fprintf(stderr, "smolgate: %s\n", err.msg);
            sg_buf_free(&text);
            sg_ids_free(&ids);
            json_array_remove(msgs, json_array_size(msgs) - 1);
            continue;
        }
        sg_buf_free(&text);
        /* Reuse the KV cache for the part of the conversation already evaluated. */
        size_t common = 0;
        while (common < cached.n && common < ids.n && cached.ids[common] == ids.ids[common]) common++;
        if (common == ids.n) common--;   /* at least one token must be evaluated for logits */
        infer_truncate(inf, (int)common);
        chat_print cp;
        sg_buf_init(&cp.answer);
        sg_gen_result res;
        if (gen_run(inf, ids.ids + common, (int)(ids.n - common), &o.gp, chat_token, &cp, &res, &err)) {
            fprintf(stderr, "\nsmolgate: %s\n", err.msg);
            infer_truncate(inf, 0);
            cached.n = 0;
        } else {
            putchar('\n');
            if (!o.quiet) print_stats(&res);
            res.n_prompt = (int)ids.n;
            /* what the cache now holds: the prompt, then the generated tokens */
            cached.n = 0;
            for (size_t i = 0; i < ids.n; i++) sg_ids_push(&cached, ids.ids[i]);
            infer_truncate(inf, (int)ids.n);   /* generated tokens are re-rendered next turn */
            json_array_append_new(msgs, json_pack("{s:s,s:s%}", "role", "assistant", "content",
                                                  cp.answer.data ? cp.answer.data : "", cp.answer.len));
        }
        sg_buf_free(&cp.answer);
        sg_ids_free(&ids);
    }
    free(line);
    json_decref(msgs);
    sg_ids_free(&stop_ids);
    sg_ids_free(&cached);
    infer_free(inf);
    model_free(m);
    return 0;
}
