/*
 * sync/net: see net.h. The loop thread, posting, listeners, dialers with
 * backoff, and connections: each a TCP handle, a timer and a sync_channel.
 *
 * A connection's life: CONNECTING (dialed, TCP connect pending) ->
 * HANDSHAKE -> OPEN -> CLOSING (final frame queued, output flushing, then
 * shutdown(2) and waiting for the peer's EOF) -> CLOSED (uv_close issued on
 * both handles). The handler hears `closed` once, when CLOSING or CLOSED
 * begins; the memory goes when both handles' close callbacks have run,
 * which libuv runs after every pending request's callback, so no callback
 * ever sees a freed connection.
 *
 * One timer per connection fires at the next deadline of its state
 * (handshake, idle, stalled write, keepalive, linger) and recomputes; as
 * activity only moves deadlines later, a timer that fires early just
 * re-arms.
 */
#include "sync/net.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#define READ_BUF_LEN   (64u * 1024u)  /* one read: what is fed to the channel at a time */
#define WRITE_CHUNK    (256u * 1024u) /* largest write handed to libuv (copied: see flush) */
#define TRY_WRITE_MAX  (1u << 20)     /* largest direct write attempted from the channel */
#define LISTEN_BACKLOG 128
#define ADDR_TEXT_LEN  64
#define WHY_LEN        320

/* The net whose loop runs on this thread (NULL elsewhere): answers sync_net_on_loop. */
static _Thread_local struct sync_net *loop_net;

struct post_item {
    struct post_item *next;
    void (*fn)(void *ctx);
    void *ctx;
};

struct listener {
    struct listener *next;
    struct sync_net *net;
    uv_tcp_t tcp;
    struct sync_net_handler handler;
};

enum conn_state {
    CONN_CONNECTING,
    CONN_HANDSHAKE,
    CONN_OPEN,
    CONN_CLOSING,
    CONN_CLOSED,
};

struct sync_net_conn {
    struct sync_net *net;
    struct sync_net_conn *prev, *next; /* the net's list of connections */
    struct sync_net_dialer *dialer;    /* the dialer that made it, or NULL (accepted) */
    struct sync_net_handler handler;
    enum conn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    int handles_open; /* of tcp and timer: freed at 0 */
    struct sync_channel *channel;
    bool connected;  /* the TCP connection exists (accepted, or connect succeeded) */
    bool paused;     /* the handler stopped reading */
    bool reading;    /* uv_read_start is in effect */
    bool writing;    /* write_req is in flight */
    bool blocked;    /* the queue reached high_water; `writable` fires at low_water */
    bool delivering; /* inside the delivery loop (pause/resume from a callback) */
    bool notified;   /* `closed` has run */
    bool shut;       /* shutdown(2) requested */
    uint64_t started_ms, last_recv_ms, last_send_ms, write_started_ms, closing_ms;
    size_t in_flight; /* bytes of write_req */
    uint8_t *read_buf;
    uint8_t *write_buf; /* WRITE_CHUNK bytes, made at the first asynchronous write */
    int error;
    char why[WHY_LEN];
    char addr[ADDR_TEXT_LEN];
    void *data;
};

struct sync_net_dialer {
    struct sync_net *net;
    struct sync_net_dialer *prev, *next;
    char *host;
    uint16_t port;
    uint8_t share_id[SYNC_SHARE_ID_LEN];
    struct sync_net_handler handler;
    struct sync_net_conn *conn; /* the current attempt or connection */
    uv_timer_t retry;
    uv_getaddrinfo_t resolve;
    bool resolving;
    bool closing;
    bool retry_closed;
    uint32_t backoff_ms; /* b: the next delay is drawn from [b/2, b] */
};

struct sync_net {
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t tick; /* sync_net_tick's, stopped until set */
    void (*tick_fn)(void *ctx);
    void *tick_ctx;
    uv_timer_t later; /* sync_net_later's */
    void (*later_fn)(void *ctx);
    void *later_ctx;
    uv_thread_t thread;
    bool started; /* the loop thread exists */
    bool down;    /* the loop side began shutting down */
    struct sync_identity identity;
    struct sync_net_config config; /* defaults filled in; identity points at ours */
    uv_mutex_t lock;               /* guards posts and stopping */
    struct post_item *post_head, *post_tail;
    bool stopping;
    struct listener *listeners;
    struct sync_net_conn *conns;
    struct sync_net_dialer *dialers;
};

/* ---------- logging ---------- */

