/*
 * crdt/tree: see tree.h for the contract.
 *
 * Representation. Nodes live in one array and refer to each other by 32-bit
 * index; ids map to indexes through an open-addressing table. Each node has a
 * *place* (place_parent, place_name) and a TRASHED flag. A move into the
 * trash sets the flag and keeps the place, which is exactly what rule 3 needs
 * to show the node again where it was. So:
 *
 *   raw parent (what the paper's algorithm sees) = TRASH if TRASHED, else place_parent
 *   visible parent                               = place_parent (see "cycles" below)
 *
 * Every placed node is linked into its place parent's child list and into
 * the (place_parent, name) hash chain; trashed nodes too ("ghosts"), so the
 * nodes that rule 3 may bring back are found where they would be shown.
 *
 * Invariants (checked by the property tests, asserted where cheap):
 *   - the raw-parent graph is acyclic (the paper's guarantee);
 *   - live_children of a node = number of non-trashed nodes placed in it;
 *   - the undo log is sorted by timestamp and holds only ops > floor;
 *   - state == replaying the log's ops in order from the state its first
 *     entry's old values describe.
 *
 * Visibility (rule 3). A trashed node T is *needed* when it is pinned, has a
 * live child, or has a needed trashed child. A node is visible when it is not
 * trashed or is needed, and its place-parent chain reaches the root.
 *
 * Cycles. Place links of trashed nodes are not checked by the move
 * algorithm, so the place graph can close a cycle through trashed nodes
 * (A deletes X after moving it into Y; B, unaware, moves Y into X). Each such
 * cycle has a *breaker*: its trashed member with the smallest id, shown at
 * the root under a conflict name. The rule depends only on the state, so
 * every replica shows the same, and nothing below the cycle is lost.
 */
#include "tree.h"
#include "tree_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- small helpers ---------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_bytes(uint64_t seed, const void *data, size_t len)
{
    const uint8_t *bytes = data;
    uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ULL);
    while (len >= 8) {
        uint64_t word = 0;
        for (int i = 0; i < 8; i++)
            word |= (uint64_t)bytes[i] << (8 * i);
        h = mix64(h ^ word) * 0x9e3779b97f4a7c15ULL;
        bytes += 8;
        len -= 8;
    }
    uint64_t word = 0;
    for (size_t i = 0; i < len; i++)
        word |= (uint64_t)bytes[i] << (8 * i);
    return mix64(h ^ word ^ 0xff51afd7ed558ccdULL);
}

static uint64_t hash_id(struct crdt_node_id id)
{
    return mix64(id.hi * 0x9e3779b97f4a7c15ULL ^ mix64(id.lo));
}

struct crdt_node_id crdt_node_id_from_ts(struct crdt_ts ts)
{
    return (struct crdt_node_id){.hi = ts.counter, .lo = ts.replica};
}

int crdt_node_id_cmp(struct crdt_node_id a, struct crdt_node_id b)
{
    if (a.hi != b.hi)
        return a.hi < b.hi ? -1 : 1;
    if (a.lo != b.lo)
        return a.lo < b.lo ? -1 : 1;
    return 0;
}

bool crdt_node_id_eq(struct crdt_node_id a, struct crdt_node_id b)
{
    return a.hi == b.hi && a.lo == b.lo;
}

struct crdt_node_id crdt_tree_dir_id(struct crdt_node_id parent, const char *name, size_t name_len)
{
    uint8_t key[16];
    for (int i = 0; i < 8; i++) {
        key[i] = (uint8_t)(parent.hi >> (8 * i));
        key[8 + i] = (uint8_t)(parent.lo >> (8 * i));
    }
    uint64_t seed_hi = hash_bytes(0x7765667464697231ULL, key, sizeof(key));
    uint64_t seed_lo = hash_bytes(0x7765667464697232ULL, key, sizeof(key));
    struct crdt_node_id id = {
        .hi = hash_bytes(seed_hi, name, name_len) | (1ULL << 63),
        .lo = hash_bytes(seed_lo, name, name_len),
    };
    return id;
}

bool crdt_tree_name_valid(const char *name, size_t name_len)
{
    if (name_len == 0 || name_len > CRDT_NAME_MAX)
        return false;
    if (name[0] == '.' && (name_len == 1 || (name_len == 2 && name[1] == '.')))
        return false;
    return memchr(name, '/', name_len) == NULL && memchr(name, '\0', name_len) == NULL;
}

static bool kind_valid(uint8_t kind)
{
    return kind >= CRDT_KIND_FILE && kind <= CRDT_KIND_BLKDEV;
}

static void *grow_array(void *array, size_t elem, uint32_t *cap, uint32_t need)
{
    if (need <= *cap)
        return array;
    /* 1.5x growth: the node array dominates memory, and doubling wastes up to half. */
    uint64_t new_cap = *cap ? *cap : 16;
    while (new_cap < need)
        new_cap += new_cap / 2;
    if (new_cap > UINT32_MAX - 1)
        new_cap = UINT32_MAX - 1;
    if (new_cap < need)
        return NULL;
    void *grown = realloc(array, (size_t)new_cap * elem);
    if (grown)
        *cap = (uint32_t)new_cap;
    return grown;
}

/* ---------- names ---------- */

static const uint8_t *name_bytes(const struct crdt_tree *tree, uint32_t handle, size_t *len)
{
    *len = tree->names[handle];
    return tree->names + handle + 1;
}

static bool name_equals(const struct crdt_tree *tree, uint32_t handle, const char *name, size_t len)
{
    size_t have;
    const uint8_t *bytes = name_bytes(tree, handle, &have);
    return have == len && memcmp(bytes, name, len) == 0;
}

static bool handles_equal(const struct crdt_tree *tree, uint32_t a, uint32_t b)
{
    if (a == b)
        return true;
    if (a == NIL || b == NIL)
        return false;
    size_t len;
    const uint8_t *bytes = name_bytes(tree, b, &len);
    return name_equals(tree, a, (const char *)bytes, len);
}

int tree__name_intern(struct crdt_tree *tree, uint32_t *out, const char *name, size_t len)
{
    assert(len >= 1 && len <= CRDT_NAME_MAX);
    if (tree->names_len > UINT32_MAX - 512)
        return -ENOMEM;
    uint32_t need = tree->names_len + (uint32_t)len + 1;
    uint8_t *grown = grow_array(tree->names, 1, &tree->names_cap, need);
    if (!grown)
        return -ENOMEM;
    tree->names = grown;
    *out = tree->names_len;
    tree->names[tree->names_len] = (uint8_t)len;
    memcpy(tree->names + tree->names_len + 1, name, len);
    tree->names_len = need;
    return 0;
}

static uint64_t place_hash(const struct crdt_tree *tree, uint32_t parent, uint32_t name)
{
    size_t len;
    const uint8_t *bytes = name_bytes(tree, name, &len);
    return hash_bytes(parent, bytes, len);
}

static uint64_t place_hash_str(uint32_t parent, const char *name, size_t len)
{
    return hash_bytes(parent, name, len);
}

/* ---------- replicas ---------- */

static int replica_table_rebuild(struct crdt_tree *tree, uint32_t cap)
{
    uint32_t *table = calloc(cap, sizeof(*table));
    if (!table)
        return -ENOMEM;
    for (uint32_t i = 0; i < tree->replica_count; i++) {
        uint32_t slot = (uint32_t)(mix64(tree->replicas[i]) & (cap - 1));
        while (table[slot])
            slot = (slot + 1) & (cap - 1);
        table[slot] = i + 1;
    }
    free(tree->replica_table);
    tree->replica_table = table;
    tree->replica_table_cap = cap;
    return 0;
}

