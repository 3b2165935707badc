/*
 * weft-bench-store [--json] [--dir DIR] [--only NAME]: figures for meta/.
 *
 *   chunk_mb_per_s     FastCDC chunking + keyed BLAKE2b-256 of 256 MiB of
 *                      pseudo-random bytes held in memory, fed in 1 MiB pieces
 *                      (MB = 10^6 bytes).                              (chunk)
 *   creates_per_s      small files as the mount makes them, through
 *                      meta/replica: mknod, open for writing, write 1..4 KiB,
 *                      commit, in lazy mode (durable at a program's fsync),
 *                      in a store under DIR (default $TMPDIR or /tmp). (creates)
 *   text_commit_ms     one-line edit of a 100 KB text file: open for writing
 *                      (O_TRUNC), write, commit (diff, text op, version,
 *                      transaction); median of 101.                   (text)
 *   apply_10k_tree_ms  a fresh replica applies 10,000 remote tree ops (a
 *                      random tree of directories and files) as one batch;
 *                      median of 3.                                    (apply)
 *   open_100k_ms       opening a replica of 100,000 nodes (tree loaded from
 *                      its checkpoint); median of 3.                   (open)
 *   native_creates_per_s  the same files made with open, write, close under
 *                      DIR, just before: the file system's rate in this run.
 *   creates_per_s_grouped  creates_per_s with the replica grouped as the
 *                      mount runs it: savepoints of one transaction,
 *                      committed every 64 files.                     (creates)
 *   creates_per_s_durable_each  store only, every commit fsync'ed (synchronous
 *                      FULL, working copy and directory fsyncs): a diagnostic
 *                      of what full durability costs.         (creates_durable)
 *
 * --only NAME runs one of them (the others print 0), for profiling. Creates
 * depend on the file system: see meta/README.md "Benchmark". It prints
 * figures and the command that reproduces them; it never fails on a time.
 */
#include "crdt/tree.h"
#include "meta/chunk.h"
#include "meta/nodes.h"
#include "meta/replica.h"
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
#define TEXT_EDITS  101

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

/* ---------- through meta/replica: what the mount does ---------- */

static char *bench_share(const char *base, struct meta_replica **out, const char *device)
{
    char *dir = malloc(4096);
    snprintf(dir, 4096, "%s/weft-bench-replica-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror(dir);
        exit(1);
    }
    char share[4200];
    snprintf(share, sizeof(share), "%s/share", dir);
    struct meta_share_params params = {.device_name = device};
    struct meta_err err;
    if (meta_replica_create(out, &err, share, &params) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return dir;
}

static void bench_share_free(char *dir, struct meta_replica *replica)
{
    meta_replica_close(replica);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static int double_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void write_commit(struct meta_replica *replica, uint64_t ino, const void *data, size_t len)
{
    int fd = -1;
    if (meta_replica_open_file(&fd, replica, ino, O_WRONLY | O_TRUNC) != 0 ||
        write(fd, data, len) != (ssize_t)len || meta_replica_commit(replica, ino) != 0) {
        fprintf(stderr, "write/commit: %s\n", meta_replica_errmsg(replica));
        exit(1);
    }
    close(fd);
}

/*
 * The same files made natively (open, write, close) in a directory beside
 * the share's: the file system's own rate in this run, which the store's
 * working copies cannot beat (ext4's inode allocator slows down for minutes
 * after many deletes, so absolute rates drift between runs; the ratio holds).
 */
static double bench_native_creates(const char *base)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/weft-bench-native-XXXXXX", base);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    uint8_t data[4096];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 131 + 7);
    double start = now_s();
    for (uint32_t n = 1; n <= CREATES; n++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/file-%u.bin", dir, n);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        size_t len = 1024 + n % 3072;
        if (fd < 0 || write(fd, data, len) != (ssize_t)len || close(fd) != 0) {
            perror(path);
            exit(1);
        }
    }
    double rate = CREATES / (now_s() - start);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rate;
}

/*
 * Creates per second: mknod, write 1-4 KiB, commit (lazy durability); with
 * `grouped`, as the mount runs the replica (meta_replica_set_grouped), the
 * group committed every GROUP_FILES files as the mount's committer would.
 */
#define GROUP_FILES 64
static double bench_replica_creates(const char *base, bool grouped)
{
    struct meta_replica *replica;
    char *dir = bench_share(base, &replica, "bench");
    if (grouped && meta_replica_set_grouped(replica, true) != 0) {
        fprintf(stderr, "grouped: %s\n", meta_replica_errmsg(replica));
        exit(1);
    }
    uint8_t data[4096];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 131 + 7);
    double start = now_s();
    for (uint32_t n = 1; n <= CREATES; n++) {
        char name[32];
        snprintf(name, sizeof(name), "file-%u.bin", n);
        struct meta_attr attr;
        if (meta_replica_mknod(&attr, replica, META_INO_ROOT, name, 0100644, 0, 0, 0) != 0) {
            fprintf(stderr, "mknod: %s\n", meta_replica_errmsg(replica));
            exit(1);
        }
        data[0] = (uint8_t)n;
        write_commit(replica, attr.ino, data, 1024 + n % 3072);
        if (grouped && (n % GROUP_FILES == 0 || n == CREATES) &&
            meta_replica_group_commit(replica) != 0) {
            fprintf(stderr, "group commit: %s\n", meta_replica_errmsg(replica));
            exit(1);
        }
    }
    double rate = CREATES / (now_s() - start);
    bench_share_free(dir, replica);
    return rate;
}

