/*
 * sync/relay_store: what a relay keeps, as an interface, so that the
 * embedded SQLite store (sync_relay_store_open_sqlite, on meta/relaydb) can
 * be replaced by one on an existing distributed store when a relay outgrows
 * a machine (DESIGN "Relay").
 *
 * A store holds, per share: each author's chain of sealed op records, sealed
 * chunk records by chunk id, the members (device keys) allowed to connect,
 * and where each member last connected from. Everything it holds is sealed
 * by devices; it never needs, and never gets, a key that opens it.
 *
 * The contract every implementation keeps (tests/sync/test_relay_store.c
 * checks it, and any backend should pass the same test):
 *
 *   - Chains. An author's records in a share are exactly 1..head, each
 *     stored once: op_put takes seq head + 1 whose prev is the head's hash;
 *     the same record again (same hash) is accepted as a no-op; another
 *     record at a held seq, or a prev that does not match, is a fork
 *     (-ENOTUNIQ); seq > head + 1 is a gap (-ENODATA). These checks are
 *     atomic with the insert: two relays sharing a backend cannot both
 *     extend a chain at one seq.
 *   - Durability. A put that returned 0 outside a group, or a group whose
 *     commit returned 0, survives a crash or power loss: the relay
 *     acknowledges it to the device (wire ACK) right after.
 *   - Bounded reads. op_read hands out at most max_records, stopping once
 *     max_bytes are reached (the first record always goes), so any chain is
 *     streamed in batches and a 10 GB share never sits in memory.
 *   - Records are opaque bytes here: the relay checks them (structure,
 *     signature) before putting them.
 *   - Membership. A share exists once registered with its first member;
 *     records and chunks of an unregistered share are refused (-ENOENT).
 *     Revocation is final.
 *   - Threads. A store is used by one thread at a time (the relay's loop
 *     thread); calls may block on I/O. A visitor (`each`) must not call the
 *     store; it returns 0 to go on, anything else stops the walk and is
 *     returned.
 *   - Errors are 0 or a negative errno; errmsg says what went wrong in words.
 */
#ifndef WEFT_SYNC_RELAY_STORE_H
#define WEFT_SYNC_RELAY_STORE_H

#include "sync/sync.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One stored op record, as a visitor sees it: pointers valid during the call only. */
struct sync_relay_record {
    uint64_t author;
    uint64_t seq;
    uint32_t epoch;
    const uint8_t *hash; /* SYNC_HASH_LEN bytes */
    const uint8_t *bytes;
    size_t len;
};

/* A member of a share. */
struct sync_relay_member {
    uint64_t replica; /* sync_replica_id(public_key) */
    uint8_t public_key[SYNC_PUBLIC_KEY_LEN];
    int64_t added_ns; /* CLOCK_REALTIME when it was added */
    bool revoked;
};

typedef int (*sync_relay_record_fn)(void *ctx, const struct sync_relay_record *record);
typedef int (*sync_relay_head_fn)(void *ctx, uint64_t author, uint64_t seq,
                                  const uint8_t hash[SYNC_HASH_LEN]);
typedef int (*sync_relay_member_fn)(void *ctx, const struct sync_relay_member *member);
typedef int (*sync_relay_addr_fn)(void *ctx, uint64_t replica, const char *addr, int64_t seen_ns);

/* Longest address text a store keeps (bytes, without the NUL). */
#define SYNC_RELAY_ADDR_MAX 255

/* The functions of one implementation; `ctx` is its first argument everywhere. */
struct sync_relay_store_ops {
    /* Group commit: puts until commit become durable together (one fsync). -EINVAL if open. */
    int (*begin)(void *ctx);
    /* Commits the group durably; on failure the group is rolled back and absent. */
    int (*commit)(void *ctx);
    /* Drops the group's puts (no-op without a group). */
    void (*rollback)(void *ctx);

