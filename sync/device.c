/*
 * sync/device: sealing this device's ops into records, and taking peers'
 * records into the replica. See device.h for the contract.
 */
#include "sync/device.h"

#include "meta/member.h"
#include "meta/opbody.h"
#include "meta/oplog.h"
#include "meta/store.h"
#include "meta/version.h"
#include "sync/record.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

_Static_assert(SYNC_SHARE_ID_LEN == META_SHARE_ID_LEN, "one share id");
_Static_assert(SYNC_HASH_LEN == META_HASH_LEN, "chunk ids travel as they are kept");
_Static_assert(SYNC_NODE_ID_LEN == META_ID_LEN, "node ids travel as they are kept");
_Static_assert(SYNC_SECRET_KEY_LEN == META_SECRET_KEY_LEN, "one device key");

/* Room left in a record's plaintext for the batch header and deps (README). */
#define BATCH_ROOM (SYNC_RECORD_PLAIN_MAX - 4096)
/*
 * Where a batch is cut: records of about 1 MiB stream and apply in small
 * steps; an op bigger than that goes alone, up to BATCH_ROOM.
 */
#define BATCH_TARGET (1u << 20)
/*
 * What one sealing step takes at most (sync_device_seal_step): about this
 * many chunk bytes (the batch that passes it ends the step), and ops. Sealing
 * runs on the syncer's loop: a step leaves the network its turn.
 */
#define SEAL_STEP_BYTES (16u << 20)
#define SEAL_STEP_OPS   65536u

struct id_list {
    uint8_t (*ids)[SYNC_HASH_LEN];
    size_t len, cap;
};

/*
 * The chunk records sealed along with one of this device's op records: the
 * ones to push before it (the others were pushed with an earlier record).
 */
struct sealed_chunks {
    uint64_t seq;
    uint8_t (*ids)[SYNC_HASH_LEN];
    size_t len;
};

/*
 * How much of that is remembered (32 MiB of ids, 64 Ki records); an older
 * record, or one sealed before the device was opened, pushes every chunk it
 * names instead.
 */
#define SEALED_IDS_MAX     (1u << 20)
#define SEALED_RECORDS_MAX (1u << 16)

/*
 * An author whose kept records from seq `from` on are not applied yet. What
 * its first one (the head of the line) waits for is remembered, so a pass
 * over the pending authors opens and tries a record only once what it
 * waited for may be here: without that, a restore tried the same record
 * again for every record and chunk that arrived (quadratic in the share).
 */
struct pending {
    uint64_t author;
    uint64_t from;
    uint64_t known;      /* the seq `deps` and `missing` describe (0: not tried yet) */
    struct crdt_vv deps; /* what record `known` needs applied first */
    uint64_t missing;    /* chunks record `known` lacked and that have not arrived since */
};

/*
 * Chunk ids that kept records wait for, with the author whose head-of-line
 * record counted them (0: a later record's). Open addressing with linear
 * probing; ids are keyed hashes, so their first bytes are the hash.
 */
struct wanted_slot {
    uint8_t id[SYNC_HASH_LEN];
    uint64_t owner;
    uint64_t scan;    /* the last want_chunks that saw it */
    int64_t asked_ns; /* when it was last handed out to ask for (0: not yet) */
    bool used;
};

struct wanted_set {
    struct wanted_slot *slots;
    size_t cap, len; /* cap is 0 or a power of two, len <= cap / 2 */
};

struct sync_device {
    struct meta_replica *replica;
    struct meta_store *store;
    struct sync_device_lock lock; /* held around every use of replica and store */
    struct sync_relay_store records;
    uint8_t share_id[SYNC_SHARE_ID_LEN];
    /* Every key epoch's key held, epoch order: 0 derived from the share key, then removals'. */
    struct sync_epoch_key *keys;
    size_t key_count;
    uint32_t seal_epoch; /* the epoch the batch being sealed goes under */
    uint8_t secret_key[SYNC_SECRET_KEY_LEN];
    uint64_t self;
    /* This device's chain: its head record, and the last op seq a record holds. */
    uint64_t head_seq;
    uint8_t head_hash[SYNC_HASH_LEN];
    uint64_t sealed_op_seq;
    struct pending *pending;
    size_t pending_len, pending_cap;
    struct wanted_set wanted;
    uint64_t scan; /* want_chunks calls so far */
    /* Ids added to `wanted` since sync_device_wanted_new last took them. */
    uint8_t (*fresh_wanted)[SYNC_HASH_LEN];
    size_t fresh_wanted_len, fresh_wanted_cap;
    /* The chunk records sealed with each own op record, until forgotten (sync_device_fresh_chunks).
     */
    struct sealed_chunks *sealed;
    size_t sealed_len, sealed_cap, sealed_ids;
    struct id_list sealing; /* chunk records sealed for the op record being sealed */
    uint64_t step_bytes;    /* chunk bytes sealed by this sync_device_seal_step */
    /*
     * A batch whose chunks one step could not finish: its first op, and how
     * many of its chunk callbacks are done (seal_chunk skips them).
     */
    uint64_t resume_seq;
    uint64_t resume_skip, chunk_cursor;
    struct sync_device_stats stats;
    char err[512];
};

