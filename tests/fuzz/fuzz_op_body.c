/*
 * Fuzz target: the op-body decoders of meta/opbody on arbitrary bytes (op
 * bodies come from peers), as an attribute or content op, a text op's
 * wrapper, a tree op and a membership op (meta/member). Whatever decodes
 * re-encodes to the same bytes.
 */
#include "crdt/text.h"
#include "meta/member.h"
#include "meta/opbody.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_bytes(const struct crdt_buf *buf, const uint8_t *data, size_t size)
{
    if (crdt_buf_status(buf) == 0 && (buf->len != size || memcmp(buf->data, data, size) != 0))
        abort();
}

static void attr(const uint8_t *data, size_t size)
{
    struct meta_attr_body body;
    int rc = meta_attr_body_decode(&body, data, size);
    if (rc == 0) {
        if (body.format == 2 && body.mask == META_ATTR_CONTENT &&
            (body.name_len == 0 || body.name_len > CRDT_NAME_MAX))
            abort();
        struct crdt_buf buf = {0};
        meta_attr_body_encode(&buf, &body);
        same_bytes(&buf, data, size);
        crdt_buf_free(&buf);
    }
    meta_attr_body_clear(&body);
}

static void text(const uint8_t *data, size_t size)
{
    struct meta_text_body body;
    if (meta_text_body_decode(&body, data, size) != 0)
        return;
    if (body.ops_len == 0 || body.ops + body.ops_len != data + size)
        abort();
    struct crdt_buf buf = {0};
    meta_text_body_encode(&buf, &body);
    same_bytes(&buf, data, size);
    crdt_buf_free(&buf);
    /* The list inside goes on to crdt/text, as the replica does. */
    struct crdt_text_ops ops = {0};
    int rc = crdt_text_ops_decode(&ops, body.ops, body.ops_len);
    if (rc != 0 && rc != -EBADMSG && rc != -ENOMEM)
        abort();
    crdt_text_ops_free(&ops);
}

static void tree(const uint8_t *data, size_t size)
{
    struct meta_tree_body body;
    if (meta_tree_body_decode(&body, data, size) != 0)
        return;
    if (body.copy && !crdt_node_id_eq(body.op.child, meta_copy_id(body.file, body.op.ts)))
        abort();
    struct crdt_buf buf = {0};
    meta_tree_body_encode(&buf, &body);
    same_bytes(&buf, data, size);
    crdt_buf_free(&buf);
}

static void member(const uint8_t *data, size_t size)
{
    struct meta_member_body body;
    if (meta_member_body_decode(&body, data, size) != 0)
        return;
    if ((body.epoch != 0) != (body.key_count != 0) || (body.epoch && !body.revoked))
        abort();
    struct crdt_buf buf = {0};
    meta_member_body_encode(&buf, &body);
    same_bytes(&buf, data, size);
    crdt_buf_free(&buf);
    meta_member_body_clear(&body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    attr(data, size);
    text(data, size);
    tree(data, size);
    member(data, size);
    return 0;
}
