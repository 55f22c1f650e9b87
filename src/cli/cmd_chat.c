/* cmd_chat.c: `smolgate chat MODEL`, a conversation with a local model, as Ollama's and
 * llama.cpp's chat commands hold one.
 *
 * From a terminal, lines are read with libedit (line editing, history on the arrows);
 * from a pipe, plain lines, so that scripts can drive it. The slash commands, multi-line
 * input and the conversation's JSON live in chat_repl.c; this file is the loop, the
 * terminal and the model.
 *
 * Ctrl-C: at the prompt, libedit sees it as a key (the terminal's ISIG is off while it
 * edits) and the line is dropped, with a hint on how to exit when it was empty. During an
 * answer the terminal is back in cooked mode, so it is SIGINT: the handler sets a flag,
 * the token callback sees it and generation stops ("cancelled"). The part already written
 * stays in the conversation as the assistant's answer, as it was shown. Prompt processing
 * itself is not interrupted: the answer stops at its first token. */
#include <errno.h>
#include <histedit.h>
#include <jansson.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/chat_repl.h"
#include "cli/cli.h"
#include "cli/run_opts.h"
#include "common/buf.h"
#include "engine/chat.h"
#include "engine/dtype.h"
#include "engine/generate.h"
#include "engine/infer.h"
#include "engine/model.h"

#define EXIT_HINT "Use Ctrl + d or /bye to exit."

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct chat_session {
    run_opts o;
    sg_model *m;
    sg_infer *inf;
    chat_kind kind;
    chat_options co;
    json_t *msgs;           /* the conversation, OpenAI-style messages */
    sg_ids stop_ids;
    sg_ids cached;          /* the ids the KV cache holds (the last prompt) */
    bool tty;               /* stdin is a terminal: libedit, prompts */
    bool dim;               /* stderr is a terminal: statistics dimmed */
    EditLine *el;
    History *hist;
    repl_input in;
    char *line;             /* the line being read (stdio) */
    size_t line_cap;
    char *history_path;     /* where the history persists; NULL: nowhere */
    bool key_interrupt;     /* Ctrl-C pressed while editing */
    bool key_interrupt_empty;
} chat_session;

/* ---- reading lines ---- */

static char *prompt_fn(EditLine *el) {
    chat_session *s = NULL;
    el_get(el, EL_CLIENTDATA, &s);
    return (char *)(s && repl_input_open(&s->in) ? "... " : ">>> ");
}

/* Ctrl-C while editing: end the line, and let chat_read_line drop it. */
static unsigned char on_ctrl_c(EditLine *el, int ch) {
    (void)ch;
    chat_session *s = NULL;
    el_get(el, EL_CLIENTDATA, &s);
    const LineInfo *li = el_line(el);
    s->key_interrupt = true;
    s->key_interrupt_empty = li->lastchar == li->buffer;
    return CC_NEWLINE;
}

static void editor_open(chat_session *s) {
    setlocale(LC_CTYPE, "");   /* multibyte (UTF-8) editing */
    s->el = el_init("smolgate", stdin, stdout, stderr);
    s->hist = history_init();
    HistEvent ev;
    history(s->hist, &ev, H_SETSIZE, 1000);
    history(s->hist, &ev, H_SETUNIQUE, 1);
    el_set(s->el, EL_CLIENTDATA, s);
    el_set(s->el, EL_EDITOR, "emacs");
    el_set(s->el, EL_PROMPT, prompt_fn);
    el_set(s->el, EL_HIST, history, s->hist);
    el_set(s->el, EL_SETTY, "-d", "-isig", NULL);
    /* the wide form: the narrow one copies the two strings and never frees the copies */
    el_wset(s->el, EL_ADDFN, L"smolgate-interrupt", L"drop the line", on_ctrl_c);
    el_set(s->el, EL_BIND, "^C", "smolgate-interrupt", NULL);
    el_source(s->el, NULL);   /* ~/.editrc, as other libedit programs read it */
    /* the lines of earlier sessions: $SMOLGATE_HISTORY ("" for none), else ~/.smolgate_history */
    const char *path = getenv("SMOLGATE_HISTORY"), *home = getenv("HOME");
    if (path) s->history_path = *path ? sg_xstrdup(path) : NULL;
    else if (home && *home) {
        sg_buf b;
        sg_buf_init(&b);
        sg_buf_printf(&b, "%s/.smolgate_history", home);
        s->history_path = sg_buf_steal(&b);
    }
    if (s->history_path) history(s->hist, &ev, H_LOAD, s->history_path);   /* absent at first: fine */
}

