/*
 * Tests for sync/channel: two channels wired back to back in memory. The
 * handshake completes and messages (up to the largest, fed one byte at a
 * time) go both ways; unknown devices and other shares are refused with a
 * reason; a byte changed anywhere in the handshake or a frame is caught; a
 * replayed handshake, a reflected hello, a low-order key, oversized, empty
 * and truncated frames, and unexpected stream tags are errors. libsodium's
 * randomness is replaced by a seeded generator, so every run is the same
 * and the golden digests of the byte streams hold.
 */
#include "sync/channel.h"
#include "sync/channel_internal.h"
#include "sync_util.h"

#include <errno.h>
#include <stdlib.h>

/* ---------- deterministic randomness for libsodium (tests only) ---------- */

static uint64_t det_state = 1;

static const char *det_name(void)
{
    return "weft-test-deterministic";
}

static uint32_t det_random(void)
{
    return (uint32_t)(test_rand(&det_state) >> 32);
}

static void det_stir(void)
{
}

static uint32_t det_uniform(const uint32_t upper_bound)
{
    return upper_bound ? det_random() % upper_bound : 0;
}

static void det_buf(void *const buf, const size_t size)
{
    uint8_t *bytes = buf;
    for (size_t i = 0; i < size; i++)
        bytes[i] = (uint8_t)(test_rand(&det_state) >> 56);
}

static int det_close(void)
{
    return 0;
}

static struct randombytes_implementation det_impl = {
    .implementation_name = det_name,
    .random = det_random,
    .stir = det_stir,
    .uniform = det_uniform,
    .buf = det_buf,
    .close = det_close,
};

/* ---------- fixtures ---------- */

static struct sync_identity alice, bob, mallory;
static uint8_t share_a[SYNC_SHARE_ID_LEN], share_b[SYNC_SHARE_ID_LEN];

/* Who a side lets in: keys, and a count of the questions asked. */
struct policy {
    const uint8_t *allowed[3];
    size_t count;
    int asked;
    uint8_t asked_share[SYNC_SHARE_ID_LEN];
};

static int policy_check(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                        const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    struct policy *policy = ctx;
    policy->asked++;
    memcpy(policy->asked_share, share_id, SYNC_SHARE_ID_LEN);
    for (size_t i = 0; i < policy->count; i++)
        if (memcmp(policy->allowed[i], public_key, SYNC_PUBLIC_KEY_LEN) == 0)
            return 0;
    snprintf(why, why_len, "not in the member list (%d keys)", (int)policy->count);
    return -1;
}

/* One direction of the wire: moves bytes, optionally flipping the byte at one offset. */
struct link {
    struct sync_channel *from, *to;
    size_t chunk;   /* bytes per feed (0: all at once) */
    size_t offset;  /* bytes moved so far */
    size_t flip_at; /* SIZE_MAX: none */
    uint8_t mask;
    int rc;              /* the receiver's last feed result */
    struct crdt_buf log; /* every byte moved (after any flip) */
    uint64_t rng;        /* for random chunk sizes (chunk == SIZE_MAX) */
};

static void link_init(struct link *link, struct sync_channel *from, struct sync_channel *to,
                      size_t chunk)
{
    memset(link, 0, sizeof(*link));
    link->from = from;
    link->to = to;
    link->chunk = chunk;
    link->flip_at = SIZE_MAX;
    link->rng = 99;
}

/* Moves what `from` has to send into `to`; returns the number of bytes moved. */
static size_t pump(struct link *link)
{
    size_t len;
    const uint8_t *out = sync_channel_output(&len, link->from);
    if (len == 0)
        return 0;
    uint8_t *copy = malloc(len);
    memcpy(copy, out, len);
    sync_channel_output_consume(link->from, len);
    if (link->flip_at >= link->offset && link->flip_at < link->offset + len)
        copy[link->flip_at - link->offset] ^= link->mask;
    crdt_buf_put(&link->log, copy, len);
    size_t done = 0;
    while (done < len) {
        size_t step = link->chunk == 0 ? len - done : link->chunk;
        if (link->chunk == SIZE_MAX)
            step = 1 + (size_t)test_rand_below(&link->rng, 3000);
        if (step > len - done)
            step = len - done;
        link->rc = sync_channel_feed(link->to, copy + done, step);
        done += step;
    }
    link->offset += len;
    free(copy);
    return len;
}

