#!/usr/bin/env bash
# test-bigdir.sh: 10,000 entries in one directory. Create them; readdir lists
# each exactly once (ls -f count, and every name); stat 200 of them; move
# 1,000 to another directory with one mv; delete the rest while reading the
# directory (each entry unlinked right after readdir returns it: one pass must
# empty it, so readdir offsets must survive unlinks); rm -rf the other.
source "$(dirname "$0")/lib.sh"
fuse_begin bigdir
n=${WEFT_TEST_BIGDIR_N:-10000}
moved=$((n / 10))
fuse_share bigdir
d=$MNT/big
mkdir "$d" "$MNT/other"

start=$(now_s)
for ((i = 0; i < n; i++)); do
    printf '%d\n' "$i" >"$d/e$i"
done
fuse_log "created $n files: $(awk "BEGIN { printf \"%.2f\", $(now_s) - $start }") s"
assert_eq $((n + 2)) "$(ls -f "$d" | wc -l)" "ls -f | wc -l (entries plus . and ..)"
fsutil dir-check "$d" e "$n" || fail "readdir of $n entries"
assert_eq "$n" "$(find "$d" -mindepth 1 -maxdepth 1 -type f | wc -l)" "find -type f count"

RANDOM=42
for ((k = 0; k < 200; k++)); do
    i=$(((RANDOM * 32768 + RANDOM) % n))
    [ "$(stat -c %s "$d/e$i")" = $((${#i} + 1)) ] || fail "size of e$i"
    [ "$(cat "$d/e$i")" = "$i" ] || fail "content of e$i: $(cat "$d/e$i")"
done

(cd "$d" && mv -t "$MNT/other" $(seq -f 'e%.0f' 0 $((moved - 1))))
fsutil dir-check "$MNT/other" e "$moved" || fail "readdir after moving $moved entries away"
fsutil dir-check "$d" e $((n - moved)) --start "$moved" || fail "readdir of what stayed"
assert_eq 0 "$(cat "$MNT/other/e0")" "content of a moved entry"

removed=$(fsutil scandir-unlink "$d") || fail "unlinking while reading the directory"
assert_eq $((n - moved)) "$removed" "entries unlinked in one readdir pass"
rmdir "$d"
rm -rf "$MNT/other"
[ -z "$(ls -A "$MNT")" ] || fail "entries left: $(ls -A "$MNT" | head)"
fuse_end
