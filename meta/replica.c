/*
 * meta/replica: see replica.h.
 *
 * State. The store is the truth; in memory we keep the tree CRDT (rebuilt at
 * open from the logged tree ops) and the Lamport clock. A local change runs
 * as: begin a store transaction, make the CRDT op (which also applies it in
 * memory), log it, update the materialized rows of every node the op may
 * have changed, commit. If the commit fails the in-memory tree is rebuilt
 * from the log, so memory never holds an op the disk does not.
 *
 * Identity across editors' saves (DESIGN.md "Atomic save"). The replica
 * remembers, for a few seconds, which node was displaced from which
 * (directory, name): unlinked, renamed away, or replaced by a rename. When a
 * regular file takes that name again within the window, the old node takes
 * the new content instead of a new node being born, so history and text
 * merging stay whole. The kernel already holds inode numbers for both files,
 * so the two nodes swap inode numbers: the one the kernel now sees at the
 * path is the old node.
 */
#include "meta/replica.h"

#include "crdt/diff.h"
#include "crdt/text.h"
#include "crdt/tree.h"
#include "internal.h"
#include "meta/member.h"
#include "meta/opbody.h"
#include "meta/oplog.h"
#include "meta/version.h"
#include "meta/wcopy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* Counters tried past a version timestamp that is taken (see commit_content). */
#define VERSION_TS_TRIES 64

/* The name of the tree CRDT's checkpoint (meta_checkpoint_put). */
#define TREE_CHECKPOINT "tree"
/*
 * A tree checkpoint is written once this many tree ops were applied since
 * the last one, or an eighth of the tree's nodes if more: opening replays at
 * most that many ops, and writing checkpoints costs at most about eight
 * times the bytes of a snapshot entry per op.
 */
#define CHECKPOINT_MIN_OPS 4096

/* How long a displaced name waits for an editor's new file (DESIGN.md "Atomic save"). */
#define SAVE_WINDOW_NS (10LL * 1000 * 1000 * 1000)
#define RECENT_MAX     32

enum displacement {
    DISPLACED_DELETED, /* unlinked, or replaced by a rename onto its name */
    DISPLACED_RENAMED, /* renamed away (vim and emacs keep a backup this way) */
};

struct recent {
    uint64_t parent_ino;
    char name[META_NAME_MAX + 1];
    struct crdt_node_id node;
    enum displacement how;
    int64_t when_ns;
};

struct born {
    struct crdt_node_id node;
    int64_t when_ns;
};

struct pending_change {
    struct meta_change change;
    char name[META_NAME_MAX + 1];
};

/* A tree op applied in the open change, waiting for its node's rule-3b bookkeeping (settle). */
struct pending_move {
    struct crdt_ts ts;
    struct crdt_node_id child;
    bool deletes;
    struct crdt_ts seen_edit;
    bool done; /* its node's row was made with it (insert_row): nothing left to settle */
};

/*
 * Decoded text CRDTs of the files edited last, so a commit diffs against a
 * document in memory instead of decoding its state from the store each time,
 * and the state is written back only every TEXT_SAVE_OPS of its ops (and when
 * the document leaves the cache, and at close): in between, the ops in the
 * log hold what the state lacks (README "Checkpoints"). A slot is what the
 * store holds (state plus logged ops) once the open transaction commits; a
 * failed transaction empties the cache (txn_end), since it may have changed
 * documents in memory.
 */
#define TEXT_CACHE_SLOTS 8
#define TEXT_CACHE_BYTES (16u << 20) /* content bytes held, over all slots (one may go over) */
#define TEXT_SAVE_OPS    32

struct text_slot {
    struct meta_id id;
    struct crdt_text *doc; /* NULL: slot free */
    uint8_t *content;      /* the document's text (crdt_text_content), content_len bytes */
    size_t content_len;
    bool has_row;         /* text_states has the node's row */
    size_t unsaved;       /* logged text ops the document holds beyond its row's state */
    struct crdt_vv floor; /* per replica, the lowest seq whose ops may still be pending */
    uint64_t last_use;
};

struct meta_replica {
    struct meta_store *store;
    struct crdt_tree *tree;
    struct crdt_clock clock;
    meta_change_fn change_fn;
    void *change_ctx;
    meta_chunk_fetch_fn fetch_fn;
    void *fetch_ctx;
    uint64_t *writers; /* inodes a program holds open for writing (the mount says) */
    size_t writers_len, writers_cap;
    struct recent recent[RECENT_MAX];
    size_t recent_next;
    struct born born[RECENT_MAX]; /* regular files this replica made moments ago */
    size_t born_next;
    struct pending_change *pending; /* changes of the open transaction, told after commit */
    size_t pending_len, pending_cap;
    struct pending_move *moves; /* tree ops of the open change not settled yet */
    size_t moves_len, moves_cap;
    struct text_slot text_cache[TEXT_CACHE_SLOTS];
    uint64_t text_clock; /* for least-recently-used eviction */
    /* The tree checkpoint (README "Checkpoints"). */
    size_t tree_ops_unsaved;   /* tree ops applied since the checkpoint (> 0: one is due) */
    size_t checkpoint_every;   /* write one after this many (0: the default rule) */
    size_t replayed_tree_ops;  /* replayed from the log when the tree was last built */
    bool tree_from_checkpoint; /* the tree was last built from the checkpoint */
    char checkpoint_note[META_ERRMSG_LEN]; /* why a checkpoint was not used ("" if it was) */
    bool ready;                            /* opened: close writes checkpoints */
    /*
     * Grouped changes (meta_replica_set_grouped): the mount's changes run as
     * savepoints of one store transaction that stays open until
     * meta_replica_group_commit. Their change events wait for that commit.
     */
    bool group_mode;     /* grouped changes join the open group */
    bool group_open;     /* the group's store transaction is open */
    bool change_grouped; /* the change running now is a savepoint of the group */
    size_t pending_mark; /* pending_len when that change began: a failure drops back to it */
    /*
     * Files whose content a save gave them (a rename keeping identity) and
     * whose commit waits for the group's: saves in quick succession make
     * one version, as rewrites in place do (the mount's commit batching).
     */
    struct meta_id *due;
    size_t due_len, due_cap;
    char errmsg[META_ERRMSG_LEN];
};

/* ---------- small helpers ---------- */

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int replica_fail(struct meta_replica *replica, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int replica_fail(struct meta_replica *replica, int rc, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(replica->errmsg, sizeof(replica->errmsg), fmt, args);
    va_end(args);
    return rc;
}

/* Ids: crdt's {hi, lo} as 16 big-endian bytes, so byte order is id order. */
static struct meta_id to_meta_id(struct crdt_node_id id)
{
    struct meta_id out;
    for (int i = 0; i < 8; i++) {
        out.bytes[i] = (uint8_t)(id.hi >> (56 - 8 * i));
        out.bytes[8 + i] = (uint8_t)(id.lo >> (56 - 8 * i));
    }
    return out;
}

static struct crdt_node_id from_meta_id(const struct meta_id *id)
{
    struct crdt_node_id out = {0, 0};
    for (int i = 0; i < 8; i++) {
        out.hi = out.hi << 8 | id->bytes[i];
        out.lo = out.lo << 8 | id->bytes[8 + i];
    }
    return out;
}

static uint8_t crdt_kind_of_mode(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFDIR:
        return CRDT_KIND_DIR;
    case S_IFLNK:
        return CRDT_KIND_SYMLINK;
    case S_IFIFO:
        return CRDT_KIND_FIFO;
    case S_IFSOCK:
        return CRDT_KIND_SOCKET;
    case S_IFCHR:
        return CRDT_KIND_CHRDEV;
    case S_IFBLK:
        return CRDT_KIND_BLKDEV;
    default:
        return CRDT_KIND_FILE;
    }
}

static uint32_t type_bits_of_kind(uint8_t kind)
{
    switch (kind) {
    case CRDT_KIND_DIR:
        return S_IFDIR;
    case CRDT_KIND_SYMLINK:
        return S_IFLNK;
    case CRDT_KIND_FIFO:
        return S_IFIFO;
    case CRDT_KIND_SOCKET:
        return S_IFSOCK;
    case CRDT_KIND_CHRDEV:
        return S_IFCHR;
    case CRDT_KIND_BLKDEV:
        return S_IFBLK;
    default:
        return S_IFREG;
    }
}

static enum meta_node_kind meta_kind_of(uint8_t crdt_kind)
{
    switch (crdt_kind) {
    case CRDT_KIND_FILE:
        return META_NODE_FILE;
    case CRDT_KIND_DIR:
        return META_NODE_DIR;
    case CRDT_KIND_SYMLINK:
        return META_NODE_SYMLINK;
    default:
        return META_NODE_SPECIAL;
    }
}

static int check_name(const char *name)
{
    size_t len = strlen(name);
    if (len > CRDT_NAME_MAX)
        return -ENAMETOOLONG;
    return crdt_tree_name_valid(name, len) ? 0 : -EINVAL;
}

/* ---------- change events ---------- */

static void change_add(struct meta_replica *replica, enum meta_change_kind kind, uint64_t ino,
                       uint64_t parent, const char *name, bool remote)
{
    if (!replica->change_fn)
        return;
    if (replica->pending_len == replica->pending_cap) {
        size_t cap = replica->pending_cap ? replica->pending_cap * 2 : 16;
        struct pending_change *grown = realloc(replica->pending, cap * sizeof(*grown));
        if (!grown)
            return; /* worst case the kernel shows a stale entry until its timeout */
        replica->pending = grown;
        replica->pending_cap = cap;
    }
    struct pending_change *pending = &replica->pending[replica->pending_len++];
    memset(pending, 0, sizeof(*pending));
    pending->change =
        (struct meta_change){.kind = kind, .ino = ino, .parent = parent, .remote = remote};
    if (name)
        snprintf(pending->name, sizeof(pending->name), "%s", name);
}

static void changes_flush(struct meta_replica *replica, bool deliver)
{
    for (size_t i = 0; deliver && replica->change_fn && i < replica->pending_len; i++) {
        struct meta_change change = replica->pending[i].change;
        change.name = replica->pending[i].name[0] ? replica->pending[i].name : NULL;
        replica->change_fn(replica->change_ctx, &change);
    }
    replica->pending_len = 0;
}

/* ---------- the text cache ---------- */

static void text_slot_free(struct text_slot *slot)
{
    crdt_text_free(slot->doc);
    free(slot->content);
    crdt_vv_free(&slot->floor);
    memset(slot, 0, sizeof(*slot));
}

/* The cached document of a node, or NULL. */
static struct text_slot *text_cache_find(struct meta_replica *replica, const struct meta_id *id)
{
    for (size_t i = 0; i < TEXT_CACHE_SLOTS; i++) {
        struct text_slot *slot = &replica->text_cache[i];
        if (slot->doc && !memcmp(slot->id.bytes, id->bytes, META_ID_LEN)) {
            slot->last_use = ++replica->text_clock;
            return slot;
        }
    }
    return NULL;
}

/* Drops every cached document without saving (after a failed change: the store is the truth). */
static void text_cache_clear(struct meta_replica *replica)
{
    for (size_t i = 0; i < TEXT_CACHE_SLOTS; i++)
        if (replica->text_cache[i].doc)
            text_slot_free(&replica->text_cache[i]);
}

/* ---------- the in-memory tree ---------- */

static const char *label_of(void *ctx, uint64_t replica_id);
static int text_load(struct text_slot *out, struct meta_replica *replica, const struct meta_id *id,
                     bool create);

/*
 * Tree ops read back from the log. Their bodies are copied into one arena
 * (decoded names point into it), with the offset of each, and decoded once
 * all are read: the arena no longer moves then.
 */
struct rebuild_ctx {
    struct meta_replica *replica;
    struct crdt_buf arena;
    size_t *offsets;
    struct meta_op *refs; /* replica and seq, for messages */
    size_t len, cap;
};

static int collect_tree_op(void *arg, const struct meta_op *op)
{
    struct rebuild_ctx *ctx = arg;
    if (ctx->len == ctx->cap) {
        size_t cap = ctx->cap ? ctx->cap * 2 : 256;
        size_t *offsets = realloc(ctx->offsets, (cap + 1) * sizeof(*offsets));
        if (offsets)
            ctx->offsets = offsets;
        struct meta_op *refs = offsets ? realloc(ctx->refs, cap * sizeof(*refs)) : NULL;
        if (!refs)
            return -ENOMEM;
        ctx->refs = refs;
        ctx->cap = cap;
    }
    ctx->offsets[ctx->len] = ctx->arena.len;
    ctx->refs[ctx->len++] = (struct meta_op){.replica = op->replica, .seq = op->seq};
    crdt_buf_put(&ctx->arena, op->body, op->body_len);
    return crdt_buf_status(&ctx->arena);
}

/* Decodes what collect_tree_op gathered; *out is the caller's to free. */
static int decode_tree_ops(struct crdt_tree_op **out, struct rebuild_ctx *ctx)
{
    struct crdt_tree_op *ops = malloc((ctx->len ? ctx->len : 1) * sizeof(*ops));
    if (!ops)
        return -ENOMEM;
    if (ctx->len)
        ctx->offsets[ctx->len] = ctx->arena.len;
    for (size_t i = 0; i < ctx->len; i++) {
        /* A conflict copy is its move, as everywhere else (README "Binary conflicts"). */
        struct meta_tree_body body;
        if (meta_tree_body_decode(&body, ctx->arena.data + ctx->offsets[i],
                                  ctx->offsets[i + 1] - ctx->offsets[i]) == 0) {
            ops[i] = body.op;
        } else {
            free(ops);
            return replica_fail(ctx->replica, -EUCLEAN,
                                "tree op (%016" PRIx64 ", %" PRIu64 ") in the log is damaged",
                                ctx->refs[i].replica, ctx->refs[i].seq);
        }
    }
    *out = ops;
    return 0;
}

static void rebuild_ctx_free(struct rebuild_ctx *ctx)
{
    crdt_buf_free(&ctx->arena);
    free(ctx->offsets);
    free(ctx->refs);
}

/* Applies the logged tree ops that `covered` lacks to *tree; *out_count counts them. */
static int tree_replay(size_t *out_count, struct meta_replica *replica, struct crdt_tree *tree,
                       const struct crdt_vv *covered)
{
    struct rebuild_ctx ctx = {.replica = replica};
    struct crdt_tree_op *ops = NULL;
    int rc = meta_oplog_replay(replica->store, NULL, META_OP_TREE, covered, collect_tree_op, &ctx);
    if (rc && !replica->errmsg[0])
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (!rc)
        rc = decode_tree_ops(&ops, &ctx);
    if (!rc && ctx.len && (rc = crdt_tree_apply(tree, ops, ctx.len, NULL)))
        replica_fail(replica, rc, "replaying the tree ops of the log failed: %s", strerror(-rc));
    *out_count = ctx.len;
    free(ops);
    rebuild_ctx_free(&ctx);
    return rc;
}

/*
 * The tree checkpoint, if there is a usable one: loaded into *out with what
 * it covers. Not usable (then *out stays NULL and replica->checkpoint_note
 * says why): damaged (digest, format), or covering ops the log does not
 * hold. The log is the truth and is then replayed whole; only I/O errors
 * fail.
 */
static int tree_checkpoint_load(struct crdt_tree **out, struct crdt_vv *covered, uint64_t *counter,
                                struct meta_replica *replica)
{
    struct meta_checkpoint cp;
    *out = NULL;
    int rc = meta_checkpoint_get(&cp, replica->store, TREE_CHECKPOINT);
    if (rc == -ENOENT)
        return 0;
    if (rc == -EBADMSG) {
        snprintf(replica->checkpoint_note, sizeof(replica->checkpoint_note),
                 "%s; the tree was rebuilt from the op log", meta_store_errmsg(replica->store));
        return 0;
    }
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    struct crdt_vv held = {0};
    rc = meta_vv_load(&held, replica->store);
    if (rc) {
        meta_checkpoint_clear(&cp);
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    }
    bool beyond = false;
    for (size_t i = 0; i < cp.covered.len; i++)
        beyond |= cp.covered.entries[i].seq > crdt_vv_get(&held, cp.covered.entries[i].replica);
    crdt_vv_free(&held);
    if (beyond) {
        snprintf(replica->checkpoint_note, sizeof(replica->checkpoint_note),
                 "the tree checkpoint covers ops the log does not hold; the tree was rebuilt "
                 "from the op log");
    } else if ((rc = crdt_tree_load(out, cp.state, cp.state_len)) != 0) {
        *out = NULL;
        if (rc == -ENOMEM) {
            meta_checkpoint_clear(&cp);
            return replica_fail(replica, rc, "out of memory loading the tree");
        }
        snprintf(replica->checkpoint_note, sizeof(replica->checkpoint_note),
                 "the tree checkpoint does not load (%s); the tree was rebuilt from the op log",
                 strerror(-rc));
    } else {
        *covered = cp.covered;
        cp.covered = (struct crdt_vv){0};
        *counter = cp.counter;
    }
    meta_checkpoint_clear(&cp);
    return 0;
}

/*
 * Puts the store's rule-3b pins on a tree built from ops (README "Rule 3b"):
 * pins are decided by the store, not by tree ops, and a checkpoint may
 * predate a pin or its clearing.
 */
static int tree_apply_pins(struct meta_replica *replica, struct crdt_tree *tree)
{
    struct meta_pin_entry *pins = NULL;
    size_t count = 0;
    int rc = meta_node_list_pins(&pins, &count, replica->store);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    for (size_t i = 0; !rc && i < count; i++) {
        rc = crdt_tree_set_pinned(tree, from_meta_id(&pins[i].id), pins[i].pinned == META_PIN_ON,
                                  NULL);
        if (rc == -ENOENT) /* a row the tree never had (made by the store alone, as in tests) */
            rc = 0;
        else if (rc)
            replica_fail(replica, rc, "pinning a node failed: %s", strerror(-rc));
    }
    free(pins);
    return rc;
}

/*
 * Rebuilds the tree CRDT and the clock: from the tree checkpoint and the
 * tree ops logged after it, or from the whole log when there is no usable
 * checkpoint (or `full`). The clock's counter is the highest in the log (or
 * the checkpoint's, if higher), its seq this replica's count of ops.
 */
static int tree_build(struct crdt_tree **out, struct crdt_clock *out_clock, size_t *out_replayed,
                      bool *out_from_checkpoint, struct meta_replica *replica, bool full)
{
    struct crdt_tree *tree = NULL;
    struct crdt_vv covered = {0}, held = {0};
    uint64_t counter = 0, log_counter = 0;
    int rc = 0;
    if (!full)
        rc = tree_checkpoint_load(&tree, &covered, &counter, replica);
    *out_from_checkpoint = tree != NULL;
    if (!rc && !tree && (rc = crdt_tree_new(&tree)))
        replica_fail(replica, rc, "out of memory");
    if (!rc)
        rc = tree_replay(out_replayed, replica, tree, &covered);
    if (!rc)
        rc = tree_apply_pins(replica, tree);
    if (!rc && ((rc = meta_oplog_max_counter(&log_counter, replica->store)) ||
                (rc = meta_vv_load(&held, replica->store))))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (!rc) {
        uint64_t self = meta_store_replica(replica->store);
        crdt_clock_init(out_clock, self);
        out_clock->counter = counter > log_counter ? counter : log_counter;
        out_clock->seq = crdt_vv_get(&held, self);
    }
    crdt_vv_free(&covered);
    crdt_vv_free(&held);
    if (rc) {
        crdt_tree_free(tree);
        return rc;
    }
    *out = tree;
    return 0;
}

