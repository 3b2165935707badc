#!/usr/bin/env bash
# test-sqlite.sh: an SQLite database on the mount. 1,000 transactions in the
# default rollback-journal mode (each creates, fsyncs and deletes a journal;
# some roll back), then, in WAL mode (a shared mmap'ed -shm file), two
# processes writing at once through SQLite's POSIX locks. A fresh process
# must find PRAGMA integrity_check = ok and exactly the committed rows; on
# weft, again after an unmount and a remount.
source "$(dirname "$0")/lib.sh"
fuse_begin sqlite
need_cmd sqlite3
fuse_share sqlite
mkdir "$MNT/db"
db=$MNT/db/journal.db
wal=$MNT/db/wal.db
transactions=${WEFT_TEST_SQLITE_TXNS:-1000}

# Rollback journal: each transaction inserts a row and appends 'x' to an
# earlier one; every 100th also inserts a row and rolls back.
{
    echo "CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL);"
    echo "CREATE INDEX t_k ON t(k);"
    for ((i = 1; i <= transactions; i++)); do
        echo "BEGIN; INSERT INTO t(k, v) VALUES ($i, hex(randomblob(64)));"
        echo "UPDATE t SET v = v || 'x' WHERE id = $(((i * 7919 + 13) % i + 1)); COMMIT;"
        if ((i % 100 == 0)); then
            echo "BEGIN; INSERT INTO t(k, v) VALUES (-1, 'rolled back'); ROLLBACK;"
        fi
    done
} >"$FUSE_TMP/journal.sql"
start=$(now_s)
sqlite3 -bail "$db" <"$FUSE_TMP/journal.sql"
fuse_log "$transactions rollback-journal transactions in $(awk "BEGIN { printf \"%.2f\", $(now_s) - $start }") s"
[ "$(sqlite3 "$db" 'PRAGMA journal_mode;')" = delete ] || fail "journal.db is not in rollback-journal mode"

# WAL: two writers at once, 250 transactions each.
per_writer=${WEFT_TEST_SQLITE_WAL_TXNS:-250}
sqlite3 -bail "$wal" "PRAGMA journal_mode=WAL; CREATE TABLE w(id INTEGER PRIMARY KEY, writer TEXT, n INTEGER);" >/dev/null
for writer in a b; do
    {
        echo ".timeout 30000"
        for ((i = 1; i <= per_writer; i++)); do
            echo "BEGIN IMMEDIATE; INSERT INTO w(writer, n) VALUES ('$writer', $i); COMMIT;"
        done
    } >"$FUSE_TMP/wal-$writer.sql"
done
run_sql() { # run_sql DB FILE
    sqlite3 -bail "$1" <"$2"
}
fuse_bg run_sql "$wal" "$FUSE_TMP/wal-a.sql"
writer_a=$FUSE_BG_PID
fuse_bg run_sql "$wal" "$FUSE_TMP/wal-b.sql"
writer_b=$FUSE_BG_PID
wait "$writer_a" || fail "WAL writer a failed"
wait "$writer_b" || fail "WAL writer b failed"

check_databases() { # check_databases WHEN
    assert_eq ok "$(sqlite3 "$db" 'PRAGMA integrity_check;')" "integrity_check of journal.db $1"
    assert_eq "$transactions|$((transactions * (transactions + 1) / 2))|$((transactions * 129))" \
        "$(sqlite3 "$db" 'SELECT count(*), sum(k), sum(length(v)) FROM t;')" \
        "rows of journal.db $1 (count|sum(k)|sum(length(v)))"
    assert_eq 0 "$(sqlite3 "$db" 'SELECT count(*) FROM t WHERE k < 0;')" "rolled-back rows in journal.db $1"
    assert_eq ok "$(sqlite3 "$wal" 'PRAGMA integrity_check;')" "integrity_check of wal.db $1"
    assert_eq "a|$per_writer|$((per_writer * (per_writer + 1) / 2))"$'\n'"b|$per_writer|$((per_writer * (per_writer + 1) / 2))" \
        "$(sqlite3 "$wal" 'SELECT writer, count(*), sum(n) FROM w GROUP BY writer ORDER BY writer;')" \
        "rows of wal.db $1 (writer|count|sum(n))"
}
check_databases "after the writes"
sqlite3 "$wal" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null

if weft_only "remount and check the databases again"; then
    weft_umount "$MNT"
    weft_mount sqlite "$MNT"
    check_databases "after a remount"
fi
fuse_end