static void net_log(struct sync_net *net, enum sync_net_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void net_log(struct sync_net *net, enum sync_net_log_level level, const char *fmt, ...)
{
    if (!net->config.log)
        return;
    char line[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(line, sizeof(line), fmt, args);
    va_end(args);
    net->config.log(net->config.log_ctx, level, line);
}

/* The first 8 bytes of the peer's key in hex, or "?" before the handshake verified it. */
static const char *conn_peer_hex(char out[17], const struct sync_net_conn *conn)
{
    uint8_t key[SYNC_PUBLIC_KEY_LEN];
    if (!conn->channel || sync_channel_peer(key, NULL, conn->channel) != 0)
        return "?";
    sodium_bin2hex(out, 17, key, 8);
    return out;
}

static int uv_errno(int uv_rc)
{
    /* On Unix libuv's error codes are negative errnos; UV_EOF is its own. */
    return uv_rc == UV_EOF ? -ECONNRESET : uv_rc;
}

/* ---------- connections: closing ---------- */

static void conn_arm_timer(struct sync_net_conn *conn);
static void conn_flush(struct sync_net_conn *conn);
static void conn_read_start(struct sync_net_conn *conn);
static void dialer_conn_gone(struct sync_net_dialer *dialer);

/* A close callback that frees a handle allocated on its own. */
static void free_handle(uv_handle_t *handle)
{
    free(handle);
}

static void conn_free(struct sync_net_conn *conn)
{
    struct sync_net *net = conn->net;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        net->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    struct sync_net_dialer *dialer = conn->dialer;
    sync_channel_free(conn->channel);
    free(conn->read_buf);
    free(conn->write_buf);
    free(conn);
    if (dialer)
        dialer_conn_gone(dialer);
}

static void on_conn_handle_closed(uv_handle_t *handle)
{
    struct sync_net_conn *conn = handle->data;
    if (--conn->handles_open == 0)
        conn_free(conn);
}

/* Tells the handler (once) and logs why the connection ends. */
static void conn_notify(struct sync_net_conn *conn, int error, const char *why)
{
    if (conn->notified)
        return;
    conn->notified = true;
    conn->error = error;
    snprintf(conn->why, sizeof(conn->why), "%s", why && why[0] ? why : "closed");
    char hex[17];
    const char *key = conn_peer_hex(hex, conn);
    /* Our own shutdown is no problem of the connection's. */
    enum sync_net_log_level level =
        error && error != -ESHUTDOWN ? SYNC_NET_LOG_WARN : SYNC_NET_LOG_INFO;
    net_log(conn->net, level, "%s %s (device %s): %s",
            conn->dialer ? "connection to" : "connection from", conn->addr, key, conn->why);
    if (conn->handler.closed)
        conn->handler.closed(conn->handler.ctx, conn, error, conn->why);
}

/* Closes both handles now; pending requests are cancelled (their callbacks see CLOSED). */
static void conn_close_handles(struct sync_net_conn *conn)
{
    if (conn->state == CONN_CLOSED)
        return;
    conn->state = CONN_CLOSED;
    uv_close((uv_handle_t *)&conn->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&conn->timer, on_conn_handle_closed);
}

/*
 * Ends a connection with `error` (0: cleanly). With `flush`, what the
 * channel still has to say (a refusal, a final frame) is written first and
 * the peer is given until the linger deadline to close its side; without,
 * the socket closes at once (the peer is gone or the transport stops).
 */
static void conn_end(struct sync_net_conn *conn, int error, const char *why, bool flush)
{
    if (conn->state == CONN_CLOSED)
        return;
    conn_notify(conn, error, why);
    if (conn->state == CONN_CLOSING && flush)
        return;
    if (!flush || !conn->connected || !conn->channel) {
        conn_close_handles(conn);
        return;
    }
    if (sync_channel_state(conn->channel) == SYNC_CHANNEL_OPEN ||
        sync_channel_state(conn->channel) == SYNC_CHANNEL_CLOSED) {
        /*
         * -EPIPE: finished already. Any other failure only costs the peer
         * the final frame, and it reports the truncated stream itself.
         */
        int finished = sync_channel_finish(conn->channel);
        (void)finished;
    }
    conn->state = CONN_CLOSING;
    conn->closing_ms = uv_now(&conn->net->loop);
    /* Keep reading (and discarding, even if the handler had paused) to see the peer's EOF. */
    conn_read_start(conn);
    conn_arm_timer(conn);
    conn_flush(conn);
}

/* ---------- connections: writing ---------- */

static size_t conn_queued(const struct sync_net_conn *conn)
{
    size_t pending = 0;
    if (conn->channel)
        (void)sync_channel_output(&pending, conn->channel);
    return pending + conn->in_flight;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct sync_net_conn *conn = req->data;
    if (conn->state == CONN_CLOSED)
        return;
    /* Shut down: now the peer's EOF (read callback) or the linger deadline closes it. */
    if (status < 0)
        conn_close_handles(conn);
}

static void on_write(uv_write_t *req, int status);

/*
 * Moves the channel's output to the socket: directly (uv_try_write) while
 * the kernel takes it, then one asynchronous write of a copy, since the
 * channel's buffer moves as more is sent. One write is in flight at a time.
 */
static void conn_flush(struct sync_net_conn *conn)
{
    if (conn->writing || !conn->connected || conn->state == CONN_CLOSED || !conn->channel)
        return;
    size_t len = 0;
    const uint8_t *out = sync_channel_output(&len, conn->channel);
    while (len > 0) {
        uv_buf_t buf =
            uv_buf_init((char *)out, (unsigned)(len < TRY_WRITE_MAX ? len : TRY_WRITE_MAX));
        int wrote = uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
        if (wrote == UV_EAGAIN || wrote == 0)
            break;
        if (wrote < 0) {
            conn_end(conn, uv_errno(wrote), "writing to the peer failed", false);
            return;
        }
        sync_channel_output_consume(conn->channel, (size_t)wrote);
        out = sync_channel_output(&len, conn->channel);
    }
    if (len > 0) {
        if (!conn->write_buf && !(conn->write_buf = malloc(WRITE_CHUNK))) {
            conn_end(conn, -ENOMEM, "out of memory", false);
            return;
        }
        size_t take = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        memcpy(conn->write_buf, out, take);
        sync_channel_output_consume(conn->channel, take);
        uv_buf_t buf = uv_buf_init((char *)conn->write_buf, (unsigned)take);
        int rc = uv_write(&conn->write_req, (uv_stream_t *)&conn->tcp, &buf, 1, on_write);
        if (rc < 0) {
            conn_end(conn, uv_errno(rc), "writing to the peer failed", false);
            return;
        }
        conn->writing = true;
        conn->in_flight = take;
        conn->write_started_ms = uv_now(&conn->net->loop);
        return;
    }
    if (conn->state == CONN_CLOSING && !conn->shut) {
        conn->shut = true;
        int rc = uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, on_shutdown);
        if (rc < 0)
            conn_close_handles(conn);
    }
}

/* After the queue shrank: tells a blocked producer it may go on. */
static void conn_maybe_writable(struct sync_net_conn *conn)
{
    if (!conn->blocked || conn->state != CONN_OPEN)
        return;
    if (conn_queued(conn) > conn->net->config.low_water)
        return;
    conn->blocked = false;
    if (conn->handler.writable)
        conn->handler.writable(conn->handler.ctx, conn);
}

static void on_write(uv_write_t *req, int status)
{
    struct sync_net_conn *conn = req->data;
    conn->writing = false;
    conn->in_flight = 0;
    if (conn->state == CONN_CLOSED)
        return;
    if (status < 0) {
        conn_end(conn, uv_errno(status), "writing to the peer failed", false);
        return;
    }
    conn_flush(conn);
    conn_maybe_writable(conn);
}

/* ---------- connections: reading ---------- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct sync_net_conn *conn = handle->data;
    (void)suggested;
    *buf = uv_buf_init((char *)conn->read_buf, READ_BUF_LEN);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(struct sync_net_conn *conn)
{
    if (conn->reading || conn->state == CONN_CLOSED)
        return;
    int rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (rc < 0) {
        conn_end(conn, uv_errno(rc), "reading from the peer failed", false);
        return;
    }
    conn->reading = true;
}

static void conn_read_stop(struct sync_net_conn *conn)
{
    if (!conn->reading)
        return;
    uv_read_stop((uv_stream_t *)&conn->tcp);
    conn->reading = false;
}

/*
 * Hands every decrypted message to the handler, unless paused; empty ones
 * are keepalives. Then, if the peer sent its final frame and nothing is
 * left, ends the connection cleanly.
 */
static void conn_deliver(struct sync_net_conn *conn)
{
    if (conn->delivering)
        return; /* the outer loop goes on (resume from inside a callback) */
    conn->delivering = true;
    while (conn->state == CONN_OPEN && !conn->paused) {
        uint8_t *message = NULL;
        size_t len = 0;
        if (sync_channel_recv(&message, &len, conn->channel) != 0)
            break;
        if (len == 0)
            continue;
        int rc = conn->handler.message(conn->handler.ctx, conn, message, len);
        free(message);
        if (rc < 0) {
            char why[WHY_LEN];
            snprintf(why, sizeof(why), "the session ended it: %s", strerror(-rc));
            conn_end(conn, rc, why, true);
        }
    }
    conn->delivering = false;
    if (conn->state == CONN_OPEN && !conn->paused &&
        sync_channel_state(conn->channel) == SYNC_CHANNEL_CLOSED &&
        sync_channel_inbox_bytes(conn->channel) == 0)
        conn_end(conn, 0, "the peer closed the connection", true);
}

/* The handshake just completed. */
static void conn_opened(struct sync_net_conn *conn)
{
    conn->state = CONN_OPEN;
    char hex[17];
    net_log(conn->net, SYNC_NET_LOG_INFO, "%s %s: device %s authenticated",
            conn->dialer ? "connected to" : "accepted", conn->addr, conn_peer_hex(hex, conn));
    if (conn->dialer)
        conn->dialer->backoff_ms = conn->net->config.backoff_min_ms;
    if (conn->handler.open)
        conn->handler.open(conn->handler.ctx, conn);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct sync_net_conn *conn = stream->data;
    (void)buf;
    if (nread == 0 || conn->state == CONN_CLOSED)
        return;
    if (conn->state == CONN_CLOSING) {
        /* Draining: anything but data means the peer is done. */
        if (nread < 0)
            conn_close_handles(conn);
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF) {
            conn_end(conn, uv_errno((int)nread), "the connection broke", false);
            return;
        }
        int rc = sync_channel_feed_eof(conn->channel);
        if (rc)
            conn_end(conn, rc, sync_channel_errmsg(conn->channel), false);
        else
            conn_end(conn, 0, "the peer closed the connection", true);
        return;
    }
    conn->last_recv_ms = uv_now(&conn->net->loop);
    int rc = sync_channel_feed(conn->channel, conn->read_buf, (size_t)nread);
    /* Whatever the handshake produced (a reply, a refusal) goes out first. */
    conn_flush(conn);
    if (conn->state == CONN_CLOSED)
        return;
    if (rc) {
        conn_end(conn, rc, sync_channel_errmsg(conn->channel), true);
        return;
    }
    if (conn->state == CONN_HANDSHAKE &&
        sync_channel_state(conn->channel) != SYNC_CHANNEL_HANDSHAKE)
        conn_opened(conn);
    if (conn->state == CONN_OPEN)
        conn_deliver(conn);
}

