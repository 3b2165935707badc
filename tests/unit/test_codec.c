/* Unit tests for crdt/codec: varint round trips, canonical forms, bounds. */
#include "crdt/codec.h"
#include "test.h"

#include <errno.h>

static void test_varint_round_trip(void)
{
    const uint64_t values[] = {0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, UINT64_MAX};
    struct crdt_buf buf = {0};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        crdt_buf_put_varint(&buf, values[i]);
    CHECK_INT(0, crdt_buf_status(&buf));
    struct crdt_reader reader;
    crdt_reader_init(&reader, buf.data, buf.len);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint64_t got = 0;
        CHECK_INT(0, crdt_reader_varint(&reader, &got));
        CHECK(got == values[i]);
    }
    CHECK_INT(0, crdt_reader_left(&reader));
    crdt_buf_free(&buf);
}

static void test_svarint_round_trip(void)
{
    const int64_t values[] = {0, -1, 1, -64, 64, INT64_MIN, INT64_MAX};
    struct crdt_buf buf = {0};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        crdt_buf_put_svarint(&buf, values[i]);
    struct crdt_reader reader;
    crdt_reader_init(&reader, buf.data, buf.len);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        int64_t got = 0;
        CHECK_INT(0, crdt_reader_svarint(&reader, &got));
        CHECK(got == values[i]);
    }
    crdt_buf_free(&buf);
}

static void test_varint_rejects_malformed(void)
{
    uint64_t got;
    struct crdt_reader reader;
    const uint8_t truncated[] = {0x80, 0x80};
    crdt_reader_init(&reader, truncated, sizeof(truncated));
    CHECK_INT(-EBADMSG, crdt_reader_varint(&reader, &got));

    const uint8_t overlong[] = {0x81, 0x00};
    crdt_reader_init(&reader, overlong, sizeof(overlong));
    CHECK_INT(-EBADMSG, crdt_reader_varint(&reader, &got));

    const uint8_t too_big[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    crdt_reader_init(&reader, too_big, sizeof(too_big));
    CHECK_INT(-EBADMSG, crdt_reader_varint(&reader, &got));

    const uint8_t eleven[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x01};
    crdt_reader_init(&reader, eleven, sizeof(eleven));
    CHECK_INT(-EBADMSG, crdt_reader_varint(&reader, &got));
}

static void test_bytes_bounds(void)
{
    struct crdt_buf buf = {0};
    crdt_buf_put_bytes(&buf, "hello", 5);
    struct crdt_reader reader;
    const uint8_t *bytes;
    size_t len;
    crdt_reader_init(&reader, buf.data, buf.len);
    CHECK_INT(-EBADMSG, crdt_reader_bytes(&reader, 4, &bytes, &len));
    crdt_reader_init(&reader, buf.data, buf.len - 1);
    CHECK_INT(-EBADMSG, crdt_reader_bytes(&reader, 100, &bytes, &len));
    crdt_reader_init(&reader, buf.data, buf.len);
    CHECK_INT(0, crdt_reader_bytes(&reader, 100, &bytes, &len));
    CHECK_INT(5, len);
    CHECK(memcmp(bytes, "hello", 5) == 0);
    crdt_buf_free(&buf);
}

int main(void)
{
    test_varint_round_trip();
    test_svarint_round_trip();
    test_varint_rejects_malformed();
    test_bytes_bounds();
    return test_finish("codec");
}
