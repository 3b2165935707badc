/* meta/version: see version.h. */
#include "meta/version.h"
#include "internal.h"
#include "meta/nodes.h"
#include "meta/wcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Newest first by timestamp: counter, then replica as an unsigned number.
 * Replicas are stored as signed integers with the same bits (schema.c), and
 * the unsigned order of those bits is: negatives (high bit set) above
 * non-negatives, each group in signed order.
 */
#define NEWEST_FIRST "ts_counter DESC, (ts_replica < 0) DESC, ts_replica DESC"

#define READ_BUF_LEN (64 * 1024) /* under malloc's mmap threshold: no page faults per commit */

/* ---- chunks ---- */

static int chunk_insert(struct meta_store *store, const uint8_t *id, const void *data, size_t len)
{
    static const char sql[] = "INSERT OR IGNORE INTO chunks (id, size, data) VALUES (?1, ?2, ?3);";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    sqlite3_bind_blob(stmt, 1, id, META_HASH_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)len);
    sqlite3_bind_blob(stmt, 3, len ? data : "", (int)len, SQLITE_STATIC);
    return store_step_done(store, stmt, "storing a chunk");
}

int meta_chunk_put(struct meta_store *store, const uint8_t id[META_HASH_LEN], const void *data,
                   size_t len)
{
    uint8_t actual[META_HASH_LEN];
    if (len == 0 || len > META_CHUNK_MAX)
        return store_fail(store, -EINVAL, "a chunk holds 1 to %u bytes", META_CHUNK_MAX);
    int rc = meta_store_chunk_id(actual, store, data, len);
    if (rc)
        return store_fail(store, rc, "hashing a chunk");
    if (!meta_crypto_equal(actual, id, META_HASH_LEN))
        return store_fail(store, -EBADMSG, "a chunk's content does not match its id");
    bool own;
    rc = store_single_begin(store, &own);
    if (rc)
        return rc;
    return store_single_end(store, own, chunk_insert(store, id, data, len));
}

int meta_chunk_get(uint8_t **out, size_t *out_len, struct meta_store *store,
                   const uint8_t id[META_HASH_LEN])
{
    static const char sql[] = "SELECT data FROM chunks WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    sqlite3_bind_blob(stmt, 1, id, META_HASH_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        size_t len = (size_t)sqlite3_column_bytes(stmt, 0);
        *out = malloc(len ? len : 1);
        if (*out) {
            memcpy(*out, sqlite3_column_blob(stmt, 0), len);
            *out_len = len;
            rc = 0;
        } else {
            rc = -ENOMEM;
        }
    } else if (rc == SQLITE_DONE) {
        rc = store_fail(store, -ENOENT, "no such chunk");
    } else {
        rc = store_sql_fail(store, rc, "reading a chunk");
    }
    sqlite3_reset(stmt);
    return rc;
}

