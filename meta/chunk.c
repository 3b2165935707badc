/*
 * meta/chunk: see chunk.h.
 *
 * FastCDC (Xia et al., "FastCDC: a Fast and Efficient Content-Defined
 * Chunking Approach for Data Deduplication", USENIX ATC 2016). A gear hash
 * fp = (fp << 1) + gear[byte] rolls over the content; bit k of fp depends on
 * the last k + 1 bytes only, so the masks below (whose highest bit is 49) see
 * a window of about 50 bytes. A chunk ends after the byte where fp & mask is
 * zero. Three of the paper's ideas are used:
 *
 *  - cut-point skipping: the first META_CHUNK_MIN bytes of a chunk are not
 *    hashed at all (they cannot end it), which is most of the speed-up;
 *  - normalized chunking, level 2: before META_CHUNK_AVG bytes the mask has
 *    15 one bits (cuts are 4x rarer than 1/8192), after it 11 (4x likelier),
 *    which narrows the size distribution around the average;
 *  - the paper's masks, whose one bits are spread out rather than packed at
 *    the bottom, so a cut depends on a wider window.
 *
 * A chunk's length is in (META_CHUNK_MIN, META_CHUNK_MAX], except the last
 * chunk of a file, which may be shorter.
 */
#include "chunk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MASK_S 0x0003590703530000ull /* 15 bits: used while length < AVG */
#define MASK_L 0x0000d90003530000ull /* 11 bits: used from AVG to MAX */

/* The gear table is drawn from splitmix64 with this seed ("weft"). Frozen. */
#define GEAR_SEED 0x77656674ull

