/*
 * fs/weft: the `weft` command. Subcommands: init, mount, umount, status,
 * log, restore. Exit codes: 0 ok, 1 runtime error, 2 usage error. Every
 * error says what failed and what to do about it.
 *
 * `log` and `restore` act on a path inside a mounted share: they reach the
 * mount's daemon through virtual extended attributes (user.weft.*), so the
 * kernel resolves the path and checks permissions as for any other access.
 */
#include "fs/fs.h"
#include "meta/replica.h"
#include "meta/store.h"
#include "sync/agent.h"
#include "sync/invite.h"
#include "sync/net.h"
#include "sync/relay.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2

static const char usage_main[] =
    "usage: weft COMMAND [ARGS]\n"
    "\n"
    "weft is a local-first synchronized file system: a folder that every program can\n"
    "use, kept on each device, whose changes merge when devices meet.\n"
    "\n"
    "Commands:\n"
    "  init NAME                 create a share and this device's identity\n"
    "  mount NAME DIR            mount a share on DIR (runs in the background)\n"
    "  umount DIR                unmount it, committing what is pending\n"
    "  status [NAME] [--json]    shares on this device and where they are mounted\n"
    "  log PATH [--json]         the versions of a file in a mounted share\n"
    "  restore PATH --version V  make an earlier version the file's content again\n"
    "  invite NAME               print a token that lets a new device join NAME\n"
    "  join TOKEN DIR            restore a share from its relay, then mount it\n"
    "  peer add|listen NAME ADDR sync directly with a device / accept devices on ADDR\n"
    "  device list|remove NAME   the share's devices; remove one for good\n"
    "  relay --listen A --data D run a relay: the mailbox and backup of shares\n"
    "\n"
    "Run 'weft COMMAND --help' for a command's options.\n"
    "\n"
    "Shares live in $XDG_DATA_HOME/weft/NAME (default ~/.local/share/weft/NAME).\n"
    "Exit status: 0 success, 1 the command failed, 2 the command line was wrong.\n";

static const char usage_init[] =
    "usage: weft init NAME [--device-name DEVICE] [--relay HOST:PORT] [--listen ADDR:PORT]\n"
    "\n"
    "Creates the share NAME in $XDG_DATA_HOME/weft/NAME: an empty replica, a random\n"
    "share key and this device's Ed25519 identity. NAME may hold letters, digits,\n"
    "'.', '_' and '-'.\n"
    "\n"
    "  --device-name DEVICE  how this device is named in history and in conflict\n"
    "                        copies (default: the host name)\n"
    "  --relay HOST:PORT     sync through the weft relay at HOST:PORT while mounted\n"
    "                        (the relay keeps only sealed records: it is the share's\n"
    "                        mailbox between devices and its backup)\n"
    "  --listen ADDR:PORT    while mounted, accept the share's devices on ADDR:PORT\n"
    "                        for direct sync (they run weft peer add NAME HOST:PORT)\n";

static const char usage_mount[] =
    "usage: weft mount NAME DIR [--foreground] [--debug] [-o OPTIONS]\n"
    "\n"
    "Mounts share NAME on the existing directory DIR and returns once the mount\n"
    "is live; a daemon keeps serving it in the background (logging to syslog /\n"
    "the journal). A mount left stale by a daemon that died is cleaned up first.\n"
    "\n"
    "  -f, --foreground   stay in the foreground and log to stderr\n"
    "  -d, --debug        also print every FUSE request (implies --foreground)\n"
    "  -o OPTIONS         comma-separated: ro (read-only), allow_other (let other\n"
    "                     users in; needs root or user_allow_other in\n"
    "                     /etc/fuse.conf), nopassthrough (serve file data through\n"
    "                     the daemon even where the kernel could read and write\n"
    "                     the working copies directly)\n"
    "\n"
    "File data: where the kernel has FUSE passthrough (Linux 6.9 or later) and\n"
    "the daemon runs as root, an open file's reads, writes and mmaps go straight\n"
    "to its working copy on the local disk; otherwise through the daemon and the\n"
    "page cache. The daemon logs which at the first open.\n";

static const char usage_umount[] =
    "usage: weft umount DIR\n"
    "\n"
    "Unmounts the weft share mounted on DIR. Pending changes are committed and the\n"
    "daemon exits. If a process still uses a file or its working directory inside\n"
    "DIR, the unmount is refused: 'fuser -vm DIR' shows which.\n";

static const char usage_status[] =
    "usage: weft status [NAME] [--json]\n"
    "\n"
    "Lists the shares on this device (or just NAME): where each is mounted and by\n"
    "which process; for a mounted share, what serves file data (FUSE passthrough\n"
    "or the daemon, and why), conflict copies waiting for you, and how syncing\n"
    "goes. --json prints one JSON object for scripts.\n";

static const char usage_log[] =
    "usage: weft log PATH [--json]\n"
    "\n"
    "Prints the versions of the file PATH, which must be inside a mounted share,\n"
    "newest first: version, time, device, size, and whether it is merged as text.\n"
    "The node line is the file's identity, kept through renames and editors' saves.\n";

static const char usage_restore[] =
    "usage: weft restore PATH --version VERSION\n"
    "\n"
    "Makes version VERSION (as 'weft log PATH' prints it) the content of PATH\n"
    "again. This is a new change: it syncs like an edit, and the history keeps\n"
    "every version.\n";

/* The setting that names the share's relay (sync/agent pins its key on first contact). */
#define RELAY_SETTING "sync.relay"
/* Where a mounted share accepts its devices for direct sync, and whom it dials. */
#define LISTEN_SETTING "sync.listen"
#define PEERS_SETTING  "sync.peers"

static const char usage_invite[] =
    "usage: weft invite NAME [--device-name DEVICE]\n"
    "\n"
    "Prints a join token for a new device of share NAME: on that device,\n"
    "'weft join TOKEN DIR' restores the whole share, history included, from the\n"
    "share's relay and mounts it. The new device is a member from now on: the\n"
    "relay and the other devices learn it from this device. The share needs a\n"
    "relay it has met (weft init NAME --relay HOST:PORT, then mount it once).\n"
    "The token holds the share's key: whoever has it can read and write the\n"
    "share, so pass it only over a channel you trust. The token goes to standard\n"
    "output, the explanation to standard error.\n"
    "\n"
    "  --device-name DEVICE  the new device's name in history and conflict copies\n"
    "                        (default: new-device)\n";

static const char usage_peer[] =
    "usage: weft peer add|listen NAME ADDR:PORT\n"
    "\n"
    "'weft peer add NAME HOST:PORT' syncs share NAME directly with the device of\n"
    "the same share listening on HOST:PORT, besides the relay if there is one:\n"
    "changes flow over the LAN when both are up. Kept for later mounts; a mounted\n"
    "share starts at once. 'weft peer listen NAME ADDR:PORT' makes the share\n"
    "accept its devices on ADDR:PORT (numeric; 0.0.0.0 for every interface) from\n"
    "its next mount; the relay then tells the share's other devices where it\n"
    "listens, so they connect by themselves. Only members of the share are\n"
    "accepted, each side checking the other's key.\n";

