/*
 * tests/fuse/posix_check.c: POSIX behaviour of a directory, call by call and
 * errno by errno, as ext4 gives it. test-posix.sh runs it on a weft mount and,
 * with WEFT_TEST_NATIVE=1, on a plain directory: that run is the oracle that
 * proves every check.
 *
 *     posix_check [--links=eperm|allowed] [--other-users] [-v] DIR
 *
 * --links=eperm: link() must fail with EPERM (weft: a node has one parent);
 * --links=allowed: it must work (ext4). --other-users: the permission checks
 * also run as uid/gid nobody (the mount must let other users in). Every
 * failed check prints what was expected and what came; the run goes on, and
 * the exit status is 1 if any check failed. Must run as root.
 *
 * Permission checks as root need a mount with default_permissions: root
 * passes mode bits only through CAP_DAC_OVERRIDE, so the checks drop that
 * capability (and CAP_DAC_READ_SEARCH, CAP_FOWNER) in a child that keeps uid
 * 0, and (--other-users) also switch to nobody in another child.
 *
 * Where file systems may legitimately differ, a check is tolerant and says so
 * in a comment: SEEK_DATA/SEEK_HOLE (a file system may report one extent),
 * the link count of a directory (1 means "not counted"), punching holes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define NOBODY_UID 65534
#define NOBODY_GID 65534
#define OTHER_UID  65533
#define OTHER2_UID 65532

static int failures;
static int checks;
static bool verbose;
static const char *section = "";

static const char *err_name(int err)
{
    const char *name = err ? strerrorname_np(err) : "0";
    return name ? name : "E?";
}

static void report(bool ok, int line, const char *fmt, ...)
{
    va_list ap;
    checks++;
    if (ok && !verbose)
        return;
    if (!ok)
        failures++;
    printf("%s [%s] line %d: ", ok ? "ok  " : "FAIL", section, line);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void note(const char *fmt, ...)
{
    va_list ap;
    printf("note [%s]: ", section);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* The call must succeed (return >= 0). Evaluates to the result. */
#define OK(call)                                                                                   \
    ({                                                                                             \
        errno = 0;                                                                                 \
        long r_ = (long)(call);                                                                    \
        int e_ = errno;                                                                            \
        report(r_ >= 0, __LINE__, "%s: expected success, got %ld (%s)", #call, r_, err_name(e_));  \
        r_;                                                                                        \
    })

/* The call must fail with -1 and errno ERR. */
#define ERR(err, call)                                                                             \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long r_ = (long)(call);                                                                    \
        int e_ = errno;                                                                            \
        report(r_ == -1 && e_ == (err), __LINE__, "%s: expected -1 %s, got %ld %s", #call,         \
               err_name(err), r_, r_ == -1 ? err_name(e_) : "(no error)");                         \
    } while (0)

#define EQ(expected, got)                                                                          \
    do {                                                                                           \
        long long x_ = (long long)(expected), g_ = (long long)(got);                               \
        report(x_ == g_, __LINE__, "%s: expected %lld, got %lld", #got, x_, g_);                   \
    } while (0)

#define EQ_OCT(expected, got)                                                                      \
    do {                                                                                           \
        unsigned x_ = (unsigned)(expected), g_ = (unsigned)(got);                                  \
        report(x_ == g_, __LINE__, "%s: expected 0%o, got 0%o", #got, x_, g_);                     \
    } while (0)

#define TRUE(cond, ...) report((cond), __LINE__, __VA_ARGS__)

/* ---- small helpers ---------------------------------------------------- */

static void enter(const char *name)
{
    section = name;
    if (mkdir(name, 0755) != 0 || chdir(name) != 0) {
        printf("FAIL [%s]: cannot make and enter %s: %s\n", name, name, strerror(errno));
        failures++;
        exit(1);
    }
}

static void leave(void)
{
    if (chdir("..") != 0) {
        printf("FAIL [%s]: chdir ..: %s\n", section, strerror(errno));
        exit(1);
    }
}

static int write_file(const char *path, const char *content, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(content);
    ssize_t n = write(fd, content, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)len ? 0 : -1;
}

/* Reads up to size-1 bytes of path into buf, NUL-terminated; -1 on error. */
static ssize_t read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t total = 0, n;
    while ((size_t)total < size - 1 && (n = read(fd, buf + total, size - 1 - (size_t)total)) > 0)
        total += n;
    close(fd);
    buf[total] = '\0';
    return total;
}

#define CONTENT(path, expected)                                                                    \
    do {                                                                                           \
        char buf_[8192];                                                                           \
        ssize_t n_ = read_file((path), buf_, sizeof buf_);                                         \
        report(n_ >= 0 && strcmp(buf_, (expected)) == 0, __LINE__,                                 \
               "content of %s: expected \"%s\", got %s\"%s\"", (path), (expected),                 \
               n_ < 0 ? "error " : "", n_ < 0 ? err_name(errno) : buf_);                           \
    } while (0)

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_mode : 0;
}