static int device_fail(struct sync_device *device, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int device_fail(struct sync_device *device, int rc, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(device->err, sizeof(device->err), fmt, args);
    va_end(args);
    return rc;
}

/*
 * Room for one more of `size`-byte items after `len` (doubling *cap when
 * full): the array to use, or NULL (out of memory; the old one stays valid).
 */
static void *grow(void *items, size_t *cap, size_t len, size_t size, size_t first)
{
    if (len < *cap)
        return items;
    size_t more = *cap ? *cap * 2 : first;
    void *grown = realloc(items, more * size);
    if (grown)
        *cap = more;
    return grown;
}

static int ids_push(struct id_list *list, const uint8_t id[SYNC_HASH_LEN])
{
    uint8_t(*grown)[SYNC_HASH_LEN] = grow(list->ids, &list->cap, list->len, sizeof(*grown), 16);
    if (!grown)
        return -ENOMEM;
    list->ids = grown;
    memcpy(list->ids[list->len++], id, SYNC_HASH_LEN);
    return 0;
}

static void hold(struct sync_device *device)
{
    if (device->lock.lock)
        device->lock.lock(device->lock.ctx);
}

static void release(struct sync_device *device)
{
    if (device->lock.unlock)
        device->lock.unlock(device->lock.ctx);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Membership is the replica store's device list. A removed device's records
 * of the epochs before its removal are history every member keeps; from the
 * epoch its removal started, it authors nothing.
 */
static int member_key(void *ctx, uint8_t public_key[SYNC_PUBLIC_KEY_LEN], uint64_t replica,
                      uint32_t epoch)
{
    struct sync_device *device = ctx;
    struct meta_device member;
    char setting[64];
    int64_t revoked_at = 0;
    snprintf(setting, sizeof(setting), "member.revoked_epoch.%016llx", (unsigned long long)replica);
    hold(device);
    int rc = meta_device_get(&member, device->store, replica);
    if (!rc && member.revoked)
        rc = meta_setting_get_int(&revoked_at, device->store, setting, 0);
    release(device);
    if (rc != 0 || (member.revoked && epoch >= revoked_at))
        return -EACCES;
    memcpy(public_key, member.public_key, SYNC_PUBLIC_KEY_LEN);
    return 0;
}

/*
 * Takes in the keys of epochs this device learned since (a removal's op it
 * applied, or made). Cheap when nothing changed: one setting read.
 */
static int refresh_keys(struct sync_device *device)
{
    hold(device);
    uint32_t newest = meta_store_epoch(device->store);
    int rc = 0;
    if (newest + 1 > device->key_count) {
        struct sync_epoch_key *grown = realloc(device->keys, (newest + 1) * sizeof(*grown));
        if (!grown)
            rc = -ENOMEM;
        else
            device->keys = grown;
        for (uint32_t epoch = (uint32_t)device->key_count; !rc && epoch <= newest; epoch++) {
            struct sync_epoch_key *key = &device->keys[epoch];
            key->epoch = epoch;
            rc = epoch == 0 ? meta_store_derive_key(key->key, device->store, "seal epoch 0")
                            : meta_store_epoch_key_get(key->key, device->store, epoch);
            if (!rc)
                device->key_count = epoch + 1;
        }
        if (rc)
            device_fail(device, rc, "cannot read the key of a key epoch: %s",
                        meta_store_errmsg(device->store));
    }
    release(device);
    return rc;
}

static void share_of(struct sync_share *share, struct sync_device *device)
{
    memcpy(share->id, device->share_id, SYNC_SHARE_ID_LEN);
    share->keys = device->keys;
    share->key_count = device->key_count;
    share->member = member_key;
    share->member_ctx = device;
}

/* ---------- reading kept records ---------- */

struct kept {
    uint8_t *bytes;
    size_t len;
};

static int copy_record(void *ctx, const struct sync_relay_record *record)
{
    struct kept *kept = ctx;
    kept->bytes = malloc(record->len);
    if (!kept->bytes)
        return -ENOMEM;
    memcpy(kept->bytes, record->bytes, record->len);
    kept->len = record->len;
    return 0;
}

/* Reads and opens `author`'s kept record `seq` into *out (sync_record_clear it). */
static int kept_open(struct sync_device *device, struct sync_record *out, uint64_t author,
                     uint64_t seq)
{
    struct kept kept = {0};
    size_t count = 0;
    const struct sync_relay_store_ops *ops = device->records.ops;
    int rc = ops->op_read(device->records.ctx, &count, device->share_id, author, seq, 1,
                          SYNC_RECORD_MAX, copy_record, &kept);
    if (!rc && count == 0)
        rc = -ENOENT;
    if (rc) {
        free(kept.bytes);
        return device_fail(device, rc, "reading record %llu of %016llx: %s",
                           (unsigned long long)seq, (unsigned long long)author,
                           ops->errmsg(device->records.ctx));
    }
    struct sync_share share;
    share_of(&share, device);
    enum sync_reason reason = SYNC_REASON_NONE;
    rc = sync_record_open(out, &reason, &share, kept.bytes, kept.len);
    free(kept.bytes);
    if (rc)
        return device_fail(device, rc, "a kept record of %016llx no longer opens: %s",
                           (unsigned long long)author, sync_reason_str(reason));
    return 0;
}

static uint64_t last_op_seq(const struct sync_record *record)
{
    return record->ops[record->op_count - 1].seq;
}

/* ---------- pending authors ---------- */

static struct pending *pending_find(struct sync_device *device, uint64_t author)
{
    for (size_t i = 0; i < device->pending_len; i++)
        if (device->pending[i].author == author)
            return &device->pending[i];
    return NULL;
}

static int pending_add(struct sync_device *device, uint64_t author, uint64_t from)
{
    if (pending_find(device, author))
        return 0;
    struct pending *grown =
        grow(device->pending, &device->pending_cap, device->pending_len, sizeof(*grown), 8);
    if (!grown)
        return -ENOMEM;
    device->pending = grown;
    device->pending[device->pending_len++] = (struct pending){.author = author, .from = from};
    return 0;
}

static void pending_remove(struct sync_device *device, struct pending *slot)
{
    crdt_vv_free(&slot->deps);
    *slot = device->pending[--device->pending_len];
}

/* ---------- chunks wanted ---------- */

static size_t wanted_home(const struct wanted_set *set, const uint8_t id[SYNC_HASH_LEN])
{
    uint64_t h;
    memcpy(&h, id, sizeof(h));
    return (size_t)h & (set->cap - 1);
}

static struct wanted_slot *wanted_find(const struct wanted_set *set,
                                       const uint8_t id[SYNC_HASH_LEN])
{
    if (set->cap == 0)
        return NULL;
    for (size_t i = wanted_home(set, id);; i = (i + 1) & (set->cap - 1)) {
        if (!set->slots[i].used)
            return NULL;
        if (memcmp(set->slots[i].id, id, SYNC_HASH_LEN) == 0)
            return &set->slots[i];
    }
}

static void wanted_place(struct wanted_set *set, const struct wanted_slot *slot)
{
    size_t i = wanted_home(set, slot->id);
    while (set->slots[i].used)
        i = (i + 1) & (set->cap - 1);
    set->slots[i] = *slot;
}

/* Adds `id` (owner: see wanted_slot); *added says whether it was new. */
static int wanted_add(struct wanted_set *set, bool *added, const uint8_t id[SYNC_HASH_LEN],
                      uint64_t owner)
{
    struct wanted_slot *slot = wanted_find(set, id);
    *added = slot == NULL;
    if (slot) {
        if (!slot->owner)
            slot->owner = owner;
        return 0;
    }
    if ((set->len + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 64;
        struct wanted_slot *old = set->slots;
        size_t old_cap = set->cap;
        set->slots = calloc(cap, sizeof(*set->slots));
        if (!set->slots) {
            set->slots = old;
            return -ENOMEM;
        }
        set->cap = cap;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].used)
                wanted_place(set, &old[i]);
        free(old);
    }
    struct wanted_slot fresh = {.owner = owner, .used = true};
    memcpy(fresh.id, id, SYNC_HASH_LEN);
    wanted_place(set, &fresh);
    set->len++;
    return 0;
}

/*
 * Removes `id` if wanted: true, and *owner its owner. Backward-shift
 * deletion keeps every probe run unbroken without tombstones.
 */
static bool wanted_remove(struct wanted_set *set, uint64_t *owner, const uint8_t id[SYNC_HASH_LEN])
{
    struct wanted_slot *slot = wanted_find(set, id);
    if (!slot)
        return false;
    *owner = slot->owner;
    size_t mask = set->cap - 1, hole = (size_t)(slot - set->slots);
    for (size_t i = (hole + 1) & mask; set->slots[i].used; i = (i + 1) & mask) {
        size_t home = wanted_home(set, set->slots[i].id);
        /* The entry at i may move to the hole unless its home lies cyclically in (hole, i]. */
        bool stays = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            set->slots[hole] = set->slots[i];
            hole = i;
        }
    }
    set->slots[hole].used = false;
    set->len--;
    return true;
}

