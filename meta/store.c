/*
 * meta/store: see store.h. Opening, creating and closing a store, its lock,
 * keys and identity, transactions, settings and devices; and the helpers the
 * other files of meta/ share (internal.h).
 */
#include "internal.h"
#include "meta/nodes.h"
#include "meta/sqlerr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ---- */

int store_fail(struct meta_store *store, int rc, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(store->errmsg, sizeof(store->errmsg), fmt, args);
    va_end(args);
    return rc;
}

int store_errno(int sqlite_rc)
{
    return meta_sqlite_errno(sqlite_rc);
}

int store_sql_fail(struct meta_store *store, int sqlite_rc, const char *what)
{
    int rc = store_errno(sqlite_rc);
    if (rc == 0)
        rc = -EIO; /* an unexpected row or success where the caller saw a failure */
    const char *detail = store->db ? sqlite3_errmsg(store->db) : sqlite3_errstr(sqlite_rc);
    if ((sqlite_rc & 0xff) == SQLITE_CORRUPT)
        return store_fail(store, rc,
                          "%s: the database %s/store.db is corrupt (%s); weft will not repair it: "
                          "restore the share from a relay or a backup",
                          what, store->dir, detail);
    if ((sqlite_rc & 0xff) == SQLITE_FULL)
        return store_fail(store, rc, "%s: the disk holding %s is full (%s)", what, store->dir,
                          detail);
    return store_fail(store, rc, "%s: %s", what, detail);
}

/* ---- statements, savepoints, binding ---- */

sqlite3_stmt *store_stmt(struct meta_store *store, const char *sql)
{
    for (size_t i = 0; i < store->stmt_count; i++) {
        if (store->stmts[i].sql == sql) {
            sqlite3_stmt *stmt = store->stmts[i].stmt;
            /* reset's result repeats the last step's error, already handled there. */
            sqlite3_reset(stmt);
            sqlite3_clear_bindings(stmt);
            return stmt;
        }
    }
    if (store->stmt_count == STMT_CACHE_MAX) {
        store_fail(store, -ENOMEM, "statement cache full (raise STMT_CACHE_MAX)");
        return NULL;
    }
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
    if (rc != SQLITE_OK) {
        store_sql_fail(store, rc, "preparing a statement");
        return NULL;
    }
    store->stmts[store->stmt_count].sql = sql;
    store->stmts[store->stmt_count].stmt = stmt;
    store->stmt_count++;
    return stmt;
}

int store_step_done(struct meta_store *store, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc == SQLITE_DONE)
        return 0;
    return store_sql_fail(store, rc, what);
}

/* Transaction control, prepared once (sqlite3_exec would parse the text at every call). */
static const char begin_sql[] = "BEGIN IMMEDIATE;";
static const char commit_sql[] = "COMMIT;";
static const char rollback_sql[] = "ROLLBACK;";
static const char savepoint_sql[] = "SAVEPOINT meta;";
static const char release_sql[] = "RELEASE meta;";
static const char rollback_to_sql[] = "ROLLBACK TO meta;";

int store_exec_cached(struct meta_store *store, const char *sql, const char *what)
{
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    return store_step_done(store, stmt, what);
}

/* Rolls back the whole transaction (best effort: only a broken connection refuses). */
static void rollback_all(struct meta_store *store)
{
    if (!sqlite3_get_autocommit(store->db) &&
        store_exec_cached(store, rollback_sql, "rolling back") != 0)
        sqlite3_exec(store->db, "ROLLBACK;", NULL, NULL, NULL);
    store_forget_deferred(store);
}

/* True when the caller's transaction was rolled back by SQLite after an I/O error. */
static bool txn_lost(const struct meta_store *store)
{
    return store->in_txn && sqlite3_get_autocommit(store->db);
}

int store_save_begin(struct meta_store *store)
{
    if (txn_lost(store))
        return store_fail(store, -EIO,
                          "the transaction was rolled back after an earlier error; roll back "
                          "and start again");
    int rc = store_exec_cached(store, savepoint_sql, "starting a change");
    if (rc == 0)
        store->save_depth++;
    return rc;
}

static int redo_after_commit(struct meta_store *store);

int store_save_end(struct meta_store *store, int rc)
{
    /* Outermost: no transaction of the caller's and no enclosing savepoint. */
    bool outermost = !store->in_txn && store->save_depth == 1;
    store->save_depth--;
    if (rc == 0 && outermost)
        rc = store_flush_deferred(store);
    if (rc == 0) {
        rc = store_exec_cached(store, release_sql, "committing a change");
        if (rc == 0)
            return outermost ? redo_after_commit(store) : 0;
    }
    if (sqlite3_get_autocommit(store->db)) {
        store->save_depth = 0;
        store_forget_deferred(store); /* SQLite already rolled everything back */
        return rc;
    }
    if (outermost) {
        rollback_all(store);
        return rc;
    }
    /* A rollback can fail only if the connection is broken; the rc we return says so already. */
    char cause[META_ERRMSG_LEN];
    snprintf(cause, sizeof(cause), "%s", store->errmsg);
    if (store_exec_cached(store, rollback_to_sql, "undoing a change") != 0 ||
        store_exec_cached(store, release_sql, "undoing a change") != 0)
        store_fail(store, rc, "%.400s (and undoing it failed)", cause);
    else
        store_fail(store, rc, "%s", cause);
    /* Ops the savepoint appended are gone: read the vector again (the inode counter may stay). */
    store->vv_len = 0;
    return rc;
}

int store_single_begin(struct meta_store *store, bool *own)
{
    *own = !store->in_txn && store->save_depth == 0;
    if (*own)
        return store_save_begin(store);
    if (txn_lost(store))
        return store_fail(store, -EIO,
                          "the transaction was rolled back after an earlier error; roll back "
                          "and start again");
    return 0;
}

int store_single_end(struct meta_store *store, bool own, int rc)
{
    return own ? store_save_end(store, rc) : rc;
}