static void run(struct link *ab, struct link *ba)
{
    while (pump(ab) + pump(ba) > 0) {
    }
}

struct pair {
    struct sync_channel *init, *resp;
    struct policy init_policy, resp_policy;
    struct link to_resp, to_init;
};

/* A pair: alice initiates for share_a, bob responds (for `resp_share`, NULL: any). */
static void pair_new(struct pair *pair, const uint8_t *resp_share, size_t chunk)
{
    memset(pair, 0, sizeof(*pair));
    pair->init_policy.allowed[pair->init_policy.count++] = bob.public_key;
    pair->resp_policy.allowed[pair->resp_policy.count++] = alice.public_key;
    CHECK_INT(0, sync_channel_new(&pair->init, SYNC_CHANNEL_INITIATOR, &alice, share_a,
                                  policy_check, &pair->init_policy));
    CHECK_INT(0, sync_channel_new(&pair->resp, SYNC_CHANNEL_RESPONDER, &bob, resp_share,
                                  policy_check, &pair->resp_policy));
    link_init(&pair->to_resp, pair->init, pair->resp, chunk);
    link_init(&pair->to_init, pair->resp, pair->init, chunk);
}

static void pair_run(struct pair *pair)
{
    run(&pair->to_resp, &pair->to_init);
}

static void pair_free(struct pair *pair)
{
    sync_channel_free(pair->init);
    sync_channel_free(pair->resp);
    crdt_buf_free(&pair->to_resp.log);
    crdt_buf_free(&pair->to_init.log);
}

/* Pops one message and checks it is `expected` (len bytes). */
static void expect_message(struct sync_channel *channel, const uint8_t *expected, size_t len,
                           int line)
{
    uint8_t *got = NULL;
    size_t got_len = 0;
    int rc = sync_channel_recv(&got, &got_len, channel);
    test_checks++;
    if (rc != 0 || got_len != len || (len && memcmp(got, expected, len) != 0)) {
        test_failures++;
        fprintf(stderr,
                "test_channel.c:%d: expected a message of %zu bytes, got rc %d, %zu bytes\n", line,
                len, rc, got_len);
    }
    free(got);
}
#define EXPECT_MESSAGE(channel, bytes, len) expect_message(channel, bytes, len, __LINE__)

/* ---------- tests ---------- */

