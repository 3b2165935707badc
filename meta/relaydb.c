/*
 * meta/relaydb: see relaydb.h. The relay's SQLite store: opening (lock,
 * foreign-file checks, schema), group commit, op chains, chunks, members and
 * addresses. A separate database with its own schema, and a library of its
 * own (meta/meson.build: meta_relaydb_dep): it shares no code with the
 * device store, so `weft relay` links SQLite and this file only.
 *
 * u64 values (authors, replicas) are stored as SQLite's signed 64-bit
 * integer with the same bits, as in the device store. Seqs are refused from
 * 2^63 on, so they stay positive and ORDER BY seq is the numeric order.
 */
#include "meta/relaydb.h"
#include "meta/sqlerr.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Schema, one migration per version (as meta/schema.c): migration i takes
 * user_version i - 1 to i in one transaction. Append-only once released.
 */
static const char *const relay_migrations[] = {
    /* v1 */
    "PRAGMA application_id = 2003203186;" /* 0x77667472, "wftr" */

    /* A share the relay serves; created with its first member (trust on first use). */
    "CREATE TABLE shares ("
    "  share      BLOB PRIMARY KEY CHECK (length(share) = 16),"
    "  created_ns INTEGER NOT NULL"
    ") WITHOUT ROWID;"

    /* Devices allowed to connect for a share. Revocation is final. */
    "CREATE TABLE members ("
    "  share      BLOB NOT NULL REFERENCES shares (share),"
    "  replica    INTEGER NOT NULL,"
    "  public_key BLOB NOT NULL CHECK (length(public_key) = 32),"
    "  added_ns   INTEGER NOT NULL,"
    "  revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked BETWEEN 0 AND 1),"
    "  PRIMARY KEY (share, replica)"
    ") WITHOUT ROWID;"

    /* Sealed op records, each author's chain 1..head without gaps. A rowid
       table: rows of up to 1 MiB belong in overflow pages, not in the
       b-tree of a WITHOUT ROWID table. */
    "CREATE TABLE records ("
    "  share  BLOB NOT NULL REFERENCES shares (share),"
    "  author INTEGER NOT NULL,"
    "  seq    INTEGER NOT NULL CHECK (seq > 0),"
    "  hash   BLOB NOT NULL CHECK (length(hash) = 32),"
    "  epoch  INTEGER NOT NULL CHECK (epoch >= 0),"
    "  bytes  BLOB NOT NULL,"
    "  UNIQUE (share, author, seq)"
    ");"

    /* Each author's last record: heads are read per session, and a max()
       over records per author would walk an index per author. Written in the
       same transaction as the record. */
    "CREATE TABLE heads ("
    "  share  BLOB NOT NULL,"
    "  author INTEGER NOT NULL,"
    "  seq    INTEGER NOT NULL CHECK (seq > 0),"
    "  hash   BLOB NOT NULL CHECK (length(hash) = 32),"
    "  PRIMARY KEY (share, author)"
    ") WITHOUT ROWID;"

    /* Sealed chunk records by chunk id; the first record of an id stays. */
    "CREATE TABLE chunks ("
    "  share  BLOB NOT NULL REFERENCES shares (share),"
    "  id     BLOB NOT NULL CHECK (length(id) = 32),"
    "  author INTEGER NOT NULL,"
    "  bytes  BLOB NOT NULL,"
    "  UNIQUE (share, id)"
    ");"

    /* Where each member last connected from, for discovery. */
    "CREATE TABLE addrs ("
    "  share   BLOB NOT NULL,"
    "  replica INTEGER NOT NULL,"
    "  addr    TEXT NOT NULL,"
    "  seen_ns INTEGER NOT NULL,"
    "  PRIMARY KEY (share, replica)"
    ") WITHOUT ROWID;",
};

#define RELAY_MIGRATIONS (sizeof(relay_migrations) / sizeof(relay_migrations[0]))
_Static_assert(RELAY_MIGRATIONS == META_RELAYDB_SCHEMA_VERSION, "one migration per version");

