/* meta/member: membership op bodies; see member.h for the format. */
#include "meta/member.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MEMBER_FORMAT  1
#define MEMBER_EPOCH   2 /* a removal that starts a key epoch */
#define MEMBER_REVOKED 0x01

void meta_member_body_encode(struct crdt_buf *buf, const struct meta_member_body *body)
{
    crdt_buf_put_u8(buf, body->epoch ? MEMBER_EPOCH : MEMBER_FORMAT);
    crdt_buf_put(buf, body->public_key, META_PUBLIC_KEY_LEN);
    crdt_buf_put_u8(buf, body->revoked ? MEMBER_REVOKED : 0);
    crdt_buf_put_bytes(buf, body->name, strlen(body->name));
    if (!body->epoch)
        return;
    crdt_buf_put_varint(buf, body->epoch);
    crdt_buf_put_varint(buf, body->key_count);
    for (size_t i = 0; i < body->key_count; i++) {
        uint8_t replica[8];
        for (int b = 0; b < 8; b++)
            replica[b] = (uint8_t)(body->keys[i].replica >> (8 * b));
        crdt_buf_put(buf, replica, sizeof(replica));
        crdt_buf_put(buf, body->keys[i].sealed, META_SEALED_KEY_LEN);
    }
}

void meta_member_body_clear(struct meta_member_body *body)
{
    free((void *)body->keys);
    body->keys = NULL;
    body->key_count = 0;
}

static int decode_keys(struct meta_member_body *out, struct crdt_reader *reader)
{
    uint64_t epoch, count;
    const size_t each = 8 + META_SEALED_KEY_LEN;
    if (crdt_reader_varint_max(reader, UINT32_MAX, &epoch) || epoch == 0 ||
        crdt_reader_varint_max(reader, crdt_reader_left(reader) / each, &count) || count == 0)
        return -EBADMSG;
    struct meta_sealed_key *keys = calloc((size_t)count, sizeof(*keys));
    if (!keys)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *raw;
        if (crdt_reader_raw(reader, each, &raw)) {
            free(keys);
            return -EBADMSG;
        }
        for (int b = 7; b >= 0; b--)
            keys[i].replica = keys[i].replica << 8 | raw[b];
        memcpy(keys[i].sealed, raw + 8, META_SEALED_KEY_LEN);
    }
    out->epoch = (uint32_t)epoch;
    out->keys = keys;
    out->key_count = (size_t)count;
    return 0;
}

int meta_member_body_decode(struct meta_member_body *out, const void *body, size_t len)
{
    memset(out, 0, sizeof(*out));
    struct crdt_reader reader;
    crdt_reader_init(&reader, body, len);
    uint8_t format, flags;
    const uint8_t *key, *name;
    size_t name_len;
    if (crdt_reader_u8(&reader, &format) || (format != MEMBER_FORMAT && format != MEMBER_EPOCH) ||
        crdt_reader_raw(&reader, META_PUBLIC_KEY_LEN, &key) || crdt_reader_u8(&reader, &flags) ||
        (flags & ~MEMBER_REVOKED) || crdt_reader_bytes(&reader, META_NAME_MAX, &name, &name_len) ||
        name_len == 0 || memchr(name, '\0', name_len)) {
        memset(out, 0, sizeof(*out));
        return -EBADMSG;
    }
    memcpy(out->public_key, key, META_PUBLIC_KEY_LEN);
    out->revoked = flags & MEMBER_REVOKED;
    memcpy(out->name, name, name_len);
    int rc = 0;
    if (format == MEMBER_EPOCH && !out->revoked)
        rc = -EBADMSG; /* a new epoch only comes with a removal */
    else if (format == MEMBER_EPOCH)
        rc = decode_keys(out, &reader);
    if (!rc && crdt_reader_left(&reader) != 0)
        rc = -EBADMSG;
    if (rc) {
        meta_member_body_clear(out);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}
