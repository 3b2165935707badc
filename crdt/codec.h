/*
 * crdt/codec: growable byte buffers and a bounds-checked reader, with LEB128
 * varints. Every encoder and decoder in crdt/ is written on these, so that a
 * length is checked in exactly one place before anything is read.
 */
#ifndef WEFT_CRDT_CODEC_H
#define WEFT_CRDT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define CRDT_MUST_CHECK __attribute__((warn_unused_result))

/* An owned, growable output buffer. Zero-initialise it; free with crdt_buf_free. */
struct crdt_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    int failed; /* sticky -ENOMEM: puts after a failed grow are dropped */
};

/* A read cursor over caller-owned bytes; it never reads past `end`. */
struct crdt_reader {
    const uint8_t *pos;
    const uint8_t *end;
};

/* Releases the buffer's memory and zeroes it; accepts a zeroed buffer. */
void crdt_buf_free(struct crdt_buf *buf);
/* Makes room for `extra` more bytes; 0 or -ENOMEM (also sets buf->failed). */
CRDT_MUST_CHECK int crdt_buf_reserve(struct crdt_buf *buf, size_t extra);
/* Appends raw bytes. Errors are sticky in buf->failed. */
void crdt_buf_put(struct crdt_buf *buf, const void *bytes, size_t len);
/* Appends one byte. */
void crdt_buf_put_u8(struct crdt_buf *buf, uint8_t value);
/* Appends an unsigned LEB128 varint (1..10 bytes). */
void crdt_buf_put_varint(struct crdt_buf *buf, uint64_t value);
/* Appends a zigzag-encoded signed varint. */
void crdt_buf_put_svarint(struct crdt_buf *buf, int64_t value);
/* Appends a little-endian u64 (fixed 8 bytes). */
void crdt_buf_put_u64le(struct crdt_buf *buf, uint64_t value);
/* Appends varint length then the bytes. */
void crdt_buf_put_bytes(struct crdt_buf *buf, const void *bytes, size_t len);
/* Returns 0, or -ENOMEM if any earlier put failed. */
CRDT_MUST_CHECK int crdt_buf_status(const struct crdt_buf *buf);

/* Starts reading `len` bytes at `data` (caller keeps them alive). */
void crdt_reader_init(struct crdt_reader *reader, const void *data, size_t len);
/* Bytes not yet read. */
size_t crdt_reader_left(const struct crdt_reader *reader);
/* Reads one byte; -EBADMSG at end of input. */
CRDT_MUST_CHECK int crdt_reader_u8(struct crdt_reader *reader, uint8_t *out);
/* Reads a varint; -EBADMSG if truncated, over 10 bytes or over 64 bits. */
CRDT_MUST_CHECK int crdt_reader_varint(struct crdt_reader *reader, uint64_t *out);
/* Reads a varint that must be <= max; -EBADMSG otherwise. */
CRDT_MUST_CHECK int crdt_reader_varint_max(struct crdt_reader *reader, uint64_t max, uint64_t *out);
/* Reads a zigzag varint. */
CRDT_MUST_CHECK int crdt_reader_svarint(struct crdt_reader *reader, int64_t *out);
/* Reads a little-endian u64. */
CRDT_MUST_CHECK int crdt_reader_u64le(struct crdt_reader *reader, uint64_t *out);
/* Points *out at the next `len` bytes (no copy); -EBADMSG if fewer remain. */
CRDT_MUST_CHECK int crdt_reader_raw(struct crdt_reader *reader, size_t len, const uint8_t **out);
/* Reads a varint length (<= max_len) then points at that many bytes (no copy). */
CRDT_MUST_CHECK int crdt_reader_bytes(struct crdt_reader *reader, size_t max_len,
                                      const uint8_t **out, size_t *out_len);

#endif
