/*
 * crdt/text_codec: op lists (their memory and their wire format), the ops a
 * peer lacks, the full-state encoding, and compaction. Formats are specified
 * byte by byte in crdt/README.md ("## text").
 */
#include "text_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_OPS_VERSION   2
#define TEXT_OPS_V1        1 /* still read, never written */
#define OPS_KIND_RUN       3 /* a delete run; + 1: backward */
#define TEXT_STATE_VERSION 2
#define TEXT_STATE_V1      1 /* still read, never written */
/* Log entries plus delete records a state may hold (the decoder's sort tags are 32 bits). */
#define MAX_RECORDS ((UINT64_C(1) << 31) - 1)

/* ------------------------------------------------------------------ op lists */

/* Bytes and targets live in blocks that never move, so op pointers stay valid. */
struct crdt_text_ops_block {
    struct crdt_text_ops_block *next;
    size_t used, cap;
    uint64_t data[];
};

static void *ops_alloc(struct crdt_text_ops *ops, size_t size)
{
    size = (size + 7) & ~(size_t)7;
    struct crdt_text_ops_block *block = ops->blocks;
    if (!block || block->cap - block->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        block = malloc(sizeof(*block) + cap);
        if (!block)
            return NULL;
        block->used = 0;
        block->cap = cap;
        block->next = ops->blocks;
        ops->blocks = block;
    }
    void *at = (uint8_t *)block->data + block->used;
    block->used += size;
    return at;
}

void crdt_text_ops_free(struct crdt_text_ops *ops)
{
    while (ops->blocks) {
        struct crdt_text_ops_block *next = ops->blocks->next;
        free(ops->blocks);
        ops->blocks = next;
    }
    free(ops->ops);
    memset(ops, 0, sizeof(*ops));
}

void crdt_text_ops_clear(struct crdt_text_ops *ops)
{
    ops->len = 0;
    if (!ops->blocks)
        return;
    struct crdt_text_ops_block *keep = ops->blocks, *rest = keep->next;
    while (rest) {
        struct crdt_text_ops_block *next = rest->next;
        free(rest);
        rest = next;
    }
    keep->next = NULL;
    keep->used = 0;
}

int crdt_text_ops_push(struct crdt_text_ops *ops, const struct crdt_text_op *op)
{
    if (GROW(ops->ops, ops->cap, ops->len + 1))
        return -ENOMEM;
    struct crdt_text_op copy = *op;
    if (op->kind == CRDT_TEXT_INSERT) {
        copy.targets = NULL;
        copy.targets_len = 0;
        copy.backward = false;
        if (op->bytes_len) {
            uint8_t *bytes = ops_alloc(ops, op->bytes_len);
            if (!bytes)
                return -ENOMEM;
            memcpy(bytes, op->bytes, op->bytes_len);
            copy.bytes = bytes;
        }
    } else {
        copy.bytes = NULL;
        copy.bytes_len = 0;
        if (copy.len < 2) { /* one op; `backward` only means something for a run */
            copy.len = 0;
            copy.backward = false;
        }
        if (op->targets_len > SIZE_MAX / sizeof(struct crdt_text_span))
            return -ENOMEM;
        struct crdt_text_span *targets =
            ops_alloc(ops, op->targets_len * sizeof(struct crdt_text_span));
        if (!targets)
            return -ENOMEM;
        memcpy(targets, op->targets, op->targets_len * sizeof(struct crdt_text_span));
        copy.targets = targets;
    }
    ops->ops[ops->len++] = copy;
    return 0;
}

static size_t id_index(const uint64_t *ids, size_t len, uint64_t id)
{
    size_t lo = 0, hi = len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Adds id to the sorted, distinct ids unless it is there. */
static int id_set_add(uint64_t **ids, size_t *len, size_t *cap, uint64_t id)
{
    size_t at = id_index(*ids, *len, id);
    if (at < *len && (*ids)[at] == id)
        return 0;
    if (GROW(*ids, *cap, *len + 1))
        return -ENOMEM;
    memmove(&(*ids)[at + 1], &(*ids)[at], (*len - at) * sizeof(uint64_t));
    (*ids)[at] = id;
    (*len)++;
    return 0;
}

/*
 * Sorted, distinct replica ids of an op list (the table the ops format
 * indexes). An op list names few replicas, so each id is looked up in the
 * table so far; the one before is remembered, as most refs repeat it.
 */
static int ops_replicas(uint64_t **out, size_t *out_len, const struct crdt_text_ops *ops)
{
    size_t len = 0, cap = 0;
    uint64_t *ids = NULL, recent = 0;
    bool have_recent = false;
    int rc = 0;
    for (size_t i = 0; i < ops->len && !rc; i++) {
        const struct crdt_text_op *op = &ops->ops[i];
        bool insert = op->kind == CRDT_TEXT_INSERT;
        size_t refs = insert ? 3 : 1 + op->targets_len;
        for (size_t k = 0; k < refs && !rc; k++) {
            struct crdt_ts ref = k == 0   ? op->id
                                 : insert ? (k == 1 ? op->origin_left : op->origin_right)
                                          : op->targets[k - 1].first;
            if ((k > 0 && insert && !ref.counter) || (have_recent && ref.replica == recent))
                continue;
            rc = id_set_add(&ids, &len, &cap, ref.replica);
            recent = ref.replica;
            have_recent = true;
        }
    }
    if (rc) {
        free(ids);
        return rc;
    }
    *out = ids;
    *out_len = len;
    return 0;
}

static void put_ref(struct crdt_buf *buf, const uint64_t *ids, size_t n, struct crdt_ts ts)
{
    crdt_buf_put_varint(buf, ts.counter);
    if (ts.counter)
        crdt_buf_put_varint(buf, id_index(ids, n, ts.replica));
}

int crdt_text_ops_encode(struct crdt_buf *buf, const struct crdt_text_ops *ops)
{
    uint64_t *ids;
    size_t n;
    int rc = ops_replicas(&ids, &n, ops);
    if (rc)
        return rc;
    crdt_buf_put_u8(buf, TEXT_OPS_VERSION);
    crdt_buf_put_varint(buf, n);
    for (size_t i = 0; i < n; i++)
        crdt_buf_put_varint(buf, i ? ids[i] - ids[i - 1] : ids[0]);
    crdt_buf_put_varint(buf, ops->len);
    for (size_t i = 0; i < ops->len; i++) {
        const struct crdt_text_op *op = &ops->ops[i];
        bool run = op->kind == CRDT_TEXT_DELETE && op->len >= 2;
        crdt_buf_put_u8(buf, run ? (uint8_t)(OPS_KIND_RUN + op->backward) : (uint8_t)op->kind);
        put_ref(buf, ids, n, op->id);
        if (op->kind == CRDT_TEXT_INSERT) {
            crdt_buf_put_varint(buf, op->len);
            put_ref(buf, ids, n, op->origin_left);
            put_ref(buf, ids, n, op->origin_right);
            crdt_buf_put_bytes(buf, op->bytes, op->bytes_len);
        } else {
            if (run)
                crdt_buf_put_varint(buf, op->len);
            crdt_buf_put_varint(buf, op->targets_len);
            for (size_t k = 0; k < op->targets_len; k++) {
                put_ref(buf, ids, n, op->targets[k].first);
                crdt_buf_put_varint(buf, op->targets[k].len);
            }
        }
    }
    free(ids);
    return crdt_buf_status(buf);
}

static int read_ref(struct crdt_reader *reader, const uint64_t *ids, size_t n, bool optional,
                    struct crdt_ts *out)
{
    uint64_t counter, index = 0;
    int rc = crdt_reader_varint(reader, &counter);
    if (rc)
        return rc;
    if (counter == 0 && !optional)
        return -EBADMSG;
    if (counter && (rc = crdt_reader_varint_max(reader, n ? n - 1 : 0, &index)) != 0)
        return rc;
    if (counter && n == 0)
        return -EBADMSG;
    *out = (struct crdt_ts){counter, counter ? ids[index] : 0};
    return 0;
}

static int ops_decode(struct crdt_text_ops *out, struct crdt_reader *reader)
{
    uint8_t version;
    uint64_t n, count = 0;
    uint64_t *ids = NULL;
    struct crdt_text_span *targets = NULL;
    size_t targets_cap = 0;
    int rc = crdt_reader_u8(reader, &version);
    if (!rc && version != TEXT_OPS_VERSION && version != TEXT_OPS_V1)
        rc = -EBADMSG;
    if (!rc)
        rc = crdt_reader_varint_max(reader, crdt_reader_left(reader), &n);
    if (rc)
        return rc;
    ids = malloc((n ? n : 1) * sizeof(uint64_t));
    if (!ids)
        return -ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t delta;
        rc = crdt_reader_varint(reader, &delta);
        if (!rc && i > 0 && (delta == 0 || delta > UINT64_MAX - ids[i - 1]))
            rc = -EBADMSG;
        if (!rc)
            ids[i] = i ? ids[i - 1] + delta : delta;
    }
    /* Every op takes at least 4 bytes, so the count is bounded by what is left. */
    if (!rc)
        rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 4, &count);
    for (uint64_t i = 0; i < count && !rc; i++) {
        struct crdt_text_op op = {0};
        uint8_t kind;
        uint64_t value;
        rc = crdt_reader_u8(reader, &kind);
        bool run = version != TEXT_OPS_V1 && (kind == OPS_KIND_RUN || kind == OPS_KIND_RUN + 1);
        if (!rc && kind != CRDT_TEXT_INSERT && kind != CRDT_TEXT_DELETE && !run)
            rc = -EBADMSG;
        if (!rc)
            rc = read_ref(reader, ids, n, false, &op.id);
        if (rc)
            break;
        op.kind = run ? CRDT_TEXT_DELETE : kind;
        op.backward = run && kind == OPS_KIND_RUN + 1;
        if (run) {
            /* A run is at least two ops (one is written as a plain delete). */
            rc = crdt_reader_varint_max(reader, UINT32_MAX - 1, &value);
            if (!rc && value < 2)
                rc = -EBADMSG;
            op.len = (size_t)value;
        }
        if (rc)
            break;
        if (kind == CRDT_TEXT_INSERT) {
            rc = crdt_reader_varint_max(reader, UINT32_MAX, &value);
            op.len = (size_t)value;
            if (!rc)
                rc = read_ref(reader, ids, n, true, &op.origin_left);
            if (!rc)
                rc = read_ref(reader, ids, n, true, &op.origin_right);
            if (!rc)
                rc = crdt_reader_bytes(reader, SIZE_MAX, &op.bytes, &op.bytes_len);
        } else {
            rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 2, &value);
            if (!rc && value > targets_cap) {
                free(targets);
                targets_cap = (size_t)value;
                targets = malloc(targets_cap * sizeof(*targets));
                if (!targets)
                    rc = -ENOMEM;
            }
            op.targets_len = (size_t)value;
            for (size_t k = 0; k < op.targets_len && !rc; k++) {
                rc = read_ref(reader, ids, n, false, &targets[k].first);
                if (!rc)
                    rc = crdt_reader_varint(reader, &targets[k].len);
            }
            op.targets = targets;
        }
        if (!rc && text_op_check(&op))
            rc = -EBADMSG;
        if (!rc)
            rc = crdt_text_ops_push(out, &op);
    }
    free(targets);
    free(ids);
    return rc;
}

