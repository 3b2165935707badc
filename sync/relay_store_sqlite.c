/*
 * sync/relay_store_sqlite: the relay store interface (relay_store.h) on
 * meta/relaydb, the embedded SQLite default. A thin adapter: SQLite lives in
 * meta/ only (STYLE "Layers and homes"); this file maps the interface's
 * types and derives replica ids from member keys.
 */
#include "sync/relay_store.h"

#include "meta/relaydb.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

_Static_assert(SYNC_SHARE_ID_LEN == META_SHARE_ID_LEN, "share id size");
_Static_assert(SYNC_HASH_LEN == META_HASH_LEN, "hash size");
_Static_assert(SYNC_PUBLIC_KEY_LEN == META_PUBLIC_KEY_LEN, "key size");
_Static_assert(SYNC_RELAY_ADDR_MAX == META_RELAYDB_ADDR_MAX, "address size");

static int sq_begin(void *ctx)
{
    return meta_relaydb_begin(ctx);
}

static int sq_commit(void *ctx)
{
    return meta_relaydb_commit(ctx);
}

static void sq_rollback(void *ctx)
{
    meta_relaydb_rollback(ctx);
}

static int sq_op_put(void *ctx, bool *added, const uint8_t share[SYNC_SHARE_ID_LEN],
                     uint64_t author, uint64_t seq, const uint8_t prev[SYNC_HASH_LEN],
                     const uint8_t hash[SYNC_HASH_LEN], uint32_t epoch, const uint8_t *bytes,
                     size_t len)
{
    return meta_relaydb_op_put(ctx, added, share, author, seq, prev, hash, epoch, bytes, len);
}

/* Carries the caller's visitor through meta's, converting the record type. */
struct visit {
    union {
        sync_relay_record_fn record;
        sync_relay_member_fn member;
    } fn;
    void *ctx;
};

static int visit_record(void *ctx, const struct meta_relaydb_record *record)
{
    struct visit *visit = ctx;
    struct sync_relay_record out = {
        .author = record->author,
        .seq = record->seq,
        .epoch = record->epoch,
        .hash = record->hash,
        .bytes = record->bytes,
        .len = record->len,
    };
    return visit->fn.record(visit->ctx, &out);
}

static int sq_op_read(void *ctx, size_t *count, const uint8_t share[SYNC_SHARE_ID_LEN],
                      uint64_t author, uint64_t from, size_t max_records, size_t max_bytes,
                      sync_relay_record_fn each, void *each_ctx)
{
    struct visit visit = {.fn.record = each, .ctx = each_ctx};
    return meta_relaydb_op_read(ctx, count, share, author, from, max_records, max_bytes,
                                each ? visit_record : NULL, &visit);
}

static int sq_head(void *ctx, uint64_t *seq, uint8_t hash[SYNC_HASH_LEN],
                   const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t author)
{
    return meta_relaydb_head(ctx, seq, hash, share, author);
}

static int sq_heads(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], sync_relay_head_fn each,
                    void *each_ctx)
{
    /* Same signature on both sides: no conversion needed. */
    return meta_relaydb_heads(ctx, share, each, each_ctx);
}

static int sq_chunk_put(void *ctx, bool *added, const uint8_t share[SYNC_SHARE_ID_LEN],
                        const uint8_t id[SYNC_HASH_LEN], uint64_t author, const uint8_t *bytes,
                        size_t len)
{
    return meta_relaydb_chunk_put(ctx, added, share, id, author, bytes, len);
}

static int sq_chunk_get(void *ctx, uint8_t **bytes, size_t *len,
                        const uint8_t share[SYNC_SHARE_ID_LEN], const uint8_t id[SYNC_HASH_LEN])
{
    return meta_relaydb_chunk_get(ctx, bytes, len, share, id);
}

static int sq_chunk_has(void *ctx, bool *has, const uint8_t share[SYNC_SHARE_ID_LEN],
                        const uint8_t id[SYNC_HASH_LEN])
{
    return meta_relaydb_chunk_has(ctx, has, share, id);
}

