/* meta/opbody: see opbody.h; the formats are in README "Op bodies". */
#include "meta/opbody.h"

#include <errno.h>
#include <string.h>

#define TEXT_FORMAT_2 0x82 /* a text op's wrapper; a bare crdt/text list starts below 0x80 */
#define COPY_TAG      0x00 /* a conflict copy; a crdt/tree op starts with a counter >= 1 */
#define COPY_FORMAT   1
#define FLAG_TEXT     0x01
#define FLAG_NO_LIST  0x02 /* format 3: no chunk list (a text version) */
#define FLAG_INDEXED  0x04 /* format 3: the list is an index's root; u8 levels before it */

/* ---------- small pieces ---------- */

/* An optional timestamp: varint counter, then the replica only if the counter is not 0. */
static void put_ts(struct crdt_buf *buf, struct crdt_ts ts)
{
    crdt_buf_put_varint(buf, ts.counter);
    if (ts.counter)
        crdt_buf_put_varint(buf, ts.replica);
}

static int get_ts(struct crdt_reader *reader, struct crdt_ts *out)
{
    *out = (struct crdt_ts){0, 0};
    int rc = crdt_reader_varint(reader, &out->counter);
    if (!rc && out->counter)
        rc = crdt_reader_varint(reader, &out->replica);
    return rc;
}

/* A node id as 16 bytes, big-endian hi then lo (meta_id's layout). */
static void put_id(struct crdt_buf *buf, struct crdt_node_id id)
{
    uint8_t bytes[META_ID_LEN];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (uint8_t)(id.hi >> (56 - 8 * i));
        bytes[8 + i] = (uint8_t)(id.lo >> (56 - 8 * i));
    }
    crdt_buf_put(buf, bytes, sizeof(bytes));
}

static int get_id(struct crdt_reader *reader, struct crdt_node_id *out)
{
    const uint8_t *bytes;
    int rc = crdt_reader_raw(reader, META_ID_LEN, &bytes);
    if (rc)
        return rc;
    *out = (struct crdt_node_id){0, 0};
    for (int i = 0; i < 8; i++) {
        out->hi = out->hi << 8 | bytes[i];
        out->lo = out->lo << 8 | bytes[8 + i];
    }
    return 0;
}

/* Bytes of 1..max that hold no NUL (they become C strings). */
static int get_string(struct crdt_reader *reader, size_t min, size_t max, const char **out,
                      size_t *out_len)
{
    const uint8_t *bytes;
    int rc = crdt_reader_bytes(reader, max, &bytes, out_len);
    if (rc)
        return rc;
    if (*out_len < min || memchr(bytes, '\0', *out_len))
        return -EBADMSG;
    *out = (const char *)bytes;
    return 0;
}

static int get_u32(struct crdt_reader *reader, uint32_t *out)
{
    uint64_t value;
    int rc = crdt_reader_varint_max(reader, UINT32_MAX, &value);
    *out = (uint32_t)value;
    return rc;
}

/* ---------- attribute ops ---------- */

static int decode_fields(struct meta_attr_body *out, struct crdt_reader *reader)
{
    int rc = 0;
    if (!rc && (out->mask & META_ATTR_MODE))
        rc = get_u32(reader, &out->mode);
    if (!rc && (out->mask & META_ATTR_UID))
        rc = get_u32(reader, &out->uid);
    if (!rc && (out->mask & META_ATTR_GID))
        rc = get_u32(reader, &out->gid);
    if (!rc && (out->mask & META_ATTR_RDEV))
        rc = crdt_reader_varint(reader, &out->rdev);
    if (!rc && (out->mask & META_ATTR_MTIME))
        rc = crdt_reader_svarint(reader, &out->mtime_ns);
    if (!rc && (out->mask & META_ATTR_TARGET))
        rc = get_string(reader, 1, META_TARGET_MAX, &out->target, &out->target_len);
    return rc;
}

static int decode_xattr(struct meta_attr_body *out, struct crdt_reader *reader)
{
    int rc = get_string(reader, 1, META_XATTR_NAME_MAX, &out->xattr_name, &out->xattr_name_len);
    if (!rc && out->mask == META_ATTR_XATTR_SET)
        rc = crdt_reader_bytes(reader, META_XATTR_VALUE_MAX, &out->xattr_value,
                               &out->xattr_value_len);
    return rc;
}

/*
 * A content version; format 2 adds flags, seen move, base and place before
 * the chunk list; format 3 then the size and what stands for the list.
 */
