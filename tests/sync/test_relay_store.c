/*
 * Tests for the relay store (sync/relay_store.h) on its SQLite
 * implementation (meta/relaydb): the contract of the interface (round
 * trips, idempotent puts, fork and gap refusal, bounded reads, heads,
 * chunks, members, addresses, group commit), written against the interface
 * so another backend can run the same checks; then what is SQLite's own:
 * persistence across reopen, the lock, foreign, newer and damaged files; and
 * a big chain read back in bounded batches.
 */
#include "meta/relaydb.h"
#include "meta_util.h"
#include "sync/relay_store.h"
#include "sync_util.h"

#include <sqlite3.h>

static const uint8_t share_a[SYNC_SHARE_ID_LEN] = {0xa1, 0xa2, 0xa3};
static const uint8_t share_b[SYNC_SHARE_ID_LEN] = {0xb1, 0xb2, 0xb3};
static const uint8_t share_unknown[SYNC_SHARE_ID_LEN] = {0xee};

/* A chain of opaque "records": bytes derived from (author, seq), hashed, linked by prev. */
struct fake_chain {
    uint64_t author;
    size_t count;
    uint8_t (*hash)[SYNC_HASH_LEN];
    uint8_t **bytes;
    size_t *len;
};

static void chain_make(struct fake_chain *chain, uint64_t author, size_t count, size_t min_len,
                       size_t spread, uint64_t seed)
{
    chain->author = author;
    chain->count = count;
    chain->hash = calloc(count + 1, SYNC_HASH_LEN);
    chain->bytes = calloc(count + 1, sizeof(*chain->bytes));
    chain->len = calloc(count + 1, sizeof(*chain->len));
    uint64_t rng = seed | 1;
    for (size_t seq = 1; seq <= count; seq++) {
        size_t len = min_len + (size_t)test_rand_below(&rng, spread + 1);
        chain->bytes[seq] = malloc(len);
        for (size_t i = 0; i < len; i++)
            chain->bytes[seq][i] = (uint8_t)test_rand(&rng);
        chain->len[seq] = len;
        sync_record_hash(chain->hash[seq], chain->bytes[seq], len);
    }
}

static void chain_free(struct fake_chain *chain)
{
    for (size_t seq = 1; seq <= chain->count; seq++)
        free(chain->bytes[seq]);
    free(chain->hash);
    free(chain->bytes);
    free(chain->len);
}

/* Puts record `seq` of the chain (prev: the chain's record seq - 1). */
static int chain_put(struct sync_relay_store *store, bool *added, const uint8_t *share,
                     const struct fake_chain *chain, uint64_t seq)
{
    static const uint8_t zero[SYNC_HASH_LEN];
    return store->ops->op_put(store->ctx, added, share, chain->author, seq,
                              seq > 1 ? chain->hash[seq - 1] : zero, chain->hash[seq], 1,
                              chain->bytes[seq], chain->len[seq]);
}

/* What a read visited, checked against the chain as it goes. */
struct read_check {
    const struct fake_chain *chain;
    uint64_t next_seq;
    size_t visited, bytes, bad;
    size_t stop_after; /* return 7 after this many (0: never) */
};

static int read_visit(void *ctx, const struct sync_relay_record *record)
{
    struct read_check *check = ctx;
    const struct fake_chain *chain = check->chain;
    if (record->author != chain->author || record->seq != check->next_seq ||
        record->seq > chain->count || record->len != chain->len[record->seq] ||
        memcmp(record->bytes, chain->bytes[record->seq], record->len) != 0 ||
        memcmp(record->hash, chain->hash[record->seq], SYNC_HASH_LEN) != 0 || record->epoch != 1)
        check->bad++;
    check->next_seq = record->seq + 1;
    check->visited++;
    check->bytes += record->len;
    return check->stop_after && check->visited == check->stop_after ? 7 : 0;
}

static const char *store_msg(struct sync_relay_store *store)
{
    return store->ops->errmsg(store->ctx);
}

static struct sync_relay_store open_store(const char *dir)
{
    struct sync_relay_store store;
    char why[512] = "";
    int rc = sync_relay_store_open_sqlite(&store, why, sizeof(why), dir);
    if (rc) {
        fprintf(stderr, "opening the relay store in %s: %d %s\n", dir, rc, why);
        exit(2);
    }
    return store;
}

