/* sync/channel: see channel.h; the byte format is in README.md, "Channel". */
#include "channel.h"
#include "channel_internal.h"

#include "crdt/codec.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(crypto_secretstream_xchacha20poly1305_ABYTES == SYNC_CHANNEL_FRAME_OVERHEAD,
               "frame overhead");
_Static_assert(crypto_kx_PUBLICKEYBYTES == 32 && crypto_kx_SESSIONKEYBYTES == 32, "kx sizes");
_Static_assert(crypto_secretstream_xchacha20poly1305_HEADERBYTES == 24, "stream header");

#define HEADER_LEN 24 /* secretstream header */
#define SIG_LEN    64
#define KEY_LEN    32

/* Handshake frames (cleartext). */
enum {
    HS_HELLO = 1,  /* initiator: magic, version, share id, ephemeral key, identity key */
    HS_REPLY = 2,  /* responder: version, ephemeral key, identity key, stream header, signature */
    HS_AUTH = 3,   /* initiator: stream header, signature */
    HS_REFUSE = 4, /* either: a refusal code, then the connection closes */
};
#define HELLO_LEN  (1 + 4 + 1 + SYNC_SHARE_ID_LEN + KEY_LEN + KEY_LEN) /* 86 */
#define REPLY_LEN  (1 + 1 + KEY_LEN + KEY_LEN + HEADER_LEN + SIG_LEN)  /* 154 */
#define AUTH_LEN   (1 + HEADER_LEN + SIG_LEN)                          /* 89 */
#define REFUSE_LEN 2
/* No handshake frame is longer; anything bigger is refused before allocating. */
#define HANDSHAKE_FRAME_MAX 256

static const uint8_t hello_magic[4] = {'w', 'e', 'f', 't'};
static const char transcript_label[] = "weft-sync-v1 channel";

enum refuse_code {
    REFUSE_NOT_MEMBER = 1,
    REFUSE_WRONG_SHARE = 2,
    REFUSE_VERSION = 3,
};

/* Where the handshake is. */
enum hs_step {
    STEP_WAIT_REPLY, /* initiator: HELLO sent */
    STEP_WAIT_HELLO, /* responder: nothing yet */
    STEP_WAIT_AUTH,  /* responder: REPLY sent */
    STEP_DONE,
};

struct message {
    struct message *next;
    uint8_t *data;
    size_t len;
};

struct sync_channel {
    enum sync_channel_role role;
    enum sync_channel_state state;
    enum hs_step step;
    int error;     /* sticky, 0 unless FAILED */
    bool finished; /* we sent our final frame */
    struct sync_identity identity;
    bool share_known; /* an initiator's, a responder's given one, or the one HELLO named */
    uint8_t share_id[SYNC_SHARE_ID_LEN];
    sync_peer_fn peer_fn;
    void *peer_ctx;
    bool peer_verified;
    uint8_t peer_key[SYNC_PUBLIC_KEY_LEN];
    uint8_t eph_public[KEY_LEN], eph_secret[KEY_LEN];
    uint8_t peer_eph[KEY_LEN];
    uint8_t transcript[32];
    uint8_t rx_key[KEY_LEN];         /* until the peer's stream header is known */
    uint8_t push_header[HEADER_LEN]; /* ours, as sent */
    crypto_secretstream_xchacha20poly1305_state push, pull;

    /* Input framing: the 4-byte length, then the frame (copied only when split across feeds). */
    uint8_t len_bytes[4];
    size_t len_have;
    size_t frame_len; /* valid once len_have == 4 */
    uint8_t *frame;
    size_t frame_have, frame_cap;

    struct crdt_buf out;
    size_t out_start; /* out.data[out_start..out.len) is unwritten */

    struct message *inbox_head, *inbox_tail;
    size_t inbox_bytes;
    char errmsg[256];
};

