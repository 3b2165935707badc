/*
 * meta/crypto: the one home of libsodium inside meta/. It holds only what the
 * store needs: library start-up, random bytes, BLAKE2b (plain, keyed, and over
 * several parts) and Ed25519 key pairs. Sealing and signing for the wire
 * belong to sync/.
 */
#ifndef WEFT_META_CRYPTO_H
#define WEFT_META_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define META_MUST_CHECK __attribute__((warn_unused_result))

#define META_KEY_LEN        32 /* share key, keyed-hash key */
#define META_HASH_LEN       32 /* BLAKE2b-256: chunk ids */
#define META_PUBLIC_KEY_LEN 32 /* Ed25519 public key */
#define META_SECRET_KEY_LEN 64 /* Ed25519 secret key (seed || public key, libsodium layout) */

/* Starts libsodium once per process (thread-safe, idempotent); 0 or -EIO. */
META_MUST_CHECK int meta_crypto_init(void);
/* Fills `out` with `len` bytes from the OS's CSPRNG. Needs meta_crypto_init. */
void meta_crypto_random(void *out, size_t len);
/*
 * BLAKE2b of `data` into out[0..out_len) (16..64 bytes), keyed with
 * key[0..META_KEY_LEN) or unkeyed when key is NULL; 0 or -EINVAL.
 */
META_MUST_CHECK int meta_crypto_hash(uint8_t *out, size_t out_len, const uint8_t *key,
                                     const void *data, size_t len);
/* A byte string, for meta_crypto_hash_parts. */
struct meta_bytes {
    const void *data;
    size_t len;
};
/* Unkeyed BLAKE2b of the concatenation of parts[0..count) into out[0..out_len); 0 or -EINVAL. */
META_MUST_CHECK int meta_crypto_hash_parts(uint8_t *out, size_t out_len,
                                           const struct meta_bytes *parts, size_t count);
/* A fresh Ed25519 key pair; 0 or -EIO. */
/* The Ed25519 key pair of a 32-byte seed (deterministic: an invite makes a device's keys). */
META_MUST_CHECK int meta_crypto_sign_seed_keypair(uint8_t public_key[META_PUBLIC_KEY_LEN],
                                                  uint8_t secret_key[META_SECRET_KEY_LEN],
                                                  const uint8_t seed[32]);
META_MUST_CHECK int meta_crypto_sign_keypair(uint8_t public_key[META_PUBLIC_KEY_LEN],
                                             uint8_t secret_key[META_SECRET_KEY_LEN]);
/* Zeroes secret bytes in a way the compiler cannot drop. */
/* Bytes of a key sealed to one device (crypto_box_seal of META_KEY_LEN bytes). */
#define META_SEALED_KEY_LEN (32 + 48)
/*
 * Seals a 32-byte key to the device whose Ed25519 public key is given (its
 * X25519 form), so only that device opens it. 0 or -EINVAL (a bad key).
 */
META_MUST_CHECK int meta_crypto_seal_key(uint8_t out[META_SEALED_KEY_LEN], const uint8_t key[32],
                                         const uint8_t public_key[META_PUBLIC_KEY_LEN]);
/* Opens a key sealed to this device (its Ed25519 secret key). 0 or -EBADMSG. */
META_MUST_CHECK int meta_crypto_open_key(uint8_t key[32], const uint8_t sealed[META_SEALED_KEY_LEN],
                                         const uint8_t secret_key[META_SECRET_KEY_LEN]);
void meta_crypto_wipe(void *bytes, size_t len);
/* Constant-time equality of two byte strings of length len: 1 if equal, else 0. */
int meta_crypto_equal(const void *a, const void *b, size_t len);

#endif
