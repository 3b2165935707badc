/*
 * Fuzz target: sync/record and sync/chain. The first byte picks a mode:
 *
 *   0  the rest is a record: peek, open, and a fresh chain verifier. What
 *      opens must re-seal to the same bytes (one encoding per record).
 *   1  the rest is an op batch plaintext, sealed and signed validly, so the
 *      decoder behind the signature is reached: it either decodes to ops that
 *      re-encode to the same bytes, or is refused as MALFORMED.
 *   2  the rest is a script of deliveries of an honest 4-record chain, each
 *      copy possibly with one byte changed: whatever the verifier accepts
 *      must be the unchanged honest record that comes next.
 *
 * Keys are fixed and nonces come from a seeded generator: runs are reproducible.
 */
#include "sync/chain.h"
#include "sync/record.h"
#include "sync/record_internal.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HONEST 4

static bool ready;
static struct sync_identity author;
static uint64_t author_id;
static struct sync_epoch_key keys[2];
static struct sync_share share;
static struct crdt_buf honest[HONEST + 1];
static uint8_t honest_hash[HONEST + 1][SYNC_HASH_LEN];

static int member(void *ctx, uint8_t public_key[SYNC_PUBLIC_KEY_LEN], uint64_t replica,
                  uint32_t epoch)
{
    (void)ctx;
    (void)epoch;
    if (replica != author_id)
        return -1;
    memcpy(public_key, author.public_key, SYNC_PUBLIC_KEY_LEN);
    return 0;
}

/* Nonces: a fixed byte sequence, or (for re-sealing) the nonce of the record being checked. */
struct nonce_source {
    const uint8_t *fixed; /* SYNC_RECORD_NONCE_LEN bytes, or NULL */
    uint8_t counter;
};

static void nonce(void *ctx, void *out, size_t len)
{
    struct nonce_source *source = ctx;
    if (source->fixed) {
        memcpy(out, source->fixed, len);
        return;
    }
    memset(out, source->counter++, len);
}

static struct sync_seal seal_for(uint32_t epoch, struct nonce_source *source)
{
    return (struct sync_seal){
        .share_id = share.id,
        .epoch = epoch,
        .key = keys[epoch == 2].key,
        .author = author_id,
        .secret_key = author.secret_key,
        .random = nonce,
        .random_ctx = source,
    };
}

static void setup(void)
{
    if (sync_init() != 0)
        abort();
    uint8_t seed[SYNC_SEED_LEN];
    memset(seed, 7, sizeof(seed));
    if (sync_identity_from_seed(&author, seed) != 0)
        abort();
    author_id = sync_replica_id(author.public_key);
    memset(share.id, 0xa0, SYNC_SHARE_ID_LEN);
    keys[0].epoch = 1;
    memset(keys[0].key, 0x11, SYNC_KEY_LEN);
    keys[1].epoch = 2;
    memset(keys[1].key, 0x22, SYNC_KEY_LEN);
    share.keys = keys;
    share.key_count = 2;
    share.member = member;
    struct nonce_source source = {0};
    for (uint64_t seq = 1; seq <= HONEST; seq++) {
        struct sync_op op = {.replica = author_id,
                             .seq = seq,
                             .counter = 2 * seq,
                             .kind = 1,
                             .author = author_id,
                             .body = (const uint8_t *)"body",
                             .body_len = (size_t)seq};
        struct sync_seal params = seal_for(seq > 2 ? 2 : 1, &source);
        if (sync_record_seal_ops(&honest[seq], honest_hash[seq], &params, seq,
                                 seq == 1 ? NULL : honest_hash[seq - 1], &op, 1) != 0)
            abort();
    }
    ready = true;
}

/* An opened record must re-seal, with its own nonce, to exactly its bytes. */
static void check_reseal(const struct sync_record *record, const uint8_t *bytes, size_t len)
{
    struct nonce_source source = {.fixed = bytes + 70};
    struct sync_seal params = seal_for(record->header.epoch, &source);
    struct crdt_buf again = {0};
    int rc;
    if (record->header.kind == SYNC_RECORD_OPS)
        rc = sync_record_seal_ops(&again, NULL, &params, record->header.seq,
                                  record->header.seq == 1 ? NULL : record->header.prev, record->ops,
                                  record->op_count);
    else
        rc = sync_record_seal_chunk(&again, NULL, &params, record->header.chunk_id, record->chunk,
                                    record->chunk_len);
    if (rc != 0 || again.len != len || memcmp(again.data, bytes, len) != 0)
        abort();
    crdt_buf_free(&again);
}

