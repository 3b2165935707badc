/* sync/record: see record.h; the byte format is in README.md. */
#include "record.h"
#include "record_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == SYNC_RECORD_NONCE_LEN, "nonce");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == SYNC_RECORD_TAG_LEN, "tag");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == SYNC_KEY_LEN, "key");
_Static_assert(crypto_sign_BYTES == SYNC_RECORD_SIG_LEN, "signature");
_Static_assert(SYNC_RECORD_MAX < UINT32_MAX, "lengths fit the u32 fields");

/* Offsets in the fixed header (README.md, "Record"). */
enum {
    OFF_VERSION = 0,
    OFF_KIND = 1,
    OFF_SHARE = 2,
    OFF_AUTHOR = OFF_SHARE + SYNC_SHARE_ID_LEN,     /* 18 */
    OFF_SEQ = OFF_AUTHOR + 8,                       /* 26 */
    OFF_EPOCH = OFF_SEQ + 8,                        /* 34 */
    OFF_LINK = OFF_EPOCH + 4,                       /* 38: prev hash or chunk id */
    OFF_NONCE = OFF_LINK + SYNC_HASH_LEN,           /* 70 */
    OFF_CT_LEN = OFF_NONCE + SYNC_RECORD_NONCE_LEN, /* 94 */
    HEADER_END = OFF_CT_LEN + 4,                    /* 98 */
};
_Static_assert(HEADER_END == SYNC_RECORD_HEADER_LEN, "header layout");

/* The smallest op in a plaintext: counter, kind, node id, empty body. */
#define OP_MIN_LEN (1 + 1 + SYNC_NODE_ID_LEN + 1)

static const uint8_t zero_hash[SYNC_HASH_LEN];

static void put_le(uint8_t *out, uint64_t value, int bytes)
{
    for (int i = 0; i < bytes; i++)
        out[i] = (uint8_t)(value >> (8 * i));
}

static uint64_t get_le(const uint8_t *in, int bytes)
{
    uint64_t value = 0;
    for (int i = 0; i < bytes; i++)
        value |= (uint64_t)in[i] << (8 * i);
    return value;
}

static size_t varint_len(uint64_t value)
{
    size_t n = 1;
    while (value >= 0x80) {
        value >>= 7;
        n++;
    }
    return n;
}

void sync_record_hash(uint8_t out[SYNC_HASH_LEN], const uint8_t *bytes, size_t len)
{
    /* Unkeyed BLAKE2b-256 with a valid output length cannot fail. */
    crypto_generichash(out, SYNC_HASH_LEN, bytes, len, NULL, 0);
}

size_t sync_record_op_size(const struct sync_op *op)
{
    return varint_len(op->counter) + 1 + SYNC_NODE_ID_LEN + varint_len(op->body_len) + op->body_len;
}

void sync__record_encode_ops(struct crdt_buf *out, const struct sync_op *ops, size_t count)
{
    crdt_buf_put_varint(out, count ? ops[0].seq : 0);
    crdt_buf_put_varint(out, count);
    for (size_t i = 0; i < count; i++) {
        crdt_buf_put_varint(out, ops[i].counter);
        crdt_buf_put_u8(out, ops[i].kind);
        crdt_buf_put(out, ops[i].node, SYNC_NODE_ID_LEN);
        crdt_buf_put_bytes(out, ops[i].body, ops[i].body_len);
    }
}

static bool seal_valid(const struct sync_seal *seal)
{
    if (!seal || !seal->share_id || !seal->key || !seal->secret_key)
        return false;
    /* libsodium's secret key is seed || public key: the author id must be that key's. */
    return sync_replica_id(seal->secret_key + SYNC_SEED_LEN) == seal->author;
}

