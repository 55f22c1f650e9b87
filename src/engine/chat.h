/* chat.h: chat templates (prompt rendering) and parsing of the model's answers.
 *
 * Two templates are built in, byte-identical to the models' own Jinja templates:
 * SmolLM3's (generated system block with metadata, reasoning mode /think or /no_think,
 * XML tool definitions) and plain ChatML (SmolLM2). Messages are the OpenAI-style JSON
 * array ({"role", "content", "tool_calls", ...}); tools the OpenAI-style JSON array. */
#ifndef SG_CHAT_H
#define SG_CHAT_H

#include <jansson.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/error.h"

typedef enum { CHAT_SMOLLM3, CHAT_CHATML } chat_kind;

/* Picks the template from a model's chat_template text (NULL: ChatML). */
chat_kind chat_detect(const char *jinja_template);

typedef struct chat_options {
    int enable_thinking;         /* -1: template default (on), 0 off, 1 on */
    bool add_generation_prompt;  /* end with the assistant header */
    const char *today;           /* "25 November 2026"; NULL: today's date (UTC) */
    const json_t *python_tools;  /* SmolLM3 xml/python tools; NULL for none */
} chat_options;

/* Renders messages (+ optional tools array) into out. */
int chat_render(chat_kind kind, const json_t *messages, const json_t *tools,
                const chat_options *opt, sg_buf *out, sg_error *err);

/* A parsed assistant answer: reasoning (<think>...</think>), visible content and tool
 * calls (<tool_call>{"name":..., "arguments":{...}}</tool_call>). */
typedef struct chat_parsed {
    char *reasoning;      /* NULL when none */
    char *content;        /* never NULL */
    json_t *tool_calls;   /* OpenAI-style array [{"id","type":"function","function":{"name","arguments":"<json string>"}}] or NULL */
} chat_parsed;
int  chat_parse_answer(chat_kind kind, const char *text, size_t len, chat_parsed *out, sg_error *err);
void chat_parsed_free(chat_parsed *p);

#endif
