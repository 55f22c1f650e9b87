/* tokenizer.h: byte-level BPE identical to Hugging Face `tokenizers` for the Llama-3 /
 * SmolLM3 vocabulary (and SmolLM2's GPT-2-style vocabulary).
 *
 * Encoding: (optionally) split out added/special tokens, pre-tokenize with the
 * Llama-3 split pattern, map bytes through the GPT-2 byte-to-unicode table, then apply
 * merges by rank. Decoding maps ids back to bytes. A streaming decoder never emits a
 * partial UTF-8 sequence.
 *
 * Loaded from tokenizer.json (+ tokenizer_config.json when present) or from the
 * tokenizer.ggml.* arrays of a GGUF file. */
#ifndef SG_TOKENIZER_H
#define SG_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

/* A loaded tokenizer is read-only: encode and decode may run on many threads at once. */

typedef struct sg_tokenizer sg_tokenizer;

/* A growable list of token ids. */
typedef struct sg_ids {
    int32_t *ids;
    size_t n, cap;
} sg_ids;
void sg_ids_push(sg_ids *v, int32_t id);
void sg_ids_free(sg_ids *v);

/* Token kinds, numbered as GGUF's tokenizer.ggml.token_type. */
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER_DEFINED = 4,
       TOK_UNUSED = 5, TOK_BYTE = 6 };

/* tokenizer_json: path to tokenizer.json; config_json: tokenizer_config.json or NULL
 * (used for bos/eos names and the chat template). */
sg_tokenizer *tok_load_json(const char *tokenizer_json, const char *config_json, sg_error *err);
/* The same from memory (config may be NULL). Any bytes give a tokenizer or an error. */
sg_tokenizer *tok_load_json_mem(const char *json, size_t len, const char *config, size_t config_len,
                                sg_error *err);

/* From GGUF arrays: tokens are byte-level strings as in tokenizer.json, types as
 * above (NULL: all normal; CONTROL and USER_DEFINED tokens are the added tokens, special
 * or not), merges "a b". pre is tokenizer.ggml.pre, mapped as llama.cpp maps it:
 * "llama-bpe"/"llama3"/... the Llama-3 split with ignore_merges, "smaug-bpe"/"dbrx" the
 * same split without, "smollm"/"starcoder"/... digits one by one then the GPT-2 split,
 * "gpt2"/"default"/NULL the GPT-2 split; other names are an error. The arrays are
 * copied. */
typedef struct tok_vocab_desc {
    const char *const *tokens;  const size_t *token_lens; size_t n_tokens;
    const int32_t *types;
    const char *const *merges;  const size_t *merge_lens; size_t n_merges;
    const char *pre;
    int32_t bos_id, eos_id;     /* -1 when unknown */
    const char *chat_template;  /* may be NULL */
} tok_vocab_desc;
sg_tokenizer *tok_load_vocab(const tok_vocab_desc *d, sg_error *err);

void tok_free(sg_tokenizer *t);

size_t tok_n_vocab(const sg_tokenizer *t);
int32_t tok_bos(const sg_tokenizer *t);      /* -1 when the vocabulary has none */
int32_t tok_eos(const sg_tokenizer *t);
/* The id whose content is exactly s (e.g. "<|im_end|>"), or -1. Content is the string
 * as tokenizer.json / GGUF writes it (byte-level form for regular tokens: "Ġthe"). */
int32_t tok_find(const sg_tokenizer *t, const char *s);
bool tok_is_special(const sg_tokenizer *t, int32_t id);  /* control / added special */
/* The chat template string from the tokenizer's files, or NULL. */
const char *tok_chat_template(const sg_tokenizer *t);

/* Encodes text (len bytes, any bytes including invalid UTF-8) and appends ids to out.
 * parse_special: when true, special token strings in the text become their ids (what
 * Hugging Face does by default); when false they are encoded as plain text. Added tokens
 * that are not special (USER_DEFINED) are matched either way, as in Hugging Face with
 * split_special_tokens and in llama.cpp. Each maximal run of invalid UTF-8 is encoded as
 * a piece of its own, so decoding gives the bytes back. Never adds BOS/EOS. On error
 * (a split pattern that fails to match: hostile files only) out is left as it was. */
int tok_encode(const sg_tokenizer *t, const char *text, size_t len, bool parse_special,
               sg_ids *out, sg_error *err);

/* The raw bytes of one token (byte-level mapping undone). NULL for an invalid id. */
const char *tok_piece(const sg_tokenizer *t, int32_t id, size_t *len);
/* Appends the decoded bytes of ids to out. skip_special drops control tokens. The bytes
 * are raw: a sequence of ids that splits a character, or that came from invalid input,
 * gives invalid UTF-8 back (Hugging Face would write U+FFFD; the stream decoder does). */
void tok_decode(const sg_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, sg_buf *out);

/* Streaming decode: push ids one at a time, get text that ends on a UTF-8 boundary. */
typedef struct tok_stream {
    char pending[8];
    size_t n_pending;
} tok_stream;
void tok_stream_init(tok_stream *s);
/* Appends the complete UTF-8 text now available to out. */
void tok_stream_push(const sg_tokenizer *t, tok_stream *s, int32_t id, bool skip_special, sg_buf *out);
/* Appends what is left (invalid trailing bytes become U+FFFD). */
void tok_stream_flush(tok_stream *s, sg_buf *out);

#endif
