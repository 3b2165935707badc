/*
 * Tests for sync/relay, in process: a relay on its loop thread over a
 * SQLite relay store, and devices, each a sync/net transport of its own,
 * talking to it on 127.0.0.1. A uploads sealed records and chunks; B starts
 * empty and receives every record in order (checked by sync/chain), the
 * heads, and the chunks it asks for; a record A sends while B is connected
 * reaches B by push; records with a bad signature, another author's name, a
 * non-member author, a fork, a gap or another share are refused with the
 * reason and not stored; a non-member device is refused; a new share is
 * registered by its first device (trust on first use) and closed to others;
 * a long chain streams to a device through a small send queue; after a
 * restart of the relay everything is still served; and, over a store whose
 * commits fail on demand, nothing is ACKed before it is durable, while bad
 * HELLOs, undecodable messages and floods of chunk requests are handled.
 */
#include "meta_util.h"
#include "net_util.h"
#include "sync/record_internal.h"
#include "sync/relay.h"
#include "sync/wire.h"
#include "sync_util.h"

static struct sync_identity relay_id, id_a, id_b, id_d, id_e, mallory;
static struct util_share share1, share2, share3;

#define RELAY_HIGH_WATER (256u << 10)

/* ---------- a device ---------- */

struct own_record {
    uint8_t *bytes;
    size_t len;
    uint8_t hash[SYNC_HASH_LEN];
};

struct device {
    const char *name;
    const struct sync_identity *id;
    struct util_share *share;
    struct sync_net *net;
    struct sync_net_dialer *dialer;
    struct sync_net_conn *conn;
    struct crdt_vv have;        /* what HELLO claims: author -> record seq held */
    struct own_record own[700]; /* this device's chain, own[seq - 1] */
    size_t own_count;
    bool upload_on_hello;       /* send the relay the records it lacks */
    const uint8_t *hello_share; /* a share id for HELLO other than the session's (a bad peer) */
    /* what came */
    int opens, closes, last_error, first_error;
    char last_why[320], first_why[320];
    int hellos;
    struct crdt_vv relay_vv;
    struct sync_chain *chains[4];
    size_t ops_accepted, ops_refused;
    enum sync_reason last_refusal;
    uint64_t last_op_ms;
    int heads_msgs, heads_bad;
    size_t heads_count;
    struct crdt_vv acked;
    size_t chunks_ok, chunks_bad;
    int errors;
    uint32_t last_error_code;
    char last_error_text[600];
};

static int device_peer(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                       const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    (void)ctx, (void)share_id;
    if (memcmp(public_key, relay_id.public_key, SYNC_PUBLIC_KEY_LEN) != 0) {
        snprintf(why, why_len, "not our relay");
        return -1;
    }
    return 0;
}

static void device_send_hello(struct device *dev, struct sync_net_conn *conn)
{
    struct sync_msg msg = {.type = SYNC_MSG_HELLO};
    memcpy(msg.hello.share_id, dev->hello_share ? dev->hello_share : dev->share->share.id,
           SYNC_SHARE_ID_LEN);
    msg.hello.version = SYNC_WIRE_VERSION;
    msg.hello.vv = dev->have;
    struct crdt_buf buf = {0};
    if (sync_wire_encode(&buf, &msg) == 0)
        (void)!sync_net_conn_send(conn, buf.data, buf.len);
    crdt_buf_free(&buf);
}

static void send_record_bytes(struct sync_net_conn *conn, enum sync_msg_type type,
                              const uint8_t *bytes, size_t len)
{
    struct sync_msg msg = {.type = type};
    msg.ops.record = bytes;
    msg.ops.len = len;
    struct crdt_buf buf = {0};
    if (sync_wire_encode(&buf, &msg) == 0)
        (void)!sync_net_conn_send(conn, buf.data, buf.len);
    crdt_buf_free(&buf);
}

static void device_open(void *ctx, struct sync_net_conn *conn)
{
    struct device *dev = ctx;
    pthread_mutex_lock(&g_lock);
    dev->opens++;
    dev->conn = conn;
    for (size_t i = 0; i < 4; i++)
        if (dev->chains[i])
            sync_chain_rewind(dev->chains[i]); /* a new delivery */
    device_send_hello(dev, conn);
    pthread_mutex_unlock(&g_lock);
}

static struct sync_chain *device_chain(struct device *dev, uint64_t author)
{
    for (size_t i = 0; i < 4; i++) {
        if (dev->chains[i] && sync_chain_author(dev->chains[i]) == author)
            return dev->chains[i];
        if (!dev->chains[i]) {
            if (sync_chain_new(&dev->chains[i], &dev->share->share, author, 0, NULL) != 0)
                return NULL;
            return dev->chains[i];
        }
    }
    return NULL;
}

