/*
 * Tests for sync/net on 127.0.0.1, each transport on its own loop thread:
 * a handshake and messages both ways; an unknown device refused with the
 * reason on both sides; silent peers (no handshake; handshake then nothing)
 * and a peer that never reads timed out, while a quiet live peer is kept by
 * keepalives; 200 MB through a paused receiver with the sender's queue
 * bounded by the high-water mark; reconnection with backoff after the
 * listener restarts; shutdown with connections busy; work posted from other
 * threads; address parsing. Every wait is bounded polling, and alarm()
 * bounds the whole run.
 */
#include "net_util.h"
#include "sync/net.h"
#include "sync_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static struct sync_identity srv_id, alice, bob, mallory;
static uint8_t share_s[SYNC_SHARE_ID_LEN];

/* ---------- a side: what one handler saw ---------- */

struct side {
    const char *name;
    const uint8_t *allowed[3]; /* keys let in (NULL-terminated) */
    int opens, closes, messages, writables;
    int last_error, first_error;
    char last_why[320], first_why[320];
    char log[8192]; /* warnings and errors, one per line */
    struct sync_net_conn *conn;
    bool echo; /* answer every message with "pong:" + it */
    int sends_on_open;
    /* the big transfer */
    size_t total, sent, received, msg_len, max_queued, blocked_seen;
    uint64_t bytes_received, bad;
    size_t pause_at;
    bool paused, endless;
    uint8_t peer_key[SYNC_PUBLIC_KEY_LEN];
    char peer_addr[64];
};

static void side_log(void *ctx, enum sync_net_log_level level, const char *line)
{
    struct side *side = ctx;
    if (level > SYNC_NET_LOG_WARN)
        return;
    pthread_mutex_lock(&g_lock);
    size_t used = strlen(side->log);
    snprintf(side->log + used, sizeof(side->log) - used, "%s\n", line);
    pthread_mutex_unlock(&g_lock);
}

static int side_peer(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                     const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    struct side *side = ctx;
    if (memcmp(share_id, share_s, SYNC_SHARE_ID_LEN) != 0) {
        snprintf(why, why_len, "wrong share");
        return -1;
    }
    for (size_t i = 0; i < 3 && side->allowed[i]; i++)
        if (memcmp(side->allowed[i], public_key, SYNC_PUBLIC_KEY_LEN) == 0)
            return 0;
    snprintf(why, why_len, "%s does not know this device", side->name);
    return -1;
}

/* The big transfer's message i: its index, then bytes derived from it. */
static void fill_message(uint8_t *buf, size_t len, uint64_t index)
{
    memcpy(buf, &index, sizeof(index));
    for (size_t k = sizeof(index); k < len; k++)
        buf[k] = (uint8_t)(index * 31 + k);
}

/* Sends while the connection is writable (the producer of a stream). On the loop thread. */
static void produce(struct side *side, struct sync_net_conn *conn)
{
    uint8_t *buf = malloc(side->msg_len);
    for (;;) {
        pthread_mutex_lock(&g_lock);
        bool more = side->endless || side->sent < side->total;
        size_t index = side->sent;
        pthread_mutex_unlock(&g_lock);
        if (!more)
            break;
        if (!sync_net_conn_writable(conn)) {
            pthread_mutex_lock(&g_lock);
            side->blocked_seen++;
            pthread_mutex_unlock(&g_lock);
            break;
        }
        fill_message(buf, side->msg_len, index);
        if (sync_net_conn_send(conn, buf, side->msg_len) != 0)
            break;
        size_t queued = sync_net_conn_queued(conn);
        pthread_mutex_lock(&g_lock);
        side->sent++;
        if (queued > side->max_queued)
            side->max_queued = queued;
        pthread_mutex_unlock(&g_lock);
    }
    free(buf);
}

