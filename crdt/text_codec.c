/*
 * crdt/text_codec: op lists (their memory and their wire format), the ops a
 * peer lacks, the full-state encoding, and compaction. Formats are specified
 * byte by byte in crdt/README.md ("## text").
 */
#include "text_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_OPS_VERSION   1
#define TEXT_STATE_VERSION 1

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
        if (op->bytes_len) {
            uint8_t *bytes = ops_alloc(ops, op->bytes_len);
            if (!bytes)
                return -ENOMEM;
            memcpy(bytes, op->bytes, op->bytes_len);
            copy.bytes = bytes;
        }
    } else {
        copy.bytes = NULL;
        copy.bytes_len = copy.len = 0;
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

/* Sorted, distinct replica ids of an op list (the table the ops format indexes). */
static int ops_replicas(uint64_t **out, size_t *out_len, const struct crdt_text_ops *ops)
{
    size_t len = 0, cap = 0;
    uint64_t *ids = NULL;
    for (size_t i = 0; i < ops->len; i++) {
        const struct crdt_text_op *op = &ops->ops[i];
        struct crdt_ts refs[2] = {op->origin_left, op->origin_right};
        size_t extra = op->kind == CRDT_TEXT_INSERT ? 3 : 1 + op->targets_len;
        if (GROW(ids, cap, len + extra)) {
            free(ids);
            return -ENOMEM;
        }
        ids[len++] = op->id.replica;
        if (op->kind == CRDT_TEXT_INSERT) {
            for (int k = 0; k < 2; k++)
                if (refs[k].counter)
                    ids[len++] = refs[k].replica;
        } else {
            for (size_t k = 0; k < op->targets_len; k++)
                ids[len++] = op->targets[k].first.replica;
        }
        /* Keep the table small as we go: sort and drop duplicates every so often. */
        if (len > 4096 || i + 1 == ops->len) {
            for (size_t a = 1; a < len; a++) {
                uint64_t v = ids[a];
                size_t b = a;
                while (b > 0 && ids[b - 1] > v) {
                    ids[b] = ids[b - 1];
                    b--;
                }
                ids[b] = v;
            }
            size_t kept = 0;
            for (size_t a = 0; a < len; a++)
                if (kept == 0 || ids[kept - 1] != ids[a])
                    ids[kept++] = ids[a];
            len = kept;
        }
    }
    *out = ids;
    *out_len = len;
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
        crdt_buf_put_u8(buf, (uint8_t)op->kind);
        put_ref(buf, ids, n, op->id);
        if (op->kind == CRDT_TEXT_INSERT) {
            crdt_buf_put_varint(buf, op->len);
            put_ref(buf, ids, n, op->origin_left);
            put_ref(buf, ids, n, op->origin_right);
            crdt_buf_put_bytes(buf, op->bytes, op->bytes_len);
        } else {
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
    if (!rc && version != TEXT_OPS_VERSION)
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
        if (!rc && kind != CRDT_TEXT_INSERT && kind != CRDT_TEXT_DELETE)
            rc = -EBADMSG;
        if (!rc)
            rc = read_ref(reader, ids, n, false, &op.id);
        if (rc)
            break;
        op.kind = kind;
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
    while (len > 0) {
        const struct entry *e = text_log_find(text, lv);
        uint32_t n = e->lv + e->len - lv < len ? e->lv + e->len - lv : len;
        struct crdt_ts first = {e->counter + (lv - e->lv), text->replicas[e->replica].id};
        struct crdt_text_span *last = acc->len ? &acc->spans[acc->len - 1] : NULL;
        if (last && last->first.replica == first.replica &&
            last->first.counter + last->len == first.counter) {
            last->len += n;
        } else {
            if (GROW(acc->spans, acc->cap, acc->len + 1))
                return -ENOMEM;
            acc->spans[acc->len++] = (struct crdt_text_span){first, n};
        }
        lv += n;
        len -= n;
    }
    return 0;
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
        for (uint32_t k = 0; k < d->len && !rc; k++) {
            if (d->counter + k <= have)
                continue;
            uint32_t lv = d->step == DEL_FWD ? d->lv + k : d->lv + d->len - 1 - k;
            rc = del_emit(out, &acc, text, (struct crdt_ts){d->counter + k, replica}, lv, 1);
        }
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

int crdt_text_encode_state(struct crdt_buf *buf, const struct crdt_text *text)
{
    uint32_t *pos;
    int rc = sorted_positions(&pos, text);
    if (rc)
        return rc;
    uint64_t *next = calloc(text->replicas_len ? text->replicas_len : 1, sizeof(uint64_t));
    if (!next) {
        free(pos);
        return -ENOMEM;
    }
    crdt_buf_put_u8(buf, TEXT_STATE_VERSION);
    crdt_buf_put_varint(buf, text->replicas_len);
    for (size_t i = 0; i < text->replicas_len; i++) {
        uint64_t id = text->replicas[text->by_id[i]].id;
        crdt_buf_put_varint(buf, i ? id - text->replicas[text->by_id[i - 1]].id : id);
    }
    /* Inserts: counters as the difference from where that replica's last run ended. */
    crdt_buf_put_varint(buf, text->log_len);
    size_t content = 0;
    for (size_t i = 0; i < text->log_len; i++) {
        const struct entry *e = &text->log[i];
        if (text->replicas_len > 1)
            crdt_buf_put_varint(buf, pos[e->replica]);
        crdt_buf_put_svarint(buf, (int64_t)(e->counter - next[e->replica]));
        next[e->replica] = e->counter + e->len;
        crdt_buf_put_varint(buf, (uint64_t)e->len << 1 | e->compacted);
        crdt_buf_put_varint(buf, e->ol == LV_NONE ? 0 : e->lv - e->ol);
        crdt_buf_put_varint(buf, e->orr == LV_NONE ? 0 : e->lv - e->orr);
        content += e->bytes;
    }
    crdt_buf_put_varint(buf, content);
    for (size_t i = 0; i < text->log_len; i++)
        crdt_buf_put(buf, text->arena + text->log[i].byte_off, text->log[i].bytes);
    /* Deletes: counters from where that replica's last delete record ended, lvs relative to
     * the previous record. */
    memset(next, 0, (text->replicas_len ? text->replicas_len : 1) * sizeof(uint64_t));
    crdt_buf_put_varint(buf, text->dels_len);
    uint32_t prev_lv = 0;
    for (size_t i = 0; i < text->dels_len; i++) {
        const struct delrec *d = &text->dels[i];
        if (text->replicas_len > 1)
            crdt_buf_put_varint(buf, pos[d->replica]);
        crdt_buf_put_svarint(buf, (int64_t)(d->counter - next[d->replica]));
        next[d->replica] = d->counter + (d->step == DEL_ONE ? 1 : d->len);
        crdt_buf_put_svarint(buf, (int64_t)d->lv - (int64_t)prev_lv);
        prev_lv = d->lv;
        crdt_buf_put_varint(buf, (uint64_t)d->len << 2 | d->step);
    }
    /* Document order: each run's lv relative to where the previous run ended. */
    size_t runs = 0;
    for (size_t i = 0; i < text->leaves_len; i++)
        runs += text->leaves[i]->hdr.count;
    crdt_buf_put_varint(buf, runs);
    uint32_t prev_end = 0;
    for (const struct leaf *leaf = text->leaves[0]; leaf; leaf = leaf->next) {
        for (uint32_t i = 0; i < leaf->hdr.count; i++) {
            const struct run *run = &leaf->runs[i];
            crdt_buf_put_svarint(buf, (int64_t)run->lv - (int64_t)prev_end);
            crdt_buf_put_varint(buf, (uint64_t)run->len << 1 | leaf->deleted[i]);
            prev_end = run->lv + run->len;
        }
    }
    free(next);
    free(pos);
    return crdt_buf_status(buf);
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

static int state_decode(struct crdt_text *text, struct crdt_reader *reader)
{
    uint8_t version;
    uint64_t n_replicas, n_entries = 0, content_len = 0, n_dels = 0, n_runs = 0;
    uint64_t *next = NULL;
    uint8_t *deleted_bits = NULL, *seen_bits = NULL;
    struct counter_range *ranges = NULL;
    size_t ranges_len = 0, ranges_cap = 0;
    int rc = crdt_reader_u8(reader, &version);
    if (!rc && version != TEXT_STATE_VERSION)
        rc = -EBADMSG;
    if (!rc)
        rc = crdt_reader_varint_max(reader, crdt_reader_left(reader), &n_replicas);
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
    rc = state_decode(text, &reader);
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
