/* run_opts.c: see run_opts.h. */
#include "cli/run_opts.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/mapfile.h"
#include "engine/dtype.h"
#include "engine/grammar.h"
#include "engine/sampler.h"
#include "hub/hub.h"

#define STR_(x) #x
#define STR(x) STR_(x)

typedef enum {
    OPT_HELP,
    OPT_FLAG,      /* bool */
    OPT_INT,       /* int, in [lo, hi] */
    OPT_FLOAT,     /* float */
    OPT_U64,       /* uint64_t */
    OPT_STR,       /* const char * */
    OPT_STOP,      /* appended to stops[] */
    OPT_KV_TYPE,   /* sg_dtype: f16 or f32 */
    OPT_LOGPROBS,  /* int n_logprobs, and logprobs = true */
} opt_kind;

typedef struct run_option {
    const char *names;    /* "-n, --max-tokens": each name a word of its own. A name may
                             have a row per command, when the help differs */
    const char *arg;      /* the value's placeholder; NULL for flags */
    opt_kind kind;
    size_t off;           /* offsetof(run_opts, the field) */
    long lo, hi;          /* OPT_INT bounds */
    unsigned cmds;        /* RUN_CMD_* that take it */
    const char *help;
    const char *zero;     /* the default's words when it is 0 ("all CPUs"); NULL: "0" */
    bool no_default;      /* nothing to say about the default (flags, texts) */
} run_option;

#define ALL (RUN_CMD_RUN | RUN_CMD_CHAT | RUN_CMD_EVAL)
#define GEN (RUN_CMD_RUN | RUN_CMD_CHAT)
#define F(field) offsetof(run_opts, field)

