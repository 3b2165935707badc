/*
 * meta/store: one share's replica store on this device, and the only home of
 * SQLite in weft.
 *
 * A store is a directory (README "Storage on a device"):
 *
 *     DIR/store.db        SQLite database, WAL mode: every table of the share
 *     DIR/lock            held with an OFD write lock while a process has it open
 *     DIR/keys/           0700: share.key (32 bytes), device.key (64 bytes), 0600
 *     DIR/files/xx/ID     working copy of file node ID (32 hex digits; xx = first byte)
 *     DIR/files/tmp/      temporary files, emptied at open
 *
 * One process at a time opens a store; the handle is not thread-safe (the
 * mount daemon serializes calls). Every function that changes the store is
 * atomic: it runs in its own transaction, or inside the caller's open one
 * (meta_store_txn_begin) and then commits or rolls back with it. On failure
 * the store's message (meta_store_errmsg) says what went wrong in words a
 * user can act on; it is never left half-changed.
 */
#ifndef WEFT_META_STORE_H
#define WEFT_META_STORE_H

#include "meta/crypto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define META_SHARE_ID_LEN 16
#define META_ERRMSG_LEN   512
#define META_NAME_MAX     255 /* device and file names, bytes */
#define META_ID_LEN       16

/* A node id: 16 opaque bytes (crdt/tree defines how they are made). */
struct meta_id {
    uint8_t bytes[META_ID_LEN];
};

/* Current schema version (PRAGMA user_version) and file tag (PRAGMA application_id). */
#define META_SCHEMA_VERSION 4
#define META_APPLICATION_ID 0x77656674 /* "weft" */

struct meta_store;

/* A message for a failed open or create, where no store exists to hold one. */
struct meta_err {
    char msg[META_ERRMSG_LEN];
};

/* What a new share needs from its caller. NULL pointers mean "make a fresh one". */
struct meta_share_params {
    const char *device_name;    /* required: this device's short name, e.g. the hostname */
    const uint8_t *share_id;    /* META_SHARE_ID_LEN bytes, when joining an existing share */
    const uint8_t *share_key;   /* META_KEY_LEN bytes, when joining an existing share */
    const uint8_t *device_seed; /* 32 bytes: this device's Ed25519 seed, from an invite */
};

/*
 * Working-copy I/O, replaceable so fault tests can fail the n-th write or
 * fsync. Each returns what the libc call does (bytes or 0, -1 with errno).
 */
struct meta_io {
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t offset);
    int (*fsync)(int fd);
};

/*
 * Creates a new share's store in `dir` (made 0700 if missing; it may exist but
 * must hold no store), with fresh device keys, and opens it. *out is owned by
 * the caller: close with meta_store_close. On failure *err (may be NULL) says
 * why: -EEXIST (a store is already there), -EBUSY (locked), -EINVAL, -EIO...
 * Blocks on disk I/O (fsync).
 */
META_MUST_CHECK int meta_store_create(struct meta_store **out, struct meta_err *err,
                                      const char *dir, const struct meta_share_params *params);
/*
 * Opens the store in `dir`: takes its lock, checks the database is weft's
 * and not from a newer version, migrates an older schema, rewrites working
 * copies a crash left behind. Refuses, never repairs: -ENOENT (no store),
 * -EBUSY (open elsewhere), -EUCLEAN (corrupt, foreign or half-created
 * database), -EPROTONOSUPPORT (newer schema), -EPERM (key files readable by
 * others). *out as for meta_store_create.
 */
META_MUST_CHECK int meta_store_open(struct meta_store **out, struct meta_err *err, const char *dir);
/* Closes the database, releases the lock, wipes keys from memory, frees. NULL is fine. */
void meta_store_close(struct meta_store *store);

/* The message of the store's last failure ("" if none yet); valid until the next call. */
const char *meta_store_errmsg(const struct meta_store *store);
/* The store's directory (owned by the store). */
const char *meta_store_dir(const struct meta_store *store);
/* This device's replica id: the first 8 bytes of BLAKE2b-256(public key), little-endian. */
uint64_t meta_store_replica(const struct meta_store *store);
/* Copies the share id. */
void meta_store_share_id(uint8_t out[META_SHARE_ID_LEN], const struct meta_store *store);
/* Copies this device's Ed25519 public key. */
void meta_store_public_key(uint8_t out[META_PUBLIC_KEY_LEN], const struct meta_store *store);
/*
 * The keyed chunk id of data[0..len): BLAKE2b-256 keyed with the share key.
 * The share key leaves the store only for an invite (meta_store_export_share_key).
 */
META_MUST_CHECK int meta_store_chunk_id(uint8_t out[META_HASH_LEN], const struct meta_store *store,
                                        const void *data, size_t len);
/*
 * Derives a 32-byte key for one purpose from the share key: BLAKE2b-256
 * keyed with the share key over "weft key " || context. sync/ seals records
 * under such keys, so the share key itself stays here. The caller wipes out.
 */