/* ---------- connections: time ---------- */

static void on_conn_timer(uv_timer_t *timer);

static void conn_arm_timer(struct sync_net_conn *conn)
{
    if (conn->state == CONN_CLOSED)
        return;
    const struct sync_net_config *config = &conn->net->config;
    uint64_t now = uv_now(&conn->net->loop), deadline = UINT64_MAX;
    switch (conn->state) {
    case CONN_CONNECTING:
    case CONN_HANDSHAKE:
        deadline = conn->started_ms + config->handshake_timeout_ms;
        break;
    case CONN_OPEN: {
        uint64_t silent = conn->last_recv_ms + config->idle_timeout_ms;
        uint64_t keepalive = conn->last_send_ms + config->idle_timeout_ms / 3;
        deadline = silent < keepalive ? silent : keepalive;
        if (conn->writing && conn->write_started_ms + config->idle_timeout_ms < deadline)
            deadline = conn->write_started_ms + config->idle_timeout_ms;
        break;
    }
    case CONN_CLOSING:
        deadline = conn->closing_ms + config->handshake_timeout_ms;
        break;
    case CONN_CLOSED:
        return;
    }
    uv_timer_start(&conn->timer, on_conn_timer, deadline > now ? deadline - now : 0, 0);
}

static void on_conn_timer(uv_timer_t *timer)
{
    struct sync_net_conn *conn = timer->data;
    const struct sync_net_config *config = &conn->net->config;
    uint64_t now = uv_now(&conn->net->loop);
    char why[WHY_LEN];
    switch (conn->state) {
    case CONN_CONNECTING:
    case CONN_HANDSHAKE:
        if (now >= conn->started_ms + config->handshake_timeout_ms) {
            snprintf(why, sizeof(why), "no %s within %u ms",
                     conn->state == CONN_CONNECTING ? "connection" : "handshake",
                     config->handshake_timeout_ms);
            conn_end(conn, -ETIMEDOUT, why, false);
            return;
        }
        break;
    case CONN_OPEN:
        if (now >= conn->last_recv_ms + config->idle_timeout_ms) {
            snprintf(why, sizeof(why), "the peer was silent for %u ms", config->idle_timeout_ms);
            conn_end(conn, -ETIMEDOUT, why, false);
            return;
        }
        if (conn->writing && now >= conn->write_started_ms + config->idle_timeout_ms) {
            snprintf(why, sizeof(why), "the peer took nothing we sent for %u ms",
                     config->idle_timeout_ms);
            conn_end(conn, -ETIMEDOUT, why, false);
            return;
        }
        if (now >= conn->last_send_ms + config->idle_timeout_ms / 3) {
            /* Keepalive: an empty message, which the peer's transport drops. */
            int rc = sync_channel_send(conn->channel, NULL, 0);
            if (rc) {
                conn_end(conn, rc, "sending a keepalive failed", false);
                return;
            }
            conn->last_send_ms = now;
            conn_flush(conn);
            if (conn->state == CONN_CLOSED)
                return;
        }
        break;
    case CONN_CLOSING:
        if (now >= conn->closing_ms + config->handshake_timeout_ms) {
            conn_close_handles(conn);
            return;
        }
        break;
    case CONN_CLOSED:
        return;
    }
    conn_arm_timer(conn);
}

