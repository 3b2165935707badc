/*
 * tests/unit/tree_harness.h: replicas of a crdt_tree for tests, with owned
 * copies of the ops they made, and a canonical listing of the visible tree.
 */
#ifndef WEFT_TESTS_TREE_HARNESS_H
#define WEFT_TESTS_TREE_HARNESS_H

#include "crdt/tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct owned_op {
    struct crdt_tree_op op;
    char name[CRDT_NAME_MAX + 1];
};

struct replica {
    struct crdt_tree *tree;
    struct crdt_clock clock;
    struct owned_op *ops; /* every op this replica made, in order */
    size_t op_count;
    size_t op_cap;
};

static inline void replica_init(struct replica *replica, uint64_t replica_id)
{
    memset(replica, 0, sizeof(*replica));
    if (crdt_tree_new(&replica->tree) != 0)
        abort();
    crdt_clock_init(&replica->clock, replica_id);
}

static inline void replica_free(struct replica *replica)
{
    crdt_tree_free(replica->tree);
    free(replica->ops);
}

static inline void owned_op_set(struct owned_op *owned, const struct crdt_tree_op *op)
{
    owned->op = *op;
    memcpy(owned->name, op->name, op->name_len);
    owned->name[op->name_len] = '\0';
    owned->op.name = owned->name;
}

static inline void replica_record(struct replica *replica, const struct crdt_tree_op *op)
{
    if (replica->op_count == replica->op_cap) {
        replica->op_cap = replica->op_cap ? replica->op_cap * 2 : 16;
        replica->ops = realloc(replica->ops, replica->op_cap * sizeof(*replica->ops));
        if (!replica->ops)
            abort();
        /* Each op's name points into its own record, which realloc may have moved. */
        for (size_t i = 0; i < replica->op_count; i++)
            replica->ops[i].op.name = replica->ops[i].name;
    }
    owned_op_set(&replica->ops[replica->op_count++], op);
}

/* Local create; records the op. Returns the errno-style result. */
static inline int replica_create(struct replica *replica, struct crdt_node_id *id,
                                 struct crdt_node_id parent, const char *name, uint8_t kind)
{
    struct crdt_tree_op op;
    int rc = crdt_tree_create(replica->tree, &op, &replica->clock, parent, name, strlen(name), kind,
                              NULL);
    if (rc == 0) {
        replica_record(replica, &op);
        if (id)
            *id = op.child;
    }
    return rc;
}

static inline int replica_move(struct replica *replica, struct crdt_node_id child,
                               struct crdt_node_id parent, const char *name)
{
    struct crdt_tree_op op;
    int rc = crdt_tree_move(replica->tree, &op, &replica->clock, child, parent, name, strlen(name),
                            NULL);
    if (rc == 0)
        replica_record(replica, &op);
    return rc;
}

static inline int replica_delete(struct replica *replica, struct crdt_node_id child)
{
    struct crdt_tree_entry entry;
    if (crdt_tree_get(replica->tree, child, &entry) != 0)
        return -ENOENT;
    return replica_move(replica, child, CRDT_NODE_TRASH, entry.name);
}

/* Applies every op `from` made to `to` as one batch (duplicates are fine). */
static inline int replica_pull(struct replica *to, const struct replica *from)
{
    if (from->op_count == 0)
        return 0;
    struct crdt_tree_op *ops = malloc(from->op_count * sizeof(*ops));
    if (!ops)
        abort();
    for (size_t i = 0; i < from->op_count; i++) {
        ops[i] = from->ops[i].op;
        crdt_clock_observe(&to->clock, ops[i].ts);
    }
    int rc = crdt_tree_apply(to->tree, ops, from->op_count, NULL);
    free(ops);
    return rc;
}

/* Looks up a path of display names ("a/b/c") from the root. */
static inline int tree_path(const struct crdt_tree *tree, struct crdt_node_id *out,
                            const char *path)
{
    struct crdt_node_id at = CRDT_NODE_ROOT;
    while (*path) {
        const char *slash = strchr(path, '/');
        size_t len = slash ? (size_t)(slash - path) : strlen(path);
        int rc = crdt_tree_lookup(tree, &at, at, path, len);
        if (rc)
            return rc;
        path += len + (slash ? 1 : 0);
    }
    *out = at;
    return 0;
}

struct listing {
    char **lines;
    size_t len, cap;
    const struct crdt_tree *tree;
    char prefix[4096];
};

static int listing_each(void *ctx, const struct crdt_tree_entry *entry);

static inline void listing_add(struct listing *listing, const char *line)
{
    if (listing->len == listing->cap) {
        listing->cap = listing->cap ? listing->cap * 2 : 32;
        listing->lines = realloc(listing->lines, listing->cap * sizeof(char *));
        if (!listing->lines)
            abort();
    }
    listing->lines[listing->len++] = strdup(line);
}

static int listing_each(void *ctx, const struct crdt_tree_entry *entry)
{
    struct listing *listing = ctx;
    size_t saved = strlen(listing->prefix);
    if (saved > 3000)
        return 0; /* deeper than any test makes: a bug elsewhere, caught by the checks */
    char line[4400];
    snprintf(line, sizeof(line), "%s%s%s", listing->prefix, entry->name,
             entry->kind == CRDT_KIND_DIR ? "/" : "");
    listing_add(listing, line);
    if (entry->kind == CRDT_KIND_DIR) {
        snprintf(listing->prefix + saved, sizeof(listing->prefix) - saved, "%s/", entry->name);
        crdt_tree_list(listing->tree, entry->id, listing_each, listing);
        listing->prefix[saved] = '\0';
    }
    return 0;
}

static int listing_line_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The visible tree as sorted "path" lines joined by '\n'; caller frees. */
static inline char *tree_listing(const struct crdt_tree *tree)
{
    struct listing listing = {.tree = tree};
    crdt_tree_list(tree, CRDT_NODE_ROOT, listing_each, &listing);
    if (listing.len)
        qsort(listing.lines, listing.len, sizeof(char *), listing_line_cmp);
    size_t total = 1;
    for (size_t i = 0; i < listing.len; i++)
        total += strlen(listing.lines[i]) + 1;
    char *out = malloc(total);
    if (!out)
        abort();
    out[0] = '\0';
    char *at = out;
    for (size_t i = 0; i < listing.len; i++) {
        at += sprintf(at, "%s\n", listing.lines[i]);
        free(listing.lines[i]);
    }
    free(listing.lines);
    return out;
}

#endif
