/*
 * sync/agent: sessions between this device and its relay (see agent.h).
 * Everything but sync_agent_poke/status/stop runs on the transport's loop
 * thread; the replica is touched only between config.lock and config.unlock.
 */
#include "sync/agent.h"

#include "meta/store.h"
#include "sync/invite.h"
#include "sync/record.h"
#include "sync/wire.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * How often the agent looks for what never came (tick), and how long a
 * chunk asked for may take, and nothing at all come, before it is asked for
 * again of every session.
 */
#define TICK_MS 2000
/* The least time between two seals of this device's changes (seal_and_push). */
#define SEAL_GAP_NS  (30 * 1000000ll)
#define ASK_AGAIN_NS (10 * 1000000000ll)
/* Records read from the local store per step of a stream. */
#define STREAM_BATCH 16
/* The settings that name the share's relay and pin its key on first contact. */
#define RELAY_SETTING     "sync.relay"
#define RELAY_KEY_SETTING "sync.relay_key"
/* The devices this share syncs with directly (weft peer add): space-separated HOST:PORT. */
#define PEERS_SETTING "sync.peers"
/*
 * Membership changes the relay has not confirmed yet, kept until it echoes
 * them (so an invite made offline, or before a restart, still reaches it):
 * space-separated "add:HEX" / "revoke:HEX" of public keys.
 */
#define MEMBERS_SETTING "sync.relay_members"

/*
 * An op record on its way: the chunk records the other side may lack go
 * first, as the connection drains (a 4 GiB file's would not fit in memory
 * at once), then the record.
 */
struct outgoing {
    uint8_t *record; /* owned */
    size_t len;
    uint64_t author, seq;
    uint8_t (*ids)[SYNC_HASH_LEN]; /* owned */
    size_t count, next;
};

struct session {
    struct sync_agent *agent;
    struct sync_net_conn *conn;
    bool relay; /* the share's relay, else a device of the share (a peer) */
    bool hello_seen;
    struct crdt_vv remote;       /* what the other side holds or was sent: author -> record seq */
    struct crdt_vv acked;        /* what it said it holds (HELLO, ACK): author -> record seq */
    bool refused_unknown;        /* a record of a member not known yet was refused */
    uint64_t applied_at_refusal; /* the device's records_applied then */
    struct outgoing *out;        /* an op record whose chunks are being pushed first */
    struct session *next;
};

struct sync_agent {
    struct sync_agent_config config;
    char *records_dir;
    struct sync_net *net;
    struct sync_device *device;
    struct sync_net_dialer *dialer;
    atomic_bool direct;    /* peers configured: records may come from elsewhere than the relay */
    char listen_host[256]; /* where this device listens for peers ("" if not), as configured */
    bool group_open;       /* records taken in since the last commit of the record store */
    char **dialed;         /* addresses dialed as peers, under status_lock */
    size_t dialed_len;
    struct sync_identity identity;
    struct session *sessions;
    /*
     * The highest head the relay ever claimed per author, across reconnects:
     * an honest relay never goes back (rollbacks). Loop thread only.
     */
    struct crdt_vv claimed;
    atomic_bool poke_pending;
    int64_t last_seal_ns;    /* loop thread only, as seal_deferred and last_arrival_ns */
    int64_t last_arrival_ns; /* when a record last came from any session */
    bool seal_deferred;      /* a seal waits for the gap after the last one (sync_net_later) */
    pthread_mutex_t status_lock;
    struct sync_agent_status status;
};

