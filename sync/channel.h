/*
 * sync/channel: an authenticated, encrypted byte channel between two
 * devices (or a device and a relay), as a state machine with no sockets.
 *
 * The caller moves bytes: what arrives from the peer goes into
 * sync_channel_feed, what sync_channel_output holds goes to the peer.
 * Application messages go in with sync_channel_send and come out, decrypted
 * and in order, from sync_channel_recv. Time-outs, reading and writing are
 * the (libuv) caller's; this object never blocks and never does I/O.
 *
 * Handshake (README.md, "Channel"): the initiator sends an ephemeral X25519
 * key (crypto_kx) and its Ed25519 identity key; the responder answers with
 * its own pair and a signature over the transcript (protocol label, share
 * id, both ephemeral keys, both identity keys); the initiator checks it and
 * signs the transcript in turn. Each side asks its peer callback whether the
 * other's identity may connect. Session keys come from crypto_kx, bound to
 * the transcript hash, and drive one crypto_secretstream_xchacha20poly1305
 * each way. Every frame is length-prefixed; one larger than the limit is
 * refused before anything is allocated for it. There is no rekeying.
 *
 * Errors are sticky: once the channel fails every call returns the same
 * negative errno, and sync_channel_errmsg says what happened in words:
 *   -EACCES           the peer's identity was refused by our callback
 *   -ECONNREFUSED     the peer refused us (cleartext notice: unauthenticated)
 *   -EXDEV            the initiator asked for a share this responder does not serve
 *   -EKEYREJECTED     a handshake signature does not verify
 *   -EPROTONOSUPPORT  another protocol version
 *   -EMSGSIZE         a frame over the limit (or an empty one)
 *   -EBADMSG          a malformed handshake frame, or a frame that fails decryption
 *   -EPROTO           an unexpected stream tag, or data after the peer's final frame
 *   -ECONNRESET       the byte stream ended mid-frame or before the peer's final frame
 */
#ifndef WEFT_SYNC_CHANNEL_H
#define WEFT_SYNC_CHANNEL_H

#include "sync/sync.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SYNC_CHANNEL_VERSION 1
/* Largest application message: a record of SYNC_RECORD_MAX plus its wire envelope fits. */
#define SYNC_CHANNEL_MESSAGE_MAX ((64u << 20) + 4096u)
/* Per-frame overhead of crypto_secretstream_xchacha20poly1305 (tag byte + MAC). */
#define SYNC_CHANNEL_FRAME_OVERHEAD 17u
/* Largest frame payload after the 4-byte length. */
#define SYNC_CHANNEL_FRAME_MAX (SYNC_CHANNEL_MESSAGE_MAX + SYNC_CHANNEL_FRAME_OVERHEAD)

struct sync_channel;

enum sync_channel_role {
    SYNC_CHANNEL_INITIATOR, /* the side that connected: speaks first */
    SYNC_CHANNEL_RESPONDER, /* the side that accepted */
};

enum sync_channel_state {
    SYNC_CHANNEL_HANDSHAKE, /* keys not yet agreed: sending is refused (-ENOTCONN) */
    SYNC_CHANNEL_OPEN,      /* authenticated both ways (initiator: once it sent its signature) */
    SYNC_CHANNEL_CLOSED,    /* the peer sent its final frame; we may still send until we finish */
    SYNC_CHANNEL_FAILED,    /* see sync_channel_errmsg; flush the output (a refusal), then close */
};

/*
 * May the device with Ed25519 key `public_key` connect for share `share_id`?
 * 0 to accept; nonzero to refuse, with a reason for the log written to
 * why[0..why_len) as a NUL-terminated string.
 */
typedef int (*sync_peer_fn)(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                            const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why,
                            size_t why_len);

/*
 * A channel for this device (`identity`, copied; wiped at free) in `role`
 * for share `share_id` (copied). A responder may pass NULL for share_id to
 * serve whatever share the initiator names and the callback accepts (a
 * relay); an initiator must name one. An initiator's first frame is in the
 * output at once. *out is the caller's (sync_channel_free). -EINVAL, -ENOMEM, -EIO.
 */
SYNC_MUST_CHECK int sync_channel_new(struct sync_channel **out, enum sync_channel_role role,
                                     const struct sync_identity *identity,
                                     const uint8_t share_id[SYNC_SHARE_ID_LEN], sync_peer_fn peer,
                                     void *peer_ctx);
/* Wipes the keys and frees everything, queued messages too; NULL is fine. */
void sync_channel_free(struct sync_channel *channel);
/*
 * Takes bytes received from the peer (all of them; partial frames are kept
 * for the next call), advancing the handshake and queueing decrypted
 * messages. 0 or the channel's sticky error (see top); -EINVAL for NULL bytes.
 */
SYNC_MUST_CHECK int sync_channel_feed(struct sync_channel *channel, const void *bytes, size_t len);
/*
 * Tells the channel the peer's byte stream ended. 0 if that was after the
 * peer's final frame (SYNC_CHANNEL_CLOSED), else -ECONNRESET (truncated).
 */
SYNC_MUST_CHECK int sync_channel_feed_eof(struct sync_channel *channel);
/* The bytes waiting to be written to the peer (owned by the channel; valid until the next call). */
const uint8_t *sync_channel_output(size_t *len, const struct sync_channel *channel);
/* Drops the first `len` (<= what sync_channel_output gave) output bytes, once written. */
void sync_channel_output_consume(struct sync_channel *channel, size_t len);
/*
 * Encrypts message[0..len) (len <= SYNC_CHANNEL_MESSAGE_MAX) into the
 * output. -ENOTCONN during the handshake, -EPIPE after sync_channel_finish,
 * -EMSGSIZE, -ENOMEM, or the sticky error.
 */
SYNC_MUST_CHECK int sync_channel_send(struct sync_channel *channel, const void *message,
                                      size_t len);
/*
 * Queues the final frame: the peer then knows the stream was not truncated.
 * Nothing can be sent after it. -ENOTCONN, -EPIPE (already finished), -ENOMEM,
 * or the sticky error.
 */
SYNC_MUST_CHECK int sync_channel_finish(struct sync_channel *channel);
/*
 * Pops the oldest received message into *message (malloc'ed, the caller
 * frees; NULL when len is 0). -EAGAIN if none is queued; queued messages
 * stay readable after a failure.
 */
SYNC_MUST_CHECK int sync_channel_recv(uint8_t **message, size_t *len, struct sync_channel *channel);
/* Bytes of received messages waiting in sync_channel_recv's queue (for flow control). */
size_t sync_channel_inbox_bytes(const struct sync_channel *channel);
/* Where the channel is. */
enum sync_channel_state sync_channel_state(const struct sync_channel *channel);
/* The sticky error: 0 unless the channel failed. */
int sync_channel_error(const struct sync_channel *channel);
/* What went wrong in words ("" if nothing); owned by the channel. */
const char *sync_channel_errmsg(const struct sync_channel *channel);
/*
 * The authenticated peer: its identity key and the share id of the
 * session. 0, or -ENOTCONN until the handshake has verified the peer.
 */
SYNC_MUST_CHECK int sync_channel_peer(uint8_t public_key[SYNC_PUBLIC_KEY_LEN],
                                      uint8_t share_id[SYNC_SHARE_ID_LEN],
                                      const struct sync_channel *channel);

#endif
