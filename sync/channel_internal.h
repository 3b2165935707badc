/*
 * sync/channel_internal: a hook for tests only, to send a frame with a
 * secretstream tag that sync_channel_send never uses (PUSH, REKEY), so a
 * test can check that the receiving channel refuses it.
 */
#ifndef WEFT_SYNC_CHANNEL_INTERNAL_H
#define WEFT_SYNC_CHANNEL_INTERNAL_H

#include "sync/channel.h"

/*
 * Like sync_channel_send with an explicit crypto_secretstream tag, and even
 * after the final frame: tests only.
 */
SYNC_MUST_CHECK int sync__channel_send_tag(struct sync_channel *channel, const void *message,
                                           size_t len, unsigned char tag);

#endif
