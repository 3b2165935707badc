/*
 * Property test for sync/chain. Each seeded scenario has two authors with
 * honest chains of random length (random op batches, a key rotation from
 * epoch 1 to 2 somewhere), delivered to one verifier per author, with random
 * attacks interleaved: replays, drops (with or without a new delivery
 * after), reorderings, changed bytes, forgeries (non-member, bad signature,
 * removed member), forks, another share's records, unknown epochs, and
 * head claims (honest, rolled back, lying). It checks that every honest
 * record is accepted exactly once and in order with its ops intact, and that
 * every attack is refused with exactly the reason a model predicts.
 *
 * Usage: test-sync-chain-prop [SCENARIOS] [FIRST_SEED]; WEFT_SEED=S runs one seed verbosely.
 */
#include "sync/chain.h"
#include "sync_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>

#define AUTHORS     2
#define MAX_RECORDS 24
#define SOURCES     3

enum attack {
    ATTACK_REPLAY,
    ATTACK_DROP,        /* a later record early, then a new delivery */
    ATTACK_REORDER,     /* a later record early, then the next one in the same delivery */
    ATTACK_ALTER,       /* one byte of the next record changed */
    ATTACK_FORGE,       /* share key holder signs as the author with another key */
    ATTACK_NON_MEMBER,  /* a device that is not a member */
    ATTACK_REMOVED,     /* a member removed at epoch 2 writes under epoch 2 */
    ATTACK_FORK_OLD,    /* the author signs a second record for an accepted seq */
    ATTACK_FORK_NEXT,   /* the author signs a next record on another branch */
    ATTACK_OTHER_SHARE, /* the author's record of another share */
    ATTACK_EPOCH,       /* sealed under an epoch the reader lacks */
    ATTACK_HEADS,       /* a source's head claim: honest, rolled back or lying */
    ATTACK_COUNT
};

static const char *attack_names[ATTACK_COUNT] = {
    "replay",  "drop",     "reorder",   "alter",       "forge", "non-member",
    "removed", "fork-old", "fork-next", "other-share", "epoch", "heads",
};

struct author {
    struct sync_identity id;
    uint64_t replica;
    size_t records; /* honest chain length */
    struct crdt_buf bytes[MAX_RECORDS + 1];
    uint8_t hash[MAX_RECORDS + 1][SYNC_HASH_LEN];
    uint64_t first_op[MAX_RECORDS + 2]; /* op seq of each record's first op */
    uint32_t epoch[MAX_RECORDS + 1];
    struct sync_chain *chain;
    /* The model. */
    uint64_t head;
    bool ahead;              /* a later record came in the current delivery */
    uint64_t floor[SOURCES]; /* highest head each source claimed */
    uint8_t floor_hash[SOURCES][SYNC_HASH_LEN];
};

struct scenario {
    uint64_t seed, rng;
    bool verbose;
    bool failed;
    struct util_share share, other;
    struct sync_identity mallory, removed;
    struct author authors[AUTHORS];
    int attacks[ATTACK_COUNT];
};

#define FAIL(s, ...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "seed %" PRIu64 ": ", (s)->seed);                                          \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        (s)->failed = true;                                                                        \
    } while (0)

/* Seals record `seq` of `a` with random ops (salted), chained after `prev`, under `epoch`. */
static void seal_record(struct scenario *s, struct crdt_buf *out, uint8_t hash[SYNC_HASH_LEN],
                        const struct util_share *share, const struct sync_identity *author,
                        uint64_t seq, const uint8_t *prev, uint64_t first_op, size_t op_count,
                        uint32_t epoch)
{
    struct sync_op ops[6];
    uint8_t bodies[6 * 64];
    util_ops(ops, bodies, op_count, sync_replica_id(author->public_key), first_op, &s->rng);
    struct sync_seal seal = util_seal(share, author, epoch, NULL);
    if (sync_record_seal_ops(out, hash, &seal, seq, seq == 1 ? NULL : prev, ops, op_count) != 0)
        abort();
}