static void side_open(void *ctx, struct sync_net_conn *conn)
{
    struct side *side = ctx;
    pthread_mutex_lock(&g_lock);
    side->opens++;
    side->conn = conn;
    int sends = side->sends_on_open;
    bool stream = side->msg_len > 0;
    if (sync_net_conn_peer(side->peer_key, NULL, conn) != 0)
        side->bad++;
    snprintf(side->peer_addr, sizeof(side->peer_addr), "%s", sync_net_conn_addr(conn));
    pthread_mutex_unlock(&g_lock);
    for (int i = 0; i < sends; i++) {
        char text[32];
        int len = snprintf(text, sizeof(text), "ping %d", i);
        if (sync_net_conn_send(conn, text, (size_t)len) != 0) {
            pthread_mutex_lock(&g_lock);
            side->bad++;
            pthread_mutex_unlock(&g_lock);
        }
    }
    if (stream)
        produce(side, conn);
}

static int side_message(void *ctx, struct sync_net_conn *conn, const uint8_t *message, size_t len)
{
    struct side *side = ctx;
    pthread_mutex_lock(&g_lock);
    side->messages++;
    bool echo = side->echo;
    bool pause_now = false;
    if (side->total && !side->msg_len) {
        /* The receiving end of a transfer: check order and content. */
        uint64_t index = 0;
        if (len >= 8)
            memcpy(&index, message, 8);
        if (index != side->received || len < 8)
            side->bad++;
        else if (message[len - 1] != (uint8_t)(index * 31 + (len - 1)))
            side->bad++;
        side->received++;
        side->bytes_received += len;
        if (side->pause_at && side->received == side->pause_at) {
            side->paused = true;
            pause_now = true;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (pause_now)
        sync_net_conn_pause(conn, true);
    if (echo) {
        uint8_t reply[128];
        memcpy(reply, "pong:", 5);
        size_t take = len < sizeof(reply) - 5 ? len : sizeof(reply) - 5;
        memcpy(reply + 5, message, take);
        if (sync_net_conn_send(conn, reply, take + 5) != 0) {
            pthread_mutex_lock(&g_lock);
            side->bad++;
            pthread_mutex_unlock(&g_lock);
        }
    }
    return 0;
}

static void side_writable(void *ctx, struct sync_net_conn *conn)
{
    struct side *side = ctx;
    pthread_mutex_lock(&g_lock);
    side->writables++;
    bool stream = side->msg_len > 0;
    pthread_mutex_unlock(&g_lock);
    if (stream)
        produce(side, conn);
}

static void side_closed(void *ctx, struct sync_net_conn *conn, int error, const char *why)
{
    struct side *side = ctx;
    pthread_mutex_lock(&g_lock);
    if (side->closes++ == 0) {
        side->first_error = error;
        snprintf(side->first_why, sizeof(side->first_why), "%s", why);
    }
    side->last_error = error;
    snprintf(side->last_why, sizeof(side->last_why), "%s", why);
    if (side->conn == conn)
        side->conn = NULL;
    pthread_mutex_unlock(&g_lock);
}

static struct sync_net_handler side_handler(struct side *side)
{
    return (struct sync_net_handler){
        .peer = side_peer,
        .open = side_open,
        .message = side_message,
        .writable = side_writable,
        .closed = side_closed,
        .ctx = side,
    };
}

static struct sync_net *make_net(const struct sync_identity *identity, struct side *log_side,
                                 uint32_t handshake_ms, uint32_t idle_ms)
{
    struct sync_net_config config = {
        .identity = identity,
        .handshake_timeout_ms = handshake_ms,
        .idle_timeout_ms = idle_ms,
        .high_water = 1u << 20,
        .low_water = 256u << 10,
        .backoff_min_ms = 40,
        .backoff_max_ms = 300,
        .log = side_log,
        .log_ctx = log_side,
    };
    struct sync_net *net = NULL;
    if (sync_net_new(&net, &config) != 0 || sync_net_start(net) != 0)
        abort();
    return net;
}

/* ---------- handshake and messages ---------- */

static int pongs_ok;

static int client_message(void *ctx, struct sync_net_conn *conn, const uint8_t *message, size_t len)
{
    char expected[40];
    pthread_mutex_lock(&g_lock);
    int n = snprintf(expected, sizeof(expected), "pong:ping %d", pongs_ok);
    if ((size_t)n == len && memcmp(expected, message, len) == 0)
        pongs_ok++;
    pthread_mutex_unlock(&g_lock);
    return side_message(ctx, conn, message, len);
}

static void test_exchange(void)
{
    struct side server = {.name = "server", .allowed = {alice.public_key}, .echo = true};
    struct side client = {.name = "client", .allowed = {srv_id.public_key}, .sends_on_open = 10};
    struct sync_net *net_s = make_net(&srv_id, &server, 2000, 5000);
    struct sync_net *net_c = make_net(&alice, &client, 2000, 5000);
    struct sync_net_handler server_handler = side_handler(&server);
    uint16_t port = 0;
    CHECK_INT(0, sync_net_listen(net_s, &port, "127.0.0.1", 0, &server_handler));
    CHECK(port != 0);
    struct sync_net_handler client_handler = side_handler(&client);
    client_handler.message = client_message;
    struct sync_net_dialer *dialer = NULL;
    CHECK_INT(0, sync_net_dial(net_c, &dialer, "127.0.0.1", port, share_s, &client_handler));
    bool ok;
    WAIT_UNTIL(ok, pongs_ok == 10 && server.messages == 10, 10000);
    CHECK(ok);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(1, server.opens);
    CHECK_INT(1, client.opens);
    CHECK(memcmp(server.peer_key, alice.public_key, SYNC_PUBLIC_KEY_LEN) == 0);
    CHECK(memcmp(client.peer_key, srv_id.public_key, SYNC_PUBLIC_KEY_LEN) == 0);
    CHECK(strncmp(server.peer_addr, "127.0.0.1:", 10) == 0);
    char expected_addr[32];
    snprintf(expected_addr, sizeof(expected_addr), "127.0.0.1:%u", port);
    CHECK_STR(expected_addr, client.peer_addr);
    pthread_mutex_unlock(&g_lock);

    /* A clean close: both sides see 0. */
    sync_net_dialer_close(dialer);
    WAIT_UNTIL(ok, server.closes == 1 && client.closes == 1, 5000);
    CHECK(ok);
    CHECK_INT(0, server.last_error);
    CHECK_INT(0, client.last_error);
    CHECK_STR("the peer closed the connection", server.last_why);
    CHECK_STR("", server.log);
    CHECK_INT(0, server.bad);
    CHECK_INT(0, client.bad);
    sync_net_free(net_c);
    sync_net_free(net_s);
}

/* ---------- refusal ---------- */

static void test_refused(void)
{
    struct side server = {.name = "server", .allowed = {alice.public_key}};
    struct side client = {.name = "mallory", .allowed = {srv_id.public_key}};
    struct sync_net *net_s = make_net(&srv_id, &server, 2000, 5000);
    struct sync_net *net_c = make_net(&mallory, &client, 2000, 5000);
    struct sync_net_handler server_handler = side_handler(&server);
    uint16_t port = 0;
    CHECK_INT(0, sync_net_listen(net_s, &port, "127.0.0.1", 0, &server_handler));
    struct sync_net_handler client_handler = side_handler(&client);
    struct sync_net_dialer *dialer = NULL;
    CHECK_INT(0, sync_net_dial(net_c, &dialer, "127.0.0.1", port, share_s, &client_handler));
    bool ok;
    WAIT_UNTIL(ok, server.closes >= 1 && client.closes >= 1, 5000);
    CHECK(ok);
    sync_net_dialer_close(dialer);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(0, server.opens);
    CHECK_INT(0, client.opens);
    char hex[17];
    sodium_bin2hex(hex, sizeof(hex), mallory.public_key, 8);
    char expected[128];
    snprintf(expected, sizeof(expected), "refused device %s: server does not know this device",
             hex);
    /* The refusing side: its handler and its log say who and why. */
    CHECK_INT(-EACCES, server.first_error);
    CHECK(strstr(server.first_why, expected) != NULL);
    CHECK(strstr(server.log, expected) != NULL);
    /* The refused side hears that it is not a member. */
    CHECK_INT(-ECONNREFUSED, client.first_error);
    CHECK(strstr(client.first_why, "not a member of the share") != NULL);
    CHECK(strstr(client.log, "not a member of the share") != NULL);
    if (!strstr(server.log, expected) || !strstr(client.log, "not a member"))
        fprintf(stderr, "server log:\n%sclient log:\n%s", server.log, client.log);
    pthread_mutex_unlock(&g_lock);
    sync_net_free(net_c);
    sync_net_free(net_s);
}

/* ---------- silent peers, keepalives ---------- */

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    /* A small receive buffer: a peer that stops reading stalls the sender sooner. */
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        abort();
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Reads until EOF (true) or an error/timeout (false); feeds a channel if given. */
static bool raw_wait_eof(int fd, struct sync_channel *channel)
{
    uint8_t buf[4096];
    for (;;) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got == 0)
            return true;
        if (got < 0)
            return false;
        if (channel)
            (void)!sync_channel_feed(channel, buf, (size_t)got);
    }
}

