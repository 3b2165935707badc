/*
 * crdt/text: the sequence CRDT that holds a text file's contents.
 *
 * FugueMax (Weidner & Kleppmann, "The Art of the Fugue", 2023), in the
 * run-length form of diamond-types' YjsMod: every character has an id (a
 * Lamport timestamp), was typed after a left origin and before a right
 * origin, and concurrent runs typed at one place never interleave, whether
 * typed forwards or backwards. Deleted characters stay as tombstones (their
 * content kept as history until crdt_text_compact).
 *
 * Positions are counted in UTF-8 bytes (what the file system uses) or in
 * Unicode code points (what the editing traces use); both are O(log n).
 * A crdt_text is not thread-safe; it never blocks and does no I/O.
 */
#ifndef WEFT_CRDT_TEXT_H
#define WEFT_CRDT_TEXT_H

#include "clock.h"
#include "codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct crdt_text;

/* A run of one replica's character ids: first.counter .. first.counter + len - 1. */
struct crdt_text_span {
    struct crdt_ts first;
    uint64_t len;
};

enum crdt_text_op_kind {
    CRDT_TEXT_INSERT = 1,
    CRDT_TEXT_DELETE = 2,
};

/*
 * One operation. An insert of `len` code points gives its characters the ids
 * id.counter .. id.counter + len - 1 (replica id.replica). A delete with
 * `len` 0 (or 1) is one operation (timestamp `id`) removing every character
 * in `targets`. A delete with `len` n >= 2 is a *delete run*: n one-character
 * deletes with the timestamps id.counter .. id.counter + n - 1, its targets
 * holding exactly n characters; op k removes the k-th of them (spans and the
 * ids in each taken in order), or, if `backward`, the k-th from the end. That
 * is what forward deleting and backspacing are; crdt_text_since hands them
 * out as runs, and a run applies exactly as its n ops would, one after the
 * other. Pointers refer to memory owned by the crdt_text_ops list holding it.
 */
struct crdt_text_op {
    enum crdt_text_op_kind kind;
    struct crdt_ts id;
    /* insert: the character typed before, and the one after it then (counter 0 = none) */
    struct crdt_ts origin_left;
    struct crdt_ts origin_right;
    const uint8_t *bytes; /* insert: whole UTF-8 code points */
    size_t bytes_len;
    size_t len;                           /* insert: code points in bytes; delete: see above */
    const struct crdt_text_span *targets; /* delete */
    size_t targets_len;
    bool backward; /* delete run: op k removes the k-th character from the end */
};

struct crdt_text_ops_block;

/* A growable list of ops that owns their bytes and targets. Zero-init = empty. */
struct crdt_text_ops {
    struct crdt_text_op *ops;
    size_t len;
    size_t cap;
    struct crdt_text_ops_block *blocks;
};

/* One edit for crdt_text_apply_edits: at byte `pos` of the old text, delete `del_len`
 * bytes, then insert `bytes`. */
struct crdt_text_edit {
    size_t pos;
    size_t del_len;
    const void *bytes;
    size_t bytes_len;
};

/* Frees every op and the memory they point into; the list is empty and reusable. */
void crdt_text_ops_free(struct crdt_text_ops *ops);
/* Empties the list but keeps some memory for reuse; earlier op pointers become invalid. */
void crdt_text_ops_clear(struct crdt_text_ops *ops);
/* Appends a deep copy of `op` (its bytes and targets too); 0 or -ENOMEM. */
CRDT_MUST_CHECK int crdt_text_ops_push(struct crdt_text_ops *ops, const struct crdt_text_op *op);
/* Appends the ops list format (see crdt/README.md) to buf; 0 or -ENOMEM. */
CRDT_MUST_CHECK int crdt_text_ops_encode(struct crdt_buf *buf, const struct crdt_text_ops *ops);
/*
 * Decodes an ops list, appending to *out (owned by the caller); -EBADMSG on
 * malformed input (nothing appended then), -ENOMEM.
 */
CRDT_MUST_CHECK int crdt_text_ops_decode(struct crdt_text_ops *out, const void *data, size_t len);

/* Creates an empty document, owned by the caller (crdt_text_free); 0 or -ENOMEM. */
CRDT_MUST_CHECK int crdt_text_new(struct crdt_text **out);
/* Frees a document; accepts NULL. */
void crdt_text_free(struct crdt_text *text);

/*
 * Local edits. Each takes fresh ids from `clock` (an insert of n code points
 * takes n consecutive counters, a delete one) and appends the ops it made to
 * `out` (may be NULL: the document keeps them anyway, see crdt_text_since).
 * They fail with -EINVAL (nothing changed) on a position or length past the
 * end, invalid UTF-8, or a clock whose counter is behind ids of its replica
 * already held, and -EOVERFLOW past 2^32-2 characters or 4 GiB of history.
 * After -ENOMEM the document may hold part of the edit: free it and reload.
 * Empty edits do nothing.
 */
/* Inserts UTF-8 `bytes` at byte offset `pos`; -EINVAL if pos splits a code point. */
CRDT_MUST_CHECK int crdt_text_insert(struct crdt_text_ops *out, struct crdt_text *text,
                                     struct crdt_clock *clock, size_t pos, const void *bytes,
                                     size_t bytes_len);
