/*
 * sync/relay: see relay.h; the protocol is in README.md, "Relay".
 *
 * Everything here runs on the relay's loop thread (sync/net), the store
 * included, so no lock guards the sessions; only the counters, which other
 * threads read, take one.
 *
 * Group commit. Records and chunks that arrive are put inside one store
 * group, opened by the first put and committed by work posted to the loop,
 * which runs after the read that brought them has been handled: one fsync
 * per network read rather than per record. ACKs, pushes, and any reading of
 * the store for a device (pump, HELLO) commit the open group first, so
 * nothing is acknowledged, forwarded or claimed before it is durable.
 *
 * Sessions outlive their connection's `closed` callback while one of the
 * session's own callbacks is still on the stack (busy): a callback may end
 * its connection, and the memory goes when the outermost one returns.
 */
#include "sync/relay.h"

#include "sync/record.h"
#include "sync/wire.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cursor {
    uint64_t author;
    uint64_t seq; /* the device holds this author's records 1..seq */
};

struct session {
    struct sync_relay *relay;
    struct sync_net_conn *conn;
    struct session *prev, *next; /* the relay's live sessions */
    uint8_t share[SYNC_SHARE_ID_LEN];
    uint8_t key[SYNC_PUBLIC_KEY_LEN];
    char key_hex[17];
    bool ready;      /* membership settled: the session may use the store */
    bool hello_seen; /* cursors come from the device's HELLO */
    bool heads_sent; /* caught up once, and told so */
    bool pumping;
    bool read_paused; /* too many chunk ids queued */
    bool dead;        /* the connection is gone; free when no longer busy */
    int busy;
    struct cursor *cursors;
    size_t cursor_len, cursor_cap;
    uint8_t *wants; /* queued chunk ids, SYNC_HASH_LEN each: [want_head, want_len) */
    size_t want_head, want_len, want_cap;
    struct crdt_vv acks; /* to ACK after the commit: author -> highest seq */
};

struct head_entry {
    uint64_t author;
    uint64_t seq;
    uint8_t hash[SYNC_HASH_LEN];
};

struct sync_relay {
    struct sync_net *net;
    struct sync_relay_store *store;
    sync_net_log_fn log;
    void *log_ctx;
    size_t batch_records, batch_bytes;
    struct session *sessions;
    bool group_open;    /* a store group holds puts not yet committed */
    bool commit_posted; /* commit_cb is queued on the loop */
    /* Shares that gained records in the open group: their members get pushes after commit. */
    uint8_t (*changed)[SYNC_SHARE_ID_LEN];
    size_t changed_len, changed_cap;
    struct crdt_buf wire;     /* scratch for encoding messages */
    struct head_entry *heads; /* scratch for a share's heads */
    size_t heads_len, heads_cap;
    pthread_mutex_t stats_lock;
    struct sync_relay_stats stats;
};

/* ---------- small things ---------- */

