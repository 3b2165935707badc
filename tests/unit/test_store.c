/*
 * Unit tests for meta/store, meta/oplog, meta/nodes, meta/version and
 * meta/wcopy: a round trip through every accessor, the lock, refusal of
 * foreign, corrupt, half-created and newer databases, transactions, history,
 * restore, retention and GC.
 */
#include "meta/oplog.h"
#include "meta/version.h"
#include "meta/wcopy.h"
#include "meta_util.h"
#include "test.h"

#include <sqlite3.h>
#include <sys/wait.h>

static struct meta_store *create_store(const char *dir)
{
    struct meta_share_params params = {.device_name = "laptop"};
    struct meta_store *store = NULL;
    struct meta_err err;
    int rc = meta_store_create(&store, &err, dir, &params);
    if (rc) {
        fprintf(stderr, "create %s: %d %s\n", dir, rc, err.msg);
        exit(2);
    }
    return store;
}

static struct meta_store *reopen(const char *dir)
{
    struct meta_store *store = NULL;
    struct meta_err err;
    int rc = meta_store_open(&store, &err, dir);
    if (rc) {
        fprintf(stderr, "open %s: %d %s\n", dir, rc, err.msg);
        exit(2);
    }
    return store;
}

static void test_create_open_identity(void)
{
    char *dir = tu_tempdir("identity");
    char path[4096];
    snprintf(path, sizeof(path), "%s/share", dir);
    struct meta_store *store = create_store(path);
    uint64_t replica = meta_store_replica(store);
    uint8_t share_id[META_SHARE_ID_LEN], pk[META_PUBLIC_KEY_LEN], digest[32];
    meta_store_share_id(share_id, store);
    meta_store_public_key(pk, store);
    CHECK_INT(0, meta_crypto_hash(digest, 32, NULL, pk, sizeof(pk)));
    uint64_t derived = 0;
    for (int i = 0; i < 8; i++)
        derived |= (uint64_t)digest[i] << (8 * i);
    CHECK(replica == derived);
    struct meta_device self;
    CHECK_INT(0, meta_device_get(&self, store, replica));
    CHECK_STR("laptop", self.name);
    CHECK(memcmp(self.public_key, pk, sizeof(pk)) == 0);
    CHECK(!self.revoked);
    meta_store_close(store);

    /* Key files are the owner's alone. */
    struct stat st;
    snprintf(path, sizeof(path), "%s/share/keys/share.key", dir);
    CHECK_INT(0, stat(path, &st));
    CHECK_INT(0600, st.st_mode & 0777);
    CHECK_INT(32, st.st_size);
    snprintf(path, sizeof(path), "%s/share/keys/device.key", dir);
    CHECK_INT(0, stat(path, &st));
    CHECK_INT(64, st.st_size);

    snprintf(path, sizeof(path), "%s/share", dir);
    store = reopen(path);
    CHECK(meta_store_replica(store) == replica);
    uint8_t again[META_SHARE_ID_LEN];
    meta_store_share_id(again, store);
    CHECK(memcmp(again, share_id, sizeof(again)) == 0);
    meta_store_close(store);

    /* Creating over an existing store, or opening nothing, is refused. */
    struct meta_share_params params = {.device_name = "laptop"};
    struct meta_err err;
    CHECK_INT(-EEXIST, meta_store_create(&store, &err, path, &params));
    CHECK(strstr(err.msg, "already exists") != NULL);
    snprintf(path, sizeof(path), "%s/none", dir);
    CHECK_INT(-ENOENT, meta_store_open(&store, &err, path));
    CHECK(store == NULL);
    params.device_name = "";
    CHECK_INT(-EINVAL, meta_store_create(&store, &err, path, &params));

    /* Joining: a given share id and key are kept. */
    uint8_t key[META_KEY_LEN];
    memset(key, 7, sizeof(key));
    params =
        (struct meta_share_params){.device_name = "desk", .share_id = share_id, .share_key = key};
    snprintf(path, sizeof(path), "%s/joined", dir);
    CHECK_INT(0, meta_store_create(&store, &err, path, &params));
    meta_store_share_id(again, store);
    CHECK(memcmp(again, share_id, sizeof(again)) == 0);
    uint8_t id_a[META_HASH_LEN], id_b[META_HASH_LEN];
    CHECK_INT(0, meta_store_chunk_id(id_a, store, "abc", 3));
    CHECK_INT(0, meta_crypto_hash(id_b, sizeof(id_b), key, "abc", 3));
    CHECK(memcmp(id_a, id_b, sizeof(id_a)) == 0);
    meta_store_close(store);
    tu_rmtree(dir);
}

static void test_lock(void)
{
    char *dir = tu_tempdir("lock");
    struct meta_store *store = create_store(dir);
    struct meta_store *second = NULL;
    struct meta_err err;
    CHECK_INT(-EBUSY, meta_store_open(&second, &err, dir));
    CHECK(second == NULL);
    CHECK(strstr(err.msg, "already open in this process") != NULL);

    /* Another process gets the holder's pid in its message. */
    int pipe_fds[2];
    CHECK_INT(0, pipe(pipe_fds));
    pid_t child = fork();
    if (child == 0) {
        struct meta_store *other = NULL;
        struct meta_err child_err;
        int rc = meta_store_open(&other, &child_err, dir);
        char expected[64];
        snprintf(expected, sizeof(expected), "process %ld", (long)getppid());
        char ok = rc == -EBUSY && strstr(child_err.msg, expected) ? 'y' : 'n';
        if (ok != 'y')
            fprintf(stderr, "child: %d %s\n", rc, child_err.msg);
        if (write(pipe_fds[1], &ok, 1) != 1)
            _exit(3);
        _exit(0);
    }
    char answer = 0;
    CHECK_INT(1, read(pipe_fds[0], &answer, 1));
    CHECK_INT('y', answer);
    waitpid(child, NULL, 0);
    close(pipe_fds[0]);
    close(pipe_fds[1]);

    meta_store_close(store);
    CHECK_INT(0, meta_store_open(&second, &err, dir));
    meta_store_close(second);
    tu_rmtree(dir);
}

/* Writes a file, tries to open the store, and checks the file is left byte for byte. */
static void expect_refused(const char *dir, int expected_rc, const char *expected_words)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/store.db", dir);
    size_t before_len = 0, after_len = 0;
    uint8_t *before = tu_read_file(path, &before_len);
    struct meta_store *store = NULL;
    struct meta_err err;
    int rc = meta_store_open(&store, &err, dir);
    CHECK_INT(expected_rc, rc);
    CHECK(store == NULL);
    if (!strstr(err.msg, expected_words))
        fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err.msg, expected_words);
    CHECK(strstr(err.msg, expected_words) != NULL);
    uint8_t *after = tu_read_file(path, &after_len);
    CHECK(before && after && before_len == after_len && memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
}

static void set_user_version(const char *db_path, int version)
{
    sqlite3 *db = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_open(db_path, &db));
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d;", version);
    CHECK_INT(SQLITE_OK, sqlite3_exec(db, sql, NULL, NULL, NULL));
    sqlite3_close(db);
}