static int dial_peer(struct sync_agent *agent, const char *addr);
static void learn_peers(struct session *session, const struct sync_msg *msg);

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void agent_log(struct sync_agent *agent, enum sync_net_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void agent_log(struct sync_agent *agent, enum sync_net_log_level level, const char *fmt, ...)
{
    char line[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(line, sizeof(line), fmt, args);
    va_end(args);
    if (level <= SYNC_NET_LOG_WARN) {
        pthread_mutex_lock(&agent->status_lock);
        snprintf(agent->status.last_error, sizeof(agent->status.last_error), "%s", line);
        pthread_mutex_unlock(&agent->status_lock);
    }
    if (agent->config.log)
        agent->config.log(agent->config.log_ctx, level, line);
}

static void lock(struct sync_agent *agent)
{
    if (agent->config.lock)
        agent->config.lock(agent->config.lock_ctx);
}

static void unlock(struct sync_agent *agent)
{
    if (agent->config.unlock)
        agent->config.unlock(agent->config.lock_ctx);
}

static void count(struct sync_agent *agent, uint64_t *field)
{
    pthread_mutex_lock(&agent->status_lock);
    (*field)++;
    pthread_mutex_unlock(&agent->status_lock);
}

/* ---------- sending ---------- */

static int send_msg(struct session *session, const struct sync_msg *msg)
{
    struct crdt_buf buf = {0};
    int rc = sync_wire_encode(&buf, msg);
    if (!rc)
        rc = sync_net_conn_send(session->conn, buf.data, buf.len);
    crdt_buf_free(&buf);
    return rc;
}

struct heads_vv {
    struct crdt_vv vv;
    int rc;
};

static int add_head(void *ctx, uint64_t author, uint64_t seq, const uint8_t hash[SYNC_HASH_LEN])
{
    (void)hash;
    struct heads_vv *out = ctx;
    return seq ? crdt_vv_raise(&out->vv, author, seq) : 0;
}

/* What this device keeps: author -> highest record seq. */
static int kept_heads(struct sync_agent *agent, struct crdt_vv *out)
{
    struct sync_relay_store *store = sync_device_records(agent->device);
    struct heads_vv heads = {{0}, 0};
    int rc = store->ops->heads(store->ctx, sync_device_share_id(agent->device), add_head, &heads);
    if (rc)
        crdt_vv_free(&heads.vv);
    *out = heads.vv;
    return rc;
}

static int send_hello(struct session *session)
{
    struct sync_msg msg = {.type = SYNC_MSG_HELLO};
    memcpy(msg.hello.share_id, sync_device_share_id(session->agent->device), SYNC_SHARE_ID_LEN);
    msg.hello.version = 1;
    int rc = kept_heads(session->agent, &msg.hello.vv);
    if (!rc)
        rc = send_msg(session, &msg);
    crdt_vv_free(&msg.hello.vv);
    return rc;
}

struct copied {
    uint8_t *bytes[STREAM_BATCH];
    size_t lens[STREAM_BATCH];
    uint64_t seqs[STREAM_BATCH];
    size_t len;
};

static int copy_record(void *ctx, const struct sync_relay_record *record)
{
    struct copied *out = ctx;
    if (out->len == STREAM_BATCH)
        return 1;
    uint8_t *bytes = malloc(record->len);
    if (!bytes)
        return -ENOMEM;
    memcpy(bytes, record->bytes, record->len);
    out->bytes[out->len] = bytes;
    out->lens[out->len] = record->len;
    out->seqs[out->len++] = record->seq;
    return 0;
}

static void copied_free(struct copied *copied)
{
    for (size_t i = 0; i < copied->len; i++)
        free(copied->bytes[i]);
    copied->len = 0;
}

/*
 * The chunks a session may lack for op record `seq` of `author`: of this
 * device's own records, those first sealed with it (or, not remembered, all
 * it names); of others' records, all it names that are here, for a relay
 * only (it asks nobody; a device asks for what it lacks: WANT_CHUNKS).
 */
static int chunks_to_push(struct session *session, uint8_t (**ids)[SYNC_HASH_LEN], size_t *count,
                          const uint8_t *bytes, size_t len, uint64_t author, uint64_t seq)
{
    struct sync_device *device = session->agent->device;
    *ids = NULL;
    *count = 0;
    if (author == sync_replica_id(session->agent->identity.public_key)) {
        int rc = sync_device_fresh_chunks(device, ids, count, seq);
        if (rc != -ENOENT)
            return rc;
    } else if (!session->relay) {
        return 0;
    }
    return sync_device_chunks_named(device, ids, count, bytes, len);
}

static void outgoing_free(struct outgoing *out)
{
    if (out) {
        free(out->record);
        free(out->ids);
        free(out);
    }
}

/*
 * Pushes the chunks of the record on its way while the connection takes
 * them, then the record: session->out is NULL once it went.
 */
static int push_outgoing(struct session *session)
{
    struct sync_agent *agent = session->agent;
    struct sync_relay_store *store = sync_device_records(agent->device);
    struct outgoing *out = session->out;
    int rc = 0;
    while (!rc && out->next < out->count && sync_net_conn_writable(session->conn)) {
        uint8_t *chunk = NULL;
        size_t chunk_len = 0;
        int got = store->ops->chunk_get(store->ctx, &chunk, &chunk_len,
                                        sync_device_share_id(agent->device), out->ids[out->next++]);
        if (got == -ENOENT)
            continue; /* not here either: whoever has it serves it */
        rc = got;
        if (!rc) {
            struct sync_msg msg = {.type = SYNC_MSG_CHUNK};
            msg.chunk.record = chunk;
            msg.chunk.len = chunk_len;
            rc = send_msg(session, &msg);
            count(agent, &agent->status.records_sent);
        }
        free(chunk);
    }
    if (rc || out->next < out->count)
        return rc;
    struct sync_msg msg = {.type = SYNC_MSG_OPS};
    msg.ops.record = out->record;
    msg.ops.len = out->len;
    rc = send_msg(session, &msg);
    if (!rc) {
        count(agent, &agent->status.records_sent);
        rc = crdt_vv_raise(&session->remote, out->author, out->seq);
    }
    outgoing_free(out);
    session->out = NULL;
    return rc;
}

/* Starts sending op record `record` (taken over): its chunks first (push_outgoing). */
static int send_record(struct session *session, uint8_t *record, size_t len, uint64_t author,
                       uint64_t seq)
{
    struct outgoing *out = calloc(1, sizeof(*out));
    if (!out) {
        free(record);
        return -ENOMEM;
    }
    *out = (struct outgoing){.record = record, .len = len, .author = author, .seq = seq};
    int rc = chunks_to_push(session, &out->ids, &out->count, record, len, author, seq);
    if (rc) {
        outgoing_free(out);
        return rc;
    }
    session->out = out;
    return push_outgoing(session);
}

/*
 * Streams what the other side lacks while the connection takes it; the
 * `writable` callback calls again once the queue drains.
 */
static int pump(struct session *session)
{
    if (!session->hello_seen)
        return 0;
    struct sync_agent *agent = session->agent;
    struct sync_relay_store *store = sync_device_records(agent->device);
    struct crdt_vv mine = {0};
    int rc = session->out ? push_outgoing(session) : 0;
    if (!rc)
        rc = kept_heads(agent, &mine);
    for (size_t i = 0; !rc && !session->out && i < mine.len; i++) {
        uint64_t author = mine.entries[i].replica, head = mine.entries[i].seq;
        uint64_t next = crdt_vv_get(&session->remote, author) + 1;
        while (!rc && !session->out && next <= head && sync_net_conn_writable(session->conn)) {
            struct copied batch = {0};
            rc = store->ops->op_read(store->ctx, NULL, sync_device_share_id(agent->device), author,
                                     next, STREAM_BATCH, 4u << 20, copy_record, &batch);
            if (rc == 1)
                rc = 0;
            if (!rc && batch.len == 0)
                rc = -EIO; /* the head says it is there */
            for (size_t k = 0; !rc && !session->out && k < batch.len; k++) {
                rc = send_record(session, batch.bytes[k], batch.lens[k], author, batch.seqs[k]);
                batch.bytes[k] = NULL; /* taken over */
                next = batch.seqs[k] + 1;
            }
            copied_free(&batch);
        }
        if (next <= head || session->out)
            break; /* the queue is full: `writable` resumes */
    }
    if (!session->relay) {
        crdt_vv_free(&mine);
        return rc;
    }
    /* What the relay has not confirmed yet, for `weft status`. */
    uint64_t unacked = 0;
    for (size_t i = 0; i < mine.len; i++) {
        uint64_t acked = crdt_vv_get(&session->acked, mine.entries[i].replica);
        unacked += mine.entries[i].seq > acked ? mine.entries[i].seq - acked : 0;
    }
    pthread_mutex_lock(&agent->status_lock);
    agent->status.records_unacked = unacked;
    pthread_mutex_unlock(&agent->status_lock);
    crdt_vv_free(&mine);
    return rc;
}

static void pump_all(struct sync_agent *agent)
{
    for (struct session *session = agent->sessions; session; session = session->next) {
        int rc = pump(session);
        if (rc)
            sync_net_conn_close(session->conn, rc, "streaming records failed");
    }
}

/* ---------- membership at the relay ---------- */

static char *members_pending(struct sync_agent *agent)
{
    char *list = NULL;
    lock(agent);
    int rc = meta_setting_get(&list, meta_replica_store(agent->config.replica), MEMBERS_SETTING);
    unlock(agent);
    return rc ? NULL : list;
}

/* Sends every unconfirmed membership change on `session`. */
static int send_members(struct session *session)
{
    char *list = members_pending(session->agent);
    int rc = 0;
    char *save = NULL;
    for (char *item = list ? strtok_r(list, " ", &save) : NULL; !rc && item;
         item = strtok_r(NULL, " ", &save)) {
        struct sync_msg msg = {.type = SYNC_MSG_MEMBER};
        const char *hex = strchr(item, ':');
        msg.member.action = strncmp(item, "add:", 4) == 0 ? SYNC_MEMBER_ADD : SYNC_MEMBER_REVOKE;
        if (!hex || sodium_hex2bin(msg.member.public_key, SYNC_PUBLIC_KEY_LEN, hex + 1,
                                   strlen(hex + 1), NULL, NULL, NULL) != 0)
            continue; /* not ours to judge: a damaged entry is skipped */
        rc = send_msg(session, &msg);
    }
    free(list);
    return rc;
}

/* Adds (add) or removes the entry "ACTION:HEX" of the pending list; the caller holds the lock. */
static int members_edit_locked(struct meta_store *store, const char *entry, bool add)
{
    char *list = NULL;
    int rc = meta_setting_get(&list, store, MEMBERS_SETTING);
    if (rc == -ENOENT)
        rc = 0;
    size_t cap = (list ? strlen(list) : 0) + strlen(entry) + 2;
    char *next = rc ? NULL : calloc(1, cap);
    if (!rc && !next)
        rc = -ENOMEM;
    char *save = NULL;
    for (char *item = list && next ? strtok_r(list, " ", &save) : NULL; item;
         item = strtok_r(NULL, " ", &save))
        if (strcmp(item, entry) != 0)
            snprintf(next + strlen(next), cap - strlen(next), "%s%s", *next ? " " : "", item);
    if (!rc && add)
        snprintf(next + strlen(next), cap - strlen(next), "%s%s", *next ? " " : "", entry);
    if (!rc)
        rc = *next ? meta_setting_set(store, MEMBERS_SETTING, next)
                   : meta_setting_delete(store, MEMBERS_SETTING);
    free(list);
    free(next);
    return rc;
}

static int members_edit(struct sync_agent *agent, const char *entry, bool add)
{
    lock(agent);
    int rc = members_edit_locked(meta_replica_store(agent->config.replica), entry, add);
    unlock(agent);
    return rc;
}

static void member_entry(char *out, size_t cap, enum sync_member_action action,
                         const uint8_t public_key[SYNC_PUBLIC_KEY_LEN])
{
    char hex[2 * SYNC_PUBLIC_KEY_LEN + 1];
    sodium_bin2hex(hex, sizeof(hex), public_key, SYNC_PUBLIC_KEY_LEN);
    snprintf(out, cap, "%s:%s", action == SYNC_MEMBER_ADD ? "add" : "revoke", hex);
}

static void flush_members(void *ctx)
{
    struct sync_agent *agent = ctx;
    for (struct session *session = agent->sessions; session; session = session->next)
        if (session->relay && send_members(session) != 0)
            sync_net_conn_close(session->conn, -EIO, "cannot send a membership change");
}

int sync_member_queue(struct meta_store *store, enum sync_member_action action,
                      const uint8_t public_key[SYNC_PUBLIC_KEY_LEN])
{
    char entry[2 * SYNC_PUBLIC_KEY_LEN + 16];
    member_entry(entry, sizeof(entry), action, public_key);
    return members_edit_locked(store, entry, true);
}

int sync_agent_member(struct sync_agent *agent, enum sync_member_action action,
                      const uint8_t public_key[SYNC_PUBLIC_KEY_LEN])
{
    char entry[2 * SYNC_PUBLIC_KEY_LEN + 16];
    member_entry(entry, sizeof(entry), action, public_key);
    int rc = members_edit(agent, entry, true);
    if (!rc && sync_net_post(agent->net, flush_members, agent) != 0)
        rc = 0; /* stopping: the next start sends it */
    return rc;
}

/* ---------- receiving ---------- */

/* Asks the session for ids[0..total) (freed here), in messages of at most SYNC_WIRE_WANT_MAX. */
static int ask_chunks(struct session *session, uint8_t (*ids)[SYNC_HASH_LEN], size_t total)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < total; i += SYNC_WIRE_WANT_MAX) {
        struct sync_msg msg = {.type = SYNC_MSG_WANT_CHUNKS};
        msg.want.ids = &ids[i][0];
        msg.want.count = total - i < SYNC_WIRE_WANT_MAX ? total - i : SYNC_WIRE_WANT_MAX;
        rc = send_msg(session, &msg);
    }
    free(ids);
    return rc;
}

