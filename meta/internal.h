/*
 * meta/internal: what the files of meta/ share and nothing outside meta/ may
 * include: the store's layout in memory, the statement cache, savepoints,
 * error recording and SQLite-to-errno mapping.
 */
#ifndef WEFT_META_INTERNAL_H
#define WEFT_META_INTERNAL_H

#include "crdt/clock.h"
#include "meta/chunk.h"
#include "meta/nodes.h"
#include "meta/store.h"

#include <pthread.h>
#include <sqlite3.h>

#define STMT_CACHE_MAX 128

struct stmt_slot {
    const char *sql; /* identity: a static string of the calling file */
    sqlite3_stmt *stmt;
};

/* A version-vector entry as the store holds it in memory (see `vv` below). */
struct vv_slot {
    uint64_t replica;
    uint64_t seq;
};

struct meta_store {
    sqlite3 *db;
    char *dir;
    int lock_fd;
    int files_fd;       /* DIR/files, for openat/renameat of working copies */
    bool in_txn;        /* inside meta_store_txn_begin .. commit/rollback */
    bool lazy;          /* commits reach the disk at meta_store_sync (see store.h) */
    bool stale_pending; /* a change marked a working copy STALE: redo after commit */
    bool wc_batch_sync; /* working-copy replacements skip their fsyncs: the caller syncs once */
    /*
     * Empty working copies made ahead in DIR/files/tmp as "pool-<n>" (n in
     * [pool_taken, pool_made)), renamed into place for new nodes
     * (meta_replica_wc_pool_fill). The only store state another thread
     * touches: under pool_lock, with tmp_fd, which stays open.
     */
    int tmp_fd;
    pthread_mutex_t pool_lock;
    uint64_t pool_made, pool_taken;
    /* Working copies to rewrite in place, not replace (meta_replica_set_wc_pinned). */
    bool (*wc_pinned)(void *ctx, dev_t dev, ino_t ino);
    void *wc_pinned_ctx;
    int save_depth; /* open store_save_begin levels */
    /*
     * The version vector, as far as it was asked for: each slot is the
     * highest seq of its replica in the ops table as this connection sees
     * it (README "Schema": the vector is the log's, no table of its own).
     * Dropped after any rollback and read again. And the inode counter,
     * which changes with every new node: it lives here and its row is
     * written once, just before the change that took numbers commits
     * (store_flush_deferred); it is at least the row's value.
     */
    struct vv_slot *vv;
    size_t vv_len, vv_cap;
    uint64_t next_ino;
    bool next_ino_known, next_ino_dirty;
    uint32_t fanout_made[256 / 32]; /* DIR/files/xx directories known to exist */
    /*
     * Whether any node may have a security.* xattr (meta_xattr_maybe): 0 not
     * known yet, 1 none, 2 maybe. Any write of one makes it 2, even if rolled back.
     */
    int security_xattrs;
    uint64_t replica;
    uint8_t share_id[META_SHARE_ID_LEN];
    uint8_t share_key[META_KEY_LEN];
    uint8_t public_key[META_PUBLIC_KEY_LEN];
    uint8_t secret_key[META_SECRET_KEY_LEN];
    const struct meta_io *io;
    struct meta_chunker *chunker;
    struct stmt_slot stmts[STMT_CACHE_MAX];
    size_t stmt_count;
    char errmsg[META_ERRMSG_LEN];
};

