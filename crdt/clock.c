/* crdt/clock: see clock.h. */
#include "clock.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int crdt_ts_cmp(struct crdt_ts a, struct crdt_ts b)
{
    if (a.counter != b.counter)
        return a.counter < b.counter ? -1 : 1;
    if (a.replica != b.replica)
        return a.replica < b.replica ? -1 : 1;
    return 0;
}

bool crdt_ts_is_none(struct crdt_ts ts)
{
    return ts.counter == 0;
}

void crdt_clock_init(struct crdt_clock *clock, uint64_t replica)
{
    clock->replica = replica;
    clock->counter = 0;
    clock->seq = 0;
}

struct crdt_ts crdt_clock_tick(struct crdt_clock *clock, uint64_t *seq_out)
{
    clock->counter++;
    clock->seq++;
    if (seq_out)
        *seq_out = clock->seq;
    return (struct crdt_ts){.counter = clock->counter, .replica = clock->replica};
}

struct crdt_ts crdt_clock_tick_n(struct crdt_clock *clock, uint64_t count, uint64_t *seq_out)
{
    struct crdt_ts first = crdt_clock_tick(clock, seq_out);
    if (count > 1)
        clock->counter += count - 1;
    return first;
}

void crdt_clock_observe(struct crdt_clock *clock, struct crdt_ts seen)
{
    if (seen.counter > clock->counter)
        clock->counter = seen.counter;
}

void crdt_vv_free(struct crdt_vv *vv)
{
    free(vv->entries);
    memset(vv, 0, sizeof(*vv));
}

/* Index of the first entry with replica >= `replica`. */
static size_t vv_find(const struct crdt_vv *vv, uint64_t replica)
{
    size_t lo = 0, hi = vv->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vv->entries[mid].replica < replica)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

uint64_t crdt_vv_get(const struct crdt_vv *vv, uint64_t replica)
{
    size_t at = vv_find(vv, replica);
    if (at < vv->len && vv->entries[at].replica == replica)
        return vv->entries[at].seq;
    return 0;
}

