/*
 * Schema versions and migrations: every frozen fixture under
 * tests/fixtures/store-vN/ (a whole store directory written by the weft of
 * schema vN) must open with today's code, migrate to META_SCHEMA_VERSION, and
 * still hold what it was made with.
 *
 * `test-schema --make-fixture DIR` writes a new fixture with the current
 * schema; run it once when a schema version is released and commit DIR as
 * tests/fixtures/store-vN (README "Adding a schema version").
 */
#include "crdt/tree.h"
#include "meta/opbody.h"
#include "meta/oplog.h"
#include "meta/version.h"
#include "meta/wcopy.h"
#include "meta_util.h"
#include "test.h"

#include <sqlite3.h>

#define FIXTURE_LEN 40000

static const struct meta_id *fixture_node(void)
{
    static struct meta_id id;
    id = tu_id(0x0f1);
    return &id;
}

static const struct meta_id *fixture_text_node(void)
{
    static struct meta_id id;
    id = tu_id(0x0f2);
    return &id;
}

static int make_fixture(const char *dir)
{
    struct meta_share_params params = {.device_name = "fixture"};
    struct meta_store *store = NULL;
    struct meta_err err;
    if (meta_store_create(&store, &err, dir, &params) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    struct meta_id root_id = tu_id(0);
    struct meta_node root = tu_node(root_id, NULL, "", META_NODE_DIR);
    root.ino = META_INO_ROOT;
    struct meta_node file = tu_node(*fixture_node(), &root_id, "photo.jpg", META_NODE_FILE);
    uint8_t *data = malloc(FIXTURE_LEN);
    tu_fill(data, FIXTURE_LEN, 77);
    uint64_t replica = meta_store_replica(store);
    struct meta_version version = {.node = *fixture_node(),
                                   .ts = {5, replica},
                                   .author = replica,
                                   .time_ns = 1700000000000000000};
    struct meta_op op = {.replica = replica,
                         .seq = 1,
                         .counter = 5,
                         .kind = META_OP_TREE,
                         .node = *fixture_node(),
                         .author = replica,
                         .body = (uint8_t *)"op-body",
                         .body_len = 7};
    char note[64];
    snprintf(note, sizeof(note), "made with schema v%d", META_SCHEMA_VERSION);
    int rc = meta_setting_set(store, "fixture.note", note);
    if (rc == 0)
        rc = meta_node_put(NULL, store, &root);
    if (rc == 0)
        rc = meta_node_put(NULL, store, &file);
    if (rc == 0)
        rc = meta_wc_mark_dirty(store, fixture_node());
    if (rc == 0)
        rc = meta_wc_replace(store, fixture_node(), data, FIXTURE_LEN);
    if (rc == 0)
        rc = meta_version_commit_wc(NULL, store, &version);
    if (rc == 0)
        rc = meta_oplog_append(store, &op);
    if (rc == 0)
        rc = meta_xattr_set(NULL, store, fixture_node(), "user.k", "v", 1,
                            (struct crdt_ts){6, replica});
    if (rc == 0)
        rc = meta_text_put(store, fixture_node(), "state", 5);
    /* v2: a checkpoint, and a second file whose text state covers part of the log. */
    struct crdt_vv covered = {0};
    if (rc == 0)
        rc = crdt_vv_raise(&covered, replica, 1);
    if (rc == 0)
        rc = meta_checkpoint_put(store, "tree", &covered, 5, "checkpoint", 10);
    struct meta_node notes = tu_node(*fixture_text_node(), &root_id, "notes.txt", META_NODE_FILE);
    /* v3: LWW stamps per attribute, and rule 3b's bookkeeping (a deleted, pinned node). */
    notes.attr_ts[0] = notes.attr_ts[4] = (struct crdt_ts){7, replica};
    notes.attr_ts[1] = (struct crdt_ts){3, 0x8000000000000001ULL};
    notes.moved = (struct crdt_ts){9, replica};
    notes.deleted = true;
    notes.deleted_saw = (struct crdt_ts){4, replica};
    notes.edited = (struct crdt_ts){8, 0x8000000000000001ULL};
    notes.pinned = META_PIN_ON;
    if (rc == 0)
        rc = meta_node_put(NULL, store, &notes);
    if (rc == 0)
        rc = meta_text_put_covered(store, fixture_text_node(), "text", 4, &covered);
    crdt_vv_free(&covered);
    if (rc)
        fprintf(stderr, "make fixture: %s\n", meta_store_errmsg(store));
    meta_store_close(store);
    free(data);
    return rc ? 1 : 0;
}

static const char *copy_base;
static const char *copy_target;

static int copy_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    char target[4096];
    snprintf(target, sizeof(target), "%s%s", copy_target, path + strlen(copy_base));
    if (flag == FTW_D)
        return mkdir(target, 0700) == 0 || errno == EEXIST ? 0 : -1;
    if (flag != FTW_F)
        return 0;
    size_t len = 0;
    uint8_t *data = tu_read_file(path, &len);
    if (!data)
        return -1;
    int rc = tu_write_file(target, data, len);
    free(data);
    (void)st;
    return rc;
}

