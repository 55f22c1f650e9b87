/* chat.c: the SmolLM3 and ChatML chat templates in C, and the answer parser.
 *
 * Why not a Jinja interpreter: the engine runs two known templates, and a few hundred
 * lines that follow them step by step are easier to trust than a template language.
 * Byte-exactness is the contract, so the Python semantics the templates lean on are
 * reproduced here: str.replace / rstrip / lstrip, repr() of a dict (Jinja's |string on
 * a tool definition), json.dumps spacing, float repr. tests/test_chat.c compares every
 * render with output from Jinja itself (tools/chat/gen_fixtures.py).
 *
 * The answer parser is one state machine (chat_stream) used both for streaming and,
 * fed the whole text at once, for chat_parse_answer, so the two cannot disagree. */
#include "engine/chat.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- small text helpers ---------------------------------------------------------- */

static bool has(const char *s, size_t n, const char *needle) {
    return memmem(s, n, needle, strlen(needle)) != NULL;
}

/* Python str.replace(old, "") on s[0..n): non-overlapping, left to right. */
static void remove_all(sg_buf *out, const char *s, size_t n, const char *old) {
    size_t m = strlen(old);
    const char *p = s, *end = s + n, *hit;
    while ((hit = memmem(p, (size_t)(end - p), old, m)) != NULL) {
        sg_buf_append(out, p, (size_t)(hit - p));
        p = hit + m;
    }
    sg_buf_append(out, p, (size_t)(end - p));
}

/* Decodes one UTF-8 character at s (n > 0 bytes left); returns its length, or 1 with
 * *cp = the byte itself when the sequence is malformed. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    size_t len;
    uint32_t v;
    if (c < 0x80) { *cp = c; return 1; }
    else if ((c & 0xe0) == 0xc0) { len = 2; v = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; v = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; v = c & 0x07; }
    else { *cp = c; return 1; }
    if (len > n) { *cp = c; return 1; }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) { *cp = c; return 1; }
        v = (v << 6) | (s[i] & 0x3f);
    }
    *cp = v;
    return len;
}

/* Python's str.isspace(): the characters rstrip() removes. */
static bool py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Length of s[0..n) after Python's rstrip(). */
static size_t py_rstrip_len(const char *s, size_t n) {
    while (n > 0) {
        size_t start = n - 1;  /* back up to the lead byte of the last character */
        while (start > 0 && n - start < 4 && ((unsigned char)s[start] & 0xc0) == 0x80) start--;
        uint32_t cp;
        size_t len = utf8_decode((const unsigned char *)s + start, n - start, &cp);
        if (start + len != n) { start = n - 1; cp = (unsigned char)s[start]; }
        if (!py_isspace(cp)) break;
        n = start;
    }
    return n;
}

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* ---- Python value formatting (repr and json.dumps of json.loads output) ------------ */

/* Code points Python's str.isprintable() rejects, apart from unassigned ones (which
 * depend on the Python's Unicode version anyway): Cc, Cf, Zs but ' ', Zl, Zp, Cs, Co.
 * Derived from Python 3.11 (Unicode 14). */
static const uint32_t nonprintable[][2] = {
    {0x0, 0x1f}, {0x7f, 0xa0}, {0xad, 0xad}, {0x600, 0x605}, {0x61c, 0x61c},
    {0x6dd, 0x6dd}, {0x70f, 0x70f}, {0x890, 0x891}, {0x8e2, 0x8e2}, {0x1680, 0x1680},
    {0x180e, 0x180e}, {0x2000, 0x200f}, {0x2028, 0x202f}, {0x205f, 0x2064},
    {0x2066, 0x206f}, {0x3000, 0x3000}, {0xd800, 0xf8ff}, {0xfeff, 0xfeff},
    {0xfff9, 0xfffb}, {0x110bd, 0x110bd}, {0x110cd, 0x110cd}, {0x13430, 0x13438},
    {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a}, {0xe0001, 0xe0001}, {0xe0020, 0xe007f},
    {0xf0000, 0xffffd}, {0x100000, 0x10fffd},
};

static bool py_isprintable(uint32_t c) {
    for (size_t i = 0; i < sizeof nonprintable / sizeof nonprintable[0]; i++)
        if (c >= nonprintable[i][0] && c <= nonprintable[i][1]) return false;
    return true;
}