static const run_option options[] = {
    {"-h, --help", NULL, OPT_HELP, 0, 0, 0, ALL, "this help", NULL, true},
    {"-p, --prompt", "TEXT", OPT_STR, F(prompt), 0, 0, RUN_CMD_RUN | RUN_CMD_EVAL, "prompt text", NULL, true},
    {"--ids", "1,2,3", OPT_STR, F(ids), 0, 0, RUN_CMD_RUN | RUN_CMD_EVAL, "prompt as token ids", NULL, true},
    {"--logits", "FILE", OPT_STR, F(logits_path), 0, 0, RUN_CMD_EVAL,
     "write float32 logits, shape (n_ids, vocab)", NULL, true},
    {"--chat", NULL, OPT_FLAG, F(chat_template), 0, 0, RUN_CMD_RUN, "wrap the prompt in the model's chat template", NULL, true},
    {"--system", "TEXT", OPT_STR, F(system), 0, 0, RUN_CMD_RUN, "system message (with --chat)", NULL, true},
    {"--system", "TEXT", OPT_STR, F(system), 0, 0, RUN_CMD_CHAT, "system message", NULL, true},
    {"--no-think", NULL, OPT_FLAG, F(no_think), 0, 0, RUN_CMD_RUN, "SmolLM3: reasoning off (with --chat)", NULL, true},
    {"--no-think", NULL, OPT_FLAG, F(no_think), 0, 0, RUN_CMD_CHAT, "SmolLM3: reasoning off (/think turns it on)", NULL, true},
    {"-n, --max-tokens", "N", OPT_INT, F(gp.max_tokens), 0, 1 << 24, GEN,
     "tokens to generate per answer; 0: until the context is full", NULL, false},
    {"--temp", "T", OPT_FLOAT, F(gp.sampling.temperature), 0, 0, GEN, "temperature; 0: greedy", NULL, false},
    {"--top-k", "K", OPT_INT, F(gp.sampling.top_k), 0, 1 << 24, GEN, "keep the K likeliest tokens; 0: off", NULL, false},
    {"--top-p", "P", OPT_FLOAT, F(gp.sampling.top_p), 0, 0, GEN, "nucleus sampling; 1: off", NULL, false},
    {"--min-p", "P", OPT_FLOAT, F(gp.sampling.min_p), 0, 0, GEN, "drop tokens below P times the likeliest; 0: off", NULL, false},
    {"--repeat-penalty", "R", OPT_FLOAT, F(gp.sampling.repetition_penalty), 0, 0, GEN,
     "divide the logits of repeated tokens; 1: off", NULL, false},
    {"--presence-penalty", "P", OPT_FLOAT, F(gp.sampling.presence_penalty), 0, 0, GEN,
     "subtract from tokens already present; 0: off", NULL, false},
    {"--frequency-penalty", "F", OPT_FLOAT, F(gp.sampling.frequency_penalty), 0, 0, GEN,
     "subtract count times F; 0: off", NULL, false},
    {"--penalty-last-n", "N", OPT_INT, F(gp.sampling.penalty_last_n), 0, 1 << 24, GEN,
     "tokens the penalties look back on; 0: all", NULL, false},
    {"--seed", "S", OPT_U64, F(gp.sampling.seed), 0, 0, GEN, "sampling seed", NULL, false},
    {"--stop", "TEXT", OPT_STOP, 0, 0, 0, GEN, "stop string (repeatable, up to " STR(RUN_MAX_STOPS) ")", NULL, true},
    {"--grammar-file", "FILE", OPT_STR, F(grammar_file), 0, 0, RUN_CMD_RUN,
     "constrain the output to a GBNF grammar (llama.cpp syntax, root rule 'root')", NULL, true},
    {"--json-schema", "JSON|@FILE", OPT_STR, F(json_schema), 0, 0, RUN_CMD_RUN,
     "constrain the output to a JSON Schema (OpenAI's strict subset)", NULL, true},
    {"--json", NULL, OPT_FLAG, F(json), 0, 0, RUN_CMD_RUN, "constrain the output to a JSON object", NULL, true},
    {"--draft", "N", OPT_INT, F(gp.draft), 0, SPEC_MAX_DRAFT, GEN,
     "speculative decoding: tokens drafted per step by prompt lookup, at most; 0: off", NULL, false},
    {"--no-speculate", NULL, OPT_FLAG, F(no_speculate), 0, 0, GEN, "speculative decoding off (--draft 0)", NULL, true},
    {"--ignore-eos", NULL, OPT_FLAG, F(gp.ignore_eos), 0, 0, GEN,
     "keep generating after the end-of-sequence and end-of-turn tokens", NULL, true},
    {"--print-ids", NULL, OPT_FLAG, F(print_ids), 0, 0, RUN_CMD_RUN, "print generated ids as a JSON array instead of text", NULL, true},
    {"--logprobs", "N", OPT_LOGPROBS, F(gp.sampling.n_logprobs), 0, SG_MAX_LOGPROBS, RUN_CMD_RUN,
     "print OpenAI-style logprobs (chosen token + N alternatives) as JSON", NULL, true},
    {"--special", NULL, OPT_FLAG, F(special), 0, 0, RUN_CMD_RUN | RUN_CMD_EVAL, "parse special tokens in the prompt text", NULL, true},
    {"--bos", NULL, OPT_FLAG, F(bos), 0, 0, RUN_CMD_RUN | RUN_CMD_EVAL, "start the prompt with the BOS token", NULL, true},
    {"--verbose-prompt", NULL, OPT_FLAG, F(verbose_prompt), 0, 0, GEN,
     "print the rendered prompt (chat template) before each answer", NULL, true},
    {"-t, --threads", "N", OPT_INT, F(ip.n_threads), 1, 1024, ALL, "threads", "all CPUs", false},
    {"-c, --ctx", "N", OPT_INT, F(ip.n_ctx), 1, 1 << 24, ALL, "KV cache positions",
     "min(model, " STR(INFER_DEFAULT_CTX) ")", false},
    {"--batch", "N", OPT_INT, F(ip.n_batch), 1, 4096, ALL, "prompt tokens per step", NULL, false},
    {"--kv-type", "f16|f32", OPT_KV_TYPE, F(ip.kv_type), 0, 0, ALL, "KV cache type", NULL, false},
    {"-q, --quiet", NULL, OPT_FLAG, F(quiet), 0, 0, ALL, "no statistics on stderr", NULL, true},
};

#undef F

static const char *cmd_name(run_cmd cmd) {
    return cmd == RUN_CMD_CHAT ? "chat" : cmd == RUN_CMD_EVAL ? "eval" : "run";
}

void run_opts_default(run_opts *o, run_cmd cmd) {
    memset(o, 0, sizeof *o);
    infer_params_default(&o->ip);
    o->ip.n_batch = INFER_DEFAULT_BATCH;
    gen_params_default(&o->gp);
    o->gp.max_tokens = cmd == RUN_CMD_CHAT ? CHAT_DEFAULT_MAX_TOKENS : RUN_DEFAULT_MAX_TOKENS;
}

