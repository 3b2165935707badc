#include "fs/passthrough.h"

#include "fs/fs.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <unistd.h>

/* Protocol 7.40 (Linux 6.9), newer than the linux/fuse.h of Debian 12. */
#define PT_INIT_FLAG  (1ULL << 37) /* FUSE_PASSTHROUGH */
#define PT_FOPEN_FLAG (1u << 7)    /* FOPEN_PASSTHROUGH */
struct pt_backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define PT_IOC_BACKING_OPEN  _IOW(FUSE_DEV_IOC_MAGIC, 1, struct pt_backing_map)
#define PT_IOC_BACKING_CLOSE _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
/* fuse_init_out.max_stack_depth took the place of unused[0]. */
#define PT_MAX_STACK_DEPTH_OFFSET (offsetof(struct fuse_init_out, flags2) + 4)
/*
 * 1: the working copies must be on a file system that stacks on nothing
 * (ext4, xfs, btrfs...), and weft's mount can itself be under an overlay.
 */
#define PT_MAX_STACK_DEPTH 1u

/* An inode passed through: its backing id, shared by its open files. */
struct pt_inode {
    uint64_t ino;
    int32_t backing_id;
    unsigned opens;
    dev_t dev; /* the backing file, to tell a working copy replaced since */
    ino_t file_ino;
    struct pt_inode *next;
};

enum pt_state {
    PT_OFF,     /* not negotiated, or given up */
    PT_ASKED,   /* INIT reply asks for it; no backing file opened yet */
    PT_WORKING, /* a backing file was opened: it works here */
};

struct fs_pt {
    bool allowed;
    bool kernel_offers;   /* the INIT request had FUSE_PASSTHROUGH */
    bool killpriv_offers; /* ... and FUSE_HANDLE_KILLPRIV_V2 */
    bool killpriv;        /* the INIT reply agrees to it */
    int fd;               /* the session's /dev/fuse (for the ioctls) */
    pthread_mutex_t lock;
    enum pt_state state; /* under lock */
    char off_why[160];   /* under lock: why state is PT_OFF, for `weft status` */
    struct pt_inode *inodes;
};

/*
 * The request a worker thread is serving: libfuse reads a request, runs its
 * handler and writes the reply on one thread, so what the read noted (and
 * fs_pt_open decided) is found again by the reply's unique id.
 */
static _Thread_local struct {
    uint64_t unique;
    uint32_t opcode;
    int32_t backing_id; /* > 0: the open being served is passed through */
    bool kill_suidgid;  /* the kernel asks that set-user/group-ID be killed */
} current;

struct fs_pt *fs_pt_new(bool allowed)
{
    struct fs_pt *pt = calloc(1, sizeof(*pt));
    if (!pt)
        return NULL;
    pt->allowed = allowed;
    pt->fd = -1;
    pthread_mutex_init(&pt->lock, NULL);
    return pt;
}

void fs_pt_free(struct fs_pt *pt)
{
    if (!pt)
        return;
    for (struct pt_inode *inode = pt->inodes, *next; inode; inode = next) {
        next = inode->next;
        free(inode);
    }
    pthread_mutex_destroy(&pt->lock);
    free(pt);
}

ssize_t fs_pt_read(struct fs_pt *pt, int fd, void *buf, size_t len)
{
    ssize_t got = read(fd, buf, len);
    if (got < (ssize_t)sizeof(struct fuse_in_header))
        return got;
    const struct fuse_in_header *in = buf;
    current.unique = in->unique;
    current.opcode = in->opcode;
    current.backing_id = 0;
    current.kill_suidgid = false;
    size_t body = (size_t)got - sizeof(*in);
    const void *arg = in + 1;
    /* The flags libfuse 3.14 does not pass on: killing set-ID bits (FUSE_HANDLE_KILLPRIV_V2). */
    if (in->opcode == FUSE_WRITE && body >= sizeof(struct fuse_write_in))
        current.kill_suidgid =
            ((const struct fuse_write_in *)arg)->write_flags & FUSE_WRITE_KILL_SUIDGID;
    else if (in->opcode == FUSE_OPEN && body >= sizeof(struct fuse_open_in))
        current.kill_suidgid =
            ((const struct fuse_open_in *)arg)->open_flags & FUSE_OPEN_KILL_SUIDGID;
    else if (in->opcode == FUSE_SETATTR && body >= sizeof(struct fuse_setattr_in))
        current.kill_suidgid = ((const struct fuse_setattr_in *)arg)->valid & FATTR_KILL_SUIDGID;
    else if (in->opcode == FUSE_INIT && body >= offsetof(struct fuse_init_in, flags2) + 4) {
        const struct fuse_init_in *init = arg;
        bool current_major = init->major == FUSE_KERNEL_VERSION;
        pt->kernel_offers = current_major && (init->flags & FUSE_INIT_EXT) &&
                            (((uint64_t)init->flags2 << 32) & PT_INIT_FLAG);
        pt->killpriv_offers = current_major && (init->flags & FUSE_HANDLE_KILLPRIV_V2);
    }
    return got;
}

