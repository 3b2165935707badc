/*
 * crdt/diff: the edit list between a file's last committed text and the bytes
 * a program saved, so that a save becomes a few sequence-CRDT inserts and
 * deletes that read like what the person did, and merge like it.
 *
 * Lines first (patience anchors on lines unique to both sides, bounded Myers
 * where there are none), then each changed line range refined to code points.
 * Work is bounded by step budgets, never by time: past a budget a range falls
 * back to a coarser edit, still exact. README.md ("## diff") has the
 * algorithm, the budgets and the guarantees.
 */
#ifndef WEFT_CRDT_DIFF_H
#define WEFT_CRDT_DIFF_H

#include "codec.h"

#include <stddef.h>
#include <stdint.h>

/*
 * old[old_pos, old_pos + old_len) is replaced by new[new_pos, new_pos + new_len).
 * old_len 0 is a pure insert, new_len 0 a pure delete; never both 0.
 */
struct crdt_edit {
    size_t old_pos;
    size_t old_len;
    size_t new_pos;
    size_t new_len;
};

/*
 * Work budgets, in steps: one step is one diagonal extended, one line or code
 * point followed along a match, or one line entered in the anchor table. A
 * Myers run over a range of n + m lines or code points may take
 * run_work + run_work_per_unit * (n + m) steps before that range falls back to
 * coarser edits; the whole call may take total_work + total_work_per_byte *
 * (old_len + new_len) steps, after which every range left is coarse.
 */
struct crdt_diff_options {
    uint64_t run_work;
    uint64_t run_work_per_unit;
    uint64_t total_work;
    uint64_t total_work_per_byte;
};

/* Fills in the defaults, which NULL options to crdt_diff also mean. */
void crdt_diff_options_init(struct crdt_diff_options *options);

/*
 * Computes the edits that turn old_bytes into new_bytes. *out is a malloc'ed
 * array of *out_len edits owned by the caller (NULL when the inputs are equal),
 * sorted by old_pos, with at least one unchanged byte between two edits. When
 * both inputs are valid UTF-8 every edit boundary, in old and in new, is on a
 * code point boundary. Pure and deterministic: same inputs and options, same
 * edits. Time is linear in the input plus the step budget; memory is linear
 * in the input. Returns 0, -EINVAL (NULL buffer with a non-zero length),
 * -EOVERFLOW (inputs too large to index) or -ENOMEM.
 */
CRDT_MUST_CHECK int crdt_diff(struct crdt_edit **out, size_t *out_len, const uint8_t *old_bytes,
                              size_t old_len, const uint8_t *new_bytes, size_t new_len,
                              const struct crdt_diff_options *options);

/*
 * Checks that edits fit old_len and new_len bytes: each edit non-empty and in
 * range, sorted and non-overlapping in old and in new, and the unchanged
 * stretch before each edit as long in new as in old. 0 or -EINVAL.
 */
CRDT_MUST_CHECK int crdt_diff_validate(const struct crdt_edit *edits, size_t count, size_t old_len,
                                       size_t new_len);

/*
 * Applies edits (checked as crdt_diff_validate does) to old_bytes, taking the
 * inserted bytes from new_bytes. *out is malloc'ed (never NULL on success) and
 * owned by the caller. Returns 0, -EINVAL or -ENOMEM.
 */
CRDT_MUST_CHECK int crdt_diff_apply(uint8_t **out, size_t *out_len, const uint8_t *old_bytes,
                                    size_t old_len, const uint8_t *new_bytes, size_t new_len,
                                    const struct crdt_edit *edits, size_t count);

/* Code points in bytes[0, len): bytes that are not UTF-8 continuation bytes. */
size_t crdt_diff_count_code_points(const uint8_t *bytes, size_t len);

#endif