/* Asks for every chunk kept records wait for (a new session: the last may have lost answers). */
static int ask_all_chunks(struct session *session)
{
    struct sync_device *device = session->agent->device;
    uint8_t(*ids)[SYNC_HASH_LEN] = NULL;
    size_t total = 0;
    int rc = sync_device_apply_pending(device, NULL);
    if (!rc)
        rc = sync_device_wanted(device, &ids, &total);
    return rc ? rc : ask_chunks(session, ids, total);
}

/*
 * Records that arrive together are kept in one transaction of the device's
 * record store, committed once the loop has handled what it read: one fsync
 * per burst, not per record (a restore brings hundreds of thousands). Losing
 * an uncommitted group costs nothing but a second download: the replica
 * skips ops it has, and the relay sends again what the store lacks.
 */
static void commit_group(void *ctx)
{
    struct sync_agent *agent = ctx;
    if (!agent->group_open)
        return;
    agent->group_open = false;
    struct sync_relay_store *store = sync_device_records(agent->device);
    if (store->ops->commit(store->ctx) != 0)
        agent_log(agent, SYNC_NET_LOG_ERROR, "keeping received records failed: %s",
                  store->ops->errmsg(store->ctx));
}

static void open_group(struct sync_agent *agent)
{
    struct sync_relay_store *store = sync_device_records(agent->device);
    if (agent->group_open || store->ops->begin(store->ctx) != 0)
        return;
    agent->group_open = true;
    if (sync_net_post(agent->net, commit_group, agent) != 0)
        commit_group(agent);
}