int meta_chunk_has(bool *out, struct meta_store *store, const uint8_t id[META_HASH_LEN])
{
    static const char sql[] = "SELECT 1 FROM chunks WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    sqlite3_bind_blob(stmt, 1, id, META_HASH_LEN, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    *out = rc == SQLITE_ROW;
    sqlite3_reset(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_sql_fail(store, rc, "looking up a chunk");
    return 0;
}

/* ---- chunk indexes (chunk.h, README "Chunk indexes") ---- */

/* Marks chunk `id` live for GC (index chunks are not in any version's list). */
typedef int (*index_mark_fn)(void *ctx, const uint8_t id[META_HASH_LEN]);

/*
 * One level of the index over `list`: its index chunks (stored when `put`;
 * else `mark`ed), whose refs are appended to *next.
 */
static int index_level(struct meta_chunk_list *next, struct meta_store *store,
                       const struct meta_chunk_list *list, bool put, index_mark_fn mark, void *ctx)
{
    struct meta_chunk_list part = {0};
    int rc = 0;
    for (size_t i = 0; !rc && i < list->len; i++) {
        rc = meta_chunk_list_add(&part, list->refs[i].id, list->refs[i].len);
        if (rc || !(meta_chunk_index_cut(list->refs[i].id) || part.len == META_CHUNK_INDEX_MAX ||
                    i + 1 == list->len))
            continue;
        struct crdt_buf buf = {0};
        meta_chunk_list_encode(&buf, &part);
        uint8_t id[META_HASH_LEN];
        rc = crdt_buf_status(&buf);
        if (!rc)
            rc = meta_store_chunk_id(id, store, buf.data, buf.len);
        if (!rc)
            rc = put ? meta_chunk_put(store, id, buf.data, buf.len) : mark(ctx, id);
        if (!rc)
            rc = meta_chunk_list_add(next, id, (uint32_t)buf.len);
        crdt_buf_free(&buf);
        part.len = 0;
        part.total = 0;
    }
    meta_chunk_list_free(&part);
    return rc;
}

/* The index over `list` (see meta_chunk_index_build), stored or only marked. */
static int index_walk(struct meta_chunk_list *root, uint8_t *levels, struct meta_store *store,
                      const struct meta_chunk_list *list, bool put, index_mark_fn mark, void *ctx)
{
    struct meta_chunk_list cur = {0};
    int rc = 0;
    for (size_t i = 0; !rc && i < list->len; i++)
        rc = meta_chunk_list_add(&cur, list->refs[i].id, list->refs[i].len);
    *levels = 0;
    while (!rc && cur.len > META_CHUNK_INDEX_FANOUT && *levels < META_CHUNK_INDEX_LEVELS) {
        struct meta_chunk_list next = {0};
        rc = index_level(&next, store, &cur, put, mark, ctx);
        meta_chunk_list_free(&cur);
        cur = next;
        ++*levels;
    }
    if (rc)
        meta_chunk_list_free(&cur);
    if (root)
        *root = cur;
    else
        meta_chunk_list_free(&cur);
    return rc;
}

int meta_chunk_index_build(struct meta_chunk_list *root, uint8_t *levels, struct meta_store *store,
                           const struct meta_chunk_list *list)
{
    int rc = index_walk(root, levels, store, list, true, NULL, NULL);
    return rc == -ENOMEM || !rc ? rc : store_fail(store, rc, "storing a chunk index");
}

int meta_chunk_index_expand(struct meta_chunk_list *out, struct meta_store *store,
                            const struct meta_chunk_list *root, uint8_t levels,
                            meta_index_visit_fn visit, void *ctx)
{
    memset(out, 0, sizeof(*out));
    if (levels > META_CHUNK_INDEX_LEVELS)
        return store_fail(store, -EBADMSG, "a chunk index has %u levels", levels);
    struct meta_chunk_list cur = {0};
    int rc = 0;
    for (size_t i = 0; !rc && i < root->len; i++)
        rc = meta_chunk_list_add(&cur, root->refs[i].id, root->refs[i].len);
    for (uint8_t level = 0; !rc && level < levels; level++) {
        struct meta_chunk_list next = {0};
        bool missing = false;
        for (size_t i = 0; !rc && i < cur.len; i++) {
            uint8_t *data = NULL;
            size_t len = 0;
            rc = meta_chunk_get(&data, &len, store, cur.refs[i].id);
            bool here = rc == 0;
            if (rc == -ENOENT) {
                missing = true;
                rc = 0;
            }
            if (!rc && visit)
                rc = visit(ctx, cur.refs[i].id, here);
            struct meta_chunk_list part = {0};
            if (!rc && here && (rc = meta_chunk_list_decode(&part, data, len)) == -EBADMSG)
                rc = store_fail(store, -EBADMSG, "an index chunk does not hold a chunk list");
            for (size_t k = 0; !rc && here && k < part.len; k++)
                rc = meta_chunk_list_add(&next, part.refs[k].id, part.refs[k].len);
            meta_chunk_list_free(&part);
            free(data);
        }
        meta_chunk_list_free(&cur);
        cur = next;
        if (!rc && missing)
            rc = -ENOENT;
    }
    if (rc)
        meta_chunk_list_free(&cur);
    else
        *out = cur;
    return rc;
}

struct gc_mark {
    struct meta_store *store;
    sqlite3_stmt *stmt;
};

static int gc_mark_id(void *ctx, const uint8_t id[META_HASH_LEN])
{
    struct gc_mark *mark = ctx;
    sqlite3_reset(mark->stmt);
    sqlite3_bind_blob(mark->stmt, 1, id, META_HASH_LEN, SQLITE_STATIC);
    return store_step_done(mark->store, mark->stmt, "marking chunks");
}

/*
 * Mark: every chunk id of every version's list goes into a temp table.
 * Sweep: chunks not in it are deleted. A list that fails to decode stops the
 * GC before anything is deleted: marking must be complete or the sweep would
 * delete live chunks.
 */
static int gc(uint64_t *out_removed, struct meta_store *store)
{
    static const char versions_sql[] = "SELECT chunks FROM versions;";
    static const char mark_sql[] = "INSERT OR IGNORE INTO temp.marks (id) VALUES (?1);";
    static const char sweep_sql[] =
        "DELETE FROM chunks WHERE id NOT IN (SELECT id FROM temp.marks);";
    int rc = sqlite3_exec(store->db,
                          "CREATE TEMP TABLE IF NOT EXISTS marks (id BLOB PRIMARY KEY) "
                          "WITHOUT ROWID; DELETE FROM temp.marks;",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store_sql_fail(store, rc, "starting chunk GC");
    sqlite3_stmt *versions = store_stmt(store, versions_sql);
    sqlite3_stmt *mark = store_stmt(store, mark_sql);
    if (!versions || !mark)
        return -ENOMEM;
    int step;
    while ((step = sqlite3_step(versions)) == SQLITE_ROW) {
        struct meta_chunk_list list;
        rc = meta_chunk_list_decode(&list, sqlite3_column_blob(versions, 0),
                                    (size_t)sqlite3_column_bytes(versions, 0));
        if (rc) {
            sqlite3_reset(versions);
            return store_fail(store, rc == -EBADMSG ? -EUCLEAN : rc,
                              "chunk GC stopped, nothing deleted: a version's chunk list is "
                              "damaged");
        }
        struct gc_mark marker = {store, mark};
        for (size_t i = 0; i < list.len && rc == 0; i++)
            rc = gc_mark_id(&marker, list.refs[i].id);
        /* A big version's index chunks: the op names them, peers may ask for them. */
        uint8_t levels;
        if (!rc && list.len > META_CHUNK_INDEX_FANOUT)
            rc = index_walk(NULL, &levels, store, &list, false, gc_mark_id, &marker);
        meta_chunk_list_free(&list);
        if (rc) {
            sqlite3_reset(versions);
            return rc;
        }
    }
    sqlite3_reset(versions);
    if (step != SQLITE_DONE)
        return store_sql_fail(store, step, "reading versions for GC");
    sqlite3_stmt *sweep = store_stmt(store, sweep_sql);
    if (!sweep)
        return -ENOMEM;
    rc = store_step_done(store, sweep, "deleting unreferenced chunks");
    if (rc)
        return rc;
    if (out_removed)
        *out_removed = (uint64_t)sqlite3_changes64(store->db);
    rc = sqlite3_exec(store->db, "DELETE FROM temp.marks;", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : store_sql_fail(store, rc, "finishing chunk GC");
}

int meta_chunk_gc(uint64_t *out_removed, struct meta_store *store)
{
    int rc = store_save_begin(store);
    if (rc)
        return rc;
    return store_save_end(store, gc(out_removed, store));
}

/* ---- versions ---- */

static int newest(struct crdt_ts *out, struct meta_store *store, const struct meta_id *node);

static int insert_version(struct meta_store *store, const struct meta_version *version,
                          const struct meta_chunk_list *chunks)
{
    static const char sql[] =
        "INSERT INTO versions (node, ts_counter, ts_replica, author, time_ns, size, chunks) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7);";
    struct crdt_buf buf = {0};
    meta_chunk_list_encode(&buf, chunks);
    int rc = crdt_buf_status(&buf);
    if (rc) {
        crdt_buf_free(&buf);
        return store_fail(store, rc, "out of memory encoding a chunk list");
    }
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt) {
        crdt_buf_free(&buf);
        return -ENOMEM;
    }
    store_bind_id(stmt, 1, &version->node);
    store_bind_u64(stmt, 2, version->ts.counter);
    store_bind_u64(stmt, 3, version->ts.replica);
    store_bind_u64(stmt, 4, version->author);
    sqlite3_bind_int64(stmt, 5, version->time_ns);
    store_bind_u64(stmt, 6, chunks->total);
    sqlite3_bind_blob(stmt, 7, buf.data, (int)buf.len, SQLITE_STATIC);
    rc = store_step_done(store, stmt, "recording a version");
    crdt_buf_free(&buf);
    if (rc == -EEXIST)
        store_fail(store, rc, "the node already has a version with this timestamp");
    else if (rc == -ENOENT)
        store_fail(store, rc, "no such node");
    return rc;
}

static int set_node_content(struct meta_store *store, const struct meta_id *node, uint64_t size,
                            enum meta_wc_state state)
{
    /* A DIRTY working copy holds local bytes not yet committed: it is never marked STALE
       (and so never overwritten) here; the mount merges or commits it. */
    static const char sql[] = "UPDATE nodes SET size = ?2, "
                              "wc_state = CASE WHEN ?3 = 2 AND wc_state = 1 THEN 1 ELSE ?3 END "
                              "WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    store_bind_u64(stmt, 2, size);
    sqlite3_bind_int(stmt, 3, (int)state);
    int rc = store_step_done(store, stmt, "updating a node's content");
    if (rc == 0 && sqlite3_changes(store->db) == 0)
        rc = store_fail(store, -ENOENT, "no such node");
    return rc;
}

static int record(struct meta_store *store, const struct meta_version *version,
                  const struct meta_chunk_list *chunks)
{
    for (size_t i = 0; i < chunks->len; i++) {
        bool present = false;
        int rc = meta_chunk_has(&present, store, chunks->refs[i].id);
        if (rc)
            return rc;
        if (!present)
            return store_fail(store, -ENOENT, "chunk %zu of the version is not in the store", i);
    }
    int rc = insert_version(store, version, chunks);
    if (rc)
        return rc;
    struct crdt_ts head;
    rc = newest(&head, store, &version->node);
    if (rc || crdt_ts_cmp(head, version->ts) != 0)
        return rc;
    rc = set_node_content(store, &version->node, chunks->total, META_WC_STALE);
    if (rc == 0)
        store->stale_pending = true;
    return rc;
}

int meta_version_record(struct meta_store *store, const struct meta_version *version,
                        const struct meta_chunk_list *chunks)
{
    if (version->size != chunks->total)
        return store_fail(store, -EINVAL, "version size %llu is not its chunks' total %llu",
                          (unsigned long long)version->size, (unsigned long long)chunks->total);
    int rc = store_save_begin(store);
    if (rc)
        return rc;
    return store_save_end(store, record(store, version, chunks));
}

struct commit_ctx {
    struct meta_store *store;
    struct meta_chunk_list list;
};

static int commit_chunk(void *ctx, const uint8_t id[META_HASH_LEN], const uint8_t *data, size_t len)
{
    struct commit_ctx *commit = ctx;
    int rc = chunk_insert(commit->store, id, data, len);
    if (rc)
        return rc;
    rc = meta_chunk_list_add(&commit->list, id, (uint32_t)len);
    return rc ? store_fail(commit->store, rc, "out of memory listing chunks") : 0;
}

/* Chunks the working copy (data[0..len) when the caller holds its bytes, else read from fd). */
static int commit_wc(struct meta_store *store, const struct meta_version *version, int fd,
                     const void *data, size_t len, struct commit_ctx *commit)
{
    meta_chunker_reset(store->chunker);
    int rc = 0;
    if (data) {
        rc = meta_chunker_feed(store->chunker, data, len, commit_chunk, commit);
        if (rc == 0)
            rc = meta_chunker_finish(store->chunker, commit_chunk, commit);
    } else {
        uint8_t *buf = malloc(READ_BUF_LEN);
        if (!buf)
            return store_fail(store, -ENOMEM, "out of memory");
        for (off_t offset = 0;;) {
            ssize_t got = pread(fd, buf, READ_BUF_LEN, offset);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                rc = store_fail(store, -errno, "reading a working copy: %s", strerror(errno));
                break;
            }
            if (got == 0) {
                rc = meta_chunker_finish(store->chunker, commit_chunk, commit);
                break;
            }
            rc = meta_chunker_feed(store->chunker, buf, (size_t)got, commit_chunk, commit);
            if (rc)
                break;
            offset += got;
        }
        free(buf);
    }
    if (rc == 0)
        rc = insert_version(store, version, &commit->list);
    if (rc == 0)
        rc = set_node_content(store, &version->node, commit->list.total, META_WC_CLEAN);
    return rc;
}

static int commit_version(uint64_t *out_size, struct meta_chunk_list *out_chunks,
                          struct meta_store *store, const struct meta_version *version,
                          const void *data, size_t len)
{
    int fd = -1;
    int rc = 0;
    /* With the bytes in hand, the file is opened only to fsync it. */
    if (!data || !store->lazy)
        rc = meta_wc_open(&fd, store, &version->node, O_RDONLY | O_NOATIME);
    if (rc)
        return rc;
    /*
     * The file's bytes reach the disk before the transaction that calls them
     * CLEAN; in lazy mode both reach it together at the next meta_store_sync.
     */
    rc = store->lazy ? 0 : wc_fsync(store, fd);
    if (rc) {
        close(fd);
        return store_fail(store, rc, "fsync of a working copy: %s", strerror(-rc));
    }
    struct commit_ctx commit = {.store = store};
    rc = store_save_begin(store);
    if (rc == 0)
        rc = store_save_end(store, commit_wc(store, version, fd, data, len, &commit));
    if (fd >= 0)
        close(fd);
    if (rc == 0 && out_size)
        *out_size = commit.list.total;
    if (rc == 0 && out_chunks) {
        *out_chunks = commit.list;
        return 0;
    }
    meta_chunk_list_free(&commit.list);
    return rc;
}

int meta_version_commit_wc(uint64_t *out_size, struct meta_store *store,
                           const struct meta_version *version)
{
    return commit_version(out_size, NULL, store, version, NULL, 0);
}

int meta_version_commit_wc_list(struct meta_chunk_list *out_chunks, struct meta_store *store,
                                const struct meta_version *version, const void *data, size_t len)
{
    return commit_version(NULL, out_chunks, store, version, data, len);
}

static int read_version(struct meta_version *out, struct meta_chunk_list *out_chunks,
                        struct meta_store *store, sqlite3_stmt *stmt)
{
    int rc = store_column_id(&out->node, stmt, 0);
    out->ts.counter = store_column_u64(stmt, 1);
    out->ts.replica = store_column_u64(stmt, 2);
    out->author = store_column_u64(stmt, 3);
    out->time_ns = sqlite3_column_int64(stmt, 4);
    out->size = store_column_u64(stmt, 5);
    if (rc == 0 && out_chunks) {
        rc = meta_chunk_list_decode(out_chunks, sqlite3_column_blob(stmt, 6),
                                    (size_t)sqlite3_column_bytes(stmt, 6));
        if (rc == 0 && out_chunks->total != out->size) {
            meta_chunk_list_free(out_chunks);
            rc = -EBADMSG;
        }
    }
    if (rc == -EBADMSG || rc == -EUCLEAN)
        return store_fail(store, -EUCLEAN, "a version's record is damaged");
    return rc;
}

#define VERSION_COLUMNS "node, ts_counter, ts_replica, author, time_ns, size, chunks"

int meta_version_get(struct meta_version *out, struct meta_chunk_list *out_chunks,
                     struct meta_store *store, const struct meta_id *node, struct crdt_ts ts)
{
    static const char sql[] = "SELECT " VERSION_COLUMNS " FROM versions "
                              "WHERE node = ?1 AND ts_counter = ?2 AND ts_replica = ?3;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    store_bind_u64(stmt, 2, ts.counter);
    store_bind_u64(stmt, 3, ts.replica);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        rc = read_version(out, out_chunks, store, stmt);
    else if (rc == SQLITE_DONE)
        rc = store_fail(store, -ENOENT, "no such version");
    else
        rc = store_sql_fail(store, rc, "reading a version");
    sqlite3_reset(stmt);
    return rc;
}

int meta_version_list(struct meta_version **out, size_t *out_len, struct meta_store *store,
                      const struct meta_id *node)
{
    static const char sql[] = "SELECT " VERSION_COLUMNS " FROM versions WHERE node = ?1 "
                              "ORDER BY " NEWEST_FIRST ";";
    *out = NULL;
    *out_len = 0;
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    struct meta_version *versions = NULL;
    size_t len = 0, cap = 0;
    int rc = 0, step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_version *grown = store_grow(versions, &cap, len, sizeof(*grown));
        if (!grown) {
            rc = -ENOMEM;
            goto fail;
        }
        versions = grown;
        rc = read_version(&versions[len++], NULL, store, stmt);
        if (rc)
            goto fail;
    }
    if (step != SQLITE_DONE) {
        rc = store_sql_fail(store, step, "listing versions");
        goto fail;
    }
    sqlite3_reset(stmt);
    *out = versions;
    *out_len = len;
    return 0;
fail:
    sqlite3_reset(stmt);
    free(versions);
    return rc;
}