static void test_handshake_and_messages(size_t chunk)
{
    struct pair pair;
    pair_new(&pair, NULL, chunk);
    CHECK_INT(SYNC_CHANNEL_HANDSHAKE, sync_channel_state(pair.init));
    CHECK_INT(SYNC_CHANNEL_HANDSHAKE, sync_channel_state(pair.resp));
    CHECK_INT(-ENOTCONN, sync_channel_send(pair.init, "x", 1));
    CHECK_INT(-ENOTCONN, sync_channel_send(pair.resp, "x", 1));
    uint8_t key[SYNC_PUBLIC_KEY_LEN], share[SYNC_SHARE_ID_LEN];
    CHECK_INT(-ENOTCONN, sync_channel_peer(key, share, pair.resp));
    pair_run(&pair);
    CHECK_INT(SYNC_CHANNEL_OPEN, sync_channel_state(pair.init));
    CHECK_INT(SYNC_CHANNEL_OPEN, sync_channel_state(pair.resp));
    CHECK_INT(0, sync_channel_error(pair.init));
    CHECK_STR("", sync_channel_errmsg(pair.resp));
    CHECK_INT(0, sync_channel_peer(key, share, pair.resp));
    CHECK(memcmp(key, alice.public_key, SYNC_PUBLIC_KEY_LEN) == 0);
    CHECK(memcmp(share, share_a, SYNC_SHARE_ID_LEN) == 0); /* the relay learned the share */
    CHECK_INT(0, sync_channel_peer(key, share, pair.init));
    CHECK(memcmp(key, bob.public_key, SYNC_PUBLIC_KEY_LEN) == 0);
    CHECK_INT(1, pair.resp_policy.asked);
    CHECK(memcmp(pair.resp_policy.asked_share, share_a, SYNC_SHARE_ID_LEN) == 0);

    /* Small, empty and largest messages, both ways, interleaved. */
    size_t big_len = SYNC_CHANNEL_MESSAGE_MAX;
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7 + (i >> 11));
    CHECK_INT(0, sync_channel_send(pair.init, "hello bob", 9));
    CHECK_INT(0, sync_channel_send(pair.init, NULL, 0));
    CHECK_INT(0, sync_channel_send(pair.init, big, big_len));
    CHECK_INT(0, sync_channel_send(pair.resp, big, big_len));
    CHECK_INT(0, sync_channel_send(pair.resp, "hello alice", 11));
    CHECK_INT(-EMSGSIZE, sync_channel_send(pair.init, big, big_len + 1));
    pair_run(&pair);
    CHECK_INT(9 + big_len, sync_channel_inbox_bytes(pair.resp));
    EXPECT_MESSAGE(pair.resp, (const uint8_t *)"hello bob", 9);
    EXPECT_MESSAGE(pair.resp, NULL, 0);
    EXPECT_MESSAGE(pair.resp, big, big_len);
    EXPECT_MESSAGE(pair.init, big, big_len);
    EXPECT_MESSAGE(pair.init, (const uint8_t *)"hello alice", 11);
    uint8_t *none;
    size_t none_len;
    CHECK_INT(-EAGAIN, sync_channel_recv(&none, &none_len, pair.init));
    CHECK_INT(0, sync_channel_inbox_bytes(pair.resp));

    /* An orderly end: alice finishes; bob still answers; then bob finishes. */
    CHECK_INT(0, sync_channel_finish(pair.init));
    CHECK_INT(-EPIPE, sync_channel_send(pair.init, "late", 4));
    pair_run(&pair);
    CHECK_INT(SYNC_CHANNEL_CLOSED, sync_channel_state(pair.resp));
    CHECK_INT(0, sync_channel_feed_eof(pair.resp));
    CHECK_INT(0, sync_channel_send(pair.resp, "bye", 3));
    CHECK_INT(0, sync_channel_finish(pair.resp));
    pair_run(&pair);
    EXPECT_MESSAGE(pair.init, (const uint8_t *)"bye", 3);
    CHECK_INT(SYNC_CHANNEL_CLOSED, sync_channel_state(pair.init));
    CHECK_INT(0, sync_channel_feed_eof(pair.init));
    free(big);
    pair_free(&pair);
}

static void test_refused_devices(void)
{
    /* Bob does not know alice: he refuses her, and she learns that she was refused. */
    struct pair pair;
    pair_new(&pair, share_a, 0);
    pair.resp_policy.count = 0;
    pair_run(&pair);
    CHECK_INT(-EACCES, sync_channel_error(pair.resp));
    CHECK_INT(SYNC_CHANNEL_FAILED, sync_channel_state(pair.resp));
    CHECK(strstr(sync_channel_errmsg(pair.resp), "not in the member list") != NULL);
    CHECK_INT(-ECONNREFUSED, sync_channel_error(pair.init));
    CHECK(strstr(sync_channel_errmsg(pair.init), "not a member") != NULL);
    uint8_t key[SYNC_PUBLIC_KEY_LEN];
    CHECK_INT(-ENOTCONN, sync_channel_peer(key, NULL, pair.init));
    CHECK_INT(-EACCES, sync_channel_send(pair.resp, "x", 1));
    CHECK_INT(-EACCES, sync_channel_feed(pair.resp, "x", 1));
    pair_free(&pair);

    /* Alice does not know bob (say, a relay she was not told about). */
    pair_new(&pair, share_a, 0);
    pair.init_policy.count = 0;
    pair_run(&pair);
    CHECK_INT(-EACCES, sync_channel_error(pair.init));
    CHECK_INT(-ECONNREFUSED, sync_channel_error(pair.resp));
    pair_free(&pair);

    /* Mallory, unknown to bob, tries. */
    struct sync_channel *evil, *resp;
    struct policy open_policy = {.allowed = {bob.public_key}, .count = 1};
    struct policy bob_policy = {.allowed = {alice.public_key}, .count = 1};
    CHECK_INT(0, sync_channel_new(&evil, SYNC_CHANNEL_INITIATOR, &mallory, share_a, policy_check,
                                  &open_policy));
    CHECK_INT(0, sync_channel_new(&resp, SYNC_CHANNEL_RESPONDER, &bob, share_a, policy_check,
                                  &bob_policy));
    struct link ab, ba;
    link_init(&ab, evil, resp, 0);
    link_init(&ba, resp, evil, 0);
    run(&ab, &ba);
    CHECK_INT(-EACCES, sync_channel_error(resp));
    CHECK_INT(-ECONNREFUSED, sync_channel_error(evil));
    sync_channel_free(evil);
    sync_channel_free(resp);
    crdt_buf_free(&ab.log);
    crdt_buf_free(&ba.log);

    /* Another share: bob serves share B only. */
    pair_new(&pair, share_b, 0);
    pair_run(&pair);
    CHECK_INT(-EXDEV, sync_channel_error(pair.resp));
    CHECK_INT(-ECONNREFUSED, sync_channel_error(pair.init));
    CHECK(strstr(sync_channel_errmsg(pair.init), "does not serve") != NULL);
    CHECK_INT(0, pair.resp_policy.asked);
    pair_free(&pair);
}

