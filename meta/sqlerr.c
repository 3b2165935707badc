/* meta/sqlerr: SQLite's result codes as errnos (README "Errors"). */
#include "meta/sqlerr.h"

#include <errno.h>
#include <sqlite3.h>

int meta_sqlite_errno(int sqlite_rc)
{
    switch (sqlite_rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
        return -EEXIST;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return -ENOENT;
    case SQLITE_IOERR_NOMEM:
        return -ENOMEM;
    default:
        break;
    }
    switch (sqlite_rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EUCLEAN;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        return -EINVAL;
    case SQLITE_TOOBIG:
        return -EFBIG;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EPERM;
    default: /* SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_PROTOCOL, ... */
        return -EIO;
    }
}
