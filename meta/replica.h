/*
 * meta/replica: a share's live replica, the store plus the CRDT state held
 * in memory, with the file-system operations the mount needs. Every change
 * a program makes through the mount becomes CRDT ops here, in one store
 * transaction with the materialized tree it updates; remote ops arrive here
 * too (meta_replica_apply_remote). Readers never touch the op log.
 *
 * Nodes are addressed by inode number: the store gives each node one, stable
 * across remounts; META_INO_ROOT is the root. Errors are negative errnos as
 * ext4 would give them, so fs/ passes them to the kernel unchanged; on an
 * internal failure meta_replica_errmsg says what happened in words.
 *
 * Not thread-safe: the mount daemon serializes calls (one mutex).
 */
#ifndef WEFT_META_REPLICA_H
#define WEFT_META_REPLICA_H

#include "crdt/clock.h"
#include "meta/nodes.h"
#include "meta/oplog.h"
#include "meta/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct meta_replica;

/* What the kernel sees of a node. */
struct meta_attr {
    uint64_t ino;
    uint32_t mode; /* st_mode: type bits and permissions */
    uint32_t uid, gid;
    uint32_t nlink;
    uint64_t rdev;
    uint64_t size;
    int64_t atime_ns, mtime_ns, ctime_ns;
};

/* Fields of meta_replica_setattr's request (bit mask). */
enum {
    META_SET_MODE = 1 << 0,
    META_SET_UID = 1 << 1,
    META_SET_GID = 1 << 2,
    META_SET_SIZE = 1 << 3,
    META_SET_ATIME = 1 << 4,
    META_SET_MTIME = 1 << 5,
    META_SET_CTIME = 1 << 6,
};

/* rename(2) flags understood by meta_replica_rename. */
enum {
    META_RENAME_NOREPLACE = 1 << 0,
    META_RENAME_EXCHANGE = 1 << 1,
};

/* What changed, for the mount to drop the kernel's caches of it. */
enum meta_change_kind {
    META_CHANGE_CONTENT, /* ino's bytes changed: drop its page cache */
    META_CHANGE_ATTR,    /* ino's attributes changed */
    META_CHANGE_ENTRY,   /* the entry `name` of directory `parent` appeared, went or changed */
};

struct meta_change {
    enum meta_change_kind kind;
    uint64_t ino;
    uint64_t parent;
    const char *name; /* for ENTRY; valid during the call */
    bool remote;      /* caused by ops from another replica */
};

/*
 * Called after each commit or apply, once per change, outside the store's
 * transaction; must not call back into the replica.
 */
typedef void (*meta_change_fn)(void *ctx, const struct meta_change *change);

/* One entry of a directory listing. */
struct meta_dirent {
    const char *name;
    struct meta_attr attr;
};

/* One version of a file, newest first in meta_replica_log. */
struct meta_log_entry {
    struct crdt_ts ts;
    uint64_t author;
    char author_name[META_NAME_MAX + 1];
    int64_t time_ns;
    uint64_t size;
    bool text;
};

/*
 * Creates a new share's store in `dir` and opens it as a replica. *out is
 * the caller's (meta_replica_close). On failure *err says why.
 */
META_MUST_CHECK int meta_replica_create(struct meta_replica **out, struct meta_err *err,
                                        const char *dir, const struct meta_share_params *params);
/* Opens the replica in `dir` (see meta_store_open for the refusals). */
META_MUST_CHECK int meta_replica_open(struct meta_replica **out, struct meta_err *err,
                                      const char *dir);
/*
 * Writes checkpoints of the CRDT state (meta_replica_checkpoint; a failure
 * only makes the next open replay more of the log) and closes. NULL is fine.
 */
void meta_replica_close(struct meta_replica *replica);
/* The message of the last failure. */
const char *meta_replica_errmsg(const struct meta_replica *replica);
/* The underlying store (owned by the replica). */
struct meta_store *meta_replica_store(struct meta_replica *replica);
/* Sets the change callback (NULL: none). */
void meta_replica_subscribe(struct meta_replica *replica, meta_change_fn fn, void *ctx);

/*
 * Writes checkpoints of the CRDT state now: the tree CRDT's, and the text
 * states of the documents held in memory. Close does the same, and commits
 * write the tree's every so many tree ops (README "Checkpoints"); the next
 * open then replays only the ops logged after them. Blocks on I/O. A failure
 * loses nothing (the op log holds it all); it is reported.
 */