/* Rebuilds the in-memory tree and clock from the store (at open, after a failed change). */
static int tree_rebuild(struct meta_replica *replica)
{
    struct crdt_tree *tree;
    size_t replayed = 0;
    bool from_checkpoint = false;
    replica->checkpoint_note[0] = '\0';
    int rc = tree_build(&tree, &replica->clock, &replayed, &from_checkpoint, replica, false);
    if (rc)
        return rc;
    crdt_tree_free(replica->tree);
    replica->tree = tree;
    crdt_tree_set_labeler(replica->tree, label_of, replica);
    replica->replayed_tree_ops = replayed;
    replica->tree_from_checkpoint = from_checkpoint;
    /* No checkpoint (or an unusable one): the next one is due as soon as there is a tree. */
    replica->tree_ops_unsaved = from_checkpoint ? replayed : replayed + 1;
    return 0;
}

/*
 * After a failed change (rc): the text cache and the tree go back to what
 * the store holds; if even that fails, the message says to remount.
 */
static void memory_from_store(struct meta_replica *replica, int rc)
{
    text_cache_clear(replica);
    if (tree_rebuild(replica) != 0)
        replica_fail(replica, rc,
                     "%s; and rebuilding the tree from the log failed too: remount the share",
                     replica->errmsg);
}

/*
 * Writes the tree checkpoint: a snapshot of the tree in memory, which holds
 * exactly the logged tree ops (the caller is between transactions, or at
 * the end of one whose ops are all applied), with the version vector.
 */
static int tree_checkpoint_write(struct meta_replica *replica)
{
    struct crdt_buf state = {0};
    struct crdt_vv held = {0};
    int rc = crdt_tree_snapshot(replica->tree, &state, false);
    if (rc)
        replica_fail(replica, rc, "snapshot of the tree failed: %s", strerror(-rc));
    if (!rc && (rc = meta_vv_load(&held, replica->store)))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (!rc && (rc = meta_checkpoint_put(replica->store, TREE_CHECKPOINT, &held,
                                         replica->clock.counter, state.data, state.len)))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    crdt_vv_free(&held);
    crdt_buf_free(&state);
    return rc;
}

static int text_cache_save_all(struct meta_replica *replica);

/*
 * Writes the due checkpoints in a transaction of their own: the tree's, and
 * with `texts` the states of cached documents the store lacks part of. On
 * failure nothing changed in the store (the log still holds everything) and
 * the text cache is emptied (its bookkeeping may have run ahead).
 */
static int checkpoint_write(struct meta_replica *replica, bool texts)
{
    int rc = meta_replica_group_commit(replica);
    if (rc)
        return rc;
    bool tree = replica->tree_ops_unsaved > 0;
    rc = meta_store_txn_begin(replica->store);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (texts)
        rc = text_cache_save_all(replica);
    if (!rc && tree)
        rc = tree_checkpoint_write(replica);
    if (!rc && (rc = meta_store_txn_commit(replica->store)))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    else if (rc)
        meta_store_txn_rollback(replica->store);
    if (rc)
        text_cache_clear(replica);
    else if (tree)
        replica->tree_ops_unsaved = 0;
    return rc;
}

/* Whether enough tree ops went by since the last tree checkpoint to write one. */
static bool checkpoint_due(const struct meta_replica *replica)
{
    size_t every = replica->checkpoint_every;
    if (!every) {
        every = crdt_tree_node_count(replica->tree) / 8;
        if (every < CHECKPOINT_MIN_OPS)
            every = CHECKPOINT_MIN_OPS;
    }
    return replica->tree_ops_unsaved >= every;
}

static const char *label_of(void *ctx, uint64_t replica_id)
{
    /* Device names for conflict copies; a small cache keeps this pure per call. */
    struct meta_replica *replica = ctx;
    static _Thread_local char name[META_NAME_MAX + 1];
    struct meta_device device;
    if (meta_device_get(&device, replica->store, replica_id) != 0)
        return NULL;
    snprintf(name, sizeof(name), "%s", device.name);
    return name;
}

/* ---------- transactions ---------- */

static void saves_forget(struct meta_replica *replica);

/*
 * After the group's transaction was lost (its commit failed, or SQLite
 * rolled it back after an I/O error): memory goes back in step with the
 * store, and the group's change events and remembered saves, which name
 * changes that never happened, are dropped.
 */
static void group_lost(struct meta_replica *replica)
{
    replica->group_open = false;
    replica->pending_len = 0;
    replica->moves_len = 0;
    saves_forget(replica);
    memory_from_store(replica, -EIO);
}

static int commit_node(struct meta_replica *replica, const struct meta_node *node);
static int txn_begin_grouped(struct meta_replica *replica, struct crdt_clock *saved);
static int txn_end(struct meta_replica *replica, int rc, const struct crdt_clock *saved);

/*
 * Commits the files whose commit a save deferred, as one grouped change.
 * A file no longer dirty (fsync'ed meanwhile) or gone is skipped.
 */
static int due_commit(struct meta_replica *replica)
{
    if (!replica->due_len)
        return 0;
    struct crdt_clock saved;
    int rc = txn_begin_grouped(replica, &saved);
    if (rc)
        return rc;
    for (size_t i = 0; i < replica->due_len && !rc; i++) {
        struct meta_node node;
        int got = meta_node_get(&node, replica->store, &replica->due[i]);
        if (got == -ENOENT)
            continue;
        if (got) {
            rc = replica_fail(replica, got, "%s", meta_store_errmsg(replica->store));
            break;
        }
        if (node.kind == META_NODE_FILE && node.wc_state == META_WC_DIRTY)
            rc = commit_node(replica, &node);
        meta_node_clear(&node);
    }
    rc = txn_end(replica, rc, &saved);
    /* On failure the files stay DIRTY: the next commit point or open commits them. */
    replica->due_len = 0;
    return rc;
}

/* Commits the open group as it is (no deferred commits run). */
static int group_commit_now(struct meta_replica *replica)
{
    if (!replica->group_open)
        return 0;
    int rc = meta_store_txn_commit(replica->store);
    if (rc) {
        /* Counters handed out stay taken: the clock never goes back (see txn_end). */
        struct crdt_clock saved = replica->clock;
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        group_lost(replica);
        if (saved.counter > replica->clock.counter)
            replica->clock.counter = saved.counter;
        return rc;
    }
    replica->group_open = false;
    changes_flush(replica, true);
    /* The changes stand whatever happens to the checkpoint (a failure only delays it). */
    if (checkpoint_due(replica))
        (void)checkpoint_write(replica, false);
    return 0;
}

int meta_replica_group_commit(struct meta_replica *replica)
{
    int rc = due_commit(replica);
    int committed = group_commit_now(replica);
    return rc ? rc : committed;
}

/*
 * DIR/grouped exists while a replica runs grouped: found at open, the last
 * grouped run stopped without committing its last group (a crash), which may
 * have left working copies of new files with no node (orphans_clean).
 */
static void grouped_mark_path(char *out, size_t len, const struct meta_replica *replica)
{
    snprintf(out, len, "%s/grouped", meta_store_dir(replica->store));
}

int meta_replica_set_grouped(struct meta_replica *replica, bool grouped)
{
    char path[4096];
    grouped_mark_path(path, sizeof(path), replica);
    if (grouped && !replica->group_mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return replica_fail(replica, -errno, "cannot create %s: %s", path, strerror(errno));
        close(fd);
    } else if (!grouped && replica->group_mode) {
        int rc = meta_replica_group_commit(replica);
        if (rc)
            return rc; /* the mark stays: the next open looks for what the group left */
        if (unlink(path) != 0 && errno != ENOENT)
            return replica_fail(replica, -errno, "cannot remove %s: %s", path, strerror(errno));
    }
    replica->group_mode = grouped;
    return 0;
}

/*
 * Removes the working copies a lost group left: files made for new nodes
 * whose creation never committed. Such a node's id is the timestamp of an
 * op of this replica past the log's highest counter (the clock, just
 * rebuilt from the log), which no committed node can have; each candidate
 * is checked against the store all the same. A failure only leaves files.
 */
static int orphans_clean(struct meta_replica *replica)
{
    char files[4096];
    snprintf(files, sizeof(files), "%s/files", meta_store_dir(replica->store));
    int rc = 0;
    for (int fan = 0; fan < 256 && !rc; fan++) {
        char sub[4200];
        snprintf(sub, sizeof(sub), "%s/%02x", files, fan);
        DIR *dir = opendir(sub);
        if (!dir)
            continue; /* not made yet */
        struct dirent *entry;
        while (!rc && (entry = readdir(dir))) {
            struct meta_id id;
            if (strlen(entry->d_name) != 2 * META_ID_LEN)
                continue;
            bool hex = true;
            for (int i = 0; i < META_ID_LEN && hex; i++) {
                unsigned byte;
                hex = sscanf(entry->d_name + 2 * i, "%2x", &byte) == 1;
                id.bytes[i] = (uint8_t)byte;
            }
            struct crdt_node_id node = from_meta_id(&id);
            if (!hex || node.lo != replica->clock.replica || node.hi >= (1ULL << 63) ||
                node.hi <= replica->clock.counter)
                continue;
            struct meta_node row;
            int got = meta_node_get(&row, replica->store, &id);
            if (got == 0) {
                meta_node_clear(&row);
                continue;
            }
            if (got != -ENOENT)
                rc = replica_fail(replica, got, "%s", meta_store_errmsg(replica->store));
            else if (unlinkat(dirfd(dir), entry->d_name, 0) != 0 && errno != ENOENT)
                rc = replica_fail(replica, -errno, "cannot remove %s/%s: %s", sub, entry->d_name,
                                  strerror(errno));
        }
        closedir(dir);
    }
    return rc;
}

bool meta_replica_group_pending(const struct meta_replica *replica)
{
    return replica->group_open || replica->due_len > 0;
}

/* Begins a change in a transaction of its own (an open group is committed first). */
static int txn_begin(struct meta_replica *replica, struct crdt_clock *saved)
{
    /*
     * A save's content that fails to commit here stays DIRTY, and the next
     * commit point (or open) commits it: no reason to fail this change.
     */
    (void)due_commit(replica);
    int rc = group_commit_now(replica);
    if (rc)
        return rc;
    replica->change_grouped = false;
    *saved = replica->clock;
    replica->pending_len = 0;
    replica->moves_len = 0;
    rc = meta_store_txn_begin(replica->store);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    return 0;
}

/*
 * Begins a change that may join the group: in grouped mode, a savepoint of
 * the group's transaction (opened here if need be); else as txn_begin.
 */
static int txn_begin_grouped(struct meta_replica *replica, struct crdt_clock *saved)
{
    if (!replica->group_mode)
        return txn_begin(replica, saved);
    *saved = replica->clock;
    replica->moves_len = 0;
    int rc;
    if (!replica->group_open) {
        replica->pending_len = 0;
        if ((rc = meta_store_txn_begin(replica->store)))
            return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        replica->group_open = true;
    }
    replica->pending_mark = replica->pending_len;
    if ((rc = store_save_begin(replica->store))) {
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        if (sqlite3_get_autocommit(replica->store->db)) {
            meta_store_txn_rollback(replica->store);
            group_lost(replica);
        }
        return rc;
    }
    replica->change_grouped = true;
    return 0;
}

/*
 * Ends a grouped change: releases its savepoint, or rolls back to it. The
 * group's earlier changes stay unless SQLite rolled back the whole
 * transaction (an I/O error), which loses them as a crash would.
 */
static int grouped_end(struct meta_replica *replica, int rc, const struct crdt_clock *saved)
{
    replica->change_grouped = false;
    if (rc && !replica->errmsg[0])
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    int ended = store_save_end(replica->store, rc);
    if (!ended)
        return 0;
    if (!rc)
        replica_fail(replica, ended, "%s", meta_store_errmsg(replica->store));
    if (sqlite3_get_autocommit(replica->store->db)) {
        meta_store_txn_rollback(replica->store);
        group_lost(replica);
    } else {
        /* The savepoint is undone: the store holds the group up to this change. */
        replica->pending_len = replica->pending_mark;
        replica->moves_len = 0;
        memory_from_store(replica, ended);
    }
    if (saved->counter > replica->clock.counter)
        replica->clock.counter = saved->counter;
    return ended;
}

/*
 * Ends a change: commits if rc is 0, else rolls back. On any failure the
 * in-memory tree and clock are put back in step with the store.
 */
static int txn_end(struct meta_replica *replica, int rc, const struct crdt_clock *saved)
{
    if (replica->change_grouped)
        return grouped_end(replica, rc, saved);
    if (!rc) {
        rc = meta_store_txn_commit(replica->store);
        if (rc)
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    } else {
        if (!replica->errmsg[0])
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        meta_store_txn_rollback(replica->store);
    }
    if (rc) {
        memory_from_store(replica, rc);
        /*
         * The log gives the seq; the counter stays where it was before the
         * change, which may be past the log's (merged versions take counters
         * of no op: apply_text_ops), so it never hands out one again.
         */
        if (saved->counter > replica->clock.counter)
            replica->clock.counter = saved->counter;
        changes_flush(replica, false);
        replica->moves_len = 0;
        return rc;
    }
    changes_flush(replica, true);
    /* The change stands whatever happens to the checkpoint (a failure only delays it). */
    if (checkpoint_due(replica))
        (void)checkpoint_write(replica, false);
    return 0;
}

/* ---------- the materialized tree ---------- */

static int node_by_ino(struct meta_node *out, struct meta_replica *replica, uint64_t ino)
{
    int rc = meta_node_get_by_ino(out, replica->store, ino);
    if (rc == -ENOENT)
        return rc;
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    return 0;
}

static int node_by_id(struct meta_node *out, struct meta_replica *replica, struct crdt_node_id id)
{
    struct meta_id mid = to_meta_id(id);
    int rc = meta_node_get(out, replica->store, &mid);
    if (rc && rc != -ENOENT)
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    return rc;
}

/* Attributes a node gets when an op creates it before its attribute op arrives. */
static void default_attrs(struct meta_node *node, uint8_t kind)
{
    node->kind = meta_kind_of(kind);
    node->mode = type_bits_of_kind(kind) | (kind == CRDT_KIND_DIR ? 0755 : 0644);
    node->mtime_ns = node->ctime_ns = realtime_ns();
}

static bool node_shown(const struct meta_node *node);
static int settle_moves(struct meta_replica *replica, bool remote);

static int move_cmp(const void *a, const void *b)
{
    const struct pending_move *x = a, *y = b;
    int by_child = crdt_node_id_cmp(x->child, y->child);
    return by_child ? by_child : crdt_ts_cmp(x->ts, y->ts);
}

/*
 * Inserts a new node's row with its newest tree op of this change as its
 * newest move (rule 3b's bookkeeping), so that settle_moves need not update
 * a row just made: a remote batch of creates costs no statement more.
 * replica->moves is sorted by child (materialize).
 */
static int insert_row(uint64_t *ino, struct meta_replica *replica, struct meta_node *node)
{
    struct crdt_node_id child = from_meta_id(&node->id);
    size_t lo = 0, hi = replica->moves_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (crdt_node_id_cmp(replica->moves[mid].child, child) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < replica->moves_len && crdt_node_id_eq(replica->moves[end].child, child))
        end++;
    if (end > lo) {
        const struct pending_move *newest = &replica->moves[end - 1];
        node->moved = newest->ts;
        node->deleted = newest->deletes;
        node->deleted_saw = newest->deletes ? newest->seen_edit : (struct crdt_ts){0, 0};
    }
    int rc = meta_node_insert(ino, replica->store, node);
    for (size_t i = lo; !rc && i < end; i++)
        replica->moves[i].done = true; /* a new node has no edit: no pin to decide */
    return rc;
}

/* The inode number of node `id` for a change event; 0 if it has no row (no event then). */
static uint64_t event_ino(struct meta_replica *replica, struct meta_id id, struct meta_id *last_id,
                          uint64_t *last_ino)
{
    if (*last_ino && !memcmp(last_id->bytes, id.bytes, META_ID_LEN))
        return *last_ino;
    uint64_t ino = 0;
    if (meta_node_ino(&ino, replica->store, &id) != 0)
        return 0;
    *last_id = id;
    *last_ino = ino;
    return ino;
}

/* The timestamps of a batch of tree ops, sorted (for born_in). */
struct batch_ts {
    struct crdt_ts *ts;
    size_t len;
};

static int ts_cmp(const void *a, const void *b)
{
    return crdt_ts_cmp(*(const struct crdt_ts *)a, *(const struct crdt_ts *)b);
}

static bool born_in(const struct batch_ts *batch, struct crdt_ts birth)
{
    return batch && batch->len && bsearch(&birth, batch->ts, batch->len, sizeof(birth), ts_cmp);
}

/*
 * Brings the materialized rows of `ids` in line with the tree CRDT: parent
 * and display name of visible nodes, the trash for hidden ones. `fresh`
 * (may be NULL) holds the attributes of the node this change makes (or
 * makes again: a directory's id can come back); *fresh_ino (may be NULL)
 * gets its inode number. A new node the change did not make gets default
 * attributes until its attribute op arrives. The old place of a node is
 * read only when someone listens for change events. `batch` (may be NULL):
 * the remote tree ops this change applies.
 */
static int materialize(struct meta_replica *replica, const struct crdt_tree_changes *changes,
                       const struct meta_node *fresh, uint64_t *fresh_ino, bool remote,
                       const struct batch_ts *batch)
{
    bool tell = replica->change_fn != NULL;
    struct meta_id last_parent = {{0}};
    uint64_t last_parent_ino = 0;
    if (replica->moves_len > 1)
        qsort(replica->moves, replica->moves_len, sizeof(*replica->moves), move_cmp);
    for (size_t i = 0; i < changes->len; i++) {
        struct crdt_tree_entry entry;
        int rc = crdt_tree_get(replica->tree, changes->ids[i], &entry);
        if (rc)
            return replica_fail(replica, -EIO, "the tree lost a node it reported");
        struct meta_id mid = to_meta_id(entry.id);
        struct meta_id parent = to_meta_id(entry.visible ? entry.parent : CRDT_NODE_TRASH);
        bool is_fresh = fresh && !memcmp(fresh->id.bytes, mid.bytes, META_ID_LEN);
        struct meta_node old = {0};
        bool exists = true, was_shown = false;
        uint64_t ino = 0;
        if (tell) {
            rc = meta_node_get(&old, replica->store, &mid);
            exists = rc == 0;
            if (rc && rc != -ENOENT)
                return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
            if (exists) {
                was_shown = node_shown(&old);
                ino = old.ino;
            }
        }
        if (is_fresh) {
            struct meta_node node = *fresh;
            node.has_parent = true;
            node.parent = parent;
            snprintf(node.name, sizeof(node.name), "%s", entry.name);
            if (entry.kind)
                node.kind = meta_kind_of(entry.kind);
            /* Usually new (a file's id is its create op's); a directory's id can come back. */
            rc = tell && exists ? -EEXIST : insert_row(&ino, replica, &node);
            if (rc == -EEXIST)
                rc = meta_node_put(&ino, replica->store, &node);
            if (!rc && fresh_ino)
                *fresh_ino = ino;
        } else {
            /*
             * A node first moved by an op of this batch is new unless an older
             * op of it arrived late: try the insert first then, not the update.
             */
            bool likely_new = !exists || (!tell && born_in(batch, entry.birth));
            rc = likely_new ? -ENOENT
                            : meta_node_place(replica->store, &mid, &parent, entry.name,
                                              entry.kind ? meta_kind_of(entry.kind) : 0);
            if (rc == -ENOENT) {
                exists = false;
                struct meta_node node;
                memset(&node, 0, sizeof(node));
                default_attrs(&node, entry.kind);
                node.id = mid;
                node.has_parent = true;
                node.parent = parent;
                snprintf(node.name, sizeof(node.name), "%s", entry.name);
                rc = insert_row(&ino, replica, &node);
                if (rc == -EEXIST && likely_new && !tell) /* it was there after all */
                    rc = meta_node_place(replica->store, &mid, &parent, entry.name,
                                         entry.kind ? meta_kind_of(entry.kind) : 0);
            }
        }
        if (rc) {
            meta_node_clear(&old);
            return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        }
        if (!tell)
            continue;
        /* Tell the kernel about both places, so cached entries drop. */
        uint64_t parent_ino;
        if (was_shown &&
            (parent_ino = event_ino(replica, old.parent, &last_parent, &last_parent_ino)) != 0)
            change_add(replica, META_CHANGE_ENTRY, ino, parent_ino, old.name, remote);
        meta_node_clear(&old);
        if (entry.visible && (parent_ino = event_ino(replica, to_meta_id(entry.parent),
                                                     &last_parent, &last_parent_ino)) != 0)
            change_add(replica, META_CHANGE_ENTRY, ino, parent_ino, entry.name, remote);
        change_add(replica, META_CHANGE_ATTR, ino, 0, NULL, remote);
    }
    /* The rows exist now: the tree ops that made these changes settle rule 3b. */
    return replica->moves_len ? settle_moves(replica, remote) : 0;
}

