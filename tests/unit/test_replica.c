/*
 * Unit tests for meta/replica: two replicas in one process exchange ops
 * through the API (ops since a version vector, apply remote, chunks fetched
 * from the other store) and must converge: tree, text and binary changes,
 * and the tree rows of DESIGN.md's concurrency table.
 */
#include "replica_peers.h"

#include <dirent.h>
#include <sqlite3.h>
#include <sys/wait.h>

static void test_tree_and_text_sync(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    struct meta_attr attr;
    CHECK_INT(0, meta_replica_mkdir(&attr, a.replica, META_INO_ROOT, "proj", 0755, 0, 0));
    write_file(&a, "proj/notes.txt", "the cat", 7);
    exchange(&a, &b);
    check_content(&b, "proj/notes.txt", "the cat");
    /* Concurrent saves of one text file merge at character level. */
    write_file(&a, "proj/notes.txt", "the black cat", 13);
    write_file(&b, "proj/notes.txt", "the cat sat", 11);
    exchange(&a, &b);
    check_content(&a, "proj/notes.txt", "the black cat sat");
    check_content(&b, "proj/notes.txt", "the black cat sat");
    /* History on both sides. */
    struct meta_log_entry *log = NULL;
    size_t count = 0;
    CHECK_INT(0, meta_replica_log(&log, &count, b.replica, resolve(&b, "proj/notes.txt")));
    CHECK(count >= 2);
    free(log);
    peer_free(&a);
    peer_free(&b);
}

static void test_line_edits_merge(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    char *base = malloc(20000), *mine = malloc(20000), *theirs = malloc(20000);
    base[0] = mine[0] = theirs[0] = '\0';
    for (int i = 0; i < 1000; i++) {
        char line[32];
        snprintf(line, sizeof(line), "line %d\n", i);
        strcat(base, line);
        strcat(mine, i == 100 ? "line 100 edited on laptop\n" : line);
        strcat(theirs, i == 900 ? "line 900 edited on desktop\n" : line);
    }
    write_file(&a, "big.txt", base, strlen(base));
    exchange(&a, &b);
    write_file(&a, "big.txt", mine, strlen(mine));
    write_file(&b, "big.txt", theirs, strlen(theirs));
    exchange(&a, &b);
    char *got_a = read_file(&a, "big.txt", NULL), *got_b = read_file(&b, "big.txt", NULL);
    CHECK_STR(got_a, got_b);
    CHECK(strstr(got_a, "line 100 edited on laptop\n") != NULL);
    CHECK(strstr(got_a, "line 900 edited on desktop\n") != NULL);
    CHECK(strstr(got_a, "line 100\n") == NULL);
    CHECK(strstr(got_a, "line 999\n") != NULL);
    free(got_a);
    free(got_b);
    free(base);
    free(mine);
    free(theirs);
    peer_free(&a);
    peer_free(&b);
}

static void test_binary_sync(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    size_t len = 200000;
    uint8_t *blob = malloc(len);
    uint64_t rng = 42;
    for (size_t i = 0; i < len; i++)
        blob[i] = (uint8_t)test_rand(&rng);
    blob[10] = 0; /* certainly not text */
    write_file(&a, "photo.raw", blob, len);
    exchange(&a, &b);
    size_t got_len = 0;
    char *got = read_file(&b, "photo.raw", &got_len);
    CHECK_INT(len, got_len);
    CHECK(got_len == len && memcmp(got, blob, len) == 0);
    free(got);
    /* Concurrent binary versions: both replicas show the same (newest) one. */
    blob[0] ^= 1;
    write_file(&a, "photo.raw", blob, len);
    blob[0] ^= 3;
    write_file(&b, "photo.raw", blob, len);
    exchange(&a, &b);
    size_t len_a = 0, len_b = 0;
    char *got_a = read_file(&a, "photo.raw", &len_a), *got_b = read_file(&b, "photo.raw", &len_b);
    CHECK(len_a == len_b && memcmp(got_a, got_b, len_a) == 0);
    free(got_a);
    free(got_b);
    free(blob);
    peer_free(&a);
    peer_free(&b);
}

