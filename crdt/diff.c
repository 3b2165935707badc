/*
 * crdt/diff: see diff.h; README.md ("## diff") describes the algorithm.
 *
 * Pipeline: strip the common prefix and suffix bytes, widened to whole lines;
 * split the middle into lines and hash them; diff the line hashes (patience
 * anchors, recursively; bounded Myers where no line is unique; the whole
 * range when that runs over budget); keep only the line pairs whose bytes
 * agree; refine each changed range to code points (directly when small,
 * through content-defined chunks when large, line by line when its lines pair
 * up by position): strip, bounded Myers, normalize ties, merge changes
 * separated by coincidental matches; last, put each edit at its most natural
 * place (word boundaries, line starts, blank lines).
 */
#include "diff.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Line or unit state in a marks array. */
enum {
    MARK_CHANGED = 1,
    MARK_COARSE = 2, /* changed because a budget ran out: refine by strip only */
};

enum {
    /* Levels of unique-line anchoring (each level pays for its lines from the pool). */
    ANCHOR_DEPTH_MAX = 16,
    /* Lines of old a range may have before anchoring looks at a sample of them only. */
    ANCHOR_SAMPLE_LINES = 1 << 15,
    /* Equal lines around a sampled anchor, on its diagonal, for it to be trusted. */
    ANCHOR_SAMPLE_RUN = 64,
    /* Different sampled lines needed to judge whether two ranges share anything. */
    ANCHOR_RELATED_MIN = 64,
    /*
     * A changed range over this many bytes (both sides) is not refined to
     * code points directly: it is first cut into content-defined chunks,
     * diffed as if they were lines, and only the changed chunks are refined.
     */
    REFINE_DIRECT_MAX = 32 << 10,
    /* Chunk sizes: at least, at most, and on average (2^CHUNK_BITS) bytes. */
    CHUNK_MIN = 16,
    CHUNK_MAX = 1024,
    CHUNK_BITS = 6,
    /* Code points a run of word characters may have and still count as a word. */
    WORD_MAX = 64,
    /* Bytes an insert or delete may slide either way looking for a better boundary. */
    SLIDE_MAX = 256,
};

#define DEFAULT_RUN_WORK            ((uint64_t)1 << 20)
#define DEFAULT_RUN_WORK_PER_UNIT   64
#define DEFAULT_TOTAL_WORK          ((uint64_t)1 << 24)
#define DEFAULT_TOTAL_WORK_PER_BYTE 2

/* Inputs must index as ptrdiff_t with room for Myers' diagonal arithmetic. */
#define DIFF_LEN_MAX ((size_t)(PTRDIFF_MAX / 4))

/* One side's lines of the middle: line i is bytes[starts[i], starts[i + 1]). */
struct lines {
    size_t *starts;
    uint64_t *hashes; /* hash of the line's bytes and length */
    uint8_t *marks;
    size_t count;
};

/* A change in a code point diff: `equal` unchanged units, then del and ins units. */
struct item {
    size_t equal;
    size_t del;
    size_t ins;
    size_t a_at; /* unit positions where `equal` starts; set by items_locate */
    size_t b_at;
};

struct diff_ctx {
    const uint8_t *old_bytes;
    size_t old_len;
    const uint8_t *new_bytes;
    size_t new_len;
    struct crdt_diff_options options;
    uint64_t pool; /* steps left for the whole call */

    struct crdt_edit *edits;
    size_t edit_count;
    size_t edit_cap;

    /* Scratch reused from run to run; a run never outlives the next one's start. */
    ptrdiff_t *diagonals;
    size_t diagonal_cap;
    uint64_t *units;
    size_t units_cap;
    size_t *offsets;
    size_t offsets_cap;
    uint8_t *unit_marks;
    size_t unit_marks_cap;
    struct item *items;
    size_t items_cap;
};

/* One Myers run: diff a[0, n) against b[0, m), marking changed entries. */
struct myers {
    const uint64_t *a;
    const uint64_t *b;
    uint8_t *a_marks;
    uint8_t *b_marks;
    /*
     * Furthest x reached on diagonal k = x - y, forward from a box's top-left
     * corner (diagonal fmid) and backward from its bottom-right (bmid), kept
     * for |k - mid| <= reach + 1: fwd[k - fmid], bwd[k - bmid]. A split gives
     * up past `reach` rounds, which its budget could not pay for anyway, so
     * memory is O(sqrt(budget)) rather than O(n + m).
     */
    ptrdiff_t *fwd;
    ptrdiff_t *bwd;
    ptrdiff_t reach;
    uint64_t steps_left;
};

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Little-endian on every host, so hashes and prefix lengths do not depend on byte order. */
static uint64_t load_le64(const uint8_t *bytes)
{
    uint64_t value;
    memcpy(&value, bytes, sizeof(value));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    value = __builtin_bswap64(value);
#endif
    return value;
}

static int scratch_reserve(void **buf, size_t *cap, size_t count, size_t size)
{
    if (count <= *cap)
        return 0;
    size_t want = max_size(count, *cap * 2);
    if (want > SIZE_MAX / size)
        return -ENOMEM;
    void *fresh = malloc(want * size);
    if (!fresh)
        return -ENOMEM;
    free(*buf);
    *buf = fresh;
    *cap = want;
    return 0;
}

/* --- bytes and code points --------------------------------------------- */

static bool is_continuation(uint8_t byte)
{
    return (byte & 0xC0) == 0x80;
}

/*
 * Length of the unit starting at bytes[0]: a whole UTF-8 sequence when the
 * lead byte and its continuation bytes are well formed, else a single byte.
 * Overlong forms and surrogates pass as sequences: they only need to be
 * compared, and equal units are equal bytes either way.
 */
static size_t unit_len(const uint8_t *bytes, size_t left)
{
    uint8_t lead = bytes[0];
    size_t len;
    if (lead < 0xC0)
        return 1;
    else if (lead < 0xE0)
        len = 2;
    else if (lead < 0xF0)
        len = 3;
    else if (lead < 0xF8)
        len = 4;
    else
        return 1;
    if (len > left)
        return 1;
    for (size_t i = 1; i < len; i++) {
        if (!is_continuation(bytes[i]))
            return 1;
    }
    return len;
}

/* Length of the unit ending at bytes[end] (end > 0), read backwards. */
static size_t unit_len_before(const uint8_t *bytes, size_t end)
{
    size_t back = 1;
    while (back < 4 && back < end && is_continuation(bytes[end - back]))
        back++;
    if (back > 1 && unit_len(bytes + end - back, back) == back)
        return back;
    return 1;
}

static bool is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Bytes from other scripts count as word characters. */
static bool is_word(uint8_t c)
{
    return c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_inside_code_point(const uint8_t *bytes, size_t len, size_t pos)
{
    return pos < len && is_continuation(bytes[pos]);
}

static size_t common_prefix(const uint8_t *a, const uint8_t *b, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t differ = load_le64(a + i) ^ load_le64(b + i);
        if (differ)
            return i + (size_t)__builtin_ctzll(differ) / 8;
    }
    while (i < len && a[i] == b[i])
        i++;
    return i;
}

/* Common suffix of the `len` bytes ending at a_end and at b_end. */
static size_t common_suffix(const uint8_t *a_end, const uint8_t *b_end, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t differ = load_le64(a_end - i - 8) ^ load_le64(b_end - i - 8);
        if (differ)
            return i + (size_t)__builtin_clzll(differ) / 8;
    }
    while (i < len && a_end[-1 - (ptrdiff_t)i] == b_end[-1 - (ptrdiff_t)i])
        i++;
    return i;
}

/* Common prefix backed off to a code point boundary in both. */
static size_t prefix_cp(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    size_t len = common_prefix(a, b, min_size(a_len, b_len));
    while (len > 0 && (is_inside_code_point(a, a_len, len) || is_inside_code_point(b, b_len, len)))
        len--;
    return len;
}

/* Common suffix shortened to start on a code point boundary (the bytes are the same in both). */
static size_t suffix_cp(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
    size_t len = common_suffix(a + a_len, b + b_len, min_size(a_len, b_len));
    while (len > 0 && is_continuation(a[a_len - len]))
        len--;
    return len;
}

#define HASH_MUL 0xbf58476d1ce4e5b9ULL
#define ONES     0x0101010101010101ULL
#define HIGHS    0x8080808080808080ULL

static uint64_t hash_step(uint64_t hash, uint64_t word)
{
    hash = (hash ^ word) * HASH_MUL;
    return hash ^ (hash >> 31);
}