/* Every statement, prepared on first use and kept. */
enum stmt_id {
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_SHARE_EXISTS,
    ST_SHARE_INSERT,
    ST_HEAD_GET,
    ST_HEAD_SET,
    ST_HEADS,
    ST_RECORD_HASH,
    ST_RECORD_INSERT,
    ST_RECORD_READ,
    ST_CHUNK_INSERT,
    ST_CHUNK_GET,
    ST_CHUNK_HAS,
    ST_MEMBER_GET,
    ST_MEMBER_INSERT,
    ST_MEMBER_REVOKE,
    ST_MEMBERS,
    ST_ADDR_PUT,
    ST_ADDRS,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_SAVEPOINT] = "SAVEPOINT put;",
    [ST_RELEASE] = "RELEASE put;",
    [ST_ROLLBACK_TO] = "ROLLBACK TO put;",
    [ST_BEGIN] = "BEGIN IMMEDIATE;",
    [ST_COMMIT] = "COMMIT;",
    [ST_ROLLBACK] = "ROLLBACK;",
    [ST_SHARE_EXISTS] = "SELECT 1 FROM shares WHERE share = ?1;",
    [ST_SHARE_INSERT] = "INSERT INTO shares (share, created_ns) VALUES (?1, ?2);",
    [ST_HEAD_GET] = "SELECT seq, hash FROM heads WHERE share = ?1 AND author = ?2;",
    [ST_HEAD_SET] = "INSERT INTO heads (share, author, seq, hash) VALUES (?1, ?2, ?3, ?4)"
                    " ON CONFLICT (share, author) DO UPDATE SET seq = ?3, hash = ?4;",
    [ST_HEADS] = "SELECT author, seq, hash FROM heads WHERE share = ?1;",
    [ST_RECORD_HASH] = "SELECT hash FROM records WHERE share = ?1 AND author = ?2 AND seq = ?3;",
    [ST_RECORD_INSERT] = "INSERT INTO records (share, author, seq, hash, epoch, bytes)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6);",
    [ST_RECORD_READ] = "SELECT seq, hash, epoch, bytes FROM records"
                       " WHERE share = ?1 AND author = ?2 AND seq >= ?3 ORDER BY seq LIMIT ?4;",
    [ST_CHUNK_INSERT] = "INSERT INTO chunks (share, id, author, bytes) VALUES (?1, ?2, ?3, ?4)"
                        " ON CONFLICT (share, id) DO NOTHING;",
    [ST_CHUNK_GET] = "SELECT bytes FROM chunks WHERE share = ?1 AND id = ?2;",
    [ST_CHUNK_HAS] = "SELECT 1 FROM chunks WHERE share = ?1 AND id = ?2;",
    [ST_MEMBER_GET] = "SELECT public_key, added_ns, revoked FROM members"
                      " WHERE share = ?1 AND replica = ?2;",
    [ST_MEMBER_INSERT] = "INSERT INTO members (share, replica, public_key, added_ns)"
                         " VALUES (?1, ?2, ?3, ?4);",
    [ST_MEMBER_REVOKE] = "UPDATE members SET revoked = 1 WHERE share = ?1 AND replica = ?2;",
    [ST_MEMBERS] = "SELECT replica, public_key, added_ns, revoked FROM members WHERE share = ?1;",
    [ST_ADDR_PUT] = "INSERT INTO addrs (share, replica, addr, seen_ns) VALUES (?1, ?2, ?3, ?4)"
                    " ON CONFLICT (share, replica) DO UPDATE SET addr = ?3, seen_ns = ?4;",
    [ST_ADDRS] = "SELECT replica, addr, seen_ns FROM addrs WHERE share = ?1;",
};

struct meta_relaydb {
    sqlite3 *db;
    char *dir;
    int lock_fd;
    bool in_group; /* between meta_relaydb_begin and commit/rollback */
    sqlite3_stmt *stmts[ST_COUNT];
    char errmsg[META_ERRMSG_LEN];
};

/* ---- errors ---- */

/* SQLite's result code as 0 / -errno, as the device store maps them (meta/sqlerr). */
static int sqlite_errno(int sqlite_rc)
{
    return meta_sqlite_errno(sqlite_rc);
}

static int fail(struct meta_relaydb *db, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct meta_relaydb *db, int rc, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(db->errmsg, sizeof(db->errmsg), fmt, args);
    va_end(args);
    return rc;
}

/* Records SQLite's words for a failure while doing `what`; returns the mapped errno. */
static int sql_fail(struct meta_relaydb *db, int sqlite_rc, const char *what)
{
    int rc = sqlite_errno(sqlite_rc);
    if (rc == 0)
        rc = -EIO; /* a row or success where the caller saw a failure */
    const char *detail = db->db ? sqlite3_errmsg(db->db) : sqlite3_errstr(sqlite_rc);
    if ((sqlite_rc & 0xff) == SQLITE_CORRUPT || (sqlite_rc & 0xff) == SQLITE_NOTADB)
        return fail(db, rc,
                    "%s: the relay database %s/relay.db is damaged (%s); the relay will not "
                    "repair it: move it away and let the devices upload their records again",
                    what, db->dir, detail);
    if ((sqlite_rc & 0xff) == SQLITE_FULL)
        return fail(db, rc, "%s: the disk holding %s is full (%s)", what, db->dir, detail);
    return fail(db, rc, "%s: %s", what, detail);
}

/* ---- statements ---- */

/* The prepared statement `id`, reset and unbound; NULL on failure (recorded). */
static sqlite3_stmt *stmt(struct meta_relaydb *db, enum stmt_id id)
{
    sqlite3_stmt *st = db->stmts[id];
    if (st) {
        /* reset repeats the last step's error, which that step already handled. */
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return st;
    }
    int rc = sqlite3_prepare_v3(db->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        sql_fail(db, rc, "preparing a statement");
        return NULL;
    }
    db->stmts[id] = st;
    return st;
}

/* Steps a statement expecting no row; 0 or the mapped error (recorded). */
static int step_done(struct meta_relaydb *db, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(db, rc, what);
}

static int exec_stmt(struct meta_relaydb *db, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = stmt(db, id);
    return st ? step_done(db, st, what) : -ENOMEM;
}