static const char usage_device[] =
    "usage: weft device list|remove NAME [DEVICE]\n"
    "\n"
    "'weft device list NAME' prints the devices of share NAME: name, replica id,\n"
    "and whether it is this device or was removed. 'weft device remove NAME\n"
    "DEVICE' removes the device named DEVICE for good: the share gets a new key,\n"
    "sealed to every other device, so the removed one reads nothing written\n"
    "after; the relay and the other devices refuse it from now on. What it wrote\n"
    "before stays in the share's history.\n";

static const char usage_join[] =
    "usage: weft join TOKEN DIR [--name NAME] [--quiet]\n"
    "\n"
    "Joins the share a 'weft invite' TOKEN names: creates it on this device,\n"
    "restores everything from the share's relay with a progress bar (history\n"
    "included), then mounts it on the existing directory DIR.\n"
    "\n"
    "  --name NAME  the local name of the share (default: the inviter's name for it)\n"
    "  --quiet      no progress, only errors\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    fputs("weft: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    return 1;
}

static int usage_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_error(const char *usage, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    fputs("weft: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    fputs(usage, stderr);
    return EXIT_USAGE;
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    return false;
}

/* ---------- where shares live ---------- */

static bool share_name_valid(const char *name)
{
    if (!*name || name[0] == '.' || strlen(name) > 64)
        return false;
    for (const char *at = name; *at; at++)
        if (!((*at >= 'a' && *at <= 'z') || (*at >= 'A' && *at <= 'Z') ||
              (*at >= '0' && *at <= '9') || *at == '.' || *at == '_' || *at == '-'))
            return false;
    return true;
}

static int data_root(char *out, size_t cap)
{
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && *xdg == '/')
        n = snprintf(out, cap, "%s/weft", xdg);
    else if (home && *home)
        n = snprintf(out, cap, "%s/.local/share/weft", home);
    else
        return fail("neither XDG_DATA_HOME nor HOME is set: set one to say where shares live");
    return n < 0 || (size_t)n >= cap ? fail("the data directory path is too long") : 0;
}

static int share_dir(char *out, size_t cap, const char *name)
{
    char root[PATH_MAX];
    if (data_root(root, sizeof(root)))
        return 1;
    int n = snprintf(out, cap, "%s/%s", root, name);
    return n < 0 || (size_t)n >= cap ? fail("the share path is too long") : 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *at = buf + 1; *at; at++) {
        if (*at != '/')
            continue;
        *at = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return -errno;
        *at = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* ---------- init ---------- */

static int cmd_init(int argc, char **argv)
{
    static const struct option options[] = {
        {"device-name", required_argument, NULL, 'n'},
        {"relay", required_argument, NULL, 'r'},
        {"listen", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *device = NULL, *relay = NULL, *listen = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "n:r:l:h", options, NULL)) != -1) {
        if (opt == 'n')
            device = optarg;
        else if (opt == 'r')
            relay = optarg;
        else if (opt == 'l')
            listen = optarg;
        else if (opt == 'h')
            return fputs(usage_init, stdout), 0;
        else
            return usage_error(usage_init, "init: unknown option");
    }
    if (argc - optind != 1)
        return usage_error(usage_init, "init: expected one share NAME");
    const char *name = argv[optind];
    if (!share_name_valid(name))
        return usage_error(usage_init,
                           "init: '%s' is not a valid share name (letters, digits, '.', '_', "
                           "'-'; not starting with '.'; at most 64)",
                           name);
    char relay_host[256];
    uint16_t relay_port;
    if (relay && sync_net_parse_addr(relay_host, sizeof(relay_host), &relay_port, relay, false))
        return usage_error(usage_init, "init: '%s' is not a relay address HOST:PORT", relay);
    if (listen && sync_net_parse_addr(relay_host, sizeof(relay_host), &relay_port, listen, false))
        return usage_error(usage_init, "init: '%s' is not a numeric ADDR:PORT to listen on",
                           listen);
    char host[256] = "device";
    if (!device) {
        if (gethostname(host, sizeof(host)) != 0 || !host[0])
            snprintf(host, sizeof(host), "device");
        host[sizeof(host) - 1] = '\0';
        device = host;
    }
    char root[PATH_MAX], dir[PATH_MAX];
    if (data_root(root, sizeof(root)) || share_dir(dir, sizeof(dir), name))
        return 1;
    int rc = mkdir_p(root, 0700);
    if (rc)
        return fail("cannot create %s: %s", root, strerror(-rc));
    struct meta_replica *replica;
    struct meta_err err = {{0}};
    struct meta_share_params params = {.device_name = device};
    rc = meta_replica_create(&replica, &err, dir, &params);
    if (rc)
        return fail("cannot create share '%s': %s", name, err.msg[0] ? err.msg : strerror(-rc));
    if (relay && (rc = meta_setting_set(meta_replica_store(replica), RELAY_SETTING, relay)) != 0) {
        meta_replica_close(replica);
        return fail("cannot record the relay of share '%s': %s", name, strerror(-rc));
    }
    if (listen &&
        (rc = meta_setting_set(meta_replica_store(replica), LISTEN_SETTING, listen)) != 0) {
        meta_replica_close(replica);
        return fail("cannot record where share '%s' listens: %s", name, strerror(-rc));
    }
    meta_replica_close(replica);
    printf("created share '%s' in %s (this device: %s)\n", name, dir, device);
    if (relay)
        printf("it syncs through the relay at %s while mounted\n", relay);
    printf("mount it with: weft mount %s DIR\n", name);
    return 0;
}

/* ---------- mounts ---------- */

/*
 * Looks through /proc/self/mountinfo for a weft mount whose mount point is
 * `dir` or whose source is `source` (either may be NULL); fills what it found
 * (out_dir, out_source may be NULL). 1 found, 0 none, <0 error.
 */
static int find_weft_mount(const char *dir, const char *source, char *out_dir, size_t dir_cap,
                           char *out_source, size_t source_cap)
{
    FILE *info = fopen("/proc/self/mountinfo", "r");
    if (!info)
        return -errno;
    char line[8192];
    int found = 0;
    while (!found && fgets(line, sizeof(line), info)) {
        /* id parent major:minor root mountpoint options [optional...] - fstype source superopts */
        char mountpoint[PATH_MAX], fstype[64], src[512];
        char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mountpoint) != 1 ||
            sscanf(dash + 3, "%63s %511s", fstype, src) != 2 || strcmp(fstype, "fuse.weft") != 0)
            continue;
        if ((dir && strcmp(mountpoint, dir) == 0) || (source && strcmp(src, source) == 0)) {
            if (out_dir)
                snprintf(out_dir, dir_cap, "%s", mountpoint);
            if (out_source)
                snprintf(out_source, source_cap, "%s", src);
            found = 1;
        }
    }
    fclose(info);
    return found;
}