static void relay_log(struct sync_relay *relay, enum sync_net_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void relay_log(struct sync_relay *relay, enum sync_net_log_level level, const char *fmt, ...)
{
    if (!relay->log)
        return;
    char line[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(line, sizeof(line), fmt, args);
    va_end(args);
    relay->log(relay->log_ctx, level, line);
}

#define STAT_ADD(relay, field, n)                                                                  \
    do {                                                                                           \
        pthread_mutex_lock(&(relay)->stats_lock);                                                  \
        (relay)->stats.field += (n);                                                               \
        pthread_mutex_unlock(&(relay)->stats_lock);                                                \
    } while (0)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *hex8(char out[17], const uint8_t *bytes)
{
    sodium_bin2hex(out, 17, bytes, 8);
    return out;
}

static const char *store_msg(struct sync_relay *relay)
{
    return relay->store->ops->errmsg(relay->store->ctx);
}

/* Encodes `msg` into the scratch buffer and sends it; 0 or -errno (-EPIPE once closing). */
static int send_msg(struct session *session, const struct sync_msg *msg)
{
    struct sync_relay *relay = session->relay;
    relay->wire.len = 0;
    int rc = sync_wire_encode(&relay->wire, msg);
    if (rc == 0)
        rc = sync_net_conn_send(session->conn, relay->wire.data, relay->wire.len);
    if (rc == 0) {
        size_t queued = sync_net_conn_queued(session->conn);
        pthread_mutex_lock(&relay->stats_lock);
        if (queued > relay->stats.max_queued)
            relay->stats.max_queued = queued;
        pthread_mutex_unlock(&relay->stats_lock);
    }
    /* A large record leaves a large scratch buffer: do not keep more than a batch's worth. */
    if (relay->wire.cap > 2 * SYNC_WIRE_MESSAGE_MAX)
        crdt_buf_free(&relay->wire);
    return rc;
}

/* Sends an ERROR (code and a line of printable ASCII). */
static void send_error(struct session *session, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void send_error(struct session *session, uint32_t code, const char *fmt, ...)
{
    char text[SYNC_WIRE_ERROR_TEXT_MAX + 1];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);
    for (char *c = text; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
    struct sync_msg msg = {.type = SYNC_MSG_ERROR};
    msg.error.code = code;
    msg.error.text = text;
    msg.error.len = strlen(text);
    /* The connection may be closing: then the device learns nothing more anyway. */
    int rc = send_msg(session, &msg);
    (void)rc;
}

/* ---------- sessions ---------- */

static void session_free(struct session *session)
{
    free(session->cursors);
    free(session->wants);
    crdt_vv_free(&session->acks);
    free(session);
}

static void session_enter(struct session *session)
{
    session->busy++;
}

/* Leaves a callback; frees the session if its connection went meanwhile. */
static void session_leave(struct session *session)
{
    if (--session->busy == 0 && session->dead)
        session_free(session);
}

static uint64_t cursor_get(const struct session *session, uint64_t author)
{
    for (size_t i = 0; i < session->cursor_len; i++)
        if (session->cursors[i].author == author)
            return session->cursors[i].seq;
    return 0;
}

/* Raises the device's known head for `author` (never lowers it). */
static int cursor_raise(struct session *session, uint64_t author, uint64_t seq)
{
    for (size_t i = 0; i < session->cursor_len; i++) {
        if (session->cursors[i].author == author) {
            if (seq > session->cursors[i].seq)
                session->cursors[i].seq = seq;
            return 0;
        }
    }
    if (session->cursor_len == session->cursor_cap) {
        size_t cap = session->cursor_cap ? session->cursor_cap * 2 : 8;
        struct cursor *grown = realloc(session->cursors, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        session->cursors = grown;
        session->cursor_cap = cap;
    }
    session->cursors[session->cursor_len++] = (struct cursor){.author = author, .seq = seq};
    return 0;
}

/* ---------- the store: heads, groups ---------- */

static int collect_head(void *ctx, uint64_t author, uint64_t seq, const uint8_t hash[32])
{
    struct sync_relay *relay = ctx;
    if (relay->heads_len == relay->heads_cap) {
        size_t cap = relay->heads_cap ? relay->heads_cap * 2 : 16;
        struct head_entry *grown = realloc(relay->heads, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        relay->heads = grown;
        relay->heads_cap = cap;
    }
    struct head_entry *entry = &relay->heads[relay->heads_len++];
    entry->author = author;
    entry->seq = seq;
    memcpy(entry->hash, hash, SYNC_HASH_LEN);
    return 0;
}

static int head_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct head_entry *)a)->author, y = ((const struct head_entry *)b)->author;
    return x < y ? -1 : x > y;
}

/* The share's heads into relay->heads, sorted by author (the wire's order). */
static int load_heads(struct sync_relay *relay, const uint8_t share[SYNC_SHARE_ID_LEN])
{
    relay->heads_len = 0;
    int rc = relay->store->ops->heads(relay->store->ctx, share, collect_head, relay);
    if (rc)
        return rc;
    if (relay->heads_len > 1)
        qsort(relay->heads, relay->heads_len, sizeof(*relay->heads), head_cmp);
    return 0;
}

static void group_commit(struct sync_relay *relay);

static void commit_cb(void *ctx)
{
    struct sync_relay *relay = ctx;
    relay->commit_posted = false;
    group_commit(relay);
}

/* Opens the store group if none is open, and makes sure a commit follows. */
static int group_ensure(struct sync_relay *relay)
{
    if (!relay->group_open) {
        int rc = relay->store->ops->begin(relay->store->ctx);
        if (rc)
            return rc;
        relay->group_open = true;
    }
    if (!relay->commit_posted && sync_net_post(relay->net, commit_cb, relay) == 0)
        relay->commit_posted = true;
    /* If the post failed (the loop is stopping), the message handler commits at once. */
    return 0;
}

static void mark_changed(struct sync_relay *relay, const uint8_t share[SYNC_SHARE_ID_LEN])
{
    for (size_t i = 0; i < relay->changed_len; i++)
        if (memcmp(relay->changed[i], share, SYNC_SHARE_ID_LEN) == 0)
            return;
    if (relay->changed_len == relay->changed_cap) {
        size_t cap = relay->changed_cap ? relay->changed_cap * 2 : 8;
        uint8_t(*grown)[SYNC_SHARE_ID_LEN] = realloc(relay->changed, cap * sizeof(*grown));
        if (!grown)
            return; /* only costs a push: members get the records at their next HELLO */
        relay->changed = grown;
        relay->changed_cap = cap;
    }
    memcpy(relay->changed[relay->changed_len++], share, SYNC_SHARE_ID_LEN);
}

/* ---------- streaming to a device ---------- */

static void pump(struct session *session);

static int send_record(void *ctx, const struct sync_relay_record *record)
{
    struct session *session = ctx;
    struct sync_msg msg = {.type = SYNC_MSG_OPS};
    msg.ops.record = record->bytes;
    msg.ops.len = record->len;
    int rc = send_msg(session, &msg);
    if (rc)
        return rc;
    rc = cursor_raise(session, record->author, record->seq);
    if (rc)
        return rc;
    STAT_ADD(session->relay, records_sent, 1);
    /* Stop the batch as soon as the connection is full: the rest waits for `writable`. */
    return sync_net_conn_writable(session->conn) ? 0 : 1;
}

static int send_heads(struct session *session)
{
    struct sync_relay *relay = session->relay;
    struct sync_head *entries = NULL;
    if (relay->heads_len) {
        entries = calloc(relay->heads_len, sizeof(*entries));
        if (!entries)
            return -ENOMEM;
    }
    for (size_t i = 0; i < relay->heads_len; i++) {
        entries[i].author = relay->heads[i].author;
        entries[i].seq = relay->heads[i].seq;
        memcpy(entries[i].hash, relay->heads[i].hash, SYNC_HASH_LEN);
    }
    struct sync_msg msg = {.type = SYNC_MSG_HEADS};
    msg.heads.entries = entries;
    msg.heads.count = relay->heads_len;
    int rc = send_msg(session, &msg);
    free(entries);
    return rc;
}

/* Serves the oldest queued chunk id. */
static int serve_chunk(struct session *session)
{
    struct sync_relay *relay = session->relay;
    const uint8_t *id = session->wants + session->want_head * SYNC_HASH_LEN;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = relay->store->ops->chunk_get(relay->store->ctx, &bytes, &len, session->share, id);
    if (rc == -ENOENT) {
        char hex[2 * SYNC_HASH_LEN + 1];
        sodium_bin2hex(hex, sizeof(hex), id, SYNC_HASH_LEN);
        send_error(session, SYNC_RELAY_ERR_NO_CHUNK, "chunk %s is not held by the relay", hex);
        rc = 0;
    } else if (rc == 0) {
        struct sync_msg msg = {.type = SYNC_MSG_CHUNK};
        msg.chunk.record = bytes;
        msg.chunk.len = len;
        rc = send_msg(session, &msg);
        free(bytes);
        if (rc == 0)
            STAT_ADD(relay, chunks_sent, 1);
    }
    session->want_head++;
    session->want_len--;
    if (session->want_len == 0)
        session->want_head = 0;
    return rc;
}

/* Ends a session's connection after a store failure (the device retries later). */
static void session_storage_failed(struct session *session, int rc, const char *what)
{
    relay_log(session->relay, SYNC_NET_LOG_ERROR, "device %s: failed while %s (%s): %s",
              session->key_hex, what, strerror(-rc), store_msg(session->relay));
    send_error(session, SYNC_RELAY_ERR_STORAGE, "the relay could not store or read records");
    sync_net_conn_close(session->conn, rc, "relay storage failed");
}

/*
 * Sends what the device lacks while its connection takes more: each
 * author's missing records in seq order (a bounded batch at a time), HEADS
 * once it is caught up, then the chunks it asked for. Runs again on
 * `writable`, after each commit of its share, and when it asks for chunks.
 */
static void pump(struct session *session)
{
    struct sync_relay *relay = session->relay;
    if (!session->ready || !session->hello_seen || session->pumping || session->dead)
        return;
    /* Nothing leaves the relay before it is durable: commit what is pending first. */
    if (relay->group_open)
        group_commit(relay);
    if (session->dead || session->pumping)
        return;
    session->pumping = true;
    int rc = 0;
    const char *what = "streaming records";
    while (!session->dead && sync_net_conn_writable(session->conn)) {
        rc = load_heads(relay, session->share);
        if (rc)
            break;
        bool sent = false;
        for (size_t i = 0; i < relay->heads_len; i++) {
            uint64_t have = cursor_get(session, relay->heads[i].author);
            if (have >= relay->heads[i].seq)
                continue;
            size_t count = 0;
            rc = relay->store->ops->op_read(relay->store->ctx, &count, session->share,
                                            relay->heads[i].author, have + 1, relay->batch_records,
                                            relay->batch_bytes, send_record, session);
            if (rc == 1)
                rc = 0; /* the connection filled up */
            sent = count > 0;
            break;
        }
        if (rc)
            break;
        if (sent)
            continue;
        if (!session->heads_sent) {
            what = "sending heads";
            rc = send_heads(session);
            session->heads_sent = true;
            if (rc)
                break;
            continue;
        }
        if (session->want_len) {
            what = "serving a chunk";
            rc = serve_chunk(session);
            if (rc)
                break;
            continue;
        }
        break;
    }
    session->pumping = false;
    if (session->dead)
        return;
    if (rc == -EPIPE || rc == -ENOTCONN)
        return; /* the connection is closing */
    if (rc) {
        session_storage_failed(session, rc, what);
        return;
    }
    if (session->read_paused && session->want_len <= SYNC_RELAY_WANT_MAX / 2) {
        session->read_paused = false;
        sync_net_conn_pause(session->conn, false);
    }
}

/* ---------- commit, ACK, push ---------- */

static void group_commit(struct sync_relay *relay)
{
    if (!relay->group_open)
        return;
    relay->group_open = false;
    int rc = relay->store->ops->commit(relay->store->ctx);
    if (rc) {
        /* Nothing of the group is stored: every session waiting for an ACK must resend. */
        relay_log(relay, SYNC_NET_LOG_ERROR, "relay storage failed while committing: %s",
                  store_msg(relay));
        for (struct session *session = relay->sessions, *next; session; session = next) {
            next = session->next;
            if (session->acks.len) {
                crdt_vv_free(&session->acks);
                session_enter(session);
                session_storage_failed(session, rc, "committing");
                session_leave(session);
            }
        }
        relay->changed_len = 0;
        return;
    }
    STAT_ADD(relay, commits, 1);
    for (struct session *session = relay->sessions, *next; session; session = next) {
        next = session->next;
        session_enter(session);
        if (session->acks.len) {
            struct sync_msg msg = {.type = SYNC_MSG_ACK};
            msg.ack.records = session->acks;
            int sent = send_msg(session, &msg);
            (void)sent; /* a closing connection: its device resends and gets ACKed next time */
            crdt_vv_free(&session->acks);
        }
        bool changed = false;
        for (size_t i = 0; i < relay->changed_len && !changed; i++)
            changed = memcmp(relay->changed[i], session->share, SYNC_SHARE_ID_LEN) == 0;
        if (changed)
            pump(session);
        session_leave(session);
    }
    relay->changed_len = 0;
}

/* ---------- records from a device ---------- */

/* Refuses a record: an ERROR with the reason, a log line, a count; the session goes on. */
static void refuse(struct session *session, enum sync_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void refuse(struct session *session, enum sync_reason reason, const char *fmt, ...)
{
    char text[SYNC_WIRE_ERROR_TEXT_MAX - 64];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof(text), fmt, args);
    va_end(args);
    STAT_ADD(session->relay, records_refused, 1);
    relay_log(session->relay, SYNC_NET_LOG_WARN, "device %s: refused a record: %s: %s",
              session->key_hex, sync_reason_str(reason), text);
    send_error(session, (uint32_t)reason, "%s: %s", sync_reason_str(reason), text);
}

/*
 * Checks a record the relay can check without the share key: structure,
 * kind, share, and that its author is a member whose key verifies the
 * signature. 1 if refused (the device was told), 0 if good, -errno if the
 * store failed.
 */
static int check_record(struct session *session, struct sync_record_header *header,
                        const uint8_t *bytes, size_t len, enum sync_record_kind kind)
{
    struct sync_relay *relay = session->relay;
    int rc = sync_record_peek(header, bytes, len);
    if (rc) {
        refuse(session, rc == -EPROTONOSUPPORT ? SYNC_REASON_VERSION : SYNC_REASON_MALFORMED,
               "the record does not parse");
        return 1;
    }
    if (header->kind != kind) {
        refuse(session, SYNC_REASON_MALFORMED, "a record of the wrong kind");
        return 1;
    }
    if (memcmp(header->share_id, session->share, SYNC_SHARE_ID_LEN) != 0) {
        refuse(session, SYNC_REASON_WRONG_SHARE, "a record of another share");
        return 1;
    }
    struct sync_relay_member member;
    rc = relay->store->ops->member_get(relay->store->ctx, &member, session->share, header->author);
    if (rc == -ENOENT) {
        refuse(session, SYNC_REASON_UNKNOWN_AUTHOR, "author %016llx is not a member",
               (unsigned long long)header->author);
        return 1;
    }
    if (rc)
        return rc;
    /*
     * A revoked member's records still go: its records from before the
     * revocation are history every member keeps, and devices check each
     * record's key epoch themselves. A revoked device cannot connect.
     */
    if (len < SYNC_RECORD_SIG_LEN ||
        crypto_sign_verify_detached(bytes + len - SYNC_RECORD_SIG_LEN, bytes,
                                    len - SYNC_RECORD_SIG_LEN, member.public_key) != 0) {
        refuse(session, SYNC_REASON_FORGED, "record %llu of author %016llx: bad signature",
               (unsigned long long)header->seq, (unsigned long long)header->author);
        return 1;
    }
    return 0;
}

static int on_ops(struct session *session, const uint8_t *bytes, size_t len)
{
    struct sync_relay *relay = session->relay;
    struct sync_record_header header;
    int rc = check_record(session, &header, bytes, len, SYNC_RECORD_OPS);
    if (rc == 1)
        return 0;
    if (rc == 0)
        rc = group_ensure(relay);
    if (rc)
        return rc;
    uint8_t hash[SYNC_HASH_LEN];
    sync_record_hash(hash, bytes, len);
    bool added = false;
    rc = relay->store->ops->op_put(relay->store->ctx, &added, session->share, header.author,
                                   header.seq, header.prev, hash, header.epoch, bytes, len);
    if (rc == -ENOTUNIQ) {
        refuse(session, SYNC_REASON_FORK, "record %llu of author %016llx forks the chain held",
               (unsigned long long)header.seq, (unsigned long long)header.author);
        return 0;
    }
    if (rc == -ENODATA) {
        uint64_t head = 0;
        uint8_t head_hash[SYNC_HASH_LEN];
        if (relay->store->ops->head(relay->store->ctx, &head, head_hash, session->share,
                                    header.author) != 0)
            head = 0;
        refuse(session, SYNC_REASON_DROPPED,
               "record %llu of author %016llx leaves a gap: the relay holds up to %llu",
               (unsigned long long)header.seq, (unsigned long long)header.author,
               (unsigned long long)head);
        return 0;
    }
    if (rc)
        return rc;
    STAT_ADD(relay, records_stored, added ? 1 : 0);
    STAT_ADD(relay, records_held, added ? 0 : 1);
    /* The device holds every record of this author up to seq: none goes back to it. */
    rc = cursor_raise(session, header.author, header.seq);
    if (rc == 0)
        rc = crdt_vv_raise(&session->acks, header.author, header.seq);
    if (rc == 0 && added)
        mark_changed(relay, session->share);
    return rc;
}

static int on_chunk(struct session *session, const uint8_t *bytes, size_t len)
{
    struct sync_relay *relay = session->relay;
    struct sync_record_header header;
    int rc = check_record(session, &header, bytes, len, SYNC_RECORD_CHUNK);
    if (rc == 1)
        return 0;
    if (rc == 0)
        rc = group_ensure(relay);
    if (rc)
        return rc;
    bool added = false;
    rc = relay->store->ops->chunk_put(relay->store->ctx, &added, session->share, header.chunk_id,
                                      header.author, bytes, len);
    if (rc == 0 && added)
        STAT_ADD(relay, chunks_stored, 1);
    return rc;
}

/*
 * A member vouches for a device (an invite) or removes one. The channel
 * authenticated the sender, and only a current member gets this far, so
 * membership grows only through members. The echo tells the sender it is
 * stored. 1: refused (told to the device); else 0 or a store error.
 */
static int on_member(struct session *session, const struct sync_msg *msg)
{
    struct sync_relay *relay = session->relay;
    struct sync_relay_store *store = relay->store;
    int rc;
    if (msg->member.action == SYNC_MEMBER_ADD)
        rc = store->ops->member_add(store->ctx, session->share, msg->member.public_key, now_ns());
    else
        rc = store->ops->member_revoke(store->ctx, session->share,
                                       sync_replica_id(msg->member.public_key));
    if (rc == -EKEYREVOKED || rc == -EEXIST || rc == -ENOENT) {
        send_error(session, SYNC_RELAY_ERR_MEMBER, "%s",
                   rc == -EKEYREVOKED ? "that device was removed from the share for good"
                   : rc == -EEXIST    ? "another key already has that device's replica id"
                                      : "that device is not a member");
        return 1;
    }
    if (rc)
        return rc;
    char key_hex[17];
    hex8(key_hex, msg->member.public_key);
    relay_log(relay, SYNC_NET_LOG_INFO, "device %s %s device %s", session->key_hex,
              msg->member.action == SYNC_MEMBER_ADD ? "added" : "removed", key_hex);
    return send_msg(session, msg);
}

/* ---------- discovery ---------- */

struct addr_list {
    struct sync_relay *relay;
    const uint8_t *share;
    uint64_t skip; /* the asking device's own */
    struct sync_peer_addr entries[SYNC_WIRE_PEERS_MAX];
    char texts[SYNC_WIRE_PEERS_MAX][SYNC_RELAY_ADDR_MAX + 1];
    size_t count;
};

static int collect_addr(void *ctx, uint64_t replica, const char *addr, int64_t seen_ns)
{
    (void)seen_ns;
    struct addr_list *list = ctx;
    struct sync_relay_member member;
    if (replica == list->skip || list->count == SYNC_WIRE_PEERS_MAX ||
        list->relay->store->ops->member_get(list->relay->store->ctx, &member, list->share,
                                            replica) != 0 ||
        member.revoked)
        return 0;
    snprintf(list->texts[list->count], sizeof(list->texts[0]), "%s", addr);
    list->entries[list->count] = (struct sync_peer_addr){
        .replica = replica, .addr = list->texts[list->count], .len = strlen(addr)};
    list->count++;
    return 0;
}

/*
 * A device says where it listens (its own entry only; a wildcard host is the
 * address it connects from). The relay keeps it, tells the share's other
 * connected members, and answers with theirs: devices that can reach each
 * other then sync directly, and the relay only bridges the rest. A relay that
 * lies here costs nothing but a connection: devices check each other's keys.
 */
static int on_peers(struct session *session, const struct sync_msg *msg)
{
    struct sync_relay *relay = session->relay;
    uint64_t self = sync_replica_id(session->key);
    for (size_t i = 0; i < msg->peers.count; i++) {
        const struct sync_peer_addr *entry = &msg->peers.entries[i];
        char addr[SYNC_RELAY_ADDR_MAX + 1], host[256];
        uint16_t port;
        snprintf(addr, sizeof(addr), "%.*s", (int)entry->len, entry->addr);
        if (entry->replica != self || sync_net_parse_addr(host, sizeof(host), &port, addr, false))
            continue;
        if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::")) {
            char from[256];
            uint16_t from_port;
            if (sync_net_parse_addr(from, sizeof(from), &from_port,
                                    sync_net_conn_addr(session->conn), true) != 0)
                continue;
            snprintf(addr, sizeof(addr), strchr(from, ':') ? "[%s]:%u" : "%s:%u", from, port);
        }
        int rc =
            relay->store->ops->addr_put(relay->store->ctx, session->share, self, addr, now_ns());
        if (rc)
            return rc;
        struct sync_peer_addr told = {.replica = self, .addr = addr, .len = strlen(addr)};
        struct sync_msg tell = {.type = SYNC_MSG_PEERS};
        tell.peers.entries = &told;
        tell.peers.count = 1;
        for (struct session *other = relay->sessions; other; other = other->next)
            if (other != session && other->ready && !other->dead &&
                memcmp(other->share, session->share, SYNC_SHARE_ID_LEN) == 0)
                (void)send_msg(other, &tell); /* a closing one learns it at its next HELLO */
    }
    struct addr_list *list = calloc(1, sizeof(*list));
    if (!list)
        return -ENOMEM;
    list->relay = relay;
    list->share = session->share;
    list->skip = self;
    int rc = relay->store->ops->addrs(relay->store->ctx, session->share, collect_addr, list);
    if (!rc && list->count) {
        struct sync_msg reply = {.type = SYNC_MSG_PEERS};
        reply.peers.entries = list->entries;
        reply.peers.count = list->count;
        rc = send_msg(session, &reply);
    }
    free(list);
    return rc;
}

static int on_want(struct session *session, const uint8_t *ids, size_t count)
{
    if (session->want_head + session->want_len + count > session->want_cap) {
        /* Compact to the front, then grow if need be. */
        if (session->want_len && session->want_head)
            memmove(session->wants, session->wants + session->want_head * SYNC_HASH_LEN,
                    session->want_len * SYNC_HASH_LEN);
        session->want_head = 0;
        if (session->want_len + count > session->want_cap) {
            size_t cap = session->want_cap ? session->want_cap : 64;
            while (cap < session->want_len + count)
                cap *= 2;
            uint8_t *grown = realloc(session->wants, cap * SYNC_HASH_LEN);
            if (!grown)
                return -ENOMEM;
            session->wants = grown;
            session->want_cap = cap;
        }
    }
    memcpy(session->wants + (session->want_head + session->want_len) * SYNC_HASH_LEN, ids,
           count * SYNC_HASH_LEN);
    session->want_len += count;
    /* Stop taking requests until the queue halves: a device that asks and never reads waits. */
    if (session->want_len > SYNC_RELAY_WANT_MAX && !session->read_paused) {
        session->read_paused = true;
        STAT_ADD(session->relay, want_pauses, 1);
        sync_net_conn_pause(session->conn, true);
    }
    return 0;
}

static int on_hello(struct session *session, const struct sync_msg *msg)
{
    struct sync_relay *relay = session->relay;
    if (memcmp(msg->hello.share_id, session->share, SYNC_SHARE_ID_LEN) != 0) {
        send_error(session, SYNC_RELAY_ERR_PROTOCOL, "HELLO names another share");
        return -EPROTO;
    }
    /* Our heads must be durable before we claim them. */
    if (relay->group_open)
        group_commit(relay);
    if (session->dead)
        return 0;
    /* The device's heads: where streaming starts. A second HELLO starts over. */
    session->cursor_len = 0;
    for (size_t i = 0; i < msg->hello.vv.len; i++) {
        int rc =
            cursor_raise(session, msg->hello.vv.entries[i].replica, msg->hello.vv.entries[i].seq);
        if (rc)
            return rc;
    }
    int rc = load_heads(relay, session->share);
    if (rc) {
        session_storage_failed(session, rc, "reading heads");
        return 0;
    }
    struct sync_msg reply = {.type = SYNC_MSG_HELLO};
    memcpy(reply.hello.share_id, session->share, SYNC_SHARE_ID_LEN);
    reply.hello.version = SYNC_WIRE_VERSION;
    for (size_t i = 0; i < relay->heads_len && rc == 0; i++)
        rc = crdt_vv_raise(&reply.hello.vv, relay->heads[i].author, relay->heads[i].seq);
    if (rc == 0)
        rc = send_msg(session, &reply);
    crdt_vv_free(&reply.hello.vv);
    if (rc)
        return rc == -EPIPE ? 0 : rc;
    session->hello_seen = true;
    session->heads_sent = false;
    pump(session);
    return 0;
}

/* ---------- the transport's handler ---------- */

/* During the handshake: may this device connect for this share? */
static int relay_peer(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN],
                      const uint8_t key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    struct sync_relay *relay = ctx;
    char share_hex[17];
    hex8(share_hex, share);
    bool exists = false;
    int rc = relay->store->ops->share_exists(relay->store->ctx, &exists, share);
    if (rc) {
        relay_log(relay, SYNC_NET_LOG_ERROR, "relay storage failed while checking a member: %s",
                  store_msg(relay));
        snprintf(why, why_len, "the relay's storage failed");
        return -1;
    }
    if (!exists)
        return 0; /* a new share: registered with this device once the handshake succeeds */
    struct sync_relay_member member;
    rc = relay->store->ops->member_get(relay->store->ctx, &member, share, sync_replica_id(key));
    if (rc == 0 && memcmp(member.public_key, key, SYNC_PUBLIC_KEY_LEN) != 0)
        rc = -ENOENT;
    if (rc == -ENOENT) {
        snprintf(why, why_len, "not a member of share %s", share_hex);
        return -1;
    }
    if (rc) {
        snprintf(why, why_len, "the relay's storage failed");
        return -1;
    }
    if (member.revoked) {
        snprintf(why, why_len, "revoked from share %s", share_hex);
        return -1;
    }
    return 0;
}

