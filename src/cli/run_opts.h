/* run_opts.h: the options of the engine's run, chat and eval commands, and what those
 * commands share (loading a model, ends of turn, statistics).
 *
 * One table (run_opts.c) holds every option: its names, the commands that take it, its
 * parser (by kind and offsetof into run_opts) and its help text. The defaults are those
 * of run_opts_default, and `--help` prints them from a struct so initialised, so the
 * parser, the defaults and the help cannot drift apart; docs/engine.md carries the help
 * output verbatim (tests/e2e/docs_options.sh compares them). */
#ifndef SG_RUN_OPTS_H
#define SG_RUN_OPTS_H

#include <stdbool.h>
#include <stdio.h>

#include "engine/generate.h"
#include "engine/infer.h"
#include "engine/model.h"

/* Tokens an answer may take when -n is not given. */
#define RUN_DEFAULT_MAX_TOKENS  256    /* run */
#define CHAT_DEFAULT_MAX_TOKENS 2048   /* chat: answers that reason take longer */

typedef enum { RUN_CMD_RUN = 1, RUN_CMD_CHAT = 2, RUN_CMD_EVAL = 4 } run_cmd;

#define RUN_MAX_STOPS 16

typedef struct run_opts {
    const char *model;
    const char *prompt;
    const char *ids;
    const char *logits_path;
    const char *system;
    sg_infer_params ip;
    sg_gen_params gp;
    const char *stops[RUN_MAX_STOPS];
    int n_stops;
    bool print_ids, special, bos, chat_template, no_think, quiet, logprobs, verbose_prompt;
    const char *grammar_file;       /* GBNF */
    const char *json_schema;        /* JSON text, or @FILE */
    bool json;                      /* any JSON object */
    bool no_speculate;              /* --no-speculate: gp.draft = 0 */
} run_opts;

/* The defaults of cmd (what `--help` prints). */
void run_opts_default(run_opts *o, run_cmd cmd);

/* Parses argv (after the command name) into o, starting from run_opts_default.
 * Returns 0, 1 when --help was asked for (the help is printed on stdout), or -1 on a bad
 * command line (the message and the usage are printed on stderr). */
int run_opts_parse(int argc, char **argv, run_opts *o, run_cmd cmd);

/* The usage line and one line per option of cmd, with its default. */
void run_opts_usage(FILE *f, run_cmd cmd);

/* Compiles the grammar that --grammar-file, --json-schema or --json ask for into
 * o->gp.grammar (NULL when none does). Prints the error and returns -1 on failure (a bad
 * grammar, an unsupported schema feature, more than one of the three). */
int run_load_grammar(run_opts *o);

/* Loads a model; prints the error and returns NULL on failure. */
sg_model *run_load_model(const char *path);

/* Appends the model's end-of-turn tokens (<|im_end|>, <|eot_id|>, <|end_of_text|>). */
void run_turn_end_ids(const sg_model *m, sg_ids *ids);

/* "[prompt: N tokens, X tok/s | generation: N tokens, Y tok/s | reason]" on f; the
 * reason reads "length, incomplete" when a length cut ended a constrained answer
 * before its grammar could end. */
void run_print_stats(FILE *f, const sg_gen_result *r);

#endif
