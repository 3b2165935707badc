/*
 * Tests for sync/wire: every message type against bytes written by hand
 * from README.md (golden), round trips, every truncation and a trailing
 * byte refused, each validation rule on both the decoder and the encoder,
 * and the largest record fitting one message and one channel message.
 */
#include "sync/channel.h"
#include "sync/wire.h"
#include "sync_util.h"

#include <errno.h>
#include <stdlib.h>

static struct util_share share;
static struct sync_identity alice;

/* Decodes bytes, expecting `expected`; on success re-encodes and compares. */
static void check_decode(const uint8_t *bytes, size_t len, int expected, const char *what)
{
    struct sync_msg msg;
    int rc = sync_wire_decode(&msg, bytes, len);
    test_checks++;
    if (rc != expected) {
        test_failures++;
        fprintf(stderr, "%s: decode expected %d, got %d\n", what, expected, rc);
    }
    if (rc == 0) {
        struct crdt_buf buf = {0};
        CHECK_INT(0, sync_wire_encode(&buf, &msg));
        test_checks++;
        if (buf.len != len || memcmp(buf.data, bytes, len) != 0) {
            test_failures++;
            fprintf(stderr, "%s: re-encoding differs\n", what);
        }
        crdt_buf_free(&buf);
    }
    sync_msg_clear(&msg);
}

/* Every proper prefix of a valid message, and the message plus a byte, are refused. */
static void check_strict(const uint8_t *bytes, size_t len, const char *what)
{
    uint8_t *copy = malloc(len + 1);
    memcpy(copy, bytes, len);
    for (size_t cut = 0; cut < len; cut++) {
        struct sync_msg msg;
        int rc = sync_wire_decode(&msg, copy, cut);
        test_checks++;
        if (rc == 0) {
            test_failures++;
            fprintf(stderr, "%s: prefix of %zu bytes decoded\n", what, cut);
        }
        CHECK(msg.type == 0 && msg.owned_heads == NULL);
        sync_msg_clear(&msg);
    }
    copy[len] = 0;
    check_decode(copy, len + 1, -EBADMSG, what);
    free(copy);
}

static void check_encode(const struct sync_msg *msg, const uint8_t *expected, size_t len,
                         const char *what)
{
    struct crdt_buf buf = {0};
    crdt_buf_put_u8(&buf, 0xee); /* encode appends */
    CHECK_INT(0, sync_wire_encode(&buf, msg));
    test_checks++;
    if (buf.len != len + 1 || memcmp(buf.data + 1, expected, len) != 0) {
        test_failures++;
        fprintf(stderr, "%s: encoding differs from the golden bytes\n", what);
    }
    crdt_buf_free(&buf);
    check_decode(expected, len, 0, what);
    check_strict(expected, len, what);
}

static void test_hello(void)
{
    uint8_t golden[] = {0x01, [1 ... 16] = 0xa0, 0x01, 0x02, 0x03, 0x05, 0x07, 0x01};
    struct crdt_vv_entry entries[] = {{3, 5}, {10, 1}};
    struct sync_msg msg = {.type = SYNC_MSG_HELLO};
    memset(msg.hello.share_id, 0xa0, SYNC_SHARE_ID_LEN);
    msg.hello.version = SYNC_WIRE_VERSION;
    msg.hello.vv = (struct crdt_vv){.entries = entries, .len = 2, .cap = 2};
    check_encode(&msg, golden, sizeof(golden), "HELLO");

    struct sync_msg got;
    CHECK_INT(0, sync_wire_decode(&got, golden, sizeof(golden)));
    CHECK_INT(SYNC_MSG_HELLO, got.type);
    CHECK_INT(1, got.hello.version);
    CHECK_INT(2, got.hello.vv.len);
    CHECK_INT(5, crdt_vv_get(&got.hello.vv, 3));
    CHECK_INT(1, crdt_vv_get(&got.hello.vv, 10));
    sync_msg_clear(&got);

    uint8_t bad[sizeof(golden)];
    memcpy(bad, golden, sizeof(bad));
    bad[17] = 0; /* version 0 */
    check_decode(bad, sizeof(bad), -EBADMSG, "HELLO version 0");
    memcpy(bad, golden, sizeof(bad));
    bad[21] = 0; /* second replica delta 0: a duplicate */
    check_decode(bad, sizeof(bad), -EBADMSG, "HELLO duplicate replica");
    memcpy(bad, golden, sizeof(bad));
    bad[20] = 0; /* a zero seq */
    check_decode(bad, sizeof(bad), -EBADMSG, "HELLO zero seq");
    uint8_t big_version[] = {0x01, [1 ... 16] = 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00};
    check_decode(big_version, sizeof(big_version), -EBADMSG, "HELLO version over 32 bits");

    /* The encoder refuses what the decoder would. */
    struct crdt_buf buf = {0};
    msg.hello.version = 0;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    msg.hello.version = 1;
    entries[1].replica = 3;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    entries[1] = (struct crdt_vv_entry){10, 0};
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    CHECK_INT(0, buf.len);
    crdt_buf_free(&buf);
}