/* ---- deferred rows ---- */

static struct vv_slot *vv_slot_find(struct meta_store *store, uint64_t replica)
{
    for (size_t i = 0; i < store->vv_len; i++)
        if (store->vv[i].replica == replica)
            return &store->vv[i];
    return NULL;
}

/* The highest seq of `replica` in the op log (0 if none): a seek to the end of its key range. */
static int vv_read(uint64_t *out, struct meta_store *store, uint64_t replica)
{
    static const char sql[] = "SELECT max(seq) FROM ops WHERE replica = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, replica);
    int rc = sqlite3_step(stmt);
    *out = rc == SQLITE_ROW ? store_column_u64(stmt, 0) : 0; /* max() of nothing is NULL: 0 */
    sqlite3_reset(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_sql_fail(store, rc, "reading the version vector");
    return 0;
}

int store_vv_get(uint64_t *out, struct meta_store *store, uint64_t replica)
{
    struct vv_slot *slot = vv_slot_find(store, replica);
    if (slot) {
        *out = slot->seq;
        return 0;
    }
    uint64_t seq;
    int rc = vv_read(&seq, store, replica);
    if (rc)
        return rc;
    if (store->vv_len == store->vv_cap) {
        size_t cap = store->vv_cap ? store->vv_cap * 2 : 8;
        struct vv_slot *grown = realloc(store->vv, cap * sizeof(*grown));
        if (!grown)
            return store_fail(store, -ENOMEM, "out of memory");
        store->vv = grown;
        store->vv_cap = cap;
    }
    store->vv[store->vv_len++] = (struct vv_slot){.replica = replica, .seq = seq};
    *out = seq;
    return 0;
}

int store_vv_raise(struct meta_store *store, uint64_t replica, uint64_t seq)
{
    uint64_t held;
    int rc = store_vv_get(&held, store, replica);
    if (rc)
        return rc;
    struct vv_slot *slot = vv_slot_find(store, replica);
    if (seq > slot->seq)
        slot->seq = seq;
    return 0;
}

int store_take_ino(uint64_t *out, struct meta_store *store, uint64_t wanted)
{
    static const char sql[] = "SELECT value FROM counters WHERE name = 'next_ino';";
    if (!store->next_ino_known) {
        sqlite3_stmt *stmt = store_stmt(store, sql);
        if (!stmt)
            return -ENOMEM;
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
            store->next_ino = store_column_u64(stmt, 0);
        sqlite3_reset(stmt);
        if (rc != SQLITE_ROW)
            return store_sql_fail(store, rc == SQLITE_DONE ? SQLITE_CORRUPT : rc,
                                  "reading the inode counter");
        store->next_ino_known = true;
    }
    if (wanted) {
        *out = wanted;
        if (wanted >= store->next_ino)
            store->next_ino = wanted + 1;
    } else {
        *out = store->next_ino++;
    }
    store->next_ino_dirty = true;
    return 0;
}

int store_flush_deferred(struct meta_store *store)
{
    static const char ino_sql[] = "UPDATE counters SET value = ?1 WHERE name = 'next_ino';";
    if (store->next_ino_dirty) {
        sqlite3_stmt *stmt = store_stmt(store, ino_sql);
        if (!stmt)
            return -ENOMEM;
        store_bind_u64(stmt, 1, store->next_ino);
        int rc = store_step_done(store, stmt, "raising the inode counter");
        if (rc)
            return rc;
        store->next_ino_dirty = false;
    }
    return 0;
}

void store_forget_deferred(struct meta_store *store)
{
    store->vv_len = 0;
    store->next_ino_known = false;
    store->next_ino_dirty = false;
}

int store_bind_u64(sqlite3_stmt *stmt, int index, uint64_t value)
{
    return sqlite3_bind_int64(stmt, index, (sqlite3_int64)value);
}

uint64_t store_column_u64(sqlite3_stmt *stmt, int index)
{
    return (uint64_t)sqlite3_column_int64(stmt, index);
}

int store_bind_id(sqlite3_stmt *stmt, int index, const struct meta_id *id)
{
    return sqlite3_bind_blob(stmt, index, id->bytes, META_ID_LEN, SQLITE_STATIC);
}

int store_column_id(struct meta_id *out, sqlite3_stmt *stmt, int index)
{
    if (sqlite3_column_bytes(stmt, index) != META_ID_LEN)
        return -EUCLEAN;
    memcpy(out->bytes, sqlite3_column_blob(stmt, index), META_ID_LEN);
    return 0;
}

void id_hex(char out[2 * META_ID_LEN + 1], const struct meta_id *id)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < META_ID_LEN; i++) {
        out[2 * i] = digits[id->bytes[i] >> 4];
        out[2 * i + 1] = digits[id->bytes[i] & 15];
    }
    out[2 * META_ID_LEN] = '\0';
}

static void hex_encode(char *out, const uint8_t *bytes, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hex_decode(uint8_t *out, size_t len, const char *hex)
{
    if (strlen(hex) != 2 * len)
        return -EINVAL;
    for (size_t i = 0; i < 2 * len; i++) {
        char c = hex[i];
        int nibble = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (nibble < 0)
            return -EINVAL;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(nibble << 4);
        else
            out[i / 2] |= (uint8_t)nibble;
    }
    return 0;
}

/* ---- files, lock and keys ---- */

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    return -errno;
}

/*
 * The lock is an OFD lock (F_OFD_SETLK) on DIR/lock: unlike a POSIX record
 * lock it belongs to the open file description, so a second open in the same
 * process conflicts too, and it vanishes when the process dies (no stale
 * locks after kill -9). The holder's pid is written into the file for the
 * message a second opener gets.
 */