static void test_refuse_bad_databases(void)
{
    char *dir = tu_tempdir("refuse");
    char path[4096];
    struct meta_store *store = create_store(dir);
    meta_store_close(store);
    snprintf(path, sizeof(path), "%s/store.db", dir);
    size_t ours_len = 0;
    uint8_t *ours = tu_read_file(path, &ours_len);
    CHECK(ours != NULL);

    /* Newer schema. */
    set_user_version(path, META_SCHEMA_VERSION + 1);
    expect_refused(dir, -EPROTONOSUPPORT, "newer weft");

    /* Not SQLite at all. */
    CHECK_INT(0, tu_write_file(path, "hello, this is not a database, it is a text file\n", 50));
    expect_refused(dir, -EUCLEAN, "not a SQLite database");

    /* SQLite, but another program's. */
    unlink(path);
    sqlite3 *db = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
    CHECK_INT(SQLITE_OK, sqlite3_exec(db,
                                      "PRAGMA application_id = 1234; CREATE TABLE t (x);"
                                      "INSERT INTO t VALUES (1);",
                                      NULL, NULL, NULL));
    sqlite3_close(db);
    expect_refused(dir, -EUCLEAN, "another program");

    /* SQLite without any application id. */
    unlink(path);
    CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
    CHECK_INT(SQLITE_OK, sqlite3_exec(db, "CREATE TABLE t (x);", NULL, NULL, NULL));
    sqlite3_close(db);
    expect_refused(dir, -EUCLEAN, "not a weft store");

    /* Empty: creation was interrupted. */
    CHECK_INT(0, tu_write_file(path, "", 0));
    expect_refused(dir, -EUCLEAN, "interrupted");

    /* Ours again, but with a page scribbled over: refused or reported, never rewritten. */
    uint8_t *damaged = malloc(ours_len);
    memcpy(damaged, ours, ours_len);
    memset(damaged + 4096, 0x5a, ours_len > 8192 ? 4096 : ours_len - 4096);
    CHECK_INT(0, tu_write_file(path, damaged, ours_len));
    struct meta_err err;
    int rc = meta_store_open(&store, &err, dir);
    if (rc == 0) {
        CHECK_INT(-EUCLEAN, meta_store_check(store));
        meta_store_close(store);
    } else {
        CHECK_INT(-EUCLEAN, rc);
    }
    free(damaged);

    /* Restored, it opens; key files others can read are refused. */
    CHECK_INT(0, tu_write_file(path, ours, ours_len));
    store = reopen(dir);
    meta_store_close(store);
    snprintf(path, sizeof(path), "%s/keys/share.key", dir);
    CHECK_INT(0, chmod(path, 0644));
    CHECK_INT(-EPERM, meta_store_open(&store, &err, dir));
    CHECK(strstr(err.msg, "chmod 600") != NULL);
    free(ours);
    tu_rmtree(dir);
}

static void test_settings_and_txn(void)
{
    char *dir = tu_tempdir("settings");
    struct meta_store *store = create_store(dir);
    char *value = NULL;
    CHECK_INT(0, meta_setting_set(store, "ui.colour", "blue"));
    CHECK_INT(0, meta_setting_get(&value, store, "ui.colour"));
    CHECK_STR("blue", value);
    free(value);
    CHECK_INT(0, meta_setting_set(store, "ui.colour", "green"));
    CHECK_INT(0, meta_setting_get(&value, store, "ui.colour"));
    CHECK_STR("green", value);
    free(value);
    int64_t number = 0;
    CHECK_INT(0, meta_setting_get_int(&number, store, "missing", 17));
    CHECK_INT(17, number);
    CHECK_INT(0, meta_setting_set(store, "n", "-42"));
    CHECK_INT(0, meta_setting_get_int(&number, store, "n", 0));
    CHECK_INT(-42, number);
    CHECK_INT(-EINVAL, meta_setting_get_int(&number, store, "ui.colour", 0));
    CHECK_INT(0, meta_setting_delete(store, "ui.colour"));
    CHECK_INT(-ENOENT, meta_setting_get(&value, store, "ui.colour"));

    /* Transactions: rollback leaves nothing, commit keeps everything. */
    CHECK_INT(0, meta_store_txn_begin(store));
    CHECK_INT(-EINVAL, meta_store_txn_begin(store));
    CHECK_INT(0, meta_setting_set(store, "a", "1"));
    CHECK_INT(0, meta_setting_set(store, "b", "2"));
    meta_store_txn_rollback(store);
    CHECK_INT(-ENOENT, meta_setting_get(&value, store, "a"));
    CHECK_INT(0, meta_store_txn_begin(store));
    CHECK_INT(0, meta_setting_set(store, "a", "1"));
    CHECK_INT(0, meta_setting_set(store, "b", "2"));
    CHECK_INT(0, meta_store_txn_commit(store));
    CHECK_INT(-EINVAL, meta_store_txn_commit(store));
    meta_store_close(store);
    store = reopen(dir);
    CHECK_INT(0, meta_setting_get(&value, store, "b"));
    CHECK_STR("2", value);
    free(value);
    CHECK_INT(0, meta_store_check(store));
    meta_store_close(store);
    tu_rmtree(dir);
}

static void test_devices(void)
{
    char *dir = tu_tempdir("devices");
    struct meta_store *store = create_store(dir);
    struct meta_device peer = {.replica = 0xfedcba9876543210ULL, .added_at_ns = 5};
    memset(peer.public_key, 0xab, sizeof(peer.public_key));
    snprintf(peer.name, sizeof(peer.name), "phone");
    CHECK_INT(0, meta_device_put(store, &peer));
    struct meta_device got;
    CHECK_INT(0, meta_device_get(&got, store, peer.replica));
    CHECK(got.replica == peer.replica);
    CHECK_STR("phone", got.name);
    CHECK(memcmp(got.public_key, peer.public_key, sizeof(got.public_key)) == 0);
    CHECK_INT(5, got.added_at_ns);
    peer.revoked = true;
    CHECK_INT(0, meta_device_put(store, &peer));
    CHECK_INT(0, meta_device_get(&got, store, peer.replica));
    CHECK(got.revoked);
    /* Another replica id cannot claim the same key. */
    struct meta_device thief = peer;
    thief.replica = 7;
    CHECK_INT(-EEXIST, meta_device_put(store, &thief));
    CHECK_INT(-ENOENT, meta_device_get(&got, store, 7));
    struct meta_device *all = NULL;
    size_t len = 0;
    CHECK_INT(0, meta_device_list(&all, &len, store));
    CHECK_INT(2, len);
    free(all);
    meta_store_close(store);
    tu_rmtree(dir);
}

struct since_ctx {
    uint64_t seen[16][2];
    size_t len;
    uint64_t last_counter;
    int out_of_order;
};

static int collect_op(void *ctx, const struct meta_op *op)
{
    struct since_ctx *since = ctx;
    if (op->counter < since->last_counter)
        since->out_of_order++;
    since->last_counter = op->counter;
    if (since->len < 16) {
        since->seen[since->len][0] = op->replica;
        since->seen[since->len][1] = op->seq;
        since->len++;
    }
    return 0;
}

