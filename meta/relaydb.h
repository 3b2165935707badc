/*
 * meta/relaydb: the relay's record store on SQLite, the embedded default
 * behind sync/relay_store.h (sync/relay_store_sqlite.c adapts it).
 *
 * A relay keeps, per share, each author's chain of sealed op records, the
 * sealed chunk records, the share's members (device keys) and the last
 * address each member connected from. It holds nothing it could read: the
 * records are ciphertext whose keys it never sees. Its data directory:
 *
 *     DIR/relay.db     SQLite, WAL mode (relay.db-wal beside it)
 *     DIR/relay.lock   OFD write lock while a relay has it open; holds its pid
 *
 * Durability: WAL with synchronous=FULL. A relay acknowledges storage to
 * devices (wire ACK) and a device may then count on the relay as its backup
 * (DESIGN "Relay": the backup a wiped device restores from), so a record
 * must survive power loss once its commit returned: NORMAL in WAL mode may
 * lose the last commits. Group commit (begin .. commit) pays one fsync for
 * the records of a whole network read, not one per record.
 *
 * Chains are enforced here, atomically with the insert, so that a backend
 * shared by several relay processes can keep the same contract: a record is
 * stored only as its author's next record (seq = head + 1, naming the head's
 * hash as its predecessor), once. Seqs are below 2^63 (SQLite integers).
 *
 * One process opens a data directory at a time; a handle is used by one
 * thread at a time (not thread-safe). Every fallible call returns 0 or a
 * negative errno and leaves a sentence in meta_relaydb_errmsg.
 */
#ifndef WEFT_META_RELAYDB_H
#define WEFT_META_RELAYDB_H

#include "meta/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Schema version (PRAGMA user_version) and file tag (PRAGMA application_id). */
#define META_RELAYDB_SCHEMA_VERSION 1
#define META_RELAYDB_APPLICATION_ID 0x77667472 /* "wftr" */
/* Longest address text kept per device (bytes, without the NUL). */
#define META_RELAYDB_ADDR_MAX 255

struct meta_relaydb;

/* One stored op record; the pointers are valid during the callback only. */
struct meta_relaydb_record {
    uint64_t author;
    uint64_t seq;
    uint32_t epoch;
    const uint8_t *hash; /* META_HASH_LEN bytes */
    const uint8_t *bytes;
    size_t len;
};

/* A member of a share. */
struct meta_relaydb_member {
    uint64_t replica;
    uint8_t public_key[META_PUBLIC_KEY_LEN];
    int64_t added_ns;
    bool revoked;
};

/* Visitors: return 0 to go on; anything else stops the walk and is returned. */
typedef int (*meta_relaydb_record_fn)(void *ctx, const struct meta_relaydb_record *record);
typedef int (*meta_relaydb_head_fn)(void *ctx, uint64_t author, uint64_t seq,
                                    const uint8_t hash[META_HASH_LEN]);
typedef int (*meta_relaydb_member_fn)(void *ctx, const struct meta_relaydb_member *member);
typedef int (*meta_relaydb_addr_fn)(void *ctx, uint64_t replica, const char *addr, int64_t seen_ns);

/*
 * Opens (creating on first use) the relay store in directory `dir`, which
 * must exist. Takes DIR/relay.lock. Refuses, never repairs: -EBUSY (another
 * relay has the directory), -EUCLEAN (relay.db is damaged or another
 * program's, or DIR is a device's share directory), -EPROTONOSUPPORT (a
 * newer schema), -EIO. *out is the caller's (meta_relaydb_close); on failure
 * *err (may be NULL) says why. Blocks on disk I/O.
 */
META_MUST_CHECK int meta_relaydb_open(struct meta_relaydb **out, struct meta_err *err,
                                      const char *dir);
/* Closes the database and releases the lock; NULL is fine. */
void meta_relaydb_close(struct meta_relaydb *db);
/* The last failure in words ("" if none); owned by the handle, valid until the next call. */
const char *meta_relaydb_errmsg(const struct meta_relaydb *db);

/*
 * Group commit: puts between begin and commit reach the disk together when
 * commit returns 0 (one fsync). A refused put inside the group changes
 * nothing and does not end it. -EINVAL if a group is already open.
 */
META_MUST_CHECK int meta_relaydb_begin(struct meta_relaydb *db);
/* Commits the group durably; on failure it is rolled back and absent. */
META_MUST_CHECK int meta_relaydb_commit(struct meta_relaydb *db);
/* Drops the group's puts (no-op without a group). */
void meta_relaydb_rollback(struct meta_relaydb *db);

/*
 * Stores op record `seq` (>= 1) of `author` in `share` with its hash, its
 * predecessor's hash `prev` (ignored for seq 1), key epoch and bytes.
 * *added (may be NULL) says whether it is new. Idempotent: the record
 * already held at that seq with the same hash is 0 with *added false.
 * -ENOTUNIQ: another record at that seq, or prev is not the hash held at
 * seq - 1 (a fork); -ENODATA: seq leaves a gap after the author's head;
 * -ENOENT: the share is not registered; -EINVAL, -ERANGE (seq >= 2^63).
 */
