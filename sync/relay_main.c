/*
 * sync/relay_main: the `weft relay` command (sync_relay_main, relay.h): the
 * command line, the relay's identity key file, the store, the listener,
 * logging to stderr, and stopping on SIGINT or SIGTERM. Exit codes: 0 ok, 1
 * runtime error, 2 usage error, as every weft command.
 */
#include "sync/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

static const char usage_short[] = "usage: weft relay --listen ADDR:PORT --data DIR [--verbose]\n"
                                  "       weft relay --help\n";

static const char usage_long[] =
    "usage: weft relay --listen ADDR:PORT --data DIR [--verbose]\n"
    "\n"
    "Keeps shares' sealed records and serves them to their devices.\n"
    "\n"
    "DESCRIPTION\n"
    "    A relay carries changes between devices that are never online together and\n"
    "    is the backup from which a new or wiped device restores a share. Devices\n"
    "    connect over TCP with an authenticated, encrypted channel; the relay stores\n"
    "    each share's records and chunks, sends every member what it lacks, and\n"
    "    forwards a new record to the share's connected members as soon as it is\n"
    "    stored. Records are sealed and signed by their authors: the relay holds no\n"
    "    share key, cannot read them, and refuses any whose author's signature does\n"
    "    not verify.\n"
    "\n"
    "    A device may connect for a share if it is one of the share's members. The\n"
    "    first device to connect for a share the relay has never seen registers it\n"
    "    and becomes its first member (trust on first use).\n"
    "\n"
    "    The relay runs in the foreground and logs to standard error; run it under\n"
    "    a service manager (systemd) to keep it running.\n"
    "\n"
    "OPTIONS\n"
    "    --listen ADDR:PORT\n"
    "        Address and TCP port to accept devices on: an IPv4 address\n"
    "        (0.0.0.0:7420 for every interface) or an IPv6 one in brackets\n"
    "        ([::]:7420). Port 0 picks a free port; the log says which.\n"
    "\n"
    "    --data DIR\n"
    "        Directory of the relay's data, created (mode 0700) if missing. One\n"
    "        relay at a time may use it.\n"
    "\n"
    "    -v, --verbose\n"
    "        Also log each connection's progress (debug lines).\n"
    "\n"
    "FILES\n"
    "    DIR/relay.key   the relay's Ed25519 identity (64 bytes, mode 0600), made\n"
    "                    at the first start. Devices check the relay by its public\n"
    "                    key, which the log prints at every start. Keep the file:\n"
    "                    a relay with a new key is a different relay to devices.\n"
    "    DIR/relay.db    the records, chunks and members (SQLite, WAL mode; every\n"
    "                    record is on disk before the relay acknowledges it)\n"
    "    DIR/relay.lock  held while a relay runs on DIR\n"
    "\n"
    "SIGNALS\n"
    "    SIGINT, SIGTERM  stop: finish what is being stored, close connections, exit 0\n"
    "\n"
    "EXIT STATUS\n"
    "    0  stopped by SIGINT or SIGTERM, or --help\n"
    "    1  could not start (the address is in use, DIR is another relay's or is\n"
    "       damaged, the key file is unsafe...) or failed while running\n"
    "    2  the command line is wrong\n"
    "\n"
    "EXAMPLE\n"
    "    weft relay --listen 0.0.0.0:7420 --data /var/lib/weft-relay\n";

/* ---------- logging to stderr ---------- */

struct logger {
    bool verbose;
};

static void log_line(void *ctx, enum sync_net_log_level level, const char *line)
{
    struct logger *logger = ctx;
    if (level == SYNC_NET_LOG_DEBUG && !(logger && logger->verbose))
        return;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char stamp[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm))
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    /* One call per line: stdio locks the stream, so lines from two threads do not mix. */
    fprintf(stderr, "%s weft relay: %s: %s\n", stamp, names[level], line);
}