static void test_oplog(void)
{
    char *dir = tu_tempdir("oplog");
    struct meta_store *store = create_store(dir);
    uint64_t a = 0x1111, b = 0xffffffff00000001ULL; /* b reads back as a negative SQL integer */
    uint8_t body[3] = {9, 8, 7};
    struct meta_op op = {.replica = a,
                         .seq = 1,
                         .counter = 1,
                         .kind = META_OP_TREE,
                         .node = tu_id(1),
                         .author = a,
                         .body = body,
                         .body_len = 3};
    CHECK_INT(0, meta_oplog_append(store, &op));
    CHECK_INT(-EEXIST, meta_oplog_append(store, &op));
    op.seq = 3;
    CHECK_INT(-EINVAL, meta_oplog_append(store, &op));
    op.seq = 2;
    op.counter = 4;
    op.kind = META_OP_TEXT;
    CHECK_INT(0, meta_oplog_append(store, &op));
    struct meta_op other = {.replica = b,
                            .seq = 1,
                            .counter = 2,
                            .kind = META_OP_ATTR,
                            .node = tu_id(2),
                            .author = b,
                            .body = NULL,
                            .body_len = 0};
    CHECK_INT(0, meta_oplog_append(store, &other));
    other.seq = 2;
    other.counter = 5;
    CHECK_INT(0, meta_oplog_append(store, &other));
    op.kind = 9;
    op.seq = 3;
    CHECK_INT(-EINVAL, meta_oplog_append(store, &op));

    struct meta_op got;
    CHECK_INT(0, meta_oplog_get(&got, store, a, 2));
    CHECK(got.replica == a && got.seq == 2 && got.counter == 4);
    CHECK_INT(META_OP_TEXT, got.kind);
    CHECK(memcmp(got.node.bytes, tu_id(1).bytes, META_ID_LEN) == 0);
    CHECK(got.body_len == 3 && memcmp(got.body, body, 3) == 0);
    meta_op_clear(&got);
    CHECK_INT(0, meta_oplog_get(&got, store, b, 1));
    CHECK(got.replica == b && got.author == b && got.body_len == 0);
    meta_op_clear(&got);
    CHECK_INT(-ENOENT, meta_oplog_get(&got, store, a, 9));

    struct crdt_vv vv;
    CHECK_INT(0, meta_vv_load(&vv, store));
    CHECK(crdt_vv_get(&vv, a) == 2 && crdt_vv_get(&vv, b) == 2);
    crdt_vv_free(&vv);

    /* What a replica holding {a:1} lacks: a2 (counter 4), b1 (2), b2 (5), in Lamport order. */
    struct crdt_vv have = {0};
    CHECK_INT(0, crdt_vv_raise(&have, a, 1));
    struct since_ctx since = {0};
    CHECK_INT(0, meta_oplog_since(store, &have, collect_op, &since));
    CHECK_INT(3, since.len);
    CHECK_INT(0, since.out_of_order);
    CHECK(since.seen[0][0] == b && since.seen[0][1] == 1);
    CHECK(since.seen[1][0] == a && since.seen[1][1] == 2);
    CHECK(since.seen[2][0] == b && since.seen[2][1] == 2);
    crdt_vv_free(&have);
    memset(&since, 0, sizeof(since));
    CHECK_INT(0, meta_oplog_since(store, &have, collect_op, &since));
    CHECK_INT(4, since.len);
    meta_store_close(store);
    tu_rmtree(dir);
}

static void test_nodes_xattrs_text(void)
{
    char *dir = tu_tempdir("nodes");
    struct meta_store *store = create_store(dir);
    struct meta_id root_id = tu_id(0), docs_id = tu_id(10), file_id = tu_id(11),
                   link_id = tu_id(12);
    struct meta_node root = tu_node(root_id, NULL, "", META_NODE_DIR);
    root.ino = META_INO_ROOT;
    uint64_t ino = 0;
    CHECK_INT(0, meta_node_put(&ino, store, &root));
    CHECK_INT(META_INO_ROOT, ino);
    struct meta_node docs = tu_node(docs_id, &root_id, "docs", META_NODE_DIR);
    CHECK_INT(0, meta_node_put(&ino, store, &docs));
    uint64_t docs_ino = ino;
    CHECK(docs_ino >= 2);
    struct meta_node file = tu_node(file_id, &docs_id, "a.bin", META_NODE_FILE);
    file.size = 77;
    CHECK_INT(0, meta_node_put(&ino, store, &file));
    uint64_t file_ino = ino;
    CHECK(file_ino != docs_ino);
    struct meta_node link = tu_node(link_id, &docs_id, "ln", META_NODE_SYMLINK);
    link.target = "../somewhere/else";
    link.mode = 0120777;
    CHECK_INT(0, meta_node_put(NULL, store, &link));
    struct meta_node taken = tu_node(tu_id(13), &docs_id, "x", META_NODE_FILE);
    taken.ino = file_ino;
    CHECK_INT(-EEXIST, meta_node_put(NULL, store, &taken));
    struct meta_node bad = tu_node(tu_id(14), &docs_id, "", META_NODE_FILE);
    CHECK_INT(-EINVAL, meta_node_put(NULL, store, &bad));

    struct meta_node got;
    CHECK_INT(0, meta_node_lookup(&got, store, &docs_id, "a.bin"));
    CHECK(memcmp(got.id.bytes, file_id.bytes, META_ID_LEN) == 0);
    CHECK(got.has_parent && memcmp(got.parent.bytes, docs_id.bytes, META_ID_LEN) == 0);
    CHECK_INT(77, got.size);
    CHECK_INT(0100644, got.mode);
    CHECK_INT(1000, got.uid);
    CHECK(got.mtime_ns == file.mtime_ns && got.ctime_ns == file.ctime_ns);
    CHECK(got.target == NULL);
    meta_node_clear(&got);
    CHECK_INT(-ENOENT, meta_node_lookup(&got, store, &docs_id, "nope"));
    CHECK_INT(0, meta_node_get_by_ino(&got, store, META_INO_ROOT));
    CHECK(!got.has_parent);
    meta_node_clear(&got);
    CHECK_INT(0, meta_node_get(&got, store, &link_id));
    CHECK_STR("../somewhere/else", got.target);
    meta_node_clear(&got);

    /* Rename keeps the inode number. */
    snprintf(file.name, sizeof(file.name), "b.bin");
    file.parent = root_id;
    CHECK_INT(0, meta_node_put(&ino, store, &file));
    CHECK(ino == file_ino);
    struct meta_node *children = NULL;
    size_t len = 0;
    CHECK_INT(0, meta_node_list(&children, &len, store, &root_id));
    CHECK_INT(2, len);
    if (len == 2) {
        CHECK_STR("b.bin", children[0].name);
        CHECK_STR("docs", children[1].name);
    }
    meta_node_list_free(children, len);

    /* xattrs: last writer wins by timestamp; removal keeps its timestamp. */
    bool applied = false;
    struct crdt_ts t5 = {5, 1}, t3 = {3, 9}, t6 = {6, 1}, t7 = {7, 1};
    CHECK_INT(0, meta_xattr_set(&applied, store, &file_id, "user.tag", "red", 3, t5));
    CHECK(applied);
    CHECK_INT(0, meta_xattr_set(&applied, store, &file_id, "user.tag", "old", 3, t3));
    CHECK(!applied);
    uint8_t *value = NULL;
    size_t value_len = 0;
    CHECK_INT(0, meta_xattr_get(&value, &value_len, store, &file_id, "user.tag"));
    CHECK(value_len == 3 && memcmp(value, "red", 3) == 0);
    free(value);
    CHECK_INT(0, meta_xattr_set(&applied, store, &file_id, "user.empty", "", 0, t5));
    CHECK_INT(0, meta_xattr_get(&value, &value_len, store, &file_id, "user.empty"));
    CHECK_INT(0, value_len);
    free(value);
    CHECK_INT(0, meta_xattr_set(&applied, store, &file_id, "user.tag", NULL, 0, t6));
    CHECK(applied);
    CHECK_INT(-ENODATA, meta_xattr_get(&value, &value_len, store, &file_id, "user.tag"));
    CHECK_INT(0, meta_xattr_set(&applied, store, &file_id, "user.tag", "late", 4, t5));
    CHECK(!applied);
    CHECK_INT(0, meta_xattr_set(&applied, store, &file_id, "user.tag", "blue", 4, t7));
    struct meta_xattr *xattrs = NULL;
    CHECK_INT(0, meta_xattr_list(&xattrs, &len, store, &file_id));
    CHECK_INT(2, len);
    if (len == 2) {
        CHECK_STR("user.empty", xattrs[0].name);
        CHECK_STR("user.tag", xattrs[1].name);
        CHECK(xattrs[1].value_len == 4 && memcmp(xattrs[1].value, "blue", 4) == 0);
        CHECK(xattrs[1].ts.counter == 7);
    }
    meta_xattr_list_free(xattrs, len);
    struct meta_id ghost = tu_id(99);
    CHECK_INT(-ENOENT, meta_xattr_set(&applied, store, &ghost, "user.x", "1", 1, t7));

    /* Text state. */
    CHECK_INT(0, meta_text_put(store, &file_id, "\x01\x02\x03", 3));
    CHECK_INT(0, meta_text_get(&value, &value_len, store, &file_id));
    CHECK(value_len == 3 && memcmp(value, "\x01\x02\x03", 3) == 0);
    free(value);
    CHECK_INT(-ENOENT, meta_text_get(&value, &value_len, store, &docs_id));
    CHECK_INT(-ENOENT, meta_text_put(store, &ghost, "x", 1));

    /* Inode numbers survive a reopen and are never reused. */
    meta_store_close(store);
    store = reopen(dir);
    CHECK_INT(0, meta_node_get(&got, store, &file_id));
    CHECK(got.ino == file_ino);
    meta_node_clear(&got);
    CHECK_INT(0, meta_node_delete(store, &link_id));
    CHECK_INT(-ENOENT, meta_node_delete(store, &link_id));
    struct meta_node fresh = tu_node(tu_id(20), &root_id, "fresh", META_NODE_FILE);
    CHECK_INT(0, meta_node_put(&ino, store, &fresh));
    CHECK(ino > file_ino + 1);
    /* Deleting a node takes its xattrs and text state along. */
    CHECK_INT(0, meta_node_delete(store, &file_id));
    CHECK_INT(-ENODATA, meta_xattr_get(&value, &value_len, store, &file_id, "user.empty"));
    CHECK_INT(-ENOENT, meta_text_get(&value, &value_len, store, &file_id));
    CHECK_INT(0, meta_store_check(store));
    meta_store_close(store);
    tu_rmtree(dir);
}