static int take_record(struct session *session, const uint8_t *record, size_t len)
{
    struct sync_agent *agent = session->agent;
    enum sync_reason reason = SYNC_REASON_NONE;
    open_group(agent);
    agent->last_arrival_ns = now_ns();
    struct sync_device_stats before;
    sync_device_stats(&before, agent->device);
    uint64_t applied_before = before.records_applied;
    int rc = sync_device_accept(agent->device, &reason, record, len);
    struct sync_device_stats stats;
    sync_device_stats(&stats, agent->device);
    char why[512];
    snprintf(why, sizeof(why), "%s", sync_device_errmsg(agent->device));
    /* What the record named that is not here: asked of who brought it, once. */
    uint8_t(*ids)[SYNC_HASH_LEN] = NULL;
    size_t id_count = 0;
    int ask = sync_device_wanted_new(agent->device, &ids, &id_count);
    if (!ask)
        ask = ask_chunks(session, ids, id_count);
    /* Who sent a record holds it and its chain: never stream it back (no echo). */
    struct sync_record_header header;
    if (!ask && sync_record_peek(&header, record, len) == 0 && header.kind == SYNC_RECORD_OPS &&
        rc == 0) {
        ask = crdt_vv_raise(&session->remote, header.author, header.seq);
        if (!ask)
            ask = crdt_vv_raise(&session->acked, header.author, header.seq);
    }
    /* Applying may log ops of this device's own (a conflict copy): they go out too. */
    if (rc == 0 && stats.records_applied > applied_before)
        sync_agent_poke(agent);
    if (!ask && rc == 0 && session->refused_unknown && stats.records_applied > applied_before) {
        session->refused_unknown = false;
        ask = send_hello(session); /* the relay streams again what was refused */
    }
    pthread_mutex_lock(&agent->status_lock);
    agent->status.records_received++;
    agent->status.device = stats;
    agent->status.relay_last_seen_ns = now_ns();
    pthread_mutex_unlock(&agent->status_lock);
    if (reason == SYNC_REASON_UNKNOWN_AUTHOR || reason == SYNC_REASON_UNKNOWN_EPOCH ||
        (reason == SYNC_REASON_DROPPED && session->refused_unknown)) {
        /*
         * A device, or a key epoch, this one does not know yet: the membership
         * op that vouches for it, or seals the key to it, may be in a record
         * still to come (the relay streams author by author), and the records
         * after a refused one leave a gap. Ask again once something applies.
         */
        if (!session->refused_unknown)
            session->applied_at_refusal = stats.records_applied;
        session->refused_unknown = true;
        return 0;
    }
    if (reason != SYNC_REASON_NONE) {
        /* Refused: reported, nothing applied, the session goes on (honest records still count). */
        agent_log(agent, SYNC_NET_LOG_WARN, "%s: %s", sync_net_conn_addr(session->conn), why);
        return 0;
    }
    if (rc) {
        agent_log(agent, SYNC_NET_LOG_ERROR, "taking a record from %s: %s",
                  sync_net_conn_addr(session->conn), why);
        return rc;
    }
    return ask;
}

static int answer_want(struct session *session, const struct sync_msg *msg)
{
    struct sync_agent *agent = session->agent;
    struct sync_relay_store *store = sync_device_records(agent->device);
    int rc = 0;
    for (size_t i = 0; !rc && i < msg->want.count; i++) {
        uint8_t *chunk = NULL;
        size_t len = 0;
        int got =
            store->ops->chunk_get(store->ctx, &chunk, &len, sync_device_share_id(agent->device),
                                  msg->want.ids + i * SYNC_HASH_LEN);
        if (got == -ENOENT)
            continue;
        rc = got;
        if (!rc) {
            struct sync_msg reply = {.type = SYNC_MSG_CHUNK};
            reply.chunk.record = chunk;
            reply.chunk.len = len;
            rc = send_msg(session, &reply);
        }
        free(chunk);
    }
    return rc;
}

struct kept_hash {
    uint8_t hash[SYNC_HASH_LEN];
    bool found;
};

static int note_hash(void *ctx, const struct sync_relay_record *record)
{
    struct kept_hash *out = ctx;
    memcpy(out->hash, record->hash, SYNC_HASH_LEN);
    out->found = true;
    return 0;
}

/* A source's claims about chains: a fork (another hash for a seq) or a rollback. */
static int check_heads(struct session *session, const struct sync_msg *msg)
{
    struct sync_agent *agent = session->agent;
    struct sync_relay_store *store = sync_device_records(agent->device);
    uint64_t self = sync_replica_id(agent->identity.public_key);
    for (size_t i = 0; i < msg->heads.count; i++) {
        const struct sync_head *head = &msg->heads.entries[i];
        uint64_t floor = crdt_vv_get(&agent->claimed, head->author), kept_seq = 0;
        uint8_t kept_head[SYNC_HASH_LEN];
        /*
         * Others' records reach this device only through its relay (there are
         * no direct sessions yet), so a relay that claims fewer of them than
         * this device keeps lost them, or was put back to an old state: a
         * rollback this device notices even after a restart.
         */
        if (head->author != self && !atomic_load(&agent->direct) && session->relay &&
            store->ops->head(store->ctx, &kept_seq, kept_head, sync_device_share_id(agent->device),
                             head->author) == 0 &&
            kept_seq > floor)
            floor = kept_seq;
        if (head->seq < floor) {
            count(agent, &agent->status.rollbacks);
            agent_log(agent, SYNC_NET_LOG_WARN,
                      "%s rolled back: it offers record %llu of %016llx after offering %llu",
                      sync_net_conn_addr(session->conn), (unsigned long long)head->seq,
                      (unsigned long long)head->author, (unsigned long long)floor);
            continue;
        }
        int rc = crdt_vv_raise(&agent->claimed, head->author, head->seq);
        struct kept_hash kept = {.found = false};
        if (!rc)
            rc = store->ops->op_read(store->ctx, NULL, sync_device_share_id(agent->device),
                                     head->author, head->seq, 1, SYNC_RECORD_MAX, note_hash, &kept);
        if (rc)
            return rc;
        if (kept.found && memcmp(kept.hash, head->hash, SYNC_HASH_LEN) != 0) {
            count(agent, &agent->status.forks);
            agent_log(agent, SYNC_NET_LOG_WARN,
                      "%s claims another record %llu of %016llx than the one held: a fork",
                      sync_net_conn_addr(session->conn), (unsigned long long)head->seq,
                      (unsigned long long)head->author);
        }
    }
    return 0;
}

