/* meta/nodes: see nodes.h. */
#include "meta/nodes.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NODE_COLUMNS                                                                               \
    "id, parent, name, kind, mode, uid, gid, rdev, size, mtime_ns, ctime_ns, target, ino, "        \
    "wc_state, attr_ts, moved_counter, moved_replica, deleted_saw_counter, deleted_saw_replica, "  \
    "edited_counter, edited_replica, pinned"

/*
 * The attr_ts column (README "Schema"): varint count, then per group u8
 * field mask, varint counter (>= 1), varint replica: the fields of the mask
 * were set by the op with that timestamp. Masks are non-empty, disjoint and
 * within the field bits; groups ascend by timestamp, so each set of stamps
 * has one encoding. No stamp at all is NULL.
 */
void attr_ts_encode(struct crdt_buf *buf, const struct crdt_ts ts[META_ATTR_FIELDS])
{
    struct crdt_ts groups[META_ATTR_FIELDS];
    uint8_t masks[META_ATTR_FIELDS];
    size_t count = 0;
    for (int field = 0; field < META_ATTR_FIELDS; field++) {
        if (ts[field].counter == 0)
            continue;
        size_t at = 0;
        while (at < count && crdt_ts_cmp(groups[at], ts[field]) < 0)
            at++;
        if (at < count && crdt_ts_cmp(groups[at], ts[field]) == 0) {
            masks[at] |= (uint8_t)(1u << field);
            continue;
        }
        memmove(&groups[at + 1], &groups[at], (count - at) * sizeof(groups[0]));
        memmove(&masks[at + 1], &masks[at], count - at);
        groups[at] = ts[field];
        masks[at] = (uint8_t)(1u << field);
        count++;
    }
    crdt_buf_put_varint(buf, count);
    for (size_t i = 0; i < count; i++) {
        crdt_buf_put_u8(buf, masks[i]);
        crdt_ts_encode(buf, groups[i]);
    }
}

int attr_ts_decode(struct crdt_ts out[META_ATTR_FIELDS], const void *data, size_t len)
{
    memset(out, 0, META_ATTR_FIELDS * sizeof(*out));
    struct crdt_reader reader;
    crdt_reader_init(&reader, data, len);
    uint64_t count;
    unsigned seen = 0;
    struct crdt_ts previous = {0, 0};
    int rc = crdt_reader_varint_max(&reader, META_ATTR_FIELDS, &count);
    for (uint64_t i = 0; !rc && i < count; i++) {
        uint8_t mask;
        struct crdt_ts ts;
        if ((rc = crdt_reader_u8(&reader, &mask)) || (rc = crdt_ts_decode(&reader, &ts)))
            break;
        if (mask == 0 || mask >> META_ATTR_FIELDS || (mask & seen) || ts.counter == 0 ||
            crdt_ts_cmp(ts, previous) <= 0)
            return -EBADMSG;
        seen |= mask;
        previous = ts;
        for (int field = 0; field < META_ATTR_FIELDS; field++)
            if (mask & (1u << field))
                out[field] = ts;
    }
    return rc ? rc : crdt_reader_left(&reader) ? -EBADMSG : 0;
}

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
    struct crdt_buf stamps = {0};
    attr_ts_encode(&stamps, node->attr_ts);
    if (crdt_buf_status(&stamps) == 0 && stamps.len > 1)
        sqlite3_bind_blob(stmt, 15, stamps.data, (int)stamps.len, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt,
                          15); /* no stamps (out of memory too: then any op wins, as before) */
    crdt_buf_free(&stamps);
}

/* Binds a timestamp as two columns' values. */
static void bind_ts(sqlite3_stmt *stmt, int index, struct crdt_ts ts)
{
    store_bind_u64(stmt, index, ts.counter);
    store_bind_u64(stmt, index + 1, ts.replica);
}

static struct crdt_ts column_ts(sqlite3_stmt *stmt, int index)
{
    return (struct crdt_ts){store_column_u64(stmt, index), store_column_u64(stmt, index + 1)};
}

