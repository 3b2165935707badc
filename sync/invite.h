/*
 * sync/invite: the join token `weft invite` prints and `weft join` reads.
 *
 * A token is everything a new device needs to restore a share from its
 * relay with nothing else: the share's id and key, the new device's own
 * identity (its Ed25519 seed: the inviter made the key pair, so it could
 * vouch for the device at the relay and to the other members before the
 * device ever connected), the inviter's public key (the first member the
 * new device trusts: every other member's key reaches it in records signed
 * by a member it already trusts), the relay's address and public key (so
 * the new device connects to that relay and no other), and names.
 *
 * Text form: "weft1-" then the unpadded URL-safe base64 of
 *
 *     u8 version (1), share id (16), share key (32), device seed (32),
 *     inviter's public key (32), relay's public key (32),
 *     u8 length + relay address (HOST:PORT, 1..255 bytes),
 *     u8 length + share name (1..64), u8 length + device name (1..64),
 *     u8 length + the inviter's device name (1..255: every device shows the
 *     same names in conflict copies, so the new one must learn it exactly),
 *     checksum (4): the first 4 bytes of BLAKE2b-256 of everything before
 *
 * so it survives copy and paste (one word, no characters a shell or a
 * terminal mangles) and a typo is caught before anything is made. A token
 * is a secret: whoever holds it reads the share and can write as the device.
 */
#ifndef WEFT_SYNC_INVITE_H
#define WEFT_SYNC_INVITE_H

#include "sync/sync.h"

#include <stddef.h>
#include <stdint.h>

#define SYNC_INVITE_PREFIX   "weft1-"
#define SYNC_INVITE_NAME_MAX 64
#define SYNC_INVITE_ADDR_MAX 255
/* Longest token text, NUL included. */
#define SYNC_INVITE_TEXT_MAX 2048

struct sync_invite {
    uint8_t share_id[SYNC_SHARE_ID_LEN];
    uint8_t share_key[SYNC_KEY_LEN];
    uint8_t device_seed[SYNC_SEED_LEN];
    uint8_t inviter_key[SYNC_PUBLIC_KEY_LEN];
    uint8_t relay_key[SYNC_PUBLIC_KEY_LEN];
    char relay_addr[SYNC_INVITE_ADDR_MAX + 1];
    char share_name[SYNC_INVITE_NAME_MAX + 1];
    char device_name[SYNC_INVITE_NAME_MAX + 1];
    char inviter_name[SYNC_INVITE_ADDR_MAX + 1];
};

/*
 * Writes the token text of `invite` to out[0..cap) (NUL-terminated).
 * -EINVAL (an empty or too long name or address), -ENOSPC (cap too small).
 */
SYNC_MUST_CHECK int sync_invite_encode(char *out, size_t cap, const struct sync_invite *invite);
/*
 * Reads a token (surrounding whitespace allowed). -EBADMSG if it is not a
 * token, -EILSEQ if its checksum fails (a typo or a cut), -EPROTONOSUPPORT
 * for a later version.
 */
SYNC_MUST_CHECK int sync_invite_decode(struct sync_invite *out, const char *text);
/* Zeroes the secrets of an invite in a way the compiler cannot drop. */
void sync_invite_wipe(struct sync_invite *invite);

#endif
