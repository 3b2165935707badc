/*
 * test-sync-agent: two replicas, each with its sync/agent, and a relay on
 * 127.0.0.1, all in one process. A change on A reaches B through the relay
 * without polling (text and a binary file with its chunks); concurrent text
 * edits merge on both; a device that was stopped catches up from the relay
 * (the relay as a mailbox); a relay with another key is refused.
 */
#include "sync/agent.h"
#include "sync/relay.h"
#include "unit/replica_peers.h"

#include <pthread.h>
#include <sodium.h>
#include <time.h>
#include <unistd.h>

struct side {
    struct peer peer;
    pthread_mutex_t lock;
    struct sync_agent *agent;
    char records[4200];
};

static void side_lock(void *ctx)
{
    pthread_mutex_lock(&((struct side *)ctx)->lock);
}

static void side_unlock(void *ctx)
{
    pthread_mutex_unlock(&((struct side *)ctx)->lock);
}

static void quiet(void *ctx, enum sync_net_log_level level, const char *line)
{
    (void)ctx;
    if (getenv("WEFT_TEST_VERBOSE") &&
        (level <= SYNC_NET_LOG_WARN || getenv("WEFT_TEST_VERBOSE")[0] == '2'))
        fprintf(stderr, "log: %s\n", line);
}

static void side_start(struct side *side, const char *relay)
{
    struct sync_agent_config config = {.replica = side->peer.replica,
                                       .records_dir = side->records,
                                       .relay = relay,
                                       .lock = side_lock,
                                       .unlock = side_unlock,
                                       .lock_ctx = side,
                                       .log = quiet,
                                       .backoff_min_ms = 50,
                                       .backoff_max_ms = 200};
    char why[512] = "";
    int rc = sync_agent_start(&side->agent, why, sizeof(why), &config);
    if (rc)
        fprintf(stderr, "sync_agent_start: %s\n", why);
    CHECK_INT(0, rc);
}

static void side_init(struct side *side, const char *name)
{
    peer_init(&side->peer, name);
    pthread_mutex_init(&side->lock, NULL);
    snprintf(side->records, sizeof(side->records), "%s/records", side->peer.dir);
}

static void side_free(struct side *side)
{
    sync_agent_stop(side->agent);
    side->agent = NULL;
    pthread_mutex_destroy(&side->lock);
    peer_free(&side->peer);
}

static void side_write_text(struct side *side, const char *path, const char *text)
{
    side_lock(side);
    write_text(&side->peer, path, text);
    side_unlock(side);
    sync_agent_poke(side->agent);
}

/* Whether `path` on `side` holds `want` (len bytes). */
static bool has_content(struct side *side, const char *path, const void *want, size_t len)
{
    side_lock(side);
    uint64_t ino;
    bool ok = false;
    if (meta_replica_resolve(&ino, side->peer.replica, path) == 0) {
        char *text = NULL;
        size_t got = 0;
        char full[4300];
        int fd = -1;
        (void)full;
        if (meta_replica_open_file(&fd, side->peer.replica, ino, O_RDONLY) == 0) {
            text = malloc(len + 2);
            ssize_t n = pread(fd, text, len + 1, 0);
            got = n < 0 ? 0 : (size_t)n;
            close(fd);
            ok = got == len && memcmp(text, want, len) == 0;
            free(text);
        }
    }
    side_unlock(side);
    return ok;
}

/* Waits (bounded) until `path` on `side` holds `want`; no fixed sleeps in the happy path. */
static bool wait_content(struct side *side, const char *path, const void *want, size_t len)
{
    for (int i = 0; i < 1000; i++) {
        if (has_content(side, path, want, len))
            return true;
        usleep(10000);
    }
    side_lock(side);
    size_t got_len = 0;
    char *got = read_file(&side->peer, path, &got_len);
    side_unlock(side);
    fprintf(stderr, "timed out waiting for %s: it holds %zu bytes: %.*s\n", path, got_len,
            (int)(got_len < 200 ? got_len : 200), got ? got : "");
    free(got);
    return false;
}

