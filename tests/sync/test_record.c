/*
 * Tests for sync/record: seal/open round trips of op and chunk records,
 * frozen golden bytes, every byte of a record changed (each with its precise
 * verdict), truncations, other shares, key epochs, removed members, forged
 * signatures, signed-but-malformed plaintexts, and seal's argument checks.
 */
#include "sync/record.h"
#include "sync/record_internal.h"
#include "sync_util.h"

#include <errno.h>
#include <stdlib.h>

static struct util_share share_a, share_b;
static struct sync_identity alice, bob, mallory;
static uint64_t alice_id, bob_id, mallory_id;

static void setup(void)
{
    util_share_init(&share_a, 0xa0);
    util_share_init(&share_b, 0xb0);
    util_identity(&alice, 1);
    util_identity(&bob, 2);
    util_identity(&mallory, 3); /* never a member */
    alice_id = sync_replica_id(alice.public_key);
    bob_id = sync_replica_id(bob.public_key);
    mallory_id = sync_replica_id(mallory.public_key);
    util_member_add(&share_a.members, &alice, 0);
    util_member_add(&share_a.members, &bob, 2); /* bob is removed at epoch 2 */
    util_member_add(&share_b.members, &alice, 0);
}

/* Seals `count` fresh ops of alice as record `seq` after `prev`; returns the record's hash. */
static void seal_alice(struct crdt_buf *out, uint8_t hash[SYNC_HASH_LEN], uint64_t seq,
                       const uint8_t *prev, size_t count, uint64_t rng_seed)
{
    struct sync_op ops[8];
    uint8_t bodies[8 * 64];
    uint64_t rng = rng_seed;
    util_ops(ops, bodies, count, alice_id, 1 + 3 * (seq - 1), &rng);
    struct util_rng nonce = {rng_seed};
    struct sync_seal seal = util_seal(&share_a, &alice, 1, &nonce);
    CHECK_INT(0, sync_record_seal_ops(out, hash, &seal, seq, prev, ops, count));
}

static void test_ops_round_trip(void)
{
    struct sync_op ops[5];
    uint8_t bodies[5 * 64];
    uint64_t rng = 7;
    util_ops(ops, bodies, 5, alice_id, 42, &rng);
    ops[2].body_len = 0; /* an empty body too */
    struct sync_seal seal = util_seal(&share_a, &alice, 2, NULL);
    uint8_t prev[SYNC_HASH_LEN], hash[SYNC_HASH_LEN];
    memset(prev, 0x77, sizeof(prev));
    struct crdt_buf buf = {0};
    CHECK_INT(0, sync_record_seal_ops(&buf, hash, &seal, 9, prev, ops, 5));

    size_t plain_len = 2; /* varint first seq 42, varint count 5 */
    for (size_t i = 0; i < 5; i++)
        plain_len += sync_record_op_size(&ops[i]);
    CHECK_INT(SYNC_RECORD_OVERHEAD + plain_len, buf.len);

    struct sync_record record;
    enum sync_reason reason = SYNC_REASON_FORK;
    CHECK_INT(0, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_NONE, reason);
    CHECK_INT(SYNC_RECORD_OPS, record.header.kind);
    CHECK(record.header.author == alice_id);
    CHECK_INT(9, record.header.seq);
    CHECK_INT(2, record.header.epoch);
    CHECK(memcmp(record.header.prev, prev, SYNC_HASH_LEN) == 0);
    CHECK(memcmp(record.header.share_id, share_a.share.id, SYNC_SHARE_ID_LEN) == 0);
    CHECK(memcmp(record.hash, hash, SYNC_HASH_LEN) == 0);
    uint8_t rehash[SYNC_HASH_LEN];
    sync_record_hash(rehash, buf.data, buf.len);
    CHECK(memcmp(rehash, hash, SYNC_HASH_LEN) == 0);
    CHECK_INT(5, record.op_count);
    for (size_t i = 0; i < record.op_count && i < 5; i++) {
        const struct sync_op *got = &record.ops[i];
        CHECK(got->replica == alice_id && got->author == alice_id);
        CHECK_INT(ops[i].seq, got->seq);
        CHECK_INT(ops[i].counter, got->counter);
        CHECK_INT(ops[i].kind, got->kind);
        CHECK(memcmp(got->node, ops[i].node, SYNC_NODE_ID_LEN) == 0);
        CHECK_INT(ops[i].body_len, got->body_len);
        CHECK(got->body_len == 0 || memcmp(got->body, ops[i].body, got->body_len) == 0);
    }
    CHECK(record.chunk == NULL);

    struct sync_record_header header;
    CHECK_INT(0, sync_record_peek(&header, buf.data, buf.len));
    CHECK(header.seq == 9 && header.author == alice_id && header.kind == SYNC_RECORD_OPS);
    sync_record_clear(&record);
    sync_record_clear(&record); /* clearing twice is fine */
    crdt_buf_free(&buf);
}