    /*
     * Stores op record `seq` (>= 1) of `author` in `share`: its hash, its
     * predecessor's hash `prev` (ignored for seq 1), key epoch and bytes.
     * *added (may be NULL): whether it is new. -ENOTUNIQ (fork), -ENODATA
     * (gap), -ENOENT (share not registered), -EINVAL.
     */
    int (*op_put)(void *ctx, bool *added, const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t author,
                  uint64_t seq, const uint8_t prev[SYNC_HASH_LEN],
                  const uint8_t hash[SYNC_HASH_LEN], uint32_t epoch, const uint8_t *bytes,
                  size_t len);
    /*
     * Visits `author`'s records in `share` from seq `from` on, in seq order,
     * at most max_records, stopping once max_bytes are reached (the first
     * record always goes). *count (may be NULL): how many were visited.
     */
    int (*op_read)(void *ctx, size_t *count, const uint8_t share[SYNC_SHARE_ID_LEN],
                   uint64_t author, uint64_t from, size_t max_records, size_t max_bytes,
                   sync_relay_record_fn each, void *each_ctx);
    /* The author's head: last seq (0 if none) and its hash (zeroed if none). */
    int (*head)(void *ctx, uint64_t *seq, uint8_t hash[SYNC_HASH_LEN],
                const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t author);
    /* Visits every author's head in `share`, in no set order. */
    int (*heads)(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], sync_relay_head_fn each,
                 void *each_ctx);

    /*
     * Stores sealed chunk record `id` of `share`, signed by `author`.
     * Idempotent by id: the first record of an id stays, *added (may be
     * NULL) false. -ENOENT (share not registered), -EINVAL.
     */
    int (*chunk_put)(void *ctx, bool *added, const uint8_t share[SYNC_SHARE_ID_LEN],
                     const uint8_t id[SYNC_HASH_LEN], uint64_t author, const uint8_t *bytes,
                     size_t len);
    /* The chunk record into *bytes (malloc'ed, the caller frees). -ENOENT if not held. */
    int (*chunk_get)(void *ctx, uint8_t **bytes, size_t *len,
                     const uint8_t share[SYNC_SHARE_ID_LEN], const uint8_t id[SYNC_HASH_LEN]);
    /* Whether the chunk record is held. */
    int (*chunk_has)(void *ctx, bool *has, const uint8_t share[SYNC_SHARE_ID_LEN],
                     const uint8_t id[SYNC_HASH_LEN]);

    /* Whether `share` is registered. */
    int (*share_exists)(void *ctx, bool *exists, const uint8_t share[SYNC_SHARE_ID_LEN]);
    /*
     * Registers `share` with its first member, atomically: -EEXIST if it is
     * registered already (nothing changes), so two first devices racing
     * cannot both become the first.
     */
    int (*share_register)(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN],
                          const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], int64_t now_ns);
    /*
     * Adds a member. Idempotent for a current member; -EKEYREVOKED if it was
     * revoked, -EEXIST if another key has its replica id, -ENOENT (no share).
     */
    int (*member_add)(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN],
                      const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], int64_t now_ns);
    /* Revokes a member, for good. -ENOENT if it is not one. */
    int (*member_revoke)(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t replica);
    /* The member with replica id `replica` (revoked ones too); -ENOENT if none. */
    int (*member_get)(void *ctx, struct sync_relay_member *out,
                      const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t replica);
    /* Visits every member of `share`, revoked ones too. */
    int (*members)(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], sync_relay_member_fn each,
                   void *each_ctx);

    /* Records where a member was last seen (text, <= SYNC_RELAY_ADDR_MAX bytes). */
    int (*addr_put)(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t replica,
                    const char *addr, int64_t seen_ns);
    /* Visits every known address in `share`. */
    int (*addrs)(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], sync_relay_addr_fn each,
                 void *each_ctx);

    /* The last failure in words ("" if none); owned by the store. */
    const char *(*errmsg)(void *ctx);
    /* Releases everything (locks, files, memory); ctx is invalid afterwards. */
    void (*close)(void *ctx);
};

/* A store: an implementation and its state. Copyable; one owner calls close. */
struct sync_relay_store {
    const struct sync_relay_store_ops *ops;
    void *ctx;
};

/*
 * Opens the embedded SQLite store in directory `dir` (meta/relaydb:
 * DIR/relay.db, locked by DIR/relay.lock), creating it on first use. On
 * success *out is the caller's (sync_relay_store_close). On failure `why`
 * (may be NULL) gets a sentence: -EBUSY (another relay uses DIR), -EUCLEAN
 * (damaged or foreign file), -EPROTONOSUPPORT (newer schema), -ENOENT, -EIO.
 */
SYNC_MUST_CHECK int sync_relay_store_open_sqlite(struct sync_relay_store *out, char *why,
                                                 size_t why_len, const char *dir);
/* Closes a store (and zeroes *store); a zeroed store is fine. */
void sync_relay_store_close(struct sync_relay_store *store);

#endif