/* ---------- the chunks binary versions name ---------- */

typedef int (*chunk_fn)(void *ctx, const uint8_t id[SYNC_HASH_LEN]);

static int visit_index(void *ctx, const uint8_t id[SYNC_HASH_LEN], bool here)
{
    (void)here;
    return ids_push(ctx, id);
}

/*
 * Calls fn for each chunk the binary versions among ops[0..count) name: a
 * big version's index chunks, then its content's chunks as far as the index
 * chunks here tell (the rest once they are here). Text versions travel as
 * their text ops: their chunks never need to. fn runs without the lock.
 */
static int each_binary_chunk(struct sync_device *device, const struct sync_op *ops, size_t count,
                             chunk_fn fn, void *ctx)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < count; i++) {
        if (ops[i].kind != META_OP_ATTR)
            continue;
        struct meta_attr_body body;
        rc = meta_attr_body_decode(&body, ops[i].body, ops[i].body_len);
        bool binary = !rc && body.mask == META_ATTR_CONTENT && !body.text && !body.no_list;
        struct id_list index = {0};
        struct meta_chunk_list content = {0};
        if (binary && body.levels) {
            hold(device);
            int got = meta_chunk_index_expand(&content, device->store, &body.chunks, body.levels,
                                              visit_index, &index);
            if (got && got != -ENOENT)
                rc = device_fail(device, got, "reading a chunk index: %s",
                                 meta_store_errmsg(device->store));
            release(device);
        }
        const struct meta_chunk_list *chunks = body.levels ? &content : &body.chunks;
        for (size_t k = 0; binary && !rc && k < index.len; k++)
            rc = fn(ctx, index.ids[k]);
        for (size_t k = 0; binary && !rc && k < chunks->len; k++)
            rc = fn(ctx, chunks->refs[k].id);
        free(index.ids);
        meta_chunk_list_free(&content);
        meta_attr_body_clear(&body);
    }
    return rc;
}

/* ---------- applying ---------- */

/* The replica's version vector into *out (the caller frees it). */
static int replica_version(struct sync_device *device, struct crdt_vv *out)
{
    hold(device);
    int rc = meta_replica_version(out, device->replica);
    if (rc)
        device_fail(device, rc, "%s", meta_replica_errmsg(device->replica));
    release(device);
    return rc;
}

/* The replica's op seq held from `author` (0 if none). */
static int applied_seq(struct sync_device *device, uint64_t *out, uint64_t author)
{
    struct crdt_vv vv = {0};
    int rc = replica_version(device, &vv);
    if (!rc)
        *out = crdt_vv_get(&vv, author);
    crdt_vv_free(&vv);
    return rc;
}

/* Does the replica hold everything `deps` names (author's own entry aside: its chain orders it)? */
static int deps_ready(struct sync_device *device, bool *ready, const struct crdt_vv *deps,
                      uint64_t author)
{
    struct crdt_vv have = {0};
    int rc = replica_version(device, &have);
    *ready = !rc;
    for (size_t i = 0; *ready && i < deps->len; i++) {
        const struct crdt_vv_entry *dep = &deps->entries[i];
        *ready = dep->replica == author || crdt_vv_get(&have, dep->replica) >= dep->seq;
    }
    crdt_vv_free(&have);
    return rc;
}

struct missing_scan {
    struct sync_device *device;
    uint64_t owner;
    uint64_t counted; /* missing chunks now owned by `owner` */
    bool foreign;     /* a missing chunk another author's record counts */
    uint64_t scan;    /* marks the slots this scan has seen: an id named twice counts once */
};

static int note_missing(void *ctx, const uint8_t id[SYNC_HASH_LEN])
{
    struct missing_scan *scan = ctx;
    struct sync_device *device = scan->device;
    bool have = false, added = false;
    hold(device);
    int rc = meta_chunk_has(&have, device->store, id);
    release(device);
    if (rc || have)
        return rc;
    struct wanted_slot *slot = wanted_find(&device->wanted, id);
    if (slot && slot->scan == scan->scan)
        return 0;
    if (slot && slot->owner && slot->owner != scan->owner) {
        slot->scan = scan->scan;
        scan->foreign = true;
        return 0;
    }
    rc = wanted_add(&device->wanted, &added, id, scan->owner);
    if (!rc)
        wanted_find(&device->wanted, id)->scan = scan->scan;
    if (!rc && added) {
        uint8_t(*grown)[SYNC_HASH_LEN] = grow(device->fresh_wanted, &device->fresh_wanted_cap,
                                              device->fresh_wanted_len, sizeof(*grown), 64);
        if (!grown)
            return -ENOMEM;
        device->fresh_wanted = grown;
        memcpy(device->fresh_wanted[device->fresh_wanted_len++], id, SYNC_HASH_LEN);
    }
    if (!rc && scan->owner)
        scan->counted++;
    return rc;
}

/*
 * Lists the chunks that `record`'s binary versions name and the replica
 * lacks as wanted, owned by `owner` (0: no owner, the record is not the
 * head of its author's line). *missing: how many its owner now waits for,
 * plus one if a chunk another author's record counts is among them (that
 * one is cleared only when nothing is wanted any more).
 */
static int want_chunks(struct sync_device *device, uint64_t *missing,
                       const struct sync_record *record, uint64_t owner)
{
    struct missing_scan scan = {.device = device, .owner = owner, .scan = ++device->scan};
    int rc = each_binary_chunk(device, record->ops, record->op_count, note_missing, &scan);
    if (rc)
        return device_fail(device, rc, "listing the chunks a record names: %s", strerror(-rc));
    *missing = scan.counted + (scan.foreign ? 1 : 0);
    return 0;
}