static int fail(struct sync_channel *channel, int error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct sync_channel *channel, int error, const char *fmt, ...)
{
    if (channel->state == SYNC_CHANNEL_FAILED)
        return channel->error;
    channel->state = SYNC_CHANNEL_FAILED;
    channel->error = error;
    va_list args;
    va_start(args, fmt);
    vsnprintf(channel->errmsg, sizeof(channel->errmsg), fmt, args);
    va_end(args);
    /* Nothing secret is needed after a failure. */
    sodium_memzero(channel->eph_secret, sizeof(channel->eph_secret));
    sodium_memzero(channel->rx_key, sizeof(channel->rx_key));
    sodium_memzero(&channel->push, sizeof(channel->push));
    sodium_memzero(&channel->pull, sizeof(channel->pull));
    return error;
}

/* The first 8 bytes of a key in hex, to name a peer in messages. */
static const char *key_hex(char out[17], const uint8_t key[SYNC_PUBLIC_KEY_LEN])
{
    sodium_bin2hex(out, 17, key, 8);
    return out;
}

static void put_frame(struct sync_channel *channel, const uint8_t *payload, size_t len)
{
    uint8_t prefix[4];
    for (int i = 0; i < 4; i++)
        prefix[i] = (uint8_t)(len >> (8 * i));
    crdt_buf_put(&channel->out, prefix, 4);
    crdt_buf_put(&channel->out, payload, len);
}

static void send_refuse(struct sync_channel *channel, enum refuse_code code)
{
    uint8_t frame[REFUSE_LEN] = {HS_REFUSE, (uint8_t)code};
    put_frame(channel, frame, sizeof(frame));
}

int sync_channel_new(struct sync_channel **out, enum sync_channel_role role,
                     const struct sync_identity *identity,
                     const uint8_t share_id[SYNC_SHARE_ID_LEN], sync_peer_fn peer, void *peer_ctx)
{
    *out = NULL;
    if (!identity || !peer || (role != SYNC_CHANNEL_INITIATOR && role != SYNC_CHANNEL_RESPONDER) ||
        (role == SYNC_CHANNEL_INITIATOR && !share_id))
        return -EINVAL;
    /* libsodium's secret key ends with its public key: a mismatched pair is a caller bug. */
    if (memcmp(identity->secret_key + SYNC_SEED_LEN, identity->public_key, SYNC_PUBLIC_KEY_LEN))
        return -EINVAL;
    if (sodium_init() < 0)
        return -EIO;
    struct sync_channel *channel = calloc(1, sizeof(*channel));
    if (!channel)
        return -ENOMEM;
    channel->role = role;
    channel->state = SYNC_CHANNEL_HANDSHAKE;
    channel->identity = *identity;
    channel->peer_fn = peer;
    channel->peer_ctx = peer_ctx;
    if (share_id) {
        channel->share_known = true;
        memcpy(channel->share_id, share_id, SYNC_SHARE_ID_LEN);
    }
    crypto_kx_keypair(channel->eph_public, channel->eph_secret);
    if (role == SYNC_CHANNEL_INITIATOR) {
        uint8_t hello[HELLO_LEN], *pos = hello;
        *pos++ = HS_HELLO;
        memcpy(pos, hello_magic, 4), pos += 4;
        *pos++ = SYNC_CHANNEL_VERSION;
        memcpy(pos, channel->share_id, SYNC_SHARE_ID_LEN), pos += SYNC_SHARE_ID_LEN;
        memcpy(pos, channel->eph_public, KEY_LEN), pos += KEY_LEN;
        memcpy(pos, identity->public_key, KEY_LEN);
        put_frame(channel, hello, sizeof(hello));
        channel->step = STEP_WAIT_REPLY;
    } else {
        channel->step = STEP_WAIT_HELLO;
    }
    if (crdt_buf_status(&channel->out)) {
        sync_channel_free(channel);
        return -ENOMEM;
    }
    *out = channel;
    return 0;
}

void sync_channel_free(struct sync_channel *channel)
{
    if (!channel)
        return;
    struct message *message = channel->inbox_head;
    while (message) {
        struct message *next = message->next;
        free(message->data);
        free(message);
        message = next;
    }
    free(channel->frame);
    crdt_buf_free(&channel->out);
    sodium_memzero(channel, sizeof(*channel));
    free(channel);
}