static int read_pid(const char *path)
{
    FILE *file = fopen(path, "r");
    if (!file)
        return 0;
    int pid = 0;
    if (fscanf(file, "%d", &pid) != 1)
        pid = 0;
    fclose(file);
    if (pid <= 0 || kill(pid, 0) != 0)
        return 0;
    /* A daemon killed but not yet reaped is a zombie: it serves nothing. */
    char stat_path[64], state = 'Z';
    snprintf(stat_path, sizeof(stat_path), "/proc/%d/stat", pid);
    FILE *stat_file = fopen(stat_path, "r");
    if (stat_file) {
        if (fscanf(stat_file, "%*d %*s %c", &state) != 1)
            state = 'Z';
        fclose(stat_file);
    }
    return state == 'Z' || state == 'X' ? 0 : pid;
}

/*
 * A mount whose daemon died answers ENOTCONN; detach it so the directory is
 * usable again. statvfs, unlike stat, always reaches the daemon: the kernel
 * may still hold the root's attributes in its cache.
 */
static int recover_stale(const char *dir)
{
    struct statvfs st;
    if (statvfs(dir, &st) == 0)
        return 0;
    /* ECONNABORTED: the kernel aborted the connection (the daemon died mid-request). */
    if (errno != ENOTCONN && errno != ECONNABORTED)
        return -errno;
    if (umount2(dir, MNT_DETACH) != 0) {
        pid_t pid = fork();
        if (pid == 0) {
            execlp("fusermount3", "fusermount3", "-uz", dir, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            return -ENOTCONN;
    }
    fprintf(stderr,
            "weft: %s was still mounted by a weft daemon that is gone (killed or crashed); "
            "cleaned up the stale mount\n",
            dir);
    return 0;
}

static int cmd_mount(int argc, char **argv)
{
    static const struct option options[] = {
        {"foreground", no_argument, NULL, 'f'},
        {"debug", no_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct fs_options fs_options;
    fs_options_init(&fs_options);
    bool foreground = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "fdo:h", options, NULL)) != -1) {
        switch (opt) {
        case 'f':
            foreground = true;
            break;
        case 'd':
            foreground = fs_options.debug = true;
            break;
        case 'o': {
            char *list = strdup(optarg), *save = NULL;
            for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                if (!strcmp(item, "ro"))
                    fs_options.read_only = true;
                else if (!strcmp(item, "rw"))
                    fs_options.read_only = false;
                else if (!strcmp(item, "allow_other"))
                    fs_options.allow_other = true;
                else if (!strcmp(item, "nopassthrough"))
                    fs_options.no_passthrough = true;
                else {
                    int rc = usage_error(usage_mount, "mount: unknown option -o %s", item);
                    free(list);
                    return rc;
                }
            }
            free(list);
            break;
        }
        case 'h':
            return fputs(usage_mount, stdout), 0;
        default:
            return usage_error(usage_mount, "mount: unknown option");
        }
    }
    if (argc - optind != 2)
        return usage_error(usage_mount, "mount: expected a share NAME and a directory DIR");
    const char *name = argv[optind];
    if (!share_name_valid(name))
        return usage_error(usage_mount, "mount: '%s' is not a valid share name", name);
    char dir[PATH_MAX], mountpoint[PATH_MAX], store_db[PATH_MAX + 16], pid_path[PATH_MAX + 16];
    if (share_dir(dir, sizeof(dir), name))
        return 1;
    snprintf(store_db, sizeof(store_db), "%s/store.db", dir);
    if (access(store_db, F_OK) != 0)
        return fail("there is no share called '%s' (looked in %s); create it with: weft init %s",
                    name, dir, name);
    int rc = recover_stale(argv[optind + 1]);
    if (rc == -ENOENT)
        return fail("mount point %s does not exist; create it first: mkdir -p %s", argv[optind + 1],
                    argv[optind + 1]);
    if (rc)
        return fail("cannot use mount point %s: %s", argv[optind + 1], strerror(-rc));
    if (!realpath(argv[optind + 1], mountpoint))
        return fail("cannot resolve mount point %s: %s", argv[optind + 1], strerror(errno));
    struct stat st;
    if (stat(mountpoint, &st) != 0 || !S_ISDIR(st.st_mode))
        return fail("mount point %s is not a directory", mountpoint);
    char source[512];
    if (find_weft_mount(mountpoint, NULL, NULL, 0, source, sizeof(source)) == 1)
        return fail("%s is already a weft mount (%s); unmount it first: weft umount %s", mountpoint,
                    source, mountpoint);
    snprintf(pid_path, sizeof(pid_path), "%s/mount.pid", dir);
    int pid = read_pid(pid_path);
    if (pid)
        return fail("share '%s' is already mounted by process %d; unmount it first "
                    "(weft status shows where)",
                    name, pid);
    char fsname[128];
    snprintf(fsname, sizeof(fsname), "weft:%s", name);
    fs_options.fsname = fsname;
    fs_options.share_name = name;
    fs_options.mountpoint = mountpoint;

    int ready[2] = {-1, -1};
    if (!foreground) {
        if (pipe(ready) != 0)
            return fail("pipe: %s", strerror(errno));
        pid_t child = fork();
        if (child < 0)
            return fail("fork: %s", strerror(errno));
        if (child > 0) {
            /* The parent reports what the daemon says, and returns once the mount is live. */
            close(ready[1]);
            char message[2048];
            size_t used = 0;
            ssize_t got;
            /* "ok\n" once mounted; an error text then EOF otherwise. */
            while (used < sizeof(message) - 1 &&
                   (got = read(ready[0], message + used, sizeof(message) - 1 - used)) > 0) {
                used += (size_t)got;
                if (message[used - 1] == '\n')
                    break;
            }
            message[used] = '\0';
            close(ready[0]);
            if (strcmp(message, "ok\n") == 0) {
                printf("mounted share '%s' on %s\n", name, mountpoint);
                return 0;
            }
            int status;
            waitpid(child, &status, 0);
            return fail("%s", used ? message : "the mount daemon exited before mounting");
        }
        close(ready[0]);
        setsid();
        fs_options.ready_fd = ready[1];
    }

    struct meta_replica *replica = NULL;
    struct meta_err err = {{0}};
    rc = meta_replica_open(&replica, &err, dir);
    if (rc) {
        char message[META_ERRMSG_LEN + 128];
        snprintf(message, sizeof(message), "cannot open share '%s': %s", name,
                 err.msg[0] ? err.msg : strerror(-rc));
        if (foreground)
            return fail("%s", message);
        if (write(ready[1], message, strlen(message)) < 0) {
        }
        _exit(1);
    }
    char *relay = NULL, *listen = NULL, *peers = NULL, records_dir[PATH_MAX + 16];
    struct {
        const char *key;
        char **value;
    } sync_settings[] = {
        {RELAY_SETTING, &relay}, {LISTEN_SETTING, &listen}, {PEERS_SETTING, &peers}};
    for (size_t i = 0; i < sizeof(sync_settings) / sizeof(sync_settings[0]); i++) {
        rc = meta_setting_get(sync_settings[i].value, meta_replica_store(replica),
                              sync_settings[i].key);
        if (rc && rc != -ENOENT)
            fs_log(LOG_WARNING, "cannot read the share's setting %s: %s", sync_settings[i].key,
                   strerror(-rc));
    }
    fs_options.listen = listen;
    fs_options.peers = peers;
    snprintf(records_dir, sizeof(records_dir), "%s/records", dir);
    fs_options.relay = relay;
    fs_options.records_dir = records_dir;
    /* Tests restart relays and should not wait out a full backoff (sync/net: 60 s). */
    const char *backoff = getenv("WEFT_SYNC_BACKOFF_MAX_MS");
    if (backoff && atoi(backoff) > 0)
        fs_options.sync_backoff_max_ms = (unsigned)atoi(backoff);
    /* The pid, then the mount point: how commands find this share's mount (see share_mount). */
    FILE *pid_file = fopen(pid_path, "w");
    if (pid_file) {
        fprintf(pid_file, "%d\n%s\n", (int)getpid(), mountpoint);
        fclose(pid_file);
    }
    if (!foreground) {
        fs_log_to_syslog("weft");
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            if (null > 2)
                close(null);
        }
        if (chdir("/") != 0) {
        }
    }
    fs_log(LOG_INFO, "serving share '%s' on %s", name, mountpoint);
    char errbuf[512] = "";
    rc = fs_serve(replica, &fs_options, errbuf, sizeof(errbuf));
    if (rc) {
        if (foreground)
            fail("%s", errbuf);
        else if (write(ready[1], errbuf, strlen(errbuf)) < 0) {
        }
    }
    if (ready[1] >= 0)
        close(ready[1]);
    meta_replica_close(replica);
    free(relay);
    free(listen);
    free(peers);
    unlink(pid_path);
    fs_log(LOG_INFO, "share '%s' unmounted from %s", name, mountpoint);
    return rc ? 1 : 0;
}