/* ---------- rule 3b (README "Rule 3b") ---------- */

/* Remembers a tree op of the open change until the rows it moved exist (settle_moves). */
static int move_note(struct meta_replica *replica, const struct crdt_tree_op *op)
{
    struct pending_move *grown =
        store_grow(replica->moves, &replica->moves_cap, replica->moves_len, sizeof(*grown));
    if (!grown)
        return replica_fail(replica, -ENOMEM, "out of memory");
    replica->moves = grown;
    replica->moves[replica->moves_len++] = (struct pending_move){
        .ts = op->ts,
        .child = op->child,
        .deletes = crdt_node_id_eq(op->parent, CRDT_NODE_TRASH),
        .seen_edit = op->seen_edit,
    };
    return 0;
}

/* Pins or unpins a node, in the tree and in its row (which remembers a pin that was). */
static int pin_set(struct meta_replica *replica, const struct meta_id *id, bool pin,
                   struct crdt_tree_changes *changes)
{
    int rc = crdt_tree_set_pinned(replica->tree, from_meta_id(id), pin, changes);
    if (rc)
        return replica_fail(replica, rc, "pinning a node failed: %s", strerror(-rc));
    rc = meta_node_set_pinned(replica->store, id, pin ? META_PIN_ON : META_PIN_CLEARED);
    return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
}

/*
 * The tree's half of rule 3b: each node a tree op of this change moved
 * records its newest tree op, and a node whose newest op deletes it is
 * pinned exactly when it holds an edit newer than the newest edit that
 * delete had seen. Every edit held here names a move older than such a
 * delete, since delivery is causal (an edit made after seeing the delete
 * arrives after it), so "newer than what the delete saw" is "made without
 * seeing the delete" (the content side is check_edit). A delete made here
 * saw every edit: it unpins, as any newer move does.
 */
static int settle_moves(struct meta_replica *replica, bool remote)
{
    struct crdt_tree_changes changes = {0};
    int rc = 0;
    for (size_t i = 0; !rc && i < replica->moves_len; i++) {
        const struct pending_move *move = &replica->moves[i];
        if (move->done)
            continue;
        struct meta_id id = to_meta_id(move->child);
        struct meta_node_moved row;
        rc = meta_node_note_move(&row, replica->store, &id, move->ts, move->deletes,
                                 move->seen_edit);
        if (rc) {
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
            break;
        }
        bool pin = move->deletes && crdt_ts_cmp(row.edited, move->seen_edit) > 0;
        if (row.newer && pin != (row.pinned == META_PIN_ON))
            rc = pin_set(replica, &id, pin, &changes);
    }
    replica->moves_len = 0;
    if (!rc && changes.len)
        rc = materialize(replica, &changes, NULL, NULL, remote, NULL);
    crdt_tree_changes_free(&changes);
    return rc;
}

/* ---------- logging ops ---------- */

static int log_op(struct meta_replica *replica, enum meta_op_kind kind, struct crdt_ts ts,
                  uint64_t seq, struct crdt_node_id node, const struct crdt_buf *body)
{
    if (crdt_buf_status(body))
        return -ENOMEM;
    struct meta_op op = {
        .replica = ts.replica,
        .seq = seq,
        .counter = ts.counter,
        .kind = kind,
        .node = to_meta_id(node),
        .author = ts.replica,
        .body = body->data,
        .body_len = body->len,
    };
    int rc = meta_oplog_append(replica->store, &op);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    return 0;
}

static int log_tree_op(struct meta_replica *replica, const struct crdt_tree_op *op)
{
    int rc = move_note(replica, op);
    if (rc)
        return rc;
    replica->tree_ops_unsaved++;
    struct crdt_buf body = {0};
    crdt_tree_op_encode(&body, op);
    rc = log_op(replica, META_OP_TREE, op->ts, replica->clock.seq, op->child, &body);
    crdt_buf_free(&body);
    return rc;
}

/*
 * Logs an attribute op (README "Op bodies"; still format 1) setting the
 * `fields` of node `id` to node's values, and stamps those fields of
 * node->attr_ts with its timestamp: each field is a last-writer-wins
 * register, and the caller writes the row with the stamps.
 */
static int log_attr_op(struct meta_replica *replica, struct crdt_node_id id, struct meta_node *node,
                       unsigned fields)
{
    if (!node->target)
        fields &= ~(unsigned)META_ATTR_TARGET;
    if (!fields)
        return 0; /* mask 0 would be a content version */
    uint64_t seq;
    struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
    struct meta_attr_body op = {
        .format = 1,
        .mask = (uint8_t)fields,
        .mode = node->mode,
        .uid = node->uid,
        .gid = node->gid,
        .rdev = node->rdev,
        .mtime_ns = node->mtime_ns,
        .target = node->target,
        .target_len = node->target ? strlen(node->target) : 0,
    };
    for (int field = 0; field < META_ATTR_FIELDS; field++)
        if (fields & (1u << field))
            node->attr_ts[field] = ts;
    struct crdt_buf body = {0};
    meta_attr_body_encode(&body, &op);
    int rc = log_op(replica, META_OP_ATTR, ts, seq, id, &body);
    crdt_buf_free(&body);
    return rc;
}

/* ---------- lifecycle ---------- */

static int replica_init(struct meta_replica **out, struct meta_err *err, struct meta_store *store,
                        bool fresh)
{
    struct meta_replica *replica = calloc(1, sizeof(*replica));
    if (!replica) {
        meta_store_close(store);
        if (err)
            snprintf(err->msg, sizeof(err->msg), "out of memory");
        return -ENOMEM;
    }
    replica->store = store;
    /* Closing a file costs no fsync; a program's fsync makes everything durable. */
    int rc = meta_store_set_lazy(store, true);
    if (!rc)
        rc = tree_rebuild(replica);
    char mark[4096];
    grouped_mark_path(mark, sizeof(mark), replica);
    if (!rc && !fresh && access(mark, F_OK) == 0) {
        /*
         * The last grouped run crashed. Leftover files cost only disk space:
         * if they cannot be removed now, the mark stays and the next open
         * tries again, and this open goes on.
         */
        if (orphans_clean(replica) == 0)
            (void)unlink(mark);
        replica->errmsg[0] = '\0';
    }
    if (!rc && fresh) {
        /* The root and the trash are rows like any other; the root is inode 1. */
        struct crdt_clock saved;
        rc = txn_begin(replica, &saved);
        if (!rc) {
            struct meta_node root = {.kind = META_NODE_DIR,
                                     .mode = S_IFDIR | 0755,
                                     .uid = (uint32_t)getuid(),
                                     .gid = (uint32_t)getgid(),
                                     .ino = META_INO_ROOT};
            root.mtime_ns = root.ctime_ns = realtime_ns();
            root.id = to_meta_id(CRDT_NODE_ROOT);
            rc = meta_node_put(NULL, store, &root);
            if (!rc) {
                struct meta_node trash = root;
                trash.id = to_meta_id(CRDT_NODE_TRASH);
                trash.mode = S_IFDIR | 0700;
                trash.ino = 0;
                rc = meta_node_put(NULL, store, &trash);
            }
            rc = txn_end(replica, rc, &saved);
        }
    }
    if (rc) {
        if (err)
            snprintf(err->msg, sizeof(err->msg), "%s",
                     replica->errmsg[0]            ? replica->errmsg
                     : meta_store_errmsg(store)[0] ? meta_store_errmsg(store)
                     : fresh                       ? "setting up the new share failed"
                                                   : "loading the share failed");
        meta_replica_close(replica);
        return rc;
    }
    replica->ready = true;
    *out = replica;
    return 0;
}

int meta_replica_create(struct meta_replica **out, struct meta_err *err, const char *dir,
                        const struct meta_share_params *params)
{
    struct meta_store *store;
    int rc = meta_store_create(&store, err, dir, params);
    if (rc)
        return rc;
    return replica_init(out, err, store, true);
}

int meta_replica_open(struct meta_replica **out, struct meta_err *err, const char *dir)
{
    struct meta_store *store;
    int rc = meta_store_open(&store, err, dir);
    if (rc)
        return rc;
    return replica_init(out, err, store, false);
}

void meta_replica_close(struct meta_replica *replica)
{
    if (!replica)
        return;
    if (meta_replica_set_grouped(replica, false) != 0)
        meta_store_txn_rollback(replica->store); /* lost, as a crash would lose it */
    /* Nothing is lost if this fails: the next open replays more of the log. */
    if (replica->ready)
        (void)checkpoint_write(replica, true);
    crdt_tree_free(replica->tree);
    text_cache_clear(replica);
    meta_store_close(replica->store);
    free(replica->pending);
    free(replica->moves);
    free(replica->writers);
    free(replica->due);
    free(replica);
}

const char *meta_replica_errmsg(const struct meta_replica *replica)
{
    return replica->errmsg;
}

struct meta_store *meta_replica_store(struct meta_replica *replica)
{
    return replica->store;
}

void meta_replica_subscribe(struct meta_replica *replica, meta_change_fn fn, void *ctx)
{
    replica->change_fn = fn;
    replica->change_ctx = ctx;
}

int meta_replica_checkpoint(struct meta_replica *replica)
{
    if (!replica->tree_ops_unsaved) {
        bool texts = false;
        for (size_t i = 0; i < TEXT_CACHE_SLOTS; i++)
            texts |= replica->text_cache[i].doc && replica->text_cache[i].unsaved;
        if (!texts)
            return 0;
    }
    return checkpoint_write(replica, true);
}

void meta_replica_set_checkpoint_interval(struct meta_replica *replica, size_t tree_ops)
{
    replica->checkpoint_every = tree_ops;
}

void meta_replica_info(struct meta_replica_info *out, const struct meta_replica *replica)
{
    memset(out, 0, sizeof(*out));
    out->tree_nodes = crdt_tree_node_count(replica->tree);
    out->tree_from_checkpoint = replica->tree_from_checkpoint;
    out->replayed_tree_ops = replica->replayed_tree_ops;
    out->tree_ops_unsaved = replica->tree_ops_unsaved;
    snprintf(out->checkpoint_note, sizeof(out->checkpoint_note), "%s", replica->checkpoint_note);
    for (size_t i = 0; i < TEXT_CACHE_SLOTS; i++)
        out->cached_texts += replica->text_cache[i].doc != NULL;
}

int meta_replica_text(char **out, size_t *out_len, struct meta_replica *replica, uint64_t ino)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    struct text_slot loaded;
    rc = text_load(&loaded, replica, &node.id, false);
    meta_node_clear(&node);
    if (!rc && !loaded.doc)
        rc = -ENOENT;
    if (!rc) {
        *out = (char *)loaded.content; /* crdt_text_content's NUL-terminated string */
        *out_len = loaded.content_len;
        loaded.content = NULL;
    }
    text_slot_free(&loaded);
    return rc;
}

int meta_replica_check(struct meta_replica *replica)
{
    /* The tree: rebuilt from the whole log, it must be the tree in memory, byte for byte. */
    struct crdt_tree *full = NULL;
    struct crdt_clock clock;
    size_t replayed = 0;
    bool from_checkpoint = false;
    struct crdt_buf have = {0}, want = {0};
    int rc = tree_build(&full, &clock, &replayed, &from_checkpoint, replica, true);
    if (!rc && ((rc = crdt_tree_snapshot(replica->tree, &have, false)) ||
                (rc = crdt_tree_snapshot(full, &want, false))))
        replica_fail(replica, rc, "snapshot of the tree failed: %s", strerror(-rc));
    if (!rc && (have.len != want.len || memcmp(have.data, want.data, have.len) != 0))
        rc = replica_fail(replica, -EUCLEAN,
                          "the tree in memory (%zu nodes) differs from the one the op log gives "
                          "(%zu nodes)",
                          crdt_tree_node_count(replica->tree), crdt_tree_node_count(full));
    if (!rc && clock.counter > replica->clock.counter)
        rc = replica_fail(replica, -EUCLEAN, "the clock is behind the op log");
    crdt_tree_free(full);
    crdt_buf_free(&have);
    crdt_buf_free(&want);
    /* Each cached document: the store (state plus logged ops) must give the same text. */
    for (size_t i = 0; !rc && i < TEXT_CACHE_SLOTS; i++) {
        struct text_slot *slot = &replica->text_cache[i];
        if (!slot->doc)
            continue;
        struct text_slot loaded;
        rc = text_load(&loaded, replica, &slot->id, false);
        if (!rc && (!loaded.doc || loaded.content_len != slot->content_len ||
                    memcmp(loaded.content, slot->content, slot->content_len) != 0))
            rc = replica_fail(replica, -EUCLEAN,
                              "a cached text document differs from the one the store gives");
        text_slot_free(&loaded);
    }
    return rc;
}

/* ---------- reading ---------- */

static bool is_dirty(const struct meta_node *node)
{
    return node->kind == META_NODE_FILE && node->wc_state == META_WC_DIRTY;
}

static bool node_shown(const struct meta_node *node)
{
    return node->has_parent && !crdt_node_id_eq(from_meta_id(&node->parent), CRDT_NODE_TRASH);
}

static void fill_attr(struct meta_replica *replica, struct meta_attr *out,
                      const struct meta_node *node)
{
    memset(out, 0, sizeof(*out));
    out->ino = node->ino;
    out->mode = node->mode;
    out->uid = node->uid;
    out->gid = node->gid;
    out->nlink = 1;
    out->rdev = node->rdev;
    out->size = node->kind == META_NODE_SYMLINK && node->target ? strlen(node->target) : node->size;
    out->mtime_ns = node->mtime_ns;
    out->atime_ns = node->mtime_ns;
    out->ctime_ns = node->ctime_ns;
    if (!node_shown(node) && node->ino != META_INO_ROOT)
        out->nlink = 0; /* deleted, still open somewhere: fstat says so (the root has no parent) */
    if (node->kind == META_NODE_FILE) {
        /*
         * A file's times live on its working copy, which programs write
         * through (and setattr sets with utimensat); uncommitted writes also
         * show there first.
         */
        struct stat st;
        if (meta_wc_stat(&st, replica->store, &node->id) == 0) {
            if (is_dirty(node))
                out->size = (uint64_t)st.st_size;
            out->atime_ns = (int64_t)st.st_atim.tv_sec * 1000000000 + st.st_atim.tv_nsec;
            out->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            int64_t wc_ctime = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
            if (wc_ctime > out->ctime_ns)
                out->ctime_ns = wc_ctime;
        }
    }
}

int meta_replica_getattr(struct meta_attr *out, struct meta_replica *replica, uint64_t ino)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    fill_attr(replica, out, &node);
    meta_node_clear(&node);
    return 0;
}

/* The directory with inode number `ino` (-ENOENT, -ENOTDIR); release with meta_node_clear. */
static int dir_by_ino(struct meta_node *out, struct meta_replica *replica, uint64_t ino)
{
    int rc = node_by_ino(out, replica, ino);
    if (rc)
        return rc;
    if (out->kind != META_NODE_DIR) {
        meta_node_clear(out);
        return -ENOTDIR;
    }
    return 0;
}

/* The child `name` of directory `parent_ino`; the directory too when asked. */
static int child_of(struct meta_node *out, struct meta_node *dir_out, struct meta_replica *replica,
                    uint64_t parent_ino, const char *name)
{
    struct meta_node dir;
    int rc = dir_by_ino(&dir, replica, parent_ino);
    if (rc)
        return rc;
    if (strlen(name) > CRDT_NAME_MAX) {
        meta_node_clear(&dir);
        return -ENAMETOOLONG;
    }
    rc = meta_node_lookup(out, replica->store, &dir.id, name);
    if (rc && rc != -ENOENT)
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (dir_out && !rc)
        *dir_out = dir;
    else
        meta_node_clear(&dir);
    return rc;
}

int meta_replica_lookup(struct meta_attr *out, struct meta_replica *replica, uint64_t parent,
                        const char *name)
{
    struct meta_node node;
    int rc = child_of(&node, NULL, replica, parent, name);
    if (rc)
        return rc;
    fill_attr(replica, out, &node);
    meta_node_clear(&node);
    return 0;
}

static int ino_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct meta_node *)a)->ino, y = ((const struct meta_node *)b)->ino;
    return x < y ? -1 : x > y;
}

int meta_replica_readdir(struct meta_replica *replica, uint64_t ino, uint64_t offset,
                         int (*each)(void *ctx, const struct meta_dirent *entry,
                                     uint64_t next_offset),
                         void *ctx)
{
    struct meta_node dir;
    int rc = dir_by_ino(&dir, replica, ino);
    if (rc)
        return rc;
    struct meta_node *children = NULL;
    size_t count = 0;
    rc = meta_node_list(&children, &count, replica->store, &dir.id);
    meta_node_clear(&dir);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    /* Offsets are inode numbers: a listing resumes right even when entries come and go. */
    if (count)
        qsort(children, count, sizeof(*children), ino_cmp);
    for (size_t i = 0; i < count; i++) {
        if (children[i].ino < offset)
            continue;
        struct meta_dirent entry = {.name = children[i].name};
        fill_attr(replica, &entry.attr, &children[i]);
        if (each(ctx, &entry, children[i].ino + 1))
            break;
    }
    meta_node_list_free(children, count);
    return 0;
}

int meta_replica_readlink(char **out, struct meta_replica *replica, uint64_t ino)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    if (node.kind != META_NODE_SYMLINK || !node.target) {
        meta_node_clear(&node);
        return -EINVAL;
    }
    *out = node.target; /* handed over: meta_node_clear would free it */
    node.target = NULL;
    meta_node_clear(&node);
    return 0;
}

int meta_replica_node_id(struct meta_id *out, struct meta_replica *replica, uint64_t ino)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    *out = node.id;
    meta_node_clear(&node);
    return 0;
}

/* ---------- recent displacements (atomic saves) ---------- */

static void recent_note(struct meta_replica *replica, uint64_t parent_ino, const char *name,
                        struct crdt_node_id node, enum displacement how)
{
    struct recent *slot = &replica->recent[replica->recent_next++ % RECENT_MAX];
    slot->parent_ino = parent_ino;
    snprintf(slot->name, sizeof(slot->name), "%s", name);
    slot->node = node;
    slot->how = how;
    slot->when_ns = monotonic_ns();
}

/* The node displaced from (parent, name) within the window, newest first; NULL if none. */
static struct recent *recent_find(struct meta_replica *replica, uint64_t parent_ino,
                                  const char *name)
{
    int64_t now = monotonic_ns();
    struct recent *best = NULL;
    for (size_t i = 0; i < RECENT_MAX; i++) {
        struct recent *slot = &replica->recent[i];
        if (slot->when_ns == 0 || now - slot->when_ns > SAVE_WINDOW_NS ||
            slot->parent_ino != parent_ino || strcmp(slot->name, name) != 0)
            continue;
        if (!best || slot->when_ns > best->when_ns)
            best = slot;
    }
    return best;
}

