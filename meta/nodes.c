/* meta/nodes: see nodes.h. */
#include "meta/nodes.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NODE_COLUMNS                                                                               \
    "id, parent, name, kind, mode, uid, gid, rdev, size, mtime_ns, ctime_ns, target, ino, "        \
    "wc_state"

static int valid_node(struct meta_store *store, const struct meta_node *node)
{
    size_t name_len = strnlen(node->name, sizeof(node->name));
    if (name_len > META_NAME_MAX || (node->has_parent && name_len == 0))
        return store_fail(store, -EINVAL, "a node name must be 1 to %d bytes", META_NAME_MAX);
    if (node->kind < META_NODE_FILE || node->kind > META_NODE_SPECIAL)
        return store_fail(store, -EINVAL, "unknown node kind %d", (int)node->kind);
    if (node->wc_state < META_WC_CLEAN || node->wc_state > META_WC_STALE)
        return store_fail(store, -EINVAL, "unknown working-copy state %d", (int)node->wc_state);
    if (node->size > (uint64_t)INT64_MAX || node->ino > (uint64_t)INT64_MAX)
        return store_fail(store, -EINVAL, "node size or inode number out of range");
    return 0;
}

static void bind_attrs(sqlite3_stmt *stmt, const struct meta_node *node)
{
    if (node->has_parent)
        store_bind_id(stmt, 2, &node->parent);
    else
        sqlite3_bind_null(stmt, 2);
    sqlite3_bind_blob(stmt, 3, node->name, (int)strlen(node->name), SQLITE_STATIC);
    sqlite3_bind_int(stmt, 4, (int)node->kind);
    sqlite3_bind_int64(stmt, 5, node->mode);
    sqlite3_bind_int64(stmt, 6, node->uid);
    sqlite3_bind_int64(stmt, 7, node->gid);
    store_bind_u64(stmt, 8, node->rdev);
    store_bind_u64(stmt, 9, node->size);
    sqlite3_bind_int64(stmt, 10, node->mtime_ns);
    sqlite3_bind_int64(stmt, 11, node->ctime_ns);
    if (node->target)
        sqlite3_bind_blob(stmt, 12, node->target, (int)strlen(node->target), SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 12);
}

static int insert(uint64_t *out_ino, struct meta_store *store, const struct meta_node *node)
{
    static const char sql[] = "INSERT INTO nodes (" NODE_COLUMNS ") VALUES "
                              "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14);";
    uint64_t ino;
    int rc = store_take_ino(&ino, store, node->ino);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, &node->id);
    bind_attrs(stmt, node);
    store_bind_u64(stmt, 13, ino);
    sqlite3_bind_int(stmt, 14, (int)node->wc_state);
    rc = store_step_done(store, stmt, "adding a node");
    if (rc == -EEXIST)
        store_fail(store, rc, "node or inode number %llu is taken", (unsigned long long)ino);
    if (rc == 0 && out_ino)
        *out_ino = ino;
    return rc;
}

