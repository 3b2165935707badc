/* meta/oplog: see oplog.h. */
#include "meta/oplog.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int append(struct meta_store *store, const struct meta_op *op)
{
    static const char insert_sql[] =
        "INSERT INTO ops (replica, seq, counter, kind, node, author, body) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7);";
    uint64_t held = 0;
    int rc = store_vv_get(&held, store, op->replica);
    if (rc)
        return rc;
    if (op->seq <= held)
        return store_fail(store, -EEXIST, "op (%016llx, %llu) is already in the log",
                          (unsigned long long)op->replica, (unsigned long long)op->seq);
    if (op->seq != held + 1)
        return store_fail(store, -EINVAL,
                          "op (%016llx, %llu) would leave a gap: the log holds that replica's "
                          "ops up to %llu",
                          (unsigned long long)op->replica, (unsigned long long)op->seq,
                          (unsigned long long)held);
    sqlite3_stmt *stmt = store_stmt(store, insert_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, op->replica);
    store_bind_u64(stmt, 2, op->seq);
    store_bind_u64(stmt, 3, op->counter);
    sqlite3_bind_int(stmt, 4, (int)op->kind);
    store_bind_id(stmt, 5, &op->node);
    store_bind_u64(stmt, 6, op->author);
    sqlite3_bind_blob(stmt, 7, op->body_len ? (const void *)op->body : "", (int)op->body_len,
                      SQLITE_STATIC);
    rc = store_step_done(store, stmt, "appending an op");
    /* The vv row is written once, when the change commits (store_flush_deferred). */
    return rc ? rc : store_vv_raise(store, op->replica, op->seq);
}

int meta_oplog_append(struct meta_store *store, const struct meta_op *op)
{
    if (op->seq == 0 || op->counter == 0 || op->kind < META_OP_TREE || op->kind > META_OP_MEMBER ||
        op->body_len > (size_t)INT32_MAX || op->seq > (uint64_t)INT64_MAX)
        return store_fail(store, -EINVAL, "malformed op (seq, counter, kind or size)");
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    return store_single_end(store, own, append(store, op));
}

static int read_op(struct meta_op *out, sqlite3_stmt *stmt)
{
    out->replica = store_column_u64(stmt, 0);
    out->seq = store_column_u64(stmt, 1);
    out->counter = store_column_u64(stmt, 2);
    out->kind = (enum meta_op_kind)sqlite3_column_int(stmt, 3);
    out->author = store_column_u64(stmt, 5);
    out->body = (uint8_t *)sqlite3_column_blob(stmt, 6);
    out->body_len = (size_t)sqlite3_column_bytes(stmt, 6);
    return store_column_id(&out->node, stmt, 4);
}

/* Steps a query for one op (bound by the caller) and copies it into *out; `which` names it. */
static int get_one(struct meta_op *out, struct meta_store *store, sqlite3_stmt *stmt,
                   const char *which)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        rc = read_op(out, stmt);
        if (rc == 0) {
            const uint8_t *body = out->body;
            out->body = malloc(out->body_len ? out->body_len : 1);
            if (out->body) {
                if (out->body_len)
                    memcpy(out->body, body, out->body_len);
            } else {
                rc = -ENOMEM;
            }
        } else {
            out->body = NULL;
            rc = store_fail(store, rc, "op %s is damaged", which);
        }
    } else if (rc == SQLITE_DONE) {
        rc = store_fail(store, -ENOENT, "no op %s", which);
    } else {
        rc = store_sql_fail(store, rc, "reading an op");
    }
    sqlite3_reset(stmt);
    return rc;
}

int meta_oplog_get(struct meta_op *out, struct meta_store *store, uint64_t replica, uint64_t seq)
{
    static const char sql[] = "SELECT replica, seq, counter, kind, node, author, body FROM ops "
                              "WHERE replica = ?1 AND seq = ?2;";
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, replica);
    store_bind_u64(stmt, 2, seq);
    char which[64];
    snprintf(which, sizeof(which), "(%016llx, %llu)", (unsigned long long)replica,
             (unsigned long long)seq);
    return get_one(out, store, stmt, which);
}

