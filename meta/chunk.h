/*
 * meta/chunk: content-defined chunking of binary files (FastCDC) and the
 * chunk-list format that records a binary version.
 *
 * Boundaries depend only on content, so an edit changes only the chunks it
 * touches: a 1-byte change in a large file changes one or two chunks, and only
 * those are stored and sent. A chunk's id is BLAKE2b-256 keyed with the share
 * key, so ids reveal nothing about content to anyone without the key (the
 * relay sees them).
 *
 * The constants below, the gear table seed and the masks are part of the
 * format: changing any of them re-chunks every file and defeats dedup against
 * existing versions. tests/unit/test_chunk.c freezes the boundaries.
 */
#ifndef WEFT_META_CHUNK_H
#define WEFT_META_CHUNK_H

#include "crdt/codec.h"
#include "meta/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define META_CHUNK_MIN 2048u  /* no content cut before this many bytes */
#define META_CHUNK_AVG 8192u  /* normalization point (stricter mask before, looser after) */
#define META_CHUNK_MAX 65536u /* a chunk is cut here whatever the content */

/* Format version of an encoded chunk list (first byte). */
#define META_CHUNK_LIST_V1 1

/*
 * Called once per chunk, in file order, with its keyed id and bytes (valid
 * only during the call). A nonzero return stops chunking and is passed back.
 */
typedef int (*meta_chunk_fn)(void *ctx, const uint8_t id[META_HASH_LEN], const uint8_t *data,
                             size_t len);

/* A streaming chunker: feed a file in buffers of any size, get its chunks. */
struct meta_chunker;

/* One chunk of a version: its id and length. */
struct meta_chunk_ref {
    uint8_t id[META_HASH_LEN];
    uint32_t len;
};

/* The chunks of a binary version, in file order. Zero-init = empty. */
struct meta_chunk_list {
    struct meta_chunk_ref *refs;
    size_t len;
    size_t cap;
    uint64_t total; /* sum of the lengths: the file size */
};

/*
 * A chunker whose ids are keyed with key[0..META_KEY_LEN) (copied). *out is
 * owned by the caller: free with meta_chunker_free. 0 or -ENOMEM.
 */
META_MUST_CHECK int meta_chunker_new(struct meta_chunker **out, const uint8_t *key);
/* Frees a chunker (NULL is fine) and wipes its copy of the key. */
void meta_chunker_free(struct meta_chunker *chunker);
/* Forgets any partial chunk, ready for a new file. */
void meta_chunker_reset(struct meta_chunker *chunker);
/*
 * Feeds the next `len` bytes of the file; calls fn for each chunk completed.
 * Keeps at most one partial chunk (< META_CHUNK_MAX bytes) between calls.
 * 0, or what fn returned.
 */
META_MUST_CHECK int meta_chunker_feed(struct meta_chunker *chunker, const void *data, size_t len,
                                      meta_chunk_fn fn, void *ctx);
/* Ends the file: calls fn for the last, partial chunk if any, then resets. */
META_MUST_CHECK int meta_chunker_finish(struct meta_chunker *chunker, meta_chunk_fn fn, void *ctx);
/*
 * Length of the first chunk of data[0..len) when `len` bytes are all that
 * is left of the file (no hashing; for tests and tools).
 */
size_t meta_chunk_boundary(const void *data, size_t len);

/*
 * Chunk indexes (README "Chunk indexes"). A version with more chunks than
 * META_CHUNK_INDEX_FANOUT names them in its op through index chunks: chunks
 * whose bytes are an encoded chunk list (v1), split where
 * meta_chunk_index_cut says, level over level until at most FANOUT refs
 * remain. The split is content-defined, so an edit of a big file changes
 * one index chunk per level and the op stays small.
 */
#define META_CHUNK_INDEX_FANOUT 64u
/* An index chunk holds at most this many refs (about 36 KiB encoded: under META_CHUNK_MAX). */
#define META_CHUNK_INDEX_MAX 1024u
/* Levels an index may have: 64 * 64^4 refs is far beyond any file. */
#define META_CHUNK_INDEX_LEVELS 4u
/* Whether an index chunk ends after the ref with chunk id `id` (1 in 64, from the id's bytes). */
bool meta_chunk_index_cut(const uint8_t id[META_HASH_LEN]);

/* Frees the list's memory and empties it. */
void meta_chunk_list_free(struct meta_chunk_list *list);
/* Appends a chunk (1 <= len <= META_CHUNK_MAX); 0, -EINVAL or -ENOMEM. */
META_MUST_CHECK int meta_chunk_list_add(struct meta_chunk_list *list,
                                        const uint8_t id[META_HASH_LEN], uint32_t len);
/*
 * Appends the list's encoding (README "chunk list", v1) to buf. Errors are
 * sticky in the buffer (crdt_buf_status).
 */
void meta_chunk_list_encode(struct crdt_buf *buf, const struct meta_chunk_list *list);
/*
 * Decodes a whole encoded list from untrusted bytes into a fresh *out
 * (caller frees with meta_chunk_list_free). -EBADMSG on malformed input,
 * trailing bytes, an unknown format version; -ENOMEM.
 */
META_MUST_CHECK int meta_chunk_list_decode(struct meta_chunk_list *out, const void *data,
                                           size_t len);

#endif