/* Calls fn with each chunk of a version, in order; checks each chunk's length. */
typedef int (*chunk_data_fn)(void *ctx, const void *data, size_t len);

static int each_chunk(struct meta_store *store, const struct meta_id *node, struct crdt_ts ts,
                      chunk_data_fn fn, void *ctx)
{
    static const char sql[] = "SELECT data FROM chunks WHERE id = ?1;";
    struct meta_version version;
    struct meta_chunk_list list;
    int rc = meta_version_get(&version, &list, store, node, ts);
    if (rc)
        return rc;
    for (size_t i = 0; i < list.len && rc == 0; i++) {
        sqlite3_stmt *stmt = store_stmt(store, sql);
        if (!stmt) {
            rc = -ENOMEM;
            break;
        }
        sqlite3_bind_blob(stmt, 1, list.refs[i].id, META_HASH_LEN, SQLITE_STATIC);
        int step = sqlite3_step(stmt);
        if (step == SQLITE_ROW) {
            size_t len = (size_t)sqlite3_column_bytes(stmt, 0);
            if (len != list.refs[i].len)
                rc = store_fail(store, -EUCLEAN, "a chunk's length differs from its listing");
            else
                rc = fn(ctx, sqlite3_column_blob(stmt, 0), len);
        } else if (step == SQLITE_DONE) {
            rc = store_fail(store, -EUCLEAN, "a chunk of the version is missing from the store");
        } else {
            rc = store_sql_fail(store, step, "reading a chunk");
        }
        sqlite3_reset(stmt);
    }
    meta_chunk_list_free(&list);
    return rc;
}

