/*
 * Unit tests for meta/chunk: FastCDC boundaries (bounds, streaming equals
 * one-shot, frozen golden boundaries, locality of a 1-byte edit) and the
 * chunk-list format (round trip, frozen bytes, malformed input).
 */
#include "meta/chunk.h"
#include "test.h"

#include <errno.h>
#include <stdlib.h>

static const uint8_t test_key[META_KEY_LEN] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                               12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                               23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static uint8_t *random_bytes(size_t len, uint64_t seed)
{
    uint8_t *data = malloc(len);
    uint64_t state = seed;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t word = test_rand(&state);
        for (size_t j = 0; j < 8 && i + j < len; j++)
            data[i + j] = (uint8_t)(word >> (8 * j));
    }
    return data;
}

struct collected {
    struct meta_chunk_list list;
    uint64_t offset;
    int bad_length;
};

static int collect(void *ctx, const uint8_t id[META_HASH_LEN], const uint8_t *data, size_t len)
{
    struct collected *out = ctx;
    (void)data;
    if (len == 0 || len > META_CHUNK_MAX)
        out->bad_length++;
    out->offset += len;
    return meta_chunk_list_add(&out->list, id, (uint32_t)len);
}

/* Chunks data feeding it in pieces of `piece` bytes (0: all at once). */
static void chunk_all(struct collected *out, struct meta_chunker *chunker, const uint8_t *data,
                      size_t len, size_t piece)
{
    memset(out, 0, sizeof(*out));
    if (piece == 0)
        piece = len;
    for (size_t at = 0; at < len; at += piece) {
        size_t n = len - at < piece ? len - at : piece;
        CHECK_INT(0, meta_chunker_feed(chunker, data + at, n, collect, out));
    }
    CHECK_INT(0, meta_chunker_finish(chunker, collect, out));
}

static void test_bounds_and_streaming(void)
{
    size_t len = 4u << 20;
    uint8_t *data = random_bytes(len, 42);
    struct meta_chunker *chunker = NULL;
    CHECK_INT(0, meta_chunker_new(&chunker, test_key));
    struct collected whole, pieces, odd;
    chunk_all(&whole, chunker, data, len, 0);
    chunk_all(&pieces, chunker, data, len, 4096);
    chunk_all(&odd, chunker, data, len, 777);
    CHECK_INT(0, whole.bad_length);
    CHECK(whole.list.total == len);
    for (size_t i = 0; i + 1 < whole.list.len; i++)
        CHECK(whole.list.refs[i].len > META_CHUNK_MIN);
    /* Average near 8 KiB on random data (normalized chunking keeps it close). */
    size_t average = len / whole.list.len;
    if (average < 6000 || average > 14000)
        fprintf(stderr, "average chunk %zu bytes\n", average);
    CHECK(average >= 6000 && average <= 14000);
    CHECK_INT(whole.list.len, pieces.list.len);
    CHECK_INT(whole.list.len, odd.list.len);
    CHECK(memcmp(whole.list.refs, pieces.list.refs, whole.list.len * sizeof(*whole.list.refs)) ==
          0);
    CHECK(memcmp(whole.list.refs, odd.list.refs, whole.list.len * sizeof(*whole.list.refs)) == 0);
    meta_chunk_list_free(&whole.list);
    meta_chunk_list_free(&pieces.list);
    meta_chunk_list_free(&odd.list);
    meta_chunker_free(chunker);
    free(data);
}

static void test_max_cut_on_flat_content(void)
{
    /* Flat content gives a constant hash that may never match: cuts fall at MAX. */
    size_t len = 5 * META_CHUNK_MAX + 100;
    uint8_t *data = calloc(1, len);
    struct meta_chunker *chunker = NULL;
    CHECK_INT(0, meta_chunker_new(&chunker, test_key));
    struct collected out;
    chunk_all(&out, chunker, data, len, 1000);
    CHECK(out.list.total == len);
    for (size_t i = 0; i < out.list.len; i++)
        CHECK(out.list.refs[i].len <= META_CHUNK_MAX);
    /* Identical chunks have identical ids: dedup. */
    if (out.list.len >= 3)
        CHECK(memcmp(out.list.refs[0].id, out.list.refs[1].id, META_HASH_LEN) == 0);
    meta_chunk_list_free(&out.list);
    meta_chunker_free(chunker);
    free(data);
}