static int allow_any(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                     const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    (void)ctx, (void)share_id, (void)public_key, (void)why, (void)why_len;
    return 0;
}

/* Sends the channel's output, ignoring a peer that is gone. */
static void raw_write_output_quiet(int fd, struct sync_channel *channel)
{
    size_t len = 0;
    const uint8_t *out = sync_channel_output(&len, channel);
    if (len)
        (void)!send(fd, out, len, MSG_NOSIGNAL);
    sync_channel_output_consume(channel, len);
}

static void raw_write_output(int fd, struct sync_channel *channel)
{
    size_t len = 0;
    const uint8_t *out = sync_channel_output(&len, channel);
    if (len && send(fd, out, len, MSG_NOSIGNAL) != (ssize_t)len)
        abort();
    sync_channel_output_consume(channel, len);
}

static void test_silent(void)
{
    struct side server = {.name = "server", .allowed = {alice.public_key}};
    struct sync_net *net_s = make_net(&srv_id, &server, 300, 600);
    struct sync_net_handler handler = side_handler(&server);
    uint16_t port = 0;
    CHECK_INT(0, sync_net_listen(net_s, &port, "127.0.0.1", 0, &handler));

    /* Connects and never speaks: closed at the handshake deadline. */
    uint64_t start = now_ms();
    int fd = raw_connect(port);
    CHECK(raw_wait_eof(fd, NULL));
    uint64_t took = now_ms() - start;
    close(fd);
    CHECK(took >= 250 && took < 5000);
    bool ok;
    WAIT_UNTIL(ok, server.closes == 1, 2000);
    CHECK(ok);
    CHECK_INT(-ETIMEDOUT, server.last_error);
    CHECK_STR("no handshake within 300 ms", server.last_why);

    /* Completes the handshake, then says nothing: closed at the idle deadline. */
    fd = raw_connect(port);
    struct sync_channel *channel = NULL;
    CHECK_INT(0,
              sync_channel_new(&channel, SYNC_CHANNEL_INITIATOR, &alice, share_s, allow_any, NULL));
    raw_write_output(fd, channel); /* HELLO */
    uint8_t buf[512];
    while (sync_channel_state(channel) == SYNC_CHANNEL_HANDSHAKE) {
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got <= 0)
            break;
        CHECK_INT(0, sync_channel_feed(channel, buf, (size_t)got));
    }
    CHECK_INT(SYNC_CHANNEL_OPEN, sync_channel_state(channel));
    raw_write_output(fd, channel); /* AUTH */
    start = now_ms();
    WAIT_UNTIL(ok, server.opens == 1, 2000);
    CHECK(ok);
    CHECK(raw_wait_eof(fd, channel));
    took = now_ms() - start;
    CHECK(took >= 500 && took < 5000);
    close(fd);
    /* The server kept talking meanwhile: keepalives, which a transport never delivers. */
    uint8_t *message = NULL;
    size_t len = 99;
    CHECK_INT(0, sync_channel_recv(&message, &len, channel));
    CHECK_INT(0, len);
    sync_channel_free(channel);
    WAIT_UNTIL(ok, server.closes == 2, 2000);
    CHECK(ok);
    CHECK_INT(-ETIMEDOUT, server.last_error);
    CHECK_STR("the peer was silent for 600 ms", server.last_why);
    CHECK(strstr(server.log, "silent for 600 ms") != NULL);

    /*
     * A peer that keeps talking (keepalives) but never reads what the server
     * streams to it: the server's writes stall, and it gives up.
     */
    pthread_mutex_lock(&g_lock);
    server.msg_len = 65536;
    server.endless = true;
    pthread_mutex_unlock(&g_lock);
    fd = raw_connect(port);
    channel = NULL;
    CHECK_INT(0,
              sync_channel_new(&channel, SYNC_CHANNEL_INITIATOR, &alice, share_s, allow_any, NULL));
    raw_write_output(fd, channel);
    while (sync_channel_state(channel) == SYNC_CHANNEL_HANDSHAKE) {
        ssize_t got = recv(fd, buf, 1, 0); /* one byte at a time: read nothing past the reply */
        if (got <= 0)
            break;
        CHECK_INT(0, sync_channel_feed(channel, buf, (size_t)got));
    }
    raw_write_output(fd, channel);
    start = now_ms();
    for (;;) {
        pthread_mutex_lock(&g_lock);
        bool closed = server.closes == 3;
        pthread_mutex_unlock(&g_lock);
        if (closed || now_ms() - start > 10000)
            break;
        if (sync_channel_send(channel, NULL, 0) == 0)
            raw_write_output_quiet(fd, channel);
        usleep(100 * 1000);
    }
    close(fd);
    sync_channel_free(channel);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(3, server.closes);
    CHECK_INT(-ETIMEDOUT, server.last_error);
    CHECK_STR("the peer took nothing we sent for 600 ms", server.last_why);
    server.msg_len = 0;
    server.endless = false;
    pthread_mutex_unlock(&g_lock);

    /* Two live transports with nothing to say stay connected for many idle periods. */
    struct side client = {.name = "client", .allowed = {srv_id.public_key}};
    struct sync_net *net_c = make_net(&alice, &client, 300, 600);
    struct sync_net_handler client_handler = side_handler(&client);
    struct sync_net_dialer *dialer = NULL;
    CHECK_INT(0, sync_net_dial(net_c, &dialer, "127.0.0.1", port, share_s, &client_handler));
    WAIT_UNTIL(ok, client.opens == 1 && server.opens == 3, 2000);
    CHECK(ok);
    usleep(2000 * 1000);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(0, client.closes);
    CHECK_INT(3, server.closes);
    CHECK_INT(0, client.messages); /* keepalives are not messages */
    CHECK_INT(0, server.messages);
    pthread_mutex_unlock(&g_lock);
    sync_net_dialer_close(dialer);
    WAIT_UNTIL(ok, client.closes == 1 && server.closes == 4, 2000);
    CHECK(ok);
    CHECK_INT(0, server.last_error);
    sync_net_free(net_c);
    sync_net_free(net_s);
}