struct mem_ctx {
    uint8_t *data;
    size_t len;
};

static int append_mem(void *ctx, const void *data, size_t len)
{
    struct mem_ctx *mem = ctx;
    memcpy(mem->data + mem->len, data, len);
    mem->len += len;
    return 0;
}

int meta_version_read(uint8_t **out, size_t *out_len, struct meta_store *store,
                      const struct meta_id *node, struct crdt_ts ts)
{
    struct meta_version version;
    int rc = meta_version_get(&version, NULL, store, node, ts);
    if (rc)
        return rc;
    if (version.size > SIZE_MAX - 1)
        return store_fail(store, -EFBIG, "version too large to read into memory");
    struct mem_ctx mem = {.data = malloc((size_t)version.size + 1)};
    if (!mem.data)
        return store_fail(store, -ENOMEM, "out of memory");
    rc = each_chunk(store, node, ts, append_mem, &mem);
    if (rc) {
        free(mem.data);
        return rc;
    }
    *out = mem.data;
    *out_len = mem.len;
    return 0;
}

struct fd_ctx {
    struct meta_store *store;
    int fd;
    off_t offset;
    bool hooked; /* through the store's I/O hook (working copies) */
};

static int append_fd(void *ctx, const void *data, size_t len)
{
    struct fd_ctx *out = ctx;
    int rc;
    if (out->hooked) {
        rc = wc_write_all(out->store, out->fd, data, len, out->offset);
    } else {
        rc = 0;
        const uint8_t *bytes = data;
        size_t left = len;
        off_t offset = out->offset;
        while (left > 0 && rc == 0) {
            ssize_t wrote = pwrite(out->fd, bytes, left, offset);
            if (wrote < 0 && errno != EINTR)
                rc = -errno;
            else if (wrote > 0) {
                bytes += wrote;
                left -= (size_t)wrote;
                offset += wrote;
            }
        }
    }
    if (rc)
        return store_fail(out->store, rc, "writing a version's content: %s", strerror(-rc));
    out->offset += (off_t)len;
    return 0;
}