static bool can_open(const char *path, int flags)
{
    int fd = open(path, flags);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static struct timespec coarse_now(void)
{
    /* The kernel stamps inodes from the coarse clock, which can be behind
     * CLOCK_REALTIME: compare stamps against this, taken before the call. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return ts;
}

static bool ts_ge(struct timespec a, struct timespec b)
{
    return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec >= b.tv_nsec);
}

static bool all_zero(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i])
            return false;
    return true;
}

static int set_times(const char *path, time_t sec, int flags)
{
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    return utimensat(AT_FDCWD, path, ts, flags);
}

static void name_of_len(char *buf, size_t len, char fill)
{
    memset(buf, fill, len);
    buf[len] = '\0';
}

/* ---- sections ---------------------------------------------------------- */

static void t_enoent(void)
{
    struct stat st;
    char buf[16];
    enter("enoent");
    ERR(ENOENT, open("missing", O_RDONLY));
    ERR(ENOENT, stat("missing", &st));
    ERR(ENOENT, open("missing/x", O_WRONLY | O_CREAT, 0644));
    ERR(ENOENT, mkdir("missing/x", 0755));
    ERR(ENOENT, unlink("missing"));
    ERR(ENOENT, rmdir("missing"));
    ERR(ENOENT, rename("missing", "x"));
    ERR(ENOENT, readlink("missing", buf, sizeof buf));
    ERR(ENOENT, chmod("missing", 0644));
    ERR(ENOENT, truncate("missing", 0));
    ERR(ENOENT, getxattr("missing", "user.x", buf, sizeof buf));
    ERR(ENOENT, symlink("t", "missing/l"));
    /* A name that existed and was removed: no stale cache entry. */
    OK(write_file("f", "x", 0644));
    OK(stat("f", &st));
    OK(unlink("f"));
    ERR(ENOENT, stat("f", &st));
    ERR(ENOENT, open("f", O_RDONLY));
    OK(write_file("f", "again", 0644));
    CONTENT("f", "again");
    leave();
}

static void t_eexist(void)
{
    enter("eexist");
    OK(write_file("f", "x", 0644));
    OK(mkdir("d", 0755));
    ERR(EEXIST, open("f", O_WRONLY | O_CREAT | O_EXCL, 0644));
    ERR(EEXIST, open("d", O_WRONLY | O_CREAT | O_EXCL, 0644));
    ERR(EEXIST, mkdir("f", 0755));
    ERR(EEXIST, mkdir("d", 0755));
    ERR(EEXIST, symlink("t", "f"));
    ERR(EEXIST, mkfifo("f", 0644));
    ERR(EEXIST, mknod("d", S_IFREG | 0644, 0));
    CONTENT("f", "x");
    leave();
}

static void t_enotempty(void)
{
    enter("enotempty");
    OK(mkdir("d", 0755));
    OK(write_file("d/f", "x", 0644));
    ERR(ENOTEMPTY, rmdir("d"));
    OK(mkdir("h", 0755));
    OK(write_file("h/.hidden", "x", 0644));
    ERR(ENOTEMPTY, rmdir("h"));
    OK(mkdir("a", 0755));
    ERR(ENOTEMPTY, rename("a", "d"));
    TRUE(exists("d/f") && exists("a"), "rename onto a non-empty dir changed something");
    OK(unlink("d/f"));
    OK(rmdir("d"));
    ERR(ENOENT, rmdir("d"));
    leave();
}

static void t_eisdir(void)
{
    char buf[16];
    enter("eisdir");
    OK(mkdir("d", 0755));
    OK(write_file("f", "x", 0644));
    ERR(EISDIR, open("d", O_WRONLY));
    ERR(EISDIR, open("d", O_RDWR));
    ERR(EISDIR, open("d", O_WRONLY | O_CREAT, 0644));
    ERR(EISDIR, rename("f", "d"));
    ERR(EISDIR, unlink("d"));
    ERR(EISDIR, truncate("d", 0));
    int fd = OK(open("d", O_RDONLY | O_DIRECTORY));
    if (fd >= 0) {
        ERR(EISDIR, read(fd, buf, sizeof buf));
        close(fd);
    }
    leave();
}

static void t_enotdir(void)
{
    struct stat st;
    enter("enotdir");
    OK(write_file("f", "x", 0644));
    OK(mkdir("d", 0755));
    OK(symlink("f", "lf"));
    ERR(ENOTDIR, open("f/x", O_RDONLY));
    ERR(ENOTDIR, open("f/x", O_WRONLY | O_CREAT, 0644));
    ERR(ENOTDIR, stat("f/x", &st));
    ERR(ENOTDIR, mkdir("f/x", 0755));
    ERR(ENOTDIR, rmdir("f"));
    ERR(ENOTDIR, rename("d", "f"));
    ERR(ENOTDIR, open("f", O_RDONLY | O_DIRECTORY));
    ERR(ENOTDIR, open("lf", O_RDONLY | O_DIRECTORY));
    ERR(ENOTDIR, stat("f/", &st));
    ERR(ENOTDIR, open("f/", O_RDONLY));
    leave();
}

static void t_enametoolong(void)
{
    char name255[256], name256[257], longxattr[300], buf[600];
    struct stat st;
    enter("enametoolong");
    name_of_len(name255, 255, 'n');
    name_of_len(name256, 256, 'n');
    OK(write_file(name255, "255", 0644));
    OK(stat(name255, &st));
    CONTENT(name255, "255");
    DIR *dir = opendir(".");
    bool seen = false;
    for (struct dirent *de; dir && (de = readdir(dir));)
        seen |= strcmp(de->d_name, name255) == 0;
    if (dir)
        closedir(dir);
    TRUE(seen, "readdir does not list the 255-byte name");
    OK(rename(name255, "short"));
    OK(rename("short", name255));
    OK(unlink(name255));
    OK(mkdir(name255, 0755));
    OK(rmdir(name255));

    OK(write_file("f", "x", 0644));
    ERR(ENAMETOOLONG, open(name256, O_WRONLY | O_CREAT, 0644));
    ERR(ENAMETOOLONG, stat(name256, &st));
    ERR(ENAMETOOLONG, mkdir(name256, 0755));
    ERR(ENAMETOOLONG, symlink("t", name256));
    ERR(ENAMETOOLONG, rename("f", name256));
    ERR(ENAMETOOLONG, mkfifo(name256, 0644));
    ERR(ENAMETOOLONG, unlink(name256));
    /* The limit is in bytes: 127 two-byte characters fit, 128 do not. */
    buf[0] = '\0';
    for (int i = 0; i < 127; i++)
        strcat(buf, "\xc3\xa9");
    OK(write_file(buf, "e", 0644));
    OK(unlink(buf));
    strcat(buf, "\xc3\xa9");
    ERR(ENAMETOOLONG, open(buf, O_WRONLY | O_CREAT, 0644));
    /* xattr names: at most 255 bytes. */
    strcpy(longxattr, "user.");
    memset(longxattr + 5, 'x', 251);
    longxattr[256] = '\0';
    ERR(ERANGE, setxattr("f", longxattr, "v", 1, 0));
    leave();
}

static void t_einval_into_itself(void)
{
    char path[64];
    enter("einval");
    OK(mkdir("a", 0755));
    OK(mkdir("a/b", 0755));
    OK(mkdir("a/b/c", 0755));
    ERR(EINVAL, rename("a", "a/x"));
    ERR(EINVAL, rename("a", "a/b/x"));
    ERR(EINVAL, rename("a", "a/b/c/x"));
    ERR(EINVAL, rename("a/b", "a/b/c/x"));
    ERR(EINVAL, syscall(SYS_renameat2, AT_FDCWD, "a", AT_FDCWD, "a/b/c", RENAME_EXCHANGE));
    ERR(EINVAL,
        syscall(SYS_renameat2, AT_FDCWD, "a/b", AT_FDCWD, "a", RENAME_EXCHANGE | RENAME_NOREPLACE));
    ERR(EINVAL, syscall(SYS_renameat2, AT_FDCWD, "a/b", AT_FDCWD, "z", 1u << 7));
    ERR(EINVAL, rmdir("a/b/."));
    snprintf(path, sizeof path, "a/b/c");
    TRUE(exists(path), "a/b/c vanished after refused moves");
    leave();
}

static void t_rename(void)
{
    char buf[64];
    struct stat st;
    enter("rename");
    /* file over file: the target now has the source's content */
    OK(write_file("src", "new", 0644));
    OK(write_file("dst", "old", 0644));
    OK(rename("src", "dst"));
    CONTENT("dst", "new");
    TRUE(!exists("src"), "src still exists after rename over dst");
    /* a reader that has the old file open keeps reading the old bytes */
    OK(write_file("cfg", "version one", 0644));
    int fd = OK(open("cfg", O_RDONLY));
    OK(write_file("cfg.tmp", "version two", 0644));
    OK(rename("cfg.tmp", "cfg"));
    if (fd >= 0) {
        memset(buf, 0, sizeof buf);
        OK(pread(fd, buf, sizeof buf - 1, 0));
        TRUE(strcmp(buf, "version one") == 0,
             "an fd opened before rename-over must read the old content: got \"%s\"", buf);
        close(fd);
    }
    CONTENT("cfg", "version two");
    /* across directories, with content */
    OK(mkdir("d1", 0755));
    OK(mkdir("d2", 0755));
    OK(write_file("d1/f", "moved", 0644));
    OK(rename("d1/f", "d2/g"));
    CONTENT("d2/g", "moved");
    ERR(ENOENT, stat("d1/f", &st));
    /* a directory and what is in it */
    OK(mkdir("d1/sub", 0755));
    OK(write_file("d1/sub/x", "deep", 0644));
    OK(rename("d1/sub", "d2/sub2"));
    CONTENT("d2/sub2/x", "deep");
    /* directory over an empty directory */
    OK(mkdir("empty", 0755));
    OK(rename("d2/sub2", "empty"));
    CONTENT("empty/x", "deep");
    /* onto itself: nothing happens */
    OK(rename("dst", "dst"));
    CONTENT("dst", "new");
    /* RENAME_NOREPLACE */
    OK(write_file("n1", "one", 0644));
    OK(write_file("n2", "two", 0644));
    ERR(EEXIST, syscall(SYS_renameat2, AT_FDCWD, "n1", AT_FDCWD, "n2", RENAME_NOREPLACE));
    CONTENT("n1", "one");
    CONTENT("n2", "two");
    OK(syscall(SYS_renameat2, AT_FDCWD, "n1", AT_FDCWD, "n3", RENAME_NOREPLACE));
    CONTENT("n3", "one");
    TRUE(!exists("n1"), "n1 still exists after RENAME_NOREPLACE to n3");
    /* RENAME_EXCHANGE: two files, then a file and a directory */
    OK(syscall(SYS_renameat2, AT_FDCWD, "n2", AT_FDCWD, "n3", RENAME_EXCHANGE));
    CONTENT("n2", "one");
    CONTENT("n3", "two");
    OK(mkdir("xd", 0755));
    OK(write_file("xd/inner", "in", 0644));
    OK(syscall(SYS_renameat2, AT_FDCWD, "n2", AT_FDCWD, "xd", RENAME_EXCHANGE));
    TRUE(S_ISDIR(mode_of("n2")) && S_ISREG(mode_of("xd")), "RENAME_EXCHANGE file<->dir: kinds");
    CONTENT("n2/inner", "in");
    CONTENT("xd", "one");
    ERR(ENOENT, syscall(SYS_renameat2, AT_FDCWD, "n3", AT_FDCWD, "nothing", RENAME_EXCHANGE));
    OK(syscall(SYS_renameat2, AT_FDCWD, "d1", AT_FDCWD, "d2", RENAME_EXCHANGE));
    CONTENT("d1/g", "moved");
    leave();
}

static void t_symlink(void)
{
    char buf[8192], target[4097];
    struct stat st;
    enter("symlink");
    OK(write_file("target", "pointed at", 0644));
    OK(symlink("target", "l"));
    ssize_t n = OK(readlink("l", buf, sizeof buf));
    TRUE(n == 6 && memcmp(buf, "target", 6) == 0, "readlink: expected \"target\", got %zd bytes",
         n);
    OK(lstat("l", &st));
    TRUE(S_ISLNK(st.st_mode), "lstat of a symlink: not S_IFLNK (mode 0%o)", st.st_mode);
    EQ(6, st.st_size);
    OK(stat("l", &st));
    EQ(10, st.st_size);
    CONTENT("l", "pointed at");
    EQ(3, readlink("l", buf, 3));
    /* dangling */
    OK(symlink("nowhere", "dangling"));
    ERR(ENOENT, stat("dangling", &st));
    OK(lstat("dangling", &st));
    ERR(EEXIST, open("dangling", O_WRONLY | O_CREAT | O_EXCL, 0644));
    int fd = OK(open("dangling", O_WRONLY | O_CREAT, 0644)); /* creates "nowhere" */
    if (fd >= 0)
        close(fd);
    TRUE(exists("nowhere"), "open(O_CREAT) through a dangling symlink did not create its target");
    ERR(EINVAL, readlink("target", buf, sizeof buf));
    ERR(EINVAL, readlink(".", buf, sizeof buf));
    ERR(ELOOP, open("l", O_RDONLY | O_NOFOLLOW));
    OK(symlink("loop2", "loop1"));
    OK(symlink("loop1", "loop2"));
    ERR(ELOOP, stat("loop1", &st));
    /* long targets: 4095 bytes is the most a path can be */
    name_of_len(target, 4095, 't');
    OK(symlink(target, "long"));
    n = OK(readlink("long", buf, sizeof buf));
    TRUE(n == 4095 && memcmp(buf, target, 4095) == 0, "readlink of a 4095-byte target: got %zd", n);
    name_of_len(target, 4096, 't');
    ERR(ENAMETOOLONG, symlink(target, "toolong"));
    /* to a directory, relative through it */
    OK(mkdir("dir", 0755));
    OK(write_file("dir/inside", "in dir", 0644));
    OK(symlink("dir", "ldir"));
    CONTENT("ldir/inside", "in dir");
    OK(symlink("../target", "dir/up"));
    CONTENT("dir/up", "pointed at");
    /* unlink removes the link, not the target */
    OK(unlink("l"));
    CONTENT("target", "pointed at");
    /* owner of the link itself */
    OK(fchownat(AT_FDCWD, "ldir", 1000, 1000, AT_SYMLINK_NOFOLLOW));
    OK(lstat("ldir", &st));
    EQ(1000, st.st_uid);
    OK(stat("ldir", &st));
    EQ(0, st.st_uid);
    leave();
}

static void t_special(void)
{
    struct stat st;
    char buf[8] = {0};
    enter("special");
    OK(mkfifo("fifo", 0640));
    OK(lstat("fifo", &st));
    TRUE(S_ISFIFO(st.st_mode), "mkfifo: not S_IFIFO (0%o)", st.st_mode);
    EQ_OCT(0640, st.st_mode & 07777);
    int fd = OK(open("fifo", O_RDWR | O_NONBLOCK));
    if (fd >= 0) {
        EQ(2, write(fd, "hi", 2));
        EQ(2, read(fd, buf, sizeof buf));
        TRUE(memcmp(buf, "hi", 2) == 0, "fifo read back \"%s\"", buf);
        close(fd);
    }
    OK(mknod("sock", S_IFSOCK | 0644, 0));
    OK(lstat("sock", &st));
    TRUE(S_ISSOCK(st.st_mode), "mknod S_IFSOCK: not a socket (0%o)", st.st_mode);
    OK(mknod("chr", S_IFCHR | 0600, makedev(1, 3)));
    OK(lstat("chr", &st));
    TRUE(S_ISCHR(st.st_mode), "mknod S_IFCHR: not a char device (0%o)", st.st_mode);
    EQ(makedev(1, 3), st.st_rdev);
    OK(mknod("blk", S_IFBLK | 0600, makedev(7, 42)));
    OK(lstat("blk", &st));
    TRUE(S_ISBLK(st.st_mode), "mknod S_IFBLK: not a block device (0%o)", st.st_mode);
    EQ(makedev(7, 42), st.st_rdev);
    OK(mknod("reg", S_IFREG | 0600, 0));
    OK(lstat("reg", &st));
    TRUE(S_ISREG(st.st_mode) && st.st_size == 0, "mknod S_IFREG: not an empty file");
    OK(rename("fifo", "fifo2"));
    OK(lstat("fifo2", &st));
    TRUE(S_ISFIFO(st.st_mode), "renamed fifo is no longer a fifo");
    OK(unlink("fifo2"));
    OK(unlink("sock"));
    leave();
}

static void t_times(void)
{
    struct stat st, st2;
    struct timespec ts[2], mark;
    enter("times");
    OK(write_file("f", "x", 0644));
    ts[0] = (struct timespec){1000000000, 123456789};
    ts[1] = (struct timespec){1200000000, 987654321};
    OK(utimensat(AT_FDCWD, "f", ts, 0));
    OK(stat("f", &st));
    EQ(1000000000, st.st_atim.tv_sec);
    EQ(123456789, st.st_atim.tv_nsec);
    EQ(1200000000, st.st_mtim.tv_sec);
    EQ(987654321, st.st_mtim.tv_nsec);
    /* UTIME_OMIT leaves one alone */
    ts[0] = (struct timespec){0, UTIME_OMIT};
    ts[1] = (struct timespec){1300000000, 5};
    OK(utimensat(AT_FDCWD, "f", ts, 0));
    OK(stat("f", &st));
    EQ(1000000000, st.st_atim.tv_sec);
    EQ(123456789, st.st_atim.tv_nsec);
    EQ(1300000000, st.st_mtim.tv_sec);
    EQ(5, st.st_mtim.tv_nsec);
    /* UTIME_NOW */
    mark = coarse_now();
    ts[0] = (struct timespec){0, UTIME_OMIT};
    ts[1] = (struct timespec){0, UTIME_NOW};
    OK(utimensat(AT_FDCWD, "f", ts, 0));
    OK(stat("f", &st));
    EQ(1000000000, st.st_atim.tv_sec);
    TRUE(ts_ge(st.st_mtim, mark) && st.st_mtim.tv_sec <= mark.tv_sec + 5,
         "UTIME_NOW: mtime %lld.%09ld is not now (%lld)", (long long)st.st_mtim.tv_sec,
         st.st_mtim.tv_nsec, (long long)mark.tv_sec);
    mark = coarse_now();
    OK(utimensat(AT_FDCWD, "f", NULL, 0));
    OK(stat("f", &st));
    TRUE(ts_ge(st.st_atim, mark) && ts_ge(st.st_mtim, mark), "utimensat(NULL) did not set now");
    ts[0] = (struct timespec){1, 1000000000};
    ts[1] = (struct timespec){1, 0};
    ERR(EINVAL, utimensat(AT_FDCWD, "f", ts, 0));
    /* futimens */
    int fd = OK(open("f", O_RDWR));
    if (fd >= 0) {
        ts[0] = ts[1] = (struct timespec){1400000000, 0};
        OK(futimens(fd, ts));
        OK(fstat(fd, &st));
        EQ(1400000000, st.st_mtim.tv_sec);
        /* a write moves mtime (and ctime) to now */
        mark = coarse_now();
        EQ(3, pwrite(fd, "abc", 3, 1));
        OK(fstat(fd, &st));
        TRUE(ts_ge(st.st_mtim, mark), "write did not update mtime (%lld)",
             (long long)st.st_mtim.tv_sec);
        TRUE(ts_ge(st.st_ctim, mark), "write did not update ctime (%lld)",
             (long long)st.st_ctim.tv_sec);
        /* so does a truncate */
        OK(futimens(fd, ts));
        mark = coarse_now();
        OK(ftruncate(fd, 2));
        OK(fstat(fd, &st));
        TRUE(ts_ge(st.st_mtim, mark), "ftruncate did not update mtime");
        close(fd);
    }
    /* symlink's own times */
    OK(symlink("f", "l"));
    OK(set_times("f", 1100000000, 0));
    OK(set_times("l", 1500000000, AT_SYMLINK_NOFOLLOW));
    OK(lstat("l", &st));
    OK(stat("f", &st2));
    EQ(1500000000, st.st_mtim.tv_sec);
    EQ(1100000000, st2.st_mtim.tv_sec);
    /* a directory's mtime moves when entries come and go */
    OK(mkdir("d", 0755));
    OK(mkdir("e", 0755));
    OK(set_times("d", 1000000000, 0));
    mark = coarse_now();
    OK(write_file("d/new", "n", 0644));
    OK(stat("d", &st));
    TRUE(ts_ge(st.st_mtim, mark), "create did not update the directory's mtime");
    OK(set_times("d", 1000000000, 0));
    mark = coarse_now();
    OK(unlink("d/new"));
    OK(stat("d", &st));
    TRUE(ts_ge(st.st_mtim, mark), "unlink did not update the directory's mtime");
    OK(write_file("d/mv", "n", 0644));
    OK(set_times("d", 1000000000, 0));
    OK(set_times("e", 1000000000, 0));
    mark = coarse_now();
    OK(rename("d/mv", "e/mv"));
    OK(stat("d", &st));
    OK(stat("e", &st2));
    TRUE(ts_ge(st.st_mtim, mark) && ts_ge(st2.st_mtim, mark),
         "rename did not update both directories' mtimes");
    /* chmod moves ctime, not mtime */
    OK(set_times("f", 1100000000, 0));
    mark = coarse_now();
    OK(chmod("f", 0600));
    OK(stat("f", &st));
    EQ(1100000000, st.st_mtim.tv_sec);
    TRUE(ts_ge(st.st_ctim, mark), "chmod did not update ctime");
    leave();
}

static void t_modes(void)
{
    struct stat st;
    enter("modes");
    umask(022);
    int fd = OK(open("f", O_WRONLY | O_CREAT, 0666));
    if (fd >= 0)
        close(fd);
    EQ_OCT(0644, mode_of("f") & 07777);
    OK(mkdir("d", 0777));
    EQ_OCT(0755, mode_of("d") & 07777);
    umask(0);
    fd = OK(open("g", O_WRONLY | O_CREAT, 0666));
    if (fd >= 0)
        close(fd);
    EQ_OCT(0666, mode_of("g") & 07777);
    umask(022);
    OK(chmod("f", 0640));
    EQ_OCT(0640, mode_of("f") & 07777);
    OK(chmod("f", 04755));
    EQ_OCT(04755, mode_of("f") & 07777);
    OK(chmod("d", 01777));
    EQ_OCT(01777, mode_of("d") & 07777);
    fd = OK(open("g", O_RDONLY));
    if (fd >= 0) {
        OK(fchmod(fd, 0400));
        close(fd);
    }
    EQ_OCT(0400, mode_of("g") & 07777);
    /* chown */
    OK(chown("g", NOBODY_UID, NOBODY_GID));
    OK(stat("g", &st));
    EQ(NOBODY_UID, st.st_uid);
    EQ(NOBODY_GID, st.st_gid);
    OK(chown("g", -1, 1000));
    OK(stat("g", &st));
    EQ(NOBODY_UID, st.st_uid);
    EQ(1000, st.st_gid);
    /* chown of a set-user-id file clears the bit, even by root */
    OK(chmod("f", 06755));
    OK(chown("f", 1000, 1000));
    EQ_OCT(0755, mode_of("f") & 07777);
    /* a set-group-id directory hands its group (and the bit, to directories) down */
    OK(mkdir("sgid", 0755));
    OK(chown("sgid", 0, 1000));
    OK(chmod("sgid", 02775));
    OK(write_file("sgid/file", "x", 0644));
    OK(mkdir("sgid/sub", 0755));
    OK(stat("sgid/file", &st));
    EQ(1000, st.st_gid);
    OK(stat("sgid/sub", &st));
    EQ(1000, st.st_gid);
    TRUE(st.st_mode & S_ISGID, "subdirectory of a set-group-id dir lacks S_ISGID (0%o)",
         st.st_mode);
    /* access(2) as root: X_OK needs an x bit somewhere */
    OK(write_file("plain", "x", 0644));
    OK(access("plain", F_OK));
    OK(access("plain", R_OK | W_OK));
    ERR(EACCES, access("plain", X_OK));
    OK(chmod("plain", 0744));
    OK(access("plain", X_OK));
    leave();
}

static void t_truncate(void)
{
    char buf[64];
    struct stat st;
    enter("truncate");
    OK(write_file("f", "hello world", 0644));
    OK(truncate("f", 5));
    CONTENT("f", "hello");
    OK(truncate("f", 10));
    OK(stat("f", &st));
    EQ(10, st.st_size);
    int fd = OK(open("f", O_RDONLY));
    if (fd >= 0) {
        EQ(10, read(fd, buf, sizeof buf));
        TRUE(memcmp(buf, "hello", 5) == 0 && all_zero(buf + 5, 5), "grown file is not zero-filled");
        ERR(EINVAL, ftruncate(fd, 0));
        close(fd);
    }
    ERR(EINVAL, truncate("f", -1));
    fd = OK(open("f", O_WRONLY | O_TRUNC));
    if (fd >= 0)
        close(fd);
    OK(stat("f", &st));
    EQ(0, st.st_size);
    /* beyond the end: a hole of zeros */
    fd = OK(open("sparse", O_RDWR | O_CREAT, 0644));
    if (fd >= 0) {
        EQ(4, pwrite(fd, "tail", 4, 1 << 20));
        OK(fstat(fd, &st));
        EQ((1 << 20) + 4, st.st_size);
        EQ(64, pread(fd, buf, 64, 4096));
        TRUE(all_zero(buf, 64), "hole does not read as zeros");
        /* 64-bit offsets */
        off_t far = 5LL << 30;
        EQ(4, pwrite(fd, "five", 4, far));
        OK(fstat(fd, &st));
        EQ(far + 4, st.st_size);
        memset(buf, 0, sizeof buf);
        EQ(4, pread(fd, buf, 4, far));
        TRUE(memcmp(buf, "five", 4) == 0, "pread at 5 GiB: \"%s\"", buf);
        EQ(16, pread(fd, buf, 16, 4LL << 30));
        TRUE(all_zero(buf, 16), "hole at 4 GiB does not read as zeros");
        OK(ftruncate(fd, 0)); /* no 5 GiB file left for the commit to chew on */
        close(fd);
    }
    /* pieces across page boundaries */
    fd = OK(open("pages", O_RDWR | O_CREAT, 0644));
    if (fd >= 0) {
        EQ(6, pwrite(fd, "ABCDEF", 6, 4093));
        EQ(6, pread(fd, buf, 6, 4093));
        TRUE(memcmp(buf, "ABCDEF", 6) == 0, "read across a page boundary");
        EQ(0, write(fd, buf, 0));
        close(fd);
    }
    leave();
}

static void t_fallocate(void)
{
    char buf[8192];
    struct stat st;
    enter("fallocate");
    int fd = OK(open("f", O_RDWR | O_CREAT, 0644));
    if (fd < 0)
        goto out;
    OK(fallocate(fd, 0, 0, 1 << 20));
    OK(fstat(fd, &st));
    EQ(1 << 20, st.st_size);
    EQ(4096, pread(fd, buf, 4096, 12345));
    TRUE(all_zero(buf, 4096), "fallocated range does not read as zeros");
    OK(fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20));
    OK(fstat(fd, &st));
    EQ(1 << 20, st.st_size);
    ERR(EINVAL, fallocate(fd, 0, 0, 0));
    ERR(EINVAL, fallocate(fd, 0, -1, 10));
    memset(buf, 'd', sizeof buf);
    EQ(8192, pwrite(fd, buf, 8192, 0));
    errno = 0;
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096) == 0) {
        EQ(8192, pread(fd, buf, 8192, 0));
        TRUE(buf[0] == 'd' && buf[4095] == 'd' && all_zero(buf + 4096, 4096),
             "punched hole does not read as zeros");
        OK(fstat(fd, &st));
        EQ(1 << 20, st.st_size);
    } else {
        /* tolerated: not every file system punches holes */
        TRUE(errno == EOPNOTSUPP, "FALLOC_FL_PUNCH_HOLE: expected success or EOPNOTSUPP, got %s",
             err_name(errno));
        note("FALLOC_FL_PUNCH_HOLE is not supported (EOPNOTSUPP); ext4 supports it");
    }
    EQ(0, posix_fallocate(fd, 0, 3 << 20));
    OK(fstat(fd, &st));
    EQ(3 << 20, st.st_size);
    close(fd);
    fd = OK(open("f", O_RDONLY));
    if (fd >= 0) {
        ERR(EBADF, fallocate(fd, 0, 0, 4096));
        close(fd);
    }