/* Format 2 names the author's deps; format 1 (no deps) still opens, with none. */
static void test_deps(void)
{
    struct sync_op ops[3];
    uint8_t bodies[3 * 64];
    uint64_t rng = 11;
    util_ops(ops, bodies, 3, alice_id, 1, &rng);
    struct sync_seal seal = util_seal(&share_a, &alice, 1, NULL);
    struct crdt_vv deps = {0};
    CHECK_INT(0, crdt_vv_raise(&deps, 7, 3));
    CHECK_INT(0, crdt_vv_raise(&deps, 1ull << 40, 12345));
    struct crdt_buf buf = {0};
    CHECK_INT(0, sync_record_seal_ops_deps(&buf, NULL, &seal, 1, NULL, &deps, ops, 3));
    CHECK_INT(SYNC_RECORD_VERSION, buf.data[0]);
    struct sync_record record;
    CHECK_INT(0, sync_record_open(&record, NULL, &share_a.share, buf.data, buf.len));
    CHECK_INT(2, record.header.version);
    CHECK(crdt_vv_compare(&record.deps, &deps) == CRDT_VV_EQUAL);
    CHECK_INT(3, record.op_count);
    sync_record_clear(&record);
    crdt_buf_free(&buf);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 3));
    CHECK_INT(SYNC_RECORD_VERSION_1, buf.data[0]);
    CHECK_INT(0, sync_record_open(&record, NULL, &share_a.share, buf.data, buf.len));
    CHECK_INT(0, record.deps.len);
    sync_record_clear(&record);
    crdt_buf_free(&buf);
    crdt_vv_free(&deps);
}