static void editor_close(chat_session *s) {
    if (s->hist && s->history_path) {
        HistEvent ev;
        mode_t old = umask(077);   /* what was typed is nobody else's business */
        if (history(s->hist, &ev, H_SAVE, s->history_path) < 0)
            fprintf(stderr, "smolgate: cannot save the history to %s\n", s->history_path);
        umask(old);
    }
    free(s->history_path);
    if (s->el) el_end(s->el);
    if (s->hist) history_end(s->hist);
}

/* Reads one line without its newline into *line. Returns 1, 0 at the end of input, or
 * -1 when Ctrl-C dropped the line (*was_empty: nothing had been typed). */
static int chat_read_line(chat_session *s, const char **line, size_t *len, bool *was_empty) {
    if (s->tty) {
        int count = 0;
        s->key_interrupt = false;
        const char *l = el_gets(s->el, &count);
        if (s->key_interrupt) {
            fputs("^C\n", stdout);   /* the line ends here, unlike Enter's, without echo */
            *was_empty = s->key_interrupt_empty;
            return -1;
        }
        if (!l || count <= 0) { putchar('\n'); return 0; }   /* Ctrl-D: leave the prompt's line */
        size_t n = (size_t)count;
        while (n && (l[n - 1] == '\n' || l[n - 1] == '\r')) n--;
        if (n) {
            HistEvent ev;
            char *copy = sg_xstrndup(l, n);
            history(s->hist, &ev, H_ENTER, copy);
            free(copy);
        }
        *line = l;
        *len = n;
        return 1;
    }
    errno = 0;
    ssize_t n = getline(&s->line, &s->line_cap, stdin);
    if (n < 0) {
        if (errno == EINTR && interrupted) { clearerr(stdin); *was_empty = true; return -1; }
        return 0;
    }
    while (n > 0 && (s->line[n - 1] == '\n' || s->line[n - 1] == '\r')) n--;
    *line = s->line;
    *len = (size_t)n;
    return 1;
}

/* ---- the model ---- */

static uint64_t tensor_params(const sg_tensor *t) { return (uint64_t)t->rows * (uint64_t)t->cols; }

static uint64_t model_params(const sg_model *m) {
    const sg_model_config *c = &m->cfg;
    uint64_t n = tensor_params(&m->tok_embd) + (uint64_t)c->dim;
    if (!c->tied_embeddings) n += tensor_params(&m->output);
    for (int i = 0; i < c->n_layers; i++) {
        const sg_layer *l = &m->layers[i];
        n += tensor_params(&l->wq) + tensor_params(&l->wk) + tensor_params(&l->wv) + tensor_params(&l->wo) +
             tensor_params(&l->w_gate) + tensor_params(&l->w_up) + tensor_params(&l->w_down) + 2 * (uint64_t)c->dim;
    }
    return n;
}

/* "SmolLM3-3B-Q4_K_M" from ".../SmolLM3-3B-Q4_K_M.gguf" or ".../SmolLM3-3B/" */
static void model_name(const char *path, char *out, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t from = n;
    while (from && path[from - 1] != '/') from--;
    size_t len = n - from;
    if (len > 5 && !strncmp(path + from + len - 5, ".gguf", 5)) len -= 5;
    snprintf(out, cap, "%.*s", (int)len, path + from);
}

/* name (architecture, parameters, weight type), context */
static void print_model_info(const chat_session *s, FILE *f) {
    const sg_model_config *c = &s->m->cfg;
    char name[256];
    model_name(s->o.model, name, sizeof name);
    double p = (double)model_params(s->m);
    const char *unit = p >= 1e9 ? "B" : p >= 1e6 ? "M" : "K";
    double scaled = p >= 1e9 ? p / 1e9 : p >= 1e6 ? p / 1e6 : p / 1e3;
    fprintf(f, "%s (%s, %.*f%s parameters, %s), context %d of %d positions, %s template\n", name, c->arch,
            scaled < 10 ? 2 : 1, scaled, unit, dtype_info(s->m->layers[0].wq.type)->name, infer_n_ctx(s->inf),
            c->max_ctx, s->kind == CHAT_SMOLLM3 ? "SmolLM3" : "ChatML");
}

static void print_banner(const chat_session *s, FILE *f) {
    fputs("smolgate chat: ", f);
    print_model_info(s, f);
    fputs("Type a message; /help for the commands, /bye or Ctrl-D to exit.\n", f);
    if (s->kind == CHAT_SMOLLM3) fprintf(f, "Reasoning %s (/think, /no_think).\n", s->co.enable_thinking == 0 ? "off" : "on");
}

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
    return interrupted ? 1 : 0;
}

static void forget_cache(chat_session *s) {
    infer_truncate(s->inf, 0);
    s->cached.n = 0;
}

/* Renders the conversation as the next prompt (with the assistant header). */
static int render(const chat_session *s, const json_t *msgs, sg_buf *text, sg_error *err) {
    return chat_render(s->kind, msgs, NULL, &s->co, text, err);
}