int meta_version_read_fd(struct meta_store *store, const struct meta_id *node, struct crdt_ts ts,
                         int fd)
{
    struct fd_ctx out = {.store = store, .fd = fd};
    return each_chunk(store, node, ts, append_fd, &out);
}

int version_write_wc(struct meta_store *store, const struct meta_id *node, struct crdt_ts ts,
                     int fd)
{
    struct fd_ctx out = {.store = store, .fd = fd, .hooked = true};
    return each_chunk(store, node, ts, append_fd, &out);
}

static int restore(struct meta_store *store, const struct meta_version *version,
                   struct crdt_ts from)
{
    struct meta_version old;
    struct meta_chunk_list list;
    int rc = meta_version_get(&old, &list, store, &version->node, from);
    if (rc)
        return rc;
    rc = insert_version(store, version, &list);
    if (rc == 0)
        rc = set_node_content(store, &version->node, list.total, META_WC_STALE);
    if (rc == 0)
        store->stale_pending = true;
    meta_chunk_list_free(&list);
    return rc;
}

int meta_version_restore(struct meta_store *store, const struct meta_version *version,
                         struct crdt_ts from)
{
    int rc = store_save_begin(store);
    if (rc)
        return rc;
    return store_save_end(store, restore(store, version, from));
}

/* Runs a query for one version's timestamp of `node`; -ENOENT if none. */
static int one_ts(struct crdt_ts *out, struct meta_store *store, const struct meta_id *node,
                  const char *sql)
{
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        out->counter = store_column_u64(stmt, 0);
        out->replica = store_column_u64(stmt, 1);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = -ENOENT;
    } else {
        rc = store_sql_fail(store, rc, "finding a node's newest version");
    }
    sqlite3_reset(stmt);
    return rc;
}

