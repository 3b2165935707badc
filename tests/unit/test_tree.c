/*
 * Unit tests for crdt/tree: each function group with exact expected trees,
 * one scenario per tree row of DESIGN.md's concurrency table, and the
 * snapshot and op encodings (round trips, golden bytes, malformed input).
 */
#include "crdt/tree.h"
#include "test.h"
#include "tree_harness.h"

#define REPLICA_A 0xA000000000000001ULL
#define REPLICA_B 0xB000000000000002ULL
#define REPLICA_C 0xC000000000000003ULL

static const char *label(void *ctx, uint64_t replica)
{
    (void)ctx;
    switch (replica) {
    case REPLICA_A:
        return "laptop";
    case REPLICA_B:
        return "desktop";
    default:
        return "other";
    }
}

static void pair_init(struct replica *a, struct replica *b)
{
    replica_init(a, REPLICA_A);
    replica_init(b, REPLICA_B);
    crdt_tree_set_labeler(a->tree, label, NULL);
    crdt_tree_set_labeler(b->tree, label, NULL);
}

static void sync_pair(struct replica *a, struct replica *b)
{
    CHECK_INT(0, replica_pull(a, b));
    CHECK_INT(0, replica_pull(b, a));
}

static void check_listing(const struct crdt_tree *tree, const char *expected)
{
    char *got = tree_listing(tree);
    CHECK_STR(expected, got);
    free(got);
}

static void check_same(const struct replica *a, const struct replica *b)
{
    char *la = tree_listing(a->tree), *lb = tree_listing(b->tree);
    CHECK_STR(la, lb);
    free(la);
    free(lb);
    struct crdt_buf sa = {0}, sb = {0};
    CHECK_INT(0, crdt_tree_snapshot(a->tree, &sa, false));
    CHECK_INT(0, crdt_tree_snapshot(b->tree, &sb, false));
    CHECK(sa.len == sb.len && memcmp(sa.data, sb.data, sa.len) == 0);
    crdt_buf_free(&sa);
    crdt_buf_free(&sb);
}

/* ---------- local operations ---------- */

static void test_create_lookup_list(void)
{
    struct replica a;
    replica_init(&a, REPLICA_A);
    struct crdt_node_id docs, file, found;
    CHECK_INT(0, replica_create(&a, &docs, CRDT_NODE_ROOT, "docs", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &file, docs, "notes.txt", CRDT_KIND_FILE));
    CHECK_INT(-EEXIST, replica_create(&a, NULL, docs, "notes.txt", CRDT_KIND_FILE));
    CHECK_INT(-ENOTDIR, replica_create(&a, NULL, file, "x", CRDT_KIND_FILE));
    CHECK_INT(-EINVAL, replica_create(&a, NULL, docs, "a/b", CRDT_KIND_FILE));
    CHECK_INT(-EINVAL, replica_create(&a, NULL, docs, "..", CRDT_KIND_FILE));
    CHECK_INT(-ENOENT, replica_create(&a, NULL, (struct crdt_node_id){5, 5}, "x", CRDT_KIND_FILE));
    CHECK_INT(0, crdt_tree_lookup(a.tree, &found, docs, "notes.txt", 9));
    CHECK(crdt_node_id_eq(found, file));
    CHECK_INT(-ENOENT, crdt_tree_lookup(a.tree, &found, docs, "nope", 4));
    /* A directory's id comes from its place; a file's from its op's timestamp. */
    CHECK(crdt_node_id_eq(docs, crdt_tree_dir_id(CRDT_NODE_ROOT, "docs", 4)));
    CHECK_INT(2, file.hi);
    CHECK(file.lo == REPLICA_A);
    check_listing(a.tree, "docs/\ndocs/notes.txt\n");

    struct crdt_tree_entry entry;
    CHECK_INT(0, crdt_tree_get(a.tree, file, &entry));
    CHECK(entry.visible);
    CHECK(crdt_node_id_eq(entry.parent, docs));
    CHECK_STR("notes.txt", entry.name);
    CHECK_INT(CRDT_KIND_FILE, entry.kind);
    replica_free(&a);
}

