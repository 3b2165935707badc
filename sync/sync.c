/* sync/sync: see sync.h. */
#include "sync.h"

#include <errno.h>
#include <sodium.h>

_Static_assert(crypto_sign_PUBLICKEYBYTES == SYNC_PUBLIC_KEY_LEN, "Ed25519 public key");
_Static_assert(crypto_sign_SECRETKEYBYTES == SYNC_SECRET_KEY_LEN, "Ed25519 secret key");
_Static_assert(crypto_sign_SEEDBYTES == SYNC_SEED_LEN, "Ed25519 seed");

int sync_init(void)
{
    /* sodium_init is thread-safe and returns 1 when libsodium is already started. */
    return sodium_init() < 0 ? -EIO : 0;
}

static const struct {
    const char *text;
    int error;
} reasons[SYNC_REASON_COUNT] = {
    [SYNC_REASON_NONE] = {"accepted", 0},
    [SYNC_REASON_MALFORMED] = {"malformed record", -EBADMSG},
    [SYNC_REASON_VERSION] = {"unsupported record format version", -EPROTONOSUPPORT},
    [SYNC_REASON_WRONG_SHARE] = {"record of another share", -EXDEV},
    [SYNC_REASON_UNKNOWN_EPOCH] = {"sealed under a key epoch we do not hold", -ENOKEY},
    [SYNC_REASON_UNKNOWN_AUTHOR] = {"forged: author is not a member of the share", -EACCES},
    [SYNC_REASON_FORGED] = {"forged: bad author signature", -EKEYREJECTED},
    [SYNC_REASON_ALTERED] = {"altered: authentication tag mismatch", -EBADE},
    [SYNC_REASON_DROPPED] = {"dropped: gap in the author's record chain", -ENODATA},
    [SYNC_REASON_REPLAYED] = {"replayed: record already verified", -EALREADY},
    [SYNC_REASON_REORDERED] = {"reordered: came after a later record", -ERANGE},
    [SYNC_REASON_FORK] = {"equivocation: two different records for one seq", -ENOTUNIQ},
    [SYNC_REASON_ROLLBACK] = {"rollback: source offers an older chain head", -ESTALE},
};

const char *sync_reason_str(enum sync_reason reason)
{
    if ((unsigned)reason >= SYNC_REASON_COUNT)
        return "unknown reason";
    return reasons[reason].text;
}

int sync_reason_errno(enum sync_reason reason)
{
    if ((unsigned)reason >= SYNC_REASON_COUNT)
        return -EINVAL;
    return reasons[reason].error;
}

uint64_t sync_replica_id(const uint8_t public_key[SYNC_PUBLIC_KEY_LEN])
{
    uint8_t digest[32];
    /* Unkeyed BLAKE2b-256 with a valid output length cannot fail. */
    crypto_generichash(digest, sizeof(digest), public_key, SYNC_PUBLIC_KEY_LEN, NULL, 0);
    uint64_t replica = 0;
    for (int i = 0; i < 8; i++)
        replica |= (uint64_t)digest[i] << (8 * i);
    return replica;
}

int sync_identity_from_seed(struct sync_identity *out, const uint8_t seed[SYNC_SEED_LEN])
{
    return crypto_sign_seed_keypair(out->public_key, out->secret_key, seed) == 0 ? 0 : -EIO;
}

void sync_identity_wipe(struct sync_identity *identity)
{
    sodium_memzero(identity->secret_key, sizeof(identity->secret_key));
}
