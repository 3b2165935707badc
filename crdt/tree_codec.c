/*
 * crdt/tree_codec: the tree's snapshot and op formats (documented byte by
 * byte in crdt/README.md). Decoders treat input as hostile: every count is
 * bounded by the bytes left before anything is allocated, every index and
 * name is checked, and a loaded tree is checked to be acyclic.
 */
#include "tree.h"
#include "tree_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SNAPSHOT_MAGIC0  'W'
#define SNAPSHOT_MAGIC1  'T'
#define SNAPSHOT_VERSION 1

enum {
    NF_TRASHED = 1,
    NF_PINNED = 2,
    NF_PLACED = 4,
    NF_BIRTH = 8,
    NF_TS_ID = 16,
    NF_KIND_SHIFT = 5,
};

enum {
    EF_APPLIED = 1,
    EF_OLD_TRASHED = 2,
    EF_OLD_PLACED = 4,
    EF_NAME_IS_PLACE = 8,
    EF_OLD_NAME_IS_NAME = 16,
};

enum { ID_ROOT = 0, ID_TRASH = 1, ID_TS = 2, ID_RAW = 3 };

/* ---------- ops ---------- */

static void id_encode(struct crdt_buf *buf, struct crdt_node_id id)
{
    if (crdt_node_id_eq(id, CRDT_NODE_ROOT)) {
        crdt_buf_put_u8(buf, ID_ROOT);
    } else if (crdt_node_id_eq(id, CRDT_NODE_TRASH)) {
        crdt_buf_put_u8(buf, ID_TRASH);
    } else if (id.hi != 0 && !(id.hi >> 63)) {
        crdt_buf_put_u8(buf, ID_TS);
        crdt_buf_put_varint(buf, id.hi);
        crdt_buf_put_varint(buf, id.lo);
    } else {
        crdt_buf_put_u8(buf, ID_RAW);
        crdt_buf_put_u64le(buf, id.hi);
        crdt_buf_put_u64le(buf, id.lo);
    }
}

static int id_decode(struct crdt_reader *reader, struct crdt_node_id *out)
{
    uint8_t tag;
    int rc = crdt_reader_u8(reader, &tag);
    if (rc)
        return rc;
    switch (tag) {
    case ID_ROOT:
        *out = CRDT_NODE_ROOT;
        return 0;
    case ID_TRASH:
        *out = CRDT_NODE_TRASH;
        return 0;
    case ID_TS:
        if ((rc = crdt_reader_varint(reader, &out->hi)) ||
            (rc = crdt_reader_varint(reader, &out->lo)))
            return rc;
        /* One encoding per id: the ts form is for ids with 0 < hi < 2^63 only. */
        return out->hi != 0 && !(out->hi >> 63) ? 0 : -EBADMSG;
    case ID_RAW:
        if ((rc = crdt_reader_u64le(reader, &out->hi)) ||
            (rc = crdt_reader_u64le(reader, &out->lo)))
            return rc;
        return out->hi == 0 || (out->hi >> 63) ? (out->hi == 0 && out->lo <= 2 ? -EBADMSG : 0)
                                               : -EBADMSG;
    default:
        return -EBADMSG;
    }
}

void crdt_tree_op_encode(struct crdt_buf *buf, const struct crdt_tree_op *op)
{
    crdt_ts_encode(buf, op->ts);
    crdt_buf_put_u8(buf, op->kind);
    id_encode(buf, op->child);
    id_encode(buf, op->parent);
    crdt_buf_put_bytes(buf, op->name, op->name_len);
    crdt_buf_put_varint(buf, op->seen_edit.counter);
    if (op->seen_edit.counter)
        crdt_buf_put_varint(buf, op->seen_edit.replica);
}