static void log_msg(struct logger *logger, enum sync_net_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void log_msg(struct logger *logger, enum sync_net_log_level level, const char *fmt, ...)
{
    char line[9200];
    va_list args;
    va_start(args, fmt);
    vsnprintf(line, sizeof(line), fmt, args);
    va_end(args);
    log_line(logger, level, line);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    fputs("weft relay: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    fputs(usage_short, stderr);
    fputs("Run 'weft relay --help' for more.\n", stderr);
    return EXIT_USAGE;
}

/* ---------- the identity key ---------- */

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/*
 * Makes DIR/relay.key: a fresh Ed25519 key pair, its 64-byte secret key
 * (seed || public key, libsodium's layout, as a device's keys/device.key)
 * written to a temporary file with mode 0600, synced, renamed into place,
 * and the directory synced, so a crash leaves either no key or a whole one.
 */
static int make_key(struct sync_identity *out, char *why, size_t why_len, const char *dir)
{
    char path[4096], tmp[4096];
    snprintf(path, sizeof(path), "%s/relay.key", dir);
    snprintf(tmp, sizeof(tmp), "%s/relay.key.tmp", dir);
    uint8_t seed[SYNC_SEED_LEN];
    randombytes_buf(seed, sizeof(seed));
    int rc = sync_identity_from_seed(out, seed);
    sodium_memzero(seed, sizeof(seed));
    if (rc) {
        snprintf(why, why_len, "cannot make a key pair");
        return rc;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        snprintf(why, why_len, "cannot create %s: %s", tmp, strerror(errno));
        return rc;
    }
    ssize_t wrote = -1;
    if (fchmod(fd, 0600) == 0)
        wrote = write(fd, out->secret_key, SYNC_SECRET_KEY_LEN);
    if (wrote != SYNC_SECRET_KEY_LEN || fsync(fd) != 0) {
        rc = wrote < 0 ? -errno : -EIO;
        snprintf(why, why_len, "cannot write %s: %s", tmp, strerror(-rc));
        close(fd);
        unlink(tmp);
        return rc;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        rc = -errno;
        snprintf(why, why_len, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return rc;
    }
    rc = fsync_dir(dir);
    if (rc)
        snprintf(why, why_len, "cannot sync %s: %s", dir, strerror(-rc));
    return rc;
}

/* Reads DIR/relay.key, refusing one others may read or one that does not hold a key pair. */
static int load_key(struct sync_identity *out, bool *made, char *why, size_t why_len,
                    const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/relay.key", dir);
    *made = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        *made = true;
        return make_key(out, why, why_len, dir);
    }
    if (fd < 0) {
        int rc = -errno;
        snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return rc;
    }
    struct stat st;
    int rc = 0;
    uint8_t key[SYNC_SECRET_KEY_LEN + 1];
    ssize_t got = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(why, why_len, "cannot stat %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(why, why_len, "%s is not a regular file", path);
    } else if (st.st_mode & 077) {
        rc = -EPERM;
        snprintf(why, why_len,
                 "%s may be read by other users (mode %03o): the relay will not use it. Run "
                 "'chmod 600 %s' if no one else could have read it; else move it away to make a "
                 "new key (devices will then have to trust the new relay key)",
                 path, (unsigned)(st.st_mode & 0777), path);
    } else if ((got = read(fd, key, sizeof(key))) != SYNC_SECRET_KEY_LEN) {
        rc = -EUCLEAN;
        snprintf(why, why_len, "%s is damaged: it must hold exactly %d bytes", path,
                 SYNC_SECRET_KEY_LEN);
    } else if (sync_identity_from_seed(out, key) != 0 ||
               memcmp(out->public_key, key + SYNC_SEED_LEN, SYNC_PUBLIC_KEY_LEN) != 0) {
        rc = -EUCLEAN;
        snprintf(why, why_len, "%s is damaged: its two halves are not one key pair", path);
        sync_identity_wipe(out);
    }
    sodium_memzero(key, sizeof(key));
    close(fd);
    return rc;
}

/* ---------- the command ---------- */

int sync_relay_main(int argc, char **argv)
{
    static const struct option options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"data", required_argument, NULL, 'd'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *listen_text = NULL, *dir = NULL;
    struct logger logger = {.verbose = false};
    int opt;
    optind = 0; /* GNU getopt: start over, whatever the caller parsed before */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":vh", options, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen_text = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'v':
            logger.verbose = true;
            break;
        case 'h':
            fputs(usage_long, stdout);
            return 0;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!listen_text)
        return usage_error("--listen ADDR:PORT is required");
    if (!dir || !dir[0])
        return usage_error("--data DIR is required");
    char host[256];
    uint16_t port = 0;
    if (sync_net_parse_addr(host, sizeof(host), &port, listen_text, true) != 0)
        return usage_error("--listen '%s' is not ADDR:PORT (e.g. 0.0.0.0:7420 or [::]:7420)",
                           listen_text);

    if (sync_init() != 0) {
        log_msg(&logger, SYNC_NET_LOG_ERROR, "libsodium failed to start");
        return EXIT_RUNTIME;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        log_msg(&logger, SYNC_NET_LOG_ERROR, "cannot create the data directory %s: %s", dir,
                strerror(errno));
        return EXIT_RUNTIME;
    }

    /* The store first: its lock keeps a second relay from racing us to make the key. */
    char why[9000] = ""; /* room for two paths */
    struct sync_relay_store store;
    int rc = sync_relay_store_open_sqlite(&store, why, sizeof(why), dir);
    if (rc) {
        log_msg(&logger, SYNC_NET_LOG_ERROR, "%s", why);
        return EXIT_RUNTIME;
    }
    struct sync_identity identity;
    bool made = false;
    rc = load_key(&identity, &made, why, sizeof(why), dir);
    if (rc) {
        log_msg(&logger, SYNC_NET_LOG_ERROR, "%s", why);
        sync_relay_store_close(&store);
        return EXIT_RUNTIME;
    }
    char key_hex[2 * SYNC_PUBLIC_KEY_LEN + 1];
    sodium_bin2hex(key_hex, sizeof(key_hex), identity.public_key, SYNC_PUBLIC_KEY_LEN);
    if (made)
        log_msg(&logger, SYNC_NET_LOG_INFO, "made a new relay key in %s/relay.key", dir);

    /*
     * SIGINT and SIGTERM wait for sigwait below: blocked before any thread
     * starts, so every thread inherits the mask and none is interrupted.
     */
    sigset_t stop_signals, old_mask;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);

    struct sync_relay_config config = {
        .store = &store,
        .net = {.identity = &identity, .log = log_line, .log_ctx = &logger},
    };
    struct sync_relay *relay = NULL;
    rc = sync_relay_new(&relay, &config);
    sync_identity_wipe(&identity); /* the transport keeps its own copy */
    uint16_t bound = 0;
    if (rc == 0)
        rc = sync_relay_listen(relay, &bound, host, port);
    if (rc) {
        log_msg(&logger, SYNC_NET_LOG_ERROR, "cannot listen on %s: %s", listen_text, strerror(-rc));
        sync_relay_free(relay);
        sync_relay_store_close(&store);
        pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
        return EXIT_RUNTIME;
    }
    log_msg(&logger, SYNC_NET_LOG_INFO, "serving %s on %s%s%s:%u; relay key %s", dir,
            strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", bound, key_hex);

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    log_msg(&logger, SYNC_NET_LOG_INFO, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    struct sync_relay_stats stats;
    sync_relay_stats(&stats, relay);
    sync_relay_free(relay);
    sync_relay_store_close(&store);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    log_msg(&logger, SYNC_NET_LOG_INFO,
            "stopped: %llu sessions, %llu records stored, %llu sent, %llu refused",
            (unsigned long long)stats.sessions, (unsigned long long)stats.records_stored,
            (unsigned long long)stats.records_sent, (unsigned long long)stats.records_refused);
    return 0;
}
