/*
 * tests/fuse/fill.c: writes MIB mebibytes of seeded pseudo-random data (as
 * dd bs=1M would: 1 MiB write calls), then fsyncs, to PATH or to stdout ("-").
 * The same seed gives the same bytes, so a test can hash the stream again
 * instead of keeping a copy. Every 8 bytes come from xorshift64*, so no two
 * blocks repeat and nothing deduplicates or compresses.
 *
 *     fill MIB SEED PATH|-
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (1024 * 1024)

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fill MIB SEED PATH|-\n");
        return 2;
    }
    long mib = strtol(argv[1], NULL, 10);
    uint64_t state = strtoull(argv[2], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    int fd = strcmp(argv[3], "-") == 0 ? 1 : open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || mib < 0) {
        fprintf(stderr, "fill: %s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    uint64_t *block = malloc(BLOCK);
    if (!block)
        return 1;
    for (long i = 0; i < mib; i++) {
        for (size_t w = 0; w < BLOCK / sizeof *block; w++) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            block[w] = state * 0x2545F4914F6CDD1DULL;
        }
        const char *at = (const char *)block;
        size_t left = BLOCK;
        while (left > 0) {
            ssize_t n = write(fd, at, left);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                fprintf(stderr, "fill: write at MiB %ld: %s\n", i, n < 0 ? strerror(errno) : "0");
                return 1;
            }
            at += n;
            left -= (size_t)n;
        }
    }
    if (fd != 1 && (fsync(fd) != 0 || close(fd) != 0)) {
        fprintf(stderr, "fill: fsync/close %s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    free(block);
    return 0;
}