static void test_tree_rows(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    struct meta_attr attr;
    char names[1024];
    /* Both mkdir the same path: one directory with both sides' children. */
    CHECK_INT(0, meta_replica_mkdir(&attr, a.replica, META_INO_ROOT, "shared", 0755, 0, 0));
    CHECK_INT(0, meta_replica_mkdir(&attr, b.replica, META_INO_ROOT, "shared", 0755, 0, 0));
    write_file(&a, "shared/from-a", "a", 1);
    write_file(&b, "shared/from-b", "b", 1);
    /* Both create a file with one name: both kept, one under a conflict name. */
    introduce(&a, &b);
    write_file(&a, "report.txt", "A's report", 10);
    write_file(&b, "report.txt", "B's report", 10);
    exchange(&a, &b);
    /* Which one was born first decides: the same on both, and the loser names its device. */
    char names_b[1024];
    listing(&a, "", names, sizeof(names));
    listing(&b, "", names_b, sizeof(names_b));
    CHECK_STR(names, names_b);
    bool a_won = strstr(names, "report (conflict desktop).txt|") != NULL;
    CHECK_STR(a_won ? "report (conflict desktop).txt|report.txt|shared|"
                    : "report (conflict laptop).txt|report.txt|shared|",
              names);
    listing(&b, "shared", names, sizeof(names));
    CHECK_STR("from-a|from-b|", names);
    check_content(&b, "report.txt", a_won ? "A's report" : "B's report");
    check_content(&a, a_won ? "report (conflict desktop).txt" : "report (conflict laptop).txt",
                  a_won ? "B's report" : "A's report");
    /* A deletes a directory while B creates a file in it: the file is not lost. */
    CHECK_INT(0, meta_replica_unlink(a.replica, resolve(&a, "shared"), "from-a"));
    CHECK_INT(0, meta_replica_unlink(a.replica, resolve(&a, "shared"), "from-b"));
    CHECK_INT(0, meta_replica_rmdir(a.replica, META_INO_ROOT, "shared"));
    write_file(&b, "shared/late.txt", "still here", 10);
    exchange(&a, &b);
    check_content(&a, "shared/late.txt", "still here");
    listing(&a, "shared", names, sizeof(names));
    CHECK_STR("late.txt|", names);
    peer_free(&a);
    peer_free(&b);
}

static void test_restore_is_an_edit(void)
{
    struct peer a;
    peer_init(&a, "laptop");
    write_file(&a, "doc.txt", "version one\n", 12);
    write_file(&a, "doc.txt", "version two\n", 12);
    struct meta_log_entry *log = NULL;
    size_t count = 0;
    uint64_t ino = resolve(&a, "doc.txt");
    CHECK_INT(0, meta_replica_log(&log, &count, a.replica, ino));
    CHECK_INT(2, count);
    if (count == 2) {
        CHECK_INT(0, meta_replica_restore(a.replica, ino, log[1].ts));
        check_content(&a, "doc.txt", "version one\n");
    }
    free(log);
    CHECK_INT(0, meta_replica_log(&log, &count, a.replica, ino));
    CHECK_INT(3, count);
    free(log);
    peer_free(&a);
}

/* The working copy a pinned() test callback keeps: one file, by device and inode. */
struct pin {
    dev_t dev;
    ino_t ino;
    unsigned asked;
};

static bool pinned(void *ctx, dev_t dev, ino_t ino)
{
    struct pin *pin = ctx;
    pin->asked++;
    return dev == pin->dev && ino == pin->ino;
}