static int take_lock(struct meta_store *store)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/lock", store->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return store_fail(store, -errno, "cannot open the lock file %s: %s", path, strerror(errno));
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_SETLK, &lock) != 0) {
        int saved = errno;
        char holder[32] = {0};
        ssize_t got = pread(fd, holder, sizeof(holder) - 1, 0);
        long pid = got > 0 ? strtol(holder, NULL, 10) : 0;
        close(fd);
        if (saved != EAGAIN && saved != EACCES)
            return store_fail(store, -saved, "cannot lock %s: %s", path, strerror(saved));
        if (pid == (long)getpid())
            return store_fail(store, -EBUSY,
                              "share at %s is already open in this process (lock file %s); "
                              "close it first",
                              store->dir, path);
        if (pid > 0)
            return store_fail(store, -EBUSY,
                              "share at %s is already open by process %ld (lock file %s); "
                              "close that weft first",
                              store->dir, pid, path);
        return store_fail(store, -EBUSY,
                          "share at %s is already open by another process (lock file %s); "
                          "close that weft first",
                          store->dir, path);
    }
    char pid_text[32];
    int len = snprintf(pid_text, sizeof(pid_text), "%ld\n", (long)getpid());
    /* The pid is only for the message above: failing to write it must not stop the open. */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid_text, (size_t)len, 0) != len)
        pid_text[0] = '\0';
    store->lock_fd = fd;
    return 0;
}

static int write_key_file(struct meta_store *store, const char *name, const uint8_t *key,
                          size_t len)
{
    char path[4096], tmp[4096], keys[4096];
    snprintf(keys, sizeof(keys), "%s/keys", store->dir);
    snprintf(path, sizeof(path), "%s/keys/%s", store->dir, name);
    snprintf(tmp, sizeof(tmp), "%s/keys/%s.tmp", store->dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return store_fail(store, -errno, "cannot write %s: %s", tmp, strerror(errno));
    int rc = 0;
    if (fchmod(fd, 0600) != 0 || write(fd, key, len) != (ssize_t)len || fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0)
        rc = fsync_dir(keys);
    if (rc) {
        unlink(tmp);
        return store_fail(store, rc, "cannot write %s: %s", path, strerror(-rc));
    }
    return 0;
}

static int read_key_file(struct meta_store *store, const char *name, uint8_t *key, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/keys/%s", store->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return store_fail(store, -errno, "cannot read the key file %s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = store_fail(store, -errno, "cannot stat %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode) || st.st_size != (off_t)len) {
        rc = store_fail(store, -EUCLEAN, "the key file %s is damaged (expected %zu bytes)", path,
                        len);
    } else if (st.st_mode & 077) {
        rc = store_fail(store, -EPERM,
                        "the key file %s can be read by other users (mode %04o); weft will not "
                        "use it: run `chmod 600 %s`, and treat the key as possibly leaked",
                        path, (unsigned)(st.st_mode & 07777), path);
    } else if (read(fd, key, len) != (ssize_t)len) {
        rc = store_fail(store, -EIO, "cannot read %s", path);
    }
    close(fd);
    return rc;
}

/* ---- open, create, close ---- */

/* The page size of a new store's database (bytes). */
#define PAGE_SIZE_TEXT "2048"

/* Paths are built in 4096-byte buffers; this bound on DIR leaves room for any suffix. */
#define DIR_LEN_MAX 3900

static struct meta_store *store_alloc(const char *dir)
{
    struct meta_store *store = calloc(1, sizeof(*store));
    if (!store)
        return NULL;
    store->dir = strdup(dir);
    if (!store->dir) {
        free(store);
        return NULL;
    }
    store->lock_fd = -1;
    store->files_fd = -1;
    store->tmp_fd = -1;
    pthread_mutex_init(&store->pool_lock, NULL);
    return store;
}

static int exec_sql(struct meta_store *store, const char *sql, const char *what)
{
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : store_sql_fail(store, rc, what);
}

/* Reads a one-integer PRAGMA or query. */
static int query_int(struct meta_store *store, const char *sql, int64_t *out)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(stmt, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(stmt);
    return rc;
}

/*
 * Durability settings (README "Durability"): WAL, and synchronous=FULL so
 * that every commit fsyncs the WAL before it returns; in WAL mode NORMAL
 * would let the last commits vanish on power loss, breaking the promise
 * that an fsync on the mount is durable.
 */
static int configure(struct meta_store *store)
{
    sqlite3_extended_result_codes(store->db, 1);
    sqlite3_busy_timeout(store->db, 5000);
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, "PRAGMA journal_mode = WAL;", -1, &stmt, NULL);
    if (rc == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(stmt, 0);
        if (!mode || strcmp(mode, "wal") != 0)
            rc = SQLITE_CANTOPEN;
    } else if (rc == SQLITE_OK) {
        rc = sqlite3_errcode(store->db);
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_OK)
        return store_sql_fail(store, rc, "switching the database to WAL mode");
    return exec_sql(store,
                    "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                    "PRAGMA temp_store = MEMORY;",
                    "configuring the database");
}

static int open_db(struct meta_store *store, bool create)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/store.db", store->dir);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &store->db, flags, store_walbuf_vfs());
    if (rc != SQLITE_OK)
        return store_sql_fail(store, rc, "opening the database");
    /*
     * One process owns a store (the lock file says so), so SQLite need not
     * take and drop file locks around every statement, nor share its WAL
     * index through shared memory: exclusive locking mode saves both, and
     * keeps the page cache warm across transactions. It must be set before
     * the first read of the database for the WAL index to stay in memory.
     */
    return exec_sql(store, "PRAGMA locking_mode = EXCLUSIVE;", "taking the database lock");
}

/*
 * Looks at the database file's header before SQLite does, so that a file
 * that is not ours is refused without SQLite writing to it. Offsets are from
 * SQLite's file format: magic at 0, user_version at 60, application_id at
 * 68 (big-endian). A WAL may hold a newer page 1, so a zero application id
 * here is checked again through SQLite.
 */
