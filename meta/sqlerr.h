/*
 * meta/sqlerr: one mapping of SQLite's result codes to errnos, shared by the
 * device store (store.c) and the relay's store (relaydb.c), so both report a
 * full disk, a busy lock or a damaged file the same way (README "Errors").
 */
#ifndef WEFT_META_SQLERR_H
#define WEFT_META_SQLERR_H

/* 0 for OK/ROW/DONE, else the negative errno of SQLite result code sqlite_rc. */
int meta_sqlite_errno(int sqlite_rc);

#endif
