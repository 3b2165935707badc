/*
 * fs/fs: the FUSE low-level file system over a meta/replica, and the only
 * home of libfuse. Every request maps to one replica call under one mutex;
 * file data goes straight to the working copy's file descriptor (splice for
 * reads), outside the mutex. Remote changes reported by the replica are
 * queued and told to the kernel (fuse_lowlevel_notify_*) by a notifier
 * thread that holds no lock, as libfuse requires to avoid deadlocks.
 */
#ifndef WEFT_FS_FS_H
#define WEFT_FS_FS_H

#include "meta/replica.h"

#include <stdbool.h>

struct fs_options {
    const char *mountpoint;
    const char *fsname;     /* shown as the source in mount(8), e.g. "weft:NAME" */
    const char *share_name; /* the share's local name (invites carry it) */
    bool allow_other;       /* let other users in (needs root or user_allow_other) */
    bool read_only;
    bool debug;                 /* libfuse's request trace on stderr */
    bool no_passthrough;        /* serve file data through the daemon even where the
                                   kernel could pass it through (fs/passthrough) */
    double entry_timeout;       /* seconds the kernel may cache names (remote changes invalidate) */
    double attr_timeout;        /* seconds the kernel may cache attributes */
    unsigned commit_interval_s; /* commit files held open for writing this often */
    int ready_fd;               /* -1, or a pipe: "ok\n" once mounted, else the error text */
    /* Sync (sync/agent): the share's relay "HOST:PORT" (NULL: no sync) and record store. */
    const char *relay;
    const char *listen; /* "addr:port" to accept the share's devices on (NULL: none) */
    const char *peers;  /* space-separated "host:port" of devices to sync with directly */
    const char *records_dir;
    unsigned sync_backoff_max_ms; /* 0: sync/net's default; tests shorten reconnects */
};

/* Fills the defaults: 10 s timeouts (remote changes invalidate at once), commits every 30 s. */
void fs_options_init(struct fs_options *options);

/*
 * Mounts `replica` on options->mountpoint and serves requests until it is
 * unmounted or the process gets SIGTERM/SIGINT/SIGHUP (then it unmounts).
 * Blocks. Returns 0 after a clean unmount, or a negative errno with a
 * message in errbuf[0..errlen) if the mount could not be made. The replica
 * stays the caller's.
 */
int fs_serve(struct meta_replica *replica, const struct fs_options *options, char *errbuf,
             size_t errlen);

/* Logs a line to stderr (foreground) or syslog (daemon); printf format. */
void fs_log(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends fs_log to syslog from now on (after daemonizing). */
void fs_log_to_syslog(const char *ident);

#endif