/* ---------- a large transfer with backpressure ---------- */

struct resume_ctx {
    struct side *side;
};

static void resume_on_loop(void *ctx)
{
    struct side *side = ctx;
    pthread_mutex_lock(&g_lock);
    struct sync_net_conn *conn = side->conn;
    side->paused = false;
    pthread_mutex_unlock(&g_lock);
    if (conn)
        sync_net_conn_pause(conn, false);
}

static void test_large_transfer(void)
{
    const size_t msg_len = 64 * 1024, total = 3200; /* 200 MiB */
    struct side server = {.name = "server", .allowed = {alice.public_key}, .total = total};
    server.pause_at = 500;
    struct side client = {
        .name = "client", .allowed = {srv_id.public_key}, .total = total, .msg_len = msg_len};
    struct sync_net *net_s = make_net(&srv_id, &server, 5000, 20000);
    struct sync_net *net_c = make_net(&alice, &client, 5000, 20000);
    struct sync_net_handler server_handler = side_handler(&server);
    uint16_t port = 0;
    CHECK_INT(0, sync_net_listen(net_s, &port, "127.0.0.1", 0, &server_handler));
    struct sync_net_handler client_handler = side_handler(&client);
    struct sync_net_dialer *dialer = NULL;
    uint64_t start = now_ms();
    CHECK_INT(0, sync_net_dial(net_c, &dialer, "127.0.0.1", port, share_s, &client_handler));

    /* The receiver pauses at message 500; the sender must stop at its high-water mark. */
    bool ok;
    WAIT_UNTIL(ok, server.paused, 60000);
    CHECK(ok);
    size_t sent_at_pause = 0;
    for (int settle = 0; settle < 50; settle++) {
        usleep(10 * 1000);
        pthread_mutex_lock(&g_lock);
        bool same = client.sent == sent_at_pause;
        sent_at_pause = client.sent;
        pthread_mutex_unlock(&g_lock);
        if (same && settle > 10)
            break;
    }
    pthread_mutex_lock(&g_lock);
    CHECK(client.blocked_seen >= 1);
    CHECK(client.sent < total); /* held back: not everything went into buffers */
    size_t in_kernel = (client.sent - server.received) * msg_len;
    printf("paused receiver: sender stopped after %zu messages, %zu received, %zu MiB between\n",
           client.sent, server.received, in_kernel >> 20);
    pthread_mutex_unlock(&g_lock);
    CHECK_INT(0, sync_net_post(net_s, resume_on_loop, &server));

    WAIT_UNTIL(ok, server.received == total, 240000);
    CHECK(ok);
    uint64_t took = now_ms() - start;
    pthread_mutex_lock(&g_lock);
    CHECK_INT(0, server.bad);
    CHECK_INT(total * msg_len, server.bytes_received);
    CHECK(client.writables >= 1);
    /* The queue never held more than the high-water mark plus one message and its frame. */
    CHECK(client.max_queued < (1u << 20) + msg_len + 64);
    printf("large transfer: %zu MiB in %llu ms, sender queue peak %zu KiB, %d writable events\n",
           (size_t)(server.bytes_received >> 20), (unsigned long long)took, client.max_queued >> 10,
           client.writables);
    pthread_mutex_unlock(&g_lock);
    sync_net_dialer_close(dialer);
    sync_net_free(net_c);
    sync_net_free(net_s);
}

