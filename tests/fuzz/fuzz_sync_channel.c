/*
 * Fuzz target: sync/channel. The first byte picks where arbitrary bytes go:
 *
 *   0  a fresh responder (waiting for a hello)
 *   1  a fresh initiator (hello sent, waiting for the reply)
 *   2  a responder that got a genuine hello (waiting for the signature)
 *   3  the responder of an established session
 *   4  the initiator of an established session
 *   5  an honest session whose byte streams the rest edits: entries of
 *      [direction | offset lo] [offset hi] [xor mask]. Whatever is changed,
 *      no side may receive a message that was not sent, and if a change
 *      took effect the session may not end cleanly on both sides.
 *
 * The rest is fed in pieces whose sizes come from the input too. libsodium's
 * randomness is a seeded generator reset for each input: runs are reproducible
 * (and every session has the same keys; see the end of LLVMFuzzerTestOneInput).
 */
#include "sync/channel.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t det_state;

static uint64_t det_next(void)
{
    uint64_t x = det_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    det_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static const char *det_name(void)
{
    return "weft-fuzz-deterministic";
}

static uint32_t det_random(void)
{
    return (uint32_t)(det_next() >> 32);
}

static void det_buf(void *const buf, const size_t size)
{
    uint8_t *bytes = buf;
    for (size_t i = 0; i < size; i++)
        bytes[i] = (uint8_t)(det_next() >> 56);
}

static struct randombytes_implementation det_impl = {
    .implementation_name = det_name,
    .random = det_random,
    .buf = det_buf,
};

static bool ready;
static struct sync_identity alice, bob;
static uint8_t share[SYNC_SHARE_ID_LEN];

/* Alice and bob know each other; nobody else. */
static int peer_check(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                      const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    (void)ctx;
    (void)share_id;
    if (memcmp(public_key, alice.public_key, SYNC_PUBLIC_KEY_LEN) == 0 ||
        memcmp(public_key, bob.public_key, SYNC_PUBLIC_KEY_LEN) == 0)
        return 0;
    snprintf(why, why_len, "stranger");
    return -1;
}

static void setup(void)
{
    /* Before sodium_init, so libsodium never reads the OS's generator. */
    if (randombytes_set_implementation(&det_impl) != 0 || sync_init() != 0)
        abort();
    uint8_t seed[SYNC_SEED_LEN];
    memset(seed, 1, sizeof(seed));
    if (sync_identity_from_seed(&alice, seed) != 0)
        abort();
    memset(seed, 2, sizeof(seed));
    if (sync_identity_from_seed(&bob, seed) != 0)
        abort();
    memset(share, 0xa0, sizeof(share));
    ready = true;
}

/* Moves from's output into to, flipping bytes the script names; returns bytes moved. */
struct edit {
    size_t offset;
    uint8_t mask;
};

static size_t move(struct sync_channel *from, struct sync_channel *to, size_t *moved,
                   const struct edit *edits, size_t edit_count, bool *changed)
{
    size_t len;
    const uint8_t *out = sync_channel_output(&len, from);
    if (len == 0)
        return 0;
    uint8_t *copy = malloc(len);
    if (!copy)
        abort();
    memcpy(copy, out, len);
    for (size_t i = 0; i < edit_count; i++)
        if (edits[i].offset >= *moved && edits[i].offset < *moved + len)
            copy[edits[i].offset - *moved] ^= edits[i].mask;
    /* Two edits of one byte may cancel out: what counts is whether the bytes differ. */
    if (memcmp(copy, out, len) != 0)
        *changed = true;
    sync_channel_output_consume(from, len);
    int rc = sync_channel_feed(to, copy, len);
    (void)rc; /* failures are sticky and checked at the end */
    *moved += len;
    free(copy);
    return len;
}

static void pair_new(struct sync_channel **init, struct sync_channel **resp)
{
    if (sync_channel_new(init, SYNC_CHANNEL_INITIATOR, &alice, share, peer_check, NULL) != 0 ||
        sync_channel_new(resp, SYNC_CHANNEL_RESPONDER, &bob, NULL, peer_check, NULL) != 0)
        abort();
}

static void pair_run(struct sync_channel *init, struct sync_channel *resp, size_t moved[2],
                     const struct edit *edits[2], const size_t counts[2], bool *changed)
{
    while (move(init, resp, &moved[0], edits[0], counts[0], changed) +
               move(resp, init, &moved[1], edits[1], counts[1], changed) >
           0) {
    }
}

static void drain(struct sync_channel *channel, const char *expected)
{
    uint8_t *message;
    size_t len;
    while (sync_channel_recv(&message, &len, channel) == 0) {
        if (!expected || len != strlen(expected) || memcmp(message, expected, len) != 0)
            abort(); /* a message nobody sent */
        free(message);
    }
}

static void feed_pieces(struct sync_channel *channel, const uint8_t *bytes, size_t len)
{
    /* The first byte sets the piece size, so both whole and split frames are explored. */
    size_t piece = len ? 1 + bytes[0] % 64 : 1;
    if (len && bytes[0] >= 0xc0)
        piece = len;
    for (size_t done = 0; done < len; done += piece) {
        size_t step = len - done < piece ? len - done : piece;
        int rc = sync_channel_feed(channel, bytes + done, step);
        if (rc != sync_channel_error(channel))
            abort();
    }
    size_t out_len;
    (void)sync_channel_output(&out_len, channel);
    int rc = sync_channel_feed_eof(channel);
    if (rc != 0 && sync_channel_state(channel) != SYNC_CHANNEL_FAILED)
        abort();
}

static void session_with_edits(const uint8_t *script, size_t len)
{
    struct edit edits[2][64];
    size_t counts[2] = {0, 0};
    for (size_t i = 0; i + 3 <= len; i += 3) {
        int direction = script[i] & 1;
        if (counts[direction] == 64)
            break;
        edits[direction][counts[direction]++] = (struct edit){
            .offset = (size_t)(script[i] >> 1) | (size_t)script[i + 1] << 7,
            .mask = script[i + 2],
        };
    }
    struct sync_channel *init, *resp;
    pair_new(&init, &resp);
    size_t moved[2] = {0, 0};
    bool changed = false;
    const struct edit *edit_lists[2] = {edits[0], edits[1]};
    pair_run(init, resp, moved, edit_lists, counts, &changed);
    if (sync_channel_send(init, "ping", 4) == 0 && sync_channel_finish(init) != 0)
        abort();
    if (sync_channel_send(resp, "pong", 4) == 0 && sync_channel_finish(resp) != 0)
        abort();
    pair_run(init, resp, moved, edit_lists, counts, &changed);
    int init_end = sync_channel_feed_eof(init);
    int resp_end = sync_channel_feed_eof(resp);
    drain(resp, "ping");
    drain(init, "pong");
    if (changed && init_end == 0 && resp_end == 0)
        abort(); /* a changed byte went unnoticed */
    if (!changed && (init_end != 0 || resp_end != 0))
        abort(); /* an honest session failed */
    sync_channel_free(init);
    sync_channel_free(resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    det_state = 0x5eed;
    if (size == 0)
        return 0;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;
    struct sync_channel *init = NULL, *resp = NULL, *target = NULL;
    size_t moved[2] = {0, 0};
    bool changed = false;
    const struct edit *no_edits[2] = {NULL, NULL};
    const size_t no_counts[2] = {0, 0};
    switch (data[0] % 6) {
    case 0:
        if (sync_channel_new(&resp, SYNC_CHANNEL_RESPONDER, &bob, NULL, peer_check, NULL) != 0)
            abort();
        target = resp;
        break;
    case 1:
        if (sync_channel_new(&init, SYNC_CHANNEL_INITIATOR, &alice, share, peer_check, NULL) != 0)
            abort();
        target = init;
        break;
    case 2:
        pair_new(&init, &resp);
        move(init, resp, &moved[0], NULL, 0, &changed); /* the hello only */
        target = resp;
        break;
    case 3:
    case 4:
        pair_new(&init, &resp);
        pair_run(init, resp, moved, no_edits, no_counts, &changed);
        if (sync_channel_state(init) != SYNC_CHANNEL_OPEN ||
            sync_channel_state(resp) != SYNC_CHANNEL_OPEN)
            abort();
        target = data[0] % 6 == 3 ? resp : init;
        break;
    default:
        session_with_edits(rest, rest_len);
        return 0;
    }
    feed_pieces(target, rest, rest_len);
    /*
     * Randomness restarts for each input, so every input's session has the
     * same keys, and a frame lifted from another input's session (libFuzzer
     * does find them) is genuinely valid here. The only messages ever sealed
     * under these keys are mode 5's "ping" (initiator to responder) and
     * "pong": anything else would be a forgery.
     */
    drain(target, target == resp ? "ping" : "pong");
    sync_channel_free(init);
    sync_channel_free(resp);
    return 0;
}