/* Copies a fixture (git keeps neither 0600 nor 0700) to a temp dir with owner-only modes. */
static char *copy_fixture(const char *fixture)
{
    char *dir = tu_tempdir("fixture");
    char *target = malloc(4096);
    snprintf(target, 4096, "%s/store", dir);
    copy_base = fixture;
    copy_target = target;
    CHECK_INT(0, nftw(fixture, copy_entry, 16, FTW_PHYS));
    free(target);
    return dir;
}

static void check_fixture(const char *fixture, int version)
{
    char *dir = copy_fixture(fixture);
    char path[4096];
    snprintf(path, sizeof(path), "%s/store", dir);
    struct meta_store *store = NULL;
    struct meta_err err;
    int rc = meta_store_open(&store, &err, path);
    if (rc)
        fprintf(stderr, "fixture v%d: %s\n", version, err.msg);
    CHECK_INT(0, rc);
    if (rc) {
        tu_rmtree(dir);
        return;
    }
    CHECK_INT(0, meta_store_check(store));
    char *note = NULL;
    CHECK_INT(0, meta_setting_get(&note, store, "fixture.note"));
    CHECK(note && strstr(note, "schema v") != NULL);
    free(note);
    struct meta_node node;
    CHECK_INT(0, meta_node_get(&node, store, fixture_node()));
    CHECK_STR("photo.jpg", node.name);
    CHECK_INT(FIXTURE_LEN, node.size);
    meta_node_clear(&node);
    struct meta_version *versions = NULL;
    size_t count = 0;
    CHECK_INT(0, meta_version_list(&versions, &count, store, fixture_node()));
    CHECK_INT(1, count);
    if (count == 1) {
        uint8_t *content = NULL, *expected = malloc(FIXTURE_LEN);
        size_t len = 0;
        tu_fill(expected, FIXTURE_LEN, 77);
        CHECK_INT(0, meta_version_read(&content, &len, store, fixture_node(), versions[0].ts));
        CHECK(len == FIXTURE_LEN && memcmp(content, expected, len) == 0);
        free(content);
        free(expected);
    }
    free(versions);
    struct meta_op op;
    CHECK_INT(0, meta_oplog_get(&op, store, meta_store_replica(store), 1));
    CHECK(op.body_len == 7 && memcmp(op.body, "op-body", 7) == 0);
    meta_op_clear(&op);
    uint8_t *value = NULL;
    size_t len = 0;
    CHECK_INT(0, meta_xattr_get(&value, &len, store, fixture_node(), "user.k"));
    free(value);
    CHECK_INT(0, meta_text_get(&value, &len, store, fixture_node()));
    free(value);
    /* v2 added checkpoints and what a text state covers; a v1 store has neither yet. */
    struct meta_checkpoint cp;
    bool complete = false;
    struct crdt_vv covered = {0};
    if (version >= 2) {
        CHECK_INT(0, meta_checkpoint_get(&cp, store, "tree"));
        CHECK(cp.counter == 5 && cp.state_len == 10 && memcmp(cp.state, "checkpoint", 10) == 0);
        CHECK_INT(1, crdt_vv_get(&cp.covered, meta_store_replica(store)));
        meta_checkpoint_clear(&cp);
        CHECK_INT(0, meta_text_get_covered(&value, &len, &covered, &complete, store,
                                           fixture_text_node()));
        CHECK(!complete && len == 4 && memcmp(value, "text", 4) == 0);
        CHECK_INT(1, crdt_vv_get(&covered, meta_store_replica(store)));
        free(value);
        crdt_vv_free(&covered);
    } else {
        CHECK_INT(-ENOENT, meta_checkpoint_get(&cp, store, "tree"));
    }
    CHECK_INT(0, meta_text_get_covered(NULL, NULL, &covered, &complete, store, fixture_node()));
    CHECK(complete);
    crdt_vv_free(&covered);
    /* v3 added attribute stamps and rule 3b's columns; older stores start with none. */
    uint64_t self = meta_store_replica(store);
    CHECK_INT(0, meta_node_get(&node, store, version >= 2 ? fixture_text_node() : fixture_node()));
    if (version >= 3) {
        CHECK(node.attr_ts[0].counter == 7 && node.attr_ts[0].replica == self);
        CHECK(node.attr_ts[4].counter == 7 && node.attr_ts[1].counter == 3 &&
              node.attr_ts[1].replica == 0x8000000000000001ULL);
        CHECK(node.attr_ts[2].counter == 0 && node.attr_ts[3].counter == 0);
        CHECK(node.moved.counter == 9 && node.moved.replica == self);
        CHECK(node.deleted && node.deleted_saw.counter == 4);
        CHECK(node.edited.counter == 8 && node.edited.replica == 0x8000000000000001ULL);
        CHECK_INT(META_PIN_ON, node.pinned);
    } else {
        for (int field = 0; field < META_ATTR_FIELDS; field++)
            CHECK_INT(0, node.attr_ts[field].counter);
        CHECK(node.moved.counter == 0 && !node.deleted && node.edited.counter == 0);
        CHECK_INT(META_PIN_NONE, node.pinned);
    }
    meta_node_clear(&node);
    /* Migrations turn foreign keys off while they run: they must be back on after. */
    struct meta_id missing = tu_id(0x0f9);
    CHECK_INT(-ENOENT, meta_xattr_set(NULL, store, &missing, "user.k", "v", 1,
                                      (struct crdt_ts){7, meta_store_replica(store)}));
    meta_store_close(store);

    /* Opening migrated it to the current version. */
    snprintf(path, sizeof(path), "%s/store/store.db", dir);
    sqlite3 *db = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
    sqlite3_stmt *stmt = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_prepare_v2(db, "PRAGMA user_version;", -1, &stmt, NULL));
    CHECK_INT(SQLITE_ROW, sqlite3_step(stmt));
    CHECK_INT(META_SCHEMA_VERSION, sqlite3_column_int(stmt, 0));
    sqlite3_finalize(stmt);
    /* v2's shape: nodes keyed by id without a rowid, no IN (...) checks on the hot tables. */
    CHECK_INT(SQLITE_OK, sqlite3_prepare_v2(db,
                                            "SELECT name, sql FROM sqlite_schema WHERE name IN "
                                            "('nodes', 'ops', 'nodes_v2', 'ops_v2') ORDER BY name;",
                                            -1, &stmt, NULL));
    int tables = 0;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        const char *sql = (const char *)sqlite3_column_text(stmt, 1);
        tables++;
        CHECK(strcmp(name, "nodes") == 0 || strcmp(name, "ops") == 0);
        CHECK(strstr(sql, " IN (") == NULL);
        CHECK(strstr(sql, "WITHOUT ROWID") != NULL);
    }
    CHECK_INT(2, tables);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    tu_rmtree(dir);
}

