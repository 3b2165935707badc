/*
 * tests/sync/sync_util.h: fixtures the sync tests share: deterministic
 * identities, a member table, a share with two key epochs, a seeded nonce
 * source, and an independent re-implementation of record sealing (from the
 * README's byte layout) that can forge what sync_record_seal refuses to make.
 */
#ifndef WEFT_TESTS_SYNC_UTIL_H
#define WEFT_TESTS_SYNC_UTIL_H

#include "sync/chain.h"
#include "sync/record.h"
#include "sync/sync.h"
#include "test.h"

#include <errno.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* An identity from a one-byte seed (seed bytes all equal to `seed`). */
static inline void util_identity(struct sync_identity *out, uint8_t seed)
{
    uint8_t bytes[SYNC_SEED_LEN];
    memset(bytes, seed, sizeof(bytes));
    if (sync_identity_from_seed(out, bytes) != 0)
        abort();
}

/* A seeded byte source for sync_random_fn: same seed, same nonces. */
struct util_rng {
    uint64_t state;
};

static inline void util_random(void *ctx, void *out, size_t len)
{
    struct util_rng *rng = ctx;
    uint8_t *bytes = out;
    for (size_t i = 0; i < len; i++)
        bytes[i] = (uint8_t)(test_rand(&rng->state) >> 56);
}

/* Members: replica -> key, and the epoch from which a member is removed (0: never). */
struct util_members {
    size_t count;
    struct {
        uint64_t replica;
        uint8_t public_key[SYNC_PUBLIC_KEY_LEN];
        uint32_t removed_at;
    } entries[8];
    bool lie; /* answer with the first member's key whatever is asked (a corrupt table) */
};

static inline void util_member_add(struct util_members *members, const struct sync_identity *id,
                                   uint32_t removed_at)
{
    members->entries[members->count].replica = sync_replica_id(id->public_key);
    memcpy(members->entries[members->count].public_key, id->public_key, SYNC_PUBLIC_KEY_LEN);
    members->entries[members->count].removed_at = removed_at;
    members->count++;
}

static inline int util_member_lookup(void *ctx, uint8_t public_key[SYNC_PUBLIC_KEY_LEN],
                                     uint64_t replica, uint32_t epoch)
{
    struct util_members *members = ctx;
    if (members->lie && members->count) {
        memcpy(public_key, members->entries[0].public_key, SYNC_PUBLIC_KEY_LEN);
        return 0;
    }
    for (size_t i = 0; i < members->count; i++) {
        if (members->entries[i].replica != replica)
            continue;
        if (members->entries[i].removed_at && epoch >= members->entries[i].removed_at)
            return -ENOENT;
        memcpy(public_key, members->entries[i].public_key, SYNC_PUBLIC_KEY_LEN);
        return 0;
    }
    return -ENOENT;
}

/* A share: id bytes all `id_byte`, epoch keys 1 and 2 (key bytes derived from the id byte). */
struct util_share {
    struct sync_share share;
    struct sync_epoch_key keys[2];
    struct util_members members;
};

static inline void util_share_init(struct util_share *out, uint8_t id_byte)
{
    memset(out, 0, sizeof(*out));
    memset(out->share.id, id_byte, SYNC_SHARE_ID_LEN);
    out->keys[0].epoch = 1;
    memset(out->keys[0].key, id_byte ^ 0x11, SYNC_KEY_LEN);
    out->keys[1].epoch = 2;
    memset(out->keys[1].key, id_byte ^ 0x22, SYNC_KEY_LEN);
    out->share.keys = out->keys;
    out->share.key_count = 2;
    out->share.member = util_member_lookup;
    out->share.member_ctx = &out->members;
}

/* The seal parameters for `author` writing to `share` under `epoch`. */
static inline struct sync_seal util_seal(const struct util_share *share,
                                         const struct sync_identity *author, uint32_t epoch,
                                         struct util_rng *rng)
{
    const uint8_t *key = NULL;
    for (size_t i = 0; i < share->share.key_count; i++)
        if (share->keys[i].epoch == epoch)
            key = share->keys[i].key;
    static const uint8_t unknown_epoch_key[SYNC_KEY_LEN] = {0x5a};
    return (struct sync_seal){
        .share_id = share->share.id,
        .epoch = epoch,
        .key = key ? key : unknown_epoch_key,
        .author = sync_replica_id(author->public_key),
        .secret_key = author->secret_key,
        .random = rng ? util_random : NULL,
        .random_ctx = rng,
    };
}

/* `count` ops of `author` starting at op seq `first_seq`, bodies of varied sizes. */
static inline void util_ops(struct sync_op *ops, uint8_t *body_space, size_t count, uint64_t author,
                            uint64_t first_seq, uint64_t *rng)
{
    for (size_t i = 0; i < count; i++) {
        size_t body_len = (size_t)test_rand_below(rng, 40);
        for (size_t k = 0; k < body_len; k++)
            body_space[i * 64 + k] = (uint8_t)test_rand(rng);
        ops[i] = (struct sync_op){
            .replica = author,
            .seq = first_seq + i,
            .counter = 10 * (first_seq + i) + test_rand_below(rng, 5),
            .kind = (uint8_t)(1 + test_rand_below(rng, 3)),
            .author = author,
            .body = body_space + i * 64,
            .body_len = body_len,
        };
        for (size_t k = 0; k < SYNC_NODE_ID_LEN; k++)
            ops[i].node[k] = (uint8_t)test_rand(rng);
    }
}