static void bind_u64(sqlite3_stmt *st, int index, uint64_t value)
{
    sqlite3_bind_int64(st, index, (sqlite3_int64)value);
}

static uint64_t column_u64(sqlite3_stmt *st, int index)
{
    return (uint64_t)sqlite3_column_int64(st, index);
}

static void bind_blob(sqlite3_stmt *st, int index, const void *bytes, size_t len)
{
    sqlite3_bind_blob64(st, index, bytes, len, SQLITE_STATIC);
}

/* A fixed-size blob column, or NULL if its length is not `len` (a damaged row). */
static const uint8_t *column_fixed(sqlite3_stmt *st, int index, size_t len)
{
    const uint8_t *bytes = sqlite3_column_blob(st, index);
    if (!bytes || (size_t)sqlite3_column_bytes(st, index) != len)
        return NULL;
    return bytes;
}

static int damaged_row(struct meta_relaydb *db, const char *table)
{
    return fail(db, -EUCLEAN,
                "the relay database %s/relay.db has a damaged row in `%s`; the relay will not "
                "repair it: move it away and let the devices upload their records again",
                db->dir, table);
}

/*
 * A change is atomic alone and inside a group: a savepoint around it. With
 * no group open, releasing the outermost savepoint commits (durably: FULL).
 */
static int change_begin(struct meta_relaydb *db)
{
    return exec_stmt(db, ST_SAVEPOINT, "starting a change");
}

static int change_end(struct meta_relaydb *db, int rc)
{
    if (rc == 0) {
        rc = exec_stmt(db, ST_RELEASE, "committing a change");
        if (rc == 0)
            return 0;
    }
    if (sqlite3_get_autocommit(db->db)) {
        /* SQLite already rolled everything back (an I/O error): the group is gone too. */
        db->in_group = false;
        return rc;
    }
    char cause[META_ERRMSG_LEN];
    snprintf(cause, sizeof(cause), "%s", db->errmsg);
    if (exec_stmt(db, ST_ROLLBACK_TO, "undoing a change") != 0 ||
        exec_stmt(db, ST_RELEASE, "undoing a change") != 0)
        fail(db, rc, "%.400s (and undoing it failed)", cause);
    else
        fail(db, rc, "%s", cause);
    return rc;
}

/* ---- opening ---- */

/*
 * An OFD write lock on DIR/relay.lock (as meta/store's): it belongs to the
 * open file description, so a second relay in the same process conflicts
 * too, and it vanishes with the process (no stale lock after kill -9).
 */
static int take_lock(struct meta_relaydb *db)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/relay.lock", db->dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail(db, -errno, "cannot open the lock file %s: %s", path, strerror(errno));
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_SETLK, &lock) != 0) {
        int saved = errno;
        char holder[32] = {0};
        ssize_t got = pread(fd, holder, sizeof(holder) - 1, 0);
        long pid = got > 0 ? strtol(holder, NULL, 10) : 0;
        close(fd);
        if (saved != EAGAIN && saved != EACCES)
            return fail(db, -saved, "cannot lock %s: %s", path, strerror(saved));
        if (pid > 0)
            return fail(db, -EBUSY,
                        "the relay data in %s is in use by process %ld (lock file %s); stop "
                        "that relay first, or give this one another --data directory",
                        db->dir, pid, path);
        return fail(db, -EBUSY,
                    "the relay data in %s is in use by another relay (lock file %s); stop that "
                    "relay first, or give this one another --data directory",
                    db->dir, path);
    }
    char pid_text[32];
    int len = snprintf(pid_text, sizeof(pid_text), "%ld\n", (long)getpid());
    /* The pid only feeds the message above: failing to write it must not stop the open. */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid_text, (size_t)len, 0) != len)
        pid_text[0] = '\0';
    db->lock_fd = fd;
    return 0;
}

/*
 * Refuses a file that is not ours before SQLite writes to it: SQLite's magic
 * at offset 0, application_id at 68 (big-endian). A missing or empty file is
 * a new store. A device's share directory is refused too: pointing a relay
 * at one is a mistake worth saying.
 */
static int check_files(struct meta_relaydb *db)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/store.db", db->dir);
    if (stat(path, &st) == 0)
        return fail(db, -EUCLEAN,
                    "%s holds a device's share (%s), not relay data; give the relay a directory "
                    "of its own",
                    db->dir, path);
    snprintf(path, sizeof(path), "%s/relay.db", db->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return fail(db, -errno, "cannot open %s: %s", path, strerror(errno));
    }
    uint8_t header[100];
    ssize_t got = pread(fd, header, sizeof(header), 0);
    int saved = errno;
    close(fd);
    if (got < 0)
        return fail(db, -EIO, "cannot read %s: %s", path, strerror(saved));
    if (got == 0)
        return 0; /* created, never written (or all of it is in the WAL): SQLite decides */
    if (got < (ssize_t)sizeof(header) || memcmp(header, "SQLite format 3", 16) != 0)
        return fail(db, -EUCLEAN,
                    "%s is not a relay database: it is not a SQLite database (damaged, or "
                    "another program's file). The relay will not touch it: move it away",
                    path);
    uint32_t app_id = (uint32_t)header[68] << 24 | (uint32_t)header[69] << 16 |
                      (uint32_t)header[70] << 8 | header[71];
    if (app_id != 0 && app_id != META_RELAYDB_APPLICATION_ID) {
        const char *whose =
            app_id == META_APPLICATION_ID ? "a device's share store" : "another program's database";
        return fail(db, -EUCLEAN,
                    "%s is %s (application_id 0x%08x), not a relay database; the relay will not "
                    "touch it: move it away",
                    path, whose, app_id);
    }
    return 0;
}

