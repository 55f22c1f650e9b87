/* redact.h: secrets taken out of text the gateway relays or logs.
 *
 * Why it exists: an upstream's error body is written by someone else, and some quote the
 * credential they were sent ("Incorrect API key provided: sk-...", an echoed
 * `Authorization: Bearer ...`). The gateway relays such messages to its clients and
 * writes them in its log; neither may carry a secret. The configuration knows its
 * secrets (provider API keys and extra header values, the SHA-256 of each gateway key,
 * the Redis and PostgreSQL passwords), so it builds one redact_set per loaded
 * configuration (gw_config.secrets): a reload brings a new set with the new file.
 *
 * The rule, each match replaced by "[REDACTED]":
 * - a known secret of REDACT_MIN_SECRET bytes or more, wherever it occurs;
 * - a token (a run of [A-Za-z0-9._~+/-], with trailing '=' padding) that equals a known
 *   secret (shorter secrets match only as whole tokens), or that is a piece of one at
 *   least REDACT_MIN_PIECE long (a truncated echo), or whose SHA-256 is a gateway key's;
 * - whatever looks like a credential, secret known or not: the token after `Bearer ` or
 *   `Basic `, after a key name (`x-api-key`, `api-key`, `api_key`, `apikey`,
 *   `x-goog-api-key`, `authorization`, `access_token`, `password`, and `key` in a query
 *   string) followed by `:` or `=` (quotes and spaces around them allowed, as in JSON),
 *   and the password in a URL's `user:password@`.
 * A masked form ("sk-abc1***wxyz") is not a secret and stays.
 *
 * Cost: one pass per known secret (memmem) plus one scan of the text; meant for error
 * paths (failed attempts, error bodies), never per streamed byte. A set is immutable once
 * built and may be read from any thread; NULL is a valid, empty set.
 */
#ifndef SG_GATEWAY_REDACT_H
#define SG_GATEWAY_REDACT_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define REDACT_MARK "[REDACTED]"
#define REDACT_MIN_SECRET 8    /* bytes: shorter secrets are matched as whole tokens only */
#define REDACT_MIN_PIECE 12    /* bytes: a token this long that is part of a secret */

typedef struct redact_set redact_set;

redact_set *redact_new(void);
/* Wipes the copies of the secrets and frees; NULL ok. */
void redact_free(redact_set *s);
/* Adds a copy of secret (len bytes); empty secrets are ignored. */
void redact_add(redact_set *s, const char *secret, size_t len);
/* Adds the password of a URL (scheme://user:password@host...) or of a key=value conninfo
 * (password=...), and the whole DSN. */
void redact_add_dsn(redact_set *s, const char *dsn);
/* Adds a SHA-256 (of a gateway key kept only as a hash). */
void redact_add_sha256(redact_set *s, const uint8_t hash[32]);
size_t redact_count(const redact_set *s);   /* secrets and hashes held */

/* Appends text (len bytes) to out with the rule above applied. Returns the number of
 * replacements. */
size_t redact_text(const redact_set *s, const char *text, size_t len, sg_buf *out);
/* The same, in place on a NUL-terminated string in a buffer of cap bytes (the result is
 * cut to fit). Returns the number of replacements. */
size_t redact_str(const redact_set *s, char *str, size_t cap);

#endif