/*
 * After the handshake: registers a new share with this device (trust on
 * first use, relay.h), or checks membership again (a share registered by
 * another device during this handshake). 0, 1 if not a member, or -errno.
 */
static int settle_membership(struct session *session)
{
    struct sync_relay *relay = session->relay;
    struct sync_relay_store *store = relay->store;
    char share_hex[17];
    hex8(share_hex, session->share);
    bool exists = false;
    int rc = store->ops->share_exists(store->ctx, &exists, session->share);
    if (rc)
        return rc;
    if (!exists) {
        rc = store->ops->share_register(store->ctx, session->share, session->key, now_ns());
        if (rc == 0) {
            STAT_ADD(relay, shares_created, 1);
            relay_log(relay, SYNC_NET_LOG_INFO,
                      "share %s: registered on first use, with device %s as its first member",
                      share_hex, session->key_hex);
            return 0;
        }
        if (rc != -EEXIST)
            return rc;
    }
    struct sync_relay_member member;
    rc = store->ops->member_get(store->ctx, &member, session->share, sync_replica_id(session->key));
    if (rc == -ENOENT ||
        (rc == 0 && (member.revoked || memcmp(member.public_key, session->key, 32) != 0)))
        return 1;
    return rc;
}

static void relay_open(void *ctx, struct sync_net_conn *conn)
{
    struct sync_relay *relay = ctx;
    struct session *session = calloc(1, sizeof(*session));
    if (!session) {
        sync_net_conn_close(conn, -ENOMEM, "out of memory");
        return;
    }
    session->relay = relay;
    session->conn = conn;
    if (sync_net_conn_peer(session->key, session->share, conn) != 0) {
        free(session);
        sync_net_conn_close(conn, -EPROTO, "no authenticated peer");
        return;
    }
    hex8(session->key_hex, session->key);
    session->next = relay->sessions;
    if (relay->sessions)
        relay->sessions->prev = session;
    relay->sessions = session;
    sync_net_conn_set_data(conn, session);
    session_enter(session);
    int rc = settle_membership(session);
    if (rc == 1) {
        send_error(session, SYNC_RELAY_ERR_MEMBER, "this device is not a member of the share");
        sync_net_conn_close(conn, -EACCES, "not a member of the share (registered meanwhile)");
    } else if (rc) {
        session_storage_failed(session, rc, "checking membership");
    } else {
        session->ready = true;
        STAT_ADD(relay, sessions, 1);
    }
    session_leave(session);
}