static int decode_content(struct meta_attr_body *out, struct crdt_reader *reader)
{
    uint8_t flags = 0,
            known = out->format == 3 ? FLAG_TEXT | FLAG_NO_LIST | FLAG_INDEXED : FLAG_TEXT;
    int rc = 0;
    if (out->format >= 2 && !(rc = crdt_reader_u8(reader, &flags)))
        rc = flags & ~known ? -EBADMSG : 0;
    out->text = flags & FLAG_TEXT;
    out->no_list = flags & FLAG_NO_LIST;
    /* A list left out is a text version's; an index is a list's. */
    if (!rc && ((out->no_list && (!out->text || flags & FLAG_INDEXED))))
        rc = -EBADMSG;
    if (!rc)
        rc = crdt_reader_svarint(reader, &out->time_ns);
    if (!rc && out->format >= 2) {
        const uint8_t *parent;
        if (!(rc = get_ts(reader, &out->seen_move)) && !(rc = get_ts(reader, &out->base)) &&
            !(rc = crdt_reader_raw(reader, META_ID_LEN, &parent))) {
            memcpy(out->parent.bytes, parent, META_ID_LEN);
            rc = get_string(reader, 1, CRDT_NAME_MAX, &out->name, &out->name_len);
        }
        static const struct meta_id none = {{0}};
        /* A place a tree op can name: a valid entry name in any parent but "none". */
        if (!rc && (!crdt_tree_name_valid(out->name, out->name_len) ||
                    !memcmp(out->parent.bytes, none.bytes, META_ID_LEN)))
            rc = -EBADMSG;
    }
    bool sized = flags & (FLAG_NO_LIST | FLAG_INDEXED);
    if (!rc && sized)
        rc = crdt_reader_varint(reader, &out->size);
    if (!rc && flags & FLAG_INDEXED && !(rc = crdt_reader_u8(reader, &out->levels)))
        rc = out->levels >= 1 && out->levels <= META_CHUNK_INDEX_LEVELS ? 0 : -EBADMSG;
    if (!rc && !out->no_list)
        rc = meta_chunk_list_decode(&out->chunks, reader->pos, crdt_reader_left(reader));
    if (!rc && !out->no_list)
        reader->pos = reader->end;
    if (!rc && !sized)
        out->size = out->chunks.total;
    return rc;
}

int meta_attr_body_decode(struct meta_attr_body *out, const void *body, size_t len)
{
    memset(out, 0, sizeof(*out));
    struct crdt_reader reader;
    crdt_reader_init(&reader, body, len);
    int rc = crdt_reader_u8(&reader, &out->format);
    if (!rc)
        rc = crdt_reader_u8(&reader, &out->mask);
    if (!rc && (out->format < 1 || out->format > 3 ||
                (out->format == 3 && out->mask != META_ATTR_CONTENT)))
        rc = -EBADMSG;
    if (rc)
        return rc;
    if (out->mask == META_ATTR_CONTENT)
        rc = decode_content(out, &reader);
    else if (out->mask == META_ATTR_XATTR_SET || out->mask == META_ATTR_XATTR_REMOVE)
        rc = decode_xattr(out, &reader);
    else if (out->mask >> META_ATTR_FIELDS)
        rc = -EBADMSG; /* an xattr bit with fields, or with the other xattr bit */
    else
        rc = decode_fields(out, &reader);
    if (!rc && crdt_reader_left(&reader))
        rc = -EBADMSG;
    return rc;
}

void meta_attr_body_encode(struct crdt_buf *buf, const struct meta_attr_body *body)
{
    crdt_buf_put_u8(buf, body->format);
    crdt_buf_put_u8(buf, body->mask);
    if (body->mask == META_ATTR_CONTENT) {
        uint8_t flags = body->text ? FLAG_TEXT : 0;
        if (body->format == 3)
            flags |= (body->no_list ? FLAG_NO_LIST : 0) | (body->levels ? FLAG_INDEXED : 0);
        if (body->format >= 2)
            crdt_buf_put_u8(buf, flags);
        crdt_buf_put_svarint(buf, body->time_ns);
        if (body->format >= 2) {
            put_ts(buf, body->seen_move);
            put_ts(buf, body->base);
            crdt_buf_put(buf, body->parent.bytes, META_ID_LEN);
            crdt_buf_put_bytes(buf, body->name, body->name_len);
        }
        if (flags & (FLAG_NO_LIST | FLAG_INDEXED))
            crdt_buf_put_varint(buf, body->size);
        if (flags & FLAG_INDEXED)
            crdt_buf_put_u8(buf, body->levels);
        if (!(flags & FLAG_NO_LIST))
            meta_chunk_list_encode(buf, &body->chunks);
        return;
    }
    if (body->mask == META_ATTR_XATTR_SET || body->mask == META_ATTR_XATTR_REMOVE) {
        crdt_buf_put_bytes(buf, body->xattr_name, body->xattr_name_len);
        if (body->mask == META_ATTR_XATTR_SET)
            crdt_buf_put_bytes(buf, body->xattr_value, body->xattr_value_len);
        return;
    }
    if (body->mask & META_ATTR_MODE)
        crdt_buf_put_varint(buf, body->mode);
    if (body->mask & META_ATTR_UID)
        crdt_buf_put_varint(buf, body->uid);
    if (body->mask & META_ATTR_GID)
        crdt_buf_put_varint(buf, body->gid);
    if (body->mask & META_ATTR_RDEV)
        crdt_buf_put_varint(buf, body->rdev);
    if (body->mask & META_ATTR_MTIME)
        crdt_buf_put_svarint(buf, body->mtime_ns);
    if (body->mask & META_ATTR_TARGET)
        crdt_buf_put_bytes(buf, body->target, body->target_len);
}

