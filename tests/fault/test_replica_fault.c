/*
 * Fault tests for meta/replica (suite fault): what the replica holds in
 * memory (the tree CRDT, cached text documents, the version vector and the
 * inode counter it defers, checkpoints) must never run ahead of the store.
 *
 * Part one fails the n-th write of a replica operation, for every n until the
 * operation runs clean: a text edit, a file made and written, a mkdir, a
 * rename, a remote batch, a checkpoint. Each time, the failed operation is
 * absent, meta_replica_check finds memory and store in step, the same
 * operation then succeeds, and a peer that pulls everything ends up with the
 * same text (so no text op was made against a document the store never had).
 *
 * Part two kills a child at a seeded write or fsync (or after a seeded delay)
 * while it edits text files, makes and renames nodes and writes checkpoints
 * every few tree ops; after each kill the share opens, meta_replica_check and
 * meta_store_check pass, and every text file's CRDT holds its newest version.
 *
 * Env: WEFT_CRASH_SEED (default fixed), WEFT_REPLICA_KILLS (default 60).
 */
#include "meta/faultvfs.h"
#include "meta/oplog.h"
#include "meta/replica.h"
#include "meta/version.h"
#include "meta_util.h"
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define TEXT_FILES 3
#define LINES      40

static uint64_t seed;

struct peer {
    char *dir;
    char path[4200];
    struct meta_replica *replica;
};

static void peer_open(struct peer *peer, bool create, const char *device)
{
    struct meta_err err;
    static uint8_t share_id[META_SHARE_ID_LEN] = {7, 7, 7};
    static uint8_t share_key[META_KEY_LEN] = {5, 5, 5};
    struct meta_share_params params = {
        .device_name = device, .share_id = share_id, .share_key = share_key};
    int rc = create ? meta_replica_create(&peer->replica, &err, peer->path, &params)
                    : meta_replica_open(&peer->replica, &err, peer->path);
    if (rc) {
        fprintf(stderr, "%s %s: %s\n", create ? "create" : "open", peer->path, err.msg);
        exit(2);
    }
    meta_store_set_io(meta_replica_store(peer->replica), &meta_faultvfs_io);
}

static void peer_init(struct peer *peer, const char *device)
{
    peer->dir = tu_tempdir("replica-fault");
    snprintf(peer->path, sizeof(peer->path), "%s/share", peer->dir);
    peer_open(peer, true, device);
}

static void peer_free(struct peer *peer)
{
    meta_replica_close(peer->replica);
    tu_rmtree(peer->dir);
}

/* The text of file f after edit e: LINES lines, one of them changed by each edit. */
static size_t text_of(char *out, size_t cap, int f, uint64_t e)
{
    size_t len = 0;
    for (int line = 0; line < LINES; line++) {
        uint64_t stamp = 0;
        for (uint64_t k = 1; k <= e; k++)
            if ((k * 7 + (uint64_t)f) % LINES == (uint64_t)line)
                stamp = k;
        len += (size_t)snprintf(out + len, cap - len, "file %d line %d edit %llu\n", f, line,
                                (unsigned long long)stamp);
    }
    return len;
}

static int resolve(uint64_t *ino, struct peer *peer, const char *path)
{
    return meta_replica_resolve(ino, peer->replica, path);
}

/* Writes a whole file (made if missing) and commits it; 0 or the first error. */
static int write_file(struct peer *peer, const char *path, const void *data, size_t len)
{
    uint64_t ino = 0;
    int rc = resolve(&ino, peer, path);
    if (rc == -ENOENT) {
        struct meta_attr attr;
        rc = meta_replica_mknod(&attr, peer->replica, META_INO_ROOT, path, S_IFREG | 0644, 0, 0, 0);
        ino = attr.ino;
    }
    int fd = -1;
    if (!rc)
        rc = meta_replica_open_file(&fd, peer->replica, ino, O_WRONLY | O_TRUNC);
    if (!rc && write(fd, data, len) != (ssize_t)len)
        rc = -EIO;
    if (fd >= 0)
        close(fd);
    if (!rc)
        rc = meta_replica_commit(peer->replica, ino);
    return rc;
}