/* A descriptor held on a pinned working copy sees a restore and a remote edit. */
static void test_pinned_working_copy(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    introduce(&a, &b);
    write_text(&a, "held.txt", "first line\n");
    write_text(&a, "held.txt", "first line\nsecond line\n");
    exchange(&a, &b);
    uint64_t ino = resolve(&a, "held.txt");
    int held = -1;
    CHECK_INT(0, meta_replica_open_file(&held, a.replica, ino, O_RDONLY));
    struct stat before;
    CHECK_INT(0, fstat(held, &before));
    struct pin pin = {before.st_dev, before.st_ino, 0};
    meta_replica_set_wc_pinned(a.replica, pinned, &pin);

    struct meta_log_entry *log = NULL;
    size_t count = 0;
    CHECK_INT(0, meta_replica_log(&log, &count, a.replica, ino));
    CHECK_INT(2, count);
    if (count == 2)
        CHECK_INT(0, meta_replica_restore(a.replica, ino, log[1].ts));
    free(log);
    char buf[64] = "";
    CHECK_INT(11, (int)pread(held, buf, sizeof(buf) - 1, 0));
    CHECK_STR("first line\n", buf);

    /* A remote edit reaches the held descriptor too, and the file keeps its inode. */
    exchange(&a, &b);
    write_text(&b, "held.txt", "first line\nfrom desktop\n");
    exchange(&a, &b);
    check_content(&a, "held.txt", "first line\nfrom desktop\n");
    memset(buf, 0, sizeof(buf));
    CHECK_INT(24, (int)pread(held, buf, sizeof(buf) - 1, 0));
    CHECK_STR("first line\nfrom desktop\n", buf);
    int again = -1;
    CHECK_INT(0, meta_replica_open_file(&again, a.replica, ino, O_RDONLY));
    struct stat after;
    CHECK_INT(0, fstat(again, &after));
    CHECK(after.st_ino == before.st_ino && after.st_dev == before.st_dev);
    CHECK(pin.asked >= 2);
    close(again);
    close(held);

    /* Unpinned, a replacement is a new file again (atomic rename). */
    meta_replica_set_wc_pinned(a.replica, NULL, NULL);
    write_text(&b, "held.txt", "third\n");
    exchange(&a, &b);
    CHECK_INT(0, meta_replica_open_file(&again, a.replica, ino, O_RDONLY));
    CHECK_INT(0, fstat(again, &after));
    CHECK(after.st_ino != before.st_ino);
    close(again);
    check_content(&a, "held.txt", "third\n");
    peer_free(&a);
    peer_free(&b);
}

/* Files in DIR/files/tmp of a peer's share. */
static int tmp_entries(struct peer *peer)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/share/files/tmp", peer->dir);
    DIR *dir = opendir(path);
    int count = 0;
    for (struct dirent *entry; dir && (entry = readdir(dir));)
        count += entry->d_name[0] != '.';
    if (dir)
        closedir(dir);
    return count;
}

/* New files take working copies made ahead; they look new; a reopen drops the rest. */
static void test_working_copy_pool(void)
{
    struct peer a;
    peer_init(&a, "laptop");
    CHECK_INT(0, (int)meta_replica_wc_pool_level(a.replica));
    CHECK_INT(3, meta_replica_wc_pool_fill(a.replica, 3));
    CHECK_INT(0, meta_replica_wc_pool_fill(a.replica, 3));
    CHECK_INT(3, (int)meta_replica_wc_pool_level(a.replica));
    CHECK_INT(3, tmp_entries(&a));
    /* Made long ago, as far as its times say: the new file must not show them. */
    char pooled[4300];
    snprintf(pooled, sizeof(pooled), "%s/share/files/tmp/pool-0", a.dir);
    struct timespec old[2] = {{946684800, 0}, {946684800, 0}};
    CHECK_INT(0, utimensat(AT_FDCWD, pooled, old, 0));
    struct meta_attr attr;
    CHECK_INT(
        0, meta_replica_mknod(&attr, a.replica, META_INO_ROOT, "new.txt", S_IFREG | 0644, 0, 0, 0));
    CHECK_INT(2, (int)meta_replica_wc_pool_level(a.replica));
    CHECK(attr.mtime_ns > (int64_t)1600000000 * 1000000000);
    CHECK_INT(0, (int)attr.size);
    write_text(&a, "new.txt", "pooled\n");
    check_content(&a, "new.txt", "pooled\n");
    /* Pool empty: files are made as before. */
    write_text(&a, "two.txt", "two\n");
    write_text(&a, "three.txt", "three\n");
    CHECK_INT(0, (int)meta_replica_wc_pool_level(a.replica));
    write_text(&a, "four.txt", "four\n");
    check_content(&a, "four.txt", "four\n");
    CHECK_INT(2, meta_replica_wc_pool_fill(a.replica, 2));
    peer_reopen(&a);
    CHECK_INT(0, tmp_entries(&a));
    CHECK_INT(0, (int)meta_replica_wc_pool_level(a.replica));
    check_content(&a, "new.txt", "pooled\n");
    check_content(&a, "three.txt", "three\n");
    peer_free(&a);
}

