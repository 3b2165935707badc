/*
 * fs/fs: see fs.h. Request handlers are short: translate, call the replica
 * under the mutex, reply. Data I/O uses the handle's working-copy fd.
 *
 * Commit points (DESIGN.md "File contents"): the last release of a handle
 * that wrote, fsync, and a timer for files held open for writing a long time.
 */
#define FUSE_USE_VERSION 314
#include "fs/fs.h"

#include "fs/passthrough.h"

#include "sync/agent.h"
#include "sync/invite.h"

#include <sodium.h>

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* Virtual xattrs that carry weft's own commands through the kernel's path lookup. */
#define XATTR_NODE    "user.weft.node"
#define XATTR_LOG     "user.weft.log"
#define XATTR_HISTORY "user.weft.history"
#define XATTR_RESTORE "user.weft.restore"
#define XATTR_SYNC    "user.weft.sync"    /* the root's: the syncer's status as JSON */
#define XATTR_INVITE  "user.weft.invite"  /* the root's: set a device name, read its token */
#define XATTR_PEER    "user.weft.peer"    /* the root's: set "host:port" to sync with it directly */
#define XATTR_DEVICES "user.weft.devices" /* the root's: the share's devices, a line each */
#define XATTR_REMOVE  "user.weft.remove"  /* the root's: set a device's name to remove it */
#define XATTR_PREFIX  "user.weft."

static bool log_syslog;

void fs_log_to_syslog(const char *ident)
{
    openlog(ident, LOG_PID, LOG_DAEMON);
    log_syslog = true;
}

void fs_log(int priority, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    if (log_syslog) {
        vsyslog(priority, fmt, args);
    } else {
        fputs("weft: ", stderr);
        vfprintf(stderr, fmt, args);
        fputc('\n', stderr);
    }
    va_end(args);
}

/* Per inode, the handles open for writing: the last one to go commits. */
struct writer {
    uint64_t ino;
    unsigned count;
    bool dirty; /* written since the last commit; set without the lock (atomic) */
    /*
     * Writes through a passed-through handle never reach weft, so the
     * periodic commit looks at the working copy's ctime instead: `probe` is
     * a descriptor of it (-1 if no handle is passed through), `seen` the
     * ctime last committed.
     */
    int probe;
    struct timespec seen;
    /*
     * The next write must look at the set-ID bits (op_write_buf): set when
     * the writer is made and whenever the mode may have changed, so that
     * writes of files without the bits (all but a few) take no lock.
     */
    bool check_setid; /* atomic */
    struct writer *next;
};

/* An open file: its working copy, and its inode's writer entry if it may write. */
struct handle {
    int fd;
    uint64_t ino;
    struct writer *writer; /* lives as long as any writable handle of the inode */
    enum fs_pt_mode mode;  /* FS_PT_PASSTHROUGH: holds one fs_pt_open of the inode */
};

/* Notes a write through a handle: a flag store, no lock on the data path. */
static void handle_wrote(struct handle *handle)
{
    if (handle->writer)
        __atomic_store_n(&handle->writer->dirty, true, __ATOMIC_RELAXED);
}

/* Takes the writer's dirty flag, clearing it (the caller commits what it saw). */
static bool writer_take_dirty(struct writer *writer)
{
    return __atomic_exchange_n(&writer->dirty, false, __ATOMIC_RELAXED);
}

struct queued_change {
    struct meta_change change;
    char name[META_NAME_MAX + 1];
    struct queued_change *next;
};

struct fs {
    struct meta_replica *replica;
    const struct fs_options *options;
    struct fuse_session *session;
    struct fs_pt *pt;     /* FUSE passthrough of file data (fs/passthrough) */
    pthread_mutex_t lock; /* the replica, `writers` and `closed` */
    struct writer *writers;
    uint64_t *closed; /* files whose last writer closed, waiting for the committer */
    size_t closed_len, closed_cap;

    pthread_mutex_t queue_lock; /* remote changes waiting to be told to the kernel */
    pthread_cond_t queue_cond;
    pthread_cond_t commit_cond; /* wakes the committer (under queue_lock) */
    bool commit_wanted;         /* `closed` got an entry since the committer last looked */
    bool group_armed;           /* the committer will commit the open group (under lock) */
    struct queued_change *queue_head, **queue_tail;
    bool stopping;
    pthread_cond_t pool_cond; /* wakes the pooler (under queue_lock) */
    bool pool_wanted;
    pthread_t notifier, committer, pooler;
    struct sync_agent *agent; /* NULL without a relay */
    char *invite;             /* the last join token made (under lock), for `weft invite` */
};

static struct fs *fs_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* ---------- attributes ---------- */

static void to_stat(struct stat *st, const struct meta_attr *attr)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = attr->ino;
    st->st_mode = attr->mode;
    st->st_nlink = attr->nlink;
    st->st_uid = attr->uid;
    st->st_gid = attr->gid;
    st->st_rdev = attr->rdev;
    st->st_size = (off_t)attr->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((attr->size + 511) / 512);
    st->st_atim.tv_sec = attr->atime_ns / 1000000000;
    st->st_atim.tv_nsec = attr->atime_ns % 1000000000;
    st->st_mtim.tv_sec = attr->mtime_ns / 1000000000;
    st->st_mtim.tv_nsec = attr->mtime_ns % 1000000000;
    st->st_ctim.tv_sec = attr->ctime_ns / 1000000000;
    st->st_ctim.tv_nsec = attr->ctime_ns % 1000000000;
}

static void reply_entry(fuse_req_t req, const struct meta_attr *attr)
{
    struct fs *fs = fs_of(req);
    struct fuse_entry_param entry;
    memset(&entry, 0, sizeof(entry));
    entry.ino = attr->ino;
    entry.generation = 1; /* inode numbers are never reused */
    to_stat(&entry.attr, attr);
    entry.attr_timeout = fs->options->attr_timeout;
    entry.entry_timeout = fs->options->entry_timeout;
    fuse_reply_entry(req, &entry);
}

static void reply_attr(fuse_req_t req, const struct meta_attr *attr)
{
    struct stat st;
    to_stat(&st, attr);
    fuse_reply_attr(req, &st, fs_of(req)->options->attr_timeout);
}

static void report(struct fs *fs, const char *what, int rc)
{
    /* errnos a program provokes are its business; internal failures are ours to log. */
    if (rc == -EIO || rc == -ENOMEM || rc == -EUCLEAN)
        fs_log(LOG_ERR, "%s failed: %s (%s)", what, strerror(-rc),
               meta_replica_errmsg(fs->replica));
}

/* ---------- writers ---------- */

static struct writer **writer_slot(struct fs *fs, uint64_t ino)
{
    struct writer **slot = &fs->writers;
    while (*slot && (*slot)->ino != ino)
        slot = &(*slot)->next;
    return slot;
}

static int writer_add(struct fs *fs, uint64_t ino)
{
    struct writer **slot = writer_slot(fs, ino);
    if (!*slot) {
        *slot = calloc(1, sizeof(**slot));
        if (!*slot)
            return -ENOMEM;
        (*slot)->ino = ino;
        (*slot)->probe = -1;
        (*slot)->check_setid = true;
    }
    (*slot)->count++;
    return 0;
}

/* Drops one writer; true if it was the last one. */
static bool writer_drop(struct fs *fs, uint64_t ino)
{
    struct writer **slot = writer_slot(fs, ino);
    if (!*slot)
        return true;
    if (--(*slot)->count > 0)
        return false;
    struct writer *gone = *slot;
    *slot = gone->next;
    if (gone->probe >= 0)
        close(gone->probe);
    free(gone);
    return true;
}