static char *read_text(struct peer *peer, const char *path)
{
    uint64_t ino = 0;
    char *text = NULL;
    size_t len = 0;
    if (resolve(&ino, peer, path) != 0 || meta_replica_text(&text, &len, peer->replica, ino) != 0)
        return NULL;
    return text;
}

struct collected {
    struct meta_op *ops;
    size_t len, cap;
};

static int collect(void *ctx, const struct meta_op *op)
{
    struct collected *out = ctx;
    if (out->len == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 64;
        out->ops = realloc(out->ops, out->cap * sizeof(*out->ops));
    }
    struct meta_op *copy = &out->ops[out->len++];
    *copy = *op;
    copy->body = malloc(op->body_len ? op->body_len : 1);
    memcpy(copy->body, op->body, op->body_len);
    return 0;
}

static void collected_free(struct collected *got)
{
    for (size_t i = 0; i < got->len; i++)
        free(got->ops[i].body);
    free(got->ops);
    memset(got, 0, sizeof(*got));
}

static int fetch_from(void *ctx, const uint8_t id[META_HASH_LEN], uint8_t **data, size_t *len)
{
    struct peer *from = ctx;
    return meta_chunk_get(data, len, meta_replica_store(from->replica), id);
}

/* What `to` lacks of `from`, read while no fault is armed. */
static void ops_for(struct collected *got, struct peer *to, struct peer *from)
{
    struct crdt_vv have = {0};
    CHECK_INT(0, meta_replica_version(&have, to->replica));
    CHECK_INT(0, meta_replica_ops_since(from->replica, &have, collect, got));
    crdt_vv_free(&have);
    meta_replica_set_fetch(to->replica, fetch_from, from);
}

static int pull(struct peer *to, struct peer *from)
{
    struct collected got = {0};
    ops_for(&got, to, from);
    size_t applied = 0;
    int rc = meta_replica_apply_remote(&applied, to->replica, got.ops, got.len);
    collected_free(&got);
    return rc;
}

/* ---- part one: the n-th write fails ---- */

enum step { STEP_TEXT, STEP_CREATE, STEP_MKDIR, STEP_RENAME, STEP_REMOTE, STEP_CHECKPOINT };

static const char *step_name(enum step step)
{
    static const char *names[] = {"text edit", "create",       "mkdir",
                                  "rename",    "remote batch", "checkpoint"};
    return names[step];
}

struct world {
    struct peer a, b;
    uint64_t edit;   /* edits of text file 0 made on a so far */
    uint64_t b_edit; /* edits of text file 1 made on b so far */
    int made;        /* files and directories made on a so far */
};

/* One step on replica a (the remote batch: b's new ops, gathered beforehand into *batch). */
static int run_step(struct world *world, enum step step, const struct collected *batch)
{
    char text[8192], name[64];
    struct meta_attr attr;
    switch (step) {
    case STEP_TEXT: {
        size_t len = text_of(text, sizeof(text), 0, world->edit + 1);
        return write_file(&world->a, "text0.txt", text, len);
    }
    case STEP_CREATE:
        snprintf(name, sizeof(name), "new%d.bin", world->made + 1);
        return write_file(&world->a, name, "\0\1\2binary", 9);
    case STEP_MKDIR:
        snprintf(name, sizeof(name), "dir%d", world->made + 1);
        return meta_replica_mkdir(&attr, world->a.replica, META_INO_ROOT, name, 0755, 0, 0);
    case STEP_RENAME:
        snprintf(name, sizeof(name), "dir%d", world->made);
        snprintf(text, sizeof(text), "dir%d", world->made + 1);
        return meta_replica_rename(world->a.replica, META_INO_ROOT, name, META_INO_ROOT, text, 0);
    case STEP_REMOTE: {
        size_t applied = 0;
        return meta_replica_apply_remote(&applied, world->a.replica, batch->ops, batch->len);
    }
    case STEP_CHECKPOINT:
        return meta_replica_checkpoint(world->a.replica);
    }
    return -EINVAL;
}