/* ---------- the contract ---------- */

static void test_shares_and_members(struct sync_relay_store *store)
{
    struct sync_identity alice, bob, carol;
    util_identity(&alice, 1);
    util_identity(&bob, 2);
    util_identity(&carol, 3);
    const struct sync_relay_store_ops *ops = store->ops;
    bool exists = true;
    CHECK_INT(0, ops->share_exists(store->ctx, &exists, share_a));
    CHECK(!exists);
    CHECK_INT(-ENOENT, ops->member_add(store->ctx, share_a, bob.public_key, 5));
    CHECK_INT(0, ops->share_register(store->ctx, share_a, alice.public_key, 100));
    CHECK_INT(-EEXIST, ops->share_register(store->ctx, share_a, bob.public_key, 101));
    CHECK_INT(0, ops->share_exists(store->ctx, &exists, share_a));
    CHECK(exists);

    struct sync_relay_member member;
    CHECK_INT(0, ops->member_get(store->ctx, &member, share_a, sync_replica_id(alice.public_key)));
    CHECK(memcmp(member.public_key, alice.public_key, SYNC_PUBLIC_KEY_LEN) == 0);
    CHECK_INT(100, member.added_ns);
    CHECK(!member.revoked);
    /* The losing registrant did not become a member. */
    CHECK_INT(-ENOENT,
              ops->member_get(store->ctx, &member, share_a, sync_replica_id(bob.public_key)));

    CHECK_INT(0, ops->member_add(store->ctx, share_a, bob.public_key, 200));
    CHECK_INT(0, ops->member_add(store->ctx, share_a, bob.public_key, 300)); /* idempotent */
    CHECK_INT(0, ops->member_get(store->ctx, &member, share_a, sync_replica_id(bob.public_key)));
    CHECK_INT(200, member.added_ns);
    CHECK_INT(0, ops->member_add(store->ctx, share_a, carol.public_key, 400));
    CHECK_INT(0, ops->member_revoke(store->ctx, share_a, sync_replica_id(carol.public_key)));
    CHECK_INT(-EKEYREVOKED, ops->member_add(store->ctx, share_a, carol.public_key, 500));
    CHECK_INT(0, ops->member_get(store->ctx, &member, share_a, sync_replica_id(carol.public_key)));
    CHECK(member.revoked);
    CHECK_INT(-ENOENT, ops->member_revoke(store->ctx, share_a, 12345));
    CHECK_INT(-ENOENT, ops->member_revoke(store->ctx, share_unknown, 12345));
}

static int count_member(void *ctx, const struct sync_relay_member *member)
{
    size_t *counts = ctx;
    counts[member->revoked ? 1 : 0]++;
    return 0;
}

static void test_members_list(struct sync_relay_store *store)
{
    size_t counts[2] = {0, 0};
    CHECK_INT(0, store->ops->members(store->ctx, share_a, count_member, counts));
    CHECK_INT(2, counts[0]); /* alice, bob */
    CHECK_INT(1, counts[1]); /* carol, revoked */
    counts[0] = counts[1] = 0;
    CHECK_INT(0, store->ops->members(store->ctx, share_unknown, count_member, counts));
    CHECK_INT(0, counts[0] + counts[1]);
}