META_MUST_CHECK int meta_replica_checkpoint(struct meta_replica *replica);
/* After how many tree ops a commit writes a tree checkpoint (0: the default rule). */
void meta_replica_set_checkpoint_interval(struct meta_replica *replica, size_t tree_ops);

/* How the replica's in-memory state came to be, for tests and diagnostics. */
struct meta_replica_info {
    size_t tree_nodes;         /* nodes the tree CRDT knows (root and trash included) */
    bool tree_from_checkpoint; /* the tree was loaded from its checkpoint */
    size_t replayed_tree_ops;  /* tree ops replayed from the log on top of it (or all) */
    size_t tree_ops_unsaved;   /* tree ops since the last checkpoint (> 0: one is due) */
    size_t cached_texts;       /* text documents held in memory */
    /* Why a checkpoint was there but not used (damaged, ...); "" if none or used. */
    char checkpoint_note[META_ERRMSG_LEN];
};
void meta_replica_info(struct meta_replica_info *out, const struct meta_replica *replica);
/*
 * The text CRDT's view of a text file: its text state plus the text ops
 * logged after it, as one malloc'ed string (NUL-terminated; the caller frees
 * it). -ENOENT if the file has no text state (binary, or never committed).
 */
META_MUST_CHECK int meta_replica_text(char **out, size_t *out_len, struct meta_replica *replica,
                                      uint64_t ino);
/*
 * Checks the state in memory against the store: the tree CRDT against one
 * rebuilt from the whole op log (byte-equal snapshots), each cached text
 * document against its state plus logged ops. 0, or -EUCLEAN and the
 * difference in meta_replica_errmsg. Reads the whole log: slow.
 */
META_MUST_CHECK int meta_replica_check(struct meta_replica *replica);

/* Attributes of a node. -ENOENT. */
META_MUST_CHECK int meta_replica_getattr(struct meta_attr *out, struct meta_replica *replica,
                                         uint64_t ino);
/* The entry `name` of directory `parent`. -ENOENT, -ENOTDIR, -ENAMETOOLONG. */
META_MUST_CHECK int meta_replica_lookup(struct meta_attr *out, struct meta_replica *replica,
                                        uint64_t parent, const char *name);
/*
 * Lists directory `ino` from position `offset` (0 = start; "." and ".." are
 * the caller's). `each` gets an entry and the offset of the next one; a
 * nonzero return stops the listing (that value is not an error).
 */
META_MUST_CHECK int
meta_replica_readdir(struct meta_replica *replica, uint64_t ino, uint64_t offset,
                     int (*each)(void *ctx, const struct meta_dirent *entry, uint64_t next_offset),
                     void *ctx);
/* A symlink's target into a malloc'ed string the caller frees. -EINVAL if not a symlink. */
META_MUST_CHECK int meta_replica_readlink(char **out, struct meta_replica *replica, uint64_t ino);

/*
 * Makes a node: a regular file, fifo, socket or device by `mode`'s type bits
 * (rdev for devices). -EEXIST, -ENOENT, -ENOTDIR, -ENAMETOOLONG, -EINVAL.
 */
META_MUST_CHECK int meta_replica_mknod(struct meta_attr *out, struct meta_replica *replica,
                                       uint64_t parent, const char *name, uint32_t mode,
                                       uint64_t rdev, uint32_t uid, uint32_t gid);
/* Makes a directory (rule 1: made at one path on two devices, it is one directory). */
META_MUST_CHECK int meta_replica_mkdir(struct meta_attr *out, struct meta_replica *replica,
                                       uint64_t parent, const char *name, uint32_t mode,
                                       uint32_t uid, uint32_t gid);
/* Makes a symlink to `target`. */
META_MUST_CHECK int meta_replica_symlink(struct meta_attr *out, struct meta_replica *replica,
                                         uint64_t parent, const char *name, const char *target,
                                         uint32_t uid, uint32_t gid);
/* Removes a non-directory entry. -ENOENT, -EISDIR. */
META_MUST_CHECK int meta_replica_unlink(struct meta_replica *replica, uint64_t parent,
                                        const char *name);
/* Removes an empty directory. -ENOENT, -ENOTDIR, -ENOTEMPTY, -EBUSY (the root). */
META_MUST_CHECK int meta_replica_rmdir(struct meta_replica *replica, uint64_t parent,
                                       const char *name);
/*
 * rename(2), with META_RENAME_NOREPLACE / _EXCHANGE. A replaced file keeps
 * its history. -EINVAL (into itself), -ENOTEMPTY, -EISDIR, -ENOTDIR, -EEXIST.
 */