out:
    leave();
}

static void t_lseek(void)
{
    char buf[4096];
    enter("lseek");
    int fd = OK(open("f", O_RDWR | O_CREAT, 0644));
    if (fd < 0)
        goto out;
    const off_t mib = 1 << 20;
    memset(buf, 'x', sizeof buf);
    for (off_t off = 0; off < 64 * 1024; off += 4096)
        EQ(4096, pwrite(fd, buf, 4096, off));
    EQ(4096, pwrite(fd, buf, 4096, mib));
    const off_t size = mib + 4096;
    EQ(size, lseek(fd, 0, SEEK_END));
    EQ(10, lseek(fd, 10, SEEK_SET));
    EQ(15, lseek(fd, 5, SEEK_CUR));
    ERR(EINVAL, lseek(fd, -1, SEEK_SET));
    EQ(0, lseek(fd, 0, SEEK_DATA));
    /* Tolerant: a file system may report all of the file as data, so a hole
     * is anywhere from the end of the written data to the end of the file. */
    off_t hole = lseek(fd, 0, SEEK_HOLE);
    TRUE(hole >= 64 * 1024 && hole <= size, "SEEK_HOLE from 0: %lld not in [64 KiB, size]",
         (long long)hole);
    off_t data = lseek(fd, 100 * 1024, SEEK_DATA);
    TRUE(data >= 100 * 1024 && data <= mib, "SEEK_DATA from 100 KiB: %lld not in [100 KiB, 1 MiB]",
         (long long)data);
    EQ(mib, lseek(fd, mib, SEEK_DATA));
    EQ(size, lseek(fd, mib, SEEK_HOLE));
    ERR(ENXIO, lseek(fd, size, SEEK_DATA));
    ERR(ENXIO, lseek(fd, size, SEEK_HOLE));
    ERR(ENXIO, lseek(fd, size + 10, SEEK_DATA));
    close(fd);
out:
    leave();
}

