/* sync/wire: see wire.h; the byte format is in README.md, "Wire". */
#include "wire.h"

#include "sync/channel.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SYNC_WIRE_MESSAGE_MAX <= SYNC_CHANNEL_MESSAGE_MAX,
               "every wire message fits one channel message");

/* A "host:port" a device listens on: 1..255 bytes of printable ASCII, no spaces. */
static bool addr_valid(const uint8_t *addr, size_t len)
{
    if (len == 0 || len > SYNC_WIRE_ADDR_MAX || !addr)
        return false;
    for (size_t i = 0; i < len; i++)
        if (addr[i] <= 0x20 || addr[i] >= 0x7f)
            return false;
    return true;
}

/* The smallest PEERS entry: replica (8), address length (1), one byte. */
#define PEER_MIN_LEN (8 + 1 + 1)

/* The smallest HEADS entry: author delta, seq, hash. */
#define HEAD_MIN_LEN (1 + 1 + SYNC_HASH_LEN)

const char *sync_msg_type_str(enum sync_msg_type type)
{
    switch (type) {
    case SYNC_MSG_HELLO:
        return "HELLO";
    case SYNC_MSG_OPS:
        return "OPS";
    case SYNC_MSG_WANT_CHUNKS:
        return "WANT_CHUNKS";
    case SYNC_MSG_CHUNK:
        return "CHUNK";
    case SYNC_MSG_HEADS:
        return "HEADS";
    case SYNC_MSG_ACK:
        return "ACK";
    case SYNC_MSG_ERROR:
        return "ERROR";
    case SYNC_MSG_MEMBER:
        return "MEMBER";
    case SYNC_MSG_PEERS:
        return "PEERS";
    }
    return "?";
}

/*
 * Text an ERROR may carry: well-formed UTF-8 (no overlong forms, no
 * surrogates) without control characters, so it can go to a log or a
 * terminal as it is.
 */
static bool text_valid(const uint8_t *text, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t byte = text[i];
        if (byte < 0x80) {
            if (byte < 0x20 || byte == 0x7f)
                return false;
            i++;
            continue;
        }
        size_t extra;
        uint32_t code_point;
        if (byte >= 0xc2 && byte <= 0xdf) {
            extra = 1;
            code_point = byte & 0x1fu;
        } else if (byte >= 0xe0 && byte <= 0xef) {
            extra = 2;
            code_point = byte & 0x0fu;
        } else if (byte >= 0xf0 && byte <= 0xf4) {
            extra = 3;
            code_point = byte & 0x07u;
        } else {
            return false;
        }
        if (len - i - 1 < extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((text[i + k] & 0xc0) != 0x80)
                return false;
            code_point = (code_point << 6) | (text[i + k] & 0x3fu);
        }
        if ((extra == 2 && code_point < 0x800) || (extra == 3 && code_point < 0x10000) ||
            code_point > 0x10ffff || (code_point >= 0xd800 && code_point <= 0xdfff))
            return false;
        /* C1 control characters. */
        if (code_point >= 0x80 && code_point < 0xa0)
            return false;
        i += 1 + extra;
    }
    return true;
}

/* A record an OPS or CHUNK message may carry: structurally sound and of the right kind. */
static int record_check(const uint8_t *record, size_t len, enum sync_record_kind kind)
{
    struct sync_record_header header;
    int rc = sync_record_peek(&header, record, len);
    if (rc)
        return rc;
    return header.kind == kind ? 0 : -EBADMSG;
}

static bool heads_valid(const struct sync_head *entries, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (entries[i].seq == 0 || (i > 0 && entries[i].author <= entries[i - 1].author))
            return false;
    }
    return true;
}

