/*
 * tests/bench/fuse-null.c: the least a FUSE file system can do. It keeps
 * names and attributes in memory, stores no data (a read returns zeros up to
 * the size), never touches a disk, and answers every request at once. Run
 * under the same workloads as weft (tests/bench/fs-bench), it measures what
 * the kernel's FUSE round trips alone cost on this machine: no FUSE file
 * system can beat its times, so its ratio to native is the ceiling for
 * weft's.
 *
 *     fuse-null MOUNTPOINT     serves in the foreground until unmounted
 *
 * Mounted like weft: default_permissions, 10 s entry and attribute
 * timeouts, the page cache kept across opens, up to 4 worker threads.
 * Handles only what the benchmark's workloads use (files, directories,
 * symlinks, rename, unlink); anything else gets ENOSYS.
 */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT 10.0

struct inode {
    struct stat st;
    fuse_ino_t parent;
    char *name;
    char *target; /* symlinks */
    struct inode *hash_next;
    uint64_t lookups;
};

struct nullfs {
    pthread_mutex_t lock;
    struct inode **inodes; /* by ino; ino 1 is the root */
    size_t len, cap;
    struct inode **buckets; /* (parent, name) hash */
    size_t bucket_cap;
};

static uint64_t name_hash(fuse_ino_t parent, const char *name)
{
    uint64_t h = 1469598103934665603ULL ^ parent;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

static struct inode **slot_of(struct nullfs *fs, fuse_ino_t parent, const char *name)
{
    struct inode **slot = &fs->buckets[name_hash(parent, name) & (fs->bucket_cap - 1)];
    while (*slot && ((*slot)->parent != parent || strcmp((*slot)->name, name)))
        slot = &(*slot)->hash_next;
    return slot;
}

static void grow_buckets(struct nullfs *fs)
{
    size_t cap = fs->bucket_cap * 2;
    struct inode **buckets = calloc(cap, sizeof(*buckets));
    if (!buckets)
        return;
    for (size_t i = 0; i < fs->bucket_cap; i++)
        for (struct inode *inode = fs->buckets[i], *next; inode; inode = next) {
            next = inode->hash_next;
            struct inode **head = &buckets[name_hash(inode->parent, inode->name) & (cap - 1)];
            inode->hash_next = *head;
            *head = inode;
        }
    free(fs->buckets);
    fs->buckets = buckets;
    fs->bucket_cap = cap;
}

static void now(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
}

static struct inode *node_new(struct nullfs *fs, fuse_ino_t parent, const char *name, mode_t mode,
                              const struct fuse_ctx *ctx)
{
    if (fs->len == fs->cap) {
        size_t cap = fs->cap * 2;
        struct inode **grown = realloc(fs->inodes, cap * sizeof(*grown));
        if (!grown)
            return NULL;
        fs->inodes = grown;
        fs->cap = cap;
    }
    struct inode *inode = calloc(1, sizeof(*inode));
    if (!inode || !(inode->name = strdup(name))) {
        free(inode);
        return NULL;
    }
    inode->st.st_ino = fs->len;
    inode->st.st_mode = mode;
    inode->st.st_nlink = S_ISDIR(mode) ? 2 : 1;
    inode->st.st_uid = ctx->uid;
    inode->st.st_gid = ctx->gid;
    inode->st.st_blksize = 4096;
    now(&inode->st.st_mtim);
    inode->st.st_atim = inode->st.st_ctim = inode->st.st_mtim;
    inode->parent = parent;
    fs->inodes[fs->len++] = inode;
    if (fs->len > fs->bucket_cap)
        grow_buckets(fs);
    struct inode **slot = slot_of(fs, parent, name);
    inode->hash_next = *slot;
    *slot = inode;
    return inode;
}

static struct inode *node_get(struct nullfs *fs, fuse_ino_t ino)
{
    return ino < fs->len ? fs->inodes[ino] : NULL;
}

static void unhash(struct nullfs *fs, struct inode *inode)
{
    struct inode **slot = slot_of(fs, inode->parent, inode->name);
    if (*slot == inode)
        *slot = inode->hash_next;
    inode->hash_next = NULL;
    inode->parent = 0;
}

#define FS ((struct nullfs *)fuse_req_userdata(req))

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = *slot_of(FS, parent, name);
    if (inode) {
        struct fuse_entry_param e = {.ino = inode->st.st_ino,
                                     .generation = 1,
                                     .attr = inode->st,
                                     .attr_timeout = TIMEOUT,
                                     .entry_timeout = TIMEOUT};
        inode->lookups++;
        pthread_mutex_unlock(&FS->lock);
        fuse_reply_entry(req, &e);
        return;
    }
    pthread_mutex_unlock(&FS->lock);
    /* A negative entry the kernel may cache, as weft replies. */
    struct fuse_entry_param e = {.ino = 0, .entry_timeout = TIMEOUT};
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = node_get(FS, ino);
    struct stat st;
    if (inode)
        st = inode->st;
    pthread_mutex_unlock(&FS->lock);
    if (!inode)
        fuse_reply_err(req, ENOENT);
    else
        fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)fi;
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = node_get(FS, ino);
    if (!inode) {
        pthread_mutex_unlock(&FS->lock);
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (to_set & FUSE_SET_ATTR_MODE)
        inode->st.st_mode = (inode->st.st_mode & S_IFMT) | (attr->st_mode & 07777);
    if (to_set & FUSE_SET_ATTR_UID)
        inode->st.st_uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID)
        inode->st.st_gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_SIZE)
        inode->st.st_size = attr->st_size;
    if (to_set & FUSE_SET_ATTR_MTIME)
        inode->st.st_mtim = attr->st_mtim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        now(&inode->st.st_mtim);
    if (to_set & FUSE_SET_ATTR_ATIME)
        inode->st.st_atim = attr->st_atim;
    now(&inode->st.st_ctim);
    struct stat st = inode->st;
    pthread_mutex_unlock(&FS->lock);
    fuse_reply_attr(req, &st, TIMEOUT);
}