static bool has_sys_admin(void)
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0)
        return false;
    return data[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32));
}

bool fs_pt_init(struct fs_pt *pt, int session_fd)
{
    pt->fd = session_fd;
    pt->killpriv = pt->killpriv_offers;
    const char *why = NULL;
    if (!pt->allowed)
        why = "the mount was asked not to use FUSE passthrough (-o nopassthrough)";
    else if (!pt->kernel_offers)
        why = "this kernel does not offer FUSE passthrough (it needs Linux 6.9 or later)";
    /* The kernel lets only CAP_SYS_ADMIN open backing files (until lsof can show them). */
    else if (!has_sys_admin())
        why = "FUSE passthrough needs CAP_SYS_ADMIN (mount as root for local-disk I/O)";
    pthread_mutex_lock(&pt->lock);
    if (why)
        snprintf(pt->off_why, sizeof(pt->off_why), "%s", why);
    else
        pt->state = PT_ASKED;
    pthread_mutex_unlock(&pt->lock);
    if (why && pt->allowed)
        fs_log(LOG_INFO, "file data goes through the daemon: %s", why);
    return !why;
}

/* Patches a reply of `len` bytes in `out` (header first) for the request being served. */
static void patch_reply(const struct fs_pt *pt, char *out, size_t len)
{
    const struct fuse_out_header *header = (const void *)out;
    if (header->error != 0)
        return;
    size_t payload = len - sizeof(*header);
    char *body = out + sizeof(*header);
    if (current.opcode == FUSE_INIT) {
        if (payload < PT_MAX_STACK_DEPTH_OFFSET + 4)
            return;
        struct fuse_init_out *init = (void *)body;
        /*
         * Killing set-ID bits is weft's (fs.c): the kernel then marks the
         * mount SB_NOSEC and stops asking for security.capability before
         * every write(2) once a file is known to have none, a round trip
         * that made 4 KiB writes 7x slower than the disk.
         */
        if (pt->killpriv)
            init->flags |= FUSE_HANDLE_KILLPRIV_V2;
        if (pt->state != PT_OFF) {
            init->flags |= FUSE_INIT_EXT;
            init->flags2 |= (uint32_t)(PT_INIT_FLAG >> 32);
            uint32_t depth = PT_MAX_STACK_DEPTH;
            memcpy(body + PT_MAX_STACK_DEPTH_OFFSET, &depth, sizeof(depth));
        }
        return;
    }
    /* OPEN replies fuse_open_out; CREATE replies fuse_entry_out then fuse_open_out. */
    if (current.backing_id <= 0 || payload < sizeof(struct fuse_open_out))
        return;
    struct fuse_open_out *open = (void *)(body + payload - sizeof(struct fuse_open_out));
    open->open_flags |= PT_FOPEN_FLAG;
    open->open_flags &= ~(uint32_t)(FOPEN_KEEP_CACHE | FOPEN_DIRECT_IO);
    memcpy(&open->padding, &current.backing_id, sizeof(current.backing_id)); /* backing_id */
}