static bool list_has(const char *list, ssize_t len, const char *name)
{
    for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1)
        if (strcmp(list + i, name) == 0)
            return true;
    return false;
}

static void t_xattr(void)
{
    char buf[4096], list[4096], big[2000];
    const char bin[] = {'a', 0, 'b', 0, 0, 'c', '\xff', 0};
    enter("xattr");
    OK(write_file("f", "x", 0644));
    OK(mkdir("d", 0755));
    OK(symlink("f", "l"));
    OK(setxattr("f", "user.a", "value", 5, XATTR_CREATE));
    ERR(EEXIST, setxattr("f", "user.a", "other", 5, XATTR_CREATE));
    ERR(ENODATA, setxattr("f", "user.missing", "v", 1, XATTR_REPLACE));
    EQ(5, getxattr("f", "user.a", NULL, 0));
    ssize_t n = OK(getxattr("f", "user.a", buf, sizeof buf));
    TRUE(n == 5 && memcmp(buf, "value", 5) == 0, "getxattr user.a: %zd bytes", n);
    ERR(ERANGE, getxattr("f", "user.a", buf, 2));
    OK(setxattr("f", "user.a", "replaced", 8, XATTR_REPLACE));
    n = OK(getxattr("f", "user.a", buf, sizeof buf));
    TRUE(n == 8 && memcmp(buf, "replaced", 8) == 0, "XATTR_REPLACE did not replace");
    OK(setxattr("f", "user.bin", bin, sizeof bin, 0));
    n = OK(getxattr("f", "user.bin", buf, sizeof buf));
    TRUE(n == (ssize_t)sizeof bin && memcmp(buf, bin, sizeof bin) == 0,
         "binary value with NULs did not round-trip");
    OK(setxattr("f", "user.empty", "", 0, 0));
    EQ(0, getxattr("f", "user.empty", buf, sizeof buf));
    memset(big, 'B', sizeof big);
    OK(setxattr("f", "user.big", big, sizeof big, 0));
    n = OK(getxattr("f", "user.big", buf, sizeof buf));
    TRUE(n == (ssize_t)sizeof big && memcmp(buf, big, sizeof big) == 0,
         "2000-byte value did not round-trip");
    ssize_t len = OK(listxattr("f", list, sizeof list));
    EQ(len, listxattr("f", NULL, 0));
    TRUE(len > 0 && list_has(list, len, "user.a") && list_has(list, len, "user.bin") &&
             list_has(list, len, "user.empty") && list_has(list, len, "user.big"),
         "listxattr misses a name");
    ERR(ERANGE, listxattr("f", list, 3));
    OK(removexattr("f", "user.a"));
    ERR(ENODATA, getxattr("f", "user.a", buf, sizeof buf));
    ERR(ENODATA, removexattr("f", "user.a"));
    len = OK(listxattr("f", list, sizeof list));
    TRUE(!list_has(list, len, "user.a"), "listxattr still lists a removed name");
    /* kept across a rename */
    OK(rename("f", "g"));
    n = OK(getxattr("g", "user.bin", buf, sizeof buf));
    EQ(sizeof bin, n);
    /* directories take user xattrs, symlinks do not */
    OK(setxattr("d", "user.dir", "dv", 2, 0));
    EQ(2, getxattr("d", "user.dir", buf, sizeof buf));
    ERR(EPERM, lsetxattr("l", "user.x", "v", 1, 0));
    ERR(ENODATA, lgetxattr("l", "user.x", buf, sizeof buf));
    /* unknown namespace */
    ERR(EOPNOTSUPP, setxattr("g", "nonsense.x", "v", 1, 0));
    /* fd calls */
    int fd = OK(open("g", O_RDONLY));
    if (fd >= 0) {
        OK(fsetxattr(fd, "user.fd", "f", 1, 0));
        EQ(1, fgetxattr(fd, "user.fd", buf, sizeof buf));
        OK(fremovexattr(fd, "user.fd"));
        close(fd);
    }
    leave();
}

