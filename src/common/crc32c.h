/* crc32c.h: CRC-32C (Castagnoli), the checksum of the ledger spool's frames.
 *
 * Why this one: it detects torn and corrupted records well, and x86-64 computes it in
 * hardware (SSE4.2 `crc32`), about 8 bytes a cycle. The table-driven path (used where
 * the instruction is missing) is the reference the tests compare against.
 * Why written here: zlib, the checksum library every machine has, offers CRC-32 (IEEE),
 * which x86-64 has no instruction for; no Debian-packaged C library offers CRC-32C on its
 * own, and the whole of it is a 256-entry table and one intrinsic.
 *
 * sg_crc32c(0, data, n) is the standard CRC-32C of data ("123456789" -> 0xE3069283);
 * pass a previous result as crc to continue over more bytes. Any thread. */
#ifndef SG_COMMON_CRC32C_H
#define SG_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t sg_crc32c(uint32_t crc, const void *data, size_t n);
/* The portable path, whatever the CPU (tests compare the two). */
uint32_t sg_crc32c_table(uint32_t crc, const void *data, size_t n);

#endif