static int relay_message(void *ctx, struct sync_net_conn *conn, const uint8_t *bytes, size_t len)
{
    struct sync_relay *relay = ctx;
    struct session *session = sync_net_conn_data(conn);
    if (!session || !session->ready)
        return -EPROTO;
    struct sync_msg msg;
    int rc = sync_wire_decode(&msg, bytes, len);
    if (rc) {
        send_error(session, SYNC_REASON_MALFORMED, "a message that does not decode");
        return rc == -ENOMEM ? rc : -EBADMSG;
    }
    enum sync_msg_type type = msg.type;
    session_enter(session);
    switch (type) {
    case SYNC_MSG_HELLO:
        rc = on_hello(session, &msg);
        break;
    case SYNC_MSG_OPS:
        rc = on_ops(session, msg.ops.record, msg.ops.len);
        break;
    case SYNC_MSG_CHUNK:
        rc = on_chunk(session, msg.chunk.record, msg.chunk.len);
        break;
    case SYNC_MSG_WANT_CHUNKS:
        rc = on_want(session, msg.want.ids, msg.want.count);
        if (rc == 0)
            pump(session);
        break;
    case SYNC_MSG_HEADS:
    case SYNC_MSG_ACK:
        break; /* the device's view: the relay streams from HELLO and keeps no floors */
    case SYNC_MSG_PEERS:
        rc = on_peers(session, &msg);
        break;
    case SYNC_MSG_MEMBER:
        rc = on_member(session, &msg);
        if (rc == 1)
            rc = 0;
        break;
    case SYNC_MSG_ERROR:
        relay_log(relay, SYNC_NET_LOG_WARN, "device %s reports error %u: %.*s", session->key_hex,
                  msg.error.code, (int)msg.error.len, msg.error.text);
        break;
    }
    sync_msg_clear(&msg);
    if (rc && rc != -EPROTO && !session->dead) {
        /* A store failure (or out of memory): tell the device, and let it come back later. */
        relay_log(relay, SYNC_NET_LOG_ERROR, "device %s: failed handling %s (%s): %s",
                  session->key_hex, sync_msg_type_str(type), strerror(-rc), store_msg(relay));
        send_error(session, SYNC_RELAY_ERR_STORAGE, "the relay could not store or read records");
    }
    /* The loop is stopping and took no commit post: make the group durable now. */
    if (relay->group_open && !relay->commit_posted)
        group_commit(relay);
    session_leave(session);
    return rc;
}