static int on_message(void *ctx, struct sync_net_conn *conn, const uint8_t *bytes, size_t len)
{
    (void)ctx;
    struct session *session = sync_net_conn_data(conn);
    if (!session)
        return -EPROTO;
    struct sync_msg msg;
    int rc = sync_wire_decode(&msg, bytes, len);
    if (rc) {
        /* A truncated or mangled record fails here, before any check of its own. */
        count(session->agent, &session->agent->status.undecodable);
        agent_log(session->agent, SYNC_NET_LOG_WARN,
                  "%s sent a message that does not decode (%zu bytes): refused, the session ends",
                  sync_net_conn_addr(conn), len);
        return rc;
    }
    switch (msg.type) {
    case SYNC_MSG_HELLO: {
        uint64_t total = 0;
        for (size_t i = 0; i < msg.hello.vv.len; i++)
            total += msg.hello.vv.entries[i].seq;
        pthread_mutex_lock(&session->agent->status_lock);
        session->agent->status.relay_records = total;
        pthread_mutex_unlock(&session->agent->status_lock);
    }
        crdt_vv_free(&session->remote);
        crdt_vv_free(&session->acked);
        rc = crdt_vv_copy(&session->acked, &msg.hello.vv);
        session->remote = msg.hello.vv;
        msg.hello.vv = (struct crdt_vv){0};
        if (rc)
            break;
        session->hello_seen = true;
        rc = pump(session);
        if (!rc)
            rc = ask_all_chunks(session);
        break;
    case SYNC_MSG_OPS:
        rc = take_record(session, msg.ops.record, msg.ops.len);
        if (!rc)
            pump_all(session->agent); /* forward to the other sessions */
        break;
    case SYNC_MSG_CHUNK:
        rc = take_record(session, msg.chunk.record, msg.chunk.len);
        break;
    case SYNC_MSG_WANT_CHUNKS:
        rc = answer_want(session, &msg);
        break;
    case SYNC_MSG_HEADS:
        rc = check_heads(session, &msg);
        break;
    case SYNC_MSG_ACK:
        for (size_t i = 0; !rc && i < msg.ack.records.len; i++) {
            rc = crdt_vv_raise(&session->remote, msg.ack.records.entries[i].replica,
                               msg.ack.records.entries[i].seq);
            if (!rc)
                rc = crdt_vv_raise(&session->acked, msg.ack.records.entries[i].replica,
                                   msg.ack.records.entries[i].seq);
        }
        if (!rc && session->relay)
            sync_device_forget_fresh(
                session->agent->device,
                crdt_vv_get(&session->acked, sync_replica_id(session->agent->identity.public_key)));
        if (!rc)
            rc = pump(session); /* and the count of what waits for an ACK */
        break;
    case SYNC_MSG_PEERS:
        learn_peers(session, &msg);
        break;
    case SYNC_MSG_MEMBER: {
        char entry[2 * SYNC_PUBLIC_KEY_LEN + 16];
        member_entry(entry, sizeof(entry), msg.member.action, msg.member.public_key);
        rc = members_edit(session->agent, entry, false); /* confirmed */
        break;
    }
    case SYNC_MSG_ERROR:
        agent_log(session->agent, SYNC_NET_LOG_WARN, "%s says: %.*s (code %u)",
                  sync_net_conn_addr(conn), (int)msg.error.len, msg.error.text, msg.error.code);
        break;
    }
    sync_msg_clear(&msg);
    return rc;
}

/* ---------- connections ---------- */

/* The relay's key is pinned on first contact: a relay that changes key is refused. */
static int relay_peer(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                      const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    (void)share_id;
    struct sync_agent *agent = ctx;
    char hex[2 * SYNC_PUBLIC_KEY_LEN + 1];
    sodium_bin2hex(hex, sizeof(hex), public_key, SYNC_PUBLIC_KEY_LEN);
    struct meta_store *store = meta_replica_store(agent->config.replica);
    lock(agent);
    char *pinned = NULL;
    int rc = meta_setting_get(&pinned, store, RELAY_KEY_SETTING);
    if (rc == -ENOENT)
        rc = meta_setting_set(store, RELAY_KEY_SETTING, hex);
    else if (!rc && strcmp(pinned, hex) != 0)
        rc = -EKEYREJECTED;
    unlock(agent);
    free(pinned);
    if (rc)
        snprintf(why, why_len,
                 rc == -EKEYREJECTED
                     ? "the relay's key is not the one this share first met (setting %s)"
                     : "cannot check the relay's key",
                 RELAY_KEY_SETTING);
    return rc;
}

/*
 * Tells the relay where this device listens (nothing if it does not), which
 * also asks where the share's other devices listen (discovery).
 */
static int send_own_addr(struct session *session)
{
    struct sync_agent *agent = session->agent;
    char addr[300];
    struct sync_peer_addr self = {.replica = sync_replica_id(agent->identity.public_key)};
    struct sync_msg msg = {.type = SYNC_MSG_PEERS};
    if (agent->listen_host[0] && agent->status.listen_port) {
        snprintf(addr, sizeof(addr), strchr(agent->listen_host, ':') ? "[%s]:%u" : "%s:%u",
                 agent->listen_host, agent->status.listen_port);
        self.addr = addr;
        self.len = strlen(addr);
        msg.peers.entries = &self;
        msg.peers.count = 1;
    }
    return send_msg(session, &msg);
}

/* The relay says where the share's other devices listen: dial those not dialed yet. */
static void learn_peers(struct session *session, const struct sync_msg *msg)
{
    struct sync_agent *agent = session->agent;
    uint64_t self = sync_replica_id(agent->identity.public_key);
    for (size_t i = 0; session->relay && i < msg->peers.count; i++) {
        const struct sync_peer_addr *entry = &msg->peers.entries[i];
        char addr[300];
        snprintf(addr, sizeof(addr), "%.*s", (int)entry->len, entry->addr);
        if (entry->replica == self)
            continue;
        int rc = dial_peer(agent, addr);
        if (rc)
            agent_log(agent, SYNC_NET_LOG_WARN, "the relay named %s for a device: %s", addr,
                      strerror(-rc));
    }
}

static void update_connected(struct sync_agent *agent)
{
    bool relay = false;
    unsigned peers = 0;
    for (struct session *session = agent->sessions; session; session = session->next) {
        relay = relay || session->relay;
        peers += !session->relay;
    }
    pthread_mutex_lock(&agent->status_lock);
    agent->status.relay_connected = relay;
    agent->status.peers_connected = peers;
    pthread_mutex_unlock(&agent->status_lock);
}