/* The boundaries are part of the format: these must never change. */
/* Chunk lengths of 256 KiB of test_rand(seed 7) bytes, and the first chunk's id. */
#define GOLDEN_LENGTHS                                                                             \
    {                                                                                              \
        8348, 9550, 8196, 8989, 12109, 6902, 9393, 7638, 11314, 9113, 8582, 8386, 9747, 9397,      \
            2847, 8768, 8304, 10175, 8697, 8634, 10300, 9282, 8961, 3134, 5738, 11403, 11067,      \
            9887, 8737, 8546                                                                       \
    }
#define GOLDEN_FIRST_ID                                                                            \
    {                                                                                              \
        0x43, 0x97, 0x8a, 0xbc, 0x09, 0x2f, 0xb6, 0x06, 0x63, 0xfe, 0xea, 0xb3, 0x8d, 0x9b, 0xb2,  \
            0x04, 0x7c, 0xf7, 0xcf, 0xfa, 0x50, 0xe0, 0x22, 0x4f, 0xa9, 0x8f, 0xef, 0xad, 0x9c,    \
            0xaf, 0x52, 0xd4                                                                       \
    }

static void test_golden_boundaries(void)
{
    static const uint32_t expected[] = GOLDEN_LENGTHS;
    size_t len = 256u << 10;
    uint8_t *data = random_bytes(len, 7);
    struct meta_chunker *chunker = NULL;
    CHECK_INT(0, meta_chunker_new(&chunker, test_key));
    struct collected out;
    chunk_all(&out, chunker, data, len, 0);
    size_t n = sizeof(expected) / sizeof(expected[0]);
    CHECK_INT(n, out.list.len);
    for (size_t i = 0; i < n && i < out.list.len; i++)
        CHECK_INT(expected[i], out.list.refs[i].len);
    /* Run with WEFT_PRINT_GOLDEN=1 to print the values (only when the format changes). */
    if (getenv("WEFT_PRINT_GOLDEN")) {
        printf("#define GOLDEN_LENGTHS {");
        for (size_t i = 0; i < out.list.len; i++)
            printf("%s%u", i ? ", " : "", out.list.refs[i].len);
        printf("}\nfirst id:");
        for (size_t i = 0; i < META_HASH_LEN; i++)
            printf(" 0x%02x,", out.list.refs[0].id[i]);
        printf("\n");
    }
    static const uint8_t first_id[META_HASH_LEN] = GOLDEN_FIRST_ID;
    CHECK(out.list.len > 0 && memcmp(out.list.refs[0].id, first_id, META_HASH_LEN) == 0);
    CHECK_INT(expected[0], meta_chunk_boundary(data, len));
    meta_chunk_list_free(&out.list);
    meta_chunker_free(chunker);
    free(data);
}

/* Counts the chunks of b whose id does not occur in a. */
static size_t new_chunks(const struct meta_chunk_list *a, const struct meta_chunk_list *b)
{
    size_t fresh = 0, j = 0;
    /* Both lists are in file order and share all but a few chunks: a merge walk suffices. */
    for (size_t i = 0; i < b->len; i++) {
        size_t k = j;
        while (k < a->len && memcmp(a->refs[k].id, b->refs[i].id, META_HASH_LEN) != 0 && k < j + 64)
            k++;
        if (k < a->len && memcmp(a->refs[k].id, b->refs[i].id, META_HASH_LEN) == 0)
            j = k + 1;
        else
            fresh++;
    }
    return fresh;
}