/* ---------- connections: making ---------- */

static struct sync_net_conn *conn_new(struct sync_net *net, const struct sync_net_handler *handler,
                                      struct sync_net_dialer *dialer)
{
    struct sync_net_conn *conn = calloc(1, sizeof(*conn));
    uint8_t *read_buf = malloc(READ_BUF_LEN);
    if (!conn || !read_buf) {
        free(conn);
        free(read_buf);
        return NULL;
    }
    conn->net = net;
    conn->dialer = dialer;
    conn->handler = *handler;
    conn->read_buf = read_buf;
    conn->started_ms = uv_now(&net->loop);
    conn->last_recv_ms = conn->last_send_ms = conn->started_ms;
    snprintf(conn->addr, sizeof(conn->addr), "?");
    uv_tcp_init(&net->loop, &conn->tcp);
    uv_timer_init(&net->loop, &conn->timer);
    conn->handles_open = 2;
    conn->tcp.data = conn->timer.data = conn;
    conn->connect_req.data = conn->write_req.data = conn->shutdown_req.data = conn;
    conn->next = net->conns;
    if (net->conns)
        net->conns->prev = conn;
    net->conns = conn;
    return conn;
}

static void addr_text(char out[ADDR_TEXT_LEN], const struct sockaddr *addr)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        uv_ip4_name(in, host, sizeof(host));
        snprintf(out, ADDR_TEXT_LEN, "%s:%u", host, ntohs(in->sin_port));
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        uv_ip6_name(in6, host, sizeof(host));
        snprintf(out, ADDR_TEXT_LEN, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, ADDR_TEXT_LEN, "?");
    }
}

/* A connected socket: starts the channel, the handshake and the reading. */
static void conn_start(struct sync_net_conn *conn, enum sync_channel_role role,
                       const uint8_t *share_id)
{
    conn->connected = true;
    uv_tcp_nodelay(&conn->tcp, 1); /* a change should reach the peer in milliseconds */
    int rc = sync_channel_new(&conn->channel, role, &conn->net->identity, share_id,
                              conn->handler.peer, conn->handler.ctx);
    if (rc) {
        conn_end(conn, rc, "cannot start the channel", false);
        return;
    }
    conn->state = CONN_HANDSHAKE;
    conn->started_ms = uv_now(&conn->net->loop);
    conn_arm_timer(conn);
    conn_flush(conn);
    conn_read_start(conn);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *listener = server->data;
    struct sync_net *net = listener->net;
    if (status < 0) {
        net_log(net, SYNC_NET_LOG_WARN, "accepting a connection failed: %s", uv_strerror(status));
        return;
    }
    struct sync_net_conn *conn = conn_new(net, &listener->handler, NULL);
    if (!conn) {
        /* Take the connection off the backlog and drop it, or libuv would offer it again. */
        net_log(net, SYNC_NET_LOG_ERROR, "out of memory: refusing a connection");
        uv_tcp_t *drop = malloc(sizeof(*drop));
        if (drop && uv_tcp_init(&net->loop, drop) == 0) {
            if (uv_accept(server, (uv_stream_t *)drop) != 0)
                net_log(net, SYNC_NET_LOG_ERROR, "cannot even drop the connection");
            uv_close((uv_handle_t *)drop, free_handle);
        } else {
            free(drop);
        }
        return;
    }
    int rc = uv_accept(server, (uv_stream_t *)&conn->tcp);
    if (rc < 0) {
        conn_end(conn, uv_errno(rc), "accepting the connection failed", false);
        return;
    }
    struct sockaddr_storage peer;
    int peer_len = sizeof(peer);
    if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&peer, &peer_len) == 0)
        addr_text(conn->addr, (struct sockaddr *)&peer);
    net_log(net, SYNC_NET_LOG_DEBUG, "connection from %s", conn->addr);
    conn_start(conn, SYNC_CHANNEL_RESPONDER, NULL);
}

/* ---------- dialers ---------- */

static void dialer_attempt(struct sync_net_dialer *dialer);

static void on_dialer_retry_closed(uv_handle_t *handle);

