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

#include <stdio.h>

static const char *const migrations[] = {
    /* v1: the first schema. */
    "PRAGMA application_id = 2003134068;" /* 0x77656674, "weft" */

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

    /*
     * v2: checkpoints of CRDT state, so that opening (or loading a text
     * file's CRDT) replays only the ops logged after the checkpoint instead
     * of the whole log (README "Checkpoints"); and `nodes` and `ops` rebuilt
     * for cheaper writes: a CHECK with IN (...) builds a temporary table at
     * every insert (BETWEEN does not), and `nodes` keyed by id WITHOUT ROWID
     * has one b-tree less to update. Rebuilt by SQLite's twelve-step
     * procedure (foreign keys are off while migrations run: schema_migrate).
     */
    "CREATE TABLE nodes_v2 ("
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
};

#define MIGRATION_COUNT (sizeof(migrations) / sizeof(migrations[0]))

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
        rc = sqlite3_exec(store->db, migrations[version - 1], NULL, NULL, message);
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