struct relay {
    char dir[4200];
    char *tmp;
    struct sync_relay_store store;
    struct sync_relay *relay;
    struct sync_identity id;
    char addr[64];
};

static void relay_start(struct relay *relay, struct side *a, struct side *b)
{
    relay->tmp = tu_tempdir("relay");
    snprintf(relay->dir, sizeof(relay->dir), "%s", relay->tmp);
    char why[512] = "";
    CHECK_INT(0, sync_relay_store_open_sqlite(&relay->store, why, sizeof(why), relay->dir));
    /* A registers the share; B is added as an invite will add it. */
    uint8_t share[SYNC_SHARE_ID_LEN], key[SYNC_PUBLIC_KEY_LEN];
    meta_store_share_id(share, meta_replica_store(a->peer.replica));
    meta_store_public_key(key, meta_replica_store(a->peer.replica));
    CHECK_INT(0, relay->store.ops->share_register(relay->store.ctx, share, key, 1));
    meta_store_public_key(key, meta_replica_store(b->peer.replica));
    CHECK_INT(0, relay->store.ops->member_add(relay->store.ctx, share, key, 1));
    uint8_t seed[SYNC_SEED_LEN];
    randombytes_buf(seed, sizeof(seed));
    CHECK_INT(0, sync_identity_from_seed(&relay->id, seed));
    struct sync_relay_config config = {.store = &relay->store};
    config.net.identity = &relay->id;
    CHECK_INT(0, sync_relay_new(&relay->relay, &config));
    uint16_t port = 0;
    CHECK_INT(0, sync_relay_listen(relay->relay, &port, "127.0.0.1", 0));
    snprintf(relay->addr, sizeof(relay->addr), "127.0.0.1:%u", port);
}

static void relay_stop(struct relay *relay)
{
    sync_relay_free(relay->relay);
    sync_relay_store_close(&relay->store);
    tu_rmtree(relay->tmp);
}

