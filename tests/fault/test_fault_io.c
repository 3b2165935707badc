/*
 * I/O fault injection (suite fault): a commit — a new binary version of a
 * file with its chunks, an op and a setting, in one transaction, after its
 * working copy is written — is run with the n-th write (then the n-th fsync)
 * failing, for every n that lands inside it, with EIO and ENOSPC, once or for
 * good (a disk that stays full). Each time: the commit returns that error,
 * the store passes its checks, nothing of the commit is visible, and the same
 * commit succeeds once the fault is gone.
 */
#include "meta/faultvfs.h"
#include "meta/oplog.h"
#include "meta/version.h"
#include "meta/wcopy.h"
#include "meta_util.h"
#include "test.h"

#define NODES 3

struct world {
    char *dir;
    struct meta_store *store;
    struct meta_id nodes[NODES];
    uint64_t next_seq; /* the next commit's number: op seq and version counter */
    uint8_t *last[NODES];
    size_t last_len[NODES];
};

static size_t content_for(uint8_t *out, uint64_t seq)
{
    size_t len = 20000 + (size_t)(seq * 7919 % 60000);
    tu_fill(out, len, seq % 3);
    memcpy(out + len / 2, &seq, sizeof(seq));
    return len;
}

/* One commit as the mount will make it: DIRTY, write the working copy, one transaction. */
static int commit(struct world *world, uint64_t seq, const uint8_t *data, size_t len)
{
    struct meta_store *store = world->store;
    const struct meta_id *node = &world->nodes[seq % NODES];
    uint64_t replica = meta_store_replica(store);
    int rc = meta_wc_mark_dirty(store, node);
    if (rc == 0)
        rc = meta_wc_replace(store, node, data, len);
    if (rc == 0)
        rc = meta_store_txn_begin(store);
    if (rc)
        return rc;
    struct meta_version version = {
        .node = *node, .ts = {seq, replica}, .author = replica, .time_ns = (int64_t)seq};
    struct meta_op op = {.replica = replica,
                         .seq = seq,
                         .counter = seq,
                         .kind = META_OP_ATTR,
                         .node = *node,
                         .author = replica,
                         .body = (uint8_t *)"x",
                         .body_len = 1};
    char value[32];
    snprintf(value, sizeof(value), "%llu", (unsigned long long)seq);
    rc = meta_version_commit_wc(NULL, store, &version);
    if (rc == 0)
        rc = meta_oplog_append(store, &op);
    if (rc == 0)
        rc = meta_setting_set(store, "fault.last", value);
    if (rc) {
        meta_store_txn_rollback(store);
        return rc;
    }
    return meta_store_txn_commit(store);
}

/* Checks the store holds commits 1..seq exactly, and commit seq's content. */
static void check_state(struct world *world, uint64_t seq, const char *when)
{
    struct meta_store *store = world->store;
    int failures = test_failures;
    int rc = meta_store_check(store);
    if (rc)
        fprintf(stderr, "%s: check: %s\n", when, meta_store_errmsg(store));
    CHECK_INT(0, rc);
    struct crdt_vv vv;
    CHECK_INT(0, meta_vv_load(&vv, store));
    CHECK_INT(seq, crdt_vv_get(&vv, meta_store_replica(store)));
    crdt_vv_free(&vv);
    int64_t last = -1;
    CHECK_INT(0, meta_setting_get_int(&last, store, "fault.last", 0));
    CHECK_INT(seq, last);
    for (int n = 0; n < NODES; n++) {
        struct meta_version *versions = NULL;
        size_t count = 0;
        CHECK_INT(0, meta_version_list(&versions, &count, store, &world->nodes[n]));
        if (count > 0) {
            CHECK(versions[0].ts.counter <= seq);
            uint8_t *content = NULL;
            size_t len = 0;
            CHECK_INT(0,
                      meta_version_read(&content, &len, store, &world->nodes[n], versions[0].ts));
            CHECK(len == world->last_len[n] && memcmp(content, world->last[n], len) == 0);
            free(content);
        }
        free(versions);
        struct meta_node node;
        CHECK_INT(0, meta_node_get(&node, store, &world->nodes[n]));
        if (node.wc_state == META_WC_CLEAN && count > 0) {
            char path[4096];
            size_t len = 0;
            CHECK_INT(0, meta_wc_path(path, sizeof(path), store, &world->nodes[n]));
            uint8_t *wc = tu_read_file(path, &len);
            CHECK(wc && len == world->last_len[n] && memcmp(wc, world->last[n], len) == 0);
            free(wc);
        }
        CHECK(node.wc_state != META_WC_STALE);
        meta_node_clear(&node);
    }
    if (test_failures != failures)
        fprintf(stderr, "  ... while checking %s (commit %llu)\n", when, (unsigned long long)seq);
}

