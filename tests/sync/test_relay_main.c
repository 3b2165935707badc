/*
 * Tests for `weft relay` (sync_relay_main) as a process: --help and the exit
 * codes of usage errors; a start that makes its key (0600, never logged) and
 * serves a device; a second relay on the same data refused; SIGTERM stops it
 * with 0; a restart keeps the key; an unsafe key file or a data path that is
 * a file refuse to start. argv[1] is the weft-relay-test program.
 */
#include "meta_util.h"
#include "net_util.h"
#include "sync/net.h"
#include "sync/wire.h"
#include "sync_util.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

static const char *relay_program;

struct child {
    pid_t pid;
    int out_fd, err_fd;
    char out[16384], err[16384];
    size_t out_len, err_len;
    int status; /* exit code, or -1 while running, or 128 + signal */
};

static void child_start(struct child *child, const char *const args[])
{
    int out_pipe[2], err_pipe[2];
    if (pipe(out_pipe) != 0 || pipe(err_pipe) != 0)
        abort();
    memset(child, 0, sizeof(*child));
    child->status = -1;
    child->pid = fork();
    if (child->pid < 0)
        abort();
    if (child->pid == 0) {
        dup2(out_pipe[1], 1);
        dup2(err_pipe[1], 2);
        close(out_pipe[0]);
        close(err_pipe[0]);
        char *argv[16];
        size_t argc = 0;
        argv[argc++] = (char *)relay_program;
        for (size_t i = 0; args[i] && argc < 15; i++)
            argv[argc++] = (char *)args[i];
        argv[argc] = NULL;
        execv(relay_program, argv);
        _exit(127);
    }
    close(out_pipe[1]);
    close(err_pipe[1]);
    child->out_fd = out_pipe[0];
    child->err_fd = err_pipe[0];
}

/* Reads what the child wrote for up to ms milliseconds, or until `until` appears on stderr. */
static void child_read(struct child *child, int ms, const char *until)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    while (now_ms() < deadline) {
        if (until && strstr(child->err, until))
            return;
        struct pollfd fds[2] = {{.fd = child->out_fd, .events = POLLIN},
                                {.fd = child->err_fd, .events = POLLIN}};
        int ready = poll(fds, 2, 20);
        if (ready <= 0)
            continue;
        bool open_any = false;
        for (int i = 0; i < 2; i++) {
            char *buf = i ? child->err : child->out;
            size_t *len = i ? &child->err_len : &child->out_len;
            if (fds[i].revents & (POLLIN | POLLHUP)) {
                ssize_t got = read(fds[i].fd, buf + *len, sizeof(child->out) - 1 - *len);
                if (got > 0) {
                    *len += (size_t)got;
                    buf[*len] = '\0';
                    open_any = true;
                }
            } else {
                open_any = true;
            }
        }
        if (!open_any && !until)
            return; /* both pipes at EOF */
    }
}

/* Waits up to ms for the child to exit; its exit code (or 128 + signal), -1 if still running. */
static int child_wait(struct child *child, int ms)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    for (;;) {
        int status;
        pid_t done = waitpid(child->pid, &status, WNOHANG);
        if (done == child->pid) {
            child->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            child_read(child, 200, NULL);
            close(child->out_fd);
            close(child->err_fd);
            return child->status;
        }
        if (now_ms() >= deadline) {
            kill(child->pid, SIGKILL);
            waitpid(child->pid, &status, 0);
            close(child->out_fd);
            close(child->err_fd);
            return -1;
        }
        child_read(child, 20, NULL);
    }
}

/* Runs the relay with args to its end; its exit code. */
static int run(struct child *child, const char *const args[])
{
    child_start(child, args);
    return child_wait(child, 10000);
}

static void expect_in(const char *text, const char *phrase, const char *what)
{
    test_checks++;
    if (!strstr(text, phrase)) {
        test_failures++;
        fprintf(stderr, "%s: expected \"%s\" in:\n%s\n", what, phrase, text);
    }
}

/* ---------- a device to talk to the running relay ---------- */

static uint8_t relay_public[SYNC_PUBLIC_KEY_LEN];
static int replies, heads, closes;