/*
 * Applies an opened op record's ops. -EAGAIN when it must wait, nothing
 * changed: for records of others it needs first (causal delivery: what its
 * author held when sealing), or for chunks its content names (now wanted;
 * *missing counts them).
 */
static int apply_record(struct sync_device *device, uint64_t *missing,
                        const struct sync_record *record)
{
    uint64_t author = record->header.author;
    bool ready = false;
    int rc = want_chunks(device, missing, record, author);
    if (!rc)
        rc = deps_ready(device, &ready, &record->deps, author);
    if (rc)
        return rc;
    if (!ready || *missing)
        return -EAGAIN;
    struct meta_op *ops = calloc(record->op_count, sizeof(*ops));
    if (!ops)
        return -ENOMEM;
    for (size_t i = 0; i < record->op_count; i++) {
        const struct sync_op *op = &record->ops[i];
        ops[i] = (struct meta_op){.replica = op->replica,
                                  .seq = op->seq,
                                  .counter = op->counter,
                                  .kind = (enum meta_op_kind)op->kind,
                                  .author = op->author,
                                  .body = (uint8_t *)op->body,
                                  .body_len = op->body_len};
        memcpy(ops[i].node.bytes, op->node, META_ID_LEN);
    }
    size_t applied = 0;
    hold(device);
    rc = meta_replica_apply_remote(&applied, device->replica, ops, record->op_count);
    if (rc && rc != -ENOENT)
        device_fail(device, rc, "applying ops of %016llx: %s", (unsigned long long)author,
                    meta_replica_errmsg(device->replica));
    release(device);
    free(ops);
    if (rc == -ENOENT)
        return -EAGAIN;
    if (rc)
        return rc;
    device->stats.records_applied++;
    return 0;
}

/* Notes what the head of `slot`'s line, record `seq`, waits for. */
static int pending_note(struct pending *slot, uint64_t seq, const struct sync_record *record,
                        uint64_t missing)
{
    crdt_vv_free(&slot->deps);
    slot->known = 0;
    int rc = crdt_vv_copy(&slot->deps, &record->deps);
    if (!rc) {
        slot->known = seq;
        slot->missing = missing;
    }
    return rc;
}

/*
 * Applies `slot`'s author's kept records from slot->from on; *next gets the
 * first still unapplied. A head of line already tried is not opened again
 * until what it waited for may be here.
 */
static int apply_from(struct sync_device *device, uint64_t *next, struct pending *slot)
{
    uint64_t head = 0;
    uint8_t hash[SYNC_HASH_LEN];
    int rc =
        device->records.ops->head(device->records.ctx, &head, hash, device->share_id, slot->author);
    for (*next = slot->from; !rc && *next <= head;) {
        if (*next == slot->known) {
            bool ready = false;
            if (slot->missing)
                return -EAGAIN;
            if ((rc = deps_ready(device, &ready, &slot->deps, slot->author)) != 0)
                break;
            if (!ready)
                return -EAGAIN;
        }
        struct sync_record record = {0};
        uint64_t missing = 0;
        rc = kept_open(device, &record, slot->author, *next);
        if (!rc)
            rc = apply_record(device, &missing, &record);
        if (rc == -EAGAIN && pending_note(slot, *next, &record, missing) != 0)
            rc = -ENOMEM;
        sync_record_clear(&record);
        if (!rc)
            (*next)++;
    }
    return rc;
}

/*
 * The first of `author`'s kept records whose ops the replica lacks (head + 1
 * if none): walks back from the head, which is where it is after a restart.
 */
static int first_unapplied(struct sync_device *device, uint64_t *out, uint64_t author,
                           uint64_t head)
{
    uint64_t have = 0;
    int rc = applied_seq(device, &have, author);
    *out = head + 1;
    for (uint64_t seq = head; !rc && seq >= 1; seq--) {
        struct sync_record record = {0};
        rc = kept_open(device, &record, author, seq);
        bool applied = !rc && last_op_seq(&record) <= have;
        bool first_ours = !rc && record.ops[0].seq <= have + 1;
        sync_record_clear(&record);
        if (rc || applied)
            break;
        *out = seq;
        if (first_ours)
            break;
    }
    return rc;
}

struct head_walk {
    struct sync_device *device;
    int rc;
};

static int note_unapplied(void *ctx, uint64_t author, uint64_t seq,
                          const uint8_t hash[SYNC_HASH_LEN])
{
    (void)hash;
    struct head_walk *walk = ctx;
    walk->device->stats.records_kept += seq;
    if (author == walk->device->self)
        return 0;
    uint64_t from;
    int rc = first_unapplied(walk->device, &from, author, seq);
    if (!rc && from <= seq)
        rc = pending_add(walk->device, author, from);
    return rc;
}

/* One pass over the pending authors; a record applied may unblock another author's. */
static int apply_pending_pass(struct sync_device *device)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < device->pending_len;) {
        struct pending *slot = &device->pending[i];
        uint64_t next, head;
        uint8_t hash[SYNC_HASH_LEN];
        rc = apply_from(device, &next, slot);
        if (rc == -EAGAIN) {
            slot->from = next;
            rc = 0;
            i++;
            continue;
        }
        if (!rc)
            rc = device->records.ops->head(device->records.ctx, &head, hash, device->share_id,
                                           slot->author);
        if (!rc && next > head)
            pending_remove(device, slot);
        else
            i++;
    }
    return rc;
}

int sync_device_apply_pending(struct sync_device *device, size_t *applied)
{
    size_t before = (size_t)device->stats.records_applied;
    uint64_t progress;
    int rc;
    do {
        progress = device->stats.records_applied;
        rc = apply_pending_pass(device);
    } while (!rc && device->pending_len && device->stats.records_applied != progress);
    device->stats.pending = device->pending_len;
    if (applied)
        *applied = (size_t)device->stats.records_applied - before;
    return rc;
}

/* ---------- open / close ---------- */

static int own_chain(struct sync_device *device)
{
    const struct sync_relay_store_ops *ops = device->records.ops;
    int rc = ops->head(device->records.ctx, &device->head_seq, device->head_hash, device->share_id,
                       device->self);
    if (rc)
        return device_fail(device, rc, "%s", ops->errmsg(device->records.ctx));
    if (device->head_seq == 0)
        return 0;
    struct sync_record record = {0};
    rc = kept_open(device, &record, device->self, device->head_seq);
    if (!rc)
        device->sealed_op_seq = last_op_seq(&record);
    sync_record_clear(&record);
    return rc;
}