META_MUST_CHECK int meta_replica_rename(struct meta_replica *replica, uint64_t parent,
                                        const char *name, uint64_t new_parent, const char *new_name,
                                        unsigned flags);
/* Changes attributes; META_SET_SIZE truncates the working copy. *out gets the result. */
META_MUST_CHECK int meta_replica_setattr(struct meta_attr *out, struct meta_replica *replica,
                                         uint64_t ino, const struct meta_attr *values,
                                         unsigned to_set);

/*
 * Opens a regular file's working copy with open(2) `flags`; *out_fd is the
 * caller's. A writable open marks the node dirty until meta_replica_commit.
 */
META_MUST_CHECK int meta_replica_open_file(int *out_fd, struct meta_replica *replica, uint64_t ino,
                                           int flags);
/*
 * A commit point for a file (last close of a writer, fsync, a timer): its
 * working copy becomes text ops or a binary version. No-op if clean.
 */
META_MUST_CHECK int meta_replica_commit(struct meta_replica *replica, uint64_t ino);
/*
 * Commit points for many files in one transaction (the mount batches the
 * commits of files closed in quick succession). Clean ones are skipped.
 */
META_MUST_CHECK int meta_replica_commit_batch(struct meta_replica *replica, const uint64_t *inos,
                                              size_t count);
/*
 * Makes empty working copies ahead, until `target` wait, so that a new
 * file's working copy costs a rename instead of an ext4 create in a fan-out
 * directory (meta/README "Working copies"). Unlike every other call here it
 * may run on another thread while the replica is in use: it touches only
 * DIR/files/tmp and the pool's own lock. Returns how many it made, or
 * -errno (nothing is logged in the replica's error message).
 */
int meta_replica_wc_pool_fill(struct meta_replica *replica, unsigned target);
/* How many made-ahead working copies wait (any thread, as above). */
unsigned meta_replica_wc_pool_level(struct meta_replica *replica);

/*
 * Names working copies (by st_dev, st_ino) that must keep their inode:
 * replacing one's content then rewrites it in place instead of renaming a
 * new file over it. A mount that passes open files' data through to their
 * working copies (fs/passthrough) pins those, so that the files' readers and
 * new opens see remote changes. Called under the replica's caller's lock;
 * NULL unpins everything.
 */
void meta_replica_set_wc_pinned(struct meta_replica *replica,
                                bool (*pinned)(void *ctx, dev_t dev, ino_t ino), void *ctx);

/*
 * Tells the replica whether a program holds ino open for writing: its
 * commits then keep it dirty, since more bytes may come. 0 or -ENOMEM.
 */
META_MUST_CHECK int meta_replica_set_writer(struct meta_replica *replica, uint64_t ino, bool open);
/*
 * Grouped mode (the mount's): file-system changes run as savepoints of one
 * store transaction, committed by meta_replica_group_commit (the mount
 * calls it every few milliseconds) or by any call that needs the changes
 * committed: fsync, a change that moves working copies, remote ops,
 * reading ops for peers, close. A failed change undoes only itself; change
 * events come when the group commits. A kill -9 may lose the changes of a
 * group not committed yet, never part of one. In a group, the content a
 * save (a rename keeping identity) gives a file is committed with the group,
 * so quick saves make one version. The next open removes the
 * working copies of new files such a group left (the store's DIR/grouped
 * marks a grouped run). Turning it off commits the group. Off by default.
 */
META_MUST_CHECK int meta_replica_set_grouped(struct meta_replica *replica, bool grouped);
/*
 * Commits the open group, if any. On failure every change of the group is
 * lost, as in a crash, and memory is put back in step with the store.
 */
META_MUST_CHECK int meta_replica_group_commit(struct meta_replica *replica);
/* Whether a group is open or a save's content waits for the group's commit. */
bool meta_replica_group_pending(const struct meta_replica *replica);

/* Commits ino (or everything, ino 0) and makes it durable: power-loss safe on return. */
META_MUST_CHECK int meta_replica_fsync(struct meta_replica *replica, uint64_t ino);

/* xattrs, as the calls of the same names (-ENODATA, -ERANGE is the caller's). */
META_MUST_CHECK int meta_replica_setxattr(struct meta_replica *replica, uint64_t ino,
                                          const char *name, const void *value, size_t len,
                                          int flags);
