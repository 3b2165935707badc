/*
 * meta/schema: every table of the store, in one place, as a list of
 * migrations. Migration i takes a database from user_version i - 1 to i in one
 * transaction, which also sets user_version, so a crash leaves either the old
 * or the new schema. Migrations are append-only: once released, a migration's
 * text never changes (tests/fixtures/ keeps a database of every version and
 * tests/unit/test_schema.c opens each). README "Schema" documents the tables
 * and how to add a version.
 *
 * Integers that hold u64 values (replica ids, seqs, counters) are stored as
 * SQLite's signed 64-bit integer with the same bits, so a replica id above
 * 2^63 reads back negative in the sqlite3 shell. ORDER BY on them is the
 * signed order; the code never relies on it being the unsigned one.
 */
#include "internal.h"
#include "meta/opbody.h"
#include "meta/oplog.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A schema version: its SQL, and code the SQL cannot express (NULL: none), run after it. */
struct migration {
    const char *sql;
    int (*code)(sqlite3 *db, char **message);
};

static int backfill_v3(sqlite3 *db, char **message);

static const struct migration migrations[] = {
    /* v1: the first schema. */
    {"PRAGMA application_id = 2003134068;" /* 0x77656674, "weft" */

     /* Key/value settings: identity, retention policy, user preferences. */
     "CREATE TABLE settings ("
     "  key   TEXT PRIMARY KEY,"
     "  value TEXT NOT NULL"
     ") WITHOUT ROWID;"

     /* Monotonic counters; 'next_ino' hands out inode numbers, never reused. */
     "CREATE TABLE counters ("
     "  name  TEXT PRIMARY KEY,"
     "  value INTEGER NOT NULL"
     ") WITHOUT ROWID;"
     "INSERT INTO counters VALUES ('next_ino', 2);" /* 1 is the root's */

     /* Devices of the share: this one, peers, and revoked ones. */
     "CREATE TABLE devices ("
     "  replica     INTEGER PRIMARY KEY,"
     "  public_key  BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),"
     "  name        TEXT NOT NULL,"
     "  added_at_ns INTEGER NOT NULL,"
     "  revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))"
     ");"

     /* The op log. (replica, seq) identifies an op; (counter, replica) is its
        Lamport timestamp. body is crdt/'s encoding, opaque to SQL. */
     "CREATE TABLE ops ("
     "  replica INTEGER NOT NULL,"
     "  seq     INTEGER NOT NULL CHECK (seq > 0),"
     "  counter INTEGER NOT NULL CHECK (counter > 0),"
     "  kind    INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),"
     "  node    BLOB NOT NULL CHECK (length(node) = 16),"
     "  author  INTEGER NOT NULL,"
     "  body    BLOB NOT NULL,"
     "  PRIMARY KEY (replica, seq)"
     ") WITHOUT ROWID;"
     "CREATE INDEX ops_by_ts ON ops (counter, replica);"
     /* Only text ops are looked up by node (a text state's replay): the others skip it. */
     "CREATE INDEX ops_by_node ON ops (node) WHERE kind = 2;"

     /* Version vector: replica -> highest seq held (= count of its ops held). */
     "CREATE TABLE vv ("
     "  replica INTEGER PRIMARY KEY,"
     "  seq     INTEGER NOT NULL CHECK (seq > 0)"
     ");"

     /* The materialized tree. parent is NULL only for the root and the trash.
        Names are bytes (POSIX names need not be UTF-8); several live nodes may
        share (parent, name) after concurrent creates. */
     "CREATE TABLE nodes ("
     "  id       BLOB PRIMARY KEY CHECK (length(id) = 16),"
     "  parent   BLOB CHECK (parent IS NULL OR length(parent) = 16),"
     "  name     BLOB NOT NULL,"
     "  kind     INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 4),"
     "  mode     INTEGER NOT NULL,"
     "  uid      INTEGER NOT NULL,"
     "  gid      INTEGER NOT NULL,"
     "  rdev     INTEGER NOT NULL DEFAULT 0,"
     "  size     INTEGER NOT NULL DEFAULT 0,"
     "  mtime_ns INTEGER NOT NULL,"
     "  ctime_ns INTEGER NOT NULL,"
     "  target   BLOB,"
     "  ino      INTEGER NOT NULL UNIQUE,"
     "  wc_state INTEGER NOT NULL DEFAULT 0 CHECK (wc_state IN (0, 1, 2))"
     ");"
     "CREATE INDEX nodes_by_parent_name ON nodes (parent, name);"
     "CREATE INDEX nodes_by_wc_state ON nodes (wc_state) WHERE wc_state != 0;"

     /* Extended attributes, one LWW register each; value NULL is a removal. */
     "CREATE TABLE xattrs ("
     "  node       BLOB NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,"
     "  name       TEXT NOT NULL,"
     "  value      BLOB,"
     "  ts_counter INTEGER NOT NULL,"
     "  ts_replica INTEGER NOT NULL,"
     "  PRIMARY KEY (node, name)"
     ") WITHOUT ROWID;"

     /* Text CRDT state per text file (crdt/text's encoding). */
     "CREATE TABLE text_states ("
     "  node  BLOB PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,"
     "  state BLOB NOT NULL"
     ");"

     /* Versions of binary files; chunks is a chunk list (README "Chunk list"). */
     "CREATE TABLE versions ("
     "  node       BLOB NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,"
     "  ts_counter INTEGER NOT NULL,"
     "  ts_replica INTEGER NOT NULL,"
     "  author     INTEGER NOT NULL,"
     "  time_ns    INTEGER NOT NULL,"
     "  size       INTEGER NOT NULL CHECK (size >= 0),"
     "  chunks     BLOB NOT NULL,"
     "  PRIMARY KEY (node, ts_counter, ts_replica)"
     ");"

     /* Chunks by keyed BLAKE2b-256 id; raw bytes. GC is mark and sweep. */
     "CREATE TABLE chunks ("
     "  id   BLOB PRIMARY KEY CHECK (length(id) = 32),"
     "  size INTEGER NOT NULL,"
     "  data BLOB NOT NULL"
     ");",
     NULL},

    /*
     * v2: checkpoints of CRDT state, so that opening (or loading a text
     * file's CRDT) replays only the ops logged after the checkpoint instead
     * of the whole log (README "Checkpoints"); and `nodes` and `ops` rebuilt
     * for cheaper writes: a CHECK with IN (...) builds a temporary table at
     * every insert (BETWEEN does not), and `nodes` keyed by id WITHOUT ROWID
     * has one b-tree less to update. Rebuilt by SQLite's twelve-step
     * procedure (foreign keys are off while migrations run: schema_migrate).
     */
    {"CREATE TABLE nodes_v2 ("
     "  id       BLOB PRIMARY KEY CHECK (length(id) = 16),"
     "  parent   BLOB CHECK (parent IS NULL OR length(parent) = 16),"
     "  name     BLOB NOT NULL,"
     "  kind     INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 4),"
     "  mode     INTEGER NOT NULL,"
     "  uid      INTEGER NOT NULL,"
     "  gid      INTEGER NOT NULL,"
     "  rdev     INTEGER NOT NULL DEFAULT 0,"
     "  size     INTEGER NOT NULL DEFAULT 0,"
     "  mtime_ns INTEGER NOT NULL,"
     "  ctime_ns INTEGER NOT NULL,"
     "  target   BLOB,"
     "  ino      INTEGER NOT NULL UNIQUE,"
     "  wc_state INTEGER NOT NULL DEFAULT 0 CHECK (wc_state BETWEEN 0 AND 2)"
     ") WITHOUT ROWID;"
     "INSERT INTO nodes_v2 (id, parent, name, kind, mode, uid, gid, rdev, size, mtime_ns,"
     "  ctime_ns, target, ino, wc_state)"
     "  SELECT id, parent, name, kind, mode, uid, gid, rdev, size, mtime_ns, ctime_ns, target,"
     "  ino, wc_state FROM nodes;"
     "DROP TABLE nodes;"
     "ALTER TABLE nodes_v2 RENAME TO nodes;"
     "CREATE INDEX nodes_by_parent_name ON nodes (parent, name);"
     "CREATE INDEX nodes_by_wc_state ON nodes (wc_state) WHERE wc_state != 0;"

     "CREATE TABLE ops_v2 ("
     "  replica INTEGER NOT NULL,"
     "  seq     INTEGER NOT NULL CHECK (seq > 0),"
     "  counter INTEGER NOT NULL CHECK (counter > 0),"
     "  kind    INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 3),"
     "  node    BLOB NOT NULL CHECK (length(node) = 16),"
     "  author  INTEGER NOT NULL,"
     "  body    BLOB NOT NULL,"
     "  PRIMARY KEY (replica, seq)"
     ") WITHOUT ROWID;"
     "INSERT INTO ops_v2 (replica, seq, counter, kind, node, author, body)"
     "  SELECT replica, seq, counter, kind, node, author, body FROM ops;"
     "DROP TABLE ops;"
     "ALTER TABLE ops_v2 RENAME TO ops;"
     "CREATE INDEX ops_by_ts ON ops (counter, replica);"
     /* Only text ops are looked up by node (a text state's replay): the others skip it. */
     "CREATE INDEX ops_by_node ON ops (node) WHERE kind = 2;"

     /* The tree CRDT (name 'tree'): its snapshot as of the ops `covered` (a
        version vector) names; digest = BLAKE2b-256 of name, covered, counter
        and state, so a damaged checkpoint is noticed and the log used. */
     "CREATE TABLE checkpoints ("
     "  name    TEXT PRIMARY KEY,"
     "  covered BLOB NOT NULL,"
     "  counter INTEGER NOT NULL,"
     "  state   BLOB NOT NULL,"
     "  digest  BLOB NOT NULL CHECK (length(digest) = 32)"
     ");"
     /* A text state holds the node's text ops up to `covered` (a version
        vector); later ones are replayed from the log. NULL (v1 rows): all. */
     "ALTER TABLE text_states ADD COLUMN covered BLOB;"
     /* The version vector is the log's: each replica's highest seq, read off
        the primary key of ops. A table of it cost a write per transaction. */
     "DROP TABLE vv;",
     NULL},

    /*
     * v3: per-field last-writer-wins attributes (attr_ts: when each was set,
     * README "Schema"), and what rule 3b needs per node: its newest tree op,
     * whether that deleted it and the newest edit the delete had seen, its
     * newest content op that names the move its author had seen, and the
     * pin (README "Rule 3b"). Filled from the log by backfill_v3.
     */
    {"ALTER TABLE nodes ADD COLUMN attr_ts BLOB;"
     "ALTER TABLE nodes ADD COLUMN moved_counter INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE nodes ADD COLUMN moved_replica INTEGER NOT NULL DEFAULT 0;"
     /* NULL unless the newest tree op moved the node to the trash. */
     "ALTER TABLE nodes ADD COLUMN deleted_saw_counter INTEGER;"
     "ALTER TABLE nodes ADD COLUMN deleted_saw_replica INTEGER;"
     "ALTER TABLE nodes ADD COLUMN edited_counter INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE nodes ADD COLUMN edited_replica INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE nodes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0 "
     "  CHECK (pinned BETWEEN 0 AND 2);"
     /* Pins are rare: opening reads them all, through this index. */
     "CREATE INDEX nodes_by_pinned ON nodes (pinned) WHERE pinned != 0;",
     backfill_v3},

    /*
     * v4: membership ops (kind 4, meta/member): devices learn each other's
     * keys from the log. The kind's CHECK is part of the table: rebuilt.
     */
    {"CREATE TABLE ops_v4 ("
     "  replica INTEGER NOT NULL,"
     "  seq     INTEGER NOT NULL CHECK (seq > 0),"
     "  counter INTEGER NOT NULL CHECK (counter > 0),"
     "  kind    INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 4),"
     "  node    BLOB NOT NULL CHECK (length(node) = 16),"
     "  author  INTEGER NOT NULL,"
     "  body    BLOB NOT NULL,"
     "  PRIMARY KEY (replica, seq)"
     ") WITHOUT ROWID;"
     "INSERT INTO ops_v4 (replica, seq, counter, kind, node, author, body)"
     "  SELECT replica, seq, counter, kind, node, author, body FROM ops;"
     "DROP TABLE ops;"
     "ALTER TABLE ops_v4 RENAME TO ops;"
     "CREATE INDEX ops_by_ts ON ops (counter, replica);"
     "CREATE INDEX ops_by_node ON ops (node) WHERE kind = 2;",
     NULL},
};