static void test_rename_move_delete(void)
{
    struct replica a;
    replica_init(&a, REPLICA_A);
    struct crdt_node_id src, dst, file, found;
    CHECK_INT(0, replica_create(&a, &src, CRDT_NODE_ROOT, "src", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &dst, CRDT_NODE_ROOT, "dst", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &file, src, "a.c", CRDT_KIND_FILE));
    CHECK_INT(0, replica_move(&a, file, src, "b.c"));
    check_listing(a.tree, "dst/\nsrc/\nsrc/b.c\n");
    CHECK_INT(0, replica_move(&a, file, dst, "b.c"));
    check_listing(a.tree, "dst/\ndst/b.c\nsrc/\n");
    /* rename(2) refuses a directory into itself or its subtree. */
    struct crdt_node_id inner;
    CHECK_INT(0, replica_create(&a, &inner, src, "inner", CRDT_KIND_DIR));
    CHECK_INT(-EINVAL, replica_move(&a, src, inner, "src"));
    CHECK_INT(-EINVAL, replica_move(&a, src, src, "src"));
    CHECK(crdt_tree_is_ancestor(a.tree, src, inner));
    CHECK(!crdt_tree_is_ancestor(a.tree, inner, src));
    CHECK_INT(0, replica_delete(&a, file));
    check_listing(a.tree, "dst/\nsrc/\nsrc/inner/\n");
    CHECK_INT(-ENOENT, crdt_tree_lookup(a.tree, &found, dst, "b.c", 3));
    CHECK(crdt_tree_is_ancestor(a.tree, CRDT_NODE_TRASH, file));
    /* A deleted directory made again at the same path is the same node (rule 1). */
    CHECK_INT(0, replica_delete(&a, inner));
    struct crdt_node_id again;
    CHECK_INT(0, replica_create(&a, &again, src, "inner", CRDT_KIND_DIR));
    CHECK(crdt_node_id_eq(again, inner));
    /* ...but not when the first one lives on elsewhere: then it gets a fresh id. */
    CHECK_INT(0, replica_move(&a, inner, dst, "moved"));
    CHECK_INT(0, replica_create(&a, &again, src, "inner", CRDT_KIND_DIR));
    CHECK(!crdt_node_id_eq(again, inner));
    check_listing(a.tree, "dst/\ndst/moved/\nsrc/\nsrc/inner/\n");
    replica_free(&a);
}

static void test_out_of_order_batch(void)
{
    /* The same ops in any order and any batching give the same tree. */
    struct replica a, b, c;
    replica_init(&a, REPLICA_A);
    replica_init(&b, REPLICA_B);
    replica_init(&c, REPLICA_C);
    struct crdt_node_id d1, d2, f;
    CHECK_INT(0, replica_create(&a, &d1, CRDT_NODE_ROOT, "one", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &d2, CRDT_NODE_ROOT, "two", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &f, d1, "f", CRDT_KIND_FILE));
    CHECK_INT(0, replica_move(&a, d1, d2, "one"));
    CHECK_INT(0, replica_move(&a, f, d2, "g"));
    for (size_t i = a.op_count; i-- > 0;)
        CHECK_INT(0, crdt_tree_apply(b.tree, &a.ops[i].op, 1, NULL));
    struct crdt_tree_op reversed[8];
    for (size_t i = 0; i < a.op_count; i++)
        reversed[i] = a.ops[a.op_count - 1 - i].op;
    CHECK_INT(0, crdt_tree_apply(c.tree, reversed, a.op_count, NULL));
    CHECK_INT(0, crdt_tree_apply(c.tree, reversed, a.op_count, NULL)); /* duplicates */
    check_listing(a.tree, "two/\ntwo/g\ntwo/one/\n");
    check_same(&a, &b);
    check_same(&a, &c);
    CHECK_INT(5, crdt_tree_log_len(c.tree));
    replica_free(&a);
    replica_free(&b);
    replica_free(&c);
}