static int put(uint64_t *out_ino, struct meta_store *store, const struct meta_node *node)
{
    static const char find_sql[] = "SELECT ino FROM nodes WHERE id = ?1;";
    static const char update_sql[] =
        "UPDATE nodes SET parent = ?2, name = ?3, kind = ?4, mode = ?5, uid = ?6, gid = ?7, "
        "rdev = ?8, size = ?9, mtime_ns = ?10, ctime_ns = ?11, target = ?12 WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, find_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, &node->id);
    int rc = sqlite3_step(stmt);
    uint64_t ino = rc == SQLITE_ROW ? store_column_u64(stmt, 0) : 0;
    sqlite3_reset(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_sql_fail(store, rc, "looking up a node");
    if (rc == SQLITE_DONE)
        return insert(out_ino, store, node);
    stmt = store_stmt(store, update_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, &node->id);
    bind_attrs(stmt, node);
    rc = store_step_done(store, stmt, "updating a node");
    if (rc == 0 && out_ino)
        *out_ino = ino;
    return rc;
}

int meta_node_put(uint64_t *out_ino, struct meta_store *store, const struct meta_node *node)
{
    int rc = valid_node(store, node);
    if (rc)
        return rc;
    bool own;
    rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    return store_single_end(store, own, put(out_ino, store, node));
}

int meta_node_insert(uint64_t *out_ino, struct meta_store *store, const struct meta_node *node)
{
    int rc = valid_node(store, node);
    if (rc)
        return rc;
    bool own;
    rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    return store_single_end(store, own, insert(out_ino, store, node));
}

int meta_node_place(struct meta_store *store, const struct meta_id *id,
                    const struct meta_id *parent, const char *name, enum meta_node_kind kind)
{
    static const char sql[] = "UPDATE nodes SET parent = ?2, name = ?3, "
                              "kind = CASE WHEN ?4 = 0 THEN kind ELSE ?4 END WHERE id = ?1;";
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > META_NAME_MAX || (int)kind < 0 || kind > META_NODE_SPECIAL)
        return store_fail(store, -EINVAL, "a node name must be 1 to %d bytes", META_NAME_MAX);
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    store_bind_id(stmt, 1, id);
    store_bind_id(stmt, 2, parent);
    sqlite3_bind_blob(stmt, 3, name, (int)name_len, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 4, (int)kind);
    rc = store_step_done(store, stmt, "placing a node");
    if (rc == 0 && sqlite3_changes(store->db) == 0)
        rc = -ENOENT; /* the caller's question as often as an error: no message */
    return store_single_end(store, own, rc);
}

int meta_node_set_times(struct meta_store *store, const struct meta_id *id, int64_t time_ns)
{
    static const char sql[] = "UPDATE nodes SET mtime_ns = ?2, ctime_ns = ?2 WHERE id = ?1;";
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    store_bind_id(stmt, 1, id);
    sqlite3_bind_int64(stmt, 2, time_ns);
    rc = store_step_done(store, stmt, "setting a node's times");
    if (rc == 0 && sqlite3_changes(store->db) == 0)
        rc = store_fail(store, -ENOENT, "no such node");
    return store_single_end(store, own, rc);
}

int meta_node_ino(uint64_t *out, struct meta_store *store, const struct meta_id *id)
{
    static const char sql[] = "SELECT ino FROM nodes WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, id);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *out = store_column_u64(stmt, 0);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = store_fail(store, -ENOENT, "no such node");
    } else {
        rc = store_sql_fail(store, rc, "reading a node");
    }
    sqlite3_reset(stmt);
    return rc;
}

static int read_node(struct meta_node *out, struct meta_store *store, sqlite3_stmt *stmt)
{
    memset(out, 0, sizeof(*out));
    int rc = store_column_id(&out->id, stmt, 0);
    if (rc == 0 && sqlite3_column_type(stmt, 1) != SQLITE_NULL) {
        out->has_parent = true;
        rc = store_column_id(&out->parent, stmt, 1);
    }
    int name_len = sqlite3_column_bytes(stmt, 2);
    if (rc == 0 && name_len > META_NAME_MAX)
        rc = -EUCLEAN;
    if (rc)
        return store_fail(store, rc, "a node row is damaged");
    if (name_len > 0)
        memcpy(out->name, sqlite3_column_blob(stmt, 2), (size_t)name_len);
    out->name[name_len] = '\0';
    out->kind = (enum meta_node_kind)sqlite3_column_int(stmt, 3);
    out->mode = (uint32_t)sqlite3_column_int64(stmt, 4);
    out->uid = (uint32_t)sqlite3_column_int64(stmt, 5);
    out->gid = (uint32_t)sqlite3_column_int64(stmt, 6);
    out->rdev = store_column_u64(stmt, 7);
    out->size = store_column_u64(stmt, 8);
    out->mtime_ns = sqlite3_column_int64(stmt, 9);
    out->ctime_ns = sqlite3_column_int64(stmt, 10);
    if (sqlite3_column_type(stmt, 11) != SQLITE_NULL) {
        size_t len = (size_t)sqlite3_column_bytes(stmt, 11);
        out->target = malloc(len + 1);
        if (!out->target)
            return -ENOMEM;
        if (len)
            memcpy(out->target, sqlite3_column_blob(stmt, 11), len);
        out->target[len] = '\0';
    }
    out->ino = store_column_u64(stmt, 12);
    out->wc_state = (enum meta_wc_state)sqlite3_column_int(stmt, 13);
    return 0;
}