static int query_int(struct meta_relaydb *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int exec_sql(struct meta_relaydb *db, const char *sql, const char *what)
{
    int rc = sqlite3_exec(db->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sql_fail(db, rc, what);
}

/* WAL and synchronous=FULL: the relay acknowledges what it stores (relaydb.h, top). */
static int configure(struct meta_relaydb *db)
{
    int rc = exec_sql(db, "PRAGMA locking_mode = EXCLUSIVE;", "taking the database lock");
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    int src = sqlite3_prepare_v2(db->db, "PRAGMA journal_mode = WAL;", -1, &st, NULL);
    if (src == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (!mode || strcmp(mode, "wal") != 0)
            src = SQLITE_CANTOPEN;
    } else if (src == SQLITE_OK) {
        src = sqlite3_errcode(db->db);
    }
    sqlite3_finalize(st);
    if (src != SQLITE_OK)
        return sql_fail(db, src, "switching the relay database to WAL mode");
    return exec_sql(db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                    "configuring the relay database");
}

static int migrate(struct meta_relaydb *db, int from)
{
    for (int version = from + 1; version <= META_RELAYDB_SCHEMA_VERSION; version++) {
        char set_version[64];
        snprintf(set_version, sizeof(set_version), "PRAGMA user_version = %d;", version);
        char *message = NULL;
        int rc = sqlite3_exec(db->db, "BEGIN IMMEDIATE;", NULL, NULL, &message);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db->db, relay_migrations[version - 1], NULL, NULL, &message);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db->db, set_version, NULL, NULL, &message);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db->db, "COMMIT;", NULL, NULL, &message);
        if (rc != SQLITE_OK) {
            if (!sqlite3_get_autocommit(db->db))
                sqlite3_exec(db->db, "ROLLBACK;", NULL, NULL, NULL);
            int err = fail(db, sqlite_errno(rc) ? sqlite_errno(rc) : -EIO,
                           "%s/relay.db: migration to schema v%d failed: %s; the database is "
                           "unchanged at v%d",
                           db->dir, version, message ? message : sqlite3_errstr(rc), version - 1);
            sqlite3_free(message);
            return err;
        }
    }
    return 0;
}

/* Checks whose database this is and its version; creates or migrates the schema. */
static int check_schema(struct meta_relaydb *db)
{
    int64_t app_id = 0, version = 0, tables = 0;
    int rc = query_int(db, "PRAGMA application_id;", &app_id);
    if (rc == SQLITE_OK)
        rc = query_int(db, "PRAGMA user_version;", &version);
    if (rc == SQLITE_OK)
        rc = query_int(db, "SELECT count(*) FROM sqlite_master;", &tables);
    if (rc != SQLITE_OK)
        return sql_fail(db, rc, "reading the relay database's header");
    if (app_id == 0 && version == 0 && tables == 0) {
        rc = configure(db);
        return rc ? rc : migrate(db, 0);
    }
    if (app_id != META_RELAYDB_APPLICATION_ID)
        return fail(db, -EUCLEAN,
                    "%s/relay.db is a SQLite database but not a relay's (application_id "
                    "0x%08x); the relay will not touch it: move it away",
                    db->dir, (unsigned)app_id);
    if (version > META_RELAYDB_SCHEMA_VERSION)
        return fail(db, -EPROTONOSUPPORT,
                    "%s/relay.db has schema v%lld, newer than this relay knows (v%d): it was "
                    "written by a newer weft. Upgrade weft to serve it; this version will not "
                    "touch it",
                    db->dir, (long long)version, META_RELAYDB_SCHEMA_VERSION);
    if (version < 1)
        return fail(db, -EUCLEAN, "%s/relay.db has no schema version; not a relay database",
                    db->dir);
    rc = configure(db);
    if (rc)
        return rc;
    return version < META_RELAYDB_SCHEMA_VERSION ? migrate(db, (int)version) : 0;
}