int crdt_text_ops_decode(struct crdt_text_ops *out, const void *data, size_t len)
{
    struct crdt_reader reader;
    crdt_reader_init(&reader, data, len);
    size_t before = out->len;
    int rc = ops_decode(out, &reader);
    if (!rc && crdt_reader_left(&reader))
        rc = -EBADMSG;
    if (rc)
        out->len = before;
    return rc;
}

/* ------------------------------------------------------------------ since */

/* A delete op being gathered from consecutive records of one (replica, counter). */
struct del_acc {
    struct crdt_text_span *spans;
    size_t len, cap;
    struct crdt_ts id;
    int rc;
};

static int del_flush(struct crdt_text_ops *out, struct del_acc *acc)
{
    if (!acc->len)
        return 0;
    struct crdt_text_op op = {
        .kind = CRDT_TEXT_DELETE, .id = acc->id, .targets = acc->spans, .targets_len = acc->len};
    acc->len = 0;
    return crdt_text_ops_push(out, &op);
}

static int del_emit(struct crdt_text_ops *out, struct del_acc *acc, const struct crdt_text *text,
                    struct crdt_ts id, uint32_t lv, uint32_t len)
{
    if (acc->len && crdt_ts_cmp(acc->id, id) != 0) {
        int rc = del_flush(out, acc);
        if (rc)
            return rc;
    }
    acc->id = id;
    return text_lv_spans(&acc->spans, &acc->len, &acc->cap, text, lv, len);
}

/* The lv op k of step record d deletes. */
static uint32_t step_lv(const struct delrec *d, uint32_t k)
{
    return d->step == DEL_FWD ? d->lv + k : d->lv + d->len - 1 - k;
}

/*
 * Ops a .. b-1 of step record d (ids counter + k, each deleting step_lv(d, k),
 * one character) as one delete run: they delete lvs [lv + a, lv + b) in
 * ascending order (step 1), or [lv + len - b, lv + len - a) descending (step
 * 2); in ids, the spans of that lv range taken forwards or backwards, which
 * is what a run means. One op is a plain delete.
 */
static int del_emit_run(struct crdt_text_ops *out, struct del_acc *acc,
                        const struct crdt_text *text, const struct delrec *d, uint32_t a,
                        uint32_t b)
{
    uint64_t replica = text->replicas[d->replica].id;
    if (b - a == 1)
        return del_emit(out, acc, text, (struct crdt_ts){d->counter + a, replica}, step_lv(d, a),
                        1);
    int rc = del_flush(out, acc);
    if (!rc)
        rc = text_lv_spans(&acc->spans, &acc->len, &acc->cap, text,
                           d->step == DEL_FWD ? d->lv + a : d->lv + d->len - b, b - a);
    if (rc)
        return rc;
    struct crdt_text_op op = {.kind = CRDT_TEXT_DELETE,
                              .id = {d->counter + a, replica},
                              .len = b - a,
                              .targets = acc->spans,
                              .targets_len = acc->len,
                              .backward = d->step == DEL_BACK};
    acc->len = 0;
    return crdt_text_ops_push(out, &op);
}