static void test_through_relay(void)
{
    struct side a, b;
    side_init(&a, "alpha");
    side_init(&b, "beta");
    introduce(&a.peer, &b.peer);
    struct relay relay;
    relay_start(&relay, &a, &b);
    side_start(&a, relay.addr);
    side_start(&b, relay.addr);

    /* Text, then a binary file with chunks: each appears on B. */
    side_write_text(&a, "notes.txt", "one\ntwo\nthree\n");
    CHECK(wait_content(&b, "notes.txt", "one\ntwo\nthree\n", 14));
    size_t big_len = 200 * 1024;
    uint8_t *big = malloc(big_len);
    randombytes_buf(big, big_len);
    side_lock(&a);
    write_file(&a.peer, "photo.bin", big, big_len);
    side_unlock(&a);
    sync_agent_poke(a.agent);
    CHECK(wait_content(&b, "photo.bin", big, big_len));

    /* Concurrent edits of one text: both see both. */
    side_write_text(&a, "notes.txt", "one (a)\ntwo\nthree\n");
    side_write_text(&b, "notes.txt", "one\ntwo\nthree (b)\n");
    const char *merged = "one (a)\ntwo\nthree (b)\n";
    CHECK(wait_content(&a, "notes.txt", merged, strlen(merged)));
    CHECK(wait_content(&b, "notes.txt", merged, strlen(merged)));

    /* B is away; A writes; B comes back and finds it at the relay. */
    sync_agent_stop(b.agent);
    b.agent = NULL;
    side_write_text(&a, "while-away.txt", "kept by the relay\n");
    usleep(200000); /* let A's push reach the relay; B is not there to see it */
    side_start(&b, relay.addr);
    CHECK(wait_content(&b, "while-away.txt", "kept by the relay\n", 18));

    struct sync_agent_status status;
    sync_agent_status(&status, b.agent);
    CHECK(status.relay_connected);
    CHECK_INT(0, status.forks);
    CHECK_INT(0, status.rollbacks);

    /*
     * A vouches for a new device C at the relay (what an invite does); C,
     * empty, restores everything from the relay alone, chunks included.
     */
    struct side c;
    side_init(&c, "gamma");
    introduce(&a.peer, &c.peer);
    introduce(&b.peer, &c.peer);
    uint8_t c_key[SYNC_PUBLIC_KEY_LEN];
    meta_store_public_key(c_key, meta_replica_store(c.peer.replica));
    CHECK_INT(0, sync_agent_member(a.agent, SYNC_MEMBER_ADD, c_key));
    side_start(&c, relay.addr);
    CHECK(wait_content(&c, "photo.bin", big, big_len));
    if (!wait_content(&c, "notes.txt", merged, strlen(merged))) {
        struct sync_agent_status st;
        sync_agent_status(&st, c.agent);
        fprintf(stderr, "C: applied %llu pending %llu dup %llu refused-author %llu err %s\n",
                (unsigned long long)st.device.records_applied,
                (unsigned long long)st.device.pending, (unsigned long long)st.device.duplicates,
                (unsigned long long)st.device.refused[SYNC_REASON_UNKNOWN_AUTHOR], st.last_error);
        CHECK(0);
    }
    CHECK(wait_content(&c, "while-away.txt", "kept by the relay\n", 18));
    side_write_text(&c, "from-c.txt", "hello from c\n");
    CHECK(wait_content(&a, "from-c.txt", "hello from c\n", 13));
    /* The relay confirmed the membership: nothing is left pending at A. */
    side_lock(&a);
    char *pending = NULL;
    CHECK_INT(-ENOENT,
              meta_setting_get(&pending, meta_replica_store(a.peer.replica), "sync.relay_members"));
    side_unlock(&a);
    free(pending);

    /*
     * A removes C: a new key epoch sealed to A and B only, the relay told. What
     * A and B write after reaches each other, never C, which the relay refuses.
     */
    side_lock(&a);
    CHECK_INT(0, meta_replica_remove_device(a.peer.replica, c_key));
    side_unlock(&a);
    CHECK_INT(0, sync_agent_member(a.agent, SYNC_MEMBER_REVOKE, c_key));
    side_write_text(&a, "after-removal.txt", "not for c\n");
    CHECK(wait_content(&b, "after-removal.txt", "not for c\n", 10));
    side_write_text(&b, "from-b-epoch1.txt", "sealed under the new key\n");
    CHECK(wait_content(&a, "from-b-epoch1.txt", "sealed under the new key\n", 25));
    side_lock(&b);
    CHECK_INT(1, meta_store_epoch(meta_replica_store(b.peer.replica)));
    side_unlock(&b);
    usleep(300000);
    side_lock(&c);
    uint64_t ino;
    CHECK(meta_replica_resolve(&ino, c.peer.replica, "after-removal.txt") != 0);
    CHECK(meta_replica_resolve(&ino, c.peer.replica, "from-b-epoch1.txt") != 0);
    CHECK_INT(0, meta_store_epoch(meta_replica_store(c.peer.replica)));
    side_unlock(&c);

    free(big);
    side_free(&c);
    side_free(&a);
    side_free(&b);
    relay_stop(&relay);
}

