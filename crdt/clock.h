/*
 * crdt/clock: Lamport timestamps, per-replica sequence numbers and version
 * vectors.
 *
 * A timestamp (counter, replica) totally orders every operation of a share:
 * by counter, then by replica id. A replica numbers its own operations
 * 1, 2, 3, ... (seq); a version vector maps replica -> highest seq held, so
 * it says exactly which operations a replica has, provided each replica's
 * operations are delivered in seq order (sync/ guarantees that).
 */
#ifndef WEFT_CRDT_CLOCK_H
#define WEFT_CRDT_CLOCK_H

#include "codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A Lamport timestamp. Counter 0 is never issued: {0, r} means "none". */
struct crdt_ts {
    uint64_t counter;
    uint64_t replica;
};

/* A replica's clock: its id, its Lamport counter and its last seq. */
struct crdt_clock {
    uint64_t replica;
    uint64_t counter;
    uint64_t seq;
};

/* One version-vector entry: the highest seq held from `replica`. */
struct crdt_vv_entry {
    uint64_t replica;
    uint64_t seq;
};

/* A version vector; entries sorted by replica, no zero seqs. Zero-init = empty. */
struct crdt_vv {
    struct crdt_vv_entry *entries;
    size_t len;
    size_t cap;
};

/* How two version vectors relate. */
enum crdt_vv_order {
    CRDT_VV_EQUAL,
    CRDT_VV_BEFORE,    /* a < b: b has everything a has, and more */
    CRDT_VV_AFTER,     /* a > b */
    CRDT_VV_CONCURRENT /* each has something the other lacks */
};

/* A range of one replica's seqs, first..last inclusive. */
struct crdt_seq_range {
    uint64_t replica;
    uint64_t first;
    uint64_t last;
};

/* Total order on timestamps: <0, 0, >0. */
int crdt_ts_cmp(struct crdt_ts a, struct crdt_ts b);
/* True for the "none" timestamp (counter 0). */
bool crdt_ts_is_none(struct crdt_ts ts);

/* Starts a clock for `replica` at counter 0, seq 0. */
void crdt_clock_init(struct crdt_clock *clock, uint64_t replica);
/* Issues the next timestamp (counter + 1) and seq for a local operation. */
struct crdt_ts crdt_clock_tick(struct crdt_clock *clock, uint64_t *seq_out);
/*
 * Issues `count` (>= 1) consecutive counters as one operation with one seq:
 * returns the first timestamp; the others are {first.counter + i, replica}.
 * Text inserts use this so a typed run of characters has consecutive ids.
 */
struct crdt_ts crdt_clock_tick_n(struct crdt_clock *clock, uint64_t count, uint64_t *seq_out);
/* Moves the counter past a timestamp seen from elsewhere (Lamport receive rule). */
void crdt_clock_observe(struct crdt_clock *clock, struct crdt_ts seen);

/* Frees the entries and empties the vector. */
void crdt_vv_free(struct crdt_vv *vv);
/* Highest seq held from `replica` (0 if none). */
uint64_t crdt_vv_get(const struct crdt_vv *vv, uint64_t replica);
/* Raises replica's entry to `seq` (never lowers it); 0 or -ENOMEM. */
CRDT_MUST_CHECK int crdt_vv_raise(struct crdt_vv *vv, uint64_t replica, uint64_t seq);
/* True if the vector holds operation (replica, seq). */
bool crdt_vv_includes(const struct crdt_vv *vv, uint64_t replica, uint64_t seq);
/* dst := pointwise max(dst, src); 0 or -ENOMEM. */
CRDT_MUST_CHECK int crdt_vv_merge(struct crdt_vv *dst, const struct crdt_vv *src);
/* dst := pointwise min(dst, src) (what both hold); 0 or -ENOMEM. */
CRDT_MUST_CHECK int crdt_vv_meet(struct crdt_vv *dst, const struct crdt_vv *src);
/* Copies src into a fresh dst (dst's old memory is freed); 0 or -ENOMEM. */
CRDT_MUST_CHECK int crdt_vv_copy(struct crdt_vv *dst, const struct crdt_vv *src);
/* Compares two vectors. */
enum crdt_vv_order crdt_vv_compare(const struct crdt_vv *a, const struct crdt_vv *b);
/*
 * The operations `have` holds that `other` lacks, one range per replica, in
 * replica order. *out is malloc'ed and owned by the caller (NULL if none).
 */
CRDT_MUST_CHECK int crdt_vv_missing(struct crdt_seq_range **out, size_t *out_len,
                                    const struct crdt_vv *have, const struct crdt_vv *other);

/* Appends a timestamp: varint counter, varint replica. */
void crdt_ts_encode(struct crdt_buf *buf, struct crdt_ts ts);
/* Reads a timestamp; -EBADMSG on malformed input. */
CRDT_MUST_CHECK int crdt_ts_decode(struct crdt_reader *reader, struct crdt_ts *out);
/*
 * Appends a vector: varint count, then per entry in replica order the varint
 * delta from the previous replica id (the first from 0) and the varint seq.
 */
void crdt_vv_encode(struct crdt_buf *buf, const struct crdt_vv *vv);
/*
 * Reads a vector into a fresh *out (caller frees with crdt_vv_free). Rejects
 * unsorted or duplicate replicas, zero seqs, and counts over the input's size.
 */
CRDT_MUST_CHECK int crdt_vv_decode(struct crdt_reader *reader, struct crdt_vv *out);

#endif