static int peer_is_relay(void *ctx, const uint8_t share_id[SYNC_SHARE_ID_LEN],
                         const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], char *why, size_t why_len)
{
    (void)ctx, (void)share_id;
    if (memcmp(public_key, relay_public, SYNC_PUBLIC_KEY_LEN) != 0) {
        snprintf(why, why_len, "not the relay whose key is in relay.key");
        return -1;
    }
    return 0;
}

static void on_open(void *ctx, struct sync_net_conn *conn)
{
    const uint8_t *share_id = ctx;
    struct sync_msg msg = {.type = SYNC_MSG_HELLO};
    memcpy(msg.hello.share_id, share_id, SYNC_SHARE_ID_LEN);
    msg.hello.version = SYNC_WIRE_VERSION;
    struct crdt_buf buf = {0};
    if (sync_wire_encode(&buf, &msg) == 0)
        (void)!sync_net_conn_send(conn, buf.data, buf.len);
    crdt_buf_free(&buf);
}

static int on_message(void *ctx, struct sync_net_conn *conn, const uint8_t *bytes, size_t len)
{
    (void)ctx, (void)conn;
    pthread_mutex_lock(&g_lock);
    if (len && bytes[0] == SYNC_MSG_HELLO)
        replies++;
    if (len && bytes[0] == SYNC_MSG_HEADS)
        heads++;
    pthread_mutex_unlock(&g_lock);
    return 0;
}

static void on_closed(void *ctx, struct sync_net_conn *conn, int error, const char *why)
{
    (void)ctx, (void)conn, (void)error, (void)why;
    pthread_mutex_lock(&g_lock);
    closes++;
    pthread_mutex_unlock(&g_lock);
}

/* Starts the relay on DIR and waits for its "serving" line; the port it bound. */
static uint16_t start_relay(struct child *child, const char *dir)
{
    const char *args[] = {"--listen", "127.0.0.1:0", "--data", dir, NULL};
    child_start(child, args);
    child_read(child, 10000, "; relay key ");
    const char *on = strstr(child->err, " on 127.0.0.1:");
    unsigned port = 0;
    if (!on || sscanf(on, " on 127.0.0.1:%u;", &port) != 1 || port == 0 || port > 65535) {
        fprintf(stderr, "the relay did not say where it serves:\n%s\n", child->err);
        kill(child->pid, SIGKILL);
        child_wait(child, 5000);
        exit(1);
    }
    return (uint16_t)port;
}