static void recent_forget(struct recent *slot)
{
    slot->when_ns = 0;
}

/* Forgets every remembered displacement and birth (they may name changes that were lost). */
static void saves_forget(struct meta_replica *replica)
{
    for (size_t i = 0; i < RECENT_MAX; i++) {
        replica->recent[i].when_ns = 0;
        replica->born[i].when_ns = 0;
    }
}

static void born_note(struct meta_replica *replica, struct crdt_node_id node)
{
    struct born *slot = &replica->born[replica->born_next++ % RECENT_MAX];
    slot->node = node;
    slot->when_ns = monotonic_ns();
}

/* Was `node` made here within the window (an editor's temporary file)? */
static bool born_recently(struct meta_replica *replica, struct crdt_node_id node)
{
    int64_t now = monotonic_ns();
    for (size_t i = 0; i < RECENT_MAX; i++)
        if (replica->born[i].when_ns && now - replica->born[i].when_ns <= SAVE_WINDOW_NS &&
            crdt_node_id_eq(replica->born[i].node, node))
            return true;
    return false;
}

/* ---------- working copies ---------- */

/*
 * Gives a node an empty working copy. Whatever file was at its path is
 * unlinked first, not truncated: a program that still has the old file open
 * keeps reading the old bytes, as POSIX promises for a replaced file.
 */
static int wc_fresh(struct meta_replica *replica, const struct meta_id *id)
{
    int fd;
    /* Usually there is no file yet (a new node): make it without a look first. */
    int rc = meta_wc_open(&fd, replica->store, id, O_WRONLY | O_CREAT | O_EXCL);
    if (rc == -EEXIST) {
        char path[4096];
        rc = meta_wc_path(path, sizeof(path), replica->store, id);
        if (rc)
            return replica_fail(replica, rc, "working copy path too long");
        if (unlink(path) != 0 && errno != ENOENT)
            return replica_fail(replica, -errno, "cannot replace working copy %s: %s", path,
                                strerror(errno));
        rc = meta_wc_open(&fd, replica->store, id, O_WRONLY | O_CREAT | O_EXCL);
    }
    if (rc)
        return replica_fail(replica, rc, "cannot create working copy: %s",
                            meta_store_errmsg(replica->store));
    close(fd);
    return 0;
}

/* Moves node `from`'s working copy file to be node `to`'s (same inode: open fds follow). */
static int wc_move(struct meta_replica *replica, const struct meta_id *from,
                   const struct meta_id *to)
{
    char from_path[4096], to_path[4096];
    int rc = meta_wc_path(from_path, sizeof(from_path), replica->store, from);
    if (!rc)
        rc = meta_wc_path(to_path, sizeof(to_path), replica->store, to);
    if (rc)
        return replica_fail(replica, rc, "working copy path too long");
    /* The fan-out directory of `to` may not exist yet: opening with O_CREAT makes it. */
    int fd;
    rc = meta_wc_open(&fd, replica->store, to, O_WRONLY | O_CREAT);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    close(fd);
    /*
     * An exchange, then an unlink of what was at `to`: ext4 (auto_da_alloc)
     * starts writeback of a file renamed over another, which would cost every
     * temp-and-rename save a flush the program did not ask for. A crash
     * between the two leaves `from` holding `to`'s old bytes; `from` is
     * trashed or clean by then in every caller.
     */
    if (renameat2(AT_FDCWD, from_path, AT_FDCWD, to_path, RENAME_EXCHANGE) != 0 &&
        rename(from_path, to_path) != 0)
        return replica_fail(replica, -errno, "cannot move working copy %s to %s: %s", from_path,
                            to_path, strerror(errno));
    if (unlink(from_path) != 0 && errno != ENOENT)
        return replica_fail(replica, -errno, "cannot remove working copy %s: %s", from_path,
                            strerror(errno));
    return 0;
}

/* Swaps the inode numbers of two nodes (the kernel's view of who is where, see top). */
static int swap_inos(struct meta_replica *replica, const struct meta_id *a, uint64_t ino_a,
                     const struct meta_id *b, uint64_t ino_b)
{
    static const char sql[] = "UPDATE nodes SET ino = ?2 WHERE id = ?1;";
    const struct {
        const struct meta_id *id;
        int64_t ino;
    } steps[] = {{a, -1}, {b, (int64_t)ino_a}, {a, (int64_t)ino_b}};
    for (size_t i = 0; i < 3; i++) {
        sqlite3_stmt *stmt = store_stmt(replica->store, sql);
        if (!stmt)
            return replica_fail(replica, -ENOMEM, "%s", meta_store_errmsg(replica->store));
        store_bind_id(stmt, 1, steps[i].id);
        sqlite3_bind_int64(stmt, 2, steps[i].ino);
        int rc = store_step_done(replica->store, stmt, "swapping inode numbers");
        if (rc)
            return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    }
    return 0;
}

/* Gives a node a fresh inode number: the kernel's old one stays with the unlinked file. */
static int renumber(struct meta_replica *replica, const struct meta_id *id)
{
    static const char set_sql[] = "UPDATE nodes SET ino = ?2 WHERE id = ?1;";
    uint64_t ino;
    int rc = store_take_ino(&ino, replica->store, 0);
    if (rc)
        return replica_fail(replica, rc, "cannot take an inode number: %s",
                            meta_store_errmsg(replica->store));
    sqlite3_stmt *stmt = store_stmt(replica->store, set_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, id);
    store_bind_u64(stmt, 2, ino);
    rc = store_step_done(replica->store, stmt, "renumbering a node");
    return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
}

/* ---------- content commits ---------- */