static int insert(uint64_t *out_ino, struct meta_store *store, const struct meta_node *node)
{
    static const char sql[] = "INSERT INTO nodes (" NODE_COLUMNS ") VALUES "
                              "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                              "?16, ?17, ?18, ?19, ?20, ?21, ?22);";
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
    bind_ts(stmt, 16, node->moved);
    if (node->deleted)
        bind_ts(stmt, 18, node->deleted_saw);
    bind_ts(stmt, 20, node->edited);
    sqlite3_bind_int(stmt, 22, (int)node->pinned);
    rc = store_step_done(store, stmt, "adding a node");
    if (rc == -EEXIST)
        store_fail(store, rc, "node or inode number %llu is taken", (unsigned long long)ino);
    if (rc == 0 && out_ino)
        *out_ino = ino;
    return rc;
}

static int put(uint64_t *out_ino, struct meta_store *store, const struct meta_node *node)
{
    /* Nearly every put updates a row that exists: try that first, one statement. */
    static const char update_sql[] =
        "UPDATE nodes SET parent = ?2, name = ?3, kind = ?4, mode = ?5, uid = ?6, gid = ?7, "
        "rdev = ?8, size = ?9, mtime_ns = ?10, ctime_ns = ?11, target = ?12, attr_ts = ?15 "
        "WHERE id = ?1 RETURNING ino;";
    sqlite3_stmt *stmt = store_stmt(store, update_sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, &node->id);
    bind_attrs(stmt, node);
    int rc = sqlite3_step(stmt);
    bool found = rc == SQLITE_ROW;
    uint64_t ino = found ? store_column_u64(stmt, 0) : 0;
    if (found)
        rc = sqlite3_step(stmt); /* the update is done once the statement is */
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE)
        return store_sql_fail(store, rc, "updating a node");
    if (!found)
        return insert(out_ino, store, node);
    if (out_ino)
        *out_ino = ino;
    return 0;
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
    if (sqlite3_column_type(stmt, 14) != SQLITE_NULL &&
        attr_ts_decode(out->attr_ts, sqlite3_column_blob(stmt, 14),
                       (size_t)sqlite3_column_bytes(stmt, 14)) != 0)
        return store_fail(store, -EUCLEAN, "a node's attribute timestamps are damaged");
    out->moved = column_ts(stmt, 15);
    out->deleted = sqlite3_column_type(stmt, 17) != SQLITE_NULL;
    if (out->deleted)
        out->deleted_saw = column_ts(stmt, 17);
    out->edited = column_ts(stmt, 19);
    out->pinned = (enum meta_pin)sqlite3_column_int(stmt, 21);
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

/* Runs a one-row UPDATE of node `id` whose ?1 is the id and the rest bound by `bind`. */
static int update_one(struct meta_store *store, const char *sql, const struct meta_id *id,
                      void (*bind)(sqlite3_stmt *stmt, const void *arg), const void *arg,
                      const char *what)
{
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    store_bind_id(stmt, 1, id);
    bind(stmt, arg);
    rc = store_step_done(store, stmt, what);
    if (rc == 0 && sqlite3_changes(store->db) == 0)
        rc = store_fail(store, -ENOENT, "no such node");
    return store_single_end(store, own, rc);
}

int meta_node_note_move(struct meta_node_moved *out, struct meta_store *store,
                        const struct meta_id *id, struct crdt_ts moved, bool deleted,
                        struct crdt_ts saw)
{
    /*
     * One statement: the newer-than test is in SQL (counters are below 2^63,
     * replicas compare unsigned: a negative one is the larger), and the row
     * hands back what the caller decides the pin with.
     */
    static const char sql[] =
        "UPDATE nodes SET moved_counter = ?2, moved_replica = ?3, deleted_saw_counter = ?4, "
        "deleted_saw_replica = ?5 WHERE id = ?1 AND (moved_counter < ?2 OR (moved_counter = ?2 "
        "AND ((moved_replica < 0) < (?3 < 0) OR ((moved_replica < 0) = (?3 < 0) AND "
        "moved_replica < ?3)))) RETURNING edited_counter, edited_replica, pinned;";
    memset(out, 0, sizeof(*out));
    bool own;
    int rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return store_single_end(store, own, -ENOMEM);
    store_bind_id(stmt, 1, id);
    bind_ts(stmt, 2, moved);
    if (deleted)
        bind_ts(stmt, 4, saw); /* else NULL, as bindings start: not a delete */
    int step = sqlite3_step(stmt);
    if (step == SQLITE_ROW) {
        out->newer = true;
        out->edited = column_ts(stmt, 0);
        out->pinned = (enum meta_pin)sqlite3_column_int(stmt, 2);
        step = sqlite3_step(stmt);
    }
    sqlite3_reset(stmt);
    if (step != SQLITE_DONE)
        rc = store_sql_fail(store, step, "recording a node's newest move");
    return store_single_end(store, own, rc);
}