#define MIGRATION_COUNT (sizeof(migrations) / sizeof(migrations[0]))

/* ---------- v3's backfill ---------- */

/*
 * The v3 columns as the log says, so a store from before v3 behaves as if
 * it had always had them: each node's newest tree op (and, if that deleted
 * it, the edit the delete had seen: none, v2 wrote none), and each LWW
 * attribute as the newest attribute op that set it, value and stamp: v2
 * applied them in arrival order, so a late older op may have won there.
 * Ops whose bodies do not decode are skipped: the log is the replica's to
 * judge, not the migration's. Content ops of v2 name no move: rule 3b
 * ignores them, so `edited` stays none.
 */
struct backfill {
    sqlite3 *db;
    sqlite3_stmt *read_node, *set_moved, *set_attrs;
};

static int step_done(sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* A tree op: the node's newest so far? (the node is the op's, as logged) */
static int backfill_tree_op(struct backfill *fill, sqlite3_stmt *op)
{
    struct meta_tree_body body;
    if (meta_tree_body_decode(&body, sqlite3_column_blob(op, 4),
                              (size_t)sqlite3_column_bytes(op, 4)) != 0)
        return SQLITE_OK;
    sqlite3_bind_value(fill->read_node, 1, sqlite3_column_value(op, 1));
    int rc = sqlite3_step(fill->read_node);
    struct crdt_ts moved = {0, 0};
    if (rc == SQLITE_ROW)
        moved = (struct crdt_ts){store_column_u64(fill->read_node, 0),
                                 store_column_u64(fill->read_node, 1)};
    sqlite3_reset(fill->read_node);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
    if (crdt_ts_cmp(body.op.ts, moved) <= 0)
        return SQLITE_OK;
    sqlite3_stmt *set = fill->set_moved;
    sqlite3_bind_value(set, 1, sqlite3_column_value(op, 1));
    store_bind_u64(set, 2, body.op.ts.counter);
    store_bind_u64(set, 3, body.op.ts.replica);
    if (crdt_node_id_eq(body.op.parent, CRDT_NODE_TRASH)) {
        store_bind_u64(set, 4, body.op.seen_edit.counter);
        store_bind_u64(set, 5, body.op.seen_edit.replica);
    } else {
        sqlite3_bind_null(set, 4);
        sqlite3_bind_null(set, 5);
    }
    return step_done(set);
}