/* repr(str): single quotes unless the text has ' and no ", escapes as CPython does. */
static void py_repr_str(sg_buf *b, const char *s, size_t n) {
    char quote = (memchr(s, '\'', n) && !memchr(s, '"', n)) ? '"' : '\'';
    sg_buf_putc(b, quote);
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t len = utf8_decode((const unsigned char *)s + i, n - i, &c);
        if (c == (uint32_t)quote || c == '\\') { sg_buf_putc(b, '\\'); sg_buf_putc(b, (char)c); }
        else if (c == '\t') sg_buf_puts(b, "\\t");
        else if (c == '\n') sg_buf_puts(b, "\\n");
        else if (c == '\r') sg_buf_puts(b, "\\r");
        else if (c < 0x20 || c == 0x7f) sg_buf_printf(b, "\\x%02x", c);
        else if (c < 0x7f || py_isprintable(c)) sg_buf_append(b, s + i, len);
        else if (c <= 0xff) sg_buf_printf(b, "\\x%02x", c);
        else if (c <= 0xffff) sg_buf_printf(b, "\\u%04x", c);
        else sg_buf_printf(b, "\\U%08x", c);
        i += len;
    }
    sg_buf_putc(b, quote);
}

/* repr(float): the shortest digits that read back to the same double, written fixed
 * when the decimal exponent is in [-4, 16), else as 1e-05 / 1.5e+16. */
static void py_float(sg_buf *b, double v) {
    char tmp[40];
    if (isnan(v)) { sg_buf_puts(b, "nan"); return; }
    if (isinf(v)) { sg_buf_puts(b, v < 0 ? "-inf" : "inf"); return; }
    int prec;
    for (prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    /* tmp is [-]d[.ddd]e[+-]XX: collect the digits and the exponent */
    const char *p = tmp;
    if (*p == '-') { sg_buf_putc(b, '-'); p++; }
    char digits[24];
    int nd = 0;
    for (; *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = exp10 + 1;  /* digits d1 d2 ... mean 0.d1d2... * 10^decpt */
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            sg_buf_puts(b, "0.");
            for (int i = 0; i < -decpt; i++) sg_buf_putc(b, '0');
            sg_buf_append(b, digits, (size_t)nd);
        } else if (decpt >= nd) {
            sg_buf_append(b, digits, (size_t)nd);
            for (int i = nd; i < decpt; i++) sg_buf_putc(b, '0');
            sg_buf_puts(b, ".0");
        } else {
            sg_buf_append(b, digits, (size_t)decpt);
            sg_buf_putc(b, '.');
            sg_buf_append(b, digits + decpt, (size_t)(nd - decpt));
        }
    } else {
        sg_buf_putc(b, digits[0]);
        if (nd > 1) { sg_buf_putc(b, '.'); sg_buf_append(b, digits + 1, (size_t)(nd - 1)); }
        sg_buf_printf(b, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
}

/* repr() of the Python value json.loads would make of v. */
static void py_repr(sg_buf *b, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        bool first = true;
        sg_buf_putc(b, '{');
        json_object_foreach((json_t *)v, k, x) {
            if (!first) sg_buf_puts(b, ", ");
            first = false;
            py_repr_str(b, k, strlen(k));
            sg_buf_puts(b, ": ");
            py_repr(b, x);
        }
        sg_buf_putc(b, '}');
        break;
    }
    case JSON_ARRAY:
        sg_buf_putc(b, '[');
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) sg_buf_puts(b, ", ");
            py_repr(b, json_array_get(v, i));
        }
        sg_buf_putc(b, ']');
        break;
    case JSON_STRING: py_repr_str(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: sg_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: py_float(b, json_real_value(v)); break;
    case JSON_TRUE: sg_buf_puts(b, "True"); break;
    case JSON_FALSE: sg_buf_puts(b, "False"); break;
    case JSON_NULL: sg_buf_puts(b, "None"); break;
    }
}

/* Jinja's |string: str(value), which is the text itself for a string, repr otherwise. */
static void py_str(sg_buf *b, const json_t *v) {
    if (json_is_string(v)) sg_buf_append(b, json_string_value(v), json_string_length(v));
    else py_repr(b, v);
}