int meta_oplog_get_by_ts(struct meta_op *out, struct meta_store *store, struct crdt_ts ts,
                         enum meta_op_kind kind)
{
    /* Named: the planner would rather scan the replica's part of the primary key. */
    static const char sql[] = "SELECT replica, seq, counter, kind, node, author, body FROM ops "
                              "INDEXED BY ops_by_ts WHERE counter = ?1 AND replica = ?2 "
                              "AND kind = ?3;";
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, ts.counter);
    store_bind_u64(stmt, 2, ts.replica);
    sqlite3_bind_int(stmt, 3, (int)kind);
    char which[64];
    snprintf(which, sizeof(which), "at timestamp (%llu, %016llx)", (unsigned long long)ts.counter,
             (unsigned long long)ts.replica);
    return get_one(out, store, stmt, which);
}

void meta_op_clear(struct meta_op *op)
{
    free(op->body);
    op->body = NULL;
    op->body_len = 0;
}

/*
 * A temp table holds `have` so one query can join it: ops whose seq is above
 * what `have` holds of their replica (0 for replicas it has never seen).
 */
int meta_oplog_since(struct meta_store *store, const struct crdt_vv *have, meta_op_fn fn, void *ctx)
{
    static const char create_sql[] =
        "CREATE TEMP TABLE IF NOT EXISTS have (replica INTEGER PRIMARY KEY, seq INTEGER);"
        "DELETE FROM temp.have;";
    static const char insert_sql[] = "INSERT INTO temp.have (replica, seq) VALUES (?1, ?2);";
    static const char select_sql[] =
        "SELECT o.replica, o.seq, o.counter, o.kind, o.node, o.author, o.body FROM ops o "
        "LEFT JOIN temp.have h ON h.replica = o.replica "
        "WHERE o.seq > coalesce(h.seq, 0) ORDER BY o.counter, o.replica;";
    int rc = sqlite3_exec(store->db, create_sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store_sql_fail(store, rc, "preparing a version vector");
    sqlite3_stmt *stmt = store_stmt(store, insert_sql);
    if (!stmt)
        return -ENOMEM;
    for (size_t i = 0; i < have->len; i++) {
        sqlite3_reset(stmt);
        store_bind_u64(stmt, 1, have->entries[i].replica);
        store_bind_u64(stmt, 2, have->entries[i].seq);
        rc = store_step_done(store, stmt, "preparing a version vector");
        if (rc)
            return rc;
    }
    stmt = store_stmt(store, select_sql);
    if (!stmt)
        return -ENOMEM;
    int step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_op op;
        rc = read_op(&op, stmt);
        if (rc) {
            rc = store_fail(store, rc, "an op in the log is damaged");
            goto out;
        }
        rc = fn(ctx, &op);
        if (rc)
            goto out;
    }
    rc = step == SQLITE_DONE ? 0 : store_sql_fail(store, step, "reading the op log");
out:
    sqlite3_reset(stmt);
    return rc;
}

int meta_vv_load(struct crdt_vv *out, struct meta_store *store)
{
    /*
     * Each replica's highest seq, by skipping along the primary key
     * (replica, seq): two index seeks per replica, however long the log.
     */
    static const char sql[] =
        "WITH RECURSIVE replicas (replica) AS ("
        "  SELECT min(replica) FROM ops"
        "  UNION ALL"
        "  SELECT (SELECT min(replica) FROM ops WHERE replica > replicas.replica) FROM replicas"
        "  WHERE replica IS NOT NULL)"
        "SELECT replica, (SELECT max(seq) FROM ops WHERE ops.replica = replicas.replica) "
        "FROM replicas WHERE replica IS NOT NULL;";
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    int rc = 0, step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        rc = crdt_vv_raise(out, store_column_u64(stmt, 0), store_column_u64(stmt, 1));
        if (rc)
            break;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = store_sql_fail(store, step, "reading the version vector");
    sqlite3_reset(stmt);
    if (rc)
        crdt_vv_free(out);
    return rc;
}

