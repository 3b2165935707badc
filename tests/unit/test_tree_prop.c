/*
 * Property test for crdt/tree. Each seeded scenario runs 3-5 replicas that
 * make random creates, renames, moves and deletes (with deliberate cycle
 * pairs and same-name creations) and exchange ops in random batches, random
 * order, with duplicates; then every replica gets every op. Checked:
 *   - all replicas are byte-identical (canonical snapshots, log included);
 *   - a deliberately simple reference (every op re-sorted and replayed from
 *     scratch, visibility as a naive fixpoint) gives the same raw and visible
 *     state for every node;
 *   - the raw tree has no cycle, every node reaches the root or the trash,
 *     and no node that is not itself deleted is hidden (nothing lost);
 *   - display names are unique within every directory;
 *   - after truncating the log at a stable point, more rounds still converge.
 * Usage: test-tree-prop [SCENARIOS] [FIRST_SEED]; WEFT_SEED=S runs one seed verbosely.
 */
#include "crdt/tree.h"
#include "test.h"
#include "tree_harness.h"

#include <stdbool.h>

#define MAX_REPLICAS 5
#define MAX_NODES    256

/* ---------- the reference ---------- */

struct ref_node {
    struct crdt_node_id id;
    struct crdt_node_id parent; /* place; NONE when never placed */
    char name[CRDT_NAME_MAX + 1];
    bool trashed;
    bool placed;
    uint8_t kind;
    struct crdt_ts birth;
};

struct ref {
    struct ref_node nodes[MAX_NODES];
    int count;
};

static int ref_find(struct ref *ref, struct crdt_node_id id)
{
    for (int i = 0; i < ref->count; i++)
        if (crdt_node_id_eq(ref->nodes[i].id, id))
            return i;
    return -1;
}

static int ref_intern(struct ref *ref, struct crdt_node_id id)
{
    int at = ref_find(ref, id);
    if (at >= 0)
        return at;
    if (ref->count == MAX_NODES)
        abort();
    ref->nodes[ref->count] = (struct ref_node){.id = id};
    return ref->count++;
}

/* Raw parent as the paper's algorithm sees it: -1 root/none, -2 trash. */
static bool ref_is_ancestor(struct ref *ref, struct crdt_node_id ancestor, struct crdt_node_id of)
{
    struct crdt_node_id at = of;
    for (int steps = 0; steps < MAX_NODES + 2; steps++) {
        if (crdt_node_id_eq(at, ancestor))
            return true;
        if (crdt_node_id_eq(at, CRDT_NODE_ROOT) || crdt_node_id_eq(at, CRDT_NODE_TRASH))
            return false;
        int idx = ref_find(ref, at);
        if (idx < 0 || !ref->nodes[idx].placed)
            return false;
        at = ref->nodes[idx].trashed ? CRDT_NODE_TRASH : ref->nodes[idx].parent;
    }
    abort(); /* a raw cycle: the reference itself would be wrong */
}

static int op_ts_cmp(const void *a, const void *b)
{
    return crdt_ts_cmp(((const struct crdt_tree_op *)a)->ts, ((const struct crdt_tree_op *)b)->ts);
}

/* Replays every op from scratch in timestamp order: the paper's definition, no undo log. */
static void ref_build(struct ref *ref, struct crdt_tree_op *ops, size_t count)
{
    ref->count = 0;
    ref_intern(ref, CRDT_NODE_ROOT);
    ref_intern(ref, CRDT_NODE_TRASH);
    qsort(ops, count, sizeof(*ops), op_ts_cmp);
    for (size_t i = 0; i < count; i++) {
        if (i > 0 && crdt_ts_cmp(ops[i].ts, ops[i - 1].ts) == 0)
            continue;
        const struct crdt_tree_op *op = &ops[i];
        int child = ref_intern(ref, op->child);
        ref_intern(ref, op->parent);
        struct ref_node *node = &ref->nodes[child];
        if (crdt_ts_is_none(node->birth) || crdt_ts_cmp(op->ts, node->birth) < 0)
            node->birth = op->ts;
        if (crdt_node_id_eq(op->parent, CRDT_NODE_TRASH)) {
            node->trashed = true;
            node->kind = op->kind;
        } else if (!ref_is_ancestor(ref, op->child, op->parent)) {
            node->parent = op->parent;
            memcpy(node->name, op->name, op->name_len);
            node->name[op->name_len] = '\0';
            node->placed = true;
            node->trashed = false;
            node->kind = op->kind;
        }
    }
}

