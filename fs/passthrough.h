/*
 * fs/passthrough: FUSE passthrough (Linux 6.9+) on libfuse 3.14, which
 * predates it. An open file in passthrough mode has its reads, writes and
 * mmaps served by the kernel straight from the working copy (ext4's page
 * cache): no request reaches the daemon, and warm reads run at the backing
 * file system's speed. Opens, commits and everything else still go through
 * weft.
 *
 * libfuse 3.14 can neither ask for passthrough in its INIT reply nor put a
 * backing id in an open reply, so this module sits between libfuse and
 * /dev/fuse (fuse_session_custom_io): it notes each request's opcode as it is
 * read, and patches the INIT, OPEN and CREATE replies as they are written.
 * Everything else passes through untouched. It also agrees to
 * FUSE_HANDLE_KILLPRIV_V2 (newer than libfuse 3.14 too) and passes on the
 * request flags that come with it (fs_pt_kill_suidgid).
 *
 * The kernel allows one backing file per inode at a time, so the backing id
 * of an inode is shared by its open files and closed with the last of them.
 * Meanwhile its working copy is pinned: a remote change rewrites it in place
 * (meta_replica_set_wc_pinned), so readers holding it open and new opens
 * see the change.
 * Without passthrough (an older kernel, no CAP_SYS_ADMIN, `-o nopassthrough`,
 * the share on a stacked file system) every open is served as before, through
 * the daemon and the kernel's page cache.
 */
#ifndef WEFT_FS_PASSTHROUGH_H
#define WEFT_FS_PASSTHROUGH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct fs_pt;

/* How an open is to be served. */
enum fs_pt_mode {
    FS_PT_CACHED,      /* through the daemon, with the kernel's page cache (no passthrough) */
    FS_PT_PASSTHROUGH, /* by the kernel from the working copy; the backing id is set */
    FS_PT_DIRECT,      /* through the daemon, no page cache: passthrough failed for this
                          inode while others are passed through (no page cache may mix) */
};

/* A new passthrough state, off until fs_pt_init decides; NULL without memory. Caller frees. */
struct fs_pt *fs_pt_new(bool allowed);
/* Frees it, after the session: the kernel drops a connection's backing ids with it. */
void fs_pt_free(struct fs_pt *pt);

/* The custom io hooks (fuse_custom_io): read notes the request, writev patches replies. */
ssize_t fs_pt_read(struct fs_pt *pt, int fd, void *buf, size_t len);
ssize_t fs_pt_writev(struct fs_pt *pt, int fd, struct iovec *iov, int count);

/*
 * At INIT (fuse_lowlevel_ops.init): decides whether to ask for passthrough,
 * given the session's /dev/fuse descriptor. True if asked; then the caller
 * must not take splice reads (requests must reach fs_pt_read as bytes).
 */
bool fs_pt_init(struct fs_pt *pt, int session_fd);

/*
 * For an open of inode `ino` whose working copy is open as `fd`: how to
 * serve it, and in *backing_id the id to reply with (FS_PT_PASSTHROUGH). Each
 * FS_PT_PASSTHROUGH must be matched by one fs_pt_release.
 */
enum fs_pt_mode fs_pt_open(struct fs_pt *pt, uint64_t ino, int fd, int32_t *backing_id);
/* Ends one FS_PT_PASSTHROUGH open of `ino`; the last closes the inode's backing id. */
void fs_pt_release(struct fs_pt *pt, uint64_t ino);

/*
 * True if the file (st_dev, st_ino) backs an inode passed through: it must
 * be rewritten in place, never replaced (meta_replica_set_wc_pinned; ctx is
 * the struct fs_pt).
 */
bool fs_pt_pinned(void *ctx, dev_t dev, ino_t file_ino);

/*
 * True if file data is passed through (asked for at INIT and not refused
 * since); else copies into `why` the sentence saying why it goes through the
 * daemon. For `weft status`.
 */
bool fs_pt_describe(struct fs_pt *pt, char *why, size_t cap);

/*
 * True if the INIT reply agreed to FUSE_HANDLE_KILLPRIV_V2: weft, not the
 * kernel, then clears set-user-ID and set-group-ID on chown, and on write,
 * truncate and O_TRUNC when fs_pt_kill_suidgid says so.
 */
bool fs_pt_killpriv(const struct fs_pt *pt);
/*
 * True if killpriv v2 is agreed and the request this thread serves asks that
 * set-ID bits be killed (its caller lacks CAP_FSETID).
 */
bool fs_pt_kill_suidgid(const struct fs_pt *pt);

#endif
