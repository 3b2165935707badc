/*
 * sync/record: sealed, signed records, the unit that leaves a device.
 *
 * A record carries either a batch of one author's ops or one chunk. It is
 * encrypted under the share key of a key epoch (XChaCha20-Poly1305 IETF,
 * random 24-byte nonce; the cleartext header, which names the share, the
 * author, the seq and the epoch, is the associated data) and then signed
 * by the author device's Ed25519 key over everything before the signature.
 * A relay can store and forward records; it can neither read nor forge them.
 *
 * Op records of one author form a hash chain: record seq 1, 2, 3, ... each
 * naming the BLAKE2b-256 hash of its predecessor's full encoding (zero for
 * seq 1). sync/chain verifies that chain. Chunk records stand alone (seq 0):
 * they are content-addressed and fetched one by one, in any order, from
 * whoever holds them; the op that names a chunk id is what places it in
 * history. The byte format is in sync/README.md.
 *
 * Inside an op record every op's replica and author are the record's author:
 * a device can only ever sign its own ops, so the format cannot express one
 * device passing off ops as another's.
 */
#ifndef WEFT_SYNC_RECORD_H
#define WEFT_SYNC_RECORD_H

#include "crdt/clock.h"
#include "crdt/codec.h"
#include "sync/sync.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SYNC_RECORD_VERSION    2  /* the newest format: op records that name their deps */
#define SYNC_RECORD_VERSION_1  1  /* op records without deps, and every chunk record */
#define SYNC_RECORD_HEADER_LEN 98 /* fixed cleartext header, the AEAD's associated data */
#define SYNC_RECORD_NONCE_LEN  24
#define SYNC_RECORD_TAG_LEN    16
#define SYNC_RECORD_SIG_LEN    64
#define SYNC_RECORD_OVERHEAD   (SYNC_RECORD_HEADER_LEN + SYNC_RECORD_TAG_LEN + SYNC_RECORD_SIG_LEN)
/*
 * Largest plaintext of a record (an op batch's encoding, or a chunk's bytes).
 * Batches are cut near 1 MiB (sync/device); the limit is what one op may
 * need: a text file's op up to meta's 8 MiB text bound, or the chunk list of
 * a binary version (about 36 bytes per 8 KiB chunk: files up to ~14 GB).
 */
#define SYNC_RECORD_PLAIN_MAX (64u << 20)
/* Largest encoded record. */
#define SYNC_RECORD_MAX (SYNC_RECORD_PLAIN_MAX + SYNC_RECORD_OVERHEAD)

enum sync_record_kind {
    SYNC_RECORD_OPS = 1,   /* a batch of ops of its author, chained */
    SYNC_RECORD_CHUNK = 2, /* one chunk, standalone */
};

/* One op as it travels: meta_op's fields (sync/ does not link meta/). */
struct sync_op {
    uint64_t replica;               /* the issuing replica: always the record's author */
    uint64_t seq;                   /* per-replica op seq, >= 1 */
    uint64_t counter;               /* Lamport counter, >= 1 */
    uint8_t kind;                   /* meta_op_kind, >= 1 */
    uint8_t node[SYNC_NODE_ID_LEN]; /* the node it changes */
    uint64_t author;                /* the signing device: always the record's author */
    const uint8_t *body;            /* the op encoded by crdt/ (opaque here) */
    size_t body_len;
};

/* A record's cleartext header: readable (not yet trusted) before opening. */
struct sync_record_header {
    uint8_t version;
    enum sync_record_kind kind;
    uint8_t share_id[SYNC_SHARE_ID_LEN];
    uint64_t author;                 /* replica id of the signing device */
    uint64_t seq;                    /* ops: the author's record seq, >= 1; chunk: 0 */
    uint32_t epoch;                  /* key epoch of the share key that sealed it */
    uint8_t prev[SYNC_HASH_LEN];     /* ops: hash of the author's record seq - 1 (zero for seq 1) */
    uint8_t chunk_id[SYNC_HASH_LEN]; /* chunk: the chunk's id; ops: zero */
};

/* An opened, verified record. Zero-initialize; release with sync_record_clear. */
struct sync_record {
    struct sync_record_header header;
    uint8_t hash[SYNC_HASH_LEN]; /* BLAKE2b-256 of the full encoding: the next record's prev */
    struct sync_op *ops;         /* ops: op_count ops, bodies pointing into `plain` */
    struct crdt_vv deps;         /* ops, version 2: ops its author held when sealing (owned) */
    size_t op_count;
    const uint8_t *chunk; /* chunk: its bytes, pointing into `plain` */
    size_t chunk_len;
    uint8_t *plain; /* owned: the decrypted plaintext */
    size_t plain_len;
};

/* A share key of one key epoch (device removal starts a new epoch with a new key). */
struct sync_epoch_key {
    uint32_t epoch;
    uint8_t key[SYNC_KEY_LEN];
};

