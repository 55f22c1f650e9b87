/* chat_repl.c: see chat_repl.h. */
#include "cli/chat_repl.h"

#include <errno.h>
#include <string.h>

#include "cli/cli.h"

/* ---- commands ---- */

typedef struct repl_command {
    const char *name;
    repl_cmd cmd;
    const char *arg;    /* the argument's placeholder in the help; NULL: none */
    const char *help;   /* NULL: an alias, not listed */
} repl_command;

static const repl_command commands[] = {
    {"/help", REPL_HELP, NULL, "this help"},
    {"/?", REPL_HELP, NULL, NULL},
    {"/think", REPL_THINK, NULL, "reasoning on (SmolLM3: the model thinks before it answers)"},
    {"/no_think", REPL_NO_THINK, NULL, "reasoning off"},
    {"/system", REPL_SYSTEM, "TEXT", "set the system message (without TEXT: show it)"},
    {"/clear", REPL_CLEAR, NULL, "forget the conversation (the system message stays)"},
    {"/show", REPL_SHOW, "info|prompt", "the model, or the prompt the template renders for the conversation"},
    {"/save", REPL_SAVE, "FILE", "write the conversation as JSON messages (OpenAI's shape)"},
    {"/load", REPL_LOAD, "FILE", "replace the conversation with the messages in FILE"},
    {"/bye", REPL_BYE, NULL, "exit (also /exit, or Ctrl-D)"},
    {"/exit", REPL_BYE, NULL, NULL},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

/* The command a mistyped word most likely meant: the only name that starts with the word
 * ("/sys"), else the longest name the word starts with ("/thinking"), else the nearest
 * name within 2 edits ("/thnik"). */
static const char *suggest(const char *word, size_t n) {
    const char *best = NULL, *starts = NULL, *prefix_of = NULL;
    size_t best_d = 3;
    int n_prefix = 0;
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const char *name = commands[i].name;
        size_t len = strlen(name);
        if (len < 3) continue;   /* "/?" */
        size_t d = cli_edit_distance(word, n, name, len);
        if (d < best_d) { best_d = d; best = name; }
        if (n > len && !strncmp(word, name, len) && (!starts || len > strlen(starts))) starts = name;
        if (n >= 3 && n < len && !strncmp(name, word, n)) { n_prefix++; prefix_of = name; }
    }
    if (n_prefix == 1) return prefix_of;
    if (starts) return starts;
    return best;
}

repl_cmd repl_command_parse(const char *line, const char **arg, const char **suggestion) {
    size_t n = strcspn(line, " \t");
    const char *rest = line + n;
    rest += strspn(rest, " \t");
    *arg = rest;
    *suggestion = NULL;
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strlen(commands[i].name) == n && !strncmp(commands[i].name, line, n)) return commands[i].cmd;
    *suggestion = suggest(line, n);
    return REPL_UNKNOWN;
}

void repl_help(FILE *f) {
    fputs("Commands:\n", f);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const repl_command *c = &commands[i];
        if (!c->help) continue;
        char left[40];
        snprintf(left, sizeof left, "%s%s%s", c->name, c->arg ? " " : "", c->arg ? c->arg : "");
        fprintf(f, "  %-22s %s\n", left, c->help);
    }
    fputs("\n"
          "Use \"\"\" to begin and end a message of several lines, or end a line with \\ to go on.\n"
          "Ctrl-C stops an answer (what was written stays in the conversation); Ctrl-D exits.\n", f);
}

/* ---- multi-line input ---- */

static const char QUOTES[] = "\"\"\"";

void repl_input_init(repl_input *in) {
    sg_buf_init(&in->text);
    in->state = REPL_IN_LINE;
}

void repl_input_free(repl_input *in) { sg_buf_free(&in->text); }

bool repl_input_open(const repl_input *in) { return in->state != REPL_IN_LINE; }

void repl_input_reset(repl_input *in) {
    sg_buf_reset(&in->text);
    in->state = REPL_IN_LINE;
}

static bool ends_with_quotes(const char *s, size_t n) { return n >= 3 && !memcmp(s + n - 3, QUOTES, 3); }

static bool complete(repl_input *in) {
    in->state = REPL_IN_LINE;
    sg_buf_append(&in->text, "", 1);   /* NUL-terminate */
    in->text.len--;
    return true;
}

