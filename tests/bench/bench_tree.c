/*
 * weft-bench-tree: speed and memory of crdt/tree, on the workload of
 * ../shared/bench/tree/bench.js (Loro's movable tree), so the two can be run
 * side by side:
 *   (a) build an N-node random recursive tree (node i under a random earlier one);
 *   (b) M random local moves; a move into the moved node's own subtree is
 *       refused (EINVAL, as rename(2)) and another is drawn;
 *   (c) two replicas forked from (b) each make K random moves, a quarter of
 *       them cycle pairs (A moves x under y, B moves y under x), then each
 *       applies the other's K ops as one batch; both must converge;
 *   (d) snapshot size and load time, after truncating the log (all ops stable),
 *       and with the full log kept;
 *   (e) S saves of one file by temp-and-rename as the store makes them: a
 *       node created under the name, looked up, and trashed, with change
 *       lists on. Every save leaves a trashed node placed under that name;
 *       the last 1,000 saves must cost what the first 1,000 did.
 * Memory is what the tree holds (nodes, indexes, names, undo log) at the end
 * of (c), with the whole log still there.
 *
 * Usage: weft-bench-tree [--nodes N] [--moves M] [--concurrent K] [--saves S] [--seed S] [--json]
 */
#include "crdt/tree.h"
#include "test.h"

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int double_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: weft-bench-tree [--nodes N] [--moves M] [--concurrent K] [--saves S] [--seed S] "
        "[--json]\n"
        "  --nodes N       nodes in the random tree (default 10000)\n"
        "  --moves M       random local moves after the build (default 100000)\n"
        "  --concurrent K  moves per replica while partitioned, then merged (default 10000)\n"
        "  --seed S        random seed (default 1)\n"
        "  --json          print one JSON object instead of a table\n");
}

struct bench_replica {
    struct crdt_tree *tree;
    struct crdt_clock clock;
    struct crdt_tree_op *ops;
    char (*names)[24];
    size_t count;
};

__attribute__((noreturn)) static void die(const char *what, int rc)
{
    fprintf(stderr, "weft-bench-tree: %s failed: %s\n", what, strerror(-rc));
    exit(1);
}

