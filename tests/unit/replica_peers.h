/*
 * tests/unit/replica_peers.h: replicas in one process that exchange ops
 * through meta/replica's API (ops since a version vector, apply remote,
 * chunks fetched from the other store), and the file helpers their tests
 * share (test_replica.c, test_replica_merge.c).
 */
#ifndef WEFT_TESTS_REPLICA_PEERS_H
#define WEFT_TESTS_REPLICA_PEERS_H

#include "meta/oplog.h"
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

static inline void peer_init(struct peer *peer, const char *device)
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

static inline void peer_free(struct peer *peer)
{
    meta_replica_close(peer->replica);
    tu_rmtree(peer->dir); /* frees the path too */
}

struct collected {
    struct meta_op *ops;
    size_t len, cap;
};

static inline int collect(void *ctx, const struct meta_op *op)
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

static inline int fetch_from(void *ctx, const uint8_t id[META_HASH_LEN], uint8_t **data,
                             size_t *len)
{
    struct peer *from = ctx;
    return meta_chunk_get(data, len, meta_replica_store(from->replica), id);
}

/* Gives `to` every op of `from` it lacks, as one remote batch. */
static inline void pull(struct peer *to, struct peer *from)
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
static inline void introduce(struct peer *a, struct peer *b)
{
    struct peer *pair[2][2] = {{a, b}, {b, a}};
    for (int i = 0; i < 2; i++) {
        struct meta_store *from = meta_replica_store(pair[i][0]->replica);
        struct meta_device device;
        CHECK_INT(0, meta_device_get(&device, from, meta_store_replica(from)));
        CHECK_INT(0, meta_device_put(meta_replica_store(pair[i][1]->replica), &device));
    }
}

static inline void exchange(struct peer *a, struct peer *b)
{
    pull(a, b);
    pull(b, a);
}

static inline uint64_t resolve(struct peer *peer, const char *path)
{
    uint64_t ino = 0;
    int rc = meta_replica_resolve(&ino, peer->replica, path);
    if (rc)
        fprintf(stderr, "resolve %s: %s\n", path, strerror(-rc));
    CHECK_INT(0, rc);
    return ino;
}

static inline void write_file(struct peer *peer, const char *path, const void *data, size_t len)
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
        /* What the kernel is told of a new file is what getattr says of it. */
        struct meta_attr again;
        CHECK_INT(0, meta_replica_getattr(&again, peer->replica, attr.ino));
        CHECK_INT(1, attr.nlink);
        CHECK(attr.mode == again.mode && attr.nlink == again.nlink && attr.size == again.size &&
              attr.uid == again.uid && attr.gid == again.gid && attr.mtime_ns == again.mtime_ns);
        ino = attr.ino;
    }
    int fd = -1;
    CHECK_INT(0, meta_replica_open_file(&fd, peer->replica, ino, O_WRONLY | O_TRUNC));
    CHECK((size_t)write(fd, data, len) == len);
    close(fd);
    CHECK_INT(0, meta_replica_commit(peer->replica, ino));
}

static inline void write_text(struct peer *peer, const char *path, const char *text)
{
    write_file(peer, path, text, strlen(text));
}

/* The whole content of a file, NUL-terminated, malloc'ed. */
static inline char *read_file(struct peer *peer, const char *path, size_t *len_out)
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

static inline void check_content(struct peer *peer, const char *path, const char *expected)
{
    char *got = read_file(peer, path, NULL);
    CHECK_STR(expected, got);
    free(got);
}

struct names {
    char text[4096];
};

static inline int name_each(void *ctx, const struct meta_dirent *entry, uint64_t next)
{
    (void)next;
    struct names *names = ctx;
    strncat(names->text, entry->name, sizeof(names->text) - strlen(names->text) - 2);
    strcat(names->text, "|");
    return 0;
}

/* The names in a directory, sorted, joined by '|'. */
static inline void listing(struct peer *peer, const char *path, char *out, size_t cap)
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

static inline void peer_reopen(struct peer *peer)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/share", peer->dir);
    meta_replica_close(peer->replica);
    struct meta_err err;
    int rc = meta_replica_open(&peer->replica, &err, path);
    if (rc) {
        fprintf(stderr, "reopen: %s\n", err.msg);
        exit(2);
    }
}

#endif
