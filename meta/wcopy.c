/* meta/wcopy: see wcopy.h. */
#include "meta/wcopy.h"
#include "internal.h"
#include "meta/nodes.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Paths relative to DIR/files: "xx/<hex>", "xx" and "tmp/<hex>". */
struct wc_names {
    char file[3 + 2 * META_ID_LEN + 1];
    char dir[3];
    char tmp[4 + 2 * META_ID_LEN + 1];
};

static void wc_names(struct wc_names *names, const struct meta_id *node)
{
    char hex[2 * META_ID_LEN + 1];
    id_hex(hex, node);
    snprintf(names->dir, sizeof(names->dir), "%.2s", hex);
    snprintf(names->file, sizeof(names->file), "%.2s/%s", hex, hex);
    snprintf(names->tmp, sizeof(names->tmp), "tmp/%s", hex);
}

int meta_wc_path(char *out, size_t cap, const struct meta_store *store, const struct meta_id *node)
{
    struct wc_names names;
    wc_names(&names, node);
    int len = snprintf(out, cap, "%s/files/%s", store->dir, names.file);
    return len < 0 || (size_t)len >= cap ? -ENAMETOOLONG : 0;
}

int meta_wc_stat(struct stat *out, const struct meta_store *store, const struct meta_id *node)
{
    struct wc_names names;
    wc_names(&names, node);
    /* Relative to DIR/files: two path components to walk, not the store's whole path. */
    return fstatat(store->files_fd, names.file, out, 0) == 0 ? 0 : -errno;
}