static void test_chunk_round_trip(void)
{
    uint8_t id[SYNC_HASH_LEN], data[5000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 31);
    memset(id, 0xcd, sizeof(id));
    struct sync_seal seal = util_seal(&share_a, &alice, 1, NULL);
    struct crdt_buf buf = {0};
    uint8_t hash[SYNC_HASH_LEN];
    CHECK_INT(0, sync_record_seal_chunk(&buf, hash, &seal, id, data, sizeof(data)));
    struct sync_record record;
    CHECK_INT(0, sync_record_open(&record, NULL, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_RECORD_CHUNK, record.header.kind);
    CHECK_INT(0, record.header.seq);
    CHECK(memcmp(record.header.chunk_id, id, SYNC_HASH_LEN) == 0);
    CHECK_INT(sizeof(data), record.chunk_len);
    CHECK(record.chunk && memcmp(record.chunk, data, sizeof(data)) == 0);
    CHECK(record.ops == NULL && record.op_count == 0);
    CHECK(memcmp(record.hash, hash, SYNC_HASH_LEN) == 0);
    sync_record_clear(&record);
    crdt_buf_free(&buf);
}

/* The largest plaintext seals and opens; one byte more is refused before any work. */
static void test_size_limits(void)
{
    uint8_t *data = malloc(SYNC_RECORD_PLAIN_MAX + 1);
    uint8_t id[SYNC_HASH_LEN] = {1};
    memset(data, 0x42, SYNC_RECORD_PLAIN_MAX + 1);
    struct sync_seal seal = util_seal(&share_a, &alice, 1, NULL);
    struct crdt_buf buf = {0};
    CHECK_INT(0, sync_record_seal_chunk(&buf, NULL, &seal, id, data, SYNC_RECORD_PLAIN_MAX));
    CHECK_INT(SYNC_RECORD_MAX, buf.len);
    struct sync_record record;
    CHECK_INT(0, sync_record_open(&record, NULL, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_RECORD_PLAIN_MAX, record.chunk_len);
    sync_record_clear(&record);
    crdt_buf_free(&buf);
    CHECK_INT(-EMSGSIZE,
              sync_record_seal_chunk(&buf, NULL, &seal, id, data, SYNC_RECORD_PLAIN_MAX + 1));
    CHECK_INT(0, buf.len);

    /* An op batch over the limit. */
    struct sync_op op = {.replica = alice_id,
                         .seq = 1,
                         .counter = 1,
                         .kind = 1,
                         .author = alice_id,
                         .body = data,
                         .body_len = SYNC_RECORD_PLAIN_MAX};
    CHECK_INT(-EMSGSIZE, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, &op, 1));
    op.body_len = SYNC_RECORD_PLAIN_MAX - 30;
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, &op, 1));
    crdt_buf_free(&buf);
    free(data);
}

/*
 * Frozen bytes: fixed keys, fixed nonce source, fixed ops. If these change,
 * the record format changed: bump SYNC_RECORD_VERSION and keep reading v1.
 */
static const char golden_ops_hex[] =
    "0101"                                                             /* version, kind */
    "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0"                                 /* share id */
    "c5e21ab1c9f6022d"                                                 /* author replica (u64le) */
    "0100000000000000"                                                 /* record seq 1 (u64le) */
    "01000000"                                                         /* key epoch 1 (u32le) */
    "0000000000000000000000000000000000000000000000000000000000000000" /* prev: zero for seq 1 */
    "56c8caf1c3d534704dac6c57e030129c534fff546fad6157"                 /* nonce */
    "3f000000" /* ciphertext length 63 (u32le) */
    "49da439b0cbe7ab3b871fb8bd6ea08cf5e34ad17d92dd9a976a472366160817e" /* ciphertext: 47-byte op
                                                                          batch + 16-byte tag */
    "4b6afac6cce2b7029c973b0cd1416d52a1f09738fc33c77a99e533d3410830"
    "16b5934d318131adf8ea9c91227383895de9cc92256bca0b77101dd9d6a66e46" /* Ed25519 signature */
    "2da59f88825251b8b397d8f8d89b80849291573f774a5b29d563a44e8904a80f";

