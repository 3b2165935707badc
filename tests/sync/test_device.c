/*
 * test-sync-device: sync/device between replicas in one process. A seals
 * its ops (and chunks) into records; B takes them one by one as a peer or
 * relay would hand them over, asks for the chunks it lacks, and ends equal
 * to A. Then every record-level attack on B: each refused with its reason,
 * nothing kept or applied, honest records still going through afterwards.
 */
#include "sync/device.h"

#include "meta/store.h"
#include "sync/record.h"
#include "unit/replica_peers.h"

#include <sodium.h>

struct node {
    struct peer peer;
    struct sync_device *device;
    char *records_dir;
};

static void node_init(struct node *node, const char *name)
{
    peer_init(&node->peer, name);
    size_t len = strlen(node->peer.dir) + 16;
    node->records_dir = malloc(len);
    snprintf(node->records_dir, len, "%s/records", node->peer.dir);
    char why[512] = "";
    int rc = sync_device_open(&node->device, why, sizeof(why), node->peer.replica,
                              node->records_dir, NULL);
    if (rc)
        fprintf(stderr, "sync_device_open: %s\n", why);
    CHECK_INT(0, rc);
}

static void node_free(struct node *node)
{
    sync_device_close(node->device);
    free(node->records_dir);
    peer_free(&node->peer);
}

struct copied {
    uint8_t **records;
    size_t *lens;
    size_t len, cap;
};

static int copy_out(void *ctx, const struct sync_relay_record *record)
{
    struct copied *out = ctx;
    if (out->len == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 16;
        out->records = realloc(out->records, out->cap * sizeof(*out->records));
        out->lens = realloc(out->lens, out->cap * sizeof(*out->lens));
    }
    out->records[out->len] = malloc(record->len);
    memcpy(out->records[out->len], record->bytes, record->len);
    out->lens[out->len++] = record->len;
    return 0;
}

static void copied_free(struct copied *copied)
{
    for (size_t i = 0; i < copied->len; i++)
        free(copied->records[i]);
    free(copied->records);
    free(copied->lens);
    memset(copied, 0, sizeof(*copied));
}

/* Every op record `author` has in `from`'s store from seq `first` on. */
static void records_of(struct copied *out, struct node *from, uint64_t author, uint64_t first)
{
    struct sync_relay_store *store = sync_device_records(from->device);
    CHECK_INT(0, store->ops->op_read(store->ctx, NULL, sync_device_share_id(from->device), author,
                                     first, 100000, SIZE_MAX, copy_out, out));
}

static uint64_t replica_of(struct node *node)
{
    return meta_store_replica(meta_replica_store(node->peer.replica));
}

static int accept(struct node *to, const uint8_t *bytes, size_t len, enum sync_reason *reason)
{
    return sync_device_accept(to->device, reason, bytes, len);
}

/* Hands `to` the chunk records it asks for now, from `from`'s store. */
static size_t give_chunks_once(struct node *to, struct node *from)
{
    struct sync_relay_store *store = sync_device_records(from->device);
    uint8_t(*ids)[SYNC_HASH_LEN] = NULL;
    size_t count = 0;
    CHECK_INT(0, sync_device_wanted(to->device, &ids, &count));
    for (size_t i = 0; i < count; i++) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        CHECK_INT(0, store->ops->chunk_get(store->ctx, &bytes, &len,
                                           sync_device_share_id(from->device), ids[i]));
        enum sync_reason reason;
        CHECK_INT(0, accept(to, bytes, len, &reason));
        free(bytes);
    }
    free(ids);
    return count;
}

/*
 * Hands `to` the chunk records it asks for, from `from`'s store, round after
 * round (a big version's index chunks tell what to ask for next).
 */
static size_t give_chunks(struct node *to, struct node *from)
{
    size_t total = 0, count = 0;
    do {
        count = give_chunks_once(to, from);
        total += count;
    } while (count > 0);
    return total;
}