static void send_and_finish(struct sync_channel *channel, const char *text)
{
    int rc = sync_channel_send(channel, text, strlen(text));
    if (rc == 0)
        rc = sync_channel_finish(channel);
    (void)rc; /* a failed channel reports the same error again at sync_channel_feed_eof */
}

/*
 * Flips one byte at each offset of each direction's stream (the handshake,
 * a message each way, the final frames) in a fresh session, then lets the
 * session run to its end: some side must fail, and no side may ever receive
 * a message that was not sent.
 */
static void test_every_byte_tampered(void)
{
    size_t stream_len[2];
    {
        struct pair pair;
        pair_new(&pair, NULL, 0);
        pair_run(&pair);
        CHECK_INT(0, sync_channel_send(pair.init, "ping", 4));
        CHECK_INT(0, sync_channel_send(pair.resp, "pong", 4));
        CHECK_INT(0, sync_channel_finish(pair.init));
        CHECK_INT(0, sync_channel_finish(pair.resp));
        pair_run(&pair);
        stream_len[0] = pair.to_resp.log.len;
        stream_len[1] = pair.to_init.log.len;
        /* HELLO (86) + AUTH (89) + ping (4 + 17) + final (17), each with a 4-byte length. */
        CHECK_INT(4 + 86 + 4 + 89 + 4 + 21 + 4 + 17, stream_len[0]);
        CHECK_INT(4 + 154 + 4 + 21 + 4 + 17, stream_len[1]);
        pair_free(&pair);
    }
    const uint8_t masks[] = {0x01, 0x80};
    int undetected = 0;
    for (int direction = 0; direction < 2; direction++) {
        for (size_t m = 0; m < sizeof(masks); m++) {
            for (size_t offset = 0; offset < stream_len[direction]; offset++) {
                struct pair pair;
                pair_new(&pair, NULL, 0);
                struct link *tampered = direction == 0 ? &pair.to_resp : &pair.to_init;
                tampered->flip_at = offset;
                tampered->mask = masks[m];
                pair_run(&pair);
                /* Each side sends if it can; a failure here is the detection, seen at EOF. */
                send_and_finish(pair.init, "ping");
                send_and_finish(pair.resp, "pong");
                pair_run(&pair);
                int init_eof = sync_channel_feed_eof(pair.init);
                int resp_eof = sync_channel_feed_eof(pair.resp);
                uint8_t *got;
                size_t got_len;
                bool wrong = false;
                while (sync_channel_recv(&got, &got_len, pair.resp) == 0) {
                    wrong = wrong || got_len != 4 || memcmp(got, "ping", 4) != 0;
                    free(got);
                }
                while (sync_channel_recv(&got, &got_len, pair.init) == 0) {
                    wrong = wrong || got_len != 4 || memcmp(got, "pong", 4) != 0;
                    free(got);
                }
                test_checks++;
                if (wrong || (init_eof == 0 && resp_eof == 0)) {
                    test_failures++;
                    if (undetected++ < 10)
                        fprintf(stderr,
                                "tamper %s byte %zu ^ 0x%02x: undetected (wrong message: %d)\n",
                                direction == 0 ? "initiator->responder" : "responder->initiator",
                                offset, masks[m], wrong);
                }
                pair_free(&pair);
            }
        }
    }
}