static void test_want_heads_ack(void)
{
    uint8_t want[2 + 64];
    want[0] = 0x03;
    want[1] = 0x02;
    memset(want + 2, 0x11, 32);
    memset(want + 34, 0x22, 32);
    struct sync_msg msg = {.type = SYNC_MSG_WANT_CHUNKS};
    msg.want.ids = want + 2;
    msg.want.count = 2;
    check_encode(&msg, want, sizeof(want), "WANT_CHUNKS");
    struct crdt_buf buf = {0};
    msg.want.count = 0;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    msg.want.count = SYNC_WIRE_WANT_MAX + 1;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    uint8_t want_zero[] = {0x03, 0x00};
    check_decode(want_zero, sizeof(want_zero), -EBADMSG, "WANT_CHUNKS of none");
    uint8_t want_many[] = {0x03, 0x81, 0x08}; /* 1025 */
    check_decode(want_many, sizeof(want_many), -EBADMSG, "WANT_CHUNKS over the limit");

    uint8_t heads[] = {
        0x05, 0x02, 0x03, 0x07, [4 ... 35] = 0x33, 0xe5, 0x07, 0x01, [39 ... 70] = 0x44};
    struct sync_head entries[2] = {{.author = 3, .seq = 7}, {.author = 1000, .seq = 1}};
    memset(entries[0].hash, 0x33, SYNC_HASH_LEN);
    memset(entries[1].hash, 0x44, SYNC_HASH_LEN);
    msg = (struct sync_msg){.type = SYNC_MSG_HEADS};
    msg.heads.entries = entries;
    msg.heads.count = 2;
    check_encode(&msg, heads, sizeof(heads), "HEADS");
    struct sync_msg got;
    CHECK_INT(0, sync_wire_decode(&got, heads, sizeof(heads)));
    CHECK_INT(2, got.heads.count);
    CHECK(got.heads.entries[1].author == 1000 && got.heads.entries[1].seq == 1);
    CHECK(got.heads.entries[1].hash[31] == 0x44);
    sync_msg_clear(&got);
    uint8_t bad[sizeof(heads)];
    memcpy(bad, heads, sizeof(bad));
    bad[3] = 0; /* seq 0 */
    check_decode(bad, sizeof(bad), -EBADMSG, "HEADS seq 0");
    uint8_t dup[] = {0x05, 0x02, 0x03, 0x07, [4 ... 35] = 0x33, 0x00, 0x01, [38 ... 69] = 0x44};
    check_decode(dup, sizeof(dup), -EBADMSG, "HEADS duplicate author");
    uint8_t too_many[] = {
        0x05, 0x03, 0x03, 0x07, [4 ... 35] = 0x33, 0x01, 0x01, [38 ... 69] = 0x44};
    check_decode(too_many, sizeof(too_many), -EBADMSG, "HEADS count beyond the bytes");
    uint8_t none[] = {0x05, 0x00};
    check_decode(none, sizeof(none), 0, "HEADS of none");
    entries[1].author = 3;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    entries[1].author = 1000;
    entries[0].seq = 0;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));

    uint8_t ack[] = {0x06, 0x01, 0x03, 0x07};
    struct crdt_vv_entry acked[] = {{3, 7}};
    msg = (struct sync_msg){.type = SYNC_MSG_ACK};
    msg.ack.records = (struct crdt_vv){.entries = acked, .len = 1, .cap = 1};
    check_encode(&msg, ack, sizeof(ack), "ACK");
    uint8_t ack_zero[] = {0x06, 0x01, 0x03, 0x00};
    check_decode(ack_zero, sizeof(ack_zero), -EBADMSG, "ACK zero seq");
    uint8_t ack_empty[] = {0x06, 0x00};
    check_decode(ack_empty, sizeof(ack_empty), 0, "ACK of nothing");
    CHECK_INT(0, buf.len);
    crdt_buf_free(&buf);
}

