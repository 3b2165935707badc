/*
 * crdt/tree: the directory tree as a tree-move CRDT.
 *
 * Algorithm: Kleppmann, Mulligan, Gomes, Beresford, "A highly-available move
 * operation for replicated trees", IEEE TPDS 2021. Every change is a move op
 * (ts, child, parent, meta); create, rename, move and delete (a move into the
 * trash) alike. Ops are applied in timestamp order: one arriving late undoes
 * the log back to its place, applies, and redoes; a move that would make a
 * node its own ancestor is skipped but stays in the log, so it may apply
 * later when an earlier op is undone. Two replicas holding the same set of
 * ops hold the same tree.
 *
 * On top of that raw tree sits the *visible* tree that users see
 * (DESIGN.md, "Rules for the visible tree"), a pure function of the raw
 * state: directories made at one path share an id (crdt_tree_dir_id);
 * same-named siblings are all shown, the later-born ones under a conflict
 * name; a trashed node that still has something live under it, or that is
 * pinned by an edit made without seeing the delete, is shown again at the
 * place it was deleted from.
 *
 * The tree owns its memory; ops passed in are copied. Not thread-safe.
 */
#ifndef WEFT_CRDT_TREE_H
#define WEFT_CRDT_TREE_H

#include "clock.h"
#include "codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest name of a directory entry, as NAME_MAX. */
#define CRDT_NAME_MAX 255

/*
 * A node id. A node made by a create op has the id {ts.counter, ts.replica}
 * of that op; a directory's id is derived from (parent, name) and has the top
 * bit of `hi` set; root and trash are fixed.
 */
struct crdt_node_id {
    uint64_t hi;
    uint64_t lo;
};

#define CRDT_NODE_NONE  ((struct crdt_node_id){0, 0})
#define CRDT_NODE_ROOT  ((struct crdt_node_id){0, 1})
#define CRDT_NODE_TRASH ((struct crdt_node_id){0, 2})

/* What a node is; it syncs like the name. */
enum crdt_node_kind {
    CRDT_KIND_FILE = 1,
    CRDT_KIND_DIR = 2,
    CRDT_KIND_SYMLINK = 3,
    CRDT_KIND_FIFO = 4,
    CRDT_KIND_SOCKET = 5,
    CRDT_KIND_CHRDEV = 6,
    CRDT_KIND_BLKDEV = 7,
};

/*
 * A move op. `name` points at name_len bytes owned by the caller (not
 * NUL-terminated); a valid name is 1..255 bytes without '/' or NUL and is
 * not "." or "..". A move into CRDT_NODE_TRASH deletes: the node keeps its
 * place, so it can be shown there again (rule 3). `seen_edit` is used only
 * by such deletes: the newest content edit of the node that its author had
 * seen (none: counter 0); the store compares it against edits (rule 3b).
 */
struct crdt_tree_op {
    struct crdt_ts ts;
    struct crdt_node_id child;
    struct crdt_node_id parent;
    struct crdt_ts seen_edit;
    const char *name;
    uint16_t name_len;
    uint8_t kind;
};

/* Node ids whose visible entry may have changed; zero-init, free with _changes_free. */
struct crdt_tree_changes {
    struct crdt_node_id *ids;
    size_t len;
    size_t cap;
};

/* A node as the user sees it. */
struct crdt_tree_entry {
    struct crdt_node_id id;
    struct crdt_node_id parent; /* visible parent; NONE when not visible */
    bool visible;               /* reachable from the root */
    bool trashed;               /* deleted, possibly shown again by rule 3 */
    uint8_t kind;
    struct crdt_ts birth; /* earliest op that moved this node: it orders name conflicts */
    uint16_t name_len;
    char name[CRDT_NAME_MAX + 1]; /* display name, NUL-terminated */
};

/* Gives the short device name used in conflict names; must be pure. */
typedef const char *(*crdt_tree_label_fn)(void *ctx, uint64_t replica);

struct crdt_tree;

/* Makes an empty tree (root and trash only). *out is freed with crdt_tree_free. */
CRDT_MUST_CHECK int crdt_tree_new(struct crdt_tree **out);
/* Frees a tree; accepts NULL. */
void crdt_tree_free(struct crdt_tree *tree);
/* Sets the device-name callback for conflict names (default: 8 hex digits of the replica). */
void crdt_tree_set_labeler(struct crdt_tree *tree, crdt_tree_label_fn label, void *ctx);

/* Id of a node created by an op with timestamp `ts`. */
struct crdt_node_id crdt_node_id_from_ts(struct crdt_ts ts);
/* Total order on ids. */
int crdt_node_id_cmp(struct crdt_node_id a, struct crdt_node_id b);
/* True if both ids are the same. */
bool crdt_node_id_eq(struct crdt_node_id a, struct crdt_node_id b);
/* The id every replica gives a directory made as `name` in `parent` (rule 1). */
struct crdt_node_id crdt_tree_dir_id(struct crdt_node_id parent, const char *name, size_t name_len);
/* True if `name` is a valid entry name (see struct crdt_tree_op). */
bool crdt_tree_name_valid(const char *name, size_t name_len);

/*
 * Applies ops from any replica, in any order, as one batch: sorted, the log
 * undone once back to the earliest new op, then everything applied and
 * redone in order. Ops already held are ignored; a timestamp names one op, so
 * a second, different op with a held timestamp (only a forger makes one, and
 * sync/ refuses those) is ignored too. Nodes whose visible entry
 * may have changed are appended to `changes` (may be NULL). -EINVAL if an op
 * is malformed (nothing applied then), -ENOMEM.
 */