int main(int argc, char **argv)
{
    alarm(300);
    if (argc < 2)
        return 2;
    relay_program = argv[1];
    if (sync_init() != 0)
        return 2;
    struct child child;

    /* Help and usage errors. */
    const char *help[] = {"--help", NULL};
    CHECK_INT(0, run(&child, help));
    expect_in(child.out, "usage: weft relay --listen", "--help");
    expect_in(child.out, "EXIT STATUS", "--help");
    expect_in(child.out, "--listen ADDR:PORT", "--help");
    const char *none[] = {NULL};
    CHECK_INT(2, run(&child, none));
    expect_in(child.err, "--listen ADDR:PORT is required", "no arguments");
    const char *no_data[] = {"--listen", "127.0.0.1:7420", NULL};
    CHECK_INT(2, run(&child, no_data));
    expect_in(child.err, "--data DIR is required", "no --data");
    const char *bad_addr[] = {"--listen", "localhost", "--data", "/tmp/x", NULL};
    CHECK_INT(2, run(&child, bad_addr));
    expect_in(child.err, "is not ADDR:PORT", "bad --listen");
    const char *unknown[] = {"--listen", "127.0.0.1:1", "--data", "/tmp/x", "--frobnicate", NULL};
    CHECK_INT(2, run(&child, unknown));
    expect_in(child.err, "unknown option --frobnicate", "unknown option");
    const char *missing[] = {"--data", "/tmp/x", "--listen", NULL};
    CHECK_INT(2, run(&child, missing));
    expect_in(child.err, "--listen needs a value", "missing value");
    const char *extra[] = {"--listen", "127.0.0.1:1", "--data", "/tmp/x", "more", NULL};
    CHECK_INT(2, run(&child, extra));
    expect_in(child.err, "unexpected argument 'more'", "extra argument");

    char *dir = tu_tempdir("relay-main");
    char data[4200], file[4200], key_path[4300];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(file, sizeof(file), "%s/a-file", dir);
    snprintf(key_path, sizeof(key_path), "%s/relay.key", data);

    /* The data path is a file: a runtime error. */
    CHECK_INT(0, tu_write_file(file, "x", 1));
    const char *on_file[] = {"--listen", "127.0.0.1:0", "--data", file, NULL};
    CHECK_INT(1, run(&child, on_file));
    expect_in(child.err, "not a directory", "data is a file");

    /* First start: the key is made, 0600, its public half logged and its secret never. */
    uint16_t port = start_relay(&child, data);
    struct child first = child;
    expect_in(first.err, "made a new relay key", "first start");
    struct stat st;
    CHECK_INT(0, stat(key_path, &st));
    CHECK_INT(0600, st.st_mode & 0777);
    CHECK_INT(SYNC_SECRET_KEY_LEN, st.st_size);
    size_t key_len = 0;
    uint8_t *key = tu_read_file(key_path, &key_len);
    CHECK(key && key_len == SYNC_SECRET_KEY_LEN);
    char public_hex[2 * SYNC_PUBLIC_KEY_LEN + 1], seed_hex[2 * SYNC_SEED_LEN + 1];
    if (key && key_len == SYNC_SECRET_KEY_LEN) {
        memcpy(relay_public, key + SYNC_SEED_LEN, SYNC_PUBLIC_KEY_LEN);
        sodium_bin2hex(public_hex, sizeof(public_hex), relay_public, SYNC_PUBLIC_KEY_LEN);
        sodium_bin2hex(seed_hex, sizeof(seed_hex), key, SYNC_SEED_LEN);
        expect_in(first.err, public_hex, "the relay key in the log");
        CHECK(strstr(first.err, seed_hex) == NULL);
        char seed_prefix[17];
        memcpy(seed_prefix, seed_hex, 16);
        seed_prefix[16] = '\0';
        CHECK(strstr(first.err, seed_prefix) == NULL);
    }
    free(key);

    /* A device connects (checking the relay's key) and gets HELLO and HEADS. */
    struct sync_identity device;
    util_identity(&device, 40);
    uint8_t share_id[SYNC_SHARE_ID_LEN];
    memset(share_id, 0x4d, sizeof(share_id));
    struct sync_net_config config = {.identity = &device, .handshake_timeout_ms = 3000};
    struct sync_net *net = NULL;
    CHECK_INT(0, sync_net_new(&net, &config));
    CHECK_INT(0, sync_net_start(net));
    struct sync_net_handler handler = {
        .peer = peer_is_relay,
        .open = on_open,
        .message = on_message,
        .closed = on_closed,
        .ctx = share_id,
    };
    struct sync_net_dialer *dialer = NULL;
    CHECK_INT(0, sync_net_dial(net, &dialer, "127.0.0.1", port, share_id, &handler));
    bool ok;
    WAIT_UNTIL(ok, replies == 1 && heads == 1, 10000);
    CHECK(ok);
    sync_net_free(net);

    /* A second relay on the same data is refused. */
    const char *second[] = {"--listen", "127.0.0.1:0", "--data", data, NULL};
    CHECK_INT(1, run(&child, second));
    char in_use[64];
    snprintf(in_use, sizeof(in_use), "in use by process %ld", (long)first.pid);
    expect_in(child.err, in_use, "second relay");

    /* SIGTERM: a clean stop, exit 0. */
    kill(first.pid, SIGTERM);
    CHECK_INT(0, child_wait(&first, 10000));
    expect_in(first.err, "SIGTERM: stopping", "stop");
    expect_in(first.err, "stopped: 1 sessions", "stop");
    expect_in(first.err, "registered on first use", "first device");

    /* A restart keeps the key. */
    start_relay(&child, data);
    CHECK(strstr(child.err, "made a new relay key") == NULL);
    expect_in(child.err, public_hex, "restart");
    kill(child.pid, SIGINT);
    CHECK_INT(0, child_wait(&child, 10000));
    expect_in(child.err, "SIGINT: stopping", "SIGINT");

    /* A key file others may read: refused, with the fix in the message. */
    CHECK_INT(0, chmod(key_path, 0644));
    CHECK_INT(1, run(&child, second));
    expect_in(child.err, "chmod 600", "unsafe key");

    tu_rmtree(dir);
    return test_finish("test-sync-relay-main");
}