static int check_header(struct meta_store *store)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/store.db", store->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return store_fail(store, -ENOENT,
                              "no share at %s (%s does not exist); create one with `weft init` "
                              "or join one with `weft join`",
                              store->dir, path);
        return store_fail(store, -errno, "cannot open %s: %s", path, strerror(errno));
    }
    uint8_t header[100];
    ssize_t got = pread(fd, header, sizeof(header), 0);
    close(fd);
    if (got < 0)
        return store_fail(store, -EIO, "cannot read %s: %s", path, strerror(errno));
    if (got == 0) {
        char wal[4096];
        struct stat st;
        snprintf(wal, sizeof(wal), "%s/store.db-wal", store->dir);
        if (stat(wal, &st) == 0 && st.st_size > 0)
            return 0; /* all of it is still in the WAL */
        return store_fail(store, -EUCLEAN,
                          "%s is empty: creating the share was interrupted. Nothing of it can be "
                          "used: move %s away and run `weft init` (or `weft join`) again",
                          path, store->dir);
    }
    if (got < (ssize_t)sizeof(header) || memcmp(header, "SQLite format 3", 16) != 0)
        return store_fail(store, -EUCLEAN,
                          "%s is not a weft store: it is not a SQLite database (a damaged or "
                          "foreign file). weft will not touch it: move it away and restore the "
                          "share from a relay or a backup",
                          path);
    uint32_t app_id = (uint32_t)header[68] << 24 | (uint32_t)header[69] << 16 |
                      (uint32_t)header[70] << 8 | header[71];
    if (app_id != 0 && app_id != META_APPLICATION_ID)
        return store_fail(store, -EUCLEAN,
                          "%s is the database of another program (application_id 0x%08x), not "
                          "a weft store; weft will not touch it: move it away or open another "
                          "directory",
                          path, app_id);
    return 0;
}

/* Checks the application id and schema version through SQLite; migrates an older schema. */
static int check_schema(struct meta_store *store)
{
    int64_t app_id = 0, version = 0, tables = 0;
    int rc = query_int(store, "PRAGMA application_id;", &app_id);
    if (rc == SQLITE_OK)
        rc = query_int(store, "PRAGMA user_version;", &version);
    if (rc == SQLITE_OK)
        rc = query_int(store, "SELECT count(*) FROM sqlite_master;", &tables);
    if (rc != SQLITE_OK) {
        int err = store_errno(rc);
        if (err == -EUCLEAN)
            return store_fail(store, err,
                              "%s/store.db is damaged or not a database (%s); weft will not "
                              "touch it: move it away and restore the share from a relay or a "
                              "backup",
                              store->dir, sqlite3_errmsg(store->db));
        return store_sql_fail(store, rc, "reading the database header");
    }
    if (app_id == 0 && version == 0 && tables == 0)
        return store_fail(store, -EUCLEAN,
                          "%s/store.db is empty: creating the share was interrupted. Move %s "
                          "away and run `weft init` (or `weft join`) again",
                          store->dir, store->dir);
    if (app_id != META_APPLICATION_ID)
        return store_fail(store, -EUCLEAN,
                          "%s/store.db is a SQLite database but not a weft store "
                          "(application_id 0x%08x); weft will not touch it",
                          store->dir, (unsigned)app_id);
    if (version > META_SCHEMA_VERSION)
        return store_fail(store, -EPROTONOSUPPORT,
                          "%s/store.db has schema v%lld, newer than this weft knows (v%d): it "
                          "was written by a newer weft. Upgrade weft to open it; this version "
                          "will not touch it",
                          store->dir, (long long)version, META_SCHEMA_VERSION);
    if (version < 1)
        return store_fail(store, -EUCLEAN, "%s/store.db has no schema version; not a weft store",
                          store->dir);
    rc = configure(store);
    if (rc)
        return rc;
    if (version < META_SCHEMA_VERSION)
        return schema_migrate(store, (int)version);
    return 0;
}

static int derive_replica(uint64_t *out, const uint8_t public_key[META_PUBLIC_KEY_LEN])
{
    uint8_t digest[32];
    int rc = meta_crypto_hash(digest, sizeof(digest), NULL, public_key, META_PUBLIC_KEY_LEN);
    if (rc)
        return rc;
    uint64_t replica = 0;
    for (int i = 0; i < 8; i++)
        replica |= (uint64_t)digest[i] << (8 * i);
    *out = replica;
    return 0;
}

/* Reads the identity settings and key files, and checks they belong together. */
static int load_identity(struct meta_store *store)
{
    char *share_id = NULL, *public_key = NULL;
    int rc = meta_setting_get(&share_id, store, "share.id");
    if (rc == -ENOENT) {
        rc = store_fail(store, -EUCLEAN,
                        "%s/store.db has no share identity: creating the share was "
                        "interrupted. Move %s away and run `weft init` (or `weft join`) again",
                        store->dir, store->dir);
        goto out;
    }
    if (rc == 0)
        rc = meta_setting_get(&public_key, store, "device.public_key");
    if (rc)
        goto out;
    uint8_t stored_pk[META_PUBLIC_KEY_LEN];
    if (hex_decode(store->share_id, sizeof(store->share_id), share_id) != 0 ||
        hex_decode(stored_pk, sizeof(stored_pk), public_key) != 0) {
        rc = store_fail(store, -EUCLEAN, "%s/store.db: the share identity settings are damaged",
                        store->dir);
        goto out;
    }
    rc = read_key_file(store, "share.key", store->share_key, sizeof(store->share_key));
    if (rc == 0)
        rc = read_key_file(store, "device.key", store->secret_key, sizeof(store->secret_key));
    if (rc)
        goto out;
    /* libsodium's Ed25519 secret key ends with the public key. */
    memcpy(store->public_key, store->secret_key + 32, META_PUBLIC_KEY_LEN);
    if (memcmp(store->public_key, stored_pk, META_PUBLIC_KEY_LEN) != 0) {
        rc = store_fail(store, -EUCLEAN,
                        "%s/keys/device.key does not belong to this store (its public key "
                        "differs from the one recorded); restore the right key file",
                        store->dir);
        goto out;
    }
    rc = derive_replica(&store->replica, store->public_key);
out:
    free(share_id);
    free(public_key);
    return rc;
}