static void open_session(struct sync_agent *agent, struct sync_net_conn *conn, bool relay)
{
    struct session *session = calloc(1, sizeof(*session));
    if (!session) {
        sync_net_conn_close(conn, -ENOMEM, "out of memory");
        return;
    }
    session->agent = agent;
    session->conn = conn;
    session->relay = relay;
    session->next = agent->sessions;
    agent->sessions = session;
    sync_net_conn_set_data(conn, session);
    update_connected(agent);
    if (relay) {
        pthread_mutex_lock(&agent->status_lock);
        agent->status.relay_last_seen_ns = now_ns();
        pthread_mutex_unlock(&agent->status_lock);
    }
    agent_log(agent, SYNC_NET_LOG_INFO, "connected to %s at %s", relay ? "the relay" : "a device",
              sync_net_conn_addr(conn));
    if (send_hello(session) != 0 ||
        (relay && (send_members(session) != 0 || send_own_addr(session) != 0)))
        sync_net_conn_close(conn, -EIO, "cannot say hello");
}

static void on_open(void *ctx, struct sync_net_conn *conn)
{
    open_session(ctx, conn, true);
}

static void on_open_peer(void *ctx, struct sync_net_conn *conn)
{
    open_session(ctx, conn, false);
}

/* A device may sync directly if its key is a member's (not revoked) and not ours. */
static int member_peer(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                       const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    struct sync_agent *agent = ctx;
    if (memcmp(share_id, sync_device_share_id(agent->device), SYNC_SHARE_ID_LEN) != 0) {
        snprintf(why, why_len, "it asked for another share");
        return -EXDEV;
    }
    struct meta_device device;
    lock(agent);
    int rc = meta_device_get(&device, meta_replica_store(agent->config.replica),
                             sync_replica_id(public_key));
    unlock(agent);
    if (rc || device.revoked || memcmp(device.public_key, public_key, SYNC_PUBLIC_KEY_LEN) != 0 ||
        memcmp(public_key, agent->identity.public_key, SYNC_PUBLIC_KEY_LEN) == 0) {
        snprintf(why, why_len, "%s",
                 rc == -ENOENT || rc == 0 ? "not a member of the share"
                                          : "cannot check its membership");
        return -EACCES;
    }
    return 0;
}

static void on_writable(void *ctx, struct sync_net_conn *conn)
{
    (void)ctx;
    struct session *session = sync_net_conn_data(conn);
    if (session && pump(session) != 0)
        sync_net_conn_close(conn, -EIO, "streaming records failed");
}

static void on_closed(void *ctx, struct sync_net_conn *conn, int error, const char *why)
{
    struct sync_agent *agent = ctx;
    struct session *session = conn ? sync_net_conn_data(conn) : NULL;
    if (session) {
        for (struct session **at = &agent->sessions; *at; at = &(*at)->next)
            if (*at == session) {
                *at = session->next;
                break;
            }
        crdt_vv_free(&session->remote);
        crdt_vv_free(&session->acked);
        outgoing_free(session->out);
        free(session);
    }
    update_connected(agent);
    if (error && error != -ESHUTDOWN)
        agent_log(agent, SYNC_NET_LOG_WARN, "connection to %s: %s",
                  conn ? sync_net_conn_addr(conn) : "a peer", why ? why : strerror(-error));
}

/* ---------- poking ---------- */

/*
 * What must not wait for a next message: chunks asked for long ago and not
 * here (who was asked lacked them, or the answer was lost) are asked of
 * every session; records refused while their author or key epoch was
 * unknown are asked for again once anything applied since.
 */
static void tick(void *ctx)
{
    struct sync_agent *agent = ctx;
    struct sync_device_stats stats;
    sync_device_stats(&stats, agent->device);
    uint8_t(*ids)[SYNC_HASH_LEN] = NULL;
    size_t count = 0;
    /*
     * Only once nothing has come for a while: during a restore, chunks asked
     * for wait their turn behind thousands of others, and asking again would
     * have them sent twice.
     */
    if (now_ns() - agent->last_arrival_ns < ASK_AGAIN_NS ||
        sync_device_wanted_stale(agent->device, &ids, &count, ASK_AGAIN_NS) != 0)
        count = 0;
    for (struct session *session = agent->sessions; session; session = session->next) {
        if (!session->hello_seen)
            continue;
        int rc = 0;
        if (session->refused_unknown && stats.records_applied > session->applied_at_refusal) {
            session->refused_unknown = false;
            rc = send_hello(session);
        }
        if (!rc && count) {
            uint8_t(*copy)[SYNC_HASH_LEN] = malloc(count * sizeof(*copy));
            if (copy) {
                memcpy(copy, ids, count * sizeof(*copy));
                rc = ask_chunks(session, copy, count);
            }
        }
        if (rc)
            sync_net_conn_close(session->conn, rc, "asking again failed");
    }
    free(ids);
}

static void seal_now(struct sync_agent *agent)
{
    agent->last_seal_ns = now_ns();
    commit_group(agent); /* this device's own records go out only once durable */
    bool more = false;
    int rc = sync_device_seal_step(agent->device, NULL, &more);
    char why[512];
    snprintf(why, sizeof(why), "%s", sync_device_errmsg(agent->device));
    struct sync_device_stats stats;
    sync_device_stats(&stats, agent->device);
    pthread_mutex_lock(&agent->status_lock);
    agent->status.device = stats;
    pthread_mutex_unlock(&agent->status_lock);
    if (rc)
        agent_log(agent, SYNC_NET_LOG_ERROR, "sealing this device's changes: %s", why);
    pump_all(agent);
    /* What is left of a big change: after the loop's turn (I/O, messages, a MEMBER). */
    if (more)
        sync_agent_poke(agent);
}

static void seal_due(void *ctx)
{
    struct sync_agent *agent = ctx;
    agent->seal_deferred = false;
    seal_now(agent);
}

/*
 * A change after a quiet spell is sealed at once (a small file reaches the
 * others in milliseconds); changes that follow within SEAL_GAP_NS of the
 * last seal wait for the gap to end and go in one record. Sealing every
 * change of an unpacked archive made a record per file, and a record's
 * signature, fsyncs and round trips cost more than its ops.
 */
static void seal_and_push(void *ctx)
{
    struct sync_agent *agent = ctx;
    atomic_store(&agent->poke_pending, false);
    if (agent->seal_deferred)
        return;
    int64_t since = now_ns() - agent->last_seal_ns;
    if (since >= 0 && since < SEAL_GAP_NS &&
        sync_net_later(agent->net, (uint32_t)((SEAL_GAP_NS - since) / 1000000 + 1), seal_due,
                       agent) == 0) {
        agent->seal_deferred = true;
        return;
    }
    seal_now(agent);
}

