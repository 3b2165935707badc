/*
 * crdt/text: the document: B-tree of runs, lv marks, log, local and remote
 * edits, reads. Encodings live in text_codec.c. See text_internal.h for the
 * data structures and their invariants.
 */
#include "text_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int text_grow(void *arr_ptr, size_t *cap, size_t need, size_t elem)
{
    void *old;
    memcpy(&old, arr_ptr, sizeof(old));
    size_t fresh_cap = *cap ? *cap : 4;
    while (fresh_cap < need) {
        if (fresh_cap > SIZE_MAX / 4 / elem)
            return -ENOMEM;
        fresh_cap += fresh_cap / 2 + 4;
    }
    void *fresh = realloc(old, fresh_cap * elem);
    if (!fresh)
        return -ENOMEM;
    memcpy(arr_ptr, &fresh, sizeof(fresh));
    *cap = fresh_cap;
    return 0;
}

/* ------------------------------------------------------------------ UTF-8 */

/* Validates UTF-8 (no overlongs, surrogates or > U+10FFFF) and counts code points. */
bool text_utf8_check(size_t *cp_out, const uint8_t *s, size_t len)
{
    size_t cps = 0, i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            cps++;
            continue;
        }
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return false;
        }
        if (len - i < n || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += n;
        cps++;
    }
    *cp_out = cps;
    return true;
}

/* Byte offset of code point `cps` in valid UTF-8 `s` of `bytes` bytes. */
size_t text_utf8_skip(const uint8_t *s, size_t bytes, size_t cps)
{
    size_t i = 0;
    while (cps > 0 && i < bytes) {
        i++;
        while (i < bytes && (s[i] & 0xC0) == 0x80)
            i++;
        cps--;
    }
    return i;
}

/* Code points in the first `bytes` bytes of valid UTF-8 `s`. */
static size_t utf8_count_prefix(const uint8_t *s, size_t bytes)
{
    size_t cps = 0;
    for (size_t i = 0; i < bytes; i++)
        cps += (s[i] & 0xC0) != 0x80;
    return cps;
}

static size_t run_byte_at(const struct crdt_text *text, const struct run *run, uint32_t off)
{
    if (run->bytes == run->len || run->bytes == 0)
        return run->bytes ? off : 0;
    return text_utf8_skip(text->arena + run->byte_off, run->bytes, off);
}

/* ------------------------------------------------------------ log, ids */

static uint32_t lv_count(const struct crdt_text *text)
{
    if (!text->log_len)
        return 0;
    const struct entry *last = &text->log[text->log_len - 1];
    return last->lv + last->len;
}

/* The log entry holding lv (which must exist). */
const struct entry *text_log_find(const struct crdt_text *text, uint32_t lv)
{
    size_t lo = 0, hi = text->log_len;
    if (hi && text->log[hi - 1].lv <= lv)
        return &text->log[hi - 1];
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (text->log[mid].lv <= lv)
            lo = mid;
        else
            hi = mid;
    }
    return &text->log[lo];
}

struct crdt_ts text_lv_to_id(const struct crdt_text *text, uint32_t lv)
{
    if (lv == LV_NONE)
        return (struct crdt_ts){0, 0};
    const struct entry *e = text_log_find(text, lv);
    return (struct crdt_ts){e->counter + (lv - e->lv), text->replicas[e->replica].id};
}

