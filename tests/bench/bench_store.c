/*
 * weft-bench-store [--json] [--dir DIR]: figures for meta/.
 *
 *   chunk_mb_per_s  FastCDC chunking + keyed BLAKE2b-256 of 256 MiB of
 *                   pseudo-random bytes held in memory, fed in 1 MiB pieces
 *                   (MB = 10^6 bytes).
 *   creates_per_s   small files (1..4 KiB) created one per transaction:
 *                   working copy written, then node + chunks + version
 *                   committed with synchronous=FULL (fsync of the file, its
 *                   directory when new, and the WAL), in a store under DIR
 *                   (default $TMPDIR or /tmp).
 *   creates_per_s_wal_fsync_only  the same without the working-copy and
 *                   directory fsyncs: a diagnostic of where the time goes,
 *                   not a durable configuration.
 *
 * It prints figures and the command that reproduces them; it never fails on
 * a time. Still to come with crdt/: text_commit_ms, apply_10k_tree_ms,
 * open_100k_ms.
 */
#include "meta/chunk.h"
#include "meta/nodes.h"
#include "meta/store.h"
#include "meta/version.h"
#include "meta/wcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_INPUT (256u << 20)
#define CREATES     3000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int count_chunk(void *ctx, const uint8_t id[META_HASH_LEN], const uint8_t *data, size_t len)
{
    (void)id;
    (void)data;
    (void)len;
    (*(uint64_t *)ctx)++;
    return 0;
}

static double bench_chunking(uint64_t *out_chunks)
{
    uint8_t *data = malloc(CHUNK_INPUT);
    if (!data)
        return -1;
    uint64_t state = 0x2545F4914F6CDD1DULL;
    for (size_t i = 0; i < CHUNK_INPUT; i += 8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        uint64_t word = state * 0x2545F4914F6CDD1DULL;
        memcpy(data + i, &word, 8);
    }
    uint8_t key[META_KEY_LEN];
    memset(key, 0x42, sizeof(key));
    struct meta_chunker *chunker = NULL;
    if (meta_chunker_new(&chunker, key) != 0)
        return -1;
    double best = 0;
    for (int run = 0; run < 3; run++) {
        uint64_t chunks = 0;
        double start = now_s();
        for (size_t at = 0; at < CHUNK_INPUT; at += 1u << 20)
            if (meta_chunker_feed(chunker, data + at, 1u << 20, count_chunk, &chunks) != 0)
                return -1;
        if (meta_chunker_finish(chunker, count_chunk, &chunks) != 0)
            return -1;
        double rate = CHUNK_INPUT / 1e6 / (now_s() - start);
        if (rate > best)
            best = rate;
        *out_chunks = chunks;
    }
    meta_chunker_free(chunker);
    free(data);
    return best;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static struct meta_id id_of(uint32_t n)
{
    struct meta_id id = {{0}};
    memcpy(id.bytes, &n, sizeof(n));
    id.bytes[15] = 1;
    return id;
}

static int create_one(struct meta_store *store, uint32_t n, const uint8_t *data, size_t len)
{
    struct meta_id root_id = id_of(0), id = id_of(n);
    struct meta_node node = {.id = id,
                             .parent = root_id,
                             .has_parent = true,
                             .kind = META_NODE_FILE,
                             .mode = 0100644,
                             .wc_state = META_WC_DIRTY};
    snprintf(node.name, sizeof(node.name), "file-%u.bin", n);
    int fd = -1;
    int rc = meta_wc_open(&fd, store, &id, O_WRONLY | O_CREAT | O_TRUNC);
    if (rc)
        return rc;
    rc = write(fd, data, len) == (ssize_t)len ? 0 : -EIO;
    close(fd);
    if (rc)
        return rc;
    struct meta_version version = {.node = id,
                                   .ts = {n, meta_store_replica(store)},
                                   .author = meta_store_replica(store),
                                   .time_ns = n};
    rc = meta_store_txn_begin(store);
    if (rc)
        return rc;
    rc = meta_node_put(NULL, store, &node);
    if (rc == 0)
        rc = meta_version_commit_wc(NULL, store, &version);
    if (rc) {
        meta_store_txn_rollback(store);
        return rc;
    }
    return meta_store_txn_commit(store);
}

/* Diagnostic only (not durable): working-copy and directory fsyncs skipped. */
static ssize_t plain_pwrite(int fd, const void *buf, size_t len, off_t offset)
{
    return pwrite(fd, buf, len, offset);
}

static int skip_fsync(int fd)
{
    (void)fd;
    return 0;
}

static const struct meta_io no_wc_fsync = {.pwrite = plain_pwrite, .fsync = skip_fsync};

static double bench_creates(const char *base, const struct meta_io *io)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/weft-bench-store-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror(dir);
        return -1;
    }
    char share[4200];
    snprintf(share, sizeof(share), "%s/share", dir);
    struct meta_share_params params = {.device_name = "bench"};
    struct meta_store *store = NULL;
    struct meta_err err;
    double rate = -1;
    if (meta_store_create(&store, &err, share, &params) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        goto out;
    }
    struct meta_node root = {
        .id = id_of(0), .kind = META_NODE_DIR, .mode = 040755, .ino = META_INO_ROOT};
    if (meta_node_put(NULL, store, &root) != 0)
        goto out;
    meta_store_set_io(store, io);
    uint8_t data[4096];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 131 + 7);
    double start = now_s();
    for (uint32_t n = 1; n <= CREATES; n++) {
        data[0] = (uint8_t)n;
        data[1] = (uint8_t)(n >> 8);
        if (create_one(store, n, data, 1024 + n % 3072) != 0) {
            fprintf(stderr, "create %u: %s\n", n, meta_store_errmsg(store));
            goto out;
        }
    }
    rate = CREATES / (now_s() - start);
out:
    meta_store_close(store);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rate;
}

int main(int argc, char **argv)
{
    bool json = false;
    const char *base = getenv("TMPDIR");
    if (!base || !base[0])
        base = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            base = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--json] [--dir DIR]\n", argv[0]);
            return 2;
        }
    }
    if (meta_crypto_init() != 0)
        return 1;
    uint64_t chunks = 0;
    double chunk_rate = bench_chunking(&chunks);
    double create_rate = bench_creates(base, NULL);
    double create_rate_wal_only = bench_creates(base, &no_wc_fsync);
    if (json) {
        printf("{\"chunk_mb_per_s\": %.1f, \"chunks\": %llu, \"creates_per_s\": %.0f, "
               "\"creates_per_s_wal_fsync_only\": %.0f, \"creates\": %d, \"store_dir\": \"%s\"}\n",
               chunk_rate, (unsigned long long)chunks, create_rate, create_rate_wal_only, CREATES,
               base);
    } else {
        printf("chunk_mb_per_s  %8.1f  (256 MiB, %llu chunks, best of 3)\n", chunk_rate,
               (unsigned long long)chunks);
        printf("creates_per_s   %8.0f  (%d small files, one transaction each, in %s)\n",
               create_rate, CREATES, base);
        printf("creates_per_s_wal_fsync_only %8.0f  (diagnostic, not durable: working-copy "
               "and directory fsyncs skipped)\n",
               create_rate_wal_only);
    }
    printf("reproduce: %s%s --dir %s\n", argv[0], json ? " --json" : "", base);
    return chunk_rate > 0 && create_rate > 0 ? 0 : 1;
}