static void test_bad_frames(void)
{
    struct pair pair;
    uint8_t prefix[4];

    /* Oversized frames are refused from the 4 length bytes alone, before any allocation. */
    pair_new(&pair, NULL, 0);
    pair_run(&pair);
    uint32_t too_big = SYNC_CHANNEL_FRAME_MAX + 1;
    for (int i = 0; i < 4; i++)
        prefix[i] = (uint8_t)(too_big >> (8 * i));
    CHECK_INT(-EMSGSIZE, sync_channel_feed(pair.resp, prefix, 4));
    memset(prefix, 0xff, 4);
    CHECK_INT(-EMSGSIZE, sync_channel_feed(pair.init, prefix, 4));
    pair_free(&pair);

    /* A frame shorter than the stream's overhead, and an empty one. */
    pair_new(&pair, NULL, 0);
    pair_run(&pair);
    uint8_t short_frame[4 + 16] = {16};
    CHECK_INT(-EMSGSIZE, sync_channel_feed(pair.resp, short_frame, sizeof(short_frame)));
    uint8_t empty_frame[4] = {0};
    CHECK_INT(-EMSGSIZE, sync_channel_feed(pair.init, empty_frame, 4));
    pair_free(&pair);

    /* During the handshake, anything over 256 bytes, or empty. */
    struct sync_channel *resp;
    struct policy policy = {.allowed = {alice.public_key}, .count = 1};
    CHECK_INT(0,
              sync_channel_new(&resp, SYNC_CHANNEL_RESPONDER, &bob, NULL, policy_check, &policy));
    uint8_t hs_big[4] = {0x01, 0x01, 0, 0};
    CHECK_INT(-EMSGSIZE, sync_channel_feed(resp, hs_big, 4));
    sync_channel_free(resp);
    CHECK_INT(0,
              sync_channel_new(&resp, SYNC_CHANNEL_RESPONDER, &bob, NULL, policy_check, &policy));
    CHECK_INT(-EMSGSIZE, sync_channel_feed(resp, empty_frame, 4));
    sync_channel_free(resp);

    /* A hello with a low-order ephemeral key (all zeros). */
    CHECK_INT(0,
              sync_channel_new(&resp, SYNC_CHANNEL_RESPONDER, &bob, NULL, policy_check, &policy));
    uint8_t hello[4 + 86] = {86, 0, 0, 0, 1, 'w', 'e', 'f', 't', 1};
    memcpy(hello + 4 + 6, share_a, SYNC_SHARE_ID_LEN);
    memcpy(hello + 4 + 6 + 16 + 32, alice.public_key, 32);
    CHECK_INT(-EPROTO, sync_channel_feed(resp, hello, sizeof(hello)));
    sync_channel_free(resp);

    /* Another protocol version: refused, and the initiator is told why. */
    CHECK_INT(0,
              sync_channel_new(&resp, SYNC_CHANNEL_RESPONDER, &bob, NULL, policy_check, &policy));
    hello[9] = 2;
    CHECK_INT(-EPROTONOSUPPORT, sync_channel_feed(resp, hello, sizeof(hello)));
    size_t out_len;
    const uint8_t *out = sync_channel_output(&out_len, resp);
    CHECK_INT(6, out_len);
    CHECK(out_len == 6 && out[4] == 4 && out[5] == 3);
    sync_channel_free(resp);
}