/*
 * The transcript hash: BLAKE2b-256 over the label, the share id, then the
 * initiator's ephemeral and identity keys and the responder's. Both
 * signatures cover it, so each side's signature binds both identities to
 * this session's ephemeral keys (no misbinding, no replay into another session).
 */
static void compute_transcript(struct sync_channel *channel, const uint8_t *init_eph,
                               const uint8_t *init_id, const uint8_t *resp_eph,
                               const uint8_t *resp_id)
{
    crypto_generichash_state state;
    crypto_generichash_init(&state, NULL, 0, sizeof(channel->transcript));
    crypto_generichash_update(&state, (const uint8_t *)transcript_label,
                              sizeof(transcript_label) - 1);
    crypto_generichash_update(&state, channel->share_id, SYNC_SHARE_ID_LEN);
    crypto_generichash_update(&state, init_eph, KEY_LEN);
    crypto_generichash_update(&state, init_id, KEY_LEN);
    crypto_generichash_update(&state, resp_eph, KEY_LEN);
    crypto_generichash_update(&state, resp_id, KEY_LEN);
    crypto_generichash_final(&state, channel->transcript, sizeof(channel->transcript));
}

/*
 * What a side signs: its role letter, the transcript hash, and the stream
 * headers sent so far (the responder's; then the initiator's), so a changed
 * header is caught in the handshake rather than at the first message.
 */
static size_t signed_message(uint8_t out[1 + 32 + 2 * HEADER_LEN],
                             const struct sync_channel *channel, char role,
                             const uint8_t *resp_header, const uint8_t *init_header)
{
    size_t len = 0;
    out[len++] = (uint8_t)role;
    memcpy(out + len, channel->transcript, 32), len += 32;
    memcpy(out + len, resp_header, HEADER_LEN), len += HEADER_LEN;
    if (init_header)
        memcpy(out + len, init_header, HEADER_LEN), len += HEADER_LEN;
    return len;
}

/* Session keys from crypto_kx, each bound to the transcript by a keyed BLAKE2b. */
static int derive_keys(struct sync_channel *channel, uint8_t rx[KEY_LEN], uint8_t tx[KEY_LEN])
{
    uint8_t kx_rx[KEY_LEN], kx_tx[KEY_LEN];
    int rc = channel->role == SYNC_CHANNEL_INITIATOR
                 ? crypto_kx_client_session_keys(kx_rx, kx_tx, channel->eph_public,
                                                 channel->eph_secret, channel->peer_eph)
                 : crypto_kx_server_session_keys(kx_rx, kx_tx, channel->eph_public,
                                                 channel->eph_secret, channel->peer_eph);
    sodium_memzero(channel->eph_secret, sizeof(channel->eph_secret));
    if (rc != 0)
        return -1; /* the peer's ephemeral key is a low-order point */
    crypto_generichash(rx, KEY_LEN, channel->transcript, 32, kx_rx, KEY_LEN);
    crypto_generichash(tx, KEY_LEN, channel->transcript, 32, kx_tx, KEY_LEN);
    sodium_memzero(kx_rx, sizeof(kx_rx));
    sodium_memzero(kx_tx, sizeof(kx_tx));
    return 0;
}

/* Asks the caller whether the peer may connect; on refusal fails with -EACCES. */
static int check_peer(struct sync_channel *channel, const uint8_t *peer_key)
{
    char why[128] = "";
    char hex[17];
    if (channel->peer_fn(channel->peer_ctx, channel->share_id, peer_key, why, sizeof(why)) != 0) {
        why[sizeof(why) - 1] = '\0';
        send_refuse(channel, REFUSE_NOT_MEMBER);
        return fail(channel, -EACCES, "refused device %s: %s", key_hex(hex, peer_key),
                    why[0] ? why : "not a member of the share");
    }
    memcpy(channel->peer_key, peer_key, SYNC_PUBLIC_KEY_LEN);
    return 0;
}

static int on_refuse(struct sync_channel *channel, const uint8_t *frame, size_t len)
{
    if (len != REFUSE_LEN)
        return fail(channel, -EBADMSG, "malformed refusal from the peer");
    const char *why = frame[1] == REFUSE_NOT_MEMBER    ? "this device is not a member of the share"
                      : frame[1] == REFUSE_WRONG_SHARE ? "the peer does not serve this share"
                      : frame[1] == REFUSE_VERSION     ? "the peer speaks another protocol version"
                                                       : "unknown reason";
    return fail(channel, -ECONNREFUSED, "the peer refused the connection: %s", why);
}