int meta_oplog_replay(struct meta_store *store, const struct meta_id *node, enum meta_op_kind kind,
                      const struct crdt_vv *covered, meta_op_fn fn, void *ctx)
{
    static const char all_sql[] = "SELECT replica, seq, counter, kind, node, author, body FROM ops "
                                  "WHERE replica = ?1 AND seq > ?2 AND kind = ?3 ORDER BY seq;";
    /* Text ops by node: `kind = 2` spelled out, so the partial index ops_by_node serves. */
    static const char text_sql[] =
        "SELECT replica, seq, counter, kind, node, author, body FROM ops "
        "WHERE node = ?4 AND replica = ?1 AND seq > ?2 AND kind = 2 AND ?3 = 2 ORDER BY seq;";
    static const char node_sql[] =
        "SELECT replica, seq, counter, kind, node, author, body FROM ops "
        "WHERE node = ?4 AND replica = ?1 AND seq > ?2 AND kind = ?3 ORDER BY seq;";
    struct crdt_vv held = {0};
    int rc = meta_vv_load(&held, store);
    for (size_t i = 0; rc == 0 && i < held.len; i++) {
        uint64_t replica = held.entries[i].replica;
        uint64_t from = crdt_vv_get(covered, replica);
        if (from >= held.entries[i].seq)
            continue;
        sqlite3_stmt *stmt = store_stmt(store, !node                  ? all_sql
                                               : kind == META_OP_TEXT ? text_sql
                                                                      : node_sql);
        if (!stmt) {
            rc = -ENOMEM;
            break;
        }
        store_bind_u64(stmt, 1, replica);
        store_bind_u64(stmt, 2, from);
        sqlite3_bind_int(stmt, 3, (int)kind);
        if (node)
            store_bind_id(stmt, 4, node);
        int step;
        while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
            struct meta_op op;
            rc = read_op(&op, stmt);
            if (rc) {
                rc = store_fail(store, rc, "an op in the log is damaged");
                break;
            }
            rc = fn(ctx, &op);
            if (rc)
                break;
        }
        if (rc == 0 && step != SQLITE_DONE)
            rc = store_sql_fail(store, step, "reading the op log");
        sqlite3_reset(stmt);
    }
    crdt_vv_free(&held);
    return rc;
}

int meta_oplog_max_counter(uint64_t *out, struct meta_store *store)
{
    /*
     * Counters are u64 stored with the same bits: one at or above 2^63 reads
     * negative and is then the largest. Both ends of ops_by_ts, no scan.
     */
    static const char sql[] = "SELECT max(counter), min(counter) FROM ops;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        int64_t max = sqlite3_column_int64(stmt, 0), min = sqlite3_column_int64(stmt, 1);
        *out = min < 0 ? (uint64_t)(int64_t)-1 : (uint64_t)max;
        rc = 0;
    } else {
        rc = store_sql_fail(store, rc, "reading the op log");
    }
    sqlite3_reset(stmt);
    return rc;
}

/* ---- checkpoints ---- */

/* Digest of a checkpoint row: BLAKE2b-256 of its name, covered, counter (u64le) and state. */
static int checkpoint_digest(uint8_t out[META_HASH_LEN], const char *name, const void *covered,
                             size_t covered_len, uint64_t counter, const void *state, size_t len)
{
    uint8_t counter_le[8];
    for (int i = 0; i < 8; i++)
        counter_le[i] = (uint8_t)(counter >> (8 * i));
    uint8_t name_len = (uint8_t)strlen(name);
    struct meta_bytes parts[] = {
        {&name_len, 1}, {name, name_len}, {covered, covered_len}, {counter_le, 8}, {state, len},
    };
    return meta_crypto_hash_parts(out, META_HASH_LEN, parts, sizeof(parts) / sizeof(parts[0]));
}