/*
 * Empties DIR/files/tmp (made if missing): leftovers of replacements a crash
 * interrupted, and the last run's pool of empty working copies. Keeps it
 * open as store->tmp_fd.
 */
static int clean_tmp(struct meta_store *store)
{
    int tmp_fd = openat(store->files_fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tmp_fd < 0 && errno == ENOENT && mkdirat(store->files_fd, "tmp", 0700) == 0)
        tmp_fd = openat(store->files_fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tmp_fd < 0)
        return store_fail(store, -errno, "cannot open %s/files/tmp: %s", store->dir,
                          strerror(errno));
    store->tmp_fd = fcntl(tmp_fd, F_DUPFD_CLOEXEC, 0);
    if (store->tmp_fd < 0) {
        close(tmp_fd);
        return store_fail(store, -errno, "cannot open %s/files/tmp: %s", store->dir,
                          strerror(errno));
    }
    DIR *dir = fdopendir(tmp_fd);
    if (!dir) {
        close(tmp_fd);
        return store_fail(store, -errno, "cannot read %s/files/tmp", store->dir);
    }
    struct dirent *entry;
    int rc = 0;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        if (unlinkat(dirfd(dir), entry->d_name, 0) != 0 && errno != ENOENT) {
            rc = store_fail(store, -errno, "cannot remove %s/files/tmp/%s: %s", store->dir,
                            entry->d_name, strerror(errno));
            break;
        }
    }
    closedir(dir);
    return rc;
}

static int open_files(struct meta_store *store)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/files", store->dir);
    store->files_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (store->files_fd < 0)
        return store_fail(store, -errno, "cannot open %s: %s", path, strerror(errno));
    return meta_chunker_new(&store->chunker, store->share_key);
}

static void copy_err(struct meta_err *err, const struct meta_store *store, const char *fallback)
{
    if (!err)
        return;
    snprintf(err->msg, sizeof(err->msg), "%s",
             store && store->errmsg[0] ? store->errmsg : fallback);
}

int meta_store_open(struct meta_store **out, struct meta_err *err, const char *dir)
{
    *out = NULL;
    if (strlen(dir) > DIR_LEN_MAX) {
        if (err)
            snprintf(err->msg, sizeof(err->msg), "the share's path is too long (over %d bytes)",
                     DIR_LEN_MAX);
        return -ENAMETOOLONG;
    }
    struct stat st;
    if (meta_crypto_init() != 0) {
        copy_err(err, NULL, "cannot start libsodium");
        return -EIO;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (err)
            snprintf(err->msg, sizeof(err->msg), "no share at %s (no such directory)", dir);
        return -ENOENT;
    }
    struct meta_store *store = store_alloc(dir);
    if (!store) {
        copy_err(err, NULL, "out of memory");
        return -ENOMEM;
    }
    int rc = take_lock(store);
    if (rc == 0)
        rc = check_header(store);
    if (rc == 0)
        rc = open_db(store, false);
    if (rc == 0)
        rc = check_schema(store);
    if (rc == 0)
        rc = load_identity(store);
    if (rc == 0)
        rc = open_files(store);
    if (rc == 0)
        rc = clean_tmp(store);
    if (rc == 0)
        rc = version_redo_stale(store);
    if (rc) {
        copy_err(err, store, "cannot open the share");
        meta_store_close(store);
        return rc;
    }
    *out = store;
    return 0;
}

static int init_identity(struct meta_store *store, const struct meta_share_params *params)
{
    if (params->share_id)
        memcpy(store->share_id, params->share_id, sizeof(store->share_id));
    else
        meta_crypto_random(store->share_id, sizeof(store->share_id));
    if (params->share_key)
        memcpy(store->share_key, params->share_key, sizeof(store->share_key));
    else
        meta_crypto_random(store->share_key, sizeof(store->share_key));
    int rc = params->device_seed ? meta_crypto_sign_seed_keypair(
                                       store->public_key, store->secret_key, params->device_seed)
                                 : meta_crypto_sign_keypair(store->public_key, store->secret_key);
    if (rc)
        return store_fail(store, rc, "cannot make a device key pair");
    rc = derive_replica(&store->replica, store->public_key);
    if (rc)
        return store_fail(store, rc, "cannot derive the replica id");
    rc = write_key_file(store, "share.key", store->share_key, sizeof(store->share_key));
    if (rc == 0)
        rc = write_key_file(store, "device.key", store->secret_key, sizeof(store->secret_key));
    return rc;
}

static int record_identity(struct meta_store *store, const struct meta_share_params *params)
{
    char share_hex[2 * META_SHARE_ID_LEN + 1], pk_hex[2 * META_PUBLIC_KEY_LEN + 1];
    char replica_hex[17];
    hex_encode(share_hex, store->share_id, sizeof(store->share_id));
    hex_encode(pk_hex, store->public_key, sizeof(store->public_key));
    snprintf(replica_hex, sizeof(replica_hex), "%016llx", (unsigned long long)store->replica);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct meta_device self = {
        .replica = store->replica,
        .added_at_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec,
    };
    memcpy(self.public_key, store->public_key, sizeof(self.public_key));
    snprintf(self.name, sizeof(self.name), "%s", params->device_name);

    int rc = meta_store_txn_begin(store);
    if (rc)
        return rc;
    rc = meta_setting_set(store, "share.id", share_hex);
    if (rc == 0)
        rc = meta_setting_set(store, "device.public_key", pk_hex);
    if (rc == 0)
        rc = meta_setting_set(store, "device.replica", replica_hex);
    if (rc == 0)
        rc = meta_setting_set(store, "device.name", params->device_name);
    if (rc == 0)
        rc = meta_device_put(store, &self);
    if (rc) {
        meta_store_txn_rollback(store);
        return rc;
    }
    return meta_store_txn_commit(store);
}