CRDT_MUST_CHECK int crdt_tree_apply(struct crdt_tree *tree, const struct crdt_tree_op *ops,
                                    size_t count, struct crdt_tree_changes *changes);

/*
 * Makes, applies and returns in *op a local move of `child` into `parent` as
 * `name` (parent TRASH = delete), with a timestamp from `clock`. op->name
 * points at the caller's `name`. Refuses what rename(2) refuses: -ENOENT if
 * child or parent is not visible, -EINVAL if parent is child or inside it,
 * -ENOTDIR if parent is not a directory.
 */
CRDT_MUST_CHECK int crdt_tree_move(struct crdt_tree *tree, struct crdt_tree_op *op,
                                   struct crdt_clock *clock, struct crdt_node_id child,
                                   struct crdt_node_id parent, const char *name, size_t name_len,
                                   struct crdt_tree_changes *changes);

/*
 * Like crdt_tree_move, but for a deleted node that is not shown: brings
 * `child` back from the trash as `name` in `parent` (the store uses it when
 * an editor recreates a file it just deleted). -ENOENT if child is unknown
 * or parent is not a visible directory, -EINVAL if parent is inside child.
 */
CRDT_MUST_CHECK int crdt_tree_undelete(struct crdt_tree *tree, struct crdt_tree_op *op,
                                       struct crdt_clock *clock, struct crdt_node_id child,
                                       struct crdt_node_id parent, const char *name,
                                       size_t name_len, struct crdt_tree_changes *changes);

/*
 * Makes, applies and returns in *op the creation of a node of `kind` named
 * `name` in `parent`. A directory gets crdt_tree_dir_id (so concurrent mkdirs
 * meet) unless a visible node elsewhere holds that id; other kinds get the
 * op's timestamp as id. -EEXIST if a visible entry has that name, -ENOENT or
 * -ENOTDIR for a bad parent.
 */
CRDT_MUST_CHECK int crdt_tree_create(struct crdt_tree *tree, struct crdt_tree_op *op,
                                     struct crdt_clock *clock, struct crdt_node_id parent,
                                     const char *name, size_t name_len, uint8_t kind,
                                     struct crdt_tree_changes *changes);

/*
 * Marks a node as kept alive by an edit made without seeing its delete
 * (rule 3b) or clears the mark. The store decides; the tree only shows it.
 */
CRDT_MUST_CHECK int crdt_tree_set_pinned(struct crdt_tree *tree, struct crdt_node_id id,
                                         bool pinned, struct crdt_tree_changes *changes);

/*
 * Drops from the undo log every op with timestamp <= `stable`. The caller
 * guarantees that no op with such a timestamp can still arrive: with
 * per-replica FIFO delivery, `stable` is the minimum over every member
 * replica of the newest timestamp received from it. Later copies of such ops
 * are ignored as duplicates.
 */
void crdt_tree_truncate(struct crdt_tree *tree, struct crdt_ts stable);

/* Fills *entry with the visible state of `id`; -ENOENT if the tree has no such node. */
CRDT_MUST_CHECK int crdt_tree_get(const struct crdt_tree *tree, struct crdt_node_id id,
                                  struct crdt_tree_entry *entry);
/* Finds the visible child of `parent` shown as `name` (display names); -ENOENT if none. */
CRDT_MUST_CHECK int crdt_tree_lookup(const struct crdt_tree *tree, struct crdt_node_id *out,
                                     struct crdt_node_id parent, const char *name, size_t name_len);
/*
 * Calls `each` for every visible child of `parent`, in no set order; stops
 * and returns its value if it returns non-zero. -ENOENT for an unknown parent.
 */
int crdt_tree_list(const struct crdt_tree *tree, struct crdt_node_id parent,
                   int (*each)(void *ctx, const struct crdt_tree_entry *entry), void *ctx);
/* True if `ancestor` is `node` or one of its raw ancestors. */
bool crdt_tree_is_ancestor(const struct crdt_tree *tree, struct crdt_node_id ancestor,
                           struct crdt_node_id node);

/* Number of nodes the tree knows (root and trash included). */
size_t crdt_tree_node_count(const struct crdt_tree *tree);
/* Number of ops in the undo log. */
size_t crdt_tree_log_len(const struct crdt_tree *tree);
/* Bytes of heap the tree holds (nodes, indexes, names, undo log). */
size_t crdt_tree_mem_bytes(const struct crdt_tree *tree);

/*
 * Appends a snapshot: every node and, unless `without_log`, the undo log.
 * Canonical: two trees with the same op set (and the same truncation) give
 * the same bytes. Format in crdt/README.md.
 */
CRDT_MUST_CHECK int crdt_tree_snapshot(const struct crdt_tree *tree, struct crdt_buf *buf,
                                       bool without_log);
/* Builds a tree from a snapshot; -EBADMSG on malformed input. *out freed by caller. */
CRDT_MUST_CHECK int crdt_tree_load(struct crdt_tree **out, const uint8_t *data, size_t len);

/* Appends one op in the wire format of crdt/README.md. */
void crdt_tree_op_encode(struct crdt_buf *buf, const struct crdt_tree_op *op);
/* Reads one op; its name points into the reader's bytes. -EBADMSG if malformed. */
CRDT_MUST_CHECK int crdt_tree_op_decode(struct crdt_reader *reader, struct crdt_tree_op *op);

/* Frees the change list's memory. */
void crdt_tree_changes_free(struct crdt_tree_changes *changes);

#endif