/* Makes file node n under a root, with an empty working copy. */
static struct meta_id make_file(struct meta_store *store, uint32_t n)
{
    struct meta_id root_id = tu_id(0), id = tu_id(n);
    struct meta_node root = tu_node(root_id, NULL, "", META_NODE_DIR);
    root.ino = META_INO_ROOT;
    CHECK_INT(0, meta_node_put(NULL, store, &root));
    char name[32];
    snprintf(name, sizeof(name), "f%u", n);
    struct meta_node file = tu_node(id, &root_id, name, META_NODE_FILE);
    CHECK_INT(0, meta_node_put(NULL, store, &file));
    return id;
}

/* A local change: DIRTY, new working copy, commit; returns the version's ts. */
static struct crdt_ts commit_content(struct meta_store *store, const struct meta_id *node,
                                     uint64_t counter, const uint8_t *data, size_t len)
{
    struct meta_version version = {.node = *node,
                                   .ts = {counter, meta_store_replica(store)},
                                   .author = meta_store_replica(store),
                                   .time_ns = (int64_t)counter * 1000};
    CHECK_INT(0, meta_wc_mark_dirty(store, node));
    CHECK_INT(0, meta_wc_replace(store, node, data, len));
    uint64_t size = 0;
    int rc = meta_version_commit_wc(&size, store, &version);
    if (rc)
        fprintf(stderr, "commit: %s\n", meta_store_errmsg(store));
    CHECK_INT(0, rc);
    CHECK(size == len);
    return version.ts;
}

static void check_wc(struct meta_store *store, const struct meta_id *node, const uint8_t *data,
                     size_t len)
{
    char path[4096];
    CHECK_INT(0, meta_wc_path(path, sizeof(path), store, node));
    size_t got_len = 0;
    uint8_t *got = tu_read_file(path, &got_len);
    CHECK(got && got_len == len && memcmp(got, data, len) == 0);
    free(got);
}