/*
 * Builds a record byte by byte from README.md's layout, independently of
 * sync/record.c: kind, share id, claimed author, seq, epoch, link, sealed
 * with `key` and signed with `signer` (which need not be the claimed
 * author: that is a forgery). Appends to *out.
 */
static inline void util_forge(struct crdt_buf *out, uint8_t kind, const uint8_t *share_id,
                              uint64_t author, uint64_t seq, uint32_t epoch, const uint8_t *link,
                              const uint8_t *key, const struct sync_identity *signer,
                              const uint8_t *plain, size_t plain_len)
{
    size_t ct_len = plain_len + 16, total = 98 + ct_len + 64;
    if (crdt_buf_reserve(out, total))
        abort();
    uint8_t *record = out->data + out->len;
    memset(record, 0, total);
    record[0] = 1;
    record[1] = kind;
    memcpy(record + 2, share_id, 16);
    for (int i = 0; i < 8; i++) {
        record[18 + i] = (uint8_t)(author >> (8 * i));
        record[26 + i] = (uint8_t)(seq >> (8 * i));
    }
    for (int i = 0; i < 4; i++) {
        record[34 + i] = (uint8_t)(epoch >> (8 * i));
        record[94 + i] = (uint8_t)(ct_len >> (8 * i));
    }
    if (link)
        memcpy(record + 38, link, 32);
    randombytes_buf(record + 70, 24);
    unsigned long long written;
    crypto_aead_xchacha20poly1305_ietf_encrypt(record + 98, &written, plain, plain_len, record, 98,
                                               NULL, record + 70, key);
    crypto_sign_detached(record + 98 + ct_len, NULL, record, 98 + ct_len, signer->secret_key);
    out->len += total;
}

/*
 * What sync_record_open must say about `record` (valid for `share`, epochs
 * 1 and 2 held, author a member) with byte `offset` XOR-ed with `mask`.
 */
static inline enum sync_reason util_flip_verdict(const uint8_t *record, size_t len, size_t offset,
                                                 uint8_t mask, const struct sync_share *share)
{
    uint8_t flipped = record[offset] ^ mask;
    if (offset == 0)
        return SYNC_REASON_VERSION;
    if (offset == 1) {
        /* Kind 1 <-> 2 breaks the seq rule (ops need seq >= 1, chunks seq 0); others are unknown.
         */
        return SYNC_REASON_MALFORMED;
    }
    if (offset < 18)
        return SYNC_REASON_WRONG_SHARE;
    if (offset < 26)
        return SYNC_REASON_UNKNOWN_AUTHOR; /* no other member has a nearby id */
    if (offset < 34) {
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++)
            seq |= (uint64_t)(26 + (size_t)i == offset ? flipped : record[26 + i]) << (8 * i);
        if (record[1] == SYNC_RECORD_CHUNK)
            return SYNC_REASON_MALFORMED; /* a chunk record's seq must stay 0 */
        bool prev_zero = true;
        for (int i = 0; i < 32; i++)
            prev_zero = prev_zero && record[38 + i] == 0;
        return (seq == 0 || (seq == 1) != prev_zero) ? SYNC_REASON_MALFORMED : SYNC_REASON_ALTERED;
    }
    if (offset < 38) {
        uint32_t epoch = 0;
        for (int i = 0; i < 4; i++)
            epoch |= (uint32_t)(34 + (size_t)i == offset ? flipped : record[34 + i]) << (8 * i);
        for (size_t i = 0; i < share->key_count; i++)
            if (share->keys[i].epoch == epoch)
                return SYNC_REASON_ALTERED;
        return SYNC_REASON_UNKNOWN_EPOCH;
    }
    if (offset < 70) {
        if (record[1] == SYNC_RECORD_CHUNK)
            return SYNC_REASON_ALTERED;
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++)
            seq |= (uint64_t)record[26 + i] << (8 * i);
        bool now_zero = true;
        for (size_t i = 0; i < 32; i++)
            now_zero = now_zero && (38 + i == offset ? flipped : record[38 + i]) == 0;
        return (seq == 1) != now_zero ? SYNC_REASON_MALFORMED : SYNC_REASON_ALTERED;
    }
    if (offset < 94)
        return SYNC_REASON_ALTERED; /* nonce */
    if (offset < 98)
        return SYNC_REASON_MALFORMED; /* ciphertext length */
    if (offset < len - 64)
        return SYNC_REASON_ALTERED;
    return SYNC_REASON_FORGED;
}

static inline void util_hex(char *out, const uint8_t *bytes, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

#endif