static uint64_t hash_finish(uint64_t hash, size_t len)
{
    hash ^= (uint64_t)len * 0x9e3779b97f4a7c15ULL;
    hash ^= hash >> 32;
    hash *= 0x94d049bb133111ebULL;
    return hash ^ (hash >> 29);
}

/*
 * Finds the end of the line starting at bytes[pos] (just past its '\n', or
 * end) and hashes it, eight bytes at a time: one pass, no call per line. A
 * 64-bit hash; collisions only cost precision, since lines paired as equal
 * are checked against the bytes afterwards.
 */
static size_t line_scan(const uint8_t *bytes, size_t pos, size_t end, uint64_t *hash_out)
{
    const size_t start = pos;
    uint64_t hash = 0;
    while (end - pos >= 8) {
        uint64_t word = load_le64(bytes + pos);
        uint64_t x = word ^ (ONES * '\n');
        uint64_t newline = (x - ONES) & ~x & HIGHS; /* exact up to the first '\n' byte */
        if (newline) {
            unsigned bits = (unsigned)__builtin_ctzll(newline) + 1; /* through the '\n' */
            uint64_t kept = bits == 64 ? word : word & ((1ULL << bits) - 1);
            pos += bits / 8;
            *hash_out = hash_finish(hash_step(hash, kept), pos - start);
            return pos;
        }
        hash = hash_step(hash, word);
        pos += 8;
    }
    uint64_t tail = 0;
    unsigned shift = 0;
    while (pos < end) {
        uint8_t byte = bytes[pos++];
        tail |= (uint64_t)byte << shift;
        shift += 8;
        if (byte == '\n')
            break;
    }
    if (shift > 0)
        hash = hash_step(hash, tail);
    *hash_out = hash_finish(hash, pos - start);
    return pos;
}

static uint64_t hash_bytes(const uint8_t *bytes, size_t len)
{
    uint64_t hash = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8)
        hash = hash_step(hash, load_le64(bytes + i));
    if (i < len) {
        uint64_t tail = 0;
        for (size_t j = 0; i + j < len; j++)
            tail |= (uint64_t)bytes[i + j] << (8 * j);
        hash = hash_step(hash, tail);
    }
    return hash_finish(hash, len);
}

/*
 * Finds the end of the content-defined chunk starting at bytes[pos] and
 * hashes it. A gear hash (as in FastCDC: h = 2h + gear(byte), so h depends on
 * the last 64 bytes only) cuts where its top CHUNK_BITS bits are zero, before
 * a code point start; the same text cuts the same way wherever it sits, so
 * chunks of unchanged text pair up after an insert like unchanged lines do.
 */
static size_t chunk_scan(const uint8_t *bytes, size_t pos, size_t end, uint64_t *hash_out)
{
    const size_t start = pos, limit = min_size(end, start + CHUNK_MAX);
    uint64_t gear = 0;
    while (pos < limit) {
        gear = (gear << 1) + ((uint64_t)bytes[pos++] + 1) * 0x9e3779b97f4a7c15ULL;
        if (pos - start >= CHUNK_MIN && (gear >> (64 - CHUNK_BITS)) == 0 &&
            (pos == end || !is_continuation(bytes[pos])))
            break;
    }
    while (pos < end && is_continuation(bytes[pos]))
        pos++;
    *hash_out = hash_bytes(bytes + start, pos - start);
    return pos;
}

/* --- the edit list ----------------------------------------------------- */

static int edits_push(struct diff_ctx *ctx, size_t old_pos, size_t old_len, size_t new_pos,
                      size_t new_len)
{
    assert(old_len > 0 || new_len > 0);
    if (ctx->edit_count == ctx->edit_cap) {
        size_t cap = ctx->edit_cap ? ctx->edit_cap * 2 : 16;
        if (cap > SIZE_MAX / sizeof(struct crdt_edit))
            return -ENOMEM;
        struct crdt_edit *grown = realloc(ctx->edits, cap * sizeof(struct crdt_edit));
        if (!grown)
            return -ENOMEM;
        ctx->edits = grown;
        ctx->edit_cap = cap;
    }
    ctx->edits[ctx->edit_count++] = (struct crdt_edit){
        .old_pos = old_pos, .old_len = old_len, .new_pos = new_pos, .new_len = new_len};
    return 0;
}

/* --- Myers -------------------------------------------------------------- */

/*
 * E. W. Myers, "An O(ND) Difference Algorithm and Its Variations",
 * Algorithmica 1 (1986), section 4b: the linear-space refinement. The forward
 * and backward searches advance one edit at a time until their furthest-
 * reaching paths overlap on a diagonal; that point splits the box into two
 * boxes of at most half the edit distance each, so the recursion depth is
 * O(log D). The diagonal bookkeeping (sentinels just outside the live range,
 * the box clipping) follows libxdiff's xdl_split.
 *
 * Every diagonal extended and every match followed costs a step; past the
 * budget the run gives up with -ERANGE and its caller falls back to coarser
 * edits, so a run costs at most its budget plus one sweep.
 */

static bool myers_charge(struct myers *run, uint64_t steps)
{
    if (steps > run->steps_left) {
        run->steps_left = 0;
        return false;
    }
    run->steps_left -= steps;
    return true;
}

static ptrdiff_t max_ptrdiff(ptrdiff_t a, ptrdiff_t b)
{
    return a > b ? a : b;
}

static ptrdiff_t min_ptrdiff(ptrdiff_t a, ptrdiff_t b)
{
    return a < b ? a : b;
}

/* Finds a point on an optimal path through the box, strictly inside it (D >= 2). */
static int myers_split(struct myers *run, ptrdiff_t x0, ptrdiff_t x1, ptrdiff_t y0, ptrdiff_t y1,
                       ptrdiff_t *mid_x, ptrdiff_t *mid_y)
{
    const uint64_t *a = run->a, *b = run->b;
    ptrdiff_t *fwd = run->fwd, *bwd = run->bwd;
    const ptrdiff_t dmin = x0 - y1, dmax = x1 - y0; /* the box's diagonals */
    const ptrdiff_t fmid = x0 - y0, bmid = x1 - y1;
    const bool odd = ((fmid - bmid) & 1) != 0;
    ptrdiff_t fmin = fmid, fmax = fmid, bmin = bmid, bmax = bmid; /* live diagonals */

    fwd[0] = x0;
    bwd[0] = x1;
    for (ptrdiff_t round = 1;; round++) {
        if (round > run->reach)
            return -ERANGE;
        /* Widen the live range by one each side, or narrow it where the box ends;
         * the diagonal just outside gets a value that never wins. */
        uint64_t steps = 0;
        if (fmin > dmin)
            fwd[--fmin - 1 - fmid] = -1;
        else
            ++fmin;
        if (fmax < dmax)
            fwd[++fmax + 1 - fmid] = -1;
        else
            --fmax;
        for (ptrdiff_t k = fmax; k >= fmin; k -= 2) {
            /* One more delete from diagonal k - 1, or one more insert from k + 1. */
            ptrdiff_t x = max_ptrdiff(fwd[k - 1 - fmid] + 1, fwd[k + 1 - fmid]);
            ptrdiff_t y = x - k;
            const ptrdiff_t from = x;
            while (x < x1 && y < y1 && a[x] == b[y]) {
                x++;
                y++;
            }
            steps += 1 + (uint64_t)(x - from);
            fwd[k - fmid] = x;
            if (odd && bmin <= k && k <= bmax && bwd[k - bmid] <= x) {
                *mid_x = x;
                *mid_y = y;
                return 0;
            }
        }
        if (!myers_charge(run, steps))
            return -ERANGE;

        steps = 0;
        if (bmin > dmin)
            bwd[--bmin - 1 - bmid] = PTRDIFF_MAX;
        else
            ++bmin;
        if (bmax < dmax)
            bwd[++bmax + 1 - bmid] = PTRDIFF_MAX;
        else
            --bmax;
        for (ptrdiff_t k = bmax; k >= bmin; k -= 2) {
            ptrdiff_t x = min_ptrdiff(bwd[k - 1 - bmid], bwd[k + 1 - bmid] - 1);
            ptrdiff_t y = x - k;
            const ptrdiff_t from = x;
            while (x > x0 && y > y0 && a[x - 1] == b[y - 1]) {
                x--;
                y--;
            }
            steps += 1 + (uint64_t)(from - x);
            bwd[k - bmid] = x;
            if (!odd && fmin <= k && k <= fmax && x <= fwd[k - fmid]) {
                *mid_x = x;
                *mid_y = y;
                return 0;
            }
        }
        if (!myers_charge(run, steps))
            return -ERANGE;
    }
}