/* json.dumps(ensure_ascii=False) string literal. */
static void py_json_str(sg_buf *b, const char *s, size_t n) {
    sg_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': sg_buf_puts(b, "\\\""); break;
        case '\\': sg_buf_puts(b, "\\\\"); break;
        case '\n': sg_buf_puts(b, "\\n"); break;
        case '\r': sg_buf_puts(b, "\\r"); break;
        case '\t': sg_buf_puts(b, "\\t"); break;
        case '\b': sg_buf_puts(b, "\\b"); break;
        case '\f': sg_buf_puts(b, "\\f"); break;
        default:
            if (c < 0x20) sg_buf_printf(b, "\\u%04x", c);
            else sg_buf_putc(b, (char)c);
        }
    }
    sg_buf_putc(b, '"');
}

/* json.dumps(v, ensure_ascii=False) with the given separators: ", " ": " is Python's
 * default (the prompt), "," ":" the compact form (arguments in API answers). */
static void py_dumps(sg_buf *b, const json_t *v, const char *item_sep, const char *key_sep) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        bool first = true;
        sg_buf_putc(b, '{');
        json_object_foreach((json_t *)v, k, x) {
            if (!first) sg_buf_puts(b, item_sep);
            first = false;
            py_json_str(b, k, strlen(k));
            sg_buf_puts(b, key_sep);
            py_dumps(b, x, item_sep, key_sep);
        }
        sg_buf_putc(b, '}');
        break;
    }
    case JSON_ARRAY:
        sg_buf_putc(b, '[');
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) sg_buf_puts(b, item_sep);
            py_dumps(b, json_array_get(v, i), item_sep, key_sep);
        }
        sg_buf_putc(b, ']');
        break;
    case JSON_STRING: py_json_str(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: sg_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: {
        double d = json_real_value(v);
        if (isnan(d)) sg_buf_puts(b, "NaN");
        else if (isinf(d)) sg_buf_puts(b, d < 0 ? "-Infinity" : "Infinity");
        else py_float(b, d);
        break;
    }
    case JSON_TRUE: sg_buf_puts(b, "true"); break;
    case JSON_FALSE: sg_buf_puts(b, "false"); break;
    case JSON_NULL: sg_buf_puts(b, "null"); break;
    }
}

/* ---- input normalisation ------------------------------------------------------------ */

/* One message as the templates see it. */
typedef struct chat_msg {
    const char *role;  /* "system", "user", "assistant" or "tool" */
    sg_buf content;    /* text, tool calls folded in */
} chat_msg;

/* Content as a string: a string, null/missing, or text parts joined with "\n". */
static int content_text(const json_t *c, size_t idx, sg_buf *out, sg_error *err) {
    if (!c || json_is_null(c)) return 0;
    if (json_is_string(c)) {
        sg_buf_append(out, json_string_value(c), json_string_length(c));
        return 0;
    }
    if (!json_is_array(c))
        return sg_fail(err, "messages[%zu].content must be a string, null or an array of parts", idx);
    for (size_t i = 0; i < json_array_size(c); i++) {
        const json_t *part = json_array_get(c, i);
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!json_is_object(part) || !type)
            return sg_fail(err, "messages[%zu].content[%zu] must be an object with a type", idx, i);
        if (strcmp(type, "text") != 0)
            return sg_fail(err, "messages[%zu].content[%zu]: unsupported part type \"%s\" (text only)",
                           idx, i, type);
        const json_t *t = json_object_get(part, "text");
        if (!json_is_string(t))
            return sg_fail(err, "messages[%zu].content[%zu].text must be a string", idx, i);
        if (i) sg_buf_putc(out, '\n');
        sg_buf_append(out, json_string_value(t), json_string_length(t));
    }
    return 0;
}