int crdt_text_since(struct crdt_text_ops *out, const struct crdt_text *text,
                    const struct crdt_vv *since)
{
    int rc = 0;
    for (size_t i = 0; i < text->log_len && !rc; i++) {
        const struct entry *e = &text->log[i];
        uint64_t have = crdt_vv_get(since, text->replicas[e->replica].id);
        if (e->counter + e->len - 1 <= have)
            continue;
        if (e->compacted)
            return -ESTALE;
        uint32_t skip = e->counter > have ? 0 : (uint32_t)(have - e->counter + 1);
        size_t byte_skip =
            e->bytes == e->len ? skip : text_utf8_skip(text->arena + e->byte_off, e->bytes, skip);
        struct crdt_text_op op = {
            .kind = CRDT_TEXT_INSERT,
            .id = {e->counter + skip, text->replicas[e->replica].id},
            .origin_left = text_lv_to_id(text, skip ? e->lv + skip - 1 : e->ol),
            .origin_right = text_lv_to_id(text, e->orr),
            .bytes = text->arena + e->byte_off + byte_skip,
            .bytes_len = e->bytes - byte_skip,
            .len = e->len - skip,
        };
        rc = crdt_text_ops_push(out, &op);
    }
    struct del_acc acc = {0};
    for (size_t i = 0; i < text->dels_len && !rc; i++) {
        const struct delrec *d = &text->dels[i];
        uint64_t replica = text->replicas[d->replica].id;
        uint64_t have = crdt_vv_get(since, replica);
        if (d->step == DEL_ONE) {
            if (d->counter > have)
                rc =
                    del_emit(out, &acc, text, (struct crdt_ts){d->counter, replica}, d->lv, d->len);
            continue;
        }
        /*
         * Ops counter + a .. counter + b - 1 are the ones the peer lacks. Each deletes one
         * character, but the first may be the op the records before end with (an op with
         * several targets: it joins that op) and the last one the records after start with
         * (same_delete_op): those are handed out as they were gathered, the rest as a run.
         */
        uint64_t lacked_from = d->counter > have ? 0 : have - d->counter + 1;
        uint32_t a = lacked_from < d->len ? (uint32_t)lacked_from : d->len, b = d->len;
        if (a < b && acc.len &&
            crdt_ts_cmp(acc.id, (struct crdt_ts){d->counter + a, replica}) == 0) {
            rc = del_emit(out, &acc, text, acc.id, step_lv(d, a), 1);
            a++;
        }
        const struct delrec *next = i + 1 < text->dels_len ? &text->dels[i + 1] : NULL;
        bool tail_joins = a < b && next && next->replica == d->replica &&
                          next->counter == d->counter + d->len - 1;
        if (tail_joins)
            b--;
        if (!rc && a < b)
            rc = del_emit_run(out, &acc, text, d, a, b);
        if (!rc && tail_joins)
            rc = del_emit(out, &acc, text, (struct crdt_ts){d->counter + b, replica}, step_lv(d, b),
                          1);
    }
    if (!rc)
        rc = del_flush(out, &acc);
    free(acc.spans);
    return rc;
}

int crdt_text_encode_since(struct crdt_buf *buf, const struct crdt_text *text,
                           const struct crdt_vv *since)
{
    struct crdt_text_ops ops = {0};
    int rc = crdt_text_since(&ops, text, since);
    if (!rc)
        rc = crdt_text_ops_encode(buf, &ops);
    crdt_text_ops_free(&ops);
    return rc;
}

/* ------------------------------------------------------------------ state */

/*
 * The full state (crdt/README.md, "Full state format") holds no document
 * order and, usually, no origins. Each log entry carries its *anchor*: the
 * nearest character before the entry's first one, in document order, with a
 * smaller lv (LV_NONE: none, the document start). Inserting the entries in lv
 * order, each right after its anchor, rebuilds the order exactly: when entry
 * e goes in, the characters already there are those with smaller lvs, in
 * their final relative order, and e's characters are contiguous among them
 * (only later entries split it), right after the anchor.
 *
 * A local insert goes right after its left origin, before what followed it
 * then (its right origin, tombstones included). So its left origin is its
 * anchor, and its right origin is what followed the anchor when it went in:
 * the nearest character after it with a smaller lv. Only an entry a
 * concurrent insert pushed further right has other origins; those are listed
 * as exceptions.
 *
 * Inserts and delete records share one record stream, ordered (mostly) as
 * their counters were taken, so a record's counter is nearly always where the
 * previous record of its replica ended, and its position is written relative
 * to a cursor (where the previous record left the edit point), so that typing
 * after a backspace or backspacing what was just typed costs a one-byte zero.
 */

#define REC_SHIFT    3  /* head = len << REC_SHIFT | explicit | kind */
#define REC_EXPLICIT 4u /* head bit: the replica and counter follow */
#define REC_INSERT   0u /* kind; a delete record's kind is 1 + its step */

/* Position of each internal replica index in sorted-by-id order. */
static int sorted_positions(uint32_t **out, const struct crdt_text *text)
{
    uint32_t *pos = malloc((text->replicas_len ? text->replicas_len : 1) * sizeof(uint32_t));
    if (!pos)
        return -ENOMEM;
    for (size_t i = 0; i < text->replicas_len; i++)
        pos[text->by_id[i]] = (uint32_t)i;
    *out = pos;
    return 0;
}

/* An lv and what it belongs to (a run, a piece bound), for sorting by lv. */
struct order_key {
    uint32_t value, tag;
};

/* Sorts keys by value (LSD radix, one pass per byte that differs); returns whichever of
 * keys and tmp then holds them. */
