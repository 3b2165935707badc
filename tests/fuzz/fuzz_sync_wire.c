/* Fuzz target: sync_wire_decode on arbitrary bytes (every message a peer or relay sends). */
#include "sync/wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sync_msg msg;
    if (sync_wire_decode(&msg, data, size) != 0) {
        /* A refusal leaves nothing behind. */
        if (msg.type != 0 || msg.owned_heads != NULL)
            abort();
        return 0;
    }
    /* Whatever decodes re-encodes to the same bytes (one encoding per message). */
    struct crdt_buf buf = {0};
    int rc = sync_wire_encode(&buf, &msg);
    if (rc == 0 && (buf.len != size || memcmp(buf.data, data, size) != 0))
        abort();
    if (rc != 0 && rc != -ENOMEM)
        abort();
    if (strcmp(sync_msg_type_str(msg.type), "?") == 0)
        abort();
    crdt_buf_free(&buf);
    sync_msg_clear(&msg);
    return 0;
}
