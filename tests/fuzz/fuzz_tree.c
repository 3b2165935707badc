/*
 * Fuzz target for crdt/tree's decoders. The first byte picks what the rest is:
 * even: a snapshot (loaded, listed, re-encoded, then fed a few ops);
 * odd: a sequence of ops, decoded one by one and applied as one batch, then
 * in reverse one at a time to a second tree; both must hold the same state.
 */
#include "crdt/tree.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_each(void *ctx, const struct crdt_tree_entry *entry)
{
    size_t *count = ctx;
    (*count)++;
    if (entry->name_len > CRDT_NAME_MAX || strlen(entry->name) != entry->name_len)
        abort();
    return 0;
}

static void walk(const struct crdt_tree *tree)
{
    size_t count = 0;
    crdt_tree_list(tree, CRDT_NODE_ROOT, count_each, &count);
    struct crdt_tree_entry entry;
    struct crdt_node_id found;
    if (crdt_tree_get(tree, CRDT_NODE_ROOT, &entry) != 0)
        abort();
    /* Found or not, a conflict-name lookup must terminate and stay in bounds. */
    if (crdt_tree_lookup(tree, &found, CRDT_NODE_ROOT, "a (conflict x)", 14) == 0 &&
        crdt_tree_get(tree, found, &entry) != 0)
        abort();
}

static bool same_snapshot(const struct crdt_tree *a, const struct crdt_tree *b)
{
    struct crdt_buf sa = {0}, sb = {0};
    bool same = crdt_tree_snapshot(a, &sa, false) == 0 && crdt_tree_snapshot(b, &sb, false) == 0 &&
                sa.len == sb.len && memcmp(sa.data, sb.data, sa.len) == 0;
    crdt_buf_free(&sa);
    crdt_buf_free(&sb);
    return same;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if ((data[0] & 1) == 0) {
        struct crdt_tree *tree;
        if (crdt_tree_load(&tree, data + 1, size - 1) != 0)
            return 0;
        walk(tree);
        struct crdt_buf buf = {0};
        if (crdt_tree_snapshot(tree, &buf, false) == 0 &&
            (buf.len != size - 1 || memcmp(buf.data, data + 1, buf.len) != 0))
            abort(); /* a snapshot that loads is canonical: it re-encodes to itself */
        crdt_buf_free(&buf);
        struct crdt_tree_op op = {
            .ts = {1, 1},
            .child = {1, 1},
            .parent = CRDT_NODE_ROOT,
            .name = "x",
            .name_len = 1,
            .kind = CRDT_KIND_DIR,
        };
        if (crdt_tree_apply(tree, &op, 1, NULL) != 0)
            abort(); /* a valid op applies to any loaded tree */
        crdt_tree_truncate(tree, (struct crdt_ts){2, 0});
        walk(tree);
        crdt_tree_free(tree);
        return 0;
    }
    struct crdt_reader reader;
    crdt_reader_init(&reader, data + 1, size - 1);
    struct crdt_tree_op ops[64];
    size_t count = 0;
    while (count < 64 && crdt_tree_op_decode(&reader, &ops[count]) == 0) {
        /* Timestamps are unique by contract (sync/ refuses forgeries); keep the first. */
        bool seen = false;
        for (size_t i = 0; i < count && !seen; i++)
            seen = crdt_ts_cmp(ops[i].ts, ops[count].ts) == 0;
        count += !seen;
    }
    struct crdt_tree *batch, *single;
    if (crdt_tree_new(&batch) || crdt_tree_new(&single))
        abort();
    struct crdt_tree_changes changes = {0};
    if (crdt_tree_apply(batch, ops, count, &changes) != 0)
        abort(); /* decoded ops are valid ops */
    for (size_t i = count; i-- > 0;)
        if (crdt_tree_apply(single, &ops[i], 1, NULL) != 0)
            abort();
    if (!same_snapshot(batch, single))
        abort(); /* order of arrival must not matter */
    walk(batch);
    crdt_tree_changes_free(&changes);
    crdt_tree_free(batch);
    crdt_tree_free(single);
    return 0;
}