/* True when name is one of the option's names ("-n, --max-tokens"). */
static bool option_named(const run_option *op, const char *name) {
    size_t n = strlen(name);
    for (const char *p = op->names; (p = strstr(p, name)); p += n) {
        bool starts = p == op->names || p[-1] == ' ';
        bool ends = p[n] == 0 || p[n] == ',';
        if (starts && ends) return true;
    }
    return false;
}

/* The default's text for the help, from a default-initialised run_opts. */
static void default_text(const run_option *op, const run_opts *d, char *buf, size_t cap) {
    const char *field = (const char *)d + op->off;
    double zero_check = 1;
    switch (op->kind) {
    case OPT_INT: {
        int v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, cap, "%d", v);
        zero_check = v;
        break;
    }
    case OPT_FLOAT: {
        float v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, cap, "%g", v);
        zero_check = v;
        break;
    }
    case OPT_U64: {
        uint64_t v;
        memcpy(&v, field, sizeof v);
        snprintf(buf, cap, "%llu", (unsigned long long)v);
        zero_check = (double)v;
        break;
    }
    case OPT_KV_TYPE: {
        sg_dtype t;
        memcpy(&t, field, sizeof t);
        snprintf(buf, cap, "%s", t == SG_F32 ? "f32" : "f16");
        break;
    }
    default:
        buf[0] = 0;
    }
    if (zero_check == 0 && op->zero) snprintf(buf, cap, "%s", op->zero);
}

void run_opts_usage(FILE *f, run_cmd cmd) {
    static const char *what[] = {[RUN_CMD_RUN] = "generate a completion of a prompt (streams to stdout)",
                                 [RUN_CMD_CHAT] = "talk with the model (type /help once started)",
                                 [RUN_CMD_EVAL] = "write the logits of every prompt position"};
    fprintf(f, "usage: smolgate %s MODEL [options]: %s\n", cmd_name(cmd), what[cmd]);
    run_opts d;
    run_opts_default(&d, cmd);
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const run_option *op = &options[i];
        if (!(op->cmds & cmd)) continue;
        char left[64], dflt[64];
        snprintf(left, sizeof left, "%s%s%s", op->names, op->arg ? " " : "", op->arg ? op->arg : "");
        default_text(op, &d, dflt, sizeof dflt);
        if (op->no_default || !dflt[0]) fprintf(f, "  %-26s %s\n", left, op->help);
        else fprintf(f, "  %-26s %s (default %s)\n", left, op->help, dflt);
    }
}

static int parse_value(const run_option *op, const char *name, const char *v, run_opts *o) {
    char *field = (char *)o + op->off;
    long l;
    double d;
    switch (op->kind) {
    case OPT_INT: {
        if (cli_int(name, v, op->lo, op->hi, &l)) return -1;
        int x = (int)l;
        memcpy(field, &x, sizeof x);
        return 0;
    }
    case OPT_FLOAT: {
        if (cli_float(name, v, &d)) return -1;
        float x = (float)d;
        memcpy(field, &x, sizeof x);
        return 0;
    }
    case OPT_U64: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || errno || v[0] == '-') {
            fprintf(stderr, "smolgate: %s needs a non-negative integer\n", name);
            return -1;
        }
        uint64_t u = x;
        memcpy(field, &u, sizeof u);
        return 0;
    }
    case OPT_STR:
        memcpy(field, &v, sizeof v);
        return 0;
    case OPT_STOP:
        if (o->n_stops == RUN_MAX_STOPS) {
            fprintf(stderr, "smolgate: at most %d --stop strings\n", RUN_MAX_STOPS);
            return -1;
        }
        o->stops[o->n_stops++] = v;
        return 0;
    case OPT_KV_TYPE: {
        sg_dtype t;
        if (!strcasecmp(v, "f16")) t = SG_F16;
        else if (!strcasecmp(v, "f32")) t = SG_F32;
        else { fprintf(stderr, "smolgate: %s is f16 or f32\n", name); return -1; }
        memcpy(field, &t, sizeof t);
        return 0;
    }
    case OPT_LOGPROBS: {
        if (cli_int(name, v, op->lo, op->hi, &l)) return -1;
        int x = (int)l;
        memcpy(field, &x, sizeof x);
        o->logprobs = true;
        return 0;
    }
    default:
        return -1;
    }
}