static struct order_key *keys_sort(struct order_key *keys, struct order_key *tmp, size_t n)
{
    for (unsigned shift = 0; shift < 32 && n > 1; shift += 8) {
        size_t count[256] = {0};
        for (size_t i = 0; i < n; i++)
            count[keys[i].value >> shift & 0xff]++;
        if (count[keys[0].value >> shift & 0xff] == n)
            continue;
        size_t sum = 0;
        for (size_t b = 0; b < 256; b++) {
            size_t c = count[b];
            count[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            tmp[count[keys[i].value >> shift & 0xff]++] = keys[i];
        struct order_key *sorted = tmp;
        tmp = keys;
        keys = sorted;
    }
    return keys;
}

/*
 * Each log entry's anchor, and the right origin that placement implies (the
 * nearest character after the entry's first with a smaller lv; LV_NONE =
 * none). A stack of runs with increasing lvs holds, once larger ones are
 * popped, the nearest smaller one on top; runs are disjoint lv ranges, so
 * comparing first lvs compares every character. Which runs start an entry
 * comes from the runs sorted by lv, merged with the log.
 */
static int state_placement(uint32_t *anchor, uint32_t *implied, const struct crdt_text *text)
{
    size_t n = 0, depth = 0;
    for (const struct leaf *leaf = text->leaves[0]; leaf; leaf = leaf->next)
        n += leaf->hdr.count;
    size_t room = n ? n : 1;
    struct run *runs = malloc(room * sizeof(*runs)), *stack = malloc(room * sizeof(*stack));
    struct order_key *keys = malloc(room * sizeof(*keys)), *spare = malloc(room * sizeof(*keys));
    uint32_t *entry_of = malloc(room * sizeof(uint32_t)); /* per run; UINT32_MAX: none */
    int rc = runs && stack && keys && spare && entry_of ? 0 : -ENOMEM;
    if (rc)
        goto out;
    n = 0;
    for (const struct leaf *leaf = text->leaves[0]; leaf; leaf = leaf->next) {
        for (uint32_t i = 0; i < leaf->hdr.count; i++, n++) {
            runs[n] = leaf->runs[i];
            keys[n] = (struct order_key){runs[n].lv, (uint32_t)n};
        }
    }
    const struct order_key *sorted = keys_sort(keys, spare, n);
    for (size_t k = 0, e = 0; k < n; k++) {
        while (e < text->log_len && text->log[e].lv < sorted[k].value)
            e++;
        entry_of[sorted[k].tag] =
            e < text->log_len && text->log[e].lv == sorted[k].value ? (uint32_t)e : UINT32_MAX;
    }
    for (size_t k = 0; k < n; k++) {
        while (depth && stack[depth - 1].lv > runs[k].lv)
            depth--;
        if (entry_of[k] != UINT32_MAX)
            anchor[entry_of[k]] = depth ? stack[depth - 1].lv + stack[depth - 1].len - 1 : LV_NONE;
        stack[depth++] = runs[k];
    }
    depth = 0;
    for (size_t k = n; k-- > 0;) {
        while (depth && stack[depth - 1].lv > runs[k].lv)
            depth--;
        if (entry_of[k] != UINT32_MAX)
            implied[entry_of[k]] = depth ? stack[depth - 1].lv : LV_NONE;
        stack[depth++] = runs[k];
    }
out:
    free(entry_of);
    free(spare);
    free(keys);
    free(stack);
    free(runs);
    return rc;
}

/* The record stream's running context, identical in encoder and decoder. */
struct rec_context {
    uint64_t *next;   /* per replica (table position): counter after its previous record */
    uint32_t replica; /* table position of the previous record's replica (0 at first) */
    int64_t cursor;   /* insert: its last lv; delete: its first lv - 1; -1 at first */
};

static void put_record(struct crdt_buf *buf, struct rec_context *ctx, size_t n_replicas,
                       uint32_t kind, uint32_t len, uint32_t replica, uint64_t counter,
                       uint64_t ops, int64_t at)
{
    bool implicit = replica == ctx->replica && counter == ctx->next[replica];
    crdt_buf_put_varint(buf, (uint64_t)len << REC_SHIFT | (implicit ? 0 : REC_EXPLICIT) | kind);
    if (!implicit) {
        if (n_replicas > 1)
            crdt_buf_put_varint(buf, replica);
        crdt_buf_put_svarint(buf, (int64_t)(counter - ctx->next[replica]));
    }
    crdt_buf_put_svarint(buf, at - ctx->cursor);
    ctx->replica = replica;
    ctx->next[replica] = counter + ops;
}

/*
 * Whether delete record d starts with the op that ended delete record `prev`:
 * an op with several targets has one record per target, and the last may
 * have grown into a step-1 or step-2 record with the ops after it.
 */
static bool same_delete_op(const struct delrec *prev, const struct delrec *d)
{
    return prev && prev->replica == d->replica &&
           prev->counter + (prev->step == DEL_ONE ? 1 : prev->len) - 1 == d->counter;
}

/* The inserts and deletes as one stream: each kept in its order, merged so that records
 * continuing their replica's counters come first, then by counter (a Lamport time). */
static void put_records(struct crdt_buf *buf, const struct crdt_text *text, const uint32_t *pos,
                        const uint32_t *anchor, uint64_t *next)
{
    struct rec_context ctx = {next, 0, -1};
    const struct delrec *prev_del = NULL;
    size_t ei = 0, di = 0;
    while (ei < text->log_len || di < text->dels_len) {
        const struct entry *e = ei < text->log_len ? &text->log[ei] : NULL;
        const struct delrec *d = di < text->dels_len ? &text->dels[di] : NULL;
        bool take_del = !e;
        if (e && d) {
            bool e_cont = pos[e->replica] == ctx.replica && e->counter == next[ctx.replica];
            bool d_cont = pos[d->replica] == ctx.replica && d->counter == next[ctx.replica];
            if (same_delete_op(prev_del, d))
                take_del = true;
            else if (e_cont != d_cont)
                take_del = d_cont;
            else
                take_del = d->counter < e->counter;
        }
        if (take_del) {
            int64_t at = d->step == DEL_BACK ? (int64_t)d->lv + d->len - 1 : d->lv;
            put_record(buf, &ctx, text->replicas_len, 1 + d->step, d->len, pos[d->replica],
                       d->counter, d->step == DEL_ONE ? 1 : d->len, at);
            ctx.cursor = (int64_t)d->lv - 1;
            prev_del = d;
            di++;
        } else {
            uint32_t a = anchor[ei];
            put_record(buf, &ctx, text->replicas_len, REC_INSERT, e->len, pos[e->replica],
                       e->counter, e->len, a == LV_NONE ? -1 : (int64_t)a);
            ctx.cursor = (int64_t)e->lv + e->len - 1;
            prev_del = NULL;
            ei++;
        }
    }
}

int crdt_text_encode_state(struct crdt_buf *buf, const struct crdt_text *text)
{
    size_t entries = text->log_len ? text->log_len : 1;
    uint32_t *pos = NULL;
    uint32_t *anchor = malloc(entries * sizeof(uint32_t));
    uint32_t *implied = malloc(entries * sizeof(uint32_t));
    uint64_t *next = calloc(text->replicas_len ? text->replicas_len : 1, sizeof(uint64_t));
    int rc = -ENOMEM;
    if (!anchor || !implied || !next)
        goto out;
    rc = sorted_positions(&pos, text);
    if (!rc)
        rc = state_placement(anchor, implied, text);
    if (rc)
        goto out;
    crdt_buf_put_u8(buf, TEXT_STATE_VERSION);
    crdt_buf_put_varint(buf, text->replicas_len);
    for (size_t i = 0; i < text->replicas_len; i++) {
        uint64_t id = text->replicas[text->by_id[i]].id;
        crdt_buf_put_varint(buf, i ? id - text->replicas[text->by_id[i - 1]].id : id);
    }
    crdt_buf_put_varint(buf, text->log_len);
    crdt_buf_put_varint(buf, text->dels_len);
    put_records(buf, text, pos, anchor, next);
    /* Compacted entries, then entries whose origins are not the ones their anchor implies;
     * each index written as index - (previous index + 1). */
    size_t compacted = 0, exceptions = 0;
    for (size_t i = 0; i < text->log_len; i++) {
        const struct entry *e = &text->log[i];
        compacted += e->compacted;
        exceptions += e->ol != anchor[i] || e->orr != implied[i];
    }
    crdt_buf_put_varint(buf, compacted);
    for (size_t i = 0, prev = 0; i < text->log_len; i++) {
        if (text->log[i].compacted) {
            crdt_buf_put_varint(buf, i - prev);
            prev = i + 1;
        }
    }
    crdt_buf_put_varint(buf, exceptions);
    for (size_t i = 0, prev = 0; i < text->log_len; i++) {
        const struct entry *e = &text->log[i];
        if (e->ol == anchor[i] && e->orr == implied[i])
            continue;
        crdt_buf_put_varint(buf, i - prev);
        crdt_buf_put_varint(buf, e->ol == LV_NONE ? 0 : e->lv - e->ol);
        crdt_buf_put_varint(buf, e->orr == LV_NONE ? 0 : e->lv - e->orr);
        prev = i + 1;
    }
    size_t content = 0;
    for (size_t i = 0; i < text->log_len; i++)
        content += text->log[i].bytes;
    crdt_buf_put_varint(buf, content);
    for (size_t i = 0; i < text->log_len; i++)
        crdt_buf_put(buf, text->arena + text->log[i].byte_off, text->log[i].bytes);
    rc = crdt_buf_status(buf);
out:
    free(next);
    free(implied);
    free(anchor);
    free(pos);
    return rc;
}

static void set_bits(uint8_t *bits, uint32_t lv, uint32_t len)
{
    for (uint32_t i = lv; i < lv + len; i++)
        bits[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static bool bit(const uint8_t *bits, uint32_t i)
{
    return bits[i >> 3] >> (i & 7) & 1;
}

struct counter_range {
    uint32_t replica;
    uint64_t first, last;
};

static int range_cmp(const void *a, const void *b)
{
    const struct counter_range *x = a, *y = b;
    if (x->replica != y->replica)
        return x->replica < y->replica ? -1 : 1;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return 0;
}

static int read_u32(struct crdt_reader *reader, uint64_t max, uint32_t *out)
{
    uint64_t value;
    int rc = crdt_reader_varint_max(reader, max, &value);
    if (!rc)
        *out = (uint32_t)value;
    return rc;
}

/* A replica index; with a one-replica table it is not written. */
static int read_replica(struct crdt_reader *reader, uint64_t n_replicas, uint32_t *out)
{
    if (n_replicas == 0)
        return -EBADMSG;
    if (n_replicas == 1) {
        *out = 0;
        return 0;
    }
    return read_u32(reader, n_replicas - 1, out);
}

static int read_delta(struct crdt_reader *reader, uint64_t base, uint64_t *out)
{
    int64_t delta;
    int rc = crdt_reader_svarint(reader, &delta);
    if (rc)
        return rc;
    uint64_t value = base + (uint64_t)delta;
    if ((delta < 0 && (uint64_t) - (delta + 1) >= base) ||
        (delta > 0 && (uint64_t)delta > UINT64_MAX - base))
        return -EBADMSG;
    *out = value;
    return 0;
}

/* What the state decoder gathers besides the log and the delete records. */
struct state_tmp {
    uint64_t n_replicas, n_entries, n_dels;
    uint64_t lvs;
    uint32_t *anchor;             /* per entry; LV_NONE = the document start */
    uint8_t *given;               /* per entry: origins given as an exception */
    struct counter_range *ranges; /* counters used, one per record (an op's targets: one) */
    size_t ranges_len;
    bool ranges_sorted; /* each replica's ranges ascending in stream order */
};

/* The record stream: log entries and delete records, checked as far as they can be before
 * every lv is known. */
static int read_records(struct crdt_text *text, struct crdt_reader *reader, struct state_tmp *tmp)
{
    size_t per_replica = tmp->n_replicas ? (size_t)tmp->n_replicas : 1;
    uint64_t *next = calloc(per_replica, sizeof(uint64_t));
    uint64_t *end = calloc(per_replica, sizeof(uint64_t)); /* past each replica's highest */
    int rc = next && end ? 0 : -ENOMEM;
    struct rec_context ctx = {next, 0, -1};
    bool prev_del = false; /* the previous record deletes; prev_last is its last op */
    uint64_t prev_last = 0;
    for (uint64_t i = 0; i < tmp->n_entries + tmp->n_dels && !rc; i++) {
        uint64_t head, counter = 0;
        int64_t delta;
        uint32_t replica = ctx.replica;
        rc = crdt_reader_varint_max(reader, (uint64_t)UINT32_MAX << REC_SHIFT | 7, &head);
        if (!rc && (head & REC_EXPLICIT)) {
            rc = read_replica(reader, tmp->n_replicas, &replica);
            if (!rc)
                rc = read_delta(reader, next[replica], &counter);
        } else if (!rc) {
            rc = tmp->n_replicas ? 0 : -EBADMSG;
            counter = next[replica];
        }
        if (!rc)
            rc = crdt_reader_svarint(reader, &delta);
        if (rc)
            break;
        uint32_t len = (uint32_t)(head >> REC_SHIFT), kind = (uint32_t)(head & 3);
        uint64_t ops = kind == 1 + DEL_ONE ? 1 : len;
        /* Positions are below 2^32: a larger step is malformed (and cannot overflow). */
        if (len == 0 || counter == 0 || counter >= COUNTER_MAX || ops >= COUNTER_MAX - counter ||
            delta < -(INT64_C(1) << 33) || delta > (INT64_C(1) << 33)) {
            rc = -EBADMSG;
            break;
        }
        int64_t at = ctx.cursor + delta;
        bool same_op = false;
        if (kind == REC_INSERT) {
            if (text->log_len == tmp->n_entries || at < -1 || at >= (int64_t)tmp->lvs ||
                tmp->lvs + len >= LV_NONE) {
                rc = -EBADMSG;
                break;
            }
            tmp->anchor[text->log_len] = at < 0 ? LV_NONE : (uint32_t)at;
            text->log[text->log_len++] = (struct entry){
                .counter = counter, .replica = replica, .lv = (uint32_t)tmp->lvs, .len = len};
            ctx.cursor = (int64_t)tmp->lvs + len - 1;
            tmp->lvs += len;
            prev_del = false;
        } else {
            uint32_t step = kind - 1;
            int64_t lv = step == DEL_BACK ? at - (len - 1) : at;
            /* Inside the lvs: checked once they are all known. */
            if (text->dels_len == tmp->n_dels || lv < 0 || lv > (int64_t)(LV_NONE - len)) {
                rc = -EBADMSG;
                break;
            }
            /* An op with several targets: records in a row, each starting with the op
             * that ended the one before (see same_delete_op). */
            same_op = prev_del && replica == ctx.replica && counter == prev_last;
            text->dels[text->dels_len++] =
                (struct delrec){counter, replica, (uint32_t)lv, len, step};
            ctx.cursor = lv - 1;
            prev_del = true;
            prev_last = counter + ops - 1;
        }
        ctx.replica = replica;
        next[replica] = counter + ops;
        uint64_t first = same_op ? counter + 1 : counter;
        if (first == counter + ops)
            continue;
        if (first < end[replica])
            tmp->ranges_sorted = false;
        if (end[replica] < counter + ops)
            end[replica] = counter + ops;
        tmp->ranges[tmp->ranges_len++] = (struct counter_range){replica, first, counter + ops - 1};
    }
    free(end);
    free(next);
    return rc;
}

/* A list of entry indexes, strictly ascending, written as differences (index - previous - 1). */
static int read_index(struct crdt_reader *reader, uint64_t n_entries, uint64_t *prev, uint64_t *out)
{
    uint64_t delta;
    int rc = crdt_reader_varint_max(reader, n_entries, &delta);
    if (!rc && *prev + delta >= n_entries)
        rc = -EBADMSG;
    if (!rc) {
        *out = *prev + delta;
        *prev = *out + 1;
    }
    return rc;
}

/* Compacted entries and origin exceptions. */
static int read_entry_lists(struct crdt_text *text, struct crdt_reader *reader,
                            struct state_tmp *tmp)
{
    uint64_t count, prev = 0, index;
    int rc = crdt_reader_varint_max(reader, tmp->n_entries, &count);
    for (uint64_t i = 0; i < count && !rc; i++) {
        rc = read_index(reader, tmp->n_entries, &prev, &index);
        if (!rc)
            text->log[index].compacted = true;
    }
    if (!rc)
        rc = crdt_reader_varint_max(reader, tmp->n_entries, &count);
    prev = 0;
    for (uint64_t i = 0; i < count && !rc; i++) {
        uint64_t ol, orr;
        rc = read_index(reader, tmp->n_entries, &prev, &index);
        struct entry *e = rc ? NULL : &text->log[index];
        if (!rc)
            rc = crdt_reader_varint_max(reader, e->lv, &ol);
        if (!rc)
            rc = crdt_reader_varint_max(reader, e->lv, &orr);
        if (rc)
            break;
        e->ol = ol ? e->lv - (uint32_t)ol : LV_NONE;
        e->orr = orr ? e->lv - (uint32_t)orr : LV_NONE;
        tmp->given[index] = 1;
    }
    return rc;
}

/* Content: valid UTF-8 holding exactly the entries' code points, split in order. */
static int read_content(struct crdt_text *text, struct crdt_reader *reader)
{
    uint64_t content_len, content_cps = 0;
    const uint8_t *content;
    size_t cps;
    for (size_t i = 0; i < text->log_len; i++)
        content_cps += text->log[i].compacted ? 0 : text->log[i].len;
    int rc = crdt_reader_varint_max(reader, crdt_reader_left(reader), &content_len);
    if (!rc && content_len > UINT32_MAX)
        rc = -EBADMSG;
    if (!rc)
        rc = crdt_reader_raw(reader, (size_t)content_len, &content);
    if (!rc && (!text_utf8_check(&cps, content, (size_t)content_len) || cps != content_cps))
        rc = -EBADMSG;
    if (!rc && content_len && GROW(text->arena, text->arena_cap, (size_t)content_len))
        rc = -ENOMEM;
    if (rc)
        return rc;
    if (content_len)
        memcpy(text->arena, content, (size_t)content_len);
    text->arena_len = (size_t)content_len;
    size_t at = 0;
    for (size_t i = 0; i < text->log_len; i++) {
        struct entry *e = &text->log[i];
        size_t bytes =
            e->compacted ? 0 : text_utf8_skip(content + at, (size_t)content_len - at, e->len);
        e->byte_off = (uint32_t)at;
        e->bytes = (uint32_t)bytes;
        at += bytes;
    }
    return 0;
}

/* No counter of a replica used twice; then the held sets and the id -> lv runs. */
static int state_ids(struct crdt_text *text, struct state_tmp *tmp)
{
    int rc = 0;
    if (!tmp->ranges_sorted) {
        qsort(tmp->ranges, tmp->ranges_len, sizeof(*tmp->ranges), range_cmp);
        for (size_t i = 1; i < tmp->ranges_len; i++)
            if (tmp->ranges[i].replica == tmp->ranges[i - 1].replica &&
                tmp->ranges[i].first <= tmp->ranges[i - 1].last)
                return -EBADMSG;
    }
    for (size_t i = 0; i < tmp->ranges_len && !rc; i++) {
        const struct counter_range *r = &tmp->ranges[i];
        rc = text_held_add(&text->replicas[r->replica], r->first, r->last);
    }
    for (size_t i = 0; i < text->log_len && !rc; i++) {
        const struct entry *e = &text->log[i];
        rc = text_idrun_add(&text->replicas[e->replica], e->counter, e->lv, e->len);
    }
    return rc;
}

/*
 * Rebuilds the document order (see state_placement) and the tree. The lvs are
 * cut into pieces at every entry start, after every anchor and at both ends
 * of every delete record, so each entry is a row of whole pieces, each anchor
 * ends one and each piece is wholly deleted or not. The pieces are linked in
 * document order by inserting each entry's row after its anchor's piece, in
 * lv order, then joined into runs. Time and memory are in records, not lvs.
 */
static int state_order(struct crdt_text *text, struct state_tmp *tmp)
{
    size_t n_entries = text->log_len, n_dels = text->dels_len;
    size_t n_keys = 2 * n_entries + 2 * n_dels + 1, n_pieces = 0;
    struct order_key *keys = malloc(n_keys * sizeof(*keys));
    struct order_key *spare = malloc(n_keys * sizeof(*keys));
    uint32_t *rank = malloc(n_keys * sizeof(uint32_t));  /* tag -> index of its value */
    uint32_t *bound = malloc(n_keys * sizeof(uint32_t)); /* piece p is [bound[p], bound[p+1]) */
    /* per piece (the last one, index n_pieces, is the head of the list) */
    uint32_t *next = NULL, *owner = NULL, *byte_off = NULL, *bytes = NULL, *deleted = NULL;
    uint32_t *run_of = NULL, *leaf_of = NULL; /* piece -> run, then -> leaf; run -> leaf */
    struct run *runs = NULL;
    uint8_t *gone_of = NULL; /* per run: deleted */
    int rc = -ENOMEM;
    if (!keys || !spare || !rank || !bound)
        goto out;
    /* Tags: entry starts [0, E), after anchors [E, 2E), delete starts and ends, the end. */
    for (size_t i = 0; i < n_entries; i++) {
        uint32_t anchor = tmp->anchor[i];
        keys[i] = (struct order_key){text->log[i].lv, (uint32_t)i};
        keys[n_entries + i] =
            (struct order_key){anchor == LV_NONE ? 0 : anchor + 1, (uint32_t)(n_entries + i)};
    }
    for (size_t i = 0; i < n_dels; i++) {
        const struct delrec *d = &text->dels[i];
        keys[2 * n_entries + i] = (struct order_key){d->lv, (uint32_t)(2 * n_entries + i)};
        keys[2 * n_entries + n_dels + i] =
            (struct order_key){d->lv + d->len, (uint32_t)(2 * n_entries + n_dels + i)};
    }
    keys[n_keys - 1] = (struct order_key){(uint32_t)tmp->lvs, (uint32_t)(n_keys - 1)};
    const struct order_key *sorted = keys_sort(keys, spare, n_keys);
    for (size_t i = 0; i < n_keys; i++) {
        if (i == 0 || sorted[i].value != sorted[i - 1].value)
            bound[n_pieces++] = sorted[i].value;
        rank[sorted[i].tag] = (uint32_t)(n_pieces - 1);
    }
    n_pieces--; /* the last bound, lvs, ends the last piece */
    next = malloc((n_pieces + 1) * sizeof(uint32_t));
    owner = malloc((n_pieces + 1) * sizeof(uint32_t));
    byte_off = malloc((n_pieces + 1) * sizeof(uint32_t));
    bytes = malloc((n_pieces + 1) * sizeof(uint32_t));
    deleted = calloc(n_pieces + 1, sizeof(uint32_t));
    run_of = malloc(n_pieces * sizeof(uint32_t));
    leaf_of = malloc(n_pieces * sizeof(uint32_t));
    runs = malloc(n_pieces * sizeof(struct run));
    gone_of = malloc(n_pieces);
    if (!next || !owner || !byte_off || !bytes || !deleted || !run_of || !leaf_of || !runs ||
        !gone_of)
        goto out;
    /* Deleted pieces: how many delete records cover each, as a running sum of differences. */
    for (size_t i = 0; i < n_dels; i++) {
        deleted[rank[2 * n_entries + i]]++;
        deleted[rank[2 * n_entries + n_dels + i]]--;
    }
    for (size_t p = 1; p < n_pieces; p++)
        deleted[p] += deleted[p - 1];
    /* Each entry's row, then linked after its anchor (the piece ending at anchor + 1). */
    next[n_pieces] = UINT32_MAX;
    for (size_t i = 0; i < n_entries; i++) {
        struct entry *e = &text->log[i];
        uint32_t first = rank[i], last = (i + 1 < n_entries ? rank[i + 1] : rank[n_keys - 1]) - 1;
        uint32_t at = e->byte_off;
        for (uint32_t p = first; p <= last; p++) {
            uint32_t cps = bound[p + 1] - bound[p];
            size_t n = e->compacted ? 0
                       : e->bytes == e->len
                           ? cps
                           : text_utf8_skip(text->arena + at, e->byte_off + e->bytes - at, cps);
            next[p] = p + 1;
            owner[p] = (uint32_t)i;
            byte_off[p] = at;
            bytes[p] = (uint32_t)n;
            at += (uint32_t)n;
        }
        uint32_t anchor = tmp->anchor[i];
        uint32_t after = anchor == LV_NONE ? (uint32_t)n_pieces : rank[n_entries + i] - 1;
        if (!tmp->given[i]) {
            e->ol = anchor;
            e->orr = next[after] == UINT32_MAX ? LV_NONE : bound[next[after]];
        }
        next[last] = next[after];
        next[after] = first;
    }
    /* Runs: pieces following each other in lvs, of one entry, alike deleted. The walk is
     * bounded: every piece is linked exactly once by construction, this guards it. */
    size_t seen = 0, n_runs = 0;
    for (uint32_t p = next[n_pieces]; p != UINT32_MAX; n_runs++) {
        bool gone = deleted[p] != 0;
        if (text->log[owner[p]].compacted && !gone)
            goto bad;
        struct run *run = &runs[n_runs];
        *run = (struct run){bound[p], bound[p + 1] - bound[p], byte_off[p], bytes[p]};
        gone_of[n_runs] = gone;
        run_of[p] = (uint32_t)n_runs;
        uint32_t q = next[p];
        while (q == p + 1 && owner[q] == owner[p] && (deleted[q] != 0) == gone) {
            run->len += bound[q + 1] - bound[q];
            run->bytes += bytes[q];
            run_of[q] = (uint32_t)n_runs;
            p = q;
            q = next[q];
            seen++;
        }
        if (++seen > n_pieces)
            goto bad;
        p = q;
    }
    if (seen != n_pieces)
        goto bad;
    rc = text_tree_build(text, runs, gone_of, n_runs, leaf_of);
    for (size_t p = 0; p < n_pieces && !rc; p++)
        run_of[p] = leaf_of[run_of[p]];
    if (!rc)
        rc = text_marks_build(text, bound, run_of, n_pieces, (uint32_t)tmp->lvs);
    goto out;
bad:
    rc = -EBADMSG;
out:
    free(leaf_of);
    free(run_of);
    free(gone_of);
    free(runs);
    free(deleted);
    free(bytes);
    free(byte_off);
    free(owner);
    free(next);
    free(bound);
    free(rank);
    free(spare);
    free(keys);
    return rc;
}

static int state_decode(struct crdt_text *text, struct crdt_reader *reader)
{
    struct state_tmp tmp = {.ranges_sorted = true};
    int rc = crdt_reader_varint_max(reader, crdt_reader_left(reader), &tmp.n_replicas);
    if (!rc && tmp.n_replicas >= UINT32_MAX)
        rc = -EBADMSG;
    if (rc)
        return rc;
    uint64_t prev_id = 0;
    for (uint64_t i = 0; i < tmp.n_replicas; i++) {
        uint64_t delta, id;
        uint32_t index;
        rc = crdt_reader_varint(reader, &delta);
        if (rc)
            return rc;
        if (i > 0 && (delta == 0 || delta > UINT64_MAX - prev_id))
            return -EBADMSG;
        id = i ? prev_id + delta : delta;
        prev_id = id;
        rc = text_replica_index(&index, text, id);
        if (rc)
            return rc;
    }
    /* Every record takes at least 2 bytes; MAX_RECORDS keeps the order's tags in 32 bits. */
    rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 2, &tmp.n_entries);
    if (!rc)
        rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 2, &tmp.n_dels);
    if (!rc && (tmp.n_entries + tmp.n_dels > crdt_reader_left(reader) / 2 ||
                tmp.n_entries + tmp.n_dels > MAX_RECORDS))
        rc = -EBADMSG;
    if (rc)
        return rc;
    size_t room = tmp.n_entries ? (size_t)tmp.n_entries : 1;
    tmp.anchor = malloc(room * sizeof(uint32_t));
    tmp.given = calloc(room, 1);
    tmp.ranges = malloc((size_t)(tmp.n_entries + tmp.n_dels + 1) * sizeof(*tmp.ranges));
    if (!tmp.anchor || !tmp.given || !tmp.ranges ||
        (tmp.n_entries && GROW(text->log, text->log_cap, (size_t)tmp.n_entries)) ||
        (tmp.n_dels && GROW(text->dels, text->dels_cap, (size_t)tmp.n_dels)))
        rc = -ENOMEM;
    if (!rc)
        rc = read_records(text, reader, &tmp);
    /* Delete records inside the lvs, now that they are known. */
    for (size_t i = 0; i < text->dels_len && !rc; i++)
        if ((uint64_t)text->dels[i].lv + text->dels[i].len > tmp.lvs)
            rc = -EBADMSG;
    if (!rc)
        rc = read_entry_lists(text, reader, &tmp);
    if (!rc)
        rc = read_content(text, reader);
    if (!rc)
        rc = state_ids(text, &tmp);
    if (!rc && text->log_len)
        rc = state_order(text, &tmp);
    free(tmp.ranges);
    free(tmp.given);
    free(tmp.anchor);
    return rc;
}

/*
 * Version 1 of the full state (crdt/README.md): read so that states stored
 * before version 2 still load; nothing writes it any more.
 */
static int state_decode_v1(struct crdt_text *text, struct crdt_reader *reader)
{
    uint64_t n_replicas, n_entries = 0, content_len = 0, n_dels = 0, n_runs = 0;
    uint64_t *next = NULL;
    uint8_t *deleted_bits = NULL, *seen_bits = NULL;
    struct counter_range *ranges = NULL;
    size_t ranges_len = 0, ranges_cap = 0;
    int rc = crdt_reader_varint_max(reader, crdt_reader_left(reader), &n_replicas);
    if (!rc && n_replicas >= UINT32_MAX)
        rc = -EBADMSG;
    if (rc)
        return rc;
    uint64_t prev_id = 0;
    for (uint64_t i = 0; i < n_replicas; i++) {
        uint64_t delta, id;
        uint32_t index;
        rc = crdt_reader_varint(reader, &delta);
        if (rc)
            return rc;
        if (i > 0 && (delta == 0 || delta > UINT64_MAX - prev_id))
            return -EBADMSG;
        id = i ? prev_id + delta : delta;
        prev_id = id;
        rc = text_replica_index(&index, text, id);
        if (rc)
            return rc;
    }
    next = calloc(n_replicas ? n_replicas : 1, sizeof(uint64_t));
    if (!next)
        return -ENOMEM;

    /* Inserts (every entry takes at least 5 bytes). */
    rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 5, &n_entries);
    if (!rc && n_entries && GROW(text->log, text->log_cap, n_entries))
        rc = -ENOMEM;
    uint64_t lvs = 0, content_cps = 0;
    for (uint64_t i = 0; i < n_entries && !rc; i++) {
        struct entry e = {0};
        uint64_t packed, ol, orr;
        rc = read_replica(reader, n_replicas, &e.replica);
        if (!rc)
            rc = read_delta(reader, next[e.replica], &e.counter);
        if (!rc)
            rc = crdt_reader_varint_max(reader, (uint64_t)UINT32_MAX << 1 | 1, &packed);
        if (!rc)
            rc = crdt_reader_varint_max(reader, lvs, &ol);
        if (!rc)
            rc = crdt_reader_varint_max(reader, lvs, &orr);
        if (rc)
            break;
        e.len = (uint32_t)(packed >> 1);
        e.compacted = packed & 1;
        e.lv = (uint32_t)lvs;
        e.ol = ol ? (uint32_t)(lvs - ol) : LV_NONE;
        e.orr = orr ? (uint32_t)(lvs - orr) : LV_NONE;
        if (e.len == 0 || e.counter == 0 || e.counter >= (UINT64_C(1) << 62) ||
            e.len >= (UINT64_C(1) << 62) - e.counter || lvs + e.len >= LV_NONE)
            rc = -EBADMSG;
        next[e.replica] = e.counter + e.len;
        lvs += e.len;
        if (!e.compacted)
            content_cps += e.len;
        text->log[text->log_len++] = e;
        if (!rc && GROW(ranges, ranges_cap, ranges_len + 1))
            rc = -ENOMEM;
        if (!rc)
            ranges[ranges_len++] =
                (struct counter_range){e.replica, e.counter, e.counter + e.len - 1};
    }
    /* Content: valid UTF-8 holding exactly the entries' code points, split in order. */
    const uint8_t *content = NULL;
    size_t cps = 0;
    if (!rc)
        rc = crdt_reader_varint_max(reader, crdt_reader_left(reader), &content_len);
    if (!rc && content_len > UINT32_MAX)
        rc = -EBADMSG;
    if (!rc)
        rc = crdt_reader_raw(reader, (size_t)content_len, &content);
    if (!rc && (!text_utf8_check(&cps, content, (size_t)content_len) || cps != content_cps))
        rc = -EBADMSG;
    if (!rc && content_len && GROW(text->arena, text->arena_cap, (size_t)content_len))
        rc = -ENOMEM;
    if (!rc) {
        if (content_len)
            memcpy(text->arena, content, (size_t)content_len);
        text->arena_len = (size_t)content_len;
        size_t at = 0;
        for (size_t i = 0; i < text->log_len; i++) {
            struct entry *e = &text->log[i];
            size_t bytes =
                e->compacted ? 0 : text_utf8_skip(content + at, content_len - at, e->len);
            e->byte_off = (uint32_t)at;
            e->bytes = (uint32_t)bytes;
            at += bytes;
        }
    }

    /* Deletes (at least 3 bytes each). */
    if (!rc)
        rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 3, &n_dels);
    if (!rc && n_dels && GROW(text->dels, text->dels_cap, n_dels))
        rc = -ENOMEM;
    if (!rc) {
        memset(next, 0, (n_replicas ? n_replicas : 1) * sizeof(uint64_t));
        deleted_bits = calloc(lvs / 8 + 1, 1);
        if (!deleted_bits)
            rc = -ENOMEM;
    }
    uint64_t prev_lv = 0;
    struct counter_range last_del = {UINT32_MAX, 0, 0};
    for (uint64_t i = 0; i < n_dels && !rc; i++) {
        struct delrec d = {0};
        uint64_t packed, lv;
        rc = read_replica(reader, n_replicas, &d.replica);
        if (!rc)
            rc = read_delta(reader, next[d.replica], &d.counter);
        if (!rc)
            rc = read_delta(reader, prev_lv, &lv);
        if (!rc)
            rc = crdt_reader_varint_max(reader, (uint64_t)UINT32_MAX << 2 | 3, &packed);
        if (rc)
            break;
        d.len = (uint32_t)(packed >> 2);
        d.step = (uint32_t)(packed & 3);
        d.lv = (uint32_t)lv;
        uint64_t ops = d.step == DEL_ONE ? 1 : d.len;
        if (d.step > DEL_BACK || d.len == 0 || lv >= lvs || d.len > lvs - lv || d.counter == 0 ||
            d.counter >= (UINT64_C(1) << 62) - ops) {
            rc = -EBADMSG;
            break;
        }
        prev_lv = lv;
        next[d.replica] = d.counter + ops;
        text->dels[text->dels_len++] = d;
        set_bits(deleted_bits, d.lv, d.len);
        /* One op's several targets share a counter: count it once. */
        struct counter_range span = {d.replica, d.counter, d.counter + ops - 1};
        if (last_del.replica == d.replica && last_del.last == span.first)
            span.first++;
        last_del = (struct counter_range){d.replica, d.counter, d.counter + ops - 1};
        if (span.first > span.last)
            continue;
        if (GROW(ranges, ranges_cap, ranges_len + 1))
            rc = -ENOMEM;
        else
            ranges[ranges_len++] = span;
    }
    /* No counter of a replica may be used twice. */
    if (!rc && ranges_len) {
        qsort(ranges, ranges_len, sizeof(*ranges), range_cmp);
        for (size_t i = 1; i < ranges_len && !rc; i++)
            if (ranges[i].replica == ranges[i - 1].replica && ranges[i].first <= ranges[i - 1].last)
                rc = -EBADMSG;
        for (size_t i = 0; i < ranges_len && !rc; i++)
            rc = text_held_add(&text->replicas[ranges[i].replica], ranges[i].first, ranges[i].last);
    }
    for (size_t i = 0; i < text->log_len && !rc; i++) {
        const struct entry *e = &text->log[i];
        rc = text_idrun_add(&text->replicas[e->replica], e->counter, e->lv, e->len);
    }

