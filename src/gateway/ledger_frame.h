/* ledger_frame.h: how one ledger record is laid out in the spool, written by
 * ledger_append and read back by the writer thread (ledger.c).
 *
 * Why its own module: the spool is the ledger's durable copy, so its format is a contract
 * with every earlier and later smolgate that may find a segment in a shared spool_dir.
 *
 * Formats 2 and 3 (segments named `P-NNNNNN.seg`): one binary frame per record,
 * little-endian; format 3 is written, both are read (a segment may hold either).
 *   header (12 bytes): u8 0xA7 (magic), u8 3 (format version; 2), u16 0 (reserved),
 *                      u32 L (payload bytes), u32 CRC-32C of the payload
 *   payload (L bytes): i64 time_ms, input, cache_read, cache_write, output, reasoning,
 *                      cost_micro (-1: unpriced), latency_ms, ttft_ms;
 *                      i32 status; u8 flags (1 stream, 2 usage estimated);
 *                      u8 n_attempts (<= LEDGER_MAX_ATTEMPTS); u16 0;
 *                      the strings request_id, key_id, route, requested_model, provider,
 *                      model, error; then per attempt: i64 latency_ms, i32 status, and
 *                      the strings provider, model, error; format 3 adds to each
 *                      attempt i64 start_ms, queue_ms, connect_ms, ttft_ms,
 *                      input_tokens, output_tokens, cost_micro (-1: unknown), which a
 *                      format 2 attempt reads as -1.
 *   a string: u16 length (0xFFFF: NULL), the bytes (valid UTF-8, no NUL), then a NUL, so
 *   that a decoded record points into the frame without copying.
 * Strings are cut to the ledger's bounds (ids 128 bytes, names 256, errors 63) and invalid
 * UTF-8 becomes U+FFFD, as in format 1, so PostgreSQL never refuses one. A frame is
 * at most LEDGER_FRAME_MAX bytes. The reader checks the magic, version, length, checksum
 * and that the payload's fields fill it exactly: a torn or corrupted frame is refused,
 * never half-read, and the reader finds the next good frame after it.
 *
 * Format 1 (segments `P-NNNNNN.spool`, smolgate before format 2): one JSON line per
 * record ({"v":1,"id":...}; an attempt is [provider, model, status, error, latency_ms,
 * then since format 3 start_ms, queue_ms, connect_ms, ttft_ms, input_tokens,
 * output_tokens, cost_micro], the later ones -1 when absent). Still read, so that segments an older process left are
 * delivered; no longer written (ledger_record_json writes the same JSON for
 * rejected.jsonl and tools).
 *
 * Pure functions; any thread. */
#ifndef SG_GATEWAY_LEDGER_FRAME_H
#define SG_GATEWAY_LEDGER_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/ledger.h"

#define LEDGER_FRAME_MAGIC 0xA7
#define LEDGER_FRAME_VERSION 3   /* written; 2 is still read */
#define LEDGER_FRAME_HEADER 12
#define LEDGER_FRAME_MAX (64u << 10)   /* bytes, header included: the largest record fits */

struct sg_buf;
struct json_t;

/* Appends r's frame to out. time_ms 0 is stamped with the wall clock now. */
void ledger_frame_encode(const ledger_record *r, struct sg_buf *out);

/* Decodes the frame at buf[0..len): 1 with *used its bytes and r filled (strings point
 * into buf; its attempts written to atts, room for LEDGER_MAX_ATTEMPTS, and r->attempts
 * = atts); 0 when buf holds the start of a frame that is not whole yet (read more);
 * -1 when buf does not start with a valid frame. */
int ledger_frame_decode(const char *buf, size_t len, ledger_record *r, ledger_attempt *atts, size_t *used);

/* The offset of the next byte after buf[0] where a frame may start (its magic and
 * version, and a decode that does not fail), or len when none: how the reader skips a
 * damaged frame. */
size_t ledger_frame_resync(const char *buf, size_t len);

/* Format 1: one JSON line (without its '\n') into r; strings point into *root, which the
 * caller json_decref()s when done with r (also on failure). Attempts as above. -1 when
 * the line is not a record. */
int ledger_frame_parse_json(const char *line, size_t n, struct json_t **root, ledger_record *r, ledger_attempt *atts);

#endif
