/* grammar.h: constrained decoding. A grammar (llama.cpp's GBNF, or one compiled from a
 * JSON Schema by json_schema.h) says which texts an answer may be; at each decoding step
 * a per-sequence state gives the mask of the tokens that keep the output inside it.
 *
 * How: GBNF is compiled to rules over bytes (a character class becomes the UTF-8 byte
 * sequences of its code points), recognised by a pushdown automaton whose configuration
 * is a set of stacks (llama.cpp's scheme, at byte level, so tokens that end inside a
 * character are allowed exactly when their bytes can begin one). Stacks are hash-consed
 * and each set of stacks is interned as a state of a lazily built DFA: a transition is
 * computed once per (state, byte), and the vocabulary is a trie laid out in preorder, so
 * a mask is one linear scan that skips the subtree of every dead prefix, and states that
 * recur (inside a JSON string, between array items) get their mask from a cache.
 * Left recursion is rejected when the grammar is compiled (a recursive-descent
 * recogniser would never end on it).
 *
 * Tokens: special tokens are not ordinary text inside the grammar, except markers: a
 * special token whose text a string literal of the grammar contains (SmolLM3 writes
 * `<tool_call>` and `</tool_call>` as one token each) is allowed wherever the grammar
 * accepts its text. The end tokens the caller names (EOS, <|im_end|>) are theirs to
 * allow, where grammar_state_is_accepting says the grammar may end. No library does this over a 128k byte-level vocabulary in C
 * (llama.cpp's sampler is C++ and tied to its own vocabulary type).
 *
 * Threads: an sg_grammar and an sg_grammar_vocab are immutable once made and may be
 * shared by any number of states on any threads. An sg_grammar_state belongs to one
 * sequence: one thread at a time. Per-sequence use (what a batched provider does):
 *
 *     sg_grammar_state *st = grammar_state_new(g, vocab);
 *     each step: grammar_state_mask(st, bits); mask the logits where the bit is clear
 *                (end tokens: allowed iff grammar_state_is_accepting(st)); sample;
 *                grammar_state_advance(st, id);
 *                done when grammar_state_is_complete(st) (nothing more can follow)
 *     grammar_state_free(st);
 */
#ifndef SG_GRAMMAR_H
#define SG_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "engine/tokenizer.h"

typedef struct sg_grammar sg_grammar;

/* Compiles GBNF text (root rule "root"). Errors name the line and what is wrong:
 * syntax, an undefined rule, a missing root, left recursion. */
sg_grammar *grammar_parse_gbnf(const char *src, size_t len, sg_error *err);
/* Reference counted: compiled grammars are shared through the cache. */
sg_grammar *grammar_ref(sg_grammar *g);
void grammar_unref(sg_grammar *g);
/* Rules after lowering to bytes (for tests and statistics). */
size_t grammar_n_rules(const sg_grammar *g);

/* The kinds of grammar a request can bring. */
typedef enum { GRAMMAR_GBNF, GRAMMAR_JSON_SCHEMA, GRAMMAR_JSON_OBJECT } grammar_kind;
/* Compiles text of the kind (GRAMMAR_JSON_OBJECT ignores text), through a process-wide
 * cache keyed by a hash of kind and text, so a schema that every request repeats is
 * compiled once. Returns a reference the caller unrefs. Thread-safe. */
sg_grammar *grammar_compile_cached(grammar_kind kind, const char *text, size_t len, sg_error *err);

/* The vocabulary as a trie of token bytes. Built once per tokenizer (about 100 ms for
 * 128k tokens) and kept for the life of the process: grammar_vocab_get is thread-safe
 * and returns the same index for the same tokenizer. */
typedef struct sg_grammar_vocab sg_grammar_vocab;
/* NULL only when the process has already indexed 16 distinct vocabularies. */
const sg_grammar_vocab *grammar_vocab_get(const sg_tokenizer *t);
sg_grammar_vocab *grammar_vocab_new(const sg_tokenizer *t);
void grammar_vocab_free(sg_grammar_vocab *v);
size_t grammar_vocab_n(const sg_grammar_vocab *v);    /* ids 0..n-1 */

/* One sequence's position in a grammar. Keeps a reference to g; v must outlive it (v
 * may be NULL for a state fed only with grammar_state_advance_bytes). */
typedef struct sg_grammar_state sg_grammar_state;
sg_grammar_state *grammar_state_new(sg_grammar *g, const sg_grammar_vocab *v);
void grammar_state_free(sg_grammar_state *s);
/* Sets bit id of bits (uint32 words, (n_vocab + 31) / 32 of them) for each token whose
 * bytes keep the output inside the grammar, clears the others (special tokens but
 * markers always).
 * Returns the number of tokens allowed. */
size_t grammar_state_mask(sg_grammar_state *s, uint32_t *bits);
/* Feeds a token's bytes. 0, or -1 (state unchanged) when the token is not allowed. */
int grammar_state_advance(sg_grammar_state *s, int32_t id);
/* Feeds bytes (tests, and prefills). 0, or -1 (state unchanged). */
int grammar_state_advance_bytes(sg_grammar_state *s, const char *p, size_t n);
/* How many of ids[0..n), fed in order from here, the grammar allows (the state does not
 * move): speculative drafts are cut where the grammar would refuse them. A lazy state
 * before its trigger allows all of them. */
int grammar_state_allowed_prefix(sg_grammar_state *s, const int32_t *ids, int n);
/* The token is a special token that stands for text here (a marker, or a lazy state's
 * trigger): its text belongs in the output, where special tokens are otherwise left out. */
bool grammar_token_is_text(const sg_grammar_state *s, int32_t id);
/* The output so far is a whole sentence of the grammar: the end token may come now. */
bool grammar_state_is_accepting(const sg_grammar_state *s);
/* Accepting and no byte can follow: generation is over. */
bool grammar_state_is_complete(const sg_grammar_state *s);

/* A lazy grammar (tool calls under tool_choice "auto"): the output is free text until the
 * trigger appears in it (its bytes, whether a special token's text or spelled by regular
 * tokens, split across tokens or not); from the trigger's first byte on, the output must
 * follow the grammar (which therefore starts with the trigger). Inside a quiet region
 * (reasoning: quiet_open ... quiet_close) the trigger does not count. Before the trigger
 * the mask allows every token, special ones included, but those that would complete the
 * trigger with bytes the grammar rejects; the state is accepting there (the caller's end
 * tokens may come) and never complete. */
typedef struct grammar_lazy {
    const char *trigger;                   /* e.g. "<tool_call>"; NULL: not lazy */
    const char *quiet_open, *quiet_close;  /* both or neither; e.g. "<think>", "</think>" */
    bool in_quiet;                         /* the output begins inside a quiet region */
} grammar_lazy;
/* NULL when a marker is empty or 64 bytes or longer, or v is NULL. */
sg_grammar_state *grammar_state_new_lazy(sg_grammar *g, const sg_grammar_vocab *v, const grammar_lazy *lz);
/* The grammar applies now (always true for a state made by grammar_state_new). */
bool grammar_state_is_triggered(const sg_grammar_state *s);

/* Statistics: DFA states built so far, masks served from the cache. */
size_t grammar_state_n_dfa(const sg_grammar_state *s);
size_t grammar_state_n_cached(const sg_grammar_state *s);

#endif
