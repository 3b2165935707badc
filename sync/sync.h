/*
 * sync/sync: what every sync/ module shares: key and id sizes, device
 * identities, injectable randomness, library start-up, and the reasons a
 * record or a source is refused (which `weft status` reports).
 *
 * sync/ is the home of libsodium's network parts (README "Layers and
 * homes"). record, chain, channel and wire are pure state machines fed with
 * bytes: no sockets, no clock, no libuv. Their only nondeterminism is
 * randomness, which comes from libsodium's CSPRNG unless a test injects it.
 */
#ifndef WEFT_SYNC_SYNC_H
#define WEFT_SYNC_SYNC_H

#include <stddef.h>
#include <stdint.h>

#define SYNC_MUST_CHECK __attribute__((warn_unused_result))

#define SYNC_SHARE_ID_LEN   16 /* a share's random id */
#define SYNC_KEY_LEN        32 /* a share key (one per key epoch) */
#define SYNC_HASH_LEN       32 /* BLAKE2b-256: record hashes, chunk ids */
#define SYNC_PUBLIC_KEY_LEN 32 /* Ed25519 public key */
#define SYNC_SECRET_KEY_LEN 64 /* Ed25519 secret key (seed || public key, libsodium layout) */
#define SYNC_SEED_LEN       32 /* Ed25519 seed */
#define SYNC_NODE_ID_LEN    16 /* a tree node id (meta_id) */

/* A device's long-term Ed25519 identity. The secret half never leaves the device. */
struct sync_identity {
    uint8_t public_key[SYNC_PUBLIC_KEY_LEN];
    uint8_t secret_key[SYNC_SECRET_KEY_LEN];
};

/*
 * Fills out[0..len) with random bytes. Functions that take one use
 * libsodium's CSPRNG when it is NULL; tests pass a deterministic one to get
 * reproducible bytes (golden files). Never pass one in production.
 */
typedef void (*sync_random_fn)(void *ctx, void *out, size_t len);

/*
 * Why a record, or a source's claim about a chain, was refused. Each reason
 * has its own negative errno (sync_reason_errno), so a caller that only
 * passes errnos along still tells them apart.
 */
enum sync_reason {
    SYNC_REASON_NONE = 0,       /* accepted */
    SYNC_REASON_MALFORMED,      /* -EBADMSG: bytes do not parse (truncated, bad lengths...) */
    SYNC_REASON_VERSION,        /* -EPROTONOSUPPORT: a record format this build cannot read */
    SYNC_REASON_WRONG_SHARE,    /* -EXDEV: a record of another share */
    SYNC_REASON_UNKNOWN_EPOCH,  /* -ENOKEY: sealed under a key epoch we do not hold */
    SYNC_REASON_UNKNOWN_AUTHOR, /* -EACCES: forged: its author is not a member (at that epoch) */
    SYNC_REASON_FORGED,         /* -EKEYREJECTED: forged: the author's signature does not verify */
    SYNC_REASON_ALTERED,        /* -EBADE: altered: the AEAD tag does not verify */
    SYNC_REASON_DROPPED,        /* -ENODATA: a gap: records before this one are missing */
    SYNC_REASON_REPLAYED,       /* -EALREADY: this record was already verified */
    SYNC_REASON_REORDERED,      /* -ERANGE: it came after a later record of the same delivery */
    SYNC_REASON_FORK,           /* -ENOTUNIQ: equivocation: two records (or heads) for one seq */
    SYNC_REASON_ROLLBACK,       /* -ESTALE: a source offers an older head than it did before */
    SYNC_REASON_COUNT
};

/* Starts libsodium (idempotent, thread-safe); 0 or -EIO. Call before anything else here. */
SYNC_MUST_CHECK int sync_init(void);
/* A short English phrase for a reason (static string, never NULL). */
const char *sync_reason_str(enum sync_reason reason);
/* The reason's negative errno (0 for SYNC_REASON_NONE). */
int sync_reason_errno(enum sync_reason reason);
/* A device's replica id: the first 8 bytes of BLAKE2b-256(public key), little-endian. */
uint64_t sync_replica_id(const uint8_t public_key[SYNC_PUBLIC_KEY_LEN]);
/* The identity whose Ed25519 seed is `seed` (deterministic); 0 or -EIO. */
SYNC_MUST_CHECK int sync_identity_from_seed(struct sync_identity *out,
                                            const uint8_t seed[SYNC_SEED_LEN]);
/* Zeroes an identity's secret key in a way the compiler cannot drop. */
void sync_identity_wipe(struct sync_identity *identity);

#endif