/* Appends an assistant's tool_calls to its content (see chat.h). */
static int fold_tool_calls(const json_t *calls, size_t idx, sg_buf *out, sg_error *err) {
    if (!calls || json_is_null(calls)) return 0;
    if (!json_is_array(calls)) return sg_fail(err, "messages[%zu].tool_calls must be an array", idx);
    for (size_t i = 0; i < json_array_size(calls); i++) {
        const json_t *fn = json_object_get(json_array_get(calls, i), "function");
        const json_t *name = json_object_get(fn, "name");
        if (!json_is_string(name))
            return sg_fail(err, "messages[%zu].tool_calls[%zu].function.name must be a string", idx, i);
        const json_t *args = json_object_get(fn, "arguments");
        json_t *parsed = NULL;
        if (json_is_string(args))
            parsed = json_loadb(json_string_value(args), json_string_length(args),
                                JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (out->len) sg_buf_putc(out, '\n');
        sg_buf_puts(out, "<tool_call>\n{\"name\": ");
        py_json_str(out, json_string_value(name), json_string_length(name));
        sg_buf_puts(out, ", \"arguments\": ");
        if (parsed) py_dumps(out, parsed, ", ", ": ");
        else if (args) py_dumps(out, args, ", ", ": ");
        else sg_buf_puts(out, "{}");
        sg_buf_puts(out, "}\n</tool_call>");
        json_decref(parsed);
    }
    return 0;
}

static void free_msgs(chat_msg *m, size_t n) {
    for (size_t i = 0; i < n; i++) sg_buf_free(&m[i].content);
    free(m);
}

static int normalise(const json_t *messages, chat_msg **out, size_t *n_out, sg_error *err) {
    if (!json_is_array(messages)) return sg_fail(err, "messages must be an array");
    size_t n = json_array_size(messages);
    if (n == 0) return sg_fail(err, "messages is empty");
    chat_msg *m = sg_xcalloc(n, sizeof *m);
    for (size_t i = 0; i < n; i++) {
        const json_t *msg = json_array_get(messages, i);
        sg_buf_init(&m[i].content);
        if (!json_is_object(msg)) {
            free_msgs(m, i + 1);
            return sg_fail(err, "messages[%zu] must be an object", i);
        }
        const char *role = json_string_value(json_object_get(msg, "role"));
        if (!role) {
            free_msgs(m, i + 1);
            return sg_fail(err, "messages[%zu].role must be a string", i);
        }
        if (!strcmp(role, "system") || !strcmp(role, "developer")) m[i].role = "system";
        else if (!strcmp(role, "user")) m[i].role = "user";
        else if (!strcmp(role, "assistant")) m[i].role = "assistant";
        else if (!strcmp(role, "tool")) m[i].role = "tool";
        else {
            free_msgs(m, i + 1);
            return sg_fail(err, "messages[%zu]: unsupported role \"%.40s\"", i, role);
        }
        if (content_text(json_object_get(msg, "content"), i, &m[i].content, err) < 0 ||
            (!strcmp(m[i].role, "assistant") &&
             fold_tool_calls(json_object_get(msg, "tool_calls"), i, &m[i].content, err) < 0)) {
            free_msgs(m, i + 1);
            return -1;
        }
        sg_buf_reserve(&m[i].content, 0);  /* data is never NULL below */
    }
    *out = m;
    *n_out = n;
    return 0;
}

/* ---- SmolLM3 ------------------------------------------------------------------------ */

static const char think_default[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an "
    "assistant involves thoroughly exploring questions through a systematic thinking process "
    "before providing the final precise and accurate solutions. This requires engaging in a "
    "comprehensive cycle of analysis, summarizing, exploration, reassessment, reflection, "
    "backtracking, and iteration to develop well-considered thinking process. Please "
    "structure your response into two main sections: Thought and Solution using the "
    "specified format: <think> Thought section </think> Solution section. In the Thought "
    "section, detail your reasoning process in steps. Each step should include detailed "
    "considerations such as analysing questions, summarizing relevant findings, "
    "brainstorming new ideas, verifying the accuracy of the current steps, refining any "
    "errors, and revisiting previous steps. In the Solution section, based on various "
    "attempts, explorations, and reflections from the Thought section, systematically "
    "present the final solution that you deem correct. The Solution section should be "
    "logical, accurate, and concise and detail necessary steps needed to reach the "
    "conclusion.\n\n";

static const char xml_tools_intro[] =
    "You may call one or more functions to assist with the user query.\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n\n<tools>\n";
static const char xml_tools_outro[] =
    "</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>";
static const char python_tools_intro[] =
    "When you send a message containing Python code between '<code>' and '</code>' tags, it "
    "will be executed in a stateful Jupyter notebook environment, and you will then be given "
    "the output to continued reasoning in an agentic loop.\n\nYou can use the following tools "
    "in your python code like regular functions:\n<tools>\n";
static const char python_tools_outro[] =
    "</tools>\n\nThe state persists between code executions: so variables that you define "
    "in one step are still available thereafter.";

static const char *const month_names[12] = {
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December"};

/* strftime("%d %B %Y") of today in UTC, without the locale. */
static void today_utc(char *buf, size_t n) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(buf, n, "%02d %s %d", tm.tm_mday, month_names[tm.tm_mon], tm.tm_year + 1900);
}

static void render_smollm3(const chat_msg *m, size_t n, const json_t *xml_tools,
                           const chat_options *opt, sg_buf *b) {
    bool think = opt->enable_thinking != 0;
    bool has_system = strcmp(m[0].role, "system") == 0;
    sg_buf custom;  /* custom_instructions: the system text without mode flags, rstripped */
    sg_buf_init(&custom);

    sg_buf_puts(b, "<|im_start|>system\n");
    if (has_system) {
        const char *s = m[0].content.data;
        size_t len = m[0].content.len;
        if (has(s, len, "/no_think")) think = false;
        else if (has(s, len, "/think")) think = true;
        sg_buf tmp;
        sg_buf_init(&tmp);
        remove_all(&tmp, s, len, "/no_think");
        remove_all(&custom, tmp.data, tmp.len, "/think");
        custom.len = py_rstrip_len(custom.data, custom.len);
        custom.data[custom.len] = 0;
        sg_buf_free(&tmp);
    }

    if (has_system && has(m[0].content.data, m[0].content.len, "/system_override")) {
        size_t start = b->len;
        remove_all(b, custom.data, custom.len, "/system_override");
        b->len = start + py_rstrip_len(b->data + start, b->len - start);
        b->data[b->len] = 0;
        sg_buf_puts(b, "<|im_end|>\n");
    } else {
        char now[64];
        const char *today = opt->today;
        if (!today) {
            today_utc(now, sizeof now);
            today = now;
        }
        sg_buf_puts(b, "## Metadata\n\nKnowledge Cutoff Date: June 2025\n");
        sg_buf_printf(b, "Today Date: %s\n", today);
        sg_buf_printf(b, "Reasoning Mode: %s\n\n", think ? "/think" : "/no_think");
        sg_buf_puts(b, "## Custom Instructions\n\n");
        if (custom.len) {
            sg_buf_append(b, custom.data, custom.len);
            sg_buf_puts(b, "\n\n");
        } else if (think) {
            sg_buf_puts(b, think_default);
        } else {
            sg_buf_puts(b, "You are a helpful AI assistant named SmolLM, trained by Hugging Face.\n\n");
        }
        bool xml = json_array_size(xml_tools) > 0;
        bool py = json_array_size(opt->python_tools) > 0;
        if (xml || py) {  /* the template closes the system block only in here */
            sg_buf_puts(b, "### Tools\n\n");
            if (xml) {
                sg_buf_puts(b, xml_tools_intro);
                for (size_t i = 0; i < json_array_size(xml_tools); i++) {
                    py_str(b, json_array_get(xml_tools, i));
                    sg_buf_putc(b, '\n');
                }
                sg_buf_puts(b, xml_tools_outro);
            }
            if (py) {
                sg_buf_puts(b, python_tools_intro);
                for (size_t i = 0; i < json_array_size(opt->python_tools); i++) {
                    py_str(b, json_array_get(opt->python_tools, i));
                    sg_buf_putc(b, '\n');
                }
                sg_buf_puts(b, python_tools_outro);
            }
            sg_buf_puts(b, "\n\n<|im_end|>\n");
        }
    }
    sg_buf_free(&custom);

    for (size_t i = 0; i < n; i++) {
        const char *c = m[i].content.data;
        size_t len = m[i].content.len;
        if (!strcmp(m[i].role, "user") || !strcmp(m[i].role, "tool")) {
            sg_buf_puts(b, "<|im_start|>user\n");
            sg_buf_append(b, c, len);
            sg_buf_puts(b, "<|im_end|>\n");
        } else if (!strcmp(m[i].role, "assistant")) {
            while (len && *c == '\n') { c++; len--; }  /* content.lstrip("\n") */
            sg_buf_puts(b, think ? "<|im_start|>assistant\n"
                                 : "<|im_start|>assistant\n<think>\n\n</think>\n");
            sg_buf_append(b, c, len);
            sg_buf_puts(b, "<|im_end|>\n");
        }  /* system messages: only the first one counts, in the header */
    }
    if (opt->add_generation_prompt)
        sg_buf_puts(b, think ? "<|im_start|>assistant\n"
                             : "<|im_start|>assistant\n<think>\n\n</think>\n");
}

/* ---- ChatML (SmolLM2) --------------------------------------------------------------- */

static void render_chatml(const chat_msg *m, size_t n, const chat_options *opt, sg_buf *b) {
    if (strcmp(m[0].role, "system") != 0)
        sg_buf_puts(b, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                       "trained by Hugging Face<|im_end|>\n");
    for (size_t i = 0; i < n; i++) {
        sg_buf_printf(b, "<|im_start|>%s\n", m[i].role);
        sg_buf_append(b, m[i].content.data, m[i].content.len);
        sg_buf_puts(b, "<|im_end|>\n");
    }
    if (opt->add_generation_prompt) sg_buf_puts(b, "<|im_start|>assistant\n");
}

/* ---- public: detect, render ---------------------------------------------------------- */

chat_kind chat_detect(const char *t) {
    if (t && (strstr(t, "Reasoning Mode") || strstr(t, "/system_override") ||
              strstr(t, "Knowledge Cutoff Date")))
        return CHAT_SMOLLM3;
    return CHAT_CHATML;
}

/* OpenAI tools -> the xml_tools list: each tool's "function" object, or the tool itself
 * when it has none (already a bare function description). */
static int xml_tools_of(const json_t *tools, json_t **out, sg_error *err) {
    *out = NULL;
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return sg_fail(err, "tools must be an array");
    json_t *list = json_array();
    for (size_t i = 0; i < json_array_size(tools); i++) {
        json_t *t = json_array_get(tools, i);
        if (!json_is_object(t)) {
            json_decref(list);
            return sg_fail(err, "tools[%zu] must be an object", i);
        }
        json_t *fn = json_object_get(t, "function");
        json_array_append(list, fn ? fn : t);
    }
    *out = list;
    return 0;
}

int chat_render(chat_kind kind, const json_t *messages, const json_t *tools,
                const chat_options *opt_in, sg_buf *out, sg_error *err) {
    chat_options opt = {-1, true, NULL, NULL};
    if (opt_in) opt = *opt_in;
    if (opt.python_tools && json_is_null(opt.python_tools)) opt.python_tools = NULL;
    if (opt.python_tools && !json_is_array(opt.python_tools))
        return sg_fail(err, "python_tools must be an array");

    chat_msg *m = NULL;
    size_t n = 0;
    if (normalise(messages, &m, &n, err) < 0) return -1;
    json_t *xml_tools;
    if (xml_tools_of(tools, &xml_tools, err) < 0) {
        free_msgs(m, n);
        return -1;
    }
    sg_buf b;  /* rendered apart so that out is untouched on failure */
    sg_buf_init(&b);
    if (kind == CHAT_SMOLLM3) render_smollm3(m, n, xml_tools, &opt, &b);
    else render_chatml(m, n, &opt, &b);
    sg_buf_append(out, b.data, b.len);
    sg_buf_free(&b);
    json_decref(xml_tools);
    free_msgs(m, n);
    return 0;
}

bool chat_prompt_opens_reasoning(const char *prompt, size_t len) {
    /* look only at the last turn: earlier text may quote the tags */
    const char *turn = prompt, *p;
    while ((p = memmem(turn, len - (size_t)(turn - prompt), "<|im_start|>", 12)) != NULL)
        turn = p + 12;
    size_t n = len - (size_t)(turn - prompt);
    const char *open = NULL, *close = NULL;
    for (p = turn; (p = memmem(p, n - (size_t)(p - turn), "<think>", 7)) != NULL; p += 7) open = p;
    for (p = turn; (p = memmem(p, n - (size_t)(p - turn), "</think>", 8)) != NULL; p += 8) close = p;
    return open && (!close || close < open);
}

/* ---- answer parsing: the stream machine ------------------------------------------- */

enum { ST_START, ST_REASONING, ST_CONTENT, ST_TOOL };
enum { CH_REASONING, CH_CONTENT };

struct chat_stream {
    chat_event_fn fn;
    void *user;
    int state;
    sg_buf pend;           /* input not yet consumed */
    struct {
        bool lead;         /* nothing emitted yet: leading whitespace is dropped */
        sg_buf held;       /* whitespace that may be trailing, then text to emit */
    } ch[2];
    int n_calls;
};

chat_stream *chat_stream_new(chat_kind kind, bool in_reasoning, chat_event_fn fn, void *user) {
    (void)kind;  /* both templates answer in the same markup */
    chat_stream *s = sg_xcalloc(1, sizeof *s);
    s->fn = fn;
    s->user = user;
    s->state = in_reasoning ? ST_REASONING : ST_START;
    sg_buf_init(&s->pend);
    sg_buf_reserve(&s->pend, 0);
    for (int i = 0; i < 2; i++) {
        s->ch[i].lead = true;
        sg_buf_init(&s->ch[i].held);
    }
    return s;
}

void chat_stream_free(chat_stream *s) {
    if (!s) return;
    sg_buf_free(&s->pend);
    sg_buf_free(&s->ch[0].held);
    sg_buf_free(&s->ch[1].held);
    free(s);
}

/* Emits text on a channel, trimming as described in chat.h. */
static void emit(chat_stream *s, int ch, const char *p, size_t n) {
    sg_buf *held = &s->ch[ch].held;
    if (s->ch[ch].lead) {
        while (n && is_ws(*p)) { p++; n--; }
        if (!n) return;
        s->ch[ch].lead = false;
    }
    size_t k = n;
    while (k && is_ws(p[k - 1])) k--;
    if (k) {
        sg_buf_append(held, p, k);
        chat_event ev = {ch == CH_REASONING ? CHAT_EV_REASONING : CHAT_EV_CONTENT,
                         held->data, held->len, NULL, 0};
        s->fn(s->user, &ev);
        sg_buf_reset(held);
    }
    sg_buf_append(held, p + k, n - k);
}

static void consume(chat_stream *s, size_t n) {
    memmove(s->pend.data, s->pend.data + n, s->pend.len - n);
    s->pend.len -= n;
    s->pend.data[s->pend.len] = 0;
}

/* Longest proper prefix of marker that s[0..n) ends with: text that must wait. */
static size_t partial_marker(const char *s, size_t n, const char *marker) {
    size_t m = strlen(marker);
    for (size_t k = m - 1; k > 0; k--)
        if (k <= n && memcmp(s + n - k, marker, k) == 0) return k;
    return 0;
}

/* n, moved back so that s[0..n) does not end inside a UTF-8 character. */
static size_t utf8_whole(const char *s, size_t n) {
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xc0) == 0x80) continue;           /* continuation byte: keep looking */
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

/* A tool_call block's body: a tool call event when it is a JSON object with a string
 * name, else false (the caller keeps the block as content). */
static bool tool_call(chat_stream *s, const char *body, size_t n) {
    json_t *v = json_loadb(body, n, 0, NULL);
    const json_t *name = json_object_get(v, "name");
    const json_t *args = json_object_get(v, "arguments");
    if (!args) args = json_object_get(v, "parameters");
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        (args && !json_is_object(args) && !json_is_string(args) && !json_is_null(args))) {
        json_decref(v);
        return false;
    }
    sg_buf a;
    sg_buf_init(&a);
    if (json_is_string(args)) sg_buf_append(&a, json_string_value(args), json_string_length(args));
    else if (json_is_object(args)) py_dumps(&a, args, ",", ":");
    else sg_buf_puts(&a, "{}");

    int index = s->n_calls++;
    char num[16];
    int num_len = snprintf(num, sizeof num, "%d", index);
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv1a(h, num, (size_t)num_len + 1);
    h = fnv1a(h, json_string_value(name), json_string_length(name) + 1);
    h = fnv1a(h, a.data, a.len);
    char id[32];
    snprintf(id, sizeof id, "call_%016llx", (unsigned long long)h);

    json_t *call = json_pack("{s:s, s:s, s:{s:O, s:s%}}", "id", id, "type", "function",
                             "function", "name", name, "arguments", a.data, a.len);
    chat_event ev = {CHAT_EV_TOOL_CALL, NULL, 0, call, index};
    s->fn(s->user, &ev);
    json_decref(call);
    sg_buf_free(&a);
    json_decref(v);
    return true;
}

