/* test_chat_repl.c: what `smolgate chat` makes of its lines (src/cli/chat_repl.c): the
 * commands and their suggestions, multi-line input, the conversation's edits, and
 * /save + /load. */
#include <stdlib.h>
#include <string.h>

#include "cli/chat_repl.h"
#include "testutil.h"

static void test_commands(void) {
    const char *arg, *sug;
    CHECK_EQ_INT(repl_command_parse("/help", &arg, &sug), REPL_HELP);
    CHECK_EQ_STR(arg, "");
    CHECK_EQ_INT(repl_command_parse("/?", &arg, &sug), REPL_HELP);
    CHECK_EQ_INT(repl_command_parse("/think", &arg, &sug), REPL_THINK);
    CHECK_EQ_INT(repl_command_parse("/no_think", &arg, &sug), REPL_NO_THINK);
    CHECK_EQ_INT(repl_command_parse("/system   Be brief.  ", &arg, &sug), REPL_SYSTEM);
    CHECK_EQ_STR(arg, "Be brief.  ");
    CHECK_EQ_INT(repl_command_parse("/save /tmp/a b.json", &arg, &sug), REPL_SAVE);
    CHECK_EQ_STR(arg, "/tmp/a b.json");
    CHECK_EQ_INT(repl_command_parse("/exit", &arg, &sug), REPL_BYE);
    CHECK_EQ_INT(repl_command_parse("/bye", &arg, &sug), REPL_BYE);
    /* a command word must match whole */
    CHECK_EQ_INT(repl_command_parse("/thinking", &arg, &sug), REPL_UNKNOWN);
    CHECK_EQ_STR(sug, "/think");
    CHECK_EQ_INT(repl_command_parse("/nothink", &arg, &sug), REPL_UNKNOWN);
    CHECK_EQ_STR(sug, "/no_think");
    CHECK_EQ_INT(repl_command_parse("/sytem x", &arg, &sug), REPL_UNKNOWN);
    CHECK_EQ_STR(sug, "/system");
    CHECK_EQ_INT(repl_command_parse("/sys", &arg, &sug), REPL_UNKNOWN);   /* a prefix of one name */
    CHECK_EQ_STR(sug, "/system");
    CHECK_EQ_INT(repl_command_parse("/frobnicate", &arg, &sug), REPL_UNKNOWN);
    CHECK(sug == NULL);
    CHECK_EQ_INT(repl_command_parse("/", &arg, &sug), REPL_UNKNOWN);
}

static void test_help_lists_commands(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    repl_help(f);
    fclose(f);
    const char *names[] = {"/help", "/think", "/no_think", "/system TEXT", "/clear", "/show", "/save FILE",
                           "/load FILE", "/bye"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) CHECK_MSG(strstr(buf, names[i]), "%s", names[i]);
    CHECK(!strstr(buf, "/exit "));   /* aliases are not listed as commands of their own */
    free(buf);
}

static const char *feed(repl_input *in, const char *line, bool *done) {
    *done = repl_input_feed(in, line, strlen(line));
    return *done ? in->text.data : NULL;
}

static void test_multiline(void) {
    repl_input in;
    repl_input_init(&in);
    bool done;
    CHECK_EQ_STR(feed(&in, "hello", &done), "hello");
    CHECK(!repl_input_open(&in));
    /* """ on a line of its own, blank lines first, closing """ on its own line */
    CHECK(!feed(&in, "\"\"\"", &done) && !done && repl_input_open(&in));
    feed(&in, "", &done);
    feed(&in, "first", &done);
    feed(&in, "", &done);
    feed(&in, "/bye is text here", &done);
    CHECK(!done);
    CHECK_EQ_STR(feed(&in, "\"\"\"", &done), "first\n\n/bye is text here");
    CHECK(!repl_input_open(&in));
    /* text after the opening marker and before the closing one */
    feed(&in, "\"\"\"one", &done);
    CHECK_EQ_STR(feed(&in, "two\"\"\"", &done), "one\ntwo");
    CHECK_EQ_STR(feed(&in, "\"\"\"inline\"\"\"", &done), "inline");
    /* backslash continuation */
    CHECK(!feed(&in, "a \\", &done) && repl_input_open(&in));
    CHECK(!feed(&in, "b\\", &done));
    CHECK_EQ_STR(feed(&in, "c", &done), "a \nb\nc");
    /* reset forgets an open message */
    feed(&in, "\"\"\"lost", &done);
    repl_input_reset(&in);
    CHECK(!repl_input_open(&in));
    CHECK_EQ_STR(feed(&in, "kept", &done), "kept");
    repl_input_free(&in);
}

