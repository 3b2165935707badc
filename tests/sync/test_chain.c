/*
 * Tests for sync/chain: each attack on an author's record chain, one by one:
 * dropped, replayed, reordered, altered, forged, equivocation (fork),
 * rollback, another share's record, an unknown key epoch. After each the
 * chain is unchanged and the honest records still go through; nothing
 * built on an attack is accepted.
 */
#include "sync/chain.h"
#include "sync_util.h"

#include <errno.h>

#define RECORDS 8

static struct util_share share_a, share_b;
static struct sync_identity alice, bob, mallory;
static uint64_t alice_id;

/* Alice's honest chain: records 1..RECORDS, 2 ops each. */
static struct crdt_buf honest[RECORDS + 1];
static uint8_t honest_hash[RECORDS + 1][SYNC_HASH_LEN];

/* Seals a record of `author` at `seq` after `prev` in `share` (epoch 1), ops from `salt`. */
static void seal(struct crdt_buf *out, uint8_t hash[SYNC_HASH_LEN], const struct util_share *share,
                 const struct sync_identity *author, uint64_t seq, const uint8_t *prev,
                 uint64_t salt, uint32_t epoch)
{
    struct sync_op ops[2];
    uint8_t bodies[2 * 64];
    uint64_t rng = salt;
    util_ops(ops, bodies, 2, sync_replica_id(author->public_key), 2 * seq - 1, &rng);
    struct sync_seal params = util_seal(share, author, epoch, NULL);
    if (sync_record_seal_ops(out, hash, &params, seq, seq == 1 ? NULL : prev, ops, 2) != 0)
        abort();
}

static void setup(void)
{
    util_share_init(&share_a, 0xa0);
    util_share_init(&share_b, 0xb0);
    util_identity(&alice, 1);
    util_identity(&bob, 2);
    util_identity(&mallory, 3);
    alice_id = sync_replica_id(alice.public_key);
    util_member_add(&share_a.members, &alice, 0);
    util_member_add(&share_a.members, &bob, 0);
    util_member_add(&share_b.members, &alice, 0);
    for (uint64_t seq = 1; seq <= RECORDS; seq++)
        seal(&honest[seq], honest_hash[seq], &share_a, &alice, seq, honest_hash[seq - 1], seq, 1);
}

static void teardown(void)
{
    for (int seq = 1; seq <= RECORDS; seq++)
        crdt_buf_free(&honest[seq]);
}

/* Offers bytes to the chain, expecting `expected`; returns what accept returned. */
static int offer(struct sync_chain *chain, const struct crdt_buf *bytes, enum sync_reason expected,
                 int line)
{
    struct sync_record record;
    enum sync_reason reason = SYNC_REASON_FORK;
    uint64_t head_before = sync_chain_head(NULL, chain);
    int rc = sync_chain_accept(&record, &reason, chain, bytes->data, bytes->len);
    test_checks++;
    if (reason != expected || rc != sync_reason_errno(expected)) {
        test_failures++;
        fprintf(stderr, "test_chain.c:%d: expected %s, got %s (%d): %s\n", line,
                sync_reason_str(expected), sync_reason_str(reason), rc, sync_chain_errmsg(chain));
    }
    if (rc == 0) {
        CHECK(record.header.seq == head_before + 1);
        CHECK(record.op_count == 2);
        CHECK(memcmp(record.hash, honest_hash[record.header.seq % (RECORDS + 1)], SYNC_HASH_LEN) ==
              0);
    } else {
        CHECK(sync_chain_head(NULL, chain) == head_before); /* a refusal changes nothing */
        CHECK(record.plain == NULL);
    }
    sync_record_clear(&record);
    return rc;
}
#define OFFER(chain, bytes, expected) offer(chain, bytes, expected, __LINE__)

static struct sync_chain *new_chain(void)
{
    struct sync_chain *chain;
    if (sync_chain_new(&chain, &share_a.share, alice_id, 0, NULL) != 0)
        abort();
    return chain;
}

static void test_honest_in_order(void)
{
    struct sync_chain *chain = new_chain();
    uint8_t hash[SYNC_HASH_LEN];
    CHECK_INT(0, sync_chain_head(hash, chain));
    for (int seq = 1; seq <= RECORDS; seq++)
        OFFER(chain, &honest[seq], SYNC_REASON_NONE);
    CHECK_INT(RECORDS, sync_chain_head(hash, chain));
    CHECK(memcmp(hash, honest_hash[RECORDS], SYNC_HASH_LEN) == 0);
    CHECK(sync_chain_author(chain) == alice_id);
    struct sync_chain_stats stats;
    sync_chain_stats(&stats, chain);
    CHECK_INT(RECORDS, stats.accepted);
    CHECK_STR("", sync_chain_errmsg(chain));
    sync_chain_free(chain);
    sync_chain_free(NULL);
}