/* Sends the user's message and streams the answer; the conversation keeps both. */
static void chat_answer(chat_session *s, const char *message) {
    sg_error err = {{0}};
    json_array_append_new(s->msgs, json_pack("{s:s,s:s}", "role", "user", "content", message));
    sg_buf text;
    sg_buf_init(&text);
    sg_ids ids = {0};
    if (render(s, s->msgs, &text, &err) || tok_encode(s->m->tok, text.data, text.len, true, &ids, &err)) {
        fprintf(stderr, "smolgate: %s\n", err.msg);
        json_array_remove(s->msgs, json_array_size(s->msgs) - 1);
        goto out;
    }
    if (s->o.verbose_prompt) fprintf(stderr, "%s%.*s%s\n", s->dim ? "\033[2m" : "", (int)text.len, text.data, s->dim ? "\033[0m" : "");
    if ((int)ids.n >= infer_n_ctx(s->inf)) {
        fprintf(stderr, "smolgate: the conversation (%zu tokens) no longer fits the context (%d positions): "
                "/clear to start again, or -c for a larger context\n", ids.n, infer_n_ctx(s->inf));
        json_array_remove(s->msgs, json_array_size(s->msgs) - 1);
        goto out;
    }
    /* Reuse the KV cache for the part of the conversation already evaluated. */
    size_t common = 0;
    while (common < s->cached.n && common < ids.n && s->cached.ids[common] == ids.ids[common]) common++;
    if (common == ids.n) common--;   /* at least one token must be evaluated for logits */
    infer_truncate(s->inf, (int)common);
    chat_print cp;
    sg_buf_init(&cp.answer);
    sg_gen_result res;
    interrupted = 0;
    int rc = gen_run(s->inf, ids.ids + common, (int)(ids.n - common), &s->o.gp, chat_token, &cp, &res, &err);
    putchar('\n');
    fflush(stdout);
    if (rc) {
        fprintf(stderr, "smolgate: %s\n", err.msg);
        forget_cache(s);
        json_array_remove(s->msgs, json_array_size(s->msgs) - 1);
    } else {
        /* the cache now holds the prompt; the answer is re-rendered with the next turn */
        s->cached.n = 0;
        for (size_t i = 0; i < ids.n; i++) sg_ids_push(&s->cached, ids.ids[i]);
        infer_truncate(s->inf, (int)ids.n);
        json_array_append_new(s->msgs, json_pack("{s:s,s:s%}", "role", "assistant", "content",
                                                 cp.answer.data ? cp.answer.data : "", cp.answer.len));
        if (!s->o.quiet) {
            res.n_prompt = (int)(ids.n - common);
            if (s->dim) fputs("\033[2m", stderr);
            run_print_stats(stderr, &res);
            if (s->dim) fputs("\033[0m", stderr);
        }
    }
    interrupted = 0;
    sg_buf_free(&cp.answer);
out:
    sg_buf_free(&text);
    sg_ids_free(&ids);
}

/* ---- commands ---- */

static void show(chat_session *s, const char *what) {
    if (!strcmp(what, "info")) {
        print_model_info(s, stdout);
        printf("reasoning %s, messages: %zu, system message: %s\n", s->co.enable_thinking == 0 ? "off" : "on",
               json_array_size(s->msgs), repl_system(s->msgs) ? repl_system(s->msgs) : "(none)");
    } else if (!strcmp(what, "prompt")) {
        if (!json_array_size(s->msgs)) { puts("(the conversation is empty: the prompt starts with your first message)"); return; }
        sg_buf text;
        sg_buf_init(&text);
        sg_error err = {{0}};
        if (render(s, s->msgs, &text, &err)) fprintf(stderr, "smolgate: %s\n", err.msg);
        else printf("%.*s\n", (int)text.len, text.data);
        sg_buf_free(&text);
    } else {
        printf("Usage: /show info | /show prompt\n");
    }
}