int main(int argc, char **argv)
{
    uint64_t nodes = 10000, moves = 100000, concurrent = 10000, saves = 20000, seed = 1;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        uint64_t *target = NULL;
        if (!strcmp(argv[i], "--nodes"))
            target = &nodes;
        else if (!strcmp(argv[i], "--moves"))
            target = &moves;
        else if (!strcmp(argv[i], "--concurrent"))
            target = &concurrent;
        else if (!strcmp(argv[i], "--saves"))
            target = &saves;
        else if (!strcmp(argv[i], "--seed"))
            target = &seed;
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "weft-bench-tree: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
        if (target) {
            char *end;
            if (i + 1 >= argc || (*target = strtoull(argv[i + 1], &end, 10), *end != '\0')) {
                fprintf(stderr, "weft-bench-tree: %s needs a number\n", argv[i]);
                return 2;
            }
            i++;
        }
    }
    if (nodes < 2) {
        fprintf(stderr, "weft-bench-tree: --nodes must be at least 2\n");
        return 2;
    }
    if (saves < 2000) {
        fprintf(stderr, "weft-bench-tree: --saves must be at least 2000\n");
        return 2;
    }
    uint64_t rng = seed * 0x9e3779b97f4a7c15ULL + 1;
    int rc;

    /* (a) build */
    struct crdt_node_id *ids = malloc(nodes * sizeof(*ids));
    char(*names)[24] = malloc(nodes * sizeof(*names));
    if (!ids || !names)
        die("malloc", -ENOMEM);
    for (uint64_t i = 0; i < nodes; i++)
        snprintf(names[i], sizeof(names[i]), "n%llu", (unsigned long long)i);
    struct crdt_tree *tree;
    if ((rc = crdt_tree_new(&tree)))
        die("crdt_tree_new", rc);
    struct crdt_clock clock_a;
    crdt_clock_init(&clock_a, 1);
    struct crdt_tree_op op;
    double t0 = now_ms();
    for (uint64_t i = 0; i < nodes; i++) {
        struct crdt_node_id parent = i == 0 ? CRDT_NODE_ROOT : ids[test_rand_below(&rng, i)];
        if ((rc = crdt_tree_create(tree, &op, &clock_a, parent, names[i], strlen(names[i]),
                                   CRDT_KIND_DIR, NULL)))
            die("create", rc);
        ids[i] = op.child;
    }
    double build_ms = now_ms() - t0;

    /* (b) local moves */
    uint64_t refused = 0;
    t0 = now_ms();
    for (uint64_t done = 0; done < moves;) {
        uint64_t child = 1 + test_rand_below(&rng, nodes - 1);
        uint64_t parent = test_rand_below(&rng, nodes);
        rc = crdt_tree_move(tree, &op, &clock_a, ids[child], ids[parent], names[child],
                            strlen(names[child]), NULL);
        if (rc == -EINVAL) {
            refused++;
            continue;
        }
        if (rc)
            die("move", rc);
        done++;
    }
    double moves_ms = now_ms() - t0;

    /* (c) fork, K concurrent moves per side (a quarter cycle pairs), merge */
    struct crdt_buf base = {0};
    if ((rc = crdt_tree_snapshot(tree, &base, false)))
        die("snapshot", rc);
    struct bench_replica side[2];
    for (int s = 0; s < 2; s++) {
        if ((rc = crdt_tree_load(&side[s].tree, base.data, base.len)))
            die("load", rc);
        side[s].clock = clock_a;
        side[s].clock.replica = 2 + (uint64_t)s;
        side[s].ops = malloc(concurrent * sizeof(*side[s].ops));
        side[s].names = malloc(concurrent * sizeof(*side[s].names));
        side[s].count = 0;
        if (!side[s].ops || !side[s].names)
            die("malloc", -ENOMEM);
    }
    uint64_t pairs = 0;
    for (uint64_t k = 0; k < concurrent; k++) {
        uint64_t pick[2][2];
        bool paired = false;
        if (test_rand_below(&rng, 4) == 0) {
            uint64_t x = 1 + test_rand_below(&rng, nodes - 1);
            uint64_t y = 1 + test_rand_below(&rng, nodes - 1);
            if (x != y && !crdt_tree_is_ancestor(side[0].tree, ids[x], ids[y]) &&
                !crdt_tree_is_ancestor(side[1].tree, ids[y], ids[x])) {
                pick[0][0] = x, pick[0][1] = y, pick[1][0] = y, pick[1][1] = x;
                paired = true;
                pairs++;
            }
        }
        for (int s = 0; s < 2; s++) {
            struct bench_replica *rep = &side[s];
            for (;;) {
                uint64_t child = paired ? pick[s][0] : 1 + test_rand_below(&rng, nodes - 1);
                uint64_t parent = paired ? pick[s][1] : test_rand_below(&rng, nodes);
                memcpy(rep->names[rep->count], names[child], sizeof(names[child]));
                rc =
                    crdt_tree_move(rep->tree, &rep->ops[rep->count], &rep->clock, ids[child],
                                   ids[parent], rep->names[rep->count], strlen(names[child]), NULL);
                if (rc == 0)
                    break;
                if (rc != -EINVAL)
                    die("concurrent move", rc);
                paired = false;
            }
            rep->count++;
        }
    }
    double merge[2];
    size_t changed[2];
    for (int s = 0; s < 2; s++) {
        struct bench_replica *to = &side[s], *from = &side[1 - s];
        struct crdt_tree_changes changes = {0};
        t0 = now_ms();
        rc = crdt_tree_apply(to->tree, from->ops, from->count, &changes);
        merge[s] = now_ms() - t0;
        if (rc)
            die("merge", rc);
        changed[s] = changes.len;
        crdt_tree_changes_free(&changes);
    }
    double merge_ms = (merge[0] + merge[1]) / 2; /* the median of two */
    struct crdt_buf snap_a = {0}, snap_b = {0};
    if ((rc = crdt_tree_snapshot(side[0].tree, &snap_a, false)) ||
        (rc = crdt_tree_snapshot(side[1].tree, &snap_b, false)))
        die("snapshot", rc);
    bool converged = snap_a.len == snap_b.len && !memcmp(snap_a.data, snap_b.data, snap_a.len);
    size_t mem_bytes = crdt_tree_mem_bytes(side[0].tree);
    size_t log_ops = crdt_tree_log_len(side[0].tree);
    size_t node_count = crdt_tree_node_count(side[0].tree);

    /* (d) snapshots: with the full log, and after truncation (the store's steady state) */
    double loads[7];
    size_t log_snapshot_bytes = snap_a.len;
    for (int i = 0; i < 7; i++) {
        struct crdt_tree *loaded;
        t0 = now_ms();
        if ((rc = crdt_tree_load(&loaded, snap_a.data, snap_a.len)))
            die("load", rc);
        loads[i] = now_ms() - t0;
        crdt_tree_free(loaded);
    }
    qsort(loads, 7, sizeof(loads[0]), double_cmp);
    double log_load_ms = loads[3];
    struct crdt_ts stable = {side[1].clock.counter, side[1].clock.replica};
    crdt_tree_truncate(side[0].tree, stable);
    size_t mem_truncated = crdt_tree_mem_bytes(side[0].tree);
    struct crdt_buf snap = {0};
    if ((rc = crdt_tree_snapshot(side[0].tree, &snap, false)))
        die("snapshot", rc);
    for (int i = 0; i < 7; i++) {
        struct crdt_tree *loaded;
        t0 = now_ms();
        if ((rc = crdt_tree_load(&loaded, snap.data, snap.len)))
            die("load", rc);
        loads[i] = now_ms() - t0;
        crdt_tree_free(loaded);
    }
    qsort(loads, 7, sizeof(loads[0]), double_cmp);
    double load_ms = loads[3];
    double moves_per_s = moves_ms > 0 ? (double)moves / (moves_ms / 1e3) : 0;

    /* (e) saves of one name */
    struct crdt_tree *saver;
    if ((rc = crdt_tree_new(&saver)))
        die("crdt_tree_new", rc);
    struct crdt_clock clock_s;
    crdt_clock_init(&clock_s, 3);
    if ((rc = crdt_tree_create(saver, &op, &clock_s, CRDT_NODE_ROOT, "docs", 4, CRDT_KIND_DIR,
                               NULL)))
        die("create", rc);
    struct crdt_node_id docs = op.child;
    double first_ms = 0, last_ms = 0;
    t0 = now_ms();
    for (uint64_t s = 0; s < saves; s++) {
        double started = now_ms();
        struct crdt_tree_changes saved = {0};
        struct crdt_node_id found;
        if ((rc = crdt_tree_create(saver, &op, &clock_s, docs, "notes.txt", 9, CRDT_KIND_FILE,
                                   &saved)) ||
            (rc = crdt_tree_lookup(saver, &found, docs, "notes.txt", 9)))
            die("save", rc);
        crdt_tree_changes_free(&saved);
        if ((rc = crdt_tree_move(saver, &op, &clock_s, found, CRDT_NODE_TRASH, "notes.txt", 9,
                                 &saved)))
            die("trash", rc);
        crdt_tree_changes_free(&saved);
        double took = now_ms() - started;
        if (s < 1000)
            first_ms += took;
        if (s >= saves - 1000)
            last_ms += took;
    }
    double saves_ms = now_ms() - t0;
    crdt_tree_free(saver);
    double saves_per_s = saves_ms > 0 ? (double)saves / (saves_ms / 1e3) : 0;
    double saves_growth = first_ms > 0 ? last_ms / first_ms : 0;
    size_t budget = 128 * node_count + 64 * log_ops;

    if (json) {
        printf("{\"nodes\": %llu, \"moves\": %llu, \"concurrent\": %llu, \"seed\": %llu, "
               "\"build_ms\": %.3f, \"local_moves_per_s\": %.0f, \"refused_moves\": %llu, "
               "\"merge_ms\": %.3f, \"merge_a_ms\": %.3f, \"merge_b_ms\": %.3f, "
               "\"cycle_pairs\": %llu, \"converged\": %s, \"snapshot_bytes\": %zu, "
               "\"load_ms\": %.3f, \"snapshot_with_log_bytes\": %zu, \"load_with_log_ms\": %.3f, "
               "\"mem_bytes\": %zu, \"mem_budget_bytes\": %zu, \"mem_truncated_bytes\": %zu, "
               "\"log_ops\": %zu, \"tree_nodes\": %zu, \"saves\": %llu, \"saves_per_s\": %.0f, "
               "\"saves_last_vs_first\": %.2f}\n",
               (unsigned long long)nodes, (unsigned long long)moves, (unsigned long long)concurrent,
               (unsigned long long)seed, build_ms, moves_per_s, (unsigned long long)refused,
               merge_ms, merge[0], merge[1], (unsigned long long)pairs,
               converged ? "true" : "false", snap.len, load_ms, log_snapshot_bytes, log_load_ms,
               mem_bytes, budget, mem_truncated, log_ops, node_count, (unsigned long long)saves,
               saves_per_s, saves_growth);
    } else {
        printf("weft-bench-tree --nodes %llu --moves %llu --concurrent %llu --seed %llu\n",
               (unsigned long long)nodes, (unsigned long long)moves, (unsigned long long)concurrent,
               (unsigned long long)seed);
        printf("  (a) build %llu nodes          %10.2f ms\n", (unsigned long long)nodes, build_ms);
        printf("  (b) %llu local moves       %10.2f ms  (%.0f moves/s, %llu refused)\n",
               (unsigned long long)moves, moves_ms, moves_per_s, (unsigned long long)refused);
        printf("  (c) merge %llu per side      %10.2f ms  (A %.2f, B %.2f; %llu cycle pairs; "
               "%zu/%zu nodes reported changed)\n",
               (unsigned long long)concurrent, merge_ms, merge[0], merge[1],
               (unsigned long long)pairs, changed[0], changed[1]);
        printf("      converged: %s\n", converged ? "yes" : "NO");
        printf("  (d) snapshot, log truncated %8zu bytes, load %.3f ms\n", snap.len, load_ms);
        printf("      snapshot, full log      %8zu bytes, load %.3f ms\n", log_snapshot_bytes,
               log_load_ms);
        printf("  memory: %zu bytes for %zu nodes + %zu logged ops (budget 128/node + 64/op = "
               "%zu); %zu after truncation\n",
               mem_bytes, node_count, log_ops, budget, mem_truncated);
        printf("  (e) %llu saves of one name  %10.2f ms  (%.0f saves/s; the last 1,000 took "
               "%.2fx the first)\n",
               (unsigned long long)saves, saves_ms, saves_per_s, saves_growth);
    }
    crdt_buf_free(&base);
    crdt_buf_free(&snap);
    crdt_buf_free(&snap_a);
    crdt_buf_free(&snap_b);
    for (int s = 0; s < 2; s++) {
        crdt_tree_free(side[s].tree);
        free(side[s].ops);
        free(side[s].names);
    }
    crdt_tree_free(tree);
    free(ids);
    free(names);
    return converged ? 0 : 1;
}