/* Responder: the initiator's HELLO. */
static int on_hello(struct sync_channel *channel, const uint8_t *frame, size_t len)
{
    if (len != HELLO_LEN || frame[0] != HS_HELLO || memcmp(frame + 1, hello_magic, 4) != 0)
        return fail(channel, -EBADMSG, "malformed handshake: expected the initiator's hello");
    if (frame[5] != SYNC_CHANNEL_VERSION) {
        send_refuse(channel, REFUSE_VERSION);
        return fail(channel, -EPROTONOSUPPORT, "the peer speaks protocol version %u, we speak %u",
                    frame[5], SYNC_CHANNEL_VERSION);
    }
    const uint8_t *share = frame + 6, *eph = share + SYNC_SHARE_ID_LEN, *identity = eph + KEY_LEN;
    if (channel->share_known && memcmp(share, channel->share_id, SYNC_SHARE_ID_LEN) != 0) {
        send_refuse(channel, REFUSE_WRONG_SHARE);
        return fail(channel, -EXDEV, "the initiator asked for another share");
    }
    memcpy(channel->share_id, share, SYNC_SHARE_ID_LEN);
    channel->share_known = true;
    int rc = check_peer(channel, identity);
    if (rc)
        return rc;
    memcpy(channel->peer_eph, eph, KEY_LEN);
    compute_transcript(channel, eph, identity, channel->eph_public, channel->identity.public_key);
    uint8_t tx[KEY_LEN];
    if (derive_keys(channel, channel->rx_key, tx) != 0)
        return fail(channel, -EPROTO, "the initiator's ephemeral key is invalid");
    crypto_secretstream_xchacha20poly1305_init_push(&channel->push, channel->push_header, tx);
    sodium_memzero(tx, sizeof(tx));

    uint8_t reply[REPLY_LEN], *pos = reply;
    *pos++ = HS_REPLY;
    *pos++ = SYNC_CHANNEL_VERSION;
    memcpy(pos, channel->eph_public, KEY_LEN), pos += KEY_LEN;
    memcpy(pos, channel->identity.public_key, KEY_LEN), pos += KEY_LEN;
    memcpy(pos, channel->push_header, HEADER_LEN), pos += HEADER_LEN;
    uint8_t to_sign[1 + 32 + 2 * HEADER_LEN];
    size_t sign_len = signed_message(to_sign, channel, 'R', channel->push_header, NULL);
    crypto_sign_detached(pos, NULL, to_sign, sign_len, channel->identity.secret_key);
    put_frame(channel, reply, sizeof(reply));
    channel->step = STEP_WAIT_AUTH;
    return 0;
}