/* A file is merged as text when it is valid UTF-8 without NUL bytes and at most this big. */
#define TEXT_MAX (8u << 20)

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), no NUL. */
static bool is_text(const uint8_t *bytes, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint8_t c = bytes[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
        if (n == 0 || c > 0xf4 || i + n > len)
            return false;
        uint32_t cp = c & (0x7f >> n);
        for (size_t k = 1; k < n; k++) {
            if ((bytes[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (bytes[i + k] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n;
    }
    return true;
}

/* Reads a whole working copy into a malloc'ed buffer, if it is at most `max` bytes. */
static int wc_read(uint8_t **out, size_t *out_len, bool *too_big, struct meta_replica *replica,
                   const struct meta_id *id, size_t max)
{
    int fd;
    *out = NULL;
    *too_big = false;
    int rc = meta_wc_open(&fd, replica->store, id,
                          O_RDONLY | O_NOATIME); /* our reads are not a program's: leave atime */
    if (rc == -ENOENT)
        return rc; /* the caller's question, not an error */
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size > max) {
        *too_big = true;
        close(fd);
        return 0;
    }
    size_t len = (size_t)st.st_size;
    uint8_t *bytes = malloc(len + 1);
    size_t got = 0;
    while (bytes && got < len) {
        ssize_t n = pread(fd, bytes + got, len - got, (off_t)got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!bytes)
        return -ENOMEM;
    *out = bytes;
    *out_len = got; /* a file shrinking under us just commits what was there */
    return 0;
}

/* Lowers vv[replica] to seq (sets it if absent). */
static int vv_lower(struct crdt_vv *vv, uint64_t replica, uint64_t seq)
{
    for (size_t i = 0; i < vv->len; i++) {
        if (vv->entries[i].replica == replica) {
            if (seq < vv->entries[i].seq)
                vv->entries[i].seq = seq;
            return 0;
        }
    }
    return crdt_vv_raise(vv, replica, seq);
}

/*
 * Writes a slot's document as its node's text state. It covers every text
 * op the log holds for the node, except from a replica with ops that may
 * still be pending in the document (pending ops are not part of a state):
 * there it stops below the first of them, and a later load replays them.
 */
static int text_slot_save(struct meta_replica *replica, struct text_slot *slot)
{
    struct crdt_buf state = {0};
    struct crdt_vv covered = {0};
    int rc = crdt_text_encode_state(&state, slot->doc);
    if (!rc)
        rc = meta_vv_load(&covered, replica->store);
    for (size_t i = 0; !rc && i < slot->floor.len; i++) {
        const struct crdt_vv_entry *floor = &slot->floor.entries[i];
        for (size_t k = 0; k < covered.len; k++) {
            struct crdt_vv_entry *entry = &covered.entries[k];
            if (entry->replica != floor->replica || entry->seq < floor->seq)
                continue;
            entry->seq = floor->seq - 1;
            if (entry->seq == 0) /* no zero seqs in a vector: drop the entry */
                memmove(entry, entry + 1, (--covered.len - k) * sizeof(*entry));
            break;
        }
    }
    if (!rc)
        rc = meta_text_put_covered(replica->store, &slot->id, state.data, state.len, &covered);
    crdt_buf_free(&state);
    crdt_vv_free(&covered);
    if (rc)
        return replica_fail(replica, rc, "saving a text state: %s",
                            rc == -ENOMEM ? "out of memory" : meta_store_errmsg(replica->store));
    slot->has_row = true;
    slot->unsaved = 0;
    return 0;
}

/* Frees a slot, saving its document first if the store lacks part of it. */
static int text_slot_evict(struct meta_replica *replica, struct text_slot *slot)
{
    int rc = slot->unsaved ? text_slot_save(replica, slot) : 0;
    text_slot_free(slot);
    return rc;
}

/*
 * Evicts least recently used documents (never `keep`) until the cache holds
 * at most TEXT_CACHE_BYTES of content and, with `want_free`, a slot is free.
 */
static int text_cache_trim(struct meta_replica *replica, const struct text_slot *keep,
                           bool want_free)
{
    for (;;) {
        struct text_slot *oldest = NULL;
        size_t held = 0;
        bool have_free = false;
        for (size_t i = 0; i < TEXT_CACHE_SLOTS; i++) {
            struct text_slot *slot = &replica->text_cache[i];
            if (!slot->doc) {
                have_free = true;
                continue;
            }
            held += slot->content_len;
            if (slot != keep && (!oldest || slot->last_use < oldest->last_use))
                oldest = slot;
        }
        if ((held <= TEXT_CACHE_BYTES && (have_free || !want_free)) || !oldest)
            return 0;
        int rc = text_slot_evict(replica, oldest);
        if (rc)
            return rc;
    }
}

/* Saves every cached document the store lacks part of (at close and checkpoints). */
static int text_cache_save_all(struct meta_replica *replica)
{
    for (size_t i = 0; i < TEXT_CACHE_SLOTS; i++) {
        struct text_slot *slot = &replica->text_cache[i];
        int rc = slot->doc && slot->unsaved ? text_slot_save(replica, slot) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

/* Text ops of one node read back from the log, to apply over its state. */
struct text_replay {
    struct meta_replica *replica;
    struct crdt_text_ops ops;
    size_t entries;       /* log entries */
    struct crdt_vv first; /* per replica, the seq of its first entry */
};

static int collect_text_op(void *arg, const struct meta_op *op)
{
    struct text_replay *ctx = arg;
    ctx->entries++;
    struct meta_text_body body;
    int rc = vv_lower(&ctx->first, op->replica, op->seq);
    if (!rc && !(rc = meta_text_body_decode(&body, op->body, op->body_len)))
        rc = crdt_text_ops_decode(&ctx->ops, body.ops, body.ops_len);
    if (rc == -EBADMSG)
        return replica_fail(ctx->replica, -EUCLEAN,
                            "text op (%016" PRIx64 ", %" PRIu64 ") in the log is damaged",
                            op->replica, op->seq);
    return rc;
}

/*
 * Loads node id's document into *out (not into the cache): its text state,
 * then the text ops logged after it. out->doc is NULL when the node has no
 * text state, unless `create`: then it is a new, empty document that the
 * store does not hold yet.
 */
static int text_load(struct text_slot *out, struct meta_replica *replica, const struct meta_id *id,
                     bool create)
{
    struct text_slot loaded = {.id = *id};
    memset(out, 0, sizeof(*out));
    struct crdt_vv covered = {0};
    struct text_replay replay = {.replica = replica};
    uint8_t *state = NULL;
    size_t state_len = 0;
    bool complete = true;
    int rc = meta_text_get_covered(&state, &state_len, &covered, &complete, replica->store, id);
    if (rc == -ENOENT) {
        if (!create)
            return 0; /* *out stays empty: no document */
        if ((rc = crdt_text_new(&loaded.doc)))
            return replica_fail(replica, rc, "out of memory");
    } else if (rc) {
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    } else {
        loaded.has_row = true;
        rc = crdt_text_decode_state(&loaded.doc, state, state_len);
        if (rc)
            replica_fail(replica, rc == -EBADMSG ? -EUCLEAN : rc,
                         "the text state of a file is damaged");
        if (!rc && !complete)
            rc = meta_oplog_replay(replica->store, id, META_OP_TEXT, &covered, collect_text_op,
                                   &replay);
        if (rc && !replica->errmsg[0])
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        if (!rc && replay.ops.len) {
            size_t applied = 0, pending = 0;
            struct crdt_clock scratch = replica->clock;
            rc = crdt_text_apply(&applied, &pending, loaded.doc, &scratch, replay.ops.ops,
                                 replay.ops.len);
            if (rc)
                replica_fail(replica, rc, "replaying the text ops of a file failed: %s",
                             strerror(-rc));
            crdt_clock_observe(&replica->clock, (struct crdt_ts){scratch.counter, 0});
            loaded.unsaved = replay.entries;
            if (pending) {
                loaded.floor = replay.first;
                replay.first = (struct crdt_vv){0};
            }
        }
    }
    free(state);
    crdt_vv_free(&covered);
    crdt_vv_free(&replay.first);
    crdt_text_ops_free(&replay.ops);
    char *content = NULL;
    if (!rc && (rc = crdt_text_content(&content, &loaded.content_len, loaded.doc)))
        replica_fail(replica, rc, "out of memory");
    loaded.content = (uint8_t *)content;
    if (rc)
        text_slot_free(&loaded);
    else
        *out = loaded;
    return rc;
}

/*
 * Node id's document: cached, or loaded (text_load) into a slot, which may
 * evict another. *out is NULL when the node has no text state and not
 * `create`.
 */
static int text_get(struct text_slot **out, struct meta_replica *replica, const struct meta_id *id,
                    bool create)
{
    *out = text_cache_find(replica, id);
    if (*out)
        return 0;
    struct text_slot loaded;
    int rc = text_load(&loaded, replica, id, create);
    if (!rc && !loaded.doc)
        return 0;
    if (!rc)
        rc = text_cache_trim(replica, NULL, true);
    if (rc) {
        text_slot_free(&loaded);
        return rc;
    }
    for (size_t i = 0; i < TEXT_CACHE_SLOTS; i++) {
        if (!replica->text_cache[i].doc) {
            *out = &replica->text_cache[i];
            break;
        }
    }
    loaded.last_use = ++replica->text_clock;
    **out = loaded;
    return 0;
}

/* Removes a node's text state (it is binary now) and its cached document. */
static int text_drop(struct meta_replica *replica, struct text_slot *slot)
{
    static const char sql[] = "DELETE FROM text_states WHERE node = ?1;";
    sqlite3_stmt *stmt = store_stmt(replica->store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, &slot->id);
    int rc = store_step_done(replica->store, stmt, "dropping a text state");
    text_slot_free(slot);
    return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
}

/* After a document took ops: writes its state when due, and keeps the cache in bounds. */
static int text_settle(struct meta_replica *replica, struct text_slot *slot)
{
    int rc = 0;
    if (!slot->has_row || slot->unsaved >= TEXT_SAVE_OPS)
        rc = text_slot_save(replica, slot);
    return rc ? rc : text_cache_trim(replica, slot, false);
}

/*
 * The text half of a commit: the new bytes, diffed against what the text
 * CRDT holds, become inserts and deletes (DESIGN.md "File contents"), logged
 * as one op. A file that stopped being text loses its CRDT state and goes on
 * as binary versions. *bytes (len of them, or too_big) is the working copy;
 * if it is text, the document takes the buffer over (*bytes NULL) and
 * *text points at it (valid until the next use of the text cache).
 */
static int commit_text(const uint8_t **text, struct meta_replica *replica, const struct meta_id *id,
                       struct crdt_ts seen_move, uint8_t **bytes, size_t len, bool too_big)
{
    struct text_slot *slot;
    *text = NULL;
    int rc = text_get(&slot, replica, id, false);
    if (rc)
        return rc;
    if (too_big || !is_text(*bytes, len))
        return slot ? text_drop(replica, slot) : 0;
    if (!slot && (rc = text_get(&slot, replica, id, true)))
        return rc;
    struct crdt_edit *edits = NULL;
    size_t count = 0;
    if ((rc = crdt_diff(&edits, &count, slot->content, slot->content_len, *bytes, len, NULL)))
        replica_fail(replica, rc, "diff failed: %s", strerror(-rc));
    struct crdt_text_edit *text_edits = NULL;
    if (!rc && count) {
        text_edits = malloc(count * sizeof(*text_edits));
        if (!text_edits)
            rc = -ENOMEM;
        for (size_t i = 0; !rc && i < count; i++)
            text_edits[i] = (struct crdt_text_edit){
                .pos = edits[i].old_pos,
                .del_len = edits[i].old_len,
                .bytes = *bytes + edits[i].new_pos,
                .bytes_len = edits[i].new_len,
            };
    }
    struct crdt_text_ops ops = {0};
    if (!rc && count) {
        /*
         * Character ids come from the replica's Lamport counter, but the op
         * log numbers the whole commit as one op: edit with a copy of the
         * clock, then take its counter and one seq for the logged op.
         */
        struct crdt_clock scratch = replica->clock;
        rc = crdt_text_apply_edits(&ops, slot->doc, &scratch, text_edits, count);
        if (rc)
            replica_fail(replica, rc, "applying a text edit failed: %s", strerror(-rc));
        replica->clock.counter = scratch.counter;
    }
    if (!rc && ops.len) {
        /* Format 2 (README "Op bodies"): the ops list, and the move its author had seen. */
        struct crdt_buf list = {0}, body = {0};
        uint64_t seq;
        struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
        rc = crdt_text_ops_encode(&list, &ops);
        if (!rc) {
            struct meta_text_body wrapped = {
                .format = 2, .seen_move = seen_move, .ops = list.data, .ops_len = list.len};
            meta_text_body_encode(&body, &wrapped);
            rc = log_op(replica, META_OP_TEXT, ts, seq, from_meta_id(id), &body);
        }
        crdt_buf_free(&list);
        crdt_buf_free(&body);
        slot->unsaved++;
    }
    if (!rc) {
        /* The document holds the new bytes now (on failure txn_end empties the cache). */
        free(slot->content);
        slot->content = *bytes;
        slot->content_len = len;
        *bytes = NULL;
        *text = slot->content;
        rc = text_settle(replica, slot);
    }
    crdt_text_ops_free(&ops);
    free(text_edits);
    free(edits);
    return rc;
}

static int set_clean(struct meta_replica *replica, const struct meta_id *id)
{
    static const char sql[] = "UPDATE nodes SET wc_state = 0 WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(replica->store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, id);
    int rc = store_step_done(replica->store, stmt, "marking a working copy clean");
    return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
}

/*
 * Logs the op of a version committed here (README "Op bodies", format 3):
 * what rule 3b and binary conflicts need besides the chunks, i.e. the move
 * of the node its author had seen, the version it replaced (`base`) and
 * where the file was. The node's newest edit is this one now.
 */
static int log_version_op(struct meta_replica *replica, const struct meta_node *node,
                          const struct meta_version *version, const struct meta_chunk_list *chunks,
                          bool text, struct crdt_ts base, uint64_t seq)
{
    struct meta_attr_body op = {
        .format = 3,
        .mask = META_ATTR_CONTENT,
        .time_ns = version->time_ns,
        .text = text,
        .seen_move = node->moved,
        .base = base,
        .parent = node->has_parent ? node->parent : to_meta_id(CRDT_NODE_TRASH),
        .name = node->name,
        .name_len = strlen(node->name),
        /* A text version's bytes travel as its text ops: peers never fetch its chunks. */
        .no_list = text,
        .size = chunks->total,
    };
    int rc = 0;
    if (!text && chunks->len > META_CHUNK_INDEX_FANOUT &&
        (rc = meta_chunk_index_build(&op.chunks, &op.levels, replica->store, chunks)) != 0)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    struct crdt_buf body = {0};
    if (!text && !op.levels)
        op.chunks = *chunks; /* borrowed: not freed below */
    meta_attr_body_encode(&body, &op);
    if (op.levels)
        meta_chunk_list_free(&op.chunks);
    rc = log_op(replica, META_OP_ATTR, version->ts, seq, from_meta_id(&node->id), &body);
    crdt_buf_free(&body);
    if (!rc && (rc = meta_node_set_edited(replica->store, &node->id, version->ts)))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    return rc;
}

/*
 * Commits a dirty file's working copy: text ops when it is text, and a
 * version (chunks) in either case, which is what history lists and restores.
 * A node whose working copy went to another node (an editor's save that kept
 * the target's identity) has nothing left to commit.
 */
static int commit_content(struct meta_replica *replica, const struct meta_id *id)
{
    uint8_t *bytes = NULL;
    size_t len = 0;
    bool too_big;
    int rc = wc_read(&bytes, &len, &too_big, replica, id, TEXT_MAX);
    if (rc == -ENOENT)
        return set_clean(replica, id);
    if (rc)
        return rc;
    /* What the ops say besides the bytes: the move seen, the version replaced, the place. */
    struct meta_node node;
    if ((rc = node_by_id(&node, replica, from_meta_id(id)))) {
        free(bytes);
        return rc;
    }
    struct crdt_ts base = {0, 0};
    if ((rc = meta_version_head(&base, replica->store, id)) == -ENOENT)
        rc = 0; /* the first version */
    else if (rc)
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (rc) {
        free(bytes);
        meta_node_clear(&node);
        return rc;
    }
    /* The version is chunked from the bytes just read (the file is read only once). */
    const uint8_t *text = NULL;
    rc = commit_text(&text, replica, id, node.moved, &bytes, len, too_big);
    if (rc) {
        free(bytes);
        meta_node_clear(&node);
        return rc;
    }
    const uint8_t *data = text ? text : too_big ? NULL : bytes;
    uint64_t seq;
    struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
    struct meta_version version = {
        .node = *id,
        .ts = ts,
        .author = ts.replica,
        .time_ns = realtime_ns(),
    };
    /* The version's op carries its chunk list; peers fetch the chunks they lack. */
    struct meta_chunk_list chunks = {0};
    rc = meta_version_commit_wc_list(&chunks, replica->store, &version, data, len);
    /*
     * A version merged from remote ops takes a counter of no op (apply_text_ops):
     * after a crash the clock may be behind it. Take the next counter (same seq).
     */
    for (int tries = 0; rc == -EEXIST && tries < VERSION_TS_TRIES; tries++) {
        ts.counter = ++replica->clock.counter;
        version.ts = ts;
        rc = meta_version_commit_wc_list(&chunks, replica->store, &version, data, len);
    }
    if (rc)
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    free(bytes);
    if (!rc)
        rc = log_version_op(replica, &node, &version, &chunks, text != NULL, base, seq);
    meta_chunk_list_free(&chunks);
    meta_node_clear(&node);
    return rc;
}

/*
 * Marks a node DIRTY in a committed transaction, before its working copy is
 * rewritten or moved (meta/wcopy's protocol: after a kill -9 the store never
 * calls a changed working copy clean). In grouped mode the whole group is
 * committed with it.
 */
static int dirty_durably(struct meta_replica *replica, const struct meta_id *id)
{
    struct crdt_clock saved;
    int rc = txn_begin_grouped(replica, &saved);
    if (rc)
        return rc;
    rc = meta_wc_mark_dirty(replica->store, id);
    if (rc)
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    rc = txn_end(replica, rc, &saved);
    return rc ? rc : group_commit_now(replica);
}

/* ---------- continuing a node across an editor's save ---------- */

/* What continue_begin did, for continue_finish. */
struct continuation {
    struct meta_id old_id;
    uint64_t old_ino;
    bool with_backup;
    struct meta_id backup_id;
};

/*
 * A regular file is being made at (parent, name) where node recent->node
 * was displaced moments ago: the tree half of making that node the new file.
 * Logs its tree ops; the caller materializes, then calls continue_finish.
 */
static int continue_begin(struct meta_replica *replica, struct continuation *cont,
                          struct crdt_tree_changes *changes, const struct recent *recent,
                          struct crdt_node_id parent, const char *name)
{
    struct meta_node old;
    int rc = node_by_id(&old, replica, recent->node);
    if (rc)
        return rc;
    memset(cont, 0, sizeof(*cont));
    cont->old_id = old.id;
    cont->old_ino = old.ino;
    bool shown = node_shown(&old);
    struct crdt_tree_op op;
    if (recent->how == DISPLACED_DELETED || !shown) {
        /* unlink + create (git checkout): bring the node back from the trash. */
        rc = crdt_tree_undelete(replica->tree, &op, &replica->clock, recent->node, parent, name,
                                strlen(name), changes);
        if (!rc)
            rc = log_tree_op(replica, &op);
        meta_node_clear(&old);
        return rc;
    }
    /*
     * Renamed away, new file in its place (vim, emacs): the node comes back
     * to its name, and a new node keeps the backup with the old bytes.
     */
    struct meta_node backup = old;
    rc = crdt_tree_move(replica->tree, &op, &replica->clock, recent->node, parent, name,
                        strlen(name), changes);
    if (!rc)
        rc = log_tree_op(replica, &op);
    struct crdt_tree_op backup_op;
    if (!rc)
        rc = crdt_tree_create(replica->tree, &backup_op, &replica->clock, from_meta_id(&old.parent),
                              old.name, strlen(old.name), CRDT_KIND_FILE, changes);
    if (!rc)
        rc = log_tree_op(replica, &backup_op);
    if (!rc) {
        /* The backup's row, with the old node's attributes, before materialize names it. */
        backup.id = to_meta_id(backup_op.child);
        backup.ino = 0;
        backup.wc_state = META_WC_DIRTY;
        /* A new node: none of the old one's rule-3b history (settle_moves records its birth). */
        backup.moved = backup.deleted_saw = backup.edited = (struct crdt_ts){0, 0};
        backup.deleted = false;
        backup.pinned = META_PIN_NONE;
        rc = log_attr_op(replica, backup_op.child, &backup,
                         META_ATTR_MODE | META_ATTR_UID | META_ATTR_GID | META_ATTR_MTIME);
    }
    if (!rc && (rc = meta_node_put(NULL, replica->store, &backup)))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (!rc) {
        cont->with_backup = true;
        cont->backup_id = backup.id;
    }
    meta_node_clear(&old);
    return rc;
}

/*
 * The working-copy half: the kernel holds the old node's inode number for
 * whatever is now at the old place (nothing, after an unlink; the backup,
 * after a rename), and will get a new one for the new file.
 */
static int continue_finish(struct meta_replica *replica, const struct continuation *cont)
{
    if (!cont->with_backup)
        return renumber(replica, &cont->old_id);
    struct meta_node backup;
    int rc = meta_node_get(&backup, replica->store, &cont->backup_id);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    uint64_t backup_ino = backup.ino;
    meta_node_clear(&backup);
    rc = wc_move(replica, &cont->old_id, &cont->backup_id);
    if (!rc)
        rc = swap_inos(replica, &cont->old_id, cont->old_ino, &cont->backup_id, backup_ino);
    if (!rc)
        rc = commit_content(replica, &cont->backup_id);
    return rc;
}

/* A directory's entries changed: its mtime and ctime become now (as POSIX says). */
static int touch_dir(struct meta_replica *replica, const struct meta_id *dir)
{
    /* One UPDATE of the times only: no read first, no index entry rewritten. */
    int rc = meta_node_set_times(replica->store, dir, realtime_ns());
    if (rc == -ENOENT)
        return 0;
    return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
}

/* ---------- making nodes ---------- */

static int make_node(struct meta_attr *out, struct meta_replica *replica, uint64_t parent_ino,
                     const char *name, uint32_t mode, uint64_t rdev, uint32_t uid, uint32_t gid,
                     const char *target)
{
    int rc = check_name(name);
    if (rc)
        return rc;
    struct meta_node dir, existing;
    rc = dir_by_ino(&dir, replica, parent_ino);
    if (rc)
        return rc;
    rc = meta_node_lookup(&existing, replica->store, &dir.id, name);
    if (rc == 0) {
        meta_node_clear(&existing);
        meta_node_clear(&dir);
        return -EEXIST;
    }
    uint8_t kind = crdt_kind_of_mode(mode);
    struct crdt_node_id parent_id = from_meta_id(&dir.id);
    struct meta_id parent_mid = dir.id;
    if (dir.mode & S_ISGID) {
        /* A set-group-id directory hands its group down, and its bit to subdirectories. */
        gid = dir.gid;
        if (kind == CRDT_KIND_DIR)
            mode |= S_ISGID;
    }
    meta_node_clear(&dir);

    /* A regular file taking a name an editor just vacated continues that node. */
    struct recent *recent = kind == CRDT_KIND_FILE ? recent_find(replica, parent_ino, name) : NULL;

    struct crdt_clock saved;
    rc = txn_begin_grouped(replica, &saved);
    if (rc)
        return rc;
    struct crdt_tree_changes changes = {0};
    struct crdt_tree_op op;
    struct meta_node fresh = {0};
    int64_t now = realtime_ns();
    fresh.kind = meta_kind_of(kind);
    fresh.mode = (mode & 07777) | type_bits_of_kind(kind);
    fresh.uid = uid;
    fresh.gid = gid;
    fresh.rdev = rdev;
    fresh.mtime_ns = fresh.ctime_ns = now;
    fresh.target = (char *)target;
    struct crdt_node_id id;
    struct continuation cont;
    bool backup_taken = false;
    if (recent) {
        id = recent->node;
        rc = continue_begin(replica, &cont, &changes, recent, parent_id, name);
        backup_taken = rc == -EEXIST;
    } else {
        rc = crdt_tree_create(replica->tree, &op, &replica->clock, parent_id, name, strlen(name),
                              kind, &changes);
        id = op.child;
        if (!rc)
            rc = log_tree_op(replica, &op);
    }
    fresh.id = to_meta_id(id);
    /* A new file is DIRTY from birth: its working copy is newer than any version. */
    fresh.wc_state = kind == CRDT_KIND_FILE && !recent ? META_WC_DIRTY : META_WC_CLEAN;
    /* Logged before the row is written, which takes the attributes' stamps with them. */
    unsigned fields = META_ATTR_MODE | META_ATTR_UID | META_ATTR_GID | META_ATTR_MTIME |
                      (rdev ? META_ATTR_RDEV : 0) | (target ? META_ATTR_TARGET : 0);
    if (!rc)
        rc = log_attr_op(replica, id, &fresh, fields);
    uint64_t made_ino = 0;
    if (!rc)
        rc = materialize(replica, &changes, &fresh, &made_ino, false, NULL);
    if (!rc && recent) {
        rc = continue_finish(replica, &cont);
        /* The continued node takes the caller's new attributes and starts empty. */
        struct meta_node node;
        if (!rc)
            rc = node_by_id(&node, replica, id);
        if (!rc) {
            node.mode = fresh.mode;
            node.uid = uid;
            node.gid = gid;
            node.mtime_ns = node.ctime_ns = now;
            node.size = 0;
            for (int field = 0; field < META_ATTR_FIELDS; field++)
                if (fields & (1u << field))
                    node.attr_ts[field] = fresh.attr_ts[field];
            rc = meta_node_put(NULL, replica->store, &node);
            if (!rc)
                rc = meta_wc_mark_dirty(replica->store, &node.id);
            if (!rc)
                rc = wc_fresh(replica, &node.id);
            meta_node_clear(&node);
        }
        recent_forget(recent);
    } else if (!rc && kind == CRDT_KIND_FILE) {
        /* A new file's working copy exists from birth, so opens never race its creation. */
        rc = wc_fresh(replica, &fresh.id);
    }
    if (!rc && kind == CRDT_KIND_FILE)
        born_note(replica, id);
    if (!rc)
        rc = touch_dir(replica, &parent_mid);
    crdt_tree_changes_free(&changes);
    rc = txn_end(replica, rc, &saved);
    /* Working copies were moved or replaced: that commits now, grouped or not. */
    if (!rc && recent)
        rc = group_commit_now(replica);
    if (rc == -EEXIST && backup_taken) {
        /*
         * The name the backup would keep is shown by another node now (rule
         * 2: a sibling from another device takes it when this one leaves).
         * Rolled back; the file is made as a new node instead.
         */
        recent_forget(recent);
        return make_node(out, replica, parent_ino, name, mode, rdev, uid, gid, target);
    }
    if (rc)
        return rc;
    if (!recent) {
        /* What materialize wrote: the caller's attributes, at the inode number it got. */
        fresh.ino = made_ino;
        fresh.has_parent = true;
        fresh.parent = parent_mid;
        fill_attr(replica, out, &fresh);
        return 0;
    }
    struct meta_node made;
    rc = node_by_id(&made, replica, id);
    if (rc)
        return rc;
    fill_attr(replica, out, &made);
    meta_node_clear(&made);
    return 0;
}

int meta_replica_mknod(struct meta_attr *out, struct meta_replica *replica, uint64_t parent,
                       const char *name, uint32_t mode, uint64_t rdev, uint32_t uid, uint32_t gid)
{
    uint32_t type = mode & S_IFMT;
    if (type == 0)
        mode |= S_IFREG;
    else if (type == S_IFDIR || type == S_IFLNK)
        return -EINVAL;
    return make_node(out, replica, parent, name, mode, rdev, uid, gid, NULL);
}

int meta_replica_mkdir(struct meta_attr *out, struct meta_replica *replica, uint64_t parent,
                       const char *name, uint32_t mode, uint32_t uid, uint32_t gid)
{
    return make_node(out, replica, parent, name, (mode & 07777) | S_IFDIR, 0, uid, gid, NULL);
}

int meta_replica_symlink(struct meta_attr *out, struct meta_replica *replica, uint64_t parent,
                         const char *name, const char *target, uint32_t uid, uint32_t gid)
{
    if (strlen(target) >= 4096)
        return -ENAMETOOLONG;
    return make_node(out, replica, parent, name, S_IFLNK | 0777, 0, uid, gid, target);
}

/* Moves a node to the trash as part of the caller's transaction. */
static int trash_node(struct meta_replica *replica, const struct meta_node *node,
                      struct crdt_tree_changes *changes)
{
    struct crdt_tree_op op;
    int rc = crdt_tree_move(replica->tree, &op, &replica->clock, from_meta_id(&node->id),
                            CRDT_NODE_TRASH, node->name, strlen(node->name), changes);
    if (rc)
        return replica_fail(replica, rc, "cannot delete %s: %s", node->name, strerror(-rc));
    /* Rule 3b: an edit this delete did not see brings the file back; it saw these. */
    op.seen_edit = node->edited;
    return log_tree_op(replica, &op);
}

/* Whether a directory shows any entry. */
static int dir_is_empty(bool *out, struct meta_replica *replica, const struct meta_id *dir)
{
    struct meta_node *children = NULL;
    size_t count = 0;
    int rc = meta_node_list(&children, &count, replica->store, dir);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    *out = count == 0;
    meta_node_list_free(children, count);
    return 0;
}

static int remove_entry(struct meta_replica *replica, uint64_t parent, const char *name, bool dir)
{
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return dir ? -EINVAL : -EISDIR;
    struct meta_node node;
    int rc = child_of(&node, NULL, replica, parent, name);
    if (rc)
        return rc;
    if (dir && node.kind != META_NODE_DIR)
        rc = -ENOTDIR;
    else if (!dir && node.kind == META_NODE_DIR)
        rc = -EISDIR;
    bool empty = true;
    if (!rc && dir)
        rc = dir_is_empty(&empty, replica, &node.id);
    if (!rc && !empty)
        rc = -ENOTEMPTY;
    if (rc) {
        meta_node_clear(&node);
        return rc;
    }
    struct crdt_clock saved;
    rc = txn_begin_grouped(replica, &saved);
    if (rc) {
        meta_node_clear(&node);
        return rc;
    }
    struct crdt_tree_changes changes = {0};
    rc = trash_node(replica, &node, &changes);
    if (!rc)
        rc = materialize(replica, &changes, NULL, NULL, false, NULL);
    if (!rc)
        rc = touch_dir(replica, &node.parent);
    crdt_tree_changes_free(&changes);
    rc = txn_end(replica, rc, &saved);
    if (!rc && node.kind == META_NODE_FILE)
        recent_note(replica, parent, name, from_meta_id(&node.id), DISPLACED_DELETED);
    meta_node_clear(&node);
    return rc;
}

int meta_replica_unlink(struct meta_replica *replica, uint64_t parent, const char *name)
{
    return remove_entry(replica, parent, name, false);
}

int meta_replica_rmdir(struct meta_replica *replica, uint64_t parent, const char *name)
{
    return remove_entry(replica, parent, name, true);
}

/* Adds a file to those committed with the group (once). */
static int due_add(struct meta_replica *replica, const struct meta_id *id)
{
    for (size_t i = 0; i < replica->due_len; i++)
        if (!memcmp(replica->due[i].bytes, id->bytes, META_ID_LEN))
            return 0;
    struct meta_id *grown =
        store_grow(replica->due, &replica->due_cap, replica->due_len, sizeof(*replica->due));
    if (!grown)
        return replica_fail(replica, -ENOMEM, "out of memory");
    replica->due = grown;
    replica->due[replica->due_len++] = *id;
    return 0;
}

/*
 * rename(S, T) over an existing regular file T, where S is a file this
 * replica just made (an editor's temporary file): T keeps its identity and
 * takes S's bytes; S goes to the trash. The two swap inode numbers, since the
 * kernel now shows S's at T's name.
 */
static int replace_keeping_identity(struct meta_replica *replica, struct meta_node *source,
                                    struct meta_node *target, struct crdt_tree_changes *changes)
{
    int rc = trash_node(replica, source, changes);
    if (!rc)
        rc = materialize(replica, changes, NULL, NULL, false, NULL);
    if (!rc)
        rc = meta_wc_mark_dirty(replica->store, &target->id);
    if (!rc)
        rc = wc_move(replica, &source->id, &target->id);
    if (!rc)
        rc = set_clean(replica, &source->id); /* its bytes are the target's now */
    if (!rc)
        rc = swap_inos(replica, &source->id, source->ino, &target->id, target->ino);
    if (!rc && replica->group_mode)
        rc = due_add(replica, &target->id); /* DIRTY until the group's commit commits it */
    else if (!rc)
        rc = commit_content(replica, &target->id);
    if (!rc) {
        change_add(replica, META_CHANGE_CONTENT, source->ino, 0, NULL, false);
        change_add(replica, META_CHANGE_ATTR, source->ino, 0, NULL, false);
    }
    return rc;
}

static int move_node(struct meta_replica *replica, const struct meta_node *node,
                     const struct meta_id *parent, const char *name,
                     struct crdt_tree_changes *changes)
{
    struct crdt_tree_op op;
    int rc = crdt_tree_move(replica->tree, &op, &replica->clock, from_meta_id(&node->id),
                            from_meta_id(parent), name, strlen(name), changes);
    if (rc)
        return rc == -EINVAL ? -EINVAL : replica_fail(replica, rc, "move: %s", strerror(-rc));
    return log_tree_op(replica, &op);
}

int meta_replica_rename(struct meta_replica *replica, uint64_t parent, const char *name,
                        uint64_t new_parent, const char *new_name, unsigned flags)
{
    if ((flags & META_RENAME_NOREPLACE) && (flags & META_RENAME_EXCHANGE))
        return -EINVAL;
    int rc = check_name(new_name);
    if (rc)
        return rc;
    struct meta_node source, target, new_dir;
    rc = child_of(&source, NULL, replica, parent, name);
    if (rc)
        return rc;
    rc = dir_by_ino(&new_dir, replica, new_parent);
    if (rc) {
        meta_node_clear(&source);
        return rc;
    }
    bool has_target = meta_node_lookup(&target, replica->store, &new_dir.id, new_name) == 0;
    if (has_target && !memcmp(target.id.bytes, source.id.bytes, META_ID_LEN)) {
        /* rename(x, x): nothing to do, as POSIX says. */
        meta_node_clear(&target);
        meta_node_clear(&source);
        meta_node_clear(&new_dir);
        return 0;
    }
    rc = 0;
    if ((flags & META_RENAME_NOREPLACE) && has_target)
        rc = -EEXIST;
    else if ((flags & META_RENAME_EXCHANGE) && !has_target)
        rc = -ENOENT;
    else if (has_target && !(flags & META_RENAME_EXCHANGE)) {
        bool source_dir = source.kind == META_NODE_DIR, target_dir = target.kind == META_NODE_DIR;
        if (source_dir && !target_dir)
            rc = -ENOTDIR;
        else if (!source_dir && target_dir)
            rc = -EISDIR;
        else if (target_dir) {
            bool empty = true;
            rc = dir_is_empty(&empty, replica, &target.id);
            if (!rc && !empty)
                rc = -ENOTEMPTY;
        }
    }
    if (!rc && source.kind == META_NODE_DIR &&
        crdt_tree_is_ancestor(replica->tree, from_meta_id(&source.id), from_meta_id(&new_dir.id)))
        rc = -EINVAL;
    struct crdt_clock saved;
    if (!rc)
        rc = txn_begin_grouped(replica, &saved);
    if (rc)
        goto out;
    struct crdt_tree_changes changes = {0};
    bool continuity = has_target && !(flags & META_RENAME_EXCHANGE) &&
                      source.kind == META_NODE_FILE && target.kind == META_NODE_FILE &&
                      born_recently(replica, from_meta_id(&source.id));
    if (continuity) {
        rc = replace_keeping_identity(replica, &source, &target, &changes);
    } else if (flags & META_RENAME_EXCHANGE) {
        struct meta_id source_parent = source.parent, target_parent = target.parent;
        char source_name[META_NAME_MAX + 1];
        snprintf(source_name, sizeof(source_name), "%s", source.name);
        rc = move_node(replica, &source, &target_parent, new_name, &changes);
        if (!rc)
            rc = move_node(replica, &target, &source_parent, source_name, &changes);
        if (!rc)
            rc = materialize(replica, &changes, NULL, NULL, false, NULL);
    } else {
        /* POSIX replace: the target goes to the trash, where its history stays. */
        if (has_target)
            rc = trash_node(replica, &target, &changes);
        if (!rc)
            rc = move_node(replica, &source, &new_dir.id, new_name, &changes);
        if (!rc)
            rc = materialize(replica, &changes, NULL, NULL, false, NULL);
    }
    if (!rc)
        rc = touch_dir(replica, &source.parent);
    if (!rc && memcmp(source.parent.bytes, new_dir.id.bytes, META_ID_LEN) != 0)
        rc = touch_dir(replica, &new_dir.id);
    crdt_tree_changes_free(&changes);
    rc = txn_end(replica, rc, &saved);
    /* A working copy was moved onto the target's: that commits now, grouped or not. */
    if (!rc && continuity)
        rc = group_commit_now(replica);
    if (!rc && !continuity && !(flags & META_RENAME_EXCHANGE) && source.kind == META_NODE_FILE)
        recent_note(replica, parent, name, from_meta_id(&source.id), DISPLACED_RENAMED);
out:
    if (has_target)
        meta_node_clear(&target);
    meta_node_clear(&source);
    meta_node_clear(&new_dir);
    return rc;
}

int meta_replica_setattr(struct meta_attr *out, struct meta_replica *replica, uint64_t ino,
                         const struct meta_attr *values, unsigned to_set)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    if ((to_set & META_SET_SIZE) && node.kind != META_NODE_FILE) {
        meta_node_clear(&node);
        return node.kind == META_NODE_DIR ? -EISDIR : -EINVAL;
    }
    struct crdt_clock saved;
    /* A truncation rewrites the working copy: DIRTY is committed first (meta/wcopy). */
    if ((to_set & META_SET_SIZE) && replica->group_mode && node.wc_state != META_WC_DIRTY)
        rc = dirty_durably(replica, &node.id);
    if (!rc)
        rc = txn_begin_grouped(replica, &saved);
    if (rc) {
        meta_node_clear(&node);
        return rc;
    }
    unsigned fields = 0;
    if (to_set & META_SET_MODE) {
        node.mode = (node.mode & S_IFMT) | (values->mode & 07777);
        fields |= META_ATTR_MODE;
    }
    if (to_set & META_SET_UID) {
        node.uid = values->uid;
        fields |= META_ATTR_UID;
    }
    if (to_set & META_SET_GID) {
        node.gid = values->gid;
        fields |= META_ATTR_GID;
    }
    if (to_set & META_SET_MTIME) {
        node.mtime_ns = values->mtime_ns;
        fields |= META_ATTR_MTIME;
    }
    node.ctime_ns = (to_set & META_SET_CTIME) ? values->ctime_ns : realtime_ns();
    if (to_set & META_SET_SIZE) {
        int fd;
        rc = meta_wc_mark_dirty(replica->store, &node.id);
        if (!rc)
            rc = meta_wc_open(&fd, replica->store, &node.id, O_WRONLY | O_CREAT);
        if (!rc) {
            if (ftruncate(fd, (off_t)values->size) != 0)
                rc = replica_fail(replica, -errno, "truncate: %s", strerror(errno));
            close(fd);
        }
        if (!rc && !(to_set & META_SET_MTIME))
            node.mtime_ns = node.ctime_ns;
        node.wc_state = META_WC_DIRTY;
        change_add(replica, META_CHANGE_CONTENT, ino, 0, NULL, false);
    }
    if (!rc && node.kind == META_NODE_FILE && (to_set & (META_SET_ATIME | META_SET_MTIME))) {
        /* A file's times are its working copy's (see fill_attr). */
        char path[4096];
        struct timespec times[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
        if (to_set & META_SET_ATIME)
            times[0] =
                (struct timespec){values->atime_ns / 1000000000, values->atime_ns % 1000000000};
        if (to_set & META_SET_MTIME)
            times[1] =
                (struct timespec){values->mtime_ns / 1000000000, values->mtime_ns % 1000000000};
        if (meta_wc_path(path, sizeof(path), replica->store, &node.id) == 0 &&
            utimensat(AT_FDCWD, path, times, 0) != 0 && errno != ENOENT)
            rc = replica_fail(replica, -errno, "setting times on %s: %s", path, strerror(errno));
    }
    /* Logged first: the row takes the op's stamps (each field is an LWW register). */
    if (!rc && fields)
        rc = log_attr_op(replica, from_meta_id(&node.id), &node, fields);
    if (!rc)
        rc = meta_node_put(NULL, replica->store, &node);
    rc = txn_end(replica, rc, &saved);
    /* The row just written is the node's: no need to read it back. */
    if (!rc)
        fill_attr(replica, out, &node);
    meta_node_clear(&node);
    return rc;
}

int meta_replica_open_file(int *out_fd, struct meta_replica *replica, uint64_t ino, int flags)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    if (node.kind != META_NODE_FILE) {
        meta_node_clear(&node);
        return node.kind == META_NODE_DIR ? -EISDIR : -EINVAL;
    }
    bool writable = (flags & O_ACCMODE) != O_RDONLY;
    if (writable && node.wc_state != META_WC_DIRTY)
        rc = dirty_durably(replica, &node.id); /* before the first byte lands (meta/wcopy) */
    if (!rc) {
        rc = meta_wc_open(out_fd, replica->store, &node.id,
                          (flags & (O_ACCMODE | O_TRUNC | O_APPEND)) | O_CREAT);
        if (rc)
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    }
    meta_node_clear(&node);
    return rc;
}

int meta_replica_wc_pool_fill(struct meta_replica *replica, unsigned target)
{
    return wc_pool_fill(replica->store, target);
}

unsigned meta_replica_wc_pool_level(struct meta_replica *replica)
{
    return wc_pool_level(replica->store);
}

void meta_replica_set_wc_pinned(struct meta_replica *replica,
                                bool (*pinned)(void *ctx, dev_t dev, ino_t ino), void *ctx)
{
    replica->store->wc_pinned = pinned;
    replica->store->wc_pinned_ctx = ctx;
}

int meta_replica_set_writer(struct meta_replica *replica, uint64_t ino, bool open)
{
    for (size_t i = 0; i < replica->writers_len; i++) {
        if (replica->writers[i] != ino)
            continue;
        if (!open)
            replica->writers[i] = replica->writers[--replica->writers_len];
        return 0;
    }
    if (!open)
        return 0;
    if (replica->writers_len == replica->writers_cap) {
        size_t cap = replica->writers_cap ? replica->writers_cap * 2 : 16;
        uint64_t *grown = realloc(replica->writers, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        replica->writers = grown;
        replica->writers_cap = cap;
    }
    replica->writers[replica->writers_len++] = ino;
    return 0;
}

static bool has_writer(const struct meta_replica *replica, uint64_t ino)
{
    for (size_t i = 0; i < replica->writers_len; i++)
        if (replica->writers[i] == ino)
            return true;
    return false;
}

/*
 * A commit of a file a program still writes to records a version but leaves
 * the node DIRTY: bytes written after this commit must reach the next one.
 */
static int commit_node(struct meta_replica *replica, const struct meta_node *node)
{
    int rc = commit_content(replica, &node->id);
    if (!rc && has_writer(replica, node->ino) &&
        (rc = meta_wc_mark_dirty(replica->store, &node->id)))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (!rc)
        change_add(replica, META_CHANGE_ATTR, node->ino, 0, NULL, false);
    return rc;
}

int meta_replica_commit(struct meta_replica *replica, uint64_t ino)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    if (!is_dirty(&node)) {
        meta_node_clear(&node);
        return 0;
    }
    struct crdt_clock saved;
    rc = txn_begin_grouped(replica, &saved);
    if (!rc)
        rc = txn_end(replica, commit_node(replica, &node), &saved);
    meta_node_clear(&node);
    return rc;
}

int meta_replica_commit_batch(struct meta_replica *replica, const uint64_t *inos, size_t count)
{
    struct crdt_clock saved;
    int rc = txn_begin_grouped(replica, &saved);
    if (rc)
        return rc;
    for (size_t i = 0; i < count && !rc; i++) {
        struct meta_node node;
        int got = node_by_ino(&node, replica, inos[i]);
        if (got == -ENOENT)
            continue; /* gone since it was closed */
        if (got) {
            rc = got;
            break;
        }
        if (is_dirty(&node))
            rc = commit_node(replica, &node);
        meta_node_clear(&node);
    }
    return txn_end(replica, rc, &saved);
}

int meta_replica_fsync(struct meta_replica *replica, uint64_t ino)
{
    if (ino) {
        struct meta_node node;
        int rc = meta_replica_commit(replica, ino);
        if (!rc)
            rc = meta_replica_group_commit(replica); /* with the file's creation and the rest */
        if (!rc)
            rc = node_by_ino(&node, replica, ino);
        if (rc)
            return rc;
        rc = meta_store_sync(replica->store, node.kind == META_NODE_FILE ? &node.id : NULL);
        meta_node_clear(&node);
        return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
    }
    /* Everything: commit every dirty file (each commit is durable on return). */
    struct meta_id *ids = NULL;
    size_t count = 0;
    int rc = meta_node_list_wc(&ids, &count, replica->store, META_WC_DIRTY);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    for (size_t i = 0; i < count && !rc; i++) {
        struct meta_node node;
        if (meta_node_get(&node, replica->store, &ids[i]) != 0)
            continue;
        uint64_t node_ino = node.ino;
        meta_node_clear(&node);
        rc = meta_replica_commit(replica, node_ino);
    }
    free(ids);
    if (!rc)
        rc = meta_replica_group_commit(replica);
    if (!rc && (rc = meta_store_sync(replica->store, NULL)))
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    return rc;
}

int meta_replica_setxattr(struct meta_replica *replica, uint64_t ino, const char *name,
                          const void *value, size_t len, int flags)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    if (strlen(name) > 255 || len > 65536) {
        meta_node_clear(&node);
        return strlen(name) > 255 ? -ERANGE : -E2BIG;
    }
    uint8_t *existing = NULL;
    size_t existing_len = 0;
    bool exists = meta_xattr_get(&existing, &existing_len, replica->store, &node.id, name) == 0;
    free(existing);
    if ((flags & XATTR_CREATE) && exists)
        rc = -EEXIST;
    else if ((flags & XATTR_REPLACE) && !exists)
        rc = -ENODATA;
    struct crdt_clock saved;
    if (!rc)
        rc = txn_begin_grouped(replica, &saved);
    if (!rc) {
        uint64_t seq;
        struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
        rc = meta_xattr_set(NULL, replica->store, &node.id, name, value ? value : "", len, ts);
        if (rc)
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        struct meta_attr_body op = {.format = 1,
                                    .mask = META_ATTR_XATTR_SET,
                                    .xattr_name = name,
                                    .xattr_name_len = strlen(name),
                                    .xattr_value = value,
                                    .xattr_value_len = len};
        struct crdt_buf body = {0};
        meta_attr_body_encode(&body, &op);
        if (!rc)
            rc = log_op(replica, META_OP_ATTR, ts, seq, from_meta_id(&node.id), &body);
        crdt_buf_free(&body);
        rc = txn_end(replica, rc, &saved);
    }
    meta_node_clear(&node);
    return rc;
}

int meta_replica_getxattr(uint8_t **out, size_t *out_len, struct meta_replica *replica,
                          uint64_t ino, const char *name)
{
    /* The kernel asks for security.capability before nearly every write: answer from memory. */
    if (!meta_xattr_maybe(replica->store, name))
        return -ENODATA;
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    rc = meta_xattr_get(out, out_len, replica->store, &node.id, name);
    meta_node_clear(&node);
    return rc;
}

int meta_replica_listxattr(char **out, size_t *out_len, struct meta_replica *replica, uint64_t ino)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    struct meta_xattr *xattrs = NULL;
    size_t count = 0;
    rc = meta_xattr_list(&xattrs, &count, replica->store, &node.id);
    meta_node_clear(&node);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += strlen(xattrs[i].name) + 1;
    char *names = malloc(total ? total : 1);
    if (!names) {
        meta_xattr_list_free(xattrs, count);
        return -ENOMEM;
    }
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        size_t len = strlen(xattrs[i].name) + 1;
        memcpy(names + at, xattrs[i].name, len);
        at += len;
    }
    meta_xattr_list_free(xattrs, count);
    *out = names;
    *out_len = total;
    return 0;
}

int meta_replica_removexattr(struct meta_replica *replica, uint64_t ino, const char *name)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    uint8_t *existing = NULL;
    size_t existing_len = 0;
    rc = meta_xattr_get(&existing, &existing_len, replica->store, &node.id, name);
    free(existing);
    struct crdt_clock saved;
    if (!rc)
        rc = txn_begin_grouped(replica, &saved);
    if (!rc) {
        uint64_t seq;
        struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
        rc = meta_xattr_set(NULL, replica->store, &node.id, name, NULL, 0, ts);
        struct meta_attr_body op = {.format = 1,
                                    .mask = META_ATTR_XATTR_REMOVE,
                                    .xattr_name = name,
                                    .xattr_name_len = strlen(name)};
        struct crdt_buf body = {0};
        meta_attr_body_encode(&body, &op);
        if (!rc)
            rc = log_op(replica, META_OP_ATTR, ts, seq, from_meta_id(&node.id), &body);
        crdt_buf_free(&body);
        rc = txn_end(replica, rc, &saved);
    }
    meta_node_clear(&node);
    return rc;
}

int meta_replica_log(struct meta_log_entry **out, size_t *out_len, struct meta_replica *replica,
                     uint64_t ino)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    if (node.kind != META_NODE_FILE) {
        meta_node_clear(&node);
        return node.kind == META_NODE_DIR ? -EISDIR : -EINVAL;
    }
    struct meta_version *versions = NULL;
    size_t count = 0;
    rc = meta_version_list(&versions, &count, replica->store, &node.id);
    /* Whether the file merges as text now (versions are whole snapshots either way). */
    uint8_t *state = NULL;
    size_t state_len = 0;
    bool text = meta_text_get(&state, &state_len, replica->store, &node.id) == 0;
    free(state);
    meta_node_clear(&node);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    struct meta_log_entry *entries = calloc(count ? count : 1, sizeof(*entries));
    if (!entries) {
        free(versions);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        entries[i].ts = versions[i].ts;
        entries[i].author = versions[i].author;
        entries[i].time_ns = versions[i].time_ns;
        entries[i].size = versions[i].size;
        entries[i].text = text;
        struct meta_device device;
        if (meta_device_get(&device, replica->store, versions[i].author) == 0)
            snprintf(entries[i].author_name, sizeof(entries[i].author_name), "%s", device.name);
        else
            snprintf(entries[i].author_name, sizeof(entries[i].author_name), "%016" PRIx64,
                     versions[i].author);
    }
    free(versions);
    *out = entries;
    *out_len = count;
    return 0;
}

int meta_replica_restore(struct meta_replica *replica, uint64_t ino, struct crdt_ts ts)
{
    struct meta_node node;
    int rc = node_by_ino(&node, replica, ino);
    if (rc)
        return rc;
    uint8_t *bytes = NULL;
    size_t len = 0;
    rc = meta_version_read(&bytes, &len, replica->store, &node.id, ts);
    if (rc) {
        meta_node_clear(&node);
        return rc == -ENOENT ? -EINVAL
                             : replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    }
    if (is_dirty(&node)) {
        /* Uncommitted bytes first, so the restore never hides them from history. */
        rc = meta_replica_commit(replica, ino);
    }
    /*
     * A restore is a new local edit that writes the old bytes: a text file's
     * becomes text ops (so it merges with concurrent edits like any save),
     * a binary file's a new version sharing the old one's chunks.
     */
    struct crdt_clock saved;
    if (!rc)
        rc = txn_begin(replica, &saved);
    if (!rc) {
        rc = meta_wc_mark_dirty(replica->store, &node.id);
        if (!rc)
            rc = meta_wc_replace(replica->store, &node.id, bytes, len);
        if (rc)
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        if (!rc)
            rc = commit_content(replica, &node.id);
        change_add(replica, META_CHANGE_CONTENT, ino, 0, NULL, true);
        change_add(replica, META_CHANGE_ATTR, ino, 0, NULL, true);
        rc = txn_end(replica, rc, &saved);
    }
    free(bytes);
    meta_node_clear(&node);
    return rc;
}

int meta_replica_resolve(uint64_t *out, struct meta_replica *replica, const char *path)
{
    uint64_t at = META_INO_ROOT;
    char component[META_NAME_MAX + 1];
    while (*path) {
        while (*path == '/')
            path++;
        if (!*path)
            break;
        size_t len = strcspn(path, "/");
        if (len > META_NAME_MAX)
            return -ENAMETOOLONG;
        memcpy(component, path, len);
        component[len] = '\0';
        path += len;
        struct meta_attr attr;
        int rc = meta_replica_lookup(&attr, replica, at, component);
        if (rc)
            return rc;
        at = attr.ino;
    }
    *out = at;
    return 0;
}

/* ---------- remote ops ---------- */

void meta_replica_set_fetch(struct meta_replica *replica, meta_chunk_fetch_fn fn, void *ctx)
{
    replica->fetch_fn = fn;
    replica->fetch_ctx = ctx;
}

int meta_replica_ops_since(struct meta_replica *replica, const struct crdt_vv *have, meta_op_fn fn,
                           void *ctx)
{
    /* Only committed ops leave this device: a crash must not take back what a peer has. */
    int rc = meta_replica_group_commit(replica);
    return rc ? rc : meta_oplog_since(replica->store, have, fn, ctx);
}

int meta_replica_version(struct crdt_vv *out, struct meta_replica *replica)
{
    int rc = meta_replica_group_commit(replica);
    return rc ? rc : meta_vv_load(out, replica->store);
}

struct op_ref {
    const struct meta_op *op;
};

static int op_seq_cmp(const void *a, const void *b)
{
    const struct meta_op *x = ((const struct op_ref *)a)->op, *y = ((const struct op_ref *)b)->op;
    if (x->replica != y->replica)
        return x->replica < y->replica ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int op_ts_cmp(const void *a, const void *b)
{
    const struct meta_op *x = ((const struct op_ref *)a)->op, *y = ((const struct op_ref *)b)->op;
    return crdt_ts_cmp((struct crdt_ts){x->counter, x->replica},
                       (struct crdt_ts){y->counter, y->replica});
}

/* Makes sure every chunk of a remote version is in the store, fetching what is not. */
static int ensure_chunks(struct meta_replica *replica, const struct meta_chunk_list *chunks)
{
    for (size_t i = 0; i < chunks->len; i++) {
        bool have = false;
        int rc = meta_chunk_has(&have, replica->store, chunks->refs[i].id);
        if (rc)
            return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        if (have)
            continue;
        uint8_t *data = NULL;
        size_t len = 0;
        rc = replica->fetch_fn
                 ? replica->fetch_fn(replica->fetch_ctx, chunks->refs[i].id, &data, &len)
                 : -ENOENT;
        if (!rc) {
            rc = meta_chunk_put(replica->store, chunks->refs[i].id, data, len);
            free(data);
        }
        if (rc)
            return replica_fail(replica, rc, "a chunk of a remote version is missing: %s",
                                strerror(-rc));
    }
    return 0;
}

/* ---------- remote ops: attributes and versions ---------- */

/*
 * A peer's version applied in this batch, noted for binary conflicts
 * (find_conflicts): which file, its timestamp and base, the head of the
 * file just before it came, and its place in the batch.
 */
struct batch_version {
    struct meta_id node;
    struct crdt_ts ts, base, head_before;
    size_t order;
};

/* What a remote batch leaves for after its ops are applied. */
struct batch {
    struct batch_version *versions;
    size_t versions_len, versions_cap;
    struct meta_tree_body *copies; /* conflict copies made by peers: their contents follow */
    size_t copies_len, copies_cap;
};

static void batch_free(struct batch *batch)
{
    free(batch->versions);
    free(batch->copies);
}

static int batch_note_version(struct meta_replica *replica, struct batch *batch,
                              struct batch_version version)
{
    struct batch_version *grown =
        store_grow(batch->versions, &batch->versions_cap, batch->versions_len, sizeof(*grown));
    if (!grown)
        return replica_fail(replica, -ENOMEM, "out of memory");
    batch->versions = grown;
    version.order = batch->versions_len;
    batch->versions[batch->versions_len++] = version;
    return 0;
}

static int batch_note_copy(struct meta_replica *replica, struct batch *batch,
                           const struct meta_tree_body *copy)
{
    struct meta_tree_body *grown =
        store_grow(batch->copies, &batch->copies_cap, batch->copies_len, sizeof(*grown));
    if (!grown)
        return replica_fail(replica, -ENOMEM, "out of memory");
    batch->copies = grown;
    batch->copies[batch->copies_len] = *copy;
    batch->copies[batch->copies_len++].op.name = NULL; /* it points into the caller's body */
    return 0;
}

/* Each attribute field the op sets that is newer than the field's stamp (LWW per field). */
static int apply_fields(struct meta_replica *replica, struct meta_node *node,
                        const struct meta_attr_body *body, struct crdt_ts ts)
{
    bool changed = false;
    for (int field = 0; field < META_ATTR_FIELDS; field++) {
        unsigned bit = 1u << field;
        if (!(body->mask & bit) || crdt_ts_cmp(ts, node->attr_ts[field]) <= 0)
            continue;
        node->attr_ts[field] = ts;
        changed = true;
        if (bit == META_ATTR_MODE)
            node->mode = (node->mode & S_IFMT) | (body->mode & 07777);
        else if (bit == META_ATTR_UID)
            node->uid = body->uid;
        else if (bit == META_ATTR_GID)
            node->gid = body->gid;
        else if (bit == META_ATTR_RDEV)
            node->rdev = body->rdev;
        else if (bit == META_ATTR_MTIME)
            node->mtime_ns = body->mtime_ns;
        else {
            free(node->target);
            node->target = strndup(body->target, body->target_len);
            if (!node->target)
                return replica_fail(replica, -ENOMEM, "out of memory");
        }
    }
    if (!changed)
        return 0; /* every field it sets was set later: nothing to show */
    int rc = meta_node_put(NULL, replica->store, node);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    change_add(replica, META_CHANGE_ATTR, node->ino, 0, NULL, true);
    return 0;
}

static int apply_xattr(struct meta_replica *replica, const struct meta_node *node,
                       const struct meta_attr_body *body, struct crdt_ts ts)
{
    char name[META_XATTR_NAME_MAX + 1];
    memcpy(name, body->xattr_name, body->xattr_name_len);
    name[body->xattr_name_len] = '\0';
    const void *value = NULL;
    if (body->mask == META_ATTR_XATTR_SET)
        value = body->xattr_value ? (const void *)body->xattr_value : "";
    int rc =
        meta_xattr_set(NULL, replica->store, &node->id, name, value, body->xattr_value_len, ts);
    return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
}

/*
 * The content half of rule 3b (README "Rule 3b"; the tree's half is
 * settle_moves): a peer's edit that names a move older than the node's
 * newest, which deleted it, and that this delete had not seen, was made
 * without seeing the delete: the node is pinned, so it is shown again where
 * it was, with the edit. The node's newest edit is noted either way.
 */
static int check_edit(struct meta_replica *replica, struct meta_node *node, struct crdt_ts ts,
                      struct crdt_ts seen_move)
{
    if (crdt_ts_cmp(ts, node->edited) > 0) {
        int rc = meta_node_set_edited(replica->store, &node->id, ts);
        if (rc)
            return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
        node->edited = ts;
    }
    bool unseen_delete = node->deleted && crdt_ts_cmp(seen_move, node->moved) < 0 &&
                         crdt_ts_cmp(ts, node->deleted_saw) > 0;
    if (!unseen_delete || node->pinned == META_PIN_ON)
        return 0;
    struct crdt_tree_changes changes = {0};
    int rc = pin_set(replica, &node->id, true, &changes);
    if (!rc) {
        node->pinned = META_PIN_ON;
        rc = materialize(replica, &changes, NULL, NULL, true, NULL);
    }
    crdt_tree_changes_free(&changes);
    return rc;
}

/*
 * A peer's version of a file: it joins the history and is the content if
 * it is the newest. Bytes written here and not committed yet are committed
 * first, so both versions are kept. Format 2 (README "Op bodies") also
 * counts for rule 3b, and is noted for binary conflicts.
 */
static int apply_version(struct meta_replica *replica, const struct meta_op *op,
                         struct meta_node *node, const struct meta_attr_body *body,
                         struct batch *batch)
{
    int rc = 0;
    if (is_dirty(node)) {
        rc = commit_content(replica, &node->id);
        meta_node_clear(node);
        memset(node, 0, sizeof(*node));
        if (!rc)
            rc = node_by_id(node, replica, from_meta_id(&op->node));
    }
    struct crdt_ts ts = {op->counter, op->replica};
    struct batch_version noted = {.node = op->node, .ts = ts, .base = body->base};
    if (!rc && (rc = meta_version_head(&noted.head_before, replica->store, &op->node)) == -ENOENT)
        rc = 0;
    else if (rc && !replica->errmsg[0])
        replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    /*
     * A text version's bytes travel as its text ops, merged here and recorded
     * as this replica's own version: its author's chunks are not sent, so it
     * is recorded only if they happen to be here (a version made locally).
     */
    bool record = !body->no_list;
    for (size_t i = 0; !rc && body->text && record && i < body->chunks.len; i++)
        if ((rc = meta_chunk_has(&record, replica->store, body->chunks.refs[i].id)) != 0)
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (!rc && record)
        rc = ensure_chunks(replica, &body->chunks);
    struct meta_version remote = {
        .node = op->node, .ts = ts, .author = op->author, .time_ns = body->time_ns};
    remote.size = body->size;
    if (!rc && record &&
        (rc = meta_version_record(replica->store, &remote, &body->chunks)) == -EEXIST)
        return 0; /* a timestamp names one op: this one's version is here already */
    if (rc)
        return replica->errmsg[0]
                   ? rc
                   : replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (record)
        change_add(replica, META_CHANGE_CONTENT, node->ino, 0, NULL, true);
    if (body->format < 2)
        return 0; /* format 1 saw everything: no pin, no conflict */
    rc = batch_note_version(replica, batch, noted);
    return rc ? rc : check_edit(replica, node, ts, body->seen_move);
}

/*
 * Makes a decoded version body's chunk list the whole list: an index is
 * expanded from the chunk store. -ENOENT while an index chunk is not here
 * (a peer's op that came before its chunks applies once they are).
 */
static int body_full_list(struct meta_replica *replica, struct meta_attr_body *body)
{
    if (!body->levels)
        return 0;
    struct meta_chunk_list full;
    int rc =
        meta_chunk_index_expand(&full, replica->store, &body->chunks, body->levels, NULL, NULL);
    if (rc)
        return replica_fail(replica, rc, "the chunk index of a version: %s",
                            meta_store_errmsg(replica->store));
    if (full.total != body->size) {
        meta_chunk_list_free(&full);
        return replica_fail(replica, -EBADMSG,
                            "a version's chunk index does not add up to its size");
    }
    meta_chunk_list_free(&body->chunks);
    body->chunks = full;
    body->levels = 0;
    return 0;
}

static int apply_attr_op(struct meta_replica *replica, const struct meta_op *op,
                         struct batch *batch)
{
    struct meta_node node;
    int rc = meta_node_get(&node, replica->store, &op->node);
    if (rc == -ENOENT)
        return 0; /* a node this replica never saw made: its tree op is what counts */
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    struct meta_attr_body body;
    struct crdt_ts ts = {op->counter, op->replica};
    rc = meta_attr_body_decode(&body, op->body, op->body_len);
    if (rc == -EBADMSG)
        replica_fail(replica, rc, "attribute op (%016" PRIx64 ", %" PRIu64 ") is malformed",
                     op->replica, op->seq);
    else if (!rc && body.mask == META_ATTR_CONTENT && !(rc = body_full_list(replica, &body)))
        rc = apply_version(replica, op, &node, &body, batch);
    else if (!rc && (body.mask == META_ATTR_XATTR_SET || body.mask == META_ATTR_XATTR_REMOVE))
        rc = apply_xattr(replica, &node, &body, ts);
    else if (!rc)
        rc = apply_fields(replica, &node, &body, ts);
    meta_attr_body_clear(&body);
    meta_node_clear(&node);
    return rc;
}

/* ---------- binary conflicts (README "Binary conflicts") ---------- */

/* A version's op read back from the log, decoded; body points into op. */
struct version_info {
    struct meta_op op;
    struct meta_attr_body body;
};

static void version_info_clear(struct version_info *info)
{
    meta_attr_body_clear(&info->body);
    meta_op_clear(&info->op);
}

/*
 * A version op's whole chunk list: its index expanded, or, for a text
 * version sent without one, the list of the version as recorded here if it
 * is (else no_list stays: its bytes were merged into a version of our own).
 */
static int version_full_list(struct meta_replica *replica, const struct meta_id *node,
                             struct version_info *info)
{
    if (!info->body.no_list)
        return body_full_list(replica, &info->body);
    struct meta_version version;
    struct crdt_ts ts = {info->op.counter, info->op.replica};
    int rc = meta_version_get(&version, &info->body.chunks, replica->store, node, ts);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    info->body.no_list = false;
    return 0;
}

/* The op that made version `ts` of `node`; -ENOENT if none did (merged here from text ops). */
static int version_info_get(struct version_info *out, struct meta_replica *replica,
                            const struct meta_id *node, struct crdt_ts ts)
{
    memset(out, 0, sizeof(*out));
    int rc = meta_oplog_get_by_ts(&out->op, replica->store, ts, META_OP_ATTR);
    if (rc == -ENOENT)
        return rc;
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    if (memcmp(out->op.node.bytes, node->bytes, META_ID_LEN) != 0)
        rc = -ENOENT;
    else if ((rc = meta_attr_body_decode(&out->body, out->op.body, out->op.body_len)) != 0)
        rc = replica_fail(replica, rc == -EBADMSG ? -EUCLEAN : rc,
                          "the op of a version in the log is damaged");
    else if (out->body.mask != META_ATTR_CONTENT)
        rc = -ENOENT;
    else
        rc = version_full_list(replica, node, out);
    if (rc)
        version_info_clear(out);
    return rc;
}

/*
 * Whether version `older` of a file is concurrent with its newer version
 * `newer`, i.e. not one of its ancestors: walks newer's bases, each older
 * than the one before, until it meets `older` or passes it. A format-1
 * version names no base: it saw every version older than itself. A base
 * this replica does not hold ends the walk as "concurrent": a copy too many
 * is better than a version lost.
 */
static int versions_concurrent(bool *out, struct meta_replica *replica, const struct meta_id *node,
                               struct crdt_ts older, const struct version_info *newer)
{
    struct crdt_ts base = newer->body.base;
    *out = false;
    if (newer->body.format < 2)
        return 0;
    while (crdt_ts_cmp(base, older) > 0) {
        struct version_info step;
        int rc = version_info_get(&step, replica, node, base);
        if (rc == -ENOENT)
            break;
        if (rc)
            return rc;
        bool names_base = step.body.format >= 2;
        base = step.body.base;
        version_info_clear(&step);
        if (!names_base)
            return 0;
    }
    *out = crdt_ts_cmp(base, older) != 0;
    return 0;
}

static int log_copy_op(struct meta_replica *replica, const struct meta_tree_body *copy)
{
    uint64_t seq;
    struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
    replica->tree_ops_unsaved++;
    struct crdt_buf body = {0};
    meta_tree_body_encode(&body, copy);
    int rc = log_op(replica, META_OP_TREE, ts, seq, copy->op.child, &body);
    crdt_buf_free(&body);
    return rc;
}

/* A copy's content: the losing version, as the copy's version with the same timestamp. */
static int copy_content(struct meta_replica *replica, struct crdt_node_id copy,
                        const struct version_info *loser)
{
    struct meta_version version = {
        .node = to_meta_id(copy),
        .ts = {loser->op.counter, loser->op.replica},
        .author = loser->op.author,
        .time_ns = loser->body.time_ns,
        .size = loser->body.chunks.total,
    };
    if (loser->body.no_list)
        return replica_fail(replica, -ENOENT, "the bytes of a text version merged elsewhere");
    int rc = ensure_chunks(replica, &loser->body.chunks);
    if (rc)
        return rc;
    rc = meta_version_record(replica->store, &version, &loser->body.chunks);
    if (rc == -EEXIST)
        return 0;
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    uint64_t ino = 0;
    if (meta_node_ino(&ino, replica->store, &version.node) == 0)
        change_add(replica, META_CHANGE_CONTENT, ino, 0, NULL, true);
    return 0;
}

/*
 * Makes the conflict copy of a losing version: the move that places node
 * meta_copy_id(file, version) where the version's author had the file,
 * stamped with the version's own timestamp. So every replica that makes it
 * makes the same op (crdt/tree keeps one), and a rename or delete of the
 * copy, made after seeing the version, always comes after it. It is logged
 * as a tree op of ours, so peers get the copy even if they never see the
 * two versions as heads at once; then its content.
 */
static int make_copy(struct meta_replica *replica, const struct meta_id *file,
                     const struct version_info *loser)
{
    struct crdt_ts ts = {loser->op.counter, loser->op.replica};
    struct meta_tree_body copy = {.copy = true, .file = from_meta_id(file)};
    copy.op = (struct crdt_tree_op){
        .ts = ts,
        .child = meta_copy_id(copy.file, ts),
        .parent = from_meta_id(&loser->body.parent),
        .name = loser->body.name,
        .name_len = (uint16_t)loser->body.name_len,
        .kind = CRDT_KIND_FILE,
    };
    struct crdt_tree_entry entry;
    if (crdt_tree_get(replica->tree, copy.op.child, &entry) == 0)
        return 0; /* made already, here or by a peer; maybe renamed or deleted since */
    struct crdt_tree_changes changes = {0};
    int rc = crdt_tree_apply(replica->tree, &copy.op, 1, &changes);
    if (rc)
        replica_fail(replica, rc, "making a conflict copy failed: %s", strerror(-rc));
    if (!rc)
        rc = move_note(replica, &copy.op);
    if (!rc)
        rc = log_copy_op(replica, &copy);
    if (!rc)
        rc = materialize(replica, &changes, NULL, NULL, true, NULL);
    if (!rc)
        rc = copy_content(replica, copy.op.child, loser);
    crdt_tree_changes_free(&changes);
    return rc;
}

/* A head that lost to `head`: its copy, if the two are concurrent and not both text. */
static int copy_if_concurrent(struct meta_replica *replica, const struct meta_id *node,
                              struct crdt_ts candidate, const struct version_info *head)
{
    struct version_info loser;
    int rc = version_info_get(&loser, replica, node, candidate);
    if (rc)
        return rc == -ENOENT ? 0 : rc;
    bool concurrent = false;
    if (loser.body.format >= 2 && !(loser.body.text && head->body.text))
        rc = versions_concurrent(&concurrent, replica, node, candidate, head);
    if (!rc && concurrent)
        rc = make_copy(replica, node, &loser);
    version_info_clear(&loser);
    return rc;
}

static bool is_base_of_any(const struct batch_version *group, size_t count, struct crdt_ts ts)
{
    for (size_t i = 0; i < count; i++)
        if (crdt_ts_cmp(group[i].base, ts) == 0)
            return true;
    return false;
}

/*
 * One file after a batch gave it versions: its heads are the versions no
 * other names as base, looked for among the batch's versions and the head
 * the file had before them. The newest version stays the file's content;
 * each other head concurrent with it gets a copy.
 */
static int resolve_file(struct meta_replica *replica, const struct batch_version *group,
                        size_t count)
{
    const struct meta_id *node = &group[0].node;
    struct crdt_ts head_ts;
    int rc = meta_version_head(&head_ts, replica->store, node);
    if (rc)
        return rc == -ENOENT ? 0
                             : replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    struct version_info head;
    if ((rc = version_info_get(&head, replica, node, head_ts)))
        return rc == -ENOENT ? 0 : rc;
    for (size_t i = 0; !rc && i <= count; i++) {
        struct crdt_ts candidate = i < count ? group[i].ts : group[0].head_before;
        if (candidate.counter == 0 || crdt_ts_cmp(candidate, head_ts) == 0 ||
            (i < count && is_base_of_any(group, count, candidate)))
            continue;
        rc = copy_if_concurrent(replica, node, candidate, &head);
    }
    version_info_clear(&head);
    return rc;
}

static int batch_version_cmp(const void *a, const void *b)
{
    const struct batch_version *x = a, *y = b;
    int by_node = memcmp(x->node.bytes, y->node.bytes, META_ID_LEN);
    if (by_node)
        return by_node;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Binary conflicts among the versions a batch brought, file by file. */
static int find_conflicts(struct meta_replica *replica, struct batch *batch)
{
    struct batch_version *versions = batch->versions;
    size_t len = batch->versions_len;
    if (len > 1)
        qsort(versions, len, sizeof(*versions), batch_version_cmp);
    int rc = 0;
    for (size_t start = 0, end; !rc && start < len; start = end) {
        for (end = start + 1; end < len && !memcmp(versions[end].node.bytes,
                                                   versions[start].node.bytes, META_ID_LEN);
             end++)
            ;
        rc = resolve_file(replica, &versions[start], end - start);
    }
    return rc;
}

/* The contents of conflict copies peers made (the versions they copy are held by now). */
static int fill_copies(struct meta_replica *replica, const struct batch *batch)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < batch->copies_len; i++) {
        const struct meta_tree_body *copy = &batch->copies[i];
        struct meta_id file = to_meta_id(copy->file);
        struct version_info loser;
        rc = version_info_get(&loser, replica, &file, copy->op.ts);
        if (rc == -ENOENT) {
            rc = 0; /* not held: the copy stays empty until it is (never, with causal delivery) */
            continue;
        }
        if (!rc)
            rc = copy_content(replica, copy->op.child, &loser);
        version_info_clear(&loser);
    }
    return rc;
}

/* ---------- remote ops: text ---------- */

/*
 * Whether a binary version is the file's newest: text ops then are not
 * merged into its content (rule 5: the text side's version is kept as a
 * conflict copy instead, and the binary one shows, as on every replica).
 */
static int binary_head(bool *out, struct meta_replica *replica, const struct meta_id *node)
{
    struct crdt_ts head_ts;
    *out = false;
    int rc = meta_version_head(&head_ts, replica->store, node);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    struct version_info head;
    if ((rc = version_info_get(&head, replica, node, head_ts)))
        return rc == -ENOENT ? 0 : rc;
    *out = head.body.format >= 2 && !head.body.text;
    version_info_clear(&head);
    return 0;
}

/* Decodes a group's text ops into *ops; each op of format 2 counts for rule 3b. */
static int decode_text_ops(struct crdt_text_ops *ops, struct meta_replica *replica,
                           struct meta_node *node, struct op_ref *refs, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const struct meta_op *op = refs[i].op;
        struct meta_text_body body;
        int rc = meta_text_body_decode(&body, op->body, op->body_len);
        if (!rc)
            rc = crdt_text_ops_decode(ops, body.ops, body.ops_len);
        if (rc)
            return replica_fail(replica, rc, "text op (%016" PRIx64 ", %" PRIu64 ") is malformed",
                                op->replica, op->seq);
        if (body.format >= 2 &&
            (rc = check_edit(replica, node, (struct crdt_ts){op->counter, op->replica},
                             body.seen_move)))
            return rc;
    }
    return 0;
}