static void test_golden(void)
{
    struct sync_op ops[2] = {
        {.replica = alice_id,
         .seq = 1,
         .counter = 1,
         .kind = 1,
         .author = alice_id,
         .body = (const uint8_t *)"mkdir",
         .body_len = 5},
        {.replica = alice_id,
         .seq = 2,
         .counter = 3,
         .kind = 2,
         .author = alice_id,
         .body = (const uint8_t *)"hi",
         .body_len = 2},
    };
    memset(ops[0].node, 0x01, SYNC_NODE_ID_LEN);
    memset(ops[1].node, 0x02, SYNC_NODE_ID_LEN);
    struct util_rng nonce = {42};
    struct sync_seal seal = util_seal(&share_a, &alice, 1, &nonce);
    struct crdt_buf buf = {0};
    uint8_t hash[SYNC_HASH_LEN];
    CHECK_INT(0, sync_record_seal_ops(&buf, hash, &seal, 1, NULL, ops, 2));
    char *hex = malloc(2 * buf.len + 1);
    util_hex(hex, buf.data, buf.len);
    if (strcmp(hex, golden_ops_hex) != 0) {
        test_failures++;
        fprintf(stderr, "golden op record changed:\n%s\n", hex);
    }
    test_checks++;

    /* The frozen bytes still open, with the expected contents. */
    uint8_t *frozen = malloc(sizeof(golden_ops_hex) / 2);
    size_t frozen_len = 0;
    CHECK_INT(0, sodium_hex2bin(frozen, sizeof(golden_ops_hex) / 2, golden_ops_hex,
                                sizeof(golden_ops_hex) - 1, NULL, &frozen_len, NULL));
    struct sync_record record;
    CHECK_INT(0, sync_record_open(&record, NULL, &share_a.share, frozen, frozen_len));
    CHECK_INT(2, record.op_count);
    /* The plaintext, byte for byte from the README's op batch layout. */
    const uint8_t plain[] = {1, 2, /* first op seq, count */
                             1, 1, [4 ... 19] = 0x01,  5, 'm', 'k', 'd', 'i', 'r',
                             3, 2, [28 ... 43] = 0x02, 2, 'h', 'i'};
    CHECK_INT(sizeof(plain), record.plain_len);
    CHECK(record.plain_len == sizeof(plain) && memcmp(record.plain, plain, sizeof(plain)) == 0);
    if (record.op_count == 2) {
        CHECK_INT(5, record.ops[0].body_len);
        CHECK(memcmp(record.ops[0].body, "mkdir", 5) == 0);
        CHECK_INT(3, record.ops[1].counter);
        CHECK_INT(2, record.ops[1].seq);
    }
    sync_record_clear(&record);
    free(frozen);
    free(hex);
    crdt_buf_free(&buf);
}

/* Every byte of a record, changed two ways, is refused with the verdict its field implies. */
static void flip_every_byte(const struct crdt_buf *buf, const char *what)
{
    uint8_t *copy = malloc(buf->len);
    const uint8_t masks[] = {0x01, 0x80, 0xff};
    int wrong = 0;
    for (size_t m = 0; m < sizeof(masks); m++) {
        for (size_t offset = 0; offset < buf->len; offset++) {
            memcpy(copy, buf->data, buf->len);
            copy[offset] ^= masks[m];
            struct sync_record record;
            enum sync_reason reason = SYNC_REASON_NONE;
            int rc = sync_record_open(&record, &reason, &share_a.share, copy, buf->len);
            enum sync_reason expected =
                util_flip_verdict(buf->data, buf->len, offset, masks[m], &share_a.share);
            test_checks++;
            if (rc != sync_reason_errno(expected) || reason != expected) {
                test_failures++;
                if (wrong++ < 10)
                    fprintf(stderr, "%s: byte %zu ^ 0x%02x: expected %s, got %s (%d)\n", what,
                            offset, masks[m], sync_reason_str(expected), sync_reason_str(reason),
                            rc);
            }
            CHECK(record.plain == NULL && record.ops == NULL);
            sync_record_clear(&record);
        }
    }
    free(copy);
}

static void test_every_byte_changed(void)
{
    struct crdt_buf buf = {0};
    uint8_t hash[SYNC_HASH_LEN], prev[SYNC_HASH_LEN];
    seal_alice(&buf, prev, 1, NULL, 2, 11);
    crdt_buf_free(&buf);
    seal_alice(&buf, hash, 2, prev, 3, 12);
    flip_every_byte(&buf, "op record seq 2");
    crdt_buf_free(&buf);
    seal_alice(&buf, hash, 1, NULL, 1, 13);
    flip_every_byte(&buf, "op record seq 1");
    crdt_buf_free(&buf);

    uint8_t id[SYNC_HASH_LEN] = {9, 9, 9};
    struct sync_seal seal = util_seal(&share_a, &alice, 1, NULL);
    CHECK_INT(0, sync_record_seal_chunk(&buf, NULL, &seal, id, "chunk bytes", 11));
    flip_every_byte(&buf, "chunk record");
    crdt_buf_free(&buf);
}