static void test_truncation_and_tags(void)
{
    struct pair pair;

    /* The stream ends in the middle of a frame. */
    pair_new(&pair, NULL, 0);
    pair_run(&pair);
    CHECK_INT(0, sync_channel_send(pair.init, "truncated", 9));
    size_t len;
    const uint8_t *out = sync_channel_output(&len, pair.init);
    CHECK_INT(0, sync_channel_feed(pair.resp, out, len - 1));
    CHECK_INT(-ECONNRESET, sync_channel_feed_eof(pair.resp));
    CHECK(strstr(sync_channel_errmsg(pair.resp), "middle of a frame") != NULL);
    pair_free(&pair);

    /* It ends between frames, but without the final frame: truncated all the same. */
    pair_new(&pair, NULL, 0);
    pair_run(&pair);
    CHECK_INT(0, sync_channel_send(pair.init, "one", 3));
    pair_run(&pair);
    EXPECT_MESSAGE(pair.resp, (const uint8_t *)"one", 3);
    CHECK_INT(-ECONNRESET, sync_channel_feed_eof(pair.resp));
    CHECK(strstr(sync_channel_errmsg(pair.resp), "before the peer's final frame") != NULL);
    pair_free(&pair);

    /* And during the handshake. */
    pair_new(&pair, NULL, 0);
    CHECK_INT(-ECONNRESET, sync_channel_feed_eof(pair.init));
    pair_free(&pair);

    /* Tags sync_channel_send never uses. */
    const unsigned char tags[] = {crypto_secretstream_xchacha20poly1305_TAG_PUSH,
                                  crypto_secretstream_xchacha20poly1305_TAG_REKEY,
                                  crypto_secretstream_xchacha20poly1305_TAG_FINAL};
    for (size_t i = 0; i < sizeof(tags); i++) {
        pair_new(&pair, NULL, 0);
        pair_run(&pair);
        /* A final frame must be empty; the others are never valid. */
        CHECK_INT(0, sync__channel_send_tag(pair.init, "tagged", 6, tags[i]));
        pair_run(&pair);
        CHECK_INT(-EPROTO, sync_channel_error(pair.resp));
        CHECK(strstr(sync_channel_errmsg(pair.resp), "unexpected stream tag") != NULL);
        pair_free(&pair);
    }

    /* Data after the final frame. */
    pair_new(&pair, NULL, 0);
    pair_run(&pair);
    CHECK_INT(0, sync__channel_send_tag(pair.init, NULL, 0,
                                        crypto_secretstream_xchacha20poly1305_TAG_FINAL));
    CHECK_INT(0, sync__channel_send_tag(pair.init, "more", 4,
                                        crypto_secretstream_xchacha20poly1305_TAG_MESSAGE));
    pair_run(&pair);
    CHECK_INT(-EPROTO, sync_channel_error(pair.resp));
    CHECK(strstr(sync_channel_errmsg(pair.resp), "after the peer's final frame") != NULL);
    pair_free(&pair);

    /* Two frames swapped: the stream's counter catches it. */
    pair_new(&pair, NULL, 0);
    pair_run(&pair);
    CHECK_INT(0, sync_channel_send(pair.init, "first", 5));
    out = sync_channel_output(&len, pair.init);
    uint8_t first[4 + 5 + 17];
    CHECK_INT(sizeof(first), len);
    memcpy(first, out, sizeof(first));
    sync_channel_output_consume(pair.init, len);
    CHECK_INT(0, sync_channel_send(pair.init, "other", 5));
    out = sync_channel_output(&len, pair.init);
    CHECK_INT(-EBADMSG, sync_channel_feed(pair.resp, out, len));
    pair_free(&pair);
}

/* Handshake messages from another session, or one's own, are refused. */
static void test_replayed_handshake(void)
{
    struct pair old;
    pair_new(&old, share_a, 0);
    pair_run(&old);
    CHECK_INT(SYNC_CHANNEL_OPEN, sync_channel_state(old.init));
    /* Streams: to_resp = HELLO (90) + AUTH (93); to_init = REPLY (158). */
    const uint8_t *old_hello = old.to_resp.log.data, *old_auth = old_hello + 90;
    const uint8_t *old_reply = old.to_init.log.data;

    /* The old REPLY to a new initiator: signed over another transcript. */
    struct pair fresh;
    pair_new(&fresh, share_a, 0);
    CHECK_INT(-EKEYREJECTED, sync_channel_feed(fresh.init, old_reply, 158));
    CHECK(strstr(sync_channel_errmsg(fresh.init), "bad handshake signature") != NULL);
    pair_free(&fresh);

    /* The old HELLO and AUTH to a new responder: it answers, then rejects the old signature. */
    pair_new(&fresh, share_a, 0);
    CHECK_INT(0, sync_channel_feed(fresh.resp, old_hello, 90));
    CHECK_INT(-EKEYREJECTED, sync_channel_feed(fresh.resp, old_auth, 93));
    pair_free(&fresh);

    /* An initiator fed its own hello (a reflection). */
    pair_new(&fresh, share_a, 0);
    size_t len;
    const uint8_t *own = sync_channel_output(&len, fresh.init);
    uint8_t copy[90];
    memcpy(copy, own, sizeof(copy));
    CHECK_INT(-EBADMSG, sync_channel_feed(fresh.init, copy, sizeof(copy)));
    pair_free(&fresh);
    pair_free(&old);
}

