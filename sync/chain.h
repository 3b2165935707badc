/*
 * sync/chain: the verifier of one author's record chain in one share.
 *
 * It is fed op records of its author in the order a source delivers them
 * and accepts exactly the author's chain, in order, once: record seq h + 1
 * whose prev is the hash of the record it accepted last (h). Everything else
 * is refused with a reason, and refusing changes nothing, so honest records
 * delivered after an attack are still accepted. Per record, in this order:
 *
 *   - sync_record_open's refusals: malformed, version, wrong share, unknown
 *     epoch, unknown author / forged (bad signature), altered (bad tag);
 *   - seq <= h: REPLAYED if its hash is the one accepted at that seq, FORK
 *     (equivocation: the author signed two records for one seq) if not;
 *   - seq == h + 1 but prev is not the hash of record h: FORK (the author
 *     signed a record on another branch);
 *   - seq > h + 1: DROPPED: records between are missing;
 *   - seq == h + 1 after a record with a higher seq came in the same
 *     delivery: REORDERED. A gap alone cannot tell a drop from a reorder;
 *     the late record does. The caller marks the start of each delivery
 *     (each request to a source) with sync_chain_rewind, so re-requesting
 *     after a gap is not mistaken for reordering. A REORDERED refusal ends
 *     the delivery too, so the record is accepted when it comes again.
 *
 * Rollback: a source's HEADS claim (seq, hash) goes through
 * sync_chain_check_head. An honest source only ever gains records, so a
 * source that offers a lower head than it offered before (to this verifier)
 * rolled back: ROLLBACK. A claimed hash that differs from the verified one
 * at that seq is FORK (the author equivocated or the source lies). A source
 * that is merely behind the chain is fine: a peer may not have synced yet.
 *
 * The verifier remembers the hash of every record it accepted (32 bytes
 * each) since its base, so replays and forks are told apart for all of
 * them; a record older than the base (the persisted head it started from)
 * is refused as REPLAYED, since it was applied before but its hash is gone.
 * Not thread-safe.
 */
#ifndef WEFT_SYNC_CHAIN_H
#define WEFT_SYNC_CHAIN_H

#include "sync/record.h"

#include <stdint.h>

struct sync_chain;

/* Counters for `weft status`: what a chain accepted and refused, by reason. */
struct sync_chain_stats {
    uint64_t accepted;
    uint64_t refused[SYNC_REASON_COUNT];
};

/*
 * A verifier for `author`'s op records in `share` (kept by pointer: it must
 * outlive the chain; its keys and members may change between calls). It
 * starts after the author's record head_seq with hash head_hash (0 and NULL
 * for the start of the chain). *out is the caller's (sync_chain_free).
 * -EINVAL, -ENOMEM.
 */
SYNC_MUST_CHECK int sync_chain_new(struct sync_chain **out, const struct sync_share *share,
                                   uint64_t author, uint64_t head_seq,
                                   const uint8_t head_hash[SYNC_HASH_LEN]);
/* Frees a verifier; NULL is fine. */
void sync_chain_free(struct sync_chain *chain);
/*
 * Opens bytes[0..len) and accepts it if it is the next record of the chain
 * (see top). On acceptance *out owns the opened record (sync_record_clear).
 * On refusal *out is zeroed, *reason (may be NULL) says why, the return is
 * sync_reason_errno(reason), and the chain is unchanged. -EINVAL (reason
 * NONE) if the record is genuine but of another author or not an op record:
 * the caller routed it wrongly. -ENOMEM.
 */
SYNC_MUST_CHECK int sync_chain_accept(struct sync_record *out, enum sync_reason *reason,
                                      struct sync_chain *chain, const uint8_t *bytes, size_t len);
/* Marks the start of a new delivery (a new request to a source); see REORDERED above. */
void sync_chain_rewind(struct sync_chain *chain);
/*
 * Checks a claim by `source` (the caller's id for a peer or relay) that its
 * head of this chain is (seq, hash); hash is ignored for seq 0. 0 and the
 * claim is remembered as the source's floor, or FORK / ROLLBACK (see top)
 * with *reason (may be NULL) set and the reason's errno returned. -ENOMEM.
 */
SYNC_MUST_CHECK int sync_chain_check_head(enum sync_reason *reason, struct sync_chain *chain,
                                          uint64_t source, uint64_t seq,
                                          const uint8_t hash[SYNC_HASH_LEN]);
/* The seq of the last accepted record (or the base), and its hash into hash_out (may be NULL). */
uint64_t sync_chain_head(uint8_t hash_out[SYNC_HASH_LEN], const struct sync_chain *chain);
/* The author this chain verifies. */
uint64_t sync_chain_author(const struct sync_chain *chain);
/* The last refusal in words, with seqs ("" if none); valid until the next call. */
const char *sync_chain_errmsg(const struct sync_chain *chain);
/* Copies the counters. */
void sync_chain_stats(struct sync_chain_stats *out, const struct sync_chain *chain);

#endif