static void test_malformed_ops_rejected(void)
{
    struct replica a;
    replica_init(&a, REPLICA_A);
    struct crdt_tree_op op = {
        .ts = {1, REPLICA_B},
        .child = {1, REPLICA_B},
        .parent = CRDT_NODE_ROOT,
        .name = "ok",
        .name_len = 2,
        .kind = CRDT_KIND_FILE,
    };
    struct crdt_tree_op bad[5] = {op, op, op, op, op};
    bad[0].ts.counter = 0;
    bad[1].child = CRDT_NODE_ROOT;
    bad[2].kind = 0;
    bad[3].name = "a/b";
    bad[3].name_len = 3;
    bad[4].parent = CRDT_NODE_NONE;
    for (int i = 0; i < 5; i++)
        CHECK_INT(-EINVAL, crdt_tree_apply(a.tree, &bad[i], 1, NULL));
    CHECK_INT(2, crdt_tree_node_count(a.tree));
    CHECK_INT(0, crdt_tree_apply(a.tree, &op, 1, NULL));
    check_listing(a.tree, "ok\n");
    replica_free(&a);
}

static void test_skipped_move_applies_later(void)
{
    /*
     * A move that would make a cycle is skipped but logged; when an earlier
     * op arrives and is applied first, the same move can become valid.
     */
    struct replica a;
    replica_init(&a, REPLICA_A);
    struct crdt_node_id x = crdt_tree_dir_id(CRDT_NODE_ROOT, "x", 1);
    struct crdt_node_id y = crdt_tree_dir_id(CRDT_NODE_ROOT, "y", 1);
    struct crdt_tree_op ops[4] = {
        {.ts = {1, REPLICA_B},
         .child = x,
         .parent = CRDT_NODE_ROOT,
         .name = "x",
         .name_len = 1,
         .kind = CRDT_KIND_DIR},
        {.ts = {2, REPLICA_B},
         .child = y,
         .parent = x,
         .name = "y",
         .name_len = 1,
         .kind = CRDT_KIND_DIR},
        {.ts = {5, REPLICA_B},
         .child = x,
         .parent = y,
         .name = "x",
         .name_len = 1,
         .kind = CRDT_KIND_DIR},
        /* Arrives last but is older than op 3: y leaves x first, so op 3 now applies. */
        {.ts = {4, REPLICA_C},
         .child = y,
         .parent = CRDT_NODE_ROOT,
         .name = "y",
         .name_len = 1,
         .kind = CRDT_KIND_DIR},
    };
    CHECK_INT(0, crdt_tree_apply(a.tree, ops, 3, NULL));
    check_listing(a.tree, "x/\nx/y/\n");
    CHECK_INT(0, crdt_tree_apply(a.tree, &ops[3], 1, NULL));
    check_listing(a.tree, "y/\ny/x/\n");
    replica_free(&a);
}

/* ---------- the concurrency table ---------- */

static void test_row_same_path_mkdir(void)
{
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id pa, pb, sa, sb;
    CHECK_INT(0, replica_create(&a, &pa, CRDT_NODE_ROOT, "proj", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &sa, pa, "sub", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, NULL, sa, "from-a.txt", CRDT_KIND_FILE));
    CHECK_INT(0, replica_create(&b, &pb, CRDT_NODE_ROOT, "proj", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&b, &sb, pb, "sub", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&b, NULL, sb, "from-b.txt", CRDT_KIND_FILE));
    CHECK(crdt_node_id_eq(pa, pb));
    CHECK(crdt_node_id_eq(sa, sb));
    sync_pair(&a, &b);
    check_listing(a.tree, "proj/\nproj/sub/\nproj/sub/from-a.txt\nproj/sub/from-b.txt\n");
    check_same(&a, &b);
    replica_free(&a);
    replica_free(&b);
}

