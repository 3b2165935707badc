/* meta/member: membership op bodies; see member.h for the format. */
#include "meta/member.h"

#include <errno.h>
#include <string.h>

#define MEMBER_FORMAT  1
#define MEMBER_REVOKED 0x01

void meta_member_body_encode(struct crdt_buf *buf, const struct meta_member_body *body)
{
    crdt_buf_put_u8(buf, MEMBER_FORMAT);
    crdt_buf_put(buf, body->public_key, META_PUBLIC_KEY_LEN);
    crdt_buf_put_u8(buf, body->revoked ? MEMBER_REVOKED : 0);
    crdt_buf_put_bytes(buf, body->name, strlen(body->name));
}

int meta_member_body_decode(struct meta_member_body *out, const void *body, size_t len)
{
    memset(out, 0, sizeof(*out));
    struct crdt_reader reader;
    crdt_reader_init(&reader, body, len);
    uint8_t format, flags;
    const uint8_t *key, *name;
    size_t name_len;
    if (crdt_reader_u8(&reader, &format) || format != MEMBER_FORMAT ||
        crdt_reader_raw(&reader, META_PUBLIC_KEY_LEN, &key) || crdt_reader_u8(&reader, &flags) ||
        (flags & ~MEMBER_REVOKED) ||
        crdt_reader_bytes(&reader, META_NAME_MAX, &name, &name_len) || name_len == 0 ||
        memchr(name, '\0', name_len) || crdt_reader_left(&reader) != 0) {
        memset(out, 0, sizeof(*out));
        return -EBADMSG;
    }
    memcpy(out->public_key, key, META_PUBLIC_KEY_LEN);
    out->revoked = flags & MEMBER_REVOKED;
    memcpy(out->name, name, name_len);
    return 0;
}
