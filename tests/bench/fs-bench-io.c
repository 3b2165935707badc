/*
 * tests/bench/fs-bench-io.c: the timed inner loops of tests/bench/fs-bench,
 * in C so that what is measured is the file system, not a shell's or
 * Python's overhead. Each command does its work, then prints the seconds it
 * took (CLOCK_MONOTONIC, %.6f) on stdout; errors go to stderr, exit 1.
 *
 *     fs-bench-io create DIR N SIZE      N files of SIZE bytes, 100 per subdirectory
 *     fs-bench-io stat DIR N             lstat each of them (checks the size)
 *     fs-bench-io write FILE MIB         1 MiB writes of pseudo-random data, fsync
 *     fs-bench-io read FILE              1 MiB reads to the end
 *     fs-bench-io randread FILE COUNT    4 KiB preads at random 4 KiB-aligned offsets
 *     fs-bench-io saves DIR N SIZE       N saves of DIR/file.txt (SIZE bytes of text):
 *                                        write .file.txt.tmp, close, rename over;
 *                                        fsync of the result at the end
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what, const char *path)
{
    fprintf(stderr, "fs-bench-io: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void write_all(int fd, const char *buf, size_t len, const char *path)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("write", path);
        buf += n;
        len -= (size_t)n;
    }
}

static void file_name(char *out, size_t size, const char *dir, long i)
{
    snprintf(out, size, "%s/d%03ld/f%05ld", dir, i / 100, i);
}

static int cmd_create(const char *dir, long count, long size)
{
    char path[4096], *content = malloc((size_t)size + 1);
    memset(content, 'c', (size_t)size);
    double start = now();
    for (long i = 0; i < count; i++) {
        if (i % 100 == 0) {
            snprintf(path, sizeof path, "%s/d%03ld", dir, i / 100);
            if (mkdir(path, 0755) != 0)
                die("mkdir", path);
        }
        file_name(path, sizeof path, dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0)
            die("create", path);
        write_all(fd, content, (size_t)size, path);
        if (close(fd) != 0)
            die("close", path);
    }
    printf("%.6f\n", now() - start);
    free(content);
    return 0;
}

static int cmd_stat(const char *dir, long count)
{
    char path[4096];
    struct stat st;
    off_t expected = -1;
    double start = now();
    for (long i = 0; i < count; i++) {
        file_name(path, sizeof path, dir, i);
        if (lstat(path, &st) != 0)
            die("lstat", path);
        if (expected < 0)
            expected = st.st_size;
        if (st.st_size != expected) {
            fprintf(stderr, "fs-bench-io: %s: size %lld, expected %lld\n", path,
                    (long long)st.st_size, (long long)expected);
            return 1;
        }
    }
    printf("%.6f\n", now() - start);
    return 0;
}

static int cmd_write(const char *path, long mib)
{
    uint64_t *block = malloc(MIB), state = 0x5eed;
    double start = now();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("open", path);
    for (long i = 0; i < mib; i++) {
        for (size_t w = 0; w < MIB / sizeof *block; w++)
            block[w] = next_random(&state);
        write_all(fd, (const char *)block, MIB, path);
    }
    if (fsync(fd) != 0)
        die("fsync", path);
    if (close(fd) != 0)
        die("close", path);
    printf("%.6f\n", now() - start);
    free(block);
    return 0;
}

static int cmd_read(const char *path)
{
    char *block = malloc(MIB);
    unsigned long long total = 0, sum = 0;
    double start = now();
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("open", path);
    ssize_t n;
    while ((n = read(fd, block, MIB)) > 0) {
        total += (unsigned long long)n;
        sum += (unsigned char)block[n - 1];
    }
    if (n < 0)
        die("read", path);
    close(fd);
    printf("%.6f\n", now() - start);
    fprintf(stderr, "fs-bench-io: read %llu bytes (check %llu)\n", total, sum);
    free(block);
    return 0;
}

static int cmd_randread(const char *path, long count)
{
    char block[4096];
    uint64_t state = 0x4a4d, sum = 0;
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        die("open", path);
    uint64_t pages = (uint64_t)st.st_size / sizeof block;
    if (pages == 0) {
        fprintf(stderr, "fs-bench-io: %s is smaller than 4 KiB\n", path);
        return 1;
    }
    double start = now();
    for (long i = 0; i < count; i++) {
        off_t off = (off_t)(next_random(&state) % pages * sizeof block);
        if (pread(fd, block, sizeof block, off) != (ssize_t)sizeof block)
            die("pread", path);
        sum += (unsigned char)block[i % sizeof block];
    }
    printf("%.6f\n", now() - start);
    fprintf(stderr, "fs-bench-io: %ld random reads (check %llu)\n", count, (unsigned long long)sum);
    close(fd);
    return 0;
}

static int cmd_saves(const char *dir, long count, long size)
{
    char tmp[4096], target[4096], *text = malloc((size_t)size);
    snprintf(tmp, sizeof tmp, "%s/.file.txt.tmp", dir);
    snprintf(target, sizeof target, "%s/file.txt", dir);
    /* lines of text; each save changes one line, as an edit would */
    for (long i = 0; i < size; i++)
        text[i] = i % 64 == 63 ? '\n' : (char)('a' + i % 26);
    double start = now();
    for (long save = 0; save < count; save++) {
        char stamp[32];
        int len = snprintf(stamp, sizeof stamp, "save %08ld", save);
        long line = (save * 7919) % (size / 64);
        memcpy(text + line * 64, stamp, (size_t)len);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            die("create", tmp);
        write_all(fd, text, (size_t)size, tmp);
        if (close(fd) != 0)
            die("close", tmp);
        if (rename(tmp, target) != 0)
            die("rename", tmp);
    }
    int fd = open(target, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0)
        die("fsync", target);
    close(fd);
    printf("%.6f\n", now() - start);
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "create") == 0 && argc == 5)
        return cmd_create(argv[2], atol(argv[3]), atol(argv[4]));
    if (strcmp(cmd, "stat") == 0 && argc == 4)
        return cmd_stat(argv[2], atol(argv[3]));
    if (strcmp(cmd, "write") == 0 && argc == 4)
        return cmd_write(argv[2], atol(argv[3]));
    if (strcmp(cmd, "read") == 0 && argc == 3)
        return cmd_read(argv[2]);
    if (strcmp(cmd, "randread") == 0 && argc == 4)
        return cmd_randread(argv[2], atol(argv[3]));
    if (strcmp(cmd, "saves") == 0 && argc == 5)
        return cmd_saves(argv[2], atol(argv[3]), atol(argv[4]));
    fprintf(stderr, "usage: fs-bench-io create DIR N SIZE | stat DIR N | write FILE MIB |\n"
                    "       read FILE | randread FILE COUNT | saves DIR N SIZE\n");
    return 2;
}