META_MUST_CHECK int meta_relaydb_op_put(struct meta_relaydb *db, bool *added,
                                        const uint8_t share[META_SHARE_ID_LEN], uint64_t author,
                                        uint64_t seq, const uint8_t prev[META_HASH_LEN],
                                        const uint8_t hash[META_HASH_LEN], uint32_t epoch,
                                        const uint8_t *bytes, size_t len);
/*
 * Hands `author`'s records in `share` from seq `from` on to `each`, in seq
 * order: at most max_records, and no more once max_bytes are reached (the
 * first record always goes, however large), so a caller streams any chain in
 * bounded batches. *count (may be NULL) is how many went. `each` must not
 * call this handle. 0, each's nonzero result, or -errno.
 */
META_MUST_CHECK int meta_relaydb_op_read(struct meta_relaydb *db, size_t *count,
                                         const uint8_t share[META_SHARE_ID_LEN], uint64_t author,
                                         uint64_t from, size_t max_records, size_t max_bytes,
                                         meta_relaydb_record_fn each, void *ctx);
/* The author's head: last seq (0 if none) and its hash (zeroed if none). */
META_MUST_CHECK int meta_relaydb_head(struct meta_relaydb *db, uint64_t *seq,
                                      uint8_t hash[META_HASH_LEN],
                                      const uint8_t share[META_SHARE_ID_LEN], uint64_t author);
/* Every author's head in `share`, in no set order. `each` must not call this handle. */
META_MUST_CHECK int meta_relaydb_heads(struct meta_relaydb *db,
                                       const uint8_t share[META_SHARE_ID_LEN],
                                       meta_relaydb_head_fn each, void *ctx);

/*
 * Stores chunk record `id` of `share` (bytes: the sealed record, whose
 * author is `author`). Idempotent: if the share already holds the id, the
 * first record stays and *added (may be NULL) is false. -ENOENT (no share), -EINVAL.
 */
META_MUST_CHECK int meta_relaydb_chunk_put(struct meta_relaydb *db, bool *added,
                                           const uint8_t share[META_SHARE_ID_LEN],
                                           const uint8_t id[META_HASH_LEN], uint64_t author,
                                           const uint8_t *bytes, size_t len);
/* The chunk record `id` into *bytes (malloc'ed, the caller frees); -ENOENT if not held. */
META_MUST_CHECK int meta_relaydb_chunk_get(struct meta_relaydb *db, uint8_t **bytes, size_t *len,
                                           const uint8_t share[META_SHARE_ID_LEN],
                                           const uint8_t id[META_HASH_LEN]);
/* Whether the chunk record `id` is held. */
META_MUST_CHECK int meta_relaydb_chunk_has(struct meta_relaydb *db, bool *has,
                                           const uint8_t share[META_SHARE_ID_LEN],
                                           const uint8_t id[META_HASH_LEN]);

/* Whether `share` is registered. */
META_MUST_CHECK int meta_relaydb_share_exists(struct meta_relaydb *db, bool *exists,
                                              const uint8_t share[META_SHARE_ID_LEN]);
/*
 * Registers `share` with its first member (public key and its replica id)
 * in one transaction. -EEXIST if the share is already registered (nothing
 * changes).
 */
META_MUST_CHECK int meta_relaydb_share_register(struct meta_relaydb *db,
                                                const uint8_t share[META_SHARE_ID_LEN],
                                                const uint8_t public_key[META_PUBLIC_KEY_LEN],
                                                uint64_t replica, int64_t now_ns);
/*
 * Adds a member to a registered share. Idempotent for a current member;
 * -EKEYREVOKED for a revoked one (revocation is final), -EEXIST if another
 * key has that replica id, -ENOENT (no share).
 */
META_MUST_CHECK int meta_relaydb_member_add(struct meta_relaydb *db,
                                            const uint8_t share[META_SHARE_ID_LEN],
                                            const uint8_t public_key[META_PUBLIC_KEY_LEN],
                                            uint64_t replica, int64_t now_ns);
/* Marks a member revoked. -ENOENT if it is not a member. */
META_MUST_CHECK int meta_relaydb_member_revoke(struct meta_relaydb *db,
                                               const uint8_t share[META_SHARE_ID_LEN],
                                               uint64_t replica);
/* The member with `replica` (revoked ones too). -ENOENT if none. */
META_MUST_CHECK int meta_relaydb_member_get(struct meta_relaydb *db,
                                            struct meta_relaydb_member *out,
                                            const uint8_t share[META_SHARE_ID_LEN],
                                            uint64_t replica);
/* Every member of `share` (revoked ones too). `each` must not call this handle. */
META_MUST_CHECK int meta_relaydb_members(struct meta_relaydb *db,
                                         const uint8_t share[META_SHARE_ID_LEN],
                                         meta_relaydb_member_fn each, void *ctx);

/* Records the address (text, <= META_RELAYDB_ADDR_MAX bytes) a member was last seen at. */
META_MUST_CHECK int meta_relaydb_addr_put(struct meta_relaydb *db,
                                          const uint8_t share[META_SHARE_ID_LEN], uint64_t replica,
                                          const char *addr, int64_t seen_ns);
/* Every known address in `share`. `each` must not call this handle. */
META_MUST_CHECK int meta_relaydb_addrs(struct meta_relaydb *db,
                                       const uint8_t share[META_SHARE_ID_LEN],
                                       meta_relaydb_addr_fn each, void *ctx);

#endif
