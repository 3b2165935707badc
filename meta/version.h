/*
 * meta/version: the chunk store and the versions of binary files.
 *
 * A version of a file node is a list of chunks (meta/chunk), named by the
 * Lamport timestamp of the change that made it. Chunks are stored once per
 * share whatever number of versions use them. Invariant: every chunk a
 * version lists is in the chunk store (recording checks it, GC keeps it), so
 * any version can be read back from the database alone.
 *
 * History is kept by the retention policy: settings META_SETTING_KEEP_VERSIONS
 * (newest N versions per node, 0 = all) and META_SETTING_KEEP_DAYS (versions
 * newer than D days, 0 = forever); a version goes when either says so, but
 * the newest version of a node is always kept. The default keeps everything.
 */
#ifndef WEFT_META_VERSION_H
#define WEFT_META_VERSION_H

#include "crdt/clock.h"
#include "meta/chunk.h"
#include "meta/store.h"

#define META_SETTING_KEEP_VERSIONS "history.keep_versions"
#define META_SETTING_KEEP_DAYS     "history.keep_days"

/* One binary version of a file node. */
struct meta_version {
    struct meta_id node;
    struct crdt_ts ts; /* the change that made it; unique within the node */
    uint64_t author;   /* replica id of the device that made it */
    int64_t time_ns;   /* wall-clock time it was made */
    uint64_t size;     /* bytes */
};

/*
 * Stores a chunk unless it is there already. The id must be the keyed hash
 * of the bytes (checked: chunks from peers are untrusted): -EBADMSG if not.
 */
META_MUST_CHECK int meta_chunk_put(struct meta_store *store, const uint8_t id[META_HASH_LEN],
                                   const void *data, size_t len);
/* Reads a chunk into a malloc'ed buffer the caller frees; -ENOENT. */
META_MUST_CHECK int meta_chunk_get(uint8_t **out, size_t *out_len, struct meta_store *store,
                                   const uint8_t id[META_HASH_LEN]);
/* Whether the chunk store holds a chunk. */
META_MUST_CHECK int meta_chunk_has(bool *out, struct meta_store *store,
                                   const uint8_t id[META_HASH_LEN]);
/*
 * Builds and stores the index of a version's chunk list (chunk.h): *root
 * gets the refs its op names (the caller frees it), *levels how many index
 * levels are above the list (0: *root is a copy of it).
 */
META_MUST_CHECK int meta_chunk_index_build(struct meta_chunk_list *root, uint8_t *levels,
                                           struct meta_store *store,
                                           const struct meta_chunk_list *list);
/* Called for each index chunk an expansion reaches: `here` says whether the store has it. */
typedef int (*meta_index_visit_fn)(void *ctx, const uint8_t id[META_HASH_LEN], bool here);
/*
 * The chunk list an index stands for, into a fresh *out (the caller frees
 * it). visit (may be NULL) sees every index chunk reached; -ENOENT once a
 * level has an index chunk not here (all of that level's are visited
 * first), -EBADMSG for an index chunk that is not a list, -EIO, -ENOMEM.
 */
META_MUST_CHECK int meta_chunk_index_expand(struct meta_chunk_list *out, struct meta_store *store,
                                            const struct meta_chunk_list *root, uint8_t levels,
                                            meta_index_visit_fn visit, void *ctx);
/*
 * Deletes every chunk no version lists, nor any index of one (mark and
 * sweep, one transaction).
 * *out_removed (may be NULL) counts them.
 */
META_MUST_CHECK int meta_chunk_gc(uint64_t *out_removed, struct meta_store *store);

/*
 * Records a version whose chunks are all in the store already (-ENOENT if
 * one is missing; -EINVAL if version->size is not their total; -EEXIST if
 * the node has a version with this ts). When it is the node's newest
 * version, the node takes its size and the working copy is rewritten after
 * the transaction commits; an older one (a concurrent version that lost)
 * only joins the history.
 */
META_MUST_CHECK int meta_version_record(struct meta_store *store,
                                        const struct meta_version *version,
                                        const struct meta_chunk_list *chunks);
/*
 * Commits the node's working copy as a new version: fdatasyncs it, chunks
 * it (streaming), stores the new chunks, records the version with the
 * node, ts, author and time of *version (its size is ignored) and sets the
 * node's size and wc_state CLEAN. *out_size (may be NULL) is the size.
 */
META_MUST_CHECK int meta_version_commit_wc(uint64_t *out_size, struct meta_store *store,
                                           const struct meta_version *version);
/*
 * The same for a caller that has just read the working copy: data[0..len)
 * are its bytes, chunked from memory rather than read again (data NULL: read
 * the file). *out_chunks (may be NULL) gets the version's chunk list, which
 * the caller frees with meta_chunk_list_free.
 */
META_MUST_CHECK int meta_version_commit_wc_list(struct meta_chunk_list *out_chunks,
                                                struct meta_store *store,
                                                const struct meta_version *version,
                                                const void *data, size_t len);
/*
 * Records data[0..len) as a version of a node (its size is taken from len):
 * chunks it, stores the new chunks and records it as meta_version_record
 * does, so a newest version rewrites the working copy after the commit.
 * The store uses it for text merged from remote ops.
 */
META_MUST_CHECK int meta_version_record_bytes(struct meta_store *store,
                                              const struct meta_version *version, const void *data,
                                              size_t len);
/*
 * Makes the content of version `from` of a node its newest version again,
 * as a new version *version (size ignored, from the old one); the working
 * copy is rewritten after the transaction commits (unless the node is
 * DIRTY: uncommitted local bytes are never overwritten; the same holds for
 * meta_version_record).
 */
META_MUST_CHECK int meta_version_restore(struct meta_store *store,
                                         const struct meta_version *version, struct crdt_ts from);
/*
 * Reads a version's metadata and, when out_chunks is not NULL, its chunk
 * list (caller frees with meta_chunk_list_free). -ENOENT.
 */
META_MUST_CHECK int meta_version_get(struct meta_version *out, struct meta_chunk_list *out_chunks,
                                     struct meta_store *store, const struct meta_id *node,
                                     struct crdt_ts ts);
/*
 * The newest version of a node that an op made (a local commit or a peer's
 * version), not one merged here from text ops, which peers never see: what
 * a new version names as the one it replaced. -ENOENT if there is none.
 */
META_MUST_CHECK int meta_version_head(struct crdt_ts *out, struct meta_store *store,
                                      const struct meta_id *node);
/* A node's versions, newest (largest ts) first; *out malloc'ed, caller frees (NULL if none). */
META_MUST_CHECK int meta_version_list(struct meta_version **out, size_t *out_len,
                                      struct meta_store *store, const struct meta_id *node);
/* A version's content into a malloc'ed buffer the caller frees (for small files and tests). */
META_MUST_CHECK int meta_version_read(uint8_t **out, size_t *out_len, struct meta_store *store,
                                      const struct meta_id *node, struct crdt_ts ts);
/* Writes a version's content to fd from offset 0, chunk by chunk; blocks. */
META_MUST_CHECK int meta_version_read_fd(struct meta_store *store, const struct meta_id *node,
                                         struct crdt_ts ts, int fd);
/*
 * Deletes the versions the retention policy no longer keeps, as of now_ns,
 * then the chunks left unreferenced. *out_removed (may be NULL) counts versions.
 */
META_MUST_CHECK int meta_history_prune(uint64_t *out_removed, struct meta_store *store,
                                       int64_t now_ns);

#endif