/* ---------- checkpoints ---------- */

/*
 * Runs `work` on the peer's share in a child process that then dies without
 * closing anything (as kill -9 would leave it: no checkpoint at close), and
 * reopens the share here. The parent's replica is closed meanwhile.
 */
static void in_child_then_die(struct peer *peer, void (*work)(struct peer *peer))
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/share", peer->dir);
    meta_replica_close(peer->replica);
    peer->replica = NULL;
    fflush(NULL);
    int failures = test_failures;
    pid_t pid = fork();
    if (pid == 0) {
        struct meta_err err;
        if (meta_replica_open(&peer->replica, &err, path) != 0)
            _exit(2);
        work(peer);
        _exit(test_failures > failures ? 1 : 0);
    }
    int status = 0;
    CHECK_INT(pid, waitpid(pid, &status, 0));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "child: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    struct meta_err err;
    int rc = meta_replica_open(&peer->replica, &err, path);
    if (rc) {
        fprintf(stderr, "reopen: %s\n", err.msg);
        exit(2);
    }
}

static void make_dirs(struct peer *peer, const char *prefix, int count)
{
    for (int i = 0; i < count; i++) {
        char name[64];
        struct meta_attr attr;
        snprintf(name, sizeof(name), "%s%d", prefix, i);
        CHECK_INT(0, meta_replica_mkdir(&attr, peer->replica, META_INO_ROOT, name, 0755, 0, 0));
        struct meta_attr again;
        CHECK_INT(0, meta_replica_getattr(&again, peer->replica, attr.ino));
        CHECK(attr.mode == again.mode && attr.nlink == again.nlink && attr.nlink > 0);
    }
}

static void work_after_checkpoint(struct peer *peer)
{
    /* Twelve tree ops with a checkpoint every five: the last two are only in the log. */
    meta_replica_set_checkpoint_interval(peer->replica, 5);
    make_dirs(peer, "late", 12);
    CHECK_INT(0, meta_replica_unlink(peer->replica, META_INO_ROOT, "file"));
}

/* Opening loads the tree checkpoint and replays only the tree ops logged after it. */
static void test_tree_checkpoint(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    make_dirs(&a, "dir", 20);
    write_file(&a, "file", "x", 1);
    /* Remote ops too: they are in the log like local ones. */
    make_dirs(&b, "remote", 3);
    exchange(&a, &b);
    char before[1024], after[1024];
    listing(&a, "", before, sizeof(before));

    /* Close writes a checkpoint: nothing to replay. */
    peer_reopen(&a);
    struct meta_replica_info info;
    meta_replica_info(&info, a.replica);
    CHECK(info.tree_from_checkpoint);
    CHECK_INT(0, info.replayed_tree_ops);
    CHECK_STR("", info.checkpoint_note);
    CHECK_INT(0, meta_replica_check(a.replica));
    listing(&a, "", after, sizeof(after));
    CHECK_STR(before, after);

    /* Tree ops after the last checkpoint are replayed; the tree is the log's. */
    in_child_then_die(&a, work_after_checkpoint);
    meta_replica_info(&info, a.replica);
    CHECK(info.tree_from_checkpoint);
    CHECK_INT(3, info.replayed_tree_ops); /* late10, late11, and the unlink */
    if (meta_replica_check(a.replica) != 0)
        fprintf(stderr, "check: %s\n", meta_replica_errmsg(a.replica));
    CHECK_INT(0, meta_replica_check(a.replica));
    listing(&a, "", after, sizeof(after));
    CHECK(strstr(after, "late11|") != NULL && strstr(after, "late0|") != NULL);
    CHECK(strstr(after, "file|") == NULL);
    /* Life goes on from there: new ops, a sync, the other side agrees. */
    make_dirs(&a, "next", 2);
    exchange(&a, &b);
    char theirs[1024];
    listing(&a, "", after, sizeof(after));
    listing(&b, "", theirs, sizeof(theirs));
    CHECK_STR(after, theirs);
    CHECK_INT(0, meta_replica_check(b.replica));
    peer_free(&a);
    peer_free(&b);
}