/* The breaker of the place cycle through node i, or -1 when i is on no cycle. */
static int ref_breaker(struct ref *ref, int i)
{
    int path[MAX_NODES + 2];
    int len = 0, at = i;
    for (;;) {
        if (!ref->nodes[at].placed || at == 0)
            return -1;
        for (int k = 0; k < len; k++)
            if (path[k] == at)
                goto found;
        path[len++] = at;
        at = ref_find(ref, ref->nodes[at].parent);
        if (at < 0)
            return -1;
    }
found:
    if (at != i)
        return -1; /* the walk ran into a cycle that i is not on */
    int best = -1;
    for (int k = 0; k < len; k++) {
        int m = path[k];
        if (ref->nodes[m].trashed &&
            (best < 0 || crdt_node_id_cmp(ref->nodes[m].id, ref->nodes[best].id) < 0))
            best = m;
    }
    return best;
}

struct ref_view {
    bool needed[MAX_NODES];
    bool visible[MAX_NODES];
    int vparent[MAX_NODES];
    bool breaker[MAX_NODES];
};

static void ref_view(struct ref *ref, struct ref_view *view, const bool *pinned)
{
    memset(view, 0, sizeof(*view));
    for (int i = 2; i < ref->count; i++) {
        view->breaker[i] = ref_breaker(ref, i) == i;
        view->vparent[i] = view->breaker[i] ? 0 : ref_find(ref, ref->nodes[i].parent);
    }
    /* Least fixpoint of "needed", by iteration until nothing changes. */
    for (bool changed = true; changed;) {
        changed = false;
        for (int t = 2; t < ref->count; t++) {
            if (!ref->nodes[t].trashed || view->needed[t])
                continue;
            bool need = pinned[t];
            for (int c = 2; c < ref->count && !need; c++) {
                if (!ref->nodes[c].placed || view->vparent[c] != t)
                    continue;
                need = !ref->nodes[c].trashed || view->needed[c];
            }
            if (need) {
                view->needed[t] = changed = true;
            }
        }
    }
    for (int i = 2; i < ref->count; i++) {
        if (!ref->nodes[i].placed || (ref->nodes[i].trashed && !view->needed[i]))
            continue;
        int at = i;
        for (int steps = 0; steps <= ref->count && at > 0; steps++)
            at = ref->nodes[at].placed ? view->vparent[at] : -1;
        view->visible[i] = at == 0;
    }
}

/* ---------- the scenario ---------- */

static const char *const names[] = {"a", "b", "c", "d.txt", "e.txt", "f"};
#define NAME_COUNT (sizeof(names) / sizeof(names[0]))

struct scenario {
    struct replica replicas[MAX_REPLICAS];
    size_t delivered[MAX_REPLICAS][MAX_REPLICAS]; /* [to][from]: ops of `from` given to `to` */
    int count;
    uint64_t rng;
    bool verbose;
    bool failed;
    uint64_t seed;
};

struct visible_pick {
    struct crdt_node_id ids[MAX_NODES];
    uint8_t kinds[MAX_NODES];
    int count;
    const struct crdt_tree *tree;
};

static int pick_each(void *ctx, const struct crdt_tree_entry *entry)
{
    struct visible_pick *pick = ctx;
    if (pick->count >= MAX_NODES)
        return 1;
    pick->ids[pick->count] = entry->id;
    pick->kinds[pick->count++] = entry->kind;
    if (entry->kind == CRDT_KIND_DIR)
        crdt_tree_list(pick->tree, entry->id, pick_each, pick);
    return 0;
}

static void collect_visible(const struct crdt_tree *tree, struct visible_pick *pick)
{
    pick->count = 0;
    pick->tree = tree;
    pick->ids[pick->count] = CRDT_NODE_ROOT;
    pick->kinds[pick->count++] = CRDT_KIND_DIR;
    crdt_tree_list(tree, CRDT_NODE_ROOT, pick_each, pick);
}

static struct crdt_node_id random_dir(struct scenario *s, struct visible_pick *pick)
{
    for (int tries = 0; tries < 8; tries++) {
        int i = (int)test_rand_below(&s->rng, (uint64_t)pick->count);
        if (pick->kinds[i] == CRDT_KIND_DIR)
            return pick->ids[i];
    }
    return CRDT_NODE_ROOT;
}