static void test_op_chain(struct sync_relay_store *store)
{
    const struct sync_relay_store_ops *ops = store->ops;
    struct fake_chain chain, other;
    chain_make(&chain, 0x1111, 6, 50, 100, 1);
    chain_make(&other, 0x1111, 6, 50, 100, 2); /* the same author signing another branch */
    bool added = false;
    uint64_t seq = 99;
    uint8_t hash[SYNC_HASH_LEN] = {1};

    CHECK_INT(0, ops->head(store->ctx, &seq, hash, share_a, chain.author));
    CHECK_INT(0, seq);
    CHECK(hash[0] == 0);
    /* Gap: the first record must be seq 1. */
    CHECK_INT(-ENODATA, chain_put(store, &added, share_a, &chain, 2));
    CHECK(!added);
    for (uint64_t s = 1; s <= 4; s++) {
        CHECK_INT(0, chain_put(store, &added, share_a, &chain, s));
        CHECK(added);
    }
    /* The same record again: accepted, not added. */
    CHECK_INT(0, chain_put(store, &added, share_a, &chain, 3));
    CHECK(!added);
    CHECK_INT(0, chain_put(store, &added, share_a, &chain, 4));
    CHECK(!added);
    /* Another record at a held seq: a fork. */
    CHECK_INT(-ENOTUNIQ, chain_put(store, &added, share_a, &other, 2));
    CHECK_INT(-ENOTUNIQ, chain_put(store, &added, share_a, &other, 4));
    /* The next seq, naming another predecessor: a fork too. */
    CHECK_INT(-ENOTUNIQ, chain_put(store, &added, share_a, &other, 5));
    /* A gap after the head. */
    CHECK_INT(-ENODATA, chain_put(store, &added, share_a, &chain, 6));
    CHECK(!added);
    /* Refusals changed nothing; the honest next record still goes. */
    CHECK_INT(0, ops->head(store->ctx, &seq, hash, share_a, chain.author));
    CHECK_INT(4, seq);
    CHECK(memcmp(hash, chain.hash[4], SYNC_HASH_LEN) == 0);
    CHECK_INT(0, chain_put(store, &added, share_a, &chain, 5));
    CHECK(added);
    CHECK_INT(0, chain_put(store, &added, share_a, &chain, 6));

    /* Unregistered share, bad arguments. */
    CHECK_INT(-ENOENT, chain_put(store, &added, share_unknown, &chain, 1));
    CHECK(strlen(store_msg(store)) > 0);
    CHECK_INT(-EINVAL, ops->op_put(store->ctx, &added, share_a, 7, 0, NULL, chain.hash[1], 1,
                                   chain.bytes[1], chain.len[1]));
    CHECK_INT(-EINVAL,
              ops->op_put(store->ctx, &added, share_a, 7, 1, NULL, chain.hash[1], 1, NULL, 0));

    /* Reads: everything, from the middle, bounded by count and by bytes, stopped. */
    struct read_check check = {.chain = &chain, .next_seq = 1};
    size_t count = 0;
    CHECK_INT(0, ops->op_read(store->ctx, &count, share_a, chain.author, 1, 100, SIZE_MAX,
                              read_visit, &check));
    CHECK_INT(6, count);
    CHECK_INT(0, check.bad);
    check = (struct read_check){.chain = &chain, .next_seq = 3};
    CHECK_INT(0, ops->op_read(store->ctx, &count, share_a, chain.author, 3, 2, SIZE_MAX, read_visit,
                              &check));
    CHECK_INT(2, count);
    CHECK_INT(0, check.bad);
    check = (struct read_check){.chain = &chain, .next_seq = 2};
    CHECK_INT(0, ops->op_read(store->ctx, &count, share_a, chain.author, 2, 100, chain.len[2] + 1,
                              read_visit, &check));
    CHECK_INT(2, count); /* the second record crosses the bound; nothing after it */
    check = (struct read_check){.chain = &chain, .next_seq = 1};
    CHECK_INT(
        0, ops->op_read(store->ctx, &count, share_a, chain.author, 1, 100, 1, read_visit, &check));
    CHECK_INT(1, count); /* the first record always goes */
    check = (struct read_check){.chain = &chain, .next_seq = 1, .stop_after = 3};
    CHECK_INT(7, ops->op_read(store->ctx, &count, share_a, chain.author, 1, 100, SIZE_MAX,
                              read_visit, &check));
    CHECK_INT(3, count);
    check = (struct read_check){.chain = &chain, .next_seq = 7};
    CHECK_INT(0, ops->op_read(store->ctx, &count, share_a, chain.author, 7, 100, SIZE_MAX,
                              read_visit, &check));
    CHECK_INT(0, count);
    CHECK_INT(0, ops->op_read(store->ctx, &count, share_unknown, chain.author, 1, 100, SIZE_MAX,
                              read_visit, &check));
    CHECK_INT(0, count);
    chain_free(&chain);
    chain_free(&other);
}

struct heads_seen {
    size_t count;
    uint64_t author[8], seq[8];
};