/* Records a document's merged text as the file's newest version (not an op: no seq). */
static int record_merged(struct meta_replica *replica, const struct meta_node *node,
                         const struct meta_op *last, const char *content, size_t len)
{
    /* Stamped just past everything seen, so it is the newest. */
    replica->clock.counter++;
    struct meta_version merged = {
        .node = node->id,
        .ts = {replica->clock.counter, replica->clock.replica},
        .author = last->author,
        .time_ns = realtime_ns(),
    };
    int rc = meta_version_record_bytes(replica->store, &merged, content, len);
    /* After a crash the clock may be behind such a counter of ours: take the next. */
    for (int tries = 0; rc == -EEXIST && tries < VERSION_TS_TRIES; tries++) {
        merged.ts.counter = ++replica->clock.counter;
        rc = meta_version_record_bytes(replica->store, &merged, content, len);
    }
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    change_add(replica, META_CHANGE_CONTENT, node->ino, 0, NULL, true);
    change_add(replica, META_CHANGE_ATTR, node->ino, 0, NULL, true);
    return 0;
}

/* Merges the text ops of one file, then records the merged text as its newest version. */
static int apply_text_ops(struct meta_replica *replica, struct op_ref *refs, size_t count)
{
    const struct meta_id *id = &refs[0].op->node;
    struct meta_node node;
    int rc = meta_node_get(&node, replica->store, id);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    /* Local bytes not yet committed are committed first: then both edits merge. */
    if (is_dirty(&node)) {
        rc = commit_content(replica, id);
        meta_node_clear(&node);
        memset(&node, 0, sizeof(node));
        if (!rc)
            rc = node_by_id(&node, replica, from_meta_id(id));
    }
    struct crdt_text_ops ops = {0};
    bool binary = false;
    if (!rc)
        rc = decode_text_ops(&ops, replica, &node, refs, count);
    if (!rc)
        rc = binary_head(&binary, replica, id);
    struct text_slot *slot = NULL;
    if (!rc && !binary)
        rc = text_get(&slot, replica, id, true);
    size_t applied = 0, pending = 0;
    if (!rc && slot) {
        struct crdt_clock scratch = replica->clock;
        rc = crdt_text_apply(&applied, &pending, slot->doc, &scratch, ops.ops, ops.len);
        if (rc)
            replica_fail(replica, rc, "merging text ops failed: %s", strerror(-rc));
        crdt_clock_observe(&replica->clock, (struct crdt_ts){scratch.counter, 0});
    }
    if (!rc && slot) {
        /* Ops that wait for others keep their log entries out of the saved state. */
        slot->unsaved += count;
        if (!pending)
            crdt_vv_free(&slot->floor);
        for (size_t i = 0; !rc && pending && i < count; i++)
            rc = vv_lower(&slot->floor, refs[i].op->replica, refs[i].op->seq);
    }
    char *content = NULL;
    size_t len = 0;
    if (!rc && slot && (rc = crdt_text_content(&content, &len, slot->doc)))
        replica_fail(replica, rc, "out of memory");
    if (!rc && slot) {
        free(slot->content);
        slot->content = (uint8_t *)content;
        slot->content_len = len;
        rc = record_merged(replica, &node, refs[count - 1].op, content, len);
    }
    /* As in commit_text: on failure txn_end empties the cache. */
    if (!rc && slot)
        rc = text_settle(replica, slot);
    crdt_text_ops_free(&ops);
    meta_node_clear(&node);
    return rc;
}