/* Starts watching the working copy's ctime for a passed-through writer (under lock). */
static void writer_probe(struct writer *writer, int fd)
{
    struct stat st;
    if (writer->probe >= 0 || fstat(fd, &st) != 0)
        return;
    writer->probe = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    writer->seen = st.st_ctim;
    /* Whatever happens before the first look is committed by the first look. */
    __atomic_store_n(&writer->dirty, true, __ATOMIC_RELAXED);
}

/* Marks a passed-through writer dirty if its working copy changed since the last look. */
static void writer_look(struct writer *writer)
{
    struct stat st;
    if (writer->probe < 0 || fstat(writer->probe, &st) != 0)
        return;
    if (st.st_ctim.tv_sec != writer->seen.tv_sec || st.st_ctim.tv_nsec != writer->seen.tv_nsec) {
        writer->seen = st.st_ctim;
        __atomic_store_n(&writer->dirty, true, __ATOMIC_RELAXED);
    }
}

/* The mode of `ino` may have changed: its next write looks at its set-ID bits (under lock). */
static void writer_check_setid(struct fs *fs, uint64_t ino)
{
    struct writer *writer = *writer_slot(fs, ino);
    if (writer)
        __atomic_store_n(&writer->check_setid, true, __ATOMIC_RELAXED);
}

static void writer_mark(struct fs *fs, uint64_t ino)
{
    pthread_mutex_lock(&fs->lock);
    struct writer *writer = *writer_slot(fs, ino);
    if (writer)
        __atomic_store_n(&writer->dirty, true, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&fs->lock);
}