uint32_t tree__replica_find(const struct crdt_tree *tree, uint64_t replica)
{
    if (!tree->replica_table_cap)
        return NIL;
    uint32_t mask = tree->replica_table_cap - 1;
    for (uint32_t slot = (uint32_t)(mix64(replica) & mask);; slot = (slot + 1) & mask) {
        uint32_t entry = tree->replica_table[slot];
        if (!entry)
            return NIL;
        if (tree->replicas[entry - 1] == replica)
            return entry - 1;
    }
}

int tree__replica_intern(struct crdt_tree *tree, uint32_t *out, uint64_t replica)
{
    uint32_t found = tree__replica_find(tree, replica);
    if (found != NIL) {
        *out = found;
        return 0;
    }
    uint64_t *grown =
        grow_array(tree->replicas, sizeof(*grown), &tree->replica_cap, tree->replica_count + 1);
    if (!grown)
        return -ENOMEM;
    tree->replicas = grown;
    tree->replicas[tree->replica_count++] = replica;
    if ((uint64_t)tree->replica_count * 2 > tree->replica_table_cap) {
        uint32_t cap = tree->replica_table_cap ? tree->replica_table_cap * 2 : 16;
        int rc = replica_table_rebuild(tree, cap);
        if (rc) {
            tree->replica_count--;
            return rc;
        }
    } else {
        uint32_t mask = tree->replica_table_cap - 1;
        uint32_t slot = (uint32_t)(mix64(replica) & mask);
        while (tree->replica_table[slot])
            slot = (slot + 1) & mask;
        tree->replica_table[slot] = tree->replica_count;
    }
    *out = tree->replica_count - 1;
    return 0;
}

/* Timestamp order between (counter, replica index) and a full timestamp. */
static int ts_cmp_idx(const struct crdt_tree *tree, uint64_t counter, uint32_t replica,
                      struct crdt_ts other)
{
    return crdt_ts_cmp((struct crdt_ts){counter, tree->replicas[replica]}, other);
}

/* ---------- nodes and indexes ---------- */

static uint32_t node_find(const struct crdt_tree *tree, struct crdt_node_id id)
{
    uint32_t mask = tree->id_cap - 1;
    for (uint32_t slot = (uint32_t)(hash_id(id) & mask);; slot = (slot + 1) & mask) {
        uint32_t entry = tree->id_table[slot];
        if (!entry)
            return NIL;
        if (crdt_node_id_eq(tree->nodes[entry - 1].id, id))
            return entry - 1;
    }
}

static void id_table_insert(uint32_t *table, uint32_t cap, struct crdt_node_id id, uint32_t idx)
{
    uint32_t mask = cap - 1;
    uint32_t slot = (uint32_t)(hash_id(id) & mask);
    while (table[slot])
        slot = (slot + 1) & mask;
    table[slot] = idx + 1;
}

int tree__id_table_resize(struct crdt_tree *tree, uint32_t cap)
{
    uint32_t *table = calloc(cap, sizeof(*table));
    if (!table)
        return -ENOMEM;
    for (uint32_t i = 0; i < tree->node_count; i++)
        id_table_insert(table, cap, tree->nodes[i].id, i);
    free(tree->id_table);
    tree->id_table = table;
    tree->id_cap = cap;
    return 0;
}

/* The chain head for `slot`: the live chain, or the trashed one. */
static uint32_t *bucket_head(const struct crdt_tree *tree, uint32_t slot, bool trashed)
{
    return &tree->name_buckets[slot + (trashed ? tree->bucket_cap : 0)];
}

static void bucket_link(struct crdt_tree *tree, uint32_t idx)
{
    struct node *node = &tree->nodes[idx];
    uint32_t slot =
        (uint32_t)(place_hash(tree, node->place_parent, node->place_name) & (tree->bucket_cap - 1));
    uint32_t *head = bucket_head(tree, slot, node->flags & F_TRASHED);
    node->name_next = *head;
    *head = idx;
}

static void bucket_unlink(struct crdt_tree *tree, uint32_t idx)
{
    struct node *node = &tree->nodes[idx];
    uint32_t slot =
        (uint32_t)(place_hash(tree, node->place_parent, node->place_name) & (tree->bucket_cap - 1));
    uint32_t *link = bucket_head(tree, slot, node->flags & F_TRASHED);
    while (*link != idx) {
        assert(*link != NIL);
        link = &tree->nodes[*link].name_next;
    }
    *link = node->name_next;
    node->name_next = NIL;
}

/* The first node of `slot`'s chains: live ones, then trashed ones if `with_trashed`. */
static uint32_t chain_first(const struct crdt_tree *tree, uint32_t slot, bool with_trashed)
{
    uint32_t first = *bucket_head(tree, slot, false);
    return first != NIL || !with_trashed ? first : *bucket_head(tree, slot, true);
}

/* The node after `idx` in chain_first's order. */
static uint32_t chain_next(const struct crdt_tree *tree, uint32_t idx, uint32_t slot,
                           bool with_trashed)
{
    const struct node *node = &tree->nodes[idx];
    if (node->name_next != NIL || !with_trashed || (node->flags & F_TRASHED))
        return node->name_next;
    return *bucket_head(tree, slot, true);
}

int tree__buckets_resize(struct crdt_tree *tree, uint32_t cap)
{
    uint32_t *buckets = malloc((size_t)cap * 2 * sizeof(*buckets));
    if (!buckets)
        return -ENOMEM;
    memset(buckets, 0xff, (size_t)cap * 2 * sizeof(*buckets));
    free(tree->name_buckets);
    tree->name_buckets = buckets;
    tree->bucket_cap = cap;
    for (uint32_t i = 0; i < tree->node_count; i++)
        if (tree->nodes[i].place_parent != NIL)
            bucket_link(tree, i);
    return 0;
}

int tree__node_add(struct crdt_tree *tree, uint32_t *out, struct crdt_node_id id)
{
    if (tree->node_count >= UINT32_MAX / 4)
        return -ENOMEM;
    struct node *grown =
        grow_array(tree->nodes, sizeof(*grown), &tree->node_cap, tree->node_count + 1);
    if (!grown)
        return -ENOMEM;
    tree->nodes = grown;
    uint32_t *up = realloc(tree->up, (size_t)tree->node_cap * sizeof(*up));
    if (!up)
        return -ENOMEM;
    tree->up = up;
    if ((uint64_t)(tree->node_count + 1) * 2 > tree->id_cap) {
        int rc = tree__id_table_resize(tree, tree->id_cap * 2);
        if (rc)
            return rc;
    }
    if (tree->node_count + 1 > tree->bucket_cap) {
        int rc = tree__buckets_resize(tree, tree->bucket_cap * 2);
        if (rc)
            return rc;
    }
    uint32_t idx = tree->node_count++;
    tree->nodes[idx] = (struct node){
        .id = id,
        .place_parent = NIL,
        .place_name = NIL,
        .first_child = NIL,
        .next_sibling = NIL,
        .prev_sibling = NIL,
        .name_next = NIL,
    };
    tree->up[idx] = NIL;
    id_table_insert(tree->id_table, tree->id_cap, id, idx);
    *out = idx;
    return 0;
}

static int node_intern(struct crdt_tree *tree, uint32_t *out, struct crdt_node_id id)
{
    uint32_t found = node_find(tree, id);
    if (found != NIL) {
        *out = found;
        return 0;
    }
    return tree__node_add(tree, out, id);
}

static bool is_cause(const struct node *node)
{
    return (node->flags & F_TRASHED) && (node->live_children > 0 || (node->flags & F_PINNED));
}