static int collect_head(void *ctx, uint64_t author, uint64_t seq, const uint8_t hash[32])
{
    struct heads_seen *seen = ctx;
    (void)hash;
    if (seen->count < 8) {
        seen->author[seen->count] = author;
        seen->seq[seen->count] = seq;
    }
    seen->count++;
    return 0;
}

static void test_heads(struct sync_relay_store *store)
{
    struct fake_chain chain;
    chain_make(&chain, UINT64_C(0xF000000000000001), 3, 10, 10, 3); /* an id above 2^63 */
    bool added;
    for (uint64_t s = 1; s <= 3; s++)
        CHECK_INT(0, chain_put(store, &added, share_a, &chain, s));
    struct heads_seen seen = {0};
    CHECK_INT(0, store->ops->heads(store->ctx, share_a, collect_head, &seen));
    CHECK_INT(2, seen.count);
    for (size_t i = 0; i < seen.count && i < 8; i++) {
        if (seen.author[i] == 0x1111)
            CHECK_INT(6, seen.seq[i]);
        else if (seen.author[i] == chain.author)
            CHECK_INT(3, seen.seq[i]);
        else
            CHECK(!"unexpected author in heads");
    }
    uint64_t seq;
    uint8_t hash[SYNC_HASH_LEN];
    CHECK_INT(0, store->ops->head(store->ctx, &seq, hash, share_a, chain.author));
    CHECK_INT(3, seq);
    CHECK(memcmp(hash, chain.hash[3], SYNC_HASH_LEN) == 0);
    seen.count = 0;
    CHECK_INT(0, store->ops->heads(store->ctx, share_unknown, collect_head, &seen));
    CHECK_INT(0, seen.count);
    chain_free(&chain);
}

static void test_chunks(struct sync_relay_store *store)
{
    const struct sync_relay_store_ops *ops = store->ops;
    uint8_t id[SYNC_HASH_LEN], other_id[SYNC_HASH_LEN];
    memset(id, 0x42, sizeof(id));
    memset(other_id, 0x43, sizeof(other_id));
    const uint8_t first[] = "the first sealed record of this chunk";
    const uint8_t second[] = "another sealing of the same chunk";
    bool added = false, has = true;
    uint8_t *bytes = NULL;
    size_t len = 0;
    CHECK_INT(0, ops->chunk_has(store->ctx, &has, share_a, id));
    CHECK(!has);
    CHECK_INT(-ENOENT, ops->chunk_get(store->ctx, &bytes, &len, share_a, id));
    CHECK(bytes == NULL);
    CHECK_INT(0, ops->chunk_put(store->ctx, &added, share_a, id, 9, first, sizeof(first)));
    CHECK(added);
    CHECK_INT(0, ops->chunk_put(store->ctx, &added, share_a, id, 9, second, sizeof(second)));
    CHECK(!added); /* the first record of an id stays */
    CHECK_INT(0, ops->chunk_get(store->ctx, &bytes, &len, share_a, id));
    CHECK_INT(sizeof(first), len);
    CHECK(bytes && memcmp(bytes, first, sizeof(first)) == 0);
    free(bytes);
    CHECK_INT(0, ops->chunk_has(store->ctx, &has, share_a, id));
    CHECK(has);
    CHECK_INT(0, ops->chunk_has(store->ctx, &has, share_a, other_id));
    CHECK(!has);
    /* Chunks are per share. */
    CHECK_INT(-ENOENT,
              ops->chunk_put(store->ctx, &added, share_unknown, id, 9, first, sizeof(first)));
    CHECK_INT(0, ops->chunk_has(store->ctx, &has, share_unknown, id));
    CHECK(!has);
    CHECK_INT(-EINVAL, ops->chunk_put(store->ctx, &added, share_a, id, 9, first, 0));
}

struct addrs_seen {
    size_t count;
    char addr[64];
    int64_t seen_ns;
};

static int collect_addr(void *ctx, uint64_t replica, const char *addr, int64_t seen_ns)
{
    struct addrs_seen *seen = ctx;
    (void)replica;
    seen->count++;
    snprintf(seen->addr, sizeof(seen->addr), "%s", addr);
    seen->seen_ns = seen_ns;
    return 0;
}