static int device_message(void *ctx, struct sync_net_conn *conn, const uint8_t *bytes, size_t len)
{
    struct device *dev = ctx;
    struct sync_msg msg;
    if (sync_wire_decode(&msg, bytes, len) != 0) {
        pthread_mutex_lock(&g_lock);
        dev->errors += 1000; /* the relay sent garbage */
        pthread_mutex_unlock(&g_lock);
        return 0;
    }
    pthread_mutex_lock(&g_lock);
    switch (msg.type) {
    case SYNC_MSG_HELLO:
        dev->hellos++;
        crdt_vv_free(&dev->relay_vv);
        if (crdt_vv_copy(&dev->relay_vv, &msg.hello.vv) != 0)
            abort();
        if (dev->upload_on_hello) {
            uint64_t author = sync_replica_id(dev->id->public_key);
            for (uint64_t seq = crdt_vv_get(&msg.hello.vv, author) + 1; seq <= dev->own_count;
                 seq++)
                send_record_bytes(conn, SYNC_MSG_OPS, dev->own[seq - 1].bytes,
                                  dev->own[seq - 1].len);
        }
        break;
    case SYNC_MSG_OPS: {
        struct sync_record_header header;
        struct sync_chain *chain = NULL;
        if (sync_record_peek(&header, msg.ops.record, msg.ops.len) == 0)
            chain = device_chain(dev, header.author);
        struct sync_record record = {0};
        enum sync_reason reason = SYNC_REASON_MALFORMED;
        if (chain && sync_chain_accept(&record, &reason, chain, msg.ops.record, msg.ops.len) == 0) {
            dev->ops_accepted++;
            dev->last_op_ms = now_ms();
            if (crdt_vv_raise(&dev->have, header.author, header.seq) != 0)
                abort();
            sync_record_clear(&record);
        } else {
            dev->ops_refused++;
            dev->last_refusal = reason;
        }
        break;
    }
    case SYNC_MSG_HEADS:
        dev->heads_msgs++;
        dev->heads_count = msg.heads.count;
        for (size_t i = 0; i < msg.heads.count; i++) {
            struct sync_chain *chain = device_chain(dev, msg.heads.entries[i].author);
            enum sync_reason reason;
            /* Caught up: the heads are exactly what the chain verified. */
            uint8_t held[SYNC_HASH_LEN];
            if (!chain ||
                sync_chain_check_head(&reason, chain, 1, msg.heads.entries[i].seq,
                                      msg.heads.entries[i].hash) != 0 ||
                sync_chain_head(held, chain) != msg.heads.entries[i].seq ||
                memcmp(held, msg.heads.entries[i].hash, SYNC_HASH_LEN) != 0)
                dev->heads_bad++;
        }
        break;
    case SYNC_MSG_ACK:
        if (crdt_vv_merge(&dev->acked, &msg.ack.records) != 0)
            abort();
        break;
    case SYNC_MSG_CHUNK: {
        struct sync_record record = {0};
        enum sync_reason reason;
        if (sync_record_open(&record, &reason, &dev->share->share, msg.chunk.record,
                             msg.chunk.len) == 0 &&
            record.header.kind == SYNC_RECORD_CHUNK && record.chunk_len > 0 &&
            record.chunk[0] == record.header.chunk_id[0])
            dev->chunks_ok++;
        else
            dev->chunks_bad++;
        sync_record_clear(&record);
        break;
    }
    case SYNC_MSG_ERROR:
        dev->errors++;
        dev->last_error_code = msg.error.code;
        snprintf(dev->last_error_text, sizeof(dev->last_error_text), "%.*s", (int)msg.error.len,
                 msg.error.text);
        break;
    case SYNC_MSG_WANT_CHUNKS:
    case SYNC_MSG_MEMBER: /* test-sync-agent covers membership and discovery through the relay */
    case SYNC_MSG_PEERS:
        break;
    }
    pthread_mutex_unlock(&g_lock);
    sync_msg_clear(&msg);
    return 0;
}

static void device_closed(void *ctx, struct sync_net_conn *conn, int error, const char *why)
{
    struct device *dev = ctx;
    pthread_mutex_lock(&g_lock);
    if (dev->closes++ == 0) {
        dev->first_error = error;
        snprintf(dev->first_why, sizeof(dev->first_why), "%s", why);
    }
    dev->last_error = error;
    snprintf(dev->last_why, sizeof(dev->last_why), "%s", why);
    if (dev->conn == conn)
        dev->conn = NULL;
    pthread_mutex_unlock(&g_lock);
}

static void device_connect(struct device *dev, uint16_t port)
{
    struct sync_net_config config = {
        .identity = dev->id,
        .handshake_timeout_ms = 3000,
        .idle_timeout_ms = 10000,
        .backoff_min_ms = 50,
        .backoff_max_ms = 400,
    };
    if (sync_net_new(&dev->net, &config) != 0 || sync_net_start(dev->net) != 0)
        abort();
    struct sync_net_handler handler = {
        .peer = device_peer,
        .open = device_open,
        .message = device_message,
        .closed = device_closed,
        .ctx = dev,
    };
    if (sync_net_dial(dev->net, &dev->dialer, "127.0.0.1", port, dev->share->share.id, &handler))
        abort();
}