/* ---------- reconnecting ---------- */

static void test_reconnect(void)
{
    struct side server = {.name = "server", .allowed = {alice.public_key}, .echo = true};
    struct side client = {.name = "client", .allowed = {srv_id.public_key}, .sends_on_open = 1};
    struct sync_net *net_s = make_net(&srv_id, &server, 2000, 5000);
    struct sync_net *net_c = make_net(&alice, &client, 2000, 5000);
    struct sync_net_handler server_handler = side_handler(&server);
    uint16_t port = 0;
    CHECK_INT(0, sync_net_listen(net_s, &port, "127.0.0.1", 0, &server_handler));
    struct sync_net_handler client_handler = side_handler(&client);
    struct sync_net_dialer *dialer = NULL;
    CHECK_INT(0, sync_net_dial(net_c, &dialer, "127.0.0.1", port, share_s, &client_handler));
    bool ok;
    WAIT_UNTIL(ok, client.messages == 1, 5000);
    CHECK(ok);

    /* The listener goes away: the client loses its connection, then is refused, and retries. */
    sync_net_free(net_s);
    WAIT_UNTIL(ok, client.closes >= 3, 5000);
    CHECK(ok);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(-ECONNREFUSED, client.last_error);
    CHECK(strstr(client.last_why, "cannot connect") != NULL);
    int closes_before = client.closes;
    pthread_mutex_unlock(&g_lock);

    /* Back on the same port: the dialer finds it by itself and the session works again. */
    struct side server2 = {.name = "server2", .allowed = {alice.public_key}, .echo = true};
    net_s = make_net(&srv_id, &server2, 2000, 5000);
    server_handler = side_handler(&server2);
    uint16_t port2 = 0;
    CHECK_INT(0, sync_net_listen(net_s, &port2, "127.0.0.1", port, &server_handler));
    CHECK_INT(port, port2);
    WAIT_UNTIL(ok, client.opens == 2 && client.messages == 2, 5000);
    CHECK(ok);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(1, server2.opens);
    CHECK(client.closes >= closes_before);
    pthread_mutex_unlock(&g_lock);
    sync_net_dialer_close(dialer);
    sync_net_free(net_c);
    sync_net_free(net_s);
}