static void test_addrs(struct sync_relay_store *store)
{
    const struct sync_relay_store_ops *ops = store->ops;
    CHECK_INT(0, ops->addr_put(store->ctx, share_a, 77, "192.0.2.1:4000", 10));
    CHECK_INT(0, ops->addr_put(store->ctx, share_a, 77, "[2001:db8::1]:4001", 20));
    struct addrs_seen seen = {0};
    CHECK_INT(0, ops->addrs(store->ctx, share_a, collect_addr, &seen));
    CHECK_INT(1, seen.count);
    CHECK_STR("[2001:db8::1]:4001", seen.addr);
    CHECK_INT(20, seen.seen_ns);
    char long_addr[SYNC_RELAY_ADDR_MAX + 2];
    memset(long_addr, 'a', sizeof(long_addr) - 1);
    long_addr[sizeof(long_addr) - 1] = '\0';
    CHECK_INT(-EINVAL, ops->addr_put(store->ctx, share_a, 77, long_addr, 30));
}

static void test_group_commit(struct sync_relay_store *store)
{
    const struct sync_relay_store_ops *ops = store->ops;
    struct sync_identity dave;
    util_identity(&dave, 4);
    CHECK_INT(0, ops->share_register(store->ctx, share_b, dave.public_key, 1));
    struct fake_chain chain;
    chain_make(&chain, 0x2222, 10, 20, 20, 4);
    bool added;
    uint64_t seq;
    uint8_t hash[SYNC_HASH_LEN];

    /* Rolled back: nothing stays. */
    CHECK_INT(0, ops->begin(store->ctx));
    CHECK_INT(-EINVAL, ops->begin(store->ctx));
    for (uint64_t s = 1; s <= 3; s++)
        CHECK_INT(0, chain_put(store, &added, share_b, &chain, s));
    ops->rollback(store->ctx);
    CHECK_INT(0, ops->head(store->ctx, &seq, hash, share_b, chain.author));
    CHECK_INT(0, seq);

    /* Committed, with refusals in the middle that do not end the group. */
    CHECK_INT(0, ops->begin(store->ctx));
    CHECK_INT(0, chain_put(store, &added, share_b, &chain, 1));
    CHECK_INT(-ENODATA, chain_put(store, &added, share_b, &chain, 3));
    CHECK_INT(0, chain_put(store, &added, share_b, &chain, 2));
    CHECK_INT(0, chain_put(store, &added, share_b, &chain, 2));
    CHECK(!added);
    CHECK_INT(0, chain_put(store, &added, share_b, &chain, 3));
    CHECK_INT(0, ops->commit(store->ctx));
    CHECK_INT(0, ops->head(store->ctx, &seq, hash, share_b, chain.author));
    CHECK_INT(3, seq);
    ops->rollback(store->ctx); /* no group: a no-op */
    CHECK_INT(0, ops->head(store->ctx, &seq, hash, share_b, chain.author));
    CHECK_INT(3, seq);
    chain_free(&chain);
}

/* ---------- SQLite's own ---------- */

static void test_persistence(const char *dir)
{
    struct sync_relay_store store = open_store(dir);
    uint64_t seq;
    uint8_t hash[SYNC_HASH_LEN];
    CHECK_INT(0, store.ops->head(store.ctx, &seq, hash, share_a, 0x1111));
    CHECK_INT(6, seq);
    CHECK_INT(0, store.ops->head(store.ctx, &seq, hash, share_b, 0x2222));
    CHECK_INT(3, seq);
    test_members_list(&store);
    bool has;
    uint8_t id[SYNC_HASH_LEN];
    memset(id, 0x42, sizeof(id));
    CHECK_INT(0, store.ops->chunk_has(store.ctx, &has, share_a, id));
    CHECK(has);
    struct addrs_seen seen = {0};
    CHECK_INT(0, store.ops->addrs(store.ctx, share_a, collect_addr, &seen));
    CHECK_STR("[2001:db8::1]:4001", seen.addr);
    sync_relay_store_close(&store);
    sync_relay_store_close(&store); /* a zeroed store is fine */
}