META_MUST_CHECK int meta_store_derive_key(uint8_t out[META_KEY_LEN], const struct meta_store *store,
                                          const char *context);
/*
 * Copies the share key, for an invite only: whoever holds it reads the
 * whole share. The caller wipes it.
 */
void meta_store_export_share_key(uint8_t out[META_KEY_LEN], const struct meta_store *store);
/*
 * Keeps the share key of key epoch `epoch` (>= 1; a device removal starts
 * one) in DIR/keys/epoch-N.key, 0600, durably; and notes the highest epoch
 * held (setting keys.epoch). -EINVAL, -EIO.
 */
META_MUST_CHECK int meta_store_epoch_key_put(struct meta_store *store, uint32_t epoch,
                                             const uint8_t key[META_KEY_LEN]);
/* Reads the key of epoch `epoch` (>= 1); the caller wipes it. -ENOENT if not held. */
META_MUST_CHECK int meta_store_epoch_key_get(uint8_t key[META_KEY_LEN], struct meta_store *store,
                                             uint32_t epoch);
/* The highest key epoch this device holds a key of (0: only the share key's). */
uint32_t meta_store_epoch(struct meta_store *store);
/* Copies this device's Ed25519 secret key (64 bytes) for signing; the caller wipes it. */
void meta_store_secret_key(uint8_t out[META_SECRET_KEY_LEN], const struct meta_store *store);
/* Replaces the working-copy I/O functions (NULL restores pwrite/fdatasync). Not copied. */
void meta_store_set_io(struct meta_store *store, const struct meta_io *io);

/*
 * Starts a write transaction that later calls join until commit or rollback.
 * -EINVAL if one is already open; -EBUSY, -EIO.
 */
META_MUST_CHECK int meta_store_txn_begin(struct meta_store *store);
/*
 * Commits durably (synchronous=FULL: on return the transaction survives
 * power loss), then rewrites working copies the transaction made stale.
 * On failure everything since begin is rolled back and absent: -EIO,
 * -ENOSPC... A failure rewriting a working copy after a successful commit is
 * reported (the commit stands) and retried at the next commit or open.
 */
META_MUST_CHECK int meta_store_txn_commit(struct meta_store *store);
/* Rolls back everything since meta_store_txn_begin (no-op if none is open). */
void meta_store_txn_rollback(struct meta_store *store);

/*
 * Lazy durability, the mount's mode: every commit stays atomic and survives
 * a killed process, but reaches the disk only at the next meta_store_sync
 * (or SQLite's own checkpoint), so closing a file costs no fsync. A program's
 * fsync on the mount calls meta_store_sync: that is the power-loss promise.
 * Off (every commit durable at once) by default.
 */
META_MUST_CHECK int meta_store_set_lazy(struct meta_store *store, bool lazy);
/*
 * Makes every commit so far durable, and node's working copy with its
 * directory entry too (node may be NULL). Blocks on fsync.
 */
META_MUST_CHECK int meta_store_sync(struct meta_store *store, const struct meta_id *node);

/* Sets a setting (key and value are UTF-8 text). */
META_MUST_CHECK int meta_setting_set(struct meta_store *store, const char *key, const char *value);
/* Reads a setting into a malloc'ed string the caller frees; -ENOENT if unset. */
META_MUST_CHECK int meta_setting_get(char **out, struct meta_store *store, const char *key);
/* Reads an integer setting; `fallback` if unset; -EINVAL if set but not an integer. */
META_MUST_CHECK int meta_setting_get_int(int64_t *out, struct meta_store *store, const char *key,
                                         int64_t fallback);
/* Removes a setting (no error if it was unset). */
META_MUST_CHECK int meta_setting_delete(struct meta_store *store, const char *key);

/* A device that is, or was, a member of the share. */
struct meta_device {
    uint64_t replica;
    uint8_t public_key[META_PUBLIC_KEY_LEN];
    char name[META_NAME_MAX + 1];
    int64_t added_at_ns; /* wall-clock time it was added */
    bool revoked;
};

/* Adds or updates a device (keyed by replica id); -EEXIST if its key belongs to another. */
META_MUST_CHECK int meta_device_put(struct meta_store *store, const struct meta_device *device);
/* Reads one device; -ENOENT if unknown. */
META_MUST_CHECK int meta_device_get(struct meta_device *out, struct meta_store *store,
                                    uint64_t replica);
/* All devices in replica-id order; *out is malloc'ed, the caller frees it (NULL if none). */
META_MUST_CHECK int meta_device_list(struct meta_device **out, size_t *out_len,
                                     struct meta_store *store);

/*
 * Runs `PRAGMA integrity_check` and the store's own consistency checks
 * (every version's chunks present, working copies of clean nodes present).
 * 0 if all is well, -EUCLEAN with the first problem in the message.
 */
META_MUST_CHECK int meta_store_check(struct meta_store *store);

#endif