static void dialer_maybe_free(struct sync_net_dialer *dialer)
{
    if (!dialer->closing || !dialer->retry_closed || dialer->resolving || dialer->conn)
        return;
    struct sync_net *net = dialer->net;
    if (dialer->prev)
        dialer->prev->next = dialer->next;
    else
        net->dialers = dialer->next;
    if (dialer->next)
        dialer->next->prev = dialer->prev;
    free(dialer->host);
    free(dialer);
}

static void on_dialer_retry_closed(uv_handle_t *handle)
{
    struct sync_net_dialer *dialer = handle->data;
    dialer->retry_closed = true;
    dialer_maybe_free(dialer);
}

static void on_retry(uv_timer_t *timer)
{
    dialer_attempt(timer->data);
}

/* Schedules the next attempt: a delay drawn from [b/2, b], then b doubles up to the cap. */
static void dialer_schedule(struct sync_net_dialer *dialer)
{
    if (dialer->closing)
        return;
    const struct sync_net_config *config = &dialer->net->config;
    uint32_t b = dialer->backoff_ms;
    uint32_t delay = b / 2 + randombytes_uniform(b / 2 + 1);
    dialer->backoff_ms = b >= config->backoff_max_ms / 2 ? config->backoff_max_ms : b * 2;
    net_log(dialer->net, SYNC_NET_LOG_DEBUG, "reconnecting to %s:%u in %u ms", dialer->host,
            dialer->port, delay);
    uv_timer_start(&dialer->retry, on_retry, delay, 0);
}

/* The dialer's connection is gone; the backoff was reset if it had opened (conn_opened). */
static void dialer_conn_gone(struct sync_net_dialer *dialer)
{
    dialer->conn = NULL;
    if (dialer->closing)
        dialer_maybe_free(dialer);
    else
        dialer_schedule(dialer);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct sync_net_conn *conn = req->data;
    if (conn->state != CONN_CONNECTING)
        return; /* closed meanwhile: the request was cancelled */
    if (status < 0) {
        char why[WHY_LEN];
        snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(status));
        conn_end(conn, uv_errno(status), why, false);
        return;
    }
    conn_start(conn, SYNC_CHANNEL_INITIATOR, conn->dialer->share_id);
}