static int myers_compare(struct myers *run, ptrdiff_t x0, ptrdiff_t x1, ptrdiff_t y0, ptrdiff_t y1)
{
    for (;;) {
        const ptrdiff_t x0_in = x0, x1_in = x1;
        while (x0 < x1 && y0 < y1 && run->a[x0] == run->b[y0]) {
            x0++;
            y0++;
        }
        while (x0 < x1 && y0 < y1 && run->a[x1 - 1] == run->b[y1 - 1]) {
            x1--;
            y1--;
        }
        if (!myers_charge(run, 1 + (uint64_t)(x0 - x0_in) + (uint64_t)(x1_in - x1)))
            return -ERANGE;
        if (x0 == x1) {
            memset(run->b_marks + y0, MARK_CHANGED, (size_t)(y1 - y0));
            return 0;
        }
        if (y0 == y1) {
            memset(run->a_marks + x0, MARK_CHANGED, (size_t)(x1 - x0));
            return 0;
        }
        ptrdiff_t mid_x, mid_y;
        int rc = myers_split(run, x0, x1, y0, y1, &mid_x, &mid_y);
        if (rc < 0)
            return rc;
        assert(mid_x >= x0 && mid_x <= x1 && mid_y >= y0 && mid_y <= y1);
        assert((mid_x != x0 || mid_y != y0) && (mid_x != x1 || mid_y != y1));
        rc = myers_compare(run, x0, mid_x, y0, mid_y);
        if (rc < 0)
            return rc;
        x0 = mid_x;
        y0 = mid_y;
    }
}

/*
 * Diffs a[0, n) against b[0, m) (marks zeroed by the caller) within a budget
 * drawn from the pool. -ERANGE when over budget; the marks are then garbage.
 */
static int myers_run(struct diff_ctx *ctx, const uint64_t *a, size_t n, const uint64_t *b, size_t m,
                     uint8_t *a_marks, uint8_t *b_marks)
{
    uint64_t budget =
        sat_add(ctx->options.run_work, sat_mul(ctx->options.run_work_per_unit, (uint64_t)(n + m)));
    if (budget > ctx->pool)
        budget = ctx->pool;
    /*
     * Round r of a split extends at least r / 2 diagonals (the live range
     * grows by one a round on a side the box does not clip), so r rounds
     * cost at least r^2 / 4 steps: twice the square root bounds the rounds.
     * A box of n + m units needs at most (n + m) / 2 + 1 rounds.
     */
    uint64_t root = 1;
    while (root < UINT32_MAX && root * root < budget)
        root *= 2;
    size_t reach = min_size((size_t)(2 * root + 2), (n + m) / 2 + 2);
    size_t span = 2 * reach + 3;
    int rc =
        scratch_reserve((void **)&ctx->diagonals, &ctx->diagonal_cap, 2 * span, sizeof(ptrdiff_t));
    if (rc < 0)
        return rc;
    struct myers run = {
        .a = a,
        .b = b,
        .a_marks = a_marks,
        .b_marks = b_marks,
        .fwd = ctx->diagonals + reach + 1,
        .bwd = ctx->diagonals + span + reach + 1,
        .reach = (ptrdiff_t)reach,
        .steps_left = budget,
    };
    rc = myers_compare(&run, 0, (ptrdiff_t)n, 0, (ptrdiff_t)m);
    ctx->pool -= budget - run.steps_left;
    return rc;
}

/* --- lines --------------------------------------------------------------- */

static void lines_free(struct lines *lines)
{
    free(lines->starts);
    free(lines->hashes);
    free(lines->marks);
    memset(lines, 0, sizeof(*lines));
}

/* Splits bytes[start, end) into lines, or into chunks (chunk_scan), and hashes them. */
static int lines_split(struct lines *out, const uint8_t *bytes, size_t start, size_t end,
                       bool chunks)
{
    memset(out, 0, sizeof(*out));
    /* A guess from a 32-byte average line; the arrays grow if the text has shorter ones. */
    size_t cap = (end - start) / 32 + 16;
    for (size_t pos = start; pos < end; out->count++) {
        if (out->count + 1 >= cap || !out->starts) {
            cap = out->starts ? cap * 2 : cap;
            size_t *starts = realloc(out->starts, cap * sizeof(size_t));
            if (!starts)
                goto fail;
            out->starts = starts;
            uint64_t *hashes = realloc(out->hashes, cap * sizeof(uint64_t));
            if (!hashes)
                goto fail;
            out->hashes = hashes;
        }
        out->starts[out->count] = pos;
        pos = chunks ? chunk_scan(bytes, pos, end, &out->hashes[out->count])
                     : line_scan(bytes, pos, end, &out->hashes[out->count]);
    }
    if (!out->starts) {
        out->starts = malloc(sizeof(size_t));
        if (!out->starts)
            goto fail;
    }
    out->starts[out->count] = end;
    out->marks = calloc(max_size(out->count, 1), 1);
    if (!out->marks)
        goto fail;
    return 0;
fail:
    lines_free(out);
    return -ENOMEM;
}

struct anchor {
    size_t a;
    size_t b;
};

/*
 * One line of a in the anchor table. a_seen and b_seen are 0 for none, the
 * line's offset from the range start + 1 when seen once, ANCHOR_MANY after.
 */
struct anchor_slot {
    uint64_t hash;
    uint32_t a_seen;
    uint32_t b_seen;
};

#define ANCHOR_MANY UINT32_MAX

static size_t anchor_slot_home(uint64_t hash, size_t mask)
{
    return (size_t)(hash ^ (hash >> 32)) & mask;
}

/*
 * The table is far bigger than the caches on large files and every probe
 * misses; the hashes are known in advance, so the slot a few lines ahead is
 * fetched while this one is handled.
 */
#define ANCHOR_PREFETCH 8

static void anchor_prefetch(const struct anchor_slot *table, size_t mask, const uint64_t *hashes,
                            size_t at, size_t end)
{
    if (at + ANCHOR_PREFETCH < end)
        __builtin_prefetch(&table[anchor_slot_home(hashes[at + ANCHOR_PREFETCH], mask)]);
}

static struct anchor_slot *anchor_slot_find(struct anchor_slot *table, size_t mask, uint64_t hash)
{
    size_t slot = anchor_slot_home(hash, mask);
    while (table[slot].a_seen != 0 && table[slot].hash != hash)
        slot = (slot + 1) & mask;
    return &table[slot];
}

static void anchor_seen(uint32_t *seen, size_t offset)
{
    *seen = *seen == 0 ? (uint32_t)(offset + 1) : ANCHOR_MANY;
}

/*
 * A line takes part in anchoring when its hash falls in the sample. All
 * copies of a line share its hash, so a sampled line is unique exactly when
 * it is unique in the whole range: sampling only drops anchors, never makes a
 * false one. It keeps the table within the caches on large files, where the
 * gaps between sampled anchors are mostly unchanged lines that the next level
 * strips at once. What the sample cannot see is how long the competing runs
 * are: of two blocks swapped, the shorter should move, but the sample may
 * hold a line of the shorter one only. So a sampled anchor is kept only
 * inside ANCHOR_SAMPLE_RUN equal lines, and shorter runs are left to the next
 * level, which sees every line of its range.
 */
static bool anchor_sampled(uint64_t hash, uint64_t sample_mask)
{
    return ((hash >> 40) & sample_mask) == 0;
}

/* Whether a[i] = b[j] lies in a run of ANCHOR_SAMPLE_RUN lines equal on both sides. */
static bool anchor_in_long_run(const struct lines *a, size_t a_lo, size_t a_hi,
                               const struct lines *b, size_t b_lo, size_t b_hi, size_t i, size_t j)
{
    size_t run = 1;
    for (size_t k = 1; run < ANCHOR_SAMPLE_RUN && k <= i - a_lo && k <= j - b_lo; k++, run++) {
        if (a->hashes[i - k] != b->hashes[j - k])
            break;
    }
    for (size_t k = 1; run < ANCHOR_SAMPLE_RUN && i + k < a_hi && j + k < b_hi; k++, run++) {
        if (a->hashes[i + k] != b->hashes[j + k])
            break;
    }
    return run >= ANCHOR_SAMPLE_RUN;
}