/* Version vectors must be sorted with no zero seqs, as crdt_vv_decode demands. */
static bool vv_valid(const struct crdt_vv *vv)
{
    for (size_t i = 0; i < vv->len; i++) {
        if (vv->entries[i].seq == 0 ||
            (i > 0 && vv->entries[i].replica <= vv->entries[i - 1].replica))
            return false;
    }
    return vv->len == 0 || vv->entries != NULL;
}

int sync_wire_encode(struct crdt_buf *out, const struct sync_msg *msg)
{
    size_t start = out->len;
    switch (msg->type) {
    case SYNC_MSG_HELLO:
        if (msg->hello.version == 0 || !vv_valid(&msg->hello.vv))
            return -EINVAL;
        crdt_buf_put_u8(out, SYNC_MSG_HELLO);
        crdt_buf_put(out, msg->hello.share_id, SYNC_SHARE_ID_LEN);
        crdt_buf_put_varint(out, msg->hello.version);
        crdt_vv_encode(out, &msg->hello.vv);
        break;
    case SYNC_MSG_OPS:
    case SYNC_MSG_CHUNK: {
        const uint8_t *record = msg->type == SYNC_MSG_OPS ? msg->ops.record : msg->chunk.record;
        size_t len = msg->type == SYNC_MSG_OPS ? msg->ops.len : msg->chunk.len;
        if (record_check(record, len,
                         msg->type == SYNC_MSG_OPS ? SYNC_RECORD_OPS : SYNC_RECORD_CHUNK) != 0)
            return -EINVAL;
        crdt_buf_put_u8(out, (uint8_t)msg->type);
        crdt_buf_put_bytes(out, record, len);
        break;
    }
    case SYNC_MSG_WANT_CHUNKS:
        if (msg->want.count == 0 || msg->want.count > SYNC_WIRE_WANT_MAX || !msg->want.ids)
            return -EINVAL;
        crdt_buf_put_u8(out, SYNC_MSG_WANT_CHUNKS);
        crdt_buf_put_varint(out, msg->want.count);
        crdt_buf_put(out, msg->want.ids, msg->want.count * SYNC_HASH_LEN);
        break;
    case SYNC_MSG_HEADS: {
        const struct sync_head *entries = msg->heads.entries;
        if ((msg->heads.count && !entries) || !heads_valid(entries, msg->heads.count))
            return -EINVAL;
        crdt_buf_put_u8(out, SYNC_MSG_HEADS);
        crdt_buf_put_varint(out, msg->heads.count);
        uint64_t previous = 0;
        for (size_t i = 0; i < msg->heads.count; i++) {
            crdt_buf_put_varint(out, entries[i].author - previous);
            crdt_buf_put_varint(out, entries[i].seq);
            crdt_buf_put(out, entries[i].hash, SYNC_HASH_LEN);
            previous = entries[i].author;
        }
        break;
    }
    case SYNC_MSG_ACK:
        if (!vv_valid(&msg->ack.records))
            return -EINVAL;
        crdt_buf_put_u8(out, SYNC_MSG_ACK);
        crdt_vv_encode(out, &msg->ack.records);
        break;
    case SYNC_MSG_ERROR:
        if (msg->error.code == 0 || msg->error.len > SYNC_WIRE_ERROR_TEXT_MAX ||
            (msg->error.len && !msg->error.text) ||
            !text_valid((const uint8_t *)msg->error.text, msg->error.len))
            return -EINVAL;
        crdt_buf_put_u8(out, SYNC_MSG_ERROR);
        crdt_buf_put_varint(out, msg->error.code);
        crdt_buf_put_bytes(out, msg->error.text, msg->error.len);
        break;
    case SYNC_MSG_MEMBER:
        if (msg->member.action != SYNC_MEMBER_ADD && msg->member.action != SYNC_MEMBER_REVOKE)
            return -EINVAL;
        crdt_buf_put_u8(out, SYNC_MSG_MEMBER);
        crdt_buf_put_u8(out, (uint8_t)msg->member.action);
        crdt_buf_put(out, msg->member.public_key, SYNC_PUBLIC_KEY_LEN);
        break;
    case SYNC_MSG_PEERS:
        if (msg->peers.count > SYNC_WIRE_PEERS_MAX || (msg->peers.count && !msg->peers.entries))
            return -EINVAL;
        for (size_t i = 0; i < msg->peers.count; i++)
            if (!addr_valid((const uint8_t *)msg->peers.entries[i].addr, msg->peers.entries[i].len))
                return -EINVAL;
        crdt_buf_put_u8(out, SYNC_MSG_PEERS);
        crdt_buf_put_varint(out, msg->peers.count);
        for (size_t i = 0; i < msg->peers.count; i++) {
            uint8_t replica[8];
            for (int b = 0; b < 8; b++)
                replica[b] = (uint8_t)(msg->peers.entries[i].replica >> (8 * b));
            crdt_buf_put(out, replica, sizeof(replica));
            crdt_buf_put_bytes(out, msg->peers.entries[i].addr, msg->peers.entries[i].len);
        }
        break;
    default:
        return -EINVAL;
    }
    int rc = crdt_buf_status(out);
    if (!rc && out->len - start > SYNC_WIRE_MESSAGE_MAX) {
        out->len = start; /* only a huge HEADS or vector gets here */
        rc = -EMSGSIZE;
    }
    return rc;
}

