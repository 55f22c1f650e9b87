/* local_constraint.h: what a chat request promises about the answer's form, as a grammar
 * for the local model (engine/grammar.h), so that the local provider keeps the API's
 * promises as the hosted providers do:
 *   - response_format {type: "json_object"}: any JSON object;
 *   - response_format {type: "json_schema", json_schema: {schema}}: the schema
 *     (engine/json_schema.h's subset; any other feature is an error naming it);
 *   - tool_choice "required" or {type: "function", function: {name}} (Anthropic's "any"
 *     and {type: "tool"} arrive translated to these): the answer is tool calls in
 *     SmolLM3's syntax, <tool_call>\n{"name": "NAME", "arguments": ARGS}\n</tool_call>,
 *     NAME a declared tool (or the named one), ARGS following its parameters' schema;
 *     parallel_tool_calls false: exactly one call, else one or more;
 *   - tool_choice "auto" (or absent) with tools: the answer is free text, but once the
 *     model writes "<tool_call>" (outside its reasoning) the rest is the grammar above
 *     (a lazy grammar, grammar.h), so any call is a valid call of a declared tool;
 *     parallel_tool_calls false: at most one call. With a response_format as well, the
 *     answer is either that form or tool calls (one grammar, not lazy).
 * A forced tool call takes precedence over response_format. The request is the
 * canonical (OpenAI-shaped) body. */
#ifndef SG_GATEWAY_LOCAL_CONSTRAINT_H
#define SG_GATEWAY_LOCAL_CONSTRAINT_H

#include <jansson.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/error.h"
#include "engine/grammar.h"

/* 0 with *out the grammar (a reference to unref; compiled through grammar_compile_cached,
 * so a repeated schema or tool list is compiled once) or NULL when the request asks for
 * no particular form, and *lazy true when it applies from "<tool_call>" on (auto); -1
 * with err (the request's fault: a 400) naming what cannot be constrained, e.g.
 * "response_format.json_schema.schema: unsupported JSON Schema keyword 'not'". */
int local_constraint_grammar(const json_t *request, sg_grammar **out, bool *lazy, sg_error *err);

/* local_constraint_grammar in its two steps. The text: 0 with the grammar's GBNF appended
 * to gbnf, *lazy as above and *what naming the part of the request it comes from ("tools",
 * "response_format", ...), or *what NULL when the request asks for no particular form;
 * -1 with err (a 400). Every error of the request's own shows here, at a fraction of the
 * compile's cost: compiling a new 20-tool list takes 10-25 ms, which the local provider
 * spends on its worker thread, not on the gateway's event loop. */
int local_constraint_gbnf(const json_t *request, sg_buf *gbnf, bool *lazy, const char **what, sg_error *err);
/* The grammar of that text (a reference to unref; grammar_compile_cached), or NULL with
 * err prefixed by what. */
sg_grammar *local_constraint_compile(const char *gbnf, size_t len, const char *what, sg_error *err);

/* The lazy grammar's markers: its trigger, and the reasoning it does not apply in. */
#define LOCAL_CONSTRAINT_TRIGGER "<tool_call>"
#define LOCAL_CONSTRAINT_QUIET_OPEN "<think>"
#define LOCAL_CONSTRAINT_QUIET_CLOSE "</think>"

/* False when tool_choice is "none": the prompt then offers no tools. */
bool local_constraint_offers_tools(const json_t *request);

#endif
