/*
 * meta/walbuf: a SQLite VFS shim that gathers the writes of a WAL file into
 * one write per transaction.
 *
 * SQLite appends a transaction to the WAL as frames, and writes each frame
 * with two calls: its 24-byte header, then the page. A frame is 24 bytes
 * longer than a page, so nearly every page write straddles two pages of the
 * file, and a commit of ten pages costs twenty writes that touch thirty
 * pages of the page cache. Most commits of the store are a few pages, so
 * this overhead was most of what a commit cost the kernel.
 *
 * The shim keeps *appended* bytes in a buffer and writes them in one call
 * when the transaction's commit frame is complete: a frame header whose
 * "database size after commit" field (bytes 4..7) is not zero marks it, and
 * the page written after it ends it. Only appends are kept: the shim knows
 * where the file's end is (the WAL header, 32 bytes at offset 0, starts it
 * again), and any other write (a big transaction rewriting a frame it spilled
 * earlier, or the frame checksums it rewrites after its commit frame) first
 * writes out the buffer and then goes straight through, so its error reaches
 * SQLite at that write. So when SQLite's COMMIT returns, every byte of it has
 * been handed to the kernel, as before: a killed process loses nothing that
 * committed. Before anything else touches the file (a read, a sync, a
 * truncate, asking its size, closing it) the buffer is written first, so
 * SQLite never sees the file behind what it wrote. A write error is returned
 * from the call that wrote the buffer and the buffered bytes are dropped:
 * SQLite then treats the transaction as failed, as it would have had the
 * first of its writes failed.
 *
 * Other files (the database, temporary files) pass through untouched. The
 * shim sits on whatever VFS is the default when a file is opened (the fault
 * injection VFS in tests), so faults still strike the real writes.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WALBUF_NAME "weft-walbuf"
#define WALBUF_MAX  (1u << 20) /* a bigger transaction is written out on the way */
#define WRITE_MAX   65536u     /* bytes per write of the real file: the largest page */

struct walbuf_file {
    sqlite3_file base;
    sqlite3_file *real; /* the underlying VFS's file, malloc'ed (its size is known at open) */
    bool wal;
    uint8_t *buf; /* bytes for [start, start + len) of the file, not written yet */
    size_t len, cap;
    sqlite3_int64 start;
    sqlite3_int64 end; /* the end of what was written to the file (buffer included) */
    bool
        commit_next; /* the last write was a commit frame's header: its page ends the transaction */
};

static sqlite3_vfs *real_vfs(void)
{
    return sqlite3_vfs_find(NULL);
}

static sqlite3_file *real_of(sqlite3_file *file)
{
    return ((struct walbuf_file *)file)->real;
}

/*
 * Writes out the buffer; on failure the bytes are dropped (see top) and the
 * error returned. In pieces of at most WRITE_MAX: SQLite's own writes are a
 * page at most, and its unix VFS cuts anything above 128 KiB short.
 */
static int flush(struct walbuf_file *file)
{
    int rc = SQLITE_OK;
    for (size_t done = 0; rc == SQLITE_OK && done < file->len; done += WRITE_MAX) {
        size_t piece = file->len - done < WRITE_MAX ? file->len - done : WRITE_MAX;
        rc = file->real->pMethods->xWrite(file->real, file->buf + done, (int)piece,
                                          file->start + (sqlite3_int64)done);
    }
    file->len = 0;
    return rc;
}