/*
 * Patience anchors (Bram Cohen's patience diff): the lines that occur exactly
 * once in a[a_lo, a_hi) and once in b[b_lo, b_hi), kept along a longest
 * increasing subsequence so they pair in order. Such lines are what a person
 * sees as landmarks; between them the ranges are small and independent.
 * Only lines in the sample take part (anchor_sampled; mask 0 = all lines).
 * *out is malloc'ed (NULL when none). *related is false when at least
 * ANCHOR_RELATED_MIN different lines of a were sampled and under 1/8 of them
 * occur in b at all. Different lines, not occurrences: a blank line in the
 * sample would otherwise vouch for two unrelated texts; and with fewer (a
 * file of a few lines repeated) the sample says nothing. 0 or -ENOMEM.
 * n, m < ANCHOR_MANY - 1.
 */
static int anchors_pass(struct anchor **out, size_t *out_len, bool *related, const struct lines *a,
                        size_t a_lo, size_t a_hi, const struct lines *b, size_t b_lo, size_t b_hi,
                        uint64_t sample_mask)
{
    size_t sampled = 0;
    for (size_t i = a_lo; i < a_hi; i++)
        sampled += anchor_sampled(a->hashes[i], sample_mask);
    size_t size = 16;
    while (size < 2 * sampled)
        size *= 2;
    const size_t mask = size - 1;
    int rc = -ENOMEM;
    struct anchor_slot *table = calloc(size, sizeof(*table));
    struct anchor *anchors = NULL;
    uint32_t *pairs = NULL; /* pairs[2p], pairs[2p + 1]: a and b offsets of pair p */
    uint32_t *tails = NULL, *previous = NULL;
    if (!table)
        goto out;
    size_t a_distinct = 0;
    for (size_t i = a_lo; i < a_hi; i++) {
        if (!anchor_sampled(a->hashes[i], sample_mask))
            continue;
        anchor_prefetch(table, mask, a->hashes, i, a_hi);
        struct anchor_slot *slot = anchor_slot_find(table, mask, a->hashes[i]);
        slot->hash = a->hashes[i];
        a_distinct += slot->a_seen == 0;
        anchor_seen(&slot->a_seen, i - a_lo);
    }
    size_t pair_count = 0, a_found = 0;
    for (size_t j = b_lo; j < b_hi; j++) {
        if (!anchor_sampled(b->hashes[j], sample_mask))
            continue;
        anchor_prefetch(table, mask, b->hashes, j, b_hi);
        struct anchor_slot *slot = anchor_slot_find(table, mask, b->hashes[j]);
        if (slot->a_seen == 0)
            continue;
        a_found += slot->b_seen == 0;
        if (slot->a_seen == ANCHOR_MANY) {
            slot->b_seen = ANCHOR_MANY; /* only marks the line as found */
            continue;
        }
        pair_count += slot->b_seen == 0;
        pair_count -= slot->b_seen != 0 && slot->b_seen != ANCHOR_MANY;
        anchor_seen(&slot->b_seen, j - b_lo);
    }
    *related = a_distinct < ANCHOR_RELATED_MIN || a_found >= a_distinct / 8;
    if (pair_count == 0) {
        rc = 0;
        goto out;
    }
    pairs = malloc(2 * pair_count * sizeof(*pairs));
    tails = malloc(pair_count * sizeof(*tails));
    previous = malloc(pair_count * sizeof(*previous));
    if (!pairs || !tails || !previous)
        goto out;
    size_t p = 0;
    for (size_t i = a_lo; i < a_hi; i++) {
        if (!anchor_sampled(a->hashes[i], sample_mask))
            continue;
        anchor_prefetch(table, mask, a->hashes, i, a_hi);
        const struct anchor_slot *slot = anchor_slot_find(table, mask, a->hashes[i]);
        if (slot->a_seen != ANCHOR_MANY && slot->b_seen != 0 && slot->b_seen != ANCHOR_MANY) {
            pairs[2 * p] = slot->a_seen - 1;
            pairs[2 * p + 1] = slot->b_seen - 1;
            p++;
        }
    }
    assert(p == pair_count);
    /* Patience sorting: tails[l] ends the increasing run of length l + 1 with the lowest b. */
    uint32_t runs = 0;
    for (p = 0; p < pair_count; p++) {
        const uint32_t b_off = pairs[2 * p + 1];
        uint32_t lo = 0, hi = runs;
        if (runs > 0 && pairs[2 * tails[runs - 1] + 1] < b_off)
            lo = runs; /* the usual case: anchors in order extend the longest run */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (pairs[2 * tails[mid] + 1] < b_off)
                lo = mid + 1;
            else
                hi = mid;
        }
        previous[p] = lo > 0 ? tails[lo - 1] : UINT32_MAX;
        tails[lo] = (uint32_t)p;
        if (lo == runs)
            runs++;
    }
    anchors = malloc(runs * sizeof(*anchors));
    if (!anchors)
        goto out;
    uint32_t at = tails[runs - 1];
    for (size_t l = runs; l-- > 0;) {
        anchors[l] = (struct anchor){.a = a_lo + pairs[2 * at], .b = b_lo + pairs[2 * at + 1]};
        at = previous[at];
    }
    size_t kept = runs;
    if (sample_mask != 0) {
        kept = 0;
        for (size_t l = 0; l < runs; l++) {
            if (anchor_in_long_run(a, a_lo, a_hi, b, b_lo, b_hi, anchors[l].a, anchors[l].b))
                anchors[kept++] = anchors[l];
        }
    }
    if (kept > 0) {
        *out = anchors;
        *out_len = kept;
        anchors = NULL;
    }
    rc = 0;
out:
    free(anchors);
    free(previous);
    free(tails);
    free(pairs);
    free(table);
    return rc;
}

/*
 * Anchors for a range (see anchors_pass), from a sample of the lines when the
 * range is large and from every line when the sample yields none. A range
 * without anchors whose sides hardly share a line was rewritten: *rewritten
 * is set and the caller replaces it whole, as there is nothing to align and
 * Myers would only pair blank lines and braces, slowly. *out is malloc'ed
 * (NULL when none). -ERANGE when the pool cannot pay or the range has too
 * many lines to number in 32 bits.
 */
static int anchors_find(struct diff_ctx *ctx, struct anchor **out, size_t *out_len, bool *rewritten,
                        const struct lines *a, size_t a_lo, size_t a_hi, const struct lines *b,
                        size_t b_lo, size_t b_hi)
{
    *out = NULL;
    *out_len = 0;
    *rewritten = false;
    size_t n = a_hi - a_lo, m = b_hi - b_lo;
    if (ctx->pool < n + m || n >= ANCHOR_MANY - 1 || m >= ANCHOR_MANY - 1)
        return -ERANGE;
    ctx->pool -= n + m;
    uint64_t sample_mask = 0;
    while ((n >> __builtin_popcountll(sample_mask)) > ANCHOR_SAMPLE_LINES)
        sample_mask = sample_mask * 2 + 1;
    bool related = true;
    int rc = anchors_pass(out, out_len, &related, a, a_lo, a_hi, b, b_lo, b_hi, sample_mask);
    if (rc == 0 && *out_len == 0 && related && sample_mask != 0) {
        if (ctx->pool < n + m)
            return -ERANGE;
        ctx->pool -= n + m;
        rc = anchors_pass(out, out_len, &related, a, a_lo, a_hi, b, b_lo, b_hi, 0);
    }
    *rewritten = rc == 0 && *out_len == 0 && !related;
    return rc;
}

static void marks_set(uint8_t *marks, size_t lo, size_t hi, uint8_t value)
{
    memset(marks + lo, value, hi - lo);
}

/* Bytes shared by the common prefix and suffix of a[i] and b[j], counted on both sides. */
static size_t lines_shared(const struct diff_ctx *ctx, const struct lines *a, size_t i,
                           const struct lines *b, size_t j)
{
    const uint8_t *old_line = ctx->old_bytes + a->starts[i];
    const uint8_t *new_line = ctx->new_bytes + b->starts[j];
    size_t old_len = a->starts[i + 1] - a->starts[i], new_len = b->starts[j + 1] - b->starts[j];
    size_t shortest = min_size(old_len, new_len);
    size_t prefix = common_prefix(old_line, new_line, shortest);
    size_t suffix = common_suffix(old_line + old_len, new_line + new_len, shortest - prefix);
    return 2 * (prefix + suffix);
}