struct meta_chunker {
    uint8_t key[META_KEY_LEN];
    uint64_t gear[256];
    uint64_t fp;    /* gear hash of the pending chunk's hashed part */
    size_t pending; /* bytes of the current chunk held in buf */
    uint8_t buf[META_CHUNK_MAX];
};

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void gear_init(uint64_t gear[256])
{
    uint64_t state = GEAR_SEED;
    for (size_t i = 0; i < 256; i++)
        gear[i] = splitmix64(&state);
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/*
 * Scans data[0..len), which continues a chunk already holding `pos` bytes
 * (pos < META_CHUNK_MAX) whose hash is *fp_io. Returns how many bytes of
 * data end the chunk (>= 1), or 0 when the chunk goes on past data; then
 * *fp_io is the hash to continue with.
 */
static size_t scan(const uint64_t *gear, uint64_t *fp_io, size_t pos, const uint8_t *data,
                   size_t len)
{
    uint64_t fp = *fp_io;
    size_t i = 0;
    if (pos < META_CHUNK_MIN) {
        size_t skip = META_CHUNK_MIN - pos;
        if (skip >= len)
            return 0; /* fp stays 0: nothing before MIN is hashed */
        i = skip;
    }
    if (pos + i < META_CHUNK_AVG) {
        size_t end = min_size(len, i + (META_CHUNK_AVG - (pos + i)));
        for (; i < end; i++) {
            fp = (fp << 1) + gear[data[i]];
            if (!(fp & MASK_S))
                return i + 1;
        }
    }
    size_t end = min_size(len, i + (META_CHUNK_MAX - (pos + i)));
    for (; i < end; i++) {
        fp = (fp << 1) + gear[data[i]];
        if (!(fp & MASK_L))
            return i + 1;
    }
    if (pos + i == META_CHUNK_MAX)
        return i;
    *fp_io = fp;
    return 0;
}

int meta_chunker_new(struct meta_chunker **out, const uint8_t *key)
{
    struct meta_chunker *chunker = malloc(sizeof(*chunker));
    if (!chunker)
        return -ENOMEM;
    memcpy(chunker->key, key, META_KEY_LEN);
    gear_init(chunker->gear);
    meta_chunker_reset(chunker);
    *out = chunker;
    return 0;
}

void meta_chunker_free(struct meta_chunker *chunker)
{
    if (!chunker)
        return;
    meta_crypto_wipe(chunker->key, sizeof(chunker->key));
    free(chunker);
}

void meta_chunker_reset(struct meta_chunker *chunker)
{
    chunker->fp = 0;
    chunker->pending = 0;
}

static int emit(struct meta_chunker *chunker, const uint8_t *data, size_t len, meta_chunk_fn fn,
                void *ctx)
{
    uint8_t id[META_HASH_LEN];
    int rc = meta_crypto_hash(id, sizeof(id), chunker->key, data, len);
    if (rc)
        return rc;
    return fn(ctx, id, data, len);
}

int meta_chunker_feed(struct meta_chunker *chunker, const void *data, size_t len, meta_chunk_fn fn,
                      void *ctx)
{
    const uint8_t *bytes = data;
    while (len > 0) {
        size_t cut = scan(chunker->gear, &chunker->fp, chunker->pending, bytes, len);
        if (!cut) {
            memcpy(chunker->buf + chunker->pending, bytes, len);
            chunker->pending += len;
            return 0;
        }
        int rc;
        if (chunker->pending == 0) {
            /* The whole chunk is in the caller's buffer: hash it in place. */
            rc = emit(chunker, bytes, cut, fn, ctx);
        } else {
            memcpy(chunker->buf + chunker->pending, bytes, cut);
            rc = emit(chunker, chunker->buf, chunker->pending + cut, fn, ctx);
        }
        meta_chunker_reset(chunker);
        if (rc)
            return rc;
        bytes += cut;
        len -= cut;
    }
    return 0;
}

int meta_chunker_finish(struct meta_chunker *chunker, meta_chunk_fn fn, void *ctx)
{
    int rc = 0;
    if (chunker->pending > 0)
        rc = emit(chunker, chunker->buf, chunker->pending, fn, ctx);
    meta_chunker_reset(chunker);
    return rc;
}

size_t meta_chunk_boundary(const void *data, size_t len)
{
    uint64_t gear[256];
    gear_init(gear);
    uint64_t fp = 0;
    size_t cut = scan(gear, &fp, 0, data, len);
    return cut ? cut : len;
}

void meta_chunk_list_free(struct meta_chunk_list *list)
{
    free(list->refs);
    memset(list, 0, sizeof(*list));
}

int meta_chunk_list_add(struct meta_chunk_list *list, const uint8_t id[META_HASH_LEN], uint32_t len)
{
    if (len == 0 || len > META_CHUNK_MAX)
        return -EINVAL;
    if (list->len == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        struct meta_chunk_ref *grown = realloc(list->refs, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        list->refs = grown;
        list->cap = cap;
    }
    memcpy(list->refs[list->len].id, id, META_HASH_LEN);
    list->refs[list->len].len = len;
    list->len++;
    list->total += len;
    return 0;
}

void meta_chunk_list_encode(struct crdt_buf *buf, const struct meta_chunk_list *list)
{
    crdt_buf_put_u8(buf, META_CHUNK_LIST_V1);
    crdt_buf_put_varint(buf, list->len);
    for (size_t i = 0; i < list->len; i++) {
        crdt_buf_put_varint(buf, list->refs[i].len);
        crdt_buf_put(buf, list->refs[i].id, META_HASH_LEN);
    }
}

int meta_chunk_list_decode(struct meta_chunk_list *out, const void *data, size_t len)
{
    struct meta_chunk_list list = {0};
    struct crdt_reader reader;
    crdt_reader_init(&reader, data, len);
    uint8_t version;
    uint64_t count;
    int rc = crdt_reader_u8(&reader, &version);
    if (rc)
        goto fail;
    if (version != META_CHUNK_LIST_V1) {
        rc = -EBADMSG;
        goto fail;
    }
    /* Each entry takes at least 1 + 32 bytes: a count beyond that is a lie. */
    rc = crdt_reader_varint_max(&reader, crdt_reader_left(&reader) / (1 + META_HASH_LEN), &count);
    if (rc)
        goto fail;
    if (count > 0) {
        list.refs = malloc((size_t)count * sizeof(*list.refs));
        if (!list.refs) {
            rc = -ENOMEM;
            goto fail;
        }
        list.cap = (size_t)count;
    }
    for (uint64_t i = 0; i < count; i++) {
        uint64_t chunk_len;
        const uint8_t *id;
        rc = crdt_reader_varint_max(&reader, META_CHUNK_MAX, &chunk_len);
        if (rc)
            goto fail;
        if (chunk_len == 0) {
            rc = -EBADMSG;
            goto fail;
        }
        rc = crdt_reader_raw(&reader, META_HASH_LEN, &id);
        if (rc)
            goto fail;
        rc = meta_chunk_list_add(&list, id, (uint32_t)chunk_len);
        if (rc)
            goto fail;
    }
    if (crdt_reader_left(&reader) != 0) {
        rc = -EBADMSG;
        goto fail;
    }
    *out = list;
    return 0;
fail:
    meta_chunk_list_free(&list);
    return rc;
}

bool meta_chunk_index_cut(const uint8_t id[META_HASH_LEN])
{
    /* Ids are keyed hashes: any of their bits is a fair coin. */
    return (id[META_HASH_LEN - 1] & (META_CHUNK_INDEX_FANOUT - 1)) == 0;
}