static void test_versions_and_restore(void)
{
    char *dir = tu_tempdir("versions");
    struct meta_store *store = create_store(dir);
    struct meta_id node = make_file(store, 1);
    size_t len = 300000;
    uint8_t *v1 = malloc(len), *v2 = malloc(len);
    tu_fill(v1, len, 1);
    memcpy(v2, v1, len);
    v2[150000] ^= 1;
    struct crdt_ts ts1 = commit_content(store, &node, 10, v1, len);
    struct crdt_ts ts2 = commit_content(store, &node, 11, v2, len);
    struct meta_node got;
    CHECK_INT(0, meta_node_get(&got, store, &node));
    CHECK_INT(META_WC_CLEAN, got.wc_state);
    CHECK(got.size == len);
    meta_node_clear(&got);

    struct meta_version *versions = NULL;
    size_t count = 0;
    CHECK_INT(0, meta_version_list(&versions, &count, store, &node));
    CHECK_INT(2, count);
    if (count == 2) {
        CHECK(versions[0].ts.counter == 11 && versions[1].ts.counter == 10);
        CHECK(versions[0].size == len && versions[0].time_ns == 11000);
        CHECK(versions[0].author == meta_store_replica(store));
    }
    free(versions);

    /* The two versions share all chunks but one or two. */
    struct meta_version meta;
    struct meta_chunk_list l1, l2;
    CHECK_INT(0, meta_version_get(&meta, &l1, store, &node, ts1));
    CHECK_INT(0, meta_version_get(&meta, &l2, store, &node, ts2));
    size_t same = 0;
    for (size_t i = 0; i < l1.len && i < l2.len; i++)
        same += memcmp(l1.refs[i].id, l2.refs[i].id, META_HASH_LEN) == 0;
    CHECK(l1.len == l2.len && same + 2 >= l1.len && same < l1.len);

    uint8_t *read_back = NULL;
    size_t read_len = 0;
    CHECK_INT(0, meta_version_read(&read_back, &read_len, store, &node, ts1));
    CHECK(read_len == len && memcmp(read_back, v1, len) == 0);
    free(read_back);
    char path[4096];
    snprintf(path, sizeof(path), "%s/out", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK_INT(0, meta_version_read_fd(store, &node, ts2, fd));
    close(fd);
    read_back = tu_read_file(path, &read_len);
    CHECK(read_back && read_len == len && memcmp(read_back, v2, len) == 0);
    free(read_back);

    /* Chunks: content must match the id; get and has. */
    uint8_t *chunk = NULL;
    size_t chunk_len = 0;
    CHECK_INT(0, meta_chunk_get(&chunk, &chunk_len, store, l1.refs[0].id));
    CHECK(chunk_len == l1.refs[0].len && memcmp(chunk, v1, chunk_len) == 0);
    CHECK_INT(-EBADMSG, meta_chunk_put(store, l1.refs[1].id, chunk, chunk_len));
    free(chunk);

    /* A remote version: chunks first, then the record. */
    struct meta_id node2 = make_file(store, 2);
    struct meta_version remote = {
        .node = node2, .ts = {20, 0x77}, .author = 0x77, .time_ns = 1, .size = l2.total};
    CHECK_INT(0, meta_version_record(store, &remote, &l2));
    remote.ts.counter = 21;
    remote.size = 5;
    CHECK_INT(-EINVAL, meta_version_record(store, &remote, &l2));
    struct meta_chunk_list missing = {0};
    uint8_t unknown[META_HASH_LEN];
    CHECK_INT(0, meta_store_chunk_id(unknown, store, "zzz", 3));
    CHECK_INT(0, meta_chunk_list_add(&missing, unknown, 3));
    remote.size = 3;
    CHECK_INT(-ENOENT, meta_version_record(store, &remote, &missing));
    CHECK_INT(0, meta_chunk_put(store, unknown, "zzz", 3));
    bool has = false;
    CHECK_INT(0, meta_chunk_has(&has, store, unknown));
    CHECK(has);
    CHECK_INT(0, meta_version_record(store, &remote, &missing));
    CHECK_INT(-EEXIST, meta_version_record(store, &remote, &missing));
    meta_chunk_list_free(&missing);

    /* Restore v1 as a new version: the working copy follows after commit. */
    struct meta_version restored = {.node = node,
                                    .ts = {12, meta_store_replica(store)},
                                    .author = meta_store_replica(store),
                                    .time_ns = 12000};
    CHECK_INT(0, meta_store_txn_begin(store));
    CHECK_INT(0, meta_version_restore(store, &restored, ts1));
    check_wc(store, &node, v2, len); /* not before the commit */
    CHECK_INT(0, meta_store_txn_commit(store));
    check_wc(store, &node, v1, len);
    CHECK_INT(0, meta_node_get(&got, store, &node));
    CHECK_INT(META_WC_CLEAN, got.wc_state);
    meta_node_clear(&got);
    CHECK_INT(0, meta_store_check(store));

    /* A clean node whose working copy vanished is reported. */
    CHECK_INT(0, meta_wc_remove(store, &node));
    CHECK_INT(-EUCLEAN, meta_store_check(store));
    CHECK(strstr(meta_store_errmsg(store), "missing") != NULL);

    /* A STALE node is rewritten at open (as after a crash between commit and rewrite). */
    meta_store_close(store);
    sqlite3 *db = NULL;
    snprintf(path, sizeof(path), "%s/store.db", dir);
    CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
    CHECK_INT(SQLITE_OK, sqlite3_exec(db, "UPDATE nodes SET wc_state = 2;", NULL, NULL, NULL));
    sqlite3_close(db);
    store = reopen(dir);
    check_wc(store, &node, v1, len);
    CHECK_INT(0, meta_store_check(store));
    meta_chunk_list_free(&l1);
    meta_chunk_list_free(&l2);
    meta_store_close(store);
    free(v1);
    free(v2);
    tu_rmtree(dir);
}

static void test_retention_and_gc(void)
{
    char *dir = tu_tempdir("gc");
    struct meta_store *store = create_store(dir);
    uint64_t state = 2024;
    struct meta_id nodes[4];
    for (uint32_t i = 0; i < 4; i++)
        nodes[i] = make_file(store, i + 1);
    size_t max_len = 100000;
    uint8_t *data = malloc(max_len);
    uint64_t counter = 1;
    for (int round = 0; round < 24; round++) {
        size_t n = (size_t)test_rand_below(&state, 4);
        size_t len = (size_t)test_rand_below(&state, max_len);
        tu_fill(data, len, test_rand_below(&state, 6)); /* few seeds: much sharing */
        if (len > 10)
            data[test_rand_below(&state, len)] ^= 0xff;
        commit_content(store, &nodes[n], counter++, data, len);
    }
    /* Keep everything by default: GC deletes nothing. */
    uint64_t removed = 99;
    CHECK_INT(0, meta_history_prune(&removed, store, 1));
    CHECK_INT(0, removed);
    CHECK_INT(0, meta_chunk_gc(&removed, store));
    CHECK_INT(0, removed);

    /* An orphan chunk goes. */
    uint8_t orphan[META_HASH_LEN];
    CHECK_INT(0, meta_store_chunk_id(orphan, store, "orphan", 6));
    CHECK_INT(0, meta_chunk_put(store, orphan, "orphan", 6));
    CHECK_INT(0, meta_chunk_gc(&removed, store));
    CHECK_INT(1, removed);
    bool has = true;
    CHECK_INT(0, meta_chunk_has(&has, store, orphan));
    CHECK(!has);

    /* Keep 2 versions per node: the rest go, every kept version still reads. */
    CHECK_INT(0, meta_setting_set(store, META_SETTING_KEEP_VERSIONS, "2"));
    CHECK_INT(0, meta_history_prune(&removed, store, 1));
    CHECK(removed > 0);
    for (int i = 0; i < 4; i++) {
        struct meta_version *versions = NULL;
        size_t count = 0;
        CHECK_INT(0, meta_version_list(&versions, &count, store, &nodes[i]));
        CHECK(count <= 2);
        for (size_t v = 0; v < count; v++) {
            uint8_t *content = NULL;
            size_t len = 0;
            CHECK_INT(0, meta_version_read(&content, &len, store, &nodes[i], versions[v].ts));
            CHECK(len == versions[v].size);
            free(content);
        }
        free(versions);
    }
    CHECK_INT(0, meta_store_check(store));

    /* Keep 1 day: versions older go, but never a node's newest. */
    CHECK_INT(0, meta_setting_set(store, META_SETTING_KEEP_VERSIONS, "0"));
    CHECK_INT(0, meta_setting_set(store, META_SETTING_KEEP_DAYS, "1"));
    CHECK_INT(0, meta_history_prune(&removed, store, (int64_t)3 * 86400 * 1000000000));
    for (int i = 0; i < 4; i++) {
        struct meta_version *versions = NULL;
        size_t count = 0;
        CHECK_INT(0, meta_version_list(&versions, &count, store, &nodes[i]));
        CHECK(count <= 1);
        free(versions);
    }
    int rc = meta_store_check(store);
    if (rc)
        fprintf(stderr, "check: %s\n", meta_store_errmsg(store));
    CHECK_INT(0, rc);
    CHECK_INT(0, meta_setting_set(store, META_SETTING_KEEP_DAYS, "-1"));
    CHECK_INT(-EINVAL, meta_history_prune(&removed, store, 0));
    free(data);
    meta_store_close(store);
    tu_rmtree(dir);
}

struct replay_ctx {
    uint64_t seen[8][2];
    size_t len;
};

static int collect_replayed(void *arg, const struct meta_op *op)
{
    struct replay_ctx *ctx = arg;
    if (ctx->len < 8) {
        ctx->seen[ctx->len][0] = op->replica;
        ctx->seen[ctx->len][1] = op->seq;
    }
    ctx->len++;
    return 0;
}

/* Ops of a kind (and of a node) beyond a version vector, by index range; the highest counter. */
static int count_missing(void *ctx, const uint8_t id[META_HASH_LEN], bool here)
{
    (void)id;
    if (!here)
        ++*(size_t *)ctx;
    return 0;
}

/*
 * Chunk indexes: a big version's list stands behind a few root refs, an
 * edit changes one index chunk per level, GC keeps index chunks of live
 * versions, and a missing index chunk is reported, not guessed.
 */
static void test_chunk_index(void)
{
    char *dir = tu_tempdir("index");
    struct meta_store *store = create_store(dir);
    struct meta_id node = make_file(store, 1);
    size_t len = 6u << 20; /* about 600 chunks: one index level */
    uint8_t *data = malloc(len);
    tu_fill(data, len, 7);
    struct crdt_ts ts = commit_content(store, &node, 1, data, len);
    struct meta_version version;
    struct meta_chunk_list list = {0}, root = {0}, full = {0};
    CHECK_INT(0, meta_version_get(&version, &list, store, &node, ts));
    CHECK(list.len > META_CHUNK_INDEX_FANOUT);
    uint8_t levels = 0;
    CHECK_INT(0, meta_chunk_index_build(&root, &levels, store, &list));
    CHECK(levels >= 1);
    CHECK(root.len <= META_CHUNK_INDEX_FANOUT);
    CHECK_INT(0, meta_chunk_index_expand(&full, store, &root, levels, NULL, NULL));
    CHECK(full.len == list.len && full.total == list.total);
    for (size_t i = 0; i < list.len; i++)
        CHECK(memcmp(full.refs[i].id, list.refs[i].id, META_HASH_LEN) == 0);
    meta_chunk_list_free(&full);

    /* GC keeps the index chunks of a version it keeps. */
    uint64_t removed = 99;
    CHECK_INT(0, meta_chunk_gc(&removed, store));
    CHECK_INT(0, removed);
    CHECK_INT(0, meta_chunk_index_expand(&full, store, &root, levels, NULL, NULL));
    meta_chunk_list_free(&full);

    /* One byte changed in the middle: the roots differ in at most two refs per level. */
    data[len / 2] ^= 0x5a;
    struct crdt_ts ts2 = commit_content(store, &node, 2, data, len);
    struct meta_chunk_list list2 = {0}, root2 = {0};
    CHECK_INT(0, meta_version_get(&version, &list2, store, &node, ts2));
    uint8_t levels2 = 0;
    CHECK_INT(0, meta_chunk_index_build(&root2, &levels2, store, &list2));
    CHECK_INT(levels, levels2);
    CHECK_INT(root.len, root2.len);
    size_t differ = 0;
    for (size_t i = 0; i < root.len; i++)
        differ += memcmp(root.refs[i].id, root2.refs[i].id, META_HASH_LEN) != 0;
    CHECK(differ >= 1 && differ <= 2);

    /* A missing index chunk: visited as not here, -ENOENT, nothing made up. */
    struct meta_store *other_dir_store = NULL;
    char *dir2 = tu_tempdir("index2");
    other_dir_store = create_store(dir2);
    size_t not_here = 0;
    CHECK_INT(-ENOENT, meta_chunk_index_expand(&full, other_dir_store, &root, levels, count_missing,
                                               &not_here));
    CHECK_INT(root.len, not_here);
    CHECK(full.len == 0);
    meta_store_close(other_dir_store);
    tu_rmtree(dir2);

    meta_chunk_list_free(&list);
    meta_chunk_list_free(&list2);
    meta_chunk_list_free(&root);
    meta_chunk_list_free(&root2);
    free(data);
    meta_store_close(store);
    tu_rmtree(dir);
}

static void test_oplog_replay(void)
{
    char *dir = tu_tempdir("replay");
    struct meta_store *store = create_store(dir);
    uint64_t a = 0x1111, b = 0xffffffff00000001ULL;
    uint8_t body[1] = {1};
    struct meta_op ops[] = {
        {.replica = a, .seq = 1, .counter = 1, .kind = META_OP_TREE, .node = tu_id(1)},
        {.replica = a, .seq = 2, .counter = 2, .kind = META_OP_TEXT, .node = tu_id(1)},
        {.replica = a, .seq = 3, .counter = 3, .kind = META_OP_TEXT, .node = tu_id(2)},
        {.replica = a, .seq = 4, .counter = 4, .kind = META_OP_TREE, .node = tu_id(2)},
        {.replica = b, .seq = 1, .counter = 9, .kind = META_OP_TEXT, .node = tu_id(1)},
        {.replica = b, .seq = 2, .counter = 10, .kind = META_OP_TREE, .node = tu_id(1)},
    };
    uint64_t counter = 99;
    CHECK_INT(0, meta_oplog_max_counter(&counter, store));
    CHECK_INT(0, counter);
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        ops[i].author = ops[i].replica;
        ops[i].body = body;
        ops[i].body_len = 1;
        CHECK_INT(0, meta_oplog_append(store, &ops[i]));
    }
    CHECK_INT(0, meta_oplog_max_counter(&counter, store));
    CHECK_INT(10, counter);
    /* Everything of a kind: each replica's in seq order. */
    struct crdt_vv covered = {0};
    struct replay_ctx got = {0};
    CHECK_INT(0, meta_oplog_replay(store, NULL, META_OP_TREE, &covered, collect_replayed, &got));
    CHECK_INT(3, got.len);
    /* Beyond {a:1}: a4 and b2 for the tree; for node 1's text, a2 and b1. */
    CHECK_INT(0, crdt_vv_raise(&covered, a, 1));
    memset(&got, 0, sizeof(got));
    CHECK_INT(0, meta_oplog_replay(store, NULL, META_OP_TREE, &covered, collect_replayed, &got));
    CHECK_INT(2, got.len);
    CHECK(got.seen[0][0] != got.seen[1][0]);
    memset(&got, 0, sizeof(got));
    struct meta_id node = tu_id(1);
    CHECK_INT(0, meta_oplog_replay(store, &node, META_OP_TEXT, &covered, collect_replayed, &got));
    CHECK_INT(2, got.len);
    /* Beyond {a:2, b:1}: nothing of node 1's text. */
    CHECK_INT(0, crdt_vv_raise(&covered, a, 2));
    CHECK_INT(0, crdt_vv_raise(&covered, b, 1));
    memset(&got, 0, sizeof(got));
    CHECK_INT(0, meta_oplog_replay(store, &node, META_OP_TEXT, &covered, collect_replayed, &got));
    CHECK_INT(0, got.len);
    crdt_vv_free(&covered);
    meta_store_close(store);
    tu_rmtree(dir);
}