static void relay_writable(void *ctx, struct sync_net_conn *conn)
{
    (void)ctx;
    struct session *session = sync_net_conn_data(conn);
    if (!session)
        return;
    session_enter(session);
    pump(session);
    session_leave(session);
}

static void relay_closed(void *ctx, struct sync_net_conn *conn, int error, const char *why)
{
    struct sync_relay *relay = ctx;
    (void)error;
    (void)why; /* sync/net logged it */
    struct session *session = sync_net_conn_data(conn);
    if (!session)
        return;
    sync_net_conn_set_data(conn, NULL);
    if (session->prev)
        session->prev->next = session->next;
    else
        relay->sessions = session->next;
    if (session->next)
        session->next->prev = session->prev;
    session->prev = session->next = NULL;
    session->dead = true;
    if (session->busy == 0)
        session_free(session);
}

/* ---------- life ---------- */

int sync_relay_new(struct sync_relay **out, const struct sync_relay_config *config)
{
    *out = NULL;
    if (!config || !config->store || !config->store->ops || !config->net.identity)
        return -EINVAL;
    struct sync_relay *relay = calloc(1, sizeof(*relay));
    if (!relay)
        return -ENOMEM;
    relay->store = config->store;
    relay->log = config->net.log;
    relay->log_ctx = config->net.log_ctx;
    relay->batch_records = config->batch_records ? config->batch_records : SYNC_RELAY_BATCH_RECORDS;
    relay->batch_bytes = config->batch_bytes ? config->batch_bytes : SYNC_RELAY_BATCH_BYTES;
    pthread_mutex_init(&relay->stats_lock, NULL);
    int rc = sync_net_new(&relay->net, &config->net);
    if (rc == 0)
        rc = sync_net_start(relay->net);
    if (rc) {
        sync_net_free(relay->net);
        pthread_mutex_destroy(&relay->stats_lock);
        free(relay);
        return rc;
    }
    *out = relay;
    return 0;
}

int sync_relay_listen(struct sync_relay *relay, uint16_t *port_out, const char *host, uint16_t port)
{
    struct sync_net_handler handler = {
        .peer = relay_peer,
        .open = relay_open,
        .message = relay_message,
        .writable = relay_writable,
        .closed = relay_closed,
        .ctx = relay,
    };
    return sync_net_listen(relay->net, port_out, host, port, &handler);
}

void sync_relay_stats(struct sync_relay_stats *out, struct sync_relay *relay)
{
    pthread_mutex_lock(&relay->stats_lock);
    *out = relay->stats;
    pthread_mutex_unlock(&relay->stats_lock);
}

void sync_relay_free(struct sync_relay *relay)
{
    if (!relay)
        return;
    /* Runs the pending commit (posted work runs at stop), then closes every session. */
    sync_net_free(relay->net);
    if (relay->group_open) {
        /* Only if the commit could not be posted and no message came after: commit here. */
        group_commit(relay);
    }
    free(relay->changed);
    free(relay->heads);
    crdt_buf_free(&relay->wire);
    pthread_mutex_destroy(&relay->stats_lock);
    free(relay);
}