/* Runs a command line. Returns false when the chat ends. */
static bool chat_command(chat_session *s, const char *line) {
    const char *arg, *suggestion;
    sg_error err = {{0}};
    repl_cmd cmd = repl_command_parse(line, &arg, &suggestion);
    switch (cmd) {
    case REPL_HELP:
        repl_help(stdout);
        break;
    case REPL_THINK:
    case REPL_NO_THINK: {
        bool on = cmd == REPL_THINK;
        s->co.enable_thinking = on ? 1 : 0;
        printf("Reasoning %s.%s\n", on ? "on" : "off",
               s->kind == CHAT_SMOLLM3 ? "" : " (this model's chat template has no reasoning switch)");
        break;
    }
    case REPL_SYSTEM:
        if (!*arg) { printf("System message: %s\n", repl_system(s->msgs) ? repl_system(s->msgs) : "(none)"); break; }
        repl_set_system(s->msgs, arg);
        puts("Set the system message.");
        break;
    case REPL_CLEAR:
        repl_clear(s->msgs);
        forget_cache(s);
        puts("Cleared the conversation.");
        break;
    case REPL_SHOW:
        show(s, arg);
        break;
    case REPL_SAVE:
        if (!*arg) { puts("Usage: /save FILE"); break; }
        if (repl_save(s->msgs, arg, &err)) fprintf(stderr, "smolgate: %s\n", err.msg);
        else printf("Saved %zu messages to %s.\n", json_array_size(s->msgs), arg);
        break;
    case REPL_LOAD: {
        if (!*arg) { puts("Usage: /load FILE"); break; }
        json_t *msgs = repl_load(arg, &err);
        sg_buf text;
        sg_buf_init(&text);
        if (msgs && json_array_size(msgs) && render(s, msgs, &text, &err)) {
            sg_fail_wrap(&err, "%s: ", arg);
            json_decref(msgs);
            msgs = NULL;
        }
        sg_buf_free(&text);
        if (!msgs) { fprintf(stderr, "smolgate: %s\n", err.msg); break; }
        json_decref(s->msgs);
        s->msgs = msgs;
        printf("Loaded %zu messages from %s.\n", json_array_size(msgs), arg);
        break;
    }
    case REPL_BYE:
        return false;
    case REPL_UNKNOWN: {
        int n = (int)strcspn(line, " \t");
        if (suggestion) printf("Unknown command '%.*s'. Did you mean %s? (/help lists the commands)\n", n, line, suggestion);
        else printf("Unknown command '%.*s'. /help lists the commands.\n", n, line);
        break;
    }
    }
    fflush(stdout);
    return true;
}

/* ---- the loop ---- */

static int chat_loop(chat_session *s) {
    for (;;) {
        const char *line = NULL;
        size_t len = 0;
        bool was_empty = false;
        int r = chat_read_line(s, &line, &len, &was_empty);
        if (r == 0) break;
        if (r < 0) {
            if (repl_input_open(&s->in)) repl_input_reset(&s->in);
            else if (was_empty) puts(EXIT_HINT);
            fflush(stdout);
            continue;
        }
        if (!repl_input_open(&s->in)) {
            if (!len) continue;
            if (line[0] == '/') {
                char *cmd = sg_xstrndup(line, len);
                bool go_on = chat_command(s, cmd);
                free(cmd);
                if (!go_on) break;
                continue;
            }
        }
        if (!repl_input_feed(&s->in, line, len)) continue;
        if (!s->in.text.len) continue;
        char *message = sg_xstrndup(s->in.text.data, s->in.text.len);
        chat_answer(s, message);
        free(message);
    }
    return 0;
}

int cli_chat(int argc, char **argv) {
    chat_session s;
    memset(&s, 0, sizeof s);
    int prc = run_opts_parse(argc, argv, &s.o, RUN_CMD_CHAT);
    if (prc) return prc > 0 ? 0 : 2;
    if (!(s.m = run_load_model(s.o.model))) return 1;
    int rc = 1;
    sg_error err = {{0}};
    if (!s.m->tok) { fprintf(stderr, "smolgate: %s has no tokenizer\n", s.o.model); goto out; }
    if (!(s.inf = infer_new(s.m, &s.o.ip, &err))) { fprintf(stderr, "smolgate: %s\n", err.msg); goto out; }
    run_turn_end_ids(s.m, &s.stop_ids);
    s.o.gp.stop_ids = s.stop_ids.ids;
    s.o.gp.n_stop_ids = s.stop_ids.n;
    s.kind = chat_detect(s.m->chat_template);
    s.co = (chat_options){.enable_thinking = s.o.no_think ? 0 : -1, .add_generation_prompt = true};
    s.msgs = json_array();
    repl_set_system(s.msgs, s.o.system);
    repl_input_init(&s.in);
    s.tty = isatty(0);
    s.dim = isatty(2);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;   /* no SA_RESTART: a blocked read returns EINTR */
    sigemptyset(&sa.sa_mask);
    struct sigaction old_sa;
    sigaction(SIGINT, &sa, &old_sa);

    if (s.tty) editor_open(&s);
    if (s.tty || !s.o.quiet) print_banner(&s, s.tty ? stdout : stderr);
    fflush(stdout);
    rc = chat_loop(&s);
    editor_close(&s);
    sigaction(SIGINT, &old_sa, NULL);
out:
    free(s.line);
    repl_input_free(&s.in);
    json_decref(s.msgs);
    sg_ids_free(&s.stop_ids);
    sg_ids_free(&s.cached);
    infer_free(s.inf);
    model_free(s.m);
    return rc;
}