/* After step succeeded: what the world now holds. */
static void step_done(struct world *world, enum step step)
{
    if (step == STEP_TEXT)
        world->edit++;
    else if (step == STEP_CREATE || step == STEP_MKDIR || step == STEP_RENAME)
        world->made++;
}

/* Prepares b's side of a remote step: b edits its text file and makes a directory. */
static void prepare_remote(struct world *world, struct collected *batch)
{
    char text[8192], name[64];
    struct meta_attr attr;
    size_t len = text_of(text, sizeof(text), 1, ++world->b_edit);
    CHECK_INT(0, write_file(&world->b, "text1.txt", text, len));
    snprintf(name, sizeof(name), "from-b-%llu", (unsigned long long)world->b_edit);
    CHECK_INT(0, meta_replica_mkdir(&attr, world->b.replica, META_INO_ROOT, name, 0755, 0, 0));
    ops_for(batch, &world->a, &world->b);
}

static void check_consistent(struct world *world, const char *when)
{
    int rc = meta_replica_check(world->a.replica);
    if (rc)
        fprintf(stderr, "%s: check: %s\n", when, meta_replica_errmsg(world->a.replica));
    CHECK_INT(0, rc);
    char text[8192];
    size_t len = text_of(text, sizeof(text), 0, world->edit);
    char *got = read_text(&world->a, "text0.txt");
    CHECK(got && strlen(got) == len && memcmp(got, text, len) == 0);
    free(got);
}

static void sweep(struct world *world, enum step step, int *faults_seen)
{
    for (uint64_t nth = 1;; nth++) {
        struct collected batch = {0};
        if (step == STEP_REMOTE)
            prepare_remote(world, &batch);
        if (step == STEP_CHECKPOINT) {
            /* Something to write: a tree op and text ops since the last checkpoint. */
            struct meta_attr attr;
            char name[64];
            snprintf(name, sizeof(name), "cp%llu", (unsigned long long)nth);
            CHECK_INT(0,
                      meta_replica_mkdir(&attr, world->a.replica, META_INO_ROOT, name, 0755, 0, 0));
            CHECK_INT(0, run_step(world, STEP_TEXT, NULL));
            step_done(world, STEP_TEXT);
        }
        meta_faultvfs_arm(META_FAULT_WRITE, nth, META_FAULT_EIO, false);
        int rc = run_step(world, step, &batch);
        bool fired = meta_faultvfs_fired();
        meta_faultvfs_disarm();
        char when[128];
        snprintf(when, sizeof(when), "%s, write %llu failing", step_name(step),
                 (unsigned long long)nth);
        if (!fired || rc == 0) {
            /* Ran clean (or only something after its commit failed, which it may report). */
            if (rc)
                fprintf(stderr, "%s: %s\n", when, meta_replica_errmsg(world->a.replica));
            CHECK_INT(0, rc);
            step_done(world, step);
            check_consistent(world, when);
            collected_free(&batch);
            if (!fired)
                return;
            continue;
        }
        (*faults_seen)++;
        CHECK(rc < 0);
        check_consistent(world, when);
        /* The very same step goes through now. */
        rc = run_step(world, step, &batch);
        if (rc)
            fprintf(stderr, "%s: retry: %s\n", when, meta_replica_errmsg(world->a.replica));
        CHECK_INT(0, rc);
        step_done(world, step);
        check_consistent(world, when);
        collected_free(&batch);
        if (test_failures > 20)
            return;
    }
}

