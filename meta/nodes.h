/*
 * meta/nodes: the materialized tree (what the mount shows, read without
 * touching the op log), extended attributes as LWW registers, and the text
 * CRDT state of each text file.
 *
 * The tree CRDT (crdt/tree) decides what these rows say; this module only
 * stores them. Inode numbers come from a counter in the store and never
 * change for a node, so they are stable across remounts; 1 is the root's.
 */
#ifndef WEFT_META_NODES_H
#define WEFT_META_NODES_H

#include "crdt/clock.h"
#include "meta/store.h"

#define META_INO_ROOT 1 /* FUSE_ROOT_ID */

enum meta_node_kind {
    META_NODE_FILE = 1,
    META_NODE_DIR = 2,
    META_NODE_SYMLINK = 3,
    META_NODE_SPECIAL = 4, /* fifo, socket, device: mode and rdev say which */
};

/*
 * The attributes that are last-writer-wins registers (DESIGN "The tree"),
 * each stamped with the timestamp of the op that set it: as bits (an
 * attribute op's field mask) and, by bit position, indexes of attr_ts.
 */
enum {
    META_ATTR_MODE = 1 << 0,
    META_ATTR_UID = 1 << 1,
    META_ATTR_GID = 1 << 2,
    META_ATTR_RDEV = 1 << 3,
    META_ATTR_MTIME = 1 << 4,
    META_ATTR_TARGET = 1 << 5,
};
#define META_ATTR_FIELDS 6

/* Rule 3b's mark on a node (DESIGN.md "Rules for the visible tree", README "Rule 3b"). */
enum meta_pin {
    META_PIN_NONE = 0,    /* never pinned */
    META_PIN_ON = 1,      /* deleted but shown: edited without its author seeing the delete */
    META_PIN_CLEARED = 2, /* was pinned, is no more (an older tree checkpoint may still say so) */
};

/*
 * How a file node's working copy relates to its newest version:
 * CLEAN: same bytes, durably. DIRTY: local writes not yet committed (the
 * working copy is newer: commit it). STALE: a committed version is newer
 * (the store rewrites the working copy after commit and at open).
 */
enum meta_wc_state {
    META_WC_CLEAN = 0,
    META_WC_DIRTY = 1,
    META_WC_STALE = 2,
};

/* One node of the materialized tree. */
struct meta_node {
    struct meta_id id;
    struct meta_id parent;
    bool has_parent; /* false only for the root and the trash */
    char name[META_NAME_MAX + 1];
    enum meta_node_kind kind;
    uint32_t mode, uid, gid;
    uint64_t rdev;
    uint64_t size;
    int64_t mtime_ns, ctime_ns;
    char *target; /* symlink target or NULL; malloc'ed when read: meta_node_clear */
    uint64_t ino;
    enum meta_wc_state wc_state;
    /* When each LWW attribute was set (zero: never; any op wins). Written by put and insert. */
    struct crdt_ts attr_ts[META_ATTR_FIELDS];
    /*
     * Rule 3b's bookkeeping, written by insert and by the setters below only
     * (put leaves it, so a node read before it changed cannot undo it):
     * the newest tree op of the node; whether that op deleted it and then
     * the newest edit its author had seen; the newest content op that says
     * which move its author had seen; the pin.
     */
    struct crdt_ts moved;
    bool deleted;
    struct crdt_ts deleted_saw;
    struct crdt_ts edited;
    enum meta_pin pinned;
};

/* A node with a pin (meta_node_list_pins). */
struct meta_pin_entry {
    struct meta_id id;
    enum meta_pin pinned;
};

/* A live extended attribute. */
struct meta_xattr {
    char *name;
    uint8_t *value;
    size_t value_len;
    struct crdt_ts ts;
};

/*
 * Inserts a node or updates its attributes. A new node gets node->ino if it
 * is nonzero (-EEXIST if taken) or the next inode number, and starts with
 * node->wc_state; an existing one keeps its inode number and wc_state.
 * *out_ino (may be NULL) is the node's inode number.
 */
META_MUST_CHECK int meta_node_put(uint64_t *out_ino, struct meta_store *store,
                                  const struct meta_node *node);
/* Inserts a new node as meta_node_put does; -EEXIST if the id (or the inode number) is taken. */
META_MUST_CHECK int meta_node_insert(uint64_t *out_ino, struct meta_store *store,
                                     const struct meta_node *node);
/*
 * Moves an existing node to `name` in `parent` and, unless `kind` is 0, sets
 * its kind; its other attributes stay. -ENOENT (no message) if there is no
 * such node. This is what the tree CRDT decides; meta/replica calls it.
 */
META_MUST_CHECK int meta_node_place(struct meta_store *store, const struct meta_id *id,
                                    const struct meta_id *parent, const char *name,
                                    enum meta_node_kind kind);
/* Sets a node's mtime and ctime (a directory whose entries changed); -ENOENT. */
META_MUST_CHECK int meta_node_set_times(struct meta_store *store, const struct meta_id *id,
                                        int64_t time_ns);
/* The inode number of a node; -ENOENT. */
META_MUST_CHECK int meta_node_ino(uint64_t *out, struct meta_store *store,
                                  const struct meta_id *id);
/* Reads a node; release with meta_node_clear. -ENOENT. */
META_MUST_CHECK int meta_node_get(struct meta_node *out, struct meta_store *store,
                                  const struct meta_id *id);
