/*
 * meta/faultvfs: fault injection for tests (built into meta_fault_dep only,
 * never into the mount). A SQLite VFS that wraps the default one, and a
 * struct meta_io for working copies, share one counter of writes and one of
 * fsyncs, so a test can make "the n-th write from now" fail with EIO or
 * ENOSPC, whether SQLite or the working-copy code does it, or kill the
 * process right there (SIGKILL) for crash tests.
 *
 * State is process-global and not thread-safe: tests are single-threaded.
 */
#ifndef WEFT_META_FAULTVFS_H
#define WEFT_META_FAULTVFS_H

#include "meta/store.h"

#include <stdbool.h>
#include <stdint.h>

enum meta_fault_op {
    META_FAULT_WRITE, /* SQLite xWrite, working-copy pwrite */
    META_FAULT_SYNC,  /* SQLite xSync, working-copy and directory fsync */
};

enum meta_fault_action {
    META_FAULT_EIO,    /* SQLITE_IOERR_WRITE / _FSYNC; -1 with EIO */
    META_FAULT_ENOSPC, /* SQLITE_FULL; -1 with ENOSPC */
    META_FAULT_KILL,   /* raise(SIGKILL) before the operation happens */
};

/* The working-copy I/O that counts and fails with the VFS: meta_store_set_io(store, &...). */
extern const struct meta_io meta_faultvfs_io;

/* Registers the fault VFS as SQLite's default (idempotent); stores opened later use it. */
META_MUST_CHECK int meta_faultvfs_install(void);
/*
 * Resets the counters and arms a fault: the nth (1-based) `op` from now
 * gets `action`; with `sticky`, every later one too (a disk that stays full).
 */
void meta_faultvfs_arm(enum meta_fault_op op, uint64_t nth, enum meta_fault_action action,
                       bool sticky);
/* Disarms and resets the counters. */
void meta_faultvfs_disarm(void);
/* How many `op`s were seen since the last arm or disarm. */
uint64_t meta_faultvfs_count(enum meta_fault_op op);
/* Whether the armed fault has struck since it was armed. */
bool meta_faultvfs_fired(void);

#endif
