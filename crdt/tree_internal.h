/*
 * crdt/tree_internal.h: the tree's representation, shared by tree.c (the
 * algorithm) and tree_codec.c (snapshots and ops). Not part of the API.
 */
#ifndef WEFT_CRDT_TREE_INTERNAL_H
#define WEFT_CRDT_TREE_INTERNAL_H

#include "tree.h"

#define NIL       UINT32_MAX
#define ROOT_IDX  0u
#define TRASH_IDX 1u

enum {
    F_TRASHED = 1,
    F_PINNED = 2,
};

struct node {
    struct crdt_node_id id;
    uint64_t birth_counter; /* 0: no op has moved it yet */
    uint32_t birth_replica; /* index into tree->replicas */
    uint32_t place_parent;  /* NIL: never placed */
    uint32_t place_name;    /* name handle; NIL when never placed */
    uint32_t first_child;   /* nodes placed here, trashed or not */
    uint32_t next_sibling;
    uint32_t prev_sibling;
    uint32_t name_next; /* (place_parent, name) hash chain */
    uint32_t live_children;
    uint8_t kind;
    uint8_t flags;
};

/* One applied (or skipped) op and what it replaced, so it can be undone. */
struct log_entry {
    uint64_t counter;
    uint32_t replica;
    uint32_t child;
    uint32_t parent; /* may be TRASH_IDX */
    uint32_t name;
    uint32_t old_parent;
    uint32_t old_name;
    uint8_t kind;
    uint8_t old_kind;
    uint8_t old_flags;
    uint8_t applied; /* 0: skipped because it would have made a cycle */
};

struct touched {
    uint32_t node;
    uint32_t parent;
    uint32_t name;
};

struct crdt_tree {
    struct node *nodes;
    uint32_t *up; /* raw parent of each node (NIL: none), sized node_cap: a dense copy of
                     what ancestor walks read, so a deep walk stays in L1 cache */
    uint32_t node_count;
    uint32_t node_cap;

    uint32_t *id_table; /* node index + 1; 0 = empty */
    uint32_t id_cap;    /* power of two */

    /*
     * Chain heads by hash of (place_parent, place name), NIL = empty: the
     * first bucket_cap for nodes not trashed, the next bucket_cap for
     * trashed ones. A name saved by temp-and-rename N times has N trashed
     * nodes placed under it; most walks skip them (none is shown while
     * `causes` is 0), so they must not lengthen the live chain.
     */
    uint32_t *name_buckets;
    uint32_t bucket_cap; /* power of two */

    uint8_t *names; /* arena: [len u8][bytes] records; a handle is an offset */
    uint32_t names_len;
    uint32_t names_cap;
    uint32_t names_live_mark; /* arena size right after the last compaction */

    uint64_t *replicas; /* replica ids by index */
    uint32_t replica_count;
    uint32_t replica_cap;
    uint32_t *replica_table; /* index + 1; 0 = empty */
    uint32_t replica_table_cap;

    struct log_entry *log;
    size_t log_len;
    size_t log_cap;
    struct crdt_ts floor; /* ops <= floor were truncated: later copies are duplicates */

    uint32_t causes;      /* trashed nodes that are pinned or have a live child */
    uint32_t causes_peak; /* highest `causes` since tracking began */

    struct touched *touched; /* recorded while an apply runs with a change list */
    size_t touched_len;
    size_t touched_cap;
    bool tracking;

    crdt_tree_label_fn label;
    void *label_ctx;
};

/* Adds a node with a fresh id (no place yet); -ENOMEM. */
int tree__node_add(struct crdt_tree *tree, uint32_t *out, struct crdt_node_id id);
/* Rebuilds the (place_parent, name) hash chains with `cap` buckets. */
int tree__buckets_resize(struct crdt_tree *tree, uint32_t cap);
/* Rebuilds the id table with `cap` slots (a power of two). */
int tree__id_table_resize(struct crdt_tree *tree, uint32_t cap);
/* Index of a replica id, adding it if new. */
int tree__replica_intern(struct crdt_tree *tree, uint32_t *out, uint64_t replica);
/* Index of a replica id, or NIL. */
uint32_t tree__replica_find(const struct crdt_tree *tree, uint64_t replica);
/* Copies a name into the arena and returns its handle. */
int tree__name_intern(struct crdt_tree *tree, uint32_t *out, const char *name, size_t len);
/* Moves a node to a new place/flags/kind, keeping every index true. */
void tree__set_state(struct crdt_tree *tree, uint32_t idx, uint32_t parent, uint32_t name,
                     uint8_t trashed, uint8_t kind);
/* True if `ancestor` is `idx` or a raw ancestor of it. */
bool tree__raw_is_ancestor(const struct crdt_tree *tree, uint32_t ancestor, uint32_t idx);
/* Makes room for `extra` more log entries. */
int tree__log_reserve(struct crdt_tree *tree, size_t extra);

#endif