/* Everything of `author` that `from` holds and `to` lacks, then the chunks asked for. */
static void deliver(struct node *to, struct node *from, uint64_t author)
{
    struct copied got = {0};
    records_of(&got, from, author, 1);
    for (size_t i = 0; i < got.len; i++) {
        enum sync_reason reason = SYNC_REASON_NONE;
        int rc = accept(to, got.records[i], got.lens[i], &reason);
        if (rc)
            fprintf(stderr, "accept: %s\n", sync_device_errmsg(to->device));
        CHECK_INT(0, rc);
    }
    copied_free(&got);
    give_chunks(to, from);
    CHECK_INT(0, sync_device_apply_pending(to->device, NULL));
}

static void test_converge(void)
{
    struct node a, b;
    node_init(&a, "alpha");
    node_init(&b, "beta");
    introduce(&a.peer, &b.peer);

    CHECK_INT(0, meta_replica_mkdir(&(struct meta_attr){0}, a.peer.replica, META_INO_ROOT, "docs",
                                    0755, 0, 0));
    write_text(&a.peer, "docs/notes.txt", "one\ntwo\nthree\n");
    size_t big_len = 300 * 1024;
    uint8_t *big = malloc(big_len);
    randombytes_buf(big, big_len);
    write_file(&a.peer, "docs/photo.bin", big, big_len);

    size_t sealed = 0;
    CHECK_INT(0, sync_device_seal(a.device, &sealed));
    CHECK(sealed >= 1);
    CHECK_INT(0, sync_device_seal(a.device, &sealed));
    CHECK_INT(0, sealed); /* nothing new */

    /* Op records first: B keeps them and waits for the photo's chunks. */
    struct copied got = {0};
    records_of(&got, &a, replica_of(&a), 1);
    for (size_t i = 0; i < got.len; i++)
        CHECK_INT(0, accept(&b, got.records[i], got.lens[i], NULL));
    struct sync_device_stats stats;
    sync_device_stats(&stats, b.device);
    CHECK_INT(1, stats.pending);
    CHECK(give_chunks(&b, &a) >= 2);
    sync_device_stats(&stats, b.device);
    CHECK_INT(0, stats.pending);
    check_content(&b.peer, "docs/notes.txt", "one\ntwo\nthree\n");
    size_t len = 0;
    char *photo = read_file(&b.peer, "docs/photo.bin", &len);
    CHECK(len == big_len && memcmp(photo, big, big_len) == 0);
    free(photo);

    /* The same records again (a relay and a peer overlap): duplicates, not attacks. */
    for (size_t i = 0; i < got.len; i++)
        CHECK_INT(0, accept(&b, got.records[i], got.lens[i], NULL));
    sync_device_stats(&stats, b.device);
    CHECK((size_t)stats.duplicates == got.len);
    copied_free(&got);

    /* Both edit the text concurrently; records both ways; both see both edits. */
    write_text(&a.peer, "docs/notes.txt", "one\ntwo (a)\nthree\n");
    write_text(&b.peer, "docs/notes.txt", "one\ntwo\nthree (b)\n");
    CHECK_INT(0, sync_device_seal(a.device, NULL));
    CHECK_INT(0, sync_device_seal(b.device, NULL));
    deliver(&b, &a, replica_of(&a));
    deliver(&a, &b, replica_of(&b));
    check_content(&a.peer, "docs/notes.txt", "one\ntwo (a)\nthree (b)\n");
    check_content(&b.peer, "docs/notes.txt", "one\ntwo (a)\nthree (b)\n");

    /* A text file of 3 MB: one op bigger than a batch goes in a record of its own. */
    size_t long_len = 3u << 20;
    char *long_text = malloc(long_len + 1);
    for (size_t i = 0; i < long_len; i++)
        long_text[i] = i % 64 == 63 ? '\n' : (char)('a' + i % 26);
    long_text[long_len] = '\0';
    write_text(&a.peer, "docs/long.txt", long_text);
    CHECK_INT(0, sync_device_seal(a.device, &sealed));
    CHECK(sealed >= 2); /* the ops around it go in records of their own */
    deliver(&b, &a, replica_of(&a));
    check_content(&b.peer, "docs/long.txt", long_text);
    free(long_text);

    /*
     * A 4 MiB binary file names hundreds of chunks: its op names an index.
     * B learns the content's chunks from the index chunks (two rounds).
     * Then one byte changes: the op record stays small, and the chunk
     * records sealed with it are the changed chunk and index chunk(s) only.
     */
    size_t huge_len = 4u << 20;
    uint8_t *huge = malloc(huge_len);
    randombytes_buf(huge, huge_len);
    write_file(&a.peer, "docs/huge.bin", huge, huge_len);
    CHECK_INT(0, sync_device_seal(a.device, NULL));
    deliver(&b, &a, replica_of(&a));
    char *huge_b = read_file(&b.peer, "docs/huge.bin", &len);
    CHECK(len == huge_len && memcmp(huge_b, huge, huge_len) == 0);
    free(huge_b);
    huge[huge_len / 3] ^= 1;
    write_file(&a.peer, "docs/huge.bin", huge, huge_len);
    CHECK_INT(0, sync_device_seal(a.device, &sealed));
    CHECK_INT(1, sealed);
    struct copied last = {0};
    uint64_t a_head = 0;
    uint8_t a_hash[SYNC_HASH_LEN];
    struct sync_relay_store *a_store = sync_device_records(a.device);
    CHECK_INT(0, a_store->ops->head(a_store->ctx, &a_head, a_hash, sync_device_share_id(a.device),
                                    replica_of(&a)));
    records_of(&last, &a, replica_of(&a), a_head);
    CHECK_INT(1, last.len);
    CHECK(last.lens[0] < 4096);
    uint8_t(*fresh)[SYNC_HASH_LEN] = NULL;
    size_t fresh_count = 0;
    CHECK_INT(0, sync_device_fresh_chunks(a.device, &fresh, &fresh_count, a_head));
    CHECK(fresh_count >= 2 && fresh_count <= 6);
    free(fresh);
    copied_free(&last);
    deliver(&b, &a, replica_of(&a));
    huge_b = read_file(&b.peer, "docs/huge.bin", &len);
    CHECK(len == huge_len && memcmp(huge_b, huge, huge_len) == 0);
    free(huge_b);
    free(huge);

    /*
     * A 40 MiB file is sealed in bounded steps: the first ones seal chunks
     * only, the last the op record; every chunk is pushed with it once.
     */
    size_t giant_len = 40u << 20;
    uint8_t *giant = malloc(giant_len);
    randombytes_buf(giant, giant_len);
    write_file(&a.peer, "docs/giant.bin", giant, giant_len);
    uint64_t head_before = 0;
    CHECK_INT(0, a_store->ops->head(a_store->ctx, &head_before, a_hash,
                                    sync_device_share_id(a.device), replica_of(&a)));
    bool more = false;
    size_t steps = 0, records = 0;
    do {
        CHECK_INT(0, sync_device_seal_step(a.device, &sealed, &more));
        records += sealed;
        steps++;
        CHECK(steps < 10);
    } while (more);
    CHECK(steps >= 3);
    CHECK(records >= 1);
    CHECK_INT(0, sync_device_fresh_chunks(a.device, &fresh, &fresh_count, head_before + records));
    CHECK(fresh_count > (giant_len / META_CHUNK_MAX));
    free(fresh);
    deliver(&b, &a, replica_of(&a));
    huge_b = read_file(&b.peer, "docs/giant.bin", &len);
    CHECK(len == giant_len && memcmp(huge_b, giant, giant_len) == 0);
    free(huge_b);
    free(giant);

    /* B restarts: its chain continues where it was (no fork at the relay). */
    sync_device_close(b.device);
    char why[512];
    CHECK_INT(0,
              sync_device_open(&b.device, why, sizeof(why), b.peer.replica, b.records_dir, NULL));
    write_text(&b.peer, "docs/after.txt", "after restart\n");
    CHECK_INT(0, sync_device_seal(b.device, &sealed));
    CHECK_INT(1, sealed);
    deliver(&a, &b, replica_of(&b));
    check_content(&a.peer, "docs/after.txt", "after restart\n");

    free(big);
    node_free(&a);
    node_free(&b);
}