/* Steps a query expected to give at most one node. */
static int get_one(struct meta_node *out, struct meta_store *store, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = read_node(out, store, stmt);
    else if (rc == SQLITE_DONE)
        rc = store_fail(store, -ENOENT, "no such node");
    else
        rc = store_sql_fail(store, rc, "reading a node");
    sqlite3_reset(stmt);
    return rc;
}

int meta_node_get(struct meta_node *out, struct meta_store *store, const struct meta_id *id)
{
    static const char sql[] = "SELECT " NODE_COLUMNS " FROM nodes WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, id);
    return get_one(out, store, stmt);
}

int meta_node_get_by_ino(struct meta_node *out, struct meta_store *store, uint64_t ino)
{
    static const char sql[] = "SELECT " NODE_COLUMNS " FROM nodes WHERE ino = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, ino);
    return get_one(out, store, stmt);
}

int meta_node_lookup(struct meta_node *out, struct meta_store *store, const struct meta_id *parent,
                     const char *name)
{
    static const char sql[] = "SELECT " NODE_COLUMNS " FROM nodes "
                              "WHERE parent = ?1 AND name = ?2 ORDER BY id LIMIT 1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, parent);
    sqlite3_bind_blob(stmt, 2, name, (int)strlen(name), SQLITE_STATIC);
    return get_one(out, store, stmt);
}

int meta_node_list(struct meta_node **out, size_t *out_len, struct meta_store *store,
                   const struct meta_id *parent)
{
    static const char sql[] = "SELECT " NODE_COLUMNS " FROM nodes "
                              "WHERE parent = ?1 ORDER BY name, id;";
    *out = NULL;
    *out_len = 0;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, parent);
    struct meta_node *nodes = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_node *grown = store_grow(nodes, &cap, len, sizeof(*grown));
        if (!grown) {
            rc = -ENOMEM;
            goto fail;
        }
        nodes = grown;
        rc = read_node(&nodes[len], store, stmt);
        len++; /* counted even on failure so its target is freed below */
        if (rc)
            goto fail;
    }
    if (step != SQLITE_DONE) {
        rc = store_sql_fail(store, step, "listing a directory");
        goto fail;
    }
    sqlite3_reset(stmt);
    *out = nodes;
    *out_len = len;
    return 0;
fail:
    sqlite3_reset(stmt);
    meta_node_list_free(nodes, len);
    return rc;
}

int meta_node_list_wc(struct meta_id **out, size_t *out_len, struct meta_store *store,
                      enum meta_wc_state state)
{
    static const char sql[] = "SELECT id FROM nodes WHERE wc_state = ?1 ORDER BY id;";
    /* With `!= 0` spelled out the planner may use the partial index (a scan of all nodes else). */
    static const char unclean_sql[] =
        "SELECT id FROM nodes WHERE wc_state = ?1 AND wc_state != 0 ORDER BY id;";
    *out = NULL;
    *out_len = 0;
    sqlite3_stmt *stmt = store_stmt(store, state == META_WC_CLEAN ? sql : unclean_sql);
    if (!stmt)
        return -ENOMEM;
    sqlite3_bind_int(stmt, 1, (int)state);
    struct meta_id *ids = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_id *grown = store_grow(ids, &cap, len, sizeof(*grown));
        if (!grown) {
            rc = -ENOMEM;
            goto fail;
        }
        ids = grown;
        rc = store_column_id(&ids[len++], stmt, 0);
        if (rc)
            goto fail;
    }
    if (step != SQLITE_DONE) {
        rc = store_sql_fail(store, step, "listing working copies");
        goto fail;
    }
    sqlite3_reset(stmt);
    *out = ids;
    *out_len = len;
    return 0;
fail:
    sqlite3_reset(stmt);
    free(ids);
    return rc;
}

int meta_node_delete(struct meta_store *store, const struct meta_id *id)
{
    static const char sql[] = "DELETE FROM nodes WHERE id = ?1;";
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    store_bind_id(stmt, 1, id);
    rc = store_step_done(store, stmt, "removing a node");
    if (rc == 0 && sqlite3_changes(store->db) == 0)
        rc = store_fail(store, -ENOENT, "no such node");
    return store_single_end(store, own, rc);
}

