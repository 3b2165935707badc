/*
 * tests/fuse/mmap_check.c: memory-mapped I/O on a directory, as ext4 does it.
 *
 *     mmap_check DIR
 *
 * Writes through a shared writable mapping and reads the file back with
 * read(2); maps a file written with write(2); checks that the page cache is
 * one (a store is seen by pread, a pwrite is seen in the mapping, without
 * msync); that private mappings do not write; that a file grown while mapped
 * can be mapped further; and that touching a page wholly past the end of the
 * file raises SIGBUS. Leaves DIR/mapped (written through the mapping) for the
 * calling script, which checks its checksum and its history. Prints each
 * failure with expected and got; exit 1 if any.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
static int checks;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("FAIL line %d: ", __LINE__);                                                    \
            printf(__VA_ARGS__);                                                                   \
            putchar('\n');                                                                         \
        }                                                                                          \
    } while (0)

#define SYS(call)                                                                                  \
    ({                                                                                             \
        long r_ = (long)(call);                                                                    \
        CHECK(r_ >= 0, "%s: %s", #call, strerror(errno));                                          \
        r_;                                                                                        \
    })

/* The byte at offset i of the mapped file: depends on the position, so a
 * misplaced page shows. */
static unsigned char pattern(size_t i, unsigned salt)
{
    uint32_t x = (uint32_t)(i / 4096) * 2654435761u ^ (uint32_t)(i % 4096) ^ salt;
    return (unsigned char)(x ^ (x >> 8) ^ (x >> 16));
}

static size_t first_mismatch(const unsigned char *buf, size_t off, size_t len, unsigned salt)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != pattern(off + i, salt))
            return i;
    return len;
}

/* Reads the whole file with read(2) and compares it with the pattern. */
static void check_by_read(const char *path, size_t size, unsigned salt, const char *what)
{
    unsigned char *buf = malloc(size + 1);
    int fd = (int)SYS(open(path, O_RDONLY));
    if (!buf || fd < 0)
        goto out;
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, buf + got, size + 1 - got)) > 0)
        got += (size_t)n;
    CHECK(got == size, "%s: read %zu bytes, expected %zu", what, got, size);
    size_t at = first_mismatch(buf, 0, got < size ? got : size, salt);
    CHECK(at >= size, "%s: byte %zu is 0x%02x, expected 0x%02x", what, at, buf[at],
          pattern(at, salt));
out:
    if (fd >= 0)
        close(fd);
    free(buf);
}

static sigjmp_buf sigbus_jump;

static void on_sigbus(int sig)
{
    (void)sig;
    siglongjmp(sigbus_jump, 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mmap_check DIR\n");
        return 2;
    }
    if (chdir(argv[1]) != 0) {
        fprintf(stderr, "mmap_check: cannot enter %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t size = 8 * 1024 * 1024 + 123; /* not a whole number of pages */

    /* 1. Write a new file through a shared mapping; read it back with read(2). */
    int fd = (int)SYS(open("mapped", O_RDWR | O_CREAT | O_TRUNC, 0644));
    SYS(ftruncate(fd, (off_t)size));
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED, "mmap MAP_SHARED of a new file: %s", strerror(errno));
    if (map == MAP_FAILED)
        return 1;
    for (size_t i = 0; i < size; i++)
        map[i] = pattern(i, 1);
    /* one page cache: a store is visible to pread before msync */
    unsigned char probe[16];
    SYS(pread(fd, probe, sizeof probe, 3 * (off_t)page + 7));
    CHECK(first_mismatch(probe, 3 * page + 7, sizeof probe, 1) == sizeof probe,
          "pread does not see a store made through the mapping");
    /* and a pwrite is visible in the mapping */
    unsigned char patch[8];
    for (size_t i = 0; i < sizeof patch; i++)
        patch[i] = pattern(5 * page + 1 + i, 1);
    SYS(pwrite(fd, patch, sizeof patch, 5 * (off_t)page + 1));
    CHECK(memcmp(map + 5 * page + 1, patch, sizeof patch) == 0,
          "the mapping does not see a pwrite");
    SYS(msync(map, size, MS_SYNC));
    SYS(munmap(map, size));
    SYS(fsync(fd));
    close(fd);
    check_by_read("mapped", size, 1, "file written through a shared mapping");

    /* 2. Map a file written with write(2) and read it through memory. */
    fd = (int)SYS(open("written", O_RDWR | O_CREAT | O_TRUNC, 0644));
    unsigned char *buf = malloc(size);
    for (size_t i = 0; i < size; i++)
        buf[i] = pattern(i, 2);
    CHECK(write(fd, buf, size) == (ssize_t)size, "write of %zu bytes", size);
    close(fd);
    fd = (int)SYS(open("written", O_RDONLY));
    map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED, "mmap PROT_READ: %s", strerror(errno));
    if (map != MAP_FAILED) {
        size_t at = first_mismatch(map, 0, size, 2);
        CHECK(at == size, "mapped read: byte %zu differs", at);
        /* the tail of the last page, past the end of the file, reads zeros */
        size_t tail_start = size, tail_end = (size + page - 1) / page * page;
        bool zeros = true;
        for (size_t i = tail_start; i < tail_end; i++)
            zeros &= map[i] == 0;
        CHECK(zeros, "bytes past the end of the file in its last page are not zero");
        munmap(map, size);
    }
    close(fd);

    /* 3. A private mapping does not write to the file. */
    fd = (int)SYS(open("written", O_RDWR));
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    CHECK(map != MAP_FAILED, "mmap MAP_PRIVATE: %s", strerror(errno));
    if (map != MAP_FAILED) {
        memset(map, 0xAA, 3 * page);
        munmap(map, size);
    }
    close(fd);
    check_by_read("written", size, 2, "file after stores to a private mapping");

    /* 4. Grow a mapped file, map the new part, write it. */
    fd = (int)SYS(open("grown", O_RDWR | O_CREAT | O_TRUNC, 0644));
    SYS(ftruncate(fd, (off_t)page));
    map = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED, "mmap of 4 pages over a 1-page file: %s", strerror(errno));
    if (map != MAP_FAILED) {
        for (size_t i = 0; i < page; i++)
            map[i] = pattern(i, 3);
        /* 5. touching a page wholly past the end raises SIGBUS */
        struct sigaction sa = {.sa_handler = on_sigbus}, old;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGBUS, &sa, &old);
        volatile bool bus = false;
        if (sigsetjmp(sigbus_jump, 1) == 0) {
            volatile unsigned char c = map[2 * page];
            (void)c;
        } else {
            bus = true;
        }
        sigaction(SIGBUS, &old, NULL);
        CHECK(bus, "reading a mapped page wholly past the end of the file did not raise SIGBUS");
        SYS(ftruncate(fd, (off_t)(4 * page)));
        for (size_t i = page; i < 4 * page; i++)
            map[i] = pattern(i, 3);
        SYS(msync(map, 4 * page, MS_SYNC));
        munmap(map, 4 * page);
    }
    close(fd);
    check_by_read("grown", 4 * page, 3, "file grown while mapped");

    free(buf);
    unlink("written");
    unlink("grown");
    printf("mmap_check: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