static void device_disconnect(struct device *dev)
{
    sync_net_free(dev->net); /* closes the dialer and its connection */
    dev->net = NULL;
    dev->dialer = NULL;
    dev->conn = NULL;
}

static void device_free(struct device *dev)
{
    if (dev->net)
        device_disconnect(dev);
    for (size_t i = 0; i < dev->own_count; i++)
        free(dev->own[i].bytes);
    for (size_t i = 0; i < 4; i++)
        sync_chain_free(dev->chains[i]);
    crdt_vv_free(&dev->have);
    crdt_vv_free(&dev->relay_vv);
    crdt_vv_free(&dev->acked);
}

/* Seals the device's next op record (body_len bytes of op body); it is not sent. */
static struct own_record *device_seal(struct device *dev, size_t body_len, uint64_t *rng)
{
    uint64_t author = sync_replica_id(dev->id->public_key);
    uint64_t seq = dev->own_count + 1;
    uint8_t body_space[64 * 8];
    struct sync_op ops[8];
    util_ops(ops, body_space, 8, author, 8 * (seq - 1) + 1, rng);
    uint8_t *big = NULL;
    if (body_len) {
        big = malloc(body_len);
        for (size_t i = 0; i < body_len; i++)
            big[i] = (uint8_t)test_rand(rng);
        ops[0].body = big;
        ops[0].body_len = body_len;
    }
    struct sync_seal seal = util_seal(dev->share, dev->id, 1, NULL);
    struct crdt_buf buf = {0};
    struct own_record *rec = &dev->own[dev->own_count];
    if (sync_record_seal_ops(&buf, rec->hash, &seal, seq, seq > 1 ? dev->own[seq - 2].hash : NULL,
                             ops, 8) != 0)
        abort();
    free(big);
    rec->bytes = buf.data;
    rec->len = buf.len;
    dev->own_count++;
    if (crdt_vv_raise(&dev->have, author, seq) != 0)
        abort();
    return rec;
}

/* Sends a wire message carrying a record from the test's thread (posted to the device's loop). */
struct send_job {
    struct device *dev;
    enum sync_msg_type type;
    uint8_t *bytes;
    size_t len;
    uint8_t *ids;
    size_t id_count;
};

/* Job types beyond the wire's: the device stops or resumes reading from the relay. */
#define JOB_PAUSE  100
#define JOB_RESUME 101

static void send_job_run(void *ctx)
{
    struct send_job *job = ctx;
    pthread_mutex_lock(&g_lock);
    struct sync_net_conn *conn = job->dev->conn;
    pthread_mutex_unlock(&g_lock);
    if (conn) {
        if (job->type == SYNC_MSG_WANT_CHUNKS) {
            struct sync_msg msg = {.type = SYNC_MSG_WANT_CHUNKS};
            msg.want.ids = job->ids;
            msg.want.count = job->id_count;
            struct crdt_buf buf = {0};
            if (sync_wire_encode(&buf, &msg) == 0)
                (void)!sync_net_conn_send(conn, buf.data, buf.len);
            crdt_buf_free(&buf);
        } else if (job->type == JOB_PAUSE || job->type == JOB_RESUME) {
            sync_net_conn_pause(conn, job->type == JOB_PAUSE);
        } else if (job->type == 0) {
            (void)!sync_net_conn_send(conn, job->bytes, job->len); /* raw: not a wire message */
        } else {
            send_record_bytes(conn, job->type, job->bytes, job->len);
        }
    }
    free(job->bytes);
    free(job->ids);
    free(job);
}

static void device_send(struct device *dev, enum sync_msg_type type, const uint8_t *bytes,
                        size_t len)
{
    struct send_job *job = calloc(1, sizeof(*job));
    job->dev = dev;
    job->type = type;
    job->bytes = malloc(len);
    memcpy(job->bytes, bytes, len);
    job->len = len;
    if (sync_net_post(dev->net, send_job_run, job) != 0)
        abort();
}

static void device_want(struct device *dev, const uint8_t *ids, size_t count)
{
    struct send_job *job = calloc(1, sizeof(*job));
    job->dev = dev;
    job->type = SYNC_MSG_WANT_CHUNKS;
    job->ids = malloc(count * SYNC_HASH_LEN);
    memcpy(job->ids, ids, count * SYNC_HASH_LEN);
    job->id_count = count;
    if (sync_net_post(dev->net, send_job_run, job) != 0)
        abort();
}

/* ---------- the relay ---------- */

struct relay_log {
    char text[16384];
};