/*
 * Whether a[i0, i0 + count) and b[j0, j0 + count) are the same lines, each
 * edited in place (re-indented, line endings converted, a name replaced on
 * every line): on a sample of pairs, the common prefix and suffix of line k
 * and line k cover at least half of their bytes, and more than pairing line k
 * with line k + 1 or k - 1 does (when lines moved by one, as after an insert
 * at the top of a list of similar lines, pairing by position is wrong).
 */
static bool lines_pair_up(const struct diff_ctx *ctx, const struct lines *a, size_t i0,
                          const struct lines *b, size_t j0, size_t count)
{
    size_t same = 0, ahead = 0, behind = 0, total = 0;
    const size_t step = max_size(count / 32, 1);
    for (size_t k = 0; k + 1 < count; k += step) {
        same += lines_shared(ctx, a, i0 + k, b, j0 + k);
        ahead += lines_shared(ctx, a, i0 + k, b, j0 + k + 1);
        behind += lines_shared(ctx, a, i0 + k + 1, b, j0 + k);
        total += (a->starts[i0 + k + 1] - a->starts[i0 + k]) +
                 (b->starts[j0 + k + 1] - b->starts[j0 + k]);
    }
    return 2 * same >= total && same > ahead && same > behind;
}

/* A large range of as many lines on each side that pair up is refined line by line. */
static bool lines_refine_by_pairs(const struct diff_ctx *ctx, const struct lines *a, size_t a_lo,
                                  size_t a_hi, const struct lines *b, size_t b_lo, size_t b_hi)
{
    const size_t bytes = (a->starts[a_hi] - a->starts[a_lo]) + (b->starts[b_hi] - b->starts[b_lo]);
    return a_hi - a_lo == b_hi - b_lo && a_hi - a_lo > 1 && bytes > REFINE_DIRECT_MAX &&
           lines_pair_up(ctx, a, a_lo, b, b_lo, a_hi - a_lo);
}

/*
 * Marks the changed lines of a[a_lo, a_hi) against b[b_lo, b_hi), as patience
 * diff does: lines unique on both sides anchor the alignment and each range
 * between anchors is diffed on its own (uniqueness is then judged within the
 * range). A range without anchors goes to Myers; if that runs over budget,
 * the whole range is changed (coarse). Patience first, because Myers aligns
 * blank lines and braces across unrelated functions where a person sees one
 * function moved. Before all that, a large range whose lines pair up by
 * position is left to be refined line by line: re-indenting a block makes
 * some of its lines equal to other lines, which anchoring would pair.
 */
static int lines_diff(struct diff_ctx *ctx, struct lines *a, size_t a_lo, size_t a_hi,
                      struct lines *b, size_t b_lo, size_t b_hi, int depth)
{
    while (a_lo < a_hi && b_lo < b_hi && a->hashes[a_lo] == b->hashes[b_lo]) {
        a_lo++;
        b_lo++;
    }
    while (a_lo < a_hi && b_lo < b_hi && a->hashes[a_hi - 1] == b->hashes[b_hi - 1]) {
        a_hi--;
        b_hi--;
    }
    if (a_lo == a_hi || b_lo == b_hi || lines_refine_by_pairs(ctx, a, a_lo, a_hi, b, b_lo, b_hi)) {
        marks_set(a->marks, a_lo, a_hi, MARK_CHANGED);
        marks_set(b->marks, b_lo, b_hi, MARK_CHANGED);
        return 0;
    }
    struct anchor *anchors = NULL;
    size_t anchor_count = 0;
    bool rewritten = false;
    int rc;
    if (depth < ANCHOR_DEPTH_MAX) {
        rc = anchors_find(ctx, &anchors, &anchor_count, &rewritten, a, a_lo, a_hi, b, b_lo, b_hi);
        if (rc < 0 && rc != -ERANGE)
            return rc;
    }
    if (anchor_count > 0) {
        size_t a_from = a_lo, b_from = b_lo;
        rc = 0;
        for (size_t i = 0; i <= anchor_count && rc == 0; i++) {
            size_t a_to = i < anchor_count ? anchors[i].a : a_hi;
            size_t b_to = i < anchor_count ? anchors[i].b : b_hi;
            if (a_from < a_to || b_from < b_to)
                rc = lines_diff(ctx, a, a_from, a_to, b, b_from, b_to, depth + 1);
            a_from = a_to + 1;
            b_from = b_to + 1;
        }
        free(anchors);
        return rc;
    }
    if (rewritten) {
        /* Changed, but not coarse: every line may have been edited a little. */
        marks_set(a->marks, a_lo, a_hi, MARK_CHANGED);
        marks_set(b->marks, b_lo, b_hi, MARK_CHANGED);
        return 0;
    }
    rc = myers_run(ctx, a->hashes + a_lo, a_hi - a_lo, b->hashes + b_lo, b_hi - b_lo,
                   a->marks + a_lo, b->marks + b_lo);
    if (rc != -ERANGE)
        return rc;
    marks_set(a->marks, a_lo, a_hi, MARK_CHANGED | MARK_COARSE);
    marks_set(b->marks, b_lo, b_hi, MARK_CHANGED | MARK_COARSE);
    return 0;
}

/*
 * Lines were paired by hash; a pair is only kept if the bytes agree, so a hash
 * collision costs a coarser edit, never a wrong one. Runs of unchanged pairs
 * are contiguous bytes on both sides, so each run is one memcmp.
 */
static void lines_verify(const struct diff_ctx *ctx, struct lines *a, struct lines *b)
{
    size_t i = 0, j = 0;
    while (i < a->count && j < b->count) {
        if (a->marks[i]) {
            i++;
            continue;
        }
        if (b->marks[j]) {
            j++;
            continue;
        }
        size_t i0 = i, j0 = j;
        while (i < a->count && j < b->count && !a->marks[i] && !b->marks[j]) {
            i++;
            j++;
        }
        size_t a_len = a->starts[i] - a->starts[i0], b_len = b->starts[j] - b->starts[j0];
        if (a_len != b_len ||
            memcmp(ctx->old_bytes + a->starts[i0], ctx->new_bytes + b->starts[j0], a_len) != 0) {
            marks_set(a->marks, i0, i, MARK_CHANGED);
            marks_set(b->marks, j0, j, MARK_CHANGED);
        }
    }
}

/* --- code points --------------------------------------------------------- */

/* Splits bytes[0, len) into units: values[i] packs unit i's bytes; offsets has count + 1 entries.
 */
static size_t units_decode(uint64_t *values, size_t *offsets, const uint8_t *bytes, size_t len)
{
    size_t count = 0;
    for (size_t pos = 0; pos < len; count++) {
        size_t ulen = unit_len(bytes + pos, len - pos);
        uint64_t value = 0;
        for (size_t k = 0; k < ulen; k++)
            value |= (uint64_t)bytes[pos + k] << (8 * k);
        values[count] = value;
        offsets[count] = pos;
        pos += ulen;
    }
    offsets[count] = len;
    return count;
}

/*
 * Myers breaks ties arbitrarily: deleting "fer" from "buffer" may come out as
 * "bu[f]f[er]". A pure insert or delete whose text ends with the whole
 * equality before it (or starts with the whole equality after it) slides over
 * that equality and joins the neighbouring change; the rule of
 * diff-match-patch's cleanupMerge. Positions are in units of a and b.
 */
static size_t items_shift(struct item *items, size_t count, const uint64_t *a, const uint64_t *b)
{
    size_t kept = 0, a_at = 0, b_at = 0; /* where items[i].equal starts */
    for (size_t i = 0; i < count; i++) {
        struct item change = items[i];
        const size_t a_change = a_at + change.equal, b_change = b_at + change.equal;
        const bool pure = change.del == 0 || change.ins == 0;
        const size_t len = change.del + change.ins;
        const uint64_t *moved = change.ins == 0 ? a + a_change : b + b_change;
        size_t gap = change.equal;
        if (pure && kept > 0 && gap > 0 && gap <= len &&
            memcmp(moved + len - gap, a + a_change - gap, gap * sizeof(uint64_t)) == 0) {
            items[kept - 1].del += change.del;
            items[kept - 1].ins += change.ins;
            if (i + 1 < count)
                items[i + 1].equal += gap;
            a_at = a_change - gap + change.del;
            b_at = b_change - gap + change.ins;
            continue;
        }
        gap = i + 1 < count ? items[i + 1].equal : 0;
        const uint64_t *after =
            change.ins == 0 ? a + a_change + change.del : b + b_change + change.ins;
        if (pure && gap > 0 && gap <= len && memcmp(moved, after, gap * sizeof(uint64_t)) == 0) {
            items[i + 1].equal = change.equal + gap;
            items[i + 1].del += change.del;
            items[i + 1].ins += change.ins;
            continue;
        }
        items[kept++] = change;
        a_at = a_change + change.del;
        b_at = b_change + change.ins;
    }
    return kept;
}

