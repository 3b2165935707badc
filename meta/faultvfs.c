/*
 * meta/faultvfs: see faultvfs.h. The VFS is a shim: each sqlite3_file it
 * opens is our header followed by the real VFS's file object, and every
 * method forwards to the real one after the fault check. Everything but
 * xWrite and xSync passes through untouched.
 */
#include "meta/faultvfs.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <string.h>
#include <unistd.h>

static struct {
    bool armed;
    bool sticky;
    bool fired;
    enum meta_fault_op op;
    enum meta_fault_action action;
    uint64_t nth;
    uint64_t count[2];
} fault;

/* Counts one op; returns the action to take, or -1 for none. */
static int fault_check(enum meta_fault_op op)
{
    uint64_t seen = ++fault.count[op];
    if (!fault.armed || op != fault.op)
        return -1;
    if (seen == fault.nth || (fault.sticky && seen > fault.nth)) {
        fault.fired = true;
        if (fault.action == META_FAULT_KILL)
            raise(SIGKILL);
        return (int)fault.action;
    }
    return -1;
}

void meta_faultvfs_arm(enum meta_fault_op op, uint64_t nth, enum meta_fault_action action,
                       bool sticky)
{
    memset(&fault, 0, sizeof(fault));
    fault.armed = true;
    fault.op = op;
    fault.nth = nth;
    fault.action = action;
    fault.sticky = sticky;
}

void meta_faultvfs_disarm(void)
{
    memset(&fault, 0, sizeof(fault));
}

uint64_t meta_faultvfs_count(enum meta_fault_op op)
{
    return fault.count[op];
}

bool meta_faultvfs_fired(void)
{
    return fault.fired;
}

/* ---- working-copy I/O ---- */

static ssize_t fault_pwrite(int fd, const void *buf, size_t len, off_t offset)
{
    int action = fault_check(META_FAULT_WRITE);
    if (action >= 0) {
        errno = action == META_FAULT_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    return pwrite(fd, buf, len, offset);
}

static int fault_fsync(int fd)
{
    int action = fault_check(META_FAULT_SYNC);
    if (action >= 0) {
        errno = action == META_FAULT_ENOSPC ? ENOSPC : EIO;
        return -1;
    }
    return fdatasync(fd);
}

const struct meta_io meta_faultvfs_io = {.pwrite = fault_pwrite, .fsync = fault_fsync};

/* ---- the VFS shim ---- */

struct fault_file {
    sqlite3_file base;
    sqlite3_file *real; /* follows this struct in the same allocation */
};

static sqlite3_vfs *real_vfs;

static sqlite3_file *real_of(sqlite3_file *file)
{
    return ((struct fault_file *)file)->real;
}

static int file_close(sqlite3_file *file)
{
    return real_of(file)->pMethods->xClose(real_of(file));
}

static int file_read(sqlite3_file *file, void *buf, int amount, sqlite3_int64 offset)
{
    return real_of(file)->pMethods->xRead(real_of(file), buf, amount, offset);
}

static int file_write(sqlite3_file *file, const void *buf, int amount, sqlite3_int64 offset)
{
    int action = fault_check(META_FAULT_WRITE);
    if (action >= 0)
        return action == META_FAULT_ENOSPC ? SQLITE_FULL : SQLITE_IOERR_WRITE;
    return real_of(file)->pMethods->xWrite(real_of(file), buf, amount, offset);
}

static int file_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    return real_of(file)->pMethods->xTruncate(real_of(file), size);
}

static int file_sync(sqlite3_file *file, int flags)
{
    int action = fault_check(META_FAULT_SYNC);
    if (action >= 0)
        return action == META_FAULT_ENOSPC ? SQLITE_FULL : SQLITE_IOERR_FSYNC;
    return real_of(file)->pMethods->xSync(real_of(file), flags);
}

static int file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    return real_of(file)->pMethods->xFileSize(real_of(file), size);
}

static int file_lock(sqlite3_file *file, int level)
{
    return real_of(file)->pMethods->xLock(real_of(file), level);
}

static int file_unlock(sqlite3_file *file, int level)
{
    return real_of(file)->pMethods->xUnlock(real_of(file), level);
}

static int file_check_reserved(sqlite3_file *file, int *out)
{
    return real_of(file)->pMethods->xCheckReservedLock(real_of(file), out);
}

static int file_control(sqlite3_file *file, int op, void *arg)
{
    return real_of(file)->pMethods->xFileControl(real_of(file), op, arg);
}

static int file_sector_size(sqlite3_file *file)
{
    return real_of(file)->pMethods->xSectorSize(real_of(file));
}

static int file_device_characteristics(sqlite3_file *file)
{
    return real_of(file)->pMethods->xDeviceCharacteristics(real_of(file));
}

static int file_shm_map(sqlite3_file *file, int page, int page_size, int extend,
                        void volatile **out)
{
    return real_of(file)->pMethods->xShmMap(real_of(file), page, page_size, extend, out);
}

static int file_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    return real_of(file)->pMethods->xShmLock(real_of(file), offset, n, flags);
}

static void file_shm_barrier(sqlite3_file *file)
{
    real_of(file)->pMethods->xShmBarrier(real_of(file));
}

static int file_shm_unmap(sqlite3_file *file, int delete_flag)
{
    return real_of(file)->pMethods->xShmUnmap(real_of(file), delete_flag);
}

static int file_fetch(sqlite3_file *file, sqlite3_int64 offset, int amount, void **out)
{
    return real_of(file)->pMethods->xFetch(real_of(file), offset, amount, out);
}

static int file_unfetch(sqlite3_file *file, sqlite3_int64 offset, void *page)
{
    return real_of(file)->pMethods->xUnfetch(real_of(file), offset, page);
}

static const sqlite3_io_methods fault_methods = {
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

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                    int *out_flags)
{
    (void)vfs;
    struct fault_file *shim = (struct fault_file *)file;
    shim->real = (sqlite3_file *)(shim + 1);
    int rc = real_vfs->xOpen(real_vfs, name, shim->real, flags, out_flags);
    /* The real open sets pMethods when it needs xClose, even on failure. */
    shim->base.pMethods = shim->real->pMethods ? &fault_methods : NULL;
    return rc;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void)vfs;
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void)vfs;
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int len, char *out)
{
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, name, len, out);
}

static void *vfs_dlopen(sqlite3_vfs *vfs, const char *name)
{
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, name);
}

static void vfs_dlerror(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    real_vfs->xDlError(real_vfs, len, out);
}

static void (*vfs_dlsym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, handle, symbol);
}

static void vfs_dlclose(sqlite3_vfs *vfs, void *handle)
{
    (void)vfs;
    real_vfs->xDlClose(real_vfs, handle);
}

static int vfs_randomness(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, len, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int microseconds)
{
    (void)vfs;
    return real_vfs->xSleep(real_vfs, microseconds);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int vfs_last_error(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    return real_vfs->xGetLastError(real_vfs, len, out);
}

static int vfs_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static sqlite3_vfs fault_vfs = {
    .iVersion = 2,
    .mxPathname = 0, /* set from the real VFS at install */
    .zName = "weft-fault",
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

int meta_faultvfs_install(void)
{
    if (real_vfs)
        return 0;
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (!base || base->iVersion < 2)
        return -EIO;
    real_vfs = base;
    fault_vfs.szOsFile = (int)sizeof(struct fault_file) + base->szOsFile;
    fault_vfs.mxPathname = base->mxPathname;
    return sqlite3_vfs_register(&fault_vfs, 1) == SQLITE_OK ? 0 : -EIO;
}