static void scenario_init(struct scenario *s, uint64_t seed, bool verbose)
{
    memset(s, 0, sizeof(*s));
    s->seed = seed;
    s->verbose = verbose;
    s->rng = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    util_share_init(&s->share, 0x5a);
    util_share_init(&s->other, 0x6b);
    util_identity(&s->mallory, 0xee);
    util_identity(&s->removed, 0xdd);
    for (int i = 0; i < AUTHORS; i++) {
        struct author *a = &s->authors[i];
        util_identity(&a->id, (uint8_t)(0x10 + i));
        a->replica = sync_replica_id(a->id.public_key);
        util_member_add(&s->share.members, &a->id, 0);
        util_member_add(&s->other.members, &a->id, 0);
    }
    util_member_add(&s->share.members, &s->removed, 2);
    for (int i = 0; i < AUTHORS; i++) {
        struct author *a = &s->authors[i];
        a->records = 4 + (size_t)test_rand_below(&s->rng, MAX_RECORDS - 3);
        size_t rotate = 1 + (size_t)test_rand_below(&s->rng, a->records + 1);
        a->first_op[1] = 1;
        for (uint64_t seq = 1; seq <= a->records; seq++) {
            size_t ops = 1 + (size_t)test_rand_below(&s->rng, 5);
            a->epoch[seq] = seq < rotate ? 1 : 2;
            seal_record(s, &a->bytes[seq], a->hash[seq], &s->share, &a->id, seq, a->hash[seq - 1],
                        a->first_op[seq], ops, a->epoch[seq]);
            a->first_op[seq + 1] = a->first_op[seq] + ops;
        }
        if (sync_chain_new(&a->chain, &s->share.share, a->replica, 0, NULL) != 0)
            abort();
    }
}

static void scenario_free(struct scenario *s)
{
    for (int i = 0; i < AUTHORS; i++) {
        for (size_t seq = 1; seq <= MAX_RECORDS; seq++)
            crdt_buf_free(&s->authors[i].bytes[seq]);
        sync_chain_free(s->authors[i].chain);
    }
}

/* Offers bytes to a's verifier and checks the verdict against the model's. */
static void offer(struct scenario *s, struct author *a, const uint8_t *bytes, size_t len,
                  enum sync_reason expected, const char *what)
{
    struct sync_record record;
    enum sync_reason reason = SYNC_REASON_NONE;
    int rc = sync_chain_accept(&record, &reason, a->chain, bytes, len);
    if (s->verbose)
        printf("  author %d head %" PRIu64 ": %-12s -> %s\n", (int)(a - s->authors), a->head, what,
               sync_reason_str(reason));
    if (reason != expected || rc != sync_reason_errno(expected)) {
        FAIL(s, "author %d at head %" PRIu64 ", %s: expected %s, got %s (%d): %s",
             (int)(a - s->authors), a->head, what, sync_reason_str(expected),
             sync_reason_str(reason), rc, sync_chain_errmsg(a->chain));
    } else if (rc == 0) {
        /* Accepted: exactly the honest next record, ops intact. */
        uint64_t seq = record.header.seq;
        if (seq != a->head + 1 || memcmp(record.hash, a->hash[seq], SYNC_HASH_LEN) != 0 ||
            record.op_count != a->first_op[seq + 1] - a->first_op[seq] ||
            record.ops[0].seq != a->first_op[seq] || record.ops[0].replica != a->replica)
            FAIL(s, "author %d accepted the wrong record (seq %" PRIu64 ")", (int)(a - s->authors),
                 seq);
        a->head = seq;
    }
    sync_record_clear(&record);
    if (sync_chain_head(NULL, a->chain) != a->head)
        FAIL(s, "author %d: chain head %" PRIu64 ", model %" PRIu64, (int)(a - s->authors),
             sync_chain_head(NULL, a->chain), a->head);
}

/* The honest next record of a, with the model's verdict. */
static void deliver_next(struct scenario *s, struct author *a)
{
    uint64_t seq = a->head + 1;
    if (a->ahead) {
        /* A later record already came in this delivery. */
        offer(s, a, a->bytes[seq].data, a->bytes[seq].len, SYNC_REASON_REORDERED, "honest-late");
        a->ahead = false;
        return;
    }
    offer(s, a, a->bytes[seq].data, a->bytes[seq].len, SYNC_REASON_NONE, "honest");
}