void sync_agent_poke(struct sync_agent *agent)
{
    if (!agent || atomic_exchange(&agent->poke_pending, true))
        return;
    if (sync_net_post(agent->net, seal_and_push, agent) != 0)
        atomic_store(&agent->poke_pending, false);
}

/* ---------- invites ---------- */

int sync_invite_make(char *token, size_t cap, char *why, size_t why_len,
                     struct meta_replica *replica, const char *share_name, const char *device_name,
                     uint8_t new_key[SYNC_PUBLIC_KEY_LEN])
{
    struct meta_store *store = meta_replica_store(replica);
    struct sync_invite invite;
    memset(&invite, 0, sizeof(invite));
    char *relay = NULL, *relay_key = NULL;
    int rc = meta_setting_get(&relay, store, RELAY_SETTING);
    if (rc == -ENOENT)
        snprintf(why, why_len,
                 "the share has no relay to restore from: create shares to invite "
                 "to with weft init NAME --relay HOST:PORT");
    if (!rc && (rc = meta_setting_get(&relay_key, store, RELAY_KEY_SETTING)) == -ENOENT)
        snprintf(why, why_len,
                 "the share has not met its relay (%s) yet: mount it once while "
                 "the relay runs, so the invite can name the relay's key",
                 relay);
    if (!rc && (snprintf(invite.relay_addr, sizeof(invite.relay_addr), "%s", relay) >=
                    (int)sizeof(invite.relay_addr) ||
                sodium_hex2bin(invite.relay_key, sizeof(invite.relay_key), relay_key,
                               strlen(relay_key), NULL, NULL, NULL) != 0)) {
        rc = -EINVAL;
        snprintf(why, why_len, "the share's relay settings are damaged");
    }
    struct sync_identity identity;
    if (!rc) {
        randombytes_buf(invite.device_seed, sizeof(invite.device_seed));
        rc = sync_identity_from_seed(&identity, invite.device_seed);
        memcpy(new_key, identity.public_key, SYNC_PUBLIC_KEY_LEN);
        sync_identity_wipe(&identity);
    }
    if (!rc) {
        meta_store_share_id(invite.share_id, store);
        meta_store_export_share_key(invite.share_key, store);
        meta_store_public_key(invite.inviter_key, store);
        struct meta_device self;
        if (meta_device_get(&self, store, meta_store_replica(store)) == 0)
            snprintf(invite.inviter_name, sizeof(invite.inviter_name), "%s", self.name);
        else
            snprintf(invite.inviter_name, sizeof(invite.inviter_name), "inviter");
        snprintf(invite.share_name, sizeof(invite.share_name), "%s", share_name);
        snprintf(invite.device_name, sizeof(invite.device_name), "%s", device_name);
        rc = sync_invite_encode(token, cap, &invite);
        if (rc)
            snprintf(why, why_len, "cannot make a token of these names");
    }
    /* Members learn the device from a signed op; the relay from this member's word. */
    if (!rc && (rc = meta_replica_add_device(replica, new_key, device_name, false)) != 0)
        snprintf(why, why_len, "%s", meta_replica_errmsg(replica));
    if (!rc && (rc = sync_member_queue(store, SYNC_MEMBER_ADD, new_key)) != 0)
        snprintf(why, why_len, "cannot note the new member for the relay: %s", strerror(-rc));
    if (rc && !why[0])
        snprintf(why, why_len, "%s", strerror(-rc));
    sync_invite_wipe(&invite);
    free(relay);
    free(relay_key);
    return rc;
}

/* ---------- direct sessions ---------- */

/* What listeners and dialers of devices do with their sessions (the net copies it). */
static struct sync_net_handler peer_handler(struct sync_agent *agent)
{
    return (struct sync_net_handler){.peer = member_peer,
                                     .open = on_open_peer,
                                     .message = on_message,
                                     .writable = on_writable,
                                     .closed = on_closed,
                                     .ctx = agent};
}

/* Dials a device at "host:port" and keeps the session (reconnecting) until stop. */
static int dial_peer(struct sync_agent *agent, const char *addr)
{
    char host[256];
    uint16_t port = 0;
    int rc = sync_net_parse_addr(host, sizeof(host), &port, addr, false);
    if (rc)
        return rc;
    /* One session per address: config, weft peer add and the relay may all name it. */
    pthread_mutex_lock(&agent->status_lock);
    bool known = false;
    for (size_t i = 0; i < agent->dialed_len && !known; i++)
        known = strcmp(agent->dialed[i], addr) == 0;
    char **grown = known ? NULL : realloc(agent->dialed, (agent->dialed_len + 1) * sizeof(*grown));
    if (grown) {
        agent->dialed = grown;
        agent->dialed[agent->dialed_len] = strdup(addr);
        if (agent->dialed[agent->dialed_len])
            agent->dialed_len++;
    }
    pthread_mutex_unlock(&agent->status_lock);
    if (known)
        return 0;
    struct sync_net_dialer *dialer;
    struct sync_net_handler handler = peer_handler(agent);
    atomic_store(&agent->direct, true);
    return sync_net_dial(agent->net, &dialer, host, port, sync_device_share_id(agent->device),
                         &handler);
}

int sync_peer_remember(struct meta_store *store, const char *addr)
{
    char *list = NULL;
    int rc = meta_setting_get(&list, store, PEERS_SETTING);
    if (rc == -ENOENT)
        rc = 0;
    bool known = false;
    char *copy = list ? strdup(list) : NULL, *save = NULL;
    for (char *item = copy ? strtok_r(copy, " ", &save) : NULL; item && !known;
         item = strtok_r(NULL, " ", &save))
        known = strcmp(item, addr) == 0;
    free(copy);
    char *next = NULL;
    if (!rc && !known && asprintf(&next, "%s%s%s", list ? list : "", list ? " " : "", addr) < 0)
        rc = -ENOMEM;
    if (!rc && next)
        rc = meta_setting_set(store, PEERS_SETTING, next);
    free(next);
    free(list);
    return rc;
}

int sync_agent_add_peer(struct sync_agent *agent, const char *addr)
{
    return dial_peer(agent, addr);
}