static int cmd_umount(int argc, char **argv)
{
    if (wants_help(argc, argv))
        return fputs(usage_umount, stdout), 0;
    if (argc != 2)
        return usage_error(usage_umount, "umount: expected one directory DIR");
    char mountpoint[PATH_MAX], source[512];
    if (!realpath(argv[1], mountpoint)) {
        if (errno == ENOTCONN) {
            if (umount2(argv[1], MNT_DETACH) == 0) {
                printf("unmounted %s (its daemon had died; nothing was lost that was "
                       "committed)\n",
                       argv[1]);
                return 0;
            }
        }
        return fail("cannot resolve %s: %s", argv[1], strerror(errno));
    }
    int found = find_weft_mount(mountpoint, NULL, NULL, 0, source, sizeof(source));
    if (found <= 0)
        return fail("%s is not a weft mount (see: weft status)", mountpoint);
    const char *name = strncmp(source, "weft:", 5) == 0 ? source + 5 : source;
    char dir[PATH_MAX], pid_path[PATH_MAX + 16];
    int pid = 0;
    if (share_dir(dir, sizeof(dir), name) == 0) {
        snprintf(pid_path, sizeof(pid_path), "%s/mount.pid", dir);
        pid = read_pid(pid_path);
    }
    if (umount2(mountpoint, 0) != 0) {
        int err = errno;
        if (err == EBUSY)
            return fail("%s is busy: a process has a file or its working directory inside it; "
                        "close it (fuser -vm %s shows which) and run weft umount again",
                        mountpoint, mountpoint);
        if (err != EPERM)
            return fail("cannot unmount %s: %s", mountpoint, strerror(err));
        /* Not root: the setuid helper may unmount our own mounts. */
        pid_t helper = fork();
        if (helper == 0) {
            execlp("fusermount3", "fusermount3", "-u", mountpoint, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        if (helper < 0 || waitpid(helper, &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0)
            return fail("cannot unmount %s (fusermount3 said why above)", mountpoint);
    }
    /* Wait for the daemon to commit and close the store, so the share is free again. */
    for (int waited = 0; pid && kill(pid, 0) == 0 && waited < 600; waited++) {
        struct timespec tick = {0, 50 * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
    if (pid && kill(pid, 0) == 0)
        return fail("unmounted %s, but its daemon (pid %d) is still finishing; "
                    "see the journal (journalctl -t weft)",
                    mountpoint, pid);
    printf("unmounted %s\n", mountpoint);
    return 0;
}

/* ---------- status ---------- */

struct share_state {
    char name[128];
    char dir[PATH_MAX];
    char mountpoint[PATH_MAX];
    int pid;
};

/*
 * Where the share in `dir` is mounted, from its daemon's mount.pid (the pid,
 * then the mount point) checked against the kernel's mount table. Share
 * names are not unique across users or data directories, so the "weft:NAME"
 * source mount(8) shows cannot say whose mount it is. 1 found, 0 not mounted.
 */
static int share_mount(const char *dir, char *out, size_t cap)
{
    char pid_path[PATH_MAX + 16], line[PATH_MAX + 2];
    snprintf(pid_path, sizeof(pid_path), "%s/mount.pid", dir);
    if (!read_pid(pid_path))
        return 0;
    FILE *file = fopen(pid_path, "r");
    int found = 0;
    if (file && fgets(line, sizeof(line), file) && fgets(line, sizeof(line), file)) {
        line[strcspn(line, "\n")] = '\0';
        size_t len = strlen(line);
        found = line[0] == '/' && len < cap && find_weft_mount(line, NULL, NULL, 0, NULL, 0) == 1;
        if (found)
            memcpy(out, line, len + 1);
    }
    if (file)
        fclose(file);
    return found;
}

static void share_state_read(struct share_state *state, const char *root, const char *name)
{
    memset(state, 0, sizeof(*state));
    snprintf(state->name, sizeof(state->name), "%s", name);
    snprintf(state->dir, sizeof(state->dir), "%s/%s", root, name);
    char pid_path[PATH_MAX + 16];
    snprintf(pid_path, sizeof(pid_path), "%s/mount.pid", state->dir);
    state->pid = read_pid(pid_path);
    if (share_mount(state->dir, state->mountpoint, sizeof(state->mountpoint)) != 1)
        state->mountpoint[0] = '\0';
}

static int read_virtual(char **out, const char *path, const char *name)
{
    ssize_t len = getxattr(path, name, NULL, 0);
    if (len < 0)
        return -errno;
    char *value = malloc((size_t)len + 1);
    if (!value)
        return -ENOMEM;
    len = getxattr(path, name, value, (size_t)len);
    if (len < 0) {
        int err = errno;
        free(value);
        return -err;
    }
    value[len] = '\0';
    *out = value;
    return 0;
}

/* Prints `text` as the inside of a JSON string. */
static void print_json_chars(const char *text)
{
    for (const unsigned char *at = (const unsigned char *)text; *at; at++) {
        if (*at == '"' || *at == '\\')
            printf("\\%c", *at);
        else if (*at < 0x20)
            printf("\\u%04x", *at);
        else
            putchar(*at);
    }
}

/* A number or string field of the daemon's flat JSON status ("" if absent). */
static void json_field(char *out, size_t cap, const char *json, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof(pattern), "\"%s\": ", key);
    const char *at = strstr(json, pattern);
    out[0] = '\0';
    if (!at)
        return;
    at += strlen(pattern);
    bool quoted = *at == '"';
    at += quoted;
    size_t n = 0;
    while (*at && n + 1 < cap && (quoted ? *at != '"' : (*at != ',' && *at != '}'))) {
        if (quoted && *at == '\\' && at[1])
            at++;
        out[n++] = *at++;
    }
    out[n] = '\0';
}

/* What serves the mount's file data, from the daemon's status. */
static void print_file_data(const char *json)
{
    char mode[32], why[400];
    json_field(mode, sizeof(mode), json, "file_data");
    json_field(why, sizeof(why), json, "file_data_why");
    if (!strcmp(mode, "passthrough"))
        printf("%-20s file data: straight to the working copies (FUSE passthrough)\n", "");
    else if (mode[0])
        printf("%-20s file data: through the daemon: %s\n", "", why);
}

static void print_sync(const char *json)
{
    char relay[300], connected[8], seen[32], pending[32], refused[32], forks[32], rollbacks[32],
        error[600], unacked[32], conflicts[32];
    json_field(conflicts, sizeof(conflicts), json, "conflicts");
    if (atoll(conflicts))
        printf("%-20s %s conflict copies wait for you: names with '(conflict DEVICE)'; keep what "
               "you want, delete the rest\n",
               "", conflicts);
    char peers[16], listen_port[16];
    json_field(peers, sizeof(peers), json, "peers_connected");
    json_field(listen_port, sizeof(listen_port), json, "listen_port");
    if (atoi(listen_port) || atoi(peers))
        printf("%-20s direct: %s devices connected%s%s\n", "", peers,
               atoi(listen_port) ? ", listening on port " : "",
               atoi(listen_port) ? listen_port : "");
    json_field(relay, sizeof(relay), json, "relay");
    if (!strcmp(relay, "null")) {
        if (!atoi(listen_port) && !atoi(peers))
            printf("%-20s no relay and no peers: this device keeps the share alone\n", "");
        return;
    }
    json_field(unacked, sizeof(unacked), json, "records_unacked");
    json_field(connected, sizeof(connected), json, "relay_connected");
    json_field(seen, sizeof(seen), json, "relay_last_seen_ns");
    json_field(pending, sizeof(pending), json, "records_pending");
    json_field(refused, sizeof(refused), json, "records_refused");
    json_field(forks, sizeof(forks), json, "forks");
    json_field(rollbacks, sizeof(rollbacks), json, "rollbacks");
    json_field(error, sizeof(error), json, "last_error");
    long long seen_ns = atoll(seen);
    char when[64] = "never";
    if (seen_ns > 0) {
        time_t t = (time_t)(seen_ns / 1000000000);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
    }
    printf("%-20s relay %s: %s, last heard %s\n", "", relay,
           !strcmp(connected, "true") ? "connected" : "not connected", when);
    printf("%-20s %s records not yet confirmed by the relay, %s received records waiting for "
           "others\n",
           "", unacked, pending);
    if (atoll(refused) || atoll(forks) || atoll(rollbacks))
        printf("%-20s REFUSED %s records, %s forks, %s rollbacks: a peer or the relay "
               "misbehaved (nothing of it was applied)\n",
               "", refused, forks, rollbacks);
    if (error[0])
        printf("%-20s last problem: %s\n", "", error);
}

static int cmd_status(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "jh", options, NULL)) != -1) {
        if (opt == 'j')
            json = true;
        else if (opt == 'h')
            return fputs(usage_status, stdout), 0;
        else
            return usage_error(usage_status, "status: unknown option");
    }
    if (argc - optind > 1)
        return usage_error(usage_status, "status: expected at most one share NAME");
    const char *only = argc - optind == 1 ? argv[optind] : NULL;
    char root[PATH_MAX];
    if (data_root(root, sizeof(root)))
        return 1;
    struct share_state states[256];
    size_t count = 0;
    if (only) {
        char store_db[PATH_MAX + 160];
        snprintf(store_db, sizeof(store_db), "%s/%s/store.db", root, only);
        if (!share_name_valid(only) || access(store_db, F_OK) != 0)
            return fail("there is no share called '%s' in %s", only, root);
        share_state_read(&states[count++], root, only);
    } else {
        DIR *list = opendir(root);
        struct dirent *entry;
        while (list && count < 256 && (entry = readdir(list))) {
            char store_db[PATH_MAX + 300];
            snprintf(store_db, sizeof(store_db), "%s/%s/store.db", root, entry->d_name);
            if (share_name_valid(entry->d_name) && access(store_db, F_OK) == 0)
                share_state_read(&states[count++], root, entry->d_name);
        }
        if (list)
            closedir(list);
    }
    /* A mounted share's daemon tells how its syncing goes (a JSON object). */
    char *sync[256] = {0};
    for (size_t i = 0; i < count; i++)
        if (states[i].mountpoint[0] &&
            read_virtual(&sync[i], states[i].mountpoint, "user.weft.sync") != 0)
            sync[i] = NULL;
    if (json) {
        printf("{\"data_dir\": \"%s\", \"shares\": [", root);
        for (size_t i = 0; i < count; i++) {
            printf("%s{\"name\": \"%s\", \"dir\": \"%s\", \"mounted\": %s", i ? ", " : "",
                   states[i].name, states[i].dir, states[i].mountpoint[0] ? "true" : "false");
            if (states[i].mountpoint[0])
                printf(", \"mountpoint\": \"%s\", \"pid\": %d", states[i].mountpoint,
                       states[i].pid);
            if (sync[i]) {
                char mode[32], why[400];
                json_field(mode, sizeof(mode), sync[i], "file_data");
                json_field(why, sizeof(why), sync[i], "file_data_why");
                printf(", \"file_data\": \"%s\", \"file_data_why\": \"", mode);
                print_json_chars(why);
                printf("\", \"sync\": %s", sync[i]);
            }
            printf("}");
            free(sync[i]);
        }
        printf("]}\n");
        return 0;
    }
    if (count == 0) {
        printf("no shares in %s; create one with: weft init NAME\n", root);
        return 0;
    }
    for (size_t i = 0; i < count; i++) {
        if (states[i].mountpoint[0])
            printf("%-20s mounted on %s (pid %d)\n", states[i].name, states[i].mountpoint,
                   states[i].pid);
        else
            printf("%-20s not mounted\n", states[i].name);
        if (sync[i]) {
            print_file_data(sync[i]);
            print_sync(sync[i]);
        }
        free(sync[i]);
    }
    return 0;
}

/* ---------- log and restore ---------- */

static int not_weft(const char *path, int rc)
{
    if (rc == -ENODATA || rc == -ENOTSUP || rc == -EOPNOTSUPP)
        return fail("%s is not in a mounted weft share (mount one with: weft mount NAME DIR)",
                    path);
    if (rc == -EISDIR || rc == -EINVAL)
        return fail("%s has no history: only regular files have versions", path);
    return fail("%s: %s", path, strerror(-rc));
}

static int cmd_log(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "jh", options, NULL)) != -1) {
        if (opt == 'j')
            json = true;
        else if (opt == 'h')
            return fputs(usage_log, stdout), 0;
        else
            return usage_error(usage_log, "log: unknown option");
    }
    if (argc - optind != 1)
        return usage_error(usage_log, "log: expected one PATH");
    const char *path = argv[optind];
    char *value = NULL;
    int rc = read_virtual(&value, path, json ? "user.weft.log" : "user.weft.history");
    if (rc)
        return not_weft(path, rc);
    if (json) {
        /* Add the path the user gave, in front of what the daemon said. */
        printf("{\"path\": \"");
        print_json_chars(path);
        printf("\", %s", value + 1);
    } else {
        printf("%s", value);
    }
    free(value);
    return 0;
}