int run_opts_parse(int argc, char **argv, run_opts *o, run_cmd cmd) {
    run_opts_default(o, cmd);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (o->model) { fprintf(stderr, "smolgate: unexpected argument %s\n", a); return -1; }
            o->model = a;
            continue;
        }
        const run_option *op = NULL;
        bool known = false;   /* an option of another command */
        for (size_t k = 0; k < sizeof options / sizeof options[0] && !op; k++) {
            if (!option_named(&options[k], a)) continue;
            known = true;
            if (options[k].cmds & cmd) op = &options[k];
        }
        if (!op && known) {
            fprintf(stderr, "smolgate %s: %s is an option of another command\n", cmd_name(cmd), a);
            fprintf(stderr, "run `smolgate %s --help` for its options\n", cmd_name(cmd));
            return -1;
        }
        if (!op) {   /* "did you mean" among this command's options, from its help text */
            char *text = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&text, &len);
            if (f) { run_opts_usage(f, cmd); fclose(f); }
            cli_unknown_option(cmd_name(cmd), a, text ? text : "");
            free(text);
            return -1;
        }
        if (op->kind == OPT_HELP) { run_opts_usage(stdout, cmd); return 1; }
        if (op->kind == OPT_FLAG) { *(bool *)((char *)o + op->off) = true; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "smolgate: %s needs a value\n", a); return -1; }
        if (parse_value(op, a, argv[++i], o)) return -1;
    }
    if (!o->model) { run_opts_usage(stderr, cmd); return -1; }
    if (o->no_speculate) o->gp.draft = 0;
    o->gp.stops = o->stops;
    o->gp.n_stops = (size_t)o->n_stops;
    return 0;
}

int run_load_grammar(run_opts *o) {
    o->gp.grammar = NULL;
    if ((o->grammar_file != NULL) + (o->json_schema != NULL) + o->json > 1) {
        fprintf(stderr, "smolgate: --grammar-file, --json-schema and --json exclude each other\n");
        return -1;
    }
    sg_error err = {{0}};
    char *text = NULL;
    size_t len = 0;
    const char *path = o->grammar_file ? o->grammar_file : o->json_schema && o->json_schema[0] == '@' ? o->json_schema + 1 : NULL;
    if (path && !(text = sg_read_file(path, &len, &err))) { fprintf(stderr, "smolgate: %s\n", err.msg); return -1; }
    if (o->grammar_file) o->gp.grammar = grammar_compile_cached(GRAMMAR_GBNF, text, len, &err);
    else if (o->json_schema)
        o->gp.grammar = text ? grammar_compile_cached(GRAMMAR_JSON_SCHEMA, text, len, &err)
                             : grammar_compile_cached(GRAMMAR_JSON_SCHEMA, o->json_schema, strlen(o->json_schema), &err);
    else if (o->json) o->gp.grammar = grammar_compile_cached(GRAMMAR_JSON_OBJECT, NULL, 0, &err);
    free(text);
    if ((o->grammar_file || o->json_schema || o->json) && !o->gp.grammar) {
        fprintf(stderr, "smolgate: %s%s%s\n", o->grammar_file ? o->grammar_file : "", o->grammar_file ? ": " : "", err.msg);
        return -1;
    }
    return 0;
}

/* MODEL is a path, else the name of a pulled model ("smollm3", "OWNER/REPO:QUANT"). */
sg_model *run_load_model(const char *path) {
    sg_error err = {{0}};
    char *pulled = access(path, F_OK) ? hub_resolve(path, NULL) : NULL;
    sg_model *m = model_load(pulled ? pulled : path, &err);
    if (!m) fprintf(stderr, "smolgate: %s\n", err.msg);
    free(pulled);
    return m;
}

/* Ends of turn for chat models: <|im_end|> (SmolLM2/3), <|eot_id|> (Llama 3). */
void run_turn_end_ids(const sg_model *m, sg_ids *ids) {
    static const char *names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>"};
    if (!m->tok) return;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t id = tok_find(m->tok, names[i]);
        if (id >= 0) sg_ids_push(ids, id);
    }
}

void run_print_stats(FILE *f, const sg_gen_result *r) {
    fprintf(f, "[prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s | %s%s]\n",
            r->n_prompt, r->prompt_ms > 0 ? r->n_prompt * 1000.0 / r->prompt_ms : 0.0,
            r->n_generated, r->gen_ms > 0 ? r->n_generated * 1000.0 / r->gen_ms : 0.0, r->finish_reason,
            r->incomplete ? ", incomplete" : "");
    if (r->n_drafted)   /* speculation: what the drafts bought */
        fprintf(f, "[speculation: %d of %d drafted tokens accepted, %d tokens in %d forward passes]\n", r->n_accepted,
                r->n_drafted, r->n_generated, r->n_passes);
}