static int start_direct(struct sync_agent *agent, const struct sync_agent_config *config, char *why,
                        size_t why_len)
{
    int rc = 0;
    if (config->listen) {
        char host[256];
        uint16_t port = 0, bound = 0;
        rc = sync_net_parse_addr(host, sizeof(host), &port, config->listen, true);
        snprintf(agent->listen_host, sizeof(agent->listen_host), "%s", host);
        struct sync_net_handler handler = peer_handler(agent);
        if (!rc)
            rc = sync_net_listen(agent->net, &bound, host, port, &handler);
        if (rc)
            snprintf(why, why_len, "cannot listen for devices on %s: %s", config->listen,
                     strerror(-rc));
        atomic_store(&agent->direct, true);
        pthread_mutex_lock(&agent->status_lock);
        agent->status.listen_port = bound;
        pthread_mutex_unlock(&agent->status_lock);
    }
    char *list = config->peers ? strdup(config->peers) : NULL, *save = NULL;
    for (char *addr = list ? strtok_r(list, " ", &save) : NULL; !rc && addr;
         addr = strtok_r(NULL, " ", &save))
        if ((rc = dial_peer(agent, addr)) != 0)
            snprintf(why, why_len, "'%s' is not a device address (HOST:PORT)", addr);
    free(list);
    return rc;
}

/* ---------- devices ---------- */

int sync_device_remove(uint8_t key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len,
                       struct meta_replica *replica, const char *name)
{
    struct meta_store *store = meta_replica_store(replica);
    struct meta_device *devices = NULL;
    size_t count = 0, found = 0;
    int rc = meta_device_list(&devices, &count, store);
    for (size_t i = 0; !rc && i < count; i++)
        if (strcmp(devices[i].name, name) == 0 && !devices[i].revoked && found++ == 0)
            memcpy(key, devices[i].public_key, SYNC_PUBLIC_KEY_LEN);
    free(devices);
    if (rc)
        snprintf(why, why_len, "cannot list the share's devices: %s", strerror(-rc));
    else if (found == 0)
        rc = -ENOENT;
    else if (found > 1)
        rc = -ENOTUNIQ;
    if (rc == -ENOENT || rc == -ENOTUNIQ)
        snprintf(why, why_len, "%s device called '%s' in this share (weft device list shows them)",
                 rc == -ENOENT ? "no" : "more than one", name);
    if (!rc && (rc = meta_replica_remove_device(replica, key)) != 0)
        snprintf(why, why_len, "%s", meta_replica_errmsg(replica));
    if (!rc && (rc = sync_member_queue(store, SYNC_MEMBER_REVOKE, key)) != 0)
        snprintf(why, why_len, "cannot note the removal for the relay: %s", strerror(-rc));
    return rc;
}

int sync_devices_text(char **out, struct meta_store *store)
{
    struct meta_device *devices = NULL;
    size_t count = 0;
    *out = NULL;
    int rc = meta_device_list(&devices, &count, store);
    size_t cap = 64 + count * (META_NAME_MAX + 64), len = 0;
    char *text = rc ? NULL : malloc(cap);
    if (!rc && !text)
        rc = -ENOMEM;
    uint64_t self = meta_store_replica(store);
    for (size_t i = 0; !rc && i < count; i++)
        len += (size_t)snprintf(text + len, cap - len, "%-24s %016llx%s%s\n", devices[i].name,
                                (unsigned long long)devices[i].replica,
                                devices[i].replica == self ? "  (this device)" : "",
                                devices[i].revoked ? "  removed" : "");
    if (!rc && count == 0)
        snprintf(text, cap, "(no devices)\n");
    free(devices);
    if (rc)
        free(text);
    else
        *out = text;
    return rc;
}

/* ---------- start / stop ---------- */

int sync_agent_start(struct sync_agent **out, char *why, size_t why_len,
                     const struct sync_agent_config *config)
{
    *out = NULL;
    struct sync_agent *agent = calloc(1, sizeof(*agent));
    if (!agent)
        return -ENOMEM;
    agent->config = *config;
    agent->config.relay = NULL;
    pthread_mutex_init(&agent->status_lock, NULL);
    lock(agent);
    struct meta_store *store = meta_replica_store(config->replica);
    meta_store_public_key(agent->identity.public_key, store);
    meta_store_secret_key(agent->identity.secret_key, store);
    unlock(agent);
    struct sync_device_lock device_lock = {config->lock, config->unlock, config->lock_ctx};
    int rc = sync_device_open(&agent->device, why, why_len, config->replica, config->records_dir,
                              &device_lock);
    struct sync_net_config net_config = {.identity = &agent->identity,
                                         .idle_timeout_ms = config->idle_timeout_ms,
                                         .backoff_min_ms = config->backoff_min_ms,
                                         .backoff_max_ms = config->backoff_max_ms,
                                         .log = config->log,
                                         .log_ctx = config->log_ctx};
    if (!rc && (rc = sync_net_new(&agent->net, &net_config)) == 0 &&
        ((rc = sync_net_tick(agent->net, TICK_MS, tick, agent)) != 0 ||
         (rc = sync_net_start(agent->net)) != 0))
        snprintf(why, why_len, "cannot start the sync thread");
    /* Listen first: the relay connection announces where this device listens. */
    if (!rc)
        rc = start_direct(agent, config, why, why_len);
    if (!rc && config->relay) {
        char host[256];
        uint16_t port = 0;
        rc = sync_net_parse_addr(host, sizeof(host), &port, config->relay, false);
        if (rc)
            snprintf(why, why_len, "'%s' is not a relay address (HOST:PORT)", config->relay);
        struct sync_net_handler handler = {.peer = relay_peer,
                                           .open = on_open,
                                           .message = on_message,
                                           .writable = on_writable,
                                           .closed = on_closed,
                                           .ctx = agent};
        if (!rc && (rc = sync_net_dial(agent->net, &agent->dialer, host, port,
                                       sync_device_share_id(agent->device), &handler)) != 0)
            snprintf(why, why_len, "cannot connect to the relay at %s: %s", config->relay,
                     strerror(-rc));
    }
    if (rc) {
        sync_agent_stop(agent);
        return rc;
    }
    sync_agent_poke(agent); /* what was committed while no agent ran */
    *out = agent;
    return 0;
}

void sync_agent_status(struct sync_agent_status *out, struct sync_agent *agent)
{
    pthread_mutex_lock(&agent->status_lock);
    *out = agent->status;
    pthread_mutex_unlock(&agent->status_lock);
}

void sync_agent_stop(struct sync_agent *agent)
{
    if (!agent)
        return;
    sync_net_free(agent->net); /* closes every session (on_closed frees them), runs posts */
    if (agent->group_open)
        commit_group(agent);
    sync_device_close(agent->device);
    crdt_vv_free(&agent->claimed);
    for (size_t i = 0; i < agent->dialed_len; i++)
        free(agent->dialed[i]);
    free(agent->dialed);
    sync_identity_wipe(&agent->identity);
    pthread_mutex_destroy(&agent->status_lock);
    free(agent);
}