/* The newest version's timestamp of a node; -ENOENT if it has none. */
static int newest(struct crdt_ts *out, struct meta_store *store, const struct meta_id *node)
{
    static const char sql[] = "SELECT ts_counter, ts_replica FROM versions WHERE node = ?1 "
                              "ORDER BY " NEWEST_FIRST " LIMIT 1;";
    return one_ts(out, store, node, sql);
}

/* Whether an attribute op of `node` in the log has timestamp ts (an index seek). */
static int op_at(bool *out, struct meta_store *store, const struct meta_id *node, struct crdt_ts ts)
{
    /* Named: the planner would rather scan the replica's part of the primary key. */
    static const char sql[] = "SELECT 1 FROM ops INDEXED BY ops_by_ts WHERE counter = ?1 AND "
                              "replica = ?2 AND kind = 3 AND node = ?3;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_u64(stmt, 1, ts.counter);
    store_bind_u64(stmt, 2, ts.replica);
    store_bind_id(stmt, 3, node);
    int rc = sqlite3_step(stmt);
    *out = rc == SQLITE_ROW;
    sqlite3_reset(stmt);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : store_sql_fail(store, rc, "reading the log");
}

int meta_version_head(struct crdt_ts *out, struct meta_store *store, const struct meta_id *node)
{
    /*
     * The primary key walked backwards, so no sort: the newest counter comes
     * first, and only versions that share it need the unsigned replica order.
     * Usually the first version is an op's; merged ones are skipped.
     */
    static const char sql[] = "SELECT ts_counter, ts_replica FROM versions WHERE node = ?1 "
                              "ORDER BY ts_counter DESC;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    store_bind_id(stmt, 1, node);
    struct crdt_ts best = {0, 0};
    int rc = 0, step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct crdt_ts ts = {store_column_u64(stmt, 0), store_column_u64(stmt, 1)};
        if (best.counter && ts.counter < best.counter)
            break;
        bool made_by_op = false;
        if (crdt_ts_cmp(ts, best) > 0 && (rc = op_at(&made_by_op, store, node, ts)) != 0)
            break;
        if (made_by_op)
            best = ts;
    }
    if (!rc && step != SQLITE_ROW && step != SQLITE_DONE)
        rc = store_sql_fail(store, step, "finding a node's newest version");
    sqlite3_reset(stmt);
    if (!rc && best.counter == 0)
        rc = -ENOENT;
    if (!rc)
        *out = best;
    return rc;
}