static int seal_raw(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                    const struct sync_seal *seal, uint8_t version, uint8_t kind, uint64_t seq,
                    const uint8_t link[SYNC_HASH_LEN], const uint8_t *plain, size_t plain_len)
{
    if (!seal_valid(seal))
        return -EINVAL;
    if (plain_len > SYNC_RECORD_PLAIN_MAX)
        return -EMSGSIZE;
    size_t ct_len = plain_len + SYNC_RECORD_TAG_LEN;
    size_t total = SYNC_RECORD_HEADER_LEN + ct_len + SYNC_RECORD_SIG_LEN;
    int rc = crdt_buf_reserve(out, total);
    if (rc)
        return rc;

    uint8_t *record = out->data + out->len;
    record[OFF_VERSION] = version;
    record[OFF_KIND] = kind;
    memcpy(record + OFF_SHARE, seal->share_id, SYNC_SHARE_ID_LEN);
    put_le(record + OFF_AUTHOR, seal->author, 8);
    put_le(record + OFF_SEQ, seq, 8);
    put_le(record + OFF_EPOCH, seal->epoch, 4);
    memcpy(record + OFF_LINK, link ? link : zero_hash, SYNC_HASH_LEN);
    if (seal->random)
        seal->random(seal->random_ctx, record + OFF_NONCE, SYNC_RECORD_NONCE_LEN);
    else
        randombytes_buf(record + OFF_NONCE, SYNC_RECORD_NONCE_LEN);
    put_le(record + OFF_CT_LEN, ct_len, 4);

    /* The whole header is associated data: share id, author, seq and epoch among it. */
    unsigned long long written = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(record + HEADER_END, &written, plain, plain_len,
                                               record, HEADER_END, NULL, record + OFF_NONCE,
                                               seal->key);
    crypto_sign_detached(record + HEADER_END + ct_len, NULL, record, HEADER_END + ct_len,
                         seal->secret_key);
    if (hash_out)
        sync_record_hash(hash_out, record, total);
    out->len += total;
    return 0;
}

int sync__record_seal_raw(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                          const struct sync_seal *seal, uint8_t kind, uint64_t seq,
                          const uint8_t link[SYNC_HASH_LEN], const uint8_t *plain, size_t plain_len)
{
    return seal_raw(out, hash_out, seal, SYNC_RECORD_VERSION_1, kind, seq, link, plain, plain_len);
}

static int seal_ops(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                    const struct sync_seal *seal, uint64_t seq, const uint8_t prev[SYNC_HASH_LEN],
                    const struct crdt_vv *deps, const struct sync_op *ops, size_t count)
{
    if (!seal_valid(seal) || seq == 0 || (seq == 1) != (prev == NULL) || !ops || count == 0)
        return -EINVAL;
    if (prev && memcmp(prev, zero_hash, SYNC_HASH_LEN) == 0)
        return -EINVAL; /* only seq 1 has the zero predecessor */
    if (ops[0].seq == 0 || count - 1 > UINT64_MAX - ops[0].seq)
        return -EINVAL;
    struct crdt_buf plain = {0};
    if (deps)
        crdt_vv_encode(&plain, deps);
    size_t plain_len = plain.len + varint_len(ops[0].seq) + varint_len(count);
    for (size_t i = 0; i < count; i++) {
        const struct sync_op *op = &ops[i];
        int bad = 0;
        if (op->replica != seal->author || op->author != seal->author ||
            op->seq != ops[0].seq + i || op->counter == 0 || op->kind == 0 ||
            (op->body_len && !op->body))
            bad = -EINVAL;
        else if (op->body_len > SYNC_RECORD_PLAIN_MAX ||
                 (plain_len += sync_record_op_size(op)) > SYNC_RECORD_PLAIN_MAX)
            bad = -EMSGSIZE;
        if (bad) {
            crdt_buf_free(&plain);
            return bad;
        }
    }

    sync__record_encode_ops(&plain, ops, count);
    int rc = crdt_buf_status(&plain);
    if (!rc)
        rc = seal_raw(out, hash_out, seal, deps ? SYNC_RECORD_VERSION : SYNC_RECORD_VERSION_1,
                      SYNC_RECORD_OPS, seq, prev, plain.data, plain.len);
    if (plain.data)
        sodium_memzero(plain.data, plain.cap);
    crdt_buf_free(&plain);
    return rc;
}

int sync_record_seal_ops(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                         const struct sync_seal *seal, uint64_t seq,
                         const uint8_t prev[SYNC_HASH_LEN], const struct sync_op *ops, size_t count)
{
    return seal_ops(out, hash_out, seal, seq, prev, NULL, ops, count);
}

int sync_record_seal_ops_deps(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                              const struct sync_seal *seal, uint64_t seq,
                              const uint8_t prev[SYNC_HASH_LEN], const struct crdt_vv *deps,
                              const struct sync_op *ops, size_t count)
{
    static const struct crdt_vv none = {0};
    return seal_ops(out, hash_out, seal, seq, prev, deps ? deps : &none, ops, count);
}