static void make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                 const char *target, struct fuse_file_info *fi)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    pthread_mutex_lock(&FS->lock);
    if (*slot_of(FS, parent, name)) {
        pthread_mutex_unlock(&FS->lock);
        fuse_reply_err(req, EEXIST);
        return;
    }
    struct inode *inode = node_new(FS, parent, name, mode & ~(S_ISDIR(mode) ? 0 : ctx->umask), ctx);
    if (inode && target) {
        inode->target = strdup(target);
        inode->st.st_size = (off_t)strlen(target);
    }
    struct fuse_entry_param e;
    if (inode)
        e = (struct fuse_entry_param){.ino = inode->st.st_ino,
                                      .generation = 1,
                                      .attr = inode->st,
                                      .attr_timeout = TIMEOUT,
                                      .entry_timeout = TIMEOUT};
    if (inode)
        inode->lookups++;
    pthread_mutex_unlock(&FS->lock);
    if (!inode)
        fuse_reply_err(req, ENOMEM);
    else if (fi) {
        fi->keep_cache = 1;
        fi->noflush = 1;
        fuse_reply_create(req, &e, fi);
    } else
        fuse_reply_entry(req, &e);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    make(req, parent, name, S_IFDIR | (mode & 07777), NULL, NULL);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)rdev;
    make(req, parent, name, mode, NULL, NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    make(req, parent, name, S_IFLNK | 0777, link, NULL);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    make(req, parent, name, S_IFREG | (mode & 07777), NULL, fi);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = node_get(FS, ino);
    char *target = inode && inode->target ? strdup(inode->target) : NULL;
    pthread_mutex_unlock(&FS->lock);
    if (!target) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    fuse_reply_readlink(req, target);
    free(target);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = *slot_of(FS, parent, name);
    if (inode)
        unhash(FS, inode);
    pthread_mutex_unlock(&FS->lock);
    fuse_reply_err(req, inode ? 0 : ENOENT);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    if (flags) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = *slot_of(FS, parent, name);
    if (!inode) {
        pthread_mutex_unlock(&FS->lock);
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct inode *victim = *slot_of(FS, newparent, newname);
    if (victim)
        unhash(FS, victim);
    unhash(FS, inode);
    char *renamed = strdup(newname);
    if (renamed) {
        free(inode->name);
        inode->name = renamed;
    }
    inode->parent = newparent;
    struct inode **slot = slot_of(FS, newparent, inode->name);
    inode->hash_next = *slot;
    *slot = inode;
    pthread_mutex_unlock(&FS->lock);
    fuse_reply_err(req, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (fi->flags & O_TRUNC) {
        pthread_mutex_lock(&FS->lock);
        struct inode *inode = node_get(FS, ino);
        if (inode)
            inode->st.st_size = 0;
        pthread_mutex_unlock(&FS->lock);
    }
    fi->keep_cache = 1;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = node_get(FS, ino);
    off_t end = inode ? inode->st.st_size : 0;
    pthread_mutex_unlock(&FS->lock);
    size_t len = off >= end ? 0 : (size_t)(end - off) < size ? (size_t)(end - off) : size;
    char *zeros = calloc(1, len ? len : 1);
    fuse_reply_buf(req, zeros, len);
    free(zeros);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
                         struct fuse_file_info *fi)
{
    (void)fi;
    size_t len = fuse_buf_size(in);
    pthread_mutex_lock(&FS->lock);
    struct inode *inode = node_get(FS, ino);
    if (inode && off + (off_t)len > inode->st.st_size)
        inode->st.st_size = off + (off_t)len;
    if (inode)
        now(&inode->st.st_mtim);
    pthread_mutex_unlock(&FS->lock);
    fuse_reply_write(req, len);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    (void)ino;
    (void)name;
    (void)size;
    fuse_reply_err(req, ENODATA);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    char *buf = calloc(1, size);
    size_t used = 0;
    pthread_mutex_lock(&FS->lock);
    for (size_t i = (size_t)off + 1; buf && i < FS->len; i++) {
        struct inode *inode = FS->inodes[i];
        if (!inode || inode->parent != ino || i == ino)
            continue;
        size_t need =
            fuse_add_direntry(req, buf + used, size - used, inode->name, &inode->st, (off_t)i);
        if (need > size - used)
            break;
        used += need;
    }
    pthread_mutex_unlock(&FS->lock);
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct statvfs st = {.f_bsize = 4096,
                         .f_frsize = 4096,
                         .f_blocks = 1 << 30,
                         .f_bfree = 1 << 30,
                         .f_bavail = 1 << 30,
                         .f_files = 1 << 30,
                         .f_ffree = 1 << 30,
                         .f_namemax = 255};
    fuse_reply_statfs(req, &st);
}

static const struct fuse_lowlevel_ops ops = {
    .lookup = op_lookup,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .symlink = op_symlink,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write_buf = op_write_buf,
    .release = op_release,
    .fsync = op_fsync,
    .getxattr = op_getxattr,
    .readdir = op_readdir,
    .statfs = op_statfs,
};

int main(int argc, char **argv)
{
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: fuse-null MOUNTPOINT (see the top of tests/bench/fuse-null.c)\n");
        return 2;
    }
    struct nullfs fs = {.cap = 1024, .bucket_cap = 1024};
    pthread_mutex_init(&fs.lock, NULL);
    fs.inodes = calloc(fs.cap, sizeof(*fs.inodes));
    fs.buckets = calloc(fs.bucket_cap, sizeof(*fs.buckets));
    struct fuse_ctx root_ctx = {.uid = getuid(), .gid = getgid()};
    if (!fs.inodes || !fs.buckets || !node_new(&fs, 0, "", 0, &root_ctx) ||
        !node_new(&fs, 0, "/", S_IFDIR | 0755, &root_ctx)) {
        fprintf(stderr, "fuse-null: out of memory\n");
        return 1;
    }
    unhash(&fs, fs.inodes[1]); /* the root has no name */
    char *fuse_argv[] = {argv[0], "-o", "default_permissions,fsname=fuse-null,subtype=null", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), &fs);
    int rc = 1;
    if (se && fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, argv[1]) == 0) {
            struct fuse_loop_config *config = fuse_loop_cfg_create();
            fuse_loop_cfg_set_max_threads(config, 4);
            rc = fuse_session_loop_mt(se, config) < 0;
            fuse_loop_cfg_destroy(config);
            fuse_session_unmount(se);
        }
        fuse_remove_signal_handlers(se);
    }
    if (se)
        fuse_session_destroy(se);
    fuse_opt_free_args(&args);
    return rc;
}