static int vv_grow(struct crdt_vv *vv, size_t need)
{
    if (need <= vv->cap)
        return 0;
    size_t cap = vv->cap ? vv->cap * 2 : 4;
    while (cap < need)
        cap *= 2;
    struct crdt_vv_entry *grown = realloc(vv->entries, cap * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    vv->entries = grown;
    vv->cap = cap;
    return 0;
}

int crdt_vv_raise(struct crdt_vv *vv, uint64_t replica, uint64_t seq)
{
    if (seq == 0)
        return 0;
    size_t at = vv_find(vv, replica);
    if (at < vv->len && vv->entries[at].replica == replica) {
        if (vv->entries[at].seq < seq)
            vv->entries[at].seq = seq;
        return 0;
    }
    int rc = vv_grow(vv, vv->len + 1);
    if (rc)
        return rc;
    memmove(&vv->entries[at + 1], &vv->entries[at], (vv->len - at) * sizeof(vv->entries[0]));
    vv->entries[at] = (struct crdt_vv_entry){.replica = replica, .seq = seq};
    vv->len++;
    return 0;
}

bool crdt_vv_includes(const struct crdt_vv *vv, uint64_t replica, uint64_t seq)
{
    return seq <= crdt_vv_get(vv, replica);
}

int crdt_vv_merge(struct crdt_vv *dst, const struct crdt_vv *src)
{
    for (size_t i = 0; i < src->len; i++) {
        int rc = crdt_vv_raise(dst, src->entries[i].replica, src->entries[i].seq);
        if (rc)
            return rc;
    }
    return 0;
}

int crdt_vv_meet(struct crdt_vv *dst, const struct crdt_vv *src)
{
    size_t kept = 0;
    for (size_t i = 0; i < dst->len; i++) {
        uint64_t theirs = crdt_vv_get(src, dst->entries[i].replica);
        uint64_t mine = dst->entries[i].seq;
        uint64_t both = mine < theirs ? mine : theirs;
        if (both == 0)
            continue;
        dst->entries[kept].replica = dst->entries[i].replica;
        dst->entries[kept].seq = both;
        kept++;
    }
    dst->len = kept;
    return 0;
}

int crdt_vv_copy(struct crdt_vv *dst, const struct crdt_vv *src)
{
    struct crdt_vv fresh = {0};
    int rc = vv_grow(&fresh, src->len);
    if (rc)
        return rc;
    if (src->len)
        memcpy(fresh.entries, src->entries, src->len * sizeof(src->entries[0]));
    fresh.len = src->len;
    crdt_vv_free(dst);
    *dst = fresh;
    return 0;
}

enum crdt_vv_order crdt_vv_compare(const struct crdt_vv *a, const struct crdt_vv *b)
{
    bool a_more = false, b_more = false;
    size_t i = 0, j = 0;
    while (i < a->len || j < b->len) {
        uint64_t seq_a = 0, seq_b = 0;
        if (j >= b->len || (i < a->len && a->entries[i].replica < b->entries[j].replica)) {
            seq_a = a->entries[i++].seq;
        } else if (i >= a->len || b->entries[j].replica < a->entries[i].replica) {
            seq_b = b->entries[j++].seq;
        } else {
            seq_a = a->entries[i++].seq;
            seq_b = b->entries[j++].seq;
        }
        if (seq_a > seq_b)
            a_more = true;
        else if (seq_b > seq_a)
            b_more = true;
    }
    if (a_more && b_more)
        return CRDT_VV_CONCURRENT;
    if (a_more)
        return CRDT_VV_AFTER;
    if (b_more)
        return CRDT_VV_BEFORE;
    return CRDT_VV_EQUAL;
}

int crdt_vv_missing(struct crdt_seq_range **out, size_t *out_len, const struct crdt_vv *have,
                    const struct crdt_vv *other)
{
    *out = NULL;
    *out_len = 0;
    struct crdt_seq_range *ranges = NULL;
    size_t n = 0;
    for (size_t i = 0; i < have->len; i++) {
        uint64_t theirs = crdt_vv_get(other, have->entries[i].replica);
        if (theirs >= have->entries[i].seq)
            continue;
        if (!ranges) {
            ranges = malloc(have->len * sizeof(*ranges));
            if (!ranges)
                return -ENOMEM;
        }
        ranges[n++] = (struct crdt_seq_range){
            .replica = have->entries[i].replica,
            .first = theirs + 1,
            .last = have->entries[i].seq,
        };
    }
    *out = ranges;
    *out_len = n;
    return 0;
}

void crdt_ts_encode(struct crdt_buf *buf, struct crdt_ts ts)
{
    crdt_buf_put_varint(buf, ts.counter);
    crdt_buf_put_varint(buf, ts.replica);
}

int crdt_ts_decode(struct crdt_reader *reader, struct crdt_ts *out)
{
    int rc = crdt_reader_varint(reader, &out->counter);
    if (rc)
        return rc;
    return crdt_reader_varint(reader, &out->replica);
}

void crdt_vv_encode(struct crdt_buf *buf, const struct crdt_vv *vv)
{
    crdt_buf_put_varint(buf, vv->len);
    uint64_t prev = 0;
    for (size_t i = 0; i < vv->len; i++) {
        crdt_buf_put_varint(buf, vv->entries[i].replica - prev);
        crdt_buf_put_varint(buf, vv->entries[i].seq);
        prev = vv->entries[i].replica;
    }
}

int crdt_vv_decode(struct crdt_reader *reader, struct crdt_vv *out)
{
    struct crdt_vv vv = {0};
    uint64_t count;
    /* Each entry takes at least two bytes, which bounds the allocation by the input. */
    int rc = crdt_reader_varint_max(reader, crdt_reader_left(reader) / 2, &count);
    if (rc)
        return rc;
    rc = vv_grow(&vv, (size_t)count);
    if (rc)
        return rc;
    uint64_t replica = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t delta, seq;
        if ((rc = crdt_reader_varint(reader, &delta)) || (rc = crdt_reader_varint(reader, &seq)))
            goto fail;
        if ((i > 0 && delta == 0) || delta > UINT64_MAX - replica || seq == 0) {
            rc = -EBADMSG;
            goto fail;
        }
        replica += delta;
        vv.entries[vv.len++] = (struct crdt_vv_entry){.replica = replica, .seq = seq};
    }
    *out = vv;
    return 0;
fail:
    crdt_vv_free(&vv);
    return rc;
}