static void test_replayed(void)
{
    struct sync_chain *chain = new_chain();
    OFFER(chain, &honest[1], SYNC_REASON_NONE);
    OFFER(chain, &honest[2], SYNC_REASON_NONE);
    OFFER(chain, &honest[1], SYNC_REASON_REPLAYED);
    OFFER(chain, &honest[2], SYNC_REASON_REPLAYED);
    OFFER(chain, &honest[3], SYNC_REASON_NONE);
    OFFER(chain, &honest[3], SYNC_REASON_REPLAYED);
    CHECK(strstr(sync_chain_errmsg(chain), "replayed") != NULL);
    struct sync_chain_stats stats;
    sync_chain_stats(&stats, chain);
    CHECK_INT(3, stats.refused[SYNC_REASON_REPLAYED]);
    sync_chain_free(chain);
}

static void test_dropped(void)
{
    struct sync_chain *chain = new_chain();
    OFFER(chain, &honest[1], SYNC_REASON_NONE);
    /* The source skips 2: 3, 4 and 5 all leave a gap and are refused. */
    OFFER(chain, &honest[3], SYNC_REASON_DROPPED);
    OFFER(chain, &honest[4], SYNC_REASON_DROPPED);
    OFFER(chain, &honest[5], SYNC_REASON_DROPPED);
    CHECK(strstr(sync_chain_errmsg(chain), "expected seq 2") != NULL);
    CHECK_INT(1, sync_chain_head(NULL, chain));
    /* We ask again (a new delivery); this time 2 comes. */
    sync_chain_rewind(chain);
    for (int seq = 2; seq <= 5; seq++)
        OFFER(chain, &honest[seq], SYNC_REASON_NONE);
    sync_chain_free(chain);
}

static void test_reordered(void)
{
    struct sync_chain *chain = new_chain();
    OFFER(chain, &honest[1], SYNC_REASON_NONE);
    /* 3 before 2 in one delivery: 3 is a gap at first, and 2 proves the reordering. */
    OFFER(chain, &honest[3], SYNC_REASON_DROPPED);
    OFFER(chain, &honest[2], SYNC_REASON_REORDERED);
    CHECK(strstr(sync_chain_errmsg(chain), "after seq 3") != NULL);
    /* The refusal ended that delivery: 2 and 3 delivered again in order go through. */
    OFFER(chain, &honest[2], SYNC_REASON_NONE);
    OFFER(chain, &honest[3], SYNC_REASON_NONE);
    sync_chain_free(chain);
}

static void test_altered(void)
{
    struct sync_chain *chain = new_chain();
    OFFER(chain, &honest[1], SYNC_REASON_NONE);
    struct crdt_buf altered = {0};
    crdt_buf_put(&altered, honest[2].data, honest[2].len);
    altered.data[altered.len / 2] ^= 0x10; /* a ciphertext byte */
    OFFER(chain, &altered, SYNC_REASON_ALTERED);
    memcpy(altered.data, honest[2].data, altered.len);
    altered.data[altered.len - 1] ^= 0x01; /* a signature byte */
    OFFER(chain, &altered, SYNC_REASON_FORGED);
    memcpy(altered.data, honest[2].data, altered.len);
    altered.data[30] ^= 0x01; /* the seq in the header */
    OFFER(chain, &altered, SYNC_REASON_ALTERED);
    OFFER(chain, &honest[2], SYNC_REASON_NONE);
    crdt_buf_free(&altered);
    sync_chain_free(chain);
}

static void test_forged(void)
{
    struct sync_chain *chain = new_chain();
    OFFER(chain, &honest[1], SYNC_REASON_NONE);
    /* Mallory holds the share key and writes "alice's" record 2, signed with her own key. */
    uint8_t plain[] = {3, 1, 5, 1, [20] = 0};
    struct crdt_buf forged = {0};
    util_forge(&forged, SYNC_RECORD_OPS, share_a.share.id, alice_id, 2, 1, honest_hash[1],
               share_a.keys[0].key, &mallory, plain, sizeof(plain));
    OFFER(chain, &forged, SYNC_REASON_FORGED);
    crdt_buf_free(&forged);
    /* ... or as herself, who is not a member. */
    util_forge(&forged, SYNC_RECORD_OPS, share_a.share.id, sync_replica_id(mallory.public_key), 2,
               1, honest_hash[1], share_a.keys[0].key, &mallory, plain, sizeof(plain));
    OFFER(chain, &forged, SYNC_REASON_UNKNOWN_AUTHOR);
    crdt_buf_free(&forged);
    OFFER(chain, &honest[2], SYNC_REASON_NONE);
    sync_chain_free(chain);
}

