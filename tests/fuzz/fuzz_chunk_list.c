/* Fuzz target: meta_chunk_list_decode on arbitrary bytes (chunk lists come from peers). */
#include "meta/chunk.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meta_chunk_list list;
    if (meta_chunk_list_decode(&list, data, size) != 0)
        return 0;
    /* Whatever decodes re-encodes to the same bytes, and its total is its lengths' sum. */
    uint64_t total = 0;
    for (size_t i = 0; i < list.len; i++) {
        if (list.refs[i].len == 0 || list.refs[i].len > META_CHUNK_MAX)
            abort();
        total += list.refs[i].len;
    }
    if (total != list.total)
        abort();
    struct crdt_buf buf = {0};
    meta_chunk_list_encode(&buf, &list);
    if (crdt_buf_status(&buf) == 0 && (buf.len != size || memcmp(buf.data, data, size) != 0))
        abort();
    crdt_buf_free(&buf);
    meta_chunk_list_free(&list);
    return 0;
}