static int cmd_restore(int argc, char **argv)
{
    static const struct option options[] = {
        {"version", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *version = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "v:h", options, NULL)) != -1) {
        if (opt == 'v')
            version = optarg;
        else if (opt == 'h')
            return fputs(usage_restore, stdout), 0;
        else
            return usage_error(usage_restore, "restore: unknown option");
    }
    if (argc - optind != 1 || !version)
        return usage_error(usage_restore, "restore: expected a PATH and --version VERSION");
    const char *path = argv[optind];
    if (setxattr(path, "user.weft.restore", version, strlen(version), 0) != 0) {
        int err = errno;
        if (err == EINVAL || err == ENOENT)
            return fail("%s has no version '%s'; 'weft log %s' lists them", path, version, path);
        return not_weft(path, -err);
    }
    printf("restored %s to version %s\n", path, version);
    return 0;
}

/* ---------- peers ---------- */

static int cmd_peer(int argc, char **argv)
{
    if (wants_help(argc, argv))
        return fputs(usage_peer, stdout), 0;
    bool listen = argc == 4 && strcmp(argv[1], "listen") == 0;
    if (argc != 4 || (strcmp(argv[1], "add") != 0 && !listen))
        return usage_error(usage_peer,
                           "peer: expected: add NAME HOST:PORT, or listen NAME ADDR:PORT");
    const char *name = argv[2], *addr = argv[3];
    char host[256], dir[PATH_MAX], store_db[PATH_MAX + 16], mountpoint[PATH_MAX];
    uint16_t port;
    if (!share_name_valid(name))
        return usage_error(usage_peer, "peer: '%s' is not a valid share name", name);
    if (sync_net_parse_addr(host, sizeof(host), &port, addr, false) != 0)
        return usage_error(usage_peer, "peer: '%s' is not a device address HOST:PORT", addr);
    if (share_dir(dir, sizeof(dir), name))
        return 1;
    snprintf(store_db, sizeof(store_db), "%s/store.db", dir);
    if (access(store_db, F_OK) != 0)
        return fail("there is no share called '%s' (looked in %s)", name, dir);
    int rc;
    if (listen && share_mount(dir, mountpoint, sizeof(mountpoint)) == 1)
        return fail("share '%s' is mounted on %s: unmount it, set where it listens, mount it "
                    "again",
                    name, mountpoint);
    if (listen) {
        struct meta_replica *replica = NULL;
        struct meta_err err = {{0}};
        if ((rc = meta_replica_open(&replica, &err, dir)) != 0)
            return fail("cannot open share '%s': %s", name, err.msg[0] ? err.msg : strerror(-rc));
        rc = meta_setting_set(meta_replica_store(replica), LISTEN_SETTING, addr);
        meta_replica_close(replica);
        if (rc)
            return fail("cannot record where share '%s' listens: %s", name, strerror(-rc));
        printf("share '%s' accepts its devices on %s from its next mount\n", name, addr);
        return 0;
    }
    if (share_mount(dir, mountpoint, sizeof(mountpoint)) == 1) {
        if (setxattr(mountpoint, "user.weft.peer", addr, strlen(addr), 0) != 0)
            return fail("cannot add the peer through the mount on %s: %s", mountpoint,
                        strerror(errno));
        printf("share '%s' now syncs directly with %s\n", name, addr);
        return 0;
    }
    struct meta_replica *replica = NULL;
    struct meta_err err = {{0}};
    if ((rc = meta_replica_open(&replica, &err, dir)) != 0)
        return fail("cannot open share '%s': %s", name, err.msg[0] ? err.msg : strerror(-rc));
    rc = sync_peer_remember(meta_replica_store(replica), addr);
    meta_replica_close(replica);
    if (rc)
        return fail("cannot record the peer: %s", strerror(-rc));
    printf("share '%s' will sync directly with %s once mounted\n", name, addr);
    return 0;
}