static int sq_share_exists(void *ctx, bool *exists, const uint8_t share[SYNC_SHARE_ID_LEN])
{
    return meta_relaydb_share_exists(ctx, exists, share);
}

static int sq_share_register(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN],
                             const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], int64_t now_ns)
{
    return meta_relaydb_share_register(ctx, share, public_key, sync_replica_id(public_key), now_ns);
}

static int sq_member_add(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN],
                         const uint8_t public_key[SYNC_PUBLIC_KEY_LEN], int64_t now_ns)
{
    return meta_relaydb_member_add(ctx, share, public_key, sync_replica_id(public_key), now_ns);
}

static int sq_member_revoke(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t replica)
{
    return meta_relaydb_member_revoke(ctx, share, replica);
}

static void member_from_meta(struct sync_relay_member *out, const struct meta_relaydb_member *in)
{
    out->replica = in->replica;
    memcpy(out->public_key, in->public_key, SYNC_PUBLIC_KEY_LEN);
    out->added_ns = in->added_ns;
    out->revoked = in->revoked;
}

static int sq_member_get(void *ctx, struct sync_relay_member *out,
                         const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t replica)
{
    struct meta_relaydb_member member;
    int rc = meta_relaydb_member_get(ctx, &member, share, replica);
    if (rc == 0)
        member_from_meta(out, &member);
    return rc;
}

static int visit_member(void *ctx, const struct meta_relaydb_member *member)
{
    struct visit *visit = ctx;
    struct sync_relay_member out;
    member_from_meta(&out, member);
    return visit->fn.member(visit->ctx, &out);
}

static int sq_members(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], sync_relay_member_fn each,
                      void *each_ctx)
{
    struct visit visit = {.fn.member = each, .ctx = each_ctx};
    return meta_relaydb_members(ctx, share, visit_member, &visit);
}

static int sq_addr_put(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], uint64_t replica,
                       const char *addr, int64_t seen_ns)
{
    return meta_relaydb_addr_put(ctx, share, replica, addr, seen_ns);
}

static int sq_addrs(void *ctx, const uint8_t share[SYNC_SHARE_ID_LEN], sync_relay_addr_fn each,
                    void *each_ctx)
{
    return meta_relaydb_addrs(ctx, share, each, each_ctx);
}

static const char *sq_errmsg(void *ctx)
{
    return meta_relaydb_errmsg(ctx);
}

static void sq_close(void *ctx)
{
    meta_relaydb_close(ctx);
}

static const struct sync_relay_store_ops sqlite_ops = {
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .op_put = sq_op_put,
    .op_read = sq_op_read,
    .head = sq_head,
    .heads = sq_heads,
    .chunk_put = sq_chunk_put,
    .chunk_get = sq_chunk_get,
    .chunk_has = sq_chunk_has,
    .share_exists = sq_share_exists,
    .share_register = sq_share_register,
    .member_add = sq_member_add,
    .member_revoke = sq_member_revoke,
    .member_get = sq_member_get,
    .members = sq_members,
    .addr_put = sq_addr_put,
    .addrs = sq_addrs,
    .errmsg = sq_errmsg,
    .close = sq_close,
};

int sync_relay_store_open_sqlite(struct sync_relay_store *out, char *why, size_t why_len,
                                 const char *dir)
{
    out->ops = NULL;
    out->ctx = NULL;
    int rc = sync_init();
    if (rc) {
        if (why && why_len)
            snprintf(why, why_len, "libsodium failed to start");
        return rc;
    }
    struct meta_err err = {{0}};
    struct meta_relaydb *db = NULL;
    rc = meta_relaydb_open(&db, &err, dir);
    if (rc) {
        if (why && why_len)
            snprintf(why, why_len, "%s", err.msg);
        return rc;
    }
    out->ops = &sqlite_ops;
    out->ctx = db;
    return 0;
}

void sync_relay_store_close(struct sync_relay_store *store)
{
    if (store->ops)
        store->ops->close(store->ctx);
    store->ops = NULL;
    store->ctx = NULL;
}