int meta_checkpoint_put(struct meta_store *store, const char *name, const struct crdt_vv *covered,
                        uint64_t counter, const void *state, size_t len)
{
    static const char sql[] =
        "INSERT INTO checkpoints (name, covered, counter, state, digest) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET "
        "covered = excluded.covered, counter = excluded.counter, state = excluded.state, "
        "digest = excluded.digest;";
    if (strlen(name) > 255 || len > (size_t)INT32_MAX)
        return store_fail(store, -EINVAL, "checkpoint name or state too large");
    struct crdt_buf vv = {0};
    crdt_vv_encode(&vv, covered);
    uint8_t digest[META_HASH_LEN];
    int rc = crdt_buf_status(&vv);
    if (rc == 0)
        rc = checkpoint_digest(digest, name, vv.data, vv.len, counter, state, len);
    if (rc) {
        crdt_buf_free(&vv);
        return store_fail(store, rc, "out of memory writing a checkpoint");
    }
    bool own;
    rc = store_single_begin(store, &own);
    sqlite3_stmt *stmt = rc ? NULL : store_stmt(store, sql);
    if (!rc && !stmt)
        rc = -ENOMEM;
    if (!rc) {
        sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(stmt, 2, vv.len ? (const void *)vv.data : "", (int)vv.len, SQLITE_STATIC);
        store_bind_u64(stmt, 3, counter);
        sqlite3_bind_blob(stmt, 4, len ? state : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_blob(stmt, 5, digest, META_HASH_LEN, SQLITE_STATIC);
        rc = store_step_done(store, stmt, "writing a checkpoint");
        rc = store_single_end(store, own, rc);
    }
    crdt_buf_free(&vv);
    return rc;
}

int meta_checkpoint_get(struct meta_checkpoint *out, struct meta_store *store, const char *name)
{
    static const char sql[] =
        "SELECT covered, counter, state, digest FROM checkpoints WHERE name = ?1;";
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(stmt);
        return store_fail(store, -ENOENT, "no checkpoint %s", name);
    }
    if (rc != SQLITE_ROW) {
        rc = store_sql_fail(store, rc, "reading a checkpoint");
        sqlite3_reset(stmt);
        return rc;
    }
    const void *covered = sqlite3_column_blob(stmt, 0);
    size_t covered_len = (size_t)sqlite3_column_bytes(stmt, 0);
    uint64_t counter = store_column_u64(stmt, 1);
    const void *state = sqlite3_column_blob(stmt, 2);
    size_t len = (size_t)sqlite3_column_bytes(stmt, 2);
    uint8_t digest[META_HASH_LEN];
    rc = checkpoint_digest(digest, name, covered, covered_len, counter, state, len);
    if (rc == 0 && (sqlite3_column_bytes(stmt, 3) != META_HASH_LEN ||
                    !meta_crypto_equal(digest, sqlite3_column_blob(stmt, 3), META_HASH_LEN)))
        rc = store_fail(store, -EBADMSG, "checkpoint %s is damaged (its digest does not match)",
                        name);
    if (rc == 0) {
        struct crdt_reader reader;
        crdt_reader_init(&reader, covered, covered_len);
        if (crdt_vv_decode(&reader, &out->covered) != 0 || crdt_reader_left(&reader) != 0)
            rc = store_fail(store, -EBADMSG,
                            "checkpoint %s is damaged (its version vector does not decode)", name);
    }
    if (rc == 0) {
        out->counter = counter;
        out->state_len = len;
        out->state = malloc(len ? len : 1);
        if (!out->state)
            rc = store_fail(store, -ENOMEM, "out of memory reading a checkpoint");
        else if (len)
            memcpy(out->state, state, len);
    }
    sqlite3_reset(stmt);
    if (rc)
        meta_checkpoint_clear(out);
    return rc;
}

void meta_checkpoint_clear(struct meta_checkpoint *cp)
{
    crdt_vv_free(&cp->covered);
    free(cp->state);
    memset(cp, 0, sizeof(*cp));
}