static int file_write(sqlite3_file *base, const void *data, int amount, sqlite3_int64 offset)
{
    struct walbuf_file *file = (struct walbuf_file *)base;
    if (!file->wal || amount <= 0)
        return file->real->pMethods->xWrite(file->real, data, amount, offset);
    /* This write is a commit frame's page: once it is out, the transaction is. */
    bool ends_commit = file->commit_next;
    const uint8_t *bytes = data;
    file->commit_next = false;
    if (offset == 0 && amount == 32)
        file->end = 0; /* the WAL header: the log starts again from the top */
    bool append = offset == file->end;
    if (offset + amount > file->end)
        file->end = offset + amount;
    int rc = SQLITE_OK;
    if (file->len && (!append || file->len + (size_t)amount > WALBUF_MAX))
        rc = flush(file);
    if (rc != SQLITE_OK)
        return rc;
    if (!append || (size_t)amount > WRITE_MAX) {
        /* Anything but an append goes straight through, after what is buffered. */
        rc = flush(file);
        return rc != SQLITE_OK ? rc
                               : file->real->pMethods->xWrite(file->real, data, amount, offset);
    }
    if (file->len + (size_t)amount > file->cap) {
        size_t cap = file->cap ? file->cap : 64 * 1024;
        while (cap < file->len + (size_t)amount)
            cap *= 2;
        uint8_t *grown = realloc(file->buf, cap);
        if (!grown) {
            /* No memory to gather: write directly, in order. */
            rc = flush(file);
            return rc != SQLITE_OK ? rc
                                   : file->real->pMethods->xWrite(file->real, data, amount, offset);
        }
        file->buf = grown;
        file->cap = cap;
    }
    if (file->len == 0)
        file->start = offset;
    memcpy(file->buf + file->len, data, (size_t)amount);
    file->len += (size_t)amount;
    if (ends_commit)
        return flush(file);
    /* A frame header (24 bytes) with a nonzero "size after commit" starts a commit frame. */
    file->commit_next = amount == 24 && (bytes[4] | bytes[5] | bytes[6] | bytes[7]) != 0;
    return SQLITE_OK;
}

static int file_close(sqlite3_file *base)
{
    struct walbuf_file *file = (struct walbuf_file *)base;
    int rc = flush(file);
    int closed = file->real->pMethods ? file->real->pMethods->xClose(file->real) : SQLITE_OK;
    free(file->buf);
    free(file->real);
    file->buf = NULL;
    file->real = NULL;
    return rc != SQLITE_OK ? rc : closed;
}

static int file_read(sqlite3_file *base, void *buf, int amount, sqlite3_int64 offset)
{
    int rc = flush((struct walbuf_file *)base);
    return rc != SQLITE_OK ? rc
                           : real_of(base)->pMethods->xRead(real_of(base), buf, amount, offset);
}

static int file_truncate(sqlite3_file *base, sqlite3_int64 size)
{
    int rc = flush((struct walbuf_file *)base);
    return rc != SQLITE_OK ? rc : real_of(base)->pMethods->xTruncate(real_of(base), size);
}

static int file_sync(sqlite3_file *base, int flags)
{
    int rc = flush((struct walbuf_file *)base);
    return rc != SQLITE_OK ? rc : real_of(base)->pMethods->xSync(real_of(base), flags);
}

static int file_size(sqlite3_file *base, sqlite3_int64 *size)
{
    int rc = flush((struct walbuf_file *)base);
    return rc != SQLITE_OK ? rc : real_of(base)->pMethods->xFileSize(real_of(base), size);
}

static int file_lock(sqlite3_file *base, int level)
{
    return real_of(base)->pMethods->xLock(real_of(base), level);
}

static int file_unlock(sqlite3_file *base, int level)
{
    int rc = flush((struct walbuf_file *)base);
    int unlocked = real_of(base)->pMethods->xUnlock(real_of(base), level);
    return rc != SQLITE_OK ? rc : unlocked;
}

static int file_check_reserved(sqlite3_file *base, int *out)
{
    return real_of(base)->pMethods->xCheckReservedLock(real_of(base), out);
}

static int file_control(sqlite3_file *base, int op, void *arg)
{
    int rc = flush((struct walbuf_file *)base);
    return rc != SQLITE_OK ? rc : real_of(base)->pMethods->xFileControl(real_of(base), op, arg);
}

static int file_sector_size(sqlite3_file *base)
{
    return real_of(base)->pMethods->xSectorSize(real_of(base));
}

static int file_device_characteristics(sqlite3_file *base)
{
    return real_of(base)->pMethods->xDeviceCharacteristics(real_of(base));
}

static int file_shm_map(sqlite3_file *base, int page, int page_size, int extend,
                        void volatile **out)
{
    return real_of(base)->pMethods->xShmMap(real_of(base), page, page_size, extend, out);
}

static int file_shm_lock(sqlite3_file *base, int offset, int n, int flags)
{
    return real_of(base)->pMethods->xShmLock(real_of(base), offset, n, flags);
}

static void file_shm_barrier(sqlite3_file *base)
{
    real_of(base)->pMethods->xShmBarrier(real_of(base));
}

static int file_shm_unmap(sqlite3_file *base, int delete_flag)
{
    return real_of(base)->pMethods->xShmUnmap(real_of(base), delete_flag);
}

