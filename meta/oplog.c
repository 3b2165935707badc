/* meta/oplog: see oplog.h. */
#include "meta/oplog.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int vv_get(uint64_t *out, struct meta_store *store, uint64_t replica)
{
    static const char sql[] = "SELECT seq FROM vv WHERE replica = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, replica);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *out = store_column_u64(stmt, 0);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        *out = 0;
        rc = 0;
    } else {
        rc = store_sql_fail(store, rc, "reading the version vector");
    }
    sqlite3_reset(stmt);
    return rc;
}

static int append(struct meta_store *store, const struct meta_op *op)
{
    static const char insert_sql[] =
        "INSERT INTO ops (replica, seq, counter, kind, node, author, body) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7);";
    static const char vv_sql[] = "INSERT INTO vv (replica, seq) VALUES (?1, ?2) "
                                 "ON CONFLICT (replica) DO UPDATE SET seq = excluded.seq;";
    uint64_t held = 0;
    int rc = vv_get(&held, store, op->replica);
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
    if (rc)
        return rc;
    stmt = store_stmt(store, vv_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, op->replica);
    store_bind_u64(stmt, 2, op->seq);
    return store_step_done(store, stmt, "raising the version vector");
}

int meta_oplog_append(struct meta_store *store, const struct meta_op *op)
{
    if (op->seq == 0 || op->counter == 0 || op->kind < META_OP_TREE || op->kind > META_OP_ATTR ||
        op->body_len > (size_t)INT32_MAX || op->seq > (uint64_t)INT64_MAX)
        return store_fail(store, -EINVAL, "malformed op (seq, counter, kind or size)");
    int rc = store_save_begin(store);
    if (rc)
        return rc;
    return store_save_end(store, append(store, op));
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
            rc = store_fail(store, rc, "op (%016llx, %llu) is damaged", (unsigned long long)replica,
                            (unsigned long long)seq);
        }
    } else if (rc == SQLITE_DONE) {
        rc = store_fail(store, -ENOENT, "no op (%016llx, %llu)", (unsigned long long)replica,
                        (unsigned long long)seq);
    } else {
        rc = store_sql_fail(store, rc, "reading an op");
    }
    sqlite3_reset(stmt);
    return rc;
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
    static const char sql[] = "SELECT replica, seq FROM vv;";
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
