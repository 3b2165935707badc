/*
 * sync/net: the TCP transport. One libuv event loop on a thread of its own
 * owns every listener, connection and timer; each connection runs a
 * sync/channel (initiator when we dialed, responder when we accepted) and
 * hands each decrypted message to its handler, on the loop thread.
 *
 * Threads. Everything happens on the loop thread: the handler's callbacks
 * and every sync_net_conn_* call, which only that thread may make (from a
 * callback or from posted work). Other threads reach the loop through
 * sync_net_post (uv_async_send: e.g. "new local ops, push them"); listen,
 * dial and dialer_close may be called from any thread and wait for the loop.
 *
 * Flow control. Each connection queues what it sends (the channel's output
 * plus the write in flight). sync_net_conn_send always accepts a message, so
 * a producer asks sync_net_conn_writable first and stops when it is false
 * (the queue reached high_water); the handler's `writable` callback says
 * when the queue has drained to low_water, and the producer goes on from
 * where it stopped. So a producer streaming 10 GB holds at most high_water
 * plus one message per connection. On the receiving side the loop reads 64
 * KiB at a time and delivers every whole message before reading more; a
 * handler that cannot keep up pauses reading (sync_net_conn_pause), which
 * pushes back on the peer through TCP.
 *
 * Time. A connection that has not finished its handshake within
 * handshake_timeout, from which nothing arrived for idle_timeout, or that
 * took none of our queued bytes for idle_timeout (it stopped reading) is
 * closed with -ETIMEDOUT. A connection with nothing to say sends a
 * keepalive (an empty channel message, never delivered) every idle_timeout
 * / 3, so a quiet but live peer is never taken for a silent one. A dialer
 * reconnects after its connection ends or fails, after a delay drawn from
 * [b/2, b] where b doubles from backoff_min up to backoff_max (jitter, so
 * devices do not come back in lockstep after a relay restart); b starts
 * again from backoff_min once a handshake succeeds.
 *
 * Closing. sync_net_conn_close sends the channel's final frame, flushes,
 * shuts the socket down and waits (at most handshake_timeout) for the peer
 * to close its side, so the peer sees a clean end. The handler's `closed`
 * runs once per connection, with 0 or the error and a sentence; after it the
 * connection is gone for the handler. sync_net_free closes everything
 * (handlers see -ESHUTDOWN), runs work still posted, and joins the thread.
 *
 * Nothing here prints: refusals, failures and timeouts go to the log
 * callback, with the peer's address and, once known, its key.
 */
#ifndef WEFT_SYNC_NET_H
#define WEFT_SYNC_NET_H

#include "sync/channel.h"
#include "sync/sync.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sync_net;
struct sync_net_conn;
struct sync_net_dialer;

enum sync_net_log_level {
    SYNC_NET_LOG_ERROR,
    SYNC_NET_LOG_WARN, /* refusals, timeouts, failed connections */
    SYNC_NET_LOG_INFO, /* connections opened and closed */
    SYNC_NET_LOG_DEBUG,
};

/* Receives one log line (no newline; valid during the call). Called on the loop thread. */
typedef void (*sync_net_log_fn)(void *ctx, enum sync_net_log_level level, const char *line);

/* Defaults for the zero fields of struct sync_net_config. */
#define SYNC_NET_HANDSHAKE_TIMEOUT_MS 10000u
#define SYNC_NET_IDLE_TIMEOUT_MS      90000u
#define SYNC_NET_HIGH_WATER           (4u << 20)
#define SYNC_NET_LOW_WATER            (1u << 20)
#define SYNC_NET_BACKOFF_MIN_MS       500u
#define SYNC_NET_BACKOFF_MAX_MS       60000u

struct sync_net_config {
    const struct sync_identity *identity; /* this device (or relay); copied, wiped at free */
    uint32_t handshake_timeout_ms;        /* 0: SYNC_NET_HANDSHAKE_TIMEOUT_MS */
    uint32_t idle_timeout_ms;             /* 0: SYNC_NET_IDLE_TIMEOUT_MS (>= 30) */
    size_t high_water;                    /* 0: SYNC_NET_HIGH_WATER; bytes queued per connection */
    size_t low_water;                     /* 0: SYNC_NET_LOW_WATER; < high_water */
    uint32_t backoff_min_ms;              /* 0: SYNC_NET_BACKOFF_MIN_MS */
    uint32_t backoff_max_ms;              /* 0: SYNC_NET_BACKOFF_MAX_MS; >= backoff_min_ms */
    sync_net_log_fn log;                  /* may be NULL: no log */
    void *log_ctx;
};

/*
 * What a listener or dialer does with its connections; copied. Every
 * callback runs on the loop thread and may call the sync_net_conn_* functions.
 */
struct sync_net_handler {
    /* Who may connect (sync/channel's callback): asked during the handshake. Required. */
    sync_peer_fn peer;
    /* The handshake succeeded: the peer is authenticated (sync_net_conn_peer). May be NULL. */
    void (*open)(void *ctx, struct sync_net_conn *conn);
    /*
     * One message (bytes valid during the call). 0 to go on; a negative
     * errno closes the connection with it. Required.
     */
    int (*message)(void *ctx, struct sync_net_conn *conn, const uint8_t *message, size_t len);
    /* The send queue drained to low_water after having reached high_water. May be NULL. */
    void (*writable)(void *ctx, struct sync_net_conn *conn);
    /*
     * The connection ended (0: cleanly) or failed (-errno, and `why` in
     * words), or an outgoing attempt failed. Once per connection; the
     * connection must not be used after. May be NULL.
     */
    void (*closed)(void *ctx, struct sync_net_conn *conn, int error, const char *why);
    void *ctx;
};