static void damage_checkpoint(struct peer *peer, const char *sql)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/share/store.db", peer->dir);
    meta_replica_close(peer->replica);
    peer->replica = NULL;
    sqlite3 *db = NULL;
    CHECK_INT(SQLITE_OK, sqlite3_open(path, &db));
    char *message = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &message);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, message);
    CHECK_INT(SQLITE_OK, rc);
    CHECK_INT(1, sqlite3_changes(db));
    sqlite3_free(message);
    sqlite3_close(db);
    snprintf(path, sizeof(path), "%s/share", peer->dir);
    struct meta_err err;
    if (meta_replica_open(&peer->replica, &err, path) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        exit(2);
    }
}

/*
 * Closes the replica, writes a tree checkpoint through the store's API (so
 * its digest is right) covering the log plus, if `extra` is not 0, five ops
 * of replica `extra`, and reopens.
 */
static void put_checkpoint(struct peer *peer, uint64_t extra, const void *state, size_t len)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/share", peer->dir);
    meta_replica_close(peer->replica);
    struct meta_err err;
    struct meta_store *store = NULL;
    CHECK_INT(0, meta_store_open(&store, &err, path));
    struct crdt_vv covered = {0};
    CHECK_INT(0, meta_vv_load(&covered, store));
    if (extra)
        CHECK_INT(0, crdt_vv_raise(&covered, extra, 5));
    CHECK_INT(0, meta_checkpoint_put(store, "tree", &covered, 1, state, len));
    crdt_vv_free(&covered);
    meta_store_close(store);
    if (meta_replica_open(&peer->replica, &err, path) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        exit(2);
    }
}

