/*
 * meta/wcopy: working copies, the plain files under DIR/files/ that hold the
 * current content of each file node, so the mount reads and writes a real
 * file descriptor.
 *
 * Protocol for a local change (README "Durability"): mark the node DIRTY
 * (durably) before its working copy is first written, write, then commit it
 * (meta_version_commit_wc), which fdatasyncs the file before the database
 * transaction that records it and marks it CLEAN. Content coming from the
 * database (restore, remote changes) goes the other way: the transaction
 * marks the node STALE, and after it commits the working copy is replaced
 * atomically (temp file, fsync, rename, fsync of the directory) and marked
 * CLEAN. A crash anywhere leaves DIRTY (the working copy may be newer) or
 * STALE (the database is newer, redone at open): never a CLEAN node whose
 * working copy differs from its newest version.
 */
#ifndef WEFT_META_WCOPY_H
#define WEFT_META_WCOPY_H

#include "meta/store.h"

#include <stddef.h>
#include <sys/stat.h>

/* DIR/files/xx/<32 hex digits> of a node into out[0..cap); -ENAMETOOLONG. */
META_MUST_CHECK int meta_wc_path(char *out, size_t cap, const struct meta_store *store,
                                 const struct meta_id *node);
/* stat(2) of a node's working copy into *out; -ENOENT if it has none. */
META_MUST_CHECK int meta_wc_stat(struct stat *out, const struct meta_store *store,
                                 const struct meta_id *node);
/*
 * Opens a node's working copy with open(2) flags (O_CLOEXEC added); with
 * O_CREAT the fan-out directory is made and, if the file is new, the
 * directory fsync'ed so the name survives a crash. *out_fd is the caller's.
 */
META_MUST_CHECK int meta_wc_open(int *out_fd, struct meta_store *store, const struct meta_id *node,
                                 int flags);
/* Marks a file node DIRTY (a no-op if it is); joins the caller's transaction. -ENOENT. */
META_MUST_CHECK int meta_wc_mark_dirty(struct meta_store *store, const struct meta_id *node);
/*
 * Replaces a node's working copy with data[0..len) atomically (temp file,
 * fsync, rename, fsync of the directory). The database is not touched: a
 * caller making a local change marks the node DIRTY first.
 */
META_MUST_CHECK int meta_wc_replace(struct meta_store *store, const struct meta_id *node,
                                    const void *data, size_t len);
/* Removes a node's working copy (no error if there is none). */
META_MUST_CHECK int meta_wc_remove(struct meta_store *store, const struct meta_id *node);

#endif