static void test_row_same_name_files(void)
{
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id fa, fb, found;
    CHECK_INT(0, replica_create(&a, &fa, CRDT_NODE_ROOT, "report.txt", CRDT_KIND_FILE));
    CHECK_INT(0, replica_create(&b, &fb, CRDT_NODE_ROOT, "report.txt", CRDT_KIND_FILE));
    sync_pair(&a, &b);
    /* Same counter, so the replica id orders the births: A's keeps the name. */
    check_listing(a.tree, "report (conflict desktop).txt\nreport.txt\n");
    check_same(&a, &b);
    CHECK_INT(0, crdt_tree_lookup(b.tree, &found, CRDT_NODE_ROOT, "report.txt", 10));
    CHECK(crdt_node_id_eq(found, fa));
    const char *conflict = "report (conflict desktop).txt";
    CHECK_INT(0, crdt_tree_lookup(b.tree, &found, CRDT_NODE_ROOT, conflict, strlen(conflict)));
    CHECK(crdt_node_id_eq(found, fb));
    /* Renaming the conflict copy is an ordinary move, and the conflict is gone. */
    CHECK_INT(0, replica_move(&b, fb, CRDT_NODE_ROOT, "report-desktop.txt"));
    sync_pair(&a, &b);
    check_listing(a.tree, "report-desktop.txt\nreport.txt\n");
    check_same(&a, &b);
    replica_free(&a);
    replica_free(&b);
}

static void test_row_move_cycle(void)
{
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id x, y;
    CHECK_INT(0, replica_create(&a, &x, CRDT_NODE_ROOT, "x", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &y, CRDT_NODE_ROOT, "y", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, NULL, x, "in-x", CRDT_KIND_FILE));
    CHECK_INT(0, replica_create(&a, NULL, y, "in-y", CRDT_KIND_FILE));
    sync_pair(&a, &b);
    CHECK_INT(0, replica_move(&a, x, y, "x"));
    CHECK_INT(0, replica_move(&b, y, x, "y"));
    sync_pair(&a, &b);
    /*
     * Same counter, so B's move is the later one; applied after A's it would
     * close a cycle, so it is skipped: x ends inside y, nothing is lost.
     */
    check_listing(a.tree, "y/\ny/in-y\ny/x/\ny/x/in-x\n");
    check_same(&a, &b);
    replica_free(&a);
    replica_free(&b);
}

static void test_row_rename_and_edit(void)
{
    /*
     * Content edits are not tree ops: the node keeps its id through a rename,
     * so an edit made elsewhere lands on the renamed file. The tree's part is
     * that the id is stable.
     */
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id f, found;
    CHECK_INT(0, replica_create(&a, &f, CRDT_NODE_ROOT, "draft.txt", CRDT_KIND_FILE));
    sync_pair(&a, &b);
    CHECK_INT(0, replica_move(&a, f, CRDT_NODE_ROOT, "final.txt"));
    sync_pair(&a, &b);
    CHECK_INT(0, crdt_tree_lookup(b.tree, &found, CRDT_NODE_ROOT, "final.txt", 9));
    CHECK(crdt_node_id_eq(found, f));
    replica_free(&a);
    replica_free(&b);
}

static void test_row_delete_and_edit(void)
{
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id dir, f;
    CHECK_INT(0, replica_create(&a, &dir, CRDT_NODE_ROOT, "d", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &f, dir, "keep.txt", CRDT_KIND_FILE));
    sync_pair(&a, &b);
    CHECK_INT(0, replica_delete(&a, f));
    sync_pair(&a, &b);
    check_listing(b.tree, "d/\n");
    /* The store saw B's edit made without the delete and pins the node (rule 3b). */
    struct crdt_tree_changes changes = {0};
    CHECK_INT(0, crdt_tree_set_pinned(a.tree, f, true, &changes));
    CHECK_INT(1, changes.len);
    CHECK(changes.len == 1 && crdt_node_id_eq(changes.ids[0], f));
    crdt_tree_changes_free(&changes);
    CHECK_INT(0, crdt_tree_set_pinned(b.tree, f, true, NULL));
    check_listing(a.tree, "d/\nd/keep.txt\n");
    check_listing(b.tree, "d/\nd/keep.txt\n");
    /* Even when its directory was deleted too, the file comes back with it. */
    CHECK_INT(0, replica_delete(&b, dir));
    sync_pair(&a, &b);
    check_listing(a.tree, "d/\nd/keep.txt\n");
    CHECK_INT(0, crdt_tree_set_pinned(a.tree, f, false, NULL));
    check_listing(a.tree, "");
    replica_free(&a);
    replica_free(&b);
}

