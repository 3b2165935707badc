/* crdt/codec: see codec.h. */
#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void crdt_buf_free(struct crdt_buf *buf)
{
    free(buf->data);
    memset(buf, 0, sizeof(*buf));
}

int crdt_buf_reserve(struct crdt_buf *buf, size_t extra)
{
    if (buf->failed)
        return -ENOMEM;
    if (extra <= buf->cap - buf->len)
        return 0;
    if (extra > SIZE_MAX / 2 - buf->len)
        goto fail;
    size_t want = buf->len + extra;
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < want)
        cap *= 2;
    uint8_t *grown = realloc(buf->data, cap);
    if (!grown)
        goto fail;
    buf->data = grown;
    buf->cap = cap;
    return 0;
fail:
    buf->failed = 1;
    return -ENOMEM;
}

void crdt_buf_put(struct crdt_buf *buf, const void *bytes, size_t len)
{
    if (len == 0 || crdt_buf_reserve(buf, len) != 0)
        return;
    memcpy(buf->data + buf->len, bytes, len);
    buf->len += len;
}

void crdt_buf_put_u8(struct crdt_buf *buf, uint8_t value)
{
    crdt_buf_put(buf, &value, 1);
}

void crdt_buf_put_varint(struct crdt_buf *buf, uint64_t value)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t byte = (uint8_t)(value & 0x7f);
        value >>= 7;
        tmp[n++] = (uint8_t)(byte | (value ? 0x80 : 0));
    } while (value);
    crdt_buf_put(buf, tmp, n);
}

void crdt_buf_put_svarint(struct crdt_buf *buf, int64_t value)
{
    uint64_t zigzag = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    crdt_buf_put_varint(buf, zigzag);
}

void crdt_buf_put_u64le(struct crdt_buf *buf, uint64_t value)
{
    uint8_t tmp[8];
    for (int i = 0; i < 8; i++)
        tmp[i] = (uint8_t)(value >> (8 * i));
    crdt_buf_put(buf, tmp, 8);
}

void crdt_buf_put_bytes(struct crdt_buf *buf, const void *bytes, size_t len)
{
    crdt_buf_put_varint(buf, len);
    crdt_buf_put(buf, bytes, len);
}

int crdt_buf_status(const struct crdt_buf *buf)
{
    return buf->failed ? -ENOMEM : 0;
}

void crdt_reader_init(struct crdt_reader *reader, const void *data, size_t len)
{
    reader->pos = data;
    reader->end = reader->pos + len;
}

size_t crdt_reader_left(const struct crdt_reader *reader)
{
    return (size_t)(reader->end - reader->pos);
}

int crdt_reader_u8(struct crdt_reader *reader, uint8_t *out)
{
    if (reader->pos >= reader->end)
        return -EBADMSG;
    *out = *reader->pos++;
    return 0;
}

int crdt_reader_varint(struct crdt_reader *reader, uint64_t *out)
{
    uint64_t value = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (reader->pos >= reader->end)
            return -EBADMSG;
        uint8_t byte = *reader->pos++;
        uint64_t bits = byte & 0x7f;
        /* The tenth byte may carry only the 64th bit. */
        if (shift == 63 && bits > 1)
            return -EBADMSG;
        value |= bits << shift;
        if (!(byte & 0x80)) {
            /* Reject overlong forms (a trailing zero byte) so each value has one encoding. */
            if (byte == 0 && shift != 0)
                return -EBADMSG;
            *out = value;
            return 0;
        }
    }
    return -EBADMSG;
}

int crdt_reader_varint_max(struct crdt_reader *reader, uint64_t max, uint64_t *out)
{
    uint64_t value;
    int rc = crdt_reader_varint(reader, &value);
    if (rc)
        return rc;
    if (value > max)
        return -EBADMSG;
    *out = value;
    return 0;
}

int crdt_reader_svarint(struct crdt_reader *reader, int64_t *out)
{
    uint64_t zigzag;
    int rc = crdt_reader_varint(reader, &zigzag);
    if (rc)
        return rc;
    *out = (int64_t)(zigzag >> 1) ^ -(int64_t)(zigzag & 1);
    return 0;
}

int crdt_reader_u64le(struct crdt_reader *reader, uint64_t *out)
{
    if (crdt_reader_left(reader) < 8)
        return -EBADMSG;
    uint64_t value = 0;
    for (int i = 0; i < 8; i++)
        value |= (uint64_t)reader->pos[i] << (8 * i);
    reader->pos += 8;
    *out = value;
    return 0;
}

int crdt_reader_raw(struct crdt_reader *reader, size_t len, const uint8_t **out)
{
    if (crdt_reader_left(reader) < len)
        return -EBADMSG;
    *out = reader->pos;
    reader->pos += len;
    return 0;
}

int crdt_reader_bytes(struct crdt_reader *reader, size_t max_len, const uint8_t **out,
                      size_t *out_len)
{
    uint64_t len;
    int rc = crdt_reader_varint_max(reader, max_len, &len);
    if (rc)
        return rc;
    rc = crdt_reader_raw(reader, (size_t)len, out);
    if (rc)
        return rc;
    *out_len = (size_t)len;
    return 0;
}
