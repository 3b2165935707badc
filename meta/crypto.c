/* meta/crypto: see crypto.h. */
#include "crypto.h"

#include <errno.h>
#include <sodium.h>

int meta_crypto_init(void)
{
    /* sodium_init is itself thread-safe and returns 1 when already started. */
    return sodium_init() < 0 ? -EIO : 0;
}

void meta_crypto_random(void *out, size_t len)
{
    randombytes_buf(out, len);
}

int meta_crypto_hash(uint8_t *out, size_t out_len, const uint8_t *key, const void *data, size_t len)
{
    if (out_len < crypto_generichash_BYTES_MIN || out_len > crypto_generichash_BYTES_MAX)
        return -EINVAL;
    if (crypto_generichash(out, out_len, data, len, key, key ? META_KEY_LEN : 0) != 0)
        return -EINVAL;
    return 0;
}

int meta_crypto_hash_parts(uint8_t *out, size_t out_len, const struct meta_bytes *parts,
                           size_t count)
{
    crypto_generichash_state state;
    if (out_len < crypto_generichash_BYTES_MIN || out_len > crypto_generichash_BYTES_MAX ||
        crypto_generichash_init(&state, NULL, 0, out_len) != 0)
        return -EINVAL;
    for (size_t i = 0; i < count; i++)
        if (crypto_generichash_update(&state, parts[i].data, parts[i].len) != 0)
            return -EINVAL;
    return crypto_generichash_final(&state, out, out_len) == 0 ? 0 : -EINVAL;
}

int meta_crypto_sign_keypair(uint8_t public_key[META_PUBLIC_KEY_LEN],
                             uint8_t secret_key[META_SECRET_KEY_LEN])
{
    _Static_assert(crypto_sign_PUBLICKEYBYTES == META_PUBLIC_KEY_LEN, "Ed25519 public key");
    _Static_assert(crypto_sign_SECRETKEYBYTES == META_SECRET_KEY_LEN, "Ed25519 secret key");
    return crypto_sign_keypair(public_key, secret_key) == 0 ? 0 : -EIO;
}

int meta_crypto_sign_seed_keypair(uint8_t public_key[META_PUBLIC_KEY_LEN],
                                  uint8_t secret_key[META_SECRET_KEY_LEN], const uint8_t seed[32])
{
    return crypto_sign_seed_keypair(public_key, secret_key, seed) == 0 ? 0 : -EIO;
}

int meta_crypto_seal_key(uint8_t out[META_SEALED_KEY_LEN], const uint8_t key[32],
                         const uint8_t public_key[META_PUBLIC_KEY_LEN])
{
    _Static_assert(META_SEALED_KEY_LEN == 32 + crypto_box_SEALBYTES, "sealed key size");
    uint8_t x25519[crypto_box_PUBLICKEYBYTES];
    if (crypto_sign_ed25519_pk_to_curve25519(x25519, public_key) != 0)
        return -EINVAL;
    return crypto_box_seal(out, key, 32, x25519) == 0 ? 0 : -EINVAL;
}

int meta_crypto_open_key(uint8_t key[32], const uint8_t sealed[META_SEALED_KEY_LEN],
                         const uint8_t secret_key[META_SECRET_KEY_LEN])
{
    uint8_t x_secret[crypto_box_SECRETKEYBYTES], x_public[crypto_box_PUBLICKEYBYTES];
    int rc = crypto_sign_ed25519_sk_to_curve25519(x_secret, secret_key) == 0 &&
                     crypto_scalarmult_base(x_public, x_secret) == 0 &&
                     crypto_box_seal_open(key, sealed, META_SEALED_KEY_LEN, x_public, x_secret) == 0
                 ? 0
                 : -EBADMSG;
    sodium_memzero(x_secret, sizeof(x_secret));
    return rc;
}

void meta_crypto_wipe(void *bytes, size_t len)
{
    sodium_memzero(bytes, len);
}

int meta_crypto_equal(const void *a, const void *b, size_t len)
{
    return sodium_memcmp(a, b, len) == 0;
}