static void dialer_connect(struct sync_net_dialer *dialer, const struct sockaddr *addr)
{
    struct sync_net_conn *conn = conn_new(dialer->net, &dialer->handler, dialer);
    if (!conn) {
        net_log(dialer->net, SYNC_NET_LOG_ERROR, "out of memory connecting to %s", dialer->host);
        dialer_schedule(dialer);
        return;
    }
    dialer->conn = conn;
    addr_text(conn->addr, addr);
    conn->state = CONN_CONNECTING;
    conn_arm_timer(conn);
    int rc = uv_tcp_connect(&conn->connect_req, &conn->tcp, addr, on_connect);
    if (rc < 0) {
        char why[WHY_LEN];
        snprintf(why, sizeof(why), "cannot connect: %s", uv_strerror(rc));
        conn_end(conn, uv_errno(rc), why, false);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct sync_net_dialer *dialer = req->data;
    dialer->resolving = false;
    if (dialer->closing) {
        uv_freeaddrinfo(res);
        dialer_maybe_free(dialer);
        return;
    }
    if (status < 0 || !res) {
        net_log(dialer->net, SYNC_NET_LOG_WARN, "cannot resolve %s: %s", dialer->host,
                uv_strerror(status));
        uv_freeaddrinfo(res);
        dialer_schedule(dialer);
        return;
    }
    dialer_connect(dialer, res->ai_addr);
    uv_freeaddrinfo(res);
}

static void dialer_attempt(struct sync_net_dialer *dialer)
{
    if (dialer->closing || dialer->conn || dialer->resolving)
        return;
    struct sockaddr_storage addr;
    if (uv_ip4_addr(dialer->host, dialer->port, (struct sockaddr_in *)&addr) == 0 ||
        uv_ip6_addr(dialer->host, dialer->port, (struct sockaddr_in6 *)&addr) == 0) {
        dialer_connect(dialer, (struct sockaddr *)&addr);
        return;
    }
    /* A name: resolved on libuv's thread pool, so the loop never blocks on DNS. */
    char port_text[8];
    snprintf(port_text, sizeof(port_text), "%u", dialer->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(&dialer->net->loop, &dialer->resolve, on_resolved, dialer->host,
                            port_text, &hints);
    if (rc < 0) {
        net_log(dialer->net, SYNC_NET_LOG_WARN, "cannot resolve %s: %s", dialer->host,
                uv_strerror(rc));
        dialer_schedule(dialer);
        return;
    }
    dialer->resolving = true;
}

/*
 * Stops the dialer; it is freed once its connection and handles are gone.
 * Its connection is closed gracefully, unless the transport is shutting
 * down: then net_shut_down closes it with the others.
 */
static void dialer_close_on_loop(struct sync_net_dialer *dialer)
{
    if (dialer->closing)
        return;
    dialer->closing = true;
    uv_timer_stop(&dialer->retry);
    uv_close((uv_handle_t *)&dialer->retry, on_dialer_retry_closed);
    if (dialer->resolving)
        uv_cancel((uv_req_t *)&dialer->resolve); /* on_resolved still runs (UV_ECANCELED) */
    if (dialer->conn && !dialer->net->down)
        conn_end(dialer->conn, 0, "closed by this side", true);
    dialer_maybe_free(dialer);
}

/* ---------- the loop thread, posting, stopping ---------- */

static void on_listener_closed(uv_handle_t *handle)
{
    free(handle->data); /* the listener: its tcp handle is a member */
}

/* Closes everything; uv_run then returns once the last close callback ran. */
static void net_shut_down(struct sync_net *net)
{
    if (net->down)
        return;
    net->down = true;
    while (net->listeners) {
        struct listener *listener = net->listeners;
        net->listeners = listener->next;
        uv_close((uv_handle_t *)&listener->tcp, on_listener_closed);
    }
    for (struct sync_net_dialer *dialer = net->dialers; dialer; dialer = dialer->next)
        dialer_close_on_loop(dialer);
    for (struct sync_net_conn *conn = net->conns; conn; conn = conn->next) {
        if (conn->state == CONN_CLOSED)
            continue;
        /* Best effort at a clean end without waiting: the final frame, if the kernel takes it. */
        if (conn->state == CONN_OPEN && sync_channel_finish(conn->channel) == 0 && !conn->writing) {
            size_t len = 0;
            const uint8_t *out = sync_channel_output(&len, conn->channel);
            uv_buf_t buf =
                uv_buf_init((char *)out, (unsigned)(len < TRY_WRITE_MAX ? len : TRY_WRITE_MAX));
            if (len)
                (void)uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
        }
        conn_notify(conn, -ESHUTDOWN, "the transport is shutting down");
        conn_close_handles(conn);
    }
    uv_close((uv_handle_t *)&net->tick, NULL);
    uv_close((uv_handle_t *)&net->later, NULL);
    uv_close((uv_handle_t *)&net->async, NULL);
}

/* Runs what other threads posted, in order; at stop, then closes everything. */
static void on_async(uv_async_t *async)
{
    struct sync_net *net = async->data;
    for (;;) {
        uv_mutex_lock(&net->lock);
        struct post_item *item = net->post_head;
        net->post_head = net->post_tail = NULL;
        bool stopping = net->stopping;
        uv_mutex_unlock(&net->lock);
        if (!item) {
            if (stopping)
                net_shut_down(net);
            return;
        }
        while (item) {
            struct post_item *next = item->next;
            item->fn(item->ctx);
            free(item);
            item = next;
        }
    }
}

static void loop_main(void *arg)
{
    struct sync_net *net = arg;
    loop_net = net;
    /*
     * Signals meant for the process go to other threads; SIGPIPE from a
     * write to a closed socket stays pending here, harmless (the write
     * fails with EPIPE), instead of killing the process.
     */
    sigset_t blocked;
    sigemptyset(&blocked);
    int signals[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD};
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
        sigaddset(&blocked, signals[i]);
    pthread_sigmask(SIG_BLOCK, &blocked, NULL);
    uv_run(&net->loop, UV_RUN_DEFAULT);
    loop_net = NULL;
}

int sync_net_new(struct sync_net **out, const struct sync_net_config *config)
{
    *out = NULL;
    if (!config || !config->identity)
        return -EINVAL;
    int rc = sync_init();
    if (rc)
        return rc;
    struct sync_net_config filled = *config;
    if (!filled.handshake_timeout_ms)
        filled.handshake_timeout_ms = SYNC_NET_HANDSHAKE_TIMEOUT_MS;
    if (!filled.idle_timeout_ms)
        filled.idle_timeout_ms = SYNC_NET_IDLE_TIMEOUT_MS;
    if (!filled.high_water)
        filled.high_water = SYNC_NET_HIGH_WATER;
    if (!filled.low_water)
        filled.low_water =
            filled.high_water / 4 < SYNC_NET_LOW_WATER ? filled.high_water / 4 : SYNC_NET_LOW_WATER;
    if (!filled.backoff_min_ms)
        filled.backoff_min_ms = SYNC_NET_BACKOFF_MIN_MS;
    if (!filled.backoff_max_ms)
        filled.backoff_max_ms = filled.backoff_min_ms > SYNC_NET_BACKOFF_MAX_MS
                                    ? filled.backoff_min_ms
                                    : SYNC_NET_BACKOFF_MAX_MS;
    if (filled.idle_timeout_ms < 30 || filled.low_water >= filled.high_water ||
        filled.backoff_max_ms < filled.backoff_min_ms || filled.backoff_max_ms > (1u << 30))
        return -EINVAL;
    struct sync_net *net = calloc(1, sizeof(*net));
    if (!net)
        return -ENOMEM;
    net->identity = *config->identity;
    net->config = filled;
    net->config.identity = &net->identity;
    if (uv_loop_init(&net->loop) != 0) {
        sodium_memzero(net, sizeof(*net));
        free(net);
        return -EIO;
    }
    if (uv_mutex_init(&net->lock) != 0) {
        uv_loop_close(&net->loop);
        sodium_memzero(net, sizeof(*net));
        free(net);
        return -EIO;
    }
    uv_async_init(&net->loop, &net->async, on_async);
    net->async.data = net;
    uv_timer_init(&net->loop, &net->tick);
    net->tick.data = net;
    uv_timer_init(&net->loop, &net->later);
    net->later.data = net;
    *out = net;
    return 0;
}

int sync_net_start(struct sync_net *net)
{
    if (net->started)
        return -EALREADY;
    if (uv_thread_create(&net->thread, loop_main, net) != 0)
        return -EIO;
    net->started = true;
    return 0;
}

int sync_net_post(struct sync_net *net, void (*fn)(void *ctx), void *ctx)
{
    struct post_item *item = malloc(sizeof(*item));
    if (!item)
        return -ENOMEM;
    *item = (struct post_item){.fn = fn, .ctx = ctx};
    uv_mutex_lock(&net->lock);
    if (net->stopping) {
        uv_mutex_unlock(&net->lock);
        free(item);
        return -ESHUTDOWN;
    }
    if (net->post_tail)
        net->post_tail->next = item;
    else
        net->post_head = item;
    net->post_tail = item;
    /* Under the lock: the handle cannot be closed meanwhile (it closes only after stopping). */
    uv_async_send(&net->async);
    uv_mutex_unlock(&net->lock);
    return 0;
}

static void on_tick(uv_timer_t *timer)
{
    struct sync_net *net = timer->data;
    net->tick_fn(net->tick_ctx);
}

int sync_net_tick(struct sync_net *net, uint32_t every_ms, void (*fn)(void *ctx), void *ctx)
{
    if (net->started || net->tick_fn || !fn || every_ms == 0)
        return -EINVAL;
    net->tick_fn = fn;
    net->tick_ctx = ctx;
    uv_timer_start(&net->tick, on_tick, every_ms, every_ms);
    return 0;
}

static void on_later(uv_timer_t *timer)
{
    struct sync_net *net = timer->data;
    net->later_fn(net->later_ctx);
}

int sync_net_later(struct sync_net *net, uint32_t ms, void (*fn)(void *ctx), void *ctx)
{
    if (!sync_net_on_loop(net) || !fn)
        return -EINVAL;
    if (net->down)
        return -ESHUTDOWN;
    net->later_fn = fn;
    net->later_ctx = ctx;
    uv_timer_start(&net->later, on_later, ms, 0);
    return 0;
}

bool sync_net_on_loop(const struct sync_net *net)
{
    return loop_net == net;
}

void sync_net_free(struct sync_net *net)
{
    if (!net)
        return;
    uv_mutex_lock(&net->lock);
    net->stopping = true;
    uv_async_send(&net->async);
    uv_mutex_unlock(&net->lock);
    if (net->started) {
        uv_thread_join(&net->thread);
    } else {
        /* Never started: the loop runs here, once, to close what listen/dial made. */
        loop_net = net;
        uv_run(&net->loop, UV_RUN_DEFAULT);
        loop_net = NULL;
    }
    int rc = uv_loop_close(&net->loop);
    (void)rc; /* every handle was closed by net_shut_down; UV_EBUSY would be a bug here */
    uv_mutex_destroy(&net->lock);
    sodium_memzero(net, sizeof(*net));
    free(net);
}

/*
 * Runs fn(arg) on the loop and waits for it: inline on the loop thread (or
 * before the loop thread exists), else posted with a condition variable.
 */
struct loop_call {
    void (*fn)(void *arg);
    void *arg;
    uv_mutex_t mutex;
    uv_cond_t cond;
    bool done;
};

static void loop_call_run(void *ctx)
{
    struct loop_call *call = ctx;
    call->fn(call->arg);
    uv_mutex_lock(&call->mutex);
    call->done = true;
    uv_cond_signal(&call->cond);
    uv_mutex_unlock(&call->mutex);
}

static int call_on_loop(struct sync_net *net, void (*fn)(void *arg), void *arg)
{
    if (sync_net_on_loop(net) || !net->started) {
        fn(arg);
        return 0;
    }
    struct loop_call call = {.fn = fn, .arg = arg};
    if (uv_mutex_init(&call.mutex) != 0)
        return -ENOMEM;
    if (uv_cond_init(&call.cond) != 0) {
        uv_mutex_destroy(&call.mutex);
        return -ENOMEM;
    }
    int rc = sync_net_post(net, loop_call_run, &call);
    if (rc == 0) {
        uv_mutex_lock(&call.mutex);
        while (!call.done)
            uv_cond_wait(&call.cond, &call.mutex);
        uv_mutex_unlock(&call.mutex);
    }
    uv_cond_destroy(&call.cond);
    uv_mutex_destroy(&call.mutex);
    return rc;
}

/* ---------- listen, dial ---------- */

struct listen_call {
    struct sync_net *net;
    const char *host;
    uint16_t port;
    const struct sync_net_handler *handler;
    uint16_t bound;
    int rc;
};

static void listen_on_loop(void *arg)
{
    struct listen_call *call = arg;
    struct sync_net *net = call->net;
    if (net->down) {
        call->rc = -ESHUTDOWN;
        return;
    }
    struct sockaddr_storage addr;
    if (uv_ip4_addr(call->host, call->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(call->host, call->port, (struct sockaddr_in6 *)&addr) != 0) {
        call->rc = -EINVAL;
        return;
    }
    struct listener *listener = calloc(1, sizeof(*listener));
    if (!listener) {
        call->rc = -ENOMEM;
        return;
    }
    listener->net = net;
    listener->handler = *call->handler;
    uv_tcp_init(&net->loop, &listener->tcp);
    listener->tcp.data = listener;
    /* libuv reports a busy address from bind or, deferred, from listen. */
    int rc = uv_tcp_bind(&listener->tcp, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&listener->tcp, LISTEN_BACKLOG, on_connection);
    struct sockaddr_storage bound;
    int bound_len = sizeof(bound);
    if (rc == 0)
        rc = uv_tcp_getsockname(&listener->tcp, (struct sockaddr *)&bound, &bound_len);
    if (rc < 0) {
        net_log(net, SYNC_NET_LOG_ERROR, "cannot listen on %s:%u: %s", call->host, call->port,
                uv_strerror(rc));
        uv_close((uv_handle_t *)&listener->tcp, on_listener_closed);
        call->rc = uv_errno(rc);
        return;
    }
    call->bound = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    listener->next = net->listeners;
    net->listeners = listener;
    char text[ADDR_TEXT_LEN];
    addr_text(text, (struct sockaddr *)&bound);
    net_log(net, SYNC_NET_LOG_INFO, "listening on %s", text);
    call->rc = 0;
}

int sync_net_listen(struct sync_net *net, uint16_t *port_out, const char *host, uint16_t port,
                    const struct sync_net_handler *handler)
{
    if (!host || !handler || !handler->peer || !handler->message)
        return -EINVAL;
    struct listen_call call = {.net = net, .host = host, .port = port, .handler = handler};
    int rc = call_on_loop(net, listen_on_loop, &call);
    if (rc == 0)
        rc = call.rc;
    if (rc == 0 && port_out)
        *port_out = call.bound;
    return rc;
}

struct dial_call {
    struct sync_net_dialer *dialer;
    int rc;
};

static void dial_on_loop(void *arg)
{
    struct dial_call *call = arg;
    struct sync_net_dialer *dialer = call->dialer;
    struct sync_net *net = dialer->net;
    if (net->down) {
        free(dialer->host);
        free(dialer);
        call->rc = -ESHUTDOWN;
        return;
    }
    uv_timer_init(&net->loop, &dialer->retry);
    dialer->retry.data = dialer;
    dialer->resolve.data = dialer;
    dialer->backoff_ms = net->config.backoff_min_ms;
    dialer->next = net->dialers;
    if (net->dialers)
        net->dialers->prev = dialer;
    net->dialers = dialer;
    call->rc = 0;
    dialer_attempt(dialer);
}

int sync_net_dial(struct sync_net *net, struct sync_net_dialer **out, const char *host,
                  uint16_t port, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                  const struct sync_net_handler *handler)
{
    *out = NULL;
    if (!host || !host[0] || port == 0 || !share_id || !handler || !handler->peer ||
        !handler->message)
        return -EINVAL;
    struct sync_net_dialer *dialer = calloc(1, sizeof(*dialer));
    char *host_copy = strdup(host);
    if (!dialer || !host_copy) {
        free(dialer);
        free(host_copy);
        return -ENOMEM;
    }
    dialer->net = net;
    dialer->host = host_copy;
    dialer->port = port;
    memcpy(dialer->share_id, share_id, SYNC_SHARE_ID_LEN);
    dialer->handler = *handler;
    struct dial_call call = {.dialer = dialer};
    int rc = call_on_loop(net, dial_on_loop, &call);
    if (rc) {
        free(host_copy);
        free(dialer);
        return rc;
    }
    if (call.rc == 0)
        *out = dialer;
    return call.rc;
}

static void dialer_close_call(void *arg)
{
    dialer_close_on_loop(arg);
}

void sync_net_dialer_close(struct sync_net_dialer *dialer)
{
    if (!dialer)
        return;
    /* -ESHUTDOWN: the net is stopping and closes the dialer itself. */
    (void)call_on_loop(dialer->net, dialer_close_call, dialer);
}

/* ---------- connection calls (loop thread) ---------- */

int sync_net_conn_send(struct sync_net_conn *conn, const void *message, size_t len)
{
    if (conn->state == CONN_CONNECTING || conn->state == CONN_HANDSHAKE)
        return -ENOTCONN;
    if (conn->state != CONN_OPEN)
        return -EPIPE;
    if (len == 0 || !message)
        return -EINVAL; /* an empty message is a keepalive: the transport's own */
    int rc = sync_channel_send(conn->channel, message, len);
    if (rc)
        return rc;
    conn->last_send_ms = uv_now(&conn->net->loop);
    conn_flush(conn);
    /*
     * Still over the mark after the kernel took what it would: a write is in
     * flight (the flush's invariant), and its completion fires `writable`.
     */
    if (conn_queued(conn) >= conn->net->config.high_water)
        conn->blocked = true;
    return 0;
}

bool sync_net_conn_writable(const struct sync_net_conn *conn)
{
    return conn->state == CONN_OPEN && conn_queued(conn) < conn->net->config.high_water;
}

size_t sync_net_conn_queued(const struct sync_net_conn *conn)
{
    return conn_queued(conn);
}

void sync_net_conn_pause(struct sync_net_conn *conn, bool paused)
{
    if (conn->state != CONN_OPEN && conn->state != CONN_HANDSHAKE)
        return;
    conn->paused = paused;
    if (paused) {
        conn_read_stop(conn);
        return;
    }
    conn_read_start(conn);
    if (conn->state == CONN_OPEN)
        conn_deliver(conn);
}

void sync_net_conn_close(struct sync_net_conn *conn, int error, const char *why)
{
    conn_end(conn, error, why ? why : "closed by this side", true);
}

int sync_net_conn_peer(uint8_t public_key[SYNC_PUBLIC_KEY_LEN], uint8_t share_id[SYNC_SHARE_ID_LEN],
                       const struct sync_net_conn *conn)
{
    if (!conn->channel)
        return -ENOTCONN;
    return sync_channel_peer(public_key, share_id, conn->channel);
}

const char *sync_net_conn_addr(const struct sync_net_conn *conn)
{
    return conn->addr;
}

bool sync_net_conn_outgoing(const struct sync_net_conn *conn)
{
    return conn->dialer != NULL;
}

void sync_net_conn_set_data(struct sync_net_conn *conn, void *data)
{
    conn->data = data;
}

void *sync_net_conn_data(const struct sync_net_conn *conn)
{
    return conn->data;
}

struct sync_net *sync_net_conn_net(const struct sync_net_conn *conn)
{
    return conn->net;
}

/* ---------- addresses ---------- */

int sync_net_parse_addr(char *host, size_t host_len, uint16_t *port, const char *text,
                        bool allow_zero)
{
    if (!text || !host || host_len == 0)
        return -EINVAL;
    const char *host_start = text, *host_end, *colon;
    if (text[0] == '[') {
        host_start = text + 1;
        host_end = strchr(host_start, ']');
        if (!host_end || host_end[1] != ':')
            return -EINVAL;
        colon = host_end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || strchr(text, ':') != colon)
            return -EINVAL; /* an IPv6 address needs brackets */
        host_end = colon;
    }
    size_t len = (size_t)(host_end - host_start);
    if (len == 0 || len >= host_len)
        return -EINVAL;
    const char *digits = colon + 1;
    if (!digits[0] || strlen(digits) > 5)
        return -EINVAL;
    unsigned long value = 0;
    for (const char *c = digits; *c; c++) {
        if (*c < '0' || *c > '9')
            return -EINVAL;
        value = value * 10 + (unsigned long)(*c - '0');
    }
    if (value > 65535 || (value == 0 && !allow_zero))
        return -EINVAL;
    memcpy(host, host_start, len);
    host[len] = '\0';
    *port = (uint16_t)value;
    return 0;
}