/* Two devices with no relay: A listens, B dials A (weft peer add); both ways, no polling. */
static void test_direct(void)
{
    struct side a, b;
    side_init(&a, "alpha");
    side_init(&b, "beta");
    introduce(&a.peer, &b.peer);
    struct sync_agent_config config = {.replica = a.peer.replica,
                                       .records_dir = a.records,
                                       .listen = "127.0.0.1:0",
                                       .lock = side_lock,
                                       .unlock = side_unlock,
                                       .lock_ctx = &a,
                                       .log = quiet,
                                       .backoff_min_ms = 50,
                                       .backoff_max_ms = 200};
    char why[512] = "", addr[64];
    CHECK_INT(0, sync_agent_start(&a.agent, why, sizeof(why), &config));
    struct sync_agent_status status;
    sync_agent_status(&status, a.agent);
    CHECK(status.listen_port != 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", status.listen_port);
    config = (struct sync_agent_config){.replica = b.peer.replica,
                                        .records_dir = b.records,
                                        .lock = side_lock,
                                        .unlock = side_unlock,
                                        .lock_ctx = &b,
                                        .log = quiet,
                                        .backoff_min_ms = 50,
                                        .backoff_max_ms = 200};
    CHECK_INT(0, sync_agent_start(&b.agent, why, sizeof(why), &config));
    side_write_text(&a, "before.txt", "written before B dialed\n");
    CHECK_INT(0, sync_agent_add_peer(b.agent, addr));
    CHECK(wait_content(&b, "before.txt", "written before B dialed\n", 24));
    side_write_text(&b, "from-b.txt", "direct\n");
    CHECK(wait_content(&a, "from-b.txt", "direct\n", 7));
    sync_agent_status(&status, a.agent);
    CHECK_INT(1, status.peers_connected);
    CHECK(!status.relay_connected);

    /* A device that is not a member is refused, with the reason on A's side. */
    struct side c;
    side_init(&c, "gamma");
    config.replica = c.peer.replica;
    config.records_dir = c.records;
    config.lock_ctx = &c;
    CHECK_INT(0, sync_agent_start(&c.agent, why, sizeof(why), &config));
    CHECK_INT(0, sync_agent_add_peer(c.agent, addr));
    side_write_text(&c, "intruder.txt", "no\n");
    usleep(300000);
    side_lock(&a);
    uint64_t ino;
    CHECK(meta_replica_resolve(&ino, a.peer.replica, "intruder.txt") != 0);
    side_unlock(&a);
    sync_agent_status(&status, a.agent);
    CHECK_INT(1, status.peers_connected);
    side_free(&c);
    side_free(&a);
    side_free(&b);
}

/*
 * Discovery: two devices that listen, with a relay; each learns where the
 * other listens from the relay and dials it, so with the relay gone their
 * changes still flow.
 */
static void test_discovery(void)
{
    struct side a, b;
    side_init(&a, "alpha");
    side_init(&b, "beta");
    introduce(&a.peer, &b.peer);
    struct relay relay;
    relay_start(&relay, &a, &b);
    struct side *sides[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        struct sync_agent_config config = {.replica = sides[i]->peer.replica,
                                           .records_dir = sides[i]->records,
                                           .relay = relay.addr,
                                           .listen = "127.0.0.1:0",
                                           .lock = side_lock,
                                           .unlock = side_unlock,
                                           .lock_ctx = sides[i],
                                           .log = quiet,
                                           .backoff_min_ms = 50,
                                           .backoff_max_ms = 200};
        char why[512] = "";
        CHECK_INT(0, sync_agent_start(&sides[i]->agent, why, sizeof(why), &config));
    }
    struct sync_agent_status status = {0};
    for (int i = 0; i < 500; i++) {
        sync_agent_status(&status, b.agent);
        if (status.peers_connected >= 1)
            break;
        usleep(10000);
    }
    CHECK(status.peers_connected >= 1);
    sync_relay_free(relay.relay);
    relay.relay = NULL;
    side_write_text(&a, "direct.txt", "found through the relay\n");
    CHECK(wait_content(&b, "direct.txt", "found through the relay\n", 24));
    side_free(&a);
    side_free(&b);
    sync_relay_store_close(&relay.store);
    tu_rmtree(relay.tmp);
}

int main(void)
{
    alarm(120);
    CHECK_INT(0, sync_init());
    test_through_relay();
    test_direct();
    test_discovery();
    return test_finish("sync-agent");
}