static void items_locate(struct item *items, size_t count)
{
    size_t a_at = 0, b_at = 0;
    for (size_t i = 0; i < count; i++) {
        items[i].a_at = a_at;
        items[i].b_at = b_at;
        a_at += items[i].equal + items[i].del;
        b_at += items[i].equal + items[i].ins;
    }
}

static bool unit_is_word(const uint64_t *units, size_t count, size_t at)
{
    return at < count && is_word((uint8_t)(units[at] & 0xFF));
}

/* The equality of `change` lies inside one word (of at most WORD_MAX units), in old or new. */
static bool equality_in_word(const struct item *change, const uint64_t *a, size_t n,
                             const uint64_t *b, size_t m)
{
    if (change->equal > WORD_MAX)
        return false;
    const size_t a_end = change->a_at + change->equal, b_end = change->b_at + change->equal;
    for (size_t k = change->a_at; k < a_end; k++) {
        if (!unit_is_word(a, n, k))
            return false;
    }
    bool left = (change->a_at > 0 && unit_is_word(a, n, change->a_at - 1)) ||
                (change->b_at > 0 && unit_is_word(b, m, change->b_at - 1));
    bool right = unit_is_word(a, n, a_end) || unit_is_word(b, m, b_end);
    return left && right;
}

/*
 * Merges changes separated by a coincidental match: an equality no longer than
 * the larger side of the change on its left and of the change on its right
 * (after earlier merges) becomes part of one replace. Myers on code points
 * happily aligns the odd shared letter of two unrelated words; a person
 * replaced the word. This is the rule of diff-match-patch's cleanupSemantic
 * (N. Fraser), done with a stack so a merge can cascade leftwards in O(n).
 * Inside a word ("f|re|e" -> "|re|leas|e") the bar is lower: the equality
 * goes if it is shorter than both changes together. Items must be located.
 */
static size_t items_merge_coincidences(struct item *items, size_t count, const uint64_t *a,
                                       size_t n, const uint64_t *b, size_t m)
{
    size_t top = 0;
    for (size_t i = 0; i < count; i++) {
        struct item change = items[i];
        while (top > 0) {
            const struct item *left = &items[top - 1];
            const size_t gap = change.equal;
            const size_t left_size = max_size(left->del, left->ins);
            const size_t size = max_size(change.del, change.ins);
            bool coincidence = gap <= left_size && gap <= size;
            if (!coincidence && gap < left_size + size)
                coincidence = equality_in_word(&change, a, n, b, m);
            if (!coincidence)
                break;
            change.del += gap + left->del;
            change.ins += gap + left->ins;
            change.equal = left->equal;
            change.a_at = left->a_at;
            change.b_at = left->b_at;
            top--;
        }
        items[top++] = change;
    }
    return top;
}

static int segments_diff(struct diff_ctx *ctx, size_t a0, size_t a1, size_t b0, size_t b1,
                         bool chunks);

/*
 * Emits the edits for one changed range, old[a0, a1) against new[b0, b1).
 * Coarse ranges (a budget ran out above) and over-budget runs become one
 * replace after the common ends are stripped. A large range of lines is
 * first diffed as chunks (segments_diff); a large range of chunks is
 * replaced whole.
 */
static int hunk_refine(struct diff_ctx *ctx, size_t a0, size_t a1, size_t b0, size_t b1,
                       bool coarse, bool of_chunks)
{
    size_t prefix = prefix_cp(ctx->old_bytes + a0, a1 - a0, ctx->new_bytes + b0, b1 - b0);
    a0 += prefix;
    b0 += prefix;
    size_t suffix = suffix_cp(ctx->old_bytes + a0, a1 - a0, ctx->new_bytes + b0, b1 - b0);
    a1 -= suffix;
    b1 -= suffix;
    if (a0 == a1 && b0 == b1)
        return 0;
    size_t n_bytes = a1 - a0, m_bytes = b1 - b0, total = n_bytes + m_bytes;
    if (coarse || a0 == a1 || b0 == b1 || (of_chunks && total > REFINE_DIRECT_MAX))
        return edits_push(ctx, a0, n_bytes, b0, m_bytes);
    if (total > REFINE_DIRECT_MAX)
        return segments_diff(ctx, a0, a1, b0, b1, true);

    int rc = scratch_reserve((void **)&ctx->units, &ctx->units_cap, total, sizeof(uint64_t));
    if (rc == 0)
        rc = scratch_reserve((void **)&ctx->offsets, &ctx->offsets_cap, total + 2, sizeof(size_t));
    if (rc == 0)
        rc = scratch_reserve((void **)&ctx->unit_marks, &ctx->unit_marks_cap, total, 1);
    if (rc < 0)
        return rc;
    uint64_t *a_units = ctx->units;
    size_t *a_offsets = ctx->offsets;
    size_t n = units_decode(a_units, a_offsets, ctx->old_bytes + a0, n_bytes);
    uint64_t *b_units = a_units + n;
    size_t *b_offsets = a_offsets + n + 1;
    size_t m = units_decode(b_units, b_offsets, ctx->new_bytes + b0, m_bytes);
    uint8_t *a_marks = ctx->unit_marks, *b_marks = a_marks + n;
    memset(a_marks, 0, n + m);

    rc = myers_run(ctx, a_units, n, b_units, m, a_marks, b_marks);
    if (rc == -ERANGE)
        return edits_push(ctx, a0, n_bytes, b0, m_bytes);
    if (rc < 0)
        return rc;

    rc = scratch_reserve((void **)&ctx->items, &ctx->items_cap, min_size(n, m) + 1,
                         sizeof(struct item));
    if (rc < 0)
        return rc;
    size_t count = 0, i = 0, j = 0, equal = 0;
    while (i < n || j < m) {
        if (i < n && j < m && !a_marks[i] && !b_marks[j]) {
            i++;
            j++;
            equal++;
            continue;
        }
        size_t i0 = i, j0 = j;
        while (i < n && a_marks[i])
            i++;
        while (j < m && b_marks[j])
            j++;
        assert(i > i0 || j > j0);
        assert(count < min_size(n, m) + 1);
        ctx->items[count++] = (struct item){.equal = equal, .del = i - i0, .ins = j - j0};
        equal = 0;
    }
    count = items_shift(ctx->items, count, a_units, b_units);
    items_locate(ctx->items, count);
    count = items_merge_coincidences(ctx->items, count, a_units, n, b_units, m);
    i = 0;
    j = 0;
    for (size_t k = 0; k < count; k++) {
        const struct item *change = &ctx->items[k];
        i += change->equal;
        j += change->equal;
        rc = edits_push(ctx, a0 + a_offsets[i], a_offsets[i + change->del] - a_offsets[i],
                        b0 + b_offsets[j], b_offsets[j + change->ins] - b_offsets[j]);
        if (rc < 0)
            return rc;
        i += change->del;
        j += change->ins;
    }
    return 0;
}

/*
 * Walks the line (or chunk) marks and refines each maximal changed range; one
 * whose lines pair up (lines_refine_by_pairs) line by line, which is linear
 * and gives each line its own small edits.
 */