static int decode_heads(struct sync_msg *out, struct crdt_reader *reader)
{
    uint64_t count;
    if (crdt_reader_varint_max(reader, crdt_reader_left(reader) / HEAD_MIN_LEN, &count))
        return -EBADMSG;
    out->heads.count = (size_t)count;
    if (count == 0)
        return 0;
    struct sync_head *entries = calloc((size_t)count, sizeof(*entries));
    if (!entries)
        return -ENOMEM;
    out->owned_heads = entries;
    out->heads.entries = entries;
    uint64_t author = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t delta;
        const uint8_t *hash;
        if (crdt_reader_varint(reader, &delta) || (i > 0 && delta == 0) ||
            delta > UINT64_MAX - author)
            return -EBADMSG;
        author += delta;
        entries[i].author = author;
        if (crdt_reader_varint(reader, &entries[i].seq) || entries[i].seq == 0 ||
            crdt_reader_raw(reader, SYNC_HASH_LEN, &hash))
            return -EBADMSG;
        memcpy(entries[i].hash, hash, SYNC_HASH_LEN);
    }
    return 0;
}

static int decode_peers(struct sync_msg *out, struct crdt_reader *reader)
{
    uint64_t count;
    if (crdt_reader_varint_max(reader, crdt_reader_left(reader) / PEER_MIN_LEN, &count) ||
        count > SYNC_WIRE_PEERS_MAX)
        return -EBADMSG;
    out->peers.count = (size_t)count;
    if (count == 0)
        return 0;
    struct sync_peer_addr *entries = calloc((size_t)count, sizeof(*entries));
    if (!entries)
        return -ENOMEM;
    out->owned_peers = entries;
    out->peers.entries = entries;
    for (size_t i = 0; i < count; i++) {
        const uint8_t *raw, *addr;
        size_t len;
        if (crdt_reader_raw(reader, 8, &raw) ||
            crdt_reader_bytes(reader, SYNC_WIRE_ADDR_MAX, &addr, &len) || !addr_valid(addr, len))
            return -EBADMSG;
        for (int b = 7; b >= 0; b--)
            entries[i].replica = entries[i].replica << 8 | raw[b];
        entries[i].addr = (const char *)addr;
        entries[i].len = len;
    }
    return 0;
}