static void test_lock(const char *dir)
{
    struct sync_relay_store first = open_store(dir), second;
    char why[512] = "";
    CHECK_INT(-EBUSY, sync_relay_store_open_sqlite(&second, why, sizeof(why), dir));
    CHECK(strstr(why, "in use by process") != NULL);
    CHECK(second.ops == NULL);
    sync_relay_store_close(&first);
    /* Released with the first: the next open works. */
    second = open_store(dir);
    sync_relay_store_close(&second);
}

/* Makes a SQLite database at path with the given application id and user_version. */
static void make_db(const char *path, int app_id, int version)
{
    sqlite3 *db = NULL;
    char sql[200];
    snprintf(sql, sizeof(sql),
             "PRAGMA application_id = %d; PRAGMA user_version = %d; CREATE TABLE t (x);", app_id,
             version);
    if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_exec(db, sql, NULL, NULL, NULL))
        abort();
    sqlite3_close(db);
}

static void expect_refusal(const char *dir, int expected, const char *phrase)
{
    struct sync_relay_store store;
    char why[512] = "";
    int rc = sync_relay_store_open_sqlite(&store, why, sizeof(why), dir);
    CHECK_INT(expected, rc);
    if (!strstr(why, phrase)) {
        test_failures++;
        fprintf(stderr, "expected the message to say \"%s\", got \"%s\"\n", phrase, why);
    }
    if (rc == 0)
        sync_relay_store_close(&store);
}

static void test_foreign_files(void)
{
    char path[4200];
    /* Not a directory, and missing. */
    expect_refusal("/nonexistent/weft-relay", -ENOENT, "cannot use");

    char *dir = tu_tempdir("relay-foreign");
    snprintf(path, sizeof(path), "%s/relay.db", dir);
    uint8_t junk[4096];
    memset(junk, 0x5c, sizeof(junk));
    CHECK_INT(0, tu_write_file(path, junk, sizeof(junk)));
    expect_refusal(dir, -EUCLEAN, "not a SQLite database");
    size_t len = 0;
    uint8_t *after = tu_read_file(path, &len);
    CHECK(after && len == sizeof(junk) && memcmp(after, junk, len) == 0); /* untouched */
    free(after);

    unlink(path);
    make_db(path, 0x12345678, 1);
    expect_refusal(dir, -EUCLEAN, "another program's database");
    unlink(path);
    make_db(path, META_APPLICATION_ID, 2);
    expect_refusal(dir, -EUCLEAN, "a device's share store");
    unlink(path);
    make_db(path, 0, 0);
    expect_refusal(dir, -EUCLEAN, "not a relay's");
    unlink(path);
    make_db(path, META_RELAYDB_APPLICATION_ID, META_RELAYDB_SCHEMA_VERSION + 1);
    expect_refusal(dir, -EPROTONOSUPPORT, "newer than this relay knows");
    unlink(path);

    /* A good database whose pages are damaged afterwards. */
    struct sync_relay_store store = open_store(dir);
    struct sync_identity alice;
    util_identity(&alice, 1);
    CHECK_INT(0, store.ops->share_register(store.ctx, share_a, alice.public_key, 1));
    sync_relay_store_close(&store);
    uint8_t *bytes = tu_read_file(path, &len);
    CHECK(bytes && len >= 4096);
    if (bytes && len >= 4096) {
        /* Keep the header page; smash every page after it. */
        for (size_t i = 4096; i < len; i++)
            bytes[i] = 0xff;
        CHECK_INT(0, tu_write_file(path, bytes, len));
        struct sync_relay_store damaged;
        char why[512] = "";
        int rc = sync_relay_store_open_sqlite(&damaged, why, sizeof(why), dir);
        if (rc == 0) {
            /* The header page is intact, so it may open; the first read of a table must fail. */
            bool exists;
            rc = damaged.ops->share_exists(damaged.ctx, &exists, share_a);
            snprintf(why, sizeof(why), "%s", damaged.ops->errmsg(damaged.ctx));
            sync_relay_store_close(&damaged);
        }
        CHECK_INT(-EUCLEAN, rc);
        CHECK(strstr(why, "damaged") != NULL);
    }
    free(bytes);
    tu_rmtree(dir);

    /* A device's share directory. */
    dir = tu_tempdir("relay-share");
    snprintf(path, sizeof(path), "%s/store.db", dir);
    make_db(path, META_APPLICATION_ID, 2);
    expect_refusal(dir, -EUCLEAN, "holds a device's share");
    tu_rmtree(dir);
}