int meta_relaydb_open(struct meta_relaydb **out, struct meta_err *err, const char *dir)
{
    *out = NULL;
    struct meta_relaydb *db = calloc(1, sizeof(*db));
    if (!db) {
        if (err)
            snprintf(err->msg, sizeof(err->msg), "out of memory");
        return -ENOMEM;
    }
    db->lock_fd = -1;
    db->dir = dir ? strdup(dir) : NULL;
    int rc;
    if (!dir) {
        rc = fail(db, -EINVAL, "no relay data directory given");
        goto fail;
    }
    if (!db->dir) {
        rc = fail(db, -ENOMEM, "out of memory");
        goto fail;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        rc = fail(db, -errno, "cannot use the relay data directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = fail(db, -ENOTDIR, "the relay data directory %s is not a directory", dir);
        goto fail;
    }
    rc = take_lock(db);
    if (rc)
        goto fail;
    rc = check_files(db);
    if (rc)
        goto fail;
    char path[4096];
    snprintf(path, sizeof(path), "%s/relay.db", dir);
    int src = sqlite3_open_v2(
        path, &db->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = sql_fail(db, src, "opening the relay database");
        goto fail;
    }
    sqlite3_extended_result_codes(db->db, 1);
    rc = check_schema(db);
    if (rc)
        goto fail;
    *out = db;
    return 0;
fail:
    if (err)
        snprintf(err->msg, sizeof(err->msg), "%s", db->errmsg);
    meta_relaydb_close(db);
    return rc;
}

void meta_relaydb_close(struct meta_relaydb *db)
{
    if (!db)
        return;
    if (db->db && !sqlite3_get_autocommit(db->db))
        sqlite3_exec(db->db, "ROLLBACK;", NULL, NULL, NULL);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(db->stmts[i]);
    /* Every statement is finalized, so close cannot be refused as busy. */
    sqlite3_close(db->db);
    /* Closing the descriptor drops the OFD lock. */
    if (db->lock_fd >= 0)
        close(db->lock_fd);
    free(db->dir);
    free(db);
}

const char *meta_relaydb_errmsg(const struct meta_relaydb *db)
{
    return db->errmsg;
}

/* ---- group commit ---- */

int meta_relaydb_begin(struct meta_relaydb *db)
{
    if (db->in_group)
        return fail(db, -EINVAL, "a group of changes is already open");
    int rc = exec_stmt(db, ST_BEGIN, "starting a group of changes");
    if (rc == 0)
        db->in_group = true;
    return rc;
}

int meta_relaydb_commit(struct meta_relaydb *db)
{
    if (!db->in_group)
        return fail(db, -EINVAL, "no group of changes is open");
    db->in_group = false;
    if (sqlite3_get_autocommit(db->db))
        return fail(db, -EIO, "the group of changes was rolled back after an earlier error");
    int rc = exec_stmt(db, ST_COMMIT, "committing a group of changes");
    if (rc && !sqlite3_get_autocommit(db->db)) {
        char cause[META_ERRMSG_LEN];
        snprintf(cause, sizeof(cause), "%s", db->errmsg);
        if (exec_stmt(db, ST_ROLLBACK, "rolling back") != 0)
            sqlite3_exec(db->db, "ROLLBACK;", NULL, NULL, NULL);
        fail(db, rc, "%s", cause);
    }
    return rc;
}

void meta_relaydb_rollback(struct meta_relaydb *db)
{
    if (!db->in_group)
        return;
    db->in_group = false;
    if (sqlite3_get_autocommit(db->db))
        return;
    /* Only a broken connection refuses a rollback; the raw exec is the last resort. */
    if (exec_stmt(db, ST_ROLLBACK, "rolling back") != 0)
        sqlite3_exec(db->db, "ROLLBACK;", NULL, NULL, NULL);
}

/* ---- shares ---- */

static int share_exists(struct meta_relaydb *db, bool *exists,
                        const uint8_t share[META_SHARE_ID_LEN])
{
    sqlite3_stmt *st = stmt(db, ST_SHARE_EXISTS);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    int rc = sqlite3_step(st);
    *exists = rc == SQLITE_ROW;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(db, rc, "looking up a share");
    return 0;
}

int meta_relaydb_share_exists(struct meta_relaydb *db, bool *exists,
                              const uint8_t share[META_SHARE_ID_LEN])
{
    return share_exists(db, exists, share);
}

static int no_share(struct meta_relaydb *db)
{
    return fail(db, -ENOENT, "the relay serves no such share");
}

static int member_insert(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                         const uint8_t public_key[META_PUBLIC_KEY_LEN], uint64_t replica,
                         int64_t now_ns)
{
    sqlite3_stmt *st = stmt(db, ST_MEMBER_INSERT);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, replica);
    bind_blob(st, 3, public_key, META_PUBLIC_KEY_LEN);
    sqlite3_bind_int64(st, 4, now_ns);
    return step_done(db, st, "adding a member");
}

int meta_relaydb_share_register(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                                const uint8_t public_key[META_PUBLIC_KEY_LEN], uint64_t replica,
                                int64_t now_ns)
{
    if (!share || !public_key)
        return fail(db, -EINVAL, "registering a share needs its id and a member key");
    int rc = change_begin(db);
    if (rc)
        return rc;
    bool exists;
    rc = share_exists(db, &exists, share);
    if (rc == 0 && exists)
        rc = fail(db, -EEXIST, "the share is already registered");
    if (rc == 0) {
        sqlite3_stmt *st = stmt(db, ST_SHARE_INSERT);
        if (!st) {
            rc = -ENOMEM;
        } else {
            bind_blob(st, 1, share, META_SHARE_ID_LEN);
            sqlite3_bind_int64(st, 2, now_ns);
            rc = step_done(db, st, "registering a share");
        }
    }
    if (rc == 0)
        rc = member_insert(db, share, public_key, replica, now_ns);
    return change_end(db, rc);
}

/* ---- members ---- */