/*
 * Rewrites the STALE working copies from their versions. They are written
 * without an fsync each, then made durable together (one syncfs), then
 * marked clean in one transaction: a remote batch of 10,000 new files cost
 * 20,000 fsyncs. A crash before the marks leaves them STALE: redone at open.
 */
int version_redo_stale(struct meta_store *store)
{
    static const char clean_sql[] = "UPDATE nodes SET wc_state = 0 WHERE id = ?1 AND wc_state = 2;";
    struct meta_id *ids = NULL;
    size_t len = 0, done = 0;
    store->stale_pending = false;
    int rc = meta_node_list_wc(&ids, &len, store, META_WC_STALE);
    store->wc_batch_sync = true;
    for (; done < len && rc == 0; done++) {
        struct crdt_ts ts;
        rc = newest(&ts, store, &ids[done]);
        if (rc == -ENOENT) {
            /* A file with no version yet is empty. */
            rc = meta_wc_replace(store, &ids[done], "", 0);
        } else if (rc == 0) {
            rc = wc_replace_from_version(store, &ids[done], &ts);
        }
        if (rc)
            break;
    }
    store->wc_batch_sync = false;
    int synced = done ? wc_sync_all(store) : 0;
    if (synced && !rc)
        rc = store_fail(store, synced, "syncing rewritten working copies: %s", strerror(-synced));
    if (done && !synced) {
        bool own = false;
        int marked = store_single_begin(store, &own);
        if (!marked) {
            for (size_t i = 0; !marked && i < done; i++) {
                sqlite3_stmt *stmt = store_stmt(store, clean_sql);
                if (!stmt) {
                    marked = -ENOMEM;
                    break;
                }
                store_bind_id(stmt, 1, &ids[i]);
                marked = store_step_done(store, stmt, "marking a working copy clean");
            }
            marked = store_single_end(store, own, marked);
        }
        if (marked && !rc)
            rc = marked;
    }
    if (rc)
        store->stale_pending = true;
    free(ids);
    return rc;
}

/* ---- retention ---- */