int sync_record_seal_chunk(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                           const struct sync_seal *seal, const uint8_t id[SYNC_HASH_LEN],
                           const void *data, size_t len)
{
    if (!seal_valid(seal) || !id || !data || len == 0)
        return -EINVAL;
    if (len > SYNC_RECORD_PLAIN_MAX)
        return -EMSGSIZE;
    return sync__record_seal_raw(out, hash_out, seal, SYNC_RECORD_CHUNK, 0, id, data, len);
}

/* Structure checks shared by peek and open; sets *reason. */
static int parse_header(struct sync_record_header *out, enum sync_reason *reason,
                        const uint8_t *bytes, size_t len)
{
    memset(out, 0, sizeof(*out));
    *reason = SYNC_REASON_MALFORMED;
    if (!bytes || len < 1)
        return -EBADMSG;
    /* The version comes first so a later format with other sizes is reported as such. */
    if (bytes[OFF_VERSION] != SYNC_RECORD_VERSION && bytes[OFF_VERSION] != SYNC_RECORD_VERSION_1) {
        *reason = SYNC_REASON_VERSION;
        return -EPROTONOSUPPORT;
    }
    /* At least one plaintext byte; at most the largest record. */
    if (len < SYNC_RECORD_OVERHEAD + 1 || len > SYNC_RECORD_MAX)
        return -EBADMSG;
    uint64_t ct_len = get_le(bytes + OFF_CT_LEN, 4);
    if (ct_len != len - SYNC_RECORD_HEADER_LEN - SYNC_RECORD_SIG_LEN)
        return -EBADMSG;

    out->version = bytes[OFF_VERSION];
    out->kind = (enum sync_record_kind)bytes[OFF_KIND];
    memcpy(out->share_id, bytes + OFF_SHARE, SYNC_SHARE_ID_LEN);
    out->author = get_le(bytes + OFF_AUTHOR, 8);
    out->seq = get_le(bytes + OFF_SEQ, 8);
    out->epoch = (uint32_t)get_le(bytes + OFF_EPOCH, 4);
    const uint8_t *link = bytes + OFF_LINK;
    bool link_zero = memcmp(link, zero_hash, SYNC_HASH_LEN) == 0;
    switch (bytes[OFF_KIND]) {
    case SYNC_RECORD_OPS:
        /* Chained: seq 1 and only seq 1 has the zero predecessor. */
        if (out->seq == 0 || (out->seq == 1) != link_zero)
            goto bad;
        memcpy(out->prev, link, SYNC_HASH_LEN);
        break;
    case SYNC_RECORD_CHUNK:
        if (out->seq != 0)
            goto bad;
        memcpy(out->chunk_id, link, SYNC_HASH_LEN);
        break;
    default:
        goto bad;
    }
    *reason = SYNC_REASON_NONE;
    return 0;
bad:
    memset(out, 0, sizeof(*out));
    return -EBADMSG;
}

int sync_record_peek(struct sync_record_header *out, const uint8_t *bytes, size_t len)
{
    enum sync_reason reason;
    return parse_header(out, &reason, bytes, len);
}

/* Decodes an op record's plaintext into record->ops (README.md, "Op batch"). */
static int decode_ops(struct sync_record *record)
{
    struct crdt_reader reader;
    crdt_reader_init(&reader, record->plain, record->plain_len);
    uint64_t first_seq, count;
    if (record->header.version >= SYNC_RECORD_VERSION &&
        crdt_vv_decode(&reader, &record->deps) != 0)
        return -EBADMSG;
    if (crdt_reader_varint(&reader, &first_seq) || first_seq == 0)
        return -EBADMSG;
    /* A count is bounded by the bytes left over the smallest op, before anything is sized by it. */
    if (crdt_reader_varint_max(&reader, crdt_reader_left(&reader) / OP_MIN_LEN, &count) ||
        count == 0 || count - 1 > UINT64_MAX - first_seq)
        return -EBADMSG;
    struct sync_op *ops = calloc((size_t)count, sizeof(*ops));
    if (!ops)
        return -ENOMEM;
    uint64_t author = record->header.author;
    for (size_t i = 0; i < count; i++) {
        struct sync_op *op = &ops[i];
        const uint8_t *node;
        op->replica = author;
        op->author = author;
        op->seq = first_seq + i;
        if (crdt_reader_varint(&reader, &op->counter) || op->counter == 0 ||
            crdt_reader_u8(&reader, &op->kind) || op->kind == 0 ||
            crdt_reader_raw(&reader, SYNC_NODE_ID_LEN, &node) ||
            crdt_reader_bytes(&reader, crdt_reader_left(&reader), &op->body, &op->body_len)) {
            free(ops);
            return -EBADMSG;
        }
        memcpy(op->node, node, SYNC_NODE_ID_LEN);
    }
    if (crdt_reader_left(&reader) != 0) {
        free(ops);
        return -EBADMSG;
    }
    record->ops = ops;
    record->op_count = (size_t)count;
    return 0;
}

