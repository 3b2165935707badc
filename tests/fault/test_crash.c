/*
 * Crash test (suite fault). A child process opens the store and commits
 * changes until it is killed with SIGKILL: at the n-th write or fsync it is
 * about to make (meta/faultvfs, seeded n), or after a seeded delay. After
 * each kill the parent reopens the store and checks: integrity, every commit
 * the child reported as returned is there, nothing of a commit is half there,
 * and every working copy matches the store.
 *
 * The child reports each returned commit through a pipe, which outlives it.
 * Commit j (its op seq and version counter) is a pure function of (seed, j)
 * and of commits 1..j-1, so a retried commit is the same commit, and the
 * parent replays 1..k in a model to know what the store must hold:
 *
 *   normal j:  DIRTY, new working copy of node(j), then one transaction with
 *              the version, an op, a setting (and every 10th, prune + GC);
 *   restore j: one transaction making the node's second-newest version its
 *              newest again (the working copy follows after commit; a kill
 *              there leaves it STALE, redone at open).
 *
 * Later, tree and text commits slot in as more kinds of j: add a case to
 * child_commit and to the model.
 *
 * Env: WEFT_CRASH_SEED (default fixed), WEFT_CRASH_KILLS (default 240).
 * This covers process death; power loss (lost unsynced writes) rests on the
 * fsync order argued in meta/README.md.
 */
#include "meta/faultvfs.h"
#include "meta/oplog.h"
#include "meta/version.h"
#include "meta/wcopy.h"
#include "meta_util.h"
#include "test.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define NODES       5
#define KEEP        3
#define MAX_CONTENT 120000
#define MAX_COMMITS 100000

static uint64_t seed;