static void touch(struct crdt_tree *tree, uint32_t idx)
{
    if (!tree->tracking)
        return;
    const struct node *node = &tree->nodes[idx];
    if (tree->touched_len == tree->touched_cap) {
        size_t cap = tree->touched_cap ? tree->touched_cap * 2 : 64;
        struct touched *grown = realloc(tree->touched, cap * sizeof(*grown));
        if (!grown) {
            /* Losing track would hide a change from the store: fall back to "everything". */
            tree->tracking = false;
            tree->touched_len = SIZE_MAX;
            return;
        }
        tree->touched = grown;
        tree->touched_cap = cap;
    }
    tree->touched[tree->touched_len++] =
        (struct touched){.node = idx, .parent = node->place_parent, .name = node->place_name};
}

/*
 * Moves node `idx` to a new (place, flags, kind), keeping the child lists,
 * the name chains, live_children and the cause count true.
 */
void tree__set_state(struct crdt_tree *tree, uint32_t idx, uint32_t parent, uint32_t name,
                     uint8_t trashed, uint8_t kind)
{
    struct node *node = &tree->nodes[idx];
    touch(tree, idx);
    bool place_changes =
        node->place_parent != parent || !handles_equal(tree, node->place_name, name);
    uint8_t old_trashed = node->flags & F_TRASHED;
    /* Trashing or restoring moves the node between its bucket's two chains. */
    bool relink = place_changes || old_trashed != (trashed & F_TRASHED);

    if (node->place_parent != NIL && !old_trashed) {
        struct node *old_parent = &tree->nodes[node->place_parent];
        tree->causes -= is_cause(old_parent);
        old_parent->live_children--;
        tree->causes += is_cause(old_parent);
    }
    tree->causes -= is_cause(node);
    if (relink && node->place_parent != NIL)
        bucket_unlink(tree, idx);
    if (place_changes && node->place_parent != NIL) {
        struct node *old_parent = &tree->nodes[node->place_parent];
        if (node->prev_sibling != NIL)
            tree->nodes[node->prev_sibling].next_sibling = node->next_sibling;
        else
            old_parent->first_child = node->next_sibling;
        if (node->next_sibling != NIL)
            tree->nodes[node->next_sibling].prev_sibling = node->prev_sibling;
        node->next_sibling = node->prev_sibling = NIL;
    }
    node->flags = (uint8_t)((node->flags & ~F_TRASHED) | (trashed & F_TRASHED));
    node->kind = kind;
    if (place_changes) {
        node->place_parent = parent;
        node->place_name = name;
        if (parent != NIL) {
            struct node *new_parent = &tree->nodes[parent];
            node->next_sibling = new_parent->first_child;
            if (new_parent->first_child != NIL)
                tree->nodes[new_parent->first_child].prev_sibling = idx;
            new_parent->first_child = idx;
        }
    }
    if (relink && node->place_parent != NIL)
        bucket_link(tree, idx);
    tree->causes += is_cause(node);
    if (node->place_parent != NIL && !(node->flags & F_TRASHED)) {
        struct node *new_parent = &tree->nodes[node->place_parent];
        tree->causes -= is_cause(new_parent);
        new_parent->live_children++;
        tree->causes += is_cause(new_parent);
    }
    tree->up[idx] = (node->flags & F_TRASHED) ? TRASH_IDX : node->place_parent;
    if (tree->causes > tree->causes_peak)
        tree->causes_peak = tree->causes;
    touch(tree, idx);
}

static uint32_t raw_parent(const struct crdt_tree *tree, uint32_t idx)
{
    return tree->up[idx];
}

/*
 * Walks the raw parents from `idx`: true if it reaches the root; *passes is
 * set if the walk meets `through` on the way (idx itself included).
 */
static bool raw_reaches_root(const struct crdt_tree *tree, uint32_t idx, uint32_t through,
                             bool *passes)
{
    bool met = false;
    for (uint32_t steps = 0; idx != NIL && steps <= tree->node_count; steps++) {
        met |= idx == through;
        if (idx == ROOT_IDX || idx == TRASH_IDX)
            break;
        idx = tree->up[idx];
    }
    if (passes)
        *passes = met;
    return idx == ROOT_IDX;
}

/* True if `ancestor` is `idx` or a raw ancestor of it. Bounded even on a corrupt state. */
bool tree__raw_is_ancestor(const struct crdt_tree *tree, uint32_t ancestor, uint32_t idx)
{
    for (uint32_t steps = 0; idx != NIL && steps <= tree->node_count; steps++) {
        if (idx == ancestor)
            return true;
        if (idx == ROOT_IDX || idx == TRASH_IDX)
            return false;
        idx = raw_parent(tree, idx);
    }
    return false;
}

/* ---------- the move algorithm ---------- */

/* `acyclic_known`: the caller already checked that the move makes no cycle. */
static void do_op(struct crdt_tree *tree, struct log_entry *entry, bool acyclic_known)
{
    struct node *node = &tree->nodes[entry->child];
    entry->old_parent = node->place_parent;
    entry->old_name = node->place_name;
    entry->old_kind = node->kind;
    entry->old_flags = node->flags & F_TRASHED;
    if (node->birth_counter == 0 ||
        ts_cmp_idx(tree, entry->counter, entry->replica,
                   (struct crdt_ts){node->birth_counter, tree->replicas[node->birth_replica]}) <
            0) {
        node->birth_counter = entry->counter;
        node->birth_replica = entry->replica;
    }
    if (entry->parent == TRASH_IDX) {
        tree__set_state(tree, entry->child, node->place_parent, node->place_name, F_TRASHED,
                        entry->kind);
        entry->applied = 1;
    } else if (!acyclic_known && tree__raw_is_ancestor(tree, entry->child, entry->parent)) {
        entry->applied = 0;
    } else {
        tree__set_state(tree, entry->child, entry->parent, entry->name, 0, entry->kind);
        entry->applied = 1;
    }
}

static void undo_op(struct crdt_tree *tree, const struct log_entry *entry)
{
    if (entry->applied)
        tree__set_state(tree, entry->child, entry->old_parent, entry->old_name, entry->old_flags,
                        entry->old_kind);
}

