/*
 * meta/opbody: the bodies of the ops meta/replica logs, encoded and decoded
 * in one place: attribute and content-version ops (META_OP_ATTR), the
 * wrapper of text ops (META_OP_TEXT) and conflict copies among tree ops
 * (META_OP_TREE). Byte formats in meta/README.md, "Op bodies".
 *
 * Bodies come from peers: decoders check every length before reading,
 * accept one encoding per value (re-encoding what decoded gives the same
 * bytes) and return -EBADMSG on anything malformed. Decoded pointers point
 * into the caller's bytes, which must outlive them.
 */
#ifndef WEFT_META_OPBODY_H
#define WEFT_META_OPBODY_H

#include "crdt/clock.h"
#include "crdt/codec.h"
#include "crdt/tree.h"
#include "meta/chunk.h"
#include "meta/nodes.h"

#include <stdbool.h>

/* Whole ops of their own among attribute ops, alone in the mask (fields are META_ATTR_*). */
#define META_ATTR_CONTENT      0x00 /* a content version */
#define META_ATTR_XATTR_SET    0x40
#define META_ATTR_XATTR_REMOVE 0x80

/* Longest symlink target, xattr name and value an op may carry. */
#define META_TARGET_MAX      4095
#define META_XATTR_NAME_MAX  255
#define META_XATTR_VALUE_MAX 65536

/*
 * An attribute op, an xattr op or a content version, decoded. `format` 1 is
 * what weft wrote first; 2 adds, to content versions only, what rule 3b and
 * binary conflicts need (a format-1 version counts as having seen everything);
 * 3, content versions only, sends a text version without its chunk list and
 * a big binary version's list as an index. `size` is set by every format.
 */
struct meta_attr_body {
    uint8_t format;
    uint8_t mask;
    /* Fields, each present when its META_ATTR_* bit is in mask. */
    uint32_t mode, uid, gid;
    uint64_t rdev;
    int64_t mtime_ns;
    const char *target;
    size_t target_len;
    /* META_ATTR_XATTR_SET / _REMOVE (no value). */
    const char *xattr_name;
    size_t xattr_name_len;
    const uint8_t *xattr_value;
    size_t xattr_value_len;
    /* META_ATTR_CONTENT. */
    int64_t time_ns;
    bool text;                /* format 2: its author committed a text file */
    struct crdt_ts seen_move; /* format 2: the newest tree op of the node its author had seen */
    struct crdt_ts base;      /* format 2: the version its author replaced (none: the first) */
    struct meta_id parent;    /* format 2: where its author had the file: parent and name */
    const char *name;
    size_t name_len;
    /*
     * Format 3: the chunk list may be left out (`no_list`: a text version,
     * whose bytes travel as text ops) or be the root of an index of
     * `levels` levels (meta/chunk.h); `size` is the file's size either way.
     */
    bool no_list;
    uint8_t levels;
    uint64_t size;
    struct meta_chunk_list chunks; /* owned: meta_attr_body_clear */
};

/*
 * Decodes an attribute op body into *out (clear it with meta_attr_body_clear,
 * also after a failure). -EBADMSG, -ENOMEM.
 */
META_MUST_CHECK int meta_attr_body_decode(struct meta_attr_body *out, const void *body, size_t len);
/* Appends body's encoding in its format; errors are sticky in buf. */
void meta_attr_body_encode(struct crdt_buf *buf, const struct meta_attr_body *body);
/* Frees what a decoded body owns (its chunk list). */
void meta_attr_body_clear(struct meta_attr_body *body);

/* A text op: format 1 is a bare crdt/text ops list; format 2 says which move its author had seen.
 */
struct meta_text_body {
    uint8_t format;
    struct crdt_ts seen_move; /* format 2 */
    const uint8_t *ops;       /* the crdt/text ops list (decoded by crdt_text_ops_decode) */
    size_t ops_len;
};

/* Decodes a text op body's wrapper (not the ops list inside). -EBADMSG. */
META_MUST_CHECK int meta_text_body_decode(struct meta_text_body *out, const void *body, size_t len);
/* Appends a text op body in its format. */
void meta_text_body_encode(struct crdt_buf *buf, const struct meta_text_body *body);

/*
 * A tree op: a crdt/tree move, or a conflict copy: the move that makes node
 * meta_copy_id(file, op.ts) beside file, where op.ts is the losing version's.
 */
struct meta_tree_body {
    bool copy;
    struct crdt_node_id file; /* copy only */
    struct crdt_tree_op op;   /* op.name points into the body */
};

/* Decodes a tree op body. -EBADMSG. */
META_MUST_CHECK int meta_tree_body_decode(struct meta_tree_body *out, const void *body, size_t len);
/* Appends a tree op body. */
void meta_tree_body_encode(struct crdt_buf *buf, const struct meta_tree_body *body);
/*
 * The id of the conflict copy of version `version` of `file`: the same on
 * every replica, and never a timestamp id, a real directory's or another
 * copy's (it is crdt_tree_dir_id under the file, where no directory lives).
 */
struct crdt_node_id meta_copy_id(struct crdt_node_id file, struct crdt_ts version);

#endif