static void test_one_byte_edit_is_local(void)
{
    size_t len = 32u << 20;
    uint8_t *data = random_bytes(len, 99);
    struct meta_chunker *chunker = NULL;
    CHECK_INT(0, meta_chunker_new(&chunker, test_key));
    struct collected before;
    chunk_all(&before, chunker, data, len, 1u << 20);
    uint64_t state = 1234;
    size_t worst = 0;
    for (int round = 0; round < 4; round++) {
        size_t at = (size_t)test_rand_below(&state, len);
        uint8_t saved = data[at];
        data[at] ^= 0x5a;
        struct collected after;
        chunk_all(&after, chunker, data, len, 1u << 20);
        size_t changed = new_chunks(&before.list, &after.list);
        if (changed > worst)
            worst = changed;
        if (changed > 2)
            fprintf(stderr, "edit at %zu changed %zu chunks\n", at, changed);
        CHECK(changed >= 1 && changed <= 2);
        data[at] = saved;
        meta_chunk_list_free(&after.list);
    }
    /* An insertion shifts everything after it; still only local chunks change. */
    uint8_t *inserted = malloc(len + 1);
    memcpy(inserted, data, len / 2);
    inserted[len / 2] = 0x42;
    memcpy(inserted + len / 2 + 1, data + len / 2, len - len / 2);
    struct collected after;
    chunk_all(&after, chunker, inserted, len + 1, 1u << 20);
    CHECK(new_chunks(&before.list, &after.list) <= 2);
    meta_chunk_list_free(&after.list);
    free(inserted);
    meta_chunk_list_free(&before.list);
    meta_chunker_free(chunker);
    free(data);
}

static void test_list_round_trip(void)
{
    struct meta_chunk_list list = {0};
    uint8_t id[META_HASH_LEN];
    for (uint32_t i = 0; i < 5; i++) {
        memset(id, (int)i, sizeof(id));
        CHECK_INT(0, meta_chunk_list_add(&list, id, 1000 * (i + 1)));
    }
    CHECK_INT(-EINVAL, meta_chunk_list_add(&list, id, 0));
    CHECK_INT(-EINVAL, meta_chunk_list_add(&list, id, META_CHUNK_MAX + 1));
    struct crdt_buf buf = {0};
    meta_chunk_list_encode(&buf, &list);
    CHECK_INT(0, crdt_buf_status(&buf));
    /* version 1, count 5, then (varint 1000 = e8 07, 32 x 00) ... */
    CHECK_INT(2 + 5 * (2 + META_HASH_LEN), buf.len);
    CHECK_INT(1, buf.data[0]);
    CHECK_INT(5, buf.data[1]);
    CHECK_INT(0xe8, buf.data[2]);
    CHECK_INT(0x07, buf.data[3]);
    struct meta_chunk_list back;
    CHECK_INT(0, meta_chunk_list_decode(&back, buf.data, buf.len));
    CHECK_INT(list.len, back.len);
    CHECK(list.total == back.total);
    CHECK(memcmp(list.refs, back.refs, list.len * sizeof(*list.refs)) == 0);
    meta_chunk_list_free(&back);

    /* Malformed: truncated, trailing byte, bad version, zero length, lying count. */
    CHECK_INT(-EBADMSG, meta_chunk_list_decode(&back, buf.data, buf.len - 1));
    uint8_t *longer = malloc(buf.len + 1);
    memcpy(longer, buf.data, buf.len);
    longer[buf.len] = 0;
    CHECK_INT(-EBADMSG, meta_chunk_list_decode(&back, longer, buf.len + 1));
    longer[0] = 2;
    CHECK_INT(-EBADMSG, meta_chunk_list_decode(&back, longer, buf.len));
    longer[0] = 1;
    longer[2] = 0;
    longer[3] = 0;
    CHECK_INT(-EBADMSG, meta_chunk_list_decode(&back, longer, buf.len));
    const uint8_t lying[] = {1, 0xff, 0xff, 0xff, 0x0f};
    CHECK_INT(-EBADMSG, meta_chunk_list_decode(&back, lying, sizeof(lying)));
    const uint8_t empty[] = {1, 0};
    CHECK_INT(0, meta_chunk_list_decode(&back, empty, sizeof(empty)));
    CHECK_INT(0, back.len);
    CHECK(back.total == 0);
    meta_chunk_list_free(&back);
    CHECK_INT(-EBADMSG, meta_chunk_list_decode(&back, "", 0));
    free(longer);
    crdt_buf_free(&buf);
    meta_chunk_list_free(&list);
}

int main(void)
{
    CHECK_INT(0, meta_crypto_init());
    test_bounds_and_streaming();
    test_max_cut_on_flat_content();
    test_golden_boundaries();
    test_one_byte_edit_is_local();
    test_list_round_trip();
    return test_finish("chunk");
}
