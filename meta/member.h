/*
 * meta/member: the body of a membership op (META_OP_MEMBER). Devices of a
 * share learn each other's Ed25519 keys from these ops, each signed (in a
 * sync record) by a member that vouches for the device: the inviter at an
 * invite, a member at a removal. Bodies come from peers: the decoder checks
 * every length and accepts one encoding per value.
 *
 *     u8 format (1), public key (32), u8 flags (bit 0: revoked; others 0),
 *     bytes name (varint length 1..META_NAME_MAX, then the name)
 */
#ifndef WEFT_META_MEMBER_H
#define WEFT_META_MEMBER_H

#include "crdt/codec.h"
#include "meta/store.h"

#include <stdbool.h>

struct meta_member_body {
    uint8_t public_key[META_PUBLIC_KEY_LEN];
    bool revoked;
    char name[META_NAME_MAX + 1];
};

/* Appends body's encoding; errors are sticky in buf. */
void meta_member_body_encode(struct crdt_buf *buf, const struct meta_member_body *body);
/* Decodes body[0..len) into *out. -EBADMSG if malformed. */
META_MUST_CHECK int meta_member_body_decode(struct meta_member_body *out, const void *body,
                                            size_t len);

#endif