/* Reads a member row; -ENOENT (not recorded) if there is none. */
static int member_get(struct meta_relaydb *db, struct meta_relaydb_member *out,
                      const uint8_t share[META_SHARE_ID_LEN], uint64_t replica)
{
    sqlite3_stmt *st = stmt(db, ST_MEMBER_GET);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, replica);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const uint8_t *key = column_fixed(st, 0, META_PUBLIC_KEY_LEN);
        if (!key) {
            sqlite3_reset(st);
            return damaged_row(db, "members");
        }
        out->replica = replica;
        memcpy(out->public_key, key, META_PUBLIC_KEY_LEN);
        out->added_ns = sqlite3_column_int64(st, 1);
        out->revoked = sqlite3_column_int(st, 2) != 0;
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return sql_fail(db, rc, "looking up a member");
    return -ENOENT;
}

int meta_relaydb_member_get(struct meta_relaydb *db, struct meta_relaydb_member *out,
                            const uint8_t share[META_SHARE_ID_LEN], uint64_t replica)
{
    int rc = member_get(db, out, share, replica);
    if (rc == -ENOENT)
        return fail(db, rc, "device %016llx is not a member of the share",
                    (unsigned long long)replica);
    return rc;
}

int meta_relaydb_member_add(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                            const uint8_t public_key[META_PUBLIC_KEY_LEN], uint64_t replica,
                            int64_t now_ns)
{
    if (!share || !public_key)
        return fail(db, -EINVAL, "adding a member needs the share id and its key");
    int rc = change_begin(db);
    if (rc)
        return rc;
    bool exists;
    rc = share_exists(db, &exists, share);
    if (rc == 0 && !exists)
        rc = no_share(db);
    struct meta_relaydb_member held;
    int found = rc ? rc : member_get(db, &held, share, replica);
    if (rc == 0 && found == 0) {
        if (memcmp(held.public_key, public_key, META_PUBLIC_KEY_LEN) != 0)
            rc = fail(db, -EEXIST, "another device key has replica id %016llx in this share",
                      (unsigned long long)replica);
        else if (held.revoked)
            rc = fail(db, -EKEYREVOKED, "device %016llx was revoked from this share",
                      (unsigned long long)replica);
    } else if (rc == 0 && found == -ENOENT) {
        rc = member_insert(db, share, public_key, replica, now_ns);
    } else if (rc == 0) {
        rc = found;
    }
    return change_end(db, rc);
}

int meta_relaydb_member_revoke(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                               uint64_t replica)
{
    sqlite3_stmt *st = stmt(db, ST_MEMBER_REVOKE);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, replica);
    int rc = step_done(db, st, "revoking a member");
    if (rc == 0 && sqlite3_changes(db->db) == 0)
        return fail(db, -ENOENT, "device %016llx is not a member of the share",
                    (unsigned long long)replica);
    return rc;
}

int meta_relaydb_members(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                         meta_relaydb_member_fn each, void *ctx)
{
    sqlite3_stmt *st = stmt(db, ST_MEMBERS);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct meta_relaydb_member member = {.replica = column_u64(st, 0)};
        const uint8_t *key = column_fixed(st, 1, META_PUBLIC_KEY_LEN);
        if (!key) {
            sqlite3_reset(st);
            return damaged_row(db, "members");
        }
        memcpy(member.public_key, key, META_PUBLIC_KEY_LEN);
        member.added_ns = sqlite3_column_int64(st, 2);
        member.revoked = sqlite3_column_int(st, 3) != 0;
        int stop = each(ctx, &member);
        if (stop) {
            sqlite3_reset(st);
            return stop;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(db, rc, "listing members");
}

/* ---- op records ---- */

static int head_get(struct meta_relaydb *db, uint64_t *seq, uint8_t hash[META_HASH_LEN],
                    const uint8_t share[META_SHARE_ID_LEN], uint64_t author)
{
    sqlite3_stmt *st = stmt(db, ST_HEAD_GET);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, author);
    int rc = sqlite3_step(st);
    *seq = 0;
    memset(hash, 0, META_HASH_LEN);
    if (rc == SQLITE_ROW) {
        const uint8_t *held = column_fixed(st, 1, META_HASH_LEN);
        if (!held || sqlite3_column_int64(st, 0) <= 0) {
            sqlite3_reset(st);
            return damaged_row(db, "heads");
        }
        *seq = column_u64(st, 0);
        memcpy(hash, held, META_HASH_LEN);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(db, rc, "reading a chain's head");
}

int meta_relaydb_head(struct meta_relaydb *db, uint64_t *seq, uint8_t hash[META_HASH_LEN],
                      const uint8_t share[META_SHARE_ID_LEN], uint64_t author)
{
    return head_get(db, seq, hash, share, author);
}

/* The hash held at `seq` into out; *found false if there is no record there. */
static int record_hash(struct meta_relaydb *db, bool *found, uint8_t out[META_HASH_LEN],
                       const uint8_t share[META_SHARE_ID_LEN], uint64_t author, uint64_t seq)
{
    sqlite3_stmt *st = stmt(db, ST_RECORD_HASH);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, author);
    bind_u64(st, 3, seq);
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        const uint8_t *held = column_fixed(st, 0, META_HASH_LEN);
        if (!held) {
            sqlite3_reset(st);
            return damaged_row(db, "records");
        }
        memcpy(out, held, META_HASH_LEN);
        rc = SQLITE_DONE;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(db, rc, "reading a record's hash");
}