static int decode_body(struct sync_msg *out, struct crdt_reader *reader)
{
    const uint8_t *raw;
    uint64_t value;
    int rc;
    switch (out->type) {
    case SYNC_MSG_HELLO:
        if (crdt_reader_raw(reader, SYNC_SHARE_ID_LEN, &raw))
            return -EBADMSG;
        memcpy(out->hello.share_id, raw, SYNC_SHARE_ID_LEN);
        if (crdt_reader_varint_max(reader, UINT32_MAX, &value) || value == 0)
            return -EBADMSG;
        out->hello.version = (uint32_t)value;
        return crdt_vv_decode(reader, &out->hello.vv);
    case SYNC_MSG_OPS:
    case SYNC_MSG_CHUNK: {
        const uint8_t *record;
        size_t len;
        if (crdt_reader_bytes(reader, SYNC_RECORD_MAX, &record, &len))
            return -EBADMSG;
        rc = record_check(record, len,
                          out->type == SYNC_MSG_OPS ? SYNC_RECORD_OPS : SYNC_RECORD_CHUNK);
        if (rc)
            return rc;
        if (out->type == SYNC_MSG_OPS) {
            out->ops.record = record;
            out->ops.len = len;
        } else {
            out->chunk.record = record;
            out->chunk.len = len;
        }
        return 0;
    }
    case SYNC_MSG_WANT_CHUNKS:
        if (crdt_reader_varint_max(reader, SYNC_WIRE_WANT_MAX, &value) || value == 0 ||
            crdt_reader_raw(reader, (size_t)value * SYNC_HASH_LEN, &raw))
            return -EBADMSG;
        out->want.ids = raw;
        out->want.count = (size_t)value;
        return 0;
    case SYNC_MSG_HEADS:
        return decode_heads(out, reader);
    case SYNC_MSG_ACK:
        return crdt_vv_decode(reader, &out->ack.records);
    case SYNC_MSG_ERROR: {
        const uint8_t *text;
        size_t len;
        if (crdt_reader_varint_max(reader, UINT32_MAX, &value) || value == 0 ||
            crdt_reader_bytes(reader, SYNC_WIRE_ERROR_TEXT_MAX, &text, &len) ||
            !text_valid(text, len))
            return -EBADMSG;
        out->error.code = (uint32_t)value;
        out->error.text = (const char *)text;
        out->error.len = len;
        return 0;
    }
    case SYNC_MSG_PEERS:
        return decode_peers(out, reader);
    case SYNC_MSG_MEMBER: {
        uint8_t action;
        if (crdt_reader_u8(reader, &action) ||
            (action != SYNC_MEMBER_ADD && action != SYNC_MEMBER_REVOKE) ||
            crdt_reader_raw(reader, SYNC_PUBLIC_KEY_LEN, &raw))
            return -EBADMSG;
        out->member.action = (enum sync_member_action)action;
        memcpy(out->member.public_key, raw, SYNC_PUBLIC_KEY_LEN);
        return 0;
    }
    }
    return -EBADMSG; /* an unknown type */
}

int sync_wire_decode(struct sync_msg *out, const uint8_t *bytes, size_t len)
{
    memset(out, 0, sizeof(*out));
    if (!bytes || len == 0 || len > SYNC_WIRE_MESSAGE_MAX)
        return -EBADMSG;
    struct crdt_reader reader;
    crdt_reader_init(&reader, bytes, len);
    uint8_t type;
    if (crdt_reader_u8(&reader, &type))
        return -EBADMSG;
    out->type = (enum sync_msg_type)type;
    int rc = decode_body(out, &reader);
    if (!rc && crdt_reader_left(&reader) != 0)
        rc = -EBADMSG;
    if (rc)
        sync_msg_clear(out);
    return rc;
}

void sync_msg_clear(struct sync_msg *msg)
{
    if (msg->type == SYNC_MSG_HELLO)
        crdt_vv_free(&msg->hello.vv);
    else if (msg->type == SYNC_MSG_ACK)
        crdt_vv_free(&msg->ack.records);
    free(msg->owned_heads);
    free(msg->owned_peers);
    memset(msg, 0, sizeof(*msg));
}