static void attack(struct scenario *s, struct author *a, enum attack kind)
{
    uint64_t next = a->head + 1;
    bool has_next = next <= a->records;
    struct crdt_buf buf = {0};
    s->attacks[kind]++;
    switch (kind) {
    case ATTACK_REPLAY:
        if (a->head == 0)
            break;
        {
            uint64_t seq = 1 + test_rand_below(&s->rng, a->head);
            offer(s, a, a->bytes[seq].data, a->bytes[seq].len, SYNC_REASON_REPLAYED, "replay");
        }
        break;
    case ATTACK_DROP:
    case ATTACK_REORDER:
        if (next + 1 > a->records)
            break;
        {
            uint64_t seq = next + 1 + test_rand_below(&s->rng, a->records - next);
            offer(s, a, a->bytes[seq].data, a->bytes[seq].len, SYNC_REASON_DROPPED, "early");
            a->ahead = true;
            if (kind == ATTACK_DROP) {
                /* The syncer sees the gap and asks the source again: a new delivery. */
                sync_chain_rewind(a->chain);
                a->ahead = false;
            } else {
                deliver_next(s, a);
            }
        }
        break;
    case ATTACK_ALTER:
        if (!has_next)
            break;
        {
            crdt_buf_put(&buf, a->bytes[next].data, a->bytes[next].len);
            size_t offset = (size_t)test_rand_below(&s->rng, buf.len);
            uint8_t mask = (uint8_t)(1 + test_rand_below(&s->rng, 255));
            buf.data[offset] ^= mask;
            enum sync_reason expected =
                util_flip_verdict(a->bytes[next].data, buf.len, offset, mask, &s->share.share);
            offer(s, a, buf.data, buf.len, expected, "alter");
        }
        break;
    case ATTACK_FORGE:
    case ATTACK_NON_MEMBER: {
        uint8_t plain[] = {1, 1, 1, 1, [20] = 0};
        plain[0] = (uint8_t)(a->first_op[next] & 0x7f);
        plain[0] = plain[0] ? plain[0] : 1;
        uint64_t claimed =
            kind == ATTACK_FORGE ? a->replica : sync_replica_id(s->mallory.public_key);
        util_forge(&buf, SYNC_RECORD_OPS, s->share.share.id, claimed, next, 1,
                   next == 1 ? NULL : a->hash[next - 1], s->share.keys[0].key, &s->mallory, plain,
                   sizeof(plain));
        offer(s, a, buf.data, buf.len,
              kind == ATTACK_FORGE ? SYNC_REASON_FORGED : SYNC_REASON_UNKNOWN_AUTHOR,
              attack_names[kind]);
        break;
    }
    case ATTACK_REMOVED:
        seal_record(s, &buf, NULL, &s->share, &s->removed, 1, NULL, 1, 1, 2);
        offer(s, a, buf.data, buf.len, SYNC_REASON_UNKNOWN_AUTHOR, "removed");
        break;
    case ATTACK_FORK_OLD:
        if (a->head == 0)
            break;
        {
            uint64_t seq = 1 + test_rand_below(&s->rng, a->head);
            seal_record(s, &buf, NULL, &s->share, &a->id, seq, a->hash[seq - 1], a->first_op[seq],
                        1 + (size_t)test_rand_below(&s->rng, 3), a->epoch[seq]);
            offer(s, a, buf.data, buf.len, SYNC_REASON_FORK, "fork-old");
        }
        break;
    case ATTACK_FORK_NEXT:
        if (a->head == 0 || !has_next)
            break;
        {
            /* A record next on another branch: its prev is some other hash. */
            uint8_t other_prev[SYNC_HASH_LEN];
            memcpy(other_prev, a->hash[a->head], SYNC_HASH_LEN);
            other_prev[test_rand_below(&s->rng, SYNC_HASH_LEN)] ^= 0x40;
            seal_record(s, &buf, NULL, &s->share, &a->id, next, other_prev, a->first_op[next], 2,
                        a->epoch[next]);
            offer(s, a, buf.data, buf.len, SYNC_REASON_FORK, "fork-next");
        }
        break;
    case ATTACK_OTHER_SHARE:
        if (!has_next)
            break;
        seal_record(s, &buf, NULL, &s->other, &a->id, next, a->hash[next - 1], a->first_op[next], 2,
                    1);
        offer(s, a, buf.data, buf.len, SYNC_REASON_WRONG_SHARE, "other-share");
        break;
    case ATTACK_EPOCH:
        if (!has_next)
            break;
        seal_record(s, &buf, NULL, &s->share, &a->id, next, a->hash[next - 1], a->first_op[next], 2,
                    3 + (uint32_t)test_rand_below(&s->rng, 5));
        offer(s, a, buf.data, buf.len, SYNC_REASON_UNKNOWN_EPOCH, "epoch");
        break;
    case ATTACK_HEADS: {
        int source = (int)test_rand_below(&s->rng, SOURCES);
        uint64_t seq = test_rand_below(&s->rng, a->records + 1);
        bool lie = seq > 0 && test_rand_below(&s->rng, 4) == 0;
        uint8_t hash[SYNC_HASH_LEN];
        memcpy(hash, a->hash[seq], SYNC_HASH_LEN);
        if (lie)
            hash[0] ^= 1;
        /* The model: a lie about a verified record, a story changed, or a step back. */
        enum sync_reason expected = SYNC_REASON_NONE;
        bool floor_lied = a->floor[source] &&
                          memcmp(a->floor_hash[source], a->hash[a->floor[source]], SYNC_HASH_LEN);
        if (lie && seq <= a->head)
            expected = SYNC_REASON_FORK;
        else if (seq < a->floor[source])
            expected = SYNC_REASON_ROLLBACK;
        else if (seq == a->floor[source] && seq &&
                 memcmp(a->floor_hash[source], hash, SYNC_HASH_LEN) != 0)
            expected = SYNC_REASON_FORK;
        else if (floor_lied && a->floor[source] <= a->head)
            expected = SYNC_REASON_FORK;
        enum sync_reason reason;
        int rc = sync_chain_check_head(&reason, a->chain, (uint64_t)source, seq, seq ? hash : NULL);
        if (s->verbose)
            printf("  author %d head %" PRIu64 ": source %d claims %" PRIu64 "%s -> %s\n",
                   (int)(a - s->authors), a->head, source, seq, lie ? " (lie)" : "",
                   sync_reason_str(reason));
        if (reason != expected || rc != sync_reason_errno(expected))
            FAIL(s, "author %d: source %d claims %" PRIu64 "%s: expected %s, got %s: %s",
                 (int)(a - s->authors), source, seq, lie ? " (lie)" : "", sync_reason_str(expected),
                 sync_reason_str(reason), sync_chain_errmsg(a->chain));
        if (expected == SYNC_REASON_NONE) {
            a->floor[source] = seq;
            memcpy(a->floor_hash[source], hash, SYNC_HASH_LEN);
        }
        break;
    }
    case ATTACK_COUNT:
        break;
    }
    crdt_buf_free(&buf);
}