bool text_replica_find(uint32_t *out, const struct crdt_text *text, uint64_t id)
{
    size_t lo = 0, hi = text->replicas_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t mid_id = text->replicas[text->by_id[mid]].id;
        if (mid_id == id) {
            *out = text->by_id[mid];
            return true;
        }
        if (mid_id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

int text_replica_index(uint32_t *out, struct crdt_text *text, uint64_t id)
{
    if (text_replica_find(out, text, id))
        return 0;
    if (text->replicas_len >= UINT32_MAX - 1)
        return -EOVERFLOW;
    if (GROW(text->replicas, text->replicas_cap, text->replicas_len + 1) ||
        GROW(text->by_id, text->by_id_cap, text->replicas_len + 1))
        return -ENOMEM;
    uint32_t index = (uint32_t)text->replicas_len;
    text->replicas[index] = (struct replica){.id = id};
    size_t at = 0;
    while (at < text->replicas_len && text->replicas[text->by_id[at]].id < id)
        at++;
    memmove(&text->by_id[at + 1], &text->by_id[at], (text->replicas_len - at) * sizeof(uint32_t));
    text->by_id[at] = index;
    text->replicas_len++;
    *out = index;
    return 0;
}

/* Index of the last idrun with counter <= c, or SIZE_MAX. */
static size_t idrun_find(const struct replica *rep, uint64_t c)
{
    size_t lo = 0, hi = rep->ins_len;
    if (!hi || rep->ins[0].counter > c)
        return SIZE_MAX;
    if (rep->ins[hi - 1].counter <= c)
        return hi - 1;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (rep->ins[mid].counter <= c)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

bool text_id_to_lv(uint32_t *out, const struct crdt_text *text, struct crdt_ts id)
{
    uint32_t r;
    if (!text_replica_find(&r, text, id.replica))
        return false;
    const struct replica *rep = &text->replicas[r];
    size_t at = idrun_find(rep, id.counter);
    if (at == SIZE_MAX || id.counter - rep->ins[at].counter >= rep->ins[at].len)
        return false;
    *out = rep->ins[at].lv + (uint32_t)(id.counter - rep->ins[at].counter);
    return true;
}

int text_idrun_add(struct replica *rep, uint64_t counter, uint32_t lv, uint32_t len)
{
    if (rep->ins_len) {
        struct idrun *last = &rep->ins[rep->ins_len - 1];
        if (last->counter + last->len == counter && last->lv + last->len == lv &&
            last->len <= UINT32_MAX - len) {
            last->len += len;
            return 0;
        }
    }
    if (GROW(rep->ins, rep->ins_cap, rep->ins_len + 1))
        return -ENOMEM;
    size_t at = rep->ins_len;
    while (at > 0 && rep->ins[at - 1].counter > counter)
        at--;
    memmove(&rep->ins[at + 1], &rep->ins[at], (rep->ins_len - at) * sizeof(rep->ins[0]));
    rep->ins[at] = (struct idrun){counter, lv, len};
    rep->ins_len++;
    return 0;
}

/* Index of the last held range with first <= c, or SIZE_MAX. */
static size_t held_find(const struct replica *rep, uint64_t c)
{
    size_t lo = 0, hi = rep->held_len;
    if (!hi || rep->held[0].first > c)
        return SIZE_MAX;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (rep->held[mid].first <= c)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

bool text_held_has(const struct replica *rep, uint64_t counter)
{
    size_t at = held_find(rep, counter);
    return at != SIZE_MAX && counter <= rep->held[at].last;
}

int text_held_add(struct replica *rep, uint64_t first, uint64_t last)
{
    size_t at = held_find(rep, first);
    if (at != SIZE_MAX && rep->held[at].last + 1 >= first) {
        if (rep->held[at].last < last)
            rep->held[at].last = last;
    } else {
        if (GROW(rep->held, rep->held_cap, rep->held_len + 1))
            return -ENOMEM;
        at = at == SIZE_MAX ? 0 : at + 1;
        memmove(&rep->held[at + 1], &rep->held[at], (rep->held_len - at) * sizeof(rep->held[0]));
        rep->held[at] = (struct held){first, last};
        rep->held_len++;
    }
    /* Swallow the ranges the grown one now touches. */
    size_t next = at + 1;
    while (next < rep->held_len && rep->held[next].first <= rep->held[at].last + 1) {
        if (rep->held[next].last > rep->held[at].last)
            rep->held[at].last = rep->held[next].last;
        next++;
    }
    memmove(&rep->held[at + 1], &rep->held[next], (rep->held_len - next) * sizeof(rep->held[0]));
    rep->held_len -= next - at - 1;
    return 0;
}

static uint32_t del_ops(const struct delrec *d)
{
    return d->step == DEL_ONE ? 1 : d->len;
}

int text_dellog_add(struct crdt_text *text, uint64_t counter, uint32_t replica, uint32_t lv,
                    uint32_t len, bool one_char_op)
{
    if (one_char_op && len == 1 && text->dels_len) {
        struct delrec *d = &text->dels[text->dels_len - 1];
        bool single = d->step == DEL_ONE && d->len == 1;
        if (d->replica == replica && d->counter + del_ops(d) == counter && d->len < UINT32_MAX) {
            if ((single || d->step == DEL_FWD) && lv == d->lv + d->len) {
                d->step = DEL_FWD;
                d->len++;
                return 0;
            }
            if ((single || d->step == DEL_BACK) && lv + 1 == d->lv) {
                d->step = DEL_BACK;
                d->lv--;
                d->len++;
                return 0;
            }
        }
    }
    if (GROW(text->dels, text->dels_cap, text->dels_len + 1))
        return -ENOMEM;
    text->dels[text->dels_len++] = (struct delrec){counter, replica, lv, len, DEL_ONE};
    return 0;
}

/*
 * What n calls text_dellog_add(counter + k, replica, lv_k, 1, true) would do,
 * k = 0 .. n-1, with lv_k = lv + k, or lv + n - 1 - k if `backward`: the n
 * one-character deletes of a delete run's piece. Calls are made one by one
 * until the last record is a step record that the next part continues (at
 * most three: a part may first join the record before, then start a record
 * of its own, which the next one turns into a step record); from there on
 * each call would only extend that record by one, so the rest extends it at
 * once, as far as a record's length allows.
 */
int text_dellog_add_parts(struct crdt_text *text, uint64_t counter, uint32_t replica, uint32_t lv,
                          uint32_t n, bool backward)
{
    uint32_t k = 0;
    while (k < n) {
        uint32_t at = backward ? lv + (n - 1 - k) : lv + k;
        struct delrec *d = text->dels_len ? &text->dels[text->dels_len - 1] : NULL;
        if (d && d->replica == replica && d->counter + d->len == counter + k &&
            d->step == (backward ? DEL_BACK : DEL_FWD) &&
            (backward ? at + 1 == d->lv : at == d->lv + d->len) && d->len < UINT32_MAX) {
            uint32_t take = n - k < UINT32_MAX - d->len ? n - k : UINT32_MAX - d->len;
            if (backward)
                d->lv -= take;
            d->len += take;
            k += take;
            continue;
        }
        int rc = text_dellog_add(text, counter + k, replica, at, 1, true);
        if (rc)
            return rc;
        k++;
    }
    return 0;
}

/* ------------------------------------------------------------------ marks */

struct leaf *text_mark_get(const struct crdt_text *text, uint32_t lv)
{
    const struct mark_chunk *chunk = &text->marks[lv >> MARK_SHIFT];
    size_t lo = 0, hi = chunk->len;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (chunk->marks[mid].start <= lv)
            lo = mid;
        else
            hi = mid;
    }
    return text->leaves[chunk->marks[lo].leaf];
}

/* Number of marks with start < lv (strict) or <= lv. */
static size_t mark_count_before(const struct mark_chunk *chunk, uint32_t lv, bool inclusive)
{
    size_t lo = 0, hi = chunk->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (chunk->marks[mid].start < lv || (inclusive && chunk->marks[mid].start == lv))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/*
 * Maps [lo, hi) (inside one chunk; `limit` = lvs allocated) to `leaf`. Lvs may
 * be mapped in any order (the state decoder maps them in document order), so a
 * chunk's first mark need not start at the chunk's base until all are mapped.
 */
static int chunk_set(struct mark_chunk *chunk, uint32_t lo, uint32_t hi, uint32_t leaf,
                     uint32_t limit)
{
    size_t i = mark_count_before(chunk, lo, true);  /* marks[i-1] covers lo, if any */
    size_t j = mark_count_before(chunk, hi, false); /* marks[j-1] covers hi - 1 */
    uint32_t next_start = j < chunk->len ? chunk->marks[j].start : limit;
    if (i == j && i > 0 && chunk->marks[i - 1].leaf == leaf)
        return 0;
    size_t head = i > 0 && chunk->marks[i - 1].start == lo ? i - 1 : i;
    size_t tail = j > 0 && hi < next_start ? 1 : 0;
    uint32_t tail_leaf = j > 0 ? chunk->marks[j - 1].leaf : 0;
    size_t suffix = chunk->len - j;
    size_t new_len = head + 1 + tail + suffix;
    if (GROW(chunk->marks, chunk->cap, new_len))
        return -ENOMEM;
    memmove(&chunk->marks[head + 1 + tail], &chunk->marks[j], suffix * sizeof(struct mark));
    chunk->marks[head] = (struct mark){lo, leaf};
    if (tail)
        chunk->marks[head + 1] = (struct mark){hi, tail_leaf};
    /* Neighbours pointing at the same leaf merge. */
    size_t to = 1;
    for (size_t k = 1; k < new_len; k++)
        if (chunk->marks[k].leaf != chunk->marks[to - 1].leaf)
            chunk->marks[to++] = chunk->marks[k];
    chunk->len = to;
    return 0;
}

int text_mark_set(struct crdt_text *text, uint32_t lo, uint32_t hi, uint32_t leaf)
{
    if (lo >= hi)
        return 0;
    size_t last_chunk = (hi - 1) >> MARK_SHIFT;
    if (last_chunk >= text->marks_len) {
        if (GROW(text->marks, text->marks_cap, last_chunk + 1))
            return -ENOMEM;
        memset(&text->marks[text->marks_len], 0,
               (last_chunk + 1 - text->marks_len) * sizeof(struct mark_chunk));
        text->marks_len = last_chunk + 1;
    }
    uint32_t limit = lv_count(text);
    for (size_t k = lo >> MARK_SHIFT; k <= last_chunk; k++) {
        uint32_t base = (uint32_t)(k << MARK_SHIFT);
        uint32_t a = lo > base ? lo : base;
        uint32_t end = base + (1u << MARK_SHIFT) - 1;
        uint32_t b = hi - 1 < end ? hi : end + 1;
        int rc = chunk_set(&text->marks[k], a, b, leaf, limit < end + 1 ? limit : end + 1);
        if (rc)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------- tree */

enum metric { M_CP, M_BYTES, M_TOTAL };

static size_t node_metric(const struct node *node, enum metric metric)
{
    return metric == M_CP ? node->vis_cp : metric == M_BYTES ? node->vis_bytes : node->total;
}

static struct leaf *leaf_alloc(struct crdt_text *text)
{
    if (text->leaves_len >= UINT32_MAX ||
        GROW(text->leaves, text->leaves_cap, text->leaves_len + 1))
        return NULL;
    struct leaf *leaf = calloc(1, sizeof(*leaf));
    if (!leaf)
        return NULL;
    leaf->hdr.leaf = true;
    leaf->id = (uint32_t)text->leaves_len;
    text->leaves[text->leaves_len++] = leaf;
    return leaf;
}

static void leaf_counts(const struct leaf *leaf, size_t *cp, size_t *bytes, size_t *total)
{
    size_t c = 0, b = 0, t = 0;
    for (uint32_t i = 0; i < leaf->hdr.count; i++) {
        t += leaf->runs[i].len;
        if (!leaf->deleted[i]) {
            c += leaf->runs[i].len;
            b += leaf->runs[i].bytes;
        }
    }
    *cp = c;
    *bytes = b;
    *total = t;
}

/* Recounts a changed leaf and carries the difference up to the root. */
static void leaf_update(struct crdt_text *text, struct leaf *leaf)
{
    size_t cp, bytes, total;
    leaf_counts(leaf, &cp, &bytes, &total);
    /* Unsigned wrap-around makes these exact deltas in either direction. */
    size_t d_cp = cp - leaf->hdr.vis_cp, d_bytes = bytes - leaf->hdr.vis_bytes;
    size_t d_total = total - leaf->hdr.total;
    leaf->hdr.vis_cp = cp;
    leaf->hdr.vis_bytes = bytes;
    leaf->hdr.total = total;
    for (struct inner *p = leaf->hdr.parent; p; p = p->hdr.parent) {
        p->hdr.vis_cp += d_cp;
        p->hdr.vis_bytes += d_bytes;
        p->hdr.total += d_total;
    }
    if (leaf != text->cache_leaf)
        text->cache_leaf = NULL;
}

static void inner_recount(struct inner *node)
{
    node->hdr.vis_cp = node->hdr.vis_bytes = node->hdr.total = 0;
    for (uint32_t k = 0; k < node->hdr.count; k++) {
        node->hdr.vis_cp += node->child[k]->vis_cp;
        node->hdr.vis_bytes += node->child[k]->vis_bytes;
        node->hdr.total += node->child[k]->total;
    }
}

static struct inner *inner_alloc(struct crdt_text *text)
{
    struct inner *node = calloc(1, sizeof(*node));
    if (node)
        text->inner_count++;
    return node;
}

/*
 * Puts `right` (split off `left`) after `left` in the parent. The parent's
 * counts already include both (they were one node), so only splits recount.
 */
static int inner_insert_after(struct crdt_text *text, struct node *left, struct node *right)
{
    struct inner *parent = left->parent;
    if (!parent) {
        struct inner *root = inner_alloc(text);
        if (!root)
            return -ENOMEM;
        root->child[0] = left;
        root->child[1] = right;
        root->hdr.count = 2;
        inner_recount(root);
        left->parent = right->parent = root;
        text->root = &root->hdr;
        return 0;
    }
    uint32_t at = 0;
    while (parent->child[at] != left)
        at++;
    at++;
    struct inner *target = parent, *sibling = NULL;
    if (parent->hdr.count == INNER_MAX) {
        sibling = inner_alloc(text);
        if (!sibling)
            return -ENOMEM;
        uint32_t half = INNER_MAX / 2;
        sibling->hdr.count = INNER_MAX - half;
        memcpy(sibling->child, &parent->child[half], sibling->hdr.count * sizeof(struct node *));
        for (uint32_t k = 0; k < sibling->hdr.count; k++)
            sibling->child[k]->parent = sibling;
        parent->hdr.count = half;
        if (at > half) {
            target = sibling;
            at -= half;
        }
    }
    memmove(&target->child[at + 1], &target->child[at],
            (target->hdr.count - at) * sizeof(struct node *));
    target->child[at] = right;
    target->hdr.count++;
    right->parent = target;
    if (!sibling)
        return 0;
    inner_recount(parent);
    inner_recount(sibling);
    return inner_insert_after(text, &parent->hdr, &sibling->hdr);
}

/* Moves runs [half, count) of a full leaf into a new right sibling. */
static int leaf_split(struct crdt_text *text, struct leaf *leaf, uint32_t half,
                      struct leaf **right_out)
{
    struct leaf *right = leaf_alloc(text);
    if (!right)
        return -ENOMEM;
    /* A caller may have changed runs (split_run shrinks one) without leaf_update yet: carry
     * that up first, so the ancestors' sums equal left + right after the move. */
    leaf_update(text, leaf);
    right->hdr.count = leaf->hdr.count - half;
    memcpy(right->runs, &leaf->runs[half], right->hdr.count * sizeof(struct run));
    memcpy(right->deleted, &leaf->deleted[half], right->hdr.count);
    leaf->hdr.count = half;
    right->next = leaf->next;
    if (right->next)
        right->next->prev = right;
    leaf->next = right;
    right->prev = leaf;
    leaf_counts(leaf, &leaf->hdr.vis_cp, &leaf->hdr.vis_bytes, &leaf->hdr.total);
    leaf_counts(right, &right->hdr.vis_cp, &right->hdr.vis_bytes, &right->hdr.total);
    right->hdr.parent = leaf->hdr.parent;
    for (uint32_t i = 0; i < right->hdr.count; i++) {
        int rc = text_mark_set(text, right->runs[i].lv, right->runs[i].lv + right->runs[i].len,
                               right->id);
        if (rc)
            return rc;
    }
    *right_out = right;
    return inner_insert_after(text, &leaf->hdr, &right->hdr);
}

/* Inserts a run at (*leaf, *idx), splitting the leaf if full; updates both to where it went. */
static int leaf_insert_at(struct crdt_text *text, struct leaf **leaf_io, uint32_t *idx_io,
                          struct run run, bool deleted)
{
    struct leaf *leaf = *leaf_io;
    uint32_t idx = *idx_io;
    if (leaf->hdr.count == LEAF_MAX) {
        /* Appending at the end (typing, loading) leaves the full leaf full. */
        struct leaf *right;
        int rc = leaf_split(text, leaf, idx == LEAF_MAX ? LEAF_MAX : LEAF_MAX / 2, &right);
        if (rc)
            return rc;
        if (idx > leaf->hdr.count || leaf->hdr.count == LEAF_MAX) {
            idx -= leaf->hdr.count;
            leaf = right;
        }
    }
    memmove(&leaf->runs[idx + 1], &leaf->runs[idx], (leaf->hdr.count - idx) * sizeof(struct run));
    memmove(&leaf->deleted[idx + 1], &leaf->deleted[idx], leaf->hdr.count - idx);
    leaf->runs[idx] = run;
    leaf->deleted[idx] = deleted;
    leaf->hdr.count++;
    int rc = text_mark_set(text, run.lv, run.lv + run.len, leaf->id);
    leaf_update(text, leaf);
    *leaf_io = leaf;
    *idx_io = idx;
    return rc;
}

/* Splits run (*leaf, *idx) at `off`; (*leaf, *idx) then name the right part. */
static int split_run(struct crdt_text *text, struct leaf **leaf, uint32_t *idx, uint32_t off)
{
    struct run *whole = &(*leaf)->runs[*idx];
    uint32_t byte_at = (uint32_t)run_byte_at(text, whole, off);
    struct run right = {whole->lv + off, whole->len - off, whole->byte_off + byte_at,
                        whole->bytes - byte_at};
    if (whole->bytes == 0)
        right.byte_off = whole->byte_off;
    whole->len = off;
    whole->bytes = byte_at;
    bool deleted = (*leaf)->deleted[*idx];
    (*idx)++;
    return leaf_insert_at(text, leaf, idx, right, deleted);
}

static uint32_t run_index(const struct leaf *leaf, uint32_t lv)
{
    uint32_t i = 0;
    while (i + 1 < leaf->hdr.count && lv - leaf->runs[i].lv >= leaf->runs[i].len)
        i++;
    return i;
}

static struct leaf *last_leaf(const struct crdt_text *text)
{
    const struct node *node = text->root;
    while (!node->leaf) {
        const struct inner *in = (const struct inner *)node;
        node = in->child[in->hdr.count - 1];
    }
    return (struct leaf *)node;
}

/* The leaf holding unit `pos` (< the root's count) of `metric`, with its start counts. */
static struct leaf *descend(const struct crdt_text *text, enum metric metric, size_t pos,
                            size_t *start_cp, size_t *start_bytes, size_t *start_total)
{
    const struct node *node = text->root;
    size_t cp = 0, bytes = 0, total = 0;
    while (!node->leaf) {
        const struct inner *in = (const struct inner *)node;
        uint32_t k = 0;
        for (; k + 1 < in->hdr.count; k++) {
            const struct node *child = in->child[k];
            size_t units = node_metric(child, metric);
            if (pos < units)
                break;
            pos -= units;
            cp += child->vis_cp;
            bytes += child->vis_bytes;
            total += child->total;
        }
        node = in->child[k];
    }
    *start_cp = cp;
    *start_bytes = bytes;
    *start_total = total;
    return (struct leaf *)node;
}

/* A visible unit: run `idx` of `leaf`; `off` units into it; run starts at cp/bytes. */
struct vis {
    struct leaf *leaf;
    uint32_t idx;
    size_t off, run_cp, run_bytes;
};

/* Finds visible unit `pos` (< visible length in `metric`) using the cursor cache. */
static void find_visible(struct vis *out, struct crdt_text *text, enum metric metric, size_t pos)
{
    struct leaf *leaf = text->cache_leaf;
    size_t cp = text->cache_cp, bytes = text->cache_bytes;
    size_t start = metric == M_CP ? cp : bytes;
    if (!leaf || pos < start || pos - start >= node_metric(&leaf->hdr, metric)) {
        size_t total;
        leaf = descend(text, metric, pos, &cp, &bytes, &total);
        text->cache_leaf = leaf;
        text->cache_cp = cp;
        text->cache_bytes = bytes;
    }
    size_t rem = pos - (metric == M_CP ? cp : bytes);
    for (uint32_t i = 0; i < leaf->hdr.count; i++) {
        if (leaf->deleted[i])
            continue;
        size_t units = metric == M_CP ? leaf->runs[i].len : leaf->runs[i].bytes;
        if (rem < units) {
            *out = (struct vis){leaf, i, rem, cp, bytes};
            return;
        }
        rem -= units;
        cp += leaf->runs[i].len;
        bytes += leaf->runs[i].bytes;
    }
    *out = (struct vis){leaf, leaf->hdr.count, 0, cp, bytes}; /* not reached: counts agree */
}

/* Position of lv in the document order, tombstones counted. */
static size_t order_pos(const struct crdt_text *text, uint32_t lv)
{
    const struct leaf *leaf = text_mark_get(text, lv);
    size_t pos = 0;
    for (uint32_t i = 0; i < leaf->hdr.count; i++) {
        const struct run *run = &leaf->runs[i];
        if (lv - run->lv < run->len) {
            pos += lv - run->lv;
            break;
        }
        pos += run->len;
    }
    const struct node *node = &leaf->hdr;
    for (const struct inner *p = node->parent; p; node = &p->hdr, p = p->hdr.parent)
        for (uint32_t k = 0; p->child[k] != node; k++)
            pos += p->child[k]->total;
    return pos;
}

static void cursor_at_total(struct cursor *out, const struct crdt_text *text, size_t pos)
{
    if (pos >= text->root->total) {
        *out = (struct cursor){.leaf = NULL, .pos = text->root->total, .end = true};
        return;
    }
    size_t cp, bytes, total;
    struct leaf *leaf = descend(text, M_TOTAL, pos, &cp, &bytes, &total);
    size_t rem = pos - total;
    uint32_t i = 0;
    while (rem >= leaf->runs[i].len) {
        rem -= leaf->runs[i].len;
        i++;
    }
    *out = (struct cursor){leaf, i, (uint32_t)rem, pos, false};
}

static void cursor_step(struct cursor *cur, size_t units)
{
    cur->pos += units;
    cur->off += (uint32_t)units;
    if (cur->off < cur->leaf->runs[cur->idx].len)
        return;
    cur->off = 0;
    if (++cur->idx < cur->leaf->hdr.count)
        return;
    cur->idx = 0;
    cur->leaf = cur->leaf->next;
    if (!cur->leaf)
        cur->end = true;
}

/*
 * FugueMax integration, as diamond-types' YjsMod (which the Fugue paper shows
 * equal to FugueMax): start right after the left origin and scan right until
 * the right origin. An item Y there whose own left origin lies left of ours
 * ends the scan (it belongs to an outer subtree). One with the same left
 * origin is a sibling: with the same right origin too, the smaller replica
 * id goes first; otherwise the sibling whose right origin is further left
 * goes first, and since its subtree may follow it, we remember where such a
 * run of siblings began and insert there if nothing later beats us. Items
 * whose left origin lies right of ours are inside a sibling's subtree: skip.
 * Characters after the first of a run have the char before them as left
 * origin, so the scan skips whole runs.
 */
static void integrate(struct cursor *out, const struct crdt_text *text, uint32_t ol, uint32_t orr,
                      uint64_t replica_id)
{
    size_t left = ol == LV_NONE ? 0 : order_pos(text, ol) + 1;
    struct cursor cur, scan_start;
    cursor_at_total(&cur, text, left);
    scan_start = cur;
    bool scanning = false;
    size_t my_right = SIZE_MAX;
    while (!cur.end) {
        const struct run *run = &cur.leaf->runs[cur.idx];
        uint32_t y = run->lv + cur.off;
        if (y == orr)
            break;
        size_t step = run->len - cur.off;
        if (orr != LV_NONE && orr > y && orr - run->lv < run->len)
            step = orr - y;
        const struct entry *e = text_log_find(text, y);
        uint32_t y_ol = y > e->lv ? y - 1 : e->ol;
        size_t y_left = y_ol == LV_NONE ? 0 : order_pos(text, y_ol) + 1;
        if (y_left < left)
            break;
        if (y_left == left) {
            if (e->orr == orr) {
                if (replica_id < text->replicas[e->replica].id)
                    break;
                scanning = false;
            } else {
                if (my_right == SIZE_MAX)
                    my_right = orr == LV_NONE ? text->root->total : order_pos(text, orr);
                size_t y_right = e->orr == LV_NONE ? text->root->total : order_pos(text, e->orr);
                if (y_right < my_right) {
                    if (!scanning) {
                        scanning = true;
                        scan_start = cur;
                    }
                } else {
                    scanning = false;
                }
            }
        }
        cursor_step(&cur, step);
    }
    *out = scanning ? scan_start : cur;
}

/* Two adjacent runs that may be one: consecutive lvs and bytes, one log entry. */
static bool runs_join(const struct crdt_text *text, const struct run *a, const struct run *b)
{
    if (a->lv + a->len != b->lv || a->len > UINT32_MAX - b->len)
        return false;
    if (!(a->bytes == 0 && b->bytes == 0) && a->byte_off + a->bytes != b->byte_off)
        return false;
    return text_log_find(text, b->lv)->lv != b->lv;
}

/* Places a new visible run at `at`, extending the run before if it continues it. */
static int place(struct crdt_text *text, const struct cursor *at, struct run run)
{
    struct leaf *leaf;
    uint32_t idx;
    if (at->end) {
        leaf = last_leaf(text);
        idx = leaf->hdr.count;
    } else {
        leaf = at->leaf;
        idx = at->idx;
        if (at->off > 0) {
            int rc = split_run(text, &leaf, &idx, at->off);
            if (rc)
                return rc;
        }
    }
    if (!at->end && at->off > 0)
        return leaf_insert_at(text, &leaf, &idx, run, false);
    struct leaf *prev_leaf = leaf;
    uint32_t prev = idx;
    if (prev == 0) {
        prev_leaf = leaf->prev;
        prev = prev_leaf ? prev_leaf->hdr.count : 0;
    }
    if (prev_leaf && prev > 0 && !prev_leaf->deleted[prev - 1] &&
        runs_join(text, &prev_leaf->runs[prev - 1], &run)) {
        prev_leaf->runs[prev - 1].len += run.len;
        prev_leaf->runs[prev - 1].bytes += run.bytes;
        int rc = text_mark_set(text, run.lv, run.lv + run.len, prev_leaf->id);
        leaf_update(text, prev_leaf);
        return rc;
    }
    return leaf_insert_at(text, &leaf, &idx, run, false);
}

int text_insert_entry(struct crdt_text *text, uint32_t replica, uint64_t counter,
                      const uint8_t *bytes, size_t bytes_len, uint32_t len, uint32_t ol,
                      uint32_t orr, const struct cursor *local_at)
{
    uint32_t lv = lv_count(text);
    if (len == 0 || len >= LV_NONE - lv || bytes_len > UINT32_MAX - text->arena_len)
        return -EOVERFLOW;
    if (GROW(text->arena, text->arena_cap, text->arena_len + bytes_len))
        return -ENOMEM;
    uint32_t byte_off = (uint32_t)text->arena_len;
    memcpy(text->arena + byte_off, bytes, bytes_len);
    text->arena_len += bytes_len;

    struct entry *last = text->log_len ? &text->log[text->log_len - 1] : NULL;
    if (last && !last->compacted && last->replica == replica &&
        last->counter + last->len == counter && ol == lv - 1 && orr == last->orr &&
        last->byte_off + last->bytes == byte_off && last->len <= UINT32_MAX - len) {
        last->len += len;
        last->bytes += (uint32_t)bytes_len;
    } else {
        if (GROW(text->log, text->log_cap, text->log_len + 1))
            return -ENOMEM;
        text->log[text->log_len++] = (struct entry){.counter = counter,
                                                    .replica = replica,
                                                    .lv = lv,
                                                    .len = len,
                                                    .byte_off = byte_off,
                                                    .bytes = (uint32_t)bytes_len,
                                                    .ol = ol,
                                                    .orr = orr};
    }
    struct replica *rep = &text->replicas[replica];
    int rc = text_idrun_add(rep, counter, lv, len);
    if (!rc)
        rc = text_held_add(rep, counter, counter + len - 1);
    if (rc)
        return rc;
    struct cursor at;
    if (local_at)
        at = *local_at;
    else
        integrate(&at, text, ol, orr, rep->id);
    struct run run = {lv, len, byte_off, (uint32_t)bytes_len};
    return place(text, &at, run);
}

/*
 * Builds the tree of an empty document from runs in document order, at once:
 * full leaves (as appending leaves them) and inner nodes filled evenly, every
 * count summed once. Run i lands in leaf leaf_of[i]; marks are the caller's
 * (text_marks_build). After -ENOMEM the document holds no more than it did.
 */
int text_tree_build(struct crdt_text *text, const struct run *runs, const uint8_t *deleted,
                    size_t n, uint32_t *leaf_of)
{
    assert(text->leaves_len == 1 && text->root == &text->leaves[0]->hdr &&
           text->leaves[0]->hdr.count == 0);
    size_t n_leaves = n ? (n + LEAF_MAX - 1) / LEAF_MAX : 1, n_inner = 0;
    for (size_t level = n_leaves; level > 1; level = (level + INNER_MAX - 1) / INNER_MAX)
        n_inner += (level + INNER_MAX - 1) / INNER_MAX;
    if (n_leaves > UINT32_MAX || GROW(text->leaves, text->leaves_cap, n_leaves))
        return -ENOMEM;
    /* Every node first, so that a failure leaves nothing half linked. */
    struct node **nodes = malloc((n_leaves + n_inner) * sizeof(*nodes));
    size_t made = 0;
    int rc = nodes ? 0 : -ENOMEM;
    for (; made < n_inner && !rc; made++) {
        struct inner *in = inner_alloc(text);
        if (!in)
            rc = -ENOMEM;
        else
            nodes[n_leaves + made] = &in->hdr;
    }
    for (size_t i = 1; i < n_leaves && !rc; i++)
        if (!leaf_alloc(text))
            rc = -ENOMEM;
    if (rc) {
        for (size_t i = 0; nodes && i < made; i++) {
            free(nodes[n_leaves + i]);
            text->inner_count--;
        }
        free(nodes);
        return rc;
    }
    for (size_t i = 0; i < n_leaves; i++) {
        struct leaf *leaf = text->leaves[i];
        size_t first = i * LEAF_MAX, count = n - first < LEAF_MAX ? n - first : LEAF_MAX;
        memcpy(leaf->runs, runs + first, count * sizeof(struct run));
        memcpy(leaf->deleted, deleted + first, count);
        for (size_t k = 0; k < count; k++)
            leaf_of[first + k] = leaf->id;
        leaf->hdr.count = (uint32_t)count;
        leaf_counts(leaf, &leaf->hdr.vis_cp, &leaf->hdr.vis_bytes, &leaf->hdr.total);
        leaf->prev = i ? text->leaves[i - 1] : NULL;
        leaf->next = i + 1 < n_leaves ? text->leaves[i + 1] : NULL;
        nodes[i] = &leaf->hdr;
    }
    /* Level by level: `level` nodes from `at` get parents from at + level on. */
    size_t at = 0, level = n_leaves;
    while (level > 1) {
        size_t parents = (level + INNER_MAX - 1) / INNER_MAX;
        for (size_t g = 0; g < parents; g++) {
            struct inner *in = (struct inner *)nodes[at + level + g];
            size_t lo = g * level / parents, hi = (g + 1) * level / parents;
            for (size_t k = lo; k < hi; k++) {
                in->child[k - lo] = nodes[at + k];
                nodes[at + k]->parent = in;
            }
            in->hdr.count = (uint32_t)(hi - lo);
            inner_recount(in);
        }
        at += level;
        level = parents;
    }
    text->root = nodes[at];
    text->root->parent = NULL;
    text->cache_leaf = NULL;
    free(nodes);
    return 0;
}

/*
 * Maps every lv to its leaf, for an empty document's fresh tree: range i is
 * [start[i], start[i+1]) (the last ends at `lvs`), ascending from 0.
 */
int text_marks_build(struct crdt_text *text, const uint32_t *start, const uint32_t *leaf, size_t n,
                     uint32_t lvs)
{
    assert(text->marks_len == 0);
    size_t chunks = ((size_t)lvs + (1u << MARK_SHIFT) - 1) >> MARK_SHIFT;
    if (GROW(text->marks, text->marks_cap, chunks))
        return -ENOMEM;
    memset(text->marks, 0, chunks * sizeof(struct mark_chunk));
    text->marks_len = chunks;
    for (size_t i = 0; i < n; i++) {
        uint32_t lo = start[i], hi = i + 1 < n ? start[i + 1] : lvs;
        for (size_t k = lo >> MARK_SHIFT; k < chunks && (k << MARK_SHIFT) < hi; k++) {
            struct mark_chunk *chunk = &text->marks[k];
            uint32_t base = (uint32_t)(k << MARK_SHIFT);
            if (chunk->len && chunk->marks[chunk->len - 1].leaf == leaf[i])
                continue;
            if (GROW(chunk->marks, chunk->cap, chunk->len + 1))
                return -ENOMEM;
            chunk->marks[chunk->len++] = (struct mark){lo > base ? lo : base, leaf[i]};
        }
    }
    return 0;
}

/* Appends a run at the end of the document order (the version 1 state decoder). */
int text_tree_append_run(struct crdt_text *text, struct run run, bool deleted)
{
    struct leaf *leaf = last_leaf(text);
    uint32_t idx = leaf->hdr.count;
    if (idx > 0 && leaf->deleted[idx - 1] == deleted &&
        runs_join(text, &leaf->runs[idx - 1], &run)) {
        leaf->runs[idx - 1].len += run.len;
        leaf->runs[idx - 1].bytes += run.bytes;
        int rc = text_mark_set(text, run.lv, run.lv + run.len, leaf->id);
        leaf_update(text, leaf);
        return rc;
    }
    return leaf_insert_at(text, &leaf, &idx, run, deleted);
}

static void merge_deleted(struct crdt_text *text, struct leaf *leaf, uint32_t idx)
{
    if (idx + 1 < leaf->hdr.count && leaf->deleted[idx + 1] &&
        runs_join(text, &leaf->runs[idx], &leaf->runs[idx + 1])) {
        leaf->runs[idx].len += leaf->runs[idx + 1].len;
        leaf->runs[idx].bytes += leaf->runs[idx + 1].bytes;
        memmove(&leaf->runs[idx + 1], &leaf->runs[idx + 2],
                (leaf->hdr.count - idx - 2) * sizeof(struct run));
        memmove(&leaf->deleted[idx + 1], &leaf->deleted[idx + 2], leaf->hdr.count - idx - 2);
        leaf->hdr.count--;
    }
    if (idx > 0 && leaf->deleted[idx - 1] &&
        runs_join(text, &leaf->runs[idx - 1], &leaf->runs[idx])) {
        leaf->runs[idx - 1].len += leaf->runs[idx].len;
        leaf->runs[idx - 1].bytes += leaf->runs[idx].bytes;
        memmove(&leaf->runs[idx], &leaf->runs[idx + 1],
                (leaf->hdr.count - idx - 1) * sizeof(struct run));
        memmove(&leaf->deleted[idx], &leaf->deleted[idx + 1], leaf->hdr.count - idx - 1);
        leaf->hdr.count--;
    }
}

/* Marks lvs [lv, lv+len) deleted (those already deleted stay so). */
int text_delete_lv_range(struct crdt_text *text, uint32_t lv, uint32_t len)
{
    while (len > 0) {
        struct leaf *leaf = text_mark_get(text, lv);
        uint32_t idx = run_index(leaf, lv);
        struct run *run = &leaf->runs[idx];
        uint32_t off = lv - run->lv;
        uint32_t n = run->len - off < len ? run->len - off : len;
        if (!leaf->deleted[idx]) {
            int rc;
            if (off > 0) {
                rc = split_run(text, &leaf, &idx, off);
                if (rc)
                    return rc;
            }
            if (n < leaf->runs[idx].len) {
                uint32_t right = idx;
                struct leaf *right_leaf = leaf;
                rc = split_run(text, &right_leaf, &right, n);
                if (rc)
                    return rc;
                leaf = text_mark_get(text, lv);
                idx = run_index(leaf, lv);
            }
            leaf->deleted[idx] = 1;
            merge_deleted(text, leaf, idx);
            leaf_update(text, leaf);
        }
        lv += n;
        len -= n;
    }
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

int crdt_text_new(struct crdt_text **out)
{
    struct crdt_text *text = calloc(1, sizeof(*text));
    if (!text)
        return -ENOMEM;
    struct leaf *first = leaf_alloc(text);
    if (!first) {
        crdt_text_free(text);
        return -ENOMEM;
    }
    text->root = &first->hdr;
    *out = text;
    return 0;
}

static void inner_free(struct node *node)
{
    if (!node || node->leaf)
        return;
    struct inner *in = (struct inner *)node;
    for (uint32_t k = 0; k < in->hdr.count; k++)
        inner_free(in->child[k]);
    free(in);
}

void crdt_text_free(struct crdt_text *text)
{
    if (!text)
        return;
    inner_free(text->root);
    for (size_t i = 0; i < text->leaves_len; i++)
        free(text->leaves[i]);
    free(text->leaves);
    free(text->arena);
    free(text->log);
    for (size_t i = 0; i < text->replicas_len; i++) {
        free(text->replicas[i].ins);
        free(text->replicas[i].held);
    }
    free(text->replicas);
    free(text->by_id);
    free(text->dels);
    for (size_t i = 0; i < text->marks_len; i++)
        free(text->marks[i].marks);
    free(text->marks);
    crdt_text_ops_free(&text->pending);
    free(text);
}

size_t crdt_text_mem(const struct crdt_text *text)
{
    size_t mem = sizeof(*text) + text->leaves_cap * sizeof(struct leaf *) +
                 text->leaves_len * sizeof(struct leaf) + text->inner_count * sizeof(struct inner) +
                 text->arena_cap + text->log_cap * sizeof(struct entry) +
                 text->replicas_cap * sizeof(struct replica) + text->by_id_cap * sizeof(uint32_t) +
                 text->dels_cap * sizeof(struct delrec) +
                 text->marks_cap * sizeof(struct mark_chunk);
    for (size_t i = 0; i < text->replicas_len; i++)
        mem += text->replicas[i].ins_cap * sizeof(struct idrun) +
               text->replicas[i].held_cap * sizeof(struct held);
    for (size_t i = 0; i < text->marks_len; i++)
        mem += text->marks[i].cap * sizeof(struct mark);
    mem += text->pending.cap * sizeof(struct crdt_text_op);
    return mem;
}

/* ------------------------------------------------------------ local edits */

static int make_insert(struct crdt_text_ops *out, struct crdt_text *text, struct crdt_clock *clock,
                       size_t cp_pos, const uint8_t *bytes, size_t bytes_len, size_t len)
{
    uint32_t replica;
    int rc = text_replica_index(&replica, text, clock->replica);
    if (rc)
        return rc;
    struct replica *rep = &text->replicas[replica];
    if (len > UINT32_MAX - 1 || clock->counter >= COUNTER_MAX - len ||
        (rep->held_len && rep->held[rep->held_len - 1].last > clock->counter))
        return -EINVAL;
    /* The new run goes right after the visible char before it, before any
     * tombstones there; its right origin is whatever follows that char now. */
    struct cursor at = {.end = false};
    uint32_t ol = LV_NONE, orr = LV_NONE;
    if (cp_pos == 0) {
        at.leaf = text->leaves[0];
        at.end = text->root->total == 0;
    } else {
        struct vis v;
        find_visible(&v, text, M_CP, cp_pos - 1);
        ol = v.leaf->runs[v.idx].lv + (uint32_t)v.off;
        at.leaf = v.leaf;
        at.idx = v.idx;
        at.off = (uint32_t)v.off;
        cursor_step(&at, 1);
    }
    if (!at.end)
        orr = at.leaf->runs[at.idx].lv + at.off;
    struct crdt_ts id = crdt_clock_tick_n(clock, len, NULL);
    rc =
        text_insert_entry(text, replica, id.counter, bytes, bytes_len, (uint32_t)len, ol, orr, &at);
    if (rc || !out)
        return rc;
    struct crdt_text_op op = {.kind = CRDT_TEXT_INSERT,
                              .id = id,
                              .origin_left = text_lv_to_id(text, ol),
                              .origin_right = text_lv_to_id(text, orr),
                              .bytes = bytes,
                              .bytes_len = bytes_len,
                              .len = len};
    return crdt_text_ops_push(out, &op);
}

int crdt_text_insert_cp(struct crdt_text_ops *out, struct crdt_text *text, struct crdt_clock *clock,
                        size_t pos, const void *bytes, size_t bytes_len)
{
    size_t len;
    if (pos > text->root->vis_cp || !text_utf8_check(&len, bytes, bytes_len))
        return -EINVAL;
    if (len == 0)
        return 0;
    return make_insert(out, text, clock, pos, bytes, bytes_len, len);
}

/* Code-point offset of byte offset `pos`; -EINVAL inside a code point or past the end. */
static int byte_to_cp(size_t *out, struct crdt_text *text, size_t pos)
{
    if (pos == text->root->vis_bytes) {
        *out = text->root->vis_cp;
        return 0;
    }
    if (pos > text->root->vis_bytes)
        return -EINVAL;
    struct vis v;
    find_visible(&v, text, M_BYTES, pos);
    const struct run *run = &v.leaf->runs[v.idx];
    const uint8_t *s = text->arena + run->byte_off;
    if ((s[v.off] & 0xC0) == 0x80)
        return -EINVAL;
    *out = v.run_cp + (run->bytes == run->len ? v.off : utf8_count_prefix(s, v.off));
    return 0;
}

int crdt_text_insert(struct crdt_text_ops *out, struct crdt_text *text, struct crdt_clock *clock,
                     size_t pos, const void *bytes, size_t bytes_len)
{
    size_t cp_pos;
    int rc = byte_to_cp(&cp_pos, text, pos);
    if (rc)
        return rc;
    return crdt_text_insert_cp(out, text, clock, cp_pos, bytes, bytes_len);
}

struct lv_range {
    uint32_t lv, len;
};

/* Appends the id spans of lvs [lv, lv+len) to spans, joining consecutive ids. */
int text_lv_spans(struct crdt_text_span **spans, size_t *spans_len, size_t *spans_cap,
                  const struct crdt_text *text, uint32_t lv, uint32_t len)
{
    while (len > 0) {
        const struct entry *e = text_log_find(text, lv);
        uint32_t n = e->lv + e->len - lv < len ? e->lv + e->len - lv : len;
        struct crdt_ts first = {e->counter + (lv - e->lv), text->replicas[e->replica].id};
        struct crdt_text_span *last = *spans_len ? &(*spans)[*spans_len - 1] : NULL;
        if (last && last->first.replica == first.replica &&
            last->first.counter + last->len == first.counter) {
            last->len += n;
        } else {
            if (GROW(*spans, *spans_cap, *spans_len + 1))
                return -ENOMEM;
            (*spans)[(*spans_len)++] = (struct crdt_text_span){first, n};
        }
        lv += n;
        len -= n;
    }
    return 0;
}

int crdt_text_delete_cp(struct crdt_text_ops *out, struct crdt_text *text, struct crdt_clock *clock,
                        size_t pos, size_t len)
{
    if (pos > text->root->vis_cp || len > text->root->vis_cp - pos)
        return -EINVAL;
    if (len == 0)
        return 0;
    uint32_t replica;
    int rc = text_replica_index(&replica, text, clock->replica);
    if (rc)
        return rc;
    struct replica *rep = &text->replicas[replica];
    if (clock->counter >= COUNTER_MAX ||
        (rep->held_len && rep->held[rep->held_len - 1].last > clock->counter))
        return -EINVAL;

    /* Collect the visible lvs first: deleting splits runs and moves them between leaves. */
    struct lv_range one, *ranges = &one;
    size_t ranges_len = 0, ranges_cap = 0;
    struct crdt_text_span *spans = NULL;
    size_t spans_len = 0, spans_cap = 0;
    struct vis v;
    find_visible(&v, text, M_CP, pos);
    struct leaf *leaf = v.leaf;
    uint32_t idx = v.idx, off = (uint32_t)v.off;
    size_t left = len;
    while (left > 0) {
        const struct run *run = &leaf->runs[idx];
        if (!leaf->deleted[idx]) {
            uint32_t n = run->len - off < left ? run->len - off : (uint32_t)left;
            if (ranges_len &&
                ranges[ranges_len - 1].lv + ranges[ranges_len - 1].len == run->lv + off) {
                ranges[ranges_len - 1].len += n;
            } else if (ranges_len == 0) {
                one = (struct lv_range){run->lv + off, n};
                ranges_len = 1;
            } else {
                if (ranges == &one) {
                    ranges = NULL;
                    if (GROW(ranges, ranges_cap, 2)) {
                        rc = -ENOMEM;
                        goto out;
                    }
                    ranges[0] = one;
                }
                if (GROW(ranges, ranges_cap, ranges_len + 1)) {
                    rc = -ENOMEM;
                    goto out;
                }
                ranges[ranges_len++] = (struct lv_range){run->lv + off, n};
            }
            left -= n;
        }
        off = 0;
        if (++idx == leaf->hdr.count) {
            leaf = leaf->next;
            idx = 0;
        }
    }
    struct crdt_ts id = crdt_clock_tick(clock, NULL);
    bool one_char = ranges_len == 1 && ranges[0].len == 1;
    for (size_t i = 0; i < ranges_len && !rc; i++) {
        rc = text_delete_lv_range(text, ranges[i].lv, ranges[i].len);
        if (!rc)
            rc = text_dellog_add(text, id.counter, replica, ranges[i].lv, ranges[i].len, one_char);
        if (!rc && out)
            rc = text_lv_spans(&spans, &spans_len, &spans_cap, text, ranges[i].lv, ranges[i].len);
    }
    if (!rc)
        rc = text_held_add(&text->replicas[replica], id.counter, id.counter);
    if (!rc && out) {
        struct crdt_text_op op = {
            .kind = CRDT_TEXT_DELETE, .id = id, .targets = spans, .targets_len = spans_len};
        rc = crdt_text_ops_push(out, &op);
    }
out:
    if (ranges != &one)
        free(ranges);
    free(spans);
    return rc;
}

int crdt_text_delete(struct crdt_text_ops *out, struct crdt_text *text, struct crdt_clock *clock,
                     size_t pos, size_t len)
{
    size_t from, to;
    if (pos > text->root->vis_bytes || len > text->root->vis_bytes - pos)
        return -EINVAL;
    int rc = byte_to_cp(&from, text, pos);
    if (!rc)
        rc = byte_to_cp(&to, text, pos + len);
    if (rc)
        return rc;
    return crdt_text_delete_cp(out, text, clock, from, to - from);
}

int crdt_text_apply_edits(struct crdt_text_ops *out, struct crdt_text *text,
                          struct crdt_clock *clock, const struct crdt_text_edit *edits,
                          size_t count)
{
    size_t prev_end = 0, cp_len;
    for (size_t i = 0; i < count; i++) {
        const struct crdt_text_edit *e = &edits[i];
        if (e->pos < prev_end || e->pos > text->root->vis_bytes ||
            e->del_len > text->root->vis_bytes - e->pos ||
            !text_utf8_check(&cp_len, e->bytes, e->bytes_len))
            return -EINVAL;
        size_t cp;
        int rc = byte_to_cp(&cp, text, e->pos);
        if (!rc)
            rc = byte_to_cp(&cp, text, e->pos + e->del_len);
        if (rc)
            return rc;
        prev_end = e->pos + e->del_len;
    }
    for (size_t i = count; i-- > 0;) {
        const struct crdt_text_edit *e = &edits[i];
        int rc = 0;
        if (e->del_len)
            rc = crdt_text_delete(out, text, clock, e->pos, e->del_len);
        if (!rc && e->bytes_len)
            rc = crdt_text_insert(out, text, clock, e->pos, e->bytes, e->bytes_len);
        if (rc)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ remote ops */

static bool id_ok(struct crdt_ts id, uint64_t len)
{
    return id.counter >= 1 && id.counter < COUNTER_MAX && len < COUNTER_MAX - id.counter;
}

static bool inside(struct crdt_ts id, struct crdt_ts first, uint64_t len)
{
    return id.replica == first.replica && id.counter >= first.counter &&
           id.counter - first.counter < len;
}

int text_op_check(const struct crdt_text_op *op)
{
    if (op->kind == CRDT_TEXT_INSERT) {
        size_t len;
        if (!id_ok(op->id, op->len) || op->len == 0 || op->len >= UINT32_MAX ||
            op->bytes_len > UINT32_MAX || !text_utf8_check(&len, op->bytes, op->bytes_len) ||
            len != op->len)
            return -EINVAL;
        if ((op->origin_left.counter && !id_ok(op->origin_left, 1)) ||
            (op->origin_right.counter && !id_ok(op->origin_right, 1)) ||
            inside(op->origin_left, op->id, op->len) || inside(op->origin_right, op->id, op->len))
            return -EINVAL;
        return 0;
    }
    bool run = op->len >= 2;
    if (op->kind != CRDT_TEXT_DELETE || !id_ok(op->id, run ? op->len : 1) || op->targets_len == 0 ||
        (run && op->len >= UINT32_MAX))
        return -EINVAL;
    uint64_t chars = 0;
    for (size_t i = 0; i < op->targets_len; i++) {
        if (op->targets[i].len == 0 || op->targets[i].len >= UINT32_MAX ||
            !id_ok(op->targets[i].first, op->targets[i].len))
            return -EINVAL;
        /* A run's targets hold exactly its ops' characters (checked before chars can wrap). */
        chars += op->targets[i].len;
        if (run && chars > op->len)
            return -EINVAL;
    }
    return run && chars != op->len ? -EINVAL : 0;
}

static bool id_held(uint32_t *lv, const struct crdt_text *text, struct crdt_ts id)
{
    *lv = LV_NONE;
    return id.counter == 0 || text_id_to_lv(lv, text, id);
}

/* Calls `each` for the lv ranges of a span, or returns false if some id is not held. */
static bool span_lvs(const struct crdt_text *text, struct crdt_text_span span,
                     struct lv_range *ranges, size_t *ranges_len, size_t cap)
{
    uint32_t r;
    if (!text_replica_find(&r, text, span.first.replica))
        return false;
    const struct replica *rep = &text->replicas[r];
    uint64_t c = span.first.counter, left = span.len;
    *ranges_len = 0;
    while (left > 0) {
        size_t at = idrun_find(rep, c);
        if (at == SIZE_MAX || c - rep->ins[at].counter >= rep->ins[at].len)
            return false;
        uint64_t avail = rep->ins[at].counter + rep->ins[at].len - c;
        uint32_t n = (uint32_t)(avail < left ? avail : left);
        if (ranges) {
            if (*ranges_len == cap)
                return false;
            ranges[(*ranges_len)++] =
                (struct lv_range){rep->ins[at].lv + (uint32_t)(c - rep->ins[at].counter), n};
        } else {
            (*ranges_len)++;
        }
        c += n;
        left -= n;
    }
    return true;
}

/*
 * OP_SPLIT: a delete run of which nothing applied, some ops were held already
 * (dropped) and the rest wait, pushed to pending as runs of their own.
 */
enum outcome { OP_APPLIED, OP_DUPLICATE, OP_WAITING, OP_SPLIT };

static int apply_insert(enum outcome *result, struct crdt_text *text, const struct crdt_text_op *op)
{
    uint32_t ol, orr;
    if (!id_held(&ol, text, op->origin_left) || !id_held(&orr, text, op->origin_right)) {
        *result = OP_WAITING;
        return 0;
    }
    uint32_t replica;
    int rc = text_replica_index(&replica, text, op->id.replica);
    if (rc)
        return rc;
    *result = OP_DUPLICATE;
    /* Apply each stretch of counters not held yet (by an insert or, in conflicting input, a
     * delete); a stretch after a held char has that char as its left origin, as every char of
     * a run does. */
    size_t k = 0, byte_at = 0;
    while (k < op->len) {
        const struct replica *rep = &text->replicas[replica];
        uint64_t counter = op->id.counter + k;
        if (text_held_has(rep, counter)) {
            k++;
            byte_at += text_utf8_skip(op->bytes + byte_at, op->bytes_len - byte_at, 1);
            continue;
        }
        size_t next = held_find(rep, counter);
        next = next == SIZE_MAX ? 0 : next + 1;
        uint64_t stop = next < rep->held_len ? rep->held[next].first : UINT64_MAX;
        size_t m = k + 1;
        while (m < op->len && op->id.counter + m < stop)
            m++;
        size_t bytes = text_utf8_skip(op->bytes + byte_at, op->bytes_len - byte_at, m - k);
        uint32_t seg_ol = ol;
        /* A held counter that is no character (only conflicting input does that) cannot be
         * an origin: that stretch is dropped. */
        bool origin_ok =
            k == 0 || text_id_to_lv(&seg_ol, text, (struct crdt_ts){counter - 1, op->id.replica});
        if (origin_ok) {
            rc = text_insert_entry(text, replica, counter, op->bytes + byte_at, bytes,
                                   (uint32_t)(m - k), seg_ol, orr, NULL);
            if (rc)
                return rc;
            *result = OP_APPLIED;
        }
        k = m;
        byte_at += bytes;
    }
    return 0;
}

static int apply_delete(enum outcome *result, struct crdt_text *text, const struct crdt_text_op *op)
{
    uint32_t replica;
    if (text_replica_find(&replica, text, op->id.replica) &&
        text_held_has(&text->replicas[replica], op->id.counter)) {
        *result = OP_DUPLICATE;
        return 0;
    }
    for (size_t i = 0; i < op->targets_len; i++) {
        size_t n;
        if (!span_lvs(text, op->targets[i], NULL, &n, 0)) {
            *result = OP_WAITING;
            return 0;
        }
    }
    int rc = text_replica_index(&replica, text, op->id.replica);
    if (rc)
        return rc;
    bool one_char = op->targets_len == 1 && op->targets[0].len == 1;
    for (size_t i = 0; i < op->targets_len; i++) {
        struct lv_range ranges[16];
        size_t n = 0;
        struct crdt_text_span span = op->targets[i];
        while (span.len > 0) {
            /* At most 16 lv ranges per pass; a span longer than that is walked in pieces. */
            uint64_t piece = span.len;
            while (!span_lvs(text, (struct crdt_text_span){span.first, piece}, ranges, &n, 16))
                piece = piece / 2 ? piece / 2 : 1;
            for (size_t k = 0; k < n && !rc; k++) {
                rc = text_delete_lv_range(text, ranges[k].lv, ranges[k].len);
                if (!rc)
                    rc = text_dellog_add(text, op->id.counter, replica, ranges[k].lv, ranges[k].len,
                                         one_char);
            }
            if (rc)
                return rc;
            span.first.counter += piece;
            span.len -= piece;
        }
    }
    *result = OP_APPLIED;
    return text_held_add(&text->replicas[replica], op->id.counter, op->id.counter);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static bool is_run(const struct crdt_text_op *op)
{
    return op->kind == CRDT_TEXT_DELETE && op->len >= 2;
}

/*
 * Whether pending holds `op` already. The same id is not enough: an insert
 * run or a delete run handed out again later may have grown since (or be the
 * rest of a run that applied in part), and a shorter copy must not stand in
 * for it.
 */
static bool pending_has(const struct crdt_text *text, const struct crdt_text_op *op)
{
    for (size_t i = 0; i < text->pending.len; i++) {
        const struct crdt_text_op *p = &text->pending.ops[i];
        bool run = is_run(op);
        if (p->kind == op->kind && crdt_ts_cmp(p->id, op->id) == 0 && is_run(p) == run &&
            (op->kind == CRDT_TEXT_DELETE
                 ? !run || (p->len == op->len && p->backward == op->backward)
                 : p->len == op->len))
            return true;
    }
    return false;
}

/* Ops of a delete run waiting for their targets, gathered in the run's order. */
struct run_wait {
    struct crdt_text_span *spans;
    size_t len, cap;
    uint64_t first_part, parts;
};

/* Adds ids first .. first + n - 1 (to delete in ascending order, or descending if backward). */
static int run_wait_add(struct run_wait *wait, uint64_t part, struct crdt_ts first, uint64_t n,
                        bool backward)
{
    if (!wait->parts)
        wait->first_part = part;
    wait->parts += n;
    struct crdt_text_span *last = wait->len ? &wait->spans[wait->len - 1] : NULL;
    if (last && last->first.replica == first.replica &&
        (backward ? first.counter + n == last->first.counter
                  : last->first.counter + last->len == first.counter)) {
        if (backward)
            last->first.counter = first.counter;
        last->len += n;
        return 0;
    }
    if (GROW(wait->spans, wait->cap, wait->len + 1))
        return -ENOMEM;
    wait->spans[wait->len++] = (struct crdt_text_span){first, n};
    return 0;
}

/* Pushes the gathered ops to pending as one op (a run, or a lone one-character delete). */
static int run_wait_flush(struct crdt_text *text, struct run_wait *wait,
                          const struct crdt_text_op *run)
{
    if (!wait->parts)
        return 0;
    if (run->backward) /* gathered in deleting order, so highest ids first: list them ascending */
        for (size_t i = 0, j = wait->len - 1; i < j; i++, j--) {
            struct crdt_text_span t = wait->spans[i];
            wait->spans[i] = wait->spans[j];
            wait->spans[j] = t;
        }
    bool several = wait->parts >= 2;
    struct crdt_text_op op = {
        .kind = CRDT_TEXT_DELETE,
        .id = {run->id.counter + wait->first_part, run->id.replica},
        .len = several ? (size_t)wait->parts : 0,
        .targets = wait->spans,
        .targets_len = wait->len,
        .backward = several && run->backward,
    };
    wait->len = 0;
    wait->parts = 0;
    /* While crdt_text_apply retries pending ops, entries it has dropped are still in the
     * list; none can be this op: its ops are neither held nor applied. */
    return pending_has(text, &op) ? 0 : crdt_text_ops_push(&text->pending, &op);
}

/*
 * A delete run (crdt_text_op, len n >= 2) is n one-character delete ops, and
 * applies exactly as they would, one after the other (apply_delete on each),
 * without a step per character. It is walked in its ops' order in pieces: a
 * piece is a stretch of consecutive ops whose own counters are all held or
 * none is, and whose targets are consecutive ids that are either all
 * missing or all inside one id run held here (so consecutive lvs). Every op
 * of a piece then has the same outcome as apply_delete would give it:
 *
 * - counters held: each op is a duplicate (apply_delete checks that first);
 * - targets missing: each op waits; consecutive waiting ops are pushed to
 *   pending as one shorter run (ops with consecutive counters deleting, in
 *   order, consecutive characters of the targets: again a run);
 * - else each op deletes its character: the piece deletes its lv range at
 *   once (deleted flags are a set: the order they are set in changes
 *   nothing), adds the delete-log records the ops' one-character deletes
 *   would (text_dellog_add_parts) and holds their counters.
 *
 * Pieces are cut where an id run, a held range of the op's replica or a
 * target ends, so their number does not depend on the run's length. Nothing
 * else happens between the ops of a run, so doing a piece's ops together is
 * doing them one by one. If nothing applies and nothing is held, the run
 * waits whole (OP_WAITING, nothing pushed); *parts counts ops applied and
 * *last the counter of the last one.
 */
static int apply_delete_run(enum outcome *result, size_t *parts, uint64_t *last,
                            struct crdt_text *text, const struct crdt_text_op *op)
{
    struct run_wait wait = {0};
    uint32_t replica = UINT32_MAX; /* the op's replica, once something applies */
    bool any_held = false, any_waiting = false;
    uint64_t k = 0, done = 0;
    size_t t = 0;
    int rc = 0;
    *parts = 0;
    while (k < op->len && !rc) {
        assert(t < op->targets_len);
        const struct crdt_text_span *span =
            &op->targets[op->backward ? op->targets_len - 1 - t : t];
        if (done == span->len) {
            t++;
            done = 0;
            continue;
        }
        uint64_t m = span->len - done;
        uint64_t x =
            op->backward ? span->first.counter + span->len - 1 - done : span->first.counter + done;
        /* The target: inside an id run (held), or in the gap before the next one. */
        bool ready = false;
        uint32_t lv = 0, r;
        if (text_replica_find(&r, text, span->first.replica)) {
            const struct replica *rep = &text->replicas[r];
            size_t at = idrun_find(rep, x);
            const struct idrun *ir = at == SIZE_MAX ? NULL : &rep->ins[at];
            if (ir && x - ir->counter < ir->len) {
                ready = true;
                lv = ir->lv + (uint32_t)(x - ir->counter);
                m = min_u64(m, op->backward ? x - ir->counter + 1 : ir->counter + ir->len - x);
            } else if (op->backward) {
                if (ir)
                    m = min_u64(m, x - (ir->counter + ir->len - 1));
            } else {
                size_t next = at == SIZE_MAX ? 0 : at + 1;
                if (next < rep->ins_len)
                    m = min_u64(m, rep->ins[next].counter - x);
            }
        }
        /* The ops' own counters: held, or up to the next held range. */
        uint64_t counter = op->id.counter + k;
        bool held = false;
        if (text_replica_find(&r, text, op->id.replica)) {
            const struct replica *rep = &text->replicas[r];
            size_t at = held_find(rep, counter);
            if (at != SIZE_MAX && counter <= rep->held[at].last) {
                held = true;
                m = min_u64(m, rep->held[at].last - counter + 1);
            } else {
                size_t next = at == SIZE_MAX ? 0 : at + 1;
                if (next < rep->held_len)
                    m = min_u64(m, rep->held[next].first - counter);
            }
        }
        if (held) {
            any_held = true;
            rc = run_wait_flush(text, &wait, op);
        } else if (!ready) {
            any_waiting = true;
            struct crdt_ts first = {op->backward ? x - (m - 1) : x, span->first.replica};
            rc = run_wait_add(&wait, k, first, m, op->backward);
        } else {
            rc = run_wait_flush(text, &wait, op);
            if (!rc && replica == UINT32_MAX)
                rc = text_replica_index(&replica, text, op->id.replica);
            uint32_t lo = op->backward ? lv - (uint32_t)(m - 1) : lv;
            if (!rc)
                rc = text_delete_lv_range(text, lo, (uint32_t)m);
            if (!rc)
                rc = text_dellog_add_parts(text, counter, replica, lo, (uint32_t)m, op->backward);
            if (!rc)
                rc = text_held_add(&text->replicas[replica], counter, counter + m - 1);
            *parts += (size_t)m;
            *last = counter + m - 1;
        }
        k += m;
        done += m;
    }
    if (*parts == 0 && !any_held) {
        *result = OP_WAITING; /* nothing was pushed: the run waits whole, as it is */
    } else {
        if (!rc)
            rc = run_wait_flush(text, &wait, op);
        *result = *parts ? OP_APPLIED : any_waiting ? OP_SPLIT : OP_DUPLICATE;
    }
    free(wait.spans);
    return rc;
}

/* Applies one op; *parts counts the ops applied (a run's, or 1), *last the last id's counter. */
static int apply_one(enum outcome *result, size_t *parts, uint64_t *last, struct crdt_text *text,
                     const struct crdt_text_op *op)
{
    if (is_run(op))
        return apply_delete_run(result, parts, last, text, op);
    *parts = 1;
    *last = op->kind == CRDT_TEXT_INSERT ? op->id.counter + op->len - 1 : op->id.counter;
    if (op->kind == CRDT_TEXT_INSERT)
        return apply_insert(result, text, op);
    return apply_delete(result, text, op);
}

/* Ops waiting, a run counting as the ops it holds. */
static size_t pending_ops(const struct crdt_text *text)
{
    size_t n = 0;
    for (size_t i = 0; i < text->pending.len; i++)
        n += is_run(&text->pending.ops[i]) ? text->pending.ops[i].len : 1;
    return n;
}

int crdt_text_apply(size_t *applied, size_t *pending, struct crdt_text *text,
                    struct crdt_clock *clock, const struct crdt_text_op *ops, size_t count)
{
    *applied = 0;
    *pending = pending_ops(text);
    for (size_t i = 0; i < count; i++)
        if (text_op_check(&ops[i]))
            return -EINVAL;
    int rc = 0;
    bool progress = false;
    for (size_t i = 0; i < count && !rc; i++) {
        enum outcome result;
        size_t parts;
        uint64_t last;
        rc = apply_one(&result, &parts, &last, text, &ops[i]);
        if (rc)
            break;
        if (result == OP_APPLIED) {
            *applied += parts;
            progress = true;
            if (clock)
                crdt_clock_observe(clock, (struct crdt_ts){last, ops[i].id.replica});
        } else if (result == OP_WAITING && !pending_has(text, &ops[i])) {
            rc = crdt_text_ops_push(&text->pending, &ops[i]);
        }
    }
    /* Each pass applies whatever became ready; stop when a pass applies nothing. A run that
     * applies in part pushes its waiting rest while this walks the list: the walk reaches it
     * too (and keeps it: nothing more applies to it in the same pass). */
    while (!rc && progress && text->pending.len) {
        progress = false;
        size_t kept = 0;
        for (size_t i = 0; i < text->pending.len; i++) {
            enum outcome result = OP_WAITING;
            /* A copy: applying a run may push to pending, which moves the array. */
            struct crdt_text_op op = text->pending.ops[i];
            size_t parts = 0;
            uint64_t last = 0;
            if (!rc)
                rc = apply_one(&result, &parts, &last, text, &op);
            if (result == OP_WAITING || rc) {
                text->pending.ops[kept++] = op;
                continue;
            }
            if (result == OP_APPLIED) {
                *applied += parts;
                progress = true;
                if (clock)
                    crdt_clock_observe(clock, (struct crdt_ts){last, op.id.replica});
            }
        }
        text->pending.len = kept;
    }
    if (text->pending.len == 0)
        crdt_text_ops_clear(&text->pending);
    *pending = pending_ops(text);
    return rc;
}

/* ------------------------------------------------------------------ reads */

size_t crdt_text_len_bytes(const struct crdt_text *text)
{
    return text->root->vis_bytes;
}

size_t crdt_text_len_cp(const struct crdt_text *text)
{
    return text->root->vis_cp;
}

int crdt_text_read(void *dst, const struct crdt_text *text, size_t pos, size_t len)
{
    if (pos > text->root->vis_bytes || len > text->root->vis_bytes - pos)
        return -EINVAL;
    if (len == 0)
        return 0;
    size_t cp, bytes, total;
    const struct leaf *leaf = descend(text, M_BYTES, pos, &cp, &bytes, &total);
    size_t skip = pos - bytes;
    uint8_t *to = dst;
    for (; leaf && len > 0; leaf = leaf->next) {
        for (uint32_t i = 0; i < leaf->hdr.count && len > 0; i++) {
            const struct run *run = &leaf->runs[i];
            if (leaf->deleted[i])
                continue;
            if (skip >= run->bytes) {
                skip -= run->bytes;
                continue;
            }
            size_t n = run->bytes - skip < len ? run->bytes - skip : len;
            memcpy(to, text->arena + run->byte_off + skip, n);
            to += n;
            len -= n;
            skip = 0;
        }
    }
    return 0;
}

int crdt_text_content(char **out, size_t *out_len, const struct crdt_text *text)
{
    size_t len = text->root->vis_bytes;
    char *content = malloc(len + 1);
    if (!content)
        return -ENOMEM;
    int rc = crdt_text_read(content, text, 0, len);
    if (rc) {
        free(content);
        return rc;
    }
    content[len] = '\0';
    *out = content;
    *out_len = len;
    return 0;
}

int crdt_text_cp_to_byte(size_t *out, const struct crdt_text *text, size_t cp_pos)
{
    if (cp_pos >= text->root->vis_cp) {
        if (cp_pos > text->root->vis_cp)
            return -EINVAL;
        *out = text->root->vis_bytes;
        return 0;
    }
    size_t cp, bytes, total;
    const struct leaf *leaf = descend(text, M_CP, cp_pos, &cp, &bytes, &total);
    size_t rem = cp_pos - cp;
    for (uint32_t i = 0; i < leaf->hdr.count; i++) {
        const struct run *run = &leaf->runs[i];
        if (leaf->deleted[i])
            continue;
        if (rem < run->len) {
            *out = bytes + run_byte_at(text, run, (uint32_t)rem);
            return 0;
        }
        rem -= run->len;
        bytes += run->bytes;
    }
    return -EINVAL;
}

int crdt_text_version(struct crdt_vv *out, const struct crdt_text *text)
{
    crdt_vv_free(out);
    for (size_t i = 0; i < text->replicas_len; i++) {
        const struct replica *rep = &text->replicas[i];
        if (rep->held_len) {
            int rc = crdt_vv_raise(out, rep->id, rep->held[rep->held_len - 1].last);
            if (rc)
                return rc;
        }
    }
    return 0;
}