void meta_attr_body_clear(struct meta_attr_body *body)
{
    meta_chunk_list_free(&body->chunks);
}

/* ---------- text ops ---------- */

int meta_text_body_decode(struct meta_text_body *out, const void *body, size_t len)
{
    memset(out, 0, sizeof(*out));
    struct crdt_reader reader;
    crdt_reader_init(&reader, body, len);
    uint8_t first;
    int rc = crdt_reader_u8(&reader, &first);
    if (rc)
        return rc;
    if (first == TEXT_FORMAT_2) {
        out->format = 2;
        rc = get_ts(&reader, &out->seen_move);
    } else if (first < 0x80) {
        out->format = 1; /* the whole body is the list; its first byte is the list's version */
        reader.pos--;
    } else {
        rc = -EBADMSG;
    }
    if (!rc && crdt_reader_left(&reader) == 0)
        rc = -EBADMSG;
    out->ops = reader.pos;
    out->ops_len = crdt_reader_left(&reader);
    return rc;
}

void meta_text_body_encode(struct crdt_buf *buf, const struct meta_text_body *body)
{
    if (body->format == 2) {
        crdt_buf_put_u8(buf, TEXT_FORMAT_2);
        put_ts(buf, body->seen_move);
    }
    crdt_buf_put(buf, body->ops, body->ops_len);
}

/* ---------- tree ops ---------- */

struct crdt_node_id meta_copy_id(struct crdt_node_id file, struct crdt_ts version)
{
    /* A name no directory can have under a file, since nothing lives under a file. */
    static const char digits[] = "0123456789abcdef";
    char name[sizeof("copy ") + 32];
    memcpy(name, "copy ", 5);
    for (int i = 0; i < 16; i++) {
        name[5 + i] = digits[(version.counter >> (60 - 4 * i)) & 15];
        name[21 + i] = digits[(version.replica >> (60 - 4 * i)) & 15];
    }
    return crdt_tree_dir_id(file, name, 37);
}

int meta_tree_body_decode(struct meta_tree_body *out, const void *body, size_t len)
{
    memset(out, 0, sizeof(*out));
    struct crdt_reader reader;
    crdt_reader_init(&reader, body, len);
    int rc = 0;
    if (len && ((const uint8_t *)body)[0] == COPY_TAG) {
        uint8_t tag, format;
        out->copy = true;
        if (!(rc = crdt_reader_u8(&reader, &tag)) && !(rc = crdt_reader_u8(&reader, &format)))
            rc = format == COPY_FORMAT ? get_id(&reader, &out->file) : -EBADMSG;
    }
    if (!rc)
        rc = crdt_tree_op_decode(&reader, &out->op);
    if (!rc && crdt_reader_left(&reader))
        rc = -EBADMSG;
    /* A copy is made only as its rule says: a file, at the id of (file, version). */
    if (!rc && out->copy &&
        (out->op.kind != CRDT_KIND_FILE || out->op.seen_edit.counter != 0 ||
         crdt_node_id_eq(out->file, CRDT_NODE_NONE) || crdt_node_id_eq(out->file, CRDT_NODE_ROOT) ||
         crdt_node_id_eq(out->file, CRDT_NODE_TRASH) ||
         !crdt_node_id_eq(out->op.child, meta_copy_id(out->file, out->op.ts))))
        rc = -EBADMSG;
    return rc;
}

void meta_tree_body_encode(struct crdt_buf *buf, const struct meta_tree_body *body)
{
    if (body->copy) {
        crdt_buf_put_u8(buf, COPY_TAG);
        crdt_buf_put_u8(buf, COPY_FORMAT);
        put_id(buf, body->file);
    }
    crdt_tree_op_encode(buf, &body->op);
}
