/*
 * Fuzz target: crdt/text's decoders on arbitrary bytes. The first byte picks
 * what the rest is: a full state (decoded, read, re-encoded, then edited and
 * re-synced) or an ops list (decoded and applied to an empty document and to
 * a small one). Nothing may crash; what decodes must re-encode and reload, and
 * a reloaded state or ops list must encode to the same bytes.
 */
#include "crdt/text.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Fuzzed input is expected to be refused in many ways; only crashes matter here. */
static void may_fail(int rc)
{
    (void)rc;
}

static void use_doc(struct crdt_text *doc)
{
    char *content;
    size_t len;
    if (crdt_text_content(&content, &len, doc) == 0) {
        if (len != crdt_text_len_bytes(doc))
            abort();
        free(content);
    }
    struct crdt_buf buf = {0};
    struct crdt_vv vv = {0}, none = {0};
    if (crdt_text_encode_state(&buf, doc) == 0) {
        struct crdt_text *again;
        struct crdt_buf same = {0};
        if (crdt_text_decode_state(&again, buf.data, buf.len) != 0)
            abort(); /* our own encoding must load */
        /* ... and, loaded, encode to the same bytes (the state keeps everything exactly) */
        if (crdt_text_encode_state(&same, again) == 0 &&
            (same.len != buf.len || memcmp(same.data, buf.data, buf.len) != 0))
            abort();
        crdt_buf_free(&same);
        crdt_text_free(again);
    }
    crdt_buf_free(&buf);
    /* Ops since nothing rebuild the same text in a fresh document. */
    struct crdt_text_ops ops = {0};
    struct crdt_text *fresh;
    if (crdt_text_since(&ops, doc, &none) == 0 && crdt_text_new(&fresh) == 0) {
        size_t applied, pending;
        if (crdt_text_apply(&applied, &pending, fresh, NULL, ops.ops, ops.len) == 0 &&
            pending == 0 && crdt_text_len_bytes(fresh) != crdt_text_len_bytes(doc))
            abort();
        crdt_text_free(fresh);
    }
    crdt_text_ops_free(&ops);
    if (crdt_text_version(&vv, doc) == 0)
        crdt_vv_free(&vv);
    struct crdt_clock clock;
    crdt_clock_init(&clock, 77);
    clock.counter = UINT64_C(1) << 40;
    size_t n = crdt_text_len_cp(doc);
    may_fail(crdt_text_insert_cp(NULL, doc, &clock, n / 2, "\xc3\xa9x", 3));
    may_fail(crdt_text_delete_cp(NULL, doc, &clock, n / 3, n > 2 ? 2 : 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        struct crdt_text *doc;
        if (crdt_text_decode_state(&doc, data + 1, size - 1) == 0) {
            use_doc(doc);
            crdt_text_free(doc);
        }
        return 0;
    }
    struct crdt_text_ops ops = {0};
    if (crdt_text_ops_decode(&ops, data + 1, size - 1) == 0) {
        struct crdt_buf buf = {0};
        if (crdt_text_ops_encode(&buf, &ops) == 0) {
            struct crdt_text_ops again = {0};
            struct crdt_buf same = {0};
            if (crdt_text_ops_decode(&again, buf.data, buf.len) != 0 || again.len != ops.len)
                abort();
            /* ... and our own encoding, decoded, encodes to the same bytes (delete runs stay
             * runs, forwards or backwards) */
            if (crdt_text_ops_encode(&same, &again) == 0 &&
                (same.len != buf.len || memcmp(same.data, buf.data, buf.len) != 0))
                abort();
            crdt_buf_free(&same);
            crdt_text_ops_free(&again);
        }
        crdt_buf_free(&buf);
        struct crdt_text *doc;
        if (crdt_text_new(&doc) == 0) {
            size_t applied, pending;
            struct crdt_clock clock;
            crdt_clock_init(&clock, 1);
            may_fail(crdt_text_insert(NULL, doc, &clock, 0, "base text", 9));
            /* Twice, in order and reversed: duplicates and pending paths. */
            if (crdt_text_apply(&applied, &pending, doc, NULL, ops.ops, ops.len) == 0) {
                for (size_t i = ops.len; i-- > 0;)
                    may_fail(crdt_text_apply(&applied, &pending, doc, NULL, &ops.ops[i], 1));
                use_doc(doc);
            }
            crdt_text_free(doc);
        }
    }
    crdt_text_ops_free(&ops);
    return 0;
}