/* Deletes `len` bytes at byte offset `pos`; -EINVAL if either end splits a code point. */
CRDT_MUST_CHECK int crdt_text_delete(struct crdt_text_ops *out, struct crdt_text *text,
                                     struct crdt_clock *clock, size_t pos, size_t len);
/* Inserts UTF-8 `bytes` at code-point offset `pos`. */
CRDT_MUST_CHECK int crdt_text_insert_cp(struct crdt_text_ops *out, struct crdt_text *text,
                                        struct crdt_clock *clock, size_t pos, const void *bytes,
                                        size_t bytes_len);
/* Deletes `len` code points at code-point offset `pos`. */
CRDT_MUST_CHECK int crdt_text_delete_cp(struct crdt_text_ops *out, struct crdt_text *text,
                                        struct crdt_clock *clock, size_t pos, size_t len);
/*
 * Applies byte-level edits (positions in the old text, sorted, non-overlapping)
 * back to front as local ops. All edits are checked first: -EINVAL and nothing
 * applied if one is out of order, out of range, splits a code point or is not UTF-8.
 */
CRDT_MUST_CHECK int crdt_text_apply_edits(struct crdt_text_ops *out, struct crdt_text *text,
                                          struct crdt_clock *clock,
                                          const struct crdt_text_edit *edits, size_t count);

/*
 * Applies remote ops, in any order. An op whose origins or delete targets are
 * not held yet is kept (copied) as pending and applied when they arrive; an op
 * held already is skipped. *applied counts ops applied by this call (pending
 * ones included), *pending the ops still waiting; a delete run counts as the
 * ops it holds (those of its ops that can apply do, the rest wait as a
 * shorter run). If `clock` is not NULL it observes every applied id. -EINVAL
 * (nothing applied) if an op is malformed; after -ENOMEM, as for local edits,
 * free the document. Conflicting input (a counter used for both a delete and
 * a character) keeps what came first.
 */
CRDT_MUST_CHECK int crdt_text_apply(size_t *applied, size_t *pending, struct crdt_text *text,
                                    struct crdt_clock *clock, const struct crdt_text_op *ops,
                                    size_t count);

/* Visible length in UTF-8 bytes. */
size_t crdt_text_len_bytes(const struct crdt_text *text);
/* Visible length in code points. */
size_t crdt_text_len_cp(const struct crdt_text *text);
/* Copies `len` visible bytes from byte offset `pos` into dst; -EINVAL if out of range. */
CRDT_MUST_CHECK int crdt_text_read(void *dst, const struct crdt_text *text, size_t pos, size_t len);
/* The whole text as a malloc'ed, NUL-terminated string owned by the caller. */
CRDT_MUST_CHECK int crdt_text_content(char **out, size_t *out_len, const struct crdt_text *text);
/* Byte offset of code-point offset `cp_pos`; -EINVAL past the end. */
CRDT_MUST_CHECK int crdt_text_cp_to_byte(size_t *out, const struct crdt_text *text, size_t cp_pos);
/*
 * The version held: replica -> highest counter held from it (entries' `seq`
 * field holds the counter). *out (zeroed or a vector) is overwritten; the
 * caller frees it.
 */
CRDT_MUST_CHECK int crdt_text_version(struct crdt_vv *out, const struct crdt_text *text);
/* Bytes of memory the document holds (exact: allocation sizes, not counting malloc overhead). */
size_t crdt_text_mem(const struct crdt_text *text);

/*
 * Appends to *out the ops the document holds that a peer at version `since`
 * lacks (ids with counter > since[replica]), in an order that applies without
 * pending: inserts in causal order (one op per run typed at one place), then
 * deletes (one-character deletes with consecutive timestamps, forwards or
 * backwards through consecutive characters, as one delete run). -ESTALE if
 * the peer lacks text that crdt_text_compact dropped (send it the full state
 * instead).
 */
CRDT_MUST_CHECK int crdt_text_since(struct crdt_text_ops *out, const struct crdt_text *text,
                                    const struct crdt_vv *since);
/* crdt_text_since encoded as an ops list (crdt_text_ops_encode). */
CRDT_MUST_CHECK int crdt_text_encode_since(struct crdt_buf *buf, const struct crdt_text *text,
                                           const struct crdt_vv *since);
/* Appends the full state, history included (format version 2 in crdt/README.md). */
CRDT_MUST_CHECK int crdt_text_encode_state(struct crdt_buf *buf, const struct crdt_text *text);
/*
 * Loads a full state (format version 2, or 1 as written before) into a new
 * document owned by the caller; -EBADMSG on malformed input, -ENOMEM. Pending
 * ops are not part of the state.
 */
CRDT_MUST_CHECK int crdt_text_decode_state(struct crdt_text **out, const void *data, size_t len);

/*
 * Frees the text of deleted runs (whole log entries) whose insert and every
 * delete are in `stable` (held by every replica, so no one needs that text
 * again). Ids, order and tombstones stay; later encodings carry them without
 * content. 0 or -ENOMEM.
 */
CRDT_MUST_CHECK int crdt_text_compact(struct crdt_text *text, const struct crdt_vv *stable);

#endif
