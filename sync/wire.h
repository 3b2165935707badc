/*
 * sync/wire: the protocol messages two peers (or a peer and a relay)
 * exchange inside a sync/channel, one message per channel message.
 *
 *   HELLO        share id, protocol version, per author the highest record seq held
 *   OPS          one sealed op record (sync/record)
 *   WANT_CHUNKS  chunk ids the sender lacks
 *   CHUNK        one sealed chunk record
 *   HEADS        per author: the sender's latest record seq and its hash
 *   ACK          per author: the highest record seq the sender has accepted
 *   ERROR        a code and a line of text for the log
 *   MEMBER       a member vouches for a device (add) or removes one (revoke);
 *                the other side echoes it once done
 *   PEERS        where devices of the share listen: a device tells the relay
 *                its own, the relay tells members the others' (discovery)
 *
 * The decoder is strict: exact lengths, canonical varints, sorted entries,
 * counts bounded by the bytes present, no trailing bytes; whatever decodes
 * re-encodes to the same bytes. The encoder refuses (-EINVAL) what the
 * decoder would. Formats: README.md, "Wire".
 */
#ifndef WEFT_SYNC_WIRE_H
#define WEFT_SYNC_WIRE_H

#include "crdt/clock.h"
#include "crdt/codec.h"
#include "sync/record.h"
#include "sync/sync.h"

#include <stddef.h>
#include <stdint.h>

#define SYNC_WIRE_VERSION        1
#define SYNC_WIRE_WANT_MAX       1024 /* chunk ids in one WANT_CHUNKS */
#define SYNC_WIRE_ERROR_TEXT_MAX 512  /* bytes of ERROR text */
/* Largest encoded message: an OPS or CHUNK message around the largest record. */
#define SYNC_WIRE_MESSAGE_MAX (SYNC_RECORD_MAX + 8)

enum sync_msg_type {
    SYNC_MSG_HELLO = 1,
    SYNC_MSG_OPS = 2,
    SYNC_MSG_WANT_CHUNKS = 3,
    SYNC_MSG_CHUNK = 4,
    SYNC_MSG_HEADS = 5,
    SYNC_MSG_ACK = 6,
    SYNC_MSG_ERROR = 7,
    SYNC_MSG_MEMBER = 8,
    SYNC_MSG_PEERS = 9,
};

#define SYNC_WIRE_PEERS_MAX 256 /* entries in one PEERS */
#define SYNC_WIRE_ADDR_MAX  255 /* bytes of one "host:port" */

/* One device's listening address. */
struct sync_peer_addr {
    uint64_t replica;
    const char *addr; /* printable ASCII, not NUL-terminated */
    size_t len;       /* 1..SYNC_WIRE_ADDR_MAX */
};

/* What a MEMBER message does. */
enum sync_member_action {
    SYNC_MEMBER_ADD = 1,
    SYNC_MEMBER_REVOKE = 2,
};

/* One author's chain head as a source holds it. */
struct sync_head {
    uint64_t author;
    uint64_t seq; /* >= 1 */
    uint8_t hash[SYNC_HASH_LEN];
};

/*
 * A message. To encode, fill the member of `type` (nothing is taken over).
 * A decoded message points into the decoded bytes (keep them alive) and
 * owns its version vectors and head array: release it with sync_msg_clear.
 */
struct sync_msg {
    enum sync_msg_type type;
    union {
        struct {
            uint8_t share_id[SYNC_SHARE_ID_LEN];
            uint32_t version;  /* >= 1 */
            struct crdt_vv vv; /* records held: author -> highest record seq (README) */
        } hello;
        struct {
            const uint8_t *record; /* a sealed record of kind OPS (ops) or CHUNK (chunk) */
            size_t len;
        } ops, chunk;
        struct {
            const uint8_t *ids; /* count ids of SYNC_HASH_LEN bytes, back to back */
            size_t count;       /* 1..SYNC_WIRE_WANT_MAX */
        } want;
        struct {
            const struct sync_head *entries; /* strictly increasing authors */
            size_t count;
        } heads;
        struct {
            struct crdt_vv records; /* author -> highest record seq accepted */
        } ack;
        struct {
            const struct sync_peer_addr *entries;
            size_t count; /* 0..SYNC_WIRE_PEERS_MAX */
        } peers;
        struct {
            enum sync_member_action action;
            uint8_t public_key[SYNC_PUBLIC_KEY_LEN]; /* the device added or revoked */
        } member;
        struct {
            uint32_t code; /* 1..SYNC_REASON_COUNT-1: a sync_reason; other values: the session's */
            const char *text; /* printable UTF-8, no control characters, not NUL-terminated */
            size_t len;       /* <= SYNC_WIRE_ERROR_TEXT_MAX */
        } error;
    };
    struct sync_head *owned_heads;      /* decode's allocation; NULL otherwise */
    struct sync_peer_addr *owned_peers; /* decode's allocation; NULL otherwise */
};

/*
 * Appends the encoding of *msg to *out (caller-owned). -EINVAL if it is not
 * valid, -EMSGSIZE over SYNC_WIRE_MESSAGE_MAX (nothing appended), -ENOMEM.
 */
SYNC_MUST_CHECK int sync_wire_encode(struct crdt_buf *out, const struct sync_msg *msg);
/*
 * Decodes bytes[0..len) (exactly one message) into *out. -EBADMSG if
 * malformed, -EPROTONOSUPPORT for a record of another format version,
 * -ENOMEM. On failure *out is cleared.
 */
SYNC_MUST_CHECK int sync_wire_decode(struct sync_msg *out, const uint8_t *bytes, size_t len);
/*
 * Frees what a message from sync_wire_decode owns and zeroes it; accepts a
 * zeroed message. Not for a message the caller filled (it would free the
 * caller's version vectors).
 */
void sync_msg_clear(struct sync_msg *msg);
/* The message type's name, e.g. "HELLO" (static; "?" if unknown). */
const char *sync_msg_type_str(enum sync_msg_type type);

#endif