static void test_error(void)
{
    const char text[] = "record refused: dropped";
    uint8_t golden[3 + sizeof(text) - 1] = {0x07, 0x09, (uint8_t)(sizeof(text) - 1)};
    memcpy(golden + 3, text, sizeof(text) - 1);
    struct sync_msg msg = {.type = SYNC_MSG_ERROR};
    msg.error.code = 9;
    msg.error.text = text;
    msg.error.len = sizeof(text) - 1;
    check_encode(&msg, golden, sizeof(golden), "ERROR");

    static const struct {
        const char *text;
        int expected;
    } texts[] = {
        {"", 0},
        {"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e", 0}, /* é, check mark, G clef */
        {"new\nline", -EBADMSG},
        {"tab\there", -EBADMSG},
        {"del\x7f", -EBADMSG},
        {"overlong \xc0\x80", -EBADMSG},
        {"overlong \xe0\x80\xaf", -EBADMSG},
        {"surrogate \xed\xa0\x80", -EBADMSG},
        {"past U+10FFFF \xf4\x90\x80\x80", -EBADMSG},
        {"\xf5\x80\x80\x80", -EBADMSG},
        {"lone continuation \x80", -EBADMSG},
        {"truncated \xe2\x82", -EBADMSG},
        {"C1 control \xc2\x85", -EBADMSG},
        {"escape \x1b[31m", -EBADMSG},
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        size_t len = strlen(texts[i].text);
        uint8_t bytes[64] = {0x07, 0x01, (uint8_t)len};
        memcpy(bytes + 3, texts[i].text, len);
        check_decode(bytes, 3 + len, texts[i].expected, texts[i].text);
        struct crdt_buf buf = {0};
        msg.error.text = texts[i].text;
        msg.error.len = len;
        CHECK_INT(texts[i].expected ? -EINVAL : 0, sync_wire_encode(&buf, &msg));
        crdt_buf_free(&buf);
    }

    /* Length limits and the code. */
    char *long_text = malloc(SYNC_WIRE_ERROR_TEXT_MAX + 1);
    memset(long_text, 'x', SYNC_WIRE_ERROR_TEXT_MAX + 1);
    struct crdt_buf buf = {0};
    msg.error.text = long_text;
    msg.error.len = SYNC_WIRE_ERROR_TEXT_MAX;
    CHECK_INT(0, sync_wire_encode(&buf, &msg));
    check_decode(buf.data, buf.len, 0, "ERROR of the largest text");
    crdt_buf_free(&buf);
    msg.error.len = SYNC_WIRE_ERROR_TEXT_MAX + 1;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    uint8_t over[4 + SYNC_WIRE_ERROR_TEXT_MAX + 1] = {0x07, 0x01, 0x81, 0x04};
    memset(over + 4, 'x', SYNC_WIRE_ERROR_TEXT_MAX + 1);
    check_decode(over, sizeof(over), -EBADMSG, "ERROR text over the limit");
    free(long_text);
    msg.error.text = "x";
    msg.error.len = 1;
    msg.error.code = 0;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    uint8_t code_zero[] = {0x07, 0x00, 0x00};
    check_decode(code_zero, sizeof(code_zero), -EBADMSG, "ERROR code 0");
    crdt_buf_free(&buf);
}