static void test_row_delete_dir_create_inside(void)
{
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id top, dir, old;
    CHECK_INT(0, replica_create(&a, &top, CRDT_NODE_ROOT, "top", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &dir, top, "dir", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &old, dir, "old.txt", CRDT_KIND_FILE));
    sync_pair(&a, &b);
    /* A removes the whole subtree, as rm -r does: children first. */
    CHECK_INT(0, replica_delete(&a, old));
    CHECK_INT(0, replica_delete(&a, dir));
    CHECK_INT(0, replica_delete(&a, top));
    check_listing(a.tree, "");
    CHECK_INT(0, replica_create(&b, NULL, dir, "new.txt", CRDT_KIND_FILE));
    struct crdt_tree_changes changes = {0};
    for (size_t i = 0; i < b.op_count; i++)
        crdt_clock_observe(&a.clock, b.ops[i].op.ts);
    struct crdt_tree_op ops[16];
    for (size_t i = 0; i < b.op_count; i++)
        ops[i] = b.ops[i].op;
    CHECK_INT(0, crdt_tree_apply(a.tree, ops, b.op_count, &changes));
    /* The resurrected directories are reported, so the store re-materializes them. */
    bool saw_top = false, saw_dir = false;
    for (size_t i = 0; i < changes.len; i++) {
        saw_top |= crdt_node_id_eq(changes.ids[i], top);
        saw_dir |= crdt_node_id_eq(changes.ids[i], dir);
    }
    CHECK(saw_top && saw_dir);
    crdt_tree_changes_free(&changes);
    CHECK_INT(0, replica_pull(&b, &a));
    check_listing(a.tree, "top/\ntop/dir/\ntop/dir/new.txt\n");
    check_same(&a, &b);
    /* Once the new file goes too, the deletes take full effect. */
    struct crdt_node_id nf;
    CHECK_INT(0, tree_path(b.tree, &nf, "top/dir/new.txt"));
    CHECK_INT(0, replica_delete(&b, nf));
    sync_pair(&a, &b);
    check_listing(a.tree, "");
    check_same(&a, &b);
    replica_free(&a);
    replica_free(&b);
}

static void test_row_rename_over(void)
{
    /* POSIX replace = delete the target, then move: the target node survives in the trash. */
    struct replica a;
    replica_init(&a, REPLICA_A);
    struct crdt_node_id target, tmp;
    CHECK_INT(0, replica_create(&a, &target, CRDT_NODE_ROOT, "f.txt", CRDT_KIND_FILE));
    CHECK_INT(0, replica_create(&a, &tmp, CRDT_NODE_ROOT, "f.txt.tmp", CRDT_KIND_FILE));
    CHECK_INT(0, replica_delete(&a, target));
    CHECK_INT(0, replica_move(&a, tmp, CRDT_NODE_ROOT, "f.txt"));
    check_listing(a.tree, "f.txt\n");
    struct crdt_tree_entry entry;
    CHECK_INT(0, crdt_tree_get(a.tree, target, &entry));
    CHECK(entry.trashed && !entry.visible);
    replica_free(&a);
}

static void test_cycle_through_trash(void)
{
    /*
     * A moves t1 into t2 and deletes t1; B, unaware, moves t2 into t1 and
     * makes a file in t2. The place links close a cycle t1 -> t2 -> t1 through
     * the trash. Its breaker hangs from the root, so the file is not lost.
     */
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id t1, t2, f;
    CHECK_INT(0, replica_create(&a, &t1, CRDT_NODE_ROOT, "t1", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &t2, CRDT_NODE_ROOT, "t2", CRDT_KIND_DIR));
    sync_pair(&a, &b);
    CHECK_INT(0, replica_move(&a, t1, t2, "t1"));
    CHECK_INT(0, replica_delete(&a, t1));
    b.clock.counter += 10; /* B's ops are later */
    CHECK_INT(0, replica_move(&b, t2, t1, "t2"));
    CHECK_INT(0, replica_create(&b, &f, t2, "f", CRDT_KIND_FILE));
    sync_pair(&a, &b);
    check_same(&a, &b);
    struct crdt_tree_entry entry;
    CHECK_INT(0, crdt_tree_get(a.tree, f, &entry));
    CHECK(entry.visible);
    char *listing = tree_listing(a.tree);
    CHECK(strstr(listing, "/f\n") != NULL);
    free(listing);
    replica_free(&a);
    replica_free(&b);
}