/* ---------- shutdown while busy ---------- */

static void test_shutdown_busy(void)
{
    struct side server = {
        .name = "server", .allowed = {alice.public_key, bob.public_key}, .total = SIZE_MAX};
    struct side client = {
        .name = "client", .allowed = {srv_id.public_key}, .msg_len = 32768, .endless = true};
    struct side idle_client = {.name = "idle", .allowed = {srv_id.public_key}};
    struct sync_net *net_s = make_net(&srv_id, &server, 2000, 5000);
    struct sync_net *net_c = make_net(&alice, &client, 2000, 5000);
    struct sync_net_handler server_handler = side_handler(&server);
    uint16_t port = 0;
    CHECK_INT(0, sync_net_listen(net_s, &port, "127.0.0.1", 0, &server_handler));
    struct sync_net_handler client_handler = side_handler(&client);
    struct sync_net_handler idle_handler = side_handler(&idle_client);
    struct sync_net_dialer *dialer = NULL, *idle_dialer = NULL, *nowhere = NULL;
    CHECK_INT(0, sync_net_dial(net_c, &dialer, "127.0.0.1", port, share_s, &client_handler));
    /* A second device through another transport, and a dialer with nothing to reach. */
    struct sync_net *net_b = make_net(&bob, &idle_client, 2000, 5000);
    CHECK_INT(0, sync_net_dial(net_b, &idle_dialer, "127.0.0.1", port, share_s, &idle_handler));
    CHECK_INT(0, sync_net_dial(net_b, &nowhere, "127.0.0.1", 1, share_s, &idle_handler));
    bool ok;
    WAIT_UNTIL(ok, server.bytes_received > (8u << 20) && idle_client.opens == 1, 20000);
    CHECK(ok);
    /* Stop the server mid-stream, then the clients: every connection is told and freed. */
    sync_net_free(net_s);
    sync_net_free(net_c);
    sync_net_free(net_b);
    pthread_mutex_lock(&g_lock);
    CHECK_INT(2, server.closes);
    CHECK_INT(-ESHUTDOWN, server.last_error);
    CHECK(client.closes >= 1);
    CHECK(idle_client.closes >= 2); /* its connection, and the refused attempts at port 1 */
    pthread_mutex_unlock(&g_lock);

    /* A transport never started, with a listener and a dialer, frees cleanly too. */
    struct sync_net_config config = {.identity = &alice};
    struct sync_net *unstarted = NULL;
    CHECK_INT(0, sync_net_new(&unstarted, &config));
    CHECK(unstarted != NULL);
    if (unstarted) {
        CHECK_INT(0, sync_net_listen(unstarted, &port, "127.0.0.1", 0, &server_handler));
        CHECK_INT(0, sync_net_dial(unstarted, &dialer, "localhost", 9, share_s, &idle_handler));
        sync_net_free(unstarted);
    }
}