/* Appends an op to a store's log by hand, as an older weft would have logged it. */
static void raw_op(sqlite3 *db, uint64_t replica, uint64_t seq, uint64_t counter, int kind,
                   const struct meta_id *node, const struct crdt_buf *body)
{
    sqlite3_stmt *stmt = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_prepare_v2(db,
                                            "INSERT INTO ops (replica, seq, counter, kind, node, "
                                            "author, body) VALUES (?1, ?2, ?3, ?4, ?5, ?1, ?6);",
                                            -1, &stmt, NULL));
    sqlite3_bind_int64(stmt, 1, (int64_t)replica);
    sqlite3_bind_int64(stmt, 2, (int64_t)seq);
    sqlite3_bind_int64(stmt, 3, (int64_t)counter);
    sqlite3_bind_int(stmt, 4, kind);
    sqlite3_bind_blob(stmt, 5, node->bytes, META_ID_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(stmt, 6, body->data, (int)body->len, SQLITE_STATIC);
    CHECK_INT(SQLITE_DONE, sqlite3_step(stmt));
    sqlite3_finalize(stmt);
}

static void raw_attr_op(sqlite3 *db, uint64_t replica, uint64_t seq, uint64_t counter,
                        unsigned mask, uint32_t mode, uint32_t uid)
{
    struct meta_attr_body op = {.format = 1, .mask = (uint8_t)mask, .mode = mode, .uid = uid};
    struct crdt_buf body = {0};
    meta_attr_body_encode(&body, &op);
    raw_op(db, replica, seq, counter, META_OP_ATTR, fixture_node(), &body);
    crdt_buf_free(&body);
}