/* A refused record: the reason, the errno, and nothing kept. */
static void expect_refused(struct node *to, const uint8_t *bytes, size_t len, enum sync_reason want)
{
    enum sync_reason reason = SYNC_REASON_NONE;
    int rc = accept(to, bytes, len, &reason);
    if (reason != want)
        fprintf(stderr, "wanted %s, got %s (%s)\n", sync_reason_str(want), sync_reason_str(reason),
                sync_device_errmsg(to->device));
    CHECK_INT(sync_reason_errno(want), rc);
    CHECK_INT(want, reason);
}

static void test_attacks(void)
{
    struct node a, b, outsider;
    node_init(&a, "alpha");
    node_init(&b, "beta");
    introduce(&a.peer, &b.peer);
    for (int i = 0; i < 3; i++) {
        char path[32], text[32];
        snprintf(path, sizeof(path), "f%d.txt", i);
        snprintf(text, sizeof(text), "version %d\n", i);
        write_text(&a.peer, path, text);
        CHECK_INT(0, sync_device_seal(a.device, NULL)); /* one record each */
    }
    struct copied got = {0};
    records_of(&got, &a, replica_of(&a), 1);
    CHECK_INT(3, got.len);

    /* Dropped: record 2 before record 1. */
    expect_refused(&b, got.records[1], got.lens[1], SYNC_REASON_DROPPED);
    /* Altered: a byte of the ciphertext changed. */
    uint8_t *altered = malloc(got.lens[0]);
    memcpy(altered, got.records[0], got.lens[0]);
    altered[SYNC_RECORD_HEADER_LEN + 5] ^= 1;
    expect_refused(&b, altered, got.lens[0], SYNC_REASON_ALTERED);
    /* Truncated. */
    expect_refused(&b, got.records[0], got.lens[0] - 1, SYNC_REASON_MALFORMED);
    /* Forged: the signature changed. */
    memcpy(altered, got.records[0], got.lens[0]);
    altered[got.lens[0] - 1] ^= 1;
    expect_refused(&b, altered, got.lens[0], SYNC_REASON_FORGED);
    free(altered);
    /* Nothing of that was kept or applied: the honest record still goes through. */
    CHECK_INT(0, accept(&b, got.records[0], got.lens[0], NULL));
    give_chunks(&b, &a);
    check_content(&b.peer, "f0.txt", "version 0\n");

    node_init(&outsider, "mallory");
    write_text(&outsider.peer, "x.txt", "other share\n");
    CHECK_INT(0, sync_device_seal(outsider.device, NULL));
    struct copied theirs = {0};
    records_of(&theirs, &outsider, replica_of(&outsider), 1);
    /* Not a member of the share: its record is refused (peer_init shares the id and key). */
    expect_refused(&b, theirs.records[0], theirs.lens[0], SYNC_REASON_UNKNOWN_AUTHOR);
    /* Another share: the share id differs. */
    theirs.records[0][2] ^= 0xff;
    expect_refused(&b, theirs.records[0], theirs.lens[0], SYNC_REASON_WRONG_SHARE);
    copied_free(&theirs);

    /* Equivocation: A (or whoever holds its key) signs another record 2. */
    struct sync_seal seal = {0};
    uint8_t share_id[SYNC_SHARE_ID_LEN], secret[SYNC_SECRET_KEY_LEN], key[SYNC_KEY_LEN];
    struct meta_store *astore = meta_replica_store(a.peer.replica);
    meta_store_share_id(share_id, astore);
    meta_store_secret_key(secret, astore);
    CHECK_INT(0, meta_store_derive_key(key, astore, "seal epoch 0"));
    seal.share_id = share_id;
    seal.key = key;
    seal.author = replica_of(&a);
    seal.secret_key = secret;
    uint8_t prev[SYNC_HASH_LEN];
    sync_record_hash(prev, got.records[0], got.lens[0]);
    uint8_t body[] = {1, 2, 3};
    struct sync_op op = {.replica = seal.author,
                         .seq = 2,
                         .counter = 99,
                         .kind = 2,
                         .author = seal.author,
                         .body = body,
                         .body_len = sizeof(body)};
    struct crdt_buf fork = {0};
    uint8_t fork_hash[SYNC_HASH_LEN];
    CHECK_INT(0, sync_record_seal_ops(&fork, fork_hash, &seal, 2, prev, &op, 1));
    CHECK_INT(0, accept(&b, got.records[1], got.lens[1], NULL));
    expect_refused(&b, fork.data, fork.len, SYNC_REASON_FORK);
    crdt_buf_free(&fork);
    sodium_memzero(secret, sizeof(secret));

    /* Replayed: an old record again is a harmless duplicate; then the last goes through. */
    CHECK_INT(0, accept(&b, got.records[0], got.lens[0], NULL));
    CHECK_INT(0, accept(&b, got.records[2], got.lens[2], NULL));
    give_chunks(&b, &a);
    check_content(&b.peer, "f2.txt", "version 2\n");
    struct sync_device_stats stats;
    sync_device_stats(&stats, b.device);
    CHECK_INT(1, stats.refused[SYNC_REASON_FORK]);
    CHECK_INT(1, stats.refused[SYNC_REASON_DROPPED]);
    copied_free(&got);
    node_free(&outsider);
    node_free(&a);
    node_free(&b);
}