int tree__log_reserve(struct crdt_tree *tree, size_t extra)
{
    if (tree->log_cap - tree->log_len >= extra)
        return 0;
    size_t cap = tree->log_cap ? tree->log_cap : 64;
    while (cap - tree->log_len < extra)
        cap += cap / 2;
    struct log_entry *grown = realloc(tree->log, cap * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    tree->log = grown;
    tree->log_cap = cap;
    return 0;
}

static int entry_cmp(const struct crdt_tree *tree, const struct log_entry *a,
                     const struct log_entry *b)
{
    return ts_cmp_idx(tree, a->counter, a->replica,
                      (struct crdt_ts){b->counter, tree->replicas[b->replica]});
}

/* First log index whose timestamp is > ts. */
static size_t log_upper_bound(const struct crdt_tree *tree, struct crdt_ts ts)
{
    size_t lo = 0, hi = tree->log_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ts_cmp_idx(tree, tree->log[mid].counter, tree->log[mid].replica, ts) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool log_contains(const struct crdt_tree *tree, struct crdt_ts ts)
{
    size_t at = log_upper_bound(tree, ts);
    return at > 0 &&
           ts_cmp_idx(tree, tree->log[at - 1].counter, tree->log[at - 1].replica, ts) == 0;
}

static bool op_valid(const struct crdt_tree_op *op)
{
    if (op->ts.counter == 0 || !kind_valid(op->kind))
        return false;
    if (crdt_node_id_eq(op->child, CRDT_NODE_NONE) || crdt_node_id_eq(op->child, CRDT_NODE_ROOT) ||
        crdt_node_id_eq(op->child, CRDT_NODE_TRASH) || crdt_node_id_eq(op->parent, CRDT_NODE_NONE))
        return false;
    return crdt_tree_name_valid(op->name, op->name_len);
}

struct sort_item {
    struct crdt_ts ts;
    size_t index;
};

static int sort_item_cmp(const void *a, const void *b)
{
    const struct sort_item *x = a, *y = b;
    int c = crdt_ts_cmp(x->ts, y->ts);
    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Builds the log entry of an op: interns its replica, nodes and name. */
static int entry_from_op(struct crdt_tree *tree, struct log_entry *entry,
                         const struct crdt_tree_op *op)
{
    int rc;
    uint32_t replica, child, parent;
    if ((rc = tree__replica_intern(tree, &replica, op->ts.replica)) ||
        (rc = node_intern(tree, &child, op->child)) ||
        (rc = node_intern(tree, &parent, op->parent)))
        return rc;
    uint32_t name = tree->nodes[child].place_name;
    /* Pure moves keep the name: share the node's handle rather than growing the arena. */
    if (name == NIL || !name_equals(tree, name, op->name, op->name_len)) {
        if ((rc = tree__name_intern(tree, &name, op->name, op->name_len)))
            return rc;
    }
    *entry = (struct log_entry){
        .counter = op->ts.counter,
        .replica = replica,
        .child = child,
        .parent = parent,
        .name = name,
        .kind = op->kind,
    };
    return 0;
}

static int changes_collect(struct crdt_tree *tree, struct crdt_tree_changes *changes);

static void tracking_begin(struct crdt_tree *tree, struct crdt_tree_changes *changes)
{
    tree->tracking = changes != NULL;
    tree->touched_len = 0;
    tree->causes_peak = tree->causes;
}

static int tracking_end(struct crdt_tree *tree, struct crdt_tree_changes *changes, int rc)
{
    if (changes) {
        int collect_rc = changes_collect(tree, changes);
        if (!rc)
            rc = collect_rc;
    }
    tree->tracking = false;
    tree->touched_len = 0;
    /* Scratch for one apply: a big merge must not keep its memory for the tree's life. */
    if (tree->touched_cap > 4096) {
        free(tree->touched);
        tree->touched = NULL;
        tree->touched_cap = 0;
    }
    return rc;
}

int crdt_tree_apply(struct crdt_tree *tree, const struct crdt_tree_op *ops, size_t count,
                    struct crdt_tree_changes *changes)
{
    for (size_t i = 0; i < count; i++)
        if (!op_valid(&ops[i]))
            return -EINVAL;
    if (count == 0)
        return 0;
    if (count > SIZE_MAX / sizeof(struct sort_item))
        return -ENOMEM;
    struct sort_item *order = malloc(count * sizeof(*order));
    if (!order)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++)
        order[i] = (struct sort_item){.ts = ops[i].ts, .index = i};
    qsort(order, count, sizeof(*order), sort_item_cmp);

    /* Keep only new ops: above the truncation floor, not in the log, first of equal stamps. */
    size_t fresh = 0;
    for (size_t i = 0; i < count; i++) {
        if (crdt_ts_cmp(order[i].ts, tree->floor) <= 0)
            continue;
        if (fresh > 0 && crdt_ts_cmp(order[fresh - 1].ts, order[i].ts) == 0)
            continue;
        if (log_contains(tree, order[i].ts))
            continue;
        order[fresh++] = order[i];
    }
    int rc = 0;
    struct log_entry *incoming = NULL, *redo = NULL;
    tracking_begin(tree, changes);
    if (fresh == 0)
        goto out;

    incoming = malloc(fresh * sizeof(*incoming));
    if (!incoming) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < fresh; i++)
        if ((rc = entry_from_op(tree, &incoming[i], &ops[order[i].index])))
            goto out;

    /* Undo once, back to the earliest new op; then apply and redo in timestamp order. */
    size_t undo_from = log_upper_bound(tree, order[0].ts);
    size_t redo_len = tree->log_len - undo_from;
    if ((rc = tree__log_reserve(tree, fresh)))
        goto out;
    if (redo_len) {
        redo = malloc(redo_len * sizeof(*redo));
        if (!redo) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(redo, &tree->log[undo_from], redo_len * sizeof(*redo));
        for (size_t i = tree->log_len; i-- > undo_from;)
            undo_op(tree, &tree->log[i]);
        tree->log_len = undo_from;
    }
    size_t a = 0, b = 0;
    while (a < fresh || b < redo_len) {
        struct log_entry *next;
        if (b >= redo_len || (a < fresh && entry_cmp(tree, &incoming[a], &redo[b]) < 0))
            next = &incoming[a++];
        else
            next = &redo[b++];
        do_op(tree, next, false);
        tree->log[tree->log_len++] = *next;
    }
out:
    free(redo);
    free(incoming);
    free(order);
    return tracking_end(tree, changes, rc);
}

/* ---------- visibility ---------- */

static bool is_trashed(const struct crdt_tree *tree, uint32_t idx)
{
    return tree->nodes[idx].flags & F_TRASHED;
}

/*
 * If the place-parent walk from `idx` comes back to `idx`, returns the
 * breaker of that cycle (its trashed member with the smallest id); else NIL.
 * Every cycle has a trashed member: live places are raw parents, and the raw
 * graph is acyclic (tree__raw_is_ancestor guards the walks of a corrupt one).
 * Brent's algorithm keeps this O(path + cycle) with no memory.
 */
static uint32_t cycle_breaker(const struct crdt_tree *tree, uint32_t idx)
{
    uint32_t power = 1, length = 1;
    uint32_t tortoise = idx;
    uint32_t hare = tree->nodes[idx].place_parent;
    while (hare != tortoise) {
        if (hare == NIL || hare == ROOT_IDX)
            return NIL;
        if (power == length) {
            tortoise = hare;
            power *= 2;
            length = 0;
        }
        hare = tree->nodes[hare].place_parent;
        length++;
    }
    /* A cycle of `length` exists; is idx on it? */
    uint32_t walker = idx;
    for (uint32_t i = 0; i < length; i++)
        walker = tree->nodes[walker].place_parent;
    if (walker != idx)
        return NIL;
    uint32_t best = NIL;
    walker = idx;
    for (uint32_t i = 0; i < length; i++) {
        if ((tree->nodes[walker].flags & F_TRASHED) &&
            (best == NIL || crdt_node_id_cmp(tree->nodes[walker].id, tree->nodes[best].id) < 0))
            best = walker;
        walker = tree->nodes[walker].place_parent;
    }
    return best;
}

static bool is_trashed(const struct crdt_tree *tree, uint32_t idx);

/* Only a trashed node can break a cycle: a live one's place is its raw parent. */
static bool is_breaker(const struct crdt_tree *tree, uint32_t idx)
{
    return is_trashed(tree, idx) && cycle_breaker(tree, idx) == idx;
}

/* Visible parent, assuming the node is shown at all. */
static uint32_t visible_parent(const struct crdt_tree *tree, uint32_t idx)
{
    if (idx == ROOT_IDX)
        return NIL;
    if (is_breaker(tree, idx))
        return ROOT_IDX;
    return tree->nodes[idx].place_parent;
}

/*
 * A trashed node is needed when pinned, holding a live child, or holding a
 * needed trashed child (not counting a child whose cycle it breaks, which
 * hangs from the root instead). Depth-first over trashed descendants.
 */
static bool is_needed(const struct crdt_tree *tree, uint32_t idx)
{
    if (tree->causes == 0)
        return false;
    /* Explicit stack in the sibling links: walk the subtree iteratively. */
    uint32_t start = idx;
    uint32_t current = idx;
    size_t budget = (size_t)tree->node_count * 4 + 16;
    for (;;) {
        const struct node *node = &tree->nodes[current];
        if (node->live_children > 0 || (node->flags & F_PINNED))
            return true;
        if (budget-- == 0)
            return false;
        /* Descend to the first trashed child that hangs from `current`. */
        uint32_t child = node->first_child;
        while (child != NIL && (!is_trashed(tree, child) || is_breaker(tree, child)))
            child = tree->nodes[child].next_sibling;
        if (child != NIL) {
            current = child;
            continue;
        }
        /* Climb until a later trashed sibling exists. */
        for (;;) {
            if (current == start)
                return false;
            uint32_t sibling = tree->nodes[current].next_sibling;
            while (sibling != NIL && (!is_trashed(tree, sibling) || is_breaker(tree, sibling)))
                sibling = tree->nodes[sibling].next_sibling;
            if (sibling != NIL) {
                current = sibling;
                break;
            }
            current = tree->nodes[current].place_parent;
        }
    }
}

/* Shown at all: not trashed or needed, and the place chain reaches the root. */
static bool is_visible(const struct crdt_tree *tree, uint32_t idx)
{
    if (idx == ROOT_IDX)
        return true;
    if (idx == TRASH_IDX)
        return false;
    /* With no trashed node shown, seen and raw trees agree: walk the dense raw parents. */
    if (tree->causes == 0)
        return raw_reaches_root(tree, idx, NIL, NULL);
    if (is_trashed(tree, idx) && !is_needed(tree, idx))
        return false;
    /* Walk up; a cycle on the way always resolves to the root through its breaker. */
    uint32_t power = 1, length = 1;
    uint32_t tortoise = idx;
    uint32_t hare = tree->nodes[idx].place_parent;
    while (hare != tortoise) {
        if (hare == ROOT_IDX)
            return true;
        if (hare == NIL || hare == TRASH_IDX)
            return false;
        if (power == length) {
            tortoise = hare;
            power *= 2;
            length = 0;
        }
        hare = tree->nodes[hare].place_parent;
        length++;
    }
    return true;
}

static const char *default_label(char buf[17], uint64_t replica)
{
    snprintf(buf, 17, "%08x", (unsigned)(replica >> 32));
    return buf;
}

/* (birth, id) order that decides which same-named sibling keeps the name. */
static int birth_cmp(const struct crdt_tree *tree, uint32_t a, uint32_t b)
{
    const struct node *x = &tree->nodes[a], *y = &tree->nodes[b];
    struct crdt_ts bx = {x->birth_counter, x->birth_counter ? tree->replicas[x->birth_replica] : 0};
    struct crdt_ts by = {y->birth_counter, y->birth_counter ? tree->replicas[y->birth_replica] : 0};
    int c = crdt_ts_cmp(bx, by);
    return c ? c : crdt_node_id_cmp(x->id, y->id);
}

/* Is `idx` shown under its place name in `parent` (visible, not a breaker)? */
static bool shown_in_place(const struct crdt_tree *tree, uint32_t idx, uint32_t parent)
{
    return tree->nodes[idx].place_parent == parent && is_visible(tree, idx) &&
           !is_breaker(tree, idx);
}

/* Is some node shown in `parent` under the plain name `name` (a group winner)? */
static bool plain_name_taken(const struct crdt_tree *tree, uint32_t parent, const char *name,
                             size_t len)
{
    uint32_t slot = (uint32_t)(place_hash_str(parent, name, len) & (tree->bucket_cap - 1));
    /* No trashed node is shown while nothing causes one to be. */
    bool with_trashed = tree->causes > 0;
    for (uint32_t idx = chain_first(tree, slot, with_trashed); idx != NIL;
         idx = chain_next(tree, idx, slot, with_trashed)) {
        const struct node *node = &tree->nodes[idx];
        if (node->place_parent == parent && name_equals(tree, node->place_name, name, len) &&
            shown_in_place(tree, idx, parent))
            return true;
    }
    return false;
}

/*
 * "stem (conflict LABEL).ext", or "stem (conflict LABEL N).ext" for the N-th
 * loser from one device. If a real entry already has that name, the node's
 * id in hex is added instead, which no other node can produce (number
 * UINT32_MAX asks for that form at once). The stem is
 * cut (on a UTF-8 boundary) so the result fits NAME_MAX.
 */
static void conflict_name(const struct crdt_tree *tree, struct crdt_tree_entry *entry,
                          uint32_t parent, const uint8_t *name, size_t len, uint64_t replica,
                          unsigned number, struct crdt_node_id id)
{
    char label_buf[17];
    const char *label = tree->label ? tree->label(tree->label_ctx, replica) : NULL;
    if (!label)
        label = default_label(label_buf, replica);
    size_t ext_at = len;
    for (size_t i = len; i-- > 1;)
        if (name[i] == '.') {
            ext_at = i;
            break;
        }
    for (int attempt = number == UINT32_MAX; attempt < 2; attempt++) {
        char suffix[96];
        int suffix_len;
        if (attempt == 1)
            suffix_len = snprintf(suffix, sizeof(suffix), " (conflict %.40s %016llx%016llx)", label,
                                  (unsigned long long)id.hi, (unsigned long long)id.lo);
        else if (number > 1)
            suffix_len = snprintf(suffix, sizeof(suffix), " (conflict %.40s %u)", label, number);
        else
            suffix_len = snprintf(suffix, sizeof(suffix), " (conflict %.40s)", label);
        size_t ext_len = len - ext_at;
        size_t stem_len = ext_at;
        size_t room = CRDT_NAME_MAX - (size_t)suffix_len;
        if (ext_len > room / 2) {
            ext_len = 0;
            stem_len = len;
        }
        if (stem_len + ext_len > room) {
            stem_len = room - ext_len;
            while (stem_len > 0 && (name[stem_len] & 0xc0) == 0x80)
                stem_len--;
        }
        size_t out = 0;
        memcpy(entry->name, name, stem_len);
        out += stem_len;
        memcpy(entry->name + out, suffix, (size_t)suffix_len);
        out += (size_t)suffix_len;
        memcpy(entry->name + out, name + len - ext_len, ext_len);
        out += ext_len;
        entry->name[out] = '\0';
        entry->name_len = (uint16_t)out;
        if (!plain_name_taken(tree, parent, entry->name, out))
            return;
    }
}

static void fill_entry(const struct crdt_tree *tree, uint32_t idx, struct crdt_tree_entry *entry)
{
    const struct node *node = &tree->nodes[idx];
    memset(entry, 0, offsetof(struct crdt_tree_entry, name));
    entry->id = node->id;
    entry->kind = idx == ROOT_IDX ? CRDT_KIND_DIR : node->kind;
    entry->trashed = node->flags & F_TRASHED;
    entry->birth = (struct crdt_ts){node->birth_counter,
                                    node->birth_counter ? tree->replicas[node->birth_replica] : 0};
    entry->visible = is_visible(tree, idx);
    entry->parent = CRDT_NODE_NONE;
    entry->name[0] = '\0';
    if (node->place_name == NIL)
        return;
    size_t len;
    const uint8_t *name = name_bytes(tree, node->place_name, &len);
    memcpy(entry->name, name, len);
    entry->name[len] = '\0';
    entry->name_len = (uint16_t)len;
    if (!entry->visible)
        return;
    uint32_t parent = visible_parent(tree, idx);
    entry->parent = tree->nodes[parent].id;
    uint64_t replica = node->birth_counter ? tree->replicas[node->birth_replica] : node->id.lo;
    if (parent != node->place_parent) {
        /*
         * A cycle's breaker, hung from the root: its name there carries its id,
         * so it can clash with neither a plain name nor a conflict copy.
         */
        conflict_name(tree, entry, parent, name, len, replica, UINT32_MAX, node->id);
        return;
    }
    /* Rank among the same-named siblings shown here; count earlier losers from this device. */
    uint32_t slot = (uint32_t)(place_hash(tree, parent, node->place_name) & (tree->bucket_cap - 1));
    uint32_t winner = NIL;
    unsigned same_device = 0;
    bool with_trashed = tree->causes > 0;
    for (uint32_t other = chain_first(tree, slot, with_trashed); other != NIL;
         other = chain_next(tree, other, slot, with_trashed)) {
        const struct node *peer = &tree->nodes[other];
        if (other == idx || peer->place_parent != parent ||
            !handles_equal(tree, peer->place_name, node->place_name) ||
            !shown_in_place(tree, other, parent))
            continue;
        if (birth_cmp(tree, other, idx) < 0) {
            if (winner == NIL || birth_cmp(tree, other, winner) < 0)
                winner = other;
            uint64_t peer_replica =
                peer->birth_counter ? tree->replicas[peer->birth_replica] : peer->id.lo;
            if (peer_replica == replica)
                same_device++;
        }
    }
    if (winner == NIL)
        return;
    /*
     * same_device counts the earlier-born losers from this device, so two
     * losers from one device never get the same number, while a device's
     * first loser is plain "(conflict DEVICE)" even when that device made
     * the winner too (a conflict copy of its own version of its own file).
     */
    const struct node *first = &tree->nodes[winner];
    if ((first->birth_counter ? tree->replicas[first->birth_replica] : first->id.lo) == replica)
        same_device--;
    conflict_name(tree, entry, parent, name, len, replica, same_device + 1, node->id);
}

/* ---------- changes ---------- */

static int changes_push(struct crdt_tree_changes *changes, struct crdt_node_id id)
{
    if (changes->len == changes->cap) {
        size_t cap = changes->cap ? changes->cap * 2 : 16;
        struct crdt_node_id *grown = realloc(changes->ids, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        changes->ids = grown;
        changes->cap = cap;
    }
    changes->ids[changes->len++] = id;
    return 0;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

struct idx_list {
    uint32_t *items;
    size_t len, cap;
};

static int idx_push(struct idx_list *list, uint32_t idx)
{
    if (list->len == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 64;
        uint32_t *grown = realloc(list->items, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        list->items = grown;
        list->cap = cap;
    }
    list->items[list->len++] = idx;
    return 0;
}

/*
 * Adds every node placed as (parent, name): one of them may have won or lost
 * the name. Trashed ones only if a cause existed during the batch: without
 * one no trashed node was or became shown, and a name saved by
 * temp-and-rename thousands of times (each save trashes a node placed there)
 * must not make every later change at that name report them all.
 */
static int add_group(const struct crdt_tree *tree, struct idx_list *list, uint32_t parent,
                     uint32_t name)
{
    if (parent == NIL || name == NIL)
        return 0;
    bool with_trashed = tree->causes_peak > 0;
    uint32_t slot = (uint32_t)(place_hash(tree, parent, name) & (tree->bucket_cap - 1));
    for (uint32_t idx = chain_first(tree, slot, with_trashed); idx != NIL;
         idx = chain_next(tree, idx, slot, with_trashed)) {
        const struct node *node = &tree->nodes[idx];
        if (node->place_parent == parent && handles_equal(tree, node->place_name, name)) {
            int rc = idx_push(list, idx);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/*
 * Adds the nodes above `idx` whose showing may depend on what happened below:
 * trashed ancestors (neededness) with their name groups, up to the root or
 * around a cycle, whose breaker may have changed.
 */
static int add_ancestors(const struct crdt_tree *tree, struct idx_list *list, uint32_t idx)
{
    for (uint32_t steps = 0; idx != NIL && idx != ROOT_IDX && steps <= tree->node_count; steps++) {
        int rc = 0;
        if (is_trashed(tree, idx)) {
            if ((rc = idx_push(list, idx)) ||
                (rc = add_group(tree, list, tree->nodes[idx].place_parent,
                                tree->nodes[idx].place_name)))
                return rc;
        }
        idx = tree->nodes[idx].place_parent;
    }
    return 0;
}

static int changes_collect(struct crdt_tree *tree, struct crdt_tree_changes *changes)
{
    struct idx_list list = {0};
    int rc = 0;
    if (tree->touched_len == SIZE_MAX) {
        for (uint32_t i = 0; i < tree->node_count; i++)
            if ((rc = idx_push(&list, i)))
                goto out;
    } else {
        for (size_t i = 0; i < tree->touched_len; i++) {
            const struct touched *t = &tree->touched[i];
            if ((rc = idx_push(&list, t->node)) ||
                (rc = add_group(tree, &list, t->parent, t->name)))
                goto out;
            /* Without a cause at any point, no trashed node was or became shown. */
            if (tree->causes_peak > 0 && (rc = add_ancestors(tree, &list, t->parent)))
                goto out;
        }
        /* Cycle breakers hang from the root: when any cause exists, a move may re-hang one. */
        if (tree->causes_peak > 0)
            for (uint32_t i = 2; i < tree->node_count; i++)
                if (is_trashed(tree, i) && is_breaker(tree, i) && (rc = idx_push(&list, i)))
                    goto out;
    }
    if (list.len)
        qsort(list.items, list.len, sizeof(list.items[0]), u32_cmp);
    for (size_t i = 0; i < list.len; i++) {
        if (i > 0 && list.items[i] == list.items[i - 1])
            continue;
        if (list.items[i] == ROOT_IDX || list.items[i] == TRASH_IDX)
            continue;
        if ((rc = changes_push(changes, tree->nodes[list.items[i]].id)))
            goto out;
    }
out:
    free(list.items);
    return rc;
}

void crdt_tree_changes_free(struct crdt_tree_changes *changes)
{
    free(changes->ids);
    memset(changes, 0, sizeof(*changes));
}

/* ---------- public: lifecycle ---------- */

int crdt_tree_new(struct crdt_tree **out)
{
    *out = NULL;
    struct crdt_tree *tree = calloc(1, sizeof(*tree));
    if (!tree)
        return -ENOMEM;
    int rc;
    uint32_t idx;
    tree->id_cap = 16;
    tree->id_table = calloc(tree->id_cap, sizeof(*tree->id_table));
    if (!tree->id_table || (rc = tree__buckets_resize(tree, 16)) ||
        (rc = tree__node_add(tree, &idx, CRDT_NODE_ROOT)) ||
        (rc = tree__node_add(tree, &idx, CRDT_NODE_TRASH))) {
        crdt_tree_free(tree);
        return -ENOMEM;
    }
    tree->nodes[ROOT_IDX].kind = CRDT_KIND_DIR;
    tree->nodes[TRASH_IDX].kind = CRDT_KIND_DIR;
    *out = tree;
    return 0;
}

void crdt_tree_free(struct crdt_tree *tree)
{
    if (!tree)
        return;
    free(tree->nodes);
    free(tree->up);
    free(tree->id_table);
    free(tree->name_buckets);
    free(tree->names);
    free(tree->replicas);
    free(tree->replica_table);
    free(tree->log);
    free(tree->touched);
    free(tree);
}

void crdt_tree_set_labeler(struct crdt_tree *tree, crdt_tree_label_fn label, void *ctx)
{
    tree->label = label;
    tree->label_ctx = ctx;
}

/* ---------- public: local ops ---------- */

static int apply_local(struct crdt_tree *tree, struct crdt_tree_op *op, struct crdt_clock *clock,
                       bool acyclic_known, struct crdt_tree_changes *changes)
{
    op->ts = crdt_clock_tick(clock, NULL);
    /* The common case: newer than everything logged, so no undo is needed. */
    if (tree->log_len == 0 || ts_cmp_idx(tree, tree->log[tree->log_len - 1].counter,
                                         tree->log[tree->log_len - 1].replica, op->ts) < 0) {
        if (crdt_ts_cmp(op->ts, tree->floor) <= 0)
            return -EINVAL; /* the caller's clock never observed what it truncated */
        int rc = tree__log_reserve(tree, 1);
        if (rc)
            return rc;
        struct log_entry entry;
        tracking_begin(tree, changes);
        rc = entry_from_op(tree, &entry, op);
        if (!rc) {
            do_op(tree, &entry, acyclic_known);
            tree->log[tree->log_len++] = entry;
        }
        return tracking_end(tree, changes, rc);
    }
    return crdt_tree_apply(tree, op, 1, changes);
}

static int visible_dir(const struct crdt_tree *tree, uint32_t *out, struct crdt_node_id id)
{
    uint32_t idx = node_find(tree, id);
    if (idx == NIL || !is_visible(tree, idx))
        return -ENOENT;
    if (idx != ROOT_IDX && tree->nodes[idx].kind != CRDT_KIND_DIR)
        return -ENOTDIR;
    *out = idx;
    return 0;
}

int crdt_tree_move(struct crdt_tree *tree, struct crdt_tree_op *op, struct crdt_clock *clock,
                   struct crdt_node_id child, struct crdt_node_id parent, const char *name,
                   size_t name_len, struct crdt_tree_changes *changes)
{
    if (!crdt_tree_name_valid(name, name_len))
        return -EINVAL;
    uint32_t child_idx = node_find(tree, child);
    if (child_idx == NIL || child_idx == ROOT_IDX || child_idx == TRASH_IDX)
        return -ENOENT;
    uint32_t parent_idx = TRASH_IDX;
    bool to_trash = crdt_node_id_eq(parent, CRDT_NODE_TRASH);
    if (!to_trash) {
        parent_idx = node_find(tree, parent);
        if (parent_idx == NIL)
            return -ENOENT;
    }
    bool acyclic_known = false;
    if (tree->causes == 0) {
        /*
         * No trashed node is shown, so seen and raw trees agree: one walk from
         * the parent proves it visible and not inside the child, one from the
         * child proves the child visible. This is the hot path of rename(2).
         */
        bool inside = false;
        if (!raw_reaches_root(tree, child_idx, NIL, NULL))
            return -ENOENT;
        if (!to_trash) {
            if (!raw_reaches_root(tree, parent_idx, child_idx, &inside))
                return -ENOENT;
            if (parent_idx != ROOT_IDX && tree->nodes[parent_idx].kind != CRDT_KIND_DIR)
                return -ENOTDIR;
            if (inside)
                return -EINVAL;
            acyclic_known = true;
        }
    } else {
        if (!is_visible(tree, child_idx))
            return -ENOENT;
        if (!to_trash) {
            int rc = visible_dir(tree, &parent_idx, parent);
            if (rc)
                return rc;
            /* rename(2) refuses to move a directory into itself, seen or raw. */
            if (tree__raw_is_ancestor(tree, child_idx, parent_idx))
                return -EINVAL;
            for (uint32_t up = parent_idx, steps = 0; up != NIL && steps <= tree->node_count;
                 steps++, up = visible_parent(tree, up))
                if (up == child_idx)
                    return -EINVAL;
        }
    }
    *op = (struct crdt_tree_op){
        .child = child,
        .parent = parent,
        .name = name,
        .name_len = (uint16_t)name_len,
        .kind = tree->nodes[child_idx].kind,
    };
    return apply_local(tree, op, clock, acyclic_known, changes);
}

int crdt_tree_undelete(struct crdt_tree *tree, struct crdt_tree_op *op, struct crdt_clock *clock,
                       struct crdt_node_id child, struct crdt_node_id parent, const char *name,
                       size_t name_len, struct crdt_tree_changes *changes)
{
    if (!crdt_tree_name_valid(name, name_len))
        return -EINVAL;
    uint32_t child_idx = node_find(tree, child), parent_idx;
    if (child_idx == NIL || child_idx == ROOT_IDX || child_idx == TRASH_IDX)
        return -ENOENT;
    int rc = visible_dir(tree, &parent_idx, parent);
    if (rc)
        return rc;
    if (tree__raw_is_ancestor(tree, child_idx, parent_idx))
        return -EINVAL;
    *op = (struct crdt_tree_op){
        .child = child,
        .parent = parent,
        .name = name,
        .name_len = (uint16_t)name_len,
        .kind = tree->nodes[child_idx].kind,
    };
    return apply_local(tree, op, clock, false, changes);
}

int crdt_tree_create(struct crdt_tree *tree, struct crdt_tree_op *op, struct crdt_clock *clock,
                     struct crdt_node_id parent, const char *name, size_t name_len, uint8_t kind,
                     struct crdt_tree_changes *changes)
{
    if (!crdt_tree_name_valid(name, name_len) || !kind_valid(kind))
        return -EINVAL;
    uint32_t parent_idx;
    int rc = visible_dir(tree, &parent_idx, parent);
    if (rc)
        return rc;
    struct crdt_node_id existing;
    if (crdt_tree_lookup(tree, &existing, parent, name, name_len) == 0)
        return -EEXIST;
    *op = (struct crdt_tree_op){
        .parent = parent,
        .name = name,
        .name_len = (uint16_t)name_len,
        .kind = kind,
    };
    bool fresh_id = true;
    if (kind == CRDT_KIND_DIR) {
        struct crdt_node_id derived = crdt_tree_dir_id(parent, name, name_len);
        uint32_t idx = node_find(tree, derived);
        /* Rule 1, unless the directory made here earlier lives on elsewhere. */
        if (idx == NIL || !is_visible(tree, idx)) {
            op->child = derived;
            fresh_id = false;
        }
    }
    if (fresh_id) {
        /* The id is the op's own timestamp: peek at the next tick. */
        op->child = crdt_node_id_from_ts(
            (struct crdt_ts){.counter = clock->counter + 1, .replica = clock->replica});
    }
    rc = apply_local(tree, op, clock, false, changes);
    assert(rc || !fresh_id || crdt_node_id_eq(op->child, crdt_node_id_from_ts(op->ts)));
    return rc;
}

int crdt_tree_set_pinned(struct crdt_tree *tree, struct crdt_node_id id, bool pinned,
                         struct crdt_tree_changes *changes)
{
    uint32_t idx = node_find(tree, id);
    if (idx == NIL || idx == ROOT_IDX || idx == TRASH_IDX)
        return -ENOENT;
    struct node *node = &tree->nodes[idx];
    if (!!(node->flags & F_PINNED) == pinned)
        return 0;
    tracking_begin(tree, changes);
    touch(tree, idx);
    tree->causes -= is_cause(node);
    node->flags = (uint8_t)(pinned ? node->flags | F_PINNED : node->flags & ~F_PINNED);
    tree->causes += is_cause(node);
    return tracking_end(tree, changes, 0);
}

/* ---------- truncation and name compaction ---------- */

struct remap {
    uint32_t *slots; /* pairs: old handle + 1, new handle */
    uint32_t cap;
};

static uint32_t remap_handle(struct crdt_tree *tree, struct remap *map, uint8_t *arena,
                             uint32_t *arena_len, uint32_t old)
{
    if (old == NIL)
        return NIL;
    uint32_t mask = map->cap - 1;
    for (uint32_t slot = (uint32_t)(mix64(old) & mask);; slot = (slot + 1) & mask) {
        if (map->slots[2 * slot] == old + 1)
            return map->slots[2 * slot + 1];
        if (map->slots[2 * slot] == 0) {
            size_t len;
            const uint8_t *bytes = name_bytes(tree, old, &len);
            uint32_t fresh = *arena_len;
            arena[fresh] = (uint8_t)len;
            memcpy(arena + fresh + 1, bytes, len);
            *arena_len += (uint32_t)len + 1;
            map->slots[2 * slot] = old + 1;
            map->slots[2 * slot + 1] = fresh;
            return fresh;
        }
    }
}

/* Rewrites the name arena with only the names still referenced. Best effort: skips on ENOMEM. */
static void names_compact(struct crdt_tree *tree)
{
    uint64_t refs = (uint64_t)tree->node_count + 2 * tree->log_len;
    uint32_t cap = 16;
    while (cap < refs * 2 && cap < (1u << 30))
        cap *= 2;
    struct remap map = {.slots = calloc((size_t)cap * 2, sizeof(uint32_t)), .cap = cap};
    uint8_t *arena = malloc(tree->names_len ? tree->names_len : 1);
    if (!map.slots || !arena || refs * 2 > cap) {
        free(map.slots);
        free(arena);
        return;
    }
    uint32_t arena_len = 0;
    /* Chains hash by name bytes, which do not change: only the handles are rewritten. */
    for (uint32_t i = 0; i < tree->node_count; i++)
        tree->nodes[i].place_name =
            remap_handle(tree, &map, arena, &arena_len, tree->nodes[i].place_name);
    for (size_t i = 0; i < tree->log_len; i++) {
        tree->log[i].name = remap_handle(tree, &map, arena, &arena_len, tree->log[i].name);
        tree->log[i].old_name = remap_handle(tree, &map, arena, &arena_len, tree->log[i].old_name);
    }
    free(map.slots);
    free(tree->names);
    uint8_t *fitted = realloc(arena, arena_len ? arena_len : 1);
    tree->names = fitted ? fitted : arena;
    tree->names_len = arena_len;
    tree->names_cap = arena_len ? arena_len : 1;
    tree->names_live_mark = arena_len;
}

void crdt_tree_truncate(struct crdt_tree *tree, struct crdt_ts stable)
{
    size_t cut = log_upper_bound(tree, stable);
    if (cut > 0) {
        memmove(tree->log, tree->log + cut, (tree->log_len - cut) * sizeof(*tree->log));
        tree->log_len -= cut;
    }
    if (crdt_ts_cmp(stable, tree->floor) > 0)
        tree->floor = stable;
    if (tree->names_len > 2 * (uint64_t)tree->names_live_mark + 65536)
        names_compact(tree);
    /* Give back log memory that a long partition grew. */
    if (tree->log_cap > 1024 && tree->log_len < tree->log_cap / 4) {
        size_t cap = tree->log_len * 2 > 64 ? tree->log_len * 2 : 64;
        struct log_entry *fitted = realloc(tree->log, cap * sizeof(*fitted));
        if (fitted) {
            tree->log = fitted;
            tree->log_cap = cap;
        }
    }
}

/* ---------- public: queries ---------- */

int crdt_tree_get(const struct crdt_tree *tree, struct crdt_node_id id,
                  struct crdt_tree_entry *entry)
{
    uint32_t idx = node_find(tree, id);
    if (idx == NIL)
        return -ENOENT;
    fill_entry(tree, idx, entry);
    return 0;
}

struct lookup_ctx {
    const char *name;
    size_t len;
    struct crdt_node_id found;
    bool hit;
};

static int lookup_each(void *ctx, const struct crdt_tree_entry *entry)
{
    struct lookup_ctx *look = ctx;
    if (entry->name_len == look->len && memcmp(entry->name, look->name, look->len) == 0) {
        look->found = entry->id;
        look->hit = true;
        return 1;
    }
    return 0;
}

int crdt_tree_lookup(const struct crdt_tree *tree, struct crdt_node_id *out,
                     struct crdt_node_id parent, const char *name, size_t name_len)
{
    uint32_t parent_idx = node_find(tree, parent);
    if (parent_idx == NIL || name_len == 0 || name_len > CRDT_NAME_MAX)
        return -ENOENT;
    /* The plain name: the earliest-born of the nodes shown under it. */
    uint32_t slot = (uint32_t)(place_hash_str(parent_idx, name, name_len) & (tree->bucket_cap - 1));
    uint32_t best = NIL;
    bool with_trashed = tree->causes > 0; /* else no trashed node is shown */
    for (uint32_t idx = chain_first(tree, slot, with_trashed); idx != NIL;
         idx = chain_next(tree, idx, slot, with_trashed)) {
        const struct node *node = &tree->nodes[idx];
        if (node->place_parent != parent_idx ||
            !name_equals(tree, node->place_name, name, name_len) ||
            !shown_in_place(tree, idx, parent_idx))
            continue;
        if (best == NIL || birth_cmp(tree, idx, best) < 0)
            best = idx;
    }
    if (best != NIL) {
        *out = tree->nodes[best].id;
        return 0;
    }
    /* A conflict name is a view: find it by listing (rare, and bounded by the directory). */
    static const char marker[] = " (conflict ";
    bool maybe_conflict = false;
    for (size_t i = 0; i + sizeof(marker) - 1 <= name_len && !maybe_conflict; i++)
        maybe_conflict = memcmp(name + i, marker, sizeof(marker) - 1) == 0;
    if (!maybe_conflict)
        return -ENOENT;
    struct lookup_ctx look = {.name = name, .len = name_len};
    crdt_tree_list(tree, parent, lookup_each, &look);
    if (!look.hit)
        return -ENOENT;
    *out = look.found;
    return 0;
}

int crdt_tree_list(const struct crdt_tree *tree, struct crdt_node_id parent,
                   int (*each)(void *ctx, const struct crdt_tree_entry *entry), void *ctx)
{
    uint32_t parent_idx = node_find(tree, parent);
    if (parent_idx == NIL)
        return -ENOENT;
    struct crdt_tree_entry entry;
    for (uint32_t idx = tree->nodes[parent_idx].first_child; idx != NIL;
         idx = tree->nodes[idx].next_sibling) {
        if (!shown_in_place(tree, idx, parent_idx))
            continue;
        fill_entry(tree, idx, &entry);
        int rc = each(ctx, &entry);
        if (rc)
            return rc;
    }
    /* Cycle breakers hang from the root; they exist only while some trashed node is needed. */
    if (parent_idx == ROOT_IDX && tree->causes > 0) {
        for (uint32_t idx = 2; idx < tree->node_count; idx++) {
            if (!is_trashed(tree, idx) || !is_breaker(tree, idx) || !is_visible(tree, idx))
                continue;
            fill_entry(tree, idx, &entry);
            int rc = each(ctx, &entry);
            if (rc)
                return rc;
        }
    }
    return 0;
}

bool crdt_tree_is_ancestor(const struct crdt_tree *tree, struct crdt_node_id ancestor,
                           struct crdt_node_id node)
{
    uint32_t a = node_find(tree, ancestor), n = node_find(tree, node);
    return a != NIL && n != NIL && tree__raw_is_ancestor(tree, a, n);
}

size_t crdt_tree_node_count(const struct crdt_tree *tree)
{
    return tree->node_count;
}

size_t crdt_tree_log_len(const struct crdt_tree *tree)
{
    return tree->log_len;
}

size_t crdt_tree_mem_bytes(const struct crdt_tree *tree)
{
    return sizeof(*tree) + (size_t)tree->node_cap * (sizeof(struct node) + sizeof(uint32_t)) +
           (size_t)tree->id_cap * sizeof(uint32_t) +
           (size_t)tree->bucket_cap * 2 * sizeof(uint32_t) + tree->names_cap +
           (size_t)tree->replica_cap * sizeof(uint64_t) +
           (size_t)tree->replica_table_cap * sizeof(uint32_t) +
           tree->log_cap * sizeof(struct log_entry) + tree->touched_cap * sizeof(struct touched);
}