/*
 * One-line edit of a 100 KB text file: open for writing, write, commit (diff,
 * text ops, version, transaction); the median of TEXT_EDITS, each on another line.
 */
static double bench_text_commit(const char *base)
{
    struct meta_replica *replica;
    char *dir = bench_share(base, &replica, "bench");
    size_t cap = 120 * 1024, len = 0;
    char *text = malloc(cap);
    size_t lines = 0;
    for (; len < 100 * 1024; lines++)
        len += (size_t)snprintf(text + len, cap - len, "line %05zu: the quick brown fox jumps\n",
                                lines);
    size_t line_len = len / lines; /* every line has the same length */
    struct meta_attr attr;
    if (meta_replica_mknod(&attr, replica, META_INO_ROOT, "doc.txt", 0100644, 0, 0, 0) != 0)
        exit(1);
    write_commit(replica, attr.ino, text, len);
    double times[TEXT_EDITS];
    for (int i = 0; i < TEXT_EDITS; i++) {
        size_t at = line_len * ((50 + (size_t)i * 97) % lines); /* a different line each time */
        text[at + 12] = (char)('a' + i % 26);
        double start = now_s();
        write_commit(replica, attr.ino, text, len);
        times[i] = (now_s() - start) * 1e3;
    }
    qsort(times, TEXT_EDITS, sizeof(times[0]), double_cmp);
    free(text);
    bench_share_free(dir, replica);
    return times[TEXT_EDITS / 2];
}

struct remote_batch {
    struct meta_op *ops;
    struct crdt_buf *bodies;
    size_t count;
};

/* `count` tree ops of a replica that made a random tree of directories and files. */
static void make_remote_tree(struct remote_batch *batch, size_t count)
{
    struct crdt_tree *tree;
    if (crdt_tree_new(&tree) != 0)
        exit(1);
    struct crdt_clock clock;
    crdt_clock_init(&clock, 0x5eed5eed5eedULL);
    struct crdt_node_id *dirs = malloc(count * sizeof(*dirs));
    size_t dir_count = 0;
    batch->ops = calloc(count, sizeof(*batch->ops));
    batch->bodies = calloc(count, sizeof(*batch->bodies));
    uint64_t rng = 7;
    for (size_t i = 0; i < count; i++) {
        char name[32];
        snprintf(name, sizeof(name), "n%zu", i);
        bool is_dir = i < 16 || (rng = rng * 6364136223846793005ULL + 1, (rng >> 33) % 8 == 0);
        struct crdt_node_id parent =
            dir_count ? dirs[(rng = rng * 6364136223846793005ULL + 1, (rng >> 33) % dir_count)]
                      : CRDT_NODE_ROOT;
        struct crdt_tree_op op;
        if (crdt_tree_create(tree, &op, &clock, parent, name, strlen(name),
                             is_dir ? CRDT_KIND_DIR : CRDT_KIND_FILE, NULL) != 0)
            exit(1);
        if (is_dir)
            dirs[dir_count++] = op.child;
        crdt_tree_op_encode(&batch->bodies[i], &op);
        struct meta_id node;
        for (int b = 0; b < 8; b++) {
            node.bytes[b] = (uint8_t)(op.child.hi >> (56 - 8 * b));
            node.bytes[8 + b] = (uint8_t)(op.child.lo >> (56 - 8 * b));
        }
        batch->ops[i] = (struct meta_op){
            .replica = clock.replica,
            .seq = clock.seq,
            .counter = op.ts.counter,
            .kind = META_OP_TREE,
            .node = node,
            .author = clock.replica,
            .body = batch->bodies[i].data,
            .body_len = batch->bodies[i].len,
        };
    }
    batch->count = count;
    free(dirs);
    crdt_tree_free(tree);
}

static void remote_batch_free(struct remote_batch *batch)
{
    for (size_t i = 0; i < batch->count; i++)
        crdt_buf_free(&batch->bodies[i]);
    free(batch->bodies);
    free(batch->ops);
}