/* Reads the node with inode number ino; -ENOENT. */
META_MUST_CHECK int meta_node_get_by_ino(struct meta_node *out, struct meta_store *store,
                                         uint64_t ino);
/*
 * Reads a child of `parent` called `name`; -ENOENT. When several share the
 * name (concurrent creates) it returns the one with the smallest id; which
 * one the user sees under the name is crdt/tree's rule, not this one.
 */
META_MUST_CHECK int meta_node_lookup(struct meta_node *out, struct meta_store *store,
                                     const struct meta_id *parent, const char *name);
/* The children of `parent`, by name then id; free with meta_node_list_free. */
META_MUST_CHECK int meta_node_list(struct meta_node **out, size_t *out_len,
                                   struct meta_store *store, const struct meta_id *parent);
/* The ids of file nodes whose working copy is in `state`; *out malloc'ed (NULL if none). */
META_MUST_CHECK int meta_node_list_wc(struct meta_id **out, size_t *out_len,
                                      struct meta_store *store, enum meta_wc_state state);
/* What meta_node_note_move found. */
struct meta_node_moved {
    bool newer;            /* the op was the node's newest tree op, and is recorded */
    struct crdt_ts edited; /* then: the node's edited and pinned */
    enum meta_pin pinned;
};
/*
 * Records tree op `moved` as node id's newest if it is newer than the one
 * recorded (`deleted`: it moved the node to the trash, having seen edit
 * `saw`). out->newer is false if it is not, or if there is no such node.
 */
META_MUST_CHECK int meta_node_note_move(struct meta_node_moved *out, struct meta_store *store,
                                        const struct meta_id *id, struct crdt_ts moved,
                                        bool deleted, struct crdt_ts saw);
/* Records a node's newest content op that names the move its author had seen. -ENOENT. */
META_MUST_CHECK int meta_node_set_edited(struct meta_store *store, const struct meta_id *id,
                                         struct crdt_ts edited);
/* Sets a node's rule-3b pin. -ENOENT. */
META_MUST_CHECK int meta_node_set_pinned(struct meta_store *store, const struct meta_id *id,
                                         enum meta_pin pinned);
/* Every node whose pin is not META_PIN_NONE; *out malloc'ed (NULL if none), the caller frees it. */
META_MUST_CHECK int meta_node_list_pins(struct meta_pin_entry **out, size_t *out_len,
                                        struct meta_store *store);
/* Removes a node and its xattrs, text state and versions. -ENOENT. */
META_MUST_CHECK int meta_node_delete(struct meta_store *store, const struct meta_id *id);
/* Frees what meta_node_get put in a node (not the node itself). */
void meta_node_clear(struct meta_node *node);
/* Frees a list from meta_node_list. */
void meta_node_list_free(struct meta_node *nodes, size_t len);

/*
 * Writes xattr `name` of a node if ts is newer than what is stored (LWW);
 * value NULL removes it (a tombstone keeps ts). *out_applied (may be NULL)
 * says whether it won. -ENOENT if the node is unknown.
 */
META_MUST_CHECK int meta_xattr_set(bool *out_applied, struct meta_store *store,
                                   const struct meta_id *node, const char *name, const void *value,
                                   size_t value_len, struct crdt_ts ts);
/* Reads a live xattr's value into a malloc'ed buffer; -ENODATA if absent or removed. */
/*
 * False only if no node has an xattr named `name`: kept for security.* names,
 * which the kernel asks for before nearly every write and chown
 * (security.capability); true for any other name.
 */
bool meta_xattr_maybe(struct meta_store *store, const char *name);
META_MUST_CHECK int meta_xattr_get(uint8_t **out, size_t *out_len, struct meta_store *store,
                                   const struct meta_id *node, const char *name);
/* The node's live xattrs by name; free with meta_xattr_list_free. */
META_MUST_CHECK int meta_xattr_list(struct meta_xattr **out, size_t *out_len,
                                    struct meta_store *store, const struct meta_id *node);
/* Frees a list from meta_xattr_list. */
void meta_xattr_list_free(struct meta_xattr *xattrs, size_t len);

/* Stores a text file's encoded CRDT state (crdt/text's format, opaque here). */
META_MUST_CHECK int meta_text_put(struct meta_store *store, const struct meta_id *node,
                                  const void *state, size_t len);
/* Reads it into a malloc'ed buffer the caller frees; -ENOENT. */
META_MUST_CHECK int meta_text_get(uint8_t **out, size_t *out_len, struct meta_store *store,
                                  const struct meta_id *node);
/*
 * A text state that holds the node's text ops up to `covered` only (README
 * "Checkpoints"): the later ones are in the log, and whoever loads the state
 * applies them (meta_oplog_replay). meta_text_put stores a complete state.
 */
META_MUST_CHECK int meta_text_put_covered(struct meta_store *store, const struct meta_id *node,
                                          const void *state, size_t len,
                                          const struct crdt_vv *covered);
/*
 * Reads a text state as meta_text_get does (out may be NULL: existence and
 * coverage only), with what it covers: *out_complete (may be NULL) true if
 * it holds every text op of the node, else *out_covered (may be NULL; freed
 * by the caller) is the version vector it holds them up to. -EUCLEAN if that
 * is damaged.
 */
META_MUST_CHECK int meta_text_get_covered(uint8_t **out, size_t *out_len,
                                          struct crdt_vv *out_covered, bool *out_complete,
                                          struct meta_store *store, const struct meta_id *node);

#endif