/* ---------- posting from threads ---------- */

struct poster {
    struct sync_net *net;
    int thread;
    int next_seen; /* on the loop: the next seq expected from this thread */
    int bad;
};

struct post_job {
    struct poster *poster;
    int seq;
};

static int posts_run;

static void post_job_run(void *ctx)
{
    struct post_job *job = ctx;
    if (!sync_net_on_loop(job->poster->net) || job->seq != job->poster->next_seen)
        job->poster->bad++;
    job->poster->next_seen = job->seq + 1;
    pthread_mutex_lock(&g_lock);
    posts_run++;
    pthread_mutex_unlock(&g_lock);
    free(job);
}

static void *poster_main(void *arg)
{
    struct poster *poster = arg;
    for (int i = 0; i < 500; i++) {
        struct post_job *job = malloc(sizeof(*job));
        *job = (struct post_job){.poster = poster, .seq = i};
        if (sync_net_post(poster->net, post_job_run, job) != 0) {
            free(job);
            poster->bad++;
        }
    }
    return NULL;
}

static void test_post(void)
{
    struct side side = {.name = "poster"};
    struct sync_net *net = make_net(&alice, &side, 1000, 1000);
    CHECK(!sync_net_on_loop(net));
    struct poster posters[4];
    pthread_t threads[4];
    for (int t = 0; t < 4; t++) {
        posters[t] = (struct poster){.net = net, .thread = t};
        pthread_create(&threads[t], NULL, poster_main, &posters[t]);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(threads[t], NULL);
    bool ok;
    WAIT_UNTIL(ok, posts_run == 2000, 10000);
    CHECK(ok);
    for (int t = 0; t < 4; t++) {
        CHECK_INT(0, posters[t].bad);
        CHECK_INT(500, posters[t].next_seen);
    }
    /* Posted and not yet run when the transport stops: run during the stop, exactly once. */
    posts_run = 0;
    for (int i = 0; i < 100; i++) {
        struct post_job *job = malloc(sizeof(*job));
        *job = (struct post_job){.poster = &posters[0], .seq = 500 + i};
        CHECK_INT(0, sync_net_post(net, post_job_run, job));
    }
    sync_net_free(net);
    CHECK_INT(100, posts_run);
    CHECK_INT(0, posters[0].bad);
}

/* ---------- addresses, configuration ---------- */

static void test_parse_addr(void)
{
    char host[64];
    uint16_t port = 0;
    CHECK_INT(0, sync_net_parse_addr(host, sizeof(host), &port, "127.0.0.1:7000", false));
    CHECK_STR("127.0.0.1", host);
    CHECK_INT(7000, port);
    CHECK_INT(0, sync_net_parse_addr(host, sizeof(host), &port, "[::1]:65535", false));
    CHECK_STR("::1", host);
    CHECK_INT(65535, port);
    CHECK_INT(0, sync_net_parse_addr(host, sizeof(host), &port, "relay.example:1", false));
    CHECK_STR("relay.example", host);
    CHECK_INT(0, sync_net_parse_addr(host, sizeof(host), &port, "0.0.0.0:0", true));
    CHECK_INT(0, port);
    const char *bad[] = {"127.0.0.1", "127.0.0.1:", ":7000",   "::1:7000",   "[::1]7000",
                         "[::1:7000", "host:65536", "host:-1", "host:7000x", "host:123456",
                         "[]:7000",   "host:0",     "",        "a:b:c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = sync_net_parse_addr(host, sizeof(host), &port, bad[i], false);
        if (rc != -EINVAL) {
            test_failures++;
            fprintf(stderr, "parse_addr(\"%s\"): expected -EINVAL, got %d\n", bad[i], rc);
        }
    }
    CHECK_INT(-EINVAL, sync_net_parse_addr(host, 4, &port, "hostname:1", false));

    struct sync_net *net = NULL;
    struct sync_net_config config = {.identity = &alice, .high_water = 100, .low_water = 100};
    CHECK_INT(-EINVAL, sync_net_new(&net, &config));
    config = (struct sync_net_config){.identity = &alice, .idle_timeout_ms = 10};
    CHECK_INT(-EINVAL, sync_net_new(&net, &config));
    config = (struct sync_net_config){.identity = NULL};
    CHECK_INT(-EINVAL, sync_net_new(&net, &config));
    config = (struct sync_net_config){.identity = &alice};
    CHECK_INT(0, sync_net_new(&net, &config));
    struct sync_net_handler handler = {.peer = allow_any, .message = side_message};
    CHECK_INT(-EINVAL, sync_net_listen(net, NULL, "localhost", 0, &handler)); /* numeric only */
    struct sync_net_dialer *dialer = NULL;
    CHECK_INT(-EINVAL, sync_net_dial(net, &dialer, "127.0.0.1", 0, share_s, &handler));
    sync_net_free(net);
}

int main(void)
{
    alarm(600); /* the whole run, under sanitizers too */
    if (sync_init() != 0)
        return 2;
    util_identity(&srv_id, 10);
    util_identity(&alice, 11);
    util_identity(&bob, 12);
    util_identity(&mallory, 13);
    memset(share_s, 0x5e, sizeof(share_s));
    test_parse_addr();
    test_post();
    test_exchange();
    test_refused();
    test_silent();
    test_reconnect();
    test_shutdown_busy();
    test_large_transfer();
    return test_finish("test-sync-net");
}