static uint64_t mix(uint64_t j, uint64_t salt)
{
    uint64_t z = seed ^ (j * 0x9e3779b97f4a7c15ULL) ^ (salt << 56);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int node_of(uint64_t j)
{
    return (int)(mix(j, 1) % NODES);
}

static bool wants_restore(uint64_t j)
{
    return mix(j, 2) % 5 == 0;
}

/* Content of a normal commit j: shared runs (dedup) plus bytes of its own. */
static size_t content_of(uint8_t *out, uint64_t j)
{
    size_t len = 1 + (size_t)(mix(j, 3) % MAX_CONTENT);
    tu_fill(out, len, mix(j, 4) % 4);
    size_t at = (size_t)(mix(j, 5) % len);
    for (size_t i = 0; i < 64 && at + i < len; i++)
        out[at + i] = (uint8_t)(j >> (i % 8));
    return len;
}

static struct meta_id node_id(int n)
{
    return tu_id((uint32_t)n + 1);
}

/* ---- the child ---- */

static int child_commit(struct meta_store *store, uint64_t j, uint8_t *buf)
{
    uint64_t replica = meta_store_replica(store);
    struct meta_id node = node_id(node_of(j));
    struct meta_version version = {
        .node = node, .ts = {j, replica}, .author = replica, .time_ns = (int64_t)j};
    struct meta_version *versions = NULL;
    size_t count = 0;
    int rc = meta_version_list(&versions, &count, store, &node);
    if (rc)
        return rc;
    bool restore = wants_restore(j) && count >= 2;
    struct crdt_ts from = restore ? versions[1].ts : (struct crdt_ts){0, 0};
    free(versions);
    if (!restore) {
        size_t len = content_of(buf, j);
        rc = meta_wc_mark_dirty(store, &node);
        if (rc == 0)
            rc = meta_wc_replace(store, &node, buf, len);
        if (rc)
            return rc;
    }
    rc = meta_store_txn_begin(store);
    if (rc)
        return rc;
    struct meta_op op = {.replica = replica,
                         .seq = j,
                         .counter = j,
                         .kind = restore ? META_OP_ATTR : META_OP_TREE,
                         .node = node,
                         .author = replica,
                         .body = (uint8_t *)&j,
                         .body_len = sizeof(j)};
    char value[32];
    snprintf(value, sizeof(value), "%llu", (unsigned long long)j);
    rc = restore ? meta_version_restore(store, &version, from)
                 : meta_version_commit_wc(NULL, store, &version);
    if (rc == 0)
        rc = meta_oplog_append(store, &op);
    if (rc == 0)
        rc = meta_setting_set(store, "crash.last", value);
    if (rc == 0 && j % 10 == 0)
        rc = meta_history_prune(NULL, store, 0);
    if (rc) {
        meta_store_txn_rollback(store);
        return rc;
    }
    return meta_store_txn_commit(store);
}

static void child_main(const char *dir, int report_fd, uint64_t round)
{
    if (meta_faultvfs_install() != 0)
        _exit(10);
    uint64_t mode = mix(round, 6);
    if (mode % 2 == 0) {
        /* Die at a write or fsync: anywhere in open, a commit, a rewrite, a checkpoint. */
        enum meta_fault_op op = (mode >> 8) % 3 == 0 ? META_FAULT_SYNC : META_FAULT_WRITE;
        uint64_t nth = 1 + (mode >> 16) % (op == META_FAULT_SYNC ? 40 : 400);
        meta_faultvfs_arm(op, nth, META_FAULT_KILL, false);
    }
    struct meta_store *store = NULL;
    struct meta_err err;
    if (meta_store_open(&store, &err, dir) != 0) {
        fprintf(stderr, "child: open: %s\n", err.msg);
        _exit(11);
    }
    meta_store_set_io(store, &meta_faultvfs_io);
    struct crdt_vv vv;
    if (meta_vv_load(&vv, store) != 0)
        _exit(12);
    uint64_t j = crdt_vv_get(&vv, meta_store_replica(store)) + 1;
    crdt_vv_free(&vv);
    uint8_t *buf = malloc(MAX_CONTENT);
    for (; j < MAX_COMMITS; j++) {
        if (child_commit(store, j, buf) != 0) {
            fprintf(stderr, "child: commit %llu: %s\n", (unsigned long long)j,
                    meta_store_errmsg(store));
            _exit(13);
        }
        if (write(report_fd, &j, sizeof(j)) != (ssize_t)sizeof(j))
            _exit(14);
    }
    _exit(15);
}

/* ---- the parent's model ---- */

struct model_version {
    uint64_t j;      /* ts counter */
    uint64_t source; /* the normal commit whose content it holds */
};

struct model {
    struct model_version *history[NODES]; /* oldest first */
    size_t count[NODES];
    uint64_t applied; /* commits 1..applied replayed */
};

static void model_apply(struct model *model, uint64_t j)
{
    int n = node_of(j);
    uint64_t source = j;
    if (wants_restore(j) && model->count[n] >= 2)
        source = model->history[n][model->count[n] - 2].source;
    model->history[n] =
        realloc(model->history[n], (model->count[n] + 1) * sizeof(struct model_version));
    model->history[n][model->count[n]++] = (struct model_version){j, source};
    if (j % 10 == 0) {
        for (int m = 0; m < NODES; m++) {
            if (model->count[m] > KEEP) {
                memmove(model->history[m], model->history[m] + model->count[m] - KEEP,
                        KEEP * sizeof(struct model_version));
                model->count[m] = KEEP;
            }
        }
    }
    model->applied = j;
}

static bool same_content(const uint8_t *data, size_t len, uint64_t source, uint8_t *buf)
{
    size_t expected_len = content_of(buf, source);
    return len == expected_len && memcmp(data, buf, len) == 0;
}

/* Checks the reopened store against the model; returns the store's k. */
static uint64_t verify(struct meta_store *store, struct model *model, uint64_t returned,
                       uint8_t *buf, uint64_t round)
{
    int failures = test_failures;
    int rc = meta_store_check(store);
    if (rc)
        fprintf(stderr, "check: %s\n", meta_store_errmsg(store));
    CHECK_INT(0, rc);
    struct crdt_vv vv;
    CHECK_INT(0, meta_vv_load(&vv, store));
    uint64_t k = crdt_vv_get(&vv, meta_store_replica(store));
    crdt_vv_free(&vv);
    /* Every returned commit is there; at most the one in flight beyond it. */
    if (k < returned || k > returned + 1)
        fprintf(stderr, "round %llu: store holds %llu commits, %llu returned\n",
                (unsigned long long)round, (unsigned long long)k, (unsigned long long)returned);
    CHECK(k >= returned && k <= returned + 1);
    CHECK(k >= model->applied);
    while (model->applied < k)
        model_apply(model, model->applied + 1);
    /* All parts of commit k: the op, the setting, its version (newest of its node). */
    int64_t last = 0;
    CHECK_INT(0, meta_setting_get_int(&last, store, "crash.last", 0));
    CHECK_INT(k, last);
    if (k > 0) {
        struct meta_op op;
        CHECK_INT(0, meta_oplog_get(&op, store, meta_store_replica(store), k));
        meta_op_clear(&op);
        CHECK_INT(-ENOENT, meta_oplog_get(&op, store, meta_store_replica(store), k + 1));
    }
    for (int n = 0; n < NODES; n++) {
        struct meta_id id = node_id(n);
        struct meta_version *versions = NULL;
        size_t count = 0;
        CHECK_INT(0, meta_version_list(&versions, &count, store, &id));
        size_t expect = model->count[n];
        /* Pruning is by commit; the newest KEEP must match exactly, older may linger. */
        CHECK(count >= (expect < KEEP ? expect : KEEP));
        for (size_t v = 0; v < count && v < KEEP && v < expect; v++) {
            const struct model_version *want = &model->history[n][expect - 1 - v];
            CHECK(versions[v].ts.counter == want->j);
            uint8_t *content = NULL;
            size_t len = 0;
            CHECK_INT(0, meta_version_read(&content, &len, store, &id, versions[v].ts));
            CHECK(content && same_content(content, len, want->source, buf));
            free(content);
        }
        struct meta_node node;
        CHECK_INT(0, meta_node_get(&node, store, &id));
        CHECK(node.wc_state != META_WC_STALE);
        char path[4096];
        size_t len = 0;
        CHECK_INT(0, meta_wc_path(path, sizeof(path), store, &id));
        uint8_t *wc = tu_read_file(path, &len);
        if (node.wc_state == META_WC_CLEAN && expect > 0) {
            CHECK(wc && same_content(wc, len, model->history[n][expect - 1].source, buf));
            CHECK(node.size == len);
        } else if (node.wc_state == META_WC_DIRTY) {
            /* Only the commit in flight may leave a node dirty, holding its old or new bytes. */
            CHECK(node_of(k + 1) == n);
            bool old_bytes = expect > 0 && wc &&
                             same_content(wc, len, model->history[n][expect - 1].source, buf);
            bool new_bytes = wc && same_content(wc, len, k + 1, buf);
            CHECK(old_bytes || new_bytes || (expect == 0 && (!wc || len == 0)));
        }
        free(wc);
        meta_node_clear(&node);
        free(versions);
    }
    if (test_failures != failures)
        fprintf(stderr, "round %llu failed (seed %llu)\n", (unsigned long long)round,
                (unsigned long long)seed);
    return k;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void)
{
    const char *seed_env = getenv("WEFT_CRASH_SEED");
    const char *kills_env = getenv("WEFT_CRASH_KILLS");
    seed = seed_env ? strtoull(seed_env, NULL, 10) : 20261126;
    uint64_t kills_wanted = kills_env ? strtoull(kills_env, NULL, 10) : 240;
    printf("crash test: seed %llu (WEFT_CRASH_SEED), %llu kills\n", (unsigned long long)seed,
           (unsigned long long)kills_wanted);
    char *dir = tu_tempdir("crash");
    struct meta_share_params params = {.device_name = "crash"};
    struct meta_store *store = NULL;
    struct meta_err err;
    CHECK_INT(0, meta_store_create(&store, &err, dir, &params));
    struct meta_id root_id = tu_id(0);
    struct meta_node root = tu_node(root_id, NULL, "", META_NODE_DIR);
    root.ino = META_INO_ROOT;
    CHECK_INT(0, meta_node_put(NULL, store, &root));
    for (int n = 0; n < NODES; n++) {
        char name[16];
        snprintf(name, sizeof(name), "file%d", n);
        struct meta_node file = tu_node(node_id(n), &root_id, name, META_NODE_FILE);
        CHECK_INT(0, meta_node_put(NULL, store, &file));
    }
    CHECK_INT(0, meta_setting_set(store, META_SETTING_KEEP_VERSIONS, "3"));
    meta_store_close(store);

    struct model model = {0};
    uint8_t *buf = malloc(MAX_CONTENT);
    uint64_t kills = 0, returned_total = 0, k = 0;
    double start = now_s();
    for (uint64_t round = 1; kills < kills_wanted && test_failures == 0; round++) {
        int fds[2];
        if (pipe(fds) != 0)
            return 2;
        pid_t child = fork();
        if (child == 0) {
            close(fds[0]);
            child_main(dir, fds[1], round);
        }
        close(fds[1]);
        if (mix(round, 6) % 2 != 0) {
            uint64_t delay_us = mix(round, 7) % 40000;
            struct timespec delay = {0, (long)(delay_us * 1000)};
            nanosleep(&delay, NULL);
            kill(child, SIGKILL);
        }
        int status = 0;
        waitpid(child, &status, 0);
        uint64_t returned = k, j;
        while (read(fds[0], &j, sizeof(j)) == (ssize_t)sizeof(j)) {
            CHECK(j == returned + 1);
            returned = j;
        }
        close(fds[0]);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
            fprintf(stderr, "round %llu: child did not die by SIGKILL (status %d)\n",
                    (unsigned long long)round, status);
            CHECK(0);
            break;
        }
        kills++;
        returned_total += returned - k;
        int rc = meta_store_open(&store, &err, dir);
        if (rc)
            fprintf(stderr, "round %llu: reopen: %s\n", (unsigned long long)round, err.msg);
        CHECK_INT(0, rc);
        if (rc)
            break;
        k = verify(store, &model, returned, buf, round);
        meta_store_close(store);
    }
    printf("%llu kills, %llu commits returned, store at commit %llu, %.1f s\n",
           (unsigned long long)kills, (unsigned long long)returned_total, (unsigned long long)k,
           now_s() - start);
    CHECK(kills >= kills_wanted);
    CHECK(k > 0);
    for (int n = 0; n < NODES; n++)
        free(model.history[n]);
    free(buf);
    tu_rmtree(dir);
    return test_finish("crash");
}