/*
 * Gives the Ed25519 public key of device `replica` if it may author records
 * sealed under key epoch `epoch` (a device removed at epoch E may not author
 * records of epochs >= E). 0, or nonzero if it may not (unknown or removed).
 */
typedef int (*sync_member_fn)(void *ctx, uint8_t public_key[SYNC_PUBLIC_KEY_LEN], uint64_t replica,
                              uint32_t epoch);

/* What a reader of a share holds. Caller-owned; nothing here is copied. */
struct sync_share {
    uint8_t id[SYNC_SHARE_ID_LEN];
    const struct sync_epoch_key *keys; /* every epoch key the reader holds */
    size_t key_count;
    sync_member_fn member;
    void *member_ctx;
};

/* What sealing needs: the share, one epoch's key, the author's secret key. */
struct sync_seal {
    const uint8_t *share_id;   /* SYNC_SHARE_ID_LEN bytes */
    uint32_t epoch;            /* the epoch of `key` */
    const uint8_t *key;        /* SYNC_KEY_LEN bytes */
    uint64_t author;           /* must be sync_replica_id of the key pair's public half */
    const uint8_t *secret_key; /* the author's Ed25519 secret key, SYNC_SECRET_KEY_LEN bytes */
    sync_random_fn random;     /* nonce source: NULL = libsodium's CSPRNG; tests only otherwise */
    void *random_ctx;
};

/*
 * Bytes that `op` adds to an op record's plaintext, so a batcher can cut
 * batches under SYNC_RECORD_PLAIN_MAX (the batch adds at most 20 more).
 */
size_t sync_record_op_size(const struct sync_op *op);
/*
 * Seals ops[0..count) as the author's record `seq` (>= 1) whose predecessor
 * has hash `prev` (NULL exactly when seq is 1), appending the record to
 * *out (caller-owned) and its hash to hash_out. The ops must be the author's
 * (replica == author == seal->author), with consecutive op seqs, counters
 * and kinds >= 1. -EINVAL for bad arguments, -EMSGSIZE if the plaintext
 * would exceed SYNC_RECORD_PLAIN_MAX, -ENOMEM.
 */
SYNC_MUST_CHECK int sync_record_seal_ops(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                                         const struct sync_seal *seal, uint64_t seq,
                                         const uint8_t prev[SYNC_HASH_LEN],
                                         const struct sync_op *ops, size_t count);
/*
 * As sync_record_seal_ops, in format version 2: the plaintext first names
 * `deps`, the ops its author held when it sealed them (replica -> op seq),
 * so a reader applies the record only after everything it may build on
 * (causal delivery across authors, whatever order records travel in).
 */
SYNC_MUST_CHECK int sync_record_seal_ops_deps(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                                              const struct sync_seal *seal, uint64_t seq,
                                              const uint8_t prev[SYNC_HASH_LEN],
                                              const struct crdt_vv *deps, const struct sync_op *ops,
                                              size_t count);
/*
 * Seals one chunk (1..SYNC_RECORD_PLAIN_MAX bytes) with its id, appending the
 * record to *out and its hash to hash_out. The id is not checked against
 * the bytes here (chunk ids are keyed by meta/'s key). -EINVAL, -EMSGSIZE, -ENOMEM.
 */
SYNC_MUST_CHECK int sync_record_seal_chunk(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                                           const struct sync_seal *seal,
                                           const uint8_t id[SYNC_HASH_LEN], const void *data,
                                           size_t len);
/*
 * Parses the cleartext header of bytes[0..len) and checks the record's
 * structure (sizes, seq and prev rules) WITHOUT authenticating anything:
 * for routing only (which chain, which share). 0 or -EBADMSG,
 * -EPROTONOSUPPORT (another format version).
 */
SYNC_MUST_CHECK int sync_record_peek(struct sync_record_header *out, const uint8_t *bytes,
                                     size_t len);
/*
 * Opens bytes[0..len): checks the structure, the share id, finds the epoch's
 * key and the author's public key (share->member), verifies the AEAD tag,
 * then the signature, then decodes the plaintext. On success *out (zeroed
 * first) owns the plaintext: sync_record_clear it. On failure *out is left
 * zeroed, *reason (may be NULL) says why and the return is that reason's
 * errno (sync_reason_errno); -ENOMEM is the only other failure (reason NONE).
 * Order matters for the verdict: a changed byte of the sealed part is
 * ALTERED; a record that decrypts but whose signature fails is FORGED.
 */
SYNC_MUST_CHECK int sync_record_open(struct sync_record *out, enum sync_reason *reason,
                                     const struct sync_share *share, const uint8_t *bytes,
                                     size_t len);
/* Frees what an opened record owns and zeroes it; accepts a zeroed record. */
void sync_record_clear(struct sync_record *record);
/* BLAKE2b-256 of a record's full encoding (what the next record names as prev). */
void sync_record_hash(uint8_t out[SYNC_HASH_LEN], const uint8_t *bytes, size_t len);

#endif