/* A checkpoint that cannot be used is ignored, said so, and the whole log replayed. */
static void test_bad_checkpoint(void)
{
    struct peer a;
    peer_init(&a, "laptop");
    make_dirs(&a, "dir", 10);
    char before[1024], after[1024];
    listing(&a, "", before, sizeof(before));
    const struct {
        const char *sql;
        const char *note;
    } cases[] = {
        /* A flipped byte: the digest no longer matches. */
        {"UPDATE checkpoints SET state = CAST(substr(state, 1, 20) || 'x' || substr(state, 22) "
         "AS BLOB) WHERE name = 'tree';",
         "damaged"},
        /* It claims ops the log does not hold (a store put back from an older copy). */
        {"DELETE FROM checkpoints; INSERT INTO checkpoints VALUES ('tree', X'01ff0163', 1, X'00', "
         "zeroblob(32));",
         "damaged"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        damage_checkpoint(&a, cases[i].sql);
        struct meta_replica_info info;
        meta_replica_info(&info, a.replica);
        CHECK(!info.tree_from_checkpoint);
        CHECK(strstr(info.checkpoint_note, cases[i].note) != NULL);
        CHECK(strstr(info.checkpoint_note, "rebuilt from the op log") != NULL);
        CHECK_INT(10, info.replayed_tree_ops); /* ten mkdirs */
        CHECK_INT(0, meta_replica_check(a.replica));
        listing(&a, "", after, sizeof(after));
        CHECK_STR(before, after);
        /* The next close writes a good one. */
        peer_reopen(&a);
        meta_replica_info(&info, a.replica);
        CHECK(info.tree_from_checkpoint);
        CHECK_INT(0, info.replayed_tree_ops);
    }
    /* Intact (written through the API), but covering more than the log holds. */
    put_checkpoint(&a, 0x1234, "x", 1);
    struct meta_replica_info info;
    meta_replica_info(&info, a.replica);
    CHECK(!info.tree_from_checkpoint);
    CHECK(strstr(info.checkpoint_note, "covers ops the log does not hold") != NULL);
    CHECK_INT(0, meta_replica_check(a.replica));
    /* Intact and covering the log, but not a tree snapshot. */
    put_checkpoint(&a, 0, "x", 1);
    meta_replica_info(&info, a.replica);
    CHECK(!info.tree_from_checkpoint);
    CHECK(strstr(info.checkpoint_note, "does not load") != NULL);
    CHECK_INT(0, meta_replica_check(a.replica));
    listing(&a, "", after, sizeof(after));
    CHECK_STR(before, after);
    peer_free(&a);
}

static void work_text_edits(struct peer *peer)
{
    /* More edits than a text state waits for, then a few that only the log holds. */
    char text[64];
    for (int i = 0; i < 40; i++) {
        snprintf(text, sizeof(text), "line one\nedit %d\nline three\n", i);
        write_file(peer, "notes.txt", text, strlen(text));
    }
    CHECK_INT(0, meta_replica_check(peer->replica));
}

/* Text states are written now and then; the ops after one are replayed when the file is loaded. */
static void test_text_state_replay(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    write_text(&a, "notes.txt", "line one\nline two\nline three\n");
    in_child_then_die(&a, work_text_edits);
    check_content(&a, "notes.txt", "line one\nedit 39\nline three\n");
    /* The next commit diffs against the replayed document: one small op, merging as usual. */
    exchange(&a, &b);
    write_text(&a, "notes.txt", "line one\nedit 39\nline three\nfrom a\n");
    check_content(&a, "notes.txt", "line one\nedit 39\nline three\nfrom a\n");
    CHECK_INT(0, meta_replica_check(a.replica));
    write_text(&b, "notes.txt", "from b\nline one\nedit 39\nline three\n");
    pull(&b, &a);
    check_content(&b, "notes.txt", "from b\nline one\nedit 39\nline three\nfrom a\n");
    exchange(&a, &b);
    check_content(&a, "notes.txt", "from b\nline one\nedit 39\nline three\nfrom a\n");
    check_content(&b, "notes.txt", "from b\nline one\nedit 39\nline three\nfrom a\n");
    CHECK_INT(0, meta_replica_check(a.replica));
    CHECK_INT(0, meta_replica_check(b.replica));
    /* Reopened, both still agree with their logs. */
    peer_reopen(&a);
    peer_reopen(&b);
    check_content(&a, "notes.txt", "from b\nline one\nedit 39\nline three\nfrom a\n");
    write_text(&b, "notes.txt", "from b\nline one\nline three\nfrom a\n");
    exchange(&a, &b);
    check_content(&a, "notes.txt", "from b\nline one\nline three\nfrom a\n");
    CHECK_INT(0, meta_replica_check(a.replica));
    peer_free(&a);
    peer_free(&b);
}

/* More text files than the cache holds: evicted documents are saved and come back right. */
static void test_text_cache_eviction(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    char name[32], text[64];
    for (int round = 0; round < 3; round++) {
        for (int f = 0; f < 12; f++) {
            snprintf(name, sizeof(name), "f%d.txt", f);
            snprintf(text, sizeof(text), "file %d\nround %d\n", f, round);
            write_file(&a, name, text, strlen(text));
        }
    }
    struct meta_replica_info info;
    meta_replica_info(&info, a.replica);
    CHECK(info.cached_texts <= 8);
    CHECK_INT(0, meta_replica_check(a.replica));
    exchange(&a, &b);
    for (int f = 0; f < 12; f++) {
        snprintf(name, sizeof(name), "f%d.txt", f);
        snprintf(text, sizeof(text), "file %d\nround 2\n", f);
        check_content(&b, name, text);
    }
    /* A file that stops being text drops its state (and its cached document). */
    write_file(&a, "f0.txt", "\0binary", 7);
    uint8_t *state = NULL;
    size_t len = 0;
    struct meta_id id;
    CHECK_INT(0, meta_replica_node_id(&id, a.replica, resolve(&a, "f0.txt")));
    CHECK_INT(-ENOENT, meta_text_get(&state, &len, meta_replica_store(a.replica), &id));
    write_file(&a, "f0.txt", "text again\n", 11);
    CHECK_INT(0, meta_text_get(&state, &len, meta_replica_store(a.replica), &id));
    free(state);
    check_content(&a, "f0.txt", "text again\n");
    CHECK_INT(0, meta_replica_check(a.replica));
    CHECK_INT(0, meta_replica_check(b.replica));
    peer_free(&a);
    peer_free(&b);
}

/* Working copies under DIR/files (not files/tmp): how many files. */
static int count_working_copies(struct peer *peer)
{
    char cmd[4400];
    snprintf(cmd, sizeof(cmd),
             "find '%s/share/files' -path '*/files/tmp' -prune -o -type f -print | wc -l",
             peer->dir);
    FILE *out = popen(cmd, "r");
    int count = -1;
    if (!out || fscanf(out, "%d", &count) != 1)
        count = -1;
    if (out)
        pclose(out);
    return count;
}

static bool grouped_mark_exists(struct peer *peer)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/share/grouped", peer->dir);
    return access(path, F_OK) == 0;
}