static bool run_scenario(uint64_t seed, bool verbose, int counts[ATTACK_COUNT])
{
    static struct scenario scenario;
    struct scenario *s = &scenario;
    scenario_init(s, seed, verbose);
    /* Interleave until every author's honest chain is through (bounded). */
    for (int step = 0; step < 2000 && !s->failed; step++) {
        bool done = true;
        for (int i = 0; i < AUTHORS; i++)
            done = done && s->authors[i].head == s->authors[i].records;
        if (done)
            break;
        struct author *a = &s->authors[test_rand_below(&s->rng, AUTHORS)];
        if (test_rand_below(&s->rng, 3) == 0) {
            attack(s, a, (enum attack)test_rand_below(&s->rng, ATTACK_COUNT));
        } else if (a->head < a->records) {
            deliver_next(s, a);
        }
    }
    for (int i = 0; i < AUTHORS && !s->failed; i++) {
        struct author *a = &s->authors[i];
        uint8_t hash[SYNC_HASH_LEN];
        if (sync_chain_head(hash, a->chain) != a->records ||
            memcmp(hash, a->hash[a->records], SYNC_HASH_LEN) != 0)
            FAIL(s, "author %d: honest chain not fully accepted (%" PRIu64 " of %zu)", i,
                 sync_chain_head(NULL, a->chain), a->records);
        struct sync_chain_stats stats;
        sync_chain_stats(&stats, a->chain);
        if (stats.accepted != a->records)
            FAIL(s, "author %d: %" PRIu64 " accepted, %zu honest", i, stats.accepted, a->records);
    }
    for (int k = 0; k < ATTACK_COUNT; k++)
        counts[k] += s->attacks[k];
    bool ok = !s->failed;
    scenario_free(s);
    if (!ok && !verbose)
        fprintf(stderr, "replay: WEFT_SEED=%" PRIu64 " build/tests/sync/test-sync-chain-prop\n",
                seed);
    return ok;
}

int main(int argc, char **argv)
{
    if (sync_init() != 0)
        return 1;
    int counts[ATTACK_COUNT] = {0};
    const char *one = getenv("WEFT_SEED");
    if (one) {
        bool ok = run_scenario(strtoull(one, NULL, 10), true, counts);
        printf("seed %s: %s\n", one, ok ? "ok" : "FAILED");
        return ok ? 0 : 1;
    }
    uint64_t scenarios = argc > 1 ? strtoull(argv[1], NULL, 10) : 150;
    uint64_t first = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    uint64_t failures = 0;
    for (uint64_t seed = first; seed < first + scenarios; seed++)
        if (!run_scenario(seed, false, counts) && ++failures >= 5)
            break;
    printf("chain property test: %" PRIu64 " scenarios from seed %" PRIu64 ", %" PRIu64
           " failed; attacks:",
           scenarios, first, failures);
    for (int k = 0; k < ATTACK_COUNT; k++)
        printf(" %s %d", attack_names[k], counts[k]);
    printf("\n");
    return failures ? 1 : 0;
}
