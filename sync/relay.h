/*
 * sync/relay: the relay server. It authenticates devices, keeps each
 * share's sealed records and chunks in a relay store (sync/relay_store.h),
 * serves them to the share's members and pushes new records to connected
 * members the moment they are stored. It holds no share key: it can check a
 * record's structure and its author's signature, never read or forge it.
 *
 * Membership. A device may connect for a share if its key is a member that
 * is not revoked. A share the relay has never seen is registered with the
 * first device that completes a handshake for it as its first member: trust
 * on first use. That device is the share's creator in practice (share ids
 * are 16 random bytes, known only to members); whoever learns a share id
 * before its creator first syncs could claim it, which costs the creator
 * only the use of this relay for that share (records stay sealed and
 * signed). Further members are added through the store (or, later, an
 * invite flow); revoked members are refused.
 *
 * Session, after the channel's handshake (sync/README.md "Relay"): the
 * device sends HELLO with, per author, the highest *record* seq it holds;
 * the relay answers HELLO with its own heads, then streams every record the
 * device lacks, per author in seq order, in bounded batches as the
 * connection drains, then HEADS (author -> seq, hash) once the device is
 * caught up. OPS from the device: checked (structure, share, author is a
 * member, Ed25519 signature), stored (chain rules: relay_store.h), made
 * durable, then ACKed (author -> highest record seq of that author the
 * device sent and the relay holds) and pushed to the share's other
 * connected members. WANT_CHUNKS -> CHUNK (an ERROR with code
 * SYNC_RELAY_ERR_NO_CHUNK for an id not held); CHUNK -> checked and stored.
 * Refused records get an ERROR (code: the sync_reason) and change nothing.
 *
 * Threads: the relay runs on its own sync/net loop thread; the store is
 * used only there while the relay runs. sync_relay_* calls are for the
 * owning thread (any thread but the loop).
 */
#ifndef WEFT_SYNC_RELAY_H
#define WEFT_SYNC_RELAY_H

#include "sync/net.h"
#include "sync/relay_store.h"
#include "sync/sync.h"

#include <stdint.h>

/* ERROR codes of the relay's own (1..12 are enum sync_reason). */
#define SYNC_RELAY_ERR_STORAGE  100 /* the relay could not store or read; try again later */
#define SYNC_RELAY_ERR_NO_CHUNK 101 /* WANT_CHUNKS named a chunk the relay does not hold */
#define SYNC_RELAY_ERR_PROTOCOL 102 /* an unexpected or malformed message */
#define SYNC_RELAY_ERR_MEMBER   103 /* not (or no longer) a member of the share */

/* Defaults for the zero fields of struct sync_relay_config. */
#define SYNC_RELAY_BATCH_RECORDS 64         /* records read from the store per batch */
#define SYNC_RELAY_BATCH_BYTES   (1u << 20) /* bytes read from the store per batch */
#define SYNC_RELAY_WANT_MAX      8192       /* chunk ids queued per session before reading pauses */

struct sync_relay;

struct sync_relay_config {
    struct sync_relay_store *store; /* borrowed: the caller opens it before and closes it after */
    /* The relay's own identity, and the transport's timeouts, marks and log. */
    struct sync_net_config net;
    size_t batch_records; /* 0: SYNC_RELAY_BATCH_RECORDS */
    size_t batch_bytes;   /* 0: SYNC_RELAY_BATCH_BYTES */
};

/* What the relay did, for logs and tests. */
struct sync_relay_stats {
    uint64_t sessions;        /* handshakes completed */
    uint64_t shares_created;  /* registered on first use */
    uint64_t records_stored;  /* op records new to the store */
    uint64_t records_held;    /* op records sent again that the store already held */
    uint64_t records_refused; /* malformed, forged, forks, gaps, non-members */
    uint64_t records_sent;    /* op records streamed or pushed to devices */
    uint64_t chunks_stored;
    uint64_t chunks_sent;
    uint64_t commits;     /* durable group commits */
    uint64_t want_pauses; /* times a session's chunk requests piled up and reading paused */
    size_t max_queued;    /* the largest send queue seen on a connection after a send */
};

/*
 * Makes a relay on `config->store` and starts its loop thread. *out is the
 * caller's (sync_relay_free). -EINVAL, -ENOMEM, -EIO.
 */
SYNC_MUST_CHECK int sync_relay_new(struct sync_relay **out, const struct sync_relay_config *config);
/* Listens on a numeric address (port 0 picks one: *port_out). Blocks until bound. */
SYNC_MUST_CHECK int sync_relay_listen(struct sync_relay *relay, uint16_t *port_out,
                                      const char *host, uint16_t port);
/* Copies the counters (thread-safe). */
void sync_relay_stats(struct sync_relay_stats *out, struct sync_relay *relay);
/*
 * Stops: commits what is pending, closes every connection, joins the loop
 * thread, frees. The store stays open (the caller's). NULL is fine.
 */
void sync_relay_free(struct sync_relay *relay);

/*
 * The `weft relay` command: argv[0] is the command's name, then
 * --listen ADDR:PORT --data DIR [--verbose] | --help. Runs until SIGINT or
 * SIGTERM. Returns the exit status: 0 stopped on a signal (or --help), 1
 * failed to start or while running, 2 usage error. Logs to stderr.
 */
int sync_relay_main(int argc, char **argv);

#endif