static void part_one(void)
{
    struct world world = {0};
    peer_init(&world.a, "laptop");
    peer_init(&world.b, "desktop");
    /* Checkpoints every few tree ops, so commits write them too. */
    meta_replica_set_checkpoint_interval(world.a.replica, 3);
    char text[8192];
    size_t len = text_of(text, sizeof(text), 0, 0);
    CHECK_INT(0, write_file(&world.a, "text0.txt", text, len));
    len = text_of(text, sizeof(text), 1, 0);
    CHECK_INT(0, write_file(&world.b, "text1.txt", text, len));
    CHECK_INT(0, pull(&world.a, &world.b));
    CHECK_INT(0, pull(&world.b, &world.a));
    CHECK_INT(0, run_step(&world, STEP_MKDIR, NULL));
    step_done(&world, STEP_MKDIR);
    int faults_seen = 0;
    for (enum step step = STEP_TEXT; step <= STEP_CHECKPOINT; step++)
        sweep(&world, step, &faults_seen);
    printf("part one: %d injected faults\n", faults_seen);
    CHECK(faults_seen >= 6);
    /* The peer agrees on every text: no text op was made against a document that rolled back. */
    CHECK_INT(0, pull(&world.b, &world.a));
    CHECK_INT(0, pull(&world.a, &world.b));
    for (int f = 0; f < 2; f++) {
        char path[32];
        snprintf(path, sizeof(path), "text%d.txt", f);
        char *on_a = read_text(&world.a, path), *on_b = read_text(&world.b, path);
        len = text_of(text, sizeof(text), f, f == 0 ? world.edit : world.b_edit);
        CHECK(on_a && on_b && strcmp(on_a, on_b) == 0);
        CHECK(on_a && strlen(on_a) == len && memcmp(on_a, text, len) == 0);
        free(on_a);
        free(on_b);
    }
    CHECK_INT(0, meta_replica_check(world.b.replica));
    /* And after reopening, from the checkpoints and the log. */
    meta_replica_close(world.a.replica);
    peer_open(&world.a, false, "laptop");
    check_consistent(&world, "reopen");
    CHECK_INT(0, meta_store_check(meta_replica_store(world.a.replica)));
    peer_free(&world.a);
    peer_free(&world.b);
}

/* ---- part two: killed anywhere ---- */