void meta_node_clear(struct meta_node *node)
{
    free(node->target);
    node->target = NULL;
}

void meta_node_list_free(struct meta_node *nodes, size_t len)
{
    for (size_t i = 0; i < len; i++)
        meta_node_clear(&nodes[i]);
    free(nodes);
}

/* ---- xattrs ---- */

static int xattr_set(bool *out_applied, struct meta_store *store, const struct meta_id *node,
                     const char *name, const void *value, size_t value_len, struct crdt_ts ts)
{
    static const char find_sql[] =
        "SELECT ts_counter, ts_replica FROM xattrs WHERE node = ?1 AND name = ?2;";
    static const char put_sql[] =
        "INSERT INTO xattrs (node, name, value, ts_counter, ts_replica) "
        "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (node, name) DO UPDATE SET "
        "value = excluded.value, ts_counter = excluded.ts_counter, "
        "ts_replica = excluded.ts_replica;";
    sqlite3_stmt *stmt = store_stmt(store, find_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    bool newer = true;
    if (rc == SQLITE_ROW) {
        struct crdt_ts stored = {store_column_u64(stmt, 0), store_column_u64(stmt, 1)};
        newer = crdt_ts_cmp(ts, stored) > 0;
    }
    sqlite3_reset(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_sql_fail(store, rc, "reading an xattr");
    if (out_applied)
        *out_applied = newer;
    if (!newer)
        return 0;
    stmt = store_stmt(store, put_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
    if (value)
        sqlite3_bind_blob(stmt, 3, value_len ? value : "", (int)value_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 3);
    store_bind_u64(stmt, 4, ts.counter);
    store_bind_u64(stmt, 5, ts.replica);
    rc = store_step_done(store, stmt, "writing an xattr");
    if (rc == -ENOENT)
        store_fail(store, rc, "no such node");
    return rc;
}

int meta_xattr_set(bool *out_applied, struct meta_store *store, const struct meta_id *node,
                   const char *name, const void *value, size_t value_len, struct crdt_ts ts)
{
    if (!name[0] || value_len > (size_t)INT32_MAX)
        return store_fail(store, -EINVAL, "bad xattr name or size");
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    return store_single_end(store, own,
                            xattr_set(out_applied, store, node, name, value, value_len, ts));
}

static int copy_blob(uint8_t **out, size_t *out_len, sqlite3_stmt *stmt, int column)
{
    size_t len = (size_t)sqlite3_column_bytes(stmt, column);
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    if (len)
        memcpy(copy, sqlite3_column_blob(stmt, column), len);
    *out = copy;
    *out_len = len;
    return 0;
}

int meta_xattr_get(uint8_t **out, size_t *out_len, struct meta_store *store,
                   const struct meta_id *node, const char *name)
{
    static const char sql[] =
        "SELECT value FROM xattrs WHERE node = ?1 AND name = ?2 AND value IS NOT NULL;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = copy_blob(out, out_len, stmt, 0);
    else if (rc == SQLITE_DONE)
        rc = store_fail(store, -ENODATA, "no xattr %s", name);
    else
        rc = store_sql_fail(store, rc, "reading an xattr");
    sqlite3_reset(stmt);
    return rc;
}

int meta_xattr_list(struct meta_xattr **out, size_t *out_len, struct meta_store *store,
                    const struct meta_id *node)
{
    static const char sql[] = "SELECT name, value, ts_counter, ts_replica FROM xattrs "
                              "WHERE node = ?1 AND value IS NOT NULL ORDER BY name;";
    *out = NULL;
    *out_len = 0;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    struct meta_xattr *xattrs = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_xattr *grown = store_grow(xattrs, &cap, len, sizeof(*grown));
        if (!grown) {
            rc = -ENOMEM;
            goto fail;
        }
        xattrs = grown;
        struct meta_xattr *xattr = &xattrs[len++];
        memset(xattr, 0, sizeof(*xattr));
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        xattr->name = strdup(name ? name : "");
        xattr->ts.counter = store_column_u64(stmt, 2);
        xattr->ts.replica = store_column_u64(stmt, 3);
        if (!xattr->name || copy_blob(&xattr->value, &xattr->value_len, stmt, 1) != 0) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    if (step != SQLITE_DONE) {
        rc = store_sql_fail(store, step, "listing xattrs");
        goto fail;
    }
    sqlite3_reset(stmt);
    *out = xattrs;
    *out_len = len;
    return 0;
fail:
    sqlite3_reset(stmt);
    meta_xattr_list_free(xattrs, len);
    return rc;
}

void meta_xattr_list_free(struct meta_xattr *xattrs, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        free(xattrs[i].name);
        free(xattrs[i].value);
    }
    free(xattrs);
}

/* ---- text states ---- */

static int text_put(struct meta_store *store, const struct meta_id *node, const void *state,
                    size_t len, const struct crdt_vv *covered)
{
    static const char sql[] =
        "INSERT INTO text_states (node, state, covered) VALUES (?1, ?2, ?3) "
        "ON CONFLICT (node) DO UPDATE SET state = excluded.state, covered = excluded.covered;";
    if (len > (size_t)INT32_MAX)
        return store_fail(store, -EFBIG, "text state too large");
    struct crdt_buf vv = {0};
    if (covered) {
        crdt_vv_encode(&vv, covered);
        if (crdt_buf_status(&vv)) {
            crdt_buf_free(&vv);
            return store_fail(store, -ENOMEM, "out of memory");
        }
    }
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc) {
        crdt_buf_free(&vv);
        return rc;
    }
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt) {
        crdt_buf_free(&vv);
        return store_single_end(store, own, -ENOMEM);
    }
    store_bind_id(stmt, 1, node);
    sqlite3_bind_blob(stmt, 2, len ? state : "", (int)len, SQLITE_STATIC);
    if (covered)
        sqlite3_bind_blob(stmt, 3, vv.len ? (const void *)vv.data : "", (int)vv.len, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 3);
    rc = store_step_done(store, stmt, "writing a text state");
    crdt_buf_free(&vv);
    if (rc == -ENOENT)
        store_fail(store, rc, "no such node");
    return store_single_end(store, own, rc);
}