/* ---------- devices ---------- */

static int cmd_device(int argc, char **argv)
{
    if (wants_help(argc, argv))
        return fputs(usage_device, stdout), 0;
    bool list = argc == 3 && !strcmp(argv[1], "list");
    bool remove = argc == 4 && !strcmp(argv[1], "remove");
    if (!list && !remove)
        return usage_error(usage_device, "device: expected: list NAME, or remove NAME DEVICE");
    const char *name = argv[2];
    char dir[PATH_MAX], store_db[PATH_MAX + 16], mountpoint[PATH_MAX], why[256] = "";
    if (!share_name_valid(name))
        return usage_error(usage_device, "device: '%s' is not a valid share name", name);
    if (share_dir(dir, sizeof(dir), name))
        return 1;
    snprintf(store_db, sizeof(store_db), "%s/store.db", dir);
    if (access(store_db, F_OK) != 0)
        return fail("there is no share called '%s' (looked in %s)", name, dir);
    int rc;
    char *text = NULL;
    if (share_mount(dir, mountpoint, sizeof(mountpoint)) == 1) {
        if (list && (rc = read_virtual(&text, mountpoint, "user.weft.devices")) != 0)
            return fail("cannot list devices through the mount on %s: %s", mountpoint,
                        strerror(-rc));
        if (remove && setxattr(mountpoint, "user.weft.remove", argv[3], strlen(argv[3]), 0) != 0)
            return fail("cannot remove device '%s': %s", argv[3],
                        errno == ENOENT ? "no such device in this share (weft device list)"
                                        : strerror(errno));
    } else {
        struct meta_replica *replica = NULL;
        struct meta_err err = {{0}};
        if ((rc = meta_replica_open(&replica, &err, dir)) != 0)
            return fail("cannot open share '%s': %s", name, err.msg[0] ? err.msg : strerror(-rc));
        uint8_t key[SYNC_PUBLIC_KEY_LEN];
        rc = list ? sync_devices_text(&text, meta_replica_store(replica))
                  : sync_device_remove(key, why, sizeof(why), replica, argv[3]);
        meta_replica_close(replica);
        if (rc)
            return fail("%s", why[0] ? why : strerror(-rc));
    }
    if (list)
        printf("%s", text);
    else
        printf("removed device '%s' from share '%s'; the share has a new key\n", argv[3], name);
    free(text);
    return 0;
}