static void test_bad_arguments(void)
{
    struct sync_channel *channel = (struct sync_channel *)1;
    struct policy policy = {0};
    CHECK_INT(-EINVAL, sync_channel_new(&channel, SYNC_CHANNEL_INITIATOR, &alice, NULL,
                                        policy_check, &policy));
    CHECK(channel == NULL);
    CHECK_INT(-EINVAL,
              sync_channel_new(&channel, SYNC_CHANNEL_RESPONDER, &alice, NULL, NULL, &policy));
    struct sync_identity mismatched = alice;
    memcpy(mismatched.public_key, bob.public_key, SYNC_PUBLIC_KEY_LEN);
    CHECK_INT(-EINVAL, sync_channel_new(&channel, SYNC_CHANNEL_RESPONDER, &mismatched, NULL,
                                        policy_check, &policy));
    CHECK_INT(-EINVAL, sync_channel_new(&channel, (enum sync_channel_role)7, &alice, share_a,
                                        policy_check, &policy));
    sync_channel_free(NULL);
}

/*
 * Golden digests of both byte streams of a fixed session (seeded randomness,
 * fixed identities): if they change, the channel's wire format changed, and
 * SYNC_CHANNEL_VERSION must change with it.
 */
static const char golden_to_resp[] =
    "6ee0d23fd9e47199f8c556e7e647cfc51037d59540b5a020f71b88a64c9df3d1";
static const char golden_to_init[] =
    "ab9fec784cb98467ab4409cba4df1865524aa30f56b95c2148d081ab8ec519e3";

static void test_golden(void)
{
    det_state = 0x5eed;
    struct pair pair;
    pair_new(&pair, NULL, 0);
    pair_run(&pair);
    CHECK_INT(0, sync_channel_send(pair.init, "golden ping", 11));
    CHECK_INT(0, sync_channel_send(pair.resp, "golden pong", 11));
    CHECK_INT(0, sync_channel_finish(pair.init));
    CHECK_INT(0, sync_channel_finish(pair.resp));
    pair_run(&pair);
    const struct crdt_buf *logs[2] = {&pair.to_resp.log, &pair.to_init.log};
    const char *golden[2] = {golden_to_resp, golden_to_init};
    for (int i = 0; i < 2; i++) {
        uint8_t digest[32];
        char hex[65];
        crypto_generichash(digest, sizeof(digest), logs[i]->data, logs[i]->len, NULL, 0);
        util_hex(hex, digest, sizeof(digest));
        test_checks++;
        if (strcmp(hex, golden[i]) != 0) {
            test_failures++;
            fprintf(stderr, "golden channel stream %d changed: %s\n", i, hex);
        }
    }
    /* The first frame is the hello, byte for byte from the README's layout. */
    const uint8_t *hello = pair.to_resp.log.data;
    CHECK(hello[0] == 86 && hello[1] == 0 && hello[4] == 1 && memcmp(hello + 5, "weft", 4) == 0);
    CHECK(hello[9] == SYNC_CHANNEL_VERSION);
    CHECK(memcmp(hello + 10, share_a, SYNC_SHARE_ID_LEN) == 0);
    CHECK(memcmp(hello + 58, alice.public_key, 32) == 0);
    pair_free(&pair);
}

int main(void)
{
    /* Before sodium_init: libsodium takes its randomness from the seeded generator. */
    if (randombytes_set_implementation(&det_impl) != 0 || sync_init() != 0)
        return 1;
    util_identity(&alice, 1);
    util_identity(&bob, 2);
    util_identity(&mallory, 3);
    memset(share_a, 0xa0, sizeof(share_a));
    memset(share_b, 0xb0, sizeof(share_b));
    test_golden();
    test_handshake_and_messages(0);
    test_handshake_and_messages(1); /* every byte its own feed, the largest messages too */
    test_handshake_and_messages(SIZE_MAX);
    test_refused_devices();
    test_every_byte_tampered();
    test_bad_frames();
    test_truncation_and_tags();
    test_replayed_handshake();
    test_bad_arguments();
    return test_finish("sync-channel");
}