/* Runs the machine over pend. final: no more input will come. */
static void process(chat_stream *s, bool final) {
    for (;;) {
        char *p = s->pend.data;
        size_t n = s->pend.len;
        const char *hit;
        switch (s->state) {
        case ST_START: {
            size_t i = 0;
            while (i < n && is_ws(p[i])) i++;
            consume(s, i);
            n -= i;
            if (n == 0) return;
            if (n >= 7 && memcmp(p, "<think>", 7) == 0) {
                consume(s, 7);
                s->state = ST_REASONING;
            } else if (n < 7 && memcmp(p, "<think>", n) == 0 && !final) {
                return;
            } else {
                s->state = ST_CONTENT;
            }
            break;
        }
        case ST_REASONING:
            if ((hit = memmem(p, n, "</think>", 8)) != NULL) {
                emit(s, CH_REASONING, p, (size_t)(hit - p));
                consume(s, (size_t)(hit - p) + 8);
                sg_buf_reset(&s->ch[CH_REASONING].held);  /* trailing whitespace */
                s->state = ST_CONTENT;
            } else {
                size_t keep = final ? 0 : partial_marker(p, n, "</think>");
                size_t take = final ? n : utf8_whole(p, n - keep);
                emit(s, CH_REASONING, p, take);
                consume(s, take);
                return;
            }
            break;
        case ST_CONTENT:
            if ((hit = memmem(p, n, "<tool_call>", 11)) != NULL) {
                emit(s, CH_CONTENT, p, (size_t)(hit - p));
                consume(s, (size_t)(hit - p) + 11);
                s->state = ST_TOOL;
            } else {
                size_t keep = final ? 0 : partial_marker(p, n, "<tool_call>");
                size_t take = final ? n : utf8_whole(p, n - keep);
                emit(s, CH_CONTENT, p, take);
                consume(s, take);
                return;
            }
            break;
        case ST_TOOL:
            if ((hit = memmem(p, n, "</tool_call>", 12)) != NULL) {
                size_t body = (size_t)(hit - p);
                s->state = ST_CONTENT;
                if (!tool_call(s, p, body)) {  /* not a call: the block stays text */
                    emit(s, CH_CONTENT, "<tool_call>", 11);
                    emit(s, CH_CONTENT, p, body + 12);
                }
                consume(s, body + 12);
            } else {
                if (!final) return;
                s->state = ST_CONTENT;  /* unclosed: the block is plain text */
                emit(s, CH_CONTENT, "<tool_call>", 11);
                emit(s, CH_CONTENT, p, n);
                consume(s, n);
                return;
            }
            break;
        }
    }
}

