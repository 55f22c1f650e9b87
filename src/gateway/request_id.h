/* request_id.h: the ids the gateway gives each exchange (the x-request-id header, the
 * ledger's primary key, the request log).
 *
 * Why its own module: the id is a contract with the ledger's database. An id is 32
 * lowercase hex digits laid out as a UUIDv7 (RFC 9562) without the dashes:
 *   48 bits  Unix time in milliseconds
 *    4 bits  version (7)
 *   12 bits  rand_a  \  together a 74-bit value: random at the first id of a millisecond,
 *    2 bits  variant  |  then incremented by one for each later id of the same millisecond
 *   62 bits  rand_b  /   (RFC 9562 section 6.2, method 2)
 * so that
 *  - ids sort by time, across processes too: an insert lands at the right edge of the
 *    primary key's index instead of on a random page (random ids made SQLite's inserts 2-5
 *    times dearer once the index outgrew its page cache; docs/ledger.md);
 *  - ids from one generator are strictly increasing, even within a millisecond or when the
 *    clock steps back (the generator keeps to its last millisecond until the clock passes
 *    it);
 *  - processes sharing a database do not collide in practice: two generators would have
 *    to mint in the same millisecond from 74-bit starting points within a few ids of each
 *    other (seeded from getrandom).
 * The random bits come from a per-generator splitmix64 stream seeded from getrandom: ids
 * must not collide, they need not be unguessable (they are echoed to the client, which
 * already knows its own).
 *
 * One generator per thread (no locking); reqid_next costs a clock read and a few
 * arithmetic operations. */
#ifndef SMOLGATE_GATEWAY_REQUEST_ID_H
#define SMOLGATE_GATEWAY_REQUEST_ID_H

#include <stdint.h>

#define REQID_LEN 32   /* hex digits; buffers take REQID_LEN + 1 */

typedef struct {
    uint64_t rng;      /* splitmix64 state */
    uint64_t ms;       /* millisecond of the last id */
    uint64_t hi;       /* its rand_a (12 bits) */
    uint64_t lo;       /* its rand_b (62 bits) */
} reqid_gen;

/* Seeds g from getrandom (falls back to the time and g's address if that fails). */
void reqid_init(reqid_gen *g);

/* Writes the next id, NUL-terminated, into out. */
void reqid_next(reqid_gen *g, char out[REQID_LEN + 1]);

/* The same with the clock given (Unix ms): for tests and benchmarks. */
void reqid_next_at(reqid_gen *g, uint64_t now_ms, char out[REQID_LEN + 1]);

#endif