static int closed_add(struct fs *fs, uint64_t ino)
{
    for (size_t i = 0; i < fs->closed_len; i++)
        if (fs->closed[i] == ino)
            return 0;
    if (fs->closed_len == fs->closed_cap) {
        size_t cap = fs->closed_cap ? fs->closed_cap * 2 : 64;
        uint64_t *grown = realloc(fs->closed, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        fs->closed = grown;
        fs->closed_cap = cap;
    }
    fs->closed[fs->closed_len++] = ino;
    return 0;
}

static void wake_committer(struct fs *fs)
{
    pthread_mutex_lock(&fs->queue_lock);
    fs->commit_wanted = true;
    pthread_cond_signal(&fs->commit_cond);
    pthread_mutex_unlock(&fs->queue_lock);
}

/*
 * Releases fs->lock after a request that may have changed the replica. The
 * change joined the replica's open group (meta_replica_set_grouped); the
 * first change of a group wakes the committer, which commits it about 20 ms
 * later, so a burst of requests (tar, git) shares one store commit.
 */
static void unlock_changed(struct fs *fs)
{
    bool arm = !fs->group_armed && meta_replica_group_pending(fs->replica);
    if (arm)
        fs->group_armed = true;
    pthread_mutex_unlock(&fs->lock);
    if (arm)
        wake_committer(fs);
}

/* Commits the open group; the caller holds fs->lock. A failure loses it, as a crash would. */
static void commit_group(struct fs *fs)
{
    int rc = meta_replica_group_commit(fs->replica);
    if (rc)
        fs_log(LOG_ERR,
               "committing the last changes failed: %s (%s); they are lost, as in a crash, "
               "except file contents, which stay in the working copies",
               strerror(-rc), meta_replica_errmsg(fs->replica));
    fs->group_armed = false;
}

/* Commits the files whose last writer closed; the caller holds fs->lock. */
static void commit_closed(struct fs *fs)
{
    if (fs->closed_len == 0)
        return;
    int rc = meta_replica_commit_batch(fs->replica, fs->closed, fs->closed_len);
    if (rc)
        fs_log(LOG_ERR,
               "committing %zu closed files failed: %s (%s); their bytes stay in the "
               "working copies and are committed at the next fsync or mount",
               fs->closed_len, strerror(-rc), meta_replica_errmsg(fs->replica));
    fs->closed_len = 0;
}

/*
 * Empty working copies made ahead by the pooler thread, so that a create
 * renames one instead of waiting for ext4 to make a file in a fan-out
 * directory (meta_replica_wc_pool_fill): 5 us instead of 40-260 here. 256
 * cover a burst the pooler cannot keep up with for a while.
 */
#define POOL_TARGET 256

static void pool_poke(struct fs *fs)
{
    if (meta_replica_wc_pool_level(fs->replica) >= POOL_TARGET / 2)
        return;
    pthread_mutex_lock(&fs->queue_lock);
    fs->pool_wanted = true;
    pthread_cond_signal(&fs->pool_cond);
    pthread_mutex_unlock(&fs->queue_lock);
}

static void *pooler_main(void *arg)
{
    struct fs *fs = arg;
    bool failing = false;
    pthread_mutex_lock(&fs->queue_lock);
    while (!fs->stopping) {
        pthread_mutex_unlock(&fs->queue_lock);
        int made = meta_replica_wc_pool_fill(fs->replica, POOL_TARGET);
        if (made < 0 && !failing)
            fs_log(LOG_WARNING,
                   "cannot make working copies ahead (%s): new files are made one "
                   "by one until this works again",
                   strerror(-made));
        failing = made < 0;
        pthread_mutex_lock(&fs->queue_lock);
        while (!fs->stopping && !fs->pool_wanted)
            pthread_cond_wait(&fs->pool_cond, &fs->queue_lock);
        fs->pool_wanted = false;
    }
    pthread_mutex_unlock(&fs->queue_lock);
    return NULL;
}

/* ---------- requests ---------- */

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    struct meta_attr attr;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_lookup(&attr, fs->replica, parent, name);
    pthread_mutex_unlock(&fs->lock);
    if (rc == -ENOENT) {
        /* A negative entry the kernel may cache; remote creates invalidate it. */
        struct fuse_entry_param entry;
        memset(&entry, 0, sizeof(entry));
        entry.entry_timeout = fs->options->entry_timeout;
        fuse_reply_entry(req, &entry);
        return;
    }
    if (rc) {
        report(fs, "lookup", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    reply_entry(req, &attr);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    /* Inode numbers live in the store, not in lookup counts: nothing to drop. */
    (void)ino;
    (void)nlookup;
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fs_of(req);
    struct meta_attr attr;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_getattr(&attr, fs->replica, ino);
    pthread_mutex_unlock(&fs->lock);
    if (rc) {
        report(fs, "getattr", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    reply_attr(req, &attr);
}

static int64_t timespec_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return timespec_ns(&ts);
}

/*
 * Once FUSE_HANDLE_KILLPRIV_V2 is agreed (fs/passthrough), the kernel leaves
 * to weft what Linux does to a regular file's set-ID bits when it is
 * written, truncated or chowned: set-user-ID goes, and set-group-ID if group
 * execute is set. The mode without them in *out; false if there are none.
 */
static bool mode_killed(const struct meta_attr *attr, mode_t *out)
{
    mode_t perms = attr->mode & 07777;
    mode_t kill = S_ISUID | ((perms & S_IXGRP) ? S_ISGID : 0);
    if (!S_ISREG(attr->mode) || !(perms & kill))
        return false;
    *out = perms & ~kill;
    return true;
}

/*
 * Kills the set-ID bits of `ino` (mode_killed), then tells the kernel,
 * whose cached mode still has them. Takes the lock; 0 or -errno.
 */
static int kill_privs(struct fs *fs, uint64_t ino)
{
    pthread_mutex_lock(&fs->lock);
    struct meta_attr attr;
    int rc = meta_replica_getattr(&attr, fs->replica, ino);
    mode_t mode;
    bool killed = !rc && mode_killed(&attr, &mode);
    if (killed) {
        struct meta_attr values = {.mode = mode};
        rc = meta_replica_setattr(&attr, fs->replica, ino, &values, META_SET_MODE);
    }
    unlock_changed(fs);
    /* Attributes only: no page or inode lock is taken, so a request handler may. */
    if (killed && !rc)
        fuse_lowlevel_notify_inval_inode(fs->session, ino, -1, 0);
    return rc;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st, int to_set,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct meta_attr values;
    memset(&values, 0, sizeof(values));
    unsigned mask = 0;
    if (to_set & FUSE_SET_ATTR_MODE) {
        values.mode = st->st_mode;
        mask |= META_SET_MODE;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        values.uid = st->st_uid;
        mask |= META_SET_UID;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        values.gid = st->st_gid;
        mask |= META_SET_GID;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        values.size = (uint64_t)st->st_size;
        mask |= META_SET_SIZE;
    }
    if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) {
        values.atime_ns = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? now_ns() : timespec_ns(&st->st_atim);
        mask |= META_SET_ATIME;
    }
    if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
        values.mtime_ns = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? now_ns() : timespec_ns(&st->st_mtim);
        mask |= META_SET_MTIME;
    }
    if (to_set & FUSE_SET_ATTR_CTIME) {
        values.ctime_ns = timespec_ns(&st->st_ctim);
        mask |= META_SET_CTIME;
    }
    struct meta_attr attr;
    int rc = 0;
    if ((mask & META_SET_SIZE) && fi) {
        /* ftruncate on an open handle: the working copy is this fd's file. */
        struct handle *handle = (struct handle *)(uintptr_t)fi->fh;
        if (ftruncate(handle->fd, st->st_size) != 0)
            rc = -errno;
    }
    pthread_mutex_lock(&fs->lock);
    /* chown always kills set-ID bits; truncate when the caller lacks CAP_FSETID. */
    bool kill = fs_pt_killpriv(fs->pt) && !(mask & META_SET_MODE) &&
                ((mask & (META_SET_UID | META_SET_GID)) ||
                 ((mask & META_SET_SIZE) && fs_pt_kill_suidgid(fs->pt)));
    mode_t killed;
    if (!rc && kill && (rc = meta_replica_getattr(&attr, fs->replica, ino)) == 0 &&
        mode_killed(&attr, &killed)) {
        values.mode = killed;
        mask |= META_SET_MODE;
    }
    if (!rc)
        rc = meta_replica_setattr(&attr, fs->replica, ino, &values, mask);
    if (!rc && (mask & META_SET_MODE))
        writer_check_setid(fs, ino);
    unlock_changed(fs);
    if (rc) {
        report(fs, "setattr", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    if (mask & META_SET_SIZE)
        writer_mark(fs, ino);
    reply_attr(req, &attr);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_of(req);
    char *target = NULL;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_readlink(&target, fs->replica, ino);
    pthread_mutex_unlock(&fs->lock);
    if (rc) {
        fuse_reply_err(req, -rc);
        return;
    }
    fuse_reply_readlink(req, target);
    free(target);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    struct fs *fs = fs_of(req);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct meta_attr attr;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_mknod(&attr, fs->replica, parent, name, mode & ~ctx->umask, rdev,
                                ctx->uid, ctx->gid);
    unlock_changed(fs);
    if (rc) {
        report(fs, "mknod", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    reply_entry(req, &attr);
    if (S_ISREG(mode))
        pool_poke(fs);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct fs *fs = fs_of(req);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct meta_attr attr;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_mkdir(&attr, fs->replica, parent, name, mode & ~ctx->umask, ctx->uid,
                                ctx->gid);
    unlock_changed(fs);
    if (rc) {
        report(fs, "mkdir", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    reply_entry(req, &attr);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct meta_attr attr;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_symlink(&attr, fs->replica, parent, name, link, ctx->uid, ctx->gid);
    unlock_changed(fs);
    if (rc) {
        report(fs, "symlink", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    reply_entry(req, &attr);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_unlink(fs->replica, parent, name);
    unlock_changed(fs);
    report(fs, "unlink", rc);
    fuse_reply_err(req, -rc);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_rmdir(fs->replica, parent, name);
    unlock_changed(fs);
    report(fs, "rmdir", rc);
    fuse_reply_err(req, -rc);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    struct fs *fs = fs_of(req);
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    unsigned meta_flags = ((flags & RENAME_NOREPLACE) ? META_RENAME_NOREPLACE : 0) |
                          ((flags & RENAME_EXCHANGE) ? META_RENAME_EXCHANGE : 0);
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_rename(fs->replica, parent, name, newparent, newname, meta_flags);
    unlock_changed(fs);
    report(fs, "rename", rc);
    fuse_reply_err(req, -rc);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    /* A node has one parent in the tree CRDT: hard links cannot exist (README). */
    (void)ino;
    (void)newparent;
    (void)newname;
    fuse_reply_err(req, EPERM);
}

/* Opens the working copy and records the handle; the caller replies. */
static int open_handle(struct fs *fs, struct handle **out, fuse_ino_t ino, int flags)
{
    struct handle *handle = calloc(1, sizeof(*handle));
    if (!handle)
        return -ENOMEM;
    handle->ino = ino;
    bool writable = (flags & O_ACCMODE) != O_RDONLY;
    int open_flags = flags & (O_ACCMODE | O_TRUNC | O_APPEND);
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_open_file(&handle->fd, fs->replica, ino, open_flags);
    if (!rc && writable) {
        rc = writer_add(fs, ino);
        if (!rc) {
            handle->writer = *writer_slot(fs, ino);
            if (handle->writer->count == 1)
                rc = meta_replica_set_writer(fs->replica, ino, true);
        }
        if (rc)
            close(handle->fd);
        else if (flags & O_TRUNC)
            handle_wrote(handle);
    }
    if (!rc) {
        /* Under the lock: the working copy is pinned before a remote change can replace it. */
        int32_t backing_id = 0;
        handle->mode = fs_pt_open(fs->pt, ino, handle->fd, &backing_id);
        if (handle->mode == FS_PT_PASSTHROUGH && handle->writer)
            writer_probe(handle->writer, handle->fd);
    }
    unlock_changed(fs);
    if (rc) {
        free(handle);
        return rc;
    }
    *out = handle;
    return 0;
}

/* The open reply's flags for a handle (fs/passthrough patches in its backing id). */
static void handle_open_flags(const struct handle *handle, struct fuse_file_info *fi)
{
    fi->fh = (uint64_t)(uintptr_t)handle;
    /* The page cache stays valid across opens: remote changes invalidate it explicitly. */
    fi->keep_cache = handle->mode == FS_PT_CACHED;
    fi->direct_io = handle->mode == FS_PT_DIRECT;
    /* close(2) has nothing to wait for (op_flush): spare it a request. */
    fi->noflush = 1;
}

/* Undoes an open whose reply found the opener gone (interrupted), as a release would. */
static void undo_open(struct fs *fs, struct handle *handle)
{
    if (handle->writer) {
        pthread_mutex_lock(&fs->lock);
        if (writer_drop(fs, handle->ino) &&
            meta_replica_set_writer(fs->replica, handle->ino, false) != 0)
            fs_log(LOG_WARNING, "out of memory updating the writer list");
        pthread_mutex_unlock(&fs->lock);
    }
    if (handle->mode == FS_PT_PASSTHROUGH)
        fs_pt_release(fs->pt, handle->ino);
    close(handle->fd);
    free(handle);
}

/* True if process `pid` has CAP_FSETID (its CapEff in /proc; uid 0 if that cannot be read). */
static bool caller_has_fsetid(pid_t pid, uid_t uid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *status = fopen(path, "re");
    if (!status)
        return uid == 0;
    bool found = false, has = uid == 0;
    while (!found && fgets(line, sizeof(line), status)) {
        unsigned long long caps;
        if (sscanf(line, "CapEff: %llx", &caps) == 1) {
            found = true;
            has = caps & (1ULL << CAP_FSETID);
        }
    }
    fclose(status);
    return has;
}

/*
 * A passed-through writer's writes never reach weft, so the set-ID bits the
 * first write would kill (mode_killed) go when a caller without CAP_FSETID
 * opens the file for writing. Linux kills them at the first write instead;
 * the difference shows only for a file opened for writing and never written.
 */
static void kill_privs_at_open(struct fs *fs, fuse_req_t req, const struct handle *handle)
{
    if (handle->mode != FS_PT_PASSTHROUGH || !handle->writer || !fs_pt_killpriv(fs->pt))
        return;
    pthread_mutex_lock(&fs->lock);
    struct meta_attr attr;
    mode_t mode;
    bool has_bits =
        meta_replica_getattr(&attr, fs->replica, handle->ino) == 0 && mode_killed(&attr, &mode);
    pthread_mutex_unlock(&fs->lock);
    /* Only files with set-ID bits pay for reading the caller's capabilities. */
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    if (has_bits && !caller_has_fsetid(ctx->pid, ctx->uid))
        report(fs, "killing set-ID bits", kill_privs(fs, handle->ino));
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct handle *handle;
    int rc = 0;
    if ((fi->flags & O_TRUNC) && fs_pt_kill_suidgid(fs->pt))
        rc = kill_privs(fs, ino);
    if (!rc)
        rc = open_handle(fs, &handle, ino, fi->flags);
    if (rc) {
        report(fs, "open", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    kill_privs_at_open(fs, req, handle);
    handle_open_flags(handle, fi);
    if (fuse_reply_open(req, fi) == -ENOENT)
        undo_open(fs, handle);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    struct meta_attr attr;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_mknod(&attr, fs->replica, parent, name,
                                (mode & ~ctx->umask & 07777) | S_IFREG, 0, ctx->uid, ctx->gid);
    unlock_changed(fs);
    struct handle *handle = NULL;
    if (!rc)
        rc = open_handle(fs, &handle, attr.ino, fi->flags & ~(O_CREAT | O_EXCL));
    if (rc) {
        report(fs, "create", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    /* A new file has set-ID bits only if created with them: spare the others a lookup. */
    if (attr.mode & (S_ISUID | S_ISGID))
        kill_privs_at_open(fs, req, handle);
    handle_open_flags(handle, fi);
    struct fuse_entry_param entry;
    memset(&entry, 0, sizeof(entry));
    entry.ino = attr.ino;
    entry.generation = 1;
    to_stat(&entry.attr, &attr);
    entry.attr_timeout = fs->options->attr_timeout;
    entry.entry_timeout = fs->options->entry_timeout;
    if (fuse_reply_create(req, &entry, fi) == -ENOENT)
        undo_open(fs, handle);
    pool_poke(fs);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino;
    struct handle *handle = (struct handle *)(uintptr_t)fi->fh;
    /* Let libfuse splice straight from the working copy: no copy through us. */
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    buf.buf[0].fd = handle->fd;
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
                         struct fuse_file_info *fi)
{
    struct handle *handle = (struct handle *)(uintptr_t)fi->fh;
    struct fs *fs = fs_of(req);
    if (fs_pt_kill_suidgid(fs->pt) && handle->writer &&
        __atomic_exchange_n(&handle->writer->check_setid, false, __ATOMIC_RELAXED)) {
        int rc = kill_privs(fs, ino);
        if (rc) {
            __atomic_store_n(&handle->writer->check_setid, true, __ATOMIC_RELAXED);
            report(fs, "write", rc);
            fuse_reply_err(req, -rc);
            return;
        }
    }
    struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
    out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    out.buf[0].fd = handle->fd;
    out.buf[0].pos = off;
    ssize_t written = fuse_buf_copy(&out, in, 0);
    if (written < 0) {
        fuse_reply_err(req, (int)-written);
        return;
    }
    handle_wrote(handle);
    fuse_reply_write(req, (size_t)written);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    /* close(2) reports nothing the release commit could fail with later: reply now. */
    fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct handle *handle = (struct handle *)(uintptr_t)fi->fh;
    int rc = 0;
    if (handle->writer) {
        /*
         * The last writer's close is a commit point. The commit itself runs on
         * the committer thread moments later, batched with the other files
         * closed meanwhile (a build or an unpacked archive closes thousands):
         * close(2) does not wait for it, and until then reads, getattr and
         * fsync see the working copy exactly as written.
         */
        pthread_mutex_lock(&fs->lock);
        bool last = writer_drop(fs, ino);
        if (last && meta_replica_set_writer(fs->replica, ino, false) != 0)
            fs_log(LOG_WARNING, "out of memory updating the writer list");
        /* Commits of a clean file cost nothing: queue every last close of a writer. */
        if (last)
            rc = closed_add(fs, ino);
        pthread_mutex_unlock(&fs->lock);
        if (rc)
            fs_log(LOG_ERR,
                   "out of memory queueing the commit of inode %" PRIu64
                   "; it is committed at the next fsync or mount",
                   (uint64_t)ino);
        else if (last)
            wake_committer(fs);
    }
    if (handle->mode == FS_PT_PASSTHROUGH)
        fs_pt_release(fs->pt, ino);
    close(handle->fd);
    free(handle);
    fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct fs *fs = fs_of(req);
    struct handle *handle = (struct handle *)(uintptr_t)fi->fh;
    int rc = datasync ? fdatasync(handle->fd) : fsync(handle->fd);
    rc = rc ? -errno : 0;
    if (!rc) {
        pthread_mutex_lock(&fs->lock);
        rc = meta_replica_fsync(fs->replica, ino);
        if (!rc && handle->writer)
            writer_take_dirty(handle->writer);
        pthread_mutex_unlock(&fs->lock);
    }
    report(fs, "fsync", rc);
    fuse_reply_err(req, -rc);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    struct fs *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_fsync(fs->replica, 0);
    pthread_mutex_unlock(&fs->lock);
    report(fs, "fsyncdir", rc);
    fuse_reply_err(req, -rc);
}

struct dir_fill {
    fuse_req_t req;
    char *buf;
    size_t size, used;
    bool plus;
    struct fs *fs;
};

static int dir_fill_one(struct dir_fill *fill, const char *name, const struct meta_attr *attr,
                        off_t next)
{
    size_t room = fill->size - fill->used;
    size_t need;
    if (fill->plus) {
        struct fuse_entry_param entry;
        memset(&entry, 0, sizeof(entry));
        entry.ino = attr->ino;
        entry.generation = 1;
        to_stat(&entry.attr, attr);
        entry.attr_timeout = fill->fs->options->attr_timeout;
        entry.entry_timeout = fill->fs->options->entry_timeout;
        need = fuse_add_direntry_plus(fill->req, fill->buf + fill->used, room, name, &entry, next);
    } else {
        struct stat st;
        to_stat(&st, attr);
        need = fuse_add_direntry(fill->req, fill->buf + fill->used, room, name, &st, next);
    }
    if (need > room)
        return 1; /* full: the kernel asks again from `next` */
    fill->used += need;
    return 0;
}

static int dir_each(void *ctx, const struct meta_dirent *entry, uint64_t next_offset)
{
    return dir_fill_one(ctx, entry->name, &entry->attr, (off_t)next_offset);
}

/*
 * Offsets: 0 is ".", 1 is "..", and from 2 on the replica's own offsets
 * (which never go below 2), so a listing resumes where it stopped even when
 * entries come and go in between.
 */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
    struct fs *fs = fs_of(req);
    struct dir_fill fill = {.req = req, .size = size, .plus = plus, .fs = fs};
    fill.buf = malloc(size);
    if (!fill.buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_mutex_lock(&fs->lock);
    struct meta_attr self;
    int rc = meta_replica_getattr(&self, fs->replica, ino);
    if (!rc && off < 1 && dir_fill_one(&fill, ".", &self, 1))
        goto done;
    if (!rc && off < 2) {
        /* ".." 's attributes are not used by the kernel; the directory's own will do. */
        struct meta_attr parent = self;
        if (dir_fill_one(&fill, "..", &parent, 2))
            goto done;
    }
    if (!rc)
        rc = meta_replica_readdir(fs->replica, ino, off < 2 ? 2 : (uint64_t)off, dir_each, &fill);
done:
    pthread_mutex_unlock(&fs->lock);
    if (rc) {
        report(fs, "readdir", rc);
        fuse_reply_err(req, -rc);
    } else {
        fuse_reply_buf(req, fill.buf, fill.used);
    }
    free(fill.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    (void)fi;
    do_readdir(req, ino, size, off, true);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct fs *fs = fs_of(req);
    struct statvfs st;
    if (statvfs(meta_store_dir(meta_replica_store(fs->replica)), &st) != 0) {
        fuse_reply_err(req, errno);
        return;
    }
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    /* default_permissions: the kernel checks mode bits; only existence is ours. */
    (void)mask;
    struct fs *fs = fs_of(req);
    struct meta_attr attr;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_getattr(&attr, fs->replica, ino);
    pthread_mutex_unlock(&fs->lock);
    fuse_reply_err(req, -rc);
}

/* ---------- xattrs, and weft's virtual ones ---------- */

static void reply_xattr_value(fuse_req_t req, const void *value, size_t len, size_t size)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (len > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, value, len);
}

static void json_string(FILE *out, const char *text)
{
    fputc('"', out);
    for (const unsigned char *at = (const unsigned char *)text; *at; at++) {
        if (*at == '"' || *at == '\\')
            fprintf(out, "\\%c", *at);
        else if (*at < 0x20)
            fprintf(out, "\\u%04x", *at);
        else
            fputc(*at, out);
    }
    fputc('"', out);
}

/*
 * The history of a file, malloc'ed: as JSON (what `weft log --json` prints)
 * or as the table `weft log` prints.
 */
static int history(char **out, size_t *out_len, struct fs *fs, uint64_t ino, bool as_json)
{
    struct meta_id id;
    struct meta_log_entry *entries = NULL;
    size_t count = 0;
    int rc = meta_replica_node_id(&id, fs->replica, ino);
    if (!rc)
        rc = meta_replica_log(&entries, &count, fs->replica, ino);
    if (rc)
        return rc;
    FILE *json = open_memstream(out, out_len);
    if (!json) {
        free(entries);
        return -ENOMEM;
    }
    if (!as_json) {
        fprintf(json, "node: ");
        for (int i = 0; i < META_ID_LEN; i++)
            fprintf(json, "%02x", id.bytes[i]);
        fprintf(json, "\n%-28s %-20s %-16s %12s  %s\n", "VERSION", "TIME (UTC)", "DEVICE", "SIZE",
                "KIND");
        for (size_t i = 0; i < count; i++) {
            const struct meta_log_entry *entry = &entries[i];
            char when[64], version[64];
            time_t secs = (time_t)(entry->time_ns / 1000000000);
            struct tm tm;
            gmtime_r(&secs, &tm);
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
            snprintf(version, sizeof(version), "%" PRIu64 ".%016" PRIx64, entry->ts.counter,
                     entry->ts.replica);
            fprintf(json, "%-28s %-20s %-16s %12" PRIu64 "  %s\n", version, when,
                    entry->author_name, entry->size, entry->text ? "text" : "binary");
        }
        if (count == 0)
            fprintf(json, "(no versions yet: the file has not been written)\n");
        free(entries);
        return fclose(json) == 0 ? 0 : -ENOMEM;
    }
    fprintf(json, "{\"node\": \"");
    for (int i = 0; i < META_ID_LEN; i++)
        fprintf(json, "%02x", id.bytes[i]);
    fprintf(json, "\", \"versions\": [");
    for (size_t i = 0; i < count; i++) {
        const struct meta_log_entry *entry = &entries[i];
        char when[64];
        time_t secs = (time_t)(entry->time_ns / 1000000000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(json, "%s{\"version\": \"%" PRIu64 ".%016" PRIx64 "\", \"time\": \"%s\", ",
                i ? ", " : "", entry->ts.counter, entry->ts.replica, when);
        fprintf(json, "\"author\": ");
        json_string(json, entry->author_name);
        fprintf(json, ", \"size\": %" PRIu64 ", \"text\": %s}", entry->size,
                entry->text ? "true" : "false");
    }
    fprintf(json, "]}\n");
    free(entries);
    return fclose(json) == 0 ? 0 : -ENOMEM;
}

/*
 * The mount's status for `weft status`: one JSON object (no keys, nothing
 * secret): what serves file data, then the syncer's figures.
 */
static int sync_status_json(char **out, size_t *len, struct fs *fs)
{
    struct sync_agent_status st = {0};
    if (fs->agent)
        sync_agent_status(&st, fs->agent);
    char why[160];
    bool passthrough = fs_pt_describe(fs->pt, why, sizeof(why));
    uint64_t conflicts = 0;
    if (meta_replica_count_conflicts(&conflicts, fs->replica) != 0)
        conflicts = 0; /* a status line is not worth failing over */
    uint64_t refused = st.undecodable;
    for (int i = 0; i < SYNC_REASON_COUNT; i++)
        refused += st.device.refused[i];
    FILE *json = open_memstream(out, len);
    if (!json)
        return -ENOMEM;
    fprintf(json,
            "{\"file_data\": \"%s\", \"file_data_why\": ", passthrough ? "passthrough" : "daemon");
    json_string(json, why);
    fprintf(json, ", \"relay\": ");
    if (fs->options->relay)
        json_string(json, fs->options->relay);
    else
        fprintf(json, "null");
    fprintf(json,
            ", \"relay_connected\": %s, \"relay_last_seen_ns\": %lld, "
            "\"peers_connected\": %u, \"listen_port\": %u, "
            "\"records_sealed\": %llu, \"records_applied\": %llu, "
            "\"records_pending\": %llu, \"records_refused\": %llu, "
            "\"records_sent\": %llu, \"records_received\": %llu, \"forks\": %llu, "
            "\"rollbacks\": %llu, \"records_unacked\": %llu, "
            "\"relay_records\": %llu, \"conflicts\": %llu, \"last_error\": ",
            st.relay_connected ? "true" : "false", (long long)st.relay_last_seen_ns,
            st.peers_connected, st.listen_port, (unsigned long long)st.device.records_sealed,
            (unsigned long long)st.device.records_applied, (unsigned long long)st.device.pending,
            (unsigned long long)refused, (unsigned long long)st.records_sent,
            (unsigned long long)st.records_received, (unsigned long long)st.forks,
            (unsigned long long)st.rollbacks, (unsigned long long)st.records_unacked,
            (unsigned long long)st.relay_records, (unsigned long long)conflicts);
    json_string(json, st.last_error);
    fputc('}', json);
    return fclose(json) == 0 ? 0 : -ENOMEM;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fs *fs = fs_of(req);
    uint8_t *value = NULL;
    size_t len = 0;
    int rc;
    pthread_mutex_lock(&fs->lock);
    if (!strcmp(name, XATTR_NODE)) {
        struct meta_id id;
        rc = meta_replica_node_id(&id, fs->replica, ino);
        if (!rc && (value = malloc(2 * META_ID_LEN + 1))) {
            for (int i = 0; i < META_ID_LEN; i++)
                sprintf((char *)value + 2 * i, "%02x", id.bytes[i]);
            len = 2 * META_ID_LEN;
        } else if (!rc) {
            rc = -ENOMEM;
        }
    } else if (!strcmp(name, XATTR_SYNC) && ino == FUSE_ROOT_ID) {
        rc = sync_status_json((char **)&value, &len, fs);
    } else if (!strcmp(name, XATTR_DEVICES) && ino == FUSE_ROOT_ID) {
        rc = sync_devices_text((char **)&value, meta_replica_store(fs->replica));
        len = value ? strlen((char *)value) : 0;
    } else if (!strcmp(name, XATTR_INVITE) && ino == FUSE_ROOT_ID) {
        rc = fs->invite ? 0 : -ENODATA;
        if (!rc && !(value = (uint8_t *)strdup(fs->invite)))
            rc = -ENOMEM;
        len = value ? strlen((char *)value) : 0;
    } else if (!strcmp(name, XATTR_LOG) || !strcmp(name, XATTR_HISTORY)) {
        /* Files waiting for the committer (closed, saved) are history already, for users. */
        commit_closed(fs);
        commit_group(fs);
        rc = history((char **)&value, &len, fs, ino, !strcmp(name, XATTR_LOG));
    } else {
        rc = meta_replica_getxattr(&value, &len, fs->replica, ino, name);
    }
    unlock_changed(fs); /* history commits closed files */
    if (rc)
        fuse_reply_err(req, -rc);
    else
        reply_xattr_value(req, value, len, size);
    free(value);
}

/*
 * `weft invite` on a mounted share: the daemon holds the store, so it makes
 * the device and the token (read back through getxattr). Called under lock;
 * the relay is told through the agent once the lock is released.
 */
static int make_invite(struct fs *fs, const char *device, size_t size)
{
    char name[META_NAME_MAX + 1], token[SYNC_INVITE_TEXT_MAX], why[512] = "";
    if (size == 0 || size > META_NAME_MAX)
        return -EINVAL;
    memcpy(name, device, size);
    name[size] = '\0';
    uint8_t key[SYNC_PUBLIC_KEY_LEN];
    int rc = sync_invite_make(token, sizeof(token), why, sizeof(why), fs->replica,
                              fs->options->share_name, name, key);
    if (rc) {
        fs_log(LOG_WARNING, "invite: %s", why);
        return rc == -ENOENT ? -ENOENT : rc;
    }
    if (fs->invite)
        sodium_memzero(fs->invite, strlen(fs->invite));
    free(fs->invite);
    fs->invite = strdup(token);
    sodium_memzero(token, sizeof(token));
    if (fs->agent) {
        pthread_mutex_unlock(&fs->lock);
        rc = sync_agent_member(fs->agent, SYNC_MEMBER_ADD, key);
        pthread_mutex_lock(&fs->lock);
        sync_agent_poke(fs->agent); /* the membership op goes out at once */
    }
    return fs->invite ? rc : -ENOMEM;
}

/*
 * `weft peer add` on a mounted share: the address joins the share's peers
 * (setting sync.peers, kept for the next mounts) and the agent dials it now.
 * Called under lock.
 */
static int add_peer(struct fs *fs, const char *value, size_t size)
{
    char addr[300], host[256];
    uint16_t port;
    if (size == 0 || size >= sizeof(addr))
        return -EINVAL;
    memcpy(addr, value, size);
    addr[size] = '\0';
    if (sync_net_parse_addr(host, sizeof(host), &port, addr, false) != 0)
        return -EINVAL;
    int rc = sync_peer_remember(meta_replica_store(fs->replica), addr);
    if (!rc && fs->agent)
        rc = sync_agent_add_peer(fs->agent, addr);
    else if (!rc)
        fs_log(LOG_INFO, "peer %s noted; it syncs from the next mount", addr);
    return rc;
}

/* `weft device remove` on a mounted share (under lock): new key epoch, relay told, pushed. */
static int remove_device(struct fs *fs, const char *value, size_t size)
{
    char name[META_NAME_MAX + 1], why[256] = "";
    if (size == 0 || size > META_NAME_MAX)
        return -EINVAL;
    memcpy(name, value, size);
    name[size] = '\0';
    uint8_t key[SYNC_PUBLIC_KEY_LEN];
    int rc = sync_device_remove(key, why, sizeof(why), fs->replica, name);
    if (rc) {
        fs_log(LOG_WARNING, "device remove: %s", why);
        return rc;
    }
    if (fs->agent) {
        pthread_mutex_unlock(&fs->lock);
        rc = sync_agent_member(fs->agent, SYNC_MEMBER_REVOKE, key);
        pthread_mutex_lock(&fs->lock);
        sync_agent_poke(fs->agent);
    }
    return rc;
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    struct fs *fs = fs_of(req);
    int rc;
    pthread_mutex_lock(&fs->lock);
    if (!strcmp(name, XATTR_INVITE) && ino == FUSE_ROOT_ID) {
        rc = make_invite(fs, value, size);
    } else if (!strcmp(name, XATTR_PEER) && ino == FUSE_ROOT_ID) {
        rc = add_peer(fs, value, size);
    } else if (!strcmp(name, XATTR_REMOVE) && ino == FUSE_ROOT_ID) {
        rc = remove_device(fs, value, size);
    } else if (!strcmp(name, XATTR_RESTORE)) {
        /* "COUNTER.REPLICA" as `weft log` prints versions. */
        char text[64];
        struct crdt_ts ts = {0, 0};
        rc = -EINVAL;
        if (size < sizeof(text)) {
            memcpy(text, value, size);
            text[size] = '\0';
            char *dot;
            ts.counter = strtoull(text, &dot, 10);
            if (*dot == '.') {
                char *end;
                ts.replica = strtoull(dot + 1, &end, 16);
                if (*end == '\0' && ts.counter)
                    rc = meta_replica_restore(fs->replica, ino, ts);
            }
        }
    } else if (!strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX))) {
        rc = -EPERM; /* weft's own names are not stored */
    } else if (strncmp(name, "user.", 5) && strncmp(name, "trusted.", 8) &&
               strncmp(name, "security.", 9)) {
        rc = -EOPNOTSUPP; /* no POSIX ACLs (system.*), and no namespace Linux does not know */
    } else {
        rc = meta_replica_setxattr(fs->replica, ino, name, value, size, flags);
        unlock_changed(fs);
        report(fs, "setxattr", rc);
        fuse_reply_err(req, -rc);
        return;
    }
    /* weft's own commands take effect at once, as the command line expects. */
    commit_group(fs);
    pthread_mutex_unlock(&fs->lock);
    report(fs, "setxattr", rc);
    fuse_reply_err(req, -rc);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fs *fs = fs_of(req);
    char *names = NULL;
    size_t len = 0;
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_listxattr(&names, &len, fs->replica, ino);
    pthread_mutex_unlock(&fs->lock);
    if (rc)
        fuse_reply_err(req, -rc);
    else
        reply_xattr_value(req, names, len, size);
    free(names);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    struct fs *fs = fs_of(req);
    pthread_mutex_lock(&fs->lock);
    int rc = meta_replica_removexattr(fs->replica, ino, name);
    unlock_changed(fs);
    report(fs, "removexattr", rc);
    fuse_reply_err(req, -rc);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
    (void)ino;
    struct handle *handle = (struct handle *)(uintptr_t)fi->fh;
    int rc = fallocate(handle->fd, mode, offset, length) ? -errno : 0;
    if (!rc)
        handle_wrote(handle);
    fuse_reply_err(req, -rc);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    (void)ino;
    struct handle *handle = (struct handle *)(uintptr_t)fi->fh;
    off_t at = lseek(handle->fd, off, whence);
    if (at < 0)
        fuse_reply_err(req, errno);
    else
        fuse_reply_lseek(req, at);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs *fs = userdata;
    fs_pt_init(fs->pt, fuse_session_fd(fs->session));
    /*
     * Reads of files not passed through are spliced from the working copy
     * to the kernel (io_splice_send). Requests are never spliced in:
     * fs/passthrough must see each one as bytes, and libfuse offers
     * FUSE_CAP_SPLICE_READ only with a splice_receive hook, which weft has not.
     */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE)
        conn->want |= FUSE_CAP_SPLICE_MOVE;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    /* O_TRUNC arrives with open, so a truncate-and-write save is one request, not two. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    conn->max_write = 1024 * 1024;
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .symlink = op_symlink,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write_buf = op_write_buf,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .access = op_access,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
};

/* ---------- remote changes and the commit timer ---------- */

static void on_change(void *ctx, const struct meta_change *change)
{
    struct fs *fs = ctx;
    /* Called under fs->lock, as every change of the replica is. */
    if (change->kind == META_CHANGE_ATTR)
        writer_check_setid(fs, change->ino);
    if (!change->remote) {
        /* The kernel made local changes itself and knows them; peers do not yet. */
        sync_agent_poke(fs->agent);
        return;
    }
    struct queued_change *queued = calloc(1, sizeof(*queued));
    if (!queued) {
        fs_log(LOG_WARNING, "out of memory: a remote change may show late");
        return;
    }
    queued->change = *change;
    if (change->name) {
        snprintf(queued->name, sizeof(queued->name), "%s", change->name);
        queued->change.name = queued->name;
    }
    pthread_mutex_lock(&fs->queue_lock);
    *fs->queue_tail = queued;
    fs->queue_tail = &queued->next;
    pthread_cond_signal(&fs->queue_cond);
    pthread_mutex_unlock(&fs->queue_lock);
}

static void *notifier_main(void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&fs->queue_lock);
    for (;;) {
        while (!fs->queue_head && !fs->stopping)
            pthread_cond_wait(&fs->queue_cond, &fs->queue_lock);
        if (!fs->queue_head && fs->stopping)
            break;
        struct queued_change *batch = fs->queue_head;
        fs->queue_head = NULL;
        fs->queue_tail = &fs->queue_head;
        pthread_mutex_unlock(&fs->queue_lock);
        /* No lock is held here: the kernel may need our handlers to finish these. */
        while (batch) {
            struct queued_change *next = batch->next;
            const struct meta_change *change = &batch->change;
            switch (change->kind) {
            case META_CHANGE_CONTENT:
                fuse_lowlevel_notify_inval_inode(fs->session, change->ino, 0, 0);
                break;
            case META_CHANGE_ATTR:
                fuse_lowlevel_notify_inval_inode(fs->session, change->ino, -1, 0);
                break;
            case META_CHANGE_ENTRY:
                fuse_lowlevel_notify_inval_entry(fs->session, change->parent, change->name,
                                                 strlen(change->name));
                break;
            }
            free(batch);
            batch = next;
        }
        pthread_mutex_lock(&fs->queue_lock);
    }
    pthread_mutex_unlock(&fs->queue_lock);
    return NULL;
}

static void *committer_main(void *arg)
{
    struct fs *fs = arg;
    struct timespec next_periodic;
    clock_gettime(CLOCK_REALTIME, &next_periodic);
    next_periodic.tv_sec += fs->options->commit_interval_s;
    pthread_mutex_lock(&fs->queue_lock);
    while (!fs->stopping) {
        int waited = 0;
        while (!fs->stopping && !fs->commit_wanted && waited != ETIMEDOUT)
            waited = pthread_cond_timedwait(&fs->commit_cond, &fs->queue_lock, &next_periodic);
        if (fs->stopping)
            break;
        bool wanted = fs->commit_wanted;
        fs->commit_wanted = false;
        pthread_mutex_unlock(&fs->queue_lock);
        if (wanted && waited != ETIMEDOUT) {
            /* Let the files closed in the next few milliseconds join this commit. */
            struct timespec gather = {0, 20 * 1000 * 1000};
            nanosleep(&gather, NULL);
            pthread_mutex_lock(&fs->lock);
            commit_closed(fs);
            commit_group(fs);
            pthread_mutex_unlock(&fs->lock);
            pthread_mutex_lock(&fs->queue_lock);
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &next_periodic);
        next_periodic.tv_sec += fs->options->commit_interval_s;
        /* Files held open for writing a long time still get committed now and then. */
        pthread_mutex_lock(&fs->lock);
        commit_closed(fs);
        for (struct writer *writer = fs->writers; writer; writer = writer->next) {
            writer_look(writer);
            if (!writer_take_dirty(writer))
                continue;
            int rc = meta_replica_commit(fs->replica, writer->ino);
            if (rc)
                fs_log(LOG_ERR, "periodic commit of inode %" PRIu64 " failed: %s (%s)", writer->ino,
                       strerror(-rc), meta_replica_errmsg(fs->replica));
            else
                continue;
            __atomic_store_n(&writer->dirty, true, __ATOMIC_RELAXED); /* retry next time */
        }
        commit_group(fs);
        pthread_mutex_unlock(&fs->lock);
        pthread_mutex_lock(&fs->queue_lock);
    }
    pthread_mutex_unlock(&fs->queue_lock);
    return NULL;
}

/* ---------- serving ---------- */

void fs_options_init(struct fs_options *options)
{
    memset(options, 0, sizeof(*options));
    options->entry_timeout = 10.0;
    options->attr_timeout = 10.0;
    options->commit_interval_s = 30;
    options->ready_fd = -1;
}

static void tell_ready(const struct fs_options *options, const char *message)
{
    if (options->ready_fd < 0)
        return;
    size_t len = strlen(message);
    /* The parent reads until EOF; a short write here only shortens its message. */
    if (write(options->ready_fd, message, len) != (ssize_t)len) {
    }
}

/*
 * The sync agent's lock: it reads the op log to seal and send, so the open
 * group is committed first (a peer must never hold an op a crash could take
 * back here).
 */
static void fs_lock(void *ctx)
{
    struct fs *fs = ctx;
    pthread_mutex_lock(&fs->lock);
    commit_group(fs);
}

static void fs_unlock(void *ctx)
{
    pthread_mutex_unlock(&((struct fs *)ctx)->lock);
}

static void sync_log(void *ctx, enum sync_net_log_level level, const char *line)
{
    (void)ctx;
    static const int priorities[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    if (level <= SYNC_NET_LOG_INFO)
        fs_log(priorities[level], "sync: %s", line);
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
    return fs_pt_read(((struct fs *)userdata)->pt, fd, buf, len);
}

/* Read replies only (fuse_reply_data): never one fs/passthrough patches. */
static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                              unsigned int flags, void *userdata)
{
    (void)userdata;
    return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    return fs_pt_writev(((struct fs *)userdata)->pt, fd, iov, count);
}

int fs_serve(struct meta_replica *replica, const struct fs_options *options, char *errbuf,
             size_t errlen)
{
    struct fs fs = {.replica = replica, .options = options};
    pthread_mutex_init(&fs.lock, NULL);
    pthread_mutex_init(&fs.queue_lock, NULL);
    pthread_cond_init(&fs.queue_cond, NULL);
    pthread_cond_init(&fs.commit_cond, NULL);
    pthread_cond_init(&fs.pool_cond, NULL);
    fs.queue_tail = &fs.queue_head;

    char opts[512];
    snprintf(opts, sizeof(opts), "default_permissions,fsname=%s,subtype=weft%s%s",
             options->fsname ? options->fsname : "weft", options->allow_other ? ",allow_other" : "",
             options->read_only ? ",ro" : "");
    char *argv[] = {"weft", "-o", opts, options->debug ? "-d" : NULL, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(options->debug ? 4 : 3, argv);
    int rc = 0;
    fs.pt = fs_pt_new(!options->no_passthrough);
    if (!fs.pt) {
        snprintf(errbuf, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    fs.session = fuse_session_new(&args, &ops, sizeof(ops), &fs);
    if (!fs.session) {
        snprintf(errbuf, errlen, "could not start a FUSE session (is /dev/fuse there?)");
        rc = -EIO;
        goto out;
    }
    if (fuse_set_signal_handlers(fs.session) != 0) {
        snprintf(errbuf, errlen, "could not install signal handlers");
        rc = -EIO;
        goto out_session;
    }
    if (fuse_session_mount(fs.session, options->mountpoint) != 0) {
        snprintf(errbuf, errlen,
                 "could not mount on %s (see the messages above; is it an empty directory "
                 "you may write to, and is the fuse3 package installed?)",
                 options->mountpoint);
        rc = -EIO;
        goto out_signals;
    }
    /* Between libfuse and /dev/fuse, to speak the passthrough libfuse 3.14 cannot. */
    static const struct fuse_custom_io io = {
        .read = io_read, .writev = io_writev, .splice_send = io_splice_send};
    if (fuse_session_custom_io(fs.session, &io, fuse_session_fd(fs.session)) != 0) {
        snprintf(errbuf, errlen, "could not set up the FUSE session's I/O");
        fuse_session_unmount(fs.session);
        rc = -EIO;
        goto out_signals;
    }
    if (options->relay || options->listen || options->peers) {
        struct sync_agent_config sync = {.replica = replica,
                                         .records_dir = options->records_dir,
                                         .relay = options->relay,
                                         .listen = options->listen,
                                         .peers = options->peers,
                                         .lock = fs_lock,
                                         .unlock = fs_unlock,
                                         .lock_ctx = &fs,
                                         .log = sync_log,
                                         .backoff_max_ms = options->sync_backoff_max_ms};
        char why[512] = "";
        rc = sync_agent_start(&fs.agent, why, sizeof(why), &sync);
        if (rc) {
            snprintf(errbuf, errlen, "cannot start syncing: %s", why);
            fuse_session_unmount(fs.session);
            goto out_signals;
        }
    }
    meta_replica_subscribe(replica, on_change, &fs);
    meta_replica_set_wc_pinned(replica, fs_pt_pinned, fs.pt);
    if (meta_replica_set_grouped(replica, true) != 0)
        fs_log(LOG_WARNING, "changes are committed one by one: %s", meta_replica_errmsg(replica));
    pthread_create(&fs.notifier, NULL, notifier_main, &fs);
    pthread_create(&fs.committer, NULL, committer_main, &fs);
    bool pooling = !options->read_only;
    if (pooling)
        pthread_create(&fs.pooler, NULL, pooler_main, &fs);
    tell_ready(options, "ok\n");

    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config) {
        /*
         * Few workers: handlers that touch the replica take fs->lock anyway,
         * and the kernel hands each request to the longest-idle worker, so
         * with many of them nearly every request wakes a cold thread. On a
         * 2-core VM, 4 beat 16 on every fs-bench metadata workload (create,
         * stat, tar, git, saves: 0.4-0.9x the time) and 2 lost on git, whose
         * parallel lstats and reads want more than one request in flight.
         */
        fuse_loop_cfg_set_max_threads(config, 4);
        rc = fuse_session_loop_mt(fs.session, config);
        fuse_loop_cfg_destroy(config);
    } else {
        rc = fuse_session_loop(fs.session);
    }
    if (rc > 0)
        rc = 0; /* a signal ended the loop: that is how an unmount by signal looks */

    pthread_mutex_lock(&fs.queue_lock);
    fs.stopping = true;
    pthread_cond_broadcast(&fs.queue_cond);
    pthread_cond_broadcast(&fs.commit_cond);
    pthread_cond_broadcast(&fs.pool_cond);
    pthread_mutex_unlock(&fs.queue_lock);
    pthread_join(fs.notifier, NULL);
    pthread_join(fs.committer, NULL);
    if (pooling)
        pthread_join(fs.pooler, NULL);
    commit_closed(&fs);
    /*
     * Files still open for writing when the mount goes are committed now.
     * The list is taken first: the commits' change events look writers up.
     */
    struct writer *open_writers = fs.writers;
    fs.writers = NULL;
    for (struct writer *writer = open_writers, *next; writer; writer = next) {
        next = writer->next;
        if (meta_replica_set_writer(replica, writer->ino, false) == 0 &&
            meta_replica_commit(replica, writer->ino) != 0)
            fs_log(LOG_ERR, "commit at unmount failed: %s", meta_replica_errmsg(replica));
        if (writer->probe >= 0)
            close(writer->probe);
        free(writer);
    }
    commit_group(&fs);
    if (meta_replica_set_grouped(replica, false) != 0)
        fs_log(LOG_ERR, "the last changes were not committed: %s", meta_replica_errmsg(replica));
    /* Last: the final commits above are sealed and pushed as the agent stops. */
    if (fs.agent)
        sync_agent_poke(fs.agent);
    sync_agent_stop(fs.agent);
    meta_replica_subscribe(replica, NULL, NULL);
    meta_replica_set_wc_pinned(replica, NULL, NULL);
    fuse_session_unmount(fs.session);
out_signals:
    fuse_remove_signal_handlers(fs.session);
out_session:
    fuse_session_destroy(fs.session);
out:
    fs_pt_free(fs.pt);
    fuse_opt_free_args(&args);
    for (struct queued_change *queued = fs.queue_head, *next; queued; queued = next) {
        next = queued->next;
        free(queued);
    }
    pthread_cond_destroy(&fs.queue_cond);
    pthread_cond_destroy(&fs.commit_cond);
    pthread_cond_destroy(&fs.pool_cond);
    free(fs.closed);
    if (fs.invite)
        sodium_memzero(fs.invite, strlen(fs.invite));
    free(fs.invite);
    pthread_mutex_destroy(&fs.queue_lock);
    pthread_mutex_destroy(&fs.lock);
    return rc;
}
