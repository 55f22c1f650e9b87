/* json_schema.h: JSON Schema to GBNF (grammar.h compiles the result), for structured
 * outputs. The subset is what OpenAI's strict mode accepts: objects with required and
 * optional properties (additionalProperties false, true or absent: only the listed
 * properties are generated), arrays (items, minItems, maxItems), enum, const,
 * string / number / integer / boolean / null and type lists, anyOf, $ref to "#",
 * "#/$defs/..." or "#/definitions/..." (recursion included), string minLength /
 * maxLength, formats date, time, date-time, uuid and email, and pattern for the regular
 * subset (literals, classes, ., ?, *, +, {m,n}, alternation, groups, ^ and $ at the
 * ends). A pattern is matched whole, which also satisfies JSON Schema's unanchored
 * search. Annotations (description, title, default, examples, $comment, $schema, $id)
 * are ignored. Anything else is an error that names the keyword or feature, never a
 * looser grammar.
 *
 * The output is compact JSON with optional whitespace between tokens (a space, or a
 * newline and up to 20 spaces or tabs), no whitespace after the top-level value (so the
 * grammar is complete the moment the value is), and properties in the schema's order.
 * Numbers have at most 15 integer and 15 fraction digits and no exponent. Written by
 * hand: no Debian package converts JSON Schema to a grammar. */
#ifndef SG_JSON_SCHEMA_H
#define SG_JSON_SCHEMA_H

#include <stddef.h>

#include "common/buf.h"
#include "common/error.h"

/* Appends the GBNF of the schema (JSON text) to out. 0, or -1 with err naming the
 * problem ("unsupported JSON Schema keyword 'not'"); out may then hold a partial text. */
int json_schema_to_gbnf(const char *schema, size_t len, sg_buf *out, sg_error *err);

/* GBNF for any JSON object (OpenAI's response_format json_object). */
const char *json_schema_object_gbnf(void);

#endif