static int hunks_refine(struct diff_ctx *ctx, const struct lines *a, const struct lines *b,
                        bool of_chunks)
{
    size_t i = 0, j = 0;
    while (i < a->count || j < b->count) {
        if (i < a->count && j < b->count && !a->marks[i] && !b->marks[j]) {
            i++;
            j++;
            continue;
        }
        size_t i0 = i, j0 = j;
        bool coarse = false;
        while (i < a->count && a->marks[i])
            coarse |= (a->marks[i++] & MARK_COARSE) != 0;
        while (j < b->count && b->marks[j])
            coarse |= (b->marks[j++] & MARK_COARSE) != 0;
        assert(i > i0 || j > j0);
        int rc = 0;
        if (!of_chunks && !coarse && lines_refine_by_pairs(ctx, a, i0, i, b, j0, j)) {
            for (size_t k = 0; k < i - i0 && rc == 0; k++)
                rc = hunk_refine(ctx, a->starts[i0 + k], a->starts[i0 + k + 1], b->starts[j0 + k],
                                 b->starts[j0 + k + 1], false, false);
        } else {
            rc = hunk_refine(ctx, a->starts[i0], a->starts[i], b->starts[j0], b->starts[j], coarse,
                             of_chunks);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* --- natural boundaries --------------------------------------------------- */

static bool ends_blank_line(const uint8_t *text, size_t pos)
{
    if (pos == 0 || text[pos - 1] != '\n')
        return false;
    pos--;
    if (pos > 0 && text[pos - 1] == '\r')
        pos--;
    return pos > 0 && text[pos - 1] == '\n';
}

static bool starts_blank_line(const uint8_t *text, size_t len, size_t pos)
{
    for (int newlines = 0; newlines < 2; newlines++) {
        if (pos < len && text[pos] == '\r')
            pos++;
        if (pos >= len || text[pos] != '\n')
            return false;
        pos++;
    }
    return true;
}

/*
 * How natural a cut between text[pos - 1] and text[pos] is; the scale of
 * diff-match-patch's cleanupSemanticScore: text edge 6, blank line 5, line
 * break 4, end of sentence 3, space 2, punctuation 1, inside a word 0.
 */
static int boundary_score(const uint8_t *text, size_t len, size_t pos)
{
    if (pos == 0 || pos >= len)
        return 6;
    uint8_t before = text[pos - 1], after = text[pos];
    if (ends_blank_line(text, pos) || starts_blank_line(text, len, pos))
        return 5;
    if (before == '\n' || before == '\r' || after == '\n' || after == '\r')
        return 4;
    if (!is_word(before) && !is_space(before) && is_space(after))
        return 3;
    if (is_space(before) || is_space(after))
        return 2;
    if (!is_word(before) || !is_word(after))
        return 1;
    return 0;
}

/*
 * A pure insert or delete can often sit at several places with the same
 * result ("a\n|b\n" vs "a|\nb\n"). Among them, keep the one whose two cuts
 * score best (rightmost on ties, as diff-match-patch does), moving by whole
 * code points, never closer than one unit to a neighbouring edit, and at most
 * SLIDE_MAX bytes each way.
 */
static void edit_slide(const struct diff_ctx *ctx, struct crdt_edit *edit, size_t lo, size_t hi)
{
    const uint8_t *old_bytes = ctx->old_bytes, *new_bytes = ctx->new_bytes;
    const bool insert = edit->old_len == 0;
    const size_t len = insert ? edit->new_len : edit->old_len;
    const uint8_t *text = insert ? new_bytes : old_bytes;
    const size_t text_len = insert ? ctx->new_len : ctx->old_len;
    size_t pos = edit->old_pos, new_pos = edit->new_pos;

    /* Left: the moved text's last unit must equal the unit before it. */
    for (size_t moved = 0; moved < SLIDE_MAX && pos > lo;) {
        size_t unit = unit_len_before(old_bytes, pos);
        size_t tail = (insert ? new_pos : pos) + len - unit;
        if (unit > len || pos - unit < lo || memcmp(old_bytes + pos - unit, text + tail, unit) != 0)
            break;
        pos -= unit;
        new_pos -= unit;
        moved += unit;
    }
    size_t best_pos = pos, best_new_pos = new_pos;
    size_t start = insert ? new_pos : pos;
    int best_score =
        boundary_score(text, text_len, start) + boundary_score(text, text_len, start + len);
    /* Right: the moved text's first unit must equal the unit after it. */
    for (size_t moved = 0; moved < 2 * SLIDE_MAX;) {
        size_t from = insert ? new_pos : pos;
        size_t unit = unit_len(text + from, text_len - from);
        size_t end_old = pos + (insert ? 0 : len);
        if (unit > len || end_old + unit > hi ||
            memcmp(text + from, old_bytes + end_old, unit) != 0)
            break;
        pos += unit;
        new_pos += unit;
        moved += unit;
        start = insert ? new_pos : pos;
        int score =
            boundary_score(text, text_len, start) + boundary_score(text, text_len, start + len);
        if (score >= best_score) {
            best_score = score;
            best_pos = pos;
            best_new_pos = new_pos;
        }
    }
    edit->old_pos = best_pos;
    edit->new_pos = best_new_pos;
}

/*
 * A replace that cuts into a word and leaves only a sliver of it unchanged
 * ("jum|ps" -> "lea|ps", "hel|lo worl|d" -> "hel|p wante|d") reads as the word
 * retyped: the edit takes the sliver when it is shorter, in code points, than
 * the edit on either side. Accent fixes and swapped letters keep their
 * minimal form ("caf|é|" -> "caf|e|": the sliver is longer). lo and hi bound
 * the unchanged bytes the edit may take (the neighbouring edits' ends).
 */
static void edit_widen_to_words(const struct diff_ctx *ctx, struct crdt_edit *edit, size_t lo,
                                size_t hi)
{
    const uint8_t *old_bytes = ctx->old_bytes, *new_bytes = ctx->new_bytes;
    size_t edit_cps =
        min_size(crdt_diff_count_code_points(old_bytes + edit->old_pos, edit->old_len),
                 crdt_diff_count_code_points(new_bytes + edit->new_pos, edit->new_len));
    size_t start = edit->old_pos, end = edit->old_pos + edit->old_len;
    bool starts_in_word = is_word(old_bytes[start]) || is_word(new_bytes[edit->new_pos]);
    bool ends_in_word =
        is_word(old_bytes[end - 1]) || is_word(new_bytes[edit->new_pos + edit->new_len - 1]);

    size_t left = 0;
    while (left < SLIDE_MAX && start - left > lo && is_word(old_bytes[start - left - 1]))
        left++;
    bool left_whole = start - left == lo || !is_word(old_bytes[start - left - 1]);
    if (!starts_in_word || !left_whole ||
        crdt_diff_count_code_points(old_bytes + start - left, left) >= edit_cps)
        left = 0;

    size_t right = 0;
    while (right < SLIDE_MAX && end + right < hi && is_word(old_bytes[end + right]))
        right++;
    bool right_whole = end + right == hi || !is_word(old_bytes[end + right]);
    if (!ends_in_word || !right_whole ||
        crdt_diff_count_code_points(old_bytes + end, right) >= edit_cps)
        right = 0;

    edit->old_pos -= left;
    edit->new_pos -= left;
    edit->old_len += left + right;
    edit->new_len += left + right;
}

/*
 * The shift of items_shift on the whole edit list, in bytes: it also catches
 * ties between changed line ranges, which were refined one by one.
 */
static void edits_shift(struct diff_ctx *ctx)
{
    const uint8_t *old_bytes = ctx->old_bytes;
    struct crdt_edit *edits = ctx->edits;
    size_t kept = 0;
    for (size_t i = 0; i < ctx->edit_count; i++) {
        struct crdt_edit edit = edits[i];
        const bool pure = edit.old_len == 0 || edit.new_len == 0;
        const size_t len = edit.old_len + edit.new_len;
        const uint8_t *moved =
            edit.old_len == 0 ? ctx->new_bytes + edit.new_pos : old_bytes + edit.old_pos;
        if (pure && kept > 0) {
            struct crdt_edit *prev = &edits[kept - 1];
            size_t gap = edit.old_pos - (prev->old_pos + prev->old_len);
            if (gap > 0 && gap <= len &&
                memcmp(moved + len - gap, old_bytes + edit.old_pos - gap, gap) == 0) {
                prev->old_len += edit.old_len;
                prev->new_len += edit.new_len;
                continue;
            }
        }
        if (pure && i + 1 < ctx->edit_count) {
            struct crdt_edit *next = &edits[i + 1];
            size_t gap = next->old_pos - (edit.old_pos + edit.old_len);
            if (gap > 0 && gap <= len &&
                memcmp(moved, old_bytes + edit.old_pos + edit.old_len, gap) == 0) {
                next->old_len += edit.old_len;
                next->new_len += edit.new_len;
                next->old_pos = edit.old_pos + gap;
                next->new_pos = edit.new_pos + gap;
                continue;
            }
        }
        edits[kept++] = edit;
    }
    ctx->edit_count = kept;
}

/* Puts each edit at its most natural place: replaces take word slivers, the rest slide. */
static void edits_settle(struct diff_ctx *ctx)
{
    for (size_t i = 0; i < ctx->edit_count; i++) {
        struct crdt_edit *edit = &ctx->edits[i];
        size_t prev_end = i > 0 ? edit[-1].old_pos + edit[-1].old_len : 0;
        size_t next_start = i + 1 < ctx->edit_count ? edit[1].old_pos : ctx->old_len;
        if (edit->old_len != 0 && edit->new_len != 0)
            edit_widen_to_words(ctx, edit, prev_end, next_start);
        else
            edit_slide(ctx, edit, i > 0 ? prev_end + 1 : 0,
                       i + 1 < ctx->edit_count ? next_start - 1 : ctx->old_len);
    }
}

/* Joins edits that touch (no unchanged byte between them) into one. */
static void edits_join(struct diff_ctx *ctx)
{
    size_t kept = 0;
    for (size_t i = 0; i < ctx->edit_count; i++) {
        struct crdt_edit edit = ctx->edits[i];
        if (kept > 0) {
            struct crdt_edit *last = &ctx->edits[kept - 1];
            if (last->old_pos + last->old_len == edit.old_pos) {
                last->old_len += edit.old_len;
                last->new_len += edit.new_len;
                continue;
            }
        }
        ctx->edits[kept++] = edit;
    }
    ctx->edit_count = kept;
}

/* --- public ----------------------------------------------------------------- */

void crdt_diff_options_init(struct crdt_diff_options *options)
{
    options->run_work = DEFAULT_RUN_WORK;
    options->run_work_per_unit = DEFAULT_RUN_WORK_PER_UNIT;
    options->total_work = DEFAULT_TOTAL_WORK;
    options->total_work_per_byte = DEFAULT_TOTAL_WORK_PER_BYTE;
}

/*
 * Diffs old[a0, a1) against new[b0, b1) as segments, lines or chunks, then
 * refines every changed range of segments.
 */
static int segments_diff(struct diff_ctx *ctx, size_t a0, size_t a1, size_t b0, size_t b1,
                         bool chunks)
{
    struct lines a = {0}, b = {0};
    int rc = lines_split(&a, ctx->old_bytes, a0, a1, chunks);
    if (rc == 0)
        rc = lines_split(&b, ctx->new_bytes, b0, b1, chunks);
    if (rc == 0)
        rc = lines_diff(ctx, &a, 0, a.count, &b, 0, b.count, 0);
    if (rc == 0) {
        lines_verify(ctx, &a, &b);
        rc = hunks_refine(ctx, &a, &b, chunks);
    }
    lines_free(&a);
    lines_free(&b);
    return rc;
}

int crdt_diff(struct crdt_edit **out, size_t *out_len, const uint8_t *old_bytes, size_t old_len,
              const uint8_t *new_bytes, size_t new_len, const struct crdt_diff_options *options)
{
    if (!out || !out_len || (!old_bytes && old_len) || (!new_bytes && new_len))
        return -EINVAL;
    *out = NULL;
    *out_len = 0;
    /* Empty inputs may come as NULL; pointer arithmetic on NULL is undefined even by 0. */
    static const uint8_t empty[1];
    if (!old_bytes)
        old_bytes = empty;
    if (!new_bytes)
        new_bytes = empty;
    if (old_len > DIFF_LEN_MAX || new_len > DIFF_LEN_MAX)
        return -EOVERFLOW;

    struct diff_ctx ctx = {
        .old_bytes = old_bytes,
        .old_len = old_len,
        .new_bytes = new_bytes,
        .new_len = new_len,
    };
    if (options)
        ctx.options = *options;
    else
        crdt_diff_options_init(&ctx.options);
    ctx.pool = sat_add(ctx.options.total_work,
                       sat_mul(ctx.options.total_work_per_byte, (uint64_t)old_len + new_len));

    size_t prefix = prefix_cp(old_bytes, old_len, new_bytes, new_len);
    size_t suffix =
        suffix_cp(old_bytes + prefix, old_len - prefix, new_bytes + prefix, new_len - prefix);
    size_t a0 = prefix, a1 = old_len - suffix, b0 = prefix, b1 = new_len - suffix;
    int rc = 0;
    if (a0 == a1 && b0 == b1)
        goto out;
    if (a0 == a1 || b0 == b1) {
        rc = edits_push(&ctx, a0, a1 - a0, b0, b1 - b0);
    } else {
        /*
         * Whole lines on both sides, so the line diff never compares a line's
         * tail with a whole line ("{" against "{\n"). Prefix and suffix are
         * the same bytes on both sides, so a line start inside either is a
         * line start on both; the bytes just before the suffix differ, so its
         * start moves to the first line start inside it unless already one on
         * both sides.
         */
        while (a0 > 0 && old_bytes[a0 - 1] != '\n')
            a0--;
        b0 = a0;
        if ((a1 > 0 && old_bytes[a1 - 1] != '\n') || (b1 > 0 && new_bytes[b1 - 1] != '\n')) {
            const uint8_t *newline = memchr(old_bytes + a1, '\n', old_len - a1);
            size_t tail = newline ? old_len - (size_t)(newline - old_bytes) - 1 : 0;
            a1 = old_len - tail;
            b1 = new_len - tail;
        }
        rc = segments_diff(&ctx, a0, a1, b0, b1, false);
    }
    if (rc < 0)
        goto out;
    edits_shift(&ctx);
    edits_settle(&ctx);
    edits_join(&ctx);
    assert(crdt_diff_validate(ctx.edits, ctx.edit_count, old_len, new_len) == 0);
    *out = ctx.edits;
    *out_len = ctx.edit_count;
    ctx.edits = NULL;
out:
    free(ctx.edits);
    free(ctx.items);
    free(ctx.unit_marks);
    free(ctx.offsets);
    free(ctx.units);
    free(ctx.diagonals);
    return rc;
}

int crdt_diff_validate(const struct crdt_edit *edits, size_t count, size_t old_len, size_t new_len)
{
    if (count > 0 && !edits)
        return -EINVAL;
    size_t old_at = 0, new_at = 0; /* ends of the previous edit */
    for (size_t i = 0; i < count; i++) {
        const struct crdt_edit *edit = &edits[i];
        if (edit->old_len == 0 && edit->new_len == 0)
            return -EINVAL;
        if (edit->old_pos < old_at || edit->new_pos < new_at)
            return -EINVAL;
        if (edit->old_pos - old_at != edit->new_pos - new_at)
            return -EINVAL;
        if (edit->old_pos > old_len || edit->old_len > old_len - edit->old_pos)
            return -EINVAL;
        if (edit->new_pos > new_len || edit->new_len > new_len - edit->new_pos)
            return -EINVAL;
        old_at = edit->old_pos + edit->old_len;
        new_at = edit->new_pos + edit->new_len;
    }
    if (old_len - old_at != new_len - new_at)
        return -EINVAL;
    return 0;
}

int crdt_diff_apply(uint8_t **out, size_t *out_len, const uint8_t *old_bytes, size_t old_len,
                    const uint8_t *new_bytes, size_t new_len, const struct crdt_edit *edits,
                    size_t count)
{
    if (!out || !out_len || (!old_bytes && old_len) || (!new_bytes && new_len))
        return -EINVAL;
    int rc = crdt_diff_validate(edits, count, old_len, new_len);
    if (rc < 0)
        return rc;
    /* Validation makes every unchanged stretch equally long, so the result is new_len bytes. */
    uint8_t *result = malloc(max_size(new_len, 1));
    if (!result)
        return -ENOMEM;
    size_t old_at = 0, out_at = 0;
    for (size_t i = 0; i < count; i++) {
        size_t keep = edits[i].old_pos - old_at;
        if (keep > 0)
            memcpy(result + out_at, old_bytes + old_at, keep);
        out_at += keep;
        if (edits[i].new_len > 0)
            memcpy(result + out_at, new_bytes + edits[i].new_pos, edits[i].new_len);
        out_at += edits[i].new_len;
        old_at = edits[i].old_pos + edits[i].old_len;
    }
    if (old_len > old_at)
        memcpy(result + out_at, old_bytes + old_at, old_len - old_at);
    out_at += old_len - old_at;
    assert(out_at == new_len);
    *out = result;
    *out_len = out_at;
    return 0;
}

size_t crdt_diff_count_code_points(const uint8_t *bytes, size_t len)
{
    size_t count = 0;
    for (size_t i = 0; i < len; i++)
        count += !is_continuation(bytes[i]);
    return count;
}