static void local_action(struct scenario *s, int r)
{
    struct replica *rep = &s->replicas[r];
    struct visible_pick pick;
    collect_visible(rep->tree, &pick);
    const char *name = names[test_rand_below(&s->rng, NAME_COUNT)];
    uint64_t action = test_rand_below(&s->rng, 10);
    if (crdt_tree_node_count(rep->tree) > MAX_NODES - 40)
        action = 9; /* stay within the reference's fixed size */
    if (action < 4 || pick.count < 2) {
        uint8_t kind = test_rand_below(&s->rng, 2) ? CRDT_KIND_DIR : CRDT_KIND_FILE;
        int rc = replica_create(rep, NULL, random_dir(s, &pick), name, kind);
        if (rc != 0 && rc != -EEXIST)
            s->failed = true;
        return;
    }
    struct crdt_node_id node = pick.ids[1 + test_rand_below(&s->rng, (uint64_t)pick.count - 1)];
    int rc;
    if (action < 8) {
        rc = replica_move(rep, node, random_dir(s, &pick), name);
        if (rc == -EINVAL)
            rc = 0; /* a move into its own subtree, refused as rename(2) refuses it */
    } else {
        rc = replica_delete(rep, node);
    }
    if (rc != 0)
        s->failed = true;
}

/* A cycle pair: two replicas move two directories into each other. */
static void cycle_pair(struct scenario *s)
{
    int r1 = (int)test_rand_below(&s->rng, (uint64_t)s->count);
    int r2 = (r1 + 1 + (int)test_rand_below(&s->rng, (uint64_t)s->count - 1)) % s->count;
    struct visible_pick pick;
    collect_visible(s->replicas[r1].tree, &pick);
    struct crdt_node_id dirs[MAX_NODES];
    int n = 0;
    for (int i = 1; i < pick.count; i++)
        if (pick.kinds[i] == CRDT_KIND_DIR)
            dirs[n++] = pick.ids[i];
    if (n < 2)
        return;
    struct crdt_node_id x = dirs[test_rand_below(&s->rng, (uint64_t)n)];
    struct crdt_node_id y = dirs[test_rand_below(&s->rng, (uint64_t)n)];
    if (crdt_node_id_eq(x, y))
        return;
    struct crdt_tree_entry ex, ey;
    if (crdt_tree_get(s->replicas[r2].tree, x, &ex) ||
        crdt_tree_get(s->replicas[r2].tree, y, &ey) || !ex.visible || !ey.visible)
        return;
    (void)replica_move(&s->replicas[r1], x, y, names[test_rand_below(&s->rng, NAME_COUNT)]);
    (void)replica_move(&s->replicas[r2], y, x, names[test_rand_below(&s->rng, NAME_COUNT)]);
}

/* Delivers a random part of `from`'s undelivered ops to `to`, shuffled, with duplicates. */
static void deliver(struct scenario *s, int to, int from, bool everything)
{
    struct replica *src = &s->replicas[from];
    size_t start = s->delivered[to][from];
    size_t avail = src->op_count - start;
    if (avail == 0)
        return;
    size_t take = everything ? avail : 1 + test_rand_below(&s->rng, avail);
    size_t dup = start > 0 ? test_rand_below(&s->rng, 3) : 0;
    struct crdt_tree_op *batch = malloc((take + dup) * sizeof(*batch));
    if (!batch)
        abort();
    for (size_t i = 0; i < take; i++)
        batch[i] = src->ops[start + i].op;
    for (size_t i = 0; i < dup; i++)
        batch[take + i] = src->ops[test_rand_below(&s->rng, start)].op;
    size_t n = take + dup;
    for (size_t i = n; i > 1; i--) {
        size_t j = test_rand_below(&s->rng, i);
        struct crdt_tree_op tmp = batch[i - 1];
        batch[i - 1] = batch[j];
        batch[j] = tmp;
    }
    for (size_t i = 0; i < n; i++)
        crdt_clock_observe(&s->replicas[to].clock, batch[i].ts);
    struct crdt_tree_changes changes = {0};
    if (crdt_tree_apply(s->replicas[to].tree, batch, n, &changes) != 0)
        s->failed = true;
    crdt_tree_changes_free(&changes);
    s->delivered[to][from] = start + take;
    free(batch);
}