/* Initiator: the responder's REPLY. */
static int on_reply(struct sync_channel *channel, const uint8_t *frame, size_t len)
{
    if (len != REPLY_LEN || frame[0] != HS_REPLY)
        return fail(channel, -EBADMSG, "malformed handshake: expected the responder's reply");
    if (frame[1] != SYNC_CHANNEL_VERSION)
        return fail(channel, -EPROTONOSUPPORT, "the peer speaks protocol version %u, we speak %u",
                    frame[1], SYNC_CHANNEL_VERSION);
    const uint8_t *eph = frame + 2, *identity = eph + KEY_LEN, *header = identity + KEY_LEN,
                  *sig = header + HEADER_LEN;
    int rc = check_peer(channel, identity);
    if (rc)
        return rc;
    memcpy(channel->peer_eph, eph, KEY_LEN);
    compute_transcript(channel, channel->eph_public, channel->identity.public_key, eph, identity);
    uint8_t to_sign[1 + 32 + 2 * HEADER_LEN];
    size_t sign_len = signed_message(to_sign, channel, 'R', header, NULL);
    char hex[17];
    if (crypto_sign_verify_detached(sig, to_sign, sign_len, identity) != 0)
        return fail(channel, -EKEYREJECTED, "bad handshake signature from device %s",
                    key_hex(hex, identity));
    uint8_t rx[KEY_LEN], tx[KEY_LEN];
    if (derive_keys(channel, rx, tx) != 0)
        return fail(channel, -EPROTO, "the responder's ephemeral key is invalid");
    rc = crypto_secretstream_xchacha20poly1305_init_pull(&channel->pull, header, rx);
    crypto_secretstream_xchacha20poly1305_init_push(&channel->push, channel->push_header, tx);
    sodium_memzero(rx, sizeof(rx));
    sodium_memzero(tx, sizeof(tx));
    if (rc != 0)
        return fail(channel, -EBADMSG, "invalid stream header from the responder");

    uint8_t auth[AUTH_LEN];
    auth[0] = HS_AUTH;
    memcpy(auth + 1, channel->push_header, HEADER_LEN);
    sign_len = signed_message(to_sign, channel, 'I', header, channel->push_header);
    crypto_sign_detached(auth + 1 + HEADER_LEN, NULL, to_sign, sign_len,
                         channel->identity.secret_key);
    put_frame(channel, auth, sizeof(auth));
    channel->peer_verified = true;
    channel->step = STEP_DONE;
    channel->state = SYNC_CHANNEL_OPEN;
    return 0;
}

/* Responder: the initiator's AUTH. */
static int on_auth(struct sync_channel *channel, const uint8_t *frame, size_t len)
{
    if (len != AUTH_LEN || frame[0] != HS_AUTH)
        return fail(channel, -EBADMSG, "malformed handshake: expected the initiator's signature");
    const uint8_t *header = frame + 1, *sig = header + HEADER_LEN;
    uint8_t to_sign[1 + 32 + 2 * HEADER_LEN];
    size_t sign_len = signed_message(to_sign, channel, 'I', channel->push_header, header);
    char hex[17];
    if (crypto_sign_verify_detached(sig, to_sign, sign_len, channel->peer_key) != 0)
        return fail(channel, -EKEYREJECTED, "bad handshake signature from device %s",
                    key_hex(hex, channel->peer_key));
    int rc =
        crypto_secretstream_xchacha20poly1305_init_pull(&channel->pull, header, channel->rx_key);
    sodium_memzero(channel->rx_key, sizeof(channel->rx_key));
    if (rc != 0)
        return fail(channel, -EBADMSG, "invalid stream header from the initiator");
    channel->peer_verified = true;
    channel->step = STEP_DONE;
    channel->state = SYNC_CHANNEL_OPEN;
    return 0;
}

static int on_handshake_frame(struct sync_channel *channel, const uint8_t *frame, size_t len)
{
    switch (channel->step) {
    case STEP_WAIT_REPLY:
        return frame[0] == HS_REFUSE ? on_refuse(channel, frame, len)
                                     : on_reply(channel, frame, len);
    case STEP_WAIT_HELLO:
        return on_hello(channel, frame, len);
    case STEP_WAIT_AUTH:
        return frame[0] == HS_REFUSE ? on_refuse(channel, frame, len)
                                     : on_auth(channel, frame, len);
    case STEP_DONE:
        break;
    }
    return fail(channel, -EPROTO, "handshake frame after the handshake");
}

static int on_data_frame(struct sync_channel *channel, const uint8_t *frame, size_t len)
{
    if (channel->state == SYNC_CHANNEL_CLOSED)
        return fail(channel, -EPROTO, "data after the peer's final frame");
    size_t plain_len = len - SYNC_CHANNEL_FRAME_OVERHEAD;
    struct message *message = calloc(1, sizeof(*message));
    uint8_t *data = malloc(plain_len ? plain_len : 1);
    if (!message || !data) {
        free(message);
        free(data);
        return fail(channel, -ENOMEM, "out of memory");
    }
    unsigned long long got = 0;
    unsigned char tag = 0;
    if (crypto_secretstream_xchacha20poly1305_pull(&channel->pull, data, &got, &tag, frame, len,
                                                   NULL, 0) != 0) {
        free(message);
        free(data);
        return fail(channel, -EBADMSG, "a frame failed decryption (altered, or out of order)");
    }
    if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL && got == 0) {
        free(message);
        free(data);
        channel->state = SYNC_CHANNEL_CLOSED;
        return 0;
    }
    if (tag != crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) {
        free(message);
        free(data);
        return fail(channel, -EPROTO, "unexpected stream tag %u", tag);
    }
    message->data = data;
    message->len = plain_len;
    if (channel->inbox_tail)
        channel->inbox_tail->next = message;
    else
        channel->inbox_head = message;
    channel->inbox_tail = message;
    channel->inbox_bytes += plain_len;
    return 0;
}