int meta_store_create(struct meta_store **out, struct meta_err *err, const char *dir,
                      const struct meta_share_params *params)
{
    *out = NULL;
    if (strlen(dir) > DIR_LEN_MAX) {
        if (err)
            snprintf(err->msg, sizeof(err->msg), "the share's path is too long (over %d bytes)",
                     DIR_LEN_MAX);
        return -ENAMETOOLONG;
    }
    if (!params || !params->device_name || !params->device_name[0] ||
        strlen(params->device_name) > META_NAME_MAX) {
        if (err)
            snprintf(err->msg, sizeof(err->msg),
                     "a device name of 1 to %d bytes is needed to create a share", META_NAME_MAX);
        return -EINVAL;
    }
    if (meta_crypto_init() != 0) {
        copy_err(err, NULL, "cannot start libsodium");
        return -EIO;
    }
    struct meta_store *store = store_alloc(dir);
    if (!store) {
        copy_err(err, NULL, "out of memory");
        return -ENOMEM;
    }
    char path[4096];
    int rc = make_dir(dir);
    if (rc)
        store_fail(store, rc, "cannot make %s: %s", dir, strerror(-rc));
    if (rc == 0)
        rc = take_lock(store);
    if (rc == 0) {
        struct stat st;
        snprintf(path, sizeof(path), "%s/store.db", dir);
        if (lstat(path, &st) == 0)
            rc = store_fail(store, -EEXIST,
                            "a share already exists at %s; open it, or choose an empty "
                            "directory",
                            dir);
    }
    const char *subdirs[] = {"keys", "files", "files/tmp"};
    for (size_t i = 0; rc == 0 && i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
        rc = make_dir(path);
        if (rc)
            store_fail(store, rc, "cannot make %s: %s", path, strerror(-rc));
    }
    if (rc == 0)
        rc = init_identity(store, params);
    if (rc == 0)
        rc = open_db(store, true);
    /*
     * Before anything makes the file (WAL mode does): most transactions
     * change a few rows in several b-trees, and every changed page goes to
     * the WAL whole, so smaller pages write less; bulk data costs the same
     * (README "Schema"). A store keeps the page size it was made with.
     */
    if (rc == 0)
        rc = exec_sql(store, "PRAGMA page_size = " PAGE_SIZE_TEXT ";", "setting the page size");
    if (rc == 0)
        rc = configure(store);
    if (rc == 0)
        rc = schema_migrate(store, 0);
    if (rc == 0)
        rc = record_identity(store, params);
    if (rc == 0) {
        /* The names store.db, keys/, files/ must survive a crash as well as their contents. */
        snprintf(path, sizeof(path), "%s/files", dir);
        rc = fsync_dir(dir);
        if (rc == 0)
            rc = fsync_dir(path);
        if (rc)
            store_fail(store, rc, "cannot fsync %s: %s", dir, strerror(-rc));
    }
    if (rc == 0)
        rc = open_files(store);
    if (rc == 0)
        rc = clean_tmp(store); /* empty: opens it as tmp_fd */
    if (rc) {
        copy_err(err, store, "cannot create the share");
        meta_store_close(store);
        return rc;
    }
    *out = store;
    return 0;
}

void meta_store_close(struct meta_store *store)
{
    if (!store)
        return;
    for (size_t i = 0; i < store->stmt_count; i++)
        sqlite3_finalize(store->stmts[i].stmt);
    if (store->db) {
        if (!sqlite3_get_autocommit(store->db))
            sqlite3_exec(store->db, "ROLLBACK;", NULL, NULL, NULL);
        /* All statements are finalized, so close cannot be refused as busy. */
        sqlite3_close(store->db);
    }
    if (store->files_fd >= 0)
        close(store->files_fd);
    if (store->tmp_fd >= 0)
        close(store->tmp_fd);
    pthread_mutex_destroy(&store->pool_lock);
    /* Closing the descriptor drops the OFD lock. */
    if (store->lock_fd >= 0)
        close(store->lock_fd);
    meta_chunker_free(store->chunker);
    free(store->vv);
    meta_crypto_wipe(store->share_key, sizeof(store->share_key));
    meta_crypto_wipe(store->secret_key, sizeof(store->secret_key));
    free(store->dir);
    free(store);
}

/* ---- accessors ---- */

const char *meta_store_errmsg(const struct meta_store *store)
{
    return store->errmsg;
}

const char *meta_store_dir(const struct meta_store *store)
{
    return store->dir;
}

uint64_t meta_store_replica(const struct meta_store *store)
{
    return store->replica;
}

void meta_store_share_id(uint8_t out[META_SHARE_ID_LEN], const struct meta_store *store)
{
    memcpy(out, store->share_id, META_SHARE_ID_LEN);
}

void meta_store_public_key(uint8_t out[META_PUBLIC_KEY_LEN], const struct meta_store *store)
{
    memcpy(out, store->public_key, META_PUBLIC_KEY_LEN);
}

int meta_store_chunk_id(uint8_t out[META_HASH_LEN], const struct meta_store *store,
                        const void *data, size_t len)
{
    return meta_crypto_hash(out, META_HASH_LEN, store->share_key, data, len);
}

int meta_store_derive_key(uint8_t out[META_KEY_LEN], const struct meta_store *store,
                          const char *context)
{
    char message[256];
    int len = snprintf(message, sizeof(message), "weft key %s", context);
    if (len < 0 || (size_t)len >= sizeof(message))
        return -EINVAL;
    return meta_crypto_hash(out, META_KEY_LEN, store->share_key, message, (size_t)len);
}

void meta_store_export_share_key(uint8_t out[META_KEY_LEN], const struct meta_store *store)
{
    memcpy(out, store->share_key, META_KEY_LEN);
}