/* Waits (bounded) until pid sleeps in the kernel, i.e. blocks on the lock. */
static void wait_blocked(pid_t pid)
{
    char path[64], stat_line[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            bool sleeping = false;
            if (fgets(stat_line, sizeof stat_line, f)) {
                char *paren = strrchr(stat_line, ')');
                sleeping = paren && paren[1] == ' ' && paren[2] == 'S';
            }
            fclose(f);
            if (sleeping)
                return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void t_locks(void)
{
    enter("locks");
    OK(write_file("f", "lock me", 0644));
    int fd1 = OK(open("f", O_RDWR));
    int fd2 = OK(open("f", O_RDWR));
    if (fd1 < 0 || fd2 < 0)
        goto out;
    /* flock: per open file description */
    OK(flock(fd1, LOCK_EX));
    ERR(EWOULDBLOCK, flock(fd2, LOCK_EX | LOCK_NB));
    ERR(EWOULDBLOCK, flock(fd2, LOCK_SH | LOCK_NB));
    OK(flock(fd1, LOCK_UN));
    OK(flock(fd2, LOCK_EX | LOCK_NB));
    OK(flock(fd2, LOCK_UN));
    OK(flock(fd1, LOCK_SH | LOCK_NB));
    OK(flock(fd2, LOCK_SH | LOCK_NB));
    OK(flock(fd1, LOCK_UN));
    OK(flock(fd2, LOCK_UN));

    /* OFD locks */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    OK(fcntl(fd1, F_OFD_SETLK, &fl));
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 10};
    ERR(EAGAIN, fcntl(fd2, F_OFD_SETLK, &fl));
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 10};
    OK(fcntl(fd2, F_OFD_GETLK, &fl));
    TRUE(fl.l_type == F_WRLCK && fl.l_start == 0 && fl.l_len == 10 && fl.l_pid == -1,
         "F_OFD_GETLK: got type %d start %lld len %lld pid %d", fl.l_type, (long long)fl.l_start,
         (long long)fl.l_len, fl.l_pid);
    fl = (struct flock){.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    OK(fcntl(fd1, F_OFD_SETLK, &fl));

    /* POSIX record locks between processes */
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
    OK(fcntl(fd1, F_SETLK, &fl));
    int to_parent[2];
    if (pipe(to_parent) != 0)
        goto out;
    fflush(stdout);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        alarm(30);
        failures = 0;
        int fd = OK(open("f", O_RDWR));
        struct flock c = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 10};
        ERR(EAGAIN, fcntl(fd, F_SETLK, &c));
        c = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 50, .l_len = 10};
        OK(fcntl(fd, F_GETLK, &c));
        TRUE(c.l_type == F_WRLCK && c.l_start == 0 && c.l_len == 100 && c.l_pid == parent,
             "F_GETLK: got type %d start %lld len %lld pid %d (parent %d)", c.l_type,
             (long long)c.l_start, (long long)c.l_len, c.l_pid, (int)parent);
        c = (struct flock){.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 10};
        OK(fcntl(fd, F_SETLK, &c));
        if (write(to_parent[1], "w", 1) != 1)
            _exit(99);
        c = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
        OK(fcntl(fd, F_SETLKW, &c)); /* blocks until the parent unlocks */
        _exit(failures ? 1 : 0);
    }
    char byte;
    if (child > 0 && read(to_parent[0], &byte, 1) == 1) {
        wait_blocked(child);
        fl = (struct flock){.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100};
        OK(fcntl(fd1, F_SETLK, &fl));
    }
    int status = 0;
    if (child > 0)
        waitpid(child, &status, 0);
    TRUE(child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
         "POSIX lock child failed (status 0x%x; see its lines above)", status);
    close(to_parent[0]);
    close(to_parent[1]);

    /* POSIX locks go away when the process closes any fd of the file */
    fl = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    OK(fcntl(fd1, F_SETLK, &fl));
    int fd3 = OK(open("f", O_RDONLY));
    if (fd3 >= 0)
        close(fd3);
    fflush(stdout);
    child = fork();
    if (child == 0) {
        int fd = open("f", O_RDWR);
        struct flock c = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
        _exit(fd >= 0 && fcntl(fd, F_SETLK, &c) == 0 ? 0 : 1);
    }
    status = 0;
    if (child > 0)
        waitpid(child, &status, 0);
    TRUE(child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
         "closing another fd of the file did not release the POSIX lock");