static void test_truncated_and_extended(void)
{
    struct crdt_buf buf = {0};
    uint8_t hash[SYNC_HASH_LEN];
    seal_alice(&buf, hash, 1, NULL, 2, 21);
    struct sync_record record;
    enum sync_reason reason;
    for (size_t len = 0; len < buf.len; len++) {
        int rc = sync_record_open(&record, &reason, &share_a.share, buf.data, len);
        CHECK_INT(-EBADMSG, rc);
        CHECK_INT(SYNC_REASON_MALFORMED, reason);
        struct sync_record_header header;
        CHECK_INT(-EBADMSG, sync_record_peek(&header, buf.data, len));
    }
    crdt_buf_put_u8(&buf, 0);
    CHECK_INT(-EBADMSG, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_MALFORMED, reason);
    CHECK_INT(-EBADMSG, sync_record_open(&record, &reason, &share_a.share, NULL, 0));
    crdt_buf_free(&buf);
}

static void test_other_share_and_epochs(void)
{
    struct crdt_buf buf = {0};
    struct sync_op ops[1];
    uint8_t bodies[64];
    uint64_t rng = 5;
    util_ops(ops, bodies, 1, alice_id, 1, &rng);
    struct sync_record record;
    enum sync_reason reason;

    /* Sealed for share B, offered to share A (alice is a member of both). */
    struct sync_seal seal = util_seal(&share_b, &alice, 1, NULL);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(-EXDEV, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_WRONG_SHARE, reason);
    CHECK_INT(0, sync_record_open(&record, &reason, &share_b.share, buf.data, buf.len));
    sync_record_clear(&record);
    /* ... and with its share id rewritten to A's: the tag no longer verifies. */
    memcpy(buf.data + 2, share_a.share.id, SYNC_SHARE_ID_LEN);
    CHECK_INT(-EBADE, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_ALTERED, reason);
    crdt_buf_free(&buf);

    /* An epoch the reader does not hold. */
    seal = util_seal(&share_a, &alice, 3, NULL);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(-ENOKEY, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_UNKNOWN_EPOCH, reason);
    crdt_buf_free(&buf);

    /* Sealed with epoch 2's key but labelled epoch 1: the wrong key for its label. */
    seal = util_seal(&share_a, &alice, 2, NULL);
    seal.epoch = 1;
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(-EBADE, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_ALTERED, reason);
    crdt_buf_free(&buf);

    /* A reader that dropped epoch 1's key refuses epoch-1 records. */
    struct sync_share only_two = share_a.share;
    only_two.keys = &share_a.keys[1];
    only_two.key_count = 1;
    seal = util_seal(&share_a, &alice, 1, NULL);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(-ENOKEY, sync_record_open(&record, &reason, &only_two, buf.data, buf.len));
    CHECK_INT(0, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    sync_record_clear(&record);
    crdt_buf_free(&buf);
}

static void test_members_and_forgeries(void)
{
    struct crdt_buf buf = {0};
    struct sync_op ops[1];
    uint8_t bodies[64];
    uint64_t rng = 6;
    struct sync_record record;
    enum sync_reason reason;

    /* Bob was removed at epoch 2: his epoch-1 records open, his epoch-2 records do not. */
    util_ops(ops, bodies, 1, bob_id, 1, &rng);
    struct sync_seal seal = util_seal(&share_a, &bob, 1, NULL);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(0, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    sync_record_clear(&record);
    crdt_buf_free(&buf);
    seal = util_seal(&share_a, &bob, 2, NULL);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(-EACCES, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_UNKNOWN_AUTHOR, reason);
    crdt_buf_free(&buf);

    /* Mallory, who somehow holds the share key, signs as herself: not a member. */
    util_ops(ops, bodies, 1, mallory_id, 1, &rng);
    seal = util_seal(&share_a, &mallory, 1, NULL);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(-EACCES, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_UNKNOWN_AUTHOR, reason);
    crdt_buf_free(&buf);

    /* ... and as alice: the tag verifies (she has the key) but the signature does not. */
    uint8_t plain[] = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    util_forge(&buf, SYNC_RECORD_OPS, share_a.share.id, alice_id, 1, 1, NULL, share_a.keys[0].key,
               &mallory, plain, sizeof(plain));
    CHECK_INT(-EKEYREJECTED, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_FORGED, reason);
    crdt_buf_free(&buf);

    /* The same bytes signed by alice open: the forgery helper is faithful to the format. */
    util_forge(&buf, SYNC_RECORD_OPS, share_a.share.id, alice_id, 1, 1, NULL, share_a.keys[0].key,
               &alice, plain, sizeof(plain));
    CHECK_INT(0, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(1, record.op_count);
    sync_record_clear(&record);

    /* A membership table that maps alice's id to another key is not believed. */
    share_a.members.lie = true;
    struct util_members saved = share_a.members;
    share_a.members.entries[0] = share_a.members.entries[1]; /* first entry: bob's key */
    CHECK_INT(-EACCES, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
    CHECK_INT(SYNC_REASON_UNKNOWN_AUTHOR, reason);
    share_a.members = saved;
    share_a.members.lie = false;
    crdt_buf_free(&buf);

    /* No member callback at all: nobody is a member. */
    struct sync_share closed = share_a.share;
    closed.member = NULL;
    seal = util_seal(&share_a, &alice, 1, NULL);
    util_ops(ops, bodies, 1, alice_id, 1, &rng);
    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 1, NULL, ops, 1));
    CHECK_INT(-EACCES, sync_record_open(&record, &reason, &closed, buf.data, buf.len));
    crdt_buf_free(&buf);
}

/* Records alice signed whose plaintext is malformed: refused as MALFORMED, nothing leaks. */
static void test_signed_malformed(void)
{
    static const struct {
        const char *what;
        uint8_t plain[64];
        size_t len;
    } cases[] = {
        {"zero first seq", {0, 1, 1, 1}, 21},
        {"zero count", {1, 0}, 2},
        {"count beyond the bytes", {1, 2, 1, 1}, 21},
        {"zero counter", {1, 1, 0, 1}, 21},
        {"zero kind", {1, 1, 1, 0}, 21},
        {"body runs past the end", {1, 1, 1, 1, [20] = 5}, 21},
        {"trailing byte", {1, 1, 1, 1, [20] = 0, [21] = 9}, 22},
        {"overlong varint", {0x81, 0x00, 1, 1, 1}, 22},
        {"op seqs past 2^64",
         {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 2, 1, 1, [29] = 0, 1, 1},
         49},
        {"empty", {0}, 0},
    };
    struct sync_seal seal = util_seal(&share_a, &alice, 1, NULL);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct crdt_buf buf = {0};
        uint8_t hash[SYNC_HASH_LEN];
        CHECK_INT(0, sync__record_seal_raw(&buf, hash, &seal, SYNC_RECORD_OPS, 1, NULL,
                                           cases[i].plain, cases[i].len));
        struct sync_record record;
        enum sync_reason reason = SYNC_REASON_NONE;
        int rc = sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len);
        if (rc != -EBADMSG || reason != SYNC_REASON_MALFORMED) {
            test_failures++;
            fprintf(stderr, "signed malformed plaintext (%s): got %d (%s)\n", cases[i].what, rc,
                    sync_reason_str(reason));
        }
        test_checks++;
        CHECK(record.plain == NULL && record.ops == NULL);
        crdt_buf_free(&buf);
    }

    /* Header rules hold even when signed: seq 0 op record, seq 1 with a prev, chunk with a seq. */
    uint8_t link[SYNC_HASH_LEN] = {1};
    const uint8_t one[] = {1, 1, 1, 1, [20] = 0};
    struct {
        uint8_t kind;
        uint64_t seq;
        const uint8_t *link;
    } headers[] = {{SYNC_RECORD_OPS, 0, NULL},
                   {SYNC_RECORD_OPS, 1, link},
                   {SYNC_RECORD_OPS, 2, NULL},
                   {SYNC_RECORD_CHUNK, 1, link},
                   {3, 1, NULL},
                   {0, 0, NULL}};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        struct crdt_buf buf = {0};
        CHECK_INT(0, sync__record_seal_raw(&buf, NULL, &seal, headers[i].kind, headers[i].seq,
                                           headers[i].link, one, sizeof(one)));
        struct sync_record record;
        enum sync_reason reason;
        CHECK_INT(-EBADMSG, sync_record_open(&record, &reason, &share_a.share, buf.data, buf.len));
        CHECK_INT(SYNC_REASON_MALFORMED, reason);
        crdt_buf_free(&buf);
    }
}

