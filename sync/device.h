/*
 * sync/device: one share's sync state on this device, between the replica
 * (meta/replica) and the records that travel.
 *
 * Outgoing, it seals this device's ops that no record holds yet into the
 * next records of its chain, and the chunks their content versions name
 * into chunk records, before the op record that names them. Incoming, it
 * verifies a peer's or relay's record (sync_record_open: share, epoch key,
 * membership, AEAD, signature; the chain: no gap, no fork), keeps it and
 * applies its ops to the replica; a chunk record's bytes go to the replica's
 * chunk store once its keyed id matches them.
 *
 * Every record this device holds, its own and others', is kept in a local
 * record store with the relay store's contract (sync/relay_store.h: chains
 * without gaps or forks, chunks by id), under DIR/records of the share: so a
 * device serves its peers exactly as a relay does, and a record is kept
 * byte for byte as its author signed it (re-sealing would fork the chain).
 *
 * Applied is not the same as kept: an op record whose content names a chunk
 * not yet here, or whose author is not yet known as a member, stays kept
 * but unapplied until sync_device_apply_pending finds what it lacked.
 * Whether a record's ops are applied is the replica's version vector.
 *
 * Keys: records of key epoch 0 are sealed under the share key's derived
 * "seal epoch 0" key (meta_store_derive_key); the device signs with its own
 * Ed25519 key. Members are the replica store's devices (meta_device_*):
 * a revoked device may author nothing.
 *
 * Threads: one thread at a time calls a device. The replica is shared with
 * the mount's threads, so the device takes the caller's lock around each use
 * of it (and only then): sealing and verifying happen outside the lock, and
 * a device function must be called without it held.
 */
#ifndef WEFT_SYNC_DEVICE_H
#define WEFT_SYNC_DEVICE_H

#include "meta/replica.h"
#include "sync/relay_store.h"
#include "sync/sync.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sync_device;

/* The replica's lock, as the device takes it (both NULL: no locking). */
struct sync_device_lock {
    void (*lock)(void *ctx);
    void (*unlock)(void *ctx);
    void *ctx;
};

/* What a device has done since it was opened, for `weft status`. */
struct sync_device_stats {
    uint64_t records_kept;               /* op records held, this device's and others' */
    uint64_t records_sealed;             /* op records this device made */
    uint64_t chunks_sealed;              /* chunk records this device made */
    uint64_t records_applied;            /* others' op records whose ops reached the replica */
    uint64_t chunks_received;            /* others' chunk records taken into the replica */
    uint64_t duplicates;                 /* records already held, ignored */
    uint64_t pending;                    /* op records kept but not applied yet */
    uint64_t refused[SYNC_REASON_COUNT]; /* records refused, by reason */
};

/*
 * Opens the sync state of `replica`'s share, its record store in
 * `records_dir` (made if missing), taking `lock` (may be NULL) around its
 * uses of the replica. *out is the caller's (sync_device_close);
 * the replica must outlive it. On failure `why` (may be NULL) gets a
 * sentence. -EBUSY (the record store is in use), -EUCLEAN, -ENOMEM, -EIO.
 */
SYNC_MUST_CHECK int sync_device_open(struct sync_device **out, char *why, size_t why_len,
                                     struct meta_replica *replica, const char *records_dir,
                                     const struct sync_device_lock *lock);
/* Closes the record store, wipes keys, frees. NULL is fine. */
void sync_device_close(struct sync_device *device);

/*
 * Seals every op of this device not yet in a record, in op order, into as
 * few records as the size limit allows, each preceded by the chunk records
 * of the chunks its content versions name that are not held yet. *sealed
 * (may be NULL): op records made. -EMSGSIZE for an op too large for any
 * record (named in the message), -EIO, -ENOMEM.
 */
SYNC_MUST_CHECK int sync_device_seal(struct sync_device *device, size_t *sealed);
/*
 * One bounded step of sync_device_seal: about 16 MiB of chunks or 65,536
 * ops, in whole records. *more says whether ops are left for another step
 * (what runs on an event loop seals step by step, and sends between).
 */
SYNC_MUST_CHECK int sync_device_seal_step(struct sync_device *device, size_t *sealed, bool *more);

/*
 * Takes one record from a peer or relay: verifies it, keeps it and applies
 * what it can (see top). 0 when accepted or already held (a duplicate is
 * not an attack: relays and peers overlap). A refused record changes
 * nothing: *reason (may be NULL) says why and the return is that reason's
 * errno. Other errors (-EIO, -ENOMEM, -ENOSPC) are the device's own.
 */
SYNC_MUST_CHECK int sync_device_accept(struct sync_device *device, enum sync_reason *reason,
                                       const uint8_t *bytes, size_t len);

/* Applies kept records that waited for a chunk or a member. *applied (may be NULL): how many. */
SYNC_MUST_CHECK int sync_device_apply_pending(struct sync_device *device, size_t *applied);

/*
 * The chunk ids that kept but unapplied records wait for (ask peers for
 * them: wire WANT_CHUNKS). Known for a record once it was tried or kept
 * behind one that waits: call sync_device_apply_pending first after
 * opening. *ids is malloc'ed (the caller frees), *count of them.
 */
SYNC_MUST_CHECK int sync_device_wanted(struct sync_device *device, uint8_t (**ids)[SYNC_HASH_LEN],
                                       size_t *count);
/*
 * The wanted chunk ids handed out (by these three calls) more than `age_ns`
 * ago and still not here: ask again (a peer asked did not have them, or the
 * answer was lost). *ids is malloc'ed.
 */
SYNC_MUST_CHECK int sync_device_wanted_stale(struct sync_device *device,
                                             uint8_t (**ids)[SYNC_HASH_LEN], size_t *count,
                                             int64_t age_ns);
/*
 * The wanted chunk ids added since the last call (each returned once: ask
 * for them on the session that brought the record). *ids is malloc'ed.
 */
SYNC_MUST_CHECK int sync_device_wanted_new(struct sync_device *device,
                                           uint8_t (**ids)[SYNC_HASH_LEN], size_t *count);

/*
 * The chunk ids first sealed with this device's op record `seq`: what a
 * relay that lacks the record lacks of its chunks (the others went with
 * earlier records). *ids is malloc'ed (may be NULL with *count 0). -ENOENT
 * when this device does not remember (sealed before it was opened, or long
 * ago): push every chunk the record names (sync_device_chunks_named).
 */
SYNC_MUST_CHECK int sync_device_fresh_chunks(struct sync_device *device,
                                             uint8_t (**ids)[SYNC_HASH_LEN], size_t *count,
                                             uint64_t seq);
/* Forgets the fresh chunks of own records up to `seq` (the relay confirmed them). */
void sync_device_forget_fresh(struct sync_device *device, uint64_t seq);

/*
 * The chunk ids the binary versions in op record bytes[0..len) name (text
 * versions travel as text ops: their chunks never need to). Opens the
 * record (it must be one this device could verify). *ids is malloc'ed.
 */
SYNC_MUST_CHECK int sync_device_chunks_named(struct sync_device *device,
                                             uint8_t (**ids)[SYNC_HASH_LEN], size_t *count,
                                             const uint8_t *bytes, size_t len);

/* The local record store: what this device can serve to peers (owned by the device). */
struct sync_relay_store *sync_device_records(struct sync_device *device);
/* The share id (owned by the device). */
const uint8_t *sync_device_share_id(const struct sync_device *device);
/* The last failure in words ("" if none); valid until the next call. */
const char *sync_device_errmsg(const struct sync_device *device);
/* Copies the counters. */
void sync_device_stats(struct sync_device_stats *out, const struct sync_device *device);

#endif