static void test_member(void)
{
    uint8_t golden[2 + SYNC_PUBLIC_KEY_LEN] = {0x08, 0x01};
    struct sync_msg msg = {.type = SYNC_MSG_MEMBER};
    msg.member.action = SYNC_MEMBER_ADD;
    for (int i = 0; i < SYNC_PUBLIC_KEY_LEN; i++)
        golden[2 + i] = msg.member.public_key[i] = (uint8_t)(i * 7 + 1);
    check_encode(&msg, golden, sizeof(golden), "MEMBER add");
    golden[1] = 0x02;
    check_decode(golden, sizeof(golden), 0, "MEMBER revoke");
    golden[1] = 0x03;
    check_decode(golden, sizeof(golden), -EBADMSG, "MEMBER of an unknown action");
    golden[1] = 0x01;
    check_decode(golden, sizeof(golden) - 1, -EBADMSG, "MEMBER with a short key");
    msg.member.action = (enum sync_member_action)0;
    struct crdt_buf buf = {0};
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    crdt_buf_free(&buf);
}

static void test_peers(void)
{
    struct sync_peer_addr entries[2] = {
        {.replica = 0x0102030405060708ull, .addr = "10.0.0.1:7421", .len = 13},
        {.replica = 9, .addr = "[::1]:1", .len = 7}};
    struct sync_msg msg = {.type = SYNC_MSG_PEERS};
    msg.peers.entries = entries;
    msg.peers.count = 2;
    struct crdt_buf buf = {0};
    CHECK_INT(0, sync_wire_encode(&buf, &msg));
    check_decode(buf.data, buf.len, 0, "PEERS");
    struct sync_msg back;
    CHECK_INT(0, sync_wire_decode(&back, buf.data, buf.len));
    CHECK_INT(2, back.peers.count);
    CHECK(back.peers.entries[0].replica == entries[0].replica);
    CHECK(back.peers.entries[1].len == 7 && !memcmp(back.peers.entries[1].addr, "[::1]:1", 7));
    sync_msg_clear(&back);
    /* No spaces or control characters in an address; none empty. */
    buf.data[buf.len - 3] = ' ';
    check_decode(buf.data, buf.len, -EBADMSG, "PEERS with a space in an address");
    crdt_buf_free(&buf);
    entries[0].len = 0;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    msg.peers.count = 0; /* asking only */
    CHECK_INT(0, sync_wire_encode(&buf, &msg));
    check_decode(buf.data, buf.len, 0, "an empty PEERS");
    crdt_buf_free(&buf);
}