static void test_fork(void)
{
    struct sync_chain *chain = new_chain();
    for (int seq = 1; seq <= 3; seq++)
        OFFER(chain, &honest[seq], SYNC_REASON_NONE);
    /* Alice signs another record 2 (same predecessor, other ops): equivocation. */
    struct crdt_buf other2 = {0}, other4 = {0}, other5 = {0};
    uint8_t other2_hash[SYNC_HASH_LEN], other4_hash[SYNC_HASH_LEN];
    seal(&other2, other2_hash, &share_a, &alice, 2, honest_hash[1], 1000, 1);
    OFFER(chain, &other2, SYNC_REASON_FORK);
    CHECK(strstr(sync_chain_errmsg(chain), "another record for this seq") != NULL);
    /* A record 4 on the other branch (its prev is not our record 3). */
    seal(&other4, other4_hash, &share_a, &alice, 4, other2_hash, 1001, 1);
    OFFER(chain, &other4, SYNC_REASON_FORK);
    /* Nothing built on the fork is accepted: 5 after the forked 4 is a gap. */
    seal(&other5, NULL, &share_a, &alice, 5, other4_hash, 1002, 1);
    OFFER(chain, &other5, SYNC_REASON_DROPPED);
    sync_chain_rewind(chain);
    /* The honest chain goes on. */
    OFFER(chain, &honest[4], SYNC_REASON_NONE);
    /* And a fork of the record just accepted. */
    crdt_buf_free(&other4);
    seal(&other4, NULL, &share_a, &alice, 4, honest_hash[3], 1003, 1);
    OFFER(chain, &other4, SYNC_REASON_FORK);
    struct sync_chain_stats stats;
    sync_chain_stats(&stats, chain);
    CHECK_INT(3, stats.refused[SYNC_REASON_FORK]);
    CHECK_INT(4, stats.accepted);
    crdt_buf_free(&other2);
    crdt_buf_free(&other4);
    crdt_buf_free(&other5);
    sync_chain_free(chain);
}

static void test_rollback(void)
{
    struct sync_chain *chain = new_chain();
    enum sync_reason reason;
    const uint64_t relay = 100, peer = 200;
    for (int seq = 1; seq <= 5; seq++)
        OFFER(chain, &honest[seq], SYNC_REASON_NONE);
    /* The relay says it holds up to 5: true. Later it offers 3: a rollback. */
    CHECK_INT(0, sync_chain_check_head(&reason, chain, relay, 5, honest_hash[5]));
    CHECK_INT(SYNC_REASON_NONE, reason);
    CHECK_INT(-ESTALE, sync_chain_check_head(&reason, chain, relay, 3, honest_hash[3]));
    CHECK_INT(SYNC_REASON_ROLLBACK, reason);
    CHECK(strstr(sync_chain_errmsg(chain), "offered head 5 before") != NULL);
    CHECK_INT(-ESTALE, sync_chain_check_head(&reason, chain, relay, 0, NULL));
    /* A peer that is merely behind is fine; it may not go back either. */
    CHECK_INT(0, sync_chain_check_head(&reason, chain, peer, 2, honest_hash[2]));
    CHECK_INT(0, sync_chain_check_head(&reason, chain, peer, 2, honest_hash[2]));
    CHECK_INT(-ESTALE, sync_chain_check_head(&reason, chain, peer, 1, honest_hash[1]));
    /* A claimed hash that is not the verified one: a fork (or a lie). */
    CHECK_INT(-ENOTUNIQ, sync_chain_check_head(&reason, chain, peer, 4, honest_hash[3]));
    CHECK_INT(SYNC_REASON_FORK, reason);
    /* A claim ahead of us is remembered, and checked once the chain gets there. */
    const uint64_t ahead = 300;
    uint8_t wrong[SYNC_HASH_LEN];
    memset(wrong, 0xee, sizeof(wrong));
    CHECK_INT(0, sync_chain_check_head(&reason, chain, ahead, 7, wrong));
    CHECK_INT(-ENOTUNIQ, sync_chain_check_head(&reason, chain, ahead, 7, honest_hash[7]));
    OFFER(chain, &honest[6], SYNC_REASON_NONE);
    OFFER(chain, &honest[7], SYNC_REASON_NONE);
    CHECK_INT(-ENOTUNIQ, sync_chain_check_head(&reason, chain, ahead, 8, honest_hash[8]));
    CHECK_INT(-EINVAL, sync_chain_check_head(&reason, chain, ahead, 8, NULL));
    sync_chain_free(chain);
}