static void raw_record(const uint8_t *bytes, size_t len)
{
    struct sync_record_header header;
    int peeked = sync_record_peek(&header, bytes, len);
    struct sync_record record;
    enum sync_reason reason;
    int rc = sync_record_open(&record, &reason, &share, bytes, len);
    if (rc == 0) {
        if (peeked != 0 || reason != SYNC_REASON_NONE)
            abort();
        check_reseal(&record, bytes, len);
    } else if (rc != sync_reason_errno(reason) || record.plain) {
        abort();
    }
    sync_record_clear(&record);

    struct sync_chain *chain;
    if (sync_chain_new(&chain, &share, author_id, 0, NULL) != 0)
        abort();
    rc = sync_chain_accept(&record, &reason, chain, bytes, len);
    /* A fresh chain accepts only a genuine record 1 of its author. */
    if (rc == 0 && (record.header.seq != 1 || record.header.author != author_id))
        abort();
    sync_record_clear(&record);
    sync_chain_free(chain);
}

static void sealed_plaintext(const uint8_t *plain, size_t len)
{
    struct nonce_source source = {0};
    struct sync_seal params = seal_for(1, &source);
    struct crdt_buf record_bytes = {0};
    if (sync__record_seal_raw(&record_bytes, NULL, &params, SYNC_RECORD_OPS, 1, NULL, plain, len) !=
        0) {
        crdt_buf_free(&record_bytes);
        return; /* over SYNC_RECORD_PLAIN_MAX */
    }
    struct sync_record record;
    enum sync_reason reason;
    int rc = sync_record_open(&record, &reason, &share, record_bytes.data, record_bytes.len);
    if (rc == 0) {
        struct crdt_buf again = {0};
        sync__record_encode_ops(&again, record.ops, record.op_count);
        if (crdt_buf_status(&again) == 0 && (again.len != len || memcmp(again.data, plain, len)))
            abort();
        for (size_t i = 0; i < record.op_count; i++)
            if (record.ops[i].replica != author_id || record.ops[i].counter == 0 ||
                record.ops[i].kind == 0 || record.ops[i].seq != record.ops[0].seq + i)
                abort();
        crdt_buf_free(&again);
        check_reseal(&record, record_bytes.data, record_bytes.len);
    } else if (reason != SYNC_REASON_MALFORMED) {
        abort(); /* sealed and signed validly: only the plaintext can be wrong */
    }
    sync_record_clear(&record);
    crdt_buf_free(&record_bytes);
}

/* Script entries: [record (low 2 bits) | rewind (bit 7)] [offset lo] [offset hi] [xor mask]. */
static void delivery_script(const uint8_t *script, size_t len)
{
    struct sync_chain *chain;
    if (sync_chain_new(&chain, &share, author_id, 0, NULL) != 0)
        abort();
    uint8_t copy[256];
    for (size_t i = 0; i + 4 <= len; i += 4) {
        size_t which = 1 + (script[i] & 3u);
        if (script[i] & 0x80)
            sync_chain_rewind(chain);
        const struct crdt_buf *original = &honest[which];
        if (original->len > sizeof(copy))
            abort();
        memcpy(copy, original->data, original->len);
        size_t offset = ((size_t)script[i + 1] | (size_t)script[i + 2] << 8) % original->len;
        copy[offset] ^= script[i + 3];
        uint64_t head = sync_chain_head(NULL, chain);
        struct sync_record record;
        enum sync_reason reason;
        int rc = sync_chain_accept(&record, &reason, chain, copy, original->len);
        if (rc == 0) {
            /* Accepted: it must be the honest next record, unchanged. */
            if (script[i + 3] != 0 || which != head + 1 ||
                memcmp(record.hash, honest_hash[which], SYNC_HASH_LEN) != 0)
                abort();
        } else if (sync_chain_head(NULL, chain) != head || reason == SYNC_REASON_NONE) {
            abort();
        }
        sync_record_clear(&record);
    }
    sync_chain_free(chain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    if (size == 0) {
        raw_record(data, 0);
        return 0;
    }
    switch (data[0] % 3) {
    case 0:
        raw_record(data + 1, size - 1);
        break;
    case 1:
        sealed_plaintext(data + 1, size - 1);
        break;
    default:
        delivery_script(data + 1, size - 1);
        break;
    }
    return 0;
}