/* The checks and the insert of op_put, inside its savepoint. */
static int op_put_locked(struct meta_relaydb *db, bool *added,
                         const uint8_t share[META_SHARE_ID_LEN], uint64_t author, uint64_t seq,
                         const uint8_t prev[META_HASH_LEN], const uint8_t hash[META_HASH_LEN],
                         uint32_t epoch, const uint8_t *bytes, size_t len)
{
    uint64_t head;
    uint8_t head_hash[META_HASH_LEN];
    int rc = head_get(db, &head, head_hash, share, author);
    if (rc)
        return rc;
    if (head == 0) {
        bool exists;
        rc = share_exists(db, &exists, share);
        if (rc)
            return rc;
        if (!exists)
            return no_share(db);
    }
    if (seq <= head) {
        bool found;
        uint8_t held[META_HASH_LEN];
        rc = record_hash(db, &found, held, share, author, seq);
        if (rc)
            return rc;
        if (!found)
            return damaged_row(db, "records"); /* the head says it is there */
        if (memcmp(held, hash, META_HASH_LEN) != 0)
            return fail(db, -ENOTUNIQ,
                        "author %016llx has another record at seq %llu (a fork): refused",
                        (unsigned long long)author, (unsigned long long)seq);
        return 0; /* the same record again */
    }
    if (seq > head + 1)
        return fail(db, -ENODATA,
                    "record %llu of author %016llx leaves a gap: the relay holds up to %llu",
                    (unsigned long long)seq, (unsigned long long)author, (unsigned long long)head);
    if (seq > 1 && (!prev || memcmp(prev, head_hash, META_HASH_LEN) != 0))
        return fail(db, -ENOTUNIQ,
                    "record %llu of author %016llx does not follow the record %llu held (a "
                    "fork): refused",
                    (unsigned long long)seq, (unsigned long long)author, (unsigned long long)head);
    sqlite3_stmt *st = stmt(db, ST_RECORD_INSERT);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, author);
    bind_u64(st, 3, seq);
    bind_blob(st, 4, hash, META_HASH_LEN);
    sqlite3_bind_int64(st, 5, epoch);
    bind_blob(st, 6, bytes, len);
    rc = step_done(db, st, "storing a record");
    if (rc)
        return rc;
    st = stmt(db, ST_HEAD_SET);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, author);
    bind_u64(st, 3, seq);
    bind_blob(st, 4, hash, META_HASH_LEN);
    rc = step_done(db, st, "moving a chain's head");
    if (rc == 0 && added)
        *added = true;
    return rc;
}

int meta_relaydb_op_put(struct meta_relaydb *db, bool *added,
                        const uint8_t share[META_SHARE_ID_LEN], uint64_t author, uint64_t seq,
                        const uint8_t prev[META_HASH_LEN], const uint8_t hash[META_HASH_LEN],
                        uint32_t epoch, const uint8_t *bytes, size_t len)
{
    if (added)
        *added = false;
    if (!share || !hash || !bytes || len == 0 || seq == 0)
        return fail(db, -EINVAL, "a record needs a share, a hash, bytes and a seq >= 1");
    if (seq > (uint64_t)INT64_MAX)
        return fail(db, -ERANGE, "record seq %llu is beyond what the relay stores",
                    (unsigned long long)seq);
    int rc = change_begin(db);
    if (rc)
        return rc;
    rc = op_put_locked(db, added, share, author, seq, prev, hash, epoch, bytes, len);
    if (rc && added)
        *added = false;
    return change_end(db, rc);
}

