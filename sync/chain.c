/* sync/chain: see chain.h. */
#include "chain.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The highest head a source has claimed, and its hash. */
struct source_floor {
    uint64_t source;
    uint64_t seq;
    uint8_t hash[SYNC_HASH_LEN];
};

struct sync_chain {
    const struct sync_share *share;
    uint64_t author;
    /* The chain is verified up to head_seq; before base_seq only base_hash is known. */
    uint64_t base_seq;
    uint8_t base_hash[SYNC_HASH_LEN];
    uint64_t head_seq;
    /* Invariant: hashes[i] is the hash of accepted record base_seq + 1 + i; len = head - base. */
    uint8_t (*hashes)[SYNC_HASH_LEN];
    size_t hash_len, hash_cap;
    /* Highest seq > head + 1 seen since the delivery started (0: none): a later record came. */
    uint64_t ahead_max;
    struct source_floor *floors;
    size_t floor_len, floor_cap;
    struct sync_chain_stats stats;
    char errmsg[256];
};

static const uint8_t zero_hash[SYNC_HASH_LEN];

int sync_chain_new(struct sync_chain **out, const struct sync_share *share, uint64_t author,
                   uint64_t head_seq, const uint8_t head_hash[SYNC_HASH_LEN])
{
    *out = NULL;
    if (!share || (head_seq > 0) != (head_hash != NULL))
        return -EINVAL;
    struct sync_chain *chain = calloc(1, sizeof(*chain));
    if (!chain)
        return -ENOMEM;
    chain->share = share;
    chain->author = author;
    chain->base_seq = head_seq;
    chain->head_seq = head_seq;
    if (head_hash)
        memcpy(chain->base_hash, head_hash, SYNC_HASH_LEN);
    *out = chain;
    return 0;
}

void sync_chain_free(struct sync_chain *chain)
{
    if (!chain)
        return;
    free(chain->hashes);
    free(chain->floors);
    free(chain);
}

/* The verified hash of record `seq`, or NULL if unknown (before the base, or not yet verified). */
static const uint8_t *hash_at(const struct sync_chain *chain, uint64_t seq)
{
    if (seq == chain->base_seq)
        return chain->base_seq ? chain->base_hash : zero_hash;
    if (seq < chain->base_seq || seq > chain->head_seq)
        return NULL;
    return chain->hashes[seq - chain->base_seq - 1];
}

static int push_hash(struct sync_chain *chain, const uint8_t hash[SYNC_HASH_LEN])
{
    if (chain->hash_len == chain->hash_cap) {
        size_t cap = chain->hash_cap ? chain->hash_cap * 2 : 64;
        if (cap > SIZE_MAX / SYNC_HASH_LEN)
            return -ENOMEM;
        void *grown = realloc(chain->hashes, cap * SYNC_HASH_LEN);
        if (!grown)
            return -ENOMEM;
        chain->hashes = grown;
        chain->hash_cap = cap;
    }
    memcpy(chain->hashes[chain->hash_len++], hash, SYNC_HASH_LEN);
    return 0;
}

static int chain_refuse(struct sync_chain *chain, enum sync_reason *reason_out,
                        enum sync_reason reason, uint64_t seq, const char *detail)
{
    if (reason_out)
        *reason_out = reason;
    chain->stats.refused[reason]++;
    snprintf(chain->errmsg, sizeof(chain->errmsg),
             "author %016" PRIx64 ": record seq %" PRIu64 " refused (chain head %" PRIu64
             "): %s%s%s",
             chain->author, seq, chain->head_seq, sync_reason_str(reason), detail ? ": " : "",
             detail ? detail : "");
    return sync_reason_errno(reason);
}

int sync_chain_accept(struct sync_record *out, enum sync_reason *reason_out,
                      struct sync_chain *chain, const uint8_t *bytes, size_t len)
{
    if (reason_out)
        *reason_out = SYNC_REASON_NONE;
    struct sync_record record;
    enum sync_reason reason = SYNC_REASON_NONE;
    int rc = sync_record_open(&record, &reason, chain->share, bytes, len);
    memset(out, 0, sizeof(*out));
    if (rc) {
        if (reason == SYNC_REASON_NONE)
            return rc; /* -ENOMEM: not a verdict on the record */
        struct sync_record_header header;
        uint64_t seq = sync_record_peek(&header, bytes, len) == 0 ? header.seq : 0;
        return chain_refuse(chain, reason_out, reason, seq, NULL);
    }
    if (record.header.kind != SYNC_RECORD_OPS || record.header.author != chain->author) {
        sync_record_clear(&record);
        return -EINVAL;
    }