/*
 * The version vector and the inode counter are written when a change
 * commits: inside a transaction the vector still shows the new ops, a
 * rollback forgets them, and after reopening the rows say what committed.
 */
static void test_deferred_rows(void)
{
    char *dir = tu_tempdir("deferred");
    struct meta_store *store = create_store(dir);
    uint64_t a = 0x2222;
    struct meta_op op = {
        .replica = a, .counter = 1, .kind = META_OP_TREE, .node = tu_id(1), .author = a};
    CHECK_INT(0, meta_store_txn_begin(store));
    for (op.seq = 1; op.seq <= 3; op.seq++)
        CHECK_INT(0, meta_oplog_append(store, &op));
    struct crdt_vv vv;
    CHECK_INT(0, meta_vv_load(&vv, store));
    CHECK_INT(3, crdt_vv_get(&vv, a));
    crdt_vv_free(&vv);
    struct meta_node node = tu_node(tu_id(7), NULL, "", META_NODE_DIR);
    uint64_t ino = 0;
    CHECK_INT(0, meta_node_put(&ino, store, &node));
    CHECK_INT(2, ino);
    meta_store_txn_rollback(store);
    CHECK_INT(0, meta_vv_load(&vv, store));
    CHECK_INT(0, crdt_vv_get(&vv, a));
    crdt_vv_free(&vv);
    /* The rolled-back ops left no trace: seq 1 is next again, and so is the inode. */
    op.seq = 2;
    CHECK_INT(-EINVAL, meta_oplog_append(store, &op));
    op.seq = 1;
    CHECK_INT(0, meta_oplog_append(store, &op));
    CHECK_INT(0, meta_node_put(&ino, store, &node));
    CHECK_INT(2, ino);
    /* A transaction that commits writes both rows. */
    CHECK_INT(0, meta_store_txn_begin(store));
    op.seq = 2;
    CHECK_INT(0, meta_oplog_append(store, &op));
    node.id = tu_id(8);
    CHECK_INT(0, meta_node_put(&ino, store, &node));
    CHECK_INT(3, ino);
    CHECK_INT(0, meta_store_txn_commit(store));
    meta_store_close(store);
    store = reopen(dir);
    CHECK_INT(0, meta_vv_load(&vv, store));
    CHECK_INT(2, crdt_vv_get(&vv, a));
    crdt_vv_free(&vv);
    node.id = tu_id(9);
    CHECK_INT(0, meta_node_put(&ino, store, &node));
    CHECK_INT(4, ino);
    /* An inode number asked for moves the counter past it. */
    node.id = tu_id(10);
    node.ino = 40;
    CHECK_INT(0, meta_node_put(&ino, store, &node));
    CHECK_INT(40, ino);
    node.id = tu_id(11);
    node.ino = 0;
    CHECK_INT(0, meta_node_put(&ino, store, &node));
    CHECK_INT(41, ino);
    CHECK_INT(0, meta_store_check(store));
    meta_store_close(store);
    tu_rmtree(dir);
}