int meta_relaydb_op_read(struct meta_relaydb *db, size_t *count,
                         const uint8_t share[META_SHARE_ID_LEN], uint64_t author, uint64_t from,
                         size_t max_records, size_t max_bytes, meta_relaydb_record_fn each,
                         void *ctx)
{
    if (count)
        *count = 0;
    if (!share || !each)
        return fail(db, -EINVAL, "reading records needs a share and a visitor");
    if (max_records == 0 || from > (uint64_t)INT64_MAX)
        return 0;
    sqlite3_stmt *st = stmt(db, ST_RECORD_READ);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, author);
    bind_u64(st, 3, from ? from : 1);
    sqlite3_bind_int64(st, 4, max_records > INT64_MAX ? INT64_MAX : (sqlite3_int64)max_records);
    size_t bytes_sent = 0, sent = 0;
    int rc = SQLITE_DONE;
    /* The byte bound is checked before each step: a stop there is a clean end (DONE). */
    while (bytes_sent < max_bytes || sent == 0) {
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
            break;
        rc = SQLITE_DONE;
        struct meta_relaydb_record record = {
            .author = author,
            .seq = column_u64(st, 0),
            .hash = column_fixed(st, 1, META_HASH_LEN),
            .epoch = (uint32_t)sqlite3_column_int64(st, 2),
            .bytes = sqlite3_column_blob(st, 3),
        };
        record.len = (size_t)sqlite3_column_bytes(st, 3);
        if (!record.hash || !record.bytes || record.len == 0) {
            sqlite3_reset(st);
            return damaged_row(db, "records");
        }
        int stop = each(ctx, &record);
        sent++;
        bytes_sent += record.len;
        if (count)
            *count = sent;
        if (stop) {
            sqlite3_reset(st);
            return stop;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(db, rc, "reading records");
}

int meta_relaydb_heads(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                       meta_relaydb_head_fn each, void *ctx)
{
    sqlite3_stmt *st = stmt(db, ST_HEADS);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const uint8_t *hash = column_fixed(st, 2, META_HASH_LEN);
        if (!hash || sqlite3_column_int64(st, 1) <= 0) {
            sqlite3_reset(st);
            return damaged_row(db, "heads");
        }
        int stop = each(ctx, column_u64(st, 0), column_u64(st, 1), hash);
        if (stop) {
            sqlite3_reset(st);
            return stop;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(db, rc, "reading heads");
}

/* ---- chunks ---- */

int meta_relaydb_chunk_put(struct meta_relaydb *db, bool *added,
                           const uint8_t share[META_SHARE_ID_LEN], const uint8_t id[META_HASH_LEN],
                           uint64_t author, const uint8_t *bytes, size_t len)
{
    if (added)
        *added = false;
    if (!share || !id || !bytes || len == 0)
        return fail(db, -EINVAL, "a chunk record needs a share, an id and bytes");
    int rc = change_begin(db);
    if (rc)
        return rc;
    bool exists;
    rc = share_exists(db, &exists, share);
    if (rc == 0 && !exists)
        rc = no_share(db);
    if (rc == 0) {
        sqlite3_stmt *st = stmt(db, ST_CHUNK_INSERT);
        if (!st) {
            rc = -ENOMEM;
        } else {
            bind_blob(st, 1, share, META_SHARE_ID_LEN);
            bind_blob(st, 2, id, META_HASH_LEN);
            bind_u64(st, 3, author);
            bind_blob(st, 4, bytes, len);
            rc = step_done(db, st, "storing a chunk");
            if (rc == 0 && added)
                *added = sqlite3_changes(db->db) > 0;
        }
    }
    return change_end(db, rc);
}

int meta_relaydb_chunk_get(struct meta_relaydb *db, uint8_t **bytes, size_t *len,
                           const uint8_t share[META_SHARE_ID_LEN], const uint8_t id[META_HASH_LEN])
{
    *bytes = NULL;
    *len = 0;
    sqlite3_stmt *st = stmt(db, ST_CHUNK_GET);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_blob(st, 2, id, META_HASH_LEN);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const void *held = sqlite3_column_blob(st, 0);
        size_t held_len = (size_t)sqlite3_column_bytes(st, 0);
        if (!held || held_len == 0) {
            sqlite3_reset(st);
            return damaged_row(db, "chunks");
        }
        uint8_t *copy = malloc(held_len);
        if (!copy) {
            sqlite3_reset(st);
            return fail(db, -ENOMEM, "out of memory");
        }
        memcpy(copy, held, held_len);
        *bytes = copy;
        *len = held_len;
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return sql_fail(db, rc, "reading a chunk");
    return fail(db, -ENOENT, "the relay does not hold that chunk");
}

int meta_relaydb_chunk_has(struct meta_relaydb *db, bool *has,
                           const uint8_t share[META_SHARE_ID_LEN], const uint8_t id[META_HASH_LEN])
{
    sqlite3_stmt *st = stmt(db, ST_CHUNK_HAS);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_blob(st, 2, id, META_HASH_LEN);
    int rc = sqlite3_step(st);
    *has = rc == SQLITE_ROW;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(db, rc, "looking up a chunk");
    return 0;
}

/* ---- addresses ---- */

int meta_relaydb_addr_put(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                          uint64_t replica, const char *addr, int64_t seen_ns)
{
    if (!share || !addr || strlen(addr) > META_RELAYDB_ADDR_MAX)
        return fail(db, -EINVAL, "an address is text of at most %d bytes", META_RELAYDB_ADDR_MAX);
    sqlite3_stmt *st = stmt(db, ST_ADDR_PUT);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    bind_u64(st, 2, replica);
    sqlite3_bind_text(st, 3, addr, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, seen_ns);
    return step_done(db, st, "recording an address");
}

int meta_relaydb_addrs(struct meta_relaydb *db, const uint8_t share[META_SHARE_ID_LEN],
                       meta_relaydb_addr_fn each, void *ctx)
{
    sqlite3_stmt *st = stmt(db, ST_ADDRS);
    if (!st)
        return -ENOMEM;
    bind_blob(st, 1, share, META_SHARE_ID_LEN);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *addr = (const char *)sqlite3_column_text(st, 1);
        if (!addr) {
            sqlite3_reset(st);
            return damaged_row(db, "addrs");
        }
        int stop = each(ctx, column_u64(st, 0), addr, sqlite3_column_int64(st, 2));
        if (stop) {
            sqlite3_reset(st);
            return stop;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(db, rc, "listing addresses");
}
