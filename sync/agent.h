/*
 * sync/agent: a device's syncer for one share, the piece the mount daemon
 * runs. It owns a sync/net transport (its own libuv thread) and the share's
 * sync/device, keeps a connection to the share's relay (reconnecting with
 * backoff), and on each connection:
 *
 *   - says what it holds (HELLO: per author, the highest record seq kept)
 *     and streams, as the connection drains, every kept record the other
 *     side lacks, each op record preceded by the chunk records of the
 *     binary versions it names (so a relay always holds what its records
 *     need, whoever wrote them);
 *   - takes OPS and CHUNK records into the device (verified, kept,
 *     applied), asks for the chunks unapplied records wait for
 *     (WANT_CHUNKS), answers the other side's WANT_CHUNKS;
 *   - checks HEADS claims against what it holds and what the same source
 *     claimed before: a fork or a rollback is reported, nothing applied.
 *
 * Devices may also sync directly (weft peer add): the same session, with a
 * device whose key is a member of the share, listened for or dialed.
 *
 * A local commit calls sync_agent_poke: the agent seals the new ops into
 * records on its thread and pushes them to every connection at once (no
 * polling). The replica is shared with the mount's threads: the agent takes
 * the caller's lock around every use of it.
 */
#ifndef WEFT_SYNC_AGENT_H
#define WEFT_SYNC_AGENT_H

#include "meta/replica.h"
#include "sync/device.h"
#include "sync/net.h"
#include "sync/wire.h"

#include <stdbool.h>
#include <stdint.h>

struct sync_agent;

struct sync_agent_config {
    struct meta_replica *replica; /* borrowed; used only under lock */
    const char *records_dir;      /* the device's record store (sync_device_open) */
    const char *relay;            /* "host:port" of the share's relay; NULL: none */
    const char *listen;           /* "addr:port" to accept this share's devices on; NULL: none */
    const char *peers;            /* space-separated "host:port" of devices to sync with directly */
    void (*lock)(void *ctx);      /* serialize with the replica's other users */
    void (*unlock)(void *ctx);
    void *lock_ctx;
    sync_net_log_fn log; /* may be NULL */
    void *log_ctx;
    /* Transport timeouts and backoff (0: sync/net's defaults); tests shorten them. */
    uint32_t idle_timeout_ms;
    uint32_t backoff_min_ms;
    uint32_t backoff_max_ms;
};

/* What `weft status` shows of a share's sync. */
struct sync_agent_status {
    bool relay_connected;
    unsigned peers_connected;   /* direct sessions with other devices */
    uint16_t listen_port;       /* the port peers reach this device on (0: not listening) */
    int64_t relay_last_seen_ns; /* CLOCK_REALTIME of the last message from the relay; 0: never */
    uint64_t relay_records;     /* op records the relay held when it last said HELLO */
    uint64_t records_sent;      /* records and chunks this agent sent */
    uint64_t records_unacked;   /* op records kept here that the relay has not confirmed */
    uint64_t records_received;  /* records and chunks it took in (duplicates too) */
    uint64_t forks, rollbacks;  /* misbehaviour of a source (HEADS) */
    uint64_t undecodable;       /* messages that did not decode (a cut or mangled record) */
    struct sync_device_stats device;
    char last_error[512]; /* the last refusal or failure, in words ("" if none) */
};

/*
 * Opens the device and starts the transport and, if configured, the relay
 * connection. *out is the caller's (sync_agent_stop). The config's strings
 * are copied. On failure `why` gets a sentence. -EINVAL, -ENOMEM, -EIO...
 */
SYNC_MUST_CHECK int sync_agent_start(struct sync_agent **out, char *why, size_t why_len,
                                     const struct sync_agent_config *config);
/* New local ops: seal and push them soon. Any thread, never blocks; pokes coalesce. */
void sync_agent_poke(struct sync_agent *agent);
/*
 * Tells the relay that this member vouches for (SYNC_MEMBER_ADD) or removes
 * a device. Kept in the store until the relay confirms, sent on every
 * connection until then. Any thread; takes the lock. 0, -EIO, -ENOMEM.
 */
SYNC_MUST_CHECK int sync_agent_member(struct sync_agent *agent, enum sync_member_action action,
                                      const uint8_t public_key[SYNC_PUBLIC_KEY_LEN]);
/*
 * The same for a share no agent runs for (weft invite on an unmounted
 * share): queued in `store` (the caller holds its lock) for the next agent.
 */
SYNC_MUST_CHECK int sync_member_queue(struct meta_store *store, enum sync_member_action action,
                                      const uint8_t public_key[SYNC_PUBLIC_KEY_LEN]);
/*
 * Invites a device to `replica`'s share: makes its identity, adds it as a
 * member (a signed op every device applies, and a note for the relay) and
 * writes the join token (sync/invite) to token[0..cap). *new_key gets the
 * device's public key (tell a running agent: sync_agent_member). The caller
 * holds the replica's lock. The share needs a relay whose key it pinned.
 * On failure `why` says what to do. 0, -ENOENT (no relay yet), -EINVAL...
 */
SYNC_MUST_CHECK int sync_invite_make(char *token, size_t cap, char *why, size_t why_len,
                                     struct meta_replica *replica, const char *share_name,
                                     const char *device_name, uint8_t new_key[SYNC_PUBLIC_KEY_LEN]);
/*
 * Adds "host:port" to the share's peers in `store` (setting sync.peers, read
 * by the next agent); the caller holds the store's lock. 0 if already there.
 */
SYNC_MUST_CHECK int sync_peer_remember(struct meta_store *store, const char *addr);
/* Syncs directly with the device at "host:port" from now on (weft peer add). Any thread. */
SYNC_MUST_CHECK int sync_agent_add_peer(struct sync_agent *agent, const char *addr);
/*
 * Removes the device named `name` from `replica`'s share for good: a new key
 * epoch for the others (meta_replica_remove_device) and a note for the relay
 * (tell a running agent: sync_agent_member with *key). The caller holds the
 * replica's lock. On failure `why` says what went wrong. -ENOENT (no such
 * device), -EINVAL (this device), -EALREADY.
 */
SYNC_MUST_CHECK int sync_device_remove(uint8_t key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len,
                                       struct meta_replica *replica, const char *name);
/* The share's devices as text, a line each (malloc'ed); the caller holds the lock. */
SYNC_MUST_CHECK int sync_devices_text(char **out, struct meta_store *store);
/* Copies the status (thread-safe). */
void sync_agent_status(struct sync_agent_status *out, struct sync_agent *agent);
/* Closes every connection, stops the thread, closes the device, frees. NULL is fine. */
void sync_agent_stop(struct sync_agent *agent);

#endif