/* A chain of 20,000 records (about 7 MB) put in groups and read back in bounded batches. */
static void test_big_iteration(void)
{
    char *dir = tu_tempdir("relay-big");
    struct sync_relay_store store = open_store(dir);
    struct sync_identity alice;
    util_identity(&alice, 1);
    CHECK_INT(0, store.ops->share_register(store.ctx, share_a, alice.public_key, 1));
    struct fake_chain chain;
    const size_t total = 20000;
    chain_make(&chain, 0x3333, total, 100, 600, 5);
    bool added;
    int rc = 0;
    for (uint64_t s = 1; s <= total && rc == 0; s++) {
        if (s % 1000 == 1)
            rc = store.ops->begin(store.ctx);
        if (rc == 0)
            rc = chain_put(&store, &added, share_a, &chain, s);
        if (rc == 0 && (s % 1000 == 0 || s == total))
            rc = store.ops->commit(store.ctx);
    }
    CHECK_INT(0, rc);
    sync_relay_store_close(&store);

    store = open_store(dir);
    struct read_check check = {.chain = &chain, .next_seq = 1};
    size_t batches = 0, max_batch_bytes = 0, max_batch_records = 0;
    const size_t max_records = 97, max_bytes = 16384;
    for (;;) {
        size_t before_bytes = check.bytes, count = 0;
        rc = store.ops->op_read(store.ctx, &count, share_a, chain.author, check.next_seq,
                                max_records, max_bytes, read_visit, &check);
        if (rc || count == 0)
            break;
        batches++;
        size_t batch_bytes = check.bytes - before_bytes;
        if (batch_bytes > max_batch_bytes)
            max_batch_bytes = batch_bytes;
        if (count > max_batch_records)
            max_batch_records = count;
    }
    CHECK_INT(0, rc);
    CHECK_INT(total, check.visited);
    CHECK_INT(0, check.bad);
    CHECK(max_batch_records <= max_records);
    /* A batch stops at the record that reaches the bound: at most one record past it. */
    CHECK(max_batch_bytes < max_bytes + 700);
    CHECK(batches >= check.bytes / (max_bytes + 700));
    printf("big iteration: %zu records, %zu bytes, %zu batches, largest %zu bytes\n", check.visited,
           check.bytes, batches, max_batch_bytes);
    sync_relay_store_close(&store);
    chain_free(&chain);
    tu_rmtree(dir);
}

/* Replica ids are derived from keys in the adapter; meta/relaydb refuses a colliding id. */
static void test_replica_collision(void)
{
    char *dir = tu_tempdir("relay-collide");
    struct meta_relaydb *db = NULL;
    struct meta_err err;
    CHECK_INT(0, meta_relaydb_open(&db, &err, dir));
    if (db) {
        uint8_t key_a[32], key_b[32];
        memset(key_a, 1, sizeof(key_a));
        memset(key_b, 2, sizeof(key_b));
        CHECK_INT(0, meta_relaydb_share_register(db, share_a, key_a, 7, 1));
        CHECK_INT(-EEXIST, meta_relaydb_member_add(db, share_a, key_b, 7, 2));
        CHECK(strstr(meta_relaydb_errmsg(db), "another device key") != NULL);
        CHECK_INT(-ERANGE, meta_relaydb_op_put(db, NULL, share_a, 7, UINT64_C(1) << 63, key_a,
                                               key_a, 1, key_a, 32));
        meta_relaydb_close(db);
    }
    tu_rmtree(dir);
}

int main(void)
{
    if (sync_init() != 0)
        return 2;
    char *dir = tu_tempdir("relay-store");
    struct sync_relay_store store = open_store(dir);
    test_shares_and_members(&store);
    test_members_list(&store);
    test_op_chain(&store);
    test_heads(&store);
    test_chunks(&store);
    test_addrs(&store);
    test_group_commit(&store);
    sync_relay_store_close(&store);
    test_persistence(dir);
    test_lock(dir);
    tu_rmtree(dir);
    test_foreign_files();
    test_replica_collision();
    test_big_iteration();
    return test_finish("test-sync-relay-store");
}