/* ---------- remote batches ---------- */

/*
 * Appends a batch's new ops to the log (in seq order per replica: refs is
 * sorted so) and keeps those in refs[0..*fresh); a replica's ops after a
 * gap wait. Tree ops are decoded into tree_ops; conflict copies are noted.
 */
static int append_batch(size_t *fresh, size_t *tree_count, struct meta_replica *replica,
                        struct op_ref *refs, size_t count, struct crdt_tree_op *tree_ops,
                        struct batch *batch)
{
    uint64_t blocked = 0;
    bool any_blocked = false;
    *fresh = *tree_count = 0;
    for (size_t i = 0; i < count; i++) {
        const struct meta_op *op = refs[i].op;
        if (op->replica == replica->clock.replica)
            continue; /* our own ops come back from peers: we have them */
        if (any_blocked && op->replica == blocked)
            continue;
        int got = meta_oplog_append(replica->store, op);
        if (got == -EEXIST)
            continue;
        if (got == -EINVAL) {
            /* A gap: this replica's ops wait until the missing ones come. */
            any_blocked = true;
            blocked = op->replica;
            continue;
        }
        if (got)
            return replica_fail(replica, got, "%s", meta_store_errmsg(replica->store));
        crdt_clock_observe(&replica->clock, (struct crdt_ts){op->counter, op->replica});
        refs[(*fresh)++] = refs[i];
        if (op->kind != META_OP_TREE)
            continue;
        struct meta_tree_body body;
        if (meta_tree_body_decode(&body, op->body, op->body_len) != 0)
            return replica_fail(replica, -EBADMSG,
                                "tree op (%016" PRIx64 ", %" PRIu64 ") is malformed", op->replica,
                                op->seq);
        tree_ops[(*tree_count)++] = body.op;
        got = body.copy ? batch_note_copy(replica, batch, &body) : 0;
        if (got)
            return got;
    }
    return 0;
}