/* Reads a value into a malloc'ed buffer the caller frees. */
META_MUST_CHECK int meta_replica_getxattr(uint8_t **out, size_t *out_len,
                                          struct meta_replica *replica, uint64_t ino,
                                          const char *name);
/* The NUL-separated list of names into a malloc'ed buffer the caller frees. */
META_MUST_CHECK int meta_replica_listxattr(char **out, size_t *out_len,
                                           struct meta_replica *replica, uint64_t ino);
/* Removes an xattr. -ENODATA. */
META_MUST_CHECK int meta_replica_removexattr(struct meta_replica *replica, uint64_t ino,
                                             const char *name);

/* The versions of a file, newest first; *out malloc'ed, the caller frees it. */
META_MUST_CHECK int meta_replica_log(struct meta_log_entry **out, size_t *out_len,
                                     struct meta_replica *replica, uint64_t ino);
/* Makes version `ts` of a file its content again, as a new local change. */
META_MUST_CHECK int meta_replica_restore(struct meta_replica *replica, uint64_t ino,
                                         struct crdt_ts ts);
/* The node id behind an inode number (its identity across renames and saves). -ENOENT. */
META_MUST_CHECK int meta_replica_node_id(struct meta_id *out, struct meta_replica *replica,
                                         uint64_t ino);
/*
 * Gives a chunk that a remote version lists and the store lacks: sync/ asks
 * a peer or the relay. *data is malloc'ed and handed over. -ENOENT if unknown.
 */
typedef int (*meta_chunk_fetch_fn)(void *ctx, const uint8_t id[META_HASH_LEN], uint8_t **data,
                                   size_t *len);
/* Sets where meta_replica_apply_remote gets missing chunks (NULL: nowhere, -ENOENT). */
void meta_replica_set_fetch(struct meta_replica *replica, meta_chunk_fetch_fn fn, void *ctx);
/*
 * Applies ops from other replicas as one transaction: tree ops as one batch
 * of crdt/tree, text ops merged into each file's text CRDT (a file with
 * uncommitted local bytes commits them first, so both sides' edits merge),
 * attribute ops and content versions. Ops already held are skipped; an op
 * that would leave a gap in its replica's seqs is not applied (nor are that
 * replica's later ones): *applied counts the ops applied. Working copies
 * change after the commit; change events report it all as remote.
 */
META_MUST_CHECK int meta_replica_apply_remote(size_t *applied, struct meta_replica *replica,
                                              const struct meta_op *ops, size_t count);
/*
 * Calls fn for every op a replica at version `have` lacks, in an order that
 * respects causality (what sync/ sends a peer).
 */
META_MUST_CHECK int meta_replica_ops_since(struct meta_replica *replica, const struct crdt_vv *have,
                                           meta_op_fn fn, void *ctx);
/*
 * Adds a device to the share as a member (or, revoked, removes one for good):
 * a membership op, so every device learns its key from the ops of a member
 * that vouched for it, and its row in the store's devices. -EINVAL, -EIO.
 */
META_MUST_CHECK int meta_replica_add_device(struct meta_replica *replica,
                                            const uint8_t public_key[META_PUBLIC_KEY_LEN],
                                            const char *name, bool revoked);
/*
 * Removes a device from the share for good and starts a new key epoch: a
 * fresh share key, sealed to every remaining member in the membership op
 * (meta/member format 2), kept here (meta_store_epoch_key_put). Records
 * sealed from then on use it, so the removed device reads nothing written
 * after; its own records of the new epoch or later are refused
 * (setting member.revoked_epoch.REPLICA). -ENOENT (no such member), -EINVAL
 * (this device itself), -EALREADY (removed already), -EIO.
 */
META_MUST_CHECK int meta_replica_remove_device(struct meta_replica *replica,
                                               const uint8_t public_key[META_PUBLIC_KEY_LEN]);
/*
 * How many shown entries are conflict copies waiting for the user: names
 * "... (conflict DEVICE...)" (concurrent creates, binary conflicts).
 */
META_MUST_CHECK int meta_replica_count_conflicts(uint64_t *out, struct meta_replica *replica);
/* The replica's version vector into a fresh *out (caller frees). */
META_MUST_CHECK int meta_replica_version(struct crdt_vv *out, struct meta_replica *replica);

/* Resolves a path relative to the root ("a/b/c") to an inode number. */
META_MUST_CHECK int meta_replica_resolve(uint64_t *out, struct meta_replica *replica,
                                         const char *path);

#endif