/* Records a message (printf format) as the store's error and returns rc. */
int store_fail(struct meta_store *store, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Maps a SQLite result code to 0 / -errno. */
int store_errno(int sqlite_rc);
/*
 * Room for element `len` of a growing array (doubling from 8): the array,
 * moved if need be, or NULL when out of memory (the old one stays valid).
 */
void *store_grow(void *items, size_t *cap, size_t len, size_t elem_size);
/* Records SQLite's message for `what` and returns the mapped errno. */
int store_sql_fail(struct meta_store *store, int sqlite_rc, const char *what);

/*
 * The cached prepared statement for `sql` (a static string: cached by its
 * address), reset and with bindings cleared. NULL on failure (error recorded).
 */
sqlite3_stmt *store_stmt(struct meta_store *store, const char *sql);
/* Steps a statement expecting SQLITE_DONE; 0 or the mapped error (recorded). */
int store_step_done(struct meta_store *store, sqlite3_stmt *stmt, const char *what);

/*
 * Savepoints make each change atomic both alone and inside a caller's
 * transaction: begin, do the work, end with its result. end(rc != 0) rolls
 * the savepoint back; end(0) releases it, which commits when it is the
 * outermost (then STALE working copies are rewritten, as after
 * meta_store_txn_commit). Returns rc, or the release's or rewrite's error.
 */
int store_save_begin(struct meta_store *store);
int store_save_end(struct meta_store *store, int rc);
/*
 * The same for a change that writes with one SQL statement (plus deferred
 * rows): inside a transaction SQLite's statement atomicity is enough, so no
 * savepoint is taken; alone, one is, so the deferred rows commit with it.
 * *own says which; pass it to store_single_end.
 */
int store_single_begin(struct meta_store *store, bool *own);
/* Makes every working copy written so far durable, with its directory entry: one syncfs. */
int wc_sync_all(struct meta_store *store);
int store_single_end(struct meta_store *store, bool own, int rc);

/*
 * vv_get reads a replica's highest seq held; vv_raise records a higher one
 * (an op appended); take_ino hands out an inode number, `wanted` if nonzero
 * (the counter then skips past it). flush writes the counter inside the
 * change that is about to commit; forget drops what is held after a rollback.
 */
int store_vv_get(uint64_t *out, struct meta_store *store, uint64_t replica);
int store_vv_raise(struct meta_store *store, uint64_t replica, uint64_t seq);
int store_take_ino(uint64_t *out, struct meta_store *store, uint64_t wanted);
int store_flush_deferred(struct meta_store *store);
void store_forget_deferred(struct meta_store *store);
/* Runs a cached statement without bindings or rows (transaction control); 0 or the error. */
int store_exec_cached(struct meta_store *store, const char *sql, const char *what);

/* Binds a u64 as SQLite's signed 64-bit integer (same bits). */
int store_bind_u64(sqlite3_stmt *stmt, int index, uint64_t value);
/* Reads a column bound with store_bind_u64. */
uint64_t store_column_u64(sqlite3_stmt *stmt, int index);
/* Binds a node id (16-byte blob). */
int store_bind_id(sqlite3_stmt *stmt, int index, const struct meta_id *id);
/* Copies a 16-byte blob column into *out; -EUCLEAN if it is not 16 bytes. */
int store_column_id(struct meta_id *out, sqlite3_stmt *stmt, int index);

/*
 * The name of the VFS that gathers each transaction's WAL writes into one
 * (walbuf.c), registered on first use over the default VFS; NULL if it
 * cannot be (then the default VFS is used).
 */
const char *store_walbuf_vfs(void);

/* Applies every migration the database lacks, each in one transaction (schema.c). */
int schema_migrate(struct meta_store *store, int from_version);
/* Checks the database's own consistency beyond integrity_check (version.c). */
int version_check(struct meta_store *store);
/* Rewrites every STALE working copy from its newest version (version.c). */
int version_redo_stale(struct meta_store *store);
/* Writes a version's content to fd from offset 0 through the I/O hook (version.c). */
int version_write_wc(struct meta_store *store, const struct meta_id *node, struct crdt_ts ts,
                     int fd);
/* Writes data through the store's I/O hook, all of it; 0 or -errno (wcopy.c). */
int wc_write_all(struct meta_store *store, int fd, const void *data, size_t len, off_t offset);
/* fsync through the store's I/O hook; 0 or -errno (wcopy.c). */
int wc_fsync(struct meta_store *store, int fd);
/* Makes pooled empty working copies until `target` wait; how many it made, or -errno. Any thread.
 */
int wc_pool_fill(struct meta_store *store, unsigned target);
/* How many pooled working copies wait. Any thread. */
unsigned wc_pool_level(struct meta_store *store);
/* Replaces a working copy with a version's content atomically (wcopy.c). */
int wc_replace_from_version(struct meta_store *store, const struct meta_id *node,
                            const struct crdt_ts *ts);
/* Appends the nodes.attr_ts encoding of per-field stamps (README "Schema"; nodes.c). */
void attr_ts_encode(struct crdt_buf *buf, const struct crdt_ts ts[META_ATTR_FIELDS]);
/* Decodes nodes.attr_ts (all zero first); -EBADMSG if malformed (nodes.c). */
int attr_ts_decode(struct crdt_ts out[META_ATTR_FIELDS], const void *data, size_t len);
/* Formats a node id as 32 lowercase hex digits plus NUL. */
void id_hex(char out[2 * META_ID_LEN + 1], const struct meta_id *id);

#endif
