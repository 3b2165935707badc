/*
 * tests/meta_util.h: helpers the meta/ tests share: temporary directories
 * that are always removed, whole-file reads and writes, and a store with a
 * few file nodes ready for versions.
 */
#ifndef WEFT_TESTS_META_UTIL_H
#define WEFT_TESTS_META_UTIL_H

#include "meta/nodes.h"
#include "meta/store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Makes a fresh directory under $TMPDIR (or /tmp); the caller removes it with tu_rmtree. */
static inline char *tu_tempdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = malloc(4096);
    snprintf(path, 4096, "%s/weft-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(2);
    }
    return path;
}

static inline int tu_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a directory tree and frees its path. */
static inline void tu_rmtree(char *path)
{
    if (path)
        nftw(path, tu_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(path);
}

/* Reads a whole file into a malloc'ed buffer; NULL if it cannot be read. */
static inline uint8_t *tu_read_file(const char *path, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    uint8_t *data = malloc((size_t)st.st_size + 1);
    ssize_t got = read(fd, data, (size_t)st.st_size);
    close(fd);
    if (got != st.st_size) {
        free(data);
        return NULL;
    }
    *out_len = (size_t)st.st_size;
    return data;
}

/* Writes a whole file (created 0600); 0 or -errno. */
static inline int tu_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    ssize_t wrote = write(fd, data, len);
    close(fd);
    return wrote == (ssize_t)len ? 0 : -EIO;
}

/* A node id made from a small number (tests only). */
static inline struct meta_id tu_id(uint32_t n)
{
    struct meta_id id = {{0}};
    id.bytes[0] = (uint8_t)(n >> 24);
    id.bytes[1] = (uint8_t)(n >> 16);
    id.bytes[2] = (uint8_t)(n >> 8);
    id.bytes[3] = (uint8_t)n;
    id.bytes[15] = 0xee;
    return id;
}

/* A node with plausible attributes. */
static inline struct meta_node tu_node(struct meta_id id, const struct meta_id *parent,
                                       const char *name, enum meta_node_kind kind)
{
    struct meta_node node;
    memset(&node, 0, sizeof(node));
    node.id = id;
    if (parent) {
        node.parent = *parent;
        node.has_parent = true;
    }
    snprintf(node.name, sizeof(node.name), "%s", name);
    node.kind = kind;
    node.mode = kind == META_NODE_DIR ? 040755 : 0100644;
    node.uid = 1000;
    node.gid = 1000;
    node.mtime_ns = 1700000000000000000;
    node.ctime_ns = 1700000000000000001;
    return node;
}

/* Fills len bytes with a seeded pattern. */
static inline void tu_fill(uint8_t *data, size_t len, uint64_t seed)
{
    uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < len; i++) {
        if (i % 8 == 0)
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        data[i] = (uint8_t)(state >> (8 * (i % 8)));
    }
}

#endif