/* Checkpoints: round trip, replacement, and a damaged one refused as such. */
static void test_checkpoints(void)
{
    char *dir = tu_tempdir("checkpoint");
    struct meta_store *store = create_store(dir);
    struct meta_checkpoint cp;
    CHECK_INT(-ENOENT, meta_checkpoint_get(&cp, store, "tree"));
    struct crdt_vv covered = {0};
    CHECK_INT(0, crdt_vv_raise(&covered, 5, 10));
    CHECK_INT(0, crdt_vv_raise(&covered, 0xffffffff00000001ULL, 3));
    CHECK_INT(0, meta_checkpoint_put(store, "tree", &covered, 77, "state one", 9));
    CHECK_INT(0, meta_checkpoint_put(store, "tree", &covered, 78, "state two!", 10));
    CHECK_INT(0, meta_checkpoint_get(&cp, store, "tree"));
    CHECK_INT(78, cp.counter);
    CHECK(cp.state_len == 10 && memcmp(cp.state, "state two!", 10) == 0);
    CHECK(crdt_vv_compare(&cp.covered, &covered) == CRDT_VV_EQUAL);
    meta_checkpoint_clear(&cp);
    meta_store_close(store);

    /* One flipped byte of the state, of the vector, or of the counter: refused. */
    const char *damage[] = {
        "UPDATE checkpoints SET state = CAST('state twO!' AS BLOB);",
        "UPDATE checkpoints SET counter = 79;",
        "UPDATE checkpoints SET covered = X'0105';",
        "UPDATE checkpoints SET digest = zeroblob(32);",
    };
    char path[4096];
    snprintf(path, sizeof(path), "%s/store.db", dir);
    for (size_t i = 0; i < sizeof(damage) / sizeof(damage[0]); i++) {
        store = reopen(dir);
        CHECK_INT(0, meta_checkpoint_put(store, "tree", &covered, 78, "state two!", 10));
        meta_store_close(store);
        sqlite3 *db = NULL;
        CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
        CHECK_INT(SQLITE_OK, sqlite3_exec(db, damage[i], NULL, NULL, NULL));
        sqlite3_close(db);
        store = reopen(dir);
        CHECK_INT(-EBADMSG, meta_checkpoint_get(&cp, store, "tree"));
        CHECK(strstr(meta_store_errmsg(store), "damaged") != NULL);
        meta_store_close(store);
    }
    crdt_vv_free(&covered);
    tu_rmtree(dir);
}

/* A text state with what it covers (v2), and one without (complete, as v1 wrote them). */
static void test_text_coverage(void)
{
    char *dir = tu_tempdir("textcov");
    struct meta_store *store = create_store(dir);
    struct meta_node node = tu_node(tu_id(3), NULL, "", META_NODE_FILE);
    CHECK_INT(0, meta_node_put(NULL, store, &node));
    CHECK_INT(0, meta_text_put(store, &node.id, "abc", 3));
    uint8_t *state = NULL;
    size_t len = 0;
    struct crdt_vv covered = {0};
    bool complete = false;
    CHECK_INT(0, meta_text_get_covered(&state, &len, &covered, &complete, store, &node.id));
    CHECK(complete && covered.len == 0 && len == 3);
    free(state);
    struct crdt_vv want = {0};
    CHECK_INT(0, crdt_vv_raise(&want, 9, 4));
    CHECK_INT(0, meta_text_put_covered(store, &node.id, "abcd", 4, &want));
    CHECK_INT(0, meta_text_get_covered(&state, &len, &covered, &complete, store, &node.id));
    CHECK(!complete && len == 4 && memcmp(state, "abcd", 4) == 0);
    CHECK(crdt_vv_compare(&covered, &want) == CRDT_VV_EQUAL);
    free(state);
    crdt_vv_free(&covered);
    crdt_vv_free(&want);
    struct meta_id missing = tu_id(4);
    CHECK_INT(-ENOENT, meta_text_get_covered(NULL, NULL, NULL, NULL, store, &missing));
    meta_store_close(store);
    tu_rmtree(dir);
}

/* Working copies opened with O_TRUNC: bytes dropped, or only the times set when there are none. */
static void test_wc_truncate(void)
{
    char *dir = tu_tempdir("wctrunc");
    struct meta_store *store = create_store(dir);
    struct meta_id id = tu_id(5);
    int fd = -1;
    CHECK_INT(0, meta_wc_open(&fd, store, &id, O_WRONLY | O_CREAT | O_EXCL));
    close(fd);
    CHECK_INT(-EEXIST, meta_wc_open(&fd, store, &id, O_WRONLY | O_CREAT | O_EXCL));
    char path[4096];
    CHECK_INT(0, meta_wc_path(path, sizeof(path), store, &id));
    struct timespec old[2] = {{1000, 0}, {1000, 0}};
    CHECK_INT(0, utimensat(AT_FDCWD, path, old, 0));
    CHECK_INT(0, meta_wc_open(&fd, store, &id, O_WRONLY | O_CREAT | O_TRUNC));
    close(fd);
    struct stat st;
    CHECK_INT(0, stat(path, &st));
    CHECK(st.st_size == 0 && st.st_mtim.tv_sec > 1000);
    CHECK_INT(0, tu_write_file(path, "hello", 5));
    CHECK_INT(0, meta_wc_open(&fd, store, &id, O_RDWR | O_TRUNC));
    close(fd);
    CHECK_INT(0, stat(path, &st));
    CHECK_INT(0, st.st_size);
    /* A fan-out directory removed behind the store's back is made again. */
    struct meta_id other = tu_id(0xab000006);
    char fanout[4096];
    CHECK_INT(0, meta_wc_path(fanout, sizeof(fanout), store, &other));
    CHECK_INT(0, meta_wc_open(&fd, store, &other, O_WRONLY | O_CREAT));
    close(fd);
    CHECK_INT(0, unlink(fanout));
    *strrchr(fanout, '/') = '\0';
    CHECK_INT(0, rmdir(fanout));
    CHECK_INT(0, meta_wc_open(&fd, store, &other, O_WRONLY | O_CREAT));
    close(fd);
    meta_store_close(store);
    tu_rmtree(dir);
}