out:
    if (fd1 >= 0)
        close(fd1);
    if (fd2 >= 0)
        close(fd2);
    leave();
}

static void t_links(bool links_allowed)
{
    struct stat st;
    enter("links");
    OK(write_file("f", "linked", 0644));
    OK(mkdir("d", 0755));
    if (links_allowed) {
        OK(link("f", "g"));
        OK(stat("f", &st));
        EQ(2, st.st_nlink);
        CONTENT("g", "linked");
        OK(unlink("f"));
        OK(stat("g", &st));
        EQ(1, st.st_nlink);
    } else {
        ERR(EPERM, link("f", "g"));
        TRUE(!exists("g"), "a refused link() left a name behind");
        OK(stat("f", &st));
        EQ(1, st.st_nlink);
        ERR(EPERM, linkat(AT_FDCWD, "f", AT_FDCWD, "h", 0));
    }
    ERR(EPERM, link("d", "d2"));
    leave();
}

static void t_unlinked_open(void)
{
    char buf[64];
    struct stat st;
    enter("unlinked-open");
    int fd = OK(open("f", O_RDWR | O_CREAT, 0644));
    if (fd >= 0) {
        EQ(3, write(fd, "abc", 3));
        OK(unlink("f"));
        ERR(ENOENT, stat("f", &st));
        OK(fstat(fd, &st));
        EQ(0, st.st_nlink);
        EQ(3, pwrite(fd, "xyz", 3, 3));
        memset(buf, 0, sizeof buf);
        EQ(6, pread(fd, buf, sizeof buf, 0));
        TRUE(strcmp(buf, "abcxyz") == 0, "unlinked file reads \"%s\"", buf);
        OK(fstat(fd, &st));
        EQ(6, st.st_size);
        close(fd);
    }
    /* the name is free again at once */
    OK(write_file("f", "new", 0644));
    CONTENT("f", "new");
    /* a removed directory takes no new entries */
    OK(mkdir("gone", 0755));
    int dfd = OK(open("gone", O_RDONLY | O_DIRECTORY));
    OK(rmdir("gone"));
    if (dfd >= 0) {
        ERR(ENOENT, openat(dfd, "x", O_WRONLY | O_CREAT, 0644));
        close(dfd);
    }
    leave();
}