static void exchange_all(struct scenario *s)
{
    for (int to = 0; to < s->count; to++)
        for (int from = 0; from < s->count; from++)
            if (to != from)
                deliver(s, to, from, true);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

struct dir_names {
    char names[MAX_NODES][CRDT_NAME_MAX + 1];
    int count;
};

static int collect_names(void *ctx, const struct crdt_tree_entry *entry)
{
    struct dir_names *dir = ctx;
    if (dir->count < MAX_NODES)
        memcpy(dir->names[dir->count++], entry->name, (size_t)entry->name_len + 1);
    return 0;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (!s->failed || s->verbose)                                                              \
            fprintf(stderr, "seed %llu: ", (unsigned long long)s->seed);                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        s->failed = true;                                                                          \
    } while (0)

static void check_converged(struct scenario *s)
{
    struct crdt_buf first = {0};
    if (crdt_tree_snapshot(s->replicas[0].tree, &first, false) != 0)
        abort();
    for (int r = 1; r < s->count; r++) {
        struct crdt_buf other = {0};
        if (crdt_tree_snapshot(s->replicas[r].tree, &other, false) != 0)
            abort();
        if (other.len != first.len || memcmp(other.data, first.data, first.len) != 0) {
            char *la = tree_listing(s->replicas[0].tree), *lb = tree_listing(s->replicas[r].tree);
            FAIL("replica %d differs from replica 0\n--- 0:\n%s--- %d:\n%s", r, la, r, lb);
            free(la);
            free(lb);
        }
        crdt_buf_free(&other);
    }
    /* The snapshot loads (which checks it is acyclic) and re-encodes to the same bytes. */
    struct crdt_tree *loaded;
    if (crdt_tree_load(&loaded, first.data, first.len) != 0) {
        FAIL("snapshot does not load");
    } else {
        struct crdt_buf again = {0};
        if (crdt_tree_snapshot(loaded, &again, false) != 0 || again.len != first.len ||
            memcmp(again.data, first.data, first.len) != 0)
            FAIL("snapshot does not round-trip");
        crdt_buf_free(&again);
        crdt_tree_free(loaded);
    }
    crdt_buf_free(&first);
}

static void check_against_reference(struct scenario *s)
{
    size_t total = 0;
    for (int r = 0; r < s->count; r++)
        total += s->replicas[r].op_count;
    struct crdt_tree_op *ops = malloc((total + 1) * sizeof(*ops));
    if (!ops)
        abort();
    size_t n = 0;
    for (int r = 0; r < s->count; r++)
        for (size_t i = 0; i < s->replicas[r].op_count; i++)
            ops[n++] = s->replicas[r].ops[i].op;
    static struct ref ref;
    ref_build(&ref, ops, n);
    free(ops);
    static struct ref_view view;
    static bool pinned[MAX_NODES];
    ref_view(&ref, &view, pinned);

    const struct crdt_tree *tree = s->replicas[0].tree;
    if ((size_t)ref.count != crdt_tree_node_count(tree))
        FAIL("reference has %d nodes, tree %zu", ref.count, crdt_tree_node_count(tree));
    for (int i = 2; i < ref.count; i++) {
        const struct ref_node *node = &ref.nodes[i];
        struct crdt_tree_entry entry;
        if (crdt_tree_get(tree, node->id, &entry) != 0) {
            FAIL("node %d missing", i);
            continue;
        }
        if (entry.trashed != node->trashed || entry.kind != node->kind ||
            entry.visible != view.visible[i] || crdt_ts_cmp(entry.birth, node->birth) != 0)
            FAIL("node %d: trashed %d/%d kind %d/%d visible %d/%d", i, entry.trashed, node->trashed,
                 entry.kind, node->kind, entry.visible, view.visible[i]);
        if (!entry.visible)
            continue;
        struct crdt_node_id want_parent = ref.nodes[view.vparent[i]].id;
        if (!crdt_node_id_eq(entry.parent, want_parent))
            FAIL("node %d: visible parent differs from the reference", i);
        /* The plain name belongs to the earliest-born node shown under it, as in the reference. */
        bool winner = !view.breaker[i];
        for (int j = 2; j < ref.count && winner; j++) {
            if (j == i || !view.visible[j] || view.breaker[j] ||
                view.vparent[j] != view.vparent[i] || strcmp(ref.nodes[j].name, node->name) != 0)
                continue;
            int c = crdt_ts_cmp(ref.nodes[j].birth, node->birth);
            if (c < 0 || (c == 0 && crdt_node_id_cmp(ref.nodes[j].id, node->id) < 0))
                winner = false;
        }
        bool plain = strcmp(entry.name, node->name) == 0;
        if (winner != plain)
            FAIL("node %d shown as \"%s\" (place name \"%s\"), winner %d", i, entry.name,
                 node->name, winner);
        /* Nothing lost: a node not itself deleted is always shown. */
    }
    for (int i = 2; i < ref.count; i++)
        if (ref.nodes[i].placed && !ref.nodes[i].trashed && !view.visible[i])
            FAIL("node %d is live but hidden", i);

    /* Every directory's display names are unique. */
    for (int i = 0; i < ref.count; i++) {
        if (i == 1 || (i > 1 && (!view.visible[i] || ref.nodes[i].kind != CRDT_KIND_DIR)))
            continue;
        static struct dir_names dir;
        dir.count = 0;
        crdt_tree_list(tree, ref.nodes[i].id, collect_names, &dir);
        qsort(dir.names, (size_t)dir.count, sizeof(dir.names[0]), name_cmp);
        for (int k = 1; k < dir.count; k++)
            if (strcmp(dir.names[k], dir.names[k - 1]) == 0)
                FAIL("two entries named \"%s\"", dir.names[k]);
    }
}

static bool run_scenario(uint64_t seed, bool verbose)
{
    static struct scenario scenario;
    struct scenario *s = &scenario;
    memset(s, 0, sizeof(*s));
    s->seed = seed;
    s->verbose = verbose;
    s->rng = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    s->count = 3 + (int)test_rand_below(&s->rng, 3);
    for (int r = 0; r < s->count; r++)
        replica_init(&s->replicas[r], 0x1000 + (uint64_t)r * 0x100000001u);

    for (int round = 0; round < 2 && !s->failed; round++) {
        int steps = 20 + (int)test_rand_below(&s->rng, 30);
        for (int step = 0; step < steps && !s->failed; step++) {
            uint64_t what = test_rand_below(&s->rng, 10);
            int r = (int)test_rand_below(&s->rng, (uint64_t)s->count);
            if (what < 6) {
                local_action(s, r);
            } else if (what < 7) {
                cycle_pair(s);
            } else {
                int from = (int)test_rand_below(&s->rng, (uint64_t)s->count);
                if (from != r)
                    deliver(s, r, from, false);
            }
        }
        if (s->failed)
            FAIL("a local operation or an apply failed");
        exchange_all(s);
        check_converged(s);
        check_against_reference(s);
        if (verbose) {
            char *listing = tree_listing(s->replicas[0].tree);
            printf("round %d: %d replicas, tree:\n%s", round, s->count, listing);
            free(listing);
        }
        /* Everyone has everything: the newest op is stable; truncate and go on. */
        struct crdt_ts stable = {0, 0};
        for (int r = 0; r < s->count; r++)
            for (size_t i = 0; i < s->replicas[r].op_count; i++)
                if (crdt_ts_cmp(s->replicas[r].ops[i].op.ts, stable) > 0)
                    stable = s->replicas[r].ops[i].op.ts;
        if (test_rand_below(&s->rng, 2))
            for (int r = 0; r < s->count; r++)
                crdt_tree_truncate(s->replicas[r].tree, stable);
    }
    bool failed = s->failed;
    if (failed) {
        fprintf(stderr, "seed %llu failed; ops in timestamp order:\n", (unsigned long long)seed);
        for (int r = 0; r < s->count; r++)
            for (size_t i = 0; i < s->replicas[r].op_count; i++) {
                const struct crdt_tree_op *op = &s->replicas[r].ops[i].op;
                fprintf(stderr, "  r%d ts=%llu.%llx child=%llx.%llx parent=%llx.%llx name=%s\n", r,
                        (unsigned long long)op->ts.counter, (unsigned long long)op->ts.replica,
                        (unsigned long long)op->child.hi, (unsigned long long)op->child.lo,
                        (unsigned long long)op->parent.hi, (unsigned long long)op->parent.lo,
                        s->replicas[r].ops[i].name);
            }
        fprintf(stderr, "replay: WEFT_SEED=%llu build/tests/unit/test-tree-prop\n",
                (unsigned long long)seed);
    }
    for (int r = 0; r < s->count; r++)
        replica_free(&s->replicas[r]);
    return !failed;
}

int main(int argc, char **argv)
{
    const char *one = getenv("WEFT_SEED");
    if (one) {
        bool ok = run_scenario(strtoull(one, NULL, 10), true);
        printf("seed %s: %s\n", one, ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    }
    uint64_t scenarios = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000;
    uint64_t first = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    uint64_t failures = 0;
    for (uint64_t seed = first; seed < first + scenarios; seed++)
        if (!run_scenario(seed, false) && ++failures >= 5)
            break;
    printf("tree property test: %llu scenarios from seed %llu, %llu failed\n",
           (unsigned long long)scenarios, (unsigned long long)first, (unsigned long long)failures);
    return failures ? 1 : 0;
}