static void test_other_share_and_epoch(void)
{
    struct sync_chain *chain = new_chain();
    OFFER(chain, &honest[1], SYNC_REASON_NONE);
    /* Alice's record 2 of share B (she is a member there too), injected into share A. */
    struct crdt_buf other = {0};
    seal(&other, NULL, &share_b, &alice, 2, honest_hash[1], 2, 1);
    OFFER(chain, &other, SYNC_REASON_WRONG_SHARE);
    crdt_buf_free(&other);
    /* Her record 2 sealed under an epoch share A's reader does not hold. */
    seal(&other, NULL, &share_a, &alice, 2, honest_hash[1], 2, 7);
    OFFER(chain, &other, SYNC_REASON_UNKNOWN_EPOCH);
    crdt_buf_free(&other);
    OFFER(chain, &honest[2], SYNC_REASON_NONE);
    /* Her record 3 under epoch 2 (after a key rotation) is fine. */
    uint8_t hash3[SYNC_HASH_LEN];
    seal(&other, hash3, &share_a, &alice, 3, honest_hash[2], 3, 2);
    struct sync_record record;
    CHECK_INT(0, sync_chain_accept(&record, NULL, chain, other.data, other.len));
    CHECK_INT(2, record.header.epoch);
    sync_record_clear(&record);
    crdt_buf_free(&other);
    sync_chain_free(chain);
}

static void test_base_and_routing(void)
{
    /* A verifier resumed from a persisted head (3) continues there. */
    struct sync_chain *chain;
    CHECK_INT(0, sync_chain_new(&chain, &share_a.share, alice_id, 3, honest_hash[3]));
    OFFER(chain, &honest[3], SYNC_REASON_REPLAYED);
    OFFER(chain, &honest[2], SYNC_REASON_REPLAYED); /* before the base: its hash is gone */
    CHECK(strstr(sync_chain_errmsg(chain), "older than this verifier's base") != NULL);
    OFFER(chain, &honest[5], SYNC_REASON_DROPPED);
    sync_chain_rewind(chain);
    OFFER(chain, &honest[4], SYNC_REASON_NONE);
    OFFER(chain, &honest[5], SYNC_REASON_NONE);
    /* A fork of the base itself is still seen. */
    struct crdt_buf other = {0};
    seal(&other, NULL, &share_a, &alice, 3, honest_hash[2], 77, 1);
    OFFER(chain, &other, SYNC_REASON_FORK);
    crdt_buf_free(&other);

    /* Bob's genuine record routed to alice's chain, or a chunk record: the caller's mistake. */
    struct sync_record record;
    enum sync_reason reason;
    seal(&other, NULL, &share_a, &bob, 1, NULL, 5, 1);
    CHECK_INT(-EINVAL, sync_chain_accept(&record, &reason, chain, other.data, other.len));
    CHECK_INT(SYNC_REASON_NONE, reason);
    crdt_buf_free(&other);
    struct sync_seal params = util_seal(&share_a, &alice, 1, NULL);
    uint8_t id[SYNC_HASH_LEN] = {4};
    CHECK_INT(0, sync_record_seal_chunk(&other, NULL, &params, id, "data", 4));
    CHECK_INT(-EINVAL, sync_chain_accept(&record, &reason, chain, other.data, other.len));
    crdt_buf_free(&other);
    CHECK_INT(5, sync_chain_head(NULL, chain));
    sync_chain_free(chain);

    CHECK_INT(-EINVAL, sync_chain_new(&chain, &share_a.share, alice_id, 3, NULL));
    CHECK(chain == NULL);
    CHECK_INT(-EINVAL, sync_chain_new(&chain, &share_a.share, alice_id, 0, honest_hash[1]));
}

int main(void)
{
    if (sync_init() != 0)
        return 1;
    setup();
    test_honest_in_order();
    test_replayed();
    test_dropped();
    test_reordered();
    test_altered();
    test_forged();
    test_fork();
    test_rollback();
    test_other_share_and_epoch();
    test_base_and_routing();
    teardown();
    return test_finish("sync-chain");
}