/* ---------- truncation ---------- */

static void test_truncate(void)
{
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id d;
    CHECK_INT(0, replica_create(&a, &d, CRDT_NODE_ROOT, "d", CRDT_KIND_DIR));
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof(name), "f%d", i);
        CHECK_INT(0, replica_create(&a, NULL, d, name, CRDT_KIND_FILE));
    }
    sync_pair(&a, &b);
    struct crdt_ts stable = a.ops[a.op_count - 1].op.ts;
    crdt_tree_truncate(a.tree, stable);
    crdt_tree_truncate(b.tree, stable);
    CHECK_INT(0, crdt_tree_log_len(a.tree));
    /* A late copy of a truncated op is a duplicate, not a change. */
    CHECK_INT(0, crdt_tree_apply(a.tree, &a.ops[3].op, 1, NULL));
    CHECK_INT(0, crdt_tree_log_len(a.tree));
    CHECK_INT(0, replica_move(&b, d, CRDT_NODE_ROOT, "e"));
    sync_pair(&a, &b);
    check_same(&a, &b);
    CHECK_INT(1, crdt_tree_log_len(a.tree));
    replica_free(&a);
    replica_free(&b);
}

/* ---------- encodings ---------- */

static void test_snapshot_round_trip(void)
{
    struct replica a, b;
    pair_init(&a, &b);
    struct crdt_node_id d, f;
    CHECK_INT(0, replica_create(&a, &d, CRDT_NODE_ROOT, "dir", CRDT_KIND_DIR));
    CHECK_INT(0, replica_create(&a, &f, d, "file", CRDT_KIND_FILE));
    CHECK_INT(0, replica_create(&b, NULL, CRDT_NODE_ROOT, "file2", CRDT_KIND_SYMLINK));
    CHECK_INT(0, replica_delete(&a, f));
    sync_pair(&a, &b);
    CHECK_INT(0, crdt_tree_set_pinned(a.tree, f, true, NULL));
    struct crdt_buf buf = {0};
    CHECK_INT(0, crdt_tree_snapshot(a.tree, &buf, false));
    struct crdt_tree *loaded;
    CHECK_INT(0, crdt_tree_load(&loaded, buf.data, buf.len));
    struct crdt_buf again = {0};
    CHECK_INT(0, crdt_tree_snapshot(loaded, &again, false));
    CHECK(buf.len == again.len && memcmp(buf.data, again.data, buf.len) == 0);
    char *expected = tree_listing(a.tree), *got = tree_listing(loaded);
    CHECK_STR(expected, got);
    free(expected);
    free(got);
    /* The loaded tree keeps working: its log undoes and redoes like the original. */
    struct crdt_tree_op late = {
        .ts = {1, 0x1ULL},
        .child = {1, 0x1ULL},
        .parent = d,
        .name = "late",
        .name_len = 4,
        .kind = CRDT_KIND_FILE,
    };
    CHECK_INT(0, crdt_tree_apply(loaded, &late, 1, NULL));
    CHECK_INT(0, crdt_tree_apply(a.tree, &late, 1, NULL));
    crdt_buf_free(&again);
    CHECK_INT(0, crdt_tree_snapshot(loaded, &again, false));
    crdt_buf_free(&buf);
    CHECK_INT(0, crdt_tree_snapshot(a.tree, &buf, false));
    CHECK(buf.len == again.len && memcmp(buf.data, again.data, buf.len) == 0);

    /* Every truncation and every single-byte change is refused or loads safely. */
    int refused = 0;
    for (size_t cut = 0; cut < buf.len; cut++) {
        struct crdt_tree *bad = NULL;
        int rc = crdt_tree_load(&bad, buf.data, cut);
        refused += rc == -EBADMSG;
        crdt_tree_free(bad);
    }
    CHECK_INT((long long)buf.len, refused);
    for (size_t at = 0; at < buf.len; at++) {
        for (int bit = 0; bit < 8; bit++) {
            buf.data[at] ^= (uint8_t)(1u << bit);
            struct crdt_tree *bad = NULL;
            int rc = crdt_tree_load(&bad, buf.data, buf.len);
            CHECK(rc == 0 || rc == -EBADMSG);
            if (bad) {
                char *listing = tree_listing(bad);
                free(listing);
            }
            crdt_tree_free(bad);
            buf.data[at] ^= (uint8_t)(1u << bit);
        }
    }
    crdt_tree_free(loaded);
    crdt_buf_free(&buf);
    crdt_buf_free(&again);
    replica_free(&a);
    replica_free(&b);
}

