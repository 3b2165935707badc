/* Fuzz target: sync_invite_decode on arbitrary text (a token pasted by a user). */
#include "sync/invite.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (sync_init() != 0)
        abort();
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct sync_invite invite;
    if (sync_invite_decode(&invite, text) == 0) {
        /* What decodes re-encodes, and the re-encoding decodes to the same. */
        char again[SYNC_INVITE_TEXT_MAX];
        struct sync_invite back;
        if (sync_invite_encode(again, sizeof(again), &invite) != 0 ||
            sync_invite_decode(&back, again) != 0 || memcmp(&back, &invite, sizeof(back)) != 0)
            abort();
    }
    free(text);
    return 0;
}