static int on_frame(struct sync_channel *channel, const uint8_t *frame, size_t len)
{
    if (channel->step != STEP_DONE)
        return on_handshake_frame(channel, frame, len);
    return on_data_frame(channel, frame, len);
}

/* Checks a frame length before anything is allocated for it. */
static int check_frame_len(struct sync_channel *channel, size_t len)
{
    if (channel->step != STEP_DONE) {
        if (len == 0 || len > HANDSHAKE_FRAME_MAX)
            return fail(channel, -EMSGSIZE, "handshake frame of %zu bytes", len);
    } else if (len < SYNC_CHANNEL_FRAME_OVERHEAD || len > SYNC_CHANNEL_FRAME_MAX) {
        return fail(channel, -EMSGSIZE, "frame of %zu bytes (limit %u)", len,
                    SYNC_CHANNEL_FRAME_MAX);
    }
    return 0;
}

int sync_channel_feed(struct sync_channel *channel, const void *bytes, size_t len)
{
    if (len == 0 || !bytes)
        return len ? -EINVAL : channel->error;
    const uint8_t *pos = bytes, *end = pos + len;
    while (pos < end) {
        if (channel->state == SYNC_CHANNEL_FAILED)
            return channel->error;
        if (channel->len_have < 4) {
            channel->len_bytes[channel->len_have++] = *pos++;
            if (channel->len_have < 4)
                continue;
            size_t frame_len = 0;
            for (int i = 0; i < 4; i++)
                frame_len |= (size_t)channel->len_bytes[i] << (8 * i);
            int rc = check_frame_len(channel, frame_len);
            if (rc)
                return rc;
            channel->frame_len = frame_len;
            channel->frame_have = 0;
        }
        size_t need = channel->frame_len - channel->frame_have;
        size_t avail = (size_t)(end - pos);
        int rc;
        if (channel->frame_have == 0 && avail >= need) {
            /* The whole frame is here: use it in place. */
            rc = on_frame(channel, pos, need);
            pos += need;
        } else {
            if (channel->frame_cap < channel->frame_len) {
                uint8_t *grown = realloc(channel->frame, channel->frame_len);
                if (!grown)
                    return fail(channel, -ENOMEM, "out of memory");
                channel->frame = grown;
                channel->frame_cap = channel->frame_len;
            }
            size_t take = avail < need ? avail : need;
            memcpy(channel->frame + channel->frame_have, pos, take);
            channel->frame_have += take;
            pos += take;
            if (channel->frame_have < channel->frame_len)
                break;
            rc = on_frame(channel, channel->frame, channel->frame_len);
        }
        channel->len_have = 0;
        channel->frame_have = 0;
        if (rc)
            return rc;
    }
    if (crdt_buf_status(&channel->out))
        return fail(channel, -ENOMEM, "out of memory");
    return channel->error;
}

int sync_channel_feed_eof(struct sync_channel *channel)
{
    if (channel->state == SYNC_CHANNEL_FAILED)
        return channel->error;
    if (channel->state == SYNC_CHANNEL_CLOSED && channel->len_have == 0)
        return 0;
    if (channel->len_have > 0)
        return fail(channel, -ECONNRESET, "the connection ended in the middle of a frame");
    return fail(channel, -ECONNRESET, "the connection ended before the peer's final frame");
}

const uint8_t *sync_channel_output(size_t *len, const struct sync_channel *channel)
{
    *len = channel->out.len - channel->out_start;
    return channel->out.data ? channel->out.data + channel->out_start : NULL;
}