/*
 * Grouped mode: changes wait in one open transaction; a failed change undoes
 * only itself; peers get ops only once committed; the group commits at close.
 */
static void test_grouped_changes(void)
{
    struct peer a, b;
    peer_init(&a, "laptop");
    peer_init(&b, "desktop");
    CHECK_INT(0, meta_replica_set_grouped(a.replica, true));
    CHECK(grouped_mark_exists(&a));
    make_dirs(&a, "kept", 1);
    CHECK(meta_replica_group_pending(a.replica));
    /* A change that fails inside the group (its working copy cannot be made). */
    char blocker[4200];
    snprintf(blocker, sizeof(blocker), "%s/share/files/00", a.dir);
    int fd = open(blocker, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    close(fd);
    struct meta_attr attr;
    CHECK(meta_replica_mknod(&attr, a.replica, META_INO_ROOT, "blocked", S_IFREG | 0644, 0, 0, 0) !=
          0);
    CHECK(meta_replica_group_pending(a.replica));
    char names[1024];
    listing(&a, "", names, sizeof(names));
    CHECK_STR("kept0|", names);
    CHECK_INT(0, unlink(blocker));
    write_text(&a, "notes.txt", "grouped\n");
    CHECK(meta_replica_group_pending(a.replica));
    /* A peer's pull commits the group first: it gets every change made. */
    exchange(&a, &b);
    CHECK(!meta_replica_group_pending(a.replica));
    listing(&b, "", names, sizeof(names));
    CHECK_STR("kept0|notes.txt|", names);
    check_content(&b, "notes.txt", "grouped\n");
    /* Close commits the last group and removes the mark. */
    make_dirs(&a, "late", 1);
    peer_reopen(&a);
    CHECK(!grouped_mark_exists(&a));
    listing(&a, "", names, sizeof(names));
    CHECK_STR("kept0|late0|notes.txt|", names);
    CHECK_INT(0, meta_replica_check(a.replica));
    peer_free(&a);
    peer_free(&b);
}

/* An editor's save (temp file renamed over the file) in a group. */
static void save_over(struct peer *peer, const char *name, const char *text)
{
    struct meta_attr attr;
    CHECK_INT(0, meta_replica_mknod(&attr, peer->replica, META_INO_ROOT, ".tmp", S_IFREG | 0644, 0,
                                    0, 0));
    int fd = -1;
    CHECK_INT(0, meta_replica_open_file(&fd, peer->replica, attr.ino, O_WRONLY));
    CHECK((size_t)write(fd, text, strlen(text)) == strlen(text));
    close(fd);
    CHECK_INT(0, meta_replica_rename(peer->replica, META_INO_ROOT, ".tmp", META_INO_ROOT, name, 0));
}

/* Saves in quick succession in a group: one node, one version for them, the last content. */
static void test_grouped_saves(void)
{
    struct peer a;
    peer_init(&a, "laptop");
    CHECK_INT(0, meta_replica_set_grouped(a.replica, true));
    write_text(&a, "doc.txt", "first\n");
    CHECK_INT(0, meta_replica_group_commit(a.replica));
    uint64_t ino = resolve(&a, "doc.txt");
    struct meta_id before, after;
    CHECK_INT(0, meta_replica_node_id(&before, a.replica, ino));
    save_over(&a, "doc.txt", "second\n");
    save_over(&a, "doc.txt", "third\n");
    check_content(&a, "doc.txt", "third\n");
    CHECK(meta_replica_group_pending(a.replica));
    CHECK_INT(0, meta_replica_group_commit(a.replica));
    CHECK_INT(0, meta_replica_node_id(&after, a.replica, resolve(&a, "doc.txt")));
    CHECK(!memcmp(before.bytes, after.bytes, META_ID_LEN));
    struct meta_log_entry *entries = NULL;
    size_t count = 0;
    CHECK_INT(0, meta_replica_log(&entries, &count, a.replica, resolve(&a, "doc.txt")));
    CHECK_INT(2, count);
    if (count)
        CHECK_INT(6, entries[0].size);
    free(entries);
    char *text = NULL;
    size_t len = 0;
    CHECK_INT(0, meta_replica_text(&text, &len, a.replica, resolve(&a, "doc.txt")));
    CHECK_STR("third\n", text);
    free(text);
    CHECK_INT(0, meta_replica_check(a.replica));
    peer_free(&a);
}

static void work_grouped_then_die(struct peer *peer)
{
    CHECK_INT(0, meta_replica_set_grouped(peer->replica, true));
    write_text(peer, "committed.txt", "kept\n");
    CHECK_INT(0, meta_replica_group_commit(peer->replica));
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "lost%d.txt", i);
        write_text(peer, name, "never committed\n");
    }
    CHECK(meta_replica_group_pending(peer->replica));
}