/*
 * A transaction bigger than the WAL buffer (meta/walbuf.c writes it out in
 * pieces) is whole on disk when its commit returns: a process that exits
 * right after, closing nothing, loses none of it.
 */
static void test_big_commit_survives_exit(void)
{
    char *dir = tu_tempdir("bigcommit");
    struct meta_store *store = create_store(dir);
    struct meta_node node = tu_node(tu_id(1), NULL, "", META_NODE_FILE);
    CHECK_INT(0, meta_node_put(NULL, store, &node));
    meta_store_close(store);
    size_t len = 5u << 20;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct meta_err err;
        uint8_t *data = malloc(len);
        tu_fill(data, len, 9);
        if (meta_store_open(&store, &err, dir) != 0 || meta_store_set_lazy(store, true) != 0 ||
            meta_wc_mark_dirty(store, &node.id) != 0 ||
            meta_wc_replace(store, &node.id, data, len) != 0)
            _exit(1);
        struct meta_version version = {.node = node.id, .ts = {1, 1}, .author = 1, .time_ns = 1};
        uint64_t size = 0;
        _exit(meta_version_commit_wc(&size, store, &version) == 0 && size == len ? 0 : 1);
    }
    int status = 0;
    CHECK_INT(pid, waitpid(pid, &status, 0));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    store = reopen(dir);
    struct meta_version *versions = NULL;
    size_t count = 0;
    CHECK_INT(0, meta_version_list(&versions, &count, store, &node.id));
    CHECK_INT(1, count);
    if (count == 1)
        CHECK(versions[0].size == len);
    free(versions);
    CHECK_INT(0, meta_store_check(store));
    meta_store_close(store);
    tu_rmtree(dir);
}

/*
 * meta/walbuf.c gathers a transaction's WAL writes and writes them out in
 * 1 MiB pieces: whatever the transaction's size, when COMMIT returns the WAL
 * file must end with the whole commit frame (its header says so), not short
 * of it. With no checkpoint the WAL only grows, so its end is the last
 * commit's; transactions of 480..530 pages (frames of 24 + 2048 bytes) put
 * the commit frame on either side of the 1 MiB mark (507 frames end past it).
 */
static void test_walbuf_commit_boundary(void)
{
    char *dir = tu_tempdir("walbuf");
    struct meta_store *store = create_store(dir); /* registers the VFS */
    meta_store_close(store);
    char path[4096], wal[4096];
    snprintf(path, sizeof(path), "%s/scratch.db", dir);
    snprintf(wal, sizeof(wal), "%s/scratch.db-wal", dir);
    sqlite3 *db = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                         "weft-walbuf"));
    CHECK_INT(SQLITE_OK, sqlite3_exec(db,
                                      "PRAGMA page_size = 2048; PRAGMA locking_mode = EXCLUSIVE;"
                                      "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                                      "PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (v BLOB);",
                                      NULL, NULL, NULL));
    sqlite3_stmt *insert = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_prepare_v2(db, "INSERT INTO t VALUES (randomblob(1900));", -1,
                                            &insert, NULL));
    int fd = open(wal, O_RDONLY);
    CHECK(fd >= 0);
    for (int rows = 480; rows <= 530 && fd >= 0; rows++) {
        CHECK_INT(SQLITE_OK, sqlite3_exec(db, "BEGIN;", NULL, NULL, NULL));
        int done = 0;
        for (int i = 0; i < rows; i++) {
            done += sqlite3_step(insert) == SQLITE_DONE;
            sqlite3_reset(insert);
        }
        CHECK_INT(rows, done);
        CHECK_INT(SQLITE_OK, sqlite3_exec(db, "COMMIT;", NULL, NULL, NULL));
        /* The file as the kernel has it: whole frames, the last one a commit frame. */
        struct stat st;
        CHECK_INT(0, fstat(fd, &st));
        off_t frame = 24 + 2048;
        CHECK((st.st_size - 32) % frame == 0);
        uint8_t header[24];
        CHECK_INT(24, pread(fd, header, 24, st.st_size - frame));
        CHECK((header[4] | header[5] | header[6] | header[7]) != 0);
        CHECK_INT(SQLITE_OK, sqlite3_exec(db, "DELETE FROM t;", NULL, NULL, NULL));
    }
    if (fd >= 0)
        close(fd);
    sqlite3_finalize(insert);
    sqlite3_close(db);
    tu_rmtree(dir);
}

/*
 * A transaction bigger than SQLite's page cache spills pages to the WAL
 * before it commits, rewrites some of them in place, and at commit rewrites
 * the checksums of the frames after the first one it rewrote. All of that
 * must be in the file when COMMIT returns: a child that exits right after
 * leaves a database that holds the transaction.
 */
static void test_walbuf_spilled_commit(void)
{
    char *dir = tu_tempdir("walspill");
    struct meta_store *store = create_store(dir); /* registers the VFS */
    meta_store_close(store);
    char path[4096];
    snprintf(path, sizeof(path), "%s/scratch.db", dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3 *db = NULL;
        int rc =
            sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "weft-walbuf");
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db,
                              "PRAGMA page_size = 2048; PRAGMA locking_mode = EXCLUSIVE;"
                              "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                              "PRAGMA cache_size = 8; CREATE TABLE t (v BLOB);"
                              "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                              "SELECT i + 1 FROM n WHERE i < 300) "
                              "INSERT INTO t SELECT randomblob(1900) FROM n;"
                              "UPDATE t SET v = randomblob(1900); COMMIT;",
                              NULL, NULL, NULL);
        _exit(rc == SQLITE_OK ? 0 : 1); /* closing nothing */
    }
    int status = 0;
    CHECK_INT(pid, waitpid(pid, &status, 0));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sqlite3 *db = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
    sqlite3_stmt *stmt = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_prepare_v2(db, "SELECT count(*) FROM t;", -1, &stmt, NULL));
    CHECK_INT(SQLITE_ROW, sqlite3_step(stmt));
    CHECK_INT(300, sqlite3_column_int(stmt, 0));
    sqlite3_finalize(stmt);
    CHECK_INT(SQLITE_OK, sqlite3_prepare_v2(db, "PRAGMA integrity_check;", -1, &stmt, NULL));
    CHECK_INT(SQLITE_ROW, sqlite3_step(stmt));
    CHECK_STR("ok", (const char *)sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    tu_rmtree(dir);
}

int main(void)
{
    test_create_open_identity();
    test_lock();
    test_refuse_bad_databases();
    test_settings_and_txn();
    test_devices();
    test_oplog();
    test_nodes_xattrs_text();
    test_versions_and_restore();
    test_retention_and_gc();
    test_chunk_index();
    test_oplog_replay();
    test_deferred_rows();
    test_checkpoints();
    test_text_coverage();
    test_wc_truncate();
    test_big_commit_survives_exit();
    test_walbuf_commit_boundary();
    test_walbuf_spilled_commit();
    return test_finish("store");
}