/*
 * Applies the fields of an attribute op that are newer than their stamps to
 * the row's values; true if the symlink target is one of them.
 */
static bool backfill_fields(sqlite3_stmt *row, const struct meta_attr_body *body, struct crdt_ts ts,
                            struct crdt_ts stamps[META_ATTR_FIELDS], int64_t values[5])
{
    bool target = false;
    for (int field = 0; field < META_ATTR_FIELDS; field++) {
        if (!(body->mask & (1u << field)) || crdt_ts_cmp(ts, stamps[field]) <= 0)
            continue;
        stamps[field] = ts;
        if (field == 0)
            values[0] = (sqlite3_column_int64(row, 3) & 0170000) | (body->mode & 07777);
        else if (field == 1)
            values[1] = body->uid;
        else if (field == 2)
            values[2] = body->gid;
        else if (field == 3)
            values[3] = (int64_t)body->rdev;
        else if (field == 4)
            values[4] = body->mtime_ns;
        else
            target = true;
    }
    return target;
}

/* An attribute op: each field it sets wins if it is the newest so far. */
static int backfill_attr_op(struct backfill *fill, sqlite3_stmt *op)
{
    struct meta_attr_body body;
    int rc = meta_attr_body_decode(&body, sqlite3_column_blob(op, 4),
                                   (size_t)sqlite3_column_bytes(op, 4));
    meta_attr_body_clear(&body);
    if (rc || body.mask == META_ATTR_CONTENT || body.mask >> META_ATTR_FIELDS)
        return rc == -ENOMEM ? SQLITE_NOMEM : SQLITE_OK;
    struct crdt_ts ts = {store_column_u64(op, 2), store_column_u64(op, 3)};
    sqlite3_stmt *row = fill->read_node;
    sqlite3_bind_value(row, 1, sqlite3_column_value(op, 1));
    if ((rc = sqlite3_step(row)) != SQLITE_ROW) {
        sqlite3_reset(row);
        return rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    struct crdt_ts stamps[META_ATTR_FIELDS];
    int64_t values[5];
    for (int i = 0; i < 5; i++)
        values[i] = sqlite3_column_int64(row, 3 + i);
    if (sqlite3_column_type(row, 2) == SQLITE_NULL ||
        attr_ts_decode(stamps, sqlite3_column_blob(row, 2), (size_t)sqlite3_column_bytes(row, 2)))
        memset(stamps, 0, sizeof(stamps));
    bool target = backfill_fields(row, &body, ts, stamps, values);
    sqlite3_reset(row);
    struct crdt_buf encoded = {0};
    attr_ts_encode(&encoded, stamps);
    if (crdt_buf_status(&encoded)) {
        crdt_buf_free(&encoded);
        return SQLITE_NOMEM;
    }
    sqlite3_stmt *set = fill->set_attrs;
    sqlite3_bind_value(set, 1, sqlite3_column_value(op, 1));
    sqlite3_bind_blob(set, 2, encoded.data, (int)encoded.len, SQLITE_TRANSIENT);
    for (int i = 0; i < 5; i++)
        sqlite3_bind_int64(set, 3 + i, values[i]);
    if (target)
        sqlite3_bind_blob(set, 8, body.target, (int)body.target_len, SQLITE_TRANSIENT);
    sqlite3_bind_int(set, 9, target);
    crdt_buf_free(&encoded);
    return step_done(set);
}

static int backfill_v3(sqlite3 *db, char **message)
{
    static const char ops_sql[] = "SELECT kind, node, counter, replica, body FROM ops "
                                  "WHERE kind != 2;";
    static const char read_sql[] = "SELECT moved_counter, moved_replica, attr_ts, mode, uid, gid, "
                                   "rdev, mtime_ns FROM nodes WHERE id = ?1;";
    static const char moved_sql[] =
        "UPDATE nodes SET moved_counter = ?2, moved_replica = ?3, deleted_saw_counter = ?4, "
        "deleted_saw_replica = ?5 WHERE id = ?1;";
    static const char attrs_sql[] =
        "UPDATE nodes SET attr_ts = ?2, mode = ?3, uid = ?4, gid = ?5, rdev = ?6, mtime_ns = ?7, "
        "target = CASE WHEN ?9 THEN ?8 ELSE target END WHERE id = ?1;";
    struct backfill fill = {.db = db};
    sqlite3_stmt *ops = NULL;
    int rc = sqlite3_prepare_v2(db, ops_sql, -1, &ops, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, read_sql, -1, &fill.read_node, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, moved_sql, -1, &fill.set_moved, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, attrs_sql, -1, &fill.set_attrs, NULL);
    int step = SQLITE_DONE;
    while (rc == SQLITE_OK && (step = sqlite3_step(ops)) == SQLITE_ROW)
        rc = sqlite3_column_int(ops, 0) == META_OP_TREE ? backfill_tree_op(&fill, ops)
                                                        : backfill_attr_op(&fill, ops);
    if (rc == SQLITE_OK && step != SQLITE_DONE)
        rc = step;
    if (rc != SQLITE_OK)
        *message = sqlite3_mprintf("filling the v3 columns from the log: %s", sqlite3_errmsg(db));
    sqlite3_finalize(ops);
    sqlite3_finalize(fill.read_node);
    sqlite3_finalize(fill.set_moved);
    sqlite3_finalize(fill.set_attrs);
    return rc;
}

_Static_assert(MIGRATION_COUNT == META_SCHEMA_VERSION, "one migration per schema version");

/* Counts rows that break a foreign key (a migration must leave none). */
static int count_fk_violations(void *ctx, int columns, char **values, char **names)
{
    (void)columns;
    (void)values;
    (void)names;
    (*(int *)ctx)++;
    return 0;
}

/*
 * Runs migration `version` in one transaction. Foreign keys are off while it
 * runs (a table rebuild drops the old table: with them on, that would delete
 * the rows that refer to it) and checked before it commits.
 */
static int migrate_one(struct meta_store *store, int version, char **message)
{
    char set_version[64];
    snprintf(set_version, sizeof(set_version), "PRAGMA user_version = %d;", version);
    int violations = 0;
    int rc =
        sqlite3_exec(store->db, "PRAGMA foreign_keys = OFF; BEGIN IMMEDIATE;", NULL, NULL, message);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(store->db, migrations[version - 1].sql, NULL, NULL, message);
    if (rc == SQLITE_OK && migrations[version - 1].code)
        rc = migrations[version - 1].code(store->db, message);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(store->db, "PRAGMA foreign_key_check;", count_fk_violations, &violations,
                          message);
    if (rc == SQLITE_OK && violations) {
        rc = SQLITE_CONSTRAINT_FOREIGNKEY;
        *message = sqlite3_mprintf("%d rows break foreign keys", violations);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(store->db, set_version, NULL, NULL, message);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(store->db, "COMMIT;", NULL, NULL, message);
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(store->db))
        sqlite3_exec(store->db, "ROLLBACK;", NULL, NULL, NULL);
    /* Back on whatever happened: the connection's setting (configure) is ON. */
    int on = sqlite3_exec(store->db, "PRAGMA foreign_keys = ON;", NULL, NULL, NULL);
    return rc != SQLITE_OK ? rc : on;
}

int schema_migrate(struct meta_store *store, int from_version)
{
    for (int version = from_version + 1; version <= META_SCHEMA_VERSION; version++) {
        char *message = NULL;
        int rc = migrate_one(store, version, &message);
        if (rc != SQLITE_OK) {
            int err = store_fail(store, store_errno(rc),
                                 "%s/store.db: migration to schema v%d failed: %s; the database "
                                 "is unchanged at v%d",
                                 store->dir, version, message ? message : sqlite3_errstr(rc),
                                 version - 1);
            sqlite3_free(message);
            return err;
        }
    }
    return 0;
}