int sync_device_open(struct sync_device **out, char *why, size_t why_len,
                     struct meta_replica *replica, const char *records_dir,
                     const struct sync_device_lock *lock)
{
    *out = NULL;
    int rc = sync_init();
    if (rc)
        return rc;
    struct sync_device *device = calloc(1, sizeof(*device));
    if (!device)
        return -ENOMEM;
    device->replica = replica;
    if (lock)
        device->lock = *lock;
    hold(device);
    device->store = meta_replica_store(replica);
    device->self = meta_store_replica(device->store);
    meta_store_share_id(device->share_id, device->store);
    meta_store_secret_key(device->secret_key, device->store);
    uint8_t public_key[SYNC_PUBLIC_KEY_LEN];
    meta_store_public_key(public_key, device->store);
    release(device);
    rc = refresh_keys(device);
    if (!rc && mkdir(records_dir, 0700) != 0 && errno != EEXIST)
        rc = device_fail(device, -errno, "cannot make %s: %s", records_dir, strerror(errno));
    if (!rc)
        rc = sync_relay_store_open_sqlite(&device->records, device->err, sizeof(device->err),
                                          records_dir);
    bool exists = false;
    if (!rc)
        rc = device->records.ops->share_exists(device->records.ctx, &exists, device->share_id);
    if (!rc && !exists) {
        rc = device->records.ops->share_register(device->records.ctx, device->share_id, public_key,
                                                 now_ns());
    }
    if (rc && device->records.ops && !device->err[0])
        device_fail(device, rc, "%s", device->records.ops->errmsg(device->records.ctx));
    if (!rc)
        rc = own_chain(device);
    struct head_walk walk = {device, 0};
    if (!rc)
        rc = device->records.ops->heads(device->records.ctx, device->share_id, note_unapplied,
                                        &walk);
    if (rc) {
        if (why)
            snprintf(why, why_len, "%s", device->err[0] ? device->err : strerror(-rc));
        sync_device_close(device);
        return rc;
    }
    device->stats.pending = device->pending_len;
    *out = device;
    return 0;
}

void sync_device_close(struct sync_device *device)
{
    if (!device)
        return;
    sync_relay_store_close(&device->records);
    sodium_memzero(device->secret_key, sizeof(device->secret_key));
    if (device->keys)
        sodium_memzero(device->keys, device->key_count * sizeof(*device->keys));
    free(device->keys);
    for (size_t i = 0; i < device->pending_len; i++)
        crdt_vv_free(&device->pending[i].deps);
    free(device->pending);
    free(device->wanted.slots);
    free(device->fresh_wanted);
    for (size_t i = 0; i < device->sealed_len; i++)
        free(device->sealed[i].ids);
    free(device->sealed);
    free(device->sealing.ids);
    free(device);
}

/* ---------- sealing ---------- */

/* The key epoch a membership op of this device starts (a removal), or 0. */
static uint32_t starts_epoch(const struct sync_op *op)
{
    if (op->kind != META_OP_MEMBER)
        return 0;
    struct meta_member_body body;
    if (meta_member_body_decode(&body, op->body, op->body_len) != 0)
        return 0;
    uint32_t epoch = body.epoch;
    meta_member_body_clear(&body);
    return epoch;
}

/* This device's ops that no record holds yet (bodies owned). */
struct unsealed {
    struct sync_op *ops;
    size_t len, cap;
};

/* Ops read per hold of the replica's lock while collecting: requests wait at most this long. */
#define COLLECT_STEP 256

/*
 * This device's ops after sealed_op_seq up to `upto`, read one by one from
 * the log by (replica, seq): a point lookup each, so sealing after a commit
 * costs what the commit added, not the size of the log.
 */
static int collect_own(struct sync_device *device, struct unsealed *list, uint64_t upto)
{
    int rc = 0;
    for (uint64_t seq = device->sealed_op_seq + 1; !rc && seq <= upto;) {
        hold(device);
        for (size_t step = 0; !rc && step < COLLECT_STEP && seq <= upto; step++, seq++) {
            struct sync_op *grown = grow(list->ops, &list->cap, list->len, sizeof(*grown), 64);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            list->ops = grown;
            struct meta_op op;
            rc = meta_oplog_get(&op, device->store, device->self, seq);
            if (rc) {
                device_fail(device, rc, "reading op %llu of this device: %s",
                            (unsigned long long)seq, meta_store_errmsg(device->store));
                break;
            }
            struct sync_op *out = &list->ops[list->len++];
            *out = (struct sync_op){.replica = op.replica,
                                    .seq = op.seq,
                                    .counter = op.counter,
                                    .kind = (uint8_t)op.kind,
                                    .author = op.author,
                                    .body = op.body, /* moved: freed by unsealed_free */
                                    .body_len = op.body_len};
            memcpy(out->node, op.node.bytes, META_ID_LEN);
        }
        release(device);
    }
    return rc;
}

static void unsealed_free(struct unsealed *list)
{
    for (size_t i = 0; i < list->len; i++)
        free((void *)list->ops[i].body);
    free(list->ops);
}

/* Sealing under key epoch `epoch` (held: refresh_keys). */
static void seal_of(struct sync_seal *seal, const struct sync_device *device, uint32_t epoch)
{
    *seal = (struct sync_seal){.share_id = device->share_id,
                               .epoch = epoch,
                               .key = device->keys[epoch].key,
                               .author = device->self,
                               .secret_key = device->secret_key};
}

/* Seals chunk `id` into a chunk record unless one is held already. */
static int seal_chunk(void *ctx, const uint8_t id[SYNC_HASH_LEN])
{
    struct sync_device *device = ctx;
    if (device->chunk_cursor++ < device->resume_skip)
        return 0; /* sealed by an earlier step of this batch */
    if (device->step_bytes >= SEAL_STEP_BYTES) {
        device->resume_skip = device->chunk_cursor - 1;
        return -EINPROGRESS; /* the step is full: the rest of this batch next step */
    }
    const struct sync_relay_store_ops *ops = device->records.ops;
    bool has = false;
    int rc = ops->chunk_has(device->records.ctx, &has, device->share_id, id);
    if (rc || has)
        return rc;
    uint8_t *data = NULL;
    size_t len = 0;
    hold(device);
    rc = meta_chunk_get(&data, &len, device->store, id);
    if (rc)
        device_fail(device, rc, "a chunk of this device's version is missing: %s",
                    meta_store_errmsg(device->store));
    release(device);
    if (rc)
        return rc;
    struct sync_seal seal;
    seal_of(&seal, device, device->seal_epoch);
    struct crdt_buf buf = {0};
    uint8_t hash[SYNC_HASH_LEN];
    rc = sync_record_seal_chunk(&buf, hash, &seal, id, data, len);
    free(data);
    if (!rc)
        rc = ops->chunk_put(device->records.ctx, NULL, device->share_id, id, device->self, buf.data,
                            buf.len);
    crdt_buf_free(&buf);
    if (!rc) {
        device->stats.chunks_sealed++;
        device->step_bytes += len;
    }
    return rc ? rc : ids_push(&device->sealing, id);
}