static const struct sync_epoch_key *find_key(const struct sync_share *share, uint32_t epoch)
{
    for (size_t i = 0; i < share->key_count; i++)
        if (share->keys[i].epoch == epoch)
            return &share->keys[i];
    return NULL;
}

static int refuse(enum sync_reason *reason_out, enum sync_reason reason)
{
    if (reason_out)
        *reason_out = reason;
    return sync_reason_errno(reason);
}

int sync_record_open(struct sync_record *out, enum sync_reason *reason_out,
                     const struct sync_share *share, const uint8_t *bytes, size_t len)
{
    memset(out, 0, sizeof(*out));
    if (reason_out)
        *reason_out = SYNC_REASON_NONE;
    enum sync_reason reason;
    struct sync_record_header header;
    if (parse_header(&header, &reason, bytes, len))
        return refuse(reason_out, reason);
    if (memcmp(header.share_id, share->id, SYNC_SHARE_ID_LEN) != 0)
        return refuse(reason_out, SYNC_REASON_WRONG_SHARE);
    const struct sync_epoch_key *key = find_key(share, header.epoch);
    if (!key)
        return refuse(reason_out, SYNC_REASON_UNKNOWN_EPOCH);
    uint8_t public_key[SYNC_PUBLIC_KEY_LEN];
    /* The replica id is bound to the key: a membership table mapping it elsewhere is refused. */
    if (!share->member ||
        share->member(share->member_ctx, public_key, header.author, header.epoch) != 0 ||
        sync_replica_id(public_key) != header.author)
        return refuse(reason_out, SYNC_REASON_UNKNOWN_AUTHOR);

    size_t ct_len = len - SYNC_RECORD_HEADER_LEN - SYNC_RECORD_SIG_LEN;
    size_t plain_len = ct_len - SYNC_RECORD_TAG_LEN;
    uint8_t *plain = malloc(plain_len);
    if (!plain)
        return -ENOMEM;
    /*
     * Tag first, signature second: a byte changed anywhere in the header or
     * the ciphertext fails the tag (ALTERED); a record that someone holding
     * the share key sealed but could not sign as the author fails only the
     * signature (FORGED), as does a record whose signature bytes changed.
     */
    unsigned long long got = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &got, NULL, bytes + HEADER_END, ct_len,
                                                   bytes, HEADER_END, bytes + OFF_NONCE,
                                                   key->key) != 0 ||
        got != plain_len) {
        free(plain);
        return refuse(reason_out, SYNC_REASON_ALTERED);
    }
    if (crypto_sign_verify_detached(bytes + len - SYNC_RECORD_SIG_LEN, bytes,
                                    len - SYNC_RECORD_SIG_LEN, public_key) != 0) {
        sodium_memzero(plain, plain_len);
        free(plain);
        return refuse(reason_out, SYNC_REASON_FORGED);
    }

    out->header = header;
    out->plain = plain;
    out->plain_len = plain_len;
    if (header.kind == SYNC_RECORD_OPS) {
        int rc = decode_ops(out);
        if (rc) {
            sync_record_clear(out);
            /* Signed by a member yet malformed: its author misbehaves; it is refused all the same.
             */
            return rc == -ENOMEM ? rc : refuse(reason_out, SYNC_REASON_MALFORMED);
        }
    } else {
        out->chunk = plain;
        out->chunk_len = plain_len;
    }
    /*
     * libsodium refuses non-canonical Ed25519 signatures, so nobody can make
     * a second valid encoding of a signed record: the hash names it uniquely.
     */
    sync_record_hash(out->hash, bytes, len);
    return 0;
}

void sync_record_clear(struct sync_record *record)
{
    if (record->plain)
        sodium_memzero(record->plain, record->plain_len);
    free(record->plain);
    free(record->ops);
    crdt_vv_free(&record->deps);
    memset(record, 0, sizeof(*record));
}
