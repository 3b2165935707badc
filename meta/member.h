/*
 * meta/member: the body of a membership op (META_OP_MEMBER). Devices of a
 * share learn each other's Ed25519 keys from these ops, each signed (in a
 * sync record) by a member that vouches for the device: the inviter at an
 * invite, a member at a removal. Bodies come from peers: the decoder checks
 * every length and accepts one encoding per value.
 *
 *     u8 format (1 or 2), public key (32), u8 flags (bit 0: revoked; others 0),
 *     bytes name (varint length 1..META_NAME_MAX, then the name)
 *     format 2 only: varint epoch (>= 1), varint count (>= 1), then per
 *     remaining member: u64le replica id, the new epoch's key sealed to it
 *     (META_SEALED_KEY_LEN bytes)
 *
 * Format 2 is a removal that starts key epoch `epoch`: the share's records
 * from then on are sealed under a new key that only the members named here
 * can open, so the removed device reads nothing written after.
 */
#ifndef WEFT_META_MEMBER_H
#define WEFT_META_MEMBER_H

#include "crdt/codec.h"
#include "meta/store.h"

#include <stdbool.h>

/* The new epoch's key for one member, sealed to it. */
struct meta_sealed_key {
    uint64_t replica;
    uint8_t sealed[META_SEALED_KEY_LEN];
};

struct meta_member_body {
    uint8_t public_key[META_PUBLIC_KEY_LEN];
    bool revoked;
    char name[META_NAME_MAX + 1];
    uint32_t epoch;                     /* format 2: the key epoch it starts; 0: format 1 */
    const struct meta_sealed_key *keys; /* format 2: borrowed to encode; owned after decode */
    size_t key_count;
};

/* Appends body's encoding; errors are sticky in buf. */
void meta_member_body_encode(struct crdt_buf *buf, const struct meta_member_body *body);
/* Decodes body[0..len) into *out (meta_member_body_clear it). -EBADMSG, -ENOMEM. */
META_MUST_CHECK int meta_member_body_decode(struct meta_member_body *out, const void *body,
                                            size_t len);
/* Frees the sealed keys a decoded body owns. */
void meta_member_body_clear(struct meta_member_body *body);

#endif