static void relay_log_line(void *ctx, enum sync_net_log_level level, const char *line)
{
    struct relay_log *log = ctx;
    if (level == SYNC_NET_LOG_DEBUG)
        return;
    pthread_mutex_lock(&g_lock);
    size_t used = strlen(log->text);
    if (used + strlen(line) + 2 < sizeof(log->text))
        snprintf(log->text + used, sizeof(log->text) - used, "%s\n", line);
    pthread_mutex_unlock(&g_lock);
}

static struct sync_relay *relay_start(struct sync_relay_store *store, struct relay_log *log,
                                      uint16_t *port)
{
    struct sync_relay_config config = {
        .store = store,
        .net =
            {
                .identity = &relay_id,
                .handshake_timeout_ms = 3000,
                .idle_timeout_ms = 10000,
                .high_water = RELAY_HIGH_WATER,
                .low_water = 64u << 10,
                .log = relay_log_line,
                .log_ctx = log,
            },
        .batch_records = 16,
        .batch_bytes = 64u << 10,
    };
    struct sync_relay *relay = NULL;
    if (sync_relay_new(&relay, &config) != 0 || sync_relay_listen(relay, port, "127.0.0.1", 0))
        abort();
    return relay;
}

/* Chunk records: data whose first byte equals the id's, so the test can match them. */
static void seal_chunk(struct crdt_buf *out, uint8_t id[SYNC_HASH_LEN], uint8_t tag,
                       const struct sync_identity *author, struct util_share *share)
{
    uint8_t data[3000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(tag + i);
    memset(id, 0, SYNC_HASH_LEN);
    id[0] = tag;
    id[1] = 0xc4;
    struct sync_seal seal = util_seal(share, author, 1, NULL);
    uint8_t hash[SYNC_HASH_LEN];
    if (sync_record_seal_chunk(out, hash, &seal, id, data, sizeof(data)) != 0)
        abort();
}

/* ---------- the test ---------- */

static int errors_of(struct device *dev)
{
    pthread_mutex_lock(&g_lock);
    int errors = dev->errors;
    pthread_mutex_unlock(&g_lock);
    return errors;
}

static void expect_error(struct device *dev, int errors_before, uint32_t code, const char *phrase)
{
    bool ok;
    WAIT_UNTIL(ok, dev->errors > errors_before, 5000);
    pthread_mutex_lock(&g_lock);
    if (!ok || dev->last_error_code != code || !strstr(dev->last_error_text, phrase)) {
        test_failures++;
        fprintf(stderr, "expected ERROR %u saying \"%s\", got %s%u \"%s\"\n", code, phrase,
                ok ? "" : "(nothing) ", dev->last_error_code, dev->last_error_text);
    }
    test_checks++;
    pthread_mutex_unlock(&g_lock);
}

/* ---------- a store that fails its commits on demand ---------- */

static int fail_commits; /* read on the relay's loop thread, set by the test's */
static struct sync_relay_store_ops failing_ops;
static int (*inner_commit)(void *ctx);
static void (*inner_rollback)(void *ctx);

static int failing_commit(void *ctx)
{
    if (__atomic_load_n(&fail_commits, __ATOMIC_SEQ_CST)) {
        inner_rollback(ctx); /* the contract: a failed commit leaves nothing */
        return -EIO;
    }
    return inner_commit(ctx);
}

/*
 * A commit that fails is never ACKed and the device uploads again after it
 * reconnects; a HELLO naming another share, a message that does not decode
 * and a flood of WANT_CHUNKS (which pauses reading from the device) are
 * answered as README "Relay" says.
 */
static void test_failures_and_protocol(uint64_t *rng)
{
    char *dir = tu_tempdir("relay-fail");
    struct sync_relay_store inner;
    char why[512];
    if (sync_relay_store_open_sqlite(&inner, why, sizeof(why), dir) != 0)
        abort();
    failing_ops = *inner.ops;
    inner_commit = inner.ops->commit;
    inner_rollback = inner.ops->rollback;
    failing_ops.commit = failing_commit;
    struct sync_relay_store store = {.ops = &failing_ops, .ctx = inner.ctx};
    CHECK_INT(0, store.ops->share_register(store.ctx, share1.share.id, id_a.public_key, 1));
    CHECK_INT(0, store.ops->member_add(store.ctx, share1.share.id, id_b.public_key, 2));
    struct relay_log log = {{0}};
    uint16_t port = 0;
    struct sync_relay *relay = relay_start(&store, &log, &port);

    struct device a = {.name = "A", .id = &id_a, .share = &share1, .upload_on_hello = true};
    for (int i = 0; i < 3; i++)
        device_seal(&a, 0, rng);
    __atomic_store_n(&fail_commits, 1, __ATOMIC_SEQ_CST);
    device_connect(&a, port);
    bool ok;
    WAIT_UNTIL(ok, a.closes >= 1, 5000);
    CHECK(ok);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(0, a.acked.len);
    CHECK_INT(SYNC_RELAY_ERR_STORAGE, a.last_error_code);
    pthread_mutex_unlock(&g_lock);
    __atomic_store_n(&fail_commits, 0, __ATOMIC_SEQ_CST);
    /* The dialer comes back by itself; the relay's HELLO says it has nothing; A uploads again. */
    uint64_t author_a = sync_replica_id(id_a.public_key);
    WAIT_UNTIL(ok, crdt_vv_get(&a.acked, author_a) == 3, 10000);
    CHECK(ok);
    CHECK(a.hellos >= 2);

    /* HELLO for another share: ERROR 102, and the relay ends the session. */
    struct device p = {.name = "P", .id = &id_b, .share = &share1, .hello_share = share2.share.id};
    device_connect(&p, port);
    WAIT_UNTIL(ok, p.closes >= 1, 5000);
    CHECK(ok);
    device_disconnect(&p);
    CHECK_INT(SYNC_RELAY_ERR_PROTOCOL, p.last_error_code);
    CHECK(strstr(p.last_error_text, "another share") != NULL);

    /* A message that does not decode: ERROR (malformed), then the end of the session. */
    struct device q = {.name = "Q", .id = &id_b, .share = &share1};
    device_connect(&q, port);
    WAIT_UNTIL(ok, q.heads_msgs == 1, 5000);
    CHECK(ok);
    const uint8_t garbage[] = {0x63, 1, 2, 3};
    device_send(&q, 0, garbage, sizeof(garbage));
    WAIT_UNTIL(ok, q.closes >= 1, 5000);
    CHECK(ok);
    device_disconnect(&q);
    CHECK_INT(SYNC_REASON_MALFORMED, q.last_error_code);
    CHECK_INT(0, q.first_error); /* closed cleanly by the relay, after the ERROR */

    /*
     * 10,240 requests for a 3 KB chunk while W does not read: the relay's
     * queue fills, the requests pile up past what it queues, so it stops
     * reading from W; once W reads again, everything is served.
     */
    struct crdt_buf chunk = {0};
    uint8_t chunk_id[SYNC_HASH_LEN];
    seal_chunk(&chunk, chunk_id, 0x42, &id_a, &share1);
    device_send(&a, SYNC_MSG_CHUNK, chunk.data, chunk.len);
    crdt_buf_free(&chunk);
    struct sync_relay_stats stats;
    for (int tries = 0; tries < 5000; tries++) {
        sync_relay_stats(&stats, relay);
        if (stats.chunks_stored == 1)
            break;
        usleep(1000);
    }
    CHECK_INT(1, stats.chunks_stored);
    struct device w = {.name = "W", .id = &id_b, .share = &share1};
    device_connect(&w, port);
    WAIT_UNTIL(ok, w.heads_msgs == 1, 5000);
    CHECK(ok);
    const uint8_t nothing = 0;
    device_send(&w, JOB_PAUSE, &nothing, 1);
    uint8_t *ids = calloc(SYNC_WIRE_WANT_MAX, SYNC_HASH_LEN);
    for (size_t i = 0; i < SYNC_WIRE_WANT_MAX; i++)
        memcpy(ids + i * SYNC_HASH_LEN, chunk_id, SYNC_HASH_LEN);
    for (int round = 0; round < 10; round++)
        device_want(&w, ids, SYNC_WIRE_WANT_MAX);
    free(ids);
    for (int tries = 0; tries < 10000; tries++) {
        sync_relay_stats(&stats, relay);
        if (stats.want_pauses >= 1)
            break;
        usleep(1000);
    }
    CHECK_INT(1, stats.want_pauses);
    CHECK(stats.chunks_sent < 10 * SYNC_WIRE_WANT_MAX);
    device_send(&w, JOB_RESUME, &nothing, 1);
    WAIT_UNTIL(ok, w.chunks_ok == 10 * SYNC_WIRE_WANT_MAX, 60000);
    CHECK(ok);
    sync_relay_stats(&stats, relay);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(0, w.chunks_bad);
    CHECK_INT(0, w.closes);
    CHECK_INT(10 * SYNC_WIRE_WANT_MAX, stats.chunks_sent);
    CHECK(stats.max_queued < RELAY_HIGH_WATER + 4096);
    pthread_mutex_unlock(&g_lock);

    device_free(&a);
    device_free(&p);
    device_free(&q);
    device_free(&w);
    sync_relay_free(relay);
    uint64_t head = 0;
    uint8_t hash[SYNC_HASH_LEN];
    CHECK_INT(0, store.ops->head(store.ctx, &head, hash, share1.share.id, author_a));
    CHECK_INT(3, head);
    sync_relay_store_close(&inner);
    tu_rmtree(dir);
}

int main(void)
{
    alarm(600);
    if (sync_init() != 0)
        return 2;
    util_identity(&relay_id, 30);
    util_identity(&id_a, 31);
    util_identity(&id_b, 32);
    util_identity(&id_d, 33);
    util_identity(&id_e, 34);
    util_identity(&mallory, 35);
    util_share_init(&share1, 0x71);
    util_share_init(&share2, 0x72);
    util_share_init(&share3, 0x73);
    struct util_share *shares[] = {&share1, &share2, &share3};
    for (size_t i = 0; i < 3; i++) {
        util_member_add(&shares[i]->members, &id_a, 0);
        util_member_add(&shares[i]->members, &id_b, 0);
        util_member_add(&shares[i]->members, &id_d, 0);
        util_member_add(&shares[i]->members, &mallory, 0); /* readers may know it; the relay not */
    }
    uint64_t rng = 0x5eed;

    /* The relay's store: share1 and share3 registered with A and B; share3 holds a long chain. */
    char *dir = tu_tempdir("relay");
    struct sync_relay_store store;
    char why[512];
    if (sync_relay_store_open_sqlite(&store, why, sizeof(why), dir) != 0) {
        fprintf(stderr, "%s\n", why);
        return 2;
    }
    const struct sync_relay_store_ops *ops = store.ops;
    CHECK_INT(0, ops->share_register(store.ctx, share1.share.id, id_a.public_key, 1));
    CHECK_INT(0, ops->member_add(store.ctx, share1.share.id, id_b.public_key, 2));
    CHECK_INT(0, ops->share_register(store.ctx, share3.share.id, id_a.public_key, 1));
    CHECK_INT(0, ops->member_add(store.ctx, share3.share.id, id_b.public_key, 2));
    struct device long_author = {.name = "A3", .id = &id_a, .share = &share3};
    const size_t long_count = 600;
    CHECK_INT(0, ops->begin(store.ctx));
    for (size_t i = 0; i < long_count; i++) {
        struct own_record *rec = device_seal(&long_author, 20000, &rng);
        struct sync_record_header header;
        CHECK_INT(0, sync_record_peek(&header, rec->bytes, rec->len));
        CHECK_INT(0, ops->op_put(store.ctx, NULL, share3.share.id, header.author, header.seq,
                                 header.prev, rec->hash, header.epoch, rec->bytes, rec->len));
    }
    CHECK_INT(0, ops->commit(store.ctx));

    struct relay_log log = {{0}};
    uint16_t port = 0;
    struct sync_relay *relay = relay_start(&store, &log, &port);

    /* A uploads its chain and chunks. */
    struct device a = {.name = "A", .id = &id_a, .share = &share1, .upload_on_hello = true};
    const size_t n = 30;
    for (size_t i = 0; i < n; i++)
        device_seal(&a, 0, &rng);
    device_connect(&a, port);
    uint64_t author_a = sync_replica_id(id_a.public_key);
    uint64_t author_b = sync_replica_id(id_b.public_key);
    bool ok;
    WAIT_UNTIL(ok, crdt_vv_get(&a.acked, author_a) == n, 10000);
    CHECK(ok);
    CHECK_INT(1, a.hellos);
    CHECK_INT(0, a.relay_vv.len); /* the relay had nothing of share1 */
    uint8_t chunk_ids[4][SYNC_HASH_LEN];
    for (uint8_t c = 0; c < 3; c++) {
        struct crdt_buf buf = {0};
        seal_chunk(&buf, chunk_ids[c], (uint8_t)(0x10 + c), &id_a, &share1);
        device_send(&a, SYNC_MSG_CHUNK, buf.data, buf.len);
        crdt_buf_free(&buf);
    }
    memset(chunk_ids[3], 0xee, SYNC_HASH_LEN); /* never stored */
    struct sync_relay_stats stats;
    for (int tries = 0; tries < 5000; tries++) {
        sync_relay_stats(&stats, relay);
        if (stats.chunks_stored == 3)
            break;
        usleep(1000);
    }
    CHECK_INT(n, stats.records_stored);
    CHECK_INT(3, stats.chunks_stored);
    CHECK(stats.commits >= 1);

    /* B, empty, gets every record in order, the heads, and the chunks it asks for. */
    struct device b = {.name = "B", .id = &id_b, .share = &share1};
    device_connect(&b, port);
    WAIT_UNTIL(ok, b.heads_msgs == 1, 10000);
    CHECK(ok);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(n, b.ops_accepted);
    CHECK_INT(0, b.ops_refused);
    CHECK_INT(n, crdt_vv_get(&b.relay_vv, author_a));
    CHECK_INT(1, b.heads_count);
    CHECK_INT(0, b.heads_bad);
    pthread_mutex_unlock(&g_lock);
    device_want(&b, &chunk_ids[0][0], 4);
    WAIT_UNTIL(ok, b.chunks_ok == 3 && b.errors == 1, 5000);
    CHECK(ok);
    CHECK_INT(0, b.chunks_bad);
    CHECK_INT(SYNC_RELAY_ERR_NO_CHUNK, b.last_error_code);
    CHECK(strstr(b.last_error_text, "not held") != NULL);

    /* Live push: A's next record reaches B without B asking. */
    uint64_t sent_at = now_ms();
    struct own_record *next = device_seal(&a, 0, &rng);
    device_send(&a, SYNC_MSG_OPS, next->bytes, next->len);
    WAIT_UNTIL(ok, b.ops_accepted == n + 1, 5000);
    CHECK(ok);
    printf("live push: A's record reached B %llu ms after A sent it\n",
           (unsigned long long)(b.last_op_ms - sent_at));
    WAIT_UNTIL(ok, crdt_vv_get(&a.acked, author_a) == n + 1, 5000);
    CHECK(ok);
    CHECK_INT(0, a.ops_accepted); /* nothing echoed back to the author */

    /* B's own record goes to A the same way. */
    struct device b_own = {.name = "Bseal", .id = &id_b, .share = &share1};
    struct own_record *from_b = device_seal(&b_own, 0, &rng);
    device_send(&b, SYNC_MSG_OPS, from_b->bytes, from_b->len);
    WAIT_UNTIL(ok, a.ops_accepted == 1, 5000);
    CHECK(ok);
    WAIT_UNTIL(ok, crdt_vv_get(&b.acked, author_b) == 1, 5000);
    CHECK(ok);

    /* Refusals: each answered with its reason; nothing stored, nothing forwarded. */
    sync_relay_stats(&stats, relay);
    uint64_t refused_before = stats.records_refused;
    struct own_record *good = device_seal(&a, 0, &rng); /* seq n + 2 */
    uint8_t *bad = malloc(good->len);
    memcpy(bad, good->bytes, good->len);
    bad[good->len - 1] ^= 0x01; /* the signature */
    int errors = errors_of(&a);
    device_send(&a, SYNC_MSG_OPS, bad, good->len);
    expect_error(&a, errors, SYNC_REASON_FORGED, "bad signature");
    free(bad);
    /* Signed by A, claiming to be B's. */
    struct crdt_buf forged = {0};
    uint8_t plain[] = {1, 1, 5, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    util_forge(&forged, SYNC_RECORD_OPS, share1.share.id, author_b, 2, 1, from_b->hash,
               share1.keys[0].key, &id_a, plain, sizeof(plain));
    errors = errors_of(&a);
    device_send(&a, SYNC_MSG_OPS, forged.data, forged.len);
    expect_error(&a, errors, SYNC_REASON_FORGED, "bad signature");
    crdt_buf_free(&forged);
    /* By a device that is no member at the relay. */
    struct device m_own = {.name = "Mseal", .id = &mallory, .share = &share1};
    struct own_record *by_mallory = device_seal(&m_own, 0, &rng);
    errors = errors_of(&a);
    device_send(&a, SYNC_MSG_OPS, by_mallory->bytes, by_mallory->len);
    expect_error(&a, errors, SYNC_REASON_UNKNOWN_AUTHOR, "not a member");
    /* A fork of record 2, and a gap. */
    struct device fork_src = {.name = "Afork", .id = &id_a, .share = &share1};
    device_seal(&fork_src, 0, &rng);
    struct own_record *fork2 = device_seal(&fork_src, 7, &rng);
    errors = errors_of(&a);
    device_send(&a, SYNC_MSG_OPS, fork2->bytes, fork2->len);
    expect_error(&a, errors, SYNC_REASON_FORK, "forks the chain");
    device_seal(&a, 0, &rng);                                /* n + 3, kept back */
    struct own_record *after_gap = device_seal(&a, 0, &rng); /* n + 4 */
    errors = errors_of(&a);
    device_send(&a, SYNC_MSG_OPS, after_gap->bytes, after_gap->len);
    expect_error(&a, errors, SYNC_REASON_DROPPED, "leaves a gap");
    /* A record of another share. */
    struct device other = {.name = "Aother", .id = &id_a, .share = &share2};
    struct own_record *elsewhere = device_seal(&other, 0, &rng);
    errors = errors_of(&a);
    device_send(&a, SYNC_MSG_OPS, elsewhere->bytes, elsewhere->len);
    expect_error(&a, errors, SYNC_REASON_WRONG_SHARE, "another share");
    sync_relay_stats(&stats, relay);
    CHECK_INT(refused_before + 6, stats.records_refused);
    uint64_t head = 0;
    pthread_mutex_lock(&g_lock);
    CHECK_INT(n + 1, b.ops_accepted); /* none of them reached B */
    pthread_mutex_unlock(&g_lock);
    /* The honest record n + 2 still goes through, and on to B. */
    device_send(&a, SYNC_MSG_OPS, good->bytes, good->len);
    WAIT_UNTIL(ok, b.ops_accepted == n + 2, 5000);
    CHECK(ok);
    CHECK_INT(0, b.ops_refused);

    /* A device that is not a member is refused, and both sides say why. */
    struct device m = {.name = "M", .id = &mallory, .share = &share1};
    device_connect(&m, port);
    WAIT_UNTIL(ok, m.closes >= 1, 5000);
    CHECK(ok);
    device_disconnect(&m);
    CHECK_INT(0, m.opens);
    CHECK_INT(-ECONNREFUSED, m.first_error);
    CHECK(strstr(m.first_why, "not a member") != NULL);
    char hex[17], share_hex[17], expected[128];
    sodium_bin2hex(hex, sizeof(hex), mallory.public_key, 8);
    sodium_bin2hex(share_hex, sizeof(share_hex), share1.share.id, 8);
    snprintf(expected, sizeof(expected), "refused device %s: not a member of share %s", hex,
             share_hex);
    pthread_mutex_lock(&g_lock);
    CHECK(strstr(log.text, expected) != NULL);
    pthread_mutex_unlock(&g_lock);

    /* Trust on first use: D opens share2; E, arriving later, is not let in. */
    struct device d = {.name = "D", .id = &id_d, .share = &share2, .upload_on_hello = true};
    device_seal(&d, 0, &rng);
    device_connect(&d, port);
    uint64_t author_d = sync_replica_id(id_d.public_key);
    WAIT_UNTIL(ok, crdt_vv_get(&d.acked, author_d) == 1, 5000);
    CHECK(ok);
    struct device e = {.name = "E", .id = &id_e, .share = &share2};
    device_connect(&e, port);
    WAIT_UNTIL(ok, e.closes >= 1, 5000);
    CHECK(ok);
    device_disconnect(&e);
    CHECK_INT(0, e.opens);
    CHECK_INT(-ECONNREFUSED, e.first_error);
    sync_relay_stats(&stats, relay);
    CHECK_INT(1, stats.shares_created);
    pthread_mutex_lock(&g_lock);
    CHECK(strstr(log.text, "registered on first use") != NULL);
    pthread_mutex_unlock(&g_lock);

    /* A long chain (600 records, 12 MB) streams through the relay's 256 KiB send queue. */
    struct device b3 = {.name = "B3", .id = &id_b, .share = &share3};
    uint64_t start = now_ms();
    device_connect(&b3, port);
    WAIT_UNTIL(ok, b3.heads_msgs == 1, 120000);
    CHECK(ok);
    CHECK_INT(long_count, b3.ops_accepted);
    CHECK_INT(0, b3.ops_refused);
    CHECK_INT(0, b3.heads_bad);
    sync_relay_stats(&stats, relay);
    /* The queue never held more than the high-water mark plus one record. */
    CHECK(stats.max_queued < RELAY_HIGH_WATER + 21000 + 256);
    printf("long chain: %zu records to a new device in %llu ms; relay send queue peak %zu KiB\n",
           long_count, (unsigned long long)(now_ms() - start), stats.max_queued >> 10);
    device_free(&b3);

    /* The relay restarts: everything is still there. */
    device_free(&a);
    device_free(&b);
    device_free(&d);
    sync_relay_free(relay);
    sync_relay_store_close(&store);
    if (sync_relay_store_open_sqlite(&store, why, sizeof(why), dir) != 0) {
        fprintf(stderr, "%s\n", why);
        return 2;
    }
    uint8_t head_hash[SYNC_HASH_LEN];
    CHECK_INT(0, store.ops->head(store.ctx, &head, head_hash, share1.share.id, author_a));
    CHECK_INT(n + 2, head);
    CHECK(memcmp(head_hash, good->hash, SYNC_HASH_LEN) == 0);
    relay = relay_start(&store, &log, &port);
    struct device fresh = {.name = "B2", .id = &id_b, .share = &share1};
    device_connect(&fresh, port);
    WAIT_UNTIL(ok, fresh.heads_msgs == 1, 10000);
    CHECK(ok);
    CHECK_INT(n + 3, fresh.ops_accepted); /* A's n + 2 and B's one */
    CHECK_INT(2, fresh.heads_count);
    CHECK_INT(0, fresh.heads_bad);
    device_want(&fresh, &chunk_ids[0][0], 3);
    WAIT_UNTIL(ok, fresh.chunks_ok == 3, 5000);
    CHECK(ok);
    struct device d2 = {.name = "D2", .id = &id_d, .share = &share2};
    device_connect(&d2, port);
    WAIT_UNTIL(ok, d2.heads_msgs == 1, 5000);
    CHECK(ok);
    CHECK_INT(1, d2.ops_accepted);
    device_free(&fresh);
    device_free(&d2);
    sync_relay_free(relay);
    sync_relay_store_close(&store);

    test_failures_and_protocol(&rng);

    device_free(&long_author);
    device_free(&b_own);
    device_free(&m_own);
    device_free(&fork_src);
    device_free(&other);
    device_free(&m);
    device_free(&e);
    tu_rmtree(dir);
    return test_finish("test-sync-relay");
}