static void t_io(void)
{
    char buf[256 * 1024], back[256 * 1024];
    struct stat st;
    enter("io");
    OK(write_file("f", "ab", 0644));
    int fd = OK(open("f", O_WRONLY | O_APPEND));
    if (fd >= 0) {
        EQ(2, write(fd, "cd", 2));
        EQ(1, pwrite(fd, "e", 1, 0)); /* Linux: pwrite on O_APPEND appends */
        ERR(EBADF, read(fd, buf, 1));
        close(fd);
    }
    CONTENT("f", "abcde");
    fd = OK(open("f", O_RDONLY));
    if (fd >= 0) {
        ERR(EBADF, write(fd, "x", 1));
        close(fd);
    }
    /* a larger write, read back exactly, with odd sizes */
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)(i * 7 + i / 4096);
    fd = OK(open("big", O_RDWR | O_CREAT | O_TRUNC, 0644));
    if (fd >= 0) {
        EQ(sizeof buf, write(fd, buf, sizeof buf));
        OK(fsync(fd));
        OK(fdatasync(fd));
        EQ(sizeof buf - 1001, pread(fd, back, sizeof back, 1001));
        TRUE(memcmp(buf + 1001, back, sizeof buf - 1001) == 0, "large pread differs");
        /* copy_file_range (cp uses it) */
        int out = OK(open("copy", O_WRONLY | O_CREAT | O_TRUNC, 0644));
        if (out >= 0) {
            off_t in_off = 0;
            ssize_t copied = 0, n;
            while (copied < (ssize_t)sizeof buf &&
                   (n = copy_file_range(fd, &in_off, out, NULL, sizeof buf - (size_t)copied, 0)) >
                       0)
                copied += n;
            EQ(sizeof buf, copied);
            close(out);
            int in = OK(open("copy", O_RDONLY));
            if (in >= 0) {
                EQ(sizeof buf, pread(in, back, sizeof back, 0));
                TRUE(memcmp(buf, back, sizeof buf) == 0, "copy_file_range copy differs");
                close(in);
            }
        }
        close(fd);
    }
    OK(stat("big", &st));
    EQ(sizeof buf, st.st_size);
    TRUE(st.st_blksize > 0, "st_blksize is 0");
    /* fsync of a directory */
    int dfd = OK(open(".", O_RDONLY | O_DIRECTORY));
    if (dfd >= 0) {
        OK(fsync(dfd));
        close(dfd);
    }
    struct statfs sfs;
    OK(statfs(".", &sfs));
    EQ(255, sfs.f_namelen);
    TRUE(sfs.f_bsize > 0 && sfs.f_blocks > 0, "statfs: bsize %ld blocks %llu", (long)sfs.f_bsize,
         (unsigned long long)sfs.f_blocks);
    leave();
}

static void t_readdir(void)
{
    struct stat st;
    enter("readdir");
    OK(write_file("reg", "x", 0644));
    OK(mkdir("dir", 0755));
    OK(mkdir("dir2", 0755));
    OK(symlink("reg", "lnk"));
    OK(mkfifo("fifo", 0644));
    char name[32];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "n%02d", i);
        OK(write_file(name, name, 0644));
    }
    int seen[50] = {0};
    int dot = 0, dotdot = 0, other = 0, bad_type = 0, bad_ino = 0;
    DIR *dir = opendir(".");
    TRUE(dir != NULL, "opendir: %s", err_name(errno));
    if (!dir)
        goto out;
    struct dirent *de;
    while ((de = readdir(dir))) {
        unsigned char want = DT_UNKNOWN;
        if (strcmp(de->d_name, ".") == 0)
            dot++;
        else if (strcmp(de->d_name, "..") == 0)
            dotdot++;
        else if (de->d_name[0] == 'n' && strlen(de->d_name) == 3) {
            seen[atoi(de->d_name + 1)]++;
            want = DT_REG;
        } else if (strcmp(de->d_name, "reg") == 0)
            want = DT_REG;
        else if (strncmp(de->d_name, "dir", 3) == 0)
            want = DT_DIR;
        else if (strcmp(de->d_name, "lnk") == 0)
            want = DT_LNK;
        else if (strcmp(de->d_name, "fifo") == 0)
            want = DT_FIFO;
        else
            other++;
        if (want != DT_UNKNOWN && de->d_type != want) {
            bad_type++;
            printf("  d_type of %s: expected %d, got %d\n", de->d_name, want, de->d_type);
        }
        if (want != DT_UNKNOWN && lstat(de->d_name, &st) == 0 && st.st_ino != de->d_ino) {
            bad_ino++;
            printf("  d_ino of %s: %llu, st_ino %llu\n", de->d_name, (unsigned long long)de->d_ino,
                   (unsigned long long)st.st_ino);
        }
    }
    EQ(1, dot);
    EQ(1, dotdot);
    EQ(0, other);
    EQ(0, bad_type);
    EQ(0, bad_ino);
    int once = 0;
    for (int i = 0; i < 50; i++)
        once += seen[i] == 1;
    EQ(50, once);
    /* telldir/seekdir: the rest of the listing is the same from a mark */
    rewinddir(dir);
    for (int i = 0; i < 20; i++)
        readdir(dir);
    long mark = telldir(dir);
    char first[3][256];
    for (int i = 0; i < 3; i++) {
        de = readdir(dir);
        snprintf(first[i], sizeof first[i], "%s", de ? de->d_name : "");
    }
    seekdir(dir, mark);
    for (int i = 0; i < 3; i++) {
        de = readdir(dir);
        TRUE(de && strcmp(de->d_name, first[i]) == 0, "seekdir: expected %s, got %s", first[i],
             de ? de->d_name : "(end)");
    }
    /* an entry made after opendir shows after rewinddir */
    OK(write_file("late", "x", 0644));
    rewinddir(dir);
    bool late = false;
    while ((de = readdir(dir)))
        late |= strcmp(de->d_name, "late") == 0;
    TRUE(late, "rewinddir does not show an entry created since opendir");
    closedir(dir);
    /* an empty directory lists . and .. only */
    OK(mkdir("empty", 0755));
    dir = opendir("empty");
    int count = 0;
    while (dir && (de = readdir(dir)))
        count++;
    if (dir)
        closedir(dir);
    EQ(2, count);
    /* Tolerant: ext4 counts 2 + subdirectories; 1 means "not counted". */
    OK(stat(".", &st));
    TRUE(st.st_nlink == 5 || st.st_nlink == 1, "link count of a dir with 3 subdirs: %lu",
         (unsigned long)st.st_nlink);
out:
    leave();
}

/* ---- permissions -------------------------------------------------------- */

static int drop_dac_caps(void)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0)
        return -1;
    const int drop[] = {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++) {
        data[drop[i] / 32].effective &= ~(1u << (drop[i] % 32));
        data[drop[i] / 32].permitted &= ~(1u << (drop[i] % 32));
    }
    return (int)syscall(SYS_capset, &header, data);
}

static int become_nobody(void)
{
    if (setgroups(0, NULL) != 0 || setgid(NOBODY_GID) != 0 || setuid(NOBODY_UID) != 0)
        return -1;
    return 0;
}

/* Files the permission children work on; made by root in "perm/". */
static void perm_setup(void)
{
    OK(mkdir("perm", 0755));
    OK(write_file("perm/root600", "root600", 0600));
    OK(write_file("perm/root644", "root644", 0644));
    OK(write_file("perm/root000", "root000", 0000));
    OK(chmod("perm/root000", 0000));
    OK(write_file("perm/nobody600", "nobody600", 0600));
    OK(chown("perm/nobody600", NOBODY_UID, NOBODY_GID));
    OK(write_file("perm/nobody644", "nobody644", 0644));
    OK(chown("perm/nobody644", NOBODY_UID, NOBODY_GID));
    OK(mkdir("perm/nobodydir", 0755));
    OK(write_file("perm/nobodydir/x", "x", 0644));
    OK(chown("perm/nobodydir", NOBODY_UID, NOBODY_GID));
    OK(mkdir("perm/open", 0777));
    OK(chmod("perm/open", 0777));
    OK(mkdir("perm/private", 0700));
    OK(write_file("perm/private/f", "p", 0644));
    /* sticky, owned by a third user, holding a fourth user's file */
    OK(mkdir("perm/sticky", 0755));
    OK(chmod("perm/sticky", 01777));
    OK(chown("perm/sticky", OTHER2_UID, OTHER2_UID));
    OK(write_file("perm/sticky/theirs", "t", 0644));
    OK(chown("perm/sticky/theirs", OTHER_UID, OTHER_UID));
    /* set-ID files a caller without CAP_FSETID writes to */
    OK(mkdir("perm/setid", 0755));
    const struct {
        const char *name;
        mode_t mode;
    } setid[] = {{"perm/setid/suid", 04777},     {"perm/setid/sgid-x", 02777},
                 {"perm/setid/sgid-nox", 02767}, {"perm/setid/trunc", 06777},
                 {"perm/setid/otrunc", 04777},   {"perm/setid/kept", 04777}};
    for (size_t i = 0; i < sizeof setid / sizeof setid[0]; i++) {
        OK(write_file(setid[i].name, "setid", 0644));
        OK(chmod(setid[i].name, setid[i].mode));
    }
}