static void test_seal_refuses_bad_arguments(void)
{
    struct sync_op ops[3];
    uint8_t bodies[3 * 64];
    uint64_t rng = 8;
    util_ops(ops, bodies, 3, alice_id, 4, &rng);
    struct sync_seal seal = util_seal(&share_a, &alice, 1, NULL);
    uint8_t prev[SYNC_HASH_LEN] = {1}, zero[SYNC_HASH_LEN] = {0};
    struct crdt_buf buf = {0};

    CHECK_INT(0, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, ops, 3));
    size_t good_len = buf.len;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 0, NULL, ops, 3));
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 1, prev, ops, 3));
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, NULL, ops, 3));
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, zero, ops, 3));
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, ops, 0));

    struct sync_op bad[3];
    memcpy(bad, ops, sizeof(bad));
    bad[1].replica = bob_id;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, bad, 3));
    memcpy(bad, ops, sizeof(bad));
    bad[2].author = bob_id;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, bad, 3));
    memcpy(bad, ops, sizeof(bad));
    bad[2].seq = 9;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, bad, 3));
    memcpy(bad, ops, sizeof(bad));
    bad[0].counter = 0;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, bad, 3));
    memcpy(bad, ops, sizeof(bad));
    bad[1].kind = 0;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, bad, 3));
    memcpy(bad, ops, sizeof(bad));
    bad[0].seq = 0, bad[1].seq = 1, bad[2].seq = 2;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &seal, 2, prev, bad, 3));

    /* The author id must be the signing key's. */
    struct sync_seal wrong = seal;
    wrong.author = bob_id;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &wrong, 2, prev, ops, 3));
    wrong = seal;
    wrong.key = NULL;
    CHECK_INT(-EINVAL, sync_record_seal_ops(&buf, NULL, &wrong, 2, prev, ops, 3));
    CHECK_INT(-EINVAL, sync_record_seal_chunk(&buf, NULL, &seal, prev, "", 0));
    CHECK_INT(-EINVAL, sync_record_seal_chunk(&buf, NULL, &wrong, prev, "x", 1));
    CHECK_INT(good_len, buf.len); /* nothing appended by a refusal */
    crdt_buf_free(&buf);
}

static void test_reasons(void)
{
    /* Every reason has its own errno and words. */
    for (int a = 1; a < SYNC_REASON_COUNT; a++) {
        CHECK(sync_reason_errno((enum sync_reason)a) < 0);
        CHECK(strlen(sync_reason_str((enum sync_reason)a)) > 5);
        for (int b = a + 1; b < SYNC_REASON_COUNT; b++)
            CHECK(sync_reason_errno((enum sync_reason)a) != sync_reason_errno((enum sync_reason)b));
    }
    CHECK_INT(0, sync_reason_errno(SYNC_REASON_NONE));
    CHECK_STR("unknown reason", sync_reason_str(SYNC_REASON_COUNT));
}

int main(void)
{
    if (sync_init() != 0)
        return 1;
    setup();
    test_ops_round_trip();
    test_deps();
    test_chunk_round_trip();
    test_size_limits();
    test_golden();
    test_every_byte_changed();
    test_truncated_and_extended();
    test_other_share_and_epochs();
    test_members_and_forgeries();
    test_signed_malformed();
    test_seal_refuses_bad_arguments();
    test_reasons();
    return test_finish("sync-record");
}