static void test_records(void)
{
    struct util_rng nonce = {3};
    struct sync_seal seal = util_seal(&share, &alice, 1, &nonce);
    struct sync_op op = {.replica = seal.author,
                         .seq = 1,
                         .counter = 1,
                         .kind = 1,
                         .author = seal.author,
                         .body = (const uint8_t *)"op",
                         .body_len = 2};
    struct crdt_buf ops_record = {0}, chunk_record = {0};
    CHECK_INT(0, sync_record_seal_ops(&ops_record, NULL, &seal, 1, NULL, &op, 1));
    uint8_t id[SYNC_HASH_LEN] = {7};
    CHECK_INT(0, sync_record_seal_chunk(&chunk_record, NULL, &seal, id, "chunk", 5));

    struct crdt_buf golden = {0};
    crdt_buf_put_u8(&golden, SYNC_MSG_OPS);
    crdt_buf_put_bytes(&golden, ops_record.data, ops_record.len);
    struct sync_msg msg = {.type = SYNC_MSG_OPS};
    msg.ops.record = ops_record.data;
    msg.ops.len = ops_record.len;
    check_encode(&msg, golden.data, golden.len, "OPS");
    struct sync_msg got;
    CHECK_INT(0, sync_wire_decode(&got, golden.data, golden.len));
    CHECK(got.ops.len == ops_record.len &&
          got.ops.record == golden.data + golden.len - ops_record.len);
    sync_msg_clear(&got);

    /* An OPS message carrying a chunk record, and the reverse. */
    struct crdt_buf wrong = {0};
    crdt_buf_put_u8(&wrong, SYNC_MSG_OPS);
    crdt_buf_put_bytes(&wrong, chunk_record.data, chunk_record.len);
    check_decode(wrong.data, wrong.len, -EBADMSG, "OPS with a chunk record");
    wrong.data[0] = SYNC_MSG_CHUNK;
    check_decode(wrong.data, wrong.len, 0, "CHUNK");
    crdt_buf_free(&wrong);
    crdt_buf_put_u8(&wrong, SYNC_MSG_CHUNK);
    crdt_buf_put_bytes(&wrong, ops_record.data, ops_record.len);
    check_decode(wrong.data, wrong.len, -EBADMSG, "CHUNK with an op record");
    /* A record of a later format version. */
    wrong.data[0] = SYNC_MSG_OPS;
    wrong.data[wrong.len - ops_record.len] = SYNC_RECORD_VERSION + 1;
    check_decode(wrong.data, wrong.len, -EPROTONOSUPPORT, "OPS with a record of a later format");
    crdt_buf_free(&wrong);
    check_strict(golden.data, golden.len, "OPS");
    struct crdt_buf buf = {0};
    msg.type = SYNC_MSG_CHUNK;
    msg.chunk.record = ops_record.data;
    msg.chunk.len = ops_record.len;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    msg.chunk.len = 10;
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    crdt_buf_free(&golden);

    /* The largest record fits one message, and that message one channel message. */
    uint8_t *data = malloc(SYNC_RECORD_PLAIN_MAX);
    memset(data, 0x5c, SYNC_RECORD_PLAIN_MAX);
    crdt_buf_free(&chunk_record);
    CHECK_INT(0,
              sync_record_seal_chunk(&chunk_record, NULL, &seal, id, data, SYNC_RECORD_PLAIN_MAX));
    msg.chunk.record = chunk_record.data;
    msg.chunk.len = chunk_record.len;
    CHECK_INT(0, sync_wire_encode(&buf, &msg));
    CHECK(buf.len <= SYNC_WIRE_MESSAGE_MAX && buf.len <= SYNC_CHANNEL_MESSAGE_MAX);
    check_decode(buf.data, buf.len, 0, "CHUNK of the largest record");
    free(data);
    crdt_buf_free(&buf);
    crdt_buf_free(&ops_record);
    crdt_buf_free(&chunk_record);
}

static void test_types_and_sizes(void)
{
    uint8_t unknown[] = {0x00};
    check_decode(unknown, 1, -EBADMSG, "type 0");
    unknown[0] = 10;
    check_decode(unknown, 1, -EBADMSG, "type 10");
    unknown[0] = 0xff;
    check_decode(unknown, 1, -EBADMSG, "type 255");
    check_decode(NULL, 0, -EBADMSG, "nothing");
    uint8_t *huge = calloc(1, SYNC_WIRE_MESSAGE_MAX + 1);
    huge[0] = SYNC_MSG_OPS;
    check_decode(huge, SYNC_WIRE_MESSAGE_MAX + 1, -EBADMSG, "over the message limit");
    free(huge);
    struct sync_msg msg = {.type = (enum sync_msg_type)11};
    struct crdt_buf buf = {0};
    CHECK_INT(-EINVAL, sync_wire_encode(&buf, &msg));
    for (int type = 1; type <= 9; type++)
        CHECK(strcmp(sync_msg_type_str((enum sync_msg_type)type), "?") != 0);
    CHECK_STR("?", sync_msg_type_str((enum sync_msg_type)0));
    CHECK_STR("HEADS", sync_msg_type_str(SYNC_MSG_HEADS));
}

int main(void)
{
    if (sync_init() != 0)
        return 1;
    util_share_init(&share, 0xa0);
    util_identity(&alice, 1);
    util_member_add(&share.members, &alice, 0);
    test_hello();
    test_want_heads_ack();
    test_error();
    test_member();
    test_peers();
    test_records();
    test_types_and_sizes();
    return test_finish("sync-wire");
}