static void sealed_drop_first(struct sync_device *device)
{
    device->sealed_ids -= device->sealed[0].len;
    free(device->sealed[0].ids);
    memmove(device->sealed, device->sealed + 1, --device->sealed_len * sizeof(*device->sealed));
}

/* Remembers the chunks just sealed as those of own record `seq` (see sealed_chunks). */
static void sealed_remember(struct sync_device *device, uint64_t seq)
{
    struct sealed_chunks *grown =
        grow(device->sealed, &device->sealed_cap, device->sealed_len, sizeof(*grown), 16);
    if (!grown)
        return; /* forgotten: the record pushes every chunk it names */
    device->sealed = grown;
    device->sealed[device->sealed_len++] =
        (struct sealed_chunks){seq, device->sealing.ids, device->sealing.len};
    device->sealed_ids += device->sealing.len;
    device->sealing = (struct id_list){0};
    while (device->sealed_len > 1 &&
           (device->sealed_ids > SEALED_IDS_MAX || device->sealed_len > SEALED_RECORDS_MAX))
        sealed_drop_first(device);
}

/* Seals ops[0..count) as the next record of this device's chain, naming `deps`, and keeps it. */
static int seal_batch(struct sync_device *device, const struct crdt_vv *deps,
                      const struct sync_op *ops, size_t count)
{
    /*
     * Chunk records first, so whoever holds the op record can get what it
     * names. A big version's chunks take several steps: the sealing list
     * and the cursor carry over until its op record is sealed.
     */
    if (device->resume_seq != ops[0].seq) {
        device->resume_seq = ops[0].seq;
        device->resume_skip = 0;
    }
    device->chunk_cursor = 0;
    int rc = each_binary_chunk(device, ops, count, seal_chunk, device);
    if (rc)
        return rc;
    struct sync_seal seal;
    seal_of(&seal, device, device->seal_epoch);
    struct crdt_buf buf = {0};
    uint8_t hash[SYNC_HASH_LEN];
    uint64_t seq = device->head_seq + 1;
    rc = sync_record_seal_ops_deps(&buf, hash, &seal, seq, seq > 1 ? device->head_hash : NULL, deps,
                                   ops, count);
    if (!rc)
        rc = device->records.ops->op_put(device->records.ctx, NULL, device->share_id, device->self,
                                         seq, device->head_hash, hash, device->seal_epoch, buf.data,
                                         buf.len);
    crdt_buf_free(&buf);
    if (rc)
        return rc;
    device->head_seq = seq;
    memcpy(device->head_hash, hash, SYNC_HASH_LEN);
    device->sealed_op_seq = ops[count - 1].seq;
    device->resume_seq = 0;
    sealed_remember(device, seq);
    device->stats.records_sealed++;
    device->stats.records_kept++;
    return 0;
}

/*
 * The replica's version with this device's entry lowered to what records
 * hold; *upto: this device's last op.
 */
static int unsealed_since(struct sync_device *device, struct crdt_vv *out, uint64_t *upto)
{
    struct crdt_vv now = {0};
    int rc = replica_version(device, &now);
    *upto = rc ? 0 : crdt_vv_get(&now, device->self);
    for (size_t i = 0; !rc && i < now.len; i++) {
        uint64_t seq =
            now.entries[i].replica == device->self ? device->sealed_op_seq : now.entries[i].seq;
        if (seq)
            rc = crdt_vv_raise(out, now.entries[i].replica, seq);
    }
    crdt_vv_free(&now);
    return rc;
}

int sync_device_seal_step(struct sync_device *device, size_t *sealed, bool *more)
{
    size_t before = (size_t)device->stats.records_sealed;
    struct crdt_vv have = {0};
    struct unsealed list = {0};
    uint64_t upto = 0;
    *more = false;
    device->step_bytes = 0;
    int rc = unsealed_since(device, &have, &upto);
    if (!rc && upto > device->sealed_op_seq + SEAL_STEP_OPS) {
        upto = device->sealed_op_seq + SEAL_STEP_OPS;
        *more = true;
    }
    if (!rc)
        rc = collect_own(device, &list, upto);
    if (!rc)
        rc = refresh_keys(device);
    /*
     * Epochs: ops made before this device removed a member go under the old
     * epoch, and so does the removal's own op (the others learn the new key
     * from it); what follows goes under the new one.
     */
    device->seal_epoch = (uint32_t)(device->key_count - 1);
    for (size_t i = list.len; i-- > 0;) {
        uint32_t starts = starts_epoch(&list.ops[i]);
        if (starts && starts <= device->seal_epoch + 1)
            device->seal_epoch = starts - 1;
    }
    const struct sync_relay_store_ops *ops = device->records.ops;
    bool group = !rc && list.len > 0 && ops->begin(device->records.ctx) == 0;
    size_t start = 0, size = 0;
    for (size_t i = 0; !rc && i <= list.len; i++) {
        size_t op_size = i < list.len ? sync_record_op_size(&list.ops[i]) : 0;
        uint32_t starts = i > start ? starts_epoch(&list.ops[i - 1]) : 0;
        if (i < list.len && op_size > BATCH_ROOM)
            rc = device_fail(device, -EMSGSIZE,
                             "op %llu of this device is %zu bytes, over the record limit of %u",
                             (unsigned long long)list.ops[i].seq, op_size, BATCH_ROOM);
        else if (i > start && (i == list.len || starts || size + op_size > BATCH_TARGET)) {
            rc = seal_batch(device, &have, &list.ops[start], i - start);
            if (rc == -EINPROGRESS) {
                rc = 0; /* its chunks so far are kept: the rest and the record next step */
                *more = true;
                break;
            }
            if (starts && starts < device->key_count)
                device->seal_epoch = starts;
            start = i;
            size = 0;
            if (!rc && i < list.len && device->step_bytes >= SEAL_STEP_BYTES) {
                *more = true; /* the rest at the next step */
                break;
            }
        }
        size += op_size;
    }
    if (group) {
        if (rc)
            ops->rollback(device->records.ctx);
        else
            rc = ops->commit(device->records.ctx);
    }
    if (rc) {
        /* The records store rolled back: so does what this device believes of its chain. */
        int again = own_chain(device);
        device->resume_seq = 0;
        while (device->sealed_len &&
               device->sealed[device->sealed_len - 1].seq > device->head_seq) {
            device->sealed_ids -= device->sealed[device->sealed_len - 1].len;
            free(device->sealed[--device->sealed_len].ids);
        }
        if (!device->err[0] || again)
            device_fail(device, rc, "sealing: %s", ops->errmsg(device->records.ctx));
    }
    unsealed_free(&list);
    crdt_vv_free(&have);
    if (sealed)
        *sealed = (size_t)device->stats.records_sealed - before;
    if (rc)
        *more = false;
    return rc;
}