    /* Document order: every lv exactly once, each run inside one entry, deleted flags as
     * the delete records say, compacted entries deleted. */
    if (!rc)
        rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 2, &n_runs);
    if (!rc && !(seen_bits = calloc(lvs / 8 + 1, 1)))
        rc = -ENOMEM;
    uint64_t prev_end = 0, covered = 0;
    for (uint64_t i = 0; i < n_runs && !rc; i++) {
        uint64_t lv, packed;
        rc = read_delta(reader, prev_end, &lv);
        if (!rc)
            rc = crdt_reader_varint_max(reader, (uint64_t)UINT32_MAX << 1 | 1, &packed);
        if (rc)
            break;
        uint32_t len = (uint32_t)(packed >> 1);
        bool deleted = packed & 1;
        if (len == 0 || lv >= lvs || len > lvs - lv) {
            rc = -EBADMSG;
            break;
        }
        const struct entry *e = text_log_find(text, (uint32_t)lv);
        if (lv + len > (uint64_t)e->lv + e->len || (e->compacted && !deleted)) {
            rc = -EBADMSG;
            break;
        }
        for (uint32_t k = (uint32_t)lv; k < lv + len; k++) {
            if (bit(seen_bits, k) || bit(deleted_bits, k) != deleted) {
                rc = -EBADMSG;
                break;
            }
        }
        if (rc)
            break;
        set_bits(seen_bits, (uint32_t)lv, len);
        covered += len;
        prev_end = lv + len;
        struct run run = {(uint32_t)lv, len, e->byte_off, 0};
        if (!e->compacted) {
            const uint8_t *s = text->arena + e->byte_off;
            uint32_t skip = (uint32_t)lv - e->lv;
            size_t from = e->bytes == e->len ? skip : text_utf8_skip(s, e->bytes, skip);
            size_t to = e->bytes == e->len ? skip + len : text_utf8_skip(s, e->bytes, skip + len);
            run.byte_off = e->byte_off + (uint32_t)from;
            run.bytes = (uint32_t)(to - from);
        }
        rc = text_tree_append_run(text, run, deleted);
    }
    if (!rc && covered != lvs)
        rc = -EBADMSG;
    free(ranges);
    free(seen_bits);
    free(deleted_bits);
    free(next);
    return rc;
}