int crdt_tree_op_decode(struct crdt_reader *reader, struct crdt_tree_op *op)
{
    memset(op, 0, sizeof(*op));
    int rc;
    const uint8_t *name;
    size_t name_len;
    if ((rc = crdt_ts_decode(reader, &op->ts)) || (rc = crdt_reader_u8(reader, &op->kind)) ||
        (rc = id_decode(reader, &op->child)) || (rc = id_decode(reader, &op->parent)) ||
        (rc = crdt_reader_bytes(reader, CRDT_NAME_MAX, &name, &name_len)) ||
        (rc = crdt_reader_varint(reader, &op->seen_edit.counter)))
        return rc;
    if (op->seen_edit.counter && (rc = crdt_reader_varint(reader, &op->seen_edit.replica)))
        return rc;
    op->name = (const char *)name;
    op->name_len = (uint16_t)name_len;
    if (op->ts.counter == 0 || op->kind < CRDT_KIND_FILE || op->kind > CRDT_KIND_BLKDEV ||
        crdt_node_id_eq(op->child, CRDT_NODE_ROOT) || crdt_node_id_eq(op->child, CRDT_NODE_TRASH) ||
        !crdt_tree_name_valid(op->name, op->name_len))
        return -EBADMSG;
    return 0;
}

/* ---------- snapshot ---------- */

/* qsort has no context argument in C17, so each sort key carries what it compares. */
struct node_key {
    struct crdt_node_id id;
    uint32_t idx;
};

struct replica_key {
    uint64_t replica;
    uint32_t idx;
};

static int node_key_cmp(const void *a, const void *b)
{
    return crdt_node_id_cmp(((const struct node_key *)a)->id, ((const struct node_key *)b)->id);
}

static int replica_key_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct replica_key *)a)->replica;
    uint64_t y = ((const struct replica_key *)b)->replica;
    return x < y ? -1 : x > y;
}

static void put_name(struct crdt_buf *buf, const struct crdt_tree *tree, uint32_t handle)
{
    size_t len = tree->names[handle];
    crdt_buf_put_bytes(buf, tree->names + handle + 1, len);
}

static bool same_name(const struct crdt_tree *tree, uint32_t a, uint32_t b)
{
    if (a == b)
        return true;
    if (a == NIL || b == NIL || tree->names[a] != tree->names[b])
        return false;
    return memcmp(tree->names + a + 1, tree->names + b + 1, tree->names[a]) == 0;
}