/* ---------- invite and join ---------- */

static int cmd_invite(int argc, char **argv)
{
    static const struct option options[] = {
        {"device-name", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *device = "new-device";
    int opt;
    while ((opt = getopt_long(argc, argv, "n:h", options, NULL)) != -1) {
        if (opt == 'n')
            device = optarg;
        else if (opt == 'h')
            return fputs(usage_invite, stdout), 0;
        else
            return usage_error(usage_invite, "invite: unknown option");
    }
    if (argc - optind != 1)
        return usage_error(usage_invite, "invite: expected one share NAME");
    const char *name = argv[optind];
    if (!share_name_valid(name))
        return usage_error(usage_invite, "invite: '%s' is not a valid share name", name);
    if (!share_name_valid(device))
        return usage_error(usage_invite,
                           "invite: '%s' is not a valid device name (letters, digits, '.', '_', "
                           "'-')",
                           device);
    char dir[PATH_MAX], store_db[PATH_MAX + 16], mountpoint[PATH_MAX];
    if (share_dir(dir, sizeof(dir), name))
        return 1;
    snprintf(store_db, sizeof(store_db), "%s/store.db", dir);
    if (access(store_db, F_OK) != 0)
        return fail("there is no share called '%s' (looked in %s)", name, dir);
    char token[SYNC_INVITE_TEXT_MAX], why[512] = "";
    int rc;
    if (share_mount(dir, mountpoint, sizeof(mountpoint)) == 1) {
        /* Mounted: its daemon holds the store, so it makes the invite. */
        char *value = NULL;
        if (setxattr(mountpoint, "user.weft.invite", device, strlen(device), 0) != 0) {
            rc = -errno;
            return fail("cannot invite through the mount on %s: %s", mountpoint,
                        rc == -ENOENT ? "the share has no relay it has met yet (weft init "
                                        "--relay, then mount it while the relay runs)"
                                      : strerror(-rc));
        }
        if ((rc = read_virtual(&value, mountpoint, "user.weft.invite")) != 0)
            return fail("cannot read the invite from the mount on %s: %s", mountpoint,
                        strerror(-rc));
        snprintf(token, sizeof(token), "%s", value);
        sodium_memzero(value, strlen(value));
        free(value);
    } else {
        struct meta_replica *replica = NULL;
        struct meta_err err = {{0}};
        rc = meta_replica_open(&replica, &err, dir);
        if (rc)
            return fail("cannot open share '%s': %s", name, err.msg[0] ? err.msg : strerror(-rc));
        uint8_t key[SYNC_PUBLIC_KEY_LEN];
        rc = sync_invite_make(token, sizeof(token), why, sizeof(why), replica, name, device, key);
        meta_replica_close(replica);
        if (rc)
            return fail("cannot invite a device to share '%s': %s", name, why);
    }
    fprintf(stderr,
            "weft: device '%s' may join share '%s'. On that device run:\n\n"
            "    weft join TOKEN DIR\n\n"
            "with the token below. It holds the share's key: pass it only over a channel\n"
            "you trust.\n",
            device, name);
    printf("%s\n", token);
    sodium_memzero(token, sizeof(token));
    return 0;
}

struct join_lock {
    pthread_mutex_t mutex;
};

static void join_lock(void *ctx)
{
    pthread_mutex_lock(&((struct join_lock *)ctx)->mutex);
}

static void join_unlock(void *ctx)
{
    pthread_mutex_unlock(&((struct join_lock *)ctx)->mutex);
}

static void join_log(void *ctx, enum sync_net_log_level level, const char *line)
{
    (void)ctx;
    if (level <= SYNC_NET_LOG_WARN)
        fprintf(stderr, "\rweft: %s\n", line);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One progress line: a bar on a terminal, a plain line otherwise. */
static void join_progress(bool tty, uint64_t have, uint64_t total, uint64_t chunks, double rate)
{
    if (tty) {
        int width = 30, filled = total ? (int)((double)width * (double)have / (double)total) : 0;
        if (filled > width)
            filled = width;
        fprintf(stderr, "\rrestoring [%.*s%*s] %llu/%llu records, %llu chunks, %.0f/s ", filled,
                "##############################", width - filled, "", (unsigned long long)have,
                (unsigned long long)total, (unsigned long long)chunks, rate);
    } else {
        fprintf(stderr, "weft: restoring: %llu of %llu records, %llu chunks\n",
                (unsigned long long)have, (unsigned long long)total, (unsigned long long)chunks);
    }
    fflush(stderr);
}

/*
 * Restores the share in `dir` from its relay: runs a syncer until this
 * device holds every record the relay said it had and none waits (or
 * `timeout` seconds pass with nothing new).
 */
static int join_restore(struct meta_replica *replica, const char *dir, bool quiet)
{
    struct join_lock lock = {PTHREAD_MUTEX_INITIALIZER};
    char records_dir[PATH_MAX + 16], *relay = NULL, why[512] = "";
    snprintf(records_dir, sizeof(records_dir), "%s/records", dir);
    int rc = meta_setting_get(&relay, meta_replica_store(replica), RELAY_SETTING);
    if (rc)
        return fail("the share has no relay to restore from: %s", strerror(-rc));
    struct sync_agent_config config = {.replica = replica,
                                       .records_dir = records_dir,
                                       .relay = relay,
                                       .lock = join_lock,
                                       .unlock = join_unlock,
                                       .lock_ctx = &lock,
                                       .log = join_log,
                                       .backoff_min_ms = 200,
                                       .backoff_max_ms = 2000};
    struct sync_agent *agent = NULL;
    rc = sync_agent_start(&agent, why, sizeof(why), &config);
    if (rc) {
        free(relay);
        return fail("cannot start restoring: %s", why);
    }
    bool tty = isatty(2) && !quiet;
    double start = now_seconds(), last_change = start, last_line = 0;
    uint64_t last_have = UINT64_MAX;
    const double give_up = 60; /* seconds without any progress */
    for (;;) {
        struct sync_agent_status st;
        sync_agent_status(&st, agent);
        uint64_t have = st.device.records_kept;
        double now = now_seconds();
        /* Progress is records or chunks: a big file's chunks come long after its record. */
        if (have + st.device.chunks_received != last_have) {
            last_have = have + st.device.chunks_received;
            last_change = now;
        }
        bool done = st.relay_last_seen_ns && have >= st.relay_records && st.device.pending == 0 &&
                    now - last_change > 0.3;
        if (!quiet && st.relay_last_seen_ns && (tty || now - last_line >= 2 || done)) {
            join_progress(tty, have, st.relay_records, st.device.chunks_received,
                          (double)have / (now - start + 1e-9));
            last_line = now;
        }
        if (done)
            break;
        if (now - last_change > give_up) {
            if (tty)
                fputc('\n', stderr);
            sync_agent_stop(agent);
            rc = fail(
                "restoring stalled: nothing came from the relay at %s for %.0f s%s%s%s", relay,
                give_up, st.last_error[0] ? "; last problem: " : "", st.last_error,
                strstr(st.last_error, "not a member")
                    ? " (the relay learns of a new device from the inviting one: mount the "
                      "share there while the relay runs; this share goes on syncing once mounted)"
                    : "");
            free(relay);
            return rc;
        }
        usleep(100000);
    }
    if (tty)
        fputc('\n', stderr);
    sync_agent_stop(agent);
    free(relay);
    return 0;
}

static int cmd_join(int argc, char **argv)
{
    static const struct option options[] = {
        {"name", required_argument, NULL, 'n'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *local_name = NULL;
    bool quiet = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "n:qh", options, NULL)) != -1) {
        if (opt == 'n')
            local_name = optarg;
        else if (opt == 'q')
            quiet = true;
        else if (opt == 'h')
            return fputs(usage_join, stdout), 0;
        else
            return usage_error(usage_join, "join: unknown option");
    }
    if (argc - optind != 2)
        return usage_error(usage_join, "join: expected a TOKEN and a directory DIR");
    struct sync_invite invite;
    int rc = sync_invite_decode(&invite, argv[optind]);
    if (rc == -EILSEQ)
        return fail("the token is damaged (a character changed, or it was cut): copy it again");
    if (rc == -EPROTONOSUPPORT)
        return fail("the token is from a newer weft: update weft on this device");
    if (rc)
        return usage_error(usage_join, "join: '%.20s...' is not a weft join token (weft1-...)",
                           argv[optind]);
    char name[SYNC_INVITE_NAME_MAX + 1];
    snprintf(name, sizeof(name), "%s", local_name ? local_name : invite.share_name);
    if (!share_name_valid(name)) {
        sync_invite_wipe(&invite);
        return usage_error(usage_join, "join: '%s' is not a valid share name (use --name)", name);
    }
    char root[PATH_MAX], dir[PATH_MAX], store_db[PATH_MAX + 16];
    if (data_root(root, sizeof(root)) || share_dir(dir, sizeof(dir), name)) {
        sync_invite_wipe(&invite);
        return 1;
    }
    snprintf(store_db, sizeof(store_db), "%s/store.db", dir);
    if (access(store_db, F_OK) == 0) {
        sync_invite_wipe(&invite);
        return fail("a share called '%s' is already on this device (%s): join under another "
                    "name with --name",
                    name, dir);
    }
    struct stat st;
    if (stat(argv[optind + 1], &st) != 0 || !S_ISDIR(st.st_mode)) {
        sync_invite_wipe(&invite);
        return fail("mount point %s is not a directory; create it first: mkdir -p %s",
                    argv[optind + 1], argv[optind + 1]);
    }
    if ((rc = mkdir_p(root, 0700)) != 0) {
        sync_invite_wipe(&invite);
        return fail("cannot create %s: %s", root, strerror(-rc));
    }
    struct meta_replica *replica = NULL;
    struct meta_err err = {{0}};
    struct meta_share_params params = {.device_name = invite.device_name,
                                       .share_id = invite.share_id,
                                       .share_key = invite.share_key,
                                       .device_seed = invite.device_seed};
    rc = meta_replica_create(&replica, &err, dir, &params);
    if (rc) {
        sync_invite_wipe(&invite);
        return fail("cannot create share '%s': %s", name, err.msg[0] ? err.msg : strerror(-rc));
    }
    /* The inviter is the first member this device trusts; the rest come in its records. */
    struct meta_store *store = meta_replica_store(replica);
    struct meta_device inviter = {.replica = sync_replica_id(invite.inviter_key)};
    memcpy(inviter.public_key, invite.inviter_key, SYNC_PUBLIC_KEY_LEN);
    snprintf(inviter.name, sizeof(inviter.name), "%s", invite.inviter_name);
    char relay_key[2 * SYNC_PUBLIC_KEY_LEN + 1];
    sodium_bin2hex(relay_key, sizeof(relay_key), invite.relay_key, SYNC_PUBLIC_KEY_LEN);
    rc = meta_device_put(store, &inviter);
    if (!rc)
        rc = meta_setting_set(store, RELAY_SETTING, invite.relay_addr);
    if (!rc)
        rc = meta_setting_set(store, "sync.relay_key", relay_key);
    if (!quiet && !rc)
        fprintf(stderr, "weft: joining share '%s' as device '%s' from the relay at %s\n", name,
                invite.device_name, invite.relay_addr);
    sync_invite_wipe(&invite);
    if (rc) {
        meta_replica_close(replica);
        return fail("cannot set up share '%s': %s", name, strerror(-rc));
    }
    rc = join_restore(replica, dir, quiet);
    meta_replica_close(replica);
    if (rc) {
        fprintf(stderr, "weft: the share stays in %s; 'weft mount %s DIR' goes on syncing\n", dir,
                name);
        return rc;
    }
    char *mount_argv[] = {"mount", name, argv[optind + 1], NULL};
    optind = 0;
    return cmd_mount(3, mount_argv);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error(usage_main, "no command given");
    const char *command = argv[1];
    if (!strcmp(command, "--help") || !strcmp(command, "-h") || !strcmp(command, "help")) {
        if (argc > 2) {
            command = argv[2];
            if (!strcmp(command, "relay")) {
                char *help[] = {"relay", "--help", NULL};
                return sync_relay_main(2, help);
            }
            const char *usages[][2] = {{"init", usage_init},     {"mount", usage_mount},
                                       {"umount", usage_umount}, {"status", usage_status},
                                       {"log", usage_log},       {"restore", usage_restore},
                                       {"invite", usage_invite}, {"join", usage_join},
                                       {"peer", usage_peer},     {"device", usage_device}};
            for (size_t i = 0; i < sizeof(usages) / sizeof(usages[0]); i++)
                if (!strcmp(command, usages[i][0]))
                    return fputs(usages[i][1], stdout), 0;
            return usage_error(usage_main, "unknown command '%s'", command);
        }
        fputs(usage_main, stdout);
        return 0;
    }
    if (!strcmp(command, "--version")) {
        printf("weft 0.1.0\n");
        return 0;
    }
    argc--;
    argv++;
    if (!strcmp(command, "init"))
        return cmd_init(argc, argv);
    if (!strcmp(command, "mount"))
        return cmd_mount(argc, argv);
    if (!strcmp(command, "umount") || !strcmp(command, "unmount"))
        return cmd_umount(argc, argv);
    if (!strcmp(command, "status"))
        return cmd_status(argc, argv);
    if (!strcmp(command, "log"))
        return cmd_log(argc, argv);
    if (!strcmp(command, "restore"))
        return cmd_restore(argc, argv);
    if (!strcmp(command, "invite"))
        return cmd_invite(argc, argv);
    if (!strcmp(command, "join"))
        return cmd_join(argc, argv);
    if (!strcmp(command, "peer"))
        return cmd_peer(argc, argv);
    if (!strcmp(command, "device"))
        return cmd_device(argc, argv);
    if (!strcmp(command, "relay"))
        return sync_relay_main(argc, argv);
    return usage_error(usage_main, "unknown command '%s'", command);
}
