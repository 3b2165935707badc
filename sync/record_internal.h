/*
 * sync/record_internal: hooks for tests and fuzz targets only. They seal
 * arbitrary plaintext under an arbitrary header, which the public functions
 * refuse to do, so that a test can make "validly signed but malformed"
 * records and check that opening them fails cleanly.
 */
#ifndef WEFT_SYNC_RECORD_INTERNAL_H
#define WEFT_SYNC_RECORD_INTERNAL_H

#include "sync/record.h"

/*
 * Seals plain[0..plain_len) under a header with the given kind, seq and
 * 32-byte link (prev hash or chunk id), with no checks of kind, seq, link or
 * plaintext: tests only. Appends to *out; 0, -EINVAL (bad seal), -ENOMEM.
 */
SYNC_MUST_CHECK int sync__record_seal_raw(struct crdt_buf *out, uint8_t hash_out[SYNC_HASH_LEN],
                                          const struct sync_seal *seal, uint8_t kind, uint64_t seq,
                                          const uint8_t link[SYNC_HASH_LEN], const uint8_t *plain,
                                          size_t plain_len);
/* Encodes ops as an op record's plaintext (no checks): tests only. */
void sync__record_encode_ops(struct crdt_buf *out, const struct sync_op *ops, size_t count);

#endif