/* Makes a transport (not started). *out is the caller's (sync_net_free). -EINVAL, -ENOMEM. */
SYNC_MUST_CHECK int sync_net_new(struct sync_net **out, const struct sync_net_config *config);
/* Starts the loop thread. -EALREADY if started, -EIO if the thread cannot be made. */
SYNC_MUST_CHECK int sync_net_start(struct sync_net *net);
/*
 * Stops: closes every listener, dialer and connection (handlers see
 * -ESHUTDOWN), runs work still posted, joins the thread, frees. Not from
 * the loop thread. NULL is fine.
 */
void sync_net_free(struct sync_net *net);
/*
 * Runs fn(ctx) on the loop thread, soon; posts from one thread run in
 * order. Any thread. If it returns 0, fn runs exactly once (at the latest
 * while sync_net_free stops the loop). -ESHUTDOWN once stopping, -ENOMEM.
 */
SYNC_MUST_CHECK int sync_net_post(struct sync_net *net, void (*fn)(void *ctx), void *ctx);
/*
 * Runs fn(ctx) on the loop thread every `every_ms` until the transport
 * stops: the place for "ask again what never came". Once per transport,
 * before sync_net_start. -EINVAL otherwise.
 */
SYNC_MUST_CHECK int sync_net_tick(struct sync_net *net, uint32_t every_ms, void (*fn)(void *ctx),
                                  void *ctx);
/*
 * Runs fn(ctx) once on the loop thread in `ms` (a call before that replaces
 * it: one deferral per transport). On the loop thread only: -EINVAL
 * elsewhere, -ESHUTDOWN once stopping (fn will not run).
 */
SYNC_MUST_CHECK int sync_net_later(struct sync_net *net, uint32_t ms, void (*fn)(void *ctx),
                                   void *ctx);
/* True on the loop thread. */
bool sync_net_on_loop(const struct sync_net *net);

/*
 * Listens on a numeric address (IPv4 or IPv6; port 0 picks a free one) and
 * gives each accepted connection to `handler` as responder. *port_out (may
 * be NULL) is the port bound. Listeners live until sync_net_free. Any
 * thread; blocks until bound. -EINVAL (not a numeric address), -EADDRINUSE...
 */
SYNC_MUST_CHECK int sync_net_listen(struct sync_net *net, uint16_t *port_out, const char *host,
                                    uint16_t port, const struct sync_net_handler *handler);
/*
 * Keeps a connection to host:port (a name or a numeric address) for share
 * `share_id` as initiator: connects, and reconnects with backoff whenever
 * the connection ends, until sync_net_dialer_close. *out is the net's (valid
 * until dialer_close or net free). Any thread. -EINVAL, -ENOMEM, -ESHUTDOWN.
 */
SYNC_MUST_CHECK int sync_net_dial(struct sync_net *net, struct sync_net_dialer **out,
                                  const char *host, uint16_t port,
                                  const uint8_t share_id[SYNC_SHARE_ID_LEN],
                                  const struct sync_net_handler *handler);
/* Stops reconnecting and closes the dialer's connection gracefully. Any thread. */
void sync_net_dialer_close(struct sync_net_dialer *dialer);

/*
 * Queues message[0..len) (1..SYNC_CHANNEL_MESSAGE_MAX bytes) for the peer.
 * Always takes it (check sync_net_conn_writable first to bound the queue).
 * -ENOTCONN before the handshake, -EPIPE once closing, -EMSGSIZE, -ENOMEM.
 */
SYNC_MUST_CHECK int sync_net_conn_send(struct sync_net_conn *conn, const void *message, size_t len);
/* True while the send queue is below high_water (and the connection is open). */
bool sync_net_conn_writable(const struct sync_net_conn *conn);
/* Bytes queued for the peer (encrypted, not yet taken by the kernel). */
size_t sync_net_conn_queued(const struct sync_net_conn *conn);
/* Stops (true) or resumes (false) reading from the peer; messages already decrypted wait. */
void sync_net_conn_pause(struct sync_net_conn *conn, bool paused);
/*
 * Closes gracefully (see top): `error` 0 for a clean end, else why we end
 * it (reported to `closed` and the log with `why`, may be NULL). Idempotent.
 */
void sync_net_conn_close(struct sync_net_conn *conn, int error, const char *why);
/* The authenticated peer's key and the session's share id (either may be NULL); -ENOTCONN. */
SYNC_MUST_CHECK int sync_net_conn_peer(uint8_t public_key[SYNC_PUBLIC_KEY_LEN],
                                       uint8_t share_id[SYNC_SHARE_ID_LEN],
                                       const struct sync_net_conn *conn);
/* The peer's address, "192.0.2.1:4000" or "[2001:db8::1]:4000" (owned by the connection). */
const char *sync_net_conn_addr(const struct sync_net_conn *conn);
/* True for a connection we dialed. */
bool sync_net_conn_outgoing(const struct sync_net_conn *conn);
/* Attaches the handler's own pointer to a connection (NULL at first). */
void sync_net_conn_set_data(struct sync_net_conn *conn, void *data);
/* The pointer set with sync_net_conn_set_data. */
void *sync_net_conn_data(const struct sync_net_conn *conn);
/* The net a connection belongs to. */
struct sync_net *sync_net_conn_net(const struct sync_net_conn *conn);

/*
 * Splits "ADDR:PORT" ("127.0.0.1:7000", "[::1]:7000", "relay.example:7000")
 * into host (NUL-terminated, host_len bytes at most) and port (1..65535, or
 * 0 when allow_zero). -EINVAL if malformed.
 */
SYNC_MUST_CHECK int sync_net_parse_addr(char *host, size_t host_len, uint16_t *port,
                                        const char *text, bool allow_zero);

#endif