/* Runs fn in a child (so privileges can be dropped); its checks count here. */
static void in_child(const char *name, void (*fn)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        section = name;
        failures = 0;
        checks = 0;
        alarm(60);
        fn();
        printf("# [%s] %d checks, %d failed\n", name, checks, failures);
        fflush(stdout);
        _exit(failures > 250 ? 250 : failures);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        printf("FAIL [%s]: child did not exit normally (status 0x%x)\n", name, status);
        failures++;
        return;
    }
    failures += WEXITSTATUS(status);
}

/* Opens `path` with `flags` and writes one byte through it. */
static void write_one_byte(const char *path, int flags)
{
    int fd = OK(open(path, flags));
    if (fd >= 0) {
        EQ(1, write(fd, "w", 1));
        close(fd);
    }
}

static void perm_as_root_without_caps(void)
{
    struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
    if (drop_dac_caps() != 0) {
        printf("FAIL [%s]: capset: %s\n", section, strerror(errno));
        failures++;
        return;
    }
    ERR(EACCES, open("perm/root000", O_RDONLY)); /* owner, but no owner bits */
    TRUE(can_open("perm/root644", O_RDWR), "owner with rw bits cannot open O_RDWR: %s",
         err_name(errno));
    ERR(EACCES, open("perm/nobody600", O_RDONLY));
    ERR(EACCES, open("perm/nobody644", O_WRONLY));
    TRUE(can_open("perm/nobody644", O_RDONLY), "others with an r bit cannot read: %s",
         err_name(errno));
    ERR(EACCES, open("perm/nobodydir/new", O_WRONLY | O_CREAT, 0644));
    ERR(EACCES, unlink("perm/nobodydir/x"));
    ERR(EACCES, mkdir("perm/nobodydir/sub", 0755));
    ERR(EACCES, rename("perm/nobodydir/x", "perm/open/x"));
    ERR(EPERM, chmod("perm/nobody600", 0644));
    ERR(EPERM, utimensat(AT_FDCWD, "perm/nobody644", ts, 0));
    ERR(EACCES, utimensat(AT_FDCWD, "perm/nobody644", NULL, 0));
    ERR(EACCES, truncate("perm/nobody644", 0));
    ERR(EACCES, access("perm/nobody600", R_OK));
    ERR(EPERM, unlink("perm/sticky/theirs"));
    ERR(EPERM, rename("perm/sticky/theirs", "perm/sticky/mine"));
    int fd = OK(open("perm/open/mine", O_WRONLY | O_CREAT, 0644));
    if (fd >= 0)
        close(fd);
    struct stat st;
    OK(stat("perm/open/mine", &st));
    EQ(0, st.st_uid);
    OK(unlink("perm/open/mine"));
    /*
     * Without CAP_FSETID a write kills set-user-ID, and set-group-ID when
     * group execute is set; so do truncate and O_TRUNC. Reading does not.
     */
    write_one_byte("perm/setid/suid", O_WRONLY | O_APPEND);
    EQ_OCT(0777, mode_of("perm/setid/suid") & 07777);
    write_one_byte("perm/setid/sgid-x", O_RDWR);
    EQ_OCT(0777, mode_of("perm/setid/sgid-x") & 07777);
    write_one_byte("perm/setid/sgid-nox", O_WRONLY | O_APPEND);
    EQ_OCT(02767, mode_of("perm/setid/sgid-nox") & 07777);
    OK(truncate("perm/setid/trunc", 2));
    EQ_OCT(0777, mode_of("perm/setid/trunc") & 07777);
    write_one_byte("perm/setid/otrunc", O_WRONLY | O_TRUNC);
    EQ_OCT(0777, mode_of("perm/setid/otrunc") & 07777);
    CONTENT("perm/setid/kept", "setid");
    EQ_OCT(04777, mode_of("perm/setid/kept") & 07777);
}

static void perm_as_nobody(void)
{
    struct stat st;
    if (become_nobody() != 0) {
        printf("FAIL [%s]: cannot become nobody: %s\n", section, strerror(errno));
        failures++;
        return;
    }
    errno = 0;
    if (stat("perm", &st) != 0) {
        printf("FAIL [%s]: uid nobody cannot stat perm/ (%s): other users cannot reach this "
               "directory; a root-mounted FUSE file system needs allow_other for them\n",
               section, err_name(errno));
        failures++;
        return;
    }
    CONTENT("perm/root644", "root644");
    ERR(EACCES, open("perm/root644", O_WRONLY));
    ERR(EACCES, open("perm/root600", O_RDONLY));
    ERR(EACCES, open("perm/new", O_WRONLY | O_CREAT, 0644));
    ERR(EACCES, mkdir("perm/newdir", 0755));
    ERR(EACCES, unlink("perm/root644"));
    ERR(EACCES, rename("perm/root644", "perm/open/stolen"));
    ERR(EACCES, truncate("perm/root644", 0));
    ERR(EACCES, stat("perm/private/f", &st));
    ERR(EACCES, access("perm/root600", R_OK));
    ERR(EACCES, access("perm/root644", W_OK));
    ERR(EPERM, chmod("perm/root644", 0666));
    ERR(EPERM, unlink("perm/sticky/theirs"));
    /* what nobody may do, and who owns what it makes */
    int fd = OK(open("perm/open/by-nobody", O_WRONLY | O_CREAT, 0644));
    if (fd >= 0) {
        EQ(1, write(fd, "n", 1));
        close(fd);
    }
    OK(stat("perm/open/by-nobody", &st));
    EQ(NOBODY_UID, st.st_uid);
    EQ(NOBODY_GID, st.st_gid);
    OK(chmod("perm/open/by-nobody", 0600));
    ERR(EPERM, chown("perm/open/by-nobody", 0, 0));
    OK(mkdir("perm/open/nobody-dir", 0755));
    OK(stat("perm/open/nobody-dir", &st));
    EQ(NOBODY_UID, st.st_uid);
    /* perm/ is root's 0755: owning the file is not enough to remove it */
    ERR(EACCES, unlink("perm/nobody644"));
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    bool links_allowed = true, other_users = false;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--links=eperm") == 0)
            links_allowed = false;
        else if (strcmp(argv[i], "--links=allowed") == 0)
            links_allowed = true;
        else if (strcmp(argv[i], "--other-users") == 0)
            other_users = true;
        else if (strcmp(argv[i], "-v") == 0)
            verbose = true;
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else {
            fprintf(stderr,
                    "usage: posix_check [--links=eperm|allowed] [--other-users] [-v] DIR\n");
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: posix_check [--links=eperm|allowed] [--other-users] [-v] DIR\n");
        return 2;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "posix_check: must run as root (chown, mknod, the permission checks)\n");
        return 2;
    }
    if (chdir(dir) != 0) {
        fprintf(stderr, "posix_check: cannot enter %s: %s\n", dir, strerror(errno));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    umask(022);

    t_enoent();
    t_eexist();
    t_enotempty();
    t_eisdir();
    t_enotdir();
    t_enametoolong();
    t_einval_into_itself();
    t_rename();
    t_symlink();
    t_special();
    t_times();
    t_modes();
    t_truncate();
    t_fallocate();
    t_lseek();
    t_xattr();
    t_locks();
    t_links(links_allowed);
    t_unlinked_open();
    t_io();
    t_readdir();

    section = "perm";
    perm_setup();
    in_child("perm-root-without-dac-caps", perm_as_root_without_caps);
    if (other_users)
        in_child("perm-nobody", perm_as_nobody);
    else
        note("checks as uid nobody skipped (no --other-users)");

    printf("posix_check: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