int meta_text_put(struct meta_store *store, const struct meta_id *node, const void *state,
                  size_t len)
{
    return text_put(store, node, state, len, NULL);
}

int meta_text_put_covered(struct meta_store *store, const struct meta_id *node, const void *state,
                          size_t len, const struct crdt_vv *covered)
{
    return text_put(store, node, state, len, covered);
}

int meta_text_get_covered(uint8_t **out, size_t *out_len, struct crdt_vv *out_covered,
                          bool *out_complete, struct meta_store *store, const struct meta_id *node)
{
    static const char sql[] = "SELECT state, covered FROM text_states WHERE node = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        bool complete = sqlite3_column_type(stmt, 1) == SQLITE_NULL;
        rc = 0;
        if (out_covered) {
            memset(out_covered, 0, sizeof(*out_covered));
            struct crdt_reader reader;
            crdt_reader_init(&reader, sqlite3_column_blob(stmt, 1),
                             (size_t)sqlite3_column_bytes(stmt, 1));
            if (!complete &&
                (crdt_vv_decode(&reader, out_covered) != 0 || crdt_reader_left(&reader) != 0)) {
                crdt_vv_free(out_covered);
                rc = store_fail(store, -EUCLEAN, "a text state's version vector is damaged");
            }
        }
        if (out_complete)
            *out_complete = complete;
        if (rc == 0 && out)
            rc = copy_blob(out, out_len, stmt, 0);
        if (rc && out_covered)
            crdt_vv_free(out_covered);
    } else if (rc == SQLITE_DONE) {
        rc = store_fail(store, -ENOENT, "no text state for this node");
    } else {
        rc = store_sql_fail(store, rc, "reading a text state");
    }
    sqlite3_reset(stmt);
    return rc;
}

int meta_text_get(uint8_t **out, size_t *out_len, struct meta_store *store,
                  const struct meta_id *node)
{
    return meta_text_get_covered(out, out_len, NULL, NULL, store, node);
}