/* The tree first, as one batch: nodes exist before their attributes and contents. */
static int apply_tree_batch(struct meta_replica *replica, const struct crdt_tree_op *tree_ops,
                            size_t tree_count)
{
    struct crdt_tree_changes changes = {0};
    replica->tree_ops_unsaved += tree_count;
    int rc = crdt_tree_apply(replica->tree, tree_ops, tree_count, &changes);
    if (rc)
        replica_fail(replica, rc, "applying remote tree ops failed: %s", strerror(-rc));
    for (size_t i = 0; !rc && i < tree_count; i++)
        rc = move_note(replica, &tree_ops[i]);
    struct batch_ts batch = {.ts = malloc(tree_count * sizeof(*batch.ts))};
    for (size_t i = 0; batch.ts && i < tree_count; i++)
        batch.ts[batch.len++] = tree_ops[i].ts;
    if (batch.len)
        qsort(batch.ts, batch.len, sizeof(*batch.ts), ts_cmp);
    if (!rc)
        rc = materialize(replica, &changes, NULL, NULL, true, &batch);
    free(batch.ts);
    crdt_tree_changes_free(&changes);
    return rc;
}

/* Text ops, grouped by file (stable: Lamport order within a file). */
static int apply_text_batch(struct meta_replica *replica, struct op_ref *refs, size_t fresh)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < fresh; i++) {
        if (!refs[i].op || refs[i].op->kind != META_OP_TEXT)
            continue;
        struct op_ref *group = malloc((fresh - i) * sizeof(*group));
        if (!group)
            return -ENOMEM;
        size_t n = 0;
        for (size_t k = i; k < fresh; k++) {
            if (refs[k].op && refs[k].op->kind == META_OP_TEXT &&
                !memcmp(refs[k].op->node.bytes, refs[i].op->node.bytes, META_ID_LEN)) {
                group[n++] = refs[k];
                if (k > i)
                    refs[k].op = NULL; /* taken into this group */
            }
        }
        rc = apply_text_ops(replica, group, n);
        free(group);
    }
    return rc;
}

int meta_replica_count_conflicts(uint64_t *out, struct meta_replica *replica)
{
    static const char sql[] = "SELECT count(*) FROM nodes WHERE instr(name, ' (conflict ') > 0 "
                              "AND parent IS NOT NULL AND parent != ?1;";
    *out = 0;
    sqlite3_stmt *stmt = store_stmt(replica->store, sql);
    if (!stmt)
        return -ENOMEM;
    struct meta_id trash = to_meta_id(CRDT_NODE_TRASH);
    store_bind_id(stmt, 1, &trash);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *out = store_column_u64(stmt, 0);
        rc = 0;
    } else {
        rc = replica_fail(replica, store_errno(rc), "counting conflict copies");
    }
    sqlite3_reset(stmt);
    return rc;
}

/* ---------- members ---------- */

/* The replica id of a device key: the first 8 bytes of its BLAKE2b-256, little-endian. */
static uint64_t replica_of_key(const uint8_t public_key[META_PUBLIC_KEY_LEN])
{
    uint8_t digest[32];
    uint64_t id = 0;
    if (meta_crypto_hash(digest, sizeof(digest), NULL, public_key, META_PUBLIC_KEY_LEN) != 0)
        return 0;
    for (int i = 7; i >= 0; i--)
        id = id << 8 | digest[i];
    return id;
}

/* A device row from a membership op; a removal is final, whatever comes after. */
static int put_member(struct meta_replica *replica, const struct meta_member_body *body,
                      int64_t now_ns)
{
    struct meta_device device = {.added_at_ns = now_ns, .revoked = body->revoked};
    memcpy(device.public_key, body->public_key, META_PUBLIC_KEY_LEN);
    snprintf(device.name, sizeof(device.name), "%s", body->name);
    device.replica = replica_of_key(body->public_key);
    int rc = device.replica ? 0 : -EIO;
    struct meta_device known;
    if (!rc && meta_device_get(&known, replica->store, device.replica) == 0) {
        device.revoked = device.revoked || known.revoked;
        device.added_at_ns = known.added_at_ns;
    }
    if (!rc)
        rc = meta_device_put(replica->store, &device);
    return rc ? replica_fail(replica, rc, "recording a device: %s",
                             meta_store_errmsg(replica->store))
              : 0;
}

int meta_replica_add_device(struct meta_replica *replica,
                            const uint8_t public_key[META_PUBLIC_KEY_LEN], const char *name,
                            bool revoked)
{
    struct meta_member_body body = {.revoked = revoked};
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > META_NAME_MAX)
        return replica_fail(replica, -EINVAL, "a device name must be 1 to %d bytes", META_NAME_MAX);
    memcpy(body.public_key, public_key, META_PUBLIC_KEY_LEN);
    memcpy(body.name, name, name_len);
    struct crdt_clock saved;
    int rc = txn_begin(replica, &saved);
    if (!rc) {
        uint64_t seq;
        struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
        struct crdt_buf buf = {0};
        meta_member_body_encode(&buf, &body);
        /* The op names no tree node: the zero id. */
        rc = log_op(replica, META_OP_MEMBER, ts, seq, (struct crdt_node_id){0, 0}, &buf);
        crdt_buf_free(&buf);
    }
    if (!rc)
        rc = put_member(replica, &body, realtime_ns());
    return txn_end(replica, rc, &saved);
}

/*
 * What a removal that starts epoch `epoch` leaves here: the epoch from which
 * the removed device may author nothing, and this device's key of the new
 * epoch if the op sealed one to it.
 */
static int note_epoch(struct meta_replica *replica, const struct meta_member_body *body)
{
    char key[64], value[16];
    snprintf(key, sizeof(key), "member.revoked_epoch.%016" PRIx64,
             replica_of_key(body->public_key));
    snprintf(value, sizeof(value), "%u", body->epoch);
    int rc = meta_setting_set(replica->store, key, value);
    uint64_t self = meta_store_replica(replica->store);
    for (size_t i = 0; !rc && i < body->key_count; i++) {
        if (body->keys[i].replica != self)
            continue;
        uint8_t secret[META_SECRET_KEY_LEN], epoch_key[META_KEY_LEN];
        meta_store_secret_key(secret, replica->store);
        rc = meta_crypto_open_key(epoch_key, body->keys[i].sealed, secret);
        meta_crypto_wipe(secret, sizeof(secret));
        if (!rc)
            rc = meta_store_epoch_key_put(replica->store, body->epoch, epoch_key);
        meta_crypto_wipe(epoch_key, sizeof(epoch_key));
        if (rc == -EBADMSG)
            return replica_fail(replica, rc,
                                "the key of epoch %u sealed to this device does "
                                "not open",
                                body->epoch);
    }
    return rc ? replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store)) : 0;
}

static int apply_member_op(struct meta_replica *replica, const struct meta_op *op)
{
    struct meta_member_body body;
    int rc = meta_member_body_decode(&body, op->body, op->body_len);
    if (rc)
        return replica_fail(replica, rc == -ENOMEM ? rc : -EBADMSG,
                            "membership op (%016" PRIx64 ", %" PRIu64 ") is malformed", op->replica,
                            op->seq);
    rc = put_member(replica, &body, realtime_ns());
    if (!rc && body.epoch)
        rc = note_epoch(replica, &body);
    meta_member_body_clear(&body);
    return rc;
}

int meta_replica_remove_device(struct meta_replica *replica,
                               const uint8_t public_key[META_PUBLIC_KEY_LEN])
{
    struct meta_device *devices = NULL, *target = NULL;
    size_t count = 0;
    int rc = meta_device_list(&devices, &count, replica->store);
    if (rc)
        return replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    for (size_t i = 0; i < count; i++)
        if (memcmp(devices[i].public_key, public_key, META_PUBLIC_KEY_LEN) == 0)
            target = &devices[i];
    struct meta_member_body body = {.revoked = true, .epoch = meta_store_epoch(replica->store) + 1};
    struct meta_sealed_key *keys = calloc(count ? count : 1, sizeof(*keys));
    uint8_t epoch_key[META_KEY_LEN];
    meta_crypto_random(epoch_key, sizeof(epoch_key));
    if (!keys)
        rc = -ENOMEM;
    else if (!target)
        rc = replica_fail(replica, -ENOENT, "no such device in this share");
    else if (target->replica == meta_store_replica(replica->store))
        rc = replica_fail(replica, -EINVAL, "a device cannot remove itself");
    else if (target->revoked)
        rc = replica_fail(replica, -EALREADY, "device '%s' was removed already", target->name);
    /* The new key, sealed to every member that stays (this device too). */
    for (size_t i = 0; !rc && i < count; i++) {
        if (devices[i].revoked || &devices[i] == target)
            continue;
        keys[body.key_count].replica = devices[i].replica;
        rc = meta_crypto_seal_key(keys[body.key_count].sealed, epoch_key, devices[i].public_key);
        body.key_count++;
    }
    if (!rc) {
        memcpy(body.public_key, public_key, META_PUBLIC_KEY_LEN);
        snprintf(body.name, sizeof(body.name), "%s", target->name);
        body.keys = keys;
        /* The key first: an op that names an epoch this device lost would be worse. */
        rc = meta_store_epoch_key_put(replica->store, body.epoch, epoch_key);
        if (rc)
            replica_fail(replica, rc, "%s", meta_store_errmsg(replica->store));
    }
    meta_crypto_wipe(epoch_key, sizeof(epoch_key));
    struct crdt_clock saved;
    if (!rc && !(rc = txn_begin(replica, &saved))) {
        uint64_t seq;
        struct crdt_ts ts = crdt_clock_tick(&replica->clock, &seq);
        struct crdt_buf buf = {0};
        meta_member_body_encode(&buf, &body);
        rc = log_op(replica, META_OP_MEMBER, ts, seq, (struct crdt_node_id){0, 0}, &buf);
        crdt_buf_free(&buf);
        if (!rc)
            rc = put_member(replica, &body, realtime_ns());
        if (!rc) {
            body.key_count = 0; /* this device keeps its key already */
            rc = note_epoch(replica, &body);
        }
        rc = txn_end(replica, rc, &saved);
    }
    free(keys);
    free(devices);
    return rc;
}

int meta_replica_apply_remote(size_t *applied, struct meta_replica *replica,
                              const struct meta_op *ops, size_t count)
{
    *applied = 0;
    if (count == 0)
        return 0;
    struct op_ref *refs = malloc(count * sizeof(*refs));
    struct crdt_tree_op *tree_ops = malloc(count * sizeof(*tree_ops));
    if (!refs || !tree_ops) {
        free(refs);
        free(tree_ops);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++)
        refs[i].op = &ops[i];
    qsort(refs, count, sizeof(*refs), op_seq_cmp);
    struct crdt_clock saved;
    struct batch batch = {0};
    size_t fresh = 0, tree_count = 0;
    int rc = txn_begin(replica, &saved);
    if (!rc)
        rc = append_batch(&fresh, &tree_count, replica, refs, count, tree_ops, &batch);
    if (!rc && tree_count)
        rc = apply_tree_batch(replica, tree_ops, tree_count);
    /* Attributes and versions in Lamport order; then what the versions decide. */
    qsort(refs, fresh, sizeof(*refs), op_ts_cmp);
    for (size_t i = 0; !rc && i < fresh; i++)
        if (refs[i].op->kind == META_OP_ATTR)
            rc = apply_attr_op(replica, refs[i].op, &batch);
        else if (refs[i].op->kind == META_OP_MEMBER)
            rc = apply_member_op(replica, refs[i].op);
    if (!rc)
        rc = fill_copies(replica, &batch);
    if (!rc)
        rc = find_conflicts(replica, &batch);
    if (!rc)
        rc = apply_text_batch(replica, refs, fresh);
    if (!rc)
        *applied = fresh;
    rc = txn_end(replica, rc, &saved);
    if (rc)
        *applied = 0;
    batch_free(&batch);
    free(refs);
    free(tree_ops);
    return rc;
}