int crdt_text_decode_state(struct crdt_text **out, const void *data, size_t len)
{
    struct crdt_text *text;
    int rc = crdt_text_new(&text);
    if (rc)
        return rc;
    struct crdt_reader reader;
    crdt_reader_init(&reader, data, len);
    uint8_t version;
    rc = crdt_reader_u8(&reader, &version);
    if (!rc)
        rc = version == TEXT_STATE_VERSION ? state_decode(text, &reader)
             : version == TEXT_STATE_V1    ? state_decode_v1(text, &reader)
                                           : -EBADMSG;
    if (!rc && crdt_reader_left(&reader))
        rc = -EBADMSG;
    if (rc) {
        crdt_text_free(text);
        return rc;
    }
    *out = text;
    return 0;
}

/* ------------------------------------------------------------------ compaction */

int crdt_text_compact(struct crdt_text *text, const struct crdt_vv *stable)
{
    uint32_t lvs =
        text->log_len ? text->log[text->log_len - 1].lv + text->log[text->log_len - 1].len : 0;
    uint8_t *stable_del = calloc(lvs / 8 + 1, 1);
    uint32_t *old_off = malloc((text->log_len ? text->log_len : 1) * sizeof(uint32_t));
    int rc = 0;
    if (!stable_del || !old_off) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < text->dels_len; i++) {
        const struct delrec *d = &text->dels[i];
        uint64_t have = crdt_vv_get(stable, text->replicas[d->replica].id);
        if (d->step == DEL_ONE) {
            if (d->counter <= have)
                set_bits(stable_del, d->lv, d->len);
            continue;
        }
        for (uint32_t k = 0; k < d->len && d->counter + k <= have; k++)
            set_bits(stable_del, d->step == DEL_FWD ? d->lv + k : d->lv + d->len - 1 - k, 1);
    }
    /* Whole entries only: an entry is dropped when its insert and every char's delete are
     * stable, so no replica will ever ask for its text again. */
    size_t at = 0;
    for (size_t i = 0; i < text->log_len; i++) {
        struct entry *e = &text->log[i];
        old_off[i] = e->byte_off;
        if (!e->compacted &&
            e->counter + e->len - 1 <= crdt_vv_get(stable, text->replicas[e->replica].id)) {
            bool all = true;
            for (uint32_t k = e->lv; k < e->lv + e->len && all; k++)
                all = bit(stable_del, k);
            if (all) {
                e->compacted = true;
                e->bytes = 0;
            }
        }
        memmove(text->arena + at, text->arena + old_off[i], e->bytes);
        e->byte_off = (uint32_t)at;
        at += e->bytes;
    }
    text->arena_len = at;
    for (size_t i = 0; i < text->leaves_len; i++) {
        struct leaf *leaf = text->leaves[i];
        for (uint32_t k = 0; k < leaf->hdr.count; k++) {
            struct run *run = &leaf->runs[k];
            const struct entry *e = text_log_find(text, run->lv);
            if (e->compacted) {
                run->byte_off = e->byte_off;
                run->bytes = 0;
            } else {
                run->byte_off = e->byte_off + (run->byte_off - old_off[e - text->log]);
            }
        }
    }
    if (text->arena_len < text->arena_cap / 2) {
        uint8_t *smaller = realloc(text->arena, text->arena_len ? text->arena_len : 1);
        if (smaller) {
            text->arena = smaller;
            text->arena_cap = text->arena_len ? text->arena_len : 1;
        }
    }
out:
    free(stable_del);
    free(old_off);
    return rc;
}