void chat_stream_feed(chat_stream *s, const char *text, size_t len) {
    sg_buf_append(&s->pend, text, len);
    process(s, false);
}

void chat_stream_finish(chat_stream *s) {
    process(s, true);
    sg_buf_reset(&s->ch[CH_REASONING].held);
    sg_buf_reset(&s->ch[CH_CONTENT].held);
}

/* ---- chat_parse_answer: the stream, fed everything at once -------------------------- */

typedef struct collect {
    sg_buf reasoning, content;
    json_t *calls;
} collect;

static void collect_event(void *user, const chat_event *ev) {
    collect *c = user;
    if (ev->kind == CHAT_EV_REASONING) sg_buf_append(&c->reasoning, ev->text, ev->len);
    else if (ev->kind == CHAT_EV_CONTENT) sg_buf_append(&c->content, ev->text, ev->len);
    else {
        if (!c->calls) c->calls = json_array();
        json_array_append(c->calls, (json_t *)ev->tool_call);
    }
}

int chat_parse_answer(chat_kind kind, const char *text, size_t len, chat_parsed *out, sg_error *err) {
    memset(out, 0, sizeof *out);
    if (!text && len) return sg_fail(err, "chat_parse_answer: no text");
    if (!text) text = "";
    /* an answer that only closes </think> began inside reasoning the prompt opened */
    size_t i = 0;
    while (i < len && is_ws(text[i])) i++;
    bool opens = len - i >= 7 && memcmp(text + i, "<think>", 7) == 0;
    bool in_reasoning = !opens && memmem(text, len, "</think>", 8) != NULL;

    collect c;
    sg_buf_init(&c.reasoning);
    sg_buf_init(&c.content);
    c.calls = NULL;
    chat_stream *s = chat_stream_new(kind, in_reasoning, collect_event, &c);
    chat_stream_feed(s, text, len);
    chat_stream_finish(s);
    chat_stream_free(s);

    out->reasoning = c.reasoning.len ? sg_buf_steal(&c.reasoning) : NULL;
    sg_buf_free(&c.reasoning);
    out->content = c.content.len ? sg_buf_steal(&c.content) : sg_xstrdup("");
    sg_buf_free(&c.content);
    out->tool_calls = c.calls;
    return 0;
}

void chat_parsed_free(chat_parsed *p) {
    if (!p) return;
    free(p->reasoning);
    free(p->content);
    json_decref(p->tool_calls);
    memset(p, 0, sizeof *p);
}