int crdt_tree_snapshot(const struct crdt_tree *tree, struct crdt_buf *buf, bool without_log)
{
    uint32_t n = tree->node_count, r = tree->replica_count;
    struct node_key *nodes = malloc((size_t)n * sizeof(*nodes));
    uint32_t *node_pos = malloc((size_t)n * sizeof(*node_pos));
    struct replica_key *replicas = malloc(((size_t)r + 1) * sizeof(*replicas));
    uint32_t *replica_pos = malloc(((size_t)r + 1) * sizeof(*replica_pos));
    int rc = -ENOMEM;
    if (!nodes || !node_pos || !replicas || !replica_pos)
        goto out;
    for (uint32_t i = 0; i < n; i++)
        nodes[i] = (struct node_key){tree->nodes[i].id, i};
    qsort(nodes, n, sizeof(*nodes), node_key_cmp);
    for (uint32_t i = 0; i < n; i++)
        node_pos[nodes[i].idx] = i;
    for (uint32_t i = 0; i < r; i++)
        replicas[i] = (struct replica_key){tree->replicas[i], i};
    qsort(replicas, r, sizeof(*replicas), replica_key_cmp);
    for (uint32_t i = 0; i < r; i++)
        replica_pos[replicas[i].idx] = i;

    crdt_buf_put_u8(buf, SNAPSHOT_MAGIC0);
    crdt_buf_put_u8(buf, SNAPSHOT_MAGIC1);
    crdt_buf_put_u8(buf, SNAPSHOT_VERSION);
    crdt_buf_put_varint(buf, r);
    uint64_t prev = 0;
    for (uint32_t i = 0; i < r; i++) {
        crdt_buf_put_varint(buf, replicas[i].replica - prev);
        prev = replicas[i].replica;
    }
    crdt_buf_put_varint(buf, n);
    for (uint32_t i = 0; i < n; i++) {
        const struct node *node = &tree->nodes[nodes[i].idx];
        uint32_t id_replica =
            node->id.hi && !(node->id.hi >> 63) ? tree__replica_find(tree, node->id.lo) : NIL;
        uint8_t flags = (uint8_t)(node->kind << NF_KIND_SHIFT);
        flags |= (node->flags & F_TRASHED) ? NF_TRASHED : 0;
        flags |= (node->flags & F_PINNED) ? NF_PINNED : 0;
        flags |= node->place_parent != NIL ? NF_PLACED : 0;
        flags |= node->birth_counter ? NF_BIRTH : 0;
        flags |= id_replica != NIL ? NF_TS_ID : 0;
        crdt_buf_put_u8(buf, flags);
        if (id_replica != NIL) {
            crdt_buf_put_varint(buf, node->id.hi);
            crdt_buf_put_varint(buf, replica_pos[id_replica]);
        } else {
            crdt_buf_put_u64le(buf, node->id.hi);
            crdt_buf_put_u64le(buf, node->id.lo);
        }
        if (node->place_parent != NIL) {
            crdt_buf_put_varint(buf, node_pos[node->place_parent]);
            put_name(buf, tree, node->place_name);
        }
        if (node->birth_counter) {
            crdt_buf_put_varint(buf, node->birth_counter);
            crdt_buf_put_varint(buf, replica_pos[node->birth_replica]);
        }
    }
    crdt_buf_put_varint(buf, tree->floor.counter);
    if (tree->floor.counter)
        crdt_buf_put_varint(buf, tree->floor.replica);
    size_t log_len = without_log ? 0 : tree->log_len;
    crdt_buf_put_varint(buf, log_len);
    uint64_t prev_counter = 0;
    for (size_t i = 0; i < log_len; i++) {
        const struct log_entry *entry = &tree->log[i];
        const struct node *child = &tree->nodes[entry->child];
        bool name_is_place = same_name(tree, entry->name, child->place_name);
        bool old_placed = entry->old_parent != NIL;
        bool old_name_is_name = old_placed && same_name(tree, entry->old_name, entry->name);
        crdt_buf_put_varint(buf, entry->counter - prev_counter);
        prev_counter = entry->counter;
        crdt_buf_put_varint(buf, replica_pos[entry->replica]);
        crdt_buf_put_varint(buf, node_pos[entry->child]);
        crdt_buf_put_varint(buf, node_pos[entry->parent]);
        uint8_t flags = entry->applied ? EF_APPLIED : 0;
        flags |= (entry->old_flags & F_TRASHED) ? EF_OLD_TRASHED : 0;
        flags |= old_placed ? EF_OLD_PLACED : 0;
        flags |= name_is_place ? EF_NAME_IS_PLACE : 0;
        flags |= old_name_is_name ? EF_OLD_NAME_IS_NAME : 0;
        crdt_buf_put_u8(buf, flags);
        crdt_buf_put_u8(buf, (uint8_t)(entry->kind | entry->old_kind << 4));
        if (!name_is_place)
            put_name(buf, tree, entry->name);
        if (old_placed) {
            crdt_buf_put_varint(buf, node_pos[entry->old_parent]);
            if (!old_name_is_name)
                put_name(buf, tree, entry->old_name);
        }
    }
    rc = crdt_buf_status(buf);
out:
    free(nodes);
    free(node_pos);
    free(replicas);
    free(replica_pos);
    return rc;
}

static int read_name(struct crdt_reader *reader, struct crdt_tree *tree, uint32_t *handle)
{
    const uint8_t *bytes;
    size_t len;
    int rc = crdt_reader_bytes(reader, CRDT_NAME_MAX, &bytes, &len);
    if (rc)
        return rc;
    if (!crdt_tree_name_valid((const char *)bytes, len))
        return -EBADMSG;
    return tree__name_intern(tree, handle, (const char *)bytes, len);
}