/* Appends a line of the message, after a newline unless it is the first. */
static void add_line(repl_input *in, const char *line, size_t len, bool first) {
    if (!first) sg_buf_append(&in->text, "\n", 1);
    sg_buf_append(&in->text, line, len);
}

bool repl_input_feed(repl_input *in, const char *line, size_t len) {
    switch (in->state) {
    case REPL_IN_QUOTED:
        /* blank lines before the text are dropped, as is the newline before a closing """ */
        if (ends_with_quotes(line, len)) {
            if (len > 3) add_line(in, line, len - 3, in->text.len == 0);
            return complete(in);
        }
        add_line(in, line, len, in->text.len == 0);
        return false;
    case REPL_IN_CONTINUED:
        add_line(in, line, len, false);
        break;
    case REPL_IN_LINE:
        sg_buf_reset(&in->text);
        if (len >= 3 && !memcmp(line, QUOTES, 3)) {
            line += 3, len -= 3;
            if (ends_with_quotes(line, len)) {
                sg_buf_append(&in->text, line, len - 3);
                return complete(in);
            }
            in->state = REPL_IN_QUOTED;
            sg_buf_append(&in->text, line, len);
            return false;
        }
        sg_buf_append(&in->text, line, len);
        break;
    }
    /* a plain line: continued when it ends with a backslash */
    if (in->text.len && in->text.data[in->text.len - 1] == '\\') {
        in->text.len--;
        in->state = REPL_IN_CONTINUED;
        return false;
    }
    return complete(in);
}

/* ---- the conversation ---- */

static bool is_system(const json_t *msg) {
    const char *role = json_string_value(json_object_get(msg, "role"));
    return role && !strcmp(role, "system");
}

const char *repl_system(const json_t *msgs) {
    json_t *first = json_array_get(msgs, 0);
    return first && is_system(first) ? json_string_value(json_object_get(first, "content")) : NULL;
}

void repl_set_system(json_t *msgs, const char *text) {
    bool has = is_system(json_array_get(msgs, 0));
    if (!text || !*text) {
        if (has) json_array_remove(msgs, 0);
        return;
    }
    json_t *m = json_pack("{s:s,s:s}", "role", "system", "content", text);
    if (has) json_array_set_new(msgs, 0, m);
    else json_array_insert_new(msgs, 0, m);
}

void repl_clear(json_t *msgs) {
    size_t keep = is_system(json_array_get(msgs, 0)) ? 1 : 0;
    while (json_array_size(msgs) > keep) json_array_remove(msgs, json_array_size(msgs) - 1);
}

int repl_save(const json_t *msgs, const char *path, sg_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return sg_fail(err, "cannot write %s: %s", path, strerror(errno));
    int rc = json_dumpf(msgs, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!rc && fputc('\n', f) == EOF) rc = -1;
    if (fclose(f)) rc = -1;
    return rc ? sg_fail(err, "cannot write %s", path) : 0;
}

json_t *repl_load(const char *path, sg_error *err) {
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        sg_fail(err, "%s: %s (line %d)", path, jerr.text, jerr.line);
        return NULL;
    }
    json_t *msgs = json_is_object(doc) ? json_object_get(doc, "messages") : doc;
    if (!json_is_array(msgs)) {
        sg_fail(err, "%s: not a JSON array of messages (nor an object with \"messages\")", path);
        json_decref(doc);
        return NULL;
    }
    static const char *roles[] = {"system", "developer", "user", "assistant", "tool"};
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        json_t *m = json_array_get(msgs, i), *content = json_object_get(m, "content");
        const char *role = json_string_value(json_object_get(m, "role"));
        bool known = false;
        for (size_t r = 0; role && r < sizeof roles / sizeof roles[0]; r++) known |= !strcmp(role, roles[r]);
        if (!json_is_object(m) || !known || (content && !json_is_string(content) && !json_is_null(content) &&
                                             !json_is_array(content))) {
            sg_fail(err, "%s: message %zu: want {\"role\": system|developer|user|assistant|tool, \"content\": text}",
                    path, i + 1);
            json_decref(doc);
            return NULL;
        }
    }
    json_incref(msgs);
    json_decref(doc);
    return msgs;
}