static void test_op_encoding_golden(void)
{
    struct crdt_tree_op op = {
        .ts = {300, 7},
        .child = {300, 7},
        .parent = CRDT_NODE_ROOT,
        .name = "a.txt",
        .name_len = 5,
        .kind = CRDT_KIND_FILE,
    };
    struct crdt_buf buf = {0};
    crdt_tree_op_encode(&buf, &op);
    const uint8_t golden[] = {0xac, 0x02, 0x07, 0x01, 0x02, 0xac, 0x02, 0x07,
                              0x00, 0x05, 'a',  '.',  't',  'x',  't',  0x00};
    CHECK_INT(sizeof(golden), buf.len);
    CHECK(buf.len == sizeof(golden) && memcmp(buf.data, golden, sizeof(golden)) == 0);
    struct crdt_reader reader;
    crdt_reader_init(&reader, buf.data, buf.len);
    struct crdt_tree_op back;
    CHECK_INT(0, crdt_tree_op_decode(&reader, &back));
    CHECK(crdt_ts_cmp(back.ts, op.ts) == 0 && crdt_node_id_eq(back.child, op.child) &&
          crdt_node_id_eq(back.parent, op.parent) && back.name_len == 5 &&
          memcmp(back.name, "a.txt", 5) == 0 && back.kind == CRDT_KIND_FILE);
    for (size_t cut = 0; cut < buf.len; cut++) {
        crdt_reader_init(&reader, buf.data, cut);
        CHECK_INT(-EBADMSG, crdt_tree_op_decode(&reader, &back));
    }
    /* A delete carries the newest edit its author had seen. */
    crdt_buf_free(&buf);
    op.parent = CRDT_NODE_TRASH;
    op.seen_edit = (struct crdt_ts){12, 9};
    crdt_tree_op_encode(&buf, &op);
    crdt_reader_init(&reader, buf.data, buf.len);
    CHECK_INT(0, crdt_tree_op_decode(&reader, &back));
    CHECK(crdt_ts_cmp(back.seen_edit, op.seen_edit) == 0);
    crdt_buf_free(&buf);
}

static void test_memory_and_counts(void)
{
    struct replica a;
    replica_init(&a, REPLICA_A);
    size_t empty = crdt_tree_mem_bytes(a.tree);
    CHECK(empty > 0);
    for (int i = 0; i < 1000; i++) {
        char name[16];
        snprintf(name, sizeof(name), "n%d", i);
        CHECK_INT(0, replica_create(&a, NULL, CRDT_NODE_ROOT, name, CRDT_KIND_FILE));
    }
    CHECK_INT(1002, crdt_tree_node_count(a.tree));
    CHECK(crdt_tree_mem_bytes(a.tree) > empty);
    replica_free(&a);
}

int main(void)
{
    test_create_lookup_list();
    test_rename_move_delete();
    test_out_of_order_batch();
    test_malformed_ops_rejected();
    test_skipped_move_applies_later();
    test_row_same_path_mkdir();
    test_row_same_name_files();
    test_row_move_cycle();
    test_row_rename_and_edit();
    test_row_delete_and_edit();
    test_row_delete_dir_create_inside();
    test_row_rename_over();
    test_cycle_through_trash();
    test_truncate();
    test_snapshot_round_trip();
    test_op_encoding_golden();
    test_memory_and_counts();
    return test_finish("tree");
}