static void bind_edited(sqlite3_stmt *stmt, const void *arg)
{
    bind_ts(stmt, 2, *(const struct crdt_ts *)arg);
}

int meta_node_set_edited(struct meta_store *store, const struct meta_id *id, struct crdt_ts edited)
{
    static const char sql[] =
        "UPDATE nodes SET edited_counter = ?2, edited_replica = ?3 WHERE id = ?1;";
    return update_one(store, sql, id, bind_edited, &edited, "recording a node's newest edit");
}

static void bind_pinned(sqlite3_stmt *stmt, const void *arg)
{
    sqlite3_bind_int(stmt, 2, (int)*(const enum meta_pin *)arg);
}

int meta_node_set_pinned(struct meta_store *store, const struct meta_id *id, enum meta_pin pinned)
{
    static const char sql[] = "UPDATE nodes SET pinned = ?2 WHERE id = ?1;";
    if ((int)pinned < META_PIN_NONE || pinned > META_PIN_CLEARED)
        return store_fail(store, -EINVAL, "unknown pin %d", (int)pinned);
    return update_one(store, sql, id, bind_pinned, &pinned, "pinning a node");
}

int meta_node_list_pins(struct meta_pin_entry **out, size_t *out_len, struct meta_store *store)
{
    /* Through the partial index (a scan of every node else): pins are rare. */
    static const char sql[] =
        "SELECT id, pinned FROM nodes INDEXED BY nodes_by_pinned WHERE pinned != 0;";
    *out = NULL;
    *out_len = 0;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    struct meta_pin_entry *pins = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_pin_entry *grown = store_grow(pins, &cap, len, sizeof(*grown));
        if (!grown) {
            rc = -ENOMEM;
            goto fail;
        }
        pins = grown;
        pins[len].pinned = (enum meta_pin)sqlite3_column_int(stmt, 1);
        if ((rc = store_column_id(&pins[len++].id, stmt, 0)))
            goto fail;
    }
    if (step != SQLITE_DONE) {
        rc = store_sql_fail(store, step, "listing pinned nodes");
        goto fail;
    }
    sqlite3_reset(stmt);
    *out = pins;
    *out_len = len;
    return 0;
fail:
    sqlite3_reset(stmt);
    free(pins);
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

static bool is_security_name(const char *name)
{
    return !strncmp(name, "security.", 9);
}

bool meta_xattr_maybe(struct meta_store *store, const char *name)
{
    static const char sql[] = "SELECT EXISTS (SELECT 1 FROM xattrs "
                              "WHERE name >= 'security.' AND name < 'security/');";
    if (!is_security_name(name))
        return true;
    if (store->security_xattrs == 0) {
        /* Once per open: a scan of the xattrs table, which is small in every share we know. */
        sqlite3_stmt *stmt = store_stmt(store, sql);
        if (!stmt)
            return true;
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
            store->security_xattrs = sqlite3_column_int(stmt, 0) ? 2 : 1;
        sqlite3_reset(stmt);
    }
    return store->security_xattrs != 1;
}

int meta_xattr_set(bool *out_applied, struct meta_store *store, const struct meta_id *node,
                   const char *name, const void *value, size_t value_len, struct crdt_ts ts)
{
    if (!name[0] || value_len > (size_t)INT32_MAX)
        return store_fail(store, -EINVAL, "bad xattr name or size");
    if (is_security_name(name))
        store->security_xattrs = 2;
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