/* A fresh replica applies 10,000 remote tree ops as one batch. */
static double bench_apply_tree(const char *base)
{
    struct remote_batch batch;
    make_remote_tree(&batch, 10000);
    double times[3];
    for (int i = 0; i < 3; i++) {
        struct meta_replica *replica;
        char *dir = bench_share(base, &replica, "bench");
        size_t applied = 0;
        double start = now_s();
        if (meta_replica_apply_remote(&applied, replica, batch.ops, batch.count) != 0 ||
            applied != batch.count) {
            fprintf(stderr, "apply: %s\n", meta_replica_errmsg(replica));
            exit(1);
        }
        times[i] = (now_s() - start) * 1e3;
        bench_share_free(dir, replica);
    }
    remote_batch_free(&batch);
    qsort(times, 3, sizeof(times[0]), double_cmp);
    return times[1];
}

/* Opening a replica of 100,000 nodes (its tree checkpoint written at close, nothing to replay). */
static double bench_open(const char *base)
{
    struct remote_batch batch;
    make_remote_tree(&batch, 100000);
    struct meta_replica *replica;
    char *dir = bench_share(base, &replica, "bench");
    size_t applied = 0;
    if (meta_replica_apply_remote(&applied, replica, batch.ops, batch.count) != 0) {
        fprintf(stderr, "apply: %s\n", meta_replica_errmsg(replica));
        exit(1);
    }
    remote_batch_free(&batch);
    meta_replica_close(replica);
    char share[4200];
    snprintf(share, sizeof(share), "%s/share", dir);
    double times[3];
    for (int i = 0; i < 3; i++) {
        struct meta_err err;
        double start = now_s();
        if (meta_replica_open(&replica, &err, share) != 0) {
            fprintf(stderr, "open: %s\n", err.msg);
            exit(1);
        }
        times[i] = (now_s() - start) * 1e3;
        meta_replica_close(replica);
    }
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
    qsort(times, 3, sizeof(times[0]), double_cmp);
    return times[1];
}

int main(int argc, char **argv)
{
    bool json = false;
    const char *only = NULL;
    const char *base = getenv("TMPDIR");
    if (!base || !base[0])
        base = "/tmp";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            base = argv[++i];
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--json] [--dir DIR] [--only NAME]\n", argv[0]);
            return 2;
        }
    }
    if (meta_crypto_init() != 0)
        return 1;
    uint64_t chunks = 0;
#define RUN(name, call) (!only || strcmp(only, name) == 0 ? (call) : 0)
    double chunk_rate = RUN("chunk", bench_chunking(&chunks));
    double native_rate = RUN("creates", bench_native_creates(base));
    double create_rate = RUN("creates", bench_replica_creates(base, false));
    double grouped_rate = RUN("creates", bench_replica_creates(base, true));
    double store_create_rate = RUN("creates_durable", bench_creates(base, NULL));
    double text_commit_ms = RUN("text", bench_text_commit(base));
    double apply_ms = RUN("apply", bench_apply_tree(base));
    double open_ms = RUN("open", bench_open(base));
    if (json) {
        printf("{\"chunk_mb_per_s\": %.1f, \"creates_per_s\": %.0f, \"text_commit_ms\": %.3f, "
               "\"apply_10k_tree_ms\": %.1f, \"open_100k_ms\": %.1f, "
               "\"creates_per_s_durable_each\": %.0f, \"native_creates_per_s\": %.0f, "
               "\"creates_per_s_grouped\": %.0f, "
               "\"chunks\": %llu, \"creates\": %d, \"store_dir\": \"%s\"}\n",
               chunk_rate, create_rate, text_commit_ms, apply_ms, open_ms, store_create_rate,
               native_rate, grouped_rate, (unsigned long long)chunks, CREATES, base);
    } else {
        printf("chunk_mb_per_s      %8.1f  (256 MiB, %llu chunks, best of 3)\n", chunk_rate,
               (unsigned long long)chunks);
        printf("creates_per_s       %8.0f  (%d small files as the mount makes them: create, "
               "write, commit; durable at fsync)\n",
               create_rate, CREATES);
        printf("text_commit_ms      %8.3f  (one-line edit of a 100 KB text file, median of %d)\n",
               text_commit_ms, TEXT_EDITS);
        printf("apply_10k_tree_ms   %8.1f  (10,000 remote tree ops in one batch, median of 3)\n",
               apply_ms);
        printf("open_100k_ms        %8.1f  (open a replica of 100,000 nodes, median of 3)\n",
               open_ms);
        printf("creates_per_s_durable_each %8.0f  (store only, every commit fsync'ed)\n",
               store_create_rate);
        printf("native_creates_per_s %7.0f  (the same files: open, write, close in %s)\n",
               native_rate, base);
        printf("creates_per_s_grouped %6.0f  (as creates_per_s, grouped as the mount runs it, "
               "a commit per %d files)\n",
               grouped_rate, GROUP_FILES);
    }
    printf("reproduce: %s%s --dir %s\n", argv[0], json ? " --json" : "", base);
    return only || (chunk_rate > 0 && create_rate > 0) ? 0 : 1;
}
