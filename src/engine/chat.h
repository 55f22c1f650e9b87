/* chat.h: chat templates (prompt rendering) and parsing of the model's answers.
 *
 * Two templates are built in, byte-identical to the models' own Jinja templates as
 * transformers renders them: SmolLM3's (HuggingFaceTB/SmolLM3-3B chat_template.jinja:
 * generated system block with metadata, reasoning mode /think or /no_think, XML and
 * Python tool definitions) and plain ChatML with SmolLM2's default system prompt.
 * tests/data/chat/ holds both template texts and renders made by Jinja itself.
 *
 * Messages are the OpenAI-style JSON array ({"role", "content", "tool_calls", ...});
 * tools the OpenAI-style JSON array. Where the templates have nothing to say, the input
 * is normalised first (the templates then render it as they would a plain string):
 *   - content as an array of {"type": "text", "text"} parts is joined with "\n"; null or
 *     missing content is ""; other part types are an error (the models read text only);
 *   - role "developer" (OpenAI's newer name) is "system"; other unknown roles are errors;
 *   - an assistant's tool_calls are appended to its content the way SmolLM3's system
 *     prompt asks the model to write them, one block per call, "\n" between blocks and
 *     after any text: <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>
 *     (Python json.dumps spacing; arguments given as a JSON string are parsed first, and
 *     stay a string when they do not parse);
 *   - SmolLM3 gets each OpenAI tool's "function" object as an entry of xml_tools (the
 *     model card's form), which the template prints with Python's repr of a dict;
 *     ChatML has no place for tools and ignores them.
 * Note that SmolLM3's template closes the system block (<|im_end|>) only when tools are
 * given, and renders tool results as user turns: both are reproduced as they are. */
#ifndef SG_CHAT_H
#define SG_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/error.h"

typedef enum { CHAT_SMOLLM3, CHAT_CHATML } chat_kind;

/* Picks the template from a model's chat_template text: SmolLM3 when the text carries
 * its markers ("Reasoning Mode", "/system_override", "Knowledge Cutoff Date"),
 * ChatML otherwise (and for NULL). */
chat_kind chat_detect(const char *jinja_template);

typedef struct chat_options {
    int enable_thinking;         /* -1: template default (on), 0 off, 1 on */
    bool add_generation_prompt;  /* end with the assistant header */
    const char *today;           /* "25 November 2026"; NULL: today's date (UTC) */
    const json_t *python_tools;  /* SmolLM3 python_tools (array, any items); NULL: none */
} chat_options;

/* Renders messages (+ optional tools array, NULL or JSON null for none) and appends the
 * prompt to out. opt NULL means {-1, true, NULL, NULL}. Fails, with out unchanged, on
 * input of the wrong shape: messages not a non-empty array, a message without a string
 * role, content neither string, null nor text parts, and so on. */
int chat_render(chat_kind kind, const json_t *messages, const json_t *tools,
                const chat_options *opt, sg_buf *out, sg_error *err);

/* True when a rendered prompt leaves the assistant inside an open <think> block, so
 * the answer will start with reasoning and only close it (pass this as the stream's
 * in_reasoning). Neither built-in template does so; a custom prefill might. */
bool chat_prompt_opens_reasoning(const char *prompt, size_t len);

/* A parsed assistant answer: reasoning (<think>...</think>), visible content and tool
 * calls (<tool_call>{"name":..., "arguments":{...}}</tool_call>). */
typedef struct chat_parsed {
    char *reasoning;      /* NULL when none */
    char *content;        /* never NULL */
    json_t *tool_calls;   /* OpenAI-style array [{"id","type":"function","function":{"name","arguments":"<json string>"}}] or NULL */
} chat_parsed;

/* Splits a whole answer. Reasoning is the text of a leading <think> block, or all text
 * before a "</think>" that has no opening tag (the prompt opened it). Each tool_call
 * block whose body is a JSON object with a string "name" becomes a tool call (arguments
 * as a compact JSON string, "{}" when absent; ids "call_" + 16 hex digits, a hash of
 * index, name and arguments: deterministic, distinct within an answer); any other block,
 * and an unclosed one, stays in the content. Reasoning and content are trimmed of ASCII
 * whitespace at both ends. Same result as feeding the text to a chat_stream. */
int  chat_parse_answer(chat_kind kind, const char *text, size_t len, chat_parsed *out, sg_error *err);
void chat_parsed_free(chat_parsed *p);

/* Streaming: feed the answer piece by piece as it is generated and receive events.
 * Text deltas never split a marker (<think>, </think>, <tool_call>) nor a UTF-8
 * character across events, and are trimmed as chat_parse_answer trims: whitespace at
 * the start of a channel is dropped, whitespace that may turn out to be trailing is
 * held back until more text follows. A tool call is reported once its block closes.
 * Concatenating the deltas of each kind gives exactly chat_parse_answer's fields. */
typedef enum { CHAT_EV_REASONING, CHAT_EV_CONTENT, CHAT_EV_TOOL_CALL } chat_event_kind;

typedef struct chat_event {
    chat_event_kind kind;
    const char *text;        /* REASONING / CONTENT: the delta (not NUL-terminated) */
    size_t len;
    const json_t *tool_call; /* TOOL_CALL: {"id","type","function":{...}}, borrowed */
    int index;               /* TOOL_CALL: 0-based position among this answer's calls */
} chat_event;

typedef void (*chat_event_fn)(void *user, const chat_event *ev);
typedef struct chat_stream chat_stream;

/* in_reasoning: the prompt already opened <think> (see chat_prompt_opens_reasoning). */
chat_stream *chat_stream_new(chat_kind kind, bool in_reasoning, chat_event_fn fn, void *user);
void chat_stream_feed(chat_stream *s, const char *text, size_t len);
/* Flushes what was held back (an unclosed tool_call block becomes content). */
void chat_stream_finish(chat_stream *s);
void chat_stream_free(chat_stream *s);

#endif