static void raw_tree_op(sqlite3 *db, uint64_t replica, uint64_t seq, uint64_t counter, bool delete)
{
    const uint8_t *id = fixture_node()->bytes;
    struct crdt_node_id child = {0, 0};
    for (int i = 0; i < 8; i++) {
        child.hi = child.hi << 8 | id[i];
        child.lo = child.lo << 8 | id[8 + i];
    }
    struct crdt_tree_op op = {.ts = {counter, replica},
                              .child = child,
                              .parent = delete ? CRDT_NODE_TRASH : CRDT_NODE_ROOT,
                              .name = "photo.jpg",
                              .name_len = 9,
                              .kind = CRDT_KIND_FILE};
    struct crdt_buf body = {0};
    crdt_tree_op_encode(&body, &op);
    raw_op(db, replica, seq, counter, META_OP_TREE, fixture_node(), &body);
    crdt_buf_free(&body);
}

/*
 * v3's migration fills its columns from the log: each attribute as the
 * newest op that set it (v2 applied them in arrival order: here a late older
 * chmod had won), each node's newest tree op. Undecodable bodies (the
 * fixture's own "op-body") are skipped.
 */
static void test_backfill(const char *fixtures)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/store-v2", fixtures);
    char *dir = copy_fixture(path);
    snprintf(path, sizeof(path), "%s/store/store.db", dir);
    sqlite3 *db = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
    const uint64_t r1 = 0x1111, r2 = 0x2222, r3 = 0x8000000000003333ULL;
    raw_attr_op(db, r1, 1, 10, META_ATTR_MODE, 0100600, 0);
    raw_attr_op(db, r2, 1, 20, META_ATTR_MODE, 0100640, 0);
    raw_attr_op(db, r3, 1, 15, META_ATTR_MODE | META_ATTR_UID, 0100700, 7);
    raw_tree_op(db, r1, 2, 30, false);
    raw_tree_op(db, r2, 2, 40, true);
    raw_tree_op(db, r3, 2, 35, false);
    CHECK_INT(SQLITE_OK, sqlite3_exec(db, "UPDATE nodes SET mode = 33216 WHERE name = 'photo.jpg';",
                                      NULL, NULL, NULL));
    sqlite3_close(db);
    snprintf(path, sizeof(path), "%s/store", dir);
    struct meta_store *store = NULL;
    struct meta_err err;
    int rc = meta_store_open(&store, &err, path);
    if (rc)
        fprintf(stderr, "backfill: %s\n", err.msg);
    CHECK_INT(0, rc);
    struct meta_node node;
    CHECK_INT(0, rc ? -1 : meta_node_get(&node, store, fixture_node()));
    if (rc == 0) {
        CHECK_INT(0100640, node.mode);
        CHECK_INT(7, node.uid);
        CHECK(node.attr_ts[0].counter == 20 && node.attr_ts[0].replica == r2);
        CHECK(node.attr_ts[1].counter == 15 && node.attr_ts[1].replica == r3);
        CHECK_INT(0, node.attr_ts[2].counter);
        CHECK(node.moved.counter == 40 && node.moved.replica == r2);
        CHECK(node.deleted && node.deleted_saw.counter == 0);
        CHECK_INT(0, node.edited.counter);
        meta_node_clear(&node);
        CHECK_INT(0, meta_store_check(store));
    }
    meta_store_close(store);
    tu_rmtree(dir);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--make-fixture") == 0)
        return make_fixture(argv[2]);
    const char *fixtures = getenv("WEFT_FIXTURES");
    if (!fixtures) {
        fprintf(stderr, "WEFT_FIXTURES is not set (meson test sets it)\n");
        return 1;
    }
    int found = 0;
    for (int version = 1; version <= META_SCHEMA_VERSION; version++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/store-v%d", fixtures, version);
        if (stat(path, &st) != 0)
            continue;
        found++;
        check_fixture(path, version);
    }
    /* Every released version has a fixture; the current one at least must exist. */
    CHECK_INT(META_SCHEMA_VERSION, found);
    test_backfill(fixtures);
    return test_finish("schema");
}