static void remember(struct world *world, uint64_t seq, const uint8_t *data, size_t len)
{
    int n = (int)(seq % NODES);
    free(world->last[n]);
    world->last[n] = malloc(len);
    memcpy(world->last[n], data, len);
    world->last_len[n] = len;
}

static const char *op_name(enum meta_fault_op op)
{
    return op == META_FAULT_WRITE ? "write" : "fsync";
}

/* Runs the commit with the n-th op failing for n = 1, 2, ... until one passes untouched. */
static void sweep(struct world *world, enum meta_fault_op op, enum meta_fault_action action,
                  bool sticky, uint8_t *data, int *faults_seen)
{
    int expected = action == META_FAULT_EIO ? -EIO : -ENOSPC;
    for (uint64_t nth = 1;; nth++) {
        uint64_t seq = world->next_seq;
        size_t len = content_for(data, seq);
        meta_faultvfs_arm(op, nth, action, sticky);
        int rc = commit(world, seq, data, len);
        bool fired = meta_faultvfs_fired();
        meta_faultvfs_disarm();
        char when[128];
        snprintf(when, sizeof(when), "%s %llu failing with %s%s", op_name(op),
                 (unsigned long long)nth, action == META_FAULT_EIO ? "EIO" : "ENOSPC",
                 sticky ? " for good" : "");
        if (!fired) {
            /* The commit has fewer than nth such ops: it ran clean; the sweep is over. */
            CHECK_INT(0, rc);
            remember(world, seq, data, len);
            world->next_seq++;
            check_state(world, seq, when);
            return;
        }
        if (rc == 0) {
            /* Only a checkpoint after the commit can fail without failing it. */
            remember(world, seq, data, len);
            world->next_seq++;
            check_state(world, seq, when);
            continue;
        }
        (*faults_seen)++;
        if (rc != expected)
            fprintf(stderr, "%s: got %d (%s)\n", when, rc, meta_store_errmsg(world->store));
        CHECK_INT(expected, rc);
        CHECK(strlen(meta_store_errmsg(world->store)) > 0);
        check_state(world, seq - 1, when);
        /* Space is back: the very same commit goes through. */
        rc = commit(world, seq, data, len);
        if (rc)
            fprintf(stderr, "%s: retry: %s\n", when, meta_store_errmsg(world->store));
        CHECK_INT(0, rc);
        remember(world, seq, data, len);
        world->next_seq++;
        check_state(world, seq, when);
        if (test_failures > 20)
            return;
    }
}

int main(void)
{
    CHECK_INT(0, meta_faultvfs_install());
    struct world world = {.dir = tu_tempdir("faultio"), .next_seq = 1};
    struct meta_share_params params = {.device_name = "fault"};
    struct meta_err err;
    CHECK_INT(0, meta_store_create(&world.store, &err, world.dir, &params));
    meta_store_set_io(world.store, &meta_faultvfs_io);
    struct meta_id root_id = tu_id(0);
    struct meta_node root = tu_node(root_id, NULL, "", META_NODE_DIR);
    root.ino = META_INO_ROOT;
    CHECK_INT(0, meta_node_put(NULL, world.store, &root));
    for (int n = 0; n < NODES; n++) {
        world.nodes[n] = tu_id((uint32_t)n + 1);
        char name[16];
        snprintf(name, sizeof(name), "file%d", n);
        struct meta_node file = tu_node(world.nodes[n], &root_id, name, META_NODE_FILE);
        CHECK_INT(0, meta_node_put(NULL, world.store, &file));
    }
    uint8_t *data = malloc(100000);
    int faults_seen = 0;
    const enum meta_fault_op ops[] = {META_FAULT_WRITE, META_FAULT_SYNC};
    const enum meta_fault_action actions[] = {META_FAULT_EIO, META_FAULT_ENOSPC};
    for (int o = 0; o < 2; o++)
        for (int a = 0; a < 2; a++)
            for (int sticky = 0; sticky < 2; sticky++)
                sweep(&world, ops[o], actions[a], sticky, data, &faults_seen);
    printf("%d injected faults, %llu commits\n", faults_seen,
           (unsigned long long)world.next_seq - 1);
    /*
     * Every write and fsync of every commit was failed once above; how many
     * that is depends on the store: since a transaction's WAL frames go out
     * as one write (meta/walbuf.c) a commit makes a handful, not dozens.
     */
    CHECK(faults_seen > 25);

    /* Everything that returned is there after a reopen. */
    meta_store_close(world.store);
    CHECK_INT(0, meta_store_open(&world.store, &err, world.dir));
    check_state(&world, world.next_seq - 1, "reopen");
    meta_store_close(world.store);
    for (int n = 0; n < NODES; n++)
        free(world.last[n]);
    free(data);
    tu_rmtree(world.dir);
    return test_finish("fault-io");
}
