/*
 * Unit tests for meta/replica: two replicas in one process exchange ops
 * through the API (ops since a version vector, apply remote, chunks fetched
 * from the other store) and must converge: tree, text and binary changes,
 * and the tree rows of DESIGN.md's concurrency table.
 */
#include "meta/replica.h"
#include "meta/version.h"
#include "meta_util.h"
#include "test.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

struct peer {
    char *dir;
    struct meta_replica *replica;
};

static void peer_init(struct peer *peer, const char *device)
{
    peer->dir = tu_tempdir("replica");
    struct meta_err err;
    struct meta_share_params params = {.device_name = device};
    static uint8_t share_id[META_SHARE_ID_LEN] = {1, 2, 3};
    static uint8_t share_key[META_KEY_LEN] = {9, 9, 9};
    params.share_id = share_id;
    params.share_key = share_key;
    char path[4200];
    snprintf(path, sizeof(path), "%s/share", peer->dir);
    if (meta_replica_create(&peer->replica, &err, path, &params) != 0) {
        fprintf(stderr, "create: %s\n", err.msg);
        exit(2);
    }
}

static void peer_free(struct peer *peer)
{
    meta_replica_close(peer->replica);
    tu_rmtree(peer->dir); /* frees the path too */
}

struct collected {
    struct meta_op *ops;
    size_t len, cap;
};

static int collect(void *ctx, const struct meta_op *op)
{
    struct collected *out = ctx;
    if (out->len == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 64;
        out->ops = realloc(out->ops, out->cap * sizeof(*out->ops));
    }
    struct meta_op *copy = &out->ops[out->len++];
    *copy = *op;
    copy->body = malloc(op->body_len ? op->body_len : 1);
    memcpy(copy->body, op->body, op->body_len);
    return 0;
}

static int fetch_from(void *ctx, const uint8_t id[META_HASH_LEN], uint8_t **data, size_t *len)
{
    struct peer *from = ctx;
    return meta_chunk_get(data, len, meta_replica_store(from->replica), id);
}

/* Gives `to` every op of `from` it lacks, as one remote batch. */
static void pull(struct peer *to, struct peer *from)
{
    struct crdt_vv have = {0};
    CHECK_INT(0, meta_replica_version(&have, to->replica));
    struct collected got = {0};
    CHECK_INT(0, meta_replica_ops_since(from->replica, &have, collect, &got));
    meta_replica_set_fetch(to->replica, fetch_from, from);
    size_t applied = 0;
    int rc = meta_replica_apply_remote(&applied, to->replica, got.ops, got.len);
    if (rc)
        fprintf(stderr, "apply_remote: %s\n", meta_replica_errmsg(to->replica));
    CHECK_INT(0, rc);
    for (size_t i = 0; i < got.len; i++)
        free(got.ops[i].body);
    free(got.ops);
    crdt_vv_free(&have);
}

/* Each learns the other's device (membership ops are sync/'s; here by hand). */
static void introduce(struct peer *a, struct peer *b)
{
    struct peer *pair[2][2] = {{a, b}, {b, a}};
    for (int i = 0; i < 2; i++) {
        struct meta_store *from = meta_replica_store(pair[i][0]->replica);
        struct meta_device device;
        CHECK_INT(0, meta_device_get(&device, from, meta_store_replica(from)));
        CHECK_INT(0, meta_device_put(meta_replica_store(pair[i][1]->replica), &device));
    }
}

static void exchange(struct peer *a, struct peer *b)
{
    pull(a, b);
    pull(b, a);
}

static uint64_t resolve(struct peer *peer, const char *path)
{
    uint64_t ino = 0;
    int rc = meta_replica_resolve(&ino, peer->replica, path);
    if (rc)
        fprintf(stderr, "resolve %s: %s\n", path, strerror(-rc));
    CHECK_INT(0, rc);
    return ino;
}

static void write_file(struct peer *peer, const char *path, const void *data, size_t len)
{
    uint64_t ino = 0;
    if (meta_replica_resolve(&ino, peer->replica, path) != 0) {
        const char *slash = strrchr(path, '/');
        uint64_t parent = META_INO_ROOT;
        char dir[256];
        if (slash) {
            snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
            parent = resolve(peer, dir);
        }
        struct meta_attr attr;
        CHECK_INT(0, meta_replica_mknod(&attr, peer->replica, parent, slash ? slash + 1 : path,
                                        S_IFREG | 0644, 0, 0, 0));
        ino = attr.ino;
    }
    int fd = -1;
    CHECK_INT(0, meta_replica_open_file(&fd, peer->replica, ino, O_WRONLY | O_TRUNC));
    CHECK((size_t)write(fd, data, len) == len);
    close(fd);
    CHECK_INT(0, meta_replica_commit(peer->replica, ino));
}

/* The whole content of a file, NUL-terminated, malloc'ed. */
static char *read_file(struct peer *peer, const char *path, size_t *len_out)
{
    uint64_t ino = resolve(peer, path);
    int fd = -1;
    if (meta_replica_open_file(&fd, peer->replica, ino, O_RDONLY) != 0)
        return strdup("(unreadable)");
    struct stat st;
    fstat(fd, &st);
    char *data = malloc((size_t)st.st_size + 1);
    ssize_t got = pread(fd, data, (size_t)st.st_size, 0);
    close(fd);
    data[got > 0 ? got : 0] = '\0';
    if (len_out)
        *len_out = got > 0 ? (size_t)got : 0;
    return data;
}

static void check_content(struct peer *peer, const char *path, const char *expected)
{
    char *got = read_file(peer, path, NULL);
    CHECK_STR(expected, got);
    free(got);
}

struct names {
    char text[4096];
};

static int name_each(void *ctx, const struct meta_dirent *entry, uint64_t next)
{
    (void)next;
    struct names *names = ctx;
    strncat(names->text, entry->name, sizeof(names->text) - strlen(names->text) - 2);
    strcat(names->text, "|");
    return 0;
}

/* The names in a directory, sorted, joined by '|'. */
static void listing(struct peer *peer, const char *path, char *out, size_t cap)
{
    struct names names = {{0}};
    uint64_t ino = path[0] ? resolve(peer, path) : META_INO_ROOT;
    CHECK_INT(0, meta_replica_readdir(peer->replica, ino, 0, name_each, &names));
    /* Sort the '|'-separated names (few): simple insertion sort on an array. */
    char *items[64];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(names.text, "|", &save); tok && n < 64;
         tok = strtok_r(NULL, "|", &save))
        items[n++] = tok;
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && strcmp(items[k - 1], items[k]) > 0; k--) {
            char *t = items[k];
            items[k] = items[k - 1];
            items[k - 1] = t;
        }
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        strncat(out, items[i], cap - strlen(out) - 2);
        strcat(out, "|");
    }
}

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

int main(void)
{
    test_tree_and_text_sync();
    test_line_edits_merge();
    test_binary_sync();
    test_tree_rows();
    test_restore_is_an_edit();
    return test_finish("replica");
}