int meta_store_epoch_key_put(struct meta_store *store, uint32_t epoch,
                             const uint8_t key[META_KEY_LEN])
{
    if (epoch == 0)
        return store_fail(store, -EINVAL, "epoch 0's key is the share key's");
    char name[32], value[16];
    snprintf(name, sizeof(name), "epoch-%u.key", epoch);
    int rc = write_key_file(store, name, key, META_KEY_LEN);
    if (!rc && epoch > meta_store_epoch(store)) {
        snprintf(value, sizeof(value), "%u", epoch);
        rc = meta_setting_set(store, "keys.epoch", value);
    }
    return rc;
}

int meta_store_epoch_key_get(uint8_t key[META_KEY_LEN], struct meta_store *store, uint32_t epoch)
{
    char name[32], path[4200];
    snprintf(name, sizeof(name), "epoch-%u.key", epoch);
    snprintf(path, sizeof(path), "%s/keys/%s", store->dir, name);
    if (epoch == 0 || access(path, F_OK) != 0)
        return -ENOENT;
    return read_key_file(store, name, key, META_KEY_LEN);
}

uint32_t meta_store_epoch(struct meta_store *store)
{
    int64_t epoch = 0;
    if (meta_setting_get_int(&epoch, store, "keys.epoch", 0) != 0 || epoch < 0 ||
        epoch > UINT32_MAX)
        return 0;
    return (uint32_t)epoch;
}

void meta_store_secret_key(uint8_t out[META_SECRET_KEY_LEN], const struct meta_store *store)
{
    memcpy(out, store->secret_key, META_SECRET_KEY_LEN);
}

static ssize_t default_pwrite(int fd, const void *buf, size_t len, off_t offset)
{
    return pwrite(fd, buf, len, offset);
}

static int default_fsync(int fd)
{
    return fdatasync(fd);
}

static const struct meta_io default_io = {.pwrite = default_pwrite, .fsync = default_fsync};

void meta_store_set_io(struct meta_store *store, const struct meta_io *io)
{
    store->io = io;
}

int wc_write_all(struct meta_store *store, int fd, const void *data, size_t len, off_t offset)
{
    const struct meta_io *io = store->io ? store->io : &default_io;
    const uint8_t *bytes = data;
    while (len > 0) {
        ssize_t wrote = io->pwrite(fd, bytes, len, offset);
        if (wrote < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (wrote == 0)
            return -EIO;
        bytes += wrote;
        len -= (size_t)wrote;
        offset += wrote;
    }
    return 0;
}

int wc_fsync(struct meta_store *store, int fd)
{
    const struct meta_io *io = store->io ? store->io : &default_io;
    return io->fsync(fd) == 0 ? 0 : -errno;
}

int wc_sync_all(struct meta_store *store)
{
    /* syncfs writes every file and directory of the file system; the fsync goes through the hook.
     */
    if (syncfs(store->files_fd) != 0)
        return -errno;
    return wc_fsync(store, store->files_fd);
}

/* ---- transactions ---- */

int meta_store_txn_begin(struct meta_store *store)
{
    if (store->in_txn)
        return store_fail(store, -EINVAL, "a transaction is already open");
    if (store->save_depth)
        return store_fail(store, -EINVAL, "a change is in progress");
    int rc = store_exec_cached(store, begin_sql, "starting a transaction");
    if (rc)
        return rc;
    store->in_txn = true;
    return 0;
}

/*
 * After a commit, rewrites the working copies it made STALE. A failure is
 * returned (the commit stands) and the nodes stay STALE, retried at the next
 * commit or open.
 */
static int redo_after_commit(struct meta_store *store)
{
    return store->stale_pending ? version_redo_stale(store) : 0;
}

int meta_store_txn_commit(struct meta_store *store)
{
    if (!store->in_txn)
        return store_fail(store, -EINVAL, "no transaction is open");
    store->in_txn = false;
    if (sqlite3_get_autocommit(store->db)) {
        store_forget_deferred(store);
        return store_fail(store, -EIO,
                          "the transaction was rolled back after an earlier error; nothing of "
                          "it was committed");
    }
    int rc = store_flush_deferred(store);
    if (rc == 0)
        rc = store_exec_cached(store, commit_sql, "committing");
    if (rc) {
        rollback_all(store);
        return rc;
    }
    return redo_after_commit(store);
}

void meta_store_txn_rollback(struct meta_store *store)
{
    store->in_txn = false;
    rollback_all(store);
}

/* ---- settings ---- */

int meta_setting_set(struct meta_store *store, const char *key, const char *value)
{
    static const char sql[] = "INSERT INTO settings (key, value) VALUES (?1, ?2) "
                              "ON CONFLICT (key) DO UPDATE SET value = excluded.value;";
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, value, -1, SQLITE_STATIC);
    rc = store_step_done(store, stmt, "writing a setting");
    return store_single_end(store, own, rc);
}

int meta_setting_get(char **out, struct meta_store *store, const char *key)
{
    static const char sql[] = "SELECT value FROM settings WHERE key = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *value = (const char *)sqlite3_column_text(stmt, 0);
        *out = strdup(value ? value : "");
        rc = *out ? 0 : -ENOMEM;
    } else if (rc == SQLITE_DONE) {
        rc = store_fail(store, -ENOENT, "setting %s is not set", key);
    } else {
        rc = store_sql_fail(store, rc, "reading a setting");
    }
    sqlite3_reset(stmt);
    return rc;
}

int meta_setting_get_int(int64_t *out, struct meta_store *store, const char *key, int64_t fallback)
{
    char *text = NULL;
    int rc = meta_setting_get(&text, store, key);
    if (rc == -ENOENT) {
        *out = fallback;
        return 0;
    }
    if (rc)
        return rc;
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0')
        rc = store_fail(store, -EINVAL, "setting %s is \"%s\", not an integer", key, text);
    else
        *out = value;
    free(text);
    return rc;
}

