/* chat_repl.h: what `smolgate chat` does with the lines it reads, apart from the terminal
 * and the model: the slash commands, multi-line input, and the conversation as an
 * OpenAI-style JSON array of messages (edited, saved, loaded).
 *
 * Kept free of terminal and model code so that it can be tested alone (test_chat_repl.c);
 * cmd_chat.c is the loop that reads lines and runs the model. */
#ifndef SG_CHAT_REPL_H
#define SG_CHAT_REPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/buf.h"
#include "common/error.h"

/* ---- commands ---- */

typedef enum {
    REPL_HELP, REPL_THINK, REPL_NO_THINK, REPL_SYSTEM, REPL_CLEAR, REPL_SHOW,
    REPL_SAVE, REPL_LOAD, REPL_BYE,
    REPL_UNKNOWN,   /* a slash word that names no command */
} repl_cmd;

/* Parses a line that starts with '/': the command, and in *arg its argument (the rest
 * of the line after the command word and its spaces; "" when none). For REPL_UNKNOWN,
 * *suggestion is the closest command name ("/think" for "/thinl") when one is close
 * (the only name the word begins, a name the word begins with, or one within 2
 * edits), else NULL. */
repl_cmd repl_command_parse(const char *line, const char **arg, const char **suggestion);

/* The commands and what they do, one per line. */
void repl_help(FILE *f);

/* ---- multi-line input ----
 * A line that starts with """ opens a message that ends at a line ending with """ (both
 * markers removed; """text""" on one line is a message of its own). A line ending with a
 * backslash continues on the next line (the backslash removed). Lines join with "\n". */
typedef struct repl_input {
    sg_buf text;
    enum { REPL_IN_LINE, REPL_IN_QUOTED, REPL_IN_CONTINUED } state;
} repl_input;

void repl_input_init(repl_input *in);
void repl_input_free(repl_input *in);
/* Feeds one line (without its newline). Returns true when a message is complete: its
 * text is then in->text (NUL-terminated), until the next feed. */
bool repl_input_feed(repl_input *in, const char *line, size_t len);
/* True while a message is open (the prompt shows "... "). */
bool repl_input_open(const repl_input *in);
/* Forgets an open message. */
void repl_input_reset(repl_input *in);

/* ---- the conversation ---- */

/* Sets the system message (the first message, inserted when there is none); text NULL
 * or "" removes it. */
void repl_set_system(json_t *msgs, const char *text);
/* The system message's text, or NULL. */
const char *repl_system(const json_t *msgs);
/* Forgets every message but the system message. */
void repl_clear(json_t *msgs);

/* Writes the messages as a JSON array (two-space indent, a newline at the end). */
int repl_save(const json_t *msgs, const char *path, sg_error *err);
/* Reads messages written by repl_save, or an OpenAI request body ({"messages": [...]}):
 * a new reference to the array. Each message must be an object with role system,
 * developer, user, assistant or tool, and content a string, null or an array (text parts,
 * which the chat template then checks). */
json_t *repl_load(const char *path, sg_error *err);

#endif