void sync_channel_output_consume(struct sync_channel *channel, size_t len)
{
    size_t pending = channel->out.len - channel->out_start;
    channel->out_start += len < pending ? len : pending;
    if (channel->out_start == channel->out.len) {
        channel->out.len = 0;
        channel->out_start = 0;
    } else if (channel->out_start >= (1u << 20) &&
               channel->out_start >= channel->out.len - channel->out_start) {
        /*
         * Reclaim the written front so a slow writer does not make the buffer
         * grow without end; only once it is at least as big as what is left,
         * so each byte moves once on average (moving the rest after every
         * MiB written copied a 4 MiB queue four times over).
         */
        memmove(channel->out.data, channel->out.data + channel->out_start,
                channel->out.len - channel->out_start);
        channel->out.len -= channel->out_start;
        channel->out_start = 0;
    }
}

/* Encrypts one frame into the output; no check of `finished` (the callers do that). */
static int push_frame(struct sync_channel *channel, const void *message, size_t len,
                      unsigned char tag)
{
    if (channel->state == SYNC_CHANNEL_FAILED)
        return channel->error;
    if (channel->state == SYNC_CHANNEL_HANDSHAKE)
        return -ENOTCONN;
    if (len > SYNC_CHANNEL_MESSAGE_MAX)
        return -EMSGSIZE;
    if (len && !message)
        return -EINVAL;
    size_t frame_len = len + SYNC_CHANNEL_FRAME_OVERHEAD;
    if (crdt_buf_reserve(&channel->out, 4 + frame_len))
        return -ENOMEM;
    uint8_t *prefix = channel->out.data + channel->out.len;
    for (int i = 0; i < 4; i++)
        prefix[i] = (uint8_t)(frame_len >> (8 * i));
    crypto_secretstream_xchacha20poly1305_push(&channel->push, prefix + 4, NULL, message, len, NULL,
                                               0, tag);
    channel->out.len += 4 + frame_len;
    return 0;
}

int sync__channel_send_tag(struct sync_channel *channel, const void *message, size_t len,
                           unsigned char tag)
{
    return push_frame(channel, message, len, tag);
}

int sync_channel_send(struct sync_channel *channel, const void *message, size_t len)
{
    if (channel->finished && channel->state != SYNC_CHANNEL_FAILED)
        return -EPIPE;
    return push_frame(channel, message, len, crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
}

int sync_channel_finish(struct sync_channel *channel)
{
    if (channel->finished && channel->state != SYNC_CHANNEL_FAILED)
        return -EPIPE;
    int rc = push_frame(channel, NULL, 0, crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    if (!rc)
        channel->finished = true;
    return rc;
}

int sync_channel_recv(uint8_t **message_out, size_t *len, struct sync_channel *channel)
{
    struct message *message = channel->inbox_head;
    *message_out = NULL;
    *len = 0;
    if (!message)
        return -EAGAIN;
    channel->inbox_head = message->next;
    if (!channel->inbox_head)
        channel->inbox_tail = NULL;
    channel->inbox_bytes -= message->len;
    if (message->len) {
        *message_out = message->data;
        *len = message->len;
    } else {
        free(message->data);
    }
    free(message);
    return 0;
}

size_t sync_channel_inbox_bytes(const struct sync_channel *channel)
{
    return channel->inbox_bytes;
}

enum sync_channel_state sync_channel_state(const struct sync_channel *channel)
{
    return channel->state;
}

int sync_channel_error(const struct sync_channel *channel)
{
    return channel->error;
}

const char *sync_channel_errmsg(const struct sync_channel *channel)
{
    return channel->errmsg;
}

int sync_channel_peer(uint8_t public_key[SYNC_PUBLIC_KEY_LEN], uint8_t share_id[SYNC_SHARE_ID_LEN],
                      const struct sync_channel *channel)
{
    if (!channel->peer_verified)
        return -ENOTCONN;
    if (public_key)
        memcpy(public_key, channel->peer_key, SYNC_PUBLIC_KEY_LEN);
    if (share_id)
        memcpy(share_id, channel->share_id, SYNC_SHARE_ID_LEN);
    return 0;
}