/* Removal with key rotation: the removed device opens nothing sealed after. */
static void test_removal(void)
{
    struct node a, b, c;
    node_init(&a, "alpha");
    node_init(&b, "beta");
    node_init(&c, "gamma");
    introduce(&a.peer, &b.peer);
    introduce(&a.peer, &c.peer);
    introduce(&b.peer, &c.peer);
    write_text(&a.peer, "before.txt", "everyone reads this\n");
    CHECK_INT(0, sync_device_seal(a.device, NULL));
    deliver(&c, &a, replica_of(&a));
    check_content(&c.peer, "before.txt", "everyone reads this\n");

    uint8_t c_key[SYNC_PUBLIC_KEY_LEN];
    meta_store_public_key(c_key, meta_replica_store(c.peer.replica));
    CHECK_INT(0, meta_replica_remove_device(a.peer.replica, c_key));
    CHECK_INT(-EALREADY, meta_replica_remove_device(a.peer.replica, c_key));
    write_text(&a.peer, "after.txt", "not for c\n");
    CHECK_INT(0, sync_device_seal(a.device, NULL));

    /* B learns the new key from the removal and reads on. */
    deliver(&b, &a, replica_of(&a));
    check_content(&b.peer, "after.txt", "not for c\n");
    CHECK_INT(1, meta_store_epoch(meta_replica_store(b.peer.replica)));
    write_text(&b.peer, "b-after.txt", "epoch 1\n");
    CHECK_INT(0, sync_device_seal(b.device, NULL));
    deliver(&a, &b, replica_of(&b));
    check_content(&a.peer, "b-after.txt", "epoch 1\n");

    /* C takes the removal (sealed under the old key) but opens nothing after it. */
    struct copied got = {0};
    records_of(&got, &a, replica_of(&a), 2);
    CHECK(got.len >= 2);
    CHECK_INT(0, accept(&c, got.records[0], got.lens[0], NULL));
    expect_refused(&c, got.records[1], got.lens[1], SYNC_REASON_UNKNOWN_EPOCH);
    copied_free(&got);
    records_of(&got, &b, replica_of(&b), 1);
    for (size_t i = 0; i < got.len; i++)
        expect_refused(&c, got.records[i], got.lens[i], SYNC_REASON_UNKNOWN_EPOCH);
    copied_free(&got);
    uint64_t ino;
    CHECK(meta_replica_resolve(&ino, c.peer.replica, "after.txt") != 0);
    CHECK_INT(0, meta_store_epoch(meta_replica_store(c.peer.replica)));
    node_free(&a);
    node_free(&b);
    node_free(&c);
}

int main(void)
{
    CHECK_INT(0, sync_init());
    test_converge();
    test_attacks();
    test_removal();
    return test_finish("sync-device");
}
