/* cli.h: the subcommands of the smolgate binary. Each takes argc/argv after the
 * subcommand name and returns the process exit status; main() dispatches. */
#ifndef SG_CLI_H
#define SG_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

int cli_run(int argc, char **argv);
int cli_chat(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_convert(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_make_model(int argc, char **argv);
int cli_info(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_usage(int argc, char **argv);
int cli_perplexity(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_pull(int argc, char **argv);
int cli_list(int argc, char **argv);
int cli_rm(int argc, char **argv);

/* Shared helpers. */
/* Parses "1,2,3" into ids; returns -1 on a malformed list. */
int cli_parse_ids(const char *s, sg_ids *out);
/* Prints ids as a JSON array and a newline. */
void cli_print_ids(const int32_t *ids, size_t n);
/* Reads all of stdin. */
char *cli_read_stdin(size_t *len);
/* Integer / float option values with range checks; print an error and return -1. */
int cli_int(const char *opt, const char *v, long lo, long hi, long *out);
int cli_float(const char *opt, const char *v, double *out);
/* Levenshtein distance between a[0..na) and b[0..nb), for short words (each cut at 64). */
size_t cli_edit_distance(const char *a, size_t na, const char *b, size_t nb);
/* The word of `candidates` closest to `word` when it is likely a typo of it (edit
 * distance at most 1 for short words, about a third of the length for longer ones), else
 * NULL. candidates is any text: words are runs of [A-Za-z0-9_.-]; when word starts with
 * '-', only words that start with '-' count, so a usage text serves as the list. The
 * result points into a static buffer. */
const char *cli_did_you_mean(const char *word, const char *candidates);
/* "smolgate CMD: unknown option ARG (did you mean --X?)" and where the options are;
 * usage_text is the command's usage (the list of its options). */
void cli_unknown_option(const char *cmd, const char *arg, const char *usage_text);

#endif