int sync_device_seal(struct sync_device *device, size_t *sealed)
{
    size_t total = 0, step = 0;
    bool more = true;
    int rc = 0;
    while (!rc && more) {
        rc = sync_device_seal_step(device, &step, &more);
        total += step;
    }
    if (sealed)
        *sealed = total;
    return rc;
}

/* ---------- accepting ---------- */

static int refuse(struct sync_device *device, enum sync_reason *out, enum sync_reason reason,
                  uint64_t author, const char *what)
{
    if (out)
        *out = reason;
    device->stats.refused[reason]++;
    return device_fail(device, sync_reason_errno(reason), "refused %s of %016llx: %s", what,
                       (unsigned long long)author, sync_reason_str(reason));
}

static int accept_chunk(struct sync_device *device, enum sync_reason *reason,
                        const struct sync_record_header *header, const uint8_t *bytes, size_t len)
{
    const struct sync_relay_store_ops *ops = device->records.ops;
    bool kept = false, have = false;
    int rc = ops->chunk_has(device->records.ctx, &kept, device->share_id, header->chunk_id);
    hold(device);
    if (!rc)
        rc = meta_chunk_has(&have, device->store, header->chunk_id);
    release(device);
    if (rc)
        return rc;
    if (kept && have) {
        device->stats.duplicates++;
        return 0;
    }
    struct sync_share share;
    share_of(&share, device);
    struct sync_record record = {0};
    enum sync_reason why = SYNC_REASON_NONE;
    rc = sync_record_open(&record, &why, &share, bytes, len);
    if (rc && why != SYNC_REASON_NONE)
        return refuse(device, reason, why, header->author, "a chunk");
    uint8_t id[META_HASH_LEN];
    memcpy(id, header->chunk_id, META_HASH_LEN);
    /* meta_chunk_put hashes the bytes against the id itself: hashed once, not twice. */
    uint8_t actual[META_HASH_LEN];
    if (!rc && have &&
        (rc = meta_store_chunk_id(actual, device->store, record.chunk, record.chunk_len)) == 0 &&
        memcmp(actual, id, META_HASH_LEN) != 0)
        rc = -EBADMSG;
    if (!rc && !have) {
        hold(device);
        rc = meta_chunk_put(device->store, id, record.chunk, record.chunk_len);
        release(device);
    }
    if (rc == -EBADMSG) {
        /* Signed by a member, but the bytes are not the chunk it names: forged content. */
        sync_record_clear(&record);
        return refuse(device, reason, SYNC_REASON_FORGED, header->author, "a chunk");
    }
    if (!rc && !kept)
        rc = ops->chunk_put(device->records.ctx, NULL, device->share_id, id, header->author, bytes,
                            len);
    sync_record_clear(&record);
    if (rc)
        return device_fail(device, rc, "keeping a chunk: %s", strerror(-rc));
    device->stats.chunks_received++;
    /* Only a chunk some record waited for can let one apply. */
    uint64_t owner = 0;
    if (!wanted_remove(&device->wanted, &owner, id))
        return 0;
    struct pending *slot = owner ? pending_find(device, owner) : NULL;
    bool retry = slot && slot->known == slot->from && slot->missing && --slot->missing == 0;
    if (device->wanted.len == 0) {
        for (size_t i = 0; i < device->pending_len; i++)
            device->pending[i].missing = 0;
        retry = true;
    }
    return retry && device->pending_len ? sync_device_apply_pending(device, NULL) : 0;
}

/* Is op record `seq` of `author`, as kept, the one with `hash`? */
static int kept_hash_equal(struct sync_device *device, bool *equal, uint64_t author, uint64_t seq,
                           const uint8_t hash[SYNC_HASH_LEN])
{
    struct kept kept = {0};
    size_t count = 0;
    int rc = device->records.ops->op_read(device->records.ctx, &count, device->share_id, author,
                                          seq, 1, SYNC_RECORD_MAX, copy_record, &kept);
    *equal = false;
    if (!rc && count == 1) {
        uint8_t kept_hash[SYNC_HASH_LEN];
        sync_record_hash(kept_hash, kept.bytes, kept.len);
        *equal = memcmp(kept_hash, hash, SYNC_HASH_LEN) == 0;
    }
    free(kept.bytes);
    return rc;
}

static int accept_ops(struct sync_device *device, enum sync_reason *reason,
                      const struct sync_record_header *header, const uint8_t *bytes, size_t len)
{
    const struct sync_relay_store_ops *ops = device->records.ops;
    uint64_t author = header->author, head = 0;
    uint8_t head_hash[SYNC_HASH_LEN], hash[SYNC_HASH_LEN];
    sync_record_hash(hash, bytes, len);
    int rc = ops->head(device->records.ctx, &head, head_hash, device->share_id, author);
    if (rc)
        return device_fail(device, rc, "%s", ops->errmsg(device->records.ctx));
    if (header->seq <= head) {
        bool same;
        rc = kept_hash_equal(device, &same, author, header->seq, hash);
        if (rc)
            return rc;
        if (!same)
            return refuse(device, reason, SYNC_REASON_FORK, author, "a record");
        device->stats.duplicates++;
        return 0;
    }
    if (header->seq > head + 1)
        return refuse(device, reason, SYNC_REASON_DROPPED, author, "a record");
    if (head > 0 && memcmp(header->prev, head_hash, SYNC_HASH_LEN) != 0)
        return refuse(device, reason, SYNC_REASON_FORK, author, "a record");
    struct sync_share share;
    share_of(&share, device);
    struct sync_record record = {0};
    enum sync_reason why = SYNC_REASON_NONE;
    rc = sync_record_open(&record, &why, &share, bytes, len);
    if (rc && why != SYNC_REASON_NONE)
        return refuse(device, reason, why, author, "a record");
    if (!rc && author == device->self) {
        /* Our own record we do not hold: another device cannot sign as us, so we lost it. */
        sync_record_clear(&record);
        return device_fail(device, -EUCLEAN,
                           "a peer holds record %llu of this device, which this device lost",
                           (unsigned long long)header->seq);
    }
    if (!rc)
        rc = ops->op_put(device->records.ctx, NULL, device->share_id, author, header->seq,
                         header->prev, hash, header->epoch, bytes, len);
    if (rc) {
        sync_record_clear(&record);
        return device_fail(device, rc, "keeping a record of %016llx: %s",
                           (unsigned long long)author, ops->errmsg(device->records.ctx));
    }
    device->stats.records_kept++;
    uint64_t missing = 0;
    if (pending_find(device, author)) {
        /* It waits behind its author's line; what it names is asked for meanwhile. */
        rc = want_chunks(device, &missing, &record, 0);
        sync_record_clear(&record);
        return rc;
    }
    rc = apply_record(device, &missing, &record);
    if (rc == -EAGAIN) {
        rc = pending_add(device, author, header->seq);
        if (!rc)
            rc = pending_note(pending_find(device, author), header->seq, &record, missing);
    } else if (!rc && device->pending_len) {
        rc = sync_device_apply_pending(device, NULL); /* it may be what others waited for */
    }
    sync_record_clear(&record);
    device->stats.pending = device->pending_len;
    return rc;
}