static uint64_t mix(uint64_t j, uint64_t salt)
{
    uint64_t z = seed ^ (j * 0x9e3779b97f4a7c15ULL) ^ (salt << 56);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void child_main(struct peer *peer, uint64_t round)
{
    uint64_t mode = mix(round, 1);
    if (mode % 2 == 0) {
        enum meta_fault_op op = (mode >> 8) % 4 == 0 ? META_FAULT_SYNC : META_FAULT_WRITE;
        uint64_t nth = 1 + (mode >> 16) % (op == META_FAULT_SYNC ? 8 : 300);
        meta_faultvfs_arm(op, nth, META_FAULT_KILL, false);
    }
    peer_open(peer, false, "crash");
    meta_replica_set_checkpoint_interval(peer->replica, 5);
    char text[8192], name[64], other[64];
    struct meta_attr attr;
    for (uint64_t k = 1;; k++) {
        uint64_t pick = mix(round * 100000 + k, 2);
        int rc = 0;
        switch (pick % 6) {
        case 0:
        case 1:
        case 2: {
            /* A text edit: a changed line (the edit count is its own, read back from the file). */
            int f = (int)(pick >> 8) % TEXT_FILES;
            snprintf(name, sizeof(name), "text%d.txt", f);
            size_t len = text_of(text, sizeof(text), f, (pick >> 16) % 1000);
            rc = write_file(peer, name, text, len);
            break;
        }
        case 3:
            snprintf(name, sizeof(name), "d%llu", (unsigned long long)(pick >> 8) % 50);
            rc = meta_replica_mkdir(&attr, peer->replica, META_INO_ROOT, name, 0755, 0, 0);
            if (rc == -EEXIST)
                rc = meta_replica_rmdir(peer->replica, META_INO_ROOT, name);
            break;
        case 4:
            snprintf(name, sizeof(name), "d%llu", (unsigned long long)(pick >> 8) % 50);
            snprintf(other, sizeof(other), "d%llu", (unsigned long long)(pick >> 16) % 50);
            rc = meta_replica_rename(peer->replica, META_INO_ROOT, name, META_INO_ROOT, other,
                                     META_RENAME_NOREPLACE);
            if (rc == -ENOENT || rc == -EEXIST || rc == -EINVAL)
                rc = 0;
            break;
        default:
            snprintf(name, sizeof(name), "b%llu.bin", (unsigned long long)(pick >> 8) % 30);
            rc = write_file(peer, name, "\0bin", 4);
            break;
        }
        if (rc) {
            fprintf(stderr, "child: step %llu: %d %s\n", (unsigned long long)k, rc,
                    meta_replica_errmsg(peer->replica));
            _exit(13);
        }
    }
}

static void verify(struct peer *peer, uint64_t round)
{
    int failures = test_failures;
    struct meta_replica_info info;
    meta_replica_info(&info, peer->replica);
    CHECK_STR("", info.checkpoint_note);
    int rc = meta_replica_check(peer->replica);
    if (rc)
        fprintf(stderr, "check: %s\n", meta_replica_errmsg(peer->replica));
    CHECK_INT(0, rc);
    rc = meta_store_check(meta_replica_store(peer->replica));
    if (rc)
        fprintf(stderr, "store check: %s\n", meta_store_errmsg(meta_replica_store(peer->replica)));
    CHECK_INT(0, rc);
    /* Each text file's CRDT (state plus replayed ops) holds its newest version. */
    for (int f = 0; f < TEXT_FILES; f++) {
        char name[32];
        snprintf(name, sizeof(name), "text%d.txt", f);
        uint64_t ino = 0;
        if (resolve(&ino, peer, name) != 0)
            continue;
        struct meta_log_entry *log = NULL;
        size_t count = 0;
        CHECK_INT(0, meta_replica_log(&log, &count, peer->replica, ino));
        struct meta_id id;
        CHECK_INT(0, meta_replica_node_id(&id, peer->replica, ino));
        char *text = NULL;
        size_t len = 0;
        if (count > 0 && log[0].text) {
            uint8_t *newest = NULL;
            size_t newest_len = 0;
            CHECK_INT(0, meta_version_read(&newest, &newest_len, meta_replica_store(peer->replica),
                                           &id, log[0].ts));
            CHECK_INT(0, meta_replica_text(&text, &len, peer->replica, ino));
            CHECK(text && newest && len == newest_len && memcmp(text, newest, len) == 0);
            free(newest);
        }
        free(text);
        free(log);
    }
    if (test_failures != failures)
        fprintf(stderr, "round %llu failed (seed %llu)\n", (unsigned long long)round,
                (unsigned long long)seed);
}

static void part_two(void)
{
    const char *kills_env = getenv("WEFT_REPLICA_KILLS");
    uint64_t kills_wanted = kills_env ? strtoull(kills_env, NULL, 10) : 60;
    struct peer peer;
    peer_init(&peer, "crash");
    meta_replica_close(peer.replica);
    uint64_t kills = 0;
    for (uint64_t round = 1; kills < kills_wanted && test_failures == 0; round++) {
        fflush(NULL);
        pid_t child = fork();
        if (child == 0)
            child_main(&peer, round);
        if (mix(round, 1) % 2 != 0) {
            uint64_t delay_us = 1000 + mix(round, 3) % 60000;
            struct timespec delay = {0, (long)(delay_us * 1000)};
            nanosleep(&delay, NULL);
            kill(child, SIGKILL);
        }
        int status = 0;
        waitpid(child, &status, 0);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
            fprintf(stderr, "round %llu: child did not die by SIGKILL (status %d)\n",
                    (unsigned long long)round, status);
            CHECK(0);
            break;
        }
        kills++;
        peer_open(&peer, false, "crash");
        verify(&peer, round);
        meta_replica_close(peer.replica);
    }
    printf("part two: %llu kills\n", (unsigned long long)kills);
    CHECK(kills >= kills_wanted);
    peer_open(&peer, false, "crash");
    peer_free(&peer);
}

int main(void)
{
    const char *seed_env = getenv("WEFT_CRASH_SEED");
    seed = seed_env ? strtoull(seed_env, NULL, 10) : 20261126;
    printf("replica fault test: seed %llu (WEFT_CRASH_SEED)\n", (unsigned long long)seed);
    CHECK_INT(0, meta_faultvfs_install());
    part_one();
    part_two();
    return test_finish("replica-fault");
}