static json_t *msg(const char *role, const char *content) {
    return json_pack("{s:s,s:s}", "role", role, "content", content);
}

static void test_conversation(void) {
    json_t *m = json_array();
    CHECK(repl_system(m) == NULL);
    json_array_append_new(m, msg("user", "hi"));
    repl_set_system(m, "Be brief.");
    CHECK_EQ_INT(json_array_size(m), 2);
    CHECK_EQ_STR(repl_system(m), "Be brief.");
    repl_set_system(m, "Be long.");
    CHECK_EQ_INT(json_array_size(m), 2);
    CHECK_EQ_STR(repl_system(m), "Be long.");
    json_array_append_new(m, msg("assistant", "hello"));
    repl_clear(m);
    CHECK_EQ_INT(json_array_size(m), 1);
    CHECK_EQ_STR(repl_system(m), "Be long.");
    repl_set_system(m, "");
    CHECK_EQ_INT(json_array_size(m), 0);
    json_array_append_new(m, msg("user", "hi"));
    repl_clear(m);
    CHECK_EQ_INT(json_array_size(m), 0);
    json_decref(m);
}

static void test_save_load(void) {
    const char *dir = tu_tmpdir();
    json_t *m = json_array();
    json_array_append_new(m, msg("system", "S"));
    json_array_append_new(m, msg("user", "line 1\nline 2 \"quoted\" é"));
    json_array_append_new(m, msg("assistant", "A"));
    char *path = strdup(tu_path("%s/conv.json", dir));
    sg_error err = {{0}};
    CHECK(repl_save(m, path, &err) == 0);
    size_t len;
    char *text = tu_read(path, &len);
    CHECK(text && len > 0 && text[len - 1] == '\n');
    CHECK(text && strstr(text, "\"role\": \"system\""));
    free(text);
    json_t *back = repl_load(path, &err);
    CHECK_MSG(back && json_equal(back, m), "%s", err.msg);
    json_decref(back);

    /* an OpenAI request body loads too */
    char *req = strdup(tu_path("%s/req.json", dir));
    const char *body = "{\"model\": \"x\", \"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}";
    tu_write(req, body, strlen(body));
    back = repl_load(req, &err);
    CHECK(back && json_array_size(back) == 1);
    json_decref(back);

    /* bad files: errors with the file name, no result */
    const char *bad[] = {"not json", "{\"x\": 1}", "[{\"role\": \"wizard\", \"content\": \"x\"}]",
                         "[{\"content\": \"x\"}]", "[{\"role\": \"user\", \"content\": 3}]", "[1]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tu_write(req, bad[i], strlen(bad[i]));
        err.msg[0] = 0;
        back = repl_load(req, &err);
        CHECK_MSG(back == NULL && strstr(err.msg, req), "%s -> %s", bad[i], err.msg);
        json_decref(back);
    }
    CHECK(repl_load(tu_path("%s/missing.json", dir), &err) == NULL);
    CHECK(repl_save(m, tu_path("%s/no/such/dir.json", dir), &err) != 0);
    free(path);
    free(req);
    json_decref(m);
}

int main(void) {
    RUN(test_commands);
    RUN(test_help_lists_commands);
    RUN(test_multiline);
    RUN(test_conversation);
    RUN(test_save_load);
    return tu_finish("test_chat_repl");
}