    uint64_t seq = record.header.seq;
    uint8_t hash[SYNC_HASH_LEN];
    memcpy(hash, record.hash, SYNC_HASH_LEN);
    if (seq <= chain->head_seq) {
        const uint8_t *known = hash_at(chain, seq);
        sync_record_clear(&record);
        if (!known)
            return chain_refuse(chain, reason_out, SYNC_REASON_REPLAYED, seq,
                                "older than this verifier's base, so its hash is not kept");
        if (memcmp(known, hash, SYNC_HASH_LEN) == 0)
            return chain_refuse(chain, reason_out, SYNC_REASON_REPLAYED, seq, NULL);
        return chain_refuse(chain, reason_out, SYNC_REASON_FORK, seq,
                            "the author signed another record for this seq");
    }
    if (seq > chain->head_seq + 1) {
        sync_record_clear(&record);
        if (seq > chain->ahead_max)
            chain->ahead_max = seq;
        char detail[64];
        snprintf(detail, sizeof(detail), "expected seq %" PRIu64, chain->head_seq + 1);
        return chain_refuse(chain, reason_out, SYNC_REASON_DROPPED, seq, detail);
    }
    /* seq == head + 1 */
    if (memcmp(record.header.prev, hash_at(chain, chain->head_seq), SYNC_HASH_LEN) != 0) {
        sync_record_clear(&record);
        return chain_refuse(chain, reason_out, SYNC_REASON_FORK, seq,
                            "its predecessor is not the verified record");
    }
    if (chain->ahead_max) {
        /* ahead_max > seq: a later record of this delivery came first. The delivery ends here. */
        char detail[64];
        snprintf(detail, sizeof(detail), "after seq %" PRIu64, chain->ahead_max);
        chain->ahead_max = 0;
        sync_record_clear(&record);
        return chain_refuse(chain, reason_out, SYNC_REASON_REORDERED, seq, detail);
    }
    rc = push_hash(chain, hash);
    if (rc) {
        sync_record_clear(&record);
        return rc;
    }
    chain->head_seq = seq;
    chain->stats.accepted++;
    *out = record;
    return 0;
}

void sync_chain_rewind(struct sync_chain *chain)
{
    chain->ahead_max = 0;
}

static struct source_floor *find_floor(struct sync_chain *chain, uint64_t source)
{
    for (size_t i = 0; i < chain->floor_len; i++)
        if (chain->floors[i].source == source)
            return &chain->floors[i];
    return NULL;
}

static int head_refuse(struct sync_chain *chain, enum sync_reason *reason_out,
                       enum sync_reason reason, uint64_t source, uint64_t seq, const char *detail)
{
    if (reason_out)
        *reason_out = reason;
    chain->stats.refused[reason]++;
    snprintf(chain->errmsg, sizeof(chain->errmsg),
             "author %016" PRIx64 ": source %016" PRIx64 " claims head %" PRIu64
             " (verified head %" PRIu64 "): %s: %s",
             chain->author, source, seq, chain->head_seq, sync_reason_str(reason), detail);
    return sync_reason_errno(reason);
}

int sync_chain_check_head(enum sync_reason *reason_out, struct sync_chain *chain, uint64_t source,
                          uint64_t seq, const uint8_t hash[SYNC_HASH_LEN])
{
    if (reason_out)
        *reason_out = SYNC_REASON_NONE;
    if (seq > 0 && !hash)
        return -EINVAL;
    if (seq == 0)
        hash = zero_hash;
    const uint8_t *known = seq ? hash_at(chain, seq) : NULL;
    if (known && memcmp(known, hash, SYNC_HASH_LEN) != 0)
        return head_refuse(chain, reason_out, SYNC_REASON_FORK, source, seq,
                           "its hash differs from the verified record's");
    struct source_floor *floor = find_floor(chain, source);
    if (floor) {
        if (seq < floor->seq) {
            char detail[80];
            snprintf(detail, sizeof(detail), "it offered head %" PRIu64 " before", floor->seq);
            return head_refuse(chain, reason_out, SYNC_REASON_ROLLBACK, source, seq, detail);
        }
        if (seq == floor->seq && memcmp(floor->hash, hash, SYNC_HASH_LEN) != 0)
            return head_refuse(chain, reason_out, SYNC_REASON_FORK, source, seq,
                               "it offered another hash for this seq before");
        /* A claim made when it was ahead of us, which the chain has since contradicted. */
        const uint8_t *then = floor->seq ? hash_at(chain, floor->seq) : NULL;
        if (then && memcmp(then, floor->hash, SYNC_HASH_LEN) != 0)
            return head_refuse(chain, reason_out, SYNC_REASON_FORK, source, floor->seq,
                               "an earlier claim differs from the verified record");
        floor->seq = seq;
        memcpy(floor->hash, hash, SYNC_HASH_LEN);
        return 0;
    }
    if (chain->floor_len == chain->floor_cap) {
        size_t cap = chain->floor_cap ? chain->floor_cap * 2 : 4;
        struct source_floor *grown = realloc(chain->floors, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        chain->floors = grown;
        chain->floor_cap = cap;
    }
    floor = &chain->floors[chain->floor_len++];
    floor->source = source;
    floor->seq = seq;
    memcpy(floor->hash, hash, SYNC_HASH_LEN);
    return 0;
}

uint64_t sync_chain_head(uint8_t hash_out[SYNC_HASH_LEN], const struct sync_chain *chain)
{
    if (hash_out)
        memcpy(hash_out, hash_at(chain, chain->head_seq), SYNC_HASH_LEN);
    return chain->head_seq;
}

uint64_t sync_chain_author(const struct sync_chain *chain)
{
    return chain->author;
}

const char *sync_chain_errmsg(const struct sync_chain *chain)
{
    return chain->errmsg;
}

void sync_chain_stats(struct sync_chain_stats *out, const struct sync_chain *chain)
{
    *out = chain->stats;
}
