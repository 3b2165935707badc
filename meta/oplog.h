/*
 * meta/oplog: the log of every operation the replica holds, its own and
 * other replicas', and the version vector that summarizes it.
 *
 * Invariant: for each replica r, the log holds exactly ops (r, 1..vv[r]).
 * Appending (r, s) with s <= vv[r] is a duplicate (-EEXIST, nothing changes);
 * with s > vv[r] + 1 it would leave a gap and is refused (-EINVAL): sync/
 * delivers each replica's ops in seq order.
 */
#ifndef WEFT_META_OPLOG_H
#define WEFT_META_OPLOG_H

#include "crdt/clock.h"
#include "meta/store.h"

/* What an op changes; decides which crdt/ module decodes its body. */
enum meta_op_kind {
    META_OP_TREE = 1,   /* a move (create, rename, move, delete) */
    META_OP_TEXT = 2,   /* text-CRDT inserts/deletes of one file */
    META_OP_ATTR = 3,   /* an LWW attribute or xattr write */
    META_OP_MEMBER = 4, /* a device added to the share or removed (meta/member) */
};

/* One logged operation. Its Lamport timestamp is (counter, replica). */
struct meta_op {
    uint64_t replica; /* the replica that issued it: its seq space and ts tie-break */
    uint64_t seq;     /* 1, 2, 3, ... per replica */
    uint64_t counter; /* Lamport counter, > 0 */
    enum meta_op_kind kind;
    struct meta_id node; /* the node it changes */
    uint64_t author;     /* replica id of the device that signed it */
    uint8_t *body;       /* the op encoded by crdt/ (opaque here) */
    size_t body_len;
};

/* Called per op (body valid only during the call); nonzero stops and is passed back. */
typedef int (*meta_op_fn)(void *ctx, const struct meta_op *op);

/* Appends an op (body copied) and raises the version vector; -EEXIST, -EINVAL (see top). */
META_MUST_CHECK int meta_oplog_append(struct meta_store *store, const struct meta_op *op);
/* Reads op (replica, seq); out->body is malloc'ed: release with meta_op_clear. -ENOENT. */
META_MUST_CHECK int meta_oplog_get(struct meta_op *out, struct meta_store *store, uint64_t replica,
                                   uint64_t seq);
/*
 * Reads the op of `kind` whose Lamport timestamp is `ts` (an index seek);
 * out->body is malloc'ed: release with meta_op_clear. -ENOENT.
 */
META_MUST_CHECK int meta_oplog_get_by_ts(struct meta_op *out, struct meta_store *store,
                                         struct crdt_ts ts, enum meta_op_kind kind);
/* Frees an op's body read by meta_oplog_get or meta_oplog_get_by_ts. */
void meta_op_clear(struct meta_op *op);
/*
 * Calls fn for every op that a replica holding `have` lacks, in Lamport
 * order (counter, then replica), which respects causality. 0, an error, or
 * what fn returned.
 */
META_MUST_CHECK int meta_oplog_since(struct meta_store *store, const struct crdt_vv *have,
                                     meta_op_fn fn, void *ctx);
/* The store's version vector into a fresh *out (caller frees with crdt_vv_free). */
META_MUST_CHECK int meta_vv_load(struct crdt_vv *out, struct meta_store *store);
/*
 * Calls fn for every op of `kind` (and of `node`, unless NULL) that is not
 * in `covered`: seq above covered[replica]. Each replica's ops come in seq
 * order, replica after replica (not Lamport order: for CRDTs that take a
 * batch in any order). Index range scans: the cost is the ops returned.
 */
META_MUST_CHECK int meta_oplog_replay(struct meta_store *store, const struct meta_id *node,
                                      enum meta_op_kind kind, const struct crdt_vv *covered,
                                      meta_op_fn fn, void *ctx);
/* The highest Lamport counter in the log (0 if empty). */
META_MUST_CHECK int meta_oplog_max_counter(uint64_t *out, struct meta_store *store);

/*
 * A checkpoint: state derived from the log (a CRDT's encoding, opaque here)
 * as of the ops `covered` names, and the Lamport counter reached then. It is
 * an optimization: the log stays the truth, and a caller that cannot use a
 * checkpoint rebuilds from the log.
 */
struct meta_checkpoint {
    struct crdt_vv covered;
    uint64_t counter;
    uint8_t *state;
    size_t state_len;
};

/* Stores (replaces) checkpoint `name`, with a digest of everything in it. */
META_MUST_CHECK int meta_checkpoint_put(struct meta_store *store, const char *name,
                                        const struct crdt_vv *covered, uint64_t counter,
                                        const void *state, size_t len);
/*
 * Reads checkpoint `name` into *out (release with meta_checkpoint_clear).
 * -ENOENT if there is none; -EBADMSG if it is damaged (its digest does not
 * match, or `covered` does not decode): the message says so.
 */
META_MUST_CHECK int meta_checkpoint_get(struct meta_checkpoint *out, struct meta_store *store,
                                        const char *name);
/* Frees what meta_checkpoint_get put in *cp. */
void meta_checkpoint_clear(struct meta_checkpoint *cp);

#endif
