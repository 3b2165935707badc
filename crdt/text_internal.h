/*
 * crdt/text_internal.h: the document's data structures, shared by the
 * text_*.c files and by no one else.
 *
 * Every character gets a local version (lv): its index in the order this
 * replica integrated it (0, 1, 2, ...). Internally everything is keyed by lv;
 * ids (replica, counter) are only translated at the edges (ops, encodings).
 *
 * - log: one entry per run of characters inserted as one continuing run
 *   (same replica, consecutive counters and lvs, each char's left origin the
 *   char before it, one right origin), in lv order. Holds origins as lvs and
 *   where the content sits in `arena` (all inserted bytes, lv order).
 * - tree: a B-tree of runs in document order (tombstones included). A run is
 *   a slice of one log entry; leaves keep deleted flags, every node counts
 *   the visible code points and bytes and all characters below it.
 * - marks: lv -> leaf holding it, run-length encoded in chunks of lvs, so a
 *   remote op finds its origins without scanning.
 * - replicas: per replica, counter -> lv runs (for id -> lv) and the set of
 *   counters held (inserts and deletes, for duplicates and the version).
 * - dels: the delete history, run-length encoded (backspacing and forward
 *   deleting one character per op collapse into one record).
 */
#ifndef WEFT_CRDT_TEXT_INTERNAL_H
#define WEFT_CRDT_TEXT_INTERNAL_H

#include "text.h"

#include <stdbool.h>

#define LEAF_MAX   32
#define INNER_MAX  16
#define LV_NONE    UINT32_MAX
#define MARK_SHIFT 10
/* Counters stay below this so `counter + len` never overflows anywhere. */
#define COUNTER_MAX (UINT64_C(1) << 62)

struct run {
    uint32_t lv;
    uint32_t len;      /* code points */
    uint32_t byte_off; /* into arena */
    uint32_t bytes;
};

struct inner;

struct node {
    struct inner *parent;
    size_t vis_cp, vis_bytes, total; /* total counts tombstones too */
    uint32_t count;
    bool leaf;
};

struct leaf {
    struct node hdr;
    uint32_t id; /* index in crdt_text.leaves, what marks store */
    struct leaf *prev, *next;
    uint8_t deleted[LEAF_MAX];
    struct run runs[LEAF_MAX];
};

struct inner {
    struct node hdr;
    struct node *child[INNER_MAX];
};

struct entry {
    uint64_t counter;
    uint32_t replica; /* index in crdt_text.replicas */
    uint32_t lv, len;
    uint32_t byte_off, bytes; /* bytes == 0 once compacted away */
    uint32_t ol, orr;         /* origins as lvs, LV_NONE = start / end */
    bool compacted;
};

struct idrun {
    uint64_t counter;
    uint32_t lv, len;
};

struct held {
    uint64_t first, last;
};

struct replica {
    uint64_t id;
    struct idrun *ins;
    size_t ins_len, ins_cap;
    struct held *held;
    size_t held_len, held_cap;
};

enum del_step { DEL_ONE = 0, DEL_FWD = 1, DEL_BACK = 2 };

/*
 * DEL_ONE: op `counter` deletes lvs [lv, lv+len). DEL_FWD: op counter+k
 * deletes lv+k. DEL_BACK: op counter+k deletes lv+len-1-k. An op with several
 * targets has consecutive DEL_ONE records with one counter.
 */
struct delrec {
    uint64_t counter;
    uint32_t replica;
    uint32_t lv, len;
    uint32_t step;
};

struct mark {
    uint32_t start, leaf;
};

struct mark_chunk {
    struct mark *marks;
    size_t len, cap;
};

struct crdt_text {
    struct node *root;
    struct leaf **leaves;
    size_t leaves_len, leaves_cap;
    size_t inner_count;
    uint8_t *arena;
    size_t arena_len, arena_cap;
    struct entry *log;
    size_t log_len, log_cap;
    struct replica *replicas;
    size_t replicas_len, replicas_cap;
    uint32_t *by_id; /* replica indexes sorted by replica id */
    size_t by_id_cap;
    struct delrec *dels;
    size_t dels_len, dels_cap;
    struct mark_chunk *marks;
    size_t marks_len, marks_cap;
    struct crdt_text_ops pending;
    /* Start of cache_leaf in visible code points and bytes; valid while no
     * leaf before it changes (any change elsewhere clears it). */
    struct leaf *cache_leaf;
    size_t cache_cp, cache_bytes;
};

/* text.c */
int text_grow(void *arr_ptr, size_t *cap, size_t need, size_t elem);
#define GROW(arr, cap, need)                                                                       \
    ((need) <= (cap) ? 0 : text_grow((void *)&(arr), &(cap), (need), sizeof(*(arr))))
bool text_utf8_check(size_t *cp_out, const uint8_t *s, size_t len);
size_t text_utf8_skip(const uint8_t *s, size_t bytes, size_t cps);
const struct entry *text_log_find(const struct crdt_text *text, uint32_t lv);
struct crdt_ts text_lv_to_id(const struct crdt_text *text, uint32_t lv);
bool text_id_to_lv(uint32_t *out, const struct crdt_text *text, struct crdt_ts id);
int text_replica_index(uint32_t *out, struct crdt_text *text, uint64_t id);
bool text_replica_find(uint32_t *out, const struct crdt_text *text, uint64_t id);
bool text_held_has(const struct replica *rep, uint64_t counter);
int text_held_add(struct replica *rep, uint64_t first, uint64_t last);
int text_idrun_add(struct replica *rep, uint64_t counter, uint32_t lv, uint32_t len);
int text_dellog_add(struct crdt_text *text, uint64_t counter, uint32_t replica, uint32_t lv,
                    uint32_t len, bool one_char_op);
int text_dellog_add_parts(struct crdt_text *text, uint64_t counter, uint32_t replica, uint32_t lv,
                          uint32_t n, bool backward);
int text_lv_spans(struct crdt_text_span **spans, size_t *spans_len, size_t *spans_cap,
                  const struct crdt_text *text, uint32_t lv, uint32_t len);
int text_mark_set(struct crdt_text *text, uint32_t lo, uint32_t hi, uint32_t leaf);
struct leaf *text_mark_get(const struct crdt_text *text, uint32_t lv);
int text_tree_append_run(struct crdt_text *text, struct run run, bool deleted);
int text_tree_build(struct crdt_text *text, const struct run *runs, const uint8_t *deleted,
                    size_t n, uint32_t *leaf_of);
int text_marks_build(struct crdt_text *text, const uint32_t *start, const uint32_t *leaf, size_t n,
                     uint32_t lvs);
int text_delete_lv_range(struct crdt_text *text, uint32_t lv, uint32_t len);
/* A place in the document order: run `idx` of `leaf`, `off` code points in; `pos` counts
 * every character (tombstones too) before it. `end` = after the last character. */
struct cursor {
    struct leaf *leaf;
    uint32_t idx, off;
    size_t pos;
    bool end;
};
int text_op_check(const struct crdt_text_op *op);
int text_insert_entry(struct crdt_text *text, uint32_t replica, uint64_t counter,
                      const uint8_t *bytes, size_t bytes_len, uint32_t len, uint32_t ol,
                      uint32_t orr, const struct cursor *local_at);

#endif