/* A crash loses the open group, never part of it; its new files' working copies go at open. */
static void test_grouped_crash(void)
{
    struct peer a;
    peer_init(&a, "laptop");
    int before = count_working_copies(&a);
    in_child_then_die(&a, work_grouped_then_die);
    CHECK(!grouped_mark_exists(&a));
    char names[1024];
    listing(&a, "", names, sizeof(names));
    CHECK_STR("committed.txt|", names);
    check_content(&a, "committed.txt", "kept\n");
    CHECK_INT(before + 1, count_working_copies(&a));
    CHECK_INT(0, meta_replica_check(a.replica));
    /* Life goes on: new files take the lost ones' ids. */
    write_text(&a, "next.txt", "after\n");
    check_content(&a, "next.txt", "after\n");
    CHECK_INT(before + 2, count_working_copies(&a));
    peer_free(&a);
}

int main(void)
{
    test_tree_and_text_sync();
    test_line_edits_merge();
    test_binary_sync();
    test_tree_rows();
    test_restore_is_an_edit();
    test_pinned_working_copy();
    test_working_copy_pool();
    test_tree_checkpoint();
    test_bad_checkpoint();
    test_text_state_replay();
    test_text_cache_eviction();
    test_grouped_changes();
    test_grouped_crash();
    test_grouped_saves();
    return test_finish("replica");
}