static int file_fetch(sqlite3_file *base, sqlite3_int64 offset, int amount, void **out)
{
    int rc = flush((struct walbuf_file *)base);
    return rc != SQLITE_OK ? rc
                           : real_of(base)->pMethods->xFetch(real_of(base), offset, amount, out);
}

static int file_unfetch(sqlite3_file *base, sqlite3_int64 offset, void *page)
{
    return real_of(base)->pMethods->xUnfetch(real_of(base), offset, page);
}

static const sqlite3_io_methods walbuf_methods = {
    .iVersion = 3,
    .xClose = file_close,
    .xRead = file_read,
    .xWrite = file_write,
    .xTruncate = file_truncate,
    .xSync = file_sync,
    .xFileSize = file_size,
    .xLock = file_lock,
    .xUnlock = file_unlock,
    .xCheckReservedLock = file_check_reserved,
    .xFileControl = file_control,
    .xSectorSize = file_sector_size,
    .xDeviceCharacteristics = file_device_characteristics,
    .xShmMap = file_shm_map,
    .xShmLock = file_shm_lock,
    .xShmBarrier = file_shm_barrier,
    .xShmUnmap = file_shm_unmap,
    .xFetch = file_fetch,
    .xUnfetch = file_unfetch,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *base, int flags,
                    int *out_flags)
{
    (void)vfs;
    struct walbuf_file *file = (struct walbuf_file *)base;
    memset(file, 0, sizeof(*file));
    sqlite3_vfs *real = real_vfs();
    file->real = calloc(1, (size_t)real->szOsFile);
    if (!file->real)
        return SQLITE_NOMEM;
    file->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = real->xOpen(real, name, file->real, flags, out_flags);
    /* The real open sets pMethods when it needs xClose, even on failure. */
    if (file->real->pMethods) {
        file->base.pMethods = &walbuf_methods;
    } else {
        free(file->real);
        file->real = NULL;
    }
    return rc;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    return real_vfs()->xDelete(real_vfs(), name, sync_dir);
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return real_vfs()->xAccess(real_vfs(), name, flags, out);
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int len, char *out)
{
    (void)vfs;
    return real_vfs()->xFullPathname(real_vfs(), name, len, out);
}

static void *vfs_dlopen(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs()->xDlOpen(real_vfs(), name);
}

static void vfs_dlerror(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    real_vfs()->xDlError(real_vfs(), len, out);
}

static void (*vfs_dlsym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
    (void)vfs;
    return real_vfs()->xDlSym(real_vfs(), handle, symbol);
}

static void vfs_dlclose(sqlite3_vfs *vfs, void *handle)
{
    (void)vfs;
    real_vfs()->xDlClose(real_vfs(), handle);
}

static int vfs_randomness(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    return real_vfs()->xRandomness(real_vfs(), len, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int microseconds)
{
    (void)vfs;
    return real_vfs()->xSleep(real_vfs(), microseconds);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return real_vfs()->xCurrentTime(real_vfs(), out);
}

static int vfs_last_error(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    return real_vfs()->xGetLastError(real_vfs(), len, out);
}

static int vfs_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return real_vfs()->xCurrentTimeInt64(real_vfs(), out);
}

static sqlite3_vfs walbuf_vfs = {
    .iVersion = 2,
    .szOsFile = (int)sizeof(struct walbuf_file),
    .mxPathname = 0, /* the default VFS's, at registration */
    .zName = WALBUF_NAME,
    .xOpen = vfs_open,
    .xDelete = vfs_delete,
    .xAccess = vfs_access,
    .xFullPathname = vfs_full_pathname,
    .xDlOpen = vfs_dlopen,
    .xDlError = vfs_dlerror,
    .xDlSym = vfs_dlsym,
    .xDlClose = vfs_dlclose,
    .xRandomness = vfs_randomness,
    .xSleep = vfs_sleep,
    .xCurrentTime = vfs_current_time,
    .xGetLastError = vfs_last_error,
    .xCurrentTimeInt64 = vfs_current_time64,
};

static pthread_once_t registered = PTHREAD_ONCE_INIT;
static int register_rc = SQLITE_ERROR;

static void register_vfs(void)
{
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (!base || base->iVersion < 2)
        return;
    walbuf_vfs.mxPathname = base->mxPathname;
    register_rc = sqlite3_vfs_register(&walbuf_vfs, 0);
}

const char *store_walbuf_vfs(void)
{
    pthread_once(&registered, register_vfs);
    return register_rc == SQLITE_OK ? WALBUF_NAME : NULL;
}