int sync_device_accept(struct sync_device *device, enum sync_reason *reason, const uint8_t *bytes,
                       size_t len)
{
    if (reason)
        *reason = SYNC_REASON_NONE;
    device->err[0] = '\0';
    struct sync_record_header header;
    int rc = sync_record_peek(&header, bytes, len);
    if (rc)
        return refuse(device, reason,
                      rc == -EPROTONOSUPPORT ? SYNC_REASON_VERSION : SYNC_REASON_MALFORMED, 0,
                      "a record");
    if (memcmp(header.share_id, device->share_id, SYNC_SHARE_ID_LEN) != 0)
        return refuse(device, reason, SYNC_REASON_WRONG_SHARE, header.author, "a record");
    /* A removal applied since may have given this device the key it names. */
    if (header.epoch >= device->key_count && (rc = refresh_keys(device)) != 0)
        return rc;
    return header.kind == SYNC_RECORD_CHUNK ? accept_chunk(device, reason, &header, bytes, len)
                                            : accept_ops(device, reason, &header, bytes, len);
}

/* ---------- chunks wanted and pushed ---------- */

static int push_id(void *ctx, const uint8_t id[SYNC_HASH_LEN])
{
    return ids_push(ctx, id);
}

int sync_device_chunks_named(struct sync_device *device, uint8_t (**ids)[SYNC_HASH_LEN],
                             size_t *count, const uint8_t *bytes, size_t len)
{
    struct sync_share share;
    share_of(&share, device);
    struct sync_record record = {0};
    struct id_list list = {0};
    int rc = sync_record_open(&record, NULL, &share, bytes, len);
    if (!rc)
        rc = each_binary_chunk(device, record.ops, record.op_count, push_id, &list);
    sync_record_clear(&record);
    if (rc) {
        free(list.ids);
        list = (struct id_list){0};
    }
    *ids = list.ids;
    *count = list.len;
    return rc;
}

/* The wanted ids handed out last before `before_ns` (all: INT64_MAX), now handed out. */
static int wanted_take(struct sync_device *device, uint8_t (**ids)[SYNC_HASH_LEN], size_t *count,
                       int64_t before_ns)
{
    struct id_list list = {0};
    int64_t now = now_ns();
    int rc = 0;
    for (size_t i = 0; !rc && i < device->wanted.cap; i++) {
        struct wanted_slot *slot = &device->wanted.slots[i];
        if (slot->used && slot->asked_ns < before_ns) {
            rc = ids_push(&list, slot->id);
            slot->asked_ns = now;
        }
    }
    if (rc) {
        free(list.ids);
        list = (struct id_list){0};
    }
    *ids = list.ids;
    *count = list.len;
    return rc;
}

int sync_device_wanted(struct sync_device *device, uint8_t (**ids)[SYNC_HASH_LEN], size_t *count)
{
    return wanted_take(device, ids, count, INT64_MAX);
}

int sync_device_wanted_stale(struct sync_device *device, uint8_t (**ids)[SYNC_HASH_LEN],
                             size_t *count, int64_t age_ns)
{
    return wanted_take(device, ids, count, now_ns() - age_ns);
}

int sync_device_wanted_new(struct sync_device *device, uint8_t (**ids)[SYNC_HASH_LEN],
                           size_t *count)
{
    size_t kept = 0;
    int64_t now = now_ns();
    for (size_t i = 0; i < device->fresh_wanted_len; i++) {
        struct wanted_slot *slot = wanted_find(&device->wanted, device->fresh_wanted[i]);
        if (!slot)
            continue;
        slot->asked_ns = now;
        memmove(device->fresh_wanted[kept++], device->fresh_wanted[i], SYNC_HASH_LEN);
    }
    *ids = kept ? device->fresh_wanted : NULL;
    *count = kept;
    if (!kept)
        free(device->fresh_wanted);
    device->fresh_wanted = NULL;
    device->fresh_wanted_len = device->fresh_wanted_cap = 0;
    return 0;
}

int sync_device_fresh_chunks(struct sync_device *device, uint8_t (**ids)[SYNC_HASH_LEN],
                             size_t *count, uint64_t seq)
{
    *ids = NULL;
    *count = 0;
    for (size_t i = 0; i < device->sealed_len; i++) {
        const struct sealed_chunks *entry = &device->sealed[i];
        if (entry->seq != seq)
            continue;
        if (entry->len == 0)
            return 0;
        *ids = malloc(entry->len * sizeof(**ids));
        if (!*ids)
            return -ENOMEM;
        memcpy(*ids, entry->ids, entry->len * sizeof(**ids));
        *count = entry->len;
        return 0;
    }
    return -ENOENT;
}

void sync_device_forget_fresh(struct sync_device *device, uint64_t seq)
{
    size_t kept = 0;
    for (size_t i = 0; i < device->sealed_len; i++) {
        if (device->sealed[i].seq <= seq) {
            device->sealed_ids -= device->sealed[i].len;
            free(device->sealed[i].ids);
        } else {
            device->sealed[kept++] = device->sealed[i];
        }
    }
    device->sealed_len = kept;
}

/* ---------- accessors ---------- */

struct sync_relay_store *sync_device_records(struct sync_device *device)
{
    return &device->records;
}

const uint8_t *sync_device_share_id(const struct sync_device *device)
{
    return device->share_id;
}

const char *sync_device_errmsg(const struct sync_device *device)
{
    return device->err;
}

void sync_device_stats(struct sync_device_stats *out, const struct sync_device *device)
{
    *out = device->stats;
}