/* Every raw-parent chain must end at the root or the trash: no cycles. */
static int check_acyclic(const struct crdt_tree *tree)
{
    uint8_t *state = calloc(tree->node_count, 1); /* 0 new, 1 on the current path, 2 done */
    if (!state)
        return -ENOMEM;
    int rc = 0;
    for (uint32_t start = 0; start < tree->node_count && !rc; start++) {
        uint32_t idx = start;
        while (idx != NIL && state[idx] == 0) {
            state[idx] = 1;
            const struct node *node = &tree->nodes[idx];
            idx = idx <= TRASH_IDX            ? NIL
                  : (node->flags & F_TRASHED) ? TRASH_IDX
                                              : node->place_parent;
        }
        if (idx != NIL && state[idx] == 1)
            rc = -EBADMSG;
        for (idx = start; idx != NIL && state[idx] == 1;) {
            state[idx] = 2;
            const struct node *node = &tree->nodes[idx];
            idx = idx <= TRASH_IDX            ? NIL
                  : (node->flags & F_TRASHED) ? TRASH_IDX
                                              : node->place_parent;
        }
    }
    free(state);
    return rc;
}

int crdt_tree_load(struct crdt_tree **out, const uint8_t *data, size_t len)
{
    *out = NULL;
    struct crdt_reader reader;
    crdt_reader_init(&reader, data, len);
    struct crdt_tree *tree = NULL;
    uint64_t *replicas = NULL;
    uint32_t *replica_idx = NULL;
    uint8_t magic0, magic1, version;
    uint64_t r, n;
    int rc;
    if ((rc = crdt_reader_u8(&reader, &magic0)) || (rc = crdt_reader_u8(&reader, &magic1)) ||
        (rc = crdt_reader_u8(&reader, &version)))
        return rc;
    if (magic0 != SNAPSHOT_MAGIC0 || magic1 != SNAPSHOT_MAGIC1 || version != SNAPSHOT_VERSION)
        return -EBADMSG;
    if ((rc = crdt_reader_varint_max(&reader, crdt_reader_left(&reader), &r)))
        return rc;
    replicas = malloc(((size_t)r + 1) * sizeof(*replicas));
    replica_idx = malloc(((size_t)r + 1) * sizeof(*replica_idx));
    if (!replicas || !replica_idx) {
        rc = -ENOMEM;
        goto fail;
    }
    for (uint64_t i = 0, prev = 0; i < r; i++) {
        uint64_t delta;
        if ((rc = crdt_reader_varint(&reader, &delta)))
            goto fail;
        if ((i > 0 && delta == 0) || delta > UINT64_MAX - prev) {
            rc = -EBADMSG;
            goto fail;
        }
        prev += delta;
        replicas[i] = prev;
    }
    /* A node takes at least 3 bytes; that bounds the allocation by the input. */
    if ((rc = crdt_reader_varint_max(&reader, crdt_reader_left(&reader) / 3 + 2, &n)))
        goto fail;
    if (n < 2) {
        rc = -EBADMSG;
        goto fail;
    }
    if ((rc = crdt_tree_new(&tree)))
        goto fail;
    for (uint64_t i = 0; i < r; i++)
        if ((rc = tree__replica_intern(tree, &replica_idx[i], replicas[i])))
            goto fail;
    {
        uint32_t id_cap = 16, bucket_cap = 16;
        while (id_cap < n * 2)
            id_cap *= 2;
        while (bucket_cap < n)
            bucket_cap *= 2;
        struct node *nodes = realloc(tree->nodes, (size_t)n * sizeof(*nodes));
        if (!nodes) {
            rc = -ENOMEM;
            goto fail;
        }
        tree->nodes = nodes;
        uint32_t *up = realloc(tree->up, (size_t)n * sizeof(*up));
        if (!up) {
            rc = -ENOMEM;
            goto fail;
        }
        tree->up = up;
        tree->node_cap = (uint32_t)n;
        if ((rc = tree__id_table_resize(tree, id_cap)) ||
            (rc = tree__buckets_resize(tree, bucket_cap)))
            goto fail;
    }
    /* Places refer to later nodes too: read all ids first, then link. */
    struct pending {
        uint32_t parent;
        uint32_t name;
        uint8_t flags;
        uint8_t kind;
    } *pending = calloc((size_t)n, sizeof(*pending));
    if (!pending) {
        rc = -ENOMEM;
        goto fail;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint8_t flags;
        struct crdt_node_id id;
        if ((rc = crdt_reader_u8(&reader, &flags)))
            goto fail_pending;
        if (flags & NF_TS_ID) {
            uint64_t pos;
            if ((rc = crdt_reader_varint(&reader, &id.hi)) ||
                (rc = crdt_reader_varint_max(&reader, r ? r - 1 : 0, &pos)))
                goto fail_pending;
            if (r == 0 || id.hi == 0 || (id.hi >> 63)) {
                rc = -EBADMSG;
                goto fail_pending;
            }
            id.lo = replicas[pos];
        } else if ((rc = crdt_reader_u64le(&reader, &id.hi)) ||
                   (rc = crdt_reader_u64le(&reader, &id.lo))) {
            goto fail_pending;
        }
        uint8_t kind = (uint8_t)(flags >> NF_KIND_SHIFT);
        bool special = i < 2;
        struct crdt_node_id want = i == 0 ? CRDT_NODE_ROOT : CRDT_NODE_TRASH;
        if ((special && (!crdt_node_id_eq(id, want) || (flags & ~(7u << NF_KIND_SHIFT)) ||
                         kind != CRDT_KIND_DIR)) ||
            (!special && (crdt_node_id_cmp(id, tree->nodes[i - 1].id) <= 0 ||
                          ((flags & (NF_PLACED | NF_BIRTH)) && (kind < CRDT_KIND_FILE)))) ||
            (!(flags & NF_TS_ID) && id.hi != 0 && !(id.hi >> 63) &&
             tree__replica_find(tree, id.lo) != NIL)) {
            rc = -EBADMSG;
            goto fail_pending;
        }
        if (i >= 2) {
            uint32_t idx;
            if ((rc = tree__node_add(tree, &idx, id)))
                goto fail_pending;
        }
        pending[i].flags = flags;
        pending[i].kind = kind;
        pending[i].parent = NIL;
        pending[i].name = NIL;
        if (flags & NF_PLACED) {
            uint64_t parent;
            if ((rc = crdt_reader_varint_max(&reader, n - 1, &parent)) ||
                (rc = read_name(&reader, tree, &pending[i].name)))
                goto fail_pending;
            if (parent == i || parent == TRASH_IDX) {
                rc = -EBADMSG;
                goto fail_pending;
            }
            pending[i].parent = (uint32_t)parent;
        }
        if (flags & NF_BIRTH) {
            uint64_t counter, pos;
            if ((rc = crdt_reader_varint(&reader, &counter)) ||
                (rc = crdt_reader_varint_max(&reader, r ? r - 1 : 0, &pos)))
                goto fail_pending;
            if (counter == 0 || r == 0) {
                rc = -EBADMSG;
                goto fail_pending;
            }
            tree->nodes[i].birth_counter = counter;
            tree->nodes[i].birth_replica = replica_idx[pos];
        }
    }
    for (uint32_t i = 2; i < n; i++) {
        struct node *node = &tree->nodes[i];
        node->flags = (pending[i].flags & NF_PINNED) ? F_PINNED : 0;
        tree__set_state(tree, i, pending[i].parent, pending[i].name,
                        (pending[i].flags & NF_TRASHED) ? F_TRASHED : 0, pending[i].kind);
    }
    free(pending);
    pending = NULL;
    if ((rc = check_acyclic(tree)))
        goto fail;

    uint64_t floor_counter, floor_replica = 0, log_len;
    if ((rc = crdt_reader_varint(&reader, &floor_counter)))
        goto fail;
    if (floor_counter && (rc = crdt_reader_varint(&reader, &floor_replica)))
        goto fail;
    tree->floor = (struct crdt_ts){floor_counter, floor_replica};
    /* An entry takes at least 6 bytes. */
    if ((rc = crdt_reader_varint_max(&reader, crdt_reader_left(&reader) / 6, &log_len)) ||
        (rc = tree__log_reserve(tree, (size_t)log_len)))
        goto fail;
    uint64_t counter = 0;
    for (uint64_t i = 0; i < log_len; i++) {
        uint64_t delta, replica, child, parent;
        uint8_t flags, kinds;
        if ((rc = crdt_reader_varint(&reader, &delta)) ||
            (rc = crdt_reader_varint_max(&reader, r ? r - 1 : 0, &replica)) ||
            (rc = crdt_reader_varint_max(&reader, n - 1, &child)) ||
            (rc = crdt_reader_varint_max(&reader, n - 1, &parent)) ||
            (rc = crdt_reader_u8(&reader, &flags)) || (rc = crdt_reader_u8(&reader, &kinds)))
            goto fail;
        if (r == 0 || delta > UINT64_MAX - counter || child < 2 || (flags & ~31u)) {
            rc = -EBADMSG;
            goto fail;
        }
        counter += delta;
        struct log_entry *entry = &tree->log[tree->log_len];
        *entry = (struct log_entry){
            .counter = counter,
            .replica = replica_idx[replica],
            .child = (uint32_t)child,
            .parent = (uint32_t)parent,
            .kind = kinds & 15,
            .old_kind = kinds >> 4,
            .old_flags = (flags & EF_OLD_TRASHED) ? F_TRASHED : 0,
            .applied = flags & EF_APPLIED,
            .old_parent = NIL,
            .old_name = NIL,
        };
        struct crdt_ts ts = {counter, replicas[replica]};
        bool ordered = crdt_ts_cmp(ts, tree->floor) > 0;
        if (tree->log_len > 0) {
            const struct log_entry *prev = &tree->log[tree->log_len - 1];
            ordered =
                ordered &&
                crdt_ts_cmp((struct crdt_ts){prev->counter, tree->replicas[prev->replica]}, ts) < 0;
        }
        if (!ordered || entry->kind < CRDT_KIND_FILE || entry->kind > CRDT_KIND_BLKDEV ||
            entry->old_kind > CRDT_KIND_BLKDEV) {
            rc = -EBADMSG;
            goto fail;
        }
        if (flags & EF_NAME_IS_PLACE) {
            entry->name = tree->nodes[child].place_name;
            if (entry->name == NIL) {
                rc = -EBADMSG;
                goto fail;
            }
        } else if ((rc = read_name(&reader, tree, &entry->name))) {
            goto fail;
        }
        if (flags & EF_OLD_PLACED) {
            uint64_t old_parent;
            if ((rc = crdt_reader_varint_max(&reader, n - 1, &old_parent)))
                goto fail;
            if (old_parent == TRASH_IDX || old_parent == child) {
                rc = -EBADMSG;
                goto fail;
            }
            entry->old_parent = (uint32_t)old_parent;
            if (flags & EF_OLD_NAME_IS_NAME)
                entry->old_name = entry->name;
            else if ((rc = read_name(&reader, tree, &entry->old_name)))
                goto fail;
        } else if (flags & EF_OLD_NAME_IS_NAME) {
            rc = -EBADMSG;
            goto fail;
        }
        tree->log_len++;
    }
    if (crdt_reader_left(&reader) != 0) {
        rc = -EBADMSG;
        goto fail;
    }
    tree->names_live_mark = tree->names_len;
    free(replicas);
    free(replica_idx);
    *out = tree;
    return 0;
fail_pending:
    free(pending);
fail:
    free(replicas);
    free(replica_idx);
    crdt_tree_free(tree);
    return rc;
}