ssize_t fs_pt_writev(struct fs_pt *pt, int fd, struct iovec *iov, int count)
{
    bool init = current.opcode == FUSE_INIT && (pt->state != PT_OFF || pt->killpriv);
    bool open =
        (current.opcode == FUSE_OPEN || current.opcode == FUSE_CREATE) && current.backing_id > 0;
    if ((!init && !open) || count < 1 || iov[0].iov_len < sizeof(struct fuse_out_header) ||
        ((const struct fuse_out_header *)iov[0].iov_base)->unique != current.unique)
        return writev(fd, iov, count);
    /* The replies patched are small (INIT 80 bytes, CREATE 160): gather, patch, write. */
    char out[512];
    size_t len = 0;
    for (int i = 0; i < count; i++) {
        if (iov[i].iov_len > sizeof(out) - len)
            return writev(fd, iov, count);
        memcpy(out + len, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }
    patch_reply(pt, out, len);
    current.backing_id = 0;
    return write(fd, out, len);
}

static struct pt_inode **inode_slot(struct fs_pt *pt, uint64_t ino)
{
    struct pt_inode **slot = &pt->inodes;
    while (*slot && (*slot)->ino != ino)
        slot = &(*slot)->next;
    return slot;
}

enum fs_pt_mode fs_pt_open(struct fs_pt *pt, uint64_t ino, int fd, int32_t *backing_id)
{
    pthread_mutex_lock(&pt->lock);
    enum fs_pt_mode mode = FS_PT_CACHED;
    struct stat st;
    if (pt->state == PT_OFF || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        goto out;
    struct pt_inode **slot = inode_slot(pt, ino);
    if (*slot) {
        /*
         * The kernel takes one backing file per inode, and every open of an
         * inode passed through must be passed through too (else EIO). Pinned
         * working copies are rewritten in place, so this one is the same
         * file; if not, the open still gets the inode's backing file, which
         * may show older bytes until the inode's files are all closed.
         */
        if ((*slot)->dev != st.st_dev || (*slot)->file_ino != st.st_ino)
            fs_log(LOG_WARNING,
                   "inode %llu: its working copy was replaced while open; until it is closed "
                   "everywhere, new opens see the file as it was",
                   (unsigned long long)ino);
        (*slot)->opens++;
        *backing_id = (*slot)->backing_id;
        mode = FS_PT_PASSTHROUGH;
        goto out;
    }
    struct pt_inode *inode = calloc(1, sizeof(*inode));
    if (!inode) {
        mode = pt->state == PT_WORKING ? FS_PT_DIRECT : FS_PT_CACHED;
        goto out;
    }
    struct pt_backing_map map = {.fd = fd};
    int id = ioctl(pt->fd, PT_IOC_BACKING_OPEN, &map);
    if (id <= 0) {
        int err = errno;
        free(inode);
        if (pt->state == PT_WORKING) {
            /* Other inodes are passed through: keep this one off the page cache too. */
            fs_log(LOG_WARNING, "passthrough of inode %llu failed (%s); served directly",
                   (unsigned long long)ino, strerror(err));
            mode = FS_PT_DIRECT;
        } else {
            /* Nothing is passed through yet: serve everything as before, for good. */
            snprintf(pt->off_why, sizeof(pt->off_why),
                     "the kernel refused FUSE passthrough for the working copies (%s)",
                     strerror(err));
            fs_log(LOG_INFO, "file data goes through the daemon: %s", pt->off_why);
            pt->state = PT_OFF;
        }
        goto out;
    }
    if (pt->state != PT_WORKING)
        fs_log(LOG_INFO, "file data goes straight to the working copies (FUSE passthrough)");
    pt->state = PT_WORKING;
    inode->ino = ino;
    inode->backing_id = id;
    inode->opens = 1;
    inode->dev = st.st_dev;
    inode->file_ino = st.st_ino;
    *slot = inode;
    *backing_id = id;
    mode = FS_PT_PASSTHROUGH;
out:
    pthread_mutex_unlock(&pt->lock);
    if (mode == FS_PT_PASSTHROUGH)
        current.backing_id = *backing_id;
    return mode;
}

void fs_pt_release(struct fs_pt *pt, uint64_t ino)
{
    pthread_mutex_lock(&pt->lock);
    struct pt_inode **slot = inode_slot(pt, ino);
    struct pt_inode *inode = *slot;
    if (inode && --inode->opens == 0) {
        *slot = inode->next;
        /* The kernel keeps its own reference while any file still uses it. */
        uint32_t id = (uint32_t)inode->backing_id;
        if (ioctl(pt->fd, PT_IOC_BACKING_CLOSE, &id) != 0)
            fs_log(LOG_WARNING, "closing backing id %u: %s", id, strerror(errno));
        free(inode);
    }
    pthread_mutex_unlock(&pt->lock);
}

bool fs_pt_pinned(void *ctx, dev_t dev, ino_t file_ino)
{
    struct fs_pt *pt = ctx;
    pthread_mutex_lock(&pt->lock);
    bool pinned = false;
    for (struct pt_inode *inode = pt->inodes; inode && !pinned; inode = inode->next)
        pinned = inode->dev == dev && inode->file_ino == file_ino;
    pthread_mutex_unlock(&pt->lock);
    return pinned;
}

bool fs_pt_describe(struct fs_pt *pt, char *why, size_t cap)
{
    pthread_mutex_lock(&pt->lock);
    bool on = pt->state != PT_OFF;
    snprintf(why, cap, "%s", on ? "" : pt->off_why);
    pthread_mutex_unlock(&pt->lock);
    return on;
}

bool fs_pt_killpriv(const struct fs_pt *pt)
{
    return pt->killpriv;
}

bool fs_pt_kill_suidgid(const struct fs_pt *pt)
{
    return pt->killpriv && current.kill_suidgid;
}