static int prune(uint64_t *out_removed, struct meta_store *store, int64_t now_ns)
{
    static const char sql[] =
        "DELETE FROM versions WHERE rowid IN (SELECT rowid FROM ("
        "  SELECT rowid, time_ns, row_number() OVER ("
        "    PARTITION BY node ORDER BY " NEWEST_FIRST ") AS rank FROM versions)"
        "  WHERE rank > 1 AND ((?1 > 0 AND rank > ?1) OR (?2 > 0 AND time_ns < ?3)));";
    int64_t keep_versions, keep_days;
    int rc = meta_setting_get_int(&keep_versions, store, META_SETTING_KEEP_VERSIONS, 0);
    if (rc == 0)
        rc = meta_setting_get_int(&keep_days, store, META_SETTING_KEEP_DAYS, 0);
    if (rc)
        return rc;
    if (keep_versions < 0 || keep_days < 0 || keep_days > 1000000)
        return store_fail(store, -EINVAL, "retention settings must be >= 0 (days <= 1000000)");
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    sqlite3_bind_int64(stmt, 1, keep_versions);
    sqlite3_bind_int64(stmt, 2, keep_days);
    sqlite3_bind_int64(stmt, 3, now_ns - keep_days * 86400 * (int64_t)1000000000);
    rc = store_step_done(store, stmt, "pruning history");
    if (rc)
        return rc;
    if (out_removed)
        *out_removed = (uint64_t)sqlite3_changes64(store->db);
    return gc(NULL, store);
}

int meta_history_prune(uint64_t *out_removed, struct meta_store *store, int64_t now_ns)
{
    int rc = store_save_begin(store);
    if (rc)
        return rc;
    return store_save_end(store, prune(out_removed, store, now_ns));
}

/* ---- consistency ---- */

static int check_versions(struct meta_store *store)
{
    static const char sql[] = "SELECT " VERSION_COLUMNS " FROM versions;";
    static const char chunk_sql[] = "SELECT size FROM chunks WHERE id = ?1;";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_version version;
        struct meta_chunk_list list;
        rc = read_version(&version, &list, store, stmt);
        if (rc)
            break;
        sqlite3_stmt *chunk = store_stmt(store, chunk_sql);
        for (size_t i = 0; chunk && i < list.len && rc == 0; i++) {
            sqlite3_reset(chunk);
            sqlite3_bind_blob(chunk, 1, list.refs[i].id, META_HASH_LEN, SQLITE_STATIC);
            if (sqlite3_step(chunk) != SQLITE_ROW ||
                sqlite3_column_int64(chunk, 0) != (sqlite3_int64)list.refs[i].len)
                rc = store_fail(
                    store, -EUCLEAN, "version (%llu, %016llx) lists a chunk the store lacks",
                    (unsigned long long)version.ts.counter, (unsigned long long)version.ts.replica);
        }
        if (!chunk)
            rc = -ENOMEM;
        else
            sqlite3_reset(chunk);
        meta_chunk_list_free(&list);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = store_sql_fail(store, step, "checking versions");
    sqlite3_reset(stmt);
    return rc;
}

/* A CLEAN file node with versions has a working copy of its newest version's size. */
static int check_working_copies(struct meta_store *store)
{
    static const char sql[] =
        "SELECT n.id, v.size FROM nodes n JOIN versions v ON v.node = n.id "
        "WHERE n.kind = 1 AND n.wc_state = 0 AND v.rowid = (SELECT rowid FROM versions "
        "WHERE node = n.id ORDER BY " NEWEST_FIRST " LIMIT 1);";
    sqlite3_stmt *stmt = store_stmt(store, sql);
    if (!stmt)
        return -ENOMEM;
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct meta_id id;
        char path[4096];
        struct stat st;
        rc = store_column_id(&id, stmt, 0);
        if (rc == 0)
            rc = meta_wc_path(path, sizeof(path), store, &id);
        if (rc)
            break;
        if (stat(path, &st) != 0)
            rc = store_fail(store, -EUCLEAN, "working copy %s is missing", path);
        else if ((uint64_t)st.st_size != store_column_u64(stmt, 1))
            rc = store_fail(store, -EUCLEAN,
                            "working copy %s has %lld bytes, its newest version %llu", path,
                            (long long)st.st_size, (unsigned long long)store_column_u64(stmt, 1));
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = store_sql_fail(store, step, "checking working copies");
    sqlite3_reset(stmt);
    return rc;
}

int version_check(struct meta_store *store)
{
    int rc = check_versions(store);
    return rc ? rc : check_working_copies(store);
}

int meta_version_record_bytes(struct meta_store *store, const struct meta_version *version,
                              const void *data, size_t len)
{
    struct commit_ctx commit = {.store = store};
    int rc = store_save_begin(store);
    if (rc)
        return rc;
    meta_chunker_reset(store->chunker);
    rc = meta_chunker_feed(store->chunker, data, len, commit_chunk, &commit);
    if (rc == 0)
        rc = meta_chunker_finish(store->chunker, commit_chunk, &commit);
    if (rc == 0) {
        struct meta_version sized = *version;
        sized.size = commit.list.total;
        rc = meta_version_record(store, &sized, &commit.list);
    }
    meta_chunk_list_free(&commit.list);
    return store_save_end(store, rc);
}
