/* Fuzz target: crdt_vv_decode and crdt_ts_decode on arbitrary bytes. */
#include "crdt/clock.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct crdt_reader reader;
    crdt_reader_init(&reader, data, size);
    struct crdt_vv vv = {0};
    if (crdt_vv_decode(&reader, &vv) == 0) {
        /* Whatever decodes must re-encode to the same bytes (one encoding per value). */
        struct crdt_buf buf = {0};
        crdt_vv_encode(&buf, &vv);
        size_t used = size - crdt_reader_left(&reader);
        if (crdt_buf_status(&buf) == 0 && (buf.len != used || memcmp(buf.data, data, used) != 0))
            abort();
        crdt_buf_free(&buf);
        crdt_vv_free(&vv);
    }
    struct crdt_ts ts;
    crdt_reader_init(&reader, data, size);
    if (crdt_ts_decode(&reader, &ts) == 0 && crdt_ts_cmp(ts, ts) != 0)
        abort();
    return 0;
}