/* fsyncs DIR/files/<name> (a directory) through the I/O hook. */
static int fsync_files_dir(struct meta_store *store, const char *name)
{
    int fd = openat(store->files_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = wc_fsync(store, fd);
    close(fd);
    return rc;
}

/* Index of a fan-out directory ("xx", two hex digits) in store->fanout_made. */
static unsigned fanout_index(const char *dir)
{
    unsigned index = 0;
    for (int i = 0; i < 2; i++)
        index = index << 4 | (unsigned)(dir[i] <= '9' ? dir[i] - '0' : dir[i] - 'a' + 10);
    return index;
}

/*
 * Makes the fan-out directory; a new one is made durable in DIR/files at
 * once. The store remembers which exist (they are never removed), so this
 * costs a system call once per directory and open, not once per file.
 */
static int make_fanout(struct meta_store *store, const char *dir)
{
    unsigned index = fanout_index(dir);
    uint32_t bit = 1u << (index % 32);
    if (store->fanout_made[index / 32] & bit)
        return 0;
    if (mkdirat(store->files_fd, dir, 0700) != 0) {
        if (errno != EEXIST)
            return -errno;
    } else if (!store->lazy) {
        int rc = wc_fsync(store, store->files_fd);
        if (rc)
            return rc;
    }
    store->fanout_made[index / 32] |= bit;
    return 0;
}

/* Forgets that a fan-out directory exists (something removed it behind our back). */
static void fanout_forget(struct meta_store *store, const char *dir)
{
    unsigned index = fanout_index(dir);
    store->fanout_made[index / 32] &= ~(1u << (index % 32));
}

/*
 * The pool of empty working copies (internal.h). Creating a file in one of
 * the 256 fan-out directories costs ext4 40-260 us here (an inode in that
 * directory's block group), creating one in a single directory about 20 us,
 * and renaming it into the fan-out directory 5 us: so new files take a file
 * made ahead (by another thread, meta_replica_wc_pool_fill) and rename it.
 */
static void pool_name(char *out, size_t size, uint64_t n)
{
    snprintf(out, size, "pool-%llu", (unsigned long long)n);
}

int wc_pool_fill(struct meta_store *store, unsigned target)
{
    int made = 0;
    for (;;) {
        pthread_mutex_lock(&store->pool_lock);
        uint64_t next = store->pool_made;
        bool full = store->pool_made - store->pool_taken >= target;
        pthread_mutex_unlock(&store->pool_lock);
        if (full || store->tmp_fd < 0)
            return made;
        char name[32];
        pool_name(name, sizeof(name), next);
        int fd = openat(store->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        close(fd);
        pthread_mutex_lock(&store->pool_lock);
        store->pool_made++;
        pthread_mutex_unlock(&store->pool_lock);
        made++;
    }
}

unsigned wc_pool_level(struct meta_store *store)
{
    pthread_mutex_lock(&store->pool_lock);
    uint64_t level = store->pool_made - store->pool_taken;
    pthread_mutex_unlock(&store->pool_lock);
    return (unsigned)level;
}

/*
 * Moves a pooled empty file to `names->file` and opens it with `flags`
 * (O_CREAT and O_EXCL dropped): fd, or -1 if the pool is empty or the move
 * failed (the caller creates the file as before). Its times are set to now,
 * as a creation would.
 */
static int pool_take(struct meta_store *store, const struct wc_names *names, int flags)
{
    pthread_mutex_lock(&store->pool_lock);
    bool empty = store->pool_taken == store->pool_made;
    uint64_t n = store->pool_taken;
    if (!empty)
        store->pool_taken++;
    pthread_mutex_unlock(&store->pool_lock);
    if (empty)
        return -1;
    char name[32];
    pool_name(name, sizeof(name), n);
    if (renameat2(store->tmp_fd, name, store->files_fd, names->file, RENAME_NOREPLACE) != 0) {
        unlinkat(store->tmp_fd, name, 0);
        return -1;
    }
    int fd = openat(store->files_fd, names->file, (flags & ~(O_CREAT | O_EXCL)) | O_CLOEXEC);
    if (fd >= 0 && futimens(fd, NULL) != 0) {
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        unlinkat(store->files_fd, names->file, 0); /* made by us a moment ago: create it anew */
    return fd;
}

int meta_wc_open(int *out_fd, struct meta_store *store, const struct meta_id *node, int flags)
{
    struct wc_names names;
    wc_names(&names, node);
    int rc = 0;
    int fd = -1;
    /*
     * A writer's O_TRUNC becomes an ftruncate when there are bytes to drop,
     * and only the timestamps O_TRUNC sets otherwise. Truncating to zero
     * makes ext4 (auto_da_alloc, meant for programs that replace a file by
     * truncating it and never fsync) allocate and start writing the file
     * when it is next closed; the truncation after that then frees the
     * blocks, which with online discard waits for the disk. Working copies
     * have their own durability protocol (README "Durability": a program's
     * fsync is the point), so a working copy just truncated is closed once
     * at once, before any byte is written: that ends the heuristic with
     * nothing to write, and rewrites stay in the page cache like writes.
     */
    bool truncate = (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY;
    if (truncate)
        flags &= ~O_TRUNC;
    if ((flags & O_CREAT) && !(flags & O_EXCL)) {
        /* Most opens find the file: try that first, then create it. */
        fd = openat(store->files_fd, names.file, (flags & ~O_CREAT) | O_CLOEXEC);
        if (fd >= 0)
            goto opened;
        if (errno != ENOENT) {
            rc = -errno;
            goto fail;
        }
    }
    if (flags & O_CREAT) {
        rc = make_fanout(store, names.dir);
        if (rc)
            goto fail;
        fd = (flags & O_EXCL) ? pool_take(store, &names, flags) : -1;
        if (fd < 0)
            fd = openat(store->files_fd, names.file, flags | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == ENOENT) {
            /* The fan-out directory went away behind our back: make it again. */
            fanout_forget(store, names.dir);
            rc = make_fanout(store, names.dir);
            if (rc)
                goto fail;
            fd = openat(store->files_fd, names.file, flags | O_EXCL | O_CLOEXEC, 0600);
        }
        if (fd >= 0) {
            rc = store->lazy ? 0 : fsync_files_dir(store, names.dir);
            if (rc)
                goto fail;
            *out_fd = fd;
            return 0;
        }
        if (errno != EEXIST || (flags & O_EXCL)) {
            rc = -errno;
            goto fail;
        }
        flags &= ~O_CREAT;
    }
    fd = openat(store->files_fd, names.file, flags | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
opened:
    if (truncate) {
        static const struct timespec now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
        struct stat st;
        if (fstat(fd, &st) != 0 || (st.st_size > 0 ? ftruncate(fd, 0) : futimens(fd, now)) != 0) {
            rc = -errno;
            goto fail;
        }
        if (st.st_size > 0) {
            int once = openat(store->files_fd, names.file, O_RDONLY | O_CLOEXEC);
            if (once >= 0)
                close(once); /* an optimization only: a failure changes nothing else */
        }
    }
    *out_fd = fd;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    return store_fail(store, rc, "working copy %s/files/%s: %s", store->dir, names.file,
                      strerror(-rc));
}

int meta_wc_mark_dirty(struct meta_store *store, const struct meta_id *node)
{
    static const char sql[] = "UPDATE nodes SET wc_state = 1 WHERE id = ?1 AND kind = 1;";
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    store_bind_id(stmt, 1, node);
    rc = store_step_done(store, stmt, "marking a working copy dirty");
    if (rc == 0 && sqlite3_changes(store->db) == 0)
        rc = store_fail(store, -ENOENT, "no such file node");
    return store_single_end(store, own, rc);
}

typedef int (*fill_fn)(struct meta_store *store, int fd, void *ctx);

/* True if the working copy `names` names must keep its inode (see wc_pinned). */
static bool wc_is_pinned(struct meta_store *store, const struct wc_names *names)
{
    struct stat st;
    return store->wc_pinned && fstatat(store->files_fd, names->file, &st, 0) == 0 &&
           store->wc_pinned(store->wc_pinned_ctx, st.st_dev, st.st_ino);
}

/*
 * Copies the new content in DIR/files/tmp/ over the pinned working copy's
 * bytes, in place, then drops the temp file. Programs holding the file open
 * see the new bytes as if another program wrote them. Not atomic: every
 * caller has marked the node STALE (redone at open) or DIRTY (committed as
 * found) first, so a crash here leaves nothing unaccounted for.
 */
static int copy_in_place(struct meta_store *store, const struct wc_names *names)
{
    int from = openat(store->files_fd, names->tmp, O_RDONLY | O_CLOEXEC);
    int to = openat(store->files_fd, names->file, O_WRONLY | O_CLOEXEC);
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    int rc = from < 0 || to < 0 ? -errno : buf ? 0 : -ENOMEM;
    off_t at = 0;
    while (rc == 0) {
        ssize_t got = pread(from, buf, cap, at);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            rc = got < 0 ? -errno : 0;
            break;
        }
        rc = wc_write_all(store, to, buf, (size_t)got, at);
        at += got;
    }
    if (rc == 0 && ftruncate(to, at) != 0)
        rc = -errno;
    if (rc == 0 && !store->wc_batch_sync)
        rc = wc_fsync(store, to);
    free(buf);
    if (from >= 0)
        close(from);
    if (to >= 0 && close(to) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0)
        unlinkat(store->files_fd, names->tmp, 0);
    return rc ? store_fail(store, rc, "rewriting working copy %s/files/%s in place: %s", store->dir,
                           names->file, strerror(-rc))
              : 0;
}

/*
 * Atomic replacement: the new content is written and fsync'ed under
 * DIR/files/tmp/, renamed over the working copy, and the directory fsync'ed
 * so the rename itself survives power loss. A crash leaves either the old
 * file or the new one under the name (and maybe a temp file, removed at open).
 * A pinned working copy is rewritten in place instead (copy_in_place).
 */
static int replace_with(struct meta_store *store, const struct meta_id *node, fill_fn fill,
                        void *ctx)
{
    struct wc_names names;
    wc_names(&names, node);
    int rc = make_fanout(store, names.dir);
    if (rc)
        return store_fail(store, rc, "cannot make %s/files/%s: %s", store->dir, names.dir,
                          strerror(-rc));
    int fd = openat(store->files_fd, names.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return store_fail(store, -errno, "cannot write %s/files/%s: %s", store->dir, names.tmp,
                          strerror(errno));
    rc = fill(store, fd, ctx);
    if (rc == 0 && !store->wc_batch_sync) {
        rc = wc_fsync(store, fd);
        if (rc)
            store_fail(store, rc, "fsync of a working copy: %s", strerror(-rc));
    }
    if (close(fd) != 0 && rc == 0)
        rc = store_fail(store, -errno, "closing a working copy: %s", strerror(errno));
    if (rc == 0 && wc_is_pinned(store, &names)) {
        rc = copy_in_place(store, &names);
        if (rc)
            unlinkat(store->files_fd, names.tmp, 0);
        return rc;
    }
    if (rc == 0 && renameat(store->files_fd, names.tmp, store->files_fd, names.file) != 0)
        rc = store_fail(store, -errno, "renaming a working copy into place: %s", strerror(errno));
    if (rc) {
        /* Best effort: a leftover temp file is removed at the next open anyway. */
        unlinkat(store->files_fd, names.tmp, 0);
        return rc;
    }
    rc = store->wc_batch_sync ? 0 : fsync_files_dir(store, names.dir);
    if (rc)
        return store_fail(store, rc, "fsync of %s/files/%s: %s", store->dir, names.dir,
                          strerror(-rc));
    return 0;
}

struct bytes_ctx {
    const void *data;
    size_t len;
};

static int fill_bytes(struct meta_store *store, int fd, void *ctx)
{
    struct bytes_ctx *bytes = ctx;
    int rc = wc_write_all(store, fd, bytes->data, bytes->len, 0);
    return rc ? store_fail(store, rc, "writing a working copy: %s", strerror(-rc)) : 0;
}

int meta_wc_replace(struct meta_store *store, const struct meta_id *node, const void *data,
                    size_t len)
{
    struct bytes_ctx bytes = {data, len};
    return replace_with(store, node, fill_bytes, &bytes);
}

struct version_ref {
    const struct meta_id *node;
    struct crdt_ts ts;
};

static int fill_version(struct meta_store *store, int fd, void *ctx)
{
    const struct version_ref *ref = ctx;
    return version_write_wc(store, ref->node, ref->ts, fd);
}

int wc_replace_from_version(struct meta_store *store, const struct meta_id *node,
                            const struct crdt_ts *ts)
{
    struct version_ref ref = {node, *ts};
    return replace_with(store, node, fill_version, &ref);
}

int meta_wc_remove(struct meta_store *store, const struct meta_id *node)
{
    struct wc_names names;
    wc_names(&names, node);
    if (unlinkat(store->files_fd, names.file, 0) != 0 && errno != ENOENT)
        return store_fail(store, -errno, "removing %s/files/%s: %s", store->dir, names.file,
                          strerror(errno));
    return 0;
}

int meta_store_sync(struct meta_store *store, const struct meta_id *node)
{
    int rc = 0;
    if (node) {
        struct wc_names names;
        wc_names(&names, node);
        int fd = openat(store->files_fd, names.file, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            rc = wc_fsync(store, fd);
            close(fd);
        } else if (errno != ENOENT) {
            rc = -errno;
        }
        if (!rc)
            rc = fsync_files_dir(store, names.dir);
        if (!rc)
            rc = wc_fsync(store, store->files_fd);
        if (rc)
            return store_fail(store, rc, "making working copy %s durable: %s", names.file,
                              strerror(-rc));
    }
    /*
     * Committed transactions are in the WAL; syncing it is exactly what
     * synchronous=FULL does at each commit, done here only when asked.
     */
    char wal[4096];
    snprintf(wal, sizeof(wal), "%s/store.db-wal", store->dir);
    int fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : store_fail(store, -errno, "%s: %s", wal, strerror(errno));
    rc = wc_fsync(store, fd);
    close(fd);
    if (rc)
        return store_fail(store, rc, "syncing %s: %s", wal, strerror(-rc));
    return 0;
}