int meta_setting_delete(struct meta_store *store, const char *key)
{
    static const char sql[] = "DELETE FROM settings WHERE key = ?1;";
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    rc = store_step_done(store, stmt, "removing a setting");
    return store_single_end(store, own, rc);
}

/* ---- devices ---- */

int meta_device_put(struct meta_store *store, const struct meta_device *device)
{
    static const char sql[] =
        "INSERT INTO devices (replica, public_key, name, added_at_ns, revoked) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (replica) DO UPDATE SET "
        "public_key = excluded.public_key, name = excluded.name, "
        "added_at_ns = excluded.added_at_ns, revoked = excluded.revoked;";
    if (strnlen(device->name, sizeof(device->name)) > META_NAME_MAX)
        return store_fail(store, -EINVAL, "device name too long");
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    store_bind_u64(stmt, 1, device->replica);
    sqlite3_bind_blob(stmt, 2, device->public_key, META_PUBLIC_KEY_LEN, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, device->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, device->added_at_ns);
    sqlite3_bind_int(stmt, 5, device->revoked ? 1 : 0);
    rc = store_step_done(store, stmt, "writing a device");
    return store_single_end(store, own, rc);
}

static int read_device(struct meta_device *out, struct meta_store *store, sqlite3_stmt *stmt)
{
    memset(out, 0, sizeof(*out));
    out->replica = store_column_u64(stmt, 0);
    if (sqlite3_column_bytes(stmt, 1) != META_PUBLIC_KEY_LEN)
        return store_fail(store, -EUCLEAN, "device %016llx has a damaged public key",
                          (unsigned long long)out->replica);
    memcpy(out->public_key, sqlite3_column_blob(stmt, 1), META_PUBLIC_KEY_LEN);
    const char *name = (const char *)sqlite3_column_text(stmt, 2);
    snprintf(out->name, sizeof(out->name), "%s", name ? name : "");
    out->added_at_ns = sqlite3_column_int64(stmt, 3);
    out->revoked = sqlite3_column_int(stmt, 4) != 0;
    return 0;
}

int meta_device_get(struct meta_device *out, struct meta_store *store, uint64_t replica)
{
    static const char sql[] = "SELECT replica, public_key, name, added_at_ns, revoked "
                              "FROM devices WHERE replica = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, replica);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = read_device(out, store, stmt);
    else if (rc == SQLITE_DONE)
        rc = store_fail(store, -ENOENT, "no device %016llx", (unsigned long long)replica);
    else
        rc = store_sql_fail(store, rc, "reading a device");
    sqlite3_reset(stmt);
    return rc;
}

int meta_device_list(struct meta_device **out, size_t *out_len, struct meta_store *store)
{
    static const char sql[] = "SELECT replica, public_key, name, added_at_ns, revoked "
                              "FROM devices ORDER BY replica;";
    *out = NULL;
    *out_len = 0;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    struct meta_device *devices = NULL;
    size_t len = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_device *grown = store_grow(devices, &cap, len, sizeof(*grown));
        if (!grown) {
            rc = -ENOMEM;
            goto fail;
        }
        devices = grown;
        rc = read_device(&devices[len], store, stmt);
        if (rc)
            goto fail;
        len++;
    }
    if (rc != SQLITE_DONE) {
        rc = store_sql_fail(store, rc, "listing devices");
        goto fail;
    }
    sqlite3_reset(stmt);
    *out = devices;
    *out_len = len;
    return 0;
fail:
    sqlite3_reset(stmt);
    free(devices);
    return rc;
}

/* ---- checks ---- */

int meta_store_check(struct meta_store *store)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, "PRAGMA integrity_check;", -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return store_sql_fail(store, rc, "integrity check");
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *result = (const char *)sqlite3_column_text(stmt, 0);
        if (!result || strcmp(result, "ok") != 0)
            rc = store_fail(store, -EUCLEAN, "integrity check of %s/store.db: %s", store->dir,
                            result ? result : "(no result)");
        else
            rc = 0;
    } else {
        rc = store_sql_fail(store, rc, "integrity check");
    }
    sqlite3_finalize(stmt);
    if (rc)
        return rc;
    int64_t violations = 0;
    rc = query_int(store, "SELECT count(*) FROM pragma_foreign_key_check;", &violations);
    if (rc != SQLITE_OK)
        return store_sql_fail(store, rc, "foreign key check");
    if (violations)
        return store_fail(store, -EUCLEAN, "%s/store.db: %lld rows break foreign keys", store->dir,
                          (long long)violations);
    return version_check(store);
}

/* 32 MiB of WAL with 2 KiB pages (64 MiB with the 4 KiB of older stores). */
#define LAZY_CHECKPOINT_PAGES 16384

int meta_store_set_lazy(struct meta_store *store, bool lazy)
{
    if (store->in_txn)
        return store_fail(store, -EINVAL, "cannot change durability inside a transaction");
    /*
     * A checkpoint (copying the WAL back into the database) fsyncs the WAL
     * and the database even in NORMAL mode. In lazy mode nothing else
     * fsyncs, so checkpoints come every LAZY_CHECKPOINT_PAGES of WAL rather
     * than SQLite's default 1000 pages (README "Durability").
     */
    char sql[128];
    snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s; PRAGMA wal_autocheckpoint = %d;",
             lazy ? "NORMAL" : "FULL", lazy ? LAZY_CHECKPOINT_PAGES : 1000);
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store_sql_fail(store, rc, "setting the durability mode");
    store->lazy = lazy;
    return 0;
}

void *store_grow(void *items, size_t *cap, size_t len, size_t elem_size)
{
    if (len < *cap)
        return items;
    size_t grown_cap = *cap ? *cap * 2 : 8;
    void *grown = realloc(items, grown_cap * elem_size);
    if (grown)
        *cap = grown_cap;
    return grown;
}
